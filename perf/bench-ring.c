/* SPDX-License-Identifier: MIT */
/* `abd-perf ring` and `abd-perf pingpong`: the shared-memory ring against the bare floors and
 * the peers, in the same invocation.
 *
 * ring (throughput, messages/s, rings of 4096 slots; baseline a bare ring moving messages of
 * the same size, same cpus: bare-spsc "throughput-8B" / "-64B" / "-1KiB" for 1P1C rows,
 * bare-mpmc "throughput-2p2c-8B" / ... for 2P2C rows):
 *   abd-ring throughput           1P1C, single-producer/single-consumer ring, try forms + spin
 *   abd-ring throughput-block     1P1C, blocking forms (a consumer that runs dry sleeps)
 *   abd-ring throughput-2p2c      2 producer threads in one process, 2 consumer threads in the
 *                                 other, MPMC ring, spin (threads, not 4 processes: the runner is
 *                                 a pair; the contention on the shared memory is the same); the
 *                                 consumers add to a shared count every 64 messages
 *   abd-ring throughput-2p2c-block  the same with blocking forms
 *     each at 8 B, 64 B and 1 KiB
 *   abd-ring throughput-batch     1P1C, 8 B, batch forms (64 per call); vs bare-spsc
 *                                 "throughput-batch"
 *   abd-ring throughput-busy      1P1C, 8 B, blocking forms with a busy consumer; the runner
 *                                 counts both processes' syscalls (perf tracepoint) in the timed
 *                                 phase: syscalls_per_msg
 *   abd-ring syscalls-busy        the same run seen by the ring's own shared counters: (wake
 *                                 syscalls + sleeps) / messages over the whole run (the fast
 *                                 paths make no other syscall: the RTSan build checks that)
 *   peers: zmq-ipc and nng-ipc "throughput" at the same sizes.
 *
 * pingpong (round trip, 64 B; p50/p99/p99.9):
 *   abd-ring rtt        two SPSC rings, try forms + spin; vs bare-cacheline "rtt"
 *   abd-ring rtt-block  two SPSC rings, blocking forms (futex); vs bare-futex "rtt-64B" (the
 *                       same handoff of a 64-byte message through two futex words, no ring)
 *   abd-ring rtt-block-asleep  the same, each sample started (untimed) only once B sleeps
 *                       (bench_until_asleep): every round trip wakes a sleeper, where
 *                       rtt-block's blocking calls may catch the reply while they spin
 *                       before sleeping; vs bare-futex "rtt-64B-asleep"
 *   abd-service rtt-block[-asleep]-io_uring / -epoll  the same through two services
 *                       (abd_service_push/pop, blocking; each service's own reactor on the
 *                       backend named); vs bare-futex "rtt-64B" (perf/bench-service.c)
 *   beside them: bare-spsc, bare-eventfd, bare-pipe, bare-unix, zmq-ipc, nng-ipc, iceoryx
 *   (blocking "rtt" and busy-polling "rtt-busy").
 * Every row runs with both processes on their own vCPUs (split) and on one (shared). */
#include <abd/ring.h>
#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "perf/bench.h"

static const char *const cpu_modes[] = {BENCH_SPLIT, BENCH_SHARED};
static const unsigned sizes[] = {8, 64, 1024};

/* What lives in the runner's shared mapping: the ring's descriptors (inherited across fork). */
struct shared {
	int memfd[2], evfd[2];
	_Atomic uint64_t consumed; /* 2p2c: messages taken by B's threads */
	uint64_t last_n, last_ns;  /* B's last consume() call: messages and time */
	pid_t pong_pid;            /* ping-pong: B's, for A's bench_until_asleep */
};

struct cfg {
	unsigned bytes;
	unsigned mode;   /* ring modes */
	bool block;      /* blocking forms */
	bool two;        /* 2 producer + 2 consumer threads */
	bool batch;      /* batch forms */
	bool stream;     /* 1P1C spin through abd_ring_stream_push / _pop (inline) */
	bool rings2;     /* ping-pong: two rings */
	bool asleep;     /* ping-pong: A waits (untimed) for B to sleep before each ping */
};

static int make_ring(struct shared *s, int i, const struct cfg *c, uint32_t cap)
{
	struct abd_ring *r;
	int e = abd_ring_new(cap, c->bytes, c->mode, NULL, &r);
	if (e < 0)
		return bench_fail("abd_ring_new: %s", strerror(-e));
	s->memfd[i] = dup(abd_ring_fd(r));
	s->evfd[i] = abd_ring_wait_fd(r) >= 0 ? dup(abd_ring_wait_fd(r)) : -1;
	abd_ring_free(r); /* the descriptors keep it; the children attach */
	return 0;
}

static int r_prepare(void *shm, void *arg)
{
	const struct cfg *c = arg;
	struct shared *s = shm;
	s->memfd[0] = s->memfd[1] = s->evfd[0] = s->evfd[1] = -1;
	int e = make_ring(s, 0, c, c->rings2 ? 64 : 4096);
	if (e == 0 && c->rings2)
		e = make_ring(s, 1, c, 64);
	return e;
}

static void r_cleanup(void *shm, void *arg)
{
	(void)arg;
	struct shared *s = shm;
	for (int i = 0; i < 2; i++) {
		if (s->memfd[i] >= 0)
			close(s->memfd[i]);
		if (s->evfd[i] >= 0)
			close(s->evfd[i]);
	}
}

struct state {
	const struct cfg *c;
	struct shared *s;
	struct abd_ring *h[2]; /* throughput: one per thread; ping-pong: out, in */
};

static int r_init(enum bench_role role, void *shm, void *arg, void **out)
{
	const struct cfg *c = arg;
	struct shared *s = shm;
	struct state *st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->c = c;
	st->s = s;
	int e = 0;
	if (c->rings2) {
		if (role == BENCH_B)
			s->pong_pid = getpid();
		/* A pushes into ring 0 and pops from ring 1; B the other way round */
		int o = role == BENCH_A ? 0 : 1, i = 1 - o;
		e = abd_ring_attach(s->memfd[o], s->evfd[o], NULL, ABD_RING_PRODUCER, &st->h[0]);
		if (e == 0)
			e = abd_ring_attach(s->memfd[i], s->evfd[i], NULL, ABD_RING_CONSUMER, &st->h[1]);
	} else {
		unsigned roles = role == BENCH_A ? ABD_RING_PRODUCER : ABD_RING_CONSUMER;
		for (int i = 0; i < (c->two ? 2 : 1) && e == 0; i++)
			e = abd_ring_attach(s->memfd[0], s->evfd[0], NULL, roles, &st->h[i]);
	}
	*out = st;
	return e < 0 ? bench_fail("abd_ring_attach: %s", strerror(-e)) : 0;
}

static void r_fini(enum bench_role role, void *state)
{
	(void)role;
	struct state *st = state;
	if (!st)
		return;
	abd_ring_free(st->h[0]);
	abd_ring_free(st->h[1]);
	free(st);
}

/* ---- throughput ---- */

struct job {
	struct state *st;
	struct abd_ring *r;
	uint64_t from, n; /* produce: values from .. from+n; consume: until shared total n */
	int err;
};

static int push_one(struct state *st, struct abd_ring *r, const void *msg)
{
	if (st->c->block)
		return abd_ring_push(r, msg, st->c->bytes, -1);
	int e;
	while ((e = abd_ring_try_push(r, msg, st->c->bytes)) == -EAGAIN)
		bench_relax();
	return e;
}

/* One step of a 1P1C spin consumer (bare-spsc's loop): a message of the row's size is checked
 * against the next value (FIFO) and counted, -EAGAIN relaxes; anything else is the error. */
static inline __attribute__((always_inline)) int spin_took(int e, int bytes, const unsigned char *msg,
                                                           uint64_t *expect, uint64_t *bad,
                                                           uint64_t *i)
{
	if (e == bytes) {
		uint64_t v;
		memcpy(&v, msg, sizeof(v));
		*bad |= v ^ (*expect)++;
		(*i)++;
		return 0;
	}
	if (e == -EAGAIN) {
		bench_relax();
		return 0;
	}
	return e < 0 ? e : -EBADMSG;
}

/* The 1P1C spin loops of bare-spsc around a stream (the inline forms), each in a function of
 * its own, so that the stream's fields get the registers. */
static __attribute__((noinline)) int stream_produce(struct abd_ring *r, size_t bytes, uint64_t from,
                                                    uint64_t n)
{
	unsigned char msg[1024] = {0};
	struct abd_ring_stream s = abd_ring_stream_open(r, ABD_RING_PRODUCER);
	if (s.ret < 0)
		return s.ret;
	int err = 0;
	for (uint64_t i = 0; i < n;) {
		uint64_t v = from + i;
		memcpy(msg, &v, sizeof(v));
		int e = abd_ring_stream_push(&s, msg, bytes);
		if (e == 0) {
			i++;
		} else if (e == -EAGAIN) {
			bench_relax();
		} else {
			err = e;
			break;
		}
	}
	int e = abd_ring_stream_close(&s);
	return err ? err : e;
}

static __attribute__((noinline)) int stream_consume(struct abd_ring *r, size_t bytes,
                                                    uint64_t expect, uint64_t n)
{
	unsigned char msg[1024];
	struct abd_ring_stream s = abd_ring_stream_open(r, ABD_RING_CONSUMER);
	if (s.ret < 0)
		return s.ret;
	int err = 0;
	uint64_t bad = 0;
	for (uint64_t i = 0; i < n && !err;)
		err = spin_took(abd_ring_stream_pop(&s, msg, sizeof(msg)), (int)bytes, msg, &expect, &bad, &i);
	int e = abd_ring_stream_close(&s);
	return err ? err : bad ? -EBADMSG : e;
}

static void *producer(void *arg)
{
	struct job *j = arg;
	unsigned char msg[1024] = {0};
	const struct cfg *c = j->st->c;
	if (c->batch) {
		enum { B = 64 };
		uint64_t vals[B];
		const void *ptrs[B];
		size_t lens[B];
		for (int k = 0; k < B; k++)
			ptrs[k] = &vals[k], lens[k] = 8;
		for (uint64_t i = 0; i < j->n;) {
			unsigned k = (unsigned)(j->n - i < B ? j->n - i : B);
			for (unsigned m = 0; m < k; m++)
				vals[m] = j->from + i + m;
			int e = abd_ring_try_push_batch(j->r, ptrs, lens, k);
			if (e < 0) {
				j->err = e;
				return NULL;
			}
			if (e == 0)
				bench_relax();
			i += (unsigned)e;
		}
		return NULL;
	}
	if (c->stream) {
		j->err = stream_produce(j->r, c->bytes, j->from, j->n);
		return NULL;
	}
	if (!c->block) {
		/* the spin rows: the loop bare-spsc's producer runs, around abd_ring_try_push */
		struct abd_ring *r = j->r;
		size_t bytes = c->bytes;
		for (uint64_t i = 0, n = j->n, from = j->from; i < n;) {
			uint64_t v = from + i;
			memcpy(msg, &v, sizeof(v));
			int e = abd_ring_try_push(r, msg, bytes);
			if (e == 0) {
				i++;
			} else if (e == -EAGAIN) {
				bench_relax();
			} else {
				j->err = e;
				return NULL;
			}
		}
		return NULL;
	}
	for (uint64_t i = 0; i < j->n; i++) {
		uint64_t v = j->from + i;
		memcpy(msg, &v, sizeof(v));
		int e = push_one(j->st, j->r, msg);
		if (e < 0) {
			j->err = e;
			return NULL;
		}
	}
	return NULL;
}

static void *consumer(void *arg)
{
	struct job *j = arg;
	struct state *st = j->st;
	const struct cfg *c = st->c;
	unsigned char msg[1024];
	uint64_t expect = j->from;
	bool check = !c->two; /* 1P1C: FIFO */
	if (c->batch) {
		enum { B = 64 };
		uint64_t vals[B];
		size_t lens[B];
		for (uint64_t i = 0; i < j->n;) {
			unsigned want = (unsigned)(j->n - i < B ? j->n - i : B);
			int e = abd_ring_try_pop_batch(j->r, vals, 8, lens, want);
			if (e < 0) {
				j->err = e;
				return NULL;
			}
			if (e == 0)
				bench_relax();
			for (int m = 0; m < e; m++)
				if (vals[m] != expect++)
					j->err = -EBADMSG;
			i += (unsigned)e;
		}
		return NULL;
	}
	if (c->stream) {
		j->err = stream_consume(j->r, c->bytes, j->from, j->n);
		return NULL;
	}
	if (!c->two && !c->block) {
		/* 1P1C spin: the loop bare-spsc's consumer runs, around abd_ring_try_pop */
		struct abd_ring *r = j->r;
		int bytes = (int)c->bytes, err = 0;
		uint64_t bad = 0;
		for (uint64_t i = 0, n = j->n; i < n && !err;)
			err = spin_took(abd_ring_try_pop(r, msg, sizeof(msg)), bytes, msg, &expect, &bad, &i);
		j->err = err ? err : bad ? -EBADMSG : 0;
		return NULL;
	}
	uint64_t mine = 0; /* 2p2c: counted in private, added to the shared total every 64 */
	for (;;) {
		if (c->two && atomic_load_explicit(&st->s->consumed, memory_order_relaxed) >= j->n) {
			if (mine) /* taken after the last check: count them for the next call */
				atomic_fetch_add_explicit(&st->s->consumed, mine, memory_order_relaxed);
			return NULL;
		}
		if (!c->two && j->from == expect && j->n == 0)
			return NULL;
		int e;
		if (c->block)
			e = abd_ring_pop(j->r, msg, sizeof(msg), c->two ? 1000000 : -1);
		else
			e = abd_ring_try_pop(j->r, msg, sizeof(msg));
		if (e == -EAGAIN || e == -ETIMEDOUT) {
			if (mine) {
				atomic_fetch_add_explicit(&st->s->consumed, mine, memory_order_relaxed);
				mine = 0;
			}
			if (!c->block)
				bench_relax();
			continue;
		}
		if (e != (int)c->bytes) {
			j->err = e < 0 ? e : -EBADMSG;
			return NULL;
		}
		if (check) {
			uint64_t v;
			memcpy(&v, msg, sizeof(v));
			if (v != expect)
				j->err = -EBADMSG;
			expect++;
			if (expect - j->from == j->n)
				return NULL;
		} else if (++mine == 64) {
			atomic_fetch_add_explicit(&st->s->consumed, mine, memory_order_relaxed);
			mine = 0;
		}
	}
}

static int run_jobs(struct state *st, uint64_t n, void *(*fn)(void *), uint64_t *next)
{
	struct job jobs[2];
	pthread_t th[2];
	int k = st->c->two ? 2 : 1;
	for (int i = 0; i < k; i++) {
		uint64_t share = n / (uint64_t)k + (i == 0 ? n % (uint64_t)k : 0);
		jobs[i] = (struct job){st, st->h[i], *next, fn == producer ? share : n, 0};
		if (fn == producer)
			*next += share;
		if (pthread_create(&th[i], NULL, fn, &jobs[i]) != 0)
			return -EAGAIN;
	}
	int err = 0;
	for (int i = 0; i < k; i++) {
		pthread_join(th[i], NULL);
		if (jobs[i].err && !err)
			err = jobs[i].err;
	}
	return err < 0 ? bench_fail("%s: %s", fn == producer ? "push" : "pop", strerror(-err)) : 0;
}

static _Thread_local uint64_t next_value; /* per child: the next value to produce/expect */

static int r_produce(void *state, uint64_t n)
{
	return run_jobs(state, n, producer, &next_value);
}

static int r_consume(void *state, uint64_t n)
{
	struct state *st = state;
	if (st->c->two) {
		/* counts accumulate across the warm-up call and the timed call; a warm-up that took
		 * one message too many (two threads racing for the last) shortens the timed call */
		static _Thread_local uint64_t requested;
		requested += n;
		return run_jobs(state, requested, consumer, &next_value);
	}
	uint64_t from = next_value, t0 = bench_now_ns();
	int e = run_jobs(state, n, consumer, &from);
	st->s->last_ns = bench_now_ns() - t0;
	st->s->last_n = n;
	next_value += n;
	return e;
}

static void throughput(const char *case_name, const char *cpus, struct cfg *c, uint64_t iters,
                       const char *baseline, const char *baseline_case)
{
	struct bench_pair p = {.shm_size = sizeof(struct shared), .arg = c,
	                       .prepare = r_prepare, .cleanup = r_cleanup, .init = r_init,
	                       .fini = r_fini, .produce = r_produce, .consume = r_consume};
	bench_throughput(&p, (struct bench_row){.subject = "abd-ring", .case_name = case_name,
	                                        .cpus = cpus, .msg_bytes = c->bytes,
	                                        .baseline = baseline,
	                                        .baseline_case = baseline_case},
	                 iters);
}

/* Syscalls per message: blocking forms, busy consumer, the ring's own counters. */
static struct {
	uint64_t pushed, wakes, waits, n, ns;
} sys_count;

static void sys_cleanup(void *shm, void *arg)
{
	struct shared *s = shm;
	struct abd_ring *r;
	if (abd_ring_attach(s->memfd[0], -1, NULL, ABD_RING_CONSUMER, &r) == 0) {
		struct abd_ring_stats st;
		if (abd_ring_stats(r, &st) == 0) {
			sys_count.pushed = st.pushed;
			sys_count.wakes = st.wakes;
			sys_count.waits = st.waits;
		}
		sys_count.n = s->last_n;
		sys_count.ns = s->last_ns;
		abd_ring_free(r);
	}
	r_cleanup(shm, arg);
}

/* throughput-busy's sample, and beside it the syscalls-busy row of the same run (the ring's
 * counters, read by sys_cleanup), round by round. */
struct busy {
	struct bench_pair_sample ps;
	struct bench_row stmpl;
	struct bench_row srow[BENCH_ROUNDS_MAX];
	unsigned k;
};

static int busy_sample(void *ctx, struct bench_row *row)
{
	struct busy *b = ctx;
	memset(&sys_count, 0, sizeof(sys_count));
	int r = bench_pair_sample(&b->ps, row);
	struct bench_row *s = &b->srow[b->k++ % BENCH_ROUNDS_MAX];
	*s = b->stmpl;
	if (row->skipped) {
		s->skipped = row->skipped;
	} else if (!sys_count.pushed || !sys_count.ns) {
		s->skipped = "no counters (the throughput run failed)";
	} else {
		s->iters = sys_count.pushed;
		s->syscalls_per_msg = (double)(sys_count.wakes + sys_count.waits) / (double)sys_count.pushed;
		s->has_syscalls = true;
		s->ops_per_s = (double)sys_count.n * 1e9 / (double)sys_count.ns; /* the timed part */
	}
	return r;
}

static void syscalls_busy(const char *cpus, uint64_t iters)
{
	static struct cfg c = {.bytes = 8,
	                             .mode = ABD_RING_SINGLE_PRODUCER | ABD_RING_SINGLE_CONSUMER,
	                             .block = true};
	struct bench_pair p = {.shm_size = sizeof(struct shared), .arg = &c,
	                       .prepare = r_prepare, .cleanup = sys_cleanup, .init = r_init,
	                       .fini = r_fini, .produce = r_produce, .consume = r_consume,
	                       .count_syscalls = true};
	struct bench_row row = {.subject = "abd-ring", .case_name = "throughput-busy", .cpus = cpus,
	                        .msg_bytes = 8, .baseline = "bare-spsc",
	                        .baseline_case = "throughput"};
	struct busy *b = calloc(1, sizeof(*b));
	struct bench_versus *v = calloc(1, sizeof(*v));
	if (!b || !v) {
		bench_skip(&row, "out of memory");
		free(b);
		free(v);
		return;
	}
	b->ps = (struct bench_pair_sample){&p, iters, true};
	b->stmpl = (struct bench_row){.subject = "abd-ring", .case_name = "syscalls-busy",
	                              .cpus = cpus, .msg_bytes = 8, .baseline = "bare-spsc",
	                              .baseline_case = "throughput"};
	v->fn = busy_sample;
	v->ctx = b;
	bench_versus(v, row);
	/* the ring's own count over the same rounds, against the same baseline samples */
	bench_emit_versus(&b->stmpl, b->srow, v->theirs, v->n);
	free(b);
	free(v);
}

void bench_ring(void)
{
	uint64_t spin = bench_iters(2000000, 100000), block = bench_iters(500000, 20000);
	for (int m = 0; m < 2; m++) {
		const char *cpus = cpu_modes[m];
		for (size_t z = 0; z < sizeof(sizes) / sizeof(sizes[0]); z++) {
			unsigned b = sizes[z];
			struct cfg c1 = {.bytes = b,
			                 .mode = ABD_RING_SINGLE_PRODUCER | ABD_RING_SINGLE_CONSUMER};
			/* like for like: a bare ring moving messages of the same size */
			char spsc_case[32], mpmc_case[40];
			if (b >= 1024)
				snprintf(spsc_case, sizeof(spsc_case), "throughput-%uKiB", b / 1024);
			else
				snprintf(spsc_case, sizeof(spsc_case), "throughput-%uB", b);
			snprintf(mpmc_case, sizeof(mpmc_case), "throughput-2p2c-%s", spsc_case + 11);
			throughput("throughput", cpus, &c1, spin, "bare-spsc", spsc_case);
			c1.stream = true;
			throughput("throughput-stream", cpus, &c1, spin, "bare-spsc", spsc_case);
			c1.stream = false;
			c1.block = true;
			throughput("throughput-block", cpus, &c1, block, "bare-spsc", spsc_case);
			struct cfg c2 = {.bytes = b, .two = true};
			throughput("throughput-2p2c", cpus, &c2, spin, "bare-mpmc", mpmc_case);
			c2.block = true;
			throughput("throughput-2p2c-block", cpus, &c2, block, "bare-mpmc", mpmc_case);
			bench_peer("zmq-ipc", "throughput", cpus, b);
			bench_peer("nng-ipc", "throughput", cpus, b);
		}
		struct cfg cb = {.bytes = 8, .mode = ABD_RING_SINGLE_PRODUCER | ABD_RING_SINGLE_CONSUMER,
		                 .batch = true};
		throughput("throughput-batch", cpus, &cb, spin * 4, "bare-spsc", "throughput-batch");
		syscalls_busy(cpus, block);
	}
}

/* ---- ping-pong ---- */

static int pp_ping(void *state, uint64_t *ns)
{
	struct state *st = state;
	unsigned char msg[64] = {1};
	int e;
	if (st->c->asleep) {
		if ((e = bench_until_asleep(st->s->pong_pid)) < 0)
			return e;
		uint64_t t0 = bench_now_ns();
		if ((e = abd_ring_push(st->h[0], msg, 64, -1)) < 0)
			return e;
		e = abd_ring_pop(st->h[1], msg, 64, -1);
		*ns = bench_now_ns() - t0;
		return e == 64 ? 0 : e < 0 ? e : -EBADMSG;
	}
	if (st->c->block) {
		if ((e = abd_ring_push(st->h[0], msg, 64, -1)) < 0)
			return e;
		return (e = abd_ring_pop(st->h[1], msg, 64, -1)) == 64 ? 0 : e < 0 ? e : -EBADMSG;
	}
	while ((e = abd_ring_try_push(st->h[0], msg, 64)) == -EAGAIN)
		bench_relax();
	if (e < 0)
		return e;
	while ((e = abd_ring_try_pop(st->h[1], msg, 64)) == -EAGAIN)
		bench_relax();
	return e == 64 ? 0 : e < 0 ? e : -EBADMSG;
}

static int pp_pong(void *state)
{
	struct state *st = state;
	unsigned char msg[64];
	int e;
	if (st->c->block) {
		if ((e = abd_ring_pop(st->h[1], msg, 64, -1)) != 64)
			return e < 0 ? e : -EBADMSG;
		return abd_ring_push(st->h[0], msg, 64, -1);
	}
	while ((e = abd_ring_try_pop(st->h[1], msg, 64)) == -EAGAIN)
		bench_relax();
	if (e != 64)
		return e < 0 ? e : -EBADMSG;
	while ((e = abd_ring_try_push(st->h[0], msg, 64)) == -EAGAIN)
		bench_relax();
	return e;
}

void bench_pingpong_family(void)
{
	static struct cfg spin = {.bytes = 64, .rings2 = true,
	                                .mode = ABD_RING_SINGLE_PRODUCER | ABD_RING_SINGLE_CONSUMER};
	static struct cfg block = {.bytes = 64, .rings2 = true, .block = true,
	                                 .mode = ABD_RING_SINGLE_PRODUCER | ABD_RING_SINGLE_CONSUMER};
	static struct cfg asleep = {.bytes = 64, .rings2 = true, .block = true, .asleep = true,
	                            .mode = ABD_RING_SINGLE_PRODUCER | ABD_RING_SINGLE_CONSUMER};
	uint64_t nspin = bench_iters(100000, 10000), nblock = bench_iters(10000, 1000);
	for (int m = 0; m < 2; m++) {
		const char *cpus = cpu_modes[m];
		struct bench_pair p = {.shm_size = sizeof(struct shared), .arg = &spin,
		                       .prepare = r_prepare, .cleanup = r_cleanup, .init = r_init,
		                       .fini = r_fini, .ping = pp_ping, .pong = pp_pong};
		bench_pingpong(&p, (struct bench_row){.subject = "abd-ring", .case_name = "rtt",
		                                      .cpus = cpus, .msg_bytes = 64,
		                                      .baseline = "bare-cacheline"},
		               nspin);
		p.arg = &block;
		bench_pingpong(&p, (struct bench_row){.subject = "abd-ring", .case_name = "rtt-block",
		                                      .cpus = cpus, .msg_bytes = 64,
		                                      .baseline = "bare-futex",
		                                      .baseline_case = "rtt-64B"},
		               nblock);
		p.arg = &asleep;
		bench_pingpong(&p, (struct bench_row){.subject = "abd-ring",
		                                      .case_name = "rtt-block-asleep", .cpus = cpus,
		                                      .msg_bytes = 64, .baseline = "bare-futex",
		                                      .baseline_case = "rtt-64B-asleep"},
		               nblock);
		bench_service_rtt(cpus, nblock);
		p.arg = &block;
		bench_rpc_rtt(cpus, nblock, &p);
	}
	/* the rest of the floors and the peers, in the same run */
	bench_subject_run("bare-spsc");
	bench_subject_run("bare-eventfd");
	bench_subject_run("bare-pipe");
	bench_subject_run("bare-unix");
	for (int m = 0; m < 2; m++) {
		bench_peer("zmq-ipc", "rtt", cpu_modes[m], 64);
		bench_peer("nng-ipc", "rtt", cpu_modes[m], 64);
		bench_peer("iceoryx", "rtt", cpu_modes[m], 64);
		bench_peer("iceoryx", "rtt-busy", cpu_modes[m], 64);
	}
}
