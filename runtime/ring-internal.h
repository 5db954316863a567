/* SPDX-License-Identifier: MIT */
/* The ring's shared-memory layout (docs/ring.md is the specification) and the private handle.
 * Internal to the ring's files; they use each other in one direction: ring-lease.c <- ring.c
 * <- ring-wait.c and ring-recover.c. */
#ifndef ABD_RUNTIME_RING_INTERNAL_H
#define ABD_RUNTIME_RING_INTERNAL_H

#include <abd/ring.h>
#include <stdbool.h>
#include <stdint.h>

#include "internal.h"

#define ABD__RING_MAGIC UINT64_C(0x31474e4952444241) /* "ABDRING1", little-endian */
#define ABD__RING_VERSION 2u
#define ABD__RING_HEADER_SIZE 512u
#define ABD__RING_LINE 64u
#define ABD__RING_LEASE_SIZE 64u
#define ABD__RING_SLOT_HDR 16u
#define ABD__RING_MODES (ABD_RING_SINGLE_PRODUCER | ABD_RING_SINGLE_CONSUMER)
#define ABD__RING_ROLES (ABD_RING_PRODUCER | ABD_RING_CONSUMER)

/* Bytes of the memfd that carry OFD locks (advisory; they need not lie inside the file). */
#define ABD__RING_LOCK_PRODUCER 0 /* held by the single producer of a SINGLE_PRODUCER ring */
#define ABD__RING_LOCK_CONSUMER 1 /* held by the single consumer of a SINGLE_CONSUMER ring */
#define ABD__RING_LOCK_LEASE0 64  /* lease i: byte 64 + i */

/* The header: 8 cache lines. Line 0-1 are written once by the creator; every other line has
 * one job so that producers and consumers do not share a line they write. */
struct abd__ring_hdr {
	/* line 0-1: immutable geometry */
	uint64_t magic;
	uint32_t version;
	uint32_t header_size;
	uint8_t nonce[ABD_RING_NONCE_SIZE];
	uint32_t capacity;
	uint32_t slot_size;
	uint32_t slot_stride;
	uint32_t modes;
	uint32_t lease_count;
	uint32_t lease_offset;
	uint64_t slots_offset;
	uint64_t total_size;
	uint64_t checksum; /* FNV-1a 64 of bytes 0..71 */
	uint8_t pad0[128 - 80];
	/* line 2: producers' position; a single producer's publication mode (ring-wait.c) */
	uint64_t tail;
	uint32_t tail_unfenced;
	uint8_t pad1[52];
	/* line 3: consumers' position; a single consumer's publication mode */
	uint64_t head;
	uint32_t head_unfenced;
	uint8_t pad2[52];
	/* line 4: consumers waiting for data (ring-wait.c, docs/ring.md section 5). futex: bit 0
	 * "armed" (a sleeper may be announced: publishers owe a wake) + a sequence in bits 1..31,
	 * bumped at every disarm; arms: bumped at every arming, so that a waker's disarm (a 64-bit
	 * CAS of futex and arms together) fails when a sleeper armed since it looked; waker_cpu: 1
	 * + the CPU the last waker ran on, 0 unknown (a hint: yield_hint); sleeping: bit i set
	 * while lease i is announced (a waker claims the bit, then wakes lease i's own word). */
	union {
		struct {
			uint32_t data_futex;
			uint32_t data_arms;
		};
		uint64_t data_pair; /* both, for the disarm CAS */
	};
	uint32_t data_waker_cpu;
	uint32_t pad3;
	uint64_t data_sleeping[ABD_RING_MAX_PARTICIPANTS / 64];
	uint8_t pad3b[32];
	/* line 5: the same for producers waiting for space */
	union {
		struct {
			uint32_t space_futex;
			uint32_t space_arms;
		};
		uint64_t space_pair; /* both, for the disarm CAS */
	};
	uint32_t space_waker_cpu;
	uint32_t pad4;
	uint64_t space_sleeping[ABD_RING_MAX_PARTICIPANTS / 64];
	uint8_t pad4b[32];
	/* line 6: statistics */
	uint64_t pushed;
	uint64_t popped;
	uint64_t recovered;
	uint64_t wakes;
	uint64_t waits;
	uint8_t pad5[24];
	/* line 7: written at most once per ring. closed: 0 open; the service layer (service.c)
	 * stores 1 when the publisher withdrew, 2 when it died. */
	uint32_t closed;
	uint8_t pad6[60];
};
_Static_assert(sizeof(struct abd__ring_hdr) == ABD__RING_HEADER_SIZE, "header is 8 lines");
_Static_assert(offsetof(struct abd__ring_hdr, tail) == 128, "tail on line 2");
_Static_assert(offsetof(struct abd__ring_hdr, data_futex) == 256, "data eventcount on line 4");
_Static_assert(offsetof(struct abd__ring_hdr, data_arms) == 260, "arming count beside the word");
_Static_assert(offsetof(struct abd__ring_hdr, data_waker_cpu) == 264, "data waker cpu on line 4");
_Static_assert(offsetof(struct abd__ring_hdr, data_sleeping) == 272, "data sleepers on line 4");
_Static_assert(offsetof(struct abd__ring_hdr, space_futex) == 320, "space eventcount on line 5");
_Static_assert(offsetof(struct abd__ring_hdr, space_sleeping) == 336, "space sleepers on line 5");
_Static_assert(offsetof(struct abd__ring_hdr, closed) == 448, "closed word on line 7");

enum { ABD__LEASE_FREE = 0, ABD__LEASE_HELD = 1 };
struct abd__ring_lease {
	uint32_t state;    /* ABD__LEASE_* */
	uint32_t pid;      /* informational: the holder's pid in its own namespace */
	uint32_t asleep;   /* a request-response client's "wake me" (rpc.c); 0 otherwise */
	uint32_t gen;      /* bumped at every acquisition */
	uint32_t roles;    /* informational: the holder's ABD_RING_PRODUCER/CONSUMER bits */
	uint32_t pad0;
	uint64_t pidns;    /* hint: the inode of the holder's PID namespace (0 unknown) */
	/* the holder's own wake words, [ABD_RING_WAIT_DATA] and [ABD_RING_WAIT_SPACE]: it sleeps
	 * on them; a waker that claimed its sleeping bit adds 1 and FUTEX_WAKEs it */
	uint32_t wake[2];
	uint8_t pad[24];
};
_Static_assert(sizeof(struct abd__ring_lease) == ABD__RING_LEASE_SIZE, "lease is one line");
_Static_assert(offsetof(struct abd__ring_lease, pidns) == 24, "pidns at byte 24 of a lease");
_Static_assert(offsetof(struct abd__ring_lease, wake) == 32, "wake words at byte 32 of a lease");

/* A slot: control word, length, payload. ctl = seq (32) | state (4) << 32 | lease (16) << 48. */
struct abd__ring_slot {
	uint64_t ctl;
	uint32_t len;
	uint32_t pad;
	unsigned char data[];
};

enum {
	ABD__SLOT_FREE = 0,    /* seq: the position a producer may claim it for */
	ABD__SLOT_WRITING = 1, /* claimed by producer `lease` for position seq */
	ABD__SLOT_FULL = 2,    /* committed message for position seq */
	ABD__SLOT_READING = 3, /* claimed by consumer `lease` */
	ABD__SLOT_TOMB = 4,    /* a claim given up or recovered: consumers skip it */
};

static inline uint64_t abd__ctl(uint32_t seq, unsigned state, unsigned lease)
{
	return (uint64_t)seq | (uint64_t)(state & 15) << 32 | (uint64_t)(lease & 0xffff) << 48;
}
static inline uint32_t abd__ctl_seq(uint64_t c) { return (uint32_t)c; }
static inline unsigned abd__ctl_state(uint64_t c) { return (unsigned)(c >> 32) & 15; }
static inline unsigned abd__ctl_lease(uint64_t c) { return (unsigned)(c >> 48); }

#define abd__load(p, o) __atomic_load_n((p), __ATOMIC_##o)
#define abd__store(p, v, o) __atomic_store_n((p), (v), __ATOMIC_##o)
#define abd__cas(p, expp, v, o)                                                        \
	__atomic_compare_exchange_n((p), (expp), (v), false, __ATOMIC_##o, __ATOMIC_ACQUIRE)
#define abd__add(p, v, o) __atomic_fetch_add((p), (v), __ATOMIC_##o)

#define ABD__STATS_FLUSH 256u

/* The fast paths keep their common case in one function; rare cases stay out of line. */
#define ABD__INLINE inline __attribute__((always_inline))
#define ABD__NOINLINE __attribute__((noinline))

/* How long a publication may stay invisible to other CPUs after the publisher's sleeper check
 * (single producer/consumer fast paths in unfenced mode: release store, then a load; see
 * ring-wait.c). A store buffer drains in nanoseconds; this is the bound a waiter keeps on a
 * sleep that such a publication might owe a wake. */
#define ABD__RING_GRACE_NS 50000
/* Publications in a row that found no sleeper before a single publisher drops the fence. */
#define ABD__RING_CALM 64u

/* The realtime sanitizer reports every syscall made inside a nonblocking function; the wake a
 * fast path owes a sleeper is a syscall that cannot sleep, and is let through explicitly. */
#if defined(__has_feature)
#if __has_feature(realtime_sanitizer)
#include <sanitizer/rtsan_interface.h>
#define ABD__RTSAN_EXEMPT_BEGIN_ __rtsan_disable()
#define ABD__RTSAN_EXEMPT_END_ __rtsan_enable()
#endif
#endif
#ifndef ABD__RTSAN_EXEMPT_BEGIN_
#define ABD__RTSAN_EXEMPT_BEGIN_ ((void)0)
#define ABD__RTSAN_EXEMPT_END_ ((void)0)
#endif
/* ... and from clang's static check of the same promise (-Wfunction-effects). */
#define ABD__RTSAN_EXEMPT_BEGIN                                                        \
	_Pragma("clang diagnostic push")                                               \
	_Pragma("clang diagnostic ignored \"-Wfunction-effects\"") ABD__RTSAN_EXEMPT_BEGIN_
#define ABD__RTSAN_EXEMPT_END ABD__RTSAN_EXEMPT_END_; _Pragma("clang diagnostic pop")

static inline void abd__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

struct abd_ring {
	unsigned char *base;
	size_t map_size;
	struct abd__ring_hdr *h;
	struct abd__ring_lease *leases;
	unsigned char *slots;
	/* private copies of the validated geometry: a peer rewriting the header later cannot
	 * move our bounds */
	uint32_t cap, mask, slot_size, stride, modes, lease_count;
	uint8_t nonce[ABD_RING_NONCE_SIZE];
	int shfd;   /* the memfd handed to peers */
	int lockfd; /* our own open file description: holds the lease and role locks */
	unsigned roles;
	unsigned lease;
	bool use_futex;
	/* single-producer / single-consumer state */
	uint64_t sp_tail, sc_head;
	uint64_t sp_head_cache; /* single producer and consumer: the head as last read */
	bool sp_reserved, sc_peeked;
	bool sp_fast; /* the cached head may stand in for reading the slot (see sp_claim) */
	/* multi-producer / multi-consumer: the last claim found the ring full / empty, so the
	 * next one reads the slot before its CAS (mp_claim, mc_claim) */
	bool mp_was_full, mc_was_empty;
	/* a single producer's / consumer's publication mode: without a fence after a run of
	 * publications that found no sleeper (ring.c, publish_mode) */
	bool unfenced[2]; /* [ABD_RING_WAIT_DATA]: as producer; [ABD_RING_WAIT_SPACE]: as consumer */
	uint32_t calm[2];
	/* The streaming cases of abd_ring_try_push / try_pop may take their short paths (ring.c,
	 * abd__ring_fast_update): every condition above that they depend on, folded into one flag
	 * each and recomputed where any of them changes. */
	bool fast_push, fast_pop;
	/* roles streamed through an open abd_ring_stream (ring.c): the handle's own forms for
	 * them say -EBUSY, the stream holds the position */
	unsigned streams;
	/* slots this handle holds (reserved or peeked), for abd_ring_free */
	uint64_t held;
	/* counters not yet added to the header: single-message general paths count in unflushed_*;
	 * the short paths and the batches count nothing, their messages are the positions moved
	 * since the last flush that a counting path did not move (sp_tail - sp_stat_base,
	 * sc_head - sc_stat_base: every other move of sp_tail / sc_head moves its base too) */
	uint32_t unflushed_pushed, unflushed_popped;
	uint64_t sp_stat_base, sc_stat_base;
	uint64_t own_wakes, own_waits;
	unsigned sleeping; /* announced wait kinds (bits as in the lease) */
	/* per wait kind: the futex value this handle last armed with and when (ring-wait.c) */
	uint32_t armed_value[2];
	uint64_t armed_at[2];
	uint32_t prep_value[2]; /* the value of the current (or last) announcement */
	bool yield_hint[2];     /* last woken by a waker on our CPU: yield once before sleeping */
	uint8_t yield_skip[2];  /* hints to ignore after a yield that found nothing */
	uint8_t yield_backoff[2]; /* the next skip, doubled at each fruitless yield in a row */
	unsigned long hint_pushes[2]; /* the thread's blocking pushes when the hint was taken */
	unsigned spin;     /* blocking forms: current spin budget before sleeping */
	/* last-resort takeover of a slot held by a live peer */
	int64_t stuck_ns;
	uint64_t stuck_pos, stuck_since;
	unsigned stuck_what;
	unsigned stuck_rounds; /* re-checks of the same claim: the next one waits 1 ms << this */
	/* The last re-check found a live participant's claim in the way (ring-wait.c, blocked_by):
	 * a pidfd of that participant, by the pid its lease names, so that the sleep ends when it
	 * exits. */
	bool stalled, stall_exited;
	unsigned stall_lease;
	uint32_t stall_gen, stall_pid;
	int stall_pidfd;
	/* Where the kernel can (IORING_OP_FUTEX_WAIT), a stalled sleep waits for our word (the
	 * claimer's commit wakes it) and the claimer's pidfd at once, through an io_uring of this
	 * handle made at its first such sleep (ring-wait.c, stall_uring_wait; freed with it). */
	void *stall_uring;
	pid_t stall_uring_tid; /* the thread that made it: its only submitter */
	bool stall_uring_off;  /* the kernel or its policy said no: never tried again */
	void (*stall_uring_free)(struct abd_ring *r); /* set with it: ring.c frees it through this */
};

static inline uint64_t abd__ring_checksum(const void *hdr)
{
	const unsigned char *p = hdr;
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	for (size_t i = 0; i < offsetof(struct abd__ring_hdr, checksum); i++)
		h = (h ^ p[i]) * UINT64_C(0x100000001b3);
	return h;
}

/* Single producer and single consumer: slots are never marked FREE after the first lap; the
 * head bounds the producer (docs/ring.md section 4). */
static inline bool abd__ring_spsc(const struct abd_ring *r)
{
	return (r->modes & ABD__RING_MODES) == ABD__RING_MODES;
}

static inline struct abd__ring_slot *abd__slot(const struct abd_ring *r, uint64_t pos)
{
	return (struct abd__ring_slot *)(r->slots + (size_t)(pos & r->mask) * r->stride);
}

/* ring-lease.c: the lease table, the bottom of the ring's files (ring.c, then ring-wait.c and
 * ring-recover.c, use it; it uses none of them). take_lease and reap_lease return the slots
 * a dead holder's cleanup recovered (>= 0) or -errno: the caller wakes the sleepers. */
int abd__ring_take_lease(struct abd_ring *r);
void abd__ring_drop_lease(struct abd_ring *r);
int abd__ring_lease_alive(struct abd_ring *r, unsigned lease);
int abd__ring_reap_lease(struct abd_ring *r, unsigned lease);
int abd__ring_lock(int fd, int64_t byte, bool lock);
unsigned abd__ring_sweep(struct abd_ring *r, unsigned lease);
uint64_t abd__ring_pidns(void);

/* ring.c */
void abd__ring_fast_update(struct abd_ring *r) ABD_NONBLOCKING;
void abd__ring_wake(struct abd_ring *r, enum abd_ring_wait_for what) ABD_NONBLOCKING;
void abd__ring_wake_all(struct abd_ring *r, enum abd_ring_wait_for what) ABD_NONBLOCKING;
unsigned abd__ring_sleepers(const struct abd_ring *r, enum abd_ring_wait_for what);
/* The futex word of a 64-bit (futex, arms) pair (little- or big-endian). */
static inline uint32_t abd__pair_word(uint64_t p)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return (uint32_t)p;
#else
	return (uint32_t)(p >> 32);
#endif
}
static inline uint64_t abd__pair(uint32_t word, uint32_t arms)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return (uint64_t)arms << 32 | word;
#else
	return (uint64_t)word << 32 | arms;
#endif
}
static inline uint32_t abd__pair_arms(uint64_t p)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return (uint32_t)(p >> 32);
#else
	return (uint32_t)p;
#endif
}
void abd__ring_flush_stats(struct abd_ring *r);

/* ring-wait.c */
uint64_t abd__ring_now_ns(void);
struct abd__ring_backoff {
	unsigned rounds;
	int64_t nap_ns;
	uint64_t since; /* when the round being counted began (abd__ring_now_ns), 0 before any */
};
int abd__ring_backoff(struct abd__ring_backoff *b, int64_t left_ns);

#endif
