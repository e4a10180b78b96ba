/*
 * The upstream side: libcurl's multi interface driven by our libevent loop
 * through its socket and timer callbacks (no polling of every descriptor),
 * with one multi per backend so each has its own connection cache, limits
 * and wait queue.  Easy handles are kept and reused, never freed per
 * request, and so are the connections curl keeps alive behind them.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ollama-pool.h"

/*
 * A socket curl asked us to watch.  Those of the pool's connections
 * (opened by backend_open_socket) live in up->socks from open to close,
 * and stay registered for reading while their connection waits in curl's
 * cache: the next request on it asks for just that, so a request on a
 * warm connection costs no epoll_ctl.  Any other socket curl has us watch
 * (a resolver's) is dropped as soon as curl says.
 */
struct up_sock {
	curl_socket_t fd;
	struct event *ev;
	struct backend *up;
	short kind; /* the events registered now; 0: none */
	unsigned wanted : 1; /* curl watches it (0: idle in the cache) */
	unsigned ours : 1; /* a connection's, in up->socks */
};

struct backend_fetch {
	struct up_handle *h;
	backend_fetch_cb cb;
	void *arg;
	char body[512];
	size_t len;
	uint64_t t_start_us;
};

static void backend_check_done(struct backend *);

static void backend_event_cb(evutil_socket_t, short, void *);

static struct up_sock *
backend_sock_find(struct backend *up, curl_socket_t fd)
{
	return fd >= 0 && fd < up->nsocks ? up->socks[fd] : NULL;
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
	struct backend *up = arg;
	struct up_sock *s;
	curl_socket_t fd;
	int n;

	fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
	if (fd == CURL_SOCKET_BAD)
		return fd;
	up->conns_open++;
	rt.metrics.upstream_conns_opened++;
	if (fd >= up->nsocks) {
		n = fd + 16;
		up->socks = xrealloc(up->socks, n * sizeof *up->socks);
		memset(up->socks + up->nsocks, 0,
		    (n - up->nsocks) * sizeof *up->socks);
		up->nsocks = n;
	}
	/* A record left for this number: curl closed that socket without
	 * our callback (7.88 does for a connect attempt that lost, which
	 * only ever waited to be writable, so it is unregistered now). */
	if (up->socks[fd] != NULL)
		backend_sock_free(up->socks[fd]);
	s = up->socks[fd] = xcalloc(1, sizeof *s);
	s->fd = fd;
	s->up = up;
	s->ours = 1;
	return fd;
}

static int
backend_close_socket(void *arg, curl_socket_t fd)
{
	struct backend *up = arg;
	struct up_sock *s = backend_sock_find(up, fd);

	if (s != NULL) { /* unregistered before the descriptor goes */
		backend_sock_free(s);
		up->socks[fd] = NULL;
	}
	up->conns_open--;
	up->conns_closed++;
	return close(fd);
}

static void
backend_event_cb(evutil_socket_t fd, short kind, void *arg)
{
	struct up_sock *s = arg;
	struct backend *up = s->up; /* s may be gone after the call */
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
	curl_multi_socket_action(up->multi, fd, action, &running);
	backend_check_done(up);
}

static int
backend_socket_cb(
    CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct backend *up = userp;
	struct up_sock *s = socketp;
	short kind;

	if (s == NULL)
		s = backend_sock_find(up, fd);
	if (what == CURL_POLL_REMOVE) {
		if (s == NULL)
			return 0;
		s->wanted = 0;
		if (!s->ours) {
			backend_sock_free(s);
			curl_multi_assign(up->multi, fd, NULL);
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
		s->up = up;
		curl_multi_assign(up->multi, fd, s);
	}
	s->wanted = 1;
	backend_sock_watch(s, kind);
	return 0;
}

static void
backend_timeout_cb(evutil_socket_t fd, short kind, void *arg)
{
	struct backend *up = arg;
	int running;

	curl_multi_socket_action(up->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	backend_check_done(up);
}

/* curl asks for a wake-up; never call back into curl from here. */
static int
backend_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct backend *up = userp;
	struct timeval tv;

	if (timeout_ms < 0) {
		evtimer_del(up->timer_ev);
		return 0;
	}
	if (timeout_ms == 0) {
		/* "Now": run in this loop iteration, not after another
		 * epoll_wait, so a new transfer's request goes out at once. */
		evtimer_del(up->timer_ev);
		event_active(up->timer_ev, EV_TIMEOUT, 0);
		return 0;
	}
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	evtimer_add(up->timer_ev, &tv);
	return 0;
}

static void
backend_check_done(struct backend *up)
{
	struct up_handle *h;
	CURLMsg *msg;
	CURLcode rc;
	int left;

	while ((msg = curl_multi_info_read(up->multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		rc = msg->data.result;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &h);
		h->clean =
		    rc == CURLE_OK && up->conns_closed == h->closed_at_start;
		h->on_done(h, rc);
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
backend_set_maxconnects(struct backend *up, int in_flight)
{
	up->maxconnects = in_flight + up->pool_connections + 1;
	curl_multi_setopt(
	    up->multi, CURLMOPT_MAXCONNECTS, (long)up->maxconnects);
}

static void
backend_trim_cb(evutil_socket_t fd, short what, void *arg)
{
	struct backend *up = arg;
	struct timeval tv = {1, 0};

	backend_set_maxconnects(up, up->peak_in_flight);
	log_debug("upstream %s: connection cache cap %d", up->url.base,
	    up->maxconnects);
	up->peak_in_flight = up->in_flight;
	if (up->maxconnects > up->pool_connections + 1)
		evtimer_add(up->trim_ev, &tv);
}

static void
backend_track_idle(struct backend *up)
{
	struct timeval tv = {1, 0};

	if (up->in_flight > up->peak_in_flight)
		up->peak_in_flight = up->in_flight;
	if (up->in_flight + up->pool_connections + 1 > up->maxconnects) {
		backend_set_maxconnects(up, up->in_flight);
		if (!evtimer_pending(up->trim_ev, NULL))
			evtimer_add(up->trim_ev, &tv);
	}
}

struct backend *
backend_new(const struct config *cfg)
{
	struct backend *up = xcalloc(1, sizeof *up);

	up->url = cfg->upstream;
	up->base_len = strlen(up->url.base);
	up->pool_maxsize = cfg->pool_maxsize;
	up->pool_connections = cfg->pool_connections;
	up->queue_max = cfg->queue_max;
	up->connect_timeout_ms = (long)(cfg->connect_timeout * 1000);
	up->ca_file = cfg->ca_file[0] ? xstrdup(cfg->ca_file) : NULL;
	up->tls_verify = cfg->tls_verify;
	TAILQ_INIT(&up->queue);
	SLIST_INIT(&up->free_handles);

	up->multi = curl_multi_init();
	if (up->multi == NULL)
		fatal("cannot initialise libcurl");
	up->timer_ev = evtimer_new(rt.base, backend_timeout_cb, up);
	up->trim_ev = evtimer_new(rt.base, backend_trim_cb, up);
	curl_multi_setopt(
	    up->multi, CURLMOPT_SOCKETFUNCTION, backend_socket_cb);
	curl_multi_setopt(up->multi, CURLMOPT_SOCKETDATA, up);
	curl_multi_setopt(up->multi, CURLMOPT_TIMERFUNCTION, backend_timer_cb);
	curl_multi_setopt(up->multi, CURLMOPT_TIMERDATA, up);
	curl_multi_setopt(
	    up->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);
	/* Requests never exceed pool_maxsize (our queue sees to that); the
	 * one extra is for the probe (probe.c keeps one in flight), which
	 * must not wait behind a minutes-long generation nor take a
	 * request's connection. */
	curl_multi_setopt(up->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
	    (long)up->pool_maxsize + 1);
	backend_set_maxconnects(up, 0);
	return up;
}

void
backend_free(struct backend *up)
{
	struct up_handle *h;
	int n;

	/* First: a probe in flight gives its handle back to the list. */
	probe_free(up->probe);
	while ((h = SLIST_FIRST(&up->free_handles)) != NULL) {
		SLIST_REMOVE_HEAD(&up->free_handles, free_entry);
		curl_easy_cleanup(h->easy);
		free(h->url);
		free(h);
	}
	curl_multi_cleanup(up->multi); /* closes the sockets in up->socks */
	for (n = 0; n < up->nsocks; n++)
		if (up->socks[n] != NULL) /* closed without our callback */
			backend_sock_free(up->socks[n]);
	free(up->socks);
	event_free(up->timer_ev);
	event_free(up->trim_ev);
	free(up->ca_file);
	free(up);
}

/* Did a reload leave this upstream's settings as they were?  Then it
 * keeps serving, with its warm connections. */
int
backend_same_settings(const struct backend *up, const struct config *cfg)
{
	const char *ca = cfg->ca_file[0] ? cfg->ca_file : NULL;

	return strcmp(up->url.base, cfg->upstream.base) == 0 &&
	    up->pool_maxsize == cfg->pool_maxsize &&
	    up->pool_connections == cfg->pool_connections &&
	    up->queue_max == cfg->queue_max &&
	    up->connect_timeout_ms == (long)(cfg->connect_timeout * 1000) &&
	    up->tls_verify == cfg->tls_verify &&
	    ((ca == NULL && up->ca_file == NULL) ||
	        (ca != NULL && up->ca_file != NULL &&
	            strcmp(ca, up->ca_file) == 0));
}

static void
backend_free_deferred(evutil_socket_t fd, short what, void *arg)
{
	struct backend *up = arg;

	TAILQ_REMOVE(&rt.backends, up, entry);
	log_info("upstream %s retired", up->url.base);
	backend_free(up);
}

/* Freed outside any callback of its own multi. */
static void
backend_schedule_free(struct backend *up)
{
	struct timeval now = {0, 0};

	event_base_once(
	    rt.base, -1, EV_TIMEOUT, backend_free_deferred, up, &now);
}

/* A reload replaced it: requests under way finish here, new ones go to
 * its successor. */
void
backend_retire(struct backend *up)
{
	up->retiring = 1;
	if (up->refs == 0)
		backend_schedule_free(up);
}

/* Which backend serves this request: the newest that is not retiring.
 * With one, the choice is easy; routing by model comes here. */
struct backend *
backend_select(struct proxy_req *req)
{
	struct backend *up;

	TAILQ_FOREACH(up, &rt.backends, entry)
	if (!up->retiring) {
		up->refs++;
		return up;
	}
	abort();
}

void
backend_unref(struct backend *up)
{
	if (--up->refs == 0 && up->retiring)
		backend_schedule_free(up);
}

/* Starts the request on a free slot, or queues it.  -1: queue full. */
int
backend_submit(struct backend *up, struct proxy_req *req)
{
	if (up->in_flight < up->pool_maxsize && up->queued == 0) {
		up->in_flight++;
		backend_track_idle(up);
		proxy_req_begin_transfer(req);
		return 0;
	}
	if (up->queued >= up->queue_max)
		return -1;
	TAILQ_INSERT_TAIL(&up->queue, req, queue_entry);
	up->queued++;
	req->in_queue = 1;
	req->state = PROXY_QUEUED;
	return 0;
}

void
backend_dequeue(struct backend *up, struct proxy_req *req)
{
	TAILQ_REMOVE(&up->queue, req, queue_entry);
	up->queued--;
	req->in_queue = 0;
}

static void
backend_start_next(struct backend *up)
{
	struct proxy_req *req;

	while (up->in_flight < up->pool_maxsize &&
	    (req = TAILQ_FIRST(&up->queue)) != NULL) {
		backend_dequeue(up, req);
		up->in_flight++;
		backend_track_idle(up);
		proxy_req_begin_transfer(req);
	}
}

/* What holds for every transfer of a handle, its upstream's settings:
 * set when the handle is made (and after a full reset), never per
 * request. */
static void
backend_handle_setup(struct up_handle *h)
{
	struct backend *up = h->up;
	CURL *e = h->easy;

	curl_easy_setopt(e, CURLOPT_PRIVATE, h);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, backend_open_socket);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, up);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, backend_close_socket);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, up);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, h->errbuf);
	/* Signals cost about 15% of curl's time and we resolve nothing
	 * that needs an alarm. */
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, up->connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	/* Paths go upstream byte for byte: no dot-segment squashing. */
	curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(e, CURLOPT_HTTP_CONTENT_DECODING, 0L);
	/* Never an HTTP proxy in between, whatever the environment says;
	 * this also spares curl its getenv() calls on every transfer. */
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, (long)up->tls_verify);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, up->tls_verify ? 2L : 0L);
	if (up->ca_file != NULL)
		curl_easy_setopt(e, CURLOPT_CAINFO, up->ca_file);
	if (up->pool_connections == 0)
		curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
}

/*
 * Back to curl's defaults, every option that one transfer sets (here
 * below and in proxy_req_begin_transfer): a leftover would change the
 * next request on this handle (a GET after a HEAD sent as a HEAD, after a
 * DELETE as a DELETE, after a POST reading a freed request's body).
 */
static void
backend_handle_clear(CURL *e)
{
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

struct up_handle *
backend_handle_get(struct backend *up, int holds_slot)
{
	struct up_handle *h = SLIST_FIRST(&up->free_handles);

	if (h != NULL)
		SLIST_REMOVE_HEAD(&up->free_handles, free_entry);
	else {
		h = xcalloc(1, sizeof *h);
		h->up = up;
		h->easy = curl_easy_init();
		if (h->easy == NULL)
			abort();
		backend_handle_setup(h);
	}
	h->holds_slot = holds_slot;
	h->clean = 0;
	h->errbuf[0] = '\0';
	return h;
}

/* The upstream's base and the path, built in the handle's own buffer
 * (curl copies it): no formatting, no allocation once it is big enough. */
void
backend_handle_url(struct up_handle *h, const char *path)
{
	size_t plen = strlen(path), need = h->up->base_len + plen + 1;

	if (need > h->url_cap) {
		h->url_cap = need < 256 ? 256 : need;
		free(h->url);
		h->url = xmalloc(h->url_cap);
		memcpy(h->url, h->up->url.base, h->up->base_len);
	}
	memcpy(h->url + h->up->base_len, path, plen + 1);
	curl_easy_setopt(h->easy, CURLOPT_URL, h->url);
}

int
backend_handle_start(struct up_handle *h)
{
	h->closed_at_start = h->up->conns_closed;
	return curl_multi_add_handle(h->up->multi, h->easy) == CURLM_OK ? 0
	                                                                : -1;
}

/*
 * Returns a handle to the free list.  Removing a transfer that has not
 * finished makes curl close its connection rather than pool it: that is
 * what tells Ollama its client left, so it stops generating.
 */
void
backend_handle_release(struct up_handle *h)
{
	struct backend *up = h->up;

	curl_multi_remove_handle(up->multi, h->easy);
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
	h->owner = NULL;
	h->on_done = NULL;
	SLIST_INSERT_HEAD(&up->free_handles, h, free_entry);
	if (h->holds_slot) {
		h->holds_slot = 0;
		up->in_flight--;
		backend_track_idle(up);
		backend_start_next(up);
	}
}

static size_t
backend_fetch_write(char *data, size_t size, size_t nitems, void *arg)
{
	struct backend_fetch *f = arg;
	size_t len = size * nitems, room = sizeof f->body - 1 - f->len;

	if (len > room)
		len = room;
	memcpy(f->body + f->len, data, len);
	f->len += len;
	return size * nitems;
}

static void
backend_fetch_done(struct up_handle *h, CURLcode rc)
{
	struct backend_fetch *f = h->owner;
	char err[CURL_ERROR_SIZE];
	long code = 0;
	double latency = (now_us() - f->t_start_us) / 1e6;

	curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &code);
	snprintf(err, sizeof err, "%s",
	    rc == CURLE_OK     ? ""
	        : h->errbuf[0] ? h->errbuf
	                       : curl_easy_strerror(rc));
	f->body[f->len] = '\0';
	backend_handle_release(h);
	f->cb(f->arg, rc == CURLE_OK ? code : 0, f->body, err, latency);
	free(f);
}

/*
 * A small GET of the proxy's own (health and, later, other probes): on a
 * handle that holds no request slot, so it never waits behind
 * generations, and with our User-Agent so the upstream's logs can tell it
 * from client traffic.  cb gets the status (0 when no answer came), the
 * start of the body, an error message and the latency.
 */
struct backend_fetch *
backend_fetch_start(struct backend *up, const char *path, long timeout_ms,
    backend_fetch_cb cb, void *arg)
{
	struct backend_fetch *f = xcalloc(1, sizeof *f);
	CURL *e;

	f->cb = cb;
	f->arg = arg;
	f->t_start_us = now_us();
	f->h = backend_handle_get(up, 0);
	f->h->owner = f;
	f->h->on_done = backend_fetch_done;
	e = f->h->easy;
	backend_handle_url(f->h, path);
	curl_easy_setopt(e, CURLOPT_USERAGENT, OP_NAME "/" PACKAGE_VERSION);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, backend_fetch_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, f);
	if (backend_handle_start(f->h) != 0) {
		backend_handle_release(f->h);
		free(f);
		return NULL;
	}
	return f;
}

void
backend_fetch_cancel(struct backend_fetch *f)
{
	backend_handle_release(f->h);
	free(f);
}
