/* SPDX-License-Identifier: MIT */
/* The reactor: one behavioural suite, every test run on both backends (suite reactor_uring
 * and reactor_epoll). io_uring cases skip, saying why, where the profile has no io_uring. */
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

static bool is_uring(unsigned flags)
{
	return flags & ABD_REACTOR_FORCE_IO_URING;
}

static struct abd_reactor *new_reactor(unsigned flags)
{
	struct abd_reactor *r = NULL;
	int e = abd_reactor_new(flags, &r);
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

/* ---- futex word ---- */

static int futex_wake(uint32_t *word)
{
	return (int)syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

struct futex_child {
	_Atomic uint32_t *word;
	uint32_t value;
	int go; /* pipe: wait for a byte before writing */
};

static int futex_writer(void *arg)
{
	struct futex_child *c = arg;
	char b;
	if (read(c->go, &b, 1) != 1)
		return 1;
	atomic_store(c->word, c->value);
	/* Wake until someone was woken: the parent's request is queued before "go". */
	for (int i = 0; i < 2000; i++) {
		if (futex_wake((uint32_t *)c->word) == 1)
			return 0;
		usleep(1000);
	}
	return 2;
}

REACTOR_TEST(futex_wait_woken_by_another_process)
{
	struct abd_reactor *r = new_reactor(flags);
	_Atomic uint32_t *word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	                              -1, 0);
	cr_assert_neq(word, MAP_FAILED);
	struct rec rc = { 0 };
	struct abd_source *s = NULL;
	int e = abd_reactor_add_futex(r, (const uint32_t *)word, 0, record, &rc, &s);
	if (!is_uring(flags) || !abd_probe_has(ABD_FEAT_URING_FUTEX_WAIT)) {
		/* Documented: no futex waits here; callers use an eventfd source instead. */
		cr_assert_eq(e, -EOPNOTSUPP);
		cr_assert_null(s);
		munmap((void *)word, 4096);
		abd_reactor_free(r);
		return;
	}
	cr_assert_eq(e, 0);
	drain_zero(r);
	cr_assert_eq(rc.calls, 0, "the word holds the expected value: keep sleeping");

	int go[2];
	cr_assert_eq(pipe2(go, O_CLOEXEC), 0);
	struct futex_child c = { word, 1, go[0] };
	pid_t pid = abd_test_fork(futex_writer, &c);
	cr_assert_eq(write(go[1], "g", 1), 1);
	run_until(r, &rc.calls, 1);
	cr_assert_eq(abd_test_wait(pid), 0, "the child never woke a sleeper");
	cr_assert_eq(rc.status, 0);
	cr_assert_eq(rc.value, 1, "woken by FUTEX_WAKE");

	/* One-shot: nothing more until re-armed. */
	cr_assert_eq(abd_source_futex_arm(s, 1), 0);
	cr_assert_eq(abd_source_futex_arm(s, 1), -EALREADY);
	c.value = 2;
	pid = abd_test_fork(futex_writer, &c);
	cr_assert_eq(write(go[1], "g", 1), 1);
	run_until(r, &rc.calls, 2);
	cr_assert_eq(abd_test_wait(pid), 0);
	cr_assert_eq(rc.value, 1);

	/* A stale expected value completes at once, reporting "differed". */
	cr_assert_eq(abd_source_futex_arm(s, 7), 0);
	run_until(r, &rc.calls, 3);
	cr_assert_eq(rc.value, 0);

	abd_source_free(s);
	close(go[0]);
	close(go[1]);
	munmap((void *)word, 4096);
	abd_reactor_free(r);
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

REACTOR_TEST(removal_with_a_request_in_flight)
{
	struct abd_reactor *r = new_reactor(flags);
	uint32_t *word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(word, MAP_FAILED);
	bool futex = abd_probe_has(ABD_FEAT_URING_FUTEX_WAIT) && is_uring(flags);
	int rounds = (int)abd_test_scaled(300, 30);
	for (int i = 0; i < rounds; i++) {
		int efd = eventfd(0, EFD_CLOEXEC), pfd[2];
		cr_assert_eq(pipe2(pfd, O_CLOEXEC | O_NONBLOCK), 0);
		struct abd_source *s[5] = { 0 };
		cr_assert_eq(abd_reactor_add_eventfd(r, efd, never, NULL, &s[0]), 0);
		cr_assert_eq(abd_reactor_add_io(r, pfd[0], POLLIN, never, NULL, &s[1]), 0);
		cr_assert_eq(abd_reactor_add_timer(r, (uint64_t)(i % 3) * 100000, 0, 0, never, NULL, &s[2]), 0);
		if (futex)
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

REACTOR_TEST(reactor_free_with_requests_in_flight)
{
	struct abd_reactor *r = new_reactor(flags);
	int efd[50];
	uint32_t word = 0;
	for (int i = 0; i < 50; i++) {
		efd[i] = eventfd(0, EFD_CLOEXEC);
		cr_assert_eq(abd_reactor_add_eventfd(r, efd[i], never, NULL, NULL), 0);
		cr_assert_eq(abd_reactor_add_timer(r, 3600ull * 1000000000u, 0, 0, never, NULL, NULL), 0);
		if (is_uring(flags) && abd_probe_has(ABD_FEAT_URING_FUTEX_WAIT))
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

REACTOR_TEST(dispatch_allocates_nothing)
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
	bool futex = is_uring(flags) && abd_probe_has(ABD_FEAT_URING_FUTEX_WAIT);
	if (futex)
		cr_assert_eq(abd_reactor_add_futex(r, &word, 0, rearm_futex, &fcalls, &f), 0);
	for (int i = 0; i < 10; i++) { /* warm up (stdio, lazy binding) */
		write_u64(efd, 1);
		run_until(r, &calls, i + 1);
	}
	atomic_store(&counting, 1);
	for (int i = 0; i < 1000; i++) {
		uint64_t one = 1;
		(void)!write(efd, &one, sizeof(one));
		while (calls < 11 + i)
			if (abd_reactor_run_once(r, 1000000000) < 0)
				break;
	}
	atomic_store(&counting, 0);
	cr_assert_eq(calls, 1010);
	cr_assert_eq(atomic_load(&allocations), 0, "%ld allocations while dispatching",
	             atomic_load(&allocations));
	if (futex)
		cr_assert_gt(fcalls, 0);
	abd_source_free(s);
	abd_source_free(f);
	close(efd);
	abd_reactor_free(r);
#endif
}
