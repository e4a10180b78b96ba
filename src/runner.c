/* ---- one fault, one request: cases in tables ---------------------------- */

/* What the fake answers a status fault with, and what it is told. */
#define STATUS_FAULT(code, more)                                               \
	"{\"action\":\"status\",\"status\":" #code more "}"
/* A count of the fake's left unchecked. */
#define ANY_COUNT (-1)
#define N_CASES(a) (sizeof(a) / sizeof((a)[0]))

enum fault_shape {
	SHAPE_UPSTREAM, /* the upstream's answer, whatever it is */
	SHAPE_NATIVE, /* an error of the proxy's own, native shape */
	SHAPE_OPENAI, /* the same in OpenAI's shape */
};

enum fault_cut {
	CUT_NONE, /* read with libcurl; the exchange completes */
	CUT_CHUNKED, /* on a raw socket: a chunked stream closed early */
	CUT_SHORT, /* on a raw socket: closed short of its Content-Length */
};

/*
 * One exchange through the daemon: the fake's counters reset, a fault
 * queued, one request, and what must come of it.  Fields left zero are
 * not checked, but for want_requests: the fake's request count is checked
 * whenever there is a fake, unless it is ANY_COUNT.
 */
struct fault_case {
	const char *name; /* names the case in every failure */
	const char *conf; /* starts a daemon with it; NULL: the last one */
	const char *fault; /* a fault order for the fake */
	int keep_counts; /* no fake_reset: counts go on from the last case */

	const char *method; /* NULL: GET, or POST with a body */
	const char *path;
	const char *json; /* a JSON body */
	struct {
		size_t len; /* or an octet-stream body of this many */
		uint32_t seed; /* harness_fill() bytes, */
		int chunked; /* chunked (else with Content-Length) */
		size_t piece; /* in chunks of at most this */
	} upload;
	long timeout_ms; /* 0: the harness's default */

	long want_status;
	enum fault_shape shape;
	const char *error_type; /* SHAPE_OPENAI's error.type */
	int names_upstream; /* the proxy's error names the upstream */
	enum fault_cut cut;
	const char *want_body; /* the body, exactly */
	const char *want_contains;
	const char *want_lacks;
	size_t want_lines;
	int want_echo; /* the fake's echo of the upload: all of it */
	int same_as_direct; /* as the fake answers the request itself */
	long long want_requests;
	double min_s, max_s; /* bounds on the exchange's time (max 0: none) */
	const char *gone_phase; /* the fake sees the proxy leave in it */
	int healthy_after;
};

/* The daemon in front of a fake, or of an upstream that is not one. */
struct fault_env {
	struct harness_fake *fake; /* NULL when the upstream is not a fake */
	struct harness_daemon *daemon;
	const char *upstream; /* the daemon's -u */
};

static void
fault_env_init(struct fault_env *e, const char *upstream)
{
	memset(e, 0, sizeof *e);
	if (upstream == NULL) {
		e->fake = fake_start("fake", NULL, NULL);
		upstream = harness_upstream_of(e->fake);
	}
	e->upstream = upstream;
}

/* The case's request to url, through libcurl. */
static void
fault_request(const struct fault_case *c, const char *url, const char *upload,
    struct http_resp *r)
{
	static const char *const json_hdrs[] = {
	    "Content-Type: application/json", "Expect:", NULL};
	static const char *const octet_hdrs[] = {
	    "Content-Type: application/octet-stream", "Expect:", NULL};
	struct harness_membody mb;
	struct http_req req;

	memset(&req, 0, sizeof req);
	req.method = c->method;
	req.url = url;
	req.timeout_ms = c->timeout_ms;
	if (c->json != NULL) {
		req.headers = json_hdrs;
		req.body = c->json;
		req.body_len = strlen(c->json);
		req.has_body = 1;
	} else if (upload != NULL) {
		req.headers = octet_hdrs;
		if (c->upload.chunked) {
			memset(&mb, 0, sizeof mb);
			mb.data = upload;
			mb.len = c->upload.len;
			mb.piece = c->upload.piece;
			req.read_fn = harness_membody_read;
			req.read_arg = &mb;
		} else {
			req.body = upload;
			req.body_len = c->upload.len;
			req.has_body = 1;
		}
	}
	if (req.method == NULL && (req.has_body || req.read_fn != NULL))
		req.method = "POST";
	http_request(&req, r);
}

/* The case's JSON POST on a raw socket, whose response must be cut short:
 * the head and part of the body, then the connection closed. */
static void
fault_request_cut(const struct fault_env *e, const struct fault_case *c,
    struct http_conn *conn, struct http_resp *r)
{
	const char *cl;

	test_raw_send(conn, e->daemon->port, test_raw_post(c->path, c->json, ""));
	H_ASSERT(http_conn_read_response(conn, 0, 10000, r) != 0,
	    "%s: the response arrived complete (%ld, %zu bytes); it must be "
	    "cut short",
	    c->name, r->status, r->body.len);
	H_ASSERT(conn->eof, "%s: the client connection was not closed: %s",
	    c->name, r->error);
	H_ASSERT(r->status == c->want_status,
	    "%s: status %ld before the cut, want %ld: %s", c->name, r->status,
	    c->want_status, r->head.data);
	if (c->cut == CUT_CHUNKED) {
		H_ASSERT(r->chunked, "%s: want a chunked stream cut short: %s",
		    c->name, r->head.data);
		return;
	}
	cl = http_header_get(r, "Content-Length");
	H_ASSERT(cl != NULL, "%s: want the upstream's Content-Length: %s",
	    c->name, r->head.data);
	H_ASSERT(r->body.len > 0 && r->body.len < strtoull(cl, NULL, 10),
	    "%s: got %zu of %s bytes; want the part the upstream sent",
	    c->name, r->body.len, cl);
}

/* The echo of the upload has its length, digest and framing. */
static void
fault_check_echo(const struct fault_case *c, const struct http_resp *r,
    const char *hex)
{
	cJSON *j;

	j = harness_json(r, c->name);
	H_ASSERT((size_t)harness_jnum(j, "body_bytes") == c->upload.len,
	    "%s: %.0f bytes of %zu arrived", c->name,
	    harness_jnum(j, "body_bytes"), c->upload.len);
	H_ASSERT(harness_jstr(j, "body_sha256") != NULL &&
	        strcmp(harness_jstr(j, "body_sha256"), hex) == 0,
	    "%s: other bytes arrived than were sent", c->name);
	H_ASSERT(cJSON_IsTrue(cJSON_GetObjectItem(j, "chunked")) ==
	        c->upload.chunked,
	    "%s: the body's framing changed on the way", c->name);
	cJSON_Delete(j);
}

/* Asks the fake itself the same: the client must have got that. */
static void
fault_check_direct(const struct fault_env *e, const struct fault_case *c,
    const char *upload, const struct http_resp *r)
{
	struct http_resp d;

	fault_request(c, fake_url(e->fake, c->path), upload, &d);
	H_ASSERT(d.ok && d.status == c->want_status,
	    "%s: the fake itself answered %ld %s", c->name, d.status, d.error);
	harness_assert_same_response(&d, r, c->name);
	http_resp_free(&d);
}

static void
fault_run_case(struct fault_env *e, const struct fault_case *c)
{
	struct http_conn conn;
	struct http_resp r;
	char hex[65] = "", *upload = NULL;
	const char *body;
	long long n;
	double el;

	memset(&conn, 0, sizeof conn);
	if (c->conf != NULL)
		e->daemon = harness_daemon_start(c->conf, e->upstream, NULL);
	H_ASSERT(e->daemon != NULL, "%s: no daemon; give the first case a conf",
	    c->name);
	if (e->fake != NULL && !c->keep_counts)
		fake_reset(e->fake);
	if (c->fault != NULL)
		fake_fault(e->fake, c->fault);
	if (c->upload.len > 0) {
		upload = malloc(c->upload.len);
		H_CHECK(upload != NULL);
		harness_fill(upload, c->upload.len, c->upload.seed);
		harness_sha256_hex(upload, c->upload.len, hex);
	}

	if (c->cut != CUT_NONE) {
		fault_request_cut(e, c, &conn, &r);
	} else {
		fault_request(c, harness_daemon_url(e->daemon, c->path),
		    upload, &r);
		H_ASSERT(r.ok && r.status == c->want_status,
		    "%s: the client got %ld %s %.300s, want %ld", c->name,
		    r.status, r.error, r.body.data, c->want_status);
	}
	el = r.t_end - r.t_start;
	body = r.body.data != NULL ? r.body.data : "";
	if (c->shape == SHAPE_NATIVE)
		test_assert_native_error(&r, c->want_status,
		    c->names_upstream ? e->upstream : NULL, c->name);
	if (c->shape == SHAPE_OPENAI)
		test_assert_openai_error(&r, c->want_status, c->error_type,
		    c->names_upstream ? e->upstream : NULL, c->name);
	if (c->want_body != NULL)
		H_ASSERT(strcmp(body, c->want_body) == 0,
		    "%s: body \"%.300s\", want \"%s\"", c->name, body,
		    c->want_body);
	if (c->want_contains != NULL)
		H_ASSERT(strstr(body, c->want_contains) != NULL,
		    "%s: the body lacks \"%s\": %.300s", c->name,
		    c->want_contains, body);
	if (c->want_lacks != NULL)
		H_ASSERT(strstr(body, c->want_lacks) == NULL,
		    "%s: the body has \"%s\": %.300s", c->name, c->want_lacks,
		    body);
	if (c->want_lines > 0)
		H_ASSERT(http_count_lines(&r.body) == c->want_lines,
		    "%s: %zu lines, want %zu: %.300s", c->name,
		    http_count_lines(&r.body), c->want_lines, body);
	if (c->want_echo)
		fault_check_echo(c, &r, hex);
	H_ASSERT(el >= c->min_s && (c->max_s == 0 || el < c->max_s),
	    "%s: the exchange took %.3f s, want %.2f s to %.2f s", c->name,
	    el, c->min_s, c->max_s);
	if (c->gone_phase != NULL)
		test_wait_stat(e->fake, "client_gone_phase", c->gone_phase, 1,
		    2000, c->name);
	if (e->fake != NULL && c->want_requests != ANY_COUNT) {
		n = test_stat(e->fake, "requests", NULL);
		H_ASSERT(n == c->want_requests,
		    "%s: the fake saw %lld requests, want %lld", c->name, n,
		    c->want_requests);
	}
	/* After the count: this asks the fake once more. */
	if (c->same_as_direct)
		fault_check_direct(e, c, upload, &r);
	if (c->cut != CUT_NONE)
		http_conn_close(&conn);
	if (c->healthy_after)
		test_assert_healthy(e->daemon, c->name);
	http_resp_free(&r);
	free(upload);
}

/* Runs the cases in order against one fake (or upstream), each on the
 * daemon the last conf started. */
static void
fault_run(struct fault_env *e, const struct fault_case *cases, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		fault_run_case(e, &cases[i]);
}

/* A test made of one table: a fresh fake unless upstream is given. */
static void
fault_run_table(
    const char *upstream, const struct fault_case *cases, size_t n)
{
	struct fault_env e;

	fault_env_init(&e, upstream);
	fault_run(&e, cases, n);
}
#define FAULT_TABLE(upstream, cases)                                           \
	fault_run_table(upstream, cases, N_CASES(cases))

