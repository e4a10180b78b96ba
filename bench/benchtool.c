/*
 * benchtool: the measuring clients (and one stream source) of the
 * ollama-pool benchmarks.  Plain sockets, no libevent, so that what it
 * measures is the server under test, not a client library.
 *
 *   benchtool tsource -p PORT [-n LINES] [-i USEC]
 *	A stand-in Ollama that answers every request with a generate
 *	stream of LINES NDJSON lines, USEC apart (clock_nanosleep on an
 *	absolute schedule), each written as one chunk with its send time
 *	(CLOCK_MONOTONIC, ns) in a "t" field.  One thread per connection.
 *   benchtool stream -c HOST:PORT [-n LINES] [-i MS] [-o FILE]
 *	Sends one streaming /api/generate (num_predict LINES-1, so LINES
 *	lines, fake_interval_ms MS; the fake Ollama honours both, tsource
 *	ignores them), timestamps every line on arrival and prints one
 *	line of key=value: lines, reads, reads with more than one line,
 *	the most lines in one read, inter-arrival gaps, and when the lines
 *	carry "t", each line's delay (arrival - send) p50/p90/p99/max in us.
 *	-o writes each line's arrival and delay (ns) to FILE.
 *   benchtool idle -c HOST:PORT -n CONNS [-p PATH] [-w SECONDS]
 *	Opens CONNS keep-alive connections, does one GET PATH on each,
 *	prints "ready ok=N failed=M", then holds them open for SECONDS
 *	(default 600) or until killed.
 *   benchtool streams -c HOST:PORT -n CONNS [-l LINES] [-i MS]
 *	CONNS concurrent streaming generates; prints how many completed
 *	(status 200, terminating chunk, a last line with "done":true), the
 *	lines delivered in all, the most in flight at once, and the wall
 *	time.
 *   benchtool ttfb -c HOST:PORT -m MODEL,... [-L LOAD_MS] [-t TOKEN]
 *                  [-w SECONDS]
 *	One streaming /api/generate per model listed, one after the other,
 *	each on a fresh connection; prints the time to the first byte of
 *	each answer (connect included) and its p50, p95 and max in ms, and
 *	with -L how many took longer than LOAD_MS/2 (they paid a load).  A
 *	request fails unless it ends with status 200 and "done":true; -w
 *	bounds each read and write (default 60 s).
 *   benchtool queue -c HOST:PORT [-n BATCH] [-k INTERACTIVE] [-d MS]
 *                   [-m MODEL] [-a TOKEN] [-b TOKEN] [-w SECONDS]
 *	Two clients on one epoll: the batch (bearer token -a, "A") opens
 *	BATCH (500) streaming generates at once; MS (200) later the
 *	interactive client (token -b, "B") sends INTERACTIVE (10), each
 *	once the one before has ended.  Prints successes and failures of
 *	each, the batch's makespan (its start to its last answer's end),
 *	the interactive requests' latency (connect to last byte) p50, max
 *	and mean, the first one's, and from its first start to its last
 *	end.  Gives up
 *	after -w SECONDS (120) in all, counting what is left unfinished.
 *   benchtool digest -s SIZE
 *	The sha256 of the SIZE-byte upload body (a fixed pseudo-random MiB
 *	repeated).
 *   benchtool upload -c HOST:PORT -s SIZE -d HEX
 *	POSTs that body chunked (1 MiB chunks, no Content-Length, as the
 *	Ollama CLI does) to /api/blobs/sha256:HEX; prints the status, bytes,
 *	seconds and MiB/s, and when the answer is a sink's {"bytes":N}, N
 *	as received= (the upload fails when N is not SIZE).
 *   benchtool sink -p PORT
 *	A stand-in upstream that reads every request body whole (chunked
 *	or Content-Length) and counts its bytes: a request with a body is
 *	answered 201 {"bytes":N}, one without 200 {"version":"0.0.0"} (so
 *	a proxy's start-up probe passes).  Keep-alive, one thread per
 *	connection, 256 KiB reads, no hashing: the upload's cost is the
 *	proxy's, not the upstream's.
 *   benchtool fleet -c HOST:PORT [-c HOST:PORT] [-n CONVS] [-t TURNS]
 *                   [-l LINES] [-m MODEL] [-p PREFIX] [-D SECONDS]
 *                   [-w SECONDS]
 *	CONVS (200) conversations at once, each TURNS (5) streaming
 *	/api/chat turns one after the other, turn T of conversation C
 *	through the (C + T) % 2nd -c, so the turns alternate between two
 *	replicas.  Every turn resends the conversation's opening (a system
 *	prompt and a first user message naming it) and the turns before
 *	it, asks LINES lines (num_predict LINES-1) and carries X-Fake-Tag:
 *	PREFIX<C>.<T> (PREFIX "c"), which the fake Ollama records with the
 *	request.  A turn counts when it ends with status 200 and
 *	"done":true.  -D: steady load, a new conversation as one ends, for
 *	SECONDS or until SIGTERM, then the turns in flight finish; prints
 *	"running" once the first has.  Prints requests, failures, the most
 *	in flight and the turns' latency (connect to last byte); gives up
 *	after -w SECONDS (120), counting what is unfinished as failed.
 *   benchtool dns -f TABLE [-p PORT] [-t]
 *	A DNS stand-in on UDP 127.0.0.1:PORT: TABLE, lines NAME ADDRESS,
 *	read anew for every query, answers A and AAAA (TTL 0; a name
 *	without records of the type: empty; not in it: NXDOMAIN), up to 64
 *	records, past 512 bytes if need be (as to a client that offers a
 *	large EDNS buffer); -t stops at 512 bytes and sets TC, as a server
 *	does for a client without EDNS.  Logs each query on stderr.
 *
 * SIZE takes k, m, g suffixes (powers of 1024).
 */
#define _GNU_SOURCE

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#define BLOCK (1024 * 1024)

static void
die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("benchtool: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

static int64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static long long
parse_size(const char *s)
{
	char *end;
	long long v = strtoll(s, &end, 10);

	switch (*end) {
	case 'g':
	case 'G':
		v <<= 10; /* FALLTHROUGH */
	case 'm':
	case 'M':
		v <<= 10; /* FALLTHROUGH */
	case 'k':
	case 'K':
		v <<= 10;
		break;
	case '\0':
		break;
	default:
		die("bad size %s", s);
	}
	return v;
}

static struct sockaddr_in target;
static char target_host[64];

static void
parse_target(const char *hp)
{
	const char *colon = strrchr(hp, ':');

	if (colon == NULL || (size_t)(colon - hp) >= sizeof target_host)
		die("want HOST:PORT, got %s", hp);
	memcpy(target_host, hp, (size_t)(colon - hp));
	target_host[colon - hp] = '\0';
	memset(&target, 0, sizeof target);
	target.sin_family = AF_INET;
	target.sin_port = htons((uint16_t)atoi(colon + 1));
	if (inet_pton(AF_INET, target_host, &target.sin_addr) != 1)
		die("want an IPv4 address, got %s", target_host);
	snprintf(target_host, sizeof target_host, "%s", hp);
}

static int
connect_target(int nonblock)
{
	int fd = socket(
	        AF_INET, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0),
	    one = 1;

	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0 &&
	    errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	return fd;
}

static int
write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	ssize_t w;

	while (n > 0) {
		w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* --- an incremental HTTP/1.1 response parser ------------------------- */

enum rstate { R_HEAD, R_CL, R_CSIZE, R_CDATA, R_CCRLF, R_TRAILER, R_DONE };

struct resp {
	enum rstate st;
	char head[8192];
	size_t headlen;
	int status;
	long long left; /* Content-Length or chunk bytes left */
	int chunked;
	char line[64]; /* chunk-size line being read */
	size_t linelen;
	void (*body)(struct resp *, const char *, size_t);
	void *arg;
};

static void
resp_init(struct resp *r, void (*body)(struct resp *, const char *, size_t),
    void *arg)
{
	memset(r, 0, sizeof *r);
	r->body = body;
	r->arg = arg;
}

static int
resp_head_done(struct resp *r)
{
	char *p, *e;

	r->head[r->headlen] = '\0';
	if (sscanf(r->head, "HTTP/1.%*d %d", &r->status) != 1)
		return -1;
	r->left = -1;
	for (p = strstr(r->head, "\r\n"); p != NULL && p[2] != '\r';
	     p = strstr(p + 2, "\r\n")) {
		if (strncasecmp(p + 2, "content-length:", 15) == 0)
			r->left = strtoll(p + 17, NULL, 10);
		else if (strncasecmp(p + 2, "transfer-encoding:", 18) == 0) {
			e = strstr(p + 2, "\r\n");
			if (e != NULL &&
			    memmem(p + 2, (size_t)(e - p - 2), "chunked", 7) !=
			        NULL)
				r->chunked = 1;
		}
	}
	if (r->chunked)
		r->st = R_CSIZE;
	else if (r->left > 0)
		r->st = R_CL;
	else if (r->left == 0 || r->status == 204 || r->status == 304)
		r->st = R_DONE;
	else
		return -1; /* close-delimited: not used here */
	return 0;
}

/* Feeds bytes; returns -1 on a malformed response.  Stops at R_DONE. */
static int
resp_feed(struct resp *r, const char *p, size_t n)
{
	size_t k;

	while (n > 0 && r->st != R_DONE) {
		switch (r->st) {
		case R_HEAD:
			if (r->headlen + 1 >= sizeof r->head)
				return -1;
			r->head[r->headlen++] = *p++;
			n--;
			if (r->headlen >= 4 &&
			    memcmp(r->head + r->headlen - 4, "\r\n\r\n", 4) ==
			        0 &&
			    resp_head_done(r) < 0)
				return -1;
			break;
		case R_CL:
		case R_CDATA:
			k = n < (size_t)r->left ? n : (size_t)r->left;
			if (r->body != NULL)
				r->body(r, p, k);
			p += k;
			n -= k;
			r->left -= (long long)k;
			if (r->left == 0)
				r->st = r->st == R_CL ? R_DONE : R_CCRLF;
			break;
		case R_CCRLF:
			if (*p == '\n')
				r->st = R_CSIZE;
			p++;
			n--;
			break;
		case R_CSIZE:
		case R_TRAILER:
			if (r->linelen + 1 >= sizeof r->line)
				return -1;
			r->line[r->linelen++] = *p++;
			n--;
			if (r->line[r->linelen - 1] != '\n')
				break;
			r->line[r->linelen] = '\0';
			if (r->st == R_TRAILER) {
				if (r->linelen <= 2)
					r->st = R_DONE;
			} else {
				r->left = strtoll(r->line, NULL, 16);
				r->st = r->left == 0 ? R_TRAILER : R_CDATA;
			}
			r->linelen = 0;
			break;
		default:
			return -1;
		}
	}
	return 0;
}

static int
cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array. */
static int64_t
pct(const int64_t *v, size_t n, double p)
{
	size_t i;

	if (n == 0)
		return 0;
	i = (size_t)(p / 100.0 * (double)n + 0.999999);
	if (i < 1)
		i = 1;
	if (i > n)
		i = n;
	return v[i - 1];
}

/* --- tsource ----------------------------------------------------------- */

static int ts_lines = 1000;
static long ts_interval_us = 2000;

static void *
ts_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[65536], line[512], out[600];
	size_t have = 0;
	ssize_t n;
	int i, len, olen;
	char *end;
	long long cl;
	struct timespec due;
	int64_t start, t;
	const char *hd = "HTTP/1.1 200 OK\r\n"
	                 "Content-Type: application/x-ndjson\r\n"
	                 "Transfer-Encoding: chunked\r\n\r\n";

	for (;;) {
		/* Read one request: head, then a Content-Length or chunked
		 * body (ended by "0\r\n\r\n"). */
		end = NULL;
		while (end == NULL) {
			n = read(fd, buf + have, sizeof buf - 1 - have);
			if (n <= 0)
				goto out;
			have += (size_t)n;
			buf[have] = '\0';
			end = strstr(buf, "\r\n\r\n");
			if (end == NULL && have >= sizeof buf - 1)
				goto out;
		}
		end += 4;
		cl = 0;
		{
			char *h = strcasestr(buf, "\r\ncontent-length:");

			if (h != NULL && h < end)
				cl = strtoll(h + 17, NULL, 10);
			h = strcasestr(buf, "\r\ntransfer-encoding:");
			if (h != NULL && h < end)
				cl = -1;
		}
		if (cl >= 0) {
			while ((long long)(buf + have - end) < cl) {
				n = read(fd, buf + have, sizeof buf - 1 - have);
				if (n <= 0)
					goto out;
				have += (size_t)n;
			}
		} else {
			buf[have] = '\0';
			while (memmem(end, (size_t)(buf + have - end),
			           "0\r\n\r\n", 5) == NULL) {
				if (have >= sizeof buf - 1)
					goto out;
				n = read(fd, buf + have, sizeof buf - 1 - have);
				if (n <= 0)
					goto out;
				have += (size_t)n;
			}
		}
		have = 0; /* one request at a time: no pipelining */
		if (write_all(fd, hd, strlen(hd)) < 0)
			goto out;
		start = now_ns();
		for (i = 0; i < ts_lines; i++) {
			t = start + (int64_t)i * ts_interval_us * 1000;
			due.tv_sec = t / 1000000000;
			due.tv_nsec = t % 1000000000;
			while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME,
			           &due, NULL) == EINTR)
				;
			t = now_ns();
			if (i + 1 < ts_lines)
				len = snprintf(line, sizeof line,
				    "{\"model\":\"llama3.2\",\"created_at\":"
				    "\"2024-01-01T00:00:00Z\",\"response\":"
				    "\" tok\",\"done\":false,\"t\":%lld}\n",
				    (long long)t);
			else
				len = snprintf(line, sizeof line,
				    "{\"model\":\"llama3.2\",\"created_at\":"
				    "\"2024-01-01T00:00:00Z\",\"response\":"
				    "\"\",\"done\":true,\"done_reason\":"
				    "\"stop\",\"t\":%lld}\n",
				    (long long)t);
			olen = snprintf(out, sizeof out, "%x\r\n%s\r\n%s", len,
			    line, i + 1 < ts_lines ? "" : "0\r\n\r\n");
			if (write_all(fd, out, (size_t)olen) < 0)
				goto out;
		}
	}
out:
	close(fd);
	return NULL;
}

/* Binds a loopback listener on PORT (0: any) and prints its port. */
static int
listen_print(int port)
{
	int lfd, one = 1;
	struct sockaddr_in sa;
	socklen_t sl = sizeof sa;

	lfd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
	    listen(lfd, 1024) < 0)
		die("bind: %s", strerror(errno));
	getsockname(lfd, (struct sockaddr *)&sa, &sl);
	printf("%d\n", ntohs(sa.sin_port));
	fflush(stdout);
	return lfd;
}

static int
cmd_tsource(int argc, char **argv)
{
	int opt, lfd, fd, one = 1, port = 0;
	pthread_t th;
	pthread_attr_t at;

	while ((opt = getopt(argc, argv, "p:n:i:")) != -1)
		switch (opt) {
		case 'p':
			port = atoi(optarg);
			break;
		case 'n':
			ts_lines = atoi(optarg);
			break;
		case 'i':
			ts_interval_us = atol(optarg);
			break;
		default:
			die("tsource -p PORT [-n LINES] [-i USEC]");
		}
	lfd = listen_print(port);
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&at, 256 * 1024);
	for (;;) {
		fd = accept(lfd, NULL, NULL);
		if (fd < 0)
			continue;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		if (pthread_create(&th, &at, ts_conn, (void *)(intptr_t)fd))
			close(fd);
	}
	return 0;
}

/* --- stream ------------------------------------------------------------ */

struct lines {
	char cur[4096];
	size_t curlen;
	int64_t now; /* time of the read being parsed */
	int64_t *arrive, *delay;
	size_t n, ndelay, cap;
	int in_read; /* lines completed by the current read */
	int last_done;
};

static void
lines_body(struct resp *r, const char *p, size_t n)
{
	struct lines *L = r->arg;
	const char *t;
	size_t i;

	for (i = 0; i < n; i++) {
		if (L->curlen < sizeof L->cur - 1)
			L->cur[L->curlen++] = p[i];
		if (p[i] != '\n')
			continue;
		L->cur[L->curlen] = '\0';
		if (L->n == L->cap) {
			L->cap = L->cap ? 2 * L->cap : 1024;
			L->arrive =
			    realloc(L->arrive, L->cap * sizeof *L->arrive);
			L->delay = realloc(L->delay, L->cap * sizeof *L->delay);
			if (L->arrive == NULL || L->delay == NULL)
				die("out of memory");
		}
		L->arrive[L->n++] = L->now;
		t = strstr(L->cur, "\"t\":");
		if (t != NULL)
			L->delay[L->ndelay++] =
			    L->now - strtoll(t + 4, NULL, 10);
		L->last_done = strstr(L->cur, "\"done\":true") != NULL;
		L->in_read++;
		L->curlen = 0;
	}
}

static int
cmd_stream(int argc, char **argv)
{
	int opt, fd, nlines = 1000, ims = 2, reads = 0, multi = 0, maxper = 0;
	char req[1024], body[256], buf[65536];
	const char *dump = NULL;
	FILE *fp;
	struct resp r;
	struct lines L;
	ssize_t n;
	int64_t *gap;
	size_t i;

	while ((opt = getopt(argc, argv, "c:n:i:o:")) != -1)
		switch (opt) {
		case 'c':
			parse_target(optarg);
			break;
		case 'n':
			nlines = atoi(optarg);
			break;
		case 'i':
			ims = atoi(optarg);
			break;
		case 'o':
			dump = optarg;
			break;
		default:
			die("stream -c HOST:PORT [-n LINES] [-i MS] [-o FILE]");
		}
	snprintf(body, sizeof body,
	    "{\"model\":\"llama3.2\",\"prompt\":"
	    "\"Why is the sky blue?\",\"options\":{\"num_predict\":%d},"
	    "\"fake_interval_ms\":%d}",
	    nlines - 1, ims);
	snprintf(req, sizeof req,
	    "POST /api/generate HTTP/1.1\r\nHost: %s\r\n"
	    "User-Agent: benchtool\r\nContent-Type: application/json\r\n"
	    "Content-Length: %zu\r\n\r\n%s",
	    target_host, strlen(body), body);
	memset(&L, 0, sizeof L);
	resp_init(&r, lines_body, &L);
	fd = connect_target(0);
	if (fd < 0 || write_all(fd, req, strlen(req)) < 0)
		die("stream: connect/write: %s", strerror(errno));
	while (r.st != R_DONE) {
		n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("stream: connection closed after %zu lines", L.n);
		L.now = now_ns();
		L.in_read = 0;
		if (resp_feed(&r, buf, (size_t)n) < 0)
			die("stream: malformed response");
		if (L.in_read > 0) {
			reads++;
			if (L.in_read > 1)
				multi++;
			if (L.in_read > maxper)
				maxper = L.in_read;
		}
	}
	close(fd);
	if (r.status != 200)
		die("stream: status %d", r.status);
	if (dump != NULL && (fp = fopen(dump, "w")) != NULL) {
		for (i = 0; i < L.n; i++)
			fprintf(fp, "%zu %lld %lld\n", i,
			    (long long)L.arrive[i],
			    i < L.ndelay ? (long long)L.delay[i] : -1LL);
		fclose(fp);
	}
	gap = calloc(L.n ? L.n : 1, sizeof *gap);
	for (i = 1; i < L.n; i++)
		gap[i - 1] = L.arrive[i] - L.arrive[i - 1];
	qsort(gap, L.n ? L.n - 1 : 0, sizeof *gap, cmp_i64);
	printf("lines=%zu reads=%d multi_line_reads=%d max_lines_per_read=%d "
	       "done=%d gap_p50_us=%.1f gap_p99_us=%.1f gap_max_us=%.1f",
	    L.n, reads, multi, maxper, L.last_done, pct(gap, L.n - 1, 50) / 1e3,
	    pct(gap, L.n - 1, 99) / 1e3, L.n > 1 ? gap[L.n - 2] / 1e3 : 0.0);
	if (L.ndelay > 0) {
		qsort(L.delay, L.ndelay, sizeof *L.delay, cmp_i64);
		printf(" delay_p50_us=%.1f delay_p90_us=%.1f delay_p99_us=%.1f "
		       "delay_max_us=%.1f",
		    pct(L.delay, L.ndelay, 50) / 1e3,
		    pct(L.delay, L.ndelay, 90) / 1e3,
		    pct(L.delay, L.ndelay, 99) / 1e3,
		    L.delay[L.ndelay - 1] / 1e3);
	}
	printf("\n");
	return 0;
}

/* --- idle and streams: many connections on one epoll ------------------- */

struct mconn {
	int fd;
	int state; /* 0 connecting/sending, 1 reading, 2 done, 3 failed */
	size_t sent;
	struct resp r;
	struct lines *L;
};

static const char *m_req;
static size_t m_reqlen;

static void
streams_body(struct resp *r, const char *p, size_t n)
{
	lines_body(r, p, n);
}

/* Runs CONNS request/response exchanges at once, at most `ramp` connects
 * outstanding; returns when every one finished or failed. */
static void
many(struct mconn *c, int conns, int ramp, int count_lines, int *ok,
    int *failed, int *maxflight)
{
	int ep = epoll_create1(0), started = 0, pending = 0, i, k, flight = 0;
	struct epoll_event ev, evs[256];
	char buf[65536];
	ssize_t n;

	*ok = *failed = *maxflight = 0;
	while (*ok + *failed < conns) {
		while (started < conns && pending < ramp) {
			struct mconn *m = &c[started];

			memset(m, 0, sizeof *m);
			if (count_lines) {
				m->L = calloc(1, sizeof *m->L);
				resp_init(&m->r, streams_body, m->L);
			} else
				resp_init(&m->r, NULL, NULL);
			m->fd = connect_target(1);
			started++;
			if (m->fd < 0) {
				m->state = 3;
				(*failed)++;
				continue;
			}
			ev.events = EPOLLOUT | EPOLLIN;
			ev.data.ptr = m;
			epoll_ctl(ep, EPOLL_CTL_ADD, m->fd, &ev);
			pending++;
		}
		k = epoll_wait(ep, evs, 256, 10000);
		if (k == 0)
			die("many: no progress in 10 s (%d ok, %d failed of "
			    "%d)",
			    *ok, *failed, conns);
		for (i = 0; i < k; i++) {
			struct mconn *m = evs[i].data.ptr;

			if (m->state == 0 && (evs[i].events & EPOLLOUT)) {
				n = write(
				    m->fd, m_req + m->sent, m_reqlen - m->sent);
				if (n < 0 && errno != EAGAIN)
					goto fail;
				if (n > 0)
					m->sent += (size_t)n;
				if (m->sent == m_reqlen) {
					m->state = 1;
					ev.events = EPOLLIN;
					ev.data.ptr = m;
					epoll_ctl(
					    ep, EPOLL_CTL_MOD, m->fd, &ev);
				}
				continue;
			}
			if (!(evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
				continue;
			n = read(m->fd, buf, sizeof buf);
			if (n < 0 && errno == EAGAIN)
				continue;
			if (n <= 0)
				goto fail;
			if (m->r.st == R_HEAD) {
				resp_feed(&m->r, buf, (size_t)n);
				if (m->r.st != R_HEAD && ++flight > *maxflight)
					*maxflight = flight;
			} else if (resp_feed(&m->r, buf, (size_t)n) < 0)
				goto fail;
			if (m->r.st == R_DONE) {
				flight--;
				pending--;
				if (m->r.status == 200 &&
				    (!count_lines || m->L->last_done)) {
					m->state = 2;
					(*ok)++;
				} else {
					m->state = 3;
					(*failed)++;
					fprintf(stderr,
					    "benchtool: status %d\n",
					    m->r.status);
				}
				/* idle: keep the connection open, unwatched */
				epoll_ctl(ep, EPOLL_CTL_DEL, m->fd, NULL);
				if (count_lines)
					close(m->fd);
			}
			continue;
		fail:
			if (m->r.st != R_HEAD && m->r.st != R_DONE)
				flight--;
			pending--;
			m->state = 3;
			(*failed)++;
			epoll_ctl(ep, EPOLL_CTL_DEL, m->fd, NULL);
			close(m->fd);
		}
	}
	close(ep);
}

static int
cmd_idle(int argc, char **argv)
{
	int opt, conns = 1000, ok, failed, mf, hold = 600;
	const char *path = "/api/tags";
	struct mconn *c;
	char req[512];

	while ((opt = getopt(argc, argv, "c:n:p:w:")) != -1)
		switch (opt) {
		case 'c':
			parse_target(optarg);
			break;
		case 'n':
			conns = atoi(optarg);
			break;
		case 'p':
			path = optarg;
			break;
		case 'w':
			hold = atoi(optarg);
			break;
		default:
			die("idle -c HOST:PORT -n CONNS [-p PATH] [-w S]");
		}
	snprintf(req, sizeof req,
	    "GET %s HTTP/1.1\r\nHost: %s\r\n"
	    "User-Agent: benchtool\r\nAccept: */*\r\n\r\n",
	    path, target_host);
	m_req = req;
	m_reqlen = strlen(req);
	c = calloc((size_t)conns, sizeof *c);
	if (c == NULL)
		die("out of memory");
	many(c, conns, 200, 0, &ok, &failed, &mf);
	printf("ready ok=%d failed=%d\n", ok, failed);
	fflush(stdout);
	sleep((unsigned)hold);
	return 0;
}

static int
cmd_streams(int argc, char **argv)
{
	int opt, conns = 1000, lines = 40, ims = 50, ok, failed, mf, i;
	size_t total = 0;
	struct mconn *c;
	char req[1024], body[256];
	int64_t t0;

	while ((opt = getopt(argc, argv, "c:n:l:i:")) != -1)
		switch (opt) {
		case 'c':
			parse_target(optarg);
			break;
		case 'n':
			conns = atoi(optarg);
			break;
		case 'l':
			lines = atoi(optarg);
			break;
		case 'i':
			ims = atoi(optarg);
			break;
		default:
			die("streams -c HOST:PORT -n CONNS [-l LINES] [-i MS]");
		}
	snprintf(body, sizeof body,
	    "{\"model\":\"llama3.2\",\"prompt\":"
	    "\"hi\",\"options\":{\"num_predict\":%d},\"fake_interval_ms\":%d}",
	    lines - 1, ims);
	snprintf(req, sizeof req,
	    "POST /api/generate HTTP/1.1\r\nHost: %s\r\n"
	    "User-Agent: benchtool\r\nContent-Type: application/json\r\n"
	    "Content-Length: %zu\r\n\r\n%s",
	    target_host, strlen(body), body);
	m_req = req;
	m_reqlen = strlen(req);
	c = calloc((size_t)conns, sizeof *c);
	if (c == NULL)
		die("out of memory");
	t0 = now_ns();
	many(c, conns, conns, 1, &ok, &failed, &mf);
	for (i = 0; i < conns; i++)
		if (c[i].L != NULL)
			total += c[i].L->n;
	printf("completed=%d failed=%d lines=%zu max_in_flight=%d "
	       "seconds=%.3f\n",
	    ok, failed, total, mf, (now_ns() - t0) / 1e9);
	return failed != 0;
}

/* --- ttfb and queue: generates a fleet sees ----------------------------- */

/* A streaming /api/generate for MODEL, with a bearer TOKEN unless NULL. */
static size_t
gen_request(char *buf, size_t size, const char *model, const char *token)
{
	char body[256], auth[256] = "";
	int n;

	snprintf(body, sizeof body,
	    "{\"model\":\"%s\",\"prompt\":\"Why is the sky blue?\"}", model);
	if (token != NULL)
		snprintf(
		    auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
	n = snprintf(buf, size,
	    "POST /api/generate HTTP/1.1\r\nHost: %s\r\n"
	    "User-Agent: benchtool\r\nContent-Type: application/json\r\n"
	    "%sContent-Length: %zu\r\n\r\n%s",
	    target_host, auth, strlen(body), body);
	if (n < 0 || (size_t)n >= size)
		die("request too long");
	return (size_t)n;
}

/* Milliseconds of a sorted array's percentile, or its largest value. */
static double
pct_ms(const int64_t *v, size_t n, double p)
{
	return n == 0 ? 0.0 : pct(v, n, p) / 1e6;
}

/* One request, start to end, on a fresh connection; the time to the
 * first byte of the answer in *ttfb (ns).  Returns 0 when it ended with
 * status 200 and a "done":true line. */
static int
ttfb_one(const char *req, size_t len, int wait_s, int64_t *ttfb)
{
	struct timeval tv = {.tv_sec = wait_s, .tv_usec = 0};
	struct lines L;
	struct resp r;
	char buf[65536];
	int64_t t0 = now_ns();
	ssize_t n;
	int fd, ok;

	*ttfb = -1;
	memset(&L, 0, sizeof L);
	resp_init(&r, lines_body, &L);
	fd = connect_target(0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (write_all(fd, req, len) < 0) {
		close(fd);
		return -1;
	}
	while (r.st != R_DONE) {
		n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (*ttfb < 0)
			*ttfb = now_ns() - t0;
		if (resp_feed(&r, buf, (size_t)n) < 0)
			break;
	}
	close(fd);
	ok = r.st == R_DONE && r.status == 200 && L.last_done;
	if (!ok)
		fprintf(stderr, "benchtool: ttfb: status %d, %zu lines%s\n",
		    r.status, L.n, r.st == R_DONE ? "" : ", cut short");
	free(L.arrive);
	free(L.delay);
	return ok ? 0 : -1;
}

static int
cmd_ttfb(int argc, char **argv)
{
	int opt, wait_s = 60, ok = 0, failed = 0, loads = 0;
	long load_ms = 0;
	char *models = NULL, *p, *m, req[1024];
	const char *token = NULL;
	int64_t *v, *sorted, t;
	size_t n = 0, cap = 16, i, len;

	while ((opt = getopt(argc, argv, "c:m:L:t:w:")) != -1)
		switch (opt) {
		case 'c':
			parse_target(optarg);
			break;
		case 'm':
			models = optarg;
			break;
		case 'L':
			load_ms = atol(optarg);
			break;
		case 't':
			token = optarg;
			break;
		case 'w':
			wait_s = atoi(optarg);
			break;
		default:
			die("ttfb -c HOST:PORT -m MODEL,... [-L LOAD_MS] "
			    "[-t TOKEN] [-w SECONDS]");
		}
	if (models == NULL)
		die("ttfb needs -m MODEL,...");
	if ((v = malloc(cap * sizeof *v)) == NULL)
		die("out of memory");
	for (p = models; (m = strsep(&p, ",")) != NULL;) {
		if (*m == '\0')
			continue;
		if (n == cap &&
		    (v = realloc(v, (cap *= 2) * sizeof *v)) == NULL)
			die("out of memory");
		len = gen_request(req, sizeof req, m, token);
		if (ttfb_one(req, len, wait_s, &t) == 0) {
			v[n++] = t;
			ok++;
			if (load_ms > 0 && t > load_ms * 500000LL)
				loads++;
		} else
			failed++;
	}
	if ((sorted = malloc((n ? n : 1) * sizeof *sorted)) == NULL)
		die("out of memory");
	memcpy(sorted, v, n * sizeof *v);
	qsort(sorted, n, sizeof *sorted, cmp_i64);
	printf("requests=%d ok=%d failed=%d ttfb_p50_ms=%.2f "
	       "ttfb_p95_ms=%.2f ttfb_max_ms=%.2f loads=%d ttfb_ms=",
	    ok + failed, ok, failed, pct_ms(sorted, n, 50),
	    pct_ms(sorted, n, 95), n ? sorted[n - 1] / 1e6 : 0.0, loads);
	for (i = 0; i < n; i++)
		printf("%s%.1f", i ? "," : "", v[i] / 1e6);
	printf("\n");
	return failed != 0;
}

/* One request on a non-blocking connection in an epoll set: written,
 * then its answer read, its lines timed (queue and fleet share it). */
struct exch {
	int fd;
	int state; /* 0 sending, 1 reading; then the caller's */
	const char *req;
	size_t len, sent;
	struct resp r;
	struct lines L;
};

static void
exch_begin(struct exch *x, const char *req, size_t len)
{
	x->req = req;
	x->len = len;
	x->sent = 0;
	x->state = 0;
	memset(&x->L, 0, sizeof x->L);
	resp_init(&x->r, lines_body, &x->L);
}

/* An event on x's connection (ptr: its epoll data): 0 under way, 1 the
 * answer is whole, -1 it failed. */
static int
exch_event(int ep, struct exch *x, void *ptr, uint32_t events)
{
	struct epoll_event ev;
	char buf[65536];
	ssize_t n;

	if (x->state == 0 && (events & EPOLLOUT)) {
		n = write(x->fd, x->req + x->sent, x->len - x->sent);
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return -1;
		if (n > 0)
			x->sent += (size_t)n;
		if (x->sent == x->len) {
			x->state = 1;
			ev.events = EPOLLIN;
			ev.data.ptr = ptr;
			epoll_ctl(ep, EPOLL_CTL_MOD, x->fd, &ev);
		}
		return 0;
	}
	if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
		return 0;
	n = read(x->fd, buf, sizeof buf);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n <= 0 || resp_feed(&x->r, buf, (size_t)n) < 0)
		return -1;
	return x->r.st == R_DONE ? 1 : 0;
}

/* Did the whole answer come, 200 and to its final line? */
static int
exch_ok(const struct exch *x, int rc)
{
	return rc > 0 && x->r.status == 200 && x->L.last_done;
}

/* Out of the epoll set, closed, its lines freed. */
static void
exch_close(int ep, struct exch *x)
{
	if (x->fd >= 0) {
		epoll_ctl(ep, EPOLL_CTL_DEL, x->fd, NULL);
		close(x->fd);
		x->fd = -1;
	}
	free(x->L.arrive);
	free(x->L.delay);
	x->L.arrive = x->L.delay = NULL;
}

struct qreq {
	struct exch x; /* its state: then 2 done, 3 failed */
	int inter; /* the interactive client's */
	int64_t t0, t1;
};

static const char *q_req[2];
static size_t q_len[2];

static void
q_start(int ep, struct qreq *q, int inter)
{
	struct epoll_event ev;

	memset(q, 0, sizeof *q);
	q->inter = inter;
	exch_begin(&q->x, q_req[inter], q_len[inter]);
	q->t0 = now_ns();
	q->x.fd = connect_target(1);
	if (q->x.fd < 0) {
		q->x.state = 3;
		q->t1 = q->t0;
		return;
	}
	ev.events = EPOLLOUT | EPOLLIN;
	ev.data.ptr = q;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, q->x.fd, &ev) < 0)
		die("epoll_ctl: %s", strerror(errno));
}

static void
q_end(int ep, struct qreq *q, int ok)
{
	q->t1 = now_ns();
	if (!ok)
		fprintf(stderr, "benchtool: queue: %s request: status %d%s\n",
		    q->inter ? "interactive" : "batch", q->x.r.status,
		    q->x.r.st == R_DONE ? "" : ", cut short");
	exch_close(ep, &q->x);
	q->x.state = ok ? 2 : 3;
}

/* An event on q; returns 1 once q has ended. */
static int
q_event(int ep, struct qreq *q, uint32_t events)
{
	int rc = exch_event(ep, &q->x, q, events);

	if (rc == 0)
		return 0;
	q_end(ep, q, exch_ok(&q->x, rc));
	return 1;
}

static int
cmd_queue(int argc, char **argv)
{
	int opt, nbatch = 500, ninter = 10, delay_ms = 200, wait_s = 120;
	int ep, k, i, started = 0, ended = 0, bok = 0, iok = 0;
	const char *model = "m", *ta = "A", *tb = "B";
	char reqa[1024], reqb[1024];
	struct qreq *q, *cur = NULL;
	struct epoll_event evs[256];
	int64_t t0, next, deadline, now, last_batch = 0, *lat, *blat;
	int64_t isum = 0, ifirst = 0, ilast = 0;
	size_t nlat = 0, nblat = 0;

	while ((opt = getopt(argc, argv, "c:n:k:d:m:a:b:w:")) != -1)
		switch (opt) {
		case 'c':
			parse_target(optarg);
			break;
		case 'n':
			nbatch = atoi(optarg);
			break;
		case 'k':
			ninter = atoi(optarg);
			break;
		case 'd':
			delay_ms = atoi(optarg);
			break;
		case 'm':
			model = optarg;
			break;
		case 'a':
			ta = optarg;
			break;
		case 'b':
			tb = optarg;
			break;
		case 'w':
			wait_s = atoi(optarg);
			break;
		default:
			die("queue -c HOST:PORT [-n BATCH] [-k INTERACTIVE] "
			    "[-d MS] [-m MODEL] [-a TOKEN] [-b TOKEN] "
			    "[-w SECONDS]");
		}
	if (nbatch < 1 || ninter < 0)
		die("queue: -n at least 1, -k at least 0");
	q_len[0] = gen_request(reqa, sizeof reqa, model, ta);
	q_len[1] = gen_request(reqb, sizeof reqb, model, tb);
	q_req[0] = reqa;
	q_req[1] = reqb;
	q = calloc((size_t)(nbatch + ninter), sizeof *q);
	lat = calloc((size_t)ninter + 1, sizeof *lat);
	blat = calloc((size_t)nbatch, sizeof *blat);
	if ((ep = epoll_create1(0)) < 0 || q == NULL || lat == NULL ||
	    blat == NULL)
		die("out of memory");

	/* The batch all at once; the interactive client DELAY later, one
	 * request after the other. */
	t0 = now_ns();
	for (i = 0; i < nbatch; i++) {
		q_start(ep, &q[i], 0);
		if (q[i].x.state == 3) {
			q_end(ep, &q[i], 0);
			ended++;
		}
	}
	started = nbatch;
	next = t0 + (int64_t)delay_ms * 1000000;
	deadline = t0 + (int64_t)wait_s * 1000000000;
	while (ended < nbatch + ninter) {
		now = now_ns();
		if (now >= deadline)
			break;
		if (cur == NULL && started < nbatch + ninter && now >= next) {
			cur = &q[started++];
			q_start(ep, cur, 1);
			if (ifirst == 0)
				ifirst = cur->t0;
			if (cur->x.state == 3) {
				q_end(ep, cur, 0);
				ended++;
				cur = NULL;
				continue;
			}
		}
		{
			int64_t until = deadline;
			int ms;

			if (cur == NULL && started < nbatch + ninter &&
			    next < until)
				until = next;
			ms = (int)((until - now + 999999) / 1000000);
			k = epoll_wait(ep, evs, 256, ms < 1 ? 1 : ms);
		}
		if (k < 0 && errno != EINTR)
			die("epoll_wait: %s", strerror(errno));
		for (i = 0; i < k; i++) {
			struct qreq *e = evs[i].data.ptr;

			if (!q_event(ep, e, evs[i].events))
				continue;
			ended++;
			if (e->inter) {
				if (e->x.state == 2) {
					lat[nlat++] = e->t1 - e->t0;
					isum += e->t1 - e->t0;
					iok++;
				}
				ilast = e->t1;
				cur = NULL;
				next = e->t1;
			} else {
				if (e->x.state == 2) {
					blat[nblat++] = e->t1 - e->t0;
					bok++;
				}
				if (e->t1 > last_batch)
					last_batch = e->t1;
			}
		}
	}
	qsort(lat, nlat, sizeof *lat, cmp_i64);
	qsort(blat, nblat, sizeof *blat, cmp_i64);
	printf("batch=%d batch_ok=%d batch_failed=%d makespan_s=%.3f "
	       "batch_p50_s=%.3f inter=%d inter_ok=%d inter_failed=%d "
	       "inter_p50_ms=%.1f inter_max_ms=%.1f inter_mean_ms=%.1f "
	       "inter_first_ms=%.1f inter_total_ms=%.1f unfinished=%d\n",
	    nbatch, bok, nbatch - bok, last_batch ? (last_batch - t0) / 1e9 : 0,
	    pct_ms(blat, nblat, 50) / 1e3, ninter, iok, ninter - iok,
	    pct_ms(lat, nlat, 50), nlat ? lat[nlat - 1] / 1e6 : 0.0,
	    nlat ? isum / 1e6 / (double)nlat : 0.0,
	    ninter > 0 && q[nbatch].x.state == 2
	        ? (q[nbatch].t1 - q[nbatch].t0) / 1e6
	        : 0.0,
	    ilast > ifirst ? (ilast - ifirst) / 1e6 : 0.0,
	    nbatch + ninter - ended);
	return bok + iok != nbatch + ninter;
}

/* --- upload ------------------------------------------------------------ */

static unsigned char *
make_block(void)
{
	unsigned char *b = malloc(BLOCK);
	uint64_t x = 0x9e3779b97f4a7c15ull;
	size_t i;

	if (b == NULL)
		die("out of memory");
	for (i = 0; i < BLOCK; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(b + i, &x, 8);
	}
	return b;
}

static int
cmd_digest(int argc, char **argv)
{
	int opt;
	long long size = 0, left;
	unsigned char *b = make_block(), md[EVP_MAX_MD_SIZE];
	unsigned int len, i;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	while ((opt = getopt(argc, argv, "s:")) != -1)
		switch (opt) {
		case 's':
			size = parse_size(optarg);
			break;
		default:
			die("digest -s SIZE");
		}
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	for (left = size; left > 0; left -= BLOCK)
		EVP_DigestUpdate(ctx, b, left < BLOCK ? (size_t)left : BLOCK);
	EVP_DigestFinal_ex(ctx, md, &len);
	for (i = 0; i < len; i++)
		printf("%02x", md[i]);
	printf("\n");
	return 0;
}

struct answer {
	char text[256];
	size_t len;
};

/* Keeps the first bytes of an answer's body. */
static void
answer_body(struct resp *r, const char *p, size_t n)
{
	struct answer *a = r->arg;
	size_t k = sizeof a->text - 1 - a->len;

	if (k > n)
		k = n;
	memcpy(a->text + a->len, p, k);
	a->len += k;
}

static int
cmd_upload(int argc, char **argv)
{
	int opt, fd;
	long long size = 0, left;
	const char *hex = NULL;
	unsigned char *b = make_block();
	char head[512], frame[32], buf[4096];
	struct iovec iov[3];
	struct resp r;
	struct answer ans = {.len = 0};
	ssize_t n;
	int64_t t0;
	double s;
	const char *got;
	long long received = -1;

	while ((opt = getopt(argc, argv, "c:s:d:")) != -1)
		switch (opt) {
		case 'c':
			parse_target(optarg);
			break;
		case 's':
			size = parse_size(optarg);
			break;
		case 'd':
			hex = optarg;
			break;
		default:
			die("upload -c HOST:PORT -s SIZE -d HEX");
		}
	if (hex == NULL)
		die("upload needs -d HEX");
	snprintf(head, sizeof head,
	    "POST /api/blobs/sha256:%s HTTP/1.1\r\n"
	    "Host: %s\r\nUser-Agent: benchtool\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n",
	    hex, target_host);
	t0 = now_ns();
	fd = connect_target(0);
	if (fd < 0 || write_all(fd, head, strlen(head)) < 0)
		die("upload: connect: %s", strerror(errno));
	for (left = size; left > 0; left -= BLOCK) {
		size_t k = left < BLOCK ? (size_t)left : BLOCK, done = 0, fl;

		fl = (size_t)snprintf(frame, sizeof frame, "%zx\r\n", k);
		while (done < fl + k + 2) {
			int j = 0;

			if (done < fl) {
				iov[j].iov_base = frame + done;
				iov[j++].iov_len = fl - done;
			}
			if (done < fl + k) {
				size_t off = done > fl ? done - fl : 0;

				iov[j].iov_base = b + off;
				iov[j++].iov_len = k - off;
			}
			{
				size_t off = done > fl + k ? done - fl - k : 0;

				iov[j].iov_base = (char *)"\r\n" + off;
				iov[j++].iov_len = 2 - off;
			}
			n = writev(fd, iov, j);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				die("upload: write after %lld bytes: %s",
				    size - left, strerror(errno));
			done += (size_t)n;
		}
	}
	if (write_all(fd, "0\r\n\r\n", 5) < 0)
		die("upload: write: %s", strerror(errno));
	resp_init(&r, answer_body, &ans);
	while (r.st != R_DONE) {
		n = read(fd, buf, sizeof buf);
		if (n <= 0)
			die("upload: no response");
		if (resp_feed(&r, buf, (size_t)n) < 0)
			die("upload: malformed response");
	}
	s = (now_ns() - t0) / 1e9;
	close(fd);
	ans.text[ans.len] = '\0';
	printf("status=%d bytes=%lld seconds=%.3f mib_per_s=%.1f", r.status,
	    size, s, size / 1048576.0 / s);
	got = strstr(ans.text, "\"bytes\":");
	if (got != NULL) {
		received = strtoll(got + 8, NULL, 10);
		printf(" received=%lld", received);
	}
	printf("\n");
	return r.status != 201 || (got != NULL && received != size);
}

/* --- sink ------------------------------------------------------------- */

#define SINK_BUF (256 * 1024)

static void
sink_count(struct resp *r, const char *p, size_t n)
{
	(void)p;
	*(long long *)r->arg += (long long)n;
}

/* Reads one request head into buf (have bytes there already); returns
 * the head's length, 0 on EOF or error. */
static size_t
sink_head(int fd, char *buf, size_t *have)
{
	char *end;
	ssize_t n;

	for (;;) {
		buf[*have] = '\0';
		end = strstr(buf, "\r\n\r\n");
		if (end != NULL)
			return (size_t)(end + 4 - buf);
		if (*have >= 65536)
			return 0;
		n = read(fd, buf + *have, SINK_BUF - 1 - *have);
		if (n <= 0)
			return 0;
		*have += (size_t)n;
	}
}

/* Reads the body that follows a head through the chunked or
 * Content-Length states of the response parser, counting its bytes;
 * leaves any bytes of the next request at the start of buf. */
static int
sink_body(int fd, char *buf, size_t hlen, size_t *have, long long *count)
{
	struct resp r;
	char *h;
	long long cl = 0;
	ssize_t n;
	size_t used;

	resp_init(&r, sink_count, count);
	h = strcasestr(buf, "\r\ncontent-length:");
	if (h != NULL && h < buf + hlen)
		cl = strtoll(h + 17, NULL, 10);
	h = strcasestr(buf, "\r\ntransfer-encoding:");
	if (h != NULL && h < buf + hlen)
		r.st = R_CSIZE;
	else if (cl > 0) {
		r.st = R_CL;
		r.left = cl;
	} else
		r.st = R_DONE;
	used = hlen;
	for (;;) {
		/* resp_feed stops at R_DONE: what it left is the next
		 * request's (no pipelining here, so normally nothing). */
		if (resp_feed(&r, buf + used, *have - used) < 0)
			return -1;
		if (r.st == R_DONE) {
			*have = 0;
			return 0;
		}
		n = read(fd, buf, SINK_BUF - 1);
		if (n <= 0)
			return -1;
		used = 0;
		*have = (size_t)n;
	}
}

static void *
sink_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char *buf = malloc(SINK_BUF), ans[256], body[64];
	size_t have = 0, hlen;
	long long count;
	int len, blen, upload;

	if (buf == NULL)
		goto out;
	while ((hlen = sink_head(fd, buf, &have)) > 0) {
		upload = strncmp(buf, "GET ", 4) != 0 &&
		    strncmp(buf, "HEAD ", 5) != 0;
		count = 0;
		if (sink_body(fd, buf, hlen, &have, &count) < 0)
			break;
		if (upload)
			blen = snprintf(
			    body, sizeof body, "{\"bytes\":%lld}", count);
		else
			blen = snprintf(
			    body, sizeof body, "{\"version\":\"0.0.0\"}");
		len = snprintf(ans, sizeof ans,
		    "HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
		    "Content-Length: %d\r\n\r\n%s",
		    upload ? "201 Created" : "200 OK", blen, body);
		if (write_all(fd, ans, (size_t)len) < 0)
			break;
	}
out:
	free(buf);
	close(fd);
	return NULL;
}

static int
cmd_sink(int argc, char **argv)
{
	int opt, lfd, fd, one = 1, port = 0;
	pthread_t th;
	pthread_attr_t at;

	while ((opt = getopt(argc, argv, "p:")) != -1)
		switch (opt) {
		case 'p':
			port = atoi(optarg);
			break;
		default:
			die("sink -p PORT");
		}
	lfd = listen_print(port);
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&at, 256 * 1024);
	for (;;) {
		fd = accept(lfd, NULL, NULL);
		if (fd < 0)
			continue;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		if (pthread_create(&th, &at, sink_conn, (void *)(intptr_t)fd))
			close(fd);
	}
	return 0;
}

/* --- fleet: conversations through two replicas -------------------------- */

#define FLEET_TURNS_MAX 20

struct fconv {
	int id, turn, via; /* turn 1..turns; via: the replica */
	struct exch x; /* its state: then 2 idle (between turns) */
	char req[8192];
	size_t len;
	int64_t t0;
};

static struct {
	struct sockaddr_in to[2];
	char host[2][64];
	int nto, turns, lines;
	const char *model, *prefix;
	long n_via[2];
	int64_t *lat;
	size_t nlat, latcap;
	long ok, failed, reported;
	int flight, maxflight;
} fl;

static volatile sig_atomic_t fleet_stop;

static void
fleet_on_signal(int sig)
{
	(void)sig;
	fleet_stop = 1;
}

/* Turn T of conversation C: its opening (a system prompt and the first
 * user message, which name the conversation), then the turns before it,
 * then this turn's question, as a chat client resends them. */
static void
fleet_request(struct fconv *c)
{
	char body[6144];
	size_t n;
	int k;

	n = (size_t)snprintf(body, sizeof body,
	    "{\"model\":\"%s\",\"options\":{\"num_predict\":%d},"
	    "\"messages\":[{\"role\":\"system\",\"content\":\"You are the "
	    "assistant of conversation %s%d.\"},{\"role\":\"user\","
	    "\"content\":\"Conversation %s%d opens: why is the sky blue?\"}",
	    fl.model, fl.lines - 1, fl.prefix, c->id, fl.prefix, c->id);
	for (k = 2; k <= c->turn && n < sizeof body; k++)
		n += (size_t)snprintf(body + n, sizeof body - n,
		    ",{\"role\":\"assistant\",\"content\":\"Answer %d.\"},"
		    "{\"role\":\"user\",\"content\":\"Follow-up %d: and "
		    "at sunset?\"}",
		    k - 1, k);
	if (n < sizeof body)
		n += (size_t)snprintf(body + n, sizeof body - n, "]}");
	if (n >= sizeof body)
		die("fleet: request body too long");
	n = (size_t)snprintf(c->req, sizeof c->req,
	    "POST /api/chat HTTP/1.1\r\nHost: %s\r\n"
	    "User-Agent: benchtool\r\nContent-Type: application/json\r\n"
	    "X-Fake-Tag: %s%d.%d\r\nContent-Length: %zu\r\n\r\n%s",
	    fl.host[c->via], fl.prefix, c->id, c->turn, strlen(body), body);
	if (n >= sizeof c->req)
		die("fleet: request too long");
	c->len = n;
}

/* Starts conversation c's current turn, through replica (id + turn) % 2
 * (with one replica, that one): the turns alternate between them. */
static int
fleet_start(int ep, struct fconv *c)
{
	struct epoll_event ev;
	int one = 1;

	c->via = fl.nto > 1 ? (c->id + c->turn) % 2 : 0;
	fleet_request(c);
	exch_begin(&c->x, c->req, c->len);
	c->t0 = now_ns();
	c->x.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (c->x.fd < 0)
		die("fleet: socket: %s (ulimit -n?)", strerror(errno));
	setsockopt(c->x.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(c->x.fd, (struct sockaddr *)&fl.to[c->via],
	        sizeof fl.to[c->via]) < 0 &&
	    errno != EINPROGRESS) {
		close(c->x.fd);
		c->x.fd = -1;
		return -1;
	}
	ev.events = EPOLLOUT | EPOLLIN;
	ev.data.ptr = c;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, c->x.fd, &ev) < 0)
		die("epoll_ctl: %s", strerror(errno));
	fl.n_via[c->via]++;
	if (++fl.flight > fl.maxflight)
		fl.maxflight = fl.flight;
	return 0;
}

/* The turn's end: counted, its connection closed. */
static void
fleet_end(int ep, struct fconv *c, int ok)
{
	int64_t t = now_ns() - c->t0;

	if (ok) {
		fl.ok++;
		if (fl.nlat == fl.latcap) {
			fl.latcap = fl.latcap ? 2 * fl.latcap : 4096;
			fl.lat = realloc(fl.lat, fl.latcap * sizeof *fl.lat);
			if (fl.lat == NULL)
				die("out of memory");
		}
		fl.lat[fl.nlat++] = t;
	} else {
		fl.failed++;
		if (fl.reported++ < 20)
			fprintf(stderr,
			    "benchtool: fleet: %s%d.%d via %d: status %d%s\n",
			    fl.prefix, c->id, c->turn, c->via, c->x.r.status,
			    c->x.r.st == R_DONE ? "" : ", cut short");
	}
	if (c->x.fd >= 0)
		fl.flight--;
	exch_close(ep, &c->x);
	c->x.state = 2;
}

/* An event on c's connection; returns 1 once its turn has ended. */
static int
fleet_event(int ep, struct fconv *c, uint32_t events)
{
	int rc = exch_event(ep, &c->x, c, events);

	if (rc == 0)
		return 0;
	fleet_end(ep, c, exch_ok(&c->x, rc));
	return 1;
}

static int
cmd_fleet(int argc, char **argv)
{
	int opt, nconv = 200, steady_s = 0, wait_s = 120, ep, k, i;
	int next_id, active = 0, running_said = 0;
	long unfinished = 0;
	struct fconv *cv;
	struct epoll_event evs[256];
	struct sigaction sa;
	int64_t t0, now, deadline, stop_at = 0;

	fl.turns = 5;
	fl.lines = 8;
	fl.model = "m";
	fl.prefix = "c";
	while ((opt = getopt(argc, argv, "c:n:t:l:m:p:D:w:")) != -1)
		switch (opt) {
		case 'c':
			if (fl.nto == 2)
				die("fleet: at most two -c");
			parse_target(optarg);
			fl.to[fl.nto] = target;
			snprintf(fl.host[fl.nto], sizeof fl.host[0], "%s",
			    target_host);
			fl.nto++;
			break;
		case 'n':
			nconv = atoi(optarg);
			break;
		case 't':
			fl.turns = atoi(optarg);
			break;
		case 'l':
			fl.lines = atoi(optarg);
			break;
		case 'm':
			fl.model = optarg;
			break;
		case 'p':
			fl.prefix = optarg;
			break;
		case 'D':
			steady_s = atoi(optarg);
			break;
		case 'w':
			wait_s = atoi(optarg);
			break;
		default:
			die("fleet -c HOST:PORT [-c HOST:PORT] [-n CONVS] "
			    "[-t TURNS] [-l LINES] [-m MODEL] [-p PREFIX] "
			    "[-D SECONDS] [-w SECONDS]");
		}
	if (fl.nto == 0 || nconv < 1 || fl.turns < 1 ||
	    fl.turns > FLEET_TURNS_MAX || fl.lines < 1)
		die("fleet: needs -c, -n at least 1, -t 1 to %d, -l at "
		    "least 1",
		    FLEET_TURNS_MAX);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = fleet_on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if ((cv = calloc((size_t)nconv, sizeof *cv)) == NULL ||
	    (ep = epoll_create1(0)) < 0)
		die("out of memory");

	/* Every conversation at once; each turn once the one before has
	 * ended.  Steady (-D): a new conversation as one ends, until
	 * SECONDS have passed or a signal comes, then the turns in flight
	 * finish.  Every wait is bounded by -w. */
	t0 = now_ns();
	deadline = t0 + (int64_t)wait_s * 1000000000;
	if (steady_s > 0)
		stop_at = t0 + (int64_t)steady_s * 1000000000;
	for (next_id = 0; next_id < nconv; next_id++) {
		cv[next_id].id = next_id;
		cv[next_id].turn = 1;
		active++;
		if (fleet_start(ep, &cv[next_id]) < 0) {
			fleet_end(ep, &cv[next_id], 0);
			active--;
		}
	}
	while (active > 0) {
		now = now_ns();
		if (now >= deadline)
			break;
		if (stop_at != 0 && now >= stop_at)
			fleet_stop = 1;
		k = epoll_wait(ep, evs, 256, 100);
		if (k < 0 && errno != EINTR)
			die("epoll_wait: %s", strerror(errno));
		for (i = 0; i < k; i++) {
			struct fconv *c = evs[i].data.ptr;

			if (!fleet_event(ep, c, evs[i].events))
				continue;
			if (!running_said && fl.ok > 0 && steady_s > 0) {
				printf("running\n");
				fflush(stdout);
				running_said = 1;
			}
			/* The next turn, a new conversation, or none. */
			for (;;) {
				if (c->turn < fl.turns && !fleet_stop)
					c->turn++;
				else if (steady_s > 0 && !fleet_stop) {
					c->id = next_id++;
					c->turn = 1;
				} else {
					active--;
					break;
				}
				if (fleet_start(ep, c) == 0)
					break;
				fleet_end(ep, c, 0);
			}
		}
	}
	for (i = 0; i < nconv; i++)
		if (cv[i].x.fd >= 0 && cv[i].x.state != 2) {
			unfinished++;
			fleet_end(ep, &cv[i], 0);
		}
	qsort(fl.lat, fl.nlat, sizeof *fl.lat, cmp_i64);
	printf("requests=%ld ok=%ld failed=%ld unfinished=%ld "
	       "conversations=%d turns=%d via_a=%ld via_b=%ld "
	       "max_in_flight=%d seconds=%.3f turn_p50_ms=%.1f "
	       "turn_p99_ms=%.1f turn_max_ms=%.1f\n",
	    fl.ok + fl.failed, fl.ok, fl.failed, unfinished, next_id, fl.turns,
	    fl.n_via[0], fl.n_via[1], fl.maxflight, (now_ns() - t0) / 1e9,
	    pct_ms(fl.lat, fl.nlat, 50), pct_ms(fl.lat, fl.nlat, 99),
	    fl.nlat ? fl.lat[fl.nlat - 1] / 1e6 : 0.0);
	return fl.failed != 0;
}

/* --- dns: a DNS stand-in that may answer past 512 bytes ----------------- */

#define DNS_ADDRS_MAX 64
#define DNS_PACKET_MAX 4096

/*
 * The records of NAME in TABLE of type QTYPE (1: A, 28: AAAA), into
 * out (4 or 16 bytes each); -1 when the name is not there (NXDOMAIN).
 */
static int
dns_lookup(
    const char *table, const char *qname, int qtype, unsigned char out[][16])
{
	char line[512], name[256], what[128];
	unsigned char a[16];
	size_t ql = strlen(qname), nl;
	int found = 0, n = 0;
	FILE *f = fopen(table, "r");

	if (f == NULL)
		return -1;
	if (ql > 0 && qname[ql - 1] == '.')
		ql--;
	while (fgets(line, sizeof line, f) != NULL) {
		line[strcspn(line, "#\n")] = '\0';
		if (sscanf(line, "%255s %127s", name, what) != 2)
			continue;
		nl = strlen(name);
		if (nl > 0 && name[nl - 1] == '.')
			nl--;
		if (nl != ql || strncasecmp(name, qname, ql) != 0)
			continue;
		found = 1;
		if (n == DNS_ADDRS_MAX)
			continue;
		if (qtype == 1 && inet_pton(AF_INET, what, a) == 1)
			memcpy(out[n++], a, 4);
		else if (qtype == 28 && inet_pton(AF_INET6, what, a) == 1)
			memcpy(out[n++], a, 16);
	}
	fclose(f);
	return found ? n : -1;
}

/* The reply to query q (len bytes) in r; its length, 0: none. */
static size_t
dns_reply(const char *table, int trunc, const unsigned char *q, size_t len,
    unsigned char *r, char *name, int *qtype, int *nans, int *tc)
{
	unsigned char addrs[DNS_ADDRS_MAX][16];
	size_t off = 12, out = 0, l, alen, cap;
	int rcode = 0, n = 0, i;

	*nans = *tc = 0;
	*qtype = 0;
	strcpy(name, "?");
	if (len < 12 || (q[2] & 0x80) != 0)
		return 0;
	if (((q[4] << 8) | q[5]) != 1 || ((q[2] >> 3) & 0x0f) != 0)
		rcode = 4; /* NOTIMP: one standard question only */
	while (rcode == 0) {
		if (off >= len) {
			rcode = 1;
			break;
		}
		l = q[off++];
		if (l == 0)
			break;
		if ((l & 0xc0) != 0 || off + l > len || out + l + 2 > 254) {
			rcode = 1;
			break;
		}
		if (out > 0)
			name[out++] = '.';
		memcpy(name + out, q + off, l);
		out += l;
		off += l;
	}
	if (rcode == 0 && off + 4 > len)
		rcode = 1;
	if (rcode == 0) {
		name[out] = '\0';
		*qtype = (q[off] << 8) | q[off + 1];
		off += 4;
		n = dns_lookup(table, name, *qtype, addrs);
		if (n < 0) {
			rcode = 3; /* NXDOMAIN */
			n = 0;
		}
	} else
		off = 12;
	memcpy(r, q, off); /* id, and the question as asked */
	r[2] = (unsigned char)(0x84 | (q[2] & 0x01)); /* QR AA, RD as asked */
	r[3] = (unsigned char)(0x80 | rcode); /* RA */
	memset(r + 4, 0, 8);
	r[5] = off > 12 ? 1 : 0;
	alen = *qtype == 28 ? 16 : 4;
	/* A classic server stops at 512 bytes and sets TC; without -t the
	 * whole answer goes, as to a client with a large EDNS buffer. */
	cap = trunc ? 512 : DNS_PACKET_MAX;
	for (i = 0; i < n; i++) {
		if (off + 12 + alen > cap) {
			*tc = 1;
			r[2] |= 0x02;
			break;
		}
		r[off] = 0xc0; /* the name: a pointer to the question's */
		r[off + 1] = 0x0c;
		r[off + 2] = 0;
		r[off + 3] = (unsigned char)*qtype;
		r[off + 4] = 0;
		r[off + 5] = 1; /* IN */
		memset(r + off + 6, 0, 4); /* TTL 0 */
		r[off + 10] = 0;
		r[off + 11] = (unsigned char)alen;
		memcpy(r + off + 12, addrs[i], alen);
		off += 12 + alen;
		(*nans)++;
	}
	r[6] = (unsigned char)(*nans >> 8);
	r[7] = (unsigned char)*nans;
	return off;
}

static int
cmd_dns(int argc, char **argv)
{
	const char *table = NULL;
	unsigned char q[DNS_PACKET_MAX], r[DNS_PACKET_MAX];
	char name[256];
	struct sockaddr_in sa;
	struct sockaddr_storage from;
	socklen_t sl = sizeof sa, fromlen;
	int opt, fd, port = 0, trunc = 0, qtype, nans, tc;
	ssize_t n;
	size_t len;

	while ((opt = getopt(argc, argv, "f:p:t")) != -1)
		switch (opt) {
		case 'f':
			table = optarg;
			break;
		case 'p':
			port = atoi(optarg);
			break;
		case 't':
			trunc = 1;
			break;
		default:
			die("dns -f TABLE [-p PORT] [-t]");
		}
	if (table == NULL)
		die("dns needs -f TABLE");
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
		die("dns: bind: %s", strerror(errno));
	printf("%d\n", ntohs(sa.sin_port));
	fflush(stdout);
	setvbuf(stderr, NULL, _IOLBF, 0);
	for (;;) {
		fromlen = sizeof from;
		n = recvfrom(
		    fd, q, sizeof q, 0, (struct sockaddr *)&from, &fromlen);
		if (n < 0)
			continue;
		len = dns_reply(
		    table, trunc, q, (size_t)n, r, name, &qtype, &nans, &tc);
		if (len == 0)
			continue;
		fprintf(stderr,
		    "benchtool dns: %s type %d%s: %d records, %zu bytes%s\n",
		    name, qtype,
		    n >= 12 && ((q[10] << 8) | q[11]) > 0 ? " (EDNS)" : "",
		    nans, len, tc ? ", truncated (TC)" : "");
		sendto(fd, r, len, 0, (struct sockaddr *)&from, fromlen);
	}
	return 0;
}

int
main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc < 2)
		die("usage: benchtool "
		    "tsource|stream|idle|streams|ttfb|queue|digest|upload|"
		    "sink|fleet|dns "
		    "...");
	argv++;
	argc--;
	if (strcmp(argv[0], "tsource") == 0)
		return cmd_tsource(argc, argv);
	if (strcmp(argv[0], "stream") == 0)
		return cmd_stream(argc, argv);
	if (strcmp(argv[0], "idle") == 0)
		return cmd_idle(argc, argv);
	if (strcmp(argv[0], "streams") == 0)
		return cmd_streams(argc, argv);
	if (strcmp(argv[0], "ttfb") == 0)
		return cmd_ttfb(argc, argv);
	if (strcmp(argv[0], "queue") == 0)
		return cmd_queue(argc, argv);
	if (strcmp(argv[0], "digest") == 0)
		return cmd_digest(argc, argv);
	if (strcmp(argv[0], "upload") == 0)
		return cmd_upload(argc, argv);
	if (strcmp(argv[0], "sink") == 0)
		return cmd_sink(argc, argv);
	if (strcmp(argv[0], "fleet") == 0)
		return cmd_fleet(argc, argv);
	if (strcmp(argv[0], "dns") == 0)
		return cmd_dns(argc, argv);
	die("unknown command %s", argv[0]);
	return 2;
}
