/* ---- retry with backoff ------------------------------------------------ */

/*
 * Two 503s, then the real answer: the client sees only the 200, after the
 * default delays 0.3 s and 0.6 s, and each retry is logged with its reason
 * and delay.  Without retrying the client gets the 503; without the
 * backoff it comes back at once.  (0.3 + 0.6 s: a timer may round a hair
 * short, never by 20 ms.)
 */
START_TEST(test_retry_count_and_delays)
{
	static const struct fault_case cases[] = {
	    {.name = "two 503s then 200",
	        .conf = "",
	        .fault = STATUS_FAULT(503, ",\"count\":2"),
	        .path = "/api/generate",
	        .json = GEN(",\"stream\":false"),
	        .want_status = 200,
	        .want_contains = "\"done\":true",
	        .want_requests = 3,
	        .min_s = 0.88,
	        .max_s = 5.0},
	};
	struct fault_env env;
	char l1[512] = "", l2[512] = "";
	int n;

	T_BEGIN();
	fault_env_init(&env, NULL);
	fault_run(&env, cases, N_CASES(cases));
	n = test_log_lines(
	    env.daemon, "retry", "503", l1, sizeof l1, l2, sizeof l2);
	H_ASSERT(n == 2,
	    "want 2 log lines about retrying after a 503, got "
	    "%d; see %s",
	    n, env.daemon->proc.log_path);
	H_ASSERT(strstr(l1, "0.3") != NULL && strstr(l2, "0.6") != NULL,
	    "the retries must be logged with their delays 0.3 and 0.6 s: "
	    "\"%s\", \"%s\"",
	    l1, l2);
}
END_TEST

/*
 * Starts a daemon with conf and sends it, on a raw connection c, a
 * generate request whose first attempt gets a 503.  Returns once the fake
 * has answered that, when the daemon is in its backoff: the time the
 * request was sent.
 */
static double
test_start_backoff(
    struct harness_env *env, const char *conf, struct http_conn *c)
{
	double t0;

	harness_up(env, conf);
	fake_reset(env->fake);
	fake_fault(env->fake, STATUS_FAULT(503, ",\"path\":\"/api/generate\""));
	t0 = harness_now();
	test_raw_send(c, env->daemon->port,
	    test_raw_post("/api/generate", GEN(",\"stream\":false"), ""));
	test_wait_answered(env->fake, "the first attempt");
	return t0;
}

/*
 * While one request backs off, another client is served at once: the
 * wait is a timer on the event loop.  A sleeping proxy would hold the
 * second client for the whole 2 s backoff.
 */
START_TEST(test_retry_backoff_is_a_timer)
{
	struct harness_env env;
	struct http_resp r, v;
	struct http_conn c;
	double t0, tv;

	T_BEGIN();
	t0 = test_start_backoff(
	    &env, "[retry]\nretries = 1\nbackoff_factor = 2\n", &c);

	http_get(harness_daemon_url(env.daemon, "/api/version"), &v);
	tv = v.t_end - v.t_start;
	H_ASSERT(v.ok && v.status == 200,
	    "another client during the backoff: "
	    "%ld %s",
	    v.status, v.error);
	H_ASSERT(tv < 0.5,
	    "another client waited %.3f s while a request "
	    "backed off for 2 s: the backoff blocks the event loop",
	    tv);

	H_ASSERT(http_conn_read_response(&c, 0, 15000, &r) == 0,
	    "the retried request: %s", r.error);
	H_ASSERT(r.status == 200, "the retried request got %ld %.300s",
	    r.status, r.body.data);
	H_ASSERT(r.t_end - t0 >= 1.9,
	    "the retried request came back after "
	    "%.3f s, before its 2 s backoff was over",
	    r.t_end - t0);
	H_ASSERT_INT_EQ(test_stat(env.fake, "requests", NULL), 3);
	http_conn_close(&c);
	http_resp_free(&r);
	http_resp_free(&v);
}
END_TEST

/*
 * Every attempt fails: the client gets the last answer as Ollama sent it
 * (status, headers, its own 503 body), after exactly retries + 1
 * attempts; it is compared with the same answer straight from the fake,
 * whose fault still holds.  A proxy that invents its own error, or
 * retries for ever, fails here.
 */
START_TEST(test_retry_all_attempts_fail)
{
	static const struct fault_case cases[] = {
	    {.name = "every attempt answered 503",
	        .conf = "[retry]\nretries = 2\nbackoff_factor = 0.01\n",
	        .fault = STATUS_FAULT(503, ",\"count\":10"),
	        .path = "/api/generate",
	        .json = GEN(",\"stream\":false"),
	        .want_status = 503,
	        .want_body = BUSY_BODY,
	        .want_requests = 3,
	        .same_as_direct = 1},
	};

	T_BEGIN();
	FAULT_TABLE(NULL, cases);
}
END_TEST

/*
 * Retry-After asks for longer than the backoff (0.01 s here): seconds and
 * an HTTP date are honoured, and backoff_max caps both.  Ignoring it, the
 * retry comes after 10 ms; not capping it, after 30 s.
 */
START_TEST(test_retry_after)
{
	char date[64];
	struct tm tm;
	time_t t;

	T_BEGIN();
	/* A date 3 s ahead, in whole seconds: 2 to 3 s from now. */
	t = time(NULL) + 3;
	gmtime_r(&t, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	{
		const struct fault_case cases[] = {
		    {.name = "Retry-After: 1, want a retry after about 1 s",
		        .conf = "[retry]\nbackoff_factor = 0.01\n",
		        .fault = STATUS_FAULT(503, ",\"retry_after\":\"1\""),
		        .path = "/api/tags",
		        .want_status = 200,
		        .want_requests = 2,
		        .min_s = 0.95,
		        .max_s = 5.0},
		    {.name = harness_strf("Retry-After: %s (2 to 3 s ahead)",
		         date),
		        .fault = harness_strf(STATUS_FAULT(503,
		                                  ",\"retry_after\":\"%s\""),
		            date),
		        .path = "/api/tags",
		        .want_status = 200,
		        .want_requests = 2,
		        .min_s = 1.5,
		        .max_s = 6.0},
		    {.name = "Retry-After: 30 with backoff_max 0.5, want a "
		             "retry after about 0.5 s",
		        .conf = "[retry]\nbackoff_factor = 0.01\n"
		                "backoff_max = 0.5\n",
		        .fault = STATUS_FAULT(503, ",\"retry_after\":\"30\""),
		        .path = "/api/tags",
		        .want_status = 200,
		        .want_requests = 2,
		        .min_s = 0.45,
		        .max_s = 5.0},
		};

		FAULT_TABLE(NULL, cases);
	}
}
END_TEST

/*
 * retries = 0 turns retrying off; retry_methods = GET leaves a POST alone
 * but still retries a GET (the last case counts on from the one before).
 */
START_TEST(test_retry_off_and_methods)
{
	static const struct fault_case cases[] = {
	    {.name = "retries = 0",
	        .conf = "[retry]\nretries = 0\nbackoff_factor = 0.01\n",
	        .fault = STATUS_FAULT(503, ""),
	        .path = "/api/generate",
	        .json = GEN(",\"stream\":false"),
	        .want_status = 503,
	        .want_body = BUSY_BODY,
	        .want_requests = 1},
	    {.name = "retry_methods = GET, a POST (must not be retried)",
	        .conf = "[retry]\nretry_methods = GET\nbackoff_factor = 0.01\n",
	        .fault = STATUS_FAULT(503, ""),
	        .path = "/api/generate",
	        .json = GEN(",\"stream\":false"),
	        .want_status = 503,
	        .want_requests = 1},
	    {.name = "retry_methods = GET, a GET (must be retried)",
	        .fault = STATUS_FAULT(503, ""),
	        .keep_counts = 1,
	        .path = "/api/tags",
	        .want_status = 200,
	        .want_requests = 3},
	};

	T_BEGIN();
	FAULT_TABLE(NULL, cases);
}
END_TEST

/*
 * Which statuses are retried: by default 500, 502, 503 and 504, and no
 * others (a 429 or a 404 is Ollama's considered answer); retry_statuses
 * narrows that.
 */
START_TEST(test_retry_statuses)
{
#define RETRIED(code, daemon_conf)                                             \
	{.name = "a " #code " (must be retried)",                              \
	    .conf = daemon_conf,                                               \
	    .fault = STATUS_FAULT(code, ""),                                   \
	    .path = "/api/tags",                                               \
	    .want_status = 200,                                                \
	    .want_requests = 2}
	static const struct fault_case cases[] = {
	    RETRIED(500, "[retry]\nbackoff_factor = 0.01\n"),
	    RETRIED(502, NULL),
	    RETRIED(503, NULL),
	    RETRIED(504, NULL),
	    {.name = "a 429 (must reach the client as it is)",
	        .fault = STATUS_FAULT(
	            429, ",\"body\":\"{\\\"error\\\":\\\"slow down\\\"}\""),
	        .path = "/api/tags",
	        .want_status = 429,
	        .want_body = "{\"error\":\"slow down\"}",
	        .want_requests = 1},
	    {.name = "retry_statuses = 500, a 503 (must not be retried)",
	        .conf = "[retry]\nbackoff_factor = 0.01\n"
	                "retry_statuses = 500\n",
	        .fault = STATUS_FAULT(503, ""),
	        .path = "/api/tags",
	        .want_status = 503,
	        .want_requests = 1},
	    {.name = "retry_statuses = 500, a 500 (must be retried)",
	        .fault = STATUS_FAULT(500, ""),
	        .keep_counts = 1,
	        .path = "/api/tags",
	        .want_status = 200,
	        .want_requests = 3},
	};
#undef RETRIED

	T_BEGIN();
	FAULT_TABLE(NULL, cases);
}
END_TEST
