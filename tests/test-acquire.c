/* SPDX-License-Identifier: MIT */
/* Descriptor acquisition: both paths and the automatic choice, verification (PID reuse,
 * kinds, nonce), the access policy with real uids, containers (another PID namespace), and a
 * hostile or dying peer on either side of the handshake. Real processes, real kernel. */
#include <dirent.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/vfs.h>

#include "harness.h"
#include "compat/handshake.h"
#include "tests/acquire-util.h"

#define USER_A 1000
#define USER_B 1001
#define GROUP_B 1001
#define TIMEOUT_NS (2ll * 1000000000)

static bool profile_is(const char *name)
{
	return strcmp(abd_test_profile(), name) == 0;
}

/* The path the automatic choice must take between two root processes in this profile. */
static enum abd_fd_transfer expected_auto_path(void)
{
	return abd_probe_has(ABD_FEAT_PIDFD_GETFD) == 1 ? ABD_FD_TRANSFER_PIDFD_GETFD
	                                                 : ABD_FD_TRANSFER_SCM_RIGHTS;
}

static void require_root(void)
{
	if (geteuid() != 0)
		cr_skip_test("needs root (setresuid to other users, unshare)");
}

static void start(struct tpub *t)
{
	int r = tpub_start(t, abd_test_fork);
	cr_assert_eq(r, 0, "publisher failed to start: %d", r);
}

static void shared_dir(char *dir, size_t size)
{
	abd_test_mkdtemp(dir, size);
	cr_assert_eq(chmod(dir, 01777), 0);
}

/* ---------------------------------------------------------------- consumer children -- */

struct consumer {
	const char *dir, *service;
	uid_t uid;
	gid_t gid;
	unsigned flags;
	int64_t timeout_ns;
	int out_w;
	bool new_pidns; /* acquire from a child in a new PID namespace */
	bool no_get_info; /* PIDFD_GET_INFO denied by seccomp (EPERM): any call of it fails */
	bool mask_get_info; /* ... and switched off in the probe (ABD_FEATURE_BIT) */
};

/* ---------------------------------------------------------------- seccomp -- */

#if defined(__x86_64__)
#define TEST_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define TEST_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

struct arg_rule {
	uint64_t value;
	int err;
};

/* A filter for this process: syscall nr whose argument `key_arg` equals key (key_arg < 0: any
 * call of nr) answers, by the value of argument `arg`, the errno of the matching rule, else
 * other_err (0: let it through). Everything else passes. -EOPNOTSUPP on an architecture this
 * test does not know, else 0 or -errno. */
static int deny_by_arg(long nr, int key_arg, uint64_t key, int arg, const struct arg_rule *rules,
                       unsigned n, int other_err)
{
#ifdef TEST_AUDIT_ARCH
	struct sock_filter f[64];
	unsigned k = 0;
#define LD(off) f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (off))
#define JEQ(v, t, e) f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (v), (t), (e))
#define RET(v) f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, (v))
#define ARG_LO(i) (uint32_t)(offsetof(struct seccomp_data, args) + 8 * (i))
#define ARG_HI(i) (ARG_LO(i) + 4) /* little-endian */
	/* the last instruction is "allow"; jumps to it are computed once k is known */
	unsigned to_allow[8], nallow = 0;
	LD(offsetof(struct seccomp_data, arch));
	to_allow[nallow++] = k;
	JEQ(TEST_AUDIT_ARCH, 0, 0);
	LD(offsetof(struct seccomp_data, nr));
	to_allow[nallow++] = k;
	JEQ((uint32_t)nr, 0, 0);
	if (key_arg >= 0) {
		LD(ARG_LO(key_arg));
		to_allow[nallow++] = k;
		JEQ((uint32_t)key, 0, 0);
		LD(ARG_HI(key_arg));
		to_allow[nallow++] = k;
		JEQ((uint32_t)(key >> 32), 0, 0);
	}
	for (unsigned i = 0; i < n; i++) {
		LD(ARG_LO(arg));
		JEQ((uint32_t)rules[i].value, 0, 3);
		LD(ARG_HI(arg));
		JEQ((uint32_t)(rules[i].value >> 32), 0, 1);
		RET(SECCOMP_RET_ERRNO | (uint32_t)rules[i].err);
	}
	RET(other_err ? SECCOMP_RET_ERRNO | (uint32_t)other_err : SECCOMP_RET_ALLOW);
	RET(SECCOMP_RET_ALLOW);
	for (unsigned i = 0; i < nallow; i++)
		f[to_allow[i]].jf = (uint8_t)(k - 1 - to_allow[i] - 1);
#undef LD
#undef JEQ
#undef RET
#undef ARG_LO
#undef ARG_HI
	struct sock_fprog prog = { .len = (unsigned short)k, .filter = f };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
		return -errno;
	return 0;
#else
	(void)nr, (void)key_arg, (void)key, (void)arg, (void)rules, (void)n, (void)other_err;
	return -EOPNOTSUPP;
#endif
}

#define PIDFD_GET_INFO_REQUEST 0xc040ff0bu /* _IOWR(0xFF, 11, struct pidfd_info v0) */

static int consume_here(struct consumer *c)
{
	struct tresult res = { 0 };
	struct abd_acquired *a = NULL;
	res.r = tpub_acquire(c->dir, c->service, c->flags, c->timeout_ns, &a);
	if (res.r == 0) {
		res.path = abd_acquired_path(a);
		res.fallback = abd_acquired_fallback(a);
		abd_acquired_peer(a, &res.pid, &res.uid, &res.gid);
		res.fds_ok = tpub_check_fds(a);
		abd_acquired_free(a);
	}
	return write(c->out_w, &res, sizeof(res)) == (ssize_t)sizeof(res) ? 0 : 1;
}

static int consumer_main(void *arg)
{
	struct consumer *c = arg;
	if (c->uid && tpub_drop_to(c->uid, c->gid) < 0)
		return 2;
	if (c->no_get_info) {
		struct arg_rule r = { PIDFD_GET_INFO_REQUEST, EPERM };
		if (deny_by_arg(SYS_ioctl, -1, 0, 1, &r, 1, 0) < 0)
			return 6;
	}
	if (c->mask_get_info)
		abd_features_disable(ABD_FEATURE_BIT(ABD_FEAT_PIDFD_GET_INFO));
	if (!c->new_pidns)
		return consume_here(c);
	if (unshare(CLONE_NEWPID) < 0)
		return 3;
	pid_t pid = fork();
	if (pid < 0)
		return 4;
	if (pid == 0)
		_exit(consume_here(c));
	int st;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 5;
}

static struct tresult run_consumer(struct consumer c)
{
	int p[2];
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	c.out_w = p[1];
	if (!c.timeout_ns)
		c.timeout_ns = TIMEOUT_NS;
	pid_t pid = abd_test_fork(consumer_main, &c);
	close(p[1]);
	struct tresult res;
	ssize_t n = read(p[0], &res, sizeof(res));
	close(p[0]);
	int st = abd_test_wait(pid);
	cr_assert_eq(st, 0, "consumer child exited %d", st);
	cr_assert_eq(n, (ssize_t)sizeof(res));
	return res;
}

/* ---------------------------------------------------------------- the paths -- */

ABD_TEST(acquire, auto_choice_follows_the_profile)
{
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "auto.svc");
	start(&t);
	struct abd_acquired *a;
	int r = tpub_acquire(dir, "auto.svc", 0, TIMEOUT_NS, &a);
	cr_assert_eq(r, 0, "abd_acquire: %s", strerror(-r));
	cr_assert_eq(abd_acquired_path(a), expected_auto_path(), "profile %s used %s",
	             abd_test_profile(), abd_fd_transfer_name(abd_acquired_path(a)));
	if (profile_is("no-ptrace") || profile_is("linux-5.4")) {
		cr_assert_eq(abd_acquired_path(a), ABD_FD_TRANSFER_SCM_RIGHTS);
		cr_assert_lt(abd_acquired_fallback(a), 0);
	} else {
		cr_assert_eq(abd_acquired_fallback(a), 0);
	}
	pid_t pid;
	uid_t uid;
	abd_acquired_peer(a, &pid, &uid, NULL);
	cr_assert_eq(pid, t.pid);
	cr_assert_eq(uid, geteuid());
	cr_assert(tpub_check_fds(a), "memfd maps with its header, eventfd counts");
	cr_assert_eq(abd_acquired_count(a), 2);
	enum abd_fd_kind kind;
	uint64_t size;
	const char *slot;
	cr_assert_eq(abd_acquired_fd_at(a, 0, &slot, NULL, &kind, &size), 0);
	cr_assert_str_eq(slot, "ring");
	cr_assert_eq(kind, ABD_FD_MEMFD);
	struct stat st;
	cr_assert_eq(fstat(abd_acquired_fd(a, "ring"), &st), 0);
	cr_assert_eq(size, (uint64_t)st.st_size);
	cr_assert_eq(abd_acquired_fd_at(a, 2, NULL, NULL, NULL, NULL), -ERANGE);
	/* taking a descriptor moves it to the caller */
	int fd = abd_acquired_take_fd(a, "wake");
	cr_assert_geq(fd, 0);
	cr_assert_eq(abd_acquired_take_fd(a, "wake"), -EBADF);
	cr_assert_eq(abd_acquired_fd(a, "nope"), -ENOENT);
	cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	close(fd);
	abd_acquired_free(a);
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
}

ABD_TEST(acquire, forced_handshake_works_everywhere)
{
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "hs.svc");
	start(&t);
	struct abd_acquired *a;
	int r = tpub_acquire(dir, "hs.svc", ABD_ACQUIRE_SCM_RIGHTS, TIMEOUT_NS, &a);
	cr_assert_eq(r, 0, "abd_acquire: %s", strerror(-r));
	cr_assert_eq(abd_acquired_path(a), ABD_FD_TRANSFER_SCM_RIGHTS);
	cr_assert_eq(abd_acquired_fallback(a), 0);
	pid_t pid;
	abd_acquired_peer(a, &pid, NULL, NULL);
	cr_assert_eq(pid, t.pid, "SO_PEERCRED names the publisher");
	cr_assert(tpub_check_fds(a));
	int fd;
	abd_acquired_fd_at(a, 1, NULL, &fd, NULL, NULL);
	cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC, "MSG_CMSG_CLOEXEC");
	abd_acquired_free(a);
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
}

ABD_TEST(acquire, forced_pidfd_getfd)
{
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "pg.svc");
	start(&t);
	struct abd_acquired *a = NULL;
	int r = tpub_acquire(dir, "pg.svc", ABD_ACQUIRE_PIDFD_GETFD, TIMEOUT_NS, &a);
	if (profile_is("linux-5.4")) {
		cr_assert_eq(r, -ENOSYS, "5.4 has no pidfd_getfd: %d", r);
	} else if (profile_is("no-ptrace")) {
		cr_assert_eq(r, -EPERM, "%d", r);
	} else {
		cr_assert_eq(r, 0, "abd_acquire: %s", strerror(-r));
		cr_assert_eq(abd_acquired_path(a), ABD_FD_TRANSFER_PIDFD_GETFD);
		cr_assert(tpub_check_fds(a));
		cr_assert(fcntl(abd_acquired_fd(a, "ring"), F_GETFD) & FD_CLOEXEC);
	}
	abd_acquired_free(a);
	/* the automatic choice still works after a forced failure (ENOSYS remembered) */
	r = tpub_acquire(dir, "pg.svc", 0, TIMEOUT_NS, &a);
	cr_assert_eq(r, 0);
	abd_acquired_free(a);
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
}

ABD_TEST(acquire, bad_arguments)
{
	struct abd_acquired *a = (void *)1;
	cr_assert_eq(abd_acquire(NULL, NULL, 0, 0, &a), -EINVAL);
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct abd_registry *reg;
	cr_assert_eq(abd_registry_open(dir, 0, &reg, NULL, 0), 0);
	struct abd_record *rec;
	cr_assert_eq(abd_record_new("x", &rec), 0);
	cr_assert_eq(abd_acquire(reg, rec, ABD_ACQUIRE_PIDFD_GETFD | ABD_ACQUIRE_SCM_RIGHTS, 0, &a),
	             -EINVAL);
	cr_assert_eq(abd_acquire(reg, rec, 1u << 7, 0, &a), -EINVAL);
	cr_assert_eq(abd_acquire(reg, rec, ABD_ACQUIRE_SCM_RIGHTS, 0, &a), -ENOTCONN);
	cr_assert_null(a);
	cr_assert_eq(abd_acquire_server_new(NULL, 0, NULL), -EINVAL);
	struct abd_acquire_server *srv;
	cr_assert_eq(abd_acquire_server_new(reg, 1, &srv), -EINVAL);
	cr_assert_eq(abd_acquire_server_process(NULL), -EINVAL);
	cr_assert_eq(abd_acquire_server_deadline(NULL), -1);
	cr_assert_eq(abd_acquire_set_ptracer(-2), -EINVAL);
	abd_acquire_server_free(NULL);
	abd_acquired_free(NULL);
	cr_assert_eq(abd_acquired_path(NULL), 0);
	cr_assert_str_eq(abd_fd_kind_name(ABD_FD_EVENTFD), "eventfd");
	abd_record_free(rec);
	abd_registry_free(reg);
	abd_test_rmtree(dir);
}

/* ---------------------------------------------------------------- verification -- */

static int acquire_variant(enum tpub_variant v, unsigned flags)
{
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "bad.svc");
	t.variant = v;
	start(&t);
	struct abd_acquired *a = NULL;
	int r = tpub_acquire(dir, "bad.svc", flags, TIMEOUT_NS, &a);
	abd_acquired_free(a);
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
	return r;
}

ABD_TEST(acquire, nonce_mismatch_is_estale_on_both_paths)
{
	cr_assert_eq(acquire_variant(TPUB_WRONG_NONCE, ABD_ACQUIRE_SCM_RIGHTS), -ESTALE);
	cr_assert_eq(acquire_variant(TPUB_WRONG_NONCE, 0), -ESTALE);
}

ABD_TEST(acquire, unsealed_memfd_is_eproto)
{
	cr_assert_eq(acquire_variant(TPUB_UNSEALED, ABD_ACQUIRE_SCM_RIGHTS), -EPROTO);
	cr_assert_eq(acquire_variant(TPUB_UNSEALED, 0), -EPROTO);
}

ABD_TEST(acquire, wrong_kind_is_eproto)
{
	cr_assert_eq(acquire_variant(TPUB_WRONG_KIND, ABD_ACQUIRE_SCM_RIGHTS), -EPROTO);
	cr_assert_eq(acquire_variant(TPUB_WRONG_KIND, 0), -EPROTO);
}

ABD_TEST(acquire, no_socket_is_enotconn_for_the_handshake)
{
	int r = acquire_variant(TPUB_NO_SOCKET, 0);
	/* the automatic choice only needs the socket where pidfd_getfd is unavailable */
	cr_assert_eq(r, expected_auto_path() == ABD_FD_TRANSFER_PIDFD_GETFD ? 0 : -ENOTCONN);
	cr_assert_eq(acquire_variant(TPUB_NO_SOCKET, ABD_ACQUIRE_SCM_RIGHTS), -ENOTCONN);
}

ABD_TEST(acquire, dead_publisher_is_esrch_on_both_paths)
{
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "dead.svc");
	start(&t);
	struct abd_registry *reg;
	cr_assert_eq(abd_registry_open(dir, 0, &reg, NULL, 0), 0);
	struct abd_record *rec;
	cr_assert_eq(abd_registry_lookup(reg, "dead.svc", &rec), 0);
	tpub_kill(&t); /* the record stays, stale; its pid may be reused */
	struct abd_acquired *a = NULL;
	cr_assert_eq(abd_acquire(reg, rec, 0, TIMEOUT_NS, &a), -ESRCH);
	cr_assert_eq(abd_acquire(reg, rec, ABD_ACQUIRE_SCM_RIGHTS, TIMEOUT_NS, &a), -ESRCH);
	if (abd_probe_has(ABD_FEAT_PIDFD_GETFD) == 1)
		cr_assert_eq(abd_acquire(reg, rec, ABD_ACQUIRE_PIDFD_GETFD, TIMEOUT_NS, &a), -ESRCH);
	cr_assert_null(a);
	abd_record_free(rec);
	abd_registry_free(reg);
	abd_test_rmtree(dir);
}

/* A socket file at dir/name whose socket is already closed (nobody listens). */
static void dead_socket_at(const char *dir, const char *name)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir, name);
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	cr_assert_geq(s, 0);
	cr_assert_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
	close(s);
}

static bool exists_at(const char *dir, const char *name)
{
	struct stat st;
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return lstat(path, &st) == 0;
}

ABD_TEST(acquire, gc_removes_dead_publishers_sockets_only)
{
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct tpub dead, live;
	tpub_init(&dead, dir, "gc.dead");
	tpub_init(&live, dir, "gc.live");
	start(&dead);
	start(&live);
	struct abd_registry *reg;
	cr_assert_eq(abd_registry_open(dir, 0, &reg, NULL, 0), 0);
	struct abd_record *drec, *lrec;
	cr_assert_eq(abd_registry_lookup(reg, "gc.dead", &drec), 0);
	cr_assert_eq(abd_registry_lookup(reg, "gc.live", &lrec), 0);
	char dsock[64], lsock[64];
	snprintf(dsock, sizeof(dsock), "%s", abd_record_socket(drec));
	snprintf(lsock, sizeof(lsock), "%s", abd_record_socket(lrec));
	cr_assert(exists_at(dir, dsock) && exists_at(dir, lsock));

	/* A server no record names yet (a publisher between creating it and publishing): it
	 * listens, so it stays. */
	struct abd_acquire_server *srv;
	cr_assert_eq(abd_acquire_server_new(reg, 0, &srv), 0);
	/* Named like ours: a closed socket (its owner freed it without unlinking) goes; one
	 * still being set up (".tmp", changed just now) and a non-socket stay. */
	const char *closed = ".abd-0123456789abcdef0123456789abcdef.sock";
	const char *setting_up = ".abd-00000000000000000000000000000000.tmp";
	const char *not_socket = ".abd-ffffffffffffffffffffffffffffffff.sock";
	dead_socket_at(dir, closed);
	dead_socket_at(dir, setting_up);
	int fd = openat(abd_registry_fd(reg), not_socket, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	close(fd);

	tpub_kill(&dead); /* kill -9: its record is stale and its socket file stays behind */
	cr_assert(exists_at(dir, dsock));
	unsigned failed = 1;
	cr_assert_eq(abd_registry_gc(reg, &failed), 1, "only the dead publisher's record");
	cr_assert_eq(failed, 0);
	cr_assert_not(exists_at(dir, dsock), "the dead publisher's socket is removed");
	cr_assert_not(exists_at(dir, closed));
	cr_assert(exists_at(dir, lsock), "a live publisher's socket stays");
	cr_assert(exists_at(dir, abd_acquire_server_socket(srv)), "a listening socket stays");
	cr_assert(exists_at(dir, setting_up));
	cr_assert(exists_at(dir, not_socket));
	cr_assert_eq(abd_registry_gc_sockets(reg, NULL), 0);

	/* The live publisher still serves the handshake after GC connected to nothing of it. */
	struct abd_acquired *a = NULL;
	cr_assert_eq(abd_acquire(reg, lrec, ABD_ACQUIRE_SCM_RIGHTS, TIMEOUT_NS, &a), 0);
	cr_assert(tpub_check_fds(a));
	abd_acquired_free(a);

	abd_acquire_server_free(srv);
	cr_assert_eq(tpub_stop(&live), 0);
	cr_assert_not(exists_at(dir, lsock), "a publisher that stops unlinks its own socket");
	cr_assert_eq(abd_registry_gc_sockets(reg, NULL), 0);
	abd_record_free(drec);
	abd_record_free(lrec);
	abd_registry_free(reg);
	abd_test_rmtree(dir);
}

/* Set a file's mtime (and atime) to `age` seconds ago. */
static void age_at(const char *dir, const char *name, int age)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	struct timespec ts[2] = { { now.tv_sec - age, 0 }, { now.tv_sec - age, 0 } };
	cr_assert_eq(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0, "%s", strerror(errno));
}

ABD_TEST(acquire, gc_removes_a_tmp_socket_only_after_60_s)
{
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct abd_registry *reg;
	cr_assert_eq(abd_registry_open(dir, 0, &reg, NULL, 0), 0);
	/* a publisher killed between bind and rename, long ago: nobody listens, old */
	const char *stale = ".abd-11111111111111111111111111111111.tmp";
	/* the same, but within the grace period: it may be a publisher setting up right now */
	const char *young = ".abd-22222222222222222222222222222222.tmp";
	/* old but listening (a publisher stopped between listen and rename): it accepts */
	const char *listening = ".abd-33333333333333333333333333333333.tmp";
	dead_socket_at(dir, stale);
	dead_socket_at(dir, young);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir, listening);
	int l = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	cr_assert_geq(l, 0);
	cr_assert_eq(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(listen(l, 8), 0);
	age_at(dir, stale, 61 + 5);
	age_at(dir, young, 60 - 5);
	age_at(dir, listening, 61 + 5);
	unsigned failed = 1;
	cr_assert_eq(abd_registry_gc_sockets(reg, &failed), 1, "only the stale .tmp");
	cr_assert_eq(failed, 0);
	cr_assert_not(exists_at(dir, stale), "older than 60 s and refusing: removed");
	cr_assert(exists_at(dir, young), "refusing but younger than 60 s: kept");
	cr_assert(exists_at(dir, listening), "older than 60 s but listening: kept");
	/* once it ages past the grace period, the young one goes too */
	age_at(dir, young, 61 + 5);
	cr_assert_eq(abd_registry_gc_sockets(reg, &failed), 1);
	cr_assert_not(exists_at(dir, young));
	cr_assert(exists_at(dir, listening));
	close(l);
	abd_registry_free(reg);
	abd_test_rmtree(dir);
}

static int linger(void *arg)
{
	(void)arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0); /* a failed assertion leaves none behind */
	pause();
	return 0;
}

uint32_t abd__crc32c(const void *data, size_t len); /* runtime/record.c */

ABD_TEST(acquire, reused_pid_is_not_the_publisher)
{
	/* What PID reuse looks like: a record whose lock is held, whose pid now names another
	 * live process of the same uid. Forged from the real record (pid at offset 32 of the
	 * record format, crc32c in the last 4 bytes: docs/registry.md). */
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "reuse.svc");
	start(&t);
	struct abd_registry *reg;
	cr_assert_eq(abd_registry_open(dir, 0, &reg, NULL, 0), 0);
	struct abd_record *rec;
	cr_assert_eq(abd_registry_lookup(reg, "reuse.svc", &rec), 0);
	/* start times count clock ticks (10 ms): a process forked within the same tick as the
	 * publisher would share it, which a real reused pid (after a full pid wrap) never does */
	struct timespec tick = { 0, 30 * 1000000 };
	nanosleep(&tick, NULL);
	pid_t other = abd_test_fork(linger, NULL);
	static uint8_t buf[ABD_RECORD_MAX];
	long len = abd_record_encode(rec, buf, sizeof(buf));
	cr_assert_gt(len, 36);
	uint32_t pid = (uint32_t)other, crc;
	memcpy(buf + 32, &pid, 4);
	crc = abd__crc32c(buf, (size_t)len - 4);
	memcpy(buf + len - 4, &crc, 4);
	struct abd_record *forged = NULL;
	const char *why = NULL;
	cr_assert_eq(abd_record_decode(buf, (size_t)len, &forged, &why), 0, "%s", why);
	cr_assert_eq(abd_record_pid(forged), other);
	struct abd_acquired *a = NULL;
	/* the pidfd path sees another start time; the handshake another SO_PEERCRED pid */
	cr_assert_eq(abd_acquire(reg, forged, 0, TIMEOUT_NS, &a), -ESTALE);
	cr_assert_eq(abd_acquire(reg, forged, ABD_ACQUIRE_SCM_RIGHTS, TIMEOUT_NS, &a), -ESTALE);
	if (abd_probe_has(ABD_FEAT_PIDFD_GETFD) == 1)
		cr_assert_eq(abd_acquire(reg, forged, ABD_ACQUIRE_PIDFD_GETFD, TIMEOUT_NS, &a), -ESTALE);
	cr_assert_null(a);
	kill(other, SIGKILL);
	abd_test_wait(other);
	abd_record_free(forged);
	abd_record_free(rec);
	abd_registry_free(reg);
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
}

/* ---------------------------------------------------------------- pidfs inode -- */

/* rec's bytes (a 1.1 record: the pidfs inode at offset 96) with the pid (offset 32) set when
 * pid > 0, the start time (offset 40) set when start, the inode xor'ed with ino_xor, and, when
 * strip, made a 1.0 record (no inode: header 96, minor 0); checksum fixed (docs/registry.md). */
static struct abd_record *forge(const struct abd_record *rec, pid_t pid, uint64_t start,
                                uint64_t ino_xor, bool strip)
{
	static uint8_t buf[ABD_RECORD_MAX];
	long len = abd_record_encode(rec, buf, sizeof(buf));
	cr_assert_gt(len, 104);
	cr_assert_eq(buf[6], 1, "a record with a pidfs inode is 1.1");
	uint64_t v;
	if (pid > 0)
		memcpy(buf + 32, &(uint32_t){ (uint32_t)pid }, 4);
	if (start)
		memcpy(buf + 40, &start, 8);
	memcpy(&v, buf + 96, 8);
	v ^= ino_xor;
	memcpy(buf + 96, &v, 8);
	if (strip) {
		memmove(buf + 96, buf + 104, (size_t)len - 104);
		len -= 8;
		buf[6] = 0;
		memcpy(buf + 8, &(uint32_t){ (uint32_t)len }, 4);
		memcpy(buf + 12, &(uint16_t){ 96 }, 2);
	}
	uint32_t crc = abd__crc32c(buf, (size_t)len - 4);
	memcpy(buf + len - 4, &crc, 4);
	struct abd_record *out = NULL;
	const char *why = NULL;
	cr_assert_eq(abd_record_decode(buf, (size_t)len, &out, &why), 0, "%s", why);
	return out;
}

/* A first acquisition: through a fresh registry handle (no pidfd of the publisher kept). */
static int first_acquire(const char *dir, const struct abd_record *rec, unsigned flags)
{
	struct abd_registry *reg;
	cr_assert_eq(abd_registry_open(dir, 0, &reg, NULL, 0), 0);
	struct abd_acquired *a = NULL;
	int r = abd_acquire(reg, rec, flags, TIMEOUT_NS, &a);
	cr_assert((r == 0) == (a != NULL));
	abd_acquired_free(a);
	abd_registry_free(reg);
	return r;
}

/* /proc/PID/stat from field k on (k >= 3: the fields after the command's last ')'), in buf */
static const char *proc_stat_from(pid_t pid, int k, char *buf, size_t size)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	ssize_t n = read(fd, buf, size - 1);
	close(fd);
	cr_assert_gt(n, 0);
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	cr_assert_not_null(p);
	p++; /* the space before field 3; the next space is the one before field 4, ... */
	for (int f = 3; f < k; f++)
		cr_assert_not_null(p = strchr(p + 1, ' '));
	return p + 1;
}

static uint64_t proc_start(pid_t pid)
{
	char buf[1024];
	return strtoull(proc_stat_from(pid, 22, buf, sizeof(buf)), NULL, 10);
}

ABD_TEST(acquire, pidfs_ino_follows_the_profile_and_the_mask)
{
	int has = abd_probe_has(ABD_FEAT_PIDFS_INO);
	if (profile_is("linux-5.4")) {
		cr_assert_eq(has, 0, "5.4's pidfds share one anonymous inode");
	} else {
		int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
		cr_assert_geq(pidfd, 0);
		struct statfs sfs;
		cr_assert_eq(fstatfs(pidfd, &sfs), 0);
		close(pidfd);
		cr_assert_eq(has, sfs.f_type == 0x50494446 /* PID_FS_MAGIC */);
	}
	abd_features_disable(ABD_FEATURE_BIT(ABD_FEAT_PIDFS_INO));
	cr_assert_eq(abd_probe_has(ABD_FEAT_PIDFS_INO), 0);
}

ABD_TEST(acquire, record_carries_the_publishers_pidfs_ino)
{
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "ino.svc");
	start(&t);
	struct abd_registry *reg;
	cr_assert_eq(abd_registry_open(dir, 0, &reg, NULL, 0), 0);
	struct abd_record *rec;
	cr_assert_eq(abd_registry_lookup(reg, "ino.svc", &rec), 0);
	uint8_t buf[ABD_RECORD_MAX];
	cr_assert_gt(abd_record_encode(rec, buf, sizeof(buf)), 0);
	if (abd_probe_has(ABD_FEAT_PIDFS_INO) == 1) {
		int pidfd = (int)syscall(SYS_pidfd_open, t.pid, 0);
		struct stat st;
		cr_assert_geq(pidfd, 0);
		cr_assert_eq(fstat(pidfd, &st), 0);
		close(pidfd);
		cr_assert_eq(abd_record_pidfs_ino(rec), (uint64_t)st.st_ino);
		cr_assert_neq(abd_record_pidfs_ino(rec), 0);
		cr_assert_eq(buf[6], 1, "written as 1.1");
	} else {
		/* linux-5.4 (the publisher inherits the profile's mask): a 1.0 record */
		cr_assert_eq(abd_record_pidfs_ino(rec), 0);
		cr_assert_eq(buf[6], 0, "written as 1.0");
	}
	abd_record_free(rec);
	abd_registry_free(reg);
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
}

ABD_TEST(acquire, pidfs_ino_catches_a_reused_pid_the_start_time_cannot)
{
	/* A pid reused by a process that even has the record's start time (two processes started
	 * within one clock tick): /proc/PID/stat cannot tell them apart, the pidfs inode can. */
	abd_test_require(ABD_FEAT_PIDFD_GETFD);
	abd_test_require(ABD_FEAT_PIDFS_INO);
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "tick.svc");
	start(&t);
	struct abd_registry *reg;
	cr_assert_eq(abd_registry_open(dir, 0, &reg, NULL, 0), 0);
	struct abd_record *rec;
	cr_assert_eq(abd_registry_lookup(reg, "tick.svc", &rec), 0);
	pid_t other = abd_test_fork(linger, NULL);
	struct abd_record *forged = forge(rec, other, proc_start(other), 0, false);
	/* the record's lock is held (the publisher lives): the record lies, -ESTALE; a failed
	 * verification never falls back to the handshake */
	cr_assert_eq(first_acquire(dir, forged, ABD_ACQUIRE_PIDFD_GETFD), -ESTALE);
	cr_assert_eq(first_acquire(dir, forged, 0), -ESTALE);
	cr_assert_eq(first_acquire(dir, rec, ABD_ACQUIRE_PIDFD_GETFD), 0, "control");
	/* a handle that keeps the publisher's verified pidfd does not take it for a record with
	 * the same pid and start time but another inode */
	struct abd_acquired *a = NULL;
	cr_assert_eq(abd_acquire(reg, rec, ABD_ACQUIRE_PIDFD_GETFD, TIMEOUT_NS, &a), 0);
	abd_acquired_free(a);
	struct abd_record *other_ino = forge(rec, 0, 0, 1, false);
	cr_assert_eq(abd_acquire(reg, other_ino, ABD_ACQUIRE_PIDFD_GETFD, TIMEOUT_NS, &a), -ESTALE);
	cr_assert_eq(abd_acquire(reg, rec, ABD_ACQUIRE_PIDFD_GETFD, TIMEOUT_NS, &a), 0, "again");
	abd_acquired_free(a);
	abd_record_free(other_ino);
	/* the publisher dies, its pid lives on in another process: -ESRCH */
	tpub_kill(&t);
	cr_assert_eq(first_acquire(dir, forged, ABD_ACQUIRE_PIDFD_GETFD), -ESRCH);
	kill(other, SIGKILL);
	abd_test_wait(other);
	abd_record_free(forged);
	abd_record_free(rec);
	abd_registry_free(reg);
	abd_test_rmtree(dir);
}

ABD_TEST(acquire, first_acquisition_proves_identity_by_pidfs_ino_else_start_time)
{
	/* A record whose start time is off is still the publisher's by its pidfs inode; a 1.0
	 * record (no inode: an older writer) or a consumer without the feature checks the start
	 * time in /proc/PID/stat instead, and refuses it. */
	abd_test_require(ABD_FEAT_PIDFD_GETFD);
	abd_test_require(ABD_FEAT_PIDFS_INO);
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "first.svc");
	start(&t);
	struct abd_registry *reg;
	cr_assert_eq(abd_registry_open(dir, 0, &reg, NULL, 0), 0);
	struct abd_record *rec;
	cr_assert_eq(abd_registry_lookup(reg, "first.svc", &rec), 0);
	uint64_t off = abd_record_start_time(rec) + 1;
	struct abd_record *moved = forge(rec, 0, off, 0, false);
	struct abd_record *old = forge(rec, 0, 0, 0, true);
	struct abd_record *old_moved = forge(rec, 0, off, 0, true);
	cr_assert_eq(abd_record_pidfs_ino(old), 0);
	cr_assert_eq(first_acquire(dir, moved, ABD_ACQUIRE_PIDFD_GETFD), 0);
	cr_assert_eq(first_acquire(dir, old, ABD_ACQUIRE_PIDFD_GETFD), 0, "1.0 records still work");
	cr_assert_eq(first_acquire(dir, old_moved, ABD_ACQUIRE_PIDFD_GETFD), -ESTALE);
	abd_features_disable(ABD_FEATURE_BIT(ABD_FEAT_PIDFS_INO));
	cr_assert_eq(first_acquire(dir, moved, ABD_ACQUIRE_PIDFD_GETFD), -ESTALE);
	cr_assert_eq(first_acquire(dir, rec, ABD_ACQUIRE_PIDFD_GETFD), 0);
	abd_record_free(old_moved);
	abd_record_free(old);
	abd_record_free(moved);
	abd_record_free(rec);
	abd_registry_free(reg);
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
}

/* ---------------------------------------------------------------- repeat: eventfd by kcmp -- */

struct self_pub {
	const char *dir;
	bool mask_kcmp;
};

/* A process that publishes its own ring and acquires it again and again through one handle
 * (pidfd_getfd of its own descriptors): returns 0 when every step answered as expected, else
 * the number of the step that did not. */
static int kcmp_steps(void *arg)
{
	const struct self_pub *p = arg;
	if (p->mask_kcmp)
		abd_features_disable(ABD_FEATURE_BIT(ABD_FEAT_KCMP));
	uint8_t nonce[16];
	struct abd_registry *reg;
	struct abd_ring *ring;
	struct abd_record *rec, *found;
	struct abd_publication *pub;
	int wake = eventfd(0, EFD_CLOEXEC); /* an eventfd slot beside the ring */
	if (wake < 0 || getrandom(nonce, sizeof(nonce), 0) != 16 ||
	    abd_registry_open(p->dir, 0, &reg, NULL, 0) ||
	    abd_ring_new(64, 64, 0, nonce, &ring) ||
	    abd_record_new("self.svc", &rec) || abd_record_set_instance(rec, nonce) ||
	    abd_record_add_fd(rec, "ring", abd_ring_fd(ring), ABD_FD_MEMFD) ||
	    abd_record_add_fd(rec, "wake", wake, ABD_FD_EVENTFD) ||
	    abd_publish(reg, rec, &pub) || abd_registry_lookup(reg, "self.svc", &found))
		return 1;
	struct abd_acquired *a = NULL;
#define STEP(n, expect)                                                                \
	do {                                                                               \
		int r_ = abd_acquire(reg, found, ABD_ACQUIRE_PIDFD_GETFD, TIMEOUT_NS, &a);     \
		abd_acquired_free(a);                                                          \
		a = NULL;                                                                      \
		if (r_ != (expect))                                                            \
			return (n);                                                                \
	} while (0)
	STEP(2, 0); /* first: readlink */
	STEP(3, 0); /* repeat: readlink, and the eventfd is kept */
	/* the publisher's slot now holds another eventfd: kcmp says "not the same", readlink
	 * "an eventfd": accepted, and kept in place of the old one */
	int e2 = eventfd(0, EFD_CLOEXEC);
	if (e2 < 0 || dup2(e2, wake) < 0)
		return 4;
	close(e2);
	STEP(5, 0);
	/* from here no readlink works: only kcmp against the kept eventfd can prove it */
	if (deny_by_arg(SYS_readlink, -1, 0, 0, NULL, 0, EPERM) < 0 ||
	    deny_by_arg(SYS_readlinkat, -1, 0, 0, NULL, 0, EPERM) < 0)
		return 6;
	STEP(7, p->mask_kcmp ? -EPROTO : 0); /* masked: readlink, refused */
	/* a pipe in the slot: not the kept file, and readlink cannot say: refused */
	int pp[2];
	if (pipe2(pp, O_CLOEXEC) < 0 || dup2(pp[0], wake) < 0)
		return 8;
	close(pp[0]);
	close(pp[1]);
	STEP(9, -EPROTO);
#undef STEP
	abd_record_free(found);
	abd_withdraw(pub);
	abd_record_free(rec);
	abd_ring_free(ring);
	abd_registry_free(reg);
	return 0;
}

ABD_TEST(acquire, repeat_proves_the_eventfd_by_kcmp_and_rechecks_a_replaced_one)
{
	abd_test_require(ABD_FEAT_PIDFD_GETFD);
	abd_test_require(ABD_FEAT_KCMP);
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct self_pub p = { dir, false };
	int st = abd_test_wait(abd_test_fork(kcmp_steps, &p));
	cr_assert_eq(st, 0, "step %d", st);
	/* control: with kcmp masked, the denied readlink refuses the same repeat (step 7) */
	p.mask_kcmp = true;
	st = abd_test_wait(abd_test_fork(kcmp_steps, &p));
	cr_assert_eq(st, 0, "masked, step %d", st);
	abd_test_rmtree(dir);
}

/* The same through the handshake, from a consumer child of a real publisher: returns 0 when
 * the third acquisition (readlink denied) answered as expected, else the failing step. */
static int kcmp_handshake_steps(void *arg)
{
	const struct self_pub *p = arg;
	if (p->mask_kcmp)
		abd_features_disable(ABD_FEATURE_BIT(ABD_FEAT_KCMP));
	struct abd_registry *reg;
	struct abd_record *rec;
	if (abd_registry_open(p->dir, 0, &reg, NULL, 0) || abd_registry_lookup(reg, "hs.svc", &rec))
		return 1;
	struct abd_acquired *a = NULL;
	for (int i = 0; i < 2; i++) {
		if (abd_acquire(reg, rec, ABD_ACQUIRE_SCM_RIGHTS, TIMEOUT_NS, &a) != 0)
			return 2 + i;
		abd_acquired_free(a);
	}
	if (deny_by_arg(SYS_readlink, -1, 0, 0, NULL, 0, EPERM) < 0 ||
	    deny_by_arg(SYS_readlinkat, -1, 0, 0, NULL, 0, EPERM) < 0)
		return 4;
	int r = abd_acquire(reg, rec, ABD_ACQUIRE_SCM_RIGHTS, TIMEOUT_NS, &a);
	abd_acquired_free(a);
	if (r != (p->mask_kcmp ? -EPROTO : 0))
		return 5;
	abd_record_free(rec);
	abd_registry_free(reg);
	return 0;
}

ABD_TEST(acquire, handshake_repeat_proves_the_eventfd_by_kcmp)
{
	abd_test_require(ABD_FEAT_KCMP);
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "hs.svc");
	start(&t);
	struct self_pub p = { dir, false };
	int st = abd_test_wait(abd_test_fork(kcmp_handshake_steps, &p));
	cr_assert_eq(st, 0, "step %d", st);
	p.mask_kcmp = true;
	st = abd_test_wait(abd_test_fork(kcmp_handshake_steps, &p));
	cr_assert_eq(st, 0, "masked, step %d", st);
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
}

/* ---------------------------------------------------------------- users and policy -- */

ABD_TEST(acquire, other_user_falls_back_to_the_allowed_handshake)
{
	require_root();
	char dir[64];
	shared_dir(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "users.svc");
	t.uid = USER_A;
	t.gid = USER_A;
	t.allow_uid = USER_B;
	start(&t);
	struct tresult res = run_consumer((struct consumer){
		.dir = dir, .service = "users.svc", .uid = USER_B, .gid = GROUP_B });
	cr_assert_eq(res.r, 0, "consumer: %s", strerror(-res.r));
	cr_assert_eq(res.path, (int)ABD_FD_TRANSFER_SCM_RIGHTS, "another uid cannot pidfd_getfd");
	cr_assert_lt(res.fallback, 0);
	if (abd_probe_has(ABD_FEAT_PIDFD_GETFD) == 1)
		cr_assert_eq(res.fallback, -EPERM, "fallback %d", res.fallback);
	cr_assert_eq(res.uid, USER_A);
	cr_assert_eq(res.pid, t.pid);
	cr_assert(res.fds_ok);
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
}

ABD_TEST(acquire, same_user_sibling)
{
	require_root();
	char dir[64];
	shared_dir(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "same.svc");
	t.uid = USER_A;
	t.gid = USER_A;
	start(&t);
	struct tresult res = run_consumer((struct consumer){
		.dir = dir, .service = "same.svc", .uid = USER_A, .gid = USER_A });
	cr_assert_eq(res.r, 0, "consumer: %s", strerror(-res.r));
	/* without Yama a same-uid sibling may ptrace: the fast path, where the profile has it */
	if (abd_probe_ptrace_scope() <= 0)
		cr_assert_eq(res.path, (int)expected_auto_path());
	cr_assert(res.fds_ok);
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
}

ABD_TEST(acquire, other_user_without_permission_is_eacces)
{
	require_root();
	char dir[64];
	shared_dir(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "deny.svc");
	t.uid = USER_A;
	t.gid = USER_A;
	start(&t);
	uint64_t t0 = abd_test_now_ns();
	struct tresult res = run_consumer((struct consumer){
		.dir = dir, .service = "deny.svc", .uid = USER_B, .gid = GROUP_B,
		.timeout_ns = 30ll * 1000000000 });
	cr_assert_eq(res.r, -EACCES, "%d", res.r);
	/* "promptly": a refusal, not the (30 s) deadline */
	cr_assert_lt(abd_test_now_ns() - t0, 20ull * 1000000000);
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
}

ABD_TEST(acquire, policy_refusal_through_the_open_socket_is_eacces)
{
	require_root();
	char dir[64];
	shared_dir(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "gid.svc");
	t.uid = USER_A;
	t.gid = USER_A;
	t.allow_gid = 4242; /* opens the socket file; the consumer is not in that group */
	start(&t);
	struct tresult res = run_consumer((struct consumer){
		.dir = dir, .service = "gid.svc", .uid = USER_B, .gid = GROUP_B,
		.flags = ABD_ACQUIRE_SCM_RIGHTS });
	cr_assert_eq(res.r, -EACCES, "%d", res.r);
	/* and the group on the list gets in */
	res = run_consumer((struct consumer){
		.dir = dir, .service = "gid.svc", .uid = USER_B, .gid = 4242,
		.flags = ABD_ACQUIRE_SCM_RIGHTS });
	cr_assert_eq(res.r, 0, "%d", res.r);
	cr_assert(res.fds_ok);
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
}

ABD_TEST(acquire, root_is_always_allowed)
{
	require_root();
	char dir[64];
	shared_dir(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "root.svc");
	t.uid = USER_A;
	t.gid = USER_A;
	start(&t);
	struct abd_acquired *a;
	int r = tpub_acquire(dir, "root.svc", ABD_ACQUIRE_SCM_RIGHTS, TIMEOUT_NS, &a);
	cr_assert_eq(r, 0, "%d", r);
	uid_t uid;
	abd_acquired_peer(a, NULL, &uid, NULL);
	cr_assert_eq(uid, USER_A);
	abd_acquired_free(a);
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
}

/* PR_SET_PTRACER's argument, seen by a seccomp filter that answers each expected value with
 * its own errno: no Yama needed. */
static int ptracer_args_main(void *arg)
{
	(void)arg;
	const struct arg_rule rules[] = {
		{ 1234, EDOM },
		{ (uint64_t)PR_SET_PTRACER_ANY, EXDEV },
		{ 0, ENOTBLK },
	};
	int r = deny_by_arg(SYS_prctl, 0, PR_SET_PTRACER, 1, rules, 3, ERANGE);
	if (r == -EOPNOTSUPP)
		return 77;
	if (r < 0)
		return 2;
	if (abd_acquire_set_ptracer(1234) != -EDOM)
		return 3;
	if (abd_acquire_set_ptracer(ABD_PTRACER_ANY) != -EXDEV)
		return 4;
	if (abd_acquire_set_ptracer(0) != -ENOTBLK)
		return 5;
	if (abd_acquire_set_ptracer(-2) != -EINVAL)
		return 6; /* refused before any prctl (else ERANGE) */
	return 0;
}

ABD_TEST(acquire, ptracer_policy_passes_its_argument_to_prctl)
{
	int st = abd_test_wait(abd_test_fork(ptracer_args_main, NULL));
	if (st == 77)
		cr_skip_test("no seccomp filter for this architecture in the test");
	cr_assert_eq(st, 0, "step %d: PR_SET_PTRACER got another argument than expected", st);
}

ABD_TEST(acquire, ptracer_policy_without_yama_is_eopnotsupp_and_harmless)
{
	int scope = abd_probe_ptrace_scope();
	if (scope != -ENOENT)
		cr_skip_test("Yama is present (ptrace_scope=%d): see ptracer_policy_under_yama", scope);
	cr_assert_eq(abd_acquire_set_ptracer(ABD_PTRACER_ANY), -EOPNOTSUPP);
	cr_assert_eq(abd_acquire_set_ptracer(getpid()), -EOPNOTSUPP);
	cr_assert_eq(abd_acquire_set_ptracer(0), -EOPNOTSUPP);
	/* a publisher that declared a ptracer anyway still serves either path */
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "ptracer.svc");
	t.ptracer = ABD_PTRACER_ANY;
	start(&t);
	struct tresult res = run_consumer((struct consumer){ .dir = dir, .service = "ptracer.svc" });
	cr_assert_eq(res.r, 0, "%s", strerror(-res.r));
	cr_assert_eq(res.path, (int)expected_auto_path());
	cr_assert(res.fds_ok);
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
}

/* Never run on the development VM (no Yama there): it SKIPs with the reason. Needs Yama with
 * ptrace_scope=1, where a sibling of the same uid may not ptrace unless declared. */
ABD_TEST(acquire, ptracer_policy_under_yama)
{
	int scope = abd_probe_ptrace_scope();
	if (scope == -ENOENT)
		cr_skip_test("no Yama LSM on this kernel (/proc/sys/kernel/yama is absent): "
		             "PR_SET_PTRACER cannot be exercised here");
	if (scope != 1)
		cr_skip_test("Yama ptrace_scope=%d: only 1 makes PR_SET_PTRACER matter", scope);
	require_root();
	abd_test_require(ABD_FEAT_PIDFD_GETFD);
	char dir[64];
	shared_dir(dir, sizeof(dir));
	for (int declared = 0; declared < 2; declared++) {
		struct tpub t;
		tpub_init(&t, dir, declared ? "yama.any" : "yama.none");
		t.uid = USER_A;
		t.gid = USER_A;
		t.ptracer = declared ? ABD_PTRACER_ANY : 0;
		start(&t);
		/* a sibling of the same uid, without CAP_SYS_PTRACE */
		struct tresult res = run_consumer((struct consumer){
			.dir = dir, .service = t.service, .uid = USER_A, .gid = USER_A });
		cr_assert_eq(res.r, 0, "%s", strerror(-res.r));
		cr_assert(res.fds_ok);
		if (declared) {
			cr_assert_eq(res.path, (int)ABD_FD_TRANSFER_PIDFD_GETFD, "declared: pidfd_getfd");
		} else {
			cr_assert_eq(res.path, (int)ABD_FD_TRANSFER_SCM_RIGHTS, "Yama refuses the sibling");
			cr_assert_eq(res.fallback, -EPERM, "%d", res.fallback);
		}
		cr_assert_eq(tpub_stop(&t), 0);
	}
	abd_test_rmtree(dir);
}

/* ---------------------------------------------------------------- uids without PIDFD_GET_INFO -- */

ABD_TEST(acquire, pidfd_get_info_follows_the_profile_and_the_mask)
{
	int has = abd_probe_has(ABD_FEAT_PIDFD_GET_INFO);
	if (profile_is("linux-5.4")) {
		cr_assert_eq(has, 0, "5.4 has no PIDFD_GET_INFO");
		cr_assert_eq(abd_probe_error(ABD_FEAT_PIDFD_GET_INFO), -ENOTTY);
	} else {
		/* what the kernel answers, asked directly */
		int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
		cr_assert_geq(pidfd, 0);
		uint8_t info[64] = { 2 /* PIDFD_INFO_CREDS */ };
		int direct = ioctl(pidfd, PIDFD_GET_INFO_REQUEST, info) == 0;
		close(pidfd);
		cr_assert_eq(has, direct);
	}
	abd_features_disable(ABD_FEATURE_BIT(ABD_FEAT_PIDFD_GET_INFO));
	cr_assert_eq(abd_probe_has(ABD_FEAT_PIDFD_GET_INFO), 0);
	if (has)
		cr_assert_eq(abd_probe_error(ABD_FEAT_PIDFD_GET_INFO), -ECANCELED);
}

ABD_TEST(acquire, uids_from_proc_status_without_pidfd_get_info)
{
	/* The pidfd path on a kernel with pidfd_getfd but no PIDFD_GET_INFO (5.6 .. 6.12): the
	 * probe says so, and the uids come from /proc/PID/status. A seccomp filter makes any
	 * PIDFD_GET_INFO fail (EPERM, which acquisition does not take for "missing"), so success
	 * shows the /proc path was taken; the control (filter, feature not masked) must fail. */
	require_root();
	abd_test_require(ABD_FEAT_PIDFD_GETFD);
	char dir[64];
	shared_dir(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "status.svc");
	t.uid = USER_A;
	t.gid = GROUP_B + 1; /* a gid unlike the uid, so that a swapped field shows */
	start(&t);
	struct tresult res = run_consumer((struct consumer){
		.dir = dir, .service = "status.svc", .flags = ABD_ACQUIRE_PIDFD_GETFD,
		.no_get_info = true, .mask_get_info = true });
	cr_assert_eq(res.r, 0, "%s", strerror(-res.r));
	cr_assert_eq(res.path, (int)ABD_FD_TRANSFER_PIDFD_GETFD);
	cr_assert_eq(res.pid, t.pid);
	cr_assert_eq(res.uid, (uid_t)USER_A, "uid %u", (unsigned)res.uid);
	cr_assert_eq(res.gid, (gid_t)(GROUP_B + 1), "gid %u", (unsigned)res.gid);
	cr_assert(res.fds_ok);
	if (abd_probe_has(ABD_FEAT_PIDFD_GET_INFO) == 1) {
		res = run_consumer((struct consumer){
			.dir = dir, .service = "status.svc", .flags = ABD_ACQUIRE_PIDFD_GETFD,
			.no_get_info = true });
		cr_assert_eq(res.r, -EPERM, "control: PIDFD_GET_INFO is asked when the probe has it: %d",
		             res.r);
	}
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
}

/* ---------------------------------------------------------------- containers -- */

ABD_TEST(acquire, other_pid_namespace_goes_straight_to_the_handshake)
{
	require_root();
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "ns.svc");
	start(&t);
	struct tresult res = run_consumer((struct consumer){
		.dir = dir, .service = "ns.svc", .new_pidns = true });
	cr_assert_eq(res.r, 0, "consumer in a new PID namespace: %s", strerror(-res.r));
	cr_assert_eq(res.path, (int)ABD_FD_TRANSFER_SCM_RIGHTS);
	cr_assert_eq(res.fallback, -EXDEV, "recognised as another namespace: %d", res.fallback);
	cr_assert_eq(res.pid, 0, "the publisher's pid means nothing there");
	cr_assert(res.fds_ok);
	res = run_consumer((struct consumer){
		.dir = dir, .service = "ns.svc", .new_pidns = true, .flags = ABD_ACQUIRE_PIDFD_GETFD });
	cr_assert_eq(res.r, -EXDEV);
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
}

ABD_TEST(acquire, unshare_mount_proc_container)
{
	require_root();
	if (access("/usr/bin/unshare", X_OK) != 0)
		cr_skip_test("util-linux unshare not installed");
	const char *abdctl = getenv("ABD_ABDCTL");
	if (!abdctl)
		cr_skip_test("ABD_ABDCTL not set (run through meson test)");
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "ctr.svc");
	start(&t);
	char cmd[512];
	snprintf(cmd, sizeof(cmd),
	         "ABD_REGISTRY=%s unshare --pid --fork --mount-proc %s info ctr.svc --json", dir,
	         abdctl);
	FILE *f = popen(cmd, "r");
	cr_assert_not_null(f);
	char out[4096] = "";
	size_t n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = 0;
	int st = pclose(f);
	cr_assert_eq(st, 0, "abdctl info in the container: %d\n%s", st, out);
	cr_assert_not_null(strstr(out, "\"path\":\"scm_rights\""), "%s", out);
	cr_assert_not_null(strstr(out, "\"state\":\"alive\""), "%s", out);
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
}

/* ---------------------------------------------------------------- a dying or silent peer -- */

/* a handshake socket's name (compat/handshake.h grammar) */
#define FAKE_SOCK ".abd-fa4e0000000000000000000000000000.sock"

struct fake_server {
	char dir[64];
	int mode; /* 0: die after reading the request; 1: never answer; 2: send too many fds;
	           * 3: a server older than request type 3 (refuses it EBADMSG, serves type 1) */
	int ready_w;
};

/* Publishes a record whose socket is served by hand, badly. */
static int fake_server_main(void *arg)
{
	struct fake_server *f = arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	struct abd_registry *reg;
	if (abd_registry_open(f->dir, 0, &reg, NULL, 0) < 0)
		return 10;
	int lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/" FAKE_SOCK, f->dir);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 8) < 0)
		return 11;
	int memfd = memfd_create("x", MFD_CLOEXEC);
	struct abd_record *rec;
	struct abd_publication *pub;
	if (abd_record_new("fake.svc", &rec) < 0 ||
	    abd_record_add_fd(rec, "ring", memfd, ABD_FD_MEMFD) < 0 ||
	    abd_record_set_socket(rec, FAKE_SOCK) < 0 || abd_publish(reg, rec, &pub) < 0)
		return 12;
	char one = 1;
	if (f->mode == 3) {
		/* a real sealed memfd with the nonce header, as a version-1-only server would serve */
		close(memfd);
		memfd = memfd_create("x", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (memfd < 0 || ftruncate(memfd, TPUB_SHM_SIZE) < 0)
			return 16;
		abd_withdraw(pub);
		abd_record_free(rec);
		if (abd_record_new("fake.svc", &rec) < 0 ||
		    abd_record_add_fd(rec, "ring", memfd, ABD_FD_MEMFD) < 0 ||
		    abd_record_set_socket(rec, FAKE_SOCK) < 0 || abd_publish(reg, rec, &pub) < 0)
			return 16;
		tpub_header(memfd, abd_record_instance(abd_publication_record(pub)));
		fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	}
	if (write(f->ready_w, &one, 1) != 1)
		return 13;
	while (f->mode == 3) {
		int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		uint8_t req[512];
		ssize_t n = read(c, req, sizeof(req));
		struct abd__hs_request rq;
		struct abd__hs_reply rep = { .status = EBADMSG };
		memcpy(rep.instance, abd_record_instance(abd_publication_record(pub)), 16);
		/* the version-1 parser knew type 1 only */
		if (n > 5 && req[5] == ABD__HS_REQUEST && abd__hs_request_parse(req, (size_t)n, &rq) == 0) {
			rep.status = 0;
			rep.nfds = 1;
			strcpy(rep.slots[0].name, "ring");
			rep.slots[0].kind = ABD_FD_MEMFD;
		}
		uint8_t msg[256];
		long m = abd__hs_reply_encode(&rep, msg, sizeof(msg));
		if (m < 0 || abd__hs_send(c, msg, (size_t)m, &memfd, rep.nfds) < 0)
			return 17;
		close(c);
	}
	int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	char buf[512];
	if (read(c, buf, sizeof(buf)) <= 0)
		return 14;
	if (f->mode == 0)
		_exit(0); /* dies mid-handshake; the kernel closes everything */
	if (f->mode == 2) {
		struct abd__hs_reply rep = { .nfds = 1 };
		memcpy(rep.instance, abd_record_instance(abd_publication_record(pub)), 16);
		strcpy(rep.slots[0].name, "ring");
		rep.slots[0].kind = ABD_FD_MEMFD;
		uint8_t msg[256];
		long n = abd__hs_reply_encode(&rep, msg, sizeof(msg));
		/* a reply announcing one fd and carrying forty */
		int fds[40];
		for (int i = 0; i < 40; i++)
			fds[i] = memfd;
		union {
			struct cmsghdr h;
			char b[CMSG_SPACE(sizeof(fds))];
		} ctl = { 0 };
		struct iovec iov = { msg, (size_t)n };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
		                    .msg_controllen = sizeof(ctl.b) };
		struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(fds));
		memcpy(CMSG_DATA(cm), fds, sizeof(fds));
		if (sendmsg(c, &m, MSG_NOSIGNAL) < 0)
			return 15;
	}
	pause();
	return 0;
}

static pid_t fake_server_start(struct fake_server *f)
{
	int p[2];
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	f->ready_w = p[1];
	pid_t pid = abd_test_fork(fake_server_main, f);
	close(p[1]);
	char c;
	cr_assert_eq(read(p[0], &c, 1), 1, "fake server failed");
	close(p[0]);
	return pid;
}

ABD_TEST(acquire, a_server_older_than_keep_alive_is_asked_the_version_1_way)
{
	struct fake_server f = { .mode = 3 };
	abd_test_mkdtemp(f.dir, sizeof(f.dir));
	pid_t pid = fake_server_start(&f);
	for (int i = 0; i < 2; i++) {
		struct abd_acquired *a = NULL;
		int r = tpub_acquire(f.dir, "fake.svc", ABD_ACQUIRE_SCM_RIGHTS, TIMEOUT_NS, &a);
		cr_assert_eq(r, 0, "refused type 3 (EBADMSG), then served type 1: %d", r);
		cr_assert_geq(abd_acquired_fd(a, "ring"), 0);
		abd_acquired_free(a);
	}
	kill(pid, SIGKILL);
	abd_test_wait(pid);
	abd_test_rmtree(f.dir);
}

ABD_TEST(acquire, publisher_dies_mid_handshake)
{
	struct fake_server f = { .mode = 0 };
	abd_test_mkdtemp(f.dir, sizeof(f.dir));
	pid_t pid = fake_server_start(&f);
	struct abd_acquired *a = NULL;
	int r = tpub_acquire(f.dir, "fake.svc", ABD_ACQUIRE_SCM_RIGHTS, TIMEOUT_NS, &a);
	cr_assert(r == -ECONNRESET || r == -ESRCH, "clear error, not %d", r);
	cr_assert_null(a);
	abd_test_wait(pid);
	abd_test_rmtree(f.dir);
}

ABD_TEST(acquire, silent_publisher_times_out)
{
	struct fake_server f = { .mode = 1 };
	abd_test_mkdtemp(f.dir, sizeof(f.dir));
	pid_t pid = fake_server_start(&f);
	struct abd_acquired *a = NULL;
	int r = tpub_acquire(f.dir, "fake.svc", ABD_ACQUIRE_SCM_RIGHTS, 200 * 1000000, &a);
	cr_assert_eq(r, -ETIMEDOUT, "%d", r);
	kill(pid, SIGKILL);
	abd_test_wait(pid);
	abd_test_rmtree(f.dir);
}

ABD_TEST(acquire, too_many_descriptors_are_all_closed)
{
	struct fake_server f = { .mode = 2 };
	abd_test_mkdtemp(f.dir, sizeof(f.dir));
	pid_t pid = fake_server_start(&f);
	struct abd_acquired *a = NULL;
	int r = tpub_acquire(f.dir, "fake.svc", ABD_ACQUIRE_SCM_RIGHTS, TIMEOUT_NS, &a);
	cr_assert_eq(r, -EMSGSIZE, "MSG_CTRUNC / too many fds: %d", r);
	/* the fd-leak check of ABD_TEST proves that every received descriptor was closed */
	kill(pid, SIGKILL);
	abd_test_wait(pid);
	abd_test_rmtree(f.dir);
}

/* ---------------------------------------------------------------- a hostile client -- */

/* An in-process publisher, so that the test sees the server's descriptors and counters. */
struct local {
	char dir[64];
	struct abd_registry *reg;
	struct abd_acquire_server *srv;
	struct abd_publication *pub;
	struct abd_record *rec;
	int memfd, evfd;
	char path[160];
};

static void local_start(struct local *l)
{
	abd_test_mkdtemp(l->dir, sizeof(l->dir));
	cr_assert_eq(abd_registry_open(l->dir, 0, &l->reg, NULL, 0), 0);
	l->memfd = memfd_create("abd-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	l->evfd = eventfd(0, EFD_CLOEXEC);
	cr_assert_eq(ftruncate(l->memfd, TPUB_SHM_SIZE), 0);
	cr_assert_eq(abd_acquire_server_new(l->reg, 0, &l->srv), 0);
	cr_assert_eq(abd_record_new("local.svc", &l->rec), 0);
	abd_record_add_fd(l->rec, "ring", l->memfd, ABD_FD_MEMFD);
	abd_record_add_fd(l->rec, "wake", l->evfd, ABD_FD_EVENTFD);
	abd_record_set_socket(l->rec, abd_acquire_server_socket(l->srv));
	cr_assert_eq(abd_publish(l->reg, l->rec, &l->pub), 0);
	tpub_header(l->memfd, abd_record_instance(abd_publication_record(l->pub)));
	fcntl(l->memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	cr_assert_eq(abd_acquire_server_serve(l->srv, abd_publication_record(l->pub)), 0);
	snprintf(l->path, sizeof(l->path), "%s/%s", l->dir, abd_acquire_server_socket(l->srv));
}

static void local_stop(struct local *l)
{
	abd_acquire_server_free(l->srv);
	abd_withdraw(l->pub);
	abd_record_free(l->rec);
	abd_registry_free(l->reg);
	close(l->memfd);
	close(l->evfd);
	abd_test_rmtree(l->dir);
}

static int raw_connect(const char *path)
{
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	cr_assert_eq(connect(s, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
	return s;
}

/* A consumer in a child while this process serves: returns its result. */
struct served_consumer {
	struct local *l;
	int out_w;
};

static int served_consumer_main(void *arg)
{
	struct served_consumer *c = arg;
	struct consumer cc = { .dir = c->l->dir, .service = "local.svc",
	                       .flags = ABD_ACQUIRE_SCM_RIGHTS, .timeout_ns = TIMEOUT_NS,
	                       .out_w = c->out_w };
	return consume_here(&cc);
}

static struct tresult serve_one_consumer(struct local *l)
{
	int p[2];
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	struct served_consumer c = { .l = l, .out_w = p[1] };
	pid_t pid = abd_test_fork(served_consumer_main, &c);
	close(p[1]);
	struct tresult res = { .r = -ETIMEDOUT };
	for (;;) {
		struct pollfd pf[2] = { { .fd = p[0], .events = POLLIN },
		                        { .fd = abd_acquire_server_fd(l->srv), .events = POLLIN } };
		poll(pf, 2, 50);
		abd_acquire_server_process(l->srv);
		if (pf[0].revents) {
			cr_assert_eq(read(p[0], &res, sizeof(res)), (ssize_t)sizeof(res));
			break;
		}
	}
	close(p[0]);
	abd_test_wait(pid);
	return res;
}

ABD_TEST(acquire, hostile_garbage_and_descriptors)
{
	struct local l;
	local_start(&l);
	int before = abd_test_count_fds();
	/* garbage bytes */
	int s1 = raw_connect(l.path);
	cr_assert_eq(send(s1, "\x00garbage\xff", 9, 0), 9);
	/* a valid-looking request carrying the client's own descriptors */
	int s2 = raw_connect(l.path);
	struct abd__hs_request req = { 0 };
	strcpy(req.service, "local.svc");
	uint8_t msg[128];
	long n = abd__hs_request_encode(&req, msg, sizeof(msg));
	int mine[3] = { s1, s1, s1 };
	cr_assert_eq(abd__hs_send(s2, msg, (size_t)n, mine, 3), 0);
	/* an oversized message */
	int s3 = raw_connect(l.path);
	uint8_t big[4096] = { 'A', 'B', 'D', 'H' };
	cr_assert_eq(send(s3, big, sizeof(big), 0), (ssize_t)sizeof(big));
	/* a future version */
	int s4 = raw_connect(l.path);
	msg[4] = 2;
	cr_assert_eq(send(s4, msg, (size_t)n, 0), n);
	int served = abd_acquire_server_process(l.srv);
	cr_assert_eq(served, 0);
	struct abd_acquire_server_stats st;
	abd_acquire_server_stats(l.srv, &st);
	cr_assert_eq(st.malformed, 4, "malformed %llu", (unsigned long long)st.malformed);
	cr_assert_eq(st.pending, 0);
	/* each got an error reply and a closed connection, nothing else */
	int socks[4] = { s1, s2, s3, s4 };
	for (int i = 0; i < 4; i++) {
		uint8_t rb[256];
		int fds[32];
		unsigned nf;
		long k = abd__hs_recv(socks[i], rb, sizeof(rb), fds, 32, &nf);
		struct abd__hs_reply rep;
		cr_assert_gt(k, 0, "client %d: %ld", i, k);
		cr_assert_eq(abd__hs_reply_parse(rb, (size_t)k, &rep), 0);
		cr_assert_neq(rep.status, 0);
		cr_assert_eq(nf, 0);
		close(socks[i]);
	}
	cr_assert_eq(abd_test_count_fds(), before, "the server kept nothing");
	/* and it still serves */
	struct tresult res = serve_one_consumer(&l);
	cr_assert_eq(res.r, 0, "%d", res.r);
	local_stop(&l);
}

ABD_TEST(acquire, silent_connections_are_bounded_and_expire)
{
	struct local l;
	local_start(&l);
	cr_assert_eq(abd_acquire_server_set_max_pending(l.srv, 8), 0);
	cr_assert_eq(abd_acquire_server_set_timeout(l.srv, 100 * 1000000), 0);
	cr_assert_eq(abd_acquire_server_deadline(l.srv), -1);
	int s[20];
	for (int i = 0; i < 20; i++)
		s[i] = raw_connect(l.path);
	abd_acquire_server_process(l.srv);
	struct abd_acquire_server_stats st;
	abd_acquire_server_stats(l.srv, &st);
	cr_assert_eq(st.pending, 8, "pending bounded: %llu", (unsigned long long)st.pending);
	cr_assert_eq(st.evicted, 12);
	int64_t d = abd_acquire_server_deadline(l.srv);
	cr_assert_gt(d, 0);
	/* sleep past the deadline, then one process call drops them all */
	struct timespec ts = { 0, 150 * 1000000 };
	nanosleep(&ts, NULL);
	abd_acquire_server_process(l.srv);
	abd_acquire_server_stats(l.srv, &st);
	cr_assert_eq(st.pending, 0);
	cr_assert_eq(st.expired, 8);
	cr_assert_eq(abd_acquire_server_deadline(l.srv), -1);
	for (int i = 0; i < 20; i++)
		close(s[i]);
	local_stop(&l);
}

ABD_TEST(acquire, consumer_dies_mid_handshake)
{
	struct local l;
	local_start(&l);
	/* a consumer that connects, sends half a header and is gone */
	int s = raw_connect(l.path);
	cr_assert_eq(send(s, "ABD", 3, 0), 3);
	close(s);
	int s2 = raw_connect(l.path);
	close(s2); /* connects and vanishes without a word */
	abd_acquire_server_process(l.srv);
	abd_acquire_server_process(l.srv);
	struct abd_acquire_server_stats st;
	abd_acquire_server_stats(l.srv, &st);
	cr_assert_eq(st.pending, 0);
	struct tresult res = serve_one_consumer(&l);
	cr_assert_eq(res.r, 0, "the publisher carries on: %d", res.r);
	local_stop(&l);
}

struct flood {
	const char *path;
	int n;
	int ready_w, done_r;
	int parent_fds[2]; /* the parent's ends, closed here so that EOF can arrive */
};

static int flood_main(void *arg)
{
	struct flood *f = arg;
	close(f->parent_fds[0]);
	close(f->parent_fds[1]);
	struct rlimit rl = { 4096, 4096 };
	setrlimit(RLIMIT_NOFILE, &rl);
	int opened = 0;
	for (int i = 0; i < f->n; i++) {
		int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
		if (s >= 0 && connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			opened++;
	}
	if (write(f->ready_w, &opened, sizeof(opened)) != sizeof(opened))
		return 1;
	char c;
	ssize_t r = read(f->done_r, &c, 1); /* hold them until told */
	(void)r;
	return 0;
}

ABD_TEST(acquire, a_thousand_silent_connections)
{
	struct local l;
	local_start(&l);
	int rp[2], dp[2];
	cr_assert_eq(pipe2(rp, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(dp, O_CLOEXEC), 0);
	struct flood f = { .path = l.path, .n = 1000, .ready_w = rp[1], .done_r = dp[0],
	                  .parent_fds = { rp[0], dp[1] } };
	pid_t pid = abd_test_fork(flood_main, &f);
	close(rp[1]);
	close(dp[0]);
	int before = abd_test_count_fds();
	/* serve while the flood connects: a blocking connect waits for the backlog */
	int opened = 0;
	for (;;) {
		struct pollfd pf[2] = { { .fd = rp[0], .events = POLLIN },
		                        { .fd = abd_acquire_server_fd(l.srv), .events = POLLIN } };
		poll(pf, 2, 50);
		abd_acquire_server_process(l.srv);
		if (pf[0].revents) {
			cr_assert_eq(read(rp[0], &opened, sizeof(opened)), (ssize_t)sizeof(opened));
			break;
		}
	}
	cr_assert_eq(opened, 1000);
	abd_acquire_server_process(l.srv);
	struct abd_acquire_server_stats st;
	abd_acquire_server_stats(l.srv, &st);
	cr_assert_leq(st.pending, 64, "pending bounded");
	cr_assert_leq(abd_test_count_fds(), before + 64, "descriptors bounded");
	/* a legitimate consumer is served while the flood holds its connections */
	struct tresult res = serve_one_consumer(&l);
	cr_assert_eq(res.r, 0, "%d", res.r);
	close(dp[1]);
	close(rp[0]);
	abd_test_wait(pid);
	local_stop(&l);
}

/* ---------------------------------------------------------------- wire format -- */

ABD_TEST(acquire, wire_format_round_trip_and_bounds)
{
	struct abd__hs_reply rep = { .nfds = 2 };
	memset(rep.instance, 0xab, 16);
	strcpy(rep.slots[0].name, "ring");
	rep.slots[0].kind = ABD_FD_MEMFD;
	strcpy(rep.slots[1].name, "wake");
	rep.slots[1].kind = ABD_FD_EVENTFD;
	uint8_t buf[ABD__HS_MSG_MAX];
	long n = abd__hs_reply_encode(&rep, buf, sizeof(buf));
	cr_assert_gt(n, 0);
	struct abd__hs_reply back;
	cr_assert_eq(abd__hs_reply_parse(buf, (size_t)n, &back), 0);
	cr_assert_eq(back.nfds, 2);
	cr_assert_str_eq(back.slots[1].name, "wake");
	for (long k = 0; k < n; k++)
		cr_assert_lt(abd__hs_reply_parse(buf, (size_t)k, &back), 0, "truncated at %ld", k);
	buf[4] = 2;
	cr_assert_eq(abd__hs_reply_parse(buf, (size_t)n, &back), -EPROTONOSUPPORT);
	buf[4] = 1;
	buf[5] = ABD__HS_REQUEST;
	cr_assert_eq(abd__hs_reply_parse(buf, (size_t)n, &back), -EBADMSG);
	/* an error reply carries no descriptors */
	rep.status = EACCES;
	cr_assert_eq(abd__hs_reply_encode(&rep, buf, sizeof(buf)), -EINVAL);
	struct abd__hs_request req = { 0 }, rq;
	strcpy(req.service, "a.b");
	n = abd__hs_request_encode(&req, buf, sizeof(buf));
	cr_assert_eq(abd__hs_request_parse(buf, (size_t)n, &rq), 0);
	cr_assert_str_eq(rq.service, "a.b");
	cr_assert_eq(abd__hs_request_encode(&req, buf, 10), -ENOSPC);
	/* the keep-alive request: type 3, same body */
	req.keep = true;
	n = abd__hs_request_encode(&req, buf, sizeof(buf));
	cr_assert_eq(buf[5], ABD__HS_REQUEST_KEEP);
	cr_assert_eq(abd__hs_request_parse(buf, (size_t)n, &rq), 0);
	cr_assert(rq.keep);
	buf[5] = 4;
	cr_assert_eq(abd__hs_request_parse(buf, (size_t)n, &rq), -EBADMSG);
	strcpy(req.service, "../x");
	cr_assert_eq(abd__hs_request_encode(&req, buf, sizeof(buf)), -EINVAL);
	/* the kept flag: only on a successful reply, the only flag bit */
	rep.status = 0;
	rep.kept = true;
	n = abd__hs_reply_encode(&rep, buf, sizeof(buf));
	cr_assert_eq(buf[29], ABD__HS_REPLY_KEPT);
	cr_assert_eq(abd__hs_reply_parse(buf, (size_t)n, &back), 0);
	cr_assert(back.kept);
	buf[29] = 2;
	cr_assert_eq(abd__hs_reply_parse(buf, (size_t)n, &back), -EBADMSG);
	rep.status = EACCES;
	rep.nfds = 0;
	cr_assert_eq(abd__hs_reply_encode(&rep, buf, sizeof(buf)), -EINVAL, "kept with an error");
}

/* ---------------------------------------------------------------- repeats -- */

/* A consumer child that talks to the test over three pipes: it writes `ask` when the test is
 * to act, waits on `done` to go on, and writes its results to `out`. */
struct talk {
	int ask[2], done[2], out[2];
};

static void talk_open(struct talk *t)
{
	cr_assert_eq(pipe2(t->ask, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(t->done, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(t->out, O_CLOEXEC), 0);
}

/* After the fork: the child's ends are the child's. */
static void talk_forked(struct talk *t)
{
	close(t->ask[1]);
	close(t->done[0]);
	close(t->out[1]);
}

static void talk_close(struct talk *t)
{
	close(t->ask[0]);
	close(t->done[1]);
	close(t->out[0]);
}

/* Serve srv's handshakes while the child runs; at its ask, act(arg) once and let it go on;
 * return with its results in res. */
static void talk_serve(struct talk *t, struct abd_acquire_server *srv, void (*act)(void *),
                       void *arg, void *res, size_t size)
{
	bool acted = false;
	for (;;) {
		struct pollfd pf[3] = { { .fd = t->ask[0], .events = POLLIN },
		                        { .fd = t->out[0], .events = POLLIN },
		                        { .fd = abd_acquire_server_fd(srv), .events = POLLIN } };
		cr_assert_geq(poll(pf, 3, 5000), 0);
		abd_acquire_server_process(srv);
		if (pf[0].revents && !acted) {
			char b;
			cr_assert_eq(read(t->ask[0], &b, 1), 1);
			act(arg);
			acted = true;
			cr_assert_eq(write(t->done[1], "d", 1), 1);
		}
		if (pf[1].revents) {
			cr_assert_eq(read(t->out[0], res, size), (ssize_t)size);
			return;
		}
	}
}

/* withdrawn, but alive: the descriptors stay open and the server serves on */
static void act_withdraw(void *arg)
{
	struct local *l = arg;
	cr_assert_eq(abd_withdraw(l->pub), 0);
	l->pub = NULL;
}

/* A consumer child acquiring through one registry handle: twice (the second time through
 * what the handle kept: the verified pidfd, the record descriptor), then, once the parent
 * has withdrawn the record (still alive, its descriptors still open, still serving), again. */
struct repeat_consumer {
	const char *dir;
	unsigned flags;
	int ask_w, done_r, out_w;
};

static int repeat_consumer_main(void *arg)
{
	struct repeat_consumer *c = arg;
	int res[4] = { -1, -1, -1, -1 };
	struct abd_registry *reg;
	struct abd_record *rec;
	if (abd_registry_open(c->dir, 0, &reg, NULL, 0) < 0 ||
	    abd_registry_lookup(reg, "local.svc", &rec) < 0)
		return 2;
	for (int i = 0; i < 2; i++) {
		struct abd_acquired *a = NULL;
		/* verified: the nonce in the memfd is the record's (a hand-made header, not a ring) */
		res[i] = abd_acquire(reg, rec, c->flags, TIMEOUT_NS, &a);
		abd_acquired_free(a);
	}
	char b = 'w';
	if (write(c->ask_w, &b, 1) != 1 || read(c->done_r, &b, 1) != 1)
		return 3;
	struct abd_acquired *a = NULL;
	res[2] = abd_acquire(reg, rec, c->flags, TIMEOUT_NS, &a);
	abd_acquired_free(a);
	/* a fresh handle (nothing kept) says the same */
	struct abd_registry *fresh;
	if (abd_registry_open(c->dir, 0, &fresh, NULL, 0) < 0)
		return 4;
	res[3] = abd_acquire(fresh, rec, c->flags, TIMEOUT_NS, &a);
	abd_acquired_free(a);
	abd_registry_free(fresh);
	abd_record_free(rec);
	abd_registry_free(reg);
	return write(c->out_w, res, sizeof(res)) == (ssize_t)sizeof(res) ? 0 : 5;
}

static void repeat_after_withdrawal(unsigned flags)
{
	struct local l;
	local_start(&l); /* published "local.svc", serving */
	struct talk t;
	talk_open(&t);
	struct repeat_consumer c = { .dir = l.dir, .flags = flags, .ask_w = t.ask[1],
	                             .done_r = t.done[0], .out_w = t.out[1] };
	pid_t pid = abd_test_fork(repeat_consumer_main, &c);
	talk_forked(&t);
	int res[4];
	talk_serve(&t, l.srv, act_withdraw, &l, res, sizeof(res));
	talk_close(&t);
	cr_assert_eq(abd_test_wait(pid), 0);
	cr_assert_eq(res[0], 0, "first acquisition: %d", res[0]);
	cr_assert_eq(res[1], 0, "repeat: %d", res[1]);
	cr_assert_eq(res[2], -ESRCH, "repeat after the withdrawal: %d", res[2]);
	cr_assert_eq(res[3], -ESRCH, "fresh handle after the withdrawal: %d", res[3]);
	local_stop(&l);
}

ABD_TEST(acquire, repeat_through_a_kept_pidfd_sees_the_withdrawal)
{
	abd_test_require(ABD_FEAT_PIDFD_GETFD);
	repeat_after_withdrawal(ABD_ACQUIRE_PIDFD_GETFD);
}

ABD_TEST(acquire, repeat_handshake_sees_the_withdrawal)
{
	repeat_after_withdrawal(ABD_ACQUIRE_SCM_RIGHTS);
}

/* ---------------------------------------------------------------- kept connections -- */

/* A consumer child that acquires through one registry handle whenever the parent asks
 * ('a': acquire by the handshake, 'q': free the handle and quit), answering each time with
 * the result and whether the descriptors work. The parent serves (local) or not (tpub) in
 * between. */
struct stepper {
	const char *dir, *service;
	int64_t timeout_ns; /* of each acquisition; 0: TIMEOUT_NS */
	int cmd_r, res_w;
	int parent_fds[2]; /* the parent's ends, closed here */
	/* parent side */
	pid_t pid;
	int cmd_w, res_r;
};

static int stepper_main(void *arg)
{
	struct stepper *c = arg;
	close(c->parent_fds[0]);
	close(c->parent_fds[1]);
	struct abd_registry *reg;
	struct abd_record *rec;
	if (abd_registry_open(c->dir, 0, &reg, NULL, 0) < 0 ||
	    abd_registry_lookup(reg, c->service, &rec) < 0)
		return 2;
	char cmd;
	while (read(c->cmd_r, &cmd, 1) == 1 && cmd == 'a') {
		struct tresult res = { 0 };
		struct abd_acquired *a = NULL;
		res.r = abd_acquire(reg, rec, ABD_ACQUIRE_SCM_RIGHTS,
		                    c->timeout_ns ? c->timeout_ns : TIMEOUT_NS, &a);
		if (res.r == 0) {
			res.path = abd_acquired_path(a);
			res.fds_ok = tpub_check_fds(a);
		}
		abd_acquired_free(a);
		if (write(c->res_w, &res, sizeof(res)) != (ssize_t)sizeof(res))
			return 3;
	}
	abd_record_free(rec);
	abd_registry_free(reg); /* closes the kept connection */
	return 0;
}

static void stepper_start(struct stepper *c, const char *dir, const char *service,
                          int64_t timeout_ns)
{
	int cmd[2], res[2];
	cr_assert_eq(pipe2(cmd, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(res, O_CLOEXEC), 0);
	*c = (struct stepper){ .dir = dir, .service = service, .timeout_ns = timeout_ns,
		               .cmd_r = cmd[0], .res_w = res[1],
		               .parent_fds = { cmd[1], res[0] }, .cmd_w = cmd[1], .res_r = res[0] };
	c->pid = abd_test_fork(stepper_main, c);
	close(cmd[0]);
	close(res[1]);
}

/* One acquisition by the child; l (may be NULL: the publisher is another process) is served
 * meanwhile. */
static struct tresult stepper_acquire(struct stepper *c, struct local *l)
{
	cr_assert_eq(write(c->cmd_w, "a", 1), 1);
	struct tresult res = { .r = -ETIMEDOUT };
	for (;;) {
		struct pollfd pf[2] = { { .fd = c->res_r, .events = POLLIN },
		                        { .fd = l ? abd_acquire_server_fd(l->srv) : -1,
		                          .events = POLLIN } };
		cr_assert_geq(poll(pf, 2, 5000), 0);
		if (l)
			abd_acquire_server_process(l->srv);
		if (pf[0].revents) {
			cr_assert_eq(read(c->res_r, &res, sizeof(res)), (ssize_t)sizeof(res));
			return res;
		}
	}
}

/* The child frees its handle (closing the kept connection) and exits; l's server sees it. */
static void stepper_stop(struct stepper *c, struct local *l)
{
	cr_assert_eq(write(c->cmd_w, "q", 1), 1);
	close(c->cmd_w);
	cr_assert_eq(abd_test_wait(c->pid), 0);
	close(c->res_r);
	if (l)
		abd_acquire_server_process(l->srv);
}

static struct abd_acquire_server_stats stats_of(struct local *l)
{
	struct abd_acquire_server_stats st;
	cr_assert_eq(abd_acquire_server_stats(l->srv, &st), 0);
	return st;
}

ABD_TEST(acquire, handshake_repeats_reuse_one_connection)
{
	struct local l;
	local_start(&l);
	struct stepper c;
	stepper_start(&c, l.dir, "local.svc", 0);
	int before = abd_test_count_fds();
	int n = abd_test_scaled(20, 5);
	for (int i = 0; i < n; i++) {
		struct tresult res = stepper_acquire(&c, &l);
		cr_assert_eq(res.r, 0, "acquisition %d: %d", i, res.r);
		cr_assert_eq(res.path, ABD_FD_TRANSFER_SCM_RIGHTS);
	}
	struct abd_acquire_server_stats st = stats_of(&l);
	cr_assert_eq(st.served, (uint64_t)n, "served %llu", (unsigned long long)st.served);
	cr_assert_eq(st.accepted, 1, "one connection for %d acquisitions: %llu", n,
	             (unsigned long long)st.accepted);
	cr_assert_eq(st.pending, 1);
	cr_assert_eq(st.kept, 1);
	cr_assert_eq(abd_test_count_fds(), before + 1, "the server holds the one connection");
	/* a newcomer while the kept connection waits is accepted and served */
	struct tresult other = serve_one_consumer(&l);
	cr_assert_eq(other.r, 0, "%d", other.r);
	st = stats_of(&l);
	cr_assert_eq(st.accepted, 2);
	cr_assert_eq(st.served, (uint64_t)n + 1);
	/* the clients free their handles: the server drops their connections at once */
	stepper_stop(&c, &l);
	before -= 2; /* the stepper's pipes */
	st = stats_of(&l);
	cr_assert_eq(st.pending, 0);
	cr_assert_eq(st.kept, 0);
	cr_assert_eq(st.expired + st.evicted, 0);
	cr_assert_eq(abd_test_count_fds(), before, "the server kept nothing");
	local_stop(&l);
}

ABD_TEST(acquire, a_dropped_kept_connection_is_replaced_transparently)
{
	struct local l;
	local_start(&l);
	int before = abd_test_count_fds();
	cr_assert_eq(abd_acquire_server_set_timeout(l.srv, 100 * 1000000), 0);
	struct stepper c;
	stepper_start(&c, l.dir, "local.svc", 0);
	struct tresult res = stepper_acquire(&c, &l);
	cr_assert_eq(res.r, 0, "%d", res.r);
	cr_assert_eq(stats_of(&l).kept, 1);
	/* idle past the server's timeout: dropped at its deadline */
	struct timespec ts = { 0, 150 * 1000000 };
	nanosleep(&ts, NULL);
	abd_acquire_server_process(l.srv);
	struct abd_acquire_server_stats st = stats_of(&l);
	cr_assert_eq(st.expired, 1);
	cr_assert_eq(st.pending, 0);
	res = stepper_acquire(&c, &l);
	cr_assert_eq(res.r, 0, "after the server dropped the idle connection: %d", res.r);
	st = stats_of(&l);
	cr_assert_eq(st.accepted, 2, "reconnected once: %llu", (unsigned long long)st.accepted);
	cr_assert_eq(st.kept, 1);
	/* evicted for a newcomer, before an older silent connection: max_pending 2, a silent
	 * connection, then an acquisition (the kept connection is now the newer), then a
	 * newcomer */
	cr_assert_eq(abd_acquire_server_set_max_pending(l.srv, 2), 0);
	int s_old = raw_connect(l.path);
	abd_acquire_server_process(l.srv);
	res = stepper_acquire(&c, &l);
	cr_assert_eq(res.r, 0, "%d", res.r);
	st = stats_of(&l);
	cr_assert_eq(st.accepted, 3);
	cr_assert_eq(st.pending, 2);
	cr_assert_eq(st.kept, 1);
	int s_new = raw_connect(l.path);
	abd_acquire_server_process(l.srv);
	st = stats_of(&l);
	cr_assert_eq(st.evicted, 1);
	cr_assert_eq(st.kept, 0, "the kept connection went first");
	cr_assert_eq(st.pending, 2);
	struct pollfd pf = { .fd = s_old, .events = POLLIN };
	cr_assert_eq(poll(&pf, 1, 0), 0, "the older silent connection is still held");
	res = stepper_acquire(&c, &l);
	cr_assert_eq(res.r, 0, "after the server evicted the idle connection: %d", res.r);
	st = stats_of(&l);
	cr_assert_eq(st.accepted, 5);
	cr_assert_eq(st.served, 4);
	cr_assert_eq(st.evicted, 2, "the oldest silent one made room for it");
	cr_assert_eq(st.kept, 1);
	close(s_old);
	close(s_new);
	stepper_stop(&c, &l);
	abd_acquire_server_process(l.srv);
	cr_assert_eq(stats_of(&l).pending, 0);
	cr_assert_eq(abd_test_count_fds(), before, "the server kept nothing");
	local_stop(&l);
}

ABD_TEST(acquire, publisher_dies_between_two_kept_acquisitions)
{
	struct tpub t = { .service = "die.between", .allow_uid = (uid_t)-1,
		          .allow_gid = (gid_t)-1 };
	abd_test_mkdtemp(t.dir, sizeof(t.dir));
	start(&t);
	struct stepper c;
	stepper_start(&c, t.dir, t.service, 0);
	struct tresult res = stepper_acquire(&c, NULL);
	cr_assert_eq(res.r, 0, "%d", res.r);
	cr_assert(res.fds_ok, "the descriptors work");
	res = stepper_acquire(&c, NULL);
	cr_assert_eq(res.r, 0, "repeat: %d", res.r);
	cr_assert(res.fds_ok, "the descriptors work");
	/* killed while the consumer holds a kept connection to it */
	kill(t.pid, SIGKILL);
	abd_test_wait(t.pid);
	close(t.stop_w);
	int64_t t0 = abd__now_ns();
	res = stepper_acquire(&c, NULL);
	cr_assert(res.r == -ESRCH || res.r == -ECONNRESET || res.r == -ECONNREFUSED,
	          "a clear error, not %d", res.r);
	cr_assert_lt(abd__now_ns() - t0, TIMEOUT_NS, "no wait for the timeout");
	stepper_stop(&c, NULL);
	abd_test_rmtree(t.dir);
}

/* Send a raw keep-alive request (type 3) for local.svc on s. */
static void send_keep_request(int s)
{
	struct abd__hs_request req = { .keep = true };
	strcpy(req.service, "local.svc");
	uint8_t msg[128];
	long n = abd__hs_request_encode(&req, msg, sizeof(msg));
	cr_assert_gt(n, 0);
	cr_assert_eq(msg[5], ABD__HS_REQUEST_KEEP);
	cr_assert_eq(send(s, msg, (size_t)n, MSG_DONTWAIT), n);
}

/* Read one reply from s (closing what it carried); returns its kept flag, or -errno. */
static int read_reply(int s)
{
	uint8_t rb[ABD__HS_MSG_MAX];
	int fds[ABD__HS_FDS_MAX];
	unsigned nf = 0;
	long k = abd__hs_recv(s, rb, sizeof(rb), fds, ABD__HS_FDS_MAX, &nf);
	for (unsigned i = 0; i < nf; i++)
		close(fds[i]);
	if (k < 0)
		return (int)k;
	struct abd__hs_reply rep;
	int r = abd__hs_reply_parse(rb, (size_t)k, &rep);
	cr_assert_eq(r, 0, "%d", r);
	cr_assert_eq(rep.status, 0);
	cr_assert_eq(nf, 2);
	return rep.kept;
}

ABD_TEST(acquire, a_kept_connection_that_spams_or_goes_silent_is_bounded)
{
	struct local l;
	local_start(&l);
	int before = abd_test_count_fds();
	cr_assert_eq(abd_acquire_server_set_timeout(l.srv, 100 * 1000000), 0);

	/* a version-1 request is answered and the connection closed, as before */
	int s0 = raw_connect(l.path);
	struct abd__hs_request req1 = { 0 };
	strcpy(req1.service, "local.svc");
	uint8_t msg[128];
	long n = abd__hs_request_encode(&req1, msg, sizeof(msg));
	cr_assert_eq(msg[5], ABD__HS_REQUEST);
	cr_assert_eq(send(s0, msg, (size_t)n, 0), n);
	cr_assert_eq(abd_acquire_server_process(l.srv), 1);
	cr_assert_eq(stats_of(&l).pending, 0, "one request, one answer, closed");
	cr_assert_eq(read_reply(s0), 0, "not kept");
	cr_assert_eq(read_reply(s0), -ECONNRESET);
	close(s0);

	/* a keep-alive client that asks again and again without reading the replies */
	int s = raw_connect(l.path);
	send_keep_request(s);
	cr_assert_eq(abd_acquire_server_process(l.srv), 1);
	cr_assert_eq(stats_of(&l).kept, 1);
	int rounds = 0;
	for (; rounds < 200 && stats_of(&l).pending; rounds++) {
		for (int k = 0; k < 4; k++) {
			struct abd__hs_request req = { .keep = true };
			strcpy(req.service, "local.svc");
			long m = abd__hs_request_encode(&req, msg, sizeof(msg));
			if (send(s, msg, (size_t)m, MSG_DONTWAIT) != m)
				break; /* the server's queue is full: it does not read faster than it answers */
		}
		/* never blocks: each call does a bounded amount of work */
		cr_assert_geq(abd_acquire_server_process(l.srv), 0);
	}
	struct abd_acquire_server_stats st = stats_of(&l);
	cr_assert_eq(st.pending, 0, "the spammer was dropped (after %d rounds)", rounds);
	cr_assert_lt(st.served, 40, "only a few replies were in flight: %llu",
	             (unsigned long long)st.served);
	/* its queue holds every reply sent (the one refused was not), then EOF; the server
	 * closed with requests unread, so the first read may say ECONNRESET (sk_err) */
	unsigned got = 0, resets = 0;
	for (;;) {
		int kept = read_reply(s);
		if (kept == 1)
			got++;
		else if (kept == -ECONNRESET && resets++ == 0)
			continue;
		else
			break;
	}
	cr_assert_eq(got, st.served - 1, "%u replies read, %llu sent", got,
	             (unsigned long long)st.served - 1); /* one went to s0 */
	close(s);

	/* a keep-alive client that goes silent after its answer: dropped at the idle deadline */
	int s2 = raw_connect(l.path);
	send_keep_request(s2);
	abd_acquire_server_process(l.srv);
	cr_assert_eq(stats_of(&l).kept, 1);
	cr_assert_eq(read_reply(s2), 1, "kept");
	struct timespec ts = { 0, 150 * 1000000 };
	nanosleep(&ts, NULL);
	abd_acquire_server_process(l.srv);
	st = stats_of(&l);
	cr_assert_eq(st.pending, 0);
	cr_assert_eq(st.expired, 1);
	cr_assert_eq(read_reply(s2), -ECONNRESET);
	close(s2);
	cr_assert_eq(abd_test_count_fds(), before, "the server kept nothing");

	/* and it still serves */
	struct tresult res = serve_one_consumer(&l);
	cr_assert_eq(res.r, 0, "%d", res.r);
	local_stop(&l);
}

/* ---------------------------------------------------------------- the lookup's descriptor -- */

/* The record file of service in dir ("<service>.<32 hex>"), its name into name. */
static void record_file(const char *dir, const char *service, char *name, size_t size)
{
	struct abd_registry *reg;
	cr_assert_eq(abd_registry_open(dir, 0, &reg, NULL, 0), 0);
	struct abd_snapshot *snap;
	cr_assert_eq(abd_registry_snapshot(reg, &snap), 0);
	name[0] = 0;
	for (size_t i = 0; i < abd_snapshot_count(snap); i++) {
		const struct abd_entry *e = abd_snapshot_entry(snap, i);
		if (e->service && !strcmp(e->service, service))
			snprintf(name, size, "%s", e->name);
	}
	abd_snapshot_free(snap);
	abd_registry_free(reg);
	cr_assert_neq(name[0], 0, "no record of %s", service);
}

ABD_TEST(acquire, lookup_keeps_the_record_descriptor_for_the_acquisition)
{
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "kept.svc");
	start(&t);
	char name[ABD_RECORD_NAME_MAX + 1], moved[ABD_RECORD_NAME_MAX + 1];
	record_file(dir, "kept.svc", name, sizeof(name));
	struct abd_registry *reg[3];
	struct abd_record *rec[3];
	int before = abd_test_count_fds();
	for (int i = 0; i < 3; i++)
		cr_assert_eq(abd_registry_open(dir, 0, &reg[i], NULL, 0), 0);
	int opened = abd_test_count_fds();
	/* a snapshot keeps nothing; a lookup keeps the one record's descriptor in its handle */
	struct abd_snapshot *snap;
	cr_assert_eq(abd_registry_snapshot(reg[0], &snap), 0);
	abd_snapshot_free(snap);
	cr_assert_eq(abd_test_count_fds(), opened);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(abd_registry_lookup(reg[i], "kept.svc", &rec[i]), 0);
	cr_assert_eq(abd_test_count_fds(), opened + 2, "one record descriptor per lookup");
	/* a second lookup of the same record through the same handle keeps no second one */
	cr_assert_eq(abd_registry_lookup(reg[0], "kept.svc", &rec[2]), 0);
	abd_record_free(rec[2]);
	cr_assert_eq(abd_test_count_fds(), opened + 2);
	/* The record moves to another name (same file, still linked, still locked): an
	 * acquisition through a looked-up handle asks the lock through the lookup's descriptor
	 * and succeeds; one through a handle that never looked it up opens the record by name,
	 * finds none, and says the publisher is gone. */
	snprintf(moved, sizeof(moved), "moved.svc%s", strchr(name, '.'));
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(dfd, 0);
	cr_assert_eq(renameat(dfd, name, dfd, moved), 0, "%s", strerror(errno));
	struct abd_acquired *a = NULL;
	if (abd_probe_has(ABD_FEAT_PIDFD_GETFD) == 1) {
		cr_assert_eq(abd_acquire(reg[0], rec[0], ABD_ACQUIRE_PIDFD_GETFD, TIMEOUT_NS, &a), 0);
		cr_assert_eq(tpub_check_fds_ex(a, true), 1, "%s", tpub_check_why);
		abd_acquired_free(a);
		cr_assert_eq(abd_acquire(reg[2], rec[0], ABD_ACQUIRE_PIDFD_GETFD, TIMEOUT_NS, &a),
		             -ESRCH);
	}
	cr_assert_eq(abd_acquire(reg[1], rec[1], ABD_ACQUIRE_SCM_RIGHTS, TIMEOUT_NS, &a), 0);
	abd_acquired_free(a);
	cr_assert_eq(abd_acquire(reg[2], rec[1], ABD_ACQUIRE_SCM_RIGHTS, TIMEOUT_NS, &a), -ESRCH);
	cr_assert_eq(renameat(dfd, moved, dfd, name), 0);
	close(dfd);
	for (int i = 0; i < 2; i++)
		abd_record_free(rec[i]);
	for (int i = 0; i < 3; i++)
		abd_registry_free(reg[i]);
	cr_assert_eq(abd_test_count_fds(), before);
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
}

ABD_TEST(acquire, lookup_descriptors_are_bounded_per_handle)
{
	/* one entry per publisher process, 8 of them: the ninth lookup evicts (and closes) one */
	enum { NPUB = 9, KEPT = 8 };
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct tpub t[NPUB];
	for (int i = 0; i < NPUB; i++) {
		char svc[32];
		snprintf(svc, sizeof(svc), "bound.%d", i);
		tpub_init(&t[i], dir, svc);
		start(&t[i]);
	}
	struct abd_registry *reg;
	cr_assert_eq(abd_registry_open(dir, 0, &reg, NULL, 0), 0);
	int opened = abd_test_count_fds();
	for (int i = 0; i < NPUB; i++) {
		struct abd_record *rec;
		cr_assert_eq(abd_registry_lookup(reg, t[i].service, &rec), 0);
		abd_record_free(rec);
		cr_assert_eq(abd_test_count_fds(), opened + (i < KEPT ? i + 1 : KEPT),
		             "after %d lookups", i + 1);
	}
	/* the evicted publisher is acquired as any other: its record opened again */
	struct abd_record *rec;
	cr_assert_eq(abd_registry_lookup(reg, t[0].service, &rec), 0);
	struct abd_acquired *a = NULL;
	cr_assert_eq(abd_acquire(reg, rec, 0, TIMEOUT_NS, &a), 0);
	abd_acquired_free(a);
	abd_record_free(rec);
	abd_registry_free(reg);
	/* the last forked holds the stop pipes of the ones before it: stopped first */
	for (int i = NPUB - 1; i >= 0; i--)
		cr_assert_eq(tpub_stop(&t[i]), 0);
	abd_test_rmtree(dir);
}

/* A consumer that looks the service up, then (once told) acquires through that handle by the
 * pidfd path and another by the handshake: results out. */
struct late_consumer {
	const char *dir;
	int ask_w, done_r, out_w;
};

static int late_consumer_main(void *arg)
{
	struct late_consumer *c = arg;
	int res[2] = { -1, -1 };
	struct abd_registry *reg[2];
	struct abd_record *rec[2];
	for (int i = 0; i < 2; i++)
		if (abd_registry_open(c->dir, 0, &reg[i], NULL, 0) < 0 ||
		    abd_registry_lookup(reg[i], "local.svc", &rec[i]) < 0)
			return 2;
	char b = 'w';
	if (write(c->ask_w, &b, 1) != 1 || read(c->done_r, &b, 1) != 1)
		return 3;
	const unsigned flags[2] = { ABD_ACQUIRE_PIDFD_GETFD, ABD_ACQUIRE_SCM_RIGHTS };
	for (int i = 0; i < 2; i++) {
		struct abd_acquired *a = NULL;
		res[i] = abd_probe_has(ABD_FEAT_PIDFD_GETFD) == 1 || i ?
		                 abd_acquire(reg[i], rec[i], flags[i], TIMEOUT_NS, &a) : -ESRCH;
		abd_acquired_free(a);
		abd_record_free(rec[i]);
		abd_registry_free(reg[i]);
	}
	return write(c->out_w, res, sizeof(res)) == (ssize_t)sizeof(res) ? 0 : 5;
}

/* Holds what it inherited until pipe p reaches EOF. */
static int hold_until_eof(void *arg)
{
	int *p = arg;
	char b;
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	close(p[1]);
	while (read(p[0], &b, 1) > 0)
		;
	return 0;
}

struct kept_lock {
	struct local *l;
	int hold[2];
	int probe;
	pid_t holder;
};

/* A child inherits the record's descriptor (and lock), then the publisher withdraws. */
static void act_withdraw_under_a_kept_lock(void *arg)
{
	struct kept_lock *k = arg;
	k->probe = openat(abd_registry_fd(k->l->reg), abd_publication_name(k->l->pub),
	                  O_RDONLY | O_CLOEXEC);
	cr_assert_geq(k->probe, 0);
	k->holder = abd_test_fork(hold_until_eof, k->hold);
	close(k->hold[0]);
	act_withdraw(k->l);
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	cr_assert_eq(fcntl(k->probe, F_OFD_GETLK, &fl), 0);
	cr_assert_neq(fl.l_type, F_UNLCK, "the holder keeps the lock");
}

ABD_TEST(acquire, lookup_descriptor_still_sees_a_withdrawal_under_a_kept_lock)
{
	/* The lookup's record descriptor was opened before the descriptors are taken: the lock
	 * seen through it afterwards does not show the record was not withdrawn meanwhile (a
	 * forked child of the publisher shares the record's open file description and keeps the
	 * lock), so the first acquisition also asks that it is still linked. */
	struct local l;
	local_start(&l);
	struct talk t;
	talk_open(&t);
	struct kept_lock k = { .l = &l, .probe = -1, .holder = -1 };
	cr_assert_eq(pipe2(k.hold, O_CLOEXEC), 0);
	struct late_consumer c = { .dir = l.dir, .ask_w = t.ask[1], .done_r = t.done[0],
	                           .out_w = t.out[1] };
	pid_t pid = abd_test_fork(late_consumer_main, &c);
	talk_forked(&t);
	int res[2];
	talk_serve(&t, l.srv, act_withdraw_under_a_kept_lock, &k, res, sizeof(res));
	talk_close(&t);
	close(k.hold[1]);
	close(k.probe);
	pid_t holder = k.holder;
	cr_assert_eq(abd_test_wait(pid), 0);
	cr_assert_eq(abd_test_wait(holder), 0);
	cr_assert_eq(res[0], -ESRCH, "pidfd path after the withdrawal: %d", res[0]);
	cr_assert_eq(res[1], -ESRCH, "handshake after the withdrawal: %d", res[1]);
	local_stop(&l);
}

ABD_TEST(acquire, a_kept_connection_to_a_stopped_publisher_times_out)
{
	struct tpub t = { .service = "stopped.svc", .allow_uid = (uid_t)-1,
		          .allow_gid = (gid_t)-1 };
	abd_test_mkdtemp(t.dir, sizeof(t.dir));
	start(&t);
	struct stepper c;
	stepper_start(&c, t.dir, t.service, 300 * 1000000);
	struct tresult res = stepper_acquire(&c, NULL);
	cr_assert_eq(res.r, 0, "%d", res.r);
	res = stepper_acquire(&c, NULL);
	cr_assert_eq(res.r, 0, "repeat on the kept connection: %d", res.r);
	/* alive, its lock held, its connection open, but it answers nothing */
	cr_assert_eq(kill(t.pid, SIGSTOP), 0);
	res = stepper_acquire(&c, NULL);
	cr_assert_eq(res.r, -ETIMEDOUT, "bounded by the timeout: %d", res.r);
	cr_assert_eq(kill(t.pid, SIGCONT), 0);
	/* the timed-out connection was closed (its late reply must not answer this request) */
	res = stepper_acquire(&c, NULL);
	cr_assert_eq(res.r, 0, "a new connection: %d", res.r);
	cr_assert(res.fds_ok, "the descriptors work");
	stepper_stop(&c, NULL);
	tpub_stop(&t);
	abd_test_rmtree(t.dir);
}

/* A consumer that acquires (keeping the connection), forks a child that acquires through
 * the same registry handle, then acquires again itself. */
struct forking_consumer {
	const char *dir;
	int out_w;
};

static int forking_consumer_main(void *arg)
{
	struct forking_consumer *c = arg;
	struct abd_registry *reg;
	struct abd_record *rec;
	if (abd_registry_open(c->dir, 0, &reg, NULL, 0) < 0 ||
	    abd_registry_lookup(reg, "local.svc", &rec) < 0)
		return 2;
	int res[3];
	struct abd_acquired *a = NULL;
	res[0] = abd_acquire(reg, rec, ABD_ACQUIRE_SCM_RIGHTS, TIMEOUT_NS, &a);
	abd_acquired_free(a);
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		a = NULL;
		int r = abd_acquire(reg, rec, ABD_ACQUIRE_SCM_RIGHTS, TIMEOUT_NS, &a);
		abd_acquired_free(a);
		_exit(r == 0 ? 0 : 1);
	}
	int st = -1;
	waitpid(pid, &st, 0);
	res[1] = WIFEXITED(st) ? WEXITSTATUS(st) : 100;
	a = NULL;
	res[2] = abd_acquire(reg, rec, ABD_ACQUIRE_SCM_RIGHTS, TIMEOUT_NS, &a);
	abd_acquired_free(a);
	abd_record_free(rec);
	abd_registry_free(reg);
	return write(c->out_w, res, sizeof(res)) == (ssize_t)sizeof(res) ? 0 : 3;
}

ABD_TEST(acquire, a_forked_child_connects_its_own_kept_connection)
{
	struct local l;
	local_start(&l);
	int out[2];
	cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
	struct forking_consumer c = { .dir = l.dir, .out_w = out[1] };
	pid_t pid = abd_test_fork(forking_consumer_main, &c);
	close(out[1]);
	int res[3];
	for (;;) {
		struct pollfd pf[2] = { { .fd = out[0], .events = POLLIN },
		                        { .fd = abd_acquire_server_fd(l.srv), .events = POLLIN } };
		cr_assert_geq(poll(pf, 2, 5000), 0);
		abd_acquire_server_process(l.srv);
		if (pf[0].revents) {
			cr_assert_eq(read(out[0], res, sizeof(res)), (ssize_t)sizeof(res));
			break;
		}
	}
	close(out[0]);
	cr_assert_eq(abd_test_wait(pid), 0);
	cr_assert_eq(res[0], 0, "%d", res[0]);
	cr_assert_eq(res[1], 0, "the child's acquisition");
	cr_assert_eq(res[2], 0, "the parent's repeat after the child: %d", res[2]);
	struct abd_acquire_server_stats st = stats_of(&l);
	cr_assert_eq(st.served, 3);
	cr_assert_eq(st.accepted, 2, "the child connected its own, the parent kept its: %llu",
	             (unsigned long long)st.accepted);
	local_stop(&l);
}

/* ---------------------------------------------------------------- closing with close_range -- */

enum close_mode {
	CLOSE_DENIED,          /* close(2) refused (EPERM): only a close_range can close them */
	CLOSE_DENIED_MASKED,   /* the same, with close_range switched off in the probe */
	CLOSE_RANGE_ENOSYS,    /* close_range refused (ENOSYS) although the probe has it */
};

struct close_child {
	const char *dir;
	enum close_mode mode;
	int out_w;
};

/* Acquire (automatic path) with every descriptor number below the highest in use taken, so
 * the slots get consecutive numbers; then free the acquisition under a seccomp filter and
 * report how many of its descriptors are still open. */
static int close_child_main(void *arg)
{
	struct close_child *c = arg;
	int res[3] = { -1, -1, -1 }; /* acquire result, consecutive, still open */
	if (c->mode == CLOSE_DENIED_MASKED)
		abd_features_disable(ABD_FEATURE_BIT(ABD_FEAT_CLOSE_RANGE));
	int top = -1;
	for (int fd = 0; fd < 256; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			top = fd;
	for (int fd; (fd = fcntl(0, F_DUPFD_CLOEXEC, 0)) >= 0 && fd < top;)
		; /* holes filled (these stay open until exit) */
	struct abd_acquired *a = NULL;
	res[0] = tpub_acquire(c->dir, "close.svc", 0, TIMEOUT_NS, &a);
	int fds[2] = { abd_acquired_fd(a, "ring"), abd_acquired_fd(a, "wake") };
	res[1] = res[0] == 0 && fds[1] == fds[0] + 1;
	int r = c->mode == CLOSE_RANGE_ENOSYS ? deny_by_arg(SYS_close_range, -1, 0, 0, NULL, 0, ENOSYS)
	                                      : deny_by_arg(SYS_close, -1, 0, 0, NULL, 0, EPERM);
	if (r < 0)
		return 6;
	abd_acquired_free(a);
	res[2] = (fcntl(fds[0], F_GETFD) >= 0) + (fcntl(fds[1], F_GETFD) >= 0);
	return write(c->out_w, res, sizeof(res)) == (ssize_t)sizeof(res) ? 0 : 5;
}

static void close_case(const char *dir, enum close_mode mode, int *res)
{
	int p[2];
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	struct close_child c = { .dir = dir, .mode = mode, .out_w = p[1] };
	pid_t pid = abd_test_fork(close_child_main, &c);
	close(p[1]);
	ssize_t n = read(p[0], res, 3 * sizeof(int));
	close(p[0]);
	cr_assert_eq(abd_test_wait(pid), 0);
	cr_assert_eq(n, (ssize_t)(3 * sizeof(int)));
	cr_assert_eq(res[0], 0, "acquire: %d", res[0]);
	cr_assert_eq(res[1], 1, "the slots got consecutive numbers");
}

ABD_TEST(acquire, acquired_free_closes_a_run_with_one_close_range)
{
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "close.svc");
	start(&t);
	int res[3];
	/* close(2) refused: the descriptors are closed only if one close_range closed them */
	close_case(dir, CLOSE_DENIED, res);
	if (abd_probe_has(ABD_FEAT_CLOSE_RANGE) == 1)
		cr_assert_eq(res[2], 0, "%d still open: not closed by close_range", res[2]);
	else
		cr_assert_eq(res[2], 2, "%s has no close_range, yet something closed them",
		             abd_test_profile());
	/* switched off by the feature mask: close(2) only, which is refused here */
	close_case(dir, CLOSE_DENIED_MASKED, res);
	cr_assert_eq(res[2], 2, "close_range used although masked");
	/* close_range refused by a filter the probe did not see: closed one by one */
	close_case(dir, CLOSE_RANGE_ENOSYS, res);
	cr_assert_eq(res[2], 0, "%d still open after the fallback", res[2]);
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
}

/* ---------------------------------------------------------------- pidfs handles -- */

ABD_TEST(acquire, pidfs_handle_follows_the_profile_and_the_mask)
{
	int has = abd_probe_has(ABD_FEAT_PIDFS_HANDLE);
	if (profile_is("linux-5.4")) {
		cr_assert_eq(has, 0, "5.4 has no pidfs, so no pidfs handles");
	} else {
		/* our own pidfd opened again by its inode, with no mount descriptor */
		int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
		cr_assert_geq(pidfd, 0);
		struct stat st, hst;
		cr_assert_eq(fstat(pidfd, &st), 0);
		struct {
			unsigned int bytes;
			int type;
			uint64_t ino;
		} h = { 8, 0xfe /* FILEID_KERNFS */, (uint64_t)st.st_ino };
		int fd = (int)syscall(SYS_open_by_handle_at, -10002L /* FD_PIDFS_ROOT */, &h,
		                      (long)O_CLOEXEC);
		bool works = fd >= 0 && fstat(fd, &hst) == 0 && hst.st_ino == st.st_ino;
		if (fd >= 0)
			close(fd);
		close(pidfd);
		cr_assert_eq(has, works && abd_probe_has(ABD_FEAT_PIDFS_INO) == 1);
	}
	int before = abd_probe_error(ABD_FEAT_PIDFS_HANDLE);
	abd_features_disable(ABD_FEATURE_BIT(ABD_FEAT_PIDFS_HANDLE));
	cr_assert_eq(abd_probe_has(ABD_FEAT_PIDFS_HANDLE), 0);
	/* the mask's reason where the kernel had it; where it had not (6.1: EOPNOTSUPP), the
	 * kernel's reason stays */
	cr_assert_eq(abd_probe_error(ABD_FEAT_PIDFS_HANDLE), has ? -ECANCELED : before);
}

/* A consumer that may not call pidfd_open (seccomp: EPERM): what it acquires, it acquired by
 * opening the publisher's pidfd from the record's pidfs inode. */
struct handle_consumer {
	const char *dir;
	const struct abd_record *rec, *forged;
	uid_t uid;
	int ask_w, done_r, out_w;
};

static int handle_first_acquire(const char *dir, const struct abd_record *rec)
{
	struct abd_registry *reg;
	int r = abd_registry_open(dir, 0, &reg, NULL, 0);
	if (r < 0)
		return 1000 + r;
	struct abd_acquired *a = NULL;
	r = abd_acquire(reg, rec, ABD_ACQUIRE_PIDFD_GETFD, TIMEOUT_NS, &a);
	if (r == 0 && tpub_check_fds(a) != 1)
		r = 2000;
	abd_acquired_free(a);
	abd_registry_free(reg);
	return r;
}

static int handle_consumer_main(void *arg)
{
	struct handle_consumer *c = arg;
	int res[3];
	if (c->uid && tpub_drop_to(c->uid, c->uid) < 0)
		return 2;
	(void)abd_probe_features(); /* the probe runs before the filter */
	if (deny_by_arg(SYS_pidfd_open, -1, 0, 0, NULL, 0, EPERM) < 0)
		return 6;
	res[0] = handle_first_acquire(c->dir, c->rec);
	res[1] = handle_first_acquire(c->dir, c->forged ? c->forged : c->rec);
	char b = 'k';
	if (write(c->ask_w, &b, 1) != 1 || read(c->done_r, &b, 1) != 1)
		return 3;
	res[2] = handle_first_acquire(c->dir, c->rec); /* the publisher was killed meanwhile */
	return write(c->out_w, res, sizeof(res)) == (ssize_t)sizeof(res) ? 0 : 5;
}

static void handle_case(uid_t uid)
{
	char dir[64];
	shared_dir(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "handle.svc");
	t.uid = uid;
	t.gid = uid;
	start(&t);
	struct abd_registry *reg;
	cr_assert_eq(abd_registry_open(dir, 0, &reg, NULL, 0), 0);
	struct abd_record *rec;
	cr_assert_eq(abd_registry_lookup_opts(reg, "handle.svc", &tpub_trust_any, &rec), 0);
	abd_registry_free(reg);
	/* another live process (root's: pidfs lets anyone open a handle of a process it can
	 * see), whose inode a forged record carries with the publisher's pid */
	pid_t other = abd_test_fork(linger, NULL);
	int opfd = (int)syscall(SYS_pidfd_open, other, 0);
	cr_assert_geq(opfd, 0);
	struct stat ost;
	cr_assert_eq(fstat(opfd, &ost), 0);
	close(opfd);
	struct abd_record *forged = NULL; /* a 1.0 record (no pidfs here) has no inode to forge */
	if (abd_record_pidfs_ino(rec)) {
		forged = forge(rec, 0, 0, abd_record_pidfs_ino(rec) ^ (uint64_t)ost.st_ino, false);
		cr_assert_eq(abd_record_pidfs_ino(forged), (uint64_t)ost.st_ino);
	}

	struct talk tk;
	talk_open(&tk);
	struct handle_consumer c = { .dir = dir, .rec = rec, .forged = forged, .uid = uid,
	                             .ask_w = tk.ask[1], .done_r = tk.done[0], .out_w = tk.out[1] };
	pid_t pid = abd_test_fork(handle_consumer_main, &c);
	talk_forked(&tk);
	char b;
	cr_assert_eq(read(tk.ask[0], &b, 1), 1, "consumer: first two acquisitions");
	tpub_kill(&t);
	cr_assert_eq(write(tk.done[1], "d", 1), 1);
	int res[3];
	cr_assert_eq(read(tk.out[0], res, sizeof(res)), (ssize_t)sizeof(res));
	talk_close(&tk);
	cr_assert_eq(abd_test_wait(pid), 0);
	kill(other, SIGKILL);
	abd_test_wait(other);

	bool has = abd_probe_has(ABD_FEAT_PIDFS_HANDLE) == 1 &&
	           abd_probe_has(ABD_FEAT_PIDFS_INO) == 1 &&
	           abd_probe_has(ABD_FEAT_PIDFD_GET_INFO) == 1;
	if (!has) {
		/* pidfd_open is the only way, and it is refused */
		for (int i = 0; i < 3; i++)
			cr_assert_eq(res[i], -EPERM, "%s, acquisition %d: %d", abd_test_profile(), i, res[i]);
	} else {
		if (abd_probe_has(ABD_FEAT_PIDFD_GETFD) == 1 && abd_probe_ptrace_scope() <= 0)
			cr_assert_eq(res[0], 0, "uid %u: by the handle: %d", (unsigned)uid, res[0]);
		cr_assert_eq(res[1], -ESTALE, "another process's inode: %d", res[1]);
		cr_assert_eq(res[2], -ESRCH, "dead publisher: %d", res[2]);
	}
	abd_record_free(forged);
	abd_record_free(rec);
	abd_test_rmtree(dir);
}

ABD_TEST(acquire, first_acquisition_opens_the_pidfd_by_its_pidfs_inode)
{
	handle_case(0);
}

ABD_TEST(acquire, first_acquisition_by_pidfs_inode_as_an_ordinary_user)
{
	require_root();
	handle_case(USER_A);
}

/* ---------------------------------------------------------------- paths others can write -- */

/* A user's records naming sockets it does not own: what each must cost the consumer. */
struct liar {
	const char *dir;
	const char *sockets[4]; /* one record "liar.N" per socket name */
	int ready_w, stop_r, stop_w;
};

static int liar_main(void *arg)
{
	struct liar *l = arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	close(l->stop_w);
	if (tpub_drop_to(USER_A, USER_A) < 0)
		return 10;
	struct abd_registry *reg;
	if (abd_registry_open(l->dir, 0, &reg, NULL, 0) < 0)
		return 11;
	int memfd = memfd_create("x", MFD_CLOEXEC);
	struct abd_publication *pubs[4] = { 0 };
	for (int i = 0; i < 4 && l->sockets[i]; i++) {
		char svc[16];
		snprintf(svc, sizeof(svc), "liar.%d", i);
		struct abd_record *rec;
		if (abd_record_new(svc, &rec) < 0 || abd_record_add_fd(rec, "ring", memfd, ABD_FD_MEMFD) < 0 ||
		    abd_record_set_socket(rec, l->sockets[i]) < 0 || abd_publish(reg, rec, &pubs[i]) < 0)
			return 12;
		abd_record_free(rec);
	}
	char one = 1;
	if (write(l->ready_w, &one, 1) != 1)
		return 13;
	char c;
	while (read(l->stop_r, &c, 1) < 0 && errno == EINTR)
		;
	return 0;
}

/* A listening socket bound at dir/name by a process of uid (0: this one); the listening
 * descriptor is ours either way (a child of uid binds and listens on our descriptor, so the
 * socket's file and its SO_PEERCRED are that child's). */
static int listener_at(const char *dir, const char *name, uid_t uid)
{
	int l = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	cr_assert_geq(l, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir, name);
	if (!uid) {
		cr_assert_eq(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
		cr_assert_eq(listen(l, 8), 0);
		return l;
	}
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(tpub_drop_to(uid, uid) < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
		      listen(l, 8) < 0 ? 1 : 0);
	cr_assert_eq(abd_test_wait(pid), 0, "the uid %u listener", (unsigned)uid);
	return l;
}

/* Did anyone connect to l (bytes: and send anything)? */
static bool was_reached(int l, bool bytes)
{
	int c = accept4(l, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (c < 0)
		return false;
	char buf[256];
	ssize_t n = recv(c, buf, sizeof(buf), MSG_DONTWAIT);
	close(c);
	return !bytes || n > 0;
}

ABD_TEST(paths, handshake_checks_the_socket_and_its_listener_before_a_byte)
{
	require_root();
	char dir[64], other[64];
	shared_dir(dir, sizeof(dir));
	abd_test_mkdtemp(other, sizeof(other));
	/* root's sockets a user's record may name: one elsewhere (absolute path), one in the
	 * registry (a root service's handshake socket, say), one reached by a symlink the user
	 * made; and a user-owned socket whose listener is another process of that user */
	const char *root_name = ".abd-00000000000000000000000000000001.sock";
	const char *link_name = ".abd-00000000000000000000000000000002.sock";
	const char *pid_name = ".abd-00000000000000000000000000000003.sock";
	int l_abs = listener_at(other, "svc.sock", 0);
	int l_root = listener_at(dir, root_name, 0);
	int l_pid = listener_at(dir, pid_name, USER_A);
	char abs[128], target[128], linkp[128];
	snprintf(abs, sizeof(abs), "%s/svc.sock", other);
	snprintf(target, sizeof(target), "%s/%s", dir, root_name);
	snprintf(linkp, sizeof(linkp), "%s/%s", dir, link_name);
	cr_assert_eq(symlink(target, linkp), 0);
	cr_assert_eq(lchown(linkp, USER_A, USER_A), 0);

	struct liar l = { .dir = dir, .sockets = { abs, root_name, link_name, pid_name } };
	int rp[2], sp[2];
	cr_assert_eq(pipe2(rp, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(sp, O_CLOEXEC), 0);
	l.ready_w = rp[1];
	l.stop_r = sp[0];
	l.stop_w = sp[1];
	pid_t pid = abd_test_fork(liar_main, &l);
	close(rp[1]);
	close(sp[0]);
	char c;
	cr_assert_eq(read(rp[0], &c, 1), 1, "the liar failed to publish");
	close(rp[0]);

	struct abd_registry *reg;
	cr_assert_eq(abd_registry_open(dir, 0, &reg, NULL, 0), 0);
	static const int want[4] = { -EBADMSG, -ESTALE, -ESTALE, -ESTALE };
	static const char *const what[4] = { "an absolute path", "root's socket",
		                                 "a symlink to root's socket",
		                                 "a socket of the user another process listens on" };
	int ls[4] = { l_abs, l_root, l_root, l_pid };
	for (int i = 0; i < 4; i++) {
		char svc[16];
		snprintf(svc, sizeof(svc), "liar.%d", i);
		struct abd_record *rec;
		cr_assert_eq(abd_registry_lookup_opts(reg, svc, &tpub_trust_any, &rec), 0, "%s", svc);
		cr_assert_eq(abd_record_uid(rec), USER_A);
		struct abd_acquired *a = NULL;
		int r = abd_acquire(reg, rec, ABD_ACQUIRE_SCM_RIGHTS, 300 * 1000000, &a);
		cr_assert_eq(r, want[i], "%s: %d, want %d", what[i], r, want[i]);
		cr_assert_null(a);
		/* the socket file's kind and owner are checked before connecting; the listener's
		 * credentials (connected: SO_PEERCRED) before sending */
		bool connected = i == 3;
		cr_assert_not(was_reached(ls[i], connected), "%s: %s before it was checked", what[i],
		              connected ? "sent a request" : "connected to");
		abd_record_free(rec);
	}
	close(sp[1]);
	cr_assert_eq(abd_test_wait(pid), 0);
	close(l_abs);
	close(l_root);
	close(l_pid);
	abd_registry_free(reg);
	abd_test_rmtree(dir);
	abd_test_rmtree(other);
}

static mode_t mode_at(const char *dir, const char *name)
{
	char path[256];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	cr_assert_eq(lstat(path, &st), 0, "%s: %s", path, strerror(errno));
	return st.st_mode;
}

ABD_TEST(paths, the_server_socket_mode_is_set_through_its_descriptor_never_its_name)
{
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct abd_registry *reg;
	cr_assert_eq(abd_registry_open(dir, 0, &reg, NULL, 0), 0);
	/* whatever the umask says, the socket is the owner's alone until a uid is allowed */
	mode_t old = umask(0);
	struct abd_acquire_server *srv;
	int r = abd_acquire_server_new(reg, 0, &srv);
	umask(old);
	cr_assert_eq(r, 0);
	char name[64];
	snprintf(name, sizeof(name), "%s", abd_acquire_server_socket(srv));
	cr_assert(S_ISSOCK(mode_at(dir, name)));
	cr_assert_eq(mode_at(dir, name) & 0777, 0600, "%o", mode_at(dir, name) & 0777);
	/* nothing of the set-up is left: no private directory, no temporary name */
	DIR *d = opendir(dir);
	cr_assert_not_null(d);
	int entries = 0;
	for (struct dirent *e; (e = readdir(d));)
		entries += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
	closedir(d);
	cr_assert_eq(entries, 1, "the socket alone");

	/* Someone who can rename in the directory moves the socket away and puts a symlink to
	 * a file of the publisher at its name: allowing a uid must not chmod that file. */
	char sock[128], moved[128], secret[128];
	snprintf(sock, sizeof(sock), "%s/%s", dir, name);
	snprintf(moved, sizeof(moved), "%s/moved.sock", dir);
	snprintf(secret, sizeof(secret), "%s/secret", dir);
	int fd = open(secret, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert_eq(chmod(secret, 0600), 0);
	cr_assert_eq(rename(sock, moved), 0);
	cr_assert_eq(symlink(secret, sock), 0);
	cr_assert_eq(abd_acquire_server_allow_uid(srv, USER_A), 0);
	cr_assert_eq(mode_at(dir, "secret") & 0777, 0600, "the symlink's target was chmod'ed: %o",
	             mode_at(dir, "secret") & 0777);
	cr_assert_eq(mode_at(dir, "moved.sock") & 0777, 0666, "the socket itself is opened up");
	/* and freeing the server leaves the name that is no longer its socket alone */
	abd_acquire_server_free(srv);
	cr_assert(S_ISLNK(mode_at(dir, name)));
	abd_registry_free(reg);
	abd_test_rmtree(dir);
}

ABD_TEST(paths, a_registry_writable_by_its_group_needs_the_sticky_bit)
{
	char dir[64], reason[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct abd_registry *reg = NULL;
	cr_assert_eq(chmod(dir, 0770), 0);
	cr_assert_eq(abd_registry_open(dir, 0, &reg, reason, sizeof(reason)), -EPERM);
	cr_assert_null(reg);
	cr_assert_not_null(strstr(reason, "group-writable without the sticky bit"), "%s", reason);
	cr_assert_eq(chmod(dir, 03770), 0);
	cr_assert_eq(abd_registry_open(dir, 0, &reg, reason, sizeof(reason)), 0, "%s", reason);
	abd_registry_free(reg);
	cr_assert_eq(chmod(dir, 0750), 0);
	cr_assert_eq(abd_registry_open(dir, 0, &reg, reason, sizeof(reason)), 0, "%s", reason);
	abd_registry_free(reg);
	abd_test_rmtree(dir);
}

/* In a private mount namespace with empty /run, /dev/shm and /tmp: what another user (B) put
 * at user A's private fallbacks, and what abd_registry_open(NULL) as A must make of it.
 * Returns a bit per failed case. */
enum { FB_SYMLINK = 1, FB_SHARED_MODE = 2, FB_OTHER_OWNER = 4, FB_FRESH = 8, FB_SETUP = 64 };

static int fallback_case(const char *xdg, int want, const char *want_reason, const char *want_path)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		if (tpub_drop_to(USER_A, USER_A) < 0)
			_exit(2);
		unsetenv("ABD_REGISTRY");
		if (xdg)
			setenv("XDG_RUNTIME_DIR", xdg, 1);
		else
			unsetenv("XDG_RUNTIME_DIR");
		umask(077);
		struct abd_registry *reg = NULL;
		char reason[256] = "";
		int r = abd_registry_open(NULL, 0, &reg, reason, sizeof(reason));
		if (r != want) {
			fprintf(stderr, "open: %d, want %d (%s)\n", r, want, reason);
			_exit(1);
		}
		if (r < 0 && !strstr(reason, want_reason)) {
			fprintf(stderr, "reason: %s\n", reason);
			_exit(1);
		}
		if (r == 0) {
			struct stat st;
			if (strcmp(abd_registry_path(reg), want_path) != 0 ||
			    fstat(abd_registry_fd(reg), &st) < 0 || (st.st_mode & 07777) != 0700 ||
			    st.st_uid != USER_A) {
				fprintf(stderr, "opened %s\n", abd_registry_path(reg));
				_exit(1);
			}
		}
		abd_registry_free(reg);
		_exit(0);
	}
	return abd_test_wait(pid);
}

static int fallbacks_main(void *arg)
{
	(void)arg;
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return FB_SETUP;
	static const char *const mnts[] = { "/run", "/dev/shm", "/tmp" };
	for (int i = 0; i < 3; i++)
		if (mount("tmpfs", mnts[i], "tmpfs", 0, "mode=1777") < 0)
			return FB_SETUP;
	int bad = 0;
	char shm[64], tmp[64];
	snprintf(shm, sizeof(shm), "/dev/shm/abd-%u", USER_A);
	snprintf(tmp, sizeof(tmp), "/tmp/abd-%u", USER_A);
	/* B's symlink at A's name, to a directory of A's (B knows one): never followed */
	if (mkdir("/tmp/a-dir", 0700) < 0 || chown("/tmp/a-dir", USER_A, USER_A) < 0 ||
	    symlink("/tmp/a-dir", shm) < 0 || lchown(shm, USER_B, USER_B) < 0)
		return FB_SETUP;
	if (fallback_case(NULL, -EPERM, "not a directory", NULL) != 0)
		bad |= FB_SYMLINK;
	unlink(shm);
	/* A's own $XDG_RUNTIME_DIR/abd, but open to its group and others: refused */
	if (mkdir("/tmp/xdg", 0700) < 0 || chown("/tmp/xdg", USER_A, USER_A) < 0 ||
	    mkdir("/tmp/xdg/abd", 0755) < 0 || chown("/tmp/xdg/abd", USER_A, USER_A) < 0 ||
	    chmod("/tmp/xdg/abd", 0755) < 0)
		return FB_SETUP;
	if (fallback_case("/tmp/xdg", -EPERM, "no group or other access", NULL) != 0)
		bad |= FB_SHARED_MODE;
	/* B made A's directory first: refused, not skipped for the next fallback */
	if (mkdir(shm, 0700) < 0 || chown(shm, USER_B, USER_B) < 0)
		return FB_SETUP;
	if (fallback_case(NULL, -EPERM, "must be yours", NULL) != 0)
		bad |= FB_OTHER_OWNER;
	rmdir(shm);
	/* nothing there: made 0700 whatever the umask, and used */
	if (fallback_case(NULL, 0, NULL, shm) != 0)
		bad |= FB_FRESH;
	(void)tmp;
	return bad;
}

ABD_TEST(paths, private_fallbacks_are_never_followed_nor_shared)
{
	require_root();
	pid_t pid = abd_test_fork(fallbacks_main, NULL);
	int st = abd_test_wait(pid);
	cr_assert_neq(st, FB_SETUP, "setting up the mount namespace failed");
	cr_assert_not(st & FB_SYMLINK, "a symlink at /dev/shm/abd-UID was followed");
	cr_assert_not(st & FB_SHARED_MODE, "$XDG_RUNTIME_DIR/abd with mode 0755 was used");
	cr_assert_not(st & FB_OTHER_OWNER, "another user's /dev/shm/abd-UID was not refused");
	cr_assert_not(st & FB_FRESH, "a fresh private fallback: not made 0700 or not used");
	cr_assert_eq(st, 0);
}

ABD_TEST(paths, gc_removes_a_killed_publishers_private_directory_after_60_s)
{
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct abd_registry *reg;
	cr_assert_eq(abd_registry_open(dir, 0, &reg, NULL, 0), 0);
	/* publishers killed between mkdir and rename: a private directory with the bound but
	 * closed socket, one long ago and one just now */
	const char *old = ".abd-44444444444444444444444444444444.tmp";
	const char *young = ".abd-55555555555555555555555555555555.tmp";
	char sub[128];
	for (int i = 0; i < 2; i++) {
		snprintf(sub, sizeof(sub), "%s/%s", dir, i ? young : old);
		cr_assert_eq(mkdir(sub, 0700), 0);
		dead_socket_at(sub, "s");
	}
	age_at(dir, old, 61 + 5);
	unsigned failed = 1;
	cr_assert_eq(abd_registry_gc_sockets(reg, &failed), 1, "only the old directory");
	cr_assert_eq(failed, 0);
	cr_assert_not(exists_at(dir, old));
	cr_assert(exists_at(dir, young), "a publisher may be setting up in it right now");
	age_at(dir, young, 61 + 5);
	cr_assert_eq(abd_registry_gc_sockets(reg, &failed), 1);
	cr_assert_not(exists_at(dir, young));
	abd_registry_free(reg);
	abd_test_rmtree(dir);
}

/* ---------------------------------------------------------------- no confused deputy -- */

ABD_TEST(acquire, root_takes_nothing_from_a_process_its_owner_could_not_ptrace)
{
	require_root();
	static const char *const what[] = { "an ordinary process of the user",
		                                 "a process of the user with a saved uid of root",
		                                 "a non-dumpable process of the user" };
	for (int protect = 0; protect <= TPUB_NOT_DUMPABLE; protect++) {
		char dir[64];
		shared_dir(dir, sizeof(dir));
		struct tpub t;
		tpub_init(&t, dir, "deputy.svc");
		t.uid = USER_A;
		t.gid = USER_A;
		t.protect = protect;
		start(&t);
		struct abd_acquired *a = NULL;
		int r = tpub_acquire(dir, "deputy.svc", 0, TIMEOUT_NS, &a);
		cr_assert_eq(r, 0, "%s: %d", what[protect], r);
		cr_assert(tpub_check_fds(a));
		if (!protect) {
			/* root may take from the user's ordinary process, as its owner may */
			cr_assert_eq(abd_acquired_path(a), expected_auto_path(), "%s", what[protect]);
		} else {
			/* never by pidfd_getfd: the handshake, where the publisher decides */
			cr_assert_eq(abd_acquired_path(a), ABD_FD_TRANSFER_SCM_RIGHTS,
			             "%s: taken by pidfd_getfd", what[protect]);
			if (expected_auto_path() == ABD_FD_TRANSFER_PIDFD_GETFD)
				cr_assert_eq(abd_acquired_fallback(a), -EPERM, "%s: %d", what[protect],
				             abd_acquired_fallback(a));
		}
		abd_acquired_free(a);
		a = NULL;
		r = tpub_acquire(dir, "deputy.svc", ABD_ACQUIRE_PIDFD_GETFD, TIMEOUT_NS, &a);
		if (protect)
			cr_assert_eq(r, -EPERM, "%s: forced pidfd_getfd: %d", what[protect], r);
		else if (expected_auto_path() == ABD_FD_TRANSFER_PIDFD_GETFD)
			cr_assert_eq(r, 0, "%s: %d", what[protect], r);
		abd_acquired_free(a);
		cr_assert_eq(tpub_stop(&t), 0);
		abd_test_rmtree(dir);
	}
}

/* rec's bytes with the start time (offset 40) zeroed, or the "ring" slot's kind set to kind
 * in a record of a later minor (where an unknown kind is not malformed); checksum fixed. */
static struct abd_record *forge_bare(const struct abd_record *rec, bool no_start, uint8_t kind)
{
	static uint8_t buf[ABD_RECORD_MAX];
	long len = abd_record_encode(rec, buf, sizeof(buf));
	cr_assert_gt(len, 104);
	if (no_start)
		memset(buf + 40, 0, 8);
	if (kind && buf[6] == 0) {
		/* a 1.0 record (no pidfs inode: linux-5.4): made 1.1-sized first (inode 0) */
		memmove(buf + 104, buf + 96, (size_t)len - 96);
		memset(buf + 96, 0, 8);
		len += 8;
		memcpy(buf + 8, &(uint32_t){ (uint32_t)len }, 4);
		memcpy(buf + 12, &(uint16_t){ 104 }, 2);
	}
	if (kind) {
		uint8_t *p = memmem(buf, (size_t)len, "\x04ring", 5);
		cr_assert_not_null(p);
		p[-1] = kind;
		buf[6] = 0xff; /* a later minor */
	}
	uint32_t crc = abd__crc32c(buf, (size_t)len - 4);
	memcpy(buf + len - 4, &crc, 4);
	struct abd_record *out = NULL;
	const char *why = NULL;
	cr_assert_eq(abd_record_decode(buf, (size_t)len, &out, &why), 0, "%s", why);
	return out;
}

ABD_TEST(acquire, an_unknown_slot_kind_or_no_start_time_is_refused_not_skipped)
{
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "bare.svc");
	start(&t);
	struct abd_registry *reg;
	cr_assert_eq(abd_registry_open(dir, 0, &reg, NULL, 0), 0);
	struct abd_record *rec;
	cr_assert_eq(abd_registry_lookup(reg, "bare.svc", &rec), 0);
	struct abd_record *nostart = forge_bare(rec, true, 0);
	struct abd_record *unknown = forge_bare(rec, false, 9);
	enum abd_fd_kind k;
	cr_assert_eq(abd_record_fd_at(unknown, 0, NULL, NULL, &k), 0);
	cr_assert_eq(k, ABD_FD_OTHER, "shown as other");
	struct abd_acquired *a = NULL;
	static const unsigned flags[] = { 0, ABD_ACQUIRE_PIDFD_GETFD, ABD_ACQUIRE_SCM_RIGHTS };
	for (int i = 0; i < 3; i++) {
		int r = abd_acquire(reg, unknown, flags[i], TIMEOUT_NS, &a);
		cr_assert_eq(r, -EPROTONOSUPPORT, "unknown kind, flags %u: %d", flags[i], r);
		cr_assert_null(a);
	}
	/* the pidfd path cannot tell the publisher from a reused pid without the start time: it
	 * refuses (forced), or leaves it to the handshake, which asks the process itself */
	int r = abd_acquire(reg, nostart, ABD_ACQUIRE_PIDFD_GETFD, TIMEOUT_NS, &a);
	cr_assert_eq(r, -EBADMSG, "no start time, pidfd_getfd: %d", r);
	r = abd_acquire(reg, nostart, 0, TIMEOUT_NS, &a);
	cr_assert_eq(r, 0, "%d", r);
	cr_assert_eq(abd_acquired_path(a), ABD_FD_TRANSFER_SCM_RIGHTS);
	abd_acquired_free(a);
	abd_record_free(nostart);
	abd_record_free(unknown);
	abd_record_free(rec);
	abd_registry_free(reg);
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
}

/* ---------------------------------------------------------------- bounded resources -- */

/* The pidfds this process holds: "anon_inode:[pidfd]", or a pidfs file "pidfd:[...]". */
static int count_pidfds(int *last)
{
	DIR *d = opendir("/proc/self/fd");
	cr_assert_not_null(d);
	int n = 0;
	for (struct dirent *e; (e = readdir(d));) {
		char path[64], target[64];
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		ssize_t k = readlink(path, target, sizeof(target) - 1);
		if (k <= 0)
			continue;
		target[k] = 0;
		if (strstr(target, "pidfd")) {
			n++;
			if (last)
				*last = atoi(e->d_name);
		}
	}
	closedir(d);
	return n;
}

static int acquire_through(struct abd_registry *reg, const char *service)
{
	struct abd_record *rec;
	int r = abd_registry_lookup(reg, service, &rec);
	if (r < 0)
		return r;
	struct abd_acquired *a = NULL;
	r = abd_acquire(reg, rec, ABD_ACQUIRE_PIDFD_GETFD, TIMEOUT_NS, &a);
	if (r == 0 && !tpub_check_fds(a))
		r = -EPROTO;
	abd_acquired_free(a);
	abd_record_free(rec);
	return r;
}

struct child_share {
	struct abd_registry *reg;
	const char *service;
};

/* A forked child acquiring through a handle it inherited: its own pidfd, never the parent's
 * copy (marked here by clearing its close-on-exec flag, which no pidfd the library opens
 * lacks). */
static int child_share_main(void *arg)
{
	struct child_share *c = arg;
	int inherited = -1;
	if (count_pidfds(&inherited) != 1 || fcntl(inherited, F_SETFD, 0) < 0)
		return 1;
	if (acquire_through(c->reg, c->service) < 0)
		return 2;
	int now = -1;
	if (count_pidfds(&now) != 1)
		return 3;
	return fcntl(now, F_GETFD) == FD_CLOEXEC ? 0 : 4;
}

ABD_TEST(acquire, handles_of_one_process_share_one_pidfd_per_publisher)
{
	abd_test_require(ABD_FEAT_PIDFD_GETFD);
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "share.svc");
	start(&t);
	int before = count_pidfds(NULL);
	struct abd_registry *regs[5];
	for (int i = 0; i < 5; i++) {
		cr_assert_eq(abd_registry_open(dir, 0, &regs[i], NULL, 0), 0);
		int r = acquire_through(regs[i], "share.svc");
		cr_assert_eq(r, 0, "handle %d: %d", i, r);
	}
	cr_assert_eq(count_pidfds(NULL) - before, 1, "five handles, one publisher: %d pidfds",
	             count_pidfds(NULL) - before);
	/* repeats through each handle use it too */
	for (int i = 0; i < 5; i++)
		cr_assert_eq(acquire_through(regs[i], "share.svc"), 0);
	cr_assert_eq(count_pidfds(NULL) - before, 1);
	for (int i = 0; i < 4; i++)
		abd_registry_free(regs[i]);
	cr_assert_eq(count_pidfds(NULL) - before, 1, "kept while a handle holds it");
	struct child_share c = { .reg = regs[4], .service = "share.svc" };
	int st = abd_test_wait(abd_test_fork(child_share_main, &c));
	cr_assert_eq(st, 0, "forked child: %d (4: it used its parent's pidfd)", st);
	cr_assert_eq(acquire_through(regs[4], "share.svc"), 0, "the parent's is still good");
	abd_registry_free(regs[4]);
	cr_assert_eq(count_pidfds(NULL), before, "closed with the last handle");
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
}

/* utime + stime of pid, in clock ticks */
static long cpu_ticks(pid_t pid)
{
	char buf[1024];
	long ut = 0, st = 0;
	cr_assert_eq(sscanf(proc_stat_from(pid, 14, buf, sizeof(buf)), "%ld %ld", &ut, &st), 2);
	return ut + st;
}

/* A publisher whose accept4 runs out of descriptors (RLIMIT_NOFILE a few above what it holds;
 * silent clients hold what is left and more wait in its backlog) must not spin: its CPU over
 * ~1 s stays small, and once the clients go it serves again. */
static void emfile_case(bool reactor)
{
	char dir[64];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct tpub t;
	tpub_init(&t, dir, "emfile.svc");
	t.nofile_slack = 4;
	t.reactor = reactor;
	start(&t);
	struct abd_registry *reg;
	cr_assert_eq(abd_registry_open(dir, 0, &reg, NULL, 0), 0);
	struct abd_record *rec;
	cr_assert_eq(abd_registry_lookup(reg, "emfile.svc", &rec), 0);
	char path[128];
	snprintf(path, sizeof(path), "%s/%s", dir, abd_record_socket(rec));
	enum { SILENT = 24 };
	int socks[SILENT];
	for (int i = 0; i < SILENT; i++) {
		socks[i] = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		cr_assert_geq(socks[i], 0);
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
		cr_assert_eq(connect(socks[i], (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
	}
	struct timespec settle = { 0, 100 * 1000000 };
	nanosleep(&settle, NULL);
	long t0 = cpu_ticks(t.pid);
	uint64_t w0 = abd_test_now_ns();
	struct timespec span = { 0, 800 * 1000000 };
	nanosleep(&span, NULL);
	long used = cpu_ticks(t.pid) - t0;
	uint64_t wall = abd_test_now_ns() - w0;
	long hz = sysconf(_SC_CLK_TCK);
	/* a spinning publisher burns the whole span (80 ticks at 100 Hz); a paused one a few */
	cr_assert_lt(used * 1000000000ll / hz, (long long)wall / 4,
	             "%s: the publisher used %ld ticks of CPU in %llu ms with accept out of descriptors",
	             reactor ? "reactor" : "poll + process", used, (unsigned long long)(wall / 1000000));
	for (int i = 0; i < SILENT; i++)
		close(socks[i]);
	/* it takes connections again: an acquisition through the handshake succeeds */
	struct abd_acquired *a = NULL;
	int r = abd_acquire(reg, rec, ABD_ACQUIRE_SCM_RIGHTS, 3ll * 1000000000, &a);
	cr_assert_eq(r, 0, "after the clients left: %d", r);
	cr_assert(tpub_check_fds(a));
	abd_acquired_free(a);
	abd_record_free(rec);
	abd_registry_free(reg);
	cr_assert_eq(tpub_stop(&t), 0);
	abd_test_rmtree(dir);
}

ABD_TEST(acquire, accept_out_of_descriptors_does_not_spin_the_publisher)
{
	emfile_case(false);
}

ABD_TEST(acquire, accept_out_of_descriptors_does_not_spin_the_publishers_reactor)
{
	emfile_case(true);
}
