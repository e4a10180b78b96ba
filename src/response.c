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

/* Reason phrases: RFC 9110's, and the WebDAV and RFC 6585 ones Ollama's
 * Go net/http may send.  "" for any other status. */
static const struct {
	int status;
	const char *reason;
} response_reasons[] = {
    {100, "Continue"},
    {101, "Switching Protocols"},
    {102, "Processing"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {203, "Non-Authoritative Information"},
    {204, "No Content"},
    {205, "Reset Content"},
    {206, "Partial Content"},
    {207, "Multi-Status"},
    {208, "Already Reported"},
    {226, "IM Used"},
    {300, "Multiple Choices"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {305, "Use Proxy"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {402, "Payment Required"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {407, "Proxy Authentication Required"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Payload Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {416, "Range Not Satisfiable"},
    {417, "Expectation Failed"},
    {421, "Misdirected Request"},
    {422, "Unprocessable Entity"},
    {423, "Locked"},
    {424, "Failed Dependency"},
    {426, "Upgrade Required"},
    {428, "Precondition Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {451, "Unavailable For Legal Reasons"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
    {506, "Variant Also Negotiates"},
    {507, "Insufficient Storage"},
    {508, "Loop Detected"},
    {510, "Not Extended"},
    {511, "Network Authentication Required"},
};

const char *
response_reason(int status)
{
	size_t i;

	for (i = 0; i < sizeof response_reasons / sizeof response_reasons[0];
	     i++)
		if (response_reasons[i].status == status)
			return response_reasons[i].reason;
	return "";
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
