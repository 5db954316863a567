/* SPDX-License-Identifier: MIT */
/* abd-perf acquire: a full acquisition (lookup done once; abd_acquire with every verification,
 * then free) by each path, beside its bare kernel floor measured in the same rounds:
 *
 *   bare-pidfd-getfd    case acquire: pidfd_open + pidfd_getfd x 2 + close x 3 (the floor of a
 *                       first acquisition, which has no pidfd of the publisher yet); case
 *                       acquire-kept: pidfd_getfd x 2 + close x 2 on a pidfd opened once
 *                       before the round (the floor of a repeat acquisition through a handle
 *                       that keeps the publisher's pidfd). Neither reads the record, takes
 *                       its lock, or checks what it got: no fstat, no seals, no kind, no
 *                       instance.
 *   abd-acquire-pidfd   abd_acquire(ABD_ACQUIRE_PIDFD_GETFD) + abd_acquired_free, again and
 *                       again through one registry handle (case acquire, vs acquire-kept),
 *                       and as the first acquisition through a fresh handle (case
 *                       acquire-first, vs acquire: no cached pidfd of the publisher).
 *                       acquire-first does what a consumer does: open a handle,
 *                       abd_registry_lookup, then abd_acquire on that handle; opening the
 *                       handle and the lookup are not timed, and the lookup leaves the
 *                       record's descriptor in the handle, so the acquisition asks the
 *                       record's lock through it (no openat; its close comes when the handle
 *                       is freed, not timed either). The library shares one verified pidfd
 *                       per publisher among all handles of a process, so no handle outlives
 *                       its subject's samples (see consumer()): a first sample finds no pidfd
 *                       of the publisher anywhere in the process
 *   bare-scm-rights     over a connected socketpair: send a request byte, the publisher
 *                       wakes in poll, answers with 2 fds by SCM_RIGHTS, receive them, close
 *                       them. No connect, no credentials, no policy, no checks of the fds.
 *   abd-acquire-scm     abd_acquire(ABD_ACQUIRE_SCM_RIGHTS) + abd_acquired_free, again and
 *                       again through one registry handle (case acquire: a request and reply on
 *                       the connection the handle kept, SCM_RIGHTS, checks), and as the first
 *                       acquisition through a fresh handle (case acquire-first: connect,
 *                       SO_PEERCRED both ways, the publisher's policy at accept, SCM_RIGHTS,
 *                       checks; opening the handle and the lookup before, as for the pidfd
 *                       row, and freeing the handle, which closes the connection, are not
 *                       timed); both vs bare-scm-rights acquire
 *
 * One publisher process (a ring, its eventfd, the handshake server, and the socketpair
 * responder) serves a consumer child that measures; the consumer is pinned to the first CPU
 * and the publisher to the second (split) or the first (shared), so a handshake's wake-up of
 * the publisher crosses vCPUs or shares one, like the other two-process rows. Each round
 * measures every subject once (iters acquisitions), in the order below in even rounds and
 * backwards in odd ones: each abd row sits next to its floor. After its timed samples each
 * subject makes one more acquisition, untimed, whose syscalls are counted (perf tracepoint;
 * root or CAP_PERFMON, left out otherwise): the rows' syscalls_per_msg. */
#include <abd/abd.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
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
static int publisher(const char *dir, int sp, int stop_r, struct pubinfo *info, int cpu)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (bench_pin(cpu) < 0)
		return 1;
	struct abd_registry *reg;
	struct abd_ring *ring;
	struct abd_acquire_server *srv;
	struct abd_record *rec;
	struct abd_publication *pub;
	uint8_t nonce[16];
	/* two descriptors of two kinds: the ring and an eventfd beside it */
	int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (wake < 0 || getrandom(nonce, sizeof(nonce), 0) != 16 ||
	    abd_registry_open(dir, 0, &reg, NULL, 0) < 0 ||
	    abd_ring_new(64, 256, 0, nonce, &ring) < 0 ||
	    abd_acquire_server_new(reg, 0, &srv) < 0 || abd_record_new("bench.acquire", &rec) < 0 ||
	    abd_record_set_instance(rec, nonce) < 0 ||
	    abd_record_add_fd(rec, "ring", abd_ring_fd(ring), ABD_FD_MEMFD) < 0 ||
	    abd_record_add_fd(rec, "wake", wake, ABD_FD_EVENTFD) < 0 ||
	    abd_record_set_socket(rec, abd_acquire_server_socket(srv)) < 0 ||
	    abd_publish(reg, rec, &pub) < 0 || abd_acquire_server_serve(srv, abd_publication_record(pub)) < 0)
		return 1;
	info->memfd = abd_ring_fd(ring);
	info->evfd = wake;
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

/* The measuring order of a round (backwards in odd rounds): each abd row next to its floor. */
enum subject { BARE_PIDFD_KEPT, ABD_PIDFD, ABD_PIDFD_FIRST, BARE_PIDFD, BARE_SCM, ABD_SCM,
	       ABD_SCM_FIRST, NSUBJECTS };

static const struct {
	const char *subject, *case_name;
	int baseline; /* the subject's floor, -1 for a floor */
} subjects[NSUBJECTS] = {
	[BARE_PIDFD_KEPT] = { "bare-pidfd-getfd", "acquire-kept", -1 },
	[ABD_PIDFD] = { "abd-acquire-pidfd", "acquire", BARE_PIDFD_KEPT },
	[ABD_PIDFD_FIRST] = { "abd-acquire-pidfd", "acquire-first", BARE_PIDFD },
	[BARE_PIDFD] = { "bare-pidfd-getfd", "acquire", -1 },
	[BARE_SCM] = { "bare-scm-rights", "acquire", -1 },
	[ABD_SCM] = { "abd-acquire-scm", "acquire", BARE_SCM },
	[ABD_SCM_FIRST] = { "abd-acquire-scm", "acquire-first", BARE_SCM },
};

/* pidfd_getfd x 2 and their closes through pfd; pidfd_open and its close too when pfd < 0. */
static int one_bare_pidfd(const struct pubinfo *info, int kept)
{
	int pfd = kept >= 0 ? kept : abd__pidfd_open(info->pid, 0);
	if (pfd < 0)
		return pfd;
	int a = abd__pidfd_getfd(pfd, info->memfd, 0), b = abd__pidfd_getfd(pfd, info->evfd, 0);
	int r = a < 0 ? a : b < 0 ? b : 0;
	if (a >= 0)
		close(a);
	if (b >= 0)
		close(b);
	if (kept < 0)
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

/* One acquisition of subject s, timed from just before to just after the call: pidfd_getfd
 * or the handshake with every check, and the free of what it acquired. reg/rec: the repeat
 * rows' handle (kept across the subject's samples); fresh/frec: the first rows' handle, made
 * for this one sample. kept: the acquire-kept floor's pidfd. */
static int one_sample(int s, const struct pubinfo *info, int sp, int kept, struct abd_registry *reg,
                      struct abd_record *rec, struct abd_registry *fresh, struct abd_record *frec,
                      uint64_t *ns)
{
	uint64_t t0 = bench_now_ns();
	int r;
	struct abd_acquired *a = NULL;
	switch (s) {
	case BARE_PIDFD: r = one_bare_pidfd(info, -1); break;
	case BARE_PIDFD_KEPT: r = one_bare_pidfd(info, kept); break;
	case BARE_SCM: r = one_bare_scm(sp); break;
	case ABD_PIDFD: r = abd_acquire(reg, rec, ABD_ACQUIRE_PIDFD_GETFD, -1, &a); break;
	case ABD_PIDFD_FIRST: r = abd_acquire(fresh, frec, ABD_ACQUIRE_PIDFD_GETFD, -1, &a); break;
	case ABD_SCM_FIRST: r = abd_acquire(fresh, frec, ABD_ACQUIRE_SCM_RIGHTS, -1, &a); break;
	default: r = abd_acquire(reg, rec, ABD_ACQUIRE_SCM_RIGHTS, -1, &a); break;
	}
	abd_acquired_free(a);
	*ns = bench_now_ns() - t0;
	return r;
}

/* The consumer child: `rounds` rounds, each measuring every subject in turn; samples into
 * shm at [round][subject][i], and per round and subject the syscalls of one more acquisition
 * (untimed, counted with the tracepoint tp when it is > 0; -1 when not counted).
 *
 * What "first" means here: the library keeps a verified pidfd per publisher process for the
 * whole consumer process (a table the registry handles' entries hold references to, the
 * pidfd closed with the last one: docs/acquire.md), and a handle keeps its handshake
 * connection. So no handle outlives the samples of its subject: the repeat rows open theirs
 * before their warm-up and free it after their last sample, and each first-row sample opens
 * a fresh handle (and looks the record up) untimed, acquires, and frees it untimed. When a
 * first-row sample runs, nothing in this process refers to the publisher: its acquisition
 * opens the pidfd, checks identity, uid and lock, exactly as a consumer's first one does
 * (the counted syscalls show it: docs/perf.md, the acquire table). */
static int consumer(const char *dir, int sp, const struct pubinfo *info, uint64_t iters,
                    unsigned rounds, int cpu, uint64_t *samples, int64_t *calls, int *errs, int tp)
{
	if (bench_pin(cpu) < 0)
		return 1;
	uint64_t warm = bench_warmup(iters);
	for (int s = 0; s < NSUBJECTS; s++)
		errs[s] = 0;
	for (unsigned k = 0; k < rounds; k++) {
		for (int j = 0; j < NSUBJECTS; j++) {
			int s = k % 2 ? NSUBJECTS - 1 - j : j;
			calls[k * NSUBJECTS + (unsigned)s] = -1;
			if (errs[s])
				continue;
			bool first = s == ABD_PIDFD_FIRST || s == ABD_SCM_FIRST;
			bool repeat = s == ABD_PIDFD || s == ABD_SCM;
			/* the kept pidfd of the acquire-kept floor, the repeat rows' handle: made before
			 * the subject's samples, untimed */
			int kept = s == BARE_PIDFD_KEPT ? abd__pidfd_open(info->pid, 0) : -1;
			if (s == BARE_PIDFD_KEPT && kept < 0) {
				errs[s] = kept;
				continue;
			}
			struct abd_registry *reg = NULL;
			struct abd_record *rec = NULL;
			int e;
			if (repeat && ((e = abd_registry_open(dir, 0, &reg, NULL, 0)) < 0 ||
			               (e = abd_registry_lookup(reg, "bench.acquire", &rec)) < 0)) {
				abd_registry_free(reg);
				errs[s] = e;
				continue;
			}
			uint64_t *out = samples + ((uint64_t)k * NSUBJECTS + (uint64_t)s) * iters;
			/* warm-up, timed samples, then one counted sample */
			for (uint64_t i = 0; i < warm + iters + 1; i++) {
				bool count = i == warm + iters;
				if (count && tp <= 0)
					break;
				struct abd_registry *fresh = NULL;
				struct abd_record *frec = NULL;
				if (first && ((e = abd_registry_open(dir, 0, &fresh, NULL, 0)) < 0 ||
				              (e = abd_registry_lookup(fresh, "bench.acquire", &frec)) < 0)) {
					abd_registry_free(fresh);
					errs[s] = e;
					break;
				}
				int cfd = count ? bench_syscalls_open(tp) : -1;
				uint64_t ns;
				int r = one_sample(s, info, sp, kept, reg, rec, fresh, frec, &ns);
				if (count)
					calls[k * NSUBJECTS + (unsigned)s] = bench_syscalls_read(cfd);
				if (cfd >= 0)
					close(cfd);
				abd_record_free(frec);
				abd_registry_free(fresh);
				if (r < 0) {
					errs[s] = r;
					break;
				}
				if (i >= warm && !count)
					out[i - warm] = ns;
			}
			if (kept >= 0)
				close(kept);
			abd_record_free(rec);
			abd_registry_free(reg);
		}
	}
	return 0;
}

static void acquire_rows(const char *cpus, uint64_t iters, unsigned rounds)
{
	struct bench_row tmpl = { .subject = NULL, .case_name = "acquire", .cpus = cpus };
	int cpu[2];
	const char *why = NULL;
	int e = bench_cpus(cpus, &cpu[0], &cpu[1], &why);
	char dir[] = "/dev/shm/abd-perf-acquire-XXXXXX";
	if (e < 0 || !mkdtemp(dir)) {
		for (int s = 0; s < NSUBJECTS; s++) {
			tmpl.subject = subjects[s].subject;
			tmpl.case_name = subjects[s].case_name;
			bench_skip(&tmpl, "%s", e < 0 ? (why ? why : strerror(-e)) : strerror(errno));
		}
		return;
	}
	size_t nsamples = (size_t)rounds * NSUBJECTS * iters;
	/* the publisher's info, the consumer's errors, then its syscall counts and the samples at
	 * an 8-byte boundary */
	size_t head = (sizeof(struct pubinfo) + sizeof(int) * NSUBJECTS + 7) & ~(size_t)7;
	size_t ncalls = (size_t)rounds * NSUBJECTS;
	size_t shm_size = head + sizeof(int64_t) * ncalls + sizeof(uint64_t) * nsamples;
	int tp = bench_syscall_tracepoint(); /* looked up here: it forks a helper */
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
	int64_t *calls = (int64_t *)(void *)((char *)shm + head);
	uint64_t *samples = (uint64_t *)(calls + ncalls);
	fflush(NULL);
	pid_t pub = fork();
	if (pub == 0) {
		close(stop[1]);
		close(sp[1]);
		_exit(publisher(dir, sp[0], stop[0], info, cpu[1]));
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
			_exit(consumer(dir, sp[1], info, iters, rounds, cpu[0], samples, calls, errs, tp));
		}
		waitpid(c, &status, 0);
	}
	close(stop[1]);
	close(sp[1]);
	waitpid(pub, NULL, 0);

	/* per round and subject: one row of figures (or the reason it has none) */
	static struct bench_row per[NSUBJECTS][BENCH_ROUNDS_MAX];
	for (int s = 0; s < NSUBJECTS; s++) {
		for (unsigned k = 0; k < rounds; k++) {
			struct bench_row *r = &per[s][k];
			*r = tmpl;
			r->subject = subjects[s].subject;
			r->case_name = subjects[s].case_name;
			if (status != 0) {
				r->skipped = bench_reason("publisher or consumer failed (status %d)", status);
			} else if (errs[s] < 0) {
				r->skipped = bench_reason("%s", strerror(-errs[s]));
			} else {
				struct bench_stats st;
				bench_stats(samples + ((uint64_t)k * NSUBJECTS + (uint64_t)s) * iters, iters, &st);
				bench_row_latency(r, &st);
				int64_t n = calls[k * NSUBJECTS + (unsigned)s];
				if (n >= 0) {
					r->has_syscalls = true;
					r->syscalls_per_msg = (double)n;
				}
			}
		}
	}
	for (int s = 0; s < NSUBJECTS; s++) {
		int b = subjects[s].baseline;
		if (b < 0)
			continue;
		struct bench_row row = per[s][0];
		row.skipped = NULL;
		row.baseline = subjects[b].subject;
		row.baseline_case = subjects[b].case_name;
		bench_emit_versus(&row, per[s], per[b], rounds);
	}
	munmap(shm, shm_size);
	rmdir(dir); /* the publisher withdrew its record and unlinked its socket */
}

void bench_acquire(void)
{
	uint64_t iters = bench_iters(5000, 300);
	unsigned rounds = bench_rounds();
	static const char *const modes[] = { BENCH_SPLIT, BENCH_SHARED };
	for (int m = 0; m < 2; m++)
		acquire_rows(modes[m], iters, rounds);
}
