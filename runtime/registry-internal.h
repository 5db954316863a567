/* SPDX-License-Identifier: MIT */
/* The registry's internal interface: what record.c, registry.c and registry-uring.c share, and
 * what the layers above it (watch.c, acquire.c, gc.c) use of it. It knows nothing of them:
 * what they need from a handle goes through the calls below (a lookup's record descriptor,
 * their own per-handle state). Internal. */
#ifndef ABD_RUNTIME_REGISTRY_INTERNAL_H
#define ABD_RUNTIME_REGISTRY_INTERNAL_H

#include <abd/registry.h>
#include <dirent.h>
#include <errno.h>
#include "config.h"
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/types.h>

#define ABD__MAGIC "ABDR"
#define ABD__VERSION_MAJOR 1
#define ABD__VERSION_MINOR 1 /* the newest minor written, and read exactly */
#define ABD__HEADER_LEN 96     /* 1.0's header */
#define ABD__HEADER_LEN_1_1 104 /* 1.1: + u64 pidfs inode of the publisher at 96 */
#define ABD__SLOT_FIXED 6 /* u32 fd, u8 kind, u8 name length */

struct abd__slot {
	char name[ABD_SLOT_NAME_MAX + 1];
	uint8_t name_len;
	uint8_t kind;
	int32_t fd;
};

struct abd__meta {
	uint32_t key, value;  /* offsets into blob (NUL-terminated there) */
	uint16_t klen, vlen;
};

struct abd_record {
	char service[ABD_SERVICE_MAX + 1];
	uint8_t instance[ABD_INSTANCE_SIZE];
	bool instance_chosen; /* abd_record_set_instance: abd_publish keeps it */
	int32_t pid;
	uint32_t uid;
	uint64_t start_time, pidns_dev, pidns_ino, caps, published_ns;
	uint64_t pidfs_ino; /* 0: unknown (a 1.0 record) */
	char socket[ABD_SOCKET_PATH_MAX + 1];
	uint16_t socket_len;
	struct abd__slot *slots;
	size_t nslots, slots_cap;
	struct abd__meta *meta;
	size_t nmeta, meta_cap, meta_bytes; /* meta_bytes: the wire size of the section */
	char *blob;
	size_t blob_len, blob_cap;
	bool packed; /* decoded: slots, meta and blob share the record's allocation */
	bool in_arena; /* that allocation belongs to an arena (a snapshot's): not freed alone */
};

/* Bump allocation for the records of one snapshot: one malloc per 64 KiB instead of one per
 * record, all freed at once. */
struct abd__arena_block;
struct abd__arena {
	struct abd__arena_block *head;
};
void *abd__arena_alloc(struct abd__arena *a, size_t n);
void abd__arena_free(struct abd__arena *a);
/* abd_record_decode, the record placed in arena (NULL: malloc). */
int abd__record_decode_in(const void *buf, size_t len, struct abd_record **out, const char **why,
                          struct abd__arena *arena);

uint32_t abd__crc32c(const void *data, size_t len);
uint32_t abd__crc32c_sw(const void *data, size_t len); /* the table, whatever the CPU has */
bool abd__name_valid(const char *s, size_t len, size_t max);
int abd__record_copy(const struct abd_record *src, struct abd_record **out);
size_t abd__record_size(const struct abd_record *r);

/* The descriptors of the records lookups returned (abd_registry_lookup keeps the one it read
 * and checked): whoever goes on to use such a record takes it (abd__registry_take_fd) instead
 * of opening the record again. At most ABD__LOOKUP_KEPT per handle, one per record, the
 * oldest closed first. */
#define ABD__LOOKUP_KEPT 8
struct abd__kept_fd {
	char name[ABD_RECORD_NAME_MAX + 1]; /* the record's file name; "" and fd -1: free */
	int fd;
};

struct abd_registry {
	int dirfd;
	char *path;
	unsigned long fs_type;
	mode_t dir_mode;  /* the directory's mode and owner when opened: a publisher whose records */
	uid_t dir_uid;    /* nobody else can reach needs no fchmod against its umask */
	dev_t pidns_dev;  /* our own PID namespace, to know when a record's pid means a pid here */
	ino_t pidns_ino;
	pthread_mutex_t kept_lock; /* threads may share a handle */
	struct abd__kept_fd kept[ABD__LOOKUP_KEPT];
	unsigned kept_next;
	void *ext; /* abd__registry_ext */
	void (*ext_free)(void *);
};

/* "<service>.<32 hex instance>": the file name of rec's record (truncated to size). */
void abd__record_name(const struct abd_record *rec, char *out, size_t size);

/* Take the descriptor a lookup kept of rec's record file (opened O_RDONLY | O_NOFOLLOW |
 * O_NONBLOCK | O_CLOEXEC, its type, owner and content checked then): the caller's, or -1 when
 * the handle keeps none. */
int abd__registry_take_fd(struct abd_registry *reg, const struct abd_record *rec);

/* State a layer above keeps per handle (acquisition keeps its publisher cache there), made
 * when that layer first needs it; the registry never looks inside, and frees it with the
 * handle through free_fn. abd__registry_ext: that state, or NULL. abd__registry_ext_set:
 * installs p (and free_fn) unless another thread installed one first; returns the one in
 * place, which the caller compares with p. */
void *abd__registry_ext(const struct abd_registry *reg);
void *abd__registry_ext_set(struct abd_registry *reg, void *p, void (*free_fn)(void *));

/* The garbage collector of records (abd_registry_gc, runtime/gc.c, adds the files the layers
 * above keep beside them). Reads every entry; remove_stale: unlinks the stale ones (counted
 * in the return value; failures in *failed when not NULL). *held (the caller frees each and
 * the array): the socket names (abd_record_socket) of the alive records, *nheld of them.
 * Returns how many it removed, or -errno (-ENOMEM: nothing held). */
int abd__registry_gc_records(struct abd_registry *reg, bool remove_stale, unsigned *failed,
                             char ***held, size_t *nheld);

/* Reading one entry: what a snapshot and a watch both keep per name. */
struct abd__item {
	struct abd_entry e;
	char *name;
	struct abd_record *rec;
	ino_t ino;  /* of the file read (0 when not opened) */
	dev_t dev;  /* with lock_pending */
	gid_t gid;  /* the file's group (st_gid), for the publisher policy */
	int64_t ctime_ns; /* the file's inode change time: the order of candidates */
	bool lock_pending; /* read and valid; its lock not asked yet (abd__item_locked) */
	char reason[96];
};

/* What checking processes costs, cached per call: pid -> (uid, start time). */
struct abd__proc_cache;

/* Read the entry called name (d_type from readdir, DT_UNKNOWN if unknown) into it; never
 * fails for a bad entry (state invalid + reason); returns -ENOENT when the name vanished
 * meanwhile, -ENOMEM. buf is scratch of ABD_RECORD_MAX bytes. keep_fd NULL: the descriptor it
 * opened is closed; else it is left open in *keep_fd (-1: none) for the caller to close later,
 * e.g. after it has delivered what it read (watch.c). */
int abd__item_read(struct abd_registry *reg, const char *name, unsigned char d_type,
                   struct abd__item *it, uint8_t *buf, struct abd__proc_cache **cache,
                   int *keep_fd);
void abd__item_clear(struct abd__item *it);

/* The stages of abd__item_read, for a caller that batches the syscalls between them
 * (registry-uring.c). What one entry carries from stage to stage: */
struct abd__stage {
	int svc;         /* length of the service part of the name */
	uint8_t instance[ABD_INSTANCE_SIZE];
	uid_t uid;       /* st_uid of the opened file */
	size_t size;     /* st_size: the bytes to read */
};
/* memset it, take or copy the name, check it and d_type. 1: open the name (O_RDONLY |
 * O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, relative to the directory) and go on;
 * 0: decided (invalid); -ENOENT: gone; -ENOMEM. */
int abd__item_begin(struct abd_registry *reg, const char *name, unsigned char d_type,
                    struct abd__item *it, char **take_name, struct abd__stage *p);
/* The open failed with err (positive errno): 0 (invalid) or -ENOENT. */
int abd__item_open_failed(struct abd__item *it, int err);
/* fstat of the open descriptor. 1: read p->size bytes from offset 0 and go on; 0: decided;
 * -ENOENT: unlinked meanwhile. */
int abd__item_opened(struct abd__item *it, const struct stat *st, struct abd__stage *p);
/* n bytes read (or -errno): decode and check. 0 (valid ones left lock_pending), -ENOMEM. */
int abd__item_decoded(struct abd__item *it, const uint8_t *buf, ssize_t n,
                      const struct abd__stage *p, struct abd__arena *arena);
/* The lock test's answer r (abd__lock_held) for a lock_pending item: alive (then its process
 * checked), stale, or invalid when r < 0. */
void abd__item_locked(struct abd_registry *reg, struct abd__item *it, int r,
                      struct abd__proc_cache **cache);
/* The publisher policy (registry.h, abd_lookup_opts): is it's record's publisher trusted?
 * opts NULL: the default. */
bool abd__publisher_trusted(struct abd_registry *reg, const struct abd__item *it,
                            const struct abd_lookup_opts *opts);
/* Does candidate a come before b (trusted alive records of one name)? Kernel facts first. */
bool abd__candidate_before(const struct abd__item *a, const struct abd__item *b);

/* Mark it invalid with a reason. */
void abd__item_invalid(struct abd__item *it, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Read the entries list[0..n) into items[0..*count) (the ones gone meanwhile left out; the
 * names taken from list), with the opens, reads and closes batched through one io_uring:
 * the same stages and checks as abd__item_read, the lock asked on each open descriptor.
 * 0; -ENOSYS: no usable io_uring here (or the feature mask says no), nothing was read: read
 * them one by one; -ENOMEM, -errno: items[0..*count) hold what was read. registry-uring.c. */
struct abd__dirent;
#if ABD_HAVE_LIBURING
int abd__read_entries_uring(struct abd_registry *reg, struct abd__dirent *list, size_t n,
                            struct abd__item *items, size_t *count,
                            struct abd__proc_cache **cache, struct abd__arena *arena);
#else
static inline int abd__read_entries_uring(struct abd_registry *reg, struct abd__dirent *list,
                                          size_t n, struct abd__item *items, size_t *count,
                                          struct abd__proc_cache **cache,
                                          struct abd__arena *arena)
{
	(void)reg, (void)list, (void)n, (void)items, (void)cache, (void)arena;
	*count = 0;
	return -ENOSYS;
}
#endif
/* How many snapshots read their entries through io_uring in this process (tests). */
#if ABD_HAVE_LIBURING
unsigned abd__snapshots_uring(void);
#else
static inline unsigned abd__snapshots_uring(void)
{
	return 0;
}
#endif
void abd__proc_cache_free(struct abd__proc_cache *c);

/* st_dev/st_ino of /proc/self/ns/pid, cached (per thread, forgotten across fork). 0 or -errno. */
int abd__self_pidns(uint64_t *dev, uint64_t *ino);

/* getpid(), without a syscall after the first call in a process (a page wiped on fork). */
pid_t abd__self_pid(void);

/* Is the record called name in reg locked (its publisher alive)? 1 yes, 0 no, -ENOENT (gone),
 * -errno. One open, F_OFD_GETLK, close: for callers that already read and checked the record. */
int abd__record_locked(struct abd_registry *reg, const char *name);

/* F_OFD_GETLK on fd: 1 if someone holds a lock on the record, 0 if not, -errno. */
int abd__lock_held(int fd);

/* Is (pid, start time) a live process in our PID namespace? 1 yes, 0 no (gone or another
 * process now); uid out. */
int abd__proc_lookup(pid_t pid, uint64_t *start_time, uid_t *uid);

/* Names starting ".abd-" are kept for the files the layers above put beside the records
 * (acquisition's sockets): never records (a service cannot start with '.'), so readers skip
 * them, and the registry's own GC leaves them alone. */
static inline bool abd__reserved_name(const char *name)
{
	return name[0] == '.' && name[1] == 'a' && name[2] == 'b' && name[3] == 'd' && name[4] == '-';
}

/* The directory listing, sorted, with d_type; reserved names left out. */
struct abd__dirent {
	char *name;
	unsigned char type;
};
/* The directory dirfd names, read through a fresh open file description (our own offset):
 * 0 and *out (closedir it), or -errno. */
int abd__opendir_fresh(int dirfd, DIR **out);
int abd__list_dir(int dirfd, struct abd__dirent **out, size_t *n);
void abd__list_free(struct abd__dirent *list, size_t n);

/* How many times a watch has rescanned after an overflow (tests). */
unsigned abd__watch_rescans(const struct abd_watch *w);
/* How many liveness checks writable closes of alive records cost a watch (tests). */
unsigned abd__watch_checks(const struct abd_watch *w);

#endif
