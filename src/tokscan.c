/*
 * Reads the token counts of an answer as it streams by, without buffering
 * any of it: a small JSON state machine (depth, in string, escape, the
 * current key, the literal being read) fed in chunks split anywhere.
 *
 * Only top-level keys of the answer's final object count; nested objects,
 * arrays and string contents never match, so a tool call's arguments or a
 * message that quotes "eval_count" cannot book anything.
 *
 * - native (/api/generate, /api/chat): NDJSON, one object per line; the
 *   final one has "done": true, prompt_eval_count and eval_count.
 * - embed (/api/embed): one object whose prompt_eval_count is final.
 * - openai (/v1/...): a JSON document, or SSE ("data: {json}" lines, blank
 *   lines between events, "data: [DONE]", other fields and comments
 *   skipped); the object with a top-level "usage" object, whose
 *   prompt_tokens and completion_tokens count.
 *
 * The last final object wins; the model is the top-level "model" of the
 * first (or, when that has none, of the object before it).
 */
#include "config.h"

#include <string.h>

#include "ollama-pool.h"

enum tokscan_state {
	TS_LINE, /* between objects: a line starts */
	TS_SKIP, /* a line that is no object, to its end */
	TS_FIELD, /* an SSE field name, "data:" matched up to pos */
	TS_DATA, /* after "data:", before its value */
	TS_JSON, /* inside an object, between tokens */
	TS_STR, /* in a string */
	TS_ESC, /* after a backslash in a string */
	TS_HEX, /* in the digits of a \u escape */
	TS_LITERAL, /* a number, true, false or null that we want */
};

enum tokscan_sink { SINK_NONE, SINK_KEY, SINK_MODEL };

enum tokscan_key {
	K_NONE,
	K_MODEL,
	K_DONE,
	K_PROMPT_EVAL,
	K_EVAL,
	K_USAGE,
	K_PROMPT_TOKENS,
	K_COMPLETION_TOKENS,
	K_LOAD_DURATION,
};

/* Where a key counts: at the top level in a mode, or inside usage. */
#define TK_TOP(m) (1u << (m))
#define TK_USAGE (1u << 7)

static const struct {
	const char *name;
	uint8_t len, key, where;
} tokscan_keys[] = {
    {"model", 5, K_MODEL,
        TK_TOP(TOKSCAN_NATIVE) | TK_TOP(TOKSCAN_EMBED) |
            TK_TOP(TOKSCAN_OPENAI)},
    {"done", 4, K_DONE, TK_TOP(TOKSCAN_NATIVE)},
    {"prompt_eval_count", 17, K_PROMPT_EVAL,
        TK_TOP(TOKSCAN_NATIVE) | TK_TOP(TOKSCAN_EMBED)},
    {"eval_count", 10, K_EVAL, TK_TOP(TOKSCAN_NATIVE)},
    {"usage", 5, K_USAGE, TK_TOP(TOKSCAN_OPENAI)},
    {"prompt_tokens", 13, K_PROMPT_TOKENS, TK_USAGE},
    {"completion_tokens", 17, K_COMPLETION_TOKENS, TK_USAGE},
    {"load_duration", 13, K_LOAD_DURATION,
        TK_TOP(TOKSCAN_NATIVE) | TK_TOP(TOKSCAN_EMBED)},
};

static const char TOKSCAN_DATA[] = "data:";

void
tokscan_init(struct tokscan *t, enum tokscan_mode mode)
{
	memset(t, 0, sizeof *t);
	t->mode = mode;
	t->state = TS_LINE;
}

static int
tokscan_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The object whose keys we read: the top level, or top-level usage. */
static int
tokscan_top(const struct tokscan *t)
{
	return t->depth == 1 || (t->depth == 2 && t->in_usage);
}

static void
tokscan_object_begin(struct tokscan *t, int sse)
{
	t->state = TS_JSON;
	t->depth = 1;
	t->sse = sse;
	t->expect_key = 1;
	t->in_usage = 0;
	t->key = K_NONE;
	t->obj_done = t->obj_prompt = t->obj_usage = 0;
	t->obj_prompt_n = t->obj_completion_n = t->obj_load_ns = 0;
}

static void
tokscan_object_end(struct tokscan *t)
{
	int final;

	switch (t->mode) {
	case TOKSCAN_NATIVE:
		final = t->obj_done;
		break;
	case TOKSCAN_EMBED:
		final = t->obj_prompt;
		break;
	default:
		final = t->obj_usage;
		break;
	}
	if (final) {
		t->prompt = t->obj_prompt_n;
		t->completion = t->obj_completion_n;
		t->load_ns = t->obj_load_ns;
		t->have = 1;
	}
	t->depth = 0;
	t->state = TS_LINE;
}

/* Which wanted key the string just read is, where it was read. */
static uint8_t
tokscan_key_id(const struct tokscan *t)
{
	unsigned where = t->in_usage ? TK_USAGE : TK_TOP(t->mode);
	size_t i;

	for (i = 0; i < sizeof tokscan_keys / sizeof tokscan_keys[0]; i++)
		if ((tokscan_keys[i].where & where) &&
		    tokscan_keys[i].len == t->key_len &&
		    memcmp(tokscan_keys[i].name, t->key_buf, t->key_len) == 0)
			return tokscan_keys[i].key;
	return K_NONE;
}

/* A model cut at the buffer's end loses the UTF-8 sequence it split. */
static void
tokscan_model_cut(struct tokscan *t)
{
	size_t len = t->model_len, start = len, need;
	unsigned char c;

	t->model_full = 1;
	while (start > 0 && len - start < 4 &&
	    ((unsigned char)t->model[start - 1] & 0xc0) == 0x80)
		start--;
	if (start == 0 || (c = (unsigned char)t->model[start - 1]) < 0xc0)
		return;
	need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
	if (len - (start - 1) < need) {
		t->model_len = (uint16_t)(start - 1);
		t->model[t->model_len] = '\0';
	}
}

/* Decoded string bytes, into the key or the model. */
static void
tokscan_append(struct tokscan *t, const char *s, size_t n)
{
	if (t->sink == SINK_KEY) {
		if (t->key_len + n <= sizeof t->key_buf) {
			memcpy(t->key_buf + t->key_len, s, n);
			t->key_len += n;
		} else
			t->key_len = UINT8_MAX;
	} else if (t->sink == SINK_MODEL && !t->model_full) {
		if (t->model_len + n < sizeof t->model) {
			memcpy(t->model + t->model_len, s, n);
			t->model_len += n;
			t->model[t->model_len] = '\0';
		} else
			tokscan_model_cut(t);
	}
}

static void
tokscan_append_cp(struct tokscan *t, uint32_t cp)
{
	char b[4];

	if (cp == 0)
		return; /* \u0000 has no place in a C string */
	if (cp < 0x80) {
		b[0] = (char)cp;
		tokscan_append(t, b, 1);
	} else if (cp < 0x800) {
		b[0] = (char)(0xc0 | cp >> 6);
		b[1] = (char)(0x80 | (cp & 0x3f));
		tokscan_append(t, b, 2);
	} else if (cp < 0x10000) {
		b[0] = (char)(0xe0 | cp >> 12);
		b[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		b[2] = (char)(0x80 | (cp & 0x3f));
		tokscan_append(t, b, 3);
	} else {
		b[0] = (char)(0xf0 | cp >> 18);
		b[1] = (char)(0x80 | (cp >> 12 & 0x3f));
		b[2] = (char)(0x80 | (cp >> 6 & 0x3f));
		b[3] = (char)(0x80 | (cp & 0x3f));
		tokscan_append(t, b, 4);
	}
}

/* A high surrogate not followed by its low half stands for U+FFFD. */
static void
tokscan_flush_surrogate(struct tokscan *t)
{
	if (t->uhi != 0) {
		t->uhi = 0;
		tokscan_append_cp(t, 0xfffd);
	}
}

static void
tokscan_string_begin(struct tokscan *t)
{
	t->state = TS_STR;
	t->sink = SINK_NONE;
	t->uhi = 0;
	if (!tokscan_top(t))
		return;
	if (t->expect_key) {
		t->sink = SINK_KEY;
		t->key_len = 0;
	} else if (t->key == K_MODEL && !t->have) {
		t->sink = SINK_MODEL;
		t->model_len = 0;
		t->model_full = 0;
		t->model[0] = '\0';
	}
}

static void
tokscan_string_end(struct tokscan *t)
{
	tokscan_flush_surrogate(t);
	t->state = TS_JSON;
	if (t->sink == SINK_KEY)
		t->key = tokscan_key_id(t);
	else if (tokscan_top(t))
		t->key = K_NONE; /* a string value: not one we count */
	t->sink = SINK_NONE;
}

static int
tokscan_string(struct tokscan *t, char c)
{
	if (c == '"')
		tokscan_string_end(t);
	else if (c == '\\')
		t->state = TS_ESC;
	else {
		tokscan_flush_surrogate(t);
		tokscan_append(t, &c, 1);
	}
	return 1;
}

static int
tokscan_escape(struct tokscan *t, char c)
{
	static const char from[] = "bfnrt", to[] = "\b\f\n\r\t";
	const char *e;

	t->state = TS_STR;
	if (t->sink == SINK_NONE)
		return 1; /* skipped text: \uXXXX digits are plain bytes */
	if (c == 'u') {
		t->state = TS_HEX;
		t->pos = 0;
		t->u = 0;
		return 1;
	}
	tokscan_flush_surrogate(t);
	if (c != '\0' && (e = strchr(from, c)) != NULL)
		c = to[e - from];
	tokscan_append(t, &c, 1);
	return 1;
}

static int
tokscan_hex(struct tokscan *t, char c)
{
	uint32_t cp;
	int d;

	if (c >= '0' && c <= '9')
		d = c - '0';
	else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
		d = (c | 0x20) - 'a' + 10;
	else {
		/* A broken escape: U+FFFD, and the byte is text again. */
		tokscan_flush_surrogate(t);
		tokscan_append_cp(t, 0xfffd);
		t->state = TS_STR;
		return 0;
	}
	t->u = (uint16_t)(t->u << 4 | d);
	if (++t->pos < 4)
		return 1;
	t->state = TS_STR;
	cp = t->u;
	if (cp >= 0xd800 && cp < 0xdc00) {
		tokscan_flush_surrogate(t);
		t->uhi = (uint16_t)cp;
		return 1;
	}
	if (cp >= 0xdc00 && cp < 0xe000) {
		if (t->uhi != 0)
			cp = 0x10000 + ((uint32_t)(t->uhi - 0xd800) << 10) +
			    (cp - 0xdc00);
		else
			cp = 0xfffd;
		t->uhi = 0;
	}
	tokscan_flush_surrogate(t);
	tokscan_append_cp(t, cp);
	return 1;
}

static void
tokscan_literal_end(struct tokscan *t)
{
	int num = t->value_num && t->value_len > 0;

	switch (t->key) {
	case K_DONE:
		t->obj_done = t->value_true && t->value_len == 4;
		break;
	case K_PROMPT_EVAL:
	case K_PROMPT_TOKENS:
		if (num) {
			t->obj_prompt_n = t->value;
			t->obj_prompt = 1;
		}
		break;
	case K_EVAL:
	case K_COMPLETION_TOKENS:
		if (num)
			t->obj_completion_n = t->value;
		break;
	case K_LOAD_DURATION:
		if (num)
			t->obj_load_ns = t->value;
		break;
	default:
		break;
	}
	t->key = K_NONE;
	t->state = TS_JSON;
}

/* Counts are non-negative integers; anything else is no count. */
static int
tokscan_literal(struct tokscan *t, char c)
{
	unsigned d;

	if (!((c >= '0' && c <= '9') ||
	        ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || c == '-' ||
	        c == '+' || c == '.')) {
		tokscan_literal_end(t);
		return 0;
	}
	d = (unsigned)(c - '0');
	if (d > 9 || t->value > (UINT64_MAX - d) / 10)
		t->value_num = 0;
	else if (t->value_num)
		t->value = t->value * 10 + d;
	if (t->value_len >= 4 || c != "true"[t->value_len])
		t->value_true = 0;
	if (t->value_len < UINT8_MAX)
		t->value_len++;
	return 1;
}

static void
tokscan_close(struct tokscan *t)
{
	if (--t->depth == 0)
		tokscan_object_end(t);
	else if (t->depth == 1 && t->in_usage) {
		t->in_usage = 0;
		t->key = K_NONE;
	}
}

static int
tokscan_json(struct tokscan *t, char c)
{
	switch (c) {
	case ' ':
	case '\t':
	case '\r':
		return 1;
	case '\n':
		/* Inside an SSE event a line break ends its data line. */
		if (t->sse) {
			t->state = TS_FIELD;
			t->pos = 0;
		}
		return 1;
	case '"':
		tokscan_string_begin(t);
		return 1;
	case '{':
		if (t->depth == 1 && t->key == K_USAGE && !t->expect_key) {
			t->in_usage = t->obj_usage = 1;
			t->expect_key = 1;
			t->key = K_NONE;
		}
		t->depth++;
		return 1;
	case '[':
		t->depth++;
		return 1;
	case '}':
	case ']':
		tokscan_close(t);
		return 1;
	case ':':
		if (tokscan_top(t))
			t->expect_key = 0;
		return 1;
	case ',':
		if (tokscan_top(t)) {
			t->expect_key = 1;
			t->key = K_NONE;
		}
		return 1;
	default:
		break;
	}
	if (tokscan_top(t) && !t->expect_key && t->key != K_NONE) {
		t->state = TS_LITERAL;
		t->value = 0;
		t->value_len = 0;
		t->value_num = t->value_true = 1;
		return 0;
	}
	return 1; /* inside a literal we do not want */
}

static void
tokscan_line_end(struct tokscan *t)
{
	if (t->depth > 0) {
		t->state = TS_FIELD; /* the event's next line */
		t->pos = 0;
	} else
		t->state = TS_LINE;
}

/* Between objects, and SSE line starts inside one. */
static int
tokscan_frame(struct tokscan *t, char c)
{
	switch (t->state) {
	case TS_LINE:
		if (c == '{')
			tokscan_object_begin(t, 0);
		else if (c == 'd' && t->mode == TOKSCAN_OPENAI) {
			t->state = TS_FIELD;
			t->pos = 1;
		} else if (!tokscan_space(c))
			t->state = TS_SKIP;
		return 1;
	case TS_SKIP:
		if (c == '\n')
			tokscan_line_end(t);
		return 1;
	case TS_FIELD:
		if (c == TOKSCAN_DATA[t->pos]) {
			if (++t->pos == sizeof TOKSCAN_DATA - 1)
				t->state = TS_DATA;
		} else if (c == '\r' && t->pos == 0)
			;
		else if (c == '\n' && t->pos == 0) {
			/* A blank line ends an event cut inside its object. */
			t->depth = 0;
			t->state = TS_LINE;
		} else if (c == '\n')
			tokscan_line_end(t);
		else
			t->state = TS_SKIP;
		return 1;
	default: /* TS_DATA */
		if (c == ' ' || c == '\t' || c == '\r')
			return 1;
		if (t->depth > 0) {
			t->state = TS_JSON;
			return 0;
		}
		if (c == '{')
			tokscan_object_begin(t, 1);
		else
			t->state = c == '\n' ? TS_LINE : TS_SKIP; /* [DONE] */
		return 1;
	}
}

/* One byte; 0 when the state changed and the byte is to be read again. */
static int
tokscan_byte(struct tokscan *t, char c)
{
	switch (t->state) {
	case TS_JSON:
		return tokscan_json(t, c);
	case TS_STR:
		return tokscan_string(t, c);
	case TS_ESC:
		return tokscan_escape(t, c);
	case TS_HEX:
		return tokscan_hex(t, c);
	case TS_LITERAL:
		return tokscan_literal(t, c);
	default:
		return tokscan_frame(t, c);
	}
}

void
tokscan_feed(struct tokscan *t, const char *p, size_t len)
{
	const char *end = p + len;

	if (t->mode == TOKSCAN_OFF)
		return;
	while (p < end) {
		if (t->state == TS_STR && t->sink == SINK_NONE) {
			/* Most bytes are text we skip: on to its next quote
			 * or backslash. */
			while (p < end && *p != '"' && *p != '\\')
				p++;
			if (p == end)
				break;
		}
		if (tokscan_byte(t, *p))
			p++;
	}
}

/*
 * At the end of the answer: a literal still being read is complete, and
 * an object the answer left open counts with what it said.  Returns 1
 * when there is a final object: model, prompt and completion are its.
 */
int
tokscan_finish(struct tokscan *t)
{
	if (t->state == TS_LITERAL)
		tokscan_literal_end(t);
	if (t->depth > 0)
		tokscan_object_end(t);
	return t->have;
}

/* The answer's top-level model, once one was read whole; NULL before. */
const char *
tokscan_model(const struct tokscan *t)
{
	if (t->model_len == 0 || t->sink == SINK_MODEL)
		return NULL; /* none, or still being read */
	return t->model;
}
