/* SPDX-License-Identifier: MIT */
/* `abd-perf rpc`: a request-response round trip (abd_service_call: one request through the
 * request ring, the answer into the caller's mailbox of the response file) against what it
 * replaces, two one-way hand-offs through two ring services (abd_service_push, then
 * abd_service_pop of the reply: the pingpong family's rtt-block), measured in interleaved
 * rounds, 64-byte messages, both processes blocking, one reactor each (the default backend).
 *   abd-rpc rtt-call   baseline abd-service rtt-block   target: ratio <= 1.2
 * B publishes (the server; or the two services) at init; A opens in its first ping (a warm-up
 * round trip): where the acquisition takes the handshake, B's reactor answers it from inside
 * its blocking take/pop. */
#include <abd/abd.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "perf/bench.h"

#define BYTES 64
#define OPEN_NS (10ll * 1000 * 1000 * 1000)

struct shared {
	char dir[128];
};

static struct {
	struct shared *s;
	struct abd_service *a, *b; /* rpc: a = the service; rings: a = out, b = in */
} child; /* one per child process */

static int r_prepare(void *shm, void *arg)
{
	(void)arg;
	struct shared *s = shm;
	return bench_tmpdir(s->dir, sizeof(s->dir));
}

static void r_cleanup(void *shm, void *arg)
{
	(void)arg;
	bench_rmdir(((struct shared *)shm)->dir);
}

static void r_fini(enum bench_role role, void *state)
{
	(void)role, (void)state;
	abd_service_close(child.a);
	abd_service_close(child.b);
	child.a = child.b = NULL;
}

static struct abd_service_config r_config(void)
{
	struct abd_service_config cfg = { 0 };
	cfg.dir = child.s->dir;
	cfg.capacity = 64;
	cfg.slot_size = BYTES;
	return cfg;
}

/* ---- request-response ---- */

static int call_init(enum bench_role role, void *shm, void *arg, void **out)
{
	(void)arg;
	child.s = shm;
	*out = NULL;
	if (role == BENCH_A)
		return 0;
	struct abd_service_config cfg = r_config();
	struct abd_rpc_opts o = { .response_size = BYTES, .in_flight = 1 };
	int r = abd_service_publish_rpc("perf.rpc", &cfg, &o, 0, &child.a);
	return r < 0 ? bench_fail("publish_rpc: %s", strerror(-r)) : 0;
}

static int call_ping(void *state, uint64_t *ns)
{
	(void)state;
	unsigned char req[BYTES] = { 1 }, resp[BYTES];
	static uint64_t seq;
	uint64_t v = ++seq, got;
	int r;
	if (!child.a) {
		struct abd_service_config cfg = r_config();
		if ((r = abd_service_open("perf.rpc", &cfg, 0, OPEN_NS, &child.a)) < 0)
			return bench_fail("open: %s", strerror(-r));
	}
	uint64_t t0 = bench_now_ns();
	memcpy(req, &v, sizeof(v));
	if ((r = abd_service_call(child.a, req, sizeof(req), resp, sizeof(resp), -1)) != BYTES)
		return r < 0 ? r : -EBADMSG;
	*ns = bench_now_ns() - t0;
	memcpy(&got, resp, sizeof(got));
	return got == v ? 0 : -EBADMSG;
}

static int call_pong(void *state)
{
	(void)state;
	unsigned char req[BYTES];
	uint64_t token;
	int r = abd_service_take(child.a, req, sizeof(req), &token, -1);
	if (r != BYTES)
		return r < 0 ? r : -EBADMSG;
	return abd_service_reply(child.a, token, req, BYTES);
}

/* ---- two ring services, one each way ---- */

static int ring_init(enum bench_role role, void *shm, void *arg, void **out)
{
	(void)arg;
	child.s = shm;
	*out = NULL;
	if (role == BENCH_A)
		return 0;
	struct abd_service_config cfg = r_config();
	int r = abd_service_publish("perf.rpc.ab", &cfg, ABD_SERVICE_CONSUMER, &child.b);
	if (r == 0) {
		cfg.reactor = abd_service_reactor(child.b); /* one reactor for both, as a server */
		r = abd_service_publish("perf.rpc.ba", &cfg, ABD_SERVICE_PRODUCER, &child.a);
	}
	return r < 0 ? bench_fail("publish: %s", strerror(-r)) : 0;
}

static int ring_ping(void *state, uint64_t *ns)
{
	(void)state;
	unsigned char msg[BYTES] = { 1 };
	static uint64_t seq;
	uint64_t v = ++seq, got;
	int r;
	if (!child.a) {
		struct abd_service_config cfg = r_config();
		r = abd_service_open("perf.rpc.ab", &cfg, ABD_SERVICE_PRODUCER, OPEN_NS, &child.a);
		if (r == 0) {
			cfg.reactor = abd_service_reactor(child.a);
			r = abd_service_open("perf.rpc.ba", &cfg, ABD_SERVICE_CONSUMER, OPEN_NS, &child.b);
		}
		if (r < 0)
			return bench_fail("open: %s", strerror(-r));
	}
	uint64_t t0 = bench_now_ns();
	memcpy(msg, &v, sizeof(v));
	if ((r = abd_service_push(child.a, msg, sizeof(msg), -1)) < 0)
		return r;
	if ((r = abd_service_pop(child.b, msg, sizeof(msg), -1)) != BYTES)
		return r < 0 ? r : -EBADMSG;
	*ns = bench_now_ns() - t0;
	memcpy(&got, msg, sizeof(got));
	return got == v ? 0 : -EBADMSG;
}

static int ring_pong(void *state)
{
	(void)state;
	unsigned char msg[BYTES];
	int r = abd_service_pop(child.b, msg, sizeof(msg), -1);
	if (r != BYTES)
		return r < 0 ? r : -EBADMSG;
	return abd_service_push(child.a, msg, sizeof(msg), -1);
}

/* The service whose reactor the other borrows goes last: B's "ab" (b), A's "ab" (a). */
static void ring_fini(enum bench_role role, void *state)
{
	(void)role, (void)state;
	if (role == BENCH_B) {
		abd_service_close(child.a);
		abd_service_close(child.b);
	} else {
		abd_service_close(child.b);
		abd_service_close(child.a);
	}
	child.a = child.b = NULL;
}

void bench_rpc(void)
{
	uint64_t iters = bench_iters(10000, 1000);
	const char *modes[] = { BENCH_SPLIT, BENCH_SHARED };
	for (int m = 0; m < 2; m++) {
		struct bench_pair call = { .shm_size = sizeof(struct shared), .prepare = r_prepare,
		                           .cleanup = r_cleanup, .init = call_init, .fini = r_fini,
		                           .ping = call_ping, .pong = call_pong };
		struct bench_pair rings = { .shm_size = sizeof(struct shared), .prepare = r_prepare,
		                            .cleanup = r_cleanup, .init = ring_init, .fini = ring_fini,
		                            .ping = ring_ping, .pong = ring_pong };
		struct bench_pair_sample mine = { &call, iters, false }, theirs = { &rings, iters, false };
		struct bench_versus *v = calloc(1, sizeof(*v));
		if (!v)
			return;
		v->fn = bench_pair_sample;
		v->ctx = &mine;
		v->base_fn = bench_pair_sample;
		v->base_ctx = &theirs;
		bench_versus(v, (struct bench_row){ .subject = "abd-rpc", .case_name = "rtt-call",
		                                    .cpus = modes[m], .msg_bytes = BYTES,
		                                    .baseline = "abd-service",
		                                    .baseline_case = "rtt-block" });
		free(v);
	}
}
