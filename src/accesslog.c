/*
 * The access log: one line per request, JSON or Apache's combined format,
 * to a file, to stderr, or nowhere (access_log, access_log_format).
 *
 * The event loop never waits for the disk.  A regular file is always
 * "ready" to poll(2), so a non-blocking descriptor would still stall the
 * loop on a slow or full disk; instead the loop formats each line and
 * appends it to a queue in memory, under a mutex held for a memcpy, and a
 * writer thread takes the whole queue at once and writes it with
 * write(2).  The queue and the batch being written together hold at most
 * ACCESSLOG_QUEUE_MAX bytes: a line that does not fit is dropped and
 * counted (ollama_pool_access_log_dropped_total), and a warning says so
 * once per run of drops.  SIGUSR1 asks the writer to reopen the file
 * (logrotate's convention); a reload may name another one.  Opening
 * happens in the writer too, but at start-up, where an error is fatal.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ollama-pool.h"

/* Every field is cut to a bound, so a line always fits, whole. */
#define ACCESSLOG_LINE_MAX 24576
#define ACCESSLOG_PATH_OUT 8192
#define ACCESSLOG_TEXT_OUT 2048
/* How long exit waits for a writer stuck on the disk. */
#define ACCESSLOG_STOP_SECONDS 5

static const char *accesslog_ends[] = {
    [END_NONE] = "completed",
    [END_COMPLETED] = "completed",
    [END_CLIENT_GONE] = "client_gone",
    [END_UPSTREAM_ERROR] = "upstream_error",
    [END_TIMEOUT] = "timeout",
    [END_REFUSED] = "refused",
};

const char *
accesslog_end_name(enum access_end e)
{
	return accesslog_ends[e <= END_REFUSED ? e : END_NONE];
}

/* ---- the writer thread ------------------------------------------------ */

static int
accesslog_open(const char *path, int flags)
{
	return open(
	    path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | flags, 0640);
}

/* In the writer: (re)open what the loop asked for, keeping the old file
 * when the new one cannot be opened. */
static void
accesslog_reopen_now(struct accesslog *a, const char *path, int to_stderr)
{
	int fd = -1;

	if (path != NULL) {
		fd = accesslog_open(path, 0);
		if (fd < 0) {
			log_err("access log: cannot open %s: %s; %s", path,
			    strerror(errno),
			    a->fd >= 0 ? "still writing to the old one"
			               : "lines are lost");
			return;
		}
	} else if (to_stderr)
		fd = STDERR_FILENO;
	if (a->fd > STDERR_FILENO)
		close(a->fd);
	a->fd = fd;
	if (path != NULL)
		log_notice("access log: writing to %s", path);
}

/* write(2) all of it; on stderr, a line per write, so the lines of the
 * daemon's own log never land inside one.  Returns the lines lost. */
static uint64_t
accesslog_write_all(struct accesslog *a, const char *p, size_t len)
{
	const char *end = p + len, *nl;
	size_t chunk;
	ssize_t n;
	uint64_t lost = 0;

	while (p < end) {
		chunk = (size_t)(end - p);
		if (a->fd == STDERR_FILENO &&
		    (nl = memchr(p, '\n', chunk)) != NULL)
			chunk = (size_t)(nl - p) + 1;
		n = a->fd >= 0 ? write(a->fd, p, chunk) : -1;
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			for (nl = p; (nl = memchr(nl, '\n', end - nl)) != NULL;
			     nl++)
				lost++;
			/* Once per run of failures: a full disk fails
			 * every batch. */
			if (a->fd >= 0 && !a->failing)
				log_err("access log: write failed: %s; lines "
				        "are lost until writing works again",
				    n < 0 ? strerror(errno)
				          : "nothing written");
			a->failing = 1;
			return lost;
		}
		p += n;
	}
	if (a->failing)
		log_notice("access log: writing again");
	a->failing = 0;
	return 0;
}

static void *
accesslog_main(void *arg)
{
	struct accesslog *a = arg;
	char *batch, *path;
	size_t len, cap;
	uint64_t lost;
	int to_stderr;

	pthread_mutex_lock(&a->mu);
	for (;;) {
		while (a->queue_len == 0 && !a->reopen && !a->stop)
			pthread_cond_wait(&a->cv, &a->mu);
		if (a->reopen) {
			a->reopen = 0;
			path = a->path != NULL ? xstrdup(a->path) : NULL;
			to_stderr = a->to_stderr;
			pthread_mutex_unlock(&a->mu);
			accesslog_reopen_now(a, path, to_stderr);
			free(path);
			pthread_mutex_lock(&a->mu);
			continue;
		}
		if (a->queue_len == 0)
			break; /* stopping, and all is written */
		batch = a->queue;
		cap = a->queue_cap;
		a->writing = len = a->queue_len;
		a->queue = a->spare;
		a->queue_cap = a->spare_cap;
		a->queue_len = 0;
		a->spare = NULL;
		a->spare_cap = 0;
		pthread_mutex_unlock(&a->mu);
		lost = accesslog_write_all(a, batch, len);
		pthread_mutex_lock(&a->mu);
		a->dropped += lost;
		a->writing = 0;
		a->spare = batch;
		a->spare_cap = cap;
	}
	pthread_mutex_unlock(&a->mu);
	if (a->fd > STDERR_FILENO)
		close(a->fd);
	a->fd = -1;
	return NULL;
}

/* ---- the loop's side ---------------------------------------------------- */

/* Where the settings send lines: path set for a file. */
static int
accesslog_dest(const struct config *cfg, const char **path)
{
	*path = NULL;
	if (strcmp(cfg->access_log, "off") == 0)
		return 0;
	if (strcmp(cfg->access_log, "stderr") != 0)
		*path = cfg->access_log;
	return 1;
}

static void
accesslog_spawn(struct accesslog *a)
{
	sigset_t all, old;

	/* Signals stay with the loop's thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	if (pthread_create(&a->thread, NULL, accesslog_main, a) != 0)
		fatal("access log: cannot start the writer thread");
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	a->running = 1;
}

/*
 * Start-up: opens the file here, so an error stops the daemon, and starts
 * the writer.  A FIFO nobody reads yet would block the open: that one is
 * left to the writer.  Returns 0, or -1 with err set.
 */
int
accesslog_start(const struct config *cfg, char *err, size_t errlen)
{
	struct accesslog *a = &rt.alog;
	const char *path;
	int fd;

	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cv, NULL);
	a->fd = -1;
	if (!accesslog_dest(cfg, &path))
		return 0;
	if (path == NULL) {
		a->fd = STDERR_FILENO;
		a->to_stderr = 1;
	} else {
		fd = accesslog_open(path, O_NONBLOCK);
		if (fd < 0 && errno != ENXIO) {
			snprintf(err, errlen, "access_log: cannot open %s: %s",
			    path, strerror(errno));
			return -1;
		}
		if (fd >= 0)
			fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
		else
			a->reopen = 1;
		a->fd = fd;
		a->path = xstrdup(path);
	}
	accesslog_spawn(a);
	log_notice("access log: %s lines to %s",
	    cfg->access_log_format == ACCESSLOG_COMBINED ? "combined" : "json",
	    path != NULL ? path : "stderr");
	return 0;
}

/* After a reload: another file, stderr, or off. */
void
accesslog_configure(const struct config *cfg)
{
	struct accesslog *a = &rt.alog;
	const char *path;
	int on = accesslog_dest(cfg, &path);

	pthread_mutex_lock(&a->mu);
	if ((path == NULL) != (a->path == NULL) ||
	    (path != NULL && strcmp(path, a->path) != 0) ||
	    (on && path == NULL) != a->to_stderr) {
		free(a->path);
		a->path = path != NULL ? xstrdup(path) : NULL;
		a->to_stderr = on && path == NULL;
		a->reopen = 1;
		pthread_cond_signal(&a->cv);
	}
	pthread_mutex_unlock(&a->mu);
	if (on && !a->running)
		accesslog_spawn(a);
}

/* SIGUSR1. */
void
accesslog_reopen(void)
{
	struct accesslog *a = &rt.alog;

	if (!a->running || a->path == NULL) {
		log_notice("received SIGUSR1: no access log file to reopen");
		return;
	}
	log_notice("received SIGUSR1: reopening the access log %s", a->path);
	pthread_mutex_lock(&a->mu);
	a->reopen = 1;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

/* At exit: what is queued is written, within ACCESSLOG_STOP_SECONDS. */
void
accesslog_stop(void)
{
	struct accesslog *a = &rt.alog;
	struct timespec ts;

	if (!a->running)
		return;
	pthread_mutex_lock(&a->mu);
	a->stop = 1;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ACCESSLOG_STOP_SECONDS;
	if (pthread_timedjoin_np(a->thread, NULL, &ts) != 0) {
		log_warn("access log: the writer is stuck; %zu bytes not "
		         "written",
		    a->queue_len + a->writing);
		return;
	}
	a->running = 0;
	free(a->queue);
	free(a->spare);
	free(a->path);
	a->queue = a->spare = a->path = NULL;
}

int
accesslog_enabled(void)
{
	return rt.alog.running && strcmp(rt.cfg->access_log, "off") != 0;
}

uint64_t
accesslog_dropped(void)
{
	uint64_t n;

	if (!rt.alog.running)
		return rt.alog.dropped;
	pthread_mutex_lock(&rt.alog.mu);
	n = rt.alog.dropped;
	pthread_mutex_unlock(&rt.alog.mu);
	return n;
}

/* Queues a whole line, or drops it; never waits for the writer. */
static void
accesslog_queue(const char *line, size_t len)
{
	struct accesslog *a = &rt.alog;
	size_t cap;
	int warn = 0;

	pthread_mutex_lock(&a->mu);
	if (a->queue_len + a->writing + len > ACCESSLOG_QUEUE_MAX) {
		a->dropped++;
		warn = !a->dropping;
		a->dropping = 1;
	} else {
		if (a->queue_len + len > a->queue_cap) {
			cap = a->queue_cap ? a->queue_cap : 16384;
			while (cap < a->queue_len + len)
				cap *= 2;
			if (cap > ACCESSLOG_QUEUE_MAX)
				cap = ACCESSLOG_QUEUE_MAX;
			a->queue = xrealloc(a->queue, cap);
			a->queue_cap = cap;
		}
		memcpy(a->queue + a->queue_len, line, len);
		a->queue_len += len;
		a->dropping = 0;
		pthread_cond_signal(&a->cv);
	}
	pthread_mutex_unlock(&a->mu);
	if (warn)
		log_warn("access log: %d bytes wait for the disk; dropping "
		         "lines until it catches up "
		         "(ollama_pool_access_log_dropped_total)",
		    ACCESSLOG_QUEUE_MAX);
}

/* ---- formatting ------------------------------------------------------- */

struct alog_line {
	char *p;
	size_t len, cap;
};

static void
alog_add(struct alog_line *l, const char *s, size_t n)
{
	if (n > l->cap - l->len)
		n = l->cap - l->len;
	memcpy(l->p + l->len, s, n);
	l->len += n;
}

static void alog_printf(struct alog_line *l, const char *fmt, ...)
    PRINTFLIKE(2, 3);

static void
alog_printf(struct alog_line *l, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (l->len == l->cap)
		return;
	va_start(ap, fmt);
	n = vsnprintf(l->p + l->len, l->cap - l->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		l->len += (size_t)n < l->cap - l->len ? (size_t)n
		                                      : l->cap - l->len - 1;
}

/* The length of the valid UTF-8 sequence at p, or 0. */
static size_t
alog_utf8_len(const unsigned char *p, size_t n)
{
	size_t need, i;

	if (p[0] < 0xc2 || p[0] > 0xf4)
		return 0;
	need = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : 2;
	if (n < need)
		return 0;
	for (i = 1; i < need; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] >= 0xa0) ||
	    (p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] >= 0x90))
		return 0;
	return need;
}

/*
 * A JSON string, or null for NULL: quotes, backslashes and controls
 * escaped, valid UTF-8 kept, any other byte as the Latin-1 character it
 * would be (\u00XX), so the line is valid JSON whatever the client sent.
 * At most max bytes of output, cut between characters.
 */
static void
alog_json_str(struct alog_line *l, const char *s, size_t n, size_t max)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, u, start = l->len;
	char esc[8];

	if (s == NULL) {
		alog_add(l, "null", 4);
		return;
	}
	alog_add(l, "\"", 1);
	while (i < n && l->len - start + 8 < max) {
		if (p[i] == '"' || p[i] == '\\') {
			esc[0] = '\\';
			esc[1] = (char)p[i++];
			alog_add(l, esc, 2);
		} else if (p[i] >= 0x20 && p[i] < 0x7f) {
			alog_add(l, (const char *)p + i++, 1);
		} else if (p[i] >= 0x80 && (u = alog_utf8_len(p + i, n - i))) {
			alog_add(l, (const char *)p + i, u);
			i += u;
		} else {
			snprintf(esc, sizeof esc, "\\u%04x", p[i++]);
			alog_add(l, esc, 6);
		}
	}
	alog_add(l, "\"", 1);
}

/* Text of the combined format, escaped as nginx does: quotes, backslashes
 * and bytes outside printable ASCII as \xXX. */
static void
alog_escaped(struct alog_line *l, const char *s, size_t n, size_t max)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i, start = l->len;
	char esc[8];

	for (i = 0; i < n && l->len - start + 4 < max; i++) {
		if (p[i] == '"' || p[i] == '\\' || p[i] < 0x20 ||
		    p[i] >= 0x7f) {
			snprintf(esc, sizeof esc, "\\x%02X", p[i]);
			alog_add(l, esc, 4);
		} else
			alog_add(l, (const char *)p + i, 1);
	}
}

/* A quoted field of the combined format; "-" when empty. */
static void
alog_quoted(struct alog_line *l, const char *s, size_t n, size_t max)
{
	if (s == NULL || n == 0) {
		alog_add(l, "\"-\"", 3);
		return;
	}
	alog_add(l, "\"", 1);
	alog_escaped(l, s, n, max);
	alog_add(l, "\"", 1);
}

static void
alog_json_key_str(
    struct alog_line *l, const char *key, const char *v, size_t n, size_t max)
{
	alog_printf(l, ",\"%s\":", key);
	alog_json_str(l, v, n, max);
}

static size_t
alog_len(const char *s)
{
	return s != NULL ? strlen(s) : 0;
}

static void
accesslog_format_json(
    struct alog_line *l, const struct access_rec *r, const char *when)
{
	alog_printf(l, "{\"time\":\"%s\",\"client\":", when);
	alog_json_str(l, r->client, alog_len(r->client), ACCESSLOG_TEXT_OUT);
	alog_json_key_str(
	    l, "method", r->method, alog_len(r->method), ACCESSLOG_TEXT_OUT);
	alog_json_key_str(l, "path", r->path, r->path_len, ACCESSLOG_PATH_OUT);
	alog_printf(l,
	    ",\"status\":%d,\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64
	    ",\"duration_ms\":%.3f,\"ttfb_ms\":",
	    r->status, r->bytes_in, r->bytes_out, r->duration * 1e3);
	if (r->ttfb >= 0)
		alog_printf(l, "%.3f", r->ttfb * 1e3);
	else
		alog_add(l, "null", 4);
	alog_json_key_str(
	    l, "model", r->model, alog_len(r->model), ACCESSLOG_TEXT_OUT);
	alog_json_key_str(
	    l, "backend", r->backend, alog_len(r->backend), ACCESSLOG_TEXT_OUT);
	alog_printf(l, ",\"retries\":%d", r->retries);
	alog_json_key_str(l, "request_id", r->request_id,
	    alog_len(r->request_id), ACCESSLOG_TEXT_OUT);
	alog_json_key_str(l, "user_agent", r->user_agent,
	    alog_len(r->user_agent), ACCESSLOG_TEXT_OUT);
	alog_printf(l, ",\"end\":\"%s\"}\n", accesslog_end_name(r->end));
}

/*
 * client - - [01/Dec/2026:07:41:10 +0000] "GET /api/tags HTTP/1.1" 200 96
 * "referer" "user agent" rt=0.012 rid=ID: Apache's and nginx's combined
 * format, the client without its port, and two fields after it.
 */
static void
accesslog_format_combined(
    struct alog_line *l, const struct access_rec *r, time_t t)
{
	const char *c = r->client != NULL ? r->client : "-";
	size_t clen = strlen(c);
	const char *colon = strrchr(c, ':');
	char when[64];
	struct tm tm;

	if (colon != NULL && strncmp(c, "unix", 4) != 0)
		clen = (size_t)(colon - c);
	if (clen > 2 && c[0] == '[' && c[clen - 1] == ']') {
		c++;
		clen -= 2;
	}
	gmtime_r(&t, &tm);
	strftime(when, sizeof when, "%d/%b/%Y:%H:%M:%S +0000", &tm);
	alog_add(l, c, clen < 256 ? clen : 256);
	alog_printf(l, " - - [%s] \"", when);
	if (r->method != NULL && r->path != NULL) {
		alog_escaped(l, r->method, strlen(r->method), 64);
		alog_add(l, " ", 1);
		alog_escaped(l, r->path, r->path_len, ACCESSLOG_PATH_OUT);
		alog_printf(l, " HTTP/1.%d\"", r->http10 ? 0 : 1);
	} else
		alog_add(l, "-\"", 2);
	alog_printf(l, " %d %" PRIu64 " ", r->status, r->bytes_out);
	alog_quoted(l, r->referer, alog_len(r->referer), ACCESSLOG_TEXT_OUT);
	alog_add(l, " ", 1);
	alog_quoted(
	    l, r->user_agent, alog_len(r->user_agent), ACCESSLOG_TEXT_OUT);
	alog_printf(l, " rt=%.3f rid=%s\n", r->duration,
	    r->request_id != NULL ? r->request_id : "-");
}

void
accesslog_write(const struct access_rec *r)
{
	char buf[ACCESSLOG_LINE_MAX], when[LOG_TIME_MAX];
	struct alog_line l = {buf, 0, sizeof buf};
	struct timespec ts;
	double start;

	if (!accesslog_enabled())
		return;
	/* The time the request began: now, less its duration. */
	clock_gettime(CLOCK_REALTIME, &ts);
	start = (double)ts.tv_sec + ts.tv_nsec / 1e9 - r->duration;
	ts.tv_sec = (time_t)start;
	ts.tv_nsec = (long)((start - (double)ts.tv_sec) * 1e9);
	if (rt.log_journal && rt.alog.to_stderr)
		alog_add(&l, "<6>", 3);
	if (rt.cfg->access_log_format == ACCESSLOG_COMBINED)
		accesslog_format_combined(&l, r, ts.tv_sec);
	else {
		log_format_time(when, sizeof when, &ts);
		accesslog_format_json(&l, r, when);
	}
	if (l.len == l.cap)
		l.p[l.len - 1] = '\n'; /* cannot happen: fields are bounded */
	accesslog_queue(l.p, l.len);
}
