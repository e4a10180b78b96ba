/*
 * The fleet-wide endpoints: what a client asks of "the Ollama" that is
 * really every backend's.  GET /api/tags, /v1/models and /api/ps ask every
 * usable backend live, in parallel, and merge their answers; /api/pull,
 * /api/delete and /api/copy go to every usable backend (that admits the
 * model) and their answers become one.
 *
 * One struct fleet_op owns everything a request allocates: its slots (one
 * per backend asked, holding a reference to it), their answers and, for a
 * pull, each digest's progress on each backend.  It counts the fetches
 * whose on_done has not come; when that count reaches 0 it answers
 * through the sink, exactly once, and frees itself.  fleet_cancel stops
 * the fetches still in flight (which then never call on_done) and frees
 * the op without a word to the sink.
 */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ollama-pool.h"

#define FLEET_LIST_TIMEOUT_MS 10000 /* tags, ps, models */
#define FLEET_MODIFY_TIMEOUT_MS 60000 /* delete, copy; a pull has none */
#define FLEET_SMALL_KEEP (64 * 1024) /* answer bytes kept: errors */

#define FLEET_JSON "application/json; charset=utf-8"
#define FLEET_NDJSON "application/x-ndjson"

enum fleet_kind {
	FLEET_LIST, /* one merged list */
	FLEET_PULL, /* one progress stream, or one answer */
	FLEET_MODIFY, /* delete, copy: one status */
};

static const struct fleet_route {
	int route; /* enum route */
	int method; /* the client's; a list takes HEAD too */
	enum fleet_kind kind;
	const char *ask; /* the method towards the backends */
	const char *path;
	const char *array; /* a list: the array merged */
	const char *key; /* a list: what makes an entry one; NULL: none */
	long timeout_ms; /* 0: none */
} fleet_routes[] = {
    {ROUTE_TAGS, METHOD_GET, FLEET_LIST, "GET", "/api/tags", "models", "name",
        FLEET_LIST_TIMEOUT_MS},
    {ROUTE_V1_MODELS, METHOD_GET, FLEET_LIST, "GET", "/v1/models", "data", "id",
        FLEET_LIST_TIMEOUT_MS},
    {ROUTE_PS, METHOD_GET, FLEET_LIST, "GET", "/api/ps", "models", NULL,
        FLEET_LIST_TIMEOUT_MS},
    {ROUTE_PULL, METHOD_POST, FLEET_PULL, "POST", "/api/pull", NULL, NULL, 0},
    {ROUTE_DELETE, METHOD_DELETE, FLEET_MODIFY, "DELETE", "/api/delete", NULL,
        NULL, FLEET_MODIFY_TIMEOUT_MS},
    {ROUTE_COPY, METHOD_POST, FLEET_MODIFY, "POST", "/api/copy", NULL, NULL,
        FLEET_MODIFY_TIMEOUT_MS},
};
#define FLEET_NROUTES (sizeof fleet_routes / sizeof fleet_routes[0])

void
fleet_str_add(struct fleet_str *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (b->len + (size_t)n + 1 > b->cap) {
		b->cap = (b->len + (size_t)n + 1) * 2;
		b->s = xrealloc(b->s, b->cap);
	}
	va_start(ap, fmt);
	vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

const char *
fleet_str_get(const struct fleet_str *b)
{
	return b->s != NULL ? b->s : "";
}

static char *
fleet_print(const cJSON *json)
{
	char *text = cJSON_PrintUnformatted(json);

	if (text == NULL)
		abort(); /* out of memory, as xmalloc */
	return text;
}

static const struct fleet_route *
fleet_route_find(int route, int method)
{
	const struct fleet_route *r;
	size_t i;

	for (i = 0; i < FLEET_NROUTES; i++) {
		r = &fleet_routes[i];
		if (r->route == route &&
		    (r->method == method ||
		        (r->kind == FLEET_LIST && method == METHOD_HEAD)))
			return r;
	}
	return NULL;
}

int
fleet_is_fleetwide(int route, int method)
{
	return fleet_route_find(route, method) != NULL;
}

/* {"error":MSG}, or OpenAI's {"error":{"message":MSG,...}}. */
static void
fleet_sink_error(
    const struct fleet_sink *sink, int openai, int status, const char *msg)
{
	cJSON *root = cJSON_CreateObject(), *err;
	char *text;

	if (openai) {
		err = cJSON_AddObjectToObject(root, "error");
		cJSON_AddStringToObject(err, "message", msg);
		cJSON_AddStringToObject(err, "type",
		    status < 500 ? "invalid_request_error" : "api_error");
		cJSON_AddNullToObject(err, "param");
		cJSON_AddNullToObject(err, "code");
	} else
		cJSON_AddStringToObject(root, "error", msg);
	text = fleet_print(root);
	cJSON_Delete(root);
	sink->respond(sink->arg, status, FLEET_JSON, text, strlen(text));
	cJSON_free(text);
}

static void
fleet_error(struct fleet_op *op, int status, const char *msg)
{
	fleet_sink_error(&op->sink, op->openai, status, msg);
}

void
fleet_respond_json(struct fleet_op *op, int status, cJSON *root)
{
	char *text = fleet_print(root);

	cJSON_Delete(root);
	op->sink.respond(op->sink.arg, status, FLEET_JSON, text, strlen(text));
	cJSON_free(text);
}

/* A pull: one NDJSON line to the client. */
void
fleet_emit(struct fleet_op *op, cJSON *root)
{
	char *text = fleet_print(root), *line;
	int n;

	cJSON_Delete(root);
	n = xasprintf(&line, "%s\n", text);
	cJSON_free(text);
	op->sink.stream_write(op->sink.arg, line, (size_t)n);
	free(line);
}

/* The first reason a slot failed is kept; control bytes become spaces. */
void
fleet_slot_fail(struct fleet_slot *s, const char *fmt, ...)
{
	va_list ap;
	char *p;

	s->ok = 0;
	if (s->failed)
		return;
	s->failed = 1;
	va_start(ap, fmt);
	vsnprintf(s->why, sizeof s->why, fmt, ap);
	va_end(ap);
	for (p = s->why; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
}

/* What an error answer says: Ollama's "error", OpenAI's error.message,
 * or the first line of a body that is not JSON (a 404 page, a proxy's). */
static void
fleet_answer_words(const char *body, char *out, size_t size)
{
	cJSON *json, *e;
	size_t n;

	out[0] = '\0';
	if (body == NULL || body[0] == '\0')
		return;
	json = cJSON_Parse(body);
	if (json == NULL) {
		n = strcspn(body, "\r\n");
		snprintf(
		    out, size, "%.*s", (int)(n < size ? n : size - 1), body);
		return;
	}
	e = cJSON_GetObjectItemCaseSensitive(json, "error");
	if (cJSON_IsObject(e))
		e = cJSON_GetObjectItemCaseSensitive(e, "message");
	if (cJSON_IsString(e))
		snprintf(out, size, "%s", e->valuestring);
	cJSON_Delete(json);
}

/* No answer, or one that is not what was asked. */
void
fleet_slot_answer_fail(
    struct fleet_slot *s, const struct backend_fetch_result *res)
{
	char words[FLEET_WHY_MAX];

	if (res->status == 0) {
		fleet_slot_fail(s, "%s",
		    res->error != NULL && res->error[0] != '\0' ? res->error
		                                                : "no answer");
		return;
	}
	fleet_answer_words(res->body, words, sizeof words);
	fleet_slot_fail(s, "%s", words);
}

/* "a: connection refused; b: answered 500: E" of the slots that failed;
 * returns how many did. */
int
fleet_reasons(const struct fleet_op *op, struct fleet_str *out)
{
	const struct fleet_slot *s;
	int i, n = 0;

	for (i = 0; i < op->nslots; i++) {
		s = &op->slots[i];
		if (s->ok)
			continue;
		fleet_str_add(out, "%s%s: ", n++ > 0 ? "; " : "", s->b->name);
		if (s->status != 0 && s->status != 200)
			fleet_str_add(out, "answered %ld%s", s->status,
			    s->why[0] != '\0' ? ": " : "");
		else if (s->why[0] == '\0')
			fleet_str_add(out, "no answer");
		fleet_str_add(out, "%s", s->why);
	}
	return n;
}

/* "a, b" of the slots that succeeded; returns how many did. */
int
fleet_names_ok(const struct fleet_op *op, struct fleet_str *out)
{
	int i, n = 0;

	for (i = 0; i < op->nslots; i++)
		if (op->slots[i].ok)
			fleet_str_add(out, "%s%s", n++ > 0 ? ", " : "",
			    op->slots[i].b->name);
	return n;
}

/* --- lists: /api/tags, /v1/models, /api/ps ------------------------------ */

static void
fleet_list_done(struct fleet_slot *s, const struct backend_fetch_result *res)
{
	const struct fleet_route *r = s->op->r;
	cJSON *json;

	if (res->status != 200) {
		fleet_slot_answer_fail(s, res);
		return;
	}
	if (res->len >= BACKEND_FETCH_KEEP) {
		fleet_slot_fail(s, "its answer is over %d MiB",
		    BACKEND_FETCH_KEEP / (1024 * 1024));
		return;
	}
	json = res->body != NULL ? cJSON_Parse(res->body) : NULL;
	if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(json, r->array))) {
		cJSON_Delete(json);
		fleet_slot_fail(s, "its answer has no \"%s\" list", r->array);
		return;
	}
	s->answer = json;
	s->ok = 1;
}

/* Is there no entry in out with e's key yet?  An entry without one is
 * not a model: never taken. */
static int
fleet_list_fresh(const cJSON *out, const cJSON *e, const char *key)
{
	const cJSON *k = cJSON_GetObjectItemCaseSensitive(e, key), *o, *have;

	if (!cJSON_IsString(k))
		return 0;
	cJSON_ArrayForEach(o, out)
	{
		have = cJSON_GetObjectItemCaseSensitive(o, key);
		if (strcmp(have->valuestring, k->valuestring) == 0)
			return 0;
	}
	return 1;
}

/* The answers' entries, moved into one list in backend order: each key
 * once (the first backend's entry, verbatim), or every entry of every
 * backend with its name added (ps). */
static cJSON *
fleet_list_merge(struct fleet_op *op)
{
	const struct fleet_route *r = op->r;
	cJSON *root = cJSON_CreateObject(), *out, *arr, *e, *next;
	struct fleet_slot *s;
	int i;

	if (r->route == ROUTE_V1_MODELS)
		cJSON_AddStringToObject(root, "object", "list");
	if ((out = cJSON_AddArrayToObject(root, r->array)) == NULL)
		abort(); /* out of memory */
	for (i = 0; i < op->nslots; i++) {
		s = &op->slots[i];
		if (!s->ok)
			continue;
		arr = cJSON_GetObjectItemCaseSensitive(s->answer, r->array);
		for (e = arr->child; e != NULL; e = next) {
			next = e->next;
			if (!cJSON_IsObject(e))
				continue;
			if (r->key != NULL && !fleet_list_fresh(out, e, r->key))
				continue;
			cJSON_DetachItemViaPointer(arr, e);
			if (r->key == NULL) {
				cJSON_DeleteItemFromObjectCaseSensitive(
				    e, "backend");
				cJSON_AddStringToObject(
				    e, "backend", s->b->name);
			}
			cJSON_AddItemToArray(out, e);
		}
	}
	return root;
}

static void
fleet_list_finish(struct fleet_op *op)
{
	struct fleet_str why = {NULL, 0, 0};
	char *msg;
	int nfailed = fleet_reasons(op, &why);

	if (nfailed == op->nslots) {
		xasprintf(&msg, "no backend answered %s: %s", op->what,
		    fleet_str_get(&why));
		log_warn("fleet: %s", msg);
		fleet_error(op, 502, msg);
		free(msg);
	} else {
		if (nfailed > 0)
			log_warn("fleet: %s: left out %s", op->what,
			    fleet_str_get(&why));
		fleet_respond_json(op, 200, fleet_list_merge(op));
	}
	free(why.s);
}

/* --- delete, copy -------------------------------------------------------- */

static void
fleet_modify_done(struct fleet_slot *s, const struct backend_fetch_result *res)
{
	if (res->status >= 200 && res->status < 300)
		s->ok = 1;
	else
		fleet_slot_answer_fail(s, res);
}

/* 200 when any succeeded; when none did and all answered alike with a
 * 4xx, that (404: the model is nowhere); else 500. */
static void
fleet_modify_finish(struct fleet_op *op)
{
	struct fleet_str why = {NULL, 0, 0};
	long same = op->slots[0].status;
	char *msg;
	int i, nfailed = fleet_reasons(op, &why);

	for (i = 1; i < op->nslots; i++)
		if (op->slots[i].status != same)
			same = 0;
	if (nfailed < op->nslots) {
		if (nfailed > 0)
			log_warn("fleet: %s failed on %s (it succeeded on the "
			         "others)",
			    op->what, fleet_str_get(&why));
		op->sink.respond(op->sink.arg, 200, NULL, "", 0);
		free(why.s);
		return;
	}
	log_warn("fleet: %s failed on %s", op->what, fleet_str_get(&why));
	if (same == 404 && op->r->route == ROUTE_DELETE)
		xasprintf(&msg, "model '%s' not found", op->model);
	else if (same == 404)
		xasprintf(&msg, "model \"%s\" not found", op->model);
	else if (same >= 400 && same < 500 && op->slots[0].why[0] != '\0')
		msg = xstrdup(op->slots[0].why); /* the backends' own words */
	else {
		same = 500;
		xasprintf(
		    &msg, "%s failed on %s", op->what, fleet_str_get(&why));
	}
	fleet_error(op, (int)same, msg);
	free(msg);
	free(why.s);
}

/* --- the op's life ------------------------------------------------------- */

static void
fleet_free(struct fleet_op *op)
{
	struct fleet_slot *s;
	int i;

	for (i = 0; i < op->nslots; i++) {
		s = &op->slots[i];
		cJSON_Delete(s->answer);
		free(s->line);
		backend_unref(s->b);
	}
	for (i = 0; i < op->ndigests; i++) {
		free(op->digests[i].digest);
		free(op->digests[i].status);
		free(op->digests[i].per);
	}
	for (i = 0; i < op->nstatuses; i++)
		free(op->statuses[i]);
	free(op->digests);
	free(op->slots);
	free(op->body);
	free(op->model);
	free(op->dest);
	free(op->what);
	free(op);
}

/* Every fetch has ended: the one answer, then the op is gone. */
static void
fleet_finish(struct fleet_op *op)
{
	op->finishing = 1;
	switch (op->r->kind) {
	case FLEET_LIST:
		fleet_list_finish(op);
		break;
	case FLEET_PULL:
		fleet_pull_finish(op);
		break;
	case FLEET_MODIFY:
		fleet_modify_finish(op);
		break;
	}
	fleet_free(op);
}

static void
fleet_fetch_done(void *arg, const struct backend_fetch_result *res)
{
	struct fleet_slot *s = arg;
	struct fleet_op *op = s->op;

	s->fetch = NULL;
	s->running = 0;
	s->status = res->status;
	switch (op->r->kind) {
	case FLEET_LIST:
		fleet_list_done(s, res);
		break;
	case FLEET_PULL:
		fleet_pull_done(s, res);
		break;
	case FLEET_MODIFY:
		fleet_modify_done(s, res);
		break;
	}
	if (--op->pending == 0 && !op->starting)
		fleet_finish(op);
}

/* A JSON string member, as Go's decoder finds it (keys in any case);
 * NULL when missing, empty or not a string. */
static const char *
fleet_json_str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItem(o, key);

	return cJSON_IsString(v) && v->valuestring[0] != '\0' ? v->valuestring
	                                                      : NULL;
}

/* Only spaces, tabs and line ends (or nothing)? */
static int
fleet_blank(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
			return 0;
	return 1;
}

/* A pull's, delete's or copy's body: what it names, or why it is refused
 * (in Ollama's words where it has them). */
static const char *
fleet_prepare(struct fleet_op *op)
{
	const char *why = NULL, *m, *dest = NULL;
	cJSON *json;

	if (fleet_blank(op->body, op->len))
		return "missing request body";
	if ((json = cJSON_Parse(op->body)) == NULL)
		return "invalid JSON in the request body";
	if (!cJSON_IsObject(json))
		why = "the request body is not a JSON object";
	else if (op->r->route == ROUTE_COPY) {
		m = fleet_json_str(json, "source");
		dest = fleet_json_str(json, "destination");
		if (m == NULL)
			why = "source \"\" is invalid";
		else if (dest == NULL)
			why = "destination \"\" is invalid";
	} else {
		if ((m = fleet_json_str(json, "model")) == NULL)
			m = fleet_json_str(json, "name");
		if (m == NULL)
			why = op->r->route == ROUTE_PULL
			    ? "invalid model name"
			    : "name \"\" is invalid";
	}
	if (why == NULL) {
		op->model = xstrdup(m);
		op->dest = dest != NULL ? xstrdup(dest) : NULL;
		/* Only an explicit false turns streaming off, as in Ollama. */
		op->stream =
		    !cJSON_IsFalse(cJSON_GetObjectItem(json, "stream"));
	}
	cJSON_Delete(json);
	return why;
}

/* Does this request go to this (usable) backend? */
static int
fleet_wants(const struct fleet_op *op, const struct backend *b)
{
	if (op->r->kind == FLEET_LIST || op->r->route == ROUTE_COPY)
		return 1;
	return backend_admits(b, op->model);
}

/* The backends asked, in file order, each referenced; returns how many,
 * and in *nusable how many are usable at all. */
static int
fleet_pick(struct fleet_op *op, int *nusable)
{
	struct backend *b;
	int n = 0;

	*nusable = 0;
	TAILQ_FOREACH(b, &rt.backends, entry)
	{
		if (!backend_usable(b))
			continue;
		(*nusable)++;
		if (fleet_wants(op, b))
			n++;
	}
	if (n == 0)
		return 0;
	op->slots = xcalloc((size_t)n, sizeof *op->slots);
	TAILQ_FOREACH(b, &rt.backends, entry)
	{
		if (op->nslots == n || !backend_usable(b) ||
		    !fleet_wants(op, b))
			continue;
		op->slots[op->nslots].op = op;
		op->slots[op->nslots].b = b;
		backend_ref(b);
		op->nslots++;
	}
	return n;
}

/* Nobody to ask: why not. */
static void
fleet_refuse(struct fleet_op *op, int nusable)
{
	char *msg;

	if (nusable == 0) {
		log_warn("fleet: %s: no backend is up", op->what);
		fleet_error(op, 503, "no backend is up");
		return;
	}
	if (op->r->route == ROUTE_PULL) {
		xasprintf(&msg, "no backend's models allow-list admits '%s'",
		    op->model);
		fleet_error(op, 400, msg);
	} else {
		xasprintf(&msg,
		    "model '%s' not found: no backend's models allow-list "
		    "admits it",
		    op->model);
		fleet_error(op, 404, msg);
	}
	free(msg);
}

/* Starts every slot's fetch.  A fetch that cannot start fails its slot;
 * one whose on_done comes inside backend_fetch_start is counted as done
 * there, and its returned handle is not kept. */
static void
fleet_launch(struct fleet_op *op)
{
	const struct fleet_route *r = op->r;
	struct backend_fetch_spec spec;
	struct backend_fetch *f;
	struct fleet_slot *s;
	int i;

	memset(&spec, 0, sizeof spec);
	spec.method = r->ask;
	spec.path = r->path;
	if (r->kind != FLEET_LIST) {
		spec.body = op->body;
		spec.body_len = op->len;
		spec.keep_max = FLEET_SMALL_KEEP;
	}
	spec.timeout_ms = r->timeout_ms;
	if (r->kind == FLEET_PULL && op->stream)
		spec.on_data = fleet_pull_data;
	spec.on_done = fleet_fetch_done;
	op->starting = 1;
	for (i = 0; i < op->nslots; i++) {
		s = &op->slots[i];
		s->spec = spec;
		s->spec.arg = s;
		s->running = 1;
		op->pending++;
		f = backend_fetch_start(s->b, &s->spec);
		if (!s->running)
			continue;
		if (f == NULL) {
			s->running = 0;
			op->pending--;
			fleet_slot_fail(s, "cannot start a request to it");
			continue;
		}
		s->fetch = f;
	}
	op->starting = 0;
}

static void
fleet_describe(struct fleet_op *op)
{
	switch (op->r->kind) {
	case FLEET_LIST:
		xasprintf(&op->what, "GET %s", op->r->path);
		break;
	case FLEET_PULL:
		xasprintf(&op->what, "pull of %s", op->model);
		break;
	case FLEET_MODIFY:
		if (op->r->route == ROUTE_COPY)
			xasprintf(
			    &op->what, "copy of %s to %s", op->model, op->dest);
		else
			xasprintf(&op->what, "delete of %s", op->model);
		break;
	}
}

struct fleet_op *
fleet_start(int route, int method, const char *body, size_t len,
    const struct fleet_sink *sink)
{
	const struct fleet_route *r = fleet_route_find(route, method);
	struct fleet_op *op;
	const char *why;
	int nusable;

	if (r == NULL) {
		fleet_sink_error(sink, route == ROUTE_V1_MODELS, 500,
		    "not a fleet-wide endpoint");
		return NULL;
	}
	op = xcalloc(1, sizeof *op);
	op->r = r;
	op->sink = *sink;
	op->openai = route == ROUTE_V1_MODELS;
	op->stream = 1;
	if (r->kind != FLEET_LIST) { /* kept: each backend is sent it */
		op->body = xmalloc(len + 1);
		if (len > 0)
			memcpy(op->body, body, len);
		op->body[len] = '\0';
		op->len = len;
		if ((why = fleet_prepare(op)) != NULL) {
			fleet_error(op, 400, why);
			fleet_free(op);
			return NULL;
		}
	}
	fleet_describe(op);
	if (fleet_pick(op, &nusable) == 0) {
		fleet_refuse(op, nusable);
		fleet_free(op);
		return NULL;
	}
	log_info("fleet: %s on %d backend%s", op->what, op->nslots,
	    log_plural(op->nslots));
	if (r->kind == FLEET_PULL && op->stream)
		op->sink.stream_begin(op->sink.arg, 200, FLEET_NDJSON);
	fleet_launch(op);
	if (op->pending == 0) {
		fleet_finish(op); /* every fetch failed at once */
		return NULL;
	}
	return op;
}

void
fleet_cancel(struct fleet_op *op)
{
	struct fleet_slot *s;
	int i;

	if (op == NULL || op->finishing)
		return;
	for (i = 0; i < op->nslots; i++) {
		s = &op->slots[i];
		if (s->fetch != NULL)
			backend_fetch_cancel(s->fetch);
		s->fetch = NULL;
		s->running = 0;
	}
	fleet_free(op);
}
