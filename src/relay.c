/*
 * A backend's answer relayed to the client: its status line and headers
 * read as curl hands them over, the head rebuilt for the client (framing
 * is ours per connection, hop-by-hop headers dropped, our X-Request-Id),
 * then the body, chunk-encoded when it has no length, with backpressure:
 * a slow reader holds at most max_buffer of ours and pauses the
 * transfer.  An answer that will be retried goes nowhere.
 *
 * These run inside curl (through backend.c's transfer interface): they
 * write to the client's output buffer and set flags, nothing more.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "ollama-pool.h"

/* A retried answer's body is read and dropped to keep the connection; a
 * bigger one is not worth it. */
#define RELAY_DISCARD_MAX (64 * 1024)
/* Response heads up to this size are built without allocating. */
#define RELAY_HEAD_STACK 4096

/* Appends to the head being built, on the stack until it outgrows it. */
static void
relay_head_put(char **head, size_t *len, size_t *cap, const char *p, size_t n)
{
	char *grown;

	if (*len + n > *cap) {
		grown = xmalloc(*cap * 2 + n);
		memcpy(grown, *head, *len);
		if (*cap > RELAY_HEAD_STACK)
			free(*head);
		*head = grown;
		*cap = *cap * 2 + n;
	}
	memcpy(*head + *len, p, n);
	*len += n;
}

static void
relay_commit_head(struct proxy_req *req)
{
	struct client_conn *cc = req->client;
	struct http_head *rh = &cc->resp_head;
	struct evbuffer *out = client_output(cc);
	const struct header_ref *r;
	char stack[RELAY_HEAD_STACK], *head = stack, line[128];
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
	relay_head_put(&head, &head_len, &head_cap, line, n);
	for (i = 0; i < rh->nhdrs; i++) {
		r = &rh->hdrs[i];
		if (!headers_response_keep(rh, i) ||
		    (r->name_len == 12 &&
		        strncasecmp(rh->buf + r->name, "x-request-id", 12) ==
		            0))
			continue;
		relay_head_put(&head, &head_len, &head_cap, rh->buf + r->name,
		    r->name_len);
		relay_head_put(&head, &head_len, &head_cap, ": ", 2);
		relay_head_put(&head, &head_len, &head_cap, rh->buf + r->value,
		    r->value_len);
		relay_head_put(&head, &head_len, &head_cap, "\r\n", 2);
	}
	relay_head_put(&head, &head_len, &head_cap, "X-Request-Id: ", 14);
	relay_head_put(&head, &head_len, &head_cap, req->request_id,
	    strlen(req->request_id));
	relay_head_put(&head, &head_len, &head_cap, "\r\n", 2);
	if (req->resp_chunked)
		relay_head_put(&head, &head_len, &head_cap,
		    "Transfer-Encoding: chunked\r\n", 28);
	if (!req->keep_alive)
		relay_head_put(
		    &head, &head_len, &head_cap, "Connection: close\r\n", 19);
	else if (req->http10)
		relay_head_put(&head, &head_len, &head_cap,
		    "Connection: keep-alive\r\n", 24);
	relay_head_put(&head, &head_len, &head_cap, "\r\n", 2);
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
relay_parse_status(struct proxy_req *req, const char *line, size_t len)
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

size_t
relay_header_cb(void *arg, const char *buf, size_t len)
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
		relay_parse_status(req, buf, len);
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
		if (retry_status(rt.cfg, req->status, rt.cfg->fleet) &&
		    proxy_can_retry(req)) {
			/* Nothing goes to the client: this answer is
			 * replaced by the next attempt's. */
			req->retry_pending = 1;
			req->retry_delay = retry_after(rt.cfg,
			    head_get(rh, "retry-after", NULL),
			    retry_backoff(rt.cfg, req->attempts));
			return len;
		}
		relay_commit_head(req);
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

size_t
relay_data_cb(void *arg, const char *data, size_t len)
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
		return req->discarded > RELAY_DISCARD_MAX ? 0 : len;
	}
	if (!req->resp_committed)
		relay_commit_head(req);
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
