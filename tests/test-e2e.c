/* SPDX-License-Identifier: MIT */
/* End to end: 4 producer and 4 consumer processes find a service by name and exchange 10^6
 * checksummed messages (scaled by ABD_TEST_SCALE) while the driver SIGKILLs and restarts them;
 * one consumer runs as on Linux 5.4 (`abdctl emulate linux-5.4`) with the epoll reactor while
 * the others use whatever this profile offers (io_uring natively), and they interoperate.
 *
 * Accounting (tests/e2e.h): every message is received at most once; a message may be missing
 * only if it was a killed producer's message in flight (known by its sequence number, stored
 * before the push) or the one a killed consumer held (at most one per consumer kill). */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "harness.h"
#include "tests/e2e.h"

#define SEC (1000ll * 1000 * 1000)
#define NAME "e2e.ring"
#define EMULATED 3
#define ABD_ARRAY(a) (sizeof(a) / sizeof((a)[0])) /* consumer 3 runs as on Linux 5.4, on epoll */

struct peer {
	bool producer;
	unsigned id;
	pid_t pid;
	int status; /* -1 running */
};

struct run {
	char dir[256], ctlpath[300];
	const char *abdctl, *peer;
	struct e2e_ctl *ctl;
	size_t ctl_size;
	struct peer peers[E2E_PRODUCERS + E2E_CONSUMERS];
};

static void spawn(struct run *run, struct peer *p)
{
	char id[8];
	snprintf(id, sizeof(id), "%u", p->id);
	const char *role = p->producer ? "producer" : "consumer";
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (p->id == EMULATED)
			execl(run->abdctl, "abdctl", "emulate", "linux-5.4", "--", run->peer, role, id,
			      run->dir, NAME, run->ctlpath, "--epoll", (char *)NULL);
		else
			execl(run->peer, "e2e-peer", role, id, run->dir, NAME, run->ctlpath, (char *)NULL);
		_exit(127);
	}
	p->pid = pid;
	p->status = -1;
}

static int status_of(int st)
{
	return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
}

/* Reap whatever exited; a peer that failed fails the test with its exit code. */
static void reap(struct run *run)
{
	for (size_t i = 0; i < ABD_ARRAY(run->peers); i++) {
		struct peer *p = &run->peers[i];
		if (p->status != -1)
			continue;
		int st;
		if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
			p->status = status_of(st);
			cr_assert_eq(p->status, 0, "%s %u exited with %d", p->producer ? "producer" : "consumer",
			             p->id, p->status);
		}
	}
}

static bool producers_done(const struct run *run)
{
	for (unsigned i = 0; i < E2E_PRODUCERS; i++)
		if (run->peers[i].status != 0)
			return false;
	return true;
}

ABD_TEST(e2e, four_by_four_with_kills_and_a_5_4_epoll_peer, .timeout = 240)
{
	struct run run;
	memset(&run, 0, sizeof(run));
	run.abdctl = getenv("ABD_ABDCTL");
	const char *build = getenv("ABD_BUILD_ROOT");
	cr_assert(run.abdctl && build, "run through meson (ABD_ABDCTL, ABD_BUILD_ROOT)");
	char peer[512];
	snprintf(peer, sizeof(peer), "%s/tests/e2e-peer", build);
	run.peer = peer;
	abd_test_mkdtemp(run.dir, sizeof(run.dir));
	snprintf(run.ctlpath, sizeof(run.ctlpath), "%s/ctl", run.dir);

	uint32_t quota = (uint32_t)abd_test_scaled(1000000, 4000) / E2E_PRODUCERS;
	uint64_t total = (uint64_t)quota * E2E_PRODUCERS;
	run.ctl_size = sizeof(struct e2e_ctl) + total;
	int fd = open(run.ctlpath, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, (off_t)run.ctl_size), 0);
	run.ctl = mmap(NULL, run.ctl_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	cr_assert_neq(run.ctl, MAP_FAILED);
	run.ctl->quota = quota;

	/* the publisher: this process, a rendezvous holding the ring (no role), serving handshakes
	 * from its own reactor */
	struct abd_service_config cfg = { 0 };
	cfg.dir = run.dir;
	cfg.capacity = 1024;
	cfg.type_name = "e2e_msg";
	cfg.type_size = sizeof(struct e2e_msg);
	cfg.type_hash = 1;
	struct abd_service *pub;
	cr_assert_eq(abd_service_publish(NAME, &cfg, ABD_SERVICE_OBSERVER, &pub), 0);
	struct abd_reactor *re = abd_service_reactor(pub);

	for (unsigned i = 0; i < E2E_PRODUCERS; i++)
		run.peers[i] = (struct peer){ .producer = true, .id = i };
	for (unsigned i = 0; i < E2E_CONSUMERS; i++)
		run.peers[E2E_PRODUCERS + i] = (struct peer){ .producer = false, .id = i };
	for (size_t i = 0; i < ABD_ARRAY(run.peers); i++)
		spawn(&run, &run.peers[i]);

	/* Kills at evenly spaced points of the run: producers and consumers in turn, the emulated
	 * consumer among them. */
	enum { KILLS = 6 };
	const unsigned victims[KILLS] = { EMULATED, E2E_PRODUCERS + 1, 0, E2E_PRODUCERS + EMULATED,
	                                  2, E2E_PRODUCERS + 0 };
	uint32_t lost_in_flight[KILLS][2];
	unsigned n_lost = 0, consumer_kills = 0, kills = 0;
	unsigned killed[E2E_PRODUCERS + E2E_CONSUMERS] = { 0 };
	uint64_t deadline = abd_test_now_ns() + 200 * SEC;
	/* the producers wait until every consumer has joined, so that all take part */
	while (__atomic_load_n(&run.ctl->joined, __ATOMIC_ACQUIRE) < E2E_CONSUMERS) {
		cr_assert_lt(abd_test_now_ns(), deadline, "consumers did not join");
		abd_reactor_run_once(re, 5 * 1000 * 1000);
		reap(&run);
	}
	__atomic_store_n(&run.ctl->go, 1, __ATOMIC_RELEASE);
	while (!producers_done(&run)) {
		/* producers may run one step past the next kill's point, no further */
		uint32_t limit = kills >= KILLS ? quota : (uint32_t)((uint64_t)quota * (kills + 2) / (KILLS + 2));
		__atomic_store_n(&run.ctl->limit, limit, __ATOMIC_RELEASE);
		cr_assert_lt(abd_test_now_ns(), deadline, "stalled: %lu of %lu received",
		             (unsigned long)run.ctl->received, (unsigned long)total);
		abd_reactor_run_once(re, 5 * 1000 * 1000);
		reap(&run);
		uint64_t got = __atomic_load_n(&run.ctl->received, __ATOMIC_RELAXED);
		if (kills < KILLS && got >= total * (kills + 1) / (KILLS + 2)) {
			struct peer *p = &run.peers[victims[kills]];
			/* Kill a running peer, not one still starting (abdctl emulate and a loaded
			 * machine can delay a start): else its start is never counted below. */
			const struct e2e_peer_stat *vs = p->producer ? &run.ctl->prod[p->id]
			                                             : &run.ctl->cons[p->id];
			if (p->status == -1 &&
			    __atomic_load_n(&vs->starts, __ATOMIC_ACQUIRE) < 1 + killed[victims[kills]])
				continue;
			kills++;
			if (p->status != -1)
				continue; /* a producer that already finished */
			kill(p->pid, SIGKILL);
			int st;
			cr_assert_eq(waitpid(p->pid, &st, 0), p->pid);
			if (p->producer && status_of(st) == 0) {
				p->status = 0; /* it finished its share just before the kill */
				continue;
			}
			cr_assert_eq(status_of(st), 128 + SIGKILL, "%s %u", p->producer ? "producer" : "consumer",
			             p->id);
			killed[victims[kills - 1]]++;
			if (p->producer) {
				uint32_t next = __atomic_load_n(&run.ctl->next[p->id], __ATOMIC_ACQUIRE);
				if (next > 0) {
					lost_in_flight[n_lost][0] = p->id;
					lost_in_flight[n_lost++][1] = next - 1;
				}
			} else {
				consumer_kills++;
			}
			spawn(&run, p);
		}
	}
	cr_assert_eq(kills, KILLS, "every kill happened (%u)", kills);

	/* Everything is pushed: wait for the consumers to drain the ring, then close. */
	struct abd_service_stats st;
	do {
		cr_assert_lt(abd_test_now_ns(), deadline, "the ring did not drain");
		abd_reactor_run_once(re, 5 * 1000 * 1000);
		reap(&run);
		cr_assert_eq(abd_service_stats(pub, &st), 0);
	} while (st.occupancy > 0);
	__atomic_store_n(&run.ctl->closing, 1, __ATOMIC_RELEASE);
	abd_service_close(pub);
	for (size_t i = E2E_PRODUCERS; i < ABD_ARRAY(run.peers); i++) {
		struct peer *p = &run.peers[i];
		if (p->status == -1) {
			int s;
			cr_assert_eq(waitpid(p->pid, &s, 0), p->pid);
			p->status = status_of(s);
		}
		cr_assert_eq(p->status, 0, "consumer %u exited with %d", p->id, p->status);
	}

	/* The accounting. */
	struct e2e_ctl *c = run.ctl;
	cr_assert_eq(c->corrupt, 0, "%lu messages failed their checksum", (unsigned long)c->corrupt);
	uint64_t dups = 0, missing = 0, unexplained = 0;
	for (uint64_t i = 0; i < total; i++) {
		if (c->seen[i] > 1)
			dups++;
		if (c->seen[i])
			continue;
		missing++;
		bool known = false;
		for (unsigned k = 0; k < n_lost; k++)
			known |= (uint64_t)lost_in_flight[k][0] * quota + lost_in_flight[k][1] == i;
		unexplained += !known;
	}
	cr_assert_eq(dups, 0, "%lu messages were received twice", (unsigned long)dups);
	cr_assert_leq(unexplained, consumer_kills,
	              "%lu messages missing beyond the one each killed consumer (%u) may hold",
	              (unsigned long)unexplained, consumer_kills);
	/* the running count trails the per-message counters by what a consumer killed between
	 * the two increments had counted */
	cr_assert_leq(c->received, total - missing);
	cr_assert_leq(total - missing, c->received + consumer_kills);
	cr_log_info("e2e: %lu messages, %lu missing (%u producer kills in flight, %u consumer "
	            "kills), %lu bad pops",
	            (unsigned long)total, (unsigned long)missing, n_lost, consumer_kills,
	            (unsigned long)c->bad_pops);

	/* Interoperation: the emulated consumer ran as on 5.4 (no pidfd_getfd), on epoll, and
	 * received messages; elsewhere the profile's own choice (io_uring natively). */
	struct e2e_peer_stat *ems[2] = { &c->prod[EMULATED], &c->cons[EMULATED] };
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(ems[i]->emulated, 1);
		cr_assert_eq(ems[i]->backend, ABD_BACKEND_EPOLL);
		cr_assert_neq(ems[i]->pidfd_getfd, 1, "pidfd_getfd is hidden from the 5.4 peers");
	}
	cr_assert_eq(killed[E2E_PRODUCERS + EMULATED], 1, "the 5.4 consumer was killed and restarted");
	/* the 5.4 producer's share arrived (the accounting above), and the 5.4 consumer had one */
	cr_assert_gt(ems[1]->messages, 0, "the 5.4/epoll consumer received messages");
	if (abd_choose_backend() == ABD_BACKEND_IO_URING)
		for (unsigned i = 0; i < E2E_CONSUMERS; i++)
			if (i != EMULATED)
				cr_assert_eq(c->cons[i].backend, ABD_BACKEND_IO_URING, "consumer %u", i);
	/* every kill was followed by a restart that did its part */
	for (size_t i = 0; i < ABD_ARRAY(run.peers); i++) {
		struct e2e_peer_stat *ps = i < E2E_PRODUCERS ? &c->prod[i] : &c->cons[i - E2E_PRODUCERS];
		cr_assert_eq(ps->starts, 1 + killed[i], "peer %zu started %lu times, killed %u", i,
		             (unsigned long)ps->starts, killed[i]);
	}

	munmap(run.ctl, run.ctl_size);
	abd_test_rmtree(run.dir);
}
