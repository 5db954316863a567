/* SPDX-License-Identifier: MIT */
/* The kernel probe: try each feature once, remember the answer, apply the feature mask.
 * Never look at the kernel version: backports and seccomp profiles make it meaningless. */
#include <abd/probe.h>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <linux/futex.h>

#include "config.h"

#if defined(__has_feature)
#if __has_feature(memory_sanitizer)
#include <sanitizer/msan_interface.h>
#define abd__msan_unpoison(p, n) __msan_unpoison(p, n)
#endif
#endif
#ifndef abd__msan_unpoison
#define abd__msan_unpoison(p, n) ((void)(p), (void)(n))
#endif
#include "runtime/internal.h"

/* Our own copies of the io_uring setup/probe layouts, so the probe builds against headers
 * that predate them (Ubuntu 20.04) and without liburing. */
struct abd__uring_params {
	uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features, wq_fd;
	uint32_t resv[3];
	uint8_t offsets[80];
};
_Static_assert(sizeof(struct abd__uring_params) == 120, "io_uring_params layout");

struct abd__uring_probe_op {
	uint8_t op, resv;
	uint16_t flags;
	uint32_t resv2;
};
struct abd__uring_probe {
	uint8_t last_op, ops_len;
	uint16_t resv;
	uint32_t resv2[3];
	struct abd__uring_probe_op ops[256];
};
#define ABD__IO_URING_OP_SUPPORTED 1u
#define ABD__SETUP_COOP_TASKRUN (1u << 8)
#define ABD__SETUP_SINGLE_ISSUER (1u << 12)
#define ABD__SETUP_DEFER_TASKRUN (1u << 13)

static const struct {
	const char *name;
	int uring_op; /* -1: not an io_uring opcode */
} features[ABD_FEAT__COUNT] = {
	[ABD_FEAT_IO_URING] = { "io_uring", -1 },
	[ABD_FEAT_URING_READ] = { "io_uring_read", 22 },
	[ABD_FEAT_URING_POLL_ADD] = { "io_uring_poll_add", 6 },
	[ABD_FEAT_URING_RECVMSG] = { "io_uring_recvmsg", 10 },
	[ABD_FEAT_URING_SENDMSG] = { "io_uring_sendmsg", 9 },
	[ABD_FEAT_URING_ACCEPT] = { "io_uring_accept", 13 },
	[ABD_FEAT_URING_ASYNC_CANCEL] = { "io_uring_async_cancel", 14 },
	[ABD_FEAT_URING_LINK_TIMEOUT] = { "io_uring_link_timeout", 15 },
	[ABD_FEAT_URING_TIMEOUT] = { "io_uring_timeout", 11 },
	[ABD_FEAT_URING_FUTEX_WAIT] = { "io_uring_futex_wait", ABD_IORING_OP_FUTEX_WAIT },
	[ABD_FEAT_URING_FUTEX_WAKE] = { "io_uring_futex_wake", ABD_IORING_OP_FUTEX_WAKE },
	[ABD_FEAT_URING_COOP_TASKRUN] = { "io_uring_coop_taskrun", -1 },
	[ABD_FEAT_URING_SINGLE_ISSUER] = { "io_uring_single_issuer", -1 },
	[ABD_FEAT_URING_DEFER_TASKRUN] = { "io_uring_defer_taskrun", -1 },
	[ABD_FEAT_PIDFD_OPEN] = { "pidfd_open", -1 },
	[ABD_FEAT_PIDFD_GETFD] = { "pidfd_getfd", -1 },
	[ABD_FEAT_SO_PEERPIDFD] = { "so_peerpidfd", -1 },
	[ABD_FEAT_MFD_NOEXEC_SEAL] = { "mfd_noexec_seal", -1 },
	[ABD_FEAT_FUTEX] = { "futex", -1 },
	[ABD_FEAT_EVENTFD] = { "eventfd", -1 },
	[ABD_FEAT_CLOSE_RANGE] = { "close_range", -1 },
	[ABD_FEAT_OPENAT2] = { "openat2", -1 },
	[ABD_FEAT_PIDFD_GET_INFO] = { "pidfd_get_info", -1 },
	[ABD_FEAT_PIDFS_INO] = { "pidfs_ino", -1 },
	[ABD_FEAT_KCMP] = { "kcmp", -1 },
	[ABD_FEAT_PIDFS_HANDLE] = { "pidfs_handle", -1 },
};

static struct {
	pthread_once_t once;
	uint64_t kernel;              /* what the kernel answered yes to */
	int error[ABD_FEAT__COUNT];   /* -errno of each "no" */
	_Atomic uint64_t disabled;    /* the feature mask */
} probe = { .once = PTHREAD_ONCE_INIT };

static void set(enum abd_feature f, int err)
{
	if (err >= 0) {
		probe.kernel |= ABD_FEATURE_BIT(f);
		probe.error[f] = 0;
	} else {
		probe.kernel &= ~ABD_FEATURE_BIT(f);
		probe.error[f] = err;
	}
}

static int uring_setup(uint32_t flags)
{
	struct abd__uring_params p;
	memset(&p, 0, sizeof(p));
	p.flags = flags;
	return abd__sys_ret(syscall(__NR_io_uring_setup, 2, &p));
}

static void probe_io_uring(void)
{
	int fd = uring_setup(0);
	if (fd < 0) {
		for (int f = ABD_FEAT_IO_URING; f <= ABD_FEAT_URING_DEFER_TASKRUN; f++)
			set(f, fd);
		return;
	}
	struct abd__uring_probe *p = calloc(1, sizeof(*p));
	int r = p ? abd__sys_ret(syscall(__NR_io_uring_register, fd, ABD_IORING_REGISTER_PROBE, p,
	                                 256))
	          : -ENOMEM;
	close(fd);
	/* The kernel filled the buffer through a raw syscall MSan cannot see. */
	if (p && r >= 0)
		abd__msan_unpoison(p, sizeof(*p));
	/* A 5.4 kernel has io_uring but no REGISTER_PROBE (EINVAL): too old to rely on. */
	set(ABD_FEAT_IO_URING, r);
	for (int f = ABD_FEAT_IO_URING + 1; f < ABD_FEAT__COUNT; f++) {
		int op = features[f].uring_op;
		if (op < 0)
			continue;
		if (r < 0)
			set(f, r);
		else if (op <= p->last_op && op < p->ops_len &&
		         (p->ops[op].flags & ABD__IO_URING_OP_SUPPORTED))
			set(f, 0);
		else
			set(f, -EOPNOTSUPP);
	}
	free(p);

	static const struct {
		enum abd_feature f;
		uint32_t flags;
	} setup[] = {
		{ ABD_FEAT_URING_COOP_TASKRUN, ABD__SETUP_COOP_TASKRUN },
		{ ABD_FEAT_URING_SINGLE_ISSUER, ABD__SETUP_SINGLE_ISSUER },
		{ ABD_FEAT_URING_DEFER_TASKRUN, ABD__SETUP_SINGLE_ISSUER | ABD__SETUP_DEFER_TASKRUN },
	};
	for (size_t i = 0; i < ABD__ARRAY_SIZE(setup); i++) {
		if (r < 0) {
			set(setup[i].f, r);
			continue;
		}
		/* An unknown setup flag is EINVAL; retrying without it is the caller's job. */
		int s = uring_setup(setup[i].flags);
		set(setup[i].f, s);
		abd__close(s);
	}
}

static void probe_pidfd(void)
{
	int pidfd = abd__pidfd_open(getpid(), 0);
	set(ABD_FEAT_PIDFD_OPEN, pidfd);
	if (pidfd < 0) {
		set(ABD_FEAT_PIDFD_GETFD, pidfd == -ENOSYS ? -ENOSYS : pidfd);
		set(ABD_FEAT_PIDFD_GET_INFO, pidfd);
		set(ABD_FEAT_PIDFS_INO, pidfd);
		set(ABD_FEAT_PIDFS_HANDLE, pidfd);
		return;
	}
	/* From 6.9 a pidfd is a file of pidfs, whose inode number is the process's own, never
	 * reused during the boot; before, every pidfd shares the one anonymous inode. */
	struct statfs sfs;
	set(ABD_FEAT_PIDFS_INO, fstatfs(pidfd, &sfs) < 0             ? -errno
	                        : sfs.f_type == ABD__PIDFS_MAGIC ? 0
	                                                             : -EOPNOTSUPP);
	/* Our own pidfd again, opened by its pidfs inode with no mount descriptor: a new pidfd of
	 * the very same process (one inode, one process for the boot). As root or not: pidfs
	 * checks no capability, only that the process is in our PID namespace hierarchy. */
	int h = -EOPNOTSUPP;
	struct stat st, hst;
	if (probe.kernel & ABD_FEATURE_BIT(ABD_FEAT_PIDFS_INO)) {
		h = fstat(pidfd, &st) < 0 ? -errno : abd__pidfd_by_ino((uint64_t)st.st_ino);
		if (h >= 0) {
			bool same = fstat(h, &hst) == 0 && hst.st_ino == st.st_ino;
			abd__close(h);
			h = same ? 0 : -EOPNOTSUPP;
		}
	}
	set(ABD_FEAT_PIDFS_HANDLE, h);
	/* Before 6.13 a pidfd has no ioctl: ENOTTY (EINVAL on some); acquisition then reads the
	 * uids from /proc/PID/status */
	uid_t u;
	gid_t g;
	set(ABD_FEAT_PIDFD_GET_INFO, abd__pidfd_creds(pidfd, &u, &g));
	/* Taking our own descriptor passes any ptrace check, so EPERM here means a policy
	 * (seccomp, a container profile), not Yama between siblings: that one shows per peer. */
	int fd = abd__pidfd_getfd(pidfd, pidfd, 0);
	set(ABD_FEAT_PIDFD_GETFD, fd);
	abd__close(fd);
	abd__close(pidfd);
}

uint64_t abd__pidfs_ino(pid_t pid)
{
	if (abd_probe_has(ABD_FEAT_PIDFS_INO) != 1)
		return 0;
	abd__autoclose int pidfd = abd__pidfd_open(pid, 0);
	struct stat st;
	if (pidfd < 0 || fstat(pidfd, &st) < 0)
		return 0;
	return (uint64_t)st.st_ino;
}

static void probe_misc(void)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
		int pfd = -1;
		socklen_t len = sizeof(pfd);
		int r = getsockopt(sv[0], SOL_SOCKET, SO_PEERPIDFD, &pfd, &len) < 0 ? -errno : 0;
		set(ABD_FEAT_SO_PEERPIDFD, r);
		if (r == 0)
			abd__close(pfd);
		abd__close(sv[0]);
		abd__close(sv[1]);
	} else {
		set(ABD_FEAT_SO_PEERPIDFD, -errno);
	}

	int m = abd__sys_ret(syscall(SYS_memfd_create, "abd-probe", MFD_CLOEXEC | MFD_NOEXEC_SEAL));
	set(ABD_FEAT_MFD_NOEXEC_SEAL, m);
	abd__close(m);

	uint32_t word = 0;
	set(ABD_FEAT_FUTEX, abd__sys_ret(syscall(SYS_futex, &word, FUTEX_WAKE, 1, NULL, NULL, 0)));

	int e = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	set(ABD_FEAT_EVENTFD, e < 0 ? -errno : 0);
	abd__close(e);

	/* A range past any open descriptor: closes nothing, answers whether the call exists. */
	set(ABD_FEAT_CLOSE_RANGE, abd__close_range(1u << 30, 1u << 30, 0));

	struct {
		uint64_t flags, mode, resolve;
	} how = { O_PATH | O_CLOEXEC, 0, 0x04 /* RESOLVE_NO_SYMLINKS */ };
	int o = abd__sys_ret(syscall(__NR_openat2, AT_FDCWD, "/", &how, sizeof(how)));
	set(ABD_FEAT_OPENAT2, o);
	abd__close(o);

	/* kcmp(2) is optional (CONFIG_KCMP) and container profiles may refuse it: asked on one
	 * of our own descriptors against itself, it must answer "same" (0). */
	int d = eventfd(0, EFD_CLOEXEC);
	long k = d < 0 ? -1 : syscall(SYS_kcmp, getpid(), getpid(), ABD__KCMP_FILE, d, d);
	set(ABD_FEAT_KCMP, d < 0 ? -errno : k < 0 ? -errno : k == 0 ? 0 : -EOPNOTSUPP);
	abd__close(d);
}

static void parse_env_mask(void)
{
	const char *env = getenv("ABD_DISABLE");
	if (!env || !*env)
		return;
	char buf[1024];
	snprintf(buf, sizeof(buf), "%s", env);
	uint64_t mask = 0;
	char *save = NULL;
	for (char *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
		int f = abd_feature_from_name(tok);
		if (f >= 0)
			mask |= ABD_FEATURE_BIT(f);
	}
	atomic_fetch_or(&probe.disabled, mask);
}

static void *probe_io_uring_thread(void *arg)
{
	(void)arg;
	probe_io_uring();
	return NULL;
}

/* Closing an io_uring makes the kernel queue task work with TWA_SIGNAL to each thread that
 * used it, some milliseconds later (io_ring_exit_work): that thread's next interruptible wait
 * (epoll_wait, io_uring_enter, poll) then returns EINTR with no signal at all, which a reactor
 * would report as one. The probe's rings are therefore made and closed by a short-lived
 * thread (all signals blocked), which takes that task work with it. */
static void probe_io_uring_aside(void)
{
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_t t;
	int e = pthread_create(&t, NULL, probe_io_uring_thread, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e == 0)
		pthread_join(t, NULL);
	else
		probe_io_uring();
}

static void run_probe(void)
{
	int saved = errno;
	probe.kernel = 0;
	probe_io_uring_aside();
	probe_pidfd();
	probe_misc();
	parse_env_mask();
	errno = saved;
}

static void ensure_probe(void)
{
	pthread_once(&probe.once, run_probe);
}

ABD_EXPORT uint64_t abd_probe_features(void)
{
	ensure_probe();
	uint64_t mask = probe.kernel & ~atomic_load(&probe.disabled);
	/* Every io_uring feature depends on io_uring itself. */
	if (!(mask & ABD_FEATURE_BIT(ABD_FEAT_IO_URING)))
		for (int f = ABD_FEAT_IO_URING; f <= ABD_FEAT_URING_DEFER_TASKRUN; f++)
			mask &= ~ABD_FEATURE_BIT(f);
	if (!(mask & ABD_FEATURE_BIT(ABD_FEAT_PIDFD_OPEN)))
		mask &= ~(ABD_FEATURE_BIT(ABD_FEAT_PIDFD_GETFD) | ABD_FEATURE_BIT(ABD_FEAT_PIDFD_GET_INFO) |
		          ABD_FEATURE_BIT(ABD_FEAT_PIDFS_INO));
	return mask;
}

ABD_EXPORT int abd_probe_has(enum abd_feature feature)
{
	abd__check((unsigned)feature < ABD_FEAT__COUNT, -EINVAL);
	return !!(abd_probe_features() & ABD_FEATURE_BIT(feature));
}

ABD_EXPORT int abd_probe_error(enum abd_feature feature)
{
	abd__check((unsigned)feature < ABD_FEAT__COUNT, -EINVAL);
	ensure_probe();
	if (probe.error[feature] < 0)
		return probe.error[feature];
	if (abd_probe_features() & ABD_FEATURE_BIT(feature))
		return 0;
	if (feature != ABD_FEAT_IO_URING && feature <= ABD_FEAT_URING_DEFER_TASKRUN &&
	    !(abd_probe_features() & ABD_FEATURE_BIT(ABD_FEAT_IO_URING)))
		return abd_probe_error(ABD_FEAT_IO_URING);
	return -ECANCELED;
}

ABD_EXPORT int abd_features_disable(uint64_t mask)
{
	ensure_probe();
	atomic_fetch_or(&probe.disabled, mask);
	return 0;
}

ABD_EXPORT const char *abd_feature_name(enum abd_feature feature)
{
	return (unsigned)feature < ABD_FEAT__COUNT ? features[feature].name : NULL;
}

ABD_EXPORT int abd_feature_from_name(const char *name)
{
	abd__check(name, -EINVAL);
	for (int f = 0; f < ABD_FEAT__COUNT; f++)
		if (strcmp(name, features[f].name) == 0)
			return f;
	return -EINVAL;
}

static int read_small_int(const char *path, int *out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	char buf[32];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	int err = n < 0 ? -errno : 0;
	close(fd);
	if (err)
		return err;
	buf[n] = 0;
	char *end;
	long v = strtol(buf, &end, 10);
	if (end == buf)
		return -EINVAL;
	*out = (int)v;
	return 0;
}

ABD_EXPORT int abd_probe_ptrace_scope(void)
{
	int v = -1;
	int r = read_small_int("/proc/sys/kernel/yama/ptrace_scope", &v);
	return r < 0 ? -ENOENT : v;
}

ABD_EXPORT int abd_probe_cap_sys_ptrace(void)
{
	FILE *f = fopen("/proc/self/status", "re");
	if (!f)
		return 0;
	char line[256];
	unsigned long long eff = 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "CapEff: %llx", &eff) == 1)
			break;
	fclose(f);
	return (eff >> 19) & 1; /* CAP_SYS_PTRACE */
}

ABD_EXPORT int abd_probe_tmpfile(const char *dir)
{
	abd__check(dir, -EINVAL);
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		return errno == EISDIR ? -EOPNOTSUPP : -errno; /* pre-3.11 kernels say EISDIR */
	close(fd);
	return 0;
}

ABD_EXPORT enum abd_backend abd_choose_backend(void)
{
#if ABD_HAVE_LIBURING
	uint64_t need = ABD_FEATURE_BIT(ABD_FEAT_IO_URING) | ABD_FEATURE_BIT(ABD_FEAT_URING_READ) |
	                ABD_FEATURE_BIT(ABD_FEAT_URING_POLL_ADD) |
	                ABD_FEATURE_BIT(ABD_FEAT_URING_ASYNC_CANCEL) |
	                ABD_FEATURE_BIT(ABD_FEAT_URING_TIMEOUT);
	if ((abd_probe_features() & need) == need)
		return ABD_BACKEND_IO_URING;
#endif
	return ABD_BACKEND_EPOLL;
}

ABD_EXPORT enum abd_fd_transfer abd_choose_fd_transfer(void)
{
	if (!abd_probe_has(ABD_FEAT_PIDFD_GETFD))
		return ABD_FD_TRANSFER_SCM_RIGHTS;
	/* Yama 2 allows only CAP_SYS_PTRACE holders, 3 nobody. Scope 1 is decided per peer
	 * (the publisher may name us with PR_SET_PTRACER); EPERM then falls back per peer. */
	int scope = abd_probe_ptrace_scope();
	if (scope >= 3 || (scope == 2 && !abd_probe_cap_sys_ptrace()))
		return ABD_FD_TRANSFER_SCM_RIGHTS;
	return ABD_FD_TRANSFER_PIDFD_GETFD;
}

ABD_EXPORT enum abd_wake abd_choose_wake(void)
{
	if (abd_choose_backend() == ABD_BACKEND_IO_URING && abd_probe_has(ABD_FEAT_URING_FUTEX_WAIT) &&
	    abd_probe_has(ABD_FEAT_URING_FUTEX_WAKE) && abd_probe_has(ABD_FEAT_FUTEX))
		return ABD_WAKE_IO_URING_FUTEX;
	/* a reactor's futex source is then served by a thread of its own (FUTEX_WAIT); rings have
	 * no eventfd, so ABD_WAKE_EVENTFD is never chosen */
	return ABD_WAKE_FUTEX;
}

ABD_EXPORT const char *abd_backend_name(enum abd_backend backend)
{
	switch (backend) {
	case ABD_BACKEND_IO_URING: return "io_uring";
	case ABD_BACKEND_EPOLL: return "epoll";
	}
	return NULL;
}

ABD_EXPORT const char *abd_fd_transfer_name(enum abd_fd_transfer transfer)
{
	switch (transfer) {
	case ABD_FD_TRANSFER_PIDFD_GETFD: return "pidfd_getfd";
	case ABD_FD_TRANSFER_SCM_RIGHTS: return "scm_rights";
	}
	return NULL;
}

ABD_EXPORT const char *abd_wake_name(enum abd_wake wake)
{
	switch (wake) {
	case ABD_WAKE_IO_URING_FUTEX: return "io_uring_futex";
	case ABD_WAKE_FUTEX: return "futex";
	case ABD_WAKE_EVENTFD: return "eventfd";
	}
	return NULL;
}
