/*
 * libFuzzer target: the configuration parser, fed whole files from memory.
 * A file either loads or is refused with messages that each say where.
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
	struct config_errors errs;
	struct config *cfg;
	FILE *fp;
	int i;

	if (size == 0)
		return 0;
	log_init(-5);
	fp = fmemopen((void *)data, size, "r");
	if (fp == NULL)
		return 0;
	cfg = config_new_defaults();
	if (config_load_fp(cfg, fp, "fuzz.conf", NULL, &errs) != 0 &&
	    errs.n == 0)
		abort(); /* a refusal says why */
	for (i = 0; i < errs.n; i++)
		if (strncmp(errs.line[i], "fuzz.conf", 9) != 0)
			abort(); /* and where */
	config_errors_free(&errs);
	fclose(fp);
	config_free(cfg);
	return 0;
}
