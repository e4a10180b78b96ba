/*
 * soak: sends a million mixed requests through ollama-pool on loopback and
 * watches the daemon's descriptors and memory, which must stay flat.
 *
 * It starts the fake Ollama and the daemon itself, as the integration
 * harness does, but stands alone (libcurl only, no Check) so it can run
 * for minutes outside the test runner.  A bounded number of slots keep
 * requests in flight on one curl multi handle, plus raw sockets for the
 * malformed ones, mixed as apps and bad clients send them:
 *
 *   normal     GET /api/tags and /api/version, POST /api/show, a
 *              non-streamed /api/generate
 *   stream     a streamed /api/generate (NDJSON), /v1/chat/completions
 *              (SSE)
 *   cancel     the client gives up midway: its write callback refuses the
 *              first lines of a long stream, or its progress callback
 *              aborts a slow non-streamed generate before the answer
 *   fault      an order to the fake first (503 once, die after two lines,
 *              close without answering), then the request, which the
 *              daemon must retry or cut short
 *   malformed  framing attacks on raw sockets (bad Content-Length, bare LF,
 *              obs-fold, CL+TE, chunk size 0x5): a 4xx, then a close
 *
 * Most clients are naive, a new connection per request as apps make them;
 * one in five normal and streaming requests reuses a kept-alive one.
 *
 * Every answer is checked.  Errors the mix provokes on purpose are
 * counted apart from unexpected ones.  The exit status is 1 when anything
 * unexpected happened, when the daemon died or did not exit 0 on SIGTERM,
 * when its descriptors at the end (idle upstream connections aside)
 * differ from the start by more than a few, or when its RSS grew by more
 * than 16 MiB after warm-up; 2 on a usage or setup error.
 *
 * Usage: soak [-k] [-c inflight] [-n requests] [-r every] [-s seed]
 *             [-t seconds]
 * The binaries are $OLLAMA_POOL_BIN and $FAKE_OLLAMA_BIN, or
 * src/ollama-pool and tests/fake-ollama from the current directory.
 */

#define _GNU_SOURCE

#include <sys/types.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#if defined(__GNUC__)
#define SOAK_PRINTFLIKE(f, a) __attribute__((format(printf, f, a)))
#define SOAK_NORETURN __attribute__((noreturn))
#else
#define SOAK_PRINTFLIKE(f, a)
#define SOAK_NORETURN
#endif

#define SOAK_DEFAULT_N 1000000
#define SOAK_DEFAULT_INFLIGHT 64
#define SOAK_MAX_INFLIGHT 1000
#define SOAK_REPORT_MAX 100000
#define SOAK_READY_MS 10000 /* as the harness allows */
#define SOAK_REQ_TIMEOUT_MS 30000 /* a hang is an error, not a wait */
#define SOAK_RAW_TIMEOUT_MS 10000
#define SOAK_QUIESCE_MS 30000
#define SOAK_DRAIN_MS (SOAK_REQ_TIMEOUT_MS + 5000)
#define SOAK_STOP_MS 5000
#define SOAK_FD_SLACK 4
#define SOAK_RSS_SLACK_KB (16 * 1024)
#define SOAK_BODY_MAX (1024 * 1024)
#define SOAK_SHOW_ERRORS 20
#define SOAK_KEEPALIVE_ONE_IN 5
#define SOAK_MAX_CONNECTS 16

/*
 * The pool settings the fd check relies on, and a short retry backoff:
 * faulted requests are retried, and the default 0.3 s would make the one
 * fault of each kind allowed in flight (below) the run's bottleneck
 * without exercising anything more.
 */
#define SOAK_POOL_MAXSIZE 20
#define SOAK_CONF                                                              \
	"[upstream]\n"                                                         \
	"pool_maxsize = 20\n"                                                  \
	"pool_connections = 10\n"                                              \
	"[retry]\n"                                                            \
	"backoff_factor = 0.005\n"                                             \
	"backoff_max = 0.05\n"

#define MODEL "llama3.2"
#define J_GEN(extra) "{\"model\":\"" MODEL "\",\"prompt\":\"hi\"" extra "}"

enum group { G_NORMAL, G_STREAM, G_CANCEL, G_FAULT, G_MALFORMED, G_COUNT };
static const char *const group_names[G_COUNT] = {
    "normal", "stream", "cancel", "fault", "malformed"};

enum kind {
	K_TAGS,
	K_VERSION,
	K_SHOW,
	K_GENERATE,
	K_STREAM,
	K_SSE,
	K_CANCEL_STREAM,
	K_CANCEL_SLOW,
	K_FAULT_503,
	K_FAULT_DIE,
	K_FAULT_CLOSE,
	K_MALFORMED,
	K_COUNT
};

struct kind_info {
	const char *name;
	enum group group;
	int weight; /* out of 100 */
	const char *path;
	const char *body; /* POSTed as JSON; NULL: GET */
	const char *fault; /* order given to the fake first */
	const char *expect; /* what a good answer holds */
};

/*
 * The fake's fault queue is global and matches by path prefix, so each
 * fault kind has a path nothing else in the mix uses, and at most one of
 * each kind is in flight: every order is then taken by its own request.
 */
static const struct kind_info kinds[K_COUNT] = {
    [K_TAGS] = {"tags", G_NORMAL, 15, "/api/tags", NULL, NULL,
        "\"llama3.2:latest\""},
    [K_VERSION] = {"version", G_NORMAL, 15, "/api/version", NULL, NULL,
        "\"version\""},
    [K_SHOW] = {"show", G_NORMAL, 14, "/api/show", "{\"model\":\"" MODEL "\"}",
        NULL, "\"modelfile\""},
    [K_GENERATE] = {"generate", G_NORMAL, 15, "/api/generate",
        J_GEN(",\"stream\":false,\"options\":{\"num_predict\":8}"), NULL,
        "\"done\":true"},
    [K_STREAM] = {"stream", G_STREAM, 12, "/api/generate",
        J_GEN(",\"options\":{\"num_predict\":8}"), NULL, "\"done\":true"},
    [K_SSE] = {"sse", G_STREAM, 10, "/v1/chat/completions",
        "{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"user\","
        "\"content\":\"hi\"}],\"stream\":true,\"max_tokens\":8}",
        NULL, "data: [DONE]\n\n"},
    /* Long enough never to end before the client gives up; the body
     * alternates with a paced one, see job_body(). */
    [K_CANCEL_STREAM] = {"cancel_stream", G_CANCEL, 5, "/api/generate",
        J_GEN(",\"options\":{\"num_predict\":100000}"), NULL, NULL},
    /* Answered after 50 x 4 ms; the client gives up within 50 ms. */
    [K_CANCEL_SLOW] = {"cancel_slow", G_CANCEL, 3, "/api/generate",
        J_GEN(",\"stream\":false,\"options\":{\"num_predict\":50},"
              "\"fake_interval_ms\":4"),
        NULL, "\"done\":true"},
    [K_FAULT_503] = {"fault_503", G_FAULT, 2, "/api/ps", NULL,
        "{\"action\":\"status\",\"status\":503,\"count\":1,"
        "\"path\":\"/api/ps\"}",
        "\"models\""},
    [K_FAULT_DIE] = {"fault_die", G_FAULT, 2, "/api/chat",
        "{\"model\":\"" MODEL "\",\"messages\":[{\"role\":\"user\","
        "\"content\":\"hi\"}],\"options\":{\"num_predict\":20}}",
        "{\"action\":\"die_after\",\"chunks\":2,\"path\":\"/api/chat\"}",
        "\"done\":true"},
    [K_FAULT_CLOSE] = {"fault_close", G_FAULT, 2, "/api/embeddings",
        "{\"model\":\"nomic-embed-text\",\"prompt\":\"hi\"}",
        "{\"action\":\"close\",\"path\":\"/api/embeddings\"}", "\"embedding\""},
    [K_MALFORMED] = {"malformed", G_MALFORMED, 5, NULL, NULL, NULL, NULL},
};

static const char cancel_paced_body[] =
    J_GEN(",\"options\":{\"num_predict\":1000},\"fake_interval_ms\":2");

/* Framing attacks: each must get a 4xx and a close, never reach Ollama. */
static const char *const malformed[] = {
    "POST /api/generate HTTP/1.1\r\nHost: x\r\n"
    "Content-Length: +5\r\n\r\nhello",
    "GET /api/tags HTTP/1.1\nHost: x\n\n",
    "GET /api/tags HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
    "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "POST /api/generate HTTP/1.1\r\nHost: x\r\n"
    "Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
};
#define N_MALFORMED (sizeof malformed / sizeof malformed[0])

enum stage { ST_FAULT, ST_REQUEST, ST_RAW_CONNECT, ST_RAW_SEND, ST_RAW_READ };
enum outcome { OUT_OK, OUT_EXPECTED, OUT_UNEXPECTED };

struct job {
	int active;
	enum kind kind;
	enum stage stage;
	int keepalive;
	uint64_t seq;
	double t_start;
	CURL *easy;
	char errbuf[CURL_ERROR_SIZE];
	const char *body;
	long cancel_lines; /* cancel_stream: give up after these */
	double cancel_at; /* cancel_slow: give up then */
	int aborted; /* we gave up on purpose */
	int too_big;
	char *buf; /* the answer, NUL-terminated */
	size_t len, cap;
	size_t lines;
	int fd; /* raw */
	const char *raw;
	size_t raw_len, raw_off;
	double deadline;
	int reset;
};

struct kstats {
	uint64_t done, ok, expected, unexpected, keepalive;
};

/* Expected outcomes by kind and label, for the final report. */
struct label_count {
	enum kind kind;
	char label[24];
	uint64_t n;
};

struct proc {
	const char *name;
	pid_t pid;
	int exited;
	int wstatus;
};

struct snapshot {
	int fds;
	int upstream; /* of which sockets to the fake */
	long rss_kb;
	long long fake_used;
	long long fake_requests;
};

static struct {
	uint64_t n, report_every, warm_at;
	int inflight;
	double time_limit;
	uint64_t seed;
	int keep_dir;

	char dir[PATH_MAX];
	char conf_path[PATH_MAX + 32];
	char notify_path[PATH_MAX + 32];
	char daemon_log[PATH_MAX + 32];
	char fake_log[PATH_MAX + 32];
	int notify_fd;
	struct proc fake, daemon;
	int fake_port, daemon_port;
	char fake_base[64], daemon_base[64];
	char urls[K_COUNT][128];
	char fault_url[128];

	CURLM *multi;
	CURL *ctl; /* stats and metrics, blocking */
	struct curl_slist *json_hdrs;
	struct job *jobs;
	int nactive;
	int fault_busy[K_COUNT];
	uint64_t launched, done;

	struct kstats ks[K_COUNT];
	struct label_count labels[64];
	size_t nlabels;
	uint64_t unexpected, expected;
	int shown;

	double t0, t_last;
	uint64_t done_last;
	uint64_t next_report;
	struct snapshot start, warm;
	int have_warm;
	int failed;
	int stopped_by_time;
	int daemon_died;
} s;

static volatile sig_atomic_t soak_interrupted;

static void soak_stop_all(void);

static double
soak_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void SOAK_PRINTFLIKE(1, 2) SOAK_NORETURN soak_fatal(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "soak: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	soak_stop_all();
	exit(2);
}

static void *
soak_xrealloc(void *p, size_t n)
{
	if ((p = realloc(p, n)) == NULL)
		soak_fatal("out of memory");
	return p;
}

/* xorshift64*: the mix is reproducible from -s. */
static uint64_t
soak_rand(void)
{
	s.seed ^= s.seed >> 12;
	s.seed ^= s.seed << 25;
	s.seed ^= s.seed >> 27;
	return s.seed * 2685821657736338717ULL;
}

static unsigned
soak_rand_below(unsigned n)
{
	return (unsigned)((soak_rand() >> 33) % n);
}

/* ---- processes -------------------------------------------------------- */

static const char *
soak_bin(const char *env, const char *rel, const char *beside)
{
	static char buf[2][PATH_MAX + 64];
	static int which;
	char exe[PATH_MAX], *slash;
	const char *v;
	ssize_t n;

	v = getenv(env);
	if (v != NULL && *v != '\0')
		return v;
	if (access(rel, X_OK) == 0)
		return rel;
	/* Run from elsewhere: look beside our own binary (tests/). */
	n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n > 0) {
		exe[n] = '\0';
		if ((slash = strrchr(exe, '/')) != NULL)
			*slash = '\0';
		which = !which;
		snprintf(buf[which], sizeof buf[which], "%s/%s", exe, beside);
		if (access(buf[which], X_OK) == 0)
			return buf[which];
	}
	soak_fatal("cannot find %s: set %s", rel, env);
}

/* Forks and execs argv with stdout on out_fd and stderr on err_fd.  The
 * child dies with us, so a crash or kill of the soak leaves nothing. */
static pid_t
soak_spawn(const char *const *argv, int out_fd, int err_fd, const char *notify)
{
	sigset_t none;
	pid_t parent = getpid(), pid;
	int devnull;

	fflush(NULL);
	if ((pid = fork()) < 0)
		soak_fatal("fork: %s", strerror(errno));
	if (pid > 0)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
	if ((devnull = open("/dev/null", O_RDONLY)) >= 0 && devnull != 0) {
		dup2(devnull, 0);
		close(devnull);
	}
	if (out_fd >= 0 && out_fd != 1)
		dup2(out_fd, 1);
	if (err_fd >= 0 && err_fd != 2)
		dup2(err_fd, 2);
	/* Our sockets must not outlive us in the daemon's descriptor count. */
	closefrom(3);
	signal(SIGPIPE, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (notify != NULL)
		setenv("NOTIFY_SOCKET", notify, 1);
	else
		unsetenv("NOTIFY_SOCKET");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDNAMES");
	execv(argv[0], (char *const *)argv);
	dprintf(2, "soak: exec %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

/* 1 once the process has exited (and is reaped). */
static int
soak_proc_reap(struct proc *p)
{
	pid_t r;

	if (p->pid <= 0 || p->exited)
		return 1;
	r = waitpid(p->pid, &p->wstatus, WNOHANG);
	if (r == p->pid || (r < 0 && errno == ECHILD)) {
		p->exited = 1;
		return 1;
	}
	return 0;
}

static const char *
soak_wstatus(int st)
{
	static char buf[64];

	if (WIFEXITED(st))
		snprintf(buf, sizeof buf, "exit status %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, sizeof buf, "killed by signal %d (%s)%s",
		    WTERMSIG(st), strsignal(WTERMSIG(st)),
		    WCOREDUMP(st) ? ", core dumped" : "");
	else
		snprintf(buf, sizeof buf, "wait status 0x%x", st);
	return buf;
}

static int
soak_proc_wait(struct proc *p, int ms)
{
	double deadline = soak_now() + ms / 1000.0;

	while (!soak_proc_reap(p)) {
		if (soak_now() >= deadline)
			return 0;
		poll(NULL, 0, 10);
	}
	return 1;
}

/* SIGTERM, SIGKILL after SOAK_STOP_MS; 1 when it exited 0 by itself. */
static int
soak_proc_stop(struct proc *p)
{
	if (p->pid <= 0)
		return 1;
	if (!soak_proc_reap(p)) {
		kill(p->pid, SIGTERM);
		if (!soak_proc_wait(p, SOAK_STOP_MS)) {
			fprintf(stderr,
			    "soak: %s (pid %d) ignored SIGTERM for "
			    "%d ms; SIGKILL\n",
			    p->name, (int)p->pid, SOAK_STOP_MS);
			kill(p->pid, SIGKILL);
			soak_proc_wait(p, SOAK_STOP_MS);
			return 0;
		}
	}
	return WIFEXITED(p->wstatus) && WEXITSTATUS(p->wstatus) == 0;
}

static void
soak_stop_all(void)
{
	soak_proc_stop(&s.daemon);
	soak_proc_stop(&s.fake);
}

static void
soak_print_tail(const char *path, int lines)
{
	char buf[16384];
	ssize_t n;
	off_t size;
	int fd, nl = 0;
	char *p;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return;
	size = lseek(fd, 0, SEEK_END);
	if (size > (off_t)sizeof buf - 1)
		lseek(fd, size - (off_t)sizeof buf + 1, SEEK_SET);
	else
		lseek(fd, 0, SEEK_SET);
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	for (p = buf + n; p > buf; p--) {
		if (p[-1] == '\n' && ++nl > lines)
			break;
	}
	fprintf(stderr, "---- tail of %s\n%s---- end\n", path, p);
}

static int
soak_open_log(const char *path)
{
	int fd;

	fd = open(
	    path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		soak_fatal("open %s: %s", path, strerror(errno));
	return fd;
}

/* The fake prints its port on stdout once it listens. */
static void
soak_fake_start(void)
{
	const char *argv[] = {
	    soak_bin("FAKE_OLLAMA_BIN", "tests/fake-ollama", "fake-ollama"),
	    "-l", "127.0.0.1:0", NULL};
	char line[32];
	size_t used = 0;
	double deadline;
	struct pollfd pfd;
	int pipefd[2], logfd;
	ssize_t n;
	char *end;
	long port;

	if (pipe2(pipefd, O_CLOEXEC) != 0)
		soak_fatal("pipe: %s", strerror(errno));
	logfd = soak_open_log(s.fake_log);
	s.fake.name = "fake-ollama";
	s.fake.pid = soak_spawn(argv, pipefd[1], logfd, NULL);
	close(pipefd[1]);
	close(logfd);
	deadline = soak_now() + SOAK_READY_MS / 1000.0;
	while (memchr(line, '\n', used) == NULL && used < sizeof line - 1) {
		if (soak_now() >= deadline)
			soak_fatal("%s printed no port within %d ms", argv[0],
			    SOAK_READY_MS);
		pfd.fd = pipefd[0];
		pfd.events = POLLIN;
		if (poll(&pfd, 1, 50) <= 0)
			continue;
		n = read(pipefd[0], line + used, sizeof line - 1 - used);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			soak_print_tail(s.fake_log, 20);
			soak_fatal(
			    "%s exited before printing its port", argv[0]);
		}
		used += (size_t)n;
	}
	close(pipefd[0]);
	line[used] = '\0';
	port = strtol(line, &end, 10);
	if (end == line || *end != '\n' || port <= 0 || port > 65535)
		soak_fatal("%s printed \"%s\", not a port", argv[0], line);
	s.fake_port = (int)port;
}

static int
soak_free_port(void)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof sin;
	int fd, port;

	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		soak_fatal("socket: %s", strerror(errno));
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) != 0)
		soak_fatal("bind 127.0.0.1:0: %s", strerror(errno));
	port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

/* 1 when the datagram holds the line READY=1. */
static int
soak_notify_ready(const char *msg, size_t len)
{
	const char *p = msg, *end = msg + len, *nl;

	while (p < end) {
		if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
			nl = end;
		if (nl - p == 7 && memcmp(p, "READY=1", 7) == 0)
			return 1;
		p = nl + 1;
	}
	return 0;
}

/* Ready is the READY=1 datagram on NOTIFY_SOCKET, as systemd sees it. */
static void
soak_daemon_start(void)
{
	const char *argv[12];
	struct sockaddr_un sun;
	char listen_arg[64], upstream[64], msg[4096];
	struct pollfd pfd;
	double deadline;
	int logfd, fd, argc = 0;
	ssize_t n;
	FILE *f;

	if ((f = fopen(s.conf_path, "we")) == NULL)
		soak_fatal("%s: %s", s.conf_path, strerror(errno));
	fputs(SOAK_CONF, f);
	if (fclose(f) != 0)
		soak_fatal("%s: %s", s.conf_path, strerror(errno));

	if (strlen(s.notify_path) >= sizeof sun.sun_path)
		soak_fatal("notify socket path too long: %s", s.notify_path);
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
		soak_fatal("socket AF_UNIX: %s", strerror(errno));
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, s.notify_path, strlen(s.notify_path) + 1);
	if (bind(fd, (struct sockaddr *)&sun, sizeof sun) != 0)
		soak_fatal("bind %s: %s", s.notify_path, strerror(errno));
	s.notify_fd = fd;

	s.daemon_port = soak_free_port();
	snprintf(listen_arg, sizeof listen_arg, "127.0.0.1:%d", s.daemon_port);
	snprintf(upstream, sizeof upstream, "http://127.0.0.1:%d", s.fake_port);
	argv[argc++] = soak_bin(
	    "OLLAMA_POOL_BIN", "src/ollama-pool", "../src/ollama-pool");
	argv[argc++] = "-l";
	argv[argc++] = listen_arg;
	argv[argc++] = "-u";
	argv[argc++] = upstream;
	argv[argc++] = "-c";
	argv[argc++] = s.conf_path;
	argv[argc] = NULL;

	logfd = soak_open_log(s.daemon_log);
	s.daemon.name = "ollama-pool";
	s.daemon.pid = soak_spawn(argv, logfd, logfd, s.notify_path);
	close(logfd);

	deadline = soak_now() + SOAK_READY_MS / 1000.0;
	for (;;) {
		n = recv(s.notify_fd, msg, sizeof msg, MSG_DONTWAIT);
		if (n > 0 && soak_notify_ready(msg, (size_t)n))
			break;
		if (n > 0)
			continue;
		if (soak_proc_reap(&s.daemon)) {
			soak_print_tail(s.daemon_log, 20);
			soak_fatal("the daemon exited before READY=1 (wait "
			           "status 0x%x)",
			    s.daemon.wstatus);
		}
		if (soak_now() >= deadline) {
			soak_print_tail(s.daemon_log, 20);
			soak_fatal("the daemon sent no READY=1 within %d ms",
			    SOAK_READY_MS);
		}
		pfd.fd = s.notify_fd;
		pfd.events = POLLIN;
		poll(&pfd, 1, 50);
	}
}

/*
 * Reads what the daemon sent since (STATUS= lines, about one a second).
 * It must be read as systemd would: the daemon's notify send blocks once
 * net.unix.max_dgram_qlen datagrams (10 by default) wait unread.
 */
static void
soak_notify_drain(void)
{
	char msg[4096];

	while (s.notify_fd >= 0 &&
	    recv(s.notify_fd, msg, sizeof msg, MSG_DONTWAIT) > 0)
		;
}

/* ---- what the daemon and the fake say about themselves ---------------- */

static long
soak_status_kb(pid_t pid, const char *field)
{
	char path[64], line[256];
	size_t flen = strlen(field);
	long v = -1;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	if ((f = fopen(path, "re")) == NULL)
		return -1;
	while (fgets(line, sizeof line, f) != NULL) {
		if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
			v = strtol(line + flen + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return v;
}

/*
 * Counts the daemon's descriptors, and among them its sockets connected
 * to the fake, found by inode in /proc/PID/net/tcp.  Those are the pool's
 * idle connections, kept on purpose, so the flat-descriptor check leaves
 * them out; it does not take the daemon's own gauge for it.
 */
static int
soak_fd_count(pid_t pid, int *upstream)
{
	char path[64], link[64], line[512];
	unsigned long *inodes = NULL, ino;
	size_t ninodes = 0, i;
	unsigned rport, st;
	struct dirent *de;
	int n = 0;
	FILE *f;
	DIR *d;

	*upstream = 0;
	snprintf(path, sizeof path, "/proc/%d/net/tcp", (int)pid);
	if ((f = fopen(path, "re")) != NULL) {
		while (fgets(line, sizeof line, f) != NULL) {
			/* sl local rem st tx:rx tr:when retr uid tmo inode */
			if (sscanf(line,
			        " %*u: %*x:%*x %*x:%x %x %*x:%*x "
			        "%*x:%*x %*x %*u %*u %lu",
			        &rport, &st, &ino) != 3)
				continue;
			if ((int)rport != s.fake_port || ino == 0)
				continue;
			inodes = soak_xrealloc(
			    inodes, (ninodes + 1) * sizeof *inodes);
			inodes[ninodes++] = ino;
		}
		fclose(f);
	}
	snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
	if ((d = opendir(path)) == NULL) {
		free(inodes);
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		ssize_t len;
		char fdpath[sizeof path + sizeof de->d_name + 1];

		if (de->d_name[0] == '.')
			continue;
		n++;
		snprintf(fdpath, sizeof fdpath, "%s/%s", path, de->d_name);
		if ((len = readlink(fdpath, link, sizeof link - 1)) <= 0)
			continue;
		link[len] = '\0';
		if (sscanf(link, "socket:[%lu]", &ino) != 1)
			continue;
		for (i = 0; i < ninodes; i++) {
			if (inodes[i] == ino) {
				(*upstream)++;
				break;
			}
		}
	}
	closedir(d);
	free(inodes);
	return n;
}

struct soak_text {
	char *p;
	size_t len, cap;
};

static size_t
soak_text_cb(char *p, size_t size, size_t n, void *arg)
{
	struct soak_text *t = arg;
	size_t len = size * n;

	if (t->len + len + 1 > t->cap) {
		t->cap = (t->len + len + 1) * 2;
		t->p = soak_xrealloc(t->p, t->cap);
	}
	memcpy(t->p + t->len, p, len);
	t->len += len;
	t->p[t->len] = '\0';
	return len;
}

/* A blocking GET on its own connection; the answer's body, or NULL. */
static char *
soak_fetch(const char *url)
{
	struct soak_text t = {NULL, 0, 0};
	long status = 0;
	CURLcode rc;

	curl_easy_reset(s.ctl);
	curl_easy_setopt(s.ctl, CURLOPT_URL, url);
	curl_easy_setopt(s.ctl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(s.ctl, CURLOPT_TIMEOUT_MS, 10000L);
	curl_easy_setopt(s.ctl, CURLOPT_FORBID_REUSE, 1L);
	curl_easy_setopt(s.ctl, CURLOPT_WRITEFUNCTION, soak_text_cb);
	curl_easy_setopt(s.ctl, CURLOPT_WRITEDATA, &t);
	rc = curl_easy_perform(s.ctl);
	curl_easy_getinfo(s.ctl, CURLINFO_RESPONSE_CODE, &status);
	if (rc != CURLE_OK || status != 200 || t.p == NULL) {
		fprintf(stderr, "soak: GET %s: %s, status %ld\n", url,
		    curl_easy_strerror(rc), status);
		free(t.p);
		return NULL;
	}
	return t.p;
}

/* "key":NUMBER in a flat JSON text; -1 if absent. */
static long long
soak_json_num(const char *text, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof pat, "\"%s\":", key);
	if (text == NULL || (p = strstr(text, pat)) == NULL)
		return -1;
	return strtoll(p + strlen(pat), NULL, 10);
}

/* An unlabelled sample of the Prometheus exposition; -1 if absent. */
static long long
soak_metric(const char *text, const char *name)
{
	size_t len = strlen(name);
	const char *p = text;

	while (p != NULL && *p != '\0') {
		if (strncmp(p, name, len) == 0 && p[len] == ' ')
			return strtoll(p + len + 1, NULL, 10);
		if ((p = strchr(p, '\n')) != NULL)
			p++;
	}
	return -1;
}

static long long
soak_clients_open(void)
{
	char url[128], *text;
	long long v;

	snprintf(url, sizeof url, "%s/ollama-pool/metrics", s.daemon_base);
	if ((text = soak_fetch(url)) == NULL)
		return -1;
	v = soak_metric(text, "ollama_pool_client_connections_open");
	free(text);
	return v;
}

static void
soak_snapshot(struct snapshot *sn)
{
	char url[128], *text;

	sn->fds = soak_fd_count(s.daemon.pid, &sn->upstream);
	sn->rss_kb = soak_status_kb(s.daemon.pid, "VmRSS");
	snprintf(url, sizeof url, "%s/_fake/stats", s.fake_base);
	text = soak_fetch(url);
	sn->fake_used = soak_json_num(text, "connections_used");
	sn->fake_requests = soak_json_num(text, "requests");
	free(text);
}

/* ---- the mix ---------------------------------------------------------- */

static void
soak_count_label(enum kind k, const char *label)
{
	size_t i;

	for (i = 0; i < s.nlabels; i++) {
		if (s.labels[i].kind == k &&
		    strcmp(s.labels[i].label, label) == 0) {
			s.labels[i].n++;
			return;
		}
	}
	if (s.nlabels == sizeof s.labels / sizeof s.labels[0])
		return;
	s.labels[s.nlabels].kind = k;
	snprintf(
	    s.labels[s.nlabels].label, sizeof s.labels[0].label, "%s", label);
	s.labels[s.nlabels++].n = 1;
}

static void
soak_job_end(struct job *j, enum outcome out, const char *label, CURLcode rc,
    long status)
{
	struct kstats *ks = &s.ks[j->kind];
	const char *stage;
	size_t show;

	ks->done++;
	ks->keepalive += j->keepalive;
	switch (out) {
	case OUT_OK:
		ks->ok++;
		break;
	case OUT_EXPECTED:
		ks->expected++;
		s.expected++;
		soak_count_label(j->kind, label);
		break;
	case OUT_UNEXPECTED:
		ks->unexpected++;
		s.unexpected++;
		/* A dead daemon fails everything after: stop at once. */
		if (soak_proc_reap(&s.daemon))
			s.daemon_died = 1;
		if (s.shown++ >= SOAK_SHOW_ERRORS) {
			if (s.shown == SOAK_SHOW_ERRORS + 1)
				fprintf(stderr,
				    "soak: further unexpected "
				    "errors are counted, not shown\n");
			break;
		}
		stage = j->stage == ST_FAULT ? " (fault order)" : "";
		show = j->len < 300 ? j->len : 300;
		fprintf(stderr,
		    "soak: UNEXPECTED #%" PRIu64 " %s%s%s after "
		    "%.3f s: %s; curl %d %s%s%s; status %ld; body %zu bytes "
		    "\"%.*s\"\n",
		    j->seq, kinds[j->kind].name,
		    j->keepalive ? " keep-alive" : "", stage,
		    soak_now() - j->t_start, label, (int)rc,
		    curl_easy_strerror(rc), j->errbuf[0] ? ": " : "", j->errbuf,
		    status, j->len, (int)show, j->buf ? j->buf : "");
		break;
	}
	if (kinds[j->kind].fault != NULL)
		s.fault_busy[j->kind] = 0;
	if (j->fd >= 0)
		close(j->fd);
	j->fd = -1;
	j->active = 0;
	s.nactive--;
	s.done++;
}

static void
soak_buf_add(struct job *j, const char *p, size_t len)
{
	const char *q, *end = p + len;

	if (j->len + len + 1 > j->cap) {
		j->cap = j->len + len + 1 > 2 * j->cap ? j->len + len + 1
		                                       : 2 * j->cap;
		j->buf = soak_xrealloc(j->buf, j->cap);
	}
	memcpy(j->buf + j->len, p, len);
	j->len += len;
	j->buf[j->len] = '\0';
	for (q = p; q < end && (q = memchr(q, '\n', (size_t)(end - q))) != NULL;
	     q++)
		j->lines++;
}

static size_t
soak_write_cb(char *p, size_t size, size_t n, void *arg)
{
	struct job *j = arg;
	size_t len = size * n;

	if (j->len + len > SOAK_BODY_MAX) {
		j->too_big = 1;
		return 0;
	}
	soak_buf_add(j, p, len);
	/* The app stops reading midway and drops the connection. */
	if (j->kind == K_CANCEL_STREAM && j->stage == ST_REQUEST &&
	    (long)j->lines >= j->cancel_lines) {
		j->aborted = 1;
		return 0;
	}
	return len;
}

static int
soak_xferinfo_cb(void *arg, curl_off_t dltotal, curl_off_t dlnow,
    curl_off_t ultotal, curl_off_t ulnow)
{
	struct job *j = arg;

	(void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
	if (soak_now() >= j->cancel_at) {
		j->aborted = 1;
		return 1;
	}
	return 0;
}

static void
soak_curl_start(struct job *j)
{
	const struct kind_info *k = &kinds[j->kind];
	CURL *e = j->easy;

	curl_easy_reset(e);
	j->len = j->lines = 0;
	j->aborted = j->too_big = 0;
	j->errbuf[0] = '\0';
	if (j->buf != NULL)
		j->buf[0] = '\0';
	curl_easy_setopt(e, CURLOPT_PRIVATE, j);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, j->errbuf);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, soak_write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, j);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)SOAK_REQ_TIMEOUT_MS);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	if (j->stage == ST_FAULT) {
		/* Control traffic to the fake: kept alive, not measured. */
		curl_easy_setopt(e, CURLOPT_URL, s.fault_url);
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, s.json_hdrs);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, k->fault);
		curl_easy_setopt(
		    e, CURLOPT_POSTFIELDSIZE, (long)strlen(k->fault));
	} else {
		curl_easy_setopt(e, CURLOPT_URL, s.urls[j->kind]);
		if (j->body != NULL) {
			curl_easy_setopt(e, CURLOPT_HTTPHEADER, s.json_hdrs);
			curl_easy_setopt(e, CURLOPT_POSTFIELDS, j->body);
			curl_easy_setopt(
			    e, CURLOPT_POSTFIELDSIZE, (long)strlen(j->body));
		}
		if (!j->keepalive) {
			/* As naive apps do: connect, ask, hang up. */
			curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
			curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
		}
		if (j->kind == K_CANCEL_SLOW) {
			curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
			curl_easy_setopt(
			    e, CURLOPT_XFERINFOFUNCTION, soak_xferinfo_cb);
			curl_easy_setopt(e, CURLOPT_XFERINFODATA, j);
		}
	}
	if (curl_multi_add_handle(s.multi, e) != CURLM_OK)
		soak_fatal("curl_multi_add_handle failed");
}

/* Whether a complete 200 answer is the right one for its kind. */
static int
soak_good_body(const struct job *j)
{
	const char *expect = kinds[j->kind].expect, *last;
	size_t elen;

	if (j->buf == NULL || expect == NULL)
		return 0;
	switch (j->kind) {
	case K_STREAM:
	case K_FAULT_DIE:
		/* num_predict lines, then the final one with done:true. */
		if (j->lines != (j->kind == K_STREAM ? 9u : 21u) || j->len < 2)
			return 0;
		last = j->buf + j->len - 1;
		while (last > j->buf && last[-1] != '\n')
			last--;
		return strstr(last, expect) != NULL;
	case K_SSE:
		elen = strlen(expect);
		return j->len >= elen &&
		    memcmp(j->buf + j->len - elen, expect, elen) == 0;
	default:
		return strstr(j->buf, expect) != NULL;
	}
}

static void
soak_curl_done(struct job *j, CURLcode rc)
{
	long status = 0;
	int good;

	curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_multi_remove_handle(s.multi, j->easy);
	if (j->stage == ST_FAULT) {
		if (rc != CURLE_OK || status != 200) {
			soak_job_end(j, OUT_UNEXPECTED,
			    "the fake refused "
			    "the fault order",
			    rc, status);
			return;
		}
		j->stage = ST_REQUEST;
		soak_curl_start(j);
		return;
	}
	good = rc == CURLE_OK && status == 200 && soak_good_body(j);
	if (j->too_big) {
		soak_job_end(j, OUT_UNEXPECTED, "answer too large", rc, status);
		return;
	}
	switch (j->kind) {
	case K_CANCEL_STREAM:
		if (rc == CURLE_WRITE_ERROR && j->aborted)
			soak_job_end(j, OUT_EXPECTED, "cancelled", rc, status);
		else
			soak_job_end(j, OUT_UNEXPECTED,
			    "not cancelled as "
			    "planned",
			    rc, status);
		return;
	case K_CANCEL_SLOW:
		if (rc == CURLE_ABORTED_BY_CALLBACK && j->aborted)
			soak_job_end(j, OUT_EXPECTED, "cancelled", rc, status);
		else if (good) /* answered before the client gave up */
			soak_job_end(j, OUT_OK, NULL, rc, status);
		else
			soak_job_end(
			    j, OUT_UNEXPECTED, "bad answer", rc, status);
		return;
	case K_FAULT_DIE:
		/*
		 * The upstream died two lines into the stream.  Once bytes
		 * reached the client the daemon must cut the client short,
		 * never end the body cleanly; before that it may retry
		 * (a complete answer) or give up with 502.
		 */
		if (good)
			soak_job_end(j, OUT_OK, NULL, rc, status);
		else if (rc == CURLE_PARTIAL_FILE || rc == CURLE_RECV_ERROR ||
		    rc == CURLE_GOT_NOTHING)
			soak_job_end(j, OUT_EXPECTED, "truncated", rc, status);
		else if (rc == CURLE_OK && status == 502)
			soak_job_end(j, OUT_EXPECTED, "502", rc, status);
		else
			soak_job_end(j, OUT_UNEXPECTED,
			    rc == CURLE_OK
			        ? "a clean end after the upstream died"
			        : "bad answer",
			    rc, status);
		return;
	default:
		/* 503 once, or a close without answer: retried, so 200. */
		if (good)
			soak_job_end(j, OUT_OK, NULL, rc, status);
		else
			soak_job_end(
			    j, OUT_UNEXPECTED, "bad answer", rc, status);
		return;
	}
}

/* ---- raw sockets for the malformed requests --------------------------- */

static void
soak_raw_fail(struct job *j, const char *what)
{
	char msg[128];

	snprintf(msg, sizeof msg, "raw: %s: %s", what, strerror(errno));
	soak_job_end(j, OUT_UNEXPECTED, msg, CURLE_OK, 0);
}

static void
soak_raw_start(struct job *j)
{
	struct sockaddr_in sin;

	j->len = j->lines = 0;
	j->reset = 0;
	j->raw = malformed[j->seq % N_MALFORMED];
	j->raw_len = strlen(j->raw);
	j->raw_off = 0;
	j->deadline = soak_now() + SOAK_RAW_TIMEOUT_MS / 1000.0;
	j->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (j->fd < 0) {
		soak_raw_fail(j, "socket");
		return;
	}
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((uint16_t)s.daemon_port);
	if (connect(j->fd, (struct sockaddr *)&sin, sizeof sin) == 0)
		j->stage = ST_RAW_SEND;
	else if (errno == EINPROGRESS)
		j->stage = ST_RAW_CONNECT;
	else
		soak_raw_fail(j, "connect");
}

static void
soak_raw_done(struct job *j)
{
	char label[16];
	int status = 0;

	if (j->buf != NULL && j->len >= 12 &&
	    strncmp(j->buf, "HTTP/1.1 ", 9) == 0)
		status = atoi(j->buf + 9);
	if (status < 400 || status > 499)
		soak_job_end(j, OUT_UNEXPECTED, "malformed request: no 4xx",
		    CURLE_OK, status);
	else if (j->reset)
		/* The answer may be lost to a reset: a close must be FIN. */
		soak_job_end(j, OUT_UNEXPECTED,
		    "malformed request: reset, "
		    "not closed",
		    CURLE_OK, status);
	else {
		snprintf(label, sizeof label, "%d+close", status);
		soak_job_end(j, OUT_EXPECTED, label, CURLE_OK, status);
	}
}

static void
soak_raw_event(struct job *j, short revents)
{
	char buf[4096];
	socklen_t len;
	ssize_t n;
	int err;

	if (j->stage == ST_RAW_CONNECT) {
		len = sizeof err;
		if (getsockopt(j->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
			err = errno;
		if (err != 0) {
			errno = err;
			soak_raw_fail(j, "connect");
			return;
		}
		j->stage = ST_RAW_SEND;
	}
	if (j->stage == ST_RAW_SEND) {
		n = send(j->fd, j->raw + j->raw_off, j->raw_len - j->raw_off,
		    MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		/* The daemon may answer and close before all was sent. */
		if (n < 0 && errno != EPIPE && errno != ECONNRESET) {
			soak_raw_fail(j, "send");
			return;
		}
		if (n >= 0)
			j->raw_off += (size_t)n;
		if (n >= 0 && j->raw_off < j->raw_len)
			return;
		j->stage = ST_RAW_READ;
		revents |= POLLIN;
	}
	if (!(revents & (POLLIN | POLLHUP | POLLERR)))
		return;
	for (;;) {
		n = recv(j->fd, buf, sizeof buf, 0);
		if (n > 0) {
			if (j->len + (size_t)n > SOAK_BODY_MAX) {
				soak_job_end(j, OUT_UNEXPECTED,
				    "raw: answer "
				    "too large",
				    CURLE_OK, 0);
				return;
			}
			soak_buf_add(j, buf, (size_t)n);
			continue;
		}
		if (n == 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN)
			return;
		if (errno != ECONNRESET) {
			soak_raw_fail(j, "recv");
			return;
		}
		j->reset = 1;
		break;
	}
	soak_raw_done(j);
}

/* ---- launching -------------------------------------------------------- */

static enum kind
soak_pick(void)
{
	unsigned r;
	int k;

	for (;;) {
		r = soak_rand_below(100);
		for (k = 0; k < K_COUNT; k++) {
			if (r < (unsigned)kinds[k].weight)
				break;
			r -= (unsigned)kinds[k].weight;
		}
		if (k == K_COUNT)
			k = K_TAGS;
		/* One fault of a kind at a time, so orders cannot cross. */
		if (kinds[k].fault == NULL || !s.fault_busy[k])
			return (enum kind)k;
	}
}

static void
soak_launch(struct job *j)
{
	const struct kind_info *k;

	memset(j->errbuf, 0, sizeof j->errbuf);
	j->active = 1;
	j->seq = s.launched++;
	j->kind = soak_pick();
	k = &kinds[j->kind];
	j->t_start = soak_now();
	j->fd = -1;
	j->body = k->body;
	j->keepalive = (k->group == G_NORMAL || k->group == G_STREAM) &&
	    soak_rand_below(SOAK_KEEPALIVE_ONE_IN) == 0;
	s.nactive++;
	if (k->group == G_MALFORMED) {
		soak_raw_start(j);
		return;
	}
	if (j->kind == K_CANCEL_STREAM) {
		/* Half stream as fast as the fake can (backpressure paths),
		 * half paced like a model (an idle stream is dropped). */
		if (j->seq & 1)
			j->body = cancel_paced_body;
		j->cancel_lines = 1 + (long)soak_rand_below(4);
	}
	if (j->kind == K_CANCEL_SLOW)
		j->cancel_at = j->t_start + (5 + soak_rand_below(46)) / 1000.0;
	if (k->fault != NULL)
		s.fault_busy[j->kind] = 1;
	j->stage = k->fault != NULL ? ST_FAULT : ST_REQUEST;
	soak_curl_start(j);
}

/* ---- reporting -------------------------------------------------------- */

static void
soak_print_snapshot(const char *when, const struct snapshot *sn)
{
	printf("soak: %s: daemon fds %d (%d upstream), rss %.1f MiB; fake "
	       "connections_used %lld, requests %lld\n",
	    when, sn->fds, sn->upstream, sn->rss_kb / 1024.0, sn->fake_used,
	    sn->fake_requests);
}

static void
soak_report(const char *when)
{
	uint64_t by_group[G_COUNT] = {0}, keepalive = 0;
	struct snapshot sn;
	double now = soak_now(), el = now - s.t0;
	char kinds_text[256];
	size_t off = 0;
	int k, g;

	soak_notify_drain();
	for (k = 0; k < K_COUNT; k++) {
		by_group[kinds[k].group] += s.ks[k].done;
		keepalive += s.ks[k].keepalive;
	}
	for (g = 0; g < G_COUNT; g++)
		off += (size_t)snprintf(kinds_text + off,
		    sizeof kinds_text - off, "%s%s %" PRIu64, g ? " " : "",
		    group_names[g], by_group[g]);
	soak_snapshot(&sn);
	printf("soak: %s %" PRIu64 "/%" PRIu64 " in %.1f s, %.0f req/s "
	       "(last %.0f) | %s (keep-alive %" PRIu64
	       ") | errors unexpected %" PRIu64 " expected %" PRIu64
	       " | daemon fds %d (%d upstream) rss "
	       "%.1f MiB | fake connections_used %lld\n",
	    when, s.done, s.n, el, el > 0 ? s.done / el : 0.0,
	    now > s.t_last ? (s.done - s.done_last) / (now - s.t_last) : 0.0,
	    kinds_text, keepalive, s.unexpected, s.expected, sn.fds,
	    sn.upstream, sn.rss_kb / 1024.0, sn.fake_used);
	s.t_last = now;
	s.done_last = s.done;
	if (!s.have_warm && s.done >= s.warm_at) {
		/* Allocator arenas, buffers and the pool have grown to their
		 * working size: growth from here on is what counts. */
		s.warm = sn;
		s.have_warm = 1;
	}
}

static void
soak_report_kinds(void)
{
	size_t i;
	int k;

	printf("soak: %-14s %9s %9s %9s %10s %10s\n", "kind", "done", "ok",
	    "expected", "unexpected", "keep-alive");
	for (k = 0; k < K_COUNT; k++)
		printf("soak: %-14s %9" PRIu64 " %9" PRIu64 " %9" PRIu64
		       " %10" PRIu64 " %10" PRIu64 "\n",
		    kinds[k].name, s.ks[k].done, s.ks[k].ok, s.ks[k].expected,
		    s.ks[k].unexpected, s.ks[k].keepalive);
	for (i = 0; i < s.nlabels; i++)
		printf("soak: expected: %s %s: %" PRIu64 "\n",
		    kinds[s.labels[i].kind].name, s.labels[i].label,
		    s.labels[i].n);
}

/* ---- the run ---------------------------------------------------------- */

static void
soak_on_signal(int sig)
{
	(void)sig;
	soak_interrupted = 1;
}

static void
soak_usage(void)
{
	fprintf(stderr,
	    "usage: soak [-k] [-c inflight] [-n requests] "
	    "[-r every] [-s seed] [-t seconds]\n"
	    "  -c  requests in flight (default %d)\n"
	    "  -k  keep the work directory (logs, configuration)\n"
	    "  -n  requests to send (default %d)\n"
	    "  -r  report every this many requests (default n/10, at most "
	    "%d)\n"
	    "  -s  seed of the mix (default 1)\n"
	    "  -t  stop sending after this many seconds (default none)\n",
	    SOAK_DEFAULT_INFLIGHT, SOAK_DEFAULT_N, SOAK_REPORT_MAX);
	exit(2);
}

static unsigned long long
soak_arg_num(const char *arg, unsigned long long min, unsigned long long max)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || v < min || v > max ||
	    *arg == '-')
		soak_usage();
	return v;
}

static void
soak_args(int argc, char **argv)
{
	int ch;

	s.n = SOAK_DEFAULT_N;
	s.inflight = SOAK_DEFAULT_INFLIGHT;
	s.seed = 1;
	while ((ch = getopt(argc, argv, "c:hkn:r:s:t:")) != -1) {
		switch (ch) {
		case 'c':
			s.inflight =
			    (int)soak_arg_num(optarg, 1, SOAK_MAX_INFLIGHT);
			break;
		case 'k':
			s.keep_dir = 1;
			break;
		case 'n':
			s.n = soak_arg_num(optarg, 1, UINT64_MAX / 2);
			break;
		case 'r':
			s.report_every =
			    soak_arg_num(optarg, 1, UINT64_MAX / 2);
			break;
		case 's':
			s.seed = soak_arg_num(optarg, 1, UINT64_MAX);
			break;
		case 't':
			s.time_limit =
			    (double)soak_arg_num(optarg, 1, 86400 * 365);
			break;
		default:
			soak_usage();
		}
	}
	if (optind != argc)
		soak_usage();
	if (s.report_every == 0) {
		s.report_every = s.n / 10 > 0 ? s.n / 10 : 1;
		if (s.report_every > SOAK_REPORT_MAX)
			s.report_every = SOAK_REPORT_MAX;
	}
	/* Warm-up is the first report period. */
	s.warm_at = s.report_every;
}

static void
soak_setup(void)
{
	const char *tmp = getenv("TMPDIR");
	int k, i;

	snprintf(s.dir, sizeof s.dir, "%s/soak.XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	if (mkdtemp(s.dir) == NULL)
		soak_fatal("mkdtemp %s: %s", s.dir, strerror(errno));
	snprintf(s.conf_path, sizeof s.conf_path, "%s/ollama-pool.conf", s.dir);
	snprintf(s.notify_path, sizeof s.notify_path, "%s/notify", s.dir);
	snprintf(s.daemon_log, sizeof s.daemon_log, "%s/daemon.log", s.dir);
	snprintf(s.fake_log, sizeof s.fake_log, "%s/fake.log", s.dir);
	s.notify_fd = -1;

	soak_fake_start();
	soak_daemon_start();
	snprintf(s.fake_base, sizeof s.fake_base, "http://127.0.0.1:%d",
	    s.fake_port);
	snprintf(s.daemon_base, sizeof s.daemon_base, "http://127.0.0.1:%d",
	    s.daemon_port);
	snprintf(
	    s.fault_url, sizeof s.fault_url, "%s/_fake/fault", s.fake_base);
	for (k = 0; k < K_COUNT; k++)
		if (kinds[k].path != NULL)
			snprintf(s.urls[k], sizeof s.urls[k], "%s%s",
			    s.daemon_base, kinds[k].path);

	if ((s.multi = curl_multi_init()) == NULL ||
	    (s.ctl = curl_easy_init()) == NULL)
		soak_fatal("curl init failed");
	/* Kept-alive clients reuse these; naive ones never enter it. */
	curl_multi_setopt(
	    s.multi, CURLMOPT_MAXCONNECTS, (long)SOAK_MAX_CONNECTS);
	s.json_hdrs = curl_slist_append(NULL, "Content-Type: application/json");
	if (s.json_hdrs == NULL)
		soak_fatal("out of memory");
	s.jobs = calloc((size_t)s.inflight, sizeof *s.jobs);
	if (s.jobs == NULL)
		soak_fatal("out of memory");
	for (i = 0; i < s.inflight; i++) {
		s.jobs[i].fd = -1;
		if ((s.jobs[i].easy = curl_easy_init()) == NULL)
			soak_fatal("curl_easy_init failed");
	}
}

/* Runs the mix until all is sent and answered, the time is up or we are
 * interrupted. */
static void
soak_loop(void)
{
	struct curl_waitfd *wfds;
	struct job **wjobs, *j;
	char *priv;
	double now, t_alive = 0, drain_deadline = 0;
	CURLMsg *msg;
	int i, nw, running, left, sending = 1, timeout;

	wfds = calloc((size_t)s.inflight, sizeof *wfds);
	wjobs = calloc((size_t)s.inflight, sizeof *wjobs);
	if (wfds == NULL || wjobs == NULL)
		soak_fatal("out of memory");
	s.next_report = s.report_every;
	for (;;) {
		now = soak_now();
		if (sending &&
		    (soak_interrupted ||
		        (s.time_limit > 0 && now - s.t0 >= s.time_limit))) {
			sending = 0;
			s.stopped_by_time = !soak_interrupted;
			drain_deadline = now + SOAK_DRAIN_MS / 1000.0;
			printf("soak: %s: no more requests; waiting for %d in "
			       "flight\n",
			    soak_interrupted ? "interrupted"
			                     : "time limit reached",
			    s.nactive);
		}
		for (i = 0; sending && i < s.inflight && s.launched < s.n; i++)
			if (!s.jobs[i].active)
				soak_launch(&s.jobs[i]);
		if (s.nactive == 0)
			break;
		if (!sending && now >= drain_deadline)
			break;

		nw = 0;
		timeout = 100;
		for (i = 0; i < s.inflight; i++) {
			j = &s.jobs[i];
			if (!j->active)
				continue;
			if (j->kind == K_CANCEL_SLOW &&
			    j->stage == ST_REQUEST && !j->aborted)
				/* The progress callback runs when curl runs. */
				timeout = 5;
			if (j->fd < 0)
				continue;
			wfds[nw].fd = j->fd;
			wfds[nw].events = j->stage == ST_RAW_READ
			    ? CURL_WAIT_POLLIN
			    : CURL_WAIT_POLLOUT;
			wfds[nw].revents = 0;
			wjobs[nw++] = j;
		}
		if (curl_multi_poll(
		        s.multi, wfds, (unsigned)nw, timeout, NULL) != CURLM_OK)
			soak_fatal("curl_multi_poll failed");
		now = soak_now();
		for (i = 0; i < nw; i++) {
			j = wjobs[i];
			if (!j->active || j->fd != wfds[i].fd)
				continue;
			if (wfds[i].revents != 0)
				soak_raw_event(j, wfds[i].revents);
			else if (now >= j->deadline)
				soak_job_end(j, OUT_UNEXPECTED,
				    "raw: no answer "
				    "and close in time",
				    CURLE_OK, 0);
		}
		curl_multi_perform(s.multi, &running);
		while ((msg = curl_multi_info_read(s.multi, &left)) != NULL) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(
			    msg->easy_handle, CURLINFO_PRIVATE, &priv);
			soak_curl_done((struct job *)priv, msg->data.result);
		}
		if (s.done >= s.next_report && s.done < s.n) {
			soak_report("progress");
			s.next_report += s.report_every;
		}
		if (now - t_alive >= 0.5) {
			t_alive = now;
			soak_notify_drain();
			if (soak_proc_reap(&s.daemon))
				s.daemon_died = 1;
			if (soak_proc_reap(&s.fake)) {
				printf("soak: FAIL: the fake died during the "
				       "run (%s)\n",
				    soak_wstatus(s.fake.wstatus));
				s.failed = 1;
				break;
			}
		}
		if (s.daemon_died) {
			printf("soak: FAIL: the daemon died during the run "
			       "(%s)\n",
			    soak_wstatus(s.daemon.wstatus));
			s.failed = 1;
			break;
		}
	}
	/* What is left hung past every bound. */
	for (i = 0; i < s.inflight; i++) {
		j = &s.jobs[i];
		if (!j->active)
			continue;
		if (j->fd < 0)
			curl_multi_remove_handle(s.multi, j->easy);
		soak_job_end(j, OUT_UNEXPECTED, "still in flight at the end",
		    CURLE_OK, 0);
	}
	free(wfds);
	free(wjobs);
}

/* Closes every client connection we hold, then waits for the daemon to
 * see them all gone (our own metrics connection is the one left). */
static long long
soak_quiesce(long long baseline)
{
	double deadline;
	long long open = -1;
	int i;

	for (i = 0; i < s.inflight; i++)
		curl_easy_cleanup(s.jobs[i].easy);
	curl_multi_cleanup(s.multi); /* closes the kept-alive ones */
	s.multi = NULL;
	deadline = soak_now() + SOAK_QUIESCE_MS / 1000.0;
	while (soak_now() < deadline) {
		soak_notify_drain();
		open = soak_clients_open();
		if (open >= 0 && open <= baseline)
			break;
		poll(NULL, 0, 50);
	}
	return open;
}

int
main(int argc, char **argv)
{
	struct sigaction sa;
	struct snapshot end;
	long long baseline, open;
	long hwm;
	double el;
	int fd_delta, daemon_clean, i;

	soak_args(argc, argv);
	setvbuf(stdout, NULL, _IOLBF, 0);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = soak_on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		soak_fatal("curl_global_init failed");

	soak_setup();
	baseline = soak_clients_open();
	if (baseline < 0)
		soak_fatal("no ollama_pool_client_connections_open in "
		           "/ollama-pool/metrics");
	/* Let the daemon close the metrics connection before counting. */
	poll(NULL, 0, 100);
	soak_snapshot(&s.start);
	printf("soak: %" PRIu64 " requests, %d in flight, seed %" PRIu64
	       "%s; daemon pid %d on port %d, fake pid %d on port %d; work "
	       "dir %s\n",
	    s.n, s.inflight, s.seed, s.time_limit > 0 ? ", time limit set" : "",
	    (int)s.daemon.pid, s.daemon_port, (int)s.fake.pid, s.fake_port,
	    s.dir);
	soak_print_snapshot("start", &s.start);

	s.t0 = s.t_last = soak_now();
	soak_loop();
	el = soak_now() - s.t0;
	soak_report("done");
	if (!s.have_warm) {
		/* Too short a run to warm up: compare with the start. */
		s.warm = s.start;
	}

	if (!s.daemon_died) {
		open = soak_quiesce(baseline);
		poll(NULL, 0, 100);
	} else
		open = -1;
	soak_snapshot(&end);
	hwm = soak_status_kb(s.daemon.pid, "VmHWM");
	soak_report_kinds();
	soak_print_snapshot("start", &s.start);
	soak_print_snapshot(
	    s.have_warm ? "warm " : "warm (none: the start)", &s.warm);
	soak_print_snapshot("end  ", &end);
	printf("soak: %" PRIu64 " requests in %.1f s: %.0f req/s; daemon "
	       "VmHWM %.1f MiB\n",
	    s.done, el, el > 0 ? s.done / el : 0.0, hwm / 1024.0);

	if (s.unexpected > 0) {
		printf("soak: FAIL: %" PRIu64 " unexpected errors\n",
		    s.unexpected);
		s.failed = 1;
	}
	if (!s.daemon_died && (open < 0 || open > baseline)) {
		printf("soak: FAIL: the daemon still counts %lld client "
		       "connections open after %d ms (%lld at the start)\n",
		    open, SOAK_QUIESCE_MS, baseline);
		s.failed = 1;
	}
	fd_delta = (end.fds - end.upstream) - (s.start.fds - s.start.upstream);
	if (s.daemon_died)
		; /* said already; nothing left to measure */
	else if (end.fds < 0 || fd_delta > SOAK_FD_SLACK ||
	    fd_delta < -SOAK_FD_SLACK) {
		printf("soak: FAIL: daemon descriptors, idle upstream ones "
		       "aside, went from %d to %d\n",
		    s.start.fds - s.start.upstream, end.fds - end.upstream);
		s.failed = 1;
	}
	if (!s.daemon_died && end.upstream > SOAK_POOL_MAXSIZE) {
		printf("soak: FAIL: %d upstream connections open, more than "
		       "pool_maxsize %d\n",
		    end.upstream, SOAK_POOL_MAXSIZE);
		s.failed = 1;
	}
	if (!s.daemon_died &&
	    (end.rss_kb < 0 ||
	        end.rss_kb - s.warm.rss_kb > SOAK_RSS_SLACK_KB)) {
		printf("soak: FAIL: daemon RSS grew from %.1f MiB after "
		       "warm-up to %.1f MiB\n",
		    s.warm.rss_kb / 1024.0, end.rss_kb / 1024.0);
		s.failed = 1;
	}

	curl_easy_cleanup(s.ctl);
	curl_slist_free_all(s.json_hdrs);
	for (i = 0; i < s.inflight; i++)
		free(s.jobs[i].buf);
	free(s.jobs);
	curl_global_cleanup();

	daemon_clean = soak_proc_stop(&s.daemon);
	soak_proc_stop(&s.fake);
	if (!daemon_clean && !s.daemon_died) {
		printf("soak: FAIL: the daemon did not exit 0 on SIGTERM "
		       "(%s)\n",
		    soak_wstatus(s.daemon.wstatus));
		s.failed = 1;
	}
	if (s.notify_fd >= 0)
		close(s.notify_fd);
	if (s.failed || s.keep_dir) {
		if (s.failed)
			soak_print_tail(s.daemon_log, 30);
		printf("soak: logs kept in %s\n", s.dir);
	} else {
		unlink(s.conf_path);
		unlink(s.notify_path);
		unlink(s.daemon_log);
		unlink(s.fake_log);
		rmdir(s.dir);
	}
	if (soak_interrupted) {
		printf("soak: interrupted\n");
		return 1;
	}
	printf("soak: %s%s\n", s.failed ? "FAIL" : "PASS",
	    s.stopped_by_time ? " (stopped by -t before all requests were sent)"
	                      : "");
	return s.failed ? 1 : 0;
}
