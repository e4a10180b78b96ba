/*
 * Integration tests for ollama-pool: the built daemon in front of the fake
 * Ollama, both real processes on loopback ports, driven by naive clients
 * (a fresh libcurl handle and connection per request) and raw sockets.
 *
 * Every test starts its own processes (harness_setup/harness_teardown are
 * the checked fixtures), so no test can see another's state.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <check.h>
#include <cjson/cJSON.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include "harness.h"

#define MODEL "llama3.2"
#define KNOWN_BLOB                                                             \
	"sha256:"                                                              \
	"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define UNKNOWN_BLOB                                                           \
	"sha256:"                                                              \
	"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define PROXY_ERROR_PREFIX "{\"error\":\"ollama-pool: "
#define BLOB_BODY_LEN (300 * 1024 + 17)

/* ---- helpers local to these tests -------------------------------------- */

/* Checks the shape of an error the proxy made itself. */
static void
test_assert_proxy_error(
    const struct http_resp *r, long status, const char *what)
{
	const char *ct, *msg;
	cJSON *j;

	H_ASSERT(r->ok, "%s: %s", what, r->error);
	H_ASSERT(r->status == status, "%s: status %ld, want %ld; body %.300s",
	    what, r->status, status, r->body.data);
	ct = http_header_get(r, "Content-Type");
	H_ASSERT(ct != NULL && strncasecmp(ct, "application/json", 16) == 0,
	    "%s: Content-Type %s, want application/json", what,
	    ct ? ct : "none");
	H_ASSERT(strncmp(r->body.data, PROXY_ERROR_PREFIX,
	             strlen(PROXY_ERROR_PREFIX)) == 0,
	    "%s: body does not start with %s: %.300s", what, PROXY_ERROR_PREFIX,
	    r->body.data);
	j = harness_json(r, what);
	msg = harness_jstr(j, "error");
	H_ASSERT(msg != NULL && strlen(msg) > strlen("ollama-pool: "),
	    "%s: error message is empty", what);
	cJSON_Delete(j);
}

/* The request headers the fake's echo saw. */
struct test_hdrs {
	char name[64][128];
	char value[64][512];
	size_t n;
};

static void
test_echo_headers(const cJSON *echo, struct test_hdrs *h)
{
	const cJSON *a, *e, *n, *v;

	memset(h, 0, sizeof *h);
	a = cJSON_GetObjectItemCaseSensitive(echo, "headers");
	H_ASSERT(cJSON_IsArray(a), "echo has no headers array");
	cJSON_ArrayForEach(e, a)
	{
		n = cJSON_GetArrayItem(e, 0);
		v = cJSON_GetArrayItem(e, 1);
		H_ASSERT(cJSON_IsString(n) && cJSON_IsString(v) && h->n < 64,
		    "odd echo header entry");
		snprintf(
		    h->name[h->n], sizeof h->name[0], "%s", n->valuestring);
		snprintf(
		    h->value[h->n], sizeof h->value[0], "%s", v->valuestring);
		h->n++;
	}
}

static size_t
test_hdrs_count(const struct test_hdrs *h, const char *name)
{
	size_t i, c = 0;

	for (i = 0; i < h->n; i++) {
		if (strcasecmp(h->name[i], name) == 0)
			c++;
	}
	return c;
}

static const char *
test_hdrs_get(const struct test_hdrs *h, const char *name)
{
	size_t i;

	for (i = 0; i < h->n; i++) {
		if (strcasecmp(h->name[i], name) == 0)
			return h->value[i];
	}
	return NULL;
}

static char *
test_hdrs_format(const struct test_hdrs *h)
{
	struct harness_buf b = {NULL, 0, 0};
	char *s;
	size_t i;

	for (i = 0; i < h->n; i++)
		harness_buf_addf(&b, "[%s: %s] ", h->name[i], h->value[i]);
	harness_buf_add(&b, "", 0);
	s = harness_strf("%s", b.data);
	harness_buf_free(&b);
	return s;
}

/* Sends raw bytes on a new connection and reads one response. */
static void
test_raw_exchange(
    int port, const char *request, size_t len, int head, struct http_resp *r)
{
	struct http_conn c;

	http_conn_open(&c, port);
	H_ASSERT(http_conn_send(&c, request, len, 10000) == 0,
	    "sending the request failed");
	http_conn_read_response(&c, head, HARNESS_HTTP_TIMEOUT_MS, r);
	http_conn_close(&c);
	H_ASSERT(r->ok, "raw exchange failed: %s", r->error);
}

static char *
test_raw_post(const char *target, const char *version, const char *extra,
    const char *body)
{
	return harness_strf(
	    "POST %s HTTP/%s\r\nHost: client.invalid\r\n"
	    "Content-Type: application/json\r\n%sContent-Length: %zu\r\n\r\n%s",
	    target, version, extra, strlen(body), body);
}

/* ---- byte for byte: the Ollama API through the proxy ---------------- */

enum { FR_ANY, FR_LENGTH, FR_CHUNKED };

struct bfb_case {
	const char *name;
	const char *method;
	const char *path; /* blob: the digest is appended */
	const char *body; /* JSON sent with Content-Length */
	int blob; /* 1: chunked body, matching digest; 2: wrong */
	long status;
	const char *ctype; /* prefix of the Content-Type, or NULL */
	int framing;
	long lines; /* exact number of body lines, or -1 */
	const char *contains; /* in the body */
	int empty; /* body must be empty */
};

#define GEN_BODY "{\"model\":\"" MODEL "\",\"prompt\":\"Why is the sky blue?\""
#define CHAT_BODY                                                              \
	"{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"user\","           \
	"\"content\":\"Hello there\"}]"

static const struct bfb_case bfb_cases[] = {
    {"root_get", "GET", "/", NULL, 0, 200, "text/plain", FR_LENGTH, -1,
        "Ollama is running", 0},
    {"root_head", "HEAD", "/", NULL, 0, 200, "text/plain", FR_LENGTH, -1, NULL,
        1},
    {"version_get", "GET", "/api/version", NULL, 0, 200, "application/json",
        FR_LENGTH, -1, "\"version\"", 0},
    {"version_head", "HEAD", "/api/version", NULL, 0, 200, "application/json",
        FR_LENGTH, -1, NULL, 1},
    {"tags_get", "GET", "/api/tags", NULL, 0, 200, "application/json",
        FR_LENGTH, -1, "\"models\"", 0},
    {"tags_head", "HEAD", "/api/tags", NULL, 0, 200, "application/json",
        FR_LENGTH, -1, NULL, 1},
    {"ps_get", "GET", "/api/ps", NULL, 0, 200, "application/json", FR_LENGTH,
        -1, "\"expires_at\"", 0},
    {"show", "POST", "/api/show", "{\"model\":\"" MODEL "\"}", 0, 200,
        "application/json", FR_LENGTH, -1, NULL, 0},
    {"show_missing_model", "POST", "/api/show", "{\"model\":\"missing-model\"}",
        0, 404, "application/json", FR_LENGTH, -1,
        "model 'missing-model' not found", 0},
    {"show_no_model", "POST", "/api/show", "{}", 0, 400, "application/json",
        FR_LENGTH, -1, "model is required", 0},
    {"generate_stream", "POST", "/api/generate", GEN_BODY "}", 0, 200,
        "application/x-ndjson", FR_CHUNKED, 6, "\"done\":true", 0},
    {"generate_nostream", "POST", "/api/generate",
        GEN_BODY ",\"stream\":false}", 0, 200, "application/json", FR_LENGTH,
        -1, "\"done\":true", 0},
    {"chat_stream", "POST", "/api/chat", CHAT_BODY "}", 0, 200,
        "application/x-ndjson", FR_CHUNKED, 6, "\"done\":true", 0},
    {"chat_nostream", "POST", "/api/chat", CHAT_BODY ",\"stream\":false}", 0,
        200, "application/json", FR_LENGTH, -1, "\"done\":true", 0},
    {"embed", "POST", "/api/embed",
        "{\"model\":\"all-minilm\",\"input\":\"hello\"}", 0, 200,
        "application/json", FR_LENGTH, -1, "\"embeddings\"", 0},
    {"embeddings", "POST", "/api/embeddings",
        "{\"model\":\"all-minilm\",\"prompt\":\"hello\"}", 0, 200,
        "application/json", FR_LENGTH, -1, "\"embedding\"", 0},
    /* 2,000 progress lines plus manifest, verify, write, success. */
    {"pull_long", "POST", "/api/pull",
        "{\"model\":\"" MODEL "\",\"fake_lines\":2000}", 0, 200,
        "application/x-ndjson", FR_CHUNKED, 2004, "\"success\"", 0},
    {"copy", "POST", "/api/copy",
        "{\"source\":\"" MODEL "\",\"destination\":\"" MODEL "-copy\"}", 0, 200,
        NULL, FR_LENGTH, -1, NULL, 1},
    {"delete", "DELETE", "/api/delete", "{\"model\":\"" MODEL "-copy\"}", 0,
        200, NULL, FR_LENGTH, -1, NULL, 1},
    {"blob_head_known", "HEAD", "/api/blobs/" KNOWN_BLOB, NULL, 0, 200, NULL,
        FR_ANY, -1, NULL, 1},
    {"blob_head_unknown", "HEAD", "/api/blobs/" UNKNOWN_BLOB, NULL, 0, 404,
        NULL, FR_ANY, -1, NULL, 1},
    {"blob_post_chunked_match", "POST", "/api/blobs/sha256:", NULL, 1, 201,
        NULL, FR_ANY, -1, NULL, 1},
    {"blob_post_chunked_mismatch", "POST", "/api/blobs/sha256:", NULL, 2, 400,
        "application/json", FR_LENGTH, -1, "digest mismatch", 0},
    {"oai_chat_stream", "POST", "/v1/chat/completions",
        CHAT_BODY ",\"stream\":true}", 0, 200, "text/event-stream", FR_CHUNKED,
        -1, "data: [DONE]\n\n", 0},
    {"oai_chat", "POST", "/v1/chat/completions", CHAT_BODY "}", 0, 200,
        "application/json", FR_LENGTH, -1, "\"chat.completion\"", 0},
    {"oai_completions", "POST", "/v1/completions",
        "{\"model\":\"" MODEL "\",\"prompt\":\"Say hi\"}", 0, 200,
        "application/json", FR_LENGTH, -1, "\"choices\"", 0},
    {"oai_embeddings", "POST", "/v1/embeddings",
        "{\"model\":\"all-minilm\",\"input\":\"hello\"}", 0, 200,
        "application/json", FR_LENGTH, -1, "\"embedding\"", 0},
    {"oai_models", "GET", "/v1/models", NULL, 0, 200, "application/json",
        FR_LENGTH, -1, "\"list\"", 0},
    {"unknown_path", "GET", "/api/no-such-endpoint", NULL, 0, 404, "text/plain",
        FR_LENGTH, -1, "404 page not found", 0},
    {"wrong_method", "GET", "/api/generate", NULL, 0, 405, "text/plain",
        FR_LENGTH, -1, "405 method not allowed", 0},
};
#define N_BFB ((int)(sizeof bfb_cases / sizeof bfb_cases[0]))

static void
bfb_request(const struct bfb_case *c, const char *url, char *blob,
    struct harness_membody *mb, struct http_resp *r)
{
	static const char *const json_hdrs[] = {
	    "Content-Type: application/json", NULL};
	static const char *const blob_hdrs[] = {
	    "Content-Type: application/octet-stream", NULL};
	struct http_req req;

	memset(&req, 0, sizeof req);
	req.method = c->method;
	req.url = url;
	if (c->body != NULL) {
		req.headers = json_hdrs;
		req.body = c->body;
		req.body_len = strlen(c->body);
		req.has_body = 1;
	} else if (c->blob) {
		/* Odd pieces, so the body crosses several chunks. */
		memset(mb, 0, sizeof *mb);
		mb->data = blob;
		mb->len = BLOB_BODY_LEN;
		mb->piece = 7777;
		req.headers = blob_hdrs;
		req.read_fn = harness_membody_read;
		req.read_arg = mb;
	}
	http_request(&req, r);
}

START_TEST(test_byte_for_byte)
{
	const struct bfb_case *c = &bfb_cases[_i];
	struct harness_fake *ref;
	struct harness_env env;
	struct harness_membody mb;
	struct http_resp d, p;
	char digest[65], *path, *blob = NULL;
	const char *ct;

	harness_begin(harness_strf("bfb_%s", c->name));
	harness_up(&env, "");
	/* The direct request goes to a second fake in the same fresh state,
	 * so that what the first request changes (a blob stored) cannot
	 * change the second one's answer. */
	ref = fake_start("ref", NULL, NULL);

	path = (char *)c->path;
	if (c->blob) {
		blob = malloc(BLOB_BODY_LEN);
		H_CHECK(blob != NULL);
		harness_fill(blob, BLOB_BODY_LEN, 7);
		if (c->blob == 1)
			harness_sha256_hex(blob, BLOB_BODY_LEN, digest);
		else
			harness_sha256_hex("something else", 14, digest);
		path = harness_strf("%s%s", c->path, digest);
	}

	bfb_request(c, fake_url(ref, path), blob, &mb, &d);
	bfb_request(c, harness_daemon_url(env.daemon, path), blob, &mb, &p);

	/* What the fake says is what Ollama says; if it did not, comparing
	 * two copies of a wrong answer would prove nothing. */
	H_ASSERT(d.ok && d.status == c->status,
	    "%s: the fake answered %ld "
	    "directly (%s), want %ld",
	    c->name, d.status, d.error, c->status);
	harness_assert_same_response(&d, &p, c->name);

	if (c->ctype != NULL) {
		ct = http_header_get(&p, "Content-Type");
		H_ASSERT(
		    ct != NULL && strncmp(ct, c->ctype, strlen(c->ctype)) == 0,
		    "%s: Content-Type %s, want %s", c->name, ct ? ct : "none",
		    c->ctype);
	}
	if (c->framing == FR_LENGTH)
		H_ASSERT(http_header_get(&p, "Content-Length") != NULL,
		    "%s: no Content-Length through the proxy", c->name);
	if (c->framing == FR_CHUNKED) {
		ct = http_header_get(&p, "Transfer-Encoding");
		H_ASSERT(ct != NULL && strcasecmp(ct, "chunked") == 0,
		    "%s: a stream must reach an HTTP/1.1 client chunked, got "
		    "Transfer-Encoding %s",
		    c->name, ct ? ct : "none");
	}
	if (c->lines >= 0)
		H_ASSERT((long)http_count_lines(&p.body) == c->lines,
		    "%s: %zu lines, want %ld", c->name,
		    http_count_lines(&p.body), c->lines);
	if (c->contains != NULL)
		H_ASSERT_CONTAINS(p.body.data, c->contains);
	if (c->empty)
		H_ASSERT(p.body.len == 0, "%s: body should be empty: %.200s",
		    c->name, p.body.data);
	if (strcmp(c->method, "HEAD") != 0 && c->framing != FR_ANY && c->empty)
		H_ASSERT_STR_EQ(http_header_get(&p, "Content-Length"), "0");

	http_resp_free(&d);
	http_resp_free(&p);
	free(blob);
}
END_TEST

/*
 * A blob Ollama already has is answered 200 before the body is read.  The
 * answer must reach the client while it is still sending; then, as Go's
 * server does, the proxy drops at most 256 KiB more of a body nobody will
 * read and closes the connection rather than take gigabytes off it.
 * _i: 0 sends the body with Content-Length, 1 chunked (as the Go CLI
 * does; Go then reads up to 256 KiB before it answers).
 */
static void
test_send_body_part(struct http_conn *c, const char *body, size_t from,
    size_t to, int chunked, size_t total)
{
	const size_t piece = 1u << 16;
	char line[32];
	size_t off, n;

	for (off = from; off < to; off += n) {
		n = to - off < piece ? to - off : piece;
		if (chunked) {
			snprintf(line, sizeof line, "%zx\r\n", n);
			H_ASSERT(http_conn_sendstr(c, line, 20000) == 0,
			    "sending a chunk head at %zu failed", off);
		}
		H_ASSERT(http_conn_send(c, body + off, n, 20000) == 0,
		    "the proxy stopped reading the body at %zu of %zu bytes",
		    off, total);
		if (chunked)
			H_CHECK(http_conn_sendstr(c, "\r\n", 20000) == 0);
	}
	if (chunked && to == total)
		H_CHECK(http_conn_sendstr(c, "0\r\n\r\n", 20000) == 0);
}

/* Sends body[from, total) until the peer stops taking it; how far it got.
 * A peer that stops reading without closing shows as a send timeout. */
static size_t
test_send_until_refused(struct http_conn *c, const char *body, size_t from,
    size_t total, int chunked)
{
	const size_t piece = 1u << 16;
	char line[32];
	size_t off, n;

	for (off = from; off < total; off += n) {
		n = total - off < piece ? total - off : piece;
		snprintf(line, sizeof line, "%zx\r\n", n);
		if ((chunked && http_conn_sendstr(c, line, 20000) != 0) ||
		    http_conn_send(c, body + off, n, 20000) != 0 ||
		    (chunked && http_conn_sendstr(c, "\r\n", 20000) != 0)) {
			H_ASSERT(errno != ETIMEDOUT,
			    "the proxy stopped reading at %zu without closing",
			    off);
			return off;
		}
	}
	return total;
}

START_TEST(test_blob_known_early_answer)
{
	static const char *const hdrs[] = {"Expect:", NULL};
	/* More than the kernel's socket buffers on both ends hold, so a
	 * proxy that drained it all would be seen taking it. */
	const size_t total = 32u << 20;
	/* Enough for the fake to answer: all of the head, or 256 KiB of a
	 * chunked body, and still far from the end. */
	const size_t first = _i == 0 ? 64u << 10 : 512u << 10;
	struct harness_membody mb;
	struct harness_fake *ref;
	struct harness_env env;
	struct http_resp d, p, p2, v, vd;
	struct http_conn c;
	struct http_req req;
	char *body, *head;
	size_t sent;

	harness_begin(_i == 0 ? "test_blob_known_early_answer_length"
	                      : "test_blob_known_early_answer_chunked");
	harness_up(&env, "");
	ref = fake_start("ref", NULL, NULL);
	body = malloc(total);
	H_CHECK(body != NULL);
	harness_fill(body, total, 3);

	memset(&req, 0, sizeof req);
	req.method = "POST";
	req.url = fake_url(ref, "/api/blobs/" KNOWN_BLOB);
	req.headers = hdrs;
	if (_i == 0) {
		req.body = body;
		req.body_len = total;
		req.has_body = 1;
	} else {
		memset(&mb, 0, sizeof mb);
		mb.data = body;
		mb.len = total;
		req.read_fn = harness_membody_read;
		req.read_arg = &mb;
	}
	http_request(&req, &d);
	H_ASSERT(d.ok && d.status == 200, "the fake itself: %ld %s", d.status,
	    d.error);

	http_conn_open(&c, env.daemon->port);
	if (_i == 0)
		head = harness_strf(
		    "POST /api/blobs/" KNOWN_BLOB " HTTP/1.1\r\n"
		    "Host: client.invalid\r\nContent-Length: %zu\r\n\r\n",
		    total);
	else
		head = harness_strf(
		    "POST /api/blobs/" KNOWN_BLOB " HTTP/1.1\r\n"
		    "Host: client.invalid\r\nTransfer-Encoding: chunked\r\n"
		    "\r\n");
	H_CHECK(http_conn_sendstr(&c, head, 10000) == 0);
	test_send_body_part(&c, body, 0, first, _i, total);
	/* Nothing more is sent until the answer is here: a proxy that waits
	 * for the whole body before answering fails on this timeout. */
	H_ASSERT(http_conn_wait_readable(&c, 10000),
	    "no answer within 10 s while %zu of %zu body bytes are sent", first,
	    total);
	H_ASSERT(http_conn_read_response(&c, 0, 10000, &p) == 0,
	    "reading the early answer: %s", p.error);
	harness_assert_same_response(&d, &p, "known blob, early answer");
	H_ASSERT_INT_EQ(p.status, 200);

	/* The rest is not drained: with a declared length the proxy closes
	 * at once, a chunked one after at most 256 KiB more. */
	sent = test_send_until_refused(&c, body, first, total, _i);
	H_ASSERT(sent < total,
	    "the proxy read all %zu bytes of a body it had answered", total);
	H_ASSERT(http_conn_wait_closed(&c, 10000) == 1,
	    "the proxy neither closed nor read on after %zu bytes", sent);
	http_conn_close(&c);

	/* A short rest is dropped and the connection carries on. */
	http_conn_open(&c, env.daemon->port);
	H_CHECK(http_conn_sendstr(&c,
	            harness_strf("POST /api/blobs/" KNOWN_BLOB " HTTP/1.1\r\n"
	                         "Host: client.invalid\r\n"
	                         "Content-Length: %u\r\n\r\n",
	                64u << 10),
	            10000) == 0);
	test_send_body_part(&c, body, 0, 32u << 10, 0, 64u << 10);
	H_ASSERT(http_conn_read_response(&c, 0, 10000, &p2) == 0,
	    "early answer to a short upload: %s", p2.error);
	H_ASSERT_INT_EQ(p2.status, 200);
	test_send_body_part(&c, body, 32u << 10, 64u << 10, 0, 64u << 10);
	H_CHECK(http_conn_sendstr(&c,
	            "GET /api/version HTTP/1.1\r\n"
	            "Host: client.invalid\r\n\r\n",
	            10000) == 0);
	H_ASSERT(http_conn_read_response(&c, 0, 10000, &v) == 0,
	    "the connection is not usable after a short early answer: %s",
	    v.error);
	http_get(fake_url(ref, "/api/version"), &vd);
	H_ASSERT_INT_EQ(v.status, 200);
	H_ASSERT(v.body.len == vd.body.len &&
	        memcmp(v.body.data, vd.body.data, v.body.len) == 0,
	    "the next request on the connection got \"%.200s\"", v.body.data);
	http_conn_close(&c);
	http_resp_free(&p2);

	/* And the daemon as a whole is fine. */
	http_resp_free(&v);
	http_get(harness_daemon_url(env.daemon, "/api/tags"), &v);
	H_ASSERT(
	    v.ok && v.status == 200, "next request: %ld %s", v.status, v.error);

	http_resp_free(&d);
	http_resp_free(&p);
	http_resp_free(&v);
	http_resp_free(&vd);
	free(body);
}
END_TEST

/* ---- request forwarding, seen by the fake's echo ------------------------- */

static cJSON *
test_echo_raw(int port, const char *request, struct http_resp *r)
{
	test_raw_exchange(port, request, strlen(request), 0, r);
	H_ASSERT(r->status == 200, "echo answered %ld: %.300s", r->status,
	    r->body.data);
	return harness_json(r, "echo");
}

START_TEST(test_forward_methods)
{
	static const char *methods[] = {
	    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
	static const char *const hdrs[] = {
	    "Content-Type: text/plain", "Expect:", NULL};
	struct harness_env env;
	struct http_resp r, g;
	struct http_req req;
	char hex[65], *body, *want;
	const char *cl;
	size_t i;
	cJSON *j;

	H_BEGIN();
	harness_up(&env, "");
	for (i = 0; i < sizeof methods / sizeof methods[0]; i++) {
		memset(&req, 0, sizeof req);
		req.method = methods[i];
		req.url = harness_daemon_url(env.daemon,
		    harness_strf(
		        "/_fake/echo/%s?m=%s", methods[i], methods[i]));
		req.headers = hdrs;
		body = harness_strf("payload of %s", methods[i]);
		if (strcmp(methods[i], "GET") != 0 &&
		    strcmp(methods[i], "HEAD") != 0 &&
		    strcmp(methods[i], "OPTIONS") != 0) {
			req.body = body;
			req.body_len = strlen(body);
			req.has_body = 1;
		}
		http_request(&req, &r);
		H_ASSERT(r.ok && r.status == 200, "%s: %ld %s", methods[i],
		    r.status, r.error);
		if (strcmp(methods[i], "HEAD") == 0) {
			/* No body to read the method from; but the echo a GET
			 * gets differs from a HEAD's only in the method, so
			 * the HEAD's Content-Length says what was sent. */
			H_ASSERT(r.body.len == 0, "HEAD got a body");
			memset(&req, 0, sizeof req);
			req.method = "GET";
			req.url = harness_daemon_url(
			    env.daemon, "/_fake/echo/HEAD?m=HEAD");
			req.headers = hdrs;
			http_request(&req, &g);
			H_ASSERT(g.ok && g.status == 200, "GET for HEAD: %s",
			    g.error);
			want = strstr(g.body.data, "\"method\":\"GET\"");
			H_ASSERT(want != NULL, "GET echo: %.200s", g.body.data);
			cl = http_header_get(&r, "Content-Length");
			H_ASSERT(cl != NULL &&
			        strtoul(cl, NULL, 10) == g.body.len + 1,
			    "HEAD: Content-Length %s, the echo "
			    "of a HEAD is %zu bytes",
			    cl ? cl : "none", g.body.len + 1);
			http_resp_free(&g);
			http_resp_free(&r);
			continue;
		}
		j = harness_json(&r, methods[i]);
		H_ASSERT_STR_EQ(harness_jstr(j, "method"), methods[i]);
		H_ASSERT_STR_EQ(harness_jstr(j, "target"),
		    harness_strf(
		        "/_fake/echo/%s?m=%s", methods[i], methods[i]));
		if (req.has_body) {
			harness_sha256_hex(body, strlen(body), hex);
			H_ASSERT_INT_EQ(
			    harness_jnum(j, "body_bytes"), strlen(body));
			H_ASSERT_STR_EQ(harness_jstr(j, "body_sha256"), hex);
		} else {
			H_ASSERT_INT_EQ(harness_jnum(j, "body_bytes"), 0);
		}
		cJSON_Delete(j);
		http_resp_free(&r);
	}
}
END_TEST

START_TEST(test_forward_target_bytes)
{
	static const char *targets[] = {
	    "/_fake/echo/a%20b/c?x=1&y=%2F&z",
	    "/_fake/echo//double//slash/./dot/../up?q=%7e&r=a+b&s=%C3%A9&t=",
	    "/_fake/echo?only=query&&empty=&%3D=%26",
	};
	struct harness_env env;
	struct http_resp r;
	size_t i;
	cJSON *j;

	H_BEGIN();
	harness_up(&env, "");
	for (i = 0; i < sizeof targets / sizeof targets[0]; i++) {
		j = test_echo_raw(env.daemon->port,
		    harness_strf("GET %s "
		                 "HTTP/1.1\r\nHost: client.invalid\r\n\r\n",
		        targets[i]),
		    &r);
		H_ASSERT_STR_EQ(harness_jstr(j, "target"), targets[i]);
		H_ASSERT_STR_EQ(harness_jstr(j, "method"), "GET");
		cJSON_Delete(j);
		http_resp_free(&r);
	}
}
END_TEST

/*
 * End-to-end headers arrive in order, with their case, values untouched;
 * hop-by-hop ones (and any the Connection header names) do not; Host is
 * the upstream's; Origin is left for Ollama to judge; nothing is added
 * but the proxy's X-Request-Id and Via, last.
 */
START_TEST(test_forward_headers)
{
	static const char *const e2e[][2] = {
	    {"X-First", "one"},
	    {"x-MiXeD-case", "Value  with   inner  spaces"},
	    {"Origin", "http://evil.example:8080"},
	    {"X-Dup", "a"},
	    {"X-Dup", "b"},
	    {"Accept", "application/x-ndjson"},
	    {"User-Agent", "harness/1.0 (raw)"},
	    {"Authorization", "Bearer sekrit"},
	    {"X-Last", "last"},
	};
	static const char *const hop[] = {
	    "Connection",
	    "Keep-Alive",
	    "X-Hop",
	    "Proxy-Connection",
	    "TE",
	    "Trailer",
	    "Upgrade",
	    "Proxy-Authorization",
	    "Transfer-Encoding",
	};
	struct harness_env env;
	struct test_hdrs h;
	struct http_resp r;
	struct http_conn c;
	const char *host;
	char *req, *got;
	size_t i, k;
	cJSON *j;

	H_BEGIN();
	harness_up(&env, "");
	req = harness_strf("GET /_fake/echo/headers HTTP/1.1\r\n"
	                   "Host: client.invalid:1234\r\n"
	                   "%s: %s\r\n"
	                   "Connection: keep-alive, X-Hop\r\n"
	                   "%s: %s\r\n"
	                   "keep-alive: timeout=5\r\n"
	                   "X-Hop: must not pass\r\n"
	                   "%s: %s\r\n"
	                   "Proxy-Connection: keep-alive\r\n"
	                   "%s: %s\r\n"
	                   "TE: trailers\r\n"
	                   "Trailer: X-Trailer\r\n"
	                   "%s: %s\r\n"
	                   "Upgrade: h2c\r\n"
	                   "Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
	                   "%s: %s\r\n%s: %s\r\n%s: %s\r\n%s: %s\r\n\r\n",
	    e2e[0][0], e2e[0][1], e2e[1][0], e2e[1][1], e2e[2][0], e2e[2][1],
	    e2e[3][0], e2e[3][1], e2e[4][0], e2e[4][1], e2e[5][0], e2e[5][1],
	    e2e[6][0], e2e[6][1], e2e[7][0], e2e[7][1], e2e[8][0], e2e[8][1]);
	j = test_echo_raw(env.daemon->port, req, &r);
	test_echo_headers(j, &h);
	got = test_hdrs_format(&h);

	H_ASSERT_INT_EQ(test_hdrs_count(&h, "Host"), 1);
	host = test_hdrs_get(&h, "Host");
	H_ASSERT_STR_EQ(host, harness_strf("127.0.0.1:%d", env.fake->port));
	for (i = 0; i < sizeof hop / sizeof hop[0]; i++)
		H_ASSERT(test_hdrs_count(&h, hop[i]) == 0,
		    "hop-by-hop %s was forwarded: %s", hop[i], got);
	/* The proxy's own two come last, once each. */
	H_ASSERT(h.n >= 2 && strcmp(h.name[h.n - 2], "X-Request-Id") == 0 &&
	        strcmp(h.name[h.n - 1], "Via") == 0 &&
	        test_hdrs_count(&h, "X-Request-Id") == 1 &&
	        test_hdrs_count(&h, "Via") == 1,
	    "want X-Request-Id and Via once each, last: %s", got);
	/* Everything else, in the order sent, byte for byte. */
	k = 0;
	for (i = 0; i + 2 < h.n; i++) {
		if (strcasecmp(h.name[i], "Host") == 0)
			continue;
		H_ASSERT(k < sizeof e2e / sizeof e2e[0],
		    "unexpected header %s: %s (the proxy added it): %s",
		    h.name[i], h.value[i], got);
		H_ASSERT(strcmp(h.name[i], e2e[k][0]) == 0 &&
		        strcmp(h.value[i], e2e[k][1]) == 0,
		    "header %zu is \"%s: %s\", sent \"%s: %s\": %s", k,
		    h.name[i], h.value[i], e2e[k][0], e2e[k][1], got);
		k++;
	}
	H_ASSERT(k == sizeof e2e / sizeof e2e[0],
	    "only %zu of %zu end-to-end headers arrived: %s", k,
	    sizeof e2e / sizeof e2e[0], got);
	cJSON_Delete(j);
	http_resp_free(&r);

	/* Connection: close names a header too; the client's close is for
	 * its own connection, which ends after the answer. */
	http_conn_open(&c, env.daemon->port);
	H_CHECK(http_conn_sendstr(&c,
	            "GET /_fake/echo/close HTTP/1.1\r\n"
	            "Host: client.invalid\r\nConnection: close, X-Hop\r\n"
	            "X-Hop: must not pass\r\nX-Kept: kept\r\n\r\n",
	            10000) == 0);
	H_ASSERT(http_conn_read_response(&c, 0, 10000, &r) == 0,
	    "Connection: close request: %s", r.error);
	H_ASSERT_INT_EQ(r.status, 200);
	j = harness_json(&r, "Connection: close echo");
	test_echo_headers(j, &h);
	got = test_hdrs_format(&h);
	H_ASSERT(test_hdrs_count(&h, "X-Hop") == 0 &&
	        test_hdrs_count(&h, "Connection") == 0 &&
	        test_hdrs_count(&h, "X-Kept") == 1,
	    "Connection: close, X-Hop: %s", got);
	H_ASSERT(http_conn_wait_closed(&c, 10000) == 1,
	    "the proxy kept the connection the client closed");
	http_conn_close(&c);
	cJSON_Delete(j);
	http_resp_free(&r);

	/* A header named by Connection is dropped however long its name
	 * (127 to 129 bytes straddle a fixed buffer this once had). */
	for (i = 127; i <= 129; i++) {
		char name[130];

		memset(name, 'y', i);
		memcpy(name, "X-", 2);
		name[i] = '\0';
		j = test_echo_raw(env.daemon->port,
		    harness_strf("GET /_fake/echo/long HTTP/1.1\r\n"
		                 "Host: client.invalid\r\n"
		                 "Connection: keep-alive, %s\r\n"
		                 "%s: must not pass\r\nX-Kept: kept\r\n\r\n",
		        name, name),
		    &r);
		/* In the raw echo: the parsed one keeps 127-byte names. */
		H_ASSERT(strstr(r.body.data, "must not pass") == NULL &&
		        strstr(r.body.data, "\"X-Kept\"") != NULL,
		    "a Connection-named header of %zu bytes: %.600s", i,
		    r.body.data);
		cJSON_Delete(j);
		http_resp_free(&r);
	}

	/* A bare request: the upstream sees the Host, the proxy's own
	 * X-Request-Id and Via, and nothing libcurl made up (Accept,
	 * User-Agent, Expect...). */
	j = test_echo_raw(env.daemon->port,
	    "GET /_fake/echo/bare HTTP/1.1\r\n"
	    "Host: client.invalid\r\n\r\n",
	    &r);
	test_echo_headers(j, &h);
	got = test_hdrs_format(&h);
	H_ASSERT(h.n == 3 && strcasecmp(h.name[0], "Host") == 0 &&
	        strcmp(h.name[1], "X-Request-Id") == 0 &&
	        strcmp(h.name[2], "Via") == 0,
	    "a request with only Host arrived with %s", got);
	cJSON_Delete(j);
	http_resp_free(&r);
}
END_TEST

/*
 * Request bodies: Content-Length bodies arrive with a Content-Length,
 * chunked ones intact; the framing headers are libcurl's, never copies of
 * the client's.  The client spells them in lower case so a copy shows.
 */
START_TEST(test_forward_bodies)
{
	struct harness_env env;
	struct harness_buf req = {NULL, 0, 0};
	struct test_hdrs h;
	struct http_resp r;
	char hex[65], *got, *big;
	const size_t bigsz = 1u << 20;
	size_t off, n;
	cJSON *j;

	H_BEGIN();
	harness_up(&env, "");

	/* Content-Length. */
	j = test_echo_raw(env.daemon->port,
	    "PUT /_fake/echo/cl HTTP/1.1\r\n"
	    "Host: client.invalid\r\ncontent-length: 11\r\n"
	    "X-After: 1\r\n\r\nhello world",
	    &r);
	test_echo_headers(j, &h);
	got = test_hdrs_format(&h);
	harness_sha256_hex("hello world", 11, hex);
	H_ASSERT_STR_EQ(harness_jstr(j, "method"), "PUT");
	H_ASSERT_INT_EQ(harness_jnum(j, "body_bytes"), 11);
	H_ASSERT_STR_EQ(harness_jstr(j, "body_sha256"), hex);
	H_ASSERT(!cJSON_IsTrue(cJSON_GetObjectItem(j, "chunked")) &&
	        test_hdrs_count(&h, "Content-Length") == 1 &&
	        strcmp(test_hdrs_get(&h, "Content-Length"), "11") == 0,
	    "a Content-Length body must arrive with Content-Length: 11: %s",
	    got);
	H_ASSERT(test_hdrs_count(&h, "Transfer-Encoding") == 0,
	    "Content-Length body arrived chunked too: %s", got);
	H_ASSERT(strcmp(h.name[0], "content-length") != 0 &&
	        (h.n < 2 || strcmp(h.name[1], "content-length") != 0),
	    "the client's Content-Length header was copied: %s", got);
	cJSON_Delete(j);
	http_resp_free(&r);

	/* Chunked, 1 MiB in uneven chunks with a chunk extension and a
	 * trailer the proxy must not trip over. */
	big = malloc(bigsz);
	H_CHECK(big != NULL);
	harness_fill(big, bigsz, 11);
	harness_sha256_hex(big, bigsz, hex);
	harness_buf_addf(&req,
	    "POST /_fake/echo/chunked HTTP/1.1\r\n"
	    "Host: client.invalid\r\ntransfer-encoding: chunked\r\n"
	    "X-After: 2\r\n\r\n");
	for (off = 0, n = 1; off < bigsz; off += n, n = n * 3 + 1) {
		if (n > bigsz - off)
			n = bigsz - off;
		harness_buf_addf(
		    &req, "%zx%s\r\n", n, off == 0 ? ";ext=1" : "");
		harness_buf_add(&req, big + off, n);
		harness_buf_add(&req, "\r\n", 2);
	}
	harness_buf_addf(&req, "0\r\nX-Trailer: t\r\n\r\n");
	test_raw_exchange(env.daemon->port, req.data, req.len, 0, &r);
	H_ASSERT_INT_EQ(r.status, 200);
	j = harness_json(&r, "chunked echo");
	test_echo_headers(j, &h);
	got = test_hdrs_format(&h);
	H_ASSERT_INT_EQ(harness_jnum(j, "body_bytes"), bigsz);
	H_ASSERT_STR_EQ(harness_jstr(j, "body_sha256"), hex);
	H_ASSERT(test_hdrs_count(&h, "Content-Length") +
	            test_hdrs_count(&h, "Transfer-Encoding") ==
	        1,
	    "the body must be framed once: %s", got);
	for (n = 0; n < h.n; n++)
		H_ASSERT(strcmp(h.name[n], "transfer-encoding") != 0,
		    "the client's Transfer-Encoding header was copied: %s",
		    got);
	H_ASSERT(test_hdrs_count(&h, "X-After") == 1 &&
	        test_hdrs_count(&h, "X-Trailer") == 0,
	    "headers: %s", got);
	cJSON_Delete(j);
	http_resp_free(&r);
	harness_buf_free(&req);
	free(big);
}
END_TEST

/* ---- the client side: keep-alive, pipelining, HTTP/1.0, bad requests -- */

START_TEST(test_pipelining)
{
	static const char gen[] =
	    "{\"model\":\"" MODEL "\",\"prompt\":\"p\","
	    "\"options\":{\"num_predict\":3},\"fake_interval_ms\":100}";
	struct harness_env env;
	struct harness_buf all = {NULL, 0, 0};
	struct http_resp d, r1, r2, r3, r4, vd;
	struct http_conn c;
	cJSON *j;

	H_BEGIN();
	harness_up(&env, "");
	http_post_json(fake_url(env.fake, "/api/generate"), gen, &d);
	H_ASSERT(d.ok && d.status == 200, "direct generate: %s", d.error);
	http_get(fake_url(env.fake, "/api/version"), &vd);

	/* A slow stream first, then a quick echo with a body, then a GET,
	 * all in one write: the answers must come in this order even though
	 * the later ones would be ready first. */
	harness_buf_addf(
	    &all, "%s", test_raw_post("/api/generate", "1.1", "", gen));
	harness_buf_addf(&all,
	    "POST /_fake/echo/second HTTP/1.1\r\n"
	    "Host: client.invalid\r\nContent-Length: 5\r\n\r\nhello");
	harness_buf_addf(&all,
	    "GET /api/version HTTP/1.1\r\n"
	    "Host: client.invalid\r\n\r\n");
	http_conn_open(&c, env.daemon->port);
	H_CHECK(http_conn_send(&c, all.data, all.len, 10000) == 0);

	H_ASSERT(http_conn_read_response(&c, 0, 20000, &r1) == 0,
	    "first response: %s", r1.error);
	H_ASSERT(r1.status == 200 && r1.body.len == d.body.len &&
	        memcmp(r1.body.data, d.body.data, d.body.len) == 0,
	    "first response is not the generate stream: %ld %.300s", r1.status,
	    r1.body.data);
	H_ASSERT(http_conn_read_response(&c, 0, 20000, &r2) == 0,
	    "second response: %s", r2.error);
	H_ASSERT_INT_EQ(r2.status, 200);
	j = harness_json(&r2, "second response");
	H_ASSERT_STR_EQ(harness_jstr(j, "target"), "/_fake/echo/second");
	H_ASSERT_INT_EQ(harness_jnum(j, "body_bytes"), 5);
	cJSON_Delete(j);
	H_ASSERT(http_conn_read_response(&c, 0, 20000, &r3) == 0,
	    "third response: %s", r3.error);
	H_ASSERT(r3.status == 200 && strcmp(r3.body.data, vd.body.data) == 0,
	    "third response: %ld %.200s", r3.status, r3.body.data);

	/* Still open for more. */
	H_CHECK(http_conn_sendstr(&c,
	            "GET /api/tags HTTP/1.1\r\n"
	            "Host: client.invalid\r\n\r\n",
	            10000) == 0);
	H_ASSERT(http_conn_read_response(&c, 0, 20000, &r4) == 0,
	    "fourth response after a pause: %s", r4.error);
	H_ASSERT_INT_EQ(r4.status, 200);
	H_ASSERT(http_conn_wait_closed(&c, 0) == 0,
	    "the proxy closed a kept-alive connection");

	http_conn_close(&c);
	harness_buf_free(&all);
	http_resp_free(&d);
	http_resp_free(&vd);
	http_resp_free(&r1);
	http_resp_free(&r2);
	http_resp_free(&r3);
	http_resp_free(&r4);
}
END_TEST

START_TEST(test_http10)
{
	static const char gen[] = "{\"model\":\"" MODEL "\",\"prompt\":\"p\","
	                          "\"options\":{\"num_predict\":4}}";
	struct harness_env env;
	struct http_resp d, vd, r;
	struct http_conn c;

	H_BEGIN();
	harness_up(&env, "");
	http_get(fake_url(env.fake, "/api/version"), &vd);
	http_post_json(fake_url(env.fake, "/api/generate"), gen, &d);
	H_ASSERT(vd.ok && d.ok, "direct requests failed");

	http_conn_open(&c, env.daemon->port);
	H_CHECK(http_conn_sendstr(
	            &c, "GET /api/version HTTP/1.0\r\n\r\n", 10000) == 0);
	H_ASSERT(http_conn_read_response(&c, 0, 10000, &r) == 0,
	    "HTTP/1.0 GET: %s", r.error);
	H_ASSERT_INT_EQ(r.status, 200);
	H_ASSERT_STR_EQ(r.body.data, vd.body.data);
	H_ASSERT(http_conn_wait_closed(&c, 10000) == 1,
	    "the connection stayed open after an HTTP/1.0 response");
	http_conn_close(&c);
	http_resp_free(&r);

	/* A stream to an HTTP/1.0 client cannot be chunked: it ends when
	 * the connection does. */
	http_conn_open(&c, env.daemon->port);
	H_CHECK(
	    http_conn_sendstr(&c,
	        test_raw_post("/api/generate", "1.0", "", gen), 10000) == 0);
	H_ASSERT(http_conn_read_response(&c, 0, 10000, &r) == 0,
	    "HTTP/1.0 stream: %s", r.error);
	H_ASSERT_INT_EQ(r.status, 200);
	H_ASSERT(!r.chunked && http_header_get(&r, "Transfer-Encoding") == NULL,
	    "chunked answer to an HTTP/1.0 client: %s", r.head.data);
	H_ASSERT(r.body.len == d.body.len &&
	        memcmp(r.body.data, d.body.data, d.body.len) == 0,
	    "HTTP/1.0 stream body differs: %.300s", r.body.data);
	H_ASSERT(http_conn_wait_closed(&c, 10000) == 1,
	    "the connection stayed open after an HTTP/1.0 stream");
	http_conn_close(&c);
	http_resp_free(&r);
	http_resp_free(&d);
	http_resp_free(&vd);
}
END_TEST

START_TEST(test_malformed_request)
{
	static const char *const bad[] = {
	    "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
	    /* Two framings at once: the classic smuggling vector. */
	    "POST /api/generate HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "0\r\n\r\n",
	    "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
	    "Content-Length: 2\r\n\r\nab",
	};
	struct harness_env env;
	struct http_resp r;
	struct http_conn c;
	size_t i;

	H_BEGIN();
	harness_up(&env, "");
	fake_reset(env.fake);
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		http_conn_open(&c, env.daemon->port);
		H_CHECK(http_conn_sendstr(&c, bad[i], 10000) == 0);
		H_ASSERT(http_conn_read_response(&c, 0, 10000, &r) == 0,
		    "malformed request %zu got no response: %s", i, r.error);
		test_assert_proxy_error(
		    &r, 400, harness_strf("malformed request %zu", i));
		H_ASSERT(http_conn_wait_closed(&c, 10000) == 1,
		    "malformed request %zu: connection left open", i);
		http_conn_close(&c);
		http_resp_free(&r);
	}
	H_ASSERT_INT_EQ(fake_stat(env.fake, "requests"), 0);
}
END_TEST

/* ---- streaming, measured ---------------------------------------------- */

START_TEST(test_streaming_not_batched)
{
	static const char gen[] =
	    "{\"model\":\"" MODEL "\",\"prompt\":\"p\","
	    "\"options\":{\"num_predict\":10},\"fake_interval_ms\":50}";
	struct harness_env env;
	struct http_resp r;
	double t[64], gap;
	size_t n, i;

	H_BEGIN();
	harness_up(&env, "");
	http_post_json(
	    harness_daemon_url(env.daemon, "/api/generate"), gen, &r);
	H_ASSERT(
	    r.ok && r.status == 200, "generate: %ld %s", r.status, r.error);
	n = http_line_times(&r, t, 64);
	/* Ten tokens and the final line, the fake pausing 50 ms after each
	 * line but the last. */
	H_ASSERT(n == 11, "%zu lines, want 11: %.400s", n, r.body.data);
	for (i = 1; i < n; i++) {
		gap = (t[i] - t[i - 1]) * 1000.0;
		H_ASSERT(gap >= 25.0 && gap <= 250.0,
		    "line %zu came %.1f ms after line %zu (want about 50): "
		    "lines are being held back and batched",
		    i, gap, i - 1);
	}
	H_ASSERT((t[n - 1] - t[0]) * 1000.0 >= 400.0,
	    "the stream took %.1f ms, want at least 400",
	    (t[n - 1] - t[0]) * 1000.0);
	http_resp_free(&r);
}
END_TEST

START_TEST(test_streaming_sse_not_batched)
{
	static const char body[] =
	    CHAT_BODY ",\"stream\":true,"
	              "\"max_tokens\":6,\"fake_interval_ms\":50}";
	struct harness_env env;
	struct http_resp r;
	double t[64], ev[32], gap;
	size_t n, i, k = 0;
	const char *p;

	H_BEGIN();
	harness_up(&env, "");
	http_post_json(
	    harness_daemon_url(env.daemon, "/v1/chat/completions"), body, &r);
	H_ASSERT(r.ok && r.status == 200, "SSE: %ld %s", r.status, r.error);
	/* An event ends at its blank line: every second '\n'. */
	n = http_line_times(&r, t, 64);
	for (i = 1; i < n && k < 32; i += 2)
		ev[k++] = t[i];
	H_ASSERT(k == 8, "%zu events, want 6 tokens, a stop and [DONE]: %s", k,
	    r.body.data);
	p = r.body.data + r.body.len - strlen("data: [DONE]\n\n");
	H_ASSERT_STR_EQ(p, "data: [DONE]\n\n");
	for (i = 1; i < k; i++) {
		gap = (ev[i] - ev[i - 1]) * 1000.0;
		H_ASSERT(gap >= 25.0 && gap <= 250.0,
		    "event %zu came %.1f ms after the one before (want about "
		    "50)",
		    i, gap);
	}
	http_resp_free(&r);
}
END_TEST

/* ---- pooling, proven by counting ----------------------------------------- */

START_TEST(test_pool_sequential)
{
	struct harness_env env;
	struct http_resp r;
	int i;

	H_BEGIN();
	harness_up(&env, "");
	fake_reset(env.fake);
	for (i = 0; i < 200; i++) {
		http_get(harness_daemon_url(env.daemon, "/api/version"), &r);
		H_ASSERT(r.ok && r.status == 200, "request %d: %ld %s", i,
		    r.status, r.error);
		/* Each of ours really was a new client connection. */
		H_ASSERT_INT_EQ(r.num_connects, 1);
		http_resp_free(&r);
	}
	H_ASSERT_INT_EQ(fake_stat(env.fake, "requests"), 200);
	H_ASSERT(fake_stat(env.fake, "connections_used") == 1,
	    "200 sequential requests from 200 client connections used %lld "
	    "upstream connections; a pool uses one",
	    fake_stat(env.fake, "connections_used"));
}
END_TEST

/*
 * A persistent pool opens its connections once.  Waves of 32 requests at
 * once fill the 20 connections of the default pool and then drain to
 * none; the pool must keep them for the next wave rather than close all
 * but pool_connections (10) as the number in flight falls (curl closes
 * the oldest idle connection whenever its cache is over its cap).
 */
START_TEST(test_pool_no_churn)
{
	enum { WAVES = 20, N = 32, MAXSIZE = 20 };
	struct harness_env env;
	struct http_req reqs[N];
	struct http_resp resps[N];
	long long used;
	int w, i;

	H_BEGIN();
	harness_up(&env, "");
	fake_reset(env.fake);
	memset(reqs, 0, sizeof reqs);
	for (i = 0; i < N; i++)
		reqs[i].url = harness_daemon_url(env.daemon, "/api/version");
	for (w = 0; w < WAVES; w++) {
		http_request_many(reqs, resps, N);
		for (i = 0; i < N; i++) {
			H_ASSERT(resps[i].ok && resps[i].status == 200,
			    "wave %d, request %d: %ld %s", w, i,
			    resps[i].status, resps[i].error);
			http_resp_free(&resps[i]);
		}
	}
	H_ASSERT_INT_EQ(fake_stat(env.fake, "requests"), WAVES * N);
	used = fake_stat(env.fake, "connections_used");
	H_ASSERT(used <= MAXSIZE,
	    "%d waves of %d requests opened %lld upstream connections: a "
	    "pool of %d must open them once",
	    WAVES, N, used, MAXSIZE);
}
END_TEST

START_TEST(test_pool_concurrent_maxsize)
{
	enum { N = 50, MAXSIZE = 4 };
	static const char gen[] =
	    "{\"model\":\"" MODEL "\",\"prompt\":\"p\","
	    "\"options\":{\"num_predict\":3},\"fake_interval_ms\":20}";
	static const char *const hdrs[] = {
	    "Content-Type: application/json", NULL};
	struct harness_env env;
	struct http_req reqs[N];
	struct http_resp resps[N];
	long long used, maxc;
	int i;

	H_BEGIN();
	harness_up(&env,
	    harness_strf("[upstream]\npool_maxsize = %d\n"
	                 "queue_max = 200\n",
	        MAXSIZE));
	fake_reset(env.fake);
	memset(reqs, 0, sizeof reqs);
	for (i = 0; i < N; i++) {
		reqs[i].method = "POST";
		reqs[i].url = harness_daemon_url(env.daemon, "/api/generate");
		reqs[i].headers = hdrs;
		reqs[i].body = gen;
		reqs[i].body_len = strlen(gen);
		reqs[i].has_body = 1;
		reqs[i].timeout_ms = 60000;
	}
	http_request_many(reqs, resps, N);
	for (i = 0; i < N; i++) {
		H_ASSERT(resps[i].ok && resps[i].status == 200,
		    "request %d: %ld %s %.200s", i, resps[i].status,
		    resps[i].error, resps[i].body.data);
		H_ASSERT(http_count_lines(&resps[i].body) == 4 &&
		        strstr(resps[i].body.data, "\"done\":true") != NULL,
		    "request %d: incomplete stream %.300s", i,
		    resps[i].body.data);
		H_ASSERT_INT_EQ(resps[i].num_connects, 1);
		http_resp_free(&resps[i]);
	}
	H_ASSERT_INT_EQ(fake_stat(env.fake, "requests"), N);
	used = fake_stat(env.fake, "connections_used");
	maxc = fake_stat(env.fake, "max_concurrent_used");
	H_ASSERT(used <= MAXSIZE,
	    "%d concurrent clients opened %lld upstream "
	    "connections with pool_maxsize = %d",
	    N, used, MAXSIZE);
	H_ASSERT(maxc <= MAXSIZE,
	    "%lld upstream connections in use at once "
	    "with pool_maxsize = %d",
	    maxc, MAXSIZE);
	H_ASSERT(fake_stat(env.fake, "max_concurrent_requests") <= MAXSIZE,
	    "more than %d requests at the upstream at once", MAXSIZE);
	/* The pool is used, not just capped: requests did overlap. */
	H_ASSERT(maxc >= 2,
	    "only %lld upstream connection in use at once for "
	    "%d overlapping requests",
	    maxc, N);
}
END_TEST

START_TEST(test_queue_full)
{
	enum { N = 3 };
	static const char gen[] =
	    "{\"model\":\"" MODEL "\",\"prompt\":\"p\","
	    "\"options\":{\"num_predict\":3},\"fake_interval_ms\":300}";
	static const char *const hdrs[] = {
	    "Content-Type: application/json", NULL};
	struct harness_env env;
	struct http_req reqs[N];
	struct http_resp resps[N];
	const char *ra;
	double first_ok = 1e9;
	int i, n200 = 0, n503 = 0, busy = -1;

	H_BEGIN();
	harness_up(&env, "[upstream]\npool_maxsize = 1\nqueue_max = 1\n");
	memset(reqs, 0, sizeof reqs);
	for (i = 0; i < N; i++) {
		reqs[i].method = "POST";
		reqs[i].url = harness_daemon_url(env.daemon, "/api/generate");
		reqs[i].headers = hdrs;
		reqs[i].body = gen;
		reqs[i].body_len = strlen(gen);
		reqs[i].has_body = 1;
	}
	http_request_many(reqs, resps, N);
	for (i = 0; i < N; i++) {
		H_ASSERT(resps[i].ok, "request %d: %s", i, resps[i].error);
		if (resps[i].status == 200) {
			n200++;
			if (resps[i].t_end < first_ok)
				first_ok = resps[i].t_end;
		} else if (resps[i].status == 503) {
			n503++;
			busy = i;
		}
	}
	H_ASSERT(n200 == 2 && n503 == 1,
	    "one in flight, one queued, one "
	    "refused: got %d 200s and %d 503s",
	    n200, n503);
	test_assert_proxy_error(&resps[busy], 503, "full queue");
	ra = http_header_get(&resps[busy], "Retry-After");
	H_ASSERT(
	    ra != NULL && *ra != '\0' && strspn(ra, "0123456789") == strlen(ra),
	    "503 needs Retry-After in seconds, got %s", ra ? ra : "none");
	/* Refused at once, not after waiting for a slot. */
	H_ASSERT(resps[busy].t_end < first_ok,
	    "the 503 came after a queued "
	    "request had finished");
	for (i = 0; i < N; i++)
		http_resp_free(&resps[i]);
}
END_TEST

/* ---- errors and health ------------------------------------------------ */

START_TEST(test_upstream_unreachable)
{
	struct harness_daemon *d;
	struct http_resp r;
	char *where;
	int port;
	cJSON *j;

	H_BEGIN();
	port = harness_free_port();
	where = harness_strf("127.0.0.1:%d", port);
	d = harness_daemon_start("", harness_strf("http://%s", where), NULL);

	http_get(harness_daemon_url(d, "/api/tags"), &r);
	test_assert_proxy_error(&r, 502, "GET, upstream down");
	H_ASSERT_CONTAINS(r.body.data, where);
	http_resp_free(&r);

	http_post_json(harness_daemon_url(d, "/api/generate"),
	    "{\"model\":\"" MODEL "\",\"prompt\":\"p\"}", &r);
	test_assert_proxy_error(&r, 502, "POST, upstream down");
	H_ASSERT_CONTAINS(r.body.data, where);
	http_resp_free(&r);

	http_get(harness_daemon_url(d, "/ollama-pool/health"), &r);
	H_ASSERT(r.ok && r.status == 503, "health: %ld %s", r.status, r.error);
	j = harness_json(&r, "health");
	H_ASSERT(cJSON_IsFalse(cJSON_GetObjectItem(j, "upstream_ok")),
	    "upstream_ok must be false with nothing listening: %s",
	    r.body.data);
	cJSON_Delete(j);
	http_resp_free(&r);
}
END_TEST

START_TEST(test_health)
{
	struct harness_env env;
	struct http_resp r;
	long long before;
	double t0;
	cJSON *j;

	H_BEGIN();
	harness_up(&env, "");
	fake_reset(env.fake);

	http_get(harness_daemon_url(env.daemon, "/ollama-pool/health"), &r);
	H_ASSERT(r.ok && r.status == 200, "health: %ld %s %s", r.status,
	    r.error, r.body.data);
	j = harness_json(&r, "health");
	H_ASSERT(cJSON_IsTrue(cJSON_GetObjectItem(j, "upstream_ok")),
	    "upstream_ok must be true with the fake up: %s", r.body.data);
	cJSON_Delete(j);
	http_resp_free(&r);
	/* Asking the upstream is at most one probe of its own; the request
	 * itself is never forwarded (the fake would have answered 404). */
	before = fake_stat(env.fake, "requests");
	H_ASSERT(before <= 1, "health cost %lld upstream requests", before);

	/* Nothing under /ollama-pool/ reaches the upstream. */
	http_get(harness_daemon_url(env.daemon, "/ollama-pool/no-such"), &r);
	H_ASSERT(r.ok && r.status == 404, "unknown admin path: %ld %s",
	    r.status, r.error);
	H_ASSERT(strncmp(r.body.data, PROXY_ERROR_PREFIX,
	             strlen(PROXY_ERROR_PREFIX)) == 0,
	    "unknown admin path answered "
	    "by someone else: %s",
	    r.body.data);
	http_resp_free(&r);
	http_post_json(
	    harness_daemon_url(env.daemon, "/ollama-pool/health"), "{}", &r);
	H_ASSERT(r.ok && r.status >= 400 && r.status < 500, "POST health: %ld",
	    r.status);
	http_resp_free(&r);
	H_ASSERT_INT_EQ(fake_stat(env.fake, "requests"), before);

	/* The answer is fresh: with the upstream gone it says so within
	 * the second an answer is reused. */
	fake_stop(env.fake);
	t0 = harness_now();
	for (;;) {
		http_get(
		    harness_daemon_url(env.daemon, "/ollama-pool/health"), &r);
		if (r.status != 200 || harness_now() - t0 > 5)
			break;
		http_resp_free(&r);
		poll(NULL, 0, 50);
	}
	H_ASSERT(r.ok && r.status == 503,
	    "health, upstream down: %ld %s, %.1f s after it went", r.status,
	    r.error, harness_now() - t0);
	H_ASSERT(harness_now() - t0 < 3,
	    "health took %.1f s to see the upstream gone", harness_now() - t0);
	j = harness_json(&r, "health, upstream down");
	H_ASSERT(cJSON_IsFalse(cJSON_GetObjectItem(j, "upstream_ok")),
	    "upstream_ok must be false once the upstream is gone: %s",
	    r.body.data);
	cJSON_Delete(j);
	http_resp_free(&r);
}
END_TEST

/*
 * Health needs no token, so it must not be a way to take the pool or
 * flood Ollama: with one pool slot and /api/version slow, a dozen health
 * calls at once share one probe, and an ordinary request beside them is
 * not delayed by it.  An answer is reused for about a second, and the
 * probe says who it is.
 */
START_TEST(test_health_probes_shared)
{
	enum { NHEALTH = 12 };
	struct http_req reqs[NHEALTH + 1];
	struct http_resp resp[NHEALTH + 1], r;
	struct harness_env env;
	const char *ua = NULL;
	double t0, tags_s;
	cJSON *st, *h;
	size_t i;

	H_BEGIN();
	harness_up(&env, "[upstream]\npool_maxsize = 1\n");
	fake_reset(env.fake);
	fake_fault(env.fake,
	    "{\"action\":\"hang\",\"path\":\"/api/version\","
	    "\"delay_ms\":1500,\"count\":1000}");
	memset(reqs, 0, sizeof reqs);
	for (i = 0; i < NHEALTH; i++)
		reqs[i].url =
		    harness_daemon_url(env.daemon, "/ollama-pool/health");
	reqs[NHEALTH].url = harness_daemon_url(env.daemon, "/api/tags");
	http_request_many(reqs, resp, NHEALTH + 1);
	for (i = 0; i < NHEALTH; i++) {
		H_ASSERT(resp[i].ok && resp[i].status == 200,
		    "health call %zu: %ld %s %s", i, resp[i].status,
		    resp[i].error, resp[i].body.data);
		http_resp_free(&resp[i]);
	}
	H_ASSERT(resp[NHEALTH].ok && resp[NHEALTH].status == 200,
	    "the request beside the probes: %ld %s", resp[NHEALTH].status,
	    resp[NHEALTH].error);
	tags_s = resp[NHEALTH].t_end - resp[NHEALTH].t_start;
	H_ASSERT(tags_s < 1.0,
	    "a request beside %d health calls took %.2f s: the probes held "
	    "its slot or its connection",
	    NHEALTH, tags_s);
	http_resp_free(&resp[NHEALTH]);
	H_ASSERT(fake_stat(env.fake, "requests") == 2,
	    "%d health calls cost %lld upstream requests besides the one "
	    "request: want one probe",
	    NHEALTH, fake_stat(env.fake, "requests") - 1);

	/* A fresh answer is given again without asking. */
	http_get(harness_daemon_url(env.daemon, "/ollama-pool/health"), &r);
	H_ASSERT(r.ok && r.status == 200, "health again: %ld", r.status);
	H_ASSERT_INT_EQ(fake_stat(env.fake, "requests"), 2);
	http_resp_free(&r);

	/* An old one is not: within a few seconds a new probe goes out,
	 * and it carries our User-Agent. */
	fake_reset(env.fake);
	t0 = harness_now();
	while (fake_stat(env.fake, "requests") == 0) {
		H_ASSERT(harness_now() - t0 < 5,
		    "no new probe %.1f s after the last", harness_now() - t0);
		http_get(
		    harness_daemon_url(env.daemon, "/ollama-pool/health"), &r);
		http_resp_free(&r);
		poll(NULL, 0, 100);
	}
	st = fake_stats(env.fake);
	h = cJSON_GetObjectItem(st, "last_request_headers");
	for (i = 0; i < (size_t)cJSON_GetArraySize(h); i++) {
		cJSON *e = cJSON_GetArrayItem(h, (int)i);
		const char *name =
		    cJSON_GetStringValue(cJSON_GetArrayItem(e, 0));

		if (name != NULL && strcasecmp(name, "User-Agent") == 0)
			ua = cJSON_GetStringValue(cJSON_GetArrayItem(e, 1));
	}
	H_ASSERT(ua != NULL && strcmp(ua, "ollama-pool/" PACKAGE_VERSION) == 0,
	    "the probe's User-Agent is %s", ua ? ua : "(none)");
	cJSON_Delete(st);
}
END_TEST

/*
 * An upstream answer framed two ways (Content-Length and chunked) has no
 * trustworthy end: the client gets a 502 of ours, never the answer with
 * both, the attempt is not retried, and that upstream connection is closed
 * rather than pooled.
 */
START_TEST(test_upstream_two_framings)
{
	struct harness_env env;
	struct http_resp r;

	H_BEGIN();
	harness_up(&env, "");
	fake_reset(env.fake);
	fake_fault(env.fake,
	    "{\"action\":\"status\",\"status\":200,\"path\":\"/api/tags\","
	    "\"headers\":\"Transfer-Encoding: chunked\\r\\n\","
	    "\"body\":\"3\\r\\nabc\\r\\n0\\r\\n\\r\\n\"}");
	http_get(harness_daemon_url(env.daemon, "/api/tags"), &r);
	H_ASSERT(r.ok && r.status == 502,
	    "an answer framed two ways reached the client as %ld: %.200s",
	    r.status, r.body.data);
	H_ASSERT_CONTAINS(
	    r.body.data, "both Content-Length and Transfer-Encoding");
	H_ASSERT(strncmp(r.body.data, PROXY_ERROR_PREFIX,
	             strlen(PROXY_ERROR_PREFIX)) == 0,
	    "the 502 is not the proxy's own: %s", r.body.data);
	H_ASSERT_INT_EQ(fake_stat(env.fake, "requests"), 1);
	H_ASSERT_INT_EQ(fake_stat(env.fake, "connections_used"), 1);
	http_resp_free(&r);

	/* The next request is served, on a new upstream connection. */
	http_get(harness_daemon_url(env.daemon, "/api/tags"), &r);
	H_ASSERT(r.ok && r.status == 200, "after the 502: %ld %s", r.status,
	    r.error);
	H_ASSERT_INT_EQ(fake_stat(env.fake, "connections_used"), 2);
	http_resp_free(&r);
}
END_TEST

/* ---- a 2 GiB chunked upload in bounded memory -------------------------- */

struct test_gen {
	char block[1 << 20];
	uint64_t total, off;
	struct harness_sha256 *sha;
};

/* Block i is a fixed random megabyte stamped with i, so no two blocks are
 * alike and a lost, doubled or reordered piece changes the digest. */
static size_t
test_gen_read(void *arg, char *buf, size_t max)
{
	struct test_gen *g = arg;
	uint64_t blk, in;
	size_t n;

	if (g->off >= g->total)
		return 0;
	blk = g->off / sizeof g->block;
	in = g->off % sizeof g->block;
	memcpy(g->block, &blk, sizeof blk);
	n = sizeof g->block - (size_t)in;
	if (n > max)
		n = max;
	if (n > g->total - g->off)
		n = (size_t)(g->total - g->off);
	memcpy(buf, g->block + in, n);
	g->off += n;
	return n;
}

START_TEST(test_upload_2gib_bounded_memory)
{
	static const char *const hdrs[] = {
	    "Content-Type: application/octet-stream", NULL};
	struct harness_env env;
	struct test_gen *g;
	struct http_req req;
	struct http_resp r;
	char hex[65], buf[1 << 16];
	long hwm, rss;
	size_t n;

	H_BEGIN();
	g = malloc(sizeof *g);
	H_CHECK(g != NULL);
	harness_fill(g->block, sizeof g->block, 2);
	g->total = (uint64_t)2 << 30;

	/* The digest goes in the URL, so hash the stream once first. */
	g->off = 0;
	g->sha = harness_sha256_new();
	while ((n = test_gen_read(g, buf, sizeof buf)) > 0)
		harness_sha256_update(g->sha, buf, n);
	harness_sha256_final(g->sha, hex);

	harness_up(&env, "");
	g->off = 0;
	memset(&req, 0, sizeof req);
	req.method = "POST";
	req.url = harness_daemon_url(
	    env.daemon, harness_strf("/api/blobs/sha256:%s", hex));
	req.headers = hdrs;
	req.read_fn = test_gen_read;
	req.read_arg = g;
	req.timeout_ms = 240000;
	http_request(&req, &r);
	H_ASSERT(r.ok && r.status == 201, "2 GiB upload: %ld %s %.300s",
	    r.status, r.error, r.body.data);
	H_ASSERT(g->off == g->total, "only %llu bytes were sent",
	    (unsigned long long)g->off);

	hwm = harness_proc_status_kb(env.daemon->proc.pid, "VmHWM");
	rss = harness_proc_status_kb(env.daemon->proc.pid, "VmRSS");
	H_ASSERT(hwm > 0, "cannot read VmHWM of the daemon");
	fprintf(stderr,
	    "2 GiB upload: daemon VmHWM %ld KiB, VmRSS %ld KiB, "
	    "%.1f s\n",
	    hwm, rss, r.t_end - r.t_start);
	/* AddressSanitizer's shadow memory and quarantine dwarf what the
	 * daemon itself holds, so an instrumented build cannot be measured;
	 * the plain build (what CI runs) is. */
	if (harness_proc_maps_contains(env.daemon->proc.pid, "libasan") == 1)
		fprintf(stderr,
		    "daemon built with AddressSanitizer: peak RSS "
		    "not checked\n");
	else
		H_ASSERT(hwm < 64 * 1024,
		    "daemon peak RSS %ld KiB during a "
		    "2 GiB upload; the body must stream in bounded memory",
		    hwm);
	http_resp_free(&r);
	free(g);
}
END_TEST

/* ---- the command line ------------------------------------------------- */

/* The line of text that starts with key (after blanks), or NULL. */
static const char *
test_find_line(const char *text, const char *key, char *line, size_t len)
{
	const char *p = text, *nl;
	size_t n;

	while (p != NULL && *p != '\0') {
		nl = strchr(p, '\n');
		n = nl != NULL ? (size_t)(nl - p) : strlen(p);
		while (n > 0 && (*p == ' ' || *p == '\t')) {
			p++;
			n--;
		}
		if (strncmp(p, key, strlen(key)) == 0) {
			snprintf(line, len, "%.*s", (int)n, p);
			return line;
		}
		p = nl != NULL ? nl + 1 : NULL;
	}
	return NULL;
}

START_TEST(test_cli_check_config)
{
	struct harness_run run;
	char *dir, *conf, line[512];
	const char *argv[8];

	H_BEGIN();
	dir = harness_tmpdir();
	conf = harness_write_file(dir, "good.conf",
	    "[server]\nlisten = 127.0.0.1:18555\n"
	    "[upstream]\nurl = http://127.0.0.1:18556\npool_maxsize = 7\n"
	    "queue_max = 33\n");
	argv[0] = harness_daemon_bin();
	argv[1] = "-c";
	argv[2] = conf;
	argv[3] = "-t";
	argv[4] = NULL;
	harness_run(argv, 10000, &run);
	H_ASSERT(!run.timed_out && WIFEXITED(run.wstatus) &&
	        WEXITSTATUS(run.wstatus) == 0,
	    "-t on a good file: status 0x%x; "
	    "stderr %s",
	    run.wstatus, run.err.data);
	H_ASSERT(test_find_line(
	             run.out.data, "pool_maxsize", line, sizeof line) != NULL &&
	        strstr(line, "7") != NULL,
	    "-t does not print pool_maxsize 7: %s", run.out.data);
	H_ASSERT(test_find_line(run.out.data, "queue_max", line, sizeof line) !=
	            NULL &&
	        strstr(line, "33") != NULL,
	    "-t does not print queue_max 33: %s", run.out.data);
	H_ASSERT_CONTAINS(run.out.data, "18556");
	H_ASSERT_CONTAINS(run.out.data, "127.0.0.1:18555");
	harness_run_free(&run);

	/* The command line overrides the file. */
	argv[4] = "-u";
	argv[5] = "http://127.0.0.1:18557";
	argv[6] = NULL;
	harness_run(argv, 10000, &run);
	H_ASSERT(!run.timed_out && WIFEXITED(run.wstatus) &&
	        WEXITSTATUS(run.wstatus) == 0,
	    "-t -u: status 0x%x; stderr %s", run.wstatus, run.err.data);
	H_ASSERT(
	    test_find_line(run.out.data, "url", line, sizeof line) != NULL &&
	        strstr(line, "18557") != NULL,
	    "-u does not override the file's url: %s", run.out.data);
	harness_run_free(&run);
}
END_TEST

START_TEST(test_cli_bad_config)
{
	struct harness_run run;
	char *dir, *conf, *where;
	const char *argv[5];

	H_BEGIN();
	dir = harness_tmpdir();
	conf = harness_write_file(dir, "bad.conf",
	    "[upstream]\nurl = http://127.0.0.1:18556\npool_maxsize = "
	    "banana\n");
	argv[0] = harness_daemon_bin();
	argv[1] = "-c";
	argv[2] = conf;
	argv[3] = "-t";
	argv[4] = NULL;
	harness_run(argv, 10000, &run);
	H_ASSERT(!run.timed_out && WIFEXITED(run.wstatus) &&
	        WEXITSTATUS(run.wstatus) != 0,
	    "-t on a bad file must fail: "
	    "status 0x%x; stdout %s",
	    run.wstatus, run.out.data);
	where = harness_strf("%s:3:", conf);
	H_ASSERT(strstr(run.err.data, where) != NULL ||
	        strstr(run.out.data, where) != NULL,
	    "the error must say %s; stderr: %s; stdout: %s", where,
	    run.err.data, run.out.data);
	harness_run_free(&run);
}
END_TEST

START_TEST(test_cli_version)
{
	struct harness_run run;
	const char *argv[3];

	H_BEGIN();
	argv[0] = harness_daemon_bin();
	argv[1] = "-V";
	argv[2] = NULL;
	harness_run(argv, 10000, &run);
	H_ASSERT(!run.timed_out && WIFEXITED(run.wstatus) &&
	        WEXITSTATUS(run.wstatus) == 0,
	    "-V: status 0x%x", run.wstatus);
	H_ASSERT_CONTAINS(run.out.data, "ollama-pool");
#ifdef PACKAGE_VERSION
	H_ASSERT_CONTAINS(run.out.data, PACKAGE_VERSION);
#endif
	harness_run_free(&run);

	argv[1] = "--version";
	harness_run(argv, 10000, &run);
	H_ASSERT(!run.timed_out && WIFEXITED(run.wstatus) &&
	        WEXITSTATUS(run.wstatus) == 0 &&
	        strstr(run.out.data, "ollama-pool") != NULL,
	    "--version: status 0x%x, %s", run.wstatus, run.out.data);
	harness_run_free(&run);
}
END_TEST

START_TEST(test_cli_upstream_is_listen)
{
	struct harness_run run;
	char *dir, *conf, *listen, *up;
	const char *argv[8];
	int port;

	H_BEGIN();
	dir = harness_tmpdir();
	conf = harness_write_file(dir, "empty.conf", "");
	port = harness_free_port();
	listen = harness_strf("127.0.0.1:%d", port);
	up = harness_strf("http://127.0.0.1:%d", port);
	argv[0] = harness_daemon_bin();
	argv[1] = "-c";
	argv[2] = conf;
	argv[3] = "-l";
	argv[4] = listen;
	argv[5] = "-u";
	argv[6] = up;
	argv[7] = NULL;
	/* A daemon that starts anyway runs until the timeout kills it. */
	harness_run(argv, 10000, &run);
	H_ASSERT(!run.timed_out,
	    "the daemon started with itself as its "
	    "upstream");
	H_ASSERT(WIFEXITED(run.wstatus) && WEXITSTATUS(run.wstatus) != 0,
	    "upstream == listen must fail: status 0x%x", run.wstatus);
	H_ASSERT(strlen(run.err.data) > 0, "refused without a message");
	H_ASSERT(strstr(run.err.data, harness_strf("%d", port)) != NULL,
	    "the message should name the address: %s", run.err.data);
	harness_run_free(&run);
}
END_TEST

/* ---- an https upstream: verification by default, ca_file, tls_verify --- */

/*
 * A TLS server of the test's own, in a child process on a socket bound
 * before the fork (so it is ready when the test goes on): it answers every
 * request with a fixed body, keeping connections alive, and counts the
 * connections it accepted in a file the test reads afterwards.
 */
struct tls_server {
	pid_t pid;
	int port;
	char *dir, *cert, *accepts;
};

static void
tls_server_child(
    int lfd, const char *cert, const char *key, const char *accepts)
{
	static const char answer[] = "HTTP/1.1 200 OK\r\n"
	                             "Content-Type: application/json\r\n"
	                             "Content-Length: 20\r\n\r\n"
	                             "{\"version\":\"tls-ok\"}";
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	char buf[4096];
	int fd, n, count = 0;
	FILE *fp;
	SSL *ssl;

	if (ctx == NULL ||
	    SSL_CTX_use_certificate_file(ctx, cert, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
		_exit(2);
	for (;;) {
		if ((fd = accept(lfd, NULL, NULL)) < 0)
			_exit(3);
		fp = fopen(accepts, "w");
		if (fp != NULL) {
			fprintf(fp, "%d\n", ++count);
			fclose(fp);
		}
		ssl = SSL_new(ctx);
		SSL_set_fd(ssl, fd);
		if (SSL_accept(ssl) == 1) {
			/* One answer per request head read. */
			while ((n = SSL_read(ssl, buf, sizeof buf)) > 0)
				if (memmem(buf, n, "\r\n\r\n", 4) != NULL &&
				    SSL_write(ssl, answer, sizeof answer - 1) <=
				        0)
					break;
		}
		SSL_free(ssl);
		close(fd);
	}
}

static void
tls_server_start(struct tls_server *ts)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof sin;
	struct harness_run run;
	char *key;
	int lfd, one = 1;

	ts->dir = harness_tmpdir();
	ts->cert = harness_strf("%s/cert.pem", ts->dir);
	key = harness_strf("%s/key.pem", ts->dir);
	ts->accepts = harness_strf("%s/accepts", ts->dir);
	{
		const char *argv[] = {"openssl", "req", "-x509", "-newkey",
		    "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
		    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
		    "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out",
		    ts->cert, NULL};

		harness_run(argv, 20000, &run);
		H_ASSERT(
		    WIFEXITED(run.wstatus) && WEXITSTATUS(run.wstatus) == 0,
		    "openssl req failed: %s", run.err.data);
		harness_run_free(&run);
	}
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	H_CHECK(lfd >= 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	H_CHECK(bind(lfd, (struct sockaddr *)&sin, sizeof sin) == 0);
	H_CHECK(listen(lfd, 16) == 0);
	H_CHECK(getsockname(lfd, (struct sockaddr *)&sin, &len) == 0);
	ts->port = ntohs(sin.sin_port);
	ts->pid = fork();
	H_CHECK(ts->pid >= 0);
	if (ts->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		tls_server_child(lfd, ts->cert, key, ts->accepts);
	}
	close(lfd);
}

static void
tls_server_stop(struct tls_server *ts)
{
	kill(ts->pid, SIGKILL);
	waitpid(ts->pid, NULL, 0);
}

static int
tls_server_accepts(const struct tls_server *ts)
{
	FILE *fp = fopen(ts->accepts, "r");
	int n = 0;

	if (fp != NULL) {
		if (fscanf(fp, "%d", &n) != 1)
			n = 0;
		fclose(fp);
	}
	return n;
}

START_TEST(test_tls_upstream)
{
	struct harness_daemon *d;
	struct tls_server ts;
	struct http_resp r;
	char *up;
	int i;

	H_BEGIN();
	tls_server_start(&ts);
	up = harness_strf("https://127.0.0.1:%d", ts.port);

	/* Verified by default: a self-signed upstream is refused, and the
	 * message says why. */
	d = harness_daemon_start("[retry]\nretries = 0\n", up, NULL);
	http_get(harness_daemon_url(d, "/api/version"), &r);
	test_assert_proxy_error(&r, 502, "self-signed upstream");
	H_ASSERT_CONTAINS(r.body.data, "certificate");
	http_resp_free(&r);
	harness_daemon_stop(d);

	/* ca_file trusts it; connections are kept and reused over TLS. */
	d = harness_daemon_start(
	    harness_strf("[upstream]\nca_file = %s\n", ts.cert), up, NULL);
	for (i = 0; i < 5; i++) {
		http_get(harness_daemon_url(d, "/api/version"), &r);
		H_ASSERT(r.ok && r.status == 200, "with ca_file: %ld %s %s",
		    r.status, r.error, r.body.data);
		H_ASSERT_STR_EQ(r.body.data, "{\"version\":\"tls-ok\"}");
		http_resp_free(&r);
	}
	/* The refused daemon's start-up check and request, then one
	 * connection kept, its start-up check's. */
	H_ASSERT_INT_EQ(tls_server_accepts(&ts), 3);
	harness_daemon_stop(d);

	/* tls_verify = no: accepted without the CA. */
	d = harness_daemon_start("[upstream]\ntls_verify = no\n", up, NULL);
	http_get(harness_daemon_url(d, "/api/version"), &r);
	H_ASSERT(r.ok && r.status == 200, "tls_verify = no: %ld %s", r.status,
	    r.body.data);
	http_resp_free(&r);
	harness_daemon_stop(d);
	tls_server_stop(&ts);
}
END_TEST

/* ---- the suite -------------------------------------------------------- */

static Suite *
proxy_suite(void)
{
	Suite *s;
	TCase *tc;

	s = suite_create("proxy");

	tc = harness_tcase(s, "api", 60);
	tcase_add_loop_test(tc, test_byte_for_byte, 0, N_BFB);
	tcase_add_loop_test(tc, test_blob_known_early_answer, 0, 2);

	tc = harness_tcase(s, "forwarding", 60);
	tcase_add_test(tc, test_forward_methods);
	tcase_add_test(tc, test_forward_target_bytes);
	tcase_add_test(tc, test_forward_headers);
	tcase_add_test(tc, test_forward_bodies);

	tc = harness_tcase(s, "client", 60);
	tcase_add_test(tc, test_pipelining);
	tcase_add_test(tc, test_http10);
	tcase_add_test(tc, test_malformed_request);

	tc = harness_tcase(s, "streaming", 60);
	tcase_add_test(tc, test_streaming_not_batched);
	tcase_add_test(tc, test_streaming_sse_not_batched);

	tc = harness_tcase(s, "pool", 120);
	tcase_add_test(tc, test_pool_sequential);
	tcase_add_test(tc, test_pool_concurrent_maxsize);
	tcase_add_test(tc, test_pool_no_churn);
	tcase_add_test(tc, test_queue_full);

	tc = harness_tcase(s, "errors", 60);
	tcase_add_test(tc, test_upstream_unreachable);
	tcase_add_test(tc, test_health);
	tcase_add_test(tc, test_health_probes_shared);
	tcase_add_test(tc, test_upstream_two_framings);

	tc = harness_tcase(s, "cli", 30);
	tcase_add_test(tc, test_cli_check_config);
	tcase_add_test(tc, test_cli_bad_config);
	tcase_add_test(tc, test_cli_version);
	tcase_add_test(tc, test_cli_upstream_is_listen);

	tc = harness_tcase(s, "tls", 60);
	tcase_add_test(tc, test_tls_upstream);

	tc = harness_tcase(s, "big", 300);
	tcase_add_test(tc, test_upload_2gib_bounded_memory);

	return s;
}

int
main(void)
{
	return harness_main(proxy_suite());
}
