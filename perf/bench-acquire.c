/* SPDX-License-Identifier: MIT */
/* abd-perf acquire: a full acquisition (lookup done once; abd_acquire with every verification,
 * then free) by each path, beside its bare kernel floor measured in the same run:
 *
 *   bare-pidfd-getfd    pidfd_open + pidfd_getfd x 2 + close x 3
 *   abd-acquire-pidfd   abd_acquire(ABD_ACQUIRE_PIDFD_GETFD) + abd_acquired_free, again and
 *                       again through one registry handle (case acquire), and as the first
 *                       acquisition through a fresh handle (case acquire-first: no cached
 *                       pidfd of the publisher). acquire-first does what a consumer does:
 *                       open a handle, abd_registry_lookup, then abd_acquire on that handle;
 *                       opening the handle and the lookup are not timed, and the lookup
 *                       leaves the record's descriptor in the handle, so the acquisition asks
 *                       the record's lock through it (no openat; its close comes when the
 *                       handle is freed, not timed either)
 *   bare-scm-rights     over a connected socketpair: send a request byte, the publisher
 *                       answers with 2 fds by SCM_RIGHTS, receive them, close them
 *   abd-acquire-scm     abd_acquire(ABD_ACQUIRE_SCM_RIGHTS) + abd_acquired_free, again and
 *                       again through one registry handle (case acquire: a request and reply on
 *                       the connection the handle kept, SCM_RIGHTS, checks), and as the first
 *                       acquisition through a fresh handle (case acquire-first: connect,
 *                       SO_PEERCRED both ways, the publisher's policy at accept, SCM_RIGHTS,
 *                       checks; opening the handle and the lookup before, as for the pidfd
 *                       row, and freeing the handle, which closes the connection, are not
 *                       timed)
 *
 * One publisher process (a ring, its eventfd, the handshake server, and the socketpair
 * responder) serves a consumer child that measures; case "acquire", no CPU pinning (the
 * handshake's cost is mostly syscalls on the consumer side and one wake-up of the publisher). */
#include <abd/abd.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "compat/kernel.h"
#include "perf/bench.h"

struct pubinfo {
	pid_t pid;
	int memfd, evfd; /* numbers in the publisher */
	int ok;
};

/* The publisher: serves the handshake and the bare socketpair until stop_r reaches EOF. */
static int publisher(const char *dir, int sp, int stop_r, struct pubinfo *info)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	struct abd_registry *reg;
	struct abd_ring *ring;
	struct abd_acquire_server *srv;
	struct abd_record *rec;
	struct abd_publication *pub;
	uint8_t nonce[16];
	if (getrandom(nonce, sizeof(nonce), 0) != 16 || abd_registry_open(dir, 0, &reg, NULL, 0) < 0 ||
	    abd_ring_new(64, 256, 0, nonce, &ring) < 0 || abd_ring_wait_fd(ring) < 0 ||
	    abd_acquire_server_new(reg, 0, &srv) < 0 || abd_record_new("bench.acquire", &rec) < 0 ||
	    abd_record_set_instance(rec, nonce) < 0 ||
	    abd_record_add_fd(rec, "ring", abd_ring_fd(ring), ABD_FD_MEMFD) < 0 ||
	    abd_record_add_fd(rec, "wake", abd_ring_wait_fd(ring), ABD_FD_EVENTFD) < 0 ||
	    abd_record_set_socket(rec, abd_acquire_server_socket(srv)) < 0 ||
	    abd_publish(reg, rec, &pub) < 0 || abd_acquire_server_serve(srv, abd_publication_record(pub)) < 0)
		return 1;
	info->memfd = abd_ring_fd(ring);
	info->evfd = abd_ring_wait_fd(ring);
	__atomic_store_n(&info->ok, 1, __ATOMIC_RELEASE);
	int fds[2] = { info->memfd, info->evfd };
	for (;;) {
		struct pollfd p[3] = { { stop_r, POLLIN, 0 }, { abd_acquire_server_fd(srv), POLLIN, 0 },
		                       { sp, POLLIN, 0 } };
		if (poll(p, 3, 100) < 0 && errno != EINTR)
			break;
		if (p[0].revents)
			break;
		if (p[1].revents)
			abd_acquire_server_process(srv);
		else if (abd_acquire_server_deadline(srv) >= 0)
			abd_acquire_server_process(srv);
		if (p[2].revents) {
			char c;
			if (read(sp, &c, 1) != 1)
				break;
			union {
				struct cmsghdr h;
				char b[CMSG_SPACE(sizeof(fds))];
			} ctl;
			memset(&ctl, 0, sizeof(ctl));
			struct iovec iov = { &c, 1 };
			struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
			                    .msg_controllen = sizeof(ctl.b) };
			struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(fds));
			memcpy(CMSG_DATA(cm), fds, sizeof(fds));
			if (sendmsg(sp, &m, MSG_NOSIGNAL) < 0)
				break;
		}
	}
	abd_acquire_server_free(srv);
	abd_withdraw(pub);
	abd_record_free(rec);
	abd_ring_free(ring);
	abd_registry_free(reg);
	return 0;
}

enum subject { BARE_PIDFD, ABD_PIDFD, ABD_PIDFD_FIRST, BARE_SCM, ABD_SCM, ABD_SCM_FIRST,
	       NSUBJECTS };

static const char *const names[NSUBJECTS] = { "bare-pidfd-getfd", "abd-acquire-pidfd",
	                                          "abd-acquire-pidfd", "bare-scm-rights",
	                                          "abd-acquire-scm",  "abd-acquire-scm" };
static const char *const cases[NSUBJECTS] = { "acquire", "acquire", "acquire-first", "acquire",
	                                          "acquire", "acquire-first" };

static int one_bare_pidfd(const struct pubinfo *info)
{
	int pfd = abd__pidfd_open(info->pid, 0);
	if (pfd < 0)
		return pfd;
	int a = abd__pidfd_getfd(pfd, info->memfd, 0), b = abd__pidfd_getfd(pfd, info->evfd, 0);
	int r = a < 0 ? a : b < 0 ? b : 0;
	if (a >= 0)
		close(a);
	if (b >= 0)
		close(b);
	close(pfd);
	return r;
}

static int one_bare_scm(int sp)
{
	char c = 1;
	if (write(sp, &c, 1) != 1)
		return -errno;
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int) * 2)];
	} ctl;
	struct iovec iov = { &c, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
	                    .msg_controllen = sizeof(ctl.b) };
	if (recvmsg(sp, &m, MSG_CMSG_CLOEXEC) != 1)
		return -EIO;
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	if (!cm || cm->cmsg_type != SCM_RIGHTS || (m.msg_flags & MSG_CTRUNC))
		return -EPROTO;
	int fds[2];
	memcpy(fds, CMSG_DATA(cm), sizeof(fds));
	close(fds[0]);
	close(fds[1]);
	return 0;
}

/* The consumer child: measures every subject in turn, samples into shm. */
static int consumer(const char *dir, int sp, const struct pubinfo *info, uint64_t iters,
                    uint64_t *samples, int *errs)
{
	struct abd_registry *reg;
	struct abd_record *rec;
	if (abd_registry_open(dir, 0, &reg, NULL, 0) < 0 ||
	    abd_registry_lookup(reg, "bench.acquire", &rec) < 0)
		return 1;
	uint64_t warm = bench_warmup(iters);
	for (int s = 0; s < NSUBJECTS; s++) {
		errs[s] = 0;
		for (uint64_t i = 0; i < warm + iters; i++) {
			/* first acquisition from this publisher through this handle: a fresh handle
			 * (opened and freed outside the timed part) has no pidfd of it yet */
			struct abd_registry *fresh = NULL;
			struct abd_record *frec = NULL;
			if ((s == ABD_PIDFD_FIRST || s == ABD_SCM_FIRST) &&
			    (abd_registry_open(dir, 0, &fresh, NULL, 0) < 0 ||
			     abd_registry_lookup(fresh, "bench.acquire", &frec) < 0)) {
				abd_registry_free(fresh);
				errs[s] = -EIO;
				break;
			}
			uint64_t t0 = bench_now_ns();
			int r;
			struct abd_acquired *a = NULL;
			switch (s) {
			case BARE_PIDFD: r = one_bare_pidfd(info); break;
			case BARE_SCM: r = one_bare_scm(sp); break;
			case ABD_PIDFD:
				r = abd_acquire(reg, rec, ABD_ACQUIRE_PIDFD_GETFD, -1, &a);
				abd_acquired_free(a);
				break;
			case ABD_PIDFD_FIRST:
				r = abd_acquire(fresh, frec, ABD_ACQUIRE_PIDFD_GETFD, -1, &a);
				abd_acquired_free(a);
				break;
			case ABD_SCM_FIRST:
				r = abd_acquire(fresh, frec, ABD_ACQUIRE_SCM_RIGHTS, -1, &a);
				abd_acquired_free(a);
				break;
			default:
				r = abd_acquire(reg, rec, ABD_ACQUIRE_SCM_RIGHTS, -1, &a);
				abd_acquired_free(a);
				break;
			}
			uint64_t t1 = bench_now_ns();
			abd_record_free(frec);
			abd_registry_free(fresh);
			if (r < 0) {
				errs[s] = r;
				break;
			}
			if (i >= warm)
				samples[(uint64_t)s * iters + (i - warm)] = t1 - t0;
		}
	}
	abd_record_free(rec);
	abd_registry_free(reg);
	return 0;
}

void bench_acquire(void)
{
	uint64_t iters = bench_iters(5000, 300);
	struct bench_row tmpl = { .subject = NULL, .case_name = "acquire", .iters = iters };
	char dir[] = "/dev/shm/abd-perf-acquire-XXXXXX";
	if (!mkdtemp(dir)) {
		for (int s = 0; s < NSUBJECTS; s++) {
			tmpl.subject = names[s];
			bench_skip(&tmpl, "mkdtemp: %s", strerror(errno));
		}
		return;
	}
	size_t shm_size = sizeof(struct pubinfo) + sizeof(int) * NSUBJECTS +
	                  sizeof(uint64_t) * NSUBJECTS * iters;
	void *shm = mmap(NULL, shm_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int sp[2], stop[2];
	if (shm == MAP_FAILED || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0 ||
	    pipe2(stop, O_CLOEXEC) < 0) {
		bench_failures++;
		rmdir(dir);
		return;
	}
	struct pubinfo *info = shm;
	int *errs = (int *)(info + 1);
	uint64_t *samples = (uint64_t *)(errs + NSUBJECTS);
	fflush(NULL);
	pid_t pub = fork();
	if (pub == 0) {
		close(stop[1]);
		close(sp[1]);
		_exit(publisher(dir, sp[0], stop[0], info));
	}
	close(stop[0]);
	close(sp[0]);
	info->pid = pub;
	for (int i = 0; i < 5000 && !__atomic_load_n(&info->ok, __ATOMIC_ACQUIRE); i++)
		usleep(1000);
	int status = -1;
	if (__atomic_load_n(&info->ok, __ATOMIC_ACQUIRE)) {
		pid_t c = fork();
		if (c == 0) {
			close(stop[1]);
			_exit(consumer(dir, sp[1], info, iters, samples, errs));
		}
		waitpid(c, &status, 0);
	}
	close(stop[1]);
	close(sp[1]);
	waitpid(pub, NULL, 0);
	for (int s = 0; s < NSUBJECTS; s++) {
		struct bench_row row = tmpl;
		row.subject = names[s];
		row.case_name = cases[s];
		if (s == ABD_PIDFD || s == ABD_PIDFD_FIRST) {
			row.baseline = names[BARE_PIDFD];
			row.baseline_case = cases[BARE_PIDFD];
		}
		if (s == ABD_SCM || s == ABD_SCM_FIRST) {
			row.baseline = names[BARE_SCM];
			row.baseline_case = cases[BARE_SCM];
		}
		if (status != 0) {
			bench_skip(&row, "publisher or consumer failed (status %d)", status);
			continue;
		}
		if (errs[s] < 0) {
			bench_skip(&row, "%s", strerror(-errs[s]));
			continue;
		}
		struct bench_stats st;
		bench_stats(samples + (uint64_t)s * iters, iters, &st);
		bench_row_latency(&row, &st);
		bench_emit(&row);
	}
	munmap(shm, shm_size);
	rmdir(dir); /* the publisher withdrew its record and unlinked its socket */
}
