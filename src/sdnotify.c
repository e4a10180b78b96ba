/*
 * systemd's notify protocol, socket activation and watchdog.  Socket
 * activation and the watchdog come from libsystemd when we have it, from
 * a small implementation of the same documented protocol otherwise.
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "ollama-pool.h"

/*
 * Our own sender, with or without libsystemd: sd_notify() sends on a
 * blocking socket, and a reader that falls behind (ten datagrams queued)
 * would then stop the event loop.  A status line is not worth that, so
 * the send never waits; readiness is sent once, on an empty queue.
 */
static void
sdnotify_raw(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun;
	size_t len;
	int fd;

	if (path == NULL || (path[0] != '/' && path[0] != '@') ||
	    (len = strlen(path)) >= sizeof sun.sun_path)
		return;
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, len);
	if (sun.sun_path[0] == '@')
		sun.sun_path[0] = '\0'; /* abstract namespace */
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	sendto(fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT,
	    (struct sockaddr *)&sun,
	    offsetof(struct sockaddr_un, sun_path) + len);
	close(fd);
}

#ifndef HAVE_LIBSYSTEMD
static int
sdnotify_env_for_us(const char *pidvar)
{
	const char *pid = getenv(pidvar);

	return pid == NULL || atol(pid) == (long)getpid();
}
#endif

void
sdnotify_send(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	sdnotify_raw(msg);
}

#ifndef HAVE_LIBSYSTEMD
/* LISTEN_FDNAMES: names separated by colons, one per descriptor. */
static char **
sdnotify_split_names(const char *list, int n)
{
	char **names = xcalloc((size_t)n + 1, sizeof *names);
	const char *p = list;
	size_t len;
	int i;

	for (i = 0; i < n; i++) {
		len = p != NULL ? strcspn(p, ":") : 0;
		names[i] = xstrndup(p != NULL ? p : "", len);
		if (p != NULL)
			p = p[len] == ':' ? p + len + 1 : NULL;
	}
	return names;
}
#endif

/* How many listening sockets systemd passed us, from fd 3 on, and their
 * names (FileDescriptorName=, "unknown" when unnamed) into *names, a
 * NULL-terminated array for sdnotify_names_free(), when names is not
 * NULL. */
int
sdnotify_listen_fds(char ***names)
{
#ifdef HAVE_LIBSYSTEMD
	char **got = NULL;
	int n = sd_listen_fds_with_names(1, &got);

	if (n <= 0) {
		sdnotify_names_free(got);
		got = NULL;
		n = 0;
	}
	if (names != NULL)
		*names = got;
	else
		sdnotify_names_free(got);
	return n;
#else
	const char *fds = getenv("LISTEN_FDS");
	int n;

	if (names != NULL)
		*names = NULL;
	if (fds == NULL || getenv("LISTEN_PID") == NULL ||
	    !sdnotify_env_for_us("LISTEN_PID"))
		return 0;
	n = atoi(fds);
	if (n > 0 && names != NULL)
		*names = sdnotify_split_names(getenv("LISTEN_FDNAMES"), n);
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDNAMES");
	return n > 0 ? n : 0;
#endif
}

void
sdnotify_names_free(char **names)
{
	char **p;

	for (p = names; p != NULL && *p != NULL; p++)
		free(*p);
	free(names);
}

/* The watchdog interval systemd expects pings within, 0 when off. */
uint64_t
sdnotify_watchdog_usec(void)
{
#ifdef HAVE_LIBSYSTEMD
	uint64_t usec = 0;

	return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
#else
	const char *v = getenv("WATCHDOG_USEC");

	if (v == NULL || !sdnotify_env_for_us("WATCHDOG_PID"))
		return 0;
	return strtoull(v, NULL, 10);
#endif
}
