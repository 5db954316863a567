/* SPDX-License-Identifier: MIT */
/* `abd-perf recover`: how long a SIGKILL can wedge a ring (docs/ring.md §6, issue: "the ring
 * never stays wedged longer than 1 ms after a death").
 *   abd-ring       kill-to-recovered  a producer dies holding a reserved slot while a
 *                                     consumer sleeps in abd_ring_pop behind it and another
 *                                     producer's message waits after it: kill() -> that pop
 *                                     returns the message
 *                                     vs bare-ofd-exit (kill() -> a waiter blocked in
 *                                     F_OFD_SETLKW on a byte the victim held gets it): the
 *                                     kernel's own notice of the death through the lock that
 *                                     abd's lease rests on.
 * Three processes per sample (victim, consumer, the parent as the second producer), no
 * pinning: the consumer sleeps, so placement matters little next to the 1 ms poll. */
#include <abd/abd.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "perf/bench.h"

#define CACHELINE 64
#define SEC 1000000000ll

struct rshared {
	alignas(CACHELINE) uint32_t ready;  /* victim: holds its claim (or lock), sample number */
	alignas(CACHELINE) uint32_t asleep; /* waiter: about to block, sample number */
	alignas(CACHELINE) uint32_t done;   /* waiter: got it, sample number */
	uint64_t t_done;
	int err;
};

static void settle(long us)
{
	struct timespec ts = { 0, us * 1000 };
	nanosleep(&ts, NULL);
}

/* ---- bare: kill -> F_OFD_SETLKW returns ---- */

static int lock_byte(int fd, bool wait)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };
	return fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

static void unlock_byte(int fd)
{
	struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };
	fcntl(fd, F_OFD_SETLK, &fl);
}

static int private_fd(int fd)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return open(path, O_RDWR | O_CLOEXEC);
}

struct counts {
	uint64_t n, warm;
};

/* One sample of bare-ofd-exit kill-to-lock: n kills (after warm untimed ones). Each: a victim
 * holds an OFD lock on a byte, a waiter blocks in F_OFD_SETLKW on it, SIGKILL -> the waiter
 * has the lock. Leaves out: any ring, claim, lease or message: the kernel's own notice of the
 * death through the lock abd's leases rest on. */
static int bare_sample(void *ctx, struct bench_row *row)
{
	uint64_t n = ((const struct counts *)ctx)->n, warm = ((const struct counts *)ctx)->warm;
	struct rshared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
	                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint64_t *samples = calloc(n + warm, sizeof(*samples));
	int mfd = memfd_create("abd-perf-lock", MFD_CLOEXEC);
	if (sh == MAP_FAILED || !samples || mfd < 0) {
		row->skipped = bench_reason("setup: %s", strerror(errno));
		goto out;
	}
	memset(sh, 0, sizeof(*sh));
	fflush(NULL);
	pid_t waiter = fork();
	if (waiter == 0) {
		int fd = private_fd(mfd);
		for (uint32_t i = 1; i <= n + warm; i++) {
			bench_until(&sh->ready, i);
			bench_post(&sh->asleep, i);
			int r = lock_byte(fd, true); /* blocks until the victim dies */
			sh->t_done = bench_now_ns();
			unlock_byte(fd);
			if (r < 0)
				sh->err = r;
			bench_post(&sh->done, i);
		}
		_exit(0);
	}
	uint64_t got = 0;
	for (uint32_t i = 1; i <= n + warm && waiter > 0; i++) {
		pid_t victim = fork();
		if (victim == 0) {
			int fd = private_fd(mfd);
			if (fd < 0 || lock_byte(fd, false) < 0)
				_exit(1);
			bench_post(&sh->ready, i);
			for (;;)
				pause();
		}
		if (victim < 0)
			break;
		bench_until(&sh->asleep, i);
		settle(2000); /* the waiter is asleep in F_OFD_SETLKW by now */
		uint64_t t0 = bench_now_ns();
		kill(victim, SIGKILL);
		bench_until(&sh->done, i);
		waitpid(victim, NULL, 0);
		if (sh->err)
			break;
		if (i > warm)
			samples[got++] = sh->t_done > t0 ? sh->t_done - t0 : 1;
	}
	if (waiter > 0) {
		kill(waiter, SIGKILL);
		waitpid(waiter, NULL, 0);
	}
	if (got < n || sh->err) {
		row->skipped = bench_reason("the lock waiter failed: %s", strerror(-sh->err));
		goto out;
	}
	struct bench_stats st;
	bench_stats(samples, got, &st);
	bench_row_latency(row, &st);
out:
	if (mfd >= 0)
		close(mfd);
	free(samples);
	if (sh != MAP_FAILED)
		munmap(sh, sizeof(*sh));
	return 0;
}

/* ---- abd: kill -> the consumer's pop returns what waited behind the dead claim ---- */

static int consumer_main(struct abd_ring *parent, struct rshared *sh, uint64_t total)
{
	uint8_t nonce[ABD_RING_NONCE_SIZE];
	struct abd_ring *r;
	if (abd_ring_nonce(parent, nonce) < 0 ||
	    abd_ring_attach(abd_ring_fd(parent), abd_ring_wait_fd(parent), nonce,
	                    ABD_RING_CONSUMER, &r) < 0)
		return 1;
	for (uint32_t i = 1; i <= total; i++) {
		bench_until(&sh->ready, i);
		bench_post(&sh->asleep, i);
		uint32_t v = 0;
		int k = abd_ring_pop(r, &v, sizeof(v), 5 * SEC);
		sh->t_done = bench_now_ns();
		if (k != (int)sizeof(v) || v != i)
			sh->err = k < 0 ? k : -EBADMSG;
		bench_post(&sh->done, i);
		if (sh->err)
			break;
	}
	abd_ring_free(r);
	return 0;
}

/* One sample of abd-ring kill-to-recovered: n kills (after warm untimed ones). */
static int abd_sample(void *ctx, struct bench_row *row)
{
	uint64_t n = ((const struct counts *)ctx)->n, warm = ((const struct counts *)ctx)->warm;
	struct rshared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
	                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint64_t *samples = calloc(n + warm, sizeof(*samples));
	struct abd_ring *ring = NULL;
	int r = sh == MAP_FAILED || !samples ? -ENOMEM
	        : abd_ring_new(64, 64, ABD_RING_PRODUCER, NULL, &ring);
	if (r < 0) {
		row->skipped = bench_reason("setup: %s", strerror(-r));
		goto out;
	}
	memset(sh, 0, sizeof(*sh));
	fflush(NULL);
	pid_t consumer = fork();
	if (consumer == 0)
		_exit(consumer_main(ring, sh, n + warm));
	uint64_t got = 0;
	uint8_t nonce[ABD_RING_NONCE_SIZE];
	(void)abd_ring_nonce(ring, nonce);
	for (uint32_t i = 1; i <= n + warm && consumer > 0; i++) {
		pid_t victim = fork();
		if (victim == 0) {
			struct abd_ring *v;
			void *slot;
			if (abd_ring_attach(abd_ring_fd(ring), abd_ring_wait_fd(ring), nonce,
			                    ABD_RING_PRODUCER, &v) < 0 || abd_ring_try_reserve(v, &slot) < 0)
				_exit(1);
			bench_post(&sh->ready, i); /* the consumer goes to pop now: the head is our claim */
			for (;;)
				pause();
		}
		if (victim < 0)
			break;
		bench_until(&sh->asleep, i);
		r = abd_ring_push(ring, &i, sizeof(i), 5 * SEC);
		settle(2000); /* it sleeps behind the live claim, looking every millisecond */
		uint64_t t0 = bench_now_ns();
		kill(victim, SIGKILL);
		bench_until(&sh->done, i);
		waitpid(victim, NULL, 0);
		if (r < 0 || sh->err) {
			if (!sh->err)
				sh->err = r;
			break;
		}
		if (i > warm)
			samples[got++] = sh->t_done > t0 ? sh->t_done - t0 : 1;
	}
	if (consumer > 0) {
		kill(consumer, SIGKILL);
		waitpid(consumer, NULL, 0);
	}
	if (got < n) {
		row->skipped = bench_reason("the consumer did not get the message behind the dead claim: %s",
		                            strerror(sh->err ? -sh->err : EIO));
		bench_failures++;
		goto out;
	}
	struct bench_stats st;
	bench_stats(samples, got, &st);
	bench_row_latency(row, &st);
out:
	abd_ring_free(ring);
	free(samples);
	if (sh != MAP_FAILED)
		munmap(sh, sizeof(*sh));
	return 0;
}

void bench_recover(void)
{
	uint64_t n = bench_iters(300, 30);
	struct counts c = {n, n / 10 ? n / 10 : 1};
	struct bench_row row = { .subject = "abd-ring", .case_name = "kill-to-recovered",
		                     .msg_bytes = 4, .baseline = "bare-ofd-exit",
		                     .baseline_case = "kill-to-lock" };
	struct bench_versus *v = calloc(1, sizeof(*v));
	if (!v) {
		bench_skip(&row, "out of memory");
		return;
	}
	v->fn = abd_sample;
	v->ctx = &c;
	v->base_fn = bare_sample;
	v->base_ctx = &c;
	bench_versus(v, row);
	free(v);
}
