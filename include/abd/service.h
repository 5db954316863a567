/* SPDX-License-Identifier: MIT */
/* Services: the front door. One call publishes a ring under a name; one call opens it by name.
 *
 *   publisher:  abd_service_publish("camera.frames", &cfg, ABD_SERVICE_PRODUCER, &svc);
 *               abd_service_push(svc, &frame, sizeof(frame), -1);  ...  abd_service_close(svc);
 *   consumer:   abd_service_open("camera.frames", &cfg, ABD_SERVICE_CONSUMER, 5e9, &svc);
 *               n = abd_service_pop(svc, buf, sizeof(buf), -1);   ...  abd_service_close(svc);
 *
 * Either side may push, pop or both (the roles are per handle); `abdctl serve` publishes a
 * consumer, `abdctl send` opens a producer. Underneath: a ring (include/abd/ring.h) in a sealed
 * memfd, a record in the registry (registry.h) whose instance id is the ring's
 * nonce and whose metadata states the geometry and message type, and the publisher's handshake
 * server (acquire.h). Openers watch the registry, so the publisher's withdrawal or death reaches
 * them as an event, and push/pop on a closed service return -EPIPE: never a crash (the seals
 * rule out SIGBUS) and never a hang in a blocking call.
 *
 * Reactor: every service runs its registry watch and (publisher) its handshake server on a
 * reactor (reactor.h): the one given in the configuration (embedding: the caller runs it), or
 * one the service creates and owns (abd_service_reactor() gives it; run it, or embed its fd).
 * Events (abd_service_set_event_fn) are delivered only from that reactor's run_once/run.
 * The blocking calls below (open, push, pop) wait by themselves and also notice a publisher's
 * death without the reactor being run; the event then follows at the next reactor iteration.
 *
 * Record metadata of a service (docs/service.md): abd.service = "ring/2", abd.capacity,
 * abd.slot_size, abd.type (name), abd.type_size (decimal, 0: variable), abd.type_hash (16 hex
 * digits). Slot: "ring" (memfd). The ring header's `closed` word (ring
 * line 7, docs/ring.md) says the publisher withdrew (1) or died (2).
 *
 * Threads: a service handle is used by one thread at a time, the thread that owns its reactor.
 * After fork() a child must not use the parent's handle (open the service anew). Every
 * descriptor the service makes is O_CLOEXEC and owned by it. */
#ifndef ABD_SERVICE_H
#define ABD_SERVICE_H

#include <abd/common.h>
#include <abd/reactor.h>
#include <abd/ring.h>
#include <sys/types.h>

ABD_BEGIN_DECLS

struct abd_service;

#define ABD_SERVICE_DEFAULT_CAPACITY 256u
#define ABD_SERVICE_DEFAULT_SLOT_SIZE 256u
#define ABD_SERVICE_TYPE_MAX 64 /* type name bytes: [A-Za-z0-9._:<>-], same limit as a service */
#define ABD_SERVICE_ALLOW_MAX 64 /* uids and gids each */

/* Flags of abd_service_publish and abd_service_open. */
enum abd_service_flags {
	ABD_SERVICE_PRODUCER = 1u << 0, /* this handle pushes */
	ABD_SERVICE_CONSUMER = 1u << 1, /* this handle pops; neither role: both */
	/* publish only: ring modes (ring.h): at most one producer / consumer handle at a time in
	 * all processes; a second gets -EBUSY at open. */
	ABD_SERVICE_SINGLE_PRODUCER = 1u << 2,
	ABD_SERVICE_SINGLE_CONSUMER = 1u << 3,
	/* open only: force an acquisition path (acquire.h); both: -EINVAL. */
	ABD_SERVICE_PIDFD_GETFD = 1u << 4,
	ABD_SERVICE_SCM_RIGHTS = 1u << 5,
	/* No role at all: push/pop give -EPERM and the handle is not counted among producers or
	 * consumers. open: for statistics (abdctl info); publish: a rendezvous that only holds
	 * the ring for its openers (abdctl serve --hold). Exclusive with the roles. */
	ABD_SERVICE_OBSERVER = 1u << 6,
};

/* What a publisher offers and an opener expects. Zero it ({0}, memset, or C++ `{}`), then set
 * what matters; NULL where a call takes one means all defaults. Fields a call does not use
 * are ignored. Borrowed for the duration of the call only. */
struct abd_service_config {
	/* The registry directory (abd_registry_open; created 0700 if missing). NULL: its default
	 * choice ($ABD_REGISTRY, /run/abd, $XDG_RUNTIME_DIR/abd, /dev/shm/abd-UID). */
	const char *dir;
	/* publish: ring slots (a power of two, 2 .. ABD_RING_MAX_CAPACITY; 0: 256) and the
	 * largest message in bytes (1 .. ABD_RING_MAX_SLOT_SIZE; 0: type_size, or 256). */
	uint32_t capacity;
	uint32_t slot_size;
	/* The message type. publish: stored in the record (type_name NULL or "": untyped bytes).
	 * open: type_name NULL or "" accepts any service; otherwise name, size and hash must all
	 * equal the publisher's, else -EPROTOTYPE. type_size != 0 makes every push and pop of the
	 * handle exactly that many bytes. type_hash: any value both sides agree on (e.g. a hash of
	 * the struct's layout); 0 is a value like any other. */
	const char *type_name;
	uint32_t type_size;
	uint64_t type_hash;
	/* publish: the access policy, on top of the default (root and the publisher's own
	 * effective uid): these uids, and clients whose effective or primary gid is one of these
	 * gids, may open the service (at most ABD_SERVICE_ALLOW_MAX each). Others get -EACCES. */
	const uid_t *allow_uids;
	unsigned n_allow_uids;
	const gid_t *allow_gids;
	unsigned n_allow_gids;
	/* publish: the ptracer policy (acquire.h, abd_acquire_set_ptracer): 0 declares nothing
	 * (default: under Yama ptrace_scope=1 openers then take the handshake), a pid, or
	 * ABD_PTRACER_ANY. Process-wide and left in place by abd_service_close. */
	pid_t ptracer;
	/* Both: run on this reactor (borrowed: it must outlive the service; the caller runs it)
	 * instead of one the service creates. reactor_flags: abd_reactor_new flags for a reactor
	 * the service creates (0, ABD_REACTOR_FORCE_EPOLL, ABD_REACTOR_FORCE_IO_URING). */
	struct abd_reactor *reactor;
	unsigned reactor_flags;
	/* open: who may publish the name (registry.h, abd_lookup_opts). Trusted: the opener's
	 * effective uid, root, and these uids (ABD_PUBLISHER_ANY: every owner) and groups (at
	 * most ABD_SERVICE_ALLOW_MAX each). The publisher is the record file's owner as the
	 * kernel set it; records of other owners are passed over as if absent. */
	const uid_t *publisher_uids;
	size_t n_publisher_uids;
	const gid_t *publisher_gids;
	size_t n_publisher_gids;
	void *reserved[4]; /* zero */
};

/* Create a ring service and publish it as `name` (1..ABD_SERVICE_MAX bytes of [A-Za-z0-9._-],
 * no leading dot): a ring (capacity x slot_size, the given modes), a handshake
 * server with the access policy, and the record. The service serves openers from its reactor:
 * run it (own reactor: abd_service_reactor) or the blocking calls of the publisher do it, so
 * that a publisher that only pushes with blocking calls also answers openers while it waits.
 *
 * Returns 0 and *out (close with abd_service_close), or:
 *   -EINVAL       bad name, flags (ABD_SERVICE_OBSERVER with a role or mode), geometry (capacity not
 *                 a power of two, type_size larger than slot_size, ...), a type name outside
 *                 its grammar, reserved not zero
 *   -E2BIG        more than ABD_SERVICE_ALLOW_MAX uids or gids
 *   -EOPNOTSUPP   the registry's filesystem has no O_TMPFILE (use tmpfs)
 *   -EACCES/-EPERM  the registry directory cannot be written, or is unsafe (registry.h)
 *   -ENOMEM, -EMFILE, or another -errno of abd_registry_open, abd_ring_new,
 *   abd_acquire_server_new, abd_publish, abd_acquire_set_ptracer or abd_reactor_new. */
ABD_EXPORT ABD_NODISCARD int abd_service_publish(const char *name,
                                                 const struct abd_service_config *cfg,
                                                 unsigned flags, struct abd_service **out);

/* Open the service `name`, waiting up to timeout_ns (< 0: forever; 0: only what is there now)
 * for an alive publisher to appear; acquiring a publisher that is there takes at most
 * ABD_ACQUIRE_TIMEOUT_NS more (acquire.h). The wait sleeps until the registry's inotify watch
 * reports a change to the service's records (or the registry directory itself went away: it is
 * then opened again by its path), a back-off below ends, or the deadline: no periodic look.
 * A given reactor keeps running meanwhile (its descriptor, abd_reactor_fd, is polled beside
 * the watch's, and abd_reactor_run_once(reactor, 0) dispatches: so not from inside one of its
 * callbacks: -EBUSY). A signal handler that runs during the wait ends it with -EINTR (whatever
 * its SA_RESTART); a stop without a handler (SIGSTOP/SIGCONT, a debugger's PTRACE_INTERRUPT)
 * does not: the wait resumes. Only publishers the configuration trusts are considered
 * (publisher_uids, publisher_gids: by default the opener's own effective uid and root); among
 * several alive ones the newest
 * record by the kernel's inode change time is tried first (registry.h). A candidate that
 * fails (dies, refuses the connection, fails verification, refuses access) is passed over
 * and the next one is tried; with none left the wait goes on, and a candidate that failed
 * for a passing reason (it died, refused the connection, was not serving yet) is tried again
 * only after a back-off (1 ms, doubling up to 1 s) or a registry event naming the service,
 * never in a busy loop. When every candidate failed for good (verification, access, a held
 * single role) and none is left to wait for, the first such error is returned.
 *
 * Returns 0 and *out (close with abd_service_close), or:
 *   -EINVAL       bad name or flags, both forcing flags, a role with ABD_SERVICE_OBSERVER,
 *                 reserved not zero
 *   -E2BIG        more than ABD_SERVICE_ALLOW_MAX publisher uids or gids
 *   -ETIMEDOUT    no alive trusted publisher of that name appeared (or answered) in time
 *   -EPROTOTYPE   cfg names a type and the service's type name, size or hash differ
 *   -EPROTONOSUPPORT  the record is not a ring service (no abd.service = ring/2 metadata), or
 *                 a future version of one
 *   -EMSGSIZE     cfg->type_size exceeds the service's slot size
 *   -EACCES       the publisher's access policy refused us (acquire.h)
 *   -EBUSY        a single-producer/consumer role is held by a live peer; or called from a
 *                 callback of the given reactor
 *   -EINTR        a signal handler ran while the call waited (nothing is left open: call
 *                 again to go on waiting)
 *   -EUSERS       the ring's participant table is full (ABD_RING_MAX_PARTICIPANTS)
 *   -EPROTO, -ESTALE, -EBADMSG  the publisher's descriptors failed verification (acquire.h,
 *                 ring.h): a hostile or broken publisher
 *   -ENOMEM, -EMFILE, or another -errno of abd_registry_open, abd_watch_new, abd_acquire,
 *   abd_ring_attach or abd_reactor_new. */
ABD_EXPORT ABD_NODISCARD int abd_service_open(const char *name,
                                              const struct abd_service_config *cfg,
                                              unsigned flags, int64_t timeout_ns,
                                              struct abd_service **out);

/* Leave the service. A publisher first marks the ring closed and wakes every sleeper (so its
 * openers see -EPIPE at once), then withdraws its record and stops serving. Every source the
 * service added to a given reactor is removed; an own reactor is freed. NULL is accepted.
 * With a given reactor it may be called from any of its callbacks, the service's own event
 * callback included (the handle is then closed when that callback returns). A service with
 * its own reactor must not be closed from inside that reactor's callbacks (the reactor cannot
 * free itself there): stop the reactor (abd_reactor_stop), close afterwards. */
ABD_EXPORT void abd_service_close(struct abd_service *svc);
ABD_DEFINE_POINTER_CLEANUP(struct abd_service, abd_service_close)

/* ---- Messages ------------------------------------------------------------------------- */

/* Fast paths: no syscall and no lock unless a peer sleeps (ring.h); the closed check is one
 * load of a cache line nobody writes. Declared nonblocking (RTSan checks it): the only
 * syscalls are the ring's wake owed to a sleeper and, on a closed service only, the
 * F_OFD_GETLK checks of try_pop's drain rule; neither can sleep.
 *
 * try_push: push one message of len bytes. Returns 0, or -EAGAIN (full), -EPIPE (the
 * publisher withdrew or died: nobody will read the ring any more; also on the publisher's own
 * handle after abd_service_close began), -EMSGSIZE (len > slot size, or len != type_size of a
 * typed handle), -EPERM (no producer role), -EINVAL. */
ABD_EXPORT ABD_NODISCARD int abd_service_try_push(struct abd_service *svc, const void *data,
                                                  size_t len) ABD_NONBLOCKING;
/* try_pop: pop one message into buf. Returns its length, or -EAGAIN (empty), -EPIPE (closed
 * and drained: messages committed before the publisher left are still delivered first),
 * -EMSGSIZE (the message is longer than size, or a typed handle got another size: it stays in
 * the ring / is dropped respectively), -EBADMSG (a slot corrupted by a peer, dropped),
 * -EOWNERDEAD (ring.h), -EPERM (no consumer role), -EINVAL. */
ABD_EXPORT ABD_NODISCARD int abd_service_try_pop(struct abd_service *svc, void *buf,
                                                 size_t size) ABD_NONBLOCKING;

/* Blocking forms: as the try forms, waiting up to timeout_ns (< 0: forever; 0: no wait) for
 * space or a message. They sleep in the service's reactor, so that a publisher blocked in
 * push still answers openers and an opener blocked in pop learns of the publisher's death
 * even when nobody else runs the reactor; with a given reactor its other callbacks may run
 * then. They first sleep up to 1 ms on the handle's own futex word in the ring (a busy
 * stream's waits end there, at the cost of a plain futex wait); a longer wait moves into the
 * reactor, where that word is one of its sources (abd_reactor_add_futex, every backend) and
 * nothing wakes the sleeper but a message (or space), a reactor event or the timeout. Called
 * from inside a callback of that reactor (or from a thread other than its owner) they sleep
 * on the word in slices of at most 100 ms and skip the reactor (an opener then checks the
 * publisher's record itself between slices).
 * Additional returns: -ETIMEDOUT, -EINTR (a signal handler ran while it slept; on an
 * embedded io_uring reactor, rarely, io_uring's own task-work notification too: retry),
 * -ECANCELED (a callback run meanwhile closed this handle: it is gone when the call
 * returns). */
ABD_EXPORT ABD_NODISCARD int abd_service_push(struct abd_service *svc, const void *data,
                                              size_t len, int64_t timeout_ns);
ABD_EXPORT ABD_NODISCARD int abd_service_pop(struct abd_service *svc, void *buf, size_t size,
                                             int64_t timeout_ns);

/* ---- Events --------------------------------------------------------------------------- */

enum abd_service_event {
	/* The publisher withdrew (status -ESHUTDOWN) or died (status -ECONNRESET), or the
	 * registry directory was removed (-ESHUTDOWN). Delivered once to every opener; push/pop
	 * return -EPIPE from then on (pop after draining). */
	ABD_SERVICE_EVENT_CLOSED = 1,
	/* (consumer role) messages may be waiting: pop with the try form until -EAGAIN; a
	 * request-response server: requests (try_take); a client: answers (call_poll). Armed
	 * again after the callback returns; delivered only while a callback is set. Status 0. */
	ABD_SERVICE_EVENT_READABLE = 2,
};
typedef void abd_service_event_fn(struct abd_service *svc, enum abd_service_event event,
                                  int status, void *userdata);

/* Set (or with fn NULL clear) the event callback. Events are delivered from the service's
 * reactor. Returns 0, -EINVAL, or -ENOMEM / a reactor error when arming READABLE failed. */
ABD_EXPORT int abd_service_set_event_fn(struct abd_service *svc, abd_service_event_fn *fn,
                                        void *userdata);

/* ---- Inspection ----------------------------------------------------------------------- */

/* The reactor the service runs on (borrowed: the given one, or its own). NULL for NULL. */
ABD_EXPORT struct abd_reactor *abd_service_reactor(const struct abd_service *svc);
/* The ring itself (borrowed, owned by svc), for the zero-copy forms (reserve/commit,
 * peek/release) and the batch forms of ring.h. Those do not check the closed flag: call
 * abd_service_closed() now and then. NULL for NULL. */
ABD_EXPORT struct abd_ring *abd_service_ring(const struct abd_service *svc);
/* 0 while open; -ESHUTDOWN (withdrawn) or -ECONNRESET (died) once the publisher left, as far
 * as this handle knows; -EINVAL for NULL. */
ABD_EXPORT int abd_service_closed(const struct abd_service *svc);
/* The service's name, and the record's file name ("<name>.<instance hex>"). NULL for NULL. */
ABD_EXPORT const char *abd_service_name(const struct abd_service *svc);
ABD_EXPORT const char *abd_service_record_name(const struct abd_service *svc);
/* 1 for the publisher's handle, 0 for an opener's, -EINVAL for NULL. */
ABD_EXPORT int abd_service_is_publisher(const struct abd_service *svc);
/* The publisher's pid as the registry records it (0 when unknown), -EINVAL for NULL. */
ABD_EXPORT pid_t abd_service_publisher_pid(const struct abd_service *svc);
/* The message type, as published: name ("" untyped), size (0 variable), hash. Non-NULL
 * out-params are filled. Returns 0 or -EINVAL. */
ABD_EXPORT int abd_service_type(const struct abd_service *svc, const char **name,
                                uint32_t *size, uint64_t *hash);

struct abd_service_stats {
	uint64_t capacity;       /* slots */
	uint64_t slot_size;      /* largest message */
	uint64_t occupancy;      /* messages waiting now (claimed positions not yet taken) */
	uint64_t pushed;         /* positions ever claimed by producers (messages pushed) */
	uint64_t popped;         /* positions ever taken by consumers (messages popped) */
	uint64_t recovered;      /* slots recovered from dead or stuck participants */
	uint64_t wakes;          /* wake syscalls made, all participants (lags: ring.h) */
	uint64_t waits;          /* sleeps made, all participants (lags) */
	uint32_t producers;      /* live participants with the producer role, this handle excluded */
	uint32_t consumers;      /* live participants with the consumer role, this handle excluded */
	uint32_t data_sleepers;  /* consumers asleep waiting for a message */
	uint32_t space_sleepers; /* producers asleep waiting for space */
	uint64_t lost;           /* broadcast subscriber: messages it missed (abd_service_lost) */
	uint64_t bytes;          /* broadcast: payload bytes published */
	uint64_t last_send_ns;   /* broadcast: CLOCK_MONOTONIC when the newest message was sent */
	uint64_t reserved[3];
};
/* A snapshot of the ring's figures, read from shared memory (one F_OFD_GETLK per held
 * participant lease to count the live ones: a slow path, not for every message). A broadcast
 * service: capacity, slot_size = the largest message, pushed = messages published, popped =
 * this subscriber's position, occupancy = what it has still to read, consumers = live
 * subscribers, wakes, lost, bytes, last_send_ns. Returns 0 or -EINVAL. */
ABD_EXPORT int abd_service_stats(const struct abd_service *svc, struct abd_service_stats *out);

/* ---- Broadcast services ---------------------------------------------------------------- */

/* A broadcast service delivers every message to every subscriber, in order (a work queue,
 * above, gives each message to one consumer). One publisher (the publishing handle) and at
 * most `subscribers` subscribers at a time; one shared copy of each payload in a pool the
 * subscribers map read-only (the publisher seals it against writes by anyone else); a history
 * of the last `history` messages for subscribers that join late. docs/broadcast.md. Record
 * metadata: abd.service = "bcast/1", abd.capacity, abd.slot_size (largest message),
 * abd.subscribers, abd.history, abd.policy ("block" or "overwrite"), abd.type*. Slots: "data"
 * (memfd, sealed read-only for all but the publisher) and "control" (memfd). */
enum abd_broadcast_policy {
	/* A subscriber that lags a whole ring (capacity messages) holds the publisher back: its
	 * push/loan waits for room (or its timeout); a dead subscriber holds nobody back. */
	ABD_BROADCAST_BLOCK = 0,
	/* The publisher never waits: the oldest message is overwritten and a lagging subscriber
	 * skips what it lost (abd_service_lost counts it). */
	ABD_BROADCAST_OVERWRITE = 1,
};
#define ABD_BROADCAST_MAX_SUBSCRIBERS 64
#define ABD_BROADCAST_DEFAULT_SUBSCRIBERS 8
#define ABD_BROADCAST_MAX_PAYLOAD (1u << 30)

struct abd_broadcast_opts {
	uint32_t subscribers; /* at most this many at a time (1 .. 64; 0: 8); more: -EUSERS */
	uint32_t history;     /* messages a late subscriber still gets (< capacity; 0: none) */
	uint32_t policy;      /* enum abd_broadcast_policy */
	uint32_t reserved0;   /* zero */
	uint64_t reserved[4]; /* zero */
};

/* Publish a broadcast service: as abd_service_publish (name, cfg: capacity = slots, slot_size =
 * the largest message, up to ABD_BROADCAST_MAX_PAYLOAD; type, access policy, reactor), with
 * opts (NULL: defaults). The handle is the publisher: push/try_push publish a copy,
 * loan/send publish in place; pop gives -EPERM. flags: 0, ABD_SERVICE_PRODUCER or
 * ABD_SERVICE_OBSERVER (holds the service, publishes nothing). The payload pool is capacity +
 * subscribers + 1 chunks of slot_size bytes (rounded up to 64), a sparse memfd: only what is
 * written takes memory.
 * Returns 0 and *out, or the errors of abd_service_publish, and:
 *   -EINVAL       opts out of range (subscribers, history >= capacity, policy), reserved not
 *                 zero, ABD_SERVICE_CONSUMER or a ring mode in flags
 *   -EOPNOTSUPP   the kernel has no F_SEAL_FUTURE_WRITE (Linux < 5.1) */
ABD_EXPORT ABD_NODISCARD int abd_service_publish_broadcast(const char *name,
                                                           const struct abd_service_config *cfg,
                                                           const struct abd_broadcast_opts *opts,
                                                           unsigned flags,
                                                           struct abd_service **out);

/* abd_service_open opens either kind. Opening a broadcast service subscribes (the handle has
 * the consumer role; ABD_SERVICE_OBSERVER: no role and no seat, for statistics): it starts
 * with the history (the last `history` messages still kept), then gets every message. A
 * broadcast service takes no producer: ABD_SERVICE_PRODUCER alone gives -EPERM. Additional
 * open errors: -EUSERS (every subscriber seat is held by a live subscriber).
 * On a subscriber, pop/try_pop (and the typed forms) read the next message; push gives -EPERM. */

/* Publisher: lend a chunk of the payload pool (at least size bytes, up to the slot size) to
 * write a message in place, then abd_service_send it (or abd_service_unloan). One loan at a
 * time. Waits up to timeout_ns (as push: 0 no wait, < 0 forever) for room under the BLOCK
 * policy. The chunk belongs to the caller until send/unloan.
 * Returns 0 and *buf, or -EAGAIN (no room and timeout_ns 0), -ETIMEDOUT, -EINTR, -ECANCELED,
 * -EMSGSIZE (size > slot size), -EBUSY (a loan is out), -EPIPE (closed), -EPERM (not a
 * broadcast publisher), -EINVAL. */
ABD_EXPORT ABD_NODISCARD int abd_service_loan(struct abd_service *svc, size_t size, void **buf,
                                              int64_t timeout_ns);
/* Publisher: publish len bytes of the loaned chunk buf (no copy). Returns 0, or -EINVAL (buf
 * is not the loan), -EMSGSIZE (len > slot size), -EPERM. */
ABD_EXPORT ABD_NODISCARD int abd_service_send(struct abd_service *svc, void *buf, size_t len);
/* Publisher: give the loan back unsent. Returns 0 or -EINVAL, -EPERM. */
ABD_EXPORT int abd_service_unloan(struct abd_service *svc, void *buf);

/* Subscriber: the next message in place (read-only: the pool is the publisher's), valid until
 * abd_service_release; its chunk is not reused while held, even when the OVERWRITE policy
 * overwrites the message's slot. Waits as pop. Returns 0 with *data and *len, or -EAGAIN,
 * -ETIMEDOUT, -EINTR, -ECANCELED, -EPIPE (closed and drained), -EBUSY (a peek is held),
 * -EBADMSG (a slot the publisher garbled: skipped), -EPERM (not a subscriber), -EINVAL. */
ABD_EXPORT ABD_NODISCARD int abd_service_peek(struct abd_service *svc, const void **data,
                                              size_t *len, int64_t timeout_ns);
/* Subscriber: done with the peeked message. Returns 0, or -EINVAL (nothing peeked), -EPERM. */
ABD_EXPORT int abd_service_release(struct abd_service *svc);
/* Subscriber: messages it missed since it joined (overwritten before it read them: the
 * OVERWRITE policy, or a peer that forged its cursor). Returns the count (>= 0) or -EINVAL;
 * 0 for every other handle. */
ABD_EXPORT int64_t abd_service_lost(const struct abd_service *svc);
/* 1 for a broadcast service, 0 for a ring (work queue), -EINVAL for NULL. */
ABD_EXPORT int abd_service_is_broadcast(const struct abd_service *svc);

/* ---- Request-response ------------------------------------------------------------------ */

/* A request-response service: clients call, the server answers each call, and an answer
 * reaches only the call it answers (docs/rpc.md). Requests travel through a ring (the
 * server is its single consumer, each client a producer: cfg.capacity slots of up to
 * cfg.slot_size bytes of request); answers through a response file only the server can
 * write (sealed with F_SEAL_FUTURE_WRITE; clients map it read-only), one mailbox of
 * `in_flight` cells per client. Answers are readable by every client the server admits:
 * give clients of different trust different services (docs/security.md). Record metadata:
 * abd.service = "rpc/1", abd.capacity, abd.slot_size (the largest request),
 * abd.response_size, abd.in_flight, abd.type* (the request type). Slots: "ring" (memfd),
 * "responses" (memfd, checked by the client: seals, size, header, nonce). */
#define ABD_RPC_DEFAULT_IN_FLIGHT 8u
#define ABD_RPC_MAX_IN_FLIGHT 64u
#define ABD_RPC_MAX_REQUEST (ABD_RING_MAX_SLOT_SIZE - 24u) /* the ring slot holds a header */

struct abd_rpc_opts {
	uint32_t response_size; /* the largest answer (1 .. ABD_RING_MAX_SLOT_SIZE; 0: slot_size) */
	uint32_t in_flight;     /* calls one client may have in flight (1 .. 64; 0: 8) */
	uint64_t reserved[3];   /* zero */
};

/* Publish a request-response service: as abd_service_publish (name; cfg: capacity, slot_size
 * = the largest request, up to ABD_RPC_MAX_REQUEST, type, access policy, reactor), with opts
 * (NULL: defaults). The handle is the server: take/try_take and reply; push/pop give -EPERM.
 * flags: 0 or ABD_SERVICE_CONSUMER. Its READABLE event says requests are waiting.
 * Returns 0 and *out, or the errors of abd_service_publish, and:
 *   -EINVAL  opts out of range, reserved not zero, another flag
 *   -EFBIG   the response file would exceed 1 GiB (128 mailboxes x in_flight x response_size)
 * abd_service_open opens either kind; opening a request-response service makes a client
 * (flags 0 or ABD_SERVICE_PRODUCER; ABD_SERVICE_CONSUMER alone: -EPERM), up to 127 at a
 * time (-EUSERS). On a client, push/pop give -EPERM. */
ABD_EXPORT ABD_NODISCARD int abd_service_publish_rpc(const char *name,
                                                     const struct abd_service_config *cfg,
                                                     const struct abd_rpc_opts *opts,
                                                     unsigned flags, struct abd_service **out);

/* Server: take the next request into buf; *token names it for abd_service_reply. Requests
 * of one client come in the order it sent them. Malformed requests (a header that names no
 * mailbox or cell: a hostile client's) are dropped and counted. try_take returns at once;
 * take waits up to timeout_ns (as pop). Returns the request's length, or -EAGAIN (none, or
 * only malformed ones), -EMSGSIZE (the request is longer than size: it stays, take again with
 * more room), -ETIMEDOUT, -EINTR, -ECANCELED (take, as pop), -EPIPE (after close began),
 * -EPERM (not a server), -EINVAL. */
ABD_EXPORT ABD_NODISCARD int abd_service_try_take(struct abd_service *svc, void *buf, size_t size,
                                                  uint64_t *token);
ABD_EXPORT ABD_NODISCARD int abd_service_take(struct abd_service *svc, void *buf, size_t size,
                                              uint64_t *token, int64_t timeout_ns);
/* Server: answer the request of token with len bytes (reply) or with an error the caller's
 * call returns (reply_error: a -errno, > -4096). Never blocks: one write into the caller's
 * mailbox and, when the caller may sleep, one FUTEX_WAKE. Returns 0, or -ESTALE (answered
 * already, or the caller gave that call up and sent a newer one in its cell: nothing is
 * written), -EMSGSIZE (len > response_size), -EPERM (not a server), -EINVAL (a token this
 * server never gave). */
ABD_EXPORT int abd_service_reply(struct abd_service *svc, uint64_t token, const void *data,
                                 size_t len);
ABD_EXPORT int abd_service_reply_error(struct abd_service *svc, uint64_t token, int error);

/* Client: call the server with len bytes and wait up to timeout_ns (< 0: forever; 0: only
 * an answer that is there at once) for its answer, copied into resp. The wait sleeps in the
 * service's reactor (as pop), on the client's own word in the response file beside the
 * registry watch: a server that dies or withdraws ends it with -EPIPE within the reactor turn
 * that reports it. Returns the answer's length, or the server's error (reply_error), or
 * -ETIMEDOUT (no answer in time: the call is given up, a later answer is dropped), -EPIPE
 * (the server left), -EBUSY (in_flight calls pending already), -EMSGSIZE (a request longer
 * than the slot size, or a typed handle's request of another size; or an answer longer than
 * size), -EBADMSG (an answer no server writes), -EINTR, -ECANCELED (as pop), -EPERM (not a
 * client), -EINVAL. Whatever the error, the call has ended: a later answer is dropped. */
ABD_EXPORT ABD_NODISCARD int abd_service_call(struct abd_service *svc, const void *req, size_t len,
                                              void *resp, size_t size, int64_t timeout_ns);
/* Client, the asynchronous form: send a request (waiting up to timeout_ns for room in the
 * ring: 0 is a try, -EAGAIN when full) and get *ticket; poll for its answer (-EAGAIN: not
 * yet; never sleeps), wait for it (as abd_service_call), or cancel it (a later answer is
 * dropped). With an event callback set, ABD_SERVICE_EVENT_READABLE says an answer may have
 * come: poll the tickets. A ticket ends with its answer, -ETIMEDOUT (call_wait), -EPIPE,
 * -EBADMSG, the server's error, or cancel; after -EAGAIN, -EMSGSIZE (an answer longer than
 * size: it stays), -EINTR or -ECANCELED it is still in flight. Errors as abd_service_call;
 * cancel: 0, -EINVAL (no such ticket in flight), -EPERM. */
ABD_EXPORT ABD_NODISCARD int abd_service_call_send(struct abd_service *svc, const void *req,
                                                   size_t len, uint64_t *ticket,
                                                   int64_t timeout_ns);
ABD_EXPORT ABD_NODISCARD int abd_service_call_poll(struct abd_service *svc, uint64_t ticket,
                                                   void *resp, size_t size);
ABD_EXPORT ABD_NODISCARD int abd_service_call_wait(struct abd_service *svc, uint64_t ticket,
                                                   void *resp, size_t size, int64_t timeout_ns);
ABD_EXPORT int abd_service_call_cancel(struct abd_service *svc, uint64_t ticket);
/* 1 for a request-response service (server or client), 0 otherwise, -EINVAL for NULL. */
ABD_EXPORT int abd_service_is_rpc(const struct abd_service *svc);

/* ---- Typed services ------------------------------------------------------------------ */

/* The message type's identity, the same from every language (abd.hpp's abd::service<T>, the
 * Python package): a name (ABD_SERVICE_TYPE_MAX bytes of [A-Za-z0-9._:<>-]), the size of the
 * type, and as type_hash the FNV-1a 64 hash (offset basis 0xcbf29ce484222325, prime
 * 0x100000001b3) of the bytes of a layout description, a string both sides write down with the
 * struct (e.g. "u64 seq; f64 value; u32 sensor; u32 check"). A peer whose struct changed
 * changes its layout string, and the other side's open then fails with -EPROTOTYPE. */
static inline uint64_t abd_service_type_hash(const char *layout)
{
	uint64_t h = 0xcbf29ce484222325u;
	for (const unsigned char *p = (const unsigned char *)layout; p && *p; p++)
		h = (h ^ *p) * 0x100000001b3u;
	return h;
}

/* ABD_SERVICE_TYPED(name, type, type_name, layout) defines static inline
 * name_set_type(struct abd_service_config *) (type_name, sizeof(type) and
 * abd_service_type_hash(layout) into the configuration, for publish and open alike), and
 * name_try_push(svc, const type *), name_push(svc, const type *, timeout_ns),
 * name_try_pop(svc, type *) and name_pop(svc, type *, timeout_ns), returning 0 or the
 * service's -errno; a popped message of another size gives -EBADMSG. For broadcast services
 * also name_loan(svc, type **, timeout_ns) and name_send(svc, type *) (a typed loan, written
 * in place), and name_peek(svc, const type **, timeout_ns) (-EBADMSG for another size: the
 * message is released). The type must be
 * trivially copyable and at most ABD_RING_MAX_SLOT_SIZE bytes (checked at compile time). */
#define ABD_SERVICE_TYPED(name, type, type_name_, layout_)                             \
	ABD_RING__STATIC_ASSERT(sizeof(type) > 0 && sizeof(type) <= ABD_RING_MAX_SLOT_SIZE, \
	                        "ABD_SERVICE_TYPED: " #type " does not fit a ring slot");   \
	ABD_RING__UNUSED static inline void name##_set_type(struct abd_service_config *c)  \
	{                                                                                  \
		c->type_name = (type_name_);                                                   \
		c->type_size = (uint32_t)sizeof(type);                                         \
		c->type_hash = abd_service_type_hash(layout_);                                 \
	}                                                                                  \
	ABD_RING__UNUSED static inline int name##_try_push(struct abd_service *s, const type *v) \
	{                                                                                  \
		return abd_service_try_push(s, v, sizeof(type));                               \
	}                                                                                  \
	ABD_RING__UNUSED static inline int name##_push(struct abd_service *s, const type *v,    \
	                                               int64_t t)                          \
	{                                                                                  \
		return abd_service_push(s, v, sizeof(type), t);                                \
	}                                                                                  \
	ABD_RING__UNUSED static inline int name##_try_pop(struct abd_service *s, type *v)  \
	{                                                                                  \
		int n_ = abd_service_try_pop(s, v, sizeof(type));                              \
		return n_ < 0 ? n_ : n_ == (int)sizeof(type) ? 0 : -EBADMSG;                   \
	}                                                                                  \
	ABD_RING__UNUSED static inline int name##_pop(struct abd_service *s, type *v, int64_t t) \
	{                                                                                  \
		int n_ = abd_service_pop(s, v, sizeof(type), t);                               \
		return n_ < 0 ? n_ : n_ == (int)sizeof(type) ? 0 : -EBADMSG;                   \
	}                                                                                  \
	ABD_RING__UNUSED static inline int name##_loan(struct abd_service *s, type **v,    \
	                                               int64_t t)                          \
	{                                                                                  \
		void *p_ = 0;                                                                  \
		int r_ = abd_service_loan(s, sizeof(type), &p_, t);                            \
		*v = (type *)p_;                                                               \
		return r_;                                                                     \
	}                                                                                  \
	ABD_RING__UNUSED static inline int name##_send(struct abd_service *s, type *v)     \
	{                                                                                  \
		return abd_service_send(s, v, sizeof(type));                                   \
	}                                                                                  \
	ABD_RING__UNUSED static inline int name##_peek(struct abd_service *s, const type **v, \
	                                               int64_t t)                          \
	{                                                                                  \
		const void *p_ = 0;                                                            \
		size_t n_ = 0;                                                                 \
		int r_ = abd_service_peek(s, &p_, &n_, t);                                     \
		if (r_ == 0 && n_ != sizeof(type)) {                                           \
			(void)abd_service_release(s);                                              \
			r_ = -EBADMSG;                                                             \
		}                                                                              \
		*v = r_ == 0 ? (const type *)p_ : 0;                                           \
		return r_;                                                                     \
	}

ABD_END_DECLS

#endif
