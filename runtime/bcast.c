/* SPDX-License-Identifier: MIT */
/* Broadcast channels (bcast-internal.h; docs/broadcast.md is the specification).
 *
 * The data memfd is the publisher's alone: sealed F_SEAL_FUTURE_WRITE after the publisher
 * mapped it, so that subscribers can only map it read-only. Whatever a subscriber reads there
 * (slot sequences, the head, the closed word) was written by the publisher. The control memfd
 * is shared by everyone: a subscriber's cursor, the chunk it holds and the wake words there
 * are hints the publisher bounds (a cursor ahead of the head counts as the head, a chunk
 * number outside the pool as none, a laggard's lease is checked before it holds the
 * publisher back). */
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <abd/probe.h>

#include "bcast-internal.h"
#include "ring-internal.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#define CTL_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
#define DATA_SEALS (CTL_SEALS | F_SEAL_FUTURE_WRITE)
#define LOCK_PUBLISHER 0
#define LOCK_ENTRY0 64
/* locate(): overwritten messages skipped in one call before it gives up (-EAGAIN): a
 * publisher lapping the reader that fast leaves it nothing to read anyway */
#define LOCATE_TRIES 16
/* a publisher waiting for room re-checks the laggards' leases this often (doubling) */
#define SPACE_NAP_FIRST_NS (1000ll * 1000)
#define SPACE_NAP_MAX_NS (16ll * 1000 * 1000)

struct bc_hdr {
	char magic[8];
	uint32_t version;
	uint32_t header_size;
	uint8_t nonce[16];
	uint32_t capacity;
	uint32_t subscribers;
	uint32_t history;
	uint32_t policy;
	uint64_t chunk_size;
	uint32_t chunk_count;
	uint32_t slot_stride;
	uint64_t total_size;
	uint64_t slots_offset;
	uint64_t pool_offset;
	uint64_t checksum; /* FNV-1a 64 of bytes 0..87 */
	uint8_t pad0[128 - 96];
	/* line 2: the publisher's position and state */
	uint64_t head;   /* messages published */
	uint32_t head32; /* futex word: bumped with every publication and at close */
	uint32_t closed; /* 0 open, 1 the publisher withdrew */
	uint8_t pad1[48];
	/* line 3: statistics */
	uint64_t wakes;
	uint64_t bytes; /* payload bytes published */
	uint8_t pad2[48];
	uint8_t reserved[512 - 256];
};
_Static_assert(sizeof(struct bc_hdr) == ABD__BCAST_HEADER_SIZE, "data header");
_Static_assert(offsetof(struct bc_hdr, nonce) == 16, "nonce where acquire reads it");
_Static_assert(offsetof(struct bc_hdr, total_size) == 64, "size where acquire reads it");
_Static_assert(offsetof(struct bc_hdr, head) == 128, "head on line 2");
_Static_assert(offsetof(struct bc_hdr, checksum) == ABD__BCAST_CHECKSUM_OFF, "checksum");

struct bc_slot {
	uint64_t seq; /* message number + 1 while the slot holds it; 0 while rewritten */
	uint32_t len;
	uint32_t chunk;
	uint64_t stamp; /* CLOCK_MONOTONIC ns at send */
	uint64_t pad;
};
_Static_assert(sizeof(struct bc_slot) == ABD__BCAST_SLOT_SIZE, "slot");

struct bc_ctl {
	char magic[8];
	uint32_t version;
	uint32_t subscribers;
	uint8_t nonce[16];
	uint8_t pad0[32];
	uint64_t sleepers; /* line 1: bit i: subscriber i waits for data */
	uint8_t pad1[56];
	uint64_t holding; /* line 2: bit i: subscriber i holds a chunk in place */
	uint8_t pad2[56];
	uint32_t joins; /* line 3: bumped by every subscriber that joins */
	uint8_t pad3[60];
	uint32_t space_waiting; /* line 4: the publisher waits for room */
	uint32_t space_futex;
	uint8_t pad4[56];
	uint8_t reserved[512 - 320];
};
_Static_assert(sizeof(struct bc_ctl) == ABD__BCAST_CTL_HEADER, "control header");

enum { ENTRY_FREE = 0, ENTRY_HELD = 1 };
struct bc_entry {
	uint32_t state;
	uint32_t pid;
	uint32_t gen;
	uint32_t held;   /* chunk + 1 read in place, 0 none */
	uint64_t cursor; /* the next message the subscriber reads: it is done with the ones before */
	uint64_t lost;   /* informational */
	uint8_t pad[32];
};
_Static_assert(sizeof(struct bc_entry) == ABD__BCAST_ENTRY_SIZE, "entry");

struct abd__bcast {
	struct abd__bcast_geom g;
	uint64_t chunk_size;
	uint32_t chunk_count, mask;
	uint8_t nonce[16];
	unsigned char *data;
	size_t data_size;
	struct bc_hdr *h;
	struct bc_slot *slots;
	unsigned char *pool;
	struct bc_ctl *c;
	struct bc_entry *e;
	size_t ctl_size;
	int data_fd, ctl_fd, lockfd;
	bool publisher, observer, use_futex;
	/* publisher */
	uint64_t head;
	uint32_t *slot_chunk; /* chunk of each slot, UINT32_MAX none */
	uint32_t *spare;      /* chunks no slot refers to */
	uint32_t nspare;
	uint32_t loan; /* chunk + 1 */
	uint64_t bound; /* room while head < bound (BLOCK) */
	bool bound_valid;
	uint32_t joins_seen;
	int64_t space_nap;
	bool space_announced;
	/* subscriber */
	unsigned idx;
	uint64_t pos, lossless_from, lost;
	bool closed_local, peeked, sleeping;
};

static uint64_t checksum(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * UINT64_C(0x100000001b3);
	return h;
}

static uint64_t round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

/* The layout a geometry implies; false when it is out of range. */
static bool layout(const struct abd__bcast_geom *g, uint64_t *chunk_size, uint32_t *chunks,
                   uint64_t *pool_off, uint64_t *total)
{
	if (g->capacity < 2 || g->capacity > ABD__BCAST_MAX_CAPACITY ||
	    (g->capacity & (g->capacity - 1)) || g->subscribers < 1 ||
	    g->subscribers > ABD__BCAST_MAX_SUBSCRIBERS || g->history >= g->capacity ||
	    g->policy > ABD__BCAST_OVERWRITE || g->max_payload < 1 ||
	    g->max_payload > ABD__BCAST_MAX_PAYLOAD)
		return false;
	*chunk_size = round_up(g->max_payload, 64);
	/* a chunk in each slot, one held by each subscriber, one to write the next message in */
	*chunks = g->capacity + g->subscribers + 1;
	*pool_off = round_up(ABD__BCAST_HEADER_SIZE + (uint64_t)g->capacity * ABD__BCAST_SLOT_SIZE,
	                     4096);
	*total = *pool_off + *chunk_size * *chunks;
	return true;
}

static size_t ctl_size_for(uint32_t subscribers)
{
	return ABD__BCAST_CTL_HEADER + (size_t)subscribers * ABD__BCAST_ENTRY_SIZE;
}

static int reopen_private(int fd)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	int r = open(path, O_RDWR | O_CLOEXEC);
	return r < 0 ? -errno : r;
}

static struct abd__bcast *bc_alloc(void)
{
	struct abd__bcast *b = calloc(1, sizeof(*b));
	if (b)
		b->data_fd = b->ctl_fd = b->lockfd = -1;
	return b;
}

static void futex_wake(const uint32_t *word, int n)
{
	syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);
}

/* ------------------------------------------------------------------ publisher -- */

static int memfd(const char *name)
{
	unsigned f = MFD_CLOEXEC | MFD_ALLOW_SEALING;
	if (abd_probe_has(ABD_FEAT_MFD_NOEXEC_SEAL) == 1)
		f |= MFD_NOEXEC_SEAL;
	int fd = memfd_create(name, f);
	if (fd < 0 && (f & MFD_NOEXEC_SEAL) && errno == EINVAL)
		fd = memfd_create(name, f & ~MFD_NOEXEC_SEAL);
	return fd < 0 ? -errno : fd;
}

int abd__bcast_new(const struct abd__bcast_geom *g, const uint8_t *nonce,
                   struct abd__bcast **out)
{
	abd__check(out && g && nonce, -EINVAL);
	*out = NULL;
	uint64_t chunk_size, pool_off, total;
	uint32_t chunks;
	abd__check(layout(g, &chunk_size, &chunks, &pool_off, &total), -EINVAL);
	if (total > (uint64_t)SIZE_MAX / 2)
		return -EFBIG;
	struct abd__bcast *b = bc_alloc();
	if (!b)
		return -ENOMEM;
	int e = 0;
	b->g = *g;
	b->publisher = true;
	b->chunk_size = chunk_size;
	b->chunk_count = chunks;
	b->mask = g->capacity - 1;
	memcpy(b->nonce, nonce, sizeof(b->nonce));
	b->use_futex = abd_probe_has(ABD_FEAT_FUTEX) == 1;
	b->slot_chunk = malloc(sizeof(uint32_t) * g->capacity);
	b->spare = malloc(sizeof(uint32_t) * chunks);
	if (!b->slot_chunk || !b->spare) {
		e = -ENOMEM;
		goto fail;
	}
	for (uint32_t i = 0; i < g->capacity; i++)
		b->slot_chunk[i] = UINT32_MAX;
	for (uint32_t i = 0; i < chunks; i++)
		b->spare[i] = chunks - 1 - i; /* chunk 0 first */
	b->nspare = chunks;

	/* the data memfd: mapped writable, then sealed against every later writable mapping */
	if ((b->data_fd = memfd("abd-bcast")) < 0) {
		e = b->data_fd;
		goto fail;
	}
	if (ftruncate(b->data_fd, (off_t)total) < 0)
		goto fail_errno;
	b->data_size = (size_t)total;
	void *m = mmap(NULL, b->data_size, PROT_READ | PROT_WRITE, MAP_SHARED, b->data_fd, 0);
	if (m == MAP_FAILED)
		goto fail_errno;
	b->data = m;
	b->h = m;
	b->slots = (struct bc_slot *)(b->data + ABD__BCAST_HEADER_SIZE);
	b->pool = b->data + pool_off;
	struct bc_hdr *h = b->h;
	h->version = ABD__BCAST_VERSION;
	h->header_size = ABD__BCAST_HEADER_SIZE;
	memcpy(h->nonce, nonce, sizeof(h->nonce));
	h->capacity = g->capacity;
	h->subscribers = g->subscribers;
	h->history = g->history;
	h->policy = g->policy;
	h->chunk_size = chunk_size;
	h->chunk_count = chunks;
	h->slot_stride = ABD__BCAST_SLOT_SIZE;
	h->total_size = total;
	h->slots_offset = ABD__BCAST_HEADER_SIZE;
	h->pool_offset = pool_off;
	memcpy(h->magic, ABD__BCAST_MAGIC, 8);
	h->checksum = checksum(h, offsetof(struct bc_hdr, checksum));
	if (fcntl(b->data_fd, F_ADD_SEALS, DATA_SEALS) < 0) {
		e = errno == EINVAL ? -EOPNOTSUPP : -errno; /* no F_SEAL_FUTURE_WRITE (< 5.1) */
		goto fail;
	}

	/* the control memfd: everyone's */
	if ((b->ctl_fd = memfd("abd-bcast-ctl")) < 0) {
		e = b->ctl_fd;
		goto fail;
	}
	b->ctl_size = ctl_size_for(g->subscribers);
	if (ftruncate(b->ctl_fd, (off_t)b->ctl_size) < 0)
		goto fail_errno;
	m = mmap(NULL, b->ctl_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, b->ctl_fd, 0);
	if (m == MAP_FAILED)
		goto fail_errno;
	b->c = m;
	b->e = (struct bc_entry *)((unsigned char *)m + ABD__BCAST_CTL_HEADER);
	memcpy(b->c->magic, "ABDBCTL1", 8);
	b->c->version = ABD__BCAST_VERSION;
	b->c->subscribers = g->subscribers;
	memcpy(b->c->nonce, nonce, sizeof(b->c->nonce));
	if (fcntl(b->ctl_fd, F_ADD_SEALS, CTL_SEALS) < 0)
		goto fail_errno;
	/* the publisher's lease, on a description of its own (never the one handed out) */
	if ((b->lockfd = reopen_private(b->ctl_fd)) < 0) {
		e = b->lockfd;
		goto fail;
	}
	if ((e = abd__ring_lock(b->lockfd, LOCK_PUBLISHER, true)) < 0)
		goto fail;
	*out = b;
	return 0;
fail_errno:
	e = -errno;
fail:
	abd__bcast_free(b);
	return e;
}

static int entry_alive(struct abd__bcast *b, unsigned i)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET,
		            .l_start = LOCK_ENTRY0 + i, .l_len = 1 };
	if (fcntl(b->lockfd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	return fl.l_type != F_UNLCK;
}

/* Empty entry i (its lock held by the caller: its holder is gone). */
static void entry_clear(struct abd__bcast *b, unsigned i)
{
	uint64_t bit = UINT64_C(1) << i;
	struct bc_entry *en = &b->e[i];
	abd__store(&en->held, 0u, RELEASE);
	__atomic_fetch_and(&b->c->holding, ~bit, __ATOMIC_SEQ_CST);
	__atomic_fetch_and(&b->c->sleepers, ~bit, __ATOMIC_SEQ_CST);
	abd__store(&en->state, (uint32_t)ENTRY_FREE, RELEASE);
}

/* A dead subscriber's entry: reclaimed under its lock. 1 reclaimed, 0 alive. */
static int entry_reap(struct abd__bcast *b, unsigned i)
{
	int e = abd__ring_lock(b->lockfd, LOCK_ENTRY0 + i, true);
	if (e < 0)
		return 0; /* alive (or being reaped by someone else) */
	entry_clear(b, i);
	abd__ring_lock(b->lockfd, LOCK_ENTRY0 + i, false);
	return 1;
}

/* BLOCK: the lowest cursor of the live subscribers; dead laggards are reclaimed. */
static bool rescan(struct abd__bcast *b)
{
	uint64_t n = b->head, min = n;
	for (unsigned i = 0; i < b->g.subscribers; i++) {
		struct bc_entry *en = &b->e[i];
		if (abd__load(&en->state, ACQUIRE) != ENTRY_HELD)
			continue;
		uint64_t cur = abd__load(&en->cursor, SEQ_CST);
		if (cur > n)
			cur = n; /* a cursor ahead of the head: caught up */
		if (cur + b->g.capacity <= n && entry_alive(b, i) == 0 && entry_reap(b, i))
			continue; /* a dead laggard holds nobody back */
		if (cur < min)
			min = cur;
	}
	b->bound = min + b->g.capacity;
	b->bound_valid = true;
	return n < b->bound;
}

static bool room(struct abd__bcast *b)
{
	if (b->g.policy == ABD__BCAST_OVERWRITE)
		return true;
	uint32_t j = abd__load(&b->c->joins, SEQ_CST);
	if (b->bound_valid && j == b->joins_seen && b->head < b->bound)
		return true;
	b->joins_seen = j;
	return rescan(b);
}

/* A chunk no slot refers to and no live subscriber holds: among the spares (at least
 * subscribers + 1 of them), at most one held per entry, so one is always free. */
static int pick_chunk(struct abd__bcast *b)
{
	uint32_t held[ABD__BCAST_MAX_SUBSCRIBERS];
	unsigned nheld = 0;
	if (abd__load(&b->c->holding, SEQ_CST))
		for (unsigned i = 0; i < b->g.subscribers; i++) {
			uint32_t x = abd__load(&b->e[i].held, SEQ_CST);
			if (x && x - 1 < b->chunk_count)
				held[nheld++] = x - 1;
		}
	for (uint32_t k = b->nspare; k-- > 0;) {
		uint32_t c = b->spare[k];
		bool busy = false;
		for (unsigned j = 0; j < nheld && !busy; j++)
			busy = held[j] == c;
		if (busy)
			continue;
		b->spare[k] = b->spare[--b->nspare];
		return (int)c;
	}
	return -EAGAIN; /* cannot happen: nspare > subscribers */
}

int abd__bcast_loan(struct abd__bcast *b, size_t size, void **buf)
{
	abd__check(b && buf && b->publisher, -EINVAL);
	if (b->loan)
		return -EBUSY;
	if (size > b->g.max_payload)
		return -EMSGSIZE;
	if (!room(b))
		return -EAGAIN;
	int c = pick_chunk(b);
	if (c < 0)
		return c;
	b->loan = (uint32_t)c + 1;
	*buf = b->pool + (uint64_t)c * b->chunk_size;
	return 0;
}

static int loaned(const struct abd__bcast *b, const void *buf)
{
	if (!b->loan)
		return -EINVAL;
	uint32_t c = b->loan - 1;
	return buf == b->pool + (uint64_t)c * b->chunk_size ? (int)c : -EINVAL;
}

int abd__bcast_unloan(struct abd__bcast *b, const void *buf)
{
	abd__check(b && b->publisher, -EINVAL);
	int c = loaned(b, buf);
	if (c < 0)
		return c;
	b->spare[b->nspare++] = (uint32_t)c;
	b->loan = 0;
	return 0;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int abd__bcast_send(struct abd__bcast *b, const void *buf, size_t len)
{
	abd__check(b && b->publisher, -EINVAL);
	int c = loaned(b, buf);
	if (c < 0)
		return c;
	if (len > b->g.max_payload)
		return -EMSGSIZE;
	uint64_t n = b->head;
	uint32_t k = (uint32_t)(n & b->mask);
	struct bc_slot *s = &b->slots[k];
	/* seqlock: readers of the old message see 0 (or the new number) after their copy */
	abd__store(&s->seq, UINT64_C(0), SEQ_CST);
	abd__store(&s->len, (uint32_t)len, RELAXED);
	abd__store(&s->chunk, (uint32_t)c, RELAXED);
	abd__store(&s->stamp, mono_ns(), RELAXED);
	abd__store(&s->seq, n + 1, RELEASE);
	if (b->slot_chunk[k] != UINT32_MAX)
		b->spare[b->nspare++] = b->slot_chunk[k];
	b->slot_chunk[k] = (uint32_t)c;
	b->loan = 0;
	b->head = n + 1;
	abd__store(&b->h->bytes, abd__load(&b->h->bytes, RELAXED) + len, RELAXED);
	abd__store(&b->h->head, n + 1, RELEASE);
	abd__store(&b->h->head32, (uint32_t)(n + 1), SEQ_CST);
	if (abd__load(&b->c->sleepers, SEQ_CST)) {
		futex_wake(&b->h->head32, INT_MAX);
		abd__add(&b->h->wakes, 1, RELAXED);
	}
	return 0;
}

int abd__bcast_try_publish(struct abd__bcast *b, const void *data, size_t len)
{
	abd__check(b && b->publisher && (data || !len), -EINVAL);
	void *buf;
	int r = abd__bcast_loan(b, len, &buf);
	if (r < 0)
		return r;
	if (len)
		memcpy(buf, data, len);
	return abd__bcast_send(b, buf, len);
}

void abd__bcast_close(struct abd__bcast *b)
{
	if (!b || !b->publisher || abd__load(&b->h->closed, RELAXED))
		return;
	abd__store(&b->h->closed, 1u, RELEASE);
	abd__add(&b->h->head32, 1u, SEQ_CST);
	futex_wake(&b->h->head32, INT_MAX);
}

int abd__bcast_publisher_alive(struct abd__bcast *b)
{
	abd__check(b, -EINVAL);
	if (b->publisher)
		return 1;
	if (b->lockfd < 0)
		return -EINVAL;
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET,
		            .l_start = LOCK_PUBLISHER, .l_len = 1 };
	if (fcntl(b->lockfd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	return fl.l_type != F_UNLCK;
}

/* ------------------------------------------------------------------ attach -- */

/* seals first, then the size (only a sealed file's size stays) */
static int sealed_size(int fd, int need, uint64_t *size)
{
	int seals = fcntl(fd, F_GET_SEALS);
	struct stat st;
	if (seals < 0) {
		if (errno != EINVAL)
			return -errno;
		if (fstat(fd, &st) < 0)
			return -errno;
		return S_ISREG(st.st_mode) ? -EPROTO : -EINVAL;
	}
	if ((seals & need) != need)
		return -EPROTO;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	*size = (uint64_t)st.st_size;
	return 0;
}

static int validate(struct abd__bcast *b, const struct bc_hdr *h, uint64_t size)
{
	if (memcmp(h->magic, ABD__BCAST_MAGIC, 8) != 0 || h->version != ABD__BCAST_VERSION ||
	    h->header_size != ABD__BCAST_HEADER_SIZE ||
	    h->checksum != checksum(h, offsetof(struct bc_hdr, checksum)))
		return -EPROTO;
	struct abd__bcast_geom g = { .capacity = h->capacity, .subscribers = h->subscribers,
		                     .history = h->history, .policy = h->policy };
	/* max_payload is not stored: the chunk size is what bounds a message */
	g.max_payload = h->chunk_size;
	uint64_t cs, po, total;
	uint32_t chunks;
	if (!layout(&g, &cs, &chunks, &po, &total) || cs != h->chunk_size ||
	    chunks != h->chunk_count || po != h->pool_offset || total != h->total_size ||
	    total != size || h->slots_offset != ABD__BCAST_HEADER_SIZE ||
	    h->slot_stride != ABD__BCAST_SLOT_SIZE)
		return -EPROTO;
	b->g = g;
	b->chunk_size = cs;
	b->chunk_count = chunks;
	b->mask = g.capacity - 1;
	memcpy(b->nonce, h->nonce, sizeof(b->nonce));
	return 0;
}

/* Take a free entry (or a dead subscriber's) and announce ourselves in it. */
static int join(struct abd__bcast *b)
{
	for (unsigned i = 0; i < b->g.subscribers; i++) {
		int e = abd__ring_lock(b->lockfd, LOCK_ENTRY0 + i, true);
		if (e == -EAGAIN || e == -EACCES)
			continue;
		if (e < 0)
			return e;
		entry_clear(b, i); /* a dead holder's leftovers */
		b->idx = i;
		struct bc_entry *en = &b->e[i];
		uint64_t h0 = abd__load(&b->h->head, ACQUIRE);
		uint64_t start = h0 > b->g.history ? h0 - b->g.history : 0;
		abd__store(&en->cursor, start, SEQ_CST);
		abd__store(&en->lost, UINT64_C(0), RELAXED);
		abd__store(&en->pid, (uint32_t)getpid(), RELAXED);
		abd__add(&en->gen, 1u, RELAXED);
		abd__store(&en->state, (uint32_t)ENTRY_HELD, SEQ_CST);
		abd__add(&b->c->joins, 1u, SEQ_CST);
		/* from here on the publisher counts our cursor: what it overwrites before is
		 * history it could not keep, skipped without counting a loss */
		b->lossless_from = abd__load(&b->h->head, SEQ_CST);
		b->pos = start;
		return 0;
	}
	return -EUSERS;
}

int abd__bcast_attach(int data_fd, int ctl_fd, const uint8_t *nonce,
                      const struct abd__bcast_geom *expect, uint64_t max_map, unsigned flags,
                      struct abd__bcast **out)
{
	abd__check(out, -EINVAL);
	*out = NULL;
	abd__check(flags == ABD__BCAST_SUBSCRIBER || flags == ABD__BCAST_OBSERVER, -EINVAL);
	abd__check(data_fd >= 0 && (flags == ABD__BCAST_OBSERVER || ctl_fd >= 0), -EINVAL);
	/* (an observer given the control file maps it read-only, for the statistics) */
	if (!max_map)
		max_map = ABD__BCAST_ATTACH_MAX;
	uint64_t size;
	int e = sealed_size(data_fd, DATA_SEALS, &size);
	if (e < 0)
		return e;
	if (size < ABD__BCAST_HEADER_SIZE)
		return -EPROTO;
	if (size > max_map || size > (uint64_t)SIZE_MAX / 2)
		return -EFBIG;
	struct abd__bcast *b = bc_alloc();
	if (!b)
		return -ENOMEM;
	b->observer = flags == ABD__BCAST_OBSERVER;
	b->use_futex = abd_probe_has(ABD_FEAT_FUTEX) == 1;
	b->data_size = (size_t)size;
	/* read-only: the seal refuses anything else. Not pre-faulted: the peer chose the size */
	void *m = mmap(NULL, b->data_size, PROT_READ, MAP_SHARED, data_fd, 0);
	if (m == MAP_FAILED)
		goto fail_errno;
	b->data = m;
	b->h = m;
	struct bc_hdr copy;
	memcpy(&copy, b->h, sizeof(copy));
	if ((e = validate(b, &copy, size)) < 0)
		goto fail;
	if (expect && (expect->capacity != b->g.capacity || expect->subscribers != b->g.subscribers ||
	               expect->history != b->g.history || expect->policy != b->g.policy ||
	               round_up(expect->max_payload, 64) != b->chunk_size)) {
		e = -EPROTO; /* not the geometry the opener was told of */
		goto fail;
	}
	if (nonce && memcmp(nonce, b->nonce, sizeof(b->nonce)) != 0) {
		e = -ESTALE;
		goto fail;
	}
	if (expect)
		b->g.max_payload = expect->max_payload;
	b->slots = (struct bc_slot *)(b->data + ABD__BCAST_HEADER_SIZE);
	b->pool = b->data + copy.pool_offset;
	if (b->observer && ctl_fd < 0) {
		*out = b;
		return 0;
	}
	uint64_t csize;
	if ((e = sealed_size(ctl_fd, CTL_SEALS, &csize)) < 0)
		goto fail;
	if (csize != ctl_size_for(b->g.subscribers)) {
		e = -EPROTO;
		goto fail;
	}
	b->ctl_size = (size_t)csize;
	/* an observer only reads it (statistics: the live subscribers) */
	m = mmap(NULL, b->ctl_size, b->observer ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED,
	         ctl_fd, 0);
	if (m == MAP_FAILED)
		goto fail_errno;
	b->c = m;
	b->e = (struct bc_entry *)((unsigned char *)m + ABD__BCAST_CTL_HEADER);
	if ((b->lockfd = reopen_private(ctl_fd)) < 0) {
		e = b->lockfd;
		goto fail;
	}
	if (!b->observer && (e = join(b)) < 0)
		goto fail;
	*out = b;
	return 0;
fail_errno:
	e = -errno;
fail:
	abd__bcast_free(b);
	return e;
}

static void wake_publisher(struct abd__bcast *b)
{
	if (abd__load(&b->c->space_waiting, SEQ_CST) &&
	    __atomic_exchange_n(&b->c->space_waiting, 0u, __ATOMIC_SEQ_CST)) {
		abd__add(&b->c->space_futex, 1u, SEQ_CST);
		futex_wake(&b->c->space_futex, 1);
	}
}

void abd__bcast_free(struct abd__bcast *b)
{
	if (!b)
		return;
	if (b->publisher && b->h && b->data_fd >= 0)
		abd__bcast_close(b);
	if (!b->publisher && !b->observer && b->e && b->lockfd >= 0 &&
	    abd__load(&b->e[b->idx].pid, RELAXED) == (uint32_t)getpid()) {
		entry_clear(b, b->idx);
		abd__ring_lock(b->lockfd, LOCK_ENTRY0 + b->idx, false);
		wake_publisher(b); /* one laggard less */
	}
	if (b->data)
		munmap(b->data, b->data_size);
	if (b->c)
		munmap(b->c, b->ctl_size);
	abd__close(b->data_fd);
	abd__close(b->ctl_fd);
	abd__close(b->lockfd);
	free(b->slot_chunk);
	free(b->spare);
	free(b);
}

int abd__bcast_data_fd(const struct abd__bcast *b)
{
	return b ? b->data_fd : -EINVAL;
}

int abd__bcast_ctl_fd(const struct abd__bcast *b)
{
	return b ? b->ctl_fd : -EINVAL;
}

const struct abd__bcast_geom *abd__bcast_geom(const struct abd__bcast *b)
{
	return &b->g;
}

bool abd__bcast_is_publisher(const struct abd__bcast *b)
{
	return b->publisher;
}

/* ------------------------------------------------------------------ subscriber -- */

/* The messages [pos, np) are gone: count those the subscriber was owed. */
static void skip_to(struct abd__bcast *b, uint64_t np)
{
	uint64_t from = b->pos > b->lossless_from ? b->pos : b->lossless_from;
	if (np > from)
		b->lost += np - from;
	b->pos = np;
	abd__store(&b->e[b->idx].lost, b->lost, RELAXED);
}

/* The message at pos was overwritten: go on at the oldest one the publisher still keeps. */
static void overrun(struct abd__bcast *b)
{
	uint64_t head = abd__load(&b->h->head, ACQUIRE);
	uint64_t np = head >= b->g.capacity ? head - b->g.capacity + 1 : 0;
	skip_to(b, np > b->pos ? np : b->pos + 1);
}

static void advance(struct abd__bcast *b)
{
	b->pos++;
	abd__store(&b->e[b->idx].cursor, b->pos, SEQ_CST);
	wake_publisher(b);
}

static bool closed(const struct abd__bcast *b)
{
	return b->closed_local || abd__load(&b->h->closed, ACQUIRE);
}

/* Find the message at pos: 1 with its slot (length and chunk checked), 0 none yet, or
 * -EBADMSG (a slot the publisher garbled: skipped). Overwritten ones are skipped, counted. */
static int locate(struct abd__bcast *b, struct bc_slot **sp, uint32_t *len, uint32_t *chunk)
{
	for (int tries = 0; tries < LOCATE_TRIES; tries++) {
		struct bc_slot *s = &b->slots[b->pos & b->mask];
		uint64_t q = abd__load(&s->seq, ACQUIRE);
		if (q != b->pos + 1) {
			uint64_t head = abd__load(&b->h->head, ACQUIRE);
			if (head <= b->pos)
				return 0;
			/* committed: the slot's number was stored before the head we saw */
			q = abd__load(&s->seq, ACQUIRE);
			if (q != b->pos + 1) {
				overrun(b);
				continue;
			}
		}
		*len = abd__load(&s->len, RELAXED);
		*chunk = abd__load(&s->chunk, RELAXED);
		*sp = s;
		if (*chunk >= b->chunk_count || *len > b->chunk_size) {
			advance(b);
			return -EBADMSG;
		}
		return 1;
	}
	return 0;
}

static int nothing(struct abd__bcast *b)
{
	if (!closed(b))
		return -EAGAIN;
	/* the closed word follows the last head the publisher stored */
	return abd__load(&b->h->head, ACQUIRE) > b->pos ? -EAGAIN : -EPIPE;
}

/* The next message: copied into buf (peek NULL), or held in place (*peek, *peek_len). */
static int next_msg(struct abd__bcast *b, void *buf, size_t size, const void **peek,
                    size_t *peek_len)
{
	if (b->peeked)
		return -EBUSY;
	uint64_t bit = UINT64_C(1) << b->idx;
	struct bc_entry *en = &b->e[b->idx];
	for (int tries = 0; tries < LOCATE_TRIES; tries++) {
		struct bc_slot *s;
		uint32_t len, chunk;
		int r = locate(b, &s, &len, &chunk);
		if (r < 0)
			return r;
		if (r == 0) {
			r = nothing(b);
			if (r == -EAGAIN && closed(b))
				continue; /* the last messages landed as we looked */
			return r;
		}
		const unsigned char *p = b->pool + (uint64_t)chunk * b->chunk_size;
		if (peek) {
			/* hold the chunk, then check that the slot still names it: the publisher
			 * reuses a chunk only after it looked at the holders (seq_cst both sides) */
			__atomic_fetch_or(&b->c->holding, bit, __ATOMIC_SEQ_CST);
			abd__store(&en->held, chunk + 1, SEQ_CST);
			if (abd__load(&s->seq, SEQ_CST) != b->pos + 1) {
				abd__store(&en->held, 0u, RELEASE);
				overrun(b);
				continue;
			}
			*peek = p;
			*peek_len = len;
			b->peeked = true;
			return 0;
		}
		if (len > size)
			return -EMSGSIZE;
		memcpy(buf, p, len);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (abd__load(&s->seq, RELAXED) != b->pos + 1) {
			overrun(b); /* overwritten while we copied: the copy is void */
			continue;
		}
		advance(b);
		return (int)len;
	}
	return -EAGAIN;
}

int abd__bcast_try_recv(struct abd__bcast *b, void *buf, size_t size)
{
	abd__check(b && !b->publisher && !b->observer && (buf || !size), -EINVAL);
	return next_msg(b, buf, size, NULL, NULL);
}

int abd__bcast_peek(struct abd__bcast *b, const void **data, size_t *len)
{
	abd__check(b && !b->publisher && !b->observer && data && len, -EINVAL);
	return next_msg(b, NULL, 0, data, len);
}

int abd__bcast_release(struct abd__bcast *b)
{
	abd__check(b && !b->publisher && !b->observer, -EINVAL);
	if (!b->peeked)
		return -EINVAL;
	b->peeked = false;
	abd__store(&b->e[b->idx].held, 0u, RELEASE);
	__atomic_fetch_and(&b->c->holding, ~(UINT64_C(1) << b->idx), __ATOMIC_SEQ_CST);
	advance(b);
	return 0;
}

uint64_t abd__bcast_lost(const struct abd__bcast *b)
{
	return b ? b->lost : 0;
}

uint64_t abd__bcast_pos(const struct abd__bcast *b)
{
	return b ? b->pos : 0;
}

void abd__bcast_set_closed(struct abd__bcast *b)
{
	if (b)
		b->closed_local = true;
}

bool abd__bcast_closed(const struct abd__bcast *b)
{
	return b->publisher ? abd__load(&b->h->closed, RELAXED) != 0 : closed(b);
}

/* ------------------------------------------------------------------ waiting -- */

int abd__bcast_wait_prepare(struct abd__bcast *b, const uint32_t **word, uint32_t *value,
                            int64_t *tmo)
{
	abd__check(b && word && value && tmo && !b->observer, -EINVAL);
	if (b->publisher) {
		/* room: a subscriber that advances wakes us when we announced; a dead laggard
		 * cannot, so its lease is looked at again after a nap (1 -> 16 ms) */
		uint32_t v = abd__load(&b->c->space_futex, SEQ_CST);
		abd__store(&b->c->space_waiting, 1u, SEQ_CST);
		b->space_announced = true;
		b->bound_valid = false;
		if (room(b)) {
			b->space_nap = 0;
			abd__bcast_wait_finish(b);
			return 1;
		}
		b->space_nap = b->space_nap ? b->space_nap * 2 : SPACE_NAP_FIRST_NS;
		if (b->space_nap > SPACE_NAP_MAX_NS)
			b->space_nap = SPACE_NAP_MAX_NS;
		*word = &b->c->space_futex;
		*value = v;
		*tmo = b->space_nap;
		return 0;
	}
	uint32_t v = abd__load(&b->h->head32, SEQ_CST);
	__atomic_fetch_or(&b->c->sleepers, UINT64_C(1) << b->idx, __ATOMIC_SEQ_CST);
	b->sleeping = true;
	if (abd__load(&b->h->head, SEQ_CST) > b->pos || closed(b)) {
		abd__bcast_wait_finish(b);
		return 1;
	}
	*word = &b->h->head32;
	*value = v;
	*tmo = -1;
	return 0;
}

void abd__bcast_wait_finish(struct abd__bcast *b)
{
	if (!b)
		return;
	if (b->publisher && b->space_announced) {
		abd__store(&b->c->space_waiting, 0u, RELAXED);
		b->space_announced = false;
	}
	if (!b->publisher && b->sleeping) {
		__atomic_fetch_and(&b->c->sleepers, ~(UINT64_C(1) << b->idx), __ATOMIC_SEQ_CST);
		b->sleeping = false;
	}
}

/* ------------------------------------------------------------------ statistics -- */

void abd__bcast_stats(struct abd__bcast *b, struct abd__bcast_stats *out)
{
	memset(out, 0, sizeof(*out));
	uint64_t head = abd__load(&b->h->head, ACQUIRE);
	out->head = head;
	out->wakes = abd__load(&b->h->wakes, RELAXED);
	out->bytes = abd__load(&b->h->bytes, RELAXED);
	out->closed = abd__load(&b->h->closed, RELAXED);
	if (head) {
		struct bc_slot *s = &b->slots[(head - 1) & b->mask];
		uint64_t q = abd__load(&s->seq, ACQUIRE);
		uint32_t len = abd__load(&s->len, RELAXED);
		uint64_t stamp = abd__load(&s->stamp, RELAXED);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (q == head && abd__load(&s->seq, RELAXED) == q) {
			out->last_len = len;
			out->last_ns = stamp;
		}
	}
	if (b->lockfd < 0 || !b->e)
		return;
	for (unsigned i = 0; i < b->g.subscribers; i++)
		if (abd__load(&b->e[i].state, ACQUIRE) == ENTRY_HELD &&
		    (i == b->idx && !b->publisher && !b->observer ? 1 : entry_alive(b, i)) == 1)
			out->subscribers++;
}
