/*
 * libFuzzer target: the request parser and the header filter, as the
 * front door runs them.  Input is split in two at a point taken from its
 * first byte, so requests arriving in pieces are covered too.  Every head
 * that parses goes through headers_to_curl(), and the invariants that keep
 * a pooled connection safe are checked: a body never exceeds its declared
 * length, and no CR or LF ever reaches an upstream header line.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "ollama-pool.h"

struct fuzz_state {
	struct http_head *head;
	uint64_t body;
	int complete;
};

/* What goes upstream is a path: it starts with "/", holds no fragment, and
 * is the end of the target (the query kept byte for byte), after the "/"
 * an absolute form without a path gets. */
static void
fuzz_target(const char *t, size_t len)
{
	char *path = httpreq_target_path(t, len);
	size_t plen;

	if (strchr(t, '#') != NULL || memchr(t, '\0', len) != NULL)
		abort(); /* the parser refuses both */
	if (path == NULL)
		return;
	plen = strlen(path);
	if (path[0] != '/' || plen == 0)
		abort();
	if (t[0] == '/' && (plen != len || memcmp(path, t, len) != 0))
		abort();
	/* "/p?q" is the target's last bytes; "/?q" is "/" and them. */
	if (t[0] != '/' &&
	    (plen > len ||
	        memcmp(path + 1, t + len - (plen - 1), plen - 1) != 0))
		abort();
	free(path);
}

static int
fuzz_on_head(void *arg, struct http_head *h)
{
	struct fuzz_state *st = arg;
	struct curl_slist *n;
	struct hdr_list hl;

	st->head = h;
	st->body = 0;
	memset(&hl, 0, sizeof hl);
	headers_to_curl(
	    &hl, h, h->chunked || h->content_length > 0, 1, "fuzz-request-id",
	    "Authorization: Bearer fuzz");
	for (n = hl.first; n != NULL; n = n->next)
		if (strpbrk(n->data, "\r\n") != NULL)
			abort();
	headers_list_free(&hl);
	headers_token_ok(h, "token-a token-b");
	fuzz_target(head_str(h, h->target), h->target_len);
	return 0;
}

static int
fuzz_on_body(void *arg, const char *p, size_t n)
{
	struct fuzz_state *st = arg;

	st->body += n;
	if (!st->head->chunked && st->body > st->head->content_length)
		abort();
	return 0;
}

static int
fuzz_on_complete(void *arg)
{
	struct fuzz_state *st = arg;

	st->complete++;
	return 1; /* read on: pipelined requests too */
}

static const struct httpreq_cb fuzz_cb = {
    .on_head = fuzz_on_head,
    .on_body = fuzz_on_body,
    .on_complete = fuzz_on_complete,
};

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct httpreq_limits lim = {32768, 1 << 20, 100};
	struct fuzz_state st;
	struct httpreq hr;
	size_t cut;
	ssize_t n;

	if (size == 0)
		return 0;
	cut = data[0] % size;
	data++;
	size--;
	if (cut > size)
		cut = size;
	memset(&st, 0, sizeof st);
	httpreq_init(&hr, &lim, &fuzz_cb, &st);
	n = httpreq_feed(&hr, (const char *)data, cut);
	if (n >= 0 && (size_t)n == cut)
		httpreq_feed(&hr, (const char *)data + cut, size - cut);
	httpreq_free(&hr);
	return 0;
}
