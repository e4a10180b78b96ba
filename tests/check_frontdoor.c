/*
 * Integration tests for the front door: the strict request parser, the
 * limits and timeouts, and the connection-level defences, each proven
 * against the running daemon over loopback sockets (issue 4).
 *
 * The parser's rules have unit tests of their own (check_units.c); these
 * show what the daemon makes of them.  For each refused request the tests
 * check what the client sees (the status, the proxy's JSON error, the
 * connection closed where framing can no longer be trusted) and what the
 * upstream saw: the fake's request count stays put, so nothing of the
 * request was forwarded.  After the traffic the daemon must be back at the
 * descriptors it held before and still serve a normal request over the
 * upstream connection it pooled before it, so no refusal left a shared
 * connection out of step.
 *
 * Every test starts its own processes (harness_setup/harness_teardown are
 * the checked fixtures); the teardown fails a test whose daemon died.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <check.h>
#include <cjson/cJSON.h>

#include "harness.h"

#define ERR_PREFIX "{\"error\":\"ollama-pool: "
/* Bound on one exchange on a raw socket. */
#define IO_MS 10000
/* Bound on the daemon settling (a closed client let go, a transfer
 * dropped): events we cannot see, so we poll for them. */
#define SETTLE_MS 5000

/* A request hidden in a body: the fake counts it if it is forwarded. */
#define EVIL "GET /evil HTTP/1.1\r\nHost: h\r\n\r\n"

/* A request given by its bytes, which may hold a NUL. */
#define RQ(s) s, sizeof(s) - 1

/* ---- helpers local to these tests -------------------------------------- */

/* A daemon in front of a fake, with what both looked like at rest. */
struct front {
	struct harness_env env;
	struct harness_daemon *d;
	pid_t pid;
	int port;
	int fds; /* the daemon's descriptors at rest */
	long long requests; /* requests the fake has counted */
	long long delivered; /* of those, not abandoned by their client */
	long long used; /* upstream connections that carried one */
};

struct fake_nums {
	long long requests, active, gone, gone_body, used;
};

static void
fake_nums(const struct harness_fake *fk, struct fake_nums *n)
{
	const cJSON *p;
	cJSON *j;

	j = fake_stats(fk);
	n->requests = (long long)harness_jnum(j, "requests");
	n->active = (long long)harness_jnum(j, "requests_active");
	n->gone = (long long)harness_jnum(j, "client_gone");
	n->used = (long long)harness_jnum(j, "connections_used");
	p = cJSON_GetObjectItemCaseSensitive(j, "client_gone_phase");
	H_ASSERT(cJSON_IsObject(p), "/_fake/stats has no client_gone_phase");
	n->gone_body = (long long)harness_jnum(p, "body");
	cJSON_Delete(j);
}

/*
 * The daemon's descriptor count once it reaches want.  A client's close
 * reaches the daemon a moment after ours and nothing tells us when it has
 * let go of its end, so this polls, within a deadline; it returns the last
 * count seen.
 */
static int
fd_wait(pid_t pid, int want, int timeout_ms)
{
	double deadline;
	int n;

	deadline = harness_now() + timeout_ms / 1000.0;
	for (;;) {
		n = harness_proc_fd_count(pid);
		if (n == want || harness_now() >= deadline)
			return n;
		poll(NULL, 0, 10);
	}
}

/*
 * The daemon's descriptor count when no descriptor is passing through: it
 * opens one for each notify datagram it sends (READY=1, then its status
 * line) and closes it at once, so a single look may catch one.  Two looks
 * that agree, 20 ms apart, do not.
 */
static int
fd_quiet(pid_t pid)
{
	double deadline;
	int a, b;

	deadline = harness_now() + SETTLE_MS / 1000.0;
	a = harness_proc_fd_count(pid);
	for (;;) {
		poll(NULL, 0, 20);
		b = harness_proc_fd_count(pid);
		if (a == b || harness_now() >= deadline)
			return b;
		a = b;
	}
}

/* Waits until the fake has no request in progress: a transfer the daemon
 * dropped ends there when the fake notices the connection close. */
static void
fake_wait_idle(
    const struct harness_fake *fk, struct fake_nums *n, const char *what)
{
	double deadline;

	deadline = harness_now() + SETTLE_MS / 1000.0;
	for (;;) {
		fake_nums(fk, n);
		if (n->active == 0)
			return;
		H_ASSERT(harness_now() < deadline,
		    "%s: the upstream still has "
		    "%lld request(s) in progress %d ms later: the daemon did "
		    "not drop the transfer",
		    what, n->active, SETTLE_MS);
		poll(NULL, 0, 20);
	}
}

/* Waits until the fake has exactly `want` requests in progress. */
static void
fake_wait_active(
    const struct harness_fake *fk, long long want, const char *what)
{
	double deadline;
	long long n;

	deadline = harness_now() + SETTLE_MS / 1000.0;
	while ((n = fake_stat(fk, "requests_active")) != want) {
		H_ASSERT(harness_now() < deadline,
		    "%s: the upstream has %lld request(s) in progress, want "
		    "%lld",
		    what, n, want);
		poll(NULL, 0, 20);
	}
}

static void
conn_send(struct http_conn *c, const void *p, size_t n, const char *what)
{
	H_ASSERT(http_conn_send(c, p, n, IO_MS) == 0,
	    "%s: sending %zu bytes failed: %s", what, n, strerror(errno));
}

static void
conn_response(struct http_conn *c, struct http_resp *r, const char *what)
{
	H_ASSERT(http_conn_read_response(c, 0, IO_MS, r) == 0,
	    "%s: no complete response: %s", what, r->error);
}

/* Reads once, waiting until the deadline: 1 data, 0 EOF, -1 timeout. */
static int
conn_fill(struct http_conn *c, double deadline)
{
	struct pollfd pfd;
	char buf[65536];
	ssize_t n;
	double left;

	for (;;) {
		n = recv(c->fd, buf, sizeof buf, 0);
		if (n > 0) {
			harness_buf_add(&c->in, buf, (size_t)n);
			return 1;
		}
		if (n == 0 || (n < 0 && errno == ECONNRESET)) {
			c->reset = n < 0;
			c->eof = 1;
			return 0;
		}
		if (errno != EAGAIN && errno != EINTR)
			return -1;
		left = (deadline - harness_now()) * 1000.0;
		if (left <= 0)
			return -1;
		pfd.fd = c->fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		poll(&pfd, 1, (int)left + 1);
	}
}

/* Everything the peer sends until it closes: 0, or -1 when it did not
 * close in time. */
static int
conn_read_to_eof(struct http_conn *c, int timeout_ms)
{
	double deadline;

	deadline = harness_now() + timeout_ms / 1000.0;
	while (!c->eof) {
		if (conn_fill(c, deadline) < 0)
			return -1;
	}
	return 0;
}

/* Waits until the buffer holds a whole response head; 0 or -1. */
static int
conn_wait_head(struct http_conn *c, int timeout_ms)
{
	double deadline;

	deadline = harness_now() + timeout_ms / 1000.0;
	while (c->in.len == 0 ||
	    memmem(c->in.data, c->in.len, "\r\n\r\n", 4) == NULL) {
		if (c->eof || conn_fill(c, deadline) <= 0)
			return -1;
	}
	return 0;
}

/* The shape of an error the proxy made itself. */
static void
assert_proxy_error(const struct http_resp *r, long status, const char *what)
{
	const char *ct, *msg;
	cJSON *j;

	H_ASSERT(r->status == status,
	    "%s: status %ld, want %ld; head %.300s "
	    "body %.300s",
	    what, r->status, status, r->head.data, r->body.data);
	ct = http_header_get(r, "Content-Type");
	H_ASSERT(ct != NULL && strncasecmp(ct, "application/json", 16) == 0,
	    "%s: Content-Type %s, want application/json", what,
	    ct ? ct : "none");
	H_ASSERT(strncmp(r->body.data, ERR_PREFIX, strlen(ERR_PREFIX)) == 0,
	    "%s: the body is not the proxy's own error: %.300s", what,
	    r->body.data);
	j = harness_json(r, what);
	msg = harness_jstr(j, "error");
	H_ASSERT(msg != NULL && strlen(msg) > strlen("ollama-pool: "),
	    "%s: empty error message", what);
	cJSON_Delete(j);
}

/* The answer says the connection ends, and it does, with nothing after
 * the answer. */
static void
assert_closes(struct http_conn *c, const struct http_resp *r, const char *what)
{
	const char *conn;
	int rv;

	conn = http_header_get(r, "Connection");
	H_ASSERT(conn != NULL && strcasecmp(conn, "close") == 0,
	    "%s: the answer lacks Connection: close: %.300s", what,
	    r->head.data);
	rv = http_conn_wait_closed(c, IO_MS);
	H_ASSERT(rv != -1, "%s: more bytes after the answer: %.200s", what,
	    c->in.data);
	H_ASSERT(rv == 1,
	    "%s: the connection stayed open after the answer; "
	    "what follows on it can no longer be framed",
	    what);
}

/* The request headers the fake's echo saw: how many of this name, and
 * the first's value. */
static size_t
echo_header(const cJSON *echo, const char *name, const char **value)
{
	const cJSON *a, *e, *n, *v;
	size_t count = 0;

	if (value != NULL)
		*value = NULL;
	a = cJSON_GetObjectItemCaseSensitive(echo, "headers");
	H_ASSERT(cJSON_IsArray(a), "the echo has no headers array");
	cJSON_ArrayForEach(e, a)
	{
		n = cJSON_GetArrayItem(e, 0);
		v = cJSON_GetArrayItem(e, 1);
		if (!cJSON_IsString(n) || strcasecmp(n->valuestring, name) != 0)
			continue;
		if (count++ == 0 && value != NULL && cJSON_IsString(v))
			*value = v->valuestring;
	}
	return count;
}

static const char *
echo_headers_text(const cJSON *echo)
{
	char *s;
	const char *t;

	s = cJSON_PrintUnformatted(
	    cJSON_GetObjectItemCaseSensitive(echo, "headers"));
	t = harness_strf("%s", s != NULL ? s : "(none)");
	cJSON_free(s);
	return t;
}

/* Sends a request the daemon must forward on a new connection, reads the
 * fake's echo of it, and closes. */
static cJSON *
front_echo(struct front *f, const char *req, size_t len, const char *what)
{
	struct http_resp r;
	struct http_conn c;
	cJSON *j;

	http_conn_open(&c, f->port);
	conn_send(&c, req, len, what);
	conn_response(&c, &r, what);
	http_conn_close(&c);
	H_ASSERT(r.status == 200,
	    "%s: status %ld, want 200 from the echo: "
	    "%.300s",
	    what, r.status, r.body.data);
	j = harness_json(&r, what);
	http_resp_free(&r);
	f->requests++;
	f->delivered++;
	return j;
}

static cJSON *
front_get(struct front *f, const char *target, const char *what)
{
	const char *req;

	req = harness_strf(
	    "GET %s HTTP/1.1\r\nHost: client.invalid\r\n\r\n", target);
	return front_echo(f, req, strlen(req), what);
}

/*
 * A fresh fake and daemon, warmed up: the daemon's start-up check left
 * its upstream connection idle in the pool, and one request through the
 * proxy finds it (no descriptor more than the daemon held before): the
 * connection every later normal request must find.
 */
static void
front_up(struct front *f, const char *conf)
{
	struct fake_nums n;
	cJSON *j;
	int fds0;

	memset(f, 0, sizeof *f);
	harness_up(&f->env, conf);
	fake_reset(f->env.fake); /* the start-up check's GET */
	f->d = f->env.daemon;
	f->pid = f->d->proc.pid;
	f->port = f->d->port;
	fds0 = fd_quiet(f->pid);
	H_ASSERT(fds0 > 0, "cannot read /proc/%d/fd", (int)f->pid);
	j = front_get(f, "/_fake/echo/warm-up", "warm-up");
	cJSON_Delete(j);
	f->fds = fd_wait(f->pid, fds0, SETTLE_MS);
	H_ASSERT(f->fds == fds0,
	    "after one request the daemon holds %d "
	    "descriptors, %d before: want as many, the request on the "
	    "start-up check's pooled upstream connection",
	    f->fds, fds0);
	fake_nums(f->env.fake, &n);
	H_ASSERT(n.requests == 1 && n.used == 1,
	    "warm-up: the fake counted "
	    "%lld requests on %lld connections",
	    n.requests, n.used);
	f->requests = n.requests;
	f->delivered = n.requests - n.gone;
	f->used = n.used;
}

/* Nothing of a refused request reached the upstream. */
static void
front_nothing_forwarded(struct front *f, const char *what)
{
	long long got;

	got = fake_stat(f->env.fake, "requests");
	H_ASSERT(got == f->requests,
	    "%s: the upstream received %lld "
	    "request(s) of a refused request",
	    what, got - f->requests);
}

/*
 * A refusal found in a body: the head may have gone upstream already (a
 * body streams), but no request may have completed there, and none may be
 * left in progress.
 */
static void
front_nothing_delivered(struct front *f, struct fake_nums *n, const char *what)
{
	fake_wait_idle(f->env.fake, n, what);
	H_ASSERT(n->requests - n->gone == f->delivered,
	    "%s: the upstream "
	    "completed %lld request(s) from a refused one",
	    what, n->requests - n->gone - f->delivered);
	H_ASSERT(n->requests - f->requests <= 1,
	    "%s: %lld requests reached "
	    "the upstream from one refused request",
	    what, n->requests - f->requests);
	f->requests = n->requests;
}

/*
 * After the traffic of a test: the daemon is alive, holds the descriptors
 * it held at rest, and serves a normal request over its pooled upstream
 * connection.  reuse: the pooled connection of before must still be the
 * one used (no transfer was dropped since); otherwise the first request
 * may need a new one, and the second must reuse that.
 */
static void
front_intact(struct front *f, int reuse, const char *what)
{
	struct fake_nums n;
	const char *t;
	cJSON *j;
	int fds;

	H_ASSERT(harness_proc_alive(&f->d->proc), "%s: the daemon died", what);
	j = front_get(f, "/_fake/echo/after",
	    harness_strf("%s: a normal "
	                 "request afterwards",
	        what));
	t = harness_jstr(j, "target");
	H_ASSERT(t != NULL && strcmp(t, "/_fake/echo/after") == 0,
	    "%s: the normal request arrived as %s", what, t ? t : "(none)");
	cJSON_Delete(j);
	fake_nums(f->env.fake, &n);
	H_ASSERT(n.requests == f->requests,
	    "%s: the upstream counted %lld "
	    "requests, want %lld",
	    what, n.requests, f->requests);
	if (reuse)
		H_ASSERT(n.used == f->used,
		    "%s: the normal request needed a "
		    "new upstream connection (%lld used, %lld before): the "
		    "pooled one was lost",
		    what, n.used, f->used);
	f->used = n.used;

	fds = fd_wait(f->pid, f->fds, SETTLE_MS);
	H_ASSERT(fds == f->fds,
	    "%s: the daemon holds %d descriptors, %d at "
	    "rest before: %s",
	    what, fds, f->fds,
	    fds > f->fds ? "a descriptor leaked"
	                 : "it lost its pooled connection");

	j = front_get(f, "/_fake/echo/after2",
	    harness_strf("%s: a second "
	                 "normal request",
	        what));
	cJSON_Delete(j);
	fake_nums(f->env.fake, &n);
	H_ASSERT(n.used == f->used,
	    "%s: a second normal request needed a "
	    "new upstream connection: the first one's was not pooled",
	    what);
	fds = fd_wait(f->pid, f->fds, SETTLE_MS);
	H_ASSERT(fds == f->fds,
	    "%s: the daemon holds %d descriptors after "
	    "the second request, %d at rest",
	    what, fds, f->fds);
}

/* How a request's bytes are written. */
enum send_how {
	SEND_WHOLE, /* one write */
	SEND_BYTES, /* one write per byte: every field split */
};
static const char *const send_how_name[] = {"in one write", "bytewise"};

/* Writes a request; a refusal may close the connection before the last
 * byte, which ends the writing. */
static void
send_request(
    struct http_conn *c, const char *req, size_t len, enum send_how how)
{
	size_t i;

	if (how == SEND_WHOLE) {
		(void)http_conn_send(c, req, len, IO_MS);
		return;
	}
	for (i = 0; i < len; i++) {
		if (http_conn_send(c, req + i, 1, IO_MS) != 0)
			break;
	}
}

/* Every case of a refusal: its answer, the connection closed. */
static void
refused_exchange(struct front *f, const char *req, size_t len,
    enum send_how how, long status, const char *what)
{
	struct http_resp r;
	struct http_conn c;

	http_conn_open(&c, f->port);
	send_request(&c, req, len, how);
	conn_response(&c, &r, what);
	assert_proxy_error(&r, status, what);
	assert_closes(&c, &r, what);
	http_conn_close(&c);
	http_resp_free(&r);
}

/* The daemon's CPU time (user + system), in clock ticks. */
static long long
proc_cpu_ticks(pid_t pid)
{
	unsigned long long ut = 0, st = 0;
	char path[64], buf[2048], *p;
	FILE *fp;
	size_t n;

	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	fp = fopen(path, "re");
	H_ASSERT(fp != NULL, "open %s: %s", path, strerror(errno));
	n = fread(buf, 1, sizeof buf - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	/* The command name may hold anything; the fields follow its ')'. */
	p = strrchr(buf, ')');
	H_ASSERT(p != NULL &&
	        sscanf(p + 2,
	            "%*c %*d %*d %*d %*d %*d %*u %*u "
	            "%*u %*u %*u %llu %llu",
	            &ut, &st) == 2,
	    "cannot parse %s: %s", path, buf);
	return (long long)(ut + st);
}

/* How often needle occurs in a process's log. */
static int
log_count(const struct harness_proc *p, const char *needle)
{
	struct harness_buf b = {NULL, 0, 0};
	const char *s;
	char buf[65536];
	size_t n;
	FILE *fp;
	int count = 0;

	fp = fopen(p->log_path, "re");
	H_ASSERT(fp != NULL, "open %s: %s", p->log_path, strerror(errno));
	while ((n = fread(buf, 1, sizeof buf, fp)) > 0)
		harness_buf_add(&b, buf, n);
	fclose(fp);
	harness_buf_add(&b, "", 0);
	for (s = b.data; (s = strstr(s, needle)) != NULL; s += strlen(needle))
		count++;
	harness_buf_free(&b);
	return count;
}

/*
 * A request answered from its head alone (405, 401) whose body holds
 * something shaped like a request: the body must be skipped, never read
 * as a request, and the connection either closes or serves the request
 * after it.  late: the body is sent only once the answer has come, so it
 * arrives after the exchange was wound up.
 */
static void
early_answer_body(struct front *f, const char *method, const char *auth,
    long status, int late, const char *what)
{
	struct harness_buf b = {NULL, 0, 0};
	struct http_resp r;
	struct http_conn c;
	const char *t;
	cJSON *j;

	harness_buf_addf(&b,
	    "%s /_fake/echo/early HTTP/1.1\r\nHost: h\r\n"
	    "Content-Length: %zu\r\n\r\n",
	    method, strlen(EVIL));
	http_conn_open(&c, f->port);
	if (late) {
		conn_send(&c, b.data, b.len, what);
		conn_response(&c, &r, what);
		assert_proxy_error(&r, status, what);
		http_resp_free(&r);
		b.len = 0;
	}
	harness_buf_addf(&b,
	    "%sGET /_fake/echo/next HTTP/1.1\r\nHost: h\r\n"
	    "%s\r\n",
	    EVIL, auth);
	/* Once closed, the rest cannot be sent, which is an answer too. */
	(void)http_conn_send(&c, b.data, b.len, IO_MS);
	if (!late) {
		conn_response(&c, &r, what);
		assert_proxy_error(&r, status, what);
		http_resp_free(&r);
	}
	if (http_conn_read_response(&c, 0, IO_MS, &r) == 0) {
		j = harness_json(&r, what);
		t = harness_jstr(j, "target");
		H_ASSERT(r.status == 200 && t != NULL &&
		        strcmp(t, "/_fake/echo/next") == 0,
		    "%s: the next answer is "
		    "%ld for %s: the body was read as a request",
		    what, r.status, t ? t : "(none)");
		cJSON_Delete(j);
		f->requests++;
		f->delivered++;
	} else
		H_ASSERT(c.eof && c.in.len == 0,
		    "%s: after the answer neither "
		    "another nor a close: %s",
		    what, r.error);
	http_resp_free(&r);
	http_conn_close(&c);
	harness_buf_free(&b);
	front_nothing_forwarded(f, what);
}

/* ---- 1-6: requests refused from their head ------------------------------ */

struct refusal {
	const char *name;
	const char *req;
	size_t len;
	long status;
};

#define POST_ECHO(n) "POST /_fake/echo/" n " HTTP/1.1\r\nHost: h\r\n"
#define GET_ECHO(n) "GET /_fake/echo/" n " HTTP/1.1\r\nHost: h\r\n"

/* Each target is one the fake counts, so a forwarded one shows. */
static const struct refusal head_refusals[] = {
    /* 1. Two framings: whichever ends the body decides where the next
     * request starts. */
    {"cl_then_te",
        RQ(POST_ECHO("1a") "Content-Length: 5\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" EVIL),
        400},
    {"te_then_cl",
        RQ(POST_ECHO("1b") "Transfer-Encoding: chunked\r\n"
                           "Content-Length: 5\r\n\r\n0\r\n\r\n" EVIL),
        400},
    /* 2. Content-Length. */
    {"cl_two_values",
        RQ(POST_ECHO("2a") "Content-Length: 5\r\n"
                           "Content-Length: 6\r\n\r\nhello!"),
        400},
    {"cl_plus", RQ(POST_ECHO("2b") "Content-Length: +5\r\n\r\nhello"), 400},
    {"cl_hex",
        RQ(POST_ECHO("2c") "Content-Length: 0x10\r\n\r\n"
                           "0123456789abcdef"),
        400},
    {"cl_negative", RQ(POST_ECHO("2d") "Content-Length: -1\r\n\r\n"), 400},
    {"cl_empty", RQ(POST_ECHO("2e") "Content-Length:\r\n\r\n"), 400},
    {"cl_blank", RQ(POST_ECHO("2f") "Content-Length:   \r\n\r\n"), 400},
    {"cl_list", RQ(POST_ECHO("2g") "Content-Length: 5,6\r\n\r\nhello!"), 400},
    {"cl_2_63",
        RQ(POST_ECHO("2h") "Content-Length: 9223372036854775808"
                           "\r\n\r\nhello"),
        400},
    /* 2^64 + 5: wraps to 5 in a parser that overflows. */
    {"cl_2_64_plus_5",
        RQ(POST_ECHO("2i") "Content-Length: "
                           "18446744073709551621\r\n\r\nhello"),
        400},
    {"cl_20_nines",
        RQ(POST_ECHO("2j") "Content-Length: "
                           "99999999999999999999\r\n\r\nhello"),
        400},
    /* 3. Transfer codings we do not decode, and malformed lists. */
    {"te_gzip",
        RQ(POST_ECHO("3a") "Transfer-Encoding: gzip\r\n\r\n"
                           "5\r\nhello\r\n0\r\n\r\n"),
        501},
    {"te_identity",
        RQ(POST_ECHO("3b") "Transfer-Encoding: identity\r\n"
                           "\r\nhello"),
        501},
    {"te_chunked_identity",
        RQ(POST_ECHO("3c") "Transfer-Encoding: "
                           "chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        501},
    {"te_gzip_chunked",
        RQ(POST_ECHO("3d") "Transfer-Encoding: gzip, "
                           "chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        501},
    {"te_leading_comma",
        RQ(POST_ECHO("3e") "Transfer-Encoding: "
                           ",chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        400},
    {"te_chunked_chunked",
        RQ(POST_ECHO("3f") "Transfer-Encoding: "
                           "chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        400},
    {"te_twice",
        RQ(POST_ECHO(
            "3g") "Transfer-Encoding: chunked\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        400},
    {"te_http10",
        RQ("POST /_fake/echo/3h HTTP/1.0\r\nHost: h\r\n"
           "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        400},
    /* 5. Line ends, folding, names and values. */
    {"bare_lf", RQ("GET /_fake/echo/5a HTTP/1.1\nHost: h\n\n"), 400},
    {"bare_lf_in_header", RQ(GET_ECHO("5b") "X-A: 1\nX-B: 2\r\n\r\n"), 400},
    {"bare_lf_ends_head", RQ(GET_ECHO("5c") "X-A: 1\r\n\n"), 400},
    {"bare_cr_request_line",
        RQ("GET /_fake/echo/5d HTTP/1.1\rHost: h"
           "\r\n\r\n"),
        400},
    {"obs_fold_space", RQ(GET_ECHO("5e") "X-A: 1\r\n 2\r\n\r\n"), 400},
    {"obs_fold_tab", RQ(GET_ECHO("5f") "X-A: 1\r\n\t2\r\n\r\n"), 400},
    {"space_before_first_header",
        RQ("GET /_fake/echo/5g HTTP/1.1\r\n"
           " Host: h\r\n\r\n"),
        400},
    {"space_in_name", RQ(GET_ECHO("5h") "X A: 1\r\n\r\n"), 400},
    {"space_before_colon", RQ(GET_ECHO("5i") "X-A : 1\r\n\r\n"), 400},
    {"ctl_in_name",
        RQ(GET_ECHO("5j") "X-\x01"
                          "A: 1\r\n\r\n"),
        400},
    {"del_in_name",
        RQ(GET_ECHO("5k") "X-\x7f"
                          "A: 1\r\n\r\n"),
        400},
    {"no_colon", RQ(GET_ECHO("5l") "NoColonHere\r\n\r\n"), 400},
    {"nul_in_value", RQ(GET_ECHO("5m") "X-A: a\0b\r\n\r\n"), 400},
    {"bare_cr_in_value", RQ(GET_ECHO("5n") "X-A: a\rb\r\n\r\n"), 400},
    {"esc_in_value",
        RQ(GET_ECHO("5o") "X-A: a\x1b"
                          "b\r\n\r\n"),
        400},
    /* 6. Host and versions. */
    {"http11_no_host", RQ("GET /_fake/echo/6a HTTP/1.1\r\n\r\n"), 400},
    {"two_hosts",
        RQ("GET /_fake/echo/6b HTTP/1.1\r\nHost: a\r\n"
           "Host: b\r\n\r\n"),
        400},
    {"two_equal_hosts",
        RQ("GET /_fake/echo/6c HTTP/1.1\r\nHost: h\r\n"
           "Host: h\r\n\r\n"),
        400},
    {"http10_two_hosts",
        RQ("GET /_fake/echo/6d HTTP/1.0\r\nHost: a\r\n"
           "Host: b\r\n\r\n"),
        400},
    {"http_2_0", RQ("GET /_fake/echo/6e HTTP/2.0\r\nHost: h\r\n\r\n"), 505},
    {"http_3_0", RQ("GET /_fake/echo/6f HTTP/3.0\r\nHost: h\r\n\r\n"), 505},
    /* 7. No fragment in a target (RFC 9112 3.2): curl would cut it, and
     * /ollama-pool#/metrics reached Ollama as /ollama-pool. */
    {"fragment_admin_prefix",
        RQ("GET /ollama-pool#/metrics HTTP/1.1\r\nHost: h\r\n\r\n"), 400},
    {"fragment", RQ("GET /_fake/echo/7a#x HTTP/1.1\r\nHost: h\r\n\r\n"), 400},
    {"fragment_after_query",
        RQ("GET /_fake/echo/7b?q=1#x HTTP/1.1\r\nHost: h\r\n\r\n"), 400},
    {"fragment_absolute_form",
        RQ("GET http://h/_fake/echo/7c#x HTTP/1.1\r\nHost: h\r\n\r\n"), 400},
};
#define N_HEAD_REFUSALS ((int)(sizeof head_refusals / sizeof head_refusals[0]))

/*
 * Each malformed head, written at once and byte by byte: the proxy's
 * error, the connection closed, nothing forwarded; and afterwards the
 * daemon is as it was.
 */
START_TEST(test_refused_heads)
{
	const struct refusal *rf;
	struct front f;
	int i, how;
	char *what;

	H_BEGIN();
	front_up(&f, "");
	for (i = 0; i < N_HEAD_REFUSALS; i++) {
		rf = &head_refusals[i];
		for (how = SEND_WHOLE; how <= SEND_BYTES; how++) {
			what = harness_strf(
			    "%s (%s)", rf->name, send_how_name[how]);
			refused_exchange(
			    &f, rf->req, rf->len, how, rf->status, what);
			front_nothing_forwarded(&f, what);
		}
	}
	front_intact(&f, 1, "after the refused heads");
}
END_TEST

/* What is lenient by the rules is served: equal Content-Lengths, chunk
 * extensions and trailers, "Chunked" in any case, a higher 1.x minor. */
START_TEST(test_accepted_framing)
{
	static const struct {
		const char *name;
		const char *req;
		size_t len;
		const char *body;
		const char *version;
	} ok[] = {
	    {"cl_twice_equal",
	        RQ(POST_ECHO("ok-cl2") "Content-Length: 5\r\n"
	                               "Content-Length: 5\r\n\r\nhello"),
	        "hello", "1.1"},
	    {"cl_list_equal",
	        RQ(POST_ECHO("ok-cll") "Content-Length: 5, 5"
	                               "\r\n\r\nhello"),
	        "hello", "1.1"},
	    {"chunk_extensions",
	        RQ(POST_ECHO(
	            "ok-ext") "Transfer-Encoding: "
	                      "chunked\r\n\r\n5;name=value\r\nhello\r\n"
	                      "6;a=\"q;x\";b\r\n world\r\n0;last\r\nX-Trailer: "
	                      "t\r\n\r\n"),
	        "hello world", "1.1"},
	    {"chunk_extensions_grammar",
	        RQ(POST_ECHO("ok-ext2") "Transfer-Encoding: chunked\r\n\r\n"
	                                "5 ; a = b\t;\tc\r\nhello\r\n"
	                                "6;q=\"x\\\"y; z=\\\\\"\r\n world\r\n"
	                                "0\r\nX-T: v\r\nX-Empty:\r\n\r\n"),
	        "hello world", "1.1"},
	    {"te_mixed_case",
	        RQ(POST_ECHO(
	            "ok-case") "transfer-encoding: "
	                       "Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
	        "hello", "1.1"},
	    {"http_1_9",
	        RQ("GET /_fake/echo/ok-19 HTTP/1.9\r\nHost: h\r\n"
	           "\r\n"),
	        "", "1.1"},
	};
	struct front f;
	char hex[65];
	const char *t;
	size_t i;
	cJSON *j;

	H_BEGIN();
	front_up(&f, "");
	for (i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		j = front_echo(&f, ok[i].req, ok[i].len, ok[i].name);
		harness_sha256_hex(ok[i].body, strlen(ok[i].body), hex);
		H_ASSERT(harness_jnum(j, "body_bytes") ==
		            (double)strlen(ok[i].body) &&
		        strcmp(harness_jstr(j, "body_sha256"), hex) == 0,
		    "%s: the upstream got a %.0f byte body, want \"%s\"",
		    ok[i].name, harness_jnum(j, "body_bytes"), ok[i].body);
		t = harness_jstr(j, "version");
		H_ASSERT(t != NULL && strcmp(t, ok[i].version) == 0,
		    "%s: forwarded as HTTP/%s, want %s", ok[i].name,
		    t ? t : "?", ok[i].version);
		/* The body is framed once, by the proxy. */
		H_ASSERT(echo_header(j, "Content-Length", NULL) +
		            echo_header(j, "Transfer-Encoding", NULL) ==
		        (ok[i].body[0] != '\0' ? 1u : 0u),
		    "%s: framing headers upstream: %s", ok[i].name,
		    echo_headers_text(j));
		H_ASSERT(echo_header(j, "X-Trailer", NULL) == 0,
		    "%s: a trailer became a header: %s", ok[i].name,
		    echo_headers_text(j));
		cJSON_Delete(j);
	}
	front_nothing_forwarded(&f, "the accepted requests, counted");
	front_intact(&f, 1, "after the accepted framings");
}
END_TEST

/* ---- 4: chunked bodies refused as they arrive --------------------------- */

static const struct refusal chunk_refusals[] = {
    {"chunk_size_0x", RQ("0x5\r\nhello\r\n0\r\n\r\n"), 400},
    {"chunk_size_plus", RQ("+5\r\nhello\r\n0\r\n\r\n"), 400},
    {"chunk_size_space", RQ(" 5\r\nhello\r\n0\r\n\r\n"), 400},
    {"chunk_size_17_digits", RQ("00000000000000005\r\nhello\r\n0\r\n\r\n"),
        400},
    {"chunk_size_over_2_64", RQ("10000000000000005\r\nhello\r\n0\r\n\r\n"),
        400},
    {"chunk_size_bare_lf", RQ("5\nhello\r\n0\r\n\r\n"), 400},
    /* The smuggling shape: data past its size read as a request. */
    {"chunk_data_longer", RQ("3\r\nabcdef\r\n0\r\n\r\n"), 400},
    {"chunk_data_holds_request", RQ("3\r\nabc" EVIL "\r\n0\r\n\r\n"), 400},
    {"chunk_data_bare_lf", RQ("5\r\nhello\n0\r\n\r\n"), 400},
    /* Chunk extensions by RFC 9112's grammar (7.1.1). */
    {"chunk_ext_no_value", RQ("5;a=\r\nhello\r\n0\r\n\r\n"), 400},
    {"chunk_ext_no_name", RQ("5;\r\nhello\r\n0\r\n\r\n"), 400},
    {"chunk_size_junk", RQ("5 junk\r\nhello\r\n0\r\n\r\n"), 400},
    {"chunk_ext_name_junk", RQ("5;a b\r\nhello\r\n0\r\n\r\n"), 400},
    {"chunk_ext_quote_open", RQ("5;a=\"x\r\nhello\r\n0\r\n\r\n"), 400},
    {"chunk_ext_ctl", RQ("5;a\x01\r\nhello\r\n0\r\n\r\n"), 400},
    {"chunk_ext_last_junk", RQ("5\r\nhello\r\n0 x\r\n\r\n"), 400},
    /* Trailers are field lines (7.1.2), though dropped. */
    {"trailer_name_space", RQ("5\r\nhello\r\n0\r\nBad Name: x\r\n\r\n"), 400},
    {"trailer_no_colon", RQ("5\r\nhello\r\n0\r\nNoColon\r\n\r\n"), 400},
    {"trailer_leading_space", RQ("5\r\nhello\r\n0\r\n lead: x\r\n\r\n"), 400},
    {"trailer_name_ctl", RQ("5\r\nhello\r\n0\r\nX\x01T: v\r\n\r\n"), 400},
    {"trailer_value_nul", RQ("5\r\nhello\r\n0\r\nX-T: a\0b\r\n\r\n"), 400},
};
#define N_CHUNK_REFUSALS                                                       \
	((int)(sizeof chunk_refusals / sizeof chunk_refusals[0]))

#define CHUNKED_HEAD(n)                                                        \
	"POST /_fake/echo/" n " HTTP/1.1\r\nHost: h\r\n"                       \
	"Transfer-Encoding: chunked\r\n\r\n"

/*
 * A chunked body streams on as it comes, so its head may be upstream
 * before a bad chunk arrives.  What is asserted: 400 and close; the
 * upstream completed no request and has none in progress (an upstream
 * transfer that was started is dropped, as a client going away).  The
 * third way of sending makes sure of that case: a good chunk first, the
 * bad one only once the upstream has the request.
 */
START_TEST(test_refused_chunks)
{
	static const char good[] = "5\r\nhello\r\n";
	const struct refusal *rf;
	struct fake_nums n, n0;
	struct http_resp r;
	struct http_conn c;
	struct harness_buf req = {NULL, 0, 0};
	struct front f;
	double deadline;
	int i, how;
	char *what;

	H_BEGIN();
	front_up(&f, "");
	for (i = 0; i < N_CHUNK_REFUSALS; i++) {
		rf = &chunk_refusals[i];
		for (how = SEND_WHOLE; how <= SEND_BYTES; how++) {
			what = harness_strf(
			    "%s (%s)", rf->name, send_how_name[how]);
			req.len = 0;
			harness_buf_addf(&req, CHUNKED_HEAD("%s"), rf->name);
			harness_buf_add(&req, rf->req, rf->len);
			refused_exchange(
			    &f, req.data, req.len, how, rf->status, what);
			front_nothing_delivered(&f, &n, what);
		}

		/* Split: the upstream has the head and a good chunk. */
		what = harness_strf(
		    "%s (after a good chunk went upstream)", rf->name);
		fake_nums(f.env.fake, &n0);
		req.len = 0;
		harness_buf_addf(&req, CHUNKED_HEAD("%s-split"), rf->name);
		harness_buf_add(&req, good, strlen(good));
		http_conn_open(&c, f.port);
		conn_send(&c, req.data, req.len, what);
		deadline = harness_now() + SETTLE_MS / 1000.0;
		do {
			H_ASSERT(harness_now() < deadline,
			    "%s: the head of a "
			    "chunked request did not reach the upstream",
			    what);
			poll(NULL, 0, 5);
			fake_nums(f.env.fake, &n);
		} while (n.active == 0);
		conn_send(&c, rf->req, rf->len, what);
		conn_response(&c, &r, what);
		assert_proxy_error(&r, rf->status, what);
		assert_closes(&c, &r, what);
		http_conn_close(&c);
		http_resp_free(&r);
		front_nothing_delivered(&f, &n, what);
		H_ASSERT(n.gone_body == n0.gone_body + 1,
		    "%s: the upstream "
		    "did not see its request abandoned mid-body",
		    what);
	}
	/* One chunk line's extensions are capped at 4 KiB. */
	req.len = 0;
	harness_buf_addf(&req, CHUNKED_HEAD("ext-cap") "5;a=");
	for (i = 0; i < 5000; i++)
		harness_buf_add(&req, "x", 1);
	harness_buf_addf(&req, "\r\nhello\r\n0\r\n\r\n");
	for (how = SEND_WHOLE; how <= SEND_BYTES; how++) {
		what = harness_strf(
		    "a 5004 byte chunk extension (%s)", send_how_name[how]);
		refused_exchange(&f, req.data, req.len, how, 400, what);
		front_nothing_delivered(&f, &n, what);
	}
	harness_buf_free(&req);
	/* Dropped transfers took their connections with them. */
	front_intact(&f, 0, "after the refused chunked bodies");
}
END_TEST

/* ---- 7: limits on the head ---------------------------------------------- */

static char *
big_header_request(const char *target, size_t value_len)
{
	struct harness_buf b = {NULL, 0, 0};
	char *v, *s;

	v = malloc(value_len + 1);
	H_CHECK(v != NULL);
	memset(v, 'v', value_len);
	v[value_len] = '\0';
	harness_buf_addf(
	    &b, "GET %s HTTP/1.1\r\nHost: h\r\nX-Big: %s\r\n\r\n", target, v);
	s = harness_strf("%s", b.data);
	harness_buf_free(&b);
	free(v);
	return s;
}

static char *
many_headers_request(const char *target, int nfields)
{
	struct harness_buf b = {NULL, 0, 0};
	char *s;
	int i;

	/* Host is one of the fields. */
	harness_buf_addf(&b, "GET %s HTTP/1.1\r\nHost: h\r\n", target);
	for (i = 1; i < nfields; i++)
		harness_buf_addf(&b, "X-H%03d: %d\r\n", i, i);
	harness_buf_addf(&b, "\r\n");
	s = harness_strf("%s", b.data);
	harness_buf_free(&b);
	return s;
}

static char *
long_target_request(size_t line_len)
{
	const char *pre = "GET /_fake/echo/", *post = " HTTP/1.1";
	size_t fill;
	char *t, *s;

	fill = line_len - strlen(pre) - strlen(post);
	t = malloc(fill + 1);
	H_CHECK(t != NULL);
	memset(t, 'a', fill);
	t[fill] = '\0';
	s = harness_strf("%s%s%s\r\nHost: h\r\n\r\n", pre, t, post);
	free(t);
	return s;
}

/*
 * Each limit is checked from both sides: just within it is served, just
 * beyond it is refused, so neither a missing limit nor a smaller one
 * passes.
 */
START_TEST(test_head_limits)
{
	struct harness_daemon *small;
	struct front f;
	char *req;
	const char *t;
	cJSON *j;
	int how;

	H_BEGIN();
	front_up(&f, "");

	/* max_headers: 100 fields served, 101 refused. */
	req = many_headers_request("/_fake/echo/100-fields", 100);
	j = front_echo(&f, req, strlen(req), "100 header fields");
	H_ASSERT(echo_header(j, "X-H099", NULL) == 1,
	    "100 header fields: "
	    "the last one did not arrive");
	cJSON_Delete(j);
	req = many_headers_request("/_fake/echo/101-fields", 101);
	for (how = SEND_WHOLE; how <= SEND_BYTES; how++) {
		refused_exchange(&f, req, strlen(req), how, 431,
		    harness_strf("101 header fields (%s)", send_how_name[how]));
		front_nothing_forwarded(&f, "101 header fields");
	}

	/* max_header_size, 32 KiB by default. */
	req = big_header_request("/_fake/echo/30k", 30000);
	j = front_echo(&f, req, strlen(req), "a 30 kB head");
	H_ASSERT(echo_header(j, "X-Big", &t) == 1 && strlen(t) == 30000,
	    "a 30 kB head: X-Big did not arrive whole");
	cJSON_Delete(j);
	req = big_header_request("/_fake/echo/33k", 33000);
	refused_exchange(&f, req, strlen(req), SEND_WHOLE, 431, "a 33 kB head");
	front_nothing_forwarded(&f, "a 33 kB head");
	/* Far beyond: the daemon must stop reading, not buffer it all. */
	req = big_header_request("/_fake/echo/1m", 1 << 20);
	refused_exchange(
	    &f, req, strlen(req), SEND_WHOLE, 431, "a 1 MiB header");
	front_nothing_forwarded(&f, "a 1 MiB header");

	/* The request line: 8 KiB. */
	req = long_target_request(8000);
	j = front_echo(&f, req, strlen(req), "an 8000 byte request line");
	t = harness_jstr(j, "target");
	H_ASSERT(t != NULL &&
	        strlen(t) == 8000 - strlen("GET ") - strlen(" HTTP/1.1"),
	    "an 8000 byte request line: the target "
	    "arrived cut");
	cJSON_Delete(j);
	req = long_target_request(9000);
	for (how = SEND_WHOLE; how <= SEND_BYTES; how++) {
		refused_exchange(&f, req, strlen(req), how, 414,
		    harness_strf(
		        "a 9000 byte request line (%s)", send_how_name[how]));
		front_nothing_forwarded(&f, "a 9000 byte request line");
	}
	front_intact(&f, 1, "after the head limits");

	/* The key is the daemon's, not a constant: 4k refuses a 5 kB head
	 * the default takes. */
	small = harness_daemon_start("[server]\nmax_header_size = 4k\n",
	    harness_upstream_of(f.env.fake), NULL);
	f.d = small;
	f.pid = small->proc.pid;
	f.port = small->port;
	/* Its start-up check's GET is one more on the fake. */
	f.requests = fake_stat(f.env.fake, "requests");
	req = big_header_request("/_fake/echo/3k", 3000);
	j = front_echo(&f, req, strlen(req), "max_header_size 4k: a 3 kB head");
	cJSON_Delete(j);
	req = big_header_request("/_fake/echo/5k", 5000);
	refused_exchange(&f, req, strlen(req), SEND_WHOLE, 431,
	    "max_header_size 4k: a 5 kB head");
	front_nothing_forwarded(&f, "max_header_size 4k: a 5 kB head");
}
END_TEST

/* ---- 8: max_body_size ---------------------------------------------------- */

/*
 * Sends a head alone and reads until the daemon closes: the answer must
 * come without the body, and (with Expect: 100-continue) without a
 * 100 Continue, which would invite the body the daemon refuses.
 */
static void
body_refused_before_reading(struct front *f, const char *head, const char *what)
{
	struct http_resp r;
	struct http_conn c;

	http_conn_open(&c, f->port);
	conn_send(&c, head, strlen(head), what);
	H_ASSERT(conn_read_to_eof(&c, IO_MS) == 0,
	    "%s: the daemon neither "
	    "answered nor closed without the body (%zu bytes so far: "
	    "%.200s)",
	    what, c.in.len, c.in.data ? c.in.data : "");
	H_ASSERT(c.in.len > 0, "%s: closed without an answer", what);
	H_ASSERT(memmem(c.in.data, c.in.len, " 100 ", 5) == NULL,
	    "%s: a 100 Continue invited the body: %.300s", what, c.in.data);
	H_ASSERT(strncmp(c.in.data, "HTTP/1.1 413 ", 13) == 0,
	    "%s: want 413 first: %.300s", what, c.in.data);
	conn_response(&c, &r, what);
	assert_proxy_error(&r, 413, what);
	H_ASSERT(http_header_get(&r, "Connection") != NULL &&
	        strcasecmp(http_header_get(&r, "Connection"), "close") == 0,
	    "%s: the answer lacks Connection: close", what);
	http_conn_close(&c);
	http_resp_free(&r);
	front_nothing_forwarded(f, what);
}

static char *
chunked_body_request(const char *name, size_t total, size_t piece)
{
	struct harness_buf b = {NULL, 0, 0};
	size_t off, n;
	char *data, *s;

	data = malloc(piece);
	H_CHECK(data != NULL);
	memset(data, 'b', piece);
	harness_buf_addf(&b, CHUNKED_HEAD("%s"), name);
	for (off = 0; off < total; off += n) {
		n = total - off < piece ? total - off : piece;
		harness_buf_addf(&b, "%zx\r\n", n);
		harness_buf_add(&b, data, n);
		harness_buf_add(&b, "\r\n", 2);
	}
	harness_buf_addf(&b, "0\r\n\r\n");
	s = harness_strf("%s", b.data);
	harness_buf_free(&b);
	free(data);
	return s;
}

/* n chunks of size bytes each, every chunk line carrying ext. */
static const char *
chunks_with_ext(int n, size_t size, const char *ext)
{
	struct harness_buf b = {NULL, 0, 0};
	const char *s;
	size_t k;
	int i;

	for (i = 0; i < n; i++) {
		harness_buf_addf(&b, "%zx%s\r\n", size, ext);
		for (k = 0; k < size; k++)
			harness_buf_add(&b, "e", 1);
		harness_buf_add(&b, "\r\n", 2);
	}
	s = harness_strf("%s", b.data);
	harness_buf_free(&b);
	return s;
}

START_TEST(test_body_limit)
{
	struct fake_nums n, n0;
	struct http_resp r;
	struct http_conn c;
	struct front f;
	char body[1001], *req;
	const char *what;
	double deadline;
	cJSON *j;
	int how;

	H_BEGIN();
	front_up(&f, "[server]\nmax_body_size = 1000\n");
	memset(body, 'b', sizeof body);

	/* Declared too big: 413 from the head alone, with and without
	 * Expect: 100-continue. */
	body_refused_before_reading(&f,
	    POST_ECHO("cl5000") "Content-Length: 5000\r\nExpect: "
	                        "100-continue\r\n\r\n",
	    "Content-Length 5000 with Expect: 100-continue");
	body_refused_before_reading(&f,
	    POST_ECHO("cl5000b") "Content-Length: 5000\r\n\r\n",
	    "Content-Length 5000");
	body_refused_before_reading(&f,
	    POST_ECHO("cl1001") "Content-Length: 1001\r\nExpect: "
	                        "100-continue\r\n\r\n",
	    "Content-Length 1001 with Expect: 100-continue");

	/* Within the limit the same request is invited and served, so the
	 * missing 100 Continue above was the limit's doing. */
	http_conn_open(&c, f.port);
	conn_send(&c,
	    RQ(POST_ECHO("cl1000") "Content-Length: 1000\r\n"
	                           "Expect: 100-continue\r\n\r\n"),
	    "Content-Length 1000");
	H_ASSERT(conn_wait_head(&c, IO_MS) == 0 &&
	        strncmp(c.in.data, "HTTP/1.1 100 ", 13) == 0,
	    "Content-Length 1000 with Expect: want 100 Continue, got %.200s",
	    c.in.data ? c.in.data : "nothing");
	conn_send(&c, body, 1000, "Content-Length 1000");
	conn_response(&c, &r, "Content-Length 1000");
	H_ASSERT(r.status == 200, "Content-Length 1000: status %ld: %.300s",
	    r.status, r.body.data);
	j = harness_json(&r, "Content-Length 1000");
	H_ASSERT_INT_EQ(harness_jnum(j, "body_bytes"), 1000);
	cJSON_Delete(j);
	http_conn_close(&c);
	http_resp_free(&r);
	f.requests++;
	f.delivered++;

	req = chunked_body_request("chunked1000", 1000, 300);
	j = front_echo(&f, req, strlen(req), "a chunked body of 1000 bytes");
	H_ASSERT_INT_EQ(harness_jnum(j, "body_bytes"), 1000);
	cJSON_Delete(j);
	front_nothing_forwarded(&f, "the bodies within the limit, counted");
	front_intact(&f, 1, "after the declared bodies");

	/* Chunk extensions count towards the limit: 100 bytes of data
	 * with 40 of extensions are served, with about 970 refused. */
	req = harness_strf(CHUNKED_HEAD("ext-small") "%s0\r\n\r\n",
	    chunks_with_ext(10, 10, ";a=b"));
	j = front_echo(
	    &f, req, strlen(req), "chunk extensions within the limit");
	H_ASSERT_INT_EQ(harness_jnum(j, "body_bytes"), 100);
	cJSON_Delete(j);
	front_nothing_forwarded(&f, "chunk extensions within the limit");
	req = harness_strf(CHUNKED_HEAD("ext-big") "%s0\r\n\r\n",
	    chunks_with_ext(10, 10,
	        ";ext=\"0123456789012345678901234567890123456789"
	        "01234567890123456789012345678901234567890123456789\""));
	for (how = SEND_WHOLE; how <= SEND_BYTES; how++) {
		what = harness_strf(
		    "chunk extensions past the limit (%s)", send_how_name[how]);
		refused_exchange(&f, req, strlen(req), how, 413, what);
		front_nothing_delivered(&f, &n, what);
	}
	front_intact(&f, 0, "after the chunk extensions past the limit");

	/* A chunked body growing past the limit: 413 and close.  The head
	 * may have gone upstream (the body streams); asserted is that the
	 * upstream completed nothing and is left with nothing. */
	req = chunked_body_request("chunked1001", 1001, 300);
	for (how = SEND_WHOLE; how <= SEND_BYTES; how++) {
		what = harness_strf(
		    "a chunked body of 1001 bytes (%s)", send_how_name[how]);
		refused_exchange(&f, req, strlen(req), how, 413, what);
		front_nothing_delivered(&f, &n, what);
	}

	/* And once the upstream has the request for sure: its transfer is
	 * dropped mid-body. */
	fake_nums(f.env.fake, &n0);
	http_conn_open(&c, f.port);
	req = chunked_body_request("chunked-split", 600, 600);
	/* The head and the first chunk, not the terminating one. */
	conn_send(&c, req, strlen(req) - strlen("0\r\n\r\n"),
	    "a chunked body growing past the limit");
	deadline = harness_now() + SETTLE_MS / 1000.0;
	do {
		H_ASSERT(harness_now() < deadline,
		    "the head of a chunked "
		    "request did not reach the upstream");
		poll(NULL, 0, 5);
		fake_nums(f.env.fake, &n);
	} while (n.active == 0);
	conn_send(&c, RQ("258\r\n"), "a chunked body growing past the limit");
	conn_send(&c, body, 600, "a chunked body growing past the limit");
	conn_response(&c, &r, "a chunked body growing past the limit");
	assert_proxy_error(&r, 413, "a chunked body growing past the limit");
	assert_closes(&c, &r, "a chunked body growing past the limit");
	http_conn_close(&c);
	http_resp_free(&r);
	front_nothing_delivered(&f, &n,
	    "a chunked body growing past the "
	    "limit");
	H_ASSERT(n.gone_body == n0.gone_body + 1,
	    "a chunked body growing "
	    "past the limit: the upstream did not see its request abandoned "
	    "mid-body");
	front_intact(&f, 0, "after the chunked bodies past the limit");
}
END_TEST

/* ---- 9: header and body timeouts ----------------------------------------- */

START_TEST(test_timeouts)
{
	static const char trickle[] = "GET /_fake/echo/trickle HTTP/1.1\r\n"
	                              "Host: h\r\nX-Slow: ";
	struct fake_nums n, n0;
	struct pollfd pfd;
	struct http_resp r;
	struct http_conn c;
	struct front f;
	double t0, took;
	size_t i;
	cJSON *j;

	H_BEGIN();
	front_up(&f, "[server]\nheader_timeout = 0.5\nbody_timeout = 0.5\n");

	/*
	 * A byte every 100 ms: no gap ever reaches header_timeout, so only
	 * an absolute deadline for the head ends this.  The pacing is the
	 * test's traffic; the wait between bytes is a poll for the answer.
	 */
	http_conn_open(&c, f.port);
	t0 = harness_now();
	for (i = 0;; i++) {
		H_ASSERT(harness_now() - t0 < 10.0,
		    "headers trickled for "
		    "10 s without a 408: header_timeout is not absolute");
		if (http_conn_send(&c, i < strlen(trickle) ? trickle + i : "a",
		        1, IO_MS) != 0)
			break; /* answered and closed */
		pfd.fd = c.fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		if (poll(&pfd, 1, 100) > 0)
			break;
	}
	conn_response(&c, &r, "trickled headers");
	took = harness_now() - t0;
	assert_proxy_error(&r, 408, "trickled headers");
	assert_closes(&c, &r, "trickled headers");
	H_ASSERT(took >= 0.4 && took < 5.0,
	    "trickled headers: 408 after "
	    "%.2f s, header_timeout is 0.5",
	    took);
	http_conn_close(&c);
	http_resp_free(&r);
	front_nothing_forwarded(&f, "trickled headers");

	/* A body that stops: 408 at body_timeout, and the upstream transfer
	 * that carried its first bytes is dropped. */
	fake_nums(f.env.fake, &n0);
	http_conn_open(&c, f.port);
	conn_send(&c,
	    RQ(POST_ECHO("stall") "Content-Length: 100\r\n\r\n"
	                          "0123456789"),
	    "a stalled body");
	t0 = harness_now();
	conn_response(&c, &r, "a stalled body");
	took = harness_now() - t0;
	assert_proxy_error(&r, 408, "a stalled body");
	assert_closes(&c, &r, "a stalled body");
	H_ASSERT(took >= 0.4 && took < 5.0,
	    "a stalled body: 408 after %.2f s, "
	    "body_timeout is 0.5",
	    took);
	http_conn_close(&c);
	http_resp_free(&r);
	front_nothing_delivered(&f, &n, "a stalled body");
	H_ASSERT(n.requests == n0.requests || n.gone_body == n0.gone_body + 1,
	    "a stalled body: the upstream got the request but did not see "
	    "it abandoned mid-body");

	/* A body that keeps coming, slower in all than body_timeout but
	 * never stalling that long, is served: the timeout is for stalls. */
	http_conn_open(&c, f.port);
	conn_send(&c, RQ(POST_ECHO("steady") "Content-Length: 15\r\n\r\n"),
	    "a slow steady body");
	for (i = 0; i < 15; i++) {
		pfd.fd = c.fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		H_ASSERT(poll(&pfd, 1, 100) == 0,
		    "a slow steady body: "
		    "answered after %zu of 15 bytes",
		    i);
		conn_send(&c, "x", 1, "a slow steady body");
	}
	conn_response(&c, &r, "a slow steady body");
	H_ASSERT(r.status == 200,
	    "a slow steady body (1.5 s, a byte every "
	    "0.1 s): status %ld: %.300s",
	    r.status, r.body.data);
	j = harness_json(&r, "a slow steady body");
	H_ASSERT_INT_EQ(harness_jnum(j, "body_bytes"), 15);
	cJSON_Delete(j);
	http_conn_close(&c);
	http_resp_free(&r);
	f.requests++;
	f.delivered++;
	front_intact(&f, 0, "after the timeouts");
}
END_TEST

/* ---- 10: methods and Upgrade --------------------------------------------- */

/*
 * The upstream's easy handles are reused and only the options one request
 * set are undone, not all of curl's (upstream.c): nothing of a request may
 * reach the next one on the same handle, which one request after another
 * gets.  Each first request leaves its mark (a HEAD's no-body, a method, a
 * body to read, a health probe's User-Agent and timeout); the plain GET
 * after it must reach the upstream as a plain GET.
 */
static const struct reuse_case {
	const char *name;
	const char *first;
	int first_head; /* its answer has no body */
} reuse_cases[] = {
    {"after_head", "HEAD /_fake/echo/1 HTTP/1.1\r\nHost: h\r\n\r\n", 1},
    {"after_delete", "DELETE /_fake/echo/1 HTTP/1.1\r\nHost: h\r\n\r\n", 0},
    {"after_options", "OPTIONS /_fake/echo/1 HTTP/1.1\r\nHost: h\r\n\r\n", 0},
    {"after_post",
        "POST /_fake/echo/1 HTTP/1.1\r\nHost: h\r\n"
        "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
        0},
    {"after_put_chunked",
        "PUT /_fake/echo/1 HTTP/1.1\r\nHost: h\r\n"
        "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        0},
    {"after_patch",
        "PATCH /_fake/echo/1 HTTP/1.1\r\nHost: h\r\n"
        "Content-Length: 5\r\n\r\nhello",
        0},
    {"after_health_probe",
        "GET /ollama-pool/health HTTP/1.1\r\nHost: h\r\n\r\n", 0},
};

START_TEST(test_handle_reuse)
{
	const struct reuse_case *tc = &reuse_cases[_i];
	static const char get[] =
	    "GET /_fake/echo/2 HTTP/1.1\r\nHost: h\r\n\r\n";
	struct http_resp r;
	struct http_conn c;
	struct front f;
	long long before;
	cJSON *j;

	harness_begin(harness_strf("handle_reuse_%s", tc->name));
	front_up(&f, "");
	http_conn_open(&c, f.port);
	before = fake_stat(f.env.fake, "requests");
	conn_send(&c, tc->first, strlen(tc->first), tc->name);
	H_ASSERT(http_conn_read_response(&c, tc->first_head, IO_MS, &r) == 0 &&
	        r.status == 200,
	    "%s: the first request: %ld %s", tc->name, r.status, r.error);
	http_resp_free(&r);
	/* The health probe too went upstream, on a handle of the pool. */
	H_ASSERT_INT_EQ(fake_stat(f.env.fake, "requests"), before + 1);
	conn_send(&c, get, strlen(get), tc->name);
	conn_response(&c, &r, tc->name);
	H_ASSERT(r.status == 200, "%s: the GET after it answered %ld: %.300s",
	    tc->name, r.status, r.body.data);
	j = harness_json(&r, tc->name);
	H_ASSERT_STR_EQ(harness_jstr(j, "method"), "GET");
	H_ASSERT_STR_EQ(harness_jstr(j, "target"), "/_fake/echo/2");
	H_ASSERT_INT_EQ(harness_jnum(j, "body_bytes"), 0);
	H_ASSERT(echo_header(j, "Content-Length", NULL) +
	            echo_header(j, "Transfer-Encoding", NULL) +
	            echo_header(j, "Content-Type", NULL) +
	            echo_header(j, "User-Agent", NULL) ==
	        0,
	    "%s: the GET carried a header of the request before: %s", tc->name,
	    echo_headers_text(j));
	cJSON_Delete(j);
	http_resp_free(&r);
	http_conn_close(&c);
}
END_TEST

START_TEST(test_methods_and_upgrade)
{
	static const struct refusal refused[] = {
	    {"CONNECT origin-form",
	        RQ("CONNECT /_fake/echo/connect "
	           "HTTP/1.1\r\nHost: h\r\n\r\n"),
	        405},
	    {"TRACE",
	        RQ("TRACE /_fake/echo/trace HTTP/1.1\r\nHost: h\r\n"
	           "\r\n"),
	        405},
	};
	static const struct {
		const char *name;
		const char *req;
		size_t len;
		const char *gone[4]; /* headers that must not pass */
	} upgrades[] = {
	    {"websocket",
	        RQ(GET_ECHO(
	            "ws") "Upgrade: websocket\r\n"
	                  "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
	                  "Sec-WebSocket-Key: "
	                  "dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"),
	        {"Upgrade", "Connection", NULL}},
	    {"h2c",
	        RQ(GET_ECHO(
	            "h2c") "Connection: Upgrade, "
	                   "HTTP2-Settings\r\nUpgrade: h2c\r\n"
	                   "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"),
	        {"Upgrade", "Connection", "HTTP2-Settings", NULL}},
	    {"websocket, Connection not naming it",
	        RQ(GET_ECHO("ws2") "Upgrade: websocket\r\nConnection: "
	                           "keep-alive\r\n\r\n"),
	        {"Upgrade", "Connection", NULL}},
	    {"h2c, no Connection",
	        RQ(GET_ECHO("h2c2") "Upgrade: h2c\r\n"
	                            "\r\n"),
	        {"Upgrade", NULL}},
	    {"h2c_post",
	        RQ(POST_ECHO(
	            "h2c-post") "Upgrade: h2c\r\n"
	                        "Connection: Upgrade\r\nContent-Length: "
	                        "5\r\n\r\nhello"),
	        {"Upgrade", "Connection", NULL}},
	};
	struct http_resp r;
	struct http_conn c;
	struct front f;
	size_t i, k;
	cJSON *j;

	H_BEGIN();
	front_up(&f, "");
	for (i = 0; i < sizeof refused / sizeof refused[0]; i++) {
		http_conn_open(&c, f.port);
		conn_send(&c, refused[i].req, refused[i].len, refused[i].name);
		conn_response(&c, &r, refused[i].name);
		assert_proxy_error(&r, refused[i].status, refused[i].name);
		http_conn_close(&c);
		http_resp_free(&r);
		front_nothing_forwarded(&f, refused[i].name);
	}

	/* A refused TRACE's body is skipped, never read as a request. */
	early_answer_body(&f, "TRACE", "", 405, 0, "TRACE with a body");
	early_answer_body(&f, "TRACE", "", 405, 1,
	    "TRACE with a body sent "
	    "after the answer");

	/* Upgrade: served as plain HTTP/1.1, the upgrade not passed on, and
	 * the connection still speaks HTTP/1.1 afterwards. */
	for (i = 0; i < sizeof upgrades / sizeof upgrades[0]; i++) {
		http_conn_open(&c, f.port);
		conn_send(
		    &c, upgrades[i].req, upgrades[i].len, upgrades[i].name);
		conn_response(&c, &r, upgrades[i].name);
		H_ASSERT(r.status == 200,
		    "Upgrade %s: status %ld (101 would "
		    "hand the connection over): %.300s",
		    upgrades[i].name, r.status, r.head.data);
		H_ASSERT(http_header_get(&r, "Upgrade") == NULL,
		    "Upgrade %s: the answer offers an upgrade: %.300s",
		    upgrades[i].name, r.head.data);
		j = harness_json(&r, upgrades[i].name);
		for (k = 0; upgrades[i].gone[k] != NULL; k++)
			H_ASSERT(echo_header(j, upgrades[i].gone[k], NULL) == 0,
			    "Upgrade %s: %s was passed on: %s",
			    upgrades[i].name, upgrades[i].gone[k],
			    echo_headers_text(j));
		cJSON_Delete(j);
		http_resp_free(&r);
		conn_send(
		    &c, RQ(GET_ECHO("after-upgrade") "\r\n"), upgrades[i].name);
		conn_response(
		    &c, &r, harness_strf("after Upgrade %s", upgrades[i].name));
		H_ASSERT(r.status == 200, "after Upgrade %s: status %ld",
		    upgrades[i].name, r.status);
		http_resp_free(&r);
		http_conn_close(&c);
		f.requests += 2;
		f.delivered += 2;
	}
	front_nothing_forwarded(&f, "the upgrades, counted");
	front_intact(&f, 1, "after the methods and upgrades");
}
END_TEST

/*
 * CONNECT as clients send it, with an authority-form target: the method
 * is what is refused (405), whatever its target.  On its own, so that its
 * answer does not hide the other methods' checks.
 */
START_TEST(test_connect_authority_form)
{
	struct http_resp r;
	struct http_conn c;
	struct front f;

	H_BEGIN();
	front_up(&f, "");
	http_conn_open(&c, f.port);
	conn_send(&c,
	    RQ("CONNECT other.host:443 HTTP/1.1\r\n"
	       "Host: other.host:443\r\n\r\n"),
	    "CONNECT authority-form");
	conn_response(&c, &r, "CONNECT authority-form");
	http_conn_close(&c);
	front_nothing_forwarded(&f, "CONNECT authority-form");
	assert_proxy_error(&r, 405, "CONNECT other.host:443");
	http_resp_free(&r);
	front_intact(&f, 1, "after CONNECT");
}
END_TEST

/* ---- 11, 12: where requests go, and their Host --------------------------- */

START_TEST(test_absolute_form)
{
	struct harness_fake *other;
	struct fake_nums n;
	struct front f;
	const char *host, *t, *want_host, *req;
	cJSON *j;
	size_t i;
	struct {
		const char *target;
		const char *path;
	} cases[3];
	static const struct {
		const char *target;
		const char *path;
	} bare[] = {
	    {"http://x?a=1", "/?a=1"},
	    {"HTTP://x?a=%2F&b=/c?d", "/?a=%2F&b=/c?d"},
	    {"http://x", "/"},
	};
	struct http_resp r;
	struct http_conn c;

	H_BEGIN();
	front_up(&f, "");
	/* A host that exists: an open proxy would reach it. */
	other = fake_start("other", NULL, NULL);
	want_host = harness_strf("127.0.0.1:%d", f.env.fake->port);
	cases[0].target = "http://other.host:1234/_fake/echo/abs?q=1";
	cases[0].path = "/_fake/echo/abs?q=1";
	cases[1].target =
	    harness_strf("http://127.0.0.1:%d/_fake/echo/abs2", other->port);
	cases[1].path = "/_fake/echo/abs2";
	cases[2].target =
	    harness_strf("https://127.0.0.1:%d/_fake/echo/abs3", other->port);
	cases[2].path = "/_fake/echo/abs3";
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		req = harness_strf("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
		                   "\r\n",
		    cases[i].target, other->port);
		j = front_echo(&f, req, strlen(req), cases[i].target);
		t = harness_jstr(j, "target");
		H_ASSERT(t != NULL && strcmp(t, cases[i].path) == 0,
		    "%s arrived as %s, want %s", cases[i].target,
		    t ? t : "(none)", cases[i].path);
		H_ASSERT(echo_header(j, "Host", &host) == 1 &&
		        strcmp(host, want_host) == 0,
		    "%s: Host upstream: %s, "
		    "want only %s",
		    cases[i].target, echo_headers_text(j), want_host);
		cJSON_Delete(j);
	}
	/* No path: "/", the query kept byte for byte (it was lost). */
	for (i = 0; i < sizeof bare / sizeof bare[0]; i++) {
		req = harness_strf(
		    "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", bare[i].target);
		http_conn_open(&c, f.port);
		conn_send(&c, req, strlen(req), bare[i].target);
		conn_response(&c, &r, bare[i].target);
		http_conn_close(&c);
		H_ASSERT(r.status == 200, "%s: status %ld: %.300s",
		    bare[i].target, r.status, r.body.data);
		http_resp_free(&r);
		f.requests++;
		f.delivered++;
		j = fake_stats(f.env.fake);
		t = harness_jstr(j, "last_request_target");
		H_ASSERT(t != NULL && strcmp(t, bare[i].path) == 0,
		    "%s arrived as %s, want %s", bare[i].target,
		    t ? t : "(none)", bare[i].path);
		cJSON_Delete(j);
	}
	/* The one connection it accepted is the one asking it. */
	H_ASSERT(fake_stat(other, "connections_accepted") == 1,
	    "the host named in an absolute-form target was connected to");
	fake_nums(other, &n);
	H_ASSERT(n.requests == 0,
	    "the host named in an absolute-form "
	    "target received %lld request(s): an open proxy",
	    n.requests);
	front_nothing_forwarded(&f, "absolute form, counted");
	front_intact(&f, 1, "after the absolute-form targets");
}
END_TEST

START_TEST(test_host_is_upstreams)
{
	static const struct {
		const char *name;
		const char *req;
		size_t len;
		int closes;
	} cases[] = {
	    {"Connection: Host",
	        RQ(GET_ECHO("conn-host") "Connection: Host"
	                                 "\r\nX-Before: 1\r\n\r\n"),
	        0},
	    {"Connection: close, host",
	        RQ("GET /_fake/echo/close-host "
	           "HTTP/1.1\r\nHost: evil\r\nConnection: close, host\r\n\r\n"),
	        1},
	    {"Host named twice in Connection",
	        RQ("GET /_fake/echo/hh "
	           "HTTP/1.1\r\nConnection: host\r\nhost: evil\r\n"
	           "Connection: HOST, keep-alive\r\n\r\n"),
	        0},
	    {"HTTP/1.0 with Host",
	        RQ("GET /_fake/echo/10-host HTTP/1.0\r\n"
	           "Host: evil\r\nConnection: Host\r\n\r\n"),
	        1},
	    {"HTTP/1.0 without Host",
	        RQ("GET /_fake/echo/10-nohost "
	           "HTTP/1.0\r\n\r\n"),
	        1},
	};
	struct http_resp r;
	struct http_conn c;
	struct front f;
	const char *host, *want_host;
	size_t i;
	cJSON *j;

	H_BEGIN();
	front_up(&f, "");
	want_host = harness_strf("127.0.0.1:%d", f.env.fake->port);
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		http_conn_open(&c, f.port);
		conn_send(&c, cases[i].req, cases[i].len, cases[i].name);
		conn_response(&c, &r, cases[i].name);
		H_ASSERT(r.status == 200, "%s: status %ld: %.300s",
		    cases[i].name, r.status, r.body.data);
		j = harness_json(&r, cases[i].name);
		H_ASSERT(echo_header(j, "Host", &host) == 1 &&
		        strcmp(host, want_host) == 0,
		    "%s: the upstream got %s, "
		    "want exactly one Host: %s",
		    cases[i].name, echo_headers_text(j), want_host);
		H_ASSERT(echo_header(j, "Connection", NULL) == 0,
		    "%s: Connection was passed on: %s", cases[i].name,
		    echo_headers_text(j));
		cJSON_Delete(j);
		if (cases[i].closes)
			H_ASSERT(http_conn_wait_closed(&c, IO_MS) == 1,
			    "%s: the connection stayed open", cases[i].name);
		http_conn_close(&c);
		http_resp_free(&r);
		f.requests++;
		f.delivered++;
	}
	front_nothing_forwarded(&f, "Host cases, counted");
	front_intact(&f, 1, "after the Host cases");
}
END_TEST

/* ---- 13: pipelining with a body that looks like a request ---------------- */

START_TEST(test_pipelined_body_not_a_request)
{
	struct harness_buf b = {NULL, 0, 0};
	struct http_resp r;
	struct http_conn c;
	struct front f;
	struct fake_nums n;
	char hex[65];
	const char *t, *names[3];
	int variant;
	cJSON *j;

	H_BEGIN();
	front_up(&f, "");
	harness_sha256_hex(EVIL, strlen(EVIL), hex);
	for (variant = 0; variant < 2; variant++) {
		b.len = 0;
		if (variant == 0)
			harness_buf_addf(&b,
			    POST_ECHO("one") "Content-Length: "
			                     "%zu\r\n\r\n%s",
			    strlen(EVIL), EVIL);
		else
			harness_buf_addf(&b,
			    POST_ECHO(
			        "one") "Transfer-Encoding: "
			               "chunked\r\n\r\n%zx\r\n%s\r\n0\r\n\r\n",
			    strlen(EVIL), EVIL);
		harness_buf_addf(&b, GET_ECHO("two") "\r\n");
		names[0] =
		    variant == 0 ? "Content-Length body" : "chunked body";
		http_conn_open(&c, f.port);
		conn_send(&c, b.data, b.len, names[0]);

		conn_response(&c, &r, names[0]);
		H_ASSERT(r.status == 200, "%s: first status %ld", names[0],
		    r.status);
		j = harness_json(&r, names[0]);
		t = harness_jstr(j, "target");
		H_ASSERT(t != NULL && strcmp(t, "/_fake/echo/one") == 0,
		    "%s: the first answer is for %s", names[0],
		    t ? t : "(none)");
		H_ASSERT(
		    harness_jnum(j, "body_bytes") == (double)strlen(EVIL) &&
		        strcmp(harness_jstr(j, "body_sha256"), hex) == 0,
		    "%s: the body did not reach the upstream as the body",
		    names[0]);
		cJSON_Delete(j);
		http_resp_free(&r);

		conn_response(&c, &r, "the pipelined GET");
		j = harness_json(&r, "the pipelined GET");
		t = harness_jstr(j, "target");
		H_ASSERT(r.status == 200 && t != NULL &&
		        strcmp(t, "/_fake/echo/two") == 0,
		    "%s: the second answer "
		    "is %ld for %s, want the pipelined GET",
		    names[0], r.status, t ? t : "(none)");
		cJSON_Delete(j);
		http_resp_free(&r);

		/* Nothing else was queued on the connection: the next
		 * answer is for the next request. */
		conn_send(&c, RQ(GET_ECHO("three") "\r\n"), "a third request");
		conn_response(&c, &r, "a third request");
		j = harness_json(&r, "a third request");
		t = harness_jstr(j, "target");
		H_ASSERT(t != NULL && strcmp(t, "/_fake/echo/three") == 0,
		    "%s: after two answers came one for %s, not the third "
		    "request",
		    names[0], t ? t : "(none)");
		cJSON_Delete(j);
		http_resp_free(&r);
		http_conn_close(&c);

		f.requests += 3;
		f.delivered += 3;
		fake_nums(f.env.fake, &n);
		H_ASSERT(n.requests == f.requests,
		    "%s: the upstream counted "
		    "%lld requests for 3 sent: the body was read as a request",
		    names[0], n.requests - (f.requests - 3));
	}
	harness_buf_free(&b);
	front_intact(&f, 1, "after the pipelined requests");
}
END_TEST

/* ---- 14: out of descriptors, and max_clients ----------------------------- */

static const char version_req[] =
    "GET /api/version HTTP/1.1\r\nHost: h\r\n\r\n";

/* A kept-alive request on an open connection: 200, or the test fails. */
static void
conn_version(struct front *f, struct http_conn *c, const char *what)
{
	struct http_resp r;

	f->requests++;
	f->delivered++;
	conn_send(c, version_req, strlen(version_req), what);
	conn_response(c, &r, what);
	H_ASSERT(r.status == 200, "%s: status %ld: %.300s", what, r.status,
	    r.body.data);
	http_resp_free(&r);
}

#define FD_CONNS 64

/*
 * The daemon's descriptor limit is lowered while it runs (prlimit(2) on
 * its pid), to a few above what it holds, so that connections run it out.
 * It must then stop accepting instead of spinning on EMFILE, serve the
 * connections it has (over its pooled upstream connection, which needs no
 * new descriptor), and take the waiting connection once one closes.
 */
/*
 * A pooled upstream connection stays registered for reading while it
 * waits idle in curl's cache (upstream.c): when the upstream closes it
 * then, the daemon must stop watching it, not wake up for its readable
 * end over and over; and the next request still gets an answer.
 */
START_TEST(test_idle_upstream_close_no_spin)
{
	struct http_resp r;
	struct front f;
	long long cpu0, cpu1;
	long hz = sysconf(_SC_CLK_TCK);

	H_BEGIN();
	front_up(&f, "[retry]\nretries = 0\n");
	fake_stop(f.env.fake); /* closes the idle pooled connection */
	f.env.fake = NULL;
	cpu0 = proc_cpu_ticks(f.pid);
	poll(NULL, 0, 1000); /* a window to measure, not a wait for */
	cpu1 = proc_cpu_ticks(f.pid);
	H_ASSERT((cpu1 - cpu0) * 1000 / hz <= 200,
	    "with its idle upstream connection closed by the upstream, the "
	    "daemon used %lld ms of CPU in one second: it spins on it",
	    (cpu1 - cpu0) * 1000 / hz);
	http_get(harness_daemon_url(f.d, "/api/version"), &r);
	H_ASSERT(r.ok && r.status == 502,
	    "after the upstream went: %ld %s, want 502", r.status, r.error);
	http_resp_free(&r);
}
END_TEST

START_TEST(test_descriptor_limit)
{
	struct http_conn c[FD_CONNS];
	struct rlimit rl;
	struct front f;
	struct pollfd pfd;
	long long cpu0, cpu1, hz;
	double deadline;
	int i, k, nconn, stuck = -1, emfile0, fds, limit;
	const char *emfile = "Too many open files";

	H_BEGIN();
	front_up(&f, "");
	limit = f.fds + 6;
	rl.rlim_cur = rl.rlim_max = (rlim_t)limit;
	H_ASSERT(prlimit(f.pid, RLIMIT_NOFILE, &rl, NULL) == 0,
	    "prlimit on the daemon: %s", strerror(errno));

	/* Open connections one by one, each making a request, until one is
	 * left waiting: the daemon then holds every descriptor it may and
	 * has said accept failed since that connection was made. */
	for (nconn = 0; nconn < FD_CONNS && stuck < 0; nconn++) {
		emfile0 = log_count(&f.d->proc, emfile);
		http_conn_open(&c[nconn], f.port);
		conn_send(&c[nconn], version_req, strlen(version_req),
		    "a connection toward the limit");
		deadline = harness_now() + IO_MS / 1000.0;
		for (;;) {
			if (http_conn_wait_readable(&c[nconn], 20)) {
				struct http_resp r;

				conn_response(&c[nconn], &r,
				    harness_strf(
				        "connection %d below the limit",
				        nconn));
				H_ASSERT(r.status == 200, "connection %d: %ld",
				    nconn, r.status);
				http_resp_free(&r);
				f.requests++;
				f.delivered++;
				break;
			}
			fds = harness_proc_fd_count(f.pid);
			if (fds >= limit &&
			    log_count(&f.d->proc, emfile) > emfile0) {
				stuck = nconn;
				break;
			}
			H_ASSERT(harness_now() < deadline,
			    "connection %d got "
			    "no answer in %d ms, but the daemon holds %d of %d "
			    "descriptors and logged no EMFILE",
			    nconn, IO_MS, fds, limit);
		}
	}
	H_ASSERT(stuck >= 0,
	    "%d connections all served under a limit of %d "
	    "descriptors",
	    FD_CONNS, limit);
	H_ASSERT(stuck >= 3,
	    "only %d connection(s) served before running "
	    "out of %d descriptors (%d at rest)",
	    stuck, limit, f.fds);

	/* Out of descriptors, for a second: the waiting connection gets no
	 * answer, and the daemon does not spin on its listening socket. */
	hz = sysconf(_SC_CLK_TCK);
	cpu0 = proc_cpu_ticks(f.pid);
	pfd.fd = c[stuck].fd;
	pfd.events = POLLIN;
	pfd.revents = 0;
	H_ASSERT(poll(&pfd, 1, 1000) == 0,
	    "the connection beyond the limit "
	    "was answered (or closed) while the daemon had no descriptor "
	    "for it");
	cpu1 = proc_cpu_ticks(f.pid);
	H_ASSERT((cpu1 - cpu0) * 1000 / hz <= 200,
	    "out of descriptors, the "
	    "daemon used %lld ms of CPU in one second: it spins on EMFILE",
	    (cpu1 - cpu0) * 1000 / hz);
	H_ASSERT(harness_proc_alive(&f.d->proc),
	    "the daemon died at its "
	    "descriptor limit");

	/* The connections it has are served meanwhile. */
	for (i = 0; i < stuck; i++)
		conn_version(
		    &f, &c[i], harness_strf("connection %d at the limit", i));

	/* Recovery: two close; the waiting one is served, and so is a new
	 * one. */
	http_conn_close(&c[0]);
	http_conn_close(&c[1]);
	{
		struct http_resp r;

		conn_response(&c[stuck], &r,
		    "the waiting connection, once "
		    "descriptors freed");
		H_ASSERT(
		    r.status == 200, "the waiting connection: %ld", r.status);
		http_resp_free(&r);
		f.requests++;
		f.delivered++;
	}
	http_conn_open(&c[0], f.port);
	conn_version(&f, &c[0], "a new connection after recovery");

	for (k = 0; k <= stuck; k++)
		http_conn_close(&c[k]);
	rl.rlim_cur = rl.rlim_max = (rlim_t)(f.fds + 256);
	prlimit(f.pid, RLIMIT_NOFILE, &rl, NULL);
	front_intact(&f, 1, "after running out of descriptors");
}
END_TEST

START_TEST(test_max_clients)
{
	struct http_conn c[6];
	struct http_resp r;
	struct front f;
	struct pollfd pfd;
	int i;

	H_BEGIN();
	front_up(&f, "[server]\nmax_clients = 5\n");
	for (i = 0; i < 5; i++) {
		http_conn_open(&c[i], f.port);
		conn_version(&f, &c[i], harness_strf("client %d of 5", i + 1));
	}
	H_ASSERT(log_count(&f.d->proc, "max_clients") > 0,
	    "5 clients open, max_clients 5: the daemon did not say it stopped "
	    "accepting");

	/* The sixth connects (the kernel's backlog) but is not served:
	 * given a second, it gets nothing and is not closed either. */
	http_conn_open(&c[5], f.port);
	conn_send(&c[5], version_req, strlen(version_req), "client 6");
	pfd.fd = c[5].fd;
	pfd.events = POLLIN;
	pfd.revents = 0;
	H_ASSERT(poll(&pfd, 1, 1000) == 0,
	    "a 6th client was answered (or "
	    "closed) with max_clients 5");
	/* Those it has are still served. */
	conn_version(&f, &c[4], "client 5 while the 6th waits");

	http_conn_close(&c[0]);
	conn_response(&c[5], &r, "client 6 once one left");
	H_ASSERT(r.status == 200, "client 6: status %ld", r.status);
	http_resp_free(&r);
	f.requests++;
	f.delivered++;
	for (i = 1; i < 6; i++)
		http_conn_close(&c[i]);
	front_intact(&f, 1, "after max_clients");
}
END_TEST

/* ---- 15: listening beyond loopback, client tokens ----------------------- */

START_TEST(test_remote_listen)
{
	const char *argv[10];
	struct harness_run run;
	struct harness_daemon *d;
	struct harness_fake *fk;
	struct http_conn c;
	struct http_resp r;
	const char *conf, *listen, *up, *dir;
	int port;

	H_BEGIN();
	fk = fake_start("fake", NULL, NULL);
	up = harness_upstream_of(fk);
	port = harness_free_port();
	listen = harness_strf("0.0.0.0:%d", port);

	/* On the command line and in the file: refused, naming the key. */
	dir = harness_tmpdir();
	conf = harness_write_file(dir, "empty.conf", "");
	argv[0] = harness_daemon_bin();
	argv[1] = "-c";
	argv[2] = conf;
	argv[3] = "-l";
	argv[4] = listen;
	argv[5] = "-u";
	argv[6] = up;
	argv[7] = NULL;
	harness_run(argv, 10000, &run);
	H_ASSERT(!run.timed_out && WIFEXITED(run.wstatus) &&
	        WEXITSTATUS(run.wstatus) != 0,
	    "-l %s without allow_remote: the "
	    "daemon did not refuse to start (wait status 0x%x)",
	    listen, run.wstatus);
	H_ASSERT(strstr(run.err.data, "allow_remote") != NULL ||
	        strstr(run.out.data, "allow_remote") != NULL,
	    "-l %s refused "
	    "without naming allow_remote: %s%s",
	    listen, run.err.data, run.out.data);
	harness_run_free(&run);

	conf = harness_write_file(dir, "remote.conf",
	    harness_strf("[server]\nlisten = %s\n", listen));
	argv[2] = conf;
	argv[3] = "-u";
	argv[4] = up;
	argv[5] = NULL;
	harness_run(argv, 10000, &run);
	H_ASSERT(!run.timed_out && WIFEXITED(run.wstatus) &&
	        WEXITSTATUS(run.wstatus) != 0,
	    "listen = %s without allow_remote: "
	    "the daemon did not refuse to start",
	    listen);
	H_ASSERT(strstr(run.err.data, "allow_remote") != NULL ||
	        strstr(run.out.data, "allow_remote") != NULL,
	    "listen = %s "
	    "refused without naming allow_remote: %s%s",
	    listen, run.err.data, run.out.data);
	harness_run_free(&run);

	/* Allowed: it starts, serves there, and warns. */
	argv[0] = "-l";
	argv[1] = listen;
	argv[2] = NULL;
	d = harness_daemon_start("[server]\nallow_remote = yes\n", up, argv);
	H_ASSERT(log_count(&d->proc, "beyond loopback") > 0 &&
	        log_count(&d->proc, listen) > 0,
	    "allow_remote = yes on %s: no "
	    "warning about listening beyond loopback in %s",
	    listen, d->proc.log_path);
	http_conn_open(&c, port);
	conn_send(&c, version_req, strlen(version_req), "via 0.0.0.0");
	conn_response(&c, &r, "via 0.0.0.0");
	H_ASSERT(r.status == 200, "via %s: status %ld", listen, r.status);
	http_resp_free(&r);
	http_conn_close(&c);
}
END_TEST

START_TEST(test_client_tokens)
{
	static const struct {
		const char *name;
		const char *auth; /* header lines */
	} wrong[] = {
	    {"no Authorization", ""},
	    {"a wrong token", "Authorization: Bearer tok3\r\n"},
	    {"a prefix of a token", "Authorization: Bearer tok\r\n"},
	    {"a token with more after it", "Authorization: Bearer tok12\r\n"},
	    {"a token twice over", "Authorization: Bearer tok1tok1\r\n"},
	    {"both tokens", "Authorization: Bearer tok1 tok2\r\n"},
	    {"an empty bearer", "Authorization: Bearer \r\n"},
	    {"Basic with a token", "Authorization: Basic dG9rMTp0b2sx\r\n"},
	    {"the token without a scheme", "Authorization: tok1\r\n"},
	    {"a token in another header", "X-Authorization: Bearer tok1\r\n"},
	    {"the wrong case", "Authorization: Bearer TOK1\r\n"},
	};
	static const struct {
		const char *name;
		const char *auth;
	} right[] = {
	    {"Bearer tok2", "Authorization: Bearer tok2\r\n"},
	    {"Bearer tok1", "Authorization: Bearer tok1\r\n"},
	    {"bearer in lower case", "Authorization: bearer tok2\r\n"},
	    {"a second Authorization",
	        "Authorization: Bearer tok1\r\n"
	        "Authorization: Basic c2VjcmV0\r\n"},
	};
	struct harness_buf b = {NULL, 0, 0};
	struct http_resp r;
	struct http_conn c;
	struct front f;
	const char *www;
	size_t i;
	cJSON *j;

	H_BEGIN();
	memset(&f, 0, sizeof f);
	harness_up(&f.env, "[server]\nclient_tokens = tok1 tok2\n");
	fake_reset(f.env.fake); /* the start-up check's GET */
	f.d = f.env.daemon;
	f.pid = f.d->proc.pid;
	f.port = f.d->port;

	for (i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
		http_conn_open(&c, f.port);
		b.len = 0;
		harness_buf_addf(&b, GET_ECHO("tok") "%s\r\n", wrong[i].auth);
		conn_send(&c, b.data, b.len, wrong[i].name);
		conn_response(&c, &r, wrong[i].name);
		assert_proxy_error(&r, 401, wrong[i].name);
		www = http_header_get(&r, "WWW-Authenticate");
		H_ASSERT(www != NULL && strncasecmp(www, "Bearer", 6) == 0,
		    "%s: 401 without WWW-Authenticate: Bearer: %.300s",
		    wrong[i].name, r.head.data);
		http_resp_free(&r);
		http_conn_close(&c);
		front_nothing_forwarded(&f, wrong[i].name);
	}

	for (i = 0; i < sizeof right / sizeof right[0]; i++) {
		b.len = 0;
		harness_buf_addf(
		    &b, GET_ECHO("tok-ok") "%s\r\n", right[i].auth);
		j = front_echo(&f, b.data, b.len, right[i].name);
		H_ASSERT(echo_header(j, "Authorization", NULL) == 0,
		    "%s: the client's token went upstream: %s", right[i].name,
		    echo_headers_text(j));
		cJSON_Delete(j);
	}
	front_nothing_forwarded(&f, "the requests with a token, counted");

	/* A refused request's body is skipped, never read as a request. */
	early_answer_body(&f, "POST", "Authorization: Bearer tok1\r\n", 401, 0,
	    "a refused POST");
	early_answer_body(&f, "POST", "Authorization: Bearer tok1\r\n", 401, 1,
	    "a refused POST, its body sent after the answer");

	/* The health check is open to monitors (it asks the upstream for
	 * /api/version); the other admin endpoints are not. */
	http_conn_open(&c, f.port);
	conn_send(&c, RQ("GET /ollama-pool/health HTTP/1.1\r\nHost: h\r\n\r\n"),
	    "health without a token");
	conn_response(&c, &r, "health without a token");
	H_ASSERT(r.status == 200, "health without a token: %ld %.300s",
	    r.status, r.body.data);
	http_resp_free(&r);
	conn_send(&c, RQ("GET /ollama-pool/stats HTTP/1.1\r\nHost: h\r\n\r\n"),
	    "stats without a token");
	conn_response(&c, &r, "stats without a token");
	assert_proxy_error(&r, 401, "stats without a token");
	http_resp_free(&r);
	http_conn_close(&c);
	harness_buf_free(&b);
}
END_TEST

/* ---- Expect: 100-continue waits for the request to be accepted ------- */

/*
 * 100 Continue invites a body, so it goes out only once every check that
 * could refuse the request has passed (token, method, size, queue).  A
 * refusal before it closes the connection: the client has not sent the
 * body it announced, and the proxy will not wait for it or drain it.
 */
START_TEST(test_expect_continue_order)
{
	static const struct {
		const char *name;
		const char *head;
		long status;
	} refused[] = {
	    {"no token", POST_ECHO("x") "Content-Length: 5\r\n", 401},
	    {"a wrong token",
	        POST_ECHO("x") "Authorization: Bearer nope\r\n"
	                       "Transfer-Encoding: chunked\r\n",
	        401},
	    {"a method the admin endpoint refuses",
	        "POST /ollama-pool/metrics HTTP/1.1\r\nHost: h\r\n"
	        "Authorization: Bearer tok\r\nContent-Length: 5\r\n",
	        405},
	    {"a full queue",
	        POST_ECHO("x") "Authorization: Bearer tok\r\n"
	                       "Content-Length: 5\r\n",
	        503},
	};
	struct http_conn c, hold;
	struct http_resp r;
	struct front f;
	char *body, *what;
	size_t i, sent;

	H_BEGIN();
	memset(&f, 0, sizeof f);
	harness_up(&f.env,
	    "[server]\nclient_tokens = tok\n"
	    "[upstream]\npool_maxsize = 1\nqueue_max = 0\n");
	f.d = f.env.daemon;
	f.port = f.d->port;
	body = malloc(32u << 20);
	H_CHECK(body != NULL);
	memset(body, 'b', 32u << 20);

	for (i = 0; i < sizeof refused / sizeof refused[0]; i++) {
		what = harness_strf("Expect with %s", refused[i].name);
		if (refused[i].status == 503) {
			/* One request holds the only slot; no queue. */
			fake_fault(f.env.fake,
			    "{\"action\":\"hang\",\"path\":"
			    "\"/_fake/echo/hold\",\"delay_ms\":"
			    "5000}");
			http_conn_open(&hold, f.port);
			conn_send(&hold,
			    RQ(GET_ECHO("hold") "Authorization: Bearer tok\r\n"
			                        "\r\n"),
			    what);
			fake_wait_active(f.env.fake, 1, what);
		}
		f.requests = fake_stat(f.env.fake, "requests");
		http_conn_open(&c, f.port);
		conn_send(&c, refused[i].head, strlen(refused[i].head), what);
		conn_send(&c, RQ("Expect: 100-continue\r\n\r\n"), what);
		H_ASSERT(conn_read_to_eof(&c, IO_MS) == 0,
		    "%s: the daemon neither answered nor closed (%zu bytes: "
		    "%.200s)",
		    what, c.in.len, c.in.data ? c.in.data : "");
		H_ASSERT(c.in.len > 0 && strncmp(c.in.data, "HTTP/1.1 100", 12),
		    "%s: a 100 Continue invited the body: %.300s", what,
		    c.in.data ? c.in.data : "nothing");
		conn_response(&c, &r, what);
		assert_proxy_error(&r, refused[i].status, what);
		H_ASSERT_STR_EQ(http_header_get(&r, "Connection"), "close");
		/* The body sent anyway is not drained: the connection is
		 * gone long before 32 MiB are through. */
		for (sent = 0; sent < 32u << 20; sent += 1u << 16)
			if (http_conn_send(&c, body + sent, 1u << 16, IO_MS) !=
			    0)
				break;
		H_ASSERT(sent < 32u << 20,
		    "%s: the refused request's body was read to the end", what);
		http_conn_close(&c);
		http_resp_free(&r);
		front_nothing_forwarded(&f, what);
		if (refused[i].status == 503)
			http_conn_close(&hold);
	}

	/* Accepted: 100 first, then the body is read and forwarded. */
	fake_wait_active(f.env.fake, 0, "the held request");
	http_conn_open(&c, f.port);
	conn_send(&c,
	    RQ(POST_ECHO("ok") "Authorization: Bearer tok\r\n"
	                       "Content-Length: 5\r\n"
	                       "Expect: 100-continue\r\n\r\n"),
	    "accepted");
	H_ASSERT(conn_wait_head(&c, IO_MS) == 0 &&
	        strncmp(c.in.data, "HTTP/1.1 100 Continue\r\n\r\n", 25) == 0,
	    "accepted: want 100 Continue first, got %.200s",
	    c.in.data ? c.in.data : "nothing");
	harness_buf_consume(&c.in, 25);
	conn_send(&c, RQ("hello"), "accepted");
	conn_response(&c, &r, "accepted");
	H_ASSERT(
	    r.status == 200, "accepted: %ld %.300s", r.status, r.body.data);
	http_resp_free(&r);
	http_conn_close(&c);
	free(body);
}
END_TEST

/* ---- the suite -------------------------------------------------------- */

static Suite *
frontdoor_suite(void)
{
	Suite *s;
	TCase *tc;

	s = suite_create("frontdoor");

	tc = harness_tcase(s, "framing", 120);
	tcase_add_test(tc, test_refused_heads);
	tcase_add_test(tc, test_accepted_framing);
	tcase_add_test(tc, test_refused_chunks);

	tc = harness_tcase(s, "limits", 120);
	tcase_add_test(tc, test_head_limits);
	tcase_add_test(tc, test_body_limit);
	tcase_add_test(tc, test_timeouts);

	tc = harness_tcase(s, "routing", 60);
	tcase_add_test(tc, test_methods_and_upgrade);
	tcase_add_loop_test(tc, test_handle_reuse, 0,
	    sizeof reuse_cases / sizeof reuse_cases[0]);
	tcase_add_test(tc, test_connect_authority_form);
	tcase_add_test(tc, test_absolute_form);
	tcase_add_test(tc, test_host_is_upstreams);
	tcase_add_test(tc, test_pipelined_body_not_a_request);

	tc = harness_tcase(s, "descriptors", 60);
	tcase_add_test(tc, test_descriptor_limit);
	tcase_add_test(tc, test_idle_upstream_close_no_spin);
	tcase_add_test(tc, test_max_clients);

	tc = harness_tcase(s, "exposure", 60);
	tcase_add_test(tc, test_remote_listen);
	tcase_add_test(tc, test_client_tokens);
	tcase_add_test(tc, test_expect_continue_order);

	return s;
}

int
main(void)
{
	return harness_main(frontdoor_suite());
}
