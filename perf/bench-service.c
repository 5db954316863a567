/* SPDX-License-Identifier: MIT */
/* service: what the front door (include/abd/service.h) costs over the ring it wraps.
 *
 * One process publishes a service (consumer role), the other opens it by name (producer
 * role; pidfd_getfd or the handshake); 64-byte messages, 1024 slots, default (multi-producer,
 * multi-consumer) modes. Each case runs twice on the very same setup: once through
 * abd_service_try_push/try_pop (or the blocking forms) and once through abd_ring_* on
 * abd_service_ring(), so the ratio is exactly the service layer (role and size checks, the
 * closed flag, the blocking loop):
 *   abd-ring    throughput-svc / throughput-svc-block   baseline bare-spsc "throughput-64B"
 *   abd-service throughput     / throughput-block       baseline abd-ring, the same case + -svc
 * Spin rows also count syscalls per message (the fast paths make none). */
#include <abd/abd.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "perf/bench.h"

#define NAME "perf.svc"
#define BYTES 64

struct shared {
	char dir[128];
};

struct cfg {
	bool direct; /* through abd_ring_* on the service's ring */
	bool block;
};

struct state {
	struct abd_service *svc;
	struct abd_ring *ring;
	const struct cfg *c;
};

static int s_prepare(void *shm, void *arg)
{
	(void)arg;
	struct shared *s = shm;
	return bench_tmpdir(s->dir, sizeof(s->dir));
}

static void s_cleanup(void *shm, void *arg)
{
	(void)arg;
	struct shared *s = shm;
	bench_rmdir(s->dir);
}

static struct state st_child; /* one per child process */

static int s_init(enum bench_role role, void *shm, void *arg, void **out)
{
	struct shared *s = shm;
	struct abd_service_config cfg = { 0 };
	cfg.dir = s->dir;
	cfg.capacity = 1024;
	cfg.slot_size = BYTES;
	st_child.c = arg;
	int r = role == BENCH_B
	            ? abd_service_publish(NAME, &cfg, ABD_SERVICE_CONSUMER, &st_child.svc)
	            : abd_service_open(NAME, &cfg, ABD_SERVICE_PRODUCER, 10ll * 1000 * 1000 * 1000,
	                               &st_child.svc);
	if (r < 0)
		return bench_fail("%s: %s", role == BENCH_B ? "publish" : "open", strerror(-r));
	st_child.ring = abd_service_ring(st_child.svc);
	*out = &st_child;
	return 0;
}

static void s_fini(enum bench_role role, void *state)
{
	(void)role;
	struct state *st = state;
	abd_service_close(st->svc);
}

static int s_produce(void *state, uint64_t n)
{
	struct state *st = state;
	unsigned char msg[BYTES] = { 0 };
	for (uint64_t i = 0; i < n; i++) {
		memcpy(msg, &i, sizeof(i));
		int r;
		if (st->c->block)
			r = st->c->direct ? abd_ring_push(st->ring, msg, sizeof(msg), -1)
			                  : abd_service_push(st->svc, msg, sizeof(msg), -1);
		else
			while ((r = st->c->direct ? abd_ring_try_push(st->ring, msg, sizeof(msg))
			                          : abd_service_try_push(st->svc, msg, sizeof(msg))) ==
			       -EAGAIN)
				bench_relax();
		if (r < 0)
			return r;
	}
	return 0;
}

static int s_consume(void *state, uint64_t n)
{
	struct state *st = state;
	unsigned char msg[BYTES];
	for (uint64_t i = 0; i < n; i++) {
		int r;
		if (st->c->block)
			r = st->c->direct ? abd_ring_pop(st->ring, msg, sizeof(msg), -1)
			                  : abd_service_pop(st->svc, msg, sizeof(msg), -1);
		else
			while ((r = st->c->direct ? abd_ring_try_pop(st->ring, msg, sizeof(msg))
			                          : abd_service_try_pop(st->svc, msg, sizeof(msg))) ==
			       -EAGAIN)
				bench_relax();
		if (r < 0)
			return r;
		if (r != BYTES)
			return -EBADMSG;
	}
	return 0;
}

/* abd-ring throughput-svc[-block] against bare-spsc throughput, then abd-service
 * throughput[-block] against that ring row on the very same setup, each in interleaved
 * rounds. */
static void rows(const char *cpus, bool block, uint64_t iters)
{
	struct cfg svc = { .direct = false, .block = block }, ring = { .direct = true, .block = block };
	struct bench_pair p = { .shm_size = sizeof(struct shared), .arg = &svc, .prepare = s_prepare,
	                        .cleanup = s_cleanup, .init = s_init, .fini = s_fini,
	                        .produce = s_produce, .consume = s_consume,
	                        .count_syscalls = !block };
	struct bench_pair q = p;
	q.arg = &ring;
	const char *ring_case = block ? "throughput-svc-block" : "throughput-svc";
	bench_throughput(&q, (struct bench_row){ .subject = "abd-ring", .case_name = ring_case,
	                                         .cpus = cpus, .msg_bytes = BYTES,
	                                         .baseline = "bare-spsc",
	                                         .baseline_case = "throughput-64B" }, iters);
	struct bench_row r = { .subject = "abd-service", .case_name = block ? "throughput-block" : "throughput",
	                       .cpus = cpus, .msg_bytes = BYTES, .baseline = "abd-ring",
	                       .baseline_case = ring_case };
	struct bench_pair_sample mine = { &p, iters, true }, theirs = { &q, iters, true };
	struct bench_versus *v = calloc(1, sizeof(*v));
	if (!v) {
		bench_skip(&r, "out of memory");
		return;
	}
	v->fn = bench_pair_sample;
	v->ctx = &mine;
	v->base_fn = bench_pair_sample;
	v->base_ctx = &theirs;
	bench_versus(v, r);
	free(v);
}

void bench_service(void)
{
	uint64_t spin = bench_iters(2000000, 100000), block = bench_iters(500000, 20000);
	const char *modes[] = { BENCH_SPLIT, BENCH_SHARED };
	for (int m = 0; m < 2; m++) {
		rows(modes[m], false, spin);
		rows(modes[m], true, block);
	}
}
