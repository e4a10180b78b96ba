/*
 * Responses the proxy writes itself.  Errors take Ollama's own shape,
 * {"error":"..."}, or OpenAI's on /v1 paths, so each client library shows
 * a readable message instead of a parse failure.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>

#include "ollama-pool.h"

const char *
response_reason(int status)
{
	const char *s = http_status_str((enum http_status)status);

	if (s == NULL || strcmp(s, "<unknown>") == 0)
		return "";
	return s;
}

int
response_status_has_body(int status)
{
	return !(status < 200 || status == 204 || status == 304);
}

/* A complete response with a Content-Length body. */
size_t
response_write(struct evbuffer *out, const struct response_opts *o,
    const char *body, size_t len)
{
	evbuffer_add_printf(
	    out, "HTTP/1.1 %d %s\r\n", o->status, response_reason(o->status));
	if (o->content_type != NULL)
		evbuffer_add_printf(
		    out, "Content-Type: %s\r\n", o->content_type);
	if (o->retry_after > 0)
		evbuffer_add_printf(out, "Retry-After: %d\r\n", o->retry_after);
	if (o->allow != NULL)
		evbuffer_add_printf(out, "Allow: %s\r\n", o->allow);
	if (o->request_id != NULL)
		evbuffer_add_printf(out, "X-Request-Id: %s\r\n", o->request_id);
	if (o->status == 401)
		evbuffer_add_printf(
		    out, "WWW-Authenticate: Bearer realm=\"" OP_NAME "\"\r\n");
	if (!o->keep_alive)
		evbuffer_add(out, "Connection: close\r\n", 19);
	else if (o->http10)
		evbuffer_add(out, "Connection: keep-alive\r\n", 24);
	evbuffer_add_printf(out, "Content-Length: %zu\r\n\r\n", len);
	if (o->head_only)
		return 0;
	evbuffer_add(out, body, len);
	return len;
}

size_t
response_error(
    struct evbuffer *out, const struct response_opts *o, const char *message)
{
	cJSON *root, *err;
	char *body, *full;
	size_t sent;

	xasprintf(&full, OP_NAME ": %s", message);
	root = cJSON_CreateObject();
	if (o->openai) {
		err = cJSON_AddObjectToObject(root, "error");
		cJSON_AddStringToObject(err, "message", full);
		cJSON_AddStringToObject(err, "type",
		    o->status < 500 ? "invalid_request_error" : "api_error");
		cJSON_AddNullToObject(err, "param");
		cJSON_AddNullToObject(err, "code");
	} else
		cJSON_AddStringToObject(root, "error", full);
	body = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	free(full);
	if (body == NULL)
		abort();
	struct response_opts copy = *o;
	copy.content_type = "application/json; charset=utf-8";
	sent = response_write(out, &copy, body, strlen(body));
	cJSON_free(body);
	return sent;
}
