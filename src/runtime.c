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
