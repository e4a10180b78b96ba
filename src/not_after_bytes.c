
/*
 * The upstream dies after two lines of a stream.  Those lines reached the
 * client, so a retry would send it a second stream glued to the first:
 * the client must see the stream cut short instead, and the fake only one
 * request.
 */
START_TEST(test_retry_not_after_bytes)
{
	static const char gen[] = GEN(",\"options\":{\"num_predict\":10}");
	struct harness_env env;
	struct http_resp r, d;
	const char *nl;
	size_t two;

	T_BEGIN();
	harness_up(&env, "[retry]\nbackoff_factor = 0.01\n");
	http_post_json(fake_url(env.fake, "/api/generate"), gen, &d);
	H_ASSERT(d.ok && d.status == 200, "direct stream: %s", d.error);
	fake_reset(env.fake);
	fake_fault(env.fake,
	    "{\"action\":\"die_after\",\"chunks\":2,"
	    "\"path\":\"/api/generate\"}");

	http_post_json(
	    harness_daemon_url(env.daemon, "/api/generate"), gen, &r);
	H_ASSERT(!r.ok && r.status == 200,
	    "an upstream dying mid-stream must "
	    "reach the client as a broken 200, got %ld ok=%d %s",
	    r.status, r.ok, r.error);
	H_ASSERT(
	    strstr(r.error, curl_easy_strerror(CURLE_PARTIAL_FILE)) != NULL ||
	        strstr(r.error, curl_easy_strerror(CURLE_RECV_ERROR)) != NULL,
	    "libcurl should report a partial transfer: %s", r.error);
	/* Exactly the two lines the fake sent before dying. */
	nl = strchr(d.body.data, '\n');
	nl = nl != NULL ? strchr(nl + 1, '\n') : NULL;
	H_CHECK(nl != NULL);
	two = (size_t)(nl - d.body.data) + 1;
	H_ASSERT(
	    r.body.len == two && memcmp(r.body.data, d.body.data, two) == 0,
	    "the client should have the first two lines, got %zu bytes: "
	    "%.300s",
	    r.body.len, r.body.data);
	H_ASSERT_INT_EQ(test_stat(env.fake, "requests", NULL), 1);
	test_assert_healthy(env.daemon, "a stream cut short");
	http_resp_free(&r);
	http_resp_free(&d);
}
END_TEST
