/* SPDX-License-Identifier: MIT */
/* The lease table: who holds what, and the cleanup of a dead participant's lease.
 *
 * Lease i is an OFD write lock on byte 64 + i of the memfd, taken through the handle's own
 * open file description. The kernel drops it when the last descriptor of that description
 * closes, i.e. when the process dies, at any instruction; F_OFD_GETLK then reports the byte
 * unlocked. No heartbeat, no PID (PIDs mean nothing across PID namespaces). Cleanup of a dead
 * lease is done under that lease's lock, so two cleaners never undo a lease twice.
 *
 * The bottom of the ring's files: ring.c (the slots) and, above it, ring-wait.c (sleeping)
 * and ring-recover.c (the public scan) use it; it uses none of them. A cleanup that recovered
 * slots returns their number, and its caller wakes the sleepers. */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ring-internal.h"

/* The inode of our PID namespace, which a lease records (take_lease): a pid in a lease
 * means the same process to us only when it is ours too. 0 when unknown. */
uint64_t abd__ring_pidns(void)
{
	static uint64_t ino; /* one value per process: racing first calls store the same */
	uint64_t v = __atomic_load_n(&ino, __ATOMIC_RELAXED);
	if (!v) {
		struct stat st;
		v = stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
		__atomic_store_n(&ino, v, __ATOMIC_RELAXED);
	}
	return v;
}

int abd__ring_lock(int fd, int64_t byte, bool lock)
{
	struct flock fl = {
		.l_type = lock ? F_WRLCK : F_UNLCK,
		.l_whence = SEEK_SET,
		.l_start = byte,
		.l_len = 1,
	};
	return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* 1 alive, 0 dead, -errno. A lease number outside the table names nobody: dead. */
int abd__ring_lease_alive(struct abd_ring *r, unsigned lease)
{
	if (lease == r->lease)
		return 1;
	if (lease >= r->lease_count)
		return 0;
	struct flock fl = {
		.l_type = F_WRLCK,
		.l_whence = SEEK_SET,
		.l_start = ABD__RING_LOCK_LEASE0 + lease,
		.l_len = 1,
	};
	if (fcntl(r->lockfd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	return fl.l_type != F_UNLCK;
}

/* Withdraw a dead lease's announcements (its bits in the sleeping maps): a waker would
 * otherwise spend a wake on it. */
static void unsleep(struct abd_ring *r, unsigned i)
{
	uint64_t bit = UINT64_C(1) << (i % 64);
	__atomic_fetch_and(&r->h->data_sleeping[i / 64], ~bit, __ATOMIC_SEQ_CST);
	__atomic_fetch_and(&r->h->space_sleeping[i / 64], ~bit, __ATOMIC_SEQ_CST);
}

/* Give up every slot claimed under `lease`: a producer's claim becomes a tombstone that
 * consumers skip, a consumer's claim is freed (its message is lost with it). Each step is a
 * CAS from the exact claimed word, so a claim that completes meanwhile is left alone. */
/* The first slot at or after i whose control word may be nonzero: holes of the memfd (never
 * written: zero words, FREE with no lease, which no sweep touches) are skipped, so that a
 * sweep reads only pages that exist: reading a hole through the mapping would allocate it, and
 * a peer may hand over a sparse file as large as the attacher allows. *end: where the data
 * extent ends (slot index). Without SEEK_DATA (an error): every slot. */
static uint32_t data_slot(struct abd_ring *r, uint32_t i, uint32_t *end)
{
	*end = r->cap;
	uint64_t base = (uint64_t)(r->slots - r->base);
	off_t off = (off_t)(base + (uint64_t)i * r->stride);
	off_t d = lseek(r->lockfd, off, SEEK_DATA);
	if (d < 0)
		return errno == ENXIO ? r->cap : i; /* ENXIO: nothing but holes from here */
	if (d > off) /* a slot whose word starts before d lies in the hole */
		i = (uint32_t)(((uint64_t)d - base + r->stride - 1) / r->stride);
	off_t h = lseek(r->lockfd, d, SEEK_HOLE);
	if (h > d) {
		uint64_t e = ((uint64_t)h - base + r->stride - 1) / r->stride;
		*end = e < r->cap ? (uint32_t)e : r->cap;
	}
	return i < r->cap ? i : r->cap;
}

unsigned abd__ring_sweep(struct abd_ring *r, unsigned lease)
{
	unsigned n = 0;
	for (uint32_t i = 0, end = 0; i < r->cap; i++) {
		if (i >= end) {
			i = data_slot(r, i, &end);
			if (i >= r->cap)
				break;
		}
		struct abd__ring_slot *s = abd__slot(r, i);
		uint64_t c = abd__load(&s->ctl, ACQUIRE);
		if (abd__ctl_lease(c) != lease)
			continue;
		uint32_t seq = abd__ctl_seq(c);
		if (abd__ctl_state(c) == ABD__SLOT_WRITING &&
		    abd__cas(&s->ctl, &c, abd__ctl(seq, ABD__SLOT_TOMB, 0), SEQ_CST))
			n++;
		else if (abd__ctl_state(c) == ABD__SLOT_READING &&
		         abd__cas(&s->ctl, &c, abd__ctl(seq + r->cap, ABD__SLOT_FREE, 0), SEQ_CST))
			n++;
	}
	if (n)
		abd__add(&r->h->recovered, n, RELAXED);
	return n; /* the caller wakes the sleepers (abd__ring_wake_all, ring.c) */
}

/* Called with lease i's lock held by us and its previous holder gone. */
static unsigned cleanup(struct abd_ring *r, unsigned i)
{
	struct abd__ring_lease *l = &r->leases[i];
	if (abd__load(&l->state, ACQUIRE) == ABD__LEASE_FREE)
		return 0;
	unsleep(r, i);
	unsigned n = abd__ring_sweep(r, i);
	abd__store(&l->state, ABD__LEASE_FREE, RELEASE);
	return n;
}

int abd__ring_take_lease(struct abd_ring *r)
{
	for (unsigned i = 0; i < r->lease_count; i++) {
		int e = abd__ring_lock(r->lockfd, ABD__RING_LOCK_LEASE0 + i, true);
		if (e == -EAGAIN || e == -EACCES)
			continue;
		if (e < 0)
			return e;
		unsigned n = cleanup(r, i); /* a dead holder's leftovers */
		struct abd__ring_lease *l = &r->leases[i];
		abd__store(&l->pid, (uint32_t)getpid(), RELAXED);
		abd__store(&l->pidns, abd__ring_pidns(), RELAXED);
		abd__store(&l->roles, r->roles, RELAXED);
		abd__add(&l->gen, 1, RELAXED);
		abd__store(&l->state, ABD__LEASE_HELD, RELEASE);
		r->lease = i;
		return (int)n;
	}
	return -EUSERS;
}

void abd__ring_drop_lease(struct abd_ring *r)
{
	struct abd__ring_lease *l = &r->leases[r->lease];
	unsleep(r, r->lease);
	abd__store(&l->state, ABD__LEASE_FREE, RELEASE);
	abd__ring_lock(r->lockfd, ABD__RING_LOCK_LEASE0 + r->lease, false);
}

/* Recover lease `lease` if its holder is dead; returns slots recovered (0 if alive). */
int abd__ring_reap_lease(struct abd_ring *r, unsigned lease)
{
	if (lease == r->lease)
		return 0;
	if (lease >= r->lease_count)
		return (int)abd__ring_sweep(r, lease); /* garbage from a peer: nobody will commit it */
	int e = abd__ring_lock(r->lockfd, ABD__RING_LOCK_LEASE0 + lease, true);
	if (e == -EAGAIN || e == -EACCES)
		return 0; /* alive (or being reaped by someone else right now) */
	if (e < 0)
		return e;
	unsigned n = cleanup(r, lease);
	abd__ring_lock(r->lockfd, ABD__RING_LOCK_LEASE0 + lease, false);
	return (int)n;
}

