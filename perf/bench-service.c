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
 * Spin rows also count syscalls per message (the fast paths make none). The same pair is the C
 * baseline of the cpp family (bench_service_pair, perf/bench-cpp.cpp). */
#include <abd/abd.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "perf/bench.h"

#define NAME "perf.svc"
#define BYTES 64

struct shared {
	char dir[128];
	pid_t pong_pid; /* rtt rows: B's, for A's bench_until_asleep */
	_Atomic uint32_t opened; /* throughput rows: A opened the service */
};

struct cfg {
	bool direct; /* through abd_ring_* on the service's ring */
	bool block;
	bool typed;  /* the service carries the 64-byte type BENCH_MSG64_TYPE (the cpp family) */
};

/* The message type of the typed rows, as every side sets it (the C++ rows through
 * abd::service<T>, these through the same three fields). */
static void s_typed(struct abd_service_config *cfg)
{
	cfg->type_name = BENCH_MSG64_TYPE;
	cfg->type_size = BYTES;
	cfg->type_hash = abd_service_type_hash(BENCH_MSG64_LAYOUT);
}

struct state {
	struct abd_service *svc;
	struct abd_ring *ring;
	const struct cfg *c;
	struct shared *s;
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

/* B publishes at init; A opens in its first produce() (the warm-up), while B runs its
 * service's reactor in its first consume() until A has opened: where the acquisition takes
 * the handshake (no pidfd_getfd, e.g. under linux-5.4) B's reactor must answer it, and the
 * runner starts the loops only after both inits. */
static int s_init(enum bench_role role, void *shm, void *arg, void **out)
{
	struct shared *s = shm;
	st_child.c = arg;
	st_child.s = s;
	*out = &st_child;
	if (role == BENCH_A)
		return 0;
	struct abd_service_config cfg = { 0 };
	cfg.dir = s->dir;
	cfg.capacity = 1024;
	cfg.slot_size = BYTES;
	if (st_child.c->typed)
		s_typed(&cfg);
	int r = abd_service_publish(NAME, &cfg, ABD_SERVICE_CONSUMER, &st_child.svc);
	if (r < 0)
		return bench_fail("publish: %s", strerror(-r));
	st_child.ring = abd_service_ring(st_child.svc);
	return 0;
}

static int s_open(struct state *st)
{
	struct abd_service_config cfg = { 0 };
	cfg.dir = st->s->dir;
	cfg.capacity = 1024;
	cfg.slot_size = BYTES;
	if (st->c->typed)
		s_typed(&cfg);
	int r = abd_service_open(NAME, &cfg, ABD_SERVICE_PRODUCER, 10ll * 1000 * 1000 * 1000, &st->svc);
	if (r < 0)
		return bench_fail("open: %s", strerror(-r));
	st->ring = abd_service_ring(st->svc);
	atomic_store(&st->s->opened, 1);
	return 0;
}

/* B, before its first message: answer A's opening (15 s at most). */
static int s_serve_open(struct state *st)
{
	uint64_t deadline = bench_now_ns() + 15000000000ull;
	while (!atomic_load(&st->s->opened)) {
		if (bench_now_ns() > deadline)
			return bench_fail("the producer did not open the service within 15 s");
		int r = abd_reactor_run_once(abd_service_reactor(st->svc), 1000000);
		if (r < 0 && r != -EINTR && r != -ETIMEDOUT)
			return bench_fail("abd_reactor_run_once: %s", strerror(-r));
	}
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
	int e;
	if (!st->svc && (e = s_open(st)) < 0)
		return e;
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
	int e;
	if (!atomic_load(&st->s->opened) && (e = s_serve_open(st)) < 0)
		return e;
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

void bench_service_pair(struct bench_pair *p, bool direct, bool block, bool typed)
{
	static struct cfg cfgs[2][2][2];
	struct cfg *c = &cfgs[direct][block][typed];
	*c = (struct cfg){ .direct = direct, .block = block, .typed = typed };
	*p = (struct bench_pair){ .shm_size = sizeof(struct shared), .arg = c, .prepare = s_prepare,
	                          .cleanup = s_cleanup, .init = s_init, .fini = s_fini,
	                          .produce = s_produce, .consume = s_consume };
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

/* ---- round trip through two services (the pingpong family) ----
 * B publishes "perf.rtt.ab" (B pops: A -> B) and "perf.rtt.ba" (B pushes: B -> A), each an
 * SPSC ring of 64 slots of 64 bytes; A opens both. Each process runs its two services on one
 * reactor of its own, on the backend the row forces (checked). A pushes a 64-byte message
 * with abd_service_push(-1) and waits for the reply in abd_service_pop(-1); B pops it and
 * pushes it back, blocking the same way. The -asleep rows start each sample (untimed) only
 * once B sleeps, as abd-ring rtt-block-asleep does.
 *
 * A opens the services in its first ping (a warm-up round trip), not at init: where the
 * acquisition takes the handshake (no pidfd_getfd, e.g. under linux-5.4), B's reactor must
 * answer it, and B runs it only inside its blocking calls, which start after both inits. One
 * reactor per process for both services, so that B asleep in the pop of one answers the
 * opening of the other. */

struct rtt_cfg {
	unsigned reactor_flags; /* ABD_REACTOR_FORCE_IO_URING or ABD_REACTOR_FORCE_EPOLL */
	int backend;            /* what abd_reactor_backend must say */
	bool asleep;            /* A waits (untimed) for B to sleep before each ping */
};

static struct shared *rtt_shm; /* in each child, from init */

static struct {
	struct abd_reactor *reactor;
	struct abd_service *out, *in;
} rtt_child; /* one per child process */

static struct abd_service_config rtt_config(const struct shared *s)
{
	struct abd_service_config cfg = { 0 };
	cfg.dir = s->dir;
	cfg.capacity = 64;
	cfg.slot_size = BYTES;
	cfg.reactor = rtt_child.reactor;
	return cfg;
}

static int rtt_init(enum bench_role role, void *shm, void *arg, void **out)
{
	struct rtt_cfg *c = arg;
	struct shared *s = shm;
	rtt_shm = s;
	*out = c;
	int r = abd_reactor_new(c->reactor_flags, &rtt_child.reactor);
	if (r == -EOPNOTSUPP && c->backend == ABD_BACKEND_IO_URING)
		return bench_fail("io_uring: not available here (the probe or the profile lacks it)");
	if (r < 0)
		return bench_fail("abd_reactor_new: %s", strerror(-r));
	if ((r = abd_reactor_backend(rtt_child.reactor)) != c->backend)
		return bench_fail("the reactor runs on %s, not %s", abd_backend_name((enum abd_backend)r),
		                  abd_backend_name((enum abd_backend)c->backend));
	if (role == BENCH_A)
		return 0; /* opens in its first ping */
	s->pong_pid = getpid();
	struct abd_service_config cfg = rtt_config(s);
	const unsigned spsc = ABD_SERVICE_SINGLE_PRODUCER | ABD_SERVICE_SINGLE_CONSUMER;
	r = abd_service_publish("perf.rtt.ab", &cfg, ABD_SERVICE_CONSUMER | spsc, &rtt_child.in);
	if (r == 0)
		r = abd_service_publish("perf.rtt.ba", &cfg, ABD_SERVICE_PRODUCER | spsc, &rtt_child.out);
	return r < 0 ? bench_fail("publish: %s", strerror(-r)) : 0;
}

static int rtt_open(void)
{
	struct abd_service_config cfg = rtt_config(rtt_shm);
	const int64_t tmo = 10ll * 1000 * 1000 * 1000;
	int r = abd_service_open("perf.rtt.ab", &cfg, ABD_SERVICE_PRODUCER, tmo, &rtt_child.out);
	if (r == 0)
		r = abd_service_open("perf.rtt.ba", &cfg, ABD_SERVICE_CONSUMER, tmo, &rtt_child.in);
	return r < 0 ? bench_fail("open: %s", strerror(-r)) : 0;
}

static void rtt_fini(enum bench_role role, void *state)
{
	(void)role, (void)state;
	abd_service_close(rtt_child.out);
	abd_service_close(rtt_child.in);
	abd_reactor_free(rtt_child.reactor);
	rtt_child.out = rtt_child.in = NULL;
	rtt_child.reactor = NULL;
}

static int rtt_ping(void *state, uint64_t *ns)
{
	const struct rtt_cfg *c = state;
	unsigned char msg[BYTES] = { 1 };
	static uint64_t seq;
	uint64_t v = ++seq, got;
	int r;
	if (!rtt_child.out && (r = rtt_open()) < 0)
		return r;
	if (c->asleep && (r = bench_until_asleep(rtt_shm->pong_pid)) < 0)
		return r;
	uint64_t t0 = bench_now_ns();
	memcpy(msg, &v, sizeof(v));
	if ((r = abd_service_push(rtt_child.out, msg, sizeof(msg), -1)) < 0)
		return r;
	if ((r = abd_service_pop(rtt_child.in, msg, sizeof(msg), -1)) != BYTES)
		return r < 0 ? r : -EBADMSG;
	*ns = bench_now_ns() - t0;
	memcpy(&got, msg, sizeof(got));
	return got == v ? 0 : -EBADMSG;
}

static int rtt_pong(void *state)
{
	(void)state;
	unsigned char msg[BYTES];
	int r = abd_service_pop(rtt_child.in, msg, sizeof(msg), -1);
	if (r != BYTES)
		return r < 0 ? r : -EBADMSG;
	return abd_service_push(rtt_child.out, msg, sizeof(msg), -1);
}

void bench_service_rtt(const char *cpus, uint64_t iters)
{
	static struct rtt_cfg cfgs[] = {
		{ ABD_REACTOR_FORCE_IO_URING, ABD_BACKEND_IO_URING, false },
		{ ABD_REACTOR_FORCE_EPOLL, ABD_BACKEND_EPOLL, false },
		{ ABD_REACTOR_FORCE_IO_URING, ABD_BACKEND_IO_URING, true },
		{ ABD_REACTOR_FORCE_EPOLL, ABD_BACKEND_EPOLL, true },
	};
	static const struct {
		const char *case_name, *baseline_case;
	} rows[] = { { "rtt-block-io_uring", "rtt-64B" }, { "rtt-block-epoll", "rtt-64B" },
		     { "rtt-block-asleep-io_uring", "rtt-64B-asleep" },
		     { "rtt-block-asleep-epoll", "rtt-64B-asleep" } };
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct bench_pair p = { .shm_size = sizeof(struct shared), .arg = &cfgs[i],
		                        .prepare = s_prepare, .cleanup = s_cleanup, .init = rtt_init,
		                        .fini = rtt_fini, .ping = rtt_ping, .pong = rtt_pong };
		bench_pingpong(&p, (struct bench_row){ .subject = "abd-service",
		                                       .case_name = rows[i].case_name, .cpus = cpus,
		                                       .msg_bytes = BYTES, .baseline = "bare-futex",
		                                       .baseline_case = rows[i].baseline_case },
		               iters);
	}
}

/* ---- request-response (the pingpong family) ----
 * B publishes "perf.rpc" (abd_service_publish_rpc: requests and answers of 64 bytes, one call in
 * flight) on a reactor of its own (the row's backend, checked); A opens it in its first ping,
 * as above, and calls: abd_service_call(64 bytes, answer into 64 bytes, no timeout), which
 * pushes the request into the ring and sleeps in its reactor on its own word in the response
 * file; B takes the request (abd_service_take, no timeout) and replies with the same bytes.
 * Against the same round trip made of two one-way hand-offs: abd-service rtt-block-BACKEND
 * (two services on the same kind of reactor, blocking push and pop) and, for the row
 * call-vs-ring, abd-ring rtt-block (two rings, blocking forms, no reactor). */

static struct {
	struct abd_reactor *reactor;
	struct abd_service *svc;
} rpc_child;

static int rpc_init(enum bench_role role, void *shm, void *arg, void **out)
{
	struct rtt_cfg *c = arg;
	struct shared *s = shm;
	rtt_shm = s;
	*out = c;
	int r = abd_reactor_new(c->reactor_flags, &rpc_child.reactor);
	if (r == -EOPNOTSUPP && c->backend == ABD_BACKEND_IO_URING)
		return bench_fail("io_uring: not available here (the probe or the profile lacks it)");
	if (r < 0)
		return bench_fail("abd_reactor_new: %s", strerror(-r));
	if ((r = abd_reactor_backend(rpc_child.reactor)) != c->backend)
		return bench_fail("the reactor runs on %s, not %s", abd_backend_name((enum abd_backend)r),
		                  abd_backend_name((enum abd_backend)c->backend));
	if (role == BENCH_A)
		return 0; /* opens in its first ping */
	s->pong_pid = getpid();
	struct abd_service_config cfg = { 0 };
	cfg.dir = s->dir;
	cfg.capacity = 64;
	cfg.slot_size = BYTES;
	cfg.reactor = rpc_child.reactor;
	struct abd_rpc_opts o = { .response_size = BYTES, .in_flight = 1 };
	r = abd_service_publish_rpc("perf.rpc", &cfg, &o, 0, &rpc_child.svc);
	return r < 0 ? bench_fail("publish_rpc: %s", strerror(-r)) : 0;
}

static void rpc_fini(enum bench_role role, void *state)
{
	(void)role, (void)state;
	abd_service_close(rpc_child.svc);
	abd_reactor_free(rpc_child.reactor);
	rpc_child.svc = NULL;
	rpc_child.reactor = NULL;
}

static int rpc_ping(void *state, uint64_t *ns)
{
	(void)state, (void)ns;
	unsigned char msg[BYTES] = { 1 }, resp[BYTES];
	static uint64_t seq;
	uint64_t v = ++seq, got;
	int r;
	if (!rpc_child.svc) {
		struct abd_service_config cfg = { 0 };
		cfg.dir = rtt_shm->dir;
		cfg.reactor = rpc_child.reactor;
		r = abd_service_open("perf.rpc", &cfg, 0, 10ll * 1000 * 1000 * 1000, &rpc_child.svc);
		if (r < 0)
			return bench_fail("open: %s", strerror(-r));
	}
	memcpy(msg, &v, sizeof(v));
	r = abd_service_call(rpc_child.svc, msg, sizeof(msg), resp, sizeof(resp), -1);
	if (r != BYTES)
		return r < 0 ? r : -EBADMSG;
	memcpy(&got, resp, sizeof(got));
	return got == v ? 0 : -EBADMSG;
}

static int rpc_pong(void *state)
{
	(void)state;
	unsigned char msg[BYTES];
	uint64_t token;
	int r = abd_service_take(rpc_child.svc, msg, sizeof(msg), &token, -1);
	if (r != BYTES)
		return r < 0 ? r : -EBADMSG;
	return abd_service_reply(rpc_child.svc, token, msg, sizeof(msg));
}

void bench_rpc_rtt(const char *cpus, uint64_t iters, const struct bench_pair *ring_block)
{
	static struct rtt_cfg cfgs[] = {
		{ ABD_REACTOR_FORCE_IO_URING, ABD_BACKEND_IO_URING, false },
		{ ABD_REACTOR_FORCE_EPOLL, ABD_BACKEND_EPOLL, false },
	};
	static const char *const names[][2] = { { "call-io_uring", "rtt-block-io_uring" },
		                                { "call-epoll", "rtt-block-epoll" } };
	for (int vs_ring = 0; vs_ring < 2; vs_ring++) {
		for (size_t i = 0; i < (vs_ring ? 1 : 2); i++) {
			struct bench_pair rpc = { .shm_size = sizeof(struct shared), .arg = &cfgs[i],
			                          .prepare = s_prepare, .cleanup = s_cleanup,
			                          .init = rpc_init, .fini = rpc_fini, .ping = rpc_ping,
			                          .pong = rpc_pong };
			struct bench_pair svc = { .shm_size = sizeof(struct shared), .arg = &cfgs[i],
			                          .prepare = s_prepare, .cleanup = s_cleanup,
			                          .init = rtt_init, .fini = rtt_fini, .ping = rtt_ping,
			                          .pong = rtt_pong };
			struct bench_pair_sample mine = { &rpc, iters, false };
			struct bench_pair_sample theirs = { vs_ring ? ring_block : &svc, iters, false };
			struct bench_row row = { .subject = "abd-rpc",
			                         .case_name = vs_ring ? "call-vs-ring" : names[i][0],
			                         .cpus = cpus, .msg_bytes = BYTES,
			                         .baseline = vs_ring ? "abd-ring" : "abd-service",
			                         .baseline_case = vs_ring ? "rtt-block" : names[i][1] };
			struct bench_versus *v = calloc(1, sizeof(*v));
			if (!v)
				return;
			v->fn = bench_pair_sample;
			v->ctx = &mine;
			v->base_fn = bench_pair_sample;
			v->base_ctx = &theirs;
			bench_versus(v, row);
			free(v);
		}
	}
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
