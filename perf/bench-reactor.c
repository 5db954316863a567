/* SPDX-License-Identifier: MIT */
/* abd-perf reactor: what the reactor costs over the primitive it wraps.
 *
 *   wake-up latency (ping-pong, A bare, B sleeping in the reactor):
 *     abd-reactor-uring-futex    IORING_OP_FUTEX_WAIT source   vs bare-futex   (rtt)
 *     abd-reactor-epoll-futex    futex source served by a thread (epoll) vs bare-futex (rtt)
 *     abd-reactor-uring-eventfd  io_uring READ eventfd source  vs bare-eventfd (rtt)
 *     abd-reactor-epoll-eventfd  epoll eventfd source          vs bare-eventfd (rtt)
 *   dispatch throughput with 1,000 idle eventfd sources registered (one process: write the
 *     active eventfd, run_once, callback): abd-reactor-{uring,epoll} vs bare-epoll (write,
 *     epoll_wait over the same 1,001 fds, read);
 *   idle CPU (getrusage user + system ns per idle second) with 1,000 idle eventfd sources
 *     (idle-cpu-1k) and with a watch on 1,000 live services published by another process
 *     (idle-cpu-1k-watched: the inotify read plus one pidfd source per record):
 *     abd-reactor-{uring,epoll} vs bare-nanosleep (on a VM even a plain sleep is charged
 *     some CPU); bare-poll (poll() on the same 1,000 fds) for reference. Every subject is
 *     measured in one window of 200 ms per round (40 ms under --quick), the subjects in turn
 *     in each round (so load changes touch all alike), and reported as the median window
 *     scaled to one second; each abd row's ratio is the median of the rounds' ratios.
 * The latency and dispatch rows run in interleaved rounds against their baselines too
 * (bench_versus). */
#include <abd/abd.h>
#include <errno.h>
#include <poll.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "perf/bench.h"

#define IDLE_SOURCES 1000

static const char *const modes[] = {BENCH_SPLIT, BENCH_SHARED};

enum kind { K_URING_FUTEX, K_URING_EVENTFD, K_EPOLL_EVENTFD, K_EPOLL_FUTEX };

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
	bool epoll = st->kind == K_EPOLL_EVENTFD || st->kind == K_EPOLL_FUTEX;
	int e = abd_reactor_new(epoll ? ABD_REACTOR_FORCE_EPOLL : ABD_REACTOR_FORCE_IO_URING, &st->r);
	if (e < 0)
		return bench_fail("abd_reactor_new: %s", strerror(-e));
	if (st->kind == K_URING_FUTEX || st->kind == K_EPOLL_FUTEX)
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
	if (st->kind == K_URING_FUTEX || st->kind == K_EPOLL_FUTEX) {
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
		{K_EPOLL_FUTEX, "abd-reactor-epoll-futex", "bare-futex", 4},
	};
	uint64_t n = bench_iters(10000, 1000);
	for (size_t i = 0; i < sizeof(subjects) / sizeof(subjects[0]); i++) {
		for (int m = 0; m < 2; m++) {
			struct bench_row row = {.subject = subjects[i].subject, .case_name = "rtt",
			                        .cpus = modes[m], .msg_bytes = subjects[i].bytes,
			                        .baseline = subjects[i].baseline};
			if ((subjects[i].kind == K_URING_FUTEX || subjects[i].kind == K_URING_EVENTFD) &&
			    !abd_probe_has(ABD_FEAT_IO_URING)) {
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
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 16384 && rl.rlim_max > rl.rlim_cur) {
		rl.rlim_cur = rl.rlim_max < 16384 ? rl.rlim_max : 16384;
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

/* One sample of bare-epoll dispatch-1k-idle: an epoll set of the 1,000 idle eventfds and an
 * active one; write the active one, epoll_wait, read it; warm-up, then n timed. Leaves out:
 * a callback per source, the source table, cancellation, io_uring. */
static int bare_dispatch(void *ctx, struct bench_row *row)
{
	uint64_t n = *(const uint64_t *)ctx;
	int ep = epoll_create1(EPOLL_CLOEXEC), act = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ep < 0 || act < 0) {
		row->skipped = bench_reason("epoll/eventfd: %s", strerror(errno));
		if (ep >= 0)
			close(ep);
		if (act >= 0)
			close(act);
		return 0;
	}
	struct epoll_event ev = {.events = EPOLLIN};
	for (int i = 0; i < IDLE_SOURCES; i++) {
		ev.data.fd = idle_fds[i];
		epoll_ctl(ep, EPOLL_CTL_ADD, idle_fds[i], &ev);
	}
	ev.data.fd = act;
	epoll_ctl(ep, EPOLL_CTL_ADD, act, &ev);
	uint64_t one = 1, v, warm = bench_warmup(n), t0 = 0;
	struct epoll_event out[64];
	for (uint64_t i = 0; i < warm + n; i++) {
		if (i == warm)
			t0 = bench_now_ns();
		(void)!write(act, &one, sizeof(one));
		if (epoll_wait(ep, out, 64, -1) > 0)
			(void)!read(act, &v, sizeof(v));
	}
	row->iters = n;
	row->ops_per_s = (double)n * 1e9 / (double)(bench_now_ns() - t0);
	close(ep);
	close(act);
	return 0;
}

/* A reactor with 1,000 idle eventfd sources and an active one (the dispatch rows). */
struct dispatch {
	struct abd_reactor *r;
	int act;
	struct abd_source *src;
	uint64_t calls, n;
};

static int reactor_dispatch(void *ctx, struct bench_row *row)
{
	struct dispatch *d = ctx;
	uint64_t one = 1, warm = bench_warmup(d->n), base = d->calls, t0 = 0;
	for (uint64_t i = 0; i < warm + d->n; i++) {
		if (i == warm)
			t0 = bench_now_ns();
		(void)!write(d->act, &one, sizeof(one));
		while (d->calls <= base + i) {
			int e = abd_reactor_run_once(d->r, -1);
			if (e < 0) {
				row->skipped = bench_reason("abd_reactor_run_once: %s", strerror(-e));
				return e;
			}
		}
	}
	row->iters = d->n;
	row->ops_per_s = (double)d->n * 1e9 / (double)(bench_now_ns() - t0);
	return 0;
}

/* Builds the reactor (kept for the idle rows) and measures its dispatch row against
 * bare-epoll in interleaved rounds. */
static struct abd_reactor *dispatch_rows(unsigned flags, const char *subject, uint64_t n,
                                         uint64_t *idle_calls)
{
	struct bench_row row = {.subject = subject, .case_name = "dispatch-1k-idle", .iters = n,
	                        .baseline = "bare-epoll"};
	struct dispatch d = {.act = -1, .n = n};
	int e = abd_reactor_new(flags, &d.r);
	if (e < 0) {
		bench_skip(&row, "abd_reactor_new: %s", strerror(-e));
		return NULL;
	}
	for (int i = 0; i < IDLE_SOURCES && e == 0; i++)
		e = abd_reactor_add_eventfd(d.r, idle_fds[i], count_cb, idle_calls, NULL);
	d.act = eventfd(0, EFD_CLOEXEC);
	if (e == 0)
		e = d.act < 0 ? -errno : abd_reactor_add_eventfd(d.r, d.act, count_cb, &d.calls, &d.src);
	struct bench_versus *v = e == 0 ? calloc(1, sizeof(*v)) : NULL;
	if (e < 0 || !v) {
		bench_skip(&row, "add source: %s", strerror(e < 0 ? -e : ENOMEM));
		abd_reactor_free(d.r);
		if (d.act >= 0)
			close(d.act);
		return NULL;
	}
	static uint64_t bare_n;
	bare_n = n;
	v->fn = reactor_dispatch;
	v->ctx = &d;
	v->base_fn = bare_dispatch;
	v->base_ctx = &bare_n;
	bench_versus(v, row);
	free(v);
	abd_source_free(d.src);
	close(d.act);
	abd_reactor_run_once(d.r, 0); /* the cancel of the active source's read comes back */
	return d.r;
}

/* ---- 1,000 watched services: a child publishes 1,000 records and sleeps ---- */

struct publisher {
	char dir[128];
	pid_t pid;
	int stop_w;
};

static int publisher_main(const char *dir, int ready_w, int stop_r)
{
	struct abd_registry *reg;
	struct abd_record *rec;
	if (abd_registry_open(dir, 0, &reg, NULL, 0) < 0 || abd_record_new("bench.idle", &rec) < 0)
		return 1;
	static struct abd_publication *pubs[IDLE_SOURCES];
	for (int i = 0; i < IDLE_SOURCES; i++)
		if (abd_publish(reg, rec, &pubs[i]) < 0)
			return 2;
	char one = 1;
	if (write(ready_w, &one, 1) != 1)
		return 3;
	while (read(stop_r, &one, 1) > 0)
		;
	for (int i = 0; i < IDLE_SOURCES; i++)
		abd_withdraw(pubs[i]);
	return 0;
}

static int publisher_start(struct publisher *p, const char **why)
{
	p->pid = -1;
	p->stop_w = -1;
	int e = bench_tmpdir(p->dir, sizeof(p->dir));
	if (e < 0) {
		*why = "no tmpfs directory";
		return e;
	}
	int rp[2], sp[2];
	if (pipe2(rp, O_CLOEXEC) < 0) {
		*why = "pipe";
		return -errno;
	}
	if (pipe2(sp, O_CLOEXEC) < 0) {
		close(rp[0]);
		close(rp[1]);
		*why = "pipe";
		return -errno;
	}
	p->pid = fork();
	if (p->pid == 0) {
		close(rp[0]);
		close(sp[1]);
		_exit(publisher_main(p->dir, rp[1], sp[0]));
	}
	close(rp[1]);
	close(sp[0]);
	p->stop_w = sp[1];
	char c;
	ssize_t n = p->pid < 0 ? -1 : read(rp[0], &c, 1);
	close(rp[0]);
	if (n != 1) {
		*why = "the publisher child failed";
		return -EIO;
	}
	return 0;
}

static void publisher_stop(struct publisher *p)
{
	if (p->stop_w >= 0)
		close(p->stop_w);
	if (p->pid > 0)
		waitpid(p->pid, NULL, 0);
	if (p->dir[0])
		bench_rmdir(p->dir);
}

struct watched {
	struct abd_registry *reg;
	struct abd_watch *w;
	struct abd_reactor *r;
	uint64_t events, added;
};

static void on_watched(struct abd_source *s, int status, enum abd_event_type type,
                       const struct abd_entry *e, void *ud)
{
	(void)s, (void)status, (void)e;
	struct watched *wt = ud;
	wt->events++;
	if (type == ABD_EVENT_ADDED)
		wt->added++;
}

/* A reactor watching the publisher's 1,000 records: the inotify read and one pidfd source per
 * alive record (ABD_WATCH_PIDFD). Returns NULL with *why on failure. */
static struct abd_reactor *watched_reactor(unsigned flags, const char *dir, struct watched *wt,
                                           const char **why)
{
	memset(wt, 0, sizeof(*wt));
	int e = abd_registry_open(dir, 0, &wt->reg, NULL, 0);
	if (e == 0)
		e = abd_watch_new(wt->reg, ABD_WATCH_PIDFD, &wt->w);
	if (e == 0)
		e = abd_reactor_new(flags, &wt->r);
	if (e == 0)
		e = abd_reactor_add_watch(wt->r, wt->w, on_watched, wt, NULL);
	for (uint64_t end = bench_now_ns() + 10000000000u; e == 0 && wt->added < IDLE_SOURCES;) {
		e = abd_reactor_run_once(wt->r, 100000000);
		if (e >= 0)
			e = bench_now_ns() < end ? 0 : -ETIMEDOUT;
	}
	if (e < 0) {
		*why = strerror(-e);
		abd_watch_free(wt->w);
		abd_reactor_free(wt->r);
		abd_registry_free(wt->reg);
		return NULL;
	}
	wt->events = 0;
	return wt->r;
}

static void watched_free(struct watched *wt)
{
	abd_watch_free(wt->w);
	abd_reactor_free(wt->r);
	abd_registry_free(wt->reg);
}

/* ---- idle CPU: every subject measured in interleaved windows ---- */

#define IDLE_WINDOWS 5 /* a full idle window is measured in 5 parts, one per round */

/* bare-nanosleep: one nanosleep over the window (leaves out any descriptor: what an idle
 * process is charged on this machine at all); bare-poll: poll() on the 1,000 idle eventfds
 * over the window (leaves out the reactor's source table and callbacks). */
enum idle_kind { IDLE_SLEEP, IDLE_POLL, IDLE_REACTOR };

struct idle_subject {
	struct bench_row row;
	enum idle_kind kind;
	struct abd_reactor *r;
	const uint64_t *fired; /* must stay 0 over the windows: an idle source never fires */
};

static uint64_t idle_window(struct idle_subject *s, uint64_t window)
{
	static struct pollfd pfd[IDLE_SOURCES];
	uint64_t c0 = cpu_ns(), end = bench_now_ns() + window;
	switch (s->kind) {
	case IDLE_SLEEP: {
		struct timespec d = {.tv_sec = (time_t)(window / 1000000000u),
		                     .tv_nsec = (long)(window % 1000000000u)};
		while (nanosleep(&d, &d) < 0 && errno == EINTR)
			;
		break;
	}
	case IDLE_POLL:
		for (int i = 0; i < IDLE_SOURCES; i++)
			pfd[i] = (struct pollfd){.fd = idle_fds[i], .events = POLLIN};
		for (uint64_t now; (now = bench_now_ns()) < end;)
			poll(pfd, IDLE_SOURCES, (int)((end - now) / 1000000 + 1));
		break;
	case IDLE_REACTOR:
		for (uint64_t now; (now = bench_now_ns()) < end;)
			abd_reactor_run_once(s->r, (int64_t)(end - now));
		break;
	}
	return cpu_ns() - c0;
}

/* Each round measures every subject once, in turn (forward in even rounds, backward in odd
 * ones), so a change in the machine's load touches all of them alike; an abd row's ratio in a
 * round is its window's CPU time over bare-nanosleep's in the same round, and every figure is
 * the median over the rounds (a window scaled to one second). subj[0] is bare-nanosleep, the
 * baseline of every abd row. */
static void idle_rows(struct idle_subject *subj, size_t n)
{
	uint64_t window = idle_window_ns() / IDLE_WINDOWS;
	unsigned rounds = bench_rounds();
	struct bench_row (*rows)[BENCH_ROUNDS_MAX] = calloc(n, sizeof(*rows));
	if (!rows) {
		for (size_t i = 0; i < n; i++)
			bench_skip(&subj[i].row, "out of memory");
		return;
	}
	for (unsigned k = 0; k < rounds; k++)
		for (size_t j = 0; j < n; j++) {
			size_t i = k % 2 ? n - 1 - j : j;
			struct bench_row *r = &rows[i][k];
			*r = subj[i].row;
			if (r->skipped)
				continue;
			r->cpu_ns = (double)idle_window(&subj[i], window) * 1e9 / (double)window;
			r->cpu_measured = true;
		}
	for (size_t i = 0; i < n; i++) {
		struct idle_subject *s = &subj[i];
		if (!s->row.skipped && s->fired && *s->fired)
			for (unsigned k = 0; k < rounds; k++)
				rows[i][k].skipped = "an idle source fired";
		if (s->row.baseline) {
			bench_emit_versus(&s->row, rows[i], rows[0], rounds);
			continue;
		}
		if (rows[i][0].skipped) {
			bench_skip(&s->row, "%s", rows[i][0].skipped);
			continue;
		}
		struct bench_row r = s->row;
		bench_row_median(&r, rows[i], rounds);
		r.rounds = rounds;
		bench_emit(&r);
	}
	free(rows);
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
	bool uring = abd_probe_has(ABD_FEAT_IO_URING) == 1;
	uint64_t uring_fired = 0, epoll_fired = 0;
	struct abd_reactor *ru = NULL, *re;
	if (uring)
		ru = dispatch_rows(ABD_REACTOR_FORCE_IO_URING, "abd-reactor-uring", n, &uring_fired);
	else
		bench_skip(&(struct bench_row){.subject = "abd-reactor-uring", .case_name = "dispatch-1k-idle",
		                               .baseline = "bare-epoll"},
		           "io_uring unavailable (probe)");
	re = dispatch_rows(ABD_REACTOR_FORCE_EPOLL, "abd-reactor-epoll", n, &epoll_fired);

	/* 1,000 live services published by another process, watched through each backend */
	struct publisher pub;
	struct watched wu = {0}, we = {0};
	const char *why = NULL, *why_u = NULL, *why_e = NULL;
	struct abd_reactor *rwu = NULL, *rwe = NULL;
	if (publisher_start(&pub, &why) == 0) {
		if (uring)
			rwu = watched_reactor(ABD_REACTOR_FORCE_IO_URING, pub.dir, &wu, &why_u);
		rwe = watched_reactor(ABD_REACTOR_FORCE_EPOLL, pub.dir, &we, &why_e);
	}
	const char *no_uring = uring ? (ru ? NULL : "reactor setup failed") : "io_uring unavailable (probe)";
	struct idle_subject subj[] = {
		{.row = {.subject = "bare-nanosleep", .case_name = "idle-cpu-1k"}, .kind = IDLE_SLEEP},
		{.row = {.subject = "bare-poll", .case_name = "idle-cpu-1k"}, .kind = IDLE_POLL},
		{.row = {.subject = "abd-reactor-uring", .case_name = "idle-cpu-1k",
		         .baseline = "bare-nanosleep", .skipped = no_uring},
		 .kind = IDLE_REACTOR, .r = ru, .fired = &uring_fired},
		{.row = {.subject = "abd-reactor-epoll", .case_name = "idle-cpu-1k",
		         .baseline = "bare-nanosleep", .skipped = re ? NULL : "reactor setup failed"},
		 .kind = IDLE_REACTOR, .r = re, .fired = &epoll_fired},
		{.row = {.subject = "abd-reactor-uring", .case_name = "idle-cpu-1k-watched",
		         .baseline = "bare-nanosleep", .baseline_case = "idle-cpu-1k",
		         .skipped = !uring ? "io_uring unavailable (probe)" : why ? why : why_u},
		 .kind = IDLE_REACTOR, .r = rwu, .fired = &wu.events},
		{.row = {.subject = "abd-reactor-epoll", .case_name = "idle-cpu-1k-watched",
		         .baseline = "bare-nanosleep", .baseline_case = "idle-cpu-1k",
		         .skipped = why ? why : why_e},
		 .kind = IDLE_REACTOR, .r = rwe, .fired = &we.events},
	};
	idle_rows(subj, sizeof(subj) / sizeof(subj[0]));
	if (rwu)
		watched_free(&wu);
	if (rwe)
		watched_free(&we);
	publisher_stop(&pub);
	abd_reactor_free(ru);
	abd_reactor_free(re);
	close_idle();
}
