/*
 * Request ids and the proxy's name in Via (RFC 9110 7.6.3).
 *
 * A client's X-Request-Id is kept when it is sane: one such header, of 1
 * to REQID_MAX visible ASCII characters.  Otherwise the proxy makes one:
 * 16 hex digits, a bijective mix of a per-process random seed and a
 * counter, so ids never repeat within a process and differ between
 * processes.  Exactly one X-Request-Id goes upstream.
 *
 * The Via pseudonym, ollama-pool-XXXXXXXX, is random, made at start: the
 * same for the life of the process (reloads included), different for two
 * proxies on one machine, and it says nothing about the host.  A request
 * whose Via already holds it has been here before: a loop.
 */
#include "config.h"

#include <sys/random.h>

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "ollama-pool.h"

/* splitmix64's finaliser: a bijection on 64 bits. */
static uint64_t
reqid_mix(uint64_t x)
{
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* Start-up: the seed of the ids and the Via pseudonym. */
void
reqid_init(void)
{
	uint64_t r[2];
	struct timespec ts;

	if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
		/* Early boot without entropy yet: unique enough. */
		clock_gettime(CLOCK_REALTIME, &ts);
		r[0] = reqid_mix(
		    (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec);
		r[1] = reqid_mix(r[0] ^ (uint64_t)getpid());
	}
	rt.reqid_seed = r[0];
	rt.reqid_next = 0;
	snprintf(rt.via_name, sizeof rt.via_name, OP_NAME "-%08x",
	    (unsigned)(r[1] & 0xffffffffu));
}

void
reqid_make(char *out, size_t len)
{
	/* An odd step keeps seed + n * step a bijection of n. */
	uint64_t x = rt.reqid_seed + rt.reqid_next++ * 0x9e3779b97f4a7c15ULL;

	snprintf(out, len, "%016llx", (unsigned long long)reqid_mix(x));
}

/* 1 to REQID_MAX visible ASCII characters. */
int
reqid_sane(const char *v, size_t len)
{
	size_t i;

	if (len == 0 || len > REQID_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if ((unsigned char)v[i] < 0x21 || (unsigned char)v[i] > 0x7e)
			return 0;
	return 1;
}

/*
 * The request's id, into out (at least REQID_MAX + 1 bytes): the client's
 * when it sent exactly one sane X-Request-Id, else a new one.  h may be
 * NULL (nothing parsed yet).  Returns 1 when the client's was kept.
 */
int
reqid_assign(const struct http_head *h, char *out, size_t len)
{
	const struct header_ref *r, *found = NULL;
	uint32_t i, n = 0;

	for (i = 0; h != NULL && i < h->nhdrs; i++) {
		r = &h->hdrs[i];
		if (r->name_len == 12 &&
		    strncasecmp(h->buf + r->name, "x-request-id", 12) == 0) {
			found = r;
			n++;
		}
	}
	if (n == 1 && found->value_len < len &&
	    reqid_sane(h->buf + found->value, found->value_len)) {
		memcpy(out, h->buf + found->value, found->value_len);
		out[found->value_len] = '\0';
		return 1;
	}
	reqid_make(out, len);
	return 0;
}

/* Is the received-by of one Via element (len bytes at p) our name? */
static int
reqid_via_element_is_us(const char *p, size_t len)
{
	size_t i = 0, start, nlen = strlen(rt.via_name);

	while (i < len && (p[i] == ' ' || p[i] == '\t'))
		i++;
	while (i < len && p[i] != ' ' && p[i] != '\t') /* protocol */
		i++;
	while (i < len && (p[i] == ' ' || p[i] == '\t'))
		i++;
	start = i;
	while (i < len && p[i] != ' ' && p[i] != '\t') /* received-by */
		i++;
	return i - start == nlen &&
	    strncasecmp(p + start, rt.via_name, nlen) == 0;
}

/*
 * Has this request passed through us already?  Every Via header's every
 * element is looked at; the header that names us is copied into via (for
 * the warning).  Returns 1 on a loop.
 */
int
reqid_via_loops(const struct http_head *h, char *via, size_t vialen)
{
	const struct header_ref *r;
	const char *v;
	size_t i, start;
	uint32_t k;

	for (k = 0; k < h->nhdrs; k++) {
		r = &h->hdrs[k];
		if (r->name_len != 3 || strncasecmp(h->buf + r->name, "via", 3))
			continue;
		v = h->buf + r->value;
		for (i = 0; i <= r->value_len; i = start) {
			start = i;
			while (i < r->value_len && v[i] != ',')
				i++;
			if (reqid_via_element_is_us(v + start, i - start)) {
				snprintf(
				    via, vialen, "%.*s", (int)r->value_len, v);
				return 1;
			}
			start = i + 1;
		}
	}
	return 0;
}

/* Our Via: the client's elements first, then ours; its length alone when
 * out is NULL. */
static size_t
reqid_via_line(const struct http_head *h, char *out)
{
	const struct header_ref *r;
	size_t len = 5, nlen = strlen(rt.via_name);
	uint32_t k;

	if (out != NULL)
		memcpy(out, "Via: ", 5);
	for (k = 0; k < h->nhdrs; k++) {
		r = &h->hdrs[k];
		if (r->name_len != 3 ||
		    strncasecmp(h->buf + r->name, "via", 3) != 0 ||
		    r->value_len == 0)
			continue;
		if (out != NULL) {
			memcpy(out + len, h->buf + r->value, r->value_len);
			memcpy(out + len + r->value_len, ", ", 2);
		}
		len += r->value_len + 2;
	}
	if (out != NULL) {
		memcpy(out + len, "1.1 ", 4);
		memcpy(out + len + 4, rt.via_name, nlen);
	}
	return len + 4 + nlen;
}

/* What reqid_to_curl() adds, for sizing the list. */
size_t
reqid_curl_room(const struct http_head *h, const char *rid)
{
	return headers_list_room(14 + strlen(rid)) +
	    headers_list_room(reqid_via_line(h, NULL));
}

/*
 * Adds what the proxy says upstream about itself to the list
 * headers_to_curl() made (which drops the client's X-Request-Id and Via):
 * the request id, and Via with the client's elements first, then ours.
 */
void
reqid_to_curl(struct hdr_list *l, const struct http_head *h, const char *rid)
{
	size_t rlen = strlen(rid);
	char *line;

	line = headers_list_add(l, 14 + rlen);
	memcpy(line, "X-Request-Id: ", 14);
	memcpy(line + 14, rid, rlen);
	reqid_via_line(h, headers_list_add(l, reqid_via_line(h, NULL)));
}
