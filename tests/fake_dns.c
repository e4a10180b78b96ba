/*
 * fake-dns: a DNS server stand-in for the tests, on UDP.
 *
 * Usage: fake-dns -f TABLE [-l 127.0.0.1:PORT] [-v]
 * Prints the bound port and a newline on stdout, then never writes there;
 * logs every query on stderr.  TABLE is read anew for every query, so a
 * test changes the answers by rewriting it.  One line per record:
 *
 *   NAME ANSWER [DELAY_MS]
 *
 * ANSWER is an IPv4 address (an A record), an IPv6 address (AAAA), or one
 * of nxdomain, servfail, refused, drop (no answer at all).  A name may
 * have several address lines; the longest DELAY_MS among its lines holds
 * back every answer for it (queries meanwhile are still answered in
 * their turn).  A name in the table without a record of the type asked
 * gets an empty answer (NODATA); a name not in it, NXDOMAIN.  Names
 * match without regard to case (resolvers randomise it) or a final dot.
 * '#' starts a comment.
 *
 * Queries are parsed defensively: anything short, truncated, compressed
 * in the question, with several questions or not a standard query gets
 * FORMERR or NOTIMP, or is dropped when not even the header is there.
 */
#define _GNU_SOURCE

#include <sys/socket.h>
#include <sys/types.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define DNS_MAX_PACKET 512
#define DNS_MAX_ADDRS 16
#define DNS_MAX_PENDING 256

#define RCODE_NOERROR 0
#define RCODE_FORMERR 1
#define RCODE_SERVFAIL 2
#define RCODE_NXDOMAIN 3
#define RCODE_NOTIMP 4
#define RCODE_REFUSED 5

#define TYPE_A 1
#define TYPE_AAAA 28

struct dns_answer {
	int found; /* the name is in the table */
	int rcode;
	int drop;
	long delay_ms;
	int n4, n6;
	unsigned char a4[DNS_MAX_ADDRS][4];
	unsigned char a6[DNS_MAX_ADDRS][16];
};

struct dns_pending {
	uint64_t due_ms;
	struct sockaddr_storage to;
	socklen_t tolen;
	size_t len;
	unsigned char buf[DNS_MAX_PACKET];
};

static const char *table_path;
static struct dns_pending pending[DNS_MAX_PENDING];
static int npending;

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int
name_eq(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	if (la > 0 && a[la - 1] == '.')
		la--;
	if (lb > 0 && b[lb - 1] == '.')
		lb--;
	return la == lb && strncasecmp(a, b, la) == 0;
}

/* One table line for the name: adds to the answer. */
static void
table_apply(struct dns_answer *ans, const char *what, long delay)
{
	if (delay > ans->delay_ms)
		ans->delay_ms = delay;
	if (strcasecmp(what, "nxdomain") == 0)
		ans->rcode = RCODE_NXDOMAIN;
	else if (strcasecmp(what, "servfail") == 0)
		ans->rcode = RCODE_SERVFAIL;
	else if (strcasecmp(what, "refused") == 0)
		ans->rcode = RCODE_REFUSED;
	else if (strcasecmp(what, "drop") == 0)
		ans->drop = 1;
	else if (ans->n4 < DNS_MAX_ADDRS &&
	    inet_pton(AF_INET, what, ans->a4[ans->n4]) == 1)
		ans->n4++;
	else if (ans->n6 < DNS_MAX_ADDRS &&
	    inet_pton(AF_INET6, what, ans->a6[ans->n6]) == 1)
		ans->n6++;
	else
		fprintf(stderr, "fake-dns: %s: bad answer '%s' ignored\n",
		    table_path, what);
}

static void
table_lookup(const char *qname, struct dns_answer *ans)
{
	char line[512], name[256], what[128];
	long delay;
	FILE *f;
	int n;

	memset(ans, 0, sizeof *ans);
	f = fopen(table_path, "r");
	if (f == NULL) {
		fprintf(
		    stderr, "fake-dns: %s: %s\n", table_path, strerror(errno));
		ans->rcode = RCODE_SERVFAIL;
		return;
	}
	while (fgets(line, sizeof line, f) != NULL) {
		line[strcspn(line, "#\n")] = '\0';
		delay = 0;
		n = sscanf(line, "%255s %127s %ld", name, what, &delay);
		if (n < 2 || !name_eq(name, qname))
			continue;
		ans->found = 1;
		table_apply(ans, what, delay);
	}
	fclose(f);
	if (!ans->found)
		ans->rcode = RCODE_NXDOMAIN;
}

/*
 * The question of a query: its name (dotted, for the table) and where it
 * ends.  0, or an RCODE to answer with.
 */
static int
parse_question(const unsigned char *q, size_t len, char *name, size_t *qend,
    int *qtype, int *qclass)
{
	size_t off = 12, out = 0, l;

	if (((q[4] << 8) | q[5]) != 1)
		return RCODE_FORMERR; /* exactly one question */
	for (;;) {
		if (off >= len)
			return RCODE_FORMERR;
		l = q[off++];
		if (l == 0)
			break;
		if ((l & 0xc0) != 0 || off + l > len || out + l + 1 > 254)
			return RCODE_FORMERR; /* no pointers here; bounded */
		if (out > 0)
			name[out++] = '.';
		while (l-- > 0) /* lower case: resolvers randomise it */
			name[out++] = (char)tolower(q[off++]);
	}
	name[out] = '\0';
	if (out == 0 || memchr(name, '\0', out) != NULL || off + 4 > len)
		return RCODE_FORMERR;
	*qtype = (q[off] << 8) | q[off + 1];
	*qclass = (q[off + 2] << 8) | q[off + 3];
	*qend = off + 4;
	return 0;
}

/* Appends an answer record if it fits, counting it in *n. */
static size_t
put_record(unsigned char *r, size_t off, int type, const unsigned char *addr,
    size_t alen, int *n)
{
	static const unsigned char head[] = {0xc0, 0x0c}; /* the question */

	if (off + 12 + alen > DNS_MAX_PACKET)
		return off;
	(*n)++;
	memcpy(r + off, head, 2);
	r[off + 2] = (unsigned char)(type >> 8);
	r[off + 3] = (unsigned char)type;
	r[off + 4] = 0;
	r[off + 5] = 1; /* IN */
	memset(r + off + 6, 0, 4); /* TTL 0: never cached */
	r[off + 10] = 0;
	r[off + 11] = (unsigned char)alen;
	memcpy(r + off + 12, addr, alen);
	return off + 12 + alen;
}

/* The reply to a query, in r; its length.  *ans says what it holds. */
static size_t
build_reply(const unsigned char *q, size_t len, unsigned char *r,
    struct dns_answer *ans, char *name, int *qtype)
{
	size_t qend = 12, off;
	int rcode, qclass = 0, i, n = 0;

	memset(ans, 0, sizeof *ans);
	strcpy(name, "?");
	*qtype = 0;
	if (((q[2] >> 3) & 0x0f) != 0)
		rcode = RCODE_NOTIMP; /* only standard queries */
	else
		rcode = parse_question(q, len, name, &qend, qtype, &qclass);
	if (rcode == 0 && qclass != 1)
		rcode = RCODE_REFUSED;
	if (rcode != 0)
		qend = 12;
	else {
		table_lookup(name, ans);
		rcode = ans->rcode;
	}
	if (qend > DNS_MAX_PACKET)
		return 0;
	memcpy(r, q, qend); /* id, and the question as asked */
	r[2] = 0x84 | (q[2] & 0x01); /* QR, AA, RD as asked */
	r[3] = 0x80 | (unsigned char)rcode; /* RA */
	memset(r + 4, 0, 8);
	r[5] = qend > 12 ? 1 : 0;
	off = qend;
	for (i = 0; rcode == 0 && *qtype == TYPE_A && i < ans->n4; i++)
		off = put_record(r, off, TYPE_A, ans->a4[i], 4, &n);
	for (i = 0; rcode == 0 && *qtype == TYPE_AAAA && i < ans->n6; i++)
		off = put_record(r, off, TYPE_AAAA, ans->a6[i], 16, &n);
	r[7] = (unsigned char)n;
	ans->rcode = rcode;
	return off;
}

static void
send_reply(int fd, const struct dns_pending *p)
{
	if (sendto(fd, p->buf, p->len, 0, (const struct sockaddr *)&p->to,
	        p->tolen) < 0)
		fprintf(stderr, "fake-dns: sendto: %s\n", strerror(errno));
}

static void
handle_query(int fd)
{
	unsigned char q[4096];
	struct dns_pending p;
	struct dns_answer ans;
	char name[256];
	ssize_t n;
	int qtype;

	memset(&p, 0, sizeof p);
	p.tolen = sizeof p.to;
	n = recvfrom(fd, q, sizeof q, 0, (struct sockaddr *)&p.to, &p.tolen);
	if (n < 12 || (q[2] & 0x80) != 0)
		return; /* no header, or a response: never answered */
	p.len = build_reply(q, (size_t)n, p.buf, &ans, name, &qtype);
	fprintf(stderr,
	    "fake-dns: query %s type %d id %u: %s, rcode %d, %d+%d "
	    "addresses, delay %ld ms\n",
	    name, qtype, (unsigned)((q[0] << 8) | q[1]),
	    ans.drop ? "dropped" : "answered", ans.rcode, ans.n4, ans.n6,
	    ans.delay_ms);
	if (ans.drop || p.len == 0)
		return;
	if (ans.delay_ms <= 0) {
		send_reply(fd, &p);
		return;
	}
	if (npending == DNS_MAX_PENDING) {
		fprintf(
		    stderr, "fake-dns: too many delayed answers: dropped\n");
		return;
	}
	p.due_ms = now_ms() + (uint64_t)ans.delay_ms;
	pending[npending++] = p;
}

/* Sends what is due; the ms until the next is, or -1. */
static int
send_due(int fd)
{
	uint64_t now = now_ms(), next = 0;
	int i;

	for (i = 0; i < npending;) {
		if (pending[i].due_ms <= now) {
			send_reply(fd, &pending[i]);
			pending[i] = pending[--npending];
			continue;
		}
		if (next == 0 || pending[i].due_ms < next)
			next = pending[i].due_ms;
		i++;
	}
	return next == 0 ? -1 : (int)(next - now);
}

static int
bind_udp(const char *listen, int *port)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof sin;
	char host[64];
	const char *colon = strrchr(listen, ':');
	int fd;

	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	if (colon == NULL || (size_t)(colon - listen) >= sizeof host)
		return -1;
	memcpy(host, listen, (size_t)(colon - listen));
	host[colon - listen] = '\0';
	if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
		return -1;
	sin.sin_port = htons((uint16_t)atoi(colon + 1));
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) != 0)
		return -1;
	*port = ntohs(sin.sin_port);
	return fd;
}

int
main(int argc, char **argv)
{
	const char *listen = "127.0.0.1:0";
	struct pollfd pfd;
	int ch, fd, port, timeout;

	while ((ch = getopt(argc, argv, "f:l:v")) != -1) {
		switch (ch) {
		case 'f':
			table_path = optarg;
			break;
		case 'l':
			listen = optarg;
			break;
		case 'v':
			break; /* every query is logged anyway */
		default:
			fprintf(stderr,
			    "usage: fake-dns -f TABLE "
			    "[-l 127.0.0.1:PORT] [-v]\n");
			return 2;
		}
	}
	if (table_path == NULL) {
		fprintf(stderr, "fake-dns: -f TABLE is required\n");
		return 2;
	}
	fd = bind_udp(listen, &port);
	if (fd < 0) {
		fprintf(stderr, "fake-dns: cannot bind %s: %s\n", listen,
		    strerror(errno));
		return 1;
	}
	printf("%d\n", port);
	fflush(stdout);
	setvbuf(stderr, NULL, _IOLBF, 0);
	for (;;) {
		timeout = send_due(fd);
		pfd.fd = fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		if (poll(&pfd, 1, timeout) < 0 && errno != EINTR)
			return 1;
		if (pfd.revents & POLLIN)
			handle_query(fd);
	}
}
