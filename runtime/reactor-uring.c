/* SPDX-License-Identifier: MIT */
/* The io_uring backend. One request in flight per source at most; user_data is the source,
 * whose first field (the cookie tag) says which request it is. Rules kept here:
 *  - the SQ is never allowed to drop an operation: when it is full it is submitted, and what
 *    still finds no room waits on reactor->pending until the next wait flushes it;
 *  - the CQ may overflow (the kernel keeps the extra CQEs, IORING_FEAT_NODROP): after
 *    reaping, the overflow flag is checked and the backlog flushed;
 *  - a removed source with a request in flight gets an ASYNC_CANCEL and stays allocated (a
 *    zombie) until the request's own CQE comes back: the kernel may write into it until then
 *    (the eventfd read buffer, the timeout's timespec). */
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/reactor-internal.h"

_Static_assert(sizeof(((struct abd_source *)0)->ts) == sizeof(struct __kernel_timespec),
               "timespec layout");
_Static_assert(offsetof(struct abd_source, ck) == 0, "the cookie comes first");

struct uring {
	struct io_uring ring;
	bool embedded;            /* abd_reactor_fd was called: an embedder polls the ring fd */
	bool migrating;           /* completions are kept for replay, not dispatched */
	unsigned setup_flags;
	struct abd__list replay;  /* sources with a completion kept across a ring swap */
	uint32_t inflight_total;  /* requests of sources not yet completed */
	unsigned cq_entries;
	bool can_read, can_futex;
};

static inline struct uring *U(struct abd_reactor *r)
{
	return r->impl;
}

static int setup_ring(struct abd_reactor *r, struct uring *u, struct io_uring *ring, bool defer)
{
	unsigned flags = 0;
	if (abd_probe_has(ABD_FEAT_URING_COOP_TASKRUN) == 1)
		flags |= IORING_SETUP_COOP_TASKRUN;
	if (abd_probe_has(ABD_FEAT_URING_SINGLE_ISSUER) == 1) {
		flags |= IORING_SETUP_SINGLE_ISSUER;
		if (defer && abd_probe_has(ABD_FEAT_URING_DEFER_TASKRUN) == 1)
			flags |= IORING_SETUP_DEFER_TASKRUN;
	}
	/* An unknown setup flag is EINVAL: drop the newest first and retry. */
	static const unsigned drop[] = { IORING_SETUP_DEFER_TASKRUN, IORING_SETUP_SINGLE_ISSUER,
	                                 IORING_SETUP_COOP_TASKRUN, 0 };
	struct io_uring_params p;
	int e;
	for (size_t i = 0;; i++) {
		memset(&p, 0, sizeof(p));
		p.flags = flags;
		e = io_uring_queue_init_params(r->sq_entries, ring, &p);
		if (e != -EINVAL || flags == 0 || i >= ABD__ARRAY_SIZE(drop))
			break;
		flags &= ~drop[i];
		if (!(flags & IORING_SETUP_SINGLE_ISSUER))
			flags &= ~IORING_SETUP_DEFER_TASKRUN;
	}
	if (e < 0)
		return e;
	if (!(p.features & IORING_FEAT_NODROP)) {
		/* Pre-5.5: a full CQ drops completions. The probe already refuses such kernels. */
		io_uring_queue_exit(ring);
		return -EOPNOTSUPP;
	}
	u->cq_entries = p.cq_entries;
	u->setup_flags = flags;
	return 0;
}

static int uring_init(struct abd_reactor *r)
{
	struct uring *u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	abd__list_init(&u->replay);
	u->can_read = abd_probe_has(ABD_FEAT_URING_READ) == 1;
	u->can_futex = abd_probe_has(ABD_FEAT_URING_FUTEX_WAIT) == 1;
	int e = setup_ring(r, u, &u->ring, true);
	if (e < 0) {
		free(u);
		return e;
	}
	r->impl = u;
	return 0;
}

/* An SQE, submitting a full SQ to make room; NULL if even that fails (the caller queues). */
static struct io_uring_sqe *get_sqe(struct uring *u)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	if (abd__likely(sqe))
		return sqe;
	io_uring_submit(&u->ring);
	return io_uring_get_sqe(&u->ring);
}

static void prep(struct abd_reactor *r, struct abd_source *s, struct io_uring_sqe *sqe)
{
	struct uring *u = U(r);
	switch (s->kind) {
	case ABD__SRC_IO:
		s->ck.tag = ABD__TAG_IO_POLL;
		io_uring_prep_poll_add(sqe, s->fd, s->events);
		break;
	case ABD__SRC_EVENTFD:
		if (s->ck.tag == ABD__TAG_EVENTFD_READ && u->can_read) {
			io_uring_prep_read(sqe, s->fd, &s->value, sizeof(s->value), 0);
		} else {
			s->ck.tag = ABD__TAG_EVENTFD_POLL;
			io_uring_prep_poll_add(sqe, s->fd, POLLIN);
		}
		break;
	case ABD__SRC_PIDFD:
		s->ck.tag = ABD__TAG_PIDFD_POLL;
		io_uring_prep_poll_add(sqe, s->fd, POLLIN);
		break;
	case ABD__SRC_TIMER:
		s->ck.tag = ABD__TAG_TIMER;
		s->ts.tv_sec = (int64_t)(s->deadline / 1000000000u);
		s->ts.tv_nsec = (long long)(s->deadline % 1000000000u);
		io_uring_prep_timeout(sqe, (struct __kernel_timespec *)&s->ts, 0, IORING_TIMEOUT_ABS);
		break;
	case ABD__SRC_FUTEX:
		/* liburing 2.3 has no helper: fd = futex2 flags (shared, so no FUTEX2_PRIVATE),
		 * addr = word, addr2 = expected value, addr3 = wake mask. */
		s->ck.tag = ABD__TAG_FUTEX_WAIT;
		io_uring_prep_rw(ABD_IORING_OP_FUTEX_WAIT, sqe, ABD_FUTEX2_SIZE_U32, s->word, 0,
		                 s->expected);
		sqe->addr3 = ABD_FUTEX_BITSET_MATCH_ANY;
		break;
	case ABD__SRC_READ:
		if (s->ck.tag == ABD__TAG_READ && u->can_read) {
			io_uring_prep_read(sqe, s->fd, s->buf, (unsigned)s->len, 0);
		} else {
			s->ck.tag = ABD__TAG_READ_POLL;
			io_uring_prep_poll_add(sqe, s->fd, POLLIN);
		}
		break;
	case ABD__SRC_DEFER:
	case ABD__SRC_OWNER:
		break;
	}
	io_uring_sqe_set_data(sqe, s);
	s->inflight++;
	u->inflight_total++;
}

static void queue(struct abd_reactor *r, struct abd_source *s, enum abd__pending what)
{
	s->pending = what;
	abd__list_add_tail(&r->pending, &s->qlink);
}

static void submit_if_idle(struct abd_reactor *r)
{
	/* Outside run_once nobody else will submit before an embedder sleeps on the fd. */
	if (r->depth == 0)
		io_uring_submit(&U(r)->ring);
}

static void cancel(struct abd_reactor *r, struct abd_source *s)
{
	if (s->pending == ABD__PEND_CANCEL)
		return;
	struct io_uring_sqe *sqe = get_sqe(U(r));
	if (!sqe) {
		queue(r, s, ABD__PEND_CANCEL);
		return;
	}
	io_uring_prep_cancel(sqe, s, 0);
	io_uring_sqe_set_data(sqe, &r->cancel_ck);
	submit_if_idle(r);
}

static int uring_arm(struct abd_reactor *r, struct abd_source *s)
{
	struct uring *u = U(r);
	if (s->kind == ABD__SRC_FUTEX && !u->can_futex)
		return -EOPNOTSUPP;
	s->armed = true;
	if (s->pending == ABD__PEND_ARM)
		return 0; /* queued; prep reads the latest values */
	if (s->inflight) {
		/* Only a timer is re-armed while in flight: cancel it, and its completion compares
		 * the clock with the new deadline and re-submits. */
		cancel(r, s);
		return 0;
	}
	struct io_uring_sqe *sqe = get_sqe(u);
	if (!sqe) {
		queue(r, s, ABD__PEND_ARM);
		return 0;
	}
	prep(r, s, sqe);
	submit_if_idle(r);
	return 0;
}

static void uring_disarm(struct abd_reactor *r, struct abd_source *s)
{
	if (s->pending == ABD__PEND_ARM || s->pending == ABD__PEND_REPLAY) {
		abd__list_del(&s->qlink);
		s->pending = ABD__PEND_NONE;
	}
	if (s->inflight)
		cancel(r, s);
	s->armed = false;
}

/* Move queued operations into the SQ; -EBUSY if it is still full. */
static int flush_pending(struct abd_reactor *r)
{
	while (!abd__list_empty(&r->pending)) {
		struct abd_source *s = abd__container_of(r->pending.next, struct abd_source, qlink);
		if (s->pending == ABD__PEND_CANCEL && s->inflight == 0) {
			/* The request finished meanwhile: nothing left to cancel. */
			abd__list_del(&s->qlink);
			s->pending = ABD__PEND_NONE;
			abd__source_release(r, s);
			continue;
		}
		struct io_uring_sqe *sqe = get_sqe(U(r));
		if (!sqe)
			return -EBUSY;
		abd__list_del(&s->qlink);
		enum abd__pending what = s->pending;
		s->pending = ABD__PEND_NONE;
		if (what == ABD__PEND_ARM) {
			prep(r, s, sqe);
		} else {
			io_uring_prep_cancel(sqe, s, 0);
			io_uring_sqe_set_data(sqe, &r->cancel_ck);
		}
	}
	return 0;
}

/* Re-arm a persistent source after its event, unless the callback freed or re-armed it. */
static inline void rearm(struct abd_reactor *r, struct abd_source *s)
{
	if (!s->dead && !s->armed)
		uring_arm(r, s);
}

static void fail(struct abd_reactor *r, struct abd_source *s, int res)
{
	s->armed = false;
	if (abd__source_fire(r, s, res, 0) && !s->armed)
		abd__source_finished(r, s);
}

static void on_timer(struct abd_reactor *r, struct abd_source *s, int res)
{
	if (res < 0 && res != -ETIME && res != -ECANCELED) {
		fail(r, s, res);
		return;
	}
	if (!s->armed)
		return;
	uint64_t now = abd__clock_ns();
	if (now < s->deadline) {
		/* Cancelled by a re-arm, or the deadline moved: wait for the current one. */
		uring_arm(r, s);
		return;
	}
	uint64_t n = 1;
	if (s->period) {
		n += (now - s->deadline) / s->period;
		s->deadline += n * s->period;
	} else {
		s->armed = false;
	}
	if (!abd__source_fire(r, s, 0, n))
		return;
	if (s->armed && !s->inflight && s->pending == ABD__PEND_NONE)
		uring_arm(r, s); /* periodic */
	else if (!s->armed)
		abd__source_finished(r, s);
}

/* The dispatch switch: every CQE's user_data is a tagged cookie. */
static void complete(struct abd_reactor *r, void *cookie, int res)
{
	struct abd__cookie *ck = cookie;
	if (!ck || (uintptr_t)cookie == (uintptr_t)LIBURING_UDATA_TIMEOUT)
		return;
	if (ck->tag == ABD__TAG_CANCEL || ck->tag == ABD__TAG_WAKE)
		return; /* a cancel's own answer: the cancelled request reports separately */

	struct abd_source *s = (struct abd_source *)ck;
	s->inflight--;
	U(r)->inflight_total--;
	if (s->dead) {
		abd__source_release(r, s);
		return;
	}
	if (abd__unlikely(U(r)->migrating)) {
		/* Leaving this ring: a real event is kept and delivered from the new one. */
		if (res != -ECANCELED) {
			s->replay_res = res;
			s->pending = ABD__PEND_REPLAY;
			abd__list_add_tail(&U(r)->replay, &s->qlink);
		}
		return;
	}

	switch (ck->tag) {
	case ABD__TAG_IO_POLL:
		if (res < 0)
			{ fail(r, s, res); return; }
		s->armed = false;
		if (abd__source_fire(r, s, 0, (uint32_t)res))
			rearm(r, s);
		return;
	case ABD__TAG_EVENTFD_READ:
		s->armed = false;
		if (res == -EAGAIN) {
			/* An O_NONBLOCK eventfd on a kernel that will not wait inside the read: poll
			 * first from now on. */
			s->ck.tag = ABD__TAG_EVENTFD_POLL;
			{ rearm(r, s); return; }
		}
		if (res != (int)sizeof(s->value))
			{ fail(r, s, res < 0 ? res : -EIO); return; }
		if (abd__source_fire(r, s, 0, s->value))
			rearm(r, s);
		return;
	case ABD__TAG_EVENTFD_POLL: {
		if (res < 0)
			{ fail(r, s, res); return; }
		s->armed = false;
		uint64_t v;
		int n = abd__reactor_eventfd_read(s->fd, &v);
		if (n == (int)sizeof(v)) {
			if (!abd__source_fire(r, s, 0, v))
				return;
		} else if (n < 0 && n != -EAGAIN && n != -EINTR) {
			{ fail(r, s, n); return; }
		}
		{ rearm(r, s); return; }
	}
	case ABD__TAG_PIDFD_POLL:
		if (res < 0)
			{ fail(r, s, res); return; }
		s->armed = false;
		if (abd__source_fire(r, s, 0, 0) && !s->armed)
			abd__source_finished(r, s);
		return;
	case ABD__TAG_TIMER:
		{ on_timer(r, s, res); return; }
	case ABD__TAG_FUTEX_WAIT:
		if (res < 0 && res != -EAGAIN)
			{ fail(r, s, res); return; }
		s->armed = false;
		if (abd__source_fire(r, s, 0, res == 0) && !s->armed)
			abd__source_finished(r, s);
		return;
	case ABD__TAG_READ:
		s->armed = false;
		if (res == -EAGAIN) {
			s->ck.tag = ABD__TAG_READ_POLL; /* as for an eventfd: poll first from now on */
			rearm(r, s);
			return;
		}
		if (res <= 0)
			{ fail(r, s, res < 0 ? res : -EPIPE); return; }
		if (abd__source_fire(r, s, 0, (uint64_t)res))
			rearm(r, s);
		return;
	case ABD__TAG_READ_POLL: {
		if (res < 0)
			{ fail(r, s, res); return; }
		s->armed = false;
		ssize_t n = read(s->fd, s->buf, s->len);
		if (n > 0) {
			if (!abd__source_fire(r, s, 0, (uint64_t)n))
				return;
		} else if (n == 0) {
			{ fail(r, s, -EPIPE); return; }
		} else if (errno != EAGAIN && errno != EINTR) {
			{ fail(r, s, -errno); return; }
		}
		rearm(r, s);
		return;
	}
	case ABD__TAG_DEFER:
	case ABD__TAG_OWNER:
	case ABD__TAG_FUTEX_THREAD:
	case ABD__TAG_CANCEL:
	case ABD__TAG_WAKE:
		return;
	}
}

/* Reap up to budget CQEs (0: no limit), flushing the kernel's overflow backlog as needed. */
static void reap(struct abd_reactor *r, unsigned budget)
{
	struct uring *u = U(r);
	unsigned n = 0;
	for (;;) {
		struct io_uring_cqe *cqe;
		while (__io_uring_peek_cqe(&u->ring, &cqe, NULL) == 0 && cqe) {
			void *cookie = io_uring_cqe_get_data(cqe);
			int res = cqe->res;
			io_uring_cqe_seen(&u->ring, cqe);
			complete(r, cookie, res);
			if (budget && ++n >= budget)
				return; /* the rest waits for the next iteration: no starvation */
		}
		if (!io_uring_cq_has_overflow(&u->ring))
			return;
		io_uring_get_events(&u->ring);
	}
}

static int uring_wait(struct abd_reactor *r, int64_t timeout_ns)
{
	struct uring *u = U(r);
	while (!abd__list_empty(&u->replay)) {
		/* Completions kept across a ring swap, delivered as if they had just come. */
		struct abd_source *s = abd__container_of(u->replay.next, struct abd_source, qlink);
		abd__list_del(&s->qlink);
		s->pending = ABD__PEND_NONE;
		s->inflight++;
		u->inflight_total++;
		complete(r, s, s->replay_res);
		timeout_ns = 0;
	}
	if (flush_pending(r) < 0)
		timeout_ns = 0; /* no room even after submitting: reap, then try again */
	int e;
	if (timeout_ns == 0) {
		e = io_uring_submit_and_get_events(&u->ring);
	} else if (timeout_ns < 0) {
		e = io_uring_submit_and_wait(&u->ring, 1);
	} else {
		struct __kernel_timespec ts = { .tv_sec = timeout_ns / 1000000000,
		                                .tv_nsec = timeout_ns % 1000000000 };
		struct io_uring_cqe *cqe;
		e = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
	}
	if (e == -EINTR)
		r->interrupted = true;
	if (e == -ETIME || e == -EINTR || e == -EBUSY || e == -EAGAIN)
		e = 0;
	reap(r, 4 * u->cq_entries);
	return e < 0 ? e : 0;
}

static void uring_flush(struct abd_reactor *r)
{
	struct uring *u = U(r);
	/* Re-arms made by callbacks must reach the kernel before an embedder sleeps. */
	if (u->embedded) {
		flush_pending(r);
		if (io_uring_sq_ready(&u->ring))
			io_uring_submit(&u->ring);
	}
}

static void uring_drain(struct abd_reactor *r)
{
	struct uring *u = U(r);
	for (int tries = 0; (u->inflight_total || !abd__list_empty(&r->pending)) && tries < 100;
	     tries++) {
		flush_pending(r);
		struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = 100 * 1000 * 1000 };
		struct io_uring_cqe *cqe;
		io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
		reap(r, 0);
	}
}

/* The embedding fd is the ring fd itself: it polls readable while CQEs wait in the CQ or,
 * under DEFER_TASKRUN, while completions wait to be run. An eventfd registered with
 * io_uring_register_eventfd is not reliable under DEFER_TASKRUN: the kernel signals it when
 * CQEs are posted, and those are only posted when we enter the ring (docs/reactor.md). */
static void uring_drain(struct abd_reactor *r);
static void uring_wake(struct abd_reactor *r);

/* Move every live source to a ring without DEFER_TASKRUN. Under DEFER_TASKRUN the kernel
 * neither wakes pollers of the ring fd nor reliably signals a registered eventfd when a
 * completion is queued (it waits for us to enter the ring), so an embedder could sleep
 * through an event. Requests in flight are cancelled; a request that completed meanwhile is
 * kept and replayed on the next wait, so no event is lost. */
static int migrate_off_defer(struct abd_reactor *r)
{
	struct uring *u = U(r);
	struct io_uring fresh;
	unsigned old_flags = u->setup_flags, old_cq = u->cq_entries;
	int e = setup_ring(r, u, &fresh, false);
	if (e < 0)
		return e;
	u->migrating = true;
	for (struct abd__list *l = r->sources.next; l != &r->sources; l = l->next) {
		struct abd_source *s = abd__container_of(l, struct abd_source, link);
		if (s->pending == ABD__PEND_ARM) {
			abd__list_del(&s->qlink); /* armed on the new ring below */
			s->pending = ABD__PEND_NONE;
		}
		if (s->inflight)
			cancel(r, s);
	}
	uring_drain(r);
	u->migrating = false;
	if (u->inflight_total) {
		/* The old ring would not let go: stay on it, re-arming what was cancelled. */
		io_uring_queue_exit(&fresh);
		u->setup_flags = old_flags;
		u->cq_entries = old_cq;
		e = -EBUSY;
	} else {
		io_uring_queue_exit(&u->ring);
		u->ring = fresh;
		e = 0;
	}
	for (struct abd__list *l = r->sources.next; l != &r->sources; l = l->next) {
		struct abd_source *s = abd__container_of(l, struct abd_source, link);
		if (abd__source_in_kernel(s) && s->armed && !s->inflight && s->pending == ABD__PEND_NONE)
			uring_arm(r, s);
	}
	return e;
}

static int uring_embed_fd(struct abd_reactor *r)
{
	struct uring *u = U(r);
	if (!u->embedded && (u->setup_flags & IORING_SETUP_DEFER_TASKRUN)) {
		int e = migrate_off_defer(r);
		if (e < 0)
			return e;
	}
	if (!u->embedded) {
		u->embedded = true;
		flush_pending(r);
		io_uring_submit(&u->ring);
		/* The first poll of a SINGLE_ISSUER ring activates its poll queue through task work
		 * queued with TWA_SIGNAL on the submitter: that poll returns EINTR. Take the hit
		 * here, where the task work runs on the way out, not in the embedder's loop. */
		struct pollfd p = { .fd = u->ring.ring_fd, .events = POLLIN };
		(void)poll(&p, 1, 0);
		if (!abd__list_empty(&u->replay) || !abd__list_empty(&r->defers))
			uring_wake(r);
	}
	return u->ring.ring_fd;
}

/* Deferred work for an embedder: a NOP's completion makes the ring fd readable. */
static void uring_wake(struct abd_reactor *r)
{
	struct uring *u = U(r);
	if (!u->embedded)
		return;
	struct io_uring_sqe *sqe = get_sqe(u);
	if (!sqe)
		return; /* a full SQ was just submitted: completions will wake the embedder */
	io_uring_prep_nop(sqe);
	io_uring_sqe_set_data(sqe, &r->wake_ck);
	io_uring_submit(&u->ring);
}

static void uring_fini(struct abd_reactor *r)
{
	struct uring *u = U(r);
	io_uring_queue_exit(&u->ring);
	free(u);
	r->impl = NULL;
}

static bool uring_has_futex(struct abd_reactor *r)
{
	return U(r)->can_futex;
}

const struct abd__backend abd__backend_uring = {
	.kind = ABD_BACKEND_IO_URING,
	.init = uring_init,
	.fini = uring_fini,
	.release = uring_fini, /* unmapping and closing touch only this process */
	.embed_fd = uring_embed_fd,
	.arm = uring_arm,
	.disarm = uring_disarm,
	.wait = uring_wait,
	.flush = uring_flush,
	.drain = uring_drain,
	.wake = uring_wake,
	.has_futex = uring_has_futex,
};
