/* SPDX-License-Identifier: MIT */
/* The registry: a directory in which each live service is one file, its *record*.
 *
 * A publisher writes the whole record into an unnamed file (O_TMPFILE), takes an OFD write lock
 * on it and only then gives it a name (linkat), so a reader never sees a partial record. The
 * publisher keeps the record's descriptor for life: the lock is its liveness, released by the
 * kernel when the process dies, and the close of that writable descriptor is pushed to every
 * watcher (IN_CLOSE_WRITE). Names carry a random 128-bit instance id and are never reused.
 *
 * The directory is untrusted input: every entry that is not a well-formed record owned by the
 * uid it claims is reported as ABD_STATE_INVALID with a reason, never followed, never read past
 * a bound, never waited on. docs/registry.md specifies the record format and directory rules.
 *
 * Threads: a handle (registry, record, publication, snapshot, watch) is used by one thread at a
 * time; different handles are independent. Descriptors handed out are O_CLOEXEC. */
#ifndef ABD_REGISTRY_H
#define ABD_REGISTRY_H

#include <abd/common.h>
#include <sys/types.h>

ABD_BEGIN_DECLS

/* Bounds of the record format (docs/registry.md). */
#define ABD_SERVICE_MAX 64        /* service name bytes: [A-Za-z0-9._-], no leading dot */
#define ABD_SLOT_NAME_MAX 32      /* descriptor slot name bytes, same grammar */
#define ABD_SLOTS_MAX 32          /* descriptor slots per record */
#define ABD_SOCKET_PATH_MAX 107   /* handshake socket path bytes (sun_path without its NUL) */
#define ABD_META_KEY_MAX 64       /* metadata key bytes, same grammar as a service */
#define ABD_META_VALUE_MAX 1024   /* metadata value bytes: any byte except NUL */
#define ABD_META_MAX 64           /* metadata pairs per record */
#define ABD_META_BYTES_MAX 8192   /* metadata section bytes in all */
#define ABD_RECORD_MAX 65536      /* a record file larger than this is refused unread */
#define ABD_INSTANCE_SIZE 16      /* instance id bytes */
/* A record's file name: "<service>.<32 lowercase hex digits of the instance id>". */
#define ABD_RECORD_NAME_MAX (ABD_SERVICE_MAX + 1 + 2 * ABD_INSTANCE_SIZE)

/* ------------------------------------------------------------------ the directory -- */

struct abd_registry;

enum abd_registry_flags {
	/* Create the directory if it is missing (mode 0700, or 1777 with ABD_REGISTRY_SHARED). */
	ABD_REGISTRY_CREATE = 1u << 0,
	/* When creating: a directory shared by root and users (1777, sticky). */
	ABD_REGISTRY_SHARED = 1u << 1,
};

/* Open the registry directory. dir NULL chooses one: $ABD_REGISTRY, else /run/abd when it
 * exists and is usable (root creates it 1777), else $XDG_RUNTIME_DIR/abd, else /dev/shm/abd-<uid>
 * (then /tmp/abd-<uid> when /dev/shm is missing), the last three created 0700 when missing. An
 * explicit dir is created only with ABD_REGISTRY_CREATE.
 *
 * A directory that is writable by its group or by others without the sticky bit, or owned by
 * a user that is neither root nor the caller, is refused. The last three (private fallbacks)
 * are opened without following a symlink and must be a directory owned by the caller with no
 * group or other access (mode & 077 == 0): anything else found at that name is -EPERM, never
 * used, repaired or skipped for the next fallback. When reason is not NULL it receives a
 * one-line explanation of any failure (truncated to reason_size, always NUL-terminated).
 *
 * Returns 0 and *out (free with abd_registry_free), or -EINVAL (bad argument or flags),
 * -ENOENT (missing, not created), -ENOTDIR, -EPERM (unsafe modes or owner), -EACCES, -ENOMEM,
 * or another -errno from open(2)/mkdir(2). */
ABD_EXPORT int abd_registry_open(const char *dir, unsigned flags, struct abd_registry **out,
                                 char *reason, size_t reason_size);
ABD_EXPORT void abd_registry_free(struct abd_registry *reg);
ABD_DEFINE_POINTER_CLEANUP(struct abd_registry, abd_registry_free)

/* The directory's path as opened, and its descriptor (borrowed: owned by reg). */
ABD_EXPORT const char *abd_registry_path(const struct abd_registry *reg);
ABD_EXPORT int abd_registry_fd(const struct abd_registry *reg);

/* The directory's filesystem magic (statfs f_type) and a name for it ("tmpfs", "overlayfs",
 * ...; "unknown" otherwise). Used to explain -EOPNOTSUPP from abd_publish. */
ABD_EXPORT unsigned long abd_registry_fs_type(const struct abd_registry *reg);
ABD_EXPORT const char *abd_fs_type_name(unsigned long f_type);

/* 1 if name is a valid service name (1..ABD_SERVICE_MAX bytes of [A-Za-z0-9._-], not starting
 * with '.'), else 0. */
ABD_EXPORT int abd_service_name_valid(const char *name);

/* ------------------------------------------------------------------ records -- */

/* An opaque record: built by a publisher, or decoded from a file by a reader. */
struct abd_record;

enum abd_fd_kind { ABD_FD_OTHER = 0, ABD_FD_MEMFD = 1, ABD_FD_EVENTFD = 2, ABD_FD_SOCKET = 3 };

/* A record for service name (copied). pid, uid, start time, PID namespace, instance id and
 * publication time are filled in by abd_publish. Returns 0, -EINVAL (name outside the
 * grammar), -ENOMEM. */
ABD_EXPORT int abd_record_new(const char *service, struct abd_record **out);
ABD_EXPORT void abd_record_free(struct abd_record *rec);
ABD_DEFINE_POINTER_CLEANUP(struct abd_record, abd_record_free)

/* Add a descriptor slot: a name (slot grammar), the descriptor's number in the publisher, its
 * kind. The descriptor is not touched: the record only names it. Returns 0, -EINVAL (bad name,
 * fd < 0, unknown kind), -EEXIST (slot name taken), -ENOSPC (ABD_SLOTS_MAX reached). */
ABD_EXPORT int abd_record_add_fd(struct abd_record *rec, const char *slot, int fd,
                                 enum abd_fd_kind kind);
/* The handshake socket's path ("" for none). Returns 0, -EINVAL (NULL), -ENAMETOOLONG. */
ABD_EXPORT int abd_record_set_socket(struct abd_record *rec, const char *path);
/* Choose the instance id abd_publish will use (16 bytes, not all zero) instead of a fresh
 * random one: e.g. the nonce already written into a ring's header (abd_ring_new), so that a
 * consumer can check one against the other (abd_acquire does). Choose it at random: a name
 * that exists already makes abd_publish fail (-EEXIST). Returns 0 or -EINVAL. */
ABD_EXPORT int abd_record_set_instance(struct abd_record *rec, const uint8_t *instance);
ABD_EXPORT int abd_record_set_caps(struct abd_record *rec, uint64_t caps);
/* Add key=value metadata (both copied). Returns 0, -EINVAL (key outside the grammar, NULL),
 * -EEXIST (key present), -ENAMETOOLONG (value too long), -ENOSPC (ABD_META_MAX pairs or
 * ABD_META_BYTES_MAX bytes reached). */
ABD_EXPORT int abd_record_add_meta(struct abd_record *rec, const char *key, const char *value);

/* Reading a record. Strings are owned by rec and NUL-terminated. */
ABD_EXPORT const char *abd_record_service(const struct abd_record *rec);
ABD_EXPORT const uint8_t *abd_record_instance(const struct abd_record *rec); /* 16 bytes */
ABD_EXPORT pid_t abd_record_pid(const struct abd_record *rec);
ABD_EXPORT uid_t abd_record_uid(const struct abd_record *rec);
/* Process start time in clock ticks after boot (/proc/PID/stat field 22). */
ABD_EXPORT uint64_t abd_record_start_time(const struct abd_record *rec);
/* The publisher's pidfs inode number (st_ino of a pidfd of it: unique for the boot, Linux 6.9+),
 * or 0 when the record does not carry one (a 1.0 record; a kernel without pidfs). */
ABD_EXPORT uint64_t abd_record_pidfs_ino(const struct abd_record *rec);
/* The publisher's PID namespace: st_dev and st_ino of /proc/PID/ns/pid. */
ABD_EXPORT void abd_record_pidns(const struct abd_record *rec, uint64_t *dev, uint64_t *ino);
ABD_EXPORT uint64_t abd_record_caps(const struct abd_record *rec);
/* CLOCK_REALTIME nanoseconds at publication, as the publisher states it (lookups do not
 * choose by it: see "who may publish a name" below). */
ABD_EXPORT uint64_t abd_record_published_ns(const struct abd_record *rec);
ABD_EXPORT const char *abd_record_socket(const struct abd_record *rec);
ABD_EXPORT size_t abd_record_fd_count(const struct abd_record *rec);
/* Slot i: returns 0 and fills the non-NULL out-params, or -ERANGE. */
ABD_EXPORT int abd_record_fd_at(const struct abd_record *rec, size_t i, const char **slot,
                                int *fd, enum abd_fd_kind *kind);
/* The descriptor number of a slot by name, or -ENOENT. */
ABD_EXPORT int abd_record_fd_by_name(const struct abd_record *rec, const char *slot);
ABD_EXPORT size_t abd_record_meta_count(const struct abd_record *rec);
ABD_EXPORT int abd_record_meta_at(const struct abd_record *rec, size_t i, const char **key,
                                  const char **value);
/* The value of a key, or NULL. */
ABD_EXPORT const char *abd_record_meta(const struct abd_record *rec, const char *key);

/* The wire format. encode: returns the length, or -ENOSPC when size is too small (nothing
 * else is written past size). decode: strict and bounded; any input of any length gives a
 * record or an error, never undefined behaviour. Returns 0 and *out, or -EBADMSG (malformed:
 * *why says how, a static string), -EPROTONOSUPPORT (a future major version), -ENOMEM. */
ABD_EXPORT long abd_record_encode(const struct abd_record *rec, void *buf, size_t size);
ABD_EXPORT int abd_record_decode(const void *buf, size_t len, struct abd_record **out,
                                 const char **why);

/* ------------------------------------------------------------------ publication -- */

struct abd_publication;

/* Publish rec in reg: fills in pid, uid, start time, PID namespace, a fresh random instance id
 * and the publication time, writes the record to an O_TMPFILE file (mode 0644, whatever the
 * umask), locks it (OFD write lock) and links it as "<service>.<instance hex>". rec is
 * borrowed; the publication keeps its own copy.
 *
 * The publication owns the record's descriptor (O_CLOEXEC) and keeps it open until
 * abd_withdraw: its lock is the service's liveness. A child forked afterwards shares the open
 * file description, so the record stays alive while such a child lives (exec closes it).
 *
 * Returns 0 and *out, -EINVAL, -EOPNOTSUPP (the directory's filesystem has no O_TMPFILE: use
 * tmpfs; abd_registry_fs_type names it), -EACCES/-EPERM (no write permission), -ENOSPC,
 * -EMFILE, -ENOMEM, or another -errno from open/write/fcntl/linkat. */
ABD_EXPORT int abd_publish(struct abd_registry *reg, const struct abd_record *rec,
                           struct abd_publication **out);

/* abd_publish in two stages, for a process that wants its record ready in advance and to
 * appear at the instant it can serve: abd_publish = prepare + commit.
 *
 * abd_publish_prepare does everything but the name: fills in the identity (as abd_publish;
 * the publication time is the prepare's), writes the record to an O_TMPFILE file and takes
 * its OFD write lock. The record is invisible until the commit: no snapshot, lookup, GC or
 * watcher can see it (the file has no name), and if the process dies or calls abd_withdraw
 * first, the kernel frees the file and nothing ever appears in the directory.
 * abd_publication_name already gives the name the commit will create, abd_publication_fd the
 * descriptor. Returns 0 and *out (a prepared publication, owned by the caller: commit it,
 * or release it with abd_withdraw), or the errors of abd_publish except those of linkat.
 *
 * abd_publish_commit gives the prepared record its name: one linkat(2), nothing else (the
 * record is complete and locked already). Returns 0, or
 *   -EINVAL    pub is NULL;
 *   -EALREADY  pub is already committed (a second commit changes nothing);
 *   -ECHILD    the caller is not the process that prepared pub (a forked child shares its
 *              descriptor, but the record names the preparer's pid): prepare in the child;
 *   -EEXIST    the name is taken (an instance chosen with abd_record_set_instance is in use)
 *   -EACCES, -ENOSPC, ...  another -errno of linkat
 * On failure pub stays prepared and uncommitted: commit again, or abd_withdraw it. A pub that
 * abd_withdraw has freed must not be used again (committed or not). */
ABD_EXPORT int abd_publish_prepare(struct abd_registry *reg, const struct abd_record *rec,
                                   struct abd_publication **out);
ABD_EXPORT int abd_publish_commit(struct abd_publication *pub);

/* Unlink the record (when committed), close its descriptor (releasing the lock) and free
 * pub, committed or only prepared. NULL is accepted. Returns 0, or the -errno of unlinkat (the
 * descriptor is closed and pub freed anyway). Watchers see `removed` (nothing for a
 * publication never committed). */
ABD_EXPORT int abd_withdraw(struct abd_publication *pub);
/* The record as published (owned by pub), its file name, its descriptor (borrowed). */
ABD_EXPORT const struct abd_record *abd_publication_record(const struct abd_publication *pub);
ABD_EXPORT const char *abd_publication_name(const struct abd_publication *pub);
ABD_EXPORT int abd_publication_fd(const struct abd_publication *pub);

/* ------------------------------------------------------------------ reading -- */

enum abd_state {
	ABD_STATE_ALIVE = 1,   /* a valid record whose publisher holds its lock */
	ABD_STATE_STALE = 2,   /* a valid record nobody holds: its publisher died (GC removes it) */
	ABD_STATE_INVALID = 3, /* not a record we accept: see reason */
};
ABD_EXPORT const char *abd_state_name(enum abd_state state); /* "alive", "stale", "invalid" */

/* One directory entry as a reader saw it. Owned by the snapshot or watch that produced it. */
struct abd_entry {
	const char *name;                 /* file name (any bytes but '/' and NUL) */
	enum abd_state state;
	const char *reason;               /* why invalid (NULL otherwise) */
	const struct abd_record *record;  /* NULL when invalid */
	const char *service;              /* the record's service; NULL when invalid */
	const uint8_t *instance;          /* 16 bytes; NULL when invalid */
	pid_t pid;                        /* the record's pid; 0 when invalid */
	uid_t uid;                        /* the record's uid; the file's owner when invalid */
	void *reserved[4];
};

/* Liveness of the record named name in reg: ABD_STATE_ALIVE or ABD_STATE_STALE by the lock
 * (a reused PID cannot make a dead publisher look alive), or -ENOENT, -EINVAL (bad name),
 * -EBADMSG (not a regular record file), or another -errno of openat/fcntl. */
ABD_EXPORT int abd_registry_liveness(struct abd_registry *reg, const char *name);

/* A snapshot of the directory: every entry read once, never taking a lock that a publisher
 * waits on. Returns 0 and *out, -ENOMEM, or the -errno of reading the directory itself; bad
 * entries do not fail the call, they are entries with state ABD_STATE_INVALID. */
struct abd_snapshot;
ABD_EXPORT int abd_registry_snapshot(struct abd_registry *reg, struct abd_snapshot **out);
ABD_EXPORT size_t abd_snapshot_count(const struct abd_snapshot *snap);
/* Entry i (0 <= i < count), owned by snap; NULL out of range. Entries are sorted by name. */
ABD_EXPORT const struct abd_entry *abd_snapshot_entry(const struct abd_snapshot *snap, size_t i);
ABD_EXPORT void abd_snapshot_free(struct abd_snapshot *snap);
ABD_DEFINE_POINTER_CLEANUP(struct abd_snapshot, abd_snapshot_free)

/* ---- who may publish a name (the opener's policy) ----
 *
 * Anyone who can write the directory can publish any name: an opener takes only records whose
 * publisher it trusts. The publisher is the record FILE's owner (st_uid, set by the kernel
 * from the creator's fsuid; a record whose uid field disagrees is invalid anyway), never a
 * field the publisher wrote. The default policy trusts the caller's effective uid and root;
 * publisher_uids adds uids, publisher_gids adds groups: a record is then trusted when its
 * file's group (st_gid, which the kernel sets from the creator's fsgid, or lets an owner
 * change only to a group it belongs to) is one of them, the registry directory is not setgid
 * with that group (there every file gets the directory's group, whoever made it), and, when
 * the publisher runs in the caller's PID namespace, the live publisher process has that group
 * (/proc/PID/status: Gid or Groups). ABD_PUBLISHER_ANY among the uids trusts every owner.
 *
 * Among the trusted alive records of a name, the newest by the record file's inode change
 * time (st_ctime: set by the kernel when the record was linked; its owner can only move its
 * own record forward, e.g. by chmod) is taken first; the publication time the record states
 * (published_ns) only breaks a tie between equal change times. */
#define ABD_PUBLISHER_MAX 64              /* uids and gids each */
#define ABD_PUBLISHER_ANY ((uid_t)-1)     /* in publisher_uids: every owner is trusted */

struct abd_lookup_opts {
	/* Trusted publishers on top of the default (the caller's effective uid, and root). */
	const uid_t *publisher_uids;
	size_t n_publisher_uids;
	const gid_t *publisher_gids;
	size_t n_publisher_gids;
	/* Records to pass over (their 16-byte instance ids, n_skip of them back to back): e.g.
	 * candidates that failed verification, so that the next one is returned. */
	const uint8_t *skip;
	size_t n_skip;
	void *reserved[6]; /* zero */
};

/* The trusted alive record of service name that comes first in the order above: returns 0
 * and *out (a copy, free with abd_record_free), -ENOENT (none alive and trusted, or all
 * skipped), -EINVAL (bad argument, reserved not zero), -E2BIG (more than ABD_PUBLISHER_MAX
 * uids or gids), -ENOMEM. opts NULL: the default policy. Only that service's records are
 * read. reg keeps the descriptor of the record returned (read-only, no lock taken), for
 * abd_acquire on the same handle to ask the record's lock through: at most one per publisher
 * process and 8 per handle, closed when evicted or by abd_registry_free. */
ABD_EXPORT int abd_registry_lookup_opts(struct abd_registry *reg, const char *service,
                                        const struct abd_lookup_opts *opts,
                                        struct abd_record **out);
/* abd_registry_lookup_opts with the default policy. */
ABD_EXPORT int abd_registry_lookup(struct abd_registry *reg, const char *service,
                                   struct abd_record **out);
/* Would a lookup with opts (NULL: the default policy) trust the publisher of entry (one of a
 * snapshot's or a watch's, a valid record: alive or stale)? 1 yes, 0 no (also for an invalid
 * entry), -EINVAL (bad argument). */
ABD_EXPORT int abd_entry_trusted(struct abd_registry *reg, const struct abd_entry *entry,
                                 const struct abd_lookup_opts *opts);

/* Remove stale records (valid records whose lock nobody holds). Records being published
 * cannot be removed: a name is linked only once its record is complete and locked, and names
 * are never reused. Returns the number removed, or -errno of reading the directory; *failed
 * (may be NULL) counts stale records that could not be unlinked (e.g. another user's record in
 * a sticky directory: EPERM). */
ABD_EXPORT int abd_registry_gc(struct abd_registry *reg, unsigned *failed);
/* abd_registry_gc also removes dead publishers' handshake sockets (".abd-<32 hex>.sock": only
 * those no alive record names and whose socket refuses connections, i.e. nobody listens;
 * docs/acquire.md, "GC"). This does only that, and returns how many it removed, or -errno;
 * *failed (may be NULL) counts dead sockets that could not be unlinked. */
ABD_EXPORT int abd_registry_gc_sockets(struct abd_registry *reg, unsigned *failed);

/* ------------------------------------------------------------------ watching -- */

enum abd_event_type {
	ABD_EVENT_ADDED = 1,   /* a name appeared (entry->state: alive, stale or invalid) */
	ABD_EVENT_REMOVED = 2, /* a name left the directory (entry: as last seen) */
	ABD_EVENT_DIED = 3,    /* an alive record's publisher died: now stale */
	/* The kernel's inotify queue overflowed (events were lost). The watch has already
	 * rescanned the directory and reported the difference as the events above, so its view
	 * is right again; this says that it happened (entry: a placeholder, name "", every other
	 * field empty). */
	ABD_EVENT_OVERFLOW = 4,
};
ABD_EXPORT const char *abd_event_name(enum abd_event_type type); /* "added", ..., "overflow" */

enum abd_watch_flags {
	/* Also learn of deaths from a pidfd per alive record of this PID namespace (where the
	 * probe offers pidfd_open); IN_CLOSE_WRITE alone is the default. One descriptor each. */
	ABD_WATCH_PIDFD = 1u << 0,
};

struct abd_watch;

/* Watch reg. The first abd_watch_process reports every current entry as ABD_EVENT_ADDED.
 * reg must outlive the watch. Returns 0 and *out, -EINVAL, -ENOMEM, -EMFILE, or another -errno
 * of inotify/epoll. */
ABD_EXPORT int abd_watch_new(struct abd_registry *reg, unsigned flags, struct abd_watch **out);

struct abd_watch_opts {
	unsigned flags;      /* enum abd_watch_flags */
	/* NULL: every entry. Else a service name: the watch sees only that service's records
	 * (names "<service>.<32 hex digits>") and keeps nothing for any other entry: no state,
	 * no descriptor, no read. What it costs is then bounded by that service's records,
	 * whatever else the directory holds. */
	const char *service;
	void *reserved[6];   /* zero */
};
/* abd_watch_new with options (NULL: as abd_watch_new(reg, 0, out)). Returns 0 and *out,
 * -EINVAL (bad flags, a service name outside the grammar, reserved not zero), or the errors of
 * abd_watch_new. */
ABD_EXPORT int abd_watch_new_opts(struct abd_registry *reg, const struct abd_watch_opts *opts,
                                  struct abd_watch **out);
ABD_EXPORT void abd_watch_free(struct abd_watch *w);
ABD_DEFINE_POINTER_CLEANUP(struct abd_watch, abd_watch_free)

/* A descriptor that polls readable (POLLIN) when abd_watch_process has work; borrowed, owned
 * by w. */
ABD_EXPORT int abd_watch_fd(const struct abd_watch *w);

typedef void (*abd_watch_fn)(void *userdata, enum abd_event_type type,
                             const struct abd_entry *entry);

/* Handle every pending notification without blocking and call fn for each event (entry valid
 * only during the call). An inotify queue overflow is repaired by rescanning the directory and
 * reporting the difference, then reported itself (ABD_EVENT_OVERFLOW). Returns the number of events, or -EIDRM (the directory was
 * removed or moved), -ENOMEM, or another -errno of read(2). */
ABD_EXPORT int abd_watch_process(struct abd_watch *w, abd_watch_fn fn, void *userdata);

/* abd_watch_process that waits: blocks until at least one event has been delivered to fn, or
 * timeout_ms milliseconds passed (< 0: no limit; 0: one look, no sleep). With no limit and no
 * pidfd armed (the default: without ABD_WATCH_PIDFD, the usual case) it sleeps in read(2) on
 * the inotify descriptor, so that waking up and reading the notification are one syscall,
 * where a poll(abd_watch_fd) + abd_watch_process loop pays two. (It then leaves that
 * descriptor in blocking mode; abd_watch_process and a reactor put it back: one fcntl.)
 * Otherwise it polls abd_watch_fd and processes. Events that arrive in the same batch are
 * delivered too. Returns the number of events (> 0), 0 when the time ran out, -EINTR (a signal
 * interrupted the sleep; no event was lost: they wait in the queue), -EBUSY (attached to a
 * reactor), -EINVAL, or the errors of abd_watch_process. */
ABD_EXPORT int abd_watch_wait(struct abd_watch *w, int timeout_ms, abd_watch_fn fn,
                              void *userdata);

/* Rescan the directory now and report the difference from the watch's view (what an inotify
 * overflow triggers). Returns the number of events or -errno. */
ABD_EXPORT int abd_watch_rescan(struct abd_watch *w, abd_watch_fn fn, void *userdata);

/* The watch's current view: the number of entries it believes in, and entry i (in no
 * particular order; owned by w, valid until the next process/rescan; NULL out of range). */
ABD_EXPORT size_t abd_watch_count(const struct abd_watch *w);
ABD_EXPORT const struct abd_entry *abd_watch_entry(const struct abd_watch *w, size_t i);

ABD_END_DECLS

#endif
