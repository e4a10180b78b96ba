/*
 * The client leaves during a 2 s backoff: the timer goes with it, and no
 * further attempt reaches the fake.  Nothing can signal "no retry came",
 * so this watches the fake until well after the backoff would have ended.
 */
START_TEST(test_cancel_backoff)
{
	struct harness_env env;
	struct http_conn c;
	double until;
	long long n;

	T_BEGIN();
	test_start_backoff(&env, "[retry]\nbackoff_factor = 2\n", &c);
	/* The backoff started at most a moment ago and lasts 2 s: the
	 * client has nothing yet (else there is no backoff to cancel). */
	until = harness_now() + 3.5;
	H_ASSERT(!http_conn_wait_readable(&c, 200),
	    "the client got an answer "
	    "at once: the daemon did not back off");
	http_conn_close(&c);
	while (harness_now() < until) {
		n = test_stat(env.fake, "requests", NULL);
		H_ASSERT(n == 1,
		    "the request was retried (the fake saw %lld "
		    "requests) although its client left during the backoff",
		    n);
		test_pause_ms(STAT_POLL_MS * 5);
	}
	test_assert_healthy(env.daemon, "a client gone during a backoff");
	H_ASSERT_INT_EQ(test_stat(env.fake, "requests", NULL), 2);
}
END_TEST

/*
 * Pipelines, behind the request in progress on c, more than the daemon's
 * input buffer holds (256 KiB), so that the daemon stops reading c; returns
 * once the kernel has handed all of it to the daemon's side.
 */
static void
test_fill_unread(struct http_conn *c)
{
	static const char next[] =
	    "POST /_fake/echo/pipelined HTTP/1.1\r\n"
	    "Host: client.invalid\r\nContent-Length: 16777216\r\n\r\n";
	/* 4 KiB past the daemon's 256 KiB read watermark: it stops reading
	 * with those left in its kernel buffer, where they surely fit. */
	const size_t extra = 256 * 1024 + 4096 - (sizeof next - 1);
	double deadline;
	char *junk;
	int outq;

	/* The next request's head and part of its body: they stay unparsed
	 * in the daemon's input buffer until the first is answered. */
	junk = malloc(extra);
	H_CHECK(junk != NULL);
	memset(junk, 'j', extra);
	H_CHECK(http_conn_sendstr(c, next, 10000) == 0);
	H_ASSERT(http_conn_send(c, junk, extra, 10000) == 0,
	    "the daemon "
	    "did not take %zu bytes of a pipelined request",
	    extra);
	free(junk);
	/* A FIN goes out only behind the data queued before it: wait until
	 * the daemon's side has all of it (nothing signals that; poll). */
	deadline = harness_now() + 10.0;
	for (;;) {
		H_CHECK(ioctl(c->fd, SIOCOUTQ, &outq) == 0);
		if (outq == 0)
			break;
		H_ASSERT(harness_now() < deadline,
		    "%d bytes still unsent "
		    "after 10 s",
		    outq);
		test_pause_ms(STAT_POLL_MS);
	}
}

enum cancel_how { LEAVE_CLOSE, LEAVE_RESET, LEAVE_HALF_CLOSE };

/*
 * A client that goes away while its request is upstream: the proxy must
 * drop the upstream side within a second (the issue asks for 100 ms),
 * which the fake records as its client gone in a phase.
 */
struct cancel_case {
	const char *name; /* the test's name, for its logs and failures */
	const char *gen; /* the generate request's body */
	int after_lines; /* leave after this many stream lines (else once
	                  * the request has reached the fake) */
	int unread; /* first make the daemon stop reading the client */
	enum cancel_how how;
	const char *phase; /* the fake's client_gone_phase */
	long long want_gone, want_requests; /* the fake's counts after */
	int want_closed; /* the daemon closes the client's connection */
};

/*
 * headers_wait: a model load holds the first byte back (10 s here), and
 * the proxy is not reading from the client while it waits; it must still
 * notice and close the upstream connection.  Without EV_CLOSED (or an
 * equivalent) the upstream would wait out the full 10 s.
 *
 * mid_stream: the client resets after a few lines of a 200-token stream;
 * the upstream transfer is dropped at once, so Ollama would stop
 * generating.  Left running, the stream goes on for 10 s.
 *
 * half_close: a client that shuts down its sending side while it waits
 * for headers has gone as far as the proxy can tell (the daemon sees a
 * FIN, as from a close): the upstream is dropped and the client's
 * connection closed.
 *
 * not_reading: behind a request waiting for a model load, the client
 * pipelines so much that the daemon stops reading it (test_fill_unread);
 * then it closes or resets.  Reading cannot see that: only EPOLLRDHUP
 * (EV_CLOSED) or an error on the socket can.  The reset matters on its
 * own: epoll reports it as EPOLLERR, which libevent hands on as
 * EV_READ|EV_WRITE and never as EV_CLOSED.
 */
#define SLOW_HEAD GEN(",\"fake_first_byte_ms\":10000")
static const struct cancel_case cancel_cases[] = {
    {"test_cancel_headers_wait", SLOW_HEAD, 0, 0, LEAVE_CLOSE, "headers_wait",
        1, ANY_COUNT, 0},
    {"test_cancel_mid_stream",
        GEN(",\"options\":{\"num_predict\":200},\"fake_interval_ms\":50"), 3,
        0, LEAVE_RESET, "streaming", 1, 1, 0},
    {"test_cancel_half_close", SLOW_HEAD, 0, 0, LEAVE_HALF_CLOSE,
        "headers_wait", ANY_COUNT, ANY_COUNT, 1},
    {"test_cancel_not_reading_close", SLOW_HEAD, 0, 1, LEAVE_CLOSE,
        "headers_wait", ANY_COUNT, 1, 0},
    {"test_cancel_not_reading_reset", SLOW_HEAD, 0, 1, LEAVE_RESET,
        "headers_wait", ANY_COUNT, 1, 0},
};
#undef SLOW_HEAD

START_TEST(test_cancel_client_gone)
{
	const struct cancel_case *k = &cancel_cases[_i];
	struct harness_env env;
	struct http_conn c;
	double t0, t1;

	test_begin(k->name);
	harness_up(&env, "");
	fake_reset(env.fake);
	test_raw_send(
	    &c, env.daemon->port, test_raw_post("/api/generate", k->gen, ""));
	if (k->after_lines > 0)
		test_conn_wait_for(&c, "\"done\":false", (size_t)k->after_lines,
		    10000, k->name);
	else
		test_wait_stat(env.fake, "requests", NULL, 1, 10000,
		    "request reaching the fake");
	if (k->unread)
		test_fill_unread(&c);
	t0 = harness_now();
	if (k->how == LEAVE_CLOSE)
		http_conn_close(&c);
	else if (k->how == LEAVE_RESET)
		test_conn_reset(&c);
	else
		H_CHECK(shutdown(c.fd, SHUT_WR) == 0);
	t1 = test_wait_stat(
	    env.fake, "client_gone_phase", k->phase, 1, 2000, k->name);
	H_ASSERT(t1 - t0 < 1.0,
	    "%s: the upstream side was dropped %.3f s after the client "
	    "left; the issue asks for 100 ms",
	    k->name, t1 - t0);
	if (k->want_gone != ANY_COUNT)
		H_ASSERT_INT_EQ(
		    test_stat(env.fake, "client_gone", NULL), k->want_gone);
	if (k->want_requests != ANY_COUNT)
		H_ASSERT_INT_EQ(
		    test_stat(env.fake, "requests", NULL), k->want_requests);
	if (k->want_closed)
		H_ASSERT(http_conn_wait_closed(&c, 2000) == 1,
		    "%s: the daemon kept the half-closed client's connection "
		    "open",
		    k->name);
	if (k->how == LEAVE_HALF_CLOSE)
		http_conn_close(&c);
	test_assert_healthy(env.daemon, k->name);
}
END_TEST

