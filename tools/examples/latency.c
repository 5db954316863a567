/* SPDX-License-Identifier: MIT */
/* Round trips through two services, with live latency figures; ./tools/demo runs it.
 *
 *   latency echo NAME            publishes NAME.pong, opens NAME.ping: sends back what it gets
 *   latency ping NAME [SECONDS]  publishes NAME.ping, opens NAME.pong: sends a timestamp,
 *                                waits for it to come back, prints round trips/s, p50, p99
 *                                and max every second for SECONDS (default 3; 0: until the
 *                                echo side leaves)
 *
 * Each side publishes one service and opens the other's on one shared reactor (cfg.reactor),
 * so that while it waits for the other's service it also answers the other's handshake.
 * Exit (ping): 0 after SECONDS, 4 when the echo side left first (after printing how long after
 * the last reply that was noticed), 1 on errors. */
#include <abd/abd.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SECOND_NS 1000000000ll
#define MAX_SAMPLES (1u << 20)

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * SECOND_NS + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

static void fmt_ns(char *buf, size_t size, int64_t ns)
{
	if (ns < 1000)
		snprintf(buf, size, "%lld ns", (long long)ns);
	else if (ns < 1000000)
		snprintf(buf, size, "%.1f us", (double)ns / 1e3);
	else
		snprintf(buf, size, "%.2f ms", (double)ns / 1e6);
}

/* Publish `mine` and open `theirs`, both on reactor r: the pinger publishes first, the echo
 * side opens first. (Both opening first would have each wait for the other's answer.) */
static int connect_pair(struct abd_reactor *r, bool publish_first, const char *mine,
                        const char *theirs, struct abd_service **out, struct abd_service **in)
{
	struct abd_service_config cfg = {0};
	cfg.reactor = r;
	cfg.capacity = 8;
	cfg.slot_size = 64;
	int e = 0;
	if (publish_first && (e = abd_service_publish(mine, &cfg, ABD_SERVICE_PRODUCER, out)) < 0)
		return fprintf(stderr, "latency: publish %s: %s\n", mine, strerror(-e)), e;
	e = abd_service_open(theirs, &cfg, ABD_SERVICE_CONSUMER, 10 * SECOND_NS, in);
	if (e < 0) {
		fprintf(stderr, "latency: open %s: %s\n", theirs, strerror(-e));
		if (publish_first)
			abd_service_close(*out);
		return e;
	}
	if (!publish_first && (e = abd_service_publish(mine, &cfg, ABD_SERVICE_PRODUCER, out)) < 0) {
		fprintf(stderr, "latency: publish %s: %s\n", mine, strerror(-e));
		abd_service_close(*in);
	}
	return e;
}

static int echo(struct abd_service *out, struct abd_service *in)
{
	char buf[64];
	for (;;) {
		int n = abd_service_pop(in, buf, sizeof(buf), -1);
		if (n == -EPIPE)
			return 0; /* the pinger left */
		if (n < 0)
			return fprintf(stderr, "latency echo: pop: %s\n", strerror(-n)), 1;
		int e = abd_service_push(out, buf, (size_t)n, SECOND_NS);
		if (e == -EPIPE)
			return 0;
		if (e < 0)
			return fprintf(stderr, "latency echo: push: %s\n", strerror(-e)), 1;
	}
}

static void report(int64_t *s, size_t n, int second)
{
	if (!n) {
		printf("  %2ds  no round trip completed\n", second);
		return;
	}
	qsort(s, n, sizeof(*s), cmp_i64);
	char p50[32], p99[32], max[32];
	fmt_ns(p50, sizeof(p50), s[n / 2]);
	fmt_ns(p99, sizeof(p99), s[n * 99 / 100]);
	fmt_ns(max, sizeof(max), s[n - 1]);
	printf("  %2ds  %7zu round trips/s   p50 %-9s  p99 %-9s  max %s\n", second, n, p50, p99, max);
	fflush(stdout);
}

static int ping(struct abd_service *out, struct abd_service *in, int seconds)
{
	int64_t *samples = malloc(MAX_SAMPLES * sizeof(*samples));
	if (!samples)
		return 1;
	size_t n = 0;
	int second = 0, rc = 0;
	int64_t start = now_ns(), window = start, last_reply = start;
	printf("  round trip = push a timestamp to the echo process, pop it back (blocking both ways)\n");
	for (;;) {
		int64_t t0 = now_ns(), back;
		int e = abd_service_push(out, &t0, sizeof(t0), SECOND_NS);
		if (e == 0) {
			int got = abd_service_pop(in, &back, sizeof(back), 2 * SECOND_NS);
			e = got == (int)sizeof(back) && back == t0 ? 0 : got < 0 ? got : -EBADMSG;
		}
		int64_t t1 = now_ns();
		if (e == -EPIPE) {
			char when[32];
			fmt_ns(when, sizeof(when), t1 - last_reply);
			printf("  echo side gone (%s): noticed %s after its last reply\n",
			       abd_service_closed(in) == -ECONNRESET ? "it died" : "it closed", when);
			rc = 4;
			break;
		}
		if (e < 0) {
			fprintf(stderr, "latency ping: %s\n", strerror(-e));
			rc = 1;
			break;
		}
		last_reply = t1;
		if (n < MAX_SAMPLES)
			samples[n++] = t1 - t0;
		if (t1 - window >= SECOND_NS) {
			report(samples, n, ++second);
			n = 0;
			window = t1;
			if (seconds > 0 && second >= seconds)
				break;
		}
	}
	free(samples);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc < 3 || (strcmp(argv[1], "echo") && strcmp(argv[1], "ping"))) {
		fprintf(stderr, "usage: latency echo|ping NAME [SECONDS]\n");
		return 2;
	}
	bool is_ping = !strcmp(argv[1], "ping");
	char pingname[80], pongname[80];
	snprintf(pingname, sizeof(pingname), "%s.ping", argv[2]);
	snprintf(pongname, sizeof(pongname), "%s.pong", argv[2]);

	struct abd_reactor *r;
	int e = abd_reactor_new(0, &r);
	if (e < 0)
		return fprintf(stderr, "latency: reactor: %s\n", strerror(-e)), 1;
	struct abd_service *out, *in;
	e = is_ping ? connect_pair(r, true, pingname, pongname, &out, &in)
	            : connect_pair(r, false, pongname, pingname, &out, &in);
	if (e < 0) {
		abd_reactor_free(r);
		return 1;
	}
	int rc = is_ping ? ping(out, in, argc > 3 ? atoi(argv[3]) : 3) : echo(out, in);
	abd_service_close(in);
	abd_service_close(out);
	abd_reactor_free(r); /* after the services that run on it */
	return rc;
}
