/*
 * Settings: one declarative table gives every key its section, type,
 * bounds, default and help.  Defaults go through the same setter as the
 * file, and a new configuration is parsed whole into a fresh struct before
 * anything uses it, so a bad file never leaves half-applied settings.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <event2/util.h>
#include <ini.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ollama-pool.h"

enum setting_type {
	SET_LISTEN,
	SET_URL,
	SET_INT,
	SET_SECONDS,
	SET_SIZE,
	SET_SIZE64,
	SET_BOOL,
	SET_STRING,
	SET_RESOLVER,
	SET_STATUSES,
	SET_METHODS,
	SET_ACCESS_LOG,
	SET_ACCESS_FORMAT,
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

static const struct setting settings[] = {
    {"server", "listen", SET_LISTEN, OFF(listen), DEFAULT_LISTEN, 0, 0,
        "addresses to accept clients on, space separated"},
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
    {"server", "client_tokens", SET_STRING, OFF(client_tokens), "", 0, 0,
        "bearer tokens clients must send, space separated"},
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

struct config_load_ctx {
	struct config *cfg;
	const char *file;
	FILE *fp;
	int line;
	int listen_seen;
	int error_line;
	char error[512];
	int set_line[NSETTINGS];
};

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

static int
config_parse_number(const char *value, double *out, int allow_suffix)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(value, &end);
	if (end == value || errno != 0 || !isfinite(v))
		return -1;
	if (allow_suffix) {
		switch (tolower((unsigned char)*end)) {
		case 'k':
			v *= 1024;
			end++;
			break;
		case 'm':
			v *= 1024 * 1024;
			end++;
			break;
		case 'g':
			v *= 1024.0 * 1024 * 1024;
			end++;
			break;
		}
		if (tolower((unsigned char)*end) == 'b' ||
		    tolower((unsigned char)*end) == 'i')
			end++;
	}
	while (isspace((unsigned char)*end))
		end++;
	if (*end != '\0')
		return -1;
	*out = v;
	return 0;
}

static int
config_parse_statuses(uint8_t *set, const char *value, char *err, size_t errlen)
{
	char *copy = xstrdup(value), *tok, *save, *end;
	long v;

	memset(set, 0, 600);
	for (tok = strtok_r(copy, " \t,", &save); tok != NULL;
	     tok = strtok_r(NULL, " \t,", &save)) {
		v = strtol(tok, &end, 10);
		if (*end != '\0' || v < 100 || v > 599) {
			snprintf(err, errlen,
			    "retry_statuses: '%s' is not an HTTP status", tok);
			free(copy);
			return -1;
		}
		set[v] = 1;
	}
	free(copy);
	return 0;
}

static int
config_parse_methods(uint64_t *set, const char *value, char *err, size_t errlen)
{
	char *copy, *tok, *save;
	int m, found;

	if (strcasecmp(value, "all") == 0 || strcmp(value, "*") == 0) {
		*set = ~(uint64_t)0;
		return 0;
	}
	*set = 0;
	copy = xstrdup(value);
	for (tok = strtok_r(copy, " \t,", &save); tok != NULL;
	     tok = strtok_r(NULL, " \t,", &save)) {
		found = 0;
		for (m = 0; m < 64; m++) {
			const char *name = http_method_str((enum http_method)m);

			if (strcmp(name, "<unknown>") == 0)
				break;
			if (strcasecmp(name, tok) == 0) {
				*set |= (uint64_t)1 << m;
				found = 1;
			}
		}
		if (!found) {
			snprintf(err, errlen,
			    "retry_methods: '%s' is not an HTTP method", tok);
			free(copy);
			return -1;
		}
	}
	free(copy);
	return 0;
}

/* IP or IP:PORT ([V6]:PORT), space separated: numbers only, since the
 * resolver is what looks names up. */
static int
config_parse_resolver(char **field, const char *value, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	char *copy = xstrdup(value), *tok, *save;
	int len;

	for (tok = strtok_r(copy, " \t,", &save); tok != NULL;
	     tok = strtok_r(NULL, " \t,", &save)) {
		len = sizeof ss;
		if (evutil_parse_sockaddr_port(
		        tok, (struct sockaddr *)&ss, &len) != 0) {
			snprintf(err, errlen,
			    "resolver: '%s' is not IP[:PORT] or [V6]:PORT",
			    tok);
			free(copy);
			return -1;
		}
	}
	free(copy);
	free(*field);
	*field = xstrdup(value);
	return 0;
}

/* off, stderr, or an absolute path: a daemon's working directory is not
 * where anyone looks for its log. */
static int
config_parse_access_log(
    char **field, const char *value, char *err, size_t errlen)
{
	if (strcasecmp(value, "off") == 0 || strcasecmp(value, "no") == 0)
		value = "off";
	else if (strcasecmp(value, "stderr") == 0)
		value = "stderr";
	else if (value[0] != '/') {
		snprintf(err, errlen,
		    "access_log must be off, stderr or an absolute path, not "
		    "'%s'",
		    value);
		return -1;
	}
	free(*field);
	*field = xstrdup(value);
	return 0;
}

static int
config_parse_access_format(
    int *field, const char *value, char *err, size_t errlen)
{
	if (strcasecmp(value, "json") == 0)
		*field = ACCESSLOG_JSON;
	else if (strcasecmp(value, "combined") == 0)
		*field = ACCESSLOG_COMBINED;
	else {
		snprintf(err, errlen,
		    "access_log_format must be json or combined, not '%s'",
		    value);
		return -1;
	}
	return 0;
}

static int
config_apply(struct config *cfg, const struct setting *s, const char *value,
    int append_listen, char *err, size_t errlen)
{
	void *field = (char *)cfg + s->offset;
	char *copy, *tok, *save;
	double v;
	int n;

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
	case SET_URL:
		if (addr_parse_upstream(value, field, err, errlen) != 0)
			return -1;
		free(cfg->upstream_text);
		cfg->upstream_text = xstrdup(value);
		return 0;
	case SET_STRING:
		free(*(char **)field);
		*(char **)field = xstrdup(value);
		return 0;
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
		if (config_parse_number(value, &v,
		        s->type == SET_SIZE || s->type == SET_SIZE64) != 0 ||
		    (s->type != SET_SECONDS && v != floor(v))) {
			snprintf(err, errlen, "%s must be %s, not '%s'", s->key,
			    s->type == SET_SECONDS ? "a number of seconds"
			        : s->type == SET_SIZE || s->type == SET_SIZE64
			        ? "a size (e.g. 64k, 1m)"
			        : "a whole number",
			    value);
			return -1;
		}
		if (v < s->min || v > s->max) {
			n = snprintf(err, errlen,
			    "%s must be between %g and %g", s->key, s->min,
			    s->max);
			if (n > 0 && (size_t)n < errlen)
				snprintf(
				    err + n, errlen - n, ", not '%s'", value);
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
	return -1;
}

int
config_set(struct config *cfg, const char *section, const char *key,
    const char *value, char *err, size_t errlen)
{
	const struct setting *s = config_find(section, key);

	if (s == NULL) {
		snprintf(err, errlen, "unknown key '%s' in section [%s]", key,
		    section);
		return -1;
	}
	return config_apply(cfg, s, value, 0, err, errlen);
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
		    settings[i].type == SET_RESOLVER ||
		    settings[i].type == SET_ACCESS_LOG)
			free(*(char **)((char *)cfg + settings[i].offset));
	free(cfg->upstream_text);
	free(cfg->file);
	free(cfg);
}

/* inih reads through us so every handler call knows its line number. */
static char *
config_reader(char *str, int num, void *stream)
{
	struct config_load_ctx *ctx = stream;
	char *line = fgets(str, num, ctx->fp);

	if (line != NULL)
		ctx->line++;
	return line;
}

static int
config_handler(
    void *user, const char *section, const char *key, const char *value)
{
	struct config_load_ctx *ctx = user;
	const struct setting *s;
	char err[400];
	int rc;

	if (ctx->error_line != 0)
		return 1;
	if (section[0] == '\0') {
		snprintf(err, sizeof err,
		    "key '%s' outside of a section (put it under [server], "
		    "[upstream] or [retry])",
		    key);
		rc = -1;
	} else if ((s = config_find(section, key)) == NULL) {
		snprintf(err, sizeof err, "unknown key '%s' in section [%s]",
		    key, section);
		rc = -1;
	} else {
		rc = config_apply(ctx->cfg, s, value,
		    s->type == SET_LISTEN && ctx->listen_seen, err, sizeof err);
		if (s->type == SET_LISTEN)
			ctx->listen_seen = 1;
		ctx->set_line[s - settings] = ctx->line;
	}
	if (rc != 0) {
		ctx->error_line = ctx->line;
		snprintf(ctx->error, sizeof ctx->error, "%s", err);
		return 0;
	}
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

/* Parses an open file (a real one, or memory for the fuzzer), applies the
 * command-line overrides, and checks the whole but what needs addresses:
 * that is config_check_addresses(), once names are resolved.  No DNS. */
int
config_load_fp(struct config *cfg, FILE *fp, const char *file,
    const struct config_overrides *ov, char *err, size_t errlen)
{
	struct config_load_ctx ctx;
	char msg[1400];
	int i, rc, line;

	memset(&ctx, 0, sizeof ctx);
	ctx.cfg = cfg;
	ctx.file = file;
	if (fp != NULL) {
		ctx.fp = fp;
		rc =
		    ini_parse_stream(config_reader, &ctx, config_handler, &ctx);
		if (rc < 0)
			return config_fail(
			    err, errlen, file, 0, "cannot read file");
		if (rc > 0 && (ctx.error_line == 0 || rc < ctx.error_line))
			return config_fail(err, errlen, file, rc,
			    "syntax error: expected '[section]' or 'key = "
			    "value'");
		if (ctx.error_line != 0)
			return config_fail(
			    err, errlen, file, ctx.error_line, ctx.error);
		free(cfg->file);
		cfg->file = xstrdup(file);
	}

	cfg->listen_line =
	    ctx.set_line[config_find("server", "listen") - settings];
	cfg->url_line = ctx.set_line[config_find("upstream", "url") - settings];
	if (ov != NULL) {
		for (i = 0; i < ov->nlisten; i++)
			if (config_apply(cfg, config_find("server", "listen"),
			        ov->listen[i], i > 0, msg, sizeof msg) != 0)
				return config_fail(
				    err, errlen, "--listen", 0, msg);
		if (ov->upstream != NULL &&
		    config_apply(cfg, config_find("upstream", "url"),
		        ov->upstream, 0, msg, sizeof msg) != 0)
			return config_fail(err, errlen, "--upstream", 0, msg);
		cfg->listen_cli = ov->nlisten > 0;
		cfg->url_cli = ov->upstream != NULL;
	}

	if (cfg->pool_connections > cfg->pool_maxsize) {
		line =
		    ctx.set_line[config_find("upstream", "pool_connections") -
		        settings];
		/* The default idle count follows a smaller pool; only an
		 * explicit contradiction is an error. */
		if (line == 0)
			cfg->pool_connections = cfg->pool_maxsize;
		else {
			snprintf(msg, sizeof msg,
			    "pool_connections (%d) cannot exceed pool_maxsize "
			    "(%d)",
			    cfg->pool_connections, cfg->pool_maxsize);
			return config_fail(err, errlen, file, line, msg);
		}
	}
	return 0;
}

/* Where listen (url: 0) or url (1) was set, as a message prefix. */
static int
config_fail_at(const struct config *cfg, int url, char *err, size_t errlen,
    const char *msg)
{
	if (url ? cfg->url_cli : cfg->listen_cli)
		return config_fail(
		    err, errlen, url ? "--upstream" : "--listen", 0, msg);
	return config_fail(err, errlen, cfg->file ? cfg->file : "settings",
	    url ? cfg->url_line : cfg->listen_line, msg);
}

/* "listen in FILE:LINE", "url from --upstream", "listen by default". */
const char *
config_where(const struct config *cfg, int url, char *buf, size_t len)
{
	const char *key = url ? "url" : "listen";
	int line = url ? cfg->url_line : cfg->listen_line;

	if (url ? cfg->url_cli : cfg->listen_cli)
		snprintf(buf, len, "%s from %s", key,
		    url ? "--upstream" : "--listen");
	else if (cfg->file != NULL && line > 0)
		snprintf(buf, len, "%s in %s:%d", key, cfg->file, line);
	else
		snprintf(buf, len, "%s by default", key);
	return buf;
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
	if (addr_upstream_is_listen(
	        &cfg->upstream, cfg->listen, cfg->nlisten)) {
		snprintf(msg, sizeof msg,
		    "upstream %s is one of our own listen addresses: requests "
		    "would loop back to the proxy",
		    cfg->upstream.base);
		return config_fail_at(cfg, 1, err, errlen, msg);
	}
	return 0;
}

int
config_load(struct config *cfg, const char *file,
    const struct config_overrides *ov, char *err, size_t errlen)
{
	FILE *fp = NULL;
	int rc;

	if (file != NULL && (fp = fopen(file, "r")) == NULL) {
		snprintf(err, errlen, "%s: %s", file, strerror(errno));
		return -1;
	}
	rc = config_load_fp(cfg, fp, file, ov, err, errlen);
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
	for (m = 0; m < 64; m++) {
		name = http_method_str((enum http_method)m);
		if (strcmp(name, "<unknown>") == 0)
			break;
		if (set & ((uint64_t)1 << m))
			fprintf(fp, "%s%s", n++ ? "," : "", name);
	}
}

void
config_print(const struct config *cfg, FILE *fp)
{
	const char *section = "";
	const struct setting *s;
	const void *field;
	size_t i;
	int j, n;

	fprintf(fp, "# effective settings%s%s\n", cfg->file ? " from " : "",
	    cfg->file ? cfg->file : " (built-in defaults)");
	for (i = 0; i < NSETTINGS; i++) {
		s = &settings[i];
		field = (const char *)cfg + s->offset;
		if (strcmp(section, s->section) != 0) {
			fprintf(fp, "%s[%s]\n", i ? "\n" : "", s->section);
			section = s->section;
		}
		fprintf(fp, "%s = ", s->key);
		switch (s->type) {
		case SET_LISTEN:
			for (j = 0; j < cfg->nlisten; j++)
				fprintf(fp, "%s%s", j ? " " : "",
				    cfg->listen[j].text);
			break;
		case SET_URL:
			fputs(((const struct upstream_url *)field)->base, fp);
			break;
		case SET_INT:
			fprintf(fp, "%d", *(const int *)field);
			break;
		case SET_SECONDS:
			fprintf(fp, "%g", *(const double *)field);
			break;
		case SET_SIZE:
			fprintf(fp, "%zu", *(const size_t *)field);
			break;
		case SET_SIZE64:
			fprintf(fp, "%llu",
			    (unsigned long long)*(const uint64_t *)field);
			break;
		case SET_BOOL:
			fputs(*(const int *)field ? "yes" : "no", fp);
			break;
		case SET_STRING:
		case SET_RESOLVER:
		case SET_ACCESS_LOG:
			fputs(*(char *const *)field, fp);
			break;
		case SET_ACCESS_FORMAT:
			fputs(*(const int *)field == ACCESSLOG_COMBINED
			        ? "combined"
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
		fputc('\n', fp);
	}
}
