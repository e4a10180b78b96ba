/*
 * Conversation affinity: a chat's later turns should reach the member that
 * served its earlier ones, where its prompt is cached.  The key is an
 * X-Ollama-Pool-Session header when the client sends one, else, for
 * /api/chat and /v1/chat/completions, a hash of the model and the
 * conversation's opening (its system prompt and first user message),
 * which every later turn repeats.  Placement ranks the members that have
 * the model loaded by rendezvous hashing on the key (each member's score
 * is a hash of the key and the member's address), so every replica with
 * the same membership ranks them the same with no shared state; a member
 * well above the average load is passed over for the next in the key's
 * order (bounded load).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ollama-pool.h"

#define AFFINITY_HEADER "x-ollama-pool-session"
/* A member may hold this much more than the average, and a few more
 * requests, before it is passed over: consistent hashing with bounded
 * loads' 1 + epsilon, with room at light load, where each replica sees
 * only its own few requests and the average is below one. */
#define AFFINITY_LOAD_FACTOR 1.5
#define AFFINITY_LOAD_SLACK 2

static uint64_t
affinity_fnv(uint64_t h, const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
	return (h ^ 0xff) * 1099511628211ULL; /* a separator */
}

/* A message's content as text: a string, else its JSON. */
static uint64_t
affinity_content(uint64_t h, const cJSON *msg)
{
	const cJSON *c = cJSON_GetObjectItemCaseSensitive(msg, "content");
	char *text;

	if (cJSON_IsString(c))
		return affinity_fnv(h, c->valuestring, strlen(c->valuestring));
	if (c == NULL || (text = cJSON_PrintUnformatted(c)) == NULL)
		return affinity_fnv(h, "", 0);
	h = affinity_fnv(h, text, strlen(text));
	cJSON_free(text);
	return h;
}

/* The opening of a conversation: its first system and first user
 * message.  0 when it has no user message yet. */
static int
affinity_opening(const cJSON *body, const char *model, uint64_t *key)
{
	const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(body, "messages");
	const cJSON *m, *role, *sys = NULL, *user = NULL;
	uint64_t h = 1469598103934665603ULL;

	cJSON_ArrayForEach(m, msgs)
	{
		role = cJSON_GetObjectItemCaseSensitive(m, "role");
		if (!cJSON_IsString(role))
			continue;
		if (sys == NULL && strcmp(role->valuestring, "system") == 0)
			sys = m;
		if (user == NULL && strcmp(role->valuestring, "user") == 0)
			user = m;
	}
	if (user == NULL)
		return 0;
	h = affinity_fnv(h, model, strlen(model));
	h = sys != NULL ? affinity_content(h, sys) : affinity_fnv(h, "", 0);
	*key = affinity_content(h, user);
	return 1;
}

int
affinity_key(const struct http_head *head, int route, const cJSON *body,
    const char *model, uint64_t *key)
{
	const char *v;
	size_t len;

	if ((v = head_get(head, AFFINITY_HEADER, &len)) != NULL && len > 0) {
		*key = affinity_fnv(1469598103934665603ULL, v, len);
		return 1;
	}
	if ((route != ROUTE_CHAT && route != ROUTE_V1_CHAT) || model == NULL)
		return 0;
	return affinity_opening(body, model, key);
}

/* splitmix64's finaliser: a well mixed score from key and member. */
uint64_t
affinity_score(uint64_t key, uint64_t member)
{
	uint64_t z = key ^ (member * 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* The most a member may hold and still be chosen for a key: the
 * average with this request counted, times 1 + epsilon, rounded up, and
 * the slack. */
int
affinity_bound(int total_in_flight, int members)
{
	double avg = (double)(total_in_flight + 1) / (members ? members : 1);
	double max = avg * AFFINITY_LOAD_FACTOR;
	int bound = (int)max;

	return (bound < max ? bound + 1 : bound) + AFFINITY_LOAD_SLACK;
}
