/* SPDX-License-Identifier: MIT */
/* `abd-perf herd`: several consumers blocked on one work-queue ring, one producer. How many
 * consumers does one message wake?
 *
 * One producer process and C consumer processes (C = 4, and 1 for the baseline), 64-byte
 * messages, a ring of 64 slots that every consumer pops from (a work queue: each message goes
 * to one of them):
 *   abd-ring    through abd_ring_push / abd_ring_pop with no timeout (a ring the main process
 *               made: ABD_RING_SINGLE_PRODUCER, many consumers; the children attach to it)
 *   abd-service through abd_service_push / abd_service_pop with no timeout (the producer
 *               publishes the service, the consumers open it; default reactor backend: run
 *               under `abdctl emulate no-io_uring` for epoll)
 * Cases:
 *   herd-4c-paced  the producer pushes one message, waits until a consumer has taken it and
 *                  every consumer sleeps again (state S in /proc/PID/stat), then pushes the
 *                  next: every message meets C sleeping consumers. Figure: wakeups_per_msg,
 *                  the voluntary context switches of all the consumers' threads over the
 *                  timed messages, per message (a consumer that wakes and sleeps again counts
 *                  1, whether it got the message or not). No herd: 1.
 *   herd-4c        the producer pushes as fast as the ring takes them; figure ops_per_s (from
 *                  the first timed push to the moment the consumers have taken the last),
 *                  with wakeups_per_msg beside it.
 * Each against the same with one consumer (herd-1c-paced, herd-1c), measured in the same
 * rounds: those rows pay, per message, whatever a single sleeper pays that is not a herd (a
 * sleep cut into slices by a timer, a message caught while still trying before sleeping),
 * so the ratio is what the three other sleepers add; the absolute figure (target <= 1 per
 * message) is on the row itself. A theoretical 1.0 would count those costs as herd.
 *
 * cpus: split = the producer on one vCPU, the consumers all on another; shared = all on one.
 * The producer is a child too; the main process only waits, with a deadline. */
#include <abd/abd.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "perf/bench.h"

#define NAME "perf.herd"
#define BYTES 64
#define CAP 64
#define CONSUMERS_MAX 4
#define STOP UINT64_MAX /* the value of the messages that end the consumers */

struct herd_shm {
	char dir[128];
	int memfd, evfd;             /* abd-ring: the ring, inherited */
	_Atomic uint32_t published;  /* abd-service: the producer published */
	_Atomic uint32_t ready;      /* consumers attached or opened */
	_Atomic uint64_t consumed;   /* messages taken (stops left out) */
	_Atomic uint32_t failed;
	pid_t consumer[CONSUMERS_MAX];
	uint64_t wakeups, msgs, ns;  /* the producer's result */
	char reason[200];
};

struct herd_cfg {
	bool service;
	bool paced;
	unsigned consumers;
};

static struct herd_shm *g_shm; /* in a child */

__attribute__((format(printf, 1, 2))) static int fail(const char *fmt, ...)
{
	if (!atomic_exchange(&g_shm->failed, 1)) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(g_shm->reason, sizeof(g_shm->reason), fmt, ap);
		va_end(ap);
	}
	return 1;
}

static struct abd_service_config svc_config(const struct herd_shm *s)
{
	struct abd_service_config cfg = { 0 };
	cfg.dir = s->dir;
	cfg.capacity = CAP;
	cfg.slot_size = BYTES;
	return cfg;
}

/* ---- consumers ---- */

static int consumer_main(const struct herd_cfg *c, int idx, int cpu)
{
	struct herd_shm *s = g_shm;
	if (bench_pin(cpu) < 0)
		return fail("consumer %d: sched_setaffinity", idx);
	struct abd_ring *ring = NULL;
	struct abd_service *svc = NULL;
	int r;
	if (c->service) {
		while (!atomic_load(&s->published) && !atomic_load(&s->failed))
			usleep(100);
		struct abd_service_config cfg = svc_config(s);
		r = abd_service_open(NAME, &cfg, ABD_SERVICE_CONSUMER, 10ll * 1000 * 1000 * 1000, &svc);
	} else {
		r = abd_ring_attach(s->memfd, s->evfd, NULL, ABD_RING_CONSUMER, &ring);
	}
	if (r < 0)
		return fail("consumer %d: %s: %s", idx, c->service ? "open" : "attach", strerror(-r));
	atomic_fetch_add(&s->ready, 1);
	unsigned char msg[BYTES];
	for (;;) {
		r = c->service ? abd_service_pop(svc, msg, sizeof(msg), -1)
		               : abd_ring_pop(ring, msg, sizeof(msg), -1);
		if (r == -EINTR)
			continue;
		if (r != BYTES) {
			fail("consumer %d: pop: %s", idx, r < 0 ? strerror(-r) : "short message");
			break;
		}
		uint64_t v;
		memcpy(&v, msg, sizeof(v));
		if (v == STOP)
			break;
		atomic_fetch_add_explicit(&s->consumed, 1, memory_order_release);
	}
	abd_service_close(svc);
	abd_ring_free(ring);
	return atomic_load(&s->failed) ? 1 : 0;
}

/* ---- the producer ---- */

/* Is every consumer asleep (state S or D)? */
static bool all_asleep(const int *statfd, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		char buf[512];
		ssize_t k = pread(statfd[i], buf, sizeof(buf) - 1, 0);
		if (k <= 0)
			return true; /* gone: failed, noticed elsewhere */
		buf[k] = 0;
		const char *p = strrchr(buf, ')');
		if (p && p[1] && p[2] != 'S' && p[2] != 'D')
			return false;
	}
	return true;
}

static int64_t wakeups(const struct herd_shm *s, unsigned n)
{
	int64_t sum = 0;
	for (unsigned i = 0; i < n; i++) {
		int64_t v = bench_vcsw(s->consumer[i]);
		if (v < 0)
			return -1;
		sum += v;
	}
	return sum;
}

struct producer {
	const struct herd_cfg *c;
	struct abd_ring *ring;
	struct abd_service *svc;
	struct abd_reactor *reactor;
	int statfd[CONSUMERS_MAX];
	uint64_t sent;
};

/* Until every consumer sleeps (paced: after each message) and has taken `want`. */
static int settle(struct producer *p, uint64_t want)
{
	uint64_t deadline = bench_now_ns() + 5000000000ull;
	while (atomic_load_explicit(&g_shm->consumed, memory_order_acquire) < want ||
	       !all_asleep(p->statfd, p->c->consumers)) {
		if (atomic_load(&g_shm->failed))
			return -ECANCELED;
		if (bench_now_ns() > deadline)
			return fail("producer: the consumers did not take message %llu and sleep within 5 s",
			            (unsigned long long)want), -ETIMEDOUT;
		bench_relax();
	}
	return 0;
}

static int push_one(struct producer *p, uint64_t v)
{
	unsigned char msg[BYTES] = { 0 };
	memcpy(msg, &v, sizeof(v));
	int r = p->c->service ? abd_service_push(p->svc, msg, sizeof(msg), -1)
	                      : abd_ring_push(p->ring, msg, sizeof(msg), -1);
	return r < 0 ? (fail("producer: push: %s", strerror(-r)), r) : 0;
}

/* n messages, paced or not; the count consumed is checked against sent. */
static int send_batch(struct producer *p, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		int r = push_one(p, p->sent);
		if (r < 0)
			return r;
		p->sent++;
		if (p->c->paced && (r = settle(p, p->sent)) < 0)
			return r;
	}
	return 0;
}

static int producer_main(const struct herd_cfg *c, int cpu, uint64_t warm, uint64_t iters)
{
	struct herd_shm *s = g_shm;
	struct producer p = { .c = c };
	for (unsigned i = 0; i < CONSUMERS_MAX; i++)
		p.statfd[i] = -1;
	if (bench_pin(cpu) < 0)
		return fail("producer: sched_setaffinity");
	int r;
	if (c->service) {
		struct abd_service_config cfg = svc_config(s);
		if ((r = abd_service_publish(NAME, &cfg, ABD_SERVICE_PRODUCER | ABD_SERVICE_SINGLE_PRODUCER,
		                             &p.svc)) < 0)
			return fail("producer: publish: %s", strerror(-r));
		p.reactor = abd_service_reactor(p.svc);
		atomic_store(&s->published, 1);
	} else if ((r = abd_ring_attach(s->memfd, s->evfd, NULL, ABD_RING_PRODUCER, &p.ring)) < 0) {
		return fail("producer: attach: %s", strerror(-r));
	}
	/* the consumers attach or open (the service answers their handshakes from its reactor) */
	uint64_t deadline = bench_now_ns() + 20000000000ull;
	while (atomic_load(&s->ready) < c->consumers) {
		if (atomic_load(&s->failed))
			goto out;
		if (bench_now_ns() > deadline) {
			fail("producer: the consumers did not start within 20 s");
			goto out;
		}
		if (p.reactor)
			(void)abd_reactor_run_once(p.reactor, 1000000);
		else
			usleep(200);
	}
	for (unsigned i = 0; i < c->consumers; i++) {
		char path[40];
		snprintf(path, sizeof(path), "/proc/%d/stat", (int)s->consumer[i]);
		if ((p.statfd[i] = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
			fail("producer: %s: %s", path, strerror(errno));
			goto out;
		}
	}
	/* warm-up, untimed; then the window opens with every consumer asleep */
	if (send_batch(&p, warm) < 0 || settle(&p, p.sent) < 0)
		goto out;
	int64_t w0 = wakeups(s, c->consumers);
	uint64_t t0 = bench_now_ns(), t1 = 0;
	if (send_batch(&p, iters) < 0)
		goto out;
	while (atomic_load_explicit(&s->consumed, memory_order_acquire) < p.sent) {
		if (atomic_load(&s->failed))
			goto out;
		bench_relax();
	}
	t1 = bench_now_ns();
	if (settle(&p, p.sent) < 0)
		goto out;
	int64_t w1 = wakeups(s, c->consumers);
	if (w0 < 0 || w1 < 0) {
		fail("producer: /proc/PID/task/*/status of the consumers unreadable");
		goto out;
	}
	s->wakeups = (uint64_t)(w1 - w0);
	s->msgs = iters;
	s->ns = t1 - t0;
	/* one stop message per consumer */
	for (unsigned i = 0; i < c->consumers; i++)
		if (push_one(&p, STOP) < 0)
			break;
out:
	for (unsigned i = 0; i < CONSUMERS_MAX; i++)
		if (p.statfd[i] >= 0)
			close(p.statfd[i]);
	/* stay until the consumers are gone: a closing publisher would close the service */
	deadline = bench_now_ns() + 10000000000ull;
	while (!atomic_load(&s->failed) && bench_now_ns() < deadline) {
		bool alive = false;
		for (unsigned i = 0; i < c->consumers; i++)
			alive |= kill(s->consumer[i], 0) == 0; /* the main process reaps them */
		if (!alive)
			break;
		if (p.reactor)
			(void)abd_reactor_run_once(p.reactor, 1000000);
		else
			usleep(200);
	}
	abd_service_close(p.svc);
	abd_ring_free(p.ring);
	return atomic_load(&s->failed) ? 1 : 0;
}

/* ---- one sample ---- */

struct herd_sample {
	struct herd_cfg c;
	uint64_t iters;
};

static int herd_measure(void *ctx, struct bench_row *row)
{
	const struct herd_sample *hs = ctx;
	const struct herd_cfg *c = &hs->c;
	int cpu[2];
	const char *why = NULL;
	int r = bench_cpus(row->cpus, &cpu[0], &cpu[1], &why);
	if (r < 0) {
		row->skipped = bench_reason("%s", why ? why : strerror(-r));
		return 0;
	}
	struct herd_shm *s = mmap(NULL, sizeof(*s), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	                          -1, 0);
	if (s == MAP_FAILED) {
		row->skipped = "mmap failed";
		bench_failures++;
		return -ENOMEM;
	}
	s->memfd = s->evfd = -1;
	if ((r = bench_tmpdir(s->dir, sizeof(s->dir))) < 0) {
		row->skipped = bench_reason("tmpdir: %s", strerror(-r));
		munmap(s, sizeof(*s));
		return 0;
	}
	if (!c->service) {
		struct abd_ring *ring;
		if ((r = abd_ring_new(CAP, BYTES, ABD_RING_SINGLE_PRODUCER, NULL, &ring)) < 0) {
			row->skipped = bench_reason("abd_ring_new: %s", strerror(-r));
			goto done;
		}
		s->memfd = dup(abd_ring_fd(ring));
		s->evfd = abd_ring_wait_fd(ring) >= 0 ? dup(abd_ring_wait_fd(ring)) : -1;
		abd_ring_free(ring);
	}
	g_shm = s;
	fflush(NULL);
	pid_t pids[CONSUMERS_MAX + 1];
	unsigned n = 0;
	for (unsigned i = 0; i < c->consumers; i++) {
		pid_t pid = fork();
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			bench_spin_yields = !strcmp(row->cpus, BENCH_SHARED);
			_exit(consumer_main(c, (int)i, cpu[1]));
		}
		if (pid < 0)
			break;
		s->consumer[i] = pids[n++] = pid;
	}
	if (n == c->consumers) {
		pid_t pid = fork();
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			bench_spin_yields = !strcmp(row->cpus, BENCH_SHARED);
			_exit(producer_main(c, cpu[0], bench_warmup(hs->iters), hs->iters));
		}
		if (pid > 0)
			pids[n++] = pid;
	}
	if (n < c->consumers + 1)
		atomic_store(&s->failed, 1);
	/* wait for all, with a deadline; a failure gives the others 2 s */
	uint64_t deadline = bench_now_ns() + (bench_opt.quick ? 30 : 120) * 1000000000ull;
	bool signalled = false, timeout = false;
	unsigned left = n;
	bool done[CONSUMERS_MAX + 1] = { false };
	while (left) {
		uint64_t now = bench_now_ns();
		if (atomic_load(&s->failed) && deadline > now + 2000000000ull)
			deadline = now + 2000000000ull;
		if (now > deadline) {
			timeout = true;
			break;
		}
		for (unsigned i = 0; i < n; i++) {
			int st;
			if (done[i] || waitpid(pids[i], &st, WNOHANG) != pids[i])
				continue;
			done[i] = true;
			left--;
			if (WIFSIGNALED(st))
				signalled = true;
			else if (WEXITSTATUS(st) != 0)
				atomic_store(&s->failed, 1);
		}
		if (left)
			usleep(1000);
	}
	for (unsigned i = 0; i < n; i++)
		if (!done[i]) {
			kill(pids[i], SIGKILL);
			waitpid(pids[i], NULL, 0);
		}
	if (signalled) {
		row->skipped = "a process of the row died of a signal";
		bench_failures++;
		r = -ECHILD;
	} else if (timeout) {
		row->skipped = bench_reason("timeout (%s)", s->reason[0] ? s->reason : "no progress");
		r = -ETIMEDOUT;
	} else if (atomic_load(&s->failed) || !s->msgs) {
		row->skipped = bench_reason("%s", s->reason[0] ? s->reason : "failed");
		r = -ECANCELED;
	} else {
		row->iters = s->msgs;
		row->msg_bytes = BYTES;
		row->wakeups_per_msg = (double)s->wakeups / (double)s->msgs;
		row->wakeups_per_msg_measured = true;
		if (!c->paced)
			row->ops_per_s = (double)s->msgs * 1e9 / (double)(s->ns ? s->ns : 1);
		r = 0;
	}
done:
	if (s->memfd >= 0)
		close(s->memfd);
	if (s->evfd >= 0)
		close(s->evfd);
	bench_rmdir(s->dir);
	munmap(s, sizeof(*s));
	return r;
}

static void herd_row(const char *subject, bool service, bool paced, const char *cpus)
{
	uint64_t iters = paced ? bench_iters(300, 30) : bench_iters(50000, 3000);
	struct herd_sample mine = { { service, paced, 4 }, iters },
	                   theirs = { { service, paced, 1 }, iters };
	struct bench_row row = { .subject = subject, .case_name = paced ? "herd-4c-paced" : "herd-4c",
	                         .cpus = cpus, .msg_bytes = BYTES, .baseline = subject,
	                         .baseline_case = paced ? "herd-1c-paced" : "herd-1c" };
	struct bench_versus *v = calloc(1, sizeof(*v));
	if (!v) {
		bench_skip(&row, "out of memory");
		bench_failures++;
		return;
	}
	v->fn = herd_measure;
	v->ctx = &mine;
	v->base_fn = herd_measure;
	v->base_ctx = &theirs;
	bench_versus(v, row);
	free(v);
}

void bench_herd(void)
{
	static const char *const modes[] = { BENCH_SPLIT, BENCH_SHARED };
	for (int m = 0; m < 2; m++)
		for (int svc = 0; svc < 2; svc++) {
			const char *subject = svc ? "abd-service" : "abd-ring";
			herd_row(subject, svc, true, modes[m]);
			herd_row(subject, svc, false, modes[m]);
		}
}
