/*
 * What one backend has and runs of each model: listed in its /api/tags,
 * loaded (its /api/ps), the slots its requests hold, and what placement
 * learned (load time, a request's time).  Entries are made on first
 * mention and live as long as their backend: a slot's holder keeps a
 * pointer to its model, so none is freed under it.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "ollama-pool.h"

/* Beyond this many models a backend's further names are not tracked
 * (requests for them still go, without per-model slots). */
#define BACKEND_MODELS_MAX 4096

/* Ollama's names: "llama3" is "llama3:latest".  Compares a and b so. */
static int
backend_model_same(const char *a, const char *b)
{
	size_t la = strcspn(a, ":"), lb = strcspn(b, ":");
	const char *ta = a[la] ? a + la + 1 : "latest";
	const char *tb = b[lb] ? b + lb + 1 : "latest";

	return la == lb && memcmp(a, b, la) == 0 && strcmp(ta, tb) == 0;
}

struct backend_model *
backend_model_find(const struct backend *b, const char *name)
{
	struct backend_model *m;

	if (name == NULL)
		return NULL;
	TAILQ_FOREACH(m, &b->models, entry)
	if (backend_model_same(m->name, name))
		return m;
	return NULL;
}

struct backend_model *
backend_model(struct backend *b, const char *name)
{
	struct backend_model *m = backend_model_find(b, name);

	if (m != NULL || name == NULL || strlen(name) >= sizeof m->name ||
	    b->nmodels >= BACKEND_MODELS_MAX)
		return m;
	m = xcalloc(1, sizeof *m);
	snprintf(m->name, sizeof m->name, "%s", name);
	m->load_s = -1;
	m->busy_s = -1;
	TAILQ_INSERT_TAIL(&b->models, m, entry);
	b->nmodels++;
	return m;
}

/* Is a slot free for this model (NULL: for a request without one)? */
int
backend_slot_free(const struct backend *b, const struct backend_model *m)
{
	if (b->in_flight >= b->conf.pool_maxsize)
		return 0;
	return m == NULL || m->in_flight < b->conf.num_parallel;
}

void
backend_slot_take(struct backend *b, struct backend_model *m)
{
	b->in_flight++;
	if (m != NULL)
		m->in_flight++;
}

/* A slot is free again: whoever waits is told, through the hook the
 * backend was made with (the fleet's queue). */
void
backend_slot_release(struct backend *b, struct backend_model *m)
{
	b->in_flight--;
	if (m != NULL)
		m->in_flight--;
	if (b->hooks.slot_freed != NULL)
		b->hooks.slot_freed(b->hooks.arg);
}
