/* SPDX-License-Identifier: MIT */
/* One peer of the end-to-end test (tests/test-e2e.c): finds the service by name and produces
 * or consumes its share, recording everything in the shared control file (tests/e2e.h).
 *
 *   e2e-peer producer|consumer ID DIR NAME CTLFILE [--epoll]
 *
 * A producer stores its next sequence number *before* pushing it, so a SIGKILL can lose the
 * one message in flight but never send one twice. A consumer counts each message it pops in
 * the per-message counters; it drains through the reactor (READABLE events), and stops when
 * the service closes and is drained (-EPIPE). Exit: 0 done, 1x setup failures, 2x service
 * errors. */
#include <abd/abd.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "e2e.h"

#define SEC (1000ll * 1000 * 1000)

static struct e2e_ctl *ctl;
static struct e2e_peer_stat *me;

static int producer(struct abd_service *svc, uint32_t id)
{
	while (!__atomic_load_n(&ctl->go, __ATOMIC_ACQUIRE)) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	for (;;) {
		uint32_t seq = __atomic_load_n(&ctl->next[id], __ATOMIC_ACQUIRE);
		if (seq >= ctl->quota)
			return 0;
		if (seq >= __atomic_load_n(&ctl->limit, __ATOMIC_ACQUIRE)) {
			struct timespec ts = { 0, 200000 }; /* the driver's next kill comes first */
			nanosleep(&ts, NULL);
			continue;
		}
		struct e2e_msg m;
		e2e_fill(&m, id, seq);
		__atomic_store_n(&ctl->next[id], seq + 1, __ATOMIC_RELEASE);
		int r = abd_service_push(svc, &m, sizeof(m), 30 * SEC);
		if (r < 0) {
			fprintf(stderr, "e2e-peer: producer %u: push %u: %s\n", id, seq, strerror(-r));
			return r == -EPIPE ? 20 : 21;
		}
		__atomic_fetch_add(&me->messages, 1, __ATOMIC_RELAXED);
	}
}

struct cons_state {
	int done; /* 1: closed and drained */
	int err;
};

static void take(struct abd_service *svc, struct cons_state *st)
{
	struct e2e_msg m;
	for (;;) {
		int n = abd_service_try_pop(svc, &m, sizeof(m));
		if (n == -EAGAIN)
			return;
		if (n == -EPIPE) {
			st->done = 1;
			return;
		}
		if (n == -EOWNERDEAD || n == -EBADMSG) {
			__atomic_fetch_add(&ctl->bad_pops, 1, __ATOMIC_RELAXED);
			continue;
		}
		if (n < 0) {
			st->err = n;
			return;
		}
		if (n != (int)sizeof(m) || !e2e_valid(&m, ctl->quota)) {
			__atomic_fetch_add(&ctl->corrupt, 1, __ATOMIC_RELAXED);
			continue;
		}
		__atomic_fetch_add(&ctl->seen[(size_t)m.producer * ctl->quota + m.seq], 1,
		                   __ATOMIC_RELAXED);
		__atomic_fetch_add(&ctl->received, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&me->messages, 1, __ATOMIC_RELAXED);
	}
}

static void on_event(struct abd_service *svc, enum abd_service_event ev, int status, void *ud)
{
	(void)status;
	struct cons_state *st = ud;
	if (ev == ABD_SERVICE_EVENT_READABLE || ev == ABD_SERVICE_EVENT_CLOSED)
		take(svc, st);
}

static int consumer(struct abd_service *svc)
{
	struct cons_state st = { 0 };
	if (abd_service_set_event_fn(svc, on_event, &st) < 0)
		return 22;
	struct abd_reactor *re = abd_service_reactor(svc);
	while (!st.done && !st.err) {
		int r = abd_reactor_run_once(re, 100 * 1000 * 1000);
		if (r < 0 && r != -EINTR) {
			fprintf(stderr, "e2e-peer: consumer: run_once: %s\n", strerror(-r));
			return 23;
		}
		if (abd_service_closed(svc))
			take(svc, &st); /* drained once no producer is left */
	}
	if (st.err)
		fprintf(stderr, "e2e-peer: consumer: pop: %s\n", strerror(-st.err));
	return st.err ? 24 : 0;
}

int main(int argc, char **argv)
{
	if (argc < 6) {
		fprintf(stderr, "usage: e2e-peer producer|consumer ID DIR NAME CTLFILE [--epoll]\n");
		return 10;
	}
	bool is_prod = strcmp(argv[1], "producer") == 0;
	uint32_t id = (uint32_t)atoi(argv[2]);
	bool epoll = argc > 6 && strcmp(argv[6], "--epoll") == 0;
	if (id >= (is_prod ? E2E_PRODUCERS : E2E_CONSUMERS))
		return 11;
	int fd = open(argv[5], O_RDWR | O_CLOEXEC);
	struct stat sb;
	if (fd < 0 || fstat(fd, &sb) < 0)
		return 12;
	ctl = mmap(NULL, (size_t)sb.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (ctl == MAP_FAILED)
		return 13;
	me = is_prod ? &ctl->prod[id] : &ctl->cons[id];
	__atomic_fetch_add(&me->starts, 1, __ATOMIC_RELAXED);
	const char *profile = getenv("ABD_PROFILE");
	me->emulated = profile && strcmp(profile, "native") != 0;
	me->pidfd_getfd = abd_probe_has(ABD_FEAT_PIDFD_GETFD);

	struct abd_service_config cfg = { 0 };
	cfg.dir = argv[3];
	cfg.type_name = "e2e_msg";
	cfg.type_size = sizeof(struct e2e_msg);
	cfg.type_hash = 1;
	cfg.reactor_flags = epoll ? ABD_REACTOR_FORCE_EPOLL : 0;
	struct abd_service *svc;
	/* wait for the service, but not past the end of the run (restarted as it ended) */
	int r = -ETIMEDOUT;
	for (int tries = 0; r == -ETIMEDOUT && tries < 100; tries++) {
		if (__atomic_load_n(&ctl->closing, __ATOMIC_ACQUIRE))
			return 0;
		r = abd_service_open(argv[4], &cfg,
		                     is_prod ? ABD_SERVICE_PRODUCER : ABD_SERVICE_CONSUMER,
		                     200 * 1000 * 1000, &svc);
	}
	if (r < 0) {
		if (__atomic_load_n(&ctl->closing, __ATOMIC_ACQUIRE))
			return 0;
		fprintf(stderr, "e2e-peer: %s %u: open: %s\n", argv[1], id, strerror(-r));
		return 14;
	}
	me->backend = abd_reactor_backend(abd_service_reactor(svc));
	if (!is_prod)
		__atomic_fetch_add(&ctl->joined, 1, __ATOMIC_RELEASE);
	r = is_prod ? producer(svc, id) : consumer(svc);
	abd_service_close(svc);
	return r;
}
