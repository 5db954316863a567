/* SPDX-License-Identifier: MIT */
/* The registry directory: choosing and checking it, publishing, reading entries as untrusted
 * input, snapshots, lookup, liveness and GC. docs/registry.md explains the rules. */
#include <abd/registry.h>

#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>

#include "runtime/internal.h"
#include "runtime/registry-internal.h"

#define REASON(...)                                                                    \
	do {                                                                               \
		if (reason && reason_size)                                                     \
			snprintf(reason, reason_size, __VA_ARGS__);                                \
	} while (0)

/* ------------------------------------------------------------------ the directory -- */

/* The rules every registry directory must pass, whoever made it. */
static int check_dir(int fd, const char *path, char *reason, size_t reason_size)
{
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = -errno;
		REASON("%s: fstat: %s", path, strerror(-e));
		return e;
	}
	if (!S_ISDIR(st.st_mode)) {
		REASON("%s: not a directory", path);
		return -ENOTDIR;
	}
	if ((st.st_mode & S_IWOTH) && !(st.st_mode & S_ISVTX)) {
		REASON("%s: world-writable without the sticky bit (mode %04o): anyone could delete or "
		       "replace records; use mode 1777 (chmod +t) or a group directory (3775)",
		       path, (unsigned)(st.st_mode & 07777));
		return -EPERM;
	}
	if ((st.st_mode & S_IWGRP) && !(st.st_mode & S_ISVTX)) {
		REASON("%s: group-writable without the sticky bit (mode %04o): any member of group %u "
		       "could delete, rename or replace records and sockets; use mode 3775 (chmod +t) "
		       "or 0755",
		       path, (unsigned)(st.st_mode & 07777), (unsigned)st.st_gid);
		return -EPERM;
	}
	if (st.st_uid != 0 && st.st_uid != geteuid()) {
		REASON("%s: owned by uid %u, which is neither root nor you (uid %u): its owner could "
		       "delete or replace every record",
		       path, (unsigned)st.st_uid, (unsigned)geteuid());
		return -EPERM;
	}
	return 0;
}

/* Open path as a directory, creating it with mode when create is set. */
static int open_dir(const char *path, bool create, mode_t mode, char *reason, size_t reason_size)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT && create) {
		if (mkdir(path, 0700) < 0 && errno != EEXIST) {
			int e = -errno;
			REASON("%s: mkdir: %s", path, strerror(-e));
			return e;
		}
		fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		struct stat st;
		/* mkdir honours the umask; set the mode we mean, on the directory we opened. */
		if (fd >= 0 && fstat(fd, &st) == 0 && st.st_uid == geteuid() &&
		    (st.st_mode & 07777) != mode)
			fchmod(fd, mode);
	}
	if (fd < 0) {
		int e = -errno;
		REASON("%s: %s", path, strerror(-e));
		return e;
	}
	int r = check_dir(fd, path, reason, reason_size);
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

/* A private fallback directory base/name (path: the two joined, for messages): created with
 * mode 0700 when missing, opened without following a symlink (mkdirat, then openat with
 * O_NOFOLLOW|O_DIRECTORY: whatever another user put at that name is never followed), and
 * accepted only when the descriptor shows a directory owned by us that no group or other
 * may enter (mode & 077 == 0): anything else there (another user's directory, a shared
 * mode, a symlink) is -EPERM with the reason, never used and never repaired. A missing
 * base is its -errno (the caller tries the next). */
static int open_private(const char *base, const char *name, const char *path, char *reason,
                        size_t reason_size)
{
	abd__autoclose int bfd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (bfd < 0) {
		int e = -errno;
		REASON("%s: %s", base, strerror(-e));
		return e;
	}
	bool made = mkdirat(bfd, name, 0700) == 0;
	if (!made && errno != EEXIST) {
		int e = -errno;
		REASON("%s: mkdir: %s", path, strerror(-e));
		return e;
	}
	/* O_PATH: what is there is looked at even when we may not read it (another user's) */
	abd__autoclose int pfd = openat(bfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (pfd < 0) {
		int e = -errno;
		if (e == -ELOOP || e == -ENOTDIR) {
			REASON("%s: not a directory (a symbolic link or another file): the private "
			       "registry must be a directory of yours; remove it",
			       path);
			return -EPERM;
		}
		REASON("%s: %s", path, strerror(-e));
		return e;
	}
	struct stat st;
	if (fstat(pfd, &st) < 0) {
		int e = -errno;
		REASON("%s: fstat: %s", path, strerror(-e));
		return e;
	}
	if (st.st_uid != geteuid() || (st.st_mode & 077)) {
		REASON("%s: owned by uid %u with mode %04o: the private registry must be yours (uid "
		       "%u) with no group or other access (0700); remove it or fix its owner and mode",
		       path, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777), (unsigned)geteuid());
		return -EPERM;
	}
	int fd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC); /* that very directory */
	if (fd < 0) {
		int e = -errno;
		REASON("%s: %s", path, strerror(-e));
		return e;
	}
	/* mkdir honours the umask, which may have taken our own bits too */
	if (made && (st.st_mode & 0700) != 0700)
		fchmod(fd, 0700);
	int r = check_dir(fd, path, reason, reason_size);
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

static int registry_make(const char *path, int fd, struct abd_registry **out)
{
	struct abd_registry *reg = calloc(1, sizeof(*reg));
	if (!reg || !(reg->path = strdup(path))) {
		free(reg);
		close(fd);
		return -ENOMEM;
	}
	reg->dirfd = fd;
	pthread_mutex_init(&reg->kept_lock, NULL);
	for (unsigned i = 0; i < ABD__LOOKUP_KEPT; i++)
		reg->kept[i].fd = -1;
	struct stat st;
	reg->dir_mode = 07777; /* unknown: as if shared */
	if (fstat(fd, &st) == 0) {
		reg->dir_mode = st.st_mode & 07777;
		reg->dir_uid = st.st_uid;
	}
	struct statfs sf;
	if (fstatfs(fd, &sf) == 0)
		reg->fs_type = (unsigned long)sf.f_type;
	uint64_t dev, ino;
	if (abd__self_pidns(&dev, &ino) == 0) {
		reg->pidns_dev = (dev_t)dev;
		reg->pidns_ino = (ino_t)ino;
	}
	*out = reg;
	return 0;
}

ABD_EXPORT int abd_registry_open(const char *dir, unsigned flags, struct abd_registry **out,
                                 char *reason, size_t reason_size)
{
	if (reason && reason_size)
		reason[0] = 0;
	abd__check(out, -EINVAL);
	*out = NULL;
	abd__check(!(flags & ~(unsigned)(ABD_REGISTRY_CREATE | ABD_REGISTRY_SHARED)), -EINVAL);
	mode_t mode = (flags & ABD_REGISTRY_SHARED) ? 01777 : 0700;
	char buf[4096];
	int fd;

	if (dir) {
		abd__check(*dir, -EINVAL);
		fd = open_dir(dir, flags & ABD_REGISTRY_CREATE, mode, reason, reason_size);
		return fd < 0 ? fd : registry_make(dir, fd, out);
	}
	const char *env = getenv("ABD_REGISTRY");
	if (env && *env) {
		fd = open_dir(env, true, mode, reason, reason_size);
		return fd < 0 ? fd : registry_make(env, fd, out);
	}
	/* /run/abd: the shared one. Root makes it (sticky, world-writable: every user may
	 * publish, nobody may delete another's records); others use it when it is usable. */
	if (geteuid() == 0) {
		fd = open_dir("/run/abd", true, 01777, reason, reason_size);
		if (fd >= 0)
			return registry_make("/run/abd", fd, out);
	} else if (access("/run/abd", W_OK | X_OK) == 0) {
		fd = open_dir("/run/abd", false, 0, reason, reason_size);
		if (fd >= 0)
			return registry_make("/run/abd", fd, out);
	}
	/* The private fallbacks: ours alone, never followed through a symlink (open_private) */
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	if (xdg && *xdg && (size_t)snprintf(buf, sizeof(buf), "%s/abd", xdg) < sizeof(buf)) {
		fd = open_private(xdg, "abd", buf, reason, reason_size);
		if (fd >= 0)
			return registry_make(buf, fd, out);
		if (fd == -EPERM)
			return fd;
	}
	static const char *const bases[] = { "/dev/shm", "/tmp" };
	int r = -ENOENT;
	for (size_t i = 0; i < ABD__ARRAY_SIZE(bases); i++) {
		char name[32];
		snprintf(name, sizeof(name), "abd-%u", (unsigned)geteuid());
		snprintf(buf, sizeof(buf), "%s/%s", bases[i], name);
		fd = open_private(bases[i], name, buf, reason, reason_size);
		if (fd >= 0)
			return registry_make(buf, fd, out);
		if (fd == -EPERM)
			return fd;
		r = fd;
	}
	return r;
}

ABD_EXPORT void abd_registry_free(struct abd_registry *reg)
{
	if (!reg)
		return;
	abd__close(reg->dirfd);
	if (reg->ext && reg->ext_free)
		reg->ext_free(reg->ext);
	for (unsigned i = 0; i < ABD__LOOKUP_KEPT; i++)
		abd__close(reg->kept[i].fd);
	pthread_mutex_destroy(&reg->kept_lock);
	free(reg->path);
	free(reg);
}

static pthread_mutex_t ext_lock = PTHREAD_MUTEX_INITIALIZER;

void *abd__registry_ext(const struct abd_registry *reg)
{
	return __atomic_load_n(&reg->ext, __ATOMIC_ACQUIRE);
}

void *abd__registry_ext_set(struct abd_registry *reg, void *p, void (*free_fn)(void *))
{
	pthread_mutex_lock(&ext_lock);
	void *cur = reg->ext;
	if (!cur) {
		reg->ext_free = free_fn;
		__atomic_store_n(&reg->ext, p, __ATOMIC_RELEASE);
		cur = p;
	}
	pthread_mutex_unlock(&ext_lock);
	return cur;
}

ABD_EXPORT const char *abd_registry_path(const struct abd_registry *reg)
{
	return reg ? reg->path : NULL;
}

ABD_EXPORT int abd_registry_fd(const struct abd_registry *reg)
{
	return reg ? reg->dirfd : -EINVAL;
}

ABD_EXPORT unsigned long abd_registry_fs_type(const struct abd_registry *reg)
{
	return reg ? reg->fs_type : 0;
}

ABD_EXPORT const char *abd_fs_type_name(unsigned long t)
{
	switch (t) {
	case 0x01021994: return "tmpfs";
	case 0x858458f6: return "ramfs";
	case 0xEF53: return "ext4";
	case 0x58465342: return "xfs";
	case 0x9123683E: return "btrfs";
	case 0x794c7630: return "overlayfs";
	case 0x6969: return "nfs";
	case 0x65735546: return "fuse";
	case 0x4d44: return "vfat";
	case 0x5346544e: return "ntfs";
	case 0xFF534D42: return "cifs";
	case 0x01021997: return "9p";
	case 0x9fa0: return "proc";
	case 0x62656572: return "sysfs";
	case 0xcafe4a11: return "bpf";
	case 0x958458f6: return "hugetlbfs";
	case 0x2fc12fc1: return "zfs";
	case 0x73717368: return "squashfs";
	}
	return "unknown";
}

/* ------------------------------------------------------------------ processes -- */

static int read_small(const char *path, char *buf, size_t size, uid_t *owner)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (owner) {
		struct stat st;
		*owner = fstat(fd, &st) == 0 ? st.st_uid : (uid_t)-1;
	}
	ssize_t n;
	do
		n = read(fd, buf, size - 1);
	while (n < 0 && errno == EINTR);
	int e = n < 0 ? -errno : 0;
	close(fd);
	if (e)
		return e;
	buf[n] = 0;
	return (int)n;
}

/* Field 22 of /proc/PID/stat, counted after the last ')' (the command may hold anything). */
static int parse_start_time(const char *stat, uint64_t *out)
{
	const char *p = strrchr(stat, ')');
	if (!p)
		return -EIO;
	p++;
	/* after ")" come fields 3..: skip 19 of them to reach 22 */
	for (int field = 3; field < 22; field++) {
		while (*p == ' ')
			p++;
		while (*p && *p != ' ')
			p++;
		if (!*p)
			return -EIO;
	}
	char *end;
	unsigned long long v = strtoull(p, &end, 10);
	if (end == p)
		return -EIO;
	*out = v;
	return 0;
}

/* /proc/PID/stat: start time, and the owner of /proc/PID (the effective uid, or root when
 * the process is not dumpable). 1 found, 0 no such process, -errno. */
static int proc_stat(pid_t pid, uint64_t *start_time, uid_t *owner)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int n = read_small(path, buf, sizeof(buf), owner);
	if (n == -ENOENT || n == -ESRCH)
		return 0;
	if (n < 0)
		return n;
	return parse_start_time(buf, start_time) < 0 ? -EIO : 1;
}

/* The effective uid from /proc/PID/status, or (uid_t)-1. */
static uid_t proc_euid(pid_t pid)
{
	char path[64], st[4096];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (read_small(path, st, sizeof(st), NULL) > 0) {
		const char *u = strstr(st, "\nUid:");
		unsigned real, eff;
		if (u && sscanf(u + 5, "%u %u", &real, &eff) == 2)
			return (uid_t)eff;
	}
	return (uid_t)-1;
}

int abd__proc_lookup(pid_t pid, uint64_t *start_time, uid_t *uid)
{
	int r = proc_stat(pid, start_time, uid);
	if (r == 1 && *uid == 0)
		*uid = proc_euid(pid);
	return r;
}

/* What this process knows about itself: its start time and its PID namespace. Per thread, and
 * forgotten in a forked child (only the forking thread lives on there): the child's start time
 * and perhaps its PID namespace differ. A pid key alone is not enough: once the process that
 * filled the cache has died, a descendant that inherited it may be given its pid again
 * (pid_max is 32768 on many systems). The start time keeps the pid key too, for children made
 * without atfork handlers (raw clone, _Fork). */
static _Thread_local struct {
	pid_t start_pid;
	uint64_t start;
	bool ns_known;
	uint64_t ns_dev, ns_ino;
	pid_t pidfs_pid; /* pidfs_ino is of this pid (0: not asked) */
	uint64_t pidfs_ino;
} self;
static pthread_once_t self_once = PTHREAD_ONCE_INIT;

static void self_forget(void);

static void self_register(void)
{
	pthread_atfork(NULL, NULL, self_forget);
}

static int self_start_time(pid_t me, uint64_t *out)
{
	pthread_once(&self_once, self_register);
	if (self.start_pid == me) {
		*out = self.start;
		return 0;
	}
	char buf[1024];
	int n = read_small("/proc/self/stat", buf, sizeof(buf), NULL);
	if (n < 0)
		return n;
	if ((n = parse_start_time(buf, out)) < 0)
		return n;
	self.start = *out;
	self.start_pid = me;
	return 0;
}

int abd__self_pidns(uint64_t *dev, uint64_t *ino)
{
	pthread_once(&self_once, self_register);
	if (!self.ns_known) {
		struct stat st;
		if (stat("/proc/self/ns/pid", &st) < 0)
			return -errno;
		self.ns_dev = (uint64_t)st.st_dev;
		self.ns_ino = (uint64_t)st.st_ino;
		self.ns_known = true;
	}
	*dev = self.ns_dev;
	*ino = self.ns_ino;
	return 0;
}

/* pid -> (start time, owner, effective uid). An entry is trusted only for the start time it
 * recorded: (pid, start time) names one process, so a reused pid misses and is read afresh.
 * That makes the cache safe to keep across calls (a watch keeps one). */
struct abd__proc_cache {
	struct {
		pid_t pid;
		int found;
		uint64_t start;
		uid_t owner, euid;
	} slot[256];
};

void abd__proc_cache_free(struct abd__proc_cache *c)
{
	free(c);
}

/* Does the live process (pid, start) run as uid? 1 yes, 0 no, -ESRCH: no such process (or
 * another one now), other -errno: cannot tell. */
static int proc_check(struct abd__proc_cache **cache, pid_t pid, uint64_t start, uid_t uid)
{
	if (cache && !*cache)
		*cache = calloc(1, sizeof(**cache));
	unsigned k = (((unsigned)pid * 2654435761u) >> 24) & 255;
	struct abd__proc_cache *c = cache ? *cache : NULL;
	if (!c || c->slot[k].pid != pid || !c->slot[k].found || c->slot[k].start != start) {
		uint64_t st = 0;
		uid_t owner = 0;
		int r = proc_stat(pid, &st, &owner);
		if (r < 0)
			return r;
		if (!r || st != start)
			return -ESRCH;
		if (!c)
			return owner == uid || proc_euid(pid) == uid;
		c->slot[k].pid = pid;
		c->slot[k].found = 1;
		c->slot[k].start = st;
		c->slot[k].owner = owner;
		c->slot[k].euid = (uid_t)-2; /* not read yet */
	}
	if (c->slot[k].owner == uid)
		return 1;
	if (c->slot[k].euid == (uid_t)-2)
		c->slot[k].euid = proc_euid(pid);
	return c->slot[k].euid == uid;
}

/* ------------------------------------------------------------------ publishing -- */

struct abd_publication {
	struct abd_registry *reg;
	struct abd_record *rec;
	int fd;
	bool linked; /* committed: the name exists (abd_publish_commit) */
	char name[ABD_RECORD_NAME_MAX + 1];
	char proc[32]; /* "/proc/self/fd/<fd>", made at prepare: commit only links */
};

static void instance_hex(const uint8_t *id, char *out)
{
	static const char hex[] = "0123456789abcdef";
	for (int i = 0; i < ABD_INSTANCE_SIZE; i++) {
		out[2 * i] = hex[id[i] >> 4];
		out[2 * i + 1] = hex[id[i] & 15];
	}
	out[2 * ABD_INSTANCE_SIZE] = 0;
}

void abd__record_name(const struct abd_record *rec, char *out, size_t size)
{
	char hex[2 * ABD_INSTANCE_SIZE + 1];
	instance_hex(rec->instance, hex);
	snprintf(out, size, "%s.%s", rec->service, hex);
}

/* Random instance ids, drawn from the kernel 16 at a time (one getrandom per 16 publications).
 * Per thread, keyed by pid and emptied in a forked child (self_forget): parent and child
 * must never hand out the same bytes. */
#define INSTANCE_POOL 16
static _Thread_local struct {
	pid_t pid;
	unsigned left;
	uint8_t bytes[INSTANCE_POOL][ABD_INSTANCE_SIZE];
} ids;

static void self_forget(void)
{
	memset(&self, 0, sizeof(self));
	memset(&ids, 0, sizeof(ids));
}

static int random_instance(pid_t me, uint8_t *out)
{
	if (ids.pid != me || !ids.left) {
		ids.left = 0;
		ssize_t n;
		while ((n = getrandom(ids.bytes, sizeof(ids.bytes), 0)) < 0 && errno == EINTR)
			;
		if (n != (ssize_t)sizeof(ids.bytes))
			return n < 0 ? -errno : -EIO;
		ids.pid = me;
		ids.left = INSTANCE_POOL;
	}
	ids.left--;
	memcpy(out, ids.bytes[ids.left], ABD_INSTANCE_SIZE);
	memset(ids.bytes[ids.left], 0, ABD_INSTANCE_SIZE); /* handed out once */
	return 0;
}

/* Our pid without a syscall per publication: kept in a page the kernel wipes in every child
 * (MADV_WIPEONFORK, 4.14), so a child made by fork(), _Fork() or a raw clone finds 0 there
 * and asks getpid() afresh, atfork handlers or not. Without the page: getpid() every time. */
static _Atomic pid_t *pid_page;
static pthread_once_t pid_page_once = PTHREAD_ONCE_INIT;

static void pid_page_init(void)
{
	long size = sysconf(_SC_PAGESIZE);
	void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return;
	if (madvise(p, (size_t)size, MADV_WIPEONFORK) < 0) {
		munmap(p, (size_t)size);
		return;
	}
	pid_page = p;
}

static pid_t self_pid(void)
{
	pthread_once(&pid_page_once, pid_page_init);
	if (!pid_page)
		return getpid();
	pid_t me = atomic_load_explicit(pid_page, memory_order_relaxed);
	if (!me) {
		me = getpid();
		atomic_store_explicit(pid_page, me, memory_order_relaxed);
	}
	return me;
}

pid_t abd__self_pid(void)
{
	return self_pid();
}

static int fill_identity(struct abd_registry *reg, struct abd_record *r)
{
	pthread_once(&self_once, self_register);
	pid_t me = self_pid();
	if (!r->instance_chosen) {
		int e = random_instance(me, r->instance);
		if (e < 0)
			return e;
	}
	r->pid = me;
	r->uid = geteuid();
	int e = self_start_time(r->pid, &r->start_time);
	if (e < 0)
		return e;
	r->pidns_dev = reg->pidns_dev;
	r->pidns_ino = reg->pidns_ino;
	/* our pidfs inode: with the start time, it tells us from a later process with our pid */
	if (self.pidfs_pid != me) {
		self.pidfs_ino = abd__pidfs_ino(me);
		self.pidfs_pid = me;
	}
	r->pidfs_ino = self.pidfs_ino;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	r->published_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Everything but the name: the record built, written to an unnamed file and locked. */
ABD_EXPORT int abd_publish_prepare(struct abd_registry *reg, const struct abd_record *rec,
                                   struct abd_publication **out)
{
	abd__check(out, -EINVAL);
	*out = NULL;
	abd__check(reg && rec, -EINVAL);
	struct abd_publication *pub = calloc(1, sizeof(*pub));
	if (!pub)
		return -ENOMEM;
	pub->fd = -1;
	pub->reg = reg;
	uint8_t *buf = NULL;
	int r = abd__record_copy(rec, &pub->rec);
	if (r < 0)
		goto fail;
	if ((r = fill_identity(reg, pub->rec)) < 0)
		goto fail;
	size_t size = abd__record_size(pub->rec);
	if (!(buf = malloc(size))) {
		r = -ENOMEM;
		goto fail;
	}
	abd_record_encode(pub->rec, buf, size);

	pub->fd = openat(reg->dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);
	if (pub->fd < 0) {
		r = (errno == EISDIR || errno == EOPNOTSUPP) ? -EOPNOTSUPP : -errno;
		goto fail;
	}
	/* The umask must not make the record unreadable to other users: unless nobody else can
	 * reach it (a directory of ours that was 0700, or stricter, when opened; root is not
	 * stopped by modes). */
	bool private_dir = !(reg->dir_mode & 077) && reg->dir_uid == pub->rec->uid;
	if ((!private_dir && fchmod(pub->fd, 0644) < 0) ||
	    (r = write_all(pub->fd, buf, size)) < 0) {
		if (r == 0)
			r = -errno;
		goto fail;
	}
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	if (fcntl(pub->fd, F_OFD_SETLK, &fl) < 0) {
		r = -errno;
		goto fail;
	}
	char hex[2 * ABD_INSTANCE_SIZE + 1];
	instance_hex(pub->rec->instance, hex);
	snprintf(pub->name, sizeof(pub->name), "%s.%s", pub->rec->service, hex);
	snprintf(pub->proc, sizeof(pub->proc), "/proc/self/fd/%d", pub->fd);
	free(buf);
	*out = pub;
	return 0;
fail:
	free(buf);
	abd__close(pub->fd);
	abd_record_free(pub->rec);
	free(pub);
	return r;
}

/* linkat(AT_EMPTY_PATH) was refused (ENOENT) where the /proc path then worked. */
static atomic_bool empty_path_refused;

/* The record is complete and locked: only now does it get a name. One linkat. */
ABD_EXPORT int abd_publish_commit(struct abd_publication *pub)
{
	abd__check(pub, -EINVAL);
	if (pub->linked)
		return -EALREADY;
	/* The record names the process that prepared it: another one (a forked child sharing the
	 * descriptor) would publish a pid that is not its own. */
	if (self_pid() != pub->rec->pid)
		return -ECHILD;
	/* AT_EMPTY_PATH links the descriptor itself: no walk of /proc/self/fd/N and of its magic
	 * link (a third of a link + unlink on tmpfs, measured). The kernel lets a caller with
	 * CAP_DAC_READ_SEARCH do it, and from 6.10 the credentials that opened the file; anyone
	 * else gets ENOENT, and this process links through /proc from then on. */
	bool empty = !atomic_load_explicit(&empty_path_refused, memory_order_relaxed);
	if (empty && linkat(pub->fd, "", pub->reg->dirfd, pub->name, AT_EMPTY_PATH) == 0) {
		pub->linked = true;
		return 0;
	}
	if (empty && errno != ENOENT)
		return -errno;
	if (linkat(AT_FDCWD, pub->proc, pub->reg->dirfd, pub->name, AT_SYMLINK_FOLLOW) < 0)
		return -errno;
	if (empty)
		atomic_store_explicit(&empty_path_refused, true, memory_order_relaxed);
	pub->linked = true;
	return 0;
}

ABD_EXPORT int abd_publish(struct abd_registry *reg, const struct abd_record *rec,
                           struct abd_publication **out)
{
	int r = abd_publish_prepare(reg, rec, out);
	if (r < 0)
		return r;
	if ((r = abd_publish_commit(*out)) < 0) {
		abd_withdraw(*out);
		*out = NULL;
	}
	return r;
}

ABD_EXPORT int abd_withdraw(struct abd_publication *pub)
{
	if (!pub)
		return 0;
	int r = 0;
	if (pub->linked && unlinkat(pub->reg->dirfd, pub->name, 0) < 0)
		r = -errno;
	/* After the unlink: watchers see `removed`, never a death. */
	abd__close(pub->fd);
	abd_record_free(pub->rec);
	free(pub);
	return r;
}

ABD_EXPORT const struct abd_record *abd_publication_record(const struct abd_publication *pub)
{
	return pub ? pub->rec : NULL;
}

ABD_EXPORT const char *abd_publication_name(const struct abd_publication *pub)
{
	return pub ? pub->name : NULL;
}

ABD_EXPORT int abd_publication_fd(const struct abd_publication *pub)
{
	return pub ? pub->fd : -EINVAL;
}

/* ------------------------------------------------------------------ reading -- */

ABD_EXPORT const char *abd_state_name(enum abd_state state)
{
	switch (state) {
	case ABD_STATE_ALIVE: return "alive";
	case ABD_STATE_STALE: return "stale";
	case ABD_STATE_INVALID: return "invalid";
	}
	return NULL;
}

int abd__lock_held(int fd)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	return fl.l_type != F_UNLCK;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* "<service>.<32 lowercase hex>": the service part's length, or -1. */
static int parse_name(const char *name, size_t len, uint8_t *instance)
{
	const size_t hexlen = 2 * ABD_INSTANCE_SIZE;
	if (len < hexlen + 2 || len > ABD_RECORD_NAME_MAX)
		return -1;
	size_t svc = len - hexlen - 1;
	if (name[svc] != '.' || !abd__name_valid(name, svc, ABD_SERVICE_MAX))
		return -1;
	for (size_t i = 0; i < ABD_INSTANCE_SIZE; i++) {
		int hi = hexval(name[svc + 1 + 2 * i]), lo = hexval(name[svc + 2 + 2 * i]);
		if (hi < 0 || lo < 0)
			return -1;
		instance[i] = (uint8_t)(hi << 4 | lo);
	}
	return (int)svc;
}

static const char *type_reason(mode_t mode)
{
	if (S_ISLNK(mode))
		return "symlink (never followed)";
	if (S_ISFIFO(mode))
		return "FIFO";
	if (S_ISSOCK(mode))
		return "socket";
	if (S_ISCHR(mode) || S_ISBLK(mode))
		return "device node";
	if (S_ISDIR(mode))
		return "directory";
	return "not a regular file";
}

static const char *dtype_reason(unsigned char t)
{
	switch (t) {
	case DT_LNK: return type_reason(S_IFLNK);
	case DT_FIFO: return type_reason(S_IFIFO);
	case DT_SOCK: return type_reason(S_IFSOCK);
	case DT_CHR: case DT_BLK: return type_reason(S_IFCHR);
	case DT_DIR: return type_reason(S_IFDIR);
	}
	return type_reason(0);
}

void abd__item_clear(struct abd__item *it)
{
	free(it->name);
	abd_record_free(it->rec);
	memset(it, 0, sizeof(*it));
}

static void set_invalid(struct abd__item *it, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void set_invalid(struct abd__item *it, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(it->reason, sizeof(it->reason), fmt, ap);
	va_end(ap);
	abd_record_free(it->rec);
	it->rec = NULL;
	it->e.state = ABD_STATE_INVALID;
	it->e.reason = it->reason;
	it->e.record = NULL;
	it->e.service = NULL;
	it->e.instance = NULL;
	it->e.pid = 0;
}

void abd__item_invalid(struct abd__item *it, const char *fmt, ...)
{
	char why[sizeof(it->reason)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	set_invalid(it, "%s", why);
}

static ssize_t read_exact(int fd, uint8_t *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(fd, buf + got, n - got, (off_t)got);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

/* Check a record whose lock is held against the process it names, when that pid means a
 * process in our PID namespace. */
static void check_process(struct abd_registry *reg, struct abd__item *it, int fd,
                          struct abd__proc_cache **cache)
{
	const struct abd_record *rec = it->rec;
	if (rec->pidns_dev != (uint64_t)reg->pidns_dev || rec->pidns_ino != (uint64_t)reg->pidns_ino)
		return;
	int r = proc_check(cache, rec->pid, rec->start_time, rec->uid);
	if (r == 1 || (r < 0 && r != -ESRCH))
		return; /* fine, or cannot tell (e.g. /proc hidden): the lock and owner checks stand */
	if (r == -ESRCH) {
		/* The publisher may have died since we checked the lock: then it is merely stale. */
		if ((fd >= 0 ? abd__lock_held(fd) : abd__record_locked(reg, it->name)) == 0) {
			it->e.state = ABD_STATE_STALE;
			return;
		}
		set_invalid(it, "pid %d is not the process that published (gone, or another one)",
		            (int)rec->pid);
		return;
	}
	uint64_t start;
	uid_t uid = (uid_t)-1;
	abd__proc_lookup(rec->pid, &start, &uid);
	set_invalid(it, "pid %d runs as uid %u, the record claims uid %u", (int)rec->pid,
	            (unsigned)uid, (unsigned)rec->uid);
}

/* Reading an entry, in the stages both the one-by-one path (item_read) and the batched one
 * (registry-uring.c) go through: begin (the name and the d_type, before any open), opened
 * (the fstat of the open descriptor), decoded (the bytes read). */

int abd__item_begin(struct abd_registry *reg, const char *name, unsigned char d_type,
                    struct abd__item *it, char **take_name, struct abd__stage *p)
{
	memset(it, 0, sizeof(*it));
	if (take_name && *take_name) {
		it->name = *take_name;
		*take_name = NULL;
	} else if (!(it->name = strdup(name))) {
		return -ENOMEM;
	}
	name = it->name;
	it->e.name = it->name;
	it->e.uid = (uid_t)-1;
	size_t len = strlen(name);
	p->svc = parse_name(name, len, p->instance);
	if (p->svc < 0) {
		/* Not even opened: a bad name says nothing we would trust. */
		struct stat st;
		if (fstatat(reg->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
			it->e.uid = st.st_uid;
		else if (errno == ENOENT)
			return -ENOENT;
		set_invalid(it, "name outside the grammar <service>.<32 hex digits>");
		return 0;
	}
	if (d_type != DT_UNKNOWN && d_type != DT_REG) {
		struct stat st;
		if (fstatat(reg->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
			it->e.uid = st.st_uid;
		else if (errno == ENOENT)
			return -ENOENT;
		set_invalid(it, "%s", dtype_reason(d_type));
		return 0;
	}
	return 1;
}

int abd__item_open_failed(struct abd__item *it, int err)
{
	if (err == ENOENT)
		return -ENOENT;
	if (err == ELOOP)
		set_invalid(it, "%s", type_reason(S_IFLNK));
	else if (err == ENXIO)
		set_invalid(it, "%s", type_reason(S_IFSOCK));
	else
		set_invalid(it, "cannot open: %s", strerror(err));
	return 0;
}

int abd__item_opened(struct abd__item *it, const struct stat *st, struct abd__stage *p)
{
	it->e.uid = st->st_uid;
	it->ino = st->st_ino;
	it->dev = st->st_dev;
	it->gid = st->st_gid;
	it->ctime_ns = (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
	p->uid = st->st_uid;
	if (!S_ISREG(st->st_mode)) {
		set_invalid(it, "%s", type_reason(st->st_mode));
		return 0;
	}
	if (st->st_nlink == 0)
		return -ENOENT; /* unlinked between our open and fstat: withdrawn, as if not seen */
	if (st->st_nlink != 1) {
		set_invalid(it, "%lu hard links (a record has exactly one name)",
		            (unsigned long)st->st_nlink);
		return 0;
	}
	if (st->st_size > ABD_RECORD_MAX) {
		set_invalid(it, "oversized (%lld bytes, the bound is %d)", (long long)st->st_size,
		            ABD_RECORD_MAX);
		return 0;
	}
	p->size = (size_t)st->st_size;
	return 1;
}

int abd__item_decoded(struct abd__item *it, const uint8_t *buf, ssize_t n,
                      const struct abd__stage *p, struct abd__arena *arena)
{
	if (n < 0) {
		set_invalid(it, "read: %s", strerror((int)-n));
		return 0;
	}
	const char *why = NULL;
	int r = abd__record_decode_in(buf, (size_t)n, &it->rec, &why, arena);
	if (r == -ENOMEM)
		return r;
	if (r == -EPROTONOSUPPORT) {
		set_invalid(it, "record from a future version (major %u)",
		            n >= 6 ? (unsigned)(buf[4] | buf[5] << 8) : 0u);
		return 0;
	}
	if (r < 0) {
		set_invalid(it, "malformed record: %s", why ? why : strerror(-r));
		return 0;
	}
	struct abd_record *rec = it->rec;
	if ((size_t)p->svc != strlen(rec->service) ||
	    memcmp(it->name, rec->service, (size_t)p->svc) != 0 ||
	    memcmp(p->instance, rec->instance, ABD_INSTANCE_SIZE) != 0) {
		set_invalid(it, "name does not match the record's service and instance");
		return 0;
	}
	if (p->uid != rec->uid) {
		set_invalid(it, "owned by uid %u, the record claims uid %u", (unsigned)p->uid,
		            (unsigned)rec->uid);
		return 0;
	}
	it->e.record = rec;
	it->e.service = rec->service;
	it->e.instance = rec->instance;
	it->e.pid = rec->pid;
	it->e.uid = rec->uid;
	it->lock_pending = true;
	return 0;
}

void abd__item_locked(struct abd_registry *reg, struct abd__item *it, int r,
                      struct abd__proc_cache **cache)
{
	it->lock_pending = false;
	if (r < 0) {
		set_invalid(it, "lock test: %s", strerror(-r));
		return;
	}
	it->e.state = r ? ABD_STATE_ALIVE : ABD_STATE_STALE;
	if (r)
		check_process(reg, it, -1, cache);
}

/* The lock of a read, valid record (lock_pending), asked on its open descriptor. */
static void item_lock(struct abd_registry *reg, struct abd__item *it, int fd,
                      struct abd__proc_cache **cache)
{
	it->lock_pending = false;
	int r = abd__lock_held(fd);
	if (r < 0) {
		set_invalid(it, "lock test: %s", strerror(-r));
		return;
	}
	it->e.state = r ? ABD_STATE_ALIVE : ABD_STATE_STALE;
	if (r)
		check_process(reg, it, fd, cache);
}

/* defer_lock: a valid record is left with it->lock_pending set instead of asking its lock.
 * take_name (may be NULL): *take_name is the
 * heap copy of name, which the item takes (set to NULL) instead of copying it. */
static int item_read(struct abd_registry *reg, const char *name, unsigned char d_type,
                     struct abd__item *it, uint8_t *buf, struct abd__proc_cache **cache,
                     bool defer_lock, char **take_name, struct abd__arena *arena, int *keep_fd)
{
	struct abd__stage p;
	int r = abd__item_begin(reg, name, d_type, it, take_name, &p);
	if (r <= 0)
		return r;
	int fd = openat(reg->dirfd, it->name,
	                O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return abd__item_open_failed(it, errno);
	struct stat st;
	if (fstat(fd, &st) < 0) {
		set_invalid(it, "fstat: %s", strerror(errno));
		r = 0;
	} else if ((r = abd__item_opened(it, &st, &p)) == 1) {
		r = abd__item_decoded(it, buf, read_exact(fd, buf, p.size), &p, arena);
		if (r == 0 && it->lock_pending && !defer_lock)
			item_lock(reg, it, fd, cache);
	}
	if (keep_fd)
		*keep_fd = fd;
	else
		close(fd);
	return r;
}

int abd__item_read(struct abd_registry *reg, const char *name, unsigned char d_type,
                   struct abd__item *it, uint8_t *buf, struct abd__proc_cache **cache,
                   int *keep_fd)
{
	if (keep_fd)
		*keep_fd = -1;
	return item_read(reg, name, d_type, it, buf, cache, false, NULL, NULL, keep_fd);
}

/* ------------------------------------------------------------------ listing -- */

static int dirent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct abd__dirent *)a)->name, ((const struct abd__dirent *)b)->name);
}

void abd__list_free(struct abd__dirent *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(list[i].name);
	free(list);
}

int abd__opendir_fresh(int dirfd, DIR **out)
{
	/* A fresh open file description: our own offset, whoever else reads the directory. */
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	*out = fdopendir(fd);
	if (!*out) {
		int e = -errno;
		close(fd);
		return e;
	}
	return 0;
}

int abd__list_dir(int dirfd, struct abd__dirent **out, size_t *count)
{
	*out = NULL;
	*count = 0;
	DIR *d;
	int oe = abd__opendir_fresh(dirfd, &d);
	if (oe < 0)
		return oe;
	struct abd__dirent *list = NULL;
	size_t n = 0, cap = 0;
	int r = 0;
	struct dirent *e;
	errno = 0;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
			continue;
		if (abd__reserved_name(e->d_name))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			void *p = realloc(list, cap * sizeof(*list));
			if (!p) {
				r = -ENOMEM;
				break;
			}
			list = p;
		}
		if (!(list[n].name = strdup(e->d_name))) {
			r = -ENOMEM;
			break;
		}
		list[n++].type = e->d_type;
		errno = 0;
	}
	if (!r && errno)
		r = -errno;
	closedir(d);
	if (r < 0) {
		abd__list_free(list, n);
		return r;
	}
	if (n > 1)
		qsort(list, n, sizeof(*list), dirent_cmp);
	*out = list;
	*count = n;
	return 0;
}

/* ------------------------------------------------------------------ snapshots -- */

/* From this many entries a snapshot batches its reading through io_uring (registry-uring.c).
 * Liveness stays one F_OFD_GETLK per record on its open descriptor, on both paths: /proc/locks
 * would list every lock in one read, but the kernel formats it for every lock of the system,
 * 4 KiB per read(), each read starting over from the first lock and taking file_rwsem for
 * writing, which stalls every fcntl lock of every process meanwhile; with 10,000 locks reading
 * it took 14 ms (the fcntl of 1,000 records takes 2.5 ms), and 12-15 ms for 1,000 while other
 * jobs took locks. */
#define URING_BATCH_MIN 64

struct abd_snapshot {
	struct abd__item *items;
	size_t n;
	struct abd__arena arena; /* the decoded records */
};

/* Read the entries list[0..n) (their names taken) into snap: batched through io_uring from
 * URING_BATCH_MIN entries where that works, else one by one. No descriptor is kept. */
static int snapshot_read(struct abd_registry *reg, struct abd__dirent *list, size_t n,
                         struct abd_snapshot *snap)
{
	uint8_t *buf = NULL;
	struct abd__proc_cache *cache = NULL;
	int r = 0;
	if (n && !(snap->items = calloc(n, sizeof(*snap->items)))) {
		r = -ENOMEM;
		goto out;
	}
	bool batch = n >= URING_BATCH_MIN;
	/* Many entries: their opens, reads and closes batched through io_uring where it works. */
	r = batch ? abd__read_entries_uring(reg, list, n, snap->items, &snap->n, &cache, &snap->arena)
	          : -ENOSYS;
	if (r < 0 && r != -ENOSYS)
		goto out;
	bool one_by_one = r == -ENOSYS;
	r = 0;
	if (one_by_one && n && !(buf = malloc(ABD_RECORD_MAX))) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n && one_by_one; i++) {
		r = item_read(reg, list[i].name, list[i].type, &snap->items[snap->n], buf, &cache, false,
		              &list[i].name, &snap->arena, NULL);
		if (r == -ENOENT) {
			abd__item_clear(&snap->items[snap->n]);
			r = 0;
			continue; /* withdrawn meanwhile */
		}
		if (r < 0) {
			abd__item_clear(&snap->items[snap->n]);
			goto out;
		}
		snap->n++;
	}
out:
	abd__proc_cache_free(cache);
	free(buf);
	return r;
}

ABD_EXPORT int abd_registry_snapshot(struct abd_registry *reg, struct abd_snapshot **out)
{
	abd__check(out, -EINVAL);
	*out = NULL;
	abd__check(reg, -EINVAL);
	struct abd__dirent *list;
	size_t n;
	int r = abd__list_dir(reg->dirfd, &list, &n);
	if (r < 0)
		return r;
	struct abd_snapshot *snap = calloc(1, sizeof(*snap));
	r = snap ? snapshot_read(reg, list, n, snap) : -ENOMEM;
	abd__list_free(list, n);
	if (r < 0) {
		abd_snapshot_free(snap);
		return r;
	}
	*out = snap;
	return 0;
}

ABD_EXPORT size_t abd_snapshot_count(const struct abd_snapshot *snap)
{
	return snap ? snap->n : 0;
}

ABD_EXPORT const struct abd_entry *abd_snapshot_entry(const struct abd_snapshot *snap, size_t i)
{
	return snap && i < snap->n ? &snap->items[i].e : NULL;
}

ABD_EXPORT void abd_snapshot_free(struct abd_snapshot *snap)
{
	if (!snap)
		return;
	for (size_t i = 0; i < snap->n; i++)
		abd__item_clear(&snap->items[i]);
	abd__arena_free(&snap->arena);
	free(snap->items);
	free(snap);
}

/* ------------------------------------------------------------------ publishers -- */

/* Does the live process pid have gid among its groups (/proc/PID/status: Gid's four, then
 * Groups)? 1 yes, 0 no, -errno (cannot tell). */
static int proc_in_group(pid_t pid, gid_t gid)
{
	char path[64], st[4096];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	int n = read_small(path, st, sizeof(st), NULL);
	if (n < 0)
		return n;
	const char *g = strstr(st, "\nGid:");
	unsigned v[4];
	if (!g || sscanf(g + 5, "%u %u %u %u", &v[0], &v[1], &v[2], &v[3]) != 4)
		return -EIO;
	for (int i = 0; i < 4; i++)
		if ((gid_t)v[i] == gid)
			return 1;
	const char *p = strstr(st, "\nGroups:");
	if (!p)
		return -EIO;
	p += 8;
	while (*p && *p != '\n') {
		char *end;
		unsigned long x = strtoul(p, &end, 10);
		if (end == p)
			break;
		if ((gid_t)x == gid)
			return 1;
		p = end;
	}
	return 0;
}

static bool has_uid(const struct abd_lookup_opts *o, uid_t uid)
{
	for (size_t i = 0; o && i < o->n_publisher_uids; i++)
		if (o->publisher_uids[i] == uid || o->publisher_uids[i] == ABD_PUBLISHER_ANY)
			return true;
	return false;
}

bool abd__publisher_trusted(struct abd_registry *reg, const struct abd__item *it,
                            const struct abd_lookup_opts *opts)
{
	if (it->e.state == ABD_STATE_INVALID || !it->rec)
		return false;
	uid_t owner = it->e.uid; /* the file's owner: abd__item_decoded made the field agree */
	if (owner == 0 || has_uid(opts, owner) || owner == geteuid())
		return true;
	if (!opts || !opts->n_publisher_gids)
		return false;
	bool listed = false;
	for (size_t i = 0; i < opts->n_publisher_gids && !listed; i++)
		listed = opts->publisher_gids[i] == it->gid;
	if (!listed)
		return false;
	/* A setgid directory gives every file its group, whoever creates it. */
	struct stat d;
	if (fstat(reg->dirfd, &d) < 0 || ((d.st_mode & S_ISGID) && d.st_gid == it->gid))
		return false;
	/* The live publisher, where we can see it, must have that group now. */
	const struct abd_record *rec = it->rec;
	if (rec->pidns_dev == (uint64_t)reg->pidns_dev && rec->pidns_ino == (uint64_t)reg->pidns_ino &&
	    it->e.state == ABD_STATE_ALIVE)
		return proc_in_group(rec->pid, it->gid) == 1;
	return true;
}

bool abd__candidate_before(const struct abd__item *a, const struct abd__item *b)
{
	if (a->ctime_ns != b->ctime_ns)
		return a->ctime_ns > b->ctime_ns;
	if (a->rec->published_ns != b->rec->published_ns)
		return a->rec->published_ns > b->rec->published_ns;
	return strcmp(a->name, b->name) < 0;
}

static int check_opts(const struct abd_lookup_opts *o)
{
	if (!o)
		return 0;
	static const void *const zeros[6];
	abd__check(memcmp(o->reserved, zeros, sizeof(zeros)) == 0, -EINVAL);
	abd__check(!o->n_publisher_uids || o->publisher_uids, -EINVAL);
	abd__check(!o->n_publisher_gids || o->publisher_gids, -EINVAL);
	abd__check(!o->n_skip || o->skip, -EINVAL);
	abd__check(o->n_publisher_uids <= ABD_PUBLISHER_MAX, -E2BIG);
	abd__check(o->n_publisher_gids <= ABD_PUBLISHER_MAX, -E2BIG);
	return 0;
}

static bool skipped(const struct abd_lookup_opts *o, const uint8_t *instance)
{
	for (size_t i = 0; o && i < o->n_skip; i++)
		if (memcmp(o->skip + i * ABD_INSTANCE_SIZE, instance, ABD_INSTANCE_SIZE) == 0)
			return true;
	return false;
}

/* A candidate: alive, trusted, not skipped. */
static bool candidate(struct abd_registry *reg, const struct abd__item *it,
                      const struct abd_lookup_opts *opts)
{
	return it->e.state == ABD_STATE_ALIVE && !skipped(opts, it->rec->instance) &&
	       abd__publisher_trusted(reg, it, opts);
}

ABD_EXPORT int abd_entry_trusted(struct abd_registry *reg, const struct abd_entry *entry,
                                 const struct abd_lookup_opts *opts)
{
	abd__check(reg && entry && check_opts(opts) == 0, -EINVAL);
	if (!entry->record || entry->state == ABD_STATE_INVALID)
		return 0; /* not a record (an invalid entry, the overflow placeholder) */
	/* every record entry handed out is the first member of an item (snapshot, watch) */
	const struct abd__item *it = (const struct abd__item *)(const void *)entry;
	return abd__publisher_trusted(reg, it, opts) ? 1 : 0;
}

/* The first candidate among snap's entries (NULL: none). */
static const struct abd_record *best_candidate(struct abd_registry *reg,
                                               const struct abd_snapshot *snap,
                                               const struct abd_lookup_opts *opts)
{
	const struct abd__item *best = NULL;
	for (size_t i = 0; i < snap->n; i++) {
		const struct abd__item *it = &snap->items[i];
		if (candidate(reg, it, opts) && (!best || abd__candidate_before(it, best)))
			best = it;
	}
	return best ? best->rec : NULL;
}

/* Keep fd, the descriptor of the record called name that a lookup returns, in the handle
 * (one per record: a second one of the same record is closed; the oldest goes when full). */
static void lookup_keep(struct abd_registry *reg, const char *name, int fd)
{
	int close_fd = -1;
	pthread_mutex_lock(&reg->kept_lock);
	struct abd__kept_fd *k = NULL;
	for (unsigned i = 0; i < ABD__LOOKUP_KEPT && !k; i++)
		if (reg->kept[i].fd >= 0 && strcmp(reg->kept[i].name, name) == 0)
			k = &reg->kept[i];
	if (k) {
		close_fd = fd; /* kept already */
	} else {
		for (unsigned i = 0; i < ABD__LOOKUP_KEPT && !k; i++)
			if (reg->kept[i].fd < 0)
				k = &reg->kept[i];
		if (!k) { /* full: the round robin's next one goes */
			k = &reg->kept[reg->kept_next++ % ABD__LOOKUP_KEPT];
			close_fd = k->fd;
		}
		snprintf(k->name, sizeof(k->name), "%s", name);
		k->fd = fd;
	}
	pthread_mutex_unlock(&reg->kept_lock);
	abd__close(close_fd);
}

int abd__registry_take_fd(struct abd_registry *reg, const struct abd_record *rec)
{
	char name[ABD_RECORD_NAME_MAX + 1];
	abd__record_name(rec, name, sizeof(name));
	int fd = -1;
	pthread_mutex_lock(&reg->kept_lock);
	for (unsigned i = 0; i < ABD__LOOKUP_KEPT && fd < 0; i++)
		if (reg->kept[i].fd >= 0 && strcmp(reg->kept[i].name, name) == 0) {
			fd = reg->kept[i].fd;
			reg->kept[i].fd = -1;
			reg->kept[i].name[0] = 0;
		}
	pthread_mutex_unlock(&reg->kept_lock);
	return fd;
}

/* A lookup reads only the service's own records ("<service>.<32 hex>": the name must match
 * the record's service, item_read checks it), one by one, and keeps the descriptor of the
 * record it returns in the handle (lookup_keep), for the caller that goes on to use that
 * record (acquisition asks its lock through it instead of opening the record again).
 * Bounded (ABD__LOOKUP_KEPT, evicting closes); many records of one service
 * (URING_BATCH_MIN) are read as a snapshot is, batched and keeping nothing. */
ABD_EXPORT int abd_registry_lookup_opts(struct abd_registry *reg, const char *service,
                                        const struct abd_lookup_opts *opts,
                                        struct abd_record **out)
{
	abd__check(out, -EINVAL);
	*out = NULL;
	abd__check(reg && abd_service_name_valid(service), -EINVAL);
	int r = check_opts(opts);
	if (r < 0)
		return r;
	struct abd__dirent *list;
	size_t n, m = 0, svclen = strlen(service);
	r = abd__list_dir(reg->dirfd, &list, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		const char *name = list[i].name;
		if (strncmp(name, service, svclen) == 0 && name[svclen] == '.' &&
		    strlen(name + svclen + 1) == 2 * ABD_INSTANCE_SIZE)
			list[m++] = list[i];
		else
			free(list[i].name);
	}
	if (m >= URING_BATCH_MIN) {
		struct abd_snapshot *snap = calloc(1, sizeof(*snap));
		r = snap ? snapshot_read(reg, list, m, snap) : -ENOMEM;
		if (r == 0) {
			const struct abd_record *best = best_candidate(reg, snap, opts);
			r = best ? abd__record_copy(best, out) : -ENOENT;
		}
		abd_snapshot_free(snap);
		abd__list_free(list, m);
		return r;
	}
	uint8_t *buf = m ? malloc(ABD_RECORD_MAX) : NULL;
	struct abd__proc_cache *cache = NULL;
	struct abd__item best = { 0 }, it;
	int best_fd = -1;
	r = m && !buf ? -ENOMEM : 0;
	for (size_t i = 0; i < m && r == 0; i++) {
		int fd = -1;
		r = item_read(reg, list[i].name, list[i].type, &it, buf, &cache, false, &list[i].name,
		              NULL, &fd);
		if (r == 0 && candidate(reg, &it, opts) &&
		    (!best.rec || abd__candidate_before(&it, &best))) {
			abd__item_clear(&best);
			abd__close(best_fd);
			best = it;
			best_fd = fd;
			continue;
		}
		if (r == -ENOENT)
			r = 0; /* withdrawn meanwhile */
		abd__item_clear(&it);
		abd__close(fd);
	}
	if (r == 0 && best.rec) {
		*out = best.rec; /* decoded on its own (no arena): the caller's */
		best.rec = NULL;
		lookup_keep(reg, best.name, best_fd);
		best_fd = -1;
	} else if (r == 0) {
		r = -ENOENT;
	}
	abd__item_clear(&best);
	abd__close(best_fd);
	abd__proc_cache_free(cache);
	free(buf);
	abd__list_free(list, m);
	return r;
}

ABD_EXPORT int abd_registry_lookup(struct abd_registry *reg, const char *service,
                                   struct abd_record **out)
{
	return abd_registry_lookup_opts(reg, service, NULL, out);
}

int abd__record_locked(struct abd_registry *reg, const char *name)
{
	int fd = openat(reg->dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return errno == ELOOP || errno == ENXIO ? -EBADMSG : -errno;
	int r = abd__lock_held(fd);
	close(fd);
	return r;
}

ABD_EXPORT int abd_registry_liveness(struct abd_registry *reg, const char *name)
{
	abd__check(reg && name && !strchr(name, '/') && *name, -EINVAL);
	int fd = openat(reg->dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return errno == ELOOP || errno == ENXIO ? -EBADMSG : -errno;
	struct stat st;
	int r;
	if (fstat(fd, &st) < 0)
		r = -errno;
	else if (!S_ISREG(st.st_mode))
		r = -EBADMSG;
	else if ((r = abd__lock_held(fd)) >= 0)
		r = r ? ABD_STATE_ALIVE : ABD_STATE_STALE;
	close(fd);
	return r;
}

/* ------------------------------------------------------------------ GC -- */

/* Records only: the files the layers above keep beside them (".abd-" names, skipped by
 * abd__list_dir) are theirs to collect (runtime/gc.c). */
int abd__registry_gc_records(struct abd_registry *reg, bool remove_stale, unsigned *failed,
                             char ***held, size_t *nheld)
{
	*held = NULL;
	*nheld = 0;
	struct abd__dirent *list;
	size_t n;
	int r = abd__list_dir(reg->dirfd, &list, &n);
	if (r < 0)
		return r;
	uint8_t *buf = malloc(ABD_RECORD_MAX);
	char **alive = n ? calloc(n, sizeof(*alive)) : NULL;
	size_t nalive = 0;
	if (!buf || (n && !alive)) {
		free(buf);
		free(alive);
		abd__list_free(list, n);
		return -ENOMEM;
	}
	int removed = 0;
	for (size_t i = 0; i < n; i++) {
		struct abd__item it;
		/* No process cache: a stale record is decided by its lock alone. */
		r = abd__item_read(reg, list[i].name, list[i].type, &it, buf, NULL, NULL);
		if (r == 0 && it.e.state == ABD_STATE_STALE && remove_stale) {
			if (unlinkat(reg->dirfd, it.name, 0) == 0)
				removed++;
			else if (errno != ENOENT && failed)
				(*failed)++;
		} else if (r == 0 && it.e.state == ABD_STATE_ALIVE && it.rec->socket_len &&
		           !(alive[nalive] = strdup(it.rec->socket))) {
			r = -ENOMEM;
		} else if (r == 0 && it.e.state == ABD_STATE_ALIVE && it.rec->socket_len) {
			nalive++;
		}
		abd__item_clear(&it);
		if (r == -ENOMEM) {
			removed = r;
			break;
		}
	}
	if (removed < 0) {
		for (size_t i = 0; i < nalive; i++)
			free(alive[i]);
		free(alive);
	} else {
		*held = alive;
		*nheld = nalive;
	}
	free(buf);
	abd__list_free(list, n);
	return removed;
}
