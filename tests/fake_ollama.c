/*
 * fake-ollama: a fake Ollama HTTP server for the integration tests.
 *
 * evhttp would buffer request bodies and hide the connection, so requests
 * are parsed with the proxy's own strict parser (src/httpreq.c, with Go's
 * limits instead of the front door's) on a plain bufferevent: bodies
 * stream through
 * (multi-GiB blob uploads stay small in memory), answers can go out before
 * the body is read, and faults can act on the connection itself.  Output is
 * deterministic (no Date header, fixed timestamps and durations) so the
 * tests can compare responses byte for byte.
 *
 * Usage: fake-ollama [-l host:port] [-n name] [-v] [-T tags] [-P loaded]
 *                    [-D load_ms] [-B busy_ms] [-N num_parallel]
 *                    [-M max_loaded]
 * Prints the bound port and a newline on stdout, then never writes there.
 *
 * Without -T or -P (nor POST /_fake/models giving tags or loaded), the
 * models are the fixed ones below and any model is there but those whose
 * name begins with "missing".  With them, the fake keeps a fleet member's
 * models: -T the installed ones (/api/tags), -P those loaded at the start
 * (/api/ps; a loaded model is installed too), both comma-separated.  A
 * request for a model that is not installed is 404; one for a model that
 * is not loaded first waits -D ms, sending nothing, while it loads.  -B
 * holds each generation that long in all (it applies in either mode), and
 * -N is only reported (Ollama's OLLAMA_NUM_PARALLEL).  /api/pull, copy
 * and delete change the lists.  -M keeps at most that many models loaded
 * (Ollama's OLLAMA_MAX_LOADED_MODELS; default: no limit): a load that
 * would pass it first unloads the least recently used loaded model (the
 * start's -P is taken as it is; a model still loading is never unloaded,
 * nor are requests already answering cut short).
 */

#define _GNU_SOURCE

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/util.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "ollama-pool.h"

#ifndef __unused
#define __unused __attribute__((__unused__))
#endif

#define FAKE_JSON_MAX (64u * 1024 * 1024)
#define FAKE_DISCARD_MAX (256 * 1024) /* Go's maxPostHandlerReadBytes */
#define FAKE_OUT_HIGH (64 * 1024)
#define FAKE_IN_HIGH (256 * 1024)
#define FAKE_LINGER_MS 500 /* Go's rstAvoidanceDelay */
#define FAKE_SLOW_TICK_MS 100
#define FAKE_TOKENS_MAX 1000000
#define FAKE_MS_MAX 86400000L

#define FAKE_CT_JSON "application/json; charset=utf-8"
#define FAKE_CT_TEXT "text/plain; charset=utf-8"
#define FAKE_TIME "2024-01-01T00:00:00Z"
#define FAKE_CREATED 1704067200
#define FAKE_DONE_FIELDS                                                       \
	"\"done_reason\":\"stop\",\"total_duration\":%lld,"                    \
	"\"load_duration\":%lld,\"prompt_eval_count\":%ld,"                    \
	"\"prompt_eval_duration\":100,\"eval_count\":%ld,"                     \
	"\"eval_duration\":500"

#define FAKE_CL_STREAM (-1) /* chunked, or close-delimited for 1.0 */
#define FAKE_CL_NONE (-2) /* no Content-Length at all (204, 304) */
#define FAKE_ARRIVALS_MAX 10000

enum fake_route {
	R_NOTFOUND,
	R_NOTALLOWED,
	R_ROOT,
	R_VERSION,
	R_TAGS,
	R_PS,
	R_SHOW,
	R_GENERATE,
	R_CHAT,
	R_EMBED,
	R_EMBEDDINGS,
	R_PULL,
	R_COPY,
	R_DELETE,
	R_BLOB,
	R_OAI_CHAT,
	R_OAI_COMPL,
	R_OAI_EMBED,
	R_OAI_MODELS,
	R_OAI_MODEL,
	R_ECHO,
	R_STATS,
	R_RESET,
	R_FAULT,
	R_FAULT_CLEAR,
	R_MODELS
};

enum fake_action {
	FA_NONE,
	FA_STATUS,
	FA_HANG,
	FA_DIE_AFTER,
	FA_CLOSE,
	FA_RESET,
	FA_SLOW_READ
};

enum fake_body { FB_DISCARD, FB_JSON, FB_HASH };

enum fake_timer {
	FT_SLOW,
	FT_HANG,
	FT_FIRST_BYTE,
	FT_REPLY,
	FT_INTERVAL,
	FT_LINGER,
	FT_LOAD
};

enum fake_kind { FS_GENERATE, FS_CHAT, FS_PULL, FS_OAI_CHAT, FS_OAI_COMPL };

struct fake_header {
	char *name, *value;
};

/* A POST /_fake/fault order; the fields are those of its JSON body. */
struct fake_fault {
	TAILQ_ENTRY(fake_fault) entry;
	enum fake_action action;
	int status;
	char *path, *body, *content_type, *retry_after;
	char *headers; /* raw header lines added to a status answer */
	long count, delay_ms, chunks, bytes_per_sec;
};

struct fake_stream {
	enum fake_kind kind;
	int active, wait_interval;
	long n; /* tokens, or pull progress lines */
	long sent, total, prompt, interval_ms;
	long error_after; /* -1: no error line */
	int usage; /* /v1: stream_options.include_usage */
	int layers; /* pull: 1, or 2 for a model pulled into the tags */
	uint64_t busy_until; /* the last line not before (us), or 0 */
};

struct fake_req {
	int counted; /* non-control, and since the last reset */
	int control;
	enum fake_route route;
	unsigned method, major, minor;
	char *target;
	char *path; /* percent-decoded, without the query */
	struct fake_header *hdrs;
	size_t nhdrs;

	int head, chunked, keep_alive, expect_continue;
	int headers_done, msg_done, dispatched, stop_parse, close_action;
	int slow_resume;
	size_t slow_budget;

	enum fake_body body_mode;
	uint64_t body_bytes;
	struct evbuffer *json_buf;
	int too_large, json_parsed, json_checked;
	cJSON *json;
	char *qmodel; /* the model as a JSON string literal */
	EVP_MD_CTX *md;

	int digest_ok;
	char digest[65];
	int blob_wait; /* a known blob's chunked body: Go reads first */

	struct fake_fault fault; /* a copy; FA_NONE if none applies */
	int hang_done, first_byte_done;
	int later_status;
	struct evbuffer *later;

	int resp_started, resp_queued, resp_finished, resp_chunked, die;
	struct fake_stream stream;
	uint64_t later_at; /* when the later answer is due (us) */

	char *conc_model; /* counted in "concurrent" for it until answered */
	int ready; /* the model is loaded: the answer may go */
	int did_load, load_seen;
	unsigned load_gen;
	uint64_t load_at; /* the load this request waits for ends (us) */
	char *load_model;
	long long load_ns; /* the final chunk's load_duration, if did_load */
	long busy_ms;
	char *error_text; /* a pull's error line instead of "runner failed" */
	char *pull_model; /* a pull that adds this model to the tags */
	char pull_digest[2][72];
};

struct fake_conn {
	TAILQ_ENTRY(fake_conn) entry;
	struct bufferevent *bev;
	struct event *timer; /* one delay at a time, of timer_kind */
	enum fake_timer timer_kind;
	struct httpreq parser;
	int used, lingering;
	struct fake_req req; /* one request at a time */
};

static struct event_base *fake_base;
static const char *fake_name;
static int fake_verbose;
static TAILQ_HEAD(, fake_conn) fake_conns = TAILQ_HEAD_INITIALIZER(fake_conns);
static TAILQ_HEAD(, fake_fault) fake_faults = TAILQ_HEAD_INITIALIZER(
    fake_faults);
static char **fake_blobs;
static size_t fake_nblobs;
static struct fake_header *fake_last_hdrs;
static char *fake_last_target; /* as it arrived, query and all */
static size_t fake_nlast;

static struct {
	uint64_t accepted, used, open_used, max_used;
	uint64_t requests, active, max_active;
	uint64_t gone, gone_headers, gone_streaming, gone_body;
} fake_stats;

/* An installed model (-T, -P, /_fake/models, pulls and copies). */
struct fake_model {
	char *name; /* as Ollama shows it: "llama3" is "llama3:latest" */
	int loaded, loading;
	uint64_t load_at; /* while loading: when it is loaded (us) */
	uint64_t used; /* the last request for it (fake_models.ticks) */
};

static struct {
	int on; /* configured: tags, ps and 404s follow the list */
	struct fake_model *v;
	size_t n;
	long load_ms, busy_ms, num_parallel, max_loaded;
	char *pull_error;
	unsigned gen; /* bumped when the lists are replaced */
	uint64_t ticks, evictions; /* requests for a model; -M unloads */
} fake_models;

/* The command line's model settings, which /_fake/reset restores. */
static struct {
	const char *tags, *loaded;
	long load_ms, busy_ms, num_parallel, max_loaded;
} fake_opt = {NULL, NULL, 0, 0, 1, 0};

/* A counter by name: per model, or per Authorization value. */
struct fake_count {
	char *key;
	uint64_t n, cur, max;
};

struct fake_arrival {
	char *model, *tag;
};

/* The stats of the model-routed requests, reset with fake_stats. */
static struct {
	uint64_t cur, max;
	struct fake_count *models, *auth;
	size_t nmodels, nauth;
	struct fake_arrival *arrivals;
	size_t narrivals, arrivals_cap;
} fake_mstats;

/* Fixed answers, compact as Go's encoding/json writes them. */
static const char fake_tags_json[] =
    "{\"models\":[{\"name\":\"llama3.2:latest\","
    "\"model\":\"llama3.2:latest\",\"modified_at\":\"" FAKE_TIME "\","
    "\"size\":2019393189,\"digest\":"
    "\"a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72\","
    "\"details\":{\"format\":\"gguf\",\"family\":\"llama\","
    "\"parameter_size\":\"3.2B\",\"quantization_level\":\"Q4_K_M\"}},"
    "{\"name\":\"nomic-embed-text:latest\","
    "\"model\":\"nomic-embed-text:latest\","
    "\"modified_at\":\"" FAKE_TIME "\",\"size\":274302450,\"digest\":"
    "\"0a109f422b47e3a30ba2b10eca18548e944e8a23073ee3f3e947efcf3c45e59f\","
    "\"details\":{\"format\":\"gguf\",\"family\":\"nomic-bert\","
    "\"parameter_size\":\"137M\",\"quantization_level\":\"F16\"}}]}";
static const char fake_ps_json[] =
    "{\"models\":[{\"name\":\"llama3.2:latest\","
    "\"model\":\"llama3.2:latest\",\"size\":3357000000,\"digest\":"
    "\"a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72\","
    "\"expires_at\":\"2024-01-01T00:05:00Z\",\"size_vram\":3357000000}]}";
static const char fake_show_json[] =
    "{\"license\":\"\",\"modelfile\":\"FROM llama3.2:latest\\n\","
    "\"parameters\":\"stop \\\"<|eot_id|>\\\"\","
    "\"template\":\"{{ .Prompt }}\",\"details\":{\"format\":\"gguf\","
    "\"family\":\"llama\",\"parameter_size\":\"3.2B\","
    "\"quantization_level\":\"Q4_K_M\"},"
    "\"model_info\":{\"general.architecture\":\"llama\"},"
    "\"capabilities\":[\"completion\"],\"modified_at\":\"" FAKE_TIME "\"}";
static const char fake_models_json[] =
    "{\"object\":\"list\",\"data\":[{\"id\":\"llama3.2:latest\","
    "\"object\":\"model\",\"created\":1704067200,\"owned_by\":\"library\"},"
    "{\"id\":\"nomic-embed-text:latest\",\"object\":\"model\","
    "\"created\":1704067200,\"owned_by\":\"library\"}]}";
static const char fake_pull_digest[] =
    "sha256:dde5aa3fc5ffc17176b5e8bdc82f587b24b2678c6c66101bf7da77af9f7ccdff";
static const char fake_preseeded[] =
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

static void fake_stream_pump(struct fake_conn *);
static void fake_log(const char *, ...) __attribute__((format(printf, 1, 2)));
static char *fake_xasprintf(const char *, ...)
    __attribute__((format(printf, 1, 2)));
static void fake_replyf(struct fake_conn *, int, const char *, ...)
    __attribute__((format(printf, 3, 4)));

/* --- small helpers --------------------------------------------------- */

static void
fake_log(const char *fmt, ...)
{
	va_list ap;

	if (!fake_verbose)
		return;
	fprintf(stderr, "fake-ollama%s%s: ", fake_name ? "/" : "",
	    fake_name ? fake_name : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void *
fake_xrealloc(void *p, size_t n)
{
	if ((p = realloc(p, n)) == NULL)
		abort();
	return p;
}

static char *
fake_xstrdup(const char *s)
{
	char *d;

	if (s == NULL)
		return NULL;
	if ((d = strdup(s)) == NULL)
		abort();
	return d;
}

static char *
fake_xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) == -1)
		abort();
	va_end(ap);
	return s;
}

static struct evbuffer *
fake_xevbuffer(void)
{
	struct evbuffer *b;

	if ((b = evbuffer_new()) == NULL)
		abort();
	return b;
}

static char *
fake_xstrndup(const char *s, size_t n)
{
	char *d;

	if ((d = strndup(s, n)) == NULL)
		abort();
	return d;
}

/* Go's encoding/json matches keys case-insensitively, as cJSON does here. */
static long
fake_jnum(const cJSON *obj, const char *key, long def, long min, long max)
{
	const cJSON *v = cJSON_GetObjectItem(obj, key);

	if (!cJSON_IsNumber(v))
		return def;
	if (v->valuedouble < (double)min)
		return min;
	if (v->valuedouble > (double)max)
		return max;
	return (long)v->valuedouble;
}

static const char *
fake_jstr(const cJSON *obj, const char *key)
{
	const cJSON *v = cJSON_GetObjectItem(obj, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void
fake_headers_free(struct fake_header *h, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(h[i].name);
		free(h[i].value);
	}
	free(h);
}

static cJSON *
fake_headers_json(const struct fake_header *h, size_t n)
{
	cJSON *a = cJSON_CreateArray(), *pair;
	size_t i;

	for (i = 0; i < n; i++) {
		pair = cJSON_CreateArray();
		cJSON_AddItemToArray(pair, cJSON_CreateString(h[i].name));
		cJSON_AddItemToArray(
		    pair, cJSON_CreateString(h[i].value ? h[i].value : ""));
		cJSON_AddItemToArray(a, pair);
	}
	return a;
}

static void
fake_fault_free(struct fake_fault *f)
{
	free(f->path);
	free(f->body);
	free(f->content_type);
	free(f->retry_after);
	free(f->headers);
}

/* --- models and their stats ----------------------------------------- */

static uint64_t
fake_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Milliseconds until at, rounded up; a timer that still fires early (a
 * coarse clock) is set again for what is left. */
static long
fake_ms_until(uint64_t at)
{
	uint64_t now = fake_now_us();

	return at > now ? (long)((at - now + 999) / 1000) : 0;
}

static void
fake_sha256_hex(const char *s, char hex[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0, i;

	if (!EVP_Digest(s, strlen(s), md, &len, EVP_sha256(), NULL))
		abort();
	for (i = 0; i < len && i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	hex[2 * i] = '\0';
}

/* Ollama's short names: without a tag, a name means its ":latest". */
static char *
fake_model_name(const char *s)
{
	const char *slash = strrchr(s, '/');

	if (strchr(slash != NULL ? slash : s, ':') != NULL)
		return fake_xstrdup(s);
	return fake_xasprintf("%s:latest", s);
}

/* Names compare as Ollama's do: "llama3" is "LLaMA3:latest". */
static struct fake_model *
fake_model_find(const char *s)
{
	char *name = fake_model_name(s);
	size_t i;

	for (i = 0; i < fake_models.n; i++)
		if (strcasecmp(fake_models.v[i].name, name) == 0)
			break;
	free(name);
	return i < fake_models.n ? &fake_models.v[i] : NULL;
}

static struct fake_model *
fake_model_add(const char *s)
{
	struct fake_model *m;

	if ((m = fake_model_find(s)) != NULL)
		return m;
	fake_models.v = fake_xrealloc(
	    fake_models.v, (fake_models.n + 1) * sizeof *fake_models.v);
	m = &fake_models.v[fake_models.n++];
	memset(m, 0, sizeof *m);
	m->name = fake_model_name(s);
	return m;
}

static int
fake_model_remove(const char *s)
{
	struct fake_model *m = fake_model_find(s);
	size_t i;

	if (m == NULL)
		return 0;
	i = (size_t)(m - fake_models.v);
	free(m->name);
	memmove(m, m + 1, (fake_models.n - i - 1) * sizeof *m);
	fake_models.n--;
	return 1;
}

/* A load that has had its time is over: the model is loaded. */
static int
fake_model_loaded(struct fake_model *m)
{
	if (m->loading && fake_now_us() >= m->load_at) {
		m->loaded = 1;
		m->loading = 0;
	}
	return m->loaded;
}

/*
 * -M: m is about to load.  While the models loaded or loading besides it
 * are -M or more, the least recently used loaded one is unloaded, as
 * Ollama's scheduler makes room under OLLAMA_MAX_LOADED_MODELS.
 */
static void
fake_models_make_room(const struct fake_model *m)
{
	struct fake_model *lru;
	size_t i;
	long n;

	if (fake_models.max_loaded <= 0)
		return;
	for (;;) {
		n = 0;
		lru = NULL;
		for (i = 0; i < fake_models.n; i++) {
			struct fake_model *o = &fake_models.v[i];

			if (o == m || (!fake_model_loaded(o) && !o->loading))
				continue;
			n++;
			if (o->loaded && (lru == NULL || o->used < lru->used))
				lru = o;
		}
		if (n < fake_models.max_loaded || lru == NULL)
			return;
		lru->loaded = 0;
		fake_models.evictions++;
	}
}

static void
fake_models_free(struct fake_model *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(v[i].name);
	free(v);
}

/* A comma-separated list from the command line. */
static void
fake_models_parse(const char *list, int loaded)
{
	char *copy, *p, *name;

	if (list == NULL)
		return;
	copy = p = fake_xstrdup(list);
	while ((name = strsep(&p, ",")) != NULL)
		if (*name != '\0')
			fake_model_add(name)->loaded |= loaded;
	free(copy);
}

/* The command line's settings, at the start and on /_fake/reset. */
static void
fake_models_defaults(void)
{
	fake_models_free(fake_models.v, fake_models.n);
	fake_models.v = NULL;
	fake_models.n = 0;
	fake_models.on = fake_opt.tags != NULL || fake_opt.loaded != NULL;
	fake_models_parse(fake_opt.tags, 0);
	fake_models_parse(fake_opt.loaded, 1);
	fake_models.load_ms = fake_opt.load_ms;
	fake_models.busy_ms = fake_opt.busy_ms;
	fake_models.num_parallel = fake_opt.num_parallel;
	fake_models.max_loaded = fake_opt.max_loaded;
	fake_models.evictions = 0;
	free(fake_models.pull_error);
	fake_models.pull_error = NULL;
	fake_models.gen++;
}

/* Models, by the first spelling seen of each name (as fake_model_find
 * compares them); Authorization values exactly. */
static struct fake_count *
fake_count_get(struct fake_count **v, size_t *n, const char *key, int create)
{
	int model = v == &fake_mstats.models;
	size_t i;

	for (i = 0; i < *n; i++)
		if ((model ? strcasecmp((*v)[i].key, key)
		           : strcmp((*v)[i].key, key)) == 0)
			return &(*v)[i];
	if (!create)
		return NULL;
	*v = fake_xrealloc(*v, (*n + 1) * sizeof **v);
	memset(&(*v)[*n], 0, sizeof **v);
	(*v)[*n].key = fake_xstrdup(key);
	return &(*v)[(*n)++];
}

static void
fake_counts_free(struct fake_count *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(v[i].key);
	free(v);
}

static void
fake_mstats_reset(void)
{
	size_t i;

	fake_counts_free(fake_mstats.models, fake_mstats.nmodels);
	fake_counts_free(fake_mstats.auth, fake_mstats.nauth);
	for (i = 0; i < fake_mstats.narrivals; i++) {
		free(fake_mstats.arrivals[i].model);
		free(fake_mstats.arrivals[i].tag);
	}
	free(fake_mstats.arrivals);
	memset(&fake_mstats, 0, sizeof fake_mstats);
}

/* The routes whose model runs them: counted per model, 404 for a model
 * not installed, and (but /api/show) loading it first. */
static int
fake_route_model(enum fake_route route)
{
	switch (route) {
	case R_SHOW:
	case R_GENERATE:
	case R_CHAT:
	case R_EMBED:
	case R_EMBEDDINGS:
	case R_OAI_CHAT:
	case R_OAI_COMPL:
	case R_OAI_EMBED:
		return 1;
	default:
		return 0;
	}
}

static const char *
fake_req_header(const struct fake_req *r, const char *name)
{
	size_t i;

	for (i = 0; i < r->nhdrs; i++)
		if (strcasecmp(r->hdrs[i].name, name) == 0)
			return r->hdrs[i].value ? r->hdrs[i].value : "";
	return NULL;
}

/* "model", or for /api/show its deprecated alias "name"; NULL if none. */
static const char *
fake_req_model(const struct fake_req *r, int name_alias)
{
	const char *m = fake_jstr(r->json, "model");

	if (name_alias && (m == NULL || *m == '\0'))
		m = fake_jstr(r->json, "name");
	return m != NULL && *m != '\0' ? m : NULL;
}

/* Its answer is out or its client gone: no longer concurrent. */
static void
fake_req_unconcur(struct fake_req *r)
{
	struct fake_count *k;

	if (r->conc_model == NULL)
		return;
	k = fake_count_get(
	    &fake_mstats.models, &fake_mstats.nmodels, r->conc_model, 0);
	if (k != NULL && k->cur > 0)
		k->cur--;
	if (fake_mstats.cur > 0)
		fake_mstats.cur--;
	free(r->conc_model);
	r->conc_model = NULL;
}

static void
fake_req_clear(struct fake_req *r)
{
	fake_req_unconcur(r);
	fake_headers_free(r->hdrs, r->nhdrs);
	free(r->target);
	free(r->path);
	free(r->load_model);
	free(r->error_text);
	free(r->pull_model);
	if (r->json_buf != NULL)
		evbuffer_free(r->json_buf);
	if (r->later != NULL)
		evbuffer_free(r->later);
	if (r->md != NULL)
		EVP_MD_CTX_free(r->md);
	cJSON_Delete(r->json);
	cJSON_free(r->qmodel);
	fake_fault_free(&r->fault);
	memset(r, 0, sizeof *r);
}

static void
fake_timer(struct fake_conn *c, enum fake_timer kind, long ms)
{
	struct timeval tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	c->timer_kind = kind;
	evtimer_add(c->timer, &tv);
}

/* --- connection lifetime --------------------------------------------- */

/* A request stops counting as active once its response is out. */
static void
fake_req_uncount(struct fake_req *r)
{
	if (r->counted && !r->resp_finished && fake_stats.active > 0)
		fake_stats.active--;
	fake_req_unconcur(r);
}

static void
fake_conn_free(struct fake_conn *c, int reset)
{
	struct linger lg = {1, 0};

	if (reset)
		setsockopt(bufferevent_getfd(c->bev), SOL_SOCKET, SO_LINGER,
		    &lg, sizeof lg);
	fake_req_uncount(&c->req);
	if (c->used && fake_stats.open_used > 0)
		fake_stats.open_used--;
	TAILQ_REMOVE(&fake_conns, c, entry);
	bufferevent_free(c->bev);
	event_free(c->timer);
	fake_req_clear(&c->req);
	httpreq_free(&c->parser);
	free(c);
}

/*
 * Closes after a response while part of the request body is unread, the
 * way Go does: half-close, wait, close.  Closing at once with unread data
 * sends a reset that can destroy the response before the peer reads it.
 */
static void
fake_conn_linger(struct fake_conn *c)
{
	c->lingering = 1;
	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	shutdown(bufferevent_getfd(c->bev), SHUT_WR);
	fake_timer(c, FT_LINGER, FAKE_LINGER_MS);
}

static void
fake_stop_reading(struct fake_conn *c)
{
	c->req.stop_parse = 1;
	httpreq_pause(&c->parser);
	bufferevent_disable(c->bev, EV_READ);
}

/* --- responses ------------------------------------------------------- */

static void
fake_send_head(struct fake_conn *c, struct evbuffer *b, int status,
    const char *ctype, long long clen, const char *extra)
{
	struct fake_req *r = &c->req;
	int http11 = r->major == 1 && r->minor >= 1;
	const char *text = response_reason(status);

	if (clen == FAKE_CL_STREAM) {
		if (http11)
			r->resp_chunked = 1;
		else
			r->keep_alive = 0;
	}
	if (status == 413)
		text = "Request Entity Too Large"; /* Go's wording */
	if (text[0] == '\0')
		evbuffer_add_printf(b, "HTTP/1.%d %d status code %d\r\n",
		    http11, status, status);
	else
		evbuffer_add_printf(
		    b, "HTTP/1.%d %d %s\r\n", http11, status, text);
	if (ctype != NULL)
		evbuffer_add_printf(b, "Content-Type: %s\r\n", ctype);
	if (extra != NULL)
		evbuffer_add(b, extra, strlen(extra));
	if (fake_name != NULL)
		evbuffer_add_printf(b, "X-Fake-Name: %s\r\n", fake_name);
	if (clen >= 0)
		evbuffer_add_printf(b, "Content-Length: %lld\r\n", clen);
	else if (r->resp_chunked)
		evbuffer_add_printf(b, "Transfer-Encoding: chunked\r\n");
	if (!r->keep_alive)
		evbuffer_add_printf(b, "Connection: close\r\n");
	else if (!http11)
		evbuffer_add_printf(b, "Connection: keep-alive\r\n");
	evbuffer_add(b, "\r\n", 2);
	r->resp_started = 1;
	fake_log("%s %s -> %d",
	    r->headers_done ? httpreq_method_name(r->method) : "-",
	    r->target ? r->target : "-", status);
}

static void
fake_die(struct fake_conn *c)
{
	c->req.die = 1;
	c->req.resp_queued = 1;
	fake_stop_reading(c);
}

static void
fake_reply(struct fake_conn *c, int status, const char *ctype, const char *body,
    size_t len, const char *extra)
{
	struct fake_req *r = &c->req;
	struct evbuffer *out = bufferevent_get_output(c->bev), *head;
	int bodyless =
	    (status >= 100 && status < 200) || status == 204 || status == 304;
	size_t send = r->head || bodyless ? 0 : len;

	head = fake_xevbuffer();
	fake_send_head(c, head, status, bodyless ? NULL : ctype,
	    bodyless ? FAKE_CL_NONE : (long long)len, extra);
	r->resp_queued = 1;
	if (r->fault.action != FA_DIE_AFTER) {
		evbuffer_add_buffer(out, head);
		evbuffer_add(out, body, send);
	} else if (send > 0) {
		evbuffer_add_buffer(out, head);
		evbuffer_add(out, body, send / 2);
		fake_die(c);
	} else {
		/* Nothing but headers to cut short: cut them. */
		evbuffer_remove_buffer(
		    head, out, evbuffer_get_length(head) / 2);
		fake_die(c);
	}
	evbuffer_free(head);
}

static void
fake_reply_text(struct fake_conn *c, int status, const char *text)
{
	fake_reply(c, status, FAKE_CT_TEXT, text, strlen(text), NULL);
}

/* Ollama's empty answers (c.Status) carry no Content-Type. */
static void
fake_reply_empty(struct fake_conn *c, int status)
{
	fake_reply(c, status, NULL, "", 0, NULL);
}

static void
fake_replyf(struct fake_conn *c, int status, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) == -1)
		abort();
	va_end(ap);
	fake_reply(c, status, FAKE_CT_JSON, s, strlen(s), NULL);
	free(s);
}

/* Takes b; with a delay, answers later (stream:false pacing). */
static void
fake_reply_buf(struct fake_conn *c, int status, struct evbuffer *b, long ms)
{
	if (ms > 0) {
		c->req.later = b;
		c->req.later_status = status;
		c->req.later_at = fake_now_us() + (uint64_t)ms * 1000;
		fake_timer(c, FT_REPLY, ms);
		return;
	}
	fake_reply(c, status, FAKE_CT_JSON, (char *)evbuffer_pullup(b, -1),
	    evbuffer_get_length(b), NULL);
	evbuffer_free(b);
}

static char *
fake_jquote(const char *s)
{
	cJSON *j = cJSON_CreateString(s);
	char *q = cJSON_PrintUnformatted(j);

	if (q == NULL)
		abort();
	cJSON_Delete(j);
	return q;
}

/* oai is the OpenAI error type, or NULL for Ollama's own shape. */
static void
fake_reply_error(
    struct fake_conn *c, int status, const char *msg, const char *oai)
{
	char *q = fake_jquote(msg);

	if (oai != NULL)
		fake_replyf(c, status,
		    "{\"error\":{\"message\":%s,\"type\":"
		    "\"%s\",\"param\":null,\"code\":null}}",
		    q, oai);
	else
		fake_replyf(c, status, "{\"error\":%s}", q);
	cJSON_free(q);
}

static void
fake_reply_notfound(struct fake_conn *c, const char *model, const char *oai)
{
	char *msg = fake_xasprintf("model '%s' not found", model);

	fake_reply_error(c, 404, msg, oai);
	free(msg);
}

/* --- generated text -------------------------------------------------- */

static char *
fake_tokens(long n)
{
	struct evbuffer *b = fake_xevbuffer();
	size_t len;
	char *s;
	long i;

	for (i = 0; i < n; i++)
		evbuffer_add_printf(b, "tok%ld ", i);
	len = evbuffer_get_length(b);
	s = fake_xrealloc(NULL, len + 1);
	evbuffer_remove(b, s, len);
	s[len] = '\0';
	evbuffer_free(b);
	return s;
}

/* The final chunk's load_duration: the load it waited for, if any. */
static long long
fake_load_ns(const struct fake_req *r, long long def)
{
	return r->did_load ? r->load_ns : def;
}

/* Generated text is "tokN " words: nothing in it needs escaping. */
static void
fake_gen_json(struct evbuffer *b, const struct fake_req *r, int chat,
    const char *text, int done, long prompt, long n)
{
	long long load = fake_load_ns(r, 10);

	evbuffer_add_printf(
	    b, "{\"model\":%s,\"created_at\":\"" FAKE_TIME "\",", r->qmodel);
	if (chat)
		evbuffer_add_printf(b,
		    "\"message\":{\"role\":\"assistant\","
		    "\"content\":\"%s\"}",
		    text);
	else
		evbuffer_add_printf(b, "\"response\":\"%s\"", text);
	if (done)
		evbuffer_add_printf(b, ",\"done\":true," FAKE_DONE_FIELDS "}",
		    990 + load + r->busy_ms * 1000000LL, load, prompt, n);
	else
		evbuffer_add_printf(b, ",\"done\":false}");
}

/* chunk: a streamed chat.completion.chunk or text_completion event. */
static void
fake_oai_json(struct evbuffer *b, const struct fake_req *r, int chat, int chunk,
    const char *text, int done, long prompt, long n)
{
	const char *obj = "text_completion";

	if (chat)
		obj = chunk ? "chat.completion.chunk" : "chat.completion";
	evbuffer_add_printf(b,
	    "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%d,\"model\":%s,"
	    "\"system_fingerprint\":\"fp_ollama\",\"choices\":[{",
	    chat ? "chatcmpl-1" : "cmpl-1", obj, FAKE_CREATED, r->qmodel);
	if (chat)
		evbuffer_add_printf(b,
		    "\"index\":0,\"%s\":{\"role\":"
		    "\"assistant\",\"content\":\"%s\"}",
		    chunk ? "delta" : "message", text);
	else
		evbuffer_add_printf(b, "\"text\":\"%s\",\"index\":0", text);
	evbuffer_add_printf(
	    b, ",\"finish_reason\":%s}]", done ? "\"stop\"" : "null");
	if (!chunk || prompt >= 0) /* streamed: -1, no usage */
		evbuffer_add_printf(b,
		    ",\"usage\":{\"prompt_tokens\":%ld,"
		    "\"completion_tokens\":%ld,\"total_tokens\":%ld}",
		    prompt, n, prompt + n);
	evbuffer_add(b, "}", 1);
}

/* --- streams --------------------------------------------------------- */

static void
fake_stream_line(const struct fake_req *r, struct evbuffer *b)
{
	const struct fake_stream *s = &r->stream;
	long i = s->sent, n = s->n;
	int oai = s->kind == FS_OAI_CHAT || s->kind == FS_OAI_COMPL;
	static const char *const pull_tail[] = {
	    "verifying sha256 digest", "writing manifest", "success"};
	/* A pulled model's two layers: the weights, then the params. */
	static const long long layer_total[] = {2019393189LL, 4096};
	char tok[32], *q;
	long k;

	snprintf(tok, sizeof tok, "tok%ld ", i);
	if (i == s->error_after && r->error_text != NULL) {
		q = fake_jquote(r->error_text);
		evbuffer_add_printf(b, "{\"error\":%s}\n", q);
		cJSON_free(q);
	} else if (i == s->error_after && oai)
		evbuffer_add_printf(b,
		    "data: {\"error\":{\"message\":\"runner failed\","
		    "\"type\":\"api_error\",\"param\":null,\"code\":null}}"
		    "\n\n");
	else if (i == s->error_after)
		evbuffer_add_printf(b, "{\"error\":\"runner failed\"}\n");
	else if (s->kind == FS_GENERATE || s->kind == FS_CHAT) {
		fake_gen_json(b, r, s->kind == FS_CHAT, i < n ? tok : "",
		    i >= n, s->prompt, n);
		evbuffer_add(b, "\n", 1);
	} else if (s->kind == FS_PULL && i == 0)
		evbuffer_add_printf(b, "{\"status\":\"pulling manifest\"}\n");
	else if (s->kind == FS_PULL && i <= n && s->layers == 1)
		evbuffer_add_printf(b,
		    "{\"status\":\"pulling %s\",\"digest\":"
		    "\"%s\",\"total\":1000000,\"completed\":%lld}\n",
		    fake_pull_digest, fake_pull_digest, 1000000LL * i / n);
	else if (s->kind == FS_PULL && i <= n * s->layers) {
		/* As Ollama: "pulling " and the digest's first 12 digits. */
		k = (i - 1) / n;
		evbuffer_add_printf(b,
		    "{\"status\":\"pulling %.12s\",\"digest\":"
		    "\"%s\",\"total\":%lld,\"completed\":%lld}\n",
		    r->pull_digest[k] + 7, r->pull_digest[k], layer_total[k],
		    layer_total[k] * (i - k * n) / n);
	} else if (s->kind == FS_PULL)
		evbuffer_add_printf(b, "{\"status\":\"%s\"}\n",
		    pull_tail[i - n * s->layers - 1]);
	else if (i > n + s->usage)
		evbuffer_add_printf(b, "data: [DONE]\n\n");
	else if (i > n) /* as Ollama: the last chunk, no choices, usage */
		evbuffer_add_printf(b,
		    "data: {\"id\":\"%s\",\"object\":\"%s\",\"created\":%d,"
		    "\"model\":%s,\"system_fingerprint\":\"fp_ollama\","
		    "\"choices\":[],\"usage\":{\"prompt_tokens\":%ld,"
		    "\"completion_tokens\":%ld,\"total_tokens\":%ld}}\n\n",
		    s->kind == FS_OAI_CHAT ? "chatcmpl-1" : "cmpl-1",
		    s->kind == FS_OAI_CHAT ? "chat.completion.chunk"
		                           : "text_completion",
		    FAKE_CREATED, r->qmodel, s->prompt, n, s->prompt + n);
	else {
		/* Ollama's completion chunks carry a zero usage until then. */
		evbuffer_add(b, "data: ", 6);
		fake_oai_json(b, r, s->kind == FS_OAI_CHAT, 1, i < n ? tok : "",
		    i >= n, s->usage && s->kind == FS_OAI_COMPL ? 0 : -1, 0);
		evbuffer_add(b, "\n\n", 2);
	}
}

/*
 * Each line is its own chunk and goes out as soon as it is made; lines are
 * only held back while the peer is not reading, to keep memory bounded.
 */
static void
fake_stream_pump(struct fake_conn *c)
{
	struct fake_req *r = &c->req;
	struct fake_stream *s = &r->stream;
	struct evbuffer *out = bufferevent_get_output(c->bev), *line;
	int last, err;

	while (s->active && evbuffer_get_length(out) < FAKE_OUT_HIGH) {
		/* Busy: the generation's end waits (and all after it). */
		if (s->busy_until != 0 && s->sent == s->n &&
		    s->sent != s->error_after) {
			if (fake_now_us() < s->busy_until) {
				s->wait_interval = 1;
				fake_timer(c, FT_INTERVAL,
				    fake_ms_until(s->busy_until));
				return;
			}
			s->busy_until = 0;
		}
		err = s->sent == s->error_after;
		last = err || s->sent + 1 >= s->total;
		line = fake_xevbuffer();
		fake_stream_line(r, line);
		if (r->resp_chunked)
			evbuffer_add_printf(
			    out, "%zx\r\n", evbuffer_get_length(line));
		evbuffer_add_buffer(out, line);
		if (r->resp_chunked)
			evbuffer_add(out, "\r\n", 2);
		evbuffer_free(line);
		s->sent++;
		if (r->fault.action == FA_DIE_AFTER &&
		    s->sent >= r->fault.chunks) {
			s->active = 0;
			fake_die(c);
		} else if (last) {
			if (r->resp_chunked)
				evbuffer_add(out, "0\r\n\r\n", 5);
			s->active = 0;
			r->resp_queued = 1;
			if (r->pull_model != NULL && !err)
				fake_model_add(r->pull_model);
		} else if (s->interval_ms > 0) {
			s->wait_interval = 1;
			fake_timer(c, FT_INTERVAL, s->interval_ms);
			return;
		}
	}
}

static void
fake_stream_start(struct fake_conn *c, enum fake_kind kind, long n, long prompt)
{
	struct fake_req *r = &c->req;
	struct fake_stream *s = &r->stream;
	int oai = kind == FS_OAI_CHAT || kind == FS_OAI_COMPL;

	s->kind = kind;
	s->n = n;
	s->prompt = prompt;
	s->interval_ms =
	    fake_jnum(r->json, "fake_interval_ms", 0, 0, FAKE_MS_MAX);
	s->error_after =
	    fake_jnum(r->json, "fake_error_after", -1, 0, LONG_MAX / 2);
	s->usage = oai &&
	    cJSON_IsTrue(cJSON_GetObjectItem(
	        cJSON_GetObjectItem(r->json, "stream_options"),
	        "include_usage"));
	s->layers = r->pull_model != NULL ? 2 : 1;
	s->total = kind == FS_PULL ? n * s->layers + 4
	    : oai                  ? n + 2 + s->usage
	                           : n + 1;
	if (kind == FS_PULL && r->error_text != NULL)
		s->error_after = 1; /* right after "pulling manifest" */
	if (s->error_after >= s->total)
		s->error_after = -1;
	if (kind != FS_PULL && r->busy_ms > 0)
		s->busy_until = fake_now_us() + (uint64_t)r->busy_ms * 1000;
	fake_send_head(c, bufferevent_get_output(c->bev), 200,
	    oai ? "text/event-stream" : "application/x-ndjson", FAKE_CL_STREAM,
	    NULL);
	s->active = 1;
	fake_stream_pump(c);
}

/* --- handlers -------------------------------------------------------- */

static long
fake_content_bytes(const cJSON *v)
{
	const cJSON *e;
	long n = 0;

	if (cJSON_IsString(v))
		return (long)strlen(v->valuestring);
	if (!cJSON_IsArray(v))
		return 0;
	for (e = v->child; e != NULL; e = e->next) {
		if (cJSON_IsString(e))
			n += (long)strlen(e->valuestring);
		else /* OpenAI content parts */
			n += fake_content_bytes(cJSON_GetObjectItem(e, "text"));
	}
	return n;
}

/* Bytes of "prompt", or of all message contents for chats. */
static long
fake_prompt_bytes(const cJSON *req, int chat)
{
	const cJSON *msgs = cJSON_GetObjectItem(req, "messages"), *m;
	long n = 0;

	if (!chat)
		return fake_content_bytes(cJSON_GetObjectItem(req, "prompt"));
	if (!cJSON_IsArray(msgs))
		return 0;
	for (m = msgs->child; m != NULL; m = m->next)
		n += fake_content_bytes(cJSON_GetObjectItem(m, "content"));
	return n;
}

static long
fake_tokens_wanted(const cJSON *obj, const char *key)
{
	const cJSON *v = cJSON_GetObjectItem(obj, key);

	if (!cJSON_IsNumber(v))
		return 5;
	/* Ollama reads a negative num_predict as "no limit". */
	if (v->valuedouble < 0 || v->valuedouble > FAKE_TOKENS_MAX)
		return FAKE_TOKENS_MAX;
	return (long)v->valuedouble;
}

/* The load this request waited for is over; it ends the model's own
 * unless the lists were replaced meanwhile. */
static int
fake_load_over(struct fake_req *r)
{
	struct fake_model *m;

	if (fake_now_us() < r->load_at)
		return 0;
	if (r->load_gen == fake_models.gen &&
	    (m = fake_model_find(r->load_model)) != NULL && m->loading) {
		m->loaded = 1;
		m->loading = 0;
	}
	return 1;
}

/*
 * A model that is not loaded loads first, the request sending nothing
 * until then (FT_LOAD runs it again).  Returns 0 while it waits.
 */
static int
fake_model_ready(struct fake_conn *c, const char *name)
{
	struct fake_req *r = &c->req;
	struct fake_model *m;

	if (r->ready)
		return 1;
	if (!r->load_seen) {
		r->load_seen = 1;
		r->busy_ms = fake_models.busy_ms;
		m = fake_models.on ? fake_model_find(name) : NULL;
		if (m != NULL)
			m->used = ++fake_models.ticks;
		if (m != NULL && !fake_model_loaded(m)) {
			if (!m->loading) {
				fake_models_make_room(m);
				m->loading = 1;
				m->load_at = fake_now_us() +
				    (uint64_t)fake_models.load_ms * 1000;
			}
			r->did_load = 1;
			r->load_ns = fake_models.load_ms * 1000000LL;
			r->load_at = m->load_at;
			r->load_gen = fake_models.gen;
			r->load_model = fake_xstrdup(m->name);
		}
	}
	if (r->did_load && !fake_load_over(r)) {
		fake_timer(c, FT_LOAD, fake_ms_until(r->load_at));
		return 0;
	}
	r->ready = 1;
	return 1;
}

/*
 * Checks the body and model of a model-taking request and sets qmodel;
 * for a model-routed one, also that the model is installed and loaded.
 * Returns 0 once it has answered with Ollama's error instead, or while
 * the model loads.
 */
static int
fake_need_model(struct fake_conn *c, const char *oai, int name_alias)
{
	struct fake_req *r = &c->req;
	const char *m;

	if (r->json == NULL) {
		fake_reply_error(c, 400,
		    r->body_bytes == 0 ? "missing request body"
		                       : "invalid request body",
		    oai ? "invalid_request_error" : NULL);
		return 0;
	}
	m = fake_jstr(r->json, "model");
	if (name_alias && (m == NULL || *m == '\0'))
		m = fake_jstr(r->json, "name"); /* deprecated alias */
	if (m == NULL || *m == '\0') {
		fake_reply_error(c, 400, "model is required",
		    oai ? "invalid_request_error" : NULL);
		return 0;
	}
	if (fake_models.on
	        ? fake_route_model(r->route) && fake_model_find(m) == NULL
	        : strncmp(m, "missing", 7) == 0) {
		fake_reply_notfound(c, m, oai ? "not_found_error" : NULL);
		return 0;
	}
	if (r->qmodel == NULL)
		r->qmodel = fake_jquote(m);
	if (fake_route_model(r->route) && r->route != R_SHOW)
		return fake_model_ready(c, m);
	return 1;
}

static void
fake_handle_generate(struct fake_conn *c, int chat)
{
	struct fake_req *r = &c->req;
	struct evbuffer *b;
	long n, prompt, ms;
	char *text;

	if (!fake_need_model(c, NULL, 0))
		return;
	n = fake_tokens_wanted(
	    cJSON_GetObjectItem(r->json, "options"), "num_predict");
	prompt = fake_prompt_bytes(r->json, chat);
	if (!cJSON_IsFalse(cJSON_GetObjectItem(r->json, "stream"))) {
		fake_stream_start(c, chat ? FS_CHAT : FS_GENERATE, n, prompt);
		return;
	}
	ms = fake_jnum(r->json, "fake_interval_ms", 0, 0, FAKE_MS_MAX) * n;
	if (ms < r->busy_ms)
		ms = r->busy_ms;
	b = fake_xevbuffer();
	if (cJSON_IsNumber(cJSON_GetObjectItem(r->json, "fake_error_after"))) {
		evbuffer_add_printf(b, "{\"error\":\"runner failed\"}");
		fake_reply_buf(c, 500, b, ms);
		return;
	}
	text = fake_tokens(n);
	fake_gen_json(b, r, chat, text, 1, prompt, n);
	free(text);
	fake_reply_buf(c, 200, b, ms);
}

static void
fake_handle_oai(struct fake_conn *c, int chat)
{
	struct fake_req *r = &c->req;
	struct evbuffer *b;
	long n, prompt, ms;
	char *text;

	if (!fake_need_model(c, "", 0))
		return;
	n = fake_tokens_wanted(r->json, "max_tokens");
	prompt = fake_prompt_bytes(r->json, chat);
	if (cJSON_IsTrue(cJSON_GetObjectItem(r->json, "stream"))) {
		fake_stream_start(
		    c, chat ? FS_OAI_CHAT : FS_OAI_COMPL, n, prompt);
		return;
	}
	b = fake_xevbuffer();
	text = fake_tokens(n);
	fake_oai_json(b, r, chat, 0, text, 1, prompt, n);
	free(text);
	ms =
	    fake_jnum(r->json, "fake_interval_ms", 0, 0, FAKE_MS_MAX) * (n + 1);
	fake_reply_buf(c, 200, b, ms > r->busy_ms ? ms : r->busy_ms);
}

/*
 * /api/push and /api/create stream the same progress.  A pull with the
 * models configured has two layers, with digests of the name's, and adds
 * the model to the tags at "success"; /_fake/models' pull_error ends it
 * after "pulling manifest" instead, either way.
 */
static void
fake_handle_pull(struct fake_conn *c)
{
	struct fake_req *r = &c->req;
	struct evbuffer *b;
	long lines, ms;
	int pull = strcmp(r->path, "/api/pull") == 0, k;
	char hex[65], *seed, *q;

	if (!fake_need_model(c, NULL, 1))
		return;
	lines = fake_jnum(r->json, "fake_lines", 50, 0, FAKE_TOKENS_MAX);
	if (pull && fake_models.pull_error != NULL)
		r->error_text = fake_xstrdup(fake_models.pull_error);
	else if (pull && fake_models.on) {
		r->pull_model = fake_model_name(fake_req_model(r, 1));
		for (k = 0; k < 2; k++) {
			seed = fake_xasprintf("%s layer %d", r->pull_model, k);
			fake_sha256_hex(seed, hex);
			snprintf(r->pull_digest[k], sizeof r->pull_digest[k],
			    "sha256:%s", hex);
			free(seed);
		}
	}
	if (!cJSON_IsFalse(cJSON_GetObjectItem(r->json, "stream"))) {
		fake_stream_start(c, FS_PULL, lines, 0);
		return;
	}
	ms = fake_jnum(r->json, "fake_interval_ms", 0, 0, FAKE_MS_MAX) *
	    (lines * (r->pull_model != NULL ? 2 : 1) + 3);
	b = fake_xevbuffer();
	if (r->error_text != NULL) {
		q = fake_jquote(r->error_text);
		evbuffer_add_printf(b, "{\"error\":%s}", q);
		cJSON_free(q);
		fake_reply_buf(c, 500, b, ms);
		return;
	}
	if (r->pull_model != NULL)
		fake_model_add(r->pull_model);
	evbuffer_add_printf(b, "{\"status\":\"success\"}");
	fake_reply_buf(c, 200, b, ms);
}

/* With the models configured: Ollama's 404 unless it is installed. */
static void
fake_handle_delete(struct fake_conn *c)
{
	const char *m;

	if (!fake_need_model(c, NULL, 1))
		return;
	m = fake_req_model(&c->req, 1);
	if (fake_models.on && !fake_model_remove(m))
		fake_reply_notfound(c, m, NULL);
	else
		fake_reply_empty(c, 200);
}

static void
fake_handle_copy(struct fake_conn *c)
{
	struct fake_req *r = &c->req;
	const char *src = fake_jstr(r->json, "source");
	const char *dst = fake_jstr(r->json, "destination");

	if (r->json == NULL)
		fake_reply_error(c, 400,
		    r->body_bytes == 0 ? "missing request body"
		                       : "invalid request body",
		    NULL);
	else if (src == NULL || *src == '\0' || dst == NULL || *dst == '\0')
		fake_reply_error(
		    c, 400, "source and destination are required", NULL);
	else if (fake_models.on ? fake_model_find(src) == NULL
	                        : strncmp(src, "missing", 7) == 0)
		fake_reply_notfound(c, src, NULL);
	else {
		if (fake_models.on)
			fake_model_add(dst);
		fake_reply_empty(c, 200);
	}
}

static int
fake_blob_known(const char *hex)
{
	size_t i;

	for (i = 0; i < fake_nblobs; i++)
		if (strcmp(fake_blobs[i], hex) == 0)
			return 1;
	return 0;
}

/* Ollama accepts ^sha256[:-][0-9a-fA-F]{64}$; hex comes out lowercase. */
static int
fake_digest_parse(const char *s, char hex[65])
{
	int i;

	if (strncmp(s, "sha256", 6) != 0 || (s[6] != ':' && s[6] != '-'))
		return 0;
	for (i = 0; i < 64; i++) {
		if (!isxdigit((unsigned char)s[7 + i]))
			return 0;
		hex[i] = (char)tolower((unsigned char)s[7 + i]);
	}
	hex[64] = '\0';
	return s[71] == '\0';
}

static void
fake_md_hex(struct fake_req *r, char hex[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0, i;

	EVP_DigestFinal_ex(r->md, md, &len);
	for (i = 0; i < len && i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	hex[2 * i] = '\0';
}

static void
fake_handle_blob(struct fake_conn *c)
{
	struct fake_req *r = &c->req;
	char hex[65], *msg;

	if (!r->digest_ok)
		fake_reply_error(c, 400, "invalid digest format", NULL);
	else if (r->method == METHOD_HEAD)
		fake_reply_empty(c, fake_blob_known(r->digest) ? 200 : 404);
	else if (r->blob_wait || fake_blob_known(r->digest))
		fake_reply_empty(c, 200);
	else {
		fake_md_hex(r, hex);
		if (strcmp(hex, r->digest) == 0) {
			fake_blobs = fake_xrealloc(
			    fake_blobs, (fake_nblobs + 1) * sizeof *fake_blobs);
			fake_blobs[fake_nblobs++] = fake_xstrdup(hex);
			fake_reply_empty(c, 201);
			return;
		}
		msg = fake_xasprintf("digest mismatch, expected \"sha256:%s\", "
		                     "got \"sha256:%s\"",
		    r->digest, hex);
		fake_reply_error(c, 400, msg, NULL);
		free(msg);
	}
}

/* /api/tags, /api/ps and /v1/models from the configured models. */
enum fake_list { FL_TAGS, FL_PS, FL_OAI };

static void
fake_reply_models(struct fake_conn *c, enum fake_list what)
{
	static const char details[] =
	    "\"details\":{\"format\":\"gguf\",\"family\":\"llama\","
	    "\"parameter_size\":\"3.2B\",\"quantization_level\":\"Q4_K_M\"}";
	struct evbuffer *b = fake_xevbuffer();
	struct fake_model *m;
	const char *sep = "";
	char hex[65], *q;
	size_t i;

	evbuffer_add_printf(b,
	    what == FL_OAI ? "{\"object\":\"list\",\"data\":["
	                   : "{\"models\":[");
	for (i = 0; i < fake_models.n; i++) {
		m = &fake_models.v[i];
		if (what == FL_PS && !fake_model_loaded(m))
			continue;
		q = fake_jquote(m->name);
		fake_sha256_hex(m->name, hex);
		if (what == FL_TAGS)
			evbuffer_add_printf(b,
			    "%s{\"name\":%s,\"model\":%s,\"modified_at\":"
			    "\"" FAKE_TIME "\",\"size\":2019393189,"
			    "\"digest\":\"%s\",%s}",
			    sep, q, q, hex, details);
		else if (what == FL_PS)
			evbuffer_add_printf(b,
			    "%s{\"name\":%s,\"model\":%s,\"size\":3357000000,"
			    "\"digest\":\"%s\",%s,\"expires_at\":"
			    "\"2024-01-01T00:05:00Z\",\"size_vram\":"
			    "3357000000}",
			    sep, q, q, hex, details);
		else
			evbuffer_add_printf(b,
			    "%s{\"id\":%s,\"object\":\"model\",\"created\":"
			    "%d,\"owned_by\":\"library\"}",
			    sep, q, FAKE_CREATED);
		cJSON_free(q);
		sep = ",";
	}
	evbuffer_add(b, "]}", 2);
	fake_reply_buf(c, 200, b, 0);
}

static void
fake_reply_cjson(struct fake_conn *c, cJSON *j)
{
	char *s = cJSON_PrintUnformatted(j);

	if (s == NULL)
		abort();
	cJSON_Delete(j);
	fake_reply(c, 200, FAKE_CT_JSON, s, strlen(s), NULL);
	cJSON_free(s);
}

static void
fake_handle_echo(struct fake_conn *c)
{
	struct fake_req *r = &c->req;
	cJSON *j = cJSON_CreateObject();
	char hex[65], ver[32];

	cJSON_AddStringToObject(j, "method", httpreq_method_name(r->method));
	cJSON_AddStringToObject(j, "target", r->target);
	snprintf(ver, sizeof ver, "%u.%u", r->major, r->minor);
	cJSON_AddStringToObject(j, "version", ver);
	cJSON_AddItemToObject(
	    j, "headers", fake_headers_json(r->hdrs, r->nhdrs));
	cJSON_AddNumberToObject(j, "body_bytes", (double)r->body_bytes);
	fake_md_hex(r, hex);
	cJSON_AddStringToObject(j, "body_sha256", hex);
	cJSON_AddBoolToObject(j, "chunked", r->chunked);
	fake_reply_cjson(c, j);
}

static void
fake_stats_models(cJSON *j)
{
	static const char *const fixed_tags[] = {
	    "llama3.2:latest", "nomic-embed-text:latest"};
	cJSON *o, *a, *bym, *maxm;
	size_t i;

#define N(o, k, v) cJSON_AddNumberToObject(o, k, (double)(v))
	N(j, "num_parallel", fake_models.num_parallel);
	N(j, "load_ms", fake_models.load_ms);
	N(j, "busy_ms", fake_models.busy_ms);
	N(j, "max_loaded", fake_models.max_loaded);
	N(j, "evictions", fake_models.evictions);
	N(j, "concurrent", fake_mstats.cur);
	N(j, "max_concurrent", fake_mstats.max);
	maxm = cJSON_AddObjectToObject(j, "max_concurrent_model");
	bym = cJSON_AddObjectToObject(j, "by_model");
	for (i = 0; i < fake_mstats.nmodels; i++) {
		N(maxm, fake_mstats.models[i].key, fake_mstats.models[i].max);
		N(bym, fake_mstats.models[i].key, fake_mstats.models[i].n);
	}
	a = cJSON_AddArrayToObject(j, "arrivals");
	for (i = 0; i < fake_mstats.narrivals; i++) {
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(
		    o, "model", fake_mstats.arrivals[i].model);
		cJSON_AddStringToObject(o, "tag", fake_mstats.arrivals[i].tag);
		cJSON_AddItemToArray(a, o);
	}
	o = cJSON_AddObjectToObject(j, "authorization");
	for (i = 0; i < fake_mstats.nauth; i++)
		N(o, fake_mstats.auth[i].key, fake_mstats.auth[i].n);
#undef N
	cJSON_AddBoolToObject(j, "models_configured", fake_models.on);
	a = cJSON_AddArrayToObject(j, "tags");
	o = cJSON_AddArrayToObject(j, "loaded");
	if (!fake_models.on) {
		for (i = 0; i < 2; i++)
			cJSON_AddItemToArray(
			    a, cJSON_CreateString(fixed_tags[i]));
		cJSON_AddItemToArray(o, cJSON_CreateString(fixed_tags[0]));
		return;
	}
	for (i = 0; i < fake_models.n; i++) {
		cJSON_AddItemToArray(
		    a, cJSON_CreateString(fake_models.v[i].name));
		if (fake_model_loaded(&fake_models.v[i]))
			cJSON_AddItemToArray(
			    o, cJSON_CreateString(fake_models.v[i].name));
	}
}

static void
fake_handle_stats(struct fake_conn *c)
{
	cJSON *j = cJSON_CreateObject(), *p;

#define N(o, k, v) cJSON_AddNumberToObject(o, k, (double)(v))
	N(j, "connections_accepted", fake_stats.accepted);
	N(j, "connections_used", fake_stats.used);
	N(j, "connections_open_used", fake_stats.open_used);
	N(j, "max_concurrent_used", fake_stats.max_used);
	N(j, "requests", fake_stats.requests);
	N(j, "requests_active", fake_stats.active);
	N(j, "max_concurrent_requests", fake_stats.max_active);
	N(j, "client_gone", fake_stats.gone);
	p = cJSON_AddObjectToObject(j, "client_gone_phase");
	N(p, "headers_wait", fake_stats.gone_headers);
	N(p, "streaming", fake_stats.gone_streaming);
	N(p, "body", fake_stats.gone_body);
#undef N
	cJSON_AddItemToObject(j, "last_request_headers",
	    fake_headers_json(fake_last_hdrs, fake_nlast));
	if (fake_last_target != NULL)
		cJSON_AddStringToObject(
		    j, "last_request_target", fake_last_target);
	fake_stats_models(j);
	fake_reply_cjson(c, j);
}

static void
fake_reply_ok(struct fake_conn *c)
{
	struct fake_fault *f;
	int n = 0;

	for (f = TAILQ_FIRST(&fake_faults); f != NULL; f = TAILQ_NEXT(f, entry))
		n++;
	fake_replyf(c, 200, "{\"ok\":true,\"faults_pending\":%d}", n);
}

static void
fake_handle_reset(struct fake_conn *c)
{
	struct fake_conn *o;

	memset(&fake_stats, 0, sizeof fake_stats);
	fake_headers_free(fake_last_hdrs, fake_nlast);
	fake_last_hdrs = NULL;
	fake_nlast = 0;
	free(fake_last_target);
	fake_last_target = NULL;
	for (o = TAILQ_FIRST(&fake_conns); o != NULL;
	     o = TAILQ_NEXT(o, entry)) {
		o->used = 0;
		o->req.counted = 0;
		free(o->req.conc_model);
		o->req.conc_model = NULL;
	}
	fake_mstats_reset();
	fake_models_defaults();
	fake_reply_ok(c);
}

static int
fake_jstrings(const cJSON *a)
{
	const cJSON *e;

	if (!cJSON_IsArray(a))
		return 0;
	for (e = a->child; e != NULL; e = e->next)
		if (!cJSON_IsString(e))
			return 0;
	return 1;
}

/*
 * POST /_fake/models {"tags":[...],"loaded":[...],"load_ms":N,
 * "busy_ms":N,"num_parallel":N,"pull_error":"text"}: each given field
 * replaces its setting.  Tags or loaded turn the configured models on;
 * new tags keep loaded those that were, a loaded model is installed too,
 * and either ends the loads under way.  A pull_error that is not a
 * non-empty string clears it.
 */
static void
fake_handle_models(struct fake_conn *c)
{
	const cJSON *j = c->req.json, *tags, *loaded, *e, *v;
	struct fake_model *old, *m;
	size_t nold, i;

	tags = cJSON_GetObjectItem(j, "tags");
	loaded = cJSON_GetObjectItem(j, "loaded");
	if (!cJSON_IsObject(j)) {
		fake_reply_error(c, 400, "invalid request body", NULL);
		return;
	}
	if ((tags != NULL && !fake_jstrings(tags)) ||
	    (loaded != NULL && !fake_jstrings(loaded))) {
		fake_reply_error(
		    c, 400, "tags and loaded must be arrays of strings", NULL);
		return;
	}
	if (tags != NULL || loaded != NULL) {
		fake_models.on = 1;
		fake_models.gen++;
		for (i = 0; i < fake_models.n; i++) {
			fake_model_loaded(&fake_models.v[i]);
			fake_models.v[i].loading = 0;
		}
	}
	if (tags != NULL) {
		old = fake_models.v;
		nold = fake_models.n;
		fake_models.v = NULL;
		fake_models.n = 0;
		for (e = tags->child; e != NULL; e = e->next) {
			if (*e->valuestring == '\0')
				continue;
			m = fake_model_add(e->valuestring);
			for (i = 0; i < nold; i++)
				if (old[i].loaded &&
				    strcasecmp(old[i].name, m->name) == 0)
					m->loaded = 1;
		}
		fake_models_free(old, nold);
	}
	if (loaded != NULL) {
		for (i = 0; i < fake_models.n; i++)
			fake_models.v[i].loaded = 0;
		for (e = loaded->child; e != NULL; e = e->next)
			if (*e->valuestring != '\0')
				fake_model_add(e->valuestring)->loaded = 1;
	}
	fake_models.load_ms =
	    fake_jnum(j, "load_ms", fake_models.load_ms, 0, FAKE_MS_MAX);
	fake_models.busy_ms =
	    fake_jnum(j, "busy_ms", fake_models.busy_ms, 0, FAKE_MS_MAX);
	fake_models.num_parallel = fake_jnum(
	    j, "num_parallel", fake_models.num_parallel, 0, LONG_MAX / 2);
	if ((v = cJSON_GetObjectItem(j, "pull_error")) != NULL) {
		free(fake_models.pull_error);
		fake_models.pull_error =
		    cJSON_IsString(v) && *v->valuestring != '\0'
		    ? fake_xstrdup(v->valuestring)
		    : NULL;
	}
	fake_reply_ok(c);
}

static const char *
fake_fault_parse(const cJSON *j, struct fake_fault *f)
{
	static const char *const acts[] = {
	    [FA_STATUS] = "status",
	    [FA_HANG] = "hang",
	    [FA_DIE_AFTER] = "die_after",
	    [FA_CLOSE] = "close",
	    [FA_RESET] = "reset",
	    [FA_SLOW_READ] = "slow_read",
	};
	const cJSON *v;
	const char *s;
	int i;

	if (!cJSON_IsObject(j))
		return "invalid request body";
	if ((s = fake_jstr(j, "action")) == NULL)
		return "action is required";
	for (i = FA_STATUS; i <= FA_SLOW_READ; i++)
		if (strcmp(s, acts[i]) == 0)
			f->action = (enum fake_action)i;
	if (f->action == FA_NONE)
		return "unknown action";
	if ((s = fake_jstr(j, "path")) != NULL && *s != '\0')
		f->path = fake_xstrdup(s);
	f->count = fake_jnum(j, "count", 1, 1, LONG_MAX / 2);
	f->status = (int)fake_jnum(j, "status", 503, 100, 999);
	f->body = fake_xstrdup(fake_jstr(j, "body"));
	f->content_type = fake_xstrdup(fake_jstr(j, "content_type"));
	f->headers = fake_xstrdup(fake_jstr(j, "headers"));
	v = cJSON_GetObjectItem(j, "retry_after");
	if (cJSON_IsString(v))
		f->retry_after = fake_xstrdup(v->valuestring);
	else if (cJSON_IsNumber(v))
		f->retry_after = fake_xasprintf("%ld", (long)v->valuedouble);
	f->delay_ms = fake_jnum(j, "delay_ms", 0, 0, FAKE_MS_MAX);
	f->chunks = fake_jnum(j, "chunks", 1, 0, LONG_MAX / 2);
	f->bytes_per_sec =
	    fake_jnum(j, "bytes_per_sec", 65536, 1, LONG_MAX / 2);
	return NULL;
}

static void
fake_handle_fault(struct fake_conn *c)
{
	struct fake_fault *f;
	const char *err;

	if ((f = calloc(1, sizeof *f)) == NULL)
		abort();
	if ((err = fake_fault_parse(c->req.json, f)) != NULL) {
		fake_fault_free(f);
		free(f);
		fake_reply_error(c, 400, err, NULL);
		return;
	}
	TAILQ_INSERT_TAIL(&fake_faults, f, entry);
	fake_reply_ok(c);
}

static void
fake_handle_fault_clear(struct fake_conn *c)
{
	struct fake_fault *f;

	while ((f = TAILQ_FIRST(&fake_faults)) != NULL) {
		TAILQ_REMOVE(&fake_faults, f, entry);
		fake_fault_free(f);
		free(f);
	}
	fake_reply_ok(c);
}

static void
fake_reply_fault_status(struct fake_conn *c)
{
	struct fake_fault *f = &c->req.fault;
	const char *body = f->body;
	char *extra = NULL;

	if (body == NULL && f->status == 503)
		body = "{\"error\":\"server busy, please try again.  "
		       "maximum pending requests exceeded\"}";
	else if (body == NULL)
		body = "{\"error\":\"fake failure\"}";
	if (f->retry_after != NULL || f->headers != NULL)
		extra = fake_xasprintf("%s%s%s",
		    f->retry_after ? "Retry-After: " : "",
		    f->retry_after ? f->retry_after : "",
		    f->retry_after ? "\r\n" : "");
	if (f->headers != NULL) {
		char *both = fake_xasprintf("%s%s", extra, f->headers);

		free(extra);
		extra = both;
	}
	fake_reply(c, f->status,
	    f->content_type ? f->content_type : FAKE_CT_JSON, body,
	    strlen(body), extra);
	free(extra);
}

static void
fake_handle(struct fake_conn *c)
{
	struct fake_req *r = &c->req;
	struct evbuffer *b;
	const char *m;

	switch (r->route) {
	case R_NOTFOUND:
		fake_reply_text(c, 404, "404 page not found");
		break;
	case R_NOTALLOWED:
		fake_reply_text(c, 405, "405 method not allowed");
		break;
	case R_ROOT:
		fake_reply_text(c, 200, "Ollama is running");
		break;
	case R_VERSION:
		fake_replyf(c, 200, "{\"version\":\"0.12.0\"}");
		break;
	case R_TAGS:
		if (fake_models.on)
			fake_reply_models(c, FL_TAGS);
		else
			fake_replyf(c, 200, "%s", fake_tags_json);
		break;
	case R_PS:
		if (fake_models.on)
			fake_reply_models(c, FL_PS);
		else
			fake_replyf(c, 200, "%s", fake_ps_json);
		break;
	case R_SHOW:
		if (fake_need_model(c, NULL, 1))
			fake_replyf(c, 200, "%s", fake_show_json);
		break;
	case R_GENERATE:
	case R_CHAT:
		fake_handle_generate(c, r->route == R_CHAT);
		break;
	case R_EMBED:
		if (!fake_need_model(c, NULL, 0))
			break;
		b = fake_xevbuffer();
		evbuffer_add_printf(b,
		    "{\"model\":%s,\"embeddings\":"
		    "[[0.1,0.2,0.3]],\"total_duration\":%lld,"
		    "\"load_duration\":%lld,\"prompt_eval_count\":1}",
		    r->qmodel, fake_load_ns(r, 1) + r->busy_ms * 1000000LL,
		    fake_load_ns(r, 1));
		fake_reply_buf(c, 200, b, r->busy_ms);
		break;
	case R_EMBEDDINGS:
		if (!fake_need_model(c, NULL, 0))
			break;
		b = fake_xevbuffer();
		evbuffer_add_printf(b, "{\"embedding\":[0.1,0.2,0.3]}");
		fake_reply_buf(c, 200, b, r->busy_ms);
		break;
	case R_PULL:
		fake_handle_pull(c);
		break;
	case R_COPY:
		fake_handle_copy(c);
		break;
	case R_DELETE:
		fake_handle_delete(c);
		break;
	case R_BLOB:
		fake_handle_blob(c);
		break;
	case R_OAI_CHAT:
	case R_OAI_COMPL:
		fake_handle_oai(c, r->route == R_OAI_CHAT);
		break;
	case R_OAI_EMBED:
		if (!fake_need_model(c, "", 0))
			break;
		b = fake_xevbuffer();
		evbuffer_add_printf(b,
		    "{\"object\":\"list\",\"data\":[{"
		    "\"object\":\"embedding\",\"embedding\":"
		    "[0.1,0.2,0.3],\"index\":0}],\"model\":%s,"
		    "\"usage\":{\"prompt_tokens\":1,"
		    "\"total_tokens\":1}}",
		    r->qmodel);
		fake_reply_buf(c, 200, b, r->busy_ms);
		break;
	case R_OAI_MODELS:
		if (fake_models.on)
			fake_reply_models(c, FL_OAI);
		else
			fake_replyf(c, 200, "%s", fake_models_json);
		break;
	case R_OAI_MODEL:
		m = r->path + strlen("/v1/models/");
		if (fake_models.on ? fake_model_find(m) == NULL
		                   : strncmp(m, "missing", 7) == 0) {
			fake_reply_notfound(c, m, "not_found_error");
			break;
		}
		r->qmodel = fake_jquote(m);
		fake_replyf(c, 200,
		    "{\"id\":%s,\"object\":\"model\",\"created\":"
		    "%d,\"owned_by\":\"library\"}",
		    r->qmodel, FAKE_CREATED);
		break;
	case R_ECHO:
		fake_handle_echo(c);
		break;
	case R_STATS:
		fake_handle_stats(c);
		break;
	case R_RESET:
		fake_handle_reset(c);
		break;
	case R_FAULT:
		fake_handle_fault(c);
		break;
	case R_FAULT_CLEAR:
		fake_handle_fault_clear(c);
		break;
	case R_MODELS:
		fake_handle_models(c);
		break;
	}
}

static void
fake_parse_json(struct fake_req *r)
{
	size_t len;

	if (r->body_mode != FB_JSON || r->json_parsed)
		return;
	r->json_parsed = 1;
	if (r->too_large)
		return;
	len = evbuffer_get_length(r->json_buf);
	if (len > 0)
		r->json = cJSON_ParseWithLength(
		    (char *)evbuffer_pullup(r->json_buf, -1), len);
	if (!cJSON_IsObject(r->json)) {
		cJSON_Delete(r->json);
		r->json = NULL;
	}
}

/*
 * A model-routed request has arrived, its body read: it counts for its
 * model from now until it is answered or its client leaves, whatever
 * delay or fault comes first.
 */
static void
fake_arrive(struct fake_conn *c)
{
	struct fake_req *r = &c->req;
	struct fake_arrival *a;
	struct fake_count *k;
	const char *m, *tag;

	if (r->control || !fake_route_model(r->route) ||
	    r->body_mode != FB_JSON)
		return;
	fake_parse_json(r);
	if ((m = fake_req_model(r, r->route == R_SHOW)) == NULL)
		return;
	r->conc_model = fake_model_name(m);
	k = fake_count_get(
	    &fake_mstats.models, &fake_mstats.nmodels, r->conc_model, 1);
	k->n++;
	if (++k->cur > k->max)
		k->max = k->cur;
	if (++fake_mstats.cur > fake_mstats.max)
		fake_mstats.max = fake_mstats.cur;
	if (fake_mstats.narrivals >= FAKE_ARRIVALS_MAX)
		return;
	if (fake_mstats.narrivals == fake_mstats.arrivals_cap) {
		fake_mstats.arrivals_cap = fake_mstats.arrivals_cap * 2 + 64;
		fake_mstats.arrivals = fake_xrealloc(fake_mstats.arrivals,
		    fake_mstats.arrivals_cap * sizeof *fake_mstats.arrivals);
	}
	a = &fake_mstats.arrivals[fake_mstats.narrivals++];
	a->model = fake_xstrdup(k->key);
	tag = fake_req_header(r, "X-Fake-Tag");
	a->tag = fake_xstrdup(tag != NULL ? tag : "");
}

/* Runs once the request is read, and again after each deliberate delay. */
static void
fake_dispatch(struct fake_conn *c)
{
	struct fake_req *r = &c->req;
	long ms;

	if (r->resp_started)
		return; /* answered before the body was read */
	if (r->fault.action == FA_STATUS) {
		fake_reply_fault_status(c);
		return;
	}
	if (r->fault.action == FA_HANG && !r->hang_done) {
		r->hang_done = 1;
		if (r->fault.delay_ms > 0)
			fake_timer(c, FT_HANG, r->fault.delay_ms);
		return;
	}
	if (r->body_mode == FB_JSON && !r->json_checked) {
		r->json_checked = 1;
		fake_parse_json(r);
		if (r->too_large) {
			fake_reply_error(
			    c, 413, "request body too large", NULL);
			return;
		}
	}
	if (r->json != NULL && !r->control && !r->first_byte_done) {
		r->first_byte_done = 1;
		ms =
		    fake_jnum(r->json, "fake_first_byte_ms", 0, 0, FAKE_MS_MAX);
		if (ms > 0) {
			fake_timer(c, FT_FIRST_BYTE, ms);
			return;
		}
	}
	fake_handle(c);
}

/* --- request parsing ------------------------------------------------- */

static const struct {
	const char *path;
	int match; /* 0 exact, 1 plus one segment, 2 prefix */
	uint64_t methods;
	enum fake_route route;
} fake_routes[] = {
#define M(m) (1ull << METHOD_##m)
    {"/", 0, M(GET) | M(HEAD), R_ROOT},
    {"/api/version", 0, M(GET) | M(HEAD), R_VERSION},
    {"/api/tags", 0, M(GET) | M(HEAD), R_TAGS},
    {"/api/ps", 0, M(GET), R_PS},
    {"/api/show", 0, M(POST), R_SHOW},
    {"/api/generate", 0, M(POST), R_GENERATE},
    {"/api/chat", 0, M(POST), R_CHAT},
    {"/api/embed", 0, M(POST), R_EMBED},
    {"/api/embeddings", 0, M(POST), R_EMBEDDINGS},
    {"/api/pull", 0, M(POST), R_PULL},
    {"/api/push", 0, M(POST), R_PULL},
    {"/api/create", 0, M(POST), R_PULL},
    {"/api/copy", 0, M(POST), R_COPY},
    {"/api/delete", 0, M(DELETE), R_DELETE},
    {"/api/blobs/", 1, M(HEAD) | M(POST), R_BLOB},
    {"/v1/chat/completions", 0, M(POST), R_OAI_CHAT},
    {"/v1/completions", 0, M(POST), R_OAI_COMPL},
    {"/v1/embeddings", 0, M(POST), R_OAI_EMBED},
    {"/v1/models", 0, M(GET), R_OAI_MODELS},
    {"/v1/models/", 1, M(GET), R_OAI_MODEL},
    {"/_fake/echo", 2, ~0ull, R_ECHO},
    {"/_fake/stats", 0, M(GET), R_STATS},
    {"/_fake/reset", 0, M(POST), R_RESET},
    {"/_fake/fault", 0, M(POST), R_FAULT},
    {"/_fake/fault/clear", 0, M(POST), R_FAULT_CLEAR},
    {"/_fake/models", 0, M(POST), R_MODELS},
#undef M
};

static enum fake_route
fake_route_find(const char *path, unsigned method)
{
	size_t i, len;

	for (i = 0; i < sizeof fake_routes / sizeof fake_routes[0]; i++) {
		len = strlen(fake_routes[i].path);
		if (fake_routes[i].match == 0 &&
		    strcmp(path, fake_routes[i].path) != 0)
			continue;
		if (strncmp(path, fake_routes[i].path, len) != 0)
			continue;
		if (fake_routes[i].match == 1 &&
		    (path[len] == '\0' || strchr(path + len, '/') != NULL))
			continue;
		if (method < 64 && (fake_routes[i].methods & (1ull << method)))
			return fake_routes[i].route;
		return R_NOTALLOWED;
	}
	return R_NOTFOUND;
}

static int
fake_route_json(enum fake_route route)
{
	switch (route) {
	case R_SHOW:
	case R_GENERATE:
	case R_CHAT:
	case R_EMBED:
	case R_EMBEDDINGS:
	case R_PULL:
	case R_COPY:
	case R_DELETE:
	case R_OAI_CHAT:
	case R_OAI_COMPL:
	case R_OAI_EMBED:
	case R_FAULT:
	case R_MODELS:
		return 1;
	default:
		return 0;
	}
}

/* Faults apply in FIFO order to the requests whose path they match. */
static void
fake_fault_take(struct fake_req *r)
{
	struct fake_fault *f;

	for (f = TAILQ_FIRST(&fake_faults); f != NULL;
	     f = TAILQ_NEXT(f, entry)) {
		if (f->path != NULL &&
		    strncmp(r->path, f->path, strlen(f->path)) != 0)
			continue;
		r->fault = *f;
		r->fault.path = NULL;
		r->fault.body = fake_xstrdup(f->body);
		r->fault.content_type = fake_xstrdup(f->content_type);
		r->fault.retry_after = fake_xstrdup(f->retry_after);
		r->fault.headers = fake_xstrdup(f->headers);
		if (--f->count <= 0) {
			TAILQ_REMOVE(&fake_faults, f, entry);
			fake_fault_free(f);
			free(f);
		}
		return;
	}
}

static void
fake_count_request(struct fake_conn *c)
{
	struct fake_req *r = &c->req;
	struct fake_count *k;
	const char *auth;
	size_t i;

	r->counted = 1;
	fake_stats.requests++;
	if ((auth = fake_req_header(r, "Authorization")) != NULL) {
		k = fake_count_get(
		    &fake_mstats.auth, &fake_mstats.nauth, auth, 1);
		k->n++;
	}
	if (++fake_stats.active > fake_stats.max_active)
		fake_stats.max_active = fake_stats.active;
	if (!c->used) {
		c->used = 1;
		fake_stats.used++;
		if (++fake_stats.open_used > fake_stats.max_used)
			fake_stats.max_used = fake_stats.open_used;
	}
	free(fake_last_target);
	fake_last_target = fake_xstrdup(r->target);
	fake_headers_free(fake_last_hdrs, fake_nlast);
	fake_nlast = r->nhdrs;
	fake_last_hdrs =
	    fake_xrealloc(NULL, (r->nhdrs + 1) * sizeof *fake_last_hdrs);
	for (i = 0; i < r->nhdrs; i++) {
		fake_last_hdrs[i].name = fake_xstrdup(r->hdrs[i].name);
		fake_last_hdrs[i].value = fake_xstrdup(r->hdrs[i].value);
	}
}

/* The head as the parser left it, copied: it is reused for the next
 * request while this one's answer may still refer to it. */
static void
fake_copy_head(struct fake_req *r, const struct http_head *h)
{
	size_t i;

	r->target = fake_xstrndup(head_str(h, h->target), h->target_len);
	r->hdrs = fake_xrealloc(NULL, (h->nhdrs + 1) * sizeof *r->hdrs);
	for (i = 0; i < h->nhdrs; i++) {
		r->hdrs[i].name = fake_xstrndup(
		    h->buf + h->hdrs[i].name, h->hdrs[i].name_len);
		r->hdrs[i].value = fake_xstrndup(
		    h->buf + h->hdrs[i].value, h->hdrs[i].value_len);
	}
	r->nhdrs = h->nhdrs;
	r->method = (unsigned)h->method;
	r->major = (unsigned)h->http_major;
	r->minor = (unsigned)h->http_minor;
	r->head = h->method == METHOD_HEAD;
	r->chunked = h->chunked;
	r->keep_alive = h->keep_alive;
	/* Only "100-continue" gets this far (417 otherwise), on 1.1. */
	r->expect_continue = h->expect_continue && h->http_minor >= 1;
}

/*
 * A known blob is answered before its body is read, like Ollama.  The rest
 * is Go's net/http: a remainder of at most 256 KiB is read and dropped to
 * keep the connection, a larger one closes it.  A chunked body has no known
 * remainder, so Go reads up to 256 KiB of it before answering; and without
 * a 100 Continue sent, the body may never come, so Go closes as well.
 */
static void
fake_blob_early(struct fake_conn *c, int has_body, uint64_t clen)
{
	struct fake_req *r = &c->req;

	r->body_mode = FB_DISCARD;
	if (has_body &&
	    (r->expect_continue || (!r->chunked && clen > FAKE_DISCARD_MAX))) {
		r->keep_alive = 0;
		fake_stop_reading(c);
	} else if (has_body && r->chunked) {
		r->blob_wait = 1;
		return;
	}
	fake_reply_empty(c, 200);
}

static int
fake_on_head(void *arg, struct http_head *h)
{
	struct fake_conn *c = arg;
	struct fake_req *r = &c->req;
	int has_body;
	char *path;

	r->headers_done = 1;
	fake_copy_head(r, h);
	has_body = h->chunked || h->content_length > 0;

	/* Routes match the decoded path, as Gin's do. */
	path = fake_xstrdup(r->target);
	path[strcspn(path, "?#")] = '\0';
	if ((r->path = evhttp_uridecode(path, 0, NULL)) == NULL)
		abort();
	free(path);
	r->control = strncmp(r->path, "/_fake/", 7) == 0 &&
	    strncmp(r->path, "/_fake/echo", 11) != 0;
	r->route = fake_route_find(r->path, r->method);
	if (!r->control) {
		fake_count_request(c);
		fake_fault_take(r);
	}
	fake_log("%s %s%s", httpreq_method_name(r->method), r->target,
	    r->fault.action != FA_NONE ? " (fault)" : "");

	if (r->fault.action == FA_CLOSE || r->fault.action == FA_RESET) {
		r->close_action = r->fault.action;
		httpreq_pause(&c->parser);
		return 0;
	}
	if (r->fault.action == FA_STATUS || r->route == R_NOTFOUND ||
	    r->route == R_NOTALLOWED)
		r->body_mode = FB_DISCARD;
	else if (fake_route_json(r->route))
		r->body_mode = FB_JSON;
	else if (r->route == R_ECHO ||
	    (r->route == R_BLOB && r->method == METHOD_POST))
		r->body_mode = FB_HASH;
	if (r->route == R_BLOB)
		r->digest_ok = fake_digest_parse(
		    r->path + strlen("/api/blobs/"), r->digest);
	if (r->route == R_BLOB && r->method == METHOD_POST && r->digest_ok &&
	    fake_blob_known(r->digest) &&
	    (r->fault.action == FA_NONE || r->fault.action == FA_DIE_AFTER)) {
		fake_blob_early(c, has_body, h->content_length);
		return 0;
	}
	if (r->body_mode == FB_JSON)
		r->json_buf = fake_xevbuffer();
	if (r->body_mode == FB_HASH &&
	    ((r->md = EVP_MD_CTX_new()) == NULL ||
	        !EVP_DigestInit_ex(r->md, EVP_sha256(), NULL)))
		abort();
	if (has_body && r->expect_continue)
		bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
	if (r->fault.action == FA_SLOW_READ) {
		/* Back to the loop, so the body is metered from its start. */
		r->slow_resume = 1;
		httpreq_pause(&c->parser);
	}
	return 0;
}

static int
fake_on_body(void *arg, const char *at, size_t len)
{
	struct fake_conn *c = arg;
	struct fake_req *r = &c->req;

	r->body_bytes += len;
	if (r->body_mode == FB_HASH)
		EVP_DigestUpdate(r->md, at, len);
	else if (r->body_mode == FB_JSON && !r->too_large) {
		if (evbuffer_get_length(r->json_buf) + len <= FAKE_JSON_MAX)
			evbuffer_add(r->json_buf, at, len);
		else {
			/* Read on to keep the connection; store no more. */
			r->too_large = 1;
			evbuffer_drain(r->json_buf, (size_t)-1);
		}
	} else if (r->blob_wait && r->body_bytes > FAKE_DISCARD_MAX) {
		r->blob_wait = 0;
		r->keep_alive = 0;
		fake_stop_reading(c);
		fake_reply_empty(c, 200);
	}
	return 0;
}

/* One request at a time: the parser pauses here, and the next request
 * waits until this one is answered. */
static int
fake_on_complete(void *arg)
{
	struct fake_conn *c = arg;

	c->req.msg_done = 1;
	return 0;
}

static const struct httpreq_cb fake_parser_cb = {
    .on_head = fake_on_head,
    .on_body = fake_on_body,
    .on_complete = fake_on_complete,
};

/* Go's limits: a 1 MiB head, any number of fields, any body size. */
static const struct httpreq_limits fake_limits = {1 << 20, 0, 1u << 20};

/* Go answers a malformed request with its status and a plain text body,
 * "400 Bad Request", and closes. */
static void
fake_bad_request(struct fake_conn *c)
{
	struct fake_req *r = &c->req;
	int status = c->parser.error_status;
	char *text;

	fake_log("bad request: %d %s", status, c->parser.error);
	r->keep_alive = 0;
	fake_stop_reading(c);
	if (r->resp_started)
		return;
	if (r->major == 0)
		r->major = r->minor = 1; /* not parsed yet */
	text = fake_xasprintf("%d %s", status, response_reason(status));
	fake_reply_text(c, status, text);
	free(text);
}

/*
 * Moves a connection along after any event: finishes a written response,
 * starts on the next request, feeds the parser.  May free the connection.
 */
static void
fake_conn_progress(struct fake_conn *c)
{
	struct fake_req *r = &c->req;
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer *out = bufferevent_get_output(c->bev);
	struct evbuffer_iovec v;
	size_t len;
	ssize_t n;

	while (!c->lingering) {
		if (r->resp_queued && evbuffer_get_length(out) == 0) {
			if (!r->resp_finished) {
				fake_req_uncount(r);
				r->resp_finished = 1;
			}
			if (r->die || (!r->keep_alive && r->msg_done)) {
				fake_conn_free(c, 0);
				return;
			}
			if (!r->keep_alive) {
				fake_conn_linger(c);
				return;
			}
			if (r->msg_done) {
				fake_req_clear(r);
				httpreq_resume(&c->parser);
			}
		}
		if (r->msg_done || r->stop_parse)
			return;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
			return;
		len = v.iov_len;
		if (r->fault.action == FA_SLOW_READ && r->headers_done) {
			if (r->slow_budget == 0) {
				bufferevent_disable(c->bev, EV_READ);
				if (!evtimer_pending(c->timer, NULL))
					fake_timer(
					    c, FT_SLOW, FAKE_SLOW_TICK_MS);
				return;
			}
			if (len > r->slow_budget)
				len = r->slow_budget;
			r->slow_budget -= len; /* all of it, bar errors */
		}
		n = httpreq_feed(&c->parser, v.iov_base, len);
		if (n < 0) {
			fake_bad_request(c);
			continue;
		}
		evbuffer_drain(in, (size_t)n);
		if (r->close_action) {
			fake_log("%s instead of answering",
			    r->close_action == FA_RESET ? "reset" : "close");
			fake_conn_free(c, r->close_action == FA_RESET);
			return;
		}
		if (r->slow_resume) {
			r->slow_resume = 0;
			httpreq_resume(&c->parser);
		}
		if (r->msg_done && !r->dispatched) {
			r->dispatched = 1;
			fake_arrive(c);
			if (r->fault.action == FA_SLOW_READ) {
				evtimer_del(c->timer);
				bufferevent_enable(c->bev, EV_READ);
			}
			fake_dispatch(c);
		}
		if (n == 0 && !c->parser.paused)
			return; /* cannot happen; never spin */
	}
}

/* --- connections ----------------------------------------------------- */

static void
fake_conn_read(struct bufferevent *bev __unused, void *arg)
{
	fake_conn_progress(arg);
}

static void
fake_conn_write(struct bufferevent *bev __unused, void *arg)
{
	struct fake_conn *c = arg;

	if (c->req.stream.active && !c->req.stream.wait_interval)
		fake_stream_pump(c);
	fake_conn_progress(c);
}

static void
fake_conn_event(struct bufferevent *bev __unused, short what, void *arg)
{
	struct fake_conn *c = arg;
	struct fake_req *r = &c->req;
	const char *phase;

	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	if (r->counted && r->headers_done && !r->resp_finished && !r->die) {
		fake_stats.gone++;
		if (r->resp_started) {
			fake_stats.gone_streaming++;
			phase = "streaming";
		} else if (!r->msg_done) {
			fake_stats.gone_body++;
			phase = "body";
		} else {
			fake_stats.gone_headers++;
			phase = "headers_wait";
		}
		fake_log("client gone (%s): %s", phase, r->target);
	}
	fake_conn_free(c, 0);
}

static void
fake_conn_timer(evutil_socket_t fd __unused, short what __unused, void *arg)
{
	struct fake_conn *c = arg;
	struct fake_req *r = &c->req;
	struct evbuffer *b;

	switch (c->timer_kind) {
	case FT_SLOW:
		r->slow_budget =
		    (size_t)r->fault.bytes_per_sec * FAKE_SLOW_TICK_MS / 1000;
		if (r->slow_budget == 0)
			r->slow_budget = 1;
		/* Read from the socket no faster than the body is metered. */
		if (evbuffer_get_length(bufferevent_get_input(c->bev)) <
		    r->slow_budget)
			bufferevent_enable(c->bev, EV_READ);
		break;
	case FT_HANG:
	case FT_FIRST_BYTE:
	case FT_LOAD:
		fake_dispatch(c);
		break;
	case FT_REPLY:
		if (fake_now_us() < r->later_at) {
			fake_timer(c, FT_REPLY, fake_ms_until(r->later_at));
			break;
		}
		b = r->later;
		r->later = NULL;
		fake_reply_buf(c, r->later_status, b, 0);
		break;
	case FT_INTERVAL:
		r->stream.wait_interval = 0;
		fake_stream_pump(c);
		break;
	case FT_LINGER:
		fake_conn_free(c, 0);
		return;
	}
	fake_conn_progress(c);
}

static void
fake_accept(struct evconnlistener *l __unused, evutil_socket_t fd,
    struct sockaddr *sa __unused, int salen __unused, void *arg __unused)
{
	struct fake_conn *c;
	int one = 1;

	/* Streamed lines must not wait for the peer's delayed ACK. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if ((c = calloc(1, sizeof *c)) == NULL)
		abort();
	c->bev = bufferevent_socket_new(fake_base, fd, BEV_OPT_CLOSE_ON_FREE);
	c->timer = evtimer_new(fake_base, fake_conn_timer, c);
	if (c->bev == NULL || c->timer == NULL)
		abort();
	httpreq_init(&c->parser, &fake_limits, &fake_parser_cb, c);
	bufferevent_setcb(
	    c->bev, fake_conn_read, fake_conn_write, fake_conn_event, c);
	/* Bounds what a pipelining peer can queue while we answer. */
	bufferevent_setwatermark(c->bev, EV_READ, 0, FAKE_IN_HIGH);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	TAILQ_INSERT_TAIL(&fake_conns, c, entry);
	fake_stats.accepted++;
}

static void
fake_accept_error(struct evconnlistener *l __unused, void *arg __unused)
{
	fprintf(stderr, "fake-ollama: accept: %s\n",
	    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static void
fake_signal(
    evutil_socket_t sig __unused, short what __unused, void *arg __unused)
{
	event_base_loopbreak(fake_base);
}

static struct evconnlistener *
fake_listen(const char *spec)
{
	struct evconnlistener *lis = NULL;
	struct addrinfo hints, *ai;
	char *host = fake_xstrdup(spec), *port, *h = host;
	int rc;

	if ((port = strrchr(host, ':')) != NULL)
		*port++ = '\0';
	if (*h == '[' && h[strlen(h) - 1] == ']') {
		h[strlen(h) - 1] = '\0';
		h++;
	}
	memset(&hints, 0, sizeof hints);
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(*h != '\0' ? h : NULL, port ? port : "0", &hints, &ai);
	if (rc != 0)
		fprintf(
		    stderr, "fake-ollama: %s: %s\n", spec, gai_strerror(rc));
	else {
		lis = evconnlistener_new_bind(fake_base, fake_accept, NULL,
		    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC |
		        LEV_OPT_REUSEABLE,
		    1024, ai->ai_addr, (int)ai->ai_addrlen);
		if (lis == NULL)
			fprintf(stderr, "fake-ollama: listen %s: %s\n", spec,
			    strerror(errno));
		freeaddrinfo(ai);
	}
	free(host);
	return lis;
}

static int
fake_opt_num(int opt, const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 0 ||
	    v > FAKE_MS_MAX) {
		fprintf(stderr,
		    "fake-ollama: -%c %s: not a number from 0 to "
		    "%ld\n",
		    opt, s, FAKE_MS_MAX);
		return 0;
	}
	if (opt == 'D')
		fake_opt.load_ms = v;
	else if (opt == 'B')
		fake_opt.busy_ms = v;
	else if (opt == 'M')
		fake_opt.max_loaded = v;
	else
		fake_opt.num_parallel = v;
	return 1;
}

int
main(int argc, char **argv)
{
	const char *spec = "127.0.0.1:0";
	struct evconnlistener *lis;
	struct event *sigterm, *sigint;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof ss;
	int ch;

	while ((ch = getopt(argc, argv, "l:n:vT:P:D:B:N:M:")) != -1) {
		switch (ch) {
		case 'T':
			fake_opt.tags = optarg;
			break;
		case 'P':
			fake_opt.loaded = optarg;
			break;
		case 'D':
		case 'B':
		case 'N':
		case 'M':
			if (!fake_opt_num(ch, optarg))
				return 2;
			break;
		case 'l':
			spec = optarg;
			break;
		case 'n':
			fake_name = optarg;
			break;
		case 'v':
			fake_verbose = 1;
			break;
		default:
			fprintf(stderr,
			    "usage: fake-ollama [-l host:port] "
			    "[-n name] [-v] [-T tags] [-P loaded]\n"
			    "                   [-D load_ms] [-B busy_ms] "
			    "[-N num_parallel] [-M max_loaded]\n");
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "fake-ollama: unexpected argument %s\n",
		    argv[optind]);
		return 2;
	}

	fake_models_defaults();
	signal(SIGPIPE, SIG_IGN);
	if ((fake_base = event_base_new()) == NULL)
		abort();
	if ((lis = fake_listen(spec)) == NULL)
		return 1;
	evconnlistener_set_error_cb(lis, fake_accept_error);
	if (getsockname(evconnlistener_get_fd(lis), (struct sockaddr *)&ss,
	        &sslen) == -1)
		abort();
	printf("%d\n",
	    ntohs(ss.ss_family == AF_INET6
	            ? ((struct sockaddr_in6 *)&ss)->sin6_port
	            : ((struct sockaddr_in *)&ss)->sin_port));
	fflush(stdout);

	/* Known from the start, so tests need no upload to hit "exists". */
	fake_blobs = fake_xrealloc(NULL, sizeof *fake_blobs);
	fake_blobs[fake_nblobs++] = fake_xstrdup(fake_preseeded);

	sigterm = evsignal_new(fake_base, SIGTERM, fake_signal, NULL);
	sigint = evsignal_new(fake_base, SIGINT, fake_signal, NULL);
	if (sigterm == NULL || sigint == NULL ||
	    evsignal_add(sigterm, NULL) == -1 ||
	    evsignal_add(sigint, NULL) == -1)
		abort();
	event_base_dispatch(fake_base);
	/* What is left is reachable from globals: no leak to report. */
	return 0;
}
