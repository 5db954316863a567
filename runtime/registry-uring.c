/* SPDX-License-Identifier: MIT */
/* Reading many registry entries with few syscalls: the opens, reads and closes of a snapshot
 * go through one io_uring, CHUNK entries at a time, between the same stages and checks as the
 * one-by-one path (registry.c). Two syscalls per entry stay: fstat (io_uring's STATX always
 * runs on a worker thread, and the owner, type, link count and size must come from the
 * descriptor that was opened, not from the name again) and F_OFD_GETLK (liveness; there is no
 * io_uring fcntl, and /proc/locks, which the one-by-one path reads for big directories, is
 * formatted by the kernel for every lock of the system under a global lock: on a busy machine
 * it cost more than the fcntl of every record).
 *
 * Per chunk: (1) every name that passes the name and d_type checks is opened
 * (O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, so no symlink is followed and no FIFO or
 * device blocks), one io_uring_enter; (2) fstat and the checks on each descriptor, then a
 * read of exactly st_size bytes (bounded by ABD_RECORD_MAX) hard-linked to a close for the
 * ones that pass (and F_OFD_GETLK on it: liveness), a close alone for the others, one
 * io_uring_enter; (3) decode and check the bytes. A FIFO, socket or device is never read: its
 * fstat stops it at (2). An open refused for lack of descriptors (EMFILE, ENFILE) is done
 * again one by one after the chunk's closes. */
#include <abd/probe.h>

#include <fcntl.h>
#include <liburing.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/internal.h"
#include "runtime/registry-internal.h"

#define CHUNK 64
#define OPEN_FLAGS (O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
#define TAG_CLOSE (UINT64_C(1) << 32)

enum slot_state { SLOT_DONE, SLOT_GONE, SLOT_OPENING, SLOT_OPEN, SLOT_READING, SLOT_AGAIN };

struct slot {
	struct abd__stage st;
	enum slot_state state;
	int fd;
	size_t off;
	ssize_t got;
	int held; /* F_OFD_GETLK on the open descriptor */
};

static _Atomic unsigned snapshots_uring;

unsigned abd__snapshots_uring(void)
{
	return atomic_load_explicit(&snapshots_uring, memory_order_relaxed);
}

/* Does this kernel's io_uring know OPENAT, READ and CLOSE? Asked once (5.6 brought all three;
 * the feature mask was asked before, by the caller). 1 yes, 0 no. */
static int ops_known(struct io_uring *ring)
{
	static _Atomic int known; /* 0 not asked, 1 yes, -1 no */
	int k = atomic_load_explicit(&known, memory_order_relaxed);
	if (k)
		return k > 0;
	struct io_uring_probe *p = io_uring_get_probe_ring(ring);
	k = p && io_uring_opcode_supported(p, IORING_OP_OPENAT) &&
	            io_uring_opcode_supported(p, IORING_OP_READ) &&
	            io_uring_opcode_supported(p, IORING_OP_CLOSE)
	        ? 1
	        : -1;
	if (p)
		io_uring_free_probe(p);
	atomic_store_explicit(&known, k, memory_order_relaxed);
	return k > 0;
}

static struct io_uring_sqe *sqe(struct io_uring *ring)
{
	struct io_uring_sqe *s = io_uring_get_sqe(ring);
	if (!s) {
		/* never with the ring sized as it is (2 * CHUNK), but a full queue is no reason to fail */
		io_uring_submit(ring);
		s = io_uring_get_sqe(ring);
	}
	return s;
}

/* Submit what is queued and collect want completions into fn. 0 or -errno. */
static int complete(struct io_uring *ring, unsigned want, struct slot *slots)
{
	int r = io_uring_submit_and_wait(ring, want);
	if (r < 0 && r != -EINTR)
		return r;
	while (want) {
		struct io_uring_cqe *c;
		r = io_uring_wait_cqe(ring, &c);
		if (r == -EINTR || r == -EAGAIN)
			continue;
		if (r < 0)
			return r;
		uint64_t ud = io_uring_cqe_get_data64(c);
		struct slot *sl = &slots[ud & 0xffffffffu];
		if (!(ud & TAG_CLOSE)) {
			if (sl->state == SLOT_OPENING)
				sl->fd = c->res;
			else
				sl->got = c->res;
		}
		io_uring_cqe_seen(ring, c);
		want--;
	}
	return 0;
}

/* The rest of an entry whose batched open was refused for lack of descriptors. */
static int read_one(struct abd_registry *reg, struct abd__item *it, struct slot *sl,
                    uint8_t **buf, size_t *cap, struct abd__proc_cache **cache,
                    struct abd__arena *arena)
{
	int fd = openat(reg->dirfd, it->name, OPEN_FLAGS);
	if (fd < 0)
		return abd__item_open_failed(it, errno);
	struct stat st;
	int r;
	if (fstat(fd, &st) < 0) {
		abd__item_invalid(it, "fstat: %s", strerror(errno));
		r = 0;
	} else if ((r = abd__item_opened(it, &st, &sl->st)) == 1) {
		if (*cap < sl->st.size + 1) {
			void *p = realloc(*buf, sl->st.size + 1);
			if (!p) {
				close(fd);
				return -ENOMEM;
			}
			*buf = p;
			*cap = sl->st.size + 1;
		}
		ssize_t n;
		do
			n = pread(fd, *buf, sl->st.size, 0);
		while (n < 0 && errno == EINTR);
		r = abd__item_decoded(it, *buf, n < 0 ? -errno : n, &sl->st, arena);
		if (r == 0 && it->lock_pending)
			abd__item_locked(reg, it, abd__lock_held(fd), cache);
	}
	close(fd);
	return r;
}

/* An item moves inside the array: its reason pointer follows it. */
static void item_move(struct abd__item *dst, struct abd__item *src)
{
	if (dst == src)
		return;
	*dst = *src;
	if (src->e.reason == src->reason)
		dst->e.reason = dst->reason;
	memset(src, 0, sizeof(*src));
}

/* One chunk of names into it[0..m), slots alongside. */
static int read_chunk(struct abd_registry *reg, struct io_uring *ring, struct abd__dirent *list,
                      size_t m, struct abd__item *it, struct slot *slots, uint8_t **buf,
                      size_t *cap, struct abd__proc_cache **cache, struct abd__arena *arena)
{
	int r = 0;
	unsigned want = 0;
	size_t begun = 0;
	for (; begun < m; begun++) {
		struct slot *sl = &slots[begun];
		sl->fd = -1;
		sl->got = 0;
		r = abd__item_begin(reg, list[begun].name, list[begun].type, &it[begun],
		                    &list[begun].name, &sl->st);
		if (r < 0 && r != -ENOENT)
			break;
		sl->state = r == 1 ? SLOT_OPENING : r == 0 ? SLOT_DONE : SLOT_GONE;
		r = 0;
		if (sl->state != SLOT_OPENING)
			continue;
		struct io_uring_sqe *s = sqe(ring);
		io_uring_prep_openat(s, reg->dirfd, it[begun].name, OPEN_FLAGS, 0);
		io_uring_sqe_set_data64(s, begun);
		want++;
	}
	/* Even after a failure above: what was queued runs, and its descriptors are closed. */
	int e = complete(ring, want, slots);
	if (e < 0) {
		r = e; /* the ring itself failed: cannot tell which opens happened */
		goto out;
	}

	/* fstat and checks; the bytes to read, placed one after the other in buf */
	size_t total = 0;
	for (size_t j = 0; j < begun; j++) {
		struct slot *sl = &slots[j];
		if (sl->state != SLOT_OPENING)
			continue;
		if (sl->fd < 0) {
			int err = -sl->fd;
			sl->fd = -1;
			sl->state = err == EMFILE || err == ENFILE ? SLOT_AGAIN
			            : abd__item_open_failed(&it[j], err) == 0 ? SLOT_DONE
			                                                      : SLOT_GONE;
			continue;
		}
		sl->state = SLOT_OPEN;
		struct stat st;
		int k;
		if (fstat(sl->fd, &st) < 0) {
			abd__item_invalid(&it[j], "fstat: %s", strerror(errno));
			k = 0;
		} else {
			k = abd__item_opened(&it[j], &st, &sl->st);
		}
		if (k == 1) {
			/* Liveness now, on the descriptor: one fcntl costs less than /proc/locks, which
			 * the kernel formats for every lock of the system under a global lock. */
			sl->held = abd__lock_held(sl->fd);
			sl->state = SLOT_READING;
			sl->off = total;
			total += sl->st.size;
		} else {
			sl->state = k == 0 ? SLOT_DONE : SLOT_GONE;
		}
	}
	if (total + 1 > *cap && r == 0) {
		void *p = realloc(*buf, total + 1);
		if (p) {
			*buf = p;
			*cap = total + 1;
		} else {
			r = -ENOMEM;
		}
	}
	want = 0;
	for (size_t j = 0; j < begun; j++) {
		struct slot *sl = &slots[j];
		if (sl->fd < 0)
			continue;
		struct io_uring_sqe *s;
		if (sl->state == SLOT_READING && r == 0) {
			s = sqe(ring);
			io_uring_prep_read(s, sl->fd, *buf + sl->off, (unsigned)sl->st.size, 0);
			io_uring_sqe_set_data64(s, j);
			s->flags |= IOSQE_IO_HARDLINK; /* the close runs whatever the read returns */
			want++;
		} else if (sl->state == SLOT_READING) {
			sl->state = SLOT_DONE; /* out of memory: the snapshot fails anyway */
		}
		s = sqe(ring);
		io_uring_prep_close(s, sl->fd);
		io_uring_sqe_set_data64(s, TAG_CLOSE | j);
		want++;
	}
	e = complete(ring, want, slots);
	for (size_t j = 0; j < begun; j++)
		slots[j].fd = -1; /* closed by the ring (or, if it failed, by nobody we can tell) */
	if (e < 0 && r == 0)
		r = e;

	for (size_t j = 0; j < begun && r == 0; j++) {
		struct slot *sl = &slots[j];
		if (sl->state == SLOT_READING) {
			r = abd__item_decoded(&it[j], *buf + sl->off, sl->got, &sl->st, arena);
			if (r == 0 && it[j].lock_pending)
				abd__item_locked(reg, &it[j], sl->held, cache);
			sl->state = SLOT_DONE;
		} else if (sl->state == SLOT_AGAIN) {
			int k = read_one(reg, &it[j], sl, buf, cap, cache, arena);
			if (k == -ENOMEM)
				r = k;
			sl->state = k == -ENOENT ? SLOT_GONE : SLOT_DONE;
		}
	}
out:
	if (r < 0)
		for (size_t j = 0; j < m; j++)
			abd__item_clear(&it[j]); /* zeroed beyond begun: nothing to free there */
	return r;
}

int abd__read_entries_uring(struct abd_registry *reg, struct abd__dirent *list, size_t n,
                            struct abd__item *items, size_t *count,
                            struct abd__proc_cache **cache, struct abd__arena *arena)
{
	*count = 0;
	if (abd_probe_has(ABD_FEAT_IO_URING) != 1 || abd_probe_has(ABD_FEAT_URING_READ) != 1)
		return -ENOSYS;
	struct io_uring ring;
	if (io_uring_queue_init(2 * CHUNK, &ring, 0) < 0)
		return -ENOSYS;
	if (!ops_known(&ring)) {
		io_uring_queue_exit(&ring);
		return -ENOSYS;
	}
	struct slot *slots = calloc(CHUNK, sizeof(*slots));
	uint8_t *buf = NULL;
	size_t cap = 0, kept = 0;
	int r = slots ? 0 : -ENOMEM;
	for (size_t base = 0; base < n && r == 0; base += CHUNK) {
		size_t m = n - base < CHUNK ? n - base : CHUNK;
		/* The chunk lands after what is kept so far (kept <= base: there is room). */
		struct abd__item *it = &items[kept];
		r = read_chunk(reg, &ring, &list[base], m, it, slots, &buf, &cap, cache, arena);
		for (size_t j = 0; j < m && r == 0; j++) {
			if (slots[j].state == SLOT_GONE)
				abd__item_clear(&it[j]);
			else
				item_move(&items[kept++], &it[j]);
		}
	}
	free(slots);
	free(buf);
	io_uring_queue_exit(&ring);
	atomic_fetch_add_explicit(&snapshots_uring, 1, memory_order_relaxed);
	*count = kept;
	return r;
}
