/*
 * Tests for running the daemon day to day: the times on its log lines,
 * the access log (every field and figure of its JSON lines, the combined
 * format, reopening on SIGUSR1, dropping instead of blocking when the disk
 * falls behind), request ids, Via, and the 508 that stops two proxies
 * pointed at each other.
 *
 * Each request is sent on a raw socket, so the headers are exactly the
 * test's, and carries an X-Request-Id naming it: its access line is found
 * by that id, once the writer thread has written it (inotify wakes the
 * wait; nothing sleeps).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <cjson/cJSON.h>

#include "harness.h"

#define MODEL "llama3.2"
#define TOKEN "ops-token"
#define WAIT_MS 10000
#define N_CASES(a) (sizeof(a) / sizeof((a)[0]))

/* The keys of a JSON access line, in order, and no others. */
static const char *const ops_keys[] = {"time", "client", "method", "path",
    "status", "bytes_in", "bytes_out", "duration_ms", "ttfb_ms", "model",
    "backend", "retries", "request_id", "user_agent", "end"};

static double
ops_wall(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* "2026-12-01T07:41:10.123Z" as seconds since the epoch, or -1. */
static double
ops_parse_time(const char *s)
{
	struct tm tm;
	const char *end;

	if (s == NULL || strlen(s) != 24 || s[19] != '.' || s[23] != 'Z' ||
	    !isdigit((unsigned char)s[20]) || !isdigit((unsigned char)s[21]) ||
	    !isdigit((unsigned char)s[22]))
		return -1;
	memset(&tm, 0, sizeof tm);
	end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (end != s + 19)
		return -1;
	return (double)timegm(&tm) + atoi(s + 20) / 1000.0;
}

static char *
ops_log_path(void)
{
	return harness_strf("%s/access.log", harness_tmpdir());
}

/* The one line of the file holding needle, once it is there. */
static char *
ops_wait_line(const char *path, const char *needle)
{
	char *text, *p, *line = NULL;
	size_t n;

	H_ASSERT(harness_file_wait(path, needle, WAIT_MS),
	    "%s: no line with %s within %d ms", path, needle, WAIT_MS);
	text = harness_slurp(path, NULL);
	for (p = text; *p != '\0'; p += n + (p[n] == '\n')) {
		n = strcspn(p, "\n");
		if (memmem(p, n, needle, strlen(needle)) == NULL)
			continue;
		H_ASSERT(line == NULL, "%s: two lines with %s:\n%s", path,
		    needle, text);
		line = harness_strf("%.*s", (int)n, p);
	}
	free(text);
	return line;
}

/* The access line of request rid, parsed, its keys checked. */
static cJSON *
ops_access_json(const char *path, const char *rid)
{
	char *line =
	    ops_wait_line(path, harness_strf("\"request_id\":\"%s\"", rid));
	cJSON *j = cJSON_Parse(line), *it;
	size_t i = 0;

	H_ASSERT(cJSON_IsObject(j), "not a JSON object: %s", line);
	cJSON_ArrayForEach(it, j)
	{
		H_ASSERT(i < N_CASES(ops_keys) &&
		        strcmp(it->string, ops_keys[i]) == 0,
		    "key %zu is \"%s\", want \"%s\": %s", i, it->string,
		    i < N_CASES(ops_keys) ? ops_keys[i] : "(none)", line);
		i++;
	}
	H_ASSERT(i == N_CASES(ops_keys), "%zu keys, want %zu: %s", i,
	    N_CASES(ops_keys), line);
	return j;
}

/* "127.0.0.1:PORT" of our end of a connection: the daemon's client. */
static char *
ops_local_addr(int fd)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof sin;

	H_ASSERT(getsockname(fd, (struct sockaddr *)&sin, &len) == 0,
	    "getsockname: %s", strerror(errno));
	return harness_strf("127.0.0.1:%d", ntohs(sin.sin_port));
}

/* One request on a fresh raw connection, read to its end. */
struct ops_exchange {
	char *client;
	struct http_resp r;
	double t0, t1; /* wall clock around it */
};

static void
ops_send(int port, const char *method, const char *path, const char *hdrs,
    const char *body, struct ops_exchange *x)
{
	struct http_conn c;
	char *req;

	req = harness_strf("%s %s HTTP/1.1\r\nHost: ops.test\r\n%s%s\r\n%s",
	    method, path, hdrs,
	    body != NULL ? harness_strf("Content-Length: %zu\r\n", strlen(body))
	                 : "",
	    body != NULL ? body : "");
	x->t0 = ops_wall();
	http_conn_open(&c, port);
	x->client = ops_local_addr(c.fd);
	H_ASSERT(
	    http_conn_sendstr(&c, req, 5000) == 0, "send %s %s", method, path);
	http_conn_read_response(
	    &c, strcmp(method, "HEAD") == 0, HARNESS_HTTP_TIMEOUT_MS, &x->r);
	H_ASSERT(x->r.ok, "%s %s: %s", method, path, x->r.error);
	x->t1 = ops_wall();
	http_conn_close(&c);
}

/* What an access line must say; NULL strings must be JSON null. */
struct ops_want {
	const char *method, *path;
	int status;
	long long bytes_in; /* -1 in a table: the body sent */
	long long bytes_out; /* -1: at least 1; 0 in a table: the body got */
	const char *model, *backend;
	int retries;
	const char *rid, *ua, *end;
	int ttfb; /* 1: a number, 0: null */
};

static void
ops_want_str(const cJSON *j, const char *key, const char *want)
{
	const cJSON *v = cJSON_GetObjectItem(j, key);

	if (want == NULL)
		H_ASSERT(cJSON_IsNull(v), "%s: want null, got %s", key,
		    cJSON_PrintUnformatted(v));
	else
		H_ASSERT(cJSON_IsString(v) && strcmp(v->valuestring, want) == 0,
		    "%s: want \"%s\", got %s", key, want,
		    cJSON_PrintUnformatted(v));
}

static double
ops_num(const cJSON *j, const char *key)
{
	const cJSON *v = cJSON_GetObjectItem(j, key);

	H_ASSERT(cJSON_IsNumber(v), "%s is not a number: %s", key,
	    cJSON_PrintUnformatted(v));
	return v->valuedouble;
}

/* Every field and figure of the line against the exchange it records. */
static void
ops_check_line(const cJSON *j, const struct ops_exchange *x,
    const struct ops_want *w, const char *what)
{
	double t = ops_parse_time(harness_jstr(j, "time"));
	double dur = ops_num(j, "duration_ms"), ttfb;
	char *text = cJSON_PrintUnformatted(j);

	fprintf(stderr, "%s: %s\n", what, text);
	cJSON_free(text);
	H_ASSERT(t >= x->t0 - 0.002 && t <= x->t1 + 0.002,
	    "%s: time %s (%.3f) outside the exchange, %.3f to %.3f", what,
	    harness_jstr(j, "time"), t, x->t0, x->t1);
	ops_want_str(j, "client", x->client);
	ops_want_str(j, "method", w->method);
	ops_want_str(j, "path", w->path);
	H_ASSERT(ops_num(j, "status") == w->status, "%s: status %g, want %d",
	    what, ops_num(j, "status"), w->status);
	H_ASSERT(ops_num(j, "bytes_in") == (double)w->bytes_in,
	    "%s: bytes_in %g, want %lld", what, ops_num(j, "bytes_in"),
	    w->bytes_in);
	if (w->bytes_out >= 0)
		H_ASSERT(ops_num(j, "bytes_out") == (double)w->bytes_out,
		    "%s: bytes_out %g, want %lld", what,
		    ops_num(j, "bytes_out"), w->bytes_out);
	else
		H_ASSERT(ops_num(j, "bytes_out") >= 1, "%s: bytes_out %g", what,
		    ops_num(j, "bytes_out"));
	H_ASSERT(dur >= 0 && dur <= (x->t1 - x->t0) * 1e3 + 2,
	    "%s: duration_ms %g, the exchange took %.3f ms", what, dur,
	    (x->t1 - x->t0) * 1e3);
	if (w->ttfb) {
		ttfb = ops_num(j, "ttfb_ms");
		H_ASSERT(ttfb >= 0 && ttfb <= dur,
		    "%s: ttfb_ms %g, duration %g", what, ttfb, dur);
	} else
		H_ASSERT(cJSON_IsNull(cJSON_GetObjectItem(j, "ttfb_ms")),
		    "%s: ttfb_ms should be null", what);
	ops_want_str(j, "model", w->model);
	ops_want_str(j, "backend", w->backend);
	H_ASSERT(ops_num(j, "retries") == w->retries, "%s: retries %g, want %d",
	    what, ops_num(j, "retries"), w->retries);
	ops_want_str(j, "request_id", w->rid);
	ops_want_str(j, "user_agent", w->ua);
	ops_want_str(j, "end", w->end);
}

/* ---- log times ---------------------------------------------------------- */

/* How many of the daemon's own lines (the harness's header and the conf
 * left out) match re_text; *total counts them all, and the first that
 * does not match is copied into bad. */
static int
ops_lines_matching(
    const char *log, const char *re_text, int *total, char *bad, size_t badlen)
{
	regex_t re;
	const char *p = log;
	char line[4096];
	int in_conf = 0, n = 0;
	size_t len;

	H_ASSERT(regcomp(&re, re_text, REG_EXTENDED | REG_NOSUB) == 0,
	    "regcomp %s", re_text);
	*total = 0;
	bad[0] = '\0';
	for (; *p != '\0'; p += len + (p[len] == '\n')) {
		len = strcspn(p, "\n");
		snprintf(line, sizeof line, "%.*s", (int)len, p);
		if (strncmp(line, "harness: conf", 13) == 0)
			in_conf = 1;
		if (strncmp(line, "harness:", 8) == 0) {
			if (strncmp(line, "harness: ----", 13) == 0)
				in_conf = 0;
			continue;
		}
		if (in_conf || line[0] == '\0')
			continue;
		(*total)++;
		if (regexec(&re, line, 0, NULL, 0) == 0)
			n++;
		else if (bad[0] == '\0')
			snprintf(bad, badlen, "%s", line);
	}
	regfree(&re);
	return n;
}

START_TEST(test_log_times)
{
	struct harness_fake *fake;
	struct harness_daemon *d;
	struct http_resp r;
	char bad[4096], *log, *p, *line;
	double t0, t1, t;
	int n, total;

	H_BEGIN();
	unsetenv("JOURNAL_STREAM");
	fake = fake_start("fake", NULL, NULL);
	t0 = ops_wall();
	d = harness_daemon_start("", harness_upstream_of(fake), NULL);
	http_get(harness_daemon_url(d, "/api/version"), &r);
	H_ASSERT(r.ok && r.status == 200, "version: %ld", r.status);
	http_resp_free(&r);
	harness_daemon_stop(d);
	t1 = ops_wall();
	log = harness_slurp(d->proc.log_path, NULL);
	n = ops_lines_matching(log,
	    "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}"
	    "Z "
	    "ollama-pool\\[[0-9]+\\]: (error|warning|notice|info|debug): ",
	    &total, bad, sizeof bad);
	H_ASSERT(n > 0 && n == total,
	    "a line without an RFC 3339 time first: \"%s\"\n%s", bad, log);
	/* And the time is now, in UTC. */
	p = strstr(log, "notice: listening on");
	H_ASSERT(p != NULL, "no listening line:\n%s", log);
	while (p > log && p[-1] != '\n')
		p--;
	line = harness_strf("%.24s", p);
	t = ops_parse_time(line);
	H_ASSERT(t >= t0 - 0.002 && t <= t1 + 0.002,
	    "the listening line's time %s is not between %.3f and %.3f", line,
	    t0, t1);
	free(log);

	/* Under the journal: <N> and no time; the access log on stderr is
	 * info, <6>. */
	setenv("JOURNAL_STREAM", "8:123456", 1);
	d = harness_daemon_start(
	    "[server]\naccess_log = stderr\n", harness_upstream_of(fake), NULL);
	http_get(harness_daemon_url(d, "/api/version"), &r);
	H_ASSERT(r.ok && r.status == 200, "version: %ld", r.status);
	H_ASSERT(harness_file_wait(d->proc.log_path, "<6>{\"time\":", WAIT_MS),
	    "no access line at <6> on stderr");
	http_resp_free(&r);
	harness_daemon_stop(d);
	unsetenv("JOURNAL_STREAM");
	log = harness_slurp(d->proc.log_path, NULL);
	n = ops_lines_matching(log, "^<[3-7]>", &total, bad, sizeof bad);
	H_ASSERT(n > 0 && n == total,
	    "under JOURNAL_STREAM, a line without <N>: \"%s\"\n%s", bad, log);
	n = ops_lines_matching(log, "^<[3-7]>[0-9]{4}-[0-9]{2}-[0-9]{2}T",
	    &total, bad, sizeof bad);
	H_ASSERT(n == 0, "under JOURNAL_STREAM, a line with a time:\n%s", log);
	free(log);
}
END_TEST

/* ---- the access log, field by field -------------------------------------- */

/* One request of the table: sent as given, checked as wanted. */
struct ops_case {
	const char *name; /* also its X-Request-Id */
	const char *method, *path, *hdrs, *body;
	struct ops_want want;
};

#define UA "ops-test/1.0 (table)"
#define AUTH "Authorization: Bearer " TOKEN "\r\n"
#define GEN_STREAM                                                             \
	"{\"model\":\"" MODEL "\",\"prompt\":\"hello\","                       \
	"\"options\":{\"num_predict\":4}}"
#define GEN_PLAIN                                                              \
	"{\"model\":\"" MODEL "\",\"prompt\":\"hello\",\"stream\":false,"      \
	"\"options\":{\"num_predict\":4}}"

static void
ops_run_cases(int port, const char *log, const char *backend,
    const struct ops_case *cases, size_t n)
{
	struct ops_exchange x;
	struct ops_want w;
	const char *rid;
	size_t i;
	cJSON *j;

	for (i = 0; i < n; i++) {
		ops_send(port, cases[i].method, cases[i].path,
		    harness_strf("User-Agent: " UA "\r\nX-Request-Id: %s\r\n%s",
		        cases[i].name, cases[i].hdrs),
		    cases[i].body, &x);
		H_ASSERT(x.r.status == cases[i].want.status,
		    "%s: status %ld, want %d: %s", cases[i].name, x.r.status,
		    cases[i].want.status, x.r.body.data);
		rid = http_header_get(&x.r, "X-Request-Id");
		H_ASSERT(rid != NULL && strcmp(rid, cases[i].name) == 0,
		    "%s: X-Request-Id %s in the answer", cases[i].name,
		    rid ? rid : "missing");
		w = cases[i].want;
		w.rid = cases[i].name;
		w.ua = UA;
		if (w.backend != NULL)
			w.backend = backend;
		if (w.bytes_out == 0 && strcmp(cases[i].method, "HEAD") != 0)
			w.bytes_out = (long long)x.r.body.len;
		if (w.bytes_in < 0)
			w.bytes_in = (long long)strlen(cases[i].body);
		j = ops_access_json(log, cases[i].name);
		ops_check_line(j, &x, &w, cases[i].name);
		cJSON_Delete(j);
		http_resp_free(&x.r);
	}
}

/*
 * Streamed and plain generates, the proxy's own answers (a stats page, a
 * 404 under /ollama-pool/, a 401 and a 413) and a HEAD, each with every
 * field; the body figures are those of the request as sent and the answer
 * as the client read it.
 */
START_TEST(test_access_json_fields)
{
	static const struct ops_case cases[] = {
	    {"gen-stream", "POST", "/api/generate", AUTH, GEN_STREAM,
	        {"POST", "/api/generate", 200, -1, 0, MODEL, "backend", 0, NULL,
	            NULL, "completed", 1}},
	    {"gen-plain", "POST", "/api/generate", AUTH, GEN_PLAIN,
	        {"POST", "/api/generate", 200, -1, 0, MODEL, "backend", 0, NULL,
	            NULL, "completed", 1}},
	    {"admin-stats", "GET", "/ollama-pool/stats", AUTH, NULL,
	        {"GET", "/ollama-pool/stats", 200, 0, 0, NULL, NULL, 0, NULL,
	            NULL, "completed", 1}},
	    {"admin-404", "GET", "/ollama-pool/nope?x=1", AUTH, NULL,
	        {"GET", "/ollama-pool/nope?x=1", 404, 0, 0, NULL, NULL, 0, NULL,
	            NULL, "refused", 1}},
	    {"no-token", "GET", "/api/tags", "", NULL,
	        {"GET", "/api/tags", 401, 0, 0, NULL, NULL, 0, NULL, NULL,
	            "refused", 1}},
	    {"too-big", "POST", "/api/generate",
	        AUTH "Content-Type: application/json\r\n",
	        "{\"model\":\"" MODEL "\",\"prompt\":\""
	        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	        "\"}",
	        {"POST", "/api/generate", 413, 0, 0, NULL, NULL, 0, NULL, NULL,
	            "refused", 1}},
	    {"head-tags", "HEAD", "/api/tags", AUTH, NULL,
	        {"HEAD", "/api/tags", 200, 0, 0, NULL, "backend", 0, NULL, NULL,
	            "completed", 1}},
	};
	struct harness_fake *fake;
	struct harness_daemon *d;
	char *log = ops_log_path();

	H_BEGIN();
	fake = fake_start("fake", NULL, NULL);
	d = harness_daemon_start(
	    harness_strf("[server]\naccess_log = %s\nclient_tokens = " TOKEN
	                 "\nmax_body_size = 100\n",
	        log),
	    harness_upstream_of(fake), NULL);
	ops_run_cases(
	    d->port, log, harness_upstream_of(fake), cases, N_CASES(cases));
}
END_TEST

/* A 502 after every connect was refused: the retries are counted, and the
 * -v line says the connection failed, not that one was reused. */
START_TEST(test_access_upstream_refused)
{
	static const struct ops_case cases[] = {
	    {"refused-502", "GET", "/api/tags", "", NULL,
	        {"GET", "/api/tags", 502, 0, 0, NULL, "backend", 2, NULL, NULL,
	            "upstream_error", 1}},
	};
	struct harness_daemon *d;
	char *log = ops_log_path(), *up, *line;

	H_BEGIN();
	up = harness_strf("http://127.0.0.1:%d", harness_free_port());
	d = harness_daemon_start(
	    harness_strf("[server]\naccess_log = %s\n[retry]\nretries = 2\n"
	                 "backoff_factor = 0.01\n",
	        log),
	    up, NULL);
	ops_run_cases(d->port, log, up, cases, N_CASES(cases));
	line = ops_wait_line(d->proc.log_path, "\"GET /api/tags\" 502 ");
	H_ASSERT(strstr(line, "3 attempts, upstream connection failed") != NULL,
	    "the -v line: %s", line);
}
END_TEST

/* first_byte_timeout: a 504 of our own, ended by "timeout". */
START_TEST(test_access_timeout)
{
	static const struct ops_case cases[] = {
	    {"slow-head", "POST", "/api/generate", "",
	        "{\"model\":\"" MODEL "\",\"prompt\":\"p\","
	        "\"fake_first_byte_ms\":20000}",
	        {"POST", "/api/generate", 504, -1, 0, NULL, "backend", 0, NULL,
	            NULL, "timeout", 1}},
	};
	struct harness_fake *fake;
	struct harness_daemon *d;
	char *log = ops_log_path();

	H_BEGIN();
	fake = fake_start("fake", NULL, NULL);
	d = harness_daemon_start(
	    harness_strf("[server]\naccess_log = %s\n[upstream]\n"
	                 "first_byte_timeout = 0.3\n",
	        log),
	    harness_upstream_of(fake), NULL);
	ops_run_cases(
	    d->port, log, harness_upstream_of(fake), cases, N_CASES(cases));
}
END_TEST

/* A client that leaves mid-stream: client_gone, with the status it was
 * sent, the model the stream named, and what it was sent so far. */
START_TEST(test_access_client_gone)
{
	struct harness_fake *fake;
	struct harness_daemon *d;
	struct ops_exchange x;
	struct http_conn c;
	char *log = ops_log_path(), *body;
	double deadline;
	cJSON *j;

	H_BEGIN();
	fake = fake_start("fake", NULL, NULL);
	d = harness_daemon_start(
	    harness_strf("[server]\naccess_log = %s\n", log),
	    harness_upstream_of(fake), NULL);
	body = "{\"model\":\"" MODEL "\",\"prompt\":\"p\","
	       "\"options\":{\"num_predict\":100000},\"fake_interval_ms\":50}";
	memset(&x, 0, sizeof x);
	x.t0 = ops_wall();
	http_conn_open(&c, d->port);
	x.client = ops_local_addr(c.fd);
	H_CHECK(
	    http_conn_sendstr(&c,
	        harness_strf("POST /api/generate HTTP/1.1\r\nHost: h\r\n"
	                     "User-Agent: leaver\r\nX-Request-Id: gone-1\r\n"
	                     "Content-Length: %zu\r\n\r\n%s",
	            strlen(body), body),
	        5000) == 0);
	/* The head and a first line of the stream, then away. */
	deadline = harness_now() + WAIT_MS / 1000.0;
	while (c.in.data == NULL || strstr(c.in.data, "\"done\":false") == NULL)
		H_ASSERT(http_conn_fill(&c, deadline) > 0,
		    "no first line: %.300s", c.in.data ? c.in.data : "");
	H_ASSERT_CONTAINS(c.in.data, "X-Request-Id: gone-1\r\n");
	http_conn_close(&c);
	j = ops_access_json(log, "gone-1");
	x.t1 = ops_wall();
	ops_check_line(j, &x,
	    &(struct ops_want){"POST", "/api/generate", 200,
	        (long long)strlen(body), -1, MODEL, harness_upstream_of(fake),
	        0, "gone-1", "leaver", "client_gone", 1},
	    "client gone");
	cJSON_Delete(j);
}
END_TEST

/* Apache's combined format, then rt= and rid=; quotes escaped. */
START_TEST(test_access_combined)
{
	struct harness_fake *fake;
	struct harness_daemon *d;
	struct ops_exchange x;
	char *log = ops_log_path(), *line, *want;
	regex_t re;
	regmatch_t m[3];

	H_BEGIN();
	fake = fake_start("fake", NULL, NULL);
	d = harness_daemon_start(harness_strf("[server]\naccess_log = %s\n"
	                                      "access_log_format = combined\n",
	                             log),
	    harness_upstream_of(fake), NULL);
	ops_send(d->port, "GET", "/api/tags?a=1",
	    "User-Agent: agent \"q\"/1.0\r\nReferer: http://ref.example/\r\n"
	    "X-Request-Id: comb-1\r\n",
	    NULL, &x);
	H_ASSERT(x.r.status == 200, "tags: %ld", x.r.status);
	line = ops_wait_line(log, "rid=comb-1");
	want = harness_strf(
	    "^127\\.0\\.0\\.1 - - "
	    "\\[[0-3][0-9]/[A-Z][a-z]{2}/[0-9]{4}:[0-2][0-9]:"
	    "[0-5][0-9]:[0-6][0-9] \\+0000\\] \"GET /api/tags\\?a=1 "
	    "HTTP/1\\.1\" "
	    "200 ([0-9]+) \"http://ref\\.example/\" "
	    "\"agent \\\\x22q\\\\x22/1\\.0\" rt=([0-9]+\\.[0-9]{3}) "
	    "rid=comb-1$");
	H_ASSERT(regcomp(&re, want, REG_EXTENDED) == 0, "regcomp %s", want);
	H_ASSERT(regexec(&re, line, 3, m, 0) == 0,
	    "combined line:\n%s\nwant %s", line, want);
	regfree(&re);
	H_ASSERT(strtoull(line + m[1].rm_so, NULL, 10) == x.r.body.len,
	    "bytes %s, the body was %zu: %s", line + m[1].rm_so, x.r.body.len,
	    line);
	H_ASSERT(strtod(line + m[2].rm_so, NULL) <= x.t1 - x.t0 + 0.002,
	    "rt= longer than the exchange: %s", line);
	http_resp_free(&x.r);
}
END_TEST

/* logrotate: rename the file, SIGUSR1, and new lines go to a new file. */
START_TEST(test_access_reopen)
{
	struct harness_fake *fake;
	struct harness_daemon *d;
	struct ops_exchange x;
	char *log = ops_log_path(), *old = harness_strf("%s.1", log), *text;

	H_BEGIN();
	fake = fake_start("fake", NULL, NULL);
	d = harness_daemon_start(
	    harness_strf("[server]\naccess_log = %s\n", log),
	    harness_upstream_of(fake), NULL);
	ops_send(d->port, "GET", "/api/version", "X-Request-Id: before\r\n",
	    NULL, &x);
	http_resp_free(&x.r);
	ops_wait_line(log, "\"request_id\":\"before\"");
	H_ASSERT(rename(log, old) == 0, "rename: %s", strerror(errno));
	H_ASSERT(kill(d->proc.pid, SIGUSR1) == 0, "kill: %s", strerror(errno));
	H_ASSERT(harness_file_wait(d->proc.log_path,
	             harness_strf("access log: writing to %s", log), WAIT_MS),
	    "no reopen in the log");
	ops_send(d->port, "GET", "/api/version", "X-Request-Id: after\r\n",
	    NULL, &x);
	http_resp_free(&x.r);
	ops_wait_line(log, "\"request_id\":\"after\"");
	text = harness_slurp(old, NULL);
	H_ASSERT(strstr(text, "\"before\"") != NULL &&
	        strstr(text, "\"after\"") == NULL,
	    "the renamed file:\n%s", text);
	free(text);
	text = harness_slurp(log, NULL);
	H_ASSERT(strstr(text, "\"before\"") == NULL, "the new file:\n%s", text);
	free(text);
	H_ASSERT(
	    harness_proc_alive(&d->proc), "SIGUSR1 must not stop the daemon");
}
END_TEST

/* Lines of the text holding needle. */
static size_t
ops_count(const char *text, const char *needle)
{
	size_t n = 0;

	while ((text = strstr(text, needle)) != NULL) {
		n++;
		text += strlen(needle);
	}
	return n;
}

/*
 * A disk that does not keep up: the log is a FIFO the test opens but does
 * not read, so the writer blocks.  Requests are still answered at once;
 * beyond 1 MiB lines are dropped and counted, and every line not dropped
 * arrives once the reader drains.
 */
#define DROPPED "\nollama_pool_access_log_dropped_total "
START_TEST(test_access_dropped)
{
	enum { N = 900 };
	struct harness_fake *fake;
	struct harness_daemon *d;
	struct http_conn c;
	struct http_resp r;
	struct harness_buf got = {NULL, 0, 0};
	char *fifo, *req, ua[2001], buf[65536];
	double dropped, deadline;
	size_t want;
	ssize_t n;
	int rfd, i;
	cJSON *stats;

	H_BEGIN();
	fake = fake_start("fake", NULL, NULL);
	fifo = harness_strf("%s/access.fifo", harness_tmpdir());
	H_ASSERT(mkfifo(fifo, 0600) == 0, "mkfifo: %s", strerror(errno));
	/* Opened before the daemon, so its writer never waits for us. */
	rfd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	H_ASSERT(rfd >= 0, "open %s: %s", fifo, strerror(errno));
	d = harness_daemon_start(
	    harness_strf("[server]\naccess_log = %s\n", fifo),
	    harness_upstream_of(fake), NULL);
	memset(ua, 'u', sizeof ua - 1);
	ua[sizeof ua - 1] = '\0';
	req = harness_strf("GET /ollama-pool/nope HTTP/1.1\r\nHost: h\r\n"
	                   "User-Agent: %s\r\n\r\n",
	    ua);
	http_conn_open(&c, d->port);
	for (i = 0; i < N; i++) {
		H_ASSERT(http_conn_sendstr(&c, req, 5000) == 0, "send %d", i);
		http_conn_read_response(&c, 0, 5000, &r);
		H_ASSERT(r.ok && r.status == 404, "request %d: %ld %s", i,
		    r.status, r.error);
		http_resp_free(&r);
	}
	http_conn_close(&c);
	/* The counts, before the scrapes' own lines. */
	stats = NULL;
	http_get(harness_daemon_url(d, "/ollama-pool/stats"), &r);
	stats = harness_json(&r, "stats");
	dropped = harness_jnum(stats, "access_log_dropped");
	http_resp_free(&r);
	cJSON_Delete(stats);
	H_ASSERT(dropped > 0 && dropped < N,
	    "%g of %d lines dropped with the writer stuck", dropped, N);
	H_ASSERT(harness_file_wait(d->proc.log_path,
	             "access log: 1048576 bytes wait for the disk", WAIT_MS),
	    "no warning about the drops");
	http_get(harness_daemon_url(d, "/ollama-pool/metrics"), &r);
	H_ASSERT(r.ok && strstr(r.body.data, DROPPED) != NULL,
	    "no ollama_pool_access_log_dropped_total: %.300s", r.body.data);
	H_ASSERT(strtod(strstr(r.body.data, DROPPED) + strlen(DROPPED), NULL) >=
	        dropped,
	    "metric below the stats figure %g", dropped);
	http_resp_free(&r);

	/* Drain: exactly the lines that were not dropped arrive. */
	want = N - (size_t)dropped;
	harness_buf_add(&got, "", 0);
	deadline = harness_now() + 20;
	while (ops_count(got.data, "\"path\":\"/ollama-pool/nope\"") < want &&
	    harness_now() < deadline) {
		n = read(rfd, buf, sizeof buf);
		if (n > 0)
			harness_buf_add(&got, buf, (size_t)n);
		else {
			struct pollfd pfd = {rfd, POLLIN, 0};

			poll(&pfd, 1, 1000);
		}
	}
	harness_daemon_stop(d); /* the writer flushes and closes: EOF */
	for (;;) {
		struct pollfd pfd = {rfd, POLLIN, 0};

		if (poll(&pfd, 1, 5000) <= 0)
			break;
		n = read(rfd, buf, sizeof buf);
		if (n <= 0)
			break;
		harness_buf_add(&got, buf, (size_t)n);
	}
	close(rfd);
	H_ASSERT(ops_count(got.data, "\"path\":\"/ollama-pool/nope\"") == want,
	    "%zu lines arrived, want %d - %g dropped = %zu",
	    ops_count(got.data, "\"path\":\"/ollama-pool/nope\""), N, dropped,
	    want);
	H_ASSERT(ops_count(got.data, "\n") == ops_count(got.data, "{\"time\":"),
	    "lines arrived broken");
	harness_buf_free(&got);
}
END_TEST

/*
 * The settings: a relative path or an unknown format is refused with its
 * file and line by -t, and a file that cannot be opened stops the start.
 */
START_TEST(test_access_settings)
{
	static const struct {
		const char *conf, *want;
		int check_only;
	} cases[] = {
	    {"[server]\naccess_log = logs/access.log\n",
	        ":2: access_log must be off, stderr or an absolute path, not "
	        "'logs/access.log'",
	        1},
	    {"[server]\naccess_log_format = xml\n",
	        ":2: access_log_format must be json or combined, not 'xml'", 1},
	    {"[server]\naccess_log = /nonexistent-dir/access.log\n",
	        "access_log: cannot open /nonexistent-dir/access.log: No such "
	        "file or directory",
	        0},
	};
	struct harness_run run;
	const char *argv[8];
	char *conf;
	size_t i;

	H_BEGIN();
	for (i = 0; i < N_CASES(cases); i++) {
		conf = harness_write_file(
		    harness_tmpdir(), "ollama-pool.conf", cases[i].conf);
		argv[0] = harness_daemon_bin();
		argv[1] = "-c";
		argv[2] = conf;
		argv[3] = cases[i].check_only ? "-t" : "-l";
		argv[4] = cases[i].check_only
		    ? NULL
		    : harness_strf("127.0.0.1:%d", harness_free_port());
		argv[5] = NULL;
		harness_run(argv, 10000, &run);
		H_ASSERT(!run.timed_out && WIFEXITED(run.wstatus) &&
		        WEXITSTATUS(run.wstatus) == 1 &&
		        strstr(run.err.data ? run.err.data : "",
		            cases[i].want) != NULL,
		    "%s: status 0x%x, stderr %s; want exit 1 and %s",
		    cases[i].conf, run.wstatus, run.err.data, cases[i].want);
		harness_run_free(&run);
	}
}
END_TEST

/* ---- request ids --------------------------------------------------------- */

/* The X-Request-Id headers the fake's echo saw. */
static size_t
ops_echo_ids(const struct http_resp *r, const char **first)
{
	cJSON *j = harness_json(r, "echo"), *h;
	size_t n = 0;

	*first = NULL;
	cJSON_ArrayForEach(h, cJSON_GetObjectItem(j, "headers"))
	{
		if (strcasecmp(cJSON_GetArrayItem(h, 0)->valuestring,
		        "X-Request-Id") != 0)
			continue;
		if (n++ == 0)
			*first = harness_strf(
			    "%s", cJSON_GetArrayItem(h, 1)->valuestring);
	}
	cJSON_Delete(j);
	return n;
}

static int
ops_is_made_id(const char *id)
{
	size_t i;

	for (i = 0; id[i] != '\0'; i++)
		if (!isxdigit((unsigned char)id[i]) ||
		    isupper((unsigned char)id[i]))
			return 0;
	return i == 16;
}

/*
 * A sane X-Request-Id is kept; none, a bad one or two are replaced by one
 * of ours.  Either way exactly one reaches Ollama, the same comes back in
 * the answer, and the access log has it.
 */
START_TEST(test_request_ids)
{
	static const struct {
		const char *name, *hdrs, *kept;
	} cases[] = {
	    {"none", "", NULL},
	    {"sane", "X-Request-Id: client-id.42_x\r\n", "client-id.42_x"},
	    {"128 bytes",
	        "X-Request-Id: "
	        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
	        "ef"
	        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
	        "ef"
	        "\r\n",
	        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
	        "ef"
	        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
	        "ef"},
	    {"129 bytes",
	        "X-Request-Id: "
	        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
	        "ef"
	        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
	        "ef"
	        "z\r\n",
	        NULL},
	    {"a space", "X-Request-Id: two words\r\n", NULL},
	    {"two of them", "X-Request-Id: one\r\nX-Request-Id: two\r\n", NULL},
	};
	struct harness_fake *fake;
	struct harness_daemon *d;
	struct ops_exchange x;
	const char *rid, *seen, *made[N_CASES(cases)];
	char *log = ops_log_path();
	size_t i, k, nmade = 0;
	cJSON *j;

	H_BEGIN();
	fake = fake_start("fake", NULL, NULL);
	d = harness_daemon_start(
	    harness_strf("[server]\naccess_log = %s\n", log),
	    harness_upstream_of(fake), NULL);
	for (i = 0; i < N_CASES(cases); i++) {
		ops_send(d->port, "GET", harness_strf("/_fake/echo/rid-%zu", i),
		    cases[i].hdrs, NULL, &x);
		H_ASSERT(
		    x.r.status == 200, "%s: %ld", cases[i].name, x.r.status);
		rid = http_header_get(&x.r, "X-Request-Id");
		H_ASSERT(
		    rid != NULL && http_header_count(&x.r, "X-Request-Id") == 1,
		    "%s: want one X-Request-Id in the answer", cases[i].name);
		if (cases[i].kept != NULL)
			H_ASSERT_STR_EQ(rid, cases[i].kept);
		else {
			H_ASSERT(ops_is_made_id(rid), "%s: made id \"%s\"",
			    cases[i].name, rid);
			for (k = 0; k < nmade; k++)
				H_ASSERT(strcmp(made[k], rid) != 0,
				    "%s: id %s made twice", cases[i].name, rid);
			made[nmade++] = harness_strf("%s", rid);
		}
		H_ASSERT(
		    ops_echo_ids(&x.r, &seen) == 1 && strcmp(seen, rid) == 0,
		    "%s: Ollama saw X-Request-Id %s, the answer has %s: %s",
		    cases[i].name, seen ? seen : "(none)", rid, x.r.body.data);
		j = ops_access_json(log, rid);
		cJSON_Delete(j);
		http_resp_free(&x.r);
	}
}
END_TEST

/* ---- Via and loops ------------------------------------------------------- */

/* The name a daemon gives itself in Via, from its start-up line. */
static char *
ops_via_name(const struct harness_daemon *d)
{
	char *line = ops_wait_line(d->proc.log_path, "Via names this proxy ");
	char *p = strstr(line, "Via names this proxy ") + 21;
	regex_t re;

	H_ASSERT(regcomp(&re, "^ollama-pool-[0-9a-f]{8}$",
	             REG_EXTENDED | REG_NOSUB) == 0,
	    "regcomp");
	H_ASSERT(regexec(&re, p, 0, NULL, 0) == 0, "a Via name: %s", line);
	regfree(&re);
	return p;
}

/* The Via the fake's echo saw (one header), or NULL. */
static char *
ops_echo_via(const struct http_resp *r)
{
	cJSON *j = harness_json(r, "echo"), *h;
	char *via = NULL;
	int n = 0;

	cJSON_ArrayForEach(h, cJSON_GetObjectItem(j, "headers"))
	{
		if (strcasecmp(cJSON_GetArrayItem(h, 0)->valuestring, "Via") ==
		    0) {
			via = harness_strf(
			    "%s", cJSON_GetArrayItem(h, 1)->valuestring);
			n++;
		}
	}
	cJSON_Delete(j);
	H_ASSERT(n == 1, "%d Via headers upstream: %s", n, r->body.data);
	return via;
}

/* Ours goes after the client's elements, in one header; the name is the
 * same for every request of the process, and another proxy's differs. */
START_TEST(test_via_appended)
{
	static const struct {
		const char *hdrs, *before;
	} cases[] = {
	    {"", ""},
	    {"Via: 1.0 fred\r\n", "1.0 fred, "},
	    {"Via: 1.0 a, HTTP/1.1 b (c)\r\nVia: 2 d\r\n",
	        "1.0 a, HTTP/1.1 b (c), 2 d, "},
	};
	struct harness_fake *fake;
	struct harness_daemon *d;
	struct ops_exchange x;
	char *name, *via;
	size_t i;

	H_BEGIN();
	fake = fake_start("fake", NULL, NULL);
	d = harness_daemon_start("", harness_upstream_of(fake), NULL);
	name = ops_via_name(d);
	for (i = 0; i < N_CASES(cases); i++) {
		ops_send(
		    d->port, "GET", "/_fake/echo/via", cases[i].hdrs, NULL, &x);
		H_ASSERT(x.r.status == 200, "%zu: %ld", i, x.r.status);
		via = ops_echo_via(&x.r);
		H_ASSERT_STR_EQ(
		    via, harness_strf("%s1.1 %s", cases[i].before, name));
		http_resp_free(&x.r);
	}
	harness_daemon_stop(d);
	d = harness_daemon_start("", harness_upstream_of(fake), NULL);
	H_ASSERT(strcmp(ops_via_name(d), name) != 0,
	    "two proxies named %s alike", name);
}
END_TEST

/*
 * Two proxies pointed at each other: A forwards to B, B to A, and A sees
 * its own name in Via.  The request is answered 508 at once, in Ollama's
 * shape (OpenAI's on /v1), and A's warning names the Via.
 */
START_TEST(test_via_loop)
{
	struct harness_daemon *a, *b;
	struct http_resp r;
	char *name_a, *name_b;
	cJSON *j, *err;
	double t0;
	int pb;

	H_BEGIN();
	pb = harness_free_port();
	a = harness_daemon_start(
	    "", harness_strf("http://127.0.0.1:%d", pb), NULL);
	name_a = ops_via_name(a);
	b = harness_daemon_start("",
	    harness_strf("http://127.0.0.1:%d", a->port),
	    (const char *const[]){
	        "-l", harness_strf("127.0.0.1:%d", pb), NULL});
	/* Both log to one file: B's start truncated A's lines. */
	name_b = ops_via_name(b);
	H_ASSERT(strcmp(name_a, name_b) != 0, "both named %s", name_a);

	t0 = harness_now();
	http_get(harness_daemon_url(a, "/api/tags"), &r);
	H_ASSERT(r.ok && r.status == 508, "looped request: %ld %s %s", r.status,
	    r.error, r.body.data);
	H_ASSERT(r.t_end - t0 < 1.0, "the 508 took %.3f s", r.t_end - t0);
	j = harness_json(&r, "508");
	H_ASSERT(cJSON_IsString(cJSON_GetObjectItem(j, "error")) &&
	        strstr(harness_jstr(j, "error"), "loop") != NULL,
	    "508 body: %s", r.body.data);
	cJSON_Delete(j);
	http_resp_free(&r);
	H_ASSERT(harness_file_wait(a->proc.log_path,
	             harness_strf("warning: GET /api/tags: 508 request loop: "
	                          "Via \"1.1 %s, 1.1 %s\"",
	                 name_a, name_b),
	             WAIT_MS),
	    "no warning naming the Via");

	/* The OpenAI shape on /v1, entering at B this time. */
	t0 = harness_now();
	http_get(harness_daemon_url(b, "/v1/models"), &r);
	H_ASSERT(r.ok && r.status == 508, "looped /v1: %ld %s", r.status,
	    r.body.data);
	H_ASSERT(r.t_end - t0 < 1.0, "the 508 took %.3f s", r.t_end - t0);
	j = harness_json(&r, "508 /v1");
	err = cJSON_GetObjectItem(j, "error");
	H_ASSERT(cJSON_IsObject(err) &&
	        strstr(harness_jstr(err, "message"), "loop") != NULL &&
	        cJSON_IsString(cJSON_GetObjectItem(err, "type")),
	    "508 /v1 body: %s", r.body.data);
	cJSON_Delete(j);
	http_resp_free(&r);
}
END_TEST

static Suite *
ops_suite(void)
{
	Suite *s = suite_create("ops");
	TCase *tc;

	tc = harness_tcase(s, "logs", 60);
	tcase_add_test(tc, test_log_times);

	tc = harness_tcase(s, "access", 90);
	tcase_add_test(tc, test_access_json_fields);
	tcase_add_test(tc, test_access_upstream_refused);
	tcase_add_test(tc, test_access_timeout);
	tcase_add_test(tc, test_access_client_gone);
	tcase_add_test(tc, test_access_combined);
	tcase_add_test(tc, test_access_reopen);
	tcase_add_test(tc, test_access_dropped);
	tcase_add_test(tc, test_access_settings);

	tc = harness_tcase(s, "ids", 60);
	tcase_add_test(tc, test_request_ids);
	tcase_add_test(tc, test_via_appended);
	tcase_add_test(tc, test_via_loop);

	return s;
}

int
main(void)
{
	return harness_main(ops_suite());
}
