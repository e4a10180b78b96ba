/*
 * Members from DNS.  A fleet backend whose url names a host is one member
 * per address the name resolves to (A and AAAA), as a Kubernetes headless
 * Service or Consul answers for its pods.  The name is looked up again
 * every resolve_interval with evdns, off the loop, through the resolver
 * the configuration names:
 *
 * - a new address becomes a member that joins only after its first good
 *   probe (health.c), its tags and loaded models known, and is prewarmed;
 * - an address gone takes no new requests; its requests in flight finish,
 *   then it goes with its connections (backend_retire);
 * - a failed or empty answer keeps the members, with one warning per run
 *   of failures: a DNS hiccup must never empty the fleet.
 *
 * Members keep the name in Host, SNI and certificate checks; curl is told
 * each one's address (backend.c, CURLOPT_RESOLVE).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/util.h>

#include "ollama-pool.h"

struct discovery {
	char name[BACKEND_NAME_MAX]; /* the backend's */
	char host[256];
	char port[8];
	double interval;
	struct event *ev;
	struct evdns_getaddrinfo_request *req;
	int failing; /* warned about this run of failures */
	int stopped; /* freed by the answer of the lookup in flight */
	TAILQ_ENTRY(discovery) entry;
};

static void
discovery_free(struct discovery *d)
{
	event_free(d->ev);
	free(d);
}

static void
discovery_schedule(struct discovery *d)
{
	struct timeval tv = runtime_timeval(d->interval);

	evtimer_add(d->ev, &tv);
}

static int
discovery_has(const struct sockaddr_storage *addrs, int n, const char *host)
{
	char h[64];
	int i;

	for (i = 0; i < n; i++) {
		addr_host((const struct sockaddr *)&addrs[i], h, sizeof h);
		if (strcmp(h, host) == 0)
			return 1;
	}
	return 0;
}

/* The members a fresh answer names: the gone retire, the new join. */
static void
discovery_members(
    struct discovery *d, const struct sockaddr_storage *addrs, int n)
{
	struct backend *b, *next, *last = NULL, *nb;
	char host[64];
	int i;

	for (b = TAILQ_FIRST(&rt.backends); b != NULL; b = next) {
		next = TAILQ_NEXT(b, entry);
		if (b->retiring || strcmp(b->name, d->name) != 0)
			continue;
		last = b;
		if (!discovery_has(addrs, n, b->member)) {
			log_notice("backend %s: member %s is gone from %s: it "
			           "takes no new requests",
			    b->name, b->member, d->host);
			backend_retire(b);
		}
	}
	if (last == NULL)
		return; /* no member left to copy settings from */
	for (i = 0; i < n; i++) {
		addr_host(
		    (const struct sockaddr *)&addrs[i], host, sizeof host);
		TAILQ_FOREACH(b, &rt.backends, entry)
		if (!b->retiring && strcmp(b->name, d->name) == 0 &&
		    strcmp(b->member, host) == 0)
			break;
		if (b != NULL)
			continue;
		nb = backend_new(&last->conf, 1, &last->hooks,
		    (const struct sockaddr *)&addrs[i]);
		nb->joining = 1;
		TAILQ_INSERT_AFTER(&rt.backends, last, nb, entry);
		last = nb;
		log_notice("backend %s: member %s appeared in %s: joining "
		           "after its first probe",
		    nb->name, nb->member, d->host);
		health_start(nb);
	}
}

static void
discovery_answer(int result, struct evutil_addrinfo *res, void *arg)
{
	struct discovery *d = arg;
	struct sockaddr_storage addrs[ADDR_MAX_RESOLVED];
	struct evutil_addrinfo *ai;
	int n = 0, i;

	d->req = NULL;
	if (d->stopped) {
		if (res != NULL)
			evutil_freeaddrinfo(res);
		discovery_free(d);
		return;
	}
	for (ai = res; ai != NULL && n < ADDR_MAX_RESOLVED; ai = ai->ai_next) {
		if (ai->ai_addrlen > sizeof addrs[0])
			continue;
		memset(&addrs[n], 0, sizeof addrs[0]);
		memcpy(&addrs[n], ai->ai_addr, ai->ai_addrlen);
		for (i = 0; i < n; i++)
			if (memcmp(&addrs[i], &addrs[n], sizeof addrs[0]) == 0)
				break;
		if (i == n)
			n++;
	}
	if (res != NULL)
		evutil_freeaddrinfo(res);
	if (result != 0 || n == 0) {
		if (!d->failing)
			log_warn(
			    "backend %s: looking up %s failed (%s); keeping "
			    "its members",
			    d->name, d->host,
			    result != 0 ? evutil_gai_strerror(result)
			                : "no address");
		d->failing = 1;
	} else {
		if (d->failing)
			log_notice(
			    "backend %s: %s answers again", d->name, d->host);
		d->failing = 0;
		discovery_members(d, addrs, n);
	}
	discovery_schedule(d);
}

static void
discovery_lookup(evutil_socket_t fd, short what, void *arg)
{
	struct discovery *d = arg;
	struct evutil_addrinfo hints;

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	/* May answer at once (the hosts file), calling back first. */
	d->req = evdns_getaddrinfo(
	    rt.dns, d->host, d->port, &hints, discovery_answer, d);
}

/* A configuration in place (start or reload, its names just resolved):
 * the lookups start over, each a resolve_interval from now. */
void
discovery_apply(const struct config *cfg)
{
	const struct backend_conf *bc;
	struct discovery *d;
	int i;

	discovery_stop();
	for (i = 0; cfg->fleet && i < cfg->nbackends; i++) {
		bc = &cfg->backends[i];
		if (!bc->url.host_is_name)
			continue;
		d = xcalloc(1, sizeof *d);
		snprintf(d->name, sizeof d->name, "%s", bc->name);
		snprintf(d->host, sizeof d->host, "%s", bc->url.host);
		snprintf(d->port, sizeof d->port, "%d", bc->url.port);
		d->interval = bc->resolve_interval;
		d->ev = evtimer_new(rt.base, discovery_lookup, d);
		TAILQ_INSERT_TAIL(&rt.discoveries, d, entry);
		discovery_schedule(d);
	}
}

void
discovery_stop(void)
{
	struct discovery *d;

	while ((d = TAILQ_FIRST(&rt.discoveries)) != NULL) {
		TAILQ_REMOVE(&rt.discoveries, d, entry);
		evtimer_del(d->ev);
		if (d->req == NULL) {
			discovery_free(d);
			continue;
		}
		/* Its answer comes back cancelled, and frees it. */
		d->stopped = 1;
		evdns_getaddrinfo_cancel(d->req);
	}
}
