/* SPDX-License-Identifier: MIT */
/* The kernel probe, the feature mask, and the choices under each emulated profile. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static bool profile_is(const char *name)
{
	return strcmp(abd_test_profile(), name) == 0;
}

ABD_TEST(probe, has_and_error_agree)
{
	for (int f = 0; f < ABD_FEAT__COUNT; f++) {
		int has = abd_probe_has(f);
		int err = abd_probe_error(f);
		cr_assert(has == 0 || has == 1);
		cr_assert_eq(has, err == 0, "%s: has=%d error=%d", abd_feature_name(f), has, err);
		cr_assert_leq(err, 0);
		cr_assert_eq(abd_feature_from_name(abd_feature_name(f)), f);
	}
}

ABD_TEST(probe, bad_arguments_are_einval)
{
	cr_assert_eq(abd_probe_has(ABD_FEAT__COUNT), -EINVAL);
	cr_assert_eq(abd_probe_has((enum abd_feature)-1), -EINVAL);
	cr_assert_eq(abd_probe_error(ABD_FEAT__COUNT), -EINVAL);
	cr_assert_null(abd_feature_name(ABD_FEAT__COUNT));
	cr_assert_eq(abd_feature_from_name("no_such_feature"), -EINVAL);
	cr_assert_eq(abd_feature_from_name(NULL), -EINVAL);
	cr_assert_eq(abd_probe_tmpfile(NULL), -EINVAL);
	cr_assert_null(abd_backend_name(0));
}

ABD_TEST(probe, feature_mask_switches_off)
{
	abd_test_require(ABD_FEAT_EVENTFD);
	cr_assert_eq(abd_features_disable(ABD_FEATURE_BIT(ABD_FEAT_EVENTFD)), 0);
	cr_assert_eq(abd_probe_has(ABD_FEAT_EVENTFD), 0);
	cr_assert_eq(abd_probe_error(ABD_FEAT_EVENTFD), -ECANCELED);
}

ABD_TEST(probe, io_uring_mask_takes_every_opcode)
{
	abd_test_require(ABD_FEAT_IO_URING);
	abd_features_disable(ABD_FEATURE_BIT(ABD_FEAT_IO_URING));
	for (int f = ABD_FEAT_IO_URING; f <= ABD_FEAT_URING_DEFER_TASKRUN; f++)
		cr_assert_eq(abd_probe_has(f), 0, "%s still on", abd_feature_name(f));
	cr_assert_eq(abd_choose_backend(), ABD_BACKEND_EPOLL);
	cr_assert_neq(abd_choose_wake(), ABD_WAKE_IO_URING_FUTEX);
}

/* The environment variable is read on the first probe, in a fresh process. */
static int env_child(void *arg)
{
	(void)arg;
	setenv("ABD_DISABLE", "pidfd_getfd, bogus_name,so_peerpidfd", 1);
	if (abd_probe_has(ABD_FEAT_PIDFD_GETFD) != 0)
		return 1;
	if (abd_probe_has(ABD_FEAT_SO_PEERPIDFD) != 0)
		return 2;
	if (abd_choose_fd_transfer() != ABD_FD_TRANSFER_SCM_RIGHTS)
		return 3;
	return 0;
}

ABD_TEST(probe, env_mask_is_read)
{
	cr_assert_eq(abd_test_wait(abd_test_fork(env_child, NULL)), 0);
}

static void *thread_probe(void *arg)
{
	*(uint64_t *)arg = abd_probe_features();
	return NULL;
}

ABD_TEST(probe, concurrent_first_probe_agrees)
{
	pthread_t t[8];
	uint64_t got[8];
	for (int i = 0; i < 8; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, thread_probe, &got[i]), 0);
	for (int i = 0; i < 8; i++)
		pthread_join(t[i], NULL);
	for (int i = 1; i < 8; i++)
		cr_assert_eq(got[i], got[0]);
}

/* The probe makes and closes io_uring rings; the kernel's teardown of a ring queues task work
 * (TWA_SIGNAL) to the threads that used it a few milliseconds later, which would end the
 * caller's next wait with EINTR and no signal: a reactor would report an interruption that
 * never happened. Each test runs in a new process, so this is its first probe. */
ABD_TEST(probe, first_probe_leaves_no_eintr_behind)
{
	(void)abd_probe_features();
	int ep = epoll_create1(EPOLL_CLOEXEC);
	cr_assert_geq(ep, 0);
	struct epoll_event ev;
	int n = epoll_wait(ep, &ev, 1, 300);
	int e = errno;
	close(ep);
	cr_assert_eq(n, 0, "epoll_wait after the probe: %d (%s)", n, n < 0 ? strerror(e) : "event");
}

ABD_TEST(probe, profile_choices)
{
	enum abd_backend b = abd_choose_backend();
	enum abd_fd_transfer t = abd_choose_fd_transfer();
	enum abd_wake w = abd_choose_wake();
	if (profile_is("linux-5.4")) {
		cr_assert_eq(b, ABD_BACKEND_EPOLL);
		cr_assert_eq(t, ABD_FD_TRANSFER_SCM_RIGHTS);
		cr_assert_eq(w, ABD_WAKE_FUTEX);
		cr_assert_eq(abd_probe_error(ABD_FEAT_PIDFD_GETFD), -ENOSYS);
		cr_assert_eq(abd_probe_error(ABD_FEAT_IO_URING), -EINVAL);
		cr_assert_eq(abd_probe_error(ABD_FEAT_MFD_NOEXEC_SEAL), -EINVAL);
		cr_assert_eq(abd_probe_error(ABD_FEAT_SO_PEERPIDFD), -ENOPROTOOPT);
		cr_assert_eq(abd_probe_error(ABD_FEAT_CLOSE_RANGE), -ENOSYS);
		cr_assert_eq(abd_probe_error(ABD_FEAT_OPENAT2), -ENOSYS);
	} else if (profile_is("no-ptrace")) {
		cr_assert_eq(t, ABD_FD_TRANSFER_SCM_RIGHTS);
		cr_assert_eq(abd_probe_error(ABD_FEAT_PIDFD_GETFD), -EPERM);
	} else if (profile_is("no-io_uring")) {
		cr_assert_eq(b, ABD_BACKEND_EPOLL);
		cr_assert_eq(abd_probe_error(ABD_FEAT_IO_URING), -EPERM);
		cr_assert_eq(w, ABD_WAKE_FUTEX);
	} else {
		/* Natively every choice follows the features. */
		cr_assert_eq(b == ABD_BACKEND_IO_URING, abd_probe_has(ABD_FEAT_IO_URING) &&
		                                            abd_probe_has(ABD_FEAT_URING_READ));
		cr_assert_eq(w == ABD_WAKE_IO_URING_FUTEX,
		             b == ABD_BACKEND_IO_URING && abd_probe_has(ABD_FEAT_URING_FUTEX_WAIT));
		if (!abd_probe_has(ABD_FEAT_PIDFD_GETFD))
			cr_assert_eq(t, ABD_FD_TRANSFER_SCM_RIGHTS);
	}
	cr_assert_not_null(abd_backend_name(b));
	cr_assert_not_null(abd_fd_transfer_name(t));
	cr_assert_not_null(abd_wake_name(w));
}

ABD_TEST(probe, tmpfile_on_tmpfs)
{
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	cr_assert_eq(abd_probe_tmpfile(dir), 0);
	cr_assert_eq(abd_probe_tmpfile("/nonexistent-abd"), -ENOENT);
	/* procfs has no O_TMPFILE: the answer is an error, not a crash or a file. */
	cr_assert_lt(abd_probe_tmpfile("/proc"), 0);
	abd_test_rmtree(dir);
}

ABD_TEST(probe, version_matches_header)
{
	cr_assert_eq(abd_version(), ABD_VERSION_NUMBER);
	cr_assert_str_eq(abd_version_string(), ABD_VERSION_STRING);
}

/* abdctl probe --json is the operator's view of the same: its choices must match ours. */
ABD_TEST(probe, abdctl_json_matches_library)
{
	const char *abdctl = getenv("ABD_ABDCTL");
	if (!abdctl)
		cr_skip_test("ABD_ABDCTL not set (run through meson test)");
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "%s probe --json", abdctl);
	FILE *p = popen(cmd, "r");
	cr_assert_not_null(p);
	char buf[8192];
	size_t n = fread(buf, 1, sizeof(buf) - 1, p);
	buf[n] = 0;
	cr_assert_eq(pclose(p), 0);
	char want[128];
	snprintf(want, sizeof(want), "\"backend\":\"%s\"", abd_backend_name(abd_choose_backend()));
	cr_assert_not_null(strstr(buf, want), "%s not in %s", want, buf);
	snprintf(want, sizeof(want), "\"fd_transfer\":\"%s\"",
	         abd_fd_transfer_name(abd_choose_fd_transfer()));
	cr_assert_not_null(strstr(buf, want), "%s not in %s", want, buf);
	snprintf(want, sizeof(want), "\"wake\":\"%s\"", abd_wake_name(abd_choose_wake()));
	cr_assert_not_null(strstr(buf, want), "%s not in %s", want, buf);
	cr_assert_not_null(strstr(buf, "\"features\":{"));
}
