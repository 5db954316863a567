/* SPDX-License-Identifier: MIT */
/* abd-perf reactor: what the reactor costs over the primitive it wraps.
 *
 *   wake-up latency (ping-pong, A bare, B sleeping in the reactor):
 *     abd-reactor-uring-futex    IORING_OP_FUTEX_WAIT source   vs bare-futex   (rtt)
 *     abd-reactor-uring-eventfd  io_uring READ eventfd source  vs bare-eventfd (rtt)
 *     abd-reactor-epoll-eventfd  epoll eventfd source          vs bare-eventfd (rtt)
 *   dispatch throughput with 1,000 idle eventfd sources registered (one process: write the
 *     active eventfd, run_once, callback): abd-reactor-{uring,epoll} vs bare-epoll (write,
 *     epoll_wait over the same 1,001 fds, read);
 *   idle CPU with 1,000 idle eventfd sources, over one second of run_once (getrusage user +
 *     system ns): abd-reactor-{uring,epoll} vs bare-nanosleep (one nanosleep over the same
 *     window: on a VM even a plain sleep is charged some CPU, 0.1-0.3 ms per second here);
 *     bare-poll (poll() on the same 1,000 fds) for reference. */
#include <abd/abd.h>
#include <errno.h>
#include <poll.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "perf/bench.h"

#define IDLE_SOURCES 1000

static const char *const modes[] = {BENCH_SPLIT, BENCH_SHARED};

enum kind { K_URING_FUTEX, K_URING_EVENTFD, K_EPOLL_EVENTFD };

struct rx_shm {
	alignas(64) uint32_t ping;
	alignas(64) uint32_t pong;
	int a_out, a_in, b_out, b_in; /* eventfds: A writes a_out = b_in, B writes b_out = a_in */
};

struct rx_state {
	struct rx_shm *shm;
	enum kind kind;
	uint32_t seq;
	bool handled;
	struct abd_reactor *r;
	struct abd_source *src;
};

static int rx_prepare(void *shm, void *arg)
{
	struct rx_shm *s = shm;
	(void)arg;
	int p = eventfd(0, EFD_CLOEXEC), q = eventfd(0, EFD_CLOEXEC);
	if (p < 0 || q < 0) {
		if (p >= 0)
			close(p);
		return -errno;
	}
	s->a_out = s->b_in = p;
	s->b_out = s->a_in = q;
	return 0;
}

static void rx_cleanup(void *shm, void *arg)
{
	(void)arg;
	struct rx_shm *s = shm;
	close(s->a_out);
	close(s->a_in);
}

static void on_futex(struct abd_source *src, int status, uint64_t value, void *ud)
{
	(void)value;
	struct rx_state *st = ud;
	uint32_t v = __atomic_load_n(&st->shm->ping, __ATOMIC_ACQUIRE);
	if (status == 0 && v == st->seq + 1) {
		st->seq = v;
		__atomic_store_n(&st->shm->pong, v, __ATOMIC_RELEASE);
		bench_futex_wake(&st->shm->pong);
		st->handled = true;
	}
	abd_source_futex_arm(src, v);
}

static void on_eventfd(struct abd_source *src, int status, uint64_t value, void *ud)
{
	(void)src, (void)value;
	struct rx_state *st = ud;
	uint64_t one = 1;
	if (status == 0 && write(st->shm->b_out, &one, sizeof(one)) == sizeof(one))
		st->handled = true;
}

static int rx_init(enum bench_role role, void *shm, void *arg, void **state)
{
	struct rx_state *st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->shm = shm;
	st->kind = (enum kind)(intptr_t)arg;
	*state = st;
	if (role == BENCH_A)
		return 0;
	int e = abd_reactor_new(st->kind == K_EPOLL_EVENTFD ? ABD_REACTOR_FORCE_EPOLL
	                                                   : ABD_REACTOR_FORCE_IO_URING, &st->r);
	if (e < 0)
		return bench_fail("abd_reactor_new: %s", strerror(-e));
	if (st->kind == K_URING_FUTEX)
		e = abd_reactor_add_futex(st->r, &st->shm->ping, 0, on_futex, st, &st->src);
	else
		e = abd_reactor_add_eventfd(st->r, st->shm->b_in, on_eventfd, st, &st->src);
	if (e < 0)
		return bench_fail("add source: %s", strerror(-e));
	return 0;
}

static void rx_fini(enum bench_role role, void *state)
{
	(void)role;
	struct rx_state *st = state;
	abd_source_free(st->src);
	abd_reactor_free(st->r);
	free(st);
}

static int rx_ping(void *state, uint64_t *ns)
{
	(void)ns;
	struct rx_state *st = state;
	if (st->kind == K_URING_FUTEX) {
		uint32_t v = ++st->seq;
		__atomic_store_n(&st->shm->ping, v, __ATOMIC_RELEASE);
		bench_futex_wake(&st->shm->ping);
		uint32_t cur;
		while ((cur = __atomic_load_n(&st->shm->pong, __ATOMIC_ACQUIRE)) != v) {
			int r = bench_futex_wait(&st->shm->pong, cur);
			if (r < 0)
				return r;
		}
		return 0;
	}
	uint64_t one = 1, got;
	if (write(st->shm->a_out, &one, sizeof(one)) != sizeof(one))
		return -errno;
	while (read(st->shm->a_in, &got, sizeof(got)) != sizeof(got))
		if (errno != EINTR)
			return -errno;
	return 0;
}

static int rx_pong(void *state)
{
	struct rx_state *st = state;
	st->handled = false;
	while (!st->handled) {
		int n = abd_reactor_run_once(st->r, -1);
		if (n < 0)
			return n;
	}
	return 0;
}

static void wake_latency(void)
{
	static const struct {
		enum kind kind;
		const char *subject, *baseline;
		unsigned bytes;
	} subjects[] = {
		{K_URING_FUTEX, "abd-reactor-uring-futex", "bare-futex", 4},
		{K_URING_EVENTFD, "abd-reactor-uring-eventfd", "bare-eventfd", 8},
		{K_EPOLL_EVENTFD, "abd-reactor-epoll-eventfd", "bare-eventfd", 8},
	};
	uint64_t n = bench_iters(10000, 1000);
	for (size_t i = 0; i < sizeof(subjects) / sizeof(subjects[0]); i++) {
		for (int m = 0; m < 2; m++) {
			struct bench_row row = {.subject = subjects[i].subject, .case_name = "rtt",
			                        .cpus = modes[m], .msg_bytes = subjects[i].bytes,
			                        .baseline = subjects[i].baseline};
			if (subjects[i].kind != K_EPOLL_EVENTFD && !abd_probe_has(ABD_FEAT_IO_URING)) {
				bench_skip(&row, "io_uring unavailable (probe)");
				continue;
			}
			if (subjects[i].kind == K_URING_FUTEX && !abd_probe_has(ABD_FEAT_URING_FUTEX_WAIT)) {
				bench_skip(&row, "IORING_OP_FUTEX_WAIT unavailable (probe; Linux 6.7+)");
				continue;
			}
			struct bench_pair p = {.shm_size = sizeof(struct rx_shm),
			                       .arg = (void *)(intptr_t)subjects[i].kind,
			                       .prepare = rx_prepare, .cleanup = rx_cleanup,
			                       .init = rx_init, .fini = rx_fini,
			                       .ping = rx_ping, .pong = rx_pong};
			bench_pingpong(&p, row, n);
		}
	}
}

/* ---- 1,000 idle sources: dispatch throughput and idle CPU ---- */

static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096 && rl.rlim_max > rl.rlim_cur) {
		rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static int idle_fds[IDLE_SOURCES];

static int open_idle(void)
{
	raise_nofile();
	for (int i = 0; i < IDLE_SOURCES; i++) {
		idle_fds[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (idle_fds[i] < 0) {
			int e = -errno;
			while (i--)
				close(idle_fds[i]);
			return e;
		}
	}
	return 0;
}

static void close_idle(void)
{
	for (int i = 0; i < IDLE_SOURCES; i++)
		close(idle_fds[i]);
}

static uint64_t cpu_ns(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000u +
	       ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000u;
}

static void count_cb(struct abd_source *s, int st, uint64_t v, void *ud)
{
	(void)s, (void)st, (void)v;
	(*(uint64_t *)ud)++;
}

static uint64_t idle_window_ns(void)
{
	return bench_opt.quick ? 200000000u : 1000000000u;
}

static void bare_rows(uint64_t n)
{
	struct bench_row row = {.subject = "bare-epoll", .case_name = "dispatch-1k-idle", .iters = n};
	int ep = epoll_create1(EPOLL_CLOEXEC), act = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ep < 0 || act < 0) {
		bench_skip(&row, "epoll/eventfd: %s", strerror(errno));
		return;
	}
	struct epoll_event ev = {.events = EPOLLIN};
	for (int i = 0; i < IDLE_SOURCES; i++) {
		ev.data.fd = idle_fds[i];
		epoll_ctl(ep, EPOLL_CTL_ADD, idle_fds[i], &ev);
	}
	ev.data.fd = act;
	epoll_ctl(ep, EPOLL_CTL_ADD, act, &ev);
	uint64_t one = 1, v, t0 = bench_now_ns();
	struct epoll_event out[64];
	for (uint64_t i = 0; i < n; i++) {
		(void)!write(act, &one, sizeof(one));
		if (epoll_wait(ep, out, 64, -1) > 0)
			(void)!read(act, &v, sizeof(v));
	}
	row.ops_per_s = (double)n * 1e9 / (double)(bench_now_ns() - t0);
	bench_emit(&row);
	close(ep);
	close(act);

	/* The idle floor: a plain sleep over the same window. */
	struct bench_row sleep_row = {.subject = "bare-nanosleep", .case_name = "idle-cpu-1k"};
	uint64_t s0 = cpu_ns(), w = idle_window_ns();
	struct timespec d = {.tv_sec = (time_t)(w / 1000000000u), .tv_nsec = (long)(w % 1000000000u)};
	while (nanosleep(&d, &d) < 0 && errno == EINTR)
		;
	sleep_row.cpu_ns = (double)(cpu_ns() - s0);
	sleep_row.cpu_measured = true;
	bench_emit(&sleep_row);

	/* poll() sleeping on the same 1,000 fds. */
	struct bench_row idle = {.subject = "bare-poll", .case_name = "idle-cpu-1k"};
	static struct pollfd pfd[IDLE_SOURCES];
	for (int i = 0; i < IDLE_SOURCES; i++)
		pfd[i] = (struct pollfd){.fd = idle_fds[i], .events = POLLIN};
	uint64_t c0 = cpu_ns(), end = bench_now_ns() + idle_window_ns();
	for (uint64_t now; (now = bench_now_ns()) < end;)
		poll(pfd, IDLE_SOURCES, (int)((end - now) / 1000000 + 1));
	idle.cpu_ns = (double)(cpu_ns() - c0);
	idle.cpu_measured = true;
	bench_emit(&idle);
}

static void reactor_rows(unsigned flags, const char *subject, uint64_t n)
{
	struct bench_row row = {.subject = subject, .case_name = "dispatch-1k-idle", .iters = n,
	                        .baseline = "bare-epoll"};
	struct bench_row idle = {.subject = subject, .case_name = "idle-cpu-1k",
	                         .baseline = "bare-nanosleep"};
	struct abd_reactor *r;
	int e = abd_reactor_new(flags, &r);
	if (e < 0) {
		bench_skip(&row, "abd_reactor_new: %s", strerror(-e));
		bench_skip(&idle, "abd_reactor_new: %s", strerror(-e));
		return;
	}
	uint64_t idle_calls = 0, calls = 0;
	for (int i = 0; i < IDLE_SOURCES && e == 0; i++)
		e = abd_reactor_add_eventfd(r, idle_fds[i], count_cb, &idle_calls, NULL);
	int act = eventfd(0, EFD_CLOEXEC);
	if (e == 0)
		e = abd_reactor_add_eventfd(r, act, count_cb, &calls, NULL);
	if (e < 0) {
		bench_skip(&row, "add source: %s", strerror(-e));
		bench_skip(&idle, "add source: %s", strerror(-e));
	} else {
		uint64_t one = 1, warm = bench_warmup(n);
		for (uint64_t i = 0; i < warm; i++) {
			(void)!write(act, &one, sizeof(one));
			while (calls <= i)
				abd_reactor_run_once(r, -1);
		}
		uint64_t t0 = bench_now_ns();
		for (uint64_t i = warm; i < warm + n; i++) {
			(void)!write(act, &one, sizeof(one));
			while (calls <= i)
				if (abd_reactor_run_once(r, -1) < 0)
					break;
		}
		row.ops_per_s = (double)n * 1e9 / (double)(bench_now_ns() - t0);
		bench_emit(&row);

		uint64_t c0 = cpu_ns(), end = bench_now_ns() + idle_window_ns();
		for (uint64_t now; (now = bench_now_ns()) < end;)
			abd_reactor_run_once(r, (int64_t)(end - now));
		idle.cpu_ns = (double)(cpu_ns() - c0);
		idle.cpu_measured = true;
		if (idle_calls)
			bench_skip(&idle, "an idle source fired");
		else
			bench_emit(&idle);
	}
	abd_reactor_free(r);
	close(act);
}

void bench_reactor(void)
{
	wake_latency();
	uint64_t n = bench_iters(200000, 20000);
	int e = open_idle();
	if (e < 0) {
		struct bench_row row = {.subject = "bare-epoll", .case_name = "dispatch-1k-idle"};
		bench_skip(&row, "1,000 eventfds: %s", strerror(-e));
		return;
	}
	bare_rows(n);
	if (abd_probe_has(ABD_FEAT_IO_URING))
		reactor_rows(ABD_REACTOR_FORCE_IO_URING, "abd-reactor-uring", n);
	else
		bench_skip(&(struct bench_row){.subject = "abd-reactor-uring", .case_name = "dispatch-1k-idle",
		                               .baseline = "bare-epoll"},
		           "io_uring unavailable (probe)");
	reactor_rows(ABD_REACTOR_FORCE_EPOLL, "abd-reactor-epoll", n);
	close_idle();
}
