/*
 * Each backend's series and its part of /ollama-pool/stats: whether it is
 * up, what it was sent, its connections, its slots per model, the
 * requests that could go to it waiting, and how long those that went
 * waited.  The totals without a backend label stay in metrics.c.
 */
#include "config.h"

#include <inttypes.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>

#include "ollama-pool.h"

/* Of a backend whose name gives several addresses: reported as one
 * member of it.  One address is reported as the backend itself. */
static int
metrics_is_member(const struct backend *b)
{
	const struct backend *o;
	int n = 0;

	if (b->member[0] == '\0')
		return 0;
	TAILQ_FOREACH(o, &rt.backends, entry)
	if (!o->retiring && strcmp(o->name, b->name) == 0)
		n++;
	return n > 1;
}

static void metrics_backend_line(struct evbuffer *out, const char *name,
    const struct backend *b, const char *fmt, ...) PRINTFLIKE(4, 5);

static void
metrics_backend_line(struct evbuffer *out, const char *name,
    const struct backend *b, const char *fmt, ...)
{
	va_list ap;

	evbuffer_add_printf(out, "%s{backend=\"", name);
	metrics_escape_label(out, b->name);
	if (metrics_is_member(b)) {
		evbuffer_add(out, "\",member=\"", 10);
		metrics_escape_label(out, b->member);
	}
	evbuffer_add(out, "\"} ", 3);
	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	evbuffer_add(out, "\n", 1);
}

static void
metrics_help(
    struct evbuffer *out, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(
	    out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

#define FOREACH_SERVING(b)                                                     \
	TAILQ_FOREACH(b, &rt.backends, entry)                                  \
	if (!b->retiring)

/* The first of its name's members (or the backend itself). */
static int
metrics_first_of_name(const struct backend *b)
{
	const struct backend *p;

	for (p = TAILQ_PREV(b, backend_list, entry); p != NULL;
	     p = TAILQ_PREV(p, backend_list, entry))
		if (!p->retiring && strcmp(p->name, b->name) == 0)
			return 0;
	return 1;
}

/* The queue waits of every member of b's name, summed: one series a
 * backend. */
static void
metrics_name_wait(const struct backend *b, struct histogram *h)
{
	const struct backend *o;
	int i;

	memset(h, 0, sizeof *h);
	for (o = b; o != NULL; o = TAILQ_NEXT(o, entry)) {
		if (o->retiring || strcmp(o->name, b->name) != 0)
			continue;
		for (i = 0; i <= METRICS_NBUCKETS; i++)
			h->counts[i] += o->queue_wait.counts[i];
		h->sum += o->queue_wait.sum;
		h->count += o->queue_wait.count;
	}
}

void
metrics_render_backends(struct evbuffer *out)
{
	const struct backend *b;
	const struct backend_model *m;
	struct histogram h;

	metrics_help(out, "ollama_pool_backend_up", "gauge",
	    "1 while a backend (member) takes requests, 0 while it is ejected "
	    "or joining.");
	FOREACH_SERVING(b)
	metrics_backend_line(
	    out, "ollama_pool_backend_up", b, "%d", backend_usable(b));
	metrics_help(out, "ollama_pool_backend_requests_total", "counter",
	    "Requests sent to a backend, retries included.");
	FOREACH_SERVING(b)
	metrics_backend_line(out, "ollama_pool_backend_requests_total", b,
	    "%" PRIu64, b->requests);
	metrics_help(out, "ollama_pool_backend_connections_opened_total",
	    "counter", "Connections opened to a backend.");
	FOREACH_SERVING(b)
	metrics_backend_line(out,
	    "ollama_pool_backend_connections_opened_total", b, "%" PRIu64,
	    b->conns_opened);
	metrics_help(out, "ollama_pool_backend_connections_open", "gauge",
	    "Connections open to a backend now.");
	FOREACH_SERVING(b)
	metrics_backend_line(out, "ollama_pool_backend_connections_open", b,
	    "%ld", b->conns_open);
	metrics_help(out, "ollama_pool_backend_prewarmed_total", "counter",
	    "Connections opened or kept ready for requests before any came.");
	FOREACH_SERVING(b)
	metrics_backend_line(out, "ollama_pool_backend_prewarmed_total", b,
	    "%" PRIu64, b->prewarmed);
	metrics_help(out, "ollama_pool_backend_prewarm_used_total", "counter",
	    "Prewarmed connections a request took.");
	FOREACH_SERVING(b)
	metrics_backend_line(out, "ollama_pool_backend_prewarm_used_total", b,
	    "%" PRIu64, b->prewarm_used);
	metrics_help(out, "ollama_pool_backend_in_flight", "gauge",
	    "Requests holding a backend's slots now.");
	FOREACH_SERVING(b)
	metrics_backend_line(
	    out, "ollama_pool_backend_in_flight", b, "%d", b->in_flight);
	metrics_help(out, "ollama_pool_backend_queue_depth", "gauge",
	    "Requests waiting for a slot that this backend could serve.");
	FOREACH_SERVING(b)
	metrics_backend_line(out, "ollama_pool_backend_queue_depth", b, "%d",
	    queue_waiting_for(b));
	metrics_help(out, "ollama_pool_backend_slots_in_use", "gauge",
	    "Slots held now, by backend and model.");
	FOREACH_SERVING(b)
	TAILQ_FOREACH(m, &b->models, entry)
	{
		if (m->in_flight == 0)
			continue;
		evbuffer_add(
		    out, "ollama_pool_backend_slots_in_use{backend=\"", 41);
		metrics_escape_label(out, b->name);
		if (metrics_is_member(b)) {
			evbuffer_add(out, "\",member=\"", 10);
			metrics_escape_label(out, b->member);
		}
		evbuffer_add(out, "\",model=\"", 9);
		metrics_escape_label(out, m->name);
		evbuffer_add_printf(out, "\"} %d\n", m->in_flight);
	}
	metrics_help(out, "ollama_pool_backend_queue_wait_seconds", "histogram",
	    "Time the requests sent to a backend waited for their slot.");
	FOREACH_SERVING(b)
	if (metrics_first_of_name(b)) {
		metrics_name_wait(b, &h);
		metrics_write_histogram(out,
		    "ollama_pool_backend_queue_wait_seconds", "backend",
		    b->name, &h);
	}
}

static cJSON *
metrics_backend_json(const struct backend *b)
{
	cJSON *o = cJSON_CreateObject(), *slots, *loaded;
	const struct backend_model *m;

	cJSON_AddStringToObject(o, "name", b->name);
	if (b->member[0] != '\0')
		cJSON_AddStringToObject(o, "member", b->member);
	cJSON_AddStringToObject(o, "url", b->url.base); /* never the token */
	cJSON_AddStringToObject(o, "state",
	    b->joining                   ? "joining"
	        : b->state == BACKEND_UP ? "up"
	                                 : "ejected");
	cJSON_AddNumberToObject(o, "prewarmed", (double)b->prewarmed);
	cJSON_AddNumberToObject(o, "prewarm_used", (double)b->prewarm_used);
	cJSON_AddNumberToObject(o, "weight", b->conf.weight);
	cJSON_AddNumberToObject(o, "slots", b->conf.pool_maxsize);
	cJSON_AddNumberToObject(o, "num_parallel", b->conf.num_parallel);
	cJSON_AddNumberToObject(o, "in_flight", b->in_flight);
	cJSON_AddNumberToObject(o, "queued", queue_waiting_for(b));
	slots = cJSON_AddObjectToObject(o, "slots_in_use");
	loaded = cJSON_AddArrayToObject(o, "models_loaded");
	TAILQ_FOREACH(m, &b->models, entry)
	{
		if (m->in_flight > 0)
			cJSON_AddNumberToObject(slots, m->name, m->in_flight);
		if (m->loaded)
			cJSON_AddItemToArray(
			    loaded, cJSON_CreateString(m->name));
	}
	if (b->last_probe_us != 0) {
		cJSON_AddNumberToObject(o, "last_probe_seconds_ago",
		    (now_us() - b->last_probe_us) / 1e6);
		cJSON_AddNumberToObject(
		    o, "last_probe_latency_seconds", b->last_probe_latency);
	}
	cJSON_AddNumberToObject(o, "consecutive_failures", b->fails);
	if (b->last_error[0] != '\0')
		cJSON_AddStringToObject(o, "last_error", b->last_error);
	cJSON_AddNumberToObject(o, "requests", (double)b->requests);
	cJSON_AddNumberToObject(o, "connections_open", (double)b->conns_open);
	return o;
}

void
metrics_stats_backends(cJSON *root)
{
	cJSON *list = cJSON_AddArrayToObject(root, "backends"), *group, *o;
	const struct backend *b, *p;

	cJSON_AddNumberToObject(root, "queued", queue_length());
	FOREACH_SERVING(b)
	{
		/* Members are listed under their backend, which the first
		 * of them introduces. */
		if (!metrics_first_of_name(b))
			continue;
		o = metrics_backend_json(b);
		if (!metrics_is_member(b)) {
			cJSON_AddItemToArray(list, o);
			continue;
		}
		cJSON_Delete(o);
		group = cJSON_CreateObject();
		cJSON_AddStringToObject(group, "name", b->name);
		cJSON_AddStringToObject(group, "url", b->url.base);
		o = cJSON_AddArrayToObject(group, "members");
		for (p = b; p != NULL; p = TAILQ_NEXT(p, entry))
			if (!p->retiring && strcmp(p->name, b->name) == 0)
				cJSON_AddItemToArray(
				    o, metrics_backend_json(p));
		cJSON_AddItemToArray(list, group);
	}
}
