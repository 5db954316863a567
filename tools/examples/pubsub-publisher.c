/* SPDX-License-Identifier: MIT */
/* Publish/subscribe in C, the publisher: publish a ring service under a name, wait for a
 * subscriber, send it COUNT text messages, close. Closing tells every subscriber: they receive
 * what was sent, then -EPIPE.
 *
 *   pubsub-subscriber example.chat 5 &      (either may start first)
 *   pubsub-publisher example.chat 5
 *
 * Only <abd/abd.h> and the service calls: see docs/getting-started.md. */
#include <abd/abd.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECOND_NS 1000000000ll

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "example.chat";
	long count = argc > 2 ? strtol(argv[2], NULL, 10) : 10;

	/* Zero the configuration, then set what matters: 64 slots of up to 128 bytes. */
	struct abd_service_config cfg = {0};
	cfg.capacity = 64;
	cfg.slot_size = 128;

	struct abd_service *svc;
	int r = abd_service_publish(name, &cfg, ABD_SERVICE_PRODUCER, &svc);
	if (r < 0) {
		fprintf(stderr, "publisher: cannot publish %s: %s\n", name, strerror(-r));
		return 1;
	}
	printf("publisher: published %s (record %s)\n", name, abd_service_record_name(svc));
	fflush(stdout);

	/* Wait up to 10 s for a subscriber. Running the service's reactor is what answers a
	 * subscriber that opens the service through the handshake. */
	struct abd_service_stats st = {0};
	for (int i = 0; i < 1000; i++) {
		if (abd_service_stats(svc, &st) == 0 && st.consumers > 0)
			break;
		r = abd_reactor_run_once(abd_service_reactor(svc), SECOND_NS / 100);
		if (r < 0) {
			fprintf(stderr, "publisher: reactor: %s\n", strerror(-r));
			break;
		}
	}
	if (st.consumers == 0) {
		fprintf(stderr, "publisher: no subscriber came\n");
		abd_service_close(svc);
		return 1;
	}

	for (long i = 1; i <= count; i++) {
		char msg[128];
		int n = snprintf(msg, sizeof(msg), "message %ld of %ld", i, count);
		/* Blocks (up to 5 s) while the ring is full; serves handshakes meanwhile. */
		r = abd_service_push(svc, msg, (size_t)n, 5 * SECOND_NS);
		if (r < 0) {
			fprintf(stderr, "publisher: push: %s\n", strerror(-r));
			abd_service_close(svc);
			return 1;
		}
	}
	printf("publisher: sent %ld messages, closing\n", count);
	abd_service_close(svc); /* subscribers drain what was sent, then get -EPIPE */
	return 0;
}
