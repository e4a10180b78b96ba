/*
 * ollama-pool: arguments, signals and the event loop.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ollama-pool.h"

/* The one piece of global mutable state. */
struct runtime rt;

uint64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void NORETURN
main_usage(int status)
{
	FILE *fp = status ? stderr : stdout;

	fprintf(fp,
	    "usage: " OP_NAME " [-c FILE] [-l ADDR]... [-u URL] [-t] [-v] "
	    "[-V] [-h]\n"
	    "  -c, --config FILE      read settings from FILE (INI)\n"
	    "  -l, --listen ADDR      accept clients on ADDR: HOST:PORT, "
	    "[V6]:PORT,\n"
	    "                         :PORT (loopback) or unix:/path; "
	    "repeatable\n"
	    "                         (default " DEFAULT_LISTEN ")\n"
	    "  -u, --upstream URL     the Ollama server, in OLLAMA_HOST "
	    "syntax\n"
	    "                         (default " DEFAULT_UPSTREAM ")\n"
	    "  -t, --check-config     check the settings, print them and "
	    "exit\n"
	    "  -v, --verbose          log more (repeat for debug)\n"
	    "  -V, --version          print the version and exit\n"
	    "  -h, --help             print this help and exit\n"
	    "Point clients at the proxy with "
	    "OLLAMA_HOST=http://127.0.0.1:11435.\n");
	exit(status);
}

static void
main_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	if (rt.stopping) {
		log_notice("second signal: exiting at once");
		exit(0);
	}
	rt.stopping = 1;
	log_notice("received %s, shutting down", strsignal(sig));
	sdnotify_send("STOPPING=1");
	listener_close_all();
	event_base_loopbreak(rt.base);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "listen", required_argument, NULL, 'l' },
		{ "upstream", required_argument, NULL, 'u' },
		{ "check-config", no_argument, NULL, 't' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct config_overrides ov;
	struct event *sigev[2];
	struct upstream *up;
	const char *file = NULL;
	char err[1024], where[512];
	int ch, check_only = 0, verbose = 0, i;

	memset(&ov, 0, sizeof ov);
	while ((ch = getopt_long(argc, argv, "c:l:u:tvVh", longopts, NULL)) !=
	    -1) {
		switch (ch) {
		case 'c':
			file = optarg;
			break;
		case 'l':
			if (ov.nlisten == MAX_LISTEN) {
				fprintf(stderr, OP_NAME ": at most %d -l\n",
				    MAX_LISTEN);
				return 2;
			}
			ov.listen[ov.nlisten++] = optarg;
			break;
		case 'u':
			ov.upstream = optarg;
			break;
		case 't':
			check_only = 1;
			break;
		case 'v':
			verbose++;
			break;
		case 'V':
			printf(OP_NAME " %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			main_usage(0);
		default:
			main_usage(2);
		}
	}
	if (optind != argc) {
		fprintf(stderr, OP_NAME ": unexpected argument '%s'\n",
		    argv[optind]);
		main_usage(2);
	}

	log_init(verbose);
	rt.cfg = config_new_defaults();
	if (config_load(rt.cfg, file, &ov, err, sizeof err) != 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (check_only) {
		config_print(rt.cfg, stdout);
		return 0;
	}

	signal(SIGPIPE, SIG_IGN);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		fatal("cannot initialise libcurl");
	rt.base = event_base_new();
	if (rt.base == NULL)
		fatal("cannot initialise libevent");
	TAILQ_INIT(&rt.upstreams);
	TAILQ_INIT(&rt.listeners);
	TAILQ_INIT(&rt.clients);
	httpreq_set_max_header_size(rt.cfg->max_header_size);

	up = upstream_new(rt.cfg);
	TAILQ_INSERT_TAIL(&rt.upstreams, up, entry);
	if (listener_open_all(rt.cfg, err, sizeof err) != 0)
		fatal("%s", err);
	sigev[0] = evsignal_new(rt.base, SIGINT, main_signal_cb, NULL);
	sigev[1] = evsignal_new(rt.base, SIGTERM, main_signal_cb, NULL);
	for (i = 0; i < 2; i++)
		evsignal_add(sigev[i], NULL);

	log_notice("forwarding to %s with a pool of %d connections",
	    up->url.base, up->pool_maxsize);
	sdnotify_send("READY=1\nSTATUS=listening on %s, upstream %s",
	    listener_summary(where, sizeof where), up->url.base);

	event_base_dispatch(rt.base);

	client_close_all();
	listener_close_all();
	while ((up = TAILQ_FIRST(&rt.upstreams)) != NULL) {
		TAILQ_REMOVE(&rt.upstreams, up, entry);
		upstream_free(up);
	}
	for (i = 0; i < 2; i++)
		event_free(sigev[i]);
	event_base_free(rt.base);
	config_free(rt.cfg);
	curl_global_cleanup();
	return 0;
}
