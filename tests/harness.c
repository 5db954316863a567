/* SPDX-License-Identifier: MIT */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int abd_test_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own descriptor */
}

static void list_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char path[64], target[256];
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		target[n > 0 ? n : 0] = 0;
		cr_log_warn("open fd %s -> %s", e->d_name, target);
	}
	closedir(d);
}

void abd_test_check_fds(int before)
{
	int after = abd_test_count_fds();
	if (after != before)
		list_fds();
	cr_assert_eq(after, before, "descriptor leak: %d open before the test, %d after", before,
	             after);
}

const char *abd_test_profile(void)
{
	const char *p = getenv("ABD_PROFILE");
	return p && *p ? p : "native";
}

void abd_test_require(enum abd_feature feature)
{
	int e = abd_probe_error(feature);
	if (e == 0)
		return;
	cr_skip_test("profile %s: %s unavailable (%s)", abd_test_profile(),
	             abd_feature_name(feature),
	             e == -ECANCELED ? "switched off by the feature mask" : strerror(-e));
}

void abd_test_mkdtemp(char *out, size_t size)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(out, size, "%s/abd-test-XXXXXX", base);
	cr_assert_not_null(mkdtemp(out), "mkdtemp(%s): %s", out, strerror(errno));
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path) < 0 ? 0 : 0;
}

void abd_test_rmtree(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

pid_t abd_test_fork(int (*fn)(void *arg), void *arg)
{
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0)
		_exit(fn(arg));
	return pid;
}

/* A wait status as a number: the exit status, 128 + the signal that killed it, or -1. */
static int exit_status(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return -1;
}

int abd_test_wait(pid_t pid)
{
	int status;
	pid_t r;
	do
		r = waitpid(pid, &status, 0);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -1 : exit_status(status);
}

int abd_test_wait_within(pid_t pid, uint64_t ns)
{
	uint64_t end = abd_test_now_ns() + ns;
	int status;
	pid_t r;
	while ((r = waitpid(pid, &status, WNOHANG)) == 0 && abd_test_now_ns() < end) {
		struct timespec ts = { 0, 5 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	if (r == 0) {
		kill(pid, SIGKILL);
		abd_test_wait(pid);
		return -2;
	}
	return r < 0 ? -1 : exit_status(status);
}

uint64_t abd_test_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

long abd_test_read_long(const char *path)
{
	FILE *f = fopen(path, "re");
	long v = -1;
	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

static void nap_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000l };
	nanosleep(&ts, NULL);
}

long abd_test_ctxsw(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	long sum = 0;
	int threads = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char status[320], line[256];
		snprintf(status, sizeof(status), "%s/%s/status", path, de->d_name);
		FILE *f = fopen(status, "re");
		if (!f)
			continue; /* the thread ended meanwhile */
		long v = -1;
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "voluntary_ctxt_switches: %ld", &v) == 1)
				break;
		fclose(f);
		if (v >= 0) {
			sum += v;
			threads++;
		}
	}
	closedir(d);
	return threads ? sum : -1;
}

/* The state letter of /proc/PID/stat (R, S, D, T...), 0 when unreadable. */
static char proc_state(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	const char *end = strrchr(buf, ')'); /* the command name may hold anything */
	return end && end[1] == ' ' ? end[2] : 0;
}

void abd_test_wait_asleep(pid_t pid)
{
	uint64_t end = abd_test_now_ns() + 10000000000ull;
	long last = abd_test_ctxsw(pid);
	for (;;) {
		nap_ms(100);
		long now = abd_test_ctxsw(pid);
		cr_assert_geq(now, 0, "pid %d is gone", (int)pid);
		if (now == last && proc_state(pid) == 'S')
			return;
		cr_assert_lt(abd_test_now_ns(), end, "pid %d did not settle asleep in 10 s", (int)pid);
		last = now;
	}
}

void abd_test_ptrace_interrupt(pid_t pid)
{
	cr_assert_eq(ptrace(PTRACE_SEIZE, pid, 0, 0), 0, "PTRACE_SEIZE: %s", strerror(errno));
	cr_assert_eq(ptrace(PTRACE_INTERRUPT, pid, 0, 0), 0, "PTRACE_INTERRUPT: %s",
	             strerror(errno));
	int status;
	cr_assert_eq(waitpid(pid, &status, __WALL), pid, "waitpid: %s", strerror(errno));
	cr_assert(WIFSTOPPED(status), "the child stopped under ptrace (status %#x)", status);
	cr_assert_eq(ptrace(PTRACE_DETACH, pid, 0, 0), 0, "PTRACE_DETACH: %s", strerror(errno));
}

void abd_test_stop_cont(pid_t pid)
{
	int status;
	cr_assert_eq(kill(pid, SIGSTOP), 0);
	cr_assert_eq(waitpid(pid, &status, WUNTRACED), pid, "waitpid: %s", strerror(errno));
	cr_assert(WIFSTOPPED(status), "the child stopped (status %#x)", status);
	cr_assert_eq(kill(pid, SIGCONT), 0);
	cr_assert_eq(waitpid(pid, &status, WCONTINUED), pid, "waitpid: %s", strerror(errno));
	cr_assert(WIFCONTINUED(status), "the child continued (status %#x)", status);
}

unsigned long abd_test_scaled(unsigned long n, unsigned long min)
{
	const char *env = getenv("ABD_TEST_SCALE");
	unsigned long div = env ? strtoul(env, NULL, 10) : 1;
	if (div == 0)
		div = 1;
	unsigned long r = n / div;
	return r < min ? min : r;
}

void abd_test_stops_leave_running(pid_t pid, int times)
{
	for (int i = 0; i < times; i++) {
		abd_test_ptrace_interrupt(pid);
		nap_ms(50);
		abd_test_stop_cont(pid);
		nap_ms(50);
	}
	cr_assert_eq(waitpid(pid, NULL, WNOHANG), 0, "pid %d ended after a ptrace or job stop",
	             (int)pid);
}
