/* SPDX-License-Identifier: MIT */
/* The epoll backend: the io_uring reactor's twin for kernels without a usable io_uring (5.4,
 * kernel.io_uring_disabled, Docker's seccomp profile). Same semantics behind the same
 * interface (runtime/reactor-internal.h): data.ptr is the tagged cookie; fds stay in the set
 * (level-triggered) while their source lives; a timer is a timerfd the source owns; a pidfd
 * leaves the set after its one event. There is nothing in flight to cancel: a source removed
 * during a batch is marked dead and its later events in the same batch are skipped (the
 * memory lives on the zombie list until the batch is over). */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "runtime/reactor-internal.h"

#define BATCH 64

struct ep {
	int epfd;
	int wakefd; /* eventfd in the set once an embedder asked for the fd; -1 before */
};

static inline struct ep *E(struct abd_reactor *r)
{
	return r->impl;
}

static int ep_init(struct abd_reactor *r)
{
	struct ep *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->wakefd = -1;
	p->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (p->epfd < 0) {
		int e = -errno;
		free(p);
		return e;
	}
	r->impl = p;
	return 0;
}

static int ctl(struct abd_reactor *r, int op, int fd, uint32_t events, void *cookie)
{
	struct epoll_event ev = { .events = events, .data.ptr = cookie };
	return epoll_ctl(E(r)->epfd, op, fd, &ev) < 0 ? -errno : 0;
}

static int timer_set(struct abd_source *s)
{
	struct itimerspec its = {
		.it_value = { .tv_sec = (time_t)(s->deadline / 1000000000u),
		              .tv_nsec = (long)(s->deadline % 1000000000u) },
		.it_interval = { .tv_sec = (time_t)(s->period / 1000000000u),
		                 .tv_nsec = (long)(s->period % 1000000000u) },
	};
	if (s->deadline == 0)
		its.it_value.tv_nsec = 1; /* zero would disarm: "already due" is the meaning */
	return timerfd_settime(s->fd, TFD_TIMER_ABSTIME, &its, NULL) < 0 ? -errno : 0;
}

static int ep_arm(struct abd_reactor *r, struct abd_source *s)
{
	int e;
	switch (s->kind) {
	case ABD__SRC_IO:
		e = ctl(r, EPOLL_CTL_ADD, s->fd, s->events, s);
		break;
	case ABD__SRC_EVENTFD:
		s->ck.tag = ABD__TAG_EVENTFD_POLL;
		e = ctl(r, EPOLL_CTL_ADD, s->fd, EPOLLIN, s);
		break;
	case ABD__SRC_PIDFD:
		e = ctl(r, EPOLL_CTL_ADD, s->fd, EPOLLIN, s);
		break;
	case ABD__SRC_READ:
		s->ck.tag = ABD__TAG_READ_POLL;
		e = ctl(r, EPOLL_CTL_ADD, s->fd, EPOLLIN, s);
		break;
	case ABD__SRC_TIMER:
		if (s->fd < 0) {
			s->fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
			if (s->fd < 0)
				return -errno;
			if ((e = ctl(r, EPOLL_CTL_ADD, s->fd, EPOLLIN, s)) < 0) {
				s->fd = abd__close(s->fd);
				return e;
			}
		}
		e = timer_set(s);
		break;
	case ABD__SRC_FUTEX:
	case ABD__SRC_DEFER:
	default:
		return -EOPNOTSUPP;
	}
	if (e == 0)
		s->armed = true;
	return e;
}

static void ep_disarm(struct abd_reactor *r, struct abd_source *s)
{
	switch (s->kind) {
	case ABD__SRC_IO:
	case ABD__SRC_EVENTFD:
	case ABD__SRC_PIDFD:
	case ABD__SRC_READ:
		/* The fd may be closed already (the kernel then dropped it from the set). */
		if (s->armed)
			ctl(r, EPOLL_CTL_DEL, s->fd, 0, NULL);
		break;
	case ABD__SRC_TIMER:
		s->fd = abd__close(s->fd); /* closing the timerfd takes it out of the set */
		break;
	default:
		break;
	}
	s->armed = false;
}

static void fail(struct abd_reactor *r, struct abd_source *s, int res)
{
	ep_disarm(r, s);
	if (abd__source_fire(r, s, res, 0) && !s->armed)
		abd__source_finished(r, s);
}

/* The dispatch switch: every event's data.ptr is a tagged cookie. */
static void dispatch(struct abd_reactor *r, struct abd__cookie *ck, uint32_t revents)
{
	switch (ck->tag) {
	case ABD__TAG_WAKE: {
		uint64_t v;
		(void)!read(E(r)->wakefd, &v, sizeof(v));
		return;
	}
	case ABD__TAG_IO_POLL: {
		struct abd_source *s = (struct abd_source *)ck;
		abd__source_fire(r, s, 0, revents); /* level-triggered: stays in the set */
		return;
	}
	case ABD__TAG_EVENTFD_POLL: {
		struct abd_source *s = (struct abd_source *)ck;
		if (s->dead)
			return;
		uint64_t v;
		int n = abd__reactor_eventfd_read(s->fd, &v);
		if (n == (int)sizeof(v))
			abd__source_fire(r, s, 0, v);
		else if (n < 0 && n != -EAGAIN && n != -EINTR)
			fail(r, s, n);
		return;
	}
	case ABD__TAG_READ_POLL: {
		struct abd_source *s = (struct abd_source *)ck;
		if (s->dead)
			return;
		ssize_t n = read(s->fd, s->buf, s->len);
		if (n > 0)
			abd__source_fire(r, s, 0, (uint64_t)n);
		else if (n == 0)
			fail(r, s, -EPIPE);
		else if (errno != EAGAIN && errno != EINTR)
			fail(r, s, -errno);
		return;
	}
	case ABD__TAG_PIDFD_POLL: {
		struct abd_source *s = (struct abd_source *)ck;
		if (s->dead || !s->armed)
			return;
		ep_disarm(r, s); /* one exit, one event */
		if (abd__source_fire(r, s, 0, 0) && !s->armed)
			abd__source_finished(r, s);
		return;
	}
	case ABD__TAG_TIMER: {
		struct abd_source *s = (struct abd_source *)ck;
		if (s->dead)
			return;
		uint64_t n;
		if (read(s->fd, &n, sizeof(n)) != (ssize_t)sizeof(n))
			return; /* re-armed meanwhile (settime resets the count), or spurious */
		if (!s->period)
			s->armed = false;
		else
			s->deadline += n * s->period;
		if (abd__source_fire(r, s, 0, n) && !s->armed)
			abd__source_finished(r, s);
		return;
	}
	case ABD__TAG_EVENTFD_READ:
	case ABD__TAG_FUTEX_WAIT:
	case ABD__TAG_FUTEX_THREAD:
	case ABD__TAG_READ:
	case ABD__TAG_DEFER:
	case ABD__TAG_OWNER:
	case ABD__TAG_CANCEL:
		return; /* never in the epoll set */
	}
}

static int ep_wait(struct abd_reactor *r, int64_t timeout_ns)
{
	int ms;
	if (timeout_ns < 0)
		ms = -1;
	else if (timeout_ns / 1000000 >= INT_MAX)
		ms = INT_MAX;
	else
		ms = (int)((timeout_ns + 999999) / 1000000); /* round up: never wake early */
	struct epoll_event evs[BATCH];
	int n = epoll_wait(E(r)->epfd, evs, BATCH, ms);
	if (n < 0 && errno == EINTR)
		r->interrupted = true;
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	/* Timers go last, in deadline order: epoll reports ready fds in no promised order. */
	struct abd_source *timers[BATCH];
	int nt = 0;
	for (int i = 0; i < n; i++) {
		struct abd__cookie *ck = evs[i].data.ptr;
		if (ck->tag != ABD__TAG_TIMER) {
			dispatch(r, ck, evs[i].events);
			continue;
		}
		struct abd_source *t = (struct abd_source *)ck;
		int j = nt++;
		for (; j > 0 && timers[j - 1]->deadline > t->deadline; j--)
			timers[j] = timers[j - 1];
		timers[j] = t;
	}
	for (int i = 0; i < nt; i++)
		dispatch(r, &timers[i]->ck, EPOLLIN);
	return 0;
}

static void ep_flush(struct abd_reactor *r)
{
	(void)r;
}

static void ep_drain(struct abd_reactor *r)
{
	(void)r;
}

static int ep_embed_fd(struct abd_reactor *r)
{
	struct ep *p = E(r);
	if (p->wakefd < 0) {
		int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (fd < 0)
			return -errno;
		int e = ctl(r, EPOLL_CTL_ADD, fd, EPOLLIN, &r->wake_ck);
		if (e < 0) {
			abd__close(fd);
			return e;
		}
		p->wakefd = fd;
		if (!abd__list_empty(&r->defers)) {
			uint64_t one = 1;
			(void)!write(fd, &one, sizeof(one));
		}
	}
	return p->epfd;
}

static void ep_wake(struct abd_reactor *r)
{
	struct ep *p = E(r);
	if (p->wakefd >= 0) {
		uint64_t one = 1;
		(void)!write(p->wakefd, &one, sizeof(one));
	}
}

static void ep_fini(struct abd_reactor *r)
{
	struct ep *p = E(r);
	abd__close(p->wakefd);
	abd__close(p->epfd);
	free(p);
	r->impl = NULL;
}

/* In a forked child the epoll set is shared with the parent: close, never EPOLL_CTL_DEL. */
static void ep_release(struct abd_reactor *r)
{
	struct abd__list *lists[] = { &r->sources, &r->zombies };
	for (size_t i = 0; i < ABD__ARRAY_SIZE(lists); i++)
		for (struct abd__list *e = lists[i]->next; e != lists[i]; e = e->next) {
			struct abd_source *s = abd__container_of(e, struct abd_source, link);
			if (s->kind == ABD__SRC_TIMER)
				s->fd = abd__close(s->fd);
		}
	ep_fini(r);
}

static bool ep_has_futex(struct abd_reactor *r)
{
	(void)r;
	return false;
}

const struct abd__backend abd__backend_epoll = {
	.kind = ABD_BACKEND_EPOLL,
	.init = ep_init,
	.fini = ep_fini,
	.release = ep_release,
	.embed_fd = ep_embed_fd,
	.arm = ep_arm,
	.disarm = ep_disarm,
	.wait = ep_wait,
	.flush = ep_flush,
	.drain = ep_drain,
	.wake = ep_wake,
	.has_futex = ep_has_futex,
};
