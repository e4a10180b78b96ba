/*
 * systemd's notify protocol.  With libsystemd we use sd_notify(); without
 * it, a no-op stand-in, so the daemon builds and runs anywhere.
 */
#include "config.h"

#include <stdio.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "ollama-pool.h"

void
sdnotify_send(const char *fmt, ...)
{
#ifdef HAVE_LIBSYSTEMD
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	sd_notify(0, msg);
#else
	(void)fmt;
#endif
}
