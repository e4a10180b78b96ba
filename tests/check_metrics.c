/*
 * Integration tests for the observability of ollama-pool (issue 6): the
 * Prometheus exposition at /ollama-pool/metrics, the JSON document at
 * /ollama-pool/stats and /ollama-pool/health, driven with known traffic
 * through the real daemon in front of the fake Ollama, and read back
 * exactly.
 *
 * Every scrape goes through a strict parser of the text format (0.0.4),
 * written here, so every test also checks the grammar of what it reads.
 * Waiting is always a bounded poll of a condition, never a sleep that
 * hopes something has happened.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sys/socket.h>
#include <sys/wait.h>

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <check.h>
#include <cjson/cJSON.h>

#include "harness.h"

#define MODEL "llama3.2:latest"
#define KNOWN_BLOB                                                             \
	"sha256:"                                                              \
	"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define METRICS_PATH "/ollama-pool/metrics"
#define STATS_PATH "/ollama-pool/stats"
#define HEALTH_PATH "/ollama-pool/health"
#define ADMIN_ROUTE "/ollama-pool"
#define WAIT_MS 10000

/* ==== a strict parser for the text exposition format 0.0.4 ============ */

/*
 * The grammar accepted, line by line (each ends in '\n', none is empty):
 *   # HELP name text            text escapes only \\ and \n
 *   # TYPE name counter|gauge|histogram
 *   name value
 *   name{label="value",...} value
 * with metric names [a-zA-Z_:][a-zA-Z0-9_:]*, label names
 * [a-zA-Z_][a-zA-Z0-9_]* not starting "__", label values valid UTF-8 with
 * only \\, \" and \n escaped, single spaces, no timestamps.  Each sample
 * belongs to a family with exactly one TYPE line before its first sample;
 * a family's lines form one group; counters end in _total and are never
 * negative; histograms have only _bucket{le}, _sum and _count samples,
 * buckets in increasing le, cumulative, ending in le="+Inf" equal to
 * _count, with _sum and _count present for every label set.
 */

enum prom_type { PT_NONE, PT_COUNTER, PT_GAUGE, PT_HISTOGRAM };

struct prom_label {
	char *name;
	char *value;
};

struct prom_sample {
	char *name;
	struct prom_label *labels;
	size_t nlabels;
	double value;
	size_t family;
	int line;
};

struct prom_family {
	char *name;
	enum prom_type type;
	int has_help;
	int has_type;
	size_t nsamples;
};

struct prom {
	struct prom_family *fam;
	size_t nfam, capfam;
	struct prom_sample *s;
	size_t ns, caps;
	char err[512];
	struct harness_buf text; /* the scrape, as received */
};

static void
prom_free(struct prom *p)
{
	size_t i, k;

	for (i = 0; i < p->ns; i++) {
		free(p->s[i].name);
		for (k = 0; k < p->s[i].nlabels; k++) {
			free(p->s[i].labels[k].name);
			free(p->s[i].labels[k].value);
		}
		free(p->s[i].labels);
	}
	for (i = 0; i < p->nfam; i++)
		free(p->fam[i].name);
	free(p->s);
	free(p->fam);
	harness_buf_free(&p->text);
	memset(p, 0, sizeof *p);
}

static void *
prom_grow(void *a, size_t *cap, size_t n, size_t size)
{
	void *q;

	if (n < *cap)
		return a;
	*cap = *cap ? *cap * 2 : 32;
	q = realloc(a, *cap * size);
	if (q == NULL)
		ck_abort_msg("out of memory");
	return q;
}

static char *
prom_strndup(const char *s, size_t n)
{
	char *d;

	d = strndup(s, n);
	if (d == NULL)
		ck_abort_msg("out of memory");
	return d;
}

static int
prom_err(
    struct prom *p, int line, const char *at, size_t len, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = snprintf(p->err, sizeof p->err, "line %d: ", line);
	vsnprintf(p->err + n, sizeof p->err - (size_t)n, fmt, ap);
	va_end(ap);
	if (at != NULL) {
		n = (int)strlen(p->err);
		snprintf(p->err + n, sizeof p->err - (size_t)n, ": \"%.*s\"",
		    (int)(len > 160 ? 160 : len), at);
	}
	return -1;
}

/* prom_err() for the label loop: the value buffer goes first. */
static int
prom_err_val(struct harness_buf *val, struct prom *p, int line, const char *at,
    size_t len, const char *msg)
{
	harness_buf_free(val);
	return prom_err(p, line, at, len, "%s", msg);
}

static int
prom_name_start(int c, int label)
{
	return isalpha(c) || c == '_' || (!label && c == ':');
}

static int
prom_name_char(int c, int label)
{
	return isalnum(c) || c == '_' || (!label && c == ':');
}

/* Length of the name at s (0 if none). */
static size_t
prom_name_len(const char *s, const char *end, int label)
{
	const char *q = s;

	if (q >= end || !prom_name_start((unsigned char)*q, label))
		return 0;
	for (q++; q < end && prom_name_char((unsigned char)*q, label); q++)
		;
	return (size_t)(q - s);
}

/* A float as Prometheus writes one: [+-]digits[.digits][e[+-]digits],
 * or +Inf, -Inf, NaN.  Nothing else, not even surrounding space. */
static int
prom_float(const char *s, size_t len, double *out)
{
	char buf[64], *end;
	size_t i = 0, digits = 0;

	if (len == 4 && memcmp(s, "+Inf", 4) == 0) {
		*out = INFINITY;
		return 0;
	}
	if (len == 4 && memcmp(s, "-Inf", 4) == 0) {
		*out = -INFINITY;
		return 0;
	}
	if (len == 3 && memcmp(s, "NaN", 3) == 0) {
		*out = NAN;
		return 0;
	}
	if (len == 0 || len >= sizeof buf)
		return -1;
	if (s[i] == '+' || s[i] == '-')
		i++;
	while (i < len && isdigit((unsigned char)s[i])) {
		i++;
		digits++;
	}
	if (i < len && s[i] == '.') {
		i++;
		while (i < len && isdigit((unsigned char)s[i])) {
			i++;
			digits++;
		}
	}
	if (digits == 0)
		return -1;
	if (i < len && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < len && (s[i] == '+' || s[i] == '-'))
			i++;
		digits = 0;
		while (i < len && isdigit((unsigned char)s[i])) {
			i++;
			digits++;
		}
		if (digits == 0)
			return -1;
	}
	if (i != len)
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	*out = strtod(buf, &end);
	return *end == '\0' ? 0 : -1;
}

static int
prom_utf8_valid(const unsigned char *s, size_t len)
{
	size_t i = 0, n, k;
	uint32_t cp;

	while (i < len) {
		if (s[i] < 0x80) {
			i++;
			continue;
		}
		if ((s[i] & 0xe0) == 0xc0) {
			n = 1;
			cp = s[i] & 0x1f;
		} else if ((s[i] & 0xf0) == 0xe0) {
			n = 2;
			cp = s[i] & 0x0f;
		} else if ((s[i] & 0xf8) == 0xf0) {
			n = 3;
			cp = s[i] & 0x07;
		} else
			return 0;
		for (k = 1; k <= n; k++) {
			if (i + k >= len || (s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		/* No overlong forms, surrogates or past U+10FFFF. */
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) ||
		    (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += n + 1;
	}
	return 1;
}

static struct prom_family *
prom_family_find(struct prom *p, const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < p->nfam; i++)
		if (strlen(p->fam[i].name) == len &&
		    memcmp(p->fam[i].name, name, len) == 0)
			return &p->fam[i];
	return NULL;
}

static struct prom_family *
prom_family_add(struct prom *p, const char *name, size_t len)
{
	struct prom_family *f;

	p->fam = prom_grow(p->fam, &p->capfam, p->nfam, sizeof *p->fam);
	f = &p->fam[p->nfam++];
	memset(f, 0, sizeof *f);
	f->name = prom_strndup(name, len);
	return f;
}

static int
prom_ends_with(const char *s, size_t len, const char *suffix)
{
	size_t n = strlen(suffix);

	return len > n && memcmp(s + len - n, suffix, n) == 0;
}

static const char *
prom_label_get(const struct prom_sample *s, const char *name)
{
	size_t i;

	for (i = 0; i < s->nlabels; i++)
		if (strcmp(s->labels[i].name, name) == 0)
			return s->labels[i].value;
	return NULL;
}

/* The label set, sorted by name, without "le", as one string. */
static char *
prom_group_key(const struct prom_sample *s, int with_le)
{
	struct harness_buf b = {NULL, 0, 0};
	const struct prom_label *sorted[64], *t;
	size_t n = 0, i, k;

	for (i = 0; i < s->nlabels && n < 64; i++)
		if (with_le || strcmp(s->labels[i].name, "le") != 0)
			sorted[n++] = &s->labels[i];
	for (i = 1; i < n; i++)
		for (k = i;
		     k > 0 && strcmp(sorted[k - 1]->name, sorted[k]->name) > 0;
		     k--) {
			t = sorted[k];
			sorted[k] = sorted[k - 1];
			sorted[k - 1] = t;
		}
	harness_buf_add(&b, "", 0);
	for (i = 0; i < n; i++) {
		harness_buf_add(&b, sorted[i]->name, strlen(sorted[i]->name));
		harness_buf_add(&b, "\x01", 1);
		harness_buf_add(&b, sorted[i]->value, strlen(sorted[i]->value));
		harness_buf_add(&b, "\x02", 1);
	}
	return b.data;
}

/* Parses one sample line (no newline); 0 or -1. */
static int
prom_sample_line(
    struct prom *p, int ln, const char *line, size_t len, size_t *cur)
{
	const char *q = line, *end = line + len, *v;
	struct prom_sample *s;
	struct prom_family *f;
	struct harness_buf val = {NULL, 0, 0};
	size_t n, i, base;
	const char *name;

	n = prom_name_len(q, end, 0);
	if (n == 0)
		return prom_err(p, ln, line, len, "bad metric name");
	name = q;
	q += n;
	p->s = prom_grow(p->s, &p->caps, p->ns, sizeof *p->s);
	s = &p->s[p->ns];
	memset(s, 0, sizeof *s);
	s->line = ln;
	s->name = prom_strndup(name, n);
	p->ns++;

	if (q < end && *q == '{') {
		q++;
		for (;;) {
			struct prom_label *l;

			n = prom_name_len(q, end, 1);
			if (n == 0)
				return prom_err_val(
				    &val, p, ln, line, len, "bad label name");
			if (n >= 2 && q[0] == '_' && q[1] == '_')
				return prom_err_val(&val, p, ln, line, len,
				    "reserved label name");
			for (i = 0; i < s->nlabels; i++)
				if (strlen(s->labels[i].name) == n &&
				    memcmp(s->labels[i].name, q, n) == 0)
					return prom_err_val(&val, p, ln, line,
					    len, "duplicate label name");
			s->labels = realloc(
			    s->labels, (s->nlabels + 1) * sizeof *s->labels);
			if (s->labels == NULL)
				ck_abort_msg("out of memory");
			l = &s->labels[s->nlabels++];
			l->name = prom_strndup(q, n);
			l->value = NULL;
			q += n;
			if (q + 1 >= end || q[0] != '=' || q[1] != '"')
				return prom_err_val(&val, p, ln, line, len,
				    "label name not followed by =\"");
			q += 2;
			val.len = 0;
			harness_buf_add(&val, "", 0);
			for (;;) {
				if (q >= end) {
					harness_buf_free(&val);
					return prom_err(p, ln, line, len,
					    "unterminated label value");
				}
				if (*q == '"')
					break;
				if (*q == '\\') {
					if (q + 1 >= end ||
					    (q[1] != '\\' && q[1] != '"' &&
					        q[1] != 'n')) {
						harness_buf_free(&val);
						return prom_err(p, ln, line,
						    len,
						    "bad escape in "
						    "label value");
					}
					harness_buf_add(&val,
					    q[1] == 'n' ? "\n" : q + 1, 1);
					q += 2;
					continue;
				}
				harness_buf_add(&val, q, 1);
				q++;
			}
			q++; /* the closing quote */
			if (!prom_utf8_valid(
			        (const unsigned char *)val.data, val.len)) {
				harness_buf_free(&val);
				return prom_err(p, ln, line, len,
				    "label value is not valid UTF-8");
			}
			l->value = prom_strndup(val.data, val.len);
			if (q < end && *q == ',') {
				q++;
				continue;
			}
			if (q < end && *q == '}') {
				q++;
				break;
			}
			harness_buf_free(&val);
			return prom_err(
			    p, ln, line, len, "label not followed by , or }");
		}
		harness_buf_free(&val);
	}
	if (q >= end || *q != ' ')
		return prom_err(
		    p, ln, line, len, "no single space before the value");
	q++;
	v = q;
	if (prom_float(v, (size_t)(end - v), &s->value) != 0)
		return prom_err(p, ln, line, len,
		    "value is not a number (or a timestamp follows)");

	/* Its family: the name itself, or a histogram's base name. */
	n = strlen(s->name);
	f = prom_family_find(p, s->name, n);
	if (f != NULL && f->type == PT_HISTOGRAM)
		return prom_err(p, ln, line, len,
		    "histogram %s has a sample "
		    "without _bucket, _sum or _count",
		    f->name);
	if (f == NULL) {
		base = 0;
		if (prom_ends_with(s->name, n, "_bucket"))
			base = n - 7;
		else if (prom_ends_with(s->name, n, "_sum"))
			base = n - 4;
		else if (prom_ends_with(s->name, n, "_count"))
			base = n - 6;
		if (base > 0)
			f = prom_family_find(p, s->name, base);
		if (f != NULL && f->type != PT_HISTOGRAM)
			f = NULL;
	}
	if (f == NULL || !f->has_type)
		return prom_err(
		    p, ln, line, len, "sample without a TYPE line before it");
	s->family = (size_t)(f - p->fam);
	if (f->nsamples > 0 && *cur != s->family)
		return prom_err(p, ln, line, len,
		    "samples of %s are not in one group", f->name);
	*cur = s->family;
	f->nsamples++;

	if (f->type == PT_COUNTER && (isnan(s->value) || s->value < 0))
		return prom_err(p, ln, line, len, "counter is negative");
	if (f->type == PT_HISTOGRAM) {
		const char *le = prom_label_get(s, "le");
		int bucket = prom_ends_with(s->name, n, "_bucket");
		double d;

		if (bucket && le == NULL)
			return prom_err(p, ln, line, len, "bucket without le");
		if (!bucket && le != NULL)
			return prom_err(
			    p, ln, line, len, "le on a _sum or _count");
		if (bucket && prom_float(le, strlen(le), &d) != 0)
			return prom_err(p, ln, line, len, "le is not a number");
		if ((bucket || prom_ends_with(s->name, n, "_count")) &&
		    (!(s->value >= 0) || s->value != floor(s->value)))
			return prom_err(p, ln, line, len,
			    "bucket or count is not a whole number");
	}
	/* The same series twice. */
	for (i = 0; i + 1 < p->ns; i++) {
		char *a, *b;
		int same;

		if (strcmp(p->s[i].name, s->name) != 0 ||
		    p->s[i].nlabels != s->nlabels)
			continue;
		a = prom_group_key(&p->s[i], 1);
		b = prom_group_key(s, 1);
		same = strcmp(a, b) == 0;
		free(a);
		free(b);
		if (same)
			return prom_err(
			    p, ln, line, len, "the same series twice");
	}
	return 0;
}

/* Buckets, sums and counts of every histogram add up. */
static int
prom_check_histograms(struct prom *p)
{
	size_t fi, i, k;

	for (fi = 0; fi < p->nfam; fi++) {
		const struct prom_family *f = &p->fam[fi];
		size_t blen = strlen(f->name);

		if (f->type != PT_HISTOGRAM)
			continue;
		for (i = 0; i < p->ns; i++) {
			const struct prom_sample *s = &p->s[i];
			double last_le = -INFINITY, last = 0, d;
			int nb = 0, have_sum = 0, have_count = 0, seen = 0;
			double count = -1;
			char *key;

			if (s->family != fi)
				continue;
			key = prom_group_key(s, 0);
			/* Only the first sample of each group runs this. */
			for (k = 0; k < i && !seen; k++) {
				char *o;

				if (p->s[k].family != fi)
					continue;
				o = prom_group_key(&p->s[k], 0);
				seen = strcmp(o, key) == 0;
				free(o);
			}
			if (seen) {
				free(key);
				continue;
			}
			for (k = i; k < p->ns; k++) {
				const struct prom_sample *t = &p->s[k];
				const char *suffix;
				char *o;
				int same;

				if (t->family != fi)
					continue;
				o = prom_group_key(t, 0);
				same = strcmp(o, key) == 0;
				free(o);
				if (!same)
					continue;
				suffix = t->name + blen;
				if (strcmp(suffix, "_bucket") == 0) {
					prom_float(prom_label_get(t, "le"),
					    strlen(prom_label_get(t, "le")),
					    &d);
					if (have_sum || have_count) {
						free(key);
						return prom_err(p, t->line,
						    NULL, 0,
						    "%s: bucket after "
						    "_sum or _count",
						    f->name);
					}
					if (!(d > last_le)) {
						free(key);
						return prom_err(p, t->line,
						    NULL, 0,
						    "%s: le not "
						    "increasing",
						    f->name);
					}
					if (t->value < last) {
						free(key);
						return prom_err(p, t->line,
						    NULL, 0,
						    "%s: buckets not "
						    "cumulative",
						    f->name);
					}
					last_le = d;
					last = t->value;
					nb++;
				} else if (strcmp(suffix, "_sum") == 0)
					have_sum = 1;
				else {
					have_count = 1;
					count = t->value;
				}
			}
			free(key);
			if (nb == 0 || !isinf(last_le))
				return prom_err(p, s->line, NULL, 0,
				    "%s: no le=\"+Inf\" bucket", f->name);
			if (!have_sum || !have_count)
				return prom_err(p, s->line, NULL, 0,
				    "%s: _sum or _count missing", f->name);
			if (count != last)
				return prom_err(p, s->line, NULL, 0,
				    "%s: +Inf bucket %g != _count %g", f->name,
				    last, count);
		}
	}
	return 0;
}

/* 0 when text is a valid exposition; -1 with p->err set. */
static int
prom_parse(struct prom *p, const char *text, size_t len)
{
	const char *line = text, *end = text + len, *nl, *q, *le;
	struct prom_family *f;
	size_t cur = (size_t)-1, n, llen;
	int ln = 0, help;

	while (line < end) {
		ln++;
		nl = memchr(line, '\n', (size_t)(end - line));
		if (nl == NULL)
			return prom_err(p, ln, line, (size_t)(end - line),
			    "last line has no newline");
		llen = (size_t)(nl - line);
		le = nl;
		if (llen == 0)
			return prom_err(p, ln, NULL, 0, "empty line");
		if (memchr(line, '\r', llen) != NULL ||
		    memchr(line, '\0', llen) != NULL)
			return prom_err(
			    p, ln, line, llen, "CR or NUL in a line");
		if (line[0] == '#') {
			if (llen > 7 && memcmp(line, "# HELP ", 7) == 0)
				help = 1;
			else if (llen > 7 && memcmp(line, "# TYPE ", 7) == 0)
				help = 0;
			else
				return prom_err(p, ln, line, llen,
				    "a comment that is not HELP or TYPE");
			q = line + 7;
			n = prom_name_len(q, le, 0);
			if (n == 0 || q + n >= le || q[n] != ' ')
				return prom_err(p, ln, line, llen,
				    "bad metric name in %s",
				    help ? "HELP" : "TYPE");
			f = prom_family_find(p, q, n);
			if (f == NULL)
				f = prom_family_add(p, q, n);
			if (f->nsamples > 0)
				return prom_err(p, ln, line, llen,
				    "%s after the family's samples",
				    help ? "HELP" : "TYPE");
			if (cur != (size_t)-1 && cur != (size_t)(f - p->fam) &&
			    (f->has_help || f->has_type))
				return prom_err(p, ln, line, llen,
				    "metadata of %s not in one group", f->name);
			cur = (size_t)(f - p->fam);
			q += n + 1;
			if (help) {
				if (f->has_help)
					return prom_err(
					    p, ln, line, llen, "second HELP");
				f->has_help = 1;
				for (; q < le; q++) {
					if (*q != '\\')
						continue;
					if (q + 1 >= le ||
					    (q[1] != '\\' && q[1] != 'n'))
						return prom_err(p, ln, line,
						    llen, "bad escape in HELP");
					q++;
				}
			} else {
				if (f->has_type)
					return prom_err(
					    p, ln, line, llen, "second TYPE");
				n = (size_t)(le - q);
				if (n == 7 && memcmp(q, "counter", 7) == 0)
					f->type = PT_COUNTER;
				else if (n == 5 && memcmp(q, "gauge", 5) == 0)
					f->type = PT_GAUGE;
				else if (n == 9 &&
				    memcmp(q, "histogram", 9) == 0)
					f->type = PT_HISTOGRAM;
				else
					return prom_err(p, ln, line, llen,
					    "type is not counter, gauge or "
					    "histogram");
				f->has_type = 1;
				if (f->type == PT_COUNTER &&
				    !prom_ends_with(
				        f->name, strlen(f->name), "_total"))
					return prom_err(p, ln, line, llen,
					    "counter not named *_total");
			}
		} else if (prom_sample_line(p, ln, line, llen, &cur) != 0)
			return -1;
		line = nl + 1;
	}
	return prom_check_histograms(p);
}

/* ---- reading figures -------------------------------------------------- */

static const char *prom_dump(const struct prom *);

/* The sample with exactly these labels (NULL-terminated name, value
 * pairs); subset: the labels given are among the sample's. */
static int
prom_vmatch(const struct prom_sample *s, va_list ap, int subset)
{
	const char *k, *v, *have;
	size_t n = 0;

	while ((k = va_arg(ap, const char *)) != NULL) {
		v = va_arg(ap, const char *);
		have = prom_label_get(s, k);
		if (have == NULL || strcmp(have, v) != 0)
			return 0;
		n++;
	}
	return subset || n == s->nlabels;
}

static const struct prom_sample *
prom_vfind(const struct prom *p, const char *name, va_list ap)
{
	va_list aq;
	size_t i;
	int m;

	for (i = 0; i < p->ns; i++) {
		if (strcmp(p->s[i].name, name) != 0)
			continue;
		va_copy(aq, ap);
		m = prom_vmatch(&p->s[i], aq, 0);
		va_end(aq);
		if (m)
			return &p->s[i];
	}
	return NULL;
}

static const struct prom_sample *
prom_find(const struct prom *p, const char *name, ...)
{
	const struct prom_sample *s;
	va_list ap;

	va_start(ap, name);
	s = prom_vfind(p, name, ap);
	va_end(ap);
	return s;
}

static char *
prom_vdescribe(const char *name, va_list ap)
{
	struct harness_buf b = {NULL, 0, 0};
	const char *k, *v;
	int first = 1;
	char *s;

	harness_buf_addf(&b, "%s{", name);
	while ((k = va_arg(ap, const char *)) != NULL) {
		v = va_arg(ap, const char *);
		harness_buf_addf(&b, "%s%s=\"%s\"", first ? "" : ",", k, v);
		first = 0;
	}
	harness_buf_add(&b, "}", 1);
	s = harness_strf("%s", b.data);
	harness_buf_free(&b);
	return s;
}

/* The value of a sample that must be there. */
static double
prom_val(const struct prom *p, const char *name, ...)
{
	const struct prom_sample *s;
	va_list ap;
	char *what;

	va_start(ap, name);
	s = prom_vfind(p, name, ap);
	va_end(ap);
	if (s == NULL) {
		va_start(ap, name);
		what = prom_vdescribe(name, ap);
		va_end(ap);
		H_ASSERT(0, "no sample %s in the exposition:\n%s", what,
		    prom_dump(p));
	}
	return s->value;
}

/* Sum over the samples that have at least these labels. */
static double
prom_sum(const struct prom *p, const char *name, ...)
{
	double sum = 0;
	va_list ap;
	size_t i;

	for (i = 0; i < p->ns; i++) {
		if (strcmp(p->s[i].name, name) != 0)
			continue;
		va_start(ap, name);
		if (prom_vmatch(&p->s[i], ap, 1))
			sum += p->s[i].value;
		va_end(ap);
	}
	return sum;
}

/* How many samples have at least these labels (k, v, ..., NULL). */
static double
prom_count(const struct prom *p, const char *name, ...)
{
	double n = 0;
	va_list ap;
	size_t i;

	for (i = 0; i < p->ns; i++) {
		if (strcmp(p->s[i].name, name) != 0)
			continue;
		va_start(ap, name);
		if (prom_vmatch(&p->s[i], ap, 1))
			n++;
		va_end(ap);
	}
	return n;
}

static const struct prom_family *
prom_family(const struct prom *p, const char *name)
{
	size_t i;

	for (i = 0; i < p->nfam; i++)
		if (strcmp(p->fam[i].name, name) == 0)
			return &p->fam[i];
	return NULL;
}

#define PFIND(p, ...) prom_find(p, __VA_ARGS__, (const char *)NULL)
#define PVAL(p, ...) prom_val(p, __VA_ARGS__, (const char *)NULL)
#define PSUM(p, ...) prom_sum(p, __VA_ARGS__, (const char *)NULL)
#define REQS(p, m, r, c)                                                       \
	PVAL(p, "ollama_pool_requests_total", "method", m, "route", r, "code", \
	    c)
#define H_ASSERT_VAL(p, want, ...)                                             \
	do {                                                                   \
		double h_v_ = PVAL(p, __VA_ARGS__);                            \
		double h_w_ = (double)(want);                                  \
		H_ASSERT(h_v_ == h_w_, "%s: %.17g, want %.17g\n%s",            \
		    #__VA_ARGS__, h_v_, h_w_, prom_dump(p));                   \
	} while (0)

/* On a failure: the whole scrape goes to stderr, too big for Check's
 * message, which says where to look. */
static const char *
prom_dump(const struct prom *p)
{
	fprintf(stderr,
	    "---- the exposition (%zu bytes) ----\n%s---- end of "
	    "the exposition\n",
	    p->text.len, p->text.data ? p->text.data : "");
	fflush(stderr);
	return "(the exposition is on stderr)";
}

/* ---- talking to the daemon -------------------------------------------- */

static void
nap_ms(int ms)
{
	poll(NULL, 0, ms);
}

/* GET /ollama-pool/metrics, checked and parsed strictly. */
static void
scrape(const struct harness_daemon *d, struct prom *p)
{
	struct http_resp r;
	const char *ct;

	memset(p, 0, sizeof *p);
	http_get(harness_daemon_url(d, METRICS_PATH), &r);
	H_ASSERT(r.ok && r.status == 200, "scrape: %ld %s %.300s", r.status,
	    r.error, r.body.data ? r.body.data : "");
	ct = http_header_get(&r, "Content-Type");
	H_ASSERT(ct != NULL &&
	        strncmp(ct, "text/plain; version=0.0.4",
	            strlen("text/plain; version=0.0.4")) == 0,
	    "metrics Content-Type %s, want text/plain; version=0.0.4",
	    ct ? ct : "none");
	harness_buf_add(&p->text, r.body.data, r.body.len);
	H_ASSERT(strlen(p->text.data) == r.body.len,
	    "the exposition holds a NUL byte");
	if (prom_parse(p, r.body.data, r.body.len) != 0)
		H_ASSERT(0, "the exposition does not parse: %s %s", p->err,
		    prom_dump(p));
	http_resp_free(&r);
}

static cJSON *
stats_get(const struct harness_daemon *d)
{
	struct http_resp r;
	const char *ct;
	cJSON *j;

	http_get(harness_daemon_url(d, STATS_PATH), &r);
	H_ASSERT(r.ok && r.status == 200, "stats: %ld %s", r.status, r.error);
	ct = http_header_get(&r, "Content-Type");
	H_ASSERT(ct != NULL && strncasecmp(ct, "application/json", 16) == 0,
	    "stats Content-Type %s", ct ? ct : "none");
	j = http_json(&r);
	H_ASSERT(cJSON_IsObject(j), "stats is not a JSON object: %.400s",
	    r.body.data);
	http_resp_free(&r);
	return j;
}

/* Scrapes until name{labels} == want; the last scrape stays in *p. */
static void
metrics_wait(const struct harness_daemon *d, struct prom *p, double want,
    const char *name, ...)
{
	const struct prom_sample *s;
	double deadline;
	va_list ap;
	char *what;

	deadline = harness_now() + WAIT_MS / 1000.0;
	for (;;) {
		scrape(d, p);
		va_start(ap, name);
		s = prom_vfind(p, name, ap);
		va_end(ap);
		if (s != NULL && s->value == want)
			return;
		if (harness_now() > deadline)
			break;
		prom_free(p);
		nap_ms(10);
	}
	va_start(ap, name);
	what = prom_vdescribe(name, ap);
	va_end(ap);
	H_ASSERT(0, "%s did not reach %g within %d ms (last %g):\n%s", what,
	    want, WAIT_MS, s ? s->value : NAN, prom_dump(p));
}
#define METRICS_WAIT(d, p, want, ...)                                          \
	metrics_wait(d, p, want, __VA_ARGS__, (const char *)NULL)

/* Polls the fake's own stats until key reaches at least want. */
static void
fake_wait_stat(const struct harness_fake *f, const char *key, long long want)
{
	double deadline;
	long long v;

	deadline = harness_now() + WAIT_MS / 1000.0;
	for (;;) {
		v = fake_stat(f, key);
		if (v >= want)
			return;
		H_ASSERT(harness_now() < deadline,
		    "the fake's %s stayed at "
		    "%lld, want %lld",
		    key, v, want);
		nap_ms(5);
	}
}

static void
json_hdr_req(
    struct http_req *req, const char *method, const char *url, const char *body)
{
	static const char *const hdrs[] = {
	    "Content-Type: application/json", "Expect:", NULL};

	memset(req, 0, sizeof *req);
	req->method = method;
	req->url = url;
	if (body != NULL) {
		req->headers = hdrs;
		req->body = body;
		req->body_len = strlen(body);
		req->has_body = 1;
	}
}

/* One request through the daemon; the status must be as given. */
static void
via(const struct harness_daemon *d, const char *method, const char *path,
    const char *body, long status, struct http_resp *r)
{
	struct http_req req;

	json_hdr_req(&req, method, harness_daemon_url(d, path), body);
	http_request(&req, r);
	H_ASSERT(r->ok && r->status == status,
	    "%s %s: %ld (want %ld) %s "
	    "%.300s",
	    method, path, r->status, status, r->error,
	    r->body.data ? r->body.data : "");
}

static void
via_free(const struct harness_daemon *d, const char *method, const char *path,
    const char *body, long status)
{
	struct http_resp r;

	via(d, method, path, body, status, &r);
	http_resp_free(&r);
}

/* Sends a request with a JSON body on a raw connection, and no more. */
static void
raw_send(struct http_conn *c, int port, const char *method, const char *path,
    const char *body)
{
	char *req;

	http_conn_open(c, port);
	if (body != NULL)
		req = harness_strf(
		    "%s %s HTTP/1.1\r\nHost: client.invalid\r\n"
		    "Content-Type: application/json\r\nContent-Length: %zu\r\n"
		    "\r\n%s",
		    method, path, strlen(body), body);
	else
		req = harness_strf("%s %s HTTP/1.1\r\nHost: client.invalid\r\n"
		                   "\r\n",
		    method, path);
	H_ASSERT(http_conn_sendstr(c, req, 10000) == 0, "sending %s %s", method,
	    path);
}

/* Reads from a raw connection until needle has arrived. */
static void
raw_read_until(struct http_conn *c, const char *needle, int timeout_ms)
{
	struct pollfd pfd;
	char buf[65536];
	double deadline;
	ssize_t n;

	deadline = harness_now() + timeout_ms / 1000.0;
	while (c->in.data == NULL ||
	    memmem(c->in.data, c->in.len, needle, strlen(needle)) == NULL) {
		n = recv(c->fd, buf, sizeof buf, 0);
		if (n > 0) {
			harness_buf_add(&c->in, buf, (size_t)n);
			continue;
		}
		H_ASSERT(n < 0 && (errno == EAGAIN || errno == EINTR),
		    "connection ended before \"%s\" arrived: %.300s", needle,
		    c->in.data ? c->in.data : "");
		H_ASSERT(harness_now() < deadline,
		    "\"%s\" did not arrive "
		    "within %d ms: %.300s",
		    needle, timeout_ms, c->in.data ? c->in.data : "");
		pfd.fd = c->fd;
		pfd.events = POLLIN;
		poll(&pfd, 1, 50);
	}
}

/* The final line of an Ollama stream, parsed. */
static cJSON *
last_line_json(const struct http_resp *r)
{
	const char *p, *end;
	char *line;
	cJSON *j;

	H_ASSERT(r->body.len > 0 && r->body.data[r->body.len - 1] == '\n',
	    "stream does not end with a line: %.300s", r->body.data);
	end = r->body.data + r->body.len - 1;
	for (p = end; p > r->body.data && p[-1] != '\n'; p--)
		;
	line = strndup(p, (size_t)(end - p));
	H_CHECK(line != NULL);
	j = cJSON_Parse(line);
	free(line);
	H_ASSERT(j != NULL, "final line is not JSON");
	return j;
}

static long
jlong(const cJSON *j, const char *key)
{
	const cJSON *v;

	v = cJSON_GetObjectItemCaseSensitive(j, key);
	H_ASSERT(cJSON_IsNumber(v), "no number \"%s\"", key);
	return (long)v->valuedouble;
}

static const cJSON *
jobj(const cJSON *j, const char *key)
{
	const cJSON *v;

	v = cJSON_GetObjectItemCaseSensitive(j, key);
	H_ASSERT(v != NULL, "no \"%s\" in the stats", key);
	return v;
}

static double
jnum(const cJSON *j, const char *key)
{
	const cJSON *v;

	v = cJSON_GetObjectItemCaseSensitive(j, key);
	H_ASSERT(cJSON_IsNumber(v), "no number \"%s\" in the stats", key);
	return v->valuedouble;
}

/* ==== the parser itself is strict ====================================== */

static const char prom_good[] =
    "# HELP a_total Things, with a \\\\ and a \\n in the help.\n"
    "# TYPE a_total counter\n"
    "a_total{x=\"q\\\"uote\",y=\"back\\\\slash\",z=\"new\\nline\"} 3\n"
    "a_total{x=\"\xc3\xa9t\xc3\xa9\",y=\"\",z=\"\"} 0\n"
    "# TYPE g gauge\n"
    "g -1.5e-3\n"
    "# TYPE h histogram\n"
    "h_bucket{r=\"/\",le=\"0.5\"} 1\n"
    "h_bucket{r=\"/\",le=\"1\"} 1\n"
    "h_bucket{r=\"/\",le=\"+Inf\"} 2\n"
    "h_sum{r=\"/\"} 7.25\n"
    "h_count{r=\"/\"} 2\n"
    "# TYPE e histogram\n"
    "# TYPE n_total counter\n"
    "n_total +Inf\n";

static const struct {
	const char *why;
	const char *text;
} prom_bad[] = {
    {"no TYPE", "foo 1\n"},
    {"counter without _total", "# TYPE foo counter\nfoo 1\n"},
    {"second TYPE",
        "# TYPE a_total counter\n# TYPE a_total counter\na_total 1\n"},
    {"TYPE after samples",
        "# TYPE a_total counter\na_total 1\n"
        "# TYPE a_total counter\n"},
    {"second HELP",
        "# HELP a_total x\n# HELP a_total y\n"
        "# TYPE a_total counter\na_total 1\n"},
    {"bad escape", "# TYPE a_total counter\na_total{a=\"b\\x\"} 1\n"},
    {"bad escape in HELP", "# HELP a_total b\\t\n"},
    {"bad label name", "# TYPE a_total counter\na_total{1a=\"b\"} 1\n"},
    {"colon in label name", "# TYPE a_total counter\na_total{a:b=\"c\"} 1\n"},
    {"reserved label name", "# TYPE a_total counter\na_total{__a=\"c\"} 1\n"},
    {"bad metric name", "# TYPE 1a_total counter\n"},
    {"summary", "# TYPE a summary\n"},
    {"untyped", "# TYPE a untyped\n"},
    {"not a number", "# TYPE a_total counter\na_total abc\n"},
    {"lower-case inf", "# TYPE g gauge\ng inf\n"},
    {"hex number", "# TYPE g gauge\ng 0x10\n"},
    {"no final newline", "# TYPE a_total counter\na_total 1"},
    {"empty line", "# TYPE a_total counter\n\na_total 1\n"},
    {"other comment", "# just a comment\n"},
    {"CRLF", "# TYPE a_total counter\r\na_total 1\r\n"},
    {"trailing space", "# TYPE a_total counter\na_total 1 \n"},
    {"timestamp", "# TYPE a_total counter\na_total 1 1700000000000\n"},
    {"two spaces", "# TYPE a_total counter\na_total  1\n"},
    {"unterminated value", "# TYPE a_total counter\na_total{a=\"b} 1\n"},
    {"trailing comma", "# TYPE a_total counter\na_total{a=\"b\",} 1\n"},
    {"empty braces", "# TYPE a_total counter\na_total{} 1\n"},
    {"duplicate label", "# TYPE a_total counter\na_total{a=\"b\",a=\"c\"} 1\n"},
    {"duplicate series",
        "# TYPE a_total counter\na_total{a=\"b\"} 1\n"
        "a_total{a=\"b\"} 2\n"},
    {"invalid UTF-8", "# TYPE a_total counter\na_total{a=\"\xc3\"} 1\n"},
    {"negative counter", "# TYPE a_total counter\na_total -1\n"},
    {"split group",
        "# TYPE a_total counter\na_total{x=\"1\"} 1\n"
        "# TYPE g gauge\ng 1\na_total{x=\"2\"} 1\n"},
    {"histogram without suffix", "# TYPE h histogram\nh 1\n"},
    {"bucket without le",
        "# TYPE h histogram\nh_bucket 1\nh_sum 1\n"
        "h_count 1\n"},
    {"no +Inf bucket",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\n"
        "h_sum 1\nh_count 1\n"},
    {"not cumulative",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
        "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"},
    {"le decreasing",
        "# TYPE h histogram\nh_bucket{le=\"2\"} 1\n"
        "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\n"
        "h_count 1\n"},
    {"+Inf != count",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\n"
        "h_sum 1\nh_count 1\n"},
    {"no _sum",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\n"
        "h_count 1\n"},
    {"no _count",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\n"
        "h_sum 1\n"},
    {"fractional bucket",
        "# TYPE h histogram\n"
        "h_bucket{le=\"+Inf\"} 1.5\nh_sum 1\nh_count 1.5\n"},
    {"le on _sum",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\n"
        "h_sum{le=\"1\"} 1\nh_count 1\n"},
    {"bad le",
        "# TYPE h histogram\nh_bucket{le=\"x\"} 1\n"
        "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"},
    {"one group per label set",
        "# TYPE h histogram\nh_bucket{r=\"a\",le=\"+Inf\"} 1\n"
        "h_sum{r=\"a\"} 1\nh_count{r=\"a\"} 1\n"
        "h_bucket{r=\"b\",le=\"+Inf\"} 1\nh_sum{r=\"b\"} 1\n"},
};
#define N_PROM_BAD ((int)(sizeof prom_bad / sizeof prom_bad[0]))

START_TEST(test_parser_strict)
{
	struct prom p;

	H_BEGIN();
	memset(&p, 0, sizeof p);
	H_ASSERT(prom_parse(&p, prom_good, strlen(prom_good)) == 0,
	    "a valid exposition was refused: %s", p.err);
	H_ASSERT_STR_EQ(prom_label_get(PFIND(&p, "a_total", "x", "q\"uote", "y",
	                                   "back\\slash", "z", "new\nline"),
	                    "x"),
	    "q\"uote");
	H_ASSERT(PVAL(&p, "g") == -1.5e-3, "g");
	H_ASSERT(PVAL(&p, "h_count", "r", "/") == 2, "h_count");
	H_ASSERT(isinf(PVAL(&p, "n_total")), "n_total");
	H_ASSERT(PSUM(&p, "a_total") == 3, "sum");
	prom_free(&p);
}
END_TEST

START_TEST(test_parser_rejects)
{
	struct prom p;

	H_BEGIN();
	memset(&p, 0, sizeof p);
	H_ASSERT(
	    prom_parse(&p, prom_bad[_i].text, strlen(prom_bad[_i].text)) != 0,
	    "the parser accepted an exposition with %s:\n%s", prom_bad[_i].why,
	    prom_bad[_i].text);
	prom_free(&p);
}
END_TEST

/* ==== 1: the daemon's exposition, after mixed traffic ================== */

static const struct {
	const char *name;
	enum prom_type type;
} required_families[] = {
    {"ollama_pool_requests_total", PT_COUNTER},
    {"ollama_pool_upstream_connections_opened_total", PT_COUNTER},
    {"ollama_pool_upstream_requests_total", PT_COUNTER},
    {"ollama_pool_upstream_connections_open", PT_GAUGE},
    {"ollama_pool_retries_total", PT_COUNTER},
    {"ollama_pool_cancelled_total", PT_COUNTER},
    {"ollama_pool_queue_depth", PT_GAUGE},
    {"ollama_pool_queue_wait_seconds", PT_HISTOGRAM},
    {"ollama_pool_client_connections_open", PT_GAUGE},
    {"ollama_pool_client_connections_total", PT_COUNTER},
    {"ollama_pool_in_flight", PT_GAUGE},
    {"ollama_pool_first_byte_seconds", PT_HISTOGRAM},
    {"ollama_pool_request_seconds", PT_HISTOGRAM},
    {"ollama_pool_bytes_total", PT_COUNTER},
    {"ollama_pool_tokens_total", PT_COUNTER},
    {"ollama_pool_access_log_dropped_total", PT_COUNTER},
    {"ollama_pool_build_info", PT_GAUGE},
    {"process_start_time_seconds", PT_GAUGE},
    {"process_resident_memory_bytes", PT_GAUGE},
    {"process_open_fds", PT_GAUGE},
};

/* A generate that waits upstream; the client leaves once the fake has it.
 * Returns when the daemon has counted the cancellation. */
static void
cancel_one_waiting(struct harness_env *env, long long fake_requests_before)
{
	struct http_conn c;
	struct prom p;

	raw_send(&c, env->daemon->port, "POST", "/api/generate",
	    "{\"model\":\"" MODEL "\",\"prompt\":\"p\","
	    "\"fake_first_byte_ms\":10000}");
	fake_wait_stat(env->fake, "requests", fake_requests_before + 1);
	http_conn_close(&c);
	METRICS_WAIT(env->daemon, &p, 1, "ollama_pool_cancelled_total", "phase",
	    "waiting_headers");
	prom_free(&p);
}

START_TEST(test_exposition_after_mixed_traffic)
{
	struct harness_env env;
	struct http_resp r;
	struct http_req req;
	struct prom p;
	const struct prom_family *f;
	double maxle;
	size_t i;

	H_BEGIN();
	harness_up(&env, "[retry]\nbackoff_factor = 0.01\n");

	/* Some of everything a scrape can show. */
	via_free(env.daemon, NULL, "/api/tags", NULL, 200);
	json_hdr_req(
	    &req, "HEAD", harness_daemon_url(env.daemon, "/api/tags"), NULL);
	http_request(&req, &r);
	H_ASSERT(r.ok && r.status == 200, "HEAD: %ld %s", r.status, r.error);
	http_resp_free(&r);
	via_free(env.daemon, "POST", "/api/generate",
	    "{\"model\":\"" MODEL
	    "\",\"prompt\":\"hi\",\"options\":{\"num_predict\":3}}",
	    200);
	via_free(env.daemon, "POST", "/api/chat",
	    "{\"model\":\"" MODEL
	    "\",\"messages\":[{\"role\":\"user\",\"content\":\"yo\"}]}",
	    200);
	/* Backslashes and quotes in a model name end up in a label. */
	via_free(env.daemon, "POST", "/api/generate",
	    "{\"model\":\"we\\\\ird\\\"na\\nme\",\"prompt\":\"x\","
	    "\"stream\":false}",
	    200);
	via_free(env.daemon, NULL, "/some/raw/path?x=1", NULL, 404);
	fake_fault(env.fake,
	    "{\"action\":\"status\",\"status\":503,"
	    "\"count\":1,\"path\":\"/api/ps\"}");
	via_free(env.daemon, NULL, "/api/ps", NULL, 200);
	via_free(env.daemon, NULL, "/ollama-pool/nope", NULL, 404);
	via_free(env.daemon, "POST", METRICS_PATH, "{}", 405);
	cJSON_Delete(stats_get(env.daemon));
	via_free(env.daemon, NULL, HEALTH_PATH, NULL, 200);
	cancel_one_waiting(&env, fake_stat(env.fake, "requests"));

	scrape(env.daemon, &p);
	for (i = 0; i < sizeof required_families / sizeof required_families[0];
	     i++) {
		f = prom_family(&p, required_families[i].name);
		H_ASSERT(f != NULL && f->has_type, "no TYPE line for %s:\n%s",
		    required_families[i].name, prom_dump(&p));
		H_ASSERT(f->type == required_families[i].type,
		    "%s has the wrong TYPE", f->name);
		H_ASSERT(f->has_help, "%s has no HELP", f->name);
		H_ASSERT(f->nsamples > 0,
		    "%s has no samples after this "
		    "traffic:\n%s",
		    f->name, prom_dump(&p));
	}
	/* Every reason and phase is there, at zero if need be. */
	PVAL(&p, "ollama_pool_retries_total", "reason", "status");
	PVAL(&p, "ollama_pool_retries_total", "reason", "connect_failed");
	PVAL(&p, "ollama_pool_retries_total", "reason", "connection_reset");
	PVAL(&p, "ollama_pool_cancelled_total", "phase", "queued");
	PVAL(&p, "ollama_pool_cancelled_total", "phase", "waiting_headers");
	PVAL(&p, "ollama_pool_cancelled_total", "phase", "backoff");
	PVAL(&p, "ollama_pool_cancelled_total", "phase", "streaming");
	PVAL(&p, "ollama_pool_bytes_total", "direction", "in");
	PVAL(&p, "ollama_pool_bytes_total", "direction", "out");
	/* Base units, and buckets up to minutes for model loads. */
	maxle = 0;
	for (i = 0; i < p.ns; i++) {
		const char *le = prom_label_get(&p.s[i], "le");
		double d;

		if (le == NULL ||
		    strcmp(p.s[i].name,
		        "ollama_pool_first_byte_seconds_bucket") != 0)
			continue;
		prom_float(le, strlen(le), &d);
		if (!isinf(d) && d > maxle)
			maxle = d;
	}
	H_ASSERT(maxle >= 60,
	    "first byte buckets stop at %g s; a model "
	    "load takes minutes",
	    maxle);
	H_ASSERT(PVAL(&p, "ollama_pool_cancelled_total", "phase",
	             "waiting_headers") == 1,
	    "cancelled");
	H_ASSERT(REQS(&p, "POST", "/api/generate", "499") == 1, "499");
	prom_free(&p);

	/* HEAD of the metrics: the same head, no body. */
	json_hdr_req(
	    &req, "HEAD", harness_daemon_url(env.daemon, METRICS_PATH), NULL);
	http_request(&req, &r);
	H_ASSERT(r.ok && r.status == 200 && r.body.len == 0,
	    "HEAD metrics: %ld %s", r.status, r.error);
	http_resp_free(&r);
}
END_TEST

/* ==== 2: N naive requests, one upstream connection ===================== */

START_TEST(test_naive_requests_one_connection)
{
	enum { N = 200 };
	struct harness_env env;
	struct http_resp r;
	struct prom p;
	size_t body_len = 0;
	int i;

	H_BEGIN();
	/* Nothing has asked the upstream anything yet: no health probe. */
	harness_up(&env, "");
	for (i = 0; i < N; i++) {
		http_get(harness_daemon_url(env.daemon, "/api/tags"), &r);
		H_ASSERT(r.ok && r.status == 200, "request %d: %ld %s", i,
		    r.status, r.error);
		H_ASSERT_INT_EQ(r.num_connects, 1);
		body_len = r.body.len;
		http_resp_free(&r);
	}
	scrape(env.daemon, &p);
	H_ASSERT_VAL(&p, N, "ollama_pool_requests_total", "method", "GET",
	    "route", "/api/tags", "code", "200");
	/* The pool's whole point, the "done when". */
	H_ASSERT_VAL(&p, 1, "ollama_pool_upstream_connections_opened_total");
	H_ASSERT_VAL(&p, N, "ollama_pool_upstream_requests_total");
	H_ASSERT_VAL(&p, 1, "ollama_pool_upstream_connections_open");
	/* N client connections, and the scrape's own. */
	H_ASSERT_VAL(&p, N + 1, "ollama_pool_client_connections_total");
	H_ASSERT_VAL(&p, N, "ollama_pool_first_byte_seconds_count", "route",
	    "/api/tags");
	H_ASSERT_VAL(&p, N, "ollama_pool_first_byte_seconds_bucket", "route",
	    "/api/tags", "le", "+Inf");
	H_ASSERT_VAL(
	    &p, N, "ollama_pool_request_seconds_count", "route", "/api/tags");
	H_ASSERT_VAL(&p, N, "ollama_pool_queue_wait_seconds_count");
	H_ASSERT_VAL(&p, 0, "ollama_pool_queue_depth");
	H_ASSERT_VAL(&p, 0, "ollama_pool_in_flight");
	H_ASSERT_VAL(&p, 0, "ollama_pool_retries_total", "reason", "status");
	H_ASSERT_VAL(
	    &p, N * body_len, "ollama_pool_bytes_total", "direction", "out");
	H_ASSERT_VAL(&p, 0, "ollama_pool_bytes_total", "direction", "in");
	/* Nothing else was asked: the only requests series is this one. */
	H_ASSERT(PSUM(&p, "ollama_pool_requests_total") == N,
	    "requests counted that were never made:\n%s", prom_dump(&p));
	/* A sum of N durations, each well under the test's own time. */
	H_ASSERT(PVAL(&p, "ollama_pool_request_seconds_sum", "route",
	             "/api/tags") > 0,
	    "request_seconds_sum is 0");
	prom_free(&p);
	H_ASSERT(fake_stat(env.fake, "connections_used") == 1,
	    "the fake saw %lld connections",
	    fake_stat(env.fake, "connections_used"));

	/* The scrape is counted once it has rendered, under its own
	 * bounded route. */
	scrape(env.daemon, &p);
	H_ASSERT_VAL(&p, 1, "ollama_pool_requests_total", "method", "GET",
	    "route", ADMIN_ROUTE, "code", "200");
	H_ASSERT_VAL(&p, N + 2, "ollama_pool_client_connections_total");
	H_ASSERT_VAL(&p, 1, "ollama_pool_upstream_connections_opened_total");
	prom_free(&p);
	/* All those clients left: only the scrape's own is open. */
	METRICS_WAIT(env.daemon, &p, 1, "ollama_pool_client_connections_open");
	prom_free(&p);
}
END_TEST

/* ==== 3: route labels are bounded ====================================== */

static size_t
non_admin_samples(const struct prom *p)
{
	const char *route;
	size_t i, n = 0;

	for (i = 0; i < p->ns; i++) {
		route = prom_label_get(&p->s[i], "route");
		if (route == NULL || strcmp(route, ADMIN_ROUTE) != 0)
			n++;
	}
	return n;
}

START_TEST(test_route_labels_bounded)
{
	static const char *const allowed[] = {
	    "/api/generate",
	    "/v1/chat/completions",
	    "/api/blobs",
	    "/v1/models",
	    "other",
	    "/api/tags",
	};
	struct harness_env env;
	struct http_resp r;
	struct http_req req;
	struct prom p;
	const char *route;
	size_t i, k, ns;
	int ok;

	H_BEGIN();
	harness_up(&env, "");
	via_free(env.daemon, "POST", "/api/generate",
	    "{\"model\":\"" MODEL "\",\"prompt\":\"p\",\"stream\":false}", 200);
	via_free(env.daemon, "POST", "/v1/chat/completions",
	    "{\"model\":\"" MODEL
	    "\",\"messages\":[{\"role\":\"user\",\"content\":\"c\"}]}",
	    200);
	json_hdr_req(&req, "HEAD",
	    harness_daemon_url(env.daemon, "/api/blobs/" KNOWN_BLOB), NULL);
	http_request(&req, &r);
	H_ASSERT(
	    r.ok && r.status == 200, "HEAD blob: %ld %s", r.status, r.error);
	http_resp_free(&r);
	via_free(env.daemon, NULL, "/v1/models/x", NULL, 200);
	via_free(env.daemon, NULL, "/some/raw/path?x=1", NULL, 404);
	via_free(env.daemon, NULL, "/api/tags?verbose=1&x=%2F", NULL, 200);
	via_free(env.daemon, NULL, "/api/generate/../tags", NULL, 404);

	scrape(env.daemon, &p);
	H_ASSERT_VAL(&p, 1, "ollama_pool_requests_total", "method", "POST",
	    "route", "/api/generate", "code", "200");
	H_ASSERT_VAL(&p, 1, "ollama_pool_requests_total", "method", "POST",
	    "route", "/v1/chat/completions", "code", "200");
	H_ASSERT_VAL(&p, 1, "ollama_pool_requests_total", "method", "HEAD",
	    "route", "/api/blobs", "code", "200");
	H_ASSERT_VAL(&p, 1, "ollama_pool_requests_total", "method", "GET",
	    "route", "/v1/models", "code", "200");
	H_ASSERT_VAL(&p, 1, "ollama_pool_requests_total", "method", "GET",
	    "route", "/api/tags", "code", "200");
	H_ASSERT_VAL(&p, 2, "ollama_pool_requests_total", "method", "GET",
	    "route", "other", "code", "404");
	/* No route label anywhere is a raw path. */
	for (i = 0; i < p.ns; i++) {
		route = prom_label_get(&p.s[i], "route");
		if (route == NULL)
			continue;
		ok = 0;
		for (k = 0; k < sizeof allowed / sizeof allowed[0]; k++)
			ok |= strcmp(route, allowed[k]) == 0;
		H_ASSERT(ok,
		    "route label \"%s\" on %s (line %d) is not one "
		    "of the bounded set:\n%s",
		    route, p.s[i].name, p.s[i].line, prom_dump(&p));
	}
	H_ASSERT(strstr(p.text.data, "sha256") == NULL &&
	        strstr(p.text.data, "/some") == NULL &&
	        strstr(p.text.data, "?") == NULL,
	    "a raw path leaked into the exposition:\n%s", prom_dump(&p));
	H_ASSERT_VAL(&p, 1, "ollama_pool_first_byte_seconds_count", "route",
	    "/api/blobs");
	H_ASSERT_VAL(
	    &p, 2, "ollama_pool_first_byte_seconds_count", "route", "other");
	ns = non_admin_samples(&p);
	prom_free(&p);

	/* Hundreds of distinct paths make no new series at all. */
	for (i = 0; i < 300; i++)
		via_free(env.daemon, NULL,
		    harness_strf("/raw/%zu/path?q=%zu", i, i), NULL, 404);
	scrape(env.daemon, &p);
	H_ASSERT_VAL(&p, 302, "ollama_pool_requests_total", "method", "GET",
	    "route", "other", "code", "404");
	/* The first scrape's own series (route "/ollama-pool") are the
	 * only new ones. */
	H_ASSERT(non_admin_samples(&p) == ns,
	    "%zu samples before, %zu after "
	    "300 distinct paths: %s",
	    ns, non_admin_samples(&p), prom_dump(&p));
	prom_free(&p);
}
END_TEST

/* ==== 4: retries ========================================================= */

START_TEST(test_retry_status)
{
	struct harness_env env;
	struct prom p;

	H_BEGIN();
	harness_up(&env, "[retry]\nbackoff_factor = 0.01\n");
	fake_reset(env.fake); /* the start-up check's GET */
	fake_fault(env.fake,
	    "{\"action\":\"status\",\"status\":503,"
	    "\"count\":1,\"path\":\"/api/tags\"}");
	via_free(env.daemon, NULL, "/api/tags", NULL, 200);
	H_ASSERT_INT_EQ(fake_stat(env.fake, "requests"), 2);

	scrape(env.daemon, &p);
	H_ASSERT_VAL(&p, 1, "ollama_pool_retries_total", "reason", "status");
	H_ASSERT_VAL(
	    &p, 0, "ollama_pool_retries_total", "reason", "connect_failed");
	H_ASSERT_VAL(
	    &p, 0, "ollama_pool_retries_total", "reason", "connection_reset");
	H_ASSERT_VAL(&p, 2, "ollama_pool_upstream_requests_total");
	/* One request, answered once, by the second attempt. */
	H_ASSERT_VAL(&p, 1, "ollama_pool_requests_total", "method", "GET",
	    "route", "/api/tags", "code", "200");
	H_ASSERT(PFIND(&p, "ollama_pool_requests_total", "method", "GET",
	             "route", "/api/tags", "code", "503") == NULL,
	    "the retried 503 was counted as an answer:\n%s", prom_dump(&p));
	H_ASSERT(PSUM(&p, "ollama_pool_requests_total") == 1,
	    "requests_total: %g", PSUM(&p, "ollama_pool_requests_total"));
	H_ASSERT_VAL(&p, 1, "ollama_pool_first_byte_seconds_count", "route",
	    "/api/tags");
	H_ASSERT_VAL(
	    &p, 1, "ollama_pool_request_seconds_count", "route", "/api/tags");
	/* The 503's body was read and dropped to keep the connection. */
	H_ASSERT_VAL(&p, 1, "ollama_pool_upstream_connections_opened_total");
	prom_free(&p);
}
END_TEST

START_TEST(test_retry_connect_failed)
{
	struct harness_daemon *d;
	struct http_resp r;
	struct prom p;
	int port;

	H_BEGIN();
	port = harness_free_port();
	d = harness_daemon_start("[retry]\nretries = 1\n"
	                         "backoff_factor = 0.01\n",
	    harness_strf("http://127.0.0.1:%d", port), NULL);
	via(d, NULL, "/api/tags", NULL, 502, &r);
	http_resp_free(&r);

	scrape(d, &p);
	H_ASSERT_VAL(
	    &p, 1, "ollama_pool_retries_total", "reason", "connect_failed");
	H_ASSERT_VAL(&p, 0, "ollama_pool_retries_total", "reason", "status");
	H_ASSERT_VAL(
	    &p, 0, "ollama_pool_retries_total", "reason", "connection_reset");
	H_ASSERT_VAL(&p, 1, "ollama_pool_requests_total", "method", "GET",
	    "route", "/api/tags", "code", "502");
	H_ASSERT_VAL(&p, 2, "ollama_pool_upstream_requests_total");
	/* A socket per attempt and one for the start-up check, none left
	 * open. */
	H_ASSERT_VAL(&p, 3, "ollama_pool_upstream_connections_opened_total");
	H_ASSERT_VAL(&p, 0, "ollama_pool_upstream_connections_open");
	H_ASSERT_VAL(
	    &p, 1, "ollama_pool_request_seconds_count", "route", "/api/tags");
	H_ASSERT(PFIND(&p, "ollama_pool_first_byte_seconds_count", "route",
	             "/api/tags") == NULL,
	    "a first byte counted for a request no "
	    "upstream answered:\n%s",
	    prom_dump(&p));
	prom_free(&p);
}
END_TEST

START_TEST(test_retry_connection_reset)
{
	struct harness_env env;
	struct prom p;

	H_BEGIN();
	/* Every request on a fresh connection (pool_connections = 0: not
	 * even the start-up check's is kept), so that libcurl's own replay
	 * of a request on a stale reused connection is not what answers
	 * it. */
	harness_up(&env,
	    "[upstream]\npool_connections = 0\n"
	    "[retry]\nbackoff_factor = 0.01\n");
	fake_fault(env.fake,
	    "{\"action\":\"reset\",\"count\":1,"
	    "\"path\":\"/api/tags\"}");
	via_free(env.daemon, NULL, "/api/tags", NULL, 200);

	scrape(env.daemon, &p);
	H_ASSERT_VAL(
	    &p, 1, "ollama_pool_retries_total", "reason", "connection_reset");
	H_ASSERT_VAL(&p, 0, "ollama_pool_retries_total", "reason", "status");
	H_ASSERT_VAL(
	    &p, 0, "ollama_pool_retries_total", "reason", "connect_failed");
	H_ASSERT_VAL(&p, 2, "ollama_pool_upstream_requests_total");
	/* The start-up check's, and one per attempt. */
	H_ASSERT_VAL(&p, 3, "ollama_pool_upstream_connections_opened_total");
	H_ASSERT_VAL(&p, 1, "ollama_pool_requests_total", "method", "GET",
	    "route", "/api/tags", "code", "200");
	prom_free(&p);
}
END_TEST

/* ==== 5: cancellations, by phase ======================================= */

static void
assert_cancelled(const struct prom *p, double queued, double waiting,
    double backoff, double streaming)
{
	H_ASSERT_VAL(
	    p, queued, "ollama_pool_cancelled_total", "phase", "queued");
	H_ASSERT_VAL(p, waiting, "ollama_pool_cancelled_total", "phase",
	    "waiting_headers");
	H_ASSERT_VAL(
	    p, backoff, "ollama_pool_cancelled_total", "phase", "backoff");
	H_ASSERT_VAL(
	    p, streaming, "ollama_pool_cancelled_total", "phase", "streaming");
}

START_TEST(test_cancel_waiting_headers)
{
	struct harness_env env;
	struct prom p;

	H_BEGIN();
	harness_up(&env, "");
	cancel_one_waiting(&env, 0);
	METRICS_WAIT(env.daemon, &p, 1, "ollama_pool_requests_total", "method",
	    "POST", "route", "/api/generate", "code", "499");
	assert_cancelled(&p, 0, 1, 0, 0);
	H_ASSERT(PSUM(&p, "ollama_pool_requests_total", "route",
	             "/api/generate") == 1,
	    "the cancelled request was counted more "
	    "than once:\n%s",
	    prom_dump(&p));
	H_ASSERT_VAL(&p, 1, "ollama_pool_request_seconds_count", "route",
	    "/api/generate");
	H_ASSERT_VAL(&p, 0, "ollama_pool_in_flight");
	H_ASSERT_VAL(&p, 1, "ollama_pool_upstream_requests_total");
	prom_free(&p);
}
END_TEST

START_TEST(test_cancel_streaming)
{
	struct harness_env env;
	struct http_conn c;
	struct prom p;

	H_BEGIN();
	harness_up(&env, "");
	/* A thousand tokens 50 ms apart: the client leaves after one. */
	raw_send(&c, env.daemon->port, "POST", "/api/generate",
	    "{\"model\":\"" MODEL "\",\"prompt\":\"p\",\"options\":"
	    "{\"num_predict\":1000},\"fake_interval_ms\":50}");
	raw_read_until(&c, "\"done\":false", WAIT_MS);
	http_conn_close(&c);
	METRICS_WAIT(env.daemon, &p, 1, "ollama_pool_cancelled_total", "phase",
	    "streaming");
	assert_cancelled(&p, 0, 0, 0, 1);
	H_ASSERT_VAL(&p, 1, "ollama_pool_requests_total", "method", "POST",
	    "route", "/api/generate", "code", "499");
	H_ASSERT_VAL(&p, 1, "ollama_pool_first_byte_seconds_count", "route",
	    "/api/generate");
	H_ASSERT_VAL(&p, 0, "ollama_pool_in_flight");
	/* A stream cut short has no final chunk: no tokens. */
	H_ASSERT(PSUM(&p, "ollama_pool_tokens_total") == 0,
	    "tokens counted from a stream that never ended:\n%s",
	    prom_dump(&p));
	prom_free(&p);
}
END_TEST

START_TEST(test_cancel_queued)
{
	struct harness_env env;
	struct http_conn a, b;
	struct prom p;

	H_BEGIN();
	harness_up(&env, "[upstream]\npool_maxsize = 1\n");
	fake_reset(env.fake); /* the start-up check's GET */
	/* A holds the only slot, waiting for its first byte. */
	raw_send(&a, env.daemon->port, "POST", "/api/generate",
	    "{\"model\":\"" MODEL "\",\"prompt\":\"a\","
	    "\"fake_first_byte_ms\":10000}");
	fake_wait_stat(env.fake, "requests", 1);
	raw_send(&b, env.daemon->port, "POST", "/api/generate",
	    "{\"model\":\"" MODEL "\",\"prompt\":\"b\"}");
	METRICS_WAIT(env.daemon, &p, 1, "ollama_pool_queue_depth");
	H_ASSERT_VAL(&p, 1, "ollama_pool_in_flight");
	prom_free(&p);
	http_conn_close(&b);
	METRICS_WAIT(env.daemon, &p, 1, "ollama_pool_cancelled_total", "phase",
	    "queued");
	assert_cancelled(&p, 1, 0, 0, 0);
	H_ASSERT_VAL(&p, 0, "ollama_pool_queue_depth");
	H_ASSERT_VAL(&p, 1, "ollama_pool_in_flight");
	H_ASSERT_VAL(&p, 1, "ollama_pool_requests_total", "method", "POST",
	    "route", "/api/generate", "code", "499");
	/* It never went upstream. */
	H_ASSERT_VAL(&p, 1, "ollama_pool_upstream_requests_total");
	prom_free(&p);
	H_ASSERT_INT_EQ(fake_stat(env.fake, "requests"), 1);

	http_conn_close(&a);
	METRICS_WAIT(env.daemon, &p, 1, "ollama_pool_cancelled_total", "phase",
	    "waiting_headers");
	assert_cancelled(&p, 1, 1, 0, 0);
	H_ASSERT_VAL(&p, 2, "ollama_pool_requests_total", "method", "POST",
	    "route", "/api/generate", "code", "499");
	H_ASSERT_VAL(&p, 0, "ollama_pool_in_flight");
	prom_free(&p);
}
END_TEST

START_TEST(test_cancel_backoff)
{
	struct harness_env env;
	struct http_conn c;
	struct prom p;

	H_BEGIN();
	harness_up(&env, "[retry]\nbackoff_factor = 30\nbackoff_max = 60\n");
	fake_reset(env.fake); /* the start-up check's GET */
	fake_fault(env.fake,
	    "{\"action\":\"status\",\"status\":503,"
	    "\"count\":1,\"path\":\"/api/tags\"}");
	raw_send(&c, env.daemon->port, "GET", "/api/tags", NULL);
	/* The retry is counted when the backoff begins. */
	METRICS_WAIT(
	    env.daemon, &p, 1, "ollama_pool_retries_total", "reason", "status");
	prom_free(&p);
	http_conn_close(&c);
	METRICS_WAIT(env.daemon, &p, 1, "ollama_pool_cancelled_total", "phase",
	    "backoff");
	assert_cancelled(&p, 0, 0, 1, 0);
	H_ASSERT_VAL(&p, 1, "ollama_pool_requests_total", "method", "GET",
	    "route", "/api/tags", "code", "499");
	H_ASSERT_VAL(&p, 1, "ollama_pool_upstream_requests_total");
	prom_free(&p);
	H_ASSERT_INT_EQ(fake_stat(env.fake, "requests"), 1);
}
END_TEST

/* ==== a request that fails mid-stream is still a request ============== */

START_TEST(test_mid_stream_failure_counted)
{
	struct harness_env env;
	struct http_resp r;
	struct http_req req;
	struct prom p;

	H_BEGIN();
	harness_up(&env, "");
	/* The upstream dies after two lines of a ten-token stream. */
	fake_fault(env.fake,
	    "{\"action\":\"die_after\",\"chunks\":2,"
	    "\"count\":1,\"path\":\"/api/generate\"}");
	json_hdr_req(&req, "POST",
	    harness_daemon_url(env.daemon, "/api/generate"),
	    "{\"model\":\"" MODEL "\",\"prompt\":\"p\","
	    "\"options\":{\"num_predict\":10}}");
	http_request(&req, &r);
	H_ASSERT(!r.ok && r.status == 200,
	    "a stream cut upstream must reach "
	    "the client cut short: ok %d status %ld",
	    r.ok, r.status);
	http_resp_free(&r);

	scrape(env.daemon, &p);
	H_ASSERT_VAL(&p, 1, "ollama_pool_first_byte_seconds_count", "route",
	    "/api/generate");
	H_ASSERT(PSUM(&p, "ollama_pool_requests_total", "route",
	             "/api/generate") == 1,
	    "a request whose upstream failed "
	    "mid-stream is missing from requests_total:\n%s",
	    prom_dump(&p));
	H_ASSERT_VAL(&p, 1, "ollama_pool_request_seconds_count", "route",
	    "/api/generate");
	H_ASSERT(PSUM(&p, "ollama_pool_tokens_total") == 0,
	    "tokens counted from a broken stream");
	prom_free(&p);
}
END_TEST

/*
 * Requests the daemon answers itself without a parsed head (400 or 501 on
 * a malformed request line, 431 on a head too big, 408 on one too slow)
 * are answers like any other: a client getting them is exactly what an
 * operator needs to see.
 */
START_TEST(test_rejected_requests_counted)
{
	struct harness_env env;
	struct http_conn c;
	struct http_resp r;
	struct prom p;
	char *big;
	long bad_status;

	H_BEGIN();
	harness_up(&env,
	    "[server]\nheader_timeout = 0.2\n"
	    "max_header_size = 4k\n");
	http_conn_open(&c, env.daemon->port);
	H_CHECK(
	    http_conn_sendstr(&c, "GARBAGE / HTTP/1.1\r\n\r\n", 10000) == 0);
	H_ASSERT(http_conn_read_response(&c, 0, WAIT_MS, &r) == 0,
	    "malformed request: %s", r.error);
	bad_status = r.status;
	H_ASSERT(bad_status == 400 || bad_status == 501, "malformed: %ld",
	    bad_status);
	http_resp_free(&r);
	http_conn_close(&c);

	big = harness_strf("GET /api/tags HTTP/1.1\r\nHost: x\r\nX-Big: "
	                   "%0*d\r\n\r\n",
	    8000, 0);
	http_conn_open(&c, env.daemon->port);
	H_CHECK(http_conn_sendstr(&c, big, 10000) == 0);
	H_ASSERT(http_conn_read_response(&c, 0, WAIT_MS, &r) == 0,
	    "big head: %s", r.error);
	H_ASSERT_INT_EQ(r.status, 431);
	http_resp_free(&r);
	http_conn_close(&c);

	/* Half a head, then nothing: header_timeout answers. */
	http_conn_open(&c, env.daemon->port);
	H_CHECK(http_conn_sendstr(
	            &c, "GET /api/tags HTTP/1.1\r\nHost: x\r\n", 10000) == 0);
	H_ASSERT(http_conn_read_response(&c, 0, WAIT_MS, &r) == 0,
	    "slow head: %s", r.error);
	H_ASSERT_INT_EQ(r.status, 408);
	http_resp_free(&r);
	http_conn_close(&c);

	scrape(env.daemon, &p);
	H_ASSERT(PSUM(&p, "ollama_pool_requests_total", "code",
	             harness_strf("%ld", bad_status)) == 1,
	    "the malformed request "
	    "answered %ld is not in requests_total: %s",
	    bad_status, prom_dump(&p));
	H_ASSERT(PSUM(&p, "ollama_pool_requests_total", "code", "431") == 1,
	    "the 431 is not in requests_total: %s", prom_dump(&p));
	H_ASSERT(PSUM(&p, "ollama_pool_requests_total", "code", "408") == 1,
	    "the 408 is not in requests_total: %s", prom_dump(&p));
	H_ASSERT_VAL(&p, 0, "ollama_pool_upstream_requests_total");
	prom_free(&p);
}
END_TEST

/* ==== 6: tokens ========================================================= */

START_TEST(test_tokens_counted)
{
	static const char prompt[] = "Why is the sky blue? Answer briefly.";
	struct harness_env env;
	struct http_resp r;
	struct prom p;
	long gen_prompt, chat_prompt, nostream_prompt, other_prompt;
	cJSON *j;

	H_BEGIN();
	harness_up(&env, "");
	/* A streamed generate: seven tokens and the final chunk. */
	via(env.daemon, "POST", "/api/generate",
	    harness_strf(
	        "{\"model\":\"" MODEL
	        "\",\"prompt\":\"%s\",\"options\":{\"num_predict\":7}}",
	        prompt),
	    200, &r);
	H_ASSERT_INT_EQ(http_count_lines(&r.body), 8);
	j = last_line_json(&r);
	gen_prompt = jlong(j, "prompt_eval_count");
	H_ASSERT_INT_EQ(gen_prompt, strlen(prompt));
	H_ASSERT_INT_EQ(jlong(j, "eval_count"), 7);
	cJSON_Delete(j);
	http_resp_free(&r);

	/* A streamed chat: four tokens, prompt of all message contents. */
	via(env.daemon, "POST", "/api/chat",
	    "{\"model\":\"" MODEL "\","
	    "\"messages\":[{\"role\":\"system\",\"content\":\"Be terse.\"},"
	    "{\"role\":\"user\",\"content\":\"Hello there\"}],"
	    "\"options\":{\"num_predict\":4}}",
	    200, &r);
	j = last_line_json(&r);
	chat_prompt = jlong(j, "prompt_eval_count");
	H_ASSERT_INT_EQ(chat_prompt, strlen("Be terse.Hello there"));
	H_ASSERT_INT_EQ(jlong(j, "eval_count"), 4);
	cJSON_Delete(j);
	http_resp_free(&r);

	/* Not streamed: one JSON document with the counts. */
	via(env.daemon, "POST", "/api/generate",
	    "{\"model\":\"" MODEL "\","
	    "\"prompt\":\"xyz\",\"stream\":false,\"options\":"
	    "{\"num_predict\":3}}",
	    200, &r);
	j = http_json(&r);
	H_ASSERT(j != NULL, "not JSON: %.300s", r.body.data);
	nostream_prompt = jlong(j, "prompt_eval_count");
	H_ASSERT_INT_EQ(nostream_prompt, 3);
	cJSON_Delete(j);
	http_resp_free(&r);

	/* Another model keeps its own series. */
	via(env.daemon, "POST", "/api/generate",
	    "{\"model\":\"qwen2:0.5b\","
	    "\"prompt\":\"12345\",\"options\":{\"num_predict\":2}}",
	    200, &r);
	j = last_line_json(&r);
	other_prompt = jlong(j, "prompt_eval_count");
	cJSON_Delete(j);
	http_resp_free(&r);

	/* An error answer books nothing. */
	via_free(env.daemon, "POST", "/api/generate",
	    "{\"model\":"
	    "\"missing-model\",\"prompt\":\"p\"}",
	    404);

	scrape(env.daemon, &p);
	H_ASSERT_VAL(&p, 7 + 4 + 3, "ollama_pool_tokens_total", "model", MODEL,
	    "kind", "completion");
	H_ASSERT_VAL(&p, gen_prompt + chat_prompt + nostream_prompt,
	    "ollama_pool_tokens_total", "model", MODEL, "kind", "prompt");
	H_ASSERT_VAL(&p, 2, "ollama_pool_tokens_total", "model", "qwen2:0.5b",
	    "kind", "completion");
	H_ASSERT_VAL(&p, other_prompt, "ollama_pool_tokens_total", "model",
	    "qwen2:0.5b", "kind", "prompt");
	H_ASSERT(PSUM(&p, "ollama_pool_tokens_total", "kind", "completion") ==
	        7 + 4 + 3 + 2,
	    "completion tokens counted for other requests:\n%s", prom_dump(&p));
	H_ASSERT(PSUM(&p, "ollama_pool_tokens_total", "kind", "prompt") ==
	        gen_prompt + chat_prompt + nostream_prompt + other_prompt,
	    "prompt tokens counted for other requests:\n%s", prom_dump(&p));
	prom_free(&p);
}
END_TEST

/*
 * The fake cannot send a big "context" array, but a long model name makes
 * every line, the final one included, as long as we like: the counts then
 * come a few hundred KiB into the line, across many reads.
 */
START_TEST(test_tokens_huge_final_line)
{
	enum { NAME_LEN = 300 * 1024 };
	struct harness_env env;
	struct http_resp r;
	struct prom p;
	const char *nl;
	char *name;
	double comp, prom_tokens;
	cJSON *j;
	size_t i;

	H_BEGIN();
	harness_up(&env, "");
	name = malloc(NAME_LEN + 1);
	H_CHECK(name != NULL);
	for (i = 0; i < NAME_LEN; i++)
		name[i] = (char)('a' + i % 26);
	name[NAME_LEN] = '\0';
	via(env.daemon, "POST", "/api/generate",
	    harness_strf("{\"model\":"
	                 "\"%s\",\"prompt\":\"0123456789\",\"options\":"
	                 "{\"num_predict\":3}}",
	        name),
	    200, &r);
	/* The final line really is huge. */
	nl = r.body.data + r.body.len - 1;
	while (nl > r.body.data && nl[-1] != '\n')
		nl--;
	H_ASSERT((size_t)(r.body.data + r.body.len - nl) > NAME_LEN,
	    "final line is only %zu bytes",
	    (size_t)(r.body.data + r.body.len - nl));
	j = last_line_json(&r);
	H_ASSERT_INT_EQ(jlong(j, "eval_count"), 3);
	H_ASSERT_INT_EQ(jlong(j, "prompt_eval_count"), 10);
	cJSON_Delete(j);
	http_resp_free(&r);

	scrape(env.daemon, &p);
	comp = PSUM(&p, "ollama_pool_tokens_total", "kind", "completion");
	prom_tokens = PSUM(&p, "ollama_pool_tokens_total", "kind", "prompt");
	H_ASSERT(comp == 3 && prom_tokens == 10,
	    "tokens after a huge final "
	    "line: completion %g (want 3), prompt %g (want 10):\n%.2000s",
	    comp, prom_tokens, prom_dump(&p));
	prom_free(&p);
	free(name);
}
END_TEST

/*
 * Real model names are often long: a Hugging Face quantisation such as
 * hf.co/mradermacher/Llama-3.3-70B-Instruct-abliterated-i1-GGUF:IQ4_XS is
 * 68 bytes.  Two quantisations of one model are two models; their tokens
 * must not be merged under a name that is neither.
 */
START_TEST(test_tokens_long_model_name)
{
	static const char *const models[] = {
	    "hf.co/mradermacher/Llama-3.3-70B-Instruct-abliterated-i1-GGUF"
	    ":IQ4_XS",
	    "hf.co/mradermacher/Llama-3.3-70B-Instruct-abliterated-i1-GGUF"
	    ":IQ4_NL",
	};
	struct harness_env env;
	struct prom p;
	size_t i;

	H_BEGIN();
	harness_up(&env, "");
	for (i = 0; i < 2; i++)
		via_free(env.daemon, "POST", "/api/generate",
		    harness_strf("{\"model\":\"%s\",\"prompt\":\"abc\","
		                 "\"options\":{\"num_predict\":%zu}}",
		        models[i], 2 + i),
		    200);
	scrape(env.daemon, &p);
	for (i = 0; i < 2; i++) {
		const struct prom_sample *s =
		    PFIND(&p, "ollama_pool_tokens_total", "model", models[i],
		        "kind", "completion");

		H_ASSERT(s != NULL && s->value == (double)(2 + i),
		    "no tokens_total{model=\"%s\",kind=\"completion\"} %zu "
		    "(%zu bytes); the model label was cut or merged:\n%s",
		    models[i], 2 + i, strlen(models[i]), prom_dump(&p));
	}
	prom_free(&p);
}
END_TEST

/* The fake answers the next request on path with this 200 body. */
static void
fake_answer(const struct harness_fake *f, const char *path, const char *ctype,
    const char *body)
{
	cJSON *j = cJSON_CreateObject();
	char *s;

	cJSON_AddStringToObject(j, "action", "status");
	cJSON_AddNumberToObject(j, "status", 200);
	cJSON_AddStringToObject(j, "path", path);
	cJSON_AddStringToObject(j, "content_type", ctype);
	cJSON_AddStringToObject(j, "body", body);
	s = cJSON_PrintUnformatted(j);
	fake_fault(f, s);
	free(s);
	cJSON_Delete(j);
}

/* Other Ollama-compatible servers put spaces after separators, and may
 * break lines inside an object. */
START_TEST(test_tokens_spaced_json)
{
	struct harness_env env;
	struct prom p;

	H_BEGIN();
	harness_up(&env, "");
	fake_answer(env.fake, "/api/chat", "application/x-ndjson",
	    "{\"model\": \"spaced\", \"message\": {\"role\": \"assistant\", "
	    "\"content\": \"Hi\"}, \"done\": false}\n"
	    "{\"model\": \"spaced\", \"message\": {\"role\": \"assistant\", "
	    "\"content\": \"\"}, \"done\": true, \"done_reason\": \"stop\", "
	    "\"prompt_eval_count\": 12, \"eval_count\": 34}\n");
	via_free(env.daemon, "POST", "/api/chat",
	    "{\"model\":\"spaced\",\"messages\":[]}", 200);
	fake_answer(env.fake, "/api/generate", "application/json",
	    "{\n  \"model\": \"spaced\",\n  \"response\": \"x\",\n"
	    "  \"done\": true,\n  \"prompt_eval_count\":\n    1,\n"
	    "  \"eval_count\":\n\t2\n}\n");
	via_free(env.daemon, "POST", "/api/generate",
	    "{\"model\":\"spaced\",\"stream\":false}", 200);
	scrape(env.daemon, &p);
	H_ASSERT_VAL(&p, 12 + 1, "ollama_pool_tokens_total", "model", "spaced",
	    "kind", "prompt");
	H_ASSERT_VAL(&p, 34 + 2, "ollama_pool_tokens_total", "model", "spaced",
	    "kind", "completion");
	prom_free(&p);
}
END_TEST

/* A tool call's arguments (an object, or a string) may hold anything: only
 * the top-level counts of the final line are booked. */
START_TEST(test_tokens_nested_counts_ignored)
{
	struct harness_env env;
	struct prom p;

	H_BEGIN();
	harness_up(&env, "");
	fake_answer(env.fake, "/api/chat", "application/x-ndjson",
	    "{\"model\":\"tools\",\"message\":{\"role\":\"assistant\","
	    "\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"f\","
	    "\"arguments\":{\"done\":true,\"eval_count\":999999}}}]},"
	    "\"done\":false}\n"
	    "{\"model\":\"tools\",\"message\":{\"role\":\"assistant\","
	    "\"content\":\"\"},\"done\":true,\"prompt_eval_count\":5,"
	    "\"eval_count\":6,\"extra\":{\"tool_calls\":[{\"function\":{"
	    "\"arguments\":{\"prompt_eval_count\":999999,"
	    "\"eval_count\":999999}}},{\"function\":{\"arguments\":"
	    "\"{\\\"eval_count\\\":888}\"}}]}}\n");
	via_free(env.daemon, "POST", "/api/chat",
	    "{\"model\":\"tools\",\"messages\":[]}", 200);
	/* Only a nested "done": true: no final line at all. */
	fake_answer(env.fake, "/api/chat", "application/x-ndjson",
	    "{\"model\":\"undone\",\"message\":{\"role\":\"assistant\","
	    "\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"f\","
	    "\"arguments\":{\"done\":true,\"eval_count\":999999}}}]},"
	    "\"done\":false}\n");
	via_free(env.daemon, "POST", "/api/chat",
	    "{\"model\":\"undone\",\"messages\":[]}", 200);
	scrape(env.daemon, &p);
	H_ASSERT_VAL(&p, 5, "ollama_pool_tokens_total", "model", "tools",
	    "kind", "prompt");
	H_ASSERT_VAL(&p, 6, "ollama_pool_tokens_total", "model", "tools",
	    "kind", "completion");
	H_ASSERT(PFIND(&p, "ollama_pool_tokens_total", "model", "undone",
	             "kind", "completion") == NULL,
	    "tokens booked from a nested done:\n%s", prom_dump(&p));
	prom_free(&p);
}
END_TEST

/* /v1 answers book their usage: always when not streamed, and from the
 * last chunk of a stream with stream_options.include_usage.  Embeddings
 * book their prompt. */
START_TEST(test_tokens_openai_usage)
{
	static const struct {
		const char *path, *model, *body;
		long prompt, completion;
	} cases[] = {
	    {"/v1/chat/completions", "oai-chat",
	        "\"messages\":[{\"role\":\"user\",\"content\":\"abc\"}],"
	        "\"max_tokens\":3",
	        3, 3},
	    {"/v1/chat/completions", "oai-stream",
	        "\"messages\":[{\"role\":\"user\",\"content\":\"abcd\"}],"
	        "\"max_tokens\":2,\"stream\":true,"
	        "\"stream_options\":{\"include_usage\":true}",
	        4, 2},
	    {"/v1/chat/completions", "oai-nousage",
	        "\"messages\":[{\"role\":\"user\",\"content\":\"abcd\"}],"
	        "\"max_tokens\":2,\"stream\":true",
	        -1, -1},
	    {"/v1/completions", "oai-compl",
	        "\"prompt\":\"hello\",\"max_tokens\":4,\"stream\":true,"
	        "\"stream_options\":{\"include_usage\":true}",
	        5, 4},
	    {"/v1/completions", "oai-compl-nostream",
	        "\"prompt\":\"hi\",\"max_tokens\":1", 2, 1},
	    {"/v1/embeddings", "oai-embed", "\"input\":\"hello\"", 1, 0},
	    {"/api/embed", "embedder", "\"input\":\"hello\"", 1, 0},
	};
	struct harness_env env;
	struct http_resp r;
	struct prom p;
	size_t i;

	H_BEGIN();
	harness_up(&env, "");
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		via(env.daemon, "POST", cases[i].path,
		    harness_strf(
		        "{\"model\":\"%s\",%s}", cases[i].model, cases[i].body),
		    200, &r);
		/* The fake answers as Ollama does: usage last, then DONE. */
		if (strstr(cases[i].body, "include_usage") != NULL)
			H_ASSERT(strstr(r.body.data,
			             "\"choices\":[],\"usage\":{") != NULL &&
			        strstr(r.body.data, "}\n\ndata: [DONE]\n\n") !=
			            NULL,
			    "no usage chunk: %.2000s", r.body.data);
		http_resp_free(&r);
	}
	scrape(env.daemon, &p);
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		if (cases[i].prompt < 0) {
			H_ASSERT(PFIND(&p, "ollama_pool_tokens_total", "model",
			             cases[i].model, "kind", "prompt") == NULL,
			    "%s: tokens from a stream without usage:\n%s",
			    cases[i].model, prom_dump(&p));
			continue;
		}
		H_ASSERT_VAL(&p, cases[i].prompt, "ollama_pool_tokens_total",
		    "model", cases[i].model, "kind", "prompt");
		H_ASSERT_VAL(&p, cases[i].completion,
		    "ollama_pool_tokens_total", "model", cases[i].model, "kind",
		    "completion");
	}
	prom_free(&p);
}
END_TEST

/* ==== 7: the queue ====================================================== */

START_TEST(test_queue_depth_and_wait)
{
	struct harness_env env;
	struct http_conn a, b;
	struct http_resp ra, rb;
	struct prom p;
	double t_a_sent, t_a_seen, t_b_sent, t_obs, lower, upper, sum;

	H_BEGIN();
	harness_up(&env, "[upstream]\npool_maxsize = 1\n");
	/* A: ten tokens 100 ms apart, about a second on the only slot. */
	t_a_sent = harness_now();
	raw_send(&a, env.daemon->port, "POST", "/api/generate",
	    "{\"model\":\"" MODEL "\",\"prompt\":\"a\",\"options\":"
	    "{\"num_predict\":10},\"fake_interval_ms\":100}");
	fake_wait_stat(env.fake, "requests", 1);
	t_a_seen = harness_now();
	t_b_sent = harness_now();
	raw_send(&b, env.daemon->port, "POST", "/api/generate",
	    "{\"model\":\"" MODEL "\",\"prompt\":\"b\",\"options\":"
	    "{\"num_predict\":1}}");
	METRICS_WAIT(env.daemon, &p, 1, "ollama_pool_queue_depth");
	/* B was queued before this scrape ended. */
	t_obs = harness_now();
	H_ASSERT_VAL(&p, 1, "ollama_pool_in_flight");
	H_ASSERT_VAL(&p, 1, "ollama_pool_upstream_requests_total");
	prom_free(&p);

	H_ASSERT(http_conn_read_response(&a, 0, WAIT_MS, &ra) == 0, "A: %s",
	    ra.error);
	H_ASSERT(http_conn_read_response(&b, 0, WAIT_MS, &rb) == 0, "B: %s",
	    rb.error);
	H_ASSERT(ra.status == 200 && rb.status == 200, "A %ld, B %ld",
	    ra.status, rb.status);
	H_ASSERT_INT_EQ(http_count_lines(&ra.body), 11);

	scrape(env.daemon, &p);
	H_ASSERT_VAL(&p, 2, "ollama_pool_queue_wait_seconds_count");
	H_ASSERT_VAL(&p, 0, "ollama_pool_queue_depth");
	H_ASSERT_VAL(&p, 0, "ollama_pool_in_flight");
	sum = PVAL(&p, "ollama_pool_queue_wait_seconds_sum");
	/* B waited at least from the scrape that saw it queued to the end
	 * of A (the slot is freed before A's last bytes reach A). */
	lower = ra.t_end - t_obs - 0.1;
	/* And at most from its sending to its answer, plus A's own wait. */
	upper = (rb.t_end - t_b_sent) + (t_a_seen - t_a_sent) + 0.1;
	H_ASSERT(sum >= lower && sum <= upper,
	    "queue_wait_seconds_sum %.3f "
	    "s, want between %.3f and %.3f",
	    sum, lower, upper);
	H_ASSERT(lower > 0.5,
	    "A ended too soon (%.3f s) for the test to "
	    "mean anything",
	    lower);
	/* The long wait is in a bucket above half a second. */
	H_ASSERT(
	    PVAL(&p, "ollama_pool_queue_wait_seconds_bucket", "le", "0.5") == 1,
	    "one wait (A's) under 0.5 s:\n%s", prom_dump(&p));
	prom_free(&p);
	http_resp_free(&ra);
	http_resp_free(&rb);
	http_conn_close(&a);
	http_conn_close(&b);
}
END_TEST

/* ==== 8: body bytes, exactly =========================================== */

START_TEST(test_bytes_exact)
{
	enum { BLOB_LEN = 100003 };
	static const char *const blob_hdrs[] = {
	    "Content-Type: application/octet-stream", NULL};
	static const char show[] = "{\"model\":\"" MODEL "\"}";
	static const char gen[] =
	    "{\"model\":\"" MODEL "\",\"prompt\":"
	    "\"count my bytes\",\"stream\":false,\"options\":"
	    "{\"num_predict\":9}}";
	static const char chat[] =
	    "{\"model\":\"" MODEL "\",\"messages\":"
	    "[{\"role\":\"user\",\"content\":\"and mine, streamed\"}],"
	    "\"options\":{\"num_predict\":6}}";
	struct harness_membody mb;
	struct harness_env env;
	struct http_resp r;
	struct http_req req;
	struct prom p;
	unsigned long long in = 0, out = 0;
	char *blob, hex[65];
	size_t i;

	H_BEGIN();
	harness_up(&env, "[retry]\nbackoff_factor = 0.01\n");
	/* A body sent once, answered after a retry: counted once. */
	fake_fault(env.fake,
	    "{\"action\":\"status\",\"status\":503,"
	    "\"count\":1,\"path\":\"/api/show\"}");
	via(env.daemon, "POST", "/api/show", show, 200, &r);
	in += strlen(show);
	out += r.body.len;
	http_resp_free(&r);
	via(env.daemon, "POST", "/api/generate", gen, 200, &r);
	in += strlen(gen);
	out += r.body.len;
	http_resp_free(&r);
	/* Chunked to the client: the body, not the framing. */
	via(env.daemon, "POST", "/api/chat", chat, 200, &r);
	H_ASSERT(http_header_get(&r, "Transfer-Encoding") != NULL,
	    "the chat stream should be chunked");
	in += strlen(chat);
	out += r.body.len;
	http_resp_free(&r);
	via(env.daemon, NULL, "/api/tags", NULL, 200, &r);
	out += r.body.len;
	http_resp_free(&r);
	via(env.daemon, NULL, "/no/such/thing", NULL, 404, &r);
	out += r.body.len;
	http_resp_free(&r);
	json_hdr_req(
	    &req, "HEAD", harness_daemon_url(env.daemon, "/api/tags"), NULL);
	http_request(&req, &r);
	H_ASSERT(r.ok && r.status == 200 && r.body.len == 0, "HEAD");
	http_resp_free(&r);
	/* A chunked upload: its decoded bytes, not the chunk framing. */
	blob = malloc(BLOB_LEN);
	H_CHECK(blob != NULL);
	for (i = 0; i < BLOB_LEN; i++)
		blob[i] = (char)(i * 7 + 3);
	harness_sha256_hex(blob, BLOB_LEN, hex);
	memset(&mb, 0, sizeof mb);
	mb.data = blob;
	mb.len = BLOB_LEN;
	mb.piece = 4099;
	memset(&req, 0, sizeof req);
	req.method = "POST";
	req.url = harness_daemon_url(
	    env.daemon, harness_strf("/api/blobs/sha256:%s", hex));
	req.headers = blob_hdrs;
	req.read_fn = harness_membody_read;
	req.read_arg = &mb;
	http_request(&req, &r);
	H_ASSERT(r.ok && r.status == 201, "blob upload: %ld %s %.200s",
	    r.status, r.error, r.body.data);
	in += BLOB_LEN;
	out += r.body.len;
	http_resp_free(&r);
	free(blob);

	/* The scrape last; its own answer is not carried bytes. */
	scrape(env.daemon, &p);
	H_ASSERT_VAL(&p, in, "ollama_pool_bytes_total", "direction", "in");
	H_ASSERT_VAL(&p, out, "ollama_pool_bytes_total", "direction", "out");
	prom_free(&p);
	cJSON_Delete(stats_get(env.daemon));
	via_free(env.daemon, NULL, HEALTH_PATH, NULL, 200);
	scrape(env.daemon, &p);
	H_ASSERT_VAL(&p, in, "ollama_pool_bytes_total", "direction", "in");
	H_ASSERT_VAL(&p, out, "ollama_pool_bytes_total", "direction", "out");
	prom_free(&p);
}
END_TEST

/* ==== 9: /ollama-pool/stats tells the same story ======================= */

static int
is_admin_series(const char *method, const char *route, long code)
{
	return strcmp(method, "GET") == 0 && strcmp(route, ADMIN_ROUTE) == 0 &&
	    code == 200;
}

static void
assert_close(double a, double b, const char *what)
{
	H_ASSERT(fabs(a - b) <= 1e-6 * fmax(1.0, fabs(b)),
	    "%s: stats %.17g, "
	    "metrics %.17g",
	    what, a, b);
}

/* Histogram h of the stats against the exposition's family, label. */
static void
compare_histogram(const struct prom *p, const cJSON *h, const char *family,
    const char *route, double count_extra)
{
	const cJSON *buckets, *b;
	char *name;
	double v;
	int nb = 0;

	buckets = jobj(h, "buckets");
	cJSON_ArrayForEach(b, buckets)
	{
		H_ASSERT(cJSON_IsNumber(b), "%s bucket %s", family, b->string);
		name = harness_strf("%s_bucket", family);
		if (route != NULL)
			v = PVAL(p, name, "route", route, "le", b->string);
		else
			v = PVAL(p, name, "le", b->string);
		/* The extra observations fall in some bucket, and surely in
		 * +Inf. */
		if (strcmp(b->string, "+Inf") == 0 || count_extra == 0)
			assert_close(b->valuedouble, v + count_extra,
			    harness_strf("%s{%s} le=%s", family,
			        route ? route : "", b->string));
		else
			H_ASSERT(b->valuedouble >= v &&
			        b->valuedouble <= v + count_extra,
			    "%s{%s} le=%s: "
			    "stats %g, metrics %g",
			    family, route ? route : "", b->string,
			    b->valuedouble, v);
		nb++;
	}
	/* As many buckets as the exposition has for this label set. */
	name = harness_strf("%s_bucket", family);
	H_ASSERT(nb > 1 &&
	        (double)nb ==
	            (route != NULL ? prom_count(p, name, "route", route,
	                                 (const char *)NULL)
	                           : prom_count(p, name, (const char *)NULL)),
	    "%s: %d buckets in the stats, not as in the exposition", family,
	    nb);
	name = harness_strf("%s_count", family);
	v = route ? PVAL(p, name, "route", route) : PVAL(p, name);
	assert_close(jnum(h, "count"), v + count_extra, name);
	if (count_extra == 0) {
		name = harness_strf("%s_sum", family);
		v = route ? PVAL(p, name, "route", route) : PVAL(p, name);
		assert_close(jnum(h, "sum"), v, name);
	}
}

/* Every figure of the stats against the scrape taken just before it.
 * That scrape was counted once it had rendered, so the stats show one
 * more GET /ollama-pool 200 (and one more request_seconds observation for
 * the route), and the stats request's own connection was counted before
 * the stats rendered. */
static void
compare_stats(const struct prom *p, const cJSON *s)
{
	const cJSON *a, *e, *o, *h;
	const char *method, *route, *version;
	long code;
	double want, n = 0;
	size_t i;

	version = cJSON_GetStringValue(cJSON_GetObjectItem(s, "version"));
	H_ASSERT(version != NULL &&
	        PFIND(p, "ollama_pool_build_info", "version", version) != NULL,
	    "stats version %s is not the "
	    "build_info label",
	    version ? version : "(none)");
	assert_close(jnum(s, "start_time"),
	    PVAL(p, "process_start_time_seconds"), "start_time");

	/* requests: the same series, the same counts. */
	a = jobj(s, "requests");
	H_ASSERT(cJSON_IsArray(a), "requests is not an array");
	cJSON_ArrayForEach(e, a)
	{
		method = cJSON_GetStringValue(cJSON_GetObjectItem(e, "method"));
		route = cJSON_GetStringValue(cJSON_GetObjectItem(e, "route"));
		code = jlong(e, "code");
		H_ASSERT(method != NULL && route != NULL, "request entry");
		if (PFIND(p, "ollama_pool_requests_total", "method", method,
		        "route", route, "code",
		        harness_strf("%ld", code)) == NULL)
			want = 0;
		else
			want =
			    REQS(p, method, route, harness_strf("%ld", code));
		if (is_admin_series(method, route, code))
			want += 1;
		assert_close(jnum(e, "count"), want,
		    harness_strf("requests %s %s %ld", method, route, code));
		n++;
	}
	/* And none of the exposition's is missing from the stats. */
	for (i = 0; i < p->ns; i++)
		if (strcmp(p->s[i].name, "ollama_pool_requests_total") == 0)
			n--;
	H_ASSERT(n == 0 ||
	        (n == 1 &&
	            PFIND(p, "ollama_pool_requests_total", "method", "GET",
	                "route", ADMIN_ROUTE, "code", "200") == NULL),
	    "the stats and the exposition list different request series");

	o = jobj(s, "upstream");
	assert_close(jnum(o, "connections_opened"),
	    PVAL(p, "ollama_pool_upstream_connections_opened_total"),
	    "connections_opened");
	assert_close(jnum(o, "connections_open"),
	    PVAL(p, "ollama_pool_upstream_connections_open"),
	    "connections_open");
	assert_close(jnum(o, "requests"),
	    PVAL(p, "ollama_pool_upstream_requests_total"),
	    "upstream requests");
	o = jobj(s, "retries");
	assert_close(jnum(o, "status"),
	    PVAL(p, "ollama_pool_retries_total", "reason", "status"),
	    "retries status");
	assert_close(jnum(o, "connect_failed"),
	    PVAL(p, "ollama_pool_retries_total", "reason", "connect_failed"),
	    "retries connect_failed");
	assert_close(jnum(o, "connection_reset"),
	    PVAL(p, "ollama_pool_retries_total", "reason", "connection_reset"),
	    "retries connection_reset");
	o = jobj(s, "cancelled");
	assert_close(jnum(o, "queued"),
	    PVAL(p, "ollama_pool_cancelled_total", "phase", "queued"),
	    "cancelled queued");
	assert_close(jnum(o, "waiting_headers"),
	    PVAL(p, "ollama_pool_cancelled_total", "phase", "waiting_headers"),
	    "cancelled waiting_headers");
	assert_close(jnum(o, "backoff"),
	    PVAL(p, "ollama_pool_cancelled_total", "phase", "backoff"),
	    "cancelled backoff");
	assert_close(jnum(o, "streaming"),
	    PVAL(p, "ollama_pool_cancelled_total", "phase", "streaming"),
	    "cancelled streaming");
	assert_close(jnum(s, "queue_depth"), PVAL(p, "ollama_pool_queue_depth"),
	    "queue_depth");
	assert_close(jnum(s, "in_flight"), PVAL(p, "ollama_pool_in_flight"),
	    "in_flight");
	compare_histogram(p, jobj(s, "queue_wait_seconds"),
	    "ollama_pool_queue_wait_seconds", NULL, 0);
	o = jobj(s, "client_connections");
	assert_close(jnum(o, "total"),
	    PVAL(p, "ollama_pool_client_connections_total") + 1,
	    "client connections total");

	/* Per-route histograms: the same routes, the same figures. */
	h = jobj(s, "first_byte_seconds");
	cJSON_ArrayForEach(e, h) compare_histogram(
	    p, e, "ollama_pool_first_byte_seconds", e->string, 0);
	for (i = 0; i < p->ns; i++)
		if (strcmp(p->s[i].name,
		        "ollama_pool_first_byte_seconds_count") == 0)
			H_ASSERT(cJSON_GetObjectItemCaseSensitive(h,
			             prom_label_get(&p->s[i], "route")) != NULL,
			    "first_byte_seconds for %s missing from stats",
			    prom_label_get(&p->s[i], "route"));
	h = jobj(s, "request_seconds");
	cJSON_ArrayForEach(e, h)
	    compare_histogram(p, e, "ollama_pool_request_seconds", e->string,
	        strcmp(e->string, ADMIN_ROUTE) == 0 ? 1 : 0);
	for (i = 0; i < p->ns; i++)
		if (strcmp(p->s[i].name, "ollama_pool_request_seconds_count") ==
		    0)
			H_ASSERT(cJSON_GetObjectItemCaseSensitive(h,
			             prom_label_get(&p->s[i], "route")) != NULL,
			    "request_seconds for %s missing from stats",
			    prom_label_get(&p->s[i], "route"));

	o = jobj(s, "bytes");
	assert_close(jnum(o, "in"),
	    PVAL(p, "ollama_pool_bytes_total", "direction", "in"), "bytes in");
	assert_close(jnum(o, "out"),
	    PVAL(p, "ollama_pool_bytes_total", "direction", "out"),
	    "bytes out");

	o = jobj(s, "tokens");
	n = 0;
	cJSON_ArrayForEach(e, o)
	{
		assert_close(jnum(e, "prompt"),
		    PVAL(p, "ollama_pool_tokens_total", "model", e->string,
		        "kind", "prompt"),
		    harness_strf("tokens %s prompt", e->string));
		assert_close(jnum(e, "completion"),
		    PVAL(p, "ollama_pool_tokens_total", "model", e->string,
		        "kind", "completion"),
		    harness_strf("tokens %s completion", e->string));
		n += 2;
	}
	for (i = 0; i < p->ns; i++)
		if (strcmp(p->s[i].name, "ollama_pool_tokens_total") == 0)
			n--;
	H_ASSERT(n == 0,
	    "the stats and the exposition list different "
	    "token series");

	o = jobj(s, "process");
	H_ASSERT(jnum(o, "resident_memory_bytes") > 0, "rss");
	H_ASSERT(jnum(o, "open_fds") > 0, "fds");
}

START_TEST(test_stats_matches_metrics)
{
	struct harness_env env;
	struct prom m1, m2;
	cJSON *s;

	H_BEGIN();
	harness_up(&env, "[retry]\nbackoff_factor = 0.01\n");
	via_free(env.daemon, NULL, "/api/tags", NULL, 200);
	via_free(env.daemon, NULL, "/api/tags", NULL, 200);
	via_free(env.daemon, NULL, "/nope", NULL, 404);
	fake_fault(env.fake,
	    "{\"action\":\"status\",\"status\":503,"
	    "\"count\":1,\"path\":\"/api/ps\"}");
	via_free(env.daemon, NULL, "/api/ps", NULL, 200);
	via_free(env.daemon, "POST", "/api/generate",
	    "{\"model\":\"" MODEL
	    "\",\"prompt\":\"tokens\",\"options\":{\"num_predict\":5}}",
	    200);
	via_free(env.daemon, "POST", "/api/chat",
	    "{\"model\":\"other:7b\","
	    "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
	    "\"stream\":false}",
	    200);
	cancel_one_waiting(&env, fake_stat(env.fake, "requests"));

	/* Nothing but the scrapes from here on. */
	scrape(env.daemon, &m1);
	s = stats_get(env.daemon);
	scrape(env.daemon, &m2);
	compare_stats(&m1, s);
	/* The second scrape saw the stats request counted as well. */
	H_ASSERT(REQS(&m2, "GET", ADMIN_ROUTE, "200") ==
	        REQS(&m1, "GET", ADMIN_ROUTE, "200") + 2,
	    "admin requests: %g "
	    "then %g",
	    REQS(&m1, "GET", ADMIN_ROUTE, "200"),
	    REQS(&m2, "GET", ADMIN_ROUTE, "200"));
	H_ASSERT(PVAL(&m2, "ollama_pool_client_connections_total") ==
	        PVAL(&m1, "ollama_pool_client_connections_total") + 2,
	    "client connections");
	/* The traffic's own figures, once more against what was sent. */
	H_ASSERT(jnum(jobj(s, "retries"), "status") == 1, "retries");
	H_ASSERT(
	    jnum(jobj(s, "cancelled"), "waiting_headers") == 1, "cancelled");
	H_ASSERT(
	    jnum(jobj(jobj(s, "tokens"), MODEL), "completion") == 5, "tokens");
	H_ASSERT(jnum(jobj(s, "upstream"), "requests") == 8,
	    "upstream requests %g", jnum(jobj(s, "upstream"), "requests"));
	cJSON_Delete(s);
	prom_free(&m1);
	prom_free(&m2);
}
END_TEST

/* ==== 10: health ======================================================== */

/* A health answer of `status`, as JSON. */
static cJSON *
health_check(struct http_resp *r, long status)
{
	const char *ct;
	cJSON *j;

	H_ASSERT(r->ok && r->status == status,
	    "health: %ld (want %ld) %s "
	    "%.300s",
	    r->status, status, r->error, r->body.data ? r->body.data : "");
	ct = http_header_get(r, "Content-Type");
	H_ASSERT(ct != NULL && strncasecmp(ct, "application/json", 16) == 0,
	    "health Content-Type %s", ct ? ct : "none");
	j = http_json(r);
	H_ASSERT(cJSON_IsObject(j), "health is not JSON: %.300s", r->body.data);
	return j;
}

static cJSON *
health(const struct harness_daemon *d, long status, struct http_resp *r)
{
	http_get(harness_daemon_url(d, HEALTH_PATH), r);
	return health_check(r, status);
}

/* Health answers are reused for about a second: polls until one says
 * `status`, within a few seconds, and returns it. */
static cJSON *
health_until(const struct harness_daemon *d, long status, struct http_resp *r)
{
	double t0 = harness_now();

	for (;;) {
		http_get(harness_daemon_url(d, HEALTH_PATH), r);
		if (r->status == status || harness_now() - t0 > 3.0)
			return health_check(r, status);
		http_resp_free(r);
		poll(NULL, 0, 50);
	}
}

START_TEST(test_health)
{
	enum { POLLS = 20 };
	struct harness_env env;
	struct http_resp r;
	struct prom p;
	const char *reason;
	double t0, took;
	cJSON *j;
	int i;

	H_BEGIN();
	harness_up(&env, "");
	j = health(env.daemon, 200, &r);
	H_ASSERT(cJSON_IsTrue(cJSON_GetObjectItem(j, "upstream_ok")),
	    "upstream_ok must be true with the fake up: %s", r.body.data);
	H_ASSERT(cJSON_GetObjectItem(j, "reason") == NULL,
	    "a healthy answer with a reason: %s", r.body.data);
	cJSON_Delete(j);
	http_resp_free(&r);

	/* Cheap to poll: an answer is reused for a second, and each probe
	 * is one request on the pooled connection. */
	t0 = harness_now();
	for (i = 0; i < POLLS; i++) {
		j = health(env.daemon, 200, &r);
		H_ASSERT(cJSON_IsTrue(cJSON_GetObjectItem(j, "upstream_ok")),
		    "poll %d: %s", i, r.body.data);
		cJSON_Delete(j);
		http_resp_free(&r);
	}
	took = harness_now() - t0;
	H_ASSERT(took < 3.0, "%d health polls took %.3f s", POLLS, took);
	H_ASSERT_INT_EQ(fake_stat(env.fake, "connections_used"), 1);
	H_ASSERT(fake_stat(env.fake, "requests") <= 2 + (long long)took,
	    "%d health polls in %.2f s cost %lld probes: want one a second",
	    POLLS + 1, took, fake_stat(env.fake, "requests"));
	scrape(env.daemon, &p);
	/* Probes open connections like any request, and pool them too. */
	H_ASSERT_VAL(&p, 1, "ollama_pool_upstream_connections_opened_total");
	/* They are not client requests sent upstream. */
	H_ASSERT_VAL(&p, 0, "ollama_pool_upstream_requests_total");
	H_ASSERT_VAL(&p, POLLS + 1, "ollama_pool_requests_total", "method",
	    "GET", "route", ADMIN_ROUTE, "code", "200");
	prom_free(&p);

	/* Upstream gone: 503, and why, within the second an answer is
	 * reused. */
	fake_stop(env.fake);
	t0 = harness_now();
	j = health_until(env.daemon, 503, &r);
	took = harness_now() - t0;
	H_ASSERT(cJSON_IsFalse(cJSON_GetObjectItem(j, "upstream_ok")),
	    "upstream_ok must be false with the upstream gone: %s",
	    r.body.data);
	reason = cJSON_GetStringValue(cJSON_GetObjectItem(j, "reason"));
	H_ASSERT(reason != NULL &&
	        (strcasestr(reason, "connect") != NULL ||
	            strcasestr(reason, "refused") != NULL),
	    "the reason should name "
	    "the failure: %s",
	    r.body.data);
	H_ASSERT(
	    took < 3.0, "an unreachable upstream took %.3f s to report", took);
	cJSON_Delete(j);
	http_resp_free(&r);
	scrape(env.daemon, &p);
	H_ASSERT_VAL(&p, 1, "ollama_pool_requests_total", "method", "GET",
	    "route", ADMIN_ROUTE, "code", "503");
	/* The dead pooled connection was dropped; one new socket tried. */
	H_ASSERT_VAL(&p, 2, "ollama_pool_upstream_connections_opened_total");
	H_ASSERT_VAL(&p, 0, "ollama_pool_upstream_connections_open");
	prom_free(&p);
}
END_TEST

START_TEST(test_health_upstream_error)
{
	struct harness_env env;
	struct http_resp r;
	const char *reason;
	cJSON *j;

	H_BEGIN();
	harness_up(&env, "");
	fake_fault(env.fake,
	    "{\"action\":\"status\",\"status\":500,"
	    "\"count\":1,\"path\":\"/api/version\"}");
	j = health(env.daemon, 503, &r);
	H_ASSERT(cJSON_IsFalse(cJSON_GetObjectItem(j, "upstream_ok")),
	    "upstream_ok: %s", r.body.data);
	reason = cJSON_GetStringValue(cJSON_GetObjectItem(j, "reason"));
	H_ASSERT(reason != NULL && strstr(reason, "500") != NULL,
	    "the reason should say the upstream answered 500: %s", r.body.data);
	cJSON_Delete(j);
	http_resp_free(&r);
	/* And the next probe, answered, is healthy again. */
	j = health_until(env.daemon, 200, &r);
	H_ASSERT(cJSON_IsTrue(cJSON_GetObjectItem(j, "upstream_ok")),
	    "upstream_ok: %s", r.body.data);
	cJSON_Delete(j);
	http_resp_free(&r);
}
END_TEST

/* A generation holding every slot, more waiting: health must not queue
 * behind them. */
START_TEST(test_health_pool_saturated)
{
	struct harness_env env;
	struct http_conn a, b;
	struct http_resp r;
	struct prom p;
	double t0, took;
	cJSON *j;

	H_BEGIN();
	harness_up(&env, "[upstream]\npool_maxsize = 1\n");
	raw_send(&a, env.daemon->port, "POST", "/api/generate",
	    "{\"model\":\"" MODEL "\",\"prompt\":\"a\","
	    "\"fake_first_byte_ms\":20000}");
	fake_wait_stat(env.fake, "requests", 1);
	raw_send(&b, env.daemon->port, "POST", "/api/generate",
	    "{\"model\":\"" MODEL "\",\"prompt\":\"b\"}");
	METRICS_WAIT(env.daemon, &p, 1, "ollama_pool_queue_depth");
	prom_free(&p);
	t0 = harness_now();
	j = health(env.daemon, 200, &r);
	took = harness_now() - t0;
	H_ASSERT(cJSON_IsTrue(cJSON_GetObjectItem(j, "upstream_ok")),
	    "upstream_ok: %s", r.body.data);
	H_ASSERT(took < 2.0, "health took %.3f s with the pool busy", took);
	cJSON_Delete(j);
	http_resp_free(&r);
	http_conn_close(&b);
	http_conn_close(&a);
}
END_TEST

/* ==== 11: the process ================================================== */

START_TEST(test_process_metrics)
{
	struct harness_env env;
	struct harness_run run;
	struct prom p;
	const char *argv[3];
	char version[64], *v;
	const struct prom_sample *bi;
	time_t before, now;
	double start, rss, fds;
	long vmrss;
	int procfds;
	size_t i, n;

	H_BEGIN();
	argv[0] = harness_daemon_bin();
	argv[1] = "-V";
	argv[2] = NULL;
	harness_run(argv, 10000, &run);
	H_ASSERT(!run.timed_out && WIFEXITED(run.wstatus) &&
	        WEXITSTATUS(run.wstatus) == 0,
	    "-V: 0x%x", run.wstatus);
	v = strrchr(run.out.data, ' ');
	H_ASSERT(v != NULL, "-V printed %s", run.out.data);
	snprintf(version, sizeof version, "%s", v + 1);
	version[strcspn(version, "\r\n")] = '\0';
	harness_run_free(&run);
	H_ASSERT(version[0] != '\0', "no version in -V");

	before = time(NULL);
	harness_up(&env, "");
	via_free(env.daemon, NULL, "/api/tags", NULL, 200);
	scrape(env.daemon, &p);
	now = time(NULL);

	start = PVAL(&p, "process_start_time_seconds");
	H_ASSERT(start >= (double)before - 1 && start <= (double)now &&
	        (double)now - start < 60,
	    "process_start_time_seconds %.0f, the "
	    "daemon started between %lld and %lld",
	    start, (long long)before, (long long)now);
	rss = PVAL(&p, "process_resident_memory_bytes");
	vmrss = harness_proc_status_kb(env.daemon->proc.pid, "VmRSS");
	H_ASSERT(rss > 0 && vmrss > 0 && rss >= vmrss * 1024.0 / 2 &&
	        rss <= vmrss * 1024.0 * 2,
	    "process_resident_memory_bytes %.0f, "
	    "/proc says %ld kB",
	    rss, vmrss);
	fds = PVAL(&p, "process_open_fds");
	procfds = harness_proc_fd_count(env.daemon->proc.pid);
	H_ASSERT(fds > 0 && fabs(fds - procfds) <= 4,
	    "process_open_fds "
	    "%.0f, /proc lists %d",
	    fds, procfds);

	/* Exactly one build_info, with the version -V prints. */
	n = 0;
	bi = NULL;
	for (i = 0; i < p.ns; i++)
		if (strcmp(p.s[i].name, "ollama_pool_build_info") == 0) {
			bi = &p.s[i];
			n++;
		}
	H_ASSERT(n == 1, "%zu build_info samples", n);
	H_ASSERT_STR_EQ(prom_label_get(bi, "version"), version);
	H_ASSERT(
	    bi->value == 1 && bi->nlabels == 1, "build_info %g", bi->value);
	prom_free(&p);
}
END_TEST

/* ---- the suite -------------------------------------------------------- */

static Suite *
metrics_suite(void)
{
	Suite *s;
	TCase *tc;

	s = suite_create("metrics");

	tc = harness_tcase(s, "parser", 10);
	tcase_add_test(tc, test_parser_strict);
	tcase_add_loop_test(tc, test_parser_rejects, 0, N_PROM_BAD);

	tc = harness_tcase(s, "exposition", 60);
	tcase_add_test(tc, test_exposition_after_mixed_traffic);
	tcase_add_test(tc, test_naive_requests_one_connection);
	tcase_add_test(tc, test_route_labels_bounded);

	tc = harness_tcase(s, "retries", 60);
	tcase_add_test(tc, test_retry_status);
	tcase_add_test(tc, test_retry_connect_failed);
	tcase_add_test(tc, test_retry_connection_reset);

	tc = harness_tcase(s, "cancel", 60);
	tcase_add_test(tc, test_cancel_waiting_headers);
	tcase_add_test(tc, test_cancel_streaming);
	tcase_add_test(tc, test_cancel_queued);
	tcase_add_test(tc, test_cancel_backoff);
	tcase_add_test(tc, test_mid_stream_failure_counted);
	tcase_add_test(tc, test_rejected_requests_counted);

	tc = harness_tcase(s, "tokens", 60);
	tcase_add_test(tc, test_tokens_counted);
	tcase_add_test(tc, test_tokens_huge_final_line);
	tcase_add_test(tc, test_tokens_long_model_name);
	tcase_add_test(tc, test_tokens_spaced_json);
	tcase_add_test(tc, test_tokens_nested_counts_ignored);
	tcase_add_test(tc, test_tokens_openai_usage);

	tc = harness_tcase(s, "figures", 60);
	tcase_add_test(tc, test_queue_depth_and_wait);
	tcase_add_test(tc, test_bytes_exact);
	tcase_add_test(tc, test_stats_matches_metrics);

	tc = harness_tcase(s, "health", 60);
	tcase_add_test(tc, test_health);
	tcase_add_test(tc, test_health_upstream_error);
	tcase_add_test(tc, test_health_pool_saturated);
	tcase_add_test(tc, test_process_metrics);

	return s;
}

int
main(void)
{
	return harness_main(metrics_suite());
}
