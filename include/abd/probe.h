/* SPDX-License-Identifier: MIT */
/* What the running kernel offers, found by trying it, never by reading a version number.
 *
 * The first call runs the probe (a few milliseconds, once per process; thread-safe) and
 * applies the feature mask from the environment: ABD_DISABLE=name,name,... switches features
 * off as if the kernel lacked them (names as abd_feature_name() prints them; unknown names
 * are ignored and reported by abdctl probe). abd_features_disable() does the same from code. */
#ifndef ABD_PROBE_H
#define ABD_PROBE_H

#include <abd/common.h>

ABD_BEGIN_DECLS

enum abd_feature {
	ABD_FEAT_IO_URING = 0,          /* io_uring_setup + IORING_REGISTER_PROBE both work */
	ABD_FEAT_URING_READ,            /* IORING_OP_READ (5.6) */
	ABD_FEAT_URING_POLL_ADD,        /* IORING_OP_POLL_ADD (5.1) */
	ABD_FEAT_URING_RECVMSG,         /* IORING_OP_RECVMSG (5.3) */
	ABD_FEAT_URING_SENDMSG,         /* IORING_OP_SENDMSG (5.3) */
	ABD_FEAT_URING_ACCEPT,          /* IORING_OP_ACCEPT (5.5) */
	ABD_FEAT_URING_ASYNC_CANCEL,    /* IORING_OP_ASYNC_CANCEL (5.5) */
	ABD_FEAT_URING_LINK_TIMEOUT,    /* IORING_OP_LINK_TIMEOUT (5.5) */
	ABD_FEAT_URING_TIMEOUT,         /* IORING_OP_TIMEOUT (5.4) */
	ABD_FEAT_URING_FUTEX_WAIT,      /* IORING_OP_FUTEX_WAIT (6.7) */
	ABD_FEAT_URING_FUTEX_WAKE,      /* IORING_OP_FUTEX_WAKE (6.7) */
	ABD_FEAT_URING_COOP_TASKRUN,    /* IORING_SETUP_COOP_TASKRUN (5.19) */
	ABD_FEAT_URING_SINGLE_ISSUER,   /* IORING_SETUP_SINGLE_ISSUER (6.0) */
	ABD_FEAT_URING_DEFER_TASKRUN,   /* IORING_SETUP_DEFER_TASKRUN (6.1) */
	ABD_FEAT_PIDFD_OPEN,            /* pidfd_open(2) (5.3) */
	ABD_FEAT_PIDFD_GETFD,           /* pidfd_getfd(2) (5.6), tried on this process */
	ABD_FEAT_SO_PEERPIDFD,          /* getsockopt(SO_PEERPIDFD) (6.5) */
	ABD_FEAT_MFD_NOEXEC_SEAL,       /* memfd_create(MFD_NOEXEC_SEAL) (6.3) */
	ABD_FEAT_FUTEX,                 /* futex(2) on shared memory */
	ABD_FEAT_EVENTFD,               /* eventfd2(2) */
	ABD_FEAT_CLOSE_RANGE,           /* close_range(2) (5.9) */
	ABD_FEAT_OPENAT2,               /* openat2(2) with RESOLVE_* (5.6) */
	ABD_FEAT_PIDFD_GET_INFO,        /* ioctl(pidfd, PIDFD_GET_INFO): a process's uids (6.13) */
	ABD_FEAT_PIDFS_INO,             /* pidfds on pidfs: st_ino names one process per boot (6.9) */
	ABD_FEAT_KCMP,                  /* kcmp(2) KCMP_FILE on our own descriptors (3.5, CONFIG_KCMP) */
	ABD_FEAT_PIDFS_HANDLE,          /* open_by_handle_at(FD_PIDFS_ROOT): a pidfd from its inode (6.17) */
	ABD_FEAT__COUNT
};

#define ABD_FEATURE_BIT(f) (UINT64_C(1) << (f))

/* The mask of features this process may use: what the kernel offers, minus the feature mask. */
ABD_EXPORT uint64_t abd_probe_features(void);

/* 1 if the feature may be used, 0 if not, -EINVAL for an unknown feature. */
ABD_EXPORT int abd_probe_has(enum abd_feature feature);

/* Why a feature is missing: 0 when present, -EPERM/-ENOSYS/-EINVAL/... as the kernel answered,
 * -ECANCELED when the feature mask switched it off, -EINVAL for an unknown feature. */
ABD_EXPORT int abd_probe_error(enum abd_feature feature);

/* Switch features off for this process (e.g. ABD_FEATURE_BIT(ABD_FEAT_IO_URING)). Returns 0. */
ABD_EXPORT int abd_features_disable(uint64_t mask);

/* Name of a feature ("io_uring", "pidfd_getfd", ...); NULL for an unknown one. */
ABD_EXPORT const char *abd_feature_name(enum abd_feature feature);

/* The feature with this name, or -EINVAL. */
ABD_EXPORT int abd_feature_from_name(const char *name);

/* Yama's kernel.yama.ptrace_scope (0..3), or -ENOENT where Yama is absent. */
ABD_EXPORT int abd_probe_ptrace_scope(void);

/* 1 if this process has CAP_SYS_PTRACE in its effective set, 0 if not. */
ABD_EXPORT int abd_probe_cap_sys_ptrace(void);

/* Whether O_TMPFILE works in dir: 0, or -EOPNOTSUPP (the filesystem lacks it), or another
 * -errno from open(2). Not cached: every directory may sit on another filesystem. */
ABD_EXPORT int abd_probe_tmpfile(const char *dir);

/* The choices the library makes from the probe. */
enum abd_backend { ABD_BACKEND_IO_URING = 1, ABD_BACKEND_EPOLL = 2 };
enum abd_fd_transfer { ABD_FD_TRANSFER_PIDFD_GETFD = 1, ABD_FD_TRANSFER_SCM_RIGHTS = 2 };
/* How a reactor waits for a ring's futex word: io_uring FUTEX_WAIT (Linux 6.7+, io_uring
 * backend), else FUTEX_WAIT in a thread of the futex source. ABD_WAKE_EVENTFD is kept for
 * source compatibility and never chosen (rings have no eventfd). */
enum abd_wake { ABD_WAKE_IO_URING_FUTEX = 1, ABD_WAKE_FUTEX = 2, ABD_WAKE_EVENTFD = 3 };

ABD_EXPORT enum abd_backend abd_choose_backend(void);
ABD_EXPORT enum abd_fd_transfer abd_choose_fd_transfer(void);
ABD_EXPORT enum abd_wake abd_choose_wake(void);
ABD_EXPORT const char *abd_backend_name(enum abd_backend backend);
ABD_EXPORT const char *abd_fd_transfer_name(enum abd_fd_transfer transfer);
ABD_EXPORT const char *abd_wake_name(enum abd_wake wake);

ABD_END_DECLS

#endif
