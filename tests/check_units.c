/*
 * Unit suites: address and URL parsing, the configuration table, the
 * header filter and the request parser wrapper.  They link the daemon's
 * own objects (src/libollamapool.a).
 */
#include "config.h"

#include <sys/stat.h>

#include <check.h>
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "ollama-pool.h"

/* --- addr.c ------------------------------------------------------------ */

static void
check_upstream(
    const char *in, int tls, const char *host, int port, const char *base)
{
	struct upstream_url u;
	char err[256];

	ck_assert_msg(addr_parse_upstream(in, &u, err, sizeof err) == 0,
	    "'%s': %s", in, err);
	ck_assert_int_eq(u.tls, tls);
	ck_assert_str_eq(u.host, host);
	ck_assert_int_eq(u.port, port);
	ck_assert_str_eq(u.base, base);
}

START_TEST(test_upstream_ollama_host_syntax)
{
	check_upstream(
	    "example.com", 0, "example.com", 11434, "http://example.com:11434");
	check_upstream("https://ollama.com", 1, "ollama.com", 443,
	    "https://ollama.com:443");
	check_upstream("http://example.com", 0, "example.com", 80,
	    "http://example.com:80");
	check_upstream(":5000", 0, "127.0.0.1", 5000, "http://127.0.0.1:5000");
	check_upstream("", 0, "127.0.0.1", 11434, "http://127.0.0.1:11434");
	/* Quotes and spaces trimmed; a lone trailing slash is no path. */
	check_upstream("  \"http://10.0.0.2:8080/\"  ", 0, "10.0.0.2", 8080,
	    "http://10.0.0.2:8080");
	check_upstream("[::1]:1234", 0, "::1", 1234, "http://[::1]:1234");
	check_upstream("http://[::1]", 0, "::1", 80, "http://[::1]:80");
	check_upstream("http://[::1]/", 0, "::1", 80, "http://[::1]:80");
	check_upstream(
	    "0.0.0.0", 0, "127.0.0.1", 11434, "http://127.0.0.1:11434");
	check_upstream("https://host.example:8443/", 1, "host.example", 8443,
	    "https://host.example:8443");
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

/* A path would prefix every request: refused, saying which and why. */
START_TEST(test_upstream_rejects_path)
{
	static const char *const bad[][2] = {{"http://h/api", "(/api)"},
	    {"http://h:1/v1/", "(/v1/)"}, {"https://h/ollama", "(/ollama)"},
	    {"h:11434/x/../y", "(/x/../y)"}, {"http://h//", "(//)"},
	    {"[::1]:80/api", "(/api)"}};
	struct upstream_url u;
	char err[512];
	size_t i;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err[0] = '\0';
		ck_assert_msg(
		    addr_parse_upstream(bad[i][0], &u, err, sizeof err) == -1,
		    "accepted '%s' (base %s)", bad[i][0], u.base);
		ck_assert_msg(strstr(err, bad[i][0]) != NULL,
		    "message does not quote '%s': %s", bad[i][0], err);
		ck_assert_msg(strstr(err, bad[i][1]) != NULL,
		    "message does not name the path %s: %s", bad[i][1], err);
		ck_assert_msg(strstr(err, "not supported") != NULL &&
		        strstr(err, "scheme://host:port") != NULL,
		    "message does not say why and what to give: %s", err);
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
	    "unix:relative", "::1:80", "[::1]80", "host:", "[localhost]:80",
	    "1.2.3.999:80", "exa mple:80", "-host:80", "a..b:80", "h/x:80",
	    NULL};
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

/* A name is kept to be resolved later: parsing never asks DNS (a name
 * that exists nowhere parses all the same). */
START_TEST(test_listen_names_kept_unresolved)
{
	static const char *const names[][2] = {{"localhost:11435", "localhost"},
	    {"no-such-host.invalid:80", "no-such-host.invalid"},
	    {"_svc.example:1", "_svc.example"}, {"h1:2", "h1"}};
	struct listen_addr la;
	char err[256];
	size_t i;

	for (i = 0; i < sizeof names / sizeof names[0]; i++) {
		ck_assert_msg(
		    addr_parse_listen(names[i][0], &la, err, sizeof err) == 0,
		    "'%s': %s", names[i][0], err);
		ck_assert_int_eq(la.kind, LISTEN_TCP);
		ck_assert_str_eq(la.name, names[i][1]);
		ck_assert_str_eq(la.text, names[i][0]);
		ck_assert_int_eq(la.ss.ss_family, AF_UNSPEC);
		ck_assert_int_eq(la.sslen, 0);
	}
	ck_assert_int_eq(la.port, 2);
	/* Numeric hosts are no names. */
	ck_assert_int_eq(
	    addr_parse_listen("[::1]:8080", &la, err, sizeof err), 0);
	ck_assert_str_eq(la.name, "");
	ck_assert_int_eq(la.ss.ss_family, AF_INET6);
}
END_TEST

START_TEST(test_upstream_loop_detection)
{
	struct listen_addr la[2], resolved;
	struct upstream_url u;
	char err[256];

	ck_assert_int_eq(
	    addr_parse_listen("127.0.0.1:11435", &la[0], err, sizeof err), 0);
	ck_assert_int_eq(
	    addr_parse_listen("0.0.0.0:9999", &la[1], err, sizeof err), 0);
	addr_parse_upstream("127.0.0.1:11435", &u, err, sizeof err);
	ck_assert(!u.host_is_name);
	ck_assert(addr_upstream_is_listen(&u, la, 2));
	/* A wildcard listener also answers on loopback. */
	addr_parse_upstream("127.0.0.1:9999", &u, err, sizeof err);
	ck_assert(addr_upstream_is_listen(&u, la, 2));
	addr_parse_upstream("127.0.0.1:11434", &u, err, sizeof err);
	ck_assert(!addr_upstream_is_listen(&u, la, 2));

	/* A name has no address until resolve.c gives it one. */
	addr_parse_upstream("localhost:11435", &u, err, sizeof err);
	ck_assert(u.host_is_name);
	ck_assert_int_eq(u.naddrs, 0);
	ck_assert(!addr_upstream_is_listen(&u, la, 1));
	addr_parse_listen("[::1]:11435", &resolved, err, sizeof err);
	addr_upstream_resolved(&u, (struct sockaddr *)&resolved.ss,
	    resolved.sslen); /* ::1, not ours */
	ck_assert(!addr_upstream_is_listen(&u, la, 1));
	addr_upstream_resolved(&u, (struct sockaddr *)&la[0].ss, la[0].sslen);
	ck_assert(addr_upstream_is_listen(&u, la, 1));
}
END_TEST

/* --- resolve.c --------------------------------------------------------- */

static void
resolved_cb(struct config *cfg, const char *error, void *arg)
{
	char *out = arg;

	snprintf(out, 512, "%s", error != NULL ? error : "ok");
}

/* Resolves cfg's names on a loop of its own, as the daemon does. */
static const char *
resolve_now(struct config *cfg, char *out)
{
	out[0] = '\0';
	rt.base = event_base_new();
	resolve_init();
	resolve_start(cfg, resolved_cb, out);
	while (rt.resolving != NULL)
		event_base_loop(rt.base, EVLOOP_ONCE);
	resolve_shutdown();
	event_base_free(rt.base);
	rt.base = NULL;
	return out;
}

/* /etc/hosts answers localhost before any DNS server is asked: here the
 * resolver is a port where nothing answers. */
START_TEST(test_resolve_hosts_file)
{
	struct config *cfg = config_new_defaults();
	char err[512], out[512], text[128];

	ck_assert_int_eq(config_set(cfg, "server", "listen",
	                     "localhost:7401 127.0.0.1:7402", err, sizeof err),
	    0);
	ck_assert_int_eq(config_set(cfg, "upstream", "url",
	                     "http://localhost:7401", err, sizeof err),
	    0);
	ck_assert_int_eq(config_set(cfg, "upstream", "resolver", "127.0.0.1:9",
	                     err, sizeof err),
	    0);
	ck_assert_str_eq(resolve_now(cfg, out), "ok");
	addr_format((struct sockaddr *)&cfg->listen[0].ss, cfg->listen[0].sslen,
	    text, sizeof text);
	ck_assert_str_eq(text, "127.0.0.1:7401");
	ck_assert(addr_is_loopback(&cfg->listen[0]));
	ck_assert_int_ge(cfg->upstream.naddrs, 1);
	/* Resolved, the upstream is found to be ourselves. */
	ck_assert_int_eq(config_check_addresses(cfg, err, sizeof err), -1);
	ck_assert_msg(strstr(err, "loop back") != NULL, "%s", err);
	config_free(cfg);
}
END_TEST

START_TEST(test_resolver_setting)
{
	static const char *const good[] = {"127.0.0.1", "127.0.0.1:5353",
	    "[::1]:53", "::1", "10.0.0.1 10.0.0.2:54", ""};
	static const char *const bad[] = {
	    "dns.example", "127.0.0.1:x", "1.2.3.4:99999", "[::1"};
	struct config *cfg = config_new_defaults();
	char err[512];
	size_t i;

	ck_assert_str_eq(cfg->resolver, "");
	for (i = 0; i < sizeof good / sizeof good[0]; i++)
		ck_assert_msg(config_set(cfg, "upstream", "resolver", good[i],
		                  err, sizeof err) == 0,
		    "'%s': %s", good[i], err);
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ck_assert_msg(config_set(cfg, "upstream", "resolver", bad[i],
		                  err, sizeof err) == -1,
		    "accepted '%s'", bad[i]);
		ck_assert_msg(strstr(err, bad[i]) != NULL, "%s", err);
	}
	config_free(cfg);
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

/* Every error of a load, one a line, into err. */
static void
join_errors(struct config_errors *errs, char *err, size_t errlen)
{
	size_t n = 0;
	int i;

	err[0] = '\0';
	for (i = 0; i < errs->n; i++)
		n += snprintf(err + n, n < errlen ? errlen - n : 0, "%s%s",
		    i ? "\n" : "", errs->line[i]);
	config_errors_free(errs);
}

static int
load_text(struct config **cfgp, const char *text,
    const struct config_overrides *ov, char *err, size_t errlen, char **pathp)
{
	struct config_errors errs;
	char *path = write_temp(text);
	int rc;

	*cfgp = config_new_defaults();
	rc = config_load(*cfgp, path, ov, &errs);
	join_errors(&errs, err, errlen);
	/* Then the checks the daemon makes once names are resolved; these
	 * files have numeric addresses only. */
	if (rc == 0)
		rc = config_check_addresses(*cfgp, err, errlen);
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
	                  "[upstream]\nurl = https://gpu.example/\n"
	                  "pool_maxsize = 4\npool_connections = 2\n"
	                  "queue_max = 7\nconnect_timeout = 2.5\n"
	                  "tls_verify = no\nca_file = /etc/my-ca.pem\n",
	                  NULL, err, sizeof err, NULL) == 0,
	    "%s", err);
	ck_assert_int_eq(cfg->nlisten, 2);
	ck_assert_str_eq(cfg->listen[1].text, "unix:/tmp/x.sock");
	ck_assert_uint_eq(cfg->max_buffer, 65536);
	ck_assert_str_eq(cfg->upstream.base, "https://gpu.example:443");
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
	check_config_error(
	    "[upstream]\n\nurl = http://h:11434/api\n", 3, "a path (/api)");
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

	/* -u is refused with a path as the file's url is. */
	ov.upstream = "http://127.0.0.1:7200/v1";
	ck_assert_int_eq(
	    load_text(&cfg, "[server]\n", &ov, err, sizeof err, NULL), -1);
	ck_assert_msg(strncmp(err, "--upstream: ", 12) == 0 &&
	        strstr(err, "a path (/v1) is not supported") != NULL,
	    "%s", err);
	config_free(cfg);
}
END_TEST

START_TEST(test_config_missing_file)
{
	struct config *cfg = config_new_defaults();
	struct config_errors errs;
	char err[512];

	ck_assert_int_eq(
	    config_load(cfg, "/nonexistent/op.conf", NULL, &errs), -1);
	join_errors(&errs, err, sizeof err);
	ck_assert_str_eq(
	    err, "/nonexistent/op.conf: No such file or directory");
	/* A directory opens, but does not read. */
	ck_assert_int_eq(config_load(cfg, "/tmp", NULL, &errs), -1);
	join_errors(&errs, err, sizeof err);
	ck_assert_str_eq(err, "/tmp: cannot read file: Is a directory");
	config_free(cfg);
}
END_TEST

/* Loads text and checks its errors are exactly want, one "LINE: needle"
 * each, in line order ("0: ..." for one about the file as a whole). */
static void
check_all_errors(const char *text, const char *const *want)
{
	struct config *cfg;
	char err[8192], *path, *line, *save, *prefix;
	int n = 0, wline;

	ck_assert_int_eq(
	    load_text(&cfg, text, NULL, err, sizeof err, &path), -1);
	for (line = strtok_r(err, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save), n++) {
		ck_assert_msg(want[n] != NULL, "unexpected error: %s", line);
		wline = atoi(want[n]);
		if (wline > 0)
			ck_assert_int_ge(
			    asprintf(&prefix, "%s:%d: ", path, wline), 0);
		else
			ck_assert_int_ge(asprintf(&prefix, "%s: ", path), 0);
		ck_assert_msg(strncmp(line, prefix, strlen(prefix)) == 0,
		    "want prefix '%s', got '%s'", prefix, line);
		ck_assert_msg(strstr(line, strchr(want[n], ' ') + 1) != NULL,
		    "want '%s' in '%s'", strchr(want[n], ' ') + 1, line);
		free(prefix);
	}
	ck_assert_msg(want[n] == NULL, "missing error: %s", want[n]);
	unlink(path);
	free(path);
	config_free(cfg);
}

/* Every error in a file is named, each with its line; an unknown section
 * once, at its header, not again for each key under it. */
START_TEST(test_config_every_error_reported)
{
	static const struct {
		const char *text;
		const char *want[8];
	} cases[] = {
	    {"[server]\nmax_clients = many\n[upstream]\nurl = ftp://x\n"
	     "[retry]\nretries = 1000\n",
	        {"2: max_clients must be a whole number", "4: scheme",
	            "6: retries must be between 0 and 100", NULL}},
	    {"[server]\nheader_timeout = soon\njunk line\n[retry\n"
	     "[upstrem]\npool_maxsize = 3\nurl = x\n",
	        {"2: header_timeout must be a duration",
	            "3: syntax error: expected '[section]' or 'key = value'",
	            "4: a section header needs its ']'",
	            "5: unknown section [upstrem] (did you mean [upstream]?); "
	            "known sections: [server], [upstream], [retry]",
	            NULL}},
	    /* The check across keys comes in line order. */
	    {"[upstream]\npool_maxsize = 2\npool_connections = 5\n"
	     "tls_verify = maybe\n",
	        {"3: cannot exceed", "4: yes or no", NULL}},
	    /* Nor is it made with a value that was refused. */
	    {"[upstream]\npool_maxsize = x\npool_connections = 50\n",
	        {"2: pool_maxsize must be a whole number", NULL}},
	    {"pool_maxsize = 3\nfrob = 1\n[server]\n",
	        {"1: outside of a section (it belongs under [upstream])",
	            "2: outside of a section (put it under one of [server], "
	            "[upstream], [retry])",
	            NULL}},
	    {"[nope]\na = 1\nb = 2\n[nope]\nc = 3\n",
	        {"1: unknown section [nope]; known sections: [server]",
	            "4: unknown section [nope];", NULL}},
	};
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++)
		check_all_errors(cases[i].text, cases[i].want);
}
END_TEST

/* A line too long for the parser's buffer is named, at its own line,
 * instead of coming in pieces that shift every later line. */
START_TEST(test_config_long_line)
{
	static const char *const want[] = {
	    "2: line longer than", "4: pool_maxsize must be", NULL};
	char text[1024];
	int n, i;

	n = snprintf(text, sizeof text, "[server]\nlisten =");
	for (i = 0; i < 20; i++)
		n += snprintf(
		    text + n, sizeof text - n, " 127.0.0.1:%d", 7000 + i);
	snprintf(text + n, sizeof text - n, "\n[upstream]\npool_maxsize = x\n");
	check_all_errors(text, want);
}
END_TEST

/* Sixty errors: fifty are kept and the rest counted. */
START_TEST(test_config_errors_capped)
{
	struct config_errors errs;
	struct config *cfg = config_new_defaults();
	char text[4096], *path;
	int n = 0, i;

	n = snprintf(text, sizeof text, "[server]\n");
	for (i = 0; i < 60; i++)
		n += snprintf(text + n, sizeof text - n, "max_clients = x\n");
	path = write_temp(text);
	ck_assert_int_eq(config_load(cfg, path, NULL, &errs), -1);
	ck_assert_int_eq(errs.n, CONFIG_ERRORS_MAX);
	ck_assert_int_eq(errs.more, 60 - CONFIG_ERRORS_MAX);
	config_errors_free(&errs);
	unlink(path);
	free(path);
	config_free(cfg);
}
END_TEST

START_TEST(test_config_distance)
{
	static const struct {
		const char *a, *b;
		int d;
	} cases[] = {
	    {"", "", 0},
	    {"listen", "listen", 0},
	    {"LISTEN", "listen", 0},
	    {"lisen", "listen", 1},
	    {"litsen", "listen", 1}, /* a swap is one edit */
	    {"max_buffr", "max_buffer", 1},
	    {"pool_maxsise", "pool_maxsize", 1},
	    {"retires", "retries", 1},
	    {"upstrem", "upstream", 1},
	    {"abc", "", 3},
	    {"kitten", "sitting", 3},
	};
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		ck_assert_msg(
		    config_distance(cases[i].a, cases[i].b) == cases[i].d,
		    "%s/%s: %d, want %d", cases[i].a, cases[i].b,
		    config_distance(cases[i].a, cases[i].b), cases[i].d);
		ck_assert_int_eq(
		    config_distance(cases[i].b, cases[i].a), cases[i].d);
	}
}
END_TEST

/* A near miss gets the nearest key, in its section or another; a far one
 * gets none. */
START_TEST(test_config_suggestions)
{
	static const struct {
		const char *text;
		const char *want; /* NULL: no suggestion */
	} cases[] = {
	    {"[server]\nmax_buffr = 1m\n", "(did you mean max_buffer?)"},
	    {"[server]\nMAX_CLEINTS = 1\n", "(did you mean max_clients?)"},
	    {"[upstream]\npool_maxsise = 2\n", "(did you mean pool_maxsize?)"},
	    {"[server]\npool_maxsize = 2\n",
	        "(did you mean pool_maxsize in [upstream]?)"},
	    {"[upstream]\nretires = 2\n", "(did you mean retries in [retry]?)"},
	    {"[retry]\nbackof_max = 2\n", "(did you mean backoff_max?)"},
	    {"[server]\nfrobnicate = 1\n", NULL},
	    {"[server]\nmax = 1\n", NULL},
	    {"[upstream]\nurl2 = x\n", "(did you mean url?)"},
	    {"[upstream]\nuri = x\n", "(did you mean url?)"},
	    {"[upstream]\nu = x\n", NULL},
	    {"[Upstrem]\n", "(did you mean [upstream]?)"},
	    {"[serve]\n", "(did you mean [server]?)"},
	    {"[retyr]\n", "(did you mean [retry]?)"},
	    {"[logging]\n", NULL},
	};
	struct config *cfg;
	char err[1024];
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		ck_assert_int_eq(
		    load_text(&cfg, cases[i].text, NULL, err, sizeof err, NULL),
		    -1);
		if (cases[i].want != NULL)
			ck_assert_msg(strstr(err, cases[i].want) != NULL,
			    "%s: want '%s' in '%s'", cases[i].text,
			    cases[i].want, err);
		else
			ck_assert_msg(strstr(err, "did you mean") == NULL,
			    "%s: no suggestion wanted: '%s'", cases[i].text,
			    err);
		config_free(cfg);
	}
}
END_TEST

START_TEST(test_config_durations)
{
	static const struct {
		const char *in;
		double want;
	} good[] = {
	    {"10", 10},
	    {"0.25", 0.25},
	    {".5", 0.5},
	    {"5.", 5},
	    {"10s", 10},
	    {"10S", 10},
	    {"10 s", 10},
	    {"1.5m", 90},
	    {"250ms", 0.25},
	    {"1ms", 0.001},
	    {"2h", 7200},
	    {"0", 0},
	    {"0s", 0},
	    {"  30  ", 30},
	};
	static const char *const bad[] = {"10x", "s", "-1s", "-1", "", "1.2.3",
	    "1e3", "0x10", "inf", "nan", "10 ss", "1h30m", "5 m s", "+5s",
	    "ms"};
	static const struct {
		double v;
		const char *want;
	} forms[] = {
	    {0, "0"},
	    {0.001, "1ms"},
	    {0.25, "250ms"},
	    {0.3, "300ms"},
	    {1.5, "1.5s"},
	    {30, "30s"},
	    {90, "90s"},
	    {120, "2m"},
	    {3600, "1h"},
	    {86400, "24h"},
	    {1.0005, "1.0005s"},
	};
	struct config *cfg = config_new_defaults();
	char err[512], buf[64];
	double v;
	size_t i;

	for (i = 0; i < sizeof good / sizeof good[0]; i++) {
		ck_assert_msg(config_parse_duration(good[i].in, &v) == 0,
		    "refused '%s'", good[i].in);
		ck_assert_msg(v == good[i].want, "'%s': %g, want %g",
		    good[i].in, v, good[i].want);
	}
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ck_assert_msg(config_parse_duration(bad[i], &v) == -1,
		    "accepted '%s'", bad[i]);
		/* The message names the key and the forms accepted. */
		ck_assert_int_eq(config_set(cfg, "upstream", "connect_timeout",
		                     bad[i], err, sizeof err),
		    -1);
		ck_assert_msg(
		    strstr(err, "connect_timeout must be a duration") &&
		        strstr(err, "250ms, 10s, 1.5m, 2h"),
		    "%s", err);
	}
	for (i = 0; i < sizeof forms / sizeof forms[0]; i++)
		ck_assert_str_eq(
		    config_format_duration(forms[i].v, buf, sizeof buf),
		    forms[i].want);
	/* Bounds are said as durations. */
	ck_assert_int_eq(config_set(cfg, "upstream", "connect_timeout", "2h",
	                     err, sizeof err),
	    -1);
	ck_assert_str_eq(err,
	    "connect_timeout must be between 1ms and 1h, "
	    "not '2h'");
	ck_assert_int_eq(
	    config_set(cfg, "server", "idle_timeout", "1.5m", err, sizeof err),
	    0);
	ck_assert(cfg->idle_timeout == 90);
	config_free(cfg);
}
END_TEST

/* config_print(), as -t shows it. */
static char *
print_config(const struct config *cfg)
{
	char *out = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&out, &len);

	ck_assert_ptr_nonnull(fp);
	config_print(cfg, fp);
	fclose(fp);
	return out;
}

/* Secrets never show; durations print as exact plain seconds. */
START_TEST(test_config_print_masks_secrets)
{
	struct config *cfg;
	char err[512], *out;

	out = print_config(cfg = config_new_defaults());
	ck_assert_msg(strstr(out, "\nclient_tokens = \n") != NULL, "%s", out);
	free(out);
	config_free(cfg);

	ck_assert_msg(load_text(&cfg,
	                  "[server]\nclient_tokens = hunter2 tok-b\n"
	                  "header_timeout = 250ms\nidle_timeout = 1.5m\n"
	                  "[retry]\nbackoff_factor = 1.0005\n",
	                  NULL, err, sizeof err, NULL) == 0,
	    "%s", err);
	ck_assert_str_eq(cfg->client_tokens, "hunter2 tok-b");
	out = print_config(cfg);
	ck_assert_msg(
	    strstr(out, "\nclient_tokens = ***\n") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "hunter2") == NULL, "%s", out);
	ck_assert_msg(strstr(out, "tok-b") == NULL, "%s", out);
	ck_assert_msg(
	    strstr(out, "\nheader_timeout = 0.25\n") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "\nidle_timeout = 90\n") != NULL, "%s", out);
	ck_assert_msg(
	    strstr(out, "\nbackoff_factor = 1.0005\n") != NULL, "%s", out);
	free(out);
	config_free(cfg);
}
END_TEST

START_TEST(test_log_plural)
{
	static const struct {
		long long n;
		const char *want;
	} cases[] = {{0, "s"}, {1, ""}, {2, "s"}, {-1, "s"}, {1000, "s"}};
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++)
		ck_assert_str_eq(log_plural(cases[i].n), cases[i].want);
}
END_TEST

/* text with the first from replaced by to, malloc'd. */
static char *
subst(const char *text, const char *from, const char *to)
{
	const char *p = strstr(text, from);
	char *out;

	if (p == NULL)
		return strdup(text);
	ck_assert_int_ge(asprintf(&out, "%.*s%s%s", (int)(p - text), text, to,
	                     p + strlen(from)),
	    0);
	return out;
}

/* client_tokens_file: the file's tokens join the key's; a relative path
 * is taken in $CREDENTIALS_DIRECTORY when set, else next to the
 * configuration; every failure names the key's line and the path tried,
 * never a token. */
START_TEST(test_config_tokens_file)
{
	static const struct {
		const char *key; /* client_tokens_file = */
		const char *tokens; /* the file's text; NULL: no file */
		int creds; /* in $CREDENTIALS_DIRECTORY, not next to conf */
		const char *want; /* client_tokens, or the error's tail */
		int ok;
	} cases[] = {
	    {"tokens", "# ours\n\n  tok-a  \n\ttok-b\n", 0,
	        "key-tok tok-a tok-b", 1},
	    {"tokens", "tok-c\n", 1, "key-tok tok-c", 1},
	    {"tokens", NULL, 0,
	        "tokens, next to this file ($CREDENTIALS_DIRECTORY is unset): "
	        "cannot open '@D/tokens': No such file or directory",
	        0},
	    {"tokens", NULL, 1,
	        "tokens, in $CREDENTIALS_DIRECTORY: cannot open "
	        "'@C/tokens': No such file or directory",
	        0},
	    {"tokens", "# none\n\n", 0, "'@D/tokens' holds no token", 0},
	    {"tokens", "ok\nnot ok\n", 0,
	        "'@D/tokens' line 2: a token cannot hold blanks or commas", 0},
	    {"tokens", "a,b\n", 0, "line 1: a token cannot hold", 0},
	};
	struct config_errors errs;
	struct config *cfg;
	char dir[] = "/tmp/op-unit-tokens-XXXXXX",
	     creds[] = "/tmp/op-unit-creds-XXXXXX";
	char *conf, *tokpath, *text, *want, *out, err[2048];
	size_t i;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_ptr_nonnull(mkdtemp(creds));
	ck_assert_int_ge(asprintf(&conf, "%s/op.conf", dir), 0);
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		if (cases[i].creds)
			setenv("CREDENTIALS_DIRECTORY", creds, 1);
		else
			unsetenv("CREDENTIALS_DIRECTORY");
		ck_assert_int_ge(
		    asprintf(&tokpath, "%s/%s", cases[i].creds ? creds : dir,
		        cases[i].key),
		    0);
		unlink(tokpath);
		if (cases[i].tokens != NULL) {
			FILE *fp = fopen(tokpath, "w");

			ck_assert_ptr_nonnull(fp);
			fputs(cases[i].tokens, fp);
			fclose(fp);
		}
		ck_assert_int_ge(asprintf(&text,
		                     "[server]\nclient_tokens = key-tok\n"
		                     "client_tokens_file = %s\n",
		                     cases[i].key),
		    0);
		{
			FILE *fp = fopen(conf, "w");

			ck_assert_ptr_nonnull(fp);
			fputs(text, fp);
			fclose(fp);
		}
		cfg = config_new_defaults();
		ck_assert_int_eq(
		    config_load(cfg, conf, NULL, &errs), cases[i].ok ? 0 : -1);
		join_errors(&errs, err, sizeof err);
		if (cases[i].ok) {
			ck_assert_str_eq(cfg->client_tokens, cases[i].want);
			ck_assert_str_eq(cfg->client_tokens_path, tokpath);
			out = print_config(cfg);
			ck_assert_msg(strstr(out, "tok-") == NULL, "%s", out);
			ck_assert_msg(
			    strstr(out, "\nclient_tokens_file = tokens\n") !=
			        NULL,
			    "%s", out);
			free(out);
		} else {
			/* @D and @C stand for the folders. */
			want = subst(cases[i].want, "@D", dir);
			out = subst(want, "@C", creds);
			free(want);
			want = out;
			ck_assert_msg(strncmp(err, conf, strlen(conf)) == 0 &&
			        strncmp(err + strlen(conf), ":3: ", 4) == 0,
			    "want %s:3: in '%s'", conf, err);
			ck_assert_msg(strstr(err, want) != NULL,
			    "want '%s' in '%s'", want, err);
			ck_assert_msg(strstr(err, "not ok") == NULL, "%s", err);
			free(want);
		}
		config_free(cfg);
		unlink(tokpath);
		free(tokpath);
		free(text);
	}
	unsetenv("CREDENTIALS_DIRECTORY");

	/* A FIFO would block the loop, a device never end: refused at
	 * once. */
	ck_assert_int_ge(asprintf(&tokpath, "%s/fifo", dir), 0);
	ck_assert_int_eq(mkfifo(tokpath, 0600), 0);
	for (i = 0; i < 2; i++) {
		FILE *fp = fopen(conf, "w");

		ck_assert_ptr_nonnull(fp);
		fprintf(fp, "[server]\nclient_tokens_file = %s\n",
		    i == 0 ? "fifo" : "/dev/zero");
		fclose(fp);
		cfg = config_new_defaults();
		ck_assert_int_eq(config_load(cfg, conf, NULL, &errs), -1);
		join_errors(&errs, err, sizeof err);
		ck_assert_msg(strstr(err,
		                  "is not a regular file of at most "
		                  "1048576 bytes") != NULL,
		    "%s", err);
		config_free(cfg);
	}
	unlink(tokpath);
	free(tokpath);
	unlink(conf);
	free(conf);
	rmdir(dir);
	rmdir(creds);
}
END_TEST

/* --- config.c: [backend NAME] sections ---------------------------------- */

/* What one backend of a load should hold. */
struct want_backend {
	const char *name;
	int line; /* of its header */
	const char *base; /* its url */
	int url_line;
	int weight;
	const char *models;
	int pool_maxsize, pool_connections;
	double connect_timeout, first_byte_timeout, stream_idle_timeout;
	const char *ca_file;
	int tls_verify;
	int num_parallel;
	double probe_interval;
	int fail_threshold;
};

static void
check_backend(const struct backend_conf *bc, const struct want_backend *w,
    const char *label)
{
	ck_assert_msg(strcmp(bc->name, w->name) == 0, "%s: name %s, want %s",
	    label, bc->name, w->name);
	ck_assert_msg(bc->line == w->line && bc->url_line == w->url_line,
	    "%s %s: lines %d/%d, want %d/%d", label, w->name, bc->line,
	    bc->url_line, w->line, w->url_line);
	ck_assert_msg(strcmp(bc->url.base, w->base) == 0, "%s %s: url %s",
	    label, w->name, bc->url.base);
	ck_assert_msg(bc->weight == w->weight &&
	        strcmp(bc->models, w->models) == 0 &&
	        bc->pool_maxsize == w->pool_maxsize &&
	        bc->pool_connections == w->pool_connections &&
	        bc->connect_timeout == w->connect_timeout &&
	        bc->first_byte_timeout == w->first_byte_timeout &&
	        bc->stream_idle_timeout == w->stream_idle_timeout &&
	        strcmp(bc->ca_file, w->ca_file) == 0 &&
	        bc->tls_verify == w->tls_verify &&
	        bc->num_parallel == w->num_parallel &&
	        bc->probe_interval == w->probe_interval &&
	        bc->fail_threshold == w->fail_threshold,
	    "%s %s: weight %d models '%s' pool %d/%d timeouts %g/%g/%g ca "
	    "'%s' verify %d parallel %d probe %g fail %d",
	    label, w->name, bc->weight, bc->models, bc->pool_maxsize,
	    bc->pool_connections, bc->connect_timeout, bc->first_byte_timeout,
	    bc->stream_idle_timeout, bc->ca_file, bc->tls_verify,
	    bc->num_parallel, bc->probe_interval, bc->fail_threshold);
	ck_assert_ptr_null(bc->token);
	ck_assert_ptr_null(bc->token_path);
}

/* [upstream] gives every backend its defaults wherever it stands in the
 * file; each [backend] sets its own over them. */
START_TEST(test_config_fleet)
{
#define FLEET_UPSTREAM                                                         \
	"[upstream]\nnum_parallel = 4\nprobe_interval = 2s\n"                  \
	"fail_threshold = 3\npool_maxsize = 8\nconnect_timeout = 3\n"          \
	"queue_timeout = 1m\nca_file = /etc/fleet-ca.pem\n"
#define FLEET_BACKENDS                                                         \
	"[backend gpu0]\nurl = http://127.0.0.1:7001\nweight = 2\n"            \
	"models = llama3, qwen2:7b\tphi3\nnum_parallel = 2\n"                  \
	"[backend remote.1]\nurl = https://ollama.example.com\n"               \
	"tls_verify = no\npool_maxsize = 4\npool_connections = 3\n"            \
	"first_byte_timeout = 600\nstream_idle_timeout = 30\n"                 \
	"probe_interval = 250ms\nfail_threshold = 1\nca_file = \n"
	static const struct {
		const char *text;
		int gpu0, remote; /* their header lines */
	} cases[] = {
	    {FLEET_UPSTREAM FLEET_BACKENDS, 9, 14},
	    {FLEET_BACKENDS FLEET_UPSTREAM, 1, 6},
	    /* Between them. */
	    {"[backend gpu0]\nurl = http://127.0.0.1:7001\nweight = 2\n"
	     "models = llama3, qwen2:7b\tphi3\nnum_parallel = "
	     "2\n" FLEET_UPSTREAM
	     "[backend remote.1]\nurl = https://ollama.example.com\n"
	     "tls_verify = no\npool_maxsize = 4\npool_connections = 3\n"
	     "first_byte_timeout = 600\nstream_idle_timeout = 30\n"
	     "probe_interval = 250ms\nfail_threshold = 1\nca_file = \n",
	        1, 14},
	};
	struct want_backend w[2] = {
	    {"gpu0", 0, "http://127.0.0.1:7001", 0, 2, "llama3 qwen2:7b phi3",
	        8, 8, 3, 0, 0, "/etc/fleet-ca.pem", 1, 2, 2, 3},
	    {"remote.1", 0, "https://ollama.example.com:443", 0, 1, "", 4, 3, 3,
	        600, 30, "", 0, 4, 0.25, 1},
	};
	struct config *cfg;
	char err[2048], label[32], *out;
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		snprintf(label, sizeof label, "case %zu", i);
		ck_assert_msg(load_text(&cfg, cases[i].text, NULL, err,
		                  sizeof err, NULL) == 0,
		    "%s: %s", label, err);
		ck_assert_int_eq(cfg->fleet, 1);
		ck_assert_int_eq(cfg->nbackends, 2);
		w[0].line = cases[i].gpu0;
		w[0].url_line = cases[i].gpu0 + 1;
		w[1].line = cases[i].remote;
		w[1].url_line = cases[i].remote + 1;
		check_backend(&cfg->backends[0], &w[0], label);
		check_backend(&cfg->backends[1], &w[1], label);
		/* [upstream] keeps its own values, fleet-wide ones too. */
		ck_assert_int_eq(cfg->num_parallel, 4);
		ck_assert_int_eq(cfg->pool_maxsize, 8);
		ck_assert_int_eq(cfg->pool_connections, 8);
		ck_assert(cfg->queue_timeout == 60);
		ck_assert_int_eq(cfg->queue_max, 512);
		ck_assert_int_eq(cfg->weight, 1);
		/* Code that knows one upstream sees the first backend. */
		ck_assert_str_eq(cfg->upstream.base, "http://127.0.0.1:7001");
		ck_assert_int_eq(cfg->url_line, w[0].url_line);

		out = print_config(cfg);
		ck_assert_msg(
		    strstr(out, "\n[upstream]\n# url: none here") != NULL, "%s",
		    out);
		ck_assert_msg(
		    strstr(out,
		        "\n\n[backend gpu0]\n"
		        "url = http://127.0.0.1:7001\nweight = 2\n"
		        "models = llama3 qwen2:7b phi3\n"
		        "token_file = \npool_maxsize = 8\n"
		        "pool_connections = 8\nconnect_timeout = 3\n"
		        "first_byte_timeout = 0\n"
		        "stream_idle_timeout = 0\n"
		        "ca_file = /etc/fleet-ca.pem\n"
		        "tls_verify = yes\nnum_parallel = 2\n"
		        "probe_interval = 2\nfail_threshold = 3\n") != NULL,
		    "%s", out);
		ck_assert_msg(strstr(out,
		                  "\n\n[backend remote.1]\n"
		                  "url = https://ollama.example.com:443\n"
		                  "weight = 1\nmodels = \n") != NULL,
		    "%s", out);
		ck_assert_msg(strstr(out, "\nqueue_timeout = 60\n") != NULL &&
		        strstr(out, "\nnum_parallel = 4\n") != NULL,
		    "%s", out);
		free(out);
		config_free(cfg);
	}
#undef FLEET_UPSTREAM
#undef FLEET_BACKENDS
}
END_TEST

/* Without [backend] sections, [upstream] is a fleet of one, "default",
 * as before: from the defaults, the file, or -u. */
START_TEST(test_config_legacy_one_backend)
{
	static const struct {
		const char *text; /* NULL: config_new_defaults() alone */
		const char *minus_u;
		struct want_backend w;
	} cases[] = {
	    {NULL, NULL,
	        {"default", 0, "http://127.0.0.1:11434", 0, 1, "", 20, 10, 10,
	            0, 0, "", 1, 1, 5, 2}},
	    {"[upstream]\npool_maxsize = 4\nurl = http://127.0.0.1:7002\n"
	     "weight = 3\nmodels = llama3\nnum_parallel = 8\n"
	     "probe_interval = 1\nfail_threshold = 5\ntls_verify = no\n",
	        NULL,
	        {"default", 0, "http://127.0.0.1:7002", 3, 3, "llama3", 4, 4,
	            10, 0, 0, "", 0, 8, 1, 5}},
	    /* -u's url was set on no line. */
	    {"[upstream]\nurl = http://127.0.0.1:7002\n", "127.0.0.1:7003",
	        {"default", 0, "http://127.0.0.1:7003", 0, 1, "", 20, 10, 10, 0,
	            0, "", 1, 1, 5, 2}},
	};
	struct config_overrides ov;
	struct config *cfg;
	char err[1024], want[512], *out;
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		memset(&ov, 0, sizeof ov);
		ov.upstream = cases[i].minus_u;
		if (cases[i].text == NULL)
			cfg = config_new_defaults();
		else
			ck_assert_msg(load_text(&cfg, cases[i].text, &ov, err,
			                  sizeof err, NULL) == 0,
			    "%s", err);
		ck_assert_int_eq(cfg->fleet, 0);
		ck_assert_int_eq(cfg->nbackends, 1);
		check_backend(&cfg->backends[0], &cases[i].w, "legacy");
		ck_assert_str_eq(cfg->upstream.base, cases[i].w.base);
		out = print_config(cfg);
		ck_assert_msg(strstr(out, "[backend") == NULL, "%s", out);
		snprintf(want, sizeof want, "\nurl = %s\n", cases[i].w.base);
		ck_assert_msg(strstr(out, want) != NULL, "%s", out);
		free(out);
		config_free(cfg);
	}

	/* config_set keeps the one backend in step with [upstream]. */
	cfg = config_new_defaults();
	ck_assert_int_eq(config_set(cfg, "upstream", "url",
	                     "http://127.0.0.1:7004", err, sizeof err),
	    0);
	ck_assert_int_eq(
	    config_set(cfg, "upstream", "num_parallel", "3", err, sizeof err),
	    0);
	ck_assert_str_eq(cfg->backends[0].url.base, "http://127.0.0.1:7004");
	ck_assert_int_eq(cfg->backends[0].num_parallel, 3);
	config_free(cfg);
}
END_TEST

/* Each mistake in [backend] sections is named at its line, in line
 * order; a bad header once, not again for the keys under it. */
START_TEST(test_config_backend_errors)
{
	static const char long_name[] = "b23456789012345678901234567890"
	                                "12345678901234567890123456789012";
	static const struct {
		const char *text;
		const char *want[8];
	} cases[] = {
	    {"[backend]\nurl = x\nfrob = 1\n",
	        {"1: [backend] needs a name, as in [backend gpu0]", NULL}},
	    {"[backend   ]\n", {"1: [backend] needs a name", NULL}},
	    {"[backend a/b]\nurl = :1\n[backend a b]\n",
	        {"1: backend name 'a/b' must be 1 to 63 letters, digits, '.', "
	         "'_' or '-'",
	            "3: backend name 'a b' must be", NULL}},
	    {"[backend "
	     "b23456789012345678901234567890"
	     "1234567890123456789012345678901234]\nurl = :1\n",
	        {"1: backend name 'b2345", NULL}},
	    {"[backend gpu0]\nurl = :1\n[upstream]\n[Backend GPU0]\nurl = :2\n",
	        {"4: duplicate [backend GPU0]: line 1 already has [backend "
	         "gpu0]",
	            NULL}},
	    {"[upstream]\nweight = 2\n[backend a]\nweight = 3\n[backend b]\n",
	        {"3: [backend a] needs a url", "5: [backend b] needs a url",
	            NULL}},
	    {"[backend a]\nurl = :1\nqueue_max = 3\nQUEUE_TIMEOUT = 1\n"
	     "resolver = 127.0.0.1\n",
	        {"3: 'queue_max' is fleet-wide: set it in [upstream]",
	            "4: 'queue_timeout' is fleet-wide: set it in [upstream]",
	            "5: 'resolver' is fleet-wide: set it in [upstream]", NULL}},
	    {"[backend a]\nurl = :1\nweigth = 2\nfrob = 1\nretries = 2\n"
	     "num_paralel = 2\n",
	        {"3: unknown key 'weigth' in section [backend a] (did you mean "
	         "weight?)",
	            "4: unknown key 'frob' in section [backend a]",
	            "5: unknown key 'retries' in section [backend a] (did you "
	            "mean retries in [retry]?)",
	            "6: (did you mean num_parallel?)", NULL}},
	    /* [upstream] url, before or after the backends. */
	    {"[upstream]\nurl = :1\n[backend a]\nurl = :2\n",
	        {"2: url in [upstream] is not a backend when [backend] "
	         "sections exist: move it into a [backend NAME] section",
	            NULL}},
	    {"[backend a]\nurl = :2\n[upstream]\nurl = :1\n",
	        {"4: url in [upstream] is not a backend", NULL}},
	    {"[backend a]\nurl = ftp://x\nweight = 0\nnum_parallel = 2000\n"
	     "probe_interval = 10ms\nfail_threshold = 0\nmodels = llama3:\n"
	     "tls_verify = maybe\n",
	        {"2: scheme must be http or https",
	            "3: weight must be between 1 and 1000, not '0'",
	            "4: num_parallel must be between 1 and 1024",
	            "5: probe_interval must be between 100ms and 1h",
	            "6: fail_threshold must be between 1 and 100",
	            "7: models: 'llama3:' is not a model name",
	            "8: tls_verify must be yes or no", NULL}},
	    {"[backend a]\nurl = http://h:11434/api\n",
	        {"2: a path (/api)", NULL}},
	    /* Its own pool_connections against its pool, in either order. */
	    {"[backend a]\nurl = :1\npool_maxsize = 2\npool_connections = 5\n"
	     "[backend b]\nurl = :2\npool_connections = 30\n",
	        {"4: pool_connections (5) cannot exceed pool_maxsize (2)",
	            "7: pool_connections (30) cannot exceed pool_maxsize (20)",
	            NULL}},
	    {"[upstream]\nnum_parallel = 0\nqueue_timeout = 0\n"
	     "probe_interval = 2h\nfail_threshold = 101\nweight = 1001\n"
	     "models = a\x01"
	     "b\n",
	        {"2: num_parallel must be between 1 and 1024",
	            "3: queue_timeout must be between 1ms and 24h",
	            "4: probe_interval must be between 100ms and 1h",
	            "5: fail_threshold must be between 1 and 100",
	            "6: weight must be between 1 and 1000",
	            "7: models: ", NULL}},
	    {"[backedn gpu2]\nurl = :1\n",
	        {"1: unknown section [backedn gpu2] (did you mean [backend "
	         "gpu2]?); known sections: [server], [upstream], [retry]",
	            NULL}},
	    {"[backend a]\nurl = :1\n[server]\nnum_parallel = 2\n",
	        {"4: unknown key 'num_parallel' in section [server] (did you "
	         "mean num_parallel in [upstream]?)",
	            NULL}},
	};
	struct config *cfg;
	char err[1024], *text;
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++)
		check_all_errors(cases[i].text, cases[i].want);

	/* 63 characters is a name, beyond inih's own section buffer: the
	 * keys under it still land in it. */
	ck_assert_int_eq(strlen(long_name), 62);
	ck_assert_int_ge(asprintf(&text,
	                     "[backend %sx]\nurl = :7001\nweight = 9\n"
	                     "[backend %sy]\nurl = :7002\n",
	                     long_name, long_name),
	    0);
	ck_assert_msg(
	    load_text(&cfg, text, NULL, err, sizeof err, NULL) == 0, "%s", err);
	ck_assert_int_eq(cfg->nbackends, 2);
	ck_assert_int_eq(strlen(cfg->backends[0].name), 63);
	ck_assert_int_eq(cfg->backends[0].weight, 9);
	ck_assert_int_eq(cfg->backends[1].weight, 1);
	ck_assert_str_eq(cfg->backends[1].url.base, "http://127.0.0.1:7002");
	config_free(cfg);
	free(text);
}
END_TEST

/* -u names one upstream: no use with a fleet.  A backend that is one of
 * our own addresses is named, at its url's line. */
START_TEST(test_config_fleet_refuses_one_upstream)
{
	struct config_overrides ov;
	struct config *cfg;
	char err[1024], *path, *want;

	memset(&ov, 0, sizeof ov);
	ov.upstream = "http://127.0.0.1:7200";
	ck_assert_int_eq(load_text(&cfg, "[backend a]\nurl = :7201\n", &ov, err,
	                     sizeof err, &path),
	    -1);
	ck_assert_int_ge(asprintf(&want,
	                     "--upstream: -u names one upstream, but %s has "
	                     "[backend] sections",
	                     path),
	    0);
	ck_assert_str_eq(err, want);
	free(want);
	unlink(path);
	free(path);
	config_free(cfg);

	check_config_error("[server]\nlisten = 127.0.0.1:7777\n"
	                   "[backend a]\nurl = :7001\n[backend b]\n\n"
	                   "url = http://127.0.0.1:7777\n",
	    7,
	    "backend b: url http://127.0.0.1:7777 is one of our own listen "
	    "addresses");
	check_config_error("[server]\nadmin_listen = 127.0.0.1:7778\n"
	                   "[backend a]\nurl = :7778\n",
	    4, "backend a: url http://127.0.0.1:7778 is our own admin_listen");
}
END_TEST

/* A file's text, written whole. */
static void
put_file(const char *path, const char *text, size_t len)
{
	FILE *fp = fopen(path, "w");

	ck_assert_ptr_nonnull(fp);
	ck_assert_uint_eq(fwrite(text, 1, len, fp), len);
	ck_assert_int_eq(fclose(fp), 0);
}

/*
 * token_file, in a [backend] or in [upstream] for every backend (or the
 * one of a file without [backend] sections): the file's one token,
 * trimmed, from $CREDENTIALS_DIRECTORY when set, else next to the
 * configuration.  A failure names the line, the backend and the path
 * tried; no message and no -t output ever shows a token.
 */
START_TEST(test_config_backend_token_file)
{
	static const struct {
		const char *conf;
		const char *file; /* "tok"'s text; NULL: no file */
		size_t len; /* its length, when it holds a NUL */
		int creds; /* "tok" in $CREDENTIALS_DIRECTORY */
		const char *want[2]; /* each backend's token ("-": none), or
		                      * want[0] the error "LINE: tail" */
		int ok;
	} cases[] = {
	    {"[backend a]\nurl = :7001\ntoken_file = tok\n[backend b]\n"
	     "url = :7002\n",
	        " \n\tsecret-A1 \r\n", 0, 0, {"secret-A1", "-"}, 1},
	    {"[backend a]\nurl = :7001\ntoken_file = tok\n", "secret-C1\n", 0,
	        1, {"secret-C1", NULL}, 1},
	    /* [upstream]'s goes to every backend that sets none. */
	    {"[backend a]\nurl = :7001\n[upstream]\ntoken_file = tok\n"
	     "[backend b]\nurl = :7002\ntoken_file = \n",
	        "secret-U1", 0, 1, {"secret-U1", "-"}, 1},
	    {"[upstream]\nurl = :7001\ntoken_file = tok\n", "secret-L1\n", 0, 0,
	        {"secret-L1", NULL}, 1},
	    {"[backend a]\nurl = :7001\ntoken_file = tok\n", NULL, 0, 0,
	        {"3: backend a: token_file = tok, next to this file "
	         "($CREDENTIALS_DIRECTORY is unset): cannot open '@D/tok': "
	         "No such file or directory"},
	        0},
	    {"[upstream]\ntoken_file = tok\n[backend a]\nurl = :7001\n", NULL,
	        0, 1,
	        {"2: backend a: token_file = tok, in $CREDENTIALS_DIRECTORY: "
	         "cannot open '@C/tok': No such file or directory"},
	        0},
	    {"[upstream]\ntoken_file = tok\n", " \n\n", 0, 0,
	        {"2: token_file = tok, next to this file "
	         "($CREDENTIALS_DIRECTORY is unset): '@D/tok' holds no token"},
	        0},
	    {"[backend a]\nurl = :7001\ntoken_file = tok\n",
	        "secret-X1 secret-X2\n", 0, 0,
	        {"3: backend a: token_file = tok, next to this file "
	         "($CREDENTIALS_DIRECTORY is unset): '@D/tok' must hold one "
	         "token, with no blank or control character inside it"},
	        0},
	    {"[backend a]\nurl = :7001\ntoken_file = tok\n",
	        "secret-X1\nsecret-X2\n", 0, 0,
	        {"3: backend a: token_file = tok, next to this file "
	         "($CREDENTIALS_DIRECTORY is unset): '@D/tok' must hold one "
	         "token"},
	        0},
	    {"[backend a]\nurl = :7001\ntoken_file = tok\n", "secret-X1\x01", 0,
	        0, {"3: backend a: token_file = tok, ne"}, 0},
	    {"[backend a]\nurl = :7001\ntoken_file = tok\n", "secret\0-X1\n",
	        11, 0, {"3: backend a: token_file = tok, ne"}, 0},
	};
	struct config_errors errs;
	struct config *cfg;
	char dir[] = "/tmp/op-unit-btok-XXXXXX",
	     creds[] = "/tmp/op-unit-bcreds-XXXXXX";
	char *conf, *tokpath, *want, *tail, *out, *prefix, err[2048];
	const struct backend_conf *bc;
	size_t i;
	int b, line;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_ptr_nonnull(mkdtemp(creds));
	ck_assert_int_ge(asprintf(&conf, "%s/op.conf", dir), 0);
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		if (cases[i].creds)
			setenv("CREDENTIALS_DIRECTORY", creds, 1);
		else
			unsetenv("CREDENTIALS_DIRECTORY");
		ck_assert_int_ge(
		    asprintf(&tokpath, "%s/tok", cases[i].creds ? creds : dir),
		    0);
		unlink(tokpath);
		if (cases[i].file != NULL)
			put_file(tokpath, cases[i].file,
			    cases[i].len ? cases[i].len
			                 : strlen(cases[i].file));
		put_file(conf, cases[i].conf, strlen(cases[i].conf));
		cfg = config_new_defaults();
		ck_assert_int_eq(
		    config_load(cfg, conf, NULL, &errs), cases[i].ok ? 0 : -1);
		join_errors(&errs, err, sizeof err);
		ck_assert_msg(strstr(err, "secret") == NULL, "%s", err);
		if (cases[i].ok) {
			for (b = 0; b < 2 && cases[i].want[b] != NULL; b++) {
				bc = &cfg->backends[b];
				if (strcmp(cases[i].want[b], "-") == 0) {
					ck_assert_ptr_null(bc->token);
					ck_assert_ptr_null(bc->token_path);
					continue;
				}
				ck_assert_str_eq(bc->token, cases[i].want[b]);
				ck_assert_str_eq(bc->token_path, tokpath);
			}
			ck_assert_int_eq(cfg->nbackends, b);
			/* -t names the file, never the token. */
			out = print_config(cfg);
			ck_assert_msg(strstr(out, "secret") == NULL, "%s", out);
			ck_assert_msg(
			    strstr(out, "\ntoken_file = tok\n") != NULL, "%s",
			    out);
			ck_assert_int_ge(asprintf(&want,
			                     "\ntoken_file = tok\n# token read "
			                     "from %s\n",
			                     tokpath),
			    0);
			ck_assert_msg(strstr(out, want) != NULL, "%s", out);
			free(want);
			free(out);
		} else {
			/* @D and @C stand for the folders. */
			line = atoi(cases[i].want[0]);
			tail =
			    subst(strchr(cases[i].want[0], ' ') + 1, "@D", dir);
			want = subst(tail, "@C", creds);
			free(tail);
			ck_assert_int_ge(
			    asprintf(&prefix, "%s:%d: ", conf, line), 0);
			ck_assert_msg(
			    strncmp(err, prefix, strlen(prefix)) == 0 &&
			        strstr(err, want) != NULL,
			    "want '%s%s' in '%s'", prefix, want, err);
			free(prefix);
			free(want);
		}
		config_free(cfg);
		unlink(tokpath);
		free(tokpath);
	}
	unsetenv("CREDENTIALS_DIRECTORY");
	unlink(conf);
	free(conf);
	rmdir(dir);
	rmdir(creds);
}
END_TEST

/* The allow-list the Ollama way: no tag means :latest; otherwise the
 * name as it is, case and all. */
START_TEST(test_config_backend_admits)
{
	static const struct {
		const char *models; /* as the key gives them */
		const char *model; /* NULL: a request without a model */
		int want;
	} cases[] = {
	    {"", "llama3", 1},
	    {"", NULL, 1},
	    {"llama3", NULL, 1},
	    {"llama3", "llama3", 1},
	    {"llama3", "llama3:latest", 1},
	    {"llama3:latest", "llama3", 1},
	    {"llama3", "llama3:8b", 0},
	    {"llama3:8b", "llama3", 0},
	    {"llama3:8b", "llama3:8b", 1},
	    {"llama3, qwen2:7b", "qwen2:7b", 1},
	    {"llama3,qwen2:7b\tphi3", "phi3:latest", 1},
	    {"llama3 qwen2:7b", "qwen2", 0},
	    {"Llama3", "llama3", 0},
	    {"llama3", "llama", 0},
	    {"llama", "llama3", 0},
	    {"llama3", "llama3:", 0},
	    {"registry.lan:5000/lib/m", "registry.lan:5000/lib/m:latest", 1},
	    {"registry.lan:5000/lib/m", "registry.lan:5000/lib/m", 1},
	    {"registry.lan:5000/lib/m", "registry.lan:5001/lib/m", 0},
	    {"hf.co/u/r:Q4_K_M", "hf.co/u/r:Q4_K_M", 1},
	    {"hf.co/u/r:Q4_K_M", "hf.co/u/r", 0},
	};
	struct backend_conf bc;
	char err[256];
	size_t i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		memset(&bc, 0, sizeof bc);
		ck_assert_msg(config_parse_models(&bc.models, cases[i].models,
		                  err, sizeof err) == 0,
		    "%s: %s", cases[i].models, err);
		ck_assert_msg(
		    config_backend_admits(&bc, cases[i].model) == cases[i].want,
		    "models '%s', model %s: want %d", cases[i].models,
		    cases[i].model ? cases[i].model : "(none)", cases[i].want);
		free(bc.models);
	}
}
END_TEST

/* Every backend's host is looked up (here in /etc/hosts; the resolver
 * is a port where nothing answers), beyond the listen addresses' count,
 * and checked against our own addresses. */
START_TEST(test_resolve_every_backend)
{
	enum { NB = 24 };
	struct config_errors errs;
	struct config *cfg;
	char err[2048], out[512], *text, *next, *path, *want;
	int i, n;

	text = strdup("[upstream]\nresolver = 127.0.0.1:9\n[server]\n");
	for (i = 0; i < MAX_LISTEN; i++) {
		ck_assert_int_ge(asprintf(&next, "%slisten = localhost:%d\n",
		                     text, 7500 + i),
		    0);
		free(text);
		text = next;
	}
	for (i = 0; i < NB; i++) {
		ck_assert_int_ge(
		    asprintf(&next,
		        "%s[backend b%d]\nurl = http://localhost:%d\n", text, i,
		        i == NB - 1 ? 7503 : 7600 + i),
		    0);
		free(text);
		text = next;
	}
	path = write_temp(text);
	cfg = config_new_defaults();
	ck_assert_int_eq(config_load(cfg, path, NULL, &errs), 0);
	/* Unresolved, nothing is known to loop yet. */
	ck_assert_int_eq(cfg->nbackends, NB);
	ck_assert_int_eq(cfg->backends[NB - 1].url.naddrs, 0);
	ck_assert_str_eq(resolve_now(cfg, out), "ok");
	for (i = 0, n = 0; i < NB; i++)
		n += cfg->backends[i].url.naddrs >= 1;
	ck_assert_int_eq(n, NB);
	ck_assert_int_ge(cfg->upstream.naddrs, 1);
	ck_assert_int_eq(config_check_addresses(cfg, err, sizeof err), -1);
	/* Its url is on the last line. */
	ck_assert_int_ge(asprintf(&want,
	                     "%s:%d: backend b%d: url http://localhost:7503 "
	                     "is one of our own listen addresses",
	                     path, 3 + MAX_LISTEN + 2 * NB, NB - 1),
	    0);
	ck_assert_msg(
	    strncmp(err, want, strlen(want)) == 0, "want '%s': %s", want, err);
	free(want);
	unlink(path);
	free(path);
	config_free(cfg);
	free(text);
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
	struct hdr_list hl;
	struct curl_slist *l;

	memset(&p, 0, sizeof p);
	httpreq_init(&hr, &limits, &parsed_cb, &p);
	ck_assert_int_eq(
	    httpreq_feed(&hr, req, strlen(req)), (ssize_t)strlen(req));
	headers_to_curl(&hl, p.head, 1, 0, "rid-1", NULL);
	l = hl.first;
	/* The list is one block: every line inside it, the last ending it. */
	ck_assert(hl.last->next == NULL && hl.used <= hl.cap);
	ck_assert(slist_has(l, "X-Request-Id: rid-1"));
	ck_assert(slist_has_prefix(l, "Via: 1.1 "));
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
	headers_list_free(&hl);
	httpreq_free(&hr);
}
END_TEST

START_TEST(test_headers_client_tokens)
{
	static const char req[] = "GET / HTTP/1.1\r\nHost: h\r\n"
	                          "Authorization: Bearer s3cret\r\n\r\n";
	struct parsed p;
	struct httpreq hr;
	struct hdr_list hl;

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
	headers_to_curl(&hl, p.head, 0, 1, NULL, NULL);
	ck_assert(!slist_has_prefix(hl.first, "Authorization"));
	headers_list_free(&hl);
	headers_to_curl(&hl, p.head, 0, 0, NULL, NULL);
	ck_assert(slist_has(hl.first, "Authorization: Bearer s3cret"));
	headers_list_free(&hl);
	httpreq_free(&hr);
}
END_TEST

/* A header named by Connection is dropped whatever the length of its
 * name: 127, 128 and 129 bytes straddle the fixed buffer this once used. */
START_TEST(test_headers_connection_names_any_length)
{
	static const size_t lens[] = {1, 127, 128, 129, 1000, 8000};
	struct parsed p;
	struct httpreq hr;
	struct hdr_list hl;
	char name[8002], req[20000];
	size_t i;
	int n;

	for (i = 0; i < sizeof lens / sizeof lens[0]; i++) {
		memset(name, 'z', lens[i]);
		name[lens[i]] = '\0';
		n = snprintf(req, sizeof req,
		    "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, "
		    "%s\r\n"
		    "%s: secret\r\nX-Kept: 1\r\n\r\n",
		    name, name);
		memset(&p, 0, sizeof p);
		httpreq_init(&hr, &limits, &parsed_cb, &p);
		ck_assert_int_eq(httpreq_feed(&hr, req, n), n);
		headers_to_curl(&hl, p.head, 0, 0, NULL, NULL);
		strcat(name, ":");
		ck_assert_msg(!slist_has_prefix(hl.first, name),
		    "a Connection-named header of %zu bytes was forwarded",
		    lens[i]);
		ck_assert(slist_has(hl.first, "X-Kept: 1"));
		headers_list_free(&hl);
		httpreq_free(&hr);
	}
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

/* A generate's final line may carry a big "context" array of numbers. */
#define TOK_CTX10 "128006,9125,128007,271,38766,1303,33025,2696,25,6790,"
#define TOK_CTX100                                                             \
	TOK_CTX10 TOK_CTX10 TOK_CTX10 TOK_CTX10 TOK_CTX10 TOK_CTX10 TOK_CTX10  \
	    TOK_CTX10 TOK_CTX10 TOK_CTX10
#define TOK_SSE_CHUNK(text)                                                    \
	"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","   \
	"\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{"  \
	"\"role\":\"assistant\",\"content\":\"" text "\"},"                    \
	"\"finish_reason\":null}]}\n\n"
#define TOK_CHAT_TOOL_ARGS                                                     \
	"\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":" \
	"[{\"function\":{\"name\":\"f\",\"arguments\":{\"done\":true,"         \
	"\"eval_count\":999999,\"prompt_eval_count\":999999}}}]}"

static const struct tok_case {
	const char *name;
	enum tokscan_mode mode;
	const char *in;
	int have;
	uint64_t prompt, completion;
	const char *model;
} tok_cases[] = {
    {"go layout", TOKSCAN_NATIVE,
        "{\"model\":\"llama3.2:latest\",\"created_at\":\"2024-01-01T00:00:"
        "00Z\","
        "\"response\":\"\\\"eval_count\\\":9 \",\"done\":false}\n"
        "{\"model\":\"llama3.2:latest\",\"created_at\":\"2024-01-01T00:00:"
        "00Z\","
        "\"response\":\"\",\"done\":true,\"done_reason\":\"stop\","
        "\"context\":[1,2,3],\"total_duration\":1000,\"load_duration\":10,"
        "\"prompt_eval_count\":26,\"prompt_eval_duration\":5,"
        "\"eval_count\":290,\"eval_duration\":7}\n",
        1, 26, 290, "llama3.2:latest"},
    {"spaces after separators", TOKSCAN_NATIVE,
        "{\"model\": \"m\", \"response\": \"x\", \"done\": false}\n"
        "{\"model\": \"m\", \"response\": \"\", \"done\": true, "
        "\"prompt_eval_count\": 11, \"eval_count\": 5}\n",
        1, 11, 5, "m"},
    {"whitespace between all tokens", TOKSCAN_NATIVE,
        "{\n\t\"model\" :\t\"m\" ,\r\n \"done\"\n:\ntrue\t,\n"
        "\"prompt_eval_count\":\n12 ,\"eval_count\":\t\r\n6\n}\n",
        1, 12, 6, "m"},
    {"done nested in tool call arguments", TOKSCAN_NATIVE,
        "{\"model\":\"m\"," TOK_CHAT_TOOL_ARGS ",\"done\":false}\n", 0, 0, 0,
        ""},
    {"nested counts after the real ones", TOKSCAN_NATIVE,
        "{\"model\":\"m\",\"done\":true,\"prompt_eval_count\":3,"
        "\"eval_count\":4," TOK_CHAT_TOOL_ARGS "}\n",
        1, 3, 4, "m"},
    {"nested counts before the real ones", TOKSCAN_NATIVE,
        "{\"model\":\"m\"," TOK_CHAT_TOOL_ARGS ",\"done\":true,"
        "\"prompt_eval_count\":3,\"eval_count\":4}\n",
        1, 3, 4, "m"},
    {"keys inside strings", TOKSCAN_NATIVE,
        "{\"model\":\"m\",\"message\":{\"content\":"
        "\"\\\"done\\\":true,\\\"eval_count\\\":5\"},\"done\":false}\n"
        "{\"model\":\"m\",\"response\":\"}\\n{\\\"done\\\":true,"
        "\\\"eval_count\\\":7}\",\"done\":false}\n",
        0, 0, 0, ""},
    {"escapes in strings", TOKSCAN_NATIVE,
        "{\"model\":\"m\",\"response\":\"a\\\\\\\"b\\u0022,\\\"done\\\":"
        "true\\\\\",\"x\\\"\":\"\\\\\",\"done\":true,"
        "\"prompt_eval_count\":1,\"eval_count\":2}\n",
        1, 1, 2, "m"},
    {"big context array first", TOKSCAN_NATIVE,
        "{\"model\":\"m\",\"response\":\"\",\"done\":true,\"context\":"
        "[" TOK_CTX100 TOK_CTX100 "1],\"nested\":[[1,[2]],{\"a\":[]}],"
        "\"prompt_eval_count\":26,\"eval_count\":290}\n",
        1, 26, 290, "m"},
    {"counts before done", TOKSCAN_NATIVE,
        "{\"prompt_eval_count\":5,\"eval_count\":6,\"model\":\"m\","
        "\"done\":true}\n",
        1, 5, 6, "m"},
    {"counts after done", TOKSCAN_NATIVE,
        "{\"done\":true,\"model\":\"m\",\"eval_count\":6,"
        "\"prompt_eval_count\":5}",
        1, 5, 6, "m"},
    {"only the done line counts", TOKSCAN_NATIVE,
        "{\"model\":\"m\",\"eval_count\":1,\"done\":false}\n"
        "{\"model\":\"m\",\"prompt_eval_count\":8,\"done\":false}\n"
        "{\"model\":\"m\",\"prompt_eval_count\":9,\"eval_count\":3,"
        "\"done\":true}\n"
        "{\"error\":\"late\"}\n{\"model\":\"later\",\"done\":false}\n",
        1, 9, 3, "m"},
    {"not done", TOKSCAN_NATIVE,
        "{\"model\":\"m\",\"response\":\"x\",\"done\":false,"
        "\"eval_count\":5}\n"
        "{\"model\":\"m\",\"done\":\"true\",\"eval_count\":5}\n"
        "{\"model\":\"m\",\"done\":truex,\"eval_count\":5}\n"
        "{\"model\":\"m\",\"xxxxxxxxxxxxxxxxxxxdone\":true}\n",
        0, 0, 0, ""},
    {"cut inside the final number", TOKSCAN_NATIVE,
        "{\"model\":\"m\",\"done\":true,\"prompt_eval_count\":4,"
        "\"eval_count\":77",
        1, 4, 77, "m"},
    {"counts that are no integers", TOKSCAN_NATIVE,
        "{\"model\":\"m\",\"done\":true,\"prompt_eval_count\":-4,"
        "\"eval_count\":1.5,\"x\":99999999999999999999999}\n",
        1, 0, 0, "m"},
    {"native ignores usage and SSE", TOKSCAN_NATIVE,
        "data: {\"model\":\"m\",\"done\":true,\"eval_count\":1}\n"
        "{\"model\":\"m\",\"usage\":{\"prompt_tokens\":1}}\n",
        0, 0, 0, ""},
    {"model with escapes", TOKSCAN_NATIVE,
        "{\"model\":\"a\\\"b\\\\c\\u00e9\\ud83d\\ude00\\/"
        "d\\ud800x\\udc00\\u00zz\","
        "\"done\":true,\"eval_count\":1}\n",
        1, 0, 1,
        "a\"b\\c\xc3\xa9\xf0\x9f\x98\x80/d\xef\xbf\xbdx\xef\xbf\xbd"
        "\xef\xbf\xbdzz"},
    {"embed", TOKSCAN_EMBED,
        "{\"model\":\"e\",\"embeddings\":[[0.1,-0.2e-3]],"
        "\"total_duration\":1,\"load_duration\":1,\"prompt_eval_count\":8}",
        1, 8, 0, "e"},
    {"/v1 not streamed", TOKSCAN_OPENAI,
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1,"
        "\"model\":\"m\",\"system_fingerprint\":\"fp_ollama\",\"choices\":[{"
        "\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"hi\"},"
        "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":10,"
        "\"completion_tokens\":2,\"total_tokens\":12}}\n",
        1, 10, 2, "m"},
    {"/v1 not streamed, spaced", TOKSCAN_OPENAI,
        "{\n  \"model\": \"m\",\n  \"usage\": {\n    \"total_tokens\": 12,\n"
        "    \"completion_tokens\": 2,\n    \"prompt_tokens\": 10\n  }\n}",
        1, 10, 2, "m"},
    {"/v1 stream with usage", TOKSCAN_OPENAI,
        TOK_SSE_CHUNK("a") TOK_SSE_CHUNK(
            "b") "data: "
                 "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
                 "\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{"
                 "\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":"
                 "9}}\n\n"
                 "data: [DONE]\n\n",
        1, 7, 2, "m"},
    {"/v1 stream without usage", TOKSCAN_OPENAI,
        TOK_SSE_CHUNK("a") TOK_SSE_CHUNK("b") "data: [DONE]\n\n", 0, 0, 0, ""},
    {"/v1 completions stream, zero usage on each chunk", TOKSCAN_OPENAI,
        "data: {\"id\":\"cmpl-1\",\"model\":\"m\",\"choices\":[{\"text\":"
        "\"a\"}],\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":0}}\n\n"
        "data: {\"id\":\"cmpl-1\",\"model\":\"m\",\"choices\":[],\"usage\":{"
        "\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n"
        "data: [DONE]\n\n",
        1, 3, 1, "m"},
    {"/v1 SSE fields, comments, CRLF, two data lines", TOKSCAN_OPENAI,
        ": keep-alive\r\nevent: chunk\r\nid: 1\r\n"
        "data:{\"model\":\"m\",\r\ndata: \"usage\":{\"prompt_tokens\":1,\r\n"
        "retry: 5\r\ndata: \"completion_tokens\":2}}\r\n\r\n"
        "data: [DONE]\r\n\r\n",
        1, 1, 2, "m"},
    {"/v1 event cut by a blank line after a comment", TOKSCAN_OPENAI,
        "data: {\"model\":\"m\",\"usage\":{\"prompt_tokens\":5,\n: c\n\n"
        "data: {\"x\":{}}\n",
        0, 0, 0, ""},
    {"/v1 data that is no object", TOKSCAN_OPENAI,
        "data: [{\"model\":\"m\",\"usage\":{\"prompt_tokens\":5}}]\n\n"
        "[{\"model\":\"m\",\"usage\":{\"prompt_tokens\":5}}]\n",
        0, 0, 0, ""},
    {"/v1 event cut by a blank line", TOKSCAN_OPENAI,
        "data: {\"model\":\"m\",\"usage\":{\"prompt_tokens\":5,\n\n"
        "data: {\"model\":\"m\",\"choices\":[]}\n\ndata: [DONE]\n\n",
        0, 0, 0, ""},
    {"/v1 nested usage ignored", TOKSCAN_OPENAI,
        "{\"model\":\"m\",\"choices\":[{\"message\":{\"content\":"
        "\"\\\"usage\\\":{\\\"prompt_tokens\\\":9}\",\"usage\":{"
        "\"prompt_tokens\":999,\"completion_tokens\":999}}}],\"x\":{"
        "\"usage\":{\"prompt_tokens\":999}},\"usage\":null}\n",
        0, 0, 0, ""},
    {"/v1 nested usage beside the real one", TOKSCAN_OPENAI,
        "{\"usage\":{\"prompt_tokens\":3,\"x\":{\"completion_tokens\":999},"
        "\"completion_tokens\":4},\"model\":\"m\",\"choices\":[{\"usage\":{"
        "\"prompt_tokens\":999,\"completion_tokens\":999}}]}\n",
        1, 3, 4, "m"},
    {"/v1 ignores native keys", TOKSCAN_OPENAI,
        "{\"model\":\"m\",\"done\":true,\"prompt_eval_count\":1,"
        "\"eval_count\":2}\n",
        0, 0, 0, ""},
    {"/v1 embeddings", TOKSCAN_OPENAI,
        "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\","
        "\"embedding\":[0.1,0.2],\"index\":0}],\"model\":\"e\",\"usage\":{"
        "\"prompt_tokens\":4,\"total_tokens\":4}}",
        1, 4, 0, "e"},
    {"off", TOKSCAN_OFF,
        "{\"model\":\"m\",\"done\":true,\"prompt_eval_count\":1,"
        "\"eval_count\":2}\n",
        0, 0, 0, ""},
};

static void
tok_check(const struct tok_case *c, struct tokscan *t, const char *how)
{
	int have = tokscan_finish(t);

	ck_assert_msg(have == c->have, "%s, %s: have %d", c->name, how, have);
	if (!have)
		return;
	ck_assert_msg(t->prompt == c->prompt && t->completion == c->completion,
	    "%s, %s: prompt %" PRIu64 " completion %" PRIu64, c->name, how,
	    t->prompt, t->completion);
	ck_assert_msg(strcmp(t->model, c->model) == 0, "%s, %s: model '%s'",
	    c->name, how, t->model);
}

/* Each case whole, cut in two at every offset, and byte by byte. */
static void
tok_feed_every_way(const struct tok_case *c)
{
	struct tokscan t;
	size_t len = strlen(c->in), cut, i;
	char how[32];

	tokscan_init(&t, c->mode);
	tokscan_feed(&t, c->in, len);
	tok_check(c, &t, "whole");
	for (cut = 1; cut < len; cut++) {
		tokscan_init(&t, c->mode);
		tokscan_feed(&t, c->in, cut);
		tokscan_feed(&t, c->in + cut, len - cut);
		snprintf(how, sizeof how, "cut at %zu", cut);
		tok_check(c, &t, how);
	}
	tokscan_init(&t, c->mode);
	for (i = 0; i < len; i++)
		tokscan_feed(&t, c->in + i, 1);
	tok_check(c, &t, "byte by byte");
}

START_TEST(test_tokscan_cases)
{
	tok_feed_every_way(&tok_cases[_i]);
}
END_TEST

/*
 * A model name longer than the buffer is cut, never overflowed, and never
 * inside a UTF-8 sequence: 254 bytes, then a two-byte "é" that does not
 * fit (raw or escaped), then bytes that would.
 */
START_TEST(test_tokscan_long_model)
{
	static const char *const tails[] = {"\xc3\xa9xy", "\\u00e9xy"};
	struct tokscan t;
	char in[512], name[256];
	struct tok_case c = {"long model", TOKSCAN_NATIVE, in, 1, 2, 3, name};
	size_t i;

	ck_assert_uint_eq(sizeof t.model, 256);
	memset(name, 'a', 254);
	name[254] = '\0';
	for (i = 0; i < 2; i++) {
		snprintf(in, sizeof in,
		    "{\"model\":\"%s%s\",\"done\":true,"
		    "\"prompt_eval_count\":2,\"eval_count\":3}\n",
		    name, tails[i]);
		tok_feed_every_way(&c);
	}
}
END_TEST


/* --- affinity.c -------------------------------------------------------- */

/* The key of a chat body, through a parsed head with these headers. */
static int
affinity_of(const char *headers, int route, const char *json, uint64_t *key)
{
	struct httpreq hr;
	struct parsed p;
	char req[1024];
	cJSON *body = cJSON_Parse(json);
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(body, "model");
	int has;

	memset(&p, 0, sizeof p);
	snprintf(req, sizeof req,
	    "POST /api/chat HTTP/1.1\r\nHost: x\r\n%sContent-Length: 0\r\n\r\n",
	    headers);
	httpreq_init(&hr, &limits, &parsed_cb, &p);
	ck_assert_int_gt(httpreq_feed(&hr, req, strlen(req)), 0);
	ck_assert_ptr_nonnull(p.head);
	has = affinity_key(p.head, route, body,
	    cJSON_IsString(m) ? m->valuestring : NULL, key);
	httpreq_free(&hr);
	cJSON_Delete(body);
	return has;
}

#define CHAT_T1                                                                \
	"{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":"    \
	"\"be brief\"},{\"role\":\"user\",\"content\":\"hello\"}]}"
#define CHAT_T2                                                                \
	"{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":"    \
	"\"be brief\"},{\"role\":\"user\",\"content\":\"hello\"},"             \
	"{\"role\":\"assistant\",\"content\":\"hi\"},{\"role\":\"user\","      \
	"\"content\":\"more\"}]}"

START_TEST(test_affinity_keys)
{
	uint64_t k1 = 0, k2 = 0, k3 = 0, k4 = 0, k5 = 0;

	/* A conversation's later turns keep its opening's key. */
	ck_assert(affinity_of("", ROUTE_CHAT, CHAT_T1, &k1));
	ck_assert(affinity_of("", ROUTE_V1_CHAT, CHAT_T2, &k2));
	ck_assert(k1 == k2);
	/* Another first message, system prompt or model: another key. */
	ck_assert(affinity_of("", ROUTE_CHAT,
	    "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
	    "\"hello\"}]}",
	    &k3));
	ck_assert(k3 != k1);
	ck_assert(affinity_of("", ROUTE_CHAT,
	    "{\"model\":\"n\",\"messages\":[{\"role\":\"system\",\"content\":"
	    "\"be brief\"},{\"role\":\"user\",\"content\":\"hello\"}]}",
	    &k4));
	ck_assert(k4 != k1);
	/* The session header wins, on any route. */
	ck_assert(affinity_of("X-Ollama-Pool-Session: s1\r\n", ROUTE_GENERATE,
	    "{\"model\":\"m\",\"prompt\":\"x\"}", &k5));
	ck_assert(affinity_of("X-Ollama-Pool-Session: s1\r\n", ROUTE_CHAT,
	    CHAT_T1, &k3));
	ck_assert(k5 == k3 && k5 != k1);
	/* None: generate without the header, a chat without a user. */
	ck_assert(!affinity_of(
	    "", ROUTE_GENERATE, "{\"model\":\"m\",\"prompt\":\"x\"}", &k5));
	ck_assert(!affinity_of("", ROUTE_CHAT,
	    "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":"
	    "\"x\"}]}",
	    &k5));
	ck_assert(!affinity_of("", ROUTE_CHAT, "{\"model\":\"m\"}", &k5));
}
END_TEST

static const struct {
	int total, members, bound;
} bound_cases[] = {
    {0, 1, 4}, /* (0 + 1) / 1 * 1.5 = 1.5, up: 2, slack: 4 */
    {0, 4, 3}, /* 0.375, up: 1 */
    {7, 4, 5}, /* 2 * 1.5 = 3 exactly */
    {15, 4, 8}, /* 4 * 1.5 = 6 */
    {99, 10, 17}, /* 15 */
    {100, 10, 18}, /* 15.15, up: 16 */
};

START_TEST(test_affinity_bound)
{
	ck_assert_int_eq(
	    affinity_bound(bound_cases[_i].total, bound_cases[_i].members),
	    bound_cases[_i].bound);
}
END_TEST

/* Rendezvous: keys spread evenly over the members, the same way every
 * time (replicas agree). */
START_TEST(test_affinity_rendezvous)
{
	uint64_t members[8] = {11, 22, 33, 44, 55, 66, 77, 88};
	int won[8] = {0}, key, i, best, second;

	for (key = 0; key < 800; key++) {
		best = second = -1;
		for (i = 0; i < 8; i++) {
			uint64_t s = affinity_score((uint64_t)key * 7919, members[i]);

			if (best < 0 ||
			    s > affinity_score((uint64_t)key * 7919, members[best])) {
				second = best;
				best = i;
			} else if (second < 0 ||
			    s > affinity_score(
			            (uint64_t)key * 7919, members[second]))
				second = i;
		}
		won[best]++;
		ck_assert(affinity_score((uint64_t)key * 7919, members[best]) ==
		    affinity_score((uint64_t)key * 7919, members[best]));
	}
	for (i = 0; i < 8; i++)
		ck_assert_msg(won[i] > 40 && won[i] < 180,
		    "member %d won %d of 800 keys", i, won[i]);
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
	tcase_add_test(tc, test_upstream_rejects_path);
	tcase_add_test(tc, test_listen_forms);
	tcase_add_test(tc, test_listen_rejects_bad_input);
	tcase_add_test(tc, test_listen_names_kept_unresolved);
	tcase_add_test(tc, test_upstream_loop_detection);
	tcase_add_test(tc, test_resolve_hosts_file);
	tcase_add_test(tc, test_resolver_setting);
	suite_add_tcase(s, tc);

	tc = tcase_create("config");
	tcase_add_test(tc, test_config_defaults);
	tcase_add_test(tc, test_config_file_values);
	tcase_add_test(tc, test_config_errors_name_file_and_line);
	tcase_add_test(tc, test_config_idle_default_follows_small_pool);
	tcase_add_test(tc, test_config_overrides_win);
	tcase_add_test(tc, test_config_missing_file);
	tcase_add_test(tc, test_config_every_error_reported);
	tcase_add_test(tc, test_config_long_line);
	tcase_add_test(tc, test_config_errors_capped);
	tcase_add_test(tc, test_config_distance);
	tcase_add_test(tc, test_config_suggestions);
	tcase_add_test(tc, test_config_durations);
	tcase_add_test(tc, test_config_print_masks_secrets);
	tcase_add_test(tc, test_log_plural);
	tcase_add_test(tc, test_config_tokens_file);
	tcase_add_test(tc, test_config_fleet);
	tcase_add_test(tc, test_config_legacy_one_backend);
	tcase_add_test(tc, test_config_backend_errors);
	tcase_add_test(tc, test_config_fleet_refuses_one_upstream);
	tcase_add_test(tc, test_config_backend_token_file);
	tcase_add_test(tc, test_config_backend_admits);
	tcase_add_test(tc, test_resolve_every_backend);
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
	tcase_add_test(tc, test_headers_connection_names_any_length);
	tcase_add_test(tc, test_headers_token_lists);
	tcase_add_test(tc, test_headers_client_tokens);
	tcase_add_test(tc, test_config_remote_needs_allow_remote);
	tcase_add_test(tc, test_headers_response_filter);
	suite_add_tcase(s, tc);

	tc = tcase_create("metrics");
	tcase_add_test(tc, test_metrics_label_escaping);
	tcase_add_test(tc, test_metrics_histogram_buckets);
	tcase_add_test(tc, test_metrics_routes_are_bounded);
	tcase_add_loop_test(tc, test_tokscan_cases, 0,
	    (int)(sizeof tok_cases / sizeof tok_cases[0]));
	tcase_add_test(tc, test_tokscan_long_model);
	suite_add_tcase(s, tc);

	tc = tcase_create("affinity");
	tcase_add_test(tc, test_affinity_keys);
	tcase_add_loop_test(tc, test_affinity_bound, 0,
	    (int)(sizeof bound_cases / sizeof bound_cases[0]));
	tcase_add_test(tc, test_affinity_rendezvous);
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
