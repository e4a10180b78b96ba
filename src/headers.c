/*
 * The request head as parsed, kept in one arena per connection (reused
 * from request to request), and the hop-by-hop rules of RFC 9110 7.6.1.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ollama-pool.h"

void
head_reset(struct http_head *h)
{
	h->len = 0;
	h->nhdrs = 0;
	h->nconnection = 0;
	h->target = h->target_len = 0;
	h->method = 0;
	h->http_major = h->http_minor = 0;
	h->keep_alive = 0;
	h->chunked = 0;
	h->has_content_length = 0;
	h->content_length = 0;
	h->expect_continue = 0;
}

void
head_free(struct http_head *h)
{
	free(h->buf);
	free(h->hdrs);
	memset(h, 0, sizeof *h);
}

/*
 * Appends bytes, keeping a NUL after them that is not counted, so pieces of
 * one field arriving in several reads join up; head_end_string() keeps the
 * NUL as the field's terminator.  Returns where the bytes went.
 */
uint32_t
head_append(struct http_head *h, const char *p, size_t n)
{
	uint32_t off = h->len;

	if (h->len + n + 1 > h->cap) {
		h->cap = h->cap ? h->cap : 512;
		while (h->len + n + 1 > h->cap)
			h->cap *= 2;
		h->buf = xrealloc(h->buf, h->cap);
	}
	memcpy(h->buf + h->len, p, n);
	h->len += n;
	h->buf[h->len] = '\0';
	return off;
}

void
head_end_string(struct http_head *h)
{
	head_append(h, "", 0);
	h->len++;
}

uint32_t
head_add_header(struct http_head *h)
{
	if (h->nhdrs == h->hdrs_cap) {
		h->hdrs_cap = h->hdrs_cap ? h->hdrs_cap * 2 : 16;
		h->hdrs = xrealloc(h->hdrs, h->hdrs_cap * sizeof *h->hdrs);
	}
	memset(&h->hdrs[h->nhdrs], 0, sizeof h->hdrs[0]);
	return h->nhdrs++;
}

/* Called once a header's name is complete. */
void
head_name_done(struct http_head *h, uint32_t i)
{
	if (h->hdrs[i].name_len == 10 &&
	    strncasecmp(h->buf + h->hdrs[i].name, "connection", 10) == 0)
		h->nconnection++;
}

const char *
head_str(const struct http_head *h, uint32_t off)
{
	return h->buf + off;
}

/* First value of a header, or NULL. */
const char *
head_get(const struct http_head *h, const char *name, size_t *len)
{
	size_t nlen = strlen(name);
	uint32_t i;

	for (i = 0; i < h->nhdrs; i++) {
		if (h->hdrs[i].name_len == nlen &&
		    strncasecmp(h->buf + h->hdrs[i].name, name, nlen) == 0) {
			if (len != NULL)
				*len = h->hdrs[i].value_len;
			return h->buf + h->hdrs[i].value;
		}
	}
	return NULL;
}

/* Is the token (case-insensitive, tlen bytes) an element of the comma list
 * in value?  No copy and no length limit: a token of any length is found. */
int
head_list_has(const char *value, size_t len, const char *token, size_t tlen)
{
	size_t i = 0, start, end;

	while (i < len) {
		while (i < len &&
		    (value[i] == ' ' || value[i] == '\t' || value[i] == ','))
			i++;
		start = i;
		while (i < len && value[i] != ',')
			i++;
		end = i;
		while (end > start &&
		    (value[end - 1] == ' ' || value[end - 1] == '\t'))
			end--;
		if (end - start == tlen &&
		    strncasecmp(value + start, token, tlen) == 0)
			return 1;
	}
	return 0;
}

int
head_token_in_list(const char *value, size_t len, const char *token)
{
	return head_list_has(value, len, token, strlen(token));
}

int
headers_is_hop_by_hop(const char *name, size_t len)
{
	/* By length first: this runs for every header of every message. */
	switch (len) {
	case 2:
		return strncasecmp(name, "te", 2) == 0;
	case 7:
		return strncasecmp(name, "trailer", 7) == 0 ||
		    strncasecmp(name, "upgrade", 7) == 0;
	case 10:
		return strncasecmp(name, "connection", 10) == 0 ||
		    strncasecmp(name, "keep-alive", 10) == 0;
	case 16:
		return strncasecmp(name, "proxy-connection", 16) == 0;
	case 17:
		return strncasecmp(name, "transfer-encoding", 17) == 0;
	case 18:
		return strncasecmp(name, "proxy-authenticate", 18) == 0;
	case 19:
		return strncasecmp(name, "proxy-authorization", 19) == 0;
	default:
		return 0;
	}
}

/* Is this header named by one of the message's Connection headers?  The
 * name is matched in place, whatever its length. */
int
headers_named_by_connection(
    const struct http_head *h, const char *name, size_t len)
{
	uint32_t i;

	if (h->nconnection == 0)
		return 0;
	for (i = 0; i < h->nhdrs; i++) {
		if (h->hdrs[i].name_len == 10 &&
		    strncasecmp(h->buf + h->hdrs[i].name, "connection", 10) ==
		        0 &&
		    head_list_has(h->buf + h->hdrs[i].value,
		        h->hdrs[i].value_len, name, len))
			return 1;
	}
	return 0;
}

/*
 * Lines for curl in one block together with their curl_slist nodes.  curl
 * only reads a CURLOPT_HTTPHEADER list, never frees or keeps it past the
 * transfer, so the block is ours to free whole: one allocation per
 * request, where curl_slist_append() makes two per line (node and copy).
 * The block is sized first (headers_list_room() per line), then filled.
 */
size_t
headers_list_room(size_t len)
{
	return sizeof(struct curl_slist) + len + 1 + sizeof(void *);
}

char *
headers_list_add(struct hdr_list *l, size_t len)
{
	size_t at = (l->used + sizeof(void *) - 1) & ~(sizeof(void *) - 1);
	struct curl_slist *n;

	if (at + sizeof *n + len + 1 > l->cap)
		abort(); /* sized too small: a bug in the sizing */
	n = (struct curl_slist *)(void *)(l->mem + at);
	n->data = l->mem + at + sizeof *n;
	n->next = NULL;
	n->data[len] = '\0';
	if (l->last != NULL)
		l->last->next = n;
	else
		l->first = n;
	l->last = n;
	l->used = at + sizeof *n + len + 1;
	return n->data;
}

static void
headers_list_addstr(struct hdr_list *l, const char *s)
{
	size_t len = strlen(s);

	memcpy(headers_list_add(l, len), s, len);
}

void
headers_list_free(struct hdr_list *l)
{
	free(l->mem);
	memset(l, 0, sizeof *l);
}

/* Is request header i forwarded as the client sent it? */
static int
headers_forwarded(const struct http_head *h, uint32_t i, int drop_auth)
{
	const struct header_ref *r = &h->hdrs[i];
	const char *name = h->buf + r->name;

	return !(headers_is_hop_by_hop(name, r->name_len) ||
	    headers_named_by_connection(h, name, r->name_len) ||
	    (r->name_len == 4 && strncasecmp(name, "host", 4) == 0) ||
	    (r->name_len == 14 &&
	        strncasecmp(name, "content-length", 14) == 0) ||
	    (r->name_len == 6 && strncasecmp(name, "expect", 6) == 0) ||
	    (r->name_len == 12 && strncasecmp(name, "x-request-id", 12) == 0) ||
	    (r->name_len == 3 && strncasecmp(name, "via", 3) == 0) ||
	    (r->name_len == 21 &&
	        (strncasecmp(name, "x-ollama-pool-backend", 21) == 0 ||
	            strncasecmp(name, "x-ollama-pool-session", 21) == 0)) ||
	    (drop_auth && r->name_len == 13 &&
	        strncasecmp(name, "authorization", 13) == 0));
}

/* "Name: value"; curl drops "Name:", and "Name;" is its spelling of an
 * empty value. */
static void
headers_list_copy(struct hdr_list *l, const struct http_head *h, uint32_t i)
{
	const struct header_ref *r = &h->hdrs[i];
	char *line;

	if (r->value_len == 0) {
		line = headers_list_add(l, r->name_len + 1);
		memcpy(line, h->buf + r->name, r->name_len);
		line[r->name_len] = ';';
		return;
	}
	line = headers_list_add(l, r->name_len + 2 + r->value_len);
	memcpy(line, h->buf + r->name, r->name_len);
	line[r->name_len] = ':';
	line[r->name_len + 1] = ' ';
	memcpy(line + r->name_len + 2, h->buf + r->value, r->value_len);
}

/*
 * The header list libcurl sends upstream, into l.  Host, Content-Length
 * and Transfer-Encoding are never copied: curl writes Host from the
 * upstream URL (Ollama answers 403 to a Host it does not trust) and frames
 * the body itself.  Empty "Name:" entries switch off headers curl would
 * add of its own accord, so the upstream sees what the client sent and no
 * more.  X-Request-Id and Via are left out too: with a request id,
 * reqid_to_curl() adds the ones the proxy sends in their place.
 */
void
headers_to_curl(struct hdr_list *l, const struct http_head *h, int post_mode,
    int drop_auth, const char *rid, const char *auth)
{
	const struct header_ref *r;
	int saw_accept = 0, saw_ctype = 0;
	size_t room = 3 * headers_list_room(sizeof "Content-Type:");
	uint32_t i;

	for (i = 0; i < h->nhdrs; i++)
		room += headers_list_room(
		    h->hdrs[i].name_len + 2 + h->hdrs[i].value_len);
	if (rid != NULL)
		room += reqid_curl_room(h, rid);
	/* A backend's own token replaces whatever the client sent. */
	if (auth != NULL) {
		room += headers_list_room(strlen(auth));
		drop_auth = 1;
	}
	memset(l, 0, sizeof *l);
	l->mem = xmalloc(room);
	l->cap = room;
	for (i = 0; i < h->nhdrs; i++) {
		r = &h->hdrs[i];
		if (!headers_forwarded(h, i, drop_auth))
			continue;
		if (r->name_len == 6 &&
		    strncasecmp(h->buf + r->name, "accept", 6) == 0)
			saw_accept = 1;
		if (r->name_len == 12 &&
		    strncasecmp(h->buf + r->name, "content-type", 12) == 0)
			saw_ctype = 1;
		headers_list_copy(l, h, i);
	}
	if (!saw_accept)
		headers_list_addstr(l, "Accept:");
	if (post_mode && !saw_ctype)
		headers_list_addstr(l, "Content-Type:");
	headers_list_addstr(l, "Expect:");
	if (auth != NULL)
		headers_list_addstr(l, auth);
	if (rid != NULL)
		reqid_to_curl(l, h, rid);
}

/*
 * Should response header i from the upstream reach the client?  Framing is
 * ours to decide per client connection, so of it only Content-Length
 * survives, and the caller decides about that one.
 */
int
headers_response_keep(const struct http_head *resp, uint32_t i)
{
	const struct header_ref *r = &resp->hdrs[i];
	const char *name = resp->buf + r->name;

	return !headers_is_hop_by_hop(name, r->name_len) &&
	    !headers_named_by_connection(resp, name, r->name_len);
}

/* Constant time over the candidate's length: how much of a token matched
 * must not show in how long the answer took. */
static int
headers_token_equal(const char *a, size_t alen, const char *b, size_t blen)
{
	unsigned char diff = alen != blen;
	size_t i;

	for (i = 0; i < alen; i++)
		diff |= (unsigned char)a[i] ^
		    (unsigned char)b[i % (blen ? blen : 1)];
	return diff == 0 && blen > 0;
}

/*
 * Does the request carry "Authorization: Bearer <t>" for one of the space
 * separated tokens?  Every token is compared, matched or not.
 */
int
headers_token_ok(const struct http_head *h, const char *tokens)
{
	const char *v, *t, *end;
	size_t vlen, tlen;
	int ok = 0;

	v = head_get(h, "authorization", &vlen);
	if (v == NULL || vlen < 7 || strncasecmp(v, "Bearer ", 7) != 0)
		return 0;
	v += 7;
	vlen -= 7;
	for (t = tokens; *t != '\0'; t = end) {
		while (*t == ' ' || *t == ',')
			t++;
		end = t + strcspn(t, " ,");
		tlen = end - t;
		if (tlen > 0)
			ok |= headers_token_equal(v, vlen, t, tlen);
	}
	return ok;
}
