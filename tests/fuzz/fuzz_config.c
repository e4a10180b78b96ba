/*
 * libFuzzer target: the configuration parser, fed whole files from memory.
 * A file either loads or is refused with a message that names the problem.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ollama-pool.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *cfg;
	char err[1024];
	FILE *fp;

	if (size == 0)
		return 0;
	log_init(-5);
	fp = fmemopen((void *)data, size, "r");
	if (fp == NULL)
		return 0;
	cfg = config_new_defaults();
	err[0] = '\0';
	if (config_load_fp(cfg, fp, "fuzz.conf", NULL, err, sizeof err) != 0 &&
	    strncmp(err, "fuzz.conf", 9) != 0)
		abort(); /* a refusal must say where */
	fclose(fp);
	config_free(cfg);
	return 0;
}
