/*
 * Counters and histograms, and their two renderings: the Prometheus text
 * exposition (0.0.4) and one JSON document.  Counting is a few integer
 * adds into fixed tables in rt.metrics: no locks (one thread), no
 * allocation on the hot path.  Rendering walks the series, so its cost
 * follows the number of series, never the number of requests.
 */
#include "config.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>

#include "ollama-pool.h"

/* Seconds: from a fast cached reply to a model load of several minutes. */
const double metrics_buckets[METRICS_NBUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};

/* Ollama's endpoints; a route label is one of these, never a raw path,
 * so the number of series stays bounded whatever clients send. */
static const struct {
	const char *path;
	int prefix; /* matches path/... too */
} metrics_routes[ROUTE_COUNT] = {
    [ROUTE_ROOT] = {"/", 0},
    [ROUTE_GENERATE] = {"/api/generate", 0},
    [ROUTE_CHAT] = {"/api/chat", 0},
    [ROUTE_EMBED] = {"/api/embed", 0},
    [ROUTE_EMBEDDINGS] = {"/api/embeddings", 0},
    [ROUTE_TAGS] = {"/api/tags", 0},
    [ROUTE_PS] = {"/api/ps", 0},
    [ROUTE_SHOW] = {"/api/show", 0},
    [ROUTE_PULL] = {"/api/pull", 0},
    [ROUTE_PUSH] = {"/api/push", 0},
    [ROUTE_CREATE] = {"/api/create", 0},
    [ROUTE_COPY] = {"/api/copy", 0},
    [ROUTE_DELETE] = {"/api/delete", 0},
    [ROUTE_VERSION] = {"/api/version", 0},
    [ROUTE_BLOBS] = {"/api/blobs", 1},
    [ROUTE_V1_CHAT] = {"/v1/chat/completions", 0},
    [ROUTE_V1_COMPLETIONS] = {"/v1/completions", 0},
    [ROUTE_V1_EMBEDDINGS] = {"/v1/embeddings", 0},
    [ROUTE_V1_MODELS] = {"/v1/models", 1},
    [ROUTE_V1_RESPONSES] = {"/v1/responses", 0},
    [ROUTE_V1_MESSAGES] = {"/v1/messages", 0},
    [ROUTE_ADMIN] = {"/ollama-pool", 1},
    [ROUTE_OTHER] = {"other", 0},
};

static const char *metrics_methods[] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"};
#define METRICS_NMETHODS (sizeof metrics_methods / sizeof metrics_methods[0])

static const char *metrics_retry_reasons[RETRY_REASON_COUNT] = {
    [RETRY_STATUS] = "status",
    [RETRY_CONNECT] = "connect_failed",
    [RETRY_RESET] = "connection_reset",
};

static const char *metrics_cancel_phases[CANCEL_PHASE_COUNT] = {
    [CANCEL_QUEUED] = "queued",
    [CANCEL_WAITING] = "waiting_headers",
    [CANCEL_BACKOFF] = "backoff",
    [CANCEL_STREAMING] = "streaming",
};

int
metrics_route(const char *path)
{
	size_t len = strcspn(path, "?"), rlen;
	int i;

	for (i = 0; i < ROUTE_OTHER; i++) {
		rlen = strlen(metrics_routes[i].path);
		if (len == rlen &&
		    memcmp(path, metrics_routes[i].path, len) == 0)
			return i;
		if (metrics_routes[i].prefix && len > rlen &&
		    memcmp(path, metrics_routes[i].path, rlen) == 0 &&
		    path[rlen] == '/')
			return i;
	}
	return ROUTE_OTHER;
}

const char *
metrics_route_name(int route)
{
	return metrics_routes[route].path;
}

static int
metrics_method_index(const char *method)
{
	size_t i;

	for (i = 0; i < METRICS_NMETHODS - 1; i++)
		if (strcmp(method, metrics_methods[i]) == 0)
			return (int)i;
	return (int)METRICS_NMETHODS - 1;
}

void
histogram_observe(struct histogram *h, double v)
{
	int i;

	for (i = 0; i < METRICS_NBUCKETS && v > metrics_buckets[i]; i++)
		;
	h->counts[i]++; /* i == METRICS_NBUCKETS: only +Inf holds it */
	h->sum += v;
	h->count++;
}

void
metrics_count_request(const char *method, int route, int code)
{
	struct metrics *m = &rt.metrics;
	struct request_series *s;
	uint32_t mi = metrics_method_index(method), h, i;

	if (code < 100 || code > 599)
		code = 599;
	h = (mi * 31 + route) * 613 + code;
	for (i = 0; i < METRICS_MAX_SERIES; i++) {
		s = &m->requests[(h + i) % METRICS_MAX_SERIES];
		if (s->count == 0) {
			s->method = mi;
			s->route = route;
			s->code = code;
			m->nrequest_series++;
		} else if (s->method != mi || s->route != route ||
		    s->code != code)
			continue;
		s->count++;
		return;
	}
}

/* Length of s[0..len) without a trailing cut-off UTF-8 sequence: a
 * truncated name must still be a valid label value. */
static size_t
metrics_utf8_whole(const char *s, size_t len)
{
	size_t start = len, need;
	unsigned char c;

	while (start > 0 && len - start < 4 &&
	    ((unsigned char)s[start - 1] & 0xc0) == 0x80)
		start--;
	if (start == 0)
		return len;
	c = (unsigned char)s[start - 1];
	if (c < 0x80)
		return len;
	need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
	return len - (start - 1) >= need ? len : start - 1;
}

/* Token counts from an answer's final object, by model.  The table is small
 * and fixed; past it, further models share an "other" row. */
void
metrics_count_tokens(const char *model, uint64_t prompt, uint64_t completion)
{
	struct metrics *m = &rt.metrics;
	size_t len;
	int i;

	if (model[0] == '\0')
		model = "unknown";
	len = strlen(model);
	if (len >= sizeof m->tokens[0].model)
		len = sizeof m->tokens[0].model - 1;
	len = metrics_utf8_whole(model, len);
	for (i = 0; i < m->ntoken_models; i++)
		if (strncmp(m->tokens[i].model, model, len) == 0 &&
		    m->tokens[i].model[len] == '\0')
			break;
	if (i == m->ntoken_models) {
		if (i >= METRICS_MAX_MODELS - 1) {
			model = "other";
			len = 5;
			i = METRICS_MAX_MODELS - 1;
		}
		if (i == m->ntoken_models) {
			memcpy(m->tokens[i].model, model, len);
			m->tokens[i].model[len] = '\0';
			m->ntoken_models++;
		}
	}
	m->tokens[i].prompt += prompt;
	m->tokens[i].completion += completion;
}

/* Label values escape backslash, double quote and newline (0.0.4). */
void
metrics_escape_label(struct evbuffer *out, const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\\')
			evbuffer_add(out, "\\\\", 2);
		else if (*v == '"')
			evbuffer_add(out, "\\\"", 2);
		else if (*v == '\n')
			evbuffer_add(out, "\\n", 2);
		else
			evbuffer_add(out, v, 1);
	}
}

static void
metrics_head(
    struct evbuffer *out, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(
	    out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Buckets are cumulative in the exposition; we keep them per bucket. */
void
metrics_write_histogram(struct evbuffer *out, const char *name,
    const char *label, const char *value, const struct histogram *h)
{
	uint64_t cum = 0;
	int i;

	for (i = 0; i <= METRICS_NBUCKETS; i++) {
		cum += h->counts[i];
		evbuffer_add_printf(out, "%s_bucket{", name);
		if (label != NULL) {
			evbuffer_add_printf(out, "%s=\"", label);
			metrics_escape_label(out, value);
			evbuffer_add(out, "\",", 2);
		}
		if (i < METRICS_NBUCKETS)
			evbuffer_add_printf(out, "le=\"%g\"} %" PRIu64 "\n",
			    metrics_buckets[i], cum);
		else
			evbuffer_add_printf(
			    out, "le=\"+Inf\"} %" PRIu64 "\n", cum);
	}
	if (label != NULL) {
		evbuffer_add_printf(out, "%s_sum{%s=\"", name, label);
		metrics_escape_label(out, value);
		evbuffer_add_printf(
		    out, "\"} %.9g\n%s_count{%s=\"", h->sum, name, label);
		metrics_escape_label(out, value);
		evbuffer_add_printf(out, "\"} %" PRIu64 "\n", h->count);
	} else
		evbuffer_add_printf(out, "%s_sum %.9g\n%s_count %" PRIu64 "\n",
		    name, h->sum, name, h->count);
}

struct metrics_gauges {
	long upstream_open;
	int queued;
	int in_flight;
	long rss;
	int fds;
};

static long
metrics_rss_bytes(void)
{
	long pages = 0, rss = 0;
	FILE *fp = fopen("/proc/self/statm", "r");

	if (fp == NULL)
		return 0;
	if (fscanf(fp, "%ld %ld", &pages, &rss) != 2)
		rss = 0;
	fclose(fp);
	return rss * sysconf(_SC_PAGESIZE);
}

static int
metrics_open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own descriptor */
}

static void
metrics_gather(struct metrics_gauges *g)
{
	struct backend *up;

	memset(g, 0, sizeof *g);
	TAILQ_FOREACH(up, &rt.backends, entry)
	{
		g->upstream_open += up->conns_open;
		g->in_flight += up->active;
	}
	g->queued = queue_length();
	g->rss = metrics_rss_bytes();
	g->fds = metrics_open_fds();
}

void
metrics_render(struct evbuffer *out)
{
	const struct metrics *m = &rt.metrics;
	const struct request_series *s;
	struct metrics_gauges g;
	int i;

	metrics_gather(&g);
	metrics_head(out, "ollama_pool_requests_total", "counter",
	    "Requests answered, by method, Ollama route and status.");
	for (i = 0; i < METRICS_MAX_SERIES; i++) {
		s = &m->requests[i];
		if (s->count == 0)
			continue;
		evbuffer_add_printf(out,
		    "ollama_pool_requests_total{method=\"%s\",route=\"",
		    metrics_methods[s->method]);
		metrics_escape_label(out, metrics_route_name(s->route));
		evbuffer_add_printf(
		    out, "\",code=\"%d\"} %" PRIu64 "\n", s->code, s->count);
	}
	metrics_head(out, "ollama_pool_upstream_connections_opened_total",
	    "counter", "Connections opened to the upstream.");
	evbuffer_add_printf(out,
	    "ollama_pool_upstream_connections_opened_total %" PRIu64 "\n",
	    m->upstream_conns_opened);
	metrics_head(out, "ollama_pool_upstream_requests_total", "counter",
	    "Requests sent to the upstream, retries included.");
	evbuffer_add_printf(out,
	    "ollama_pool_upstream_requests_total %" PRIu64 "\n",
	    m->upstream_requests);
	metrics_head(out, "ollama_pool_upstream_connections_open", "gauge",
	    "Connections open to the upstream now.");
	evbuffer_add_printf(out, "ollama_pool_upstream_connections_open %ld\n",
	    g.upstream_open);
	metrics_render_backends(out);
	metrics_head(out, "ollama_pool_retries_total", "counter",
	    "Upstream attempts retried, by reason.");
	for (i = 0; i < RETRY_REASON_COUNT; i++)
		evbuffer_add_printf(out,
		    "ollama_pool_retries_total{reason=\"%s\"} %" PRIu64 "\n",
		    metrics_retry_reasons[i], m->retries[i]);
	metrics_head(out, "ollama_pool_cancelled_total", "counter",
	    "Requests whose client left before the answer ended, by phase.");
	for (i = 0; i < CANCEL_PHASE_COUNT; i++)
		evbuffer_add_printf(out,
		    "ollama_pool_cancelled_total{phase=\"%s\"} %" PRIu64 "\n",
		    metrics_cancel_phases[i], m->cancelled[i]);
	metrics_head(out, "ollama_pool_queue_depth", "gauge",
	    "Requests waiting for an upstream connection.");
	evbuffer_add_printf(out, "ollama_pool_queue_depth %d\n", g.queued);
	metrics_head(out, "ollama_pool_queue_wait_seconds", "histogram",
	    "Time requests waited for an upstream connection.");
	metrics_write_histogram(
	    out, "ollama_pool_queue_wait_seconds", NULL, NULL, &m->queue_wait);
	metrics_head(out, "ollama_pool_client_connections_open", "gauge",
	    "Client connections open now.");
	evbuffer_add_printf(
	    out, "ollama_pool_client_connections_open %d\n", rt.nclients);
	metrics_head(out, "ollama_pool_client_connections_total", "counter",
	    "Client connections accepted.");
	evbuffer_add_printf(out,
	    "ollama_pool_client_connections_total %" PRIu64 "\n",
	    m->client_conns_total);
	metrics_head(out, "ollama_pool_in_flight", "gauge",
	    "Requests holding an upstream connection now.");
	evbuffer_add_printf(out, "ollama_pool_in_flight %d\n", g.in_flight);
	metrics_head(out, "ollama_pool_first_byte_seconds", "histogram",
	    "Time from request head to response head, by route.");
	for (i = 0; i < ROUTE_COUNT; i++)
		if (m->first_byte[i].count > 0)
			metrics_write_histogram(out,
			    "ollama_pool_first_byte_seconds", "route",
			    metrics_route_name(i), &m->first_byte[i]);
	metrics_head(out, "ollama_pool_request_seconds", "histogram",
	    "Time from request head to the end of the answer, by route.");
	for (i = 0; i < ROUTE_COUNT; i++)
		if (m->request[i].count > 0)
			metrics_write_histogram(out,
			    "ollama_pool_request_seconds", "route",
			    metrics_route_name(i), &m->request[i]);
	metrics_head(out, "ollama_pool_bytes_total", "counter",
	    "Body bytes carried: request bodies in, response bodies out.");
	evbuffer_add_printf(out,
	    "ollama_pool_bytes_total{direction=\"in\"} %" PRIu64 "\n"
	    "ollama_pool_bytes_total{direction=\"out\"} %" PRIu64 "\n",
	    m->bytes_in, m->bytes_out);
	metrics_head(out, "ollama_pool_tokens_total", "counter",
	    "Tokens the answers reported (final chunk or usage), by model and "
	    "kind.");
	for (i = 0; i < m->ntoken_models; i++) {
		evbuffer_add(out, "ollama_pool_tokens_total{model=\"", 32);
		metrics_escape_label(out, m->tokens[i].model);
		evbuffer_add_printf(out, "\",kind=\"prompt\"} %" PRIu64 "\n",
		    m->tokens[i].prompt);
		evbuffer_add(out, "ollama_pool_tokens_total{model=\"", 32);
		metrics_escape_label(out, m->tokens[i].model);
		evbuffer_add_printf(out,
		    "\",kind=\"completion\"} %" PRIu64 "\n",
		    m->tokens[i].completion);
	}
	metrics_head(out, "ollama_pool_access_log_dropped_total", "counter",
	    "Access log lines dropped because the disk fell behind.");
	evbuffer_add_printf(out,
	    "ollama_pool_access_log_dropped_total %" PRIu64 "\n",
	    accesslog_dropped());
	metrics_head(out, "ollama_pool_build_info", "gauge",
	    "Always 1; the version is in the label.");
	evbuffer_add_printf(
	    out, "ollama_pool_build_info{version=\"%s\"} 1\n", PACKAGE_VERSION);
	metrics_head(out, "process_start_time_seconds", "gauge",
	    "Start time of the process since the epoch, in seconds.");
	evbuffer_add_printf(
	    out, "process_start_time_seconds %lld\n", (long long)m->start_time);
	metrics_head(out, "process_resident_memory_bytes", "gauge",
	    "Resident memory size in bytes.");
	evbuffer_add_printf(out, "process_resident_memory_bytes %ld\n", g.rss);
	metrics_head(out, "process_open_fds", "gauge",
	    "Number of open file descriptors.");
	evbuffer_add_printf(out, "process_open_fds %d\n", g.fds);
}

static cJSON *
metrics_json_histogram(const struct histogram *h)
{
	cJSON *o = cJSON_CreateObject(),
	      *b = cJSON_AddObjectToObject(o, "buckets");
	uint64_t cum = 0;
	char le[32];
	int i;

	for (i = 0; i <= METRICS_NBUCKETS; i++) {
		cum += h->counts[i];
		if (i < METRICS_NBUCKETS)
			snprintf(le, sizeof le, "%g", metrics_buckets[i]);
		else
			snprintf(le, sizeof le, "+Inf");
		cJSON_AddNumberToObject(b, le, (double)cum);
	}
	cJSON_AddNumberToObject(o, "sum", h->sum);
	cJSON_AddNumberToObject(o, "count", (double)h->count);
	return o;
}

/* The same figures as the exposition, as one JSON document. */
char *
metrics_stats_json(void)
{
	const struct metrics *m = &rt.metrics;
	const struct request_series *s;
	struct metrics_gauges g;
	cJSON *root = cJSON_CreateObject(), *a, *o;
	char *text;
	int i;

	metrics_gather(&g);
	cJSON_AddStringToObject(root, "version", PACKAGE_VERSION);
	cJSON_AddNumberToObject(root, "start_time", (double)m->start_time);
	a = cJSON_AddArrayToObject(root, "requests");
	for (i = 0; i < METRICS_MAX_SERIES; i++) {
		s = &m->requests[i];
		if (s->count == 0)
			continue;
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(
		    o, "method", metrics_methods[s->method]);
		cJSON_AddStringToObject(
		    o, "route", metrics_route_name(s->route));
		cJSON_AddNumberToObject(o, "code", s->code);
		cJSON_AddNumberToObject(o, "count", (double)s->count);
		cJSON_AddItemToArray(a, o);
	}
	metrics_stats_backends(root);
	o = cJSON_AddObjectToObject(root, "upstream");
	cJSON_AddNumberToObject(
	    o, "connections_opened", (double)m->upstream_conns_opened);
	cJSON_AddNumberToObject(o, "connections_open", (double)g.upstream_open);
	cJSON_AddNumberToObject(o, "requests", (double)m->upstream_requests);
	o = cJSON_AddObjectToObject(root, "retries");
	for (i = 0; i < RETRY_REASON_COUNT; i++)
		cJSON_AddNumberToObject(
		    o, metrics_retry_reasons[i], (double)m->retries[i]);
	o = cJSON_AddObjectToObject(root, "cancelled");
	for (i = 0; i < CANCEL_PHASE_COUNT; i++)
		cJSON_AddNumberToObject(
		    o, metrics_cancel_phases[i], (double)m->cancelled[i]);
	cJSON_AddNumberToObject(root, "queue_depth", g.queued);
	cJSON_AddItemToObject(
	    root, "queue_wait_seconds", metrics_json_histogram(&m->queue_wait));
	o = cJSON_AddObjectToObject(root, "client_connections");
	cJSON_AddNumberToObject(o, "open", rt.nclients);
	cJSON_AddNumberToObject(o, "total", (double)m->client_conns_total);
	cJSON_AddNumberToObject(root, "in_flight", g.in_flight);
	a = cJSON_AddObjectToObject(root, "first_byte_seconds");
	for (i = 0; i < ROUTE_COUNT; i++)
		if (m->first_byte[i].count > 0)
			cJSON_AddItemToObject(a, metrics_route_name(i),
			    metrics_json_histogram(&m->first_byte[i]));
	a = cJSON_AddObjectToObject(root, "request_seconds");
	for (i = 0; i < ROUTE_COUNT; i++)
		if (m->request[i].count > 0)
			cJSON_AddItemToObject(a, metrics_route_name(i),
			    metrics_json_histogram(&m->request[i]));
	o = cJSON_AddObjectToObject(root, "bytes");
	cJSON_AddNumberToObject(o, "in", (double)m->bytes_in);
	cJSON_AddNumberToObject(o, "out", (double)m->bytes_out);
	a = cJSON_AddObjectToObject(root, "tokens");
	for (i = 0; i < m->ntoken_models; i++) {
		o = cJSON_AddObjectToObject(a, m->tokens[i].model);
		cJSON_AddNumberToObject(
		    o, "prompt", (double)m->tokens[i].prompt);
		cJSON_AddNumberToObject(
		    o, "completion", (double)m->tokens[i].completion);
	}
	cJSON_AddNumberToObject(
	    root, "access_log_dropped", (double)accesslog_dropped());
	o = cJSON_AddObjectToObject(root, "process");
	cJSON_AddNumberToObject(o, "resident_memory_bytes", (double)g.rss);
	cJSON_AddNumberToObject(o, "open_fds", g.fds);
	text = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	if (text == NULL)
		abort();
	return text;
}
