/* SPDX-License-Identifier: MIT */
/* The ring, single process: every API call, every mode, the error contract, typed wrappers,
 * zero-copy, batches, waiting from a reactor. Multi-process properties live in
 * test-ring-procs.c, hostile input in test-ring-hostile.c. */
#include <abd/ring.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "harness.h"

static const unsigned modes[] = {
	0,
	ABD_RING_SINGLE_PRODUCER,
	ABD_RING_SINGLE_CONSUMER,
	ABD_RING_SINGLE_PRODUCER | ABD_RING_SINGLE_CONSUMER,
};

ABD_TEST(ring, bad_arguments_are_einval)
{
	struct abd_ring *r = NULL;
	cr_assert_eq(abd_ring_new(0, 8, 0, NULL, &r), -EINVAL);
	cr_assert_eq(abd_ring_new(1, 8, 0, NULL, &r), -EINVAL);
	cr_assert_eq(abd_ring_new(3, 8, 0, NULL, &r), -EINVAL);
	cr_assert_eq(abd_ring_new(ABD_RING_MAX_CAPACITY * 2u, 8, 0, NULL, &r), -EINVAL);
	cr_assert_eq(abd_ring_new(8, 0, 0, NULL, &r), -EINVAL);
	cr_assert_eq(abd_ring_new(8, ABD_RING_MAX_SLOT_SIZE + 1, 0, NULL, &r), -EINVAL);
	cr_assert_eq(abd_ring_new(8, 8, 1u << 20, NULL, &r), -EINVAL);
	cr_assert_eq(abd_ring_new(8, 8, 0, NULL, NULL), -EINVAL);
	cr_assert_null(r);
	cr_assert_eq(abd_ring_attach(-1, -1, NULL, 0, &r), -EINVAL);
	cr_assert_eq(abd_ring_attach(0, -2, NULL, 0, &r), -EINVAL);
	cr_assert_eq(abd_ring_try_push(NULL, "x", 1), -EINVAL);
	cr_assert_eq(abd_ring_try_pop(NULL, NULL, 0), -EINVAL);
	cr_assert_eq(abd_ring_push(NULL, "x", 1, 0), -EINVAL);
	cr_assert_eq(abd_ring_pop(NULL, NULL, 0, 0), -EINVAL);
	cr_assert_eq(abd_ring_fd(NULL), -EINVAL);
	cr_assert_eq(abd_ring_wait_fd(NULL), -EINVAL);
	cr_assert_eq(abd_ring_recover(NULL), -EINVAL);
	cr_assert_eq(abd_ring_stats(NULL, NULL), -EINVAL);
	abd_ring_free(NULL);

	cr_assert_eq(abd_ring_new(8, 8, 0, NULL, &r), 0);
	cr_assert_eq(abd_ring_try_push(r, NULL, 1), -EINVAL);
	cr_assert_eq(abd_ring_push(r, "x", 1, -2), -EINVAL);
	cr_assert_eq(abd_ring_commit(r, (void *)r, 1), -EINVAL);
	cr_assert_eq(abd_ring_release(r, r), -EINVAL);
	cr_assert_eq(abd_ring_abort(r, r), -EINVAL);
	cr_assert_eq(abd_ring_set_stuck_timeout(r, -1), -EINVAL);
	uint32_t v;
	int64_t t;
	cr_assert_eq(abd_ring_wait_prepare(r, 7, &v, &t), -EINVAL);
	abd_ring_free(r);
}

static void roundtrip(unsigned mode)
{
	struct abd_ring *r;
	cr_assert_eq(abd_ring_new(8, 100, mode, NULL, &r), 0);
	cr_assert_eq(abd_ring_capacity(r), 8);
	cr_assert_eq(abd_ring_slot_size(r), 100);
	char buf[128];
	cr_assert_eq(abd_ring_try_pop(r, buf, sizeof(buf)), -EAGAIN, "empty ring");
	for (int i = 0; i < 100; i++) {
		cr_assert_eq(abd_ring_try_push(r, &i, sizeof(i)), 0);
		cr_assert_eq(abd_ring_try_pop(r, buf, sizeof(buf)), sizeof(i));
	}
	struct abd_ring_stats st;
	cr_assert_eq(abd_ring_stats(r, &st), 0);
	cr_assert_eq(st.wakes, 0, "nobody slept: no wake syscall");
	for (int lap = 0; lap < 5; lap++) {
		for (int i = 0; i < 8; i++) {
			char m[100];
			memset(m, 'a' + i, sizeof(m));
			cr_assert_eq(abd_ring_try_push(r, m, (size_t)(i * 13 % 101)), 0, "mode %u lap %d i %d", mode, lap, i);
		}
		cr_assert_eq(abd_ring_try_push(r, "x", 1), -EAGAIN, "full ring");
		cr_assert_eq(abd_ring_push(r, "x", 1, 0), -EAGAIN, "full ring, timeout 0");
		cr_assert_eq(abd_ring_push(r, "x", 1, 1000000), -ETIMEDOUT, "full ring, 1 ms");
		for (int i = 0; i < 8; i++) {
			int n = abd_ring_try_pop(r, buf, sizeof(buf));
			cr_assert_eq(n, i * 13 % 101, "FIFO: mode %u lap %d i %d n %d", mode, lap, i, n);
			for (int k = 0; k < n; k++)
				cr_assert_eq(buf[k], 'a' + i);
		}
		cr_assert_eq(abd_ring_try_pop(r, buf, sizeof(buf)), -EAGAIN);
		cr_assert_eq(abd_ring_pop(r, buf, sizeof(buf), 0), -EAGAIN);
		cr_assert_eq(abd_ring_pop(r, buf, sizeof(buf), 1000000), -ETIMEDOUT);
	}
	char big[101] = { 0 };
	cr_assert_eq(abd_ring_try_push(r, big, 101), -EMSGSIZE);
	cr_assert_eq(abd_ring_try_push(r, big, 100), 0);
	cr_assert_eq(abd_ring_try_pop(r, buf, 99), -EMSGSIZE, "too small a buffer");
	cr_assert_eq(abd_ring_try_pop(r, buf, 100), 100, "the message stayed");
	cr_assert_eq(abd_ring_try_push(r, NULL, 0), 0, "empty message");
	cr_assert_eq(abd_ring_try_pop(r, NULL, 0), 0);
	cr_assert_eq(abd_ring_stats(r, &st), 0);
	cr_assert_eq(st.pushed, 100 + 5 * 8 + 2);
	cr_assert_eq(st.popped, 100 + 5 * 8 + 2);
	cr_assert_leq(st.wakes, st.own_waits, "a wake syscall only ever answers a sleep");
	abd_ring_free(r);
}

ABD_TEST(ring, push_pop_fifo_full_empty_every_mode)
{
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		roundtrip(modes[i]);
}

/* A single producer and consumer that have streamed for a while (more than ABD__RING_CALM
 * publications without a sleeper, several laps) push and pop through the short paths of
 * ring.c; every rule of the general paths still holds there: each length from 0 to beyond the
 * slot size copied exactly (the inline copies switch at 8, 16, 32 and 64 bytes), -EMSGSIZE for
 * a message too long or a buffer too short (the message stays), -EBUSY while a reservation or
 * a peeked slot is held, -EAGAIN full and empty, NULL buffers, and statistics that count
 * every message. */
ABD_TEST(ring, streaming_spsc_short_paths_keep_every_rule)
{
	enum { CAP = 16, SLOT = 100 };
	struct abd_ring *r;
	cr_assert_eq(abd_ring_new(CAP, SLOT, ABD_RING_SINGLE_PRODUCER | ABD_RING_SINGLE_CONSUMER,
	                          NULL, &r), 0);
	unsigned char in[SLOT + 1], out[SLOT + 8];
	uint64_t pushed = 0;
	for (int lap = 0; lap < 40; lap++) {
		for (int k = 0; k < CAP; k++, pushed++) {
			size_t len = pushed % (SLOT + 1);
			for (size_t i = 0; i < len; i++)
				in[i] = (unsigned char)(pushed * 31 + i);
			cr_assert_eq(abd_ring_try_push(r, in, len), 0, "push %llu", (unsigned long long)pushed);
		}
		cr_assert_eq(abd_ring_try_push(r, in, 1), -EAGAIN, "full");
		cr_assert_eq(abd_ring_try_push(r, in, SLOT + 1), -EMSGSIZE);
		for (int k = 0; k < CAP; k++) {
			uint64_t m = pushed - CAP + (uint64_t)k;
			size_t len = m % (SLOT + 1);
			if (len > 0) {
				cr_assert_eq(abd_ring_try_pop(r, out, len - 1), -EMSGSIZE, "buffer too short");
				cr_assert_eq(abd_ring_try_pop(r, NULL, 0), -EMSGSIZE);
			}
			memset(out, 0xee, sizeof(out));
			int got = len ? abd_ring_try_pop(r, out, len) : abd_ring_try_pop(r, NULL, 0);
			cr_assert_eq(got, (int)len, "message %llu", (unsigned long long)m);
			for (size_t i = 0; i < len; i++)
				cr_assert_eq(out[i], (unsigned char)(m * 31 + i), "byte %zu of %llu", i,
				             (unsigned long long)m);
			cr_assert_eq(out[len], len ? 0xee : out[len], "nothing written past the message");
		}
		cr_assert_eq(abd_ring_try_pop(r, out, sizeof(out)), -EAGAIN, "empty");
	}
	cr_assert_eq(abd_ring_try_push(r, NULL, 3), -EINVAL);
	cr_assert_eq(abd_ring_try_pop(r, NULL, 3), -EINVAL);
	/* a reservation / a peeked slot held in streaming mode still excludes the copy forms */
	void *p;
	cr_assert_eq(abd_ring_try_reserve(r, &p), 0);
	cr_assert_eq(abd_ring_try_push(r, "x", 1), -EBUSY);
	cr_assert_eq(abd_ring_commit(r, p, 0), 0);
	cr_assert_eq(abd_ring_try_push(r, "yz", 2), 0);
	const void *q;
	size_t len;
	cr_assert_eq(abd_ring_try_peek(r, &q, &len), 0);
	cr_assert_eq(len, 0);
	cr_assert_eq(abd_ring_try_pop(r, out, sizeof(out)), -EBUSY);
	cr_assert_eq(abd_ring_release(r, q), 0);
	cr_assert_eq(abd_ring_try_pop(r, out, sizeof(out)), 2);
	cr_assert_eq(memcmp(out, "yz", 2), 0);
	/* batches between short-path messages: each message counted once in the statistics */
	const void *msgs[5] = {"a", "b", "c", "d", "e"};
	size_t lens[5] = {1, 1, 1, 1, 1};
	for (int k = 0; k < 300; k++) {
		cr_assert_eq(abd_ring_try_push_batch(r, msgs, lens, 5), 5);
		cr_assert_eq(abd_ring_try_push(r, "f", 1), 0);
		char bufs[6][8];
		size_t got[6];
		cr_assert_eq(abd_ring_try_pop_batch(r, bufs, 8, got, 3), 3);
		for (int m = 0; m < 3; m++)
			cr_assert_eq(abd_ring_try_pop(r, out, sizeof(out)), 1);
		cr_assert_eq(out[0], 'f');
	}
	struct abd_ring_stats st;
	cr_assert_eq(abd_ring_stats(r, &st), 0);
	cr_assert_eq(st.pushed, pushed + 2 + 300 * 6, "pushed %llu", (unsigned long long)st.pushed);
	cr_assert_eq(st.popped, pushed + 2 + 300 * 6, "popped %llu", (unsigned long long)st.popped);
	abd_ring_free(r);
}

/* The streams (abd_ring_stream_*): the try forms' answers for every length, full, empty, too
 * short a buffer, bad arguments; exclusive with the handle's own forms for the streamed role;
 * FIFO and exact statistics across open, close and the handle's forms in between. */
ABD_TEST(ring, streams_keep_every_rule_of_the_try_forms)
{
	enum { CAP = 16, SLOT = 100 };
	struct abd_ring *r, *mp;
	cr_assert_eq(abd_ring_new(CAP, SLOT, ABD_RING_SINGLE_PRODUCER | ABD_RING_SINGLE_CONSUMER,
	                          NULL, &r), 0);
	cr_assert_eq(abd_ring_new(CAP, SLOT, ABD_RING_SINGLE_CONSUMER, NULL, &mp), 0);
	struct abd_ring_stream bad = abd_ring_stream_open(mp, ABD_RING_PRODUCER);
	cr_assert_eq(bad.ret, -EOPNOTSUPP, "only a single-producer single-consumer ring streams");
	cr_assert_eq(abd_ring_stream_push(&bad, "x", 1), -EINVAL, "a stream that did not open");
	abd_ring_free(mp);
	cr_assert_eq(abd_ring_stream_open(NULL, ABD_RING_PRODUCER).ret, -EINVAL);
	cr_assert_eq(abd_ring_stream_open(r, ABD_RING_PRODUCER | ABD_RING_CONSUMER).ret, -EINVAL);
	struct abd_ring_stream other;
	cr_assert_eq(abd__ring_stream_open(r, ABD_RING_PRODUCER, ABD_RING_STREAM_ABI + 1, &other),
	             -EPROTO, "a header of another stream layout");

	struct abd_ring_stream p = abd_ring_stream_open(r, ABD_RING_PRODUCER);
	struct abd_ring_stream c = abd_ring_stream_open(r, ABD_RING_CONSUMER);
	cr_assert_eq(p.ret, 0);
	cr_assert_eq(c.ret, 0);
	cr_assert_eq(abd_ring_stream_open(r, ABD_RING_PRODUCER).ret, -EBUSY, "one stream per role");
	/* while streamed, the handle's forms for the role step aside */
	unsigned char in[SLOT + 1], out[SLOT + 8];
	void *rp;
	const void *q;
	size_t len;
	uint32_t fv;
	int64_t tmo;
	cr_assert_eq(abd_ring_try_push(r, "x", 1), -EBUSY);
	cr_assert_eq(abd_ring_try_reserve(r, &rp), -EBUSY);
	cr_assert_eq(abd_ring_try_pop(r, out, sizeof(out)), -EBUSY);
	cr_assert_eq(abd_ring_try_peek(r, &q, &len), -EBUSY);
	cr_assert_eq(abd_ring_wait_prepare(r, ABD_RING_WAIT_DATA, &fv, &tmo), -EBUSY);
	cr_assert_eq(abd_ring_wait_prepare(r, ABD_RING_WAIT_SPACE, &fv, &tmo), -EBUSY);

	uint64_t pushed = 0;
	for (int lap = 0; lap < 40; lap++) {
		for (int k = 0; k < CAP; k++, pushed++) {
			size_t n = pushed % (SLOT + 1);
			for (size_t i = 0; i < n; i++)
				in[i] = (unsigned char)(pushed * 29 + i);
			cr_assert_eq(abd_ring_stream_push(&p, in, n), 0, "push %llu", (unsigned long long)pushed);
		}
		cr_assert_eq(abd_ring_stream_push(&p, in, 1), -EAGAIN, "full");
		cr_assert_eq(abd_ring_stream_push(&p, in, SLOT + 1), -EMSGSIZE);
		for (int k = 0; k < CAP; k++) {
			uint64_t m = pushed - CAP + (uint64_t)k;
			size_t n = m % (SLOT + 1);
			if (n > 0) {
				cr_assert_eq(abd_ring_stream_pop(&c, out, n - 1), -EMSGSIZE, "buffer too short");
				cr_assert_eq(abd_ring_stream_pop(&c, NULL, 0), -EMSGSIZE);
			}
			memset(out, 0xee, sizeof(out));
			int got = n ? abd_ring_stream_pop(&c, out, n) : abd_ring_stream_pop(&c, NULL, 0);
			cr_assert_eq(got, (int)n, "message %llu", (unsigned long long)m);
			for (size_t i = 0; i < n; i++)
				cr_assert_eq(out[i], (unsigned char)(m * 29 + i), "byte %zu of %llu", i,
				             (unsigned long long)m);
			if (n)
				cr_assert_eq(out[n], 0xee, "nothing written past the message");
		}
		cr_assert_eq(abd_ring_stream_pop(&c, out, sizeof(out)), -EAGAIN, "empty");
	}
	cr_assert_eq(abd_ring_stream_push(&p, NULL, 3), -EINVAL);
	cr_assert_eq(abd_ring_stream_pop(&c, NULL, 3), -EINVAL);
	/* the handle takes over where the streams stopped, and streams take over again */
	cr_assert_eq(abd_ring_stream_push(&p, "s1", 2), 0);
	cr_assert_eq(abd_ring_stream_close(&p), 0);
	cr_assert_eq(abd_ring_stream_close(&p), -EINVAL, "closed twice");
	cr_assert_eq(abd_ring_stream_push(&p, "no", 2), -EINVAL, "a closed stream");
	cr_assert_eq(abd_ring_try_push(r, "h1", 2), 0);
	cr_assert_eq(abd_ring_stream_pop(&c, out, sizeof(out)), 2);
	cr_assert_eq(memcmp(out, "s1", 2), 0);
	cr_assert_eq(abd_ring_stream_close(&c), 0);
	cr_assert_eq(abd_ring_try_pop(r, out, sizeof(out)), 2);
	cr_assert_eq(memcmp(out, "h1", 2), 0);
	p = abd_ring_stream_open(r, ABD_RING_PRODUCER);
	c = abd_ring_stream_open(r, ABD_RING_CONSUMER);
	cr_assert_eq(p.ret, 0);
	cr_assert_eq(c.ret, 0);
	/* many laps, statistics flushed every 256 positions and at close */
	uint64_t extra = 1000;
	for (uint64_t i = 0; i < extra; i++) {
		cr_assert_eq(abd_ring_stream_push(&p, &i, sizeof(i)), 0);
		uint64_t v;
		cr_assert_eq(abd_ring_stream_pop(&c, &v, sizeof(v)), (int)sizeof(v));
		cr_assert_eq(v, i);
	}
	cr_assert_eq(abd_ring_stream_close(&p), 0);
	cr_assert_eq(abd_ring_stream_close(&c), 0);
	/* a reservation held excludes a stream of that role */
	cr_assert_eq(abd_ring_try_reserve(r, &rp), 0);
	cr_assert_eq(abd_ring_stream_open(r, ABD_RING_PRODUCER).ret, -EBUSY);
	cr_assert_eq(abd_ring_commit(r, rp, 0), 0);
	cr_assert_eq(abd_ring_try_pop(r, out, sizeof(out)), 0);
	struct abd_ring_stats st;
	cr_assert_eq(abd_ring_stats(r, &st), 0);
	uint64_t total = pushed + 2 + extra + 1;
	cr_assert_eq(st.pushed, total, "pushed %llu", (unsigned long long)st.pushed);
	cr_assert_eq(st.popped, total, "popped %llu", (unsigned long long)st.popped);
	abd_ring_free(r);
	struct abd_ring *cons;
	cr_assert_eq(abd_ring_new(4, 8, ABD_RING_SINGLE_PRODUCER | ABD_RING_SINGLE_CONSUMER |
	                                    ABD_RING_CONSUMER, NULL, &cons), 0);
	cr_assert_eq(abd_ring_stream_open(cons, ABD_RING_PRODUCER).ret, -EPERM, "no producer role");
	abd_ring_free(cons);
}

/* A stream running unfenced (no sleeper for a while: its inline path) checks for a sleeper after
 * every message and wakes it: with a consumer (producer) announced asleep, the very next push
 * (pop) makes the wake, not the grace timer nor the 256-message flush. */
ABD_TEST(ring, a_stream_wakes_an_announced_sleeper_at_the_next_message)
{
	struct abd_ring *r, *p, *c;
	cr_assert_eq(abd_ring_new(128, 8, ABD_RING_SINGLE_PRODUCER | ABD_RING_SINGLE_CONSUMER |
	                                      ABD_RING_PRODUCER, NULL, &p), 0);
	cr_assert_eq(abd_ring_attach(abd_ring_fd(p), abd_ring_wait_fd(p), NULL, ABD_RING_CONSUMER, &c), 0);
	r = p;
	struct abd_ring_stream ps = abd_ring_stream_open(p, ABD_RING_PRODUCER);
	struct abd_ring_stream cs = abd_ring_stream_open(c, ABD_RING_CONSUMER);
	cr_assert_eq(ps.ret, 0);
	cr_assert_eq(cs.ret, 0);
	uint64_t v = 0, w;
	/* calm: both sides go unfenced, onto the inline paths */
	for (int i = 0; i < 100; i++, v++) {
		cr_assert_eq(abd_ring_stream_push(&ps, &v, 8), 0);
		cr_assert_eq(abd_ring_stream_pop(&cs, &w, 8), 8);
	}
	cr_assert(ps.fast && cs.fast, "unfenced after a calm run");
	struct abd_ring_stats st;
	cr_assert_eq(abd_ring_stats(r, &st), 0);
	uint64_t wakes = st.wakes;
	/* the consumer side announces a sleep (through its own handle: close its stream first) */
	cr_assert_eq(abd_ring_stream_close(&cs), 0);
	uint32_t fv;
	int64_t tmo;
	cr_assert_eq(abd_ring_wait_prepare(c, ABD_RING_WAIT_DATA, &fv, &tmo), 0, "must sleep");
	cr_assert_eq(abd_ring_stream_push(&ps, &v, 8), 0); /* position 101: no flush due */
	cr_assert_eq(abd_ring_stats(r, &st), 0);
	cr_assert_eq(st.wakes, wakes + 1, "the push woke the sleeper (wakes %llu -> %llu)",
	             (unsigned long long)wakes, (unsigned long long)st.wakes);
	cr_assert_eq(abd_ring_wait_finish(c, ABD_RING_WAIT_DATA), 0);
	cr_assert_eq(abd_ring_try_pop(c, &w, 8), 8);
	cr_assert_eq(w, v);
	v++;
	/* the mirror: a producer asleep on a full ring, woken by the next stream pop */
	cs = abd_ring_stream_open(c, ABD_RING_CONSUMER);
	cr_assert_eq(cs.ret, 0);
	for (int i = 0; i < 100; i++, v++) { /* calm again for the producer after its wake */
		cr_assert_eq(abd_ring_stream_push(&ps, &v, 8), 0);
		cr_assert_eq(abd_ring_stream_pop(&cs, &w, 8), 8);
	}
	for (int i = 0; i < 128; i++, v++)
		cr_assert_eq(abd_ring_stream_push(&ps, &v, 8), 0);
	cr_assert_eq(abd_ring_stream_push(&ps, &v, 8), -EAGAIN, "full");
	cr_assert_eq(abd_ring_stream_close(&ps), 0);
	cr_assert(cs.fast, "the consumer stream is on its inline path");
	cr_assert_eq(abd_ring_wait_prepare(p, ABD_RING_WAIT_SPACE, &fv, &tmo), 0, "must sleep");
	cr_assert_eq(abd_ring_stats(r, &st), 0);
	wakes = st.wakes;
	cr_assert_eq(abd_ring_stream_pop(&cs, &w, 8), 8);
	cr_assert_eq(abd_ring_stats(r, &st), 0);
	cr_assert_eq(st.wakes, wakes + 1, "the pop woke the producer");
	cr_assert_eq(abd_ring_wait_finish(p, ABD_RING_WAIT_SPACE), 0);
	cr_assert_eq(abd_ring_stream_close(&cs), 0);
	abd_ring_free(c);
	abd_ring_free(p);
}

static void zero_copy(unsigned mode)
{
	struct abd_ring *r;
	cr_assert_eq(abd_ring_new(4, 64, mode, NULL, &r), 0);
	void *p;
	cr_assert_eq(abd_ring_try_reserve(r, &p), 0);
	cr_assert_eq((uintptr_t)p % 16, 0, "16-byte aligned payload");
	memcpy(p, "hello", 5);
	cr_assert_eq(abd_ring_commit(r, p, 65), -EMSGSIZE);
	const void *q;
	size_t len;
	cr_assert_eq(abd_ring_try_peek(r, &q, &len), -EAGAIN, "not committed yet");
	cr_assert_eq(abd_ring_commit(r, p, 5), 0);
	cr_assert_eq(abd_ring_commit(r, p, 5), -EINVAL, "committed twice");
	cr_assert_eq(abd_ring_try_peek(r, &q, &len), 0);
	cr_assert_eq(len, 5);
	cr_assert_eq(memcmp(q, "hello", 5), 0);
	if (mode & ABD_RING_SINGLE_CONSUMER) {
		const void *q2;
		cr_assert_eq(abd_ring_try_peek(r, &q2, &len), -EBUSY);
		char b[8];
		cr_assert_eq(abd_ring_try_pop(r, b, 8), -EBUSY);
	}
	cr_assert_eq(abd_ring_release(r, q), 0);
	cr_assert_eq(abd_ring_release(r, q), -EINVAL, "released twice");
	/* an aborted reservation is skipped by consumers */
	cr_assert_eq(abd_ring_try_reserve(r, &p), 0);
	if (mode & ABD_RING_SINGLE_PRODUCER) {
		void *p2;
		cr_assert_eq(abd_ring_try_reserve(r, &p2), -EBUSY);
	}
	cr_assert_eq(abd_ring_abort(r, p), 0);
	cr_assert_eq(abd_ring_try_push(r, "after", 5), 0);
	char b[64];
	cr_assert_eq(abd_ring_try_pop(r, b, sizeof(b)), 5);
	cr_assert_eq(memcmp(b, "after", 5), 0);
	/* a reservation still held at free() does not leak into the next user */
	cr_assert_eq(abd_ring_try_reserve(r, &p), 0);
	abd_ring_free(r);
}

ABD_TEST(ring, zero_copy_reserve_commit_peek_release)
{
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		zero_copy(modes[i]);
}

ABD_TEST(ring, batch_forms)
{
	for (size_t mi = 0; mi < sizeof(modes) / sizeof(modes[0]); mi++) {
		struct abd_ring *r;
		cr_assert_eq(abd_ring_new(16, 8, modes[mi], NULL, &r), 0);
		uint64_t vals[20];
		const void *msgs[20];
		size_t lens[20];
		for (int i = 0; i < 20; i++) {
			vals[i] = 1000u + (unsigned)i;
			msgs[i] = &vals[i];
			lens[i] = 8;
		}
		cr_assert_eq(abd_ring_try_push_batch(r, msgs, lens, 20), 16, "a batch stops when full");
		cr_assert_eq(abd_ring_try_push_batch(r, msgs, lens, 20), 0);
		lens[3] = 9;
		cr_assert_eq(abd_ring_try_push_batch(r, msgs, lens, 20), -EMSGSIZE);
		uint64_t out[10];
		size_t olens[10];
		cr_assert_eq(abd_ring_try_pop_batch(r, out, 8, olens, 10), 10);
		cr_assert_eq(abd_ring_try_pop_batch(r, out, 8, olens, 10), 6);
		for (int i = 0; i < 6; i++) {
			cr_assert_eq(out[i], 1010u + (unsigned)i);
			cr_assert_eq(olens[i], 8);
		}
		cr_assert_eq(abd_ring_try_pop_batch(r, out, 8, olens, 10), 0);
		abd_ring_free(r);
	}
}

/* Batches of every size 1..11 over many laps of an 8-slot ring, mixed with single pushes and
 * pops: each message arrives once, in order, with its length, and the shared counters count
 * every message (a single producer/consumer publishes its position once per batch). */
ABD_TEST(ring, batch_forms_over_many_laps)
{
	for (size_t mi = 0; mi < sizeof(modes) / sizeof(modes[0]); mi++) {
		struct abd_ring *r;
		cr_assert_eq(abd_ring_new(8, 16, modes[mi], NULL, &r), 0);
		uint64_t next_in = 0, next_out = 0, vals[11], out[11][2];
		const void *msgs[11];
		size_t lens[11], olens[11];
		for (unsigned round = 0; round < 400; round++) {
			unsigned b = 1 + round * 7 % 11;
			for (unsigned j = 0; j < b; j++) {
				vals[j] = next_in + j;
				msgs[j] = &vals[j];
				lens[j] = 1 + (size_t)((next_in + j) % 8);
			}
			int n = round % 5 == 4 ? (abd_ring_try_push(r, &vals[0], lens[0]) == 0)
			                       : abd_ring_try_push_batch(r, msgs, lens, b);
			cr_assert_geq(n, 0, "round %u: push %d", round, n);
			next_in += (unsigned)n;
			unsigned want = 1 + round * 5 % 11;
			int m;
			if (round % 7 == 3) {
				m = abd_ring_try_pop(r, out[0], sizeof(out[0]));
				if (m >= 0) {
					olens[0] = (size_t)m;
					m = 1;
				} else {
					cr_assert_eq(m, -EAGAIN);
					m = 0;
				}
			} else {
				m = abd_ring_try_pop_batch(r, out, sizeof(out[0]), olens, want);
			}
			cr_assert_geq(m, 0, "round %u: pop %d", round, m);
			for (int k = 0; k < m; k++, next_out++) {
				size_t len = 1 + (size_t)(next_out % 8);
				cr_assert_eq(olens[k], len, "mode %u message %llu", modes[mi],
				             (unsigned long long)next_out);
				cr_assert_eq(memcmp(out[k], &next_out, len), 0, "mode %u message %llu",
				             modes[mi], (unsigned long long)next_out);
			}
		}
		cr_assert_gt(next_out, 1000, "the rounds went round the ring many times");
		uint64_t rest[11][2];
		int m = abd_ring_try_pop_batch(r, rest, sizeof(rest[0]), olens, 11);
		cr_assert_eq((uint64_t)m, next_in - next_out, "what is left: %d", m);
		struct abd_ring_stats st;
		cr_assert_eq(abd_ring_stats(r, &st), 0);
		cr_assert_eq(st.pushed, next_in);
		cr_assert_eq(st.popped, next_in);
		abd_ring_free(r);
	}
}

struct point {
	int32_t x, y;
	double w;
};
ABD_RING_TYPED(points, struct point)

ABD_TEST(ring, typed_wrappers)
{
	struct abd_ring *r;
	cr_assert_eq(abd_ring_new(4, sizeof(struct point), 0, NULL, &r), 0);
	cr_assert_eq(points_check_slot(r), 0);
	struct point a = { 1, 2, 3.5 }, b;
	cr_assert_eq(points_try_pop(r, &b), -EAGAIN);
	cr_assert_eq(points_try_push(r, &a), 0);
	cr_assert_eq(points_push(r, &a, -1), 0);
	cr_assert_eq(points_try_pop(r, &b), 0);
	cr_assert_eq(b.x, 1);
	cr_assert_eq(points_pop(r, &b, -1), 0);
	cr_assert(b.w == 3.5);
	cr_assert_eq(abd_ring_try_push(r, "abc", 3), 0);
	cr_assert_eq(points_try_pop(r, &b), -EBADMSG, "a message of the wrong size");
	abd_ring_free(r);
	cr_assert_eq(abd_ring_new(4, sizeof(struct point), ABD_RING_SINGLE_PRODUCER | ABD_RING_SINGLE_CONSUMER,
	                          NULL, &r), 0);
	struct abd_ring_stream ps = abd_ring_stream_open(r, ABD_RING_PRODUCER);
	struct abd_ring_stream cs = abd_ring_stream_open(r, ABD_RING_CONSUMER);
	cr_assert_eq(ps.ret, 0);
	cr_assert_eq(cs.ret, 0);
	cr_assert_eq(points_stream_pop(&cs, &b), -EAGAIN);
	a.y = 7;
	cr_assert_eq(points_stream_push(&ps, &a), 0);
	cr_assert_eq(points_stream_pop(&cs, &b), 0);
	cr_assert(b.y == 7 && b.w == 3.5);
	cr_assert_eq(abd_ring_stream_push(&ps, "abc", 3), 0);
	cr_assert_eq(points_stream_pop(&cs, &b), -EBADMSG, "a message of the wrong size");
	cr_assert_eq(abd_ring_stream_close(&ps), 0);
	cr_assert_eq(abd_ring_stream_close(&cs), 0);
	abd_ring_free(r);
	cr_assert_eq(abd_ring_new(4, 4, 0, NULL, &r), 0);
	cr_assert_eq(points_check_slot(r), -EMSGSIZE);
	abd_ring_free(r);
}

ABD_TEST(ring, attach_borrows_fds_and_checks_nonce_and_roles)
{
	uint8_t nonce[16];
	for (int i = 0; i < 16; i++)
		nonce[i] = (uint8_t)(i * 7 + 1);
	struct abd_ring *r, *a, *b;
	cr_assert_eq(abd_ring_new(8, 32, ABD_RING_PRODUCER, nonce, &r), 0);
	uint8_t got[16];
	cr_assert_eq(abd_ring_nonce(r, got), 0);
	cr_assert_eq(memcmp(got, nonce, 16), 0);
	int mfd = dup(abd_ring_fd(r));
	int efd = abd_ring_wait_fd(r) >= 0 ? dup(abd_ring_wait_fd(r)) : -1;
	uint8_t wrong[16] = { 0 };
	cr_assert_eq(abd_ring_attach(mfd, efd, wrong, 0, &a), -ESTALE);
	cr_assert_eq(abd_ring_attach(mfd, efd, nonce, ABD_RING_CONSUMER, &a), 0);
	close(mfd);
	if (efd >= 0)
		close(efd);
	cr_assert_eq(abd_ring_try_push(a, "x", 1), -EPERM, "consumer-only handle");
	char buf[32];
	cr_assert_eq(abd_ring_try_pop(r, buf, sizeof(buf)), -EPERM, "producer-only handle");
	cr_assert_eq(abd_ring_try_push(r, "over", 4), 0);
	cr_assert_eq(abd_ring_try_pop(a, buf, sizeof(buf)), 4);
	cr_assert_eq(memcmp(buf, "over", 4), 0);
	cr_assert_eq(abd_ring_attach(abd_ring_fd(r), -1, NULL, 0, &b), 0, "without an eventfd");
	cr_assert_eq(abd_ring_wait_fd(b), -ENODEV);
	cr_assert_neq(abd_ring_fd(b), abd_ring_fd(r));
	abd_ring_free(b);
	abd_ring_free(a);
	abd_ring_free(r);
}

ABD_TEST(ring, single_roles_are_exclusive_but_replaceable)
{
	struct abd_ring *r, *p2, *c1, *c2;
	cr_assert_eq(abd_ring_new(8, 8, ABD_RING_SINGLE_PRODUCER | ABD_RING_SINGLE_CONSUMER | ABD_RING_PRODUCER,
	                          NULL, &r), 0);
	cr_assert_eq(abd_ring_attach(abd_ring_fd(r), -1, NULL, ABD_RING_PRODUCER, &p2), -EBUSY);
	cr_assert_eq(abd_ring_attach(abd_ring_fd(r), -1, NULL, ABD_RING_CONSUMER, &c1), 0);
	cr_assert_eq(abd_ring_attach(abd_ring_fd(r), -1, NULL, ABD_RING_CONSUMER, &c2), -EBUSY);
	cr_assert_eq(abd_ring_try_push(r, "1", 1), 0);
	cr_assert_eq(abd_ring_try_push(r, "2", 1), 0);
	char b[8];
	cr_assert_eq(abd_ring_try_pop(c1, b, 8), 1);
	cr_assert_eq(b[0], '1');
	abd_ring_free(c1);
	cr_assert_eq(abd_ring_attach(abd_ring_fd(r), -1, NULL, ABD_RING_CONSUMER, &c2), 0);
	cr_assert_eq(abd_ring_try_pop(c2, b, 8), 1, "a new single consumer continues");
	cr_assert_eq(b[0], '2');
	abd_ring_free(r);
	cr_assert_eq(abd_ring_attach(abd_ring_fd(c2), -1, NULL, ABD_RING_PRODUCER, &p2), 0);
	cr_assert_eq(abd_ring_try_push(p2, "3", 1), 0);
	cr_assert_eq(abd_ring_try_pop(c2, b, 8), 1);
	cr_assert_eq(b[0], '3');
	abd_ring_free(p2);
	abd_ring_free(c2);
}

ABD_TEST(ring, participant_table_full_is_eusers)
{
	struct abd_ring *r;
	cr_assert_eq(abd_ring_new(2, 8, 0, NULL, &r), 0);
	static struct abd_ring *hs[ABD_RING_MAX_PARTICIPANTS];
	for (int i = 0; i < ABD_RING_MAX_PARTICIPANTS - 1; i++)
		cr_assert_eq(abd_ring_attach(abd_ring_fd(r), -1, NULL, 0, &hs[i]), 0, "handle %d", i);
	struct abd_ring *x;
	cr_assert_eq(abd_ring_attach(abd_ring_fd(r), -1, NULL, 0, &x), -EUSERS);
	abd_ring_free(hs[5]);
	cr_assert_eq(abd_ring_attach(abd_ring_fd(r), -1, NULL, 0, &hs[5]), 0, "a freed lease is reused");
	for (int i = 0; i < ABD_RING_MAX_PARTICIPANTS - 1; i++)
		abd_ring_free(hs[i]);
	abd_ring_free(r);
}

/* Pin the calling process to the CPU it runs on (so that a waker and a sleeper of this process
 * share it); returns the previous mask in *old. */
static void pin_here(cpu_set_t *old)
{
	cr_assert_eq(sched_getaffinity(0, sizeof(*old), old), 0);
	int cpu = sched_getcpu();
	cr_assert_geq(cpu, 0);
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	cr_assert_eq(sched_setaffinity(0, sizeof(one), &one), 0);
}

/* A reactor's view: announce, sleep on the handle's own word (as a futex source would), wake:
 * the waker adds one to the word of the sleeper it picked. */
ABD_TEST(ring, reactor_wait_on_own_word)
{
	cpu_set_t old;
	pin_here(&old);
	struct abd_ring *r;
	cr_assert_eq(abd_ring_new(4, 8, 0, NULL, &r), 0);
	cr_assert_eq(abd_ring_wait_fd(r), -ENODEV, "no shared eventfd");
	uint32_t v;
	int64_t tmo;
	cr_assert_eq(abd_ring_wait_prepare(r, ABD_RING_WAIT_DATA, &v, &tmo), 0, "empty: sleep");
	cr_assert_eq(tmo, -1);
	cr_assert_eq(v, *abd_ring_futex(r, ABD_RING_WAIT_DATA));
	cr_assert_eq(abd_ring_wait_prepare(r, ABD_RING_WAIT_DATA, &v, &tmo), -EALREADY);
	cr_assert_eq(*abd_ring_futex(r, ABD_RING_WAIT_DATA), v, "nothing yet");
	cr_assert_eq(abd_ring_try_push(r, "m", 1), 0);
	cr_assert_eq(*abd_ring_futex(r, ABD_RING_WAIT_DATA), v + 1, "the push woke the sleeper's word");
	cr_assert_eq(abd_ring_wait_finish(r, ABD_RING_WAIT_DATA), 0);
	/* the wake came from our own CPU (the same process): the next prepare yields and looks
	 * before arming, finds the message and leaves the word unarmed */
	cr_assert_eq(abd_ring_wait_prepare(r, ABD_RING_WAIT_DATA, &v, &tmo), 1, "data ready: no sleep");
	char b[8];
	cr_assert_eq(abd_ring_try_pop(r, b, 8), 1);
	cr_assert_eq(abd_ring_try_push(r, "n", 1), 0);
	struct abd_ring_stats st;
	abd_ring_stats(r, &st);
	/* one wake for the sleeper, no spare one */
	cr_assert_eq(st.wakes, 1);
	/* the hint is used once: this prepare arms, finds data, withdraws from the sleeping map
	 * and leaves the word armed: the next publication finds nobody to wake and disarms it,
	 * with no syscall */
	cr_assert_eq(abd_ring_wait_prepare(r, ABD_RING_WAIT_DATA, &v, &tmo), 1, "data ready: no sleep");
	uint32_t before = *abd_ring_futex(r, ABD_RING_WAIT_DATA);
	cr_assert_eq(abd_ring_try_pop(r, b, 8), 1);
	cr_assert_eq(abd_ring_try_push(r, "o", 1), 0);
	abd_ring_stats(r, &st);
	cr_assert_eq(st.wakes, 1, "no spare wake");
	cr_assert_eq(*abd_ring_futex(r, ABD_RING_WAIT_DATA), before, "our word untouched");
	cr_assert_eq(abd_ring_wait_finish(r, ABD_RING_WAIT_DATA), 0);
	/* producers waiting for space */
	for (int i = 0; i < 3; i++)
		cr_assert_eq(abd_ring_try_push(r, "f", 1), 0);
	cr_assert_eq(abd_ring_wait_prepare(r, ABD_RING_WAIT_SPACE, &v, &tmo), 0, "full: sleep");
	cr_assert_eq(v, *abd_ring_futex(r, ABD_RING_WAIT_SPACE));
	cr_assert_eq(abd_ring_try_pop(r, b, 8), 1);
	cr_assert_eq(*abd_ring_futex(r, ABD_RING_WAIT_SPACE), v + 1, "the pop woke the space sleeper");
	cr_assert_eq(abd_ring_wait_finish(r, ABD_RING_WAIT_SPACE), 0);
	abd_ring_free(r);
	sched_setaffinity(0, sizeof(old), &old);
}

/* A consumer woken from its own CPU that pushed (blocking form, any ring) before its next wait
 * is answering its waker, not waiting for more from it: no yield hint, the next prepare arms at
 * once (ring-wait.c, thread_pushes). */
ABD_TEST(ring, a_consumer_that_answered_takes_no_yield_hint)
{
	cpu_set_t old;
	pin_here(&old);
	struct abd_ring *r, *reply;
	cr_assert_eq(abd_ring_new(4, 8, 0, NULL, &r), 0);
	cr_assert_eq(abd_ring_new(4, 8, 0, NULL, &reply), 0);
	uint32_t v;
	int64_t tmo;
	cr_assert_eq(abd_ring_wait_prepare(r, ABD_RING_WAIT_DATA, &v, &tmo), 0, "empty: sleep");
	cr_assert_eq(abd_ring_try_push(r, "m", 1), 0, "a wake from our CPU");
	cr_assert_eq(abd_ring_wait_finish(r, ABD_RING_WAIT_DATA), 0);
	char b[8];
	cr_assert_eq(abd_ring_try_pop(r, b, sizeof(b)), 1);
	cr_assert_eq(abd_ring_push(reply, "a", 1, 0), 0, "the answer");
	cr_assert_eq(abd_ring_try_push(r, "n", 1), 0);
	cr_assert_eq(abd_ring_wait_prepare(r, ABD_RING_WAIT_DATA, &v, &tmo), 1, "data: no sleep");
	cr_assert_eq(*abd_ring_futex(r, ABD_RING_WAIT_DATA) & 1, 1, "armed without looking first");
	abd_ring_free(reply);
	abd_ring_free(r);
	sched_setaffinity(0, sizeof(old), &old);
}

/* A single producer streaming without sleepers drops the fence before its sleeper check
 * (docs/ring.md, section 5): a consumer arming meanwhile bounds its sleep by the grace, until
 * the word has stayed armed that long or the producer, having found a sleeper, is fenced again.
 * A multi-producer ring never bounds it (reactor_wait_on_eventfd). */
ABD_TEST(ring, unfenced_single_producer_bounds_a_sleep_by_the_grace)
{
	struct abd_ring *r;
	cr_assert_eq(abd_ring_new(4, 8, ABD_RING_SINGLE_PRODUCER | ABD_RING_SINGLE_CONSUMER, NULL, &r), 0);
	uint32_t v, v2;
	int64_t tmo;
	char b[8];
	cr_assert_eq(abd_ring_wait_prepare(r, ABD_RING_WAIT_DATA, &v, &tmo), 0, "empty: sleep");
	cr_assert_eq(tmo, -1, "a new producer is fenced: the re-check is exact");
	cr_assert_eq(abd_ring_wait_finish(r, ABD_RING_WAIT_DATA), 0);
	for (int i = 0; i < 200; i++) { /* a stream with nobody asleep */
		cr_assert_eq(abd_ring_try_push(r, "s", 1), 0);
		cr_assert_eq(abd_ring_try_pop(r, b, 8), 1);
	}
	cr_assert_eq(abd_ring_wait_prepare(r, ABD_RING_WAIT_DATA, &v, &tmo), 0);
	cr_assert(tmo > 0 && tmo <= 1000000, "unfenced producer: bounded (%lld)", (long long)tmo);
	cr_assert_eq(abd_ring_wait_finish(r, ABD_RING_WAIT_DATA), 0);
	usleep(2000); /* longer than the grace */
	cr_assert_eq(abd_ring_wait_prepare(r, ABD_RING_WAIT_DATA, &v2, &tmo), 0);
	cr_assert_eq(v2, v, "nobody woke: the word stayed armed");
	cr_assert_eq(tmo, -1, "armed, unchanged, for longer than the grace: exact");
	cr_assert_eq(abd_ring_try_push(r, "m", 1), 0);
	cr_assert_neq(*abd_ring_futex(r, ABD_RING_WAIT_DATA), v, "the push disarmed and bumped the word");
	cr_assert_eq(abd_ring_wait_finish(r, ABD_RING_WAIT_DATA), 0);
	cr_assert_eq(abd_ring_try_pop(r, b, 8), 1);
	cr_assert_eq(abd_ring_wait_prepare(r, ABD_RING_WAIT_DATA, &v, &tmo), 0);
	cr_assert_eq(tmo, -1, "the producer found a sleeper: fenced again, exact");
	cr_assert_eq(abd_ring_wait_finish(r, ABD_RING_WAIT_DATA), 0);
	/* the same for a producer waiting for space behind a streaming single consumer */
	for (int i = 0; i < 4; i++)
		cr_assert_eq(abd_ring_try_push(r, "f", 1), 0);
	cr_assert_eq(abd_ring_wait_prepare(r, ABD_RING_WAIT_SPACE, &v, &tmo), 0, "full: sleep");
	cr_assert(tmo > 0 && tmo <= 1000000, "unfenced consumer: bounded (%lld)", (long long)tmo);
	cr_assert_eq(abd_ring_wait_finish(r, ABD_RING_WAIT_SPACE), 0);
	abd_ring_free(r);
}

/* Threads, one handle each: what TSan checks. Exactly once, FIFO per producer. */
#define T_PROD 2
#define T_CONS 2
struct tctx {
	int fd;
	int id;
	unsigned n;
	unsigned mode;
	unsigned *seen; /* [T_PROD][n] */
	bool fifo_ok;
};

static void *t_producer(void *arg)
{
	struct tctx *c = arg;
	struct abd_ring *r;
	if (abd_ring_attach(c->fd, -1, NULL, ABD_RING_PRODUCER, &r) < 0)
		return (void *)1;
	for (unsigned i = 0; i < c->n; i++) {
		uint64_t m = (uint64_t)c->id << 32 | i;
		if (abd_ring_push(r, &m, sizeof(m), -1) < 0)
			return (void *)2;
	}
	abd_ring_free(r);
	return NULL;
}

static void *t_consumer(void *arg)
{
	struct tctx *c = arg;
	struct abd_ring *r;
	if (abd_ring_attach(c->fd, -1, NULL, ABD_RING_CONSUMER, &r) < 0)
		return (void *)1;
	int64_t last[T_PROD];
	for (int i = 0; i < T_PROD; i++)
		last[i] = -1;
	c->fifo_ok = true;
	for (;;) {
		uint64_t m;
		int n = abd_ring_pop(r, &m, sizeof(m), -1);
		if (n != 8)
			return (void *)3;
		if (m == UINT64_MAX)
			break;
		unsigned p = (unsigned)(m >> 32), i = (unsigned)m;
		if (p >= T_PROD || i >= c->n)
			return (void *)4;
		if ((int64_t)i <= last[p])
			c->fifo_ok = false;
		last[p] = i;
		__atomic_fetch_add(&c->seen[p * c->n + i], 1, __ATOMIC_RELAXED);
	}
	abd_ring_free(r);
	return NULL;
}

ABD_TEST(ring, threads_exactly_once_fifo_per_producer)
{
	unsigned n = (unsigned)abd_test_scaled(200000, 5000);
	struct abd_ring *r;
	cr_assert_eq(abd_ring_new(64, 8, 0, NULL, &r), 0);
	unsigned *seen = calloc((size_t)T_PROD * n, sizeof(unsigned));
	pthread_t th[T_PROD + T_CONS];
	struct tctx ctx[T_PROD + T_CONS];
	for (int i = 0; i < T_PROD + T_CONS; i++) {
		ctx[i] = (struct tctx){ abd_ring_fd(r), i, n, 0, seen, true };
		cr_assert_eq(pthread_create(&th[i], NULL, i < T_PROD ? t_producer : t_consumer, &ctx[i]), 0);
	}
	for (int i = 0; i < T_PROD; i++) {
		void *ret;
		pthread_join(th[i], &ret);
		cr_assert_null(ret, "producer %d failed", i);
	}
	uint64_t stop = UINT64_MAX;
	for (int i = 0; i < T_CONS; i++)
		cr_assert_eq(abd_ring_push(r, &stop, 8, -1), 0);
	for (int i = T_PROD; i < T_PROD + T_CONS; i++) {
		void *ret;
		pthread_join(th[i], &ret);
		cr_assert_null(ret, "consumer %d failed", i);
		cr_assert(ctx[i].fifo_ok, "consumer %d saw a producer out of order", i);
	}
	for (unsigned i = 0; i < T_PROD * n; i++)
		cr_assert_eq(seen[i], 1, "message %u seen %u times", i, seen[i]);
	free(seen);
	abd_ring_free(r);
}
