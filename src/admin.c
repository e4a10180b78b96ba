/*
 * The proxy's own endpoints under /ollama-pool/.  That prefix is never
 * forwarded, so nothing a client sends there can reach Ollama.
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
	cJSON_AddStringToObject(root, "upstream", req->up->url.base);
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

static int
admin_only_get(struct proxy_req *req, const char *what)
{
	if (req->head->method == METHOD_GET || req->head->method == METHOD_HEAD)
		return 1;
	proxy_req_fail(
	    req, 405, 0, "%s is not allowed on %s", req->method, what);
	return 0;
}

void
admin_handle(struct proxy_req *req)
{
	const char *path = req->path;
	size_t len = strcspn(path, "?");
	struct evbuffer *buf;
	char *text;

	if (len == 19 && memcmp(path, "/ollama-pool/health", 19) == 0) {
		if (!admin_only_get(req, "/ollama-pool/health"))
			return;
		req->up = upstream_select(req);
		req->probe = probe_health(req->up, admin_health_done, req);
		return;
	}
	if (len == 20 && memcmp(path, "/ollama-pool/metrics", 20) == 0) {
		if (!admin_only_get(req, "/ollama-pool/metrics"))
			return;
		buf = evbuffer_new();
		metrics_render(buf);
		len = evbuffer_get_length(buf);
		proxy_req_respond(req, 200,
		    "text/plain; version=0.0.4; charset=utf-8",
		    (const char *)evbuffer_pullup(buf, -1), len);
		evbuffer_free(buf);
		return;
	}
	if (len == 18 && memcmp(path, "/ollama-pool/stats", 18) == 0) {
		if (!admin_only_get(req, "/ollama-pool/stats"))
			return;
		text = metrics_stats_json();
		proxy_req_respond(req, 200, ADMIN_JSON, text, strlen(text));
		cJSON_free(text);
		return;
	}
	proxy_req_fail(req, 404, 0,
	    "no endpoint %.*s (try %shealth, %smetrics or %sstats)", (int)len,
	    path, OP_ADMIN_PREFIX, OP_ADMIN_PREFIX, OP_ADMIN_PREFIX);
}
