/*
 * curlbench: a bare libcurl multi client, the ceiling of any proxy built
 * on libcurl.  No proxying, no parsing of its own: N easy handles on one
 * multi handle, each re-added as soon as its transfer ends, so N
 * transfers are always in flight over connections the multi handle keeps
 * and reuses.  Set up as ollama-pool sets up its transfers (signals off,
 * no progress meter, a write callback that drops the body).
 *
 *   curlbench -V
 *	Prints libcurl's version.
 *   curlbench -u URL [-n INFLIGHT] [-d SECONDS]
 *	Prints one line of key=value: inflight, requests (completed with
 *	status 200), failed, seconds, rps, and connects (connections the
 *	transfers had to open; INFLIGHT once the cache is warm).
 */
#include <curl/curl.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void
die(const char *msg)
{
	fprintf(stderr, "curlbench: %s\n", msg);
	exit(2);
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t
drop(char *p, size_t size, size_t n, void *arg)
{
	(void)p;
	(void)arg;
	return size * n;
}

static CURL *
easy_new(const char *url)
{
	CURL *e = curl_easy_init();

	if (e == NULL)
		die("curl_easy_init failed");
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_NOPROGRESS, 1L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, drop);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	return e;
}

/* Collects finished transfers, counts them and starts each again. */
static void
reap(CURLM *m, double until, long *ok, long *failed, long *connects,
    int *running)
{
	CURLMsg *msg;
	CURL *e;
	long status, nc;
	int left;

	while ((msg = curl_multi_info_read(m, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		e = msg->easy_handle;
		status = 0;
		nc = 0;
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
		curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &nc);
		*connects += nc;
		if (msg->data.result == CURLE_OK && status == 200)
			(*ok)++;
		else
			(*failed)++;
		curl_multi_remove_handle(m, e);
		if (now_s() < until) {
			curl_multi_add_handle(m, e);
			(*running)++;
		}
	}
}

int
main(int argc, char **argv)
{
	const char *url = NULL;
	int opt, inflight = 20, running = 0, i;
	double secs = 5, t0, t1;
	long ok = 0, failed = 0, connects = 0;
	CURLM *m;
	CURL **easy;

	while ((opt = getopt(argc, argv, "Vu:n:d:")) != -1)
		switch (opt) {
		case 'V':
			printf("%s\n", curl_version());
			return 0;
		case 'u':
			url = optarg;
			break;
		case 'n':
			inflight = atoi(optarg);
			break;
		case 'd':
			secs = atof(optarg);
			break;
		default:
			die("usage: curlbench -u URL [-n INFLIGHT] [-d "
			    "SECONDS]");
		}
	if (url == NULL || inflight < 1)
		die("usage: curlbench -u URL [-n INFLIGHT] [-d SECONDS]");
	curl_global_init(CURL_GLOBAL_DEFAULT);
	m = curl_multi_init();
	curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)inflight);
	easy = calloc((size_t)inflight, sizeof *easy);
	if (easy == NULL)
		die("out of memory");
	t0 = now_s();
	for (i = 0; i < inflight; i++) {
		easy[i] = easy_new(url);
		curl_multi_add_handle(m, easy[i]);
	}
	do {
		if (curl_multi_perform(m, &running) != CURLM_OK)
			die("curl_multi_perform failed");
		reap(m, t0 + secs, &ok, &failed, &connects, &running);
		if (running > 0 &&
		    curl_multi_poll(m, NULL, 0, 1000, NULL) != CURLM_OK)
			die("curl_multi_poll failed");
	} while (running > 0);
	t1 = now_s();
	printf("inflight=%d requests=%ld failed=%ld seconds=%.3f rps=%.2f "
	       "connects=%ld\n",
	    inflight, ok, failed, t1 - t0, (double)ok / (t1 - t0), connects);
	for (i = 0; i < inflight; i++)
		curl_easy_cleanup(easy[i]);
	free(easy);
	curl_multi_cleanup(m);
	curl_global_cleanup();
	return failed != 0;
}
