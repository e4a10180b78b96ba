/*
 * Listen addresses (HOST:PORT, [V6]:PORT, :PORT, unix:/path) and upstream
 * URLs, which take what OLLAMA_HOST takes so users can paste the value
 * they already use.
 */
#include "config.h"

#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ollama-pool.h"

static int PRINTFLIKE(3, 4)
    addr_error(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

static int
addr_parse_port(const char *s, size_t len, int *port)
{
	long v = 0;
	size_t i;

	if (len == 0 || len > 5)
		return -1;
	for (i = 0; i < len; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	if (v > 65535)
		return -1;
	*port = (int)v;
	return 0;
}

/* Splits "host:port", "[v6]:port" or ":port"; host may come back empty. */
static int
addr_split(const char *s, char *host, size_t hostlen, const char **port,
    size_t *portlen)
{
	const char *colon, *end;
	size_t n;

	if (s[0] == '[') {
		end = strchr(s, ']');
		if (end == NULL || end[1] != ':')
			return -1;
		n = end - s - 1;
		colon = end + 1;
		s++;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL || memchr(s, ':', colon - s) != NULL)
			return -1;
		n = colon - s;
	}
	if (n >= hostlen)
		return -1;
	memcpy(host, s, n);
	host[n] = '\0';
	*port = colon + 1;
	*portlen = strlen(colon + 1);
	return 0;
}

/* A numeric host (no DNS: AI_NUMERICHOST) as a socket address; -1 when
 * it is not one. */
static int
addr_numeric(
    const char *host, int port, struct sockaddr_storage *ss, socklen_t *len)
{
	struct addrinfo hints, *res;
	char portstr[8];

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	snprintf(portstr, sizeof portstr, "%d", port);
	if (getaddrinfo(host, portstr, &hints, &res) != 0)
		return -1;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* A host name as DNS takes it: letters, digits, '-', '_' and dots between
 * labels.  Digits and dots alone are a broken IPv4 address, not a name. */
static int
addr_name_ok(const char *name)
{
	size_t i, len = strlen(name);
	int letter = 0;

	if (len == 0 || len > 253 || name[0] == '.' || name[0] == '-' ||
	    strstr(name, "..") != NULL)
		return 0;
	for (i = 0; i < len; i++) {
		if (isalpha((unsigned char)name[i]) || name[i] == '-' ||
		    name[i] == '_')
			letter = 1;
		else if (!isdigit((unsigned char)name[i]) && name[i] != '.')
			return 0;
	}
	return letter;
}

/*
 * HOST:PORT, [V6]:PORT, :PORT or unix:/path.  A numeric host is parsed at
 * once; a name is kept in la->name and la->ss stays AF_UNSPEC until
 * resolve.c fills it in (addr_listen_resolved): parsing never asks DNS.
 */
int
addr_parse_listen(
    const char *s, struct listen_addr *la, char *err, size_t errlen)
{
	struct sockaddr_un *sun;
	char host[256];
	const char *portstr;
	size_t portlen;
	int port;

	memset(la, 0, sizeof *la);
	if (strlen(s) >= sizeof la->text)
		return addr_error(
		    err, errlen, "listen address too long: %s", s);
	strcpy(la->text, s);

	if (strncmp(s, "unix:", 5) == 0) {
		sun = (struct sockaddr_un *)&la->ss;
		if (s[5] != '/')
			return addr_error(err, errlen,
			    "unix listen path must be absolute: %s", s);
		if (strlen(s + 5) >= sizeof sun->sun_path)
			return addr_error(
			    err, errlen, "unix listen path too long: %s", s);
		la->kind = LISTEN_UNIX;
		sun->sun_family = AF_UNIX;
		strcpy(sun->sun_path, s + 5);
		la->sslen = sizeof *sun;
		return 0;
	}

	if (addr_split(s, host, sizeof host, &portstr, &portlen) != 0)
		return addr_error(err, errlen,
		    "bad listen address '%s' (want HOST:PORT, [V6]:PORT, "
		    ":PORT or unix:/path)",
		    s);
	if (addr_parse_port(portstr, portlen, &port) != 0)
		return addr_error(
		    err, errlen, "bad port in listen address '%s'", s);
	/* As in OLLAMA_HOST, a missing host means loopback, never all
	 * interfaces: exposing the proxy must be a deliberate choice. */
	if (host[0] == '\0')
		strcpy(host, "127.0.0.1");

	la->kind = LISTEN_TCP;
	la->port = port;
	if (addr_numeric(host, port, &la->ss, &la->sslen) == 0)
		return 0;
	if (s[0] == '[' || !addr_name_ok(host))
		return addr_error(err, errlen,
		    "bad host in listen address '%s' (neither an IP address "
		    "nor a host name)",
		    s);
	strcpy(la->name, host);
	return 0;
}

/* A listen name's address, as resolve.c found it (port included). */
void
addr_listen_resolved(
    struct listen_addr *la, const struct sockaddr *sa, socklen_t len)
{
	if (len > sizeof la->ss)
		return;
	memcpy(&la->ss, sa, len);
	la->sslen = len;
}

/* One more address of an upstream host given as a name. */
void
addr_upstream_resolved(
    struct upstream_url *u, const struct sockaddr *sa, socklen_t len)
{
	int i;

	if (u->naddrs == ADDR_MAX_RESOLVED || len > sizeof u->addrs[0])
		return;
	for (i = 0; i < u->naddrs; i++) /* an answer may repeat itself */
		if (memcmp(&u->addrs[i], sa, len) == 0)
			return;
	memcpy(&u->addrs[u->naddrs], sa, len);
	memset((char *)&u->addrs[u->naddrs] + len, 0, sizeof u->addrs[0] - len);
	u->naddrs++;
}

static int
addr_sockaddr_is_loopback(const struct sockaddr *sa)
{
	const struct sockaddr_in *sin;
	const struct sockaddr_in6 *sin6;

	switch (sa->sa_family) {
	case AF_UNIX:
		return 1;
	case AF_INET:
		sin = (const struct sockaddr_in *)sa;
		return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	case AF_INET6:
		sin6 = (const struct sockaddr_in6 *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
			return sin6->sin6_addr.s6_addr[12] == 127;
		return IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr);
	}
	return 0;
}

int
addr_is_loopback(const struct listen_addr *la)
{
	return addr_sockaddr_is_loopback((const struct sockaddr *)&la->ss);
}

static int
addr_sockaddr_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	return -1;
}

static int
addr_sockaddr_is_any(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ((const struct sockaddr_in *)sa)->sin_addr.s_addr ==
		    htonl(INADDR_ANY);
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_UNSPECIFIED(
		    &((const struct sockaddr_in6 *)sa)->sin6_addr);
	return 0;
}

static int
addr_same_host(const struct sockaddr *a, const struct sockaddr *b)
{
	if (a->sa_family != b->sa_family)
		return 0;
	if (a->sa_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		    ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	if (a->sa_family == AF_INET6)
		return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
		           &((const struct sockaddr_in6 *)b)->sin6_addr,
		           sizeof(struct in6_addr)) == 0;
	return 0;
}

/*
 * Would forwarding to this upstream send requests back to ourselves?  A
 * loop would eat every descriptor, so it is refused.  The upstream's
 * addresses are its numeric host, or what resolve.c found for its name
 * (none when the name did not resolve: nothing to compare).  Port 0
 * listeners are skipped: the kernel picks a port no upstream can name.
 */
int
addr_upstream_is_listen(
    const struct upstream_url *u, const struct listen_addr *listen, int nlisten)
{
	const struct sockaddr *la, *ua;
	int i, j;

	if (u->port == 0)
		return 0;
	for (j = 0; j < u->naddrs; j++) {
		ua = (const struct sockaddr *)&u->addrs[j];
		for (i = 0; i < nlisten; i++) {
			if (listen[i].kind != LISTEN_TCP)
				continue;
			la = (const struct sockaddr *)&listen[i].ss;
			if (addr_sockaddr_port(la) != u->port)
				continue;
			if (addr_same_host(la, ua) ||
			    (addr_sockaddr_is_any(la) &&
			        (la->sa_family == ua->sa_family ||
			            addr_sockaddr_is_loopback(ua))))
				return 1;
		}
	}
	return 0;
}

/* The numeric host alone, no port, no brackets: "127.0.0.2", "::1". */
void
addr_host(const struct sockaddr *sa, char *out, size_t outlen)
{
	const void *a = sa->sa_family == AF_INET6
	    ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
	    : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;

	if ((sa->sa_family != AF_INET && sa->sa_family != AF_INET6) ||
	    inet_ntop(sa->sa_family, a, out, (socklen_t)outlen) == NULL)
		snprintf(out, outlen, "?");
}

void
addr_format(const struct sockaddr *sa, socklen_t len, char *out, size_t outlen)
{
	char host[INET6_ADDRSTRLEN];

	switch (sa->sa_family) {
	case AF_INET:
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr,
		    host, sizeof host);
		snprintf(out, outlen, "%s:%d", host, addr_sockaddr_port(sa));
		break;
	case AF_INET6:
		inet_ntop(AF_INET6,
		    &((const struct sockaddr_in6 *)sa)->sin6_addr, host,
		    sizeof host);
		snprintf(out, outlen, "[%s]:%d", host, addr_sockaddr_port(sa));
		break;
	case AF_UNIX:
		if (len > offsetof(struct sockaddr_un, sun_path) &&
		    ((const struct sockaddr_un *)sa)->sun_path[0] != '\0')
			snprintf(out, outlen, "unix:%s",
			    ((const struct sockaddr_un *)sa)->sun_path);
		else
			snprintf(out, outlen, "unix");
		break;
	default:
		snprintf(out, outlen, "?");
	}
}

/*
 * OLLAMA_HOST semantics: whitespace and quotes trimmed; scheme optional
 * (http); no scheme means port 11434, http:// 80 and https:// 443 unless a
 * port is given; a missing host is 127.0.0.1; IPv6 in brackets; 0.0.0.0
 * and :: mean loopback for a client.  Unlike the ollama CLI, a bad port is
 * an error rather than a silent default, and so is a path (a lone "/" is
 * fine).
 */
int
addr_parse_upstream(
    const char *in, struct upstream_url *u, char *err, size_t errlen)
{
	char buf[1024], host[256];
	const char *s, *hp, *slash, *portstr;
	size_t len, hplen, portlen;
	socklen_t len_sa;
	int default_port = OLLAMA_DEFAULT_PORT, have_port = 0, port = 0;

	memset(u, 0, sizeof *u);
	while (isspace((unsigned char)*in) || *in == '"' || *in == '\'')
		in++;
	len = strlen(in);
	while (len > 0 &&
	    (isspace((unsigned char)in[len - 1]) || in[len - 1] == '"' ||
	        in[len - 1] == '\''))
		len--;
	if (len >= sizeof buf)
		return addr_error(err, errlen, "upstream URL too long");
	memcpy(buf, in, len);
	buf[len] = '\0';
	s = buf;

	if (strstr(s, "://") != NULL) {
		if (strncasecmp(s, "http://", 7) == 0) {
			default_port = 80;
			s += 7;
		} else if (strncasecmp(s, "https://", 8) == 0) {
			default_port = 443;
			u->tls = 1;
			s += 8;
		} else
			return addr_error(err, errlen,
			    "upstream '%s': scheme must be http or https", buf);
	}

	hp = s;
	slash = strchr(s, '/');
	hplen = slash ? (size_t)(slash - s) : strlen(s);
	if (memchr(hp, '@', hplen) != NULL)
		return addr_error(err, errlen,
		    "upstream '%s': user info is not supported", buf);
	{
		char hostport[300];

		if (hplen >= sizeof hostport)
			return addr_error(
			    err, errlen, "upstream '%s': host too long", buf);
		memcpy(hostport, hp, hplen);
		hostport[hplen] = '\0';
		if (hostport[0] == '[' ||
		    (strchr(hostport, ':') != NULL &&
		        strchr(hostport, ':') == strrchr(hostport, ':'))) {
			if (addr_split(hostport, host, sizeof host, &portstr,
			        &portlen) != 0) {
				/* "[::1]" alone: a bracketed host, no port. */
				len = strlen(hostport);
				if (hostport[0] != '[' ||
				    hostport[len - 1] != ']' ||
				    len - 2 >= sizeof host)
					return addr_error(err, errlen,
					    "upstream '%s': bad host", buf);
				memcpy(host, hostport + 1, len - 2);
				host[len - 2] = '\0';
			} else {
				if (addr_parse_port(portstr, portlen, &port) !=
				        0 ||
				    port == 0)
					return addr_error(err, errlen,
					    "upstream '%s': bad port", buf);
				have_port = 1;
			}
		} else {
			/* Bare IPv6 without brackets, or a plain host. */
			if (strlen(hostport) >= sizeof host)
				return addr_error(err, errlen,
				    "upstream '%s': host too long", buf);
			strcpy(host, hostport);
		}
	}
	if (!have_port)
		port = default_port;
	if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0)
		strcpy(host, "127.0.0.1");
	else if (strcmp(host, "::") == 0)
		strcpy(host, "::1");
	for (len = 0; host[len] != '\0'; len++) {
		unsigned char c = host[len];
		if (!isalnum(c) && c != '.' && c != '-' && c != ':' &&
		    c != '_' && c != '%')
			return addr_error(err, errlen,
			    "upstream '%s': bad character in host", buf);
	}

	/* A path would be a prefix put before every request's path: a
	 * client's "/../x" or "/api/%2e%2e/x" would then climb out of it
	 * wherever something in front of Ollama normalises paths, and a URL
	 * ending in /api or /v1 would send every request to /api/api/... */
	if (slash != NULL && strcmp(slash, "/") != 0)
		return addr_error(err, errlen,
		    "upstream '%s': a path (%s) is not supported: Ollama "
		    "serves its API from /, so give scheme://host:port only",
		    buf, slash);
	strcpy(u->host, host);
	u->port = port;
	if (addr_numeric(host, port, &u->addrs[0], &len_sa) == 0)
		u->naddrs = 1;
	else
		u->host_is_name = 1;
	if (strchr(host, ':') != NULL)
		snprintf(
		    u->hostport, sizeof u->hostport, "[%s]:%d", host, port);
	else
		snprintf(u->hostport, sizeof u->hostport, "%s:%d", host, port);
	snprintf(u->base, sizeof u->base, "%s://%s", u->tls ? "https" : "http",
	    u->hostport);
	return 0;
}
