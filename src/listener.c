/*
 * Listening sockets: TCP and unix, each on an evconnlistener feeding
 * client_accept().
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
listener_accept_cb(struct evconnlistener *evl, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	client_accept(fd, sa, salen);
}

static void
listener_error_cb(struct evconnlistener *evl, void *arg)
{
	struct listener *l = arg;

	log_warn("accept on %s: %s", l->bound, strerror(errno));
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

	fd = socket(la->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
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
		addr_format((struct sockaddr *)&ss, sslen, l->bound,
		    sizeof l->bound);
	l->fd = fd;
	return 0;
}

static int
listener_start(struct listener *l, char *err, size_t errlen)
{
	l->evl = evconnlistener_new(rt.base, listener_accept_cb, l,
	    LEV_OPT_CLOSE_ON_FREE, -1, l->fd);
	if (l->evl == NULL) {
		snprintf(err, errlen, "cannot watch %s", l->bound);
		close(l->fd);
		return -1;
	}
	evconnlistener_set_error_cb(l->evl, listener_error_cb);
	TAILQ_INSERT_TAIL(&rt.listeners, l, entry);
	log_notice("listening on %s", l->bound);
	return 0;
}

int
listener_open_all(const struct config *cfg, char *err, size_t errlen)
{
	struct listener *l;
	int i;

	for (i = 0; i < cfg->nlisten; i++) {
		l = xcalloc(1, sizeof *l);
		l->addr = cfg->listen[i];
		if (listener_bind(l, err, errlen) != 0 ||
		    listener_start(l, err, errlen) != 0) {
			free(l);
			return -1;
		}
	}
	return 0;
}

void
listener_close_all(void)
{
	struct listener *l;

	while ((l = TAILQ_FIRST(&rt.listeners)) != NULL) {
		TAILQ_REMOVE(&rt.listeners, l, entry);
		evconnlistener_free(l->evl);
		if (l->addr.kind == LISTEN_UNIX && !l->inherited)
			unlink(((struct sockaddr_un *)&l->addr.ss)->sun_path);
		free(l);
	}
}

/* "127.0.0.1:11435, unix:/run/x.sock" for status lines. */
const char *
listener_summary(char *buf, size_t len)
{
	struct listener *l;
	size_t n = 0;

	buf[0] = '\0';
	TAILQ_FOREACH(l, &rt.listeners, entry) {
		n += snprintf(buf + n, n < len ? len - n : 0, "%s%s",
		    n ? ", " : "", l->bound);
		if (n >= len)
			break;
	}
	return buf;
}
