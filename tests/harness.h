/*
 * Integration test harness for ollama-pool: starts the fake Ollama and the
 * daemon as real processes on loopback ports, talks to them as naive
 * clients (libcurl, one fresh connection per request) or byte by byte on
 * raw sockets, and reads what the processes report about themselves.
 *
 * Everything a test starts is registered here and stopped by
 * harness_teardown(), the checked teardown of every TCase.  Check's fork
 * mode _exit()s a failing test without running teardown, so the children
 * also die with the test process (PR_SET_PDEATHSIG), and the H_ASSERT
 * macros print the tails of the process logs before they fail.
 */
#ifndef HARNESS_H
#define HARNESS_H

#include <sys/types.h>

#include <stddef.h>
#include <stdint.h>

#include <check.h>
#include <cjson/cJSON.h>

#if defined(__GNUC__)
#define HARNESS_PRINTFLIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define HARNESS_PRINTFLIKE(f, a)
#endif

/* How long a process gets to show it is ready, as the brief says. */
#define HARNESS_READY_MS 10000
/* Default bound on one HTTP exchange made by a test. */
#define HARNESS_HTTP_TIMEOUT_MS 30000

/*
 * Assertions that dump the daemon's and the fakes' log tails first: a
 * failing test is _exit()ed by Check at once, so this is the only moment
 * the logs can be shown next to the failure.
 */
void harness_failed(void);
#define H_ASSERT(cond, ...)                                                    \
	do {                                                                   \
		if (!(cond)) {                                                 \
			harness_failed();                                      \
			ck_abort_msg(__VA_ARGS__);                             \
		}                                                              \
	} while (0)
#define H_CHECK(cond) H_ASSERT(cond, "assertion failed: %s", #cond)
#define H_ASSERT_INT_EQ(a, b)                                                  \
	do {                                                                   \
		long long h_a_ = (long long)(a), h_b_ = (long long)(b);        \
		H_ASSERT(h_a_ == h_b_, "%s == %s: %lld != %lld", #a, #b, h_a_, \
		    h_b_);                                                     \
	} while (0)
#define H_ASSERT_STR_EQ(a, b)                                                  \
	do {                                                                   \
		const char *h_a_ = (a), *h_b_ = (b);                           \
		H_ASSERT(                                                      \
		    h_a_ != NULL && h_b_ != NULL && strcmp(h_a_, h_b_) == 0,   \
		    "%s == %s: \"%s\" != \"%s\"", #a, #b,                      \
		    h_a_ ? h_a_ : "(null)", h_b_ ? h_b_ : "(null)");           \
	} while (0)
#define H_ASSERT_CONTAINS(hay, needle)                                         \
	do {                                                                   \
		const char *h_h_ = (hay), *h_n_ = (needle);                    \
		H_ASSERT(h_h_ != NULL && strstr(h_h_, h_n_) != NULL,           \
		    "%s does not contain \"%s\": \"%.400s\"", #hay, h_n_,      \
		    h_h_ ? h_h_ : "(null)");                                   \
	} while (0)

/* A growable byte buffer, always NUL-terminated so text can be read as a
 * string even when the bytes themselves may hold NULs. */
struct harness_buf {
	char *data;
	size_t len, cap;
};
void harness_buf_add(struct harness_buf *, const void *, size_t);
void harness_buf_addf(struct harness_buf *, const char *, ...)
    HARNESS_PRINTFLIKE(2, 3);
void harness_buf_consume(struct harness_buf *, size_t);
void harness_buf_free(struct harness_buf *);

/* Test-lifetime allocation: freed by harness_teardown(). */
char *harness_strf(const char *, ...) HARNESS_PRINTFLIKE(1, 2);

double harness_now(void); /* monotonic seconds */

/* ---- process lifecycle ------------------------------------------------ */

struct harness_proc {
	char label[64]; /* names the log file */
	pid_t pid;
	int pidfd; /* readable once the process has exited */
	int exited;
	int wstatus;
	int signalled; /* we sent SIGTERM or SIGKILL ourselves */
	int died_early; /* found dead before we stopped it */
	char log_path[4096];
	int stdout_fd; /* read end of its stdout, -1 if none */
};

struct harness_fake {
	struct harness_proc proc;
	int port;
	char name[64];
	char host[64]; /* the address it listens on; "" is 127.0.0.1 */
};

struct harness_daemon {
	struct harness_proc proc;
	int port; /* the -l port on 127.0.0.1 */
	char dir[4096]; /* mkdtemp() dir: conf, notify socket */
	char conf_path[4096];
	char notify_path[4096];
	int notify_fd;
	char upstream[512];
};

/* Names the log files of what the test starts; call first in a test.
 * NULL uses Check's name of the running test. */
void harness_begin(const char *);
#define H_BEGIN() harness_begin(NULL)
const char *harness_test_name(void);
const char *harness_log_dir(void);

/* Checked fixtures: per test, in the forked test process. */
void harness_setup(void);
void harness_teardown(void);

/* Starts the fake Ollama; name is passed as -n when not NULL and labels
 * the log (tests/logs/TEST.LABEL.log).  Fails the test unless it prints
 * its port within HARNESS_READY_MS. */
struct harness_fake *fake_start(
    const char *label, const char *name, const char *const *extra_args);
/* The same on host:port (a loopback address other than 127.0.0.1, port 0
 * for any), as pods behind one Service would be: fake_url() and
 * harness_upstream_of() then name that address. */
struct harness_fake *fake_start_at(const char *label, const char *name,
    const char *host, int port, const char *const *extra_args);
/* Starts tests/fake-dns answering from table_path, a file the test may
 * rewrite at any time (see fake_dns.c for its lines); f->port is its UDP
 * port on 127.0.0.1, for `resolver = 127.0.0.1:PORT`. */
struct harness_fake *fake_dns_start(const char *label, const char *table_path);
void fake_stop(struct harness_fake *);
char *fake_url(const struct harness_fake *, const char *path);
/* Control endpoints, always asked directly, never through the daemon. */
cJSON *fake_stats(const struct harness_fake *);
long long fake_stat(const struct harness_fake *, const char *key);
void fake_reset(const struct harness_fake *);
/* Queues a fault order, e.g. {"action":"status","status":503,"count":1}. */
void fake_fault(const struct harness_fake *, const char *json);
/* Replaces the fake's model settings (POST /_fake/models), e.g.
 * {"tags":["a","b"],"loaded":["a"],"load_ms":300,"busy_ms":200}. */
void fake_set_models(const struct harness_fake *, const char *json);

/* Starts the daemon as `ollama-pool -c CONF -l 127.0.0.1:PORT -u UPSTREAM
 * -v EXTRA...` with CONF holding conf_text, and waits for READY=1 on the
 * notify socket, then for the start-up check's verdict on the upstream in
 * its log (one of harness_startup_verdicts).  upstream NULL leaves -u
 * out. */
extern const char *const harness_startup_verdicts[];
struct harness_daemon *harness_daemon_start(
    const char *conf_text, const char *upstream, const char *const *extra_args);
/* SIGTERM, then SIGKILL after 5 s; returns the wait status. */
int harness_daemon_stop(struct harness_daemon *);
/* Waits for a notify datagram holding the line (READY=1, STOPPING=1...):
 * 1 seen, 0 timed out, -1 the daemon exited first. */
int harness_notify_wait(
    struct harness_daemon *, const char *line, int timeout_ms);
char *harness_daemon_url(const struct harness_daemon *, const char *path);
char *harness_upstream_of(const struct harness_fake *);

/* The usual pair: a fresh fake and a daemon in front of it. */
struct harness_env {
	struct harness_fake *fake;
	struct harness_daemon *daemon;
};
void harness_up(struct harness_env *, const char *conf_text);

/* Rewrites the daemon's configuration file, sends SIGHUP and waits for
 * the READY=1 that ends the reload, whichever way it went. */
void harness_daemon_reload(struct harness_daemon *, const char *conf_text);

/* ---- a fleet ([backend NAME] sections) --------------------------------- */

/* Starts the daemon on a fleet configuration (no -u) and waits until
 * /ollama-pool/stats shows every one of its nbackends backends probed and
 * up, so that placement knows what each has and runs.  token: the client
 * token /ollama-pool/stats wants (client_tokens), or NULL. */
struct harness_daemon *harness_fleet_start(const char *conf_text, int nbackends,
    const char *token, const char *const *extra_args);
/* GET /ollama-pool/stats, parsed (the caller's to cJSON_Delete). */
cJSON *harness_stats(const struct harness_daemon *, const char *token);
/* The entry of "backends" named name, or NULL. */
const cJSON *harness_stats_backend(const cJSON *stats, const char *name);
/* Asks /ollama-pool/stats until fn(stats, arg) holds: 1, or 0 after
 * timeout_ms (a bounded loop, a few ms between questions). */
int harness_stats_wait(const struct harness_daemon *, const char *token,
    int (*fn)(const cJSON *stats, void *arg), void *arg, int timeout_ms);
/* Waits until the backend's "state" is state ("up", "ejected") and,
 * when probed is set, it has been probed since start: 1, or 0. */
int harness_backend_wait(const struct harness_daemon *, const char *token,
    const char *name, const char *state, int probed, int timeout_ms);

/* $OLLAMA_POOL_BIN, $FAKE_OLLAMA_BIN and $FAKE_DNS_BIN, or the build
 * tree's binaries next to the test program when run by hand. */
const char *harness_daemon_bin(void);
const char *harness_fake_bin(void);
const char *harness_fake_dns_bin(void);

/* A loopback port that was free a moment ago (bind :0, read, close). */
int harness_free_port(void);

/* Runs a program to completion with stdin from /dev/null, collecting its
 * output; kills it after timeout_ms.  Returns the wait status, or -1 on a
 * timeout. */
struct harness_run {
	int wstatus;
	int timed_out;
	struct harness_buf out, err;
};
void harness_run(const char *const *argv, int timeout_ms, struct harness_run *);
void harness_run_free(struct harness_run *);

/* What /proc says about a process. */
long harness_proc_status_kb(pid_t, const char *field); /* VmRSS, VmHWM */
int harness_proc_fd_count(pid_t);
/* 1 when a line of /proc/PID/maps mentions what (e.g. "libasan"). */
int harness_proc_maps_contains(pid_t, const char *what);
int harness_proc_alive(struct harness_proc *);
/* A process's log as it is now (test-lifetime string); how often it holds
 * needle; waiting (inotify, no clock) until it holds needle, 1, or 0
 * after timeout_ms; or any of needles (NULL-terminated), its index or
 * -1. */
char *harness_log_text(const struct harness_proc *);
int harness_log_count(const struct harness_proc *, const char *needle);
int harness_log_wait(struct harness_proc *, const char *needle, int timeout_ms);
int harness_log_wait_any(
    struct harness_proc *, const char *const *needles, int timeout_ms);
/* A whole file, NUL-terminated, malloc()ed and the caller's to free ("" when
 * it cannot be read); harness_read_file's text is the test's, NULL then. */
char *harness_slurp(const char *path, size_t *lenp);
/* 0 when 127.0.0.1:port accepts a TCP connection, else connect()'s errno. */
int harness_connect_errno(int port);
/* Waits until the file holds `needle`: 1, or 0 after timeout_ms.  inotify
 * wakes it on every write (on the directory while the file does not exist
 * yet), so nothing is polled on a clock. */
int harness_file_wait(const char *path, const char *needle, int timeout_ms);
/* Writes a file in the daemon's temp dir; returns its path. */
char *harness_write_file(const char *dir, const char *name, const char *text);
/* A file's whole text (test-lifetime, NUL-terminated; its length in *lenp
 * when not NULL), or NULL when it cannot be read. */
char *harness_read_file(const char *path, size_t *lenp);
char *harness_tmpdir(void);

/* ---- HTTP ------------------------------------------------------------- */

struct http_header {
	char *name;
	char *value;
};

struct http_chunk {
	double t; /* arrival at the client */
	size_t off, len;
};

struct http_resp {
	int ok; /* exchange completed */
	char error[512]; /* why not */
	long status;
	int http_minor;
	struct harness_buf head; /* status line to blank line, as received */
	struct http_header *hdrs;
	size_t nhdrs;
	struct harness_buf body; /* decoded body */
	struct http_chunk *chunks; /* per write callback / read() */
	size_t nchunks, chunks_cap;
	double t_start, t_head, t_body, t_end, t_sent;
	long num_connects; /* libcurl: new connections it made */
	int chunked; /* raw: body arrived chunked */
	int closed; /* raw: body ended by the peer closing */

	int head_done_; /* internal */
};

/* Streams a request body of unknown length: fills buf with at most max
 * bytes and returns how many; 0 ends the body. */
typedef size_t (*http_read_fn)(void *arg, char *buf, size_t max);

struct http_req {
	const char *method; /* NULL: GET, or POST with a body */
	const char *url;
	const char *const *headers; /* "Name: value"; "Name:" drops
	                             * one libcurl would add */
	const void *body; /* fixed body, sent with
	                   * Content-Length */
	size_t body_len;
	int has_body;
	http_read_fn read_fn; /* or a chunked body */
	void *read_arg;
	int http10;
	long timeout_ms; /* 0: HARNESS_HTTP_TIMEOUT_MS */
};

/* One request on a fresh libcurl easy handle and a new connection. */
int http_request(const struct http_req *, struct http_resp *);
/* Many at once on one multi handle, each on its own connection. */
void http_request_many(const struct http_req *, struct http_resp *, size_t);
/*
 * Many at once, added and driven step by step, so that a test can queue
 * some, look at the daemon, then add more: each transfer on its own
 * connection.  The requests (and what they point to) must live until the
 * transfer ends.  http_multi_run drives them for up to ms and returns how
 * many still run; http_multi_wait until all ended (1) or timeout_ms (0);
 * http_multi_free ends those left (their responses say so).
 */
struct http_multi;
struct http_multi *http_multi_new(void);
void http_multi_add(
    struct http_multi *, const struct http_req *, struct http_resp *);
int http_multi_run(struct http_multi *, int ms);
int http_multi_wait(struct http_multi *, int timeout_ms);
void http_multi_free(struct http_multi *);
/* Shorthands. */
int http_get(const char *url, struct http_resp *);
int http_post_json(const char *url, const char *json, struct http_resp *);
void http_resp_free(struct http_resp *);

const char *http_header_get(const struct http_resp *, const char *);
size_t http_header_count(const struct http_resp *, const char *);
/* Parses a response head (status line and header lines); 0 or -1. */
int http_parse_head(struct http_resp *, const char *, size_t);
/* Arrival time of each complete line of the body. */
size_t http_line_times(const struct http_resp *, double *, size_t);
size_t http_count_lines(const struct harness_buf *);
/* A body's NDJSON lines, each parsed (failing the test on a line that is
 * not JSON or not ended), NULL-ended; freed with http_ndjson_free. */
cJSON **http_ndjson(const struct http_resp *, size_t *);
void http_ndjson_free(cJSON **, size_t);
/* Body parsed as one JSON document (NULL if it is not). */
cJSON *http_json(const struct http_resp *);

/* A fixed body handed out in pieces of at most `piece` bytes, so that
 * libcurl sends it as several chunks. */
struct harness_membody {
	const char *data;
	size_t len, off, piece;
};
size_t harness_membody_read(void *, char *, size_t);

/* Checks the proxied response against the direct one: status, body byte
 * for byte, end-to-end headers in order with their case; framing may
 * differ only as a proxy's must (Connection, Keep-Alive). */
void harness_assert_same_response(const struct http_resp *direct,
    const struct http_resp *proxied, const char *what);

/* ---- raw sockets -------------------------------------------------------- */

struct http_conn {
	int fd;
	struct harness_buf in; /* received, not yet consumed */
	int eof;
	int reset;
};
/* Connects to 127.0.0.1:port; fails the test if it cannot. */
void http_conn_open(struct http_conn *, int port);
void http_conn_close(struct http_conn *);
/* 0 when all was sent, -1 on error or timeout (errno says which). */
int http_conn_send(struct http_conn *, const void *, size_t, int timeout_ms);
int http_conn_sendstr(struct http_conn *, const char *, int timeout_ms);
/* Reads one response (after any 1xx), leaving later bytes for the next.
 * head_request: the request was HEAD, so no body follows.  0 or -1 with
 * resp->error set. */
int http_conn_read_response(
    struct http_conn *, int head_request, int timeout_ms, struct http_resp *);
/* 1 when the peer closed the connection (EOF or reset) with no more data
 * within timeout_ms, 0 when it stayed open, -1 when data arrived. */
int http_conn_wait_closed(struct http_conn *, int timeout_ms);
/* Waits until the socket is readable (a response has begun). */
int http_conn_wait_readable(struct http_conn *, int timeout_ms);
/* Reads once into c->in, waiting until deadline (harness_now() seconds):
 * 1 data, 0 EOF or reset (c->eof, c->reset), -1 timeout or error. */
int http_conn_fill(struct http_conn *, double deadline);

/* ---- hashing ---------------------------------------------------------- */

struct harness_sha256;
struct harness_sha256 *harness_sha256_new(void);
void harness_sha256_update(struct harness_sha256 *, const void *, size_t);
void harness_sha256_final(struct harness_sha256 *, char hex[65]);
void harness_sha256_hex(const void *, size_t, char hex[65]);

/* ---- shared by the suites ------------------------------------------- */

/* Deterministic bytes, different in every position that matters. */
void harness_fill(char *, size_t, uint32_t);
/* The body as JSON, or the test fails saying what was expected. */
cJSON *harness_json(const struct http_resp *, const char *what);
const char *harness_jstr(const cJSON *, const char *);
double harness_jnum(const cJSON *, const char *);
/* A TCase with the harness fixture and a timeout, added to s. */
TCase *harness_tcase(Suite *, const char *, double);
/* Runs a suite; the process's exit status. */
int harness_main(Suite *);

/* ---- members from DNS (check_discovery) -------------------------------- */

/* Replaces a file's text at once (a new file renamed over it), so that a
 * process reading it anew (fake-dns's table) never sees it half
 * written. */
void harness_replace_file(const char *path, const char *text);
/* How many lines of a process's log hold a and b (b NULL: a alone), and
 * waiting (inotify, no clock) until at least n do: 1, or 0 after
 * timeout_ms. */
int harness_log_count_lines(
    const struct harness_proc *, const char *a, const char *b);
int harness_log_wait_lines(
    struct harness_proc *, const char *a, const char *b, int n, int timeout_ms);
/* Gives a started process's log a new label (tests/logs/TEST.LABEL.log):
 * the file is renamed, the process goes on writing to it.  For a second
 * daemon in one test, whose log would otherwise replace the first's. */
void harness_proc_relabel(struct harness_proc *, const char *label);

#endif
