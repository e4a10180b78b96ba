/*
 * The values settings take: numbers with size suffixes, durations with
 * units, status and method lists, DNS servers, one listen address, the
 * access log's target and format.  Each parser takes the text and says
 * in err what is wrong with it; config.c's table decides which applies.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ollama-pool.h"

int
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

/*
 * A duration: seconds (30, 0.25), or a number with a unit, ms, s, m or h
 * (250ms, 10s, 1.5m, 2h; a space may come before it).  Digits and one
 * point only: no sign, exponent or hex.
 */
int
config_parse_duration(const char *value, double *out)
{
	static const struct {
		const char *unit;
		double mul, div;
	} units[] = {{"ms", 1, 1000}, {"s", 1, 1}, {"m", 60, 1}, {"h", 3600, 1},
	    {"", 1, 1}};
	const char *p = value;
	char *end;
	size_t n, i, rest;
	double v;

	while (isspace((unsigned char)*p))
		p++;
	n = strspn(p, "0123456789.");
	errno = 0;
	v = strtod(p, &end);
	if (n == 0 || end != p + n || errno != 0 || !isfinite(v))
		return -1;
	for (p = end; isspace((unsigned char)*p); p++)
		;
	for (rest = strlen(p); rest > 0 && isspace((unsigned char)p[rest - 1]);)
		rest--;
	for (i = 0; i < sizeof units / sizeof units[0]; i++)
		if (rest == strlen(units[i].unit) &&
		    strncasecmp(p, units[i].unit, rest) == 0) {
			*out = v * units[i].mul / units[i].div;
			return 0;
		}
	return -1;
}

/* The fewest decimals that read back as v: 0.3, 86400, 0.00001. */
const char *
config_format_exact(double v, char *buf, size_t len)
{
	int prec;

	for (prec = 0; prec < 17; prec++) {
		snprintf(buf, len, "%.*f", prec, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	return buf;
}

/* Whole, for a duration (at most days, so a long long holds it). */
static int
config_whole(double v)
{
	return v == (double)(long long)v;
}

/* The simplest exact form of a duration for messages: 24h, 1.5m, 30s,
 * 250ms. */
const char *
config_format_duration(double v, char *buf, size_t len)
{
	char num[64];

	if (v == 0)
		snprintf(buf, len, "0");
	else if (config_whole(v / 3600))
		snprintf(buf, len, "%sh",
		    config_format_exact(v / 3600, num, sizeof num));
	else if (config_whole(v / 60))
		snprintf(buf, len, "%sm",
		    config_format_exact(v / 60, num, sizeof num));
	else if (v < 1 && config_whole(v * 1000))
		snprintf(buf, len, "%sms",
		    config_format_exact(v * 1000, num, sizeof num));
	else
		snprintf(
		    buf, len, "%ss", config_format_exact(v, num, sizeof num));
	return buf;
}

int
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

int
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
		for (m = 0; m < METHOD_COUNT; m++) {
			if (strcasecmp(httpreq_method_name(m), tok) == 0) {
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
int
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

/* One address, like a listen one, or empty for none. */
int
config_parse_admin_listen(
    struct config *cfg, const char *value, char *err, size_t errlen)
{
	char msg[400];

	memset(&cfg->admin_listen, 0, sizeof cfg->admin_listen);
	cfg->has_admin_listen = 0;
	if (value[strspn(value, " \t")] == '\0')
		return 0;
	if (value[strcspn(value, " \t,")] != '\0') {
		snprintf(err, errlen,
		    "admin_listen takes one address, not '%s'", value);
		return -1;
	}
	if (addr_parse_listen(value, &cfg->admin_listen, msg, sizeof msg) !=
	    0) {
		snprintf(err, errlen, "admin_listen: %s", msg);
		return -1;
	}
	cfg->has_admin_listen = 1;
	return 0;
}

/* off, stderr, or an absolute path: a daemon's working directory is not
 * where anyone looks for its log. */
int
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

int
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

/*
 * A model allow-list: names separated by blanks or commas, kept
 * separated by one space ("" admits every model).  A name is as Ollama
 * writes it (llama3, llama3:8b, hf.co/user/repo:Q4_K_M); one with a
 * control character or an empty tag ("llama3:") is refused.
 */
int
config_parse_models(char **field, const char *value, char *err, size_t errlen)
{
	char *copy = xstrdup(value), *tok, *save, *all = NULL, *next;
	const char *tag, *p;

	for (tok = strtok_r(copy, " \t,", &save); tok != NULL;
	     tok = strtok_r(NULL, " \t,", &save)) {
		for (p = tok; *p != '\0' && !iscntrl((unsigned char)*p); p++)
			;
		tag = strrchr(tok, '/') != NULL ? strrchr(tok, '/') : tok;
		tag = strchr(tag, ':');
		if (*p != '\0' || tok[0] == ':' ||
		    (tag != NULL && tag[1] == '\0')) {
			snprintf(err, errlen,
			    "models: '%s' is not a model name (such as llama3 "
			    "or llama3:8b)",
			    tok);
			free(all);
			free(copy);
			return -1;
		}
		xasprintf(&next, "%s%s%s", all ? all : "", all ? " " : "", tok);
		free(all);
		all = next;
	}
	free(copy);
	free(*field);
	*field = all != NULL ? all : xstrdup("");
	return 0;
}
