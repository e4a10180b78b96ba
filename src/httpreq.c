/*
 * The request parser.  The rest of the proxy sees only struct httpreq and
 * its three callbacks, so the engine underneath (nodejs http-parser 2.9
 * today) can be swapped for llhttp without touching client.c.
 */
#include "config.h"

#include <string.h>
#include <strings.h>

#include "ollama-pool.h"

/* More headers than any real client sends; beyond it, 431. */
#define HTTPREQ_MAX_HEADERS 100

static int httpreq_on_message_begin(http_parser *);
static int httpreq_on_url(http_parser *, const char *, size_t);
static int httpreq_on_header_field(http_parser *, const char *, size_t);
static int httpreq_on_header_value(http_parser *, const char *, size_t);
static int httpreq_on_headers_complete(http_parser *);
static int httpreq_on_body(http_parser *, const char *, size_t);
static int httpreq_on_message_complete(http_parser *);

static const http_parser_settings httpreq_settings = {
	.on_message_begin = httpreq_on_message_begin,
	.on_url = httpreq_on_url,
	.on_header_field = httpreq_on_header_field,
	.on_header_value = httpreq_on_header_value,
	.on_headers_complete = httpreq_on_headers_complete,
	.on_body = httpreq_on_body,
	.on_message_complete = httpreq_on_message_complete,
};

void
httpreq_set_max_header_size(size_t size)
{
	http_parser_set_max_header_size((uint32_t)size);
}

void
httpreq_init(struct httpreq *hr, const struct httpreq_cb *cb, void *arg)
{
	memset(hr, 0, sizeof *hr);
	http_parser_init(&hr->parser, HTTP_REQUEST);
	hr->parser.data = hr;
	hr->cb = cb;
	hr->arg = arg;
}

void
httpreq_free(struct httpreq *hr)
{
	head_free(&hr->head);
}

static int
httpreq_fail(struct httpreq *hr, int status, const char *why)
{
	hr->error_status = status;
	hr->error = why;
	return -1;
}

static int
httpreq_on_message_begin(http_parser *p)
{
	struct httpreq *hr = p->data;

	head_reset(&hr->head);
	hr->in_value = 0;
	hr->nfields = 0;
	hr->in_head = 1;
	if (hr->cb->on_begin != NULL)
		hr->cb->on_begin(hr->arg);
	return 0;
}

static int
httpreq_on_url(http_parser *p, const char *at, size_t len)
{
	struct httpreq *hr = p->data;
	uint32_t off = head_append(&hr->head, at, len);

	if (hr->head.target_len == 0)
		hr->head.target = off;
	hr->head.target_len += len;
	return 0;
}

static int
httpreq_on_header_field(http_parser *p, const char *at, size_t len)
{
	struct httpreq *hr = p->data;
	struct http_head *h = &hr->head;
	struct header_ref *r;
	uint32_t off;

	if (hr->nfields == 0 || hr->in_value) {
		head_end_string(h); /* the target, or the previous value */
		if (h->nhdrs == HTTPREQ_MAX_HEADERS)
			return httpreq_fail(hr, 431, "too many header fields");
		head_add_header(h);
		hr->nfields++;
		hr->in_value = 0;
	}
	r = &h->hdrs[h->nhdrs - 1];
	off = head_append(h, at, len);
	if (r->name_len == 0)
		r->name = off;
	r->name_len += len;
	return 0;
}

static int
httpreq_on_header_value(http_parser *p, const char *at, size_t len)
{
	struct httpreq *hr = p->data;
	struct http_head *h = &hr->head;
	struct header_ref *r = &h->hdrs[h->nhdrs - 1];
	uint32_t off;

	if (!hr->in_value) {
		head_end_string(h); /* the name */
		hr->in_value = 1;
		r->value = h->len;
	}
	off = head_append(h, at, len);
	if (r->value_len == 0)
		r->value = off;
	r->value_len += len;
	return 0;
}

static int
httpreq_on_headers_complete(http_parser *p)
{
	struct httpreq *hr = p->data;
	struct http_head *h = &hr->head;
	struct header_ref *r;
	uint32_t i;

	head_end_string(h);
	hr->in_head = 0;
	if (hr->nfields > 0 && !hr->in_value) {
		/* A name with no value at all: give it an empty one. */
		r = &h->hdrs[h->nhdrs - 1];
		r->value = h->len - 1;
	}
	h->method = p->method;
	h->http_major = p->http_major;
	h->http_minor = p->http_minor;
	h->keep_alive = http_should_keep_alive(p);
	h->chunked = (p->flags & F_CHUNKED) != 0;
	h->has_content_length = (p->flags & F_CONTENTLENGTH) != 0;
	h->content_length = h->has_content_length ? p->content_length : 0;
	for (i = 0; i < h->nhdrs; i++) {
		r = &h->hdrs[i];
		if (r->name_len == 6 &&
		    strncasecmp(h->buf + r->name, "expect", 6) == 0 &&
		    r->value_len == 12 &&
		    strncasecmp(h->buf + r->value, "100-continue", 12) == 0)
			h->expect_continue = 1;
	}
	if (hr->cb->on_head(hr->arg, h) != 0)
		return httpreq_fail(hr, 400, "request refused");
	return 0;
}

static int
httpreq_on_body(http_parser *p, const char *at, size_t len)
{
	struct httpreq *hr = p->data;

	return hr->cb->on_body(hr->arg, at, len);
}

static int
httpreq_on_message_complete(http_parser *p)
{
	struct httpreq *hr = p->data;

	if (hr->cb->on_complete(hr->arg))
		return 0; /* the answer is out already: read on */
	/* Stop here until this request is answered: pipelined requests
	 * behind it wait in the input buffer, so answers go out in order. */
	http_parser_pause(p, 1);
	hr->paused = 1;
	return 0;
}

/*
 * Feeds bytes to the parser.  Returns how many were consumed (fewer than
 * given when a message completed and the parser paused), or -1 with
 * error_status and error set.
 */
ssize_t
httpreq_feed(struct httpreq *hr, const char *data, size_t len)
{
	size_t n;
	enum http_errno e;

	n = http_parser_execute(&hr->parser, &httpreq_settings, data, len);
	e = HTTP_PARSER_ERRNO(&hr->parser);
	if (e == HPE_OK || e == HPE_PAUSED) {
		if (hr->parser.upgrade)
			return httpreq_fail(hr, 400,
			    "protocol upgrades are not supported");
		return (ssize_t)n;
	}
	if (hr->error_status != 0)
		return -1;
	if (e == HPE_HEADER_OVERFLOW)
		return httpreq_fail(hr, 431, "request header fields too large");
	if (e == HPE_INVALID_METHOD)
		return httpreq_fail(hr, 400, "unknown request method");
	hr->error_status = 400;
	hr->error = http_errno_description(e);
	return -1;
}

void
httpreq_resume(struct httpreq *hr)
{
	hr->paused = 0;
	http_parser_pause(&hr->parser, 0);
}
