/*
 * A fleet's health: each backend is probed every probe_interval with
 * GET /api/ps and GET /api/tags (what it runs and what it has, for
 * placement), as the proxy's own fetches that hold no request slot.
 * fail_threshold failures in a row, of probes or of requests (a failed
 * connect, a 5xx answer: a backend that fails fast must not draw traffic
 * by it), eject it; an ejected backend is probed after 1 s, then twice as
 * long each time up to 30 s, and readmitted after one success.  With one
 * backend ([upstream] alone) nothing is ever ejected: there is nowhere
 * else to go, and the start-up check (probe.c) says what is wrong.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ollama-pool.h"

#define HEALTH_TIMEOUT_MS 5000
#define HEALTH_BACKOFF_FIRST_S 1
#define HEALTH_BACKOFF_MAX_S 30

struct health {
	struct backend *b;
	struct event *ev; /* the next round */
	struct backend_fetch *ps, *tags; /* this round's, in flight */
	cJSON *ps_json, *tags_json; /* their answers, when good */
	char err[256]; /* this round's first failure */
	double latency;
	int backoff_s; /* the next wait while ejected */
	int in_round; /* the round's end schedules the next itself */
};

static void health_round(evutil_socket_t, short, void *);

static void
health_schedule(struct health *h, double seconds)
{
	struct timeval tv = runtime_timeval(seconds);

	evtimer_add(h->ev, &tv);
}

/* The names an answer's "models" array gives. */
static void
health_mark(struct backend *b, const cJSON *json, int loaded)
{
	const cJSON *models = cJSON_GetObjectItemCaseSensitive(json, "models");
	const cJSON *it, *name;
	struct backend_model *m;

	TAILQ_FOREACH(m, &b->models, entry)
	if (loaded)
		m->loaded = 0;
	else
		m->listed = 0;
	cJSON_ArrayForEach(it, models)
	{
		name = cJSON_GetObjectItemCaseSensitive(it, "name");
		if (!cJSON_IsString(name))
			name = cJSON_GetObjectItemCaseSensitive(it, "model");
		if (!cJSON_IsString(name) ||
		    (m = backend_model(b, name->valuestring)) == NULL)
			continue;
		if (loaded)
			m->loaded = m->listed = 1;
		else
			m->listed = 1;
	}
}

/* A member new in DNS answered its first probe: it takes requests now,
 * on connections opened for them. */
static void
health_joined(struct backend *b)
{
	b->joining = 0;
	log_notice("backend %s: member %s joined", b->name, b->member);
	backend_prewarm(b);
	if (b->hooks.slot_freed != NULL)
		b->hooks.slot_freed(b->hooks.arg);
}

static void
health_round_done(struct health *h)
{
	struct backend *b = h->b;

	b->last_probe_us = now_us();
	b->last_probe_latency = h->latency;
	h->in_round = 1;
	if (h->ps_json != NULL && h->tags_json != NULL) {
		health_mark(b, h->tags_json, 0);
		health_mark(b, h->ps_json, 1);
		health_note_ok(b);
		if (b->joining)
			health_joined(b);
	} else
		health_note_failure(b, h->err);
	cJSON_Delete(h->ps_json);
	cJSON_Delete(h->tags_json);
	h->ps_json = h->tags_json = NULL;
	h->in_round = 0;
	if (b->state == BACKEND_UP)
		health_schedule(h, b->conf.probe_interval);
	else {
		health_schedule(h, h->backoff_s);
		h->backoff_s = h->backoff_s * 2 > HEALTH_BACKOFF_MAX_S
		    ? HEALTH_BACKOFF_MAX_S
		    : h->backoff_s * 2;
	}
}

/* One of the round's two answers. */
static void
health_answer(struct health *h, const char *path,
    const struct backend_fetch_result *f, cJSON **out)
{
	cJSON *json = NULL;

	if (f->latency > h->latency)
		h->latency = f->latency;
	if (f->status == 200)
		json = cJSON_ParseWithLength(f->body, f->len);
	if (json != NULL && cJSON_IsObject(json)) {
		*out = json;
		return;
	}
	cJSON_Delete(json);
	if (h->err[0] != '\0')
		return;
	if (f->status == 0)
		snprintf(h->err, sizeof h->err, "GET %s: %s", path, f->error);
	else if (f->status != 200)
		snprintf(h->err, sizeof h->err, "GET %s answered %ld", path,
		    f->status);
	else
		snprintf(h->err, sizeof h->err,
		    "GET %s answered no JSON object", path);
}

static void
health_ps_done(void *arg, const struct backend_fetch_result *f)
{
	struct health *h = arg;

	h->ps = NULL;
	health_answer(h, "/api/ps", f, &h->ps_json);
	if (h->tags == NULL)
		health_round_done(h);
}

static void
health_tags_done(void *arg, const struct backend_fetch_result *f)
{
	struct health *h = arg;

	h->tags = NULL;
	health_answer(h, "/api/tags", f, &h->tags_json);
	if (h->ps == NULL)
		health_round_done(h);
}

static struct backend_fetch *
health_fetch(struct health *h, const char *path,
    void (*cb)(void *, const struct backend_fetch_result *))
{
	struct backend_fetch_spec spec;

	memset(&spec, 0, sizeof spec);
	spec.path = path;
	spec.timeout_ms = HEALTH_TIMEOUT_MS;
	spec.on_done = cb;
	spec.arg = h;
	return backend_fetch_start(h->b, &spec);
}

static void
health_round(evutil_socket_t fd, short what, void *arg)
{
	struct health *h = arg;

	if (h->ps != NULL || h->tags != NULL)
		return; /* the last round is still out */
	h->err[0] = '\0';
	h->latency = 0;
	h->ps = health_fetch(h, "/api/ps", health_ps_done);
	h->tags = health_fetch(h, "/api/tags", health_tags_done);
	if (h->ps == NULL || h->tags == NULL) {
		if (h->ps != NULL)
			backend_fetch_cancel(h->ps);
		if (h->tags != NULL)
			backend_fetch_cancel(h->tags);
		h->ps = h->tags = NULL;
		snprintf(h->err, sizeof h->err, "cannot start a probe");
		health_round_done(h);
	}
}

/* A fleet's backend: probed now, and every probe_interval from then. */
void
health_start(struct backend *b)
{
	struct health *h;

	if (!b->fleet || b->health != NULL)
		return;
	h = b->health = xcalloc(1, sizeof *h);
	h->b = b;
	h->backoff_s = HEALTH_BACKOFF_FIRST_S;
	h->ev = evtimer_new(rt.base, health_round, h);
	health_schedule(h, 0);
}

void
health_free(struct health *h)
{
	if (h == NULL)
		return;
	if (h->ps != NULL)
		backend_fetch_cancel(h->ps);
	if (h->tags != NULL)
		backend_fetch_cancel(h->tags);
	cJSON_Delete(h->ps_json);
	cJSON_Delete(h->tags_json);
	event_free(h->ev);
	free(h);
}

void
health_note_ok(struct backend *b)
{
	if (!b->fleet)
		return;
	b->fails = 0;
	if (b->health != NULL)
		b->health->backoff_s = HEALTH_BACKOFF_FIRST_S;
	if (b->state != BACKEND_DOWN)
		return;
	b->state = BACKEND_UP;
	log_notice("backend %s (%s) is back: readmitted", b->name, b->url.base);
	/* Waiting requests may go there now. */
	if (b->hooks.slot_freed != NULL)
		b->hooks.slot_freed(b->hooks.arg);
}

void
health_note_failure(struct backend *b, const char *why)
{
	struct health *h = b->health;

	if (!b->fleet)
		return;
	snprintf(b->last_error, sizeof b->last_error, "%s", why);
	if (++b->fails < b->conf.fail_threshold || b->state == BACKEND_DOWN)
		return;
	b->state = BACKEND_DOWN;
	log_warn("backend %s (%s) ejected after %d failure%s in a row: %s",
	    b->name, b->url.base, b->fails, log_plural(b->fails), why);
	/* Probed again soon, not a whole probe_interval later. */
	if (h != NULL && !h->in_round && h->ps == NULL && h->tags == NULL) {
		h->backoff_s = HEALTH_BACKOFF_FIRST_S;
		evtimer_del(h->ev);
		health_schedule(h, h->backoff_s);
		h->backoff_s *= 2;
	}
	if (b->hooks.slot_freed != NULL)
		b->hooks.slot_freed(b->hooks.arg);
}
