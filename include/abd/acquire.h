/* SPDX-License-Identifier: MIT */
/* Descriptor acquisition: a consumer gets a live publisher's descriptors (the memfd of its
 * ring, its eventfd, any other slot its record lists).
 *
 * Two paths, chosen per call:
 *   pidfd_getfd  (5.6+) the consumer takes the descriptors straight out of the publisher; needs
 *                ptrace-attach rights over it (same uid and not blocked by Yama, or
 *                CAP_SYS_PTRACE). No round trip through the publisher.
 *   scm_rights   a handshake on the publisher's Unix socket (its path is in the record,
 *                inside the registry directory): SO_PEERCRED both ways, the publisher's
 *                access policy, SCM_RIGHTS with MSG_CMSG_CLOEXEC. The registry handle keeps
 *                the verified connection, so a repeat from the same publisher through the
 *                same handle is one request and reply on it (the server may drop it when
 *                idle: the next acquisition connects again, transparently).
 * Whichever path, the result is verified before it is handed out: the record's lock is still
 * held, the publisher's uid (and start time) match the record, each descriptor is of its
 * slot's kind (a memfd is a sealed memfd of the size its header states, an eventfd is an
 * eventfd), and the 128-bit nonce in the memfd's header equals the record's instance id.
 * docs/acquire.md gives the details, the wire format byte by byte, and the security model.
 *
 * Threads: abd_acquire is thread-safe (it keeps a small process-wide memory of publishers
 * that refused pidfd_getfd); a server or an acquisition handle is for one thread at a time. */
#ifndef ABD_ACQUIRE_H
#define ABD_ACQUIRE_H

#include <abd/common.h>
#include <abd/probe.h>
#include <abd/registry.h>
#include <sys/types.h>

ABD_BEGIN_DECLS

/* ------------------------------------------------------------------ consumer -- */

enum abd_acquire_flags {
	/* Force one path: no fallback; the path's own error is returned. Both set: -EINVAL. */
	ABD_ACQUIRE_PIDFD_GETFD = 1u << 0,
	ABD_ACQUIRE_SCM_RIGHTS = 1u << 1,
};

/* The default time an acquisition may take when timeout_ns < 0. */
#define ABD_ACQUIRE_TIMEOUT_NS (2ll * 1000 * 1000 * 1000)

/* What abd_acquire obtained: the descriptors (owned by it until taken), the path used and the
 * peer's credentials. */
struct abd_acquired;

/* Acquire the descriptors of the publisher of rec (a record read from reg: lookup, snapshot
 * or watch). Without a forcing flag the path is chosen here: the handshake when the record's
 * PID namespace is not ours (its pid means nothing here), when the probe lacks pidfd_open or
 * pidfd_getfd, after pidfd_getfd said ENOSYS once in this process, or after this publisher
 * refused it (EPERM); pidfd_getfd otherwise, falling back to the handshake when it fails with
 * EPERM, EACCES, EBADF, ESRCH or ENOSYS. A verification failure never falls back.
 * Every step is bounded by timeout_ns (< 0: ABD_ACQUIRE_TIMEOUT_NS).
 * No confused deputy: a caller stronger than the record's owner (root, CAP_SYS_PTRACE) uses
 * pidfd_getfd only on a process the owner could ptrace itself (its real, effective and saved
 * uids all the owner's, and dumpable); otherwise pidfd_getfd is not tried (-EPERM: the
 * handshake follows, where the publisher decides). The handshake reaches the socket the record
 * names (a bare ".abd-<32 hex>.sock" in reg's directory) through a descriptor checked to be a
 * socket owned by the record's owner, and sends nothing before the listener's SO_PEERCRED is
 * the record's owner (and pid, in our PID namespace).
 *
 * Returns 0 and *out (free with abd_acquired_free), or:
 *   -EINVAL      bad arguments, or both forcing flags
 *   -ESRCH       the publisher is gone (its record is stale, or its process exited)
 *   -ESTALE      the process at the record's pid is not the publisher (PID reuse: uid or
 *                start time differ), or the memfd's nonce is not the record's instance id
 *   -EPROTO      a descriptor is not of its slot's kind, a memfd lacks its seals or its header
 *                does not match its size, or the reply does not match the record's slots
 *   -EACCES      the handshake was refused: socket permissions or the publisher's policy
 *   -EPERM/-ENOSYS  (forced pidfd_getfd only) the kernel refused or lacks it, or the
 *                record's owner could not ptrace the process (above)
 *   -EXDEV       (forced pidfd_getfd only) the record comes from another PID namespace
 *   -ENOTCONN    (forced or chosen handshake) the record names no handshake socket
 *   -ECONNREFUSED, -ECONNRESET  the publisher's socket has no listener / closed mid-way
 *   -ETIMEDOUT   the deadline passed
 *   -EBADMSG, -EPROTONOSUPPORT, -EMSGSIZE  a malformed, foreign-version or oversized reply;
 *                -EBADMSG also: the record names a socket that is not a bare handshake
 *                socket name, or (forced pidfd_getfd) has no start time to tell its
 *                publisher from a reused pid by (the automatic choice takes the handshake);
 *                -EPROTONOSUPPORT also: a slot of a kind this version does not know (a later
 *                minor's), which cannot be verified and is refused on either path
 *   -ESTALE      also: the socket file is not a socket or not the record's owner's, or its
 *                listener is not the record's owner (or pid)
 *   -ENOMEM, -EMFILE, or another -errno of the syscalls involved.
 * On failure no descriptor is left open.
 * Kept by reg across calls (closed by abd_registry_free), per publisher (8, round robin):
 * a reference to the pidfd path's verified pidfd, the record's descriptor, and the
 * handshake's connection to the publisher's server, whose SO_PEERCRED was read and checked at
 * connect (a connection's peer credentials are fixed then); each acquisition still checks the
 * record's lock and link and every descriptor it receives. The pidfd is shared by every
 * handle of the process (one per publisher process, closed with the last reference). A
 * forked child uses neither its parent's pidfds nor its kept connections: it opens its own. */
ABD_EXPORT ABD_NODISCARD int abd_acquire(struct abd_registry *reg, const struct abd_record *rec,
                                         unsigned flags, int64_t timeout_ns,
                                         struct abd_acquired **out);
/* Close every descriptor still owned by a and free it. NULL is accepted. */
ABD_EXPORT void abd_acquired_free(struct abd_acquired *a);
ABD_DEFINE_POINTER_CLEANUP(struct abd_acquired, abd_acquired_free)

/* The path used: ABD_FD_TRANSFER_PIDFD_GETFD or ABD_FD_TRANSFER_SCM_RIGHTS (0 for NULL). */
ABD_EXPORT enum abd_fd_transfer abd_acquired_path(const struct abd_acquired *a);
/* Why pidfd_getfd was not used in an automatic choice: 0 when it was used or the handshake
 * was forced, else a -errno: the one pidfd_getfd gave (-EPERM, -ENOSYS, ...), -EXDEV (another
 * PID namespace), what the probe answered when it lacks pidfd_getfd (-ENOSYS, -EPERM; -ECANCELED
 * when the feature mask switched it off), -ECANCELED (this publisher refused earlier). */
ABD_EXPORT int abd_acquired_fallback(const struct abd_acquired *a);
/* The publisher as the kernel vouched for it: by pidfd (uid/gid from /proc) or by SO_PEERCRED
 * (pid 0 when the publisher is in a PID namespace we cannot see). Non-NULL out-params are
 * filled. Returns 0 or -EINVAL. */
ABD_EXPORT int abd_acquired_peer(const struct abd_acquired *a, pid_t *pid, uid_t *uid,
                                 gid_t *gid);
/* The descriptors, in the record's slot order. */
ABD_EXPORT size_t abd_acquired_count(const struct abd_acquired *a);
/* Slot i: fills the non-NULL out-params. *fd is borrowed (owned by a; -1 once taken).
 * *size is the memfd's size (0 for other kinds). Returns 0, -ERANGE or -EINVAL. */
ABD_EXPORT int abd_acquired_fd_at(const struct abd_acquired *a, size_t i, const char **slot,
                                  int *fd, enum abd_fd_kind *kind, uint64_t *size);
/* The descriptor of a slot by name, borrowed; -ENOENT (no such slot), -EBADF (taken). */
ABD_EXPORT int abd_acquired_fd(const struct abd_acquired *a, const char *slot);
/* Take the descriptor of a slot: it becomes the caller's (O_CLOEXEC). Returns the fd,
 * -ENOENT or -EBADF (already taken). */
ABD_EXPORT int abd_acquired_take_fd(struct abd_acquired *a, const char *slot);

/* "memfd", "eventfd", "socket", "other"; NULL for an unknown kind. */
ABD_EXPORT const char *abd_fd_kind_name(enum abd_fd_kind kind);

/* ------------------------------------------------------------------ publisher -- */

/* The handshake server of one published service: a SOCK_SEQPACKET Unix socket bound in the
 * registry directory, answering each client with the service's descriptors after checking its
 * SO_PEERCRED against the access policy.
 *
 * Use:  abd_acquire_server_new(reg, 0, &srv);
 *       abd_record_set_socket(rec, abd_acquire_server_socket(srv));
 *       abd_publish(reg, rec, &pub);
 *       abd_acquire_server_serve(srv, abd_publication_record(pub));
 *       then poll abd_acquire_server_fd(srv) for POLLIN, with a timeout no later than
 *       abd_acquire_server_deadline(srv), and call abd_acquire_server_process(srv).
 *
 * Access policy: by default the publisher's own effective uid and root; each allow call adds
 * a uid or a gid (the client's effective gid, or its primary gid). The socket file is 0600
 * while the policy is the default and 0666 once anything is allowed, so that the kernel turns
 * strangers away at connect (EACCES) and the policy decides about the rest.
 *
 * Hostile clients cannot block or exhaust the server: it never blocks, answers one request
 * per connection and closes it unless the client asks to keep the connection (abd_acquire
 * does: docs/acquire.md, "Kept connections"), closes every descriptor a client sends, keeps
 * at most max_pending waiting connections (silent ones and kept ones idle after an answer;
 * a newcomer evicts the oldest kept one, else the oldest silent one), and drops each one at its deadline (default 1 s
 * after accept or after its last answer). A kept connection's client that asks without
 * reading the replies is dropped once a few are in flight. */
struct abd_acquire_server;

/* Create the socket (named ".abd-<32 hex>.sock" inside the registry directory; the name is
 * relative to it) and listen. reg is borrowed and must outlive srv only until this returns.
 * flags: 0. Returns 0 and *out, or -EINVAL, -ENOMEM, -EMFILE, -EACCES (cannot create in the
 * directory), or another -errno of socket/bind/listen/epoll. */
ABD_EXPORT int abd_acquire_server_new(struct abd_registry *reg, unsigned flags,
                                      struct abd_acquire_server **out);
/* Close every connection and the socket, unlink the socket file, free srv. NULL accepted. */
ABD_EXPORT void abd_acquire_server_free(struct abd_acquire_server *srv);
ABD_DEFINE_POINTER_CLEANUP(struct abd_acquire_server, abd_acquire_server_free)

/* The socket's name relative to the registry directory (for abd_record_set_socket). */
ABD_EXPORT const char *abd_acquire_server_socket(const struct abd_acquire_server *srv);
/* Serve the descriptors of a published record (abd_publication_record): its service,
 * instance and slots are copied; the descriptors it names are borrowed and must stay open in
 * this process while srv serves them. Until then clients are answered EAGAIN. Returns 0,
 * -EINVAL. */
ABD_EXPORT int abd_acquire_server_serve(struct abd_acquire_server *srv,
                                        const struct abd_record *published);
/* Allow a uid or gid (up to 64 entries each). Returns 0, -EINVAL, -ENOSPC, or the -errno of
 * changing the socket's mode. */
ABD_EXPORT int abd_acquire_server_allow_uid(struct abd_acquire_server *srv, uid_t uid);
ABD_EXPORT int abd_acquire_server_allow_gid(struct abd_acquire_server *srv, gid_t gid);
/* Limits: waiting connections held at once, silent or kept (1..4096, default 64), and the time
 * a connection may stay silent or idle (> 0, default 1 s). Return 0 or -EINVAL. */
ABD_EXPORT int abd_acquire_server_set_max_pending(struct abd_acquire_server *srv, unsigned n);
ABD_EXPORT int abd_acquire_server_set_timeout(struct abd_acquire_server *srv, int64_t timeout_ns);

/* The descriptor to poll for POLLIN (borrowed, owned by srv). */
ABD_EXPORT int abd_acquire_server_fd(const struct abd_acquire_server *srv);
/* Do everything pending without blocking: accept, answer (a bounded number of requests per
 * call), refuse, drop expired connections.
 * Returns the number of clients answered with descriptors, or -EINVAL, -ENOMEM, or the -errno
 * of epoll_wait. A misbehaving client never makes it fail. */
ABD_EXPORT int abd_acquire_server_process(struct abd_acquire_server *srv);
/* The CLOCK_MONOTONIC time (ns) by which abd_acquire_server_process must run again to drop an
 * expired connection (silent or kept), or to take the backlog again after accept ran out of
 * descriptors (the listener is then paused, its fd not readable for it: no busy loop), or -1
 * when nothing is pending. */
ABD_EXPORT int64_t abd_acquire_server_deadline(const struct abd_acquire_server *srv);

struct abd_acquire_server_stats {
	uint64_t served;    /* clients answered with descriptors */
	uint64_t refused;   /* clients refused by the access policy (answered EACCES) */
	uint64_t malformed; /* clients that sent bytes we do not accept, or descriptors */
	uint64_t expired;   /* waiting connections (silent or kept) dropped at their deadline */
	uint64_t evicted;   /* waiting connections (silent or kept) dropped to make room */
	uint64_t pending;   /* connections held now, waiting for a request: silent ones and kept
	                     * ones (counted below too) */
	uint64_t accepted;  /* connections accepted */
	uint64_t kept;      /* connections held now after an answer, for the client's next
	                     * request (it asked to keep them: abd_acquire does) */
	uint64_t accept_paused; /* times accept4 ran out of descriptors (EMFILE, ENFILE) or
	                         * memory and the listener was paused (10 ms, doubling up to
	                         * 500 ms, or until a held connection is dropped) instead of
	                         * spinning on a backlog it cannot take */
	uint64_t reserved[1];
};
/* Returns 0 or -EINVAL. */
ABD_EXPORT int abd_acquire_server_stats(const struct abd_acquire_server *srv,
                                        struct abd_acquire_server_stats *out);

/* ------------------------------------------------------------------ ptracer policy -- */

/* Under Yama's ptrace_scope=1 (Ubuntu's default) only ancestors may ptrace a process, so a
 * sibling's pidfd_getfd fails with EPERM and acquisition takes the handshake. A publisher may
 * declare a ptracer: prctl(PR_SET_PTRACER, pid), or any process of the same uid with
 * ABD_PTRACER_ANY; 0 withdraws the declaration. This lets that process (or any same-uid
 * process) ptrace the whole publisher, read and write all its memory, not only take the
 * descriptors it publishes: off by default, docs/acquire.md weighs it. Process-wide.
 * Returns 0, -EINVAL (pid < -1), -EOPNOTSUPP (no Yama in this kernel: nothing to declare),
 * or another -errno of prctl. */
#define ABD_PTRACER_ANY ((pid_t)-1)
ABD_EXPORT int abd_acquire_set_ptracer(pid_t pid);

ABD_END_DECLS

#endif
