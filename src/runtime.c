/*
 * The one piece of global mutable state, and the clock everything shares.
 */
#include "config.h"

#include <time.h>

#include "ollama-pool.h"

struct runtime rt;

uint64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* A duration in seconds as libevent's timers take it. */
struct timeval
runtime_timeval(double seconds)
{
	struct timeval tv;

	tv.tv_sec = (time_t)seconds;
	tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
	return tv;
}
