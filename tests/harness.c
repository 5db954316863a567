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

int abd_test_wait(pid_t pid)
{
	int status;
	pid_t r;
	do
		r = waitpid(pid, &status, 0);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -1;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return -1;
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

unsigned long abd_test_scaled(unsigned long n, unsigned long min)
{
	const char *env = getenv("ABD_TEST_SCALE");
	unsigned long div = env ? strtoul(env, NULL, 10) : 1;
	if (div == 0)
		div = 1;
	unsigned long r = n / div;
	return r < min ? min : r;
}
