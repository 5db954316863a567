/* SPDX-License-Identifier: MIT */
/* A futex wait served by a thread, for a reactor that cannot wait on a futex word itself
 * (epoll; io_uring without IORING_OP_FUTEX_WAIT, before Linux 6.7). The thread sleeps in the
 * kernel on the word and rings a private eventfd, which the reactor watches like any other
 * source (docs/reactor.md, "Futex sources served by a thread"). Internal. */
#ifndef ABD_COMPAT_FUTEX_THREAD_H
#define ABD_COMPAT_FUTEX_THREAD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct abd__futex_thread {
	_Atomic uint32_t ctl;          /* command sequence (private futex): bumped to arm or stop */
	_Atomic uint32_t expected;     /* the value of the next wait (written before the bump) */
	_Atomic bool stop;
	_Atomic uint64_t word_wait;    /* 1 << 32 | ctl value: in FUTEX_WAIT on the word for that
	                                * wait (no futex_waitv on this kernel); 0: not */
	_Atomic uint32_t exited;       /* private futex: the thread is done with word and eventfd */
	_Atomic uint64_t report;       /* the last wait: its ctl value << 32 | result (1 woken, 0
	                                * the word differed, or -errno) */
	const uint32_t *word;
	int efd;                       /* the doorbell: private, EFD_NONBLOCK, written once per wait */
	pthread_t thread;
};

/* Make the eventfd and the thread (all signals blocked, small stack, named "abd-futex"); the
 * thread sleeps until the first arm. -ENOMEM, -EMFILE/-ENFILE (eventfd), -EAGAIN (no thread). */
int abd__futex_thread_start(const uint32_t *word, struct abd__futex_thread **out);

/* One wait on the word with this expected value; its end (woken, differed, or an error)
 * writes 1 to the eventfd once. Returns the wait's number, for abd__futex_thread_report. A
 * new arm replaces a wait still under way (one the caller settled itself: the word moved). */
uint32_t abd__futex_thread_arm(struct abd__futex_thread *t, uint32_t expected);

/* Whether wait number seq has ended (*result: 1, 0 or -errno); false for an older wait's
 * report, or none yet. Read after the bell rang. */
static inline bool abd__futex_thread_report(struct abd__futex_thread *t, uint32_t seq, int *result)
{
	uint64_t r = atomic_load(&t->report);
	*result = (int)(uint32_t)r;
	return (uint32_t)(r >> 32) == seq;
}

/* Stop and join the thread: once this returns it touches neither the word nor the eventfd.
 * Never hangs: a thread asleep on the word is woken (futex_waitv's private cancel word, or
 * FUTEX_WAKE on the word itself where futex_waitv is missing: a spurious wake for the word's
 * other sleepers, which an eventcount tolerates). */
void abd__futex_thread_stop(struct abd__futex_thread *t);

/* Close the eventfd and free the memory: after stop, or in a forked child (which has no such
 * thread: fork copies only the calling one). */
void abd__futex_thread_free(struct abd__futex_thread *t);

#endif
