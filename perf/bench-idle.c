/* SPDX-License-Identifier: MIT */
/* idle: how often a process asleep in a blocking abd call wakes up while nothing happens.
 *
 * Each row is one process, a worker (abd-perf --idle-worker KIND DIR FD, exec'd from this
 * binary), that sets its subject up, says it is ready and sleeps in one blocking call; its
 * wake-ups are the voluntary context switches of all its threads (/proc/PID/task/N/status,
 * voluntary_ctxt_switches) over the window, per second:
 *   abd-service idle-pop-P    a consumer blocked in abd_service_pop on an empty service
 *                             (a peer process published it as producer and runs its reactor)
 *   abd-service idle-push-P   a producer blocked in abd_service_push on a full ring of 4 slots
 *                             (the peer published it as consumer and never pops)
 *   abd-service idle-open-P   abd_service_open of a name nobody publishes, no timeout
 *   abd-reactor idle-watch-1k-P  abd_reactor_run_once(-1) on a reactor holding a watch
 *                             (ABD_WATCH_PIDFD) of 1,000 live services a peer published
 * for P in native, linux-5.4 and no-io_uring: the worker is exec'd through
 * `abdctl emulate P --` (ABD_ABDCTL, else the build's tools/abdctl beside perf/), so the
 * peer it forks runs under the same profile. The floors, native: bare-futex idle-wait
 * (FUTEX_WAIT on a word nobody wakes) and bare-eventfd idle-read (read() on an idle eventfd);
 * both wake 0 times. Every abd row has bare-futex idle-wait as its baseline.
 *
 * Rounds: in each round every worker is started, all of them sleep through the same window
 * (one part of the full window: 10 s, --quick 1 s, divided by the rounds), and all are
 * killed; each figure is the median over the rounds. Setting up and the first 200 ms after
 * "ready" are outside the window. */
#include <abd/abd.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "perf/bench.h"

#define NAME "perf.idle"
#define MISSING "perf.idle.missing"
#define WATCHED 1000
#define SETTLE_NS 200000000ull
#define READY_NS 60000000000ull /* a worker must be ready within 60 s */

enum kind { K_FUTEX, K_EVENTFD, K_POP, K_PUSH, K_OPEN, K_WATCH, NKINDS };
static const char *const kind_name[NKINDS] = {"futex", "eventfd", "pop", "push", "open", "watch-1k"};

static const char *const profiles[] = {"native", "linux-5.4", "no-io_uring"};
#define NPROFILES (sizeof(profiles) / sizeof(profiles[0]))

/* ---- the worker (a process of its own, possibly under an emulated kernel) ---- */

static int say(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int say(int fd, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > 0 && write(fd, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1) < 0)
		return 1;
	return 1;
}

static void ready(int fd)
{
	char r = 'R';
	if (write(fd, &r, 1) != 1)
		_exit(1);
	close(fd);
}

static void cfg_init(struct abd_service_config *cfg, const char *dir)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->dir = dir;
	cfg->capacity = 4;
	cfg->slot_size = 64;
}

/* The peer: publishes the service (role) or WATCHED records, says so on ready_w, and idles
 * (running its service's reactor, which serves the handshake of openers). */
static int peer_main(const char *dir, enum kind k, int ready_w)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (k == K_WATCH) {
		struct abd_registry *reg;
		struct abd_record *rec;
		int e = abd_registry_open(dir, 0, &reg, NULL, 0);
		if (e == 0)
			e = abd_record_new(NAME, &rec);
		static struct abd_publication *pubs[WATCHED];
		for (int i = 0; i < WATCHED && e == 0; i++)
			e = abd_publish(reg, rec, &pubs[i]);
		if (e < 0)
			return say(ready_w, "peer: publishing %d records: %s", WATCHED, strerror(-e));
		ready(ready_w);
		for (;;)
			pause();
	}
	struct abd_service_config cfg;
	cfg_init(&cfg, dir);
	struct abd_service *svc;
	int e = abd_service_publish(NAME, &cfg, k == K_POP ? ABD_SERVICE_PRODUCER : ABD_SERVICE_CONSUMER,
	                            &svc);
	if (e < 0)
		return say(ready_w, "peer: abd_service_publish: %s", strerror(-e));
	ready(ready_w);
	for (;;)
		abd_reactor_run_once(abd_service_reactor(svc), -1);
}

static int start_peer(const char *dir, enum kind k, int out)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return say(out, "pipe: %s", strerror(errno));
	pid_t pid = fork();
	if (pid < 0)
		return say(out, "fork: %s", strerror(errno));
	if (pid == 0) {
		close(p[0]);
		close(out);
		_exit(peer_main(dir, k, p[1]));
	}
	close(p[1]);
	char buf[256];
	ssize_t n = read(p[0], buf, sizeof(buf) - 1);
	close(p[0]);
	if (n == 1 && buf[0] == 'R')
		return 0;
	if (n <= 0)
		return say(out, "the peer exited before it was ready");
	buf[n] = 0;
	return say(out, "%s", buf);
}

struct watched {
	uint64_t added;
};

static void on_watch(struct abd_source *s, int status, enum abd_event_type type,
                     const struct abd_entry *e, void *ud)
{
	(void)s, (void)status, (void)e;
	struct watched *w = ud;
	if (type == ABD_EVENT_ADDED)
		w->added++;
}

int bench_idle_worker(const char *kind, const char *dir, const char *fdstr)
{
	int out = atoi(fdstr);
	enum kind k = NKINDS;
	for (int i = 0; i < NKINDS; i++)
		if (!strcmp(kind, kind_name[i]))
			k = (enum kind)i;
	if (k == NKINDS || out < 0)
		return 2;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	struct abd_service_config cfg;
	cfg_init(&cfg, dir);
	struct abd_service *svc = NULL;
	unsigned char msg[64] = {0};
	int e;
	switch (k) {
	case K_FUTEX: {
		static uint32_t word;
		ready(out);
		for (;;)
			syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
	}
	case K_EVENTFD: {
		int efd = eventfd(0, EFD_CLOEXEC);
		if (efd < 0)
			return say(out, "eventfd: %s", strerror(errno));
		ready(out);
		uint64_t v;
		for (;;)
			if (read(efd, &v, sizeof(v)) < 0 && errno != EINTR)
				return 1;
	}
	case K_POP:
		if (start_peer(dir, k, out))
			return 1;
		e = abd_service_open(NAME, &cfg, ABD_SERVICE_CONSUMER, 10000000000ll, &svc);
		if (e < 0)
			return say(out, "abd_service_open: %s", strerror(-e));
		ready(out);
		for (;;)
			if ((e = abd_service_pop(svc, msg, sizeof(msg), -1)) < 0 && e != -EINTR)
				return 1;
	case K_PUSH:
		if (start_peer(dir, k, out))
			return 1;
		e = abd_service_open(NAME, &cfg, ABD_SERVICE_PRODUCER, 10000000000ll, &svc);
		if (e < 0)
			return say(out, "abd_service_open: %s", strerror(-e));
		while ((e = abd_service_try_push(svc, msg, sizeof(msg))) == 0)
			;
		if (e != -EAGAIN)
			return say(out, "abd_service_try_push: %s", strerror(-e));
		ready(out);
		for (;;)
			if ((e = abd_service_push(svc, msg, sizeof(msg), -1)) < 0 && e != -EINTR)
				return 1;
	case K_OPEN:
		ready(out);
		for (;;)
			if ((e = abd_service_open(MISSING, &cfg, ABD_SERVICE_CONSUMER, -1, &svc)) == 0)
				return 1; /* nobody publishes it */
	case K_WATCH: {
		if (start_peer(dir, k, out))
			return 1;
		struct abd_registry *reg;
		struct abd_watch *w;
		struct abd_reactor *r;
		struct watched wt = {0};
		e = abd_registry_open(dir, 0, &reg, NULL, 0);
		if (e == 0)
			e = abd_watch_new(reg, ABD_WATCH_PIDFD, &w);
		if (e == 0)
			e = abd_reactor_new(0, &r);
		if (e == 0)
			e = abd_reactor_add_watch(r, w, on_watch, &wt, NULL);
		for (uint64_t end = bench_now_ns() + 30000000000ull; e == 0 && wt.added < WATCHED;) {
			e = abd_reactor_run_once(r, 100000000);
			if (e >= 0)
				e = bench_now_ns() < end ? 0 : -ETIMEDOUT;
		}
		if (e < 0)
			return say(out, "watching %d services: %s", WATCHED, strerror(-e));
		ready(out);
		for (;;)
			if ((e = abd_reactor_run_once(r, -1)) < 0 && e != -EINTR)
				return 1;
	}
	default:
		return 2;
	}
}

/* ---- the measuring side ---- */

struct worker {
	enum kind k;
	unsigned prof;
	pid_t pid;
	int rfd;
	bool ready;
	const char *why;
	char dir[128];
	int64_t c0;
};

static char self_exe[PATH_MAX];
static char abdctl[PATH_MAX];

/* abdctl: $ABD_ABDCTL, else tools/abdctl beside this binary's perf/ directory. */
static const char *find_abdctl(void)
{
	const char *env = getenv("ABD_ABDCTL");
	if (env && *env && access(env, X_OK) == 0)
		return env;
	char *slash = strrchr(self_exe, '/');
	if (!slash)
		return NULL;
	snprintf(abdctl, sizeof(abdctl), "%.*s/../tools/abdctl", (int)(slash - self_exe), self_exe);
	return access(abdctl, X_OK) == 0 ? abdctl : NULL;
}

static void start(struct worker *w, const char *ctl)
{
	w->pid = -1;
	w->rfd = -1;
	w->ready = false;
	w->why = NULL;
	w->dir[0] = 0;
	if (w->prof && !ctl) {
		w->why = "abdctl not found (set ABD_ABDCTL)";
		return;
	}
	if (bench_tmpdir(w->dir, sizeof(w->dir)) < 0) {
		w->why = "no tmpfs directory";
		return;
	}
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0) {
		w->why = bench_reason("pipe: %s", strerror(errno));
		return;
	}
	fflush(stdout);
	w->pid = fork();
	if (w->pid == 0) {
		setpgid(0, 0);
		close(p[0]);
		fcntl(p[1], F_SETFD, 0);
		char fd[16];
		snprintf(fd, sizeof(fd), "%d", p[1]);
		char *argv[] = {ctl ? strdup(ctl) : NULL, strdup("emulate"), strdup(profiles[w->prof]),
		                strdup("--"), self_exe, strdup("--idle-worker"), strdup(kind_name[w->k]),
		                w->dir, fd, NULL};
		char **a = w->prof ? argv : argv + 4;
		execv(a[0], a);
		dprintf(p[1], "exec %s: %s", a[0], strerror(errno));
		_exit(127);
	}
	close(p[1]);
	if (w->pid < 0) {
		close(p[0]);
		w->why = bench_reason("fork: %s", strerror(errno));
		return;
	}
	setpgid(w->pid, w->pid);
	w->rfd = p[0];
}

/* Waits until every started worker said ready or failed. */
static void await_ready(struct worker *ws, size_t n)
{
	uint64_t end = bench_now_ns() + READY_NS;
	for (;;) {
		struct pollfd pfd[NKINDS * NPROFILES];
		size_t idx[NKINDS * NPROFILES], m = 0;
		for (size_t i = 0; i < n; i++)
			if (ws[i].rfd >= 0) {
				pfd[m] = (struct pollfd){.fd = ws[i].rfd, .events = POLLIN};
				idx[m++] = i;
			}
		uint64_t now = bench_now_ns();
		if (!m)
			return;
		if (now >= end) {
			for (size_t j = 0; j < m; j++) {
				ws[idx[j]].why = "not ready within 60 s";
				close(ws[idx[j]].rfd);
				ws[idx[j]].rfd = -1;
			}
			return;
		}
		if (poll(pfd, m, (int)((end - now) / 1000000 + 1)) < 0 && errno != EINTR)
			return;
		for (size_t j = 0; j < m; j++) {
			if (!pfd[j].revents)
				continue;
			struct worker *w = &ws[idx[j]];
			char buf[256];
			ssize_t r = read(w->rfd, buf, sizeof(buf) - 1);
			if (r == 1 && buf[0] == 'R') {
				w->ready = true;
			} else if (r > 0) {
				buf[r] = 0;
				w->why = bench_reason("%s", buf);
			} else {
				w->why = "the worker exited before it was ready";
			}
			close(w->rfd);
			w->rfd = -1;
		}
	}
}

static void stop(struct worker *w)
{
	if (w->rfd >= 0)
		close(w->rfd);
	if (w->pid > 0) {
		kill(-w->pid, SIGKILL);
		kill(w->pid, SIGKILL);
		waitpid(w->pid, NULL, 0);
	}
	if (w->dir[0])
		bench_rmdir(w->dir);
}

static void sleep_ns(uint64_t ns)
{
	struct timespec d = {.tv_sec = (time_t)(ns / 1000000000u), .tv_nsec = (long)(ns % 1000000000u)};
	while (nanosleep(&d, &d) < 0 && errno == EINTR)
		;
}

static struct bench_row row_of(enum kind k, unsigned prof)
{
	static char cases[NKINDS][NPROFILES][40];
	if (k == K_FUTEX)
		return (struct bench_row){.subject = "bare-futex", .case_name = "idle-wait"};
	if (k == K_EVENTFD)
		return (struct bench_row){.subject = "bare-eventfd", .case_name = "idle-read"};
	snprintf(cases[k][prof], sizeof(cases[k][prof]), "idle-%s-%s", kind_name[k], profiles[prof]);
	return (struct bench_row){.subject = k == K_WATCH ? "abd-reactor" : "abd-service",
	                          .case_name = cases[k][prof], .baseline = "bare-futex",
	                          .baseline_case = "idle-wait"};
}

void bench_idle(void)
{
	ssize_t len = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
	if (len <= 0) {
		bench_skip(&(struct bench_row){.subject = "bare-futex", .case_name = "idle-wait"},
		           "/proc/self/exe: %s", strerror(errno));
		return;
	}
	self_exe[len] = 0;
	const char *ctl = find_abdctl();
	unsigned rounds = bench_rounds();
	uint64_t window = (bench_opt.quick ? 1000000000ull : 10000000000ull) / rounds;

	/* the workers: the two floors natively, every abd subject under every profile */
	struct worker ws[NKINDS * NPROFILES];
	size_t n = 0;
	for (int k = 0; k < NKINDS; k++)
		for (unsigned p = 0; p < (k <= K_EVENTFD ? 1 : NPROFILES); p++)
			ws[n++] = (struct worker){.k = (enum kind)k, .prof = p};
	struct bench_row (*rows)[BENCH_ROUNDS_MAX] = calloc(n, sizeof(*rows));
	if (!rows) {
		for (size_t i = 0; i < n; i++) {
			struct bench_row r = row_of(ws[i].k, ws[i].prof);
			bench_skip(&r, "out of memory");
		}
		return;
	}

	for (unsigned r = 0; r < rounds; r++) {
		for (size_t i = 0; i < n; i++)
			start(&ws[i], ctl);
		await_ready(ws, n);
		sleep_ns(SETTLE_NS);
		for (size_t i = 0; i < n; i++)
			if (ws[i].ready && (ws[i].c0 = bench_vcsw(ws[i].pid)) < 0)
				ws[i].why = "its /proc/PID/task is unreadable";
		uint64_t t0 = bench_now_ns();
		sleep_ns(window);
		uint64_t t1 = bench_now_ns();
		for (size_t i = 0; i < n; i++) {
			struct worker *w = &ws[i];
			struct bench_row *row = &rows[i][r];
			*row = row_of(w->k, w->prof);
			int64_t c1 = w->ready && !w->why ? bench_vcsw(w->pid) : -1;
			if (w->ready && !w->why && waitpid(w->pid, NULL, WNOHANG) != 0)
				w->why = "the worker exited during the window";
			if (!w->why && (!w->ready || c1 < w->c0))
				w->why = "not measured";
			if (w->why) {
				row->skipped = w->why;
			} else {
				row->wakeups_per_s = (double)(c1 - w->c0) * 1e9 / (double)(t1 - t0);
				row->wakeups_measured = true;
			}
			stop(w);
		}
	}

	/* bare-eventfd alone; bare-futex comes with the first abd row (bench_emit_versus) */
	for (size_t i = 0; i < n; i++) {
		struct bench_row base = row_of(ws[i].k, ws[i].prof);
		if (ws[i].k == K_FUTEX)
			continue;
		if (ws[i].k == K_EVENTFD) {
			unsigned ok = 0;
			for (unsigned r = 0; r < rounds; r++)
				ok += !rows[i][r].skipped;
			if (!ok) {
				bench_skip(&base, "%s", rows[i][0].skipped);
				continue;
			}
			bench_row_median(&base, rows[i], rounds);
			base.rounds = ok;
			bench_emit(&base);
			continue;
		}
		bench_emit_versus(&base, rows[i], rows[0], rounds);
	}
	free(rows);
}
