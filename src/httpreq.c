/*
 * The request parser: a strict RFC 9112 reader of request heads and bodies.
 * The rest of the proxy sees only struct httpreq and its callbacks.
 *
 * Over connections shared by every client any leniency in framing is
 * request smuggling, so every byte of it is decided here, the way nginx
 * and HAProxy decide it: chunk extensions and trailers by RFC 9112's
 * grammar too, not skipped as "anything up to CRLF".  The method table and
 * the request target's forms (origin and absolute) are ours as well.
 * The limits come from the caller, so the test fake parses with it too.
 *
 * Bytes are read one state at a time, so a request may arrive split
 * anywhere; the parser pauses after each complete message, so pipelined
 * requests wait unparsed until the one before is answered.
 */
#include "config.h"

#include <string.h>
#include <strings.h>

#include "ollama-pool.h"

#define HTTPREQ_MAX_LINE 8192 /* request line; beyond it, 414 */
#define HTTPREQ_MAX_CHUNK_DIGITS 16 /* 2^64 - 1 at most */
#define HTTPREQ_MAX_CHUNK_LINE 4096 /* a chunk line's extensions; 400 */

enum httpreq_state {
	HR_START, /* before a request: empty lines allowed */
	HR_START_LF,
	HR_METHOD,
	HR_TARGET,
	HR_VERSION,
	HR_LINE_LF,
	HR_FIELD_START,
	HR_NAME,
	HR_OWS,
	HR_VALUE,
	HR_VALUE_LF,
	HR_END_LF,
	HR_BODY, /* Content-Length body */
	HR_CHUNK_SIZE,
	HR_CHUNK_EXT,
	HR_CHUNK_SIZE_LF,
	HR_CHUNK_DATA,
	HR_CHUNK_DATA_CR,
	HR_CHUNK_DATA_LF,
	HR_TRAILER_START,
	HR_TRAILER_NAME,
	HR_TRAILER_VALUE,
	HR_TRAILER_LF,
	HR_TRAILER_END_LF,
};

/* Within a chunk line, after the size: RFC 9112 7.1.1,
 * chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ). */
enum httpreq_ext_state {
	CE_SEMI, /* BWS seen: only more of it or ";" may follow */
	CE_NAME_START, /* after ";": BWS, then a token */
	CE_NAME,
	CE_NAME_END, /* BWS after the name: "=" or ";" must follow */
	CE_VALUE_START, /* after "=": BWS, then a token or quoted-string */
	CE_TOKEN,
	CE_QUOTED,
	CE_QUOTED_PAIR, /* after a backslash in a quoted-string */
	CE_VALUE_END, /* after a closing quote */
};

static const char *const httpreq_methods[METHOD_COUNT] = {
    [METHOD_GET] = "GET",
    [METHOD_HEAD] = "HEAD",
    [METHOD_POST] = "POST",
    [METHOD_PUT] = "PUT",
    [METHOD_DELETE] = "DELETE",
    [METHOD_PATCH] = "PATCH",
    [METHOD_OPTIONS] = "OPTIONS",
    [METHOD_CONNECT] = "CONNECT",
    [METHOD_TRACE] = "TRACE",
};

/* RFC 9110 tchar. */
static int
httpreq_is_tchar(unsigned char c)
{
	if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
	    (c >= 'A' && c <= 'Z'))
		return 1;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* field-vchar: VCHAR or obs-text; SP and HTAB inside a value. */
static int
httpreq_is_value_char(unsigned char c)
{
	return (c >= 0x21 && c != 0x7f) || c == ' ' || c == '\t';
}

static int
httpreq_hex(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The byte after a backslash in a quoted-pair (RFC 9110 5.6.4): HTAB,
 * SP, VCHAR, obs-text.  Less '"' and '\\', which the caller takes first,
 * it is qdtext too. */
static int
httpreq_is_qdtext(unsigned char c)
{
	return c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f);
}

void
httpreq_init(struct httpreq *hr, const struct httpreq_limits *lim,
    const struct httpreq_cb *cb, void *arg)
{
	memset(hr, 0, sizeof *hr);
	hr->limits = *lim;
	hr->cb = cb;
	hr->arg = arg;
	hr->state = HR_START;
}

/* New limits apply from the next byte on: the caller sets them before a
 * request begins (a reload's take effect with the next request). */
void
httpreq_set_limits(struct httpreq *hr, const struct httpreq_limits *lim)
{
	hr->limits = *lim;
}

void
httpreq_free(struct httpreq *hr)
{
	head_free(&hr->head);
}

static ssize_t
httpreq_fail(struct httpreq *hr, int status, const char *why)
{
	hr->error_status = status;
	hr->error = why;
	return -1;
}

const char *
httpreq_method_name(int m)
{
	return m >= 0 && m < METHOD_COUNT ? httpreq_methods[m] : NULL;
}

/* Method names are case-sensitive (RFC 9110 9.1): enum method, or -1 for
 * one we do not implement (501). */
int
httpreq_method_lookup(const char *name)
{
	int m;

	for (m = 0; m < METHOD_COUNT; m++)
		if (strcmp(name, httpreq_methods[m]) == 0)
			return m;
	return -1;
}

/* An absolute-form target's authority: reg-name, IP literal, port;
 * userinfo is an error (RFC 9110 4.2.4), an empty host too (4.2.1). */
static int
httpreq_authority_ok(const char *p, size_t len)
{
	size_t i;

	if (len == 0 || p[0] == ':')
		return 0;
	for (i = 0; i < len; i++)
		if (!((p[i] >= '0' && p[i] <= '9') ||
		        (p[i] >= 'a' && p[i] <= 'z') ||
		        (p[i] >= 'A' && p[i] <= 'Z') ||
		        strchr("-._~%!$&'()*+,;=:[]", p[i]) != NULL))
			return 0;
	return 1;
}

/*
 * The path and query to send upstream, from an origin-form target (as it
 * is) or an absolute-form one (http or https, any case: what follows the
 * authority, "/" when that is empty).  The host a client names is never
 * where the request goes.  Query bytes are kept as sent.  Returns an
 * allocated string, or NULL for any other form (asterisk, authority).
 */
char *
httpreq_target_path(const char *t, size_t len)
{
	size_t skip, end;
	char *out;

	if (len > 0 && t[0] == '/')
		return xstrndup(t, len);
	if (len >= 7 && strncasecmp(t, "http://", 7) == 0)
		skip = 7;
	else if (len >= 8 && strncasecmp(t, "https://", 8) == 0)
		skip = 8;
	else
		return NULL;
	for (end = skip; end < len && t[end] != '/' && t[end] != '?'; end++)
		;
	if (!httpreq_authority_ok(t + skip, end - skip))
		return NULL;
	if (end < len && t[end] == '/')
		return xstrndup(t + end, len - end);
	out = xmalloc(len - end + 2); /* "/" and "?query", or just "/" */
	out[0] = '/';
	memcpy(out + 1, t + end, len - end);
	out[len - end + 1] = '\0';
	return out;
}

/* Content-Length: 1*DIGIT, below 2^63; a list of equal values counts as
 * one (RFC 9110 8.6).  Returns 0 or -1. */
static int
httpreq_content_length(const char *v, size_t len, uint64_t *out, int *seen)
{
	size_t i = 0, start, digits;
	uint64_t n;

	for (;;) {
		while (i < len && (v[i] == ' ' || v[i] == '\t'))
			i++;
		start = i;
		n = 0;
		while (i < len && v[i] >= '0' && v[i] <= '9') {
			if (n > (UINT64_MAX / 2 - 9) / 10)
				return -1;
			n = n * 10 + (v[i++] - '0');
		}
		digits = i - start;
		while (i < len && (v[i] == ' ' || v[i] == '\t'))
			i++;
		if (digits == 0 || n > (uint64_t)INT64_MAX)
			return -1;
		if (*seen && n != *out)
			return -1;
		*out = n;
		*seen = 1;
		if (i == len)
			return 0;
		if (v[i++] != ',')
			return -1;
	}
}

/*
 * Transfer-Encoding: only "chunked", once, is ours to decode.  Returns 0,
 * or the status to answer: 400 for a malformed list, 501 for a coding we
 * do not implement.
 */
static int
httpreq_transfer_coding(const char *v, size_t len)
{
	size_t i = 0, start, end;
	int chunked = 0, other = 0;

	for (;;) {
		while (i < len && (v[i] == ' ' || v[i] == '\t'))
			i++;
		start = i;
		while (i < len && v[i] != ',')
			i++;
		end = i;
		while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
			end--;
		if (end == start)
			return 400; /* ",chunked", "chunked," */
		if (end - start == 7 &&
		    strncasecmp(v + start, "chunked", 7) == 0) {
			if (chunked++)
				return 400; /* "chunked, chunked" */
		} else if (chunked)
			return 501; /* "chunked, identity": chunked not last */
		else
			other = 1;
		if (i == len)
			break;
		i++;
	}
	return other ? 501 : 0;
}

/* Framing and the rules every request must meet, once the head is read. */
static ssize_t
httpreq_check_head(struct httpreq *hr)
{
	struct http_head *h = &hr->head;
	const struct header_ref *r;
	const char *name, *v;
	int hosts = 0, te = 0, cl_seen = 0, rc;
	uint32_t i;

	if (strncmp(hr->version, "HTTP/", 5) != 0 || hr->vlen != 8 ||
	    hr->version[5] < '0' || hr->version[5] > '9' ||
	    hr->version[6] != '.' || hr->version[7] < '0' ||
	    hr->version[7] > '9')
		return httpreq_fail(hr, 400, "malformed HTTP version");
	if (hr->version[5] != '1')
		return httpreq_fail(hr, 505, "only HTTP/1.x is supported");
	h->http_major = 1;
	/* A higher 1.x is served as 1.1 (RFC 9110 6.2). */
	h->http_minor = hr->version[7] == '0' ? 0 : 1;
	h->method = httpreq_method_lookup(head_str(h, hr->method_off));
	if (h->method < 0)
		return httpreq_fail(hr, 501, "request method not implemented");
	h->keep_alive = h->http_minor == 1;

	for (i = 0; i < h->nhdrs; i++) {
		r = &h->hdrs[i];
		name = h->buf + r->name;
		v = h->buf + r->value;
		if (r->name_len == 4 && strncasecmp(name, "host", 4) == 0)
			hosts++;
		else if (r->name_len == 17 &&
		    strncasecmp(name, "transfer-encoding", 17) == 0) {
			if (te++)
				return httpreq_fail(
				    hr, 400, "Transfer-Encoding sent twice");
			if ((rc = httpreq_transfer_coding(v, r->value_len)) !=
			    0)
				return httpreq_fail(hr, rc,
				    rc == 400 ? "malformed Transfer-Encoding"
				              : "transfer coding not "
				                "implemented (only chunked)");
			h->chunked = 1;
		} else if (r->name_len == 14 &&
		    strncasecmp(name, "content-length", 14) == 0) {
			if (httpreq_content_length(v, r->value_len,
			        &h->content_length, &cl_seen) != 0)
				return httpreq_fail(hr, 400,
				    "invalid or conflicting Content-Length");
			h->has_content_length = 1;
		} else if (r->name_len == 10 &&
		    strncasecmp(name, "connection", 10) == 0) {
			if (head_token_in_list(v, r->value_len, "close"))
				h->keep_alive = 0;
			else if (head_token_in_list(
			             v, r->value_len, "keep-alive"))
				h->keep_alive = 1;
		} else if (r->name_len == 6 &&
		    strncasecmp(name, "expect", 6) == 0) {
			if (r->value_len != 12 ||
			    strncasecmp(v, "100-continue", 12) != 0)
				return httpreq_fail(hr, 417,
				    "only Expect: 100-continue is supported");
			h->expect_continue = 1;
		}
	}
	if (h->http_minor == 1 && hosts != 1)
		return httpreq_fail(hr, 400,
		    hosts ? "more than one Host header"
		          : "HTTP/1.1 request without Host");
	if (hosts > 1)
		return httpreq_fail(hr, 400, "more than one Host header");
	if (te && h->http_minor == 0)
		return httpreq_fail(hr, 400, "Transfer-Encoding in HTTP/1.0");
	if (te && h->has_content_length)
		return httpreq_fail(
		    hr, 400, "both Content-Length and Transfer-Encoding");
	if (hr->limits.max_body > 0 && h->content_length > hr->limits.max_body)
		return httpreq_fail(hr, 413, "request body too large");
	if (!h->has_content_length)
		h->content_length = 0;
	return 0;
}

/* The head is complete: check it, hand it on, set up the body. */
static ssize_t
httpreq_head_done(struct httpreq *hr)
{
	struct http_head *h = &hr->head;

	if (httpreq_check_head(hr) < 0)
		return -1;
	hr->in_head = 0;
	hr->body_total = 0;
	if (hr->cb->on_head(hr->arg, h) != 0)
		return httpreq_fail(hr, 400, "request refused");
	if (h->chunked) {
		hr->state = HR_CHUNK_SIZE;
		hr->chunk_digits = 0;
		hr->chunk_line = 0;
		hr->body_left = 0;
	} else if (h->content_length > 0) {
		hr->state = HR_BODY;
		hr->body_left = h->content_length;
	} else
		hr->state = HR_START; /* complete: the caller finishes it */
	return 0;
}

/* Returns 1 when parsing should stop here (paused). */
static int
httpreq_message_done(struct httpreq *hr)
{
	hr->state = HR_START;
	if (hr->cb->on_complete(hr->arg))
		return 0;
	hr->paused = 1;
	return 1;
}

static ssize_t
httpreq_body_bytes(struct httpreq *hr, const char *p, size_t n)
{
	hr->body_total += n;
	if (hr->limits.max_body > 0 && hr->body_total > hr->limits.max_body)
		return httpreq_fail(hr, 413, "request body too large");
	if (hr->cb->on_body(hr->arg, p, n) != 0)
		return httpreq_fail(hr, 400, "request body refused");
	return 0;
}

/* One byte of a chunk extension, by its grammar (see CE_*).  Extensions
 * are ignored, but they count against the body's limit: a client cannot
 * send megabytes of them for free (CVE-2024-22019 in Node). */
static ssize_t
httpreq_chunk_ext(struct httpreq *hr, unsigned char c)
{
	int ws = c == ' ' || c == '\t', tc = httpreq_is_tchar(c);
	int end = c == '\r';

	if (!end && ++hr->chunk_line > HTTPREQ_MAX_CHUNK_LINE)
		return httpreq_fail(hr, 400, "chunk line too long");
	if (!end && hr->limits.max_body > 0 &&
	    ++hr->body_total > hr->limits.max_body)
		return httpreq_fail(hr, 413, "request body too large");
	switch (hr->ext_state) {
	case CE_SEMI:
		if (c == ';')
			hr->ext_state = CE_NAME_START;
		else if (!ws)
			return httpreq_fail(hr, 400, "malformed chunk size");
		return 0;
	case CE_NAME_START:
		if (tc)
			hr->ext_state = CE_NAME;
		else if (!ws)
			return httpreq_fail(
			    hr, 400, "chunk extension without a name");
		return 0;
	case CE_NAME:
		if (tc)
			return 0;
		if (end) {
			hr->state = HR_CHUNK_SIZE_LF;
			return 0;
		}
		/* FALLTHROUGH */
	case CE_NAME_END:
		if (c == '=')
			hr->ext_state = CE_VALUE_START;
		else if (c == ';')
			hr->ext_state = CE_NAME_START;
		else if (ws)
			hr->ext_state = CE_NAME_END;
		else
			break;
		return 0;
	case CE_VALUE_START:
		if (c == '"')
			hr->ext_state = CE_QUOTED;
		else if (tc)
			hr->ext_state = CE_TOKEN;
		else if (!ws)
			return httpreq_fail(
			    hr, 400, "chunk extension without a value");
		return 0;
	case CE_QUOTED:
		if (c == '"')
			hr->ext_state = CE_VALUE_END;
		else if (c == '\\')
			hr->ext_state = CE_QUOTED_PAIR;
		else if (!httpreq_is_qdtext(c))
			break;
		return 0;
	case CE_QUOTED_PAIR:
		if (!httpreq_is_qdtext(c))
			break;
		hr->ext_state = CE_QUOTED;
		return 0;
	case CE_TOKEN:
		if (tc)
			return 0;
		/* FALLTHROUGH */
	case CE_VALUE_END:
		if (c == ';')
			hr->ext_state = CE_NAME_START;
		else if (ws)
			hr->ext_state = CE_SEMI;
		else if (end)
			hr->state = HR_CHUNK_SIZE_LF;
		else
			break;
		return 0;
	}
	return httpreq_fail(hr, 400, "malformed chunk extension");
}

/* One byte of a trailer line after its first: the name's tchars up to
 * ":", then a field value (CR ends it; HR_TRAILER_LF wants the LF). */
static ssize_t
httpreq_trailer_byte(struct httpreq *hr, unsigned char c)
{
	if (hr->state == HR_TRAILER_NAME) {
		if (c == ':')
			hr->state = HR_TRAILER_VALUE;
		else if (!httpreq_is_tchar(c))
			return httpreq_fail(hr, 400,
			    c == '\r' ? "trailer line without a colon"
			              : "invalid byte in trailer name");
		return 0;
	}
	if (c == '\r')
		hr->state = HR_TRAILER_LF;
	else if (!httpreq_is_value_char(c))
		return httpreq_fail(hr, 400,
		    c == '\n' ? "bare LF" : "invalid byte in trailer value");
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
	struct http_head *h = &hr->head;
	struct header_ref *r;
	size_t i = 0, run;
	unsigned char c;
	uint32_t n;
	int d;

	while (i < len && !hr->paused) {
		c = (unsigned char)data[i];
		if (hr->in_head && ++hr->head_bytes > hr->limits.max_head)
			return httpreq_fail(
			    hr, 431, "request header fields too large");
		switch (hr->state) {
		case HR_START:
			if (c == '\r') {
				hr->state = HR_START_LF;
				break;
			}
			if (!httpreq_is_tchar(c))
				return httpreq_fail(
				    hr, 400, "malformed request line");
			head_reset(h);
			hr->head_bytes = 1;
			hr->vlen = 0;
			hr->in_head = 1;
			hr->method_off = 0;
			if (hr->cb->on_begin != NULL)
				hr->cb->on_begin(hr->arg);
			head_append(h, (const char *)&c, 1);
			hr->state = HR_METHOD;
			break;
		case HR_START_LF:
			if (c != '\n')
				return httpreq_fail(hr, 400, "bare CR");
			hr->state = HR_START;
			break;
		case HR_METHOD:
			if (c == ' ') {
				head_end_string(h);
				h->target = h->len;
				hr->state = HR_TARGET;
			} else if (httpreq_is_tchar(c) && h->len < 32)
				head_append(h, (const char *)&c, 1);
			else
				return httpreq_fail(
				    hr, 400, "malformed request method");
			break;
		case HR_TARGET:
			if (c == ' ') {
				if (h->target_len == 0)
					return httpreq_fail(
					    hr, 400, "empty request target");
				head_end_string(h);
				hr->state = HR_VERSION;
				break;
			}
			if (c <= 0x20 || c >= 0x7f)
				return httpreq_fail(
				    hr, 400, "invalid byte in request target");
			/* RFC 9112 3.2: no fragment; curl would cut it, and
			 * the path sent would not be the one checked. */
			if (c == '#')
				return httpreq_fail(hr, 400,
				    "fragment not allowed in request target");
			for (run = i;
			     run < len && (unsigned char)data[run] > 0x20 &&
			     (unsigned char)data[run] < 0x7f &&
			     data[run] != '#';
			     run++)
				;
			head_append(h, data + i, run - i);
			h->target_len += run - i;
			hr->head_bytes += run - i - 1;
			if (hr->head_bytes > HTTPREQ_MAX_LINE)
				return httpreq_fail(
				    hr, 414, "request target too long");
			if (hr->head_bytes > hr->limits.max_head)
				return httpreq_fail(
				    hr, 431, "request header fields too large");
			i = run;
			continue;
		case HR_VERSION:
			if (c == '\r') {
				hr->state = HR_LINE_LF;
				break;
			}
			if (hr->vlen == sizeof hr->version - 1)
				return httpreq_fail(
				    hr, 400, "malformed HTTP version");
			hr->version[hr->vlen++] = c;
			hr->version[hr->vlen] = '\0';
			break;
		case HR_LINE_LF:
			if (c != '\n')
				return httpreq_fail(hr, 400, "bare CR");
			hr->state = HR_FIELD_START;
			break;
		case HR_FIELD_START:
			if (c == '\r') {
				hr->state = HR_END_LF;
				break;
			}
			if (c == ' ' || c == '\t')
				return httpreq_fail(
				    hr, 400, "obsolete line folding");
			if (!httpreq_is_tchar(c))
				return httpreq_fail(hr, 400,
				    c == '\n' ? "bare LF"
				              : "invalid byte in header name");
			if (h->nhdrs == hr->limits.max_fields)
				return httpreq_fail(
				    hr, 431, "too many header fields");
			n = head_add_header(h);
			r = &h->hdrs[n];
			r->name = head_append(h, (const char *)&c, 1);
			r->name_len = 1;
			hr->state = HR_NAME;
			break;
		case HR_NAME:
			r = &h->hdrs[h->nhdrs - 1];
			if (c == ':') {
				head_end_string(h);
				head_name_done(h, h->nhdrs - 1);
				r->value = h->len;
				hr->state = HR_OWS;
			} else if (httpreq_is_tchar(c)) {
				head_append(h, (const char *)&c, 1);
				r->name_len++;
			} else
				return httpreq_fail(hr, 400,
				    c == '\r' ? "header line without a colon"
				              : "invalid byte in header name");
			break;
		case HR_OWS:
			if (c == ' ' || c == '\t')
				break;
			if (c == '\r') {
				head_end_string(h);
				hr->state = HR_VALUE_LF;
				break;
			}
			hr->state = HR_VALUE;
			/* FALLTHROUGH */
		case HR_VALUE:
			r = &h->hdrs[h->nhdrs - 1];
			if (c == '\r') {
				while (r->value_len > 0 &&
				    (h->buf[r->value + r->value_len - 1] ==
				            ' ' ||
				        h->buf[r->value + r->value_len - 1] ==
				            '\t')) {
					r->value_len--;
					h->len--;
				}
				head_end_string(h);
				hr->state = HR_VALUE_LF;
				break;
			}
			if (!httpreq_is_value_char(c))
				return httpreq_fail(hr, 400,
				    c == '\n' ? "bare LF"
				              : "invalid byte in header value");
			for (run = i; run < len &&
			     httpreq_is_value_char((unsigned char)data[run]);
			     run++)
				;
			head_append(h, data + i, run - i);
			r->value_len += run - i;
			hr->head_bytes += run - i - 1;
			if (hr->head_bytes > hr->limits.max_head)
				return httpreq_fail(
				    hr, 431, "request header fields too large");
			i = run;
			continue;
		case HR_VALUE_LF:
			if (c != '\n')
				return httpreq_fail(hr, 400, "bare CR");
			hr->state = HR_FIELD_START;
			break;
		case HR_END_LF:
			if (c != '\n')
				return httpreq_fail(hr, 400, "bare CR");
			i++;
			if (httpreq_head_done(hr) < 0)
				return -1;
			if (hr->state == HR_START && httpreq_message_done(hr))
				return (ssize_t)i;
			continue;
		case HR_BODY:
			run = len - i < hr->body_left ? len - i : hr->body_left;
			if (httpreq_body_bytes(hr, data + i, run) < 0)
				return -1;
			hr->body_left -= run;
			i += run;
			if (hr->body_left == 0 && httpreq_message_done(hr))
				return (ssize_t)i;
			continue;
		case HR_CHUNK_SIZE:
			if ((d = httpreq_hex(c)) >= 0) {
				if (++hr->chunk_digits >
				    HTTPREQ_MAX_CHUNK_DIGITS)
					return httpreq_fail(
					    hr, 400, "chunk size too long");
				hr->body_left = hr->body_left * 16 + d;
				break;
			}
			if (hr->chunk_digits == 0)
				return httpreq_fail(
				    hr, 400, "malformed chunk size");
			if (c == '\r') {
				hr->state = HR_CHUNK_SIZE_LF;
				break;
			}
			hr->state = HR_CHUNK_EXT;
			hr->ext_state = CE_SEMI;
			/* FALLTHROUGH */
		case HR_CHUNK_EXT:
			if (httpreq_chunk_ext(hr, c) < 0)
				return -1;
			break;
		case HR_CHUNK_SIZE_LF:
			if (c != '\n')
				return httpreq_fail(hr, 400, "bare CR");
			hr->chunk_line = hr->chunk_digits = 0;
			hr->state =
			    hr->body_left ? HR_CHUNK_DATA : HR_TRAILER_START;
			break;
		case HR_CHUNK_DATA:
			run = len - i < hr->body_left ? len - i : hr->body_left;
			if (httpreq_body_bytes(hr, data + i, run) < 0)
				return -1;
			hr->body_left -= run;
			i += run;
			if (hr->body_left == 0)
				hr->state = HR_CHUNK_DATA_CR;
			continue;
		case HR_CHUNK_DATA_CR:
			if (c != '\r')
				return httpreq_fail(
				    hr, 400, "chunk data longer than its size");
			hr->state = HR_CHUNK_DATA_LF;
			break;
		case HR_CHUNK_DATA_LF:
			if (c != '\n')
				return httpreq_fail(hr, 400, "bare CR");
			hr->state = HR_CHUNK_SIZE;
			break;
		case HR_TRAILER_START:
			/* Trailers are read and dropped: curl frames the body
			 * upstream, and a trailer is no place for a header
			 * to sneak in.  They must still be well formed:
			 * field-name ":" OWS field-value OWS. */
			if (c == '\r') {
				hr->state = HR_TRAILER_END_LF;
				break;
			}
			if (!httpreq_is_tchar(c))
				return httpreq_fail(hr, 400,
				    c == ' ' || c == '\t'
				        ? "whitespace before a trailer name"
				        : "invalid byte in trailer name");
			hr->state = HR_TRAILER_NAME;
			/* FALLTHROUGH */
		case HR_TRAILER_NAME:
		case HR_TRAILER_VALUE:
			if (++hr->trailer_bytes > hr->limits.max_head)
				return httpreq_fail(
				    hr, 431, "trailer fields too large");
			if (httpreq_trailer_byte(hr, c) < 0)
				return -1;
			break;
		case HR_TRAILER_LF:
			if (c != '\n')
				return httpreq_fail(hr, 400, "bare CR");
			hr->state = HR_TRAILER_START;
			break;
		case HR_TRAILER_END_LF:
			if (c != '\n')
				return httpreq_fail(hr, 400, "bare CR");
			i++;
			hr->trailer_bytes = 0;
			if (httpreq_message_done(hr))
				return (ssize_t)i;
			continue;
		}
		i++;
	}
	return (ssize_t)i;
}

/* Stops httpreq_feed after the current byte, from inside a callback: the
 * caller feeds the rest later, or never (the test fake's faults). */
void
httpreq_pause(struct httpreq *hr)
{
	hr->paused = 1;
}

void
httpreq_resume(struct httpreq *hr)
{
	hr->paused = 0;
}
