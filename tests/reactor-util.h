/* SPDX-License-Identifier: MIT */
/* One reactor test body run on both backends: ABD_REACTOR_TEST(suite, name) defines the
 * Criterion tests suite_uring::name (skipped, with its reason, where io_uring is missing) and
 * suite_epoll::name, each calling name_body(flags) with the backend's abd_reactor_new flag.
 * Include after config.h and harness.h. */
#ifndef ABD_TESTS_REACTOR_UTIL_H
#define ABD_TESTS_REACTOR_UTIL_H

#define ABD_REACTOR_TEST(suite, name, ...)                                             \
	static void name##_body(unsigned flags);                                           \
	ABD_TEST(suite##_uring, name, .timeout = 60, ##__VA_ARGS__)                        \
	{                                                                                  \
		abd_test_require_uring();                                                      \
		name##_body(ABD_REACTOR_FORCE_IO_URING);                                       \
	}                                                                                  \
	ABD_TEST(suite##_epoll, name, .timeout = 60, ##__VA_ARGS__)                        \
	{                                                                                  \
		name##_body(ABD_REACTOR_FORCE_EPOLL);                                          \
	}                                                                                  \
	static void name##_body(unsigned flags)

static inline void abd_test_require_uring(void)
{
#if !ABD_HAVE_LIBURING
	cr_skip_test("built without liburing: only the epoll backend exists");
#endif
	abd_test_require(ABD_FEAT_IO_URING);
}

#endif
