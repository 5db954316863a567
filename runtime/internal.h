/* SPDX-License-Identifier: MIT */
/* Internal helpers shared by runtime/ and compat/. Nothing here is exported. */
#ifndef ABD_RUNTIME_INTERNAL_H
#define ABD_RUNTIME_INTERNAL_H

#include <errno.h>
#include <stdint.h>
#include <unistd.h>

#include "compat/kernel.h"

#define abd__unused __attribute__((unused))
#define abd__likely(x) __builtin_expect(!!(x), 1)
#define abd__unlikely(x) __builtin_expect(!!(x), 0)
#define ABD__ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* sd-event's assert_return: a misuse is an error return, never an abort. */
#define abd__check(expr, ret)                                                          \
	do {                                                                               \
		if (abd__unlikely(!(expr)))                                                    \
			return (ret);                                                              \
	} while (0)

/* close() that keeps errno and ignores -1; returns -1 to reset the variable. */
static inline int abd__close(int fd)
{
	if (fd >= 0) {
		int saved = errno;
		close(fd);
		errno = saved;
	}
	return -1;
}

/* The pidfs inode number of process pid (st_ino of a pidfd of it): unique for the boot where
 * the probe has ABD_FEAT_PIDFS_INO; else, or on any error, 0. runtime/probe.c. */
uint64_t abd__pidfs_ino(pid_t pid);

static inline void abd__closep(int *fd)
{
	*fd = abd__close(*fd);
}
#define abd__autoclose __attribute__((cleanup(abd__closep)))

#endif
