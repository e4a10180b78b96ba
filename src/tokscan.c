/*
 * Reads Ollama's token counts as the stream goes by.  The last chunk of a
 * generate or chat ("done":true) carries prompt_eval_count and eval_count,
 * often after a large "context" array; rather than buffer any of it, a few
 * byte matchers watch for the keys and take the numbers that follow.
 */
#include "config.h"

#include <string.h>

#include "ollama-pool.h"

static const char TOKSCAN_MODEL[] = "\"model\":\"";
static const char TOKSCAN_PROMPT[] = "\"prompt_eval_count\":";
static const char TOKSCAN_EVAL[] = "\"eval_count\":";
static const char TOKSCAN_DONE[] = "\"done\":true";

/* One byte of a plain matcher; the keys' only repeated byte is the
 * leading quote, so falling back to 0 or 1 is exact. */
static int
tokscan_step(uint8_t *state, const char *pat, size_t plen, char c)
{
	if (c == pat[*state]) {
		if (++*state == plen) {
			*state = 0;
			return 1;
		}
		return 0;
	}
	*state = c == pat[0];
	return 0;
}

void
tokscan_feed(struct tokscan *t, const char *p, size_t len)
{
	size_t i;
	char c;

	for (i = 0; i < len; i++) {
		c = p[i];
		switch (t->capture) {
		case TOKSCAN_CAP_MODEL:
			if (c == '"' || t->model_len == sizeof t->model - 1) {
				t->model[t->model_len] = '\0';
				t->capture = TOKSCAN_CAP_NONE;
			} else
				t->model[t->model_len++] = c;
			continue;
		case TOKSCAN_CAP_PROMPT:
		case TOKSCAN_CAP_EVAL:
			if (c >= '0' && c <= '9') {
				t->number = t->number * 10 + (c - '0');
				t->digits++;
				continue;
			}
			if (c == ' ' && t->digits == 0)
				continue;
			if (t->capture == TOKSCAN_CAP_PROMPT)
				t->prompt = t->number;
			else
				t->eval = t->number;
			t->capture = TOKSCAN_CAP_NONE;
			break;
		default:
			break;
		}
		if (tokscan_step(&t->m_model, TOKSCAN_MODEL,
		        sizeof TOKSCAN_MODEL - 1, c) &&
		    t->model_len == 0)
			t->capture = TOKSCAN_CAP_MODEL;
		if (tokscan_step(&t->m_prompt, TOKSCAN_PROMPT,
		        sizeof TOKSCAN_PROMPT - 1, c)) {
			t->capture = TOKSCAN_CAP_PROMPT;
			t->number = t->digits = 0;
		}
		if (tokscan_step(
		        &t->m_eval, TOKSCAN_EVAL, sizeof TOKSCAN_EVAL - 1, c)) {
			t->capture = TOKSCAN_CAP_EVAL;
			t->number = t->digits = 0;
		}
		if (tokscan_step(
		        &t->m_done, TOKSCAN_DONE, sizeof TOKSCAN_DONE - 1, c))
			t->done = 1;
	}
}

/* At the end of the answer: a number still being read is complete. */
void
tokscan_finish(struct tokscan *t)
{
	if (t->capture == TOKSCAN_CAP_PROMPT)
		t->prompt = t->number;
	else if (t->capture == TOKSCAN_CAP_EVAL)
		t->eval = t->number;
	t->capture = TOKSCAN_CAP_NONE;
	t->model[t->model_len] = '\0';
}
