/* SPDX-License-Identifier: MIT */
/* The SCM_RIGHTS handshake: its wire format (docs/acquire.md, "Wire format"), descriptor
 * passing with the defensive rules of libwayland's connection.c, and the client side. The
 * server (struct abd_acquire_server) lives in handshake.c too. Internal. */
#ifndef ABD_COMPAT_HANDSHAKE_H
#define ABD_COMPAT_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ABD__HS_MAGIC "ABDH"
#define ABD__HS_VERSION 1u
#define ABD__HS_HEADER 8u         /* magic[4] version[1] type[1] body length[2] */
#define ABD__HS_REQUEST 1u
#define ABD__HS_REPLY 2u
#define ABD__HS_REQUEST_KEEP 3u   /* a request that asks to keep the connection for more */
#define ABD__HS_REPLY_KEPT 1u     /* reply flags (byte 29): the server keeps the connection */
#define ABD__HS_FDS_MAX 32u       /* = ABD_SLOTS_MAX */
#define ABD__HS_NAME_MAX 32u      /* = ABD_SLOT_NAME_MAX */
#define ABD__HS_SERVICE_MAX 64u   /* = ABD_SERVICE_MAX */
#define ABD__HS_KIND_MAX 3u       /* ABD_FD_SOCKET */
#define ABD__HS_REQUEST_BODY_MAX (16u + 1u + ABD__HS_SERVICE_MAX)
#define ABD__HS_REPLY_FIXED 24u   /* status[4] instance[16] nfds[1] reserved[3] */
#define ABD__HS_REPLY_BODY_MAX (ABD__HS_REPLY_FIXED + ABD__HS_FDS_MAX * (2u + ABD__HS_NAME_MAX))
#define ABD__HS_MSG_MAX (ABD__HS_HEADER + ABD__HS_REPLY_BODY_MAX)

struct abd__hs_request {
	uint8_t instance[16]; /* the publication the client wants; all zero: whichever is served */
	char service[ABD__HS_SERVICE_MAX + 1];
	bool keep;            /* type 3: keep the connection open for further requests */
};

struct abd__hs_slot {
	uint8_t kind;
	char name[ABD__HS_NAME_MAX + 1];
};

struct abd__hs_reply {
	uint32_t status; /* 0 or a positive errno */
	uint8_t instance[16];
	unsigned nfds;
	bool kept; /* the server keeps the connection for another request (only with status 0) */
	struct abd__hs_slot slots[ABD__HS_FDS_MAX];
};

/* Encoders return the message length or -ENOSPC/-EINVAL. Parsers are strict and bounded: any
 * input of any length gives 0 and a filled *out, or -EBADMSG (malformed), or -EPROTONOSUPPORT
 * (another version). */
long abd__hs_request_encode(const struct abd__hs_request *req, void *buf, size_t size);
int abd__hs_request_parse(const void *buf, size_t len, struct abd__hs_request *out);
long abd__hs_reply_encode(const struct abd__hs_reply *rep, void *buf, size_t size);
int abd__hs_reply_parse(const void *buf, size_t len, struct abd__hs_reply *out);

/* 1 if s[0..len) is 1..max bytes of [A-Za-z0-9._-] not starting with '.', else 0. */
bool abd__hs_name_ok(const char *s, size_t len, size_t max);

/* Send one message with fds attached (SCM_RIGHTS), MSG_NOSIGNAL|MSG_DONTWAIT. The fds stay
 * the caller's. Returns 0, -EMSGSIZE (more than ABD__HS_FDS_MAX fds), or -errno of sendmsg. */
int abd__hs_send(int sock, const void *buf, size_t len, const int *fds, unsigned nfds);

/* Receive one message (MSG_DONTWAIT|MSG_CMSG_CLOEXEC) and up to max_fds descriptors, which
 * become the caller's. Whatever goes wrong, every descriptor that arrived is closed first:
 * returns the message length, or -EAGAIN, -ECONNRESET (peer closed: 0 bytes), -EMSGSIZE
 * (MSG_TRUNC or MSG_CTRUNC, or more than max_fds descriptors), -EPROTO (a control message
 * other than SCM_RIGHTS), or another -errno of recvmsg. */
long abd__hs_recv(int sock, void *buf, size_t size, int *fds, unsigned max_fds, unsigned *nfds);

/* SO_PEERCRED of a connected socket. Returns 0 or -errno. */
int abd__hs_peercred(int sock, pid_t *pid, uid_t *uid, gid_t *gid);

struct abd__hs_peer {
	pid_t pid;
	uid_t uid;
	gid_t gid;
};

/* The client: open the socket file path (a bare handshake socket name, abd__hs_sock_name,
 * in dirfd) without following anything, check that it is a socket owned by want->uid,
 * connect through that descriptor, check the listener's SO_PEERCRED (uid want->uid, and pid
 * want->pid unless that is 0) before sending a byte, send the request, wait for the reply
 * until deadline_ns (CLOCK_MONOTONIC), receive it with its descriptors. On success returns 0,
 * *rep holds the parsed reply and fds[0..rep->nfds) the received descriptors (the caller's);
 * on any failure no descriptor is left open. Errors: -EBADMSG (path is not a handshake
 * socket's name), -ESTALE (not a socket, another owner, or another listener than want),
 * -ETIMEDOUT, -ECONNREFUSED (nobody listens), -ENOENT (no socket), -EACCES (the socket's
 * permissions, or the server refused: status), -ECONNRESET (the server closed mid-handshake),
 * -EBADMSG/-EPROTONOSUPPORT/-EMSGSIZE (bad reply), or the status the server answered.
 * conn (may be NULL: one request, the version-1 exchange) asks the server to keep the
 * connection (request type 3). In: a connection kept by an earlier call to the same server,
 * or fd -1. Out: the connection to keep (fd the caller's), or fd -1. A kept connection the
 * server dropped meanwhile (EOF, EPIPE, ECONNRESET) is replaced by a new one, once; on any
 * other failure it is closed. A server that refuses type 3 (older than it) is asked again
 * the version-1 way. *peer: the credentials of the server that answered (a kept
 * connection's were read at its connect: they are fixed then). */
struct abd__hs_conn {
	int fd;
	struct abd__hs_peer peer; /* SO_PEERCRED, read at connect */
	/* 0: as connected (non-blocking); 1: made blocking with a receive timeout of
	 * ABD__HS_KEPT_RCVTIMEO_NS at its first reuse, so that a repeat sleeps in recvmsg rather
	 * than in poll and then recvmsg; 2: that failed, poll as on a new connection */
	int mode;
};
#define ABD__HS_KEPT_RCVTIMEO_NS (50ll * 1000 * 1000)
int abd__hs_client(int dirfd, const char *path, const struct abd__hs_peer *want,
                   const struct abd__hs_request *req,
                   int64_t deadline_ns, struct abd__hs_reply *rep, int *fds,
                   struct abd__hs_peer *peer, struct abd__hs_conn *conn);

/* A server's socket is ".abd-<32 hex>" ABD__HS_SUFFIX in the registry directory; while it is
 * being set up (bind, chmod, listen) it lives in a private directory (mode 0700) named with
 * ABD__HS_TMP_SUFFIX instead. */
#define ABD__HS_SUFFIX ".sock"
#define ABD__HS_TMP_SUFFIX ".tmp"

/* 1: name is ".abd-<32 lowercase hex>.sock"; 2: the same with ".tmp"; 0: anything else. */
int abd__hs_sock_name(const char *name);

/* An O_PATH descriptor of the handshake socket file name (abd__hs_sock_name 1 or 2) in dirfd,
 * opened without following anything and checked on the descriptor: a socket, owned by owner
 * ((uid_t)-1: any). Returns it, or -EBADMSG (another name), -ESTALE (not a socket, another
 * owner), -errno (-ENOENT...). */
int abd__hs_open_sock(int dirfd, const char *name, uid_t owner);

/* Does anything listen on the socket file name in dirfd (opened by abd__hs_open_sock,
 * connected to through that descriptor)? 1 yes (a connection was made and closed at once, or
 * the backlog is full), 0 nobody (ECONNREFUSED: its socket was closed), -errno cannot tell
 * (EACCES, ENOENT, ESTALE: not a socket...). */
int abd__hs_listening(int dirfd, const char *name);
/* The same for the socket file an O_PATH descriptor pins (no name involved). */
int abd__hs_listening_fd(int pathfd);

int64_t abd__now_ns(void);

#endif
