/*
 * Health probes of one backend.  However many callers ask at once (load
 * balancers and Kubernetes poll /ollama-pool/health without a token), at
 * most one probe per backend is in flight: callers wait for its answer
 * and share it, and an answer younger than PROBE_FRESH_US is given again
 * without asking.  The probe itself is a small GET that holds no request
 * slot (upstream.c), so probes never delay a request.
 *
 * At start-up one more probe says plainly whether Ollama answers: its
 * version, or a warning naming the URL and the error.  An upstream that
 * does not answer is asked again, 1 s later and then twice as long each
 * time up to 30 s, until it answers (or a request or health probe gets
 * an answer first); that is logged once, and the asking stops.  This
 * check is its own GET, not the shared health probe: it neither waits
 * for nor fills the health answer.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ollama-pool.h"

/* A health probe must answer fast even while a model loads. */
#define PROBE_TIMEOUT_MS 5000

/* How messages name a backend: its URL alone, or in a fleet its name
 * (and member) too. */
static const char *
probe_name(const struct backend *b, char *buf, size_t len)
{
	if (!b->fleet)
		snprintf(buf, len, "%s", b->url.base);
	else if (b->member[0] != '\0')
		snprintf(buf, len, "%s (backend %s member %s)", b->url.base,
		    b->name, b->member);
	else
		snprintf(buf, len, "%s (backend %s)", b->url.base, b->name);
	return buf;
}

/* GET path on the backend, for cb; NULL when it cannot start. */
static struct backend_fetch *
probe_fetch(struct backend *b, const char *path,
    void (*cb)(void *, const struct backend_fetch_result *), void *arg)
{
	struct backend_fetch_spec spec;

	memset(&spec, 0, sizeof spec);
	spec.path = path;
	spec.timeout_ms = PROBE_TIMEOUT_MS;
	spec.keep_max = 4096;
	spec.on_done = cb;
	spec.arg = arg;
	return backend_fetch_start(b, &spec);
}
/* How long an answer is given again without asking: short enough that a
 * backend going down shows within a second. */
#define PROBE_FRESH_US 1000000
/* The start-up check of an upstream that does not answer: asked again
 * after 1 s, then twice as long each time, up to 30 s. */
#define PROBE_RECHECK_FIRST_S 1
#define PROBE_RECHECK_MAX_S 30

struct probe_waiter {
	struct probe *p;
	probe_cb cb;
	void *arg;
	TAILQ_ENTRY(probe_waiter) entry;
};

struct probe {
	struct backend *b;
	struct backend_fetch *fetch; /* the one in flight, if any */
	struct probe_result last;
	uint64_t last_us; /* when last was had; 0: never */
	TAILQ_HEAD(, probe_waiter) waiters;
	struct backend_fetch *check; /* the start-up check in flight */
	struct event *recheck_ev; /* asks again while unreachable */
	int recheck_s; /* the next wait */
};

static struct probe *
probe_get(struct backend *up)
{
	struct probe *p = up->probe;

	if (p == NULL) {
		p = up->probe = xcalloc(1, sizeof *p);
		p->b = up;
		TAILQ_INIT(&p->waiters);
	}
	return p;
}

static void
probe_read_answer(
    struct probe_result *res, const struct backend_fetch_result *f)
{
	long status = f->status;
	cJSON *json, *v;

	memset(res, 0, sizeof *res);
	res->status = status;
	res->latency = f->latency;
	if (status == 0) {
		snprintf(res->reason, sizeof res->reason, "%s", f->error);
		return;
	}
	if (status != 200) {
		snprintf(res->reason, sizeof res->reason,
		    "GET /api/version answered %ld", status);
		return;
	}
	res->ok = 1;
	json = cJSON_Parse(f->body);
	v = cJSON_GetObjectItemCaseSensitive(json, "version");
	if (cJSON_IsString(v))
		snprintf(
		    res->version, sizeof res->version, "%s", v->valuestring);
	cJSON_Delete(json);
}

/* The answer is in: every caller waiting gets it. */
static void
probe_done(void *arg, const struct backend_fetch_result *f)
{
	struct probe *p = arg;
	struct probe_waiter *w;

	p->fetch = NULL;
	probe_read_answer(&p->last, f);
	p->last_us = now_us();
	if (f->status != 0 && p->b->unreachable)
		probe_reachable(p->b, "it answered a health probe");
	while ((w = TAILQ_FIRST(&p->waiters)) != NULL) {
		TAILQ_REMOVE(&p->waiters, w, entry);
		w->cb(w->arg, &p->last);
		free(w);
	}
}

/*
 * Asks for the backend's health.  A fresh answer is given at once, and
 * then NULL is returned; otherwise cb runs when the probe in flight (this
 * call's or an earlier one's) answers, and the returned waiter may be
 * cancelled until then.
 */
struct probe_waiter *
probe_health(struct backend *up, probe_cb cb, void *arg)
{
	struct probe *p = probe_get(up);
	struct probe_waiter *w;
	struct probe_result res;

	if (p->fetch == NULL && p->last_us != 0 &&
	    now_us() - p->last_us < PROBE_FRESH_US) {
		cb(arg, &p->last);
		return NULL;
	}
	if (p->fetch == NULL) {
		p->fetch = probe_fetch(up, "/api/version", probe_done, p);
		if (p->fetch == NULL) {
			memset(&res, 0, sizeof res);
			snprintf(res.reason, sizeof res.reason,
			    "cannot start a probe");
			cb(arg, &res);
			return NULL;
		}
	}
	w = xcalloc(1, sizeof *w);
	w->p = p;
	w->cb = cb;
	w->arg = arg;
	TAILQ_INSERT_TAIL(&p->waiters, w, entry);
	return w;
}

/* The caller went away; the probe goes on, and its answer is kept. */
void
probe_waiter_cancel(struct probe_waiter *w)
{
	TAILQ_REMOVE(&w->p->waiters, w, entry);
	free(w);
}

/* With its backend: nobody waits any more (requests hold the backend). */
void
probe_free(struct probe *p)
{
	if (p == NULL)
		return;
	if (p->fetch != NULL)
		backend_fetch_cancel(p->fetch);
	if (p->check != NULL)
		backend_fetch_cancel(p->check);
	if (p->recheck_ev != NULL)
		event_free(p->recheck_ev);
	free(p);
}

static void probe_check_start(struct probe *);

/* The start-up check's answer, or its failure. */
static void
probe_check_done(void *arg, const struct backend_fetch_result *f)
{
	struct probe *p = arg;
	struct backend *up = p->b;
	struct probe_result res;
	struct timeval tv = {0, 0};
	char how[128], name[512];
	long status = f->status;

	p->check = NULL;
	probe_read_answer(&res, f);
	if (status == 0) {
		if (!up->unreachable)
			log_warn(
			    "upstream %s is unreachable: %s; requests will "
			    "fail until it answers",
			    probe_name(up, name, sizeof name), res.reason);
		else
			log_debug("upstream %s is still unreachable: %s",
			    probe_name(up, name, sizeof name), res.reason);
		up->unreachable = 1;
		tv.tv_sec = p->recheck_s;
		p->recheck_s = p->recheck_s * 2 > PROBE_RECHECK_MAX_S
		    ? PROBE_RECHECK_MAX_S
		    : p->recheck_s * 2;
		evtimer_add(p->recheck_ev, &tv);
		return;
	}
	if (up->unreachable) {
		if (res.ok && res.version[0] != '\0')
			snprintf(
			    how, sizeof how, "it is Ollama %s", res.version);
		else
			snprintf(how, sizeof how,
			    "GET /api/version answered %ld", status);
		probe_reachable(up, how);
	} else if (res.ok && res.version[0] != '\0')
		log_notice("upstream %s is Ollama %s",
		    probe_name(up, name, sizeof name), res.version);
	else if (res.ok)
		log_notice("upstream %s answers GET /api/version, with no "
		           "version in it",
		    probe_name(up, name, sizeof name));
	else
		log_warn("upstream %s answers, but %s: is it Ollama?",
		    probe_name(up, name, sizeof name), res.reason);
}

static void
probe_recheck_cb(evutil_socket_t fd, short what, void *arg)
{
	probe_check_start(arg);
}

static void
probe_check_start(struct probe *p)
{
	struct backend_fetch_result f;

	p->check = probe_fetch(p->b, "/api/version", probe_check_done, p);
	if (p->check == NULL) {
		memset(&f, 0, sizeof f);
		f.body = f.error = "cannot start a probe";
		probe_check_done(p, &f);
	}
}

/* Once, at start-up: does the upstream answer?  Never waits for it. */
void
probe_startup(struct backend *up)
{
	struct probe *p = probe_get(up);

	if (p->recheck_ev == NULL)
		p->recheck_ev = evtimer_new(rt.base, probe_recheck_cb, p);
	p->recheck_s = PROBE_RECHECK_FIRST_S;
	if (p->check == NULL)
		probe_check_start(p);
}

/* The upstream the start-up check found unreachable answered (how says
 * what): said once, and the checking stops. */
void
probe_reachable(struct backend *up, const char *how)
{
	struct probe *p = up->probe;
	char name[512];

	if (!up->unreachable)
		return;
	up->unreachable = 0;
	log_notice("upstream %s is reachable now: %s",
	    probe_name(up, name, sizeof name), how);
	if (p == NULL)
		return;
	if (p->recheck_ev != NULL)
		evtimer_del(p->recheck_ev);
	if (p->check != NULL) {
		backend_fetch_cancel(p->check);
		p->check = NULL;
	}
}
