/*
 * Integration tests for members from DNS (issue 12): a fleet backend
 * whose url names a host is one member per address the name resolves
 * to.  The DNS server is tests/fake-dns, answering from a table the test
 * rewrites (at once, by rename) to change its answers; the members are
 * fake Ollamas bound to 127.0.0.2, .3 and .4 on one port, as pods behind
 * one headless Service.  The daemon re-resolves every 0.3 s and probes
 * every 0.2 s, so a change shows within a second or so.
 *
 * Waiting is for an event (a log line through inotify, a notify
 * datagram, an answer) or, where the daemon tells of a state by no event
 * (a member up with its models known, a prewarm counted), a bounded poll
 * of its stats; never a sleep that hopes something has happened.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <cjson/cJSON.h>

#include "harness.h"

#define WAIT_MS 10000
#define NAME "ollama.test"
#define MODEL "m1"
#define MODEL_FULL "m1:latest"
#define MAX_PODS 3
#define STATS_PATH "/ollama-pool/stats"
#define METRICS_PATH "/ollama-pool/metrics"
/* Between two looks at a state nothing announces (bounded loops). */
#define POLL_MS 50

static const char *const pod_hosts[MAX_PODS] = {
    "127.0.0.2", "127.0.0.3", "127.0.0.4"};

/* ---- the pods, the DNS server and the daemon ----------------------- */

struct pods {
	struct harness_fake *fake[MAX_PODS];
	int n;
	int port; /* the one port they share */
	struct harness_fake *dns;
	char *table; /* fake-dns's table */
};

/* The table naming the pods in mask (bit i: pod_hosts[i]), each answer
 * held back delay_ms. */
static char *
disc_table_text(unsigned mask, int delay_ms)
{
	struct harness_buf b = {0};
	char *s;
	int i;

	harness_buf_add(&b, "", 0);
	for (i = 0; i < MAX_PODS; i++)
		if (mask & (1u << i))
			harness_buf_addf(
			    &b, NAME " %s %d\n", pod_hosts[i], delay_ms);
	s = harness_strf("%s", b.data);
	harness_buf_free(&b);
	return s;
}

static void
disc_table(struct pods *p, const char *text)
{
	harness_replace_file(p->table, text);
}

/*
 * n fakes on 127.0.0.2... and one port, each with MODEL installed and
 * loaded (so that affinity applies at once) and the extra arguments;
 * and fake-dns answering for all of them.
 */
static void
disc_pods_start(struct pods *p, int n, const char *const *extra)
{
	const char *argv[16];
	int argc = 0, i;

	memset(p, 0, sizeof *p);
	argv[argc++] = "-T";
	argv[argc++] = MODEL;
	argv[argc++] = "-P";
	argv[argc++] = MODEL;
	for (i = 0; extra != NULL && extra[i] != NULL && argc < 15; i++)
		argv[argc++] = extra[i];
	argv[argc] = NULL;
	p->n = n;
	for (i = 0; i < n; i++) {
		p->fake[i] = fake_start_at(harness_strf("pod%d", i + 2),
		    harness_strf("pod%d", i + 2), pod_hosts[i], p->port, argv);
		if (i == 0)
			p->port = p->fake[0]->port;
		H_ASSERT_INT_EQ(p->fake[i]->port, p->port);
	}
	p->table = harness_strf("%s/dns.table", harness_tmpdir());
	disc_table(p, disc_table_text((1u << n) - 1, 0));
	p->dns = fake_dns_start("dns", p->table);
}

/* The fleet: one backend, the name, with extra [upstream] lines. */
static char *
disc_conf(const struct pods *p, const char *extra)
{
	return harness_strf("[upstream]\n"
	                    "resolver = 127.0.0.1:%d\n"
	                    "resolve_interval = 0.3s\n"
	                    "probe_interval = 0.2s\n"
	                    "%s"
	                    "\n"
	                    "[backend pods]\n"
	                    "url = http://" NAME ":%d\n",
	    p->dns->port, extra != NULL ? extra : "", p->port);
}

/* ---- what the daemon says ------------------------------------------ */

static cJSON *
disc_stats(const struct harness_daemon *d)
{
	struct http_resp r;
	char url[128];
	cJSON *j;

	snprintf(url, sizeof url, "http://127.0.0.1:%d" STATS_PATH, d->port);
	http_get(url, &r);
	H_ASSERT(r.ok && r.status == 200, "GET %s: %s %ld", STATS_PATH, r.error,
	    r.status);
	j = harness_json(&r, "stats");
	http_resp_free(&r);
	return j;
}

/* The backend "pods", the name's. */
static const cJSON *
disc_backend(const cJSON *stats)
{
	return harness_stats_backend(stats, "pods");
}

/* The entry of one member: under "members", or the backend itself when
 * it has one address. */
static const cJSON *
disc_member(const cJSON *stats, const char *host)
{
	const cJSON *b = disc_backend(stats), *members, *m;
	const char *h;

	if (b == NULL)
		return NULL;
	members = cJSON_GetObjectItemCaseSensitive(b, "members");
	if (members == NULL) {
		h = harness_jstr(b, "member");
		return h != NULL && strcmp(h, host) == 0 ? b : NULL;
	}
	cJSON_ArrayForEach(m, members)
	{
		h = harness_jstr(m, "member");
		if (h != NULL && strcmp(h, host) == 0)
			return m;
	}
	return NULL;
}

static int
disc_nmembers(const cJSON *stats)
{
	const cJSON *b = disc_backend(stats), *members;

	if (b == NULL)
		return 0;
	members = cJSON_GetObjectItemCaseSensitive(b, "members");
	return members != NULL ? cJSON_GetArraySize(members) : 1;
}

static double
disc_jnum(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* Up, with MODEL known to be loaded there (the first probe is in). */
static int
disc_member_ready(const cJSON *m)
{
	const cJSON *it;
	const char *state = m != NULL ? harness_jstr(m, "state") : NULL;

	if (state == NULL || strcmp(state, "up") != 0)
		return 0;
	cJSON_ArrayForEach(
	    it, cJSON_GetObjectItemCaseSensitive(m, "models_loaded"))
	{
		if (cJSON_IsString(it) &&
		    strcmp(it->valuestring, MODEL_FULL) == 0)
			return 1;
	}
	return 0;
}

/* Waits until the stats list exactly the pods in mask as members, each
 * ready; nothing announces that, so the stats are looked at again every
 * POLL_MS, for at most timeout_ms. */
static void
disc_wait_members(struct harness_daemon *d, unsigned mask, int timeout_ms)
{
	double deadline = harness_now() + timeout_ms / 1000.0;
	cJSON *stats = NULL;
	char *text;
	int i, ok, want = 0;

	for (i = 0; i < MAX_PODS; i++)
		want += (mask >> i) & 1;
	for (;;) {
		cJSON_Delete(stats);
		stats = disc_stats(d);
		ok = disc_nmembers(stats) == want;
		for (i = 0; ok && i < MAX_PODS; i++)
			if (mask & (1u << i))
				ok = disc_member_ready(
				    disc_member(stats, pod_hosts[i]));
		if (ok || harness_now() > deadline)
			break;
		poll(NULL, 0, POLL_MS);
	}
	if (!ok) {
		text = cJSON_PrintUnformatted(disc_backend(stats));
		harness_failed();
		ck_abort_msg(
		    "after %d ms the members are not the %d asked for, "
		    "each up with " MODEL_FULL " loaded: %.1500s",
		    timeout_ms, want,
		    text != NULL ? text : "(no backend pods)");
	}
	cJSON_Delete(stats);
}

static char *
disc_metrics(const struct harness_daemon *d)
{
	struct http_resp r;
	char url[128], *text;

	snprintf(url, sizeof url, "http://127.0.0.1:%d" METRICS_PATH, d->port);
	http_get(url, &r);
	H_ASSERT(r.ok && r.status == 200, "GET %s: %s %ld", METRICS_PATH,
	    r.error, r.status);
	text = harness_strf("%s", r.body.data);
	http_resp_free(&r);
	return text;
}

/* A backend series' value in a scrape: name{backend="pods"} with
 * member=host when host is not NULL; -1 when there is no such line. */
static double
disc_metric_in(const char *text, const char *name, const char *host)
{
	char series[256];
	const char *line;
	size_t len;

	if (host != NULL)
		snprintf(series, sizeof series,
		    "%s{backend=\"pods\",member=\"%s\"} ", name, host);
	else
		snprintf(series, sizeof series, "%s{backend=\"pods\"} ", name);
	len = strlen(series);
	for (line = text; line != NULL && *line != '\0';) {
		if (strncmp(line, series, len) == 0)
			return strtod(line + len, NULL);
		line = strchr(line, '\n');
		if (line != NULL)
			line++;
	}
	return -1;
}

/* ---- requests ------------------------------------------------------- */

/* A chat: the conversation opened by `opening`, at its turn-th user
 * message (the earlier turns and their answers repeated, as clients
 * send them). */
static char *
disc_chat_body(const char *opening, int turn)
{
	cJSON *j = cJSON_CreateObject(), *msgs, *m;
	char text[64], *s, *out;
	int t;

	cJSON_AddStringToObject(j, "model", MODEL);
	cJSON_AddBoolToObject(j, "stream", 0);
	msgs = cJSON_AddArrayToObject(j, "messages");
#define DISC_MSG(role, content)                                                \
	do {                                                                   \
		m = cJSON_CreateObject();                                      \
		cJSON_AddStringToObject(m, "role", role);                      \
		cJSON_AddStringToObject(m, "content", content);                \
		cJSON_AddItemToArray(msgs, m);                                 \
	} while (0)
	DISC_MSG("system", "You answer in one line.");
	DISC_MSG("user", opening);
	for (t = 1; t < turn; t++) {
		snprintf(text, sizeof text, "answer %d", t);
		DISC_MSG("assistant", text);
		snprintf(text, sizeof text, "and then, %d?", t);
		DISC_MSG("user", text);
	}
#undef DISC_MSG
	s = cJSON_PrintUnformatted(j);
	cJSON_Delete(j);
	out = harness_strf("%s", s);
	cJSON_free(s);
	return out;
}

/* POSTs a JSON body, X-Fake-Tag and X-Ollama-Pool-Session when given. */
static void
disc_post(int port, const char *path, const char *body, const char *tag,
    const char *session, struct http_resp *r)
{
	const char *hdrs[5];
	char url[256], taghdr[160], sesshdr[160];
	struct http_req req;
	int n = 0;

	hdrs[n++] = "Content-Type: application/json";
	hdrs[n++] = "Expect:";
	if (tag != NULL) {
		snprintf(taghdr, sizeof taghdr, "X-Fake-Tag: %s", tag);
		hdrs[n++] = taghdr;
	}
	if (session != NULL) {
		snprintf(sesshdr, sizeof sesshdr, "X-Ollama-Pool-Session: %s",
		    session);
		hdrs[n++] = sesshdr;
	}
	hdrs[n] = NULL;
	snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
	memset(&req, 0, sizeof req);
	req.method = "POST";
	req.url = url;
	req.headers = hdrs;
	req.body = body;
	req.body_len = strlen(body);
	req.has_body = 1;
	req.timeout_ms = WAIT_MS;
	http_request(&req, r);
}

/* A chat that must succeed; its time. */
static double
disc_chat(int port, const char *opening, int turn, const char *tag,
    const char *session)
{
	struct http_resp r;
	double t;

	disc_post(
	    port, "/api/chat", disc_chat_body(opening, turn), tag, session, &r);
	H_ASSERT(r.ok && r.status == 200 &&
	        strstr(r.body.data, "\"done\":true") != NULL,
	    "chat \"%s\" turn %d (tag %s): %s %ld %.300s", opening, turn,
	    tag != NULL ? tag : "-", r.error, r.status,
	    r.body.data != NULL ? r.body.data : "");
	t = r.t_end - r.t_start;
	http_resp_free(&r);
	return t;
}

/* Requests of MODEL a pod has been sent (its by_model). */
static long long
disc_served(const struct harness_fake *f)
{
	cJSON *j = fake_stats(f), *v;
	long long n;

	v = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(j, "by_model"), MODEL_FULL);
	n = cJSON_IsNumber(v) ? (long long)v->valuedouble : 0;
	cJSON_Delete(j);
	return n;
}

/*
 * Chats, each a conversation of its own (so affinity sends them where
 * their openings hash), until every pod in mask has served one more than
 * before, at most max of them; fails the test when one has not.
 * Returns how many were sent.
 */
static int
disc_spread(struct pods *p, int port, unsigned mask, const char *what, int max)
{
	long long before[MAX_PODS];
	char opening[96];
	unsigned got = 0;
	int i, sent;

	for (i = 0; i < p->n; i++)
		before[i] = (mask & (1u << i)) ? disc_served(p->fake[i]) : 0;
	for (sent = 0; sent < max && (got & mask) != mask; sent++) {
		snprintf(
		    opening, sizeof opening, "%s: conversation %d", what, sent);
		disc_chat(port, opening, 1, NULL, NULL);
		for (i = 0; i < p->n; i++)
			if ((mask & (1u << i)) && !(got & (1u << i)) &&
			    disc_served(p->fake[i]) > before[i])
				got |= 1u << i;
	}
	for (i = 0; i < p->n; i++)
		H_ASSERT(!(mask & (1u << i)) || (got & (1u << i)),
		    "%s: %d conversations, none on %s", what, sent,
		    pod_hosts[i]);
	return sent;
}

/* The pod a tagged request reached, by the fakes' arrivals (read once
 * into stats[]); each tag must have arrived exactly once. */
static int
disc_landed(const struct pods *p, cJSON *const *stats, const char *tag)
{
	const cJSON *a;
	const char *t;
	int i, where = -1, n = 0;

	for (i = 0; i < p->n; i++) {
		cJSON_ArrayForEach(
		    a, cJSON_GetObjectItemCaseSensitive(stats[i], "arrivals"))
		{
			t = harness_jstr(a, "tag");
			if (t != NULL && strcmp(t, tag) == 0) {
				n++;
				where = i;
			}
		}
	}
	H_ASSERT(n == 1, "request %s arrived %d times at the pods", tag, n);
	return where;
}

/* ---- steady load from a child process ----------------------------- */

/*
 * A child that sends LOAD_WIDTH chats at once, again and again, each a
 * conversation of its own, until told to stop (its stop pipe closes) or
 * LOAD_MAX_BATCHES or LOAD_MAX_S have passed.  After each batch it
 * writes "batch OK FAIL\n" on its progress pipe, and at the end "end OK
 * FAIL first-error\n".  A request fails unless it is a 200 with the
 * whole answer.
 */
#define LOAD_WIDTH 4
#define LOAD_MAX_BATCHES 2000
#define LOAD_MAX_S 60

struct load {
	pid_t pid;
	int progress_fd; /* read end */
	int stop_fd; /* write end; closing it stops the child */
	struct harness_buf in;
	int batches;
	long ok, fail;
	char error[600];
};

static void
load_child(int port, int progress_fd, int stop_fd)
{
	static const char *const hdrs[] = {
	    "Content-Type: application/json", "Expect:", NULL};
	struct http_req reqs[LOAD_WIDTH];
	struct http_resp resps[LOAD_WIDTH];
	char *bodies[LOAD_WIDTH], url[128], opening[64], first[400] = "-";
	struct pollfd pfd;
	double t0 = harness_now();
	long ok = 0, fail = 0;
	int b, i;

	snprintf(url, sizeof url, "http://127.0.0.1:%d/api/chat", port);
	for (b = 0; b < LOAD_MAX_BATCHES && harness_now() - t0 < LOAD_MAX_S;
	     b++) {
		pfd.fd = stop_fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		if (poll(&pfd, 1, 0) != 0)
			break;
		memset(reqs, 0, sizeof reqs);
		for (i = 0; i < LOAD_WIDTH; i++) {
			snprintf(opening, sizeof opening, "load %d.%d", b, i);
			bodies[i] = disc_chat_body(opening, 1);
			reqs[i].method = "POST";
			reqs[i].url = url;
			reqs[i].headers = hdrs;
			reqs[i].body = bodies[i];
			reqs[i].body_len = strlen(bodies[i]);
			reqs[i].has_body = 1;
			reqs[i].timeout_ms = WAIT_MS;
		}
		http_request_many(reqs, resps, LOAD_WIDTH);
		for (i = 0; i < LOAD_WIDTH; i++) {
			if (resps[i].ok && resps[i].status == 200 &&
			    strstr(resps[i].body.data, "\"done\":true") != NULL)
				ok++;
			else if (fail++ == 0)
				snprintf(first, sizeof first,
				    "batch %d: %s %ld %.200s", b,
				    resps[i].error, resps[i].status,
				    resps[i].body.data ? resps[i].body.data
				                       : "");
			http_resp_free(&resps[i]);
		}
		dprintf(progress_fd, "batch %ld %ld\n", ok, fail);
	}
	for (i = 0; first[i] != '\0'; i++)
		if (first[i] == '\n')
			first[i] = ' ';
	dprintf(progress_fd, "end %ld %ld %s\n", ok, fail, first);
	_exit(0);
}

static void
load_start(struct load *l, int port)
{
	int prog[2], stop[2];
	pid_t parent = getpid();

	memset(l, 0, sizeof *l);
	H_CHECK(pipe2(prog, O_CLOEXEC) == 0 && pipe2(stop, O_CLOEXEC) == 0);
	fflush(NULL);
	l->pid = fork();
	H_CHECK(l->pid >= 0);
	if (l->pid == 0) {
		/* Dies with the test, which Check may _exit() at once. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		close(prog[0]);
		close(stop[1]);
		load_child(port, prog[1], stop[0]);
	}
	close(prog[1]);
	close(stop[0]);
	l->progress_fd = prog[0];
	l->stop_fd = stop[1];
}

/* Reads the child's next line (without its newline) into line; 0, or -1
 * at a timeout or EOF. */
static int
load_line(struct load *l, char *line, size_t len, int timeout_ms)
{
	double deadline = harness_now() + timeout_ms / 1000.0;
	struct pollfd pfd;
	char buf[512], *nl;
	ssize_t n;
	size_t k;
	int left;

	for (;;) {
		nl = l->in.len > 0 ? memchr(l->in.data, '\n', l->in.len) : NULL;
		if (nl != NULL) {
			k = (size_t)(nl - l->in.data);
			snprintf(line, len, "%.*s", (int)k, l->in.data);
			harness_buf_consume(&l->in, k + 1);
			return 0;
		}
		left = (int)((deadline - harness_now()) * 1000);
		pfd.fd = l->progress_fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		/* timeout_ms 0: only what is there already. */
		if (poll(&pfd, 1, left > 0 ? left : 0) <= 0) {
			if (left <= 0)
				return -1;
			continue;
		}
		n = read(l->progress_fd, buf, sizeof buf);
		if (n == 0 || (n < 0 && errno != EINTR))
			return -1;
		if (n > 0)
			harness_buf_add(&l->in, buf, (size_t)n);
	}
}

/* Waits for k more batches to be done, not counting those that ended
 * before the call (their lines may wait in the pipe): the second of them
 * began after the call. */
static void
load_wait_batches(struct load *l, int k, int timeout_ms)
{
	char line[700];
	int i;

	while (load_line(l, line, sizeof line, 0) == 0 &&
	    sscanf(line, "batch %ld %ld", &l->ok, &l->fail) == 2)
		l->batches++;
	for (i = 0; i < k; i++) {
		H_ASSERT(load_line(l, line, sizeof line, timeout_ms) == 0 &&
		        sscanf(line, "batch %ld %ld", &l->ok, &l->fail) == 2,
		    "the load's batch %d did not end within %d ms",
		    l->batches + 1, timeout_ms);
		l->batches++;
	}
}

/* Stops the child and reads its totals. */
static void
load_stop(struct load *l)
{
	char line[700];
	int n = 0, st;

	close(l->stop_fd);
	for (;;) {
		H_ASSERT(load_line(l, line, sizeof line, WAIT_MS) == 0,
		    "the load did not end within %d ms", WAIT_MS);
		if (strncmp(line, "batch ", 6) == 0) {
			l->batches++;
			continue;
		}
		break;
	}
	H_ASSERT(sscanf(line, "end %ld %ld %n", &l->ok, &l->fail, &n) == 2,
	    "the load ended with \"%s\"", line);
	snprintf(l->error, sizeof l->error, "%s", line + n);
	H_CHECK(waitpid(l->pid, &st, 0) == l->pid);
	close(l->progress_fd);
	harness_buf_free(&l->in);
}

/* ---- 1. a name with several addresses ------------------------------ */

/*
 * The name answers with n addresses: n members, each probed and placed
 * on.  With two they share the load, are listed under their backend in
 * the stats and labelled member= in the metrics; with one, the backend
 * is reported as itself, as in a fleet of IP literals (a "member" field,
 * no member label).
 */
static const struct {
	int n;
} members_cases[] = {{2}, {1}};

START_TEST(test_members_from_addresses)
{
	const int n = members_cases[_i].n;
	struct harness_daemon *d;
	const cJSON *b, *m;
	struct pods p;
	long long total = 0;
	cJSON *stats;
	char *metrics;
	int i, sent;

	H_BEGIN();
	disc_pods_start(&p, n, NULL);
	d = harness_daemon_start(disc_conf(&p, NULL), NULL, NULL);
	disc_wait_members(d, (1u << n) - 1, WAIT_MS);
	H_CHECK(harness_log_wait_lines(
	    &p.dns->proc, "query " NAME " type 1", NULL, 1, 1000));

	sent = disc_spread(&p, d->port, (1u << n) - 1, "share", 40);
	/* A few more: none may fail, whoever serves them. */
	for (i = 0; i < 6; i++)
		disc_chat(d->port, harness_strf("more %d", i), 1, NULL, NULL);
	sent += 6;

	stats = disc_stats(d);
	b = disc_backend(stats);
	H_ASSERT(b != NULL, "no backend pods in the stats");
	H_ASSERT_STR_EQ(
	    harness_jstr(b, "url"), harness_strf("http://" NAME ":%d", p.port));
	H_ASSERT_INT_EQ(disc_nmembers(stats), n);
	if (n == 1) {
		H_ASSERT(cJSON_GetObjectItemCaseSensitive(b, "members") == NULL,
		    "one address, yet the backend lists members");
		H_ASSERT_STR_EQ(harness_jstr(b, "member"), pod_hosts[0]);
	}
	for (i = 0; i < n; i++) {
		m = disc_member(stats, pod_hosts[i]);
		H_ASSERT(m != NULL, "no member %s in the stats", pod_hosts[i]);
		H_ASSERT_STR_EQ(harness_jstr(m, "name"), "pods");
		H_ASSERT_STR_EQ(harness_jstr(m, "state"), "up");
		H_ASSERT(disc_jnum(m, "requests") >= 1,
		    "member %s: requests %g", pod_hosts[i],
		    disc_jnum(m, "requests"));
	}
	cJSON_Delete(stats);

	metrics = disc_metrics(d);
	for (i = 0; i < n; i++) {
		H_ASSERT(disc_metric_in(metrics, "ollama_pool_backend_up",
		             n > 1 ? pod_hosts[i] : NULL) == 1,
		    "no ollama_pool_backend_up 1 for %s%s: %.2000s",
		    pod_hosts[i],
		    n > 1 ? " with member=" : " without member=", metrics);
		H_ASSERT(disc_metric_in(metrics,
		             "ollama_pool_backend_requests_total",
		             n > 1 ? pod_hosts[i] : NULL) >= 1,
		    "member %s: no requests_total in %.2000s", pod_hosts[i],
		    metrics);
	}
	if (n == 1)
		H_ASSERT(strstr(metrics, "member=") == NULL,
		    "one address, yet a member label: %.2000s", metrics);
	/* Every chat reached one pod, once. */
	for (i = 0; i < n; i++)
		total += disc_served(p.fake[i]);
	H_ASSERT_INT_EQ(total, sent);
	H_ASSERT_INT_EQ(harness_log_count(&d->proc, "is gone"), 0);
	H_ASSERT_INT_EQ(harness_log_count(&d->proc, "failed"), 0);
}
END_TEST

/* ---- 2. an address appears ----------------------------------------- */

/* A third address in the answer joins within a few seconds, only after
 * its first probe, and serves. */
START_TEST(test_member_joins)
{
	struct harness_daemon *d;
	struct pods p;
	cJSON *stats;
	const char *log;
	double t0, t, deadline, warm;

	H_BEGIN();
	disc_pods_start(&p, 3, NULL);
	disc_table(&p, disc_table_text(0x3, 0));
	d = harness_daemon_start(disc_conf(&p, NULL), NULL, NULL);
	disc_wait_members(d, 0x3, WAIT_MS);
	H_ASSERT_INT_EQ(disc_served(p.fake[2]), 0);

	t0 = harness_now();
	disc_table(&p, disc_table_text(0x7, 0));
	H_ASSERT(harness_log_wait(&d->proc,
	             "member 127.0.0.4 appeared in " NAME
	             ": joining after its first probe",
	             5000),
	    "127.0.0.4 was not seen in the answer within 5 s");
	H_ASSERT(harness_log_wait(&d->proc, "member 127.0.0.4 joined", 5000),
	    "127.0.0.4 did not join within 5 s of appearing");
	t = harness_now() - t0;
	H_ASSERT(t < 5, "joined %.2f s after it appeared in DNS", t);
	log = harness_log_text(&d->proc);
	H_ASSERT(strstr(log, "member 127.0.0.4 appeared") <
	        strstr(log, "member 127.0.0.4 joined"),
	    "joined before it appeared?");
	/* Its probe came before its joining: the fake was asked what it
	 * runs. */
	H_CHECK(harness_log_count(&p.fake[2]->proc, "GET /api/ps") >= 1);

	disc_wait_members(d, 0x7, WAIT_MS);
	/* Joined, it is prewarmed: counted once the fetch is answered,
	 * which nothing announces. */
	deadline = harness_now() + WAIT_MS / 1000.0;
	for (;;) {
		stats = disc_stats(d);
		warm = disc_jnum(disc_member(stats, "127.0.0.4"), "prewarmed");
		cJSON_Delete(stats);
		if (warm >= 1 || harness_now() > deadline)
			break;
		poll(NULL, 0, POLL_MS);
	}
	H_ASSERT(warm >= 1, "127.0.0.4 joined, but prewarmed is %g", warm);
	disc_spread(&p, d->port, 0x7, "after the join", 60);
	stats = disc_stats(d);
	H_ASSERT_INT_EQ(disc_nmembers(stats), 3);
	H_ASSERT(disc_jnum(disc_member(stats, "127.0.0.4"), "requests") >= 1,
	    "the stats count no request on 127.0.0.4");
	cJSON_Delete(stats);
	H_ASSERT_INT_EQ(harness_log_count(&d->proc, "is gone"), 0);
}
END_TEST

/* ---- 3. an address goes -------------------------------------------- */

/*
 * Under steady load (LOAD_WIDTH chats at a time from a child process,
 * each held 30 ms by the fake so that some are in flight at any moment),
 * 127.0.0.4 leaves the answer: it takes no new request, the load sees no
 * failure, its connections close, and the others carry on.
 */
START_TEST(test_member_drained)
{
	static const char *const busy[] = {"-B", "30", NULL};
	struct harness_daemon *d;
	struct load l;
	struct pods p;
	long long gone_count, others_before, others_after;
	double deadline;
	cJSON *stats;
	int i;

	H_BEGIN();
	disc_pods_start(&p, 3, busy);
	d = harness_daemon_start(
	    disc_conf(&p, "num_parallel = 4\n"), NULL, NULL);
	disc_wait_members(d, 0x7, WAIT_MS);

	load_start(&l, d->port);
	/* Until 127.0.0.4 has had its share, at most 100 batches. */
	for (i = 0; i < 100 && disc_served(p.fake[2]) == 0; i++)
		load_wait_batches(&l, 1, WAIT_MS);
	H_ASSERT(disc_served(p.fake[2]) > 0,
	    "127.0.0.4 served none of %ld chats", l.ok);

	disc_table(&p, disc_table_text(0x3, 0));
	H_ASSERT(harness_log_wait(&d->proc,
	             "member 127.0.0.4 is gone from " NAME
	             ": it takes no new requests",
	             5000),
	    "127.0.0.4 was not retired within 5 s of leaving the answer");
	/* A batch begun before the retirement may still reach it; two
	 * later batches have none of those left. */
	load_wait_batches(&l, 2, WAIT_MS);
	gone_count = disc_served(p.fake[2]);
	others_before = disc_served(p.fake[0]) + disc_served(p.fake[1]);
	load_wait_batches(&l, 10, WAIT_MS);
	load_stop(&l);

	H_ASSERT(l.fail == 0,
	    "%ld of %ld chats failed during the change; "
	    "the first: %s",
	    l.fail, l.ok + l.fail, l.error);
	H_ASSERT(l.ok >= 13 * LOAD_WIDTH, "only %ld chats in %d batches", l.ok,
	    l.batches);
	H_ASSERT_INT_EQ(disc_served(p.fake[2]), gone_count);
	others_after = disc_served(p.fake[0]) + disc_served(p.fake[1]);
	/* The first of the ten may have begun before the count. */
	H_ASSERT(others_after >= others_before + 9 * LOAD_WIDTH,
	    "the others served %lld chats in 10 batches of %d",
	    others_after - others_before, LOAD_WIDTH);

	stats = disc_stats(d);
	H_ASSERT_INT_EQ(disc_nmembers(stats), 2);
	H_ASSERT(disc_member(stats, "127.0.0.4") == NULL,
	    "127.0.0.4 is still listed");
	cJSON_Delete(stats);

	/* Its requests done, it goes with its connections.  Nothing tells
	 * of that but the fake's count of open connections. */
	deadline = harness_now() + 5;
	while (fake_stat(p.fake[2], "connections_open_used") > 0 &&
	    harness_now() < deadline)
		poll(NULL, 0, POLL_MS);
	H_ASSERT(fake_stat(p.fake[2], "connections_open_used") == 0,
	    "%lld connections from the proxy still open to 127.0.0.4 5 s "
	    "after it left",
	    fake_stat(p.fake[2], "connections_open_used"));
}
END_TEST

/* ---- 4. DNS fails --------------------------------------------------- */

/*
 * The DNS server fails in three ways in a row, each until one of the
 * daemon's lookups has failed by it (a later lookup, with a query id of
 * its own, has begun: lookups follow one another); the members are kept
 * and both still serve.  One warning for the whole run of failures, and
 * a notice when the name answers again.  evdns takes SERVFAIL as a
 * timeout and asks again at once; a dropped query is asked again after
 * 5 s, three times in all (resolve.c), so that phase takes 15 s.
 */
static const struct {
	const char *answer; /* in the table */
	const char *logged; /* fake-dns's account of its answer */
	int timeout_ms;
} dns_failures[] = {
    {"servfail", "answered, rcode 2", WAIT_MS},
    {"nxdomain", "answered, rcode 3", WAIT_MS},
    {"drop", "dropped", 30000},
};

/* Lookups (A queries by id) fake-dns answered as `logged`. */
static int
disc_lookups(const struct harness_proc *dns, const char *logged)
{
	static const char q[] = "query " NAME " type 1 id ";
	unsigned long ids[256];
	const char *line, *nl, *at;
	unsigned long id;
	int n = 0, i;

	for (line = harness_log_text(dns); *line != '\0';
	     line = nl != NULL ? nl + 1 : line + strlen(line)) {
		nl = strchr(line, '\n');
		at = strstr(line, q);
		if (at == NULL || (nl != NULL && at > nl))
			continue;
		at = strstr(at, logged);
		if (at == NULL || (nl != NULL && at > nl))
			continue;
		id = strtoul(strstr(line, q) + sizeof q - 1, NULL, 10);
		for (i = 0; i < n && ids[i] != id; i++)
			;
		if (i == n && n < 256)
			ids[n++] = id;
	}
	return n;
}

START_TEST(test_dns_failure_keeps_members)
{
	struct harness_daemon *d;
	struct pods p;
	cJSON *stats;
	double deadline;
	size_t k;
	int lines;

	H_BEGIN();
	disc_pods_start(&p, 2, NULL);
	d = harness_daemon_start(disc_conf(&p, NULL), NULL, NULL);
	disc_wait_members(d, 0x3, WAIT_MS);
	disc_spread(&p, d->port, 0x3, "before", 40);

	for (k = 0; k < sizeof dns_failures / sizeof dns_failures[0]; k++) {
		disc_table(
		    &p, harness_strf(NAME " %s\n", dns_failures[k].answer));
		/* Each new answer so logged may be another lookup's. */
		deadline = harness_now() + dns_failures[k].timeout_ms / 1000.0;
		lines = harness_log_count_lines(&p.dns->proc,
		    "query " NAME " type 1 ", dns_failures[k].logged);
		while (disc_lookups(&p.dns->proc, dns_failures[k].logged) < 2 &&
		    harness_now() < deadline)
			harness_log_wait_lines(&p.dns->proc,
			    "query " NAME " type 1 ", dns_failures[k].logged,
			    ++lines, (int)((deadline - harness_now()) * 1000));
		H_ASSERT(
		    disc_lookups(&p.dns->proc, dns_failures[k].logged) >= 2,
		    "%s: no lookup of " NAME " failed by it within %d ms",
		    dns_failures[k].answer, dns_failures[k].timeout_ms);
		if (k == 0)
			H_ASSERT(harness_log_wait(&d->proc,
			             "backend pods: looking up " NAME " failed",
			             WAIT_MS),
			    "no warning after SERVFAIL");
		disc_spread(&p, d->port, 0x3,
		    harness_strf("during %s", dns_failures[k].answer), 40);
		stats = disc_stats(d);
		H_ASSERT(disc_nmembers(stats) == 2 &&
		        disc_member_ready(disc_member(stats, pod_hosts[0])) &&
		        disc_member_ready(disc_member(stats, pod_hosts[1])),
		    "%s: the members were not kept", dns_failures[k].answer);
		cJSON_Delete(stats);
	}
	/* The next lookup's dropped query is asked again 5 s later: now
	 * answered. */
	disc_table(&p, disc_table_text(0x3, 0));
	H_ASSERT(harness_log_wait(
	             &d->proc, "backend pods: " NAME " answers again", 20000),
	    "no notice that " NAME " answers again");
	disc_spread(&p, d->port, 0x3, "after", 40);

	H_ASSERT_INT_EQ(
	    harness_log_count(&d->proc, "looking up " NAME " failed"), 1);
	H_ASSERT_CONTAINS(harness_log_text(&d->proc),
	    "warning: backend pods: looking up " NAME " failed");
	H_ASSERT_CONTAINS(harness_log_text(&d->proc), "keeping its members");
	H_ASSERT_INT_EQ(harness_log_count(&d->proc, " answers again"), 1);
	H_ASSERT_INT_EQ(harness_log_count(&d->proc, "is gone"), 0);
	H_ASSERT_INT_EQ(harness_log_count(&d->proc, "appeared in"), 0);
}
END_TEST

/*
 * A reload while the name fails to resolve: the members are those the
 * last good answer gave, before and after the reload; once the name
 * answers again they are all there and serve.
 */
START_TEST(test_reload_during_dns_failure)
{
	struct harness_daemon *d;
	struct pods p;

	H_BEGIN();
	disc_pods_start(&p, 2, NULL);
	d = harness_daemon_start(disc_conf(&p, NULL), NULL, NULL);
	disc_wait_members(d, 0x3, WAIT_MS);
	disc_table(&p, NAME " servfail\n");
	H_ASSERT(harness_log_wait(&d->proc,
	             "backend pods: looking up " NAME " failed", WAIT_MS),
	    "no warning after SERVFAIL");
	H_CHECK(kill(d->proc.pid, SIGHUP) == 0);
	H_ASSERT(harness_notify_wait(d, "READY=1", WAIT_MS) == 1,
	    "no READY=1 after SIGHUP");
	H_ASSERT(harness_log_wait(&d->proc, "reload complete", WAIT_MS),
	    "the reload did not complete");
	/* A failed lookup on reload keeps the members the backend has. */
	disc_wait_members(d, 0x3, WAIT_MS);
	disc_spread(&p, d->port, 0x3, "after a reload while failing", 40);
	disc_table(&p, disc_table_text(0x3, 0));
	disc_wait_members(d, 0x3, WAIT_MS);
	disc_spread(&p, d->port, 0x3, "once it answers again", 40);
}
END_TEST

/* ---- 5. a slow answer during a reload ------------------------------ */

/*
 * SIGHUP with a configuration that adds a backend named extra.test,
 * while the DNS server takes 3 s to answer for every name: the reload
 * waits for the answers, off the loop, and chats meanwhile are served at
 * once, on both members; then extra is there and the members are the
 * same.
 */
START_TEST(test_slow_dns_reload)
{
	struct harness_daemon *d;
	struct pods p;
	long long before[2];
	double t0, t, worst = 0, t_done = 0, deadline;
	const cJSON *extra;
	cJSON *stats;
	char *conf;
	int served = 0, i, ok;

	H_BEGIN();
	disc_pods_start(&p, 3, NULL);
	disc_table(&p, disc_table_text(0x3, 0));
	d = harness_daemon_start(disc_conf(&p, NULL), NULL, NULL);
	disc_wait_members(d, 0x3, WAIT_MS);
	for (i = 0; i < 2; i++)
		before[i] = disc_served(p.fake[i]);

	disc_table(&p,
	    harness_strf(
	        "%sextra.test 127.0.0.4 3000\n", disc_table_text(0x3, 3000)));
	conf = harness_strf("%s\n[backend extra]\nurl = http://extra.test:%d\n",
	    disc_conf(&p, NULL), p.port);
	harness_write_file(d->dir, "ollama-pool.conf", conf);
	t0 = harness_now();
	H_CHECK(kill(d->proc.pid, SIGHUP) == 0);
	H_ASSERT(harness_notify_wait(d, "RELOADING=1", WAIT_MS) == 1,
	    "no RELOADING=1 after SIGHUP");
	H_ASSERT(harness_log_wait_lines(&p.dns->proc, "query extra.test",
	             "delay 3000 ms", 1, 5000),
	    "the reload did not ask for extra.test");
	/* One chat at a time until the reload ends, each timed. */
	while (harness_now() - t0 < 12) {
		t = disc_chat(d->port,
		    harness_strf("during the reload %d", served), 1, NULL,
		    NULL);
		if (t > worst)
			worst = t;
		served++;
		if (harness_log_count(&d->proc, "reload complete") > 0) {
			t_done = harness_now();
			break;
		}
	}
	H_ASSERT(t_done > 0, "the reload did not complete within 12 s");
	H_ASSERT(t_done - t0 >= 2.5,
	    "reload complete %.2f s after SIGHUP: the 3 s answer was not "
	    "waited for",
	    t_done - t0);
	H_ASSERT(served >= 5 && worst < 1.0,
	    "while the names were resolving, %d chats were served, the "
	    "slowest in %.3f s",
	    served, worst);
	H_ASSERT(harness_notify_wait(d, "READY=1", WAIT_MS) == 1,
	    "no READY=1 after the reload");
	H_ASSERT_INT_EQ(harness_log_count(&d->proc, "reload failed"), 0);
	for (i = 0; i < 2; i++)
		H_ASSERT(disc_served(p.fake[i]) > before[i],
		    "%s served nothing during the reload", pod_hosts[i]);

	disc_table(&p,
	    harness_strf("%sextra.test 127.0.0.4\n", disc_table_text(0x3, 0)));
	/* The members kept, the new backend up once probed. */
	disc_wait_members(d, 0x3, WAIT_MS);
	deadline = harness_now() + WAIT_MS / 1000.0;
	for (;;) {
		stats = disc_stats(d);
		extra = harness_stats_backend(stats, "extra");
		ok = extra != NULL && disc_member_ready(extra);
		if (ok || harness_now() > deadline)
			break;
		cJSON_Delete(stats);
		poll(NULL, 0, POLL_MS);
	}
	H_ASSERT(ok, "no backend extra up after the reload");
	H_ASSERT_STR_EQ(harness_jstr(extra, "member"), "127.0.0.4");
	cJSON_Delete(stats);
	disc_spread(&p, d->port, 0x3, "after the reload", 40);
	H_ASSERT_INT_EQ(harness_log_count(&d->proc, "is gone"), 0);
}
END_TEST

/* ---- 6. prewarm ----------------------------------------------------- */

/*
 * prewarm = 2: each member has connections open before any request, and
 * the first request opens none.  Probes every second here, not 0.2 s,
 * so that they seldom hold a connection just when a request wants one.
 */
START_TEST(test_prewarm)
{
	static const char *const busy[] = {"-B", "300", NULL};
	struct harness_daemon *d;
	struct pods p;
	struct http_req reqs[32];
	struct http_resp resps[32];
	const cJSON *m;
	double opened0, opened1, used0, used1, deadline;
	cJSON *stats;
	char *metrics, url[128];
	const char *body;
	int i, ok, nreq, open_max = 0;
	static const char *const hdrs[] = {
	    "Content-Type: application/json", "Expect:", NULL};

	H_BEGIN();
	disc_pods_start(&p, 2, busy);
	d = harness_daemon_start(harness_strf("[upstream]\n"
	                                      "resolver = 127.0.0.1:%d\n"
	                                      "resolve_interval = 0.3s\n"
	                                      "probe_interval = 1s\n"
	                                      "prewarm = 2\n"
	                                      "num_parallel = 16\n"
	                                      "\n"
	                                      "[backend pods]\n"
	                                      "url = http://" NAME ":%d\n",
	                             p.dns->port, p.port),
	    NULL, NULL);
	disc_wait_members(d, 0x3, WAIT_MS);

	/* Counted once a prewarm fetch is answered: no event says so. */
	deadline = harness_now() + WAIT_MS / 1000.0;
	for (;;) {
		stats = disc_stats(d);
		ok = 1;
		for (i = 0; i < 2; i++)
			ok = ok &&
			    disc_jnum(disc_member(stats, pod_hosts[i]),
			        "prewarmed") >= 1;
		if (ok || harness_now() > deadline)
			break;
		cJSON_Delete(stats);
		poll(NULL, 0, POLL_MS);
	}
	for (i = 0; i < 2; i++) {
		m = disc_member(stats, pod_hosts[i]);
		H_ASSERT(disc_jnum(m, "prewarmed") >= 1,
		    "member %s: prewarmed %g", pod_hosts[i],
		    disc_jnum(m, "prewarmed"));
		H_ASSERT(disc_jnum(m, "prewarm_used") == 0,
		    "member %s: prewarm_used %g before any request",
		    pod_hosts[i], disc_jnum(m, "prewarm_used"));
		H_ASSERT(disc_jnum(m, "connections_open") >= 2,
		    "member %s: %g connections open", pod_hosts[i],
		    disc_jnum(m, "connections_open"));
		if ((int)disc_jnum(m, "connections_open") > open_max)
			open_max = (int)disc_jnum(m, "connections_open");
	}
	cJSON_Delete(stats);
	metrics = disc_metrics(d);
	opened0 = used0 = 0;
	for (i = 0; i < 2; i++) {
		H_ASSERT(disc_metric_in(metrics,
		             "ollama_pool_backend_prewarmed_total",
		             pod_hosts[i]) >= 1,
		    "no prewarmed_total for %s: %.2000s", pod_hosts[i],
		    metrics);
		opened0 += disc_metric_in(metrics,
		    "ollama_pool_backend_connections_opened_total",
		    pod_hosts[i]);
		used0 += disc_metric_in(metrics,
		    "ollama_pool_backend_prewarm_used_total", pod_hosts[i]);
	}

	/* The first request: on a connection already open. */
	disc_chat(d->port, "the first of the day", 1, NULL, NULL);
	metrics = disc_metrics(d);
	opened1 = used1 = 0;
	for (i = 0; i < 2; i++) {
		opened1 += disc_metric_in(metrics,
		    "ollama_pool_backend_connections_opened_total",
		    pod_hosts[i]);
		used1 += disc_metric_in(metrics,
		    "ollama_pool_backend_prewarm_used_total", pod_hosts[i]);
	}
	H_ASSERT(opened1 == opened0,
	    "the first request opened %g connection(s)", opened1 - opened0);
	H_ASSERT_CONTAINS(harness_log_text(&d->proc), "\"POST /api/chat\" 200");
	H_ASSERT(harness_log_count(&d->proc, "upstream connection reused") >= 1,
	    "the access line of the first chat does not say reused");
	/* The first request took a warm connection: one our own fetches
	 * (prewarm or a probe) left open. */
	H_ASSERT(used1 > used0,
	    "the first request took no prewarmed connection (prewarm_used "
	    "%g, was %g)",
	    used1, used0);

	/*
	 * A burst that takes every idle connection of both members (no
	 * model affinity: generate requests, spread evenly, each held 300 ms
	 * by the fake) uses the prewarmed ones too, and says so.
	 */
	nreq = 2 * (open_max + 2);
	if (nreq > 32)
		nreq = 32;
	snprintf(url, sizeof url, "http://127.0.0.1:%d/api/generate", d->port);
	body = "{\"model\":\"" MODEL "\",\"prompt\":\"hi\",\"stream\":false}";
	memset(reqs, 0, sizeof reqs);
	for (i = 0; i < nreq; i++) {
		reqs[i].method = "POST";
		reqs[i].url = url;
		reqs[i].headers = hdrs;
		reqs[i].body = body;
		reqs[i].body_len = strlen(body);
		reqs[i].has_body = 1;
		reqs[i].timeout_ms = WAIT_MS;
	}
	http_request_many(reqs, resps, (size_t)nreq);
	for (i = 0; i < nreq; i++) {
		H_ASSERT(resps[i].ok && resps[i].status == 200,
		    "burst request %d: %s %ld", i, resps[i].error,
		    resps[i].status);
		http_resp_free(&resps[i]);
	}
	metrics = disc_metrics(d);
	for (i = 0; i < 2; i++)
		H_ASSERT(disc_metric_in(metrics,
		             "ollama_pool_backend_prewarm_used_total",
		             pod_hosts[i]) >= 1,
		    "after a burst of %d, %s's prewarmed connections are not "
		    "counted used: %.3000s",
		    nreq, pod_hosts[i], metrics);
	stats = disc_stats(d);
	for (i = 0; i < 2; i++)
		H_ASSERT(disc_jnum(disc_member(stats, pod_hosts[i]),
		             "prewarm_used") >= 1,
		    "stats: %s prewarm_used %g", pod_hosts[i],
		    disc_jnum(
		        disc_member(stats, pod_hosts[i]), "prewarm_used"));
	cJSON_Delete(stats);
}
END_TEST

/* ---- 7. replicas agree ---------------------------------------------- */

#define CONVERSATIONS 10
#define TURNS 4

/* Two proxies with the same configuration in front of the same three
 * pods, each seeing them all ready. */
static void
disc_replicas(struct pods *p, struct harness_daemon **d)
{
	char *conf;

	disc_pods_start(p, 3, NULL);
	conf = disc_conf(p, NULL);
	d[0] = harness_daemon_start(conf, NULL, NULL);
	harness_proc_relabel(&d[0]->proc, "proxyA");
	d[1] = harness_daemon_start(conf, NULL, NULL);
	harness_proc_relabel(&d[1]->proc, "proxyB");
	disc_wait_members(d[0], 0x7, WAIT_MS);
	disc_wait_members(d[1], 0x7, WAIT_MS);
}

/*
 * Multi-turn chats, the turns alternating between the replicas (turn 1
 * through A, 2 through B, ...; the other way round for every other
 * conversation), the messages growing from the same opening: each
 * conversation stays on one member, and the ten use more than one.
 */
START_TEST(test_replicas_keep_conversations)
{
	struct harness_daemon *d[2];
	struct pods p;
	cJSON *stats[MAX_PODS];
	char opening[64];
	unsigned used = 0;
	int c, t, i, first, where, nused = 0;

	H_BEGIN();
	disc_replicas(&p, d);
	for (t = 1; t <= TURNS; t++)
		for (c = 0; c < CONVERSATIONS; c++) {
			snprintf(opening, sizeof opening,
			    "conversation %d: tell me about the sea", c);
			disc_chat(d[(c + t) % 2]->port, opening, t,
			    harness_strf("c%d-t%d", c, t), NULL);
		}
	for (i = 0; i < p.n; i++)
		stats[i] = fake_stats(p.fake[i]);
	for (c = 0; c < CONVERSATIONS; c++) {
		first = disc_landed(&p, stats, harness_strf("c%d-t1", c));
		for (t = 2; t <= TURNS; t++) {
			where = disc_landed(
			    &p, stats, harness_strf("c%d-t%d", c, t));
			H_ASSERT(where == first,
			    "conversation %d: turn 1 (via proxy %c) on %s, "
			    "turn %d (via proxy %c) on %s",
			    c, "AB"[(c + 1) % 2], pod_hosts[first], t,
			    "AB"[(c + t) % 2], pod_hosts[where]);
		}
		used |= 1u << first;
	}
	for (i = 0; i < p.n; i++) {
		nused += (used >> i) & 1;
		cJSON_Delete(stats[i]);
	}
	H_ASSERT(nused >= 2, "%d conversations all on one member (%s)",
	    CONVERSATIONS, pod_hosts[__builtin_ctz(used)]);
	H_ASSERT_INT_EQ(harness_log_count(&d[0]->proc, "is gone") +
	        harness_log_count(&d[1]->proc, "is gone"),
	    0);
}
END_TEST

/*
 * X-Ollama-Pool-Session pins: requests whose openings differ, with one
 * session header, reach one member through either replica; the same
 * requests without it spread.
 */
#define SESSION_REQS 8

START_TEST(test_replicas_session_header)
{
	struct harness_daemon *d[2];
	struct pods p;
	cJSON *stats[MAX_PODS];
	char opening[64];
	unsigned spread = 0;
	int i, k, first = -1, where, nspread = 0;

	H_BEGIN();
	disc_replicas(&p, d);
	for (k = 0; k < 2; k++)
		for (i = 0; i < SESSION_REQS; i++) {
			snprintf(opening, sizeof opening,
			    "question %d, unrelated to the others", i);
			disc_chat(d[i % 2]->port, opening, 1,
			    harness_strf("%s-%d", k == 0 ? "s" : "n", i),
			    k == 0 ? "session-42" : NULL);
		}
	for (i = 0; i < p.n; i++)
		stats[i] = fake_stats(p.fake[i]);
	for (i = 0; i < SESSION_REQS; i++) {
		where = disc_landed(&p, stats, harness_strf("s-%d", i));
		if (first < 0)
			first = where;
		H_ASSERT(where == first,
		    "session-42: request 0 on %s, request %d (via proxy %c) "
		    "on %s",
		    pod_hosts[first], i, "AB"[i % 2], pod_hosts[where]);
		spread |= 1u << disc_landed(&p, stats, harness_strf("n-%d", i));
	}
	for (i = 0; i < p.n; i++) {
		nspread += (spread >> i) & 1;
		cJSON_Delete(stats[i]);
	}
	H_ASSERT(nspread >= 2,
	    "without the header, %d different conversations all went to one "
	    "member: the header test proves nothing",
	    SESSION_REQS);
}
END_TEST

/* ---- 8. Host stays the name ---------------------------------------- */

/* Each member is reached at its address, but asked for the name: Host is
 * NAME:PORT, as the url says (curl is told the address). */
START_TEST(test_host_header_is_the_name)
{
	struct harness_daemon *d;
	struct http_resp r;
	struct pods p;
	const cJSON *h;
	cJSON *j;
	char *want;
	int i, n;

	H_BEGIN();
	disc_pods_start(&p, 2, NULL);
	d = harness_daemon_start(disc_conf(&p, NULL), NULL, NULL);
	disc_wait_members(d, 0x3, WAIT_MS);
	want = harness_strf(NAME ":%d", p.port);
	/* Without a model, they go round-robin: four reach both. */
	for (i = 0; i < 4; i++) {
		http_get(harness_daemon_url(d, "/_fake/echo"), &r);
		H_ASSERT(r.ok && r.status == 200, "GET /_fake/echo: %s %ld",
		    r.error, r.status);
		j = harness_json(&r, "echo");
		n = 0;
		cJSON_ArrayForEach(
		    h, cJSON_GetObjectItemCaseSensitive(j, "headers"))
		{
			if (cJSON_GetArraySize(h) == 2 &&
			    strcasecmp(cJSON_GetArrayItem(h, 0)->valuestring,
			        "Host") == 0) {
				H_ASSERT_STR_EQ(
				    cJSON_GetArrayItem(h, 1)->valuestring,
				    want);
				n++;
			}
		}
		H_ASSERT_INT_EQ(n, 1);
		cJSON_Delete(j);
		http_resp_free(&r);
	}
	for (i = 0; i < 2; i++)
		H_ASSERT(
		    harness_log_count(&p.fake[i]->proc, "GET /_fake/echo") >= 1,
		    "%s got no echo request", pod_hosts[i]);
}
END_TEST

static Suite *
discovery_suite(void)
{
	Suite *s = suite_create("discovery");
	TCase *tc;

	tc = harness_tcase(s, "members", 60);
	tcase_add_loop_test(tc, test_members_from_addresses, 0,
	    (int)(sizeof members_cases / sizeof members_cases[0]));
	tcase_add_test(tc, test_host_header_is_the_name);

	tc = harness_tcase(s, "changes", 90);
	tcase_add_test(tc, test_member_joins);
	tcase_add_test(tc, test_member_drained);
	tcase_add_test(tc, test_slow_dns_reload);

	tc = harness_tcase(s, "dns_failure", 90);
	tcase_add_test(tc, test_dns_failure_keeps_members);
	tcase_add_test(tc, test_reload_during_dns_failure);

	tc = harness_tcase(s, "prewarm", 60);
	tcase_add_test(tc, test_prewarm);

	tc = harness_tcase(s, "affinity", 60);
	tcase_add_test(tc, test_replicas_keep_conversations);
	tcase_add_test(tc, test_replicas_session_header);
	return s;
}

int
main(void)
{
	return harness_main(discovery_suite());
}
