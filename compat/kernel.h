/* SPDX-License-Identifier: MIT */
/* Kernel interfaces newer than the oldest headers and libraries we build against (Ubuntu
 * 20.04: glibc 2.31, no liburing; Debian 12: liburing 2.3), and a raw -errno wrapper for each
 * syscall we call directly. Internal. */
#ifndef ABD_COMPAT_KERNEL_H
#define ABD_COMPAT_KERNEL_H

#include <fcntl.h>
#include <errno.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef __NR_pidfd_open
#define __NR_pidfd_open 434
#endif
#ifndef __NR_pidfd_getfd
#define __NR_pidfd_getfd 438
#endif
#ifndef __NR_pidfd_send_signal
#define __NR_pidfd_send_signal 424
#endif
#ifndef __NR_close_range
#define __NR_close_range 436
#endif
#ifndef __NR_openat2
#define __NR_openat2 437
#endif
#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif
#ifndef __NR_futex_waitv
#define __NR_futex_waitv 449
#endif

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif
#ifndef SCM_PIDFD
#define SCM_PIDFD 0x04
#endif
#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x0001U
#endif
#ifndef MFD_ALLOW_SEALING
#define MFD_ALLOW_SEALING 0x0002U
#endif
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#ifndef F_SEAL_EXEC
#define F_SEAL_EXEC 0x0020
#endif
#ifndef PIDFD_NONBLOCK
#define PIDFD_NONBLOCK 04000
#endif

/* io_uring opcodes and constants from kernels newer than liburing 2.3's copy of the uapi. */
#define ABD_IORING_OP_FUTEX_WAIT 51
#define ABD_IORING_OP_FUTEX_WAKE 52
#define ABD_IORING_OP_FUTEX_WAITV 53
#define ABD_IORING_REGISTER_PROBE 8
#define ABD_FUTEX2_SIZE_U32 0x02
#define ABD_FUTEX2_PRIVATE 0x80 /* = FUTEX_PRIVATE_FLAG */
#define ABD_FUTEX_BITSET_MATCH_ANY 0xffffffffu

/* futex_waitv(2) (5.16): sleep until one of several words is woken or differs. */
struct abd__futex_waitv {
	uint64_t val;
	uint64_t uaddr;
	uint32_t flags;
	uint32_t reserved;
};

/* The raw syscalls return -errno, never touching the caller's errno meaning. */
static inline int abd__sys_ret(long r)
{
	return r < 0 ? -errno : (int)r;
}

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

/* Read (drain) an eventfd without ever sleeping, whatever O_NONBLOCK says: the status flags
 * belong to the open file description, and a peer sharing it may clear them at any moment, so
 * a plain read(2) of a shared eventfd can block for ever. preadv2(RWF_NOWAIT) makes the read
 * itself non-blocking (eventfd honours it since Linux 5.12). Returns 8 (*v: the count it took),
 * -EAGAIN (nothing to take), -EOPNOTSUPP (this kernel's eventfd cannot read without the flag:
 * the caller must not read it synchronously), or another -errno. */
static inline int abd__eventfd_drain(int fd, uint64_t *v)
{
	/* MemorySanitizer has no preadv2 interceptor: without this store it takes the count the
	 * kernel wrote for uninitialised (the kernel writes all 8 bytes when n == 8) */
	*v = 0;
	struct iovec io = { v, sizeof(*v) };
	ssize_t n = preadv2(fd, &io, 1, -1, RWF_NOWAIT);
	if (n < 0)
		return errno == EINVAL || errno == ENOSYS ? -EOPNOTSUPP : -errno;
	return n == (ssize_t)sizeof(*v) ? (int)n : -EIO;
}

static inline int abd__pidfd_open(pid_t pid, unsigned int flags)
{
	return abd__sys_ret(syscall(__NR_pidfd_open, pid, flags));
}

static inline int abd__pidfd_getfd(int pidfd, int targetfd, unsigned int flags)
{
	return abd__sys_ret(syscall(__NR_pidfd_getfd, pidfd, targetfd, flags));
}

static inline int abd__pidfd_send_signal(int pidfd, int sig)
{
	return abd__sys_ret(syscall(__NR_pidfd_send_signal, pidfd, sig, NULL, 0));
}

/* PIDFD_GET_INFO (6.13): a pidfd's process credentials in one ioctl, bound to that process
 * (no /proc path, no PID reuse); ESRCH once it has exited, ENOTTY (or EINVAL) before 6.13.
 * The version-0 layout (64 bytes); the kernel takes the size from the command. */
struct abd__pidfd_info {
	uint64_t mask, cgroupid;
	uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
	uint32_t spare0;
};
#define ABD_PIDFD_GET_INFO _IOWR(0xFF, 11, struct abd__pidfd_info)
#define ABD_PIDFD_INFO_CREDS 2ull

#define ABD_PIDFD_INFO_PID 1ull

/* The pidfd's process: its pid in our PID namespace (tgid: the process, not a thread; 0 when
 * not visible from here), effective uid and gid. */
static inline int abd__pidfd_ids(int pidfd, pid_t *tgid, uid_t *euid, gid_t *egid)
{
	struct abd__pidfd_info info = { .mask = ABD_PIDFD_INFO_PID | ABD_PIDFD_INFO_CREDS };
	if (ioctl(pidfd, ABD_PIDFD_GET_INFO, &info) < 0)
		return -errno;
	if (!(info.mask & ABD_PIDFD_INFO_CREDS) || !(info.mask & ABD_PIDFD_INFO_PID))
		return -ENOTTY;
	*tgid = (pid_t)info.tgid;
	*euid = (uid_t)info.euid;
	*egid = (gid_t)info.egid;
	return 0;
}

static inline int abd__pidfd_creds(int pidfd, uid_t *euid, gid_t *egid)
{
	pid_t tgid;
	return abd__pidfd_ids(pidfd, &tgid, euid, egid);
}

/* open_by_handle_at(2) on pidfs: the pidfd of the process whose pidfs inode number is ino
 * (the handle pidfs itself encodes on 64-bit: FILEID_KERNFS, the u64 inode), with no mount
 * descriptor (FD_PIDFS_ROOT, Linux 6.17; pidfs handles are 6.14). pidfs's own permission
 * hook replaces the CAP_DAC_READ_SEARCH check of other filesystems: anyone may open a handle
 * of a process in its PID namespace hierarchy. ESTALE: no such process (never was, reaped,
 * or outside our namespaces); EBADF before 6.17 (FD_PIDFS_ROOT unknown). */
#define ABD__FD_PIDFS_ROOT (-10002)
#define ABD__FILEID_KERNFS 0xfe
static inline int abd__pidfd_by_ino(uint64_t ino)
{
	struct {
		unsigned int bytes;
		int type;
		uint64_t ino;
	} h = { sizeof(uint64_t), ABD__FILEID_KERNFS, ino };
	return abd__sys_ret(syscall(SYS_open_by_handle_at, (long)ABD__FD_PIDFS_ROOT, &h, (long)O_CLOEXEC));
}

/* kcmp(2) type: do two descriptors name the same open file? 0 same, 1/2 ordered, 3 unordered. */
#define ABD__KCMP_FILE 0

/* statfs f_type of pidfs (6.9): a pidfd there has its process's own inode number. */
#define ABD__PIDFS_MAGIC 0x50494446

static inline int abd__close_range(unsigned int first, unsigned int last, unsigned int flags)
{
	return abd__sys_ret(syscall(__NR_close_range, first, last, flags));
}

#endif
