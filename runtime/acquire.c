/* SPDX-License-Identifier: MIT */
/* Descriptor acquisition: the pidfd_getfd path, the choice between it and the handshake
 * (compat/handshake.c), and the verification both paths share. docs/acquire.md. */
#include <abd/acquire.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compat/handshake.h"
#include "runtime/internal.h"
#include "runtime/registry-internal.h"
#include "runtime/ring-internal.h"

/* The shared-memory header every published memfd starts with (the ring's, runtime/ring.c):
 * an 8-byte magic, the 128-bit nonce at offset 16, the file's total size at offset 64. Read
 * with pread, never mapped, before anything trusts it. */
#define SHM_MAGIC "ABDRING1"
#define SHM_BCAST_MAGIC "ABDBCST1"
#define SHM_NONCE_OFF 16
#define SHM_SIZE_OFF 64
#define SHM_HEADER_MIN 512
#define SHM_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
_Static_assert(offsetof(struct abd__ring_hdr, nonce) == SHM_NONCE_OFF, "ring nonce offset");
_Static_assert(offsetof(struct abd__ring_hdr, total_size) == SHM_SIZE_OFF, "ring size offset");
_Static_assert(ABD__RING_HEADER_SIZE == SHM_HEADER_MIN, "ring header size");
_Static_assert(ABD_RING_NONCE_SIZE == ABD_INSTANCE_SIZE, "nonce = instance id");
/* tools/abdctl-emulate.c answers this request ENOTTY under linux-5.4 */
_Static_assert(ABD_PIDFD_GET_INFO == 0xc040ff0bu, "PIDFD_GET_INFO request number");

struct slot {
	char name[ABD__HS_NAME_MAX + 1];
	enum abd_fd_kind kind;
	int fd;
	uint64_t size;
};

struct abd_acquired {
	enum abd_fd_transfer path;
	int fallback;
	pid_t pid;
	uid_t uid;
	gid_t gid;
	size_t n;
	struct slot slots[ABD__HS_FDS_MAX];
};

const char *abd_fd_kind_name(enum abd_fd_kind kind)
{
	switch (kind) {
	case ABD_FD_OTHER: return "other";
	case ABD_FD_MEMFD: return "memfd";
	case ABD_FD_EVENTFD: return "eventfd";
	case ABD_FD_SOCKET: return "socket";
	}
	return NULL;
}

/* ------------------------------------------------------------------ process memory -- */

/* pidfd_getfd said ENOSYS once: this kernel (or its seccomp filter) will say it again. */
static atomic_bool getfd_enosys;

/* Publishers that refused pidfd_getfd (EPERM: Yama, another uid, no CAP_SYS_PTRACE): asking
 * them again costs a failed syscall pair each time. Keyed by (pid, start time), so a reused
 * pid is a new publisher. */
#define REFUSED_MAX 32
static struct {
	pid_t pid;
	uint64_t start;
} refused[REFUSED_MAX];
static unsigned refused_next;
static pthread_mutex_t refused_lock = PTHREAD_MUTEX_INITIALIZER;

static atomic_uint nrefused;

static bool was_refused(pid_t pid, uint64_t start)
{
	if (!atomic_load_explicit(&nrefused, memory_order_relaxed))
		return false; /* nobody ever refused: no lock taken */
	bool r = false;
	pthread_mutex_lock(&refused_lock);
	for (unsigned i = 0; i < REFUSED_MAX; i++)
		if (refused[i].pid == pid && refused[i].start == start)
			r = true;
	pthread_mutex_unlock(&refused_lock);
	return r;
}

static void remember_refusal(pid_t pid, uint64_t start)
{
	pthread_mutex_lock(&refused_lock);
	refused[refused_next % REFUSED_MAX].pid = pid;
	refused[refused_next % REFUSED_MAX].start = start;
	refused_next++;
	atomic_store(&nrefused, refused_next);
	pthread_mutex_unlock(&refused_lock);
}

/* Publishers' pidfds, per registry handle: a pidfd names one process for ever, so once its
 * start time, uid and the record's lock were checked (after pidfd_open, by_pidfd), a later
 * acquisition from the same (pid, start time) needs no pidfd_open, no /proc/PID/stat, no
 * PIDFD_GET_INFO and no lock query again: see by_pidfd for why each is redundant then. The
 * descriptors' kinds, seals, size and nonce, and that the record is still linked, are checked
 * every time. The handshake path keeps only the record descriptor here (pidfd -1). The
 * record descriptor may also come from the handle's lookup (abd__registry_take_fd: the record
 * it read, taken by the acquisition that follows, which still verifies everything a first
 * acquisition does). The cache lives in the registry handle (abd__registry_ext). An entry is
 * taken out while in use (no other thread can close it under us) and put back after a
 * success; a failure closes it. Few entries, round robin: a consumer acquires from few
 * publishers. */
#define PIDFD_CACHE 8

struct cached {
	pid_t pid;
	uint64_t start;
	int pidfd;                           /* -1: none (kept by the handshake path) */
	/* sp >= 0: pidfd is borrowed from the process-wide table's slot sp (generation sp_gen),
	 * whose reference this entry holds; -1: pidfd (if any) is this entry's own (the table
	 * was full). proc: the process the pidfd was verified in (a forked child opens its own). */
	int sp;
	uint64_t sp_gen;
	pid_t proc;
	uid_t uid;                           /* the pidfd's euid/egid when it was verified */
	gid_t gid;
	uint64_t ino;                        /* its pidfs inode, when it was verified by it */
	uint8_t instance[ABD_INSTANCE_SIZE]; /* the record recfd and evfd are of */
	int recfd;
	/* Per eventfd slot of that record, a descriptor of the eventfd a repeat verified (by
	 * readlink), kept so that the next repeat proves its new descriptor names that very
	 * file with one kcmp (about 1 us cheaper than the readlink); -1: none. */
	int evfd[ABD__HS_FDS_MAX];
	/* The handshake connection to that record's server, kept open after a verified exchange
	 * (the server keeps it when asked), with the server's SO_PEERCRED read at connect (fixed
	 * then): a repeat sends its request on it; fd -1: none. sock_owner: the process that
	 * connected it (a forked child sharing the handle must not interleave its requests with
	 * its parent's on one connection: it connects its own). */
	struct abd__hs_conn conn;
	pid_t sock_owner;
};

static struct cached cached_none(void)
{
	struct cached e = { .pidfd = -1, .recfd = -1, .conn.fd = -1, .sp = -1 };
	for (unsigned i = 0; i < ABD__HS_FDS_MAX; i++)
		e.evfd[i] = -1;
	return e;
}

/* ------------------------------------------------------------------ shared pidfds -- */

/* One pidfd per publisher process for the whole consumer process, whatever number of registry
 * handles (services) acquire from it: handles' entries hold references to a slot here, and the
 * pidfd is closed with the last one. Keyed by (pid, start time); a slot is entered only once
 * its pidfd was verified (identity, uid, the record's lock: by_pidfd), so another handle may
 * use it as verified (it still checks its own record's lock and link, the ptrace rule and
 * every descriptor). Fork: a child inherits the table and copies of its descriptors; the
 * first use in the child closes those copies and starts afresh (generations change, so the
 * references its inherited handles hold go stale and are dropped, never closing a number
 * twice): a child never uses its parent's pidfds. A full table: the handle keeps its own. */
#define SHARED_MAX 64

static struct {
	pid_t pid;
	uint64_t start, ino;
	uid_t uid;
	gid_t gid;
	int fd;
	unsigned refs;
	uint64_t gen;
} shared[SHARED_MAX];
static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t shared_proc;
static uint64_t shared_gen;

static void shared_forked_locked(void)
{
	pid_t me = abd__self_pid();
	if (shared_proc == me)
		return;
	for (unsigned i = 0; i < SHARED_MAX; i++) {
		if (shared[i].refs)
			abd__close(shared[i].fd); /* our copy of the parent's */
		shared[i].refs = 0;
		shared[i].fd = -1;
		shared[i].gen = 0;
	}
	shared_proc = me;
}

/* Drop a reference (stale ones: nothing). */
static void shared_release(int sp, uint64_t gen)
{
	if (sp < 0)
		return;
	int close_fd = -1;
	pthread_mutex_lock(&shared_lock);
	shared_forked_locked();
	if (shared[sp].refs && shared[sp].gen == gen && --shared[sp].refs == 0) {
		close_fd = shared[sp].fd;
		shared[sp].fd = -1;
		shared[sp].gen = 0;
	}
	pthread_mutex_unlock(&shared_lock);
	abd__close(close_fd);
}

/* Is the reference still good here (not inherited across fork)? */
static bool shared_valid(int sp, uint64_t gen)
{
	pthread_mutex_lock(&shared_lock);
	shared_forked_locked();
	bool ok = shared[sp].refs && shared[sp].gen == gen;
	pthread_mutex_unlock(&shared_lock);
	return ok;
}

/* A new reference to the verified pidfd of (pid, start), into e; false: none. */
static bool shared_find(pid_t pid, uint64_t start, struct cached *e)
{
	bool found = false;
	pthread_mutex_lock(&shared_lock);
	shared_forked_locked();
	for (unsigned i = 0; i < SHARED_MAX && !found; i++) {
		if (!shared[i].refs || shared[i].pid != pid || shared[i].start != start)
			continue;
		shared[i].refs++;
		e->pidfd = shared[i].fd;
		e->sp = (int)i;
		e->sp_gen = shared[i].gen;
		e->uid = shared[i].uid;
		e->gid = shared[i].gid;
		e->ino = shared[i].ino;
		found = true;
	}
	pthread_mutex_unlock(&shared_lock);
	return found;
}

/* e's own verified pidfd into the table (or, when another handle entered one for that
 * process meanwhile, ours closed and a reference to that one taken). Table full: e keeps its
 * own. */
static void shared_enter(struct cached *e)
{
	if (e->pidfd < 0 || e->sp >= 0)
		return;
	int close_fd = -1;
	pthread_mutex_lock(&shared_lock);
	shared_forked_locked();
	int free_slot = -1;
	for (unsigned i = 0; i < SHARED_MAX; i++) {
		if (!shared[i].refs) {
			if (free_slot < 0)
				free_slot = (int)i;
			continue;
		}
		if (shared[i].pid == e->pid && shared[i].start == e->start &&
		    (!e->ino || !shared[i].ino || shared[i].ino == e->ino)) {
			close_fd = e->pidfd;
			shared[i].refs++;
			e->pidfd = shared[i].fd;
			e->sp = (int)i;
			e->sp_gen = shared[i].gen;
			free_slot = -2;
			break;
		}
	}
	if (free_slot >= 0) {
		shared[free_slot].pid = e->pid;
		shared[free_slot].start = e->start;
		shared[free_slot].ino = e->ino;
		shared[free_slot].uid = e->uid;
		shared[free_slot].gid = e->gid;
		shared[free_slot].fd = e->pidfd;
		shared[free_slot].refs = 1;
		shared[free_slot].gen = ++shared_gen;
		e->sp = free_slot;
		e->sp_gen = shared[free_slot].gen;
	}
	pthread_mutex_unlock(&shared_lock);
	abd__close(close_fd);
}

/* Let go of e's pidfd: a reference dropped, or its own closed. */
static void cached_drop_pidfd(struct cached *e)
{
	if (e->sp >= 0)
		shared_release(e->sp, e->sp_gen);
	else
		abd__close(e->pidfd);
	e->pidfd = -1;
	e->sp = -1;
}

static void cached_close(struct cached *e)
{
	cached_drop_pidfd(e);
	e->recfd = abd__close(e->recfd);
	e->conn.fd = abd__close(e->conn.fd);
	for (unsigned i = 0; i < ABD__HS_FDS_MAX; i++)
		e->evfd[i] = abd__close(e->evfd[i]);
}

/* What e keeps of one record (its record descriptor, eventfds, handshake connection) is for
 * that instance only. */
static void cached_for(struct cached *e, const struct abd_record *rec)
{
	if (memcmp(e->instance, abd_record_instance(rec), ABD_INSTANCE_SIZE) == 0)
		return;
	e->recfd = abd__close(e->recfd);
	e->conn.fd = abd__close(e->conn.fd);
	for (unsigned i = 0; i < ABD__HS_FDS_MAX; i++)
		e->evfd[i] = abd__close(e->evfd[i]);
}

static bool cached_used(const struct cached *e)
{
	return e->pidfd >= 0 || e->recfd >= 0 || e->conn.fd >= 0;
}

struct pidfd_cache {
	pthread_mutex_t lock;
	unsigned next;
	struct cached e[PIDFD_CACHE];
};

static void pidfd_cache_free(void *p)
{
	struct pidfd_cache *c = p;
	for (unsigned i = 0; i < PIDFD_CACHE; i++)
		cached_close(&c->e[i]);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* The handle's cache, made on first use (two threads may make one at once: one is kept).
 * Threads sharing the handle read the pointer without a lock (abd__registry_ext). */
static struct pidfd_cache *pidfd_cache(struct abd_registry *reg)
{
	struct pidfd_cache *c = abd__registry_ext(reg);
	if (c)
		return c;
	struct pidfd_cache *n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	pthread_mutex_init(&n->lock, NULL);
	for (unsigned i = 0; i < PIDFD_CACHE; i++)
		n->e[i] = cached_none();
	c = abd__registry_ext_set(reg, n, pidfd_cache_free);
	if (c != n)
		pidfd_cache_free(n);
	return c;
}

/* The entry of (pid, start), now the caller's (pidfd -1: none). */
static struct cached pidfd_take(struct abd_registry *reg, pid_t pid, uint64_t start)
{
	struct cached out = cached_none();
	struct pidfd_cache *c = abd__registry_ext(reg);
	if (!c || !start)
		return out;
	pthread_mutex_lock(&c->lock);
	for (unsigned i = 0; i < PIDFD_CACHE; i++)
		if (cached_used(&c->e[i]) && c->e[i].pid == pid && c->e[i].start == start) {
			out = c->e[i];
			c->e[i] = cached_none();
			break;
		}
	pthread_mutex_unlock(&c->lock);
	return out;
}

/* Keep e (its pidfd checked to be the process (pid, start)); takes its descriptors. */
static void pidfd_keep(struct abd_registry *reg, struct cached e)
{
	if (!cached_used(&e))
		return;
	struct pidfd_cache *c = pidfd_cache(reg);
	if (!c || !e.start) {
		cached_close(&e);
		return;
	}
	struct cached old = cached_none();
	pthread_mutex_lock(&c->lock);
	unsigned slot = PIDFD_CACHE;
	for (unsigned i = 0; i < PIDFD_CACHE; i++) {
		if (cached_used(&c->e[i]) && c->e[i].pid == e.pid && c->e[i].start == e.start) {
			old = e; /* another thread put one back meanwhile */
			slot = PIDFD_CACHE + 1;
			break;
		}
		if (!cached_used(&c->e[i]) && slot == PIDFD_CACHE)
			slot = i;
	}
	if (slot == PIDFD_CACHE) {
		slot = c->next++ % PIDFD_CACHE;
		old = c->e[slot];
	}
	if (slot < PIDFD_CACHE)
		c->e[slot] = e;
	pthread_mutex_unlock(&c->lock);
	cached_close(&old);
}

/* e (taken for rec, cached_for) gets the descriptor the handle's lookup kept of rec's record
 * when it has none of its own. */
static void take_lookup_fd(struct abd_registry *reg, const struct abd_record *rec,
                           struct cached *e)
{
	int fd = abd__registry_take_fd(reg, rec);
	if (e->recfd < 0)
		e->recfd = fd;
	else
		abd__close(fd); /* it has one of that record already */
}

/* ------------------------------------------------------------------ helpers -- */

/* close_range said ENOSYS/EPERM although the probe had it (a seccomp filter since): close. */
static atomic_bool close_range_broken;

/* ThreadSanitizer follows descriptors through its close() interceptor and has none for
 * close_range: numbers closed by it would look still open, and their reuse by another thread a
 * race. Under TSan the slots are closed one by one. */
#if defined(__SANITIZE_THREAD__)
#define CLOSE_RANGE_SEEN 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CLOSE_RANGE_SEEN 0
#endif
#endif
#ifndef CLOSE_RANGE_SEEN
#define CLOSE_RANGE_SEEN 1
#endif

/* Close the slots' descriptors. pidfd_getfd and SCM_RIGHTS hand out the lowest free numbers
 * in order, so the slots usually hold a run of consecutive numbers, all ours (each slot its own
 * new descriptor): one close_range then instead of a close each (probe feature close_range,
 * 5.9; ABD_DISABLE=close_range and the linux-5.4 profile: close). */
static void acquired_close(struct abd_acquired *a)
{
	int lo = INT_MAX, hi = -1;
	size_t k = 0;
	for (size_t i = 0; i < a->n; i++) {
		int fd = a->slots[i].fd;
		if (fd < 0)
			continue;
		k++;
		lo = fd < lo ? fd : lo;
		hi = fd > hi ? fd : hi;
	}
	/* every number in [lo, hi] one slot's: k distinct numbers spanning exactly k */
	uint64_t seen = 0;
	if (k >= 2 && (size_t)(hi - lo) + 1 == k && k <= 64)
		for (size_t i = 0; i < a->n; i++)
			if (a->slots[i].fd >= 0)
				seen |= UINT64_C(1) << (a->slots[i].fd - lo);
	if (CLOSE_RANGE_SEEN && k >= 2 && seen && (size_t)__builtin_popcountll(seen) == k &&
	    !atomic_load_explicit(&close_range_broken, memory_order_relaxed) &&
	    abd_probe_has(ABD_FEAT_CLOSE_RANGE) == 1) {
		int r = abd__close_range((unsigned)lo, (unsigned)hi, 0);
		if (r == 0) {
			for (size_t i = 0; i < a->n; i++)
				a->slots[i].fd = -1;
			return;
		}
		atomic_store(&close_range_broken, true); /* nothing was closed: one by one */
	}
	for (size_t i = 0; i < a->n; i++)
		a->slots[i].fd = abd__close(a->slots[i].fd);
}

void abd_acquired_free(struct abd_acquired *a)
{
	if (!a)
		return;
	acquired_close(a);
	free(a);
}

/* 1 if the record comes from our PID namespace, 0 if not. A record without the identity, or
 * a process that cannot see its own (no /proc), counts as ours: the pid checks that follow
 * still protect against a wrong process. */
static int same_pidns(const struct abd_record *rec)
{
	uint64_t dev = 0, ino = 0, mydev, myino;
	abd_record_pidns(rec, &dev, &ino);
	if (!dev && !ino)
		return 1;
	if (abd__self_pidns(&mydev, &myino) < 0)
		return 1;
	return mydev == dev && myino == ino;
}

/* Read a small /proc file; returns the length or -errno. */
static long read_small(const char *path, char *buf, size_t size)
{
	abd__autoclose int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	ssize_t n;
	do
		n = read(fd, buf, size - 1);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	buf[n] = 0;
	return n;
}

/* The start time of pid (/proc/PID/stat field 22). Returns 0, -ESRCH (gone), or -errno. */
static int proc_start_time(pid_t pid, uint64_t *start)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	long n = read_small(path, buf, sizeof(buf));
	if (n < 0)
		return n == -ENOENT ? -ESRCH : (int)n;
	/* comm may hold anything, ')' included: fields start after the last ')' */
	char *p = strrchr(buf, ')');
	if (!p)
		return -EPROTO;
	p++;
	/* field 3 (state) is the first after ')'; start time is field 22 */
	for (int f = 3; f < 22; f++) {
		p = strchr(p + 1, ' ');
		if (!p)
			return -EPROTO;
	}
	*start = strtoull(p + 1, NULL, 10);
	return 0;
}

/* The pidfs inode of a pidfd: unique for the boot (probe feature pidfs_ino), so equal to the
 * record's only if the pidfd's process is the publisher that wrote it. 0 or -errno. */
static int pidfd_ino(int pidfd, uint64_t *ino)
{
	struct stat st;
	if (fstat(pidfd, &st) < 0)
		return -errno;
	*ino = (uint64_t)st.st_ino;
	return 0;
}

/* PIDFD_GET_INFO said ENOTTY/EINVAL once although the probe had it: /proc/PID/status from
 * then on. */
static atomic_bool getinfo_missing;

/* The effective uid/gid of the process: from its pidfd when the probe has PIDFD_GET_INFO (one
 * ioctl, bound to that very process), else /proc/PID/status (read after pidfd_open and the
 * start-time check, so it is the pidfd's process). Returns 0, -ESRCH (gone), or -errno. */
static int proc_creds(int pidfd, pid_t pid, uid_t *uid, gid_t *gid)
{
	if (pidfd >= 0 && abd_probe_has(ABD_FEAT_PIDFD_GET_INFO) == 1 &&
	    !atomic_load_explicit(&getinfo_missing, memory_order_relaxed)) {
		int r = abd__pidfd_creds(pidfd, uid, gid);
		if (r != -ENOTTY && r != -EINVAL && r != -ENOSYS)
			return r;
		atomic_store(&getinfo_missing, true);
	}
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	long n = read_small(path, buf, sizeof(buf));
	if (n < 0)
		return n == -ENOENT ? -ESRCH : (int)n;
	unsigned long ru, eu, rg, eg;
	char *u = strstr(buf, "\nUid:"), *g = strstr(buf, "\nGid:");
	if (!u || !g || sscanf(u, "\nUid: %lu %lu", &ru, &eu) != 2 ||
	    sscanf(g, "\nGid: %lu %lu", &rg, &eg) != 2)
		return -EPROTO;
	*uid = (uid_t)eu;
	*gid = (gid_t)eg;
	return 0;
}

/* Does this process hold CAP_SYS_PTRACE (effective)? Then the kernel's own ptrace checks do
 * not protect a process from it. */
static bool has_cap_ptrace(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d) < 0)
		return true; /* cannot tell: check */
	return d[CAP_SYS_PTRACE / 32].effective & (1u << (CAP_SYS_PTRACE % 32));
}

/* The real, effective and saved uids of the pidfd's process: PIDFD_GET_INFO, else
 * /proc/PID/status (the caller makes sure afterwards that /proc/PID was the pidfd's
 * process). 0 or -errno. */
static int proc_uids(int pidfd, pid_t pid, uid_t ids[3])
{
	if (abd_probe_has(ABD_FEAT_PIDFD_GET_INFO) == 1 &&
	    !atomic_load_explicit(&getinfo_missing, memory_order_relaxed)) {
		struct abd__pidfd_info info = { .mask = ABD_PIDFD_INFO_CREDS };
		if (ioctl(pidfd, ABD_PIDFD_GET_INFO, &info) == 0 && (info.mask & ABD_PIDFD_INFO_CREDS)) {
			ids[0] = info.ruid;
			ids[1] = info.euid;
			ids[2] = info.suid;
			return 0;
		}
		if (errno == ESRCH)
			return -ESRCH;
	}
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	long n = read_small(path, buf, sizeof(buf));
	if (n < 0)
		return n == -ENOENT ? -ESRCH : (int)n;
	unsigned long r, e, sv;
	char *u = strstr(buf, "\nUid:");
	if (!u || sscanf(u, "\nUid: %lu %lu %lu", &r, &e, &sv) != 3)
		return -EPROTO;
	ids[0] = (uid_t)r;
	ids[1] = (uid_t)e;
	ids[2] = (uid_t)sv;
	return 0;
}

/* No confused deputy: a consumer stronger than the record's owner (root, CAP_SYS_PTRACE) takes
 * descriptors with pidfd_getfd only from a process the owner could ptrace itself, which the
 * kernel grants (ptrace_may_access, PTRACE_MODE_ATTACH_REALCREDS) when the target's real,
 * effective and saved uids are all the owner's and the target is dumpable. Without this a
 * user could write a record naming the pid of a process of theirs that the kernel protects
 * from them (a set-uid program, a process that kept a saved root uid, ssh-agent, which makes
 * itself non-dumpable) and have root take its descriptors. A non-dumpable process's
 * /proc/PID/ files belong to root (the kernel's task_dump_owner; the directory itself keeps
 * the euid), so stat of /proc/PID/status shows dumpability. Both are
 * read after the pidfd was opened and its identity checked, and the pidfd's process is seen
 * alive afterwards, so /proc/PID was that process. Nothing to check when the owner is root
 * (it could ptrace anything) or when we run as the owner without CAP_SYS_PTRACE (the kernel
 * then asks the same of us). 0, -EPERM (the owner could not: the caller falls back to the
 * handshake, where the publisher decides), -ESRCH, -errno. */
static int deputy_check(int pidfd, pid_t pid, uid_t owner)
{
	if (owner == 0 || (geteuid() == owner && !has_cap_ptrace()))
		return 0;
	uid_t ids[3];
	int r = proc_uids(pidfd, pid, ids);
	if (r < 0)
		return r;
	if (ids[0] != owner || ids[1] != owner || ids[2] != owner)
		return -EPERM;
	char path[40];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	struct stat st;
	if (stat(path, &st) < 0)
		return errno == ENOENT ? -ESRCH : -EPERM; /* cannot tell: refuse */
	if (st.st_uid != owner)
		return -EPERM; /* not dumpable */
	struct pollfd p = { .fd = pidfd, .events = POLLIN };
	if (poll(&p, 1, 0) != 0)
		return -ESRCH; /* exited meanwhile: /proc/PID may have been another's */
	return 0;
}

/* open_by_handle_at failed in a way that says nothing about the publisher (a seccomp filter
 * since the probe, say): pidfd_open from then on. */
static atomic_bool handle_broken;

static int check_alive(struct abd_registry *reg, const struct abd_record *rec);

/* The publisher's pidfd opened by the record's pidfs inode (probe features pidfs_handle,
 * pidfs_ino and pidfd_get_info): one syscall instead of pidfd_open + fstat, and no window
 * between opening and checking: the kernel resolves exactly the process that has the inode,
 * or none. The record's pid must be that process's (PIDFD_GET_INFO, which also gives the
 * uid and gid): a record naming the inode of another process is refused like a reused pid.
 * 0 and *pidfd; -EOPNOTSUPP: use pidfd_open; -ESRCH (gone), -ESTALE (not the record's
 * process), -errno. */
static int pidfd_by_ino(struct abd_registry *reg, const struct abd_record *rec, uint64_t ino,
                        int *pidfd, uid_t *uid, gid_t *gid)
{
	if (atomic_load_explicit(&handle_broken, memory_order_relaxed) ||
	    atomic_load_explicit(&getinfo_missing, memory_order_relaxed) ||
	    abd_probe_has(ABD_FEAT_PIDFS_HANDLE) != 1 || abd_probe_has(ABD_FEAT_PIDFS_INO) != 1 ||
	    abd_probe_has(ABD_FEAT_PIDFD_GET_INFO) != 1)
		return -EOPNOTSUPP;
	int fd = abd__pidfd_by_ino(ino);
	if (fd == -ESTALE || fd == -ESRCH) /* no process has it: the publisher is gone, or never had it */
		return check_alive(reg, rec) == -ESRCH ? -ESRCH : -ESTALE;
	if (fd < 0) {
		atomic_store(&handle_broken, true);
		return -EOPNOTSUPP;
	}
	pid_t tgid = 0;
	int r = abd__pidfd_ids(fd, &tgid, uid, gid);
	if (r == -ENOTTY || r == -EINVAL || r == -ENOSYS) {
		abd__close(fd);
		atomic_store(&getinfo_missing, true);
		return -EOPNOTSUPP;
	}
	if (r == 0 && tgid != abd_record_pid(rec))
		r = check_alive(reg, rec) == -ESRCH ? -ESRCH : -ESTALE;
	if (r < 0) {
		abd__close(fd);
		return r;
	}
	*pidfd = fd;
	return 0;
}

/* A record descriptor kept from an earlier acquisition still names a linked record: not
 * withdrawn (a name is never reused). 0 or -ESRCH. */
static int check_linked(int recfd)
{
	struct stat st;
	if (fstat(recfd, &st) < 0)
		return -errno;
	return st.st_nlink == 0 ? -ESRCH : 0;
}

/* check_alive through *recfd, a descriptor of the record kept from an earlier acquisition
 * (a name is never reused, but the record may have been withdrawn since: no link left), or
 * opened now and left in *recfd for the next time. */
static int check_alive_fd(struct abd_registry *reg, const struct abd_record *rec, int *recfd)
{
	if (*recfd >= 0) {
		int r = check_linked(*recfd);
		if (r < 0)
			return r;
	} else {
		char name[ABD_RECORD_NAME_MAX + 1];
		abd__record_name(rec, name, sizeof(name));
		*recfd = openat(abd_registry_fd(reg), name,
		                O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
		if (*recfd < 0)
			return errno == ENOENT ? -ESRCH : errno == ELOOP || errno == ENXIO ? -EBADMSG : -errno;
	}
	int r = abd__lock_held(*recfd);
	return r == 1 ? 0 : r == 0 ? -ESRCH : r;
}

/* The record's lock must still be held: the publisher is alive, whatever its pid is now. The
 * caller read and checked the record already; only the lock is asked here. */
static int check_alive(struct abd_registry *reg, const struct abd_record *rec)
{
	char name[ABD_RECORD_NAME_MAX + 1];
	abd__record_name(rec, name, sizeof(name));
	int r = abd__record_locked(reg, name);
	if (r == 1)
		return 0;
	if (r == 0 || r == -ENOENT)
		return -ESRCH;
	return r < 0 ? r : -EPROTO;
}

/* ------------------------------------------------------------------ verification -- */

static int verify_memfd(int fd, const uint8_t *nonce, uint64_t *size)
{
	/* F_GET_SEALS first: it fails (EINVAL) on anything but a shmem file, before we ask more.
	 * SHRINK|GROW can only be added to a file created to allow sealing (memfd_create with
	 * MFD_ALLOW_SEALING): other shmem files carry F_SEAL_SEAL from birth. So the seals prove
	 * the kind without a readlink of /proc/self/fd, and pin the size we check below. */
	int seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0 || (seals & SHM_SEALS) != SHM_SEALS)
		return -EPROTO;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_size < SHM_HEADER_MIN)
		return -EPROTO;
	uint8_t h[SHM_SIZE_OFF + 8];
	ssize_t got;
	do
		got = pread(fd, h, sizeof(h), 0);
	while (got < 0 && errno == EINTR);
	if (got != (ssize_t)sizeof(h))
		return got < 0 ? -errno : -EPROTO;
	uint64_t total;
	memcpy(&total, h + SHM_SIZE_OFF, 8);
	/* a ring, or a broadcast channel's data file (the same offsets: bcast.c) */
	if ((memcmp(h, SHM_MAGIC, 8) != 0 && memcmp(h, SHM_BCAST_MAGIC, 8) != 0) ||
	    total != (uint64_t)st.st_size)
		return -EPROTO;
	if (memcmp(h + SHM_NONCE_OFF, nonce, ABD_INSTANCE_SIZE) != 0)
		return -ESTALE;
	*size = (uint64_t)st.st_size;
	return 0;
}

static int verify_eventfd(int fd)
{
	char path[64], target[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return -EPROTO; /* cannot tell without /proc: refuse rather than trust */
	target[n] = 0;
	return strcmp(target, "anon_inode:[eventfd]") == 0 ? 0 : -EPROTO;
}

/* kcmp said ENOSYS/EPERM although the probe had it (a seccomp filter since): readlink only. */
static atomic_bool kcmp_broken;

/* 1 if descriptors a and b of this process name the same open file, else 0 (not the same, or
 * cannot tell). */
static int same_file(int a, int b)
{
	if (atomic_load_explicit(&kcmp_broken, memory_order_relaxed) ||
	    abd_probe_has(ABD_FEAT_KCMP) != 1)
		return 0;
	pid_t me = abd__self_pid();
	long r = syscall(SYS_kcmp, me, me, ABD__KCMP_FILE, a, b);
	if (r < 0 && (errno == ENOSYS || errno == EPERM || errno == EACCES))
		atomic_store(&kcmp_broken, true);
	return r == 0;
}

/* Every slot's kind (and a memfd's seals, size and nonce). e (may be NULL): the publisher's
 * cache entry, whose eventfds a repeat compares its new ones with; keep: a repeat, which keeps
 * each eventfd it verified by readlink for the next one. */
static int verify_slots(struct abd_acquired *a, const struct abd_record *rec, struct cached *e,
                        bool keep)
{
	for (size_t i = 0; i < a->n; i++) {
		struct slot *s = &a->slots[i];
		int r = 0;
		struct stat st;
		switch (s->kind) {
		case ABD_FD_MEMFD:
			r = verify_memfd(s->fd, abd_record_instance(rec), &s->size);
			break;
		case ABD_FD_EVENTFD:
			/* the very file a readlink showed to be an eventfd before is one now */
			if (e && e->evfd[i] >= 0 && same_file(s->fd, e->evfd[i]))
				break;
			r = verify_eventfd(s->fd);
			if (r == 0 && e && keep && abd_probe_has(ABD_FEAT_KCMP) == 1 &&
			    !atomic_load_explicit(&kcmp_broken, memory_order_relaxed)) {
				abd__close(e->evfd[i]);
				e->evfd[i] = fcntl(s->fd, F_DUPFD_CLOEXEC, 3);
			}
			break;
		case ABD_FD_SOCKET:
			r = fstat(s->fd, &st) < 0 ? -errno : S_ISSOCK(st.st_mode) ? 0 : -EPROTO;
			break;
		case ABD_FD_OTHER:
			break;
		}
		if (r < 0)
			return r;
	}
	return 0;
}

static int fill_slots(struct abd_acquired *a, const struct abd_record *rec)
{
	size_t n = abd_record_fd_count(rec);
	if (n > ABD__HS_FDS_MAX)
		return -EPROTO;
	for (size_t i = 0; i < n; i++) {
		const char *name;
		enum abd_fd_kind kind;
		int fd;
		if (abd_record_fd_at(rec, i, &name, &fd, &kind) < 0 || strlen(name) > ABD__HS_NAME_MAX)
			return -EPROTO;
		/* a kind this version does not know (a later minor's) cannot be verified: refused,
		 * not taken unchecked */
		if (rec->slots[i].kind > ABD_FD_SOCKET)
			return -EPROTONOSUPPORT;
		strcpy(a->slots[i].name, name);
		a->slots[i].kind = kind;
		a->slots[i].fd = -1;
	}
	a->n = n;
	return 0;
}

/* ------------------------------------------------------------------ the two paths -- */

static int by_pidfd(struct abd_registry *reg, const struct abd_record *rec,
                    struct abd_acquired *a, int64_t deadline)
{
	pid_t pid = abd_record_pid(rec);
	if (pid <= 0)
		return -ESRCH;
	uint64_t start = abd_record_start_time(rec);
	if (!start)
		return -EBADMSG; /* no identity to check the process against: refused */
	struct cached e = pidfd_take(reg, pid, start);
	/* the record descriptor and eventfds kept are of one record (instance) */
	cached_for(&e, rec);
	take_lookup_fd(reg, rec, &e);
	/* A kept pidfd was verified (identity, uid, the record's lock after pidfd_open) and
	 * names that process for ever: a pidfd is never reused. A record with the same pid and
	 * start time but another pidfs inode than the one that verified it is checked afresh. */
	uint64_t want = abd_record_pidfs_ino(rec);
	pid_t me = abd__self_pid();
	/* a pidfd verified in our parent (this handle crossed a fork), or a reference the fork
	 * made stale: not used */
	if (e.pidfd >= 0 && (e.proc != me || (e.sp >= 0 && !shared_valid(e.sp, e.sp_gen))))
		cached_drop_pidfd(&e);
	if (e.pidfd >= 0 && want && e.ino && e.ino != want)
		cached_drop_pidfd(&e);
	/* another handle of this process verified this publisher's pidfd: share it */
	if (e.pidfd < 0 && shared_find(pid, start, &e)) {
		e.proc = me;
		if (want && e.ino && e.ino != want)
			cached_drop_pidfd(&e);
	}
	bool verified = e.pidfd >= 0;
	uid_t uid = e.uid;
	gid_t gid = e.gid;
	bool ids_known = false; /* uid and gid read from the new pidfd already */
	int r;
	if (!verified) {
		e.ino = 0;
		r = want ? pidfd_by_ino(reg, rec, want, &e.pidfd, &uid, &gid) : -EOPNOTSUPP;
		if (r == 0) {
			e.ino = want;
			ids_known = true;
		} else if (r != -EOPNOTSUPP) {
			goto out;
		}
	}
	if (!verified && !ids_known) {
		e.pidfd = abd__pidfd_open(pid, 0);
		if (e.pidfd < 0) {
			r = e.pidfd;
			goto out;
		}
		/* (pidfd_by_ino could not be used.) The pidfd pins one process. Where the record
		 * carries the publisher's pidfs inode
		 * and pidfds are pidfs files (probe), the pidfd's own inode must be it: inode
		 * numbers are never reused during a boot, so only the publisher's pidfd has it (one
		 * fstat). Else /proc/PID/stat, read after pidfd_open, shows the start time of
		 * whoever has the pid now: if that is the record's, it is the publisher, which had
		 * the pid before pidfd_open and still has it, so it is the pidfd's process. A reused
		 * pid fails either way. */
		uint64_t ino = 0;
		if (want && abd_probe_has(ABD_FEAT_PIDFS_INO) == 1) {
			r = pidfd_ino(e.pidfd, &ino);
			if (r < 0)
				goto out;
			if (ino != want) {
				r = check_alive(reg, rec) == -ESRCH ? -ESRCH : -ESTALE;
				goto out;
			}
			e.ino = ino;
		} else {
			r = proc_start_time(pid, &start);
			if (r < 0)
				goto out;
		}
	}
	/* The owner check (the record's uid is the process's euid) is a PID-reuse check: it
	 * tells the process at the pid from the publisher. A verified pidfd cannot name another
	 * process, so the uid it showed then still answers for the record when the record claims
	 * the same uid; a record claiming another uid (the publisher changed its euid since)
	 * asks again. */
	if (!ids_known && (!verified || uid != abd_record_uid(rec))) {
		r = proc_creds(e.pidfd, pid, &uid, &gid);
		if (r < 0)
			goto out;
	}
	if (uid != abd_record_uid(rec) || start != abd_record_start_time(rec)) {
		r = check_alive(reg, rec) == -ESRCH ? -ESRCH : -ESTALE;
		goto out;
	}
	r = deputy_check(e.pidfd, pid, abd_record_uid(rec));
	if (r < 0)
		goto out;
	if (abd__now_ns() > deadline) {
		r = -ETIMEDOUT;
		goto out;
	}
	for (size_t i = 0; i < a->n; i++) {
		int target;
		abd_record_fd_at(rec, i, NULL, &target, NULL);
		int fd = abd__pidfd_getfd(e.pidfd, target, 0);
		if (fd < 0) {
			acquired_close(a);
			if (fd == -ENOSYS)
				atomic_store(&getfd_enosys, true);
			else if (fd == -EPERM || fd == -EACCES)
				remember_refusal(pid, start);
			r = fd;
			goto out;
		}
		a->slots[i].fd = fd;
	}
	/* After taking the descriptors: the record is still linked (not withdrawn: the
	 * publisher unlinks it before it closes what the record lists, so the descriptors were
	 * taken while they were still the record's). On a new pidfd the record's lock too (the
	 * issue's PID-reuse rule: the publisher lived after pidfd_open). On a verified pidfd the
	 * lock adds nothing: pidfd_getfd succeeding shows that very process alive (an exited
	 * one has no descriptor table: EBADF), and it is the publisher. */
	if (verified && e.recfd >= 0)
		r = check_linked(e.recfd);
	else
		r = check_alive_fd(reg, rec, &e.recfd);
	if (r < 0) {
		acquired_close(a);
		goto out;
	}
	/* The kinds, seals, size and nonce; a repeat's eventfds by kcmp against the ones
	 * verified before, when it has them. The pidfd stays verified whatever they show. */
	r = verify_slots(a, rec, &e, verified);
	e.pid = pid;
	e.start = start;
	e.uid = uid;
	e.gid = gid;
	e.proc = me;
	memcpy(e.instance, abd_record_instance(rec), ABD_INSTANCE_SIZE);
	shared_enter(&e);
	pidfd_keep(reg, e);
	e = cached_none();
	a->path = ABD_FD_TRANSFER_PIDFD_GETFD;
	a->pid = pid;
	a->uid = uid;
	a->gid = gid;
out:
	cached_close(&e);
	return r;
}

static int by_handshake(struct abd_registry *reg, const struct abd_record *rec,
                        struct abd_acquired *a, int64_t deadline, bool ourns)
{
	const char *path = abd_record_socket(rec);
	if (!path || !*path)
		return -ENOTCONN;
	struct abd__hs_request req;
	memset(&req, 0, sizeof(req));
	memcpy(req.instance, abd_record_instance(rec), 16);
	snprintf(req.service, sizeof(req.service), "%s", abd_record_service(rec));
	/* The handle's entry for this publisher and record: the connection kept from an earlier
	 * acquisition (its server's credentials were read at connect and checked against this
	 * record then, and a kept connection cannot change peer), the record descriptor. */
	struct cached e = pidfd_take(reg, abd_record_pid(rec), abd_record_start_time(rec));
	cached_for(&e, rec);
	take_lookup_fd(reg, rec, &e);
	pid_t me = abd__self_pid();
	if (e.conn.fd >= 0 && e.sock_owner != me)
		e.conn.fd = abd__close(e.conn.fd); /* our parent's connection: only our copy */
	/* A repeat through this handle (a connection was kept): it keeps each eventfd it proves
	 * by readlink, for kcmp next time. Not on a first acquisition, though the lookup may
	 * have left the record descriptor here: a one-off would pay the dup for nothing. */
	bool repeat = e.conn.fd >= 0;
	struct abd__hs_reply rep;
	int fds[ABD__HS_FDS_MAX];
	struct abd__hs_peer peer;
	/* the listener must be the record's owner, and its publisher where pids mean the same */
	struct abd__hs_peer want = { .uid = abd_record_uid(rec), .pid = ourns ? abd_record_pid(rec) : 0 };
	int r = abd__hs_client(abd_registry_fd(reg), path, &want, &req, deadline, &rep, fds, &peer,
	                       &e.conn);
	if (r < 0) {
		cached_close(&e);
		if (r == -ECONNREFUSED || r == -ENOENT || r == -ECONNRESET) {
			/* nobody listens, or the publisher closed mid-way: gone, or a broken
			 * publisher */
			int alive = check_alive(reg, rec);
			return alive == -ESRCH ? -ESRCH : r;
		}
		return r;
	}
	e.sock_owner = me;
	for (unsigned i = 0; i < rep.nfds; i++)
		a->slots[i].fd = fds[i];
	unsigned have = rep.nfds;
	/* Who answered: the record's uid, and its pid where pids mean the same to us. */
	if (peer.uid != abd_record_uid(rec) || (ourns && peer.pid != abd_record_pid(rec)) ||
	    memcmp(rep.instance, abd_record_instance(rec), 16) != 0)
		r = -ESTALE;
	else if (rep.nfds != a->n)
		r = -EPROTO;
	for (size_t i = 0; r == 0 && i < a->n; i++)
		if (strcmp(rep.slots[i].name, a->slots[i].name) != 0 ||
		    rep.slots[i].kind != (uint8_t)a->slots[i].kind)
			r = -EPROTO;
	if (r == 0) {
		/* the record's lock (and link), through the record descriptor kept by an earlier
		 * acquisition from this publisher, else opened now and kept: the server keeps
		 * serving after abd_withdraw, so this is what catches a withdrawn record */
		r = check_alive_fd(reg, rec, &e.recfd);
		/* the kinds, seals, size and nonce; a repeat's eventfds by kcmp (as by_pidfd) */
		if (r == 0)
			r = verify_slots(a, rec, &e, repeat);
	}
	if (r < 0) {
		cached_close(&e); /* a connection that gave a bad answer is not asked again */
		for (unsigned i = 0; i < have; i++)
			abd__close(fds[i]);
		for (size_t i = 0; i < a->n; i++)
			a->slots[i].fd = -1;
		return r;
	}
	e.pid = abd_record_pid(rec);
	e.start = abd_record_start_time(rec);
	memcpy(e.instance, abd_record_instance(rec), ABD_INSTANCE_SIZE);
	pidfd_keep(reg, e);
	a->path = ABD_FD_TRANSFER_SCM_RIGHTS;
	a->pid = ourns ? peer.pid : 0;
	a->uid = peer.uid;
	a->gid = peer.gid;
	return 0;
}

static bool falls_back(int r)
{
	return r == -EPERM || r == -EACCES || r == -EBADF || r == -ESRCH || r == -ENOSYS;
}

int abd_acquire(struct abd_registry *reg, const struct abd_record *rec, unsigned flags,
                int64_t timeout_ns, struct abd_acquired **out)
{
	abd__check(reg && rec && out, -EINVAL);
	abd__check(!(flags & ~(unsigned)(ABD_ACQUIRE_PIDFD_GETFD | ABD_ACQUIRE_SCM_RIGHTS)), -EINVAL);
	abd__check(flags != (ABD_ACQUIRE_PIDFD_GETFD | ABD_ACQUIRE_SCM_RIGHTS), -EINVAL);
	*out = NULL;
	if (timeout_ns < 0)
		timeout_ns = ABD_ACQUIRE_TIMEOUT_NS;
	int64_t deadline = abd__now_ns() + timeout_ns;
	struct abd_acquired *a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	int r = fill_slots(a, rec);
	if (r < 0)
		goto fail;
	bool ourns = same_pidns(rec);

	if (flags & ABD_ACQUIRE_PIDFD_GETFD) {
		r = ourns ? by_pidfd(reg, rec, a, deadline) : -EXDEV;
	} else if (flags & ABD_ACQUIRE_SCM_RIGHTS) {
		r = by_handshake(reg, rec, a, deadline, ourns);
	} else {
		int why = 0;
		if (!ourns) {
			why = -EXDEV;
		} else if (abd_probe_has(ABD_FEAT_PIDFD_OPEN) != 1) {
			why = abd_probe_error(ABD_FEAT_PIDFD_OPEN); /* -ENOSYS, -EPERM, or masked: -ECANCELED */
		} else if (abd_probe_has(ABD_FEAT_PIDFD_GETFD) != 1) {
			why = abd_probe_error(ABD_FEAT_PIDFD_GETFD);
		} else if (atomic_load(&getfd_enosys)) {
			why = -ENOSYS;
		} else if (!abd_record_start_time(rec)) {
			why = -EBADMSG; /* the pidfd path cannot tell the publisher from a reused pid */
		} else if (was_refused(abd_record_pid(rec), abd_record_start_time(rec))) {
			/* keyed by the start time /proc showed when it refused, which was the
			 * record's (by_pidfd checks it before asking) */
			why = -ECANCELED;
		}
		if (!why) {
			r = by_pidfd(reg, rec, a, deadline);
			if (r < 0 && falls_back(r))
				why = r;
		}
		if (why) {
			a->fallback = why;
			r = by_handshake(reg, rec, a, deadline, ourns);
		}
	}
	if (r < 0) /* both paths verified the slots (verify_slots) */
		goto fail;
	*out = a;
	return 0;
fail:
	abd_acquired_free(a);
	return r;
}

/* ------------------------------------------------------------------ accessors -- */

enum abd_fd_transfer abd_acquired_path(const struct abd_acquired *a)
{
	return a ? a->path : (enum abd_fd_transfer)0;
}

int abd_acquired_fallback(const struct abd_acquired *a)
{
	return a ? a->fallback : -EINVAL;
}

int abd_acquired_peer(const struct abd_acquired *a, pid_t *pid, uid_t *uid, gid_t *gid)
{
	abd__check(a, -EINVAL);
	if (pid)
		*pid = a->pid;
	if (uid)
		*uid = a->uid;
	if (gid)
		*gid = a->gid;
	return 0;
}

size_t abd_acquired_count(const struct abd_acquired *a)
{
	return a ? a->n : 0;
}

int abd_acquired_fd_at(const struct abd_acquired *a, size_t i, const char **slot, int *fd,
                       enum abd_fd_kind *kind, uint64_t *size)
{
	abd__check(a, -EINVAL);
	if (i >= a->n)
		return -ERANGE;
	if (slot)
		*slot = a->slots[i].name;
	if (fd)
		*fd = a->slots[i].fd;
	if (kind)
		*kind = a->slots[i].kind;
	if (size)
		*size = a->slots[i].size;
	return 0;
}

static int find_slot(const struct abd_acquired *a, const char *name)
{
	for (size_t i = 0; i < a->n; i++)
		if (!strcmp(a->slots[i].name, name))
			return (int)i;
	return -ENOENT;
}

int abd_acquired_fd(const struct abd_acquired *a, const char *slot)
{
	abd__check(a && slot, -EINVAL);
	int i = find_slot(a, slot);
	if (i < 0)
		return i;
	return a->slots[i].fd >= 0 ? a->slots[i].fd : -EBADF;
}

int abd_acquired_take_fd(struct abd_acquired *a, const char *slot)
{
	abd__check(a && slot, -EINVAL);
	int i = find_slot(a, slot);
	if (i < 0)
		return i;
	int fd = a->slots[i].fd;
	if (fd < 0)
		return -EBADF;
	a->slots[i].fd = -1;
	return fd;
}

/* ------------------------------------------------------------------ ptracer policy -- */

int abd_acquire_set_ptracer(pid_t pid)
{
	abd__check(pid >= -1, -EINVAL);
	unsigned long arg = pid == ABD_PTRACER_ANY ? PR_SET_PTRACER_ANY : (unsigned long)pid;
	if (prctl(PR_SET_PTRACER, arg, 0, 0, 0) < 0)
		return errno == EINVAL ? -EOPNOTSUPP : -errno;
	return 0;
}
