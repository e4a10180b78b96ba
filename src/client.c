/*
 * The front door: one client connection on a bufferevent.  Requests are
 * parsed as bytes arrive and answered strictly one at a time, in order;
 * pipelined requests wait, unparsed, in the input buffer.  Request bodies
 * stream on to proxy.c and reading stops while they back up.
 *
 * Rule against reentrancy: proxy.c and admin.c never free anything here.
 * They call client_response_done(), and the exchange is wound up later from
 * resume_ev, outside curl's callbacks and outside the parser.
 */
#include "config.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "ollama-pool.h"

/* Enough input to parse a head or a few body reads; more waits in the
 * kernel, which is where backpressure on a fast uploader belongs. */
#define CLIENT_READ_HIGH (256 * 1024)
/* After an early answer, at most this much of the unread body is read and
 * dropped to keep the connection (Go's server does the same); beyond it
 * the connection closes. */
#define CLIENT_DISCARD_MAX (256 * 1024)
/* A close with the client still sending waits this long, reading and
 * dropping, so its unread bytes do not turn the close into a reset that
 * destroys the answer before the client reads it (Go's rstAvoidanceDelay). */
#define CLIENT_LINGER_SECONDS 0.5

static void client_read_cb(struct bufferevent *, void *);
static void client_write_cb(struct bufferevent *, void *);
static void client_event_cb(struct bufferevent *, short, void *);
static void client_resume_cb(evutil_socket_t, short, void *);
static void client_timer_cb(evutil_socket_t, short, void *);
static void client_closed_cb(evutil_socket_t, short, void *);
static void client_on_begin(void *);
static int client_on_head(void *, struct http_head *);
static int client_on_body(void *, const char *, size_t);
static int client_on_complete(void *);
static void client_process(struct client_conn *);

static const struct httpreq_cb client_parser_cb = {
    .on_begin = client_on_begin,
    .on_head = client_on_head,
    .on_body = client_on_body,
    .on_complete = client_on_complete,
};

/*
 * While we do not read a client with a request under way, EV_CLOSED sees
 * it half-close, but libevent reports a reset (EPOLLERR/EPOLLHUP) as
 * read/write readiness only, which nobody is waiting for.  A duplicate of
 * the descriptor, watched edge-triggered for reading, wakes us once per
 * arrival or hang-up without busy-looping on data we chose not to read;
 * the callback then asks the socket whether it is still there.
 */
static void
client_watch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct client_conn *cc = arg;
	socklen_t len = sizeof(int);
	int err = 0;
	char c;

	if (cc->req == NULL || cc->resp_done)
		return;
	if ((getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err) ||
	    recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0)
		client_free(cc);
}

static void
client_watch(struct client_conn *cc, int on)
{
	int fd;

	if (on && cc->watch_ev == NULL) {
		fd = fcntl(bufferevent_getfd(cc->bev), F_DUPFD_CLOEXEC, 0);
		if (fd < 0)
			return; /* EV_CLOSED still sees a half-close */
		cc->watch_ev = event_new(rt.base, fd,
		    EV_READ | EV_ET | EV_PERSIST, client_watch_cb, cc);
		event_add(cc->watch_ev, NULL);
	} else if (!on && cc->watch_ev != NULL) {
		fd = event_get_fd(cc->watch_ev);
		event_free(cc->watch_ev); /* EPOLL_CTL_DEL before close */
		close(fd);
		cc->watch_ev = NULL;
	}
}

/* The parser's limits are the settings' as a request begins, so a reload
 * applies to kept-alive connections from their next request on. */
static void
client_parser_limits(struct httpreq_limits *lim)
{
	lim->max_head = rt.cfg->max_header_size;
	lim->max_body = rt.cfg->max_body_size;
	lim->max_fields = HTTPREQ_MAX_FIELDS;
}

static void
client_timer_start(struct client_conn *cc, double seconds)
{
	struct timeval tv = runtime_timeval(seconds);

	evtimer_add(cc->timer_ev, &tv);
}

/* admin: accepted on the admin listener, whose requests proxy.c serves
 * from admin.c only. */
void
client_accept(int fd, struct sockaddr *sa, int salen, int admin)
{
	struct httpreq_limits lim;
	struct client_conn *cc;
	int one = 1;

	if (sa->sa_family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	cc = xcalloc(1, sizeof *cc);
	cc->bev = bufferevent_socket_new(rt.base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (cc->bev == NULL) {
		log_warn("cannot set up client connection: out of memory");
		close(fd);
		free(cc);
		return;
	}
	cc->resume_ev = event_new(rt.base, -1, 0, client_resume_cb, cc);
	cc->timer_ev = evtimer_new(rt.base, client_timer_cb, cc);
	/* EV_CLOSED (EPOLLRDHUP) tells us the client left even while we
	 * are not reading from it, so its upstream transfer can be stopped
	 * at once instead of generating for nobody. */
	cc->closed_ev = event_new(
	    rt.base, fd, EV_CLOSED | EV_PERSIST, client_closed_cb, cc);
	addr_format(sa, salen, cc->peer, sizeof cc->peer);
	cc->body_done = 1; /* no request, so no body still to come */
	cc->admin = admin;
	client_parser_limits(&lim);
	httpreq_init(&cc->req_parser, &lim, &client_parser_cb, cc);
	bufferevent_setcb(
	    cc->bev, client_read_cb, client_write_cb, client_event_cb, cc);
	bufferevent_setwatermark(cc->bev, EV_READ, 0, CLIENT_READ_HIGH);
	/* The write callback doubles as "the client drained": it resumes a
	 * response paused for backpressure. */
	bufferevent_setwatermark(cc->bev, EV_WRITE, rt.cfg->max_buffer / 2, 0);
	bufferevent_enable(cc->bev, EV_READ | EV_WRITE);
	client_timer_start(cc, rt.cfg->idle_timeout);
	/* Watched for the connection's whole life: adding and removing it
	 * per request would cost two epoll_ctl calls each time. */
	event_add(cc->closed_ev, NULL);
	cc->closed_watched = 1;
	TAILQ_INSERT_TAIL(&rt.clients, cc, entry);
	rt.nclients++;
	rt.metrics.client_conns_total++;
	if (rt.nclients >= rt.cfg->max_clients) {
		log_warn("max_clients (%d) reached: pausing accepts",
		    rt.cfg->max_clients);
		rt.client_hooks.full();
	}
	log_debug("client %s connected", cc->peer);
}

void
client_free(struct client_conn *cc)
{
	if (cc->req != NULL) {
		if (!cc->resp_done)
			log_info("client %s went away during %s %s (request "
			         "%s)",
			    cc->peer, cc->req->method,
			    cc->req->path ? cc->req->path : "-",
			    cc->req->request_id);
		proxy_req_cancel(cc->req);
	}
	TAILQ_REMOVE(&rt.clients, cc, entry);
	rt.nclients--;
	httpreq_free(&cc->req_parser);
	head_free(&cc->resp_head);
	client_watch(cc, 0);
	event_free(cc->resume_ev);
	event_free(cc->timer_ev);
	event_free(cc->closed_ev);
	bufferevent_free(cc->bev);
	free(cc);
	rt.client_hooks.gone();
}

/* Draining: connections with no request under way go now. */
void
client_close_idle(void)
{
	struct client_conn *cc, *next;

	for (cc = TAILQ_FIRST(&rt.clients); cc != NULL; cc = next) {
		next = TAILQ_NEXT(cc, entry);
		if (cc->req == NULL)
			client_free(cc);
	}
}

void
client_close_all(void)
{
	struct client_conn *cc;

	while ((cc = TAILQ_FIRST(&rt.clients)) != NULL)
		client_free(cc);
}

struct evbuffer *
client_output(struct client_conn *cc)
{
	return bufferevent_get_output(cc->bev);
}

size_t
client_output_len(struct client_conn *cc)
{
	return evbuffer_get_length(bufferevent_get_output(cc->bev));
}

static void
client_schedule(struct client_conn *cc)
{
	event_active(cc->resume_ev, EV_TIMEOUT, 0);
}

/*
 * The last answer is flushed and the connection is to close.  With the
 * client still sending a body nobody will read, close our side for
 * writing and keep reading for a moment (bounded in bytes and time), so
 * the client sees the answer and a clean end instead of a reset.
 */
static void
client_close_flushed(struct client_conn *cc)
{
	if ((cc->body_done && !cc->req_parser.in_head) || cc->lingering) {
		client_free(cc);
		return;
	}
	cc->lingering = 1;
	shutdown(bufferevent_getfd(cc->bev), SHUT_WR);
	bufferevent_enable(cc->bev, EV_READ);
	client_timer_start(cc, CLIENT_LINGER_SECONDS);
}

/* Drops body bytes nobody reads any more; past the bound the connection
 * closes.  Returns 1 while the connection may keep reading. */
static int
client_discard(struct client_conn *cc, size_t len)
{
	cc->discarded += len;
	if (cc->discarded <= CLIENT_DISCARD_MAX)
		return 1;
	if (!cc->closing) {
		log_info("client %s: more than %d bytes of body after the "
		         "answer: closing",
		    cc->peer, CLIENT_DISCARD_MAX);
		cc->closing = 1;
		client_schedule(cc);
	}
	return 0;
}

/* The request passed every check that could refuse it: invite the body it
 * held back with Expect: 100-continue. */
void
client_send_continue(struct client_conn *cc)
{
	if (!cc->expect_pending)
		return;
	cc->expect_pending = 0;
	evbuffer_add(client_output(cc), "HTTP/1.1 100 Continue\r\n\r\n", 25);
}

/* A client still waiting for 100 Continue has not sent the body it
 * announced: an answer now cannot leave the connection in step. */
int
client_awaits_continue(const struct client_conn *cc)
{
	return cc->expect_pending;
}

/*
 * The response to the current request is written (or, with keep_alive 0,
 * as much of it as will ever be).  Called from anywhere, even from inside
 * curl's callbacks: the winding up happens in client_resume_cb.
 */
void
client_response_done(struct client_conn *cc, int keep_alive)
{
	cc->resp_done = 1;
	if (!keep_alive || rt.stopping)
		cc->closing = 1;
	client_schedule(cc);
}

/* The request body buffer has room again (called from curl's read
 * callback, hence deferred). */
void
client_body_drained(struct client_conn *cc)
{
	if (cc->read_throttled)
		client_schedule(cc);
}

/* The client is writable below the low watermark: resume a paused
 * response, or finish closing. */
static void
client_write_cb(struct bufferevent *bev, void *arg)
{
	struct client_conn *cc = arg;

	if (cc->closing && cc->req == NULL && !cc->lingering &&
	    evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
		client_close_flushed(cc);
		return;
	}
	if (cc->req != NULL)
		proxy_req_client_drained(cc->req);
}

static void
client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct client_conn *cc = arg;

	if (what & BEV_EVENT_ERROR)
		log_debug("client %s: %s", cc->peer, strerror(errno));
	else if ((what & BEV_EVENT_EOF) && client_output_len(cc) > 0 &&
	    (cc->req == NULL || cc->resp_done)) {
		/* A half-close after the answer: it may still read it. */
		cc->closing = 1;
		bufferevent_disable(cc->bev, EV_READ);
		return;
	}
	client_free(cc);
}

static void
client_closed_cb(evutil_socket_t fd, short what, void *arg)
{
	struct client_conn *cc = arg;

	if (cc->req != NULL && !cc->resp_done) {
		client_free(cc);
		return;
	}
	/* Between requests the read side sees the EOF itself; stop watching
	 * so a level-triggered hang-up cannot spin while output drains. */
	event_del(cc->closed_ev);
	cc->closed_watched = 0;
}

/*
 * Answers a request that never got as far as a complete head, so has no
 * proxy_req: with an id (the client's, if it sent a sane one already),
 * counted under "other", and in the access log with what was seen of it.
 */
static void
client_refuse(struct client_conn *cc, struct response_opts *o, const char *msg,
    enum access_end end)
{
	struct httpreq *hr = &cc->req_parser;
	struct http_head *h = hr->in_head ? &hr->head : NULL;
	char rid[REQID_MAX + 1];
	struct access_rec r;
	size_t sent;

	reqid_assign(h, rid, sizeof rid);
	o->request_id = rid;
	metrics_count_request("other", ROUTE_OTHER, o->status);
	sent = response_error(client_output(cc), o, msg);
	if (!accesslog_enabled())
		return;
	memset(&r, 0, sizeof r);
	r.client = cc->peer;
	if (h != NULL && h->target_len > 0) {
		r.method = head_str(h, hr->method_off);
		r.path = head_str(h, h->target);
		r.path_len = h->target_len;
		r.http10 = hr->vlen == 8 && hr->version[7] == '0';
		r.user_agent = head_get(h, "user-agent", NULL);
		r.referer = head_get(h, "referer", NULL);
	}
	r.status = o->status;
	r.bytes_out = sent;
	r.duration = h != NULL ? (now_us() - cc->t_begin_us) / 1e6 : 0;
	r.ttfb = r.duration;
	r.request_id = rid;
	r.end = end;
	accesslog_write(&r);
}

static void
client_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct client_conn *cc = arg;
	struct response_opts o = {.status = 408, .keep_alive = 0};

	if (cc->lingering) {
		client_free(cc);
		return;
	}
	if (cc->closing)
		return;
	if (cc->req != NULL) {
		if (!cc->body_done && !cc->read_throttled && !cc->resp_done) {
			log_info("client %s: request body stalled for %g s",
			    cc->peer, rt.cfg->body_timeout);
			proxy_req_fail(cc->req, 408, 0,
			    "request body stalled for %g s (body_timeout)",
			    rt.cfg->body_timeout);
		}
		return;
	}
	if (!cc->req_parser.in_head) {
		log_debug("client %s idle for %g s: closing", cc->peer,
		    rt.cfg->idle_timeout);
		client_free(cc);
		return;
	}
	log_info("client %s: request head not complete within %g s", cc->peer,
	    rt.cfg->header_timeout);
	client_refuse(cc, &o,
	    "request headers not received in time (header_timeout)",
	    END_TIMEOUT);
	cc->closing = 1;
	bufferevent_disable(cc->bev, EV_READ);
	client_schedule(cc);
}

static void
client_read_cb(struct bufferevent *bev, void *arg)
{
	struct client_conn *cc = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t len;

	if (cc->lingering) {
		len = evbuffer_get_length(in);
		evbuffer_drain(in, len);
		if (!client_discard(cc, len))
			client_free(cc);
		return;
	}
	client_process(cc);
}

/* Answers a request the parser refused, then closes: after a framing
 * error nothing further on this connection can be trusted. */
static void
client_reject(struct client_conn *cc, int status, const char *why)
{
	struct response_opts o = {.status = status, .keep_alive = 0};
	char msg[256];

	snprintf(msg, sizeof msg, "bad request from client: %s", why);
	log_info("client %s: %s", cc->peer, msg);
	bufferevent_disable(cc->bev, EV_READ);
	if (cc->req != NULL) {
		/* The body broke its framing: answer through the request
		 * (or, once its answer began, just close). */
		cc->req->end = END_REFUSED;
		proxy_req_fail(cc->req, status, 0, "%s", msg);
		cc->closing = 1;
		return;
	}
	/* No head worth a route: counted under "other". */
	client_refuse(cc, &o, msg, END_REFUSED);
	cc->closing = 1;
	client_schedule(cc);
}

/* A request's first byte: its head must be complete by header_timeout,
 * however slowly it trickles in. */
static void
client_on_begin(void *arg)
{
	struct client_conn *cc = arg;
	struct httpreq_limits lim;

	client_parser_limits(&lim);
	httpreq_set_limits(&cc->req_parser, &lim);
	cc->t_begin_us = now_us();
	client_timer_start(cc, rt.cfg->header_timeout);
}

static int
client_on_head(void *arg, struct http_head *h)
{
	struct client_conn *cc = arg;

	/* A body, if one comes, must keep coming: body_timeout. */
	if (h->chunked || h->content_length > 0)
		client_timer_start(cc, rt.cfg->body_timeout);
	else
		evtimer_del(cc->timer_ev);
	if (!cc->closed_watched) {
		event_add(cc->closed_ev, NULL);
		cc->closed_watched = 1;
	}
	cc->body_done = 0;
	cc->resp_done = 0;
	cc->discarded = 0;
	/* 100 Continue waits until the request is accepted (proxy.c): a
	 * refused request must not invite its body. */
	cc->expect_pending = h->expect_continue && h->http_minor >= 1 &&
	    (h->chunked || h->content_length > 0);
	cc->req = proxy_req_new(cc, h);
	proxy_req_start(cc->req);
	return 0;
}

static int
client_on_body(void *arg, const char *data, size_t len)
{
	struct client_conn *cc = arg;

	/* After an early answer a little more of the body is read and
	 * dropped, so a short one leaves the connection in step for the
	 * next request; a long one closes it. */
	if (cc->req != NULL && !cc->resp_done)
		proxy_req_body(cc->req, data, len);
	else
		client_discard(cc, len);
	return 0;
}

/* Returns 1 when the exchange is over already and parsing may go on. */
static int
client_on_complete(void *arg)
{
	struct client_conn *cc = arg;

	cc->body_done = 1;
	if (cc->req != NULL) {
		evtimer_del(cc->timer_ev);
		if (!cc->resp_done)
			proxy_req_body_end(cc->req);
		return 0;
	}
	/* The response went out while the body was still arriving. */
	if (cc->closing)
		return 0;
	client_timer_start(cc, rt.cfg->idle_timeout);
	return 1;
}

/* Watch for a reset exactly while a request is under way and we are not
 * reading: throttled, or with a full input buffer behind a paused parser. */
static void
client_watch_update(struct client_conn *cc)
{
	client_watch(cc,
	    cc->req != NULL && !cc->resp_done &&
	        (cc->read_throttled ||
	            evbuffer_get_length(bufferevent_get_input(cc->bev)) >=
	                CLIENT_READ_HIGH));
}

static void
client_process(struct client_conn *cc)
{
	struct evbuffer *in = bufferevent_get_input(cc->bev);
	struct httpreq *hr = &cc->req_parser;
	unsigned char *data;
	ssize_t n;
	size_t len;

	while (!cc->closing && !hr->paused) {
		if (cc->req != NULL && !cc->body_done &&
		    !proxy_req_wants_body(cc->req)) {
			/* The upstream is not keeping up: stop reading until
			 * curl drains the body buffer. */
			cc->read_throttled = 1;
			bufferevent_disable(cc->bev, EV_READ);
			evtimer_del(cc->timer_ev); /* we stopped, not them */
			client_watch_update(cc);
			return;
		}
		len = evbuffer_get_contiguous_space(in);
		if (len == 0)
			break;
		data = evbuffer_pullup(in, len);
		n = httpreq_feed(hr, (const char *)data, len);
		if (n < 0) {
			client_reject(cc, hr->error_status, hr->error);
			return;
		}
		evbuffer_drain(in, n);
		if (cc->req != NULL && !cc->body_done && n > 0)
			client_timer_start(cc, rt.cfg->body_timeout);
	}
	if (cc->read_throttled && !cc->closing) {
		cc->read_throttled = 0;
		bufferevent_enable(cc->bev, EV_READ);
	}
	client_watch_update(cc);
}

/* Winds up an answered exchange and carries on with the connection. */
static void
client_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct client_conn *cc = arg;

	if (cc->req != NULL && cc->resp_done) {
		/* With the body still coming this also stops its upload: the
		 * upstream answered without waiting for it. */
		proxy_req_free(cc->req);
		cc->req = NULL;
		client_watch(cc, 0);
		/* Answered early: a declared rest beyond what we drop is
		 * not worth waiting for. */
		if (!cc->body_done && !cc->req_parser.head.chunked &&
		    cc->req_parser.body_left > CLIENT_DISCARD_MAX)
			cc->closing = 1;
		if (cc->body_done && !cc->closing) {
			/* Idle until the next request: its head buffers are
			 * made again then, so thousands of kept-alive clients
			 * hold none. */
			head_free(&cc->req_parser.head);
			head_free(&cc->resp_head);
			httpreq_resume(&cc->req_parser);
			client_timer_start(cc, rt.cfg->idle_timeout);
		}
	}
	if (cc->closing && cc->req == NULL) {
		if (cc->lingering)
			return;
		bufferevent_disable(cc->bev, EV_READ);
		if (client_output_len(cc) == 0)
			client_close_flushed(cc);
		return;
	}
	if (cc->read_throttled) {
		cc->read_throttled = 0;
		bufferevent_enable(cc->bev, EV_READ);
		if (cc->req != NULL && !cc->body_done)
			client_timer_start(cc, rt.cfg->body_timeout);
	}
	client_process(cc); /* updates the reset watch too */
}
