/*
 * Tests for ollama-pool as a systemd service, with no running systemd:
 * the unit files checked by systemd-analyze, the manual pages, socket
 * activation through systemd-socket-activate, the sd_notify protocol read
 * from a datagram socket the test owns, reload, drain and the log format.
 *
 * The daemon is started here rather than by harness_daemon_start(): these
 * tests need its environment (JOURNAL_STREAM, WATCHDOG_USEC), a wrapper
 * (systemd-socket-activate) and a command line without -l and -u, so that
 * a reload can change the listen address and the upstream.  Everything
 * else (the fakes, HTTP, raw sockets) is the shared harness.
 *
 * Synchronisation is always on an event: a notify datagram, a line in the
 * daemon's log (inotify), a response, a process exit.  Every wait has a
 * bound.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <regex.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <cjson/cJSON.h>

#include "harness.h"

#define MODEL "llama3.2"
#define SVC_MAX 8
#define SVC_LOG_TAIL 6000
/* A generation that outlives any test: a million tokens. */
#define SVC_ENDLESS (-1L)

/* ---- processes started here ------------------------------------------- */

static struct harness_daemon *svc_procs[SVC_MAX];
static int svc_nprocs;

/* The tail of every daemon log, printed before a failure is reported (the
 * harness prints the fakes'). */
static void
svc_dump(void)
{
	size_t len;
	char *text;
	int i;

	for (i = 0; i < svc_nprocs; i++) {
		if (svc_procs[i] == NULL)
			continue;
		text = harness_slurp(svc_procs[i]->proc.log_path, &len);
		fprintf(stderr, "---- %s (tail of %s) ----\n%s\n",
		    svc_procs[i]->proc.label, svc_procs[i]->proc.log_path,
		    len > SVC_LOG_TAIL ? text + len - SVC_LOG_TAIL : text);
		free(text);
	}
	fflush(stderr);
}

#define S_ASSERT(cond, ...)                                                    \
	do {                                                                   \
		if (!(cond)) {                                                 \
			svc_dump();                                            \
			H_ASSERT(0, __VA_ARGS__);                              \
		}                                                              \
	} while (0)

/* A program on $PATH, as an absolute path, or NULL. */
static const char *
svc_which(const char *name)
{
	const char *path = getenv("PATH");
	char *copy, *dir, *save, *cand;

	if (path == NULL || *path == '\0')
		path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
	copy = harness_strf("%s", path);
	for (dir = strtok_r(copy, ":", &save); dir != NULL;
	     dir = strtok_r(NULL, ":", &save)) {
		cand = harness_strf("%s/%s", *dir ? dir : ".", name);
		if (access(cand, X_OK) == 0)
			return cand;
	}
	return NULL;
}

static const char *
svc_need(const char *name, const char *package)
{
	const char *p = svc_which(name);

	H_ASSERT(p != NULL,
	    "%s is not installed (Debian package %s); the "
	    "service tests need it",
	    name, package);
	return p;
}

/* The source tree, for the unit templates. */
static const char *
svc_top_srcdir(void)
{
	const char *v = getenv("TOP_SRCDIR");
	char exe[4096], *slash, *dir;
	ssize_t n;

	if (v != NULL && *v != '\0')
		return v;
	v = getenv("TEST_SRCDIR");
	if (v != NULL && *v != '\0')
		return harness_strf("%s/..", v);
	/* Run by hand in a build inside the source tree. */
	n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n > 0) {
		exe[n] = '\0';
		if ((slash = strrchr(exe, '/')) != NULL)
			*slash = '\0';
		dir = harness_strf("%s/..", exe);
		if (access(
		        harness_strf("%s/systemd/ollama-pool.service.in", dir),
		        R_OK) == 0)
			return dir;
	}
	ck_abort_msg("TOP_SRCDIR is not set (make check sets it)");
	return NULL;
}

/* The build tree, for what the build makes from templates: the manual
 * pages. */
static const char *
svc_top_builddir(void)
{
	const char *v = getenv("TOP_BUILDDIR");
	char exe[4096], *slash;
	ssize_t n;

	if (v != NULL && *v != '\0')
		return v;
	/* Run by hand: the test program sits in the build tree's tests/. */
	n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n <= 0)
		ck_abort_msg("TOP_BUILDDIR is not set (make check sets it)");
	exe[n] = '\0';
	if ((slash = strrchr(exe, '/')) != NULL)
		*slash = '\0';
	return harness_strf("%s/..", exe);
}

struct svc_opts {
	const char *conf; /* the configuration file's text */
	const char *const *args; /* daemon arguments after -c FILE */
	const char *const *env; /* NAME=VALUE, set for the daemon */
	int watchdog_pid; /* WATCHDOG_PID = the daemon's pid */
	const char *const *activate; /* systemd-socket-activate options;
	                              * NULL runs the daemon directly */
	int no_wait_ready; /* do not wait for READY=1 */
};

static int
svc_pidfd_open(pid_t pid)
{
#ifdef SYS_pidfd_open
	return (int)syscall(SYS_pidfd_open, pid, 0);
#else
	(void)pid;
	return -1;
#endif
}

/*
 * Starts `ollama-pool -c CONF ARGS...` (under systemd-socket-activate when
 * opts->activate is set) with NOTIFY_SOCKET on a datagram socket of ours,
 * stdout and stderr in tests/logs/TEST.daemon.log and nothing else in the
 * log, so the test can read the daemon's lines exactly.
 */
static struct harness_daemon *
svc_start(const struct svc_opts *o)
{
	const char *argv[64];
	struct harness_daemon *d;
	struct sockaddr_un sun;
	sigset_t none;
	pid_t parent;
	char *dir;
	int argc = 0, i, logfd, devnull;

	H_ASSERT(svc_nprocs < SVC_MAX, "too many daemons in one test");
	d = calloc(1, sizeof *d);
	if (d == NULL)
		ck_abort_msg("out of memory");
	snprintf(d->proc.label, sizeof d->proc.label, "daemon%s",
	    svc_nprocs ? harness_strf("%d", svc_nprocs + 1) : "");
	d->proc.pidfd = d->proc.stdout_fd = -1;

	dir = harness_tmpdir();
	snprintf(d->dir, sizeof d->dir, "%s", dir);
	snprintf(d->conf_path, sizeof d->conf_path, "%s",
	    harness_write_file(dir, "ollama-pool.conf", o->conf));
	snprintf(d->notify_path, sizeof d->notify_path, "%s/notify", dir);
	H_ASSERT(strlen(d->notify_path) < sizeof sun.sun_path,
	    "notify path too long: %s", d->notify_path);
	d->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	H_ASSERT(d->notify_fd >= 0, "socket: %s", strerror(errno));
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, d->notify_path, strlen(d->notify_path) + 1);
	H_ASSERT(bind(d->notify_fd, (struct sockaddr *)&sun, sizeof sun) == 0,
	    "bind %s: %s", d->notify_path, strerror(errno));

	if (o->activate != NULL) {
		argv[argc++] = svc_need("systemd-socket-activate", "systemd");
		for (i = 0; o->activate[i] != NULL; i++)
			argv[argc++] = o->activate[i];
		/* It hands the child only what -E names. */
		argv[argc++] = "-E";
		argv[argc++] = "NOTIFY_SOCKET";
		for (i = 0; o->env != NULL && o->env[i] != NULL; i++) {
			argv[argc++] = "-E";
			argv[argc++] = o->env[i];
		}
	}
	argv[argc++] = harness_daemon_bin();
	argv[argc++] = "-c";
	argv[argc++] = d->conf_path;
	for (i = 0; o->args != NULL && o->args[i] != NULL && argc < 60; i++)
		argv[argc++] = o->args[i];
	argv[argc] = NULL;

	snprintf(d->proc.log_path, sizeof d->proc.log_path, "%s/%s.%s.log",
	    harness_log_dir(), harness_test_name(), d->proc.label);
	logfd = open(d->proc.log_path,
	    O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
	H_ASSERT(logfd >= 0, "open %s: %s", d->proc.log_path, strerror(errno));
	/* The command line and the file go to the test's own output. */
	fprintf(stderr, "%s:", d->proc.label);
	for (i = 0; i < argc; i++)
		fprintf(stderr, " %s", argv[i]);
	fprintf(
	    stderr, "\n%s: %s:\n%s\n", d->proc.label, d->conf_path, o->conf);

	parent = getpid();
	fflush(NULL);
	d->proc.pid = fork();
	H_ASSERT(d->proc.pid >= 0, "fork: %s", strerror(errno));
	if (d->proc.pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		devnull = open("/dev/null", O_RDONLY);
		if (devnull > 0) {
			dup2(devnull, 0);
			close(devnull);
		}
		dup2(logfd, 1);
		dup2(logfd, 2);
#ifdef SYS_close_range
		syscall(SYS_close_range, 3U, ~0U, 0U);
#endif
		signal(SIGPIPE, SIG_DFL);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		/* Nothing of the environment make check runs in. */
		unsetenv("LISTEN_FDS");
		unsetenv("LISTEN_PID");
		unsetenv("LISTEN_FDNAMES");
		unsetenv("WATCHDOG_USEC");
		unsetenv("WATCHDOG_PID");
		unsetenv("JOURNAL_STREAM");
		setenv("NOTIFY_SOCKET", d->notify_path, 1);
		for (i = 0; o->env != NULL && o->env[i] != NULL; i++)
			putenv((char *)o->env[i]);
		/* libsystemd honours WATCHDOG_USEC only in the process
		 * WATCHDOG_PID names; exec keeps our pid. */
		if (o->watchdog_pid)
			setenv("WATCHDOG_PID",
			    harness_strf("%d", (int)getpid()), 1);
		execv(argv[0], (char *const *)argv);
		dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(logfd);
	d->proc.pidfd = svc_pidfd_open(d->proc.pid);
	svc_procs[svc_nprocs++] = d;

	if (!o->no_wait_ready) {
		i = harness_notify_wait(d, "READY=1", HARNESS_READY_MS);
		S_ASSERT(i == 1,
		    "%s: no READY=1 within %d ms (%s; wait status "
		    "0x%x)",
		    d->proc.label, HARNESS_READY_MS,
		    i < 0 ? "it exited" : "timed out", d->proc.wstatus);
	}
	return d;
}

/* Waits up to timeout_ms for the daemon to exit; 1 when it has. */
static int
svc_wait_exit(struct harness_daemon *d, int timeout_ms)
{
	struct pollfd pfd;
	double deadline = harness_now() + timeout_ms / 1000.0;
	int left;

	for (;;) {
		if (!harness_proc_alive(&d->proc))
			return 1;
		left = (int)((deadline - harness_now()) * 1000.0);
		if (left <= 0)
			return 0;
		if (d->proc.pidfd >= 0) {
			pfd.fd = d->proc.pidfd;
			pfd.events = POLLIN;
			pfd.revents = 0;
			poll(&pfd, 1, left);
		} else {
			poll(NULL, 0, left < 20 ? left : 20);
		}
	}
}

static void
svc_signal(struct harness_daemon *d, int sig)
{
	S_ASSERT(harness_proc_alive(&d->proc),
	    "%s died before signal %d "
	    "(wait status 0x%x)",
	    d->proc.label, sig, d->proc.wstatus);
	if (sig == SIGTERM || sig == SIGINT || sig == SIGKILL)
		d->proc.signalled = 1;
	H_ASSERT(kill(d->proc.pid, sig) == 0, "kill: %s", strerror(errno));
}

/* Stops the daemon the way systemd does and checks it exits 0. */
static void
svc_stop_clean(struct harness_daemon *d)
{
	svc_signal(d, SIGTERM);
	S_ASSERT(svc_wait_exit(d, 10000),
	    "%s did not exit within 10 s of "
	    "SIGTERM",
	    d->proc.label);
	S_ASSERT(
	    WIFEXITED(d->proc.wstatus) && WEXITSTATUS(d->proc.wstatus) == 0,
	    "%s: wait status 0x%x after "
	    "SIGTERM, want exit 0",
	    d->proc.label, d->proc.wstatus);
}

static void
svc_teardown(void)
{
	char problems[1024];
	struct harness_daemon *d;
	size_t off = 0;
	int i;

	problems[0] = '\0';
	for (i = svc_nprocs - 1; i >= 0; i--) {
		d = svc_procs[i];
		if (d == NULL)
			continue;
		if (d->proc.pid > 0 && harness_proc_alive(&d->proc)) {
			kill(d->proc.pid, SIGKILL);
			svc_wait_exit(d, 5000);
		} else if (!d->proc.signalled && off < sizeof problems) {
			off += (size_t)snprintf(problems + off,
			    sizeof problems - off,
			    "%s (pid %d) died during "
			    "the test (wait status 0x%x); ",
			    d->proc.label, (int)d->proc.pid, d->proc.wstatus);
		}
		if (d->proc.pidfd >= 0)
			close(d->proc.pidfd);
		if (d->notify_fd >= 0)
			close(d->notify_fd);
	}
	if (problems[0] != '\0')
		svc_dump();
	for (i = 0; i < svc_nprocs; i++)
		free(svc_procs[i]);
	svc_nprocs = 0;
	harness_teardown();
	H_ASSERT(problems[0] == '\0', "%s", problems);
}

/* ---- notify datagrams ------------------------------------------------- */

static int
svc_has_line(const char *msg, const char *want)
{
	size_t wlen = strlen(want);
	const char *p = msg, *nl;

	while (*p != '\0') {
		nl = strchr(p, '\n');
		if (nl == NULL)
			nl = p + strlen(p);
		if ((size_t)(nl - p) == wlen && memcmp(p, want, wlen) == 0)
			return 1;
		p = *nl ? nl + 1 : nl;
	}
	return 0;
}

/* The value of the first NAME= line, up to the end of the line. */
static const char *
svc_line_value(const char *msg, const char *name, char *out, size_t len)
{
	size_t nlen = strlen(name);
	const char *p = msg, *nl;

	while (*p != '\0') {
		nl = strchr(p, '\n');
		if (nl == NULL)
			nl = p + strlen(p);
		if ((size_t)(nl - p) >= nlen && memcmp(p, name, nlen) == 0) {
			snprintf(
			    out, len, "%.*s", (int)(nl - p - nlen), p + nlen);
			return out;
		}
		p = *nl ? nl + 1 : nl;
	}
	return NULL;
}

/* The next datagram: 1 got one, 0 timed out, -1 the daemon exited and
 * nothing is left to read. */
static int
svc_notify_next(struct harness_daemon *d, int timeout_ms, char *msg, size_t len)
{
	double deadline = harness_now() + timeout_ms / 1000.0;
	struct pollfd pfd[2];
	ssize_t n;
	int left, nfds;

	for (;;) {
		n = recv(d->notify_fd, msg, len - 1, MSG_DONTWAIT);
		if (n >= 0) {
			msg[n] = '\0';
			return 1;
		}
		if (!harness_proc_alive(&d->proc))
			return -1;
		left = (int)((deadline - harness_now()) * 1000.0);
		if (left <= 0)
			return 0;
		pfd[0].fd = d->notify_fd;
		pfd[0].events = POLLIN;
		pfd[0].revents = 0;
		pfd[1].fd = d->proc.pidfd;
		pfd[1].events = POLLIN;
		pfd[1].revents = 0;
		nfds = d->proc.pidfd >= 0 ? 2 : 1;
		poll(pfd, (nfds_t)nfds,
		    nfds == 2 ? left : (left < 50 ? left : 50));
	}
}

/* Reads datagrams until one holds the line; copies it to msg.  1, 0 on a
 * timeout, -1 when the daemon exited first. */
static int
svc_notify_until(struct harness_daemon *d, const char *line, int timeout_ms,
    char *msg, size_t len)
{
	double deadline = harness_now() + timeout_ms / 1000.0;
	int left, rc;

	for (;;) {
		left = (int)((deadline - harness_now()) * 1000.0);
		rc = svc_notify_next(d, left > 0 ? left : 0, msg, len);
		if (rc != 1)
			return rc;
		if (svc_has_line(msg, line))
			return 1;
	}
}

/* ---- the daemon's log ------------------------------------------------- */

/* Waits until a log file holds `needle`; 1, or 0 after timeout_ms. */
static int
svc_file_wait(const char *path, const char *needle, int timeout_ms)
{
	return harness_file_wait(path, needle, timeout_ms);
}

/* The same for the daemon's log. */
static int
svc_log_wait(struct harness_daemon *d, const char *needle, int timeout_ms)
{
	return svc_file_wait(d->proc.log_path, needle, timeout_ms);
}

static char *
svc_log(struct harness_daemon *d)
{
	char *text = harness_slurp(d->proc.log_path, NULL), *copy;

	copy = harness_strf("%s", text);
	free(text);
	return copy;
}

/* ---- clients ---------------------------------------------------------- */

static char *
svc_url(int port, const char *path)
{
	return harness_strf("http://127.0.0.1:%d%s", port, path);
}

/* GET on a fresh connection; checks 200 and returns who answered (the
 * fake's X-Fake-Name). */
static const char *
svc_get_name(int port, const char *path)
{
	struct http_resp r;
	const char *name;
	char *copy;

	http_get(svc_url(port, path), &r);
	S_ASSERT(r.ok && r.status == 200, "GET %s on port %d: %ld %s %.200s",
	    path, port, r.status, r.error, r.body.data ? r.body.data : "");
	name = http_header_get(&r, "X-Fake-Name");
	copy = harness_strf("%s", name != NULL ? name : "(none)");
	http_resp_free(&r);
	return copy;
}

static char *
svc_generate_body(long n, int interval_ms)
{
	return harness_strf(
	    "{\"model\":\"" MODEL "\",\"prompt\":\"p\","
	    "\"options\":{\"num_predict\":%ld},\"fake_interval_ms\":%d}",
	    n, interval_ms);
}

/* Sends a streamed generate on a raw connection and returns once the
 * response has begun, so the request is surely at the upstream. */
static void
svc_stream_start(struct http_conn *c, int port, long n, int interval_ms)
{
	char *body, *req;

	body = svc_generate_body(n, interval_ms);
	req = harness_strf(
	    "POST /api/generate HTTP/1.1\r\nHost: test\r\n"
	    "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
	    strlen(body), body);
	http_conn_open(c, port);
	H_ASSERT(
	    http_conn_sendstr(c, req, 10000) == 0, "send: %s", strerror(errno));
	S_ASSERT(http_conn_wait_readable(c, 10000) == 1,
	    "the stream did not begin within 10 s");
}

/* Reads the rest of a stream started by svc_stream_start and checks it
 * is whole: n tokens and the final line, from the named fake. */
static void
svc_stream_finish(struct http_conn *c, long n, const char *from,
    const char *what, struct http_resp *r)
{
	size_t lines;

	http_conn_read_response(c, 0, 30000, r);
	S_ASSERT(r->ok, "%s: the stream was cut: %s (%zu bytes: %.300s)", what,
	    r->error, r->body.len, r->body.data ? r->body.data : "");
	S_ASSERT(r->status == 200, "%s: status %ld", what, r->status);
	lines = http_count_lines(&r->body);
	S_ASSERT(lines == (size_t)n + 1,
	    "%s: %zu lines, want %ld tokens and "
	    "the final line: %.400s",
	    what, lines, n, r->body.data);
	S_ASSERT(strstr(r->body.data, "\"done\":true") != NULL,
	    "%s: no final line: %.400s", what, r->body.data);
	if (from != NULL) {
		S_ASSERT(http_header_get(r, "X-Fake-Name") != NULL &&
		        strcmp(http_header_get(r, "X-Fake-Name"), from) == 0,
		    "%s: answered by %s, want %s", what,
		    http_header_get(r, "X-Fake-Name")
		        ? http_header_get(r, "X-Fake-Name")
		        : "(none)",
		    from);
	}
}

static char *
svc_conf(int listen_port, const struct harness_fake *up, const char *extra)
{
	return harness_strf("[server]\nlisten = 127.0.0.1:%d\n%s"
	                    "[upstream]\nurl = %s\n",
	    listen_port, extra != NULL ? extra : "", harness_upstream_of(up));
}

/* Rewrites the file and sends SIGHUP; returns once RELOADING=1 came. */
static void
svc_reload_begin(struct harness_daemon *d, const char *conf)
{
	char msg[1024];

	harness_write_file(d->dir, "ollama-pool.conf", conf);
	svc_signal(d, SIGHUP);
	S_ASSERT(
	    svc_notify_until(d, "RELOADING=1", 10000, msg, sizeof msg) == 1,
	    "no RELOADING=1 after SIGHUP");
}

/* Rewrites the file and reloads; returns the datagram with RELOADING=1
 * after checking READY=1 followed it. */
static void
svc_reload(struct harness_daemon *d, const char *conf, char *msg, size_t len)
{
	char other[1024];

	harness_write_file(d->dir, "ollama-pool.conf", conf);
	svc_signal(d, SIGHUP);
	S_ASSERT(svc_notify_until(d, "RELOADING=1", 10000, msg, len) == 1,
	    "no RELOADING=1 after SIGHUP");
	S_ASSERT(
	    svc_notify_until(d, "READY=1", 10000, other, sizeof other) == 1,
	    "no READY=1 after RELOADING=1");
}

/* ---- the unit files --------------------------------------------------- */

static char *
svc_read_src(const char *rel)
{
	char *path = harness_strf("%s/%s", svc_top_srcdir(), rel), *text;
	struct stat st;

	H_ASSERT(stat(path, &st) == 0, "%s: %s", path, strerror(errno));
	text = harness_slurp(path, NULL);
	path = harness_strf("%s", text);
	free(text);
	return path;
}

/* A file the build made, as svc_read_src() reads the source tree's. */
static char *
svc_read_built(const char *rel)
{
	char *path = harness_strf("%s/%s", svc_top_builddir(), rel);
	char *text = harness_read_file(path, NULL);

	H_ASSERT(text != NULL, "%s: %s", path, strerror(errno));
	return text;
}

/* Replaces every occurrence of from by to. */
static char *
svc_subst(const char *text, const char *from, const char *to)
{
	struct harness_buf b = {NULL, 0, 0};
	const char *p = text, *q;
	char *s;

	harness_buf_add(&b, "", 0);
	while ((q = strstr(p, from)) != NULL) {
		harness_buf_add(&b, p, (size_t)(q - p));
		harness_buf_add(&b, to, strlen(to));
		p = q + strlen(from);
	}
	harness_buf_add(&b, p, strlen(p));
	s = harness_strf("%s", b.data);
	harness_buf_free(&b);
	return s;
}

/*
 * The units as make install writes them, with the build's binary for
 * @sbindir@/ollama-pool (systemd-analyze wants ExecStart= to exist) and a
 * scratch @sysconfdir@, in a directory of their own.
 */
static char *
svc_units_dir(char **service_text, char **socket_text)
{
	char *dir, *svc, *sock, *etc;
	regex_t re;

	dir = harness_tmpdir();
	etc = harness_strf("%s", harness_tmpdir());
	svc = svc_read_src("systemd/ollama-pool.service.in");
	svc = svc_subst(svc, "@sbindir@/ollama-pool", harness_daemon_bin());
	svc = svc_subst(svc, "@sysconfdir@", etc);
	H_ASSERT(regcomp(&re, "@[A-Za-z_]+@", REG_EXTENDED | REG_NOSUB) == 0,
	    "regcomp");
	H_ASSERT(regexec(&re, svc, 0, NULL, 0) != 0,
	    "ollama-pool.service.in has a placeholder the build does not "
	    "fill: %s",
	    svc);
	regfree(&re);
	sock = svc_read_src("systemd/ollama-pool.socket");
	harness_write_file(dir, "ollama-pool.service", svc);
	harness_write_file(dir, "ollama-pool.socket", sock);
	if (service_text != NULL)
		*service_text = svc;
	if (socket_text != NULL)
		*socket_text = sock;
	return dir;
}

/* The value of `Key=` in a unit's text (the last one, as systemd reads
 * it, unless it is a list), or NULL. */
static const char *
svc_unit_value(const char *text, const char *key, char *out, size_t len)
{
	const char *p = text, *nl, *found = NULL;
	size_t klen = strlen(key);
	int n = 0;

	while (*p != '\0') {
		nl = strchr(p, '\n');
		if (nl == NULL)
			nl = p + strlen(p);
		if ((size_t)(nl - p) > klen && memcmp(p, key, klen) == 0 &&
		    p[klen] == '=') {
			found = p + klen + 1;
			n = (int)(nl - found);
		}
		p = *nl ? nl + 1 : nl;
	}
	if (found == NULL)
		return NULL;
	snprintf(out, len, "%.*s", n, found);
	return out;
}

static double
svc_seconds(const char *v)
{
	char *end;
	double x = strtod(v, &end);

	if (strcmp(end, "min") == 0)
		return x * 60;
	if (strcmp(end, "ms") == 0)
		return x / 1000;
	return x; /* "", "s" */
}

/* What `ollama-pool -t` prints for a key with no file: its default. */
static const char *
svc_default(const char *key, char *out, size_t len)
{
	struct harness_run run;
	const char *argv[3];
	const char *p;
	size_t klen = strlen(key);

	argv[0] = harness_daemon_bin();
	argv[1] = "-t";
	argv[2] = NULL;
	harness_run(argv, 10000, &run);
	H_ASSERT(!run.timed_out && WIFEXITED(run.wstatus) &&
	        WEXITSTATUS(run.wstatus) == 0,
	    "ollama-pool -t: 0x%x %s", run.wstatus, run.err.data);
	for (p = run.out.data; p != NULL && *p != '\0';) {
		if (strncmp(p, key, klen) == 0 &&
		    strncmp(p + klen, " = ", 3) == 0) {
			snprintf(out, len, "%.*s",
			    (int)strcspn(p + klen + 3, "\n"), p + klen + 3);
			harness_run_free(&run);
			return out;
		}
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	harness_run_free(&run);
	ck_abort_msg("ollama-pool -t does not print %s", key);
	return NULL;
}

START_TEST(test_units_verify)
{
	const char *argv[8], *analyze;
	struct harness_run run;
	char *dir, *svc, *sock, v[256], *p, *doc, *page;
	double stop, drain;

	H_BEGIN();
	analyze = svc_need("systemd-analyze", "systemd");
	dir = svc_units_dir(&svc, &sock);

	/* Offline: no running systemd needed.  Documentation= is checked
	 * below against the pages in the tree instead of man(1). */
	argv[0] = analyze;
	argv[1] = "verify";
	argv[2] = "--man=no";
	argv[3] = harness_strf("%s/ollama-pool.service", dir);
	argv[4] = harness_strf("%s/ollama-pool.socket", dir);
	argv[5] = NULL;
	harness_run(argv, 30000, &run);
	H_ASSERT(!run.timed_out && WIFEXITED(run.wstatus) &&
	        WEXITSTATUS(run.wstatus) == 0,
	    "systemd-analyze verify: status "
	    "0x%x\nstdout: %s\nstderr: %s",
	    run.wstatus, run.out.data, run.err.data);
	H_ASSERT(strstr(run.out.data, "ollama-pool") == NULL &&
	        strstr(run.err.data, "ollama-pool") == NULL,
	    "systemd-analyze verify complains:\n%s%s", run.out.data,
	    run.err.data);
	harness_run_free(&run);

	/* What the issue asks of the service. */
	H_ASSERT(svc_unit_value(svc, "Type", v, sizeof v) != NULL &&
	        strcmp(v, "notify") == 0,
	    "Type=%s, want notify (notify-reload "
	    "needs systemd 253)",
	    v);
	H_ASSERT(svc_unit_value(svc, "ExecReload", v, sizeof v) != NULL &&
	        strcmp(v, "/bin/kill -HUP $MAINPID") == 0,
	    "ExecReload=%s", v);
	H_ASSERT(svc_unit_value(svc, "ExecStart", v, sizeof v) != NULL &&
	        strncmp(v, harness_daemon_bin(),
	            strlen(harness_daemon_bin())) == 0 &&
	        strstr(v, " -c ") != NULL &&
	        strstr(v, "/ollama-pool.conf") != NULL,
	    "ExecStart=%s", v);
	H_ASSERT(svc_unit_value(svc, "Restart", v, sizeof v) != NULL &&
	        strcmp(v, "on-failure") == 0,
	    "Restart=%s", v);
	H_ASSERT(svc_unit_value(svc, "WatchdogSec", v, sizeof v) != NULL &&
	        svc_seconds(v) > 0,
	    "WatchdogSec= must be set");
	H_ASSERT(svc_unit_value(svc, "LimitNOFILE", v, sizeof v) != NULL &&
	        strcmp(v, "65536") == 0,
	    "LimitNOFILE=%s", v);
	H_ASSERT(svc_unit_value(svc, "UMask", v, sizeof v) != NULL &&
	        strcmp(v, "0077") == 0,
	    "UMask=%s", v);
	H_ASSERT(svc_unit_value(svc, "DynamicUser", v, sizeof v) != NULL &&
	        strcmp(v, "yes") == 0,
	    "DynamicUser=%s", v);
	H_ASSERT(
	    svc_unit_value(svc, "CapabilityBoundingSet", v, sizeof v) != NULL &&
	        v[0] == '\0',
	    "CapabilityBoundingSet=%s, want empty", v);
	H_ASSERT(svc_unit_value(svc, "PrivateNetwork", v, sizeof v) == NULL ||
	        strcmp(v, "no") == 0,
	    "PrivateNetwork=%s: the proxy must reach "
	    "Ollama",
	    v);
	/* systemd must not kill a drain that keeps to shutdown_timeout. */
	H_ASSERT(svc_unit_value(svc, "TimeoutStopSec", v, sizeof v) != NULL,
	    "TimeoutStopSec= must be set");
	stop = svc_seconds(v);
	drain = strtod(svc_default("shutdown_timeout", v, sizeof v), NULL);
	H_ASSERT(stop > drain,
	    "TimeoutStopSec=%g is not above the default "
	    "shutdown_timeout %g",
	    stop, drain);

	H_ASSERT(svc_unit_value(sock, "ListenStream", v, sizeof v) != NULL &&
	        strcmp(v, "127.0.0.1:11435") == 0,
	    "ListenStream=%s", v);
	H_ASSERT(svc_unit_value(sock, "WantedBy", v, sizeof v) != NULL &&
	        strcmp(v, "sockets.target") == 0,
	    "socket WantedBy=%s", v);

	/* Every man: page the units name is built. */
	doc = harness_strf(
	    "%s", svc_unit_value(svc, "Documentation", v, sizeof v) ? v : "");
	doc = harness_strf("%s %s", doc,
	    svc_unit_value(sock, "Documentation", v, sizeof v) ? v : "");
	H_ASSERT(strstr(doc, "man:ollama-pool(8)") != NULL &&
	        strstr(doc, "man:ollama-pool.conf(5)") != NULL,
	    "Documentation= should name both pages: %s", doc);
	for (p = strstr(doc, "man:"); p != NULL; p = strstr(p + 4, "man:")) {
		page = harness_strf("%.*s", (int)strcspn(p + 4, " "), p + 4);
		page = svc_subst(page, "(", ".");
		page = svc_subst(page, ")", "");
		svc_read_built(harness_strf("man/%s", page));
	}
}
END_TEST

START_TEST(test_units_security)
{
	static const char key[] = "Overall exposure level for "
	                          "ollama-pool.service:";
	struct harness_run run;
	const char *argv[5];
	char *dir, *p, *end;
	double score;

	H_BEGIN();
	dir = svc_units_dir(NULL, NULL);
	argv[0] = svc_need("systemd-analyze", "systemd");
	argv[1] = "security";
	argv[2] = "--offline=true";
	argv[3] = harness_strf("%s/ollama-pool.service", dir);
	argv[4] = NULL;
	harness_run(argv, 30000, &run);
	H_ASSERT(!run.timed_out && WIFEXITED(run.wstatus) &&
	        WEXITSTATUS(run.wstatus) == 0,
	    "systemd-analyze security: status "
	    "0x%x\n%s\n%s",
	    run.wstatus, run.out.data, run.err.data);
	p = strstr(run.out.data, key);
	H_ASSERT(p != NULL, "no overall exposure line:\n%s\n%s", run.out.data,
	    run.err.data);
	score = strtod(p + strlen(key), &end);
	H_ASSERT(end != p + strlen(key), "unreadable score: %.80s", p);
	fprintf(stderr, "%.*s\n", (int)strcspn(p, "\n"), p);
	H_ASSERT(score <= 1.5, "exposure %.1f, want 1.5 or lower:\n%s", score,
	    run.out.data);
	harness_run_free(&run);
}
END_TEST

/* ---- the manual pages --------------------------------------------------- */

/* 1 when what occurs in the man(7) entry starting at entry, before the
 * next entry, paragraph or section. */
static int
svc_in_entry(const char *entry, const char *what)
{
	static const char *const ends[] = {"\n.TP", "\n.PP", "\n.SH ", NULL};
	const char *end = entry + strlen(entry), *e, *w;
	int i;

	for (i = 0; ends[i] != NULL; i++) {
		e = strstr(entry + 1, ends[i]);
		if (e != NULL && e < end)
			end = e;
	}
	w = strstr(entry, what);
	return w != NULL && w < end;
}

START_TEST(test_man_pages)
{
	static const char *const pages[] = {
	    "man/ollama-pool.8", "man/ollama-pool.conf.5", NULL};
	struct harness_run run;
	const char *argv[8], *groff;
	char *conf5, *eight, section[64], *p, *key, *where, *heading;
	int i, nkeys = 0;

	H_BEGIN();
	groff = svc_need("groff", "groff-base");
	for (i = 0; pages[i] != NULL; i++) {
		argv[0] = groff;
		argv[1] = "-man";
		argv[2] = "-Tutf8";
		argv[3] = "-ww";
		argv[4] = "-z";
		argv[5] = harness_strf("%s/%s", svc_top_builddir(), pages[i]);
		argv[6] = NULL;
		harness_run(argv, 30000, &run);
		H_ASSERT(!run.timed_out && WIFEXITED(run.wstatus) &&
		        WEXITSTATUS(run.wstatus) == 0 && run.err.len == 0,
		    "groff -man -ww %s: status 0x%x: %s", pages[i], run.wstatus,
		    run.err.data);
		harness_run_free(&run);
	}

	/* Every key the daemon knows (its -t output lists the whole table)
	 * is documented in its section of ollama-pool.conf(5). */
	conf5 = svc_read_built("man/ollama-pool.conf.5");
	argv[0] = harness_daemon_bin();
	argv[1] = "-t";
	argv[2] = NULL;
	harness_run(argv, 10000, &run);
	H_ASSERT(!run.timed_out && WIFEXITED(run.wstatus) &&
	        WEXITSTATUS(run.wstatus) == 0,
	    "-t: 0x%x", run.wstatus);
	section[0] = '\0';
	for (p = run.out.data; *p != '\0';
	     p += strcspn(p, "\n"), p += *p == '\n') {
		if (*p == '[') {
			snprintf(section, sizeof section, "%.*s",
			    (int)strcspn(p, "\n"), p);
			continue;
		}
		if (*p == '#' || *p == '\n' || strstr(p, " = ") == NULL)
			continue;
		key = harness_strf("%.*s", (int)strcspn(p, " "), p);
		heading = harness_strf(".SH \"%s SECTION\"", section);
		H_ASSERT(strstr(conf5, heading) != NULL,
		    "ollama-pool.conf(5) has no %s", heading);
		where = strstr(conf5, harness_strf(".BI %s \" = \"", key));
		H_ASSERT(where != NULL,
		    "ollama-pool.conf(5) does not document "
		    "%s %s",
		    section, key);
		/* In its own section: the nearest heading before it. */
		H_ASSERT(where > strstr(conf5, heading) &&
		        (strstr(strstr(conf5, heading) + 1, ".SH ") == NULL ||
		            where < strstr(strstr(conf5, heading) + 1, ".SH ")),
		    "ollama-pool.conf(5) documents %s outside %s", key,
		    section);
		H_ASSERT(svc_in_entry(where, "Default:"),
		    "ollama-pool.conf(5) gives no default for %s", key);
		nkeys++;
	}
	harness_run_free(&run);
	H_ASSERT(nkeys >= 20, "-t printed only %d keys", nkeys);

	/* The daemon's page names what the issue asks it to. */
	eight = svc_read_built("man/ollama-pool.8");
	H_ASSERT_CONTAINS(eight, ".SH SYNOPSIS");
	H_ASSERT_CONTAINS(eight, ".SH OPTIONS");
	H_ASSERT_CONTAINS(eight, ".SH SIGNALS");
	H_ASSERT_CONTAINS(eight, ".SH ENVIRONMENT");
	H_ASSERT_CONTAINS(eight, ".SH FILES");
	H_ASSERT_CONTAINS(eight, "SIGHUP");
	H_ASSERT_CONTAINS(eight, "SIGTERM");
	H_ASSERT_CONTAINS(eight, "/ollama\\-pool/health");
	H_ASSERT_CONTAINS(eight, "NOTIFY_SOCKET");
	H_ASSERT_CONTAINS(eight, "LISTEN_FDS");
	H_ASSERT_CONTAINS(eight, "WATCHDOG_USEC");
	H_ASSERT_CONTAINS(eight, "JOURNAL_STREAM");
	H_ASSERT_CONTAINS(eight, "OLLAMA_HOST");
}
END_TEST

/* ---- socket activation -------------------------------------------------- */

START_TEST(test_socket_activation)
{
	struct harness_fake *fake;
	struct harness_daemon *d;
	struct sockaddr_un sun;
	struct http_conn c;
	struct http_resp r;
	const char *activate[6];
	char *sock, *conf, msg[1024];
	int port, ignored, fd;

	H_BEGIN();
	fake = fake_start("fake", "A", NULL);
	port = harness_free_port();
	ignored = harness_free_port();
	sock = harness_strf("%s/s", harness_tmpdir());
	/* The file's listen address must give way to the passed sockets. */
	conf = svc_conf(ignored, fake, NULL);
	activate[0] = "-l";
	activate[1] = harness_strf("127.0.0.1:%d", port);
	activate[2] = "-l";
	activate[3] = sock;
	activate[4] = NULL;
	d = svc_start(&(struct svc_opts){.conf = conf,
	    .args = (const char *const[]){"-v", NULL},
	    .activate = activate,
	    .no_wait_ready = 1});
	d->port = port;

	/* systemd-socket-activate binds, then starts the daemon on the
	 * first connection, which waits in the backlog meanwhile. */
	S_ASSERT(
	    svc_log_wait(
	        d, harness_strf("Listening on 127.0.0.1:%d as 3", port), 10000),
	    "systemd-socket-activate did not listen");
	S_ASSERT(
	    svc_log_wait(d, harness_strf("Listening on %s as 4", sock), 10000),
	    "systemd-socket-activate did not listen on %s", sock);
	H_ASSERT_STR_EQ(svc_get_name(port, "/api/version"), "A");
	S_ASSERT(svc_notify_until(d, "READY=1", 10000, msg, sizeof msg) == 1,
	    "no READY=1 from the activated daemon");
	S_ASSERT(svc_log_wait(d, "using 2 sockets passed by systemd", 1000),
	    "the log does not say the sockets came from systemd");
	H_ASSERT_STR_EQ(svc_get_name(port, "/api/tags"), "A");

	/* The unix socket it was handed works too. */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	H_ASSERT(fd >= 0, "socket: %s", strerror(errno));
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", sock);
	S_ASSERT(connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0,
	    "connect %s: %s", sock, strerror(errno));
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	memset(&c, 0, sizeof c);
	c.fd = fd;
	H_ASSERT(http_conn_sendstr(&c,
	             "GET /api/version HTTP/1.1\r\n"
	             "Host: test\r\n\r\n",
	             10000) == 0,
	    "send on %s", sock);
	http_conn_read_response(&c, 0, 10000, &r);
	S_ASSERT(r.ok && r.status == 200, "GET over %s: %ld %s", sock, r.status,
	    r.error);
	H_ASSERT_STR_EQ(http_header_get(&r, "X-Fake-Name"), "A");
	http_resp_free(&r);
	http_conn_close(&c);

	/* The configured address was never opened, and a reload that
	 * changes it keeps the sockets systemd owns. */
	H_ASSERT_INT_EQ(harness_connect_errno(ignored), ECONNREFUSED);
	svc_reload(
	    d, svc_conf(harness_free_port(), fake, NULL), msg, sizeof msg);
	H_ASSERT_STR_EQ(svc_get_name(port, "/api/version"), "A");
	H_ASSERT_INT_EQ(harness_connect_errno(ignored), ECONNREFUSED);
	svc_stop_clean(d);
}
END_TEST

/* GET on a fresh connection without a token: the status. */
static long
svc_get_status(int port, const char *path)
{
	struct http_resp r;
	long status;

	http_get(svc_url(port, path), &r);
	S_ASSERT(r.ok, "GET %s on port %d: %s", path, port, r.error);
	status = r.status;
	http_resp_free(&r);
	return status;
}

/*
 * The admin listener under socket activation: a socket named admin
 * (FileDescriptorName=admin in its socket unit) is it, and admin_listen
 * is ignored; without one, the daemon opens admin_listen itself beside
 * systemd's sockets, and a reload moves it.
 */
START_TEST(test_socket_activation_admin)
{
	struct harness_fake *fake;
	struct harness_daemon *d;
	const char *extra;
	char msg[1024];
	int port, aport, own, moved;

	H_BEGIN();
	fake = fake_start("fake", "A", NULL);
	port = harness_free_port();
	aport = harness_free_port();
	own = harness_free_port();
	moved = harness_free_port();
	extra = harness_strf(
	    "client_tokens = tok\nadmin_listen = 127.0.0.1:%d\n", own);
	d = svc_start(&(struct svc_opts){
	    .conf = svc_conf(harness_free_port(), fake, extra),
	    .args = (const char *const[]){"-v", NULL},
	    .activate =
	        (const char *const[]){"-l", harness_strf("127.0.0.1:%d", port),
	            "-l", harness_strf("127.0.0.1:%d", aport),
	            "--fdname=ollama-pool.socket:admin", NULL},
	    .no_wait_ready = 1});
	S_ASSERT(
	    svc_log_wait(d,
	        harness_strf("Listening on 127.0.0.1:%d as 4", aport), 10000),
	    "systemd-socket-activate did not listen");
	/* The first connection, on the admin socket, starts the daemon. */
	H_ASSERT_INT_EQ(svc_get_status(aport, "/metrics"), 200);
	S_ASSERT(svc_notify_until(d, "READY=1", 10000, msg, sizeof msg) == 1,
	    "no READY=1 from the activated daemon");
	S_ASSERT(svc_log_wait(d,
	             "the socket named admin is the admin listener; the "
	             "admin_listen setting is ignored",
	             1000),
	    "the log does not say which socket is the admin listener");
	H_ASSERT_INT_EQ(svc_get_status(aport, "/health"), 200);
	H_ASSERT_INT_EQ(svc_get_status(aport, "/api/tags"), 404);
	H_ASSERT_INT_EQ(svc_get_status(port, "/ollama-pool/metrics"), 401);
	H_ASSERT_INT_EQ(harness_connect_errno(own), ECONNREFUSED);
	svc_stop_clean(d);

	/* One socket passed: admin_listen is ours to open, and to move. */
	d = svc_start(&(struct svc_opts){
	    .conf = svc_conf(harness_free_port(), fake, extra),
	    .args = (const char *const[]){"-v", NULL},
	    .activate = (const char *const[]){"-l",
	        harness_strf("127.0.0.1:%d", port), NULL},
	    .no_wait_ready = 1});
	S_ASSERT(
	    svc_log_wait(
	        d, harness_strf("Listening on 127.0.0.1:%d as 3", port), 10000),
	    "systemd-socket-activate did not listen");
	H_ASSERT_INT_EQ(svc_get_status(port, "/ollama-pool/health"), 200);
	S_ASSERT(svc_notify_until(d, "READY=1", 10000, msg, sizeof msg) == 1,
	    "no READY=1 from the activated daemon");
	H_ASSERT_INT_EQ(svc_get_status(own, "/stats"), 200);
	svc_reload(d,
	    svc_conf(harness_free_port(), fake,
	        harness_strf("admin_listen = 127.0.0.1:%d\n", moved)),
	    msg, sizeof msg);
	H_ASSERT_INT_EQ(harness_connect_errno(own), ECONNREFUSED);
	H_ASSERT_INT_EQ(svc_get_status(moved, "/metrics"), 200);
	H_ASSERT_STR_EQ(svc_get_name(port, "/api/version"), "A");
	svc_stop_clean(d);
}
END_TEST

/* ---- the notify protocol ----------------------------------------------- */

START_TEST(test_notify_protocol)
{
	struct harness_fake *fake;
	struct harness_daemon *d;
	struct http_conn c;
	struct http_resp r;
	char msg[2048], v[512], *end;
	unsigned long long usec, before, after;
	struct timespec ts;
	int watchdogs = 0, rc, port;
	double deadline;

	H_BEGIN();
	fake = fake_start("fake", "A", NULL);
	port = harness_free_port();
	d = svc_start(&(struct svc_opts){.conf = svc_conf(port, fake, NULL),
	    .env = (const char *const[]){"WATCHDOG_USEC=200000", NULL},
	    .watchdog_pid = 1,
	    .no_wait_ready = 1});

	/* READY=1 comes with a STATUS= saying where it listens. */
	rc = svc_notify_until(d, "READY=1", HARNESS_READY_MS, msg, sizeof msg);
	S_ASSERT(rc == 1, "no READY=1 (%d)", rc);
	S_ASSERT(svc_line_value(msg, "STATUS=", v, sizeof v) != NULL &&
	        strstr(v, harness_strf("127.0.0.1:%d", port)) != NULL,
	    "READY=1 without a STATUS= naming the listener: \"%s\"", msg);
	/* The listener is up by then. */
	H_ASSERT_STR_EQ(svc_get_name(port, "/api/version"), "A");

	/* The watchdog: pings at half of 200 ms. */
	deadline = harness_now() + 3.0;
	while (watchdogs < 4 && harness_now() < deadline) {
		if (svc_notify_next(d, 500, msg, sizeof msg) != 1)
			continue;
		if (svc_has_line(msg, "WATCHDOG=1"))
			watchdogs++;
	}
	S_ASSERT(watchdogs >= 4,
	    "%d WATCHDOG=1 in 3 s with WATCHDOG_USEC="
	    "200000",
	    watchdogs);

	/* STATUS= follows what is going on: a stream in flight... */
	svc_stream_start(&c, port, 12, 100);
	rc = 0;
	deadline = harness_now() + 5.0;
	while (harness_now() < deadline && !rc) {
		if (svc_notify_next(d, 500, msg, sizeof msg) == 1 &&
		    svc_line_value(msg, "STATUS=", v, sizeof v) != NULL)
			rc = strstr(v, "1 in flight") != NULL;
	}
	S_ASSERT(rc, "no STATUS= showing the request in flight; last: %s", msg);
	svc_stream_finish(&c, 12, "A", "stream", &r);
	http_resp_free(&r);
	http_conn_close(&c);
	/* ...and its end. */
	rc = 0;
	deadline = harness_now() + 5.0;
	while (harness_now() < deadline && !rc) {
		if (svc_notify_next(d, 500, msg, sizeof msg) == 1 &&
		    svc_line_value(msg, "STATUS=", v, sizeof v) != NULL)
			rc = strstr(v, "0 in flight") != NULL;
	}
	S_ASSERT(rc, "STATUS= never went back to 0 in flight");

	/* Reload: RELOADING=1 with MONOTONIC_USEC in the same datagram,
	 * then READY=1. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	before = (unsigned long long)ts.tv_sec * 1000000ULL +
	    (unsigned long long)ts.tv_nsec / 1000;
	svc_signal(d, SIGHUP);
	rc = svc_notify_until(d, "RELOADING=1", 10000, msg, sizeof msg);
	S_ASSERT(rc == 1, "no RELOADING=1 after SIGHUP (%d)", rc);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	after = (unsigned long long)ts.tv_sec * 1000000ULL +
	    (unsigned long long)ts.tv_nsec / 1000;
	S_ASSERT(svc_line_value(msg, "MONOTONIC_USEC=", v, sizeof v) != NULL,
	    "RELOADING=1 without MONOTONIC_USEC=: \"%s\"", msg);
	errno = 0;
	usec = strtoull(v, &end, 10);
	S_ASSERT(errno == 0 && end != v && *end == '\0',
	    "MONOTONIC_USEC=%s is not a number", v);
	S_ASSERT(usec >= before && usec <= after,
	    "MONOTONIC_USEC=%llu is not "
	    "CLOCK_MONOTONIC at the reload (%llu..%llu)",
	    usec, before, after);
	rc = svc_notify_until(d, "READY=1", 10000, msg, sizeof msg);
	S_ASSERT(rc == 1, "no READY=1 after RELOADING=1 (%d)", rc);
	H_ASSERT_STR_EQ(svc_get_name(port, "/api/version"), "A");

	/* SIGTERM: STOPPING=1, then exit 0. */
	svc_signal(d, SIGTERM);
	rc = svc_notify_until(d, "STOPPING=1", 10000, msg, sizeof msg);
	S_ASSERT(rc == 1, "no STOPPING=1 after SIGTERM (%d)", rc);
	S_ASSERT(svc_wait_exit(d, 10000), "no exit after SIGTERM");
	S_ASSERT(
	    WIFEXITED(d->proc.wstatus) && WEXITSTATUS(d->proc.wstatus) == 0,
	    "wait status 0x%x", d->proc.wstatus);
}
END_TEST

START_TEST(test_notify_no_watchdog)
{
	struct harness_fake *fake;
	struct harness_daemon *d;
	char msg[2048];
	double deadline;
	int rc;

	/* A WATCHDOG_PID that is not the daemon's (a parent's setting,
	 * inherited) means the watchdog is not ours: no pings. */
	H_BEGIN();
	fake = fake_start("fake", "A", NULL);
	d = svc_start(&(struct svc_opts){
	    .conf = svc_conf(harness_free_port(), fake, NULL),
	    .env = (const char *const[]){
	        "WATCHDOG_USEC=200000", "WATCHDOG_PID=1", NULL}});
	/* Ten intervals' worth; the janitor's STATUS= lines keep coming. */
	deadline = harness_now() + 1.0;
	while (harness_now() < deadline) {
		rc = svc_notify_next(d, 200, msg, sizeof msg);
		S_ASSERT(rc >= 0, "the daemon exited");
		S_ASSERT(rc == 0 || !svc_has_line(msg, "WATCHDOG=1"),
		    "WATCHDOG=1 though WATCHDOG_PID is not the daemon");
	}
	svc_stop_clean(d);
}
END_TEST

/* ---- reload -------------------------------------------------------------- */

START_TEST(test_reload_switches_upstream)
{
	enum { N = 20, INTERVAL = 100 };
	struct harness_fake *a, *b;
	struct harness_daemon *d;
	struct http_conn c;
	struct http_resp r;
	char msg[1024];
	double t_b;
	int port;

	H_BEGIN();
	a = fake_start("fakeA", "A", NULL);
	b = fake_start("fakeB", "B", NULL);
	port = harness_free_port();
	d = svc_start(&(struct svc_opts){
	    .conf = svc_conf(port, a, "shutdown_timeout = 10\n"),
	    .args = (const char *const[]){"-v", NULL}});
	H_ASSERT_STR_EQ(svc_get_name(port, "/api/version"), "A");

	/* A two-second stream from A is in flight across the reload. */
	svc_stream_start(&c, port, N, INTERVAL);
	svc_reload(
	    d, svc_conf(port, b, "shutdown_timeout = 10\n"), msg, sizeof msg);
	S_ASSERT(svc_log_wait(d, "reload complete", 5000),
	    "the log does not say the reload completed");
	/* New requests go to B at once... */
	H_ASSERT_STR_EQ(svc_get_name(port, "/api/version"), "B");
	H_ASSERT_STR_EQ(svc_get_name(port, "/api/tags"), "B");
	t_b = harness_now();
	/* ...while the stream finishes, whole, from A. */
	svc_stream_finish(&c, N, "A", "stream across the reload", &r);
	S_ASSERT(r.t_end > t_b,
	    "the stream had ended before B answered: "
	    "it was not in flight across the reload");
	http_resp_free(&r);
	http_conn_close(&c);
	H_ASSERT(fake_stat(b, "requests") >= 2, "B saw %lld requests",
	    fake_stat(b, "requests"));
	/* And a new stream goes to B too. */
	svc_stream_start(&c, port, 3, 10);
	svc_stream_finish(&c, 3, "B", "stream after the reload", &r);
	http_resp_free(&r);
	http_conn_close(&c);
	svc_stop_clean(d);
}
END_TEST

START_TEST(test_reload_invalid_keeps_old)
{
	struct harness_fake *a, *b;
	struct harness_daemon *d;
	char msg[1024], *bad;
	int port;

	H_BEGIN();
	a = fake_start("fakeA", "A", NULL);
	b = fake_start("fakeB", "B", NULL);
	port = harness_free_port();
	d = svc_start(&(struct svc_opts){.conf = svc_conf(port, a, NULL)});
	H_ASSERT_STR_EQ(svc_get_name(port, "/api/version"), "A");

	/* Line 4 is wrong: nothing of the file applies, B included. */
	bad = harness_strf("[server]\nlisten = 127.0.0.1:%d\n[upstream]\n"
	                   "pool_maxsize = banana\nurl = %s\n",
	    port, harness_upstream_of(b));
	svc_reload(d, bad, msg, sizeof msg);
	S_ASSERT(svc_log_wait(d, harness_strf("%s:4:", d->conf_path), 5000),
	    "the log does not name %s:4", d->conf_path);
	S_ASSERT(svc_log_wait(d, "banana", 1000),
	    "the log does not quote "
	    "the bad value");
	H_ASSERT(harness_proc_alive(&d->proc), "a bad file killed the daemon");
	H_ASSERT_STR_EQ(svc_get_name(port, "/api/version"), "A");
	H_ASSERT_STR_EQ(svc_get_name(port, "/api/tags"), "A");

	/* An unknown key is refused the same way. */
	svc_reload(d,
	    harness_strf("[upstream]\nurl = %s\nno_such_key = 1\n",
	        harness_upstream_of(b)),
	    msg, sizeof msg);
	S_ASSERT(svc_log_wait(d, harness_strf("%s:3:", d->conf_path), 5000),
	    "the log does not name %s:3", d->conf_path);
	H_ASSERT_STR_EQ(svc_get_name(port, "/api/version"), "A");

	/* A good file afterwards is taken. */
	svc_reload(d, svc_conf(port, b, NULL), msg, sizeof msg);
	H_ASSERT_STR_EQ(svc_get_name(port, "/api/version"), "B");
	svc_stop_clean(d);
}
END_TEST

START_TEST(test_reload_rebinds_listen)
{
	struct harness_fake *a;
	struct harness_daemon *d;
	char msg[1024];
	int p1, p2, p3;

	H_BEGIN();
	a = fake_start("fakeA", "A", NULL);
	p1 = harness_free_port();
	p2 = harness_free_port();
	d = svc_start(&(struct svc_opts){.conf = svc_conf(p1, a, NULL)});
	H_ASSERT_STR_EQ(svc_get_name(p1, "/api/version"), "A");

	svc_reload(d, svc_conf(p2, a, NULL), msg, sizeof msg);
	H_ASSERT_STR_EQ(svc_get_name(p2, "/api/version"), "A");
	S_ASSERT(harness_connect_errno(p1) == ECONNREFUSED,
	    "the old address %d still accepts after the reload (%s)", p1,
	    strerror(harness_connect_errno(p1)));

	/* Two addresses, one of them kept. */
	p3 = harness_free_port();
	svc_reload(d,
	    harness_strf("[server]\nlisten = 127.0.0.1:%d "
	                 "127.0.0.1:%d\n[upstream]\nurl = %s\n",
	        p2, p3, harness_upstream_of(a)),
	    msg, sizeof msg);
	H_ASSERT_STR_EQ(svc_get_name(p2, "/api/version"), "A");
	H_ASSERT_STR_EQ(svc_get_name(p3, "/api/version"), "A");
	S_ASSERT(svc_log_wait(
	             d, harness_strf("listening on 127.0.0.1:%d", p3), 1000),
	    "no log line for the new address");
	svc_stop_clean(d);
}
END_TEST

START_TEST(test_reload_listen_bind_fails)
{
	struct harness_fake *a;
	struct harness_daemon *d;
	struct sockaddr_in sin;
	socklen_t len = sizeof sin;
	char msg[1024];
	int p1, p2, busy;

	/* A new address that cannot be opened must not leave the daemon
	 * listening nowhere while it tells systemd all is well. */
	H_BEGIN();
	a = fake_start("fakeA", "A", NULL);
	p1 = harness_free_port();
	busy = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	H_ASSERT(busy >= 0, "socket: %s", strerror(errno));
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	H_ASSERT(bind(busy, (struct sockaddr *)&sin, sizeof sin) == 0 &&
	        listen(busy, 1) == 0 &&
	        getsockname(busy, (struct sockaddr *)&sin, &len) == 0,
	    "bind: %s", strerror(errno));
	p2 = ntohs(sin.sin_port);

	d = svc_start(&(struct svc_opts){.conf = svc_conf(p1, a, NULL)});
	H_ASSERT_STR_EQ(svc_get_name(p1, "/api/version"), "A");
	svc_reload(d, svc_conf(p2, a, NULL), msg, sizeof msg);
	S_ASSERT(svc_log_wait(d, harness_strf("127.0.0.1:%d", p2), 5000),
	    "the log does not name the address that could not be opened");
	S_ASSERT(harness_connect_errno(p1) == 0,
	    "after a reload to a busy "
	    "address the daemon listens nowhere: 127.0.0.1:%d was closed "
	    "though 127.0.0.1:%d could not be opened (and READY=1 was sent)",
	    p1, p2);
	H_ASSERT_STR_EQ(svc_get_name(p1, "/api/version"), "A");
	close(busy);
	svc_stop_clean(d);
}
END_TEST

/* ---- names resolved off the loop ----------------------------------------- */

/* A file listening on `listen`, forwarding to up, asking dns for names. */
static char *
svc_dns_conf(const char *listen, const struct harness_fake *up,
    const struct harness_fake *dns)
{
	return harness_strf("[server]\nlisten = %s\n[upstream]\nurl = %s\n"
	                    "resolver = 127.0.0.1:%d\n",
	    listen, harness_upstream_of(up), dns->port);
}

/* Takes what has arrived on c without waiting; the bytes read. */
static size_t
svc_conn_drain(struct http_conn *c)
{
	char buf[65536];
	size_t got = 0;
	ssize_t n;

	while ((n = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT)) > 0) {
		harness_buf_add(&c->in, buf, (size_t)n);
		got += (size_t)n;
	}
	return got;
}

/*
 * SIGHUP with a listen name the DNS server answers 3 s late: for those
 * 3 s the daemon goes on serving, new requests and a stream in flight
 * alike, and then the reload completes with the new listener.
 */
START_TEST(test_reload_resolves_off_the_loop)
{
	enum { N = 60, INTERVAL = 100 };
	struct harness_fake *a, *dns;
	struct harness_daemon *d;
	struct http_conn c;
	struct http_resp r;
	double t0, t, worst = 0, gap = 0, last_bytes, t_ready = 0;
	char msg[1024], *table;
	int p1, p2, served = 0;

	H_BEGIN();
	table = harness_write_file(
	    harness_tmpdir(), "dns.table", "slow.test 127.0.0.1 3000\n");
	dns = fake_dns_start("dns", table);
	a = fake_start("fakeA", "A", NULL);
	p1 = harness_free_port();
	p2 = harness_free_port();
	d = svc_start(&(struct svc_opts){
	    .conf = svc_dns_conf(harness_strf("127.0.0.1:%d", p1), a, dns)});
	svc_stream_start(&c, p1, N, INTERVAL);

	harness_write_file(d->dir, "ollama-pool.conf",
	    svc_dns_conf(
	        harness_strf("127.0.0.1:%d slow.test:%d", p1, p2), a, dns));
	t0 = last_bytes = harness_now();
	svc_signal(d, SIGHUP);
	S_ASSERT(
	    svc_notify_until(d, "RELOADING=1", 10000, msg, sizeof msg) == 1,
	    "no RELOADING=1 after SIGHUP");
	/* Until READY=1: a new request at a time, each timed, and the
	 * stream's bytes taken as they come. */
	while (t_ready == 0 && harness_now() - t0 < 12) {
		t = harness_now();
		H_ASSERT_STR_EQ(svc_get_name(p1, "/api/version"), "A");
		if (harness_now() - t > worst)
			worst = harness_now() - t;
		served++;
		if (svc_conn_drain(&c) > 0) {
			if (harness_now() - last_bytes > gap)
				gap = harness_now() - last_bytes;
			last_bytes = harness_now();
		}
		if (svc_notify_until(d, "READY=1", 100, msg, sizeof msg) == 1)
			t_ready = harness_now();
	}
	S_ASSERT(t_ready > 0, "no READY=1 within 12 s of the SIGHUP");
	S_ASSERT(t_ready - t0 >= 2.5,
	    "READY=1 %.2f s after SIGHUP: the 3 s answer was not waited for",
	    t_ready - t0);
	S_ASSERT(served >= 5 && worst < 1.5,
	    "while slow.test was resolving, %d requests were served, the "
	    "slowest in %.2f s: the event loop was blocked",
	    served, worst);
	S_ASSERT(gap < 1.5,
	    "the stream in flight stalled for %.2f s while slow.test was "
	    "resolving",
	    gap);
	S_ASSERT(svc_file_wait(dns->proc.log_path, "query slow.test", 1000),
	    "the daemon did not ask the configured resolver for slow.test");
	S_ASSERT(svc_log_wait(d, "reload complete", 5000),
	    "the log does not say the reload completed");
	S_ASSERT(svc_log_wait(
	             d, harness_strf("listening on 127.0.0.1:%d", p2), 1000),
	    "no listener for slow.test:%d", p2);
	H_ASSERT_STR_EQ(svc_get_name(p2, "/api/version"), "A");
	H_ASSERT_STR_EQ(svc_get_name(p1, "/api/tags"), "A");
	svc_stream_finish(&c, N, "A", "stream across the reload", &r);
	http_resp_free(&r);
	http_conn_close(&c);
	svc_stop_clean(d);
}
END_TEST

/* A second SIGHUP while the first reload resolves is acknowledged and
 * queued: the file is read again after the first, and READY=1 comes
 * once, at the end. */
/* A daemon on port p1 in front of fake A, in the middle of a reload that
 * adds a listener on slow.test:p2, whose DNS answer takes delay_ms: the
 * query has been asked, and the answer is yet to come. */
struct slow_reload {
	struct harness_fake *a, *dns;
	struct harness_daemon *d;
	int p1, p2;
};

static void
svc_slow_reload_begin(struct slow_reload *sr, int delay_ms)
{
	char *table;

	table = harness_write_file(harness_tmpdir(), "dns.table",
	    harness_strf("slow.test 127.0.0.1 %d\n", delay_ms));
	sr->dns = fake_dns_start("dns", table);
	sr->a = fake_start("fakeA", "A", NULL);
	sr->p1 = harness_free_port();
	sr->p2 = harness_free_port();
	sr->d = svc_start(&(struct svc_opts){
	    .conf = svc_dns_conf(
	        harness_strf("127.0.0.1:%d", sr->p1), sr->a, sr->dns)});
	svc_reload_begin(sr->d,
	    svc_dns_conf(
	        harness_strf("127.0.0.1:%d slow.test:%d", sr->p1, sr->p2),
	        sr->a, sr->dns));
	/* RELOADING=1 comes before the file is read: only the query shows
	 * the file was parsed. */
	S_ASSERT(svc_file_wait(sr->dns->proc.log_path, "query slow.test", 5000),
	    "slow.test was not asked for");
}

START_TEST(test_reload_queued_while_resolving)
{
	struct slow_reload sr;
	struct harness_fake *a, *dns;
	struct harness_daemon *d;
	char msg[1024];
	int p1, p2, p3, rc;

	H_BEGIN();
	svc_slow_reload_begin(&sr, 3000);
	a = sr.a;
	dns = sr.dns;
	d = sr.d;
	p1 = sr.p1;
	p2 = sr.p2;
	p3 = harness_free_port();
	harness_write_file(d->dir, "ollama-pool.conf",
	    svc_dns_conf(
	        harness_strf("127.0.0.1:%d 127.0.0.1:%d", p1, p3), a, dns));
	svc_signal(d, SIGHUP);
	/* Acknowledged at once, with no READY=1 before it. */
	do
		rc = svc_notify_next(d, 10000, msg, sizeof msg);
	while (rc == 1 && !svc_has_line(msg, "RELOADING=1") &&
	    !svc_has_line(msg, "READY=1"));
	S_ASSERT(rc == 1 && svc_has_line(msg, "RELOADING=1"),
	    "the second SIGHUP got %s, not RELOADING=1",
	    rc == 1 ? msg : "nothing");
	rc = svc_notify_until(d, "READY=1", 10000, msg, sizeof msg);
	S_ASSERT(rc == 1, "no READY=1 after the two reloads (%d)", rc);
	S_ASSERT(svc_log_wait(d, "this one follows it", 1000),
	    "the second SIGHUP was not queued");
	S_ASSERT(svc_log_wait(d, "reloading again", 1000),
	    "the queued reload did not follow the first");
	/* The second file won: slow.test's listener came and went. */
	S_ASSERT(
	    svc_log_wait(
	        d, harness_strf("stopped listening on 127.0.0.1:%d", p2), 1000),
	    "the first reload's listener on %d was not replaced", p2);
	H_ASSERT_STR_EQ(svc_get_name(p3, "/api/version"), "A");
	H_ASSERT_STR_EQ(svc_get_name(p1, "/api/version"), "A");
	S_ASSERT(harness_connect_errno(p2) == ECONNREFUSED,
	    "slow.test:%d still listens after the second reload", p2);
	svc_stop_clean(d);
}
END_TEST

/* SIGTERM while a reload resolves: the drain does not wait for DNS, and
 * the abandoned lookups are ended cleanly (exit 0, nothing leaked). */
START_TEST(test_stop_while_resolving)
{
	struct slow_reload sr;
	struct harness_daemon *d;
	double t0;

	H_BEGIN();
	svc_slow_reload_begin(&sr, 5000);
	d = sr.d;
	t0 = harness_now();
	svc_stop_clean(d);
	S_ASSERT(harness_now() - t0 < 3,
	    "SIGTERM took %.1f s: it waited for the DNS answer",
	    harness_now() - t0);
	S_ASSERT(svc_log_wait(d, "stopped", 1000), "no 'stopped' in the log");
}
END_TEST

/* Names that do not resolve refuse the reload, saying which, where and
 * why; the running settings serve on. */
START_TEST(test_reload_unresolvable_keeps_old)
{
	struct harness_fake *a, *b, *dns;
	struct harness_daemon *d;
	double t0, t, worst = 0;
	char msg[1024], *table;
	int p1, p2, rc;

	H_BEGIN();
	table = harness_write_file(harness_tmpdir(), "dns.table",
	    "nx.test nxdomain\nsf.test servfail\ndead.test drop\n");
	dns = fake_dns_start("dns", table);
	a = fake_start("fakeA", "A", NULL);
	b = fake_start("fakeB", "B", NULL);
	p1 = harness_free_port();
	p2 = harness_free_port();
	d = svc_start(&(struct svc_opts){
	    .conf = svc_dns_conf(harness_strf("127.0.0.1:%d", p1), a, dns)});

	svc_reload(d,
	    svc_dns_conf(
	        harness_strf("127.0.0.1:%d nx.test:%d", p1, p2), b, dns),
	    msg, sizeof msg);
	S_ASSERT(svc_log_wait(d,
	             harness_strf("reload failed, keeping the running "
	                          "settings: cannot resolve 'nx.test' (listen "
	                          "in %s:2): no such name (NXDOMAIN)",
	                 d->conf_path),
	             5000),
	    "no message naming nx.test, its line and NXDOMAIN");
	H_ASSERT_STR_EQ(svc_get_name(p1, "/api/version"), "A");
	S_ASSERT(harness_connect_errno(p2) == ECONNREFUSED,
	    "nx.test:%d listens", p2);

	svc_reload(d,
	    svc_dns_conf(
	        harness_strf("127.0.0.1:%d sf.test:%d", p1, p2), b, dns),
	    msg, sizeof msg);
	S_ASSERT(svc_log_wait(d, "cannot resolve 'sf.test'", 5000) &&
	        svc_log_wait(d, "SERVFAIL", 1000),
	    "no message naming sf.test and its failure");
	H_ASSERT_STR_EQ(svc_get_name(p1, "/api/version"), "A");

	/* No answer at all: the reload gives up after its bound, serving
	 * on meanwhile. */
	svc_reload_begin(d,
	    svc_dns_conf(
	        harness_strf("127.0.0.1:%d dead.test:%d", p1, p2), b, dns));
	t0 = harness_now();
	rc = 0;
	while (rc != 1 && harness_now() - t0 < 16) {
		t = harness_now();
		H_ASSERT_STR_EQ(svc_get_name(p1, "/api/version"), "A");
		if (harness_now() - t > worst)
			worst = harness_now() - t;
		rc = svc_notify_until(d, "READY=1", 500, msg, sizeof msg);
	}
	S_ASSERT(rc == 1,
	    "no READY=1 within 16 s of a reload naming a name "
	    "that never answers");
	S_ASSERT(harness_now() - t0 >= 8, "gave up on dead.test after %.1f s",
	    harness_now() - t0);
	S_ASSERT(worst < 1.5, "a request took %.2f s meanwhile", worst);
	S_ASSERT(svc_log_wait(d,
	             harness_strf("cannot resolve 'dead.test' (listen in "
	                          "%s:2): no answer within 10 s",
	                 d->conf_path),
	             1000),
	    "no message naming dead.test and the timeout");
	H_ASSERT_STR_EQ(svc_get_name(p1, "/api/version"), "A");

	/* And a good file is taken afterwards. */
	svc_reload(d, svc_dns_conf(harness_strf("127.0.0.1:%d", p1), b, dns),
	    msg, sizeof msg);
	H_ASSERT_STR_EQ(svc_get_name(p1, "/api/version"), "B");
	svc_stop_clean(d);
}
END_TEST

/* `ollama-pool -t -c FILE`: exit status, stdout and stderr. */
static int
svc_check_config(const char *conf, struct harness_run *run)
{
	const char *argv[5];
	char *path;

	path = harness_write_file(harness_tmpdir(), "check.conf", conf);
	argv[0] = harness_daemon_bin();
	argv[1] = "-t";
	argv[2] = "-c";
	argv[3] = path;
	argv[4] = NULL;
	harness_run(argv, 20000, run);
	H_ASSERT(!run->timed_out && WIFEXITED(run->wstatus),
	    "ollama-pool -t: wait status 0x%x", run->wstatus);
	return WEXITSTATUS(run->wstatus);
}

/* -t resolves names as start-up does: an unresolvable listen name and an
 * upstream name that is ourselves are errors; localhost comes from
 * /etc/hosts without asking the resolver. */
START_TEST(test_check_config_resolves_names)
{
	struct harness_fake *a, *dns;
	struct harness_run run;
	char *table, *log;
	int port;

	H_BEGIN();
	table = harness_write_file(harness_tmpdir(), "dns.table",
	    "ok.test 127.0.0.1\nloop.test 127.0.0.1\nnx.test nxdomain\n");
	dns = fake_dns_start("dns", table);
	a = fake_start("fakeA", "A", NULL);
	port = harness_free_port();

	H_ASSERT_INT_EQ(
	    svc_check_config(
	        svc_dns_conf(harness_strf("ok.test:%d", port), a, dns), &run),
	    0);
	H_ASSERT_CONTAINS(
	    run.out.data, harness_strf("listen = ok.test:%d", port));
	harness_run_free(&run);

	H_ASSERT_INT_EQ(
	    svc_check_config(
	        svc_dns_conf(harness_strf("nx.test:%d", port), a, dns), &run),
	    1);
	H_ASSERT_CONTAINS(run.err.data, "cannot resolve 'nx.test' (listen in ");
	H_ASSERT_CONTAINS(run.err.data, "check.conf:2): no such name");
	harness_run_free(&run);

	H_ASSERT_INT_EQ(
	    svc_check_config(
	        harness_strf("[server]\nlisten = 127.0.0.1:%d\n[upstream]\n"
	                     "url = http://loop.test:%d\n"
	                     "resolver = 127.0.0.1:%d\n",
	            port, port, dns->port),
	        &run),
	    1);
	H_ASSERT_CONTAINS(run.err.data, "check.conf:4: upstream");
	H_ASSERT_CONTAINS(run.err.data, "loop back to the proxy");
	harness_run_free(&run);

	H_ASSERT_INT_EQ(
	    svc_check_config(
	        svc_dns_conf(harness_strf("localhost:%d", port), a, dns), &run),
	    0);
	harness_run_free(&run);
	log = harness_slurp(dns->proc.log_path, NULL);
	S_ASSERT(strstr(log, "query localhost") == NULL,
	    "localhost was asked of the resolver, not found in /etc/hosts:\n%s",
	    log);
	S_ASSERT(strstr(log, "query ok.test") != NULL,
	    "ok.test was not asked of the resolver:\n%s", log);
	free(log);
}
END_TEST

/* ---- configuration errors and client_tokens_file ------------------------ */

/* The lines of text that hold needle. */
static int
svc_count_lines_with(const char *text, const char *needle)
{
	const char *p, *end;
	int n = 0;

	for (p = text; p != NULL && *p != '\0'; p = end + (*end != '\0')) {
		end = p + strcspn(p, "\n");
		n += strstr(harness_strf("%.*s", (int)(end - p), p), needle) !=
		    NULL;
	}
	return n;
}

/* -t names every error of a file, each on its own line with its line
 * number, and exits 1; a good file prints with its secrets masked, the
 * tokens file by path (here in $CREDENTIALS_DIRECTORY), never its
 * content. */
START_TEST(test_check_config_every_error_and_masked)
{
	struct harness_run run;
	char *creds;

	H_BEGIN();
	H_ASSERT_INT_EQ(svc_check_config("[server]\nmax_buffr = 2m\n"
	                                 "header_timeout = 10x\n"
	                                 "[upstrem]\npool_maxsize = 3\n"
	                                 "[upstream]\npool_maxsize = 0\n",
	                    &run),
	    1);
	/* Four lines, no more. */
	H_ASSERT_INT_EQ(svc_count_lines_with(run.err.data, "check.conf:"), 4);
	H_ASSERT_INT_EQ(svc_count_lines_with(run.err.data, ""), 4);
	H_ASSERT_CONTAINS(run.err.data,
	    "check.conf:2: unknown key 'max_buffr' in section [server] (did "
	    "you mean max_buffer?)\n");
	H_ASSERT_CONTAINS(
	    run.err.data, "check.conf:3: header_timeout must be a duration");
	H_ASSERT_CONTAINS(run.err.data,
	    "check.conf:4: unknown section [upstrem] (did you mean "
	    "[upstream]?); known sections: [server], [upstream], [retry]\n");
	H_ASSERT_CONTAINS(
	    run.err.data, "check.conf:7: pool_maxsize must be between 1");
	H_ASSERT_INT_EQ(run.out.len, 0);
	harness_run_free(&run);

	creds = harness_tmpdir();
	harness_write_file(creds, "client-tokens", "# ours\ntok-file-1\n");
	setenv("CREDENTIALS_DIRECTORY", creds, 1);
	H_ASSERT_INT_EQ(svc_check_config("[server]\nclient_tokens = tok-key\n"
	                                 "client_tokens_file = client-tokens\n"
	                                 "header_timeout = 1.5m\n",
	                    &run),
	    0);
	unsetenv("CREDENTIALS_DIRECTORY");
	H_ASSERT_CONTAINS(run.out.data, "\nclient_tokens = ***\n");
	H_ASSERT_CONTAINS(
	    run.out.data, "\nclient_tokens_file = client-tokens\n");
	H_ASSERT_CONTAINS(run.out.data,
	    harness_strf("\n# 1 token read from %s/client-tokens\n", creds));
	H_ASSERT_CONTAINS(run.out.data, "\nheader_timeout = 90\n");
	H_ASSERT(strstr(run.out.data, "tok-") == NULL &&
	        strstr(run.err.data, "tok-") == NULL,
	    "-t shows a token:\n%s%s", run.out.data, run.err.data);
	harness_run_free(&run);
}
END_TEST

/* A reload of a file with two errors logs both, with their lines, and
 * the running settings go on serving. */
START_TEST(test_reload_logs_every_error)
{
	struct harness_fake *a, *b;
	struct harness_daemon *d;
	char msg[1024];
	int port;

	H_BEGIN();
	a = fake_start("fakeA", "A", NULL);
	b = fake_start("fakeB", "B", NULL);
	port = harness_free_port();
	d = svc_start(&(struct svc_opts){.conf = svc_conf(port, a, NULL)});
	svc_reload(d,
	    harness_strf("[server]\nlisten = 127.0.0.1:%d\nidle_timeout = "
	                 "soon\n[upstream]\nurl = %s\npool_maxsise = 4\n",
	        port, harness_upstream_of(b)),
	    msg, sizeof msg);
	S_ASSERT(
	    svc_log_wait(d,
	        "reload failed, keeping the running settings: 2 errors", 5000),
	    "the log does not count the errors");
	S_ASSERT(svc_log_wait(d,
	             harness_strf(
	                 "%s:3: idle_timeout must be a duration", d->conf_path),
	             1000),
	    "the log does not name %s:3", d->conf_path);
	S_ASSERT(svc_log_wait(d,
	             harness_strf("%s:6: unknown key 'pool_maxsise' in section "
	                          "[upstream] (did you mean pool_maxsize?)",
	                 d->conf_path),
	             1000),
	    "the log does not name %s:6", d->conf_path);
	H_ASSERT(harness_proc_alive(&d->proc), "a bad file killed the daemon");
	H_ASSERT_STR_EQ(svc_get_name(port, "/api/version"), "A");
	svc_stop_clean(d);
}
END_TEST

/* GET path with "Authorization: Bearer token" (no header for NULL);
 * the status. */
static long
svc_get_with_token(int port, const char *path, const char *token)
{
	const char *hdrs[2] = {NULL, NULL};
	struct http_resp r;
	long status;

	if (token != NULL)
		hdrs[0] = harness_strf("Authorization: Bearer %s", token);
	http_request(
	    &(struct http_req){.url = svc_url(port, path), .headers = hdrs},
	    &r);
	H_ASSERT(r.ok, "GET %s: %s", path, r.error);
	status = r.status;
	http_resp_free(&r);
	return status;
}

/* Which of the tokens are let in (200) and which refused (401), as
 * "tok=code" pairs, for one message. */
static void
svc_check_tokens(int port, const char *const *in, const char *const *out)
{
	size_t i;
	long st;

	for (i = 0; in[i] != NULL; i++) {
		st = svc_get_with_token(port, "/api/tags", in[i]);
		S_ASSERT(st == 200, "token %s: %ld, want 200", in[i], st);
	}
	for (i = 0; out[i] != NULL; i++) {
		st = svc_get_with_token(
		    port, "/api/tags", out[i][0] != '\0' ? out[i] : NULL);
		S_ASSERT(st == 401, "token '%s': %ld, want 401", out[i], st);
	}
}

/* client_tokens_file = client-tokens, loaded by systemd's LoadCredential=
 * into $CREDENTIALS_DIRECTORY: its tokens and the key's are let in,
 * others refused; a reload reads the file again. */
START_TEST(test_tokens_file_in_credentials)
{
	struct harness_fake *a;
	struct harness_daemon *d;
	char msg[1024], *creds, *conf;
	int port;

	H_BEGIN();
	a = fake_start("fakeA", "A", NULL);
	port = harness_free_port();
	creds = harness_tmpdir();
	harness_write_file(creds, "client-tokens",
	    "# tokens of the apps\n\n  tok-one  \ntok-two\n");
	conf = svc_conf(port, a,
	    "client_tokens = tok-key\nclient_tokens_file = client-tokens\n");
	d = svc_start(&(struct svc_opts){.conf = conf,
	    .env = (const char *const[]){
	        harness_strf("CREDENTIALS_DIRECTORY=%s", creds), NULL}});
	svc_check_tokens(port,
	    (const char *const[]){"tok-one", "tok-two", "tok-key", NULL},
	    (const char *const[]){"tok-three", "tok-on", "", NULL});
	/* Health stays open. */
	H_ASSERT_INT_EQ(
	    svc_get_with_token(port, "/ollama-pool/health", NULL), 200);

	harness_write_file(creds, "client-tokens", "tok-three\n");
	svc_reload(d, conf, msg, sizeof msg);
	S_ASSERT(svc_log_wait(d, "reload complete", 5000),
	    "the reload did not complete");
	svc_check_tokens(port,
	    (const char *const[]){"tok-three", "tok-key", NULL},
	    (const char *const[]){"tok-one", "tok-two", NULL});

	/* A file gone refuses the reload, naming the line and the path
	 * tried; the tokens read before stay. */
	unlink(harness_strf("%s/client-tokens", creds));
	svc_reload(d, conf, msg, sizeof msg);
	S_ASSERT(
	    svc_log_wait(d,
	        harness_strf("%s:4: client_tokens_file = client-tokens, in "
	                     "$CREDENTIALS_DIRECTORY: cannot open "
	                     "'%s/client-tokens': No such file",
	            d->conf_path, creds),
	        5000),
	    "the log does not say which file is missing");
	svc_check_tokens(port, (const char *const[]){"tok-three", NULL},
	    (const char *const[]){"tok-one", NULL});
	S_ASSERT(strstr(svc_log(d), "tok-") == NULL, "the log shows a token");
	svc_stop_clean(d);
}
END_TEST

/* Without $CREDENTIALS_DIRECTORY a relative client_tokens_file is taken
 * next to the configuration file, here from a reload on. */
START_TEST(test_tokens_file_next_to_config)
{
	struct harness_fake *a;
	struct harness_daemon *d;
	char msg[1024];
	int port;

	H_BEGIN();
	unsetenv("CREDENTIALS_DIRECTORY");
	a = fake_start("fakeA", "A", NULL);
	port = harness_free_port();
	d = svc_start(&(struct svc_opts){.conf = svc_conf(port, a, NULL)});
	H_ASSERT_INT_EQ(svc_get_with_token(port, "/api/tags", NULL), 200);
	harness_write_file(d->dir, "client-tokens", "tok-near\n");
	svc_reload(d, svc_conf(port, a, "client_tokens_file = client-tokens\n"),
	    msg, sizeof msg);
	S_ASSERT(svc_log_wait(d, "reload complete", 5000),
	    "the reload did not complete");
	svc_check_tokens(port, (const char *const[]){"tok-near", NULL},
	    (const char *const[]){"tok-far", "", NULL});
	svc_stop_clean(d);
}
END_TEST

/* ---- drain -----------------------------------------------------------------
 */

START_TEST(test_drain_finishes_stream)
{
	enum { N = 15, INTERVAL = 100 };
	struct harness_fake *a;
	struct harness_daemon *d;
	struct http_conn c;
	struct http_resp r;
	char msg[1024], v[512];
	double t_term, t_exit, deadline;
	int port, rc;

	H_BEGIN();
	a = fake_start("fakeA", "A", NULL);
	port = harness_free_port();
	/* A drain deadline far beyond the test's waits. */
	d = svc_start(&(struct svc_opts){
	    .conf = svc_conf(port, a, "shutdown_timeout = 20\n")});

	svc_stream_start(&c, port, N, INTERVAL);
	t_term = harness_now();
	svc_signal(d, SIGTERM);
	S_ASSERT(svc_notify_until(d, "STOPPING=1", 5000, msg, sizeof msg) == 1,
	    "no STOPPING=1");
	S_ASSERT(svc_log_wait(d,
	             harness_strf("stopped listening on "
	                          "127.0.0.1:%d",
	                 port),
	             5000),
	    "the listener was not closed");
	/* New connections are refused while the stream goes on. */
	H_ASSERT_INT_EQ(harness_connect_errno(port), ECONNREFUSED);
	H_ASSERT(harness_proc_alive(&d->proc),
	    "the daemon quit with a "
	    "stream in flight");
	/* systemctl status shows the drain. */
	rc = 0;
	deadline = harness_now() + 3.0;
	while (!rc && harness_now() < deadline) {
		if (svc_notify_next(d, 500, msg, sizeof msg) == 1 &&
		    svc_line_value(msg, "STATUS=", v, sizeof v) != NULL)
			rc = strstr(v, "draining") != NULL;
	}
	S_ASSERT(rc, "no STATUS= saying the daemon is draining");

	svc_stream_finish(&c, N, "A", "stream during the drain", &r);
	S_ASSERT(r.t_end - t_term >= 0.5,
	    "the stream ended %.2f s after "
	    "SIGTERM: it was not in flight",
	    r.t_end - t_term);
	http_resp_free(&r);
	/* With nothing left in flight the daemon closes the connection
	 * (it is not kept alive through a drain) and exits 0, long before
	 * shutdown_timeout. */
	S_ASSERT(http_conn_wait_closed(&c, 5000) == 1,
	    "the client "
	    "connection stayed open after its response during a drain");
	http_conn_close(&c);
	S_ASSERT(svc_wait_exit(d, 5000),
	    "the daemon did not exit once the "
	    "stream was done");
	t_exit = harness_now();
	S_ASSERT(
	    WIFEXITED(d->proc.wstatus) && WEXITSTATUS(d->proc.wstatus) == 0,
	    "wait status 0x%x, want exit 0", d->proc.wstatus);
	S_ASSERT(
	    t_exit - t_term < 10.0, "the drain took %.1f s", t_exit - t_term);
}
END_TEST

START_TEST(test_drain_ignores_reload)
{
	enum { N = 15, INTERVAL = 100 };
	struct harness_fake *a;
	struct harness_daemon *d;
	struct http_conn c;
	struct http_resp r;
	char msg[1024];
	int port, rc;

	/* A reload (logrotate, a racing systemctl reload) during a drain
	 * must not reopen the listeners nor tell systemd READY=1 again. */
	H_BEGIN();
	a = fake_start("fakeA", "A", NULL);
	port = harness_free_port();
	d = svc_start(&(struct svc_opts){
	    .conf = svc_conf(port, a, "shutdown_timeout = 20\n")});
	svc_stream_start(&c, port, N, INTERVAL);
	svc_signal(d, SIGTERM);
	S_ASSERT(svc_notify_until(d, "STOPPING=1", 5000, msg, sizeof msg) == 1,
	    "no STOPPING=1");
	S_ASSERT(svc_log_wait(d,
	             harness_strf("stopped listening on "
	                          "127.0.0.1:%d",
	                 port),
	             5000),
	    "the listener was not closed");
	svc_signal(d, SIGHUP);
	rc = svc_notify_until(d, "READY=1", 1000, msg, sizeof msg);
	S_ASSERT(rc != 1,
	    "READY=1 after STOPPING=1: a SIGHUP during the "
	    "drain was taken as a reload");
	S_ASSERT(harness_connect_errno(port) == ECONNREFUSED,
	    "a SIGHUP during "
	    "the drain reopened 127.0.0.1:%d",
	    port);
	svc_stream_finish(&c, N, "A", "stream during the drain", &r);
	http_resp_free(&r);
	http_conn_close(&c);
	S_ASSERT(svc_wait_exit(d, 5000), "no exit after the drain");
	S_ASSERT(
	    WIFEXITED(d->proc.wstatus) && WEXITSTATUS(d->proc.wstatus) == 0,
	    "wait status 0x%x", d->proc.wstatus);
}
END_TEST

START_TEST(test_drain_idle_keepalive)
{
	struct harness_fake *a;
	struct harness_daemon *d;
	struct http_conn c;
	struct http_resp r;
	int port;

	/* An idle kept-alive client does not hold up a drain. */
	H_BEGIN();
	a = fake_start("fakeA", "A", NULL);
	port = harness_free_port();
	d = svc_start(&(struct svc_opts){
	    .conf = svc_conf(port, a, "shutdown_timeout = 20\n")});
	http_conn_open(&c, port);
	H_ASSERT(http_conn_sendstr(&c,
	             "GET /api/version HTTP/1.1\r\n"
	             "Host: test\r\n\r\n",
	             5000) == 0,
	    "send");
	http_conn_read_response(&c, 0, 10000, &r);
	S_ASSERT(r.ok && r.status == 200, "GET: %ld %s", r.status, r.error);
	http_resp_free(&r);
	svc_signal(d, SIGTERM);
	S_ASSERT(http_conn_wait_closed(&c, 5000) == 1,
	    "the idle connection was not closed by the drain");
	S_ASSERT(svc_wait_exit(d, 5000), "no exit with only an idle client");
	S_ASSERT(
	    WIFEXITED(d->proc.wstatus) && WEXITSTATUS(d->proc.wstatus) == 0,
	    "wait status 0x%x", d->proc.wstatus);
	http_conn_close(&c);
}
END_TEST

START_TEST(test_drain_second_signal)
{
	struct harness_fake *a;
	struct harness_daemon *d;
	struct http_conn c;
	struct http_resp r;
	char msg[1024];
	double t;
	int port;

	H_BEGIN();
	a = fake_start("fakeA", "A", NULL);
	port = harness_free_port();
	d = svc_start(&(struct svc_opts){
	    .conf = svc_conf(port, a, "shutdown_timeout = 60\n")});
	svc_stream_start(&c, port, SVC_ENDLESS, 50);
	svc_signal(d, SIGTERM);
	/* The first signal is taken before the second is sent. */
	S_ASSERT(svc_notify_until(d, "STOPPING=1", 5000, msg, sizeof msg) == 1,
	    "no STOPPING=1");
	H_ASSERT(harness_proc_alive(&d->proc), "exited on the first signal");
	t = harness_now();
	svc_signal(d, SIGTERM);
	S_ASSERT(svc_wait_exit(d, 3000),
	    "a second SIGTERM did not end the "
	    "daemon within 3 s");
	S_ASSERT(harness_now() - t < 2.0, "the second SIGTERM took %.2f s",
	    harness_now() - t);
	S_ASSERT(
	    WIFEXITED(d->proc.wstatus) && WEXITSTATUS(d->proc.wstatus) == 0,
	    "wait status 0x%x", d->proc.wstatus);
	/* The stream was cut, not ended cleanly. */
	http_conn_read_response(&c, 0, 5000, &r);
	H_ASSERT(!r.ok && (c.eof || c.reset), "the endless stream %s",
	    r.ok ? "ended cleanly" : "was left open");
	http_resp_free(&r);
	http_conn_close(&c);

	/* SIGINT counts as the same signal. */
	d = svc_start(&(struct svc_opts){
	    .conf = svc_conf(port, a, "shutdown_timeout = 60\n")});
	svc_stream_start(&c, port, SVC_ENDLESS, 50);
	svc_signal(d, SIGINT);
	S_ASSERT(svc_notify_until(d, "STOPPING=1", 5000, msg, sizeof msg) == 1,
	    "no STOPPING=1 on SIGINT");
	svc_signal(d, SIGINT);
	S_ASSERT(svc_wait_exit(d, 3000), "a second SIGINT did not end it");
	http_conn_close(&c);
}
END_TEST

START_TEST(test_drain_shutdown_timeout)
{
	struct harness_fake *a;
	struct harness_daemon *d;
	struct http_conn c;
	struct http_resp r;
	double t, took;
	int port;

	H_BEGIN();
	a = fake_start("fakeA", "A", NULL);
	port = harness_free_port();
	d = svc_start(&(struct svc_opts){
	    .conf = svc_conf(port, a, "shutdown_timeout = 1\n")});
	svc_stream_start(&c, port, SVC_ENDLESS, 50);
	t = harness_now();
	svc_signal(d, SIGTERM);
	S_ASSERT(svc_wait_exit(d, 5000),
	    "not gone 5 s after SIGTERM with "
	    "shutdown_timeout = 1");
	took = harness_now() - t;
	S_ASSERT(took >= 0.9 && took <= 3.0,
	    "exited %.2f s after SIGTERM "
	    "with shutdown_timeout = 1",
	    took);
	S_ASSERT(
	    WIFEXITED(d->proc.wstatus) && WEXITSTATUS(d->proc.wstatus) == 0,
	    "wait status 0x%x, want 0", d->proc.wstatus);
	http_conn_read_response(&c, 0, 5000, &r);
	H_ASSERT(!r.ok && (c.eof || c.reset), "the endless stream %s",
	    r.ok ? "ended cleanly" : "was left open");
	http_resp_free(&r);
	http_conn_close(&c);
	S_ASSERT(svc_log_wait(d, "shutdown_timeout", 100),
	    "the log does not say the deadline cut the drain");
}
END_TEST

/* ---- logs -------------------------------------------------------------- */

/* Every line of text: 1 when each satisfies the check. */
static int
svc_each_line(
    const char *text, int (*ok)(const char *, size_t), char *bad, size_t badlen)
{
	const char *p = text;
	size_t n;

	while (*p != '\0') {
		n = strcspn(p, "\n");
		if (n > 0 && !ok(p, n)) {
			snprintf(bad, badlen, "%.*s", (int)n, p);
			return 0;
		}
		p += n;
		if (*p == '\n')
			p++;
	}
	return 1;
}

/* "<N>message", and no time: the journal stamps lines itself. */
static int
svc_journal_line(const char *p, size_t n)
{
	return n > 3 && p[0] == '<' && p[1] >= '0' && p[1] <= '7' &&
	    p[2] == '>' && p[3] != '<' &&
	    !(n > 8 && isdigit((unsigned char)p[3]) && p[7] == '-');
}

/* "2026-12-01T07:41:10.123Z ollama-pool[PID]: ": an RFC 3339 time in
 * UTC to the millisecond, then the name. */
static int
svc_plain_line(const char *p, size_t n)
{
	regex_t re;
	char line[2048];
	int ok;

	snprintf(line, sizeof line, "%.*s", (int)n, p);
	H_ASSERT(regcomp(&re,
	             "^[0-9]{4}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:"
	             "[0-6][0-9]\\.[0-9]{3}Z ollama-pool\\[[0-9]+\\]: ",
	             REG_EXTENDED | REG_NOSUB) == 0,
	    "regcomp");
	ok = regexec(&re, line, 0, NULL, 0) == 0;
	regfree(&re);
	return ok;
}

START_TEST(test_log_journal_prefix)
{
	struct harness_fake *a;
	struct harness_daemon *d;
	struct stat st;
	char *log, bad[512], msg[1024];
	int port;

	H_BEGIN();
	a = fake_start("fakeA", "A", NULL);

	/* Under the journal: <N> on every line, notice 5, info 6. */
	port = harness_free_port();
	H_ASSERT(stat("/dev/null", &st) == 0, "stat");
	d = svc_start(&(struct svc_opts){.conf = svc_conf(port, a, NULL),
	    .args = (const char *const[]){"-v", NULL},
	    .env = (const char *const[]){
	        harness_strf("JOURNAL_STREAM=%lu:%lu", (unsigned long)st.st_dev,
	            (unsigned long)st.st_ino),
	        NULL}});
	H_ASSERT_STR_EQ(svc_get_name(port, "/api/version"), "A");
	/* An error: a bad file on reload. */
	svc_reload(d, "[upstream]\npool_maxsize = banana\n", msg, sizeof msg);
	svc_stop_clean(d);
	log = svc_log(d);
	S_ASSERT(strstr(log, "<3>reload failed") != NULL,
	    "the failed reload is not logged at <3>:\n%s", log);
	S_ASSERT(svc_each_line(log, svc_journal_line, bad, sizeof bad),
	    "a line without a <N> prefix under JOURNAL_STREAM: \"%s\"", bad);
	S_ASSERT(
	    strstr(log, harness_strf("<5>listening on 127.0.0.1:%d", port)) !=
	        NULL,
	    "no <5> notice for the listener:\n%s", log);
	S_ASSERT(strstr(log, "<6>") != NULL &&
	        strstr(log, "\"GET /api/version\" 200") != NULL,
	    "no <6> access line:\n%s", log);

	/* Not under the journal: plain lines. */
	port = harness_free_port();
	d = svc_start(&(struct svc_opts){.conf = svc_conf(port, a, NULL),
	    .args = (const char *const[]){"-v", NULL}});
	H_ASSERT_STR_EQ(svc_get_name(port, "/api/version"), "A");
	svc_stop_clean(d);
	log = svc_log(d);
	S_ASSERT(svc_each_line(log, svc_plain_line, bad, sizeof bad),
	    "a line without TIME ollama-pool[pid] (an RFC 3339 UTC time to "
	    "the millisecond), or with a prefix, and no JOURNAL_STREAM: "
	    "\"%s\"",
	    bad);
	S_ASSERT(strstr(log, "notice: listening on") != NULL,
	    "no notice line:\n%s", log);
}
END_TEST

/* Lines of the log that are access lines: "METHOD PATH" STATUS. */
static int
svc_count_access(
    const char *log, const char *method, const char *path, int status)
{
	const char *p = log;
	char *want = harness_strf("\"%s %s\" %d ", method, path, status);
	int n = 0;

	while ((p = strstr(p, want)) != NULL) {
		n++;
		p += strlen(want);
	}
	return n;
}

static int
svc_count_all_access(const char *log)
{
	regex_t re;
	const char *p = log;
	char line[2048];
	size_t n;
	int count = 0;

	H_ASSERT(regcomp(&re, "\"[A-Z]+ /[^\" ]*\" [1-5][0-9][0-9] ",
	             REG_EXTENDED | REG_NOSUB) == 0,
	    "regcomp");
	while (*p != '\0') {
		n = strcspn(p, "\n");
		snprintf(line, sizeof line, "%.*s", (int)n, p);
		if (regexec(&re, line, 0, NULL, 0) == 0)
			count++;
		p += n;
		if (*p == '\n')
			p++;
	}
	regfree(&re);
	return count;
}

START_TEST(test_log_access_lines)
{
	struct harness_fake *a;
	struct harness_daemon *d;
	struct http_conn c;
	struct http_resp r;
	char *log;
	int port, i;

	H_BEGIN();
	a = fake_start("fakeA", "A", NULL);
	port = harness_free_port();
	d = svc_start(&(struct svc_opts){.conf = svc_conf(port, a, NULL),
	    .args = (const char *const[]){"-v", NULL}});

	H_ASSERT_STR_EQ(svc_get_name(port, "/api/version"), "A");
	http_post_json(svc_url(port, "/api/generate"),
	    "{\"model\":\"" MODEL "\",\"prompt\":\"p\",\"stream\":false}", &r);
	S_ASSERT(
	    r.ok && r.status == 200, "generate: %ld %s", r.status, r.error);
	http_resp_free(&r);
	http_get(svc_url(port, "/api/no-such-thing"), &r);
	S_ASSERT(r.ok && r.status == 404, "404: %ld %s", r.status, r.error);
	http_resp_free(&r);
	/* Three requests on one kept-alive connection: three lines. */
	http_conn_open(&c, port);
	for (i = 0; i < 3; i++) {
		H_ASSERT(http_conn_sendstr(&c,
		             "GET /api/tags HTTP/1.1\r\n"
		             "Host: test\r\n\r\n",
		             5000) == 0,
		    "send");
		http_conn_read_response(&c, 0, 10000, &r);
		S_ASSERT(r.ok && r.status == 200, "tags %d: %ld %s", i,
		    r.status, r.error);
		http_resp_free(&r);
	}
	http_conn_close(&c);
	svc_stop_clean(d);

	log = svc_log(d);
	S_ASSERT(svc_count_access(log, "GET", "/api/version", 200) == 1,
	    "want one access line for GET /api/version:\n%s", log);
	S_ASSERT(svc_count_access(log, "POST", "/api/generate", 200) == 1,
	    "want one access line for POST /api/generate:\n%s", log);
	S_ASSERT(svc_count_access(log, "GET", "/api/no-such-thing", 404) == 1,
	    "want one access line for the 404:\n%s", log);
	S_ASSERT(svc_count_access(log, "GET", "/api/tags", 200) == 3,
	    "want three access lines for the kept-alive GETs:\n%s", log);
	S_ASSERT(svc_count_all_access(log) == 6,
	    "want 6 access lines in all, "
	    "got %d:\n%s",
	    svc_count_all_access(log), log);

	/* Without -v, none. */
	port = harness_free_port();
	d = svc_start(&(struct svc_opts){.conf = svc_conf(port, a, NULL)});
	H_ASSERT_STR_EQ(svc_get_name(port, "/api/version"), "A");
	svc_stop_clean(d);
	log = svc_log(d);
	S_ASSERT(svc_count_all_access(log) == 0, "access lines without -v:\n%s",
	    log);
}
END_TEST

/* ---- the suite -------------------------------------------------------- */

static TCase *
svc_tcase(Suite *s, const char *name, double timeout)
{
	TCase *tc;

	tc = tcase_create(name);
	tcase_add_checked_fixture(tc, harness_setup, svc_teardown);
	tcase_set_timeout(tc, timeout);
	suite_add_tcase(s, tc);
	return tc;
}

static Suite *
service_suite(void)
{
	Suite *s;
	TCase *tc;

	s = suite_create("service");

	tc = svc_tcase(s, "units", 60);
	tcase_add_test(tc, test_units_verify);
	tcase_add_test(tc, test_units_security);
	tcase_add_test(tc, test_man_pages);

	tc = svc_tcase(s, "activation", 60);
	tcase_add_test(tc, test_socket_activation);
	tcase_add_test(tc, test_socket_activation_admin);

	tc = svc_tcase(s, "notify", 60);
	tcase_add_test(tc, test_notify_protocol);
	tcase_add_test(tc, test_notify_no_watchdog);

	tc = svc_tcase(s, "reload", 60);
	tcase_add_test(tc, test_reload_switches_upstream);
	tcase_add_test(tc, test_reload_invalid_keeps_old);
	tcase_add_test(tc, test_reload_rebinds_listen);
	tcase_add_test(tc, test_reload_listen_bind_fails);

	tc = svc_tcase(s, "resolve", 60);
	tcase_add_test(tc, test_reload_resolves_off_the_loop);
	tcase_add_test(tc, test_reload_queued_while_resolving);
	tcase_add_test(tc, test_stop_while_resolving);
	tcase_add_test(tc, test_reload_unresolvable_keeps_old);
	tcase_add_test(tc, test_check_config_resolves_names);

	tc = svc_tcase(s, "config", 60);
	tcase_add_test(tc, test_check_config_every_error_and_masked);
	tcase_add_test(tc, test_reload_logs_every_error);
	tcase_add_test(tc, test_tokens_file_in_credentials);
	tcase_add_test(tc, test_tokens_file_next_to_config);

	tc = svc_tcase(s, "drain", 60);
	tcase_add_test(tc, test_drain_finishes_stream);
	tcase_add_test(tc, test_drain_ignores_reload);
	tcase_add_test(tc, test_drain_idle_keepalive);
	tcase_add_test(tc, test_drain_second_signal);
	tcase_add_test(tc, test_drain_shutdown_timeout);

	tc = svc_tcase(s, "logs", 60);
	tcase_add_test(tc, test_log_journal_prefix);
	tcase_add_test(tc, test_log_access_lines);

	return s;
}

int
main(void)
{
	return harness_main(service_suite());
}
