/* ---- cancellation ------------------------------------------------------ */

/*
 * A request queued for the only pool slot, its client reset: it leaves
 * the queue at once and never reaches Ollama.  With queue_max = 1 a later
 * request can only queue if the cancelled one left: a leaked queue entry
 * turns it into a 503, and a request started anyway shows in the count.
 */
START_TEST(test_cancel_queued)
{
	static const char slow[] = GEN(",\"options\":{\"num_predict\":10},"
	                               "\"fake_interval_ms\":100");
	static const char queued[] = GEN(",\"stream\":false");
	struct harness_env env;
	struct http_conn a, b, d;
	struct http_resp ra, rd;

	T_BEGIN();
	harness_up(&env, "[upstream]\npool_maxsize = 1\nqueue_max = 1\n");
	fake_reset(env.fake);

	/* A holds the slot for about a second. */
	test_raw_send(
	    &a, env.daemon->port, test_raw_post("/api/generate", slow, ""));
	H_ASSERT(http_conn_wait_readable(&a, 10000),
	    "no answer to the first "
	    "request");

	/* B's 100 Continue is written as its head is taken: from then on B
	 * is in the queue.  B resets before sending its body. */
	test_raw_send(&b, env.daemon->port,
	    harness_strf(
	        "POST /api/generate "
	        "HTTP/1.1\r\nHost: client.invalid\r\nContent-Type: "
	        "application/json\r\nExpect: 100-continue\r\nContent-Length: "
	        "%zu\r\n\r\n",
	        strlen(queued)));
	test_conn_wait_for(
	    &b, "100 Continue\r\n\r\n", 1, 10000, "queued request");
	test_conn_reset(&b);

	test_raw_send(&d, env.daemon->port,
	    "GET /api/version HTTP/1.1\r\n"
	    "Host: client.invalid\r\n\r\n");

	H_ASSERT(http_conn_read_response(&a, 0, 15000, &ra) == 0,
	    "the request holding the slot: %s", ra.error);
	H_ASSERT(ra.status == 200 && http_count_lines(&ra.body) == 11,
	    "the request holding the slot: %ld, %zu lines", ra.status,
	    http_count_lines(&ra.body));
	H_ASSERT(http_conn_read_response(&d, 0, 15000, &rd) == 0,
	    "the request queued after the cancelled one: %s", rd.error);
	H_ASSERT(rd.status == 200,
	    "the request queued after the cancelled "
	    "one got %ld (a 503 means the cancelled request still holds its "
	    "place in the queue): %.300s",
	    rd.status, rd.body.data);
	/* The one holding the slot and the one after: the reset request
	 * was never started. */
	H_ASSERT(test_stat(env.fake, "requests", NULL) == 2,
	    "the fake saw %lld requests; the cancelled one must never reach "
	    "it",
	    test_stat(env.fake, "requests", NULL));
	H_ASSERT_INT_EQ(test_stat(env.fake, "client_gone", NULL), 0);
	test_assert_healthy(env.daemon, "a request cancelled in the queue");
	http_conn_close(&a);
	http_conn_close(&d);
	http_resp_free(&ra);
	http_resp_free(&rd);
}
END_TEST

