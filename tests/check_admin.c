/*
 * Integration tests for running ollama-pool day to day: the admin
 * listener (admin_listen), which serves /metrics, /health and /stats on
 * an address of its own without client tokens, and the start-up check
 * that says plainly whether the upstream answers.
 *
 * The real daemon runs in front of the fake Ollama on loopback ports.
 * Waiting is for an event (a log line through inotify, a notify datagram,
 * a socket's answer), never a sleep.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <cjson/cJSON.h>

#include "harness.h"

#define WAIT_MS 10000
#define TOKEN "tok-admin-1"
#define PROXY_ERROR_PREFIX "{\"error\":\"ollama-pool: "

static void
admin_get(int port, const char *path, struct http_resp *r)
{
	http_get(harness_strf("http://127.0.0.1:%d%s", port, path), r);
	H_ASSERT(r->ok, "GET %s on port %d: %s", path, port, r->error);
}

/* Rewrites the daemon's file, sends SIGHUP and waits for the READY=1
 * that ends the reload, whichever way it went. */
static void
admin_reload(struct harness_daemon *d, const char *conf)
{
	harness_write_file(d->dir, "ollama-pool.conf", conf);
	H_CHECK(kill(d->proc.pid, SIGHUP) == 0);
	H_ASSERT(harness_notify_wait(d, "READY=1", WAIT_MS) == 1,
	    "no READY=1 after SIGHUP");
}

/* ---- the three endpoints, without a token ---------------------------- */

enum on_port { ON_ADMIN, ON_CLIENT };
enum auth { AUTH_NONE, AUTH_TOKEN, AUTH_WRONG };

struct admin_case {
	const char *name;
	enum on_port port;
	const char *method; /* NULL: GET */
	const char *path;
	enum auth auth; /* Authorization: Bearer TOKEN, or a wrong one */
	long status;
	const char *body; /* contained in the body, if not NULL */
	const char *ctype; /* Content-Type begins so, if not NULL */
	const char *allow; /* the Allow header, if not NULL */
	int forwarded; /* went to the fake (a health probe may, too) */
};

static const struct admin_case admin_cases[] = {
    {"metrics on the admin listener", ON_ADMIN, NULL, "/metrics", 0, 200,
        "ollama_pool_build_info{version=", "text/plain; version=0.0.4", NULL,
        0},
    {"health on the admin listener", ON_ADMIN, NULL, "/health", 0, 200,
        "\"upstream_version\":\"0.12.0\"", "application/json", NULL, 0},
    {"stats on the admin listener", ON_ADMIN, NULL, "/stats", 0, 200,
        "\"start_time\":", "application/json", NULL, 0},
    {"HEAD of metrics", ON_ADMIN, "HEAD", "/metrics", 0, 200, NULL,
        "text/plain; version=0.0.4", NULL, 0},
    {"a query is ignored", ON_ADMIN, NULL, "/metrics?name[]=x", 0, 200,
        "ollama_pool_requests_total", NULL, NULL, 0},
    {"a wrong token is not even looked at", ON_ADMIN, NULL, "/stats",
        AUTH_WRONG, 200, "\"version\":", NULL, NULL, 0},
    {"an unknown path lists the three", ON_ADMIN, NULL, "/foo", 0, 404,
        PROXY_ERROR_PREFIX
        "no endpoint /foo (try /health, /metrics or /stats)\"}",
        "application/json", NULL, 0},
    {"the client port's prefix is not served there", ON_ADMIN, NULL,
        "/ollama-pool/metrics", 0, 404, "(try /health, /metrics or /stats)",
        NULL, NULL, 0},
    {"nothing is forwarded from there", ON_ADMIN, NULL, "/api/tags", 0, 404,
        PROXY_ERROR_PREFIX "no endpoint /api/tags", NULL, NULL, 0},
    {"a /v1 path there gets our own error shape", ON_ADMIN, NULL, "/v1/models",
        0, 404, PROXY_ERROR_PREFIX "no endpoint /v1/models", NULL, NULL, 0},
    {"POST of metrics", ON_ADMIN, "POST", "/metrics", 0, 405,
        PROXY_ERROR_PREFIX "POST is not allowed on /metrics\"}", NULL,
        "GET, HEAD", 0},
    {"DELETE of health", ON_ADMIN, "DELETE", "/health", 0, 405,
        "DELETE is not allowed on /health", NULL, "GET, HEAD", 0},
    {"the client port still wants the token for metrics", ON_CLIENT, NULL,
        "/ollama-pool/metrics", 0, 401, "Authorization: Bearer <token>", NULL,
        NULL, 0},
    {"and serves them with it", ON_CLIENT, NULL, "/ollama-pool/metrics",
        AUTH_TOKEN, 200, "ollama_pool_requests_total", NULL, NULL, 0},
    {"health there needs no token, as before", ON_CLIENT, NULL,
        "/ollama-pool/health", 0, 200, "\"status\":\"ok\"", NULL, NULL, 0},
    {"/metrics on the client port is Ollama's", ON_CLIENT, NULL, "/metrics",
        AUTH_TOKEN, 404, "404 page not found", NULL, NULL, 1},
    {"/health on the client port is Ollama's", ON_CLIENT, NULL, "/health",
        AUTH_TOKEN, 404, "404 page not found", NULL, NULL, 1},
    {"/stats without a token there is refused", ON_CLIENT, NULL, "/stats", 0,
        401, "Authorization: Bearer <token>", NULL, NULL, 0},
};
#define NCASES (sizeof admin_cases / sizeof admin_cases[0])

static void
admin_run_case(
    const struct admin_case *c, const struct harness_env *env, int admin_port)
{
	const char *hdrs[2] = {NULL, NULL};
	struct http_req req;
	struct http_resp r;
	const char *v;
	long long before, sent;
	int probe;

	memset(&req, 0, sizeof req);
	req.method = c->method;
	req.url = harness_strf("http://127.0.0.1:%d%s",
	    c->port == ON_ADMIN ? admin_port : env->daemon->port, c->path);
	if (c->auth != AUTH_NONE) {
		hdrs[0] = c->auth == AUTH_TOKEN ? "Authorization: Bearer " TOKEN
		                                : "Authorization: Bearer wrong";
		req.headers = hdrs;
	}
	before = fake_stat(env->fake, "requests");
	http_request(&req, &r);
	sent = fake_stat(env->fake, "requests") - before;
	H_ASSERT(r.ok && r.status == c->status, "%s: %s %s: %ld %s %.300s",
	    c->name, c->method ? c->method : "GET", c->path, r.status, r.error,
	    r.body.data ? r.body.data : "");
	if (c->body != NULL)
		H_ASSERT(r.body.data != NULL && strstr(r.body.data, c->body),
		    "%s: the body lacks \"%s\": %.300s", c->name, c->body,
		    r.body.data ? r.body.data : "");
	if (c->method != NULL && strcmp(c->method, "HEAD") == 0)
		H_ASSERT(r.body.len == 0, "%s: HEAD got %zu body bytes",
		    c->name, r.body.len);
	v = http_header_get(&r, "Content-Type");
	if (c->ctype != NULL)
		H_ASSERT(
		    v != NULL && strncmp(v, c->ctype, strlen(c->ctype)) == 0,
		    "%s: Content-Type %s, want %s...", c->name,
		    v ? v : "(none)", c->ctype);
	v = http_header_get(&r, "Allow");
	if (c->allow != NULL)
		H_ASSERT(v != NULL && strcmp(v, c->allow) == 0,
		    "%s: Allow %s, want %s", c->name, v ? v : "(none)",
		    c->allow);
	/* A health answer younger than a second is given again. */
	probe = c->status == 200 && strstr(c->path, "health") != NULL;
	H_ASSERT(c->forwarded ? sent == 1
	        : probe       ? sent <= 1
	                      : sent == 0,
	    "%s: the fake saw %lld requests of it, want %s", c->name, sent,
	    c->forwarded ? "1"
	        : probe  ? "at most one probe"
	                 : "none");
	http_resp_free(&r);
}

/* How many of the cases are counted under the route /ollama-pool with
 * this method and status: all of the admin listener's, and the client
 * port's /ollama-pool/ ones. */
static int
admin_expected_count(const char *method, long status)
{
	const struct admin_case *c;
	size_t i;
	int n = 0;

	for (i = 0; i < NCASES; i++) {
		c = &admin_cases[i];
		if (c->status == status &&
		    strcmp(c->method ? c->method : "GET", method) == 0 &&
		    (c->port == ON_ADMIN ||
		        strncmp(c->path, "/ollama-pool/", 13) == 0))
			n++;
	}
	return n;
}

START_TEST(test_admin_endpoints)
{
	struct harness_env env;
	struct http_resp r;
	int aport;
	char *line;
	size_t i;

	H_BEGIN();
	aport = harness_free_port();
	harness_up(&env,
	    harness_strf("[server]\nclient_tokens = " TOKEN "\n"
	                 "admin_listen = 127.0.0.1:%d\n",
	        aport));
	H_ASSERT(harness_log_wait(&env.daemon->proc,
	             harness_strf("listening on 127.0.0.1:%d for /metrics, "
	                          "/health and /stats (admin)",
	                 aport),
	             WAIT_MS),
	    "the log does not name the admin listener");
	for (i = 0; i < NCASES; i++)
		admin_run_case(&admin_cases[i], &env, aport);

	/* Counted as admin requests are today, whichever port. */
	admin_get(aport, "/metrics", &r);
	line = harness_strf("ollama_pool_requests_total{method=\"GET\","
	                    "route=\"/ollama-pool\",code=\"404\"} %d\n",
	    admin_expected_count("GET", 404));
	H_ASSERT_CONTAINS(r.body.data, line);
	line = harness_strf("ollama_pool_requests_total{method=\"POST\","
	                    "route=\"/ollama-pool\",code=\"405\"} %d\n",
	    admin_expected_count("POST", 405));
	H_ASSERT_CONTAINS(r.body.data, line);
	line = harness_strf("ollama_pool_requests_total{method=\"GET\","
	                    "route=\"/ollama-pool\",code=\"401\"} %d\n",
	    admin_expected_count("GET", 401));
	H_ASSERT_CONTAINS(r.body.data, line);
	line = harness_strf("ollama_pool_requests_total{method=\"GET\","
	                    "route=\"other\",code=\"404\"} 2\n");
	H_ASSERT_CONTAINS(r.body.data, line);
	http_resp_free(&r);
}
END_TEST

/* ---- reload adds, moves and removes it -------------------------------- */

START_TEST(test_admin_reload)
{
	struct harness_env env;
	struct http_resp r;
	int p1, p2;

	H_BEGIN();
	p1 = harness_free_port();
	p2 = harness_free_port();
	harness_up(&env, "");
	H_ASSERT_INT_EQ(harness_connect_errno(p1), ECONNREFUSED);

	/* Added. */
	admin_reload(env.daemon,
	    harness_strf("[server]\nadmin_listen = 127.0.0.1:%d\n", p1));
	admin_get(p1, "/metrics", &r);
	H_ASSERT_INT_EQ(r.status, 200);
	http_resp_free(&r);

	/* Moved: the old address is closed, the new one serves. */
	admin_reload(env.daemon,
	    harness_strf("[server]\nadmin_listen = "
	                 ":%d\n",
	        p2));
	H_ASSERT_INT_EQ(harness_connect_errno(p1), ECONNREFUSED);
	admin_get(p2, "/health", &r);
	H_ASSERT_INT_EQ(r.status, 200);
	http_resp_free(&r);

	/* Refused, keeping it: the client port, or beyond loopback without
	 * allow_remote. */
	admin_reload(env.daemon,
	    harness_strf(
	        "[server]\nadmin_listen = 127.0.0.1:%d\n", env.daemon->port));
	H_ASSERT(harness_log_wait(&env.daemon->proc,
	             harness_strf("reload failed, keeping the running "
	                          "settings: %s:2: admin_listen address "
	                          "127.0.0.1:%d is also a listen address",
	                 env.daemon->conf_path, env.daemon->port),
	             WAIT_MS),
	    "an admin_listen on the client port was not refused");
	admin_reload(env.daemon,
	    harness_strf("[server]\nadmin_listen = 0.0.0.0:%d\n", p1));
	H_ASSERT(harness_log_wait(&env.daemon->proc,
	             harness_strf("admin_listen address 0.0.0.0:%d is not "
	                          "loopback: set allow_remote = yes",
	                 p1),
	             WAIT_MS),
	    "an admin_listen beyond loopback was not refused");
	H_ASSERT_INT_EQ(harness_connect_errno(p1), ECONNREFUSED);
	admin_get(p2, "/stats", &r);
	H_ASSERT_INT_EQ(r.status, 200);
	http_resp_free(&r);

	/* Removed: nothing listens there, the client port serves on. */
	admin_reload(env.daemon, "[server]\n");
	H_ASSERT(
	    harness_log_wait(&env.daemon->proc,
	        harness_strf("stopped listening on 127.0.0.1:%d (admin)", p2),
	        WAIT_MS),
	    "the log does not say the admin listener closed");
	H_ASSERT_INT_EQ(harness_connect_errno(p2), ECONNREFUSED);
	admin_get(env.daemon->port, "/api/tags", &r);
	H_ASSERT_INT_EQ(r.status, 200);
	http_resp_free(&r);
}
END_TEST

/* ---- the setting, checked with -t ----------------------------------- */

struct check_case {
	const char *name;
	const char *conf; /* @P: a port */
	int exit;
	const char *out; /* in stdout (exit 0) or stderr (exit 1) */
};

static const struct check_case check_cases[] = {
    {"beyond loopback without allow_remote",
        "[server]\nadmin_listen = "
        "0.0.0.0:@P\n",
        1,
        ":2: admin_listen address 0.0.0.0:@P is not loopback: set "
        "allow_remote = yes"},
    {"beyond loopback with allow_remote",
        "[server]\nallow_remote = yes\nadmin_listen = 0.0.0.0:@P\n", 0,
        "admin_listen = 0.0.0.0:@P\n"},
    {":PORT is loopback", "[server]\nadmin_listen = :@P\n", 0,
        "admin_listen = :@P\n"},
    {"IPv6 loopback", "[server]\nadmin_listen = [::1]:@P\n", 0,
        "admin_listen = [::1]:@P\n"},
    {"a unix socket", "[server]\nadmin_listen = unix:/run/op-admin-@P.sock\n",
        0, "admin_listen = unix:/run/op-admin-@P.sock\n"},
    {"off by default", "[server]\n;@P\n", 0, "admin_listen = \n"},
    {"one address only", "[server]\nadmin_listen = 127.0.0.1:@P 127.0.0.1:1\n",
        1, ":2: admin_listen takes one address"},
    {"not a listen address",
        "[server]\nlisten = 127.0.0.1:@P\n"
        "admin_listen = 127.0.0.1:@P\n",
        1, ":3: admin_listen address 127.0.0.1:@P is also a listen address"},
    {"a bad address", "[server]\nadmin_listen = 127.0.0.1:x@P\n", 1,
        ":2: admin_listen: bad port in listen address"},
};

/* The template with every @P replaced by the port. */
static char *
admin_subst_port(const char *tmpl, int port)
{
	struct harness_buf b = {NULL, 0, 0};
	const char *p, *at;
	char *out;

	harness_buf_add(&b, "", 0);
	for (p = tmpl; (at = strstr(p, "@P")) != NULL; p = at + 2) {
		harness_buf_add(&b, p, (size_t)(at - p));
		harness_buf_addf(&b, "%d", port);
	}
	harness_buf_add(&b, p, strlen(p));
	out = harness_strf("%s", b.data);
	harness_buf_free(&b);
	return out;
}

START_TEST(test_admin_check_config)
{
	const struct check_case *c;
	struct harness_run run;
	const char *argv[5];
	char *dir, *path, *want;
	size_t i;
	int port;

	H_BEGIN();
	dir = harness_tmpdir();
	for (i = 0; i < sizeof check_cases / sizeof check_cases[0]; i++) {
		c = &check_cases[i];
		port = harness_free_port();
		path = harness_write_file(
		    dir, "check.conf", admin_subst_port(c->conf, port));
		argv[0] = harness_daemon_bin();
		argv[1] = "-t";
		argv[2] = "-c";
		argv[3] = path;
		argv[4] = NULL;
		harness_run(argv, WAIT_MS, &run);
		want = admin_subst_port(c->out, port);
		H_ASSERT(!run.timed_out && WIFEXITED(run.wstatus) &&
		        WEXITSTATUS(run.wstatus) == c->exit,
		    "%s: wait status 0x%x, want exit %d; stderr: %s", c->name,
		    run.wstatus, c->exit, run.err.data ? run.err.data : "");
		H_ASSERT(strstr(c->exit ? (run.err.data ? run.err.data : "")
		                        : (run.out.data ? run.out.data : ""),
		             want) != NULL,
		    "%s: want \"%s\" in: %s%s", c->name, want,
		    run.out.data ? run.out.data : "",
		    run.err.data ? run.err.data : "");
		harness_run_free(&run);
	}
}
END_TEST

/* ---- the start-up check ---------------------------------------------- */

/*
 * Upstream down at start: one warning naming the URL and the error, the
 * daemon ready all the same; it asks again (1 s, then 2 s...) without a
 * second warning, and says once that the upstream is reachable when a
 * fake comes up on that port.
 */
START_TEST(test_startup_unreachable)
{
	struct harness_daemon *d;
	struct http_resp r;
	const char *url, *warning, *reachable;
	const char *extra[] = {"-v", NULL}; /* debug: the re-checks */
	char *lport;
	int port;

	H_BEGIN();
	port = harness_free_port();
	url = harness_strf("http://127.0.0.1:%d", port);
	d = harness_daemon_start("", url, extra);
	warning = harness_strf("warning: upstream %s is unreachable: Failed to "
	                       "connect to 127.0.0.1 port %d",
	    url, port);
	H_ASSERT(harness_log_wait(&d->proc, warning, WAIT_MS),
	    "no warning that %s is unreachable", url);
	H_ASSERT(harness_log_wait(&d->proc,
	             "; requests will fail until it answers\n", WAIT_MS),
	    "the warning does not say what it means");
	/* The first re-check, a second later, is no second warning. */
	H_ASSERT(
	    harness_log_wait(&d->proc,
	        harness_strf("upstream %s is still unreachable", url), WAIT_MS),
	    "no re-check of %s", url);
	H_ASSERT_INT_EQ(harness_log_count(&d->proc, " is unreachable: "), 1);

	lport = harness_strf("127.0.0.1:%d", port);
	fake_start("fake", NULL, (const char *const[]){"-l", lport, NULL});
	reachable = harness_strf("notice: upstream %s is reachable now: ", url);
	H_ASSERT(harness_log_wait(&d->proc, reachable, 3 * WAIT_MS),
	    "no notice that %s became reachable", url);
	H_ASSERT_INT_EQ(harness_log_count(&d->proc, reachable), 1);
	H_ASSERT_INT_EQ(harness_log_count(&d->proc, " is unreachable: "), 1);
	admin_get(d->port, "/api/tags", &r);
	H_ASSERT_INT_EQ(r.status, 200);
	http_resp_free(&r);
	H_ASSERT_INT_EQ(harness_log_count(&d->proc, reachable), 1);
}
END_TEST

/* Upstream there at start: what it is, in one line. */
START_TEST(test_startup_verdicts)
{
	static const struct {
		const char *name;
		const char *fault; /* on /api/version, before the daemon */
		const char *line; /* after "upstream URL " */
	} cases[] = {
	    {"Ollama", NULL, "is Ollama 0.12.0\n"},
	    {"not Ollama",
	        "{\"action\":\"status\",\"status\":404,"
	        "\"path\":\"/api/version\",\"count\":1}",
	        "answers, but GET /api/version answered 404: is it Ollama?\n"},
	    {"no version",
	        "{\"action\":\"status\",\"status\":200,"
	        "\"path\":\"/api/version\",\"count\":1,"
	        "\"body\":\"{}\"}",
	        "answers GET /api/version, with no version in it\n"},
	};
	struct harness_fake *fake;
	struct harness_daemon *d;
	const char *url, *want;
	size_t i;

	H_BEGIN();
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		fake = fake_start(harness_strf("fake%zu", i), NULL, NULL);
		if (cases[i].fault != NULL)
			fake_fault(fake, cases[i].fault);
		url = harness_upstream_of(fake);
		d = harness_daemon_start("", url, NULL);
		want = harness_strf("upstream %s %s", url, cases[i].line);
		H_ASSERT(harness_log_count(&d->proc, want) == 1,
		    "%s: the log lacks \"%s\"", cases[i].name, want);
		H_ASSERT(harness_log_count(&d->proc, "unreachable") == 0,
		    "%s: an upstream that answered was called unreachable",
		    cases[i].name);
		harness_daemon_stop(d);
		fake_stop(fake);
	}
}
END_TEST

static Suite *
admin_suite(void)
{
	Suite *s = suite_create("admin");
	TCase *tc;

	tc = harness_tcase(s, "admin_listen", 60);
	tcase_add_test(tc, test_admin_endpoints);
	tcase_add_test(tc, test_admin_reload);
	tcase_add_test(tc, test_admin_check_config);

	tc = harness_tcase(s, "startup", 60);
	tcase_add_test(tc, test_startup_unreachable);
	tcase_add_test(tc, test_startup_verdicts);
	return s;
}

int
main(void)
{
	return harness_main(admin_suite());
}
