/*
 * Settings: one declarative table gives every key its section, type,
 * bounds, default and help.  Defaults go through the same setter as the
 * file, and a new configuration is parsed whole into a fresh struct before
 * anything uses it, so a bad file never leaves half-applied settings.
 */
#include "config.h"

#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <event2/util.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "ollama-pool.h"

enum setting_type {
	SET_LISTEN,
	SET_ADMIN_LISTEN,
	SET_URL,
	SET_INT,
	SET_SECONDS,
	SET_SIZE,
	SET_SIZE64,
	SET_BOOL,
	SET_STRING,
	SET_SECRET, /* a string -t never prints: it shows *** */
	SET_RESOLVER,
	SET_STATUSES,
	SET_METHODS,
	SET_ACCESS_LOG,
	SET_ACCESS_FORMAT,
	SET_MODELS, /* a model allow-list */
};

struct setting {
	const char *section;
	const char *key;
	enum setting_type type;
	size_t offset;
	const char *def;
	double min, max;
	const char *help;
};

#define OFF(f) offsetof(struct config, f)
#define CONFIG_TOKENS_FILE_MAX (1024 * 1024)
#define CONFIG_BACKENDS_MAX 256

static const struct setting settings[] = {
    {"server", "listen", SET_LISTEN, OFF(listen), DEFAULT_LISTEN, 0, 0,
        "addresses to accept clients on, space separated"},
    {"server", "admin_listen", SET_ADMIN_LISTEN, OFF(admin_listen), "", 0, 0,
        "one address serving /metrics, /health and /stats without a token; "
        "empty: none"},
    {"server", "max_header_size", SET_SIZE, OFF(max_header_size), "32k", 1024,
        1048576, "largest request head accepted"},
    {"server", "max_body_size", SET_SIZE64, OFF(max_body_size), "0", 0, 1e18,
        "largest request body accepted, 0 for no limit; 413 beyond"},
    {"server", "max_buffer", SET_SIZE, OFF(max_buffer), "1m", 65536, 1073741824,
        "most bytes buffered per connection and direction"},
    {"server", "header_timeout", SET_SECONDS, OFF(header_timeout), "30", 0.001,
        86400, "seconds allowed for a request's headers; then 408"},
    {"server", "shutdown_timeout", SET_SECONDS, OFF(shutdown_timeout), "30", 0,
        86400, "seconds in-flight requests get to finish on SIGTERM"},
    {"server", "body_timeout", SET_SECONDS, OFF(body_timeout), "60", 0.001,
        86400, "seconds a request body may stall while we wait for it"},
    {"server", "max_clients", SET_INT, OFF(max_clients), "10000", 1, 10000000,
        "most client connections open at once"},
    {"server", "allow_remote", SET_BOOL, OFF(allow_remote), "no", 0, 0,
        "allow listening on addresses other than loopback"},
    {"server", "client_tokens", SET_SECRET, OFF(client_tokens_key), "", 0, 0,
        "bearer tokens clients must send, space separated"},
    {"server", "client_tokens_file", SET_STRING, OFF(client_tokens_file), "", 0,
        0,
        "file of more bearer tokens, one a line; relative to "
        "$CREDENTIALS_DIRECTORY when set, else to this file's folder"},
    {"server", "idle_timeout", SET_SECONDS, OFF(idle_timeout), "75", 0.001,
        86400, "seconds a kept-alive client may sit idle"},
    {"server", "access_log", SET_ACCESS_LOG, OFF(access_log), "off", 0, 0,
        "one line per request: off, stderr, or an absolute file path "
        "(reopened on SIGUSR1)"},
    {"server", "access_log_format", SET_ACCESS_FORMAT, OFF(access_log_format),
        "json", 0, 0, "json (one object per line) or combined (Apache's)"},
    {"upstream", "url", SET_URL, OFF(upstream), DEFAULT_UPSTREAM, 0, 0,
        "the Ollama server, in OLLAMA_HOST syntax"},
    {"upstream", "pool_maxsize", SET_INT, OFF(pool_maxsize), "20", 1, 10000,
        "most connections open to the upstream at once"},
    {"upstream", "pool_connections", SET_INT, OFF(pool_connections), "10", 0,
        10000, "idle connections kept open for reuse"},
    {"upstream", "queue_max", SET_INT, OFF(queue_max), "512", 0, 1000000,
        "requests that may wait for a pool slot; beyond it, 503"},
    {"upstream", "queue_timeout", SET_SECONDS, OFF(queue_timeout), "600", 0.001,
        86400, "seconds a request may wait for a slot; then 503"},
    {"upstream", "connect_timeout", SET_SECONDS, OFF(connect_timeout), "10",
        0.001, 3600, "seconds allowed for one connection attempt"},
    {"upstream", "first_byte_timeout", SET_SECONDS, OFF(first_byte_timeout),
        "0", 0, 86400,
        "seconds to wait for the response head; 0 waits for ever"},
    {"upstream", "stream_idle_timeout", SET_SECONDS, OFF(stream_idle_timeout),
        "0", 0, 86400,
        "seconds a response may go without a byte; 0 waits for ever"},
    {"upstream", "ca_file", SET_STRING, OFF(ca_file), "", 0, 0,
        "extra CA certificate file trusted for an https upstream"},
    {"upstream", "tls_verify", SET_BOOL, OFF(tls_verify), "yes", 0, 0,
        "verify the upstream's certificate and name"},
    {"upstream", "num_parallel", SET_INT, OFF(num_parallel), "1", 1, 1024,
        "requests per model a backend runs at once; set it to the "
        "backend's OLLAMA_NUM_PARALLEL"},
    {"upstream", "probe_interval", SET_SECONDS, OFF(probe_interval), "5", 0.1,
        3600, "seconds between health probes of a backend"},
    {"upstream", "fail_threshold", SET_INT, OFF(fail_threshold), "2", 1, 100,
        "failed probes or requests in a row that eject a backend"},
    {"upstream", "resolve_interval", SET_SECONDS, OFF(resolve_interval), "10",
        0.1, 86400,
        "seconds between lookups of a backend's host name: each address "
        "is a member"},
    {"upstream", "prewarm", SET_INT, OFF(prewarm), "1", 0, 100,
        "connections opened to each member as it joins, before any "
        "request"},
    {"upstream", "weight", SET_INT, OFF(weight), "1", 1, 1000,
        "a backend's share of requests among equals"},
    {"upstream", "models", SET_MODELS, OFF(models), "", 0, 0,
        "the models a backend may serve, space separated; empty: every "
        "model"},
    {"upstream", "token_file", SET_STRING, OFF(token_file), "", 0, 0,
        "file of the bearer token sent upstream; relative to "
        "$CREDENTIALS_DIRECTORY when set, else to this file's folder"},
    {"upstream", "resolver", SET_RESOLVER, OFF(resolver), "", 0, 0,
        "DNS servers (IP[:PORT], space separated) for the names in listen "
        "and url; empty: /etc/resolv.conf"},
    {"retry", "retries", SET_INT, OFF(retries), "3", 0, 100,
        "retries after a failed attempt; 0 turns retrying off"},
    {"retry", "backoff_factor", SET_SECONDS, OFF(backoff_factor), "0.3", 0,
        3600, "retry n waits backoff_factor * 2^(n-1) seconds"},
    {"retry", "backoff_max", SET_SECONDS, OFF(backoff_max), "30", 0, 86400,
        "longest wait before a retry, Retry-After included"},
    {"retry", "retry_statuses", SET_STATUSES, OFF(retry_statuses),
        "500,502,503,504", 0, 0, "upstream statuses that are retried"},
    {"retry", "retry_methods", SET_METHODS, OFF(retry_methods), "all", 0, 0,
        "methods that are retried: all, or a list such as GET,POST"},
    {"retry", "retry_body_max", SET_SIZE, OFF(retry_body_max), "16m", 0,
        1073741824, "largest request body kept for replay"},
};
#define NSETTINGS (sizeof settings / sizeof settings[0])

#define OFFB(f) offsetof(struct backend_conf, f)
/* The keys of a [backend NAME] section: its url, and the [upstream]
 * settings a backend may set again for itself, whose type, bounds and
 * default come from the table above.  -t prints them in this order. */
static const struct backend_key {
	const char *key;
	size_t offset;
} backend_keys[] = {
    {"url", OFFB(url)},
    {"weight", OFFB(weight)},
    {"models", OFFB(models)},
    {"token_file", OFFB(token_file)},
    {"pool_maxsize", OFFB(pool_maxsize)},
    {"pool_connections", OFFB(pool_connections)},
    {"connect_timeout", OFFB(connect_timeout)},
    {"first_byte_timeout", OFFB(first_byte_timeout)},
    {"stream_idle_timeout", OFFB(stream_idle_timeout)},
    {"ca_file", OFFB(ca_file)},
    {"tls_verify", OFFB(tls_verify)},
    {"num_parallel", OFFB(num_parallel)},
    {"probe_interval", OFFB(probe_interval)},
    {"fail_threshold", OFFB(fail_threshold)},
    {"resolve_interval", OFFB(resolve_interval)},
    {"prewarm", OFFB(prewarm)},
};
#define NBACKEND_KEYS (sizeof backend_keys / sizeof backend_keys[0])

/* A [backend NAME] section as read: what it set, and where. */
struct config_backend_load {
	struct backend_conf bc;
	int set_line[NBACKEND_KEYS];
	unsigned char failed[NBACKEND_KEYS];
};

struct config_load_ctx {
	struct config *cfg;
	const char *file;
	FILE *fp;
	struct config_errors *errs;
	int line;
	int listen_seen;
	int pending; /* text holds a line inih has not answered for yet */
	int handled; /* inih passed the current line to the handler */
	int bad_section; /* in an unknown [section], named at its header */
	int backend; /* index of the [backend] section being read; -1 */
	struct config_backend_load *backends;
	int nbackends;
	char text[512]; /* the current line, as read */
	int set_line[NSETTINGS];
	unsigned char failed[NSETTINGS]; /* its value was refused */
};

static void PRINTFLIKE(4, 5) config_error(
    struct config_errors *e, const char *file, int line, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	int i, at = line > 0 ? line : INT_MAX;

	if (e->n == CONFIG_ERRORS_MAX) {
		e->more++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	/* In line order: the checks across keys come after the parse. */
	for (i = e->n; i > 0 && e->at[i - 1] > at; i--) {
		e->line[i] = e->line[i - 1];
		e->at[i] = e->at[i - 1];
	}
	e->at[i] = at;
	e->n++;
	if (line > 0)
		xasprintf(&e->line[i], "%s:%d: %s", file, line, msg);
	else
		xasprintf(&e->line[i], "%s: %s", file, msg);
}

void
config_errors_free(struct config_errors *e)
{
	int i;

	for (i = 0; i < e->n; i++)
		free(e->line[i]);
	memset(e, 0, sizeof *e);
}

/* Optimal string alignment distance, ignoring case: the edits (insert,
 * delete, substitute, swap two neighbours) that turn a into b. */
int
config_distance(const char *a, const char *b)
{
	enum { MAXLEN = 64 };
	int rows[3][MAXLEN + 1], *d2 = rows[0], *d1 = rows[1], *d = rows[2];
	int i, j, cost, *t;
	size_t la = strlen(a), lb = strlen(b);

	if (la > MAXLEN || lb > MAXLEN)
		return MAXLEN;
	for (j = 0; j <= (int)lb; j++)
		d1[j] = j;
	for (i = 1; i <= (int)la; i++) {
		d[0] = i;
		for (j = 1; j <= (int)lb; j++) {
			cost = tolower((unsigned char)a[i - 1]) !=
			    tolower((unsigned char)b[j - 1]);
			d[j] = d1[j - 1] + cost;
			if (d1[j] + 1 < d[j])
				d[j] = d1[j] + 1;
			if (d[j - 1] + 1 < d[j])
				d[j] = d[j - 1] + 1;
			if (i > 1 && j > 1 &&
			    tolower((unsigned char)a[i - 1]) ==
			        tolower((unsigned char)b[j - 2]) &&
			    tolower((unsigned char)a[i - 2]) ==
			        tolower((unsigned char)b[j - 1]) &&
			    d2[j - 2] + 1 < d[j])
				d[j] = d2[j - 2] + 1;
		}
		t = d2;
		d2 = d1;
		d1 = d;
		d = t;
	}
	return d1[lb];
}

/* How far name is from known, or -1 when too far to be a slip: at most
 * two edits, and at most one in three characters. */
static int
config_near(const char *name, const char *known)
{
	size_t len =
	    strlen(name) > strlen(known) ? strlen(name) : strlen(known);
	int d = config_distance(name, known);

	return d <= 2 && (size_t)d * 3 <= len ? d : -1;
}

/* The sections, in the table's order, as "[server], [upstream], ...". */
static const char *
config_section_list(char *buf, size_t len)
{
	size_t i, n = 0;

	buf[0] = '\0';
	for (i = 0; i < NSETTINGS; i++)
		if (i == 0 ||
		    strcmp(settings[i].section, settings[i - 1].section) != 0)
			n += snprintf(buf + n, n < len ? len - n : 0, "%s[%s]",
			    i ? ", " : "", settings[i].section);
	return buf;
}

/* "backend NAME" (any case, blanks between): 1, with *rest at NAME. */
static int
config_backend_header(const char *name, const char **rest)
{
	if (strncasecmp(name, "backend", 7) != 0 ||
	    (name[7] != '\0' && !isspace((unsigned char)name[7])))
		return 0;
	for (name += 7; isspace((unsigned char)*name); name++)
		;
	*rest = name;
	return 1;
}

/* The index of a [backend] key, or -1. */
static int
config_backend_key_index(const char *key)
{
	size_t k;

	for (k = 0; k < NBACKEND_KEYS; k++)
		if (strcasecmp(backend_keys[k].key, key) == 0)
			return (int)k;
	return -1;
}

/* May s be set in this section ("server", "backend gpu0", ...)? */
static int
config_key_in(const struct setting *s, const char *section)
{
	const char *rest;

	if (config_backend_header(section, &rest))
		return strcmp(s->section, "upstream") == 0 &&
		    config_backend_key_index(s->key) >= 0;
	return strcasecmp(s->section, section) == 0;
}

/* [backend NAME]: a name of its own, 1 to 63 of [A-Za-z0-9._-]; a bad
 * header is named once and the keys under it passed over. */
static void
config_backend_start(struct config_load_ctx *ctx, const char *rest)
{
	struct config_backend_load *b;
	char name[128];
	size_t len;
	int i;

	snprintf(name, sizeof name, "%s", rest);
	for (len = strlen(name);
	     len > 0 && isspace((unsigned char)name[len - 1]);)
		name[--len] = '\0';
	ctx->bad_section = 1;
	if (len == 0) {
		config_error(ctx->errs, ctx->file, ctx->line,
		    "[backend] needs a name, as in [backend gpu0]");
		return;
	}
	if (len >= BACKEND_NAME_MAX ||
	    strspn(name,
	        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	        "0123456789._-") != len) {
		config_error(ctx->errs, ctx->file, ctx->line,
		    "backend name '%s' must be 1 to %d letters, digits, '.', "
		    "'_' or '-'",
		    name, BACKEND_NAME_MAX - 1);
		return;
	}
	for (i = 0; i < ctx->nbackends; i++)
		if (strcasecmp(ctx->backends[i].bc.name, name) == 0) {
			config_error(ctx->errs, ctx->file, ctx->line,
			    "duplicate [backend %s]: line %d already has "
			    "[backend %s]",
			    name, ctx->backends[i].bc.line,
			    ctx->backends[i].bc.name);
			return;
		}
	if (ctx->nbackends == CONFIG_BACKENDS_MAX) {
		config_error(ctx->errs, ctx->file, ctx->line,
		    "too many [backend] sections (most %d)",
		    CONFIG_BACKENDS_MAX);
		return;
	}
	ctx->backends = xrealloc(ctx->backends,
	    (size_t)(ctx->nbackends + 1) * sizeof *ctx->backends);
	b = &ctx->backends[ctx->nbackends];
	memset(b, 0, sizeof *b);
	snprintf(b->bc.name, sizeof b->bc.name, "%s", name);
	b->bc.line = ctx->line;
	ctx->backend = ctx->nbackends++;
	ctx->bad_section = 0;
}

static int
config_section_known(const char *name)
{
	size_t i;

	for (i = 0; i < NSETTINGS; i++)
		if (strcasecmp(settings[i].section, name) == 0)
			return 1;
	return 0;
}

/* "[upstrem]": named once, with the nearest known section and the list;
 * the keys under it are then passed over in silence. */
static void
config_section_start(struct config_load_ctx *ctx, const char *name)
{
	const char *best = NULL, *rest;
	char list[256], word[64], backend[128];
	size_t i, wlen;
	int d, bestd = 99;

	ctx->backend = -1;
	if (config_backend_header(name, &rest)) {
		config_backend_start(ctx, rest);
		return;
	}
	ctx->bad_section = !config_section_known(name);
	if (!ctx->bad_section)
		return;
	for (i = 0; i < NSETTINGS; i++) {
		d = config_near(name, settings[i].section);
		if (d >= 0 && d < bestd) {
			bestd = d;
			best = settings[i].section;
		}
	}
	/* [backedn gpu0]: the first word is a slip for backend. */
	wlen = strcspn(name, " \t");
	if (best == NULL && name[wlen] != '\0' && wlen < sizeof word) {
		snprintf(word, sizeof word, "%.*s", (int)wlen, name);
		for (rest = name + wlen; isspace((unsigned char)*rest); rest++)
			;
		if (config_near(word, "backend") >= 0) {
			snprintf(backend, sizeof backend, "backend %s", rest);
			best = backend;
		}
	}
	config_error(ctx->errs, ctx->file, ctx->line,
	    "unknown section [%s]%s%s%s; known sections: %s", name,
	    best ? " (did you mean [" : "", best ? best : "", best ? "]?)" : "",
	    config_section_list(list, sizeof list));
}

/* An unknown key, with the nearest known one: in this section first, a
 * key of another section next ("did you mean pool_maxsize in
 * [upstream]?"). */
static void
config_unknown_key(
    struct config_load_ctx *ctx, const char *section, const char *key)
{
	const struct setting *best = NULL;
	size_t i;
	int d, bestd = 99, same;

	for (i = 0; i < NSETTINGS; i++) {
		d = config_near(key, settings[i].key);
		same = config_key_in(&settings[i], section);
		if (d >= 0 && (d < bestd || (d == bestd && same))) {
			bestd = d;
			best = &settings[i];
		}
	}
	if (best == NULL)
		config_error(ctx->errs, ctx->file, ctx->line,
		    "unknown key '%s' in section [%s]", key, section);
	else if (config_key_in(best, section))
		config_error(ctx->errs, ctx->file, ctx->line,
		    "unknown key '%s' in section [%s] (did you mean %s?)", key,
		    section, best->key);
	else
		config_error(ctx->errs, ctx->file, ctx->line,
		    "unknown key '%s' in section [%s] (did you mean %s in "
		    "[%s]?)",
		    key, section, best->key, best->section);
}

/* A key before any [section]: say where it belongs, when it is known. */
static void
config_outside_key(struct config_load_ctx *ctx, const char *key)
{
	char list[256];
	size_t i;

	for (i = 0; i < NSETTINGS; i++)
		if (strcasecmp(settings[i].key, key) == 0) {
			config_error(ctx->errs, ctx->file, ctx->line,
			    "key '%s' outside of a section (it belongs under "
			    "[%s])",
			    key, settings[i].section);
			return;
		}
	config_error(ctx->errs, ctx->file, ctx->line,
	    "key '%s' outside of a section (put it under one of %s)", key,
	    config_section_list(list, sizeof list));
}

static const struct setting *
config_find(const char *section, const char *key)
{
	size_t i;

	for (i = 0; i < NSETTINGS; i++)
		if (strcasecmp(settings[i].section, section) == 0 &&
		    strcasecmp(settings[i].key, key) == 0)
			return &settings[i];
	return NULL;
}

/* A number for an int, size or duration setting, within its bounds. */
static int
config_apply_number(const struct setting *s, void *field, const char *value,
    char *err, size_t errlen)
{
	char lo[64], hi[64];
	double v;
	int bad;

	if (s->type == SET_SECONDS)
		bad = config_parse_duration(value, &v) != 0;
	else
		bad = config_parse_number(value, &v,
		          s->type == SET_SIZE || s->type == SET_SIZE64) != 0 ||
		    v != floor(v);
	if (bad) {
		snprintf(err, errlen, "%s must be %s, not '%s'", s->key,
		    s->type == SET_SECONDS
		        ? "a duration: seconds (30, 0.5) or a number with ms, "
		          "s, m or h (250ms, 10s, 1.5m, 2h)"
		        : s->type == SET_SIZE || s->type == SET_SIZE64
		        ? "a size (e.g. 64k, 1m)"
		        : "a whole number",
		    value);
		return -1;
	}
	if (v < s->min || v > s->max) {
		if (s->type == SET_SECONDS)
			snprintf(err, errlen,
			    "%s must be between %s and %s, not '%s'", s->key,
			    config_format_duration(s->min, lo, sizeof lo),
			    config_format_duration(s->max, hi, sizeof hi),
			    value);
		else
			snprintf(err, errlen,
			    "%s must be between %g and %g, not '%s'", s->key,
			    s->min, s->max, value);
		return -1;
	}
	if (s->type == SET_INT)
		*(int *)field = (int)v;
	else if (s->type == SET_SIZE)
		*(size_t *)field = (size_t)v;
	else if (s->type == SET_SIZE64)
		*(uint64_t *)field = (uint64_t)v;
	else
		*(double *)field = v;
	return 0;
}

/* A value that is its field alone: anything but listen, admin_listen
 * and url, which fill more of struct config. */
static int
config_apply_value(const struct setting *s, void *field, const char *value,
    char *err, size_t errlen)
{
	switch (s->type) {
	case SET_STRING:
	case SET_SECRET:
		free(*(char **)field);
		*(char **)field = xstrdup(value);
		return 0;
	case SET_MODELS:
		return config_parse_models(field, value, err, errlen);
	case SET_RESOLVER:
		return config_parse_resolver(field, value, err, errlen);
	case SET_STATUSES:
		return config_parse_statuses(field, value, err, errlen);
	case SET_METHODS:
		return config_parse_methods(field, value, err, errlen);
	case SET_ACCESS_LOG:
		return config_parse_access_log(field, value, err, errlen);
	case SET_ACCESS_FORMAT:
		return config_parse_access_format(field, value, err, errlen);
	case SET_BOOL:
		if (strcasecmp(value, "yes") == 0 ||
		    strcasecmp(value, "true") == 0 ||
		    strcasecmp(value, "on") == 0 || strcmp(value, "1") == 0)
			*(int *)field = 1;
		else if (strcasecmp(value, "no") == 0 ||
		    strcasecmp(value, "false") == 0 ||
		    strcasecmp(value, "off") == 0 || strcmp(value, "0") == 0)
			*(int *)field = 0;
		else {
			snprintf(err, errlen, "%s must be yes or no, not '%s'",
			    s->key, value);
			return -1;
		}
		return 0;
	case SET_INT:
	case SET_SECONDS:
	case SET_SIZE:
	case SET_SIZE64:
		return config_apply_number(s, field, value, err, errlen);
	default:
		break;
	}
	snprintf(err, errlen, "%s cannot be set here", s->key);
	return -1;
}

static int
config_apply(struct config *cfg, const struct setting *s, const char *value,
    int append_listen, char *err, size_t errlen)
{
	void *field = (char *)cfg + s->offset;
	char *copy, *tok, *save;

	switch (s->type) {
	case SET_LISTEN:
		if (!append_listen)
			cfg->nlisten = 0;
		copy = xstrdup(value);
		for (tok = strtok_r(copy, " \t,", &save); tok != NULL;
		     tok = strtok_r(NULL, " \t,", &save)) {
			if (cfg->nlisten == MAX_LISTEN) {
				snprintf(err, errlen,
				    "too many listen addresses (most %d)",
				    MAX_LISTEN);
				free(copy);
				return -1;
			}
			if (addr_parse_listen(tok, &cfg->listen[cfg->nlisten],
			        err, errlen) != 0) {
				free(copy);
				return -1;
			}
			cfg->nlisten++;
		}
		free(copy);
		if (cfg->nlisten == 0) {
			snprintf(
			    err, errlen, "listen needs at least one address");
			return -1;
		}
		return 0;
	case SET_ADMIN_LISTEN:
		return config_parse_admin_listen(cfg, value, err, errlen);
	case SET_URL:
		if (addr_parse_upstream(value, field, err, errlen) != 0)
			return -1;
		free(cfg->upstream_text);
		cfg->upstream_text = xstrdup(value);
		return 0;
	default:
		return config_apply_value(s, field, value, err, errlen);
	}
}

/* client_tokens is what the proxy checks: the key's tokens and those
 * read from client_tokens_file, together. */
static void
config_tokens_join(struct config *cfg)
{
	const char *key = cfg->client_tokens_key ? cfg->client_tokens_key : "";
	const char *read =
	    cfg->client_tokens_read ? cfg->client_tokens_read : "";

	free(cfg->client_tokens);
	xasprintf(&cfg->client_tokens, "%s%s%s", key,
	    key[0] != '\0' && read[0] != '\0' ? " " : "", read);
}

/* A token read, wiped before its memory goes back. */
static void
config_token_forget(struct backend_conf *bc)
{
	if (bc->token != NULL) {
		explicit_bzero(bc->token, strlen(bc->token));
		free(bc->token);
		bc->token = NULL;
	}
	free(bc->token_path);
	bc->token_path = NULL;
}

static void
config_backend_conf_free(struct backend_conf *bc)
{
	config_token_forget(bc);
	free(bc->url_text);
	free(bc->models);
	free(bc->token_file);
	free(bc->ca_file);
	memset(bc, 0, sizeof *bc);
}

static void
config_backends_free(struct config *cfg)
{
	int i;

	for (i = 0; i < cfg->nbackends; i++)
		config_backend_conf_free(&cfg->backends[i]);
	free(cfg->backends);
	cfg->backends = NULL;
	cfg->nbackends = 0;
	cfg->fleet = 0;
}

/* Gives bc [upstream]'s value of every key but url that it did not set
 * itself (set: its set_line[], NULL when it set none). */
static void
config_backend_inherit(
    struct backend_conf *bc, const struct config *cfg, const int *set)
{
	const struct setting *s;
	const void *from;
	void *to;
	size_t k;

	for (k = 1; k < NBACKEND_KEYS; k++) {
		if (set != NULL && set[k] > 0)
			continue;
		s = config_find("upstream", backend_keys[k].key);
		from = (const char *)cfg + s->offset;
		to = (char *)bc + backend_keys[k].offset;
		switch (s->type) {
		case SET_INT:
		case SET_BOOL:
			*(int *)to = *(const int *)from;
			break;
		case SET_SECONDS:
			*(double *)to = *(const double *)from;
			break;
		default: /* the strings */
			free(*(char **)to);
			*(char **)to = xstrdup(*(char *const *)from);
			break;
		}
	}
}

/* The one backend when the file has no [backend] section: [upstream]
 * (and -u) as they are.  Keeps a token already read. */
static void
config_backend_from_upstream(struct backend_conf *bc, const struct config *cfg)
{
	snprintf(bc->name, sizeof bc->name, "default");
	bc->line = 0;
	bc->url = cfg->upstream;
	free(bc->url_text);
	bc->url_text = xstrdup(
	    cfg->upstream_text ? cfg->upstream_text : cfg->upstream.base);
	bc->url_line = cfg->url_cli ? 0 : cfg->url_line;
	config_backend_inherit(bc, cfg, NULL);
}

static void
config_backends_default(struct config *cfg)
{
	config_backends_free(cfg);
	cfg->backends = xcalloc(1, sizeof *cfg->backends);
	cfg->nbackends = 1;
	config_backend_from_upstream(&cfg->backends[0], cfg);
}

/* Sets one key, without a file: nothing is read.  The one backend of a
 * file without [backend] sections follows [upstream]; the backends of a
 * fleet keep what they have. */
int
config_set(struct config *cfg, const char *section, const char *key,
    const char *value, char *err, size_t errlen)
{
	const struct setting *s = config_find(section, key);
	int rc;

	if (s == NULL) {
		snprintf(err, errlen, "unknown key '%s' in section [%s]", key,
		    section);
		return -1;
	}
	rc = config_apply(cfg, s, value, 0, err, errlen);
	config_tokens_join(cfg);
	if (!cfg->fleet && cfg->nbackends == 1)
		config_backend_from_upstream(&cfg->backends[0], cfg);
	return rc;
}

struct config *
config_new_defaults(void)
{
	struct config *cfg = xcalloc(1, sizeof *cfg);
	char err[256];
	size_t i;

	for (i = 0; i < NSETTINGS; i++)
		if (config_apply(cfg, &settings[i], settings[i].def, 0, err,
		        sizeof err) != 0)
			fatal("bad built-in default for %s: %s",
			    settings[i].key, err);
	config_tokens_join(cfg);
	config_backends_default(cfg);
	return cfg;
}

void
config_free(struct config *cfg)
{
	size_t i;

	if (cfg == NULL)
		return;
	for (i = 0; i < NSETTINGS; i++)
		if (settings[i].type == SET_STRING ||
		    settings[i].type == SET_SECRET ||
		    settings[i].type == SET_RESOLVER ||
		    settings[i].type == SET_ACCESS_LOG ||
		    settings[i].type == SET_MODELS)
			free(*(char **)((char *)cfg + settings[i].offset));
	config_backends_free(cfg);
	free(cfg->client_tokens);
	free(cfg->client_tokens_path);
	free(cfg->client_tokens_read);
	free(cfg->upstream_text);
	free(cfg->file);
	free(cfg);
}

/* inih's find_chars_or_comment(): the first ']' of a section line, or
 * where a ';' after a blank starts a comment. */
static const char *
config_section_end(const char *p)
{
	int was_space = 0;

	while (*p != '\0' && *p != ']' && !(was_space && *p == ';')) {
		was_space = isspace((unsigned char)*p);
		p++;
	}
	return p;
}

/*
 * inih has taken a line: it called the handler for a value, or it said
 * nothing.  Then the line is blank, a comment, a [section] (checked
 * here) or a syntax error (inih keeps only the first of those; we name
 * every one).
 */
static void
config_line_done(struct config_load_ctx *ctx)
{
	const char *p = ctx->text, *end;
	char name[128];

	if (!ctx->pending || ctx->handled) {
		ctx->pending = 0;
		return;
	}
	ctx->pending = 0;
	if (ctx->line == 1 && strncmp(p, "\xEF\xBB\xBF", 3) == 0)
		p += 3;
	while (isspace((unsigned char)*p))
		p++;
	if (*p == '\0' || *p == ';' || *p == '#')
		return;
	if (*p == '[' && *(end = config_section_end(p + 1)) == ']') {
		snprintf(name, sizeof name, "%.*s", (int)(end - p - 1), p + 1);
		config_section_start(ctx, name);
		return;
	}
	config_error(ctx->errs, ctx->file, ctx->line, "%s",
	    *p == '[' ? "syntax error: a section header needs its ']', as in "
	                "[server]"
	              : "syntax error: expected '[section]' or 'key = value'");
}

/*
 * inih reads through us: we number the lines, keep each one's text to
 * check what inih passed over, and refuse a line too long for its buffer
 * instead of letting it come in two pieces.
 */
static char *
config_reader(char *str, int num, void *stream)
{
	struct config_load_ctx *ctx = stream;
	size_t len;
	int c;

	config_line_done(ctx);
	if (fgets(str, num, ctx->fp) == NULL)
		return NULL;
	ctx->line++;
	len = strlen(str);
	if (len > 0 && str[len - 1] != '\n' && (c = getc(ctx->fp)) != EOF &&
	    c != '\n') {
		while (c != EOF && c != '\n')
			c = getc(ctx->fp);
		config_error(ctx->errs, ctx->file, ctx->line,
		    "line longer than %d characters (a long listen may be "
		    "split over several listen lines)",
		    num - 1);
		str[0] = '\0';
		return str;
	}
	snprintf(ctx->text, sizeof ctx->text, "%s", str);
	ctx->pending = 1;
	ctx->handled = 0;
	return str;
}

/* A key under [backend NAME]: url, or an [upstream] key a backend may
 * set again; the fleet-wide ones are named as such. */
static void
config_backend_key(
    struct config_load_ctx *ctx, const char *key, const char *value)
{
	struct config_backend_load *b = &ctx->backends[ctx->backend];
	const struct setting *s;
	char err[400], section[BACKEND_NAME_MAX + 16];
	int k = config_backend_key_index(key), rc;

	if (k < 0) {
		if ((s = config_find("upstream", key)) != NULL)
			config_error(ctx->errs, ctx->file, ctx->line,
			    "'%s' is fleet-wide: set it in [upstream]", s->key);
		else {
			snprintf(
			    section, sizeof section, "backend %s", b->bc.name);
			config_unknown_key(ctx, section, key);
		}
		return;
	}
	s = config_find("upstream", backend_keys[k].key);
	if (s->type == SET_URL) {
		rc = addr_parse_upstream(value, &b->bc.url, err, sizeof err);
		if (rc == 0) {
			free(b->bc.url_text);
			b->bc.url_text = xstrdup(value);
		}
	} else
		rc = config_apply_value(s,
		    (char *)&b->bc + backend_keys[k].offset, value, err,
		    sizeof err);
	if (rc != 0) {
		config_error(ctx->errs, ctx->file, ctx->line, "%s", err);
		b->failed[k] = 1;
	}
	b->set_line[k] = ctx->line;
}

static int
config_handler(
    void *user, const char *section, const char *key, const char *value)
{
	struct config_load_ctx *ctx = user;
	const struct setting *s;
	char err[400];
	size_t i;

	ctx->handled = 1;
	if (ctx->bad_section)
		return 1; /* named once, at its header */
	if (section[0] == '\0') {
		config_outside_key(ctx, key);
		return 1;
	}
	/* inih's copy of a long [backend NAME] is cut short: ours is not. */
	if (ctx->backend >= 0) {
		config_backend_key(ctx, key, value);
		return 1;
	}
	if ((s = config_find(section, key)) == NULL) {
		config_unknown_key(ctx, section, key);
		return 1;
	}
	i = (size_t)(s - settings);
	if (config_apply(ctx->cfg, s, value,
	        s->type == SET_LISTEN && ctx->listen_seen, err,
	        sizeof err) != 0) {
		config_error(ctx->errs, ctx->file, ctx->line, "%s", err);
		ctx->failed[i] = 1;
	}
	if (s->type == SET_LISTEN)
		ctx->listen_seen = 1;
	ctx->set_line[i] = ctx->line;
	return 1;
}

static int
config_fail(
    char *err, size_t errlen, const char *file, int line, const char *msg)
{
	if (line > 0)
		snprintf(err, errlen, "%s:%d: %s", file, line, msg);
	else
		snprintf(err, errlen, "%s: %s", file, msg);
	return -1;
}

/* A regular file of at most 1 MiB: never a FIFO that would block the
 * loop, nor a device that never ends. */
static FILE *
config_tokens_open(const char *path, char *err, size_t errlen)
{
	struct stat st;
	FILE *fp;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		snprintf(
		    err, errlen, "cannot open '%s': %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
	    st.st_size > CONFIG_TOKENS_FILE_MAX) {
		snprintf(err, errlen,
		    "'%s' is not a regular file of at most %d bytes", path,
		    CONFIG_TOKENS_FILE_MAX);
		close(fd);
		return NULL;
	}
	if ((fp = fdopen(fd, "r")) == NULL) {
		snprintf(
		    err, errlen, "cannot read '%s': %s", path, strerror(errno));
		close(fd);
	}
	return fp;
}

/* Reads the tokens of path, one a line (blank lines and # comments
 * skipped, blanks around a token trimmed), into cfg.  Never quotes a
 * token: a message names the line. */
static int
config_tokens_read(
    struct config *cfg, const char *path, char *err, size_t errlen)
{
	char *line = NULL, *p, *all = NULL, *next;
	size_t cap = 0, len;
	int lineno = 0, n = 0, rc = -1;
	FILE *fp;

	if ((fp = config_tokens_open(path, err, errlen)) == NULL)
		return -1;
	while (getline(&line, &cap, fp) >= 0) {
		lineno++;
		for (p = line; isspace((unsigned char)*p); p++)
			;
		for (len = strlen(p);
		     len > 0 && isspace((unsigned char)p[len - 1]);)
			p[--len] = '\0';
		if (*p == '\0' || *p == '#')
			continue;
		if (strcspn(p, " \t,") != len) {
			snprintf(err, errlen,
			    "'%s' line %d: a token cannot hold blanks or "
			    "commas",
			    path, lineno);
			goto out;
		}
		xasprintf(&next, "%s%s%s", all ? all : "", all ? " " : "", p);
		free(all);
		all = next;
		n++;
	}
	if (ferror(fp))
		snprintf(
		    err, errlen, "cannot read '%s': %s", path, strerror(errno));
	else if (n == 0)
		snprintf(err, errlen,
		    "'%s' holds no token (one a line; blank lines and # "
		    "comments are skipped)",
		    path);
	else {
		free(cfg->client_tokens_read);
		cfg->client_tokens_read = all;
		cfg->client_tokens_nread = n;
		all = NULL;
		rc = 0;
	}
out:
	free(all);
	free(line);
	fclose(fp);
	return rc;
}

/*
 * Where a file the configuration names is read (client_tokens_file,
 * token_file): an absolute path as it is; a relative one in
 * $CREDENTIALS_DIRECTORY (systemd's LoadCredential=) when that is set,
 * else next to the configuration file.  *how says which, for messages.
 */
static char *
config_credential_path(const char *file, const char *name, const char **how)
{
	const char *dir = getenv("CREDENTIALS_DIRECTORY");
	char *path;
	int dlen;

	*how = "";
	if (name[0] == '/')
		return xstrdup(name);
	if (dir != NULL && dir[0] != '\0') {
		xasprintf(&path, "%s/%s", dir, name);
		*how = ", in $CREDENTIALS_DIRECTORY";
		return path;
	}
	dir = file != NULL ? strrchr(file, '/') : NULL;
	dlen = dir != NULL ? (int)(dir - file) + 1 : 0;
	xasprintf(&path, "%.*s%s", dlen, dlen > 0 ? file : "", name);
	*how = ", next to this file ($CREDENTIALS_DIRECTORY is unset)";
	return path;
}

/* client_tokens_file, read at every load, so a reload takes a changed
 * file. */
static void
config_tokens_load(struct config_load_ctx *ctx)
{
	struct config *cfg = ctx->cfg;
	size_t i =
	    (size_t)(config_find("server", "client_tokens_file") - settings);
	const char *name = cfg->client_tokens_file;
	const char *how;
	char err[1200];

	if (name[0] == '\0' || ctx->failed[i]) {
		config_tokens_join(cfg);
		return;
	}
	free(cfg->client_tokens_path);
	cfg->client_tokens_path = config_credential_path(ctx->file, name, &how);
	if (config_tokens_read(cfg, cfg->client_tokens_path, err, sizeof err) !=
	    0)
		config_error(ctx->errs, ctx->file, ctx->set_line[i],
		    "client_tokens_file = %s%s: %s", name, how, err);
	config_tokens_join(cfg);
}

/* No blank, control character or DEL: what a header value takes. */
static int
config_token_clean(const char *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if ((unsigned char)p[i] <= ' ' || (unsigned char)p[i] == 0x7f)
			return 0;
	return 1;
}

/* The one token of a token_file: the whole file, blanks around it
 * trimmed, with no blank or control character inside.  Never quotes
 * it. */
static int
config_token_read(const char *path, char **token, char *err, size_t errlen)
{
	char *buf = NULL, *p;
	size_t cap = 0, len;
	ssize_t n;
	int rc = -1;
	FILE *fp;

	if ((fp = config_tokens_open(path, err, errlen)) == NULL)
		return -1;
	/* Up to a NUL, which a token cannot hold either. */
	n = getdelim(&buf, &cap, '\0', fp);
	if (ferror(fp)) {
		snprintf(
		    err, errlen, "cannot read '%s': %s", path, strerror(errno));
		goto out;
	}
	len = n > 0 ? (size_t)n : 0;
	if (len > 0 && buf[len - 1] == '\0')
		len--;
	for (p = buf; len > 0 && isspace((unsigned char)*p); p++, len--)
		;
	while (len > 0 && isspace((unsigned char)p[len - 1]))
		len--;
	if (len == 0)
		snprintf(err, errlen, "'%s' holds no token", path);
	else if (getc(fp) != EOF || !config_token_clean(p, len))
		snprintf(err, errlen,
		    "'%s' must hold one token, with no blank or control "
		    "character inside it",
		    path);
	else {
		*token = xstrndup(p, len);
		rc = 0;
	}
out:
	if (buf != NULL) {
		explicit_bzero(buf, cap);
		free(buf);
	}
	fclose(fp);
	return rc;
}

/* A backend's token_file, read at every load; line is where it was
 * set. */
static void
config_backend_token(
    struct config_load_ctx *ctx, struct backend_conf *bc, int line, int fleet)
{
	const char *how;
	char err[1200];

	config_token_forget(bc);
	if (bc->token_file == NULL || bc->token_file[0] == '\0')
		return;
	bc->token_path =
	    config_credential_path(ctx->file, bc->token_file, &how);
	if (config_token_read(bc->token_path, &bc->token, err, sizeof err) != 0)
		config_error(ctx->errs, ctx->file, line,
		    "%s%s%stoken_file = %s%s: %s", fleet ? "backend " : "",
		    fleet ? bc->name : "", fleet ? ": " : "", bc->token_file,
		    how, err);
}

/* pool_connections may not exceed pool_maxsize, when both were set. */
static void
config_check_pool(struct config_load_ctx *ctx)
{
	struct config *cfg = ctx->cfg;
	size_t conns =
	    (size_t)(config_find("upstream", "pool_connections") - settings);
	size_t max =
	    (size_t)(config_find("upstream", "pool_maxsize") - settings);

	if (cfg->pool_connections <= cfg->pool_maxsize || ctx->failed[conns] ||
	    ctx->failed[max])
		return;
	/* The default idle count follows a smaller pool; only an explicit
	 * contradiction is an error. */
	if (ctx->set_line[conns] == 0)
		cfg->pool_connections = cfg->pool_maxsize;
	else
		config_error(ctx->errs, ctx->file, ctx->set_line[conns],
		    "pool_connections (%d) cannot exceed pool_maxsize (%d)",
		    cfg->pool_connections, cfg->pool_maxsize);
}

/* A backend's pool_connections may not exceed its pool_maxsize when it
 * set pool_connections itself; one it took from [upstream] follows a
 * smaller pool. */
static void
config_backend_check_pool(
    struct config_load_ctx *ctx, struct config_backend_load *b)
{
	int conns = config_backend_key_index("pool_connections");
	int max = config_backend_key_index("pool_maxsize");
	size_t upmax =
	    (size_t)(config_find("upstream", "pool_maxsize") - settings);

	if (b->bc.pool_connections <= b->bc.pool_maxsize || b->failed[conns] ||
	    b->failed[max] || (b->set_line[max] == 0 && ctx->failed[upmax]))
		return;
	if (b->set_line[conns] == 0)
		b->bc.pool_connections = b->bc.pool_maxsize;
	else
		config_error(ctx->errs, ctx->file, b->set_line[conns],
		    "pool_connections (%d) cannot exceed pool_maxsize (%d)",
		    b->bc.pool_connections, b->bc.pool_maxsize);
}

/*
 * cfg->backends, once the whole file is read, so that [upstream] gives
 * its defaults wherever it stands: one per [backend] section, in file
 * order, each taking [upstream]'s value of what it does not set; or,
 * without [backend] sections, the one "default" from [upstream] (and
 * -u).  In a fleet, cfg->upstream is the first backend's url, for code
 * that knows one upstream only.
 */
static void
config_backends_build(
    struct config_load_ctx *ctx, const struct config_overrides *ov)
{
	struct config *cfg = ctx->cfg;
	struct config_backend_load *b;
	size_t url = (size_t)(config_find("upstream", "url") - settings);
	size_t tok = (size_t)(config_find("upstream", "token_file") - settings);
	int i, k = config_backend_key_index("token_file");

	if (ctx->nbackends == 0) {
		config_backends_default(cfg);
		config_backend_token(
		    ctx, &cfg->backends[0], ctx->set_line[tok], 0);
		return;
	}
	if (ctx->set_line[url] > 0)
		config_error(ctx->errs, ctx->file, ctx->set_line[url],
		    "url in [upstream] is not a backend when [backend] "
		    "sections exist: move it into a [backend NAME] section");
	if (ov != NULL && ov->upstream != NULL)
		config_error(ctx->errs, "--upstream", 0,
		    "-u names one upstream, but %s has [backend] sections",
		    ctx->file);
	for (i = 0; i < ctx->nbackends; i++) {
		b = &ctx->backends[i];
		if (b->set_line[0] == 0)
			config_error(ctx->errs, ctx->file, b->bc.line,
			    "[backend %s] needs a url (the Ollama it stands "
			    "for, as in url = http://127.0.0.1:11434)",
			    b->bc.name);
		b->bc.url_line = b->set_line[0];
		config_backend_inherit(&b->bc, cfg, b->set_line);
		config_backend_check_pool(ctx, b);
		config_backend_token(ctx, &b->bc,
		    b->set_line[k] > 0 ? b->set_line[k] : ctx->set_line[tok],
		    1);
	}
	config_backends_free(cfg);
	cfg->backends = xcalloc((size_t)ctx->nbackends, sizeof *cfg->backends);
	for (i = 0; i < ctx->nbackends; i++)
		cfg->backends[i] = ctx->backends[i].bc;
	cfg->nbackends = ctx->nbackends;
	cfg->fleet = 1;
	free(ctx->backends);
	ctx->backends = NULL;
	ctx->nbackends = 0;
	if (cfg->backends[0].url_text != NULL) {
		cfg->upstream = cfg->backends[0].url;
		free(cfg->upstream_text);
		cfg->upstream_text = xstrdup(cfg->backends[0].url_text);
	}
	cfg->url_line = cfg->backends[0].url_line;
	cfg->url_cli = 0;
}

static void
config_apply_overrides(struct config *cfg, const struct config_overrides *ov,
    struct config_errors *errs)
{
	char msg[1400];
	int i;

	for (i = 0; i < ov->nlisten; i++)
		if (config_apply(cfg, config_find("server", "listen"),
		        ov->listen[i], i > 0, msg, sizeof msg) != 0)
			config_error(errs, "--listen", 0, "%s", msg);
	if (ov->upstream != NULL &&
	    config_apply(cfg, config_find("upstream", "url"), ov->upstream, 0,
	        msg, sizeof msg) != 0)
		config_error(errs, "--upstream", 0, "%s", msg);
	cfg->listen_cli = ov->nlisten > 0;
	cfg->url_cli = ov->upstream != NULL;
}

/* Parses an open file (a real one, or memory for the fuzzer), applies the
 * command-line overrides, and checks the whole but what needs addresses:
 * that is config_check_addresses(), once names are resolved.  No DNS.
 * Every error found goes to errs (reset first); -1 when there is one. */
int
config_load_fp(struct config *cfg, FILE *fp, const char *file,
    const struct config_overrides *ov, struct config_errors *errs)
{
	struct config_load_ctx ctx;
	int rc;

	memset(errs, 0, sizeof *errs);
	memset(&ctx, 0, sizeof ctx);
	ctx.cfg = cfg;
	ctx.file = file;
	ctx.errs = errs;
	ctx.backend = -1;
	if (fp != NULL) {
		ctx.fp = fp;
		rc =
		    ini_parse_stream(config_reader, &ctx, config_handler, &ctx);
		config_line_done(&ctx);
		if (ferror(fp))
			config_error(errs, file, 0, "cannot read file: %s",
			    strerror(errno));
		else if (rc < 0)
			config_error(errs, file, 0, "cannot read file");
		else if (rc > 0 && errs->n == 0)
			config_error(errs, file, rc,
			    "syntax error: expected '[section]' or 'key = "
			    "value'");
		free(cfg->file);
		cfg->file = xstrdup(file);
	}
	cfg->listen_line =
	    ctx.set_line[config_find("server", "listen") - settings];
	cfg->url_line = ctx.set_line[config_find("upstream", "url") - settings];
	cfg->admin_listen_line =
	    ctx.set_line[config_find("server", "admin_listen") - settings];
	if (ov != NULL)
		config_apply_overrides(cfg, ov, errs);
	config_check_pool(&ctx);
	config_tokens_load(&ctx);
	config_backends_build(&ctx, ov);
	return errs->n > 0 ? -1 : 0;
}

/* The file line, and the flag if any, that set an address key
 * (enum config_where_key). */
static int
config_key_line(const struct config *cfg, int key, const char **flag)
{
	*flag = NULL;
	if (key == CONFIG_WHERE_ADMIN_LISTEN)
		return cfg->admin_listen_line;
	if (key == CONFIG_WHERE_URL) {
		if (cfg->url_cli)
			*flag = "--upstream";
		return cfg->url_line;
	}
	if (cfg->listen_cli)
		*flag = "--listen";
	return cfg->listen_line;
}

/* Where listen (url: 0), url (1) or admin_listen (2) was set, as a
 * message prefix. */
static int
config_fail_at(const struct config *cfg, int url, char *err, size_t errlen,
    const char *msg)
{
	const char *flag;
	int line = config_key_line(cfg, url, &flag);

	if (flag != NULL)
		return config_fail(err, errlen, flag, 0, msg);
	return config_fail(
	    err, errlen, cfg->file ? cfg->file : "settings", line, msg);
}

/* "listen in FILE:LINE", "url from --upstream", "listen by default". */
const char *
config_where(const struct config *cfg, int url, char *buf, size_t len)
{
	const char *key = url == CONFIG_WHERE_ADMIN_LISTEN ? "admin_listen"
	    : url                                          ? "url"
	                                                   : "listen";
	const char *flag;
	int line = config_key_line(cfg, url, &flag);

	if (flag != NULL)
		snprintf(buf, len, "%s from %s", key, flag);
	else if (cfg->file != NULL && line > 0)
		snprintf(buf, len, "%s in %s:%d", key, cfg->file, line);
	else
		snprintf(buf, len, "%s by default", key);
	return buf;
}

/* admin_listen: loopback unless allowed, and an address of its own. */
static int
config_check_admin_listen(const struct config *cfg, char *err, size_t errlen)
{
	const struct listen_addr *a = &cfg->admin_listen;
	char msg[1400];
	int i;

	if (!cfg->has_admin_listen)
		return 0;
	if (a->kind == LISTEN_TCP && !cfg->allow_remote &&
	    !addr_is_loopback(a)) {
		snprintf(msg, sizeof msg,
		    "admin_listen address %s is not loopback: set "
		    "allow_remote = yes to serve metrics and health to other "
		    "machines (without a token)",
		    a->text);
		return config_fail_at(
		    cfg, CONFIG_WHERE_ADMIN_LISTEN, err, errlen, msg);
	}
	for (i = 0; i < cfg->nlisten; i++)
		if (a->sslen > 0 && cfg->listen[i].sslen == a->sslen &&
		    memcmp(&cfg->listen[i].ss, &a->ss, a->sslen) == 0) {
			snprintf(msg, sizeof msg,
			    "admin_listen address %s is also a listen "
			    "address: give it one of its own",
			    a->text);
			return config_fail_at(
			    cfg, CONFIG_WHERE_ADMIN_LISTEN, err, errlen, msg);
		}
	if (!cfg->fleet && addr_upstream_is_listen(&cfg->upstream, a, 1)) {
		snprintf(msg, sizeof msg,
		    "upstream %s is our own admin_listen address",
		    cfg->upstream.base);
		return config_fail_at(cfg, CONFIG_WHERE_URL, err, errlen, msg);
	}
	for (i = 0; cfg->fleet && i < cfg->nbackends; i++)
		if (addr_upstream_is_listen(&cfg->backends[i].url, a, 1)) {
			snprintf(msg, sizeof msg,
			    "backend %s: url %s is our own admin_listen "
			    "address",
			    cfg->backends[i].name, cfg->backends[i].url.base);
			return config_fail(err, errlen,
			    cfg->file ? cfg->file : "settings",
			    cfg->backends[i].url_line, msg);
		}
	return 0;
}

/*
 * The checks that need addresses, run once resolve.c has looked up the
 * names (at once when all are numeric): nothing beyond loopback unless
 * allowed, and no upstream that is one of our own listen addresses.
 */
int
config_check_addresses(const struct config *cfg, char *err, size_t errlen)
{
	char msg[1400];
	int i;

	for (i = 0; i < cfg->nlisten && !cfg->allow_remote; i++) {
		if (cfg->listen[i].kind == LISTEN_TCP &&
		    !addr_is_loopback(&cfg->listen[i])) {
			snprintf(msg, sizeof msg,
			    "listen address %s is not loopback: set "
			    "allow_remote = yes (and client_tokens) to accept "
			    "clients from other machines",
			    cfg->listen[i].text);
			return config_fail_at(cfg, 0, err, errlen, msg);
		}
	}
	if (!cfg->fleet &&
	    addr_upstream_is_listen(
	        &cfg->upstream, cfg->listen, cfg->nlisten)) {
		snprintf(msg, sizeof msg,
		    "upstream %s is one of our own listen addresses: requests "
		    "would loop back to the proxy",
		    cfg->upstream.base);
		return config_fail_at(cfg, 1, err, errlen, msg);
	}
	/* A fleet names the backend, at its url's line. */
	for (i = 0; cfg->fleet && i < cfg->nbackends; i++)
		if (addr_upstream_is_listen(
		        &cfg->backends[i].url, cfg->listen, cfg->nlisten)) {
			snprintf(msg, sizeof msg,
			    "backend %s: url %s is one of our own listen "
			    "addresses: requests would loop back to the proxy",
			    cfg->backends[i].name, cfg->backends[i].url.base);
			return config_fail(err, errlen,
			    cfg->file ? cfg->file : "settings",
			    cfg->backends[i].url_line, msg);
		}
	return config_check_admin_listen(cfg, err, errlen);
}

int
config_load(struct config *cfg, const char *file,
    const struct config_overrides *ov, struct config_errors *errs)
{
	FILE *fp = NULL;
	int rc;

	memset(errs, 0, sizeof *errs);
	if (file != NULL && (fp = fopen(file, "r")) == NULL) {
		config_error(errs, file, 0, "%s", strerror(errno));
		return -1;
	}
	rc = config_load_fp(cfg, fp, file, ov, errs);
	if (fp != NULL)
		fclose(fp);
	return rc;
}

static void
config_print_methods(uint64_t set, FILE *fp)
{
	const char *name;
	int m, n = 0;

	if (set == ~(uint64_t)0) {
		fputs("all", fp);
		return;
	}
	for (m = 0; m < METHOD_COUNT; m++) {
		name = httpreq_method_name(m);
		if (set & ((uint64_t)1 << m))
			fprintf(fp, "%s%s", n++ ? "," : "", name);
	}
}

/* One value as -t shows it: secrets as ***, durations in seconds. */
static void
config_print_value(const struct config *cfg, const struct setting *s,
    const void *field, FILE *fp)
{
	char num[64];
	int j, n;

	switch (s->type) {
	case SET_ADMIN_LISTEN:
		if (cfg->has_admin_listen)
			fputs(cfg->admin_listen.text, fp);
		break;
	case SET_LISTEN:
		for (j = 0; j < cfg->nlisten; j++)
			fprintf(fp, "%s%s", j ? " " : "", cfg->listen[j].text);
		break;
	case SET_URL:
		fputs(((const struct upstream_url *)field)->base, fp);
		break;
	case SET_INT:
		fprintf(fp, "%d", *(const int *)field);
		break;
	case SET_SECONDS:
		fputs(config_format_exact(
		          *(const double *)field, num, sizeof num),
		    fp);
		break;
	case SET_SIZE:
		fprintf(fp, "%zu", *(const size_t *)field);
		break;
	case SET_SIZE64:
		fprintf(
		    fp, "%llu", (unsigned long long)*(const uint64_t *)field);
		break;
	case SET_BOOL:
		fputs(*(const int *)field ? "yes" : "no", fp);
		break;
	case SET_STRING:
	case SET_RESOLVER:
	case SET_ACCESS_LOG:
	case SET_MODELS:
		fputs(*(char *const *)field, fp);
		break;
	case SET_SECRET:
		fputs(**(char *const *)field != '\0' ? "***" : "", fp);
		break;
	case SET_ACCESS_FORMAT:
		fputs(*(const int *)field == ACCESSLOG_COMBINED ? "combined"
		                                                : "json",
		    fp);
		break;
	case SET_STATUSES:
		for (j = 100, n = 0; j < 600; j++)
			if (((const uint8_t *)field)[j])
				fprintf(fp, "%s%d", n++ ? "," : "", j);
		break;
	case SET_METHODS:
		config_print_methods(*(const uint64_t *)field, fp);
		break;
	}
}

/* A fleet's [backend NAME] sections, each with its effective values:
 * its own, or [upstream]'s.  The token never shows, only its file. */
static void
config_print_backends(const struct config *cfg, FILE *fp)
{
	const struct backend_conf *bc;
	const struct setting *s;
	size_t k;
	int i;

	for (i = 0; cfg->fleet && i < cfg->nbackends; i++) {
		bc = &cfg->backends[i];
		fprintf(fp, "\n[backend %s]\n", bc->name);
		for (k = 0; k < NBACKEND_KEYS; k++) {
			s = config_find("upstream", backend_keys[k].key);
			fprintf(fp, "%s = ", s->key);
			config_print_value(cfg, s,
			    (const char *)bc + backend_keys[k].offset, fp);
			fputc('\n', fp);
			if (backend_keys[k].offset == OFFB(token_file) &&
			    bc->token_path != NULL)
				fprintf(fp, "# token read from %s\n",
				    bc->token_path);
		}
	}
}

void
config_print(const struct config *cfg, FILE *fp)
{
	const char *section = "";
	const struct setting *s;
	const void *field;
	size_t i;

	fprintf(fp, "# effective settings%s%s\n", cfg->file ? " from " : "",
	    cfg->file ? cfg->file : " (built-in defaults)");
	for (i = 0; i < NSETTINGS; i++) {
		s = &settings[i];
		field = (const char *)cfg + s->offset;
		if (strcmp(section, s->section) != 0) {
			fprintf(fp, "%s[%s]\n", i ? "\n" : "", s->section);
			section = s->section;
		}
		if (s->type == SET_URL && cfg->fleet) {
			fputs(
			    "# url: none here, the backends are the [backend] "
			    "sections below\n",
			    fp);
			continue;
		}
		fprintf(fp, "%s = ", s->key);
		config_print_value(cfg, s, field, fp);
		fputc('\n', fp);
		if (field == (const void *)&cfg->client_tokens_file &&
		    cfg->client_tokens_path != NULL)
			fprintf(fp, "# %d token%s read from %s\n",
			    cfg->client_tokens_nread,
			    log_plural(cfg->client_tokens_nread),
			    cfg->client_tokens_path);
		if (field == (const void *)&cfg->token_file && !cfg->fleet &&
		    cfg->nbackends > 0 && cfg->backends[0].token_path != NULL)
			fprintf(fp, "# token read from %s\n",
			    cfg->backends[0].token_path);
	}
	config_print_backends(cfg, fp);
}

/* A model name's two parts, the Ollama way: the tag after the last ':'
 * of its last path element, "latest" when there is none. */
static void
config_model_split(const char *m, size_t len, size_t *baselen, const char **tag,
    size_t *taglen)
{
	size_t i, last = 0;

	for (i = 0; i < len; i++)
		if (m[i] == '/')
			last = i + 1;
	for (i = len; i > last && m[i - 1] != ':'; i--)
		;
	if (i > last) {
		*baselen = i - 1;
		*tag = m + i;
		*taglen = len - i;
	} else {
		*baselen = len;
		*tag = "latest";
		*taglen = 6;
	}
}

int
config_backend_admits(const struct backend_conf *bc, const char *model)
{
	const char *p, *tag, *mtag;
	size_t len, base, taglen, mbase, mtaglen;

	if (model == NULL || bc->models == NULL || bc->models[0] == '\0')
		return 1;
	config_model_split(model, strlen(model), &mbase, &mtag, &mtaglen);
	for (p = bc->models; *p != '\0'; p += len + (p[len] == ' ')) {
		len = strcspn(p, " ");
		config_model_split(p, len, &base, &tag, &taglen);
		if (base == mbase && taglen == mtaglen &&
		    memcmp(p, model, base) == 0 &&
		    memcmp(tag, mtag, taglen) == 0)
			return 1;
	}
	return 0;
}
