/*
 * Integration test harness for ollama-pool; see harness.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sys/types.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "harness.h"

#define HARNESS_MAX_PROCS 16
#define HARNESS_MAX_DIRS 16
#define HARNESS_LOG_TAIL 6000

static char harness_name[256] = "unnamed";
static char harness_logdir[2048];
static struct harness_proc *harness_procs[HARNESS_MAX_PROCS];
static int harness_nprocs;
static void **harness_allocs; /* grown as needed: none is ever lost */
static int harness_nallocs, harness_allocs_cap;
static char *harness_dirs[HARNESS_MAX_DIRS];
static int harness_ndirs;
static int harness_dumping;

static void harness_rmtree(const char *);

/* ---- small things ----------------------------------------------------- */

static void *
harness_xrealloc(void *p, size_t n)
{
	void *q;

	q = realloc(p, n ? n : 1);
	if (q == NULL)
		ck_abort_msg("out of memory (%zu bytes)", n);
	return q;
}

static char *
harness_xstrdup(const char *s)
{
	char *p;

	p = strdup(s);
	if (p == NULL)
		ck_abort_msg("out of memory");
	return p;
}

static void
harness_track(void *p)
{
	if (harness_nallocs == harness_allocs_cap) {
		harness_allocs_cap =
		    harness_allocs_cap ? harness_allocs_cap * 2 : 1024;
		harness_allocs = harness_xrealloc(harness_allocs,
		    harness_allocs_cap * sizeof *harness_allocs);
	}
	harness_allocs[harness_nallocs++] = p;
}

void
harness_buf_add(struct harness_buf *b, const void *p, size_t n)
{
	size_t want;

	if (b->len + n + 1 > b->cap) {
		want = b->cap ? b->cap : 256;
		while (want < b->len + n + 1)
			want *= 2;
		b->data = harness_xrealloc(b->data, want);
		b->cap = want;
	}
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void
harness_buf_addf(struct harness_buf *b, const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		ck_abort_msg("out of memory");
	harness_buf_add(b, s, (size_t)n);
	free(s);
}

void
harness_buf_consume(struct harness_buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
	} else {
		memmove(b->data, b->data + n, b->len - n);
		b->len -= n;
	}
	if (b->data != NULL)
		b->data[b->len] = '\0';
}

void
harness_buf_free(struct harness_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

char *
harness_strf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		ck_abort_msg("out of memory");
	harness_track(s);
	return s;
}

double
harness_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
harness_ms_left(double deadline)
{
	double left;

	left = (deadline - harness_now()) * 1000.0;
	if (left <= 0)
		return 0;
	return (int)left + 1;
}

/* ---- naming and logs -------------------------------------------------- */

const char *
harness_log_dir(void)
{
	char exe[1536], *slash;
	ssize_t n;
	const char *env;

	if (harness_logdir[0] != '\0')
		return harness_logdir;
	/* Next to the test binary, i.e. in the build tree, which is writable
	 * even when the source tree is not (distcheck). */
	env = getenv("HARNESS_LOG_DIR");
	if (env != NULL && *env != '\0') {
		snprintf(harness_logdir, sizeof harness_logdir, "%s", env);
	} else {
		n = readlink("/proc/self/exe", exe, sizeof exe - 1);
		if (n <= 0) {
			snprintf(harness_logdir, sizeof harness_logdir,
			    "tests/logs");
		} else {
			exe[n] = '\0';
			slash = strrchr(exe, '/');
			if (slash != NULL)
				*slash = '\0';
			snprintf(harness_logdir, sizeof harness_logdir,
			    "%s/logs", exe);
		}
	}
	if (mkdir(harness_logdir, 0755) != 0 && errno != EEXIST)
		ck_abort_msg("mkdir %s: %s", harness_logdir, strerror(errno));
	return harness_logdir;
}

void
harness_begin(const char *name)
{
	const char *n;
	size_t i;

	n = name != NULL ? name : tcase_name();
	if (n == NULL || *n == '\0')
		n = "unnamed";
	snprintf(harness_name, sizeof harness_name, "%s", n);
	/* Names become file names. */
	for (i = 0; harness_name[i] != '\0'; i++) {
		if (!isalnum((unsigned char)harness_name[i]) &&
		    harness_name[i] != '-' && harness_name[i] != '_' &&
		    harness_name[i] != '.')
			harness_name[i] = '_';
	}
}

const char *
harness_test_name(void)
{
	return harness_name;
}

static void
harness_print_tail(const char *path)
{
	char buf[HARNESS_LOG_TAIL + 1];
	off_t size, from;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "---- %s: %s\n", path, strerror(errno));
		return;
	}
	size = lseek(fd, 0, SEEK_END);
	from = size > HARNESS_LOG_TAIL ? size - HARNESS_LOG_TAIL : 0;
	n = pread(fd, buf, HARNESS_LOG_TAIL, from);
	close(fd);
	if (n < 0)
		n = 0;
	buf[n] = '\0';
	fprintf(stderr,
	    "---- tail of %s (%lld bytes) ----\n%s%s---- end of %s\n", path,
	    (long long)size, buf, (n > 0 && buf[n - 1] != '\n') ? "\n" : "",
	    path);
}

static void
harness_rmdirs(void)
{
	int i;

	for (i = 0; i < harness_ndirs; i++) {
		harness_rmtree(harness_dirs[i]);
		free(harness_dirs[i]);
	}
	harness_ndirs = 0;
}

void
harness_failed(void)
{
	int i;

	/* A failure inside the dump (or a second one) must not recurse. */
	if (harness_dumping)
		return;
	harness_dumping = 1;
	fprintf(
	    stderr, "==== %s failed; process logs follow ====\n", harness_name);
	for (i = 0; i < harness_nprocs; i++) {
		if (harness_procs[i] != NULL &&
		    harness_procs[i]->log_path[0] != '\0')
			harness_print_tail(harness_procs[i]->log_path);
	}
	fflush(stderr);
	/* Teardown will not run after a failure: remove the temp dirs now.
	 * The processes die with us (PR_SET_PDEATHSIG). */
	harness_rmdirs();
	harness_dumping = 0;
}

/* ---- process logs ----------------------------------------------------- */

/* The log file as it is now, NUL-terminated; the caller frees it. */
static char *
harness_log_read(const struct harness_proc *p)
{
	struct harness_buf b = {0};
	char chunk[65536];
	ssize_t n;
	int fd;

	harness_buf_add(&b, "", 0);
	fd = open(p->log_path, O_RDONLY | O_CLOEXEC);
	while (fd >= 0 && (n = read(fd, chunk, sizeof chunk)) > 0)
		harness_buf_add(&b, chunk, (size_t)n);
	if (fd >= 0)
		close(fd);
	return b.data;
}

char *
harness_log_text(const struct harness_proc *p)
{
	char *text = harness_log_read(p);

	harness_track(text);
	return text;
}

int
harness_log_count(const struct harness_proc *p, const char *needle)
{
	char *text = harness_log_read(p);
	const char *t = text;
	int n = 0;

	while ((t = strstr(t, needle)) != NULL) {
		n++;
		t += strlen(needle);
	}
	free(text);
	return n;
}

/* The first of needles the log holds, by index; -1 when none. */
static int
harness_log_find(const struct harness_proc *p, const char *const *needles)
{
	char *text = harness_log_read(p);
	int i;

	for (i = 0; needles[i] != NULL; i++)
		if (strstr(text, needles[i]) != NULL)
			break;
	free(text);
	return needles[i] != NULL ? i : -1;
}

/* Asks look of the log (-1: not yet) at once and after every write to
 * it, until it answers or timeout_ms pass; its last answer. */
static int
harness_log_watch(struct harness_proc *p,
    int (*look)(const struct harness_proc *, const void *), const void *arg,
    int timeout_ms)
{
	double deadline = harness_now() + timeout_ms / 1000.0;
	char evbuf[4096];
	struct pollfd pfd;
	int ifd, found;

	/* inotify wakes us on every write: nothing is polled on a clock. */
	ifd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	if (ifd < 0 || inotify_add_watch(ifd, p->log_path, IN_MODIFY) < 0)
		ck_abort_msg("inotify on %s: %s", p->log_path, strerror(errno));
	for (;;) {
		found = look(p, arg);
		if (found >= 0 || harness_ms_left(deadline) == 0)
			break;
		pfd.fd = ifd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		poll(&pfd, 1, harness_ms_left(deadline));
		while (read(ifd, evbuf, sizeof evbuf) > 0)
			;
	}
	close(ifd);
	return found;
}

static int
harness_log_look_any(const struct harness_proc *p, const void *needles)
{
	return harness_log_find(p, needles);
}

int
harness_log_wait_any(
    struct harness_proc *p, const char *const *needles, int timeout_ms)
{
	return harness_log_watch(p, harness_log_look_any, needles, timeout_ms);
}

int
harness_log_wait(struct harness_proc *p, const char *needle, int timeout_ms)
{
	const char *needles[2] = {needle, NULL};

	return harness_log_wait_any(p, needles, timeout_ms) == 0;
}

/* ---- setup and teardown ----------------------------------------------- */

void
harness_setup(void)
{
	/* A peer closing early must be an error return, not a dead test. */
	signal(SIGPIPE, SIG_IGN);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		ck_abort_msg("curl_global_init failed");
	harness_begin(NULL);
	harness_log_dir();
}

static void harness_proc_stop(struct harness_proc *);

static void
harness_rmtree(const char *dir)
{
	struct dirent *de;
	DIR *d;
	char path[4400];

	d = opendir(dir);
	if (d != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (strcmp(de->d_name, ".") == 0 ||
			    strcmp(de->d_name, "..") == 0)
				continue;
			snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
			unlink(path);
		}
		closedir(d);
	}
	rmdir(dir);
}

void
harness_teardown(void)
{
	char problems[2048];
	struct harness_proc *p;
	size_t off = 0;
	int i, sig;

	problems[0] = '\0';
	/* Stop everything first, in reverse start order (daemon before its
	 * fake), and only then report, so nothing is left running. */
	for (i = harness_nprocs - 1; i >= 0; i--) {
		p = harness_procs[i];
		if (p == NULL || p->pid <= 0)
			continue;
		harness_proc_stop(p);
		if (p->died_early && off < sizeof problems) {
			off += (size_t)snprintf(problems + off,
			    sizeof problems - off,
			    "%s (pid %d) died during the test (wait status "
			    "0x%x); ",
			    p->label, (int)p->pid, p->wstatus);
		} else if (p->exited && WIFSIGNALED(p->wstatus)) {
			sig = WTERMSIG(p->wstatus);
			if (sig != SIGTERM && sig != SIGKILL &&
			    off < sizeof problems)
				off += (size_t)snprintf(problems + off,
				    sizeof problems - off,
				    "%s (pid %d) was killed by signal %d; ",
				    p->label, (int)p->pid, sig);
		} else if (p->exited && WIFEXITED(p->wstatus) &&
		    WEXITSTATUS(p->wstatus) != 0 && off < sizeof problems) {
			off += (size_t)snprintf(problems + off,
			    sizeof problems - off,
			    "%s (pid %d) exited %d after SIGTERM; ", p->label,
			    (int)p->pid, WEXITSTATUS(p->wstatus));
		}
	}
	/* The logs are dumped while the processes' records still exist. */
	if (problems[0] != '\0')
		harness_failed();
	harness_rmdirs();
	for (i = 0; i < harness_nallocs; i++)
		free(harness_allocs[i]);
	free(harness_allocs);
	harness_allocs = NULL;
	harness_nallocs = harness_allocs_cap = 0;
	if (problems[0] != '\0')
		ck_abort_msg("%s", problems);
	harness_nprocs = 0;
}

/* ---- processes -------------------------------------------------------- */

static int
harness_pidfd_open(pid_t pid)
{
#ifdef SYS_pidfd_open
	return (int)syscall(SYS_pidfd_open, pid, 0);
#else
	(void)pid;
	errno = ENOSYS;
	return -1;
#endif
}

static void
harness_register(struct harness_proc *p)
{
	if (harness_nprocs >= HARNESS_MAX_PROCS)
		ck_abort_msg("too many processes in one test");
	harness_procs[harness_nprocs++] = p;
}

/*
 * Forks and execs argv with stdout and stderr on the given descriptors.
 * The child dies with the test process, so that a test Check _exit()s on
 * failure or kills on timeout leaves nothing behind.
 */
static pid_t
harness_spawn(
    const char *const *argv, int out_fd, int err_fd, const char *notify_socket)
{
	sigset_t none;
	pid_t parent, pid;
	int devnull;

	parent = getpid();
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		ck_abort_msg("fork: %s", strerror(errno));
	if (pid > 0)
		return pid;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
	devnull = open("/dev/null", O_RDONLY);
	if (devnull >= 0 && devnull != 0) {
		dup2(devnull, 0);
		close(devnull);
	}
	if (out_fd >= 0 && out_fd != 1)
		dup2(out_fd, 1);
	if (err_fd >= 0 && err_fd != 2)
		dup2(err_fd, 2);
		/* No descriptor of the test (curl sockets, other pipes) may
		 * leak into the child and keep a connection or pipe open. */
#ifdef SYS_close_range
	syscall(SYS_close_range, 3U, ~0U, 0U);
#endif
	/* We ignore SIGPIPE; exec would hand that on. */
	signal(SIGPIPE, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (notify_socket != NULL)
		setenv("NOTIFY_SOCKET", notify_socket, 1);
	else
		unsetenv("NOTIFY_SOCKET");
	/* Socket activation is for the systemd tests to set up, never an
	 * accident of the environment the suite runs in. */
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDNAMES");
	execvp(argv[0], (char *const *)argv); /* PATH for tools */
	dprintf(2, "harness: exec %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

static int
harness_open_log(const char *label, char *path, size_t pathlen)
{
	int fd;

	snprintf(path, pathlen, "%s/%s.%s.log", harness_log_dir(), harness_name,
	    label);
	fd = open(
	    path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		ck_abort_msg("open %s: %s", path, strerror(errno));
	return fd;
}

/* Reaps the process if it has exited; 1 when it has. */
static int
harness_proc_reap(struct harness_proc *p)
{
	pid_t r;
	int st;

	if (p->exited)
		return 1;
	r = waitpid(p->pid, &st, WNOHANG);
	if (r == p->pid) {
		p->exited = 1;
		p->wstatus = st;
		return 1;
	}
	if (r < 0 && errno == ECHILD) {
		p->exited = 1;
		return 1;
	}
	return 0;
}

/* Waits up to timeout_ms for the process to exit; 1 when it has. */
static int
harness_proc_wait(struct harness_proc *p, int timeout_ms)
{
	struct pollfd pfd;
	double deadline;

	deadline = harness_now() + timeout_ms / 1000.0;
	for (;;) {
		if (harness_proc_reap(p))
			return 1;
		if (harness_ms_left(deadline) == 0)
			return 0;
		if (p->pidfd >= 0) {
			pfd.fd = p->pidfd;
			pfd.events = POLLIN;
			pfd.revents = 0;
			poll(&pfd, 1, harness_ms_left(deadline));
		} else {
			/* No pidfd (old kernel): poll the exit status. */
			poll(NULL, 0, 10);
		}
	}
}

int
harness_proc_alive(struct harness_proc *p)
{
	return p->pid > 0 && !harness_proc_reap(p);
}

static void
harness_proc_stop(struct harness_proc *p)
{
	if (p->pid <= 0)
		return;
	/* Dead before anyone signalled it: it crashed or quit by itself. */
	if (!p->signalled && harness_proc_reap(p))
		p->died_early = 1;
	if (!p->exited) {
		p->signalled = 1;
		kill(p->pid, SIGTERM);
		if (!harness_proc_wait(p, 5000)) {
			fprintf(stderr,
			    "harness: %s (pid %d) ignored SIGTERM "
			    "for 5 s; SIGKILL\n",
			    p->label, (int)p->pid);
			kill(p->pid, SIGKILL);
			harness_proc_wait(p, 5000);
		}
	}
	if (p->pidfd >= 0)
		close(p->pidfd);
	p->pidfd = -1;
	if (p->stdout_fd >= 0)
		close(p->stdout_fd);
	p->stdout_fd = -1;
}

static void
harness_proc_unregister(struct harness_proc *p)
{
	int i;

	for (i = 0; i < harness_nprocs; i++) {
		if (harness_procs[i] == p)
			harness_procs[i] = NULL;
	}
}

char *
harness_tmpdir(void)
{
	const char *base;
	char *dir;

	/* Short on purpose: a notify socket's path must fit sun_path. */
	base = getenv("TMPDIR");
	if (base == NULL || *base == '\0' || strlen(base) > 60)
		base = "/tmp";
	dir = harness_strf("%s/opt.XXXXXX", base);
	if (mkdtemp(dir) == NULL)
		ck_abort_msg("mkdtemp %s: %s", dir, strerror(errno));
	if (harness_ndirs < HARNESS_MAX_DIRS)
		harness_dirs[harness_ndirs++] = harness_xstrdup(dir);
	return dir;
}

char *
harness_slurp(const char *path, size_t *lenp)
{
	struct harness_buf b = {NULL, 0, 0};
	char buf[8192];
	ssize_t n;
	int fd;

	harness_buf_add(&b, "", 0);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		while ((n = read(fd, buf, sizeof buf)) > 0)
			harness_buf_add(&b, buf, (size_t)n);
		close(fd);
	}
	if (lenp != NULL)
		*lenp = b.len;
	return b.data;
}

/* 0 when a TCP connection to 127.0.0.1:port was accepted by the kernel,
 * else the errno of connect(). */
int
harness_connect_errno(int port)
{
	struct sockaddr_in sin;
	int fd, err = 0;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	H_ASSERT(fd >= 0, "socket: %s", strerror(errno));
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0)
		err = errno;
	close(fd);
	return err;
}

int
harness_file_wait(const char *path, const char *needle, int timeout_ms)
{
	double deadline = harness_now() + timeout_ms / 1000.0;
	char evbuf[4096], *dir, *slash, *text;
	struct pollfd pfd;
	int ifd, found, left, wd;

	ifd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	if (ifd < 0)
		ck_abort_msg("inotify_init1: %s", strerror(errno));
	wd = inotify_add_watch(ifd, path, IN_MODIFY);
	if (wd < 0) {
		dir = harness_strf("%s", path);
		slash = strrchr(dir, '/');
		if (slash != NULL)
			*slash = '\0';
		if (inotify_add_watch(ifd, slash != NULL ? dir : ".",
		        IN_MODIFY | IN_CREATE | IN_MOVED_TO) < 0)
			ck_abort_msg(
			    "inotify_add_watch %s: %s", path, strerror(errno));
	}
	for (;;) {
		text = harness_slurp(path, NULL);
		found = strstr(text, needle) != NULL;
		free(text);
		left = harness_ms_left(deadline);
		if (found || left <= 0)
			break;
		pfd.fd = ifd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		poll(&pfd, 1, left);
		while (read(ifd, evbuf, sizeof evbuf) > 0)
			;
		/* Created meanwhile: watch the file itself from now on. */
		if (wd < 0)
			wd = inotify_add_watch(ifd, path, IN_MODIFY);
	}
	close(ifd);
	return found;
}

char *
harness_write_file(const char *dir, const char *name, const char *text)
{
	char *path;
	FILE *f;

	path = harness_strf("%s/%s", dir, name);
	f = fopen(path, "w");
	if (f == NULL)
		ck_abort_msg("fopen %s: %s", path, strerror(errno));
	fputs(text != NULL ? text : "", f);
	if (fclose(f) != 0)
		ck_abort_msg("write %s: %s", path, strerror(errno));
	return path;
}

char *
harness_read_file(const char *path, size_t *lenp)
{
	struct harness_buf b = {NULL, 0, 0};
	char buf[8192];
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	harness_buf_add(&b, "", 0);
	while (
	    (n = read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
		if (n > 0)
			harness_buf_add(&b, buf, (size_t)n);
	}
	close(fd);
	if (n < 0) {
		harness_buf_free(&b);
		return NULL;
	}
	if (lenp != NULL)
		*lenp = b.len;
	harness_track(b.data);
	return b.data;
}

int
harness_free_port(void)
{
	struct sockaddr_in sin;
	socklen_t len;
	int fd, port;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		ck_abort_msg("socket: %s", strerror(errno));
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0)
		ck_abort_msg("bind 127.0.0.1:0: %s", strerror(errno));
	len = sizeof sin;
	if (getsockname(fd, (struct sockaddr *)&sin, &len) != 0)
		ck_abort_msg("getsockname: %s", strerror(errno));
	port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

static const char *harness_bin(const char *, const char *);

const char *
harness_daemon_bin(void)
{
	return harness_bin("OLLAMA_POOL_BIN", "../src/ollama-pool");
}

const char *
harness_fake_bin(void)
{
	return harness_bin("FAKE_OLLAMA_BIN", "fake-ollama");
}

const char *
harness_fake_dns_bin(void)
{
	return harness_bin("FAKE_DNS_BIN", "fake-dns");
}

static const char *
harness_bin(const char *env, const char *rel)
{
	char exe[4096], *slash;
	const char *v;
	ssize_t n;

	v = getenv(env);
	if (v != NULL && *v != '\0')
		return v;
	/* Run by hand from the build tree: the binaries sit beside us. */
	n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n <= 0)
		ck_abort_msg("%s is not set", env);
	exe[n] = '\0';
	slash = strrchr(exe, '/');
	if (slash != NULL)
		*slash = '\0';
	return harness_strf("%s/%s", exe, rel);
}

/* ---- the fake --------------------------------------------------------- */

/*
 * Starts a fake (fake-ollama, fake-dns) that prints its port on stdout
 * once it is ready, and reads that port.  Fails the test unless it comes
 * within HARNESS_READY_MS.
 */
static void
harness_fake_spawn(struct harness_fake *f, const char *const *argv)
{
	struct pollfd pfd[2];
	char line[64];
	size_t used = 0;
	double deadline;
	int pipefd[2], logfd, nfds;
	ssize_t n;
	char *end;
	long port;

	if (pipe2(pipefd, O_CLOEXEC) != 0)
		ck_abort_msg("pipe: %s", strerror(errno));
	logfd = harness_open_log(
	    f->proc.label, f->proc.log_path, sizeof f->proc.log_path);
	f->proc.pid = harness_spawn(argv, pipefd[1], logfd, NULL);
	close(pipefd[1]);
	close(logfd);
	f->proc.stdout_fd = pipefd[0];
	f->proc.pidfd = harness_pidfd_open(f->proc.pid);
	harness_register(&f->proc);

	/* Ready is the port line on stdout; nothing else counts. */
	deadline = harness_now() + HARNESS_READY_MS / 1000.0;
	for (;;) {
		if (memchr(line, '\n', used) != NULL)
			break;
		pfd[0].fd = f->proc.stdout_fd;
		pfd[0].events = POLLIN;
		pfd[1].fd = f->proc.pidfd;
		pfd[1].events = POLLIN;
		nfds = f->proc.pidfd >= 0 ? 2 : 1;
		if (harness_ms_left(deadline) == 0) {
			harness_failed();
			ck_abort_msg("fake %s printed no port within %d ms",
			    f->proc.label, HARNESS_READY_MS);
		}
		if (poll(pfd, (nfds_t)nfds, harness_ms_left(deadline)) <= 0)
			continue;
		if (pfd[0].revents != 0) {
			n = read(f->proc.stdout_fd, line + used,
			    sizeof line - 1 - used);
			if (n > 0) {
				used += (size_t)n;
				if (used >= sizeof line - 1)
					break;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			harness_proc_wait(&f->proc, 1000);
			harness_failed();
			ck_abort_msg("fake %s closed stdout before printing "
			             "its port (wait status 0x%x)",
			    f->proc.label, f->proc.wstatus);
		}
		if (nfds == 2 && pfd[1].revents != 0 &&
		    harness_proc_reap(&f->proc)) {
			harness_failed();
			ck_abort_msg("fake %s exited before printing its port "
			             "(wait status 0x%x)",
			    f->proc.label, f->proc.wstatus);
		}
	}
	line[used] = '\0';
	port = strtol(line, &end, 10);
	if (end == line || (*end != '\n' && *end != '\r') || port <= 0 ||
	    port > 65535) {
		harness_failed();
		ck_abort_msg(
		    "fake %s printed \"%s\", not a port", f->proc.label, line);
	}
	f->port = (int)port;
}

static struct harness_fake *
harness_fake_new(const char *label, const char *def_label, const char *name)
{
	struct harness_fake *f;

	f = calloc(1, sizeof *f);
	if (f == NULL)
		ck_abort_msg("out of memory");
	harness_track(f);
	snprintf(f->proc.label, sizeof f->proc.label, "%s",
	    label != NULL ? label : def_label);
	snprintf(f->name, sizeof f->name, "%s", name != NULL ? name : "");
	f->proc.pidfd = f->proc.stdout_fd = -1;
	return f;
}

struct harness_fake *
fake_start(const char *label, const char *name, const char *const *extra)
{
	return fake_start_at(label, name, NULL, 0, extra);
}

struct harness_fake *
fake_start_at(const char *label, const char *name, const char *host, int port,
    const char *const *extra)
{
	const char *argv[32];
	struct harness_fake *f;
	int argc = 0, i;

	f = harness_fake_new(label, "fake", name);
	snprintf(f->host, sizeof f->host, "%s",
	    host != NULL && *host != '\0' ? host : "127.0.0.1");
	argv[argc++] = harness_fake_bin();
	argv[argc++] = "-l";
	argv[argc++] = harness_strf("%s:%d", f->host, port);
	argv[argc++] = "-v";
	if (name != NULL) {
		argv[argc++] = "-n";
		argv[argc++] = name;
	}
	for (i = 0; extra != NULL && extra[i] != NULL && argc < 30; i++)
		argv[argc++] = extra[i];
	argv[argc] = NULL;
	harness_fake_spawn(f, argv);
	return f;
}

struct harness_fake *
fake_dns_start(const char *label, const char *table_path)
{
	const char *argv[8];
	struct harness_fake *f;

	f = harness_fake_new(label, "dns", NULL);
	argv[0] = harness_fake_dns_bin();
	argv[1] = "-l";
	argv[2] = "127.0.0.1:0";
	argv[3] = "-f";
	argv[4] = table_path;
	argv[5] = "-v";
	argv[6] = NULL;
	harness_fake_spawn(f, argv);
	return f;
}

void
fake_stop(struct harness_fake *f)
{
	if (f == NULL)
		return;
	harness_proc_stop(&f->proc);
	harness_proc_unregister(&f->proc);
}

static const char *
fake_host(const struct harness_fake *f)
{
	return f->host[0] != '\0' ? f->host : "127.0.0.1";
}

char *
fake_url(const struct harness_fake *f, const char *path)
{
	return harness_strf("http://%s:%d%s", fake_host(f), f->port, path);
}

char *
harness_upstream_of(const struct harness_fake *f)
{
	return harness_strf("http://%s:%d", fake_host(f), f->port);
}

cJSON *
fake_stats(const struct harness_fake *f)
{
	struct http_resp r;
	cJSON *j;

	http_get(fake_url(f, "/_fake/stats"), &r);
	H_ASSERT(r.ok && r.status == 200, "GET /_fake/stats on %s: %s %ld",
	    f->proc.label, r.error, r.status);
	j = http_json(&r);
	H_ASSERT(j != NULL, "/_fake/stats is not JSON: %.200s",
	    r.body.data ? r.body.data : "");
	http_resp_free(&r);
	return j;
}

long long
fake_stat(const struct harness_fake *f, const char *key)
{
	cJSON *j, *v;
	long long n;

	j = fake_stats(f);
	v = cJSON_GetObjectItemCaseSensitive(j, key);
	H_ASSERT(cJSON_IsNumber(v), "/_fake/stats has no number \"%s\"", key);
	n = (long long)v->valuedouble;
	cJSON_Delete(j);
	return n;
}

void
fake_fault(const struct harness_fake *f, const char *json)
{
	struct http_resp r;

	http_post_json(fake_url(f, "/_fake/fault"), json, &r);
	H_ASSERT(r.ok && r.status >= 200 && r.status < 300,
	    "POST /_fake/fault %s on %s: %s %ld %s", json, f->proc.label,
	    r.error, r.status, r.body.data ? r.body.data : "");
	http_resp_free(&r);
}

void
fake_set_models(const struct harness_fake *f, const char *json)
{
	struct http_resp r;

	http_post_json(fake_url(f, "/_fake/models"), json, &r);
	H_ASSERT(r.ok && r.status >= 200 && r.status < 300,
	    "POST /_fake/models %s on %s: %s %ld %s", json, f->proc.label,
	    r.error, r.status, r.body.data ? r.body.data : "");
	http_resp_free(&r);
}

void
fake_reset(const struct harness_fake *f)
{
	struct http_resp r;

	http_post_json(fake_url(f, "/_fake/reset"), "{}", &r);
	H_ASSERT(r.ok && r.status >= 200 && r.status < 300,
	    "POST /_fake/reset on %s: %s %ld", f->proc.label, r.error,
	    r.status);
	http_resp_free(&r);
}

/* ---- the daemon ------------------------------------------------------- */

const char *const harness_startup_verdicts[] = {
    " is Ollama ",
    " is unreachable: ",
    " answers GET /api/version",
    " answers, but ",
    NULL,
};

/* 1 when the datagram holds the given line (e.g. READY=1). */
static int
harness_notify_has(const char *msg, size_t len, const char *want)
{
	const char *p = msg, *end = msg + len, *nl;
	size_t wlen = strlen(want);

	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			nl = end;
		if ((size_t)(nl - p) == wlen && memcmp(p, want, wlen) == 0)
			return 1;
		p = nl + 1;
	}
	return 0;
}

int
harness_notify_wait(struct harness_daemon *d, const char *line, int timeout_ms)
{
	struct pollfd pfd[2];
	char msg[4096];
	double deadline;
	ssize_t n;
	int nfds;

	deadline = harness_now() + timeout_ms / 1000.0;
	for (;;) {
		pfd[0].fd = d->notify_fd;
		pfd[0].events = POLLIN;
		pfd[0].revents = 0;
		pfd[1].fd = d->proc.pidfd;
		pfd[1].events = POLLIN;
		pfd[1].revents = 0;
		nfds = d->proc.pidfd >= 0 ? 2 : 1;
		/* Datagrams already queued count even past the deadline. */
		n = recv(d->notify_fd, msg, sizeof msg, MSG_DONTWAIT);
		if (n > 0) {
			if (harness_notify_has(msg, (size_t)n, line))
				return 1;
			continue;
		}
		if (harness_proc_reap(&d->proc))
			return -1;
		if (harness_ms_left(deadline) == 0)
			return 0;
		/* Without a pidfd, wake now and then to see if it died. */
		if (poll(pfd, (nfds_t)nfds,
		        nfds == 2 ? harness_ms_left(deadline) : 50) < 0 &&
		    errno != EINTR)
			ck_abort_msg("poll: %s", strerror(errno));
	}
}

struct harness_daemon *
harness_daemon_start(
    const char *conf_text, const char *upstream, const char *const *extra)
{
	const char *argv[48];
	struct harness_daemon *d;
	struct sockaddr_un sun;
	char *dir, *listen;
	int argc = 0, i, logfd, rcvbuf;

	d = calloc(1, sizeof *d);
	if (d == NULL)
		ck_abort_msg("out of memory");
	harness_track(d);
	snprintf(d->proc.label, sizeof d->proc.label, "daemon");
	d->proc.pidfd = d->proc.stdout_fd = -1;
	d->notify_fd = -1;

	dir = harness_tmpdir();
	snprintf(d->dir, sizeof d->dir, "%s", dir);
	snprintf(d->conf_path, sizeof d->conf_path, "%s",
	    harness_write_file(dir, "ollama-pool.conf", conf_text));
	snprintf(d->notify_path, sizeof d->notify_path, "%s/notify", dir);
	if (strlen(d->notify_path) >= sizeof sun.sun_path)
		ck_abort_msg("notify socket path too long: %s", d->notify_path);

	d->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (d->notify_fd < 0)
		ck_abort_msg("socket AF_UNIX: %s", strerror(errno));
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, d->notify_path, strlen(d->notify_path) + 1);
	if (bind(d->notify_fd, (struct sockaddr *)&sun, sizeof sun) != 0)
		ck_abort_msg("bind %s: %s", d->notify_path, strerror(errno));
	rcvbuf = 1 << 16;
	setsockopt(d->notify_fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);

	d->port = harness_free_port();
	listen = harness_strf("127.0.0.1:%d", d->port);
	if (upstream != NULL)
		snprintf(d->upstream, sizeof d->upstream, "%s", upstream);

	argv[argc++] = harness_daemon_bin();
	argv[argc++] = "-c";
	argv[argc++] = d->conf_path;
	argv[argc++] = "-l";
	argv[argc++] = listen;
	if (upstream != NULL) {
		argv[argc++] = "-u";
		argv[argc++] = d->upstream;
	}
	argv[argc++] = "-v";
	for (i = 0; extra != NULL && extra[i] != NULL && argc < 46; i++)
		argv[argc++] = extra[i];
	argv[argc] = NULL;

	logfd = harness_open_log(
	    "daemon", d->proc.log_path, sizeof d->proc.log_path);
	/* The command line heads the log, so a failure can be rerun. */
	dprintf(logfd, "harness:");
	for (i = 0; i < argc; i++)
		dprintf(logfd, " %s", argv[i]);
	dprintf(logfd, "\nharness: conf %s:\n%s%sharness: ----\n", d->conf_path,
	    conf_text != NULL ? conf_text : "",
	    (conf_text != NULL && *conf_text != '\0' &&
	        conf_text[strlen(conf_text) - 1] != '\n')
	        ? "\n"
	        : "");
	d->proc.pid = harness_spawn(argv, logfd, logfd, d->notify_path);
	close(logfd);
	d->proc.pidfd = harness_pidfd_open(d->proc.pid);
	harness_register(&d->proc);

	/* Readiness is the READY=1 datagram, nothing else. */
	switch (harness_notify_wait(d, "READY=1", HARNESS_READY_MS)) {
	case 1:
		break;
	case -1:
		harness_failed();
		ck_abort_msg("daemon exited before READY=1 (wait status 0x%x); "
		             "see %s",
		    d->proc.wstatus, d->proc.log_path);
	default:
		harness_failed();
		ck_abort_msg(
		    "daemon sent no READY=1 within %d ms", HARNESS_READY_MS);
	}
	/* Then the start-up check's verdict on the upstream, so that what a
	 * test counts on the fake or in the daemon never races with it. */
	if (harness_log_wait_any(
	        &d->proc, harness_startup_verdicts, HARNESS_READY_MS) < 0) {
		harness_failed();
		ck_abort_msg("daemon logged no verdict on its upstream within "
		             "%d ms",
		    HARNESS_READY_MS);
	}
	return d;
}

int
harness_daemon_stop(struct harness_daemon *d)
{
	if (d == NULL)
		return -1;
	harness_proc_stop(&d->proc);
	harness_proc_unregister(&d->proc);
	if (d->notify_fd >= 0)
		close(d->notify_fd);
	d->notify_fd = -1;
	return d->proc.exited ? d->proc.wstatus : -1;
}

char *
harness_daemon_url(const struct harness_daemon *d, const char *path)
{
	return harness_strf("http://127.0.0.1:%d%s", d->port, path);
}

void
harness_up(struct harness_env *env, const char *conf_text)
{
	env->fake = fake_start("fake", NULL, NULL);
	env->daemon = harness_daemon_start(
	    conf_text, harness_upstream_of(env->fake), NULL);
}

void
harness_daemon_reload(struct harness_daemon *d, const char *conf_text)
{
	harness_write_file(d->dir, "ollama-pool.conf", conf_text);
	H_ASSERT(
	    kill(d->proc.pid, SIGHUP) == 0, "kill SIGHUP: %s", strerror(errno));
	H_ASSERT(harness_notify_wait(d, "READY=1", HARNESS_READY_MS) == 1,
	    "no READY=1 within %d ms after SIGHUP", HARNESS_READY_MS);
}

/* ---- a fleet ------------------------------------------------------------ */

cJSON *
harness_stats(const struct harness_daemon *d, const char *token)
{
	const char *hdrs[2] = {NULL, NULL};
	struct http_resp r;
	struct http_req req;
	cJSON *j;

	memset(&req, 0, sizeof req);
	req.url = harness_daemon_url(d, "/ollama-pool/stats");
	if (token != NULL) {
		hdrs[0] = harness_strf("Authorization: Bearer %s", token);
		req.headers = hdrs;
	}
	http_request(&req, &r);
	H_ASSERT(r.ok && r.status == 200,
	    "GET /ollama-pool/stats: %s %ld %.200s", r.error, r.status,
	    r.body.data ? r.body.data : "");
	j = http_json(&r);
	H_ASSERT(j != NULL, "/ollama-pool/stats is not JSON: %.200s",
	    r.body.data ? r.body.data : "");
	http_resp_free(&r);
	return j;
}

const cJSON *
harness_stats_backend(const cJSON *stats, const char *name)
{
	const cJSON *b;

	cJSON_ArrayForEach(
	    b, cJSON_GetObjectItemCaseSensitive(stats, "backends"))
	{
		if (harness_jstr(b, "name") != NULL &&
		    strcmp(harness_jstr(b, "name"), name) == 0)
			return b;
	}
	return NULL;
}

int
harness_stats_wait(const struct harness_daemon *d, const char *token,
    int (*fn)(const cJSON *, void *), void *arg, int timeout_ms)
{
	double deadline = harness_now() + timeout_ms / 1000.0;
	int i, max = timeout_ms / 5 + 10, ok = 0;
	cJSON *j;

	/* Stats are asked, not told: a few ms between questions, and a
	 * bound on their number as well as on the time. */
	for (i = 0; i < max; i++) {
		j = harness_stats(d, token);
		ok = fn(j, arg);
		cJSON_Delete(j);
		if (ok || harness_ms_left(deadline) == 0)
			break;
		poll(NULL, 0, 5);
	}
	return ok;
}

struct harness_backend_want {
	const char *name, *state;
	int probed;
};

static int
harness_backend_is(const cJSON *stats, void *arg)
{
	const struct harness_backend_want *w = arg;
	const cJSON *b = harness_stats_backend(stats, w->name);
	const char *state;

	if (b == NULL)
		return 0;
	state = harness_jstr(b, "state");
	if (w->state != NULL && (state == NULL || strcmp(state, w->state) != 0))
		return 0;
	return !w->probed ||
	    cJSON_GetObjectItemCaseSensitive(b, "last_probe_seconds_ago") !=
	    NULL;
}

int
harness_backend_wait(const struct harness_daemon *d, const char *token,
    const char *name, const char *state, int probed, int timeout_ms)
{
	struct harness_backend_want w = {name, state, probed};

	return harness_stats_wait(d, token, harness_backend_is, &w, timeout_ms);
}

struct harness_fleet_want {
	int n;
};

static int
harness_fleet_ready(const cJSON *stats, void *arg)
{
	const struct harness_fleet_want *w = arg;
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(stats, "backends");
	const cJSON *b;
	int n = 0;

	cJSON_ArrayForEach(b, list)
	{
		if (harness_jstr(b, "state") == NULL ||
		    strcmp(harness_jstr(b, "state"), "up") != 0 ||
		    cJSON_GetObjectItemCaseSensitive(
		        b, "last_probe_seconds_ago") == NULL)
			return 0;
		n++;
	}
	return n == w->n;
}

struct harness_daemon *
harness_fleet_start(const char *conf_text, int nbackends, const char *token,
    const char *const *extra)
{
	struct harness_fleet_want w = {nbackends};
	struct harness_daemon *d;

	d = harness_daemon_start(conf_text, NULL, extra);
	if (!harness_stats_wait(
	        d, token, harness_fleet_ready, &w, HARNESS_READY_MS)) {
		harness_failed();
		ck_abort_msg("/ollama-pool/stats did not show %d backends "
		             "probed and up within %d ms",
		    nbackends, HARNESS_READY_MS);
	}
	return d;
}

/* ---- running a command to completion ---------------------------------- */

void
harness_run(const char *const *argv, int timeout_ms, struct harness_run *r)
{
	struct harness_proc p;
	struct pollfd pfd[2];
	struct harness_buf *dst;
	char buf[4096];
	double deadline;
	int outp[2], errp[2], open_fds, i;
	ssize_t n;

	memset(r, 0, sizeof *r);
	memset(&p, 0, sizeof p);
	snprintf(p.label, sizeof p.label, "run");
	if (pipe2(outp, O_CLOEXEC) != 0 || pipe2(errp, O_CLOEXEC) != 0)
		ck_abort_msg("pipe: %s", strerror(errno));
	p.pid = harness_spawn(argv, outp[1], errp[1], NULL);
	p.pidfd = harness_pidfd_open(p.pid);
	p.stdout_fd = -1;
	close(outp[1]);
	close(errp[1]);
	pfd[0].fd = outp[0];
	pfd[1].fd = errp[0];
	open_fds = 2;
	deadline = harness_now() + timeout_ms / 1000.0;
	while (open_fds > 0 && harness_ms_left(deadline) > 0) {
		for (i = 0; i < 2; i++) {
			pfd[i].events = POLLIN;
			pfd[i].revents = 0;
		}
		if (poll(pfd, 2, harness_ms_left(deadline)) <= 0)
			continue;
		for (i = 0; i < 2; i++) {
			if (pfd[i].fd < 0 || pfd[i].revents == 0)
				continue;
			dst = i == 0 ? &r->out : &r->err;
			n = read(pfd[i].fd, buf, sizeof buf);
			if (n > 0) {
				harness_buf_add(dst, buf, (size_t)n);
			} else if (n == 0 || errno != EINTR) {
				close(pfd[i].fd);
				pfd[i].fd = -1;
				open_fds--;
			}
		}
	}
	for (i = 0; i < 2; i++) {
		if (pfd[i].fd >= 0)
			close(pfd[i].fd);
	}
	if (!harness_proc_wait(&p, harness_ms_left(deadline))) {
		r->timed_out = 1;
		kill(p.pid, SIGKILL);
		harness_proc_wait(&p, 5000);
	}
	if (p.pidfd >= 0)
		close(p.pidfd);
	r->wstatus = r->timed_out ? -1 : p.wstatus;
	/* Empty buffers still read as strings. */
	harness_buf_add(&r->out, "", 0);
	harness_buf_add(&r->err, "", 0);
}

void
harness_run_free(struct harness_run *r)
{
	harness_buf_free(&r->out);
	harness_buf_free(&r->err);
}

/* ---- /proc ------------------------------------------------------------ */

long
harness_proc_status_kb(pid_t pid, const char *field)
{
	char path[64], line[256];
	size_t flen;
	long v = -1;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (f == NULL)
		return -1;
	flen = strlen(field);
	while (fgets(line, sizeof line, f) != NULL) {
		if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
			v = strtol(line + flen + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return v;
}

int
harness_proc_maps_contains(pid_t pid, const char *what)
{
	char path[64], line[1024];
	int found = 0;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
	f = fopen(path, "re");
	if (f == NULL)
		return -1;
	while (!found && fgets(line, sizeof line, f) != NULL)
		found = strstr(line, what) != NULL;
	fclose(f);
	return found;
}

int
harness_proc_fd_count(pid_t pid)
{
	struct dirent *de;
	char path[64];
	int n = 0;
	DIR *d;

	snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] != '.')
			n++;
	}
	closedir(d);
	return n;
}

/* ---- HTTP with libcurl ------------------------------------------------ */

struct http_xfer {
	CURL *easy;
	struct curl_slist *hdrs;
	const struct http_req *req;
	struct http_resp *resp;
	char errbuf[CURL_ERROR_SIZE];
	int body_ended;
};

static void
http_add_chunk(struct http_resp *r, double t, size_t off, size_t len)
{
	if (r->nchunks == r->chunks_cap) {
		r->chunks_cap = r->chunks_cap ? r->chunks_cap * 2 : 64;
		r->chunks = harness_xrealloc(
		    r->chunks, r->chunks_cap * sizeof *r->chunks);
	}
	r->chunks[r->nchunks].t = t;
	r->chunks[r->nchunks].off = off;
	r->chunks[r->nchunks].len = len;
	r->nchunks++;
}

static size_t
http_header_cb(char *data, size_t size, size_t nitems, void *arg)
{
	struct http_resp *r = arg;
	size_t len = size * nitems;

	/* A new status line starts a new head: 1xx heads are dropped and
	 * only the final response's is kept. */
	if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
		r->head.len = 0;
		r->head_done_ = 0;
		r->t_head = harness_now();
	}
	if (r->head_done_)
		return len; /* trailers */
	harness_buf_add(&r->head, data, len);
	if ((len == 2 && memcmp(data, "\r\n", 2) == 0) ||
	    (len == 1 && data[0] == '\n'))
		r->head_done_ = 1;
	return len;
}

static size_t
http_write_cb(char *data, size_t size, size_t nitems, void *arg)
{
	struct http_resp *r = arg;
	size_t len = size * nitems;
	double t;

	t = harness_now();
	if (r->body.len == 0 && r->nchunks == 0)
		r->t_body = t;
	http_add_chunk(r, t, r->body.len, len);
	harness_buf_add(&r->body, data, len);
	return len;
}

static size_t
http_read_cb(char *buf, size_t size, size_t nitems, void *arg)
{
	struct http_xfer *x = arg;
	size_t n;

	n = x->req->read_fn(x->req->read_arg, buf, size * nitems);
	if (n == 0 && !x->body_ended) {
		x->body_ended = 1;
		x->resp->t_sent = harness_now();
	}
	return n;
}

static int
http_method_is(const struct http_req *req, const char *m)
{
	return req->method != NULL && strcmp(req->method, m) == 0;
}

static void
http_xfer_setup(
    struct http_xfer *x, const struct http_req *req, struct http_resp *resp)
{
	int i;

	memset(resp, 0, sizeof *resp);
	memset(x, 0, sizeof *x);
	x->req = req;
	x->resp = resp;
	x->easy = curl_easy_init();
	if (x->easy == NULL)
		ck_abort_msg("curl_easy_init failed");

	curl_easy_setopt(x->easy, CURLOPT_URL, req->url);
	curl_easy_setopt(x->easy, CURLOPT_NOSIGNAL, 1L);
	/* The path goes out exactly as written, dot segments and all. */
	curl_easy_setopt(x->easy, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(x->easy, CURLOPT_HTTP_VERSION,
	    req->http10 ? (long)CURL_HTTP_VERSION_1_0
	                : (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(x->easy, CURLOPT_IPRESOLVE, (long)CURL_IPRESOLVE_V4);
	/* A naive client: one new connection per request. */
	curl_easy_setopt(x->easy, CURLOPT_FORBID_REUSE, 1L);
	curl_easy_setopt(x->easy, CURLOPT_FRESH_CONNECT, 1L);
	curl_easy_setopt(x->easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
	curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS,
	    req->timeout_ms > 0 ? req->timeout_ms
	                        : (long)HARNESS_HTTP_TIMEOUT_MS);
	curl_easy_setopt(x->easy, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(x->easy, CURLOPT_HEADERFUNCTION, http_header_cb);
	curl_easy_setopt(x->easy, CURLOPT_HEADERDATA, resp);
	curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, http_write_cb);
	curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, resp);
	/* Bytes as sent: no decompression. */
	curl_easy_setopt(x->easy, CURLOPT_HTTP_CONTENT_DECODING, 0L);

	if (http_method_is(req, "HEAD")) {
		curl_easy_setopt(x->easy, CURLOPT_NOBODY, 1L);
	} else if (req->read_fn != NULL) {
		/* Unknown length over HTTP/1.1: libcurl sends it chunked. */
		curl_easy_setopt(x->easy, CURLOPT_POST, 1L);
		curl_easy_setopt(x->easy, CURLOPT_READFUNCTION, http_read_cb);
		curl_easy_setopt(x->easy, CURLOPT_READDATA, x);
		curl_easy_setopt(
		    x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)-1);
	} else if (req->has_body || req->body != NULL) {
		curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)req->body_len);
		curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS,
		    req->body != NULL ? req->body : "");
	} else if (http_method_is(req, "POST")) {
		curl_easy_setopt(
		    x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
		curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, "");
	} else {
		curl_easy_setopt(x->easy, CURLOPT_HTTPGET, 1L);
	}
	if (req->method != NULL && !http_method_is(req, "HEAD") &&
	    !http_method_is(req, "GET") && !http_method_is(req, "POST"))
		curl_easy_setopt(x->easy, CURLOPT_CUSTOMREQUEST, req->method);
	if (http_method_is(req, "GET") &&
	    (req->has_body || req->body != NULL || req->read_fn != NULL))
		curl_easy_setopt(x->easy, CURLOPT_CUSTOMREQUEST, "GET");

	for (i = 0; req->headers != NULL && req->headers[i] != NULL; i++)
		x->hdrs = curl_slist_append(x->hdrs, req->headers[i]);
	if (x->hdrs != NULL)
		curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->hdrs);
	resp->t_start = harness_now();
}

static void
http_xfer_finish(struct http_xfer *x, CURLcode rc)
{
	struct http_resp *r = x->resp;

	r->t_end = harness_now();
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &r->status);
	curl_easy_getinfo(x->easy, CURLINFO_NUM_CONNECTS, &r->num_connects);
	if (r->t_sent == 0)
		r->t_sent = r->t_end;
	if (rc == CURLE_OK) {
		r->ok = 1;
	} else {
		snprintf(r->error, sizeof r->error, "curl: %s: %s",
		    curl_easy_strerror(rc), x->errbuf);
	}
	if (r->head.len > 0 &&
	    http_parse_head(r, r->head.data, r->head.len) != 0 && r->ok) {
		r->ok = 0;
		snprintf(r->error, sizeof r->error, "unparsable head: %.200s",
		    r->head.data);
	}
	harness_buf_add(&r->body, "", 0);
	harness_buf_add(&r->head, "", 0);
	curl_easy_cleanup(x->easy);
	curl_slist_free_all(x->hdrs);
	x->easy = NULL;
	x->hdrs = NULL;
}

int
http_request(const struct http_req *req, struct http_resp *resp)
{
	struct http_xfer x;
	CURLcode rc;

	http_xfer_setup(&x, req, resp);
	rc = curl_easy_perform(x.easy);
	http_xfer_finish(&x, rc);
	return resp->ok ? 0 : -1;
}

void
http_request_many(
    const struct http_req *reqs, struct http_resp *resps, size_t n)
{
	struct http_xfer *xs;
	CURLMsg *msg;
	CURLM *multi;
	size_t i;
	int running, left;

	xs = calloc(n, sizeof *xs);
	multi = curl_multi_init();
	if (xs == NULL || multi == NULL)
		ck_abort_msg("out of memory");
	/* HTTP/1.1 without pipelining: concurrent transfers each get their
	 * own connection, as separate naive clients would. */
	curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)n + 1);
	for (i = 0; i < n; i++) {
		http_xfer_setup(&xs[i], &reqs[i], &resps[i]);
		curl_easy_setopt(xs[i].easy, CURLOPT_PRIVATE, &xs[i]);
		curl_multi_add_handle(multi, xs[i].easy);
	}
	running = (int)n;
	while (running > 0) {
		if (curl_multi_perform(multi, &running) != CURLM_OK)
			break;
		while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
			struct http_xfer *x;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(
			    msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
			curl_multi_remove_handle(multi, msg->easy_handle);
			http_xfer_finish(x, msg->data.result);
		}
		if (running > 0)
			curl_multi_poll(multi, NULL, 0, 1000, NULL);
	}
	for (i = 0; i < n; i++) {
		if (xs[i].easy != NULL) {
			curl_multi_remove_handle(multi, xs[i].easy);
			http_xfer_finish(&xs[i], CURLE_ABORTED_BY_CALLBACK);
		}
	}
	curl_multi_cleanup(multi);
	free(xs);
}

struct http_multi {
	CURLM *multi;
	struct http_xfer **xs;
	size_t n, cap;
};

struct http_multi *
http_multi_new(void)
{
	struct http_multi *m;

	m = calloc(1, sizeof *m);
	if (m == NULL || (m->multi = curl_multi_init()) == NULL)
		ck_abort_msg("out of memory");
	curl_multi_setopt(
	    m->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);
	return m;
}

void
http_multi_add(
    struct http_multi *m, const struct http_req *req, struct http_resp *resp)
{
	struct http_xfer *x;

	if (m->n == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 16;
		m->xs = harness_xrealloc(m->xs, m->cap * sizeof *m->xs);
	}
	x = calloc(1, sizeof *x);
	if (x == NULL)
		ck_abort_msg("out of memory");
	m->xs[m->n++] = x;
	http_xfer_setup(x, req, resp);
	curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);
	curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS, (long)m->n + 1);
	curl_multi_add_handle(m->multi, x->easy);
}

static int
http_multi_left(const struct http_multi *m)
{
	size_t i;
	int n = 0;

	for (i = 0; i < m->n; i++)
		if (m->xs[i]->easy != NULL)
			n++;
	return n;
}

int
http_multi_run(struct http_multi *m, int ms)
{
	double deadline = harness_now() + ms / 1000.0;
	struct http_xfer *x;
	CURLMsg *msg;
	int running, left, wait;

	for (;;) {
		if (curl_multi_perform(m->multi, &running) != CURLM_OK)
			break;
		while ((msg = curl_multi_info_read(m->multi, &left)) != NULL) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(
			    msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
			curl_multi_remove_handle(m->multi, msg->easy_handle);
			http_xfer_finish(x, msg->data.result);
		}
		wait = harness_ms_left(deadline);
		if (http_multi_left(m) == 0 || wait == 0)
			break;
		curl_multi_poll(
		    m->multi, NULL, 0, wait < 100 ? wait : 100, NULL);
	}
	return http_multi_left(m);
}

int
http_multi_wait(struct http_multi *m, int timeout_ms)
{
	return http_multi_run(m, timeout_ms) == 0;
}

void
http_multi_free(struct http_multi *m)
{
	size_t i;

	if (m == NULL)
		return;
	for (i = 0; i < m->n; i++) {
		if (m->xs[i]->easy != NULL) {
			curl_multi_remove_handle(m->multi, m->xs[i]->easy);
			http_xfer_finish(m->xs[i], CURLE_ABORTED_BY_CALLBACK);
		}
		free(m->xs[i]);
	}
	curl_multi_cleanup(m->multi);
	free(m->xs);
	free(m);
}

int
http_get(const char *url, struct http_resp *resp)
{
	struct http_req req;

	memset(&req, 0, sizeof req);
	req.url = url;
	return http_request(&req, resp);
}

int
http_post_json(const char *url, const char *json, struct http_resp *resp)
{
	static const char *const hdrs[] = {
	    "Content-Type: application/json", "Expect:", NULL};
	struct http_req req;

	memset(&req, 0, sizeof req);
	req.method = "POST";
	req.url = url;
	req.headers = hdrs;
	req.body = json;
	req.body_len = strlen(json);
	req.has_body = 1;
	return http_request(&req, resp);
}

void
http_resp_free(struct http_resp *r)
{
	size_t i;

	for (i = 0; i < r->nhdrs; i++) {
		free(r->hdrs[i].name);
		free(r->hdrs[i].value);
	}
	free(r->hdrs);
	free(r->chunks);
	harness_buf_free(&r->head);
	harness_buf_free(&r->body);
	memset(r, 0, sizeof *r);
}

const char *
http_header_get(const struct http_resp *r, const char *name)
{
	size_t i;

	for (i = 0; i < r->nhdrs; i++) {
		if (strcasecmp(r->hdrs[i].name, name) == 0)
			return r->hdrs[i].value;
	}
	return NULL;
}

size_t
http_header_count(const struct http_resp *r, const char *name)
{
	size_t i, n = 0;

	for (i = 0; i < r->nhdrs; i++) {
		if (strcasecmp(r->hdrs[i].name, name) == 0)
			n++;
	}
	return n;
}

int
http_parse_head(struct http_resp *r, const char *p, size_t len)
{
	const char *end = p + len, *eol, *colon, *v, *ve;
	struct http_header *h;
	size_t i;
	int minor;
	long status;

	for (i = 0; i < r->nhdrs; i++) {
		free(r->hdrs[i].name);
		free(r->hdrs[i].value);
	}
	free(r->hdrs);
	r->hdrs = NULL;
	r->nhdrs = 0;

	eol = memchr(p, '\n', len);
	if (eol == NULL || len < 12 || memcmp(p, "HTTP/1.", 7) != 0 ||
	    !isdigit((unsigned char)p[7]) || p[8] != ' ')
		return -1;
	minor = p[7] - '0';
	status = strtol(p + 9, NULL, 10);
	if (status < 100 || status > 999)
		return -1;
	r->status = status;
	r->http_minor = minor;
	p = eol + 1;
	while (p < end) {
		eol = memchr(p, '\n', (size_t)(end - p));
		if (eol == NULL)
			eol = end;
		ve = eol;
		if (ve > p && ve[-1] == '\r')
			ve--;
		if (ve == p)
			break; /* blank line: end of head */
		colon = memchr(p, ':', (size_t)(ve - p));
		if (colon == NULL)
			return -1;
		v = colon + 1;
		while (v < ve && (*v == ' ' || *v == '\t'))
			v++;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		r->hdrs =
		    harness_xrealloc(r->hdrs, (r->nhdrs + 1) * sizeof *r->hdrs);
		h = &r->hdrs[r->nhdrs++];
		h->name = strndup(p, (size_t)(colon - p));
		h->value = strndup(v, (size_t)(ve - v));
		if (h->name == NULL || h->value == NULL)
			ck_abort_msg("out of memory");
		p = eol + 1;
	}
	return 0;
}

size_t
http_line_times(const struct http_resp *r, double *times, size_t max)
{
	size_t c, i, n = 0;
	const char *d;

	/* A line has arrived when the chunk holding its '\n' has. */
	for (c = 0; c < r->nchunks; c++) {
		d = r->body.data + r->chunks[c].off;
		for (i = 0; i < r->chunks[c].len; i++) {
			if (d[i] == '\n') {
				if (n < max)
					times[n] = r->chunks[c].t;
				n++;
			}
		}
	}
	return n;
}

size_t
http_count_lines(const struct harness_buf *b)
{
	size_t i, n = 0;

	for (i = 0; i < b->len; i++) {
		if (b->data[i] == '\n')
			n++;
	}
	return n;
}

cJSON **
http_ndjson(const struct http_resp *r, size_t *np)
{
	const char *p = r->body.data, *nl;
	size_t n = 0, max = http_count_lines(&r->body) + 1;
	cJSON **v;

	v = calloc(max + 1, sizeof *v);
	H_CHECK(v != NULL);
	while (p != NULL && *p != '\0' && n < max) {
		nl = strchr(p, '\n');
		H_ASSERT(nl != NULL, "an unfinished line: %s", p);
		v[n] = cJSON_ParseWithLength(p, (size_t)(nl - p));
		H_ASSERT(v[n] != NULL, "not JSON: %.*s", (int)(nl - p), p);
		n++;
		p = nl + 1;
	}
	*np = n;
	return v;
}

void
http_ndjson_free(cJSON **v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		cJSON_Delete(v[i]);
	free(v);
}

cJSON *
http_json(const struct http_resp *r)
{
	if (r->body.data == NULL || r->body.len == 0)
		return NULL;
	return cJSON_ParseWithLength(r->body.data, r->body.len);
}

size_t
harness_membody_read(void *arg, char *buf, size_t max)
{
	struct harness_membody *m = arg;
	size_t n;

	n = m->len - m->off;
	if (m->piece > 0 && n > m->piece)
		n = m->piece;
	if (n > max)
		n = max;
	memcpy(buf, m->data + m->off, n);
	m->off += n;
	return n;
}

/* ---- comparing responses ---------------------------------------------- */

static int
http_is_framing(const char *name)
{
	/* Connection and Keep-Alive describe each hop, not the message; the
	 * framing headers are checked on their own. */
	return strcasecmp(name, "Connection") == 0 ||
	    strcasecmp(name, "Keep-Alive") == 0 ||
	    strcasecmp(name, "Content-Length") == 0 ||
	    strcasecmp(name, "Transfer-Encoding") == 0;
}

/* End-to-end headers but X-Request-Id, which the proxy adds to each of
 * its answers. */
static size_t
http_e2e_headers(
    const struct http_resp *r, const struct http_header **out, size_t max)
{
	size_t i, n = 0;

	for (i = 0; i < r->nhdrs && n < max; i++) {
		if (!http_is_framing(r->hdrs[i].name) &&
		    strcasecmp(r->hdrs[i].name, "X-Request-Id") != 0)
			out[n++] = &r->hdrs[i];
	}
	return n;
}

static int
http_is_chunked(const struct http_resp *r)
{
	const char *te;

	te = http_header_get(r, "Transfer-Encoding");
	return te != NULL && strcasestr(te, "chunked") != NULL;
}

static void
harness_format_headers(char *buf, size_t len, const struct http_resp *r)
{
	size_t i, off = 0;
	int n;

	buf[0] = '\0';
	for (i = 0; i < r->nhdrs && off < len; i++) {
		n = snprintf(buf + off, len - off, "[%s: %s] ", r->hdrs[i].name,
		    r->hdrs[i].value);
		if (n < 0)
			break;
		off += (size_t)n;
	}
}

void
harness_assert_same_response(
    const struct http_resp *d, const struct http_resp *p, const char *what)
{
	const struct http_header *dh[128], *ph[128];
	char dl[1024], pl[1024];
	const char *dcl, *pcl;
	size_t nd, np, i;
	int body;

	H_ASSERT(d->ok, "%s: direct request failed: %s", what, d->error);
	H_ASSERT(p->ok, "%s: proxied request failed: %s", what, p->error);
	H_ASSERT(d->status == p->status,
	    "%s: status %ld through the proxy, %ld direct; body: %.300s", what,
	    p->status, d->status, p->body.data ? p->body.data : "");

	if (d->body.len != p->body.len ||
	    memcmp(d->body.data, p->body.data, d->body.len) != 0) {
		for (i = 0; i < d->body.len && i < p->body.len; i++) {
			if (d->body.data[i] != p->body.data[i])
				break;
		}
		H_ASSERT(0,
		    "%s: bodies differ at byte %zu (direct %zu bytes, "
		    "proxied %zu): direct \"%.80s\" proxied \"%.80s\"",
		    what, i, d->body.len, p->body.len,
		    i < d->body.len ? d->body.data + i : "",
		    i < p->body.len ? p->body.data + i : "");
	}

	harness_format_headers(dl, sizeof dl, d);
	harness_format_headers(pl, sizeof pl, p);
	nd = http_e2e_headers(d, dh, 128);
	np = http_e2e_headers(p, ph, 128);
	H_ASSERT(nd == np,
	    "%s: %zu end-to-end headers direct, %zu proxied; "
	    "direct %s; proxied %s",
	    what, nd, np, dl, pl);
	for (i = 0; i < nd; i++) {
		H_ASSERT(strcmp(dh[i]->name, ph[i]->name) == 0 &&
		        strcmp(dh[i]->value, ph[i]->value) == 0,
		    "%s: header %zu is \"%s: %s\" direct, \"%s: %s\" proxied; "
		    "direct %s; proxied %s",
		    what, i, dh[i]->name, dh[i]->value, ph[i]->name,
		    ph[i]->value, dl, pl);
	}

	/* Framing: the proxy keeps the upstream's Content-Length, and must
	 * chunk where the upstream did since it cannot know the length. */
	dcl = http_header_get(d, "Content-Length");
	pcl = http_header_get(p, "Content-Length");
	if (dcl != NULL) {
		H_ASSERT(pcl != NULL && strcmp(dcl, pcl) == 0,
		    "%s: Content-Length %s direct, %s proxied; proxied %s",
		    what, dcl, pcl ? pcl : "none", pl);
		H_ASSERT(!http_is_chunked(p),
		    "%s: proxied response is chunked though the upstream "
		    "sent Content-Length: %s",
		    what, pl);
	} else {
		H_ASSERT(pcl == NULL,
		    "%s: proxied response has "
		    "Content-Length %s the upstream did not send",
		    what, pcl);
	}
	body = p->status >= 200 && p->status != 204 && p->status != 304 &&
	    p->body.len > 0;
	if (body && http_is_chunked(d))
		H_ASSERT(http_is_chunked(p),
		    "%s: upstream chunked, proxy "
		    "sent neither length nor chunks: %s",
		    what, pl);
	H_ASSERT(http_header_count(p, "Content-Length") <= 1 &&
	        http_header_count(p, "Transfer-Encoding") <= 1,
	    "%s: repeated framing headers: %s", what, pl);
	H_ASSERT(http_header_count(d, "X-Request-Id") == 0 &&
	        http_header_count(p, "X-Request-Id") == 1,
	    "%s: want one X-Request-Id, the proxy's: direct %s; proxied %s",
	    what, dl, pl);
}

/* ---- raw sockets ------------------------------------------------------ */

void
http_conn_open(struct http_conn *c, int port)
{
	struct sockaddr_in sin;
	int one = 1;

	memset(c, 0, sizeof *c);
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		ck_abort_msg("socket: %s", strerror(errno));
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	/* Loopback connect completes or fails at once. */
	if (connect(c->fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
		harness_failed();
		ck_abort_msg("connect 127.0.0.1:%d: %s", port, strerror(errno));
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
}

void
http_conn_close(struct http_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	harness_buf_free(&c->in);
}

int
http_conn_send(
    struct http_conn *c, const void *data, size_t len, int timeout_ms)
{
	const char *p = data;
	struct pollfd pfd;
	double deadline;
	ssize_t n;

	deadline = harness_now() + timeout_ms / 1000.0;
	while (len > 0) {
		n = send(c->fd, p, len, MSG_NOSIGNAL);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return -1;
		if (harness_ms_left(deadline) == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		pfd.fd = c->fd;
		pfd.events = POLLOUT;
		poll(&pfd, 1, harness_ms_left(deadline));
	}
	return 0;
}

int
http_conn_sendstr(struct http_conn *c, const char *s, int timeout_ms)
{
	return http_conn_send(c, s, strlen(s), timeout_ms);
}

int
http_conn_fill(struct http_conn *c, double deadline)
{
	struct pollfd pfd;
	char buf[65536];
	ssize_t n;

	for (;;) {
		n = recv(c->fd, buf, sizeof buf, 0);
		if (n > 0) {
			harness_buf_add(&c->in, buf, (size_t)n);
			return 1;
		}
		if (n == 0) {
			c->eof = 1;
			return 0;
		}
		if (errno == ECONNRESET) {
			c->reset = 1;
			c->eof = 1;
			return 0;
		}
		if (errno != EAGAIN && errno != EINTR)
			return -1;
		if (harness_ms_left(deadline) == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		pfd.fd = c->fd;
		pfd.events = POLLIN;
		poll(&pfd, 1, harness_ms_left(deadline));
	}
}

/* Makes sure `need` bytes are buffered; 0 or -1. */
static int
http_conn_need(struct http_conn *c, size_t need, double deadline)
{
	while (c->in.len < need) {
		if (c->eof || http_conn_fill(c, deadline) <= 0)
			return -1;
	}
	return 0;
}

/* Offset just past the next CRLF at or after `from`, or 0. */
static size_t
http_conn_line(struct http_conn *c, size_t from, double deadline)
{
	char *nl;

	for (;;) {
		if (c->in.len > from) {
			nl = memchr(c->in.data + from, '\n', c->in.len - from);
			if (nl != NULL)
				return (size_t)(nl - c->in.data) + 1;
		}
		if (c->eof || http_conn_fill(c, deadline) <= 0)
			return 0;
	}
}

static void
http_conn_take_body(struct http_conn *c, struct http_resp *r, size_t n)
{
	http_add_chunk(r, harness_now(), r->body.len, n);
	harness_buf_add(&r->body, c->in.data, n);
	harness_buf_consume(&c->in, n);
}

int
http_conn_read_response(
    struct http_conn *c, int head_request, int timeout_ms, struct http_resp *r)
{
	const char *cl;
	char *end;
	double deadline;
	size_t hlen, line, size;
	unsigned long long want;
	char *eoh;

	memset(r, 0, sizeof *r);
	r->t_start = harness_now();
	deadline = r->t_start + timeout_ms / 1000.0;
	for (;;) {
		/* The head: up to the blank line. */
		for (;;) {
			eoh = c->in.len > 0
			    ? memmem(c->in.data, c->in.len, "\r\n\r\n", 4)
			    : NULL;
			if (eoh != NULL)
				break;
			if (c->eof || http_conn_fill(c, deadline) <= 0) {
				snprintf(r->error, sizeof r->error,
				    "%s before a complete response head "
				    "(%zu bytes: %.200s)",
				    c->eof ? (c->reset ? "connection reset"
				                       : "connection closed")
				           : strerror(errno),
				    c->in.len, c->in.data ? c->in.data : "");
				goto fail;
			}
			if (r->t_head == 0)
				r->t_head = harness_now();
		}
		if (r->t_head == 0)
			r->t_head = harness_now();
		hlen = (size_t)(eoh - c->in.data) + 4;
		harness_buf_free(&r->head);
		harness_buf_add(&r->head, c->in.data, hlen);
		harness_buf_consume(&c->in, hlen);
		if (http_parse_head(r, r->head.data, r->head.len) != 0) {
			snprintf(r->error, sizeof r->error,
			    "unparsable response head: %.200s", r->head.data);
			goto fail;
		}
		/* Interim responses come before the real one. */
		if (r->status >= 100 && r->status < 200 && r->status != 101)
			continue;
		break;
	}

	harness_buf_add(&r->body, "", 0);
	if (head_request || r->status < 200 || r->status == 204 ||
	    r->status == 304)
		goto done;
	if (http_is_chunked(r)) {
		r->chunked = 1;
		for (;;) {
			line = http_conn_line(c, 0, deadline);
			if (line == 0) {
				snprintf(r->error, sizeof r->error,
				    "no chunk size line");
				goto fail;
			}
			size = strtoul(c->in.data, &end, 16);
			if (end == c->in.data) {
				snprintf(r->error, sizeof r->error,
				    "bad chunk size line: %.40s", c->in.data);
				goto fail;
			}
			harness_buf_consume(&c->in, line);
			if (size == 0)
				break;
			if (http_conn_need(c, size + 2, deadline) != 0) {
				snprintf(r->error, sizeof r->error,
				    "chunk of %zu cut short", size);
				goto fail;
			}
			http_conn_take_body(c, r, size);
			if (memcmp(c->in.data, "\r\n", 2) != 0) {
				snprintf(r->error, sizeof r->error,
				    "chunk not followed by CRLF");
				goto fail;
			}
			harness_buf_consume(&c->in, 2);
		}
		/* Trailers, then the blank line. */
		for (;;) {
			line = http_conn_line(c, 0, deadline);
			if (line == 0) {
				snprintf(r->error, sizeof r->error,
				    "no end of chunked body");
				goto fail;
			}
			harness_buf_consume(&c->in, line);
			if (line <= 2)
				break;
		}
	} else if ((cl = http_header_get(r, "Content-Length")) != NULL) {
		want = strtoull(cl, NULL, 10);
		while (want > 0) {
			if (c->in.len == 0 &&
			    (c->eof || http_conn_fill(c, deadline) <= 0)) {
				snprintf(r->error, sizeof r->error,
				    "body cut short: %llu bytes missing", want);
				goto fail;
			}
			size = c->in.len < want ? c->in.len : (size_t)want;
			http_conn_take_body(c, r, size);
			want -= size;
		}
	} else {
		/* Delimited by the peer closing. */
		r->closed = 1;
		for (;;) {
			if (c->in.len > 0)
				http_conn_take_body(c, r, c->in.len);
			if (c->eof)
				break;
			if (http_conn_fill(c, deadline) < 0) {
				snprintf(r->error, sizeof r->error,
				    "close-delimited body: %s",
				    strerror(errno));
				goto fail;
			}
		}
	}
done:
	r->ok = 1;
	r->t_end = harness_now();
	harness_buf_add(&r->body, "", 0);
	return 0;
fail:
	r->t_end = harness_now();
	harness_buf_add(&r->body, "", 0);
	harness_buf_add(&r->head, "", 0);
	return -1;
}

int
http_conn_wait_closed(struct http_conn *c, int timeout_ms)
{
	double deadline;
	size_t before;
	int rv;

	if (c->in.len > 0)
		return -1;
	if (c->eof)
		return 1;
	deadline = harness_now() + timeout_ms / 1000.0;
	before = c->in.len;
	rv = http_conn_fill(c, deadline);
	if (rv == 0)
		return 1;
	if (rv > 0 && c->in.len > before)
		return -1;
	return 0;
}

int
http_conn_wait_readable(struct http_conn *c, int timeout_ms)
{
	struct pollfd pfd;

	if (c->in.len > 0 || c->eof)
		return 1;
	pfd.fd = c->fd;
	pfd.events = POLLIN;
	pfd.revents = 0;
	return poll(&pfd, 1, timeout_ms) > 0 ? 1 : 0;
}

/* ---- hashing ---------------------------------------------------------- */

struct harness_sha256 {
	EVP_MD_CTX *ctx;
};

struct harness_sha256 *
harness_sha256_new(void)
{
	struct harness_sha256 *h;

	h = calloc(1, sizeof *h);
	if (h == NULL)
		ck_abort_msg("out of memory");
	h->ctx = EVP_MD_CTX_new();
	if (h->ctx == NULL ||
	    EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1)
		ck_abort_msg("EVP sha256 init failed");
	return h;
}

void
harness_sha256_update(struct harness_sha256 *h, const void *p, size_t n)
{
	EVP_DigestUpdate(h->ctx, p, n);
}

void
harness_sha256_final(struct harness_sha256 *h, char hex[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0, i;

	EVP_DigestFinal_ex(h->ctx, md, &len);
	for (i = 0; i < len && i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	hex[64] = '\0';
	EVP_MD_CTX_free(h->ctx);
	free(h);
}

void
harness_sha256_hex(const void *p, size_t n, char hex[65])
{
	struct harness_sha256 *h;

	h = harness_sha256_new();
	harness_sha256_update(h, p, n);
	harness_sha256_final(h, hex);
}

/* ---- shared by the suites ----------------------------------------------- */

void
harness_fill(char *buf, size_t len, uint32_t seed)
{
	uint32_t x = seed * 2654435761u + 1;
	size_t i;

	for (i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		buf[i] = (char)(x >> 24);
	}
}

cJSON *
harness_json(const struct http_resp *r, const char *what)
{
	cJSON *j;

	j = http_json(r);
	H_ASSERT(j != NULL, "%s: body is not JSON: %.300s", what,
	    r->body.data ? r->body.data : "");
	return j;
}

const char *
harness_jstr(const cJSON *j, const char *key)
{
	const cJSON *v;

	v = cJSON_GetObjectItemCaseSensitive(j, key);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

double
harness_jnum(const cJSON *j, const char *key)
{
	const cJSON *v;

	v = cJSON_GetObjectItemCaseSensitive(j, key);
	H_ASSERT(cJSON_IsNumber(v), "no number \"%s\"", key);
	return v->valuedouble;
}

TCase *
harness_tcase(Suite *s, const char *name, double timeout)
{
	TCase *tc;

	tc = tcase_create(name);
	tcase_add_checked_fixture(tc, harness_setup, harness_teardown);
	tcase_set_timeout(tc, timeout);
	suite_add_tcase(s, tc);
	return tc;
}

int
harness_main(Suite *suite)
{
	SRunner *sr;
	int failed;

	sr = srunner_create(suite);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* ---- members from DNS (check_discovery) -------------------------------- */

void
harness_replace_file(const char *path, const char *text)
{
	char *tmp;
	FILE *f;

	tmp = harness_strf("%s.new", path);
	f = fopen(tmp, "w");
	if (f == NULL)
		ck_abort_msg("fopen %s: %s", tmp, strerror(errno));
	fputs(text != NULL ? text : "", f);
	if (fclose(f) != 0)
		ck_abort_msg("write %s: %s", tmp, strerror(errno));
	if (rename(tmp, path) != 0)
		ck_abort_msg("rename %s: %s", tmp, strerror(errno));
}

static int
harness_count_lines_in(const char *text, const char *a, const char *b)
{
	const char *line = text, *nl;
	size_t len;
	int n = 0;

	while (*line != '\0') {
		nl = strchr(line, '\n');
		len = nl != NULL ? (size_t)(nl - line) : strlen(line);
		if (memmem(line, len, a, strlen(a)) != NULL &&
		    (b == NULL || memmem(line, len, b, strlen(b)) != NULL))
			n++;
		line += len + (nl != NULL);
	}
	return n;
}

int
harness_log_count_lines(
    const struct harness_proc *p, const char *a, const char *b)
{
	char *text = harness_log_read(p);
	int n;

	n = harness_count_lines_in(text, a, b);
	free(text);
	return n;
}

struct harness_log_lines {
	const char *a, *b;
	int n;
};

static int
harness_log_look_lines(const struct harness_proc *p, const void *arg)
{
	const struct harness_log_lines *l = arg;

	return harness_log_count_lines(p, l->a, l->b) >= l->n ? 1 : -1;
}

int
harness_log_wait_lines(
    struct harness_proc *p, const char *a, const char *b, int n, int timeout_ms)
{
	struct harness_log_lines l = {a, b, n};

	return harness_log_watch(p, harness_log_look_lines, &l, timeout_ms) > 0;
}

void
harness_proc_relabel(struct harness_proc *p, const char *label)
{
	char path[sizeof p->log_path];

	snprintf(path, sizeof path, "%s/%s.%s.log", harness_log_dir(),
	    harness_name, label);
	if (rename(p->log_path, path) != 0)
		ck_abort_msg("rename %s: %s", p->log_path, strerror(errno));
	snprintf(p->log_path, sizeof p->log_path, "%s", path);
	snprintf(p->label, sizeof p->label, "%s", label);
}
