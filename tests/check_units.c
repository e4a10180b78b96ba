/*
 * Unit suites: address and URL parsing, the configuration table, the
 * header filter and the request parser wrapper.  They link the daemon's
 * own objects (src/libollamapool.a).
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "ollama-pool.h"

/* --- addr.c ------------------------------------------------------------ */

static void
check_upstream(const char *in, int tls, const char *host, int port,
    const char *prefix, const char *base)
{
	struct upstream_url u;
	char err[256];

	ck_assert_msg(addr_parse_upstream(in, &u, err, sizeof err) == 0,
	    "'%s': %s", in, err);
	ck_assert_int_eq(u.tls, tls);
	ck_assert_str_eq(u.host, host);
	ck_assert_int_eq(u.port, port);
	ck_assert_str_eq(u.prefix, prefix);
	ck_assert_str_eq(u.base, base);
}

START_TEST(test_upstream_ollama_host_syntax)
{
	check_upstream("example.com", 0, "example.com", 11434, "",
	    "http://example.com:11434");
	check_upstream("https://ollama.com", 1, "ollama.com", 443, "",
	    "https://ollama.com:443");
	check_upstream("http://example.com", 0, "example.com", 80, "",
	    "http://example.com:80");
	check_upstream(
	    ":5000", 0, "127.0.0.1", 5000, "", "http://127.0.0.1:5000");
	check_upstream("", 0, "127.0.0.1", 11434, "", "http://127.0.0.1:11434");
	check_upstream("  \"http://10.0.0.2:8080/ollama/\"  ", 0, "10.0.0.2",
	    8080, "/ollama", "http://10.0.0.2:8080/ollama");
	check_upstream("[::1]:1234", 0, "::1", 1234, "", "http://[::1]:1234");
	check_upstream("http://[::1]", 0, "::1", 80, "", "http://[::1]:80");
	check_upstream(
	    "0.0.0.0", 0, "127.0.0.1", 11434, "", "http://127.0.0.1:11434");
	check_upstream("https://host.example:8443/a/b", 1, "host.example", 8443,
	    "/a/b", "https://host.example:8443/a/b");
}
END_TEST

START_TEST(test_upstream_rejects_bad_input)
{
	static const char *bad[] = {"ftp://example.com", "example.com:99999",
	    "example.com:abc", "http://user:pw@example.com",
	    "http://exa mple.com", "example.com:0", NULL};
	struct upstream_url u;
	char err[256];
	int i;

	for (i = 0; bad[i] != NULL; i++) {
		err[0] = '\0';
		ck_assert_msg(
		    addr_parse_upstream(bad[i], &u, err, sizeof err) == -1,
		    "accepted '%s'", bad[i]);
		ck_assert_msg(strlen(err) > 0, "no message for '%s'", bad[i]);
	}
}
END_TEST

START_TEST(test_listen_forms)
{
	struct listen_addr la;
	char err[256], text[128];

	ck_assert_int_eq(
	    addr_parse_listen("127.0.0.1:11435", &la, err, sizeof err), 0);
	addr_format((struct sockaddr *)&la.ss, la.sslen, text, sizeof text);
	ck_assert_str_eq(text, "127.0.0.1:11435");
	ck_assert(addr_is_loopback(&la));

	ck_assert_int_eq(
	    addr_parse_listen("[::1]:8080", &la, err, sizeof err), 0);
	addr_format((struct sockaddr *)&la.ss, la.sslen, text, sizeof text);
	ck_assert_str_eq(text, "[::1]:8080");
	ck_assert(addr_is_loopback(&la));

	/* Like OLLAMA_HOST, a missing host means loopback. */
	ck_assert_int_eq(addr_parse_listen(":9000", &la, err, sizeof err), 0);
	addr_format((struct sockaddr *)&la.ss, la.sslen, text, sizeof text);
	ck_assert_str_eq(text, "127.0.0.1:9000");

	ck_assert_int_eq(
	    addr_parse_listen("0.0.0.0:9000", &la, err, sizeof err), 0);
	ck_assert(!addr_is_loopback(&la));

	ck_assert_int_eq(
	    addr_parse_listen("unix:/run/op.sock", &la, err, sizeof err), 0);
	ck_assert_int_eq(la.kind, LISTEN_UNIX);
	addr_format((struct sockaddr *)&la.ss, la.sslen, text, sizeof text);
	ck_assert_str_eq(text, "unix:/run/op.sock");
}
END_TEST

START_TEST(test_listen_rejects_bad_input)
{
	static const char *bad[] = {"127.0.0.1", "127.0.0.1:70000",
	    "unix:relative", "::1:80", "[::1]80", "host:", NULL};
	struct listen_addr la;
	char err[256];
	int i;

	for (i = 0; bad[i] != NULL; i++) {
		err[0] = '\0';
		ck_assert_msg(
		    addr_parse_listen(bad[i], &la, err, sizeof err) == -1,
		    "accepted '%s'", bad[i]);
		ck_assert_msg(strstr(err, bad[i]) != NULL,
		    "message for '%s' does not name it: %s", bad[i], err);
	}
}
END_TEST

START_TEST(test_upstream_loop_detection)
{
	struct listen_addr la[2];
	struct upstream_url u;
	char err[256];

	ck_assert_int_eq(
	    addr_parse_listen("127.0.0.1:11435", &la[0], err, sizeof err), 0);
	ck_assert_int_eq(
	    addr_parse_listen("0.0.0.0:9999", &la[1], err, sizeof err), 0);
	addr_parse_upstream("127.0.0.1:11435", &u, err, sizeof err);
	ck_assert(addr_upstream_is_listen(&u, la, 2));
	addr_parse_upstream("localhost:11435", &u, err, sizeof err);
	ck_assert(addr_upstream_is_listen(&u, la, 1));
	/* A wildcard listener also answers on loopback. */
	addr_parse_upstream("127.0.0.1:9999", &u, err, sizeof err);
	ck_assert(addr_upstream_is_listen(&u, la, 2));
	addr_parse_upstream("127.0.0.1:11434", &u, err, sizeof err);
	ck_assert(!addr_upstream_is_listen(&u, la, 2));
}
END_TEST

/* --- config.c ---------------------------------------------------------- */

static char *
write_temp(const char *text)
{
	char *path = strdup("/tmp/op-unit-XXXXXX");
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

static int
load_text(struct config **cfgp, const char *text,
    const struct config_overrides *ov, char *err, size_t errlen, char **pathp)
{
	char *path = write_temp(text);
	int rc;

	*cfgp = config_new_defaults();
	rc = config_load(*cfgp, path, ov, err, errlen);
	if (pathp != NULL)
		*pathp = path;
	else {
		unlink(path);
		free(path);
	}
	return rc;
}

START_TEST(test_config_defaults)
{
	struct config *cfg = config_new_defaults();

	ck_assert_int_eq(cfg->nlisten, 1);
	ck_assert_str_eq(cfg->listen[0].text, "127.0.0.1:11435");
	ck_assert_str_eq(cfg->upstream.base, "http://127.0.0.1:11434");
	ck_assert_int_eq(cfg->pool_maxsize, 20);
	ck_assert_int_eq(cfg->pool_connections, 10);
	ck_assert_int_eq(cfg->queue_max, 512);
	ck_assert(cfg->connect_timeout == 10.0);
	ck_assert_int_eq(cfg->tls_verify, 1);
	ck_assert_uint_eq(cfg->max_buffer, 1024 * 1024);
	config_free(cfg);
}
END_TEST

START_TEST(test_config_file_values)
{
	struct config *cfg;
	char err[512];

	ck_assert_msg(load_text(&cfg,
	                  "; comment\n[server]\nlisten = 127.0.0.1:7001 "
	                  "unix:/tmp/x.sock\nmax_buffer = 64k\n"
	                  "[upstream]\nurl = https://gpu.example/ollama\n"
	                  "pool_maxsize = 4\npool_connections = 2\n"
	                  "queue_max = 7\nconnect_timeout = 2.5\n"
	                  "tls_verify = no\nca_file = /etc/my-ca.pem\n",
	                  NULL, err, sizeof err, NULL) == 0,
	    "%s", err);
	ck_assert_int_eq(cfg->nlisten, 2);
	ck_assert_str_eq(cfg->listen[1].text, "unix:/tmp/x.sock");
	ck_assert_uint_eq(cfg->max_buffer, 65536);
	ck_assert_str_eq(cfg->upstream.base, "https://gpu.example:443/ollama");
	ck_assert_int_eq(cfg->pool_maxsize, 4);
	ck_assert_int_eq(cfg->pool_connections, 2);
	ck_assert_int_eq(cfg->queue_max, 7);
	ck_assert(cfg->connect_timeout == 2.5);
	ck_assert_int_eq(cfg->tls_verify, 0);
	ck_assert_str_eq(cfg->ca_file, "/etc/my-ca.pem");
	config_free(cfg);
}
END_TEST

static void
check_config_error(const char *text, int line, const char *needle)
{
	struct config *cfg;
	char err[512], want[600], *path;

	ck_assert_int_eq(
	    load_text(&cfg, text, NULL, err, sizeof err, &path), -1);
	snprintf(want, sizeof want, "%s:%d: ", path, line);
	ck_assert_msg(strncmp(err, want, strlen(want)) == 0,
	    "want prefix '%s', got '%s'", want, err);
	ck_assert_msg(
	    strstr(err, needle) != NULL, "want '%s' in '%s'", needle, err);
	unlink(path);
	free(path);
	config_free(cfg);
}

START_TEST(test_config_errors_name_file_and_line)
{
	check_config_error(
	    "[upstream]\n\npool_maxsize = banana\n", 3, "pool_maxsize");
	check_config_error("[upstream]\npool_maxsize = 0\n", 2, "between");
	check_config_error("[server]\nlisten = nowhere\n", 2, "nowhere");
	check_config_error("[server]\nlisten = 127.0.0.1:1\nfrobnicate = 1\n",
	    3, "unknown key 'frobnicate'");
	check_config_error("pool_maxsize = 3\n", 1, "outside of a section");
	check_config_error("[upstream]\nurl = ftp://x\n", 2, "scheme");
	check_config_error("[upstream]\n[upstream\n", 2, "syntax error");
	check_config_error("[upstream]\ntls_verify = maybe\n", 2, "yes or no");
	check_config_error("[upstream]\npool_maxsize = 2\n"
	                   "pool_connections = 5\n",
	    3, "cannot exceed");
	check_config_error("[upstream]\npool_connections = 5\n"
	                   "pool_maxsize = 2\n",
	    2, "cannot exceed");
	check_config_error("[server]\nlisten = 127.0.0.1:7777\n"
	                   "[upstream]\nurl = http://127.0.0.1:7777\n",
	    4, "loop back");
}
END_TEST

START_TEST(test_config_idle_default_follows_small_pool)
{
	struct config *cfg;
	char err[512];

	ck_assert_msg(load_text(&cfg, "[upstream]\npool_maxsize = 4\n", NULL,
	                  err, sizeof err, NULL) == 0,
	    "%s", err);
	ck_assert_int_eq(cfg->pool_maxsize, 4);
	ck_assert_int_eq(cfg->pool_connections, 4);
	config_free(cfg);
}
END_TEST

START_TEST(test_config_overrides_win)
{
	struct config_overrides ov;
	struct config *cfg;
	char err[512];

	memset(&ov, 0, sizeof ov);
	ov.listen[0] = "127.0.0.1:7101";
	ov.listen[1] = "[::1]:7102";
	ov.nlisten = 2;
	ov.upstream = "http://127.0.0.1:7200";
	ck_assert_msg(load_text(&cfg,
	                  "[server]\nlisten = 127.0.0.1:7001\n"
	                  "[upstream]\nurl = http://127.0.0.1:7002\n",
	                  &ov, err, sizeof err, NULL) == 0,
	    "%s", err);
	ck_assert_int_eq(cfg->nlisten, 2);
	ck_assert_str_eq(cfg->listen[0].text, "127.0.0.1:7101");
	ck_assert_str_eq(cfg->listen[1].text, "[::1]:7102");
	ck_assert_str_eq(cfg->upstream.base, "http://127.0.0.1:7200");
	config_free(cfg);

	ov.upstream = "http://127.0.0.1:7101";
	ck_assert_int_eq(
	    load_text(&cfg, "[server]\n", &ov, err, sizeof err, NULL), -1);
	ck_assert_msg(strncmp(err, "--upstream: ", 12) == 0, "%s", err);
	config_free(cfg);
}
END_TEST

START_TEST(test_config_missing_file)
{
	struct config *cfg = config_new_defaults();
	char err[512];

	ck_assert_int_eq(
	    config_load(cfg, "/nonexistent/op.conf", NULL, err, sizeof err),
	    -1);
	ck_assert_str_eq(
	    err, "/nonexistent/op.conf: No such file or directory");
	config_free(cfg);
}
END_TEST

/* --- headers.c and httpreq.c ------------------------------------------- */

struct parsed {
	struct http_head *head;
	int heads, completes;
	char body[4096];
	size_t body_len;
	int complete_continues;
};

static int
parsed_on_head(void *arg, struct http_head *h)
{
	struct parsed *p = arg;

	p->head = h;
	p->heads++;
	return 0;
}

static int
parsed_on_body(void *arg, const char *data, size_t len)
{
	struct parsed *p = arg;

	ck_assert_uint_le(p->body_len + len, sizeof p->body);
	memcpy(p->body + p->body_len, data, len);
	p->body_len += len;
	return 0;
}

static int
parsed_on_complete(void *arg)
{
	struct parsed *p = arg;

	p->completes++;
	return p->complete_continues;
}

/* The front door's defaults; a test may change them and must restore. */
static struct httpreq_limits limits = {32768, 0, HTTPREQ_MAX_FIELDS};

static const struct httpreq_cb parsed_cb = {
    .on_head = parsed_on_head,
    .on_body = parsed_on_body,
    .on_complete = parsed_on_complete,
};

/* Feeds text one byte at a time: every field arrives in pieces. */
static ssize_t
feed_bytewise(struct httpreq *hr, const char *text)
{
	size_t i, len = strlen(text);
	ssize_t n;

	for (i = 0; i < len; i++) {
		n = httpreq_feed(hr, text + i, 1);
		if (n < 0)
			return -1;
		if (n == 0)
			break;
	}
	return (ssize_t)i;
}

static const char *
header_value(struct http_head *h, const char *name)
{
	return head_get(h, name, NULL);
}

START_TEST(test_httpreq_head_in_pieces)
{
	static const char req[] = "POST /api/chat?x=1 HTTP/1.1\r\n"
	                          "Host: example\r\n"
	                          "X-Empty:\r\n"
	                          "X-Long: a b  c\r\n"
	                          "Content-Length: 5\r\n\r\nhello";
	struct parsed p;
	struct httpreq hr;

	memset(&p, 0, sizeof p);
	httpreq_init(&hr, &limits, &parsed_cb, &p);
	ck_assert_int_eq(feed_bytewise(&hr, req), (ssize_t)strlen(req));
	ck_assert_int_eq(p.heads, 1);
	ck_assert_int_eq(p.completes, 1);
	ck_assert_str_eq(head_str(p.head, p.head->target), "/api/chat?x=1");
	ck_assert_uint_eq(p.head->nhdrs, 4);
	ck_assert_str_eq(header_value(p.head, "host"), "example");
	ck_assert_str_eq(header_value(p.head, "x-empty"), "");
	ck_assert_str_eq(header_value(p.head, "X-LONG"), "a b  c");
	ck_assert(p.head->has_content_length);
	ck_assert_uint_eq(p.head->content_length, 5);
	ck_assert_uint_eq(p.body_len, 5);
	ck_assert(memcmp(p.body, "hello", 5) == 0);
	ck_assert(p.head->keep_alive);
	httpreq_free(&hr);
}
END_TEST

/*
 * The front door's framing rules (issue: strict HTTP).  Each request must
 * be refused with its status before anything of it could be forwarded.
 */
START_TEST(test_httpreq_strict_framing)
{
	static const struct {
		const char *req;
		int status;
	} cases[] = {
	    /* 1. Content-Length and Transfer-Encoding together. */
	    {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
	     "Transfer-Encoding: chunked\r\n\r\n",
	        400},
	    /* 2. Conflicting or malformed Content-Length. */
	    {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
	     "Content-Length: 6\r\n\r\n",
	        400},
	    {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n", 400},
	    {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n", 400},
	    {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400},
	    {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", 400},
	    {"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5,6\r\n\r\n", 400},
	    {"POST / HTTP/1.1\r\nHost: h\r\n"
	     "Content-Length: 99999999999999999999\r\n\r\n",
	        400},
	    /* 3. Transfer codings. */
	    {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
	        501},
	    {"POST / HTTP/1.1\r\nHost: h\r\n"
	     "Transfer-Encoding: identity\r\n\r\n",
	        501},
	    {"POST / HTTP/1.1\r\nHost: h\r\n"
	     "Transfer-Encoding: chunked, identity\r\n\r\n",
	        501},
	    {"POST / HTTP/1.1\r\nHost: h\r\n"
	     "Transfer-Encoding: ,chunked\r\n\r\n",
	        400},
	    {"POST / HTTP/1.1\r\nHost: h\r\n"
	     "Transfer-Encoding: chunked, chunked\r\n\r\n",
	        400},
	    {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
	     "Transfer-Encoding: chunked\r\n\r\n",
	        400},
	    {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
	    /* 4. Chunk sizes and data. */
	    {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
	     "\r\n0x5\r\nabcde\r\n0\r\n\r\n",
	        400},
	    {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
	     "\r\n+5\r\nabcde\r\n0\r\n\r\n",
	        400},
	    {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
	     "\r\n 5\r\nabcde\r\n0\r\n\r\n",
	        400},
	    {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
	     "\r\n00000000000000005\r\nabcde\r\n0\r\n\r\n",
	        400},
	    {"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
	     "\r\n3\r\nabcdef\r\n0\r\n\r\n",
	        400},
	    /* 5. Line ends, folding, names and values. */
	    {"GET / HTTP/1.1\nHost: h\n\n", 400},
	    {"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 400},
	    {"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400},
	    {"GET / HTTP/1.1\r\nHost: h\r\nX Y: a\r\n\r\n", 400},
	    {"GET / HTTP/1.1\r\nHost: h\r\nX\x01Y: a\r\n\r\n", 400},
	    {"GET / HTTP/1.1\r\nHost: h\r\nX : a\r\n\r\n", 400},
	    {"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400},
	    {"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400},
	    /* 6. Host and versions. */
	    {"GET / HTTP/1.1\r\n\r\n", 400},
	    {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
	    {"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505},
	    {"GET / HTTP/3.0\r\nHost: h\r\n\r\n", 505},
	    {"GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400},
	    {"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
	    /* Expectations we cannot meet. */
	    {"GET / HTTP/1.1\r\nHost: h\r\nExpect: teapot\r\n\r\n", 417},
	};
	struct parsed p;
	struct httpreq hr;
	size_t i, len;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		memset(&p, 0, sizeof p);
		httpreq_init(&hr, &limits, &parsed_cb, &p);
		len = strlen(cases[i].req);
		if (strstr(cases[i].req, "X\x01Y") == NULL)
			ck_assert_msg(feed_bytewise(&hr, cases[i].req) == -1,
			    "case %zu accepted: %s", i, cases[i].req);
		else
			ck_assert_int_eq(
			    httpreq_feed(&hr, cases[i].req, len), -1);
		ck_assert_msg(hr.error_status == cases[i].status,
		    "case %zu: status %d, want %d (%s)", i, hr.error_status,
		    cases[i].status, hr.error);
		/* Nothing of a refused body may have been delivered. */
		ck_assert_msg(p.body_len == 0 || cases[i].status == 400,
		    "case %zu delivered body", i);
		httpreq_free(&hr);
	}
}
END_TEST

START_TEST(test_httpreq_lenient_where_allowed)
{
	static const char *ok[] = {
	    /* Identical Content-Length values count as one. */
	    "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
	    "Content-Length: 3\r\n\r\nabc",
	    "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc",
	    /* Chunk extensions are ignored; trailers are dropped. */
	    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n"
	    "3;name=\"v\"\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n",
	    /* A higher 1.x minor is served as 1.1; empty lines before a
	     * request are skipped. */
	    "\r\nGET / HTTP/1.9\r\nHost: h\r\n\r\n",
	    /* HTTP/1.0 needs no Host. */
	    "GET / HTTP/1.0\r\n\r\n",
	    /* Upgrade is just a header here: it is never passed on. */
	    "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\n"
	    "Connection: Upgrade\r\n\r\n",
	};
	struct parsed p;
	struct httpreq hr;
	size_t i;

	for (i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		memset(&p, 0, sizeof p);
		httpreq_init(&hr, &limits, &parsed_cb, &p);
		ck_assert_msg(
		    feed_bytewise(&hr, ok[i]) == (ssize_t)strlen(ok[i]),
		    "case %zu refused: %d %s", i, hr.error_status, hr.error);
		ck_assert_int_eq(p.completes, 1);
		if (strncmp(ok[i], "POST", 4) == 0) {
			ck_assert_uint_eq(p.body_len, 3);
			ck_assert(memcmp(p.body, "abc", 3) == 0);
		}
		if (strstr(ok[i], "1.9") != NULL)
			ck_assert_int_eq(p.head->http_minor, 1);
		httpreq_free(&hr);
	}
}
END_TEST

START_TEST(test_httpreq_length_limits)
{
	struct parsed p;
	struct httpreq hr;
	char *req = malloc(20000);
	size_t len;

	/* A request line over 8 KiB: 414. */
	limits.max_head = 65536;
	len = sprintf(req, "GET /");
	memset(req + len, 'a', 9000);
	len += 9000;
	len += sprintf(req + len, " HTTP/1.1\r\nHost: h\r\n\r\n");
	memset(&p, 0, sizeof p);
	httpreq_init(&hr, &limits, &parsed_cb, &p);
	ck_assert_int_eq(httpreq_feed(&hr, req, len), -1);
	ck_assert_int_eq(hr.error_status, 414);
	httpreq_free(&hr);
	limits.max_head = 32768;

	/* A body over max_body_size: 413 before any of it, declared or
	 * chunked. */
	limits.max_body = 4;
	memset(&p, 0, sizeof p);
	httpreq_init(&hr, &limits, &parsed_cb, &p);
	len = sprintf(req,
	    "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
	    "Expect: 100-continue\r\n\r\n");
	ck_assert_int_eq(httpreq_feed(&hr, req, len), -1);
	ck_assert_int_eq(hr.error_status, 413);
	ck_assert_int_eq(p.heads, 0);
	httpreq_free(&hr);
	memset(&p, 0, sizeof p);
	httpreq_init(&hr, &limits, &parsed_cb, &p);
	len = sprintf(req,
	    "POST / HTTP/1.1\r\nHost: h\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
	    "3\r\ndef\r\n0\r\n\r\n");
	ck_assert_int_eq(httpreq_feed(&hr, req, len), -1);
	ck_assert_int_eq(hr.error_status, 413);
	ck_assert_uint_le(p.body_len, 4);
	httpreq_free(&hr);
	limits.max_body = 0;
	free(req);
}
END_TEST

START_TEST(test_httpreq_chunked_body)
{
	static const char req[] = "PUT /x HTTP/1.1\r\nHost: h\r\n"
	                          "Transfer-Encoding: chunked\r\n\r\n"
	                          "3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n";
	struct parsed p;
	struct httpreq hr;

	memset(&p, 0, sizeof p);
	httpreq_init(&hr, &limits, &parsed_cb, &p);
	ck_assert_int_eq(
	    httpreq_feed(&hr, req, strlen(req)), (ssize_t)strlen(req));
	ck_assert(p.head->chunked);
	ck_assert_uint_eq(p.body_len, 7);
	ck_assert(memcmp(p.body, "abcdefg", 7) == 0);
	ck_assert_int_eq(p.completes, 1);
	httpreq_free(&hr);
}
END_TEST

START_TEST(test_httpreq_pauses_between_pipelined_requests)
{
	static const char two[] = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
	                          "GET /b HTTP/1.1\r\nHost: h\r\n\r\n";
	size_t first = strlen("GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
	struct parsed p;
	struct httpreq hr;
	ssize_t n;

	memset(&p, 0, sizeof p);
	httpreq_init(&hr, &limits, &parsed_cb, &p);
	n = httpreq_feed(&hr, two, strlen(two));
	ck_assert_int_eq(n, (ssize_t)first);
	ck_assert(hr.paused);
	ck_assert_str_eq(head_str(p.head, p.head->target), "/a");
	httpreq_resume(&hr);
	n = httpreq_feed(&hr, two + first, strlen(two) - first);
	ck_assert_int_eq(n, (ssize_t)(strlen(two) - first));
	ck_assert_int_eq(p.heads, 2);
	ck_assert_str_eq(head_str(p.head, p.head->target), "/b");
	httpreq_free(&hr);
}
END_TEST

START_TEST(test_httpreq_errors_carry_status)
{
	static const struct {
		const char *req;
		int status;
	} cases[] = {
	    {"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400},
	    {"GET / HTTP/1.1\r\nContent-Length: 1\r\n"
	     "Transfer-Encoding: chunked\r\n\r\n",
	        400},
	    {"BREW / HTTP/1.1\r\nHost: h\r\n\r\n", 501},
	};
	struct parsed p;
	struct httpreq hr;
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		memset(&p, 0, sizeof p);
		httpreq_init(&hr, &limits, &parsed_cb, &p);
		ck_assert_msg(
		    httpreq_feed(&hr, cases[i].req, strlen(cases[i].req)) == -1,
		    "accepted case %zu", i);
		ck_assert_int_eq(hr.error_status, cases[i].status);
		ck_assert_ptr_nonnull(hr.error);
		httpreq_free(&hr);
	}
}
END_TEST

START_TEST(test_httpreq_header_limits)
{
	struct parsed p;
	struct httpreq hr;
	char *req;
	size_t len = 0;
	int i;

	/* More header fields than allowed: 431. */
	req = malloc(64 * 200 + 64);
	len = sprintf(req, "GET / HTTP/1.1\r\n");
	for (i = 0; i < 150; i++)
		len += sprintf(req + len, "X-H%d: v\r\n", i);
	len += sprintf(req + len, "\r\n");
	memset(&p, 0, sizeof p);
	httpreq_init(&hr, &limits, &parsed_cb, &p);
	ck_assert_int_eq(httpreq_feed(&hr, req, len), -1);
	ck_assert_int_eq(hr.error_status, 431);
	httpreq_free(&hr);

	/* More header bytes than max_header_size: 431. */
	limits.max_head = 1024;
	len = sprintf(req, "GET / HTTP/1.1\r\nX-Big: ");
	memset(req + len, 'a', 2000);
	len += 2000;
	len += sprintf(req + len, "\r\n\r\n");
	memset(&p, 0, sizeof p);
	httpreq_init(&hr, &limits, &parsed_cb, &p);
	ck_assert_int_eq(httpreq_feed(&hr, req, len), -1);
	ck_assert_int_eq(hr.error_status, 431);
	httpreq_free(&hr);
	limits.max_head = 32768;
	free(req);
}
END_TEST

/* Feeds len bytes at once or one by one; -1 on refusal, else the bytes
 * taken before the parser paused or ran out. */
static ssize_t
feed_case(struct httpreq *hr, const char *data, size_t len, int bytewise)
{
	size_t i;
	ssize_t n;

	if (!bytewise)
		return httpreq_feed(hr, data, len);
	for (i = 0; i < len; i++) {
		n = httpreq_feed(hr, data + i, 1);
		if (n < 0)
			return -1;
		if (n == 0)
			break;
	}
	return (ssize_t)i;
}

#define CHUNKED_HEAD                                                           \
	"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
#define BODY13 "hello, world!" /* 0xd bytes */
/* A case given by its bytes, which may hold a NUL. */
#define RQ(s) s, sizeof(s) - 1

/* One request: 0 wants it served whole with body (when not NULL),
 * otherwise the status it is refused with. */
static void
check_one_request(
    const char *name, const char *req, size_t len, int status, const char *body)
{
	struct parsed p;
	struct httpreq hr;
	ssize_t n;
	int bytewise;

	for (bytewise = 0; bytewise <= 1; bytewise++) {
		memset(&p, 0, sizeof p);
		httpreq_init(&hr, &limits, &parsed_cb, &p);
		n = feed_case(&hr, req, len, bytewise);
		if (status == 0) {
			ck_assert_msg(n == (ssize_t)len && p.completes == 1,
			    "%s (%s): refused: %d %s", name,
			    bytewise ? "bytewise" : "whole", hr.error_status,
			    hr.error ? hr.error : "");
			if (body != NULL)
				ck_assert_msg(p.body_len == strlen(body) &&
				        memcmp(p.body, body, p.body_len) == 0,
				    "%s: body %.*s", name, (int)p.body_len,
				    p.body);
		} else {
			ck_assert_msg(n == -1, "%s (%s): accepted", name,
			    bytewise ? "bytewise" : "whole");
			ck_assert_msg(hr.error_status == status,
			    "%s (%s): status %d, want %d (%s)", name,
			    bytewise ? "bytewise" : "whole", hr.error_status,
			    status, hr.error);
			ck_assert_int_eq(p.completes, 0);
		}
		httpreq_free(&hr);
	}
}

/*
 * Chunk lines and trailers by RFC 9112's grammar (7.1.1, 7.1.2):
 * chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ), the name
 * a token, the value a token or quoted-string; a trailer a field line.
 * Today's lenient "anything up to CRLF" accepted every refused case.
 */
START_TEST(test_httpreq_chunk_grammar)
{
	static const struct {
		const char *name;
		const char *body;
		size_t len;
		int status;
	} cases[] = {
	    {"ext name", RQ("d;a\r\n" BODY13 "\r\n0\r\n\r\n"), 0},
	    {"ext with BWS", RQ("d ; a = b\r\n" BODY13 "\r\n0\r\n\r\n"), 0},
	    {"ext tabs", RQ("d\t;\ta\t=\tb\r\n" BODY13 "\r\n0\r\n\r\n"), 0},
	    {"ext quoted, escaped quote",
	        RQ("d;a=\"x\\\"y\"\r\n" BODY13 "\r\n0\r\n\r\n"), 0},
	    {"ext quoted, ; and = inside",
	        RQ("d;a=\"q;x=y \\\\\"\r\n" BODY13 "\r\n0\r\n\r\n"), 0},
	    {"ext list", RQ("d;a=1;b;c=\"\" ;d\r\n" BODY13 "\r\n0;e\r\n\r\n"),
	        0},
	    {"trailer", RQ("d\r\n" BODY13 "\r\n0\r\nX-T: v\r\n\r\n"), 0},
	    {"trailers, empty value",
	        RQ("d\r\n" BODY13 "\r\n0\r\nX-T: v\r\nX-E:\r\n\r\n"), 0},
	    {"ext value missing", RQ("d;a=\r\n" BODY13 "\r\n0\r\n\r\n"), 400},
	    {"ext value missing before ;",
	        RQ("d;a=;b\r\n" BODY13 "\r\n0\r\n\r\n"), 400},
	    {"ext name missing", RQ("d;\r\n" BODY13 "\r\n0\r\n\r\n"), 400},
	    {"ext name missing, value", RQ("d;=b\r\n" BODY13 "\r\n0\r\n\r\n"),
	        400},
	    {"size then junk", RQ("d junk\r\n" BODY13 "\r\n0\r\n\r\n"), 400},
	    {"size then space", RQ("d \r\n" BODY13 "\r\n0\r\n\r\n"), 400},
	    {"ext name then junk", RQ("d;a b\r\n" BODY13 "\r\n0\r\n\r\n"), 400},
	    {"ext value then junk", RQ("d;a=b c\r\n" BODY13 "\r\n0\r\n\r\n"),
	        400},
	    {"ext name not a token", RQ("d;a@b\r\n" BODY13 "\r\n0\r\n\r\n"),
	        400},
	    {"ext quoted unterminated",
	        RQ("d;a=\"x\r\n" BODY13 "\r\n0\r\n\r\n"), 400},
	    {"ext quoted then junk",
	        RQ("d;a=\"x\"y\r\n" BODY13 "\r\n0\r\n\r\n"), 400},
	    {"ext quoted control byte",
	        RQ("d;a=\"x\x01\"\r\n" BODY13 "\r\n0\r\n\r\n"), 400},
	    {"ext quoted-pair of a control byte",
	        RQ("d;a=\"x\\\x7f\"\r\n" BODY13 "\r\n0\r\n\r\n"), 400},
	    {"ext NUL", RQ("d;a\0\r\n" BODY13 "\r\n0\r\n\r\n"), 400},
	    {"ext bare LF", RQ("d;a\n" BODY13 "\r\n0\r\n\r\n"), 400},
	    {"trailer name with space",
	        RQ("d\r\n" BODY13 "\r\n0\r\nBad Name: x\r\n\r\n"), 400},
	    {"trailer without colon",
	        RQ("d\r\n" BODY13 "\r\n0\r\nNoColon\r\n\r\n"), 400},
	    {"trailer leading space",
	        RQ("d\r\n" BODY13 "\r\n0\r\n lead: x\r\n\r\n"), 400},
	    {"trailer name control byte",
	        RQ("d\r\n" BODY13 "\r\n0\r\nX\x01T: v\r\n\r\n"), 400},
	    {"trailer space before colon",
	        RQ("d\r\n" BODY13 "\r\n0\r\nX-T : v\r\n\r\n"), 400},
	    {"trailer value NUL",
	        RQ("d\r\n" BODY13 "\r\n0\r\nX-T: a\0b\r\n\r\n"), 400},
	    {"trailer value bare CR",
	        RQ("d\r\n" BODY13 "\r\n0\r\nX-T: a\rb\r\n\r\n"), 400},
	    {"trailer bare LF", RQ("d\r\n" BODY13 "\r\n0\r\nX-T: v\n\r\n"),
	        400},
	};
	char req[512];
	size_t i, hl = strlen(CHUNKED_HEAD);

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		ck_assert_uint_lt(hl + cases[i].len, sizeof req);
		memcpy(req, CHUNKED_HEAD, hl);
		memcpy(req + hl, cases[i].body, cases[i].len);
		check_one_request(cases[i].name, req, hl + cases[i].len,
		    cases[i].status, BODY13);
	}
}
END_TEST

/* The extensions of one chunk line are capped (4 KiB: 400), and count
 * against max_body_size (413), so they cannot stream on for free. */
START_TEST(test_httpreq_chunk_ext_limits)
{
	size_t hl = strlen(CHUNKED_HEAD), len;
	char *req = malloc(hl + (2 << 20) + 64);

	ck_assert_ptr_nonnull(req);
	/* Within the cap: served. */
	len = sprintf(req, CHUNKED_HEAD "d;a=");
	memset(req + len, 'x', 4000);
	len += 4000;
	len += sprintf(req + len, "\r\n" BODY13 "\r\n0\r\n\r\n");
	check_one_request("a 4004 byte extension", req, len, 0, BODY13);
	/* Over it: 400. */
	len = sprintf(req, CHUNKED_HEAD "d;a=");
	memset(req + len, 'x', 5000);
	len += 5000;
	len += sprintf(req + len, "\r\n" BODY13 "\r\n0\r\n\r\n");
	check_one_request("a 5004 byte extension", req, len, 400, NULL);
	/* A quoted value counts the same. */
	len = sprintf(req, CHUNKED_HEAD "d;a=\"");
	memset(req + len, ' ', 5000);
	len += 5000;
	len += sprintf(req + len, "\"\r\n" BODY13 "\r\n0\r\n\r\n");
	check_one_request("a 5006 byte quoted extension", req, len, 400, NULL);

	/* Extensions push the body over max_body_size: 413, though the
	 * data alone (about 100 bytes) is within it. */
	limits.max_body = 1000;
	len = sprintf(req, CHUNKED_HEAD);
	while (len < hl + 3000)
		len += sprintf(req + len, "1;abcdefghij=klmnopqrst\r\nx\r\n");
	len += sprintf(req + len, "0\r\n\r\n");
	check_one_request("extensions over max_body_size", req, len, 413, NULL);
	/* "d;" and 2 MiB of extension: refused long before its end. */
	len = sprintf(req, CHUNKED_HEAD "d;");
	memset(req + len, 'a', 2 << 20);
	len += 2 << 20;
	len += sprintf(req + len, "\r\n" BODY13 "\r\n0\r\n\r\n");
	check_one_request("d; and 2 MiB", req, len, 413, NULL);
	limits.max_body = 0;
	check_one_request("d; and 2 MiB, no body limit", req, len, 400, NULL);
	free(req);
}
END_TEST

/* RFC 9112 3.2: a request target has no fragment.  curl would cut it, so
 * the admin prefix check would see another path than the one sent. */
START_TEST(test_httpreq_target_fragment)
{
	static const char *refused[] = {
	    "GET /ollama-pool#/metrics HTTP/1.1\r\nHost: h\r\n\r\n",
	    "GET /api/tags#x HTTP/1.1\r\nHost: h\r\n\r\n",
	    "GET /a?b=1#c HTTP/1.1\r\nHost: h\r\n\r\n",
	    "GET http://x/#f HTTP/1.1\r\nHost: h\r\n\r\n",
	    "GET # HTTP/1.1\r\nHost: h\r\n\r\n",
	};
	size_t i;

	for (i = 0; i < sizeof refused / sizeof refused[0]; i++)
		check_one_request(
		    refused[i], refused[i], strlen(refused[i]), 400, NULL);
	check_one_request("a query is no fragment",
	    RQ("GET /a?b=%23c HTTP/1.1\r\nHost: h\r\n\r\n"), 0, NULL);
}
END_TEST

/* Origin form is sent as it is; absolute form loses its scheme and
 * authority only, its query kept byte for byte; other forms: none. */
START_TEST(test_httpreq_target_path)
{
	static const struct {
		const char *target;
		const char *path; /* NULL: refused (400) */
	} cases[] = {
	    {"/", "/"},
	    {"/api/chat?x=1&y=%20", "/api/chat?x=1&y=%20"},
	    {"http://x?a=1", "/?a=1"},
	    {"http://x", "/"},
	    {"http://x/", "/"},
	    {"http://x?", "/?"},
	    {"http://x/p?q=1&r", "/p?q=1&r"},
	    {"HTTP://Other.Host:1234/api/ps?x=1", "/api/ps?x=1"},
	    {"https://x/v1/models", "/v1/models"},
	    {"hTtPs://[::1]:8443?z", "/?z"},
	    {"http://x//two?/q", "//two?/q"},
	    {"*", NULL},
	    {"other.host:443", NULL},
	    {"ftp://x/p", NULL},
	    {"http:/x/p", NULL},
	    {"http:x", NULL},
	    {"http://", NULL},
	    {"http:///p", NULL},
	    {"http://?q", NULL},
	    {"http://:80/p", NULL},
	    {"http://user@x/p", NULL},
	    {"http://x\"y/p", NULL},
	    {"httpx://x/p", NULL},
	    {"", NULL},
	};
	size_t i;
	char *p;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		p = httpreq_target_path(
		    cases[i].target, strlen(cases[i].target));
		if (cases[i].path == NULL)
			ck_assert_msg(
			    p == NULL, "'%s' gave '%s'", cases[i].target, p);
		else
			ck_assert_msg(
			    p != NULL && strcmp(p, cases[i].path) == 0,
			    "'%s' gave '%s', want '%s'", cases[i].target,
			    p ? p : "(refused)", cases[i].path);
		free(p);
	}
}
END_TEST

/* Our method table: the nine we know, by their exact (case-sensitive)
 * names; anything else is 501.  retry_methods takes the same names. */
START_TEST(test_httpreq_methods)
{
	static const struct {
		const char *name;
		int method;
	} known[] = {
	    {"GET", METHOD_GET},
	    {"HEAD", METHOD_HEAD},
	    {"POST", METHOD_POST},
	    {"PUT", METHOD_PUT},
	    {"DELETE", METHOD_DELETE},
	    {"PATCH", METHOD_PATCH},
	    {"OPTIONS", METHOD_OPTIONS},
	    {"CONNECT", METHOD_CONNECT},
	    {"TRACE", METHOD_TRACE},
	};
	static const char *unknown[] = {
	    "BREW", "PROPFIND", "get", "Post", "GETS", "PURGE"};
	struct config *cfg = config_new_defaults();
	struct parsed p;
	struct httpreq hr;
	char req[128], err[256];
	size_t i;

	ck_assert_int_eq(METHOD_COUNT, 9);
	for (i = 0; i < sizeof known / sizeof known[0]; i++) {
		ck_assert_str_eq(
		    httpreq_method_name(known[i].method), known[i].name);
		ck_assert_int_eq(
		    httpreq_method_lookup(known[i].name), known[i].method);
		snprintf(req, sizeof req, "%s / HTTP/1.1\r\nHost: h\r\n\r\n",
		    known[i].name);
		check_one_request(known[i].name, req, strlen(req), 0, NULL);
		memset(&p, 0, sizeof p);
		httpreq_init(&hr, &limits, &parsed_cb, &p);
		ck_assert_int_eq(
		    httpreq_feed(&hr, req, strlen(req)), (ssize_t)strlen(req));
		ck_assert_int_eq(p.head->method, known[i].method);
		httpreq_free(&hr);
	}
	ck_assert_ptr_null(httpreq_method_name(-1));
	ck_assert_ptr_null(httpreq_method_name(METHOD_COUNT));
	for (i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
		ck_assert_int_eq(httpreq_method_lookup(unknown[i]), -1);
		snprintf(req, sizeof req, "%s / HTTP/1.1\r\nHost: h\r\n\r\n",
		    unknown[i]);
		check_one_request(unknown[i], req, strlen(req), 501, NULL);
	}

	ck_assert_int_eq(config_set(cfg, "retry", "retry_methods",
	                     "get, Post,DELETE", err, sizeof err),
	    0);
	ck_assert_uint_eq(cfg->retry_methods,
	    (1u << METHOD_GET) | (1u << METHOD_POST) | (1u << METHOD_DELETE));
	ck_assert_int_eq(config_set(cfg, "retry", "retry_methods",
	                     "GET,PROPFIND", err, sizeof err),
	    -1);
	ck_assert_msg(strstr(err, "'PROPFIND'") != NULL, "%s", err);
	config_free(cfg);
}
END_TEST

static int
slist_has(struct curl_slist *l, const char *line)
{
	for (; l != NULL; l = l->next)
		if (strcmp(l->data, line) == 0)
			return 1;
	return 0;
}

static int
slist_has_prefix(struct curl_slist *l, const char *prefix)
{
	for (; l != NULL; l = l->next)
		if (strncasecmp(l->data, prefix, strlen(prefix)) == 0)
			return 1;
	return 0;
}

START_TEST(test_headers_to_curl_filters_hop_by_hop)
{
	static const char req[] = "POST /api/generate HTTP/1.1\r\n"
	                          "Host: client.example\r\n"
	                          "Connection: keep-alive, X-Hop\r\n"
	                          "Keep-Alive: timeout=5\r\n"
	                          "Proxy-Connection: keep-alive\r\n"
	                          "TE: trailers\r\n"
	                          "Trailer: X-T\r\n"
	                          "Proxy-Authorization: Basic eA==\r\n"
	                          "X-Hop: secret\r\n"
	                          "Authorization: Bearer t\r\n"
	                          "Origin: http://app.example\r\n"
	                          "X-Empty:\r\n"
	                          "Content-Type: application/json\r\n"
	                          "Expect: 100-continue\r\n"
	                          "Content-Length: 2\r\n\r\n{}";
	struct parsed p;
	struct httpreq hr;
	struct curl_slist *l;

	memset(&p, 0, sizeof p);
	httpreq_init(&hr, &limits, &parsed_cb, &p);
	ck_assert_int_eq(
	    httpreq_feed(&hr, req, strlen(req)), (ssize_t)strlen(req));
	l = headers_to_curl(p.head, 1, 0);
	ck_assert(slist_has(l, "Authorization: Bearer t"));
	ck_assert(slist_has(l, "Origin: http://app.example"));
	ck_assert(slist_has(l, "Content-Type: application/json"));
	ck_assert(slist_has(l, "X-Empty;"));
	/* curl's own defaults are switched off. */
	ck_assert(slist_has(l, "Accept:"));
	ck_assert(slist_has(l, "Expect:"));
	ck_assert(!slist_has(l, "Content-Type:"));
	ck_assert(!slist_has_prefix(l, "Host"));
	ck_assert(!slist_has_prefix(l, "Connection"));
	ck_assert(!slist_has_prefix(l, "Keep-Alive"));
	ck_assert(!slist_has_prefix(l, "Proxy-"));
	ck_assert(!slist_has_prefix(l, "TE:"));
	ck_assert(!slist_has_prefix(l, "Trailer"));
	ck_assert(!slist_has_prefix(l, "X-Hop"));
	ck_assert(!slist_has_prefix(l, "Content-Length"));
	ck_assert(!slist_has_prefix(l, "Expect: 100"));
	curl_slist_free_all(l);
	httpreq_free(&hr);
}
END_TEST

START_TEST(test_headers_client_tokens)
{
	static const char req[] = "GET / HTTP/1.1\r\nHost: h\r\n"
	                          "Authorization: Bearer s3cret\r\n\r\n";
	struct parsed p;
	struct httpreq hr;
	struct curl_slist *l;

	memset(&p, 0, sizeof p);
	httpreq_init(&hr, &limits, &parsed_cb, &p);
	ck_assert_int_eq(
	    httpreq_feed(&hr, req, strlen(req)), (ssize_t)strlen(req));
	ck_assert(headers_token_ok(p.head, "other s3cret"));
	ck_assert(headers_token_ok(p.head, "s3cret"));
	ck_assert(!headers_token_ok(p.head, "s3cre"));
	ck_assert(!headers_token_ok(p.head, "s3cret2"));
	ck_assert(!headers_token_ok(p.head, "S3CRET"));
	ck_assert(!headers_token_ok(p.head, ""));
	/* Our token is ours: it does not go upstream. */
	l = headers_to_curl(p.head, 0, 1);
	ck_assert(!slist_has_prefix(l, "Authorization"));
	curl_slist_free_all(l);
	l = headers_to_curl(p.head, 0, 0);
	ck_assert(slist_has(l, "Authorization: Bearer s3cret"));
	curl_slist_free_all(l);
	httpreq_free(&hr);
}
END_TEST

START_TEST(test_config_remote_needs_allow_remote)
{
	struct config *cfg;
	char err[512];

	ck_assert_int_eq(load_text(&cfg, "[server]\nlisten = 0.0.0.0:7301\n",
	                     NULL, err, sizeof err, NULL),
	    -1);
	ck_assert_msg(strstr(err, "allow_remote") != NULL, "%s", err);
	config_free(cfg);
	ck_assert_msg(load_text(&cfg,
	                  "[server]\nlisten = 0.0.0.0:7301\n"
	                  "allow_remote = yes\nclient_tokens = a b\n",
	                  NULL, err, sizeof err, NULL) == 0,
	    "%s", err);
	ck_assert_str_eq(cfg->client_tokens, "a b");
	config_free(cfg);
}
END_TEST

START_TEST(test_headers_token_lists)
{
	ck_assert(head_token_in_list("close", 5, "close"));
	ck_assert(head_token_in_list(" Keep-Alive ,  X-A", 18, "x-a"));
	ck_assert(!head_token_in_list("x-ab", 4, "x-a"));
	ck_assert(!head_token_in_list("", 0, "x"));
	ck_assert(headers_is_hop_by_hop("Transfer-Encoding", 17));
	ck_assert(headers_is_hop_by_hop("upgrade", 7));
	ck_assert(!headers_is_hop_by_hop("Content-Length", 14));
}
END_TEST

START_TEST(test_headers_response_filter)
{
	struct http_head h;
	const char *names[] = {"Content-Type", "Connection", "X-Private",
	    "Transfer-Encoding", "Content-Length", "Keep-Alive"};
	const char *values[] = {"application/x-ndjson", "close, x-private", "1",
	    "chunked", "10", "timeout=5"};
	int keep[] = {1, 0, 0, 0, 1, 0};
	uint32_t i, k;

	memset(&h, 0, sizeof h);
	for (i = 0; i < 6; i++) {
		k = head_add_header(&h);
		h.hdrs[k].name = head_append(&h, names[i], strlen(names[i]));
		h.hdrs[k].name_len = strlen(names[i]);
		head_end_string(&h);
		head_name_done(&h, k);
		h.hdrs[k].value = head_append(&h, values[i], strlen(values[i]));
		h.hdrs[k].value_len = strlen(values[i]);
		head_end_string(&h);
	}
	for (i = 0; i < 6; i++)
		ck_assert_msg(
		    headers_response_keep(&h, i) == keep[i], "%s", names[i]);
	head_free(&h);
}
END_TEST

/* --- metrics.c and tokscan.c ------------------------------------------- */

static char *
evbuffer_text(struct evbuffer *b)
{
	size_t n = evbuffer_get_length(b);
	char *s = malloc(n + 1);

	evbuffer_remove(b, s, n);
	s[n] = '\0';
	return s;
}

START_TEST(test_metrics_label_escaping)
{
	struct evbuffer *b = evbuffer_new();
	char *s;

	metrics_escape_label(b, "a\\b\"c\nd/é");
	s = evbuffer_text(b);
	ck_assert_str_eq(s, "a\\\\b\\\"c\\nd/é");
	free(s);
	evbuffer_free(b);
}
END_TEST

START_TEST(test_metrics_histogram_buckets)
{
	struct histogram h;
	struct evbuffer *b = evbuffer_new();
	char *s;

	memset(&h, 0, sizeof h);
	histogram_observe(&h, 0.001); /* first bucket */
	histogram_observe(&h, 0.005); /* le is inclusive */
	histogram_observe(&h, 0.2); /* 0.25 */
	histogram_observe(&h, 1000); /* only +Inf */
	ck_assert_uint_eq(h.count, 4);
	ck_assert(h.sum > 1000.205 && h.sum < 1000.207);
	metrics_write_histogram(b, "t_seconds", "route", "/api/x\"y", &h);
	s = evbuffer_text(b);
	ck_assert_ptr_nonnull(strstr(
	    s, "t_seconds_bucket{route=\"/api/x\\\"y\",le=\"0.005\"} 2\n"));
	ck_assert_ptr_nonnull(strstr(
	    s, "t_seconds_bucket{route=\"/api/x\\\"y\",le=\"0.1\"} 2\n"));
	ck_assert_ptr_nonnull(strstr(
	    s, "t_seconds_bucket{route=\"/api/x\\\"y\",le=\"0.25\"} 3\n"));
	ck_assert_ptr_nonnull(strstr(
	    s, "t_seconds_bucket{route=\"/api/x\\\"y\",le=\"600\"} 3\n"));
	ck_assert_ptr_nonnull(strstr(
	    s, "t_seconds_bucket{route=\"/api/x\\\"y\",le=\"+Inf\"} 4\n"));
	ck_assert_ptr_nonnull(
	    strstr(s, "t_seconds_count{route=\"/api/x\\\"y\"} 4\n"));
	free(s);
	evbuffer_free(b);
}
END_TEST

START_TEST(test_metrics_routes_are_bounded)
{
	ck_assert_int_eq(metrics_route("/api/generate"), ROUTE_GENERATE);
	ck_assert_int_eq(metrics_route("/api/generate?x=1"), ROUTE_GENERATE);
	ck_assert_int_eq(metrics_route("/api/generatex"), ROUTE_OTHER);
	ck_assert_int_eq(metrics_route("/api/blobs/sha256:abc"), ROUTE_BLOBS);
	ck_assert_int_eq(metrics_route("/v1/models/llama3.2"), ROUTE_V1_MODELS);
	ck_assert_int_eq(metrics_route("/"), ROUTE_ROOT);
	ck_assert_int_eq(metrics_route("/x/../api/tags"), ROUTE_OTHER);
	ck_assert_str_eq(metrics_route_name(ROUTE_OTHER), "other");
}
END_TEST

static const char tok_stream[] =
    "{\"model\":\"llama3.2:latest\",\"response\":\"\\\"eval_count\\\":9 "
    "\",\"done\":false}\n"
    "{\"model\":\"llama3.2:latest\",\"response\":\"\",\"done\":true,"
    "\"context\":[1,2,3],\"prompt_eval_count\":26,"
    "\"prompt_eval_duration\":5,\"eval_count\":290,\"eval_duration\":7}\n";

START_TEST(test_tokscan_any_split)
{
	struct tokscan t;
	size_t len = strlen(tok_stream), cut, i;

	/* Every way of cutting the stream in two gives the same counts. */
	for (cut = 0; cut <= len; cut++) {
		memset(&t, 0, sizeof t);
		tokscan_feed(&t, tok_stream, cut);
		tokscan_feed(&t, tok_stream + cut, len - cut);
		tokscan_finish(&t);
		ck_assert_msg(t.done, "cut %zu", cut);
		ck_assert_uint_eq(t.prompt, 26);
		ck_assert_uint_eq(t.eval, 290);
		ck_assert_str_eq(t.model, "llama3.2:latest");
	}
	/* And byte by byte. */
	memset(&t, 0, sizeof t);
	for (i = 0; i < len; i++)
		tokscan_feed(&t, tok_stream + i, 1);
	tokscan_finish(&t);
	ck_assert_uint_eq(t.eval, 290);
}
END_TEST

START_TEST(test_tokscan_not_done)
{
	static const char s[] = "{\"model\":\"m\",\"response\":\"x\","
	                        "\"done\":false}\n";
	struct tokscan t;

	memset(&t, 0, sizeof t);
	tokscan_feed(&t, s, strlen(s));
	tokscan_finish(&t);
	ck_assert(!t.done);
}
END_TEST

static Suite *
units_suite(void)
{
	Suite *s = suite_create("units");
	TCase *tc;

	tc = tcase_create("addr");
	tcase_add_test(tc, test_upstream_ollama_host_syntax);
	tcase_add_test(tc, test_upstream_rejects_bad_input);
	tcase_add_test(tc, test_listen_forms);
	tcase_add_test(tc, test_listen_rejects_bad_input);
	tcase_add_test(tc, test_upstream_loop_detection);
	suite_add_tcase(s, tc);

	tc = tcase_create("config");
	tcase_add_test(tc, test_config_defaults);
	tcase_add_test(tc, test_config_file_values);
	tcase_add_test(tc, test_config_errors_name_file_and_line);
	tcase_add_test(tc, test_config_idle_default_follows_small_pool);
	tcase_add_test(tc, test_config_overrides_win);
	tcase_add_test(tc, test_config_missing_file);
	suite_add_tcase(s, tc);

	tc = tcase_create("headers");
	tcase_add_test(tc, test_httpreq_head_in_pieces);
	tcase_add_test(tc, test_httpreq_chunked_body);
	tcase_add_test(tc, test_httpreq_pauses_between_pipelined_requests);
	tcase_add_test(tc, test_httpreq_errors_carry_status);
	tcase_add_test(tc, test_httpreq_header_limits);
	tcase_add_test(tc, test_httpreq_strict_framing);
	tcase_add_test(tc, test_httpreq_lenient_where_allowed);
	tcase_add_test(tc, test_httpreq_length_limits);
	tcase_add_test(tc, test_httpreq_chunk_grammar);
	tcase_add_test(tc, test_httpreq_chunk_ext_limits);
	tcase_add_test(tc, test_httpreq_target_fragment);
	tcase_add_test(tc, test_httpreq_target_path);
	tcase_add_test(tc, test_httpreq_methods);
	tcase_add_test(tc, test_headers_to_curl_filters_hop_by_hop);
	tcase_add_test(tc, test_headers_token_lists);
	tcase_add_test(tc, test_headers_client_tokens);
	tcase_add_test(tc, test_config_remote_needs_allow_remote);
	tcase_add_test(tc, test_headers_response_filter);
	suite_add_tcase(s, tc);

	tc = tcase_create("metrics");
	tcase_add_test(tc, test_metrics_label_escaping);
	tcase_add_test(tc, test_metrics_histogram_buckets);
	tcase_add_test(tc, test_metrics_routes_are_bounded);
	tcase_add_test(tc, test_tokscan_any_split);
	tcase_add_test(tc, test_tokscan_not_done);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(units_suite());
	int failed;

	log_init(-5);
	rt.cfg = config_new_defaults(); /* for the config and header tests */
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
