/*
 * Integration tests for ollama-pool's resilience (issue 3): retry with
 * backoff, cancellation, backpressure, timeouts, truncation when the
 * upstream dies, and the two error shapes.  The built daemon runs in front
 * of the fake Ollama, both real processes on loopback ports; the fake is
 * told to misbehave through its fault orders (POST /_fake/fault) and says
 * what it saw through GET /_fake/stats.
 *
 * Every test starts and stops its own processes (harness_setup and
 * harness_teardown are the checked fixtures).  Tests wait for events: a
 * response, a byte, a closed socket.  Where no event exists (the fake
 * noticing that its client left, the daemon's memory settling) they poll
 * with a bounded deadline; where the point is that nothing happens for a
 * while (no retry after a cancelled backoff) they watch for that while.
 * Timing bounds are generous: exact numbers belong in the benchmark.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sys/types.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <linux/sockios.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "harness.h"

#define MODEL "llama3.2"
#define PROXY_PREFIX "ollama-pool: "
/* What the fake (like Ollama) answers when its queue is full. */
#define BUSY_BODY                                                              \
	"{\"error\":\"server busy, please try again.  "                        \
	"maximum pending requests exceeded\"}"
#define GEN(extra) "{\"model\":\"" MODEL "\",\"prompt\":\"p\"" extra "}"
/* A generate request answered in one piece. */
#define GEN_WHOLE GEN(",\"stream\":false")
/* A stream of n tokens, one line each, ms apart. */
#define GEN_PACED(n, ms)                                                       \
	GEN(",\"options\":{\"num_predict\":" #n "},\"fake_interval_ms\":" #ms)
#define STAT_POLL_MS 10

/* ---- helpers local to these tests -------------------------------------- */

/* Logs are named after the test, not its TCase, so that one test's logs
 * do not overwrite another's. */
static void
test_begin(const char *fn)
{
	size_t len = strlen(fn);

	if (len > 3 && strcmp(fn + len - 3, "_fn") == 0)
		len -= 3;
	harness_begin(harness_strf("%.*s", (int)len, fn));
}
#define T_BEGIN() test_begin(__func__)

/* Waits without waiting for anything: only for pacing a poll loop or a
 * trickle, never as synchronisation. */
static void
test_pause_ms(int ms)
{
	poll(NULL, 0, ms);
}

/* A counter of the fake's, or one inside an object of its stats
 * (client_gone_phase.streaming). */
static long long
test_stat(const struct harness_fake *f, const char *key, const char *sub)
{
	cJSON *j, *v;
	long long n;

	j = fake_stats(f);
	v = cJSON_GetObjectItemCaseSensitive(j, key);
	if (sub != NULL)
		v = cJSON_GetObjectItemCaseSensitive(v, sub);
	H_ASSERT(cJSON_IsNumber(v), "/_fake/stats has no number %s%s%s", key,
	    sub ? "." : "", sub ? sub : "");
	n = (long long)v->valuedouble;
	cJSON_Delete(j);
	return n;
}

/*
 * Polls the fake's stats every STAT_POLL_MS until the counter reaches
 * want; returns when it was seen.  Used only where nothing else tells us:
 * the fake noticing its client (the proxy) went away is not visible to
 * the test any other way.
 */
static double
test_wait_stat(const struct harness_fake *f, const char *key, const char *sub,
    long long want, int timeout_ms, const char *what)
{
	double deadline;
	long long v;

	deadline = harness_now() + timeout_ms / 1000.0;
	for (;;) {
		v = test_stat(f, key, sub);
		if (v >= want)
			return harness_now();
		H_ASSERT(harness_now() < deadline,
		    "%s: the fake's %s%s%s is "
		    "%lld after %d ms, want %lld",
		    what, key, sub ? "." : "", sub ? sub : "", v, timeout_ms,
		    want);
		test_pause_ms(STAT_POLL_MS);
	}
}

/* The fake has answered the only request it saw: its response is fully
 * written to the proxy's connection. */
static void
test_wait_answered(const struct harness_fake *f, const char *what)
{
	double deadline;

	deadline = harness_now() + 10.0;
	for (;;) {
		if (test_stat(f, "requests", NULL) >= 1 &&
		    test_stat(f, "requests_active", NULL) == 0)
			return;
		H_ASSERT(harness_now() < deadline,
		    "%s: the fake did not "
		    "answer within 10 s",
		    what);
		test_pause_ms(STAT_POLL_MS);
	}
}

/* The daemon still answers after whatever went before. */
static void
test_assert_healthy(const struct harness_daemon *d, const char *after)
{
	struct http_resp r;

	http_get(harness_daemon_url(d, "/api/version"), &r);
	H_ASSERT(r.ok && r.status == 200 && r.body.data != NULL &&
	        strstr(r.body.data, "\"version\"") != NULL,
	    "after %s the daemon does not answer: %ld %s %.200s", after,
	    r.status, r.error, r.body.data ? r.body.data : "");
	http_resp_free(&r);
}

/* Either shape of the proxy's own errors: the status, a JSON body;
 * returns it parsed. */
static cJSON *
test_error_json(const struct http_resp *r, long status, const char *what)
{
	const char *ct;

	H_ASSERT(r->ok, "%s: %s", what, r->error);
	H_ASSERT(r->status == status, "%s: status %ld, want %ld; body %.300s",
	    what, r->status, status, r->body.data);
	ct = http_header_get(r, "Content-Type");
	H_ASSERT(ct != NULL && strncasecmp(ct, "application/json", 16) == 0,
	    "%s: Content-Type %s, want application/json", what,
	    ct ? ct : "none");
	return harness_json(r, what);
}

/* The message of such an error (field names it): it says it is the
 * proxy's, and names the upstream when one is given. */
static void
test_error_message(const struct http_resp *r, const char *msg,
    const char *field, const char *upstream, const char *what)
{
	H_ASSERT(msg != NULL &&
	        strncmp(msg, PROXY_PREFIX, strlen(PROXY_PREFIX)) == 0 &&
	        strlen(msg) > strlen(PROXY_PREFIX),
	    "%s: %s must be a string starting \"%s\": %s", what, field,
	    PROXY_PREFIX, r->body.data);
	if (upstream != NULL)
		H_ASSERT(strstr(msg, upstream) != NULL,
		    "%s: the message does "
		    "not name the upstream %s: %s",
		    what, upstream, msg);
}

/* An error of the proxy's own on a native path: {"error":"ollama-pool:
 * ..."} and nothing else, naming the upstream when one is given. */
static void
test_assert_native_error(const struct http_resp *r, long status,
    const char *upstream, const char *what)
{
	cJSON *j;

	j = test_error_json(r, status, what);
	H_ASSERT(cJSON_IsObject(j) && cJSON_GetArraySize(j) == 1,
	    "%s: want an object with only \"error\": %s", what, r->body.data);
	test_error_message(
	    r, harness_jstr(j, "error"), "\"error\"", upstream, what);
	cJSON_Delete(j);
}

/* The OpenAI shape on /v1/ paths: {"error":{"message":"ollama-pool: ...",
 * "type":T,"param":null,"code":null}}. */
static void
test_assert_openai_error(const struct http_resp *r, long status,
    const char *type, const char *upstream, const char *what)
{
	const cJSON *e;
	cJSON *j;

	j = test_error_json(r, status, what);
	e = cJSON_GetObjectItemCaseSensitive(j, "error");
	H_ASSERT(cJSON_IsObject(j) && cJSON_GetArraySize(j) == 1 &&
	        cJSON_IsObject(e) && cJSON_GetArraySize(e) == 4,
	    "%s: want {\"error\":{message,type,param,code}}: %s", what,
	    r->body.data);
	test_error_message(
	    r, harness_jstr(e, "message"), "error.message", upstream, what);
	H_ASSERT(harness_jstr(e, "type") != NULL &&
	        strcmp(harness_jstr(e, "type"), type) == 0,
	    "%s: error.type must be \"%s\": %s", what, type, r->body.data);
	H_ASSERT(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(e, "param")) &&
	        cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(e, "code")),
	    "%s: error.param and error.code must be null: %s", what,
	    r->body.data);
	cJSON_Delete(j);
}

static char *
test_raw_post(const char *path, const char *json, const char *extra)
{
	return harness_strf(
	    "POST %s HTTP/1.1\r\nHost: client.invalid\r\n"
	    "Content-Type: application/json\r\n%sContent-Length: %zu\r\n\r\n"
	    "%s",
	    path, extra, strlen(json), json);
}

/* Opens a connection to the daemon and sends a whole request on it. */
static void
test_raw_send(struct http_conn *c, int port, const char *request)
{
	http_conn_open(c, port);
	H_ASSERT(http_conn_sendstr(c, request, 10000) == 0,
	    "sending the request failed: %s", strerror(errno));
}

/* Closes with a reset (SO_LINGER 0) rather than a FIN. */
static void
test_conn_reset(struct http_conn *c)
{
	struct linger lg = {1, 0};

	setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	http_conn_close(c);
}

static size_t
test_count(const char *hay, size_t len, const char *needle)
{
	size_t n = 0, nlen = strlen(needle);
	const char *p = hay, *end = hay + len;

	while (p != NULL && p < end) {
		p = memmem(p, (size_t)(end - p), needle, nlen);
		if (p != NULL) {
			n++;
			p += nlen;
		}
	}
	return n;
}

/* Reads, without consuming, until the bytes received hold `count` copies
 * of needle (in a head or a body).  Fails the test on EOF or timeout. */
static void
test_conn_wait_for(struct http_conn *c, const char *needle, size_t count,
    int timeout_ms, const char *what)
{
	double deadline;

	deadline = harness_now() + timeout_ms / 1000.0;
	while (test_count(c->in.data, c->in.len, needle) < count) {
		H_ASSERT(!c->eof && http_conn_fill(c, deadline) > 0,
		    "%s: %s before %zu \"%s\" arrived; got %zu bytes: %.300s",
		    what, c->eof ? "connection closed" : "timed out", count,
		    needle, c->in.len, c->in.data ? c->in.data : "");
	}
}

/* Copies what fits, always terminated. */
static void
test_copy(char *dst, size_t len, const char *src)
{
	size_t n;

	n = strlen(src);
	if (n >= len)
		n = len - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* Lines of the daemon's log (the harness's own header left out) that
 * hold both a and b. */
static int
test_log_lines(const struct harness_daemon *d, const char *a, const char *b,
    char *first, size_t firstlen, char *second, size_t secondlen)
{
	char line[4096];
	FILE *f;
	int n = 0, in_conf = 0;

	f = fopen(d->proc.log_path, "re");
	H_ASSERT(f != NULL, "cannot read %s", d->proc.log_path);
	while (fgets(line, sizeof line, f) != NULL) {
		if (strncmp(line, "harness: conf", 13) == 0)
			in_conf = 1;
		if (strncmp(line, "harness:", 8) == 0) {
			if (strncmp(line, "harness: ----", 13) == 0)
				in_conf = 0;
			continue;
		}
		if (in_conf || strstr(line, a) == NULL ||
		    strstr(line, b) == NULL)
			continue;
		if (n == 0 && first != NULL)
			test_copy(first, firstlen, line);
		if (n == 1 && second != NULL)
			test_copy(second, secondlen, line);
		n++;
	}
	fclose(f);
	return n;
}

/* ---- one fault, one request: cases in tables ---------------------------- */

/* A status fault for the fake, with more of its fields. */
#define STATUS_FAULT(code, more)                                               \
	"{\"action\":\"status\",\"status\":" #code more "}"
/* A count of the fake's left unchecked. */
#define ANY_COUNT (-1)
#define N_CASES(a) (sizeof(a) / sizeof((a)[0]))

/* The request of a case: GET path, or POST path with a JSON body or an
 * upload. */
struct fault_req {
	const char *method; /* NULL: GET, or POST with a body */
	const char *path;
	const char *json; /* a JSON body */
	struct {
		size_t len; /* or an octet-stream body of this many */
		uint32_t seed; /* harness_fill() bytes, */
		int chunked; /* sent chunked (else with Content-Length) */
		size_t piece; /* in chunks of at most this many */
	} upload;
	long timeout_ms; /* 0: the harness's default */
};

enum fault_shape {
	SHAPE_UPSTREAM, /* the upstream's answer, whatever it is */
	SHAPE_NATIVE, /* an error of the proxy's own, native shape */
	SHAPE_OPENAI, /* the same in OpenAI's shape */
};

enum fault_cut {
	CUT_NONE, /* read with libcurl; the exchange completes */
	CUT_CHUNKED, /* on a raw socket: a chunked stream closed early */
	CUT_SHORT, /* on a raw socket: closed short of its Content-Length */
};

/* What must come of it.  Fields left zero are not checked, but for
 * requests: the fake's count after the case, always checked when there is
 * a fake, unless it is ANY_COUNT. */
struct fault_want {
	long status;
	long long requests;
	enum fault_shape shape;
	const char *error_type; /* SHAPE_OPENAI's error.type */
	int names_upstream; /* the proxy's error names the upstream */
	enum fault_cut cut;
	const char *body; /* the whole body */
	const char *contains, *lacks;
	size_t lines;
	int echo; /* the fake's echo of the upload: all of it, as sent */
	int same_as_direct; /* what the fake itself answers the request */
	struct {
		double min, max; /* seconds the exchange takes (max 0: any) */
	} secs;
	const char *gone_phase; /* the fake sees the proxy leave in it */
	int healthy; /* the daemon answers after the case */
};

/* One exchange through the daemon: the fake's counters reset, a fault
 * queued, one request, and what must come of it. */
struct fault_case {
	const char *name; /* names the case in every failure */
	const char *conf; /* starts a daemon with it; NULL: the last one */
	const char *fault; /* a fault order for the fake */
	int keep_counts; /* no fake_reset: counts go on from the last case */
	struct fault_req req;
	struct fault_want want;
};

/* The daemon in front of a fake, or of an upstream that is not one. */
struct fault_env {
	struct harness_fake *fake; /* NULL when the upstream is not a fake */
	struct harness_daemon *daemon;
	const char *upstream; /* the daemon's -u */
};

static void
fault_env_init(struct fault_env *e, const char *upstream)
{
	memset(e, 0, sizeof *e);
	if (upstream == NULL) {
		e->fake = fake_start("fake", NULL, NULL);
		upstream = harness_upstream_of(e->fake);
	}
	e->upstream = upstream;
}

/* The request to url, through libcurl. */
static void
fault_request(const struct fault_req *q, const char *url, const char *upload,
    struct http_resp *r)
{
	static const char *const json_hdrs[] = {
	    "Content-Type: application/json", "Expect:", NULL};
	static const char *const octet_hdrs[] = {
	    "Content-Type: application/octet-stream", "Expect:", NULL};
	struct harness_membody mb;
	struct http_req req;

	memset(&req, 0, sizeof req);
	req.method = q->method;
	req.url = url;
	req.timeout_ms = q->timeout_ms;
	if (q->json != NULL) {
		req.headers = json_hdrs;
		req.body = q->json;
		req.body_len = strlen(q->json);
		req.has_body = 1;
	} else if (upload != NULL) {
		req.headers = octet_hdrs;
		if (q->upload.chunked) {
			memset(&mb, 0, sizeof mb);
			mb.data = upload;
			mb.len = q->upload.len;
			mb.piece = q->upload.piece;
			req.read_fn = harness_membody_read;
			req.read_arg = &mb;
		} else {
			req.body = upload;
			req.body_len = q->upload.len;
			req.has_body = 1;
		}
	}
	if (req.method == NULL && (req.has_body || req.read_fn != NULL))
		req.method = "POST";
	http_request(&req, r);
}

/* The JSON POST on a raw socket, whose response must be cut short: the
 * head and part of the body, then the connection closed. */
static void
fault_request_cut(const struct fault_env *e, const struct fault_case *c,
    struct http_conn *conn, struct http_resp *r)
{
	const char *cl;

	test_raw_send(
	    conn, e->daemon->port, test_raw_post(c->req.path, c->req.json, ""));
	H_ASSERT(http_conn_read_response(conn, 0, 10000, r) != 0,
	    "%s: the response arrived complete (%ld, %zu bytes); it must be "
	    "cut short",
	    c->name, r->status, r->body.len);
	H_ASSERT(conn->eof, "%s: the client connection was not closed: %s",
	    c->name, r->error);
	H_ASSERT(r->status == c->want.status,
	    "%s: status %ld before the cut, want %ld: %s", c->name, r->status,
	    c->want.status, r->head.data);
	if (c->want.cut == CUT_CHUNKED) {
		H_ASSERT(r->chunked, "%s: want a chunked stream cut short: %s",
		    c->name, r->head.data);
		return;
	}
	cl = http_header_get(r, "Content-Length");
	H_ASSERT(cl != NULL, "%s: want the upstream's Content-Length: %s",
	    c->name, r->head.data);
	H_ASSERT(r->body.len > 0 && r->body.len < strtoull(cl, NULL, 10),
	    "%s: got %zu of %s bytes; want the part the upstream sent", c->name,
	    r->body.len, cl);
}

/* The answer's shape and body as the case wants them. */
static void
fault_check_body(const struct fault_env *e, const struct fault_case *c,
    const struct http_resp *r)
{
	const struct fault_want *w = &c->want;
	const char *body = r->body.data != NULL ? r->body.data : "";
	const char *up = w->names_upstream ? e->upstream : NULL;

	if (w->shape == SHAPE_NATIVE)
		test_assert_native_error(r, w->status, up, c->name);
	if (w->shape == SHAPE_OPENAI)
		test_assert_openai_error(
		    r, w->status, w->error_type, up, c->name);
	if (w->body != NULL)
		H_ASSERT(strcmp(body, w->body) == 0,
		    "%s: body \"%.300s\", want \"%s\"", c->name, body, w->body);
	if (w->contains != NULL)
		H_ASSERT(strstr(body, w->contains) != NULL,
		    "%s: the body lacks \"%s\": %.300s", c->name, w->contains,
		    body);
	if (w->lacks != NULL)
		H_ASSERT(strstr(body, w->lacks) == NULL,
		    "%s: the body has \"%s\": %.300s", c->name, w->lacks, body);
	if (w->lines > 0)
		H_ASSERT(http_count_lines(&r->body) == w->lines,
		    "%s: %zu lines, want %zu: %.300s", c->name,
		    http_count_lines(&r->body), w->lines, body);
}

/* The echo of the upload has its length, digest and framing. */
static void
fault_check_echo(
    const struct fault_case *c, const struct http_resp *r, const char *hex)
{
	cJSON *j;

	j = harness_json(r, c->name);
	H_ASSERT((size_t)harness_jnum(j, "body_bytes") == c->req.upload.len,
	    "%s: %.0f bytes of %zu arrived", c->name,
	    harness_jnum(j, "body_bytes"), c->req.upload.len);
	H_ASSERT(harness_jstr(j, "body_sha256") != NULL &&
	        strcmp(harness_jstr(j, "body_sha256"), hex) == 0,
	    "%s: other bytes arrived than were sent", c->name);
	H_ASSERT(cJSON_IsTrue(cJSON_GetObjectItem(j, "chunked")) ==
	        c->req.upload.chunked,
	    "%s: the body's framing changed on the way", c->name);
	cJSON_Delete(j);
}

/* Asks the fake itself the same: the client must have got that. */
static void
fault_check_direct(const struct fault_env *e, const struct fault_case *c,
    const char *upload, const struct http_resp *r)
{
	struct http_resp d;

	fault_request(&c->req, fake_url(e->fake, c->req.path), upload, &d);
	H_ASSERT(d.ok && d.status == c->want.status,
	    "%s: the fake itself answered %ld %s", c->name, d.status, d.error);
	harness_assert_same_response(&d, r, c->name);
	http_resp_free(&d);
}

static void
fault_run_case(struct fault_env *e, const struct fault_case *c)
{
	const struct fault_want *w = &c->want;
	struct http_conn conn;
	struct http_resp r;
	char hex[65] = "", *upload = NULL;
	long long n;
	double el;

	memset(&conn, 0, sizeof conn);
	if (c->conf != NULL)
		e->daemon = harness_daemon_start(c->conf, e->upstream, NULL);
	H_ASSERT(e->daemon != NULL, "%s: no daemon; give the first case a conf",
	    c->name);
	if (e->fake != NULL && !c->keep_counts)
		fake_reset(e->fake);
	if (c->fault != NULL)
		fake_fault(e->fake, c->fault);
	if (c->req.upload.len > 0) {
		upload = malloc(c->req.upload.len);
		H_CHECK(upload != NULL);
		harness_fill(upload, c->req.upload.len, c->req.upload.seed);
		harness_sha256_hex(upload, c->req.upload.len, hex);
	}

	if (w->cut != CUT_NONE) {
		fault_request_cut(e, c, &conn, &r);
	} else {
		fault_request(&c->req,
		    harness_daemon_url(e->daemon, c->req.path), upload, &r);
		H_ASSERT(r.ok && r.status == w->status,
		    "%s: the client got %ld %s %.300s, want %ld", c->name,
		    r.status, r.error, r.body.data, w->status);
	}
	el = r.t_end - r.t_start;
	fault_check_body(e, c, &r);
	if (w->echo)
		fault_check_echo(c, &r, hex);
	H_ASSERT(el >= w->secs.min && (w->secs.max == 0 || el < w->secs.max),
	    "%s: the exchange took %.3f s, want %.2f s to %.2f s", c->name, el,
	    w->secs.min, w->secs.max);
	if (w->gone_phase != NULL)
		test_wait_stat(e->fake, "client_gone_phase", w->gone_phase, 1,
		    2000, c->name);
	if (e->fake != NULL && w->requests != ANY_COUNT) {
		n = test_stat(e->fake, "requests", NULL);
		H_ASSERT(n == w->requests,
		    "%s: the fake saw %lld requests, want %lld", c->name, n,
		    w->requests);
	}
	/* After the count: this asks the fake once more. */
	if (w->same_as_direct)
		fault_check_direct(e, c, upload, &r);
	if (w->cut != CUT_NONE)
		http_conn_close(&conn);
	if (w->healthy)
		test_assert_healthy(e->daemon, c->name);
	http_resp_free(&r);
	free(upload);
}

/* Runs the cases in order against one fake (or upstream), each on the
 * daemon the last conf started. */
static void
fault_run(struct fault_env *e, const struct fault_case *cases, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		fault_run_case(e, &cases[i]);
}

/* The usual test: a table against a fresh fake, or against upstream. */
static void
fault_run_table(const char *upstream, const struct fault_case *cases, size_t n)
{
	struct fault_env e;

	fault_env_init(&e, upstream);
	fault_run(&e, cases, n);
}
#define FAULT_TABLE(upstream, cases)                                           \
	fault_run_table(upstream, cases, N_CASES(cases))

/* A test that is one table. */
#define FAULT_TEST(test, upstream, cases)                                      \
	START_TEST(test)                                                       \
	{                                                                      \
		T_BEGIN();                                                     \
		FAULT_TABLE(upstream, cases);                                  \
	}                                                                      \
	END_TEST

/* An upstream URL nothing listens on. */
static const char *
test_unused_upstream(void)
{
	return harness_strf("http://127.0.0.1:%d", harness_free_port());
}

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
	        .req = {.path = "/api/generate", .json = GEN_WHOLE},
	        .want = {.status = 200,
	            .requests = 3,
	            .contains = "\"done\":true",
	            .secs = {0.88, 5.0}}},
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
	    test_raw_post("/api/generate", GEN_WHOLE, ""));
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
static const struct fault_case retry_all_attempts_fail[] = {
    {.name = "every attempt answered 503",
        .conf = "[retry]\nretries = 2\nbackoff_factor = 0.01\n",
        .fault = STATUS_FAULT(503, ",\"count\":10"),
        .req = {.path = "/api/generate", .json = GEN_WHOLE},
        .want = {.status = 503,
            .requests = 3,
            .body = BUSY_BODY,
            .same_as_direct = 1}},
};
FAULT_TEST(test_retry_all_attempts_fail, NULL, retry_all_attempts_fail)

/*
 * Retry-After asks for longer than the backoff (0.01 s here): seconds and
 * an HTTP date are honoured, and backoff_max caps both.  Ignoring it, the
 * retry comes after 10 ms; not capping it, after 30 s.
 */
static const struct fault_case retry_after_seconds = {
    .name = "Retry-After: 1, want a retry after about 1 s",
    .conf = "[retry]\nbackoff_factor = 0.01\n",
    .fault = STATUS_FAULT(503, ",\"retry_after\":\"1\""),
    .req = {.path = "/api/tags"},
    .want = {.status = 200, .requests = 2, .secs = {0.95, 5.0}}};
static const struct fault_case retry_after_capped = {
    .name = "Retry-After: 30 with backoff_max 0.5, want a retry after about "
            "0.5 s",
    .conf = "[retry]\nbackoff_factor = 0.01\nbackoff_max = 0.5\n",
    .fault = STATUS_FAULT(503, ",\"retry_after\":\"30\""),
    .req = {.path = "/api/tags"},
    .want = {.status = 200, .requests = 2, .secs = {0.45, 5.0}}};

START_TEST(test_retry_after)
{
	struct fault_case date_case = {.req = {.path = "/api/tags"},
	    .want = {.status = 200, .requests = 2, .secs = {1.5, 6.0}}};
	struct fault_env env;
	char date[64];
	struct tm tm;
	time_t t;

	T_BEGIN();
	fault_env_init(&env, NULL);
	fault_run(&env, &retry_after_seconds, 1);

	/* A date 3 s ahead, in whole seconds: 2 to 3 s from now.  Its
	 * case runs on the same daemon at once. */
	t = time(NULL) + 3;
	gmtime_r(&t, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	date_case.name = harness_strf("Retry-After: %s (2 to 3 s ahead)", date);
	date_case.fault =
	    harness_strf(STATUS_FAULT(503, ",\"retry_after\":\"%s\""), date);
	fault_run(&env, &date_case, 1);

	fault_run(&env, &retry_after_capped, 1);
}
END_TEST

/*
 * retries = 0 turns retrying off; retry_methods = GET leaves a POST alone
 * but still retries a GET (the last case counts on from the one before).
 */
static const struct fault_case retry_off_and_methods[] = {
    {.name = "retries = 0",
        .conf = "[retry]\nretries = 0\nbackoff_factor = 0.01\n",
        .fault = STATUS_FAULT(503, ""),
        .req = {.path = "/api/generate", .json = GEN_WHOLE},
        .want = {.status = 503, .requests = 1, .body = BUSY_BODY}},
    {.name = "retry_methods = GET, a POST (must not be retried)",
        .conf = "[retry]\nretry_methods = GET\nbackoff_factor = 0.01\n",
        .fault = STATUS_FAULT(503, ""),
        .req = {.path = "/api/generate", .json = GEN_WHOLE},
        .want = {.status = 503, .requests = 1}},
    {.name = "retry_methods = GET, a GET (must be retried)",
        .fault = STATUS_FAULT(503, ""),
        .keep_counts = 1,
        .req = {.path = "/api/tags"},
        .want = {.status = 200, .requests = 3}},
};
FAULT_TEST(test_retry_off_and_methods, NULL, retry_off_and_methods)

/*
 * Which statuses are retried: by default 500, 502, 503 and 504, and no
 * others (a 429 or a 404 is Ollama's considered answer); retry_statuses
 * narrows that.
 */
/* clang-format off */
#define RETRIED(code, daemon_conf)                                             \
	{.name = "a " #code " (must be retried)",                              \
	    .conf = daemon_conf,                                               \
	    .fault = STATUS_FAULT(code, ""),                                   \
	    .req = {.path = "/api/tags"},                                      \
	    .want = {.status = 200, .requests = 2}}
/* clang-format on */
static const struct fault_case retry_statuses[] = {
    RETRIED(500, "[retry]\nbackoff_factor = 0.01\n"),
    RETRIED(502, NULL),
    RETRIED(503, NULL),
    RETRIED(504, NULL),
    {.name = "a 429 (must reach the client as it is)",
        .fault = STATUS_FAULT(
            429, ",\"body\":\"{\\\"error\\\":\\\"slow down\\\"}\""),
        .req = {.path = "/api/tags"},
        .want = {.status = 429,
            .requests = 1,
            .body = "{\"error\":\"slow down\"}"}},
    {.name = "retry_statuses = 500, a 503 (must not be retried)",
        .conf = "[retry]\nbackoff_factor = 0.01\n"
                "retry_statuses = 500\n",
        .fault = STATUS_FAULT(503, ""),
        .req = {.path = "/api/tags"},
        .want = {.status = 503, .requests = 1}},
    {.name = "retry_statuses = 500, a 500 (must be retried)",
        .fault = STATUS_FAULT(500, ""),
        .keep_counts = 1,
        .req = {.path = "/api/tags"},
        .want = {.status = 200, .requests = 3}},
};
#undef RETRIED
FAULT_TEST(test_retry_statuses, NULL, retry_statuses)

/*
 * backoff_max caps the doubling too: with a factor of 2 the two waits
 * would be 2 and 4 s; capped at 0.2 s they take 0.4 s.
 */
static const struct fault_case retry_backoff_max[] = {
    {.name = "two 503s then 200, retries capped at 0.2 s",
        .conf = "[retry]\nretries = 2\nbackoff_factor = 2\n"
                "backoff_max = 0.2\n",
        .fault = STATUS_FAULT(503, ",\"count\":2"),
        .req = {.path = "/api/tags"},
        .want = {.status = 200, .requests = 3, .secs = {0.38, 2.5}}},
};
FAULT_TEST(test_retry_backoff_max, NULL, retry_backoff_max)

/*
 * Nothing listens upstream: every attempt is refused, so after two
 * retries (0.1 + 0.2 s) the client gets a 502 that names the upstream.
 * Without retrying a refused connection the 502 comes at once.
 */
static const struct fault_case retry_connection_refused[] = {
    {.name = "connection refused, two retries of 0.1 + 0.2 s",
        .conf = "[retry]\nretries = 2\nbackoff_factor = 0.1\n",
        .req = {.path = "/api/tags"},
        .want = {.status = 502,
            .shape = SHAPE_NATIVE,
            .names_upstream = 1,
            .secs = {0.28, 5.0}}},
};
FAULT_TEST(test_retry_connection_refused, test_unused_upstream(),
    retry_connection_refused)

/*
 * The upstream closes, or resets, the connection without answering: that
 * is retried and the client gets the second attempt's 200.  Each case is
 * the first request of a fresh daemon that keeps no idle connection (not
 * even the start-up check's), so its connection is new and libcurl's own
 * retry of a dead reused connection cannot be what saves it; and with
 * retries = 0 the same close is a 502.
 */
#define RETRY_FRESH_CONNS "[upstream]\npool_connections = 0\n"
static const struct fault_case retry_upstream_closed[] = {
    {.name = "upstream close before answering a GET",
        .conf = RETRY_FRESH_CONNS "[retry]\nbackoff_factor = 0.01\n",
        .fault = "{\"action\":\"close\"}",
        .req = {.path = "/api/tags"},
        .want = {.status = 200, .requests = 2}},
    {.name = "upstream reset before answering a POST",
        .conf = RETRY_FRESH_CONNS "[retry]\nbackoff_factor = 0.01\n",
        .fault = "{\"action\":\"reset\"}",
        .req = {.path = "/api/generate", .json = GEN_WHOLE},
        .want = {.status = 200, .requests = 2}},
    {.name = "upstream close with retries = 0",
        .conf = RETRY_FRESH_CONNS "[retry]\nretries = 0\n",
        .fault = "{\"action\":\"close\"}",
        .req = {.path = "/api/tags"},
        .want = {.status = 502,
            .requests = 1,
            .shape = SHAPE_NATIVE,
            .names_upstream = 1}},
};
FAULT_TEST(test_retry_upstream_closed, NULL, retry_upstream_closed)

/*
 * A pooled connection the upstream closes as the next request arrives:
 * libcurl sends that request again on a new connection by itself (with
 * retries = 0 nothing of ours does), but at most 5 times between resets
 * of its handle.  Handles are reused without a full reset after a clean
 * transfer, so that count must still start afresh for each request: the
 * eighth in a row on one handle goes through like the first.
 */
START_TEST(test_retry_dead_reused_connections)
{
	struct harness_env env;
	struct http_resp r;
	int i;

	T_BEGIN();
	harness_up(&env, "[retry]\nretries = 0\n");
	fake_reset(env.fake); /* the start-up check's GET */
	for (i = 0; i < 8; i++) {
		fake_fault(env.fake, "{\"action\":\"close\"}");
		http_get(harness_daemon_url(env.daemon, "/api/tags"), &r);
		H_ASSERT(r.ok && r.status == 200,
		    "request %d, its pooled connection closed: %ld %.200s",
		    i + 1, r.status, r.body.data);
		http_resp_free(&r);
	}
	/* Each was sent twice: on the dead connection, then a new one. */
	H_ASSERT_INT_EQ(fake_stat(env.fake, "requests"), 16);
}
END_TEST

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

/*
 * A 1 MiB body is sent again, whole, after a 503: the echo of the second
 * attempt has its length, digest and framing.  Both framings: a
 * Content-Length body and a chunked one (kept while under
 * retry_body_max).
 */
static const struct fault_case retry_body_replayed[] = {
    {.name = "Content-Length body after a 503",
        .conf = "[retry]\nbackoff_factor = 0.01\n",
        .fault = STATUS_FAULT(503, ",\"path\":\"/_fake/echo\""),
        .req = {.path = "/_fake/echo/replay", .upload = {1u << 20, 5, 0, 0}},
        .want = {.status = 200, .requests = 2, .echo = 1}},
    {.name = "chunked body after a 503",
        .fault = STATUS_FAULT(503, ",\"path\":\"/_fake/echo\""),
        .req = {.path = "/_fake/echo/replay", .upload = {1u << 20, 5, 1, 7777}},
        .want = {.status = 200, .requests = 2, .echo = 1}},
};
FAULT_TEST(test_retry_body_replayed, NULL, retry_body_replayed)

/*
 * A body over retry_body_max (64k here) is not kept, so once it went
 * upstream it cannot be replayed: the 503 goes to the client as it is.  A
 * proxy that retried anyway would send a truncated body, or hang.
 */
static const struct fault_case retry_body_too_big[] = {
    {.name = "chunked 1 MiB body over retry_body_max",
        .conf = "[retry]\nbackoff_factor = 0.01\n"
                "retry_body_max = 64k\n",
        .fault = STATUS_FAULT(503, ",\"path\":\"/_fake/echo\""),
        .req = {.path = "/_fake/echo/big", .upload = {1u << 20, 9, 1, 65536}},
        .want = {.status = 503, .requests = 1, .body = BUSY_BODY}},
    {.name = "Content-Length 1 MiB body over retry_body_max",
        .fault = STATUS_FAULT(503, ",\"path\":\"/_fake/echo\""),
        .req = {.path = "/_fake/echo/big", .upload = {1u << 20, 9, 0, 0}},
        .want =
            {.status = 503, .requests = 1, .body = BUSY_BODY, .healthy = 1}},
};
FAULT_TEST(test_retry_body_too_big, NULL, retry_body_too_big)

/* ---- cancellation ------------------------------------------------------ */

/*
 * A request queued for the only pool slot, its client reset: it leaves
 * the queue at once and never reaches Ollama.  With queue_max = 1 a later
 * request can only queue if the cancelled one left: a leaked queue entry
 * turns it into a 503, and a request started anyway shows in the count.
 */
START_TEST(test_cancel_queued)
{
	static const char slow[] = GEN_PACED(10, 100);
	static const char queued[] = GEN_WHOLE;
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
    {.name = "test_cancel_headers_wait",
        .gen = SLOW_HEAD,
        .how = LEAVE_CLOSE,
        .phase = "headers_wait",
        .want_gone = 1,
        .want_requests = ANY_COUNT},
    {.name = "test_cancel_mid_stream",
        .gen = GEN_PACED(200, 50),
        .after_lines = 3,
        .how = LEAVE_RESET,
        .phase = "streaming",
        .want_gone = 1,
        .want_requests = 1},
    {.name = "test_cancel_half_close",
        .gen = SLOW_HEAD,
        .how = LEAVE_HALF_CLOSE,
        .phase = "headers_wait",
        .want_gone = ANY_COUNT,
        .want_requests = ANY_COUNT,
        .want_closed = 1},
    {.name = "test_cancel_not_reading_close",
        .gen = SLOW_HEAD,
        .unread = 1,
        .how = LEAVE_CLOSE,
        .phase = "headers_wait",
        .want_gone = ANY_COUNT,
        .want_requests = 1},
    {.name = "test_cancel_not_reading_reset",
        .gen = SLOW_HEAD,
        .unread = 1,
        .how = LEAVE_RESET,
        .phase = "headers_wait",
        .want_gone = ANY_COUNT,
        .want_requests = 1},
};
#undef SLOW_HEAD

START_TEST(test_cancel_client_gone)
{
	const struct cancel_case *k = &cancel_cases[_i];
	struct harness_env env;
	struct http_conn c;
	double t0, t1;
	long long n;

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
		    harness_strf("%s: the request reaching the fake", k->name));
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
	n = test_stat(env.fake, "client_gone", NULL);
	H_ASSERT(k->want_gone == ANY_COUNT || n == k->want_gone,
	    "%s: the fake saw its client gone %lld times, want %lld", k->name,
	    n, k->want_gone);
	n = test_stat(env.fake, "requests", NULL);
	H_ASSERT(k->want_requests == ANY_COUNT || n == k->want_requests,
	    "%s: the fake saw %lld requests, want %lld", k->name, n,
	    k->want_requests);
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

/* ---- backpressure ------------------------------------------------------ */

/*
 * A generate stream decoded as it arrives, without keeping it: chunked
 * framing to the terminating chunk, and every line checked in order (line
 * i carries "tok<i> ", the last says done), so a lost, doubled or
 * reordered piece anywhere in a gigabyte shows.
 */
struct gen_check {
	enum { GC_SIZE, GC_DATA, GC_DATA_END, GC_TRAILER, GC_DONE } state;
	char sline[64];
	size_t slen;
	uint64_t left;
	char *line;
	size_t llen, lcap;
	long lines;
	long tokens;
	uint64_t bytes;
	char why[256];
};

static void
gen_check_line(struct gen_check *g)
{
	char want[64];

	if (g->lines < g->tokens) {
		snprintf(
		    want, sizeof want, "\"response\":\"tok%ld \"", g->lines);
		if (memmem(g->line, g->llen, want, strlen(want)) == NULL ||
		    memmem(g->line, g->llen, "\"done\":false", 12) == NULL)
			snprintf(g->why, sizeof g->why,
			    "line %ld is not token "
			    "%ld: ...%.*s",
			    g->lines, g->lines,
			    (int)(g->llen < 120 ? g->llen : 120),
			    g->line + (g->llen < 120 ? 0 : g->llen - 120));
	} else if (g->lines == g->tokens) {
		if (memmem(g->line, g->llen, "\"done\":true", 11) == NULL)
			snprintf(g->why, sizeof g->why,
			    "line %ld is not the "
			    "final one",
			    g->lines);
	} else
		snprintf(g->why, sizeof g->why, "a line after the final one");
	g->lines++;
	g->llen = 0;
}

static void
gen_check_body(struct gen_check *g, const char *p, size_t n)
{
	const char *nl;
	size_t k;

	g->bytes += n;
	while (n > 0 && g->why[0] == '\0') {
		nl = memchr(p, '\n', n);
		k = nl != NULL ? (size_t)(nl - p) : n;
		if (g->llen + k > g->lcap) {
			g->lcap = (g->llen + k) * 2;
			H_ASSERT(g->lcap < (1u << 24), "a line over 8 MiB");
			g->line = realloc(g->line, g->lcap);
			H_CHECK(g->line != NULL);
		}
		memcpy(g->line + g->llen, p, k);
		g->llen += k;
		if (nl == NULL)
			return;
		gen_check_line(g);
		p += k + 1;
		n -= k + 1;
	}
}

static void
gen_check_feed(struct gen_check *g, const char *p, size_t n)
{
	unsigned long long size;
	char *end;
	size_t k;
	char ch;

	while (n > 0 && g->why[0] == '\0' && g->state != GC_DONE) {
		switch (g->state) {
		case GC_SIZE:
		case GC_TRAILER:
			ch = *p++;
			n--;
			if (ch != '\n') {
				if (g->slen >= sizeof g->sline - 1) {
					snprintf(g->why, sizeof g->why,
					    "chunk size line too long");
					return;
				}
				g->sline[g->slen++] = ch;
				break;
			}
			if (g->slen > 0 && g->sline[g->slen - 1] == '\r')
				g->slen--;
			g->sline[g->slen] = '\0';
			g->slen = 0;
			if (g->state == GC_TRAILER) {
				if (g->sline[0] == '\0')
					g->state = GC_DONE;
				break;
			}
			size = strtoull(g->sline, &end, 16);
			if (end == g->sline) {
				snprintf(g->why, sizeof g->why,
				    "bad chunk "
				    "size line \"%s\"",
				    g->sline);
				return;
			}
			g->left = size;
			g->state = size == 0 ? GC_TRAILER : GC_DATA;
			break;
		case GC_DATA:
			k = n < g->left ? n : (size_t)g->left;
			gen_check_body(g, p, k);
			p += k;
			n -= k;
			g->left -= k;
			if (g->left == 0)
				g->state = GC_DATA_END;
			break;
		case GC_DATA_END:
			ch = *p++;
			n--;
			if (ch == '\n')
				g->state = GC_SIZE;
			else if (ch != '\r')
				snprintf(g->why, sizeof g->why,
				    "chunk not "
				    "followed by CRLF");
			break;
		case GC_DONE:
			break;
		}
	}
}

/* Reads the response head on c, then the whole stream through g. */
static void
gen_check_read(struct http_conn *c, struct gen_check *g, int timeout_ms)
{
	struct http_resp r;
	const char *te;
	char *eoh, *buf;
	double deadline;
	struct pollfd pfd;
	size_t hlen;
	ssize_t n;

	deadline = harness_now() + timeout_ms / 1000.0;
	while (
	    (eoh = c->in.len > 0 ? memmem(c->in.data, c->in.len, "\r\n\r\n", 4)
	                         : NULL) == NULL)
		H_ASSERT(!c->eof && http_conn_fill(c, deadline) > 0,
		    "no response head: %.200s", c->in.data ? c->in.data : "");
	hlen = (size_t)(eoh - c->in.data) + 4;
	memset(&r, 0, sizeof r);
	H_ASSERT(http_parse_head(&r, c->in.data, hlen) == 0 && r.status == 200,
	    "the big stream's head: %.*s", (int)hlen, c->in.data);
	te = http_header_get(&r, "Transfer-Encoding");
	H_ASSERT(te != NULL && strcasecmp(te, "chunked") == 0,
	    "the big "
	    "stream is not chunked: %.*s",
	    (int)hlen, c->in.data);
	http_resp_free(&r);
	gen_check_feed(g, c->in.data + hlen, c->in.len - hlen);
	harness_buf_consume(&c->in, c->in.len);

	buf = malloc(1u << 20);
	H_CHECK(buf != NULL);
	while (g->state != GC_DONE && g->why[0] == '\0') {
		n = recv(c->fd, buf, 1u << 20, 0);
		if (n > 0) {
			gen_check_feed(g, buf, (size_t)n);
			continue;
		}
		H_ASSERT(n != 0,
		    "the stream ended after %llu body bytes, %ld "
		    "lines, without its last chunk",
		    (unsigned long long)g->bytes, g->lines);
		H_ASSERT(errno == EAGAIN || errno == EINTR,
		    "reading the "
		    "stream: %s",
		    strerror(errno));
		H_ASSERT(harness_now() < deadline,
		    "the stream was not over "
		    "within %d ms: %llu bytes, %ld lines",
		    timeout_ms, (unsigned long long)g->bytes, g->lines);
		pfd.fd = c->fd;
		pfd.events = POLLIN;
		poll(&pfd, 1, 100);
	}
	free(buf);
	H_ASSERT(g->why[0] == '\0', "the stream is damaged: %s", g->why);
}

/*
 * Samples the daemon's RSS every 50 ms until it has settled: nothing in
 * the last second above the highest sample before by more than 512 KiB.
 * There is no event for "the proxy paused the transfer", hence the poll,
 * bounded by timeout_ms.
 */
static void
test_wait_rss_settled(pid_t pid, int timeout_ms)
{
	double deadline, since;
	long rss, top;

	deadline = harness_now() + timeout_ms / 1000.0;
	since = harness_now();
	top = harness_proc_status_kb(pid, "VmRSS");
	while (harness_now() < deadline) {
		test_pause_ms(50);
		rss = harness_proc_status_kb(pid, "VmRSS");
		if (rss > top + 512) {
			top = rss;
			since = harness_now();
		} else if (harness_now() - since >= 1.0)
			return;
	}
}

static int
test_asan(pid_t pid)
{
	/* AddressSanitizer's shadow memory and quarantine dwarf what the
	 * daemon itself holds, so only a plain build can be measured. */
	if (harness_proc_maps_contains(pid, "libasan") != 1)
		return 0;
	fprintf(stderr,
	    "daemon built with AddressSanitizer: RSS not "
	    "checked\n");
	return 1;
}

/*
 * A client asks for a 1 GiB stream and reads none of it.  The daemon may
 * hold max_buffer (1 MiB) for it, so its memory settles far below 64 MiB
 * with the upstream transfer paused (the fake's request still open);
 * then everything is read and must arrive whole and in order.  Without
 * backpressure the daemon soaks up the stream at loopback speed (about
 * 250 MB/s) and its RSS passes 64 MiB within a second.
 *
 * The fake's tokens are short, so the lines are made 4.4 KB long with a
 * 4,300-character model name (the fake repeats it on every line):
 * 250,000 tokens make a 1.07 GB stream, which a reader drains through
 * the daemon in about 5 s, within the time this test may take.
 */
START_TEST(test_backpressure_slow_reader)
{
	enum { TOKENS = 250000, MODEL_LEN = 4300 };
	struct harness_env env;
	struct gen_check g;
	struct http_conn c;
	char *model, *json;
	long hwm, rss;
	pid_t pid;

	T_BEGIN();
	harness_up(&env, "");
	fake_reset(env.fake);
	pid = env.daemon->proc.pid;
	model = malloc(MODEL_LEN + 1);
	H_CHECK(model != NULL);
	memset(model, 'x', MODEL_LEN);
	memcpy(model, MODEL "-", strlen(MODEL) + 1);
	model[MODEL_LEN] = '\0';
	json = harness_strf("{\"model\":\"%s\",\"prompt\":\"p\",\"options\":"
	                    "{\"num_predict\":%d}}",
	    model, TOKENS);
	free(model);

	test_raw_send(
	    &c, env.daemon->port, test_raw_post("/api/generate", json, ""));
	H_ASSERT(http_conn_wait_readable(&c, 10000),
	    "the stream did not "
	    "start");
	/* Not a byte is read until the daemon's memory has settled. */
	test_wait_rss_settled(pid, 20000);
	hwm = harness_proc_status_kb(pid, "VmHWM");
	rss = harness_proc_status_kb(pid, "VmRSS");
	fprintf(stderr,
	    "stalled 1 GiB stream: daemon VmRSS %ld KiB, VmHWM "
	    "%ld KiB\n",
	    rss, hwm);
	if (!test_asan(pid))
		H_ASSERT(hwm > 0 && hwm < 64 * 1024,
		    "daemon peak RSS %ld KiB "
		    "while its client reads nothing of a 1 GiB stream; the "
		    "upstream transfer must pause",
		    hwm);
	H_ASSERT(test_stat(env.fake, "requests_active", NULL) == 1 &&
	        test_stat(env.fake, "client_gone", NULL) == 0,
	    "the upstream "
	    "stream must be paused, neither finished nor dropped");

	memset(&g, 0, sizeof g);
	g.tokens = TOKENS;
	gen_check_read(&c, &g, 90000);
	H_ASSERT(
	    g.lines == TOKENS + 1, "%ld lines, want %d", g.lines, TOKENS + 1);
	H_ASSERT(g.bytes >= (1ull << 30), "the stream was only %llu bytes",
	    (unsigned long long)g.bytes);
	hwm = harness_proc_status_kb(pid, "VmHWM");
	fprintf(stderr,
	    "1 GiB stream read: %llu bytes, daemon VmHWM %ld "
	    "KiB\n",
	    (unsigned long long)g.bytes, hwm);
	if (!test_asan(pid))
		H_ASSERT(hwm < 64 * 1024,
		    "daemon peak RSS %ld KiB after a "
		    "1 GiB stream",
		    hwm);
	free(g.line);
	http_conn_close(&c);
	test_assert_healthy(env.daemon, "a 1 GiB stream");
}
END_TEST

/*
 * The reverse: the upstream reads a 20 MiB chunked upload at 2 MiB/s
 * while the client could send it in a fraction of a second.  The daemon
 * must stop reading the client rather than buffer the difference: its
 * peak RSS grows by far less than the body.  retry_body_max is 64k so
 * that the copy kept for a replay (up to 16 MiB by default, by design)
 * does not hide what backpressure does.  The rate is 2 MiB/s, not 1, to
 * keep the test near 10 s; the body is still 20 times max_buffer.  The
 * upload must take at least 5 s, else the fault did not apply and
 * nothing was slow.
 */
START_TEST(test_backpressure_slow_upstream)
{
	static const struct fault_case upload = {
	    .name = "20 MiB upload to a slow upstream",
	    .fault = "{\"action\":\"slow_read\",\"bytes_per_sec\":2097152,"
	             "\"path\":\"/_fake/echo\"}",
	    .keep_counts = 1,
	    .req = {.path = "/_fake/echo/slow",
	        .upload = {20u << 20, 13, 1, 0},
	        .timeout_ms = 60000},
	    .want = {.status = 200,
	        .requests = ANY_COUNT,
	        .echo = 1,
	        .secs = {5.0, 0}}};
	struct fault_env env;
	long base, hwm;
	double t0, el;
	pid_t pid;

	T_BEGIN();
	fault_env_init(&env, NULL);
	env.daemon = harness_daemon_start(
	    "[retry]\nretry_body_max = 64k\n", env.upstream, NULL);
	pid = env.daemon->proc.pid;
	/* The daemon's own working set first: one request through it. */
	test_assert_healthy(env.daemon, "startup");
	base = harness_proc_status_kb(pid, "VmHWM");

	t0 = harness_now();
	fault_run(&env, &upload, 1);
	el = harness_now() - t0;
	hwm = harness_proc_status_kb(pid, "VmHWM");
	fprintf(stderr,
	    "20 MiB upload at 2 MiB/s: %.1f s, daemon VmHWM %ld "
	    "KiB (%ld KiB before)\n",
	    el, hwm, base);
	if (!test_asan(pid)) {
		H_ASSERT(hwm < 64 * 1024, "daemon peak RSS %ld KiB", hwm);
		H_ASSERT(hwm - base < 8 * 1024,
		    "daemon peak RSS grew by %ld "
		    "KiB during a 20 MiB upload to a slow upstream; it must "
		    "stop reading the client instead",
		    hwm - base);
	}
}
END_TEST

/* ---- timeouts ---------------------------------------------------------- */

/*
 * first_byte_timeout 0.5 s against a 5 s model load: a 504 naming the
 * upstream after about 0.5 s, not retried (the model may be loading), and
 * the upstream connection closed.  A stream whose first byte is quick
 * may take longer than that in all: ten lines 100 ms apart, 1 s in all.
 */
static const struct fault_case timeout_first_byte[] = {
    {.name = "first_byte_timeout = 0.5 against a 5 s model load",
        .conf = "[upstream]\nfirst_byte_timeout = 0.5\n",
        .req = {.path = "/api/generate",
            .json = GEN(",\"fake_first_byte_ms\":5000")},
        .want = {.status = 504,
            .requests = 1,
            .shape = SHAPE_NATIVE,
            .names_upstream = 1,
            .secs = {0.45, 3.0},
            .gone_phase = "headers_wait"}},
    {.name = "a 1 s stream with first_byte_timeout = 0.5",
        .keep_counts = 1,
        .req = {.path = "/api/generate", .json = GEN_PACED(10, 100)},
        .want = {.status = 200, .requests = ANY_COUNT, .lines = 11}},
};
FAULT_TEST(test_timeout_first_byte, NULL, timeout_first_byte)

/*
 * stream_idle_timeout 0.5 s: a stream that goes quiet for 3 s after its
 * first line is cut off after about 0.5 s of silence (no terminating
 * chunk: the client sees a truncated stream) and the upstream transfer is
 * dropped.  One that keeps talking every 200 ms runs to its end.
 */
static const struct fault_case timeout_stream_idle[] = {
    {.name = "a stream idle for 3 s with stream_idle_timeout = 0.5",
        .conf = "[upstream]\nstream_idle_timeout = 0.5\n",
        .req = {.path = "/api/generate", .json = GEN_PACED(3, 3000)},
        .want = {.status = 200,
            .requests = ANY_COUNT,
            .cut = CUT_CHUNKED,
            .lines = 1,
            .secs = {0.45, 2.5},
            .gone_phase = "streaming"}},
    {.name = "a stream with a line every 200 ms",
        .keep_counts = 1,
        .req = {.path = "/api/generate", .json = GEN_PACED(6, 200)},
        .want = {.status = 200, .requests = ANY_COUNT, .lines = 7}},
};
FAULT_TEST(test_timeout_stream_idle, NULL, timeout_stream_idle)

/*
 * connect_timeout: a loopback connect hangs when the listener's accept
 * queue is full (Linux drops the SYN), which a listener with backlog 0
 * and one connection nobody accepts gives us.  Two attempts of 0.5 s
 * (the timeout is retried), then a 504 naming the upstream.  With the
 * default 10 s the client's 8 s limit runs out first.
 */
START_TEST(test_timeout_connect)
{
	static const struct fault_case cases[] = {
	    {.name = "connect_timeout = 0.5, two attempts",
	        .conf = "[upstream]\nconnect_timeout = 0.5\n"
	                "[retry]\nretries = 1\nbackoff_factor = 0.01\n",
	        .req = {.path = "/api/tags", .timeout_ms = 8000},
	        .want = {.status = 504,
	            .shape = SHAPE_NATIVE,
	            .names_upstream = 1,
	            .secs = {0.95, 5.0}}},
	};
	struct sockaddr_in sin;
	struct pollfd pfd;
	socklen_t slen;
	int lfd, filler, probe;

	T_BEGIN();
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	H_CHECK(lfd >= 0);
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	H_CHECK(bind(lfd, (struct sockaddr *)&sin, sizeof sin) == 0);
	H_CHECK(listen(lfd, 0) == 0);
	slen = sizeof sin;
	H_CHECK(getsockname(lfd, (struct sockaddr *)&sin, &slen) == 0);
	filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	H_CHECK(connect(filler, (struct sockaddr *)&sin, sizeof sin) == 0);
	/* The precondition: a further connect now hangs. */
	probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	H_CHECK(connect(probe, (struct sockaddr *)&sin, sizeof sin) != 0 &&
	    errno == EINPROGRESS);
	pfd.fd = probe;
	pfd.events = POLLOUT;
	H_ASSERT(poll(&pfd, 1, 300) == 0,
	    "this kernel completes connects "
	    "beyond a full accept queue; cannot make a connect hang");
	close(probe);

	FAULT_TABLE(
	    harness_strf("http://127.0.0.1:%d", ntohs(sin.sin_port)), cases);
	close(filler);
	close(lfd);
}
END_TEST

/*
 * header_timeout 0.5 s is a deadline for the whole head, not an idle
 * limit: a head trickling in a byte every 100 ms never stalls for long,
 * yet gets its 408 and a close about 0.5 s after its first byte.
 */
START_TEST(test_timeout_header)
{
	static const char head[] =
	    "GET /api/version HTTP/1.1\r\n"
	    "Host: client.invalid\r\nX-Trickle: aaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
	struct harness_env env;
	struct http_resp r;
	struct http_conn c;
	size_t i;
	double t0, el;

	T_BEGIN();
	harness_up(&env, "[server]\nheader_timeout = 0.5\n");
	fake_reset(env.fake);
	http_conn_open(&c, env.daemon->port);
	t0 = harness_now();
	for (i = 0; i < sizeof head - 1; i++) {
		if (http_conn_send(&c, head + i, 1, 1000) != 0)
			break;
		/* The trickle's pace; an answer ends it. */
		if (http_conn_wait_readable(&c, 100))
			break;
	}
	H_ASSERT(http_conn_read_response(&c, 0, 5000, &r) == 0,
	    "a trickling head got no answer: %s", r.error);
	el = r.t_head - t0;
	test_assert_native_error(&r, 408, NULL, "header_timeout");
	H_ASSERT(el >= 0.45 && el < 2.0,
	    "the 408 came %.3f s after the "
	    "head's first byte, with header_timeout = 0.5",
	    el);
	H_ASSERT(http_conn_wait_closed(&c, 2000) == 1,
	    "the connection stayed "
	    "open after the 408");
	H_ASSERT_INT_EQ(test_stat(env.fake, "requests", NULL), 0);
	http_conn_close(&c);
	http_resp_free(&r);
}
END_TEST

/* An idle connection is closed silently about 0.5 s from now. */
static void
test_assert_idle_closed(struct http_conn *c, const char *what)
{
	double t0, el;
	int rc;

	t0 = harness_now();
	rc = http_conn_wait_closed(c, 5000);
	el = harness_now() - t0;
	H_ASSERT(rc == 1, "%s was %s", what,
	    rc == 0 ? "still open after 5 s" : "sent data");
	/* The timer starts when the daemon has written the answer, a little
	 * before the client has read it (under valgrind, some 100 ms). */
	H_ASSERT(el >= 0.3 && el < 3.0,
	    "%s was closed after %.3f s with idle_timeout = 0.5", what, el);
	http_conn_close(c);
}

/*
 * idle_timeout 0.5 s: a kept-alive connection with no next request is
 * closed silently after about 0.5 s, and so is one that never sent any.
 */
START_TEST(test_timeout_idle)
{
	struct harness_env env;
	struct http_resp r;
	struct http_conn c;

	T_BEGIN();
	harness_up(&env, "[server]\nidle_timeout = 0.5\n");
	test_raw_send(&c, env.daemon->port,
	    "GET /api/version HTTP/1.1\r\n"
	    "Host: client.invalid\r\n\r\n");
	H_ASSERT(
	    http_conn_read_response(&c, 0, 10000, &r) == 0 && r.status == 200,
	    "first request: %ld %s", r.status, r.error);
	test_assert_idle_closed(&c, "an idle kept-alive connection");
	http_resp_free(&r);

	http_conn_open(&c, env.daemon->port);
	test_assert_idle_closed(&c, "a connection with no request");
}
END_TEST

/* ---- truncation when the upstream dies ---------------------------------- */

/*
 * test_truncated_chunked: the upstream dies after three lines of a chunked
 * stream; the client gets those lines and then a closed connection, never
 * the zero-length chunk that would make the stream look complete.
 *
 * test_truncated_content_length: a Content-Length answer whose upstream
 * dies halfway; the client gets the head with the upstream's length and
 * the connection closes short of it.
 *
 * test_truncated_head: the upstream dies halfway through a response head;
 * bad framing, nothing can be forwarded, so the client gets a 502 of the
 * proxy's own.
 *
 * Each runs on its own (a loop test), named after its case.
 */
static const struct fault_case truncated_cases[] = {
    {.name = "test_truncated_chunked",
        .conf = "",
        .fault = "{\"action\":\"die_after\",\"chunks\":3,"
                 "\"path\":\"/api/generate\"}",
        .req = {.path = "/api/generate",
            .json = GEN(",\"options\":{\"num_predict\":10}")},
        .want = {.status = 200,
            .requests = 1,
            .cut = CUT_CHUNKED,
            .lacks = "\"done\":true",
            .lines = 3,
            .secs = {0, 5.0},
            .healthy = 1}},
    {.name = "test_truncated_content_length",
        .conf = "",
        .fault = "{\"action\":\"die_after\",\"path\":\"/api/generate\"}",
        .req = {.path = "/api/generate",
            .json = GEN(",\"stream\":false,\"options\":{\"num_predict\":50}")},
        .want = {.status = 200, .requests = 1, .cut = CUT_SHORT, .healthy = 1}},
    {.name = "test_truncated_head",
        .conf = "[retry]\nretries = 0\n",
        .fault = "{\"action\":\"die_after\",\"path\":\"/api/copy\"}",
        .req = {.path = "/api/copy",
            .json = "{\"source\":\"" MODEL "\",\"destination\":\"copy\"}"},
        .want = {.status = 502,
            .requests = 1,
            .shape = SHAPE_NATIVE,
            .names_upstream = 1,
            .healthy = 1}},
};

START_TEST(test_truncated)
{
	test_begin(truncated_cases[_i].name);
	fault_run_table(NULL, &truncated_cases[_i], 1);
}
END_TEST

/* ---- error shapes ------------------------------------------------------ */

/*
 * Native paths get {"error":"ollama-pool: ..."}, /v1/ paths OpenAI's
 * {"error":{"message","type","param","code"}}: "api_error" for the
 * proxy's 5xx, "invalid_request_error" for what the client got wrong.
 * Every message names the upstream it could not reach.
 */
static const struct fault_case error_shapes[] = {
    {.name = "GET /api/tags, upstream down",
        .conf = "[retry]\nretries = 0\n",
        .req = {.path = "/api/tags"},
        .want = {.status = 502, .shape = SHAPE_NATIVE, .names_upstream = 1}},
    {.name = "GET /v1/models, upstream down",
        .req = {.path = "/v1/models"},
        .want = {.status = 502,
            .shape = SHAPE_OPENAI,
            .error_type = "api_error",
            .names_upstream = 1}},
    {.name = "POST /v1/chat/completions, upstream down",
        .req = {.path = "/v1/chat/completions",
            .json = "{\"model\":\"" MODEL "\",\"messages\":[]}"},
        .want = {.status = 502,
            .shape = SHAPE_OPENAI,
            .error_type = "api_error",
            .names_upstream = 1}},
    /* The client's fault, on a /v1/ path. */
    {.name = "TRACE /v1/models",
        .req = {.method = "TRACE", .path = "/v1/models"},
        .want = {.status = 405,
            .shape = SHAPE_OPENAI,
            .error_type = "invalid_request_error"}},
};
FAULT_TEST(test_error_shapes, test_unused_upstream(), error_shapes)

/* ---- the suite -------------------------------------------------------- */

static Suite *
resilience_suite(void)
{
	Suite *s;
	TCase *tc;

	s = suite_create("resilience");

	tc = harness_tcase(s, "retry", 60);
	tcase_add_test(tc, test_retry_count_and_delays);
	tcase_add_test(tc, test_retry_backoff_is_a_timer);
	tcase_add_test(tc, test_retry_all_attempts_fail);
	tcase_add_test(tc, test_retry_after);
	tcase_add_test(tc, test_retry_off_and_methods);
	tcase_add_test(tc, test_retry_statuses);
	tcase_add_test(tc, test_retry_backoff_max);
	tcase_add_test(tc, test_retry_connection_refused);
	tcase_add_test(tc, test_retry_upstream_closed);
	tcase_add_test(tc, test_retry_dead_reused_connections);
	tcase_add_test(tc, test_retry_not_after_bytes);
	tcase_add_test(tc, test_retry_body_replayed);
	tcase_add_test(tc, test_retry_body_too_big);

	tc = harness_tcase(s, "cancel", 60);
	tcase_add_test(tc, test_cancel_queued);
	tcase_add_test(tc, test_cancel_backoff);
	tcase_add_loop_test(
	    tc, test_cancel_client_gone, 0, (int)N_CASES(cancel_cases));

	tc = harness_tcase(s, "backpressure", 120);
	tcase_add_test(tc, test_backpressure_slow_reader);
	tcase_add_test(tc, test_backpressure_slow_upstream);

	tc = harness_tcase(s, "timeouts", 60);
	tcase_add_test(tc, test_timeout_first_byte);
	tcase_add_test(tc, test_timeout_stream_idle);
	tcase_add_test(tc, test_timeout_connect);
	tcase_add_test(tc, test_timeout_header);
	tcase_add_test(tc, test_timeout_idle);

	tc = harness_tcase(s, "truncation", 60);
	tcase_add_loop_test(
	    tc, test_truncated, 0, (int)N_CASES(truncated_cases));

	tc = harness_tcase(s, "errors", 60);
	tcase_add_test(tc, test_error_shapes);

	return s;
}

int
main(void)
{
	return harness_main(resilience_suite());
}
