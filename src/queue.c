/*
 * The fleet's one queue: requests waiting for a slot.  Fair across
 * clients: the next free slot goes round-robin among the clients that
 * wait, FIFO within one client, so a batch job with 500 queued requests
 * does not starve a person chatting.  A client is its token when
 * client_tokens is set, else its address (proxy.c names it).
 *
 * When a slot frees (a backend's hook) or a backend comes back, the
 * queue is kicked: it asks placement for each client's oldest request
 * that can go now, in turn, until none can.  A request no backend can
 * serve any more (its candidates all ejected) is dispatched with none,
 * for its owner to answer.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "ollama-pool.h"

/* Models found with no free slot in one round of a kick: their other
 * requests are not asked again in that round. */
#define QUEUE_BLOCKED_MAX 64

struct queue_client {
	char key[REQID_MAX + 1];
	TAILQ_HEAD(, queue_entry) entries;
	int n;
	TAILQ_ENTRY(queue_client) entry;
};

#define q rt.queue

static void
queue_init(void)
{
	if (!q.initialised) {
		TAILQ_INIT(&q.clients);
		q.initialised = 1;
	}
}

static struct queue_client *
queue_client_get(const char *key)
{
	struct queue_client *qc;

	TAILQ_FOREACH(qc, &q.clients, entry)
	if (strcmp(qc->key, key) == 0)
		return qc;
	qc = xcalloc(1, sizeof *qc);
	snprintf(qc->key, sizeof qc->key, "%s", key);
	TAILQ_INIT(&qc->entries);
	/* A newcomer's turn comes just before the client served last:
	 * after every client already waiting. */
	if (q.last != NULL)
		TAILQ_INSERT_BEFORE(q.last, qc, entry);
	else
		TAILQ_INSERT_TAIL(&q.clients, qc, entry);
	return qc;
}

int
queue_add(struct queue_entry *e)
{
	queue_init();
	if (q.length >= rt.cfg->queue_max)
		return -1;
	e->qc = queue_client_get(e->client);
	TAILQ_INSERT_TAIL(&e->qc->entries, e, entry);
	e->qc->n++;
	q.length++;
	return 0;
}

void
queue_remove(struct queue_entry *e)
{
	struct queue_client *qc = e->qc;

	if (qc == NULL)
		return;
	TAILQ_REMOVE(&qc->entries, e, entry);
	e->qc = NULL;
	q.length--;
	if (--qc->n == 0) {
		/* The turn stays where it was: after qc's place. */
		if (q.last == qc)
			q.last = TAILQ_PREV(qc, queue_clients, entry);
		TAILQ_REMOVE(&q.clients, qc, entry);
		free(qc);
	}
}

int
queue_length(void)
{
	return q.length;
}

static int
queue_model_same(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/* How many waiting requests pass a test. */
static int
queue_count(
    int (*match)(const struct queue_entry *, const void *), const void *arg)
{
	struct queue_client *qc;
	struct queue_entry *e;
	int n = 0;

	queue_init();
	TAILQ_FOREACH(qc, &q.clients, entry)
	TAILQ_FOREACH(e, &qc->entries, entry)
	n += match(e, arg);
	return n;
}

static int
queue_is_model(const struct queue_entry *e, const void *model)
{
	return queue_model_same(e->want.model, model);
}

static int
queue_is_for(const struct queue_entry *e, const void *b)
{
	return backend_admits(b, e->want.model);
}

int
queue_waiting_model(const char *model)
{
	return queue_count(queue_is_model, model);
}

/* How many waiting requests this backend could serve (for metrics). */
int
queue_waiting_for(const struct backend *b)
{
	return queue_count(queue_is_for, b);
}

struct queue_round {
	const char *blocked[QUEUE_BLOCKED_MAX];
	int nblocked;
};

static int
queue_blocked(const struct queue_round *r, const struct queue_entry *e)
{
	int i;

	if (e->want.nexclude > 0)
		return 0; /* its own candidates: asked every time */
	for (i = 0; i < r->nblocked; i++)
		if (queue_model_same(r->blocked[i], e->want.model))
			return 1;
	return 0;
}

/* This client's oldest request that can go now, dispatched; 1 if one
 * went. */
static int
queue_serve(struct queue_round *r, struct queue_client *qc)
{
	struct queue_entry *e;
	struct backend *b;
	struct backend_model *m;
	enum place_verdict v;

	TAILQ_FOREACH(e, &qc->entries, entry)
	{
		if (queue_blocked(r, e))
			continue;
		v = placement_choose(&e->want, &b, &m);
		if (v == PLACE_WAIT) {
			if (e->want.nexclude == 0 &&
			    r->nblocked < QUEUE_BLOCKED_MAX)
				r->blocked[r->nblocked++] = e->want.model;
			continue;
		}
		q.last = qc;
		queue_remove(e); /* may free qc, and move q.last back */
		if (v == PLACE_NONE)
			b = NULL, m = NULL;
		e->dispatch(e->arg, b, m);
		return 1;
	}
	return 0;
}

/* One round: each client in turn from the one after the last served,
 * until a full turn dispatches nothing. */
static void
queue_round(void)
{
	struct queue_round r;
	struct queue_client *qc;
	int idle = 0, n;

	memset(&r, 0, sizeof r);
	while (q.length > 0) {
		n = 0;
		TAILQ_FOREACH(qc, &q.clients, entry)
		n++;
		if (idle >= n)
			return;
		qc = q.last != NULL ? TAILQ_NEXT(q.last, entry) : NULL;
		if (qc == NULL)
			qc = TAILQ_FIRST(&q.clients);
		if (queue_serve(&r, qc))
			idle = 0;
		else {
			idle++;
			q.last = qc;
		}
	}
}

/* A slot freed, or a backend came back: let waiters go.  Re-entered by a
 * dispatch that frees a slot at once (it failed): then one more round. */
void
queue_kick(void *arg)
{
	(void)arg;
	queue_init();
	if (q.kicking) {
		q.rekick = 1;
		return;
	}
	q.kicking = 1;
	do {
		q.rekick = 0;
		queue_round();
	} while (q.rekick);
	q.kicking = 0;
}

/* At exit: the requests are gone with their clients already. */
void
queue_free_all(void)
{
	struct queue_client *qc;

	if (!q.initialised)
		return;
	while ((qc = TAILQ_FIRST(&q.clients)) != NULL) {
		while (!TAILQ_EMPTY(&qc->entries))
			queue_remove(TAILQ_FIRST(&qc->entries));
	}
	q.last = NULL;
}
