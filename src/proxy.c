/*
 * One request's life: from a parsed head, through its backend and slot
 * (dispatch.c) and a transfer (backend.c), to the last byte written to
 * the client (relay.c carries the answer).  Bodies stream both ways
 * through bounded buffers: the transfer's read side pauses when the
 * client has not sent more yet, its write side when the client reads
 * slowly.  A failure before the first byte goes again, elsewhere in a
 * fleet (retry.c says whether and when).
 *
 * The transfer's callbacks run inside curl: they may write to the
 * client's output buffer and set flags, but never free or release the
 * transfer.  Endings go through client_response_done().
 */
#include "config.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>

#include "ollama-pool.h"

static size_t proxy_read_cb(void *, char *, size_t);
static int proxy_rewind_cb(void *);
static void proxy_transfer_done(void *, const struct xfer_end *);
static void proxy_timer_cb(evutil_socket_t, short, void *);

static const struct xfer_cb proxy_xfer_cb = {
    .on_header = relay_header_cb,
    .on_data = relay_data_cb,
    .on_read = proxy_read_cb,
    .on_rewind = proxy_rewind_cb,
    .on_done = proxy_transfer_done,
};

/* Upload pieces: see proxy_req_body(). */
#define PROXY_SEND_BATCH (64 * 1024)
#define PROXY_SEND_DELAY_US 1000

/*
 * How much request body is kept for sending again.  With retries off, only
 * what max_buffer holds anyway: enough for curl to resend a small request
 * when a pooled connection turns out closed, no memory beyond that.
 */
static size_t
proxy_replay_max(void)
{
	if (rt.cfg->retries > 0)
		return rt.cfg->retry_body_max;
	return rt.cfg->retry_body_max < rt.cfg->max_buffer
	    ? rt.cfg->retry_body_max
	    : rt.cfg->max_buffer;
}

/* The answers whose token counts are read, and in which shape. */
static enum tokscan_mode
proxy_tokscan_mode(int route)
{
	switch (route) {
	case ROUTE_GENERATE:
	case ROUTE_CHAT:
		return TOKSCAN_NATIVE;
	case ROUTE_EMBED:
		return TOKSCAN_EMBED;
	case ROUTE_V1_CHAT:
	case ROUTE_V1_COMPLETIONS:
	case ROUTE_V1_EMBEDDINGS:
		return TOKSCAN_OPENAI;
	default:
		return TOKSCAN_OFF;
	}
}

/* The request's backend for this attempt, referenced while it is. */
void
proxy_set_backend(struct proxy_req *req, struct backend *b)
{
	if (req->backend == b)
		return;
	if (req->backend != NULL)
		backend_unref(req->backend);
	req->backend = b;
	if (b != NULL)
		backend_ref(b);
}

/* The slot goes back (the queue may start someone else at once). */
void
proxy_release_slot(struct proxy_req *req)
{
	struct backend_model *m = req->model;

	if (!req->slot_held)
		return;
	req->slot_held = 0;
	req->model = NULL;
	backend_slot_release(req->backend, m);
}

struct proxy_req *
proxy_req_new(struct client_conn *cc, struct http_head *h)
{
	struct proxy_req *req = xcalloc(1, sizeof *req);
	const char *m = httpreq_method_name(h->method);

	req->client = cc;
	req->head = h;
	req->state = PROXY_NEW;
	snprintf(req->method, sizeof req->method, "%s", m);
	req->path = httpreq_target_path(head_str(h, h->target), h->target_len);
	req->head_only = h->method == METHOD_HEAD;
	req->keep_alive = h->keep_alive != 0;
	req->http10 = h->http_major == 1 && h->http_minor == 0;
	req->route = req->path ? metrics_route(req->path) : ROUTE_OTHER;
	if (req->path != NULL) {
		req->openai = strncmp(req->path, "/v1/", 4) == 0;
		req->admin = admin_is_admin_path(req->path, strlen(req->path));
	}
	/* On the admin listener every path is ours, none Ollama's. */
	if (cc->admin) {
		req->route = ROUTE_ADMIN;
		req->openai = 0;
		req->admin = 1;
	}
	tokscan_init(&req->tokens, proxy_tokscan_mode(req->route));
	req->post_mode = h->chunked || h->content_length > 0 ||
	    h->method == METHOD_POST || h->method == METHOD_PUT ||
	    h->method == METHOD_PATCH;
	if (req->post_mode)
		req->body = evbuffer_new();
	else
		req->body_done = 1;
	/* A body too big to keep cannot be replayed: send it on as it
	 * comes. */
	req->replayable =
	    !h->has_content_length || h->content_length <= proxy_replay_max();
	req->t_start_us = now_us();
	reqid_assign(h, req->request_id, sizeof req->request_id);
	return req;
}

void
proxy_req_free(struct proxy_req *req)
{
	queue_remove(&req->qe);
	if (req->fleet != NULL)
		fleet_cancel(req->fleet);
	if (req->handle != NULL)
		backend_xfer_release(req->handle);
	proxy_release_slot(req);
	if (req->probe != NULL)
		probe_waiter_cancel(req->probe);
	if (req->timer != NULL)
		event_free(req->timer);
	if (req->send_ev != NULL)
		event_free(req->send_ev);
	headers_list_free(&req->hdrs);
	if (req->body != NULL)
		evbuffer_free(req->body);
	proxy_set_backend(req, NULL);
	free(req->model_name);
	free(req->path);
	free(req);
}

/* The access log's line: status is what the client was sent (499 when it
 * left before any answer). */
static void
proxy_access_line(struct proxy_req *req, int status, double total)
{
	struct http_head *h = req->head;
	struct access_rec r;

	memset(&r, 0, sizeof r);
	r.client = req->client->peer;
	r.method = req->method;
	r.path = req->path;
	if (r.path != NULL)
		r.path_len = strlen(r.path);
	else { /* not a path: the target as sent */
		r.path = head_str(h, h->target);
		r.path_len = h->target_len;
	}
	r.http10 = req->http10;
	r.status = req->end == END_CLIENT_GONE && req->resp_committed
	    ? (int)req->status
	    : status;
	r.bytes_in = req->bytes_in;
	r.bytes_out = req->resp_received;
	r.duration = total;
	r.ttfb = req->t_first_byte_us
	    ? (req->t_first_byte_us - req->t_start_us) / 1e6
	    : -1;
	r.model = tokscan_model(&req->tokens);
	r.backend = req->backend == NULL ? NULL
	    : rt.cfg->fleet              ? req->backend->name
	                                 : req->backend->url.base;
	r.retries = req->attempts > 1 ? req->attempts - 1 : 0;
	r.request_id = req->request_id;
	r.user_agent = head_get(h, "user-agent", NULL);
	r.referer = head_get(h, "referer", NULL);
	r.end = req->end != END_NONE ? req->end : END_COMPLETED;
	accesslog_write(&r);
}

/* Counts the answered request and writes its access lines: the access
 * log's, and with -v today's line on stderr. */
static void
proxy_account(struct proxy_req *req, int status)
{
	double total = (now_us() - req->t_start_us) / 1e6;

	metrics_count_request(req->method, req->route, status);
	histogram_observe(&rt.metrics.request[req->route], total);
	if (accesslog_enabled())
		proxy_access_line(req, status, total);
	if (!log_enabled(LOG_LVL_INFO))
		return;
	log_info("%s \"%s %s\" %d %" PRIu64 " bytes, first byte %.3f s, "
	         "total %.3f s, %d attempt%s, upstream connection %s",
	    req->client->peer, req->method, req->path ? req->path : "-", status,
	    req->resp_received,
	    req->t_first_byte_us
	        ? (req->t_first_byte_us - req->t_start_us) / 1e6
	        : 0.0,
	    total, req->attempts, req->attempts == 1 ? "" : "s",
	    req->attempts == 0     ? "none"
	        : req->conn_failed ? "failed"
	        : req->new_conns   ? "new"
	                           : "reused");
}

/* The client left before its answer ended: count where it was. */
void
proxy_req_cancel(struct proxy_req *req)
{
	enum cancel_phase phase;

	if (req->state != PROXY_DONE) {
		if (req->state == PROXY_QUEUED)
			phase = CANCEL_QUEUED;
		else if (req->state == PROXY_BACKOFF)
			phase = CANCEL_BACKOFF;
		else if (req->resp_committed)
			phase = CANCEL_STREAMING;
		else
			phase = CANCEL_WAITING;
		rt.metrics.cancelled[phase]++;
		req->end = END_CLIENT_GONE;
		proxy_account(req, 499); /* as Ollama logs a client gone */
	}
	proxy_req_free(req);
}

/* How an answer of our own ended the request, unless the caller said. */
static enum access_end
proxy_fail_end(const struct proxy_req *req, int status)
{
	if (req->end != END_NONE)
		return req->end;
	if (status == 408 || status == 504)
		return END_TIMEOUT;
	return req->attempts > 0 ? END_UPSTREAM_ERROR : END_REFUSED;
}

/* Answers with an error of our own; once a response has begun, the only
 * honest signal left is closing the connection short of its end. */
void
proxy_req_fail(
    struct proxy_req *req, int status, int retry_after, const char *fmt, ...)
{
	struct response_opts o;
	char msg[1024];
	va_list ap;

	if (req->state == PROXY_DONE)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	/* Answered: it must not be started from the queue any more. */
	queue_remove(&req->qe);
	req->state = PROXY_DONE;
	req->end = proxy_fail_end(req, status);
	if (req->resp_committed) {
		log_warn("%s %s: %s; closing the client connection "
		         "(request %s)",
		    req->method, req->path, msg, req->request_id);
		proxy_account(req, (int)req->status);
		client_response_done(req->client, 0);
		return;
	}
	if (status >= 500)
		log_warn("%s %s: %d %s (request %s)", req->method,
		    req->path ? req->path : "-", status, msg, req->request_id);
	memset(&o, 0, sizeof o);
	o.status = status;
	/* After these the connection's framing cannot be trusted, or the
	 * client was told to stop. */
	o.keep_alive = req->keep_alive && status != 400 && status != 408 &&
	    status != 413 && !client_awaits_continue(req->client);
	o.http10 = req->http10;
	o.head_only = req->head_only;
	o.openai = req->openai;
	o.retry_after = retry_after;
	o.request_id = req->request_id;
	if (status == 405)
		o.allow = req->admin
		    ? "GET, HEAD"
		    : "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS";
	req->resp_received =
	    response_error(client_output(req->client), &o, msg);
	req->t_first_byte_us = now_us();
	proxy_account(req, status);
	client_response_done(req->client, o.keep_alive);
}

/* A complete response of our own (the admin endpoints). */
void
proxy_req_respond(struct proxy_req *req, int status, const char *ctype,
    const char *body, size_t len)
{
	struct response_opts o;

	memset(&o, 0, sizeof o);
	o.status = status;
	o.keep_alive = req->keep_alive && !client_awaits_continue(req->client);
	o.http10 = req->http10;
	o.head_only = req->head_only;
	o.content_type = ctype;
	o.request_id = req->request_id;
	req->resp_received =
	    response_write(client_output(req->client), &o, body, len);
	req->t_first_byte_us = now_us();
	req->state = PROXY_DONE;
	req->end = END_COMPLETED;
	proxy_account(req, status);
	client_response_done(req->client, o.keep_alive);
}

void
proxy_req_start(struct proxy_req *req)
{
	char via[512];

	/* Before the target: CONNECT names a host:port, not a path. */
	if (req->head->method == METHOD_CONNECT ||
	    req->head->method == METHOD_TRACE) {
		proxy_req_fail(
		    req, 405, 0, "method %s is not allowed", req->method);
		return;
	}
	if (req->path == NULL) {
		proxy_req_fail(req, 400, 0,
		    "request target must be a path such as /api/generate");
		return;
	}
	/* The admin listener asks no token: scrapers and probes call it. */
	if (req->client->admin) {
		admin_handle_plain(req);
		return;
	}
	if (rt.cfg->client_tokens[0] != '\0' &&
	    !(req->admin && strcmp(req->path, "/ollama-pool/health") == 0) &&
	    !headers_token_ok(req->head, rt.cfg->client_tokens)) {
		proxy_req_fail(req, 401, 0,
		    "a valid \"Authorization: Bearer <token>\" is required");
		return;
	}
	if (req->admin) {
		admin_handle(req);
		return;
	}
	/* Our name in Via: this request went round and came back. */
	if (reqid_via_loops(req->head, via, sizeof via)) {
		req->end = END_REFUSED;
		proxy_req_fail(req, 508, 0,
		    "request loop: Via \"%s\" already names this proxy (%s)",
		    via, rt.via_name);
		return;
	}
	req->t_queued_us = now_us();
	if (rt.cfg->fleet)
		proxy_route(req);
	else
		proxy_place(req);
	/* Accepted (running, queued or reading its body to be placed):
	 * only now is the body invited. */
	if (req->state != PROXY_DONE)
		client_send_continue(req->client);
}

void
proxy_timer_start(struct proxy_req *req, double seconds)
{
	struct timeval tv;

	if (req->timer == NULL)
		req->timer = evtimer_new(rt.base, proxy_timer_cb, req);
	tv = runtime_timeval(seconds);
	evtimer_add(req->timer, &tv);
}

void
proxy_timer_stop(struct proxy_req *req)
{
	if (req->timer != NULL)
		evtimer_del(req->timer);
}

void
proxy_transfer_begin(struct proxy_req *req)
{
	struct backend *b = req->backend;
	struct http_head *head = req->head;
	struct xfer_spec x;

	req->state = PROXY_RUNNING;
	req->attempts++;
	rt.metrics.upstream_requests++;
	req->t_dispatch_us = now_us();
	histogram_observe(&rt.metrics.queue_wait,
	    (req->t_dispatch_us - req->t_queued_us) / 1e6);
	histogram_observe(
	    &b->queue_wait, (req->t_dispatch_us - req->t_queued_us) / 1e6);
	if (b->conf.first_byte_timeout > 0)
		proxy_timer_start(req, b->conf.first_byte_timeout);
	else
		proxy_timer_stop(req);

	headers_list_free(&req->hdrs);
	headers_to_curl(&req->hdrs, head, req->post_mode,
	    rt.cfg->client_tokens[0] != '\0', req->request_id, b->auth);
	memset(&x, 0, sizeof x);
	x.method = head->method;
	x.method_name = req->method;
	x.path = req->path;
	x.headers = &req->hdrs;
	x.has_body = req->post_mode;
	x.body_len = head->chunked ? -1 : (int64_t)head->content_length;
	x.cb = &proxy_xfer_cb;
	x.arg = req;
	req->handle = backend_xfer_start(b, &x);
	if (req->handle == NULL) {
		proxy_release_slot(req);
		proxy_req_fail(req, 500, 0, "cannot start upstream transfer");
	}
}

int
proxy_req_wants_body(const struct proxy_req *req)
{
	size_t held;

	if (req->body == NULL)
		return 1;
	held = evbuffer_get_length(req->body) - req->body_off;
	/* A body to be placed by is kept whole, up to retry_body_max. */
	if (req->await_body)
		return held < rt.cfg->retry_body_max ||
		    held < rt.cfg->max_buffer;
	return held < rt.cfg->max_buffer;
}

static void
proxy_unpause(struct proxy_req *req)
{
	if (req->handle == NULL)
		return;
	backend_xfer_pause(req->handle, req->recv_paused, req->send_paused);
}

static void
proxy_send_cb(evutil_socket_t fd, short what, void *arg)
{
	struct proxy_req *req = arg;

	req->send_flush = 1; /* what is there goes, however little */
	if (req->send_paused) {
		req->send_paused = 0;
		proxy_unpause(req);
	}
}

void
proxy_req_body(struct proxy_req *req, const char *data, size_t len)
{
	evbuffer_add(req->body, data, len);
	rt.metrics.bytes_in += len;
	req->bytes_in += len;
	/* Outgrew what is kept to be placed by: it goes on without. */
	if (req->await_body &&
	    evbuffer_get_length(req->body) > rt.cfg->retry_body_max) {
		proxy_body_whole(req);
		return;
	}
	if (req->send_paused &&
	    (req->send_flush ||
	        evbuffer_get_length(req->body) - req->body_off >=
	            PROXY_SEND_BATCH)) {
		req->send_paused = 0;
		proxy_unpause(req);
	}
}

void
proxy_req_body_end(struct proxy_req *req)
{
	req->body_done = 1;
	if (req->await_body) {
		proxy_body_whole(req);
		return;
	}
	if (req->send_ev != NULL)
		evtimer_del(req->send_ev);
	if (req->send_paused) {
		req->send_paused = 0;
		proxy_unpause(req);
	}
}

void
proxy_req_client_drained(struct proxy_req *req)
{
	if (req->recv_paused) {
		req->recv_paused = 0;
		proxy_unpause(req);
	}
}

/* The exchange is over for the client: terminate the framing. */
static void
proxy_finish(struct proxy_req *req)
{
	if (req->state == PROXY_DONE)
		return;
	req->state = PROXY_DONE;
	if (req->resp_chunked)
		evbuffer_add(client_output(req->client), "0\r\n\r\n", 5);
	if (tokscan_finish(&req->tokens))
		metrics_count_tokens(req->tokens.model, req->tokens.prompt,
		    req->tokens.completion);
	req->end = END_COMPLETED;
	proxy_account(req, (int)req->status);
	client_response_done(req->client, req->keep_alive);
}

/* A fleet-wide endpoint's streamed answer has ended. */
void
proxy_finish_fleet(struct proxy_req *req)
{
	proxy_finish(req);
}

/*
 * The response has all its bytes.  Normally curl reports the transfer done
 * right after; but when the upstream answered before taking the whole
 * request body (Ollama does for a blob it has), waiting would hold the
 * client hostage to an upload nobody reads, so the exchange ends now.
 */
void
proxy_resp_complete(struct proxy_req *req)
{
	req->resp_complete = 1;
	if (!req->body_done ||
	    (req->body != NULL &&
	        evbuffer_get_length(req->body) > req->body_off))
		proxy_finish(req);
}

/*
 * curl wants body bytes.  While the body may still be replayed, what was
 * sent stays in the buffer (body_off marks how far this attempt got); once
 * it outgrows retry_body_max it is dropped as it goes.
 */
/*
 * curl rewinds the body when a reused connection turns out to be closed
 * (an idle upstream connection dropped by the server) and it sends the
 * request again on a new one: possible while the body is still kept.
 */
static int
proxy_rewind_cb(void *arg)
{
	struct proxy_req *req = arg;

	if (!req->replayable)
		return -1;
	req->body_off = 0;
	return 0;
}

static void
proxy_send_later(struct proxy_req *req)
{
	struct timeval tv = {0, PROXY_SEND_DELAY_US};

	if (req->send_ev == NULL)
		req->send_ev = evtimer_new(rt.base, proxy_send_cb, req);
	if (!evtimer_pending(req->send_ev, NULL))
		evtimer_add(req->send_ev, &tv);
}

static size_t
proxy_read_cb(void *arg, char *buf, size_t n)
{
	struct proxy_req *req = arg;
	struct evbuffer_ptr pos;
	size_t avail;

	if (req->state == PROXY_DONE || req->retry_pending)
		return XFER_ABORT;
	avail = evbuffer_get_length(req->body) - req->body_off;
	if (avail == 0 && req->body_done)
		return 0;
	/*
	 * A body coming in pieces goes upstream in pieces of
	 * PROXY_SEND_BATCH or more: libevent 2.1 reads a client's socket
	 * 4 KiB at a time, and a send and curl's work for each would be
	 * the upload's whole cost.  What is held back waits
	 * PROXY_SEND_DELAY_US at most; the body's end goes at once, so a
	 * request whole in one read is never delayed.
	 */
	if (avail == 0 ||
	    (avail < PROXY_SEND_BATCH && !req->body_done && !req->send_flush)) {
		if (avail > 0)
			proxy_send_later(req);
		req->send_flush = 0;
		req->send_paused = 1;
		return XFER_PAUSE;
	}
	req->send_flush = 0;
	if (n > avail)
		n = avail;
	if (req->replayable) {
		evbuffer_ptr_set(
		    req->body, &pos, req->body_off, EVBUFFER_PTR_SET);
		evbuffer_copyout_from(req->body, &pos, buf, n);
		req->body_off += n;
		if (evbuffer_get_length(req->body) > proxy_replay_max()) {
			evbuffer_drain(req->body, req->body_off);
			req->body_off = 0;
			req->replayable = 0;
		}
	} else
		evbuffer_remove(req->body, buf, n);
	if (evbuffer_get_length(req->body) - req->body_off <
	    rt.cfg->max_buffer / 2)
		client_body_drained(req->client);
	return n;
}

/* Would another attempt be allowed, and could it send the same request? */
int
proxy_can_retry(const struct proxy_req *req)
{
	return retry_allowed(rt.cfg, req->attempts, req->head->method,
	    req->body == NULL || req->replayable);
}

/* The transfer is over (or abandoned): its handle and its slot go back,
 * and what it taught about the backend is noted. */
static void
proxy_transfer_end(struct proxy_req *req, int learn)
{
	struct backend *b = req->backend;

	if (req->handle != NULL) {
		backend_xfer_release(req->handle);
		req->handle = NULL;
	}
	if (learn && req->slot_held && req->status == 200 &&
	    req->tokens.mode != TOKSCAN_OFF)
		placement_learn(b, req->model, req->tokens.load_ns / 1e9,
		    (now_us() - req->t_dispatch_us) / 1e6);
	proxy_release_slot(req);
}

static void
proxy_retry(struct proxy_req *req, enum retry_reason reason, double delay,
    const char *why)
{
	rt.metrics.retries[reason]++;
	req->body_off = 0;
	req->send_paused = req->recv_paused = 0;
	req->retry_pending = 0;
	req->discarded = 0;
	req->status = 0;
	req->resp_has_length = req->resp_complete = 0;
	req->resp_length = req->resp_received = 0;
	/* In a fleet, another backend that has the model, at once. */
	if (rt.cfg->fleet && req->ntried < PLACE_EXCLUDE_MAX) {
		req->tried[req->ntried++] = req->backend;
		log_notice("%s %s: backend %s: %s; retry %d of %d elsewhere "
		           "(request %s)",
		    req->method, req->path, req->backend->name, why,
		    req->attempts, rt.cfg->retries, req->request_id);
		req->state = PROXY_NEW;
		req->t_queued_us = now_us();
		if (proxy_failover(req))
			return;
	}
	log_notice("%s %s: %s; retry %d of %d in %.2f s (request %s)",
	    req->method, req->path, why, req->attempts, rt.cfg->retries, delay,
	    req->request_id);
	req->state = PROXY_BACKOFF;
	proxy_timer_start(req, delay);
}

/* Gives up on the running transfer: its connection is closed, not
 * pooled, so Ollama sees its client leave. */
static void
proxy_abandon_transfer(struct proxy_req *req)
{
	proxy_transfer_end(req, 0);
}

static void
proxy_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct proxy_req *req = arg;
	const struct backend_conf *bc;
	double idle, left;

	switch (req->state) {
	case PROXY_QUEUED:
		req->end = END_TIMEOUT;
		proxy_req_fail(req, 503, 1,
		    "waited %g s for a slot%s%s (queue_timeout)",
		    rt.cfg->queue_timeout, req->model_name ? " for model " : "",
		    req->model_name ? req->model_name : "");
		return;
	case PROXY_BACKOFF:
		req->state = PROXY_NEW;
		req->ntried = 0; /* after the wait, any backend again */
		req->t_queued_us = now_us();
		proxy_again(req);
		return;
	case PROXY_RUNNING:
		bc = &req->backend->conf;
		req->end = END_TIMEOUT;
		if (!req->resp_committed) {
			proxy_abandon_transfer(req);
			proxy_req_fail(req, 504, 0,
			    "upstream %s sent no response within %g s "
			    "(first_byte_timeout)",
			    req->backend->url.base, bc->first_byte_timeout);
			return;
		}
		idle = bc->stream_idle_timeout;
		left = idle - (now_us() - req->last_byte_us) / 1e6;
		if (left > 0.001) {
			proxy_timer_start(req, left);
			return;
		}
		proxy_abandon_transfer(req);
		proxy_req_fail(req, 504, 0,
		    "upstream %s sent nothing for %g s (stream_idle_timeout)",
		    req->backend->url.base, idle);
		return;
	default:
		return;
	}
}

static int
proxy_error_status(enum xfer_result r)
{
	return r == XFER_TIMEOUT ? 504 : 502;
}

/* What the attempt says of its backend's health (a fleet ejects on it):
 * no connection or a 5xx is a failure, any other answer a success. */
static void
proxy_note_health(struct proxy_req *req, const struct xfer_end *end)
{
	char why[CURL_ERROR_SIZE + 32];

	if (end->conn_failed)
		health_note_failure(req->backend, end->error);
	else if (req->status >= 500) {
		snprintf(why, sizeof why, "it answered %ld", req->status);
		health_note_failure(req->backend, why);
	} else if (req->status > 0)
		health_note_ok(req->backend);
}

static void
proxy_transfer_done(void *arg, const struct xfer_end *end)
{
	struct proxy_req *req = arg;
	struct backend *b = req->backend;

	req->new_conns = end->new_conns;
	req->conn_failed = end->conn_failed;
	proxy_note_health(req, end);
	/* An answer: the upstream the start-up check missed is there. */
	if (req->status != 0 && b->unreachable)
		probe_reachable(b, "it answered a request");
	/* Learn only from an answer that went to the client whole. */
	proxy_transfer_end(req, end->result == XFER_OK && !req->retry_pending);

	if (req->state == PROXY_DONE)
		return;
	proxy_timer_stop(req);
	if (req->bad_framing) {
		proxy_req_fail(req, 502, 0,
		    "upstream %s sent both Content-Length and "
		    "Transfer-Encoding; its connection is closed",
		    b->url.base);
		return;
	}
	if (req->retry_pending) {
		char why[64];

		snprintf(why, sizeof why, "upstream answered %ld", req->status);
		proxy_retry(req, RETRY_STATUS, req->retry_delay, why);
		return;
	}
	if (!req->resp_committed && end->result != XFER_OK &&
	    retry_transient(end->result) && proxy_can_retry(req)) {
		proxy_retry(req, retry_reason_of(end->result),
		    retry_backoff(rt.cfg, req->attempts), end->error);
		return;
	}
	if (req->resp_committed) {
		if (end->result == XFER_OK || req->resp_complete)
			proxy_finish(req);
		else
			proxy_req_fail(req, 502, 0,
			    "upstream %s failed mid-response: %s", b->url.base,
			    end->error);
		return;
	}
	if (end->result == XFER_OK)
		proxy_req_fail(req, 502, 0,
		    "upstream %s closed the connection without a response",
		    b->url.base);
	else
		proxy_req_fail(req, proxy_error_status(end->result), 0,
		    "upstream %s: %s", b->url.base, end->error);
}
