/*
 * Logging to stderr.  Under systemd (JOURNAL_STREAM set) each line carries
 * a <N> priority prefix so the journal files it at the right level.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ollama-pool.h"

void
log_init(int verbosity)
{
	rt.log_journal = getenv("JOURNAL_STREAM") != NULL;
	rt.log_level = LOG_LVL_NOTICE + verbosity;
	if (rt.log_level > LOG_LVL_DEBUG)
		rt.log_level = LOG_LVL_DEBUG;
}

int
log_enabled(enum log_level lvl)
{
	return lvl <= rt.log_level;
}

const char *
log_plural(long long n)
{
	return n == 1 ? "" : "s";
}

void
log_vmsg(enum log_level lvl, const char *fmt, va_list ap)
{
	static const char *names[] = {[LOG_LVL_ERR] = "error",
	    [LOG_LVL_WARNING] = "warning",
	    [LOG_LVL_NOTICE] = "notice",
	    [LOG_LVL_INFO] = "info",
	    [LOG_LVL_DEBUG] = "debug"};
	char line[2048];
	int n;

	if (lvl > rt.log_level)
		return;
	if (rt.log_journal)
		n = snprintf(line, sizeof line, "<%d>", (int)lvl);
	else
		n = snprintf(line, sizeof line,
		    OP_NAME "[%ld]: %s: ", (long)getpid(), names[lvl]);
	if (n < 0)
		return;
	vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
	n = strlen(line);
	line[n++] = '\n';
	/* One write per line keeps lines whole when several writers share
	 * the stream. */
	if (write(STDERR_FILENO, line, n) < 0)
		return;
}

void
log_msg(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(lvl, fmt, ap);
	va_end(ap);
}

void
fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_LVL_ERR, fmt, ap);
	va_end(ap);
	exit(1);
}
