/*
 * Names looked up off the event loop with libevent's evdns: listen and
 * admin_listen hosts given as names, and every backend's host (the
 * upstream's, without [backend] sections) for the loop check.  Parsing (addr.c,
 * config.c) never asks DNS; this file fills in what it left.
 *
 * One evdns_base, rt.dns, lives as long as the process.  Each resolution
 * first points it at the settings being resolved: their `resolver`, or
 * /etc/resolv.conf when there is none (a missing file is not fatal: evdns
 * then asks 127.0.0.1), and /etc/hosts first either way, so localhost
 * needs no DNS.  Both files are read anew on every reload; a reload that
 * fails points rt.dns back at the running settings (resolve_configure).
 *
 * Bounds: RESOLVE_ATTEMPT_S per attempt, RESOLVE_ATTEMPTS attempts, and
 * RESOLVE_TIMEOUT_S for the whole resolution, after which what is still
 * unanswered is cancelled.  A listen (or admin_listen) name that does not
 * resolve fails the resolution; a backend name that does not resolve
 * only skips its loop check, since curl looks it up again for every new
 * connection.  At most one resolution runs at a time (rt.resolving).
 */
#include "config.h"

#include <netinet/in.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/util.h>

#include "ollama-pool.h"

#define RESOLVE_TIMEOUT_S 10
#define RESOLVE_STR_(x) #x
#define RESOLVE_STR(x) RESOLVE_STR_(x)
#define RESOLVE_ATTEMPT_S "5"
#define RESOLVE_ATTEMPTS "3" /* 15 s: the overall bound comes first */
#define RESOLVE_RESOLV_CONF "/etc/resolv.conf"
#define RESOLVE_HOSTS "/etc/hosts"

enum resolve_what {
	RESOLVE_LISTEN, /* cfg->listen[index] */
	RESOLVE_ADMIN, /* cfg->admin_listen */
	RESOLVE_BACKEND, /* cfg->backends[index].url */
	RESOLVE_UPSTREAM, /* cfg->upstream, when not backends[0]'s url */
};

struct resolve_lookup {
	struct resolve_job *job;
	struct evdns_getaddrinfo_request *req; /* NULL once answered */
	const char *name;
	enum resolve_what what;
	int index;
	int error; /* EVUTIL_EAI_*; 0 when resolved */
};

struct resolve_job {
	struct config *cfg;
	resolve_cb cb;
	void *arg;
	struct event *done_ev; /* reports from the loop, never from evdns */
	struct event *timer_ev; /* RESOLVE_TIMEOUT_S for the whole */
	int starting; /* lookups are still being started */
	int pending; /* lookups evdns has yet to answer */
	int timed_out;
	uint64_t t_start_us;
	int nlookups;
	struct resolve_lookup lookups[]; /* listen, admin, backends, upstream */
};

void
resolve_init(void)
{
	rt.dns = evdns_base_new(rt.base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	if (rt.dns == NULL)
		fatal("cannot initialise evdns");
}

/* Points rt.dns at cfg's resolver, or the system's.  No lookup may be in
 * flight (only resolutions use rt.dns, one at a time). */
void
resolve_configure(const struct config *cfg)
{
	char *copy, *tok, *save;
	int rc;

	evdns_base_clear_nameservers_and_suspend(rt.dns);
	evdns_base_search_clear(rt.dns);
	evdns_base_clear_host_addresses(rt.dns);
	if (cfg->resolver[0] == '\0') {
		rc = evdns_base_resolv_conf_parse(rt.dns,
		    DNS_OPTIONS_ALL | DNS_OPTION_HOSTSFILE,
		    RESOLVE_RESOLV_CONF);
		if (rc != 0)
			log_info("%s: %s; names not in " RESOLVE_HOSTS
			         " are asked of 127.0.0.1 (set resolver in "
			         "[upstream] to choose)",
			    RESOLVE_RESOLV_CONF,
			    rc == 1       ? "cannot open it"
			        : rc == 6 ? "no nameserver in it"
			                  : "cannot read it");
	} else {
		evdns_base_load_hosts(rt.dns, RESOLVE_HOSTS);
		copy = xstrdup(cfg->resolver);
		for (tok = strtok_r(copy, " \t,", &save); tok != NULL;
		     tok = strtok_r(NULL, " \t,", &save))
			if (evdns_base_nameserver_ip_add(rt.dns, tok) != 0)
				log_warn("resolver %s: cannot use it", tok);
		free(copy);
	}
	/* After the file, whose options would otherwise win. */
	evdns_base_set_option(rt.dns, "timeout:", RESOLVE_ATTEMPT_S);
	evdns_base_set_option(rt.dns, "attempts:", RESOLVE_ATTEMPTS);
	evdns_base_resume(rt.dns);
}

/* Is cfg->upstream the first backend's url (as config.c makes it)? */
static int
resolve_upstream_is_first(const struct config *cfg)
{
	return cfg->nbackends > 0 &&
	    strcmp(cfg->upstream.base, cfg->backends[0].url.base) == 0;
}

static void
resolve_answer_cb(int result, struct evutil_addrinfo *res, void *arg)
{
	struct resolve_lookup *l = arg;
	struct resolve_job *job = l->job;
	struct evutil_addrinfo *ai;

	l->req = NULL;
	/* Hosts-file entries of the other family only: no address. */
	l->error = result == 0 && res == NULL ? EVUTIL_EAI_NODATA : result;
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if (l->what == RESOLVE_BACKEND) {
			addr_upstream_resolved(
			    &job->cfg->backends[l->index].url, ai->ai_addr,
			    (socklen_t)ai->ai_addrlen);
			/* cfg->upstream is the first backend's url. */
			if (l->index == 0 &&
			    resolve_upstream_is_first(job->cfg))
				addr_upstream_resolved(&job->cfg->upstream,
				    ai->ai_addr, (socklen_t)ai->ai_addrlen);
		} else if (l->what == RESOLVE_UPSTREAM)
			addr_upstream_resolved(&job->cfg->upstream, ai->ai_addr,
			    (socklen_t)ai->ai_addrlen);
		else {
			/* The first address, as getaddrinfo() gave it. */
			addr_listen_resolved(l->what == RESOLVE_ADMIN
			        ? &job->cfg->admin_listen
			        : &job->cfg->listen[l->index],
			    ai->ai_addr, (socklen_t)ai->ai_addrlen);
			break;
		}
	}
	if (res != NULL)
		evutil_freeaddrinfo(res);
	if (--job->pending == 0 && !job->starting)
		event_active(job->done_ev, EV_TIMEOUT, 0);
}

/* Starts one lookup; evdns may answer at once (hosts file), calling back
 * before it returns. */
static void
resolve_lookup(struct resolve_job *job, const char *name, int port,
    enum resolve_what what, int index)
{
	struct resolve_lookup *l = &job->lookups[job->nlookups++];
	struct evutil_addrinfo hints;
	char portstr[8];

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	snprintf(portstr, sizeof portstr, "%d", port);
	l->job = job;
	l->name = name;
	l->what = what;
	l->index = index;
	job->pending++;
	log_debug("resolving '%s'", name);
	l->req = evdns_getaddrinfo(
	    rt.dns, name, portstr, &hints, resolve_answer_cb, l);
}

static void
resolve_cancel_all(struct resolve_job *job)
{
	int i;

	/* Each cancelled lookup is still called back, from the loop. */
	for (i = 0; i < job->nlookups; i++)
		if (job->lookups[i].req != NULL)
			evdns_getaddrinfo_cancel(job->lookups[i].req);
}

static void
resolve_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct resolve_job *job = arg;

	job->timed_out = 1;
	resolve_cancel_all(job);
}

static const char *
resolve_reason(const struct resolve_job *job, int error)
{
	switch (error) {
	case EVUTIL_EAI_CANCEL:
		return job->timed_out
		    ? "no answer within " RESOLVE_STR(RESOLVE_TIMEOUT_S) " s"
		    : "cancelled";
	case EVUTIL_EAI_NONAME:
		return "no such name (NXDOMAIN)";
	case EVUTIL_EAI_NODATA:
		return "the name has no IPv4 or IPv6 address";
	case EVUTIL_EAI_FAIL:
		return "no usable answer (no A or AAAA record, or the DNS "
		       "server failed: SERVFAIL or REFUSED)";
	}
	return evutil_gai_strerror(error);
}

/* The first listen name that did not resolve, as a message; NULL when
 * all did.  An upstream name that did not is only logged. */
static const char *
resolve_outcome(const struct resolve_job *job, char *buf, size_t len)
{
	const struct resolve_lookup *l;
	const struct backend_conf *bc;
	const char *failed = NULL;
	char where[600];
	int i;

	for (i = 0; i < job->nlookups; i++) {
		l = &job->lookups[i];
		if (l->error == 0)
			continue;
		if (l->what == RESOLVE_BACKEND && job->cfg->fleet) {
			bc = &job->cfg->backends[l->index];
			log_notice("cannot resolve the host '%s' of backend %s "
			           "(url in %s:%d): %s; not checked for a loop "
			           "to ourselves",
			    l->name, bc->name, job->cfg->file, bc->url_line,
			    resolve_reason(job, l->error));
			continue;
		}
		if (l->what == RESOLVE_BACKEND || l->what == RESOLVE_UPSTREAM) {
			log_notice(
			    "cannot resolve upstream host '%s' (%s): %s; "
			    "not checked for a loop to ourselves",
			    l->name,
			    config_where(job->cfg, 1, where, sizeof where),
			    resolve_reason(job, l->error));
			continue;
		}
		if (failed == NULL) {
			snprintf(buf, len, "cannot resolve '%s' (%s): %s",
			    l->name,
			    config_where(job->cfg,
			        l->what == RESOLVE_ADMIN
			            ? CONFIG_WHERE_ADMIN_LISTEN
			            : CONFIG_WHERE_LISTEN,
			        where, sizeof where),
			    resolve_reason(job, l->error));
			failed = buf;
		}
	}
	return failed;
}

static void
resolve_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct resolve_job *job = arg;
	struct config *cfg = job->cfg;
	resolve_cb cb = job->cb;
	void *cb_arg = job->arg;
	const char *error;
	char buf[1024];

	error = resolve_outcome(job, buf, sizeof buf);
	if (job->nlookups > 0)
		log_info("resolved %d name%s in %.3f s%s", job->nlookups,
		    job->nlookups == 1 ? "" : "s",
		    (double)(now_us() - job->t_start_us) / 1e6,
		    error != NULL ? ", not all" : "");
	rt.resolving = NULL;
	event_free(job->done_ev);
	event_free(job->timer_ev);
	free(job);
	cb(cfg, error, cb_arg);
}

/*
 * Resolves cfg's names into cfg itself, then calls cb(cfg, error, arg)
 * from the loop: error is NULL when every listen name resolved, else a
 * message naming the name, where it was set and why.  Without names, cb
 * comes on the loop's next turn.
 */
struct resolve_job *
resolve_start(struct config *cfg, resolve_cb cb, void *arg)
{
	struct timeval tv = {RESOLVE_TIMEOUT_S, 0};
	/* At most one lookup per listen address, admin_listen, backend and
	 * the upstream. */
	struct resolve_job *job = xcalloc(1,
	    sizeof *job +
	        (size_t)(cfg->nlisten + 2 + cfg->nbackends) *
	            sizeof job->lookups[0]);
	int i;

	job->cfg = cfg;
	job->cb = cb;
	job->arg = arg;
	job->t_start_us = now_us();
	job->done_ev = event_new(rt.base, -1, 0, resolve_done_cb, job);
	job->timer_ev = evtimer_new(rt.base, resolve_timeout_cb, job);
	rt.resolving = job;
	resolve_configure(cfg);
	job->starting = 1;
	for (i = 0; i < cfg->nlisten; i++)
		if (cfg->listen[i].name[0] != '\0')
			resolve_lookup(job, cfg->listen[i].name,
			    cfg->listen[i].port, RESOLVE_LISTEN, i);
	if (cfg->has_admin_listen && cfg->admin_listen.name[0] != '\0')
		resolve_lookup(job, cfg->admin_listen.name,
		    cfg->admin_listen.port, RESOLVE_ADMIN, 0);
	for (i = 0; i < cfg->nbackends; i++)
		if (cfg->backends[i].url.host_is_name)
			resolve_lookup(job, cfg->backends[i].url.host,
			    cfg->backends[i].url.port, RESOLVE_BACKEND, i);
	if (cfg->upstream.host_is_name && !resolve_upstream_is_first(cfg))
		resolve_lookup(job, cfg->upstream.host, cfg->upstream.port,
		    RESOLVE_UPSTREAM, 0);
	job->starting = 0;
	if (job->pending == 0)
		event_active(job->done_ev, EV_TIMEOUT, 0);
	else
		evtimer_add(job->timer_ev, &tv);
	return job;
}

/* After the loop: ends a resolution still running (its callback comes,
 * with an error), lets evdns deliver what it cancelled, frees rt.dns. */
void
resolve_shutdown(void)
{
	int i;

	if (rt.dns == NULL)
		return;
	if (rt.resolving != NULL)
		resolve_cancel_all(rt.resolving);
	for (i = 0; i < 100 && rt.resolving != NULL; i++)
		event_base_loop(rt.base, EVLOOP_NONBLOCK);
	/* Lookups evdns cancelled itself report on the loop's next turn. */
	event_base_loop(rt.base, EVLOOP_NONBLOCK);
	evdns_base_free(rt.dns, 0);
	rt.dns = NULL;
}
