/* SPDX-License-Identifier: MIT */
/* The SCM_RIGHTS handshake: wire format, defensive descriptor passing, the client, and the
 * publisher's server (a poll source: one fd, a non-blocking process call, a deadline). This is
 * the only way to pass descriptors on 5.4, across users, under Yama and in containers. */
#include "compat/handshake.h"

#include <abd/acquire.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "runtime/internal.h"
#include "runtime/reactor-internal.h"

int64_t abd__now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ------------------------------------------------------------------ wire format -- */

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

bool abd__hs_name_ok(const char *s, size_t len, size_t max)
{
	if (len == 0 || len > max || s[0] == '.')
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

static void put_header(uint8_t *p, unsigned type, size_t body)
{
	memcpy(p, ABD__HS_MAGIC, 4);
	p[4] = ABD__HS_VERSION;
	p[5] = (uint8_t)type;
	put16(p + 6, (uint16_t)body);
}

/* The header's checks (type, or type2 when nonzero); returns the body length or -errno. */
static long check_header(const uint8_t *p, size_t len, unsigned type, unsigned type2,
                         size_t body_max)
{
	if (len < ABD__HS_HEADER || memcmp(p, ABD__HS_MAGIC, 4) != 0)
		return -EBADMSG;
	if (p[4] != ABD__HS_VERSION)
		return -EPROTONOSUPPORT;
	if (p[5] != type && (!type2 || p[5] != type2))
		return -EBADMSG;
	size_t body = get16(p + 6);
	if (body > body_max || body != len - ABD__HS_HEADER)
		return -EBADMSG;
	return (long)body;
}

long abd__hs_request_encode(const struct abd__hs_request *req, void *buf, size_t size)
{
	size_t n = strnlen(req->service, sizeof(req->service));
	if (!abd__hs_name_ok(req->service, n, ABD__HS_SERVICE_MAX))
		return -EINVAL;
	size_t body = 16 + 1 + n;
	if (size < ABD__HS_HEADER + body)
		return -ENOSPC;
	uint8_t *p = buf;
	put_header(p, req->keep ? ABD__HS_REQUEST_KEEP : ABD__HS_REQUEST, body);
	memcpy(p + 8, req->instance, 16);
	p[24] = (uint8_t)n;
	memcpy(p + 25, req->service, n);
	return (long)(ABD__HS_HEADER + body);
}

int abd__hs_request_parse(const void *buf, size_t len, struct abd__hs_request *out)
{
	const uint8_t *p = buf;
	long body = check_header(p, len, ABD__HS_REQUEST, ABD__HS_REQUEST_KEEP,
	                         ABD__HS_REQUEST_BODY_MAX);
	if (body < 0)
		return (int)body;
	if (body < 17)
		return -EBADMSG;
	size_t n = p[24];
	if ((size_t)body != 17 + n || !abd__hs_name_ok((const char *)p + 25, n, ABD__HS_SERVICE_MAX))
		return -EBADMSG;
	memset(out, 0, sizeof(*out));
	memcpy(out->instance, p + 8, 16);
	memcpy(out->service, p + 25, n);
	out->keep = p[5] == ABD__HS_REQUEST_KEEP;
	return 0;
}

long abd__hs_reply_encode(const struct abd__hs_reply *rep, void *buf, size_t size)
{
	if (rep->nfds > ABD__HS_FDS_MAX || (rep->status && (rep->nfds || rep->kept)))
		return -EINVAL;
	size_t body = ABD__HS_REPLY_FIXED;
	for (unsigned i = 0; i < rep->nfds; i++) {
		size_t n = strnlen(rep->slots[i].name, sizeof(rep->slots[i].name));
		if (!abd__hs_name_ok(rep->slots[i].name, n, ABD__HS_NAME_MAX) ||
		    rep->slots[i].kind > ABD__HS_KIND_MAX)
			return -EINVAL;
		body += 2 + n;
	}
	if (size < ABD__HS_HEADER + body)
		return -ENOSPC;
	uint8_t *p = buf;
	put_header(p, ABD__HS_REPLY, body);
	put32(p + 8, rep->status);
	memcpy(p + 12, rep->instance, 16);
	p[28] = (uint8_t)rep->nfds;
	p[29] = rep->kept ? ABD__HS_REPLY_KEPT : 0;
	p[30] = p[31] = 0;
	uint8_t *q = p + 32;
	for (unsigned i = 0; i < rep->nfds; i++) {
		size_t n = strlen(rep->slots[i].name);
		q[0] = rep->slots[i].kind;
		q[1] = (uint8_t)n;
		memcpy(q + 2, rep->slots[i].name, n);
		q += 2 + n;
	}
	return (long)(ABD__HS_HEADER + body);
}

int abd__hs_reply_parse(const void *buf, size_t len, struct abd__hs_reply *out)
{
	const uint8_t *p = buf;
	long body = check_header(p, len, ABD__HS_REPLY, 0, ABD__HS_REPLY_BODY_MAX);
	if (body < 0)
		return (int)body;
	if (body < (long)ABD__HS_REPLY_FIXED)
		return -EBADMSG;
	uint32_t status = get32(p + 8);
	unsigned nfds = p[28];
	/* a status is a small positive errno; an error carries no descriptors and ends the
	 * connection; the only flag is KEPT */
	bool kept = p[29] == ABD__HS_REPLY_KEPT;
	if (status > 4095 || nfds > ABD__HS_FDS_MAX || (status && (nfds || kept)) ||
	    (p[29] && !kept) || p[30] || p[31])
		return -EBADMSG;
	memset(out, 0, sizeof(*out));
	out->status = status;
	out->kept = kept;
	memcpy(out->instance, p + 12, 16);
	out->nfds = nfds;
	const uint8_t *q = p + 32, *end = p + len;
	for (unsigned i = 0; i < nfds; i++) {
		if (end - q < 2)
			return -EBADMSG;
		unsigned kind = q[0], n = q[1];
		if (kind > ABD__HS_KIND_MAX || (size_t)(end - q - 2) < n ||
		    !abd__hs_name_ok((const char *)q + 2, n, ABD__HS_NAME_MAX))
			return -EBADMSG;
		out->slots[i].kind = (uint8_t)kind;
		memcpy(out->slots[i].name, q + 2, n);
		for (unsigned j = 0; j < i; j++)
			if (!strcmp(out->slots[j].name, out->slots[i].name))
				return -EBADMSG;
		q += 2 + n;
	}
	if (q != end)
		return -EBADMSG;
	return 0;
}

/* ------------------------------------------------------------------ descriptor passing -- */

int abd__hs_send(int sock, const void *buf, size_t len, const int *fds, unsigned nfds)
{
	if (nfds > ABD__HS_FDS_MAX)
		return -EMSGSIZE;
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * ABD__HS_FDS_MAX)];
	} ctl;
	memset(&ctl, 0, sizeof(ctl));
	struct iovec iov = { .iov_base = (void *)(uintptr_t)buf, .iov_len = len }; /* sendmsg only reads it */
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (nfds) {
		msg.msg_control = ctl.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	ssize_t r;
	do
		r = sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	return (size_t)r == len ? 0 : -EMSGSIZE;
}

static void close_all(int *fds, unsigned *n)
{
	for (unsigned i = 0; i < *n; i++)
		fds[i] = abd__close(fds[i]);
	*n = 0;
}

/* abd__hs_recv with recvmsg flags: MSG_DONTWAIT, or 0 on a blocking socket with a receive
 * timeout (then EINTR is returned, not retried: the caller's deadline decides). */
static long hs_recv(int sock, void *buf, size_t size, int *fds, unsigned max_fds, unsigned *nfds,
                    int flags)
{
	/* Room for one more descriptor than allowed, so that a sender attaching too many is seen
	 * (the count) rather than only truncated. */
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * (ABD__HS_FDS_MAX + 1))];
	} ctl;
	struct iovec iov = { .iov_base = buf, .iov_len = size };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
	                      .msg_controllen = sizeof(ctl.buf) };
	*nfds = 0;
	if (max_fds > ABD__HS_FDS_MAX)
		max_fds = ABD__HS_FDS_MAX;
	ssize_t r;
	do
		r = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
	while (r < 0 && errno == EINTR && (flags & MSG_DONTWAIT));
	if (r < 0)
		return -errno;
	long ret = r;
	int got[ABD__HS_FDS_MAX + 1];
	unsigned n = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < k; i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				if (n < ABD__HS_FDS_MAX + 1)
					got[n++] = fd;
				else
					abd__close(fd);
			}
		} else {
			/* SCM_CREDENTIALS/SCM_PIDFD carry no descriptor we must close, except
			 * SCM_PIDFD: close it too, and call the message foreign. */
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_PIDFD &&
			    c->cmsg_len >= CMSG_LEN(sizeof(int))) {
				int fd;
				memcpy(&fd, CMSG_DATA(c), sizeof(int));
				abd__close(fd);
			}
			ret = -EPROTO;
		}
	}
	if (ret >= 0 && (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)))
		ret = -EMSGSIZE;
	if (ret >= 0 && n > max_fds)
		ret = -EMSGSIZE;
	if (ret == 0 && size > 0)
		ret = -ECONNRESET; /* orderly shutdown: SEQPACKET has no empty messages of ours */
	if (ret < 0) {
		close_all(got, &n);
		return ret;
	}
	memcpy(fds, got, n * sizeof(int));
	*nfds = n;
	return ret;
}

long abd__hs_recv(int sock, void *buf, size_t size, int *fds, unsigned max_fds, unsigned *nfds)
{
	return hs_recv(sock, buf, size, fds, max_fds, nfds, MSG_DONTWAIT);
}

int abd__hs_peercred(int sock, pid_t *pid, uid_t *uid, gid_t *gid)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);
	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
		return -errno;
	if (len != sizeof(cr))
		return -EPROTO;
	*pid = cr.pid;
	*uid = cr.uid;
	*gid = cr.gid;
	return 0;
}

/* ------------------------------------------------------------------ client -- */

/* Wait for events on fd until deadline; 0 when ready, -ETIMEDOUT, -errno. */
static int wait_fd(int fd, short events, int64_t deadline_ns)
{
	for (;;) {
		int64_t left = deadline_ns - abd__now_ns();
		if (left <= 0)
			return -ETIMEDOUT;
		struct pollfd p = { .fd = fd, .events = events };
		int ms = (int)((left + 999999) / 1000000);
		int r = poll(&p, 1, ms);
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r > 0)
			return 0;
	}
}

/* Build sockaddr_un for name inside dirfd, through /proc/self/fd/N so that a long registry
 * path never overflows sun_path. name is a bare name (no slash). */
static int make_addr(int dirfd, const char *path, struct sockaddr_un *sa, socklen_t *len)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	int n;
	if (dirfd >= 0 && path && *path && !strchr(path, '/'))
		n = snprintf(sa->sun_path, sizeof(sa->sun_path), "/proc/self/fd/%d/%s", dirfd, path);
	else if (dirfd >= 0 && !path)
		n = snprintf(sa->sun_path, sizeof(sa->sun_path), "/proc/self/fd/%d", dirfd);
	else
		return -EINVAL;
	if (n < 0 || (size_t)n >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n + 1);
	return 0;
}

int abd__hs_sock_name(const char *name)
{
	static const char pre[] = ".abd-";
	if (!name || strncmp(name, pre, sizeof(pre) - 1) != 0)
		return 0;
	const char *p = name + sizeof(pre) - 1;
	for (int i = 0; i < 32; i++, p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return 0;
	if (strcmp(p, ABD__HS_SUFFIX) == 0)
		return 1;
	if (strcmp(p, ABD__HS_TMP_SUFFIX) == 0)
		return 2;
	return 0;
}

int abd__hs_open_sock(int dirfd, const char *name, uid_t owner)
{
	if (abd__hs_sock_name(name) == 0)
		return -EBADMSG;
	/* O_PATH|O_NOFOLLOW: a symlink is opened as itself (and is not a socket), nothing in
	 * the name is followed, and the descriptor pins the inode fstat shows */
	int fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = -errno;
		abd__close(fd);
		return e;
	}
	if (!S_ISSOCK(st.st_mode) || (owner != (uid_t)-1 && st.st_uid != owner)) {
		abd__close(fd);
		return -ESTALE;
	}
	return fd;
}

/* connect sock to the socket file pinned by the O_PATH descriptor pathfd: the kernel finds
 * the socket by that inode, whatever happens to its name meanwhile. */
static int connect_fd(int sock, int pathfd)
{
	struct sockaddr_un sa;
	socklen_t salen;
	int r = make_addr(pathfd, NULL, &sa, &salen);
	if (r < 0)
		return r;
	return connect(sock, (struct sockaddr *)&sa, salen) < 0 ? -errno : 0;
}

int abd__hs_listening_fd(int pathfd)
{
	abd__autoclose int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (sock < 0)
		return -errno;
	int r;
	while ((r = connect_fd(sock, pathfd)) < 0) {
		if (r == -EINTR)
			continue;
		if (r == -ECONNREFUSED)
			return 0;
		return r == -EAGAIN ? 1 : r; /* EAGAIN: a full backlog, so a listener */
	}
	return 1; /* the server sees a connection that ends without a request */
}

int abd__hs_listening(int dirfd, const char *name)
{
	abd__autoclose int pathfd = abd__hs_open_sock(dirfd, name, (uid_t)-1);
	return pathfd < 0 ? pathfd : abd__hs_listening_fd(pathfd);
}

static int send_request(int sock, const void *msg, size_t len, int64_t deadline_ns)
{
	int r = abd__hs_send(sock, msg, len, NULL, 0);
	if (r == -EAGAIN) {
		r = wait_fd(sock, POLLOUT, deadline_ns);
		if (r == 0)
			r = abd__hs_send(sock, msg, len, NULL, 0);
	}
	return r == -EPIPE || r == -ENOTCONN ? -ECONNRESET : r;
}

/* Wait for the reply until the deadline and receive it with its descriptors; rep->status is
 * the server's answer (0 unless it is the error returned). On failure nothing is left open.
 * blocking: sock is blocking with a receive timeout of ABD__HS_KEPT_RCVTIMEO_NS, so when that
 * much time is left a blocking recvmsg waits (one syscall instead of poll + recvmsg); after
 * it times out (or a signal), poll until the deadline. */
static int receive_reply(int sock, int64_t deadline_ns, struct abd__hs_reply *rep, int *fds,
                         bool blocking)
{
	uint8_t msg[ABD__HS_MSG_MAX];
	rep->status = 0;
	for (;;) {
		unsigned n = 0;
		long len = -EAGAIN;
		if (blocking && deadline_ns - abd__now_ns() >= ABD__HS_KEPT_RCVTIMEO_NS) {
			len = hs_recv(sock, msg, sizeof(msg), fds, ABD__HS_FDS_MAX, &n, 0);
			if (len == -EINTR || len == -EWOULDBLOCK)
				len = -EAGAIN;
			blocking = false;
		}
		if (len == -EAGAIN) {
			int r = wait_fd(sock, POLLIN, deadline_ns);
			if (r < 0)
				return r;
			len = abd__hs_recv(sock, msg, sizeof(msg), fds, ABD__HS_FDS_MAX, &n);
		}
		if (len == -EAGAIN)
			continue;
		if (len < 0)
			return (int)len;
		int r = abd__hs_reply_parse(msg, (size_t)len, rep);
		if (r == 0 && rep->status)
			r = -(int)rep->status;
		if (r == 0 && n != rep->nfds)
			r = -EBADMSG;
		if (r < 0)
			close_all(fds, &n);
		return r;
	}
}

int abd__hs_client(int dirfd, const char *path, const struct abd__hs_peer *want,
                   const struct abd__hs_request *req,
                   int64_t deadline_ns, struct abd__hs_reply *rep, int *fds,
                   struct abd__hs_peer *peer, struct abd__hs_conn *conn)
{
	uint8_t msg[ABD__HS_MSG_MAX];
	struct abd__hs_request kreq = *req;
	kreq.keep = conn != NULL;
	long mlen = abd__hs_request_encode(&kreq, msg, sizeof(msg));
	if (mlen < 0)
		return (int)mlen;
	int r;
	if (conn && conn->fd >= 0) {
		/* A connection kept from an earlier exchange with this server; its credentials,
		 * fixed at connect and checked then, come with it. A server that dropped it
		 * meanwhile (idle deadline, eviction, exit) shows EOF, EPIPE or ECONNRESET:
		 * connect afresh, once. Any other failure ends it too: a late reply must never
		 * answer a later request. */
		int sock = conn->fd;
		conn->fd = -1;
		*peer = conn->peer;
		if (conn->mode == 0) {
			/* first reuse: blocking, with a receive timeout (sends stay MSG_DONTWAIT) */
			struct timeval tv = { 0, ABD__HS_KEPT_RCVTIMEO_NS / 1000 };
			conn->mode = fcntl(sock, F_SETFL, 0) == 0 &&
			             setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0 ? 1 : 2;
		}
		r = send_request(sock, msg, (size_t)mlen, deadline_ns);
		if (r == 0)
			r = receive_reply(sock, deadline_ns, rep, fds, conn->mode == 1);
		if (r == 0 && rep->kept)
			conn->fd = sock;
		else
			abd__close(sock);
		if (r != -ECONNRESET)
			return r;
	}

	/* The socket is found by its name in the registry directory, but connected to through a
	 * descriptor of the file whose kind and owner were checked (the record's owner), and
	 * nothing is sent before the listener's credentials, fixed at its listen(), are the
	 * record's: a name swapped meanwhile reaches nothing else, and no other process ever
	 * sees the request. */
	abd__autoclose int pathfd = abd__hs_open_sock(dirfd, path, want->uid);
	if (pathfd < 0)
		return pathfd;
	abd__autoclose int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (sock < 0)
		return -errno;
	/* A full backlog answers EAGAIN on a non-blocking Unix connect: retry until the deadline. */
	for (;;) {
		r = connect_fd(sock, pathfd);
		if (r == 0)
			break;
		if (r == -EINTR)
			continue;
		if (r != -EAGAIN)
			return r;
		if (abd__now_ns() >= deadline_ns)
			return -ETIMEDOUT;
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	r = abd__hs_peercred(sock, &peer->pid, &peer->uid, &peer->gid);
	if (r < 0)
		return r;
	if (peer->uid != want->uid || (want->pid > 0 && peer->pid != want->pid))
		return -ESTALE;
	/* The request now, before waiting: the server answers at once when it finds it there
	 * at accept (rather than parking the connection). */
	r = send_request(sock, msg, (size_t)mlen, deadline_ns);
	if (r < 0)
		return r;
	r = receive_reply(sock, deadline_ns, rep, fds, false);
	if (r == -EBADMSG && rep->status == EBADMSG && kreq.keep) {
		/* a server older than the keep-alive request (type 3) refuses it: ask it the
		 * version-1 way, on a new connection (it closes this one) */
		return abd__hs_client(dirfd, path, want, req, deadline_ns, rep, fds, peer, NULL);
	}
	if (r == 0 && conn && rep->kept) {
		*conn = (struct abd__hs_conn){ .fd = sock, .peer = *peer };
		sock = -1;
	}
	return r;
}

/* ------------------------------------------------------------------ server -- */

#define ALLOW_MAX 64
#define PENDING_DEFAULT 64
#define PENDING_MAX 4096
#define ACCEPT_BUDGET 256 /* connections taken per process call: bounded work per call */
#define PAUSE_MIN_NS (10ll * 1000 * 1000)
#define PAUSE_MAX_NS (500ll * 1000 * 1000)

struct pending {
	int fd;
	struct abd_source *src; /* on a reactor: the connection's readiness source */
	int64_t deadline;
	uid_t uid;
	gid_t gid;
	bool allowed;
	bool kept; /* answered, kept open for another request (the client asked) */
};

struct abd_acquire_server {
	int epfd, lfd, dirfd;
	int pathfd; /* O_PATH, the listening socket's file: its mode is changed through it */
	char name[48];
	bool serving;
	uid_t owner;
	uid_t uids[ALLOW_MAX];
	gid_t gids[ALLOW_MAX];
	unsigned nuids, ngids;
	unsigned max_pending, npending;
	int64_t timeout_ns;
	struct pending *pending;
	char service[ABD__HS_SERVICE_MAX + 1];
	uint8_t instance[16];
	unsigned nslots;
	struct abd__hs_slot slots[ABD__HS_FDS_MAX];
	int slot_fds[ABD__HS_FDS_MAX];
	struct abd_acquire_server_stats st;
	/* Served by a reactor (abd_reactor_add_acquire_server): the owner stands for srv, lsrc
	 * watches the listening socket, one timer fires at the earliest pending deadline. */
	struct abd_reactor *reactor;
	struct abd_source *src_owner, *lsrc, *timer;
	int64_t timer_at; /* the timer's armed deadline, -1 when it is not armed */
	ino_t ino;        /* the socket file's identity, for unlink_own */
	dev_t dev;
	/* accept4 ran out of descriptors (EMFILE, ENFILE) or memory: the listener is disarmed
	 * until paused_until (CLOCK_MONOTONIC ns; -1: armed), so that a backlog it cannot take
	 * never keeps the caller's poll (or the reactor) spinning; backoff doubles up to
	 * PAUSE_MAX_NS while it keeps failing */
	int64_t paused_until;
	int64_t backoff;
};

static void arm_timer(struct abd_acquire_server *s);
static void drop_pending(struct abd_acquire_server *s, unsigned i);

/* chmod the file an O_PATH descriptor pins (fchmod refuses O_PATH descriptors; the magic link
 * /proc/self/fd/N resolves to that very inode, whatever its name is now). */
static int chmod_fd(int pathfd, mode_t mode)
{
	char p[40];
	snprintf(p, sizeof(p), "/proc/self/fd/%d", pathfd);
	return fchmodat(AT_FDCWD, p, mode, 0) < 0 ? -errno : 0;
}

/* Create the listening socket file with mode 0600 without ever chmod'ing a name another user
 * could swap, and without touching the process-wide umask (a race with every other thread's
 * file creation): bind in a private directory (tmp: mode 0700, ours, checked on its
 * descriptor), where nobody else can reach the socket or replace its name; pin the socket's
 * file with an O_PATH descriptor and set its mode through that; listen; then rename it into
 * the registry directory under its final name (connect finds a socket by its inode, so the
 * renamed file reaches the same socket) and remove the empty directory. A name ending in
 * ".sock" that refuses connections is therefore a dead publisher's, which GC may remove; a
 * private directory left by a publisher killed mid-way is removed by GC after a grace period
 * (abd_registry_gc, docs/acquire.md). */
static int bind_private(struct abd_acquire_server *s, const char *tmp)
{
	if (mkdirat(s->dirfd, tmp, 0700) < 0)
		return -errno;
	int r = 0;
	abd__autoclose int priv = openat(s->dirfd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (priv < 0 || fstat(priv, &st) < 0) {
		r = -errno;
	} else if (st.st_uid != geteuid() || (st.st_mode & 077)) {
		r = -EPERM; /* not the directory we made */
	} else if (fchmod(priv, 0700) < 0) { /* a umask may have taken our own bits */
		r = -errno;
	}
	struct sockaddr_un sa;
	socklen_t salen;
	if (r == 0)
		r = make_addr(priv, "s", &sa, &salen);
	if (r == 0 && bind(s->lfd, (struct sockaddr *)&sa, salen) < 0)
		r = -errno;
	if (r == 0) {
		s->pathfd = openat(priv, "s", O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (s->pathfd < 0 || fstat(s->pathfd, &st) < 0)
			r = -errno;
		else if (!S_ISSOCK(st.st_mode))
			r = -EPROTO;
		else
			s->ino = st.st_ino, s->dev = st.st_dev;
	}
	if (r == 0)
		r = chmod_fd(s->pathfd, 0600);
	if (r == 0 && (listen(s->lfd, SOMAXCONN) < 0 || renameat(priv, "s", s->dirfd, s->name) < 0))
		r = -errno;
	if (priv >= 0)
		unlinkat(priv, "s", 0); /* on failure; after the rename there is none */
	unlinkat(s->dirfd, tmp, AT_REMOVEDIR);
	if (r < 0)
		s->pathfd = abd__close(s->pathfd);
	return r;
}

/* Unlink the socket's final name if it still names our socket file. The name is checked on a
 * descriptor first; in a directory abd_registry_open accepts (owned by us or root, and
 * sticky when others may write it) only we, the directory's owner or root can move the name
 * between that check and unlinkat, and unlinking a name removes no file's content. */
static void unlink_own(struct abd_acquire_server *s)
{
	int fd = openat(s->dirfd, s->name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (fd >= 0 && fstat(fd, &st) == 0 && st.st_ino == s->ino && st.st_dev == s->dev)
		unlinkat(s->dirfd, s->name, 0);
	abd__close(fd);
}

int abd_acquire_server_new(struct abd_registry *reg, unsigned flags,
                           struct abd_acquire_server **out)
{
	abd__check(reg && out && flags == 0, -EINVAL);
	*out = NULL;
	struct abd_acquire_server *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->epfd = s->lfd = s->dirfd = s->pathfd = -1;
	s->paused_until = -1;
	s->owner = geteuid();
	s->max_pending = PENDING_DEFAULT;
	s->timeout_ns = 1000000000;
	s->pending = calloc(PENDING_MAX, sizeof(*s->pending));
	int r = -ENOMEM;
	if (!s->pending)
		goto fail;
	s->dirfd = fcntl(abd_registry_fd(reg), F_DUPFD_CLOEXEC, 3);
	if (s->dirfd < 0) {
		r = -errno;
		goto fail;
	}
	uint8_t rnd[16];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
		r = -EIO;
		goto fail;
	}
	char *q = s->name + sprintf(s->name, ".abd-");
	for (int i = 0; i < 16; i++)
		q += sprintf(q, "%02x", rnd[i]);
	char tmp[sizeof(s->name)];
	snprintf(tmp, sizeof(tmp), "%s" ABD__HS_TMP_SUFFIX, s->name);
	strcpy(q, ABD__HS_SUFFIX);
	s->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s->lfd < 0) {
		r = -errno;
		goto fail;
	}
	r = bind_private(s, tmp);
	if (r < 0)
		goto fail;
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = UINT64_MAX };
	if (s->epfd < 0 || epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->lfd, &ev) < 0) {
		r = -errno;
		unlink_own(s);
		goto fail;
	}
	*out = s;
	return 0;
fail:
	abd__close(s->pathfd);
	abd__close(s->epfd);
	abd__close(s->lfd);
	abd__close(s->dirfd);
	free(s->pending);
	free(s);
	return r;
}

void abd_acquire_server_free(struct abd_acquire_server *s)
{
	if (!s)
		return;
	if (s->src_owner)
		abd_source_free(s->src_owner); /* detaches: frees our sources, drops pending clients */
	for (unsigned i = 0; i < s->npending; i++)
		abd__close(s->pending[i].fd);
	unlink_own(s);
	abd__close(s->pathfd);
	abd__close(s->epfd);
	abd__close(s->lfd);
	abd__close(s->dirfd);
	free(s->pending);
	free(s);
}

const char *abd_acquire_server_socket(const struct abd_acquire_server *s)
{
	return s ? s->name : NULL;
}

int abd_acquire_server_serve(struct abd_acquire_server *s, const struct abd_record *rec)
{
	abd__check(s && rec, -EINVAL);
	size_t n = abd_record_fd_count(rec);
	const char *svc = abd_record_service(rec);
	abd__check(n <= ABD__HS_FDS_MAX && svc && strlen(svc) <= ABD__HS_SERVICE_MAX, -EINVAL);
	for (size_t i = 0; i < n; i++) {
		const char *slot;
		int fd;
		enum abd_fd_kind kind;
		if (abd_record_fd_at(rec, i, &slot, &fd, &kind) < 0 || strlen(slot) > ABD__HS_NAME_MAX)
			return -EINVAL;
		memset(&s->slots[i], 0, sizeof(s->slots[i]));
		strcpy(s->slots[i].name, slot);
		s->slots[i].kind = (uint8_t)kind;
		s->slot_fds[i] = fd;
	}
	s->nslots = (unsigned)n;
	strcpy(s->service, svc);
	memcpy(s->instance, abd_record_instance(rec), 16);
	s->serving = true;
	return 0;
}

static int open_up(struct abd_acquire_server *s)
{
	return chmod_fd(s->pathfd, 0666);
}

int abd_acquire_server_allow_uid(struct abd_acquire_server *s, uid_t uid)
{
	abd__check(s && uid != (uid_t)-1, -EINVAL);
	if (s->nuids == ALLOW_MAX)
		return -ENOSPC;
	s->uids[s->nuids++] = uid;
	return open_up(s);
}

int abd_acquire_server_allow_gid(struct abd_acquire_server *s, gid_t gid)
{
	abd__check(s && gid != (gid_t)-1, -EINVAL);
	if (s->ngids == ALLOW_MAX)
		return -ENOSPC;
	s->gids[s->ngids++] = gid;
	return open_up(s);
}

int abd_acquire_server_set_max_pending(struct abd_acquire_server *s, unsigned n)
{
	abd__check(s && n >= 1 && n <= PENDING_MAX, -EINVAL);
	while (s->npending > n) {
		drop_pending(s, 0);
		s->st.evicted++;
	}
	s->max_pending = n;
	return 0;
}

int abd_acquire_server_set_timeout(struct abd_acquire_server *s, int64_t timeout_ns)
{
	abd__check(s && timeout_ns > 0, -EINVAL);
	s->timeout_ns = timeout_ns;
	return 0;
}

int abd_acquire_server_fd(const struct abd_acquire_server *s)
{
	return s ? s->epfd : -EINVAL;
}

int64_t abd_acquire_server_deadline(const struct abd_acquire_server *s)
{
	if (!s)
		return -1;
	int64_t d = s->paused_until;
	for (unsigned i = 0; i < s->npending; i++)
		if (d < 0 || s->pending[i].deadline < d)
			d = s->pending[i].deadline;
	return d;
}

int abd_acquire_server_stats(const struct abd_acquire_server *s,
                             struct abd_acquire_server_stats *out)
{
	abd__check(s && out, -EINVAL);
	*out = s->st;
	out->pending = s->npending;
	out->kept = 0;
	for (unsigned i = 0; i < s->npending; i++)
		out->kept += s->pending[i].kept;
	return 0;
}

_Static_assert(sizeof(struct abd_acquire_server_stats) == 10 * sizeof(uint64_t),
               "the stats keep their size: new counters take reserved space");

static bool allowed(const struct abd_acquire_server *s, uid_t uid, gid_t gid)
{
	if (uid == 0 || uid == s->owner)
		return true;
	for (unsigned i = 0; i < s->nuids; i++)
		if (s->uids[i] == uid)
			return true;
	for (unsigned i = 0; i < s->ngids; i++)
		if (s->gids[i] == gid)
			return true;
	return false;
}

static void reply_status(int fd, const struct abd_acquire_server *s, uint32_t status)
{
	struct abd__hs_reply rep = { .status = status };
	memcpy(rep.instance, s->instance, 16);
	uint8_t buf[ABD__HS_HEADER + ABD__HS_REPLY_FIXED];
	long n = abd__hs_reply_encode(&rep, buf, sizeof(buf));
	if (n > 0)
		abd__hs_send(fd, buf, (size_t)n, NULL, 0);
}

/* Read and answer one request. Returns KEEP when answered with descriptors and the client
 * asked to keep the connection, DONE when answered otherwise or dropped (the connection is
 * finished), -EAGAIN when nothing has arrived yet. *served counts answers with descriptors. */
enum { DONE = 0, KEEP = 1 };

static int answer(struct abd_acquire_server *s, int fd, uid_t uid, gid_t gid, int *served)
{
	uint8_t buf[ABD__HS_MSG_MAX];
	int fds[ABD__HS_FDS_MAX];
	unsigned nfds = 0;
	long len = abd__hs_recv(fd, buf, sizeof(buf), fds, 0, &nfds);
	if (len == -EAGAIN)
		return -EAGAIN;
	if (len < 0) {
		/* a client that sent descriptors (closed by abd__hs_recv), or bytes past the bound;
		 * a client that left (ECONNRESET) is not malformed */
		if (len != -ECONNRESET)
			s->st.malformed++;
		if (len == -EMSGSIZE || len == -EPROTO)
			reply_status(fd, s, EPROTO);
		return DONE;
	}
	if (!allowed(s, uid, gid)) {
		s->st.refused++;
		reply_status(fd, s, EACCES);
		return DONE;
	}
	struct abd__hs_request req;
	int r = abd__hs_request_parse(buf, (size_t)len, &req);
	if (r < 0) {
		s->st.malformed++;
		reply_status(fd, s, (uint32_t)-r);
		return DONE;
	}
	static const uint8_t zero[16];
	if (!s->serving) {
		reply_status(fd, s, EAGAIN);
		return DONE;
	}
	if (strcmp(req.service, s->service) != 0 ||
	    (memcmp(req.instance, zero, 16) != 0 && memcmp(req.instance, s->instance, 16) != 0)) {
		reply_status(fd, s, ENOENT);
		return DONE;
	}
	struct abd__hs_reply rep = { .status = 0, .nfds = s->nslots };
	memcpy(rep.instance, s->instance, 16);
	memcpy(rep.slots, s->slots, sizeof(rep.slots[0]) * s->nslots);
	rep.kept = req.keep;
	long n = abd__hs_reply_encode(&rep, buf, sizeof(buf));
	if (n < 0)
		return DONE;
	/* a client that left meanwhile, or (kept connection) one that asks again and again
	 * without reading the replies until its queue is full: EAGAIN, dropped */
	if (abd__hs_send(fd, buf, (size_t)n, s->slot_fds, s->nslots) < 0)
		return DONE;
	s->st.served++;
	(*served)++;
	return req.keep ? KEEP : DONE;
}

/* A connection kept after an answer waits for its next request like a silent one: it holds
 * a pending entry (max_pending, eviction) and a new idle deadline. Its send buffer shrinks
 * to the minimum the first time, so that a client that asks without reading holds only a
 * few replies (and their descriptors) in flight before its sends fail (EAGAIN: dropped). */
static void keep_conn(struct abd_acquire_server *s, struct pending *p)
{
	if (!p->kept) {
		int one = 1;
		setsockopt(p->fd, SOL_SOCKET, SO_SNDBUF, &one, sizeof(one));
		p->kept = true;
	}
	p->deadline = abd__now_ns() + s->timeout_ns;
}

static void drop_pending(struct abd_acquire_server *s, unsigned i)
{
	if (s->pending[i].src)
		abd_source_free(s->pending[i].src); /* also from inside its own callback */
	else
		epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->pending[i].fd, NULL);
	abd__close(s->pending[i].fd);
	s->pending[i] = s->pending[--s->npending];
	if (s->paused_until >= 0)
		s->paused_until = abd__now_ns(); /* a descriptor is free: due now */
}

static int find_pending(const struct abd_acquire_server *s, int fd)
{
	for (unsigned i = 0; i < s->npending; i++)
		if (s->pending[i].fd == fd)
			return (int)i;
	return -1;
}

static void on_conn(struct abd_source *src, int status, uint64_t revents, void *ud);

/* Wait for a silent connection's request: a reactor source, or the server's epoll. */
static int watch_conn(struct abd_acquire_server *s, int fd, struct abd_source **src)
{
	if (s->reactor)
		return abd_reactor_add_io(s->reactor, fd, POLLIN | POLLRDHUP, on_conn, s, src);
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t)fd };
	return epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

/* Out of descriptors (or memory): the connections waiting in the backlog cannot be taken
 * now, and the listening socket stays readable, so a level-triggered poll would return at
 * once, again and again. Disarm it (the server's epoll: events 0; a reactor: its source
 * freed) until a deadline the caller's poll or the server's timer honours
 * (abd_acquire_server_deadline), then try again; a descriptor freed by a pending connection
 * meanwhile re-arms it sooner (drop_pending). The clients wait in the backlog, within their
 * own deadlines. */
static void pause_listener(struct abd_acquire_server *s)
{
	s->backoff = s->backoff ? s->backoff * 2 : PAUSE_MIN_NS;
	if (s->backoff > PAUSE_MAX_NS)
		s->backoff = PAUSE_MAX_NS;
	s->paused_until = abd__now_ns() + s->backoff;
	s->st.accept_paused++;
	if (s->reactor) {
		abd_source_free(s->lsrc);
		s->lsrc = NULL;
		return;
	}
	struct epoll_event ev = { .events = 0, .data.u64 = UINT64_MAX };
	epoll_ctl(s->epfd, EPOLL_CTL_MOD, s->lfd, &ev);
}

static void on_listen(struct abd_source *src, int status, uint64_t revents, void *ud);

/* Re-arm a paused listener (now, or once its pause is over: due). 0 or -errno. */
static int resume_listener(struct abd_acquire_server *s, bool due)
{
	if (s->paused_until < 0 || (due && abd__now_ns() < s->paused_until))
		return 0;
	s->paused_until = -1;
	if (s->reactor)
		return s->lsrc ? 0 : abd_reactor_add_io(s->reactor, s->lfd, POLLIN, on_listen, s, &s->lsrc);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = UINT64_MAX };
	return epoll_ctl(s->epfd, EPOLL_CTL_MOD, s->lfd, &ev) < 0 ? -errno : 0;
}

static void accept_some(struct abd_acquire_server *s, int *served)
{
	for (int k = 0; k < ACCEPT_BUDGET; k++) {
		if (s->paused_until >= 0)
			return;
		int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				pause_listener(s);
			return; /* EAGAIN, ECONNABORTED: try on the next call */
		}
		s->backoff = 0;
		pid_t pid;
		uid_t uid;
		gid_t gid;
		if (abd__hs_peercred(fd, &pid, &uid, &gid) < 0) {
			abd__close(fd);
			continue;
		}
		/* A well-behaved client sends its request right after connect: answer at once. The
		 * connect woke us, so we may be a few hundred ns ahead of its send: give the CPU up
		 * once and look again before parking the connection (a parked one costs two
		 * epoll_ctl, another wake-up and another pass). */
		s->st.accepted++;
		int r = answer(s, fd, uid, gid, served);
		if (r == -EAGAIN) {
			sched_yield();
			r = answer(s, fd, uid, gid, served);
		}
		if (r == DONE) {
			abd__close(fd);
			continue;
		}
		if (s->npending == s->max_pending) {
			/* evict the oldest waiting connection, a kept one if any (its client just
			 * connects again when it next asks), else the oldest silent one: newcomers
			 * usually speak at once */
			unsigned oldest = 0;
			for (unsigned i = 1; i < s->npending; i++)
				if (s->pending[i].kept > s->pending[oldest].kept ||
				    (s->pending[i].kept == s->pending[oldest].kept &&
				     s->pending[i].deadline < s->pending[oldest].deadline))
					oldest = i;
			drop_pending(s, oldest);
			s->st.evicted++;
		}
		struct abd_source *src = NULL;
		if (watch_conn(s, fd, &src) < 0) {
			abd__close(fd);
			continue;
		}
		s->pending[s->npending] = (struct pending){
			.fd = fd, .src = src, .deadline = abd__now_ns() + s->timeout_ns, .uid = uid,
			.gid = gid
		};
		if (r == KEEP)
			keep_conn(s, &s->pending[s->npending]);
		s->npending++;
	}
}

int abd_acquire_server_process(struct abd_acquire_server *s)
{
	abd__check(s, -EINVAL);
	if (s->reactor)
		return -EBUSY;
	int served = 0;
	resume_listener(s, true);
	/* Nothing pending: the listening socket is all the epoll set holds, so accept straight
	 * away (a client that connected has usually sent its request too: one pass answers it)
	 * and ask epoll only when silent connections wait. */
	if (!s->npending) {
		accept_some(s, &served);
		if (!s->npending)
			return served;
	}
	/* One kept connection and nothing else waiting: the usual reason for this call is its
	 * client's next request. Answer it without asking epoll which descriptor is ready (one
	 * epoll_wait less per repeat); when it has not spoken, ask epoll as below. A newcomer
	 * waiting meanwhile keeps the (level-triggered) epoll descriptor readable, so the
	 * caller's next poll returns at once for it. */
	else if (s->npending == 1 && s->pending[0].kept) {
		struct pending *p = &s->pending[0];
		int r = answer(s, p->fd, p->uid, p->gid, &served);
		if (r == KEEP) {
			keep_conn(s, p);
			return served;
		}
		if (r == DONE) {
			drop_pending(s, 0);
			return served;
		}
	}
	struct epoll_event evs[64];
	for (int round = 0; round < 16; round++) {
		int n = epoll_wait(s->epfd, evs, 64, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u64 == UINT64_MAX) {
				accept_some(s, &served);
				continue;
			}
			int k = find_pending(s, (int)evs[i].data.u64);
			if (k < 0)
				continue;
			struct pending *p = &s->pending[k];
			int r = answer(s, p->fd, p->uid, p->gid, &served);
			if (r == KEEP)
				keep_conn(s, p);
			else if (r == DONE || (evs[i].events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)))
				drop_pending(s, (unsigned)k);
		}
		if (n < 64)
			break; /* all that was ready; what arrives later makes the epoll fd readable */
	}
	int64_t now = abd__now_ns();
	for (unsigned i = 0; i < s->npending;) {
		if (s->pending[i].deadline <= now) {
			drop_pending(s, i);
			s->st.expired++;
		} else {
			i++;
		}
	}
	return served;
}

/* ------------------------------------------------------------------ on a reactor -- */

static void expire(struct abd_acquire_server *s)
{
	int64_t now = abd__now_ns();
	for (unsigned i = 0; i < s->npending;) {
		if (s->pending[i].deadline <= now) {
			drop_pending(s, i);
			s->st.expired++;
		} else {
			i++;
		}
	}
}

static void on_timer(struct abd_source *src, int status, uint64_t value, void *ud)
{
	(void)src, (void)status, (void)value;
	struct abd_acquire_server *s = ud;
	s->timer_at = -1; /* one-shot: fired */
	expire(s);
	if (s->paused_until >= 0 && resume_listener(s, true) == 0 && s->paused_until < 0) {
		int served = 0;
		accept_some(s, &served);
	}
	arm_timer(s);
}

/* Keep the timer at or before the earliest deadline. A timer that fires early (its
 * connection spoke meanwhile) finds nothing to drop and moves on: fewer re-arms. */
static void arm_timer(struct abd_acquire_server *s)
{
	int64_t d = abd_acquire_server_deadline(s);
	if (d < 0 || (s->timer_at >= 0 && s->timer_at <= d))
		return;
	int e = s->timer ? abd_source_set_timer(s->timer, (uint64_t)d, 0, ABD_TIMER_ABSOLUTE)
	                 : abd_reactor_add_timer(s->reactor, (uint64_t)d, 0, ABD_TIMER_ABSOLUTE,
	                                         on_timer, s, &s->timer);
	s->timer_at = e == 0 ? d : -1;
	if (e < 0)
		expire(s); /* no timer (ENOMEM): at least drop what is due now */
}

static void on_listen(struct abd_source *src, int status, uint64_t revents, void *ud)
{
	(void)src, (void)status, (void)revents;
	struct abd_acquire_server *s = ud;
	int served = 0;
	accept_some(s, &served);
	arm_timer(s);
}

static void on_conn(struct abd_source *src, int status, uint64_t revents, void *ud)
{
	struct abd_acquire_server *s = ud;
	unsigned k = 0;
	while (k < s->npending && s->pending[k].src != src)
		k++;
	if (k == s->npending)
		return;
	struct pending *p = &s->pending[k];
	int served = 0;
	int r = answer(s, p->fd, p->uid, p->gid, &served);
	if (r == KEEP && status == 0)
		keep_conn(s, p);
	else if (r != -EAGAIN || status != 0 || (revents & (POLLHUP | POLLRDHUP | POLLERR)))
		drop_pending(s, k);
	if (s->paused_until >= 0)
		arm_timer(s); /* a dropped connection made the paused listener due now */
}

/* The owner is going: free our sources and drop the silent clients (they would otherwise
 * move back into the server's epoll set, which a forked child shares with its parent). */
static void on_owner_kill(void *ud)
{
	struct abd_acquire_server *s = ud;
	abd_source_free(s->lsrc);
	abd_source_free(s->timer);
	s->lsrc = s->timer = NULL;
	while (s->npending)
		drop_pending(s, s->npending - 1);
	s->src_owner = NULL;
	s->reactor = NULL;
	s->timer_at = -1;
	if (s->paused_until >= 0) { /* paused on the reactor: keep it paused in the epoll set */
		struct epoll_event ev = { .events = 0, .data.u64 = UINT64_MAX };
		epoll_ctl(s->epfd, EPOLL_CTL_MOD, s->lfd, &ev);
	}
}

int abd_reactor_add_acquire_server(struct abd_reactor *r, struct abd_acquire_server *s,
                                   struct abd_source **out)
{
	if (out)
		*out = NULL;
	abd__check(r && s, -EINVAL);
	int e = abd__reactor_check(r);
	if (e < 0)
		return e;
	if (s->reactor)
		return -EBUSY;
	if ((e = abd__reactor_add_owner(r, on_owner_kill, s, &s->src_owner)) < 0)
		return e;
	s->reactor = r;
	s->timer_at = -1;
	/* a paused listener is added when its pause ends (the timer: arm_timer below) */
	e = s->paused_until >= 0 ? 0 : abd_reactor_add_io(r, s->lfd, POLLIN, on_listen, s, &s->lsrc);
	/* connections taken by abd_acquire_server_process move to the reactor */
	for (unsigned i = 0; i < s->npending && e == 0;) {
		epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->pending[i].fd, NULL);
		if (abd_reactor_add_io(r, s->pending[i].fd, POLLIN | POLLRDHUP, on_conn, s,
		                       &s->pending[i].src) < 0)
			drop_pending(s, i);
		else
			i++;
	}
	if (e == 0)
		arm_timer(s);
	if (e < 0) {
		abd_source_free(s->src_owner); /* detaches */
		return e;
	}
	if (out)
		*out = s->src_owner;
	return 0;
}
