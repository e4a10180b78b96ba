/*
 * Periodic work on the loop: the one-line status systemd shows, kept
 * current, and watchdog pings.  The pings come from the event loop itself,
 * so a loop stuck anywhere stops them and systemd restarts us.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "ollama-pool.h"

static void
janitor_status(void)
{
	struct backend *up;
	char status[sizeof rt.status_line];
	char where[sizeof up->url.base + 16];
	int in_flight = 0, queued = queue_length(), up_n = 0;
	long conns = 0;

	TAILQ_FOREACH(up, &rt.backends, entry)
	{
		in_flight += up->active;
		conns += up->conns_open;
		up_n += backend_usable(up);
	}
	up = TAILQ_FIRST(&rt.backends);
	if (rt.cfg->fleet)
		snprintf(where, sizeof where, "%d of %d backend%s up", up_n,
		    rt.cfg->nbackends, log_plural(rt.cfg->nbackends));
	else
		snprintf(where, sizeof where, "upstream %s",
		    up ? up->url.base : "-");
	snprintf(status, sizeof status,
	    "%d client%s, %d in flight, %d queued; %s, %ld "
	    "connection%s open%s",
	    rt.nclients, log_plural(rt.nclients), in_flight, queued, where,
	    conns, log_plural(conns), rt.stopping ? "; draining" : "");
	if (strcmp(status, rt.status_line) == 0)
		return;
	snprintf(rt.status_line, sizeof rt.status_line, "%s", status);
	sdnotify_send("STATUS=%s", status);
}

static void
janitor_cb(evutil_socket_t fd, short what, void *arg)
{
	if (rt.watchdog)
		sdnotify_send("WATCHDOG=1");
	janitor_status();
}

void
janitor_start(void)
{
	uint64_t wd = sdnotify_watchdog_usec();
	struct timeval tv = {1, 0};

	/* Ping at half the watchdog interval, and at least every second. */
	if (wd > 0) {
		rt.watchdog = 1;
		if (wd / 2 < 1000000) {
			tv.tv_sec = 0;
			tv.tv_usec = (suseconds_t)(wd / 2);
		}
		log_info("watchdog every %.3f s", wd / 1e6);
	}
	rt.janitor_ev = event_new(rt.base, -1, EV_PERSIST, janitor_cb, NULL);
	event_add(rt.janitor_ev, &tv);
	janitor_cb(-1, 0, NULL);
}

void
janitor_stop(void)
{
	if (rt.janitor_ev != NULL)
		event_free(rt.janitor_ev);
	rt.janitor_ev = NULL;
}
