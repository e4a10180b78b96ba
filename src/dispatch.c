/*
 * How one request gets its backend.
 *
 * With one backend (the [upstream] url alone), every request takes one of
 * its pool_maxsize slots, or waits in the queue, as it always has; bodies
 * stream through untouched.
 *
 * In a fleet ([backend] sections), a request for a model-routed endpoint
 * has its JSON body read whole first (it is also what a retry replays),
 * its "model" read, and placement.c picks a backend with a free slot for
 * that model, or the request waits in the fair queue (queue.c).  The
 * fleet-wide endpoints are fleet.c's; /api/create, /api/blobs and
 * /api/push go to the backend an X-Ollama-Pool-Backend header names
 * (else the first); everything else goes to the next healthy backend,
 * holding no slot, so it never waits behind generations.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>

#include "ollama-pool.h"

#define DISPATCH_HEADER "x-ollama-pool-backend"

static int
dispatch_model_route(int route)
{
	switch (route) {
	case ROUTE_GENERATE:
	case ROUTE_CHAT:
	case ROUTE_EMBED:
	case ROUTE_EMBEDDINGS:
	case ROUTE_SHOW:
	case ROUTE_V1_CHAT:
	case ROUTE_V1_COMPLETIONS:
	case ROUTE_V1_EMBEDDINGS:
		return 1;
	default:
		return 0;
	}
}

/* The requests that build a model on one backend, step by step. */
static int
dispatch_one_backend_route(int route)
{
	return route == ROUTE_CREATE || route == ROUTE_BLOBS ||
	    route == ROUTE_PUSH;
}

/* Who the request is, for the queue's fairness: its token when tokens
 * are asked for, else its address without the port. */
static void
dispatch_client_key(const struct proxy_req *req, char *buf, size_t len)
{
	const char *v, *peer = req->client->peer, *colon;
	size_t vlen;

	v = head_get(req->head, "authorization", &vlen);
	if (rt.cfg->client_tokens[0] != '\0' && v != NULL) {
		snprintf(buf, len, "t:%.*s", (int)vlen, v);
		return;
	}
	colon = strrchr(peer, ':');
	vlen = colon != NULL && (peer[0] == '[' || strchr(peer, ':') == colon)
	    ? (size_t)(colon - peer)
	    : strlen(peer);
	if (vlen > len - 3)
		vlen = len - 3;
	memcpy(buf, "a:", 2);
	memcpy(buf + 2, peer, vlen);
	buf[vlen + 2] = '\0';
}

/* The slot is the request's: off it goes.  b NULL: the queue found no
 * backend left that could serve it. */
static void
dispatch_go(void *arg, struct backend *b, struct backend_model *m)
{
	struct proxy_req *req = arg;

	proxy_timer_stop(req);
	if (b == NULL) {
		req->end = END_REFUSED;
		proxy_req_fail(req, 503, 1, "no backend is up for model %s",
		    req->model_name ? req->model_name : "(none)");
		return;
	}
	proxy_set_backend(req, b);
	req->model = m;
	backend_slot_take(b, m);
	req->slot_held = 1;
	proxy_transfer_begin(req);
}

static void
dispatch_want(struct proxy_req *req, int failover)
{
	struct place_want *w = &req->qe.want;

	memset(w, 0, sizeof *w);
	w->model = req->model_name;
	w->has_affinity = req->has_affinity;
	w->affinity = req->affinity;
	if (failover) {
		w->exclude = req->tried;
		w->nexclude = req->ntried;
		w->need_listed = req->model_name != NULL;
	}
}

static int
dispatch_enqueue(struct proxy_req *req)
{
	req->qe.dispatch = dispatch_go;
	req->qe.arg = req;
	dispatch_client_key(req, req->qe.client, sizeof req->qe.client);
	if (queue_add(&req->qe) != 0)
		return -1;
	req->state = PROXY_QUEUED;
	proxy_timer_start(req, rt.cfg->queue_timeout);
	return 0;
}

static void
dispatch_queue_full(struct proxy_req *req)
{
	req->end = END_REFUSED;
	proxy_req_fail(req, 503, 1,
	    "queue full: %d request%s already waiting for a slot (queue_max)",
	    queue_length(), log_plural(queue_length()));
}

/* No backend can take it: none admits the model, or none is up. */
static void
dispatch_none(struct proxy_req *req)
{
	struct backend *b;

	req->end = END_REFUSED;
	if (req->model_name == NULL) {
		proxy_req_fail(req, 503, 1, "no backend is up");
		return;
	}
	TAILQ_FOREACH(b, &rt.backends, entry)
	if (!b->retiring && backend_admits(b, req->model_name)) {
		proxy_req_fail(req, 503, 1, "no backend is up for model %s",
		    req->model_name ? req->model_name : "(none)");
		return;
	}
	proxy_req_fail(req, 404, 0,
	    "model '%s' is not served here: no backend's models list "
	    "admits it",
	    req->model_name);
}

/* A slot now, or a place in the queue.  New requests never pass those
 * already waiting: with a queue, they join it and it is kicked. */
void
proxy_place(struct proxy_req *req)
{
	struct backend *b;
	struct backend_model *m;
	enum place_verdict v;

	dispatch_want(req, 0);
	if (queue_length() == 0) {
		v = placement_choose(&req->qe.want, &b, &m);
		if (v == PLACE_GO) {
			dispatch_go(req, b, m);
			return;
		}
		if (v == PLACE_NONE) {
			dispatch_none(req);
			return;
		}
	}
	if (dispatch_enqueue(req) != 0) {
		dispatch_queue_full(req);
		return;
	}
	queue_kick(NULL);
}

/* After a failure before any byte reached the client: another backend
 * that has the model, at once, when one exists (or its queue); 0 when
 * none does, and the usual backoff applies. */
int
proxy_failover(struct proxy_req *req)
{
	struct backend *b;
	struct backend_model *m;
	enum place_verdict v;

	dispatch_want(req, 1);
	if (req->pinned)
		return 0;
	if (req->slotless) {
		if ((b = placement_any(&req->qe.want)) == NULL)
			return 0;
		log_notice("%s %s: failing over to backend %s (request %s)",
		    req->method, req->path, b->name, req->request_id);
		proxy_set_backend(req, b);
		proxy_transfer_begin(req);
		return 1;
	}
	v = placement_choose(&req->qe.want, &b, &m);
	if (v == PLACE_NONE)
		return 0;
	if (v == PLACE_GO) {
		log_notice("%s %s: failing over to backend %s (request %s)",
		    req->method, req->path, b->name, req->request_id);
		dispatch_go(req, b, m);
		return 1;
	}
	return dispatch_enqueue(req) == 0;
}

/* No slot: the next healthy backend (that lists its model). */
static void
dispatch_any(struct proxy_req *req)
{
	struct backend *b;

	dispatch_want(req, 0);
	req->slotless = 1;
	if ((b = placement_any(&req->qe.want)) == NULL) {
		dispatch_none(req);
		return;
	}
	proxy_set_backend(req, b);
	proxy_transfer_begin(req);
}

/* /api/create, /api/blobs, /api/push: the backend named, else the
 * first in the file. */
static void
dispatch_named(struct proxy_req *req)
{
	struct backend *b;
	const char *v;
	char name[BACKEND_NAME_MAX];
	size_t len;

	v = head_get(req->head, DISPATCH_HEADER, &len);
	if (v == NULL) {
		TAILQ_FOREACH(b, &rt.backends, entry)
		if (!b->retiring)
			break;
	} else {
		snprintf(name, sizeof name, "%.*s", (int)len, v);
		b = len < sizeof name ? backend_find(name) : NULL;
		if (b == NULL) {
			proxy_req_fail(req, 400, 0,
			    "X-Ollama-Pool-Backend: no backend is named "
			    "\"%.*s\"",
			    (int)(len < 64 ? len : 64), v);
			return;
		}
	}
	req->pinned = 1;
	proxy_set_backend(req, b);
	proxy_transfer_begin(req);
}

/* After a backoff: the same way as the first time. */
void
proxy_again(struct proxy_req *req)
{
	if (req->pinned)
		proxy_transfer_begin(req);
	else if (req->slotless)
		dispatch_any(req);
	else
		proxy_place(req);
}

/* ---- the fleet-wide endpoints' answers, written for fleet.c ----------- */

static void
dispatch_sink_respond(
    void *arg, int status, const char *ctype, const char *body, size_t len)
{
	struct proxy_req *req = arg;

	req->fleet = NULL;
	proxy_req_respond(req, status, ctype, body, len);
}

static void
dispatch_sink_begin(void *arg, int status, const char *ctype)
{
	struct proxy_req *req = arg;
	struct evbuffer *out = client_output(req->client);

	req->status = status;
	if (req->http10)
		req->keep_alive = 0;
	else
		req->resp_chunked = 1;
	evbuffer_add_printf(out,
	    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nX-Request-Id: %s\r\n%s\r\n",
	    status, response_reason(status), ctype, req->request_id,
	    req->resp_chunked ? "Transfer-Encoding: chunked\r\n"
	                      : "Connection: close\r\n");
	req->resp_committed = 1;
	req->t_first_byte_us = now_us();
}

static void
dispatch_sink_write(void *arg, const char *data, size_t len)
{
	struct proxy_req *req = arg;
	struct evbuffer *out = client_output(req->client);

	if (len == 0)
		return;
	if (req->resp_chunked)
		evbuffer_add_printf(out, "%zx\r\n", len);
	evbuffer_add(out, data, len);
	if (req->resp_chunked)
		evbuffer_add(out, "\r\n", 2);
	req->resp_received += len;
}

static void
dispatch_sink_end(void *arg)
{
	struct proxy_req *req = arg;

	req->fleet = NULL;
	proxy_finish_fleet(req);
}

static void
dispatch_fleet(struct proxy_req *req)
{
	struct fleet_sink sink;
	const char *body = NULL;
	size_t len = 0;

	if (req->body != NULL && (len = evbuffer_get_length(req->body)) > 0)
		body = (const char *)evbuffer_pullup(req->body, -1);
	sink.respond = dispatch_sink_respond;
	sink.stream_begin = dispatch_sink_begin;
	sink.stream_write = dispatch_sink_write;
	sink.stream_end = dispatch_sink_end;
	sink.arg = req;
	req->state = PROXY_RUNNING;
	req->fleet =
	    fleet_start(req->route, req->head->method, body, len, &sink);
}

/* In a fleet: where the request goes, or what it waits for first. */
void
proxy_route(struct proxy_req *req)
{
	/* /v1/models is the fleet's list; /v1/models/NAME one model's. */
	if (req->route == ROUTE_V1_MODELS &&
	    strncmp(req->path, "/v1/models/", 11) == 0) {
		req->model_name = xstrdup(req->path + 11);
		dispatch_any(req);
		return;
	}
	if (fleet_is_fleetwide(req->route, req->head->method)) {
		req->fleet_wide = 1;
		if (req->body_done)
			dispatch_fleet(req);
		else
			req->await_body = 1;
		return;
	}
	if (dispatch_model_route(req->route) && req->post_mode) {
		if (queue_length() >= rt.cfg->queue_max) {
			dispatch_queue_full(req);
			return;
		}
		/* Too big to keep whole: it streams, placed without a
		 * model, as other bodies do. */
		if (req->head->has_content_length &&
		    req->head->content_length > rt.cfg->retry_body_max)
			dispatch_any(req);
		else
			req->await_body = 1;
		return;
	}
	if (dispatch_one_backend_route(req->route)) {
		dispatch_named(req);
		return;
	}
	dispatch_any(req);
}

/* The model a request's JSON body names ("model", or the older "name"),
 * and its conversation's affinity key. */
static void
dispatch_read_body(struct proxy_req *req)
{
	struct evbuffer *body = req->body;
	size_t len = evbuffer_get_length(body);
	const char *p = (const char *)evbuffer_pullup(body, -1);
	cJSON *json, *v;

	if (p == NULL)
		return;
	json = cJSON_ParseWithLength(p, len);
	v = cJSON_GetObjectItemCaseSensitive(json, "model");
	if (!cJSON_IsString(v) || v->valuestring[0] == '\0')
		v = cJSON_GetObjectItemCaseSensitive(json, "name");
	if (cJSON_IsString(v) && v->valuestring[0] != '\0')
		req->model_name = xstrdup(v->valuestring);
	req->has_affinity = affinity_key(
	    req->head, req->route, json, req->model_name, &req->affinity);
	cJSON_Delete(json);
}

/* All of a body that was waited for is here (or it outgrew what is kept:
 * then it goes on without a model). */
void
proxy_body_whole(struct proxy_req *req)
{
	req->await_body = 0;
	if (req->fleet_wide) {
		dispatch_fleet(req);
		return;
	}
	if (req->body_done)
		dispatch_read_body(req);
	/* No model (not JSON, or none named): Ollama answers 400.  Showing
	 * a model runs nothing: no slot. */
	if (req->model_name == NULL || req->route == ROUTE_SHOW) {
		dispatch_any(req);
		return;
	}
	proxy_place(req);
}
