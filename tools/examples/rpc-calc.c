/* SPDX-License-Identifier: MIT */
/* Request-response: a server that adds two numbers, and clients that call it with deadlines.
 * Every answer reaches only the call it answers (each client has its own mailbox in a file
 * only the server can write); a server that dies fails the pending call with EPIPE at once.
 *
 *   rpc-calc serve example.calc 300 &     answer 300 calls ("A+B" -> the sum), then withdraw
 *   rpc-calc call example.calc 100        100 calls, 4 in flight, each answer checked
 *   rpc-calc call example.calc 0          call until the server leaves (exit 4 on EPIPE)
 *
 * docs/rpc.md. Exit: 0 done, 1 failure, 2 usage, 3 no server in time, 4 the server left. */
#include <abd/abd.h>

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECOND_NS 1000000000ll
#define IN_FLIGHT 4

static int serve(const char *name, long calls)
{
	struct abd_service_config cfg = {0};
	cfg.capacity = 64;
	cfg.slot_size = 64; /* the largest request */
	struct abd_rpc_opts opts = {0};
	opts.response_size = 32;
	opts.in_flight = IN_FLIGHT;
	struct abd_service *svc;
	int r = abd_service_publish_rpc(name, &cfg, &opts, 0, &svc);
	if (r < 0) {
		fprintf(stderr, "publish %s: %s\n", name, strerror(-r));
		return 1;
	}
	printf("serving %s\n", name);
	fflush(stdout);
	for (long n = 0; calls == 0 || n < calls;) {
		char req[65], resp[32];
		uint64_t token;
		r = abd_service_take(svc, req, sizeof(req) - 1, &token, -1);
		if (r == -EINTR)
			continue;
		if (r < 0) {
			fprintf(stderr, "take: %s\n", strerror(-r));
			break;
		}
		req[r] = 0;
		long long a, b;
		if (sscanf(req, "%lld+%lld", &a, &b) != 2) {
			(void)abd_service_reply_error(svc, token, -EINVAL); /* the caller gets -EINVAL */
			continue;
		}
		int len = snprintf(resp, sizeof(resp), "%lld", a + b);
		r = abd_service_reply(svc, token, resp, (size_t)len);
		if (r < 0 && r != -ESTALE) /* -ESTALE: the caller gave up on that call */
			fprintf(stderr, "reply: %s\n", strerror(-r));
		n++;
	}
	abd_service_close(svc); /* pending calls fail with EPIPE */
	return r < 0 ? 1 : 0;
}

static int call(const char *name, long calls)
{
	struct abd_service *svc;
	int r = abd_service_open(name, NULL, 0, 10 * SECOND_NS, &svc);
	if (r < 0) {
		fprintf(stderr, "open %s: %s\n", name, strerror(-r));
		return r == -ETIMEDOUT ? 3 : 1;
	}
	if (abd_service_is_rpc(svc) != 1) {
		fprintf(stderr, "%s is not a request-response service\n", name);
		abd_service_close(svc);
		return 1;
	}
	int ret = 0;
	long done = 0;
	for (long i = 0; (calls == 0 || i < calls) && !ret;) {
		/* a few calls in flight, then each answer in turn, each with a deadline */
		uint64_t ticket[IN_FLIGHT];
		long long want[IN_FLIGHT];
		int k = 0;
		for (; k < IN_FLIGHT && (calls == 0 || i < calls); k++, i++) {
			char req[64];
			int len = snprintf(req, sizeof(req), "%ld+%ld", i, 1000 * i);
			want[k] = 1001ll * i;
			r = abd_service_call_send(svc, req, (size_t)len, &ticket[k], 2 * SECOND_NS);
			if (r < 0)
				break;
		}
		for (int j = 0; j < k && r >= 0; j++) {
			char resp[32];
			r = abd_service_call_wait(svc, ticket[j], resp, sizeof(resp) - 1, 2 * SECOND_NS);
			if (r >= 0) {
				resp[r] = 0;
				if (strtoll(resp, NULL, 10) != want[j]) {
					fprintf(stderr, "wrong answer: %s, not %lld\n", resp, want[j]);
					ret = 1;
				}
				done++;
			}
		}
		if (r < 0) {
			fprintf(stderr, "call: %s\n", strerror(-r));
			ret = r == -EPIPE ? 4 : 1;
		} else if (done % 1000 == 0 || done == calls) {
			printf("%ld calls answered\n", done);
			fflush(stdout);
		}
	}
	abd_service_close(svc);
	return ret;
}

int main(int argc, char **argv)
{
	if (argc != 4 || (strcmp(argv[1], "serve") != 0 && strcmp(argv[1], "call") != 0)) {
		fprintf(stderr, "usage: rpc-calc serve|call NAME COUNT (0: forever)\n");
		return 2;
	}
	long n = strtol(argv[3], NULL, 10);
	return strcmp(argv[1], "serve") == 0 ? serve(argv[2], n) : call(argv[2], n);
}
