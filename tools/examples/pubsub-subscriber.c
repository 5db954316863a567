/* SPDX-License-Identifier: MIT */
/* Publish/subscribe in C, the subscriber: open a service by name (waiting up to 10 s for it to
 * appear), print every message until the publisher closes or dies. With COUNT, exit 0 only if
 * exactly COUNT messages arrived.
 *
 *   pubsub-subscriber example.chat [COUNT] */
#include <abd/abd.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECOND_NS 1000000000ll

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "example.chat";
	long expect = argc > 2 ? strtol(argv[2], NULL, 10) : -1;

	struct abd_service *svc;
	/* cfg NULL: any service of that name, in the default registry directory. */
	int r = abd_service_open(name, NULL, ABD_SERVICE_CONSUMER, 10 * SECOND_NS, &svc);
	if (r < 0) {
		fprintf(stderr, "subscriber: cannot open %s: %s\n", name, strerror(-r));
		return 1;
	}
	printf("subscriber: opened %s, published by pid %d\n", name, (int)abd_service_publisher_pid(svc));
	fflush(stdout);

	long got = 0;
	for (;;) {
		char buf[4096];
		int n = abd_service_pop(svc, buf, sizeof(buf) - 1, -1); /* -1: wait as long as it takes */
		if (n == -EPIPE)
			break; /* the publisher left, and everything it sent has been read */
		if (n < 0) {
			fprintf(stderr, "subscriber: pop: %s\n", strerror(-n));
			abd_service_close(svc);
			return 1;
		}
		buf[n] = '\0';
		printf("subscriber: %s\n", buf);
		got++;
	}
	int why = abd_service_closed(svc);
	printf("subscriber: publisher %s after %ld messages\n",
	       why == -ECONNRESET ? "died" : "closed the service", got);
	abd_service_close(svc);
	return expect < 0 || got == expect ? 0 : 1;
}
