/*
 * One request's life: from a parsed head, through a pool slot and a curl
 * transfer, to the last byte written to the client.  Bodies stream both
 * ways through bounded buffers: curl's read side pauses when the client
 * has not sent more yet, its write side when the client reads slowly.
 *
 * The curl callbacks below run inside curl_multi_socket_action(): they may
 * write to the client's output buffer and set flags, but never free or
 * remove a handle.  Endings go through client_response_done().
 */
#include "config.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>

#include "ollama-pool.h"

static size_t proxy_header_cb(void *, const char *, size_t);
static size_t proxy_write_cb(void *, const char *, size_t);
static size_t proxy_read_cb(void *, char *, size_t);
static int proxy_rewind_cb(void *);
static void proxy_transfer_done(void *, const struct xfer_end *);
static void proxy_timer_cb(evutil_socket_t, short, void *);
static int proxy_can_retry(const struct proxy_req *);

static const struct xfer_cb proxy_xfer_cb = {
    .on_header = proxy_header_cb,
    .on_data = proxy_write_cb,
    .on_read = proxy_read_cb,
    .on_rewind = proxy_rewind_cb,
    .on_done = proxy_transfer_done,
};

/* A retried answer's body is read and dropped to keep the connection; a
 * bigger one is not worth it. */
#define PROXY_DISCARD_MAX (64 * 1024)
/* Upload pieces: see proxy_req_body(). */
#define PROXY_SEND_BATCH (64 * 1024)
#define PROXY_SEND_DELAY_US 1000
/* Response heads up to this size are built without allocating. */
#define PROXY_HEAD_STACK 4096

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
	    : rt.cfg->fleet            ? req->backend->name
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
	tv.tv_sec = (time_t)seconds;
	tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
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
	histogram_observe(&b->queue_wait,
	    (req->t_dispatch_us - req->t_queued_us) / 1e6);
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
		return held < rt.cfg->retry_body_max || held < rt.cfg->max_buffer;
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
static void
proxy_resp_complete(struct proxy_req *req)
{
	req->resp_complete = 1;
	if (!req->body_done ||
	    (req->body != NULL &&
	        evbuffer_get_length(req->body) > req->body_off))
		proxy_finish(req);
}

/* Appends to the head being built, on the stack until it outgrows it. */
static void
proxy_head_put(char **head, size_t *len, size_t *cap, const char *p, size_t n)
{
	char *grown;

	if (*len + n > *cap) {
		grown = xmalloc(*cap * 2 + n);
		memcpy(grown, *head, *len);
		if (*cap > PROXY_HEAD_STACK)
			free(*head);
		*head = grown;
		*cap = *cap * 2 + n;
	}
	memcpy(*head + *len, p, n);
	*len += n;
}

static void
proxy_commit_head(struct proxy_req *req)
{
	struct client_conn *cc = req->client;
	struct http_head *rh = &cc->resp_head;
	struct evbuffer *out = client_output(cc);
	const struct header_ref *r;
	char stack[PROXY_HEAD_STACK], *head = stack, line[128];
	size_t head_len, head_cap = sizeof stack;
	const char *cl;
	char *end;
	size_t cllen;
	uint32_t i;
	int has_body, n;

	has_body = !req->head_only && response_status_has_body(req->status);
	if (rt.stopping)
		req->keep_alive = 0; /* draining: this is the last answer */
	cl = head_get(rh, "content-length", &cllen);
	if (cl != NULL) {
		req->resp_length = strtoull(cl, &end, 10);
		req->resp_has_length = end != cl;
	}
	if (has_body && !req->resp_has_length) {
		if (req->http10)
			req->keep_alive = 0; /* the close marks the end */
		else
			req->resp_chunked = 1;
	}

	/* The head is assembled in one piece and added once: each add to
	 * a bufferevent's output runs its callbacks. */
	head_len = 0;
	n = snprintf(line, sizeof line, "HTTP/1.1 %ld %s\r\n", req->status,
	    req->reason[0] ? req->reason : response_reason((int)req->status));
	proxy_head_put(&head, &head_len, &head_cap, line, n);
	for (i = 0; i < rh->nhdrs; i++) {
		r = &rh->hdrs[i];
		if (!headers_response_keep(rh, i) ||
		    (r->name_len == 12 &&
		        strncasecmp(rh->buf + r->name, "x-request-id", 12) ==
		            0))
			continue;
		proxy_head_put(&head, &head_len, &head_cap, rh->buf + r->name,
		    r->name_len);
		proxy_head_put(&head, &head_len, &head_cap, ": ", 2);
		proxy_head_put(&head, &head_len, &head_cap, rh->buf + r->value,
		    r->value_len);
		proxy_head_put(&head, &head_len, &head_cap, "\r\n", 2);
	}
	proxy_head_put(&head, &head_len, &head_cap, "X-Request-Id: ", 14);
	proxy_head_put(&head, &head_len, &head_cap, req->request_id,
	    strlen(req->request_id));
	proxy_head_put(&head, &head_len, &head_cap, "\r\n", 2);
	if (req->resp_chunked)
		proxy_head_put(&head, &head_len, &head_cap,
		    "Transfer-Encoding: chunked\r\n", 28);
	if (!req->keep_alive)
		proxy_head_put(
		    &head, &head_len, &head_cap, "Connection: close\r\n", 19);
	else if (req->http10)
		proxy_head_put(&head, &head_len, &head_cap,
		    "Connection: keep-alive\r\n", 24);
	proxy_head_put(&head, &head_len, &head_cap, "\r\n", 2);
	evbuffer_add(out, head, head_len);
	if (head != stack)
		free(head);
	req->resp_committed = 1;
	req->t_first_byte_us = req->last_byte_us = now_us();
	histogram_observe(&rt.metrics.first_byte[req->route],
	    (req->t_first_byte_us - req->t_start_us) / 1e6);
	if (rt.cfg->stream_idle_timeout > 0)
		proxy_timer_start(req, rt.cfg->stream_idle_timeout);
	else
		proxy_timer_stop(req);
	if (!has_body || (req->resp_has_length && req->resp_length == 0))
		proxy_resp_complete(req);
}

static void
proxy_parse_status(struct proxy_req *req, const char *line, size_t len)
{
	const char *p = memchr(line, ' ', len), *end = line + len;
	size_t n;

	req->status = 0;
	req->reason[0] = '\0';
	if (p == NULL)
		return;
	while (p < end && *p == ' ')
		p++;
	while (p < end && *p >= '0' && *p <= '9')
		req->status = req->status * 10 + (*p++ - '0');
	while (p < end && *p == ' ')
		p++;
	while (end > p && (end[-1] == '\r' || end[-1] == '\n'))
		end--;
	n = (size_t)(end - p) < sizeof req->reason ? (size_t)(end - p)
	                                           : sizeof req->reason - 1;
	memcpy(req->reason, p, n);
	req->reason[n] = '\0';
}

static size_t
proxy_header_cb(void *arg, const char *buf, size_t len)
{
	struct proxy_req *req = arg;
	struct http_head *rh = &req->client->resp_head;
	struct header_ref *r;
	size_t nlen;
	const char *colon, *v, *end;
	uint32_t i;

	if (req->resp_committed || req->state == PROXY_DONE)
		return len; /* trailers: not ours to forward */
	if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
		proxy_parse_status(req, buf, len);
		head_reset(rh);
		return len;
	}
	if (buf[0] == '\r' || buf[0] == '\n') {
		/* 1xx heads are interim: the real one follows. */
		if (req->status < 200)
			return len;
		/* Framed two ways, the answer's end is ambiguous (RFC 9112
		 * 6.3): refuse it, and aborting the transfer closes that
		 * upstream connection, whose framing cannot be trusted. */
		if (head_get(rh, "transfer-encoding", NULL) != NULL &&
		    head_get(rh, "content-length", NULL) != NULL) {
			req->bad_framing = 1;
			return 0;
		}
		if (retry_status(rt.cfg, req->status) && proxy_can_retry(req)) {
			/* Nothing goes to the client: this answer is
			 * replaced by the next attempt's. */
			req->retry_pending = 1;
			req->retry_delay = retry_after(rt.cfg,
			    head_get(rh, "retry-after", NULL),
			    retry_backoff(rt.cfg, req->attempts));
			return len;
		}
		proxy_commit_head(req);
		return len;
	}
	colon = memchr(buf, ':', len);
	if (colon == NULL || colon == buf || buf[0] == ' ' || buf[0] == '\t')
		return len; /* not a header line we can forward faithfully */
	nlen = colon - buf;
	v = colon + 1;
	end = buf + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v &&
	    (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' ||
	        end[-1] == '\t'))
		end--;
	i = head_add_header(rh);
	r = &rh->hdrs[i];
	r->name = head_append(rh, buf, nlen);
	r->name_len = nlen;
	head_end_string(rh);
	head_name_done(rh, i);
	r->value = head_append(rh, v, end - v);
	r->value_len = end - v;
	head_end_string(rh);
	return len;
}

static size_t
proxy_write_cb(void *arg, const char *data, size_t len)
{
	struct proxy_req *req = arg;
	struct client_conn *cc = req->client;
	struct evbuffer *out;
	struct evbuffer_iovec vec;
	char chunk[24], *p;
	int n;

	if (req->state == PROXY_DONE || req->head_only)
		return len;
	if (req->retry_pending) {
		req->discarded += len;
		return req->discarded > PROXY_DISCARD_MAX ? 0 : len;
	}
	if (!req->resp_committed)
		proxy_commit_head(req);
	out = client_output(cc);
	/* Backpressure: a slow reader holds at most max_buffer of ours. */
	if (evbuffer_get_length(out) >= rt.cfg->max_buffer) {
		req->recv_paused = 1;
		return XFER_PAUSE;
	}
	if (req->resp_chunked) {
		/* Size line, data and CRLF in one reservation: one copy, one
		 * round of output callbacks. */
		n = snprintf(chunk, sizeof chunk, "%zx\r\n", len);
		if (evbuffer_reserve_space(out, n + len + 2, &vec, 1) == 1) {
			p = vec.iov_base;
			memcpy(p, chunk, n);
			memcpy(p + n, data, len);
			memcpy(p + n + len, "\r\n", 2);
			vec.iov_len = n + len + 2;
			evbuffer_commit_space(out, &vec, 1);
		} else {
			evbuffer_add(out, chunk, n);
			evbuffer_add(out, data, len);
			evbuffer_add(out, "\r\n", 2);
		}
	} else
		evbuffer_add(out, data, len);
	req->resp_received += len;
	rt.metrics.bytes_out += len;
	if (req->status == 200)
		tokscan_feed(&req->tokens, data, len);
	if (rt.cfg->stream_idle_timeout > 0)
		req->last_byte_us = now_us();
	if (req->resp_has_length && req->resp_received >= req->resp_length)
		proxy_resp_complete(req);
	return len;
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
static int
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
