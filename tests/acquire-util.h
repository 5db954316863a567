/* SPDX-License-Identifier: MIT */
/* A test publisher for the acquire suites (Criterion and plain): a real process that publishes
 * a service with a sealed memfd carrying the nonce header and an eventfd, and serves the
 * handshake until told to stop. No Criterion here: the plain suite uses it too. */
#ifndef ABD_TESTS_ACQUIRE_UTIL_H
#define ABD_TESTS_ACQUIRE_UTIL_H

#include <abd/abd.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TPUB_SHM_SIZE 4096

enum { TPUB_SAVED_ROOT = 1, TPUB_NOT_DUMPABLE = 2 };

enum tpub_variant {
	TPUB_OK = 0,
	TPUB_WRONG_NONCE,   /* the memfd's header carries another nonce */
	TPUB_UNSEALED,      /* the memfd lacks its seals */
	TPUB_WRONG_KIND,    /* the record calls the memfd an eventfd */
	TPUB_NO_SOCKET,     /* the record names no handshake socket */
	TPUB_NO_SERVE,      /* publishes and never processes the server (silent publisher) */
};

struct tpub {
	char dir[128];
	char service[64];
	uid_t uid;          /* 0: stay root; else setresuid to it (and gid) */
	gid_t gid;
	uid_t allow_uid;    /* (uid_t)-1: none */
	gid_t allow_gid;    /* (gid_t)-1: none */
	enum tpub_variant variant;
	pid_t ptracer;      /* 0: none; else abd_acquire_set_ptracer(it) once published */
	/* a process its owner (uid) could not ptrace: TPUB_SAVED_ROOT keeps a saved uid of 0
	 * (setresuid(uid, uid, 0)), TPUB_NOT_DUMPABLE makes itself non-dumpable */
	int protect;
	/* > 0: once published, RLIMIT_NOFILE is set to this many descriptors above those open */
	int nofile_slack;
	bool reactor;       /* serve on an abd_reactor rather than poll + process */
	int ready_w;        /* the child writes one byte here once published */
	int stop_r;         /* the child stops when this reaches EOF */
	/* set by tpub_start */
	pid_t pid;
	int ready_r, stop_w;
};

static inline int tpub_drop_to(uid_t uid, gid_t gid)
{
	if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0)
		return -errno;
	/* changing ids made us non-dumpable: a user's process normally is dumpable */
	prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
	return 0;
}

static inline void tpub_header(int memfd, const uint8_t *nonce)
{
	uint8_t h[72] = "ABDRING1";
	memcpy(h + 16, nonce, 16);
	uint64_t total = TPUB_SHM_SIZE;
	memcpy(h + 64, &total, 8);
	if (pwrite(memfd, h, sizeof(h), 0) != (ssize_t)sizeof(h))
		_exit(90);
}

/* The child's body. Exit codes 9x say which step failed. */
static inline int tpub_main(void *arg)
{
	struct tpub *t = arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	/* the parent's ends: holding stop_w here would keep the stop pipe from ever reaching EOF */
	close(t->stop_w);
	close(t->ready_r);
	if (t->protect == TPUB_SAVED_ROOT) {
		if (setgroups(0, NULL) < 0 || setresgid(t->gid, t->gid, t->gid) < 0 ||
		    setresuid(t->uid, t->uid, 0) < 0 || prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0)
			return 91;
	} else if (t->uid && tpub_drop_to(t->uid, t->gid) < 0) {
		return 91;
	}
	if (t->protect == TPUB_NOT_DUMPABLE && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		return 91;
	struct abd_registry *reg;
	if (abd_registry_open(t->dir, 0, &reg, NULL, 0) < 0)
		return 92;
	/* a real ring whose nonce is the record's instance id; UNSEALED hand-makes the memfd */
	uint8_t nonce[16];
	if (getrandom(nonce, sizeof(nonce), 0) != (ssize_t)sizeof(nonce))
		return 93;
	uint8_t ring_nonce[16];
	memcpy(ring_nonce, nonce, 16);
	if (t->variant == TPUB_WRONG_NONCE)
		ring_nonce[0] ^= 0xff;
	struct abd_ring *ring = NULL;
	int memfd, evfd;
	if (t->variant == TPUB_UNSEALED) {
		memfd = memfd_create("abd-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (memfd < 0 || evfd < 0 || ftruncate(memfd, TPUB_SHM_SIZE) < 0)
			return 93;
		tpub_header(memfd, nonce);
	} else {
		if (abd_ring_new(16, 64, 0, ring_nonce, &ring) < 0)
			return 93;
		memfd = abd_ring_fd(ring);
		/* an eventfd beside it, so that the acquisition hands over two kinds (the ring
		 * itself has none) */
		evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (evfd < 0)
			return 93;
	}
	struct abd_acquire_server *srv;
	if (abd_acquire_server_new(reg, 0, &srv) < 0)
		return 94;
	if (t->allow_uid != (uid_t)-1 && abd_acquire_server_allow_uid(srv, t->allow_uid) < 0)
		return 95;
	if (t->allow_gid != (gid_t)-1 && abd_acquire_server_allow_gid(srv, t->allow_gid) < 0)
		return 95;
	struct abd_record *rec;
	if (abd_record_new(t->service, &rec) < 0 || abd_record_set_instance(rec, nonce) < 0 ||
	    abd_record_add_fd(rec, "ring", memfd,
	                      t->variant == TPUB_WRONG_KIND ? ABD_FD_EVENTFD : ABD_FD_MEMFD) < 0 ||
	    abd_record_add_fd(rec, "wake", evfd, ABD_FD_EVENTFD) < 0)
		return 96;
	if (t->variant != TPUB_NO_SOCKET && abd_record_set_socket(rec, abd_acquire_server_socket(srv)) < 0)
		return 96;
	struct abd_publication *pub;
	if (abd_publish(reg, rec, &pub) < 0)
		return 97;
	if (memcmp(abd_record_instance(abd_publication_record(pub)), nonce, 16) != 0)
		return 97;
	if (abd_acquire_server_serve(srv, abd_publication_record(pub)) < 0)
		return 99;
	/* without Yama there is nothing to declare (-EOPNOTSUPP): the caller checks that */
	if (t->ptracer && abd_acquire_set_ptracer(t->ptracer) < 0 &&
	    abd_probe_ptrace_scope() != -ENOENT)
		return 98;
	struct abd_reactor *rx = NULL;
	if (t->reactor && (abd_reactor_new(0, &rx) < 0 || abd_reactor_add_acquire_server(rx, srv, NULL) < 0))
		return 87;
	if (t->nofile_slack > 0) {
		int top = 0;
		for (int fd = 0; fd < 1024; fd++)
			if (fcntl(fd, F_GETFD) >= 0)
				top = fd;
		struct rlimit rl = { (rlim_t)(top + 1 + t->nofile_slack), (rlim_t)(top + 1 + t->nofile_slack) };
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			return 86;
	}
	char one = 1;
	if (write(t->ready_w, &one, 1) != 1)
		return 89;
	while (rx) {
		struct pollfd p = { .fd = t->stop_r, .events = POLLIN };
		if (poll(&p, 1, 0) > 0)
			break;
		if (abd_reactor_run_once(rx, 50ll * 1000 * 1000) < 0)
			return 88;
	}
	for (; !rx;) {
		struct pollfd p[2] = { { .fd = t->stop_r, .events = POLLIN },
		                       { .fd = abd_acquire_server_fd(srv), .events = POLLIN } };
		int64_t d = abd_acquire_server_deadline(srv);
		int ms = -1;
		if (d >= 0) {
			struct timespec ts;
			clock_gettime(CLOCK_MONOTONIC, &ts);
			int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
			ms = d <= now ? 0 : (int)((d - now) / 1000000 + 1);
		}
		int n = poll(p, t->variant == TPUB_NO_SERVE ? 1 : 2, ms);
		if (n < 0 && errno != EINTR)
			return 88;
		if (p[0].revents)
			break;
		if (t->variant != TPUB_NO_SERVE)
			abd_acquire_server_process(srv);
	}
	abd_acquire_server_free(srv);
	abd_reactor_free(rx);
	abd_withdraw(pub);
	abd_record_free(rec);
	abd_registry_free(reg);
	if (ring) {
		abd_ring_free(ring);
	} else {
		close(memfd);
		close(evfd);
	}
	return 0;
}

/* Fork the publisher; returns once it has published (0), or its exit status as -1000-code. */
static inline int tpub_start(struct tpub *t, pid_t (*forker)(int (*)(void *), void *))
{
	int rp[2], sp[2];
	if (pipe2(rp, O_CLOEXEC) < 0)
		return -errno;
	if (pipe2(sp, O_CLOEXEC) < 0) {
		close(rp[0]);
		close(rp[1]);
		return -errno;
	}
	t->ready_w = rp[1];
	t->ready_r = rp[0];
	t->stop_r = sp[0];
	t->stop_w = sp[1];
	t->pid = forker(tpub_main, t);
	close(rp[1]);
	close(sp[0]);
	char c;
	ssize_t n;
	do
		n = read(t->ready_r, &c, 1);
	while (n < 0 && errno == EINTR);
	close(t->ready_r);
	if (n == 1)
		return 0;
	close(t->stop_w);
	int st;
	waitpid(t->pid, &st, 0);
	return -1000 - (WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
}

/* Stop it (EOF on its stop pipe) and reap it; returns its exit code. */
static inline int tpub_stop(struct tpub *t)
{
	close(t->stop_w);
	int st;
	if (waitpid(t->pid, &st, 0) < 0)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Kill it and reap it, leaving a stale record behind. */
static inline void tpub_kill(struct tpub *t)
{
	kill(t->pid, SIGKILL);
	int st;
	waitpid(t->pid, &st, 0);
	close(t->stop_w);
}

static inline void tpub_init(struct tpub *t, const char *dir, const char *service)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->dir, sizeof(t->dir), "%s", dir);
	snprintf(t->service, sizeof(t->service), "%s", service);
	t->allow_uid = (uid_t)-1;
	t->allow_gid = (gid_t)-1;
	t->pid = -1;
}

/* These tests are about acquisition, not about whom an opener trusts to publish a name
 * (tests/test-registry.c): their lookups trust every publisher. */
static const uid_t tpub_any_publisher[1] = { ABD_PUBLISHER_ANY };
static const struct abd_lookup_opts tpub_trust_any = { .publisher_uids = tpub_any_publisher,
                                                       .n_publisher_uids = 1 };

/* Look the service up and acquire it: 0 and *out, or -errno. */
static inline int tpub_acquire(const char *dir, const char *service, unsigned flags,
                               int64_t timeout_ns, struct abd_acquired **out)
{
	struct abd_registry *reg;
	int r = abd_registry_open(dir, 0, &reg, NULL, 0);
	if (r < 0)
		return r;
	struct abd_record *rec;
	r = abd_registry_lookup_opts(reg, service, &tpub_trust_any, &rec);
	if (r == 0) {
		r = abd_acquire(reg, rec, flags, timeout_ns, out);
		abd_record_free(rec);
	}
	abd_registry_free(reg);
	return r;
}

/* What a consumer child reports through a pipe. */
struct tresult {
	int r;
	int path;
	int fallback;
	pid_t pid;
	uid_t uid;
	gid_t gid;
	int fds_ok; /* the memfd and eventfd work as such */
};

/* Why the last tpub_check_fds_ex of this thread failed ("" when it passed). */
static _Thread_local char tpub_check_why[96];

/* Check that an acquisition's descriptors behave as their kinds say. */
/* poke: write and read the eventfd too (not from several threads at once: they share it) */
static inline int tpub_check_fds_ex(const struct abd_acquired *a, bool poke)
{
	tpub_check_why[0] = 0;
	int ring = abd_acquired_fd(a, "ring"), wake = abd_acquired_fd(a, "wake");
	if (ring < 0 || wake < 0) {
		snprintf(tpub_check_why, sizeof(tpub_check_why), "slots: ring %d, wake %d", ring, wake);
		return 0;
	}
	/* the memfd is a ring the ring layer accepts (every header field validated), and a
	 * message pushed through it comes back */
	struct abd_ring *r;
	int e = abd_ring_attach(ring, -1, NULL, 0, &r);
	if (e < 0) {
		snprintf(tpub_check_why, sizeof(tpub_check_why), "attach: %d", e);
		return 0;
	}
	/* Blocking push and pop: threads checking the same ring at once push and pop beside us.
	 * The head may be a slot another thread has claimed but not yet committed (a try-pop
	 * would say -EAGAIN although our own message is in), and the tail's slot may still be
	 * read by a thread that popped it a lap ago (a try-push would say the ring is full with
	 * four messages in it: seen as "push -11" in CI). Every message is "hi". */
	int pushed = abd_ring_push(r, "hi", 2, 5ll * 1000 * 1000 * 1000), popped = 0;
	char buf[64];
	if (pushed == 0)
		popped = abd_ring_pop(r, buf, sizeof(buf), 5ll * 1000 * 1000 * 1000);
	int ok = pushed == 0 && popped == 2 && memcmp(buf, "hi", 2) == 0;
	if (!ok)
		snprintf(tpub_check_why, sizeof(tpub_check_why), "push %d, pop %d", pushed, popped);
	abd_ring_free(r);
	uint64_t one = 1, got = 0;
	if (ok && poke && !(write(wake, &one, 8) == 8 && read(wake, &got, 8) == 8 && got >= 1)) {
		snprintf(tpub_check_why, sizeof(tpub_check_why), "eventfd poke");
		ok = 0;
	}
	return ok;
}

static inline int tpub_check_fds(const struct abd_acquired *a)
{
	return tpub_check_fds_ex(a, true);
}

#endif
