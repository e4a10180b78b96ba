/*
 * Tests of the fake Ollama itself, asked directly (no daemon): the model
 * state a fleet member has (-T, -P, -D, -B, POST /_fake/models), which the
 * fleet's integration tests rely on.  Installed and loaded models, a load's
 * silence and its load_duration, a busy generation, pull, copy and delete
 * changing the lists, and the stats that say who asked what, when, and
 * how many at once.
 *
 * Timings are small (a 300 ms load, a 200 ms generation) and their bounds
 * generous above; below, the fake guarantees them.  Waiting is for an
 * event (an answer, a readable socket, a log line), never a sleep.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>
#include <cjson/cJSON.h>

#include "harness.h"

#define WAIT_MS 10000
#define LOAD_MS 300
#define BUSY_MS 200
/* Below: the fake never answers early (1 ms for the clocks' rounding). */
#define NOT_BEFORE(ms) ((ms) / 1000.0 - 0.001)
/* Above: generous, for a busy machine. */
#define NOT_AFTER 5.0

static const char *const json_hdrs[] = {
    "Content-Type: application/json", "Expect:", NULL};

/* One request straight to the fake; extra is one more header or NULL. */
static void
fake_req(const struct harness_fake *f, const char *method, const char *path,
    const char *body, const char *extra, struct http_resp *r)
{
	const char *hdrs[4] = {json_hdrs[0], json_hdrs[1], extra, NULL};
	struct http_req req;

	memset(&req, 0, sizeof req);
	req.method = method;
	req.url = fake_url(f, path);
	req.headers = hdrs;
	if (body != NULL) {
		req.body = body;
		req.body_len = strlen(body);
		req.has_body = 1;
	}
	http_request(&req, r);
	H_ASSERT(r->ok, "%s %s: %s", method, path, r->error);
}

/* The names in /api/tags or /api/ps, as "a:latest,b:latest". */
static char *
list_names(const struct harness_fake *f, const char *path)
{
	struct http_resp r;
	const cJSON *m;
	cJSON *j;
	char *s = harness_strf("%s", "");

	fake_req(f, "GET", path, NULL, NULL, &r);
	H_ASSERT(r.status == 200, "GET %s: %ld", path, r.status);
	j = harness_json(&r, path);
	m = cJSON_GetObjectItem(j, "models");
	H_ASSERT(cJSON_IsArray(m), "%s has no models array", path);
	for (m = m->child; m != NULL; m = m->next) {
		s = harness_strf(
		    "%s%s%s", s, *s ? "," : "", harness_jstr(m, "name"));
		H_ASSERT_STR_EQ(
		    harness_jstr(m, "model"), harness_jstr(m, "name"));
		H_CHECK(cJSON_IsString(cJSON_GetObjectItem(m, "digest")));
		H_CHECK(cJSON_IsObject(cJSON_GetObjectItem(m, "details")));
		H_CHECK(cJSON_IsNumber(cJSON_GetObjectItem(m, "size")));
		if (strcmp(path, "/api/ps") == 0) {
			H_CHECK(cJSON_IsString(
			    cJSON_GetObjectItem(m, "expires_at")));
			H_CHECK(cJSON_IsNumber(
			    cJSON_GetObjectItem(m, "size_vram")));
		} else
			H_CHECK(cJSON_IsString(
			    cJSON_GetObjectItem(m, "modified_at")));
	}
	cJSON_Delete(j);
	http_resp_free(&r);
	return s;
}

/* A stats list ("tags", "loaded") as "a:latest,b:latest". */
static char *
stats_names(const struct harness_fake *f, const char *key)
{
	const cJSON *e;
	cJSON *j = fake_stats(f);
	char *s = harness_strf("%s", "");

	e = cJSON_GetObjectItem(j, key);
	H_ASSERT(cJSON_IsArray(e), "stats have no list %s", key);
	for (e = e->child; e != NULL; e = e->next)
		s = harness_strf("%s%s%s", s, *s ? "," : "", e->valuestring);
	cJSON_Delete(j);
	return s;
}

static double
stats_num(const struct harness_fake *f, const char *obj, const char *key)
{
	cJSON *j = fake_stats(f);
	const cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(j, obj), key);
	double n;

	H_ASSERT(cJSON_IsNumber(v), "stats %s.%s is not a number", obj, key);
	n = v->valuedouble;
	cJSON_Delete(j);
	return n;
}

/* ---- not installed: Ollama's 404 on every model-routed endpoint -------- */

#define NATIVE_404 "{\"error\":\"model 'zz' not found\"}"
#define OAI_404                                                                \
	"{\"error\":{\"message\":\"model 'zz' not found\",\"type\":"           \
	"\"not_found_error\",\"param\":null,\"code\":null}}"

static const struct route_case {
	const char *path;
	const char *rest; /* the body after its model */
	const char *notfound;
} route_cases[] = {
    {"/api/generate", "\"prompt\":\"p\"", NATIVE_404},
    {"/api/chat", "\"messages\":[]", NATIVE_404},
    {"/api/embed", "\"input\":\"x\"", NATIVE_404},
    {"/api/embeddings", "\"prompt\":\"x\"", NATIVE_404},
    {"/api/show", "\"verbose\":false", NATIVE_404},
    {"/v1/chat/completions", "\"messages\":[]", OAI_404},
    {"/v1/completions", "\"prompt\":\"p\"", OAI_404},
    {"/v1/embeddings", "\"input\":\"x\"", OAI_404},
};

static const char *
route_body(const struct route_case *c, const char *model)
{
	return harness_strf("{\"model\":\"%s\",%s}", model, c->rest);
}

START_TEST(test_not_installed)
{
	static const char *const args[] = {"-T", "a", "-P", "a", NULL};
	/* Installed, spelt any way Ollama takes it. */
	static const char *const names[] = {"a", "a:latest", "A:Latest"};
	struct harness_fake *f;
	struct http_resp r;
	size_t i, k;

	H_BEGIN();
	f = fake_start("fake", NULL, args);
	for (i = 0; i < sizeof route_cases / sizeof route_cases[0]; i++) {
		const struct route_case *c = &route_cases[i];

		fake_req(f, "POST", c->path, route_body(c, "zz"), NULL, &r);
		H_ASSERT(r.status == 404, "%s of zz: %ld", c->path, r.status);
		H_ASSERT_STR_EQ(r.body.data, c->notfound);
		http_resp_free(&r);
		for (k = 0; k < sizeof names / sizeof names[0]; k++) {
			fake_req(f, "POST", c->path, route_body(c, names[k]),
			    NULL, &r);
			H_ASSERT(r.status == 200, "%s of %s: %ld %s", c->path,
			    names[k], r.status, r.body.data);
			http_resp_free(&r);
		}
	}
	fake_req(f, "GET", "/v1/models/zz", NULL, NULL, &r);
	H_ASSERT(r.status == 404, "/v1/models/zz: %ld", r.status);
	http_resp_free(&r);
	H_ASSERT_INT_EQ(stats_num(f, "by_model", "a:latest"), 3 * (long)i);
	H_ASSERT_INT_EQ(stats_num(f, "by_model", "zz:latest"), (long)i);
}
END_TEST

/* ---- loading -------------------------------------------------------- */

static const cJSON *
last_line(cJSON **v, size_t n)
{
	H_CHECK(n > 0);
	return v[n - 1];
}

START_TEST(test_load)
{
	static const char *const args[] = {
	    "-T", "a,b", "-P", "b", "-D", "300", NULL};
	static const char body[] = "{\"model\":\"a\",\"prompt\":\"p\","
	                           "\"options\":{\"num_predict\":2}}";
	struct harness_fake *f;
	struct http_resp r;
	cJSON **lines, *j;
	size_t n;

	H_BEGIN();
	f = fake_start("fake", NULL, args);
	H_ASSERT_STR_EQ(list_names(f, "/api/tags"), "a:latest,b:latest");
	H_ASSERT_STR_EQ(list_names(f, "/api/ps"), "b:latest");

	/* Nothing at all until the load is over, then the answer. */
	fake_req(f, "POST", "/api/generate", body, NULL, &r);
	H_ASSERT(r.status == 200, "generate: %ld", r.status);
	H_ASSERT(r.t_head - r.t_start >= NOT_BEFORE(LOAD_MS),
	    "the head came %.3f s after the request, before the load's end",
	    r.t_head - r.t_start);
	H_ASSERT(r.t_end - r.t_start < NOT_AFTER, "took %.3f s",
	    r.t_end - r.t_start);
	lines = http_ndjson(&r, &n);
	H_ASSERT_INT_EQ(n, 3);
	H_ASSERT_INT_EQ(harness_jnum(last_line(lines, n), "load_duration"),
	    LOAD_MS * 1000000LL);
	http_ndjson_free(lines, n);
	http_resp_free(&r);
	H_ASSERT_STR_EQ(list_names(f, "/api/ps"), "a:latest,b:latest");
	H_ASSERT_STR_EQ(stats_names(f, "loaded"), "a:latest,b:latest");

	/* Loaded now: at once, and a small load_duration. */
	fake_req(f, "POST", "/api/generate",
	    "{\"model\":\"a:latest\",\"prompt\":\"p\",\"stream\":false}", NULL,
	    &r);
	j = harness_json(&r, "generate, loaded");
	H_ASSERT_INT_EQ(harness_jnum(j, "load_duration"), 10);
	cJSON_Delete(j);
	http_resp_free(&r);

	/* The embedding of a model not loaded waits for it the same way. */
	fake_set_models(f, "{\"loaded\":[]}");
	H_ASSERT_STR_EQ(list_names(f, "/api/ps"), "");
	fake_req(f, "POST", "/api/embed", "{\"model\":\"b\",\"input\":\"x\"}",
	    NULL, &r);
	H_ASSERT(r.t_head - r.t_start >= NOT_BEFORE(LOAD_MS),
	    "embed answered after %.3f s", r.t_head - r.t_start);
	j = harness_json(&r, "embed");
	H_ASSERT_INT_EQ(harness_jnum(j, "load_duration"), LOAD_MS * 1000000LL);
	cJSON_Delete(j);
	http_resp_free(&r);
	H_ASSERT_STR_EQ(list_names(f, "/api/ps"), "b:latest");
}
END_TEST

/* ---- busy ------------------------------------------------------------ */

START_TEST(test_busy)
{
	/* Busy holds with the models configured or not: here, not. */
	static const char *const args[] = {"-B", "200", NULL};
	static const char body[] = "{\"model\":\"m\",\"prompt\":\"p\"}";
	struct harness_fake *f;
	struct http_resp r;
	double t[8];
	size_t n;

	H_BEGIN();
	f = fake_start("fake", NULL, args);
	fake_req(f, "POST", "/api/generate", body, NULL, &r);
	H_ASSERT(r.status == 200, "generate: %ld", r.status);
	n = http_line_times(&r, t, 8);
	H_ASSERT_INT_EQ(n, 6);
	H_ASSERT(t[n - 1] - t[0] >= NOT_BEFORE(BUSY_MS),
	    "the last line came %.3f s after the first", t[n - 1] - t[0]);
	H_ASSERT(t[n - 2] - t[0] < BUSY_MS / 1000.0,
	    "the tokens were held back too: %.3f s", t[n - 2] - t[0]);
	H_ASSERT(r.t_end - r.t_start < NOT_AFTER, "took %.3f s",
	    r.t_end - r.t_start);
	H_ASSERT_CONTAINS(r.body.data, "\"total_duration\":200001000,");
	http_resp_free(&r);

	fake_req(f, "POST", "/v1/chat/completions",
	    "{\"model\":\"m\",\"messages\":[]}", NULL, &r);
	H_ASSERT(r.status == 200, "chat completion: %ld", r.status);
	H_ASSERT(r.t_head - r.t_start >= NOT_BEFORE(BUSY_MS),
	    "a whole answer came after %.3f s", r.t_head - r.t_start);
	http_resp_free(&r);
}
END_TEST

/* ---- pull, copy, delete ---------------------------------------------- */

START_TEST(test_pull)
{
	static const char *const args[] = {"-T", "a", NULL};
	static const char *const tail[] = {
	    "verifying sha256 digest", "writing manifest", "success"};
	struct harness_fake *f;
	struct http_resp r;
	const char *digest[2] = {NULL, NULL}, *d;
	double done = 0, total;
	cJSON **lines;
	size_t n, i, k;

	H_BEGIN();
	f = fake_start("fake", NULL, args);
	fake_req(f, "POST", "/api/pull", "{\"model\":\"n\",\"fake_lines\":3}",
	    NULL, &r);
	H_ASSERT(r.status == 200, "pull: %ld", r.status);
	H_ASSERT_STR_EQ(
	    http_header_get(&r, "Content-Type"), "application/x-ndjson");
	lines = http_ndjson(&r, &n);
	H_ASSERT_INT_EQ(n, 1 + 2 * 3 + 3);
	H_ASSERT_STR_EQ(harness_jstr(lines[0], "status"), "pulling manifest");
	for (i = 1; i <= 6; i++) {
		k = (i - 1) / 3;
		d = harness_jstr(lines[i], "digest");
		H_ASSERT(strncmp(d, "sha256:", 7) == 0 && strlen(d) == 71,
		    "digest %s", d);
		if (digest[k] == NULL) {
			digest[k] = d;
			done = 0;
		}
		H_ASSERT_STR_EQ(d, digest[k]);
		H_ASSERT_STR_EQ(harness_jstr(lines[i], "status"),
		    harness_strf("pulling %.12s", d + 7));
		total = harness_jnum(lines[i], "total");
		H_ASSERT(harness_jnum(lines[i], "completed") > done &&
		        harness_jnum(lines[i], "completed") <= total,
		    "line %zu: completed does not rise to total", i);
		done = harness_jnum(lines[i], "completed");
		if (i % 3 == 0)
			H_ASSERT(done == total, "layer %zu ends short", k);
	}
	H_ASSERT(strcmp(digest[0], digest[1]) != 0, "one digest twice");
	for (i = 0; i < 3; i++)
		H_ASSERT_STR_EQ(harness_jstr(lines[7 + i], "status"), tail[i]);
	http_ndjson_free(lines, n);
	http_resp_free(&r);
	H_ASSERT_STR_EQ(list_names(f, "/api/tags"), "a:latest,n:latest");
	H_ASSERT_STR_EQ(list_names(f, "/api/ps"), "");

	/* A failing pull: the manifest line, then the error; nothing added. */
	fake_set_models(f, "{\"pull_error\":\"boom\"}");
	fake_req(f, "POST", "/api/pull", "{\"name\":\"m\"}", NULL, &r);
	H_ASSERT(r.status == 200, "failing pull: %ld", r.status);
	H_ASSERT_STR_EQ(r.body.data,
	    "{\"status\":\"pulling manifest\"}\n{\"error\":\"boom\"}\n");
	http_resp_free(&r);
	fake_req(f, "POST", "/api/pull", "{\"model\":\"m\",\"stream\":false}",
	    NULL, &r);
	H_ASSERT(r.status == 500, "failing pull, not streamed: %ld", r.status);
	H_ASSERT_STR_EQ(r.body.data, "{\"error\":\"boom\"}");
	http_resp_free(&r);
	H_ASSERT_STR_EQ(stats_names(f, "tags"), "a:latest,n:latest");

	fake_set_models(f, "{\"pull_error\":null}");
	fake_req(f, "POST", "/api/pull", "{\"model\":\"m\",\"stream\":false}",
	    NULL, &r);
	H_ASSERT(r.status == 200, "pull, not streamed: %ld", r.status);
	H_ASSERT_STR_EQ(r.body.data, "{\"status\":\"success\"}");
	http_resp_free(&r);
	H_ASSERT_STR_EQ(stats_names(f, "tags"), "a:latest,n:latest,m:latest");
}
END_TEST

static const struct edit_case {
	const char *method, *path, *body;
	long status;
	const char *answer;
	const char *tags, *loaded; /* the lists afterwards */
} edit_cases[] = {
    {"DELETE", "/api/delete", "{\"model\":\"zz\"}", 404,
        "{\"error\":\"model 'zz' not found\"}", "a:latest,b:latest",
        "a:latest"},
    {"DELETE", "/api/delete", "{\"model\":\"a\"}", 200, "", "b:latest", ""},
    {"DELETE", "/api/delete", "{\"name\":\"a:latest\"}", 404,
        "{\"error\":\"model 'a:latest' not found\"}", "b:latest", ""},
    {"POST", "/api/copy", "{\"source\":\"b\",\"destination\":\"c\"}", 200, "",
        "b:latest,c:latest", ""},
    {"POST", "/api/copy", "{\"source\":\"zz\",\"destination\":\"d\"}", 404,
        "{\"error\":\"model 'zz' not found\"}", "b:latest,c:latest", ""},
    {"DELETE", "/api/delete", "{\"model\":\"b\"}", 200, "", "c:latest", ""},
};

START_TEST(test_delete_copy)
{
	static const char *const args[] = {"-T", "a,b", "-P", "a", NULL};
	struct harness_fake *f;
	struct http_resp r;
	size_t i;

	H_BEGIN();
	f = fake_start("fake", NULL, args);
	for (i = 0; i < sizeof edit_cases / sizeof edit_cases[0]; i++) {
		const struct edit_case *c = &edit_cases[i];

		fake_req(f, c->method, c->path, c->body, NULL, &r);
		H_ASSERT(r.status == c->status, "%s %s: %ld, not %ld", c->path,
		    c->body, r.status, c->status);
		H_ASSERT_STR_EQ(r.body.data ? r.body.data : "", c->answer);
		if (c->status == 200)
			H_ASSERT(http_header_get(&r, "Content-Type") == NULL,
			    "%s %s: an empty answer with a Content-Type",
			    c->path, c->body);
		http_resp_free(&r);
		H_ASSERT_STR_EQ(list_names(f, "/api/tags"), c->tags);
		H_ASSERT_STR_EQ(list_names(f, "/api/ps"), c->loaded);
	}
}
END_TEST

/* ---- stats: arrivals, authorization, concurrency, reset --------------- */

START_TEST(test_arrivals)
{
	static const char *const args[] = {"-T", "a,b", "-P", "a,b", NULL};
	static const char *const models[] = {"a", "b", "b", "a", "b"};
	struct harness_fake *f;
	struct http_resp r;
	const cJSON *a;
	cJSON *j;
	size_t i;

	H_BEGIN();
	f = fake_start("fake", NULL, args);
	for (i = 0; i < 5; i++) {
		fake_req(f, "POST", "/api/generate",
		    harness_strf(
		        "{\"model\":\"%s\",\"prompt\":\"p\"}", models[i]),
		    i == 2 ? NULL : harness_strf("X-Fake-Tag: t%zu", i), &r);
		http_resp_free(&r);
	}
	fake_req(f, "GET", "/api/tags", NULL, "Authorization: Bearer one", &r);
	http_resp_free(&r);
	fake_req(f, "POST", "/api/chat", "{\"model\":\"a\",\"messages\":[]}",
	    "Authorization: Bearer two", &r);
	http_resp_free(&r);
	fake_req(f, "GET", "/", NULL, "Authorization: Bearer one", &r);
	http_resp_free(&r);

	j = fake_stats(f);
	a = cJSON_GetObjectItem(j, "arrivals");
	H_ASSERT_INT_EQ(cJSON_GetArraySize(a), 6);
	for (i = 0; i < 6; i++) {
		const cJSON *e = cJSON_GetArrayItem(a, (int)i);

		H_ASSERT_STR_EQ(harness_jstr(e, "model"),
		    harness_strf("%s:latest", i < 5 ? models[i] : "a"));
		H_ASSERT_STR_EQ(harness_jstr(e, "tag"),
		    i == 2 || i == 5 ? "" : harness_strf("t%zu", i));
	}
	H_ASSERT_INT_EQ(
	    harness_jnum(cJSON_GetObjectItem(j, "by_model"), "a:latest"), 3);
	H_ASSERT_INT_EQ(
	    harness_jnum(cJSON_GetObjectItem(j, "by_model"), "b:latest"), 3);
	a = cJSON_GetObjectItem(j, "authorization");
	H_ASSERT_INT_EQ(cJSON_GetArraySize(a), 2);
	H_ASSERT_INT_EQ(harness_jnum(a, "Bearer one"), 2);
	H_ASSERT_INT_EQ(harness_jnum(a, "Bearer two"), 1);
	H_ASSERT_INT_EQ(harness_jnum(j, "concurrent"), 0);
	H_ASSERT_INT_EQ(harness_jnum(j, "max_concurrent"), 1);
	cJSON_Delete(j);
}
END_TEST

/* Held by a load, then busy, every request overlaps the others. */
START_TEST(test_max_concurrent)
{
	static const char *const args[] = {
	    "-T", "a,b", "-D", "300", "-B", "200", "-N", "2", NULL};
	static const char *const models[] = {"a", "b", "a", "a"};
	struct http_req reqs[4];
	struct http_resp resps[4];
	struct harness_fake *f;
	cJSON *j;
	size_t i;

	H_BEGIN();
	f = fake_start("fake", NULL, args);
	memset(reqs, 0, sizeof reqs);
	for (i = 0; i < 4; i++) {
		reqs[i].method = "POST";
		reqs[i].url = fake_url(f, "/api/generate");
		reqs[i].headers = json_hdrs;
		reqs[i].body = harness_strf(
		    "{\"model\":\"%s\",\"prompt\":\"p\",\"stream\":false}",
		    models[i]);
		reqs[i].body_len = strlen(reqs[i].body);
		reqs[i].has_body = 1;
	}
	http_request_many(reqs, resps, 4);
	for (i = 0; i < 4; i++) {
		H_ASSERT(resps[i].ok && resps[i].status == 200, "%zu: %s %ld",
		    i, resps[i].error, resps[i].status);
		H_ASSERT(resps[i].t_end - resps[i].t_start >=
		        NOT_BEFORE(LOAD_MS + BUSY_MS),
		    "%zu: answered in %.3f s", i,
		    resps[i].t_end - resps[i].t_start);
		H_ASSERT_CONTAINS(
		    resps[i].body.data, "\"load_duration\":300000000,");
		http_resp_free(&resps[i]);
	}
	j = fake_stats(f);
	H_ASSERT_INT_EQ(harness_jnum(j, "max_concurrent"), 4);
	H_ASSERT_INT_EQ(harness_jnum(j, "concurrent"), 0);
	H_ASSERT_INT_EQ(harness_jnum(j, "num_parallel"), 2);
	H_ASSERT_INT_EQ(
	    harness_jnum(
	        cJSON_GetObjectItem(j, "max_concurrent_model"), "a:latest"),
	    3);
	H_ASSERT_INT_EQ(
	    harness_jnum(
	        cJSON_GetObjectItem(j, "max_concurrent_model"), "b:latest"),
	    1);
	cJSON_Delete(j);
	H_ASSERT_STR_EQ(stats_names(f, "loaded"), "a:latest,b:latest");
}
END_TEST

/* A client that leaves mid-generation is no longer concurrent. */
START_TEST(test_cancel)
{
	static const char *const args[] = {
	    "-T", "a", "-P", "a", "-B", "60000", NULL};
	static const char body[] = "{\"model\":\"a\",\"prompt\":\"p\"}";
	struct harness_fake *f;
	struct http_conn c;

	H_BEGIN();
	f = fake_start("fake", NULL, args);
	http_conn_open(&c, f->port);
	H_CHECK(http_conn_sendstr(&c,
	            harness_strf("POST /api/generate HTTP/1.1\r\n"
	                         "Host: 127.0.0.1\r\n"
	                         "Content-Length: %zu\r\n\r\n%s",
	                sizeof body - 1, body),
	            WAIT_MS) == 0);
	/* The head and first line come at once; the last in a minute. */
	H_ASSERT(http_conn_wait_readable(&c, WAIT_MS), "no answer began");
	H_ASSERT_INT_EQ(fake_stat(f, "concurrent"), 1);
	http_conn_close(&c);
	H_ASSERT(harness_log_wait(&f->proc, "client gone (streaming)", WAIT_MS),
	    "the fake did not see its client leave");
	H_ASSERT_INT_EQ(fake_stat(f, "concurrent"), 0);
	H_ASSERT_INT_EQ(fake_stat(f, "max_concurrent"), 1);
	H_ASSERT_INT_EQ(stats_num(f, "max_concurrent_model", "a:latest"), 1);
}
END_TEST

START_TEST(test_models_reset)
{
	static const char *const args[] = {
	    "-T", "a", "-P", "a", "-B", "5", NULL};
	struct harness_fake *f;
	struct http_resp r;

	H_BEGIN();
	f = fake_start("fake", NULL, args);
	fake_set_models(f,
	    "{\"tags\":[\"x\",\"y:7b\"],\"loaded\":[\"y:7b\"],"
	    "\"busy_ms\":0,\"load_ms\":1}");
	H_ASSERT_STR_EQ(stats_names(f, "tags"), "x:latest,y:7b");
	H_ASSERT_STR_EQ(stats_names(f, "loaded"), "y:7b");
	H_ASSERT_INT_EQ(fake_stat(f, "busy_ms"), 0);
	H_ASSERT_INT_EQ(fake_stat(f, "load_ms"), 1);
	/* New tags keep loaded what was; a loaded model is installed. */
	fake_set_models(f, "{\"tags\":[\"y:7b\"]}");
	H_ASSERT_STR_EQ(stats_names(f, "loaded"), "y:7b");
	fake_set_models(f, "{\"loaded\":[\"z\"]}");
	H_ASSERT_STR_EQ(stats_names(f, "tags"), "y:7b,z:latest");
	H_ASSERT_STR_EQ(stats_names(f, "loaded"), "z:latest");

	fake_req(f, "POST", "/_fake/models", "{\"tags\":\"x\"}", NULL, &r);
	H_ASSERT(r.status == 400, "tags as a string: %ld", r.status);
	http_resp_free(&r);

	fake_reset(f);
	H_ASSERT_STR_EQ(stats_names(f, "tags"), "a:latest");
	H_ASSERT_STR_EQ(stats_names(f, "loaded"), "a:latest");
	H_ASSERT_INT_EQ(fake_stat(f, "busy_ms"), 5);
	H_ASSERT_INT_EQ(fake_stat(f, "load_ms"), 0);
}
END_TEST

static Suite *
fake_suite(void)
{
	Suite *s = suite_create("fake");
	TCase *tc;

	tc = harness_tcase(s, "models", 60);
	tcase_add_test(tc, test_not_installed);
	tcase_add_test(tc, test_load);
	tcase_add_test(tc, test_busy);
	tcase_add_test(tc, test_pull);
	tcase_add_test(tc, test_delete_copy);
	tcase_add_test(tc, test_models_reset);

	tc = harness_tcase(s, "stats", 60);
	tcase_add_test(tc, test_arrivals);
	tcase_add_test(tc, test_max_concurrent);
	tcase_add_test(tc, test_cancel);
	return s;
}

int
main(void)
{
	return harness_main(fake_suite());
}
