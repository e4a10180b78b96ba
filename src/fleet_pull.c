/*
 * A pull fanned out to every backend, as one answer: each backend's
 * NDJSON progress is read line by line (lines split anywhere), each
 * layer's total and completed are summed across the backends that
 * report it and sent on when the sums change, the other status lines
 * ("pulling manifest", "writing manifest") once each, and the end is one
 * {"status":"success"} or one error naming the backends that failed.
 * The op and its slots are fleet.c's.
 */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ollama-pool.h"

static struct fleet_digest *
fleet_digest_get(struct fleet_op *op, const char *digest, const char *status)
{
	struct fleet_digest *d;
	int i;

	for (i = 0; i < op->ndigests; i++)
		if (strcmp(op->digests[i].digest, digest) == 0)
			return &op->digests[i];
	if (op->ndigests == FLEET_DIGESTS_MAX)
		return NULL;
	if (op->digests == NULL)
		op->digests = xcalloc(FLEET_DIGESTS_MAX, sizeof *op->digests);
	d = &op->digests[op->ndigests++];
	d->digest = xstrdup(digest);
	d->status = xstrdup(status);
	d->per = xcalloc((size_t)op->nslots, sizeof *d->per);
	return d;
}

/* Every digest whose sums changed since last sent, one line each. */
static void
fleet_pull_flush(struct fleet_op *op)
{
	struct fleet_digest *d;
	double total, completed;
	cJSON *line;
	int i, j;

	for (i = 0; i < op->ndigests; i++) {
		d = &op->digests[i];
		if (!d->dirty)
			continue;
		d->dirty = 0;
		total = completed = 0;
		for (j = 0; j < op->nslots; j++)
			if (d->per[j].seen) {
				total += d->per[j].total;
				completed += d->per[j].completed;
			}
		if (d->sent && total == d->sent_total &&
		    completed == d->sent_completed)
			continue;
		d->sent = 1;
		d->sent_total = total;
		d->sent_completed = completed;
		line = cJSON_CreateObject();
		cJSON_AddStringToObject(line, "status", d->status);
		cJSON_AddStringToObject(line, "digest", d->digest);
		cJSON_AddNumberToObject(line, "total", total);
		cJSON_AddNumberToObject(line, "completed", completed);
		fleet_emit(op, line);
	}
}

/* "pulling manifest", "verifying sha256 digest"...: once each, the
 * first time any backend says it, after the progress before it. */
static void
fleet_pull_status(struct fleet_op *op, const char *status)
{
	cJSON *line;
	int i;

	for (i = 0; i < op->nstatuses; i++)
		if (strcmp(op->statuses[i], status) == 0)
			return;
	if (op->nstatuses == FLEET_STATUSES_MAX)
		return;
	op->statuses[op->nstatuses++] = xstrdup(status);
	fleet_pull_flush(op);
	line = cJSON_CreateObject();
	cJSON_AddStringToObject(line, "status", status);
	fleet_emit(op, line);
}

static double
fleet_json_count(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsNumber(v) && isfinite(v->valuedouble) &&
	        v->valuedouble > 0
	    ? v->valuedouble
	    : 0;
}

/* One line of one backend's progress. */
static void
fleet_pull_line(struct fleet_slot *s)
{
	struct fleet_op *op = s->op;
	struct fleet_digest *d;
	cJSON *json, *err, *status, *digest;
	double total, completed;
	int i = (int)(s - op->slots);

	if (s->line_len == 0 || s->failed || s->succeeded)
		return;
	s->line[s->line_len] = '\0';
	json = cJSON_Parse(s->line);
	err = cJSON_GetObjectItemCaseSensitive(json, "error");
	status = cJSON_GetObjectItemCaseSensitive(json, "status");
	digest = cJSON_GetObjectItemCaseSensitive(json, "digest");
	if (err != NULL && !cJSON_IsNull(err))
		fleet_slot_fail(s, "%s",
		    cJSON_IsString(err) ? err->valuestring : "an error");
	else if (!cJSON_IsString(status))
		; /* not progress: ignored */
	else if (cJSON_IsString(digest) && digest->valuestring[0] != '\0') {
		d = fleet_digest_get(
		    op, digest->valuestring, status->valuestring);
		total = fleet_json_count(json, "total");
		completed = fleet_json_count(json, "completed");
		if (d != NULL &&
		    (!d->per[i].seen || d->per[i].total != total ||
		        d->per[i].completed != completed)) {
			d->per[i].seen = 1;
			d->per[i].total = total;
			d->per[i].completed = completed;
			d->dirty = 1;
		}
	} else if (strcmp(status->valuestring, "success") == 0)
		s->succeeded = 1;
	else
		fleet_pull_status(op, status->valuestring);
	cJSON_Delete(json);
}

/* Appends to the line not yet ended; past FLEET_LINE_MAX, drops it. */
static void
fleet_line_append(struct fleet_slot *s, const char *data, size_t n)
{
	if (s->line_skip)
		return;
	if (n > FLEET_LINE_MAX - s->line_len) {
		s->line_skip = 1;
		s->line_len = 0;
		return;
	}
	if (s->line_len + n + 1 > s->line_cap) {
		s->line_cap = s->line_cap == 0 ? 512 : s->line_cap * 2;
		while (s->line_cap < s->line_len + n + 1)
			s->line_cap *= 2;
		if (s->line_cap > FLEET_LINE_MAX + 1)
			s->line_cap = FLEET_LINE_MAX + 1;
		s->line = xrealloc(s->line, s->line_cap);
	}
	memcpy(s->line + s->line_len, data, n);
	s->line_len += n;
}

/* A streamed pull's answer bytes, lines split anywhere.  Inside curl:
 * writes to the client, frees nothing. */
void
fleet_pull_data(void *arg, const char *data, size_t len)
{
	struct fleet_slot *s = arg;
	const char *nl;
	size_t n;

	while (len > 0) {
		nl = memchr(data, '\n', len);
		n = nl != NULL ? (size_t)(nl - data) : len;
		fleet_line_append(s, data, n);
		if (nl == NULL)
			break;
		if (!s->line_skip)
			fleet_pull_line(s);
		s->line_len = 0;
		s->line_skip = 0;
		data += n + 1;
		len -= n + 1;
	}
	fleet_pull_flush(s->op);
}

/* A non-streamed pull's one answer: {"status":"success"} or an error. */
static void
fleet_pull_answer(struct fleet_slot *s, const char *body)
{
	cJSON *json = body != NULL ? cJSON_Parse(body) : NULL, *v;

	v = cJSON_GetObjectItemCaseSensitive(json, "error");
	if (v != NULL && !cJSON_IsNull(v))
		fleet_slot_fail(
		    s, "%s", cJSON_IsString(v) ? v->valuestring : "an error");
	v = cJSON_GetObjectItemCaseSensitive(json, "status");
	if (cJSON_IsString(v) && strcmp(v->valuestring, "success") == 0)
		s->succeeded = 1;
	cJSON_Delete(json);
}

void
fleet_pull_done(struct fleet_slot *s, const struct backend_fetch_result *res)
{
	if (s->op->stream) {
		if (!s->line_skip)
			fleet_pull_line(s); /* the last, without its \n */
		s->line_len = 0;
		s->line_skip = 0;
		fleet_pull_flush(s->op);
	} else if (res->status == 200)
		fleet_pull_answer(s, res->body);
	if (s->failed)
		return;
	if (res->status != 200)
		fleet_slot_answer_fail(s, res);
	else if (!s->succeeded)
		fleet_slot_fail(s, "its answer ended before \"success\"");
	else
		s->ok = 1;
}

void
fleet_pull_finish(struct fleet_op *op)
{
	struct fleet_str why = {NULL, 0, 0}, ok = {NULL, 0, 0};
	cJSON *line = cJSON_CreateObject();
	char *msg = NULL;

	if (op->stream)
		fleet_pull_flush(op);
	if (fleet_reasons(op, &why) == 0)
		cJSON_AddStringToObject(line, "status", "success");
	else {
		fleet_names_ok(op, &ok);
		xasprintf(&msg, "%s failed on %s%s%s%s", op->what,
		    fleet_str_get(&why), ok.len > 0 ? " (it succeeded on " : "",
		    fleet_str_get(&ok), ok.len > 0 ? ")" : "");
		log_warn("fleet: %s", msg);
		cJSON_AddStringToObject(line, "error", msg);
	}
	if (op->stream) {
		fleet_emit(op, line);
		op->sink.stream_end(op->sink.arg);
	} else
		fleet_respond_json(op, msg == NULL ? 200 : 500, line);
	free(msg);
	free(why.s);
	free(ok.s);
}
