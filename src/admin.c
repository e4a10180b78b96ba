/*
 * The proxy's own endpoints under /ollama-pool/ on the client port, and at
 * /health, /metrics and /stats on the admin listener.  That prefix is
 * never forwarded, so nothing a client sends there can reach Ollama.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>

#include "ollama-pool.h"

#define ADMIN_JSON "application/json; charset=utf-8"

int
admin_is_admin_path(const char *path, size_t len)
{
	size_t plen = strlen(OP_ADMIN_PREFIX);

	return (len >= plen && memcmp(path, OP_ADMIN_PREFIX, plen) == 0) ||
	    (len == plen - 1 && memcmp(path, OP_ADMIN_PREFIX, plen - 1) == 0);
}

static void
admin_respond_json(struct proxy_req *req, int status, cJSON *root)
{
	char *body = cJSON_PrintUnformatted(root);

	if (body == NULL)
		abort();
	proxy_req_respond(req, status, ADMIN_JSON, body, strlen(body));
	cJSON_free(body);
	cJSON_Delete(root);
}

/* Health needs no token (load balancers poll it), so probe.c keeps the
 * cost bounded: one probe in flight per backend, its answer shared, and
 * reused for a second. */
static void
admin_health_done(void *arg, const struct probe_result *res)
{
	struct proxy_req *req = arg;
	cJSON *root = cJSON_CreateObject();

	req->probe = NULL;
	cJSON_AddStringToObject(root, "status", res->ok ? "ok" : "unavailable");
	cJSON_AddStringToObject(root, "upstream", req->backend->url.base);
	cJSON_AddBoolToObject(root, "upstream_ok", res->ok);
	if (res->status != 0)
		cJSON_AddNumberToObject(root, "upstream_status", res->status);
	if (res->ok)
		cJSON_AddStringToObject(root, "upstream_version", res->version);
	else
		cJSON_AddStringToObject(root, "reason", res->reason);
	cJSON_AddNumberToObject(root, "latency_seconds", res->latency);
	admin_respond_json(req, res->ok ? 200 : 503, root);
}

/* A fleet is healthy while any backend is up: the periodic probes
 * (health.c) say which, no probe of its own. */
static void
admin_health_fleet(struct proxy_req *req)
{
	cJSON *root = cJSON_CreateObject(), *list, *o;
	struct backend *b;
	int up = 0;

	list = cJSON_AddArrayToObject(root, "backends");
	TAILQ_FOREACH(b, &rt.backends, entry)
	{
		if (b->retiring)
			continue;
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "name", b->name);
		cJSON_AddStringToObject(o, "url", b->url.base);
		if (b->member[0] != '\0')
			cJSON_AddStringToObject(o, "member", b->member);
		cJSON_AddBoolToObject(o, "up", backend_usable(b));
		if (b->joining)
			cJSON_AddStringToObject(o, "reason", "joining");
		else if (b->state != BACKEND_UP)
			cJSON_AddStringToObject(o, "reason", b->last_error);
		cJSON_AddItemToArray(list, o);
		up += backend_usable(b);
	}
	cJSON_AddNumberToObject(root, "backends_up", up);
	cJSON_AddStringToObject(root, "status", up > 0 ? "ok" : "unavailable");
	admin_respond_json(req, up > 0 ? 200 : 503, root);
}

static void
admin_health(struct proxy_req *req)
{
	struct backend *b;

	if (rt.cfg->fleet) {
		admin_health_fleet(req);
		return;
	}
	TAILQ_FOREACH(b, &rt.backends, entry)
	if (!b->retiring)
		break;
	proxy_set_backend(req, b);
	req->probe = probe_health(b, admin_health_done, req);
}

static void
admin_metrics(struct proxy_req *req)
{
	struct evbuffer *buf = evbuffer_new();
	size_t len;

	metrics_render(buf);
	len = evbuffer_get_length(buf);
	proxy_req_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8",
	    (const char *)evbuffer_pullup(buf, -1), len);
	evbuffer_free(buf);
}

static void
admin_stats(struct proxy_req *req)
{
	char *text = metrics_stats_json();

	proxy_req_respond(req, 200, ADMIN_JSON, text, strlen(text));
	cJSON_free(text);
}

static const struct admin_endpoint {
	const char *name;
	void (*handle)(struct proxy_req *);
} admin_endpoints[] = {
    {"health", admin_health},
    {"metrics", admin_metrics},
    {"stats", admin_stats},
};

/* The endpoints under prefix: "/ollama-pool/" on the client port, "/" on
 * the admin listener.  GET and HEAD only; a query is ignored. */
static void
admin_dispatch(struct proxy_req *req, const char *prefix)
{
	const struct admin_endpoint *e;
	const char *path = req->path;
	size_t i, len = strcspn(path, "?"), plen = strlen(prefix);

	for (i = 0; i < sizeof admin_endpoints / sizeof admin_endpoints[0];
	     i++) {
		e = &admin_endpoints[i];
		if (len != plen + strlen(e->name) ||
		    memcmp(path, prefix, plen) != 0 ||
		    memcmp(path + plen, e->name, len - plen) != 0)
			continue;
		if (req->head->method != METHOD_GET &&
		    req->head->method != METHOD_HEAD) {
			proxy_req_fail(req, 405, 0, "%s is not allowed on %s%s",
			    req->method, prefix, e->name);
			return;
		}
		e->handle(req);
		return;
	}
	proxy_req_fail(req, 404, 0,
	    "no endpoint %.*s (try %shealth, %smetrics or %sstats)", (int)len,
	    path, prefix, prefix, prefix);
}

void
admin_handle(struct proxy_req *req)
{
	admin_dispatch(req, OP_ADMIN_PREFIX);
}

/* The admin listener: /health, /metrics and /stats, the paths scrapers
 * and probes expect, and nothing else. */
void
admin_handle_plain(struct proxy_req *req)
{
	admin_dispatch(req, "/");
}
