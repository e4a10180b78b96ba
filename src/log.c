/*
 * Logging to stderr.  Under systemd (JOURNAL_STREAM set) each line carries
 * a <N> priority prefix so the journal files it at the right level, and
 * no time (the journal stamps it); elsewhere each line starts with an
 * RFC 3339 UTC time to the millisecond.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ollama-pool.h"

/* "2026-12-01T07:41:10.123Z": RFC 3339, UTC, milliseconds.  At least
 * LOG_TIME_MAX bytes; safe from any thread. */
size_t
log_format_time(char *out, size_t len, const struct timespec *ts)
{
	struct tm tm;
	size_t n;

	if (gmtime_r(&ts->tv_sec, &tm) == NULL ||
	    (n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm)) == 0) {
		snprintf(out, len, "-");
		return strlen(out);
	}
	n += snprintf(
	    out + n, len - n, ".%03ldZ", (long)(ts->tv_nsec / 1000000));
	return n < len ? n : len - 1;
}

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
	char line[2048], when[LOG_TIME_MAX];
	struct timespec ts;
	int n;

	if (lvl > rt.log_level)
		return;
	if (rt.log_journal)
		n = snprintf(line, sizeof line, "<%d>", (int)lvl);
	else {
		clock_gettime(CLOCK_REALTIME, &ts);
		log_format_time(when, sizeof when, &ts);
		n = snprintf(line, sizeof line,
		    "%s " OP_NAME "[%ld]: %s: ", when, (long)getpid(),
		    names[lvl]);
	}
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
