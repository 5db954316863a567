/* SPDX-License-Identifier: MIT */
/* The reactor's common half: handles, ownership checks, source bookkeeping (life, death and
 * the zombie list), the deferred queue and the loop. The kernel half is a backend
 * (reactor-internal.h); docs/reactor.md has the rules this file enforces. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "runtime/reactor-internal.h"

/* Bumped in every child fork() creates: a reactor made under another generation belongs to
 * the parent. Cheaper on every call than getpid(). */
static _Atomic uint64_t fork_gen;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void)
{
	atomic_fetch_add_explicit(&fork_gen, 1, memory_order_relaxed);
}

static void register_atfork(void)
{
	pthread_atfork(NULL, NULL, on_fork_child);
}

static inline bool forked(const struct abd_reactor *r)
{
	return r->fork_gen != atomic_load_explicit(&fork_gen, memory_order_relaxed);
}

/* 0, or why this caller may not touch the reactor. */
static inline int check_owner(const struct abd_reactor *r)
{
	if (abd__unlikely(forked(r)))
		return -ECHILD;
	if (abd__unlikely(!pthread_equal(pthread_self(), r->owner)))
		return -EBUSY;
	return 0;
}

int abd__reactor_new_sized(unsigned flags, unsigned sq_entries, struct abd_reactor **out)
{
	abd__check(out, -EINVAL);
	*out = NULL;
	abd__check(!(flags & ~(ABD_REACTOR_FORCE_EPOLL | ABD_REACTOR_FORCE_IO_URING |
	                       ABD__REACTOR_FUTEX_THREADS)), -EINVAL);
	bool futex_threads = flags & ABD__REACTOR_FUTEX_THREADS;
	flags &= ~ABD__REACTOR_FUTEX_THREADS;
	abd__check(flags != (ABD_REACTOR_FORCE_EPOLL | ABD_REACTOR_FORCE_IO_URING), -EINVAL);
	abd__check(sq_entries >= 1 && sq_entries <= 4096, -EINVAL);

	const struct abd__backend *be = &abd__backend_epoll;
	if (flags & ABD_REACTOR_FORCE_IO_URING) {
#if ABD_HAVE_LIBURING
		if (!abd_probe_has(ABD_FEAT_IO_URING) || !abd_probe_has(ABD_FEAT_URING_POLL_ADD) ||
		    !abd_probe_has(ABD_FEAT_URING_TIMEOUT) || !abd_probe_has(ABD_FEAT_URING_ASYNC_CANCEL))
			return -EOPNOTSUPP;
		be = &abd__backend_uring;
#else
		return -EOPNOTSUPP;
#endif
	} else if (!(flags & ABD_REACTOR_FORCE_EPOLL)) {
#if ABD_HAVE_LIBURING
		if (abd_choose_backend() == ABD_BACKEND_IO_URING && abd_probe_has(ABD_FEAT_URING_POLL_ADD) &&
		    abd_probe_has(ABD_FEAT_URING_TIMEOUT) && abd_probe_has(ABD_FEAT_URING_ASYNC_CANCEL))
			be = &abd__backend_uring;
#endif
	}

	pthread_once(&atfork_once, register_atfork);
	struct abd_reactor *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->be = be;
	r->owner = pthread_self();
	r->fork_gen = atomic_load_explicit(&fork_gen, memory_order_relaxed);
	abd__list_init(&r->sources);
	abd__list_init(&r->zombies);
	abd__list_init(&r->defers);
	abd__list_init(&r->pending);
	abd__list_init(&r->futex_thread_sources);
	r->cancel_ck.tag = ABD__TAG_CANCEL;
	r->wake_ck.tag = ABD__TAG_WAKE;
	r->sq_entries = sq_entries;
	r->futex_threads = futex_threads;
	int e = be->init(r);
	if (e < 0) {
		free(r);
		return e;
	}
	*out = r;
	return 0;
}

ABD_EXPORT int abd_reactor_new(unsigned flags, struct abd_reactor **out)
{
	if (out)
		*out = NULL;
	abd__check(!(flags & ABD__REACTOR_FUTEX_THREADS), -EINVAL);
	return abd__reactor_new_sized(flags, 256, out);
}

ABD_EXPORT int abd_reactor_backend(const struct abd_reactor *r)
{
	abd__check(r, -EINVAL);
	return (int)r->be->kind;
}

ABD_EXPORT int abd_reactor_fd(struct abd_reactor *r)
{
	abd__check(r, -EINVAL);
	int e = check_owner(r);
	if (e < 0)
		return e;
	return r->be->embed_fd(r);
}

ABD_EXPORT void *abd_source_userdata(const struct abd_source *s)
{
	return s ? s->userdata : NULL;
}

/* ---- source life ---- */

static void source_destroy(struct abd_source *s)
{
	abd__list_del(&s->link);
	abd__list_del(&s->qlink);
	free(s);
}

/* Free the dead sources nobody holds any more. Not while a dispatch runs: a backend may still
 * hold a pointer to any of them in its batch of events. */
static void reap_zombies(struct abd_reactor *r)
{
	struct abd__list *e = r->zombies.next;
	while (e != &r->zombies) {
		struct abd_source *s = abd__container_of(e, struct abd_source, link);
		e = e->next;
		if (s->inflight == 0 && s->pending == ABD__PEND_NONE)
			source_destroy(s);
	}
}

static void source_kill(struct abd_reactor *r, struct abd_source *s);

/* A futex wait served by a thread goes: the thread first (joined, so that it touches neither
 * the word nor the eventfd any more), then the doorbell's source, then the eventfd. */
static void futex_thread_kill(struct abd_reactor *r, struct abd_source *s)
{
	abd__list_del(&s->qlink);
	abd__futex_thread_stop(s->thread);
	source_kill(r, s->bell);
	abd__futex_thread_free(s->thread);
	s->thread = NULL;
	s->bell = NULL;
}

/* Kill a source: no callback from now on; the memory goes once nobody holds it. */
static void source_kill(struct abd_reactor *r, struct abd_source *s)
{
	if (s->dead)
		return;
	s->dead = true;
	if (s->kind == ABD__SRC_DEFER) {
		abd__list_del(&s->qlink);
		s->armed = false;
	} else if (s->ck.tag == ABD__TAG_FUTEX_THREAD) {
		if (s->thread)
			futex_thread_kill(r, s);
	} else if (s->kind != ABD__SRC_OWNER) {
		r->be->disarm(r, s);
	}
	s->armed = false;
	abd__list_del(&s->link);
	abd__list_add_tail(&r->zombies, &s->link);
	if (s->kind == ABD__SRC_OWNER && s->on_kill) {
		/* The object lets go of its own sources; s stays allocated (a zombie) meanwhile. */
		void (*hook)(void *) = s->on_kill;
		s->on_kill = NULL;
		hook(s->userdata);
	}
	if (r->depth == 0 && s->inflight == 0 && s->pending == ABD__PEND_NONE)
		source_destroy(s);
}

/* A live source that owns other sources (an owner; a futex wait served by a thread, whose
 * doorbell is a source), or NULL. Those go first: they free what they own. */
static struct abd_source *first_owner(struct abd_reactor *r)
{
	for (struct abd__list *e = r->sources.next; e != &r->sources; e = e->next) {
		struct abd_source *s = abd__container_of(e, struct abd_source, link);
		if (s->kind == ABD__SRC_OWNER || s->ck.tag == ABD__TAG_FUTEX_THREAD)
			return s;
	}
	return NULL;
}

void abd__source_release(struct abd_reactor *r, struct abd_source *s)
{
	if (s->dead && r->depth == 0 && s->inflight == 0 && s->pending == ABD__PEND_NONE)
		source_destroy(s);
}

void abd__source_finished(struct abd_reactor *r, struct abd_source *s)
{
	s->armed = false;
	if (s->floating)
		source_kill(r, s);
}

bool abd__source_fire(struct abd_reactor *r, struct abd_source *s, int status, uint64_t value)
{
	if (s->dead)
		return false;
	r->dispatched++;
	s->fn(s, status, value, s->userdata);
	return !s->dead;
}

ABD_EXPORT void abd_source_free(struct abd_source *s)
{
	if (!s)
		return;
	struct abd_reactor *r = s->reactor;
	if (forked(r)) {
		/* The child's copy: the kernel objects still serve the parent. */
		if (s->kind == ABD__SRC_TIMER && r->be->kind == ABD_BACKEND_EPOLL)
			abd__close(s->fd);
		if (s->kind == ABD__SRC_OWNER && s->on_kill) {
			void (*hook)(void *) = s->on_kill;
			s->on_kill = NULL;
			hook(s->userdata);
		}
		if (s->thread) {
			/* fork copied no thread: only the eventfd and the memory are the child's */
			source_destroy(s->bell);
			abd__futex_thread_free(s->thread);
		}
		source_destroy(s);
		return;
	}
	if (check_owner(r) < 0 || s->dead)
		return;
	source_kill(r, s);
}

static int source_new_sized(struct abd_reactor *r, enum abd__kind kind, abd_source_fn *fn,
                            void *userdata, struct abd_source **out, struct abd_source **sp,
                            size_t extra)
{
	abd__check(r && fn, -EINVAL);
	int e = check_owner(r);
	if (e < 0)
		return e;
	if (r->freeing)
		return -EBUSY;
	struct abd_source *s = calloc(1, sizeof(*s) + extra);
	if (!s)
		return -ENOMEM;
	s->kind = kind;
	s->reactor = r;
	s->fn = fn;
	s->userdata = userdata;
	s->floating = out == NULL;
	s->fd = -1;
	abd__list_init(&s->link);
	abd__list_init(&s->qlink);
	*sp = s;
	return 0;
}

static int source_new(struct abd_reactor *r, enum abd__kind kind, abd_source_fn *fn,
                      void *userdata, struct abd_source **out, struct abd_source **sp)
{
	return source_new_sized(r, kind, fn, userdata, out, sp, 0);
}

/* Hand a fresh source to the backend; on failure it never existed. */
static int source_start(struct abd_reactor *r, struct abd_source *s, struct abd_source **out)
{
	abd__list_add_tail(&r->sources, &s->link);
	int e = r->be->arm(r, s);
	if (e < 0) {
		if (s->inflight || s->pending) {
			s->dead = true; /* cannot happen today; never free what the kernel holds */
			abd__list_del(&s->link);
			abd__list_add_tail(&r->zombies, &s->link);
		} else {
			source_destroy(s);
		}
		return e;
	}
	if (out)
		*out = s;
	return 0;
}

static int check_fd(int fd)
{
	abd__check(fd >= 0, -EINVAL);
	return fcntl(fd, F_GETFD) < 0 ? -EBADF : 0;
}

ABD_EXPORT int abd_reactor_add_io(struct abd_reactor *r, int fd, uint32_t events,
                                  abd_source_fn *fn, void *userdata, struct abd_source **out)
{
	if (out)
		*out = NULL;
	abd__check(!(events & ~(uint32_t)(POLLIN | POLLOUT | POLLPRI | POLLERR | POLLHUP | POLLRDHUP)),
	           -EINVAL);
	abd__check(events != 0, -EINVAL);
	struct abd_source *s;
	int e = source_new(r, ABD__SRC_IO, fn, userdata, out, &s);
	if (e < 0)
		return e;
	if ((e = check_fd(fd)) < 0) {
		free(s);
		return e;
	}
	s->ck.tag = ABD__TAG_IO_POLL;
	s->fd = fd;
	s->events = events;
	return source_start(r, s, out);
}

ABD_EXPORT int abd_reactor_add_eventfd(struct abd_reactor *r, int fd, abd_source_fn *fn,
                                       void *userdata, struct abd_source **out)
{
	if (out)
		*out = NULL;
	struct abd_source *s;
	int e = source_new(r, ABD__SRC_EVENTFD, fn, userdata, out, &s);
	if (e < 0)
		return e;
	if ((e = check_fd(fd)) < 0) {
		free(s);
		return e;
	}
	s->ck.tag = ABD__TAG_EVENTFD_READ;
	s->fd = fd;
	return source_start(r, s, out);
}

ABD_EXPORT int abd_reactor_add_pidfd(struct abd_reactor *r, int pidfd, abd_source_fn *fn,
                                     void *userdata, struct abd_source **out)
{
	if (out)
		*out = NULL;
	struct abd_source *s;
	int e = source_new(r, ABD__SRC_PIDFD, fn, userdata, out, &s);
	if (e < 0)
		return e;
	if ((e = check_fd(pidfd)) < 0) {
		free(s);
		return e;
	}
	s->ck.tag = ABD__TAG_PIDFD_POLL;
	s->fd = pidfd;
	return source_start(r, s, out);
}

static int timer_values(struct abd_source *s, uint64_t when_ns, uint64_t period_ns, unsigned flags)
{
	abd__check(!(flags & ~ABD_TIMER_ABSOLUTE), -EINVAL);
	uint64_t deadline = (flags & ABD_TIMER_ABSOLUTE) ? when_ns : abd__clock_ns() + when_ns;
	abd__check(deadline >= when_ns && deadline < (UINT64_MAX >> 1), -EINVAL); /* no wrap */
	abd__check(period_ns < (UINT64_MAX >> 2), -EINVAL);
	s->deadline = deadline;
	s->period = period_ns;
	return 0;
}

ABD_EXPORT int abd_reactor_add_timer(struct abd_reactor *r, uint64_t when_ns, uint64_t period_ns,
                                     unsigned flags, abd_source_fn *fn, void *userdata,
                                     struct abd_source **out)
{
	if (out)
		*out = NULL;
	struct abd_source *s;
	int e = source_new(r, ABD__SRC_TIMER, fn, userdata, out, &s);
	if (e < 0)
		return e;
	if ((e = timer_values(s, when_ns, period_ns, flags)) < 0) {
		free(s);
		return e;
	}
	s->ck.tag = ABD__TAG_TIMER;
	return source_start(r, s, out);
}

ABD_EXPORT int abd_source_set_timer(struct abd_source *s, uint64_t when_ns, uint64_t period_ns,
                                    unsigned flags)
{
	abd__check(s && s->kind == ABD__SRC_TIMER, -EINVAL);
	struct abd_reactor *r = s->reactor;
	int e = check_owner(r);
	if (e < 0)
		return e;
	abd__check(!s->dead, -EINVAL);
	if ((e = timer_values(s, when_ns, period_ns, flags)) < 0)
		return e;
	return r->be->arm(r, s);
}

/* The doorbell of a futex wait served by a thread rang: the wait ended. The bell's own
 * dispatch counted the callback run here. */
static void futex_thread_rang(struct abd_source *bell, int status, uint64_t value, void *ud)
{
	(void)bell, (void)value;
	struct abd_source *s = ud;
	int res = status;
	if (s->dead || !s->armed || (status == 0 && !abd__futex_thread_report(s->thread,
	                                                                      s->thread_seq, &res))) {
		/* the report of a wait the loop settled already (futex_threads_look): no callback */
		s->reactor->dispatched--;
		return;
	}
	s->armed = false;
	s->fired_turn = s->reactor->turn;
	s->fn(s, res < 0 ? res : 0, res < 0 ? 0 : (uint64_t)res, s->userdata);
	if (!s->dead && !s->armed)
		abd__source_finished(s->reactor, s);
}

/* A futex source where the backend cannot wait on the word: a thread waits and rings an
 * eventfd the backend watches (compat/futex-thread.c). */
static int futex_thread_start(struct abd_reactor *r, struct abd_source *s, struct abd_source **out)
{
	if (abd_probe_has(ABD_FEAT_FUTEX) != 1) {
		free(s);
		return -EOPNOTSUPP;
	}
	s->ck.tag = ABD__TAG_FUTEX_THREAD;
	int e = abd__futex_thread_start(s->word, &s->thread);
	if (e < 0) {
		free(s);
		return e;
	}
	/* The parent before its bell in the list: abd_reactor_free meets it first anyway. */
	abd__list_add_tail(&r->sources, &s->link);
	e = abd_reactor_add_eventfd(r, s->thread->efd, futex_thread_rang, s, &s->bell);
	if (e < 0) {
		abd__futex_thread_stop(s->thread);
		abd__futex_thread_free(s->thread);
		source_destroy(s);
		return e;
	}
	s->armed = true;
	s->thread_seq = abd__futex_thread_arm(s->thread, s->expected);
	abd__list_add_tail(&r->futex_thread_sources, &s->qlink);
	if (out)
		*out = s;
	return 0;
}

ABD_EXPORT int abd_reactor_add_futex(struct abd_reactor *r, const uint32_t *word, uint32_t expected,
                                     abd_source_fn *fn, void *userdata, struct abd_source **out)
{
	if (out)
		*out = NULL;
	abd__check(word && ((uintptr_t)word & 3) == 0, -EINVAL);
	abd__check(r, -EINVAL);
	int e = check_owner(r);
	if (e < 0)
		return e;
	struct abd_source *s;
	if ((e = source_new(r, ABD__SRC_FUTEX, fn, userdata, out, &s)) < 0)
		return e;
	s->word = word;
	s->expected = expected;
	if (r->futex_threads || !r->be->has_futex(r))
		return futex_thread_start(r, s, out);
	s->ck.tag = ABD__TAG_FUTEX_WAIT;
	return source_start(r, s, out);
}

ABD_EXPORT int abd_source_futex_arm(struct abd_source *s, uint32_t expected)
{
	abd__check(s && s->kind == ABD__SRC_FUTEX, -EINVAL);
	struct abd_reactor *r = s->reactor;
	int e = check_owner(r);
	if (e < 0)
		return e;
	abd__check(!s->dead, -EINVAL);
	if (s->armed)
		return -EALREADY;
	s->expected = expected;
	if (s->ck.tag == ABD__TAG_FUTEX_THREAD) {
		s->armed = true;
		s->thread_seq = abd__futex_thread_arm(s->thread, expected);
		return 0;
	}
	return r->be->arm(r, s);
}

ABD_EXPORT int abd_reactor_add_defer(struct abd_reactor *r, abd_source_fn *fn, void *userdata,
                                     struct abd_source **out)
{
	if (out)
		*out = NULL;
	struct abd_source *s;
	int e = source_new(r, ABD__SRC_DEFER, fn, userdata, out, &s);
	if (e < 0)
		return e;
	s->ck.tag = ABD__TAG_DEFER;
	s->armed = true;
	abd__list_add_tail(&r->sources, &s->link);
	bool was_empty = abd__list_empty(&r->defers);
	abd__list_add_tail(&r->defers, &s->qlink);
	/* Outside run_once an embedder is sleeping on the fd: tell it there is work. Inside,
	 * run_once does it on the way out. */
	if (was_empty && r->depth == 0)
		r->be->wake(r);
	if (out)
		*out = s;
	return 0;
}

int abd__reactor_add_read(struct abd_reactor *r, int fd, size_t len, abd_source_fn *fn,
                          void *userdata, struct abd_source **out)
{
	if (out)
		*out = NULL;
	abd__check(len > 0 && len <= (1u << 20), -EINVAL);
	struct abd_source *s;
	int e = source_new_sized(r, ABD__SRC_READ, fn, userdata, out, &s, len);
	if (e < 0)
		return e;
	if ((e = check_fd(fd)) < 0) {
		free(s);
		return e;
	}
	s->ck.tag = ABD__TAG_READ;
	s->fd = fd;
	s->buf = s + 1; /* after the source, in its allocation: freed when the kernel let go */
	s->len = len;
	return source_start(r, s, out);
}

static void owner_never_fires(struct abd_source *s, int status, uint64_t value, void *userdata)
{
	(void)s, (void)status, (void)value, (void)userdata;
}

int abd__reactor_add_owner(struct abd_reactor *r, void (*on_kill)(void *userdata), void *userdata,
                           struct abd_source **out)
{
	if (out)
		*out = NULL;
	abd__check(on_kill, -EINVAL);
	struct abd_source *s;
	int e = source_new(r, ABD__SRC_OWNER, owner_never_fires, userdata, out, &s);
	if (e < 0)
		return e;
	s->ck.tag = ABD__TAG_OWNER;
	s->armed = true;
	s->on_kill = on_kill;
	abd__list_add_tail(&r->sources, &s->link);
	if (out)
		*out = s;
	return 0;
}

int abd__reactor_check(const struct abd_reactor *r)
{
	abd__check(r, -EINVAL);
	return check_owner(r);
}

/* ---- the loop ---- */

/* Futex waits served by threads whose word has moved already end in this turn, value 0, as
 * IORING_OP_FUTEX_WAIT would have completed at the wake: a wake and another event that came
 * together (the last message, then its publisher's exit) are reported in the order they
 * happened, not behind the thread's ring of the bell (then ignored: a report of a wait the
 * loop settled). A load per source, no syscall; at most one callback per source per turn
 * (not for a source whose bell already rang in it), as with io_uring. */
static void futex_threads_look(struct abd_reactor *r)
{
	if (abd__list_empty(&r->futex_thread_sources))
		return;
	struct abd__list todo;
	abd__list_init(&todo);
	abd__list_splice(&todo, &r->futex_thread_sources);
	while (!abd__list_empty(&todo)) {
		struct abd_source *s = abd__container_of(todo.next, struct abd_source, qlink);
		abd__list_del(&s->qlink);
		abd__list_add_tail(&r->futex_thread_sources, &s->qlink);
		if (!s->armed || s->fired_turn == r->turn ||
		    __atomic_load_n(s->word, __ATOMIC_ACQUIRE) == s->expected)
			continue;
		s->armed = false;
		s->fired_turn = r->turn;
		r->dispatched++;
		s->fn(s, 0, 0, s->userdata); /* may free any source: each leaves its list */
		if (!s->dead && !s->armed)
			abd__source_finished(r, s);
	}
}

ABD_EXPORT int abd_reactor_run_once(struct abd_reactor *r, int64_t timeout_ns)
{
	abd__check(r, -EINVAL);
	int e = check_owner(r);
	if (e < 0)
		return e;
	if (r->depth > 0 || r->freeing)
		return -EBUSY;

	/* Deferred calls queued before this iteration run in it; those they queue, in the next. */
	struct abd__list due;
	abd__list_init(&due);
	abd__list_splice(&due, &r->defers);
	if (!abd__list_empty(&due))
		timeout_ns = 0;

	r->depth++;
	r->turn++;
	r->dispatched = 0;
	r->interrupted = false;
	e = r->be->wait(r, timeout_ns);
	futex_threads_look(r);
	while (!abd__list_empty(&due)) {
		struct abd_source *s = abd__container_of(due.next, struct abd_source, qlink);
		abd__list_del(&s->qlink);
		s->armed = false;
		abd__source_fire(r, s, 0, 0);
		if (!s->dead)
			abd__source_finished(r, s);
	}
	r->depth--;
	reap_zombies(r);
	r->be->flush(r);
	if (!abd__list_empty(&r->defers))
		r->be->wake(r);
	if (e < 0 && e != -EINTR && e != -ETIME)
		return e;
	return (int)r->dispatched;
}

bool abd__reactor_interrupted(const struct abd_reactor *r)
{
	return r->interrupted;
}

ABD_EXPORT int abd_reactor_run(struct abd_reactor *r)
{
	abd__check(r, -EINVAL);
	int e = check_owner(r);
	if (e < 0)
		return e;
	if (r->depth > 0)
		return -EBUSY;
	do {
		e = abd_reactor_run_once(r, -1);
	} while (e >= 0 && !r->stop);
	r->stop = false;
	return e < 0 ? e : 0;
}

ABD_EXPORT int abd_reactor_stop(struct abd_reactor *r)
{
	abd__check(r, -EINVAL);
	int e = check_owner(r);
	if (e < 0)
		return e;
	r->stop = true;
	return 0;
}

ABD_EXPORT void abd_reactor_free(struct abd_reactor *r)
{
	if (!r)
		return;
	if (forked(r)) {
		/* Owners first: their hooks free the sources they made. */
		for (struct abd_source *s; (s = first_owner(r));)
			abd_source_free(s);
		r->be->release(r);
		while (!abd__list_empty(&r->sources))
			source_destroy(abd__container_of(r->sources.next, struct abd_source, link));
		while (!abd__list_empty(&r->zombies))
			source_destroy(abd__container_of(r->zombies.next, struct abd_source, link));
		free(r);
		return;
	}
	if (check_owner(r) < 0 || r->depth > 0 || r->freeing)
		return;
	r->freeing = true;
	/* Owners first: their hooks free the sources they made, which must not go before. */
	for (struct abd_source *s; (s = first_owner(r));)
		source_kill(r, s);
	while (!abd__list_empty(&r->sources))
		source_kill(r, abd__container_of(r->sources.next, struct abd_source, link));
	r->be->drain(r);
	reap_zombies(r);
	/* Whatever the kernel still holds after drain gave up is leaked, never freed under it. */
	r->be->fini(r);
	if (abd__list_empty(&r->zombies))
		free(r);
}
