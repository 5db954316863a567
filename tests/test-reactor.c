/* SPDX-License-Identifier: MIT */
/* The reactor: one behavioural suite, every test run on both backends (suite reactor_uring
 * and reactor_epoll). io_uring cases skip, saying why, where the profile has no io_uring.
 * Futex-source tests also run as reactor_uring_threads (io_uring with its futex waits served
 * by threads, as on 5.10-6.6). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "harness.h"
#include "tests/reactor-util.h"
#include "runtime/reactor-internal.h"

/* Each test body takes the reactor flags of its backend; the macro makes one Criterion test
 * per backend. */
#define REACTOR_TEST(name, ...) ABD_REACTOR_TEST(reactor, name, ##__VA_ARGS__)

/* The same for tests of futex sources, plus io_uring with the waits served by threads: on
 * this kernel io_uring has FUTEX_WAIT, so that is how the io_uring of 5.10-6.6 is run. */
#define FUTEX_TEST(name)                                                                \
	static void name##_body(unsigned flags);                                            \
	ABD_TEST(reactor_uring, name, .timeout = 60)                                        \
	{                                                                                   \
		abd_test_require_uring();                                                       \
		name##_body(ABD_REACTOR_FORCE_IO_URING);                                        \
	}                                                                                   \
	ABD_TEST(reactor_uring_threads, name, .timeout = 60)                                \
	{                                                                                   \
		abd_test_require_uring();                                                       \
		name##_body(ABD_REACTOR_FORCE_IO_URING | ABD__REACTOR_FUTEX_THREADS);           \
	}                                                                                   \
	ABD_TEST(reactor_epoll, name, .timeout = 60)                                        \
	{                                                                                   \
		name##_body(ABD_REACTOR_FORCE_EPOLL);                                           \
	}                                                                                   \
	static void name##_body(unsigned flags)

static bool is_uring(unsigned flags)
{
	return flags & ABD_REACTOR_FORCE_IO_URING;
}

/* Whether this reactor's futex sources are served by threads. */
static bool futex_by_thread(unsigned flags)
{
	return !is_uring(flags) || (flags & ABD__REACTOR_FUTEX_THREADS) ||
	       abd_probe_has(ABD_FEAT_URING_FUTEX_WAIT) != 1;
}

static struct abd_reactor *new_reactor(unsigned flags)
{
	struct abd_reactor *r = NULL;
	int e = abd__reactor_new_sized(flags, 256, &r);
	cr_assert_eq(e, 0, "abd_reactor_new: %s", strerror(-e));
	cr_assert_eq(abd_reactor_backend(r),
	             is_uring(flags) ? ABD_BACKEND_IO_URING : ABD_BACKEND_EPOLL);
	return r;
}

/* Run the loop until *done or a generous safety bound (a failure, not a timing check). */
static void run_until(struct abd_reactor *r, const int *done, int want)
{
	uint64_t end = abd_test_now_ns() + 20ull * 1000000000u;
	while (*done < want) {
		int n = abd_reactor_run_once(r, 100 * 1000 * 1000);
		cr_assert_geq(n, 0, "run_once: %s", strerror(-n));
		cr_assert_lt(abd_test_now_ns(), end, "event never came (%d of %d)", *done, want);
	}
}

static void drain_zero(struct abd_reactor *r)
{
	/* A few non-blocking turns: whatever was due is dispatched. */
	for (int i = 0; i < 3; i++)
		cr_assert_geq(abd_reactor_run_once(r, 0), 0);
}

struct rec {
	int calls;
	int status;
	uint64_t value;
	uint64_t sum;
	struct abd_source *src;
};

static void record(struct abd_source *s, int status, uint64_t value, void *ud)
{
	struct rec *rc = ud;
	cr_assert_eq(abd_source_userdata(s), ud);
	rc->calls++;
	rc->status = status;
	rc->value = value;
	rc->sum += value;
}

static void never(struct abd_source *s, int status, uint64_t value, void *ud)
{
	(void)s;
	(void)ud;
	cr_assert_fail("callback of a removed source ran (status %d value %llu)", status,
	               (unsigned long long)value);
}

static void write_u64(int fd, uint64_t v)
{
	cr_assert_eq(write(fd, &v, sizeof(v)), (ssize_t)sizeof(v));
}

static int futex_wake(uint32_t *word)
{
	return (int)syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* ---- fd readiness ---- */

REACTOR_TEST(fd_readiness_is_level_triggered)
{
	struct abd_reactor *r = new_reactor(flags);
	int p[2];
	cr_assert_eq(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
	struct rec rc = { 0 };
	struct abd_source *s;
	cr_assert_eq(abd_reactor_add_io(r, p[0], POLLIN, record, &rc, &s), 0);
	drain_zero(r);
	cr_assert_eq(rc.calls, 0, "an empty pipe is not readable");

	cr_assert_eq(write(p[1], "x", 1), 1);
	run_until(r, &rc.calls, 1);
	cr_assert_eq(rc.status, 0);
	cr_assert(rc.value & POLLIN);
	/* Not consumed: it fires again. */
	run_until(r, &rc.calls, 2);
	char c;
	cr_assert_eq(read(p[0], &c, 1), 1);
	drain_zero(r);
	int calls = rc.calls;
	drain_zero(r);
	cr_assert_eq(rc.calls, calls, "a drained pipe fired again");

	/* POLLOUT on the write end, hang-up on the read end. */
	struct rec wr = { 0 };
	struct abd_source *w;
	cr_assert_eq(abd_reactor_add_io(r, p[1], POLLOUT, record, &wr, &w), 0);
	run_until(r, &wr.calls, 1);
	cr_assert(wr.value & POLLOUT);
	abd_source_free(w);
	close(p[1]);
	rc.calls = 0;
	run_until(r, &rc.calls, 1);
	cr_assert(rc.value & POLLHUP, "revents %#llx", (unsigned long long)rc.value);
	abd_source_free(s);
	close(p[0]);
	abd_reactor_free(r);
}

/* ---- eventfd ---- */

struct efd_child {
	int efd;
	uint64_t value;
};

static int efd_writer(void *arg)
{
	struct efd_child *c = arg;
	usleep(20 * 1000);
	return write(c->efd, &c->value, sizeof(c->value)) == sizeof(c->value) ? 0 : 1;
}

static void eventfd_case(unsigned flags, int efd_flags)
{
	struct abd_reactor *r = new_reactor(flags);
	int efd = eventfd(0, EFD_CLOEXEC | efd_flags);
	cr_assert_geq(efd, 0);
	struct rec rc = { 0 };
	struct abd_source *s;
	cr_assert_eq(abd_reactor_add_eventfd(r, efd, record, &rc, &s), 0);
	drain_zero(r);
	cr_assert_eq(rc.calls, 0);

	struct efd_child c = { efd, 41 };
	pid_t pid = abd_test_fork(efd_writer, &c);
	run_until(r, &rc.calls, 1);
	cr_assert_eq(abd_test_wait(pid), 0);
	cr_assert_eq(rc.status, 0);
	cr_assert_eq(rc.value, 41, "the reactor reads the whole counter");

	/* Drained: the counter is 0 again, no further call. */
	drain_zero(r);
	cr_assert_eq(rc.calls, 1);
	uint64_t v;
	cr_assert_eq(fcntl(efd, F_SETFL, O_NONBLOCK), 0);
	cr_assert_eq(read(efd, &v, sizeof(v)), -1, "the counter was left non-zero");

	/* Persistent: a second round. */
	write_u64(efd, 2);
	write_u64(efd, 3);
	run_until(r, &rc.calls, 2);
	drain_zero(r);
	cr_assert_eq(rc.sum, 46);
	abd_source_free(s);
	close(efd);
	abd_reactor_free(r);
}

REACTOR_TEST(eventfd_wake_from_another_process)
{
	eventfd_case(flags, 0);
}

REACTOR_TEST(eventfd_nonblocking_wake_from_another_process)
{
	eventfd_case(flags, EFD_NONBLOCK);
}

/* ---- pidfd ---- */

static int wait_for_byte(void *arg)
{
	int *p = arg;
	close(p[1]);
	char b;
	return read(p[0], &b, 1) == 0 ? 0 : 1; /* exits when the pipe closes */
}

REACTOR_TEST(pidfd_exit_of_a_real_child)
{
	abd_test_require(ABD_FEAT_PIDFD_OPEN);
	struct abd_reactor *r = new_reactor(flags);
	int p[2];
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	pid_t pid = abd_test_fork(wait_for_byte, p);
	close(p[0]);
	int pidfd = abd__pidfd_open(pid, 0);
	cr_assert_geq(pidfd, 0);
	struct rec rc = { 0 };
	struct abd_source *s;
	cr_assert_eq(abd_reactor_add_pidfd(r, pidfd, record, &rc, &s), 0);
	drain_zero(r);
	cr_assert_eq(rc.calls, 0, "the child is alive");
	close(p[1]);
	run_until(r, &rc.calls, 1);
	cr_assert_eq(rc.status, 0);
	drain_zero(r);
	cr_assert_eq(rc.calls, 1, "an exit is reported once");
	cr_assert_eq(abd_test_wait(pid), 0);
	abd_source_free(s);
	close(pidfd);
	abd_reactor_free(r);
}

/* ---- timers ---- */

struct order {
	int seen[8];
	int n;
};

struct tick {
	struct order *o;
	int id;
};

static void ordered(struct abd_source *s, int status, uint64_t value, void *ud)
{
	(void)s;
	struct tick *t = ud;
	cr_assert_eq(status, 0);
	cr_assert_geq(value, 1);
	t->o->seen[t->o->n++] = t->id;
}

REACTOR_TEST(timers_fire_in_deadline_order)
{
	struct abd_reactor *r = new_reactor(flags);
	struct order o = { 0 };
	struct tick t[4] = { { &o, 30 }, { &o, 10 }, { &o, 20 }, { &o, 40 } };
	uint64_t now = abd_test_now_ns();
	struct abd_source *s[4];
	cr_assert_eq(abd_reactor_add_timer(r, now + 30000000, 0, ABD_TIMER_ABSOLUTE, ordered, &t[0], &s[0]), 0);
	/* Absolute deadlines: a stalled add (a loaded VM) must not reorder them. */
	cr_assert_eq(abd_reactor_add_timer(r, now + 10000000, 0, ABD_TIMER_ABSOLUTE, ordered, &t[1], &s[1]), 0);
	cr_assert_eq(abd_reactor_add_timer(r, now + 20000000, 0, ABD_TIMER_ABSOLUTE, ordered, &t[2], &s[2]), 0);
	/* Floating: freed by the reactor after it fires. */
	cr_assert_eq(abd_reactor_add_timer(r, now + 40000000, 0, ABD_TIMER_ABSOLUTE, ordered, &t[3], NULL), 0);
	run_until(r, &o.n, 4);
	cr_assert(o.seen[0] == 10 && o.seen[1] == 20 && o.seen[2] == 30 && o.seen[3] == 40,
	          "order %d %d %d %d", o.seen[0], o.seen[1], o.seen[2], o.seen[3]);
	drain_zero(r);
	cr_assert_eq(o.n, 4, "a one-shot timer fired twice");

	/* Re-arm a fired one-shot timer; move a far timer near; move a near timer far. */
	o.n = 0;
	cr_assert_eq(abd_source_set_timer(s[0], 3600ull * 1000000000u, 0, 0), 0);
	cr_assert_eq(abd_source_set_timer(s[1], 3600ull * 1000000000u, 0, 0), 0);
	cr_assert_eq(abd_source_set_timer(s[2], 1000000, 0, 0), 0);       /* id 20 */
	cr_assert_eq(abd_source_set_timer(s[0], 0, 0, 0), 0);             /* id 30: now */
	run_until(r, &o.n, 2);
	cr_assert(o.seen[0] == 30 && o.seen[1] == 20, "order %d %d", o.seen[0], o.seen[1]);
	for (int i = 0; i < 3; i++)
		abd_source_free(s[i]); /* s[1] is still armed an hour away */
	abd_reactor_free(r);
}

static void periodic(struct abd_source *s, int status, uint64_t value, void *ud)
{
	struct rec *rc = ud;
	cr_assert_eq(status, 0);
	cr_assert_geq(value, 1);
	rc->calls++;
	rc->sum += value;
	if (rc->sum >= 5)
		abd_source_free(s); /* removal from its own callback */
}

REACTOR_TEST(periodic_timer_counts_expirations)
{
	struct abd_reactor *r = new_reactor(flags);
	struct rec rc = { 0 };
	struct abd_source *s;
	cr_assert_eq(abd_reactor_add_timer(r, 1000000, 2000000, 0, periodic, &rc, &s), 0);
	uint64_t end = abd_test_now_ns() + 20ull * 1000000000u;
	while (rc.sum < 5) {
		cr_assert_geq(abd_reactor_run_once(r, 100000000), 0);
		cr_assert_lt(abd_test_now_ns(), end);
	}
	int calls = rc.calls;
	struct rec other = { 0 };
	cr_assert_eq(abd_reactor_add_timer(r, 10000000, 0, 0, record, &other, NULL), 0);
	run_until(r, &other.calls, 1);
	cr_assert_eq(rc.calls, calls, "a freed periodic timer fired");
	abd_reactor_free(r);
}

/* ---- deferred callbacks ---- */

struct defer_state {
	struct abd_reactor *r;
	int first, second;
};

static void second_cb(struct abd_source *s, int status, uint64_t value, void *ud)
{
	(void)s;
	(void)status;
	(void)value;
	((struct defer_state *)ud)->second++;
}

static void first_cb(struct abd_source *s, int status, uint64_t value, void *ud)
{
	(void)s;
	(void)status;
	(void)value;
	struct defer_state *d = ud;
	d->first++;
	cr_assert_eq(abd_reactor_add_defer(d->r, second_cb, d, NULL), 0);
}

REACTOR_TEST(deferred_callbacks_run_on_the_next_iteration)
{
	struct abd_reactor *r = new_reactor(flags);
	struct defer_state d = { r, 0, 0 };
	struct abd_source *s;
	cr_assert_eq(abd_reactor_add_defer(r, first_cb, &d, &s), 0);
	cr_assert_eq(d.first, 0, "deferred means not now");
	/* Must not block: a deferred call is waiting. */
	cr_assert_eq(abd_reactor_run_once(r, -1), 1);
	cr_assert_eq(d.first, 1);
	cr_assert_eq(d.second, 0, "queued during an iteration runs in the next one");
	cr_assert_eq(abd_reactor_run_once(r, -1), 1);
	cr_assert_eq(d.second, 1);
	drain_zero(r);
	cr_assert_eq(d.first, 1, "a deferred call runs once");
	abd_source_free(s);

	/* Removed before it ran: never runs. */
	struct abd_source *gone;
	cr_assert_eq(abd_reactor_add_defer(r, never, NULL, &gone), 0);
	abd_source_free(gone);
	drain_zero(r);
	abd_reactor_free(r);
}

/* ---- removal ---- */

struct pair {
	struct abd_source *a, *b;
	int calls;
};

static void kill_both(struct abd_source *s, int status, uint64_t value, void *ud)
{
	(void)s;
	(void)status;
	(void)value;
	struct pair *p = ud;
	p->calls++;
	abd_source_free(p->a);
	abd_source_free(p->b);
	p->a = p->b = NULL;
}

REACTOR_TEST(removal_from_inside_a_callback)
{
	struct abd_reactor *r = new_reactor(flags);
	int rounds = (int)abd_test_scaled(200, 20);
	for (int i = 0; i < rounds; i++) {
		int e1 = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), e2 = eventfd(0, EFD_CLOEXEC);
		struct pair p = { 0 };
		cr_assert_eq(abd_reactor_add_eventfd(r, e1, kill_both, &p, &p.a), 0);
		cr_assert_eq(abd_reactor_add_eventfd(r, e2, kill_both, &p, &p.b), 0);
		write_u64(e1, 1);
		write_u64(e2, 1);
		run_until(r, &p.calls, 1);
		drain_zero(r);
		cr_assert_eq(p.calls, 1, "the other source's callback ran after its removal");
		close(e1);
		close(e2);
	}
	abd_reactor_free(r);
}

static void noop_cb(struct abd_source *s, int status, uint64_t value, void *ud)
{
	(void)s;
	(void)status;
	(void)value;
	(void)ud;
}

FUTEX_TEST(removal_with_a_request_in_flight)
{
	struct abd_reactor *r = new_reactor(flags);
	uint32_t *word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(word, MAP_FAILED);
	int rounds = (int)abd_test_scaled(300, 30);
	for (int i = 0; i < rounds; i++) {
		int efd = eventfd(0, EFD_CLOEXEC), pfd[2];
		cr_assert_eq(pipe2(pfd, O_CLOEXEC | O_NONBLOCK), 0);
		struct abd_source *s[5] = { 0 };
		cr_assert_eq(abd_reactor_add_eventfd(r, efd, never, NULL, &s[0]), 0);
		cr_assert_eq(abd_reactor_add_io(r, pfd[0], POLLIN, never, NULL, &s[1]), 0);
		cr_assert_eq(abd_reactor_add_timer(r, (uint64_t)(i % 3) * 100000, 0, 0, never, NULL, &s[2]), 0);
		cr_assert_eq(abd_reactor_add_futex(r, word, *word, never, NULL, &s[3]), 0);
		cr_assert_eq(abd_reactor_add_defer(r, never, NULL, &s[4]), 0);
		/* Half the time the events are already on their way when the sources go. */
		if (i & 1) {
			write_u64(efd, 1);
			cr_assert_eq(write(pfd[1], "x", 1), 1);
			__atomic_add_fetch(word, 1, __ATOMIC_SEQ_CST);
			futex_wake(word);
		}
		if (i % 4 == 1)
			usleep(200); /* let the completions land in the CQ before the removal */
		for (int k = 0; k < 5; k++)
			abd_source_free(s[(k + i) % 5]);
		if (!(i & 1)) {
			write_u64(efd, 1);
			cr_assert_eq(write(pfd[1], "x", 1), 1);
		}
		cr_assert_geq(abd_reactor_run_once(r, 0), 0);
		close(efd);
		close(pfd[0]);
		close(pfd[1]);
	}
	/* Nothing left to fire; freeing the reactor waits for the last cancellations. */
	cr_assert_eq(abd_reactor_run_once(r, 1000000), 0);
	munmap(word, 4096);
	abd_reactor_free(r);
}

FUTEX_TEST(reactor_free_with_requests_in_flight)
{
	struct abd_reactor *r = new_reactor(flags);
	int efd[50];
	uint32_t word = 0;
	for (int i = 0; i < 50; i++) {
		efd[i] = eventfd(0, EFD_CLOEXEC);
		cr_assert_eq(abd_reactor_add_eventfd(r, efd[i], never, NULL, NULL), 0);
		cr_assert_eq(abd_reactor_add_timer(r, 3600ull * 1000000000u, 0, 0, never, NULL, NULL), 0);
		cr_assert_eq(abd_reactor_add_futex(r, &word, 0, never, NULL, NULL), 0);
	}
	abd_reactor_free(r); /* ASan: no source memory is freed under the kernel */
	for (int i = 0; i < 50; i++)
		close(efd[i]);
}

/* ---- a tiny SQ: more sources than entries ---- */

struct many {
	struct abd_reactor *r;
	int *efds;
	int n;
	int calls;
	struct abd_source **srcs;
};

static void count_cb(struct abd_source *s, int status, uint64_t value, void *ud)
{
	(void)s;
	cr_assert_eq(status, 0);
	cr_assert_eq(value, 1);
	((struct many *)ud)->calls++;
}

static void add_many_cb(struct abd_source *s, int status, uint64_t value, void *ud)
{
	(void)s;
	(void)status;
	(void)value;
	struct many *m = ud;
	/* Inside a callback nothing is submitted per add: the SQ fills up. */
	for (int i = 0; i < m->n; i++)
		cr_assert_eq(abd_reactor_add_eventfd(m->r, m->efds[i], count_cb, m, &m->srcs[i]), 0);
}

REACTOR_TEST(more_sources_than_sq_entries)
{
	struct abd_reactor *r = NULL;
	/* 4 SQ entries, 8 CQ entries: 64 sources fill the SQ and overflow the CQ. */
	cr_assert_eq(abd__reactor_new_sized(flags, 4, &r), 0);
	enum { N = 64 };
	int efds[N];
	struct abd_source *srcs[N];
	struct many m = { r, efds, N, 0, srcs };
	for (int i = 0; i < N; i++) {
		efds[i] = eventfd(0, EFD_CLOEXEC);
		cr_assert_geq(efds[i], 0);
		cr_assert_eq(abd_reactor_add_eventfd(r, efds[i], count_cb, &m, &srcs[i]), 0);
	}
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < N; i++)
			write_u64(efds[i], 1);
		run_until(r, &m.calls, N * (round + 1));
	}
	for (int i = 0; i < N; i++)
		abd_source_free(srcs[i]);

	/* Again, the sources added from inside a callback. */
	m.calls = 0;
	cr_assert_eq(abd_reactor_add_defer(r, add_many_cb, &m, NULL), 0);
	drain_zero(r);
	for (int i = 0; i < N; i++)
		write_u64(efds[i], 1);
	run_until(r, &m.calls, N);
	for (int i = 0; i < N; i++) {
		abd_source_free(srcs[i]);
		close(efds[i]);
	}
	abd_reactor_free(r);
}

/* ---- embedding ---- */

struct embed_io_ud {
	int *count;
	int fd;
};

static void embed_io(struct abd_source *s, int st, uint64_t v, void *ud)
{
	(void)s, (void)st, (void)v;
	struct embed_io_ud *e = ud;
	char buf[16];
	if (read(e->fd, buf, sizeof(buf)) > 0)
		(*e->count)++;
}

static void cnt(struct abd_source *s, int st, uint64_t v, void *ud)
{
	(void)s, (void)st, (void)v;
	(*(int *)ud)++;
}

/* Drive the reactor only from an outer loop's readiness of its fd; wait_fd blocks on that. */
static void embedded_round(struct abd_reactor *r, int (*wait_fd)(int outer, int fd), int outer,
                           int *counter, int want)
{
	int fd = abd_reactor_fd(r);
	cr_assert_geq(fd, 0);
	while (*counter < want) {
		int ready = wait_fd(outer, fd);
		cr_assert_eq(ready, 1, "the reactor fd never became readable (%d of %d events): %d %s",
		             *counter, want, ready, strerror(errno));
		int n = abd_reactor_run_once(r, 0);
		cr_assert_geq(n, 0);
	}
}

/* io_uring posts completions through task work, which interrupts the owner thread's
 * poll/epoll_wait (EINTR) before its fd turns readable: a correct outer loop retries, as
 * every event loop does on EINTR. */
static int wait_poll(int outer, int fd)
{
	(void)outer;
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int n;
	do
		n = poll(&p, 1, 20000);
	while (n < 0 && errno == EINTR);
	return n;
}

static int wait_epoll(int outer, int fd)
{
	(void)fd;
	struct epoll_event ev;
	int n;
	do
		n = epoll_wait(outer, &ev, 1, 20000);
	while (n < 0 && errno == EINTR);
	return n;
}

static void embedding_case(unsigned flags, bool use_epoll)
{
	struct abd_reactor *r = new_reactor(flags);
	/* Sources made before the fd was asked for, one with its event already in: the
	 * io_uring backend moves to a ring an outer loop can wait on, and loses nothing. */
	int pre = 0, pre_efd = eventfd(0, EFD_CLOEXEC), pre_pipe[2];
	cr_assert_eq(pipe2(pre_pipe, O_CLOEXEC | O_NONBLOCK), 0);
	struct abd_source *pre_s[3];
	cr_assert_eq(abd_reactor_add_eventfd(r, pre_efd, cnt, &pre, &pre_s[0]), 0);
	cr_assert_eq(abd_reactor_add_io(r, pre_pipe[0], POLLIN, cnt, &pre, &pre_s[1]), 0);
	cr_assert_eq(abd_reactor_add_timer(r, 3600ull * 1000000000u, 0, 0, never, NULL, &pre_s[2]), 0);
	write_u64(pre_efd, 1);
	usleep(1000);
	int fd = abd_reactor_fd(r);
	cr_assert_geq(fd, 0);
	cr_assert_eq(abd_reactor_fd(r), fd, "one fd per reactor");
	int outer = -1;
	if (use_epoll) {
		outer = epoll_create1(EPOLL_CLOEXEC);
		struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
		cr_assert_eq(epoll_ctl(outer, EPOLL_CTL_ADD, fd, &ev), 0);
	}
	int (*wait_fd)(int, int) = use_epoll ? wait_epoll : wait_poll;
	embedded_round(r, wait_fd, outer, &pre, 1);
	cr_assert_eq(pre, 1, "the pipe is empty");
	abd_source_free(pre_s[0]);
	abd_source_free(pre_s[2]);
	cr_assert_eq(write(pre_pipe[1], "y", 1), 1);
	embedded_round(r, wait_fd, outer, &pre, 2);
	abd_source_free(pre_s[1]);
	close(pre_efd);
	close(pre_pipe[0]);
	close(pre_pipe[1]);

	int count = 0;
	/* An eventfd written by another process. */
	int efd = eventfd(0, EFD_CLOEXEC);
	struct abd_source *s1;
	cr_assert_eq(abd_reactor_add_eventfd(r, efd, cnt, &count, &s1), 0);
	struct efd_child c = { efd, 1 };
	pid_t pid = abd_test_fork(efd_writer, &c);
	embedded_round(r, wait_fd, outer, &count, 1);
	cr_assert_eq(abd_test_wait(pid), 0);
	/* Re-armed after dispatch: a second write also wakes the outer loop. */
	pid = abd_test_fork(efd_writer, &c);
	embedded_round(r, wait_fd, outer, &count, 2);
	cr_assert_eq(abd_test_wait(pid), 0);
	/* A timer. */
	cr_assert_eq(abd_reactor_add_timer(r, 2000000, 0, 0, cnt, &count, NULL), 0);
	embedded_round(r, wait_fd, outer, &count, 3);
	/* A deferred call added outside the loop. */
	cr_assert_eq(abd_reactor_add_defer(r, cnt, &count, NULL), 0);
	embedded_round(r, wait_fd, outer, &count, 4);
	/* A pipe. */
	int p[2];
	cr_assert_eq(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
	struct embed_io_ud ud = { &count, p[0] };
	struct abd_source *s2;
	cr_assert_eq(abd_reactor_add_io(r, p[0], POLLIN, embed_io, &ud, &s2), 0);
	cr_assert_eq(abd_reactor_add_defer(r, cnt, &count, NULL), 0);
	cr_assert_eq(write(p[1], "x", 1), 1);
	embedded_round(r, wait_fd, outer, &count, 6);

	/* Idle: after the work is done the fd goes quiet. */
	for (int i = 0; i < 4; i++)
		abd_reactor_run_once(r, 0);
	struct pollfd q = { .fd = fd, .events = POLLIN };
	if (poll(&q, 1, 0) == 1)
		abd_reactor_run_once(r, 0); /* one spurious wake is allowed, */
	cr_assert_eq(poll(&q, 1, 0), 0, "the reactor fd stays readable with no work"); /* not two */

	abd_source_free(s1);
	abd_source_free(s2);
	close(efd);
	close(p[0]);
	close(p[1]);
	abd__close(outer);
	abd_reactor_free(r);
}

REACTOR_TEST(embedded_in_a_poll_loop)
{
	embedding_case(flags, false);
}

REACTOR_TEST(embedded_in_an_epoll_loop)
{
	embedding_case(flags, true);
}

/* ---- futex word ---- */

/* A word in a shared memfd mapping, as a ring's eventcount is. */
static _Atomic uint32_t *map_word(void)
{
	int fd = memfd_create("abd-test-word", MFD_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, 4096), 0);
	void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	cr_assert_neq(m, MAP_FAILED);
	return m;
}

struct futex_child {
	_Atomic uint32_t *word;
	int go; /* pipe: wait for a byte before waking */
};

/* FUTEX_WAKE the word, leaving its value alone, until it woke someone: the parent's wait may
 * begin after "go" (a futex thread goes to sleep a moment after the arm call returned), and
 * a changed word would then end it as "differed" instead of "woken". */
static int futex_writer(void *arg)
{
	struct futex_child *c = arg;
	char b;
	if (read(c->go, &b, 1) != 1)
		return 1;
	for (int i = 0; i < 2000; i++) {
		if (futex_wake((uint32_t *)c->word) == 1)
			return 0;
		usleep(1000);
	}
	return 2;
}

/* Threads of this process named like the futex threads, and the voluntary context switches
 * of those threads plus the calling one (switches may be NULL). */
static int futex_threads(long *switches)
{
	DIR *d = opendir("/proc/self/task");
	cr_assert_not_null(d);
	int n = 0;
	long sw = 0;
	pid_t me = gettid();
	for (struct dirent *e; (e = readdir(d));) {
		if (e->d_name[0] == '.')
			continue;
		char path[96], comm[32] = "";
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		FILE *f = fopen(path, "re");
		if (!f)
			continue; /* gone meanwhile */
		if (!fgets(comm, sizeof(comm), f))
			comm[0] = 0;
		fclose(f);
		bool helper = strcmp(comm, "abd-futex\n") == 0;
		n += helper;
		if (!switches || (!helper && atoi(e->d_name) != me))
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
		if (!(f = fopen(path, "re")))
			continue;
		char line[256];
		long v;
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "voluntary_ctxt_switches: %ld", &v) == 1)
				sw += v;
		fclose(f);
	}
	closedir(d);
	if (switches)
		*switches = sw;
	return n;
}

/* Wait (a failure bound, not a timing) until the process has want futex threads: a joined
 * thread's /proc entry goes a moment after pthread_join returned. */
static void expect_futex_threads(int want)
{
	uint64_t end = abd_test_now_ns() + 5ull * 1000000000u;
	int n;
	while ((n = futex_threads(NULL)) != want && abd_test_now_ns() < end)
		usleep(1000);
	cr_assert_eq(n, want, "%d futex threads, expected %d", n, want);
}

FUTEX_TEST(futex_wait_woken_by_another_process)
{
	struct abd_reactor *r = new_reactor(flags);
	_Atomic uint32_t *word = map_word();
	struct rec rc = { 0 };
	struct abd_source *s = NULL;
	cr_assert_eq(abd_reactor_add_futex(r, (const uint32_t *)word, 0, record, &rc, &s), 0,
	             "futex sources work on every backend");
	cr_assert_eq(futex_threads(NULL), futex_by_thread(flags) ? 1 : 0);
	drain_zero(r);
	cr_assert_eq(rc.calls, 0, "the word holds the expected value: keep sleeping");

	int go[2];
	cr_assert_eq(pipe2(go, O_CLOEXEC), 0);
	struct futex_child c = { word, go[0] };
	pid_t pid = abd_test_fork(futex_writer, &c);
	cr_assert_eq(write(go[1], "g", 1), 1);
	run_until(r, &rc.calls, 1);
	cr_assert_eq(abd_test_wait(pid), 0, "the child never woke a sleeper");
	cr_assert_eq(rc.status, 0);
	cr_assert_eq(rc.value, 1, "woken by FUTEX_WAKE");

	/* One-shot: nothing more until re-armed. */
	drain_zero(r);
	cr_assert_eq(rc.calls, 1);
	atomic_store(word, 1);
	cr_assert_eq(abd_source_futex_arm(s, 1), 0);
	cr_assert_eq(abd_source_futex_arm(s, 1), -EALREADY);
	pid = abd_test_fork(futex_writer, &c);
	cr_assert_eq(write(go[1], "g", 1), 1);
	run_until(r, &rc.calls, 2);
	cr_assert_eq(abd_test_wait(pid), 0);
	cr_assert_eq(rc.value, 1);

	/* A stale expected value completes at once, reporting "differed". */
	cr_assert_eq(abd_source_futex_arm(s, 7), 0);
	run_until(r, &rc.calls, 3);
	cr_assert_eq(rc.status, 0);
	cr_assert_eq(rc.value, 0);

	abd_source_free(s);
	expect_futex_threads(0);
	close(go[0]);
	close(go[1]);
	munmap((void *)word, 4096);
	abd_reactor_free(r);
}

static void free_self(struct abd_source *s, int status, uint64_t value, void *ud)
{
	(void)status, (void)value;
	(*(int *)ud)++;
	abd_source_free(s);
}

/* Freeing a futex source whose thread sleeps on the word returns at once, and takes the
 * thread and its eventfd with it; so do a floating source after its one event, a source
 * freed from its own callback, and abd_reactor_free with sources still asleep. */
FUTEX_TEST(futex_source_freed_while_asleep_leaves_nothing)
{
	_Atomic uint32_t *word = map_word();
	int fds = abd_test_count_fds();
	int base = futex_threads(NULL);
	struct abd_reactor *r = new_reactor(flags);
	int per = futex_by_thread(flags) ? 1 : 0;
	int rounds = (int)abd_test_scaled(40, 8);
	for (int i = 0; i < rounds; i++) {
		struct abd_source *s[3];
		for (int k = 0; k < 3; k++)
			cr_assert_eq(abd_reactor_add_futex(r, (const uint32_t *)word, atomic_load(word),
			                                   never, NULL, &s[k]), 0);
		cr_assert_eq(abd_reactor_run_once(r, 0), 0);
		if (i & 1)
			usleep(2000); /* asleep on the word by now; otherwise racing into it */
		cr_assert_eq(futex_threads(NULL), base + 3 * per);
		uint64_t t0 = abd_test_now_ns();
		for (int k = 0; k < 3; k++)
			abd_source_free(s[(k + i) % 3]);
		uint64_t dt = abd_test_now_ns() - t0;
		cr_assert_lt(dt, 2000000000u, "freeing three sleeping sources took %llu ns",
		             (unsigned long long)dt);
		expect_futex_threads(base);
	}
	cr_assert_eq(abd_reactor_run_once(r, 1000000), 0);

	/* Floating: freed by the reactor after its event; freed from its own callback. */
	int calls = 0, mine = 0;
	cr_assert_eq(abd_reactor_add_futex(r, (const uint32_t *)word, atomic_load(word) + 1, cnt,
	                                   &calls, NULL), 0);
	struct abd_source *self;
	cr_assert_eq(abd_reactor_add_futex(r, (const uint32_t *)word, atomic_load(word) + 1,
	                                   free_self, &mine, &self), 0);
	run_until(r, &calls, 1);
	run_until(r, &mine, 1);
	drain_zero(r);
	cr_assert_eq(calls, 1);
	cr_assert_eq(mine, 1);
	expect_futex_threads(base);

	/* The reactor freed with sources asleep, floating or not. */
	struct abd_source *kept;
	cr_assert_eq(abd_reactor_add_futex(r, (const uint32_t *)word, atomic_load(word), never,
	                                   NULL, &kept), 0);
	cr_assert_eq(abd_reactor_add_futex(r, (const uint32_t *)word, atomic_load(word), never,
	                                   NULL, NULL), 0);
	usleep(2000);
	cr_assert_eq(futex_threads(NULL), base + 2 * per);
	abd_reactor_free(r);
	expect_futex_threads(base);
	/* The contract: the word may go once its sources are gone. */
	munmap((void *)word, 4096);
	cr_assert_eq(abd_test_count_fds(), fds, "an eventfd or the reactor's descriptors leaked");
}

/* An armed futex source on an idle reactor makes no wake-ups: no timer, no polling. Counted
 * (voluntary context switches of the loop's thread and of the futex thread), not timed. */
FUTEX_TEST(futex_source_idle_makes_no_wakeups)
{
	struct abd_reactor *r = new_reactor(flags);
	_Atomic uint32_t *word = map_word();
	struct abd_source *s;
	cr_assert_eq(abd_reactor_add_futex(r, (const uint32_t *)word, 0, never, NULL, &s), 0);
	/* Settle first: a new io_uring wakes its task a few times in its first milliseconds. */
	cr_assert_eq(abd_reactor_run_once(r, 100ll * 1000000), 0);
	long before, after;
	cr_assert_eq(futex_threads(&before), futex_by_thread(flags) ? 1 : 0);
	cr_assert_eq(abd_reactor_run_once(r, 1500ll * 1000000), 0);
	futex_threads(&after);
	/* One for the loop's sleep; a little slack for a page fault or the scheduler. */
	cr_assert_leq(after - before, 3, "%ld voluntary context switches in 1.5 s idle",
	              after - before);
	abd_source_free(s);
	munmap((void *)word, 4096);
	abd_reactor_free(r);
}

/* The one descriptor of embedding also reports futex wake-ups: an outer epoll wakes when
 * another process wakes the word. */
FUTEX_TEST(futex_source_wakes_the_reactor_fd)
{
	struct abd_reactor *r = new_reactor(flags);
	_Atomic uint32_t *word = map_word();
	struct rec rc = { 0 };
	struct abd_source *s;
	/* Added before the fd was asked for (io_uring then moves its sources to another ring). */
	cr_assert_eq(abd_reactor_add_futex(r, (const uint32_t *)word, 0, record, &rc, &s), 0);
	int fd = abd_reactor_fd(r);
	cr_assert_geq(fd, 0);
	int outer = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
	cr_assert_eq(epoll_ctl(outer, EPOLL_CTL_ADD, fd, &ev), 0);
	for (int i = 0; i < 3; i++)
		abd_reactor_run_once(r, 0);
	int quiet;
	do
		quiet = epoll_wait(outer, &ev, 1, 50);
	while (quiet < 0 && errno == EINTR);
	cr_assert_eq(quiet, 0, "the reactor fd is readable with the word untouched");
	cr_assert_eq(rc.calls, 0);

	int go[2];
	cr_assert_eq(pipe2(go, O_CLOEXEC), 0);
	for (int round = 1; round <= 2; round++) {
		struct futex_child c = { word, go[0] };
		pid_t pid = abd_test_fork(futex_writer, &c);
		cr_assert_eq(write(go[1], "g", 1), 1);
		embedded_round(r, wait_epoll, outer, &rc.calls, round);
		cr_assert_eq(abd_test_wait(pid), 0);
		cr_assert_eq(rc.status, 0);
		cr_assert_eq(rc.value, 1);
		cr_assert_eq(abd_source_futex_arm(s, 0), 0); /* re-armed outside the loop */
	}
	abd_source_free(s);
	close(go[0]);
	close(go[1]);
	close(outer);
	munmap((void *)word, 4096);
	abd_reactor_free(r);
}

/* A word that moved ends a wait served by a thread in the loop's next turn (value 0), even
 * before the thread has seen it or without any wake: a wake and another event that come
 * together are reported in the order they happened. io_uring's FUTEX_WAIT sleeps in the
 * kernel until a FUTEX_WAKE, then reports 1. */
FUTEX_TEST(futex_word_moved_ends_the_wait_in_the_next_turn)
{
	struct abd_reactor *r = new_reactor(flags);
	_Atomic uint32_t *word = map_word();
	struct rec rc = { 0 };
	struct abd_source *s;
	cr_assert_eq(abd_reactor_add_futex(r, (const uint32_t *)word, 0, record, &rc, &s), 0);
	for (int round = 1; round <= 3; round++) {
		usleep(2000); /* the thread asleep on the word, so only the loop can see the move */
		drain_zero(r);
		cr_assert_eq(rc.calls, round - 1);
		atomic_store(word, (uint32_t)round); /* no FUTEX_WAKE */
		int n = abd_reactor_run_once(r, 0);
		if (futex_by_thread(flags)) {
			cr_assert_eq(n, 1, "the moved word ended the wait in this turn (%d)", n);
			cr_assert_eq(rc.calls, round);
			cr_assert_eq(rc.value, 0, "differed");
		} else {
			cr_assert_eq(n, 0, "FUTEX_WAIT sleeps until a wake");
			cr_assert_eq(futex_wake((uint32_t *)word), 1);
			run_until(r, &rc.calls, round);
			cr_assert_eq(rc.value, 1, "woken");
		}
		/* The thread's own report of that wait comes later and is dropped. */
		usleep(2000);
		drain_zero(r);
		cr_assert_eq(rc.calls, round, "one callback per arm");
		cr_assert_eq(abd_source_futex_arm(s, (uint32_t)round), 0);
	}
	abd_source_free(s);
	munmap((void *)word, 4096);
	abd_reactor_free(r);
}

static void rearm_stale(struct abd_source *s, int status, uint64_t value, void *ud)
{
	(void)status, (void)value;
	(*(int *)ud)++;
	cr_assert_eq(abd_source_futex_arm(s, 0), 0); /* the word holds 1: ends at once again */
}

/* A source fires at most once per turn of the loop, as with io_uring (where a re-arm reaches
 * the kernel at the next wait): its thread's ring of the bell and the loop's look at the
 * word do not both call it in one turn. */
FUTEX_TEST(futex_source_fires_at_most_once_per_turn)
{
	struct abd_reactor *r = new_reactor(flags);
	_Atomic uint32_t *word = map_word();
	atomic_store(word, 1);
	int calls = 0;
	struct abd_source *s;
	cr_assert_eq(abd_reactor_add_futex(r, (const uint32_t *)word, 0, rearm_stale, &calls, &s), 0);
	for (int i = 0; i < 300; i++) {
		int before = calls;
		int n = abd_reactor_run_once(r, 10 * 1000000);
		cr_assert_geq(n, 0);
		cr_assert_leq(calls - before, 1, "%d callbacks of one source in one turn", calls - before);
		cr_assert_eq(n, calls - before, "run_once counts the callbacks it ran");
		if (i % 3 == 0)
			usleep(200); /* let the thread ring between turns */
	}
	cr_assert_gt(calls, 100);
	abd_source_free(s);
	munmap((void *)word, 4096);
	abd_reactor_free(r);
}

/* A futex thread blocks every signal, so that process-directed signals always go to the
 * application's threads. Where the kernel waits on the word itself there is no thread. */
FUTEX_TEST(futex_thread_blocks_every_signal)
{
	struct abd_reactor *r = new_reactor(flags);
	_Atomic uint32_t *word = map_word();
	struct abd_source *s;
	/* A first wait that ends at once: the thread has run (glibc starts a thread with every
	 * signal blocked until it sets the mask it inherited, so looking earlier proves nothing). */
	int calls = 0;
	cr_assert_eq(abd_reactor_add_futex(r, (const uint32_t *)word, 1, cnt, &calls, &s), 0);
	run_until(r, &calls, 1);
	cr_assert_eq(abd_source_futex_arm(s, 0), 0);
	DIR *d = opendir("/proc/self/task");
	cr_assert_not_null(d);
	int seen = 0;
	for (struct dirent *e; (e = readdir(d));) {
		char path[96], line[256], comm[32] = "";
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		FILE *f = e->d_name[0] == '.' ? NULL : fopen(path, "re");
		if (!f)
			continue;
		if (!fgets(comm, sizeof(comm), f) || strcmp(comm, "abd-futex\n") != 0) {
			fclose(f);
			continue;
		}
		fclose(f);
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
		cr_assert_not_null(f = fopen(path, "re"));
		unsigned long long blk = 0;
		while (fgets(line, sizeof(line), f))
			sscanf(line, "SigBlk: %llx", &blk);
		fclose(f);
		seen++;
		for (int sig = 1; sig <= 64; sig++) {
			/* SIGKILL and SIGSTOP cannot be blocked; glibc keeps its own two (32, 33). */
			if (sig == SIGKILL || sig == SIGSTOP || sig == 32 || sig == 33)
				continue;
			cr_assert(blk & (1ull << (sig - 1)), "signal %d is not blocked (SigBlk %llx)",
			          sig, blk);
		}
	}
	closedir(d);
	cr_assert_eq(seen, futex_by_thread(flags) ? 1 : 0);
	abd_source_free(s);
	munmap((void *)word, 4096);
	abd_reactor_free(r);
}

struct futex_fork {
	struct abd_reactor *r;
	struct abd_source *s;
	_Atomic uint32_t *word;
};

static int futex_child_after_fork(void *arg)
{
	struct futex_fork *f = arg;
	struct abd_source *s = NULL;
	if (abd_source_futex_arm(f->s, 0) != -ECHILD)
		return 1;
	if (abd_reactor_add_futex(f->r, (const uint32_t *)f->word, 0, noop_cb, NULL, &s) != -ECHILD ||
	    s)
		return 2;
	if (futex_threads(NULL) != 0)
		return 3; /* fork copies the calling thread only */
	abd_source_free(f->s);   /* the child's memory and eventfd copy only */
	abd_reactor_free(f->r);
	return 0;
}

/* After fork the child's reactor refuses (-ECHILD) and its frees release only the child's
 * copies: the parent's futex thread still serves the parent. */
FUTEX_TEST(futex_source_after_fork)
{
	struct abd_reactor *r = new_reactor(flags);
	_Atomic uint32_t *word = map_word();
	struct rec rc = { 0 };
	struct abd_source *s;
	cr_assert_eq(abd_reactor_add_futex(r, (const uint32_t *)word, 0, record, &rc, &s), 0);
	struct futex_fork f = { r, s, word };
	pid_t pid = abd_test_fork(futex_child_after_fork, &f);
	cr_assert_eq(abd_test_wait(pid), 0);
	int go[2];
	cr_assert_eq(pipe2(go, O_CLOEXEC), 0);
	struct futex_child c = { word, go[0] };
	pid = abd_test_fork(futex_writer, &c);
	cr_assert_eq(write(go[1], "g", 1), 1);
	run_until(r, &rc.calls, 1);
	cr_assert_eq(abd_test_wait(pid), 0);
	cr_assert_eq(rc.value, 1);
	abd_source_free(s);
	close(go[0]);
	close(go[1]);
	munmap((void *)word, 4096);
	abd_reactor_free(r);
}

/* ---- run / stop ---- */

static void stopper(struct abd_source *s, int st, uint64_t v, void *ud)
{
	(void)st, (void)v;
	int *n = ud;
	if (++*n == 3)
		cr_assert_eq(abd_reactor_stop(s->reactor), 0);
}

REACTOR_TEST(run_until_stop)
{
	struct abd_reactor *r = new_reactor(flags);
	int n = 0;
	struct abd_source *t;
	cr_assert_eq(abd_reactor_add_timer(r, 1000000, 1000000, 0, stopper, &n, &t), 0);
	cr_assert_eq(abd_reactor_run(r), 0);
	cr_assert_eq(n, 3);
	abd_source_free(t);
	abd_reactor_free(r);
}

/* ---- fork, threads, bad arguments ---- */

static int child_after_fork(void *arg)
{
	struct abd_reactor *r = arg;
	int efd = eventfd(0, EFD_CLOEXEC);
	struct abd_source *s = NULL;
	if (abd_reactor_run_once(r, 0) != -ECHILD)
		return 1;
	if (abd_reactor_add_eventfd(r, efd, noop_cb, NULL, &s) != -ECHILD || s)
		return 2;
	if (abd_reactor_add_defer(r, noop_cb, NULL, NULL) != -ECHILD)
		return 3;
	if (abd_reactor_stop(r) != -ECHILD || abd_reactor_fd(r) != -ECHILD ||
	    abd_reactor_run(r) != -ECHILD)
		return 4;
	abd_reactor_free(r); /* frees the child's copy only */
	close(efd);
	return 0;
}

REACTOR_TEST(calls_after_fork_are_echild)
{
	struct abd_reactor *r = new_reactor(flags);
	int efd = eventfd(0, EFD_CLOEXEC);
	struct rec rc = { 0 };
	struct abd_source *s;
	cr_assert_eq(abd_reactor_add_eventfd(r, efd, record, &rc, &s), 0);
	pid_t pid = abd_test_fork(child_after_fork, r);
	cr_assert_eq(abd_test_wait(pid), 0);
	/* The parent's reactor is untouched by the child's free. */
	write_u64(efd, 9);
	run_until(r, &rc.calls, 1);
	cr_assert_eq(rc.value, 9);
	abd_source_free(s);
	close(efd);
	abd_reactor_free(r);
}

struct thread_arg {
	struct abd_reactor *r;
	struct abd_source *s;
	int results[6];
};

static void *other_thread(void *p)
{
	struct thread_arg *a = p;
	a->results[0] = abd_reactor_run_once(a->r, 0);
	a->results[1] = abd_reactor_add_defer(a->r, noop_cb, NULL, NULL);
	a->results[2] = abd_reactor_stop(a->r);
	a->results[3] = abd_reactor_fd(a->r);
	a->results[4] = abd_source_set_timer(a->s, 1, 0, 0);
	abd_source_free(a->s); /* ignored */
	abd_reactor_free(a->r); /* ignored */
	return NULL;
}

REACTOR_TEST(calls_from_another_thread_are_ebusy)
{
	struct abd_reactor *r = new_reactor(flags);
	struct rec rc = { 0 };
	struct thread_arg a = { r, NULL, { 0 } };
	cr_assert_eq(abd_reactor_add_timer(r, 1000000, 0, 0, record, &rc, &a.s), 0);
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, other_thread, &a), 0);
	pthread_join(t, NULL);
	for (int i = 0; i < 5; i++)
		cr_assert_eq(a.results[i], -EBUSY, "call %d: %d", i, a.results[i]);
	run_until(r, &rc.calls, 1); /* still alive and working */
	abd_source_free(a.s);
	abd_reactor_free(r);
}

static void reenter(struct abd_source *s, int st, uint64_t v, void *ud)
{
	(void)st, (void)v;
	int *res = ud;
	res[0] = abd_reactor_run_once(s->reactor, 0);
	res[1] = abd_reactor_run(s->reactor);
	abd_reactor_free(s->reactor); /* ignored inside a callback */
	res[2] = 1;
}

REACTOR_TEST(bad_arguments_are_einval)
{
	struct abd_reactor *r = new_reactor(flags);
	struct abd_reactor *bad = (void *)1;
	cr_assert_eq(abd_reactor_new(0, NULL), -EINVAL);
	cr_assert_eq(abd_reactor_new(0x80, &bad), -EINVAL);
	cr_assert_null(bad);
	cr_assert_eq(abd_reactor_new(ABD_REACTOR_FORCE_EPOLL | ABD_REACTOR_FORCE_IO_URING, &bad), -EINVAL);
	cr_assert_eq(abd_reactor_backend(NULL), -EINVAL);
	cr_assert_eq(abd_reactor_fd(NULL), -EINVAL);
	cr_assert_eq(abd_reactor_run_once(NULL, 0), -EINVAL);
	cr_assert_eq(abd_reactor_run(NULL), -EINVAL);
	cr_assert_eq(abd_reactor_stop(NULL), -EINVAL);
	abd_reactor_free(NULL);
	abd_source_free(NULL);
	cr_assert_null(abd_source_userdata(NULL));

	struct abd_source *s = (void *)1;
	int efd = eventfd(0, EFD_CLOEXEC);
	cr_assert_eq(abd_reactor_add_io(NULL, efd, POLLIN, noop_cb, NULL, &s), -EINVAL);
	cr_assert_null(s);
	cr_assert_eq(abd_reactor_add_io(r, efd, POLLIN, NULL, NULL, &s), -EINVAL);
	cr_assert_eq(abd_reactor_add_io(r, -1, POLLIN, noop_cb, NULL, &s), -EINVAL);
	cr_assert_eq(abd_reactor_add_io(r, efd, 0, noop_cb, NULL, &s), -EINVAL);
	cr_assert_eq(abd_reactor_add_io(r, efd, 0x40000000u, noop_cb, NULL, &s), -EINVAL);
	cr_assert_eq(abd_reactor_add_io(r, 1000000, POLLIN, noop_cb, NULL, &s), -EBADF);
	cr_assert_eq(abd_reactor_add_eventfd(r, -5, noop_cb, NULL, &s), -EINVAL);
	cr_assert_eq(abd_reactor_add_pidfd(r, -5, noop_cb, NULL, &s), -EINVAL);
	cr_assert_eq(abd_reactor_add_timer(r, 1, 0, 0x10, noop_cb, NULL, &s), -EINVAL);
	cr_assert_eq(abd_reactor_add_timer(r, UINT64_MAX, 0, 0, noop_cb, NULL, &s), -EINVAL);
	cr_assert_eq(abd_reactor_add_timer(r, 1, 0, 0, NULL, NULL, &s), -EINVAL);
	cr_assert_eq(abd_reactor_add_defer(r, NULL, NULL, &s), -EINVAL);
	cr_assert_eq(abd_reactor_add_defer(NULL, noop_cb, NULL, &s), -EINVAL);
	uint32_t words[2] = { 0, 0 };
	cr_assert_eq(abd_reactor_add_futex(r, NULL, 0, noop_cb, NULL, &s), -EINVAL);
	cr_assert_eq(abd_reactor_add_futex(r, (const uint32_t *)((char *)words + 1), 0, noop_cb, NULL, &s),
	             -EINVAL);
	cr_assert_null(s);
	cr_assert_eq(abd_source_set_timer(NULL, 1, 0, 0), -EINVAL);
	cr_assert_eq(abd_source_futex_arm(NULL, 0), -EINVAL);

	/* Type mismatches. */
	struct abd_source *io;
	cr_assert_eq(abd_reactor_add_eventfd(r, efd, noop_cb, NULL, &io), 0);
	cr_assert_eq(abd_source_set_timer(io, 1, 0, 0), -EINVAL);
	cr_assert_eq(abd_source_futex_arm(io, 0), -EINVAL);
	abd_source_free(io);
	struct abd_source *t;
	cr_assert_eq(abd_reactor_add_timer(r, 1000, 0, 0, noop_cb, NULL, &t), 0);
	cr_assert_eq(abd_source_set_timer(t, 1, 0, 0x10), -EINVAL);
	abd_source_free(t);

	/* Re-entering the loop from a callback. */
	int res[3] = { 0 };
	cr_assert_eq(abd_reactor_add_defer(r, reenter, res, NULL), 0);
	cr_assert_eq(abd_reactor_run_once(r, 0), 1);
	cr_assert_eq(res[0], -EBUSY);
	cr_assert_eq(res[1], -EBUSY);
	cr_assert_eq(res[2], 1);
	close(efd);
	abd_reactor_free(r);
}

ABD_TEST(reactor, automatic_backend_follows_the_probe)
{
	struct abd_reactor *r;
	cr_assert_eq(abd_reactor_new(0, &r), 0);
	enum abd_backend want = abd_choose_backend();
#if !ABD_HAVE_LIBURING
	want = ABD_BACKEND_EPOLL;
#endif
	cr_assert_eq(abd_reactor_backend(r), (int)want);
	abd_reactor_free(r);
	if (!abd_probe_has(ABD_FEAT_IO_URING) || !ABD_HAVE_LIBURING) {
		cr_assert_eq(abd_reactor_new(ABD_REACTOR_FORCE_IO_URING, &r), -EOPNOTSUPP);
		cr_assert_null(r);
	}
}

/* ---- no allocation on the dispatch path ---- */

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                   \
	__has_feature(memory_sanitizer) || __has_feature(realtime_sanitizer)
#define SANITIZED_MALLOC 1
#endif
#endif

#ifndef SANITIZED_MALLOC
/* Count every allocation in this process while `counting` is set: the sanitizer builds
 * replace malloc themselves, so this check runs in the plain build (and RTSan's build checks
 * the ring's fast path its own way). */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
static _Atomic int counting;
static _Atomic long allocations;

void *malloc(size_t n)
{
	if (atomic_load_explicit(&counting, memory_order_relaxed))
		atomic_fetch_add(&allocations, 1);
	return __libc_malloc(n);
}
void *calloc(size_t a, size_t b)
{
	if (atomic_load_explicit(&counting, memory_order_relaxed))
		atomic_fetch_add(&allocations, 1);
	return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n)
{
	if (atomic_load_explicit(&counting, memory_order_relaxed))
		atomic_fetch_add(&allocations, 1);
	return __libc_realloc(p, n);
}
void free(void *p)
{
	__libc_free(p);
}
#endif

abd__unused static void rearm_futex(struct abd_source *s, int st, uint64_t v, void *ud)
{
	(void)st, (void)v;
	(*(int *)ud)++;
	abd_source_futex_arm(s, 0);
}

FUTEX_TEST(dispatch_allocates_nothing)
{
#ifdef SANITIZED_MALLOC
	(void)flags;
	cr_skip_test("the sanitizer owns malloc in this build: counted in the plain build");
#else
	struct abd_reactor *r = new_reactor(flags);
	int efd = eventfd(0, EFD_CLOEXEC);
	int calls = 0, fcalls = 0;
	struct abd_source *s, *f = NULL;
	cr_assert_eq(abd_reactor_add_eventfd(r, efd, cnt, &calls, &s), 0);
	static uint32_t word; /* 1 != expected 0: completes at once, every time */
	word = 1;
	cr_assert_eq(abd_reactor_add_futex(r, &word, 0, rearm_futex, &fcalls, &f), 0);
	for (int i = 0; i < 10; i++) { /* warm up (stdio, lazy binding) */
		write_u64(efd, 1);
		run_until(r, &calls, i + 1);
	}
	run_until(r, &fcalls, 1);
	int fcalls0 = fcalls;
	atomic_store(&counting, 1);
	for (int i = 0; i < 1000; i++) {
		uint64_t one = 1;
		(void)!write(efd, &one, sizeof(one));
		while (calls < 11 + i)
			if (abd_reactor_run_once(r, 1000000000) < 0)
				break;
	}
	/* and a few futex re-arms for sure (a futex thread may have been slow to run) */
	while (fcalls < fcalls0 + 10)
		if (abd_reactor_run_once(r, 1000000000) < 0)
			break;
	atomic_store(&counting, 0);
	cr_assert_eq(calls, 1010);
	cr_assert_eq(atomic_load(&allocations), 0, "%ld allocations while dispatching",
	             atomic_load(&allocations));
	cr_assert_geq(fcalls, fcalls0 + 10);
	abd_source_free(s);
	abd_source_free(f);
	close(efd);
	abd_reactor_free(r);
#endif
}
