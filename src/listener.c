/*
 * Listening sockets: TCP and unix, each on an evconnlistener feeding
 * client_accept().  A listener is a client one (listen) or the admin one
 * (admin_listen), whose connections are served /metrics, /health and
 * /stats only; the kind goes with every connection it accepts.
 */
#include "config.h"

#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/listener.h>

#include "ollama-pool.h"

#define LISTEN_BACKLOG 511

static void
listener_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	listener_resume();
}

static void
listener_accept_cb(struct evconnlistener *evl, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct listener *l = arg;

	client_accept(fd, sa, salen, l->admin);
}

/*
 * accept() failed.  Out of descriptors (EMFILE, ENFILE) the listening
 * socket stays readable, so carrying on would spin: stop accepting until a
 * connection closes or a second has passed, and serve those we have.
 */
static void
listener_error_cb(struct evconnlistener *evl, void *arg)
{
	struct listener *l = arg;
	struct timeval tv = {1, 0};
	int e = errno;

	if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM) {
		log_warn("accept on %s: %s", l->bound, strerror(e));
		return;
	}
	if (!rt.accept_paused)
		log_warn("accept on %s: %s; pausing accepts while serving %d "
		         "connection%s",
		    l->bound, strerror(e), rt.nclients,
		    log_plural(rt.nclients));
	listener_pause();
	if (rt.accept_resume_ev == NULL)
		rt.accept_resume_ev =
		    evtimer_new(rt.base, listener_resume_cb, NULL);
	evtimer_add(rt.accept_resume_ev, &tv);
}

void
listener_pause(void)
{
	struct listener *l;

	TAILQ_FOREACH(l, &rt.listeners, entry)
	evconnlistener_disable(l->evl);
	rt.accept_paused = 1;
}

void
listener_resume(void)
{
	struct listener *l;

	if (!rt.accept_paused || rt.stopping ||
	    rt.nclients >= rt.cfg->max_clients)
		return;
	TAILQ_FOREACH(l, &rt.listeners, entry)
	evconnlistener_enable(l->evl);
	rt.accept_paused = 0;
}

static int
listener_bind(struct listener *l, char *err, size_t errlen)
{
	const struct listen_addr *la = &l->addr;
	const struct sockaddr_un *sun;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof ss;
	struct stat st;
	int fd, one = 1;

	fd = socket(
	    la->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket for %s: %s", la->text,
		    strerror(errno));
		return -1;
	}
	if (la->kind == LISTEN_TCP)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	else {
		/* A socket file left by an earlier run would block bind(). */
		sun = (const struct sockaddr_un *)&la->ss;
		if (stat(sun->sun_path, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(sun->sun_path);
	}
	if (bind(fd, (const struct sockaddr *)&la->ss, la->sslen) != 0 ||
	    listen(fd, LISTEN_BACKLOG) != 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", la->text,
		    strerror(errno));
		close(fd);
		return -1;
	}
	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == 0)
		addr_format(
		    (struct sockaddr *)&ss, sslen, l->bound, sizeof l->bound);
	l->fd = fd;
	return 0;
}

static int
listener_start(struct listener *l, char *err, size_t errlen)
{
	/* 0: it listens already (ours with LISTEN_BACKLOG, systemd's with
	 * its Backlog=); -1 would make libevent listen again with 128. */
	l->evl = evconnlistener_new(
	    rt.base, listener_accept_cb, l, LEV_OPT_CLOSE_ON_FREE, 0, l->fd);
	if (l->evl == NULL) {
		snprintf(err, errlen, "cannot watch %s", l->bound);
		close(l->fd);
		return -1;
	}
	evconnlistener_set_error_cb(l->evl, listener_error_cb);
	TAILQ_INSERT_TAIL(&rt.listeners, l, entry);
	if (l->admin)
		log_notice("listening on %s for /metrics, /health and /stats "
		           "(admin)",
		    l->bound);
	else
		log_notice("listening on %s", l->bound);
	return 0;
}

/* Sockets systemd passed us (socket activation) replace the configured
 * ones: the socket unit owns the addresses, and connections that arrive
 * while we restart wait in its backlog instead of being refused. */
static int
listener_inherit(int n, char **names, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len;
	struct listener *l;
	int fd, val, nadmin = 0;

	for (fd = 3; fd < 3 + n; fd++) {
		len = sizeof val;
		if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &val, &len) !=
		        0 ||
		    !val) {
			snprintf(err, errlen,
			    "descriptor %d passed by systemd is not a "
			    "listening "
			    "socket",
			    fd);
			return -1;
		}
		l = xcalloc(1, sizeof *l);
		l->fd = fd;
		l->inherited = 1;
		/* FileDescriptorName=admin in its socket unit. */
		l->admin = names != NULL && names[fd - 3] != NULL &&
		    strcmp(names[fd - 3], "admin") == 0;
		nadmin += l->admin;
		len = sizeof ss;
		if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
			memcpy(&l->addr.ss, &ss, len);
			l->addr.sslen = len;
			l->addr.kind =
			    ss.ss_family == AF_UNIX ? LISTEN_UNIX : LISTEN_TCP;
			addr_format((struct sockaddr *)&ss, len, l->bound,
			    sizeof l->bound);
			snprintf(
			    l->addr.text, sizeof l->addr.text, "%s", l->bound);
		}
		evutil_make_socket_nonblocking(fd);
		evutil_make_socket_closeonexec(fd);
		if (listener_start(l, err, errlen) != 0) {
			free(l);
			return -1;
		}
	}
	rt.socket_activated = 1;
	log_notice("using %d socket%s passed by systemd; the listen setting "
	           "is ignored",
	    n, n == 1 ? "" : "s");
	if (nadmin > 0)
		log_notice("the socket named admin is the admin listener; the "
		           "admin_listen setting is ignored");
	return 0;
}

/* An admin listener systemd passed: it replaces admin_listen. */
static int
listener_admin_inherited(void)
{
	struct listener *l;

	TAILQ_FOREACH(l, &rt.listeners, entry)
	if (l->inherited && l->admin)
		return 1;
	return 0;
}

static int
listener_open_one(
    const struct listen_addr *la, int admin, char *err, size_t errlen)
{
	struct listener *l = xcalloc(1, sizeof *l);

	l->addr = *la;
	l->admin = admin;
	if (listener_bind(l, err, errlen) != 0 ||
	    listener_start(l, err, errlen) != 0) {
		free(l);
		return -1;
	}
	return 0;
}

/* Under socket activation the client sockets are systemd's; the admin
 * listener is too when one is named admin, else we open admin_listen. */
int
listener_open_all(const struct config *cfg, char *err, size_t errlen)
{
	char **names = NULL;
	int i, rc = 0, n = sdnotify_listen_fds(&names);

	if (n > 0)
		rc = listener_inherit(n, names, err, errlen);
	sdnotify_names_free(names);
	for (i = 0; n == 0 && rc == 0 && i < cfg->nlisten; i++)
		rc = listener_open_one(&cfg->listen[i], 0, err, errlen);
	if (rc == 0 && cfg->has_admin_listen && !listener_admin_inherited())
		rc = listener_open_one(&cfg->admin_listen, 1, err, errlen);
	return rc;
}

static void
listener_close(struct listener *l)
{
	TAILQ_REMOVE(&rt.listeners, l, entry);
	evconnlistener_free(l->evl);
	if (l->addr.kind == LISTEN_UNIX && !l->inherited)
		unlink(((struct sockaddr_un *)&l->addr.ss)->sun_path);
	log_notice(
	    "stopped listening on %s%s", l->bound, l->admin ? " (admin)" : "");
	free(l);
}

static int
listener_same(const struct listen_addr *a, const struct listen_addr *b)
{
	return a->sslen == b->sslen && memcmp(&a->ss, &b->ss, a->sslen) == 0;
}

/* The addresses a configuration asks us to listen on, and their kinds:
 * none of the client ones under socket activation, no admin one when
 * systemd passed it. */
struct listener_want {
	const struct listen_addr *addr;
	int admin;
	struct listener *have; /* already listening there */
};

static int
listener_wanted(const struct config *cfg, struct listener_want *w)
{
	int i, n = 0;

	for (i = 0; !rt.socket_activated && i < cfg->nlisten; i++) {
		w[n].addr = &cfg->listen[i];
		w[n++].admin = 0;
	}
	if (cfg->has_admin_listen && !listener_admin_inherited()) {
		w[n].addr = &cfg->admin_listen;
		w[n++].admin = 1;
	}
	return n;
}

/*
 * After a reload: open the addresses the new settings added, then close
 * the ones they dropped; those in both keep their sockets, so no
 * connection is refused, and take the kind the new settings give them
 * (an address may move between listen and admin_listen).  If any new
 * address cannot be bound, nothing changes and -1 comes back with the
 * reason: the reload must then keep the running settings, rather than
 * leave the proxy listening nowhere.  Sockets systemd passed stay as
 * they are.
 */
int
listener_reconcile(const struct config *cfg, char *err, size_t errlen)
{
	struct listener_want want[MAX_LISTEN + 1];
	struct listener *l, *next, *fresh[MAX_LISTEN + 1];
	int i, n, nfresh = 0, found;

	n = listener_wanted(cfg, want);
	for (i = 0; i < n; i++) {
		want[i].have = NULL;
		TAILQ_FOREACH(l, &rt.listeners, entry)
		if (!l->inherited && listener_same(&l->addr, want[i].addr))
			want[i].have = l;
		if (want[i].have != NULL)
			continue;
		l = xcalloc(1, sizeof *l);
		l->addr = *want[i].addr;
		l->admin = want[i].admin;
		if (listener_bind(l, err, errlen) != 0) {
			free(l);
			while (nfresh > 0) {
				close(fresh[--nfresh]->fd);
				free(fresh[nfresh]);
			}
			return -1;
		}
		fresh[nfresh++] = l;
	}
	for (l = TAILQ_FIRST(&rt.listeners); l != NULL; l = next) {
		next = TAILQ_NEXT(l, entry);
		for (i = 0, found = l->inherited; i < n && !found; i++)
			found = want[i].have == l;
		if (!found)
			listener_close(l);
	}
	for (i = 0; i < n; i++)
		if (want[i].have != NULL &&
		    want[i].have->admin != want[i].admin) {
			want[i].have->admin = want[i].admin;
			log_notice("%s is now %s listener", want[i].have->bound,
			    want[i].admin ? "the admin" : "a client");
		}
	for (i = 0; i < nfresh; i++)
		if (listener_start(fresh[i], err, errlen) != 0) {
			log_err("reload: %s", err);
			free(fresh[i]);
		}
	if (rt.accept_paused)
		listener_pause(); /* new ones wait like the rest */
	return 0;
}

void
listener_close_all(void)
{
	struct listener *l;

	while ((l = TAILQ_FIRST(&rt.listeners)) != NULL)
		listener_close(l);
}

/* "127.0.0.1:11435, unix:/run/x.sock, admin 127.0.0.1:9100" for status
 * lines. */
const char *
listener_summary(char *buf, size_t len)
{
	struct listener *l;
	size_t n = 0;

	buf[0] = '\0';
	TAILQ_FOREACH(l, &rt.listeners, entry)
	{
		n += snprintf(buf + n, n < len ? len - n : 0, "%s%s%s",
		    n ? ", " : "", l->admin ? "admin " : "", l->bound);
		if (n >= len)
			break;
	}
	return buf;
}
