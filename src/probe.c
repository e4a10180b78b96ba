/*
 * Health probes of one backend.  However many callers ask at once (load
 * balancers and Kubernetes poll /ollama-pool/health without a token), at
 * most one probe per backend is in flight: callers wait for its answer
 * and share it, and an answer younger than PROBE_FRESH_US is given again
 * without asking.  The probe itself is a small GET that holds no request
 * slot (upstream.c), so probes never delay a request.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ollama-pool.h"

/* A health probe must answer fast even while a model loads. */
#define PROBE_TIMEOUT_MS 5000
/* How long an answer is given again without asking: short enough that a
 * backend going down shows within a second. */
#define PROBE_FRESH_US 1000000

struct probe_waiter {
	struct probe *p;
	probe_cb cb;
	void *arg;
	TAILQ_ENTRY(probe_waiter) entry;
};

struct probe {
	struct upstream *up;
	struct upstream_fetch *fetch; /* the one in flight, if any */
	struct probe_result last;
	uint64_t last_us; /* when last was had; 0: never */
	TAILQ_HEAD(, probe_waiter) waiters;
};

static void
probe_read_answer(struct probe_result *res, long status, const char *body,
    const char *err, double latency)
{
	cJSON *json, *v;

	memset(res, 0, sizeof *res);
	res->status = status;
	res->latency = latency;
	if (status == 0) {
		snprintf(res->reason, sizeof res->reason, "%s", err);
		return;
	}
	if (status != 200) {
		snprintf(res->reason, sizeof res->reason,
		    "GET /api/version answered %ld", status);
		return;
	}
	res->ok = 1;
	json = cJSON_Parse(body);
	v = cJSON_GetObjectItemCaseSensitive(json, "version");
	if (cJSON_IsString(v))
		snprintf(
		    res->version, sizeof res->version, "%s", v->valuestring);
	cJSON_Delete(json);
}

/* The answer is in: every caller waiting gets it. */
static void
probe_done(
    void *arg, long status, const char *body, const char *err, double latency)
{
	struct probe *p = arg;
	struct probe_waiter *w;

	p->fetch = NULL;
	probe_read_answer(&p->last, status, body, err, latency);
	p->last_us = now_us();
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
probe_health(struct upstream *up, probe_cb cb, void *arg)
{
	struct probe *p = up->probe;
	struct probe_waiter *w;
	struct probe_result res;

	if (p == NULL) {
		p = up->probe = xcalloc(1, sizeof *p);
		p->up = up;
		TAILQ_INIT(&p->waiters);
	}
	if (p->fetch == NULL && p->last_us != 0 &&
	    now_us() - p->last_us < PROBE_FRESH_US) {
		cb(arg, &p->last);
		return NULL;
	}
	if (p->fetch == NULL) {
		p->fetch = upstream_fetch_start(
		    up, "/api/version", PROBE_TIMEOUT_MS, probe_done, p);
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
		upstream_fetch_cancel(p->fetch);
	free(p);
}
