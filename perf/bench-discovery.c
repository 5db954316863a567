/* SPDX-License-Identifier: MIT */
/* `abd-perf discovery`: the registry against the bare kernel primitives it rests on.
 *   abd-discovery  publish-to-added   abd_publish() starts -> another process's watch reports
 *                                     `added` (abd_watch_wait, asleep in read(inotify))
 *                                     vs bare-inotify-linkat (linkat -> read(inotify) returns)
 *                publish-to-added-vs-bare-publish  the same measurement vs bare-inotify-publish
 *                                     (O_TMPFILE, write, linkat -> read(inotify), open, read,
 *                                     close: the same work in bare syscalls)
 *                publish-staged-to-added  abd_publish_prepare() untimed, then
 *                                     abd_publish_commit() starts -> `added` at the watch:
 *                                     vs bare-inotify-linkat like for like (both write their
 *                                     record before the clock starts, both time the linkat on)
 *   abd-discovery  enumerate-N        abd_registry_snapshot() of N live records, N = 1000, 10000
 *                                     vs bare-readdir-open-read (readdir, open, read, close each)
 *   abd-discovery  exit-to-died       a publisher's last instruction -> the watch reports `died`
 *                                     vs bare-pidfd-exit (exit -> poll(pidfd) returns)
 * The abd figures include everything a user pays: for publish, the whole abd_publish (O_TMPFILE,
 * write, lock, linkat); for the watcher, reading and validating the record. */
#include <abd/abd.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "perf/bench.h"

#define CACHELINE 64
static const char *const modes[] = {BENCH_SPLIT, BENCH_SHARED};

/* Block on the watch's descriptor until an event of type arrives; returns its time. */
struct waiter {
	enum abd_event_type want;
	bool seen;
	uint64_t t;
};

static void on_event(void *ud, enum abd_event_type type, const struct abd_entry *e)
{
	(void)e;
	struct waiter *w = ud;
	if (type == w->want && !w->seen) {
		w->seen = true;
		w->t = bench_now_ns();
	}
}

/* abd_watch_wait: asleep in read(inotify), as the bare watcher is (the runner's deadline
 * ends a sample that never comes). */
static int wait_for(struct abd_watch *watch, enum abd_event_type type, uint64_t *t)
{
	struct waiter w = {type, false, 0};
	while (!w.seen) {
		int r = abd_watch_wait(watch, -1, on_event, &w);
		if (r < 0)
			return r;
	}
	*t = w.t;
	return 0;
}

/* ---- publish -> added ---- */

struct pub_shared {
	char dir[96];
	uint64_t t_added;
	alignas(CACHELINE) uint32_t ack;
	alignas(CACHELINE) uint32_t removed; /* the watch has seen the withdrawal too */
};

struct pub_state {
	struct pub_shared *sh;
	struct abd_registry *reg;
	struct abd_record *rec;
	struct abd_watch *watch;
	uint32_t seq;
};

static int pub_prepare(void *shm, void *arg)
{
	(void)arg;
	struct pub_shared *sh = shm;
	return bench_tmpdir(sh->dir, sizeof(sh->dir));
}

static void pub_cleanup(void *shm, void *arg)
{
	(void)arg;
	bench_rmdir(((struct pub_shared *)shm)->dir);
}

static int pub_init(enum bench_role role, void *shm, void *arg, void **state)
{
	(void)arg;
	struct pub_state *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->sh = shm;
	*state = s;
	char why[256];
	int r = abd_registry_open(s->sh->dir, 0, &s->reg, why, sizeof(why));
	if (r < 0)
		return bench_fail("registry %s: %s", s->sh->dir, why);
	if (role == BENCH_B)
		return abd_watch_new(s->reg, 0, &s->watch);
	if ((r = abd_record_new("bench.discovery", &s->rec)) < 0)
		return r;
	abd_record_add_fd(s->rec, "ring", 3, ABD_FD_MEMFD);
	abd_record_add_fd(s->rec, "wake", 4, ABD_FD_EVENTFD);
	abd_record_add_meta(s->rec, "owner", "abd-perf");
	return 0;
}

static void pub_fini(enum bench_role role, void *state)
{
	(void)role;
	struct pub_state *s = state;
	abd_watch_free(s->watch);
	abd_record_free(s->rec);
	abd_registry_free(s->reg);
	free(s);
}

/* One sample: a publication (abd_publish, all of it timed; or staged: abd_publish_prepare
 * untimed, then the clock, then abd_publish_commit, the same start as bare-inotify-linkat's,
 * whose record is written before its clock starts and whose clock covers the linkat on) until
 * the watcher's added event, then an untimed withdrawal. */
static int pub_sample(struct pub_state *s, uint64_t *ns, bool staged)
{
	uint32_t v = ++s->seq;
	struct abd_publication *pub;
	uint64_t t = bench_now_ns();
	int r = staged ? abd_publish_prepare(s->reg, s->rec, &pub) : abd_publish(s->reg, s->rec, &pub);
	if (r < 0)
		return r;
	if (staged) {
		t = bench_now_ns();
		if ((r = abd_publish_commit(pub)) < 0) {
			abd_withdraw(pub);
			return r;
		}
	}
	r = bench_until(&s->sh->ack, v);
	uint64_t w = __atomic_load_n(&s->sh->t_added, __ATOMIC_ACQUIRE);
	*ns = w > t ? w - t : 1;
	abd_withdraw(pub);
	/* Untimed: let the watch report the withdrawal before the next sample, so that each
	 * sample is one publication meeting an idle watcher, as the bare row's is (its watcher
	 * does not even watch unlinks). */
	if (r == 0)
		r = bench_until(&s->sh->removed, v);
	return r;
}

static int pub_ping(void *state, uint64_t *ns)
{
	return pub_sample(state, ns, false);
}

static int pub_ping_staged(void *state, uint64_t *ns)
{
	return pub_sample(state, ns, true);
}

static int pub_pong(void *state)
{
	struct pub_state *s = state;
	uint64_t t;
	int r = wait_for(s->watch, ABD_EVENT_ADDED, &t);
	if (r < 0)
		return r;
	__atomic_store_n(&s->sh->t_added, t, __ATOMIC_RELEASE);
	bench_post(&s->sh->ack, ++s->seq);
	if ((r = wait_for(s->watch, ABD_EVENT_REMOVED, &t)) < 0)
		return r;
	bench_post(&s->sh->removed, s->seq);
	return 0;
}

static void run_publish(void)
{
	uint64_t n = bench_iters(10000, 1000); /* as many as the bare row: each sample is two wake-ups now */
	for (int m = 0; m < 2; m++) {
		struct bench_pair p = {.shm_size = sizeof(struct pub_shared), .prepare = pub_prepare,
		                       .cleanup = pub_cleanup, .init = pub_init, .fini = pub_fini,
		                       .ping = pub_ping, .pong = pub_pong};
		bench_pingpong(&p, (struct bench_row){.subject = "abd-discovery",
		                                      .case_name = "publish-to-added",
		                                      .cpus = modes[m],
		                                      .baseline = "bare-inotify-linkat",
		                                      .baseline_case = "linkat-to-wake"}, n);
		/* The same measurement against the like-for-like floor (docs/perf.md), in rounds
		 * of its own. */
		bench_pingpong(&p, (struct bench_row){.subject = "abd-discovery",
		                                      .case_name = "publish-to-added-vs-bare-publish",
		                                      .cpus = modes[m],
		                                      .baseline = "bare-inotify-publish",
		                                      .baseline_case = "tmpfile-to-read"}, n);
	}
	for (int m = 0; m < 2; m++) {
		struct bench_pair p = {.shm_size = sizeof(struct pub_shared), .prepare = pub_prepare,
		                       .cleanup = pub_cleanup, .init = pub_init, .fini = pub_fini,
		                       .ping = pub_ping_staged, .pong = pub_pong};
		bench_pingpong(&p, (struct bench_row){.subject = "abd-discovery",
		                                      .case_name = "publish-staged-to-added",
		                                      .cpus = modes[m],
		                                      .baseline = "bare-inotify-linkat",
		                                      .baseline_case = "linkat-to-wake"}, n);
	}
}

/* ---- exit -> died ---- */

struct exit_shared {
	char dir[96];
	uint64_t t_exit;
	alignas(CACHELINE) uint32_t go;
	alignas(CACHELINE) uint32_t published;
};

static int exit_init(enum bench_role role, void *shm, void *arg, void **state)
{
	(void)arg;
	struct pub_state *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->sh = shm;
	*state = s;
	if (role == BENCH_B)
		return 0;
	char why[256];
	int r = abd_registry_open(s->sh->dir, 0, &s->reg, why, sizeof(why));
	if (r < 0)
		return bench_fail("registry %s: %s", s->sh->dir, why);
	if ((r = abd_record_new("bench.victim", &s->rec)) < 0)
		return r;
	return abd_watch_new(s->reg, 0, &s->watch);
}

static int exit_ping(void *state, uint64_t *ns)
{
	struct pub_state *s = state;
	struct exit_shared *e = (struct exit_shared *)s->sh;
	uint32_t v = ++s->seq;
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		bench_pin(bench_cpu_other);
		struct abd_publication *pub;
		if (abd_publish(s->reg, s->rec, &pub) < 0)
			_exit(1);
		bench_post(&e->published, v);
		bench_until(&e->go, v);
		__atomic_store_n(&e->t_exit, bench_now_ns(), __ATOMIC_RELEASE);
		_exit(0);
	}
	uint64_t t = 0;
	int r = bench_until(&e->published, v);
	if (r == 0)
		r = wait_for(s->watch, ABD_EVENT_ADDED, &t);
	if (r == 0) {
		bench_post(&e->go, v);
		r = wait_for(s->watch, ABD_EVENT_DIED, &t);
	}
	if (r < 0)
		kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	abd_registry_gc(s->reg, NULL);
	uint64_t x = __atomic_load_n(&e->t_exit, __ATOMIC_ACQUIRE);
	*ns = t > x ? t - x : 1;
	return r;
}

static int idle_pong(void *state)
{
	(void)state;
	return 0;
}

static void run_exit(void)
{
	/* Each sample forks a publisher: fewer than the bare row's 1000, so that a loaded machine
	 * still finishes inside the runner's deadline; 30 under --quick (the CI smoke runs every
	 * round of it). */
	uint64_t n = bench_iters(500, 30);
	for (int m = 0; m < 2; m++) {
		struct bench_pair p = {.shm_size = sizeof(struct exit_shared),
		                       .prepare = pub_prepare, .cleanup = pub_cleanup,
		                       .init = exit_init, .fini = pub_fini,
		                       .ping = exit_ping, .pong = idle_pong};
		bench_pingpong(&p, (struct bench_row){.subject = "abd-discovery",
		                                      .case_name = "exit-to-died", .cpus = modes[m],
		                                      .baseline = "bare-pidfd-exit",
		                                      .baseline_case = "exit-to-poll"}, n);
	}
}

/* ---- enumerate N ---- */

/* bare-readdir-open-read: readdir, then open, read and close each record. Leaves out: the
 * lock check, fstat, decoding and validation of each record. */
static int bare_enumerate(const char *dir, size_t *count)
{
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	int dfd = dirfd(d);
	char buf[4096];
	struct dirent *e;
	size_t n = 0;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		int fd = openat(dfd, e->d_name, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (read(fd, buf, sizeof(buf)) > 0)
			n++;
		close(fd);
	}
	closedir(d);
	*count = n;
	return 0;
}

/* One sample of an enumeration row: two untimed passes, then `reps` timed ones; p50 etc.
 * per pass, and records per second at the median. */
struct enumeration {
	const char *dir;
	struct abd_registry *reg;
	size_t n;
	uint64_t reps, *samples;
	bool abd;
};

static int enum_sample(void *ctx, struct bench_row *row)
{
	struct enumeration *e = ctx;
	for (uint64_t i = 0; i < e->reps + 2; i++) {
		size_t count = 0;
		int err;
		uint64_t t = bench_now_ns();
		if (e->abd) {
			struct abd_snapshot *snap;
			err = abd_registry_snapshot(e->reg, &snap);
			count = err == 0 ? abd_snapshot_count(snap) : 0;
			abd_snapshot_free(snap);
		} else {
			err = bare_enumerate(e->dir, &count);
		}
		uint64_t d = bench_now_ns() - t;
		if (err < 0 || count != e->n) {
			row->skipped = bench_reason("saw %zu of %zu records (%s)", count, e->n,
			                            strerror(err < 0 ? -err : 0));
			return 0;
		}
		if (i >= 2)
			e->samples[i - 2] = d;
	}
	struct bench_stats st;
	bench_stats(e->samples, e->reps, &st);
	bench_row_latency(row, &st);
	row->ops_per_s = (double)e->n * 1e9 / st.p50; /* records per second at the median */
	return 0;
}

static void run_enumerate_n(size_t n, uint64_t reps)
{
	char dir[96], case_name[32];
	snprintf(case_name, sizeof(case_name), "enumerate-%zu", n);
	struct bench_row bare = {.subject = "bare-readdir-open-read", .case_name = case_name};
	struct bench_row mine = {.subject = "abd-discovery", .case_name = case_name,
	                         .baseline = "bare-readdir-open-read"};
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < n + 64) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < n + 64) {
		bench_skip(&bare, "RLIMIT_NOFILE %llu < %zu records", (unsigned long long)rl.rlim_cur, n);
		bench_skip(&mine, "RLIMIT_NOFILE %llu < %zu records", (unsigned long long)rl.rlim_cur, n);
		return;
	}
	int r = bench_tmpdir(dir, sizeof(dir));
	struct abd_registry *reg = NULL;
	struct abd_publication **pubs = calloc(n, sizeof(*pubs));
	struct abd_record *rec = NULL;
	uint64_t *samples = calloc(reps, sizeof(*samples));
	struct bench_versus *v = calloc(1, sizeof(*v));
	if (r == 0)
		r = abd_registry_open(dir, 0, &reg, NULL, 0);
	if (r == 0)
		r = abd_record_new("bench.enumerate", &rec);
	if (r == 0) {
		abd_record_add_fd(rec, "ring", 3, ABD_FD_MEMFD);
		abd_record_add_meta(rec, "owner", "abd-perf");
	}
	size_t published = 0;
	for (; r == 0 && pubs && published < n; published++)
		r = abd_publish(reg, rec, &pubs[published]);
	if (r < 0 || !pubs || !samples || !v) {
		bench_skip(&bare, "setup: %s", strerror(r < 0 ? -r : ENOMEM));
		bench_skip(&mine, "setup: %s", strerror(r < 0 ? -r : ENOMEM));
		goto out;
	}
	/* Interleaved rounds: on a shared machine the load drifts, and both subjects should see
	 * the same drift. */
	struct enumeration e_abd = {dir, reg, n, reps, samples, true};
	struct enumeration e_bare = {dir, reg, n, reps, samples, false};
	mine.iters = reps;
	v->fn = enum_sample;
	v->ctx = &e_abd;
	v->base_fn = enum_sample;
	v->base_ctx = &e_bare;
	bench_versus(v, mine);
out:
	for (size_t i = 0; i < published; i++)
		abd_withdraw(pubs[i]);
	free(pubs);
	free(samples);
	free(v);
	abd_record_free(rec);
	abd_registry_free(reg);
	bench_rmdir(dir);
}

static void run_enumerate(void)
{
	run_enumerate_n(1000, bench_iters(200, 20));
	run_enumerate_n(10000, bench_iters(30, 5));
}

void bench_discovery(void)
{
	run_publish();
	run_enumerate();
	run_exit();
}
