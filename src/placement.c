/*
 * Which backend serves a request for a model.  Candidates are the healthy
 * backends whose allow-list admits it and whose /api/tags lists it; when
 * none lists it, every healthy backend that admits it (Ollama then
 * answers 404, as it would alone).  Among them:
 *
 * 1. one that has the model loaded and a free slot for it;
 * 2. when none has it loaded, the least loaded one with a free slot (it
 *    loads the model);
 * 3. when every backend with it loaded is full, one without it only if
 *    that one is idle and the wait for a slot is expected to be longer
 *    than the model's load time there; otherwise the request waits.
 *
 * Among equals the fewest requests in flight relative to weight, ties
 * broken round-robin, so an idle fleet still shares sequential requests.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "ollama-pool.h"

/* A load time never observed, anywhere: what a mid-sized model takes
 * from disk to GPU. */
#define PLACE_LOAD_GUESS_S 10.0
/* A request's time never observed: a short chat. */
#define PLACE_BUSY_GUESS_S 5.0
/* Smoothing of a request's time. */
#define PLACE_EWMA 0.3

static int
placement_excluded(const struct place_want *w, const struct backend *b)
{
	int i;

	for (i = 0; i < w->nexclude; i++)
		if (w->exclude[i] == b)
			return 1;
	return 0;
}

static int
placement_lists(const struct backend *b, const char *model)
{
	const struct backend_model *m = backend_model_find(b, model);

	return m != NULL && m->listed;
}

static int
placement_loaded(const struct backend *b, const char *model)
{
	const struct backend_model *m = backend_model_find(b, model);

	return m != NULL && m->loaded;
}

/* Is a less loaded than c, relative to their weights? */
static int
placement_lighter(const struct backend *a, const struct backend *c)
{
	return (long)a->in_flight * c->conf.weight <
	    (long)c->in_flight * a->conf.weight;
}

/* The candidates' common filter: healthy, admits, not excluded, and
 * listing the model when any candidate lists it (or when asked to). */
static int
placement_candidate(
    const struct place_want *w, const struct backend *b, int listed_only)
{
	if (!backend_usable(b) || !backend_admits(b, w->model) ||
	    placement_excluded(w, b))
		return 0;
	return !listed_only || placement_lists(b, w->model);
}

/* Of the candidates with a free slot for the model (loaded ones only,
 * or any), the lightest, ties round-robin from where the last choice
 * left off. */
static struct backend *
placement_pick(
    const struct place_want *w, int listed_only, int loaded_only, int idle_only)
{
	struct backend *b, *best = NULL;
	unsigned i = 0, n = 0, start;

	TAILQ_FOREACH(b, &rt.backends, entry)
	n++;
	start = n ? rt.place_rr % n : 0;
	/* Two passes: from start to the end, then from the head. */
	for (int pass = 0; pass < 2; pass++) {
		i = 0;
		TAILQ_FOREACH(b, &rt.backends, entry)
		{
			int mine = pass == 0 ? i >= start : i < start;

			i++;
			if (!mine || !placement_candidate(w, b, listed_only))
				continue;
			if (loaded_only && !placement_loaded(b, w->model))
				continue;
			if (idle_only && b->in_flight > 0)
				continue;
			if (!backend_slot_free(
			        b, backend_model_find(b, w->model)))
				continue;
			if (best == NULL || placement_lighter(b, best))
				best = b;
		}
	}
	return best;
}

/* How long a model takes to load on b: as seen there, else elsewhere,
 * else a guess. */
static double
placement_load_time(const struct backend *b, const char *model)
{
	const struct backend_model *m = backend_model_find(b, model);
	const struct backend *o;

	if (m != NULL && m->load_s >= 0)
		return m->load_s;
	TAILQ_FOREACH(o, &rt.backends, entry)
	{
		m = backend_model_find(o, model);
		if (m != NULL && m->load_s >= 0)
			return m->load_s;
	}
	return PLACE_LOAD_GUESS_S;
}

/* The expected wait for a slot of the model on the backends that have
 * it loaded: a request's time, times the rounds of waiters ahead. */
static double
placement_expected_wait(const struct place_want *w, int listed_only)
{
	const struct backend *b;
	const struct backend_model *m;
	double busy = -1;
	int slots = 0;

	TAILQ_FOREACH(b, &rt.backends, entry)
	{
		if (!placement_candidate(w, b, listed_only) ||
		    !placement_loaded(b, w->model))
			continue;
		m = backend_model_find(b, w->model);
		slots += b->conf.num_parallel;
		if (m->busy_s >= 0 && (busy < 0 || m->busy_s < busy))
			busy = m->busy_s;
	}
	if (busy < 0)
		busy = PLACE_BUSY_GUESS_S;
	if (slots == 0)
		return 0;
	return busy * (1.0 + (double)queue_waiting_model(w->model) / slots);
}

static enum place_verdict
placement_found(struct backend *b, const struct place_want *w,
    struct backend **out, struct backend_model **mout)
{
	*out = b;
	*mout = backend_model(b, w->model);
	rt.place_rr++;
	return PLACE_GO;
}

/*
 * A conversation's member among those with the model loaded: the first
 * in the key's rendezvous order that has a free slot and is not well
 * above the average load of them (affinity.c).  NULL: none such.
 */
static struct backend *
placement_affine(const struct place_want *w, int listed_only)
{
	struct backend *b, *best = NULL;
	uint64_t score, best_score = 0;
	int n = 0, total = 0, bound;

	TAILQ_FOREACH(b, &rt.backends, entry)
	if (placement_candidate(w, b, listed_only) &&
	    placement_loaded(b, w->model)) {
		n++;
		total += b->in_flight;
	}
	bound = affinity_bound(total, n);
	TAILQ_FOREACH(b, &rt.backends, entry)
	{
		if (!placement_candidate(w, b, listed_only) ||
		    !placement_loaded(b, w->model) || b->in_flight >= bound ||
		    !backend_slot_free(b, backend_model_find(b, w->model)))
			continue;
		score = affinity_score(w->affinity, b->member_hash);
		if (best == NULL || score > best_score) {
			best = b;
			best_score = score;
		}
	}
	return best;
}

enum place_verdict
placement_choose(const struct place_want *w, struct backend **out,
    struct backend_model **mout)
{
	struct backend *b;
	int listed = 0, any = 0, loaded = 0;

	TAILQ_FOREACH(b, &rt.backends, entry)
	{
		if (!placement_candidate(w, b, 0))
			continue;
		any = 1;
		if (placement_lists(b, w->model))
			listed = 1;
		if (placement_loaded(b, w->model))
			loaded = 1;
	}
	if (!any || (w->need_listed && !listed))
		return PLACE_NONE;
	if (w->model == NULL) {
		b = placement_pick(w, 0, 0, 0);
		return b != NULL ? placement_found(b, w, out, mout)
		                 : PLACE_WAIT;
	}
	if (loaded && w->has_affinity &&
	    (b = placement_affine(w, listed)) != NULL)
		return placement_found(b, w, out, mout);
	if (loaded && (b = placement_pick(w, listed, 1, 0)) != NULL)
		return placement_found(b, w, out, mout);
	if (!loaded && (b = placement_pick(w, listed, 0, 0)) != NULL)
		return placement_found(b, w, out, mout);
	/* Every backend with it loaded is full: load it on an idle one only
	 * when waiting would take longer than loading. */
	if (loaded && (b = placement_pick(w, listed, 0, 1)) != NULL &&
	    placement_expected_wait(w, listed) >
	        placement_load_time(b, w->model))
		return placement_found(b, w, out, mout);
	return PLACE_WAIT;
}

/*
 * A request that holds no slot (no model, /api/show, the fleet-wide
 * endpoints' kin): the next healthy backend round-robin, among those that
 * list its model when it names one and any does, never one it failed on;
 * NULL when there is none.
 */
struct backend *
placement_any(const struct place_want *w)
{
	struct backend *b;
	unsigned i = 0, n = 0, pick;
	int listed = 0;

	TAILQ_FOREACH(b, &rt.backends, entry)
	if (placement_candidate(w, b, 0) && placement_lists(b, w->model))
		listed = 1;
	TAILQ_FOREACH(b, &rt.backends, entry)
	if (placement_candidate(w, b, listed))
		n++;
	if (n == 0)
		return NULL;
	pick = rt.place_rr++ % n;
	TAILQ_FOREACH(b, &rt.backends, entry)
	if (placement_candidate(w, b, listed) && i++ == pick)
		return b;
	return NULL;
}

/* What a finished request taught: the model is loaded there now, how
 * long it took to load (when it loaded), and a request's time. */
void
placement_learn(
    struct backend *b, struct backend_model *m, double load_s, double busy_s)
{
	if (m == NULL)
		return;
	m->loaded = 1;
	m->listed = 1;
	/* Ollama reports a few milliseconds for a model already loaded. */
	if (load_s > 0.5)
		m->load_s = load_s;
	if (busy_s >= 0)
		m->busy_s = m->busy_s < 0
		    ? busy_s
		    : m->busy_s + PLACE_EWMA * (busy_s - m->busy_s);
}
