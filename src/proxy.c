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

#include <event2/buffer.h>

#include "ollama-pool.h"

static size_t proxy_header_cb(char *, size_t, size_t, void *);
static size_t proxy_write_cb(char *, size_t, size_t, void *);
static size_t proxy_read_cb(char *, size_t, size_t, void *);
static void proxy_transfer_done(struct up_handle *, CURLcode);

/* Takes the request target in origin form, or the path of an absolute
 * form: the host a client names is never where the request goes. */
static char *
proxy_target_path(const char *target, size_t len)
{
	struct http_parser_url u;
	const char *p;
	char *out;
	size_t plen, qlen;

	if (len > 0 && target[0] == '/')
		return xstrndup(target, len);
	http_parser_url_init(&u);
	if (len == 0 || http_parser_parse_url(target, len, 0, &u) != 0 ||
	    !(u.field_set & (1 << UF_SCHEMA)))
		return NULL;
	if (!(u.field_set & (1 << UF_PATH)))
		return xstrdup("/");
	p = target + u.field_data[UF_PATH].off;
	plen = u.field_data[UF_PATH].len;
	qlen = (u.field_set & (1 << UF_QUERY)) ?
	    u.field_data[UF_QUERY].len + 1 : 0;
	out = xmalloc(plen + qlen + 1);
	memcpy(out, p, plen + qlen);
	out[plen + qlen] = '\0';
	return out;
}

struct proxy_req *
proxy_req_new(struct client_conn *cc, struct http_head *h)
{
	struct proxy_req *req = xcalloc(1, sizeof *req);
	const char *m = http_method_str((enum http_method)h->method);

	req->client = cc;
	req->head = h;
	req->state = PROXY_NEW;
	snprintf(req->method, sizeof req->method, "%s", m);
	req->path = proxy_target_path(head_str(h, h->target), h->target_len);
	req->head_only = h->method == HTTP_HEAD;
	req->keep_alive = h->keep_alive != 0;
	req->http10 = h->http_major == 1 && h->http_minor == 0;
	if (req->path != NULL) {
		req->openai = strncmp(req->path, "/v1/", 4) == 0;
		req->admin = admin_is_admin_path(req->path, strlen(req->path));
	}
	req->post_mode = h->chunked || h->content_length > 0 ||
	    h->method == HTTP_POST || h->method == HTTP_PUT ||
	    h->method == HTTP_PATCH;
	if (req->post_mode)
		req->body = evbuffer_new();
	else
		req->body_done = 1;
	req->t_start_us = now_us();
	return req;
}

void
proxy_req_free(struct proxy_req *req)
{
	if (req->state == PROXY_QUEUED)
		upstream_dequeue(req->up, req);
	if (req->handle != NULL)
		upstream_handle_release(req->handle);
	if (req->probe != NULL)
		upstream_probe_cancel(req->probe);
	curl_slist_free_all(req->hdrs);
	if (req->body != NULL)
		evbuffer_free(req->body);
	free(req->path);
	free(req);
}

static void
proxy_log_access(struct proxy_req *req, int status)
{
	uint64_t now;

	if (!log_enabled(LOG_LVL_INFO))
		return;
	now = now_us();
	log_info("%s \"%s %s\" %d %" PRIu64 " bytes, first byte %.3f s, "
		 "total %.3f s",
	    req->client->peer, req->method, req->path ? req->path : "-",
	    status, req->resp_received,
	    req->t_first_byte_us ?
		(req->t_first_byte_us - req->t_start_us) / 1e6 : 0.0,
	    (now - req->t_start_us) / 1e6);
}

/* Answers with an error of our own; once a response has begun, the only
 * honest signal left is closing the connection short of its end. */
void
proxy_req_fail(struct proxy_req *req, int status, int retry_after,
    const char *fmt, ...)
{
	struct response_opts o;
	char msg[1024];
	va_list ap;

	if (req->state == PROXY_DONE)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	req->state = PROXY_DONE;
	if (req->resp_committed) {
		log_warn("%s %s: %s; closing the client connection",
		    req->method, req->path, msg);
		client_response_done(req->client, 0);
		return;
	}
	if (status >= 500)
		log_warn("%s %s: %d %s", req->method,
		    req->path ? req->path : "-", status, msg);
	memset(&o, 0, sizeof o);
	o.status = status;
	o.keep_alive = req->keep_alive && status != 400;
	o.http10 = req->http10;
	o.head_only = req->head_only;
	o.openai = req->openai;
	o.retry_after = retry_after;
	response_error(client_output(req->client), &o, msg);
	proxy_log_access(req, status);
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
	o.keep_alive = req->keep_alive;
	o.http10 = req->http10;
	o.head_only = req->head_only;
	o.content_type = ctype;
	response_write(client_output(req->client), &o, body, len);
	req->state = PROXY_DONE;
	proxy_log_access(req, status);
	client_response_done(req->client, o.keep_alive);
}

void
proxy_req_start(struct proxy_req *req)
{
	if (req->path == NULL) {
		proxy_req_fail(req, 400, 0,
		    "request target must be a path such as /api/generate");
		return;
	}
	if (req->head->method == HTTP_CONNECT ||
	    req->head->method == HTTP_TRACE) {
		proxy_req_fail(req, 405, 0, "method %s is not allowed",
		    req->method);
		return;
	}
	if (req->admin) {
		admin_handle(req);
		return;
	}
	req->up = upstream_select(req);
	if (upstream_submit(req->up, req) != 0)
		proxy_req_fail(req, 503, 1,
		    "queue full: %d requests already wait for one of the %d "
		    "connections to upstream %s",
		    req->up->queued, req->up->pool_maxsize, req->up->url.base);
}

void
proxy_req_begin_transfer(struct proxy_req *req)
{
	struct up_handle *h = upstream_handle_get(req->up, 1);
	struct http_head *head = req->head;
	CURL *e = h->easy;
	char *url;

	h->owner = req;
	h->on_done = proxy_transfer_done;
	req->handle = h;
	req->state = PROXY_RUNNING;

	xasprintf(&url, "%s%s", req->up->url.base, req->path);
	curl_easy_setopt(e, CURLOPT_URL, url);
	free(url);
	req->hdrs = headers_to_curl(head, req->post_mode);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->hdrs);
	if (req->post_mode) {
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(e, CURLOPT_READFUNCTION, proxy_read_cb);
		curl_easy_setopt(e, CURLOPT_READDATA, req);
		/* -1 makes curl chunk the body, as the client did. */
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
		    head->chunked ? (curl_off_t)-1 :
				    (curl_off_t)head->content_length);
		if (head->method != HTTP_POST)
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
	} else if (req->head_only)
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	else if (head->method != HTTP_GET)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, proxy_header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, proxy_write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, req);
	if (upstream_handle_start(h) != 0) {
		upstream_handle_release(h);
		req->handle = NULL;
		proxy_req_fail(req, 500, 0, "cannot start upstream transfer");
	}
}

int
proxy_req_wants_body(const struct proxy_req *req)
{
	return req->body == NULL ||
	    evbuffer_get_length(req->body) < rt.cfg->max_buffer;
}

int
proxy_req_committed(const struct proxy_req *req)
{
	return req->resp_committed;
}

static void
proxy_unpause(struct proxy_req *req)
{
	int mask = 0;

	if (req->handle == NULL)
		return;
	if (req->recv_paused)
		mask |= CURLPAUSE_RECV;
	if (req->send_paused)
		mask |= CURLPAUSE_SEND;
	curl_easy_pause(req->handle->easy, mask);
}

void
proxy_req_body(struct proxy_req *req, const char *data, size_t len)
{
	evbuffer_add(req->body, data, len);
	if (req->send_paused) {
		req->send_paused = 0;
		proxy_unpause(req);
	}
}

void
proxy_req_body_end(struct proxy_req *req)
{
	req->body_done = 1;
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
	proxy_log_access(req, (int)req->status);
	client_response_done(req->client, req->keep_alive);
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
	    (req->body != NULL && evbuffer_get_length(req->body) > 0))
		proxy_finish(req);
}

static void
proxy_commit_head(struct proxy_req *req)
{
	struct client_conn *cc = req->client;
	struct http_head *rh = &cc->resp_head;
	struct evbuffer *out = client_output(cc);
	const struct header_ref *r;
	const char *cl, *name;
	char *end;
	size_t cllen;
	uint32_t i;
	int has_body;

	has_body = !req->head_only && response_status_has_body(req->status);
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

	evbuffer_add_printf(out, "HTTP/1.1 %ld %s\r\n", req->status,
	    req->reason[0] ? req->reason : response_reason((int)req->status));
	for (i = 0; i < rh->nhdrs; i++) {
		if (!headers_response_keep(rh, i))
			continue;
		r = &rh->hdrs[i];
		name = rh->buf + r->name;
		evbuffer_add(out, name, r->name_len);
		evbuffer_add(out, ": ", 2);
		evbuffer_add(out, rh->buf + r->value, r->value_len);
		evbuffer_add(out, "\r\n", 2);
	}
	if (req->resp_chunked)
		evbuffer_add(out, "Transfer-Encoding: chunked\r\n", 28);
	if (!req->keep_alive)
		evbuffer_add(out, "Connection: close\r\n", 19);
	else if (req->http10)
		evbuffer_add(out, "Connection: keep-alive\r\n", 24);
	evbuffer_add(out, "\r\n", 2);
	req->resp_committed = 1;
	req->t_first_byte_us = now_us();
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
	n = (size_t)(end - p) < sizeof req->reason ? (size_t)(end - p) :
						       sizeof req->reason - 1;
	memcpy(req->reason, p, n);
	req->reason[n] = '\0';
}

static size_t
proxy_header_cb(char *buf, size_t size, size_t nitems, void *arg)
{
	struct proxy_req *req = arg;
	struct http_head *rh = &req->client->resp_head;
	struct header_ref *r;
	size_t len = size * nitems, nlen;
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
		if (req->status >= 200)
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
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' ||
			      end[-1] == ' ' || end[-1] == '\t'))
		end--;
	i = head_add_header(rh);
	r = &rh->hdrs[i];
	r->name = head_append(rh, buf, nlen);
	r->name_len = nlen;
	head_end_string(rh);
	r->value = head_append(rh, v, end - v);
	r->value_len = end - v;
	head_end_string(rh);
	return len;
}

static size_t
proxy_write_cb(char *data, size_t size, size_t nitems, void *arg)
{
	struct proxy_req *req = arg;
	struct client_conn *cc = req->client;
	struct evbuffer *out;
	size_t len = size * nitems;
	char chunk[24];
	int n;

	if (req->state == PROXY_DONE || req->head_only)
		return len;
	if (!req->resp_committed)
		proxy_commit_head(req);
	out = client_output(cc);
	/* Backpressure: a slow reader holds at most max_buffer of ours. */
	if (evbuffer_get_length(out) >= rt.cfg->max_buffer) {
		req->recv_paused = 1;
		return CURL_WRITEFUNC_PAUSE;
	}
	if (req->resp_chunked) {
		n = snprintf(chunk, sizeof chunk, "%zx\r\n", len);
		evbuffer_add(out, chunk, n);
		evbuffer_add(out, data, len);
		evbuffer_add(out, "\r\n", 2);
	} else
		evbuffer_add(out, data, len);
	req->resp_received += len;
	if (req->resp_has_length && req->resp_received >= req->resp_length)
		proxy_resp_complete(req);
	return len;
}

static size_t
proxy_read_cb(char *buf, size_t size, size_t nitems, void *arg)
{
	struct proxy_req *req = arg;
	int n;

	if (req->state == PROXY_DONE)
		return CURL_READFUNC_ABORT;
	n = evbuffer_remove(req->body, buf, size * nitems);
	if (n > 0) {
		if (evbuffer_get_length(req->body) < rt.cfg->max_buffer / 2)
			client_body_drained(req->client);
		return n;
	}
	if (req->body_done)
		return 0;
	req->send_paused = 1;
	return CURL_READFUNC_PAUSE;
}

static int
proxy_error_status(CURLcode rc)
{
	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT:
		return 504;
	default:
		return 502;
	}
}

static void
proxy_transfer_done(struct up_handle *h, CURLcode rc)
{
	struct proxy_req *req = h->owner;
	char errbuf[CURL_ERROR_SIZE];

	snprintf(errbuf, sizeof errbuf, "%s",
	    h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc));
	req->handle = NULL;
	upstream_handle_release(h);

	if (req->state == PROXY_DONE)
		return;
	if (req->resp_committed) {
		if (rc == CURLE_OK || req->resp_complete)
			proxy_finish(req);
		else
			proxy_req_fail(req, 502, 0,
			    "upstream %s failed mid-response: %s",
			    req->up->url.base, errbuf);
		return;
	}
	if (rc == CURLE_OK)
		proxy_req_fail(req, 502, 0,
		    "upstream %s closed the connection without a response",
		    req->up->url.base);
	else
		proxy_req_fail(req, proxy_error_status(rc), 0,
		    "upstream %s: %s", req->up->url.base, errbuf);
}
