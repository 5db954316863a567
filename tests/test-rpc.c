/* SPDX-License-Identifier: MIT */
/* Request-response below the service layer (runtime/rpc.c), across real processes: a server
 * process (the request ring's single consumer and the only writer of the response file) and
 * client processes that receive the two descriptors over a socket, as the handshake would
 * hand them. Every caller gets exactly its own answers; a deadline gives -ETIMEDOUT and the
 * late answer reaches nobody; a client killed mid-call frees its mailbox for the next one; a
 * hostile client can neither write the response file nor get its forged answers delivered,
 * nor make anybody hang. Children die with the test (PR_SET_PDEATHSIG); a watchdog alarm turns
 * a hang into a failure. */
#include <abd/ring.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/futex.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "runtime/rpc-internal.h"

#define WATCHDOG_S 120
#define REQ_MAX 256
#define RESP_MAX 512
#define MS 1000000ll

static void watchdog(void)
{
	alarm(WATCHDOG_S);
}

static void child_setup(void)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static void *shared_alloc(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(p, MAP_FAILED);
	return p;
}

static int send_fds(int sock, int a, int b)
{
	char dummy = 'x';
	struct iovec iov = { &dummy, 1 };
	union {
		char buf[CMSG_SPACE(2 * sizeof(int))];
		struct cmsghdr align;
	} u;
	memset(&u, 0, sizeof(u));
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
	                     .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(2 * sizeof(int));
	int fds[2] = { a, b };
	memcpy(CMSG_DATA(cm), fds, sizeof(fds));
	return sendmsg(sock, &mh, MSG_NOSIGNAL) == 1 ? 0 : -1;
}

static int recv_fds(int sock, int *a, int *b)
{
	char dummy;
	struct iovec iov = { &dummy, 1 };
	union {
		char buf[CMSG_SPACE(2 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
	                     .msg_controllen = sizeof(u.buf) };
	if (recvmsg(sock, &mh, MSG_CMSG_CLOEXEC) != 1)
		return -1;
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	if (!cm || cm->cmsg_type != SCM_RIGHTS || cm->cmsg_len != CMSG_LEN(2 * sizeof(int)))
		return -1;
	int fds[2];
	memcpy(fds, CMSG_DATA(cm), sizeof(fds));
	*a = fds[0];
	*b = fds[1];
	return 0;
}

/* ---- the server process ---- */

struct server_stats {
	uint64_t served, bad, stale, fds_at_start, fds_now;
	int ready;
};

struct server_args {
	int sock;
	uint32_t cells;
	struct server_stats *st;
};

/* The answer to a request: "R:" + the request. A request "slow..." is answered after 300 ms. */
static size_t answer(const char *req, size_t n, char *out)
{
	memcpy(out, "R:", 2);
	memcpy(out + 2, req, n);
	return n + 2;
}

static int count_fds(void)
{
	return abd_test_count_fds();
}

static int server_main(void *arg)
{
	struct server_args *a = arg;
	child_setup();
	struct abd_ring *ring;
	struct abd__rpc_server *s;
	if (abd_ring_new(64, ABD__RPC_REQ_HDR + REQ_MAX, ABD_RING_CONSUMER | ABD_RING_SINGLE_CONSUMER,
	                 NULL, &ring) < 0)
		return 10;
	if (abd__rpc_server_new(ring, a->cells, RESP_MAX, &s) < 0)
		return 11;
	if (send_fds(a->sock, abd_ring_fd(ring), abd__rpc_server_fd(s)) < 0)
		return 12;
	close(a->sock);
	a->st->fds_at_start = (uint64_t)count_fds();
	__atomic_store_n(&a->st->ready, 1, __ATOMIC_RELEASE);
	char req[REQ_MAX], resp[RESP_MAX];
	for (;;) {
		uint64_t token;
		int n = abd__rpc_take(s, req, sizeof(req), &token);
		if (n == -EAGAIN) {
			uint32_t v;
			int64_t tmo;
			int p = abd_ring_wait_prepare(ring, ABD_RING_WAIT_DATA, &v, &tmo);
			if (p == 0) {
				struct timespec ts = { 0, 100 * MS };
				if (tmo >= 0 && tmo < 100 * MS)
					ts.tv_nsec = (long)tmo;
				syscall(SYS_futex, abd_ring_futex(ring, ABD_RING_WAIT_DATA), FUTEX_WAIT, v, &ts,
				        NULL, 0);
			}
			abd_ring_wait_finish(ring, ABD_RING_WAIT_DATA);
			continue;
		}
		abd__rpc_server_counts(s, &a->st->bad, &a->st->stale);
		if (n < 0)
			continue; /* a malformed request: dropped, counted */
		if (n >= 4 && memcmp(req, "slow", 4) == 0)
			usleep(300 * 1000);
		size_t m = answer(req, (size_t)n, resp);
		(void)abd__rpc_reply(s, token, resp, m, 0);
		a->st->served++;
		abd__rpc_server_counts(s, &a->st->bad, &a->st->stale);
		a->st->fds_now = (uint64_t)count_fds();
	}
}

struct server {
	pid_t pid;
	int ring_fd, resp_fd;
	struct server_stats *st;
};

static struct server server_start(uint32_t cells)
{
	struct server sv = { 0 };
	int sp[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp), 0);
	sv.st = shared_alloc(sizeof(*sv.st));
	struct server_args a = { .sock = sp[1], .cells = cells, .st = sv.st };
	sv.pid = abd_test_fork(server_main, &a);
	close(sp[1]);
	cr_assert_eq(recv_fds(sp[0], &sv.ring_fd, &sv.resp_fd), 0, "the server sent its descriptors");
	close(sp[0]);
	while (!__atomic_load_n(&sv.st->ready, __ATOMIC_ACQUIRE))
		usleep(1000);
	return sv;
}

static void server_stop(struct server *sv)
{
	if (sv->pid > 0) {
		kill(sv->pid, SIGKILL);
		abd_test_wait(sv->pid);
	}
	close(sv->ring_fd);
	close(sv->resp_fd);
	munmap(sv->st, sizeof(*sv->st));
}

struct client {
	struct abd_ring *ring;
	struct abd__rpc_client *c;
};

static int client_open(const struct server *sv, struct client *cl)
{
	int e = abd_ring_attach(sv->ring_fd, -1, NULL, ABD_RING_PRODUCER, &cl->ring);
	if (e < 0)
		return e;
	e = abd__rpc_client_new(cl->ring, sv->resp_fd, &cl->c);
	if (e < 0)
		abd_ring_free(cl->ring);
	return e;
}

static void client_close(struct client *cl)
{
	abd__rpc_client_free(cl->c);
	abd_ring_free(cl->ring);
}

static int64_t deadline_in(int64_t ns)
{
	return (int64_t)abd_test_now_ns() + ns;
}

/* send, retrying while the ring is full */
static int send_req(struct client *cl, const void *data, size_t len, uint64_t *ticket)
{
	for (int i = 0; i < 10000; i++) {
		int e = abd__rpc_send(cl->c, data, len, ticket);
		if (e != -EAGAIN)
			return e;
		usleep(100);
	}
	return -EAGAIN;
}

/* ---- many callers at once: each gets exactly its own answers ---- */

#define NCLIENTS 8
#define IN_FLIGHT 4

struct caller_args {
	const struct server *sv;
	unsigned id, calls;
};

static int caller_main(void *arg)
{
	struct caller_args *a = arg;
	child_setup();
	struct client cl;
	if (client_open(a->sv, &cl) < 0)
		return 10;
	char req[IN_FLIGHT][64], resp[RESP_MAX], want[RESP_MAX];
	uint64_t t[IN_FLIGHT];
	size_t len[IN_FLIGHT];
	for (unsigned i = 0; i < a->calls; i += IN_FLIGHT) {
		unsigned k = a->calls - i < IN_FLIGHT ? a->calls - i : IN_FLIGHT;
		for (unsigned j = 0; j < k; j++) {
			len[j] = (size_t)snprintf(req[j], sizeof(req[j]), "client %u call %u pid %d", a->id,
			                          i + j, (int)getpid());
			if (send_req(&cl, req[j], len[j], &t[j]) < 0)
				return 11;
		}
		/* collect in reverse order: answers sit in their cells until asked for */
		for (unsigned j = k; j-- > 0;) {
			int n = abd__rpc_wait(cl.c, t[j], resp, sizeof(resp), deadline_in(10000 * MS), NULL,
			                      NULL);
			size_t m = answer(req[j], len[j], want);
			if (n < 0)
				return 12;
			if ((size_t)n != m || memcmp(resp, want, m) != 0)
				return 13; /* somebody else's answer, or a torn one */
		}
	}
	if (abd__rpc_in_flight(cl.c) != 0)
		return 14;
	client_close(&cl);
	return 0;
}

ABD_TEST(rpc, many_callers_each_get_exactly_their_own_answers)
{
	watchdog();
	struct server sv = server_start(0);
	unsigned calls = (unsigned)abd_test_scaled(2000, 100);
	pid_t pids[NCLIENTS];
	struct caller_args args[NCLIENTS];
	for (unsigned i = 0; i < NCLIENTS; i++) {
		args[i] = (struct caller_args){ &sv, i, calls };
		pids[i] = abd_test_fork(caller_main, &args[i]);
	}
	for (unsigned i = 0; i < NCLIENTS; i++)
		cr_expect_eq(abd_test_wait_within(pids[i], 90000 * MS), 0, "caller %u", i);
	/* the server counts an answer after writing it: the last count may follow the last answer */
	for (int i = 0; i < 1000 && __atomic_load_n(&sv.st->served, __ATOMIC_ACQUIRE) <
	                                (uint64_t)NCLIENTS * calls; i++)
		usleep(1000);
	cr_expect_eq(sv.st->served, (uint64_t)NCLIENTS * calls);
	cr_expect_eq(sv.st->bad, 0);
	cr_expect_eq(sv.st->stale, 0);
	server_stop(&sv);
}

/* ---- deadlines: -ETIMEDOUT in time, and the late answer reaches no later call ---- */

ABD_TEST(rpc, a_deadline_gives_etimedout_and_the_late_answer_reaches_nobody)
{
	watchdog();
	/* one cell per mailbox: the next call reuses the cell of the abandoned one */
	struct server sv = server_start(1);
	struct client cl;
	cr_assert_eq(client_open(&sv, &cl), 0);
	char resp[RESP_MAX];
	uint64_t t;
	cr_assert_eq(abd__rpc_send(cl.c, "slow first", 10, &t), 0);
	uint64_t t0 = abd_test_now_ns();
	int n = abd__rpc_wait(cl.c, t, resp, sizeof(resp), deadline_in(100 * MS), NULL, NULL);
	uint64_t took = abd_test_now_ns() - t0;
	cr_expect_eq(n, -ETIMEDOUT);
	cr_expect(took >= 100 * MS && took < 600 * MS, "the deadline held: %llu ms",
	          (unsigned long long)(took / MS));
	cr_expect_eq(abd__rpc_in_flight(cl.c), 0, "the abandoned call is no longer in flight");
	cr_expect_eq(abd__rpc_poll(cl.c, t, resp, sizeof(resp)), -EINVAL);
	/* the next call, in the same cell, waits while the slow answer lands there first */
	uint64_t t2;
	cr_assert_eq(abd__rpc_send(cl.c, "second", 6, &t2), 0);
	n = abd__rpc_wait(cl.c, t2, resp, sizeof(resp), deadline_in(5000 * MS), NULL, NULL);
	cr_assert_eq(n, 8, "got %d", n);
	cr_expect_eq(memcmp(resp, "R:second", 8), 0, "the second call got the late answer: %.*s", n,
	             resp);
	/* once more, with the late answer already sitting in the cell */
	cr_assert_eq(abd__rpc_send(cl.c, "slow third", 10, &t), 0);
	cr_expect_eq(abd__rpc_wait(cl.c, t, resp, sizeof(resp), deadline_in(50 * MS), NULL, NULL),
	             -ETIMEDOUT);
	usleep(400 * 1000); /* the answer lands in the cell */
	cr_assert_eq(abd__rpc_send(cl.c, "fourth", 6, &t2), 0);
	n = abd__rpc_wait(cl.c, t2, resp, sizeof(resp), deadline_in(5000 * MS), NULL, NULL);
	cr_assert_eq(n, 8, "got %d", n);
	cr_expect_eq(memcmp(resp, "R:fourth", 8), 0, "got %.*s", n, resp);
	client_close(&cl);
	server_stop(&sv);
}

/* ---- a client killed mid-call frees its mailbox ---- */

struct victim_args {
	const struct server *sv;
	int *slot;
};

static int dying_caller(void *arg)
{
	struct victim_args *a = arg;
	child_setup();
	struct client cl;
	if (client_open(a->sv, &cl) < 0)
		return 10;
	*a->slot = (int)abd__rpc_slot(cl.c);
	uint64_t t;
	if (abd__rpc_send(cl.c, "slow from the dead", 18, &t) < 0)
		return 11;
	char resp[RESP_MAX];
	(void)abd__rpc_wait(cl.c, t, resp, sizeof(resp), -1, NULL, NULL);
	return 12; /* killed before the answer */
}

ABD_TEST(rpc, a_client_killed_mid_call_frees_its_mailbox)
{
	watchdog();
	struct server sv = server_start(1);
	int *slot = shared_alloc(sizeof(int));
	*slot = -1;
	struct victim_args va = { &sv, slot };
	pid_t p = abd_test_fork(dying_caller, &va);
	while (__atomic_load_n(slot, __ATOMIC_ACQUIRE) < 0)
		usleep(1000);
	usleep(50 * 1000); /* the server is inside the slow answer now */
	kill(p, SIGKILL);
	cr_expect_eq(abd_test_wait(p), 128 + SIGKILL);
	/* the next client takes the dead one's mailbox, while its late answer is still due */
	struct client cl;
	cr_assert_eq(client_open(&sv, &cl), 0);
	cr_expect_eq((int)abd__rpc_slot(cl.c), *slot, "the dead client's mailbox is free again");
	char resp[RESP_MAX];
	for (int i = 0; i < 20; i++) {
		char req[32];
		int len = snprintf(req, sizeof(req), "after %d", i);
		uint64_t t;
		cr_assert_eq(abd__rpc_send(cl.c, req, (size_t)len, &t), 0);
		int n = abd__rpc_wait(cl.c, t, resp, sizeof(resp), deadline_in(5000 * MS), NULL, NULL);
		cr_assert_eq(n, len + 2, "call %d: %d", i, n);
		cr_assert_eq(memcmp(resp + 2, req, (size_t)len), 0, "call %d got %.*s", i, n, resp);
	}
	for (int i = 0; i < 1000 && __atomic_load_n(&sv.st->served, __ATOMIC_ACQUIRE) < 21; i++)
		usleep(1000); /* the count follows the last answer */
	cr_expect_eq(sv.st->served, 21);
	cr_expect_eq(sv.st->fds_now, sv.st->fds_at_start, "the server holds no more descriptors");
	client_close(&cl);
	munmap(slot, sizeof(int));
	server_stop(&sv);
}

/* ---- the response file is read-only to clients ---- */

ABD_TEST(rpc, a_client_cannot_write_the_response_file)
{
	watchdog();
	struct server sv = server_start(0);
	int fd = sv.resp_fd;
	struct stat st;
	cr_assert_eq(fstat(fd, &st), 0);
	size_t size = (size_t)st.st_size;
	errno = 0;
	cr_expect_eq(mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), MAP_FAILED);
	cr_expect_eq(errno, EPERM, "mmap PROT_WRITE: %s", strerror(errno));
	void *ro = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	cr_assert_neq(ro, MAP_FAILED);
	errno = 0;
	cr_expect_eq(mprotect(ro, size, PROT_READ | PROT_WRITE), -1);
	cr_expect_eq(errno, EACCES, "mprotect: %s", strerror(errno));
	munmap(ro, size);
	errno = 0;
	cr_expect_eq(pwrite(fd, "x", 1, 200), -1);
	cr_expect_eq(errno, EPERM, "pwrite: %s", strerror(errno));
	cr_expect_eq(ftruncate(fd, 0), -1, "no shrinking");
	cr_expect_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), -1, "the seals are sealed");
	/* a new open file description of the same file changes nothing: seals are the inode's */
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	int fd2 = open(path, O_RDWR | O_CLOEXEC);
	cr_assert_geq(fd2, 0);
	errno = 0;
	cr_expect_eq(mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd2, 0), MAP_FAILED);
	cr_expect_eq(errno, EPERM);
	cr_expect_eq(write(fd2, "x", 1), -1);
	close(fd2);
	/* a client refuses a response file without the seal (a server that could let others
	 * write it): -EPROTO */
	struct abd_ring *ring;
	cr_assert_eq(abd_ring_attach(sv.ring_fd, -1, NULL, ABD_RING_PRODUCER, &ring), 0);
	int plain = memfd_create("not-sealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	cr_assert_geq(plain, 0);
	cr_assert_eq(ftruncate(plain, (off_t)size), 0);
	cr_assert_eq(fcntl(plain, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), 0);
	struct abd__rpc_client *c;
	cr_expect_eq(abd__rpc_client_new(ring, plain, &c), -EPROTO);
	close(plain);
	abd_ring_free(ring);
	server_stop(&sv);
}

/* ---- a hostile client ---- */

struct hostile_args {
	const struct server *sv;
	int64_t run_ns;
	int *forged; /* forged requests pushed */
};

/* Forges requests naming every mailbox (its victims' generations read from the ring's lease
 * table) with ids of its own choosing, and writes random values over the ring's shared
 * memory: header positions and wake state, the lease table, every slot. */
static int hostile_main(void *arg)
{
	struct hostile_args *a = arg;
	child_setup();
	struct client cl;
	if (client_open(a->sv, &cl) < 0)
		return 10;
	struct stat st;
	if (fstat(a->sv->ring_fd, &st) < 0)
		return 11;
	unsigned char *m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED,
	                        a->sv->ring_fd, 0);
	if (m == MAP_FAILED)
		return 12;
	struct abd__ring_lease *leases = (struct abd__ring_lease *)(m + ABD__RING_HEADER_SIZE);
	struct stat rst;
	if (fstat(a->sv->resp_fd, &rst) < 0)
		return 14;
	unsigned char *resp = mmap(NULL, (size_t)rst.st_size, PROT_READ, MAP_SHARED, a->sv->resp_fd, 0);
	if (resp == MAP_FAILED)
		return 15;
	const struct abd__rpc_hdr *rh = (const struct abd__rpc_hdr *)resp;
	uint64_t end = abd_test_now_ns() + (uint64_t)a->run_ns;
	unsigned char buf[ABD__RPC_REQ_HDR + 32];
	uint64_t rnd[64];
	for (unsigned round = 0; abd_test_now_ns() < end; round++) {
		if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
			return 13;
		/* forged requests: every mailbox, a random id in a real cell, "HOSTILE" */
		for (unsigned slot = 0; slot < 16; slot++) {
			struct abd__rpc_req q = { .slot = slot, .gen = leases[slot].gen,
			                          .id = (rnd[slot] & ~UINT64_C(0xff)) | (rnd[slot + 16] & 7),
			                          .flags = ABD__RPC_REQ_WAKE };
			if (round % 7 == 0)
				q.slot = (uint32_t)rnd[slot + 32]; /* out of range too */
			memcpy(buf, &q, sizeof(q));
			memcpy(buf + sizeof(q), "HOSTILE", 7);
			if (abd_ring_try_push(cl.ring, buf, sizeof(q) + 7) == 0)
				__atomic_add_fetch(a->forged, 1, __ATOMIC_RELAXED);
		}
		/* second half: random words too (positions, wake state, leases but our own, slots);
		 * they may stall the ring, so the forgeries run alone first */
		if (round % 3 == 0 && abd_test_now_ns() > end - (uint64_t)a->run_ns / 2) {
			for (unsigned i = 0; i < 8; i++) {
				size_t off = 128 + (size_t)(rnd[48 + i] % ((size_t)st.st_size - 128)) / 8 * 8;
				size_t mine = ABD__RING_HEADER_SIZE + (size_t)cl.ring->lease * ABD__RING_LEASE_SIZE;
				if (off >= mine && off < mine + ABD__RING_LEASE_SIZE)
					continue;
				__atomic_store_n((uint64_t *)(m + off), rnd[56 + i] % 5 == 0 ? ~UINT64_C(0) : rnd[56 + i],
				                 __ATOMIC_RELAXED);
			}
		}
		/* wake every mailbox's word, to make the callers spin if they can */
		if (round % 5 == 0)
			for (unsigned slot = 0; slot < 16; slot++)
				syscall(SYS_futex, (uint32_t *)(resp + ABD__RPC_HEADER_SIZE + slot * rh->mailbox_stride),
				        FUTEX_WAKE, 1, NULL, NULL, 0);
		usleep(200);
	}
	munmap(m, (size_t)st.st_size);
	munmap(resp, (size_t)rst.st_size);
	client_close(&cl);
	return 0;
}

struct honest_args {
	const struct server *sv;
	unsigned id;
	int64_t run_ns;
	int *hostile_delivered, *wrong, *overrun, *ok;
};

static int honest_main(void *arg)
{
	struct honest_args *a = arg;
	child_setup();
	struct client cl;
	if (client_open(a->sv, &cl) < 0)
		return 10;
	uint64_t end = abd_test_now_ns() + (uint64_t)a->run_ns;
	char req[64], resp[RESP_MAX], want[RESP_MAX];
	for (unsigned i = 0; abd_test_now_ns() < end; i++) {
		size_t len = (size_t)snprintf(req, sizeof(req), "honest %u call %u", a->id, i);
		uint64_t t;
		int e = abd__rpc_send(cl.c, req, len, &t);
		if (e == -EAGAIN || e == -EBADMSG) {
			usleep(1000);
			continue;
		}
		if (e < 0)
			return 11;
		uint64_t t0 = abd_test_now_ns();
		int n = abd__rpc_wait(cl.c, t, resp, sizeof(resp), deadline_in(200 * MS), NULL, NULL);
		uint64_t took = abd_test_now_ns() - t0;
		if (took > 1000 * MS) /* 200 ms and a loaded machine's slack */
			__atomic_add_fetch(a->overrun, 1, __ATOMIC_RELAXED);
		if (n == -ETIMEDOUT)
			continue;
		if (n < 0)
			continue; /* -EBADMSG: a garbled answer, refused */
		if (n >= 9 && memcmp(resp, "R:HOSTILE", 9) == 0)
			__atomic_add_fetch(a->hostile_delivered, 1, __ATOMIC_RELAXED);
		else if ((size_t)n != answer(req, len, want) || memcmp(resp, want, (size_t)n) != 0)
			__atomic_add_fetch(a->wrong, 1, __ATOMIC_RELAXED); /* a garbled request's answer */
		else
			__atomic_add_fetch(a->ok, 1, __ATOMIC_RELAXED);
	}
	client_close(&cl);
	return 0;
}

ABD_TEST(rpc, a_hostile_client_gets_no_forged_answer_delivered_and_stalls_nobody)
{
	watchdog();
	struct server sv = server_start(8);
	int *counts = shared_alloc(8 * sizeof(int));
	int64_t run = (int64_t)abd_test_scaled(3000, 1000) * MS;
	struct honest_args ha[3];
	pid_t honest[3];
	for (unsigned i = 0; i < 3; i++) {
		ha[i] = (struct honest_args){ &sv, i, run, &counts[0], &counts[1], &counts[2], &counts[3] };
		honest[i] = abd_test_fork(honest_main, &ha[i]);
	}
	usleep(50 * 1000);
	struct hostile_args hh = { &sv, run - 200 * MS, &counts[4] };
	pid_t hostile = abd_test_fork(hostile_main, &hh);
	cr_expect_eq(abd_test_wait_within(hostile, (uint64_t)run + 10000 * MS), 0);
	for (unsigned i = 0; i < 3; i++)
		cr_expect_eq(abd_test_wait_within(honest[i], (uint64_t)run + 10000 * MS), 0, "honest %u", i);
	cr_log_info("forged %d, delivered ok %d, garbled %d, hostile delivered %d, overruns %d",
	            counts[4], counts[3], counts[1], counts[0], counts[2]);
	/* a sanity floor, not a rate: under an emulated CPU (ci/vm, TCG) a few hundred */
	cr_expect_gt(counts[4], 100, "the hostile client forged requests");
	cr_expect_eq(counts[0], 0, "no forged answer was delivered to a caller");
	cr_expect_eq(counts[2], 0, "no call overran its deadline");
	cr_expect_eq(waitpid(sv.pid, NULL, WNOHANG), 0, "the server is alive (not even a zombie)");
	cr_expect_gt(sv.st->bad, 0, "the server dropped malformed requests");
	/* Whether the ring itself still carries requests afterwards depends on what the random
	 * writes hit (a peer may stall a ring: docs/ring.md); the server is not what stops it. */
	struct client cl;
	cr_assert_eq(client_open(&sv, &cl), 0);
	int good = 0;
	for (int i = 0; i < 10 && good < 3; i++) {
		char resp[RESP_MAX];
		uint64_t t;
		if (abd__rpc_send(cl.c, "after", 5, &t) < 0) {
			usleep(10 * 1000);
			continue;
		}
		int n = abd__rpc_wait(cl.c, t, resp, sizeof(resp), deadline_in(100 * MS), NULL, NULL);
		good += n == 7 && memcmp(resp, "R:after", 7) == 0;
	}
	cr_log_info("after the hostile left: %d good answers", good);
	client_close(&cl);
	munmap(counts, 8 * sizeof(int));
	server_stop(&sv);
}

/* ---- a client checks the response file before it uses it ---- */

/* A copy of the server's response file with one header field changed (checksum fixed up
 * unless told otherwise), sealed as a server would seal it. */
static int forged_file(int real, size_t size, size_t off, uint64_t value, size_t width,
                       bool fix_checksum)
{
	int fd = memfd_create("forged", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, (off_t)size), 0);
	struct abd__rpc_hdr h;
	cr_assert_eq(pread(real, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	memcpy((unsigned char *)&h + off, &value, width);
	if (fix_checksum)
		h.checksum = abd__rpc_checksum(&h);
	cr_assert_eq(pwrite(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	cr_assert_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE |
	                                        F_SEAL_SEAL), 0);
	return fd;
}

ABD_TEST(rpc, a_client_refuses_a_forged_response_file)
{
	watchdog();
	struct server sv = server_start(0);
	struct stat st;
	cr_assert_eq(fstat(sv.resp_fd, &st), 0);
	size_t size = (size_t)st.st_size;
	struct abd_ring *ring;
	cr_assert_eq(abd_ring_attach(sv.ring_fd, -1, NULL, ABD_RING_PRODUCER, &ring), 0);
	struct abd__rpc_client *c = NULL;
	/* the real one, copied: accepted */
	int fd = forged_file(sv.resp_fd, size, 0, ABD__RPC_MAGIC, 8, true);
	cr_expect_eq(abd__rpc_client_new(ring, fd, &c), 0);
	abd__rpc_client_free(c);
	close(fd);
	const struct {
		size_t off, width;
		uint64_t value;
		bool fix;
		int want;
	} cases[] = {
		{ offsetof(struct abd__rpc_hdr, magic), 8, 0x4141414141414141ull, true, -EPROTO },
		{ offsetof(struct abd__rpc_hdr, version), 4, 2, true, -EPROTO },
		{ offsetof(struct abd__rpc_hdr, mailboxes), 4, 64, true, -EPROTO },
		{ offsetof(struct abd__rpc_hdr, cells), 4, 0, true, -EPROTO },
		{ offsetof(struct abd__rpc_hdr, cells), 4, 1000, true, -EPROTO },
		{ offsetof(struct abd__rpc_hdr, cell_size), 4, 1u << 30, true, -EPROTO },
		{ offsetof(struct abd__rpc_hdr, cell_stride), 4, 64, true, -EPROTO },
		{ offsetof(struct abd__rpc_hdr, mailbox_stride), 8, 64, true, -EPROTO },
		{ offsetof(struct abd__rpc_hdr, total_size), 8, 1ull << 40, true, -EPROTO },
		{ offsetof(struct abd__rpc_hdr, version), 4, 1, false, 0 }, /* unchanged: sanity */
		{ offsetof(struct abd__rpc_hdr, cells), 4, 9, false, -EPROTO }, /* bad checksum */
		{ offsetof(struct abd__rpc_hdr, nonce), 8, 12345, true, -ESTALE },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fd = forged_file(sv.resp_fd, size, cases[i].off, cases[i].value, cases[i].width,
		                 cases[i].fix);
		c = NULL;
		int e = abd__rpc_client_new(ring, fd, &c);
		cr_expect_eq(e, cases[i].want, "case %zu: %d", i, e);
		abd__rpc_client_free(c);
		close(fd);
	}
	/* a file larger than a response file may be (sparse: costs nothing) */
	fd = memfd_create("huge", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	cr_assert_eq(ftruncate(fd, (off_t)4 << 40), 0);
	cr_assert_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE |
	                                        F_SEAL_SEAL), 0);
	cr_expect_eq(abd__rpc_client_new(ring, fd, &c), -EFBIG);
	close(fd);
	abd_ring_free(ring);
	server_stop(&sv);
}

/* ---- an answer a server does not write is refused, not returned ---- */

ABD_TEST(rpc, a_client_refuses_an_answer_no_server_writes)
{
	struct abd_ring *sring, *cring;
	struct abd__rpc_server *s;
	struct abd__rpc_client *c;
	cr_assert_eq(abd_ring_new(16, ABD__RPC_REQ_HDR + 64, ABD_RING_CONSUMER | ABD_RING_SINGLE_CONSUMER,
	                          NULL, &sring), 0);
	cr_assert_eq(abd__rpc_server_new(sring, 2, 64, &s), 0);
	cr_assert_eq(abd_ring_attach(abd_ring_fd(sring), -1, NULL, ABD_RING_PRODUCER, &cring), 0);
	cr_assert_eq(abd__rpc_client_new(cring, abd__rpc_server_fd(s), &c), 0);
	char buf[64];
	uint64_t t, token;
	/* an errno out of range (a server of ours refuses to send a positive one) */
	cr_assert_eq(abd__rpc_send(c, "q", 1, &t), 0);
	cr_assert_eq(abd__rpc_take(s, buf, sizeof(buf), &token), 1);
	cr_assert_eq(abd__rpc_reply(s, token, NULL, 0, -100000), 0);
	cr_expect_eq(abd__rpc_poll(c, t, buf, sizeof(buf)), -EBADMSG);
	cr_expect_eq(abd__rpc_in_flight(c), 0, "the call ended");
	/* an errno in range is the call's result */
	cr_assert_eq(abd__rpc_send(c, "q", 1, &t), 0);
	cr_assert_eq(abd__rpc_take(s, buf, sizeof(buf), &token), 1);
	cr_assert_eq(abd__rpc_reply(s, token, NULL, 0, -ENOENT), 0);
	cr_expect_eq(abd__rpc_poll(c, t, buf, sizeof(buf)), -ENOENT);
	/* an answer longer than the caller's buffer stays for a larger one */
	cr_assert_eq(abd__rpc_send(c, "q", 1, &t), 0);
	cr_assert_eq(abd__rpc_take(s, buf, sizeof(buf), &token), 1);
	cr_assert_eq(abd__rpc_reply(s, token, "0123456789", 10, 0), 0);
	cr_expect_eq(abd__rpc_poll(c, t, buf, 4), -EMSGSIZE);
	cr_expect_eq(abd__rpc_poll(c, t, buf, sizeof(buf)), 10);
	cr_expect_eq(abd__rpc_reply(s, token, "x", 1, 0), -ESTALE, "answered once");
	cr_expect_eq(abd__rpc_reply(s, token, NULL, 0, 1), -EINVAL);
	cr_expect_eq(abd__rpc_reply(s, 0, NULL, 0, 0), -EINVAL);
	abd__rpc_client_free(c);
	abd_ring_free(cring);
	abd__rpc_server_free(s);
	abd_ring_free(sring);
}
