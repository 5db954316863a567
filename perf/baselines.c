/* SPDX-License-Identifier: MIT */
/* `abd-perf baselines`: the kernel floors every abd figure is compared against.
 *   bare-cacheline       two processes bounce a counter through shared memory, spinning
 *   bare-spsc            a minimal spin-only single-producer/single-consumer ring (8-byte items;
 *                        and messages of 8 B, 64 B, 1 KiB copied in and out: throughput-8B/...)
 *   bare-mpmc            a bounded Vyukov-style MPMC queue (per-cell sequence, CAS on head and
 *                        tail), one thread per process (one per vCPU when split), relaxing
 *                        on full/empty as abd-ring's loops do, 8 B / 64 B / 1 KiB (case names
 *                        throughput-2p2c-*: the rows abd-ring's 2P2C rows compare with)
 *   bare-futex           futex(2) wait/wake ping-pong on two shared words (rtt), and the same
 *                        carrying a 64-byte message each way (rtt-64B)
 *   bare-eventfd         eventfd write/read ping-pong
 *   bare-pipe            64 B over two pipes
 *   bare-unix            64 B over a socketpair, SOCK_STREAM and SOCK_SEQPACKET
 *   bare-inotify-linkat  linkat() of an O_TMPFILE record -> a watcher's read(inotify) returns
 *   bare-inotify-publish the same publication and notification, like for like with abd's
 *                        publish-to-added: open(O_TMPFILE) -> the watcher has read the record
 *   bare-pidfd-exit      a child's last instruction -> the parent's poll(pidfd) returns
 * Each two-process subject runs with split and shared CPUs (see bench.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "compat/kernel.h"
#include "perf/bench.h"

#define CACHELINE 64
static const char *const modes[] = {BENCH_SPLIT, BENCH_SHARED};

/* Per-process state for the transports that count: the shared area and a sequence. */
struct seqstate {
	void *shm;
	uint64_t seq;
};

static int seq_init(enum bench_role role, void *shm, void *arg, void **state)
{
	(void)role, (void)arg;
	struct seqstate *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->shm = shm;
	*state = s;
	return 0;
}

static void seq_fini(enum bench_role role, void *state)
{
	(void)role;
	free(state);
}

/* ---- bare-cacheline ----
 * Does: A stores a counter, B spins until it sees it and stores it back (same line: `rtt`, or
 * a line of its own: `rtt-2lines`), A spins until it sees the answer. Leaves out: any message,
 * slot, index or queue; any sleeping: the floor of a spin round trip through memory. */

struct lines {
	alignas(CACHELINE) _Atomic uint64_t ping;
	_Atomic uint64_t pong_same_line;
	alignas(CACHELINE) _Atomic uint64_t pong_own_line;
};

static _Atomic uint64_t *pong_word(struct seqstate *s)
{
	struct lines *l = s->shm;
	return s->seq & (1ull << 63) ? &l->pong_own_line : &l->pong_same_line;
}

static int cl_init(enum bench_role role, void *shm, void *arg, void **state)
{
	int r = seq_init(role, shm, arg, state);
	if (r == 0 && arg) /* the high bit of seq selects the two-line layout */
		((struct seqstate *)*state)->seq = 1ull << 63;
	return r;
}

static int cl_ping(void *state, uint64_t *ns)
{
	(void)ns;
	struct seqstate *s = state;
	struct lines *l = s->shm;
	uint64_t v = ++s->seq;
	atomic_store_explicit(&l->ping, v, memory_order_release);
	while (atomic_load_explicit(pong_word(s), memory_order_acquire) != v)
		bench_relax();
	return 0;
}

static int cl_pong(void *state)
{
	struct seqstate *s = state;
	struct lines *l = s->shm;
	uint64_t v = ++s->seq;
	while (atomic_load_explicit(&l->ping, memory_order_acquire) != v)
		bench_relax();
	atomic_store_explicit(pong_word(s), v, memory_order_release);
	return 0;
}

static void run_cacheline(void)
{
	uint64_t n = bench_iters(100000, 10000);
	for (int m = 0; m < 2; m++)
		for (int layout = 0; layout < 2; layout++) {
			struct bench_pair p = {
				.shm_size = sizeof(struct lines),
				.arg = layout ? (void *)(uintptr_t)1 : NULL,
				.init = cl_init, .fini = seq_fini, .ping = cl_ping, .pong = cl_pong,
			};
			bench_pingpong(&p, (struct bench_row){
				.subject = "bare-cacheline", .case_name = layout ? "rtt-2lines" : "rtt",
				.cpus = modes[m], .msg_bytes = 8}, n);
		}
}

/* ---- bare-spsc ----
 * Does: a single-producer/single-consumer ring in shared memory, each side keeping its index
 * and a cached copy of the other's, spinning (bench_relax) on full/empty; `throughput`: 8-byte
 * items packed 8 to a line, the index published per item; `throughput-batch`: published once
 * per run; `throughput-8B/-64B/-1KiB`: slots of exactly one message, copied in and out,
 * positions checked; `rtt`: 64 B over two rings. Leaves out: a length and a control word per
 * slot, recovery from a dead peer, sleeping and waking, statistics. */

#define SPSC_SLOTS 4096u /* power of two */
/* The sized rows (throughput-8B/-64B/-1KiB): as many slots as abd-ring's throughput rings
 * (perf/bench-ring.c), each exactly one message, copied in and out with memcpy. */
#define SPSC_SIZED_SLOTS 4096u

struct spsc {
	alignas(CACHELINE) _Atomic uint64_t head; /* next slot to read; written by the consumer */
	alignas(CACHELINE) _Atomic uint64_t tail; /* next slot to write; written by the producer */
	alignas(CACHELINE) unsigned char slots[];
};

/* Each side keeps its own index and a cached copy of the other's, so the shared lines are
 * touched only when the cache says full / empty. */
struct spsc_end {
	struct spsc *q;
	uint64_t mine, cached;
};

static size_t spsc_size(size_t slot, unsigned nslots)
{
	return sizeof(struct spsc) + nslots * slot;
}

/* Room for (producer) or items to take (consumer), refreshing the cached index only when
 * the cache says there is none; spins until there is some. Always inlined with a constant
 * slot count. */
static inline __attribute__((always_inline)) uint64_t spsc_room(struct spsc_end *e,
                                                                unsigned nslots)
{
	uint64_t room;
	while (!(room = nslots - (e->mine - e->cached))) {
		e->cached = atomic_load_explicit(&e->q->head, memory_order_acquire);
		if (e->mine - e->cached == nslots)
			bench_relax();
	}
	return room;
}

static inline uint64_t spsc_ready(struct spsc_end *e)
{
	uint64_t ready;
	while (!(ready = e->cached - e->mine)) {
		e->cached = atomic_load_explicit(&e->q->tail, memory_order_acquire);
		if (e->cached == e->mine)
			bench_relax();
	}
	return ready;
}

/* Always inlined so that the constant slot size turns memcpy into moves. */
static inline __attribute__((always_inline)) void *spsc_slot(struct spsc_end *e, uint64_t i,
                                                             size_t slot, unsigned nslots)
{
	return e->q->slots + (i & (nslots - 1)) * slot;
}

static inline __attribute__((always_inline)) void spsc_push(struct spsc_end *e, const void *msg,
                                                            size_t slot, unsigned nslots)
{
	spsc_room(e, nslots);
	memcpy(spsc_slot(e, e->mine, slot, nslots), msg, slot);
	atomic_store_explicit(&e->q->tail, ++e->mine, memory_order_release);
}

static inline __attribute__((always_inline)) void spsc_pop(struct spsc_end *e, void *msg,
                                                           size_t slot, unsigned nslots)
{
	spsc_ready(e);
	memcpy(msg, spsc_slot(e, e->mine, slot, nslots), slot);
	atomic_store_explicit(&e->q->head, ++e->mine, memory_order_release);
}

/* Throughput: one ring of 8-byte items (or of `slot`-byte messages: sized). Round trip: two
 * rings of 64-byte slots. */
struct spsc_state {
	struct spsc_end out, in;
	size_t slot;
	bool batch; /* publish the index once per run of free slots / ready items */
	bool sized; /* messages of `slot` bytes in SPSC_SIZED_SLOTS slots */
};

struct spsc_arg {
	size_t slot;
	bool batch, sized;
};

static int spsc_init(enum bench_role role, void *shm, void *arg, void **state)
{
	const struct spsc_arg *a = arg;
	struct spsc_state *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	unsigned nslots = a->sized ? SPSC_SIZED_SLOTS : SPSC_SLOTS;
	struct spsc *q0 = shm, *q1 = (struct spsc *)((char *)shm + spsc_size(a->slot, nslots));
	s->out.q = role == BENCH_A ? q0 : q1;
	s->in.q = role == BENCH_A ? q1 : q0;
	s->slot = a->slot;
	s->batch = a->batch;
	s->sized = a->sized;
	*state = s;
	return 0;
}

/* Sized messages: the first 8 bytes carry the message's position in the stream, which the
 * consumer checks; the whole message is copied in and out, as abd-ring's rows do. */
static inline __attribute__((always_inline)) void sized_produce(struct spsc_end *e, uint64_t n,
                                                                size_t slot)
{
	unsigned char msg[1024] = {0};
	for (uint64_t i = 0; i < n; i++) {
		uint64_t v = e->mine;
		memcpy(msg, &v, sizeof(v));
		bench_msg_fresh(msg);
		spsc_push(e, msg, slot, SPSC_SIZED_SLOTS);
	}
}

static inline __attribute__((always_inline)) uint64_t sized_consume(struct spsc_end *e,
                                                                    uint64_t n, size_t slot)
{
	unsigned char msg[1024];
	uint64_t bad = 0;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t expect = e->mine, v;
		spsc_pop(e, msg, slot, SPSC_SIZED_SLOTS);
		bench_msg_used(msg);
		memcpy(&v, msg, sizeof(v));
		bad |= v ^ expect;
	}
	return bad;
}

static int spsc_produce(void *state, uint64_t n)
{
	struct spsc_state *s = state;
	struct spsc_end *e = &s->out;
	if (s->sized) {
		if (s->slot == 8)
			sized_produce(e, n, 8);
		else if (s->slot == 64)
			sized_produce(e, n, 64);
		else
			sized_produce(e, n, 1024);
		return 0;
	}
	/* Item k carries k (its position in the stream), which the consumer checks. */
	if (!s->batch) {
		for (uint64_t i = 0; i < n; i++) {
			uint64_t v = e->mine;
			spsc_push(e, &v, sizeof(v), SPSC_SLOTS);
		}
		return 0;
	}
	for (uint64_t i = 0; i < n;) {
		uint64_t k = spsc_room(e, SPSC_SLOTS);
		k = k < n - i ? k : n - i;
		for (uint64_t j = 0; j < k; j++) {
			uint64_t v = e->mine + j;
			memcpy(spsc_slot(e, v, sizeof(v), SPSC_SLOTS), &v, sizeof(v));
		}
		e->mine += k;
		i += k;
		atomic_store_explicit(&e->q->tail, e->mine, memory_order_release);
	}
	return 0;
}

static int spsc_consume(void *state, uint64_t n)
{
	struct spsc_state *s = state;
	struct spsc_end *e = &s->in;
	uint64_t v, bad = 0;
	if (s->sized) {
		bad = s->slot == 8    ? sized_consume(e, n, 8)
		      : s->slot == 64 ? sized_consume(e, n, 64)
		                      : sized_consume(e, n, 1024);
	} else if (!s->batch) {
		for (uint64_t i = 0; i < n; i++) {
			uint64_t expect = e->mine;
			spsc_pop(e, &v, sizeof(v), SPSC_SLOTS);
			bad |= v ^ expect;
		}
	} else {
		for (uint64_t i = 0; i < n;) {
			uint64_t k = spsc_ready(e);
			k = k < n - i ? k : n - i;
			for (uint64_t j = 0; j < k; j++, i++) {
				memcpy(&v, spsc_slot(e, e->mine + j, sizeof(v), SPSC_SLOTS), sizeof(v));
				bad |= v ^ (e->mine + j);
			}
			e->mine += k;
			atomic_store_explicit(&e->q->head, e->mine, memory_order_release);
		}
	}
	return bad ? bench_fail("spsc: items out of order") : 0;
}

static int spsc_ping(void *state, uint64_t *ns)
{
	(void)ns;
	struct spsc_state *s = state;
	unsigned char msg[BENCH_MSG_MAX] = {1};
	bench_msg_fresh(msg);
	spsc_push(&s->out, msg, 64, SPSC_SLOTS);
	spsc_pop(&s->in, msg, 64, SPSC_SLOTS);
	bench_msg_used(msg);
	return 0;
}

static int spsc_pong(void *state)
{
	struct spsc_state *s = state;
	unsigned char msg[BENCH_MSG_MAX];
	spsc_pop(&s->in, msg, 64, SPSC_SLOTS);
	bench_msg_fresh(msg);
	spsc_push(&s->out, msg, 64, SPSC_SLOTS);
	return 0;
}

/* The case name of a sized row: "throughput-8B", "throughput-64B", "throughput-1KiB". */
static const char *sized_case(const char *prefix, size_t bytes, char *buf, size_t len)
{
	if (bytes >= 1024 && bytes % 1024 == 0)
		snprintf(buf, len, "%s-%zuKiB", prefix, bytes / 1024);
	else
		snprintf(buf, len, "%s-%zuB", prefix, bytes);
	return buf;
}

static const size_t sized_bytes[] = {8, 64, 1024};

static void run_spsc(void)
{
	static struct spsc_arg item = {.slot = 8}, batch = {.slot = 8, .batch = true},
	                       rtt = {.slot = 64};
	static struct spsc_arg sized[3];
	for (size_t z = 0; z < 3; z++)
		sized[z] = (struct spsc_arg){.slot = sized_bytes[z], .sized = true};
	for (int m = 0; m < 2; m++) {
		for (int b = 0; b < 2; b++) {
			struct bench_pair tp = {.shm_size = spsc_size(8, SPSC_SLOTS),
			                        .arg = b ? &batch : &item,
			                        .count_syscalls = true, .init = spsc_init, .fini = seq_fini,
			                        .produce = spsc_produce, .consume = spsc_consume};
			bench_throughput(&tp, (struct bench_row){
				.subject = "bare-spsc", .case_name = b ? "throughput-batch" : "throughput",
				.cpus = modes[m], .msg_bytes = 8}, bench_iters(20000000, 400000));
		}
		for (size_t z = 0; z < 3; z++) {
			char name[32];
			size_t bytes = sized_bytes[z];
			struct bench_pair tp = {.shm_size = spsc_size(bytes, SPSC_SIZED_SLOTS),
			                        .arg = &sized[z], .init = spsc_init, .fini = seq_fini,
			                        .produce = spsc_produce, .consume = spsc_consume};
			/* about as long a sample as abd-ring's rows (2,000,000 messages) take at up to
			 * twice their rate: the two samples of a round see the same machine */
			uint64_t n = bytes >= 1024 ? bench_iters(2000000, 100000)
			                           : bench_iters(4000000, 200000);
			bench_throughput(&tp, (struct bench_row){
				.subject = "bare-spsc",
				.case_name = sized_case("throughput", bytes, name, sizeof(name)),
				.cpus = modes[m], .msg_bytes = (unsigned)bytes}, n);
		}
		struct bench_pair pp = {.shm_size = 2 * spsc_size(64, SPSC_SLOTS), .arg = &rtt,
		                        .count_syscalls = true, .init = spsc_init,
		                        .fini = seq_fini, .ping = spsc_ping, .pong = spsc_pong};
		bench_pingpong(&pp, (struct bench_row){
			.subject = "bare-spsc", .case_name = "rtt", .cpus = modes[m], .msg_bytes = 64},
			bench_iters(100000, 10000));
	}
}

/* ---- bare-mpmc ----
 * The floor of a bounded multi-producer/multi-consumer ring: a Vyukov-style queue of 4096
 * cells (as many as abd-ring's 2P2C ring), one sequence word per cell, a position claimed
 * by a CAS on the tail (producers) or the head (consumers), the cell's sequence saying whose
 * turn it is. A lost CAS retries at once; a full queue (push) or an empty one (pop) returns
 * to the caller, which relaxes and tries again: a pause with a vCPU of its own, sched_yield()
 * sharing one (bench_relax) - what abd-ring's 2P2C loops do around abd_ring_try_push /
 * abd_ring_try_pop when those return -EAGAIN (docs/ring.md). Messages of 8 / 64 / 1024
 * bytes copied in and out with memcpy; the consumer checks that the values arrive in order.
 *
 * One thread per process, each process pinned (split: one thread per vCPU; shared: both on
 * one vCPU, yielding to each other): every claim pays the CAS and the cell handshake of an
 * MPMC queue, but no thread is ever preempted by a sibling between its claim and its
 * publication (on two vCPUs, two threads per vCPU turn that into stalls of a timeslice that
 * measure the scheduler, not the queue). Left out: a length per message, leases, recovery
 * of a dead claimant, wake-ups, statistics - what abd adds over this is its own cost. */

#define MPMC_CELLS 4096u

struct mpmc {
	alignas(CACHELINE) _Atomic uint64_t tail; /* next position to claim for writing */
	alignas(CACHELINE) _Atomic uint64_t head; /* next position to claim for reading */
	alignas(CACHELINE) unsigned char cells[];
};

/* A cell: the sequence word, then the message. Cells of small messages share lines (16 B for
 * 8 B messages); bigger ones are whole lines. */
static size_t mpmc_stride(size_t bytes)
{
	size_t s = (8 + bytes + 15) & ~(size_t)15;
	return s > 32 ? (s + CACHELINE - 1) & ~(size_t)(CACHELINE - 1) : s;
}

static size_t mpmc_size(size_t bytes)
{
	return sizeof(struct mpmc) + MPMC_CELLS * mpmc_stride(bytes);
}

struct mpmc_arg {
	size_t bytes;
};

struct mpmc_state {
	struct mpmc *q;
	size_t bytes, stride;
	uint64_t next;   /* A: the next value to produce; B: the next value expected */
};

static inline __attribute__((always_inline)) _Atomic uint64_t *mpmc_seq(struct mpmc *q,
                                                                       size_t stride,
                                                                       uint64_t pos)
{
	return (_Atomic uint64_t *)(void *)(q->cells + (pos & (MPMC_CELLS - 1)) * stride);
}

/* Enqueues one message, or returns false when the queue is full. */
static inline __attribute__((always_inline)) bool mpmc_try_push(struct mpmc *q, size_t stride,
                                                                const void *msg, size_t bytes)
{
	uint64_t pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
	for (;;) {
		_Atomic uint64_t *seq = mpmc_seq(q, stride, pos);
		int64_t d = (int64_t)(atomic_load_explicit(seq, memory_order_acquire) - pos);
		if (d == 0) {
			/* the cell is free for this lap: claim the position */
			if (atomic_compare_exchange_weak_explicit(&q->tail, &pos, pos + 1,
			                                          memory_order_relaxed,
			                                          memory_order_relaxed)) {
				memcpy((unsigned char *)seq + 8, msg, bytes);
				atomic_store_explicit(seq, pos + 1, memory_order_release);
				return true;
			}
			/* lost the race: pos now holds the tail, look again */
		} else if (d < 0) {
			return false; /* the previous lap is still unread: full */
		} else {
			pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
		}
	}
}

/* Dequeues one message, or returns false when the queue is empty. */
static inline __attribute__((always_inline)) bool mpmc_try_pop(struct mpmc *q, size_t stride,
                                                               void *msg, size_t bytes)
{
	uint64_t pos = atomic_load_explicit(&q->head, memory_order_relaxed);
	for (;;) {
		_Atomic uint64_t *seq = mpmc_seq(q, stride, pos);
		int64_t d = (int64_t)(atomic_load_explicit(seq, memory_order_acquire) - (pos + 1));
		if (d == 0) {
			if (atomic_compare_exchange_weak_explicit(&q->head, &pos, pos + 1,
			                                          memory_order_relaxed,
			                                          memory_order_relaxed)) {
				memcpy(msg, (unsigned char *)seq + 8, bytes);
				atomic_store_explicit(seq, pos + MPMC_CELLS, memory_order_release);
				return true;
			}
		} else if (d < 0) {
			return false; /* not written yet: empty */
		} else {
			pos = atomic_load_explicit(&q->head, memory_order_relaxed);
		}
	}
}

static int mpmc_prepare(void *shm, void *arg)
{
	const struct mpmc_arg *a = arg;
	struct mpmc *q = shm;
	size_t stride = mpmc_stride(a->bytes);
	for (uint64_t i = 0; i < MPMC_CELLS; i++)
		atomic_store_explicit(mpmc_seq(q, stride, i), i, memory_order_relaxed);
	return 0;
}

static int mpmc_init(enum bench_role role, void *shm, void *arg, void **state)
{
	(void)role;
	const struct mpmc_arg *a = arg;
	struct mpmc_state *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->q = shm;
	s->bytes = a->bytes;
	s->stride = mpmc_stride(a->bytes);
	*state = s;
	return 0;
}

/* Always inlined with a constant size, so that memcpy becomes moves. */
static inline __attribute__((always_inline)) void mpmc_produce_n(struct mpmc_state *s, uint64_t n,
                                                                 size_t bytes)
{
	unsigned char msg[1024] = {0};
	struct mpmc *q = s->q;
	size_t stride = s->stride;
	for (uint64_t i = 0; i < n;) {
		uint64_t v = s->next + i;
		memcpy(msg, &v, sizeof(v));
		bench_msg_fresh(msg);
		if (mpmc_try_push(q, stride, msg, bytes))
			i++;
		else
			bench_relax();
	}
	s->next += n;
}

static inline __attribute__((always_inline)) uint64_t mpmc_consume_n(struct mpmc_state *s,
                                                                     uint64_t n, size_t bytes)
{
	unsigned char msg[1024];
	struct mpmc *q = s->q;
	size_t stride = s->stride;
	uint64_t bad = 0;
	for (uint64_t i = 0; i < n;) {
		if (!mpmc_try_pop(q, stride, msg, bytes)) {
			bench_relax();
			continue;
		}
		bench_msg_used(msg);
		uint64_t v;
		memcpy(&v, msg, sizeof(v));
		bad |= v ^ (s->next + i);
		i++;
	}
	s->next += n;
	return bad;
}

static int mpmc_produce(void *state, uint64_t n)
{
	struct mpmc_state *s = state;
	switch (s->bytes) {
	case 8: mpmc_produce_n(s, n, 8); break;
	case 64: mpmc_produce_n(s, n, 64); break;
	default: mpmc_produce_n(s, n, 1024); break;
	}
	return 0;
}

static int mpmc_consume(void *state, uint64_t n)
{
	struct mpmc_state *s = state;
	uint64_t bad = s->bytes == 8    ? mpmc_consume_n(s, n, 8)
	               : s->bytes == 64 ? mpmc_consume_n(s, n, 64)
	                                : mpmc_consume_n(s, n, 1024);
	return bad ? bench_fail("mpmc: items out of order") : 0;
}

static void run_mpmc(void)
{
	static struct mpmc_arg args[3];
	for (int m = 0; m < 2; m++)
		for (size_t z = 0; z < 3; z++) {
			char name[40];
			args[z].bytes = sized_bytes[z];
			struct bench_pair tp = {.shm_size = mpmc_size(sized_bytes[z]), .arg = &args[z],
			                        .prepare = mpmc_prepare, .init = mpmc_init,
			                        .fini = seq_fini, .produce = mpmc_produce,
			                        .consume = mpmc_consume};
			uint64_t n = sized_bytes[z] >= 1024 ? bench_iters(1000000, 50000)
			                                    : bench_iters(2000000, 100000);
			bench_throughput(&tp, (struct bench_row){
				.subject = "bare-mpmc",
				.case_name = sized_case("throughput-2p2c", sized_bytes[z], name, sizeof(name)),
				.cpus = modes[m], .msg_bytes = (unsigned)sized_bytes[z]}, n);
		}
}

/* ---- bare-futex ----
 * Does: A posts a word and futex-wakes B, then sleeps in FUTEX_WAIT on B's word until B
 * answers the same way. Leaves out: any message or queue, the check before sleeping that a
 * ring makes (only the words' values). */

struct futex_pair {
	uint32_t ping; /* separate lines: the floor of the syscalls, not of false sharing */
	alignas(CACHELINE) uint32_t pong;
};

static int futex_ping(void *state, uint64_t *ns)
{
	(void)ns;
	struct seqstate *s = state;
	struct futex_pair *f = s->shm;
	uint32_t v = (uint32_t)++s->seq;
	bench_post(&f->ping, v);
	return bench_until(&f->pong, v);
}

static int futex_pong(void *state)
{
	struct seqstate *s = state;
	struct futex_pair *f = s->shm;
	uint32_t v = (uint32_t)++s->seq;
	int r = bench_until(&f->ping, v);
	if (r == 0)
		bench_post(&f->pong, v);
	return r;
}

/* bare-futex rtt-64B: the same ping-pong carrying a 64-byte message each way, the floor of a
 * blocking round trip through a ring (abd-ring rtt-block, abd-service rtt-block-*).
 * Does: A copies its message into the slot beside B's word, stores the word (release) and
 * FUTEX_WAKEs it, then FUTEX_WAITs on its own word until B's reply is there and copies the
 * reply out; B the same the other way round, replying with the message it received. The
 * receiver checks the message's sequence number. rtt-64B-asleep: before each ping, untimed,
 * A waits until B is asleep (bench_until_asleep), as the abd rows of that name do. Leaves out: any queue (one slot each way,
 * the word says it is full), lengths, per-slot state, recovery, and the sleeper flag a ring
 * uses to skip the wake when nobody sleeps: it wakes every time (in a blocking ping-pong
 * the peer is asleep nearly every time, so a ring wakes as often). */

struct futex_slot {
	alignas(CACHELINE) uint32_t word; /* the sequence of the message in msg */
	unsigned char msg[64];            /* the rest of this line and the next */
};

struct futex_msg_pair {
	struct futex_slot ab, ba; /* A -> B, B -> A */
	bool asleep;              /* rtt-64B-asleep: A waits for B to sleep before each ping */
	pid_t pong_pid;           /* B's, for A (set at B's init, which runs first) */
};

static int futex_msg_prepare(void *shm, void *arg)
{
	struct futex_msg_pair *f = shm;
	f->asleep = arg != NULL;
	return 0;
}

static int futex_msg_init(enum bench_role role, void *shm, void *arg, void **state)
{
	struct futex_msg_pair *f = shm;
	if (role == BENCH_B)
		f->pong_pid = getpid();
	return seq_init(role, shm, arg, state);
}

static int futex_msg_ping(void *state, uint64_t *ns)
{
	struct seqstate *s = state;
	struct futex_msg_pair *f = s->shm;
	unsigned char msg[BENCH_MSG_MAX];
	uint64_t v = ++s->seq;
	int r;
	if (f->asleep && (r = bench_until_asleep(f->pong_pid)) < 0)
		return r;
	uint64_t t0 = bench_now_ns();
	memcpy(msg, &v, sizeof(v));
	bench_msg_fresh(msg);
	memcpy(f->ab.msg, msg, 64);
	bench_post(&f->ab.word, (uint32_t)v);
	if ((r = bench_until(&f->ba.word, (uint32_t)v)) < 0)
		return r;
	memcpy(msg, f->ba.msg, 64);
	bench_msg_used(msg);
	uint64_t got;
	memcpy(&got, msg, sizeof(got));
	*ns = bench_now_ns() - t0;
	return got == v ? 0 : -EBADMSG;
}

static int futex_msg_pong(void *state)
{
	struct seqstate *s = state;
	struct futex_msg_pair *f = s->shm;
	unsigned char msg[BENCH_MSG_MAX];
	uint64_t v = ++s->seq, got;
	int r = bench_until(&f->ab.word, (uint32_t)v);
	if (r < 0)
		return r;
	memcpy(msg, f->ab.msg, 64);
	bench_msg_used(msg);
	memcpy(&got, msg, sizeof(got));
	if (got != v)
		return -EBADMSG;
	bench_msg_fresh(msg);
	memcpy(f->ba.msg, msg, 64);
	bench_post(&f->ba.word, (uint32_t)v);
	return 0;
}

/* ---- bare-eventfd, bare-pipe, bare-unix: one transport over four fds ----
 * Does: a blocking write and read each way (8 B through two eventfds, 64 B through two pipes
 * or a socketpair). Leaves out: everything but the syscalls and the wake-ups. */

struct fds {
	int a_out, a_in, b_out, b_in; /* A writes a_out, reads a_in; B the same with b_* */
	unsigned len;
	int kind;
};
enum { FD_EVENTFD, FD_PIPE, FD_STREAM, FD_SEQPACKET };

static int fds_prepare(void *shm, void *arg)
{
	struct fds *f = shm;
	int kind = (int)(intptr_t)arg, p[2], q[2];
	f->kind = kind;
	switch (kind) {
	case FD_EVENTFD:
		if ((p[0] = eventfd(0, EFD_CLOEXEC)) < 0)
			return -errno;
		if ((p[1] = eventfd(0, EFD_CLOEXEC)) < 0)
			return close(p[0]), -errno;
		f->a_out = f->b_in = p[0];
		f->b_out = f->a_in = p[1];
		f->len = 8;
		return 0;
	case FD_PIPE:
		if (pipe2(p, O_CLOEXEC) < 0)
			return -errno;
		if (pipe2(q, O_CLOEXEC) < 0)
			return close(p[0]), close(p[1]), -errno;
		f->a_out = p[1], f->b_in = p[0], f->b_out = q[1], f->a_in = q[0];
		f->len = 64;
		return 0;
	default:
		if (socketpair(AF_UNIX, (kind == FD_STREAM ? SOCK_STREAM : SOCK_SEQPACKET) | SOCK_CLOEXEC,
		               0, p) < 0)
			return -errno;
		f->a_out = f->a_in = p[0];
		f->b_out = f->b_in = p[1];
		f->len = 64;
		return 0;
	}
}

static void fds_cleanup(void *shm, void *arg)
{
	(void)arg;
	struct fds *f = shm;
	int all[] = {f->a_out, f->a_in, f->b_out, f->b_in};
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < i; j++)
			if (all[j] == all[i])
				all[i] = -1;
	for (int i = 0; i < 4; i++)
		if (all[i] >= 0)
			close(all[i]);
}

static int put(int fd, unsigned len)
{
	unsigned char buf[64] = {1};
	ssize_t n = write(fd, buf, len);
	return n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
}

static int get(int fd, unsigned len)
{
	unsigned char buf[64];
	for (unsigned got = 0; got < len;) {
		ssize_t n = read(fd, buf + got, len - got);
		if (n <= 0)
			return n < 0 ? (errno == EINTR ? 0 : -errno) : -EPIPE;
		got += (unsigned)n;
	}
	return 0;
}

static int fds_ping(void *state, uint64_t *ns)
{
	(void)ns;
	struct fds *f = state;
	int r = put(f->a_out, f->len);
	return r ? r : get(f->a_in, f->len);
}

static int fds_pong(void *state)
{
	struct fds *f = state;
	int r = get(f->b_in, f->len);
	return r ? r : put(f->b_out, f->len);
}

static void run_blocking(const char *subject, const char *case_name, int kind)
{
	uint64_t n = bench_iters(10000, 1000);
	for (int m = 0; m < 2; m++) {
		struct bench_pair p = {.shm_size = sizeof(struct fds), .arg = (void *)(intptr_t)kind,
		                       .prepare = fds_prepare, .cleanup = fds_cleanup,
		                       .ping = fds_ping, .pong = fds_pong};
		struct bench_row row = {.subject = subject, .case_name = case_name, .cpus = modes[m],
		                        .msg_bytes = kind == FD_EVENTFD ? 8 : 64};
		bench_pingpong(&p, row, n);
	}
}

static void run_futex(void)
{
	uint64_t n = bench_iters(10000, 1000);
	for (int m = 0; m < 2; m++) {
		struct bench_pair p = {.shm_size = sizeof(struct futex_pair), .init = seq_init,
		                       .fini = seq_fini, .ping = futex_ping, .pong = futex_pong};
		bench_pingpong(&p, (struct bench_row){.subject = "bare-futex", .case_name = "rtt",
		                                      .cpus = modes[m], .msg_bytes = 4}, n);
		struct bench_pair q = {.shm_size = sizeof(struct futex_msg_pair),
		                       .prepare = futex_msg_prepare, .init = futex_msg_init,
		                       .fini = seq_fini, .ping = futex_msg_ping, .pong = futex_msg_pong};
		bench_pingpong(&q, (struct bench_row){.subject = "bare-futex", .case_name = "rtt-64B",
		                                      .cpus = modes[m], .msg_bytes = 64}, n);
		q.arg = &q; /* any non-NULL: asleep */
		bench_pingpong(&q, (struct bench_row){.subject = "bare-futex",
		                                      .case_name = "rtt-64B-asleep", .cpus = modes[m],
		                                      .msg_bytes = 64}, n);
	}
}

static void run_eventfd(void) { run_blocking("bare-eventfd", "rtt", FD_EVENTFD); }
static void run_pipe(void) { run_blocking("bare-pipe", "rtt", FD_PIPE); }
static void run_unix(void)
{
	run_blocking("bare-unix", "rtt-stream", FD_STREAM);
	run_blocking("bare-unix", "rtt-seqpacket", FD_SEQPACKET);
}

/* ---- bare-inotify-linkat ----
 * A publishes the way the registry does (O_TMPFILE in a tmpfs directory, write, linkat of the
 * descriptor: bare_link) and takes the time just before linkat(); B sleeps in read(inotify)
 * and takes the time when it wakes, then acks through a futex. Sample = wake - linkat. Leaves
 * out: the O_TMPFILE and write (before the clock), any lock, and the whole of the watcher's
 * side after its wake-up (it opens and reads nothing): the strict floor. */

struct inot {
	char dir[96];
	uint64_t t_wake;
	alignas(CACHELINE) uint32_t ack;
};

struct inot_state {
	struct inot *sh;
	int dirfd, ifd;
	uint32_t seq;
};

/* linkat of an O_TMPFILE descriptor as abd_publish_commit makes it: AT_EMPTY_PATH (root, or
 * the credentials that opened the file from 6.10), else through /proc/self/fd (from the first
 * refusal on). 0 or -errno. */
static bool empty_path_refused;

static int bare_link(int fd, int dirfd, const char *name)
{
	if (!empty_path_refused) {
		if (linkat(fd, "", dirfd, name, AT_EMPTY_PATH) == 0)
			return 0;
		if (errno != ENOENT)
			return -errno;
	}
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (linkat(AT_FDCWD, path, dirfd, name, AT_SYMLINK_FOLLOW) < 0)
		return -errno;
	empty_path_refused = true;
	return 0;
}

static int inot_prepare(void *shm, void *arg)
{
	(void)arg;
	struct inot *in = shm;
	return bench_tmpdir(in->dir, sizeof(in->dir));
}

static void inot_cleanup(void *shm, void *arg)
{
	(void)arg;
	bench_rmdir(((struct inot *)shm)->dir);
}

static int inot_init(enum bench_role role, void *shm, void *arg, void **state)
{
	(void)arg;
	struct inot_state *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->sh = shm;
	s->ifd = s->dirfd = -1;
	*state = s;
	s->dirfd = open(s->sh->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dirfd < 0)
		return -errno;
	if (role == BENCH_B) {
		s->ifd = inotify_init1(IN_CLOEXEC);
		if (s->ifd < 0 || inotify_add_watch(s->ifd, s->sh->dir, IN_CREATE | IN_MOVED_TO) < 0)
			return -errno;
	} else {
		int fd = open(s->sh->dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		if (fd < 0)
			return bench_fail("O_TMPFILE in %s: %s", s->sh->dir, strerror(errno));
		close(fd);
	}
	return 0;
}

static void inot_fini(enum bench_role role, void *state)
{
	(void)role;
	struct inot_state *s = state;
	if (s->dirfd >= 0)
		close(s->dirfd);
	if (s->ifd >= 0)
		close(s->ifd);
	free(s);
}

static int inot_ping(void *state, uint64_t *ns)
{
	struct inot_state *s = state;
	char record[256] = "abd-perf record", name[32];
	uint32_t v = ++s->seq;

	int fd = openat(s->dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, record, sizeof(record)) != (ssize_t)sizeof(record)) {
		close(fd);
		return -EIO;
	}
	snprintf(name, sizeof(name), "r%u", v);
	uint64_t t = bench_now_ns();
	int r = bare_link(fd, s->dirfd, name);
	close(fd);
	if (r == 0)
		r = bench_until(&s->sh->ack, v);
	if (r == 0) {
		uint64_t w = __atomic_load_n(&s->sh->t_wake, __ATOMIC_ACQUIRE);
		*ns = w > t ? w - t : 1;
		unlinkat(s->dirfd, name, 0);
	}
	return r;
}

static int inot_pong(void *state)
{
	struct inot_state *s = state;
	alignas(struct inotify_event) char buf[4096];
	ssize_t n = read(s->ifd, buf, sizeof(buf));
	uint64_t t = bench_now_ns();
	if (n <= 0)
		return n < 0 ? -errno : -EIO;
	__atomic_store_n(&s->sh->t_wake, t, __ATOMIC_RELEASE);
	bench_post(&s->sh->ack, ++s->seq);
	return 0;
}

static void run_inotify(void)
{
	uint64_t n = bench_iters(10000, 1000);
	for (int m = 0; m < 2; m++) {
		struct bench_pair p = {.shm_size = sizeof(struct inot), .prepare = inot_prepare,
		                       .cleanup = inot_cleanup, .init = inot_init, .fini = inot_fini,
		                       .ping = inot_ping, .pong = inot_pong};
		bench_pingpong(&p, (struct bench_row){.subject = "bare-inotify-linkat",
		                                      .case_name = "linkat-to-wake", .cpus = modes[m]}, n);
	}
}

/* ---- bare-inotify-publish ----
 * The work abd's publish-to-added row does, in bare syscalls and nothing more: A takes the
 * time, then open(O_TMPFILE), write of a record as large as abd's (152 B), linkat (bare_link);
 * B wakes in read(inotify), opens the name the event carries, reads it, closes
 * it, takes the time and acks. Sample = B's time - A's. No lock, no fstat, no validation: what
 * abd adds on top of these is its own cost. A keeps its descriptor until the ack, as a
 * publisher keeps its record's. */

#define BARE_RECORD 152

static int pubb_ping(void *state, uint64_t *ns)
{
	struct inot_state *s = state;
	char record[BARE_RECORD] = "abd-perf record", name[32];
	uint32_t v = ++s->seq;

	uint64_t t = bench_now_ns();
	int fd = openat(s->dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	int r = 0;
	if (write(fd, record, sizeof(record)) != (ssize_t)sizeof(record))
		r = -EIO;
	snprintf(name, sizeof(name), "r%u", v);
	if (r == 0)
		r = bare_link(fd, s->dirfd, name);
	if (r == 0)
		r = bench_until(&s->sh->ack, v);
	close(fd);
	if (r == 0) {
		uint64_t w = __atomic_load_n(&s->sh->t_wake, __ATOMIC_ACQUIRE);
		*ns = w > t ? w - t : 1;
		unlinkat(s->dirfd, name, 0);
	}
	return r;
}

static int pubb_pong(void *state)
{
	struct inot_state *s = state;
	alignas(struct inotify_event) char buf[4096];
	char record[4096];
	ssize_t n = read(s->ifd, buf, sizeof(buf));
	if (n < (ssize_t)sizeof(struct inotify_event))
		return n < 0 ? -errno : -EIO;
	const struct inotify_event *ev = (const struct inotify_event *)(const void *)buf;
	if (!ev->len)
		return -EIO;
	int fd = openat(s->dirfd, ev->name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t k = read(fd, record, sizeof(record));
	close(fd);
	uint64_t t = bench_now_ns();
	if (k != BARE_RECORD)
		return k < 0 ? -errno : -EIO;
	__atomic_store_n(&s->sh->t_wake, t, __ATOMIC_RELEASE);
	bench_post(&s->sh->ack, ++s->seq);
	return 0;
}

static void run_inotify_publish(void)
{
	uint64_t n = bench_iters(10000, 1000);
	for (int m = 0; m < 2; m++) {
		struct bench_pair p = {.shm_size = sizeof(struct inot), .prepare = inot_prepare,
		                       .cleanup = inot_cleanup, .init = inot_init, .fini = inot_fini,
		                       .ping = pubb_ping, .pong = pubb_pong};
		bench_pingpong(&p, (struct bench_row){.subject = "bare-inotify-publish",
		                                      .case_name = "tmpfile-to-read", .cpus = modes[m]}, n);
	}
}

/* ---- bare-pidfd-exit ----
 * A forks a child pinned to the other CPU (split) or its own (shared); the child waits for
 * the go, records the time and exits; A sleeps in poll(pidfd). Sample = wake - exit. B idles.
 * Leaves out: any record, lock or registry: the kernel's own notice of an exit. */

struct exits {
	uint64_t t_exit;
	alignas(CACHELINE) uint32_t go;
};

static int exit_ping(void *state, uint64_t *ns)
{
	struct seqstate *s = state;
	struct exits *e = s->shm;
	uint32_t v = (uint32_t)++s->seq;

	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		bench_pin(bench_cpu_other);
		bench_until(&e->go, v);
		__atomic_store_n(&e->t_exit, bench_now_ns(), __ATOMIC_RELEASE);
		_exit(0);
	}
	int pidfd = abd__pidfd_open(pid, 0), r = 0;
	if (pidfd < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return pidfd;
	}
	bench_post(&e->go, v);
	struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
	int k;
	while ((k = poll(&pfd, 1, 10000)) < 0 && errno == EINTR)
		;
	uint64_t t = bench_now_ns();
	if (k <= 0) {
		r = k < 0 ? -errno : -ETIMEDOUT;
		kill(pid, SIGKILL);
	}
	waitpid(pid, NULL, 0);
	close(pidfd);
	uint64_t x = __atomic_load_n(&e->t_exit, __ATOMIC_ACQUIRE);
	*ns = t > x ? t - x : 1;
	return r;
}

static int idle_pong(void *state)
{
	(void)state;
	return 0;
}

static void run_pidfd(void)
{
	uint64_t n = bench_iters(1000, 30); /* a fork per sample */
	for (int m = 0; m < 2; m++) {
		struct bench_pair p = {.shm_size = sizeof(struct exits), .init = seq_init,
		                       .fini = seq_fini, .ping = exit_ping, .pong = idle_pong};
		bench_pingpong(&p, (struct bench_row){.subject = "bare-pidfd-exit",
		                                      .case_name = "exit-to-poll", .cpus = modes[m]}, n);
	}
}

const struct bench_subject bench_baseline_subjects[] = {
	{"bare-cacheline", run_cacheline},
	{"bare-spsc", run_spsc},
	{"bare-mpmc", run_mpmc},
	{"bare-futex", run_futex},
	{"bare-eventfd", run_eventfd},
	{"bare-pipe", run_pipe},
	{"bare-unix", run_unix},
	{"bare-inotify-linkat", run_inotify},
	{"bare-inotify-publish", run_inotify_publish},
	{"bare-pidfd-exit", run_pidfd},
	{0},
};

void bench_baselines(void)
{
	for (const struct bench_subject *s = bench_baseline_subjects; s->name; s++)
		bench_subject_run(s->name);
}
