/* SPDX-License-Identifier: MIT */
/* Lock-free MPMC ring in a sealed memfd, shared between processes.
 *
 * One process creates the ring (abd_ring_new) and hands its memfd to peers
 * (abd_ring_fd), who map it with abd_ring_attach.
 * Every committed message is delivered exactly once to exactly one consumer, in FIFO order
 * per producer. A participant that dies at any instruction cannot wedge the ring: each
 * participant holds a lease (an OFD lock on a byte of the memfd, dropped by the kernel at
 * death); a slot stuck in a dead participant's hands is recovered by the next waiter that
 * finds it. docs/ring.md specifies the shared-memory layout and the recovery rules.
 *
 * Fast paths (try forms, reserve/commit, peek/release) make no syscall and take no lock; the
 * one exception is the wake-up owed to a sleeping peer: a push makes one futex wake only when a
 * consumer announced that it sleeps, and wakes that one consumer on its own futex word; a pop
 * does the same for a producer waiting for space. Blocking forms wait on the handle's own word.
 *
 * A handle is for one thread at a time; several threads or processes use several handles
 * (attach again). A handle must not be used in a child after fork(): attach there anew. */
#ifndef ABD_RING_H
#define ABD_RING_H

#include <abd/common.h>

#include <errno.h>

ABD_BEGIN_DECLS

struct abd_ring;

/* Flags for abd_ring_new and abd_ring_attach. */
enum {
	ABD_RING_PRODUCER = 1u << 0, /* this handle pushes (default when no role is given: both) */
	ABD_RING_CONSUMER = 1u << 1, /* this handle pops */
	/* Ring modes, fixed at creation and stored in the header. A single-producer ring lets one
	 * producer handle at a time exist (a second one gets -EBUSY; a dead one is replaced at
	 * once) and pushes without compare-and-swap; likewise a single-consumer ring. */
	ABD_RING_SINGLE_PRODUCER = 1u << 2,
	ABD_RING_SINGLE_CONSUMER = 1u << 3,
};

/* What a waiter waits for (abd_ring_wait_prepare & co). */
enum abd_ring_wait_for {
	ABD_RING_WAIT_DATA = 0,  /* a consumer waiting for a message */
	ABD_RING_WAIT_SPACE = 1, /* a producer waiting for a free slot */
};

#define ABD_RING_NONCE_SIZE 16
#define ABD_RING_MAX_CAPACITY (1u << 24)
#define ABD_RING_MAX_SLOT_SIZE (1u << 24)
#define ABD_RING_MAX_PARTICIPANTS 128

/* Create a ring of `capacity` slots (a power of two, 2 .. ABD_RING_MAX_CAPACITY), each holding
 * a message of up to `slot_size` bytes (1 .. ABD_RING_MAX_SLOT_SIZE), in a new sealed memfd.
 * `nonce` is the
 * 128-bit instance nonce stored in the header (NULL: random). `flags`: roles and modes above.
 * On success *out owns the descriptor; returns 0.
 * Errors: -EINVAL (bad capacity, slot size, flags, out NULL), -ENOMEM, -EMFILE/-ENFILE,
 * or another -errno from memfd_create/ftruncate/fcntl/mmap. */
ABD_EXPORT ABD_NODISCARD int abd_ring_new(uint32_t capacity, uint32_t slot_size, unsigned flags,
                                          const uint8_t *nonce, struct abd_ring **out);

/* Map a ring created elsewhere. `memfd` and `wait_fd` are borrowed: attach duplicates what it
 * keeps, so the caller may close them afterwards. `wait_fd` is negative (none: what abd_ring_wait_fd
 * returns), or an eventfd, which is checked and not kept (rings have no shared eventfd: waiters sleep on their own futex word). `expected_nonce` (16 bytes, or NULL to skip the check) must
 * match the header's nonce. `flags`: ABD_RING_PRODUCER and/or ABD_RING_CONSUMER (0: both).
 * Every header field is validated before any other use of the memory. A memfd larger than
 * ABD_RING_ATTACH_DEFAULT_MAX is refused (-EFBIG): abd_ring_attach_opts sets other limits.
 * Errors: -EINVAL (bad arguments; memfd not a regular file; wait_fd not an eventfd),
 * -EPROTO (wrong magic or version, hostile or inconsistent geometry, size mismatch with the
 * file, seals missing), -ESTALE (nonce mismatch), -EBUSY (a single-producer/consumer role is
 * already held by a live peer), -EUSERS (the participant table is full of live peers),
 * -ENOENT (/proc is not mounted: the memfd cannot be reopened), or another -errno. */
ABD_EXPORT ABD_NODISCARD int abd_ring_attach(int memfd, int wait_fd, const uint8_t *expected_nonce,
                                             unsigned flags, struct abd_ring **out);

/* The most abd_ring_attach maps: the memfd's size is chosen by the peer that made it. */
#define ABD_RING_ATTACH_DEFAULT_MAX ((uint64_t)1 << 30)

/* What an attacher accepts (abd_ring_attach_opts). Zero-initialise; zero fields mean "any" or
 * the default. */
struct abd_ring_attach_opts {
	uint64_t max_size;  /* the largest memfd mapped, bytes (0: ABD_RING_ATTACH_DEFAULT_MAX) */
	uint32_t capacity;  /* the geometry the attacher was told to expect (0: any): a header */
	uint32_t slot_size; /* that says otherwise is refused with -EPROTO */
	uint64_t reserved[6]; /* zero */
};

/* abd_ring_attach with limits. The seals are checked before the size is read, the size against
 * opts->max_size before anything is mapped (a larger file: -EFBIG), and the mapping is never
 * pre-faulted (a sparse file costs only the pages the ring touches). opts NULL: the defaults.
 * Errors: as abd_ring_attach, plus -EFBIG, and -EINVAL for nonzero reserved fields. */
ABD_EXPORT ABD_NODISCARD int abd_ring_attach_opts(int memfd, int wait_fd,
                                                  const uint8_t *expected_nonce, unsigned flags,
                                                  const struct abd_ring_attach_opts *opts,
                                                  struct abd_ring **out);

/* Leave the ring: any slot this handle still holds is given up (a reserved slot becomes a
 * tombstone consumers skip, a peeked one is freed), the lease is released, everything unmapped
 * and closed. Accepts NULL. */
ABD_EXPORT void abd_ring_free(struct abd_ring *ring);
ABD_DEFINE_POINTER_CLEANUP(struct abd_ring, abd_ring_free)

/* The memfd to hand to peers (borrowed: owned by the ring, O_CLOEXEC). Never the descriptor
 * that holds this handle's lease. Returns the fd or -EINVAL. */
ABD_EXPORT int abd_ring_fd(const struct abd_ring *ring);
/* Kept for source compatibility: a ring has no shared eventfd (every waiter sleeps on its own
 * futex word, abd_ring_futex). Returns -ENODEV, or -EINVAL. */
ABD_EXPORT int abd_ring_wait_fd(const struct abd_ring *ring);
/* Copy the 128-bit instance nonce to out (16 bytes). Returns 0 or -EINVAL. */
ABD_EXPORT int abd_ring_nonce(const struct abd_ring *ring, uint8_t *out);
/* Geometry: capacity (slots) and the largest message. Return the value or -EINVAL. */
ABD_EXPORT int64_t abd_ring_capacity(const struct abd_ring *ring);
ABD_EXPORT int64_t abd_ring_slot_size(const struct abd_ring *ring);

/* ---- Copy forms ---------------------------------------------------------------------- */

/* Push one message of len bytes (0 .. slot size). Returns 0; -EAGAIN when the ring is full;
 * -EMSGSIZE when len exceeds the slot size; -EPERM without the producer role; -EINVAL. */
ABD_EXPORT ABD_NODISCARD int abd_ring_try_push(struct abd_ring *ring, const void *data, size_t len)
	ABD_NONBLOCKING;

/* Pop one message into buf (size bytes). Returns its length (>= 0); -EAGAIN when the ring is
 * empty; -EMSGSIZE when the message is longer than size (it stays in the ring); -EPERM
 * without the consumer role; -EBADMSG when a peer corrupted the slot (the slot is dropped);
 * -EOWNERDEAD when the slot was taken from this handle meanwhile (see abd_ring_release). */
ABD_EXPORT ABD_NODISCARD int abd_ring_try_pop(struct abd_ring *ring, void *buf, size_t size)
	ABD_NONBLOCKING;

/* Blocking forms: as the try forms, but wait up to timeout_ns (-1: forever; 0: do not wait,
 * only run the slow-path checks, which include recovering slots of dead peers). Returns
 * -ETIMEDOUT when the time ran out, -EINTR when a signal interrupted the wait. */
ABD_EXPORT ABD_NODISCARD int abd_ring_push(struct abd_ring *ring, const void *data, size_t len,
                                           int64_t timeout_ns);
ABD_EXPORT ABD_NODISCARD int abd_ring_pop(struct abd_ring *ring, void *buf, size_t size,
                                          int64_t timeout_ns);

/* ---- Batch forms --------------------------------------------------------------------- */

/* Push up to n messages (msgs[i], lens[i]); at most one wake for the whole batch. Returns the
 * number pushed (0 when full) or -EMSGSIZE/-EPERM/-EINVAL before pushing anything. */
ABD_EXPORT ABD_NODISCARD int abd_ring_try_push_batch(struct abd_ring *ring, const void *const *msgs,
                                                     const size_t *lens, unsigned n)
	ABD_NONBLOCKING;
/* Pop up to n messages into bufs, message i into bufs + i * stride (each at most stride bytes),
 * its length into lens[i]. Returns the number popped (0 when empty) or an error of
 * abd_ring_try_pop when the first pop fails otherwise. */
ABD_EXPORT ABD_NODISCARD int abd_ring_try_pop_batch(struct abd_ring *ring, void *bufs, size_t stride,
                                                    size_t *lens, unsigned n) ABD_NONBLOCKING;

/* ---- Zero-copy forms ----------------------------------------------------------------- */

/* Claim a slot and return a pointer to its payload (slot-size bytes, 16-byte aligned) in
 * *data; write the message there and commit it. Returns 0, -EAGAIN (full), -EPERM, -EINVAL,
 * -EBUSY (single-producer ring: the previous reservation is not committed yet). */
ABD_EXPORT ABD_NODISCARD int abd_ring_try_reserve(struct abd_ring *ring, void **data)
	ABD_NONBLOCKING;
/* Publish a reserved slot holding len bytes. Returns 0; -EMSGSIZE (len too big: the slot stays
 * reserved); -EOWNERDEAD when the slot was taken from this handle (a peer decided it was
 * stuck, see abd_ring_set_stuck_timeout): the message is not delivered; -EINVAL when data is
 * not a slot this handle reserved. */
ABD_EXPORT ABD_NODISCARD int abd_ring_commit(struct abd_ring *ring, void *data, size_t len)
	ABD_NONBLOCKING;
/* Give a reservation up: consumers skip the slot. Returns 0, -EOWNERDEAD or -EINVAL. */
ABD_EXPORT int abd_ring_abort(struct abd_ring *ring, void *data) ABD_NONBLOCKING;

/* Claim the oldest message and point *data at it (*len bytes) in place. Returns 0, -EAGAIN
 * (empty), -EPERM, -EBADMSG (corrupt slot, dropped), -EBUSY (single-consumer ring: the
 * previous message is not released yet). The message is this handle's until released. */
ABD_EXPORT ABD_NODISCARD int abd_ring_try_peek(struct abd_ring *ring, const void **data, size_t *len)
	ABD_NONBLOCKING;
/* Hand a peeked slot back to the producers. Returns 0; -EOWNERDEAD when the slot was taken
 * from this handle meanwhile (its bytes may have been overwritten while read: discard what was
 * read); -EINVAL when data is not a slot this handle peeked. */
ABD_EXPORT int abd_ring_release(struct abd_ring *ring, const void *data) ABD_NONBLOCKING;

/* ---- Waiting from a reactor ---------------------------------------------------------- */

/* Announce that this handle is about to sleep until `what` becomes possible. Returns 1 when
 * it is possible already (do not sleep; nothing to cancel), 0 when the caller must now sleep:
 * FUTEX_WAIT on the word abd_ring_futex() gives with the value stored in *futex_value (shared
 * futex: no FUTEX_PRIVATE_FLAG), e.g. through abd_reactor_add_futex. The word is this handle's
 * own: a waker that picks this handle adds one to it and wakes it; nobody else sleeps on it.
 * *timeout_ns receives the longest the caller should sleep (-1: no limit; a finite value while
 * a live peer holds a slot the waiter depends on, so that its death is noticed within a
 * millisecond, or while a single publisher's last publication may still be in flight).
 * After waking (or giving up), call abd_ring_wait_finish, then retry the operation.
 * Errors: -EINVAL, -EPERM (wrong role), -EALREADY (already announced). Slow path: may make
 * syscalls (lease checks). */
ABD_EXPORT ABD_NODISCARD int abd_ring_wait_prepare(struct abd_ring *ring, enum abd_ring_wait_for what,
                                                   uint32_t *futex_value, int64_t *timeout_ns);
/* Withdraw the announcement. Returns 0 or -EINVAL. */
ABD_EXPORT int abd_ring_wait_finish(struct abd_ring *ring, enum abd_ring_wait_for what);
/* This handle's 32-bit futex word for waiting for `what` (inside the shared mapping). */
ABD_EXPORT const uint32_t *abd_ring_futex(const struct abd_ring *ring, enum abd_ring_wait_for what);

/* ---- Recovery and statistics --------------------------------------------------------- */

/* Scan the participant table and the slots: release leases and slots of dead participants,
 * wake waiters when something was recovered. Returns the number of slots recovered.
 * Blocking forms and abd_ring_wait_prepare do this on their own for the slot they wait for;
 * a program that only spins on try forms calls this now and then. */
ABD_EXPORT int abd_ring_recover(struct abd_ring *ring);

/* How long a *live* peer may hold the slot a blocking waiter depends on before the waiter
 * takes it (the peer's commit/release then fails with -EOWNERDEAD; a single producer's commit
 * cannot tell, and a late zero-copy write can garble a later message in that slot). 0 (the
 * default): never; only a dead peer's slots are recovered. Per handle, for programs that
 * prefer progress to a slow peer's message. Returns 0 or -EINVAL. */
ABD_EXPORT int abd_ring_set_stuck_timeout(struct abd_ring *ring, int64_t timeout_ns);

struct abd_ring_stats {
	uint64_t pushed;    /* messages committed (all participants) */
	uint64_t popped;    /* messages released (all participants) */
	uint64_t recovered; /* slots recovered from dead or stuck participants */
	uint64_t wakes;     /* wake syscalls made (all participants) */
	uint64_t own_wakes; /* wake syscalls made by this handle */
	uint64_t own_waits; /* sleeps (futex waits) made by this handle */
	uint64_t waits;     /* sleeps made (all participants) */
	uint32_t data_sleepers;  /* participants announced as waiting for data (a peer may lie) */
	uint32_t space_sleepers; /* ... for space */
	uint64_t reserved[2];
};
/* Counters are flushed from each handle every few hundred operations and on its slow paths:
 * other participants' figures may lag. Returns 0 or -EINVAL. */
ABD_EXPORT int abd_ring_stats(struct abd_ring *ring, struct abd_ring_stats *out);

/* ---- Streams: the inline fast path of a single producer or consumer -------------------- */

/* A ring created with both ABD_RING_SINGLE_PRODUCER and ABD_RING_SINGLE_CONSUMER can be
 * streamed: open a stream on a handle for one role, then push (or pop) through it with the
 * inline functions below, which compile into the caller's loop and keep the position in a
 * local variable (a register) instead of in the handle. Same messages, same rules, same
 * shared-memory protocol as abd_ring_try_push / abd_ring_try_pop (docs/ring.md section 9):
 * FIFO, exactly once, the sleeper check after every publication (a wake only when a peer
 * sleeps), crash-proof as the try forms (a producer killed mid-stream leaves what it
 * published), statistics flushed every 256 messages. Anything but the common case (a sleeper
 * to wake, a fenced publication mode, a full or empty ring in an unusual state, a bad
 * argument) takes an out-of-line path through the try forms.
 *
 * Use:  struct abd_ring_stream s = abd_ring_stream_open(ring, ABD_RING_PRODUCER);
 *       if (s.ret < 0) ...;                       // -EINVAL, -EPERM, -EOPNOTSUPP, -EBUSY
 *       while (...) e = abd_ring_stream_push(&s, msg, len);   // 0, -EAGAIN, -EMSGSIZE, ...
 *       abd_ring_stream_close(&s);
 *
 * Keep the stream in a local variable and do not pass its address to functions that are not
 * inline: that is what lets the compiler keep it in registers. While a stream is open, the
 * handle's own forms for that role (push, batch, reserve; or pop, batch, peek) return
 * -EBUSY, and abd_ring_stats may lag by up to 255 messages. One stream per role and handle;
 * a stream is for the handle's thread; close it before abd_ring_free. */
#define ABD_RING_STREAM_ABI 1

struct abd_ring_stream {
	/* Private: filled and refreshed by the library, read by the inline functions. */
	struct abd_ring *ring;
	unsigned char *slots;       /* the first slot */
	uint64_t *shared_pos;       /* the header's tail (producer) or head (consumer) */
	const uint64_t *peer_pos;   /* the header's head (producer only) */
	const uint32_t *futex;      /* the futex word of the peers' sleepers */
	uint64_t pos;               /* our next position */
	uint64_t head;              /* producer: the head as last read */
	uint32_t mask, stride, slot_size; /* mask: capacity - 1 */
	unsigned role, fast;
	int ret;                    /* the result of the last out-of-line call */
};

/* Out-of-line parts of the functions below (not for direct use). They take and return the
 * stream's moving parts as values: a stream whose address reached a function that is not
 * inline would have to live in memory. step.pos: the position; step.word: the result (low 32
 * bits, an int) and whether the inline path may run (bit 32). */
struct abd__ring_step {
	uint64_t pos;
	uint64_t word;
};
ABD_EXPORT int abd__ring_stream_open(struct abd_ring *ring, unsigned role, unsigned abi,
                                     struct abd_ring_stream *out);
ABD_EXPORT struct abd__ring_step abd__ring_stream_push_slow(struct abd_ring *ring, uint64_t pos,
                                                            uint64_t head, const void *data,
                                                            size_t len) ABD_NONBLOCKING;
ABD_EXPORT struct abd__ring_step abd__ring_stream_pop_slow(struct abd_ring *ring, uint64_t pos,
                                                           void *buf, size_t size) ABD_NONBLOCKING;
ABD_EXPORT struct abd__ring_step abd__ring_stream_moved(struct abd_ring *ring, unsigned role,
                                                        uint64_t pos, uint64_t head)
	ABD_NONBLOCKING;
ABD_EXPORT int abd__ring_stream_close(struct abd_ring *ring, unsigned role, uint64_t pos,
                                      uint64_t head);

static inline int abd__ring_stream_took(struct abd_ring_stream *s, struct abd__ring_step st)
	ABD_NONBLOCKING
{
	s->pos = st.pos;
	s->head = st.pos - s->mask - 1; /* read the head again before the next claim */
	s->fast = (unsigned)(st.word >> 32) & 1;
	return (int)(uint32_t)st.word;
}

/* A message's copy in or out, for the library and the streams' inline functions. Up to 64
 * bytes without a call: two (possibly overlapping) moves of 32, 16, 8, 4 or 1 byte(s) that
 * read and write only [0, len) (a call to memcpy was a third of the cost of an 8-byte push and
 * pop); with a constant len the compiler keeps only the moves. Longer: memcpy. */
#define ABD_RING__COPY_INLINE 64
typedef unsigned char abd__ring_v16 __attribute__((vector_size(16)));
static inline __attribute__((always_inline)) void abd__ring_copy(void *__restrict dst,
                                                                 const void *__restrict src,
                                                                 size_t len) ABD_NONBLOCKING
{
	unsigned char *d = (unsigned char *)dst;
	const unsigned char *sp = (const unsigned char *)src;
	if (len <= 16) { /* the small messages first: fewest branches for them */
		if (len >= 8) {
			uint64_t a, b;
			__builtin_memcpy(&a, sp, 8);
			__builtin_memcpy(&b, sp + len - 8, 8);
			__builtin_memcpy(d, &a, 8);
			__builtin_memcpy(d + len - 8, &b, 8);
		} else if (len >= 4) {
			uint32_t a, b;
			__builtin_memcpy(&a, sp, 4);
			__builtin_memcpy(&b, sp + len - 4, 4);
			__builtin_memcpy(d, &a, 4);
			__builtin_memcpy(d + len - 4, &b, 4);
		} else if (len) {
			unsigned char a = sp[0], b = sp[len / 2], c = sp[len - 1];
			d[0] = a;
			d[len / 2] = b;
			d[len - 1] = c;
		}
	} else if (len <= 32) {
		abd__ring_v16 a, b;
		__builtin_memcpy(&a, sp, 16);
		__builtin_memcpy(&b, sp + len - 16, 16);
		__builtin_memcpy(d, &a, 16);
		__builtin_memcpy(d + len - 16, &b, 16);
	} else if (len <= ABD_RING__COPY_INLINE) {
		abd__ring_v16 a, b, c, e;
		__builtin_memcpy(&a, sp, 16);
		__builtin_memcpy(&b, sp + 16, 16);
		__builtin_memcpy(&c, sp + len - 32, 16);
		__builtin_memcpy(&e, sp + len - 16, 16);
		__builtin_memcpy(d, &a, 16);
		__builtin_memcpy(d + 16, &b, 16);
		__builtin_memcpy(d + len - 32, &c, 16);
		__builtin_memcpy(d + len - 16, &e, 16);
	} else {
		__builtin_memcpy(d, sp, len);
	}
}

/* Open a stream on `ring` for `role` (ABD_RING_PRODUCER or ABD_RING_CONSUMER). The result's
 * .ret is 0, or -EINVAL (bad argument), -EPERM (the handle lacks the role), -EOPNOTSUPP (not a
 * single-producer single-consumer ring), -EBUSY (a stream, reservation or peek is open), or
 * -EPROTO (the library was built for another stream layout). */
static inline struct abd_ring_stream abd_ring_stream_open(struct abd_ring *ring, unsigned role)
{
	struct abd_ring_stream t, s;
	int e = abd__ring_stream_open(ring, role, ABD_RING_STREAM_ABI, &t);
	/* member by member, so that the caller's stream is not the one whose address escaped */
	s.ring = e < 0 ? (struct abd_ring *)0 : t.ring;
	s.slots = t.slots;
	s.shared_pos = t.shared_pos;
	s.peer_pos = t.peer_pos;
	s.futex = t.futex;
	s.pos = t.pos;
	s.head = t.head;
	s.mask = t.mask;
	s.stride = t.stride;
	s.slot_size = t.slot_size;
	s.role = t.role;
	s.fast = e < 0 ? 0 : t.fast;
	s.ret = e;
	return s;
}

/* The slot layout the inline functions rely on (docs/ring.md section 4): the control word at
 * 0 (position in the low 32 bits, state in bits 32-35: 2 = full), the length at 8, the message
 * at 16. */
#define ABD_RING__SLOT_CTL_FULL(pos) ((uint64_t)(uint32_t)(pos) | (uint64_t)2 << 32)
#define ABD_RING__SLOT_DATA 16

/* As abd_ring_try_push: 0, -EAGAIN (full), -EMSGSIZE, -EINVAL (closed stream, NULL data). */
ABD_NODISCARD static inline int abd_ring_stream_push(struct abd_ring_stream *s, const void *data,
                                                     size_t len) ABD_NONBLOCKING
{
	uint64_t t = s->pos;
	if (__builtin_expect(s->fast && len <= s->slot_size && (data || len == 0), 1)) {
		if (__builtin_expect(t - s->head > s->mask, 0)) { /* full as last seen */
			s->head = __atomic_load_n(s->peer_pos, __ATOMIC_ACQUIRE);
			if (t - s->head > s->mask)
				return -EAGAIN;
		}
		unsigned char *slot = s->slots + (size_t)(t & s->mask) * s->stride;
		abd__ring_copy(slot + ABD_RING__SLOT_DATA, data, len);
		__atomic_store_n((uint32_t *)(void *)(slot + 8), (uint32_t)len, __ATOMIC_RELAXED);
		__atomic_store_n((uint64_t *)(void *)slot, ABD_RING__SLOT_CTL_FULL(t), __ATOMIC_RELEASE);
		s->pos = ++t;
		__atomic_store_n(s->shared_pos, t, __ATOMIC_RELEASE);
		/* the sleeper check; the statistics every 256 messages */
		if (__builtin_expect(!(t & 255) | (__atomic_load_n(s->futex, __ATOMIC_SEQ_CST) & 1), 0)) {
			uint64_t head = s->head;
			abd__ring_stream_took(s, abd__ring_stream_moved(s->ring, s->role, t, head));
			s->head = head;
		}
		return 0;
	}
	return abd__ring_stream_took(s, abd__ring_stream_push_slow(s->ring, t, s->head, data, len));
}

/* As abd_ring_try_pop: the message's length, -EAGAIN (empty), -EMSGSIZE (it stays), -EBADMSG,
 * -EINVAL (closed stream, NULL buf). */
ABD_NODISCARD static inline int abd_ring_stream_pop(struct abd_ring_stream *s, void *buf,
                                                    size_t size) ABD_NONBLOCKING
{
	uint64_t h = s->pos;
	if (__builtin_expect(s->fast && (buf || size == 0) && size <= 0x7fffffff, 1)) {
		unsigned char *slot = s->slots + (size_t)(h & s->mask) * s->stride;
		uint64_t c = __atomic_load_n((const uint64_t *)(void *)slot, __ATOMIC_ACQUIRE);
		if (c == ABD_RING__SLOT_CTL_FULL(h)) {
			uint32_t len = __atomic_load_n((const uint32_t *)(void *)(slot + 8), __ATOMIC_RELAXED);
			if (__builtin_expect(len <= s->slot_size && len <= size, 1)) {
				abd__ring_copy(buf, slot + ABD_RING__SLOT_DATA, len);
				s->pos = ++h;
				__atomic_store_n(s->shared_pos, h, __ATOMIC_RELEASE);
				if (__builtin_expect(!(h & 255) | (__atomic_load_n(s->futex, __ATOMIC_SEQ_CST) & 1),
				                     0))
					abd__ring_stream_took(s, abd__ring_stream_moved(s->ring, s->role, h, 0));
				return (int)len;
			}
		} else {
			/* empty: the slot holds an earlier lap, or is still free for this one */
			int32_t d = (int32_t)((uint32_t)c - (uint32_t)h);
			if (d < 0 || (d == 0 && ((c >> 32) & 15) == 0))
				return -EAGAIN;
		}
	}
	return abd__ring_stream_took(s, abd__ring_stream_pop_slow(s->ring, h, buf, size));
}

/* Close the stream: the handle takes the position back and flushes the statistics. Returns 0,
 * or -EINVAL (not open). The stream is unusable afterwards. */
static inline int abd_ring_stream_close(struct abd_ring_stream *s)
{
	int e = abd__ring_stream_close(s->ring, s->role, s->pos, s->head);
	s->fast = 0;
	s->ring = (struct abd_ring *)0;
	return e;
}

/* ---- Typed wrappers ------------------------------------------------------------------- */

#define ABD_RING__UNUSED __attribute__((unused)) /* a program may use only some of them */

/* ABD_RING_TYPED(name, type) defines static inline name_try_push(ring, const type *),
 * name_try_pop(ring, type *), name_push(ring, const type *, timeout_ns) and
 * name_pop(ring, type *, timeout_ns), and for streams name_stream_push(stream, const type *) and
 * name_stream_pop(stream, type *), returning 0 or the ring's -errno; a popped message of the
 * wrong size gives -EBADMSG. The type must be trivially copyable and at most
 * ABD_RING_MAX_SLOT_SIZE bytes (checked at compile time). */
#ifdef __cplusplus
#define ABD_RING__STATIC_ASSERT(e, m) static_assert(e, m)
#else
#define ABD_RING__STATIC_ASSERT(e, m) _Static_assert(e, m)
#endif
#define ABD_RING_TYPED(name, type)                                                     \
	ABD_RING__STATIC_ASSERT(sizeof(type) > 0 && sizeof(type) <= ABD_RING_MAX_SLOT_SIZE, \
	                        "ABD_RING_TYPED: " #type " does not fit a ring slot");      \
	ABD_RING__UNUSED static inline int name##_try_push(struct abd_ring *r, const type *v)               \
	{                                                                                  \
		return abd_ring_try_push(r, v, sizeof(type));                                  \
	}                                                                                  \
	ABD_RING__UNUSED static inline int name##_push(struct abd_ring *r, const type *v, int64_t t)        \
	{                                                                                  \
		return abd_ring_push(r, v, sizeof(type), t);                                   \
	}                                                                                  \
	ABD_RING__UNUSED static inline int name##_try_pop(struct abd_ring *r, type *v)                      \
	{                                                                                  \
		int n_ = abd_ring_try_pop(r, v, sizeof(type));                                 \
		return n_ < 0 ? n_ : n_ == (int)sizeof(type) ? 0 : -EBADMSG;                   \
	}                                                                                  \
	ABD_RING__UNUSED static inline int name##_pop(struct abd_ring *r, type *v, int64_t t)               \
	{                                                                                  \
		int n_ = abd_ring_pop(r, v, sizeof(type), t);                                  \
		return n_ < 0 ? n_ : n_ == (int)sizeof(type) ? 0 : -EBADMSG;                   \
	}                                                                                  \
	ABD_RING__UNUSED static inline int name##_stream_push(struct abd_ring_stream *s, const type *v)     \
	{                                                                                  \
		return abd_ring_stream_push(s, v, sizeof(type));                               \
	}                                                                                  \
	ABD_RING__UNUSED static inline int name##_stream_pop(struct abd_ring_stream *s, type *v)            \
	{                                                                                  \
		int n_ = abd_ring_stream_pop(s, v, sizeof(type));                              \
		return n_ < 0 ? n_ : n_ == (int)sizeof(type) ? 0 : -EBADMSG;                   \
	}                                                                                  \
	ABD_RING__UNUSED static inline int name##_check_slot(struct abd_ring *r)                            \
	{                                                                                  \
		int64_t s_ = abd_ring_slot_size(r);                                            \
		return s_ < 0 ? (int)s_ : s_ >= (int64_t)sizeof(type) ? 0 : -EMSGSIZE;         \
	}

ABD_END_DECLS

#endif
