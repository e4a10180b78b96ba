/*
 * ollama-pool: arguments, signals and the event loop.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ollama-pool.h"

static void NORETURN
main_usage(int status)
{
	FILE *fp = status ? stderr : stdout;

	fprintf(fp,
	    "usage: " OP_NAME " [-c FILE] [-l ADDR]... [-u URL] [-t] [-v] "
	    "[-V] [-h]\n"
	    "  -c, --config FILE      read settings from FILE (INI); the "
	    "service reads\n"
	    "                         " SYSCONFDIR "/ollama-pool.conf\n"
	    "  -l, --listen ADDR      accept clients on ADDR: HOST:PORT, "
	    "[V6]:PORT,\n"
	    "                         :PORT (loopback) or unix:/path; "
	    "repeatable\n"
	    "                         (default " DEFAULT_LISTEN ")\n"
	    "  -u, --upstream URL     the Ollama server, in OLLAMA_HOST "
	    "syntax\n"
	    "                         (default " DEFAULT_UPSTREAM ")\n"
	    "  -t, --check-config     check the settings, print them and "
	    "exit\n"
	    "  -v, --verbose          log more (repeat for debug)\n"
	    "  -V, --version          print the version and exit\n"
	    "  -h, --help             print this help and exit\n"
	    "Point clients at the proxy with "
	    "OLLAMA_HOST=http://127.0.0.1:11435.\n");
	exit(status);
}

/* Listening beyond loopback was allowed explicitly; say what it means. */
static void
main_warn_exposure(void)
{
	struct listener *l;

	TAILQ_FOREACH(l, &rt.listeners, entry)
	{
		if (addr_is_loopback(&l->addr))
			continue;
		if (!rt.cfg->allow_remote && l->inherited)
			fatal(
			    "socket %s passed by systemd is not loopback: set "
			    "allow_remote = yes to accept remote clients",
			    l->bound);
		if (l->admin) {
			log_warn("admin listener on %s, beyond loopback: "
			         "anyone who can reach it can read the "
			         "metrics and health (no token is asked there)",
			    l->bound);
			continue;
		}
		log_warn("listening on %s, beyond loopback: %s", l->bound,
		    rt.cfg->client_tokens[0]
		        ? "clients must present a bearer token"
		        : "anyone who can reach it can use the upstream "
		          "(set client_tokens)");
	}
}

/* libevent's own words (evdns: "Nameserver ... has failed") go to our
 * log, at their level, not raw to stderr. */
static void
main_libevent_log(int severity, const char *msg)
{
	switch (severity) {
	case EVENT_LOG_DEBUG:
		log_debug("libevent: %s", msg);
		break;
	case EVENT_LOG_MSG:
		log_info("libevent: %s", msg);
		break;
	case EVENT_LOG_WARN:
		log_warn("libevent: %s", msg);
		break;
	default:
		log_err("libevent: %s", msg);
		break;
	}
}

/* Called whenever a client connection ends: a descriptor and a slot
 * just freed, and the last one ends a drain. */
static void
main_client_gone(void)
{
	if (rt.accept_paused)
		listener_resume();
	if (rt.stopping && rt.nclients == 0)
		event_base_loopbreak(rt.base);
}

static void
main_shutdown_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	log_notice("shutdown_timeout: closing %d connection%s still busy",
	    rt.nclients, rt.nclients == 1 ? "" : "s");
	client_close_all();
	event_base_loopbreak(rt.base);
}

/* SIGTERM/SIGINT: stop accepting, let requests in flight finish within
 * shutdown_timeout, then go.  A second signal ends it at once. */
static void
main_stop_cb(evutil_socket_t sig, short what, void *arg)
{
	struct timeval tv;
	double t = rt.cfg->shutdown_timeout;

	if (rt.stopping) {
		log_notice("second signal: exiting at once");
		exit(0);
	}
	rt.stopping = 1;
	log_notice("received %s: draining %d connection%s (at most %g s)",
	    strsignal(sig), rt.nclients, rt.nclients == 1 ? "" : "s", t);
	sdnotify_send("STOPPING=1");
	listener_close_all();
	client_close_idle();
	tv = runtime_timeval(t);
	rt.shutdown_ev = evtimer_new(rt.base, main_shutdown_timeout_cb, NULL);
	evtimer_add(rt.shutdown_ev, &tv);
	main_client_gone();
}

/*
 * The backends a configuration names, in its order: one whose name and
 * settings did not change keeps serving with its warm connections and
 * what it learned; the others are made anew, and those left over retire
 * (their requests in flight finish; they go when done).  New ones are
 * probed at once.
 */
/* A backend goes: its probes first (they hold its handles). */
static void
main_backend_freeing(struct backend *b)
{
	probe_free(b->probe);
	health_free(b->health);
}

/* One backend, or one member of it: kept when it is already there,
 * else made (and probed, and prewarmed). */
static void
main_backend_place(struct backend_list *fresh, const struct config *cfg,
    const struct backend_conf *bc, const struct sockaddr *member)
{
	struct backend_hooks hooks = {queue_kick, NULL, main_backend_freeing};
	struct backend *b;
	char host[64] = "";

	if (member != NULL)
		addr_host(member, host, sizeof host);
	TAILQ_FOREACH(b, &rt.backends, entry)
	if (b->fleet == cfg->fleet && backend_is_member(b, bc, host))
		break;
	if (b != NULL) {
		/* Kept, connections and all; what does not touch them is
		 * taken as it is now. */
		b->conf.prewarm = bc->prewarm;
		b->conf.resolve_interval = bc->resolve_interval;
		TAILQ_REMOVE(&rt.backends, b, entry);
		TAILQ_INSERT_TAIL(fresh, b, entry);
		return;
	}
	b = backend_new(bc, cfg->fleet, &hooks, member);
	TAILQ_INSERT_TAIL(fresh, b, entry);
	health_start(b);
	probe_startup(b);
	if (cfg->fleet)
		backend_prewarm(b);
	if (cfg->fleet)
		log_notice("backend %s%s%s: %s, %d slot%s, %d per model",
		    b->name, host[0] ? " member " : "", host, b->url.base,
		    b->conf.pool_maxsize, log_plural(b->conf.pool_maxsize),
		    b->conf.num_parallel);
	else
		log_notice("forwarding to %s with a pool of %d connection%s",
		    b->url.base, b->conf.pool_maxsize,
		    log_plural(b->conf.pool_maxsize));
}

/* The addresses a backend's members have now, for a reload whose lookup
 * of its name failed: a DNS hiccup must never empty the fleet. */
static void
main_known_members(const struct backend_conf *bc, struct upstream_url *known)
{
	const struct backend *b;
	struct sockaddr_storage ss;
	int len;

	memset(known, 0, sizeof *known);
	TAILQ_FOREACH(b, &rt.backends, entry)
	{
		len = sizeof ss;
		if (b->retiring || b->member[0] == '\0' ||
		    strcmp(b->name, bc->name) != 0 ||
		    evutil_parse_sockaddr_port(
		        b->member, (struct sockaddr *)&ss, &len) != 0)
			continue;
		addr_upstream_resolved(known, (struct sockaddr *)&ss, len);
	}
	if (known->naddrs > 0)
		log_warn("backend %s: %s did not resolve; keeping its %d "
		         "member%s",
		    bc->name, bc->url.host, known->naddrs,
		    log_plural(known->naddrs));
}

/*
 * The backends a configuration names, in its order, a backend whose url
 * names a host with several addresses as one member per address: one
 * whose settings did not change keeps serving with its warm connections
 * and what it learned; the others are made anew, and those left over
 * retire (their requests in flight finish; they go when done).  Then
 * discovery.c looks the names up again every resolve_interval.
 */
static void
main_backends_apply(const struct config *cfg)
{
	const struct backend_conf *bc;
	struct backend_list fresh;
	struct backend *b, *next;
	struct upstream_url known;
	int i, j;

	TAILQ_INIT(&fresh);
	for (i = 0; i < cfg->nbackends; i++) {
		bc = &cfg->backends[i];
		if (!cfg->fleet || !bc->url.host_is_name) {
			main_backend_place(&fresh, cfg, bc, NULL);
			continue;
		}
		/* The lookup failed: the members it had stay. */
		if (bc->url.naddrs == 0)
			main_known_members(bc, &known);
		else
			known = bc->url;
		if (known.naddrs == 0)
			main_backend_place(&fresh, cfg, bc, NULL);
		for (j = 0; j < known.naddrs; j++)
			main_backend_place(&fresh, cfg, bc,
			    (const struct sockaddr *)&known.addrs[j]);
	}
	for (b = TAILQ_FIRST(&rt.backends); b != NULL; b = next) {
		next = TAILQ_NEXT(b, entry);
		TAILQ_REMOVE(&rt.backends, b, entry);
		TAILQ_INSERT_TAIL(&fresh, b, entry);
		if (!b->retiring)
			backend_retire(b);
	}
	TAILQ_CONCAT(&rt.backends, &fresh, entry);
	discovery_apply(cfg);
}

/*
 * The settings of a reload, their names resolved: check them, then apply
 * them.  Listeners first: if a new address cannot be bound, nothing
 * changes at all.  A changed upstream gets a new pool; requests in flight
 * finish on the old one, which goes when they are done.
 */
static int
main_reload_apply(struct config *cfg, char *err, size_t errlen)
{
	struct config *old;

	if (config_check_addresses(cfg, err, errlen) != 0 ||
	    listener_reconcile(cfg, err, errlen) != 0)
		return -1;
	/* The new settings first: new backends are made from them. */
	old = rt.cfg;
	rt.cfg = cfg;
	main_backends_apply(cfg);
	config_free(old);
	/* Waiting requests may fit the new backends. */
	queue_kick(NULL);
	accesslog_configure(rt.cfg);
	return 0;
}

static void main_reload_begin(void);

/* Every error of a file, one a line: on stderr at start and for -t, in
 * the log (each at error level) for a reload. */
static void
main_report_errors(const struct config_errors *e, int reload)
{
	int i, total = e->n + e->more;

	if (reload && total == 1) {
		log_err("reload failed, keeping the running settings: %s",
		    e->line[0]);
		return;
	}
	if (reload)
		log_err("reload failed, keeping the running settings: %d "
		        "error%s",
		    total, log_plural(total));
	for (i = 0; i < e->n; i++)
		if (reload)
			log_err("%s", e->line[i]);
		else
			fprintf(stderr, "%s\n", e->line[i]);
	if (e->more > 0 && reload)
		log_err("... and %d more", e->more);
	else if (e->more > 0)
		fprintf(stderr, "... and %d more\n", e->more);
}

/* A reload ended, either way: the next one queued, or READY=1. */
static void
main_reload_end(int ok)
{
	if (rt.reload_queued && !rt.stopping) {
		rt.reload_queued = 0;
		if (ok)
			log_notice("reload complete; reloading again, as asked "
			           "meanwhile");
		main_reload_begin();
		return;
	}
	rt.reload_queued = 0;
	sdnotify_send("READY=1");
	if (ok)
		log_notice("reload complete");
}

/* resolve.c is done with the reload's names. */
static void
main_reload_resolved(struct config *cfg, const char *error, void *arg)
{
	char err[1024];

	if (rt.stopping) {
		log_notice("reload abandoned: stopping");
		config_free(cfg);
		return;
	}
	if (error != NULL)
		snprintf(err, sizeof err, "%s", error);
	if (error != NULL || main_reload_apply(cfg, err, sizeof err) != 0) {
		log_err("reload failed, keeping the running settings: %s", err);
		config_free(cfg);
		resolve_configure(rt.cfg);
		main_reload_end(0);
		return;
	}
	main_reload_end(1);
}

/* Parses the file anew, whole, before anything changes, and resolves its
 * names off the loop; main_reload_resolved() carries on.  A bad file
 * leaves the running settings alone. */
static void
main_reload_begin(void)
{
	struct config_errors errs;
	struct config *cfg;

	cfg = config_new_defaults();
	if (config_load(cfg, rt.config_file, &rt.overrides, &errs) != 0) {
		main_report_errors(&errs, 1);
		config_errors_free(&errs);
		config_free(cfg);
		main_reload_end(0);
		return;
	}
	resolve_start(cfg, main_reload_resolved, NULL);
}

/*
 * SIGHUP.  Names are resolved on the loop, never blocking it; a SIGHUP
 * that comes while a reload is resolving is acknowledged (RELOADING=1)
 * and queued: one more reload, reading the file again, follows the
 * running one, and READY=1 comes after the last.
 */
static void
main_reload_cb(evutil_socket_t sig, short what, void *arg)
{
	if (rt.stopping) {
		log_notice("received SIGHUP while draining: ignored");
		return;
	}
	sdnotify_send(
	    "RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)now_us());
	log_notice("received SIGHUP: reloading %s",
	    rt.config_file ? rt.config_file : "(no file: defaults)");
	if (rt.resolving != NULL) {
		rt.reload_queued = 1;
		log_notice("a reload is resolving names: this one follows it");
		return;
	}
	main_reload_begin();
}

/* SIGUSR1: logrotate moved the access log away; the writer reopens it. */
static void
main_reopen_cb(evutil_socket_t sig, short what, void *arg)
{
	accesslog_reopen();
}

/* resolve.c is done with the start-up names. */
static void
main_startup_resolved(struct config *cfg, const char *error, void *arg)
{
	char *err = arg;

	snprintf(err, 1024, "%s", error != NULL ? error : "");
}

/* At start-up, and for -t, the same resolution as a reload's, with the
 * loop run until it ends.  0, or -1 with the reason in err. */
static int
main_resolve_startup(char *err, size_t errlen)
{
	char msg[1024] = "?";

	resolve_init();
	resolve_start(rt.cfg, main_startup_resolved, msg);
	while (rt.resolving != NULL)
		event_base_loop(rt.base, EVLOOP_ONCE);
	if (msg[0] != '\0') {
		snprintf(err, errlen, "%s", msg);
		return -1;
	}
	return config_check_addresses(rt.cfg, err, errlen);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"listen", required_argument, NULL, 'l'},
	    {"upstream", required_argument, NULL, 'u'},
	    {"check-config", no_argument, NULL, 't'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct config_overrides *ov = &rt.overrides;
	struct config_errors errs;
	struct event *sigev[4];
	struct backend *up;
	const char *file = NULL;
	char err[1024], where[512];
	int ch, check_only = 0, verbose = 0, i, rc;

	while ((ch = getopt_long(argc, argv, "c:l:u:tvVh", longopts, NULL)) !=
	    -1) {
		switch (ch) {
		case 'c':
			file = optarg;
			break;
		case 'l':
			if (ov->nlisten == MAX_LISTEN) {
				fprintf(stderr, OP_NAME ": at most %d -l\n",
				    MAX_LISTEN);
				return 2;
			}
			ov->listen[ov->nlisten++] = optarg;
			break;
		case 'u':
			ov->upstream = optarg;
			break;
		case 't':
			check_only = 1;
			break;
		case 'v':
			verbose++;
			break;
		case 'V':
			printf(OP_NAME " %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			main_usage(0);
		default:
			main_usage(2);
		}
	}
	if (optind != argc) {
		fprintf(stderr, OP_NAME ": unexpected argument '%s'\n",
		    argv[optind]);
		main_usage(2);
	}

	log_init(verbose);
	reqid_init();
	rt.config_file = file;
	rt.metrics.start_time = time(NULL);
	rt.cfg = config_new_defaults();
	if (config_load(rt.cfg, file, ov, &errs) != 0) {
		main_report_errors(&errs, 0);
		config_errors_free(&errs);
		config_free(rt.cfg);
		return 1;
	}
	event_set_log_callback(main_libevent_log);
	rt.base = event_base_new();
	if (rt.base == NULL)
		fatal("cannot initialise libevent");
	rc = main_resolve_startup(err, sizeof err);
	if (rc != 0 || check_only) {
		if (rc != 0)
			fprintf(stderr, "%s\n", err);
		else
			config_print(rt.cfg, stdout);
		resolve_shutdown();
		event_base_free(rt.base);
		config_free(rt.cfg);
		return rc != 0 ? 1 : 0;
	}

	signal(SIGPIPE, SIG_IGN);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		fatal("cannot initialise libcurl");
	TAILQ_INIT(&rt.backends);
	TAILQ_INIT(&rt.discoveries);
	TAILQ_INIT(&rt.listeners);
	TAILQ_INIT(&rt.clients);
	rt.client_hooks.full = listener_pause;
	rt.client_hooks.gone = main_client_gone;

	if (listener_open_all(rt.cfg, err, sizeof err) != 0)
		fatal("%s", err);
	main_warn_exposure();
	if (accesslog_start(rt.cfg, err, sizeof err) != 0)
		fatal("%s", err);
	sigev[0] = evsignal_new(rt.base, SIGINT, main_stop_cb, NULL);
	sigev[1] = evsignal_new(rt.base, SIGTERM, main_stop_cb, NULL);
	sigev[2] = evsignal_new(rt.base, SIGHUP, main_reload_cb, NULL);
	sigev[3] = evsignal_new(rt.base, SIGUSR1, main_reopen_cb, NULL);
	for (i = 0; i < 4; i++)
		evsignal_add(sigev[i], NULL);

	/* Each backend's start-up check says plainly whether Ollama
	 * answers; none holds READY=1. */
	main_backends_apply(rt.cfg);
	up = TAILQ_FIRST(&rt.backends);
	log_notice("Via names this proxy %s", rt.via_name);
	if (rt.cfg->fleet)
		sdnotify_send("READY=1\nSTATUS=listening on %s, %d backend%s",
		    listener_summary(where, sizeof where), rt.cfg->nbackends,
		    log_plural(rt.cfg->nbackends));
	else
		sdnotify_send("READY=1\nSTATUS=listening on %s, upstream %s",
		    listener_summary(where, sizeof where), up->url.base);
	janitor_start();

	event_base_dispatch(rt.base);

	janitor_stop();
	client_close_all();
	listener_close_all();
	queue_free_all();
	discovery_stop();
	while ((up = TAILQ_FIRST(&rt.backends)) != NULL) {
		TAILQ_REMOVE(&rt.backends, up, entry);
		backend_free(up);
	}
	for (i = 0; i < 4; i++)
		event_free(sigev[i]);
	accesslog_stop();
	if (rt.shutdown_ev != NULL)
		event_free(rt.shutdown_ev);
	if (rt.accept_resume_ev != NULL)
		event_free(rt.accept_resume_ev);
	resolve_shutdown();
	log_notice("stopped");
	event_base_free(rt.base);
	config_free(rt.cfg);
	curl_global_cleanup();
	return 0;
}
