/* SPDX-License-Identifier: MIT */
/* abdctl emulate PROFILE -- CMD: make this kernel answer like another one.
 *
 * A seccomp filter (libseccomp) returns the errors an older or locked-down kernel would give;
 * it is inherited by every child and survives exec. seccomp sees only syscall arguments, not
 * memory behind pointers, so what hides inside an io_uring SQE or io_uring_params is switched
 * off through the library's feature mask (ABD_DISABLE) instead. docs/design.md lists both. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "abdctl.h"
#include "config.h"

#if ABD_HAVE_SECCOMP
#include <seccomp.h>
#endif

struct rule {
	const char *syscall;
	int err;
	/* Optional argument test: arg index, comparison, masked value. */
	int arg;            /* -1: unconditional */
	int op;             /* 0 EQ, 1 NE, 2 MASKED_EQ */
	uint64_t a, b;      /* EQ/NE: a; MASKED_EQ: mask a, value b */
};

#define ALWAYS(name, e) { name, e, -1, 0, 0, 0 }

/* Syscalls Linux 5.4 does not have (5.5 .. 6.x), answered ENOSYS. */
static const struct rule linux54[] = {
	ALWAYS("pidfd_getfd", ENOSYS),     /* 5.6 */
	ALWAYS("openat2", ENOSYS),         /* 5.6 */
	ALWAYS("close_range", ENOSYS),     /* 5.9 */
	ALWAYS("faccessat2", ENOSYS),      /* 5.8 */
	ALWAYS("process_madvise", ENOSYS), /* 5.10 */
	ALWAYS("epoll_pwait2", ENOSYS),    /* 5.11 */
	ALWAYS("mount_setattr", ENOSYS),   /* 5.12 */
	ALWAYS("landlock_create_ruleset", ENOSYS), /* 5.13 */
	ALWAYS("landlock_add_rule", ENOSYS),
	ALWAYS("landlock_restrict_self", ENOSYS),
	ALWAYS("memfd_secret", ENOSYS),    /* 5.14 */
	ALWAYS("process_mrelease", ENOSYS),/* 5.15 */
	ALWAYS("futex_waitv", ENOSYS),     /* 5.16 */
	ALWAYS("set_mempolicy_home_node", ENOSYS), /* 5.17 */
	ALWAYS("cachestat", ENOSYS),       /* 6.5 */
	ALWAYS("fchmodat2", ENOSYS),       /* 6.6 */
	ALWAYS("map_shadow_stack", ENOSYS),/* 6.6 */
	ALWAYS("futex_wake", ENOSYS),      /* 6.7 */
	ALWAYS("futex_wait", ENOSYS),
	ALWAYS("futex_requeue", ENOSYS),
	ALWAYS("statmount", ENOSYS),       /* 6.8 */
	ALWAYS("listmount", ENOSYS),
	ALWAYS("lsm_get_self_attr", ENOSYS),
	ALWAYS("lsm_set_self_attr", ENOSYS),
	ALWAYS("lsm_list_modules", ENOSYS),
	ALWAYS("mseal", ENOSYS),           /* 6.10 */
	/* 5.4 has io_uring but no IORING_REGISTER_PROBE (5.6): the library then treats io_uring
	 * as unusable, as it must on a real 5.4. */
	{ "io_uring_register", EINVAL, 1, 0, 8 /* IORING_REGISTER_PROBE */, 0 },
	/* ioctl(pidfd, PIDFD_GET_INFO) (6.13): a pidfd has no ioctl on 5.4 */
	{ "ioctl", ENOTTY, 1, 0, 0xc040ff0bu /* _IOWR(0xFF, 11, 64 bytes) */, 0 },
	/* pidfd_open flags (PIDFD_NONBLOCK, 5.10) */
	{ "pidfd_open", EINVAL, 1, 1, 0, 0 },
	/* memfd_create: MFD_NOEXEC_SEAL (0x8) and MFD_EXEC (0x10) are 6.3 */
	{ "memfd_create", EINVAL, 1, 2, 0x8, 0x8 },
	{ "memfd_create", EINVAL, 1, 2, 0x10, 0x10 },
	/* SO_PEERPIDFD (77) and SO_PASSPIDFD (76) are 6.5 */
	{ "getsockopt", ENOPROTOOPT, 2, 0, 77, 0 },
	{ "setsockopt", ENOPROTOOPT, 2, 0, 76, 0 },
	/* linkat(AT_EMPTY_PATH) without CAP_DAC_READ_SEARCH (before 6.10: a publisher that is not
	 * root): ENOENT, for every caller here, so that each publication takes the /proc path */
	{ "linkat", ENOENT, 4, 2, 0x1000 /* AT_EMPTY_PATH */, 0x1000 },
};

static const struct rule no_ptrace[] = {
	ALWAYS("pidfd_getfd", EPERM),
};

static const struct rule no_io_uring[] = {
	ALWAYS("io_uring_setup", EPERM),
};

/* What seccomp cannot see: io_uring opcodes (inside SQEs) and setup flags (inside
 * io_uring_params); and that 5.4's pidfds share one anonymous inode (pidfs is 6.9), so no
 * pidfd can be opened by a handle (open_by_handle_at on pidfs: 6.14, FD_PIDFS_ROOT 6.17). On 5.4 the missing REGISTER_PROBE already disables io_uring; the mask
 * says the same so that no code path can reach for these through another door. */
#define LINUX54_MASK                                                                   \
	"io_uring_read,io_uring_accept,io_uring_async_cancel,io_uring_link_timeout,"       \
	"io_uring_futex_wait,io_uring_futex_wake,io_uring_coop_taskrun,"                   \
	"io_uring_single_issuer,io_uring_defer_taskrun,pidfs_ino,pidfs_handle"

static const struct profile {
	const char *name;
	const char *summary;
	const struct rule *rules;
	size_t n;
	const char *mask;
} profiles[] = {
	{ "native", "no change", NULL, 0, NULL },
	{ "linux-5.4", "Ubuntu 20.04's kernel: no pidfd_getfd, io_uring without PROBE, ...",
	  linux54, sizeof(linux54) / sizeof(linux54[0]), LINUX54_MASK },
	{ "no-ptrace", "pidfd_getfd -> EPERM (Yama ptrace_scope=1 between siblings, Docker)",
	  no_ptrace, 1, NULL },
	{ "no-io_uring", "io_uring_setup -> EPERM (kernel.io_uring_disabled, Docker 25+)",
	  no_io_uring, 1, NULL },
};

void abdctl_emulate_help(FILE *out)
{
	fprintf(out, "usage: abdctl emulate PROFILE -- CMD [ARGS...]\n\nprofiles:\n");
	for (size_t i = 0; i < sizeof(profiles) / sizeof(profiles[0]); i++)
		fprintf(out, "  %-12s %s\n", profiles[i].name, profiles[i].summary);
	fprintf(out, "\nThe command and all its children run under the profile; ABD_PROFILE names it.\n");
}

#if ABD_HAVE_SECCOMP
static int install(const struct profile *p)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (!ctx)
		return -ENOMEM;
	/* Root (CAP_SYS_ADMIN) may load a filter without no_new_privs; keeping setuid
	 * binaries working under the profile keeps it closest to the real kernel. */
	if (geteuid() == 0)
		seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
	int r = 0;
	for (size_t i = 0; i < p->n && r == 0; i++) {
		const struct rule *ru = &p->rules[i];
		int nr = seccomp_syscall_resolve_name(ru->syscall);
		if (nr == __NR_SCMP_ERROR)
			continue; /* this libseccomp does not know it: nothing to hide */
		if (ru->arg < 0) {
			r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ru->err), nr, 0);
		} else {
			struct scmp_arg_cmp cmp;
			if (ru->op == 2)
				cmp = (struct scmp_arg_cmp){ (unsigned)ru->arg, SCMP_CMP_MASKED_EQ, ru->a, ru->b };
			else
				cmp = (struct scmp_arg_cmp){ (unsigned)ru->arg,
				                             ru->op == 0 ? SCMP_CMP_EQ : SCMP_CMP_NE, ru->a, 0 };
			r = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(ru->err), nr, 1, &cmp);
		}
	}
	if (r == 0)
		r = seccomp_load(ctx);
	seccomp_release(ctx);
	return r;
}
#endif

int abdctl_emulate(int argc, char **argv)
{
	if (argc < 4 || strcmp(argv[2], "--") != 0) {
		abdctl_emulate_help(stderr);
		return ABDCTL_USAGE;
	}
	const struct profile *p = NULL;
	for (size_t i = 0; i < sizeof(profiles) / sizeof(profiles[0]); i++)
		if (strcmp(argv[1], profiles[i].name) == 0)
			p = &profiles[i];
	if (!p) {
		fprintf(stderr, "abdctl emulate: unknown profile '%s'\n", argv[1]);
		abdctl_emulate_help(stderr);
		return ABDCTL_USAGE;
	}
	if (p->mask) {
		const char *old = getenv("ABD_DISABLE");
		char buf[2048];
		snprintf(buf, sizeof(buf), "%s%s%s", old && *old ? old : "", old && *old ? "," : "",
		         p->mask);
		setenv("ABD_DISABLE", buf, 1);
	}
	setenv("ABD_PROFILE", p->name, 1);
	if (p->n) {
#if ABD_HAVE_SECCOMP
		int r = install(p);
		if (r < 0) {
			fprintf(stderr, "abdctl emulate: cannot load the seccomp filter: %s\n",
			        strerror(-r));
			return ABDCTL_FAIL;
		}
#else
		fprintf(stderr, "abdctl emulate: built without libseccomp; profile '%s' needs it\n",
		        p->name);
		return ABDCTL_FAIL;
#endif
	}
	execvp(argv[3], argv + 3);
	fprintf(stderr, "abdctl emulate: cannot run '%s': %s\n", argv[3], strerror(errno));
	return 127;
}
