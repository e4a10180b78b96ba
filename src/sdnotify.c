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

/* How many listening sockets systemd passed us, from fd 3 on. */
int
sdnotify_listen_fds(void)
{
#ifdef HAVE_LIBSYSTEMD
	int n = sd_listen_fds(1);

	return n > 0 ? n : 0;
#else
	const char *fds = getenv("LISTEN_FDS");
	int n;

	if (fds == NULL || getenv("LISTEN_PID") == NULL ||
	    !sdnotify_env_for_us("LISTEN_PID"))
		return 0;
	n = atoi(fds);
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDNAMES");
	return n > 0 ? n : 0;
#endif
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
