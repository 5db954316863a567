/* SPDX-License-Identifier: MIT */
/* abd_registry_gc: the registry's stale records (runtime/registry.c), then the files publishers
 * keep beside them, their handshake sockets (compat/handshake.c), which only this layer
 * knows. docs/registry.md and docs/acquire.md ("GC") explain the rules. */
#include <abd/registry.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "compat/handshake.h"
#include "runtime/internal.h"
#include "runtime/registry-internal.h"

/* The handshake sockets of publishers (".abd-<32 hex>.sock", compat/handshake.c),
 * which the registry keeps beside its records. One whose
 * socket is closed refuses connections (ECONNREFUSED): its publisher died, or freed its
 * server without unlinking. A live server's name always listens: it is bound in a private
 * directory ".abd-<32 hex>.tmp" (mode 0700) and renamed into the registry once listening. So
 * a ".sock" is removed only when no alive record names it and connect() is refused. A ".tmp"
 * directory exists while a server is being set up, for a few syscalls: it is removed (with
 * the socket file in it, unless that listens) only when it was also changed more than
 * SOCK_TMP_GRACE seconds ago (a publisher killed between mkdir and rename); so is a ".tmp"
 * socket file (left by versions that bound in the registry directory itself). Its mtime says
 * when: mkdir and bind set it; only its owner can set it back, to lose its own server.
 *
 * Nothing is done through a name another user could swap: each entry is opened with
 * O_PATH|O_NOFOLLOW (a symlink is never followed), its kind and age are read on that
 * descriptor, and connect() goes through it (/proc/self/fd/N), so the socket asked is the
 * file checked. unlinkat then removes the name, relative to the directory's descriptor: the
 * one race left is a name moved between the check and unlinkat, which in a directory
 * abd_registry_open accepts (sticky when others may write it) only the entry's owner, the
 * directory's owner or root can do, and unlinking removes a name, never a file's content. */
#define SOCK_TMP_GRACE 60

enum sock_name { SOCK_NOT_OURS, SOCK_FINAL, SOCK_TMP };

static enum sock_name sock_name_kind(const char *name)
{
	switch (abd__hs_sock_name(name)) {
	case 1: return SOCK_FINAL;
	case 2: return SOCK_TMP;
	}
	return SOCK_NOT_OURS;
}

static bool named_by(char *const *names, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return true;
	return false;
}

static bool sock_old(const struct stat *st)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	return now.tv_sec - st->st_mtim.tv_sec > SOCK_TMP_GRACE;
}

/* A publisher's private set-up directory left behind: its socket file (unless it listens: a
 * publisher stopped mid-way, still alive) and then the directory. 1 removed, 0 kept, -errno. */
static int gc_tmp_dir(int dirfd, const char *name)
{
	abd__autoclose int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!sock_old(&st))
		return 0;
	abd__autoclose int s = openat(fd, "s", O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (s >= 0) {
		if (fstat(s, &st) < 0 || !S_ISSOCK(st.st_mode) || abd__hs_listening_fd(s) != 0)
			return 0;
		if (unlinkat(fd, "s", 0) < 0 && errno != ENOENT)
			return -errno;
	}
	if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0)
		return errno == ENOENT ? 0 : -errno;
	return 1;
}

/* Remove dead handshake sockets in the directory dirfd; keep those named by alive
 * (names[0..n)). Returns how many. */
static int gc_sockets(int dirfd, char *const *alive, size_t nalive, unsigned *failed)
{
	DIR *d;
	int oe = abd__opendir_fresh(dirfd, &d);
	if (oe < 0)
		return oe;
	int removed = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		enum sock_name kind = sock_name_kind(e->d_name);
		if (kind == SOCK_NOT_OURS ||
		    (e->d_type != DT_SOCK && e->d_type != DT_UNKNOWN &&
		     !(kind == SOCK_TMP && e->d_type == DT_DIR)))
			continue;
		if (kind == SOCK_FINAL && named_by(alive, nalive, e->d_name))
			continue;
		abd__autoclose int s = openat(dirfd, e->d_name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		struct stat st;
		if (s < 0 || fstat(s, &st) < 0)
			continue;
		if (kind == SOCK_TMP && S_ISDIR(st.st_mode)) {
			int r = gc_tmp_dir(dirfd, e->d_name);
			if (r > 0)
				removed++;
			else if (r < 0 && failed)
				(*failed)++;
			continue;
		}
		if (!S_ISSOCK(st.st_mode) || (kind == SOCK_TMP && !sock_old(&st)))
			continue;
		/* 1: somebody listens; < 0: cannot tell (e.g. EACCES: another user's socket) */
		if (abd__hs_listening_fd(s) != 0)
			continue;
		if (unlinkat(dirfd, e->d_name, 0) == 0)
			removed++;
		else if (errno != ENOENT && failed)
			(*failed)++;
	}
	closedir(d);
	return removed;
}

/* Records first (stale ones removed when records is set), then sockets (the names alive
 * records hold kept). */
static int gc_run(struct abd_registry *reg, bool records, unsigned *failed, int *sockets)
{
	char **held;
	size_t nheld;
	int removed = abd__registry_gc_records(reg, records, failed, &held, &nheld);
	if (removed < 0)
		return removed;
	int k = gc_sockets(reg->dirfd, held, nheld, failed);
	if (sockets)
		*sockets = k;
	for (size_t i = 0; i < nheld; i++)
		free(held[i]);
	free(held);
	return removed;
}

ABD_EXPORT int abd_registry_gc(struct abd_registry *reg, unsigned *failed)
{
	if (failed)
		*failed = 0;
	abd__check(reg, -EINVAL);
	return gc_run(reg, true, failed, NULL);
}

ABD_EXPORT int abd_registry_gc_sockets(struct abd_registry *reg, unsigned *failed)
{
	if (failed)
		*failed = 0;
	abd__check(reg, -EINVAL);
	int sockets = 0;
	int r = gc_run(reg, false, failed, &sockets);
	return r < 0 ? r : sockets;
}
