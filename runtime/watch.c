/* SPDX-License-Identifier: MIT */
/* Watching the registry: inotify on the directory (and, on request, a pidfd per alive record)
 * behind one epoll descriptor the caller polls.
 *
 * Every notification leads to one idempotent step, reconcile(name): read what the name holds
 * now and compare it with what the watch believed, reporting the difference. Because the step
 * looks at the truth rather than trusting the event, duplicated, coalesced or reordered
 * events cannot leave the view wrong, and an inotify overflow is repaired by reconciling every
 * name (a rescan).
 *
 * Deaths: the publisher's record descriptor is the only writable one, so its last close (at
 * exit or kill) raises IN_CLOSE_WRITE. That descriptor was opened with O_TMPFILE, so the event
 * carries the name the kernel gave the unnamed file, "#<inode number>", not the record's name
 * (and IN_EXCL_UNLINK would suppress it): the watch maps it back by inode. The kernel announces the close (fsnotify_close) just
 * before it drops the file's locks (locks_remove_file) in __fput, so a watcher can wake up
 * inside that window and still see the lock: it then arms a pidfd for the publisher, which
 * becomes readable only after the process's files are gone (without one: a few more looks,
 * and the next event looks again; a record's owner can raise such events at will, so each
 * costs a bounded amount). No timer, no polling loop. A watch of one service (opts.service)
 * drops every other name before reading anything. */
#include <abd/probe.h>
#include <abd/registry.h>

#include <fcntl.h>
#include <dirent.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>

#include "runtime/internal.h"
#include "runtime/reactor-internal.h"
#include "runtime/registry-internal.h"

#define WATCH_MASK                                                                     \
	(IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM | IN_CLOSE_WRITE | IN_DELETE_SELF | \
	 IN_MOVE_SELF | IN_ONLYDIR)

struct wentry {
	struct abd__item it;
	struct abd_watch *w;
	struct abd_source *psrc; /* the pidfd's reactor source while attached */
	int pidfd;
	size_t index;          /* in w->v */
	size_t hash;           /* hash_name(it.name) */
	struct wentry *next;   /* hash chain */
};

struct abd_watch {
	struct abd_registry *reg;
	unsigned flags;
	char *service;     /* only this service's records (NULL: every entry) */
	size_t service_len;
	unsigned checks;   /* liveness checks made after a writable close (tests) */
	int inofd, epfd;
	bool initial_pending, gone;
	struct wentry **v;
	size_t n, cap;
	struct wentry **buckets;
	size_t nbuckets;
	uint8_t *buf;
	struct abd__proc_cache *cache; /* kept for the watch's life: see registry.c */
	abd_watch_fn fn;
	void *userdata;
	int events;
	unsigned rescans;
	size_t armed; /* pidfds in the epoll set */
	/* The descriptor of the record read last, closed after its event was delivered: before
	 * the next read, or when the call returns (close_pending). At most one held. */
	int pending_fd;
	bool blocking; /* abd_watch_wait cleared the inotify descriptor's O_NONBLOCK */
	/* Driven by a reactor (abd_reactor_add_watch): the owner source stands for the watch,
	 * the read source reads inotify into its own buffer, each alive entry may have a pidfd
	 * source; initial delivers the first ADDED batch. */
	struct abd_reactor *reactor;
	struct abd_source *owner, *ino_src, *initial;
	abd_watch_event_fn *rfn;
	void *rud;
	int depth;          /* > 0 while a reactor callback of this watch runs */
	bool free_pending;  /* abd_watch_free was called from inside one */
	bool rearm_pidfds;  /* pidfds were closed on detach: arm again in process() */
};

static void watch_destroy(struct abd_watch *w);

/* Does the watch look at name at all? A watch of one service ignores every other entry. */
static bool wanted(const struct abd_watch *w, const char *name)
{
	if (!w->service)
		return true;
	return strncmp(name, w->service, w->service_len) == 0 && name[w->service_len] == '.' &&
	       strlen(name + w->service_len + 1) == 2 * ABD_INSTANCE_SIZE;
}

/* ------------------------------------------------------------------ the table -- */

/* Eight bytes a step: a name is mostly its 32 hex digits, and an event's name is hashed once
 * (find, then insert) and its entry keeps the hash (erase, grow). */
static size_t hash_name(const char *s)
{
	size_t len = strlen(s);
	uint64_t h = 0x9e3779b97f4a7c15u ^ len;
	for (; len >= 8; s += 8, len -= 8) {
		uint64_t x;
		memcpy(&x, s, 8);
		h = (h ^ x) * 0xff51afd7ed558ccdu;
		h ^= h >> 32;
	}
	uint64_t x = 0;
	memcpy(&x, s, len);
	h = (h ^ x) * 0xc4ceb9fe1a85ec53u;
	return (size_t)(h ^ (h >> 29));
}

static struct wentry *find_hashed(struct abd_watch *w, const char *name, size_t hash)
{
	for (struct wentry *e = w->buckets[hash & (w->nbuckets - 1)]; e; e = e->next)
		if (e->hash == hash && strcmp(e->it.name, name) == 0)
			return e;
	return NULL;
}

static struct wentry *find(struct abd_watch *w, const char *name)
{
	return find_hashed(w, name, hash_name(name));
}

static int grow(struct abd_watch *w)
{
	if (w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 64;
		void *p = realloc(w->v, cap * sizeof(*w->v));
		if (!p)
			return -ENOMEM;
		w->v = p;
		w->cap = cap;
	}
	if (w->n + 1 > w->nbuckets) {
		size_t nb = w->nbuckets * 2;
		struct wentry **b = calloc(nb, sizeof(*b));
		if (!b)
			return -ENOMEM;
		for (size_t i = 0; i < w->n; i++) {
			struct wentry *e = w->v[i];
			size_t h = e->hash & (nb - 1);
			e->next = b[h];
			b[h] = e;
		}
		free(w->buckets);
		w->buckets = b;
		w->nbuckets = nb;
	}
	return 0;
}

/* Takes it (moved into the table); hash: hash_name(it->name). */
static int insert(struct abd_watch *w, struct abd__item *it, size_t hash)
{
	int r = grow(w);
	struct wentry *e = r < 0 ? NULL : calloc(1, sizeof(*e));
	if (!e) {
		abd__item_clear(it);
		return -ENOMEM;
	}
	e->it = *it;
	if (it->e.reason == it->reason) /* it points into the item it lives in: follow the move */
		e->it.e.reason = e->it.reason;
	e->w = w;
	e->pidfd = -1;
	e->index = w->n;
	e->hash = hash;
	w->v[w->n++] = e;
	size_t h = hash & (w->nbuckets - 1);
	e->next = w->buckets[h];
	w->buckets[h] = e;
	return 0;
}

static void disarm(struct abd_watch *w, struct wentry *e)
{
	if (e->psrc) {
		/* before the close: the reactor stops watching first (a cancel on its way holds
		 * its own reference to the file) */
		abd_source_free(e->psrc);
		e->psrc = NULL;
	}
	if (e->pidfd >= 0)
		w->armed--;
	e->pidfd = abd__close(e->pidfd); /* closing removes it from the epoll set */
}

static void erase(struct abd_watch *w, struct wentry *e)
{
	struct wentry **pp = &w->buckets[e->hash & (w->nbuckets - 1)];
	while (*pp != e)
		pp = &(*pp)->next;
	*pp = e->next;
	w->v[e->index] = w->v[--w->n];
	w->v[e->index]->index = e->index;
	disarm(w, e);
	abd__item_clear(&e->it);
	free(e);
}

static void close_pending(struct abd_watch *w)
{
	w->pending_fd = abd__close(w->pending_fd);
}

static void emit(struct abd_watch *w, enum abd_event_type type, const struct abd_entry *entry)
{
	w->events++;
	if (w->fn)
		w->fn(w->userdata, type, entry);
}

/* ------------------------------------------------------------------ pidfds -- */

static bool same_pidns(struct abd_watch *w, const struct abd_record *rec)
{
	return rec->pidns_dev == (uint64_t)w->reg->pidns_dev &&
	       rec->pidns_ino == (uint64_t)w->reg->pidns_ino;
}

static int pidfd_ready_entry(struct abd_watch *w, struct wentry *e);
static void watch_enter(struct abd_watch *w);
static void watch_leave(struct abd_watch *w);

static void on_pidfd(struct abd_source *src, int status, uint64_t value, void *ud)
{
	(void)src, (void)status, (void)value;
	struct wentry *e = ud;
	struct abd_watch *w = e->w;
	watch_enter(w);
	/* status < 0 (the poll failed): fall back to what the lock says, as for an exit */
	int r = pidfd_ready_entry(w, e);
	(void)r; /* an error here is a failed read of one record: the next event retries it */
	watch_leave(w);
}

/* Start watching an open pidfd: a reactor source while attached, else the watch's epoll. */
static int watch_pidfd(struct abd_watch *w, struct wentry *e, int fd)
{
	if (w->reactor)
		return abd_reactor_add_pidfd(w->reactor, fd, on_pidfd, e, &e->psrc);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = (uint64_t)fd + 1 };
	return epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

/* Watch the publisher's pidfd. After pidfd_open, check that the pid is still the publisher
 * (start time) and that the record is still locked, so a reused pid is never watched in its
 * place. Returns 0, or -ESRCH when the publisher is already gone. */
static int arm(struct abd_watch *w, struct wentry *e)
{
	const struct abd_record *rec = e->it.rec;
	if (e->pidfd >= 0 || !rec || !same_pidns(w, rec) || abd_probe_has(ABD_FEAT_PIDFD_OPEN) != 1)
		return 0;
	int fd = abd__pidfd_open(rec->pid, 0);
	if (fd < 0)
		return fd == -ESRCH ? -ESRCH : 0;
	uint64_t start;
	uid_t uid;
	if (abd__proc_lookup(rec->pid, &start, &uid) != 1 || start != rec->start_time ||
	    abd_registry_liveness(w->reg, e->it.name) != ABD_STATE_ALIVE) {
		close(fd);
		return -ESRCH;
	}
	if (watch_pidfd(w, e, fd) < 0) {
		close(fd);
		return 0;
	}
	e->pidfd = fd;
	w->armed++;
	return 0;
}

/* ------------------------------------------------------------------ reconcile -- */

static bool same_identity(const struct abd__item *a, const struct abd__item *b)
{
	if (a->e.state == ABD_STATE_INVALID || b->e.state == ABD_STATE_INVALID)
		return a->e.state == b->e.state;
	return a->rec->published_ns == b->rec->published_ns && a->rec->pid == b->rec->pid &&
	       a->rec->start_time == b->rec->start_time;
}

static void mark_died(struct abd_watch *w, struct wentry *e)
{
	e->it.e.state = ABD_STATE_STALE;
	disarm(w, e);
	emit(w, ABD_EVENT_DIED, &e->it.e);
}

/* Read name now, compare with the view, report the difference. */
static int reconcile(struct abd_watch *w, const char *name, unsigned char d_type)
{
	if (!wanted(w, name))
		return 0;
	size_t hash = hash_name(name);
	struct wentry *e = find_hashed(w, name, hash);
	struct abd__item it;
	/* The record's descriptor is closed after the event is out: one syscall less between a
	 * publication and the caller hearing of it. */
	close_pending(w);
	int r = abd__item_read(w->reg, name, d_type, &it, w->buf, &w->cache, &w->pending_fd);
	if (r == -ENOENT) {
		abd__item_clear(&it);
		if (e) {
			emit(w, ABD_EVENT_REMOVED, &e->it.e);
			erase(w, e);
		}
		return 0;
	}
	if (r < 0) {
		abd__item_clear(&it);
		return r;
	}
	if (e && same_identity(&e->it, &it)) {
		if (e->it.e.state == ABD_STATE_ALIVE && it.e.state == ABD_STATE_STALE)
			mark_died(w, e);
		abd__item_clear(&it);
		return 0;
	}
	if (e) {
		emit(w, ABD_EVENT_REMOVED, &e->it.e);
		erase(w, e);
	}
	if ((r = insert(w, &it, hash)) < 0)
		return r;
	e = w->v[w->n - 1];
	if (e->it.e.state == ABD_STATE_ALIVE && (w->flags & ABD_WATCH_PIDFD) && arm(w, e) == -ESRCH &&
	    abd_registry_liveness(w->reg, name) == ABD_STATE_STALE)
		e->it.e.state = ABD_STATE_STALE;
	if (!w->initial_pending)
		emit(w, ABD_EVENT_ADDED, &e->it.e);
	return 0;
}

/* Liveness of an entry after a writable close, counted. */
static int close_check(struct abd_watch *w, const char *name)
{
	w->checks++;
	return abd_registry_liveness(w->reg, name);
}

/* Without a pidfd to tell, this many more looks (yielding between them) follow a writable
 * close that still found the record locked. */
#define CLOSE_RETRIES 4

/* Someone closed a writable descriptor of the record: dead, unless the lock says otherwise.
 * The kernel announces the publisher's last close a moment before it drops the lock, so a
 * record still locked here may belong to a dying publisher: its pidfd (armed now if it was
 * not, which also re-checks the lock) tells when the process is gone. The record's owner can
 * raise this event at will (open for writing, close, again), so each costs a bounded amount:
 * one look with a pidfd armed; without one (another PID namespace, no pidfd_open) at most
 * CLOSE_RETRIES more, and the next event looks again. */
static int closed_for_write(struct abd_watch *w, const char *name)
{
	struct wentry *e = find(w, name);
	if (!e || e->it.e.state != ABD_STATE_ALIVE)
		return reconcile(w, name, DT_UNKNOWN);
	for (int i = 0;; i++) {
		int s = close_check(w, name);
		if (s == ABD_STATE_STALE) {
			mark_died(w, e);
			return 0;
		}
		if (s != ABD_STATE_ALIVE)
			return reconcile(w, name, DT_UNKNOWN);
		if (i == 0 && e->pidfd < 0 && arm(w, e) == -ESRCH) {
			if (close_check(w, name) == ABD_STATE_STALE)
				mark_died(w, e);
			return 0;
		}
		if (e->pidfd >= 0 || i == CLOSE_RETRIES)
			return 0; /* the pidfd will tell; or the next event looks again */
		sched_yield();
	}
}

static int pidfd_ready_entry(struct abd_watch *w, struct wentry *e)
{
	disarm(w, e);
	int s = abd_registry_liveness(w->reg, e->it.name);
	if (s == ABD_STATE_STALE)
		mark_died(w, e);
	else if (s != ABD_STATE_ALIVE)
		return reconcile(w, e->it.name, DT_UNKNOWN);
	return 0;
}

static int pidfd_ready(struct abd_watch *w, int fd)
{
	for (size_t i = 0; i < w->n; i++)
		if (w->v[i]->pidfd == fd)
			return pidfd_ready_entry(w, w->v[i]);
	return 0;
}

static int dirent_name_cmp(const void *a, const void *b)
{
	return strcmp(((const struct abd__dirent *)a)->name, ((const struct abd__dirent *)b)->name);
}

static int rescan(struct abd_watch *w);

/* An inotify overflow: rescan (the view is right again, the differences reported), then say
 * that it happened. */
static int overflowed(struct abd_watch *w)
{
	static const struct abd_entry placeholder = { .name = "" };
	w->rescans++;
	int r = rescan(w);
	if (r >= 0)
		emit(w, ABD_EVENT_OVERFLOW, &placeholder);
	return r;
}

static int rescan(struct abd_watch *w)
{
	struct abd__dirent *list;
	size_t n;
	int r = abd__list_dir(w->reg->dirfd, &list, &n);
	if (r < 0)
		return r;
	/* Names we believe in that the listing does not show: gone, unless they came back. */
	char **missing = NULL;
	size_t nmissing = 0;
	if (w->n && !(missing = calloc(w->n, sizeof(*missing))))
		r = -ENOMEM;
	for (size_t i = 0; i < w->n && r >= 0; i++) {
		struct abd__dirent key = { .name = w->v[i]->it.name };
		if (n && bsearch(&key, list, n, sizeof(*list), dirent_name_cmp))
			continue;
		if (!(missing[nmissing++] = strdup(key.name)))
			r = -ENOMEM;
	}
	for (size_t i = 0; i < nmissing && r >= 0; i++)
		r = reconcile(w, missing[i], DT_UNKNOWN);
	for (size_t i = 0; i < n && r >= 0; i++)
		if (wanted(w, list[i].name))
			r = reconcile(w, list[i].name, list[i].type);
	for (size_t i = 0; i < nmissing; i++)
		free(missing[i]);
	free(missing);
	abd__list_free(list, n);
	return r;
}

/* ------------------------------------------------------------------ public -- */

ABD_EXPORT const char *abd_event_name(enum abd_event_type type)
{
	switch (type) {
	case ABD_EVENT_ADDED: return "added";
	case ABD_EVENT_REMOVED: return "removed";
	case ABD_EVENT_DIED: return "died";
	case ABD_EVENT_OVERFLOW: return "overflow";
	}
	return NULL;
}

ABD_EXPORT int abd_watch_new(struct abd_registry *reg, unsigned flags, struct abd_watch **out)
{
	struct abd_watch_opts o = { .flags = flags };
	return abd_watch_new_opts(reg, &o, out);
}

ABD_EXPORT int abd_watch_new_opts(struct abd_registry *reg, const struct abd_watch_opts *opts,
                                  struct abd_watch **out)
{
	static const struct abd_watch_opts none;
	abd__check(out, -EINVAL);
	*out = NULL;
	if (!opts)
		opts = &none;
	abd__check(reg && !(opts->flags & ~(unsigned)ABD_WATCH_PIDFD), -EINVAL);
	abd__check(!opts->service || abd_service_name_valid(opts->service), -EINVAL);
	abd__check(memcmp(opts->reserved, none.reserved, sizeof(none.reserved)) == 0, -EINVAL);
	struct abd_watch *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->reg = reg;
	w->flags = opts->flags;
	w->inofd = w->epfd = w->pending_fd = -1;
	w->nbuckets = 64;
	int r = -ENOMEM;
	if (opts->service) {
		if (!(w->service = strdup(opts->service)))
			goto fail;
		w->service_len = strlen(w->service);
	}
	if (!(w->buckets = calloc(w->nbuckets, sizeof(*w->buckets))) ||
	    !(w->buf = malloc(ABD_RECORD_MAX)))
		goto fail;
	if ((w->inofd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) < 0 ||
	    (w->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
		r = -errno;
		goto fail;
	}
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", reg->dirfd);
	if (inotify_add_watch(w->inofd, proc, WATCH_MASK) < 0 &&
	    inotify_add_watch(w->inofd, reg->path, WATCH_MASK) < 0) {
		r = -errno;
		goto fail;
	}
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0 };
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->inofd, &ev) < 0) {
		r = -errno;
		goto fail;
	}
	/* The watch is in place before the scan: nothing can fall between the two. */
	w->initial_pending = true;
	r = rescan(w);
	close_pending(w);
	if (r < 0)
		goto fail;
	*out = w;
	return 0;
fail:
	abd_watch_free(w);
	return r;
}

ABD_EXPORT void abd_watch_free(struct abd_watch *w)
{
	if (!w)
		return;
	if (w->owner)
		abd_source_free(w->owner); /* detaches (on_owner_kill) */
	if (w->depth > 0) {
		/* From inside one of our reactor callbacks: the batch still reads w. */
		w->free_pending = true;
		return;
	}
	watch_destroy(w);
}

static void watch_destroy(struct abd_watch *w)
{
	close_pending(w);
	while (w->n)
		erase(w, w->v[w->n - 1]);
	abd__close(w->inofd);
	abd__close(w->epfd);
	abd__proc_cache_free(w->cache);
	free(w->v);
	free(w->buckets);
	free(w->buf);
	free(w->service);
	free(w);
}

ABD_EXPORT int abd_watch_fd(const struct abd_watch *w)
{
	return w ? w->epfd : -EINVAL;
}

static int handle(struct abd_watch *w, const struct inotify_event *ev, bool *overflow)
{
	if (ev->mask & IN_Q_OVERFLOW) {
		*overflow = true;
		return 0;
	}
	if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_UNMOUNT)) {
		w->gone = true;
		return 0;
	}
	if (!ev->len || !ev->name[0] || abd__reserved_name(ev->name))
		return 0;
	if (ev->name[0] != '#' && !wanted(w, ev->name))
		return 0; /* another service's: not ours to read */
	if (*overflow)
		return 0; /* the rescan will look at everything */
	if (ev->mask & IN_CLOSE_WRITE) {
		if (find(w, ev->name))
			return closed_for_write(w, ev->name);
		/* "#<ino>": a record's O_TMPFILE descriptor (or an unlinked file's) closing. */
		char *end;
		unsigned long long ino;
		if (ev->name[0] != '#' || !ev->name[1] ||
		    (ino = strtoull(ev->name + 1, &end, 10), *end))
			return 0;
		for (size_t i = 0; i < w->n; i++)
			if (w->v[i]->it.ino == (ino_t)ino && w->v[i]->it.e.state == ABD_STATE_ALIVE) {
				char name[NAME_MAX + 1];
				snprintf(name, sizeof(name), "%s", w->v[i]->it.name);
				return closed_for_write(w, name);
			}
		return 0;
	}
	return reconcile(w, ev->name, DT_UNKNOWN);
}

static void deliver_initial(struct abd_watch *w)
{
	if (w->initial_pending) {
		w->initial_pending = false;
		for (size_t i = 0; i < w->n; i++)
			emit(w, ABD_EVENT_ADDED, &w->v[i]->it.e);
	}
}

/* After a detach closed the pidfds: watch the alive publishers again (ABD_WATCH_PIDFD). */
static void rearm_all(struct abd_watch *w)
{
	if (!w->rearm_pidfds)
		return;
	w->rearm_pidfds = false;
	for (size_t i = 0; i < w->n; i++) {
		struct wentry *e = w->v[i];
		if (e->it.e.state == ABD_STATE_ALIVE && arm(w, e) == -ESRCH &&
		    abd_registry_liveness(w->reg, e->it.name) == ABD_STATE_STALE)
			mark_died(w, e);
	}
}

/* One batch of inotify events (whole events, as read(2) returns them). */
static int handle_batch(struct abd_watch *w, const uint8_t *buf, size_t n, bool *overflow)
{
	int r = 0;
	for (size_t off = 0; off + sizeof(struct inotify_event) <= n && r >= 0;) {
		struct inotify_event ev;
		memcpy(&ev, buf + off, sizeof(ev));
		if (off + sizeof(ev) + ev.len > n)
			break;
		r = handle(w, (const struct inotify_event *)(const void *)(buf + off), overflow);
		off += sizeof(ev) + ev.len;
	}
	return r;
}

/* The inotify descriptor back to O_NONBLOCK after abd_watch_wait slept in read(2) on it. */
static int set_blocking(struct abd_watch *w, bool blocking)
{
	if (w->blocking == blocking)
		return 0;
	if (fcntl(w->inofd, F_SETFL, blocking ? 0 : O_NONBLOCK) < 0)
		return -errno;
	w->blocking = blocking;
	return 0;
}

/* One read of inotify (blocking when the descriptor is) and its events. 1: the queue may
 * hold more (the buffer was filled); 0: emptied (or nothing there); -errno. */
static int read_batch(struct abd_watch *w, bool *overflow)
{
	union {
		struct inotify_event ev;
		char bytes[16384];
	} u;
	ssize_t n;
	while ((n = read(w->inofd, u.bytes, sizeof(u.bytes))) < 0 && errno == EINTR && !w->blocking)
		;
	if (n < 0)
		return errno == EAGAIN ? 0 : -errno;
	int r = handle_batch(w, (const uint8_t *)u.bytes, (size_t)n, overflow);
	if (r < 0)
		return r;
	/* A read that left room for another event emptied the queue; anything newer keeps the
	 * descriptor readable (level-triggered), so the caller comes back for it. */
	return (size_t)n + sizeof(struct inotify_event) + NAME_MAX + 1 <= sizeof(u.bytes) ? 0 : 1;
}

/* After the inotify events: an overflow's rescan, the pidfds that fired, a removed
 * directory. */
static int process_rest(struct abd_watch *w, bool overflow)
{
	int r = 0;
	if (overflow && (r = overflowed(w)) < 0)
		return r;
	struct epoll_event evs[64];
	int n;
	while (w->armed && (n = epoll_wait(w->epfd, evs, 64, 0)) > 0) {
		int handled = 0;
		for (int i = 0; i < n && r >= 0; i++)
			if (evs[i].data.u64) {
				r = pidfd_ready(w, (int)(evs[i].data.u64 - 1));
				handled++;
			}
		if (r < 0 || !handled)
			break; /* only the inotify fd is ready: the next call reads it */
	}
	if (r < 0)
		return r;
	return w->gone ? -EIDRM : 0;
}

static int process(struct abd_watch *w)
{
	deliver_initial(w);
	rearm_all(w);
	int r = set_blocking(w, false);
	if (r < 0)
		return r;
	bool overflow = false;
	/* inotify first: its events come before any pidfd's in time. */
	while ((r = read_batch(w, &overflow)) > 0)
		;
	if (r < 0)
		return r;
	return process_rest(w, overflow);
}

/* The start and end every caller-driven call shares: the callback for this call, the initial
 * state and re-armed pidfds first; the record descriptors held for delivery closed last. */
static int call_begin(struct abd_watch *w, abd_watch_fn fn, void *userdata)
{
	if (w->reactor)
		return -EBUSY;
	w->fn = fn;
	w->userdata = userdata;
	w->events = 0;
	deliver_initial(w);
	rearm_all(w);
	return 0;
}

static int call_end(struct abd_watch *w, int r)
{
	close_pending(w);
	return r < 0 ? r : w->events;
}

ABD_EXPORT int abd_watch_process(struct abd_watch *w, abd_watch_fn fn, void *userdata)
{
	abd__check(w, -EINVAL);
	int r = call_begin(w, fn, userdata);
	return r < 0 ? r : call_end(w, process(w));
}

ABD_EXPORT int abd_watch_wait(struct abd_watch *w, int timeout_ms, abd_watch_fn fn,
                              void *userdata)
{
	abd__check(w, -EINVAL);
	int r = call_begin(w, fn, userdata);
	if (r < 0)
		return r;
	uint64_t deadline = timeout_ms > 0 ? abd__clock_ns() + (uint64_t)timeout_ms * 1000000u : 0;
	while (r >= 0 && !w->events) {
		if (w->gone) {
			r = -EIDRM; /* nothing will ever come: do not sleep */
			break;
		}
		if (timeout_ms < 0 && !w->armed) {
			/* Only inotify can tell us anything: sleep in its read, so that the wake-up
			 * and the notification are one syscall. The descriptor stays blocking until
			 * abd_watch_process (or a reactor) needs it non-blocking again. */
			bool overflow = false;
			if ((r = set_blocking(w, true)) < 0 || (r = read_batch(w, &overflow)) < 0)
				break;
			r = process_rest(w, overflow);
			continue;
		}
		int ms = timeout_ms;
		if (timeout_ms > 0) {
			uint64_t now = abd__clock_ns();
			ms = now >= deadline ? 0 : (int)((deadline - now + 999999) / 1000000);
		}
		struct pollfd p = { .fd = w->epfd, .events = POLLIN };
		int k = poll(&p, 1, ms);
		if (k < 0) {
			r = -errno;
			break;
		}
		if (k > 0)
			r = process(w);
		if (!k || (timeout_ms >= 0 && abd__clock_ns() >= deadline))
			break; /* timed out (0: one look) */
	}
	return call_end(w, r);
}

ABD_EXPORT int abd_watch_rescan(struct abd_watch *w, abd_watch_fn fn, void *userdata)
{
	abd__check(w, -EINVAL);
	int r = call_begin(w, fn, userdata);
	return r < 0 ? r : call_end(w, rescan(w));
}

ABD_EXPORT size_t abd_watch_count(const struct abd_watch *w)
{
	return w ? w->n : 0;
}

ABD_EXPORT const struct abd_entry *abd_watch_entry(const struct abd_watch *w, size_t i)
{
	return w && i < w->n ? &w->v[i]->it.e : NULL;
}

unsigned abd__watch_rescans(const struct abd_watch *w)
{
	return w->rescans;
}

unsigned abd__watch_checks(const struct abd_watch *w)
{
	return w->checks;
}

/* ------------------------------------------------------------------ on a reactor -- */

#define INOTIFY_READ_BYTES 16384

static void watch_enter(struct abd_watch *w)
{
	w->depth++;
	deliver_initial(w); /* the first batch comes before any change, whoever fires first */
}

static void watch_leave(struct abd_watch *w)
{
	if (--w->depth == 0) {
		close_pending(w);
		if (w->free_pending)
			watch_destroy(w);
	}
}

/* emit() lands here while attached. */
static void to_reactor(void *ud, enum abd_event_type type, const struct abd_entry *entry)
{
	struct abd_watch *w = ud;
	if (w->rfn && w->owner && !abd__source_dead(w->owner))
		w->rfn(w->owner, 0, type, entry, w->rud);
}

/* Let go of every source the watch made on the reactor (the owner is being killed). The
 * pidfds are closed: a later abd_watch_process arms them again. */
static void detach(struct abd_watch *w)
{
	abd_source_free(w->ino_src);
	abd_source_free(w->initial);
	w->ino_src = w->initial = NULL;
	for (size_t i = 0; i < w->n; i++) {
		struct wentry *e = w->v[i];
		if (e->psrc) {
			disarm(w, e);
			w->rearm_pidfds = true;
		}
	}
	w->owner = NULL;
	w->reactor = NULL;
	w->rfn = NULL;
	w->fn = NULL;
	w->userdata = NULL;
}

static void on_owner_kill(void *ud)
{
	detach(ud);
}

/* The watch failed: report once, then stay silent (the owner lives on until freed). */
static void fail_watch(struct abd_watch *w, int err)
{
	struct abd_source *owner = w->owner;
	abd_watch_event_fn *fn = w->rfn;
	void *ud = w->rud;
	abd_source_free(w->ino_src);
	w->ino_src = NULL;
	w->rfn = NULL;
	if (fn && owner && !abd__source_dead(owner))
		fn(owner, err, (enum abd_event_type)0, NULL, ud);
}

static void on_inotify(struct abd_source *src, int status, uint64_t n, void *ud)
{
	struct abd_watch *w = ud;
	watch_enter(w);
	int r = status;
	bool overflow = false;
	if (r == 0)
		r = handle_batch(w, abd__source_buf(src), (size_t)n, &overflow);
	if (r >= 0 && overflow)
		r = overflowed(w);
	if (r >= 0 && w->gone)
		r = -EIDRM;
	if (r < 0 && w->ino_src == src)
		fail_watch(w, r);
	watch_leave(w);
}

static void on_initial(struct abd_source *src, int status, uint64_t value, void *ud)
{
	(void)status, (void)value;
	struct abd_watch *w = ud;
	watch_enter(w); /* delivers */
	rearm_all(w);
	if (w->initial == src) {
		w->initial = NULL;
		abd_source_free(src);
	}
	watch_leave(w);
}

ABD_EXPORT int abd_reactor_add_watch(struct abd_reactor *r, struct abd_watch *w,
                                     abd_watch_event_fn *fn, void *userdata,
                                     struct abd_source **out)
{
	if (out)
		*out = NULL;
	abd__check(r && w && fn, -EINVAL);
	int e = abd__reactor_check(r);
	if (e < 0)
		return e;
	if (w->reactor || w->depth > 0 || w->free_pending || w->gone)
		return w->gone ? -EIDRM : -EBUSY;
	/* abd_watch_wait may have left the inotify descriptor blocking: a reactor never blocks */
	if ((e = set_blocking(w, false)) < 0 ||
	    (e = abd__reactor_add_owner(r, on_owner_kill, w, &w->owner)) < 0)
		return e;
	w->reactor = r;
	w->rfn = fn;
	w->rud = userdata;
	w->fn = to_reactor;
	w->userdata = w;
	e = abd__reactor_add_read(r, w->inofd, INOTIFY_READ_BYTES, on_inotify, w, &w->ino_src);
	/* pidfds armed by abd_watch_process move from the watch's epoll to the reactor */
	for (size_t i = 0; i < w->n && e == 0; i++) {
		struct wentry *en = w->v[i];
		if (en->pidfd < 0)
			continue;
		epoll_ctl(w->epfd, EPOLL_CTL_DEL, en->pidfd, NULL);
		if (abd_reactor_add_pidfd(r, en->pidfd, on_pidfd, en, &en->psrc) < 0) {
			disarm(w, en);
			w->rearm_pidfds = true;
		}
	}
	/* The first iteration reports what is not reported yet and arms missing pidfds (a death
	 * found there is reported there, through the callback). */
	if (e == 0 && (w->initial_pending || w->rearm_pidfds))
		e = abd_reactor_add_defer(r, on_initial, w, &w->initial);
	if (e < 0) {
		abd_source_free(w->owner); /* detaches */
		return e;
	}
	if (out)
		*out = w->owner;
	return 0;
}
