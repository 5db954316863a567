/* SPDX-License-Identifier: MIT */
/* The reactor's inside: sources, cookie tags, and the small interface every backend
 * (runtime/reactor-uring.c, compat/reactor-epoll.c) implements. docs/reactor.md explains it. */
#ifndef ABD_RUNTIME_REACTOR_INTERNAL_H
#define ABD_RUNTIME_REACTOR_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <abd/reactor.h>

#include "compat/futex-thread.h"
#include "config.h"
#include "runtime/internal.h"

/* Every completion cookie (io_uring user_data, epoll data.ptr) points at a struct whose first
 * field is one of these; the backends' dispatch switch is the map of the reactor. */
enum abd__tag {
	ABD__TAG_IO_POLL = 1,     /* abd_source: poll on a user fd */
	ABD__TAG_EVENTFD_READ,    /* abd_source: 8-byte read of an eventfd (io_uring READ) */
	ABD__TAG_EVENTFD_POLL,    /* abd_source: poll on an eventfd, then read(2) */
	ABD__TAG_PIDFD_POLL,      /* abd_source: poll on a pidfd (exit) */
	ABD__TAG_TIMER,           /* abd_source: io_uring TIMEOUT, or its timerfd under epoll */
	ABD__TAG_FUTEX_WAIT,      /* abd_source: IORING_OP_FUTEX_WAIT */
	ABD__TAG_FUTEX_THREAD,    /* abd_source: a futex wait served by a thread; never reaches the
	                           * kernel (its doorbell, an eventfd source, does) */
	ABD__TAG_DEFER,           /* abd_source: deferred call; never reaches the kernel */
	ABD__TAG_READ,            /* abd_source: io_uring READ into a caller buffer (inotify) */
	ABD__TAG_READ_POLL,       /* abd_source: poll, then read(2) into the caller buffer */
	ABD__TAG_OWNER,           /* abd_source: a watch or server; never reaches the kernel */
	ABD__TAG_CANCEL,          /* abd__cookie in the reactor: an ASYNC_CANCEL's own completion */
	ABD__TAG_WAKE,            /* abd__cookie in the reactor: the internal wake eventfd */
};

struct abd__cookie {
	enum abd__tag tag;
};

/* Intrusive circular list. */
struct abd__list {
	struct abd__list *prev, *next;
};

static inline void abd__list_init(struct abd__list *l)
{
	l->prev = l->next = l;
}
static inline bool abd__list_empty(const struct abd__list *l)
{
	return l->next == l;
}
static inline void abd__list_del(struct abd__list *e)
{
	e->prev->next = e->next;
	e->next->prev = e->prev;
	abd__list_init(e);
}
static inline void abd__list_add_tail(struct abd__list *head, struct abd__list *e)
{
	e->prev = head->prev;
	e->next = head;
	head->prev->next = e;
	head->prev = e;
}
/* Move every entry of from to the tail of to; from becomes empty. */
static inline void abd__list_splice(struct abd__list *to, struct abd__list *from)
{
	if (abd__list_empty(from))
		return;
	from->next->prev = to->prev;
	to->prev->next = from->next;
	from->prev->next = to;
	to->prev = from->prev;
	abd__list_init(from);
}
#define abd__container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))

enum abd__kind {
	ABD__SRC_IO = 1,
	ABD__SRC_EVENTFD,
	ABD__SRC_PIDFD,
	ABD__SRC_TIMER,
	ABD__SRC_FUTEX,
	ABD__SRC_DEFER,
	ABD__SRC_READ,    /* internal: a read into a caller buffer, re-armed after each */
	ABD__SRC_OWNER,   /* internal: stands for an object that owns sources (watch, server) */
};

/* A queued kernel operation the SQ had no room for (io_uring): done before the next wait. */
enum abd__pending {
	ABD__PEND_NONE = 0,
	ABD__PEND_ARM,
	ABD__PEND_CANCEL,
	ABD__PEND_REPLAY,   /* a completion kept across a ring swap, delivered next wait */
};

struct abd_source {
	struct abd__cookie ck;     /* first: what the in-flight operation is */
	enum abd__kind kind;
	bool dead;                 /* freed by the user (or floating and finished) */
	bool floating;             /* owned by the reactor */
	bool armed;                /* the backend watches it (or will, once pending is done) */
	enum abd__pending pending;
	uint32_t inflight;         /* io_uring requests not yet completed */
	struct abd_reactor *reactor;
	abd_source_fn *fn;
	void *userdata;
	struct abd__list link;     /* reactor->sources, then reactor->zombies */
	struct abd__list qlink;    /* reactor->defers / reactor->pending (one at a time), or
	                            * reactor->futex_threads (FUTEX_THREAD) */
	int fd;                    /* borrowed user fd; the timerfd (owned) under epoll */
	uint32_t events;           /* poll events (io) */
	uint64_t value;            /* eventfd read buffer (the kernel writes it) */
	/* timer: absolute CLOCK_MONOTONIC deadline and period, ns */
	uint64_t deadline, period;
	struct {                   /* struct __kernel_timespec for io_uring TIMEOUT */
		int64_t tv_sec;
		long long tv_nsec;
	} ts;
	/* futex */
	const uint32_t *word;
	uint32_t expected;
	struct abd__futex_thread *thread; /* FUTEX_THREAD: the thread waiting on the word */
	struct abd_source *bell;          /* FUTEX_THREAD: the eventfd source of its doorbell */
	uint32_t thread_seq;              /* FUTEX_THREAD: the number of the thread's current wait */
	uint64_t fired_turn;              /* FUTEX_THREAD: the reactor's turn when it last fired */
	int replay_res;            /* ABD__PEND_REPLAY: the completion's result */
	/* read: the caller's buffer (the kernel writes it while a READ is in flight) */
	void *buf;
	size_t len;
	/* owner: called once when the source is killed (freed by the user, by its object, or
	 * with the reactor), before anything else of the reactor goes; frees its children */
	void (*on_kill)(void *userdata);
};

struct abd__backend;

struct abd_reactor {
	const struct abd__backend *be;
	pthread_t owner;
	uint64_t fork_gen;
	int depth;                  /* > 0 while run_once runs (callbacks may run) */
	bool stop;
	bool freeing;
	struct abd__list sources;   /* live sources */
	struct abd__list zombies;   /* freed sources the kernel (or the current dispatch) holds */
	struct abd__list defers;    /* deferred calls queued for the next iteration */
	struct abd__list pending;   /* io_uring: arms/cancels waiting for SQ room */
	struct abd__list futex_thread_sources; /* FUTEX_THREAD sources, looked at every turn */
	unsigned dispatched;        /* callbacks run in this run_once */
	uint64_t turn;              /* run_once calls so far */
	bool interrupted;           /* this run_once's wait returned EINTR (abd__reactor_interrupted) */
	struct abd__cookie cancel_ck;
	struct abd__cookie wake_ck;
	unsigned sq_entries;        /* io_uring SQ size (tests make it small) */
	bool futex_threads;         /* ABD__REACTOR_FUTEX_THREADS */
	void *impl;                 /* the backend's state */
};

/* The backend interface: chosen once in abd_reactor_new. Every function runs on the owner
 * thread, never in a forked child (except release). */
struct abd__backend {
	enum abd_backend kind;
	int (*init)(struct abd_reactor *r);
	/* Called after every source is gone and, for io_uring, no request is in flight. */
	void (*fini)(struct abd_reactor *r);
	/* In a forked child: free memory and close fds, touch no shared kernel state. */
	void (*release)(struct abd_reactor *r);
	int (*embed_fd)(struct abd_reactor *r);
	/* Start watching s (all kinds but DEFER); also re-arms a fired one-shot source. */
	int (*arm)(struct abd_reactor *r, struct abd_source *s);
	/* Stop watching s. io_uring may leave s->inflight > 0 (cancel on its way). */
	void (*disarm)(struct abd_reactor *r, struct abd_source *s);
	/* Wait up to timeout_ns (< 0 forever) and dispatch through abd__source_fire. */
	int (*wait)(struct abd_reactor *r, int64_t timeout_ns);
	/* End of run_once: hand the kernel what callbacks queued, if an embedder will sleep. */
	void (*flush)(struct abd_reactor *r);
	/* Block until no request is in flight (reactor free); io_uring only. */
	void (*drain)(struct abd_reactor *r);
	/* Make the embedding fd readable (deferred work is queued). */
	void (*wake)(struct abd_reactor *r);
	/* Whether this backend waits on futex words itself (else a thread serves each one). */
	bool (*has_futex)(struct abd_reactor *r);
};

extern const struct abd__backend abd__backend_epoll;
#if ABD_HAVE_LIBURING
extern const struct abd__backend abd__backend_uring;
#endif

/* The synchronous read of an eventfd source after the kernel said it is readable: a peer
 * sharing the descriptor's open file description may clear O_NONBLOCK on it and drain it
 * between the readiness and the read, so the read must never sleep on its own: preadv2 with
 * RWF_NOWAIT (abd__eventfd_drain). On a kernel whose eventfd ignores RWF_NOWAIT (before 5.12)
 * a plain read, only while the description says O_NONBLOCK (a peer flipping the flag between
 * the check and the read can still make that one read sleep there: use io_uring). Returns 8,
 * or -errno (-EAGAIN: nothing to read). */
static inline int abd__reactor_eventfd_read(int fd, uint64_t *v)
{
	int n = abd__eventfd_drain(fd, v);
	if (n != -EOPNOTSUPP)
		return n;
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -errno;
	if (!(fl & O_NONBLOCK))
		return -EAGAIN;
	ssize_t r = read(fd, v, sizeof(*v));
	return r < 0 ? -errno : r == (ssize_t)sizeof(*v) ? (int)r : -EIO;
}

/* Deliver an event: runs the callback unless the source is dead. Returns true when the
 * source is still alive and armed afterwards (the backend then re-arms persistent sources). */
bool abd__source_fire(struct abd_reactor *r, struct abd_source *s, int status, uint64_t value);

/* The source can never fire again (one-shot done, or failed): mark it unarmed; a floating
 * source is freed. */
void abd__source_finished(struct abd_reactor *r, struct abd_source *s);

/* The kernel returned s's last request: a dead source may now be freed. */
void abd__source_release(struct abd_reactor *r, struct abd_source *s);

/* Internal sources for the layers built on the reactor (watch.c, handshake.c).
 * read: fn(status 0, value = bytes read into abd__source_buf(source), len bytes that live in
 * the source's own allocation, so the kernel may write them until its READ comes back even
 * after the source was freed) after each read, re-armed until freed; status -errno when the
 * read fails (then inactive). fd borrowed.
 * owner: a source that never reaches the kernel and never fires; killing it (abd_source_free,
 * or abd_reactor_free, which kills owners before every other source) calls on_kill(userdata)
 * once, where the object frees the sources it made. */
int abd__reactor_add_read(struct abd_reactor *r, int fd, size_t len, abd_source_fn *fn,
                          void *userdata, struct abd_source **out);
int abd__reactor_add_owner(struct abd_reactor *r, void (*on_kill)(void *userdata), void *userdata,
                           struct abd_source **out);
/* 0, or -ECHILD / -EBUSY when the caller may not use r (forked child, other thread). */
int abd__reactor_check(const struct abd_reactor *r);
/* After abd_reactor_run_once: whether its wait ended by EINTR (a signal handler ran, or, on a
 * ring without DEFER_TASKRUN, the kernel's task-work notification: callers that report it as
 * -EINTR may report it spuriously, never miss one). */
bool abd__reactor_interrupted(const struct abd_reactor *r);
static inline void *abd__source_buf(const struct abd_source *s)
{
	return s->buf;
}
/* Whether the source was killed (its callback will never run again). */
static inline bool abd__source_dead(const struct abd_source *s)
{
	return s->dead;
}

/* Tests: a reactor with a tiny io_uring SQ, to exercise the full-SQ and CQ-overflow paths.
 * flags may add ABD__REACTOR_FUTEX_THREADS: futex sources are served by threads even where
 * the backend waits on futex words itself (io_uring 6.7+), so that this kernel also runs
 * what an io_uring without FUTEX_WAIT (5.10-6.6) does. */
#define ABD__REACTOR_FUTEX_THREADS 0x80000000u
int abd__reactor_new_sized(unsigned flags, unsigned sq_entries, struct abd_reactor **out);

/* Whether the backend ever sees this source (deferred calls, owners and futex waits served by
 * a thread live in the common code only). */
static inline bool abd__source_in_kernel(const struct abd_source *s)
{
	return s->ck.tag != ABD__TAG_DEFER && s->ck.tag != ABD__TAG_OWNER &&
	       s->ck.tag != ABD__TAG_FUTEX_THREAD;
}

static inline uint64_t abd__clock_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
