/* SPDX-License-Identifier: MIT */
/* Shared by every Criterion suite: an fd-leak check around each test, skips that say why,
 * scratch directories on tmpfs, and helpers for tests that fork real processes. */
#ifndef ABD_TESTS_HARNESS_H
#define ABD_TESTS_HARNESS_H

#include <abd/abd.h>
#include <criterion/criterion.h>
#include <stdbool.h>
#include <sys/types.h>

/* ABD_TEST(suite, name, criterion options...) { body }: the body runs between two counts of
 * this process's open descriptors, and the test fails if they differ. */
#define ABD_TEST(suite, name, ...)                                                     \
	static void abd_test_body_##suite##_##name(void);                                  \
	Test(suite, name, ##__VA_ARGS__)                                                   \
	{                                                                                  \
		int abd_fds_before_ = abd_test_count_fds();                                    \
		abd_test_body_##suite##_##name();                                              \
		abd_test_check_fds(abd_fds_before_);                                           \
	}                                                                                  \
	static void abd_test_body_##suite##_##name(void)

int abd_test_count_fds(void);
void abd_test_check_fds(int before);

/* The kernel profile the suite runs under ("native", "linux-5.4", ...). */
const char *abd_test_profile(void);

/* Skip (with the reason printed, naming the profile) unless the feature may be used. */
void abd_test_require(enum abd_feature feature);

/* A fresh directory on tmpfs (O_TMPFILE works there), removed with everything in it by
 * abd_test_rmtree. The returned string is static per call site's buffer: copy if needed. */
void abd_test_mkdtemp(char *out, size_t size);
void abd_test_rmtree(const char *path);

/* Fork a child that runs fn(arg) and exits with its return value. */
pid_t abd_test_fork(int (*fn)(void *arg), void *arg);
/* Wait for a child; returns its exit status, 128+signal if killed, -1 on error. */
int abd_test_wait(pid_t pid);
/* abd_test_wait for at most ns nanoseconds: past that the child is killed (SIGKILL) and
 * reaped, and -2 returned. */
int abd_test_wait_within(pid_t pid, uint64_t ns);

/* Stress sizes: n divided by $ABD_TEST_SCALE (default 1; the sanitizer builds set 10 or
 * more), never below min. Properties stay the same, only the iteration counts shrink. */
unsigned long abd_test_scaled(unsigned long n, unsigned long min);

/* Nanoseconds on CLOCK_MONOTONIC. */
uint64_t abd_test_now_ns(void);

/* The first number in a file (a sysctl under /proc/sys), or -1. */
long abd_test_read_long(const char *path);

/* How many times pid slept: voluntary_ctxt_switches summed over its threads
 * (/proc/PID/task/ * /status), or -1 when pid cannot be read. Two counts around an idle stretch
 * say how often a waiting process woke up: a count, not a timing. */
long abd_test_ctxsw(pid_t pid);
/* Wait (10 s at most) until pid sleeps: state S in /proc/PID/stat and no voluntary context
 * switch for 100 ms. Then a count of its wake-ups starts from a settled sleeper, whatever the
 * machine's load did to its start. */
void abd_test_wait_asleep(pid_t pid);

/* What a debugger's attach does to a sleeping child (strace -p, gdb -p): PTRACE_SEIZE,
 * PTRACE_INTERRUPT (its sleep ends, no handler runs), the stop seen, PTRACE_DETACH. */
void abd_test_ptrace_interrupt(pid_t pid);
/* Job control on a child: SIGSTOP, the stop seen, SIGCONT, the continuation seen. */
void abd_test_stop_cont(pid_t pid);
/* Both, `times` times, 50 ms apart; then the child must still be running: a stop with no
 * handler run ends no wait. */
void abd_test_stops_leave_running(pid_t pid, int times);

#endif
