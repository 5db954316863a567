/* SPDX-License-Identifier: MIT */
/* The ring: creation, validated attach, and the lock-free fast paths.
 *
 * Producers and consumers agree through one 64-bit control word per slot (seq | state |
 * lease), a bounded MPMC queue in the manner of Vyukov's, but a producer claims a slot with a
 * CAS on the slot itself (recording its lease in the same word) before it advances the tail,
 * and anyone may advance a tail or head that lags behind a claimed slot. So a claim and its
 * owner are one atomic fact, and a participant killed at any instruction leaves either an
 * untouched slot or a slot that names it. docs/ring.md has the full protocol. */
#include <abd/probe.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <linux/futex.h>
#include <limits.h>

#include "ring-internal.h"

#define ABD__REQUIRED_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

static uint32_t stride_for(uint32_t slot_size)
{
	uint64_t s = (ABD__RING_SLOT_HDR + (uint64_t)slot_size + 15) & ~UINT64_C(15);
	if (s > 32)
		s = (s + ABD__RING_LINE - 1) & ~(uint64_t)(ABD__RING_LINE - 1);
	return (uint32_t)s;
}

static uint64_t slots_offset_for(uint32_t lease_count)
{
	return ABD__RING_HEADER_SIZE + (uint64_t)lease_count * ABD__RING_LEASE_SIZE;
}

static uint64_t total_size_for(uint64_t slots_offset, uint32_t cap, uint32_t stride)
{
	/* exact, not page-rounded: any change of geometry changes the size */
	return slots_offset + (uint64_t)cap * stride;
}

static bool is_pow2(uint32_t v)
{
	return v >= 2 && (v & (v - 1)) == 0;
}

/* Reopen the memfd through /proc to get an open file description of our own: OFD locks
 * belong to the description, and one shared by dup/fork/SCM_RIGHTS/pidfd_getfd would let
 * another process keep our lease alive. */
static int reopen_private(int fd)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	int r = open(path, O_RDWR | O_CLOEXEC);
	return r < 0 ? -errno : r;
}

static void ring_close(struct abd_ring *r)
{
	abd__close(r->stall_pidfd);
	if (r->stall_uring_free)
		r->stall_uring_free(r);
	if (r->base)
		munmap(r->base, r->map_size);
	abd__close(r->shfd);
	abd__close(r->lockfd);
	free(r);
}

static struct abd_ring *ring_alloc(void)
{
	struct abd_ring *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->shfd = r->lockfd = r->stall_pidfd = -1;
	r->stuck_ns = 0; /* a live peer's slot is never taken unless the program asks */
	r->stuck_pos = UINT64_MAX;
	r->spin = 128;
	return r;
}


/* Everything after the mapping is validated: roles, lease, futex choice, positions. */
static int ring_join(struct abd_ring *r, unsigned flags)
{
	r->roles = flags & ABD__RING_ROLES ? flags & ABD__RING_ROLES : ABD__RING_ROLES;
	r->use_futex = abd_probe_has(ABD_FEAT_FUTEX) == 1;
	if ((r->modes & ABD_RING_SINGLE_PRODUCER) && (r->roles & ABD_RING_PRODUCER)) {
		int e = abd__ring_lock(r->lockfd, ABD__RING_LOCK_PRODUCER, true);
		if (e < 0)
			return e == -EAGAIN || e == -EACCES ? -EBUSY : e;
	}
	if ((r->modes & ABD_RING_SINGLE_CONSUMER) && (r->roles & ABD_RING_CONSUMER)) {
		int e = abd__ring_lock(r->lockfd, ABD__RING_LOCK_CONSUMER, true);
		if (e < 0)
			return e == -EAGAIN || e == -EACCES ? -EBUSY : e;
	}
	int e = abd__ring_take_lease(r);
	if (e < 0)
		return e;
	if (e > 0) { /* the lease's dead holder left slots: whoever waits for them may go on */
		abd__ring_wake_all(r, ABD_RING_WAIT_DATA);
		abd__ring_wake_all(r, ABD_RING_WAIT_SPACE);
	}
	/* A single producer/consumer owns its position; the shared copy may lag by one when its
	 * predecessor died between publishing a slot and storing the position: the fast path
	 * steps over such slots. */
	r->sp_tail = r->sp_stat_base = abd__load(&r->h->tail, ACQUIRE);
	r->sc_head = r->sc_stat_base = abd__load(&r->h->head, ACQUIRE);
	/* a new single publisher starts fenced; a dead predecessor's mode is void (its stores are
	 * all visible: its CPU switched away from it) */
	if ((r->modes & ABD_RING_SINGLE_PRODUCER) && (r->roles & ABD_RING_PRODUCER))
		abd__store(&r->h->tail_unfenced, 0, RELEASE);
	if ((r->modes & ABD_RING_SINGLE_CONSUMER) && (r->roles & ABD_RING_CONSUMER))
		abd__store(&r->h->head_unfenced, 0, RELEASE);
	abd__ring_fast_update(r);
	return 0;
}

/* The tail abd_ring_new and abd_ring_attach share: a lease descriptor of this handle's own
 * (a private reopen of fd), then a seat in the participant table. Frees r on failure. */
static int ring_open_finish(struct abd_ring *r, int fd, unsigned flags, struct abd_ring **out)
{
	r->lockfd = reopen_private(fd);
	int e = r->lockfd < 0 ? r->lockfd : ring_join(r, flags);
	if (e < 0) {
		ring_close(r);
		return e;
	}
	*out = r;
	return 0;
}

int abd_ring_new(uint32_t capacity, uint32_t slot_size, unsigned flags, const uint8_t *nonce,
                 struct abd_ring **out)
{
	abd__check(out, -EINVAL);
	*out = NULL;
	abd__check(is_pow2(capacity) && capacity <= ABD_RING_MAX_CAPACITY, -EINVAL);
	abd__check(slot_size >= 1 && slot_size <= ABD_RING_MAX_SLOT_SIZE, -EINVAL);
	abd__check((flags & ~(ABD__RING_ROLES | ABD__RING_MODES)) == 0, -EINVAL);

	struct abd_ring *r = ring_alloc();
	if (!r)
		return -ENOMEM;
	int e;
	unsigned mfd = MFD_CLOEXEC | MFD_ALLOW_SEALING;
	if (abd_probe_has(ABD_FEAT_MFD_NOEXEC_SEAL) == 1)
		mfd |= MFD_NOEXEC_SEAL;
	r->shfd = memfd_create("abd-ring", mfd);
	if (r->shfd < 0 && (mfd & MFD_NOEXEC_SEAL) && errno == EINVAL)
		r->shfd = memfd_create("abd-ring", mfd & ~MFD_NOEXEC_SEAL);
	if (r->shfd < 0)
		goto fail_errno;

	r->cap = capacity;
	r->mask = capacity - 1;
	r->slot_size = slot_size;
	r->stride = stride_for(slot_size);
	r->modes = flags & ABD__RING_MODES;
	r->lease_count = ABD_RING_MAX_PARTICIPANTS;
	uint64_t slots_off = slots_offset_for(r->lease_count);
	uint64_t total = total_size_for(slots_off, capacity, r->stride);
	if (total > (uint64_t)SIZE_MAX / 2) {
		e = -ENOMEM;
		goto fail;
	}
	if (ftruncate(r->shfd, (off_t)total) < 0)
		goto fail_errno;
	if (fcntl(r->shfd, F_ADD_SEALS, ABD__REQUIRED_SEALS) < 0)
		goto fail_errno;
	r->map_size = (size_t)total;
	void *m = mmap(NULL, r->map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->shfd, 0);
	if (m == MAP_FAILED)
		goto fail_errno;
	r->base = m;
	r->h = m;
	r->leases = (struct abd__ring_lease *)(r->base + ABD__RING_HEADER_SIZE);
	r->slots = r->base + slots_off;

	if (nonce)
		memcpy(r->nonce, nonce, sizeof(r->nonce));
	else if (getrandom(r->nonce, sizeof(r->nonce), 0) != (ssize_t)sizeof(r->nonce))
		goto fail_errno;

	struct abd__ring_hdr *h = r->h;
	h->version = ABD__RING_VERSION;
	h->header_size = ABD__RING_HEADER_SIZE;
	memcpy(h->nonce, r->nonce, sizeof(h->nonce));
	h->capacity = capacity;
	h->slot_size = slot_size;
	h->slot_stride = r->stride;
	h->modes = r->modes;
	h->lease_count = r->lease_count;
	h->lease_offset = ABD__RING_HEADER_SIZE;
	h->slots_offset = slots_off;
	h->total_size = total;
	h->magic = ABD__RING_MAGIC;
	h->checksum = abd__ring_checksum(h);
	h->magic = 0;
	for (uint32_t i = 0; i < capacity; i++)
		abd__slot(r, i)->ctl = abd__ctl(i, ABD__SLOT_FREE, 0);
	/* The magic last: a peer that maps a half-built ring sees no magic. */
	abd__store(&h->magic, ABD__RING_MAGIC, RELEASE);

	/* no eventfd: every sleeper waits on its own lease's word (docs/ring.md, section 5) */
	return ring_open_finish(r, r->shfd, flags, out);

fail_errno:
	e = -errno;
fail:
	ring_close(r);
	return e;
}

/* Check every header field against the file before the mapping is trusted. The header is
 * copied first: the checks and the use must see the same bytes. */
static int validate(const struct abd__ring_hdr *hp, uint64_t file_size, struct abd_ring *r)
{
	struct abd__ring_hdr h;
	memcpy(&h, hp, sizeof(h));
	if (h.magic != ABD__RING_MAGIC || h.version != ABD__RING_VERSION ||
	    h.header_size != ABD__RING_HEADER_SIZE || h.checksum != abd__ring_checksum(&h))
		return -EPROTO;
	if (!is_pow2(h.capacity) || h.capacity > ABD_RING_MAX_CAPACITY)
		return -EPROTO;
	if (h.slot_size < 1 || h.slot_size > ABD_RING_MAX_SLOT_SIZE ||
	    h.slot_stride != stride_for(h.slot_size))
		return -EPROTO;
	if (h.modes & ~ABD__RING_MODES)
		return -EPROTO;
	if (h.lease_count < 1 || h.lease_count > ABD_RING_MAX_PARTICIPANTS ||
	    h.lease_offset != ABD__RING_HEADER_SIZE)
		return -EPROTO;
	uint64_t slots_off = slots_offset_for(h.lease_count);
	if (h.slots_offset != slots_off)
		return -EPROTO;
	uint64_t total = total_size_for(slots_off, h.capacity, h.slot_stride);
	if (h.total_size != total || total != file_size)
		return -EPROTO;
	r->cap = h.capacity;
	r->mask = h.capacity - 1;
	r->slot_size = h.slot_size;
	r->stride = h.slot_stride;
	r->modes = h.modes;
	r->lease_count = h.lease_count;
	memcpy(r->nonce, h.nonce, sizeof(r->nonce));
	return 0;
}

int abd_ring_attach(int memfd, int wait_fd, const uint8_t *expected_nonce, unsigned flags,
                    struct abd_ring **out)
{
	return abd_ring_attach_opts(memfd, wait_fd, expected_nonce, flags, NULL, out);
}

int abd_ring_attach_opts(int memfd, int wait_fd, const uint8_t *expected_nonce, unsigned flags,
                         const struct abd_ring_attach_opts *opts, struct abd_ring **out)
{
	static const struct abd_ring_attach_opts defaults;
	abd__check(out, -EINVAL);
	*out = NULL;
	abd__check(memfd >= 0, -EINVAL);
	abd__check((flags & ~ABD__RING_ROLES) == 0, -EINVAL);
	if (!opts)
		opts = &defaults;
	for (size_t i = 0; i < sizeof(opts->reserved) / sizeof(opts->reserved[0]); i++)
		abd__check(opts->reserved[i] == 0, -EINVAL);
	uint64_t max_size = opts->max_size ? opts->max_size : ABD_RING_ATTACH_DEFAULT_MAX;

	if (wait_fd >= 0) {
		/* An eventfd is an anonymous inode; its /proc link names it. */
		char path[64], target[64];
		snprintf(path, sizeof(path), "/proc/self/fd/%d", wait_fd);
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		if (n < 0)
			return errno == ENOENT ? -EINVAL : -errno;
		target[n] = 0;
		abd__check(strcmp(target, "anon_inode:[eventfd]") == 0, -EINVAL);
	}
	/* The seals first, then the size: only a file that can no longer shrink or grow has a
	 * size worth reading (read before, it could shrink under the mapping: SIGBUS). */
	int seals = fcntl(memfd, F_GET_SEALS);
	if (seals < 0) {
		if (errno != EINVAL)
			return -errno;
		struct stat st;
		if (fstat(memfd, &st) < 0)
			return -errno;
		return S_ISREG(st.st_mode) ? -EPROTO : -EINVAL; /* not a memfd: no seals at all */
	}
	if ((seals & ABD__REQUIRED_SEALS) != ABD__REQUIRED_SEALS)
		return -EPROTO;
	struct stat st;
	if (fstat(memfd, &st) < 0)
		return -errno;
	abd__check(S_ISREG(st.st_mode), -EINVAL);
	if (st.st_size < (off_t)ABD__RING_HEADER_SIZE)
		return -EPROTO;
	/* the peer chose the size: the opener's limit bounds what is mapped */
	if ((uint64_t)st.st_size > max_size || (uint64_t)st.st_size > (uint64_t)SIZE_MAX / 2)
		return -EFBIG;

	struct abd_ring *r = ring_alloc();
	if (!r)
		return -ENOMEM;
	int e;
	r->map_size = (size_t)st.st_size;
	/* not pre-faulted: the size is the peer's choice */
	void *m = mmap(NULL, r->map_size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (m == MAP_FAILED)
		goto fail_errno;
	r->base = m;
	r->h = m;
	e = validate(r->h, (uint64_t)st.st_size, r);
	if (e == 0 && ((opts->capacity && opts->capacity != r->cap) ||
	               (opts->slot_size && opts->slot_size != r->slot_size)))
		e = -EPROTO; /* not the geometry the opener was told of */
	if (e < 0)
		goto fail;
	if (expected_nonce && memcmp(expected_nonce, r->nonce, sizeof(r->nonce)) != 0) {
		e = -ESTALE;
		goto fail;
	}
	r->leases = (struct abd__ring_lease *)(r->base + ABD__RING_HEADER_SIZE);
	r->slots = r->base + slots_offset_for(r->lease_count);

	r->shfd = fcntl(memfd, F_DUPFD_CLOEXEC, 3);
	if (r->shfd < 0)
		goto fail_errno;
	/* wait_fd is not kept: sleepers wait on their own lease's word (docs/ring.md, section 5) */
	return ring_open_finish(r, memfd, flags, out);

fail_errno:
	e = -errno;
fail:
	ring_close(r);
	return e;
}

void abd_ring_free(struct abd_ring *r)
{
	if (!r)
		return;
	if (r->lockfd >= 0 && r->leases) {
		if (r->held && abd__ring_sweep(r, r->lease)) {
			abd__ring_wake_all(r, ABD_RING_WAIT_DATA);
			abd__ring_wake_all(r, ABD_RING_WAIT_SPACE);
		}
		abd__ring_flush_stats(r);
		abd__ring_drop_lease(r);
		/* A consumer may be asleep waiting for the last producers to leave (a closed service
		 * ends only then: runtime/service.c): tell it this one left. Nothing when nobody is
		 * armed. */
		if (r->roles & ABD_RING_PRODUCER)
			abd__ring_wake_all(r, ABD_RING_WAIT_DATA);
	}
	ring_close(r);
}

int abd_ring_fd(const struct abd_ring *r)
{
	abd__check(r, -EINVAL);
	return r->shfd;
}

int abd_ring_wait_fd(const struct abd_ring *r)
{
	abd__check(r, -EINVAL);
	return -ENODEV; /* no ring has one: docs/ring.md, section 5 */
}

int abd_ring_nonce(const struct abd_ring *r, uint8_t *out)
{
	abd__check(r && out, -EINVAL);
	memcpy(out, r->nonce, sizeof(r->nonce));
	return 0;
}

int64_t abd_ring_capacity(const struct abd_ring *r)
{
	abd__check(r, -EINVAL);
	return r->cap;
}

int64_t abd_ring_slot_size(const struct abd_ring *r)
{
	abd__check(r, -EINVAL);
	return r->slot_size;
}

int abd_ring_set_stuck_timeout(struct abd_ring *r, int64_t timeout_ns)
{
	abd__check(r && timeout_ns >= 0, -EINVAL);
	r->stuck_ns = timeout_ns;
	return 0;
}

const uint32_t *abd_ring_futex(const struct abd_ring *r, enum abd_ring_wait_for what)
{
	if (!r)
		return NULL;
	return &r->leases[r->lease].wake[what == ABD_RING_WAIT_SPACE];
}

/* Messages pushed (DATA) / popped (SPACE) by this handle and not yet added to the header. */
static inline uint64_t stats_pending(const struct abd_ring *r, enum abd_ring_wait_for what)
	ABD_NONBLOCKING
{
	return what == ABD_RING_WAIT_DATA ? r->unflushed_pushed + (r->sp_tail - r->sp_stat_base)
	                                  : r->unflushed_popped + (r->sc_head - r->sc_stat_base);
}

void abd__ring_flush_stats(struct abd_ring *r)
{
	uint64_t pushed = stats_pending(r, ABD_RING_WAIT_DATA);
	uint64_t popped = stats_pending(r, ABD_RING_WAIT_SPACE);
	if (pushed)
		abd__add(&r->h->pushed, pushed, RELAXED);
	if (popped)
		abd__add(&r->h->popped, popped, RELAXED);
	r->unflushed_pushed = r->unflushed_popped = 0;
	r->sp_stat_base = r->sp_tail;
	r->sc_stat_base = r->sc_head;
}

int abd_ring_stats(struct abd_ring *r, struct abd_ring_stats *out)
{
	abd__check(r && out, -EINVAL);
	abd__ring_flush_stats(r);
	memset(out, 0, sizeof(*out));
	out->pushed = abd__load(&r->h->pushed, RELAXED);
	out->popped = abd__load(&r->h->popped, RELAXED);
	out->recovered = abd__load(&r->h->recovered, RELAXED);
	out->wakes = abd__load(&r->h->wakes, RELAXED);
	out->waits = abd__load(&r->h->waits, RELAXED);
	out->own_wakes = r->own_wakes;
	out->own_waits = r->own_waits;
	out->data_sleepers = abd__ring_sleepers(r, ABD_RING_WAIT_DATA);
	out->space_sleepers = abd__ring_sleepers(r, ABD_RING_WAIT_SPACE);
	return 0;
}

/* Claim lease i's announcement of `what` (its bit in the sleeping map) and wake its own word.
 * Returns what FUTEX_WAKE returns (0: the lease was not asleep in the kernel yet, or is gone),
 * or -1 when the bit was not set (another waker claimed it, or the sleeper withdrew). */
static int wake_lease(struct abd_ring *r, enum abd_ring_wait_for what, uint64_t *map, unsigned i)
	ABD_NONBLOCKING
{
	uint64_t bit = UINT64_C(1) << (i % 64);
	if (!(__atomic_fetch_and(&map[i / 64], ~bit, __ATOMIC_SEQ_CST) & bit))
		return -1;
	uint32_t *w = &r->leases[i].wake[what];
	__atomic_fetch_add(w, 1, __ATOMIC_SEQ_CST);
	/* FUTEX_WAKE never sleeps: the realtime sanitizer is told to let it through */
	ABD__RTSAN_EXEMPT_BEGIN;
	long n = syscall(SYS_futex, w, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
	ABD__RTSAN_EXEMPT_END;
	return n < 0 ? 0 : (int)n;
}

/* The bits of word k of a sleeping map that name a lease of ours (a peer may set others). */
static inline uint64_t map_valid(const struct abd_ring *r, unsigned k) ABD_NONBLOCKING
{
	unsigned n = r->lease_count - k * 64;
	return n >= 64 ? UINT64_MAX : (UINT64_C(1) << n) - 1;
}

/* The syscall a fast path may owe: a sleeper armed the word (docs/ring.md, section 5). Each
 * sleeper announced itself with its bit in the sleeping map and sleeps on its own lease's word:
 * wake up to `max` of them that were asleep (a lease that was not asleep in the kernel, about to
 * sleep or gone, costs a spare wake and does not count), each by claiming its bit, so that two
 * wakers never wake the same sleeper for two messages. When no announced sleeper is left, disarm
 * the word (bumping its sequence): publishers skip the wake until a sleeper arms it again. The
 * disarm is a CAS of the word together with the arming count, so it fails when a sleeper armed
 * after we looked at the map; then look again (a few times: a peer that re-arms for ever only
 * makes us stop, armed, which costs the next publication a look). */
static void wake_n(struct abd_ring *r, enum abd_ring_wait_for what, unsigned max) ABD_NONBLOCKING
{
	uint64_t *pair = what == ABD_RING_WAIT_SPACE ? &r->h->space_pair : &r->h->data_pair;
	uint64_t *map = what == ABD_RING_WAIT_SPACE ? r->h->space_sleeping : r->h->data_sleeping;
	unsigned woken = 0, words = (r->lease_count + 63) / 64;
	bool any = false;
	for (int round = 0; round < 4 && woken < max; round++) {
		uint64_t p = abd__load(pair, SEQ_CST);
		if (!(abd__pair_word(p) & 1) && max != UINT_MAX)
			break; /* not armed, or another waker disarmed it (all: look at the map anyway) */
		for (unsigned k = 0; k < words && woken < max; k++) {
			uint64_t m = abd__load(&map[k], SEQ_CST) & map_valid(r, k);
			while (m && woken < max) {
				unsigned i = k * 64 + (unsigned)__builtin_ctzll(m);
				m &= m - 1;
				int n = wake_lease(r, what, map, i);
				if (n >= 0)
					any = true;
				/* Not asleep in the kernel: either about to sleep (it will find its word
				 * changed and go on: the wake is delivered) or dead (then another sleeper
				 * must have it). Its lease lock tells which, without waking anyone else. */
				if (n == 0 && max != UINT_MAX) {
					ABD__RTSAN_EXEMPT_BEGIN; /* F_OFD_GETLK never sleeps */
					n = abd__ring_lease_alive(r, i) != 0;
					ABD__RTSAN_EXEMPT_END;
				}
				if (n > 0)
					woken++;
			}
		}
		if (woken >= max) {
			bool more = false;
			for (unsigned k = 0; k < words && !more; k++)
				more = (abd__load(&map[k], SEQ_CST) & map_valid(r, k)) != 0;
			if (more)
				break; /* others still sleep: the word stays armed for the next publication */
		}
		/* nobody left announced: disarm, unless a sleeper armed since we loaded p */
		uint32_t w = abd__pair_word(p);
		if (abd__cas(pair, &p, abd__pair((w + 2) & ~1u, abd__pair_arms(p)), SEQ_CST) ||
		    woken >= max)
			break;
	}
	if (!any)
		return;
	/* the CPU we run on, for the sleepers we woke (a hint, see ring-wait.c: yield_hint);
	 * sched_getcpu reads it from the rseq area (glibc 2.35+) or the vDSO, no syscall */
	uint32_t *waker_cpu = what == ABD_RING_WAIT_SPACE ? &r->h->space_waker_cpu : &r->h->data_waker_cpu;
	ABD__RTSAN_EXEMPT_BEGIN;
	int cpu = sched_getcpu();
	ABD__RTSAN_EXEMPT_END;
	abd__store(waker_cpu, cpu >= 0 ? (uint32_t)cpu + 1 : 0, RELAXED);
	abd__add(&r->h->wakes, 1, RELAXED);
	r->own_wakes++;
}

/* One message (or slot) made available: one sleeper. */
void abd__ring_wake(struct abd_ring *r, enum abd_ring_wait_for what) ABD_NONBLOCKING
{
	wake_n(r, what, 1);
}

/* Everyone announced: a close, a departure, a recovery. */
void abd__ring_wake_all(struct abd_ring *r, enum abd_ring_wait_for what) ABD_NONBLOCKING
{
	wake_n(r, what, UINT_MAX);
}

/* How many leases are announced as sleeping for `what` (statistics; a peer may lie). */
unsigned abd__ring_sleepers(const struct abd_ring *r, enum abd_ring_wait_for what)
{
	const uint64_t *map = what == ABD_RING_WAIT_SPACE ? r->h->space_sleeping : r->h->data_sleeping;
	unsigned n = 0;
	for (unsigned k = 0; k < (r->lease_count + 63) / 64; k++)
		n += (unsigned)__builtin_popcountll(abd__load(&map[k], RELAXED) & map_valid(r, k));
	return n;
}

/* A message's copy in or out: abd__ring_copy (include/abd/ring.h, shared with the streams'
 * inline functions). */
#define ABD__COPY_INLINE ABD_RING__COPY_INLINE
#define copy_msg abd__ring_copy

/* ---- Fast paths ------------------------------------------------------------------------
 * Every index read from shared memory is masked before use and every length is bounded by
 * our private slot size: a hostile peer can garble messages, never move our accesses out of
 * the mapping. Loops that depend on shared state are bounded as well. */

/* The short paths of abd_ring_try_push / try_pop (below) serve a single producer facing a single
 * consumer, and that consumer, while each publishes unfenced (it found no sleeper for a while)
 * and holds no reservation / peeked slot; in every other state they step aside for the general
 * paths. Called wherever one of these conditions changes. */
static bool push_fast_ok(const struct abd_ring *r) ABD_NONBLOCKING
{
	return (r->roles & ABD_RING_PRODUCER) && (r->modes & ABD_RING_SINGLE_PRODUCER) && r->sp_fast &&
	       !r->sp_reserved && r->unfenced[ABD_RING_WAIT_DATA];
}

static bool pop_fast_ok(const struct abd_ring *r) ABD_NONBLOCKING
{
	return (r->roles & ABD_RING_CONSUMER) && abd__ring_spsc(r) && !r->sc_peeked &&
	       r->unfenced[ABD_RING_WAIT_SPACE];
}

/* A streamed role's short path is the stream's (abd_ring_stream_push/pop), not the handle's. */
void abd__ring_fast_update(struct abd_ring *r) ABD_NONBLOCKING
{
	r->fast_push = push_fast_ok(r) && !(r->streams & ABD_RING_PRODUCER);
	r->fast_pop = pop_fast_ok(r) && !(r->streams & ABD_RING_CONSUMER);
}

/* Is a sleeper armed on this futex word (bit 0)? A plain load of a line nobody writes while
 * nobody sleeps. */
static inline bool armed(const uint32_t *word) ABD_NONBLOCKING
{
	return abd__load(word, SEQ_CST) & 1;
}

/* The publication mode of a single producer (consumer), whose publications are plain stores
 * (docs/ring.md, section 5). Fenced: the slot word is stored seq_cst, so the sleeper check that
 * follows is exact. Unfenced: a release store, and the check may run before the store is
 * visible; waiters then bound their sleep by the grace. A publisher goes unfenced after
 * ABD__RING_CALM publications in a row found no sleeper (storing the mode, then a fence: a
 * waiter that still reads "fenced" after arming is seen by every later check), and fenced again
 * as soon as one finds a sleeper (storing the mode after its publications: a waiter that reads
 * "fenced" sees them). Streams run unfenced; rings whose waiters sleep often stay fenced, and
 * their waiters sleep without a timer. Returns whether a wake is owed. */
static inline bool publish_check(struct abd_ring *r, enum abd_ring_wait_for what,
                                 const uint32_t *word, uint32_t *mode) ABD_NONBLOCKING
{
	if (armed(word)) {
		r->calm[what] = 0;
		if (r->unfenced[what]) {
			r->unfenced[what] = false;
			abd__store(mode, 0, RELEASE);
			abd__ring_fast_update(r);
		}
		return true;
	}
	if (!r->unfenced[what] && ++r->calm[what] >= ABD__RING_CALM) {
		abd__store(mode, 1, RELAXED);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		r->unfenced[what] = true;
		abd__ring_fast_update(r);
	}
	return false;
}

static inline bool data_owed(struct abd_ring *r) ABD_NONBLOCKING
{
	if (!(r->modes & ABD_RING_SINGLE_PRODUCER))
		return armed(&r->h->data_futex);
	return publish_check(r, ABD_RING_WAIT_DATA, &r->h->data_futex, &r->h->tail_unfenced);
}

static inline bool space_owed(struct abd_ring *r) ABD_NONBLOCKING
{
	if (!(r->modes & ABD_RING_SINGLE_CONSUMER))
		return armed(&r->h->space_futex);
	return publish_check(r, ABD_RING_WAIT_SPACE, &r->h->space_futex, &r->h->head_unfenced);
}

/* The publishing store of a single producer (DATA) or consumer (SPACE), in its mode (above). */
static inline void mode_store(const struct abd_ring *r, enum abd_ring_wait_for what, uint64_t *p,
                              uint64_t v) ABD_NONBLOCKING
{
	if (r->unfenced[what])
		abd__store(p, v, RELEASE);
	else
		abd__store(p, v, SEQ_CST);
}

/* Multi-producer claim: returns the slot for position *pos, with ctl = WRITING(me). */
static ABD__NOINLINE int mp_claim(struct abd_ring *r, struct abd__ring_slot **out) ABD_NONBLOCKING
{
	uint64_t t = abd__load(&r->h->tail, ACQUIRE);
	/* The common case, a free slot at the tail: one CAS from the word a free slot has
	 * (FREE(t), no lease) instead of a load and then a CAS. The line usually comes from the
	 * consumers' CPU, and a load then a CAS fetch it twice (shared, then exclusive). A failed
	 * CAS returns the word for the cases below. Not after a full ring: a CAS on a slot the
	 * consumers still use would take its line from them at each retry. */
	bool direct = !r->mp_was_full;
	r->mp_was_full = false;
	for (uint32_t guard = 4 * r->cap + 64; guard; guard--) {
		struct abd__ring_slot *s = abd__slot(r, t);
		uint64_t mine = abd__ctl((uint32_t)t, ABD__SLOT_WRITING, r->lease);
		uint64_t c = abd__ctl((uint32_t)t, ABD__SLOT_FREE, 0);
		if (!direct || !abd__cas(&s->ctl, &c, mine, ACQ_REL)) {
			if (!direct)
				c = abd__load(&s->ctl, ACQUIRE);
		} else {
			abd__cas(&r->h->tail, &t, t + 1, RELEASE);
			*out = s;
			return 0;
		}
		int32_t d = (int32_t)(abd__ctl_seq(c) - (uint32_t)t);
		unsigned st = abd__ctl_state(c);
		if (d == 0 && st == ABD__SLOT_FREE) {
			if (abd__cas(&s->ctl, &c, mine, ACQ_REL)) {
				abd__cas(&r->h->tail, &t, t + 1, RELEASE);
				*out = s;
				return 0;
			}
			continue; /* lost the race for this position: look again */
		}
		if (d >= 0) {
			/* position t is taken already (d == 0), or done and its slot reused for a later
			 * lap (d > 0: a slot's seq passes t only after position t was consumed): help
			 * the tail past it */
			if (abd__cas(&r->h->tail, &t, t + 1, RELEASE))
				t++;
			continue;
		}
		uint64_t t2 = abd__load(&r->h->tail, ACQUIRE);
		if (t2 == t) {
			r->mp_was_full = true;
			return -EAGAIN; /* the previous lap is still in use: full */
		}
		t = t2;
	}
	return -EAGAIN;
}

/* Single-producer claim: no CAS, the position is ours. With a single consumer too, the head is
 * the exact bound: that consumer stores the head past a slot (release) only after it has read
 * the slot, so `t - head < capacity` proves slot(t) free without reading it. The producer
 * keeps the head it last read and reloads it only when that copy says full: the slot's line is
 * then written without being read first (no wait for the consumer's copy of it), and the
 * head's line crosses between the CPUs once per lap instead of once per message. The first
 * claim after attach reads the slot (sp_fast is false): a predecessor may have died between
 * publishing a slot and storing the tail. A hostile head can make us overwrite unread
 * messages, never write outside the mapping. */
static ABD__NOINLINE int sp_claim_slow(struct abd_ring *r, struct abd__ring_slot **out)
	ABD_NONBLOCKING
{
	for (uint32_t guard = r->cap + 1; guard; guard--) {
		uint64_t t = r->sp_tail;
		struct abd__ring_slot *s = abd__slot(r, t);
		uint64_t c = abd__load(&s->ctl, ACQUIRE);
		int32_t d = (int32_t)(abd__ctl_seq(c) - (uint32_t)t);
		if (d == 0 && abd__ctl_state(c) == ABD__SLOT_FREE) {
			r->sp_fast = abd__ring_spsc(r);
			abd__ring_fast_update(r);
			*out = s;
			return 0;
		}
		if (d >= 0) {
			/* our predecessor published t but died before storing the tail */
			r->sp_tail = t + 1;
			r->sp_stat_base++;
			abd__store(&r->h->tail, t + 1, RELEASE);
			continue;
		}
		if (abd__ring_spsc(r)) {
			/* the slot holds an earlier lap: a single consumer does not mark slots free,
			 * its head says whether that lap was consumed */
			r->sp_head_cache = abd__load(&r->h->head, ACQUIRE);
			if (t - r->sp_head_cache < r->cap) {
				r->sp_fast = true;
				abd__ring_fast_update(r);
				*out = s;
				return 0;
			}
		}
		return -EAGAIN;
	}
	return -EAGAIN;
}

static ABD__INLINE int sp_claim(struct abd_ring *r, struct abd__ring_slot **out) ABD_NONBLOCKING
{
	if (r->sp_fast) {
		uint64_t t = r->sp_tail;
		if (t - r->sp_head_cache >= r->cap)
			r->sp_head_cache = abd__load(&r->h->head, ACQUIRE);
		if (t - r->sp_head_cache < r->cap) {
			*out = abd__slot(r, t);
			return 0;
		}
	}
	return sp_claim_slow(r, out);
}

static ABD__INLINE int claim(struct abd_ring *r, struct abd__ring_slot **s) ABD_NONBLOCKING
{
	return r->modes & ABD_RING_SINGLE_PRODUCER ? sp_claim(r, s) : mp_claim(r, s);
}

/* Publish a claimed slot. A single producer streaming without sleepers publishes with a release
 * store, not a sequentially consistent one: on x86 that store is an xchg that waits for the
 * consumer's copy of the line to be invalidated, the whole cost of a message (measured: 6 vs
 * 43 M msg/s). See publish_check. A multi-producer commit is a CAS, a full barrier anyway. */
static ABD__INLINE int publish(struct abd_ring *r, struct abd__ring_slot *s, size_t len)
	ABD_NONBLOCKING
{
	abd__store(&s->len, (uint32_t)len, RELAXED);
	if (r->modes & ABD_RING_SINGLE_PRODUCER) {
		uint64_t t = r->sp_tail;
		mode_store(r, ABD_RING_WAIT_DATA, &s->ctl, abd__ctl((uint32_t)t, ABD__SLOT_FULL, 0));
		r->sp_tail = t + 1;
		r->sp_stat_base++;
		abd__store(&r->h->tail, t + 1, RELEASE);
	} else {
		uint64_t c = abd__load(&s->ctl, RELAXED);
		if (abd__ctl_state(c) != ABD__SLOT_WRITING || abd__ctl_lease(c) != r->lease)
			return -EOWNERDEAD;
		if (!abd__cas(&s->ctl, &c, abd__ctl(abd__ctl_seq(c), ABD__SLOT_FULL, 0), SEQ_CST))
			return -EOWNERDEAD; /* a peer took the slot from us meanwhile */
	}
	if (++r->unflushed_pushed == ABD__STATS_FLUSH) {
		abd__add(&r->h->pushed, ABD__STATS_FLUSH, RELAXED);
		r->unflushed_pushed = 0;
	}
	return 0;
}

static int push_nowake(struct abd_ring *r, const void *data, size_t len, bool *wake) ABD_NONBLOCKING
{
	if (!(r->roles & ABD_RING_PRODUCER))
		return -EPERM;
	if (len > r->slot_size)
		return -EMSGSIZE;
	if (r->sp_reserved || (r->streams & ABD_RING_PRODUCER))
		return -EBUSY;
	struct abd__ring_slot *s;
	int e = claim(r, &s);
	if (e < 0)
		return e;
	copy_msg(s->data, data, len);
	e = publish(r, s, len);
	*wake = e == 0 && data_owed(r);
	return e;
}

/* The streaming push of a single producer (fast_push): sp_claim's cached-head bound, then
 * publish's stores in publish's order (the message, its length, the slot word with a release
 * store, the tail), then data_owed's check for a sleeper. The statistics' flush and a sleeper
 * are left to the general path, which repeats the (idempotent) check and does the rest. */
static ABD__INLINE bool sp_fast_push(struct abd_ring *r, const void *data, size_t len)
	ABD_NONBLOCKING
{
	uint64_t t = r->sp_tail;
	if (abd__unlikely(t - r->sp_head_cache >= r->cap)) {
		r->sp_head_cache = abd__load(&r->h->head, ACQUIRE);
		if (t - r->sp_head_cache >= r->cap)
			return false;
	}
	struct abd__ring_slot *s = abd__slot(r, t);
	copy_msg(s->data, data, len);
	abd__store(&s->len, (uint32_t)len, RELAXED);
	abd__store(&s->ctl, abd__ctl((uint32_t)t, ABD__SLOT_FULL, 0), RELEASE);
	r->sp_tail = t + 1;
	abd__store(&r->h->tail, t + 1, RELEASE);
	return true;
}

/* After a short path's publication: the statistics every ABD__STATS_FLUSH messages, and the
 * wake a sleeper may be owed (publish_check, which also leaves unfenced mode). */
static ABD__NOINLINE int fast_tail(struct abd_ring *r, enum abd_ring_wait_for what, int ret)
	ABD_NONBLOCKING
{
	if (stats_pending(r, what) >= ABD__STATS_FLUSH)
		abd__ring_flush_stats(r);
	bool owed = what == ABD_RING_WAIT_DATA ? data_owed(r) : space_owed(r);
	if (owed)
		abd__ring_wake(r, what);
	return ret;
}

static ABD__NOINLINE int try_push_slow(struct abd_ring *r, const void *data, size_t len)
	ABD_NONBLOCKING
{
	abd__check(r && (data || len == 0), -EINVAL);
	bool wake = false;
	int e = push_nowake(r, data, len, &wake);
	if (abd__unlikely(wake))
		abd__ring_wake(r, ABD_RING_WAIT_DATA);
	return e;
}

/* The short path's end: statistics and sleepers (fast_tail) once in a while. */
static ABD__INLINE int fast_pushed(struct abd_ring *r) ABD_NONBLOCKING
{
	if (abd__unlikely(!(r->sp_tail % ABD__STATS_FLUSH) | armed(&r->h->data_futex)))
		return fast_tail(r, ABD_RING_WAIT_DATA, 0);
	return 0;
}

/* The short path for messages longer than copy_msg's inline moves: out of line, so that the
 * memcpy call (and the registers it makes us save) stays off the path of short messages. */
static ABD__NOINLINE int try_push_long(struct abd_ring *r, const void *data, size_t len)
	ABD_NONBLOCKING
{
	if (abd__likely(sp_fast_push(r, data, len)))
		return fast_pushed(r);
	return try_push_slow(r, data, len);
}

int abd_ring_try_push(struct abd_ring *r, const void *data, size_t len) ABD_NONBLOCKING
{
	if (abd__likely(r && r->fast_push && len <= r->slot_size && (data || len == 0))) {
		if (len > ABD__COPY_INLINE)
			return try_push_long(r, data, len);
		if (abd__likely(sp_fast_push(r, data, len)))
			return fast_pushed(r);
	}
	return try_push_slow(r, data, len);
}

/* A single producer's batch: each slot is published with a release store of its word (the
 * consumer reads the word, not the tail), the tail once at the end. The caller's seq_cst fence
 * after the batch orders every publication before the sleeper check, in either publication
 * mode (section 5 of docs/ring.md), so no slot needs a sequentially consistent store of its
 * own. A producer killed inside the batch leaves published slots and a lagging tail, which
 * its replacement steps over (sp_claim_slow) as after a single push. */
static unsigned sp_push_batch(struct abd_ring *r, const void *const *msgs, const size_t *lens,
                              unsigned n, int *err) ABD_NONBLOCKING
{
	unsigned done = 0;
	int e = 0;
	while (done < n) {
		if (r->sp_fast) {
			/* sp_claim's fast case over the run, the handle's fields in locals: each copy
			 * stores bytes, which may alias the handle as far as the compiler knows, and it
			 * would load them again for every message */
			unsigned char *slots = r->slots;
			uint64_t mask = r->mask, stride = r->stride, cap = r->cap;
			uint64_t t = r->sp_tail, head = r->sp_head_cache;
			while (done < n) {
				if (t - head >= cap) {
					head = abd__load(&r->h->head, ACQUIRE);
					if (t - head >= cap)
						break; /* full: sp_claim below says so */
				}
				struct abd__ring_slot *slot =
					(struct abd__ring_slot *)(slots + (size_t)(t & mask) * stride);
				size_t len = lens[done];
				copy_msg(slot->data, msgs[done], len);
				abd__store(&slot->len, (uint32_t)len, RELAXED);
				abd__store(&slot->ctl, abd__ctl((uint32_t)t, ABD__SLOT_FULL, 0), RELEASE);
				t++;
				done++;
			}
			r->sp_tail = t; /* counted as positions moved (stats_pending) */
			r->sp_head_cache = head;
			if (done == n)
				break;
		}
		struct abd__ring_slot *s;
		e = sp_claim(r, &s);
		if (e < 0)
			break;
		size_t len = lens[done];
		copy_msg(s->data, msgs[done], len);
		abd__store(&s->len, (uint32_t)len, RELAXED);
		uint64_t t = r->sp_tail;
		abd__store(&s->ctl, abd__ctl((uint32_t)t, ABD__SLOT_FULL, 0), RELEASE);
		r->sp_tail = t + 1; /* counted as a position moved (stats_pending) */
		done++;
	}
	if (done) {
		abd__store(&r->h->tail, r->sp_tail, RELEASE);
		if (stats_pending(r, ABD_RING_WAIT_DATA) >= ABD__STATS_FLUSH)
			abd__ring_flush_stats(r);
	}
	*err = e;
	return done;
}

static int push_batch_nowake(struct abd_ring *r, const void *const *msgs, const size_t *lens,
                             unsigned n, bool *wake) ABD_NONBLOCKING
{
	if (!(r->roles & ABD_RING_PRODUCER))
		return -EPERM;
	if (r->sp_reserved || (r->streams & ABD_RING_PRODUCER))
		return -EBUSY;
	for (unsigned i = 0; i < n; i++)
		if (lens[i] > r->slot_size || (!msgs[i] && lens[i]))
			return lens[i] > r->slot_size ? -EMSGSIZE : -EINVAL;
	unsigned done = 0;
	int e = 0;
	if (r->modes & ABD_RING_SINGLE_PRODUCER) {
		done = sp_push_batch(r, msgs, lens, n, &e);
	} else {
		while (done < n) {
			struct abd__ring_slot *s;
			e = claim(r, &s);
			if (e < 0)
				break;
			copy_msg(s->data, msgs[done], lens[done]);
			e = publish(r, s, lens[done]);
			if (e < 0)
				break;
			done++;
		}
	}
	if (done) {
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		*wake = data_owed(r);
	}
	return done ? (int)done : e == -EAGAIN ? 0 : e;
}

int abd_ring_try_push_batch(struct abd_ring *r, const void *const *msgs, const size_t *lens,
                            unsigned n) ABD_NONBLOCKING
{
	abd__check(r && (n == 0 || (msgs && lens)) && n <= INT_MAX, -EINVAL);
	bool wake = false;
	int e = push_batch_nowake(r, msgs, lens, n, &wake);
	if (abd__unlikely(wake))
		wake_n(r, ABD_RING_WAIT_DATA, e > 0 ? (unsigned)e : 1);
	return e;
}

static int reserve(struct abd_ring *r, void **data) ABD_NONBLOCKING
{
	if (!(r->roles & ABD_RING_PRODUCER))
		return -EPERM;
	if (r->sp_reserved || (r->streams & ABD_RING_PRODUCER))
		return -EBUSY;
	struct abd__ring_slot *s;
	int e = claim(r, &s);
	if (e < 0)
		return e;
	if (r->modes & ABD_RING_SINGLE_PRODUCER) {
		r->sp_reserved = true;
		abd__ring_fast_update(r);
	}
	r->held++;
	*data = s->data;
	return 0;
}

int abd_ring_try_reserve(struct abd_ring *r, void **data) ABD_NONBLOCKING
{
	abd__check(r && data, -EINVAL);
	return reserve(r, data);
}

/* The slot a payload pointer belongs to, or NULL when it is not one of ours. */
static struct abd__ring_slot *slot_of(const struct abd_ring *r, const void *data) ABD_NONBLOCKING
{
	const unsigned char *p = data;
	if (p < r->slots + ABD__RING_SLOT_HDR)
		return NULL;
	size_t off = (size_t)(p - r->slots) - ABD__RING_SLOT_HDR;
	if (off % r->stride || off / r->stride >= r->cap)
		return NULL;
	return (struct abd__ring_slot *)(r->slots + off);
}

static int commit_nowake(struct abd_ring *r, void *data, size_t len, bool *wake) ABD_NONBLOCKING
{
	struct abd__ring_slot *s = slot_of(r, data);
	if (!s || !r->held)
		return -EINVAL;
	if (len > r->slot_size)
		return -EMSGSIZE;
	if (r->modes & ABD_RING_SINGLE_PRODUCER) {
		if (!r->sp_reserved || s != abd__slot(r, r->sp_tail))
			return -EINVAL;
		r->sp_reserved = false;
		abd__ring_fast_update(r);
	}
	r->held--;
	int e = publish(r, s, len);
	*wake = e == 0 && data_owed(r);
	return e;
}

int abd_ring_commit(struct abd_ring *r, void *data, size_t len) ABD_NONBLOCKING
{
	abd__check(r && data, -EINVAL);
	bool wake = false;
	int e = commit_nowake(r, data, len, &wake);
	if (abd__unlikely(wake))
		abd__ring_wake(r, ABD_RING_WAIT_DATA);
	return e;
}

int abd_ring_abort(struct abd_ring *r, void *data) ABD_NONBLOCKING
{
	abd__check(r && data, -EINVAL);
	struct abd__ring_slot *s = slot_of(r, data);
	abd__check(s && r->held, -EINVAL);
	if (r->modes & ABD_RING_SINGLE_PRODUCER) {
		/* nothing was published: the slot simply stays free for the next claim */
		abd__check(r->sp_reserved && s == abd__slot(r, r->sp_tail), -EINVAL);
		r->sp_reserved = false;
		abd__ring_fast_update(r);
		r->held--;
		return 0;
	}
	r->held--;
	uint64_t c = abd__load(&s->ctl, RELAXED);
	if (abd__ctl_state(c) != ABD__SLOT_WRITING || abd__ctl_lease(c) != r->lease ||
	    !abd__cas(&s->ctl, &c, abd__ctl(abd__ctl_seq(c), ABD__SLOT_TOMB, 0), SEQ_CST))
		return -EOWNERDEAD;
	if (armed(&r->h->data_futex))
		abd__ring_wake(r, ABD_RING_WAIT_DATA);
	return 0;
}

/* ---- Consumer side ---- */

/* A consumer polling an empty slot keeps the slot's second line in its cache as well: when the
 * message lands, both lines then cross from the producer's CPU at once instead of one after the
 * other (the payload's first 48 bytes share the control word's line). A hint; no access. */
static inline void waiting_for(const struct abd_ring *r, const struct abd__ring_slot *s)
	ABD_NONBLOCKING
{
	if (r->stride > ABD__RING_LINE)
		__builtin_prefetch((const unsigned char *)s + ABD__RING_LINE, 0, 3);
}

/* Multi-consumer claim of the oldest message: ctl becomes READING(me). `size` (or SIZE_MAX)
 * bounds the message: a longer one stays in the ring. */
static ABD__NOINLINE int mc_claim(struct abd_ring *r, size_t size, struct abd__ring_slot **out)
	ABD_NONBLOCKING
{
	uint64_t h = abd__load(&r->h->head, ACQUIRE);
	/* As mp_claim: when every message fits the caller's buffer (no length to check before
	 * the claim), one CAS from FULL(h) instead of a load and a CAS; not after an empty ring
	 * (a CAS on the slot being written would take its line from the producer). */
	bool direct = size >= r->slot_size && !r->mc_was_empty;
	r->mc_was_empty = false;
	for (uint32_t guard = 4 * r->cap + 64; guard; guard--) {
		struct abd__ring_slot *s = abd__slot(r, h);
		uint64_t c = abd__ctl((uint32_t)h, ABD__SLOT_FULL, 0);
		if (direct) {
			if (abd__cas(&s->ctl, &c, abd__ctl((uint32_t)h, ABD__SLOT_READING, r->lease), ACQ_REL)) {
				abd__cas(&r->h->head, &h, h + 1, RELEASE);
				*out = s;
				return 0;
			}
		} else {
			c = abd__load(&s->ctl, ACQUIRE);
		}
		int32_t d = (int32_t)(abd__ctl_seq(c) - (uint32_t)h);
		unsigned st = abd__ctl_state(c);
		if (d == 0 && st == ABD__SLOT_FULL) {
			uint32_t len = abd__load(&s->len, RELAXED);
			if (len <= r->slot_size && len > size)
				return -EMSGSIZE;
			if (!abd__cas(&s->ctl, &c, abd__ctl((uint32_t)h, ABD__SLOT_READING, r->lease), ACQ_REL))
				continue;
			abd__cas(&r->h->head, &h, h + 1, RELEASE);
			*out = s;
			return 0;
		}
		if (d == 0 && st == ABD__SLOT_TOMB) {
			/* skip a given-up claim: free it for the next lap, then step over it */
			if (abd__cas(&s->ctl, &c, abd__ctl((uint32_t)(h + r->cap), ABD__SLOT_FREE, 0), ACQ_REL)) {
				if (abd__cas(&r->h->head, &h, h + 1, RELEASE))
					h++;
			}
			continue;
		}
		if (d == 0 && (st == ABD__SLOT_FREE || st == ABD__SLOT_WRITING)) {
			waiting_for(r, s);
			r->mc_was_empty = true;
			return -EAGAIN; /* empty, or the next message is being written */
		}
		if (d >= 0) {
			/* position h is claimed (d == 0) or consumed, maybe with its slot refilled for
			 * the next lap (d > 0): help the head past it */
			if (abd__cas(&r->h->head, &h, h + 1, RELEASE))
				h++;
			continue;
		}
		uint64_t h2 = abd__load(&r->h->head, ACQUIRE);
		if (h2 == h) {
			r->mc_was_empty = true;
			return -EAGAIN; /* an earlier lap: empty (or a stale read, or a hostile peer) */
		}
		h = h2;
	}
	return -EAGAIN;
}

/* Single-consumer: the head is ours; slots are not marked READING. */
static ABD__NOINLINE int sc_claim_slow(struct abd_ring *r, size_t size, struct abd__ring_slot **out)
	ABD_NONBLOCKING
{
	for (uint32_t guard = r->cap + 1; guard; guard--) {
		uint64_t h = r->sc_head;
		struct abd__ring_slot *s = abd__slot(r, h);
		uint64_t c = abd__load(&s->ctl, ACQUIRE);
		int32_t d = (int32_t)(abd__ctl_seq(c) - (uint32_t)h);
		unsigned st = abd__ctl_state(c);
		if (d == 0 && st == ABD__SLOT_FULL) {
			uint32_t len = abd__load(&s->len, RELAXED);
			if (len <= r->slot_size && len > size)
				return -EMSGSIZE;
			*out = s;
			return 0;
		}
		if (d == 0 && (st == ABD__SLOT_FREE || st == ABD__SLOT_WRITING)) {
			waiting_for(r, s);
			return -EAGAIN;
		}
		if (d == 0 && st == ABD__SLOT_TOMB) {
			abd__store(&s->ctl, abd__ctl((uint32_t)(h + r->cap), ABD__SLOT_FREE, 0), RELEASE);
			r->sc_head = h + 1;
			r->sc_stat_base++;
			abd__store(&r->h->head, h + 1, RELEASE);
			continue;
		}
		if (d >= 0) {
			/* our predecessor consumed h but died before storing the head */
			r->sc_head = h + 1;
			r->sc_stat_base++;
			abd__store(&r->h->head, h + 1, RELEASE);
			continue;
		}
		/* an earlier lap: empty (facing a single producer, consumed slots keep FULL) */
		waiting_for(r, s);
		return -EAGAIN;
	}
	return -EAGAIN;
}

/* Hand a consumed slot back to producers: a single consumer with release stores (as publish),
 * several with a CAS. Facing a single producer, a single consumer only moves the head: that
 * producer bounds its claims by the head (sp_claim), and leaving the slot's line unwritten
 * spares the producer's CPU the transfer of a line the consumer owns, and the consumer's next
 * stores the wait behind that line. */
static ABD__INLINE int give_back(struct abd_ring *r, struct abd__ring_slot *s) ABD_NONBLOCKING
{
	if (r->modes & ABD_RING_SINGLE_CONSUMER) {
		uint64_t h = r->sc_head;
		r->sc_stat_base++;
		if (abd__ring_spsc(r)) {
			r->sc_head = h + 1;
			mode_store(r, ABD_RING_WAIT_SPACE, &r->h->head, h + 1);
		} else {
			uint64_t v = abd__ctl((uint32_t)(h + r->cap), ABD__SLOT_FREE, 0);
			mode_store(r, ABD_RING_WAIT_SPACE, &s->ctl, v);
			r->sc_head = h + 1;
			abd__store(&r->h->head, h + 1, RELEASE);
		}
	} else {
		uint64_t c = abd__load(&s->ctl, RELAXED);
		if (abd__ctl_state(c) != ABD__SLOT_READING || abd__ctl_lease(c) != r->lease)
			return -EOWNERDEAD;
		uint64_t v = abd__ctl(abd__ctl_seq(c) + r->cap, ABD__SLOT_FREE, 0);
		if (!abd__cas(&s->ctl, &c, v, SEQ_CST))
			return -EOWNERDEAD;
	}
	if (++r->unflushed_popped == ABD__STATS_FLUSH) {
		abd__add(&r->h->popped, ABD__STATS_FLUSH, RELAXED);
		r->unflushed_popped = 0;
	}
	return 0;
}

/* The common case inline: the slot holds the committed message for the head (FULL carries no
 * lease). Everything else (empty, tombstones, lagging heads, bad lengths) in sc_claim_slow. */
static ABD__INLINE int sc_claim(struct abd_ring *r, size_t size, struct abd__ring_slot **out)
	ABD_NONBLOCKING
{
	uint64_t h = r->sc_head;
	struct abd__ring_slot *s = abd__slot(r, h);
	if (abd__load(&s->ctl, ACQUIRE) == abd__ctl((uint32_t)h, ABD__SLOT_FULL, 0) &&
	    abd__load(&s->len, RELAXED) <= size) {
		*out = s;
		return 0;
	}
	return sc_claim_slow(r, size, out);
}

static ABD__INLINE int take(struct abd_ring *r, size_t size, struct abd__ring_slot **s)
	ABD_NONBLOCKING
{
	return r->modes & ABD_RING_SINGLE_CONSUMER ? sc_claim(r, size, s) : mc_claim(r, size, s);
}

static ABD__INLINE int pop_one(struct abd_ring *r, void *buf, size_t size) ABD_NONBLOCKING
{
	struct abd__ring_slot *s;
	int e = take(r, size, &s);
	if (e < 0)
		return e;
	uint32_t len = abd__load(&s->len, RELAXED);
	/* read again: a peer may have changed it since the claim checked it against `size` */
	bool bad = len > r->slot_size || len > size;
	if (!bad)
		copy_msg(buf, s->data, len);
	e = give_back(r, s);
	if (e < 0)
		return e;
	return bad ? -EBADMSG : (int)len;
}

static int pop_nowake(struct abd_ring *r, void *buf, size_t size, bool *wake) ABD_NONBLOCKING
{
	if (!(r->roles & ABD_RING_CONSUMER))
		return -EPERM;
	if (r->sc_peeked || (r->streams & ABD_RING_CONSUMER))
		return -EBUSY;
	int e = pop_one(r, buf, size);
	*wake = e >= 0 && space_owed(r);
	return e;
}

static ABD__NOINLINE int try_pop_slow(struct abd_ring *r, void *buf, size_t size)
	ABD_NONBLOCKING
{
	abd__check(r && (buf || size == 0) && size <= INT_MAX, -EINVAL);
	bool wake = false;
	int e = pop_nowake(r, buf, size, &wake);
	if (abd__unlikely(wake))
		abd__ring_wake(r, ABD_RING_WAIT_SPACE);
	return e;
}

/* A single consumer's streaming pop of the message in slot s at the head, of len bytes (checked
 * against our slot size and the caller's buffer): pop_one's copy, give_back's head store,
 * space_owed's check once in a while (fast_tail). */
static ABD__INLINE int sc_fast_take(struct abd_ring *r, struct abd__ring_slot *s, void *buf,
                                    uint32_t len) ABD_NONBLOCKING
{
	copy_msg(buf, s->data, len);
	uint64_t h = r->sc_head + 1;
	r->sc_head = h;
	abd__store(&r->h->head, h, RELEASE);
	if (abd__unlikely(!(h % ABD__STATS_FLUSH) | armed(&r->h->space_futex)))
		return fast_tail(r, ABD_RING_WAIT_SPACE, (int)len);
	return (int)len;
}

/* As try_push_long: the memcpy of a long message out of the short path's way. */
static ABD__NOINLINE int try_pop_long(struct abd_ring *r, struct abd__ring_slot *s, void *buf,
                                      uint32_t len) ABD_NONBLOCKING
{
	return sc_fast_take(r, s, buf, len);
}

int abd_ring_try_pop(struct abd_ring *r, void *buf, size_t size) ABD_NONBLOCKING
{
	/* The streaming pop of a single consumer facing a single producer (fast_pop): sc_claim's
	 * common case, then sc_fast_take (the length read once, bounded by our slot size and the
	 * caller's buffer). Anything else takes the general path; so does an empty ring, except
	 * in its plain forms (below). */
	if (abd__likely(r && r->fast_pop && (buf || size == 0) && size <= INT_MAX)) {
		uint64_t h = r->sc_head;
		struct abd__ring_slot *s = abd__slot(r, h);
		uint64_t c = abd__load(&s->ctl, ACQUIRE);
		if (c != abd__ctl((uint32_t)h, ABD__SLOT_FULL, 0)) {
			/* empty, as sc_claim_slow says it: the slot holds an earlier lap, or is still
			 * free for this one. A spinning consumer's loop stays this short. */
			int32_t d = (int32_t)(abd__ctl_seq(c) - (uint32_t)h);
			if (d < 0 || (d == 0 && abd__ctl_state(c) == ABD__SLOT_FREE)) {
				waiting_for(r, s);
				return -EAGAIN;
			}
		} else {
			uint32_t len = abd__load(&s->len, RELAXED);
			if (abd__likely(len <= r->slot_size && len <= size)) {
				if (len > ABD__COPY_INLINE)
					return try_pop_long(r, s, buf, len);
				return sc_fast_take(r, s, buf, len);
			}
		}
	}
	return try_pop_slow(r, buf, size);
}

/* A single consumer's batch: copy each message out, then hand its slot back with a release
 * store (facing several producers, FREE(h + capacity); facing a single producer, nothing: it
 * bounds its claims by the head), and store the head once at the end. The caller's seq_cst
 * fence orders these stores before the sleeper check. A consumer killed inside the batch never
 * returned those messages: facing a single producer they are delivered again to its
 * replacement (the head still names them), as the one held message of a single pop is. */
static unsigned sc_pop_batch(struct abd_ring *r, void *bufs, size_t stride, size_t *lens,
                             unsigned n, int *err) ABD_NONBLOCKING
{
	bool spsc = abd__ring_spsc(r);
	unsigned done = 0, given = 0;
	int e = 0;
	while (done < n) {
		/* sc_claim's common case over the run, the handle's fields in locals (as
		 * sp_push_batch); the length is read once, checked, and used. Anything else (empty,
		 * a message too long for the stride or the slot, tombstones) is left to sc_claim. */
		unsigned char *slots = r->slots;
		uint64_t mask = r->mask, rstride = r->stride, cap = r->cap;
		size_t max = stride < r->slot_size ? stride : r->slot_size;
		uint64_t pos = r->sc_head;
		unsigned char *out = (unsigned char *)bufs + (size_t)done * stride;
		while (done < n) {
			struct abd__ring_slot *slot =
				(struct abd__ring_slot *)(slots + (size_t)(pos & mask) * rstride);
			if (abd__load(&slot->ctl, ACQUIRE) != abd__ctl((uint32_t)pos, ABD__SLOT_FULL, 0))
				break;
			uint32_t len = abd__load(&slot->len, RELAXED);
			if (len > max)
				break;
			copy_msg(out, slot->data, len);
			if (!spsc)
				abd__store(&slot->ctl,
				           abd__ctl((uint32_t)(pos + cap), ABD__SLOT_FREE, 0), RELEASE);
			pos++;
			given++;
			lens[done++] = len;
			out += stride;
		}
		r->sc_head = pos; /* counted as positions moved (stats_pending) */
		if (done == n)
			break;
		struct abd__ring_slot *s;
		e = sc_claim(r, stride, &s);
		if (e < 0)
			break;
		uint32_t len = abd__load(&s->len, RELAXED);
		/* read again: a peer may have changed it since the claim checked it */
		bool bad = len > r->slot_size || len > stride;
		if (!bad)
			copy_msg((unsigned char *)bufs + (size_t)done * stride, s->data, len);
		uint64_t h = r->sc_head;
		if (!spsc)
			abd__store(&s->ctl, abd__ctl((uint32_t)(h + r->cap), ABD__SLOT_FREE, 0), RELEASE);
		r->sc_head = h + 1; /* counted as a position moved (stats_pending) */
		given++;
		if (bad) {
			e = -EBADMSG; /* dropped, as pop_one does */
			break;
		}
		lens[done++] = len;
	}
	if (given) {
		abd__store(&r->h->head, r->sc_head, RELEASE);
		if (stats_pending(r, ABD_RING_WAIT_SPACE) >= ABD__STATS_FLUSH)
			abd__ring_flush_stats(r);
	}
	*err = e;
	return done;
}

static int pop_batch_nowake(struct abd_ring *r, void *bufs, size_t stride, size_t *lens,
                            unsigned n, bool *wake) ABD_NONBLOCKING
{
	if (!(r->roles & ABD_RING_CONSUMER))
		return -EPERM;
	if (r->sc_peeked || (r->streams & ABD_RING_CONSUMER))
		return -EBUSY;
	unsigned done = 0;
	int e = 0;
	if (r->modes & ABD_RING_SINGLE_CONSUMER) {
		done = sc_pop_batch(r, bufs, stride, lens, n, &e);
	} else {
		while (done < n) {
			e = pop_one(r, (unsigned char *)bufs + (size_t)done * stride, stride);
			if (e < 0)
				break;
			lens[done++] = (size_t)e;
		}
	}
	if (done) {
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		*wake = space_owed(r);
	}
	return done ? (int)done : e == -EAGAIN ? 0 : e;
}

int abd_ring_try_pop_batch(struct abd_ring *r, void *bufs, size_t stride, size_t *lens, unsigned n)
	ABD_NONBLOCKING
{
	abd__check(r && (n == 0 || (bufs && lens)) && n <= INT_MAX && stride <= INT_MAX, -EINVAL);
	bool wake = false;
	int e = pop_batch_nowake(r, bufs, stride, lens, n, &wake);
	if (abd__unlikely(wake))
		wake_n(r, ABD_RING_WAIT_SPACE, e > 0 ? (unsigned)e : 1);
	return e;
}

static int peek(struct abd_ring *r, const void **data, size_t *len) ABD_NONBLOCKING
{
	if (!(r->roles & ABD_RING_CONSUMER))
		return -EPERM;
	if (r->sc_peeked || (r->streams & ABD_RING_CONSUMER))
		return -EBUSY;
	struct abd__ring_slot *s;
	int e = take(r, SIZE_MAX, &s);
	if (e < 0)
		return e;
	uint32_t l = abd__load(&s->len, RELAXED);
	if (l > r->slot_size) {
		give_back(r, s);
		return -EBADMSG;
	}
	if (r->modes & ABD_RING_SINGLE_CONSUMER) {
		r->sc_peeked = true;
		abd__ring_fast_update(r);
	}
	r->held++;
	*data = s->data;
	*len = l;
	return 0;
}

int abd_ring_try_peek(struct abd_ring *r, const void **data, size_t *len) ABD_NONBLOCKING
{
	abd__check(r && data && len, -EINVAL);
	return peek(r, data, len);
}

static int release_nowake(struct abd_ring *r, const void *data, bool *wake) ABD_NONBLOCKING
{
	struct abd__ring_slot *s = slot_of(r, data);
	if (!s || !r->held)
		return -EINVAL;
	if (r->modes & ABD_RING_SINGLE_CONSUMER) {
		if (!r->sc_peeked || s != abd__slot(r, r->sc_head))
			return -EINVAL;
		r->sc_peeked = false;
		abd__ring_fast_update(r);
	}
	r->held--;
	int e = give_back(r, s);
	*wake = e == 0 && space_owed(r);
	return e;
}

int abd_ring_release(struct abd_ring *r, const void *data) ABD_NONBLOCKING
{
	abd__check(r && data, -EINVAL);
	bool wake = false;
	int e = release_nowake(r, data, &wake);
	if (abd__unlikely(wake))
		abd__ring_wake(r, ABD_RING_WAIT_SPACE);
	return e;
}

/* ---- Streams (include/abd/ring.h) -------------------------------------------------------
 * A stream is the single producer's (consumer's) short path hoisted into the caller: it holds
 * the position the handle would hold (sp_tail / sc_head; the producer's cached head) and the
 * flag of the handle's short path (push_fast_ok / pop_fast_ok). Its inline functions do what
 * sp_fast_push + fast_pushed (sc_fast_take) do, in the same order. Every out-of-line call below
 * hands the position back to the handle, runs the handle's own code for that role, and gives
 * the position back: the handle is the one state, the stream a copy of part of it that only
 * its thread moves. Positions go by value, so that the caller's stream stays in registers. */

static bool stream_open(const struct abd_ring *r, unsigned role) ABD_NONBLOCKING
{
	return r && (role == ABD_RING_PRODUCER || role == ABD_RING_CONSUMER) && (r->streams & role);
}

static struct abd__ring_step stream_step(const struct abd_ring *r, unsigned role, int ret)
	ABD_NONBLOCKING
{
	bool fast = role == ABD_RING_PRODUCER ? push_fast_ok(r) : pop_fast_ok(r);
	uint64_t pos = role == ABD_RING_PRODUCER ? r->sp_tail : r->sc_head;
	return (struct abd__ring_step){ pos, (uint64_t)(uint32_t)ret | (uint64_t)fast << 32 };
}

static const struct abd__ring_step stream_closed = { 0, (uint32_t)-EINVAL };

/* Hand the position to the handle and let its own forms run (stream off), and back. */
static void stream_enter(struct abd_ring *r, unsigned role, uint64_t pos, uint64_t head)
	ABD_NONBLOCKING
{
	if (role == ABD_RING_PRODUCER) {
		r->sp_tail = pos;
		r->sp_head_cache = head;
	} else {
		r->sc_head = pos;
	}
	r->streams &= ~role;
	abd__ring_fast_update(r);
}

static void stream_leave(struct abd_ring *r, unsigned role) ABD_NONBLOCKING
{
	r->streams |= role;
	abd__ring_fast_update(r);
}

int abd__ring_stream_open(struct abd_ring *r, unsigned role, unsigned abi,
                          struct abd_ring_stream *s)
{
	abd__check(s, -EINVAL);
	memset(s, 0, sizeof(*s));
	abd__check(r && (role == ABD_RING_PRODUCER || role == ABD_RING_CONSUMER), -EINVAL);
	if (abi != ABD_RING_STREAM_ABI)
		return -EPROTO;
	if (!(r->roles & role))
		return -EPERM;
	if (!abd__ring_spsc(r))
		return -EOPNOTSUPP;
	if ((r->streams & role) || (role == ABD_RING_PRODUCER ? r->sp_reserved : r->sc_peeked))
		return -EBUSY;
	s->ring = r;
	s->role = role;
	s->slots = r->slots;
	s->mask = r->mask;
	s->stride = r->stride;
	s->slot_size = r->slot_size;
	if (role == ABD_RING_PRODUCER) {
		s->shared_pos = &r->h->tail;
		s->peer_pos = &r->h->head;
		s->futex = &r->h->data_futex;
		s->head = r->sp_head_cache;
	} else {
		s->shared_pos = &r->h->head;
		s->futex = &r->h->space_futex;
	}
	stream_leave(r, role);
	struct abd__ring_step st = stream_step(r, role, 0);
	s->pos = st.pos;
	s->fast = (unsigned)(st.word >> 32);
	return 0;
}

struct abd__ring_step abd__ring_stream_push_slow(struct abd_ring *r, uint64_t pos, uint64_t head,
                                                 const void *data, size_t len) ABD_NONBLOCKING
{
	if (!stream_open(r, ABD_RING_PRODUCER))
		return stream_closed;
	stream_enter(r, ABD_RING_PRODUCER, pos, head);
	int e = abd_ring_try_push(r, data, len);
	stream_leave(r, ABD_RING_PRODUCER);
	return stream_step(r, ABD_RING_PRODUCER, e);
}

struct abd__ring_step abd__ring_stream_pop_slow(struct abd_ring *r, uint64_t pos, void *buf,
                                                size_t size) ABD_NONBLOCKING
{
	if (!stream_open(r, ABD_RING_CONSUMER))
		return stream_closed;
	stream_enter(r, ABD_RING_CONSUMER, pos, 0);
	int e = abd_ring_try_pop(r, buf, size);
	stream_leave(r, ABD_RING_CONSUMER);
	return stream_step(r, ABD_RING_CONSUMER, e);
}

/* After an inline publication that found a sleeper armed, or every 256 positions: what the
 * handle's short paths do then (fast_tail: the statistics, the wake owed). */
struct abd__ring_step abd__ring_stream_moved(struct abd_ring *r, unsigned role, uint64_t pos,
                                             uint64_t head) ABD_NONBLOCKING
{
	if (!stream_open(r, role))
		return stream_closed;
	stream_enter(r, role, pos, role == ABD_RING_PRODUCER ? head : 0);
	fast_tail(r, role == ABD_RING_PRODUCER ? ABD_RING_WAIT_DATA : ABD_RING_WAIT_SPACE, 0);
	stream_leave(r, role);
	return stream_step(r, role, 0);
}

int abd__ring_stream_close(struct abd_ring *r, unsigned role, uint64_t pos, uint64_t head)
{
	if (!stream_open(r, role))
		return -EINVAL;
	stream_enter(r, role, pos, role == ABD_RING_PRODUCER ? head : 0);
	abd__ring_flush_stats(r);
	return 0;
}
