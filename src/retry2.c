/*
 * backoff_max caps the doubling too: with a factor of 2 the two waits
 * would be 2 and 4 s; capped at 0.2 s they take 0.4 s.
 */
START_TEST(test_retry_backoff_max)
{
	static const struct fault_case cases[] = {
	    {.name = "two 503s then 200, retries capped at 0.2 s",
	        .conf = "[retry]\nretries = 2\nbackoff_factor = 2\n"
	                "backoff_max = 0.2\n",
	        .fault = STATUS_FAULT(503, ",\"count\":2"),
	        .path = "/api/tags",
	        .want_status = 200,
	        .want_requests = 3,
	        .min_s = 0.38,
	        .max_s = 2.5},
	};

	T_BEGIN();
	FAULT_TABLE(NULL, cases);
}
END_TEST

/*
 * Nothing listens upstream: every attempt is refused, so after two
 * retries (0.1 + 0.2 s) the client gets a 502 that names the upstream.
 * Without retrying a refused connection the 502 comes at once.
 */
START_TEST(test_retry_connection_refused)
{
	static const struct fault_case cases[] = {
	    {.name = "connection refused, two retries of 0.1 + 0.2 s",
	        .conf = "[retry]\nretries = 2\nbackoff_factor = 0.1\n",
	        .path = "/api/tags",
	        .want_status = 502,
	        .shape = SHAPE_NATIVE,
	        .names_upstream = 1,
	        .min_s = 0.28,
	        .max_s = 5.0},
	};

	T_BEGIN();
	FAULT_TABLE(
	    harness_strf("http://127.0.0.1:%d", harness_free_port()), cases);
}
END_TEST

/*
 * The upstream closes, or resets, the connection without answering: that
 * is retried and the client gets the second attempt's 200.  Each case is
 * the first request of a fresh daemon, so its connection is new and
 * libcurl's own retry of a dead reused connection cannot be what saves
 * it; and with retries = 0 the same close is a 502.
 */
START_TEST(test_retry_upstream_closed)
{
	static const struct fault_case cases[] = {
	    {.name = "upstream close before answering a GET",
	        .conf = "[retry]\nbackoff_factor = 0.01\n",
	        .fault = "{\"action\":\"close\"}",
	        .path = "/api/tags",
	        .want_status = 200,
	        .want_requests = 2},
	    {.name = "upstream reset before answering a POST",
	        .conf = "[retry]\nbackoff_factor = 0.01\n",
	        .fault = "{\"action\":\"reset\"}",
	        .path = "/api/generate",
	        .json = GEN(",\"stream\":false"),
	        .want_status = 200,
	        .want_requests = 2},
	    {.name = "upstream close with retries = 0",
	        .conf = "[retry]\nretries = 0\n",
	        .fault = "{\"action\":\"close\"}",
	        .path = "/api/tags",
	        .want_status = 502,
	        .shape = SHAPE_NATIVE,
	        .names_upstream = 1,
	        .want_requests = 1},
	};

	T_BEGIN();
	FAULT_TABLE(NULL, cases);
}
END_TEST

