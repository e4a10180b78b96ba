
/*
 * A 1 MiB body is sent again, whole, after a 503: the echo of the second
 * attempt has its length, digest and framing.  Both framings: a
 * Content-Length body and a chunked one (kept while under
 * retry_body_max).
 */
START_TEST(test_retry_body_replayed)
{
	static const struct fault_case cases[] = {
	    {.name = "Content-Length body after a 503",
	        .conf = "[retry]\nbackoff_factor = 0.01\n",
	        .fault = STATUS_FAULT(503, ",\"path\":\"/_fake/echo\""),
	        .path = "/_fake/echo/replay",
	        .upload = {1u << 20, 5, 0, 0},
	        .want_status = 200,
	        .want_echo = 1,
	        .want_requests = 2},
	    {.name = "chunked body after a 503",
	        .fault = STATUS_FAULT(503, ",\"path\":\"/_fake/echo\""),
	        .path = "/_fake/echo/replay",
	        .upload = {1u << 20, 5, 1, 7777},
	        .want_status = 200,
	        .want_echo = 1,
	        .want_requests = 2},
	};

	T_BEGIN();
	FAULT_TABLE(NULL, cases);
}
END_TEST

/*
 * A body over retry_body_max (64k here) is not kept, so once it went
 * upstream it cannot be replayed: the 503 goes to the client as it is.  A
 * proxy that retried anyway would send a truncated body, or hang.
 */
START_TEST(test_retry_body_too_big)
{
	static const struct fault_case cases[] = {
	    {.name = "chunked 1 MiB body over retry_body_max",
	        .conf = "[retry]\nbackoff_factor = 0.01\n"
	                "retry_body_max = 64k\n",
	        .fault = STATUS_FAULT(503, ",\"path\":\"/_fake/echo\""),
	        .path = "/_fake/echo/big",
	        .upload = {1u << 20, 9, 1, 65536},
	        .want_status = 503,
	        .want_body = BUSY_BODY,
	        .want_requests = 1},
	    {.name = "Content-Length 1 MiB body over retry_body_max",
	        .fault = STATUS_FAULT(503, ",\"path\":\"/_fake/echo\""),
	        .path = "/_fake/echo/big",
	        .upload = {1u << 20, 9, 0, 0},
	        .want_status = 503,
	        .want_body = BUSY_BODY,
	        .want_requests = 1,
	        .healthy_after = 1},
	};

	T_BEGIN();
	FAULT_TABLE(NULL, cases);
}
END_TEST

