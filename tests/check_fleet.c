/*
 * Integration tests of a fleet: the daemon in front of up to three fake
 * Ollamas ([backend NAME] sections), as pods behind one Service would be:
 * the first fake on 127.0.0.1 and a free port, the others on 127.0.0.2 and
 * 127.0.0.3 with the same port, each with its own installed and loaded
 * models (-T, -P), load time (-D) and generation time (-B).
 *
 * Placement by loaded model, weight among equals, num_parallel per model,
 * the fair queue and its limits, ejection and readmission, failover on 503
 * without backoff, the fleet-wide endpoints, tokens, the pinned backend
 * header, [upstream] alone behaving as before, the metrics and stats, and
 * reloads.  Where a request went is read from the fakes' own stats
 * (by_model, arrivals with the X-Fake-Tag header, authorization) and logs.
 *
 * Timings are small (loads of 400 ms, generations of 150 to 300 ms, a
 * probe every 0.2 s) and every bound above them generous, for a machine
 * with two cores and other work.  Waiting is for an event (an answer, a
 * log line, /ollama-pool/stats saying so, the fake's stats), never a
 * sleep; every loop is bounded in count and in time.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sys/wait.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <cjson/cJSON.h>

#include "harness.h"

#define WAIT_MS 10000
#define PROBE_S 0.2
#define LOAD_MS 400
/* A load no request should pay: long, so that a first byte "well before
 * it" is a generous bound, and free, since it never happens. */
#define NEVER_LOAD_MS 3000
/* Over what the fake guarantees, on a busy machine. */
#define SLACK_S 2.5

static const char *const hosts[] = {"127.0.0.1", "127.0.0.2", "127.0.0.3"};

/* ---- the fleet ----------------------------------------------------------- */

/*
 * Starts n fakes, fN named and labelled "fN": the first on 127.0.0.1 and a
 * free port, the others on 127.0.0.2 and .3 with that port.  args[i] are
 * fake i's options (NULL: none).
 */
static void
fleet_fakes(struct harness_fake **f, int n, const char *const *const *args)
{
	int i, port = 0;

	for (i = 0; i < n; i++) {
		f[i] = fake_start_at(harness_strf("f%d", i + 1),
		    harness_strf("f%d", i + 1), hosts[i], port,
		    args != NULL ? args[i] : NULL);
		port = f[0]->port;
		H_ASSERT_INT_EQ(f[i]->port, port);
	}
}

/*
 * A fleet's configuration: upstream (more [upstream] lines, or NULL), then
 * one [backend NAME] per fake, named as the fake is, with its url and
 * more[i] (NULL: nothing), and tail (more sections) at the end.
 */
static char *
fleet_conf(struct harness_fake **f, int n, const char *upstream,
    const char *const *more, const char *tail)
{
	char *s;
	int i;

	s = harness_strf("[upstream]\nprobe_interval = %g\nfail_threshold = "
	                 "2\n%s\n",
	    PROBE_S, upstream != NULL ? upstream : "");
	for (i = 0; i < n; i++)
		s = harness_strf("%s[backend %s]\nurl = %s\n%s\n", s,
		    f[i]->name, harness_upstream_of(f[i]),
		    more != NULL && more[i] != NULL ? more[i] : "");
	return harness_strf("%s%s", s, tail != NULL ? tail : "");
}

/* ---- requests -------------------------------------------------------- */

/* One request with its headers, kept together: both must live as long as
 * the transfer. */
struct freq {
	struct http_req req;
	const char *hdrs[8];
};

/*
 * A model-routed request through the daemon: POST path with a body naming
 * model (a prompt for /api/generate, messages otherwise), tagged for the
 * fake's arrivals when tag is not NULL, with a client token when token is
 * not NULL, and one more header when extra is not NULL.
 */
static void
freq_init(struct freq *q, const struct harness_daemon *d, const char *path,
    const char *model, const char *tag, const char *token, const char *extra)
{
	const char *body;
	int n = 0;

	memset(q, 0, sizeof *q);
	q->hdrs[n++] = "Content-Type: application/json";
	q->hdrs[n++] = "Expect:";
	if (tag != NULL)
		q->hdrs[n++] = harness_strf("X-Fake-Tag: %s", tag);
	if (token != NULL)
		q->hdrs[n++] = harness_strf("Authorization: Bearer %s", token);
	if (extra != NULL)
		q->hdrs[n++] = extra;
	q->hdrs[n] = NULL;
	if (strcmp(path, "/api/generate") == 0)
		body =
		    harness_strf("{\"model\":\"%s\",\"prompt\":\"p\"}", model);
	else
		body = harness_strf("{\"model\":\"%s\",\"messages\":[{\"role\":"
		                    "\"user\",\"content\":\"hi\"}]}",
		    model);
	q->req.method = "POST";
	q->req.url = harness_daemon_url(d, path);
	q->req.headers = q->hdrs;
	q->req.body = body;
	q->req.body_len = strlen(body);
	q->req.has_body = 1;
}

/* A generation of model through the daemon, which must succeed whole. */
static void
generate(const struct harness_daemon *d, const char *model, const char *tag,
    struct http_resp *r)
{
	struct freq q;

	freq_init(&q, d, "/api/generate", model, tag, NULL, NULL);
	http_request(&q.req, r);
	H_ASSERT(r->ok && r->status == 200, "generate %s (%s): %s %ld %.300s",
	    model, tag ? tag : "-", r->error, r->status,
	    r->body.data ? r->body.data : "");
	H_ASSERT_CONTAINS(r->body.data, "\"done\":true");
}

static void
get(const struct harness_daemon *d, const char *path, struct http_resp *r)
{
	http_get(harness_daemon_url(d, path), r);
	H_ASSERT(r->ok, "GET %s: %s", path, r->error);
}

/* A request with a JSON body through the daemon. */
static void
send_json(const struct harness_daemon *d, const char *method, const char *path,
    const char *json, struct http_resp *r)
{
	static const char *const hdrs[] = {
	    "Content-Type: application/json", "Expect:", NULL};
	struct http_req req;

	memset(&req, 0, sizeof req);
	req.method = method;
	req.url = harness_daemon_url(d, path);
	req.headers = hdrs;
	req.body = json;
	req.body_len = strlen(json);
	req.has_body = 1;
	http_request(&req, r);
	H_ASSERT(r->ok, "%s %s: %s", method, path, r->error);
}

/* ---- what the fakes saw ------------------------------------------------- */

/* stats[obj][key] as a number, 0 when it is not there. */
static long
fake_num(const struct harness_fake *f, const char *obj, const char *key)
{
	cJSON *j = fake_stats(f);
	const cJSON *v;
	long n;

	v = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(j, obj), key);
	n = cJSON_IsNumber(v) ? (long)v->valuedouble : 0;
	cJSON_Delete(j);
	return n;
}

/* The tags of the fake's arrivals, in order, as ",x1,y1,x2," (commas
 * around each, so that ",x1," finds x1 and not x10). */
static char *
fake_arrivals(const struct harness_fake *f)
{
	cJSON *j = fake_stats(f);
	const cJSON *a;
	char *s = harness_strf(",");

	cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(j, "arrivals"))
	{
		s = harness_strf("%s%s,", s, harness_jstr(a, "tag"));
	}
	cJSON_Delete(j);
	return s;
}

static int
fake_narrivals(const struct harness_fake *f)
{
	cJSON *j = fake_stats(f);
	int n;

	n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "arrivals"));
	cJSON_Delete(j);
	return n;
}

/* Does the stats list key ("tags", "loaded") hold name? */
static int
fake_has(const struct harness_fake *f, const char *key, const char *name)
{
	cJSON *j = fake_stats(f);
	const cJSON *e;
	int found = 0;

	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, key))
	{
		if (cJSON_IsString(e) && strcmp(e->valuestring, name) == 0)
			found = 1;
	}
	cJSON_Delete(j);
	return found;
}

/* The 1-based place of a tag among the arrivals, 0 when it never came. */
static int
arrival_place(const char *arrivals, const char *tag)
{
	const char *at = strstr(arrivals, harness_strf(",%s,", tag)), *p;
	int n = 1;

	if (at == NULL)
		return 0;
	for (p = arrivals + 1; p <= at; p++)
		if (*p == ',')
			n++;
	return n;
}

/* ---- the daemon's stats -------------------------------------------------- */

static long
stats_queued(const struct harness_daemon *d, const char *token)
{
	cJSON *j = harness_stats(d, token);
	long n = (long)harness_jnum(j, "queued");

	cJSON_Delete(j);
	return n;
}

/*
 * Drives the transfers of m until the daemon's queue holds at least n
 * requests: the way to queue requests in a known order, one or a few at a
 * time.  Bounded in time (WAIT_MS) and in the number of looks.
 */
static void
drive_until_queued(struct http_multi *m, const struct harness_daemon *d,
    const char *token, long n)
{
	double deadline = harness_now() + WAIT_MS / 1000.0;
	long have = 0;
	int i;

	for (i = 0; i < 2000 && harness_now() < deadline; i++) {
		http_multi_run(m, 5);
		if ((have = stats_queued(d, token)) >= n)
			return;
	}
	H_ASSERT(0,
	    "the daemon's queue holds %ld requests, not %ld, after %d s", have,
	    n, WAIT_MS / 1000);
}

/* Sends a request whose answer the fake holds back (a hang fault on
 * /api/generate), on a raw connection, and waits until the fake has it:
 * the slot is taken until the connection closes. */
static void
blocker_open(struct http_conn *c, const struct harness_daemon *d,
    struct harness_fake *f, const char *token, const char *tag)
{
	static const char body[] = "{\"model\":\"a\",\"prompt\":\"p\"}";
	char *head;

	fake_fault(f, "{\"action\":\"hang\",\"path\":\"/api/generate\"}");
	head = harness_strf("POST /api/generate HTTP/1.1\r\nHost: x\r\n"
	                    "Content-Type: application/json\r\n"
	                    "X-Fake-Tag: %s\r\n%s%s%sContent-Length: %zu\r\n"
	                    "\r\n%s",
	    tag, token ? "Authorization: Bearer " : "", token ? token : "",
	    token ? "\r\n" : "", sizeof body - 1, body);
	http_conn_open(c, d->port);
	H_CHECK(http_conn_sendstr(c, head, WAIT_MS) == 0);
	H_ASSERT(
	    harness_log_wait(&f->proc, "POST /api/generate (fault)", WAIT_MS),
	    "the blocking request did not reach the fake");
}

/* ---- 1. placement by loaded model ---------------------------------------- */

START_TEST(test_placement_loaded)
{
	static const char *const a1[] = {
	    "-T", "a,b", "-P", "a", "-D", "3000", NULL};
	static const char *const a2[] = {
	    "-T", "a,b", "-P", "b", "-D", "3000", NULL};
	static const char *const a3[] = {"-T", "a,b", "-D", "3000", NULL};
	static const char *const *const args[] = {a1, a2, a3};
	struct harness_fake *f[3];
	struct harness_daemon *d;
	struct http_resp r;
	const char *model;
	int i;

	H_BEGIN();
	fleet_fakes(f, 3, args);
	d = harness_fleet_start(
	    fleet_conf(f, 3, NULL, NULL, NULL), 3, NULL, NULL);
	for (i = 0; i < 20; i++) {
		model = i % 2 == 0 ? "a" : "b";
		generate(d, model, harness_strf("r%d", i), &r);
		/* Loaded where it went: the fake reports no load, and the
		 * answer began long before a load would have ended. */
		H_ASSERT_CONTAINS(r.body.data, "\"load_duration\":10,");
		H_ASSERT(r.t_head - r.t_start < NEVER_LOAD_MS / 1000.0,
		    "request %d for %s: first byte after %.3f s", i, model,
		    r.t_head - r.t_start);
		http_resp_free(&r);
	}
	H_ASSERT_INT_EQ(fake_num(f[0], "by_model", "a:latest"), 10);
	H_ASSERT_INT_EQ(fake_num(f[0], "by_model", "b:latest"), 0);
	H_ASSERT_INT_EQ(fake_num(f[1], "by_model", "b:latest"), 10);
	H_ASSERT_INT_EQ(fake_num(f[1], "by_model", "a:latest"), 0);
	H_ASSERT_INT_EQ(fake_narrivals(f[2]), 0);
	/* And the fleet learnt nothing new: each still has one loaded. */
	H_CHECK(!fake_has(f[2], "loaded", "a:latest"));
	H_CHECK(!fake_has(f[0], "loaded", "b:latest"));
}
END_TEST

/* ---- 2. never to one that must load it while a loaded one is free ------- */

START_TEST(test_placement_free_loaded)
{
	static const char *const a1[] = {
	    "-T", "a", "-P", "a", "-D", "3000", "-B", "200", NULL};
	static const char *const a2[] = {
	    "-T", "a", "-D", "3000", "-B", "200", NULL};
	static const char *const *const args[] = {a1, a2, a2};
	struct freq q[3];
	struct http_req reqs[3];
	struct http_resp r[3];
	struct harness_fake *f[3];
	struct harness_daemon *d;
	int round, i;

	H_BEGIN();
	fleet_fakes(f, 3, args);
	d = harness_fleet_start(
	    fleet_conf(f, 3, "num_parallel = 4", NULL, NULL), 3, NULL, NULL);
	/* Three at once, within num_parallel: fake 1 always has a slot. */
	for (round = 0; round < 3; round++) {
		for (i = 0; i < 3; i++) {
			freq_init(&q[i], d, "/api/generate", "a",
			    harness_strf("r%d.%d", round, i), NULL, NULL);
			reqs[i] = q[i].req;
		}
		http_request_many(reqs, r, 3);
		for (i = 0; i < 3; i++) {
			H_ASSERT(r[i].ok && r[i].status == 200,
			    "round %d, request %d: %s %ld", round, i,
			    r[i].error, r[i].status);
			H_ASSERT_CONTAINS(
			    r[i].body.data, "\"load_duration\":10,");
			http_resp_free(&r[i]);
		}
	}
	H_ASSERT_INT_EQ(fake_num(f[0], "by_model", "a:latest"), 9);
	H_ASSERT_INT_EQ(fake_narrivals(f[1]), 0);
	H_ASSERT_INT_EQ(fake_narrivals(f[2]), 0);
	H_CHECK(fake_num(f[0], "max_concurrent_model", "a:latest") <= 3);
}
END_TEST

/* ---- 3. weight among equals, round-robin ties ------------------------ */

START_TEST(test_weight)
{
	static const char *const a[] = {"-T", "a", "-P", "a", NULL};
	static const char *const *const args[] = {a, a};
	static const char *const more[] = {"weight = 3", "weight = 1"};
	enum { N = 16 };
	struct freq q[N];
	struct http_req reqs[N];
	struct http_resp r[N];
	struct harness_fake *f[2];
	struct harness_daemon *d;
	char *seen;
	long n1, n2;
	int i, first;

	H_BEGIN();
	fleet_fakes(f, 2, args);
	d = harness_fleet_start(
	    fleet_conf(
	        f, 2, "num_parallel = 16\npool_maxsize = 20", more, NULL),
	    2, NULL, NULL);

	/* Sequential requests on an idle fleet: every one is a tie, so they
	 * alternate, weights or not. */
	for (i = 0; i < 8; i++) {
		generate(d, "a", harness_strf("s%d", i), &r[0]);
		http_resp_free(&r[0]);
	}
	seen = fake_arrivals(f[0]);
	first = arrival_place(seen, "s0") != 0 ? 0 : 1;
	for (i = 0; i < 8; i++)
		H_ASSERT((arrival_place(seen, harness_strf("s%d", i)) != 0) ==
		        (i % 2 == first),
		    "sequential requests do not alternate: fake 1 had %s, "
		    "fake 2 %s",
		    seen, fake_arrivals(f[1]));
	H_ASSERT_INT_EQ(fake_narrivals(f[1]), 4);

	/* At once, each held 300 ms: 3 to 1. */
	fake_set_models(f[0], "{\"busy_ms\":300}");
	fake_set_models(f[1], "{\"busy_ms\":300}");
	for (i = 0; i < N; i++) {
		freq_init(&q[i], d, "/api/generate", "a",
		    harness_strf("c%d", i), NULL, NULL);
		reqs[i] = q[i].req;
	}
	http_request_many(reqs, r, N);
	for (i = 0; i < N; i++) {
		H_ASSERT(r[i].ok && r[i].status == 200, "request %d: %s %ld", i,
		    r[i].error, r[i].status);
		http_resp_free(&r[i]);
	}
	n1 = fake_num(f[0], "by_model", "a:latest") - 4;
	n2 = fake_num(f[1], "by_model", "a:latest") - 4;
	H_ASSERT_INT_EQ(n1 + n2, N);
	/* 12 and 4 when all overlap; round robin would make it 8 and 8. */
	H_ASSERT(n1 >= 10 && n2 >= 2,
	    "weights 3 and 1 shared %d requests as %ld and %ld", N, n1, n2);
}
END_TEST

/* ---- 4. num_parallel is never exceeded ------------------------------- */

START_TEST(test_num_parallel)
{
	static const char *const a[] = {
	    "-T", "a", "-P", "a", "-B", "200", NULL};
	static const char *const *const args[] = {a};
	enum { N = 10 };
	struct freq q[N];
	struct http_resp r[N];
	struct harness_fake *f[1];
	struct harness_daemon *d;
	struct http_multi *m;
	double deadline;
	long queued, most = 0;
	int i, k;

	H_BEGIN();
	fleet_fakes(f, 1, args);
	d = harness_fleet_start(
	    fleet_conf(f, 1, "num_parallel = 2", NULL, NULL), 1, NULL, NULL);
	m = http_multi_new();
	for (i = 0; i < N; i++) {
		freq_init(&q[i], d, "/api/generate", "a",
		    harness_strf("r%d", i), NULL, NULL);
		http_multi_add(m, &q[i].req, &r[i]);
	}
	/* While they run, the daemon says some wait. */
	deadline = harness_now() + 30;
	for (k = 0; k < 5000 && harness_now() < deadline; k++) {
		if (http_multi_run(m, 5) == 0)
			break;
		queued = stats_queued(d, NULL);
		if (queued > most)
			most = queued;
	}
	H_ASSERT(http_multi_wait(m, 30000), "the requests did not end");
	http_multi_free(m);
	for (i = 0; i < N; i++) {
		H_ASSERT(r[i].ok && r[i].status == 200, "request %d: %s %ld", i,
		    r[i].error, r[i].status);
		H_ASSERT_CONTAINS(r[i].body.data, "\"done\":true");
		http_resp_free(&r[i]);
	}
	H_ASSERT(most > 0, "/ollama-pool/stats never showed a request queued");
	H_ASSERT_INT_EQ(fake_num(f[0], "max_concurrent_model", "a:latest"), 2);
	H_ASSERT_INT_EQ(fake_num(f[0], "by_model", "a:latest"), N);
}
END_TEST

/* ---- 5. the queue is fair between clients ----------------------------- */

START_TEST(test_fairness)
{
	static const char *const a[] = {"-T", "a", "-P", "a", "-B", "20", NULL};
	static const char *const *const args[] = {a};
	enum { NX = 10, NY = 3 };
	struct freq q[NX + NY];
	struct http_resp r[NX + NY];
	struct harness_fake *f[1];
	struct harness_daemon *d;
	struct http_multi *m;
	struct http_conn blocker;
	char *seen;
	int i, place, last;

	H_BEGIN();
	fleet_fakes(f, 1, args);
	d = harness_fleet_start(
	    fleet_conf(f, 1, "num_parallel = 1\npool_maxsize = 1", NULL,
	        "[server]\nclient_tokens = tx ty\n"),
	    1, "tx", NULL);
	/* Client X holds the one slot, then queues ten, one after the
	 * other; then client Y queues three. */
	blocker_open(&blocker, d, f[0], "tx", "x0");
	m = http_multi_new();
	for (i = 0; i < NX + NY; i++) {
		int x = i < NX;

		freq_init(&q[i], d, "/api/generate", "a",
		    harness_strf("%s%d", x ? "x" : "y", x ? i + 1 : i - NX + 1),
		    x ? "tx" : "ty", NULL);
		http_multi_add(m, &q[i].req, &r[i]);
		drive_until_queued(m, d, "tx", i + 1);
	}
	/* The slot frees: the queue goes round the clients. */
	http_conn_close(&blocker);
	H_ASSERT(http_multi_wait(m, 30000), "the queued requests did not end");
	http_multi_free(m);
	for (i = 0; i < NX + NY; i++) {
		H_ASSERT(r[i].ok && r[i].status == 200, "request %d: %s %ld", i,
		    r[i].error, r[i].status);
		http_resp_free(&r[i]);
	}
	seen = fake_arrivals(f[0]);
	H_ASSERT_INT_EQ(arrival_place(seen, "x0"), 1);
	/* Y's turn comes at once, then each client's in turn: x0 y1 x1 y2
	 * x2 y3 x3 ...  y1 by the 4th place (one of slack), and one or two
	 * of X's between two of Y's: first come, first served would put
	 * Y's last, and a queue that favoured the newcomer Y's together. */
	place = arrival_place(seen, "y1");
	H_ASSERT(place > 0 && place <= 4,
	    "y1 came %d-th: not before X's other requests: %s", place, seen);
	for (i = 2, last = place; i <= NY; i++, last = place) {
		place = arrival_place(seen, harness_strf("y%d", i));
		H_ASSERT(place - last >= 2 && place - last <= 3,
		    "y%d came %d-th, y%d %d-th: not interleaved with X's: %s",
		    i, place, i - 1, last, seen);
	}
	/* FIFO within one client. */
	for (i = 1, last = 0; i <= NX; i++) {
		place = arrival_place(seen, harness_strf("x%d", i));
		H_ASSERT(place > last, "x%d came %d-th, before x%d: %s", i,
		    place, i - 1, seen);
		last = place;
	}
}
END_TEST

/* ---- 6. queue_max and queue_timeout ---------------------------------- */

static const struct queue_case {
	const char *name;
	const char *upstream; /* [upstream] lines */
	int nqueued; /* requests made to wait first */
	const char *path; /* the one refused */
	int openai;
	double min_s, max_s; /* its answer's time */
} queue_cases[] = {
    {"queue_max", "queue_max = 2", 2, "/api/generate", 0, 0, SLACK_S},
    {"queue_max on /v1", "queue_max = 2", 2, "/v1/chat/completions", 1, 0,
        SLACK_S},
    {"queue_timeout", "queue_timeout = 0.3", 0, "/api/generate", 0, 0.29,
        0.3 + SLACK_S},
    {"queue_timeout on /v1", "queue_timeout = 0.3", 0, "/v1/chat/completions",
        1, 0.29, 0.3 + SLACK_S},
};

START_TEST(test_queue_limits)
{
	static const char *const a[] = {"-T", "a", "-P", "a", NULL};
	static const char *const *const args[] = {a};
	const struct queue_case *c = &queue_cases[_i];
	struct freq q[3];
	struct http_resp r[3], refused;
	struct harness_fake *f[1];
	struct harness_daemon *d;
	struct http_multi *m;
	struct http_conn blocker;
	const cJSON *e;
	cJSON *j;
	int i;

	harness_begin(harness_strf("test_queue_limits_%d", _i));
	fleet_fakes(f, 1, args);
	d = harness_fleet_start(
	    fleet_conf(f, 1, harness_strf("%s\nnum_parallel = 1", c->upstream),
	        NULL, NULL),
	    1, NULL, NULL);
	blocker_open(&blocker, d, f[0], NULL, "blocker");
	m = http_multi_new();
	for (i = 0; i < c->nqueued; i++) {
		freq_init(&q[i], d, "/api/generate", "a",
		    harness_strf("q%d", i), NULL, NULL);
		http_multi_add(m, &q[i].req, &r[i]);
		drive_until_queued(m, d, NULL, i + 1);
	}

	freq_init(&q[2], d, c->path, "a", "refused", NULL, NULL);
	q[2].req.timeout_ms = WAIT_MS; /* without the limit it would wait */
	http_request(&q[2].req, &refused);
	H_ASSERT(refused.ok && refused.status == 503, "%s: %s %ld %.300s",
	    c->name, refused.error, refused.status, refused.body.data);
	H_ASSERT(http_header_get(&refused, "Retry-After") != NULL,
	    "%s: 503 without Retry-After", c->name);
	H_ASSERT(refused.t_end - refused.t_start >= c->min_s &&
	        refused.t_end - refused.t_start <= c->max_s,
	    "%s: answered after %.3f s", c->name,
	    refused.t_end - refused.t_start);
	j = harness_json(&refused, c->name);
	e = cJSON_GetObjectItemCaseSensitive(j, "error");
	if (c->openai) {
		H_ASSERT(cJSON_IsObject(e), "%s: not OpenAI's error shape: %s",
		    c->name, refused.body.data);
		e = cJSON_GetObjectItemCaseSensitive(e, "message");
	}
	H_ASSERT(cJSON_IsString(e), "%s: no error message: %s", c->name,
	    refused.body.data);
	H_ASSERT(strstr(e->valuestring, "queue") != NULL,
	    "%s: the message does not say why: %s", c->name, e->valuestring);
	cJSON_Delete(j);
	http_resp_free(&refused);
	H_ASSERT_INT_EQ(arrival_place(fake_arrivals(f[0]), "refused"), 0);

	/* Those that waited go once the slot frees. */
	http_conn_close(&blocker);
	H_ASSERT(http_multi_wait(m, 30000),
	    "%s: the queued requests did not "
	    "end",
	    c->name);
	http_multi_free(m);
	for (i = 0; i < c->nqueued; i++) {
		H_ASSERT(r[i].ok && r[i].status == 200, "%s, queued %d: %s %ld",
		    c->name, i, r[i].error, r[i].status);
		http_resp_free(&r[i]);
	}
}
END_TEST

/* ---- 7. ejection, failover and readmission ----------------------------- */

static int
count_by(const struct harness_fake *f)
{
	return (int)fake_num(f, "by_model", "a:latest");
}

static const char *
backend_state(const struct harness_daemon *d, const char *name)
{
	cJSON *j = harness_stats(d, NULL);
	const cJSON *b = harness_stats_backend(j, name);
	const char *s;

	H_ASSERT(b != NULL, "no backend %s in /ollama-pool/stats", name);
	s = harness_strf("%s", harness_jstr(b, "state"));
	cJSON_Delete(j);
	return s;
}

START_TEST(test_ejection)
{
	static const char *const a[] = {"-T", "a", "-P", "a", NULL};
	static const char *const *const args[] = {a, a};
	struct harness_fake *f[2], *again;
	struct harness_daemon *d;
	struct http_resp r;
	double t_kill, t_out = 0, deadline;
	int i, before, served;

	H_BEGIN();
	fleet_fakes(f, 2, args);
	d = harness_fleet_start(
	    fleet_conf(f, 2, "num_parallel = 4", NULL, NULL), 2, NULL, NULL);
	for (i = 0; i < 6; i++) {
		generate(d, "a", NULL, &r);
		http_resp_free(&r);
	}
	H_CHECK(count_by(f[0]) > 0 && count_by(f[1]) > 0);

	/* Killed between two requests: the load goes on, and none fails. */
	before = count_by(f[1]);
	fake_stop(f[0]);
	t_kill = harness_now();
	deadline = t_kill + 2 * PROBE_S + SLACK_S;
	for (i = 0; i < 500 && t_out == 0; i++) {
		generate(d, "a", harness_strf("k%d", i), &r);
		http_resp_free(&r);
		if (strcmp(backend_state(d, "f1"), "ejected") == 0)
			t_out = harness_now();
		else if (harness_now() > deadline)
			break;
	}
	H_ASSERT(t_out > 0, "f1 was not ejected within %.1f s of its death",
	    deadline - t_kill);
	H_ASSERT(harness_log_count(&d->proc, "backend f1 (") >= 1 &&
	        harness_log_count(&d->proc, "ejected after") == 1,
	    "the ejection is not logged once");
	for (i = 0; i < 5; i++) {
		generate(d, "a", harness_strf("after%d", i), &r);
		http_resp_free(&r);
	}
	served = count_by(f[1]) - before;
	H_ASSERT(
	    served >= 5, "fake 2 served %d requests after the kill", served);

	/* Back on the same address and port: readmitted, and it serves. */
	again = fake_start_at("f1again", "f1", hosts[0], f[1]->port, a);
	/* Probed again after 1 s, then 2, 4...: within a few seconds. */
	t_kill = harness_now();
	i = harness_log_wait(&d->proc, "is back: readmitted", 40000);
	H_ASSERT(
	    i, "f1 was not readmitted (waited %.3f s)", harness_now() - t_kill);
	H_ASSERT_STR_EQ(backend_state(d, "f1"), "up");
	for (i = 0; i < 10 && count_by(again) == 0; i++) {
		generate(d, "a", harness_strf("back%d", i), &r);
		http_resp_free(&r);
	}
	H_ASSERT(count_by(again) > 0,
	    "the readmitted f1 took none of %d requests", i);
}
END_TEST

/* ---- 8. failover on 503, without backoff -------------------------------- */

START_TEST(test_failover_503)
{
	static const char *const a1[] = {"-T", "a", "-P", "a", NULL};
	static const char *const a2[] = {"-T", "a", "-D", "400", NULL};
	static const char *const *const args[] = {a1, a2};
	struct harness_fake *f[2];
	struct harness_daemon *d;
	struct http_resp r;

	H_BEGIN();
	fleet_fakes(f, 2, args);
	/* Loaded on f1 only: placement sends it there first.  A backoff of
	 * 5 s would show in the answer's time. */
	d = harness_fleet_start(
	    fleet_conf(f, 2, NULL, NULL, "[retry]\nbackoff_factor = 5\n"), 2,
	    NULL, NULL);
	fake_fault(f[0],
	    "{\"action\":\"status\",\"status\":503,\"count\":1,"
	    "\"path\":\"/api/generate\"}");
	generate(d, "a", "t", &r);
	H_ASSERT(r.t_end - r.t_start < 0.4 + SLACK_S,
	    "the failover took %.3f s: a backoff?", r.t_end - r.t_start);
	http_resp_free(&r);
	H_ASSERT(
	    harness_log_count(&f[0]->proc, "POST /api/generate (fault)") == 1,
	    "f1 was not asked first");
	H_ASSERT_INT_EQ(fake_num(f[1], "by_model", "a:latest"), 1);
	H_ASSERT_INT_EQ(arrival_place(fake_arrivals(f[1]), "t"), 1);
}
END_TEST

/* ---- 9. the fleet-wide endpoints ------------------------------------- */

/* The names a list answer holds under array/key, as ",a,b," in order;
 * each must be there once. */
static char *
list_keys(const struct http_resp *r, const char *array, const char *key)
{
	cJSON *j = harness_json(r, array);
	const cJSON *list, *e;
	char *s = harness_strf(",");
	const char *k;

	list = cJSON_GetObjectItemCaseSensitive(j, array);
	H_ASSERT(
	    cJSON_IsArray(list), "no \"%s\" list: %s", array, r->body.data);
	cJSON_ArrayForEach(e, list)
	{
		k = harness_jstr(e, key);
		H_ASSERT(k != NULL, "an entry without \"%s\"", key);
		s = harness_strf("%s%s,", s, k);
	}
	cJSON_Delete(j);
	return s;
}

static const struct list_case {
	const char *path, *array, *key, *want;
} list_cases[] = {
    {"/api/tags", "models", "name", ",a:latest,b:latest,c:latest,d:latest,"},
    {"/v1/models", "data", "id", ",a:latest,b:latest,c:latest,d:latest,"},
};

/* The last total given for a digest in a pull's lines, 0 if none. */
static double
pull_total(cJSON **v, size_t n, const char *digest, double *completed)
{
	double total = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		if (harness_jstr(v[i], "digest") == NULL ||
		    strcmp(harness_jstr(v[i], "digest"), digest) != 0)
			continue;
		total = harness_jnum(v[i], "total");
		*completed = harness_jnum(v[i], "completed");
	}
	return total;
}

START_TEST(test_fleet_endpoints)
{
	static const char *const a1[] = {"-T", "a,b", "-P", "a", NULL};
	static const char *const a2[] = {"-T", "b,c", "-P", "b,c", NULL};
	static const char *const a3[] = {"-T", "c,d", NULL};
	static const char *const *const args[] = {a1, a2, a3};
	static const char pull[] = "{\"model\":\"n\",\"fake_lines\":2}";
	struct harness_fake *f[3], *ref;
	struct harness_daemon *d;
	struct http_resp r, rr;
	const char *digest, *why,
	    *want_ps[][2] = {
	        {"a:latest", "f1"}, {"b:latest", "f2"}, {"c:latest", "f2"}};
	double total, completed, ref_total, ref_completed;
	cJSON **lines, **ref_lines, *j;
	const cJSON *e;
	size_t n, nref, li;
	int i, k, ndigests = 0;
	size_t c;

	H_BEGIN();
	fleet_fakes(f, 3, args);
	ref = fake_start("ref", "ref", (const char *const[]){"-T", "x", NULL});
	d = harness_fleet_start(
	    fleet_conf(f, 3, NULL, NULL, NULL), 3, NULL, NULL);

	/* The union of the lists, each model once. */
	for (c = 0; c < sizeof list_cases / sizeof list_cases[0]; c++) {
		get(d, list_cases[c].path, &r);
		H_ASSERT(r.status == 200, "%s: %ld %s", list_cases[c].path,
		    r.status, r.body.data);
		H_ASSERT_STR_EQ(
		    list_keys(&r, list_cases[c].array, list_cases[c].key),
		    list_cases[c].want);
		http_resp_free(&r);
	}

	/* Every loaded model, with the backend it is loaded on. */
	get(d, "/api/ps", &r);
	H_ASSERT(r.status == 200, "/api/ps: %ld", r.status);
	j = harness_json(&r, "/api/ps");
	e = cJSON_GetObjectItemCaseSensitive(j, "models");
	H_ASSERT_INT_EQ(cJSON_GetArraySize(e), 3);
	for (i = 0; i < 3; i++) {
		const cJSON *m = cJSON_GetArrayItem(e, i);

		H_ASSERT_STR_EQ(harness_jstr(m, "name"), want_ps[i][0]);
		H_ASSERT_STR_EQ(harness_jstr(m, "backend"), want_ps[i][1]);
	}
	cJSON_Delete(j);
	http_resp_free(&r);

	/* A pull on every backend: one stream, the sums of their progress,
	 * one success; then every one has the model. */
	send_json(d, "POST", "/api/pull", pull, &r);
	H_ASSERT(r.status == 200, "pull: %ld %s", r.status, r.body.data);
	http_post_json(fake_url(ref, "/api/pull"), pull, &rr);
	H_ASSERT(rr.ok && rr.status == 200, "pull on the reference fake");
	lines = http_ndjson(&r, &n);
	ref_lines = http_ndjson(&rr, &nref);
	H_CHECK(n > 1);
	H_ASSERT_STR_EQ(harness_jstr(lines[n - 1], "status"), "success");
	for (li = 0; li < n - 1; li++)
		H_ASSERT(harness_jstr(lines[li], "status") != NULL &&
		        strcmp(harness_jstr(lines[li], "status"), "success") !=
		            0,
		    "line %zu of %zu: %s", li, n, r.body.data);
	for (li = 0; li < nref; li++) {
		digest = harness_jstr(ref_lines[li], "digest");
		if (digest == NULL)
			continue;
		ref_total = pull_total(ref_lines, nref, digest, &ref_completed);
		total = pull_total(lines, n, digest, &completed);
		H_ASSERT(total == 3 * ref_total && completed == total,
		    "digest %s ends at %.0f of %.0f, not %.0f of %.0f", digest,
		    completed, total, 3 * ref_total, 3 * ref_total);
		ndigests++;
	}
	H_CHECK(ndigests > 0);
	http_ndjson_free(lines, n);
	http_ndjson_free(ref_lines, nref);
	http_resp_free(&r);
	http_resp_free(&rr);
	for (k = 0; k < 3; k++)
		H_ASSERT(fake_has(f[k], "tags", "n:latest"),
		    "f%d has no n after the pull", k + 1);

	/* Not streamed: one answer. */
	send_json(
	    d, "POST", "/api/pull", "{\"model\":\"m\",\"stream\":false}", &r);
	H_ASSERT(r.status == 200, "pull, not streamed: %ld", r.status);
	H_ASSERT_STR_EQ(r.body.data, "{\"status\":\"success\"}");
	http_resp_free(&r);
	for (k = 0; k < 3; k++)
		H_CHECK(fake_has(f[k], "tags", "m:latest"));

	/* Failing on one: the last line names it, and only it. */
	fake_set_models(f[1], "{\"pull_error\":\"boom\"}");
	send_json(
	    d, "POST", "/api/pull", "{\"model\":\"e\",\"fake_lines\":1}", &r);
	H_ASSERT(r.status == 200, "failing pull: %ld", r.status);
	lines = http_ndjson(&r, &n);
	H_CHECK(n > 0);
	why = harness_jstr(lines[n - 1], "error");
	H_ASSERT(why != NULL, "the last line is no error: %s", r.body.data);
	H_ASSERT(strstr(why, "f2") != NULL && strstr(why, "boom") != NULL,
	    "the error does not name f2 and its words: %s", why);
	H_ASSERT(strstr(why, "f1:") == NULL && strstr(why, "f3:") == NULL,
	    "the error blames a backend that succeeded: %s", why);
	http_ndjson_free(lines, n);
	http_resp_free(&r);
	fake_set_models(f[1], "{\"pull_error\":null}");

	/* Delete: gone everywhere, then nowhere to be found. */
	send_json(d, "DELETE", "/api/delete", "{\"model\":\"n\"}", &r);
	H_ASSERT(r.status == 200, "delete: %ld %s", r.status, r.body.data);
	http_resp_free(&r);
	for (k = 0; k < 3; k++)
		H_CHECK(!fake_has(f[k], "tags", "n:latest"));
	send_json(d, "DELETE", "/api/delete", "{\"model\":\"n\"}", &r);
	H_ASSERT(
	    r.status == 404, "delete again: %ld %s", r.status, r.body.data);
	H_ASSERT_CONTAINS(r.body.data, "\"error\"");
	http_resp_free(&r);

	/* Copy: where the source is. */
	send_json(d, "POST", "/api/copy",
	    "{\"source\":\"a\",\"destination\":\"a2\"}", &r);
	H_ASSERT(r.status == 200, "copy: %ld %s", r.status, r.body.data);
	http_resp_free(&r);
	H_CHECK(fake_has(f[0], "tags", "a2:latest"));
	H_CHECK(!fake_has(f[1], "tags", "a2:latest"));
	send_json(d, "POST", "/api/copy",
	    "{\"source\":\"zz\",\"destination\":\"z2\"}", &r);
	H_ASSERT(
	    r.status == 404, "copy of nothing: %ld %s", r.status, r.body.data);
	http_resp_free(&r);
}
END_TEST

/* ---- 10. a backend's token reaches it, and only it --------------------- */

#define SECRET "sk-fleet-7f3a9c1e"

START_TEST(test_tokens)
{
	static const char *const a1[] = {"-T", "a", "-P", "a", NULL};
	static const char *const a2[] = {"-T", "b", "-P", "b", NULL};
	static const char *const *const args[] = {a1, a2};
	struct harness_fake *f[2];
	struct harness_daemon *d;
	struct harness_run run;
	struct http_resp r;
	struct freq q;
	const char *argv[5];
	char *dir, *conf, *text;
	const cJSON *auth, *e;
	cJSON *j;
	int i;

	H_BEGIN();
	fleet_fakes(f, 2, args);
	dir = harness_tmpdir();
	harness_write_file(dir, "token", SECRET "\n");
	conf = fleet_conf(f, 2, NULL,
	    (const char *const[]){
	        harness_strf("token_file = %s/token", dir), NULL},
	    NULL);
	d = harness_fleet_start(conf, 2, NULL, NULL);
	for (i = 0; i < 2; i++) {
		generate(d, "a", NULL, &r);
		http_resp_free(&r);
		generate(d, "b", NULL, &r);
		http_resp_free(&r);
	}
	/* A client's own Authorization does not reach b1 either. */
	freq_init(&q, d, "/api/generate", "a", NULL, NULL,
	    "Authorization: Bearer client-says");
	http_request(&q.req, &r);
	H_ASSERT(r.ok && r.status == 200, "%s %ld", r.error, r.status);
	http_resp_free(&r);
	get(d, "/api/tags", &r);
	H_ASSERT_INT_EQ(r.status, 200);
	http_resp_free(&r);

	/* b1 saw the token on every request (probes and fleet-wide ones
	 * too), b2 never. */
	j = fake_stats(f[0]);
	auth = cJSON_GetObjectItemCaseSensitive(j, "authorization");
	H_ASSERT_INT_EQ(cJSON_GetArraySize(auth), 1);
	H_ASSERT(
	    harness_jnum(auth, "Bearer " SECRET) == harness_jnum(j, "requests"),
	    "f1 got %.0f requests, %.0f with the token",
	    harness_jnum(j, "requests"), harness_jnum(auth, "Bearer " SECRET));
	H_ASSERT_INT_EQ(fake_num(f[0], "by_model", "a:latest"), 3);
	cJSON_Delete(j);
	j = fake_stats(f[1]);
	auth = cJSON_GetObjectItemCaseSensitive(j, "authorization");
	cJSON_ArrayForEach(e, auth)
	{
		H_ASSERT(strstr(e->string, SECRET) == NULL, "f2 got the token");
	}
	H_ASSERT_INT_EQ(cJSON_GetArraySize(auth), 0);
	H_ASSERT_INT_EQ(fake_num(f[1], "by_model", "b:latest"), 2);
	cJSON_Delete(j);

	/* Never shown. */
	get(d, "/ollama-pool/stats", &r);
	H_ASSERT(strstr(r.body.data, SECRET) == NULL, "the token is in stats");
	http_resp_free(&r);
	get(d, "/ollama-pool/metrics", &r);
	H_ASSERT(
	    strstr(r.body.data, SECRET) == NULL, "the token is in metrics");
	http_resp_free(&r);
	argv[0] = harness_daemon_bin();
	argv[1] = "-c";
	argv[2] = d->conf_path;
	argv[3] = "-t";
	argv[4] = NULL;
	harness_run(argv, WAIT_MS, &run);
	H_ASSERT(WIFEXITED(run.wstatus) && WEXITSTATUS(run.wstatus) == 0,
	    "-t: %s%s", run.out.data, run.err.data);
	H_ASSERT_CONTAINS(run.out.data, "token");
	H_ASSERT(strstr(run.out.data, SECRET) == NULL &&
	        strstr(run.err.data, SECRET) == NULL,
	    "-t shows the token: %s", run.out.data);
	harness_run_free(&run);
	harness_daemon_stop(d);
	text = harness_log_text(&d->proc);
	H_ASSERT(strstr(text, SECRET) == NULL, "the token is in the log");
}
END_TEST

/* ---- 11. X-Ollama-Pool-Backend ----------------------------------------- */

static const struct pin_case {
	const char *header; /* NULL: none */
	long status;
	int lands; /* the fake's index, -1: none */
} pin_cases[] = {
    {"X-Ollama-Pool-Backend: f2", 201, 1},
    {NULL, 201, 0},
    {"X-Ollama-Pool-Backend: f1", 201, 0},
    {"X-Ollama-Pool-Backend: nosuch", 400, -1},
};

START_TEST(test_pinned_backend)
{
	static const char *const a[] = {"-T", "a", "-P", "a", NULL};
	static const char *const *const args[] = {a, a};
	struct harness_fake *f[2];
	struct harness_daemon *d;
	struct http_resp r;
	struct http_req req;
	const char *hdrs[3];
	char blob[4096], hex[65];
	int k;
	size_t i;

	H_BEGIN();
	fleet_fakes(f, 2, args);
	d = harness_fleet_start(
	    fleet_conf(f, 2, NULL, NULL, NULL), 2, NULL, NULL);
	for (i = 0; i < sizeof pin_cases / sizeof pin_cases[0]; i++) {
		const struct pin_case *c = &pin_cases[i];

		harness_fill(blob, sizeof blob, (uint32_t)i + 1);
		harness_sha256_hex(blob, sizeof blob, hex);
		hdrs[0] = "Expect:";
		hdrs[1] = c->header;
		hdrs[2] = NULL;
		memset(&req, 0, sizeof req);
		req.method = "POST";
		req.url = harness_daemon_url(
		    d, harness_strf("/api/blobs/sha256:%s", hex));
		req.headers = hdrs;
		req.body = blob;
		req.body_len = sizeof blob;
		req.has_body = 1;
		http_request(&req, &r);
		H_ASSERT(r.ok && r.status == c->status,
		    "%s: %s %ld, not %ld: %s", c->header ? c->header : "none",
		    r.error, r.status, c->status, r.body.data);
		if (c->lands < 0)
			H_ASSERT_CONTAINS(r.body.data, "nosuch");
		http_resp_free(&r);
		/* The fake logs its answer before the client has it. */
		for (k = 0; k < 2; k++)
			H_ASSERT(
			    harness_log_count(&f[k]->proc,
			        harness_strf("POST /api/blobs/sha256:%s -> ",
			            hex)) == (k == c->lands),
			    "%s: f%d did%s get the upload",
			    c->header ? c->header : "no header", k + 1,
			    k == c->lands ? " not" : "");
	}
}
END_TEST

/* ---- 12. [upstream] alone, as before ----------------------------------- */

START_TEST(test_upstream_alone)
{
	static const char *const paths[] = {"/api/tags", "/api/ps"};
	static const char head[] = "POST /api/generate HTTP/1.1\r\nHost: x\r\n"
	                           "Content-Type: application/json\r\n"
	                           "Transfer-Encoding: chunked\r\n\r\n";
	static const char part1[] = "{\"model\":\"llama3.2\",";
	static const char part2[] = "\"prompt\":\"p\"}";
	struct harness_env env;
	struct http_resp dr, pr, r;
	struct http_conn c;
	size_t i;

	H_BEGIN();
	harness_up(&env, "");
	/* The fake's own bytes: nothing merged, no "backend" added. */
	for (i = 0; i < sizeof paths / sizeof paths[0]; i++) {
		http_get(fake_url(env.fake, paths[i]), &dr);
		get(env.daemon, paths[i], &pr);
		harness_assert_same_response(&dr, &pr, paths[i]);
		H_ASSERT(strstr(pr.body.data, "\"backend\"") == NULL,
		    "%s has a backend field: %s", paths[i], pr.body.data);
		http_resp_free(&dr);
		http_resp_free(&pr);
	}
	/* A model-routed body is not held for its model: the request is
	 * upstream while its body is still coming. */
	http_conn_open(&c, env.daemon->port);
	H_CHECK(http_conn_sendstr(&c, head, WAIT_MS) == 0);
	H_CHECK(http_conn_sendstr(&c,
	            harness_strf("%zx\r\n%s\r\n", sizeof part1 - 1, part1),
	            WAIT_MS) == 0);
	H_ASSERT(
	    harness_log_wait(&env.fake->proc, "POST /api/generate", WAIT_MS),
	    "the request did not go upstream before its body ended");
	H_CHECK(
	    http_conn_sendstr(&c,
	        harness_strf("%zx\r\n%s\r\n0\r\n\r\n", sizeof part2 - 1, part2),
	        WAIT_MS) == 0);
	H_ASSERT(
	    http_conn_read_response(&c, 0, WAIT_MS, &r) == 0, "%s", r.error);
	H_ASSERT_INT_EQ(r.status, 200);
	H_ASSERT_CONTAINS(r.body.data, "\"done\":true");
	http_resp_free(&r);
	http_conn_close(&c);
}
END_TEST

/* ---- 13. metrics and stats --------------------------------------------- */

START_TEST(test_observability)
{
	static const char *const a1[] = {"-T", "a", "-P", "a", NULL};
	static const char *const a2[] = {"-T", "b", "-P", "b", NULL};
	static const char *const *const args[] = {a1, a2};
	struct harness_fake *f[2];
	struct harness_daemon *d;
	struct http_resp r;
	const cJSON *b, *loaded;
	double t_kill;
	cJSON *j;
	char *dir;
	int i, k;

	H_BEGIN();
	fleet_fakes(f, 2, args);
	dir = harness_tmpdir();
	harness_write_file(dir, "token", SECRET);
	d = harness_fleet_start(
	    fleet_conf(f, 2, NULL,
	        (const char *const[]){
	            harness_strf("token_file = %s/token", dir), NULL},
	        NULL),
	    2, NULL, NULL);
	for (i = 0; i < 3; i++) {
		generate(d, "a", NULL, &r);
		http_resp_free(&r);
	}
	for (i = 0; i < 2; i++) {
		generate(d, "b", NULL, &r);
		http_resp_free(&r);
	}

	get(d, "/ollama-pool/metrics", &r);
	H_ASSERT_INT_EQ(r.status, 200);
	H_ASSERT_CONTAINS(
	    r.body.data, "\nollama_pool_backend_up{backend=\"f1\"} 1\n");
	H_ASSERT_CONTAINS(
	    r.body.data, "\nollama_pool_backend_up{backend=\"f2\"} 1\n");
	H_ASSERT_CONTAINS(r.body.data,
	    "\nollama_pool_backend_requests_total{backend=\"f1\"} 3\n");
	H_ASSERT_CONTAINS(r.body.data,
	    "\nollama_pool_backend_requests_total{backend=\"f2\"} 2\n");
	H_ASSERT(
	    strstr(r.body.data, SECRET) == NULL, "the token is in metrics");
	http_resp_free(&r);

	get(d, "/ollama-pool/stats", &r);
	H_ASSERT(strstr(r.body.data, SECRET) == NULL, "the token is in stats");
	j = harness_json(&r, "stats");
	H_ASSERT_INT_EQ(
	    cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "backends")),
	    2);
	for (k = 0; k < 2; k++) {
		b = harness_stats_backend(j, harness_strf("f%d", k + 1));
		H_ASSERT(b != NULL, "no f%d in stats", k + 1);
		H_ASSERT_STR_EQ(
		    harness_jstr(b, "url"), harness_upstream_of(f[k]));
		H_ASSERT_STR_EQ(harness_jstr(b, "state"), "up");
		H_ASSERT_INT_EQ(harness_jnum(b, "requests"), 3 - k);
		H_ASSERT_INT_EQ(harness_jnum(b, "in_flight"), 0);
		H_ASSERT_INT_EQ(harness_jnum(b, "consecutive_failures"), 0);
		loaded = cJSON_GetObjectItemCaseSensitive(b, "models_loaded");
		H_ASSERT(cJSON_GetArraySize(loaded) == 1 &&
		        cJSON_IsString(cJSON_GetArrayItem(loaded, 0)),
		    "f%d: models_loaded is not one name", k + 1);
		H_ASSERT_STR_EQ(cJSON_GetArrayItem(loaded, 0)->valuestring,
		    k == 0 ? "a:latest" : "b:latest");
	}
	cJSON_Delete(j);
	http_resp_free(&r);

	get(d, "/ollama-pool/health", &r);
	H_ASSERT(r.status == 200, "health with both up: %ld %s", r.status,
	    r.body.data);
	http_resp_free(&r);

	/* One down, with no traffic: the probes eject it within two of
	 * their intervals; shown so, and the fleet is still healthy. */
	fake_stop(f[1]);
	t_kill = harness_now();
	H_ASSERT(harness_backend_wait(d, NULL, "f2", "ejected", 0, WAIT_MS),
	    "f2 was not ejected");
	H_ASSERT(harness_now() - t_kill < 2 * PROBE_S + SLACK_S,
	    "f2 was ejected %.3f s after its death", harness_now() - t_kill);
	get(d, "/ollama-pool/metrics", &r);
	H_ASSERT_CONTAINS(
	    r.body.data, "\nollama_pool_backend_up{backend=\"f2\"} 0\n");
	H_ASSERT_CONTAINS(
	    r.body.data, "\nollama_pool_backend_up{backend=\"f1\"} 1\n");
	http_resp_free(&r);
	j = harness_stats(d, NULL);
	b = harness_stats_backend(j, "f2");
	H_CHECK(harness_jnum(b, "consecutive_failures") >= 2);
	H_CHECK(harness_jstr(b, "last_error") != NULL);
	cJSON_Delete(j);
	get(d, "/ollama-pool/health", &r);
	H_ASSERT(r.status == 200, "health with f1 up: %ld %s", r.status,
	    r.body.data);
	http_resp_free(&r);
}
END_TEST

/* ---- 14. reload: a backend added, one removed ---------------------------- */

START_TEST(test_reload)
{
	static const char *const a1[] = {"-T", "a", "-P", "a", NULL};
	static const char *const a2[] = {
	    "-T", "b", "-P", "b", "-B", "2500", NULL};
	static const char *const a3[] = {"-T", "c", "-P", "c", NULL};
	static const char *const *const args[] = {a1, a2, a3};
	struct harness_fake *f[3], *keep[2];
	struct harness_daemon *d;
	struct http_multi *m;
	struct http_resp r, slow;
	struct freq q;
	double t_reload, deadline;
	cJSON *j;
	int i;

	H_BEGIN();
	fleet_fakes(f, 3, args);
	/* A second -v: the debug log shows each step, should this fail. */
	d = harness_fleet_start(fleet_conf(f, 2, NULL, NULL, NULL), 2, NULL,
	    (const char *const[]){"-v", NULL});
	generate(d, "a", NULL, &r);
	http_resp_free(&r);

	/* Added: probed, listed, and it takes what only it has. */
	harness_daemon_reload(d, fleet_conf(f, 3, NULL, NULL, NULL));
	H_ASSERT(harness_backend_wait(d, NULL, "f3", "up", 1, WAIT_MS),
	    "f3 did not come up in stats after the reload");
	generate(d, "c", "c1", &r);
	http_resp_free(&r);
	H_ASSERT_INT_EQ(arrival_place(fake_arrivals(f[2]), "c1"), 1);

	/* Removed while a request runs on it: gone from stats at once, and
	 * the request finishes there. */
	freq_init(&q, d, "/api/generate", "b", "slow", NULL, NULL);
	m = http_multi_new();
	http_multi_add(m, &q.req, &slow);
	deadline = harness_now() + WAIT_MS / 1000.0;
	for (i = 0; i < 2000 && slow.body.len == 0 && harness_now() < deadline;
	     i++)
		http_multi_run(m, 5);
	H_ASSERT(slow.body.len > 0, "the slow request did not begin");
	keep[0] = f[0];
	keep[1] = f[2];
	harness_daemon_reload(d, fleet_conf(keep, 2, NULL, NULL, NULL));
	t_reload = harness_now();
	j = harness_stats(d, NULL);
	H_ASSERT(harness_stats_backend(j, "f2") == NULL,
	    "f2 is still in stats after its removal");
	H_ASSERT(harness_stats_backend(j, "f1") != NULL &&
	        harness_stats_backend(j, "f3") != NULL,
	    "a kept backend is missing from stats");
	cJSON_Delete(j);
	H_ASSERT(http_multi_wait(m, 30000), "the slow request did not end");
	http_multi_free(m);
	H_ASSERT(slow.ok && slow.status == 200, "the slow request: %s %ld",
	    slow.error, slow.status);
	H_ASSERT_CONTAINS(slow.body.data, "\"done\":true");
	H_ASSERT(slow.t_end > t_reload,
	    "the slow request ended before the reload was done: not a test "
	    "of one in flight");
	http_resp_free(&slow);
	/* Nothing new goes there. */
	freq_init(&q, d, "/api/generate", "b", "late", NULL, NULL);
	http_request(&q.req, &r);
	H_ASSERT(r.ok && r.status == 404, "b after f2's removal: %s %ld %s",
	    r.error, r.status, r.body.data);
	http_resp_free(&r);
	H_ASSERT_INT_EQ(arrival_place(fake_arrivals(f[1]), "late"), 0);
}
END_TEST

static Suite *
fleet_suite(void)
{
	Suite *s = suite_create("fleet");
	TCase *tc;

	tc = harness_tcase(s, "placement", 90);
	tcase_add_test(tc, test_placement_loaded);
	tcase_add_test(tc, test_placement_free_loaded);
	tcase_add_test(tc, test_weight);

	tc = harness_tcase(s, "slots", 90);
	tcase_add_test(tc, test_num_parallel);
	tcase_add_test(tc, test_fairness);
	tcase_add_loop_test(tc, test_queue_limits, 0,
	    sizeof queue_cases / sizeof queue_cases[0]);

	tc = harness_tcase(s, "health", 120);
	tcase_add_test(tc, test_ejection);
	tcase_add_test(tc, test_failover_503);

	tc = harness_tcase(s, "endpoints", 90);
	tcase_add_test(tc, test_fleet_endpoints);
	tcase_add_test(tc, test_tokens);
	tcase_add_test(tc, test_pinned_backend);
	tcase_add_test(tc, test_upstream_alone);

	tc = harness_tcase(s, "operations", 90);
	tcase_add_test(tc, test_observability);
	tcase_add_test(tc, test_reload);
	return s;
}

int
main(void)
{
	return harness_main(fleet_suite());
}
