/*
 * One Ollama backend: libcurl's multi interface driven by our libevent
 * loop through its socket and timer callbacks (no polling of every
 * descriptor), one multi per backend so each has its own connection cache
 * and limits.  Easy handles are kept and reused, never freed per request,
 * and so are the connections curl keeps alive behind them.
 *
 * This is the only file that calls curl.  A request's transfer is
 * described by a struct xfer_spec and reports through the struct xfer_cb
 * it was handed; the proxy's own small requests (probes, the fleet-wide
 * endpoints) are fetches.  What a backend has and runs of each model, and
 * its slots, are in backend_models.c.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ollama-pool.h"

/* One easy handle, kept on its backend's free list between transfers. */
struct up_handle {
	CURL *easy;
	struct backend *b;
	const struct xfer_cb *cb;
	void *arg;
	void (*done)(struct up_handle *, CURLcode); /* transfer or fetch */
	int clean; /* ended well, no connection closed: no full reset */
	unsigned long closed_at_start; /* backend's conns_closed */
	char *url; /* the base, then the path of the request */
	size_t url_cap;
	char errbuf[CURL_ERROR_SIZE];
	struct up_handle *next_free;
};

struct backend_fetch {
	struct up_handle *h;
	struct backend_fetch_spec spec;
	struct curl_slist *hdrs;
	char *body; /* what is kept of the answer */
	size_t len, cap;
	uint64_t t_start_us;
};

static void backend_check_done(struct backend *);
struct up_sock {
	curl_socket_t fd;
	struct event *ev;
	struct backend *b;
	short kind; /* the events registered now; 0: none */
	unsigned wanted : 1; /* curl watches it (0: idle in the cache) */
	unsigned ours : 1; /* a connection's, in b->socks */
	unsigned warm : 1; /* a fetch of ours held it, no request yet */
	unsigned served : 1; /* a client's request has used it */
};

static void backend_event_cb(evutil_socket_t, short, void *);

static struct up_sock *
backend_sock_find(struct backend *b, curl_socket_t fd)
{
	return fd >= 0 && fd < b->nsocks ? b->socks[fd] : NULL;
}

/* Registers exactly these events (0: none), only when they change. */
static void
backend_sock_watch(struct up_sock *s, short kind)
{
	if (s->kind == kind)
		return;
	if (s->kind != 0)
		event_del(s->ev);
	s->kind = kind;
	if (kind == 0)
		return;
	if (s->ev == NULL)
		s->ev = event_new(rt.base, s->fd, kind, backend_event_cb, s);
	else
		event_assign(s->ev, rt.base, s->fd, kind, backend_event_cb, s);
	event_add(s->ev, NULL);
}

static void
backend_sock_free(struct up_sock *s)
{
	if (s->ev != NULL)
		event_free(s->ev);
	free(s);
}

/* curl opens and closes upstream sockets through us, so we can count the
 * connections: the pool's whole point is that this count stays small. */
static curl_socket_t
backend_open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
	struct backend *b = arg;
	struct up_sock *s;
	curl_socket_t fd;
	int n;

	fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
	if (fd == CURL_SOCKET_BAD)
		return fd;
	b->conns_open++;
	rt.metrics.upstream_conns_opened++;
	b->conns_opened++;
	if (fd >= b->nsocks) {
		n = fd + 16;
		b->socks = xrealloc(b->socks, n * sizeof *b->socks);
		memset(b->socks + b->nsocks, 0,
		    (n - b->nsocks) * sizeof *b->socks);
		b->nsocks = n;
	}
	/* A record left for this number: curl closed that socket without
	 * our callback (7.88 does for a connect attempt that lost, which
	 * only ever waited to be writable, so it is unregistered now). */
	if (b->socks[fd] != NULL)
		backend_sock_free(b->socks[fd]);
	s = b->socks[fd] = xcalloc(1, sizeof *s);
	s->fd = fd;
	s->b = b;
	s->ours = 1;
	return fd;
}

static int
backend_close_socket(void *arg, curl_socket_t fd)
{
	struct backend *b = arg;
	struct up_sock *s = backend_sock_find(b, fd);

	if (s != NULL) { /* unregistered before the descriptor goes */
		backend_sock_free(s);
		b->socks[fd] = NULL;
	}
	b->conns_open--;
	b->conns_closed++;
	return close(fd);
}

static void
backend_event_cb(evutil_socket_t fd, short kind, void *arg)
{
	struct up_sock *s = arg;
	struct backend *b = s->b; /* s may be gone after the call */
	int running, action = 0;

	if (!s->wanted) {
		/* An idle connection got data or its end: stop watching it;
		 * curl finds it dead when it next tries to reuse it. */
		backend_sock_watch(s, 0);
		return;
	}
	if (kind & EV_READ)
		action |= CURL_CSELECT_IN;
	if (kind & EV_WRITE)
		action |= CURL_CSELECT_OUT;
	curl_multi_socket_action(b->multi, fd, action, &running);
	backend_check_done(b);
}

static int
backend_socket_cb(
    CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct backend *b = userp;
	struct up_sock *s = socketp;
	short kind;

	if (s == NULL)
		s = backend_sock_find(b, fd);
	if (what == CURL_POLL_REMOVE) {
		if (s == NULL)
			return 0;
		s->wanted = 0;
		if (!s->ours) {
			backend_sock_free(s);
			curl_multi_assign(b->multi, fd, NULL);
		} else if (s->kind != (EV_READ | EV_PERSIST))
			/* Writable would fire; and a connect attempt (only
			 * ever watched for writing) may be closed without
			 * our callback. */
			backend_sock_watch(s, 0);
		return 0;
	}
	kind = EV_PERSIST;
	if (what & CURL_POLL_IN)
		kind |= EV_READ;
	if (what & CURL_POLL_OUT)
		kind |= EV_WRITE;
	if (s == NULL) {
		s = xcalloc(1, sizeof *s);
		s->fd = fd;
		s->b = b;
		curl_multi_assign(b->multi, fd, s);
	}
	s->wanted = 1;
	backend_sock_watch(s, kind);
	return 0;
}

static void
backend_timeout_cb(evutil_socket_t fd, short kind, void *arg)
{
	struct backend *b = arg;
	int running;

	curl_multi_socket_action(b->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	backend_check_done(b);
}

/* curl asks for a wake-b; never call back into curl from here. */
static int
backend_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct backend *b = userp;
	struct timeval tv;

	if (timeout_ms < 0) {
		evtimer_del(b->timer_ev);
		return 0;
	}
	if (timeout_ms == 0) {
		/* "Now": run in this loop iteration, not after another
		 * epoll_wait, so a new transfer's request goes out at once. */
		evtimer_del(b->timer_ev);
		event_active(b->timer_ev, EV_TIMEOUT, 0);
		return 0;
	}
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	evtimer_add(b->timer_ev, &tv);
	return 0;
}

static void
backend_check_done(struct backend *b)
{
	struct up_handle *h;
	CURLMsg *msg;
	CURLcode rc;
	int left;

	while ((msg = curl_multi_info_read(b->multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		rc = msg->data.result;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &h);
		h->clean =
		    rc == CURLE_OK && b->conns_closed == h->closed_at_start;
		h->done(h, rc);
	}
}

/*
 * curl's MAXCONNECTS caps its whole connection cache, busy connections
 * included, and curl closes the oldest idle connection whenever a transfer
 * ends with the cache over it.  So the cap must cover the transfers in
 * flight plus the pool_connections kept idle; and it must not follow every
 * dip in the number in flight, or steady load would close and reopen
 * connections all the time (churn).  It grows at once, and shrinks only
 * once a second to the peak of the second before: idle connections beyond
 * pool_connections go after the load has fallen, not while it lasts.
 */
static void
backend_set_maxconnects(struct backend *b, int active)
{
	b->maxconnects = active + b->conf.pool_connections + 1;
	curl_multi_setopt(b->multi, CURLMOPT_MAXCONNECTS, (long)b->maxconnects);
}

static void
backend_trim_cb(evutil_socket_t fd, short what, void *arg)
{
	struct backend *b = arg;
	struct timeval tv = {1, 0};

	backend_set_maxconnects(b, b->peak_active);
	log_debug(
	    "backend %s: connection cache cap %d", b->name, b->maxconnects);
	b->peak_active = b->active;
	if (b->maxconnects > b->conf.pool_connections + 1)
		evtimer_add(b->trim_ev, &tv);
}

static void
backend_track_active(struct backend *b)
{
	struct timeval tv = {1, 0};

	if (b->active > b->peak_active)
		b->peak_active = b->active;
	if (b->active + b->conf.pool_connections + 1 > b->maxconnects) {
		backend_set_maxconnects(b, b->active);
		if (!evtimer_pending(b->trim_ev, NULL))
			evtimer_add(b->trim_ev, &tv);
	}
}

static char *
backend_strdup_or_null(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

/* FNV-1a, 64 bits: a member's name for rendezvous hashing, the same in
 * every replica. */
static uint64_t
backend_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	while (*s != '\0')
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h;
}

/* A member: the url's host name stays (Host, SNI and certificate checks
 * use it) and curl is told which address it is. */
static void
backend_member(struct backend *b, const struct sockaddr *sa)
{
	char line[sizeof b->url.host + sizeof b->member + 16];

	addr_host(sa, b->member, sizeof b->member);
	snprintf(line, sizeof line,
	    sa->sa_family == AF_INET6 ? "%s:%d:[%s]" : "%s:%d:%s", b->url.host,
	    b->url.port, b->member);
	b->resolve = curl_slist_append(NULL, line);
	if (b->resolve == NULL)
		abort();
}

struct backend *
backend_new(const struct backend_conf *bc, int fleet,
    const struct backend_hooks *hooks, const struct sockaddr *member)
{
	struct backend *b = xcalloc(1, sizeof *b);

	b->conf = *bc;
	b->conf.url_text = backend_strdup_or_null(bc->url_text);
	b->conf.models = xstrdup(bc->models != NULL ? bc->models : "");
	b->conf.token_file = backend_strdup_or_null(bc->token_file);
	b->conf.token_path = backend_strdup_or_null(bc->token_path);
	b->conf.token = backend_strdup_or_null(bc->token);
	b->conf.ca_file = xstrdup(bc->ca_file != NULL ? bc->ca_file : "");
	b->name = b->conf.name;
	b->url = bc->url;
	b->base_len = strlen(b->url.base);
	b->fleet = fleet;
	b->hooks = *hooks;
	if (bc->token != NULL)
		xasprintf(&b->auth, "Authorization: Bearer %s", bc->token);
	b->connect_timeout_ms = (long)(bc->connect_timeout * 1000);
	TAILQ_INIT(&b->models);
	if (member != NULL)
		backend_member(b, member);
	b->member_hash =
	    backend_hash(b->member[0] != '\0' ? b->member : b->url.base);

	b->multi = curl_multi_init();
	if (b->multi == NULL)
		fatal("cannot initialise libcurl");
	b->timer_ev = evtimer_new(rt.base, backend_timeout_cb, b);
	b->trim_ev = evtimer_new(rt.base, backend_trim_cb, b);
	curl_multi_setopt(b->multi, CURLMOPT_SOCKETFUNCTION, backend_socket_cb);
	curl_multi_setopt(b->multi, CURLMOPT_SOCKETDATA, b);
	curl_multi_setopt(b->multi, CURLMOPT_TIMERFUNCTION, backend_timer_cb);
	curl_multi_setopt(b->multi, CURLMOPT_TIMERDATA, b);
	curl_multi_setopt(
	    b->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);
	/* With one backend every request holds a slot, and pool_maxsize of
	 * them never exceed it (our queue sees to that); the one extra is for
	 * the probe, which must not wait behind a minutes-long generation nor
	 * take a request's connection.  In a fleet, requests without a model
	 * and the fleet-wide endpoints hold no slot and must not wait either:
	 * no cap of curl's, the slots are the cap. */
	if (!fleet)
		curl_multi_setopt(b->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
		    (long)bc->pool_maxsize + 1);
	backend_set_maxconnects(b, 0);
	return b;
}

void
backend_free(struct backend *b)
{
	struct up_handle *h;
	struct backend_model *m;
	int n;

	/* First: probes in flight give their handles back to the list. */
	if (b->hooks.freeing != NULL)
		b->hooks.freeing(b);
	while ((h = b->free_handles) != NULL) {
		b->free_handles = h->next_free;
		curl_easy_cleanup(h->easy);
		free(h->url);
		free(h);
	}
	curl_multi_cleanup(b->multi); /* closes the sockets in b->socks */
	for (n = 0; n < b->nsocks; n++)
		if (b->socks[n] != NULL) /* closed without our callback */
			backend_sock_free(b->socks[n]);
	free(b->socks);
	while ((m = TAILQ_FIRST(&b->models)) != NULL) {
		TAILQ_REMOVE(&b->models, m, entry);
		free(m);
	}
	event_free(b->timer_ev);
	event_free(b->trim_ev);
	free(b->conf.url_text);
	free(b->conf.models);
	free(b->conf.token_file);
	free(b->conf.token_path);
	free(b->conf.token);
	free(b->conf.ca_file);
	free(b->auth);
	curl_slist_free_all(b->resolve);
	free(b);
}

/* Is b this backend's member at this address ("": none)? */
int
backend_is_member(
    const struct backend *b, const struct backend_conf *bc, const char *member)
{
	return !b->retiring && backend_same_settings(b, bc) &&
	    strcmp(b->member, member) == 0;
}

static int
backend_str_same(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/* Did a reload leave this backend's settings as they were?  Then it keeps
 * serving, with its warm connections and what it learned. */
int
backend_same_settings(const struct backend *b, const struct backend_conf *bc)
{
	const struct backend_conf *o = &b->conf;

	return strcmp(o->name, bc->name) == 0 &&
	    strcmp(b->url.base, bc->url.base) == 0 && o->weight == bc->weight &&
	    o->pool_maxsize == bc->pool_maxsize &&
	    o->pool_connections == bc->pool_connections &&
	    o->connect_timeout == bc->connect_timeout &&
	    o->first_byte_timeout == bc->first_byte_timeout &&
	    o->stream_idle_timeout == bc->stream_idle_timeout &&
	    o->tls_verify == bc->tls_verify &&
	    o->num_parallel == bc->num_parallel &&
	    o->probe_interval == bc->probe_interval &&
	    o->fail_threshold == bc->fail_threshold &&
	    backend_str_same(o->models, bc->models ? bc->models : "") &&
	    backend_str_same(o->token, bc->token) &&
	    backend_str_same(o->ca_file, bc->ca_file ? bc->ca_file : "");
}

static void
backend_free_deferred(evutil_socket_t fd, short what, void *arg)
{
	struct backend *b = arg;

	TAILQ_REMOVE(&rt.backends, b, entry);
	log_info("backend %s (%s) retired", b->name, b->url.base);
	backend_free(b);
}

/* Freed outside any callback of its own multi. */
static void
backend_schedule_free(struct backend *b)
{
	struct timeval now = {0, 0};

	event_base_once(
	    rt.base, -1, EV_TIMEOUT, backend_free_deferred, b, &now);
}

/* A reload replaced or removed it: requests under way finish here, new
 * ones go elsewhere. */
void
backend_retire(struct backend *b)
{
	b->retiring = 1;
	if (b->refs == 0)
		backend_schedule_free(b);
}

void
backend_ref(struct backend *b)
{
	b->refs++;
}

void
backend_unref(struct backend *b)
{
	if (--b->refs == 0 && b->retiring)
		backend_schedule_free(b);
}

int
backend_usable(const struct backend *b)
{
	return !b->retiring && b->state == BACKEND_UP && !b->joining;
}

int
backend_admits(const struct backend *b, const char *model)
{
	return config_backend_admits(&b->conf, model);
}

struct backend *
backend_find(const char *name)
{
	struct backend *b;

	TAILQ_FOREACH(b, &rt.backends, entry)
	if (!b->retiring && strcmp(b->name, name) == 0)
		return b;
	return NULL;
}

/* What holds for every transfer of a handle, its backend's settings: set
 * when the handle is made (and after a full reset), never per request. */
static void
backend_handle_setup(struct up_handle *h)
{
	struct backend *b = h->b;
	CURL *e = h->easy;

	curl_easy_setopt(e, CURLOPT_PRIVATE, h);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, backend_open_socket);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, b);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, backend_close_socket);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, b);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, h->errbuf);
	/* Signals cost about 15% of curl's time and we resolve nothing
	 * that needs an alarm. */
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, b->connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	/* Paths go upstream byte for byte: no dot-segment squashing. */
	curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(e, CURLOPT_HTTP_CONTENT_DECODING, 0L);
	/* Never an HTTP proxy in between, whatever the environment says;
	 * this also spares curl its getenv() calls on every transfer. */
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, (long)b->conf.tls_verify);
	curl_easy_setopt(
	    e, CURLOPT_SSL_VERIFYHOST, b->conf.tls_verify ? 2L : 0L);
	if (b->conf.ca_file[0] != '\0')
		curl_easy_setopt(e, CURLOPT_CAINFO, b->conf.ca_file);
	if (b->conf.pool_connections == 0)
		curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
	if (b->resolve != NULL)
		curl_easy_setopt(e, CURLOPT_RESOLVE, b->resolve);
	/* A fleet's warm connections are kept however long they sit idle
	 * (curl drops them after 118 s): the first request after a quiet
	 * hour pays no handshake.  curl finds a dead one before reuse. */
	if (b->fleet)
		curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, 86400L);
}

/* The connection a transfer ended on, if it is still ours. */
static struct up_sock *
backend_handle_sock(struct up_handle *h)
{
	curl_socket_t fd = CURL_SOCKET_BAD;

	if (curl_easy_getinfo(h->easy, CURLINFO_ACTIVESOCKET, &fd) != CURLE_OK)
		return NULL;
	return backend_sock_find(h->b, fd);
}

/*
 * Back to curl's defaults, every option that one transfer sets (in
 * backend_xfer_start and backend_fetch_start): a leftover would change
 * the next request on this handle (a GET after a HEAD sent as a HEAD,
 * after a DELETE as a DELETE, after a POST reading a freed request's
 * body).
 */
static void
backend_handle_clear(CURL *e)
{
	/* Before HTTPGET: setting POSTFIELDS, even to NULL, makes a POST. */
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, NULL);
	curl_easy_setopt(e, CURLOPT_HTTPGET, 1L); /* no POST, no NOBODY */
	curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)-1);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(e, CURLOPT_READFUNCTION, NULL);
	curl_easy_setopt(e, CURLOPT_READDATA, NULL);
	curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, NULL);
	curl_easy_setopt(e, CURLOPT_SEEKDATA, NULL);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, NULL);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, NULL);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, NULL);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, NULL);
	curl_easy_setopt(e, CURLOPT_USERAGENT, NULL);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 0L);
}

static struct up_handle *
backend_handle_get(struct backend *b)
{
	struct up_handle *h = b->free_handles;

	if (h != NULL)
		b->free_handles = h->next_free;
	else {
		h = xcalloc(1, sizeof *h);
		h->b = b;
		h->easy = curl_easy_init();
		if (h->easy == NULL)
			abort();
		backend_handle_setup(h);
	}
	h->clean = 0;
	h->errbuf[0] = '\0';
	return h;
}

/* The backend's base and the path, built in the handle's own buffer
 * (curl copies it): no formatting, no allocation once it is big enough. */
static void
backend_handle_url(struct up_handle *h, const char *path)
{
	size_t plen = strlen(path), need = h->b->base_len + plen + 1;

	if (need > h->url_cap) {
		h->url_cap = need < 256 ? 256 : need;
		free(h->url);
		h->url = xmalloc(h->url_cap);
		memcpy(h->url, h->b->url.base, h->b->base_len);
	}
	memcpy(h->url + h->b->base_len, path, plen + 1);
	curl_easy_setopt(h->easy, CURLOPT_URL, h->url);
}

static int
backend_handle_start(struct up_handle *h)
{
	h->closed_at_start = h->b->conns_closed;
	if (curl_multi_add_handle(h->b->multi, h->easy) != CURLM_OK)
		return -1;
	h->b->active++;
	backend_track_active(h->b);
	return 0;
}

/*
 * Returns a handle to the free list.  Removing a transfer that has not
 * finished makes curl close its connection rather than pool it: that is
 * what tells Ollama its client left, so it stops generating.
 */
static void
backend_handle_release(struct up_handle *h, int started)
{
	struct backend *b = h->b;

	if (started) {
		curl_multi_remove_handle(b->multi, h->easy);
		b->active--;
	}
	/* curl_easy_reset() would cost more than the rest of a small
	 * request's setup; but it alone zeroes curl's count of the retries
	 * on a dead reused connection (at most 5 per handle between resets).
	 * So a transfer that ended well without one (a retry closes the
	 * dead connection) only has its own options undone. */
	if (h->clean)
		backend_handle_clear(h->easy);
	else {
		curl_easy_reset(h->easy);
		backend_handle_setup(h);
	}
	h->cb = NULL;
	h->arg = NULL;
	h->done = NULL;
	h->next_free = b->free_handles;
	b->free_handles = h;
}

/* ---- a request's transfer ---------------------------------------------- */

static size_t
backend_header_cb(char *buf, size_t size, size_t nitems, void *arg)
{
	struct up_handle *h = arg;

	return h->cb->on_header(h->arg, buf, size * nitems);
}

static size_t
backend_write_cb(char *data, size_t size, size_t nitems, void *arg)
{
	struct up_handle *h = arg;
	size_t n = h->cb->on_data(h->arg, data, size * nitems);

	return n == XFER_PAUSE ? CURL_WRITEFUNC_PAUSE : n;
}

static size_t
backend_read_cb(char *buf, size_t size, size_t nitems, void *arg)
{
	struct up_handle *h = arg;
	size_t n = h->cb->on_read(h->arg, buf, size * nitems);

	if (n == XFER_PAUSE)
		return CURL_READFUNC_PAUSE;
	if (n == XFER_ABORT)
		return CURL_READFUNC_ABORT;
	return n;
}

/* curl rewinds the body when a reused connection turns out to be closed
 * and it sends the request again on a new one. */
static int
backend_seek_cb(void *arg, curl_off_t offset, int origin)
{
	struct up_handle *h = arg;

	if (origin != SEEK_SET || offset != 0 || h->cb->on_rewind(h->arg) != 0)
		return CURL_SEEKFUNC_CANTSEEK;
	return CURL_SEEKFUNC_OK;
}

static enum xfer_result
backend_result(CURLcode rc)
{
	switch (rc) {
	case CURLE_OK:
		return XFER_OK;
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
		return XFER_CONNECT;
	case CURLE_OPERATION_TIMEDOUT: /* only connect_timeout sets it */
		return XFER_TIMEOUT;
	case CURLE_GOT_NOTHING:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SEND_FAIL_REWIND:
		return XFER_RESET;
	case CURLE_WRITE_ERROR:
	case CURLE_ABORTED_BY_CALLBACK:
		return XFER_ABORTED;
	default:
		return XFER_ERROR;
	}
}

static void
backend_xfer_done(struct up_handle *h, CURLcode rc)
{
	struct up_sock *s;
	struct xfer_end end;
	char errbuf[CURL_ERROR_SIZE];

	snprintf(errbuf, sizeof errbuf, "%s",
	    h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc));
	memset(&end, 0, sizeof end);
	curl_easy_getinfo(h->easy, CURLINFO_NUM_CONNECTS, &end.new_conns);
	/* Warm connections are a fleet's (prewarm); one backend alone
	 * spends nothing per request on them. */
	if (h->b->fleet && (s = backend_handle_sock(h)) != NULL) {
		if (s->warm && end.new_conns == 0)
			h->b->prewarm_used++;
		s->warm = 0;
		s->served = 1;
	}
	end.result = backend_result(rc);
	end.error = errbuf;
	end.conn_failed = end.result == XFER_CONNECT ||
	    (end.result == XFER_TIMEOUT && end.new_conns == 0);
	h->cb->on_done(h->arg, &end);
}

/* Starts one request's transfer; NULL when curl would not.  What the
 * request says (method, path, headers, body) is the spec's; everything
 * else is the backend's, set on the handle once. */
struct up_handle *
backend_xfer_start(struct backend *b, const struct xfer_spec *x)
{
	struct up_handle *h = backend_handle_get(b);
	CURL *e = h->easy;

	h->cb = x->cb;
	h->arg = x->arg;
	h->done = backend_xfer_done;
	b->requests++;
	backend_handle_url(h, x->path);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers->first);
	if (x->has_body) {
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(e, CURLOPT_READFUNCTION, backend_read_cb);
		curl_easy_setopt(e, CURLOPT_READDATA, h);
		/* -1 makes curl chunk the body, as the client did. */
		curl_easy_setopt(
		    e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len);
		if (x->method != METHOD_POST)
			curl_easy_setopt(
			    e, CURLOPT_CUSTOMREQUEST, x->method_name);
		curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, backend_seek_cb);
		curl_easy_setopt(e, CURLOPT_SEEKDATA, h);
	} else if (x->method == METHOD_HEAD)
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	else if (x->method != METHOD_GET)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, x->method_name);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, backend_header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, h);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, backend_write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, h);
	if (backend_handle_start(h) != 0) {
		backend_handle_release(h, 0);
		return NULL;
	}
	return h;
}

void
backend_xfer_pause(struct up_handle *h, int recv, int send)
{
	curl_easy_pause(
	    h->easy, (recv ? CURLPAUSE_RECV : 0) | (send ? CURLPAUSE_SEND : 0));
}

/* Done with it, finished or not (an unfinished one is abandoned: its
 * connection closes). */
void
backend_xfer_release(struct up_handle *h)
{
	backend_handle_release(h, 1);
}

/* ---- the proxy's own small requests ------------------------------------- */

static size_t
backend_fetch_write(char *data, size_t size, size_t nitems, void *arg)
{
	struct backend_fetch *f = arg;
	size_t len = size * nitems, keep = len;

	if (f->spec.on_data != NULL)
		f->spec.on_data(f->spec.arg, data, len);
	if (f->len + keep > f->spec.keep_max)
		keep = f->spec.keep_max - f->len;
	if (f->len + keep + 1 > f->cap) {
		f->cap = (f->len + keep + 1) * 2;
		if (f->cap > f->spec.keep_max + 1)
			f->cap = f->spec.keep_max + 1;
		f->body = xrealloc(f->body, f->cap);
	}
	memcpy(f->body + f->len, data, keep);
	f->len += keep;
	return len;
}

static void
backend_fetch_free(struct backend_fetch *f)
{
	curl_slist_free_all(f->hdrs);
	free(f->body);
	free(f);
}

static void
backend_fetch_done(struct up_handle *h, CURLcode rc)
{
	struct backend_fetch *f = h->arg;
	struct backend_fetch_result res;
	struct up_sock *s;
	char err[CURL_ERROR_SIZE];
	long code = 0;

	curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &code);
	/* Warm: opened by the proxy's own fetches (prewarm, probes) and
	 * left open for the first requests, which are counted taking it. */
	if (h->b->fleet && rc == CURLE_OK &&
	    (s = backend_handle_sock(h)) != NULL && !s->warm && !s->served) {
		s->warm = 1;
		h->b->prewarmed++;
	}
	snprintf(err, sizeof err, "%s",
	    rc == CURLE_OK     ? ""
	        : h->errbuf[0] ? h->errbuf
	                       : curl_easy_strerror(rc));
	backend_handle_release(h, 1);
	memset(&res, 0, sizeof res);
	res.status = rc == CURLE_OK ? code : 0;
	res.body = f->body != NULL ? f->body : "";
	if (f->body != NULL)
		f->body[f->len] = '\0';
	res.len = f->len;
	res.error = err;
	res.latency = (now_us() - f->t_start_us) / 1e6;
	f->spec.on_done(f->spec.arg, &res);
	backend_fetch_free(f);
}

/*
 * A request of the proxy's own (probes, the fleet-wide endpoints): on a
 * handle that holds no request slot, so it never waits behind
 * generations, and with our User-Agent so the backend's logs can tell it
 * from client traffic.  NULL when it cannot start (on_done is not called).
 */
struct backend_fetch *
backend_fetch_start(struct backend *b, const struct backend_fetch_spec *spec)
{
	struct backend_fetch *f = xcalloc(1, sizeof *f);
	CURL *e;

	f->spec = *spec;
	if (f->spec.keep_max == 0)
		f->spec.keep_max = BACKEND_FETCH_KEEP;
	f->t_start_us = now_us();
	f->h = backend_handle_get(b);
	f->h->arg = f;
	f->h->done = backend_fetch_done;
	e = f->h->easy;
	backend_handle_url(f->h, spec->path);
	curl_easy_setopt(e, CURLOPT_USERAGENT, OP_NAME "/" PACKAGE_VERSION);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, spec->timeout_ms);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, backend_fetch_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, f);
	f->hdrs = curl_slist_append(NULL, "Expect:");
	if (b->auth != NULL)
		f->hdrs = curl_slist_append(f->hdrs, b->auth);
	if (spec->body != NULL) {
		f->hdrs = curl_slist_append(
		    f->hdrs, "Content-Type: application/json");
		curl_easy_setopt(
		    e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)spec->body_len);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, spec->body);
	}
	if (spec->method != NULL && strcmp(spec->method, "GET") != 0 &&
	    !(spec->body != NULL && strcmp(spec->method, "POST") == 0))
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, spec->method);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, f->hdrs);
	if (backend_handle_start(f->h) != 0) {
		backend_handle_release(f->h, 0);
		backend_fetch_free(f);
		return NULL;
	}
	return f;
}

void
backend_fetch_cancel(struct backend_fetch *f)
{
	backend_handle_release(f->h, 1);
	backend_fetch_free(f);
}

static void
backend_prewarm_done(void *arg, const struct backend_fetch_result *res)
{
	struct backend *b = arg;

	if (res->status == 0)
		log_info("backend %s%s%s: a prewarm connection failed: %s",
		    b->name, b->member[0] ? " member " : "", b->member,
		    res->error);
	backend_unref(b);
}

/*
 * Opens prewarm connections (at most pool_connections, which curl keeps
 * idle) at once, in parallel, with GET / (Ollama's "Ollama is running"),
 * so the first requests find them open: no TCP or TLS handshake.  What a
 * probe opened counts too.  Requests that take one are counted.
 */
void
backend_prewarm(struct backend *b)
{
	struct backend_fetch_spec spec;
	int i, n = b->conf.prewarm;

	if (n > b->conf.pool_connections)
		n = b->conf.pool_connections;
	memset(&spec, 0, sizeof spec);
	spec.path = "/";
	spec.timeout_ms = (long)(b->conf.connect_timeout * 1000) + 5000;
	spec.keep_max = 256;
	spec.on_done = backend_prewarm_done;
	spec.arg = b;
	for (i = 0; i < n; i++) {
		backend_ref(b);
		if (backend_fetch_start(b, &spec) == NULL) {
			backend_unref(b);
			return;
		}
	}
}
