/* SPDX-License-Identifier: MIT */
/* A futex wait served by a thread (compat/futex-thread.h). One thread per futex source:
 * FUTEX_WAIT sleeps on exactly one word, so a shared pool would need futex_waitv (5.16+) to
 * serve several words per thread and a protocol to move words between threads; a reactor has
 * a handful of futex sources (a service: at most three), so a thread each is the simple and
 * sufficient answer.
 *
 * The reactor and the thread talk through atomics and one private futex word, ctl: the
 * reactor stores the expected value, bumps ctl and wakes it; the thread waits on the word and
 * rings the eventfd once. Between waits the thread sleeps on ctl; nothing runs periodically.
 * To stop, the reactor sets stop, bumps ctl and wakes the thread wherever it sleeps: on ctl,
 * or on the word (futex_waitv watches the word and ctl at once; without futex_waitv a
 * FUTEX_WAKE on the word itself, repeated until the thread has left, because a wake can slip
 * in between the thread's look at ctl and its FUTEX_WAIT). */
#include "compat/futex-thread.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "runtime/internal.h"

/* Its frames are a few syscalls deep; sanitizer runtimes need more than glibc's minimum. */
#define STACK_SIZE (256u * 1024u)

enum { CANCELLED = 2 }; /* wait_word: ctl moved (stop, or a new arm) */

/* futex_waitv: 0 not tried yet or works, -1 missing (ENOSYS before 5.16; EPERM under a
 * seccomp profile that predates it). Found by trying, once per process. */
static _Atomic int waitv_missing;

static long futex(const void *addr, int op, uint32_t val, const struct timespec *ts)
{
	return syscall(SYS_futex, addr, op, val, ts, NULL, 0);
}

/* Sleep on the word while it holds expected: 1 woken, 0 it differed, CANCELLED, -errno. */
static int wait_word(struct abd__futex_thread *t, uint32_t seen, uint32_t expected)
{
	if (!atomic_load_explicit(&waitv_missing, memory_order_relaxed)) {
		struct abd__futex_waitv w[2] = {
			{ .val = expected, .uaddr = (uintptr_t)t->word, .flags = ABD_FUTEX2_SIZE_U32 },
			{ .val = seen, .uaddr = (uintptr_t)&t->ctl,
			  .flags = ABD_FUTEX2_SIZE_U32 | ABD_FUTEX2_PRIVATE },
		};
		for (;;) {
			long n = syscall(__NR_futex_waitv, w, 2, 0, NULL, 0);
			int e = n < 0 ? errno : 0;
			if (n == 0)
				return 1;
			if (atomic_load(&t->ctl) != seen)
				return CANCELLED;
			if (n > 0 || e == EINTR)
				continue; /* ctl woken without a change, or a stop/continue */
			if (e == EAGAIN)
				return 0;
			if (e != ENOSYS && e != EPERM && e != EINVAL)
				return -e;
			atomic_store_explicit(&waitv_missing, 1, memory_order_relaxed);
			break;
		}
	}
	for (;;) {
		/* Announce the word wait before the last look at ctl: stop() reads the flag after
		 * bumping ctl, so either this sees the bump or stop() sees the flag (and wakes). */
		atomic_store(&t->word_wait, 1ull << 32 | seen);
		if (atomic_load(&t->ctl) != seen) {
			atomic_store(&t->word_wait, 0);
			return CANCELLED;
		}
		long n = futex(t->word, FUTEX_WAIT, expected, NULL);
		int e = n < 0 ? errno : 0;
		atomic_store(&t->word_wait, 0);
		if (atomic_load(&t->ctl) != seen)
			return CANCELLED;
		if (n == 0)
			return 1;
		if (e == EINTR)
			continue;
		return e == EAGAIN ? 0 : -e;
	}
}

static void *thread_main(void *arg)
{
	struct abd__futex_thread *t = arg;
	uint32_t seen = 0;
	for (;;) {
		uint32_t c = atomic_load(&t->ctl);
		if (c == seen) {
			futex(&t->ctl, FUTEX_WAIT_PRIVATE, seen, NULL);
			continue;
		}
		seen = c;
		if (atomic_load(&t->stop))
			break;
		int res = wait_word(t, seen, atomic_load(&t->expected));
		if (res == CANCELLED)
			continue;
		atomic_store(&t->report, (uint64_t)seen << 32 | (uint32_t)res);
		uint64_t one = 1;
		(void)!write(t->efd, &one, sizeof(one));
	}
	atomic_store(&t->exited, 1);
	futex(&t->exited, FUTEX_WAKE_PRIVATE, 1, NULL);
	return NULL;
}

int abd__futex_thread_start(const uint32_t *word, struct abd__futex_thread **out)
{
	struct abd__futex_thread *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->word = word;
	t->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (t->efd < 0) {
		int e = -errno;
		free(t);
		return e;
	}
	pthread_attr_t attr;
	int e = pthread_attr_init(&attr);
	if (e == 0) {
		size_t min = (size_t)sysconf(_SC_THREAD_STACK_MIN);
		pthread_attr_setstacksize(&attr, STACK_SIZE > min ? STACK_SIZE : min);
		/* Created with every signal blocked, so that none is ever delivered to it: signals
		 * stay the application's threads' business. */
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		e = pthread_create(&t->thread, &attr, thread_main, t);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		pthread_attr_destroy(&attr);
	}
	if (e) {
		abd__close(t->efd);
		free(t);
		return -e;
	}
	pthread_setname_np(t->thread, "abd-futex");
	*out = t;
	return 0;
}

uint32_t abd__futex_thread_arm(struct abd__futex_thread *t, uint32_t expected)
{
	atomic_store(&t->expected, expected);
	uint32_t seq = atomic_fetch_add(&t->ctl, 1) + 1;
	futex(&t->ctl, FUTEX_WAKE_PRIVATE, 1, NULL);
	/* Still asleep on the word for a wait the reactor settled itself (the word had moved,
	 * with no wake yet): without futex_waitv only a wake of the word moves it on. Not when
	 * it sleeps for this new wait already. */
	uint64_t w = atomic_load(&t->word_wait);
	if (w && (uint32_t)w != seq)
		futex(t->word, FUTEX_WAKE, INT_MAX, NULL);
	return seq;
}

void abd__futex_thread_stop(struct abd__futex_thread *t)
{
	atomic_store(&t->stop, true);
	atomic_fetch_add(&t->ctl, 1);
	const struct timespec ms = { 0, 1000000 };
	while (!atomic_load(&t->exited)) {
		futex(&t->ctl, FUTEX_WAKE_PRIVATE, 1, NULL);
		if (atomic_load(&t->word_wait))
			futex(t->word, FUTEX_WAKE, INT_MAX, NULL);
		/* The retry is for a wake that came before the thread's FUTEX_WAIT on the word. */
		futex(&t->exited, FUTEX_WAIT_PRIVATE, 0, &ms);
	}
	pthread_join(t->thread, NULL);
}

void abd__futex_thread_free(struct abd__futex_thread *t)
{
	if (!t)
		return;
	abd__close(t->efd);
	free(t);
}
