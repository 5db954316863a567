/* SPDX-License-Identifier: MIT */
/* Request-response below the service layer (rpc-internal.h; docs/rpc.md specifies the files).
 *
 * The server's half: it pops requests from the ring (its single consumer), checks each
 * header against its own geometry, remembers per (mailbox, cell) the last request it took,
 * and writes the answer into that cell of the response file, which only it can write. A reply
 * to a request that a newer one of the same cell has superseded is dropped, so a late answer
 * never overwrites the answer the caller now waits for.
 *
 * The client's half: it maps the response file read-only (the seal leaves no other way),
 * sends requests naming its own mailbox (its lease in the request ring) and one of its free
 * cells, and recognises its answer by the generation and the request id in the cell, read
 * under the cell's seqlock. Nothing it reads from the file is trusted beyond its private copy
 * of the geometry. */
#include <abd/probe.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "rpc-internal.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#define RPC_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL)
/* id = epoch (16 random bits) << 48 | counter (40 bits) << 8 | cell */
#define ID_CELL(id) ((unsigned)((id) & 0xff))
#define ID_COUNTER_MASK ((UINT64_C(1) << 40) - 1)
/* token = take sequence (48 bits) << 16 | mailbox << 8 | cell */
#define TOKEN_SEQ_MASK ((UINT64_C(1) << 48) - 1)

struct geometry {
	uint32_t mailboxes, cells, cell_size, cell_stride;
	uint64_t mailbox_stride, total;
};

static int geometry_for(uint32_t mailboxes, uint32_t cells, uint32_t cell_size,
                        struct geometry *g)
{
	if (!mailboxes || mailboxes > ABD_RING_MAX_PARTICIPANTS || !cells ||
	    cells > ABD__RPC_CELLS_MAX || !cell_size || cell_size > ABD_RING_MAX_SLOT_SIZE)
		return -EINVAL;
	g->mailboxes = mailboxes;
	g->cells = cells;
	g->cell_size = cell_size;
	g->cell_stride = abd__rpc_cell_stride(cell_size);
	g->mailbox_stride = ABD__RPC_MAILBOX_HDR + (uint64_t)cells * g->cell_stride;
	g->total = ABD__RPC_HEADER_SIZE + (uint64_t)mailboxes * g->mailbox_stride;
	return g->total <= ABD__RPC_MAX_SIZE ? 0 : -EFBIG;
}

static inline struct abd__rpc_mailbox *mailbox(unsigned char *base, const struct geometry *g,
                                               unsigned i)
{
	return (struct abd__rpc_mailbox *)(base + ABD__RPC_HEADER_SIZE + (size_t)i * g->mailbox_stride);
}

static inline struct abd__rpc_cell *cell_at(unsigned char *base, const struct geometry *g,
                                            unsigned mb, unsigned c)
{
	return (struct abd__rpc_cell *)((unsigned char *)mailbox(base, g, mb) + ABD__RPC_MAILBOX_HDR +
	                                (size_t)c * g->cell_stride);
}

/* ------------------------------------------------------------------ server -- */

struct taken {
	uint64_t seq; /* the take that this entry records; 0: none pending */
	uint64_t id;
	uint32_t gen;
	uint32_t flags;
};

struct abd__rpc_server {
	struct abd_ring *ring;
	struct geometry g;
	int memfd;
	unsigned char *base;
	unsigned char *buf; /* one request, as popped */
	size_t buf_size;
	int kept;           /* length of a request kept in buf after -EMSGSIZE, or -1 */
	struct taken *taken; /* [mailbox * cells + cell] */
	uint64_t take_seq;
	uint64_t bad, stale;
	bool use_futex;
};

int abd__rpc_server_new(struct abd_ring *ring, uint32_t cells, uint32_t resp_size,
                        struct abd__rpc_server **out)
{
	abd__check(out, -EINVAL);
	*out = NULL;
	abd__check(ring && (ring->roles & ABD_RING_CONSUMER), -EINVAL);
	abd__check(ring->slot_size >= ABD__RPC_REQ_HDR, -EINVAL);
	struct geometry g;
	int e = geometry_for(ring->lease_count, cells ? cells : ABD__RPC_CELLS_DEFAULT, resp_size, &g);
	if (e < 0)
		return e;
	struct abd__rpc_server *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->ring = ring;
	s->g = g;
	s->kept = -1;
	s->use_futex = ring->use_futex;
	s->buf_size = ring->slot_size;
	s->buf = malloc(s->buf_size);
	s->taken = calloc((size_t)g.mailboxes * g.cells, sizeof(*s->taken));
	unsigned mfd = MFD_CLOEXEC | MFD_ALLOW_SEALING;
	if (abd_probe_has(ABD_FEAT_MFD_NOEXEC_SEAL) == 1)
		mfd |= MFD_NOEXEC_SEAL;
	s->memfd = -1;
	if (!s->buf || !s->taken) {
		e = -ENOMEM;
		goto fail;
	}
	s->memfd = memfd_create("abd-rpc", mfd);
	if (s->memfd < 0 && (mfd & MFD_NOEXEC_SEAL) && errno == EINVAL)
		s->memfd = memfd_create("abd-rpc", mfd & ~MFD_NOEXEC_SEAL);
	if (s->memfd < 0 || ftruncate(s->memfd, (off_t)g.total) < 0)
		goto fail_errno;
	/* Writable for us, mapped before the seal: F_SEAL_FUTURE_WRITE forbids new writable
	 * mappings and writes, and leaves this one alone. Not pre-faulted: a mailbox costs pages
	 * once a client of it gets a response. */
	void *m = mmap(NULL, (size_t)g.total, PROT_READ | PROT_WRITE, MAP_SHARED, s->memfd, 0);
	if (m == MAP_FAILED)
		goto fail_errno;
	s->base = m;
	struct abd__rpc_hdr *h = m;
	h->version = ABD__RPC_VERSION;
	h->header_size = ABD__RPC_HEADER_SIZE;
	memcpy(h->nonce, ring->nonce, sizeof(h->nonce));
	h->mailboxes = g.mailboxes;
	h->cells = g.cells;
	h->cell_size = g.cell_size;
	h->cell_stride = g.cell_stride;
	h->mailbox_stride = g.mailbox_stride;
	h->total_size = g.total;
	h->magic = ABD__RPC_MAGIC;
	h->checksum = abd__rpc_checksum(h);
	if (fcntl(s->memfd, F_ADD_SEALS, RPC_SEALS) < 0)
		goto fail_errno;
	*out = s;
	return 0;
fail_errno:
	e = -errno;
fail:
	abd__rpc_server_free(s);
	return e;
}

void abd__rpc_server_free(struct abd__rpc_server *s)
{
	if (!s)
		return;
	if (s->base)
		munmap(s->base, (size_t)s->g.total);
	abd__close(s->memfd);
	free(s->buf);
	free(s->taken);
	free(s);
}

int abd__rpc_server_fd(const struct abd__rpc_server *s)
{
	return s ? s->memfd : -EINVAL;
}

void abd__rpc_server_counts(const struct abd__rpc_server *s, uint64_t *bad, uint64_t *stale)
{
	if (bad)
		*bad = s ? s->bad : 0;
	if (stale)
		*stale = s ? s->stale : 0;
}

int abd__rpc_take(struct abd__rpc_server *s, void *buf, size_t size, uint64_t *token)
{
	abd__check(s && token && (buf || !size), -EINVAL);
	int n = s->kept;
	if (n < 0) {
		n = abd_ring_try_pop(s->ring, s->buf, s->buf_size);
		if (n < 0)
			return n;
	}
	s->kept = -1;
	/* the header is whatever a client (any client) wrote: check every field against our own
	 * geometry; a bad one costs one dropped request */
	struct abd__rpc_req q;
	if ((size_t)n < sizeof(q)) {
		s->bad++;
		return -EBADMSG;
	}
	memcpy(&q, s->buf, sizeof(q));
	unsigned cell = ID_CELL(q.id);
	if (q.slot >= s->g.mailboxes || cell >= s->g.cells) {
		s->bad++;
		return -EBADMSG;
	}
	size_t len = (size_t)n - sizeof(q);
	if (len > size) {
		s->kept = n;
		return -EMSGSIZE;
	}
	if (len)
		memcpy(buf, s->buf + sizeof(q), len);
	struct taken *t = &s->taken[(size_t)q.slot * s->g.cells + cell];
	s->take_seq = (s->take_seq + 1) & TOKEN_SEQ_MASK;
	if (!s->take_seq)
		s->take_seq = 1;
	*t = (struct taken){ .seq = s->take_seq, .id = q.id, .gen = q.gen, .flags = q.flags };
	*token = s->take_seq << 16 | (uint64_t)q.slot << 8 | cell;
	return (int)len;
}

int abd__rpc_reply(struct abd__rpc_server *s, uint64_t token, const void *data, size_t len,
                   int status)
{
	abd__check(s && (data || !len) && status <= 0, -EINVAL);
	unsigned mb = (unsigned)(token >> 8) & 0xff, c = (unsigned)token & 0xff;
	uint64_t seq = token >> 16;
	abd__check(mb < s->g.mailboxes && c < s->g.cells && seq && seq <= s->take_seq, -EINVAL);
	if (len > s->g.cell_size)
		return -EMSGSIZE;
	struct taken *t = &s->taken[(size_t)mb * s->g.cells + c];
	if (t->seq != seq) {
		s->stale++; /* answered already, or superseded by a newer request of that cell */
		return -ESTALE;
	}
	t->seq = 0;
	struct abd__rpc_mailbox *m = mailbox(s->base, &s->g, mb);
	struct abd__rpc_cell *cell = cell_at(s->base, &s->g, mb, c);
	/* seqlock: odd while writing (only we write this file) */
	uint32_t v = abd__load(&cell->seq, RELAXED) & ~1u;
	abd__store(&cell->seq, v + 1, RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	abd__store(&cell->gen, t->gen, RELAXED);
	abd__store(&cell->id, t->id, RELAXED);
	abd__store(&cell->len, (uint32_t)len, RELAXED);
	abd__store(&cell->status, status, RELAXED);
	if (len)
		memcpy(cell->data, data, len);
	abd__store(&cell->seq, v + 2, RELEASE);
	abd__add(&m->responses, 1, RELAXED);
	abd__add(&m->futex, 1, SEQ_CST);
	/* A wake only when the caller said it may sleep (its lease's `asleep`, stored before it
	 * looks at its cell: either it sees this answer or we see the word; docs/rpc.md). Every
	 * waiter of the word, not one: anybody holding the file may sleep on any word, and a wake
	 * for one could go to such a squatter instead of the caller. */
	if ((t->flags & ABD__RPC_REQ_WAKE) && s->use_futex &&
	    abd__load(&s->ring->leases[mb].asleep, SEQ_CST))
		syscall(SYS_futex, &m->futex, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
	return 0;
}

/* ------------------------------------------------------------------ client -- */

struct abd__rpc_client {
	struct abd_ring *ring;
	struct geometry g;
	unsigned char *base;
	unsigned slot;
	uint32_t gen;
	uint64_t epoch;
	uint64_t counter;
	unsigned next;
	unsigned in_flight;
	bool use_futex;
	unsigned char *buf;
	size_t buf_size;
	uint64_t pending[ABD__RPC_CELLS_MAX]; /* the id in flight per cell, 0 free */
};

int abd__rpc_client_new(struct abd_ring *ring, int resp_fd, struct abd__rpc_client **out)
{
	abd__check(out, -EINVAL);
	*out = NULL;
	abd__check(ring && (ring->roles & ABD_RING_PRODUCER) && resp_fd >= 0, -EINVAL);
	if (ring->slot_size < ABD__RPC_REQ_HDR)
		return -EPROTO;
	struct stat st;
	if (fstat(resp_fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	/* the seals first, then the size: a file that may still shrink could change size under
	 * the check */
	int seals = fcntl(resp_fd, F_GET_SEALS);
	if (seals < 0 || (seals & RPC_SEALS) != RPC_SEALS)
		return -EPROTO;
	if (fstat(resp_fd, &st) < 0)
		return -errno;
	if (st.st_size < (off_t)ABD__RPC_HEADER_SIZE)
		return -EPROTO;
	if ((uint64_t)st.st_size > ABD__RPC_MAX_SIZE)
		return -EFBIG;
	void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, resp_fd, 0);
	if (m == MAP_FAILED)
		return -errno;
	struct abd__rpc_hdr h;
	memcpy(&h, m, sizeof(h));
	struct geometry g;
	int e = 0;
	if (h.magic != ABD__RPC_MAGIC || h.version != ABD__RPC_VERSION ||
	    h.header_size != ABD__RPC_HEADER_SIZE || h.checksum != abd__rpc_checksum(&h) ||
	    geometry_for(h.mailboxes, h.cells, h.cell_size, &g) < 0 ||
	    h.mailboxes != ring->lease_count || h.cell_stride != g.cell_stride ||
	    h.mailbox_stride != g.mailbox_stride || h.reserved0 || h.total_size != g.total ||
	    g.total != (uint64_t)st.st_size)
		e = -EPROTO;
	else if (memcmp(h.nonce, ring->nonce, sizeof(h.nonce)) != 0)
		e = -ESTALE;
	struct abd__rpc_client *c = e ? NULL : calloc(1, sizeof(*c));
	if (!e && !c)
		e = -ENOMEM;
	if (c) {
		c->buf_size = ring->slot_size;
		c->buf = malloc(c->buf_size);
		if (!c->buf)
			e = -ENOMEM;
	}
	uint16_t epoch = 0;
	if (!e && getrandom(&epoch, sizeof(epoch), 0) != (ssize_t)sizeof(epoch))
		e = -EIO;
	if (e) {
		if (c)
			free(c->buf);
		free(c);
		munmap(m, (size_t)st.st_size);
		return e;
	}
	c->ring = ring;
	c->g = g;
	c->base = m;
	c->slot = ring->lease;
	c->gen = abd__load(&ring->leases[ring->lease].gen, RELAXED);
	c->epoch = (uint64_t)(epoch | 1) << 48; /* never 0: a free cell's id is 0 */
	c->use_futex = ring->use_futex;
	abd__store(&ring->leases[ring->lease].asleep, 0u, RELAXED); /* a predecessor's */
	*out = c;
	return 0;
}

void abd__rpc_client_free(struct abd__rpc_client *c)
{
	if (!c)
		return;
	munmap(c->base, (size_t)c->g.total);
	free(c->buf);
	free(c);
}

unsigned abd__rpc_in_flight(const struct abd__rpc_client *c)
{
	return c ? c->in_flight : 0;
}

const uint32_t *abd__rpc_futex(const struct abd__rpc_client *c)
{
	return &mailbox(c->base, &c->g, c->slot)->futex;
}

unsigned abd__rpc_slot(const struct abd__rpc_client *c)
{
	return c->slot;
}

int abd__rpc_send(struct abd__rpc_client *c, const void *data, size_t len, uint64_t *ticket)
{
	abd__check(c && ticket && (data || !len), -EINVAL);
	if (len > c->buf_size - sizeof(struct abd__rpc_req))
		return -EMSGSIZE;
	unsigned cell = c->g.cells;
	for (unsigned i = 0; i < c->g.cells && cell == c->g.cells; i++) {
		unsigned k = (c->next + i) % c->g.cells;
		if (!c->pending[k])
			cell = k;
	}
	if (cell == c->g.cells)
		return -EBUSY;
	uint64_t id = c->epoch | ((c->counter + 1) & ID_COUNTER_MASK) << 8 | cell;
	struct abd__rpc_req q = { .slot = c->slot, .gen = c->gen, .id = id, .flags = ABD__RPC_REQ_WAKE };
	memcpy(c->buf, &q, sizeof(q));
	if (len)
		memcpy(c->buf + sizeof(q), data, len);
	int e = abd_ring_try_push(c->ring, c->buf, sizeof(q) + len);
	if (e < 0)
		return e;
	c->counter++;
	c->next = (cell + 1) % c->g.cells;
	c->pending[cell] = id;
	c->in_flight++;
	*ticket = id;
	return 0;
}

static int pending_cell(const struct abd__rpc_client *c, uint64_t ticket)
{
	unsigned cell = ID_CELL(ticket);
	if (!ticket || cell >= c->g.cells || c->pending[cell] != ticket)
		return -EINVAL;
	return (int)cell;
}

int abd__rpc_cancel(struct abd__rpc_client *c, uint64_t ticket)
{
	abd__check(c, -EINVAL);
	int cell = pending_cell(c, ticket);
	if (cell < 0)
		return cell;
	c->pending[cell] = 0;
	c->in_flight--;
	return 0;
}

/* Read a cell under its seqlock: 1 consistent (fields in *out, data copied when it answers
 * ticket and fits), 0 being written or changed while read. */
static int read_cell(const struct abd__rpc_client *c, const struct abd__rpc_cell *cell,
                     uint64_t ticket, void *buf, size_t size, struct abd__rpc_cell *out)
{
	uint32_t s1 = abd__load(&cell->seq, ACQUIRE);
	if (s1 & 1)
		return 0;
	out->gen = abd__load(&cell->gen, RELAXED);
	out->id = abd__load(&cell->id, RELAXED);
	out->len = abd__load(&cell->len, RELAXED);
	out->status = abd__load(&cell->status, RELAXED);
	if (out->gen == c->gen && out->id == ticket && out->len <= c->g.cell_size && out->len <= size &&
	    out->len)
		memcpy(buf, cell->data, out->len);
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	return abd__load(&cell->seq, RELAXED) == s1;
}

int abd__rpc_poll(struct abd__rpc_client *c, uint64_t ticket, void *buf, size_t size)
{
	abd__check(c && (buf || !size), -EINVAL);
	int k = pending_cell(c, ticket);
	if (k < 0)
		return k;
	const struct abd__rpc_cell *cell = cell_at(c->base, &c->g, c->slot, (unsigned)k);
	struct abd__rpc_cell v;
	/* a cell rewritten while we read it (only a forged request naming our cell does that) is
	 * read again a few times, then left for the next wake */
	for (int tries = 0; tries < 4; tries++) {
		if (!read_cell(c, cell, ticket, buf, size, &v))
			continue;
		if (v.gen != c->gen || v.id != ticket)
			return -EAGAIN;
		int r;
		if (v.len > c->g.cell_size || v.status > 0 || v.status < -4095 ||
		    v.len > (uint32_t)INT_MAX)
			r = -EBADMSG; /* not what a server writes (an errno is 1..4095) */
		else if (v.status < 0)
			r = v.status;
		else if (v.len > size)
			return -EMSGSIZE; /* it stays: poll again with more room */
		else
			r = (int)v.len;
		c->pending[k] = 0;
		c->in_flight--;
		return r;
	}
	return -EAGAIN;
}

void abd__rpc_announce(struct abd__rpc_client *c, bool asleep)
{
	abd__store(&c->ring->leases[c->slot].asleep, asleep ? 1u : 0u, SEQ_CST);
}

bool abd__rpc_ready(const struct abd__rpc_client *c, uint64_t ticket)
{
	if (!c)
		return false;
	for (unsigned k = 0; k < c->g.cells; k++) {
		uint64_t id = c->pending[k];
		if (!id || (ticket && id != ticket))
			continue;
		struct abd__rpc_cell v;
		const struct abd__rpc_cell *cell = cell_at(c->base, &c->g, c->slot, k);
		/* a cell being rewritten counts as ready: the look that follows reads it again */
		if (!read_cell(c, cell, 0, NULL, 0, &v) || (v.gen == c->gen && v.id == id))
			return true;
	}
	return false;
}

static int futex_sleep(void *arg, const uint32_t *word, uint32_t value, int64_t ns)
{
	const struct abd__rpc_client *c = arg;
	struct timespec ts = { (time_t)(ns / 1000000000), (long)(ns % 1000000000) };
	if (!c->use_futex) { /* no futex (denied by the profile): nap */
		struct timespec nap = { 0, 100000 };
		if (ns >= 0 && ns < nap.tv_nsec)
			nap.tv_nsec = (long)ns;
		return nanosleep(&nap, NULL) < 0 && errno == EINTR ? -EINTR : 0;
	}
	long e = syscall(SYS_futex, word, FUTEX_WAIT, value, ns < 0 ? NULL : &ts, NULL, 0);
	return e < 0 && errno == EINTR ? -EINTR : 0;
}

int abd__rpc_wait(struct abd__rpc_client *c, uint64_t ticket, void *buf, size_t size,
                  int64_t deadline, abd__rpc_sleep_fn *sleep, void *arg)
{
	abd__check(c, -EINVAL);
	if (!sleep) {
		sleep = futex_sleep;
		arg = c;
	}
	const uint32_t *word = abd__rpc_futex(c);
	/* wake-ups that found nothing: other cells' answers, or forged requests naming our
	 * mailbox; past a few dozen in a row the loop naps (ring-wait.c) */
	struct abd__ring_backoff backoff = { 0 };
	for (bool first = true;; first = false) {
		abd__rpc_announce(c, true); /* before the look: see abd__rpc_reply */
		uint32_t v = abd__load(word, SEQ_CST);
		int r = abd__rpc_poll(c, ticket, buf, size);
		if (r != -EAGAIN) {
			abd__rpc_announce(c, false);
			return r;
		}
		int64_t left = -1;
		if (deadline >= 0) {
			left = deadline - (int64_t)abd__ring_now_ns();
			if (left <= 0) {
				abd__rpc_announce(c, false);
				abd__rpc_cancel(c, ticket);
				return -ETIMEDOUT;
			}
		}
		if (!first) {
			r = abd__ring_backoff(&backoff, left);
			if (r < 0) {
				abd__rpc_announce(c, false);
				return r;
			}
		}
		r = sleep(arg, word, v, left);
		if (r < 0) {
			abd__rpc_announce(c, false);
			return r;
		}
	}
}
