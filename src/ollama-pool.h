/*
 * ollama-pool: a streaming HTTP proxy that gives every Ollama client a
 * persistent, kept-alive upstream connection pool.
 *
 * One process, one thread, one libevent loop.  The front door (client.c,
 * httpreq.c) parses requests from any local program; proxy.c carries one
 * request's life; upstream.c drives libcurl's multi interface on the same
 * loop and owns the pool.  All prototypes live here, grouped by file.
 */
#ifndef OLLAMA_POOL_H
#define OLLAMA_POOL_H

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <curl/curl.h>
#include <event2/event.h>

struct bufferevent;
struct evbuffer;
struct evconnlistener;
struct evdns_base;

#define OP_NAME "ollama-pool"
#define OP_ADMIN_PREFIX "/ollama-pool/"

#define DEFAULT_LISTEN "127.0.0.1:11435"
#define DEFAULT_UPSTREAM "http://127.0.0.1:11434"
#define OLLAMA_DEFAULT_PORT 11434

#define MAX_LISTEN 16
#define ADDR_TEXT_MAX 128

#if defined(__GNUC__)
#define PRINTFLIKE(f, a) __attribute__((format(printf, f, a)))
#define NORETURN __attribute__((noreturn))
#else
#define PRINTFLIKE(f, a)
#define NORETURN
#endif

/* xmalloc.c: allocation wrappers that never return NULL. */
void *xmalloc(size_t);
void *xcalloc(size_t, size_t);
void *xrealloc(void *, size_t);
char *xstrdup(const char *);
char *xstrndup(const char *, size_t);
int xasprintf(char **, const char *, ...) PRINTFLIKE(2, 3);

/* log.c */
enum log_level {
	LOG_LVL_ERR = 3,
	LOG_LVL_WARNING = 4,
	LOG_LVL_NOTICE = 5,
	LOG_LVL_INFO = 6,
	LOG_LVL_DEBUG = 7,
};
#define LOG_TIME_MAX 32
void log_init(int verbosity);
size_t log_format_time(char *, size_t, const struct timespec *);
int log_enabled(enum log_level);
void log_msg(enum log_level, const char *, ...) PRINTFLIKE(2, 3);
void log_vmsg(enum log_level, const char *, va_list);
/* "s" unless n is 1, for "%d request%s". */
const char *log_plural(long long);
#define log_err(...) log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_LVL_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...)                                                         \
	do {                                                                   \
		if (log_enabled(LOG_LVL_DEBUG))                                \
			log_msg(LOG_LVL_DEBUG, __VA_ARGS__);                   \
	} while (0)
/* Startup only: never called once the loop runs. */
void fatal(const char *, ...) PRINTFLIKE(1, 2) NORETURN;

/* addr.c: listen addresses and upstream URLs.  Parsing never asks DNS: a
 * host given as a name is kept as one, for resolve.c to look up. */
#define ADDR_MAX_RESOLVED 64
enum listen_kind { LISTEN_TCP, LISTEN_UNIX };
struct listen_addr {
	enum listen_kind kind;
	struct sockaddr_storage ss; /* AF_UNSPEC until name is resolved */
	socklen_t sslen;
	char name[256]; /* a host name to resolve; "" when numeric */
	int port;
	char text[ADDR_TEXT_MAX]; /* as given, for messages */
};
struct upstream_url {
	int tls;
	char host[256]; /* without brackets */
	int port;
	char base[320]; /* scheme://host:port, never a path */
	char hostport[300]; /* host:port as sent in Host, v6 bracketed */
	int host_is_name; /* addrs come from resolve.c, if at all */
	struct sockaddr_storage addrs[ADDR_MAX_RESOLVED]; /* loop check */
	int naddrs;
};
int addr_parse_listen(const char *, struct listen_addr *, char *, size_t);
int addr_parse_upstream(const char *, struct upstream_url *, char *, size_t);
void addr_listen_resolved(
    struct listen_addr *, const struct sockaddr *, socklen_t);
void addr_upstream_resolved(
    struct upstream_url *, const struct sockaddr *, socklen_t);
int addr_is_loopback(const struct listen_addr *);
int addr_upstream_is_listen(
    const struct upstream_url *, const struct listen_addr *, int);
void addr_format(const struct sockaddr *, socklen_t, char *, size_t);
void addr_host(const struct sockaddr *, char *, size_t);

/* config.c: the declarative table of settings. */
#define BACKEND_NAME_MAX 64
/*
 * One Ollama as configured: a [backend NAME] section, or, when the file
 * has none, the [upstream] url alone (a fleet of one named "default").
 * Every [upstream] setting below is the default for every backend and a
 * [backend] section may set it again for itself.
 */
struct backend_conf {
	char name[BACKEND_NAME_MAX];
	int line; /* of its [backend NAME] header; 0: from [upstream] */
	struct upstream_url url;
	char *url_text; /* as given, for messages */
	int url_line; /* in file; 0: not set there */
	int weight; /* share among equals; >= 1 */
	char *models; /* allow-list, space separated; "": every model */
	char *token_file; /* as given; "": none */
	char *token_path; /* the file read, NULL when none */
	char *token; /* its contents, trimmed; NULL: none.  Never printed */
	char *ca_file; /* "": the system's */
	int tls_verify;
	int pool_maxsize;
	int pool_connections;
	double connect_timeout;
	double first_byte_timeout; /* 0: none */
	double stream_idle_timeout; /* 0: none */
	int num_parallel; /* requests per model at once (OLLAMA_NUM_PARALLEL) */
	double probe_interval;
	int fail_threshold; /* failed probes or requests in a row: ejected */
	double resolve_interval; /* a host name looked up again */
	int prewarm; /* connections opened to a member as it joins */
};
/* Does a backend's allow-list admit this model?  NULL: a request
 * without a model, always admitted. */
int config_backend_admits(const struct backend_conf *, const char *);

struct config {
	char *file; /* NULL when running on defaults */

	struct listen_addr listen[MAX_LISTEN];
	int nlisten;
	struct upstream_url upstream;
	char *upstream_text;

	int pool_maxsize;
	int pool_connections;
	int queue_max;
	double connect_timeout;
	double first_byte_timeout; /* 0: none */
	double stream_idle_timeout; /* 0: none */
	char *ca_file;
	int tls_verify;
	char *resolver; /* DNS servers, IP[:PORT] space separated; "": system */
	int num_parallel; /* the defaults of every backend: */
	double probe_interval;
	int fail_threshold;
	double resolve_interval;
	int prewarm;
	int weight;
	char *token_file;
	double queue_timeout; /* the fleet's one queue: a wait past it, 503 */

	/* The backends, in file order; always at least one.  fleet is set
	 * when they come from [backend] sections: requests are then placed
	 * by model and the fleet-wide endpoints merge every backend's. */
	struct backend_conf *backends;
	int nbackends;
	int fleet;

	int retries;
	double backoff_factor;
	double backoff_max;
	uint8_t retry_statuses[600]; /* 1 where a status is retried */
	uint64_t retry_methods; /* bit per enum method */
	size_t retry_body_max;

	size_t max_buffer;
	size_t max_header_size;
	uint64_t max_body_size; /* 0: no limit */
	double header_timeout;
	double body_timeout;
	double idle_timeout;
	double shutdown_timeout;
	int max_clients;
	int allow_remote;
	char *client_tokens; /* every token accepted, space separated: the
	                      * key's and client_tokens_file's; "": no check */
	char *client_tokens_key; /* as the client_tokens key gives them */
	char *client_tokens_file; /* as given; "": none */
	char *client_tokens_path; /* the file read, NULL when none */
	char *client_tokens_read; /* its tokens, space separated */
	int client_tokens_nread;
	struct listen_addr admin_listen; /* /metrics, /health, /stats */
	int has_admin_listen; /* 0: no admin listener */
	char *access_log; /* "off", "stderr" or an absolute path */
	int access_log_format; /* enum accesslog_format */

	/* Where listen and url came from, for messages after parsing. */
	int listen_line, url_line; /* in file; 0: not set there */
	int admin_listen_line;
	int listen_cli, url_cli; /* from -l, -u */
	char *models; /* [upstream]'s allow-list: every backend's default */
};
struct config_overrides {
	const char *listen[MAX_LISTEN];
	int nlisten;
	const char *upstream;
};
/* What a load found wrong, in line order, each "FILE:LINE: message";
 * beyond CONFIG_ERRORS_MAX they are only counted. */
#define CONFIG_ERRORS_MAX 50
struct config_errors {
	char *line[CONFIG_ERRORS_MAX];
	int at[CONFIG_ERRORS_MAX]; /* the line each is about */
	int n; /* in line[] */
	int more; /* found beyond them */
};
void config_errors_free(struct config_errors *);
struct config *config_new_defaults(void);
int config_load(struct config *, const char *, const struct config_overrides *,
    struct config_errors *);
int config_load_fp(struct config *, FILE *, const char *,
    const struct config_overrides *, struct config_errors *);
int config_distance(const char *, const char *);
void config_free(struct config *);
int config_check_addresses(const struct config *, char *, size_t);
/* Which address key config_where() names. */
enum config_where_key {
	CONFIG_WHERE_LISTEN,
	CONFIG_WHERE_URL,
	CONFIG_WHERE_ADMIN_LISTEN
};
const char *config_where(const struct config *, int, char *, size_t);
void config_print(const struct config *, FILE *);
int config_set(
    struct config *, const char *, const char *, const char *, char *, size_t);

/* config_values.c: the values settings take, parsed one at a time. */
int config_parse_number(const char *, double *, int);
int config_parse_duration(const char *, double *);
const char *config_format_duration(double, char *, size_t);
const char *config_format_exact(double, char *, size_t);
int config_parse_statuses(uint8_t *, const char *, char *, size_t);
int config_parse_methods(uint64_t *, const char *, char *, size_t);
int config_parse_resolver(char **, const char *, char *, size_t);
int config_parse_admin_listen(struct config *, const char *, char *, size_t);
int config_parse_access_log(char **, const char *, char *, size_t);
int config_parse_access_format(int *, const char *, char *, size_t);
int config_parse_models(char **, const char *, char *, size_t);

/* headers.c: the request head as parsed, and hop-by-hop filtering. */
struct header_ref {
	uint32_t name, name_len;
	uint32_t value, value_len;
};
struct http_head {
	char *buf; /* arena: method, target, names and values */
	size_t len, cap;
	struct header_ref *hdrs;
	uint32_t nhdrs, hdrs_cap;
	uint32_t nconnection; /* Connection headers among them */
	uint32_t target, target_len;
	int method; /* enum method */
	int http_major, http_minor;
	int keep_alive;
	int chunked;
	int has_content_length;
	uint64_t content_length;
	int expect_continue;
};
void head_reset(struct http_head *);
void head_free(struct http_head *);
uint32_t head_append(struct http_head *, const char *, size_t);
void head_end_string(struct http_head *);
uint32_t head_add_header(struct http_head *);
void head_name_done(struct http_head *, uint32_t);
const char *head_str(const struct http_head *, uint32_t);
const char *head_get(const struct http_head *, const char *, size_t *);
int head_list_has(const char *, size_t, const char *, size_t);
int head_token_in_list(const char *, size_t, const char *);
int headers_is_hop_by_hop(const char *, size_t);
int headers_named_by_connection(const struct http_head *, const char *, size_t);
struct hdr_list { /* curl_slist nodes and their lines, one block */
	char *mem;
	size_t used, cap;
	struct curl_slist *first, *last;
};
size_t headers_list_room(size_t);
char *headers_list_add(struct hdr_list *, size_t);
void headers_list_free(struct hdr_list *);
void headers_to_curl(struct hdr_list *, const struct http_head *, int, int,
    const char *, const char *);
int headers_token_ok(const struct http_head *, const char *);
int headers_response_keep(const struct http_head *, uint32_t);

/* httpreq.c: the strict request parser, behind an interface of our own. */
enum method {
	METHOD_GET,
	METHOD_HEAD,
	METHOD_POST,
	METHOD_PUT,
	METHOD_DELETE,
	METHOD_PATCH,
	METHOD_OPTIONS,
	METHOD_CONNECT,
	METHOD_TRACE,
	METHOD_COUNT
};
#define HTTPREQ_MAX_FIELDS 100 /* the front door's; beyond it, 431 */
struct httpreq_limits {
	size_t max_head; /* head bytes; beyond, 431 */
	uint64_t max_body; /* 0: none; beyond, 413 */
	uint32_t max_fields; /* header fields; beyond, 431 */
};
struct httpreq_cb {
	void (*on_begin)(void *);
	int (*on_head)(void *, struct http_head *);
	int (*on_body)(void *, const char *, size_t);
	int (*on_complete)(void *); /* 1: answered already, read on */
};
struct httpreq {
	struct http_head head;
	struct httpreq_limits limits;
	const struct httpreq_cb *cb;
	void *arg;
	int state;
	int ext_state; /* within a chunk extension */
	int paused;
	int in_head; /* a request has begun, its head is not complete */
	size_t head_bytes;
	uint32_t method_off;
	char version[9];
	int vlen;
	uint64_t body_left; /* of the Content-Length body or the chunk */
	uint64_t body_total; /* data and chunk extension bytes */
	int chunk_digits;
	size_t chunk_line; /* extension bytes of this chunk line */
	size_t trailer_bytes;
	int error_status; /* HTTP status to answer when parsing failed */
	const char *error;
};
void httpreq_init(struct httpreq *, const struct httpreq_limits *,
    const struct httpreq_cb *, void *);
void httpreq_set_limits(struct httpreq *, const struct httpreq_limits *);
void httpreq_free(struct httpreq *);
ssize_t httpreq_feed(struct httpreq *, const char *, size_t);
void httpreq_pause(struct httpreq *);
void httpreq_resume(struct httpreq *);
const char *httpreq_method_name(int);
int httpreq_method_lookup(const char *);
char *httpreq_target_path(const char *, size_t);

/* listener.c */
struct listener {
	struct evconnlistener *evl;
	struct listen_addr addr;
	int fd;
	int inherited;
	int admin; /* serves /metrics, /health, /stats only, no token */
	char bound[ADDR_TEXT_MAX];
	TAILQ_ENTRY(listener) entry;
};
TAILQ_HEAD(listener_list, listener);
int listener_open_all(const struct config *, char *, size_t);
int listener_reconcile(const struct config *, char *, size_t);
void listener_close_all(void);
void listener_pause(void);
void listener_resume(void);
const char *listener_summary(char *, size_t);

/* client.c: one client connection, the front door. */
struct proxy_req;
struct client_conn {
	struct bufferevent *bev;
	struct httpreq req_parser;
	struct http_head resp_head; /* reused for each response */
	struct proxy_req *req; /* the request being answered, if any */
	struct event *resume_ev; /* deferred work outside other callbacks */
	struct event *timer_ev; /* idle or header timeout */
	struct event *closed_ev; /* sees the client leave while not reading */
	struct event *watch_ev; /* and a reset, on a duplicate descriptor */
	char peer[ADDR_TEXT_MAX];
	int closing; /* close once output is flushed */
	int read_throttled; /* stopped reading: body buffer full */
	int closed_watched; /* closed_ev is added */
	int body_done; /* current request's body fully parsed */
	int resp_done; /* current request's response finished */
	int expect_pending; /* Expect: 100-continue, not yet answered */
	int lingering; /* closed for writing, dropping what still comes */
	size_t discarded; /* body bytes dropped after an early answer */
	int admin; /* accepted on the admin listener */
	uint64_t t_begin_us; /* the current request's first byte */
	TAILQ_ENTRY(client_conn) entry;
};
TAILQ_HEAD(client_list, client_conn);
/* What the front door tells the rooms above it, handed in by main.c:
 * max_clients reached, a connection ended (room again; a drain may be
 * over). */
struct client_hooks {
	void (*full)(void);
	void (*gone)(void);
};
void client_accept(int, struct sockaddr *, int, int);
void client_free(struct client_conn *);
void client_close_all(void);
void client_close_idle(void);
void client_response_done(struct client_conn *, int);
void client_body_drained(struct client_conn *);
void client_send_continue(struct client_conn *);
int client_awaits_continue(const struct client_conn *);
struct evbuffer *client_output(struct client_conn *);
size_t client_output_len(struct client_conn *);

/* tokscan.c: token counts read from an answer's final object in passing. */
enum tokscan_mode {
	TOKSCAN_OFF,
	TOKSCAN_NATIVE, /* NDJSON; the object with top-level "done": true */
	TOKSCAN_EMBED, /* /api/embed: the object with prompt_eval_count */
	TOKSCAN_OPENAI, /* JSON or SSE; the object with a top-level usage */
};
struct tokscan {
	uint8_t mode; /* enum tokscan_mode */
	uint8_t state; /* where in the framing or the JSON */
	uint8_t key; /* the wanted key whose value comes next */
	uint8_t pos; /* "data:" bytes matched, or \u digits read */
	uint8_t key_len; /* UINT8_MAX: longer than any wanted key */
	uint8_t value_len; /* of the literal being read, saturating */
	uint16_t model_len;
	uint16_t u, uhi; /* \u digits; a high surrogate awaiting its pair */
	unsigned sink : 2, sse : 1, expect_key : 1, in_usage : 1;
	unsigned obj_done : 1, obj_prompt : 1, obj_usage : 1;
	unsigned value_num : 1, value_true : 1, model_full : 1, have : 1;
	uint32_t depth; /* 0: between objects */
	uint64_t value, obj_prompt_n, obj_completion_n;
	uint64_t obj_load_ns;
	uint64_t prompt, completion; /* of the last final object */
	uint64_t load_ns; /* its load_duration, in nanoseconds */
	char key_buf[18];
	char model[256];
};
void tokscan_init(struct tokscan *, enum tokscan_mode);
void tokscan_feed(struct tokscan *, const char *, size_t);
int tokscan_finish(struct tokscan *);
const char *tokscan_model(const struct tokscan *);

/* metrics.c: counters, histograms, Prometheus text and JSON. */
enum route {
	ROUTE_ROOT,
	ROUTE_GENERATE,
	ROUTE_CHAT,
	ROUTE_EMBED,
	ROUTE_EMBEDDINGS,
	ROUTE_TAGS,
	ROUTE_PS,
	ROUTE_SHOW,
	ROUTE_PULL,
	ROUTE_PUSH,
	ROUTE_CREATE,
	ROUTE_COPY,
	ROUTE_DELETE,
	ROUTE_VERSION,
	ROUTE_BLOBS,
	ROUTE_V1_CHAT,
	ROUTE_V1_COMPLETIONS,
	ROUTE_V1_EMBEDDINGS,
	ROUTE_V1_MODELS,
	ROUTE_V1_RESPONSES,
	ROUTE_V1_MESSAGES,
	ROUTE_ADMIN,
	ROUTE_OTHER,
	ROUTE_COUNT
};
enum retry_reason {
	RETRY_STATUS,
	RETRY_CONNECT,
	RETRY_RESET,
	RETRY_REASON_COUNT
};
enum cancel_phase {
	CANCEL_QUEUED,
	CANCEL_WAITING,
	CANCEL_BACKOFF,
	CANCEL_STREAMING,
	CANCEL_PHASE_COUNT
};
#define METRICS_NBUCKETS 16
#define METRICS_MAX_SERIES 1024
#define METRICS_MAX_MODELS 64
extern const double metrics_buckets[METRICS_NBUCKETS];
struct histogram {
	uint64_t counts[METRICS_NBUCKETS + 1]; /* per bucket; last is +Inf */
	double sum;
	uint64_t count;
};
struct request_series {
	uint8_t method, route;
	uint16_t code;
	uint64_t count;
};
struct metrics {
	struct request_series requests[METRICS_MAX_SERIES];
	int nrequest_series;
	uint64_t upstream_conns_opened;
	uint64_t upstream_requests;
	uint64_t retries[RETRY_REASON_COUNT];
	uint64_t cancelled[CANCEL_PHASE_COUNT];
	struct histogram queue_wait;
	uint64_t client_conns_total;
	struct histogram first_byte[ROUTE_COUNT];
	struct histogram request[ROUTE_COUNT];
	uint64_t bytes_in, bytes_out;
	struct {
		char model[256];
		uint64_t prompt, completion;
	} tokens[METRICS_MAX_MODELS];
	int ntoken_models;
	time_t start_time;
};
int metrics_route(const char *);
const char *metrics_route_name(int);
void histogram_observe(struct histogram *, double);
void metrics_count_request(const char *, int, int);
void metrics_count_tokens(const char *, uint64_t, uint64_t);
void metrics_escape_label(struct evbuffer *, const char *);
void metrics_write_histogram(struct evbuffer *, const char *, const char *,
    const char *, const struct histogram *);
void metrics_render(struct evbuffer *);
char *metrics_stats_json(void);

/* metrics_backends.c: each backend's series and stats. */
struct cJSON;
void metrics_render_backends(struct evbuffer *);
void metrics_stats_backends(struct cJSON *);

/* reqid.c: request ids, and the proxy's name in Via (loop detection). */
#define REQID_MAX 128
void reqid_init(void);
void reqid_make(char *, size_t);
int reqid_sane(const char *, size_t);
int reqid_assign(const struct http_head *, char *, size_t);
int reqid_via_loops(const struct http_head *, char *, size_t);
size_t reqid_curl_room(const struct http_head *, const char *);
void reqid_to_curl(struct hdr_list *, const struct http_head *, const char *);

/* accesslog.c: one line per request, written off the loop by a thread. */
enum accesslog_format { ACCESSLOG_JSON, ACCESSLOG_COMBINED };
enum access_end {
	END_NONE, /* not decided yet */
	END_COMPLETED,
	END_CLIENT_GONE,
	END_UPSTREAM_ERROR,
	END_TIMEOUT,
	END_REFUSED,
};
#define ACCESSLOG_QUEUE_MAX (1024 * 1024) /* bytes waiting for the disk */
struct access_rec {
	const char *client, *method, *path; /* NULL: unknown */
	size_t path_len;
	int http10;
	int status;
	uint64_t bytes_in, bytes_out;
	double duration, ttfb; /* seconds; ttfb < 0: nothing was sent */
	const char *model, *backend, *request_id, *user_agent, *referer;
	int retries;
	enum access_end end;
};
struct accesslog {
	pthread_mutex_t mu; /* guards all below but fd */
	pthread_cond_t cv;
	pthread_t thread;
	int running;
	char *queue; /* lines for the writer */
	size_t queue_len, queue_cap;
	char *spare; /* the writer's empty buffer, swapped with queue */
	size_t spare_cap;
	size_t writing; /* bytes the writer holds now */
	uint64_t dropped;
	int reopen, stop;
	char *path; /* a file; NULL with to_stderr, or off */
	int to_stderr;
	int fd; /* the writer's own */
	int failing; /* the writer's: warned about failed writes */
	int dropping; /* loop thread: warned about this run of drops */
};
int accesslog_start(const struct config *, char *, size_t);
void accesslog_configure(const struct config *);
void accesslog_reopen(void);
void accesslog_stop(void);
int accesslog_enabled(void);
void accesslog_write(const struct access_rec *);
uint64_t accesslog_dropped(void);
const char *accesslog_end_name(enum access_end);

struct backend;
struct backend_model;
/* placement.c: which backend serves a request for a model. */
#define PLACE_EXCLUDE_MAX 32
struct place_want {
	const char *model; /* NULL: no model (no slots, any backend) */
	struct backend *const *exclude; /* tried already: others first */
	int nexclude;
	int need_listed; /* failover: only backends that list the model */
	int has_affinity; /* a conversation's key, for affinity.c */
	uint64_t affinity;
};
enum place_verdict {
	PLACE_GO, /* *out has a free slot for it: take it */
	PLACE_WAIT, /* candidates exist, all busy: wait for a slot */
	PLACE_NONE, /* no healthy backend admits it */
};
enum place_verdict placement_choose(
    const struct place_want *, struct backend **, struct backend_model **);
/* Requests that hold no slot: round-robin among the healthy. */
struct backend *placement_any(const struct place_want *);
/* A final chunk's load_duration, and a request's time, learned. */
void placement_learn(
    struct backend *, struct backend_model *, double load_s, double busy_s);

/* affinity.c: conversation affinity by rendezvous hashing. */
struct cJSON;
int affinity_key(const struct http_head *, int route, const struct cJSON *,
    const char *model, uint64_t *);
uint64_t affinity_score(uint64_t key, uint64_t member);
int affinity_bound(int total_in_flight, int members);

/* queue.c: the fleet's one queue of requests waiting for a slot, fair
 * across clients: the next free slot goes round-robin among the clients
 * that wait, FIFO within one. */
struct queue_entry {
	struct place_want want;
	char client[REQID_MAX + 1]; /* its token, else its address */
	/* A slot is theirs: called with backend and model, entry out. */
	void (*dispatch)(void *, struct backend *, struct backend_model *);
	void *arg;
	struct queue_client *qc; /* NULL: not queued */
	TAILQ_ENTRY(queue_entry) entry;
};
struct queue_client;
int queue_add(struct queue_entry *); /* -1: queue_max reached */
void queue_remove(struct queue_entry *);
void queue_kick(void *); /* a slot freed: a backend's hook */
int queue_length(void);
int queue_waiting_for(const struct backend *); /* could go there */
int queue_waiting_model(const char *);
void queue_free_all(void);

/* proxy.c: one request's life, from head parsed to response written. */
enum proxy_state {
	PROXY_NEW,
	PROXY_QUEUED, /* waiting for a pool slot */
	PROXY_RUNNING, /* transfer under way */
	PROXY_BACKOFF, /* waiting to retry */
	PROXY_DONE, /* answered */
};
struct backend;
struct up_handle;
struct probe_waiter;
struct proxy_req {
	struct client_conn *client;
	struct http_head *head; /* the client's, valid while we live */
	struct backend *backend; /* this attempt's, referenced */
	struct backend_model *model; /* its slot's model; NULL: none */
	struct up_handle *handle;
	struct fleet_op *fleet; /* a fleet-wide endpoint's answer */
	struct probe_waiter *probe; /* waiting for a health answer */
	enum proxy_state state;
	unsigned head_only : 1; /* HEAD: no response body */
	unsigned keep_alive : 1; /* the client connection may carry on */
	unsigned http10 : 1;
	unsigned openai : 1; /* /v1 path: OpenAI-shaped errors */
	unsigned admin : 1; /* ours: /ollama-pool/... */
	unsigned post_mode : 1; /* sends a body upstream */
	unsigned body_done : 1; /* all of the body is in body */
	unsigned send_paused : 1; /* curl's read side waits for body */
	unsigned recv_paused : 1; /* curl's write side waits for the client */
	unsigned resp_committed : 1; /* response head went to the client */
	unsigned resp_chunked : 1; /* we chunk-encode towards the client */
	unsigned resp_has_length : 1;
	unsigned resp_complete : 1;
	unsigned replayable : 1; /* all of the body sent so far is kept */
	unsigned retry_pending : 1; /* this attempt's answer will be retried */
	unsigned slot_held : 1; /* of backend (and model) */
	unsigned await_body : 1; /* placed once the body is whole */
	unsigned fleet_wide : 1; /* answered by fleet.c */
	unsigned slotless : 1; /* in a fleet: holds no slot, never waits */
	unsigned pinned : 1; /* to the backend X-Ollama-Pool-Backend names */
	unsigned bad_framing : 1; /* answer framed two ways: refused */
	unsigned send_flush : 1; /* a held-back piece of body waited enough */

	struct evbuffer *body; /* request body: unsent, and kept for replay */
	size_t body_off; /* bytes of body this attempt has sent */
	struct hdr_list hdrs; /* sent upstream */
	struct event *timer; /* backoff, first byte or stream idle */
	struct event *send_ev; /* sends a held-back piece of body */
	int attempts;
	double retry_delay;
	size_t discarded; /* body bytes of an answer being retried */
	uint64_t last_byte_us;

	long status;
	char reason[64];
	uint64_t resp_length, resp_received;

	long new_conns; /* upstream connections this request opened */
	int route; /* enum route, for metrics */
	struct tokscan tokens;
	uint64_t t_queued_us;
	char method[16];
	char *path; /* the target, for logs and routing */
	uint64_t t_start_us, t_first_byte_us;
	uint64_t bytes_in; /* request body bytes from the client */
	uint8_t end; /* enum access_end, once known */
	unsigned conn_failed : 1; /* the last attempt could not connect */
	char request_id[REQID_MAX + 1];
	char *model_name; /* from the body; NULL: none */
	int has_affinity; /* affinity.c's key for it */
	uint64_t affinity;
	struct backend *tried[PLACE_EXCLUDE_MAX]; /* failed this request */
	int ntried;
	uint64_t t_dispatch_us; /* this attempt took its slot */
	struct queue_entry qe; /* waiting for a slot, when qe.qc is set */
};
struct proxy_req *proxy_req_new(struct client_conn *, struct http_head *);
void proxy_req_start(struct proxy_req *);
void proxy_req_body(struct proxy_req *, const char *, size_t);
void proxy_req_body_end(struct proxy_req *);
int proxy_req_wants_body(const struct proxy_req *);
void proxy_req_client_drained(struct proxy_req *);
void proxy_req_free(struct proxy_req *);
void proxy_req_cancel(struct proxy_req *);
/* Within one request's rooms (proxy.c, dispatch.c). */
void proxy_set_backend(struct proxy_req *, struct backend *);
void proxy_release_slot(struct proxy_req *);
void proxy_transfer_begin(struct proxy_req *);
void proxy_timer_start(struct proxy_req *, double);
void proxy_timer_stop(struct proxy_req *);
void proxy_finish_fleet(struct proxy_req *);
void proxy_resp_complete(struct proxy_req *);
int proxy_can_retry(const struct proxy_req *);

/* relay.c: a backend's answer relayed to the client (xfer callbacks). */
size_t relay_header_cb(void *, const char *, size_t);
size_t relay_data_cb(void *, const char *, size_t);

/* dispatch.c: how a request gets its backend.  Alone, the one backend's
 * slots and the queue; in a fleet, by the model its body names, through
 * placement and the fair queue, or fleet.c for the fleet-wide
 * endpoints. */
void proxy_route(struct proxy_req *);
void proxy_place(struct proxy_req *);
void proxy_body_whole(struct proxy_req *);
int proxy_failover(struct proxy_req *);
void proxy_again(struct proxy_req *);
void proxy_req_fail(struct proxy_req *, int, int, const char *, ...)
    PRINTFLIKE(4, 5);
void proxy_req_respond(
    struct proxy_req *, int, const char *, const char *, size_t);

/* backend.c's word on how a transfer ended. */
enum xfer_result {
	XFER_OK,
	XFER_CONNECT, /* no connection could be made */
	XFER_TIMEOUT, /* connect_timeout or a fetch's own */
	XFER_RESET, /* the connection broke: transient */
	XFER_ABORTED, /* a callback of ours stopped it */
	XFER_ERROR, /* anything else (TLS, protocol) */
};

/* retry.c: whether a failed attempt goes again, and after how long. */
int retry_allowed(const struct config *, int, int, int);
int retry_status(const struct config *, long, int);
int retry_transient(enum xfer_result);
enum retry_reason retry_reason_of(enum xfer_result);
double retry_backoff(const struct config *, int);
double retry_after(const struct config *, const char *, double);

/* response.c: responses the proxy writes itself. */
struct response_opts {
	int status;
	int keep_alive;
	int http10;
	int head_only;
	int openai; /* OpenAI error shape */
	int retry_after; /* seconds, 0 for none */
	const char *allow; /* methods, for a 405 */
	const char *content_type;
	const char *request_id; /* X-Request-Id, when not NULL */
};
/* Both return the body bytes written (0 for HEAD). */
size_t response_write(
    struct evbuffer *, const struct response_opts *, const char *, size_t);
size_t response_error(
    struct evbuffer *, const struct response_opts *, const char *);
const char *response_reason(int);
int response_status_has_body(int);

/* admin.c: the /ollama-pool/ endpoints, never forwarded. */
int admin_is_admin_path(const char *, size_t);
void admin_handle(struct proxy_req *);
void admin_handle_plain(struct proxy_req *);

/*
 * backend.c: one Ollama: its curl multi and connection pool, its slots
 * per model, what it has and runs, its health.  The only file that calls
 * curl; everything above speaks to it through the transfer interface
 * below and callbacks of its own.
 */
#define XFER_PAUSE ((size_t)-1) /* from on_data, on_read: pause */
#define XFER_ABORT ((size_t)-2) /* from on_read: stop the transfer */
struct xfer_end {
	enum xfer_result result;
	const char *error; /* curl's words, for messages */
	long new_conns; /* connections this transfer opened */
	int conn_failed; /* it never got a connection */
};
/* What a transfer tells its owner, while it runs inside curl: they may
 * write to buffers and set flags, never free or release the transfer. */
struct xfer_cb {
	size_t (*on_header)(void *, const char *, size_t); /* 0: abort */
	size_t (*on_data)(void *, const char *, size_t); /* or XFER_PAUSE */
	size_t (*on_read)(void *, char *, size_t); /* or XFER_PAUSE, _ABORT */
	int (*on_rewind)(void *); /* 0: body from its start again; -1: no */
	void (*on_done)(void *, const struct xfer_end *); /* outside curl */
};
struct xfer_spec {
	int method; /* enum method */
	const char *method_name;
	const char *path; /* with its query */
	const struct hdr_list *headers;
	int has_body; /* on_read gives it */
	int64_t body_len; /* -1: chunked */
	const struct xfer_cb *cb;
	void *arg;
};
struct backend_model { /* what a backend has and runs of one model */
	char name[128];
	unsigned listed : 1; /* in its /api/tags */
	unsigned loaded : 1; /* in its /api/ps */
	int in_flight; /* slots held */
	double load_s; /* learned from load_duration; < 0: unknown */
	double busy_s; /* a request's time, smoothed; < 0: unknown */
	TAILQ_ENTRY(backend_model) entry;
};
enum backend_state {
	BACKEND_UP, /* takes requests (also before its first probe) */
	BACKEND_DOWN, /* ejected: probed with backoff until it answers */
};
struct up_handle;
struct up_sock;
struct backend_fetch;
struct probe;
struct backend_hooks { /* handed in by whoever made the backend */
	void (*slot_freed)(void *); /* a slot or health became free */
	void *arg;
	/* It is being freed: what the rooms above hung on it (probes)
	 * goes first, giving back the handles it holds. */
	void (*freeing)(struct backend *);
};
struct backend {
	char *name; /* its [backend NAME]; members share it */
	char member[64]; /* the address its host name gave; "": none */
	uint64_t member_hash; /* for rendezvous: of member, else url */
	struct curl_slist *resolve; /* host:port:address, for curl */
	int joining; /* a member new in DNS: no requests before a probe */
	uint64_t prewarmed; /* connections its prewarm fetches held */
	uint64_t prewarm_used; /* of those, taken by a request */
	struct backend_conf conf; /* its own copy; token included */
	struct upstream_url url;
	size_t base_len; /* of url.base */
	char *auth; /* "Authorization: Bearer TOKEN", NULL: none */
	struct backend_hooks hooks;
	int fleet; /* placed by model, ejected when failing */
	CURLM *multi;
	struct event *timer_ev;
	struct event *trim_ev; /* lets the connection cache shrink */
	int maxconnects; /* curl's cache cap: in flight + idle kept */
	int peak_active; /* since trim_ev last ran */
	long connect_timeout_ms;

	int active; /* transfers running, slot or not */
	int in_flight; /* slots held: <= conf.pool_maxsize */
	int refs; /* requests holding it */
	int retiring; /* replaced by a reload: no new requests */
	int unreachable; /* the start-up check failed; until it answers */
	long conns_open; /* upstream connections open now */
	unsigned long conns_closed; /* ever: a transfer that saw one may
	                             * have been retried by curl */
	uint64_t requests; /* transfers started, for metrics */
	struct histogram queue_wait; /* of the requests sent here */
	uint64_t conns_opened;
	struct up_sock **socks; /* by descriptor: the connections' sockets */
	int nsocks;
	struct up_handle *free_handles;
	TAILQ_HEAD(, backend_model) models;
	int nmodels;

	enum backend_state state;
	int fails; /* failed probes and requests in a row */
	char last_error[256]; /* why it last failed */
	uint64_t last_probe_us; /* when a probe last answered or failed */
	double last_probe_latency;
	struct probe *probe; /* health: one in flight, answers shared */
	struct health *health; /* a fleet's periodic probes */
	TAILQ_ENTRY(backend) entry;
};
TAILQ_HEAD(backend_list, backend);
struct backend *backend_new(const struct backend_conf *, int fleet,
    const struct backend_hooks *, const struct sockaddr *member);
void backend_prewarm(struct backend *);
int backend_is_member(
    const struct backend *, const struct backend_conf *, const char *member);
void backend_free(struct backend *);
int backend_same_settings(const struct backend *, const struct backend_conf *);
void backend_retire(struct backend *);
void backend_ref(struct backend *);
void backend_unref(struct backend *);
int backend_usable(const struct backend *); /* up and not retiring */
int backend_admits(const struct backend *, const char *);
struct backend *backend_find(const char *); /* by name, not retiring */
/* Models: found or made (NULL name: none). */
struct backend_model *backend_model(struct backend *, const char *);
struct backend_model *backend_model_find(const struct backend *, const char *);
/* Slots: a request for a model holds one of the backend's slots and one
 * of that model's from dispatch to its last byte. */
int backend_slot_free(const struct backend *, const struct backend_model *);
void backend_slot_take(struct backend *, struct backend_model *);
void backend_slot_release(struct backend *, struct backend_model *);
/* One request's transfer. */
struct up_handle *backend_xfer_start(
    struct backend *, const struct xfer_spec *);
void backend_xfer_pause(struct up_handle *, int recv, int send);
void backend_xfer_release(struct up_handle *);
/* A small request of the proxy's own (probes, fleet-wide endpoints):
 * holds no slot, never waits behind generations, says User-Agent:
 * ollama-pool/VERSION. */
struct backend_fetch_result {
	long status; /* 0: no answer */
	const char *body; /* what was kept of it, NUL-terminated */
	size_t len;
	const char *error; /* "" when an answer came */
	double latency; /* seconds */
};
struct backend_fetch_spec {
	const char *method; /* NULL: GET */
	const char *path;
	const char *body; /* NULL: none; else JSON, the caller's until done */
	size_t body_len;
	long timeout_ms; /* 0: none */
	size_t keep_max; /* answer bytes kept; 0: BACKEND_FETCH_KEEP */
	/* Answer bytes as they come (NULL: only kept). */
	void (*on_data)(void *, const char *, size_t);
	void (*on_done)(void *, const struct backend_fetch_result *);
	void *arg;
};
#define BACKEND_FETCH_KEEP (4 * 1024 * 1024)
struct backend_fetch *backend_fetch_start(
    struct backend *, const struct backend_fetch_spec *);
void backend_fetch_cancel(struct backend_fetch *);

/* probe.c: health probes of a backend: at most one in flight, its answer
 * shared by every caller waiting and reused while fresh. */
struct probe_result {
	int ok;
	long status; /* 0: no answer */
	double latency;
	char version[64]; /* when ok */
	char reason[CURL_ERROR_SIZE + 64]; /* when not */
};
typedef void (*probe_cb)(void *, const struct probe_result *);
struct probe_waiter;
struct probe_waiter *probe_health(struct backend *, probe_cb, void *);
void probe_waiter_cancel(struct probe_waiter *);
void probe_free(struct probe *);
void probe_startup(struct backend *);
void probe_reachable(struct backend *, const char *);

/* probe.c, the fleet's: every backend probed each probe_interval
 * (/api/ps and /api/tags), ejected after fail_threshold failures in a
 * row, asked again with backoff, readmitted after one success. */
void probe_fleet_start(struct backend *);
/* Health as requests find it too: a failed connect or a 5xx answer
 * counts as a failed probe, an answer below 500 as a good one. */
void probe_note_ok(struct backend *);
void probe_note_failure(struct backend *, const char *);

/* fleet.c: the fleet-wide endpoints: merged tags and ps, pulls, deletes
 * and copies fanned out to every backend.  fleet.c answers through the
 * sink it is handed, never by name. */
struct fleet_sink {
	/* A whole answer; a body, NUL-terminated. */
	void (*respond)(void *, int status, const char *ctype, const char *body,
	    size_t len);
	/* Or a streamed one: a head, NDJSON lines, its end. */
	void (*stream_begin)(void *, int status, const char *ctype);
	void (*stream_write)(void *, const char *, size_t);
	void (*stream_end)(void *);
	void *arg;
};
struct fleet_op;
/* Is this a fleet-wide endpoint (when the fleet is several)? */
int fleet_is_fleetwide(int route, int method);
/* Starts one; the body is the request's, whole (NULL for GET). */
struct fleet_op *fleet_start(int route, int method, const char *body,
    size_t len, const struct fleet_sink *);
void fleet_cancel(struct fleet_op *);

/* health.c: a fleet's backends probed each probe_interval (/api/ps and
 * /api/tags: what each has and runs), ejected after fail_threshold
 * failures in a row, asked again with backoff, readmitted after one
 * success.  Requests count too: a failed connect or a 5xx is a failure,
 * any other answer a success. */
struct health;
void health_start(struct backend *);
void health_free(struct health *);
void health_note_ok(struct backend *);
void health_note_failure(struct backend *, const char *);

/* resolve.c: names looked up off the loop, with evdns (rt.dns). */
struct resolve_job;
typedef void (*resolve_cb)(struct config *, const char *, void *);
void resolve_init(void);
void resolve_configure(const struct config *);
struct resolve_job *resolve_start(struct config *, resolve_cb, void *);
void resolve_shutdown(void);

/* fleet.c and fleet_pull.c share an op's insides. */
#define FLEET_LINE_MAX (64 * 1024) /* a pull's NDJSON line; longer: dropped */
#define FLEET_DIGESTS_MAX 64 /* a model has a handful of layers */
#define FLEET_STATUSES_MAX 32 /* "pulling manifest", "writing manifest"... */
#define FLEET_WHY_MAX 256
struct fleet_route;
/* One backend asked. */
struct fleet_slot {
	struct fleet_op *op;
	struct backend *b; /* referenced until the op is freed */
	struct backend_fetch *fetch; /* in flight; NULL once done */
	struct backend_fetch_spec spec; /* its, alive as long as it */
	unsigned running : 1; /* started, its on_done not come yet */
	unsigned ok : 1; /* it did what was asked */
	unsigned failed : 1; /* why says why */
	unsigned succeeded : 1; /* a pull: its {"status":"success"} came */
	unsigned line_skip : 1; /* this line is over FLEET_LINE_MAX */
	long status; /* its answer's; 0: none */
	char why[FLEET_WHY_MAX]; /* curl's words, the backend's or ours */
	struct cJSON *answer; /* a list: its 200 answer, parsed */
	char *line; /* a pull: the NDJSON line not yet ended */
	size_t line_len, line_cap;
};

/* A pull: one blob's progress, on each backend that reported it. */
struct fleet_digest {
	char *digest;
	char *status; /* "pulling 8eeb52dfb3bb" */
	struct {
		double total, completed;
		int seen;
	} * per; /* by slot */
	double sent_total, sent_completed;
	unsigned sent : 1, dirty : 1;
};

struct fleet_op {
	const struct fleet_route *r;
	struct fleet_sink sink;
	int openai; /* /v1: OpenAI's error shape */
	char *body; /* the request's, NUL-terminated: sent to each */
	size_t len;
	char *model; /* pull, delete: the model; copy: the source */
	char *dest; /* copy: the destination */
	int stream; /* pull: NDJSON progress; else one answer */
	char *what; /* "GET /api/tags", "pull of M": for messages */
	struct fleet_slot *slots; /* in backend file order */
	int nslots;
	int pending; /* fetches whose on_done has not come */
	int starting; /* fleet_launch is starting them */
	int finishing; /* answering: fleet_cancel does nothing */
	struct fleet_digest *digests; /* FLEET_DIGESTS_MAX, when any */
	int ndigests;
	char *statuses[FLEET_STATUSES_MAX]; /* emitted once each */
	int nstatuses;
};

/* A string grown by appending, for messages naming backends. */
struct fleet_str {
	char *s;
	size_t len, cap;
};

void fleet_str_add(struct fleet_str *, const char *, ...) PRINTFLIKE(2, 3);
const char *fleet_str_get(const struct fleet_str *);
void fleet_respond_json(struct fleet_op *, int, struct cJSON *);
void fleet_emit(struct fleet_op *, struct cJSON *);
void fleet_slot_fail(struct fleet_slot *, const char *, ...) PRINTFLIKE(2, 3);
void fleet_slot_answer_fail(
    struct fleet_slot *, const struct backend_fetch_result *);
int fleet_reasons(const struct fleet_op *, struct fleet_str *);
int fleet_names_ok(const struct fleet_op *, struct fleet_str *);
void fleet_pull_data(void *, const char *, size_t);
void fleet_pull_done(struct fleet_slot *, const struct backend_fetch_result *);
void fleet_pull_finish(struct fleet_op *);

/* discovery.c: a fleet backend's host name looked up again every
 * resolve_interval, off the loop (evdns): each address is a member; a new
 * one joins after its first good probe, one gone takes no new requests
 * and goes when its requests are done; a failed or empty answer keeps
 * the members. */
struct discovery;
TAILQ_HEAD(discovery_list, discovery);
void discovery_apply(const struct config *);
void discovery_stop(void);

/* sdnotify.c: systemd readiness, with stand-ins when built without it. */
void sdnotify_send(const char *, ...) PRINTFLIKE(1, 2);
int sdnotify_listen_fds(char ***);
void sdnotify_names_free(char **);
uint64_t sdnotify_watchdog_usec(void);

/* janitor.c: periodic work: status line and watchdog. */
void janitor_start(void);
void janitor_stop(void);

/* queue.c's state, in the runtime struct. */
struct queue_client;
TAILQ_HEAD(queue_clients, queue_client);
struct queue_state {
	struct queue_clients clients;
	int initialised;
	int length;
	struct queue_client *last; /* served last: the turn is the next's */
	int kicking, rekick;
};

/* main.c: the one runtime struct. */
struct runtime {
	struct event_base *base;
	struct config *cfg;
	const char *config_file;
	struct config_overrides overrides; /* re-applied on reload */
	int socket_activated;
	struct backend_list backends;
	struct listener_list listeners;
	struct evdns_base *dns; /* resolve.c's, for every lookup */
	struct resolve_job *resolving; /* at most one at a time */
	struct discovery_list discoveries; /* discovery.c's, one a name */
	struct queue_state queue; /* queue.c's: requests waiting for a slot */
	unsigned place_rr; /* placement.c's: ties among equals go round */
	int reload_queued; /* SIGHUP while resolving: reload again after */
	struct client_list clients;
	int nclients;
	struct client_hooks client_hooks;
	int stopping;
	struct event *shutdown_ev;
	int accept_paused; /* out of descriptors or at max_clients */
	struct event *accept_resume_ev;

	struct event *janitor_ev;
	char status_line[1400]; /* last STATUS= sent */
	int watchdog;

	enum log_level log_level;
	int log_journal;

	struct accesslog alog;
	uint64_t reqid_seed, reqid_next;
	char via_name[32]; /* ollama-pool-XXXXXXXX */

	struct metrics metrics;
};
extern struct runtime rt;
uint64_t now_us(void);
struct timeval runtime_timeval(double);

#endif
