/*
 * Retry policy: whether a failed attempt may go again, and after how long.
 * The request's life (what an attempt resets, its timer) stays in proxy.c;
 * this file only decides, from the settings and what the attempt saw.
 */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ollama-pool.h"

/* Another attempt is allowed by the settings, and can send the same
 * request (its body, if any, is still whole in memory). */
int
retry_allowed(
    const struct config *cfg, int attempts, int method, int body_replayable)
{
	return attempts <= cfg->retries &&
	    (cfg->retry_methods & ((uint64_t)1 << method)) && body_replayable;
}

/* A status the settings retry. */
/* A status that goes again: one of retry_statuses; in a fleet also the
 * ones that say "this backend, not now" (429, 502, 503, 504), which go to
 * another backend at once when one has the model. */
int
retry_status(const struct config *cfg, long status, int fleet)
{
	if (fleet && (status == 429 || (status >= 502 && status <= 504)))
		return 1;
	return status >= 0 && status < 600 && cfg->retry_statuses[status];
}

int
retry_transient(enum xfer_result r)
{
	return r == XFER_CONNECT || r == XFER_TIMEOUT || r == XFER_RESET;
}

enum retry_reason
retry_reason_of(enum xfer_result r)
{
	return r == XFER_CONNECT || r == XFER_TIMEOUT ? RETRY_CONNECT
	                                              : RETRY_RESET;
}

double
retry_backoff(const struct config *cfg, int attempts)
{
	double d = cfg->backoff_factor * ldexp(1.0, attempts - 1);

	return d < cfg->backoff_max ? d : cfg->backoff_max;
}

/* The upstream's Retry-After (seconds or an HTTP date; NULL when it sent
 * none) wins when it asks for longer than delay, within backoff_max. */
double
retry_after(const struct config *cfg, const char *value, double delay)
{
	struct tm tm;
	double ra;
	char *end;

	if (value == NULL)
		return delay;
	ra = strtod(value, &end);
	if (end == value || *end != '\0') {
		memset(&tm, 0, sizeof tm);
		end = strptime(value, "%a, %d %b %Y %H:%M:%S GMT", &tm);
		ra = end != NULL ? difftime(timegm(&tm), time(NULL)) : -1;
	}
	if (ra > delay)
		delay = ra;
	return delay < cfg->backoff_max ? delay : cfg->backoff_max;
}
