/* SPDX-License-Identifier: MIT */
/* Broadcast services (docs/broadcast.md) between real processes: fan-out, history, both
 * slow-subscriber policies, deaths of subscribers and of the publisher, 64 MiB loans, and
 * hostile subscribers (the data file is read-only to them; scribbling over the control file
 * makes nobody hang, spin or crash). */
#include <abd/service.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "runtime/service-internal.h"

#define MS (1000ll * 1000)
#define SEC (1000ll * MS)

struct bt {
	char dir[256];
	const char *name;
	struct abd_service_config cfg;
	struct abd_broadcast_opts opts;
	unsigned flags; /* open flags of the children */
	int go[2];      /* parent -> children: a byte each lets them read */
	int ready[2];   /* children -> parent: a byte once subscribed */
	long n;         /* messages */
	int child_code_base;
};

static void bt_init(struct bt *t, uint32_t cap, uint32_t subs, uint32_t hist, uint32_t pol)
{
	memset(t, 0, sizeof(*t));
	abd_test_mkdtemp(t->dir, sizeof(t->dir));
	t->name = "bc.test";
	t->cfg.dir = t->dir;
	t->cfg.capacity = cap;
	t->cfg.slot_size = 64;
	t->opts.subscribers = subs;
	t->opts.history = hist;
	t->opts.policy = pol;
	cr_assert_eq(pipe2(t->go, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(t->ready, O_CLOEXEC), 0);
}

static void bt_fini(struct bt *t)
{
	close(t->go[0]);
	close(t->go[1]);
	close(t->ready[0]);
	close(t->ready[1]);
	abd_test_rmtree(t->dir);
}

/* Publisher side: run the reactor (handshakes) until `k` subscribers are live. */
static void wait_subscribers(struct abd_service *pub, unsigned k)
{
	uint64_t until = abd_test_now_ns() + 10 * SEC;
	for (;;) {
		struct abd_service_stats st;
		cr_assert_eq(abd_service_stats(pub, &st), 0);
		if (st.consumers >= k)
			return;
		cr_assert(abd_test_now_ns() < until, "only %u of %u subscribers came", st.consumers, k);
		abd_reactor_run_once(abd_service_reactor(pub), 5 * MS);
	}
}

static struct abd_service *sub_open(struct bt *t)
{
	struct abd_service *s = NULL;
	struct abd_service_config cfg = { .dir = t->dir };
	int r = abd_service_open(t->name, &cfg, t->flags, 10 * SEC, &s);
	return r == 0 ? s : NULL;
}

/* A subscriber: every message 0..n-1 in order, nothing lost, then -EPIPE. */
static int in_order_main(void *arg)
{
	struct bt *t = arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	struct abd_service *s = sub_open(t);
	if (!s)
		return 10;
	if (abd_service_is_broadcast(s) != 1)
		return 11;
	for (long i = 0; i < t->n; i++) {
		uint64_t v = 0;
		int r = abd_service_pop(s, &v, sizeof(v), 20 * SEC);
		if (r != (int)sizeof(v))
			return fprintf(stderr, "pop %ld: %d\n", i, r), 12;
		if (v != (uint64_t)i)
			return fprintf(stderr, "got %llu want %ld\n", (unsigned long long)v, i), 13;
	}
	uint64_t v;
	int r = abd_service_pop(s, &v, sizeof(v), 20 * SEC);
	if (r != -EPIPE)
		return fprintf(stderr, "after the last: %d\n", r), 14;
	if (abd_service_lost(s) != 0)
		return 15;
	abd_service_close(s);
	return 0;
}

static void fan_out(unsigned k)
{
	struct bt t;
	bt_init(&t, 8, 4, 0, ABD_BROADCAST_BLOCK);
	t.n = (long)abd_test_scaled(5000, 200);
	struct abd_service *pub;
	cr_assert_eq(abd_service_publish_broadcast(t.name, &t.cfg, &t.opts, 0, &pub), 0);
	pid_t kids[4];
	for (unsigned i = 0; i < k; i++)
		kids[i] = abd_test_fork(in_order_main, &t);
	wait_subscribers(pub, k);
	for (long i = 0; i < t.n; i++) {
		uint64_t v = (uint64_t)i;
		cr_assert_eq(abd_service_push(pub, &v, sizeof(v), 20 * SEC), 0, "push %ld", i);
	}
	abd_service_close(pub);
	for (unsigned i = 0; i < k; i++)
		cr_assert_eq(abd_test_wait_within(kids[i], 60 * SEC), 0, "subscriber %u", i);
	bt_fini(&t);
}

ABD_TEST(broadcast, every_subscriber_gets_every_message_in_order_1) { fan_out(1); }
ABD_TEST(broadcast, every_subscriber_gets_every_message_in_order_2) { fan_out(2); }
ABD_TEST(broadcast, every_subscriber_gets_every_message_in_order_4) { fan_out(4); }

/* ------------------------------------------------------------------ history -- */

static int history_main(void *arg)
{
	struct bt *t = arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	struct abd_service *s = sub_open(t);
	if (!s)
		return 10;
	/* published before we came: the last 4 of 0..9 */
	for (uint64_t want = 6; want < 10; want++) {
		uint64_t v = 0;
		int r = abd_service_pop(s, &v, sizeof(v), 10 * SEC);
		if (r != 8 || v != want)
			return fprintf(stderr, "history: %d %llu\n", r, (unsigned long long)v), 11;
	}
	if (write(t->ready[1], "r", 1) != 1)
		return 12;
	uint64_t v;
	int r = abd_service_pop(s, &v, sizeof(v), 10 * SEC);
	if (r != 8 || v != 10)
		return fprintf(stderr, "live: %d %llu\n", r, (unsigned long long)v), 13;
	abd_service_close(s);
	return 0;
}

ABD_TEST(broadcast, late_joiner_gets_the_history)
{
	struct bt t;
	bt_init(&t, 8, 2, 4, ABD_BROADCAST_BLOCK);
	struct abd_service *pub;
	cr_assert_eq(abd_service_publish_broadcast(t.name, &t.cfg, &t.opts, 0, &pub), 0);
	for (uint64_t i = 0; i < 10; i++) /* nobody subscribed: BLOCK holds nothing back */
		cr_assert_eq(abd_service_try_push(pub, &i, sizeof(i)), 0);
	pid_t kid = abd_test_fork(history_main, &t);
	char c;
	struct abd_reactor *r = abd_service_reactor(pub);
	for (uint64_t until = abd_test_now_ns() + 20 * SEC;;) {
		/* serve the handshake until the child read the history */
		cr_assert(abd_test_now_ns() < until, "the subscriber did not read the history");
		abd_reactor_run_once(r, 5 * MS);
		struct pollfd p = { .fd = t.ready[0], .events = POLLIN };
		if (poll(&p, 1, 0) == 1)
			break;
	}
	cr_assert_eq(read(t.ready[0], &c, 1), 1);
	uint64_t v = 10;
	cr_assert_eq(abd_service_try_push(pub, &v, sizeof(v)), 0);
	cr_assert_eq(abd_test_wait_within(kid, 20 * SEC), 0);
	abd_service_close(pub);
	bt_fini(&t);
}

/* ------------------------------------------------------------------ BLOCK -- */

/* Subscribe, say so, wait for the go, then read n in order. */
static int slow_main(void *arg)
{
	struct bt *t = arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	struct abd_service *s = sub_open(t);
	if (!s)
		return 10;
	if (write(t->ready[1], "r", 1) != 1)
		return 11;
	char c;
	if (read(t->go[0], &c, 1) != 1)
		return 12;
	long got = 0;
	uint64_t last = 0;
	for (;;) {
		uint64_t v = 0;
		int r = abd_service_pop(s, &v, sizeof(v), 20 * SEC);
		if (r == -EPIPE)
			break;
		if (r != 8)
			return fprintf(stderr, "pop: %d\n", r), 13;
		if (got && v <= last)
			return fprintf(stderr, "order: %llu after %llu\n", (unsigned long long)v,
			               (unsigned long long)last), 14;
		last = v;
		got++;
	}
	int64_t lost = abd_service_lost(s);
	fprintf(stderr, "slow subscriber: got %ld lost %lld last %llu\n", got, (long long)lost,
	        (unsigned long long)last);
	abd_service_close(s);
	if (got + lost != t->n || last != (uint64_t)t->n - 1)
		return 15;
	if (t->opts.policy == ABD_BROADCAST_BLOCK && lost != 0)
		return 16;
	if (t->opts.policy == ABD_BROADCAST_OVERWRITE && lost == 0)
		return 17;
	return 0;
}

static void wait_ready(struct bt *t, struct abd_service *pub, int k)
{
	uint64_t until = abd_test_now_ns() + 20 * SEC;
	for (int got = 0; got < k;) {
		cr_assert(abd_test_now_ns() < until, "%d of %d subscribers ready", got, k);
		abd_reactor_run_once(abd_service_reactor(pub), 5 * MS);
		struct pollfd p = { .fd = t->ready[0], .events = POLLIN };
		char c;
		if (poll(&p, 1, 0) == 1 && read(t->ready[0], &c, 1) == 1)
			got++;
	}
}

ABD_TEST(broadcast, block_policy_waits_for_room_until_its_deadline_and_loses_nothing)
{
	struct bt t;
	bt_init(&t, 4, 2, 0, ABD_BROADCAST_BLOCK);
	t.n = 200;
	struct abd_service *pub;
	cr_assert_eq(abd_service_publish_broadcast(t.name, &t.cfg, &t.opts, 0, &pub), 0);
	pid_t kid = abd_test_fork(slow_main, &t);
	wait_ready(&t, pub, 1);
	for (uint64_t i = 0; i < 4; i++)
		cr_assert_eq(abd_service_try_push(pub, &i, sizeof(i)), 0);
	uint64_t v = 4;
	cr_assert_eq(abd_service_try_push(pub, &v, sizeof(v)), -EAGAIN);
	uint64_t t0 = abd_test_now_ns();
	cr_assert_eq(abd_service_push(pub, &v, sizeof(v), 100 * MS), -ETIMEDOUT);
	uint64_t took = abd_test_now_ns() - t0;
	cr_assert(took >= 90 * MS && took < 2 * SEC, "push waited %llu ns", (unsigned long long)took);
	cr_assert_eq(write(t.go[1], "g", 1), 1);
	for (v = 4; v < (uint64_t)t.n; v++)
		cr_assert_eq(abd_service_push(pub, &v, sizeof(v), 20 * SEC), 0);
	abd_service_close(pub);
	cr_assert_eq(abd_test_wait_within(kid, 30 * SEC), 0);
	bt_fini(&t);
}

ABD_TEST(broadcast, overwrite_policy_counts_exactly_what_a_lagging_subscriber_lost)
{
	struct bt t;
	bt_init(&t, 8, 2, 0, ABD_BROADCAST_OVERWRITE);
	t.n = 1000;
	struct abd_service *pub;
	cr_assert_eq(abd_service_publish_broadcast(t.name, &t.cfg, &t.opts, 0, &pub), 0);
	pid_t kid = abd_test_fork(slow_main, &t);
	wait_ready(&t, pub, 1);
	/* the publisher never waits: the subscriber reads nothing until the go */
	for (uint64_t v = 0; v < (uint64_t)t.n; v++) {
		cr_assert_eq(abd_service_try_push(pub, &v, sizeof(v)), 0);
		if (v == 500)
			cr_assert_eq(write(t.go[1], "g", 1), 1);
	}
	abd_service_close(pub);
	cr_assert_eq(abd_test_wait_within(kid, 30 * SEC), 0);
	bt_fini(&t);
}

/* ------------------------------------------------------------------ deaths -- */

/* Subscribe, read a few, then sleep until killed. */
static int victim_main(void *arg)
{
	struct bt *t = arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	struct abd_service *s = sub_open(t);
	if (!s)
		return 10;
	if (write(t->ready[1], "r", 1) != 1)
		return 11;
	uint64_t v;
	const void *p;
	size_t n;
	if (abd_service_pop(s, &v, sizeof(v), 10 * SEC) != 8)
		return 12;
	if (abd_service_peek(s, &p, &n, 10 * SEC) != 0) /* dies holding a chunk */
		return 13;
	for (;;)
		pause();
}

ABD_TEST(broadcast, a_killed_subscriber_blocks_nobody_and_its_seat_is_reclaimed)
{
	struct bt t;
	bt_init(&t, 4, 2, 0, ABD_BROADCAST_BLOCK);
	t.n = (long)abd_test_scaled(2000, 100);
	struct abd_service *pub;
	cr_assert_eq(abd_service_publish_broadcast(t.name, &t.cfg, &t.opts, 0, &pub), 0);
	pid_t victim = abd_test_fork(victim_main, &t);
	pid_t good = abd_test_fork(slow_main, &t);
	wait_ready(&t, pub, 2);
	cr_assert_eq(write(t.go[1], "g", 1), 1);
	uint64_t v = 0;
	for (; v < 2; v++)
		cr_assert_eq(abd_service_push(pub, &v, sizeof(v), 10 * SEC), 0);
	/* the victim holds message 1 in place: kill it there, at a random moment after */
	struct timespec d = { 0, (long)(abd_test_now_ns() % 20) * 1000 * 1000 };
	nanosleep(&d, NULL);
	kill(victim, SIGKILL);
	cr_assert_eq(abd_test_wait(victim), 128 + SIGKILL);
	for (; v < (uint64_t)t.n; v++)
		cr_assert_eq(abd_service_push(pub, &v, sizeof(v), 10 * SEC), 0, "push %llu",
		             (unsigned long long)v);
	/* both seats usable again: the dead one's is taken by a newcomer */
	struct abd_service_stats st;
	cr_assert_eq(abd_service_stats(pub, &st), 0);
	cr_assert_eq(st.consumers, 1);
	abd_service_close(pub);
	cr_assert_eq(abd_test_wait_within(good, 30 * SEC), 0);
	bt_fini(&t);
}

/* A publisher child: publish, wait for one subscriber, push n, then die by SIGKILL. */
static int dying_pub_main(void *arg)
{
	struct bt *t = arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	struct abd_service *pub;
	if (abd_service_publish_broadcast(t->name, &t->cfg, &t->opts, 0, &pub) != 0)
		return 10;
	for (;;) {
		struct abd_service_stats st;
		abd_service_stats(pub, &st);
		if (st.consumers >= 1)
			break;
		abd_reactor_run_once(abd_service_reactor(pub), 5 * MS);
	}
	for (uint64_t v = 0; v < (uint64_t)t->n; v++)
		if (abd_service_try_push(pub, &v, sizeof(v)) != 0)
			return 11;
	raise(SIGKILL);
	return 12;
}

static void on_event(struct abd_service *svc, enum abd_service_event ev, int status, void *ud)
{
	(void)svc;
	if (ev == ABD_SERVICE_EVENT_CLOSED)
		*(int *)ud = status;
}

ABD_TEST(broadcast, a_killed_publisher_is_drained_then_epipe_and_an_event)
{
	struct bt t;
	bt_init(&t, 16, 2, 0, ABD_BROADCAST_BLOCK);
	t.n = 10;
	pid_t pubpid = abd_test_fork(dying_pub_main, &t);
	struct abd_service *s = sub_open(&t);
	cr_assert_not_null(s);
	int closed = 0;
	cr_assert_eq(abd_service_set_event_fn(s, on_event, &closed), 0);
	cr_assert_eq(abd_test_wait(pubpid), 128 + SIGKILL);
	for (uint64_t want = 0; want < (uint64_t)t.n; want++) {
		uint64_t v = 99;
		cr_assert_eq(abd_service_pop(s, &v, sizeof(v), 5 * SEC), 8);
		cr_assert_eq(v, want);
	}
	uint64_t v;
	cr_assert_eq(abd_service_pop(s, &v, sizeof(v), 5 * SEC), -EPIPE);
	for (int i = 0; i < 100 && !closed; i++)
		abd_reactor_run_once(abd_service_reactor(s), 10 * MS);
	cr_assert_eq(closed, -ECONNRESET);
	abd_service_close(s);
	bt_fini(&t);
}

/* ------------------------------------------------------------------ loans -- */

#define BIG (64u << 20)

static int big_main(void *arg)
{
	struct bt *t = arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	struct abd_service *s = sub_open(t);
	if (!s)
		return 10;
	if (write(t->ready[1], "r", 1) != 1)
		return 11;
	for (int m = 0; m < 3; m++) {
		const unsigned char *p;
		size_t n;
		if (abd_service_peek(s, (const void **)&p, &n, 20 * SEC) != 0 || n != BIG)
			return 12;
		if (p[0] != (unsigned char)m || p[n / 2] != (unsigned char)(m + 1) ||
		    p[n - 1] != (unsigned char)(m + 2))
			return 13;
		if (abd_service_release(s) != 0)
			return 14;
	}
	abd_service_close(s);
	return 0;
}

ABD_TEST(broadcast, loans_of_64_mib_are_read_in_place)
{
	struct bt t;
	bt_init(&t, 2, 4, 0, ABD_BROADCAST_BLOCK);
	t.cfg.slot_size = BIG;
	struct abd_service *pub;
	cr_assert_eq(abd_service_publish_broadcast(t.name, &t.cfg, &t.opts, 0, &pub), 0);
	pid_t kids[4];
	for (int i = 0; i < 4; i++)
		kids[i] = abd_test_fork(big_main, &t);
	wait_ready(&t, pub, 4);
	for (int m = 0; m < 3; m++) {
		unsigned char *p;
		cr_assert_eq(abd_service_loan(pub, BIG, (void **)&p, 20 * SEC), 0);
		p[0] = (unsigned char)m;
		p[BIG / 2] = (unsigned char)(m + 1);
		p[BIG - 1] = (unsigned char)(m + 2);
		cr_assert_eq(abd_service_send(pub, p, BIG), 0);
	}
	/* one copy: four subscribers read the pool in place; it holds the pages written */
	struct stat st;
	cr_assert_eq(fstat(abd__bcast_data_fd(pub->bc), &st), 0);
	cr_assert_lt((uint64_t)st.st_blocks * 512, (uint64_t)16 << 20, "pool resident %lld",
	             (long long)st.st_blocks * 512);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(abd_test_wait_within(kids[i], 60 * SEC), 0);
	cr_assert_eq(fstat(abd__bcast_data_fd(pub->bc), &st), 0);
	cr_assert_lt((uint64_t)st.st_blocks * 512, (uint64_t)16 << 20, "pool resident %lld",
	             (long long)st.st_blocks * 512);
	void *x;
	cr_assert_eq(abd_service_loan(pub, BIG + 1, &x, 0), -EMSGSIZE);
	abd_service_close(pub);
	bt_fini(&t);
}

/* ------------------------------------------------------------------ hostile peers -- */

ABD_TEST(broadcast, a_subscriber_cannot_write_the_data_file)
{
	struct bt t;
	bt_init(&t, 8, 2, 0, ABD_BROADCAST_BLOCK);
	struct abd_service *pub;
	cr_assert_eq(abd_service_publish_broadcast(t.name, &t.cfg, &t.opts, 0, &pub), 0);
	int fd = abd__bcast_data_fd(pub->bc); /* what every subscriber is handed */
	struct stat st;
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_eq(mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0),
	             MAP_FAILED);
	cr_assert_eq(errno, EPERM);
	void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	cr_assert_neq(m, MAP_FAILED);
	cr_assert_eq(mprotect(m, 4096, PROT_READ | PROT_WRITE), -1);
	cr_assert_eq(errno, EACCES);
	munmap(m, (size_t)st.st_size);
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	int w = open(path, O_RDWR | O_CLOEXEC);
	cr_assert_geq(w, 0);
	cr_assert_eq(pwrite(w, "x", 1, 128), -1);
	cr_assert_eq(errno, EPERM);
	cr_assert_eq(ftruncate(w, 0), -1);
	close(w);
	abd_service_close(pub);
	bt_fini(&t);
}

/* Scribble random words over the whole control file, as fast as it can. */
static int scribbler_main(void *arg)
{
	int fd = *(int *)arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	struct stat st;
	if (fstat(fd, &st) < 0)
		return 10;
	uint64_t *m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return 11;
	size_t words = (size_t)st.st_size / 8;
	uint64_t x = (uint64_t)getpid() * 0x9e3779b97f4a7c15u;
	for (;;) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint64_t v = x;
		switch (x >> 60) {
		case 0: v = 0; break;
		case 1: v = ~0ull; break;
		case 2: v = 1; break;
		default: break;
		}
		__atomic_store_n(&m[(x >> 8) % words], v, __ATOMIC_RELAXED);
		if (!(x & 1023)) /* leave the victims some CPU on a 2-CPU machine */
			sched_yield();
	}
}

/* A victim subscriber: pops with short deadlines for a while; no call may overrun its
 * deadline by much, every message it gets is in order. */
static int victim_sub_main(void *arg)
{
	struct bt *t = arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	struct abd_service *s = sub_open(t);
	if (!s)
		return 10;
	if (write(t->ready[1], "r", 1) != 1)
		return 11;
	uint64_t end = abd_test_now_ns() + 2 * SEC, last = 0;
	bool any = false;
	long got = 0;
	while (abd_test_now_ns() < end) {
		uint64_t v, t0 = abd_test_now_ns();
		int r = abd_service_pop(s, &v, sizeof(v), 50 * MS);
		uint64_t took = abd_test_now_ns() - t0;
		if (took > 50 * MS + 1000 * MS) /* a loaded machine's scheduling, not a hang */
			return fprintf(stderr, "pop took %llu ns\n", (unsigned long long)took), 12;
		if (r == 8) {
			if (any && v <= last)
				return 13;
			last = v;
			any = true;
			got++;
		} else if (r != -ETIMEDOUT && r != -EAGAIN && r != -EBADMSG) {
			return fprintf(stderr, "pop: %d\n", r), 14;
		}
	}
	abd_service_close(s);
	/* the scribbler slows the stream (forged cursors hold the publisher back until the
	 * victim's next release rewrites its own), it never stops it */
	return got > 10 ? 0 : (fprintf(stderr, "victim got %ld\n", got), 15);
}

ABD_TEST(broadcast, scribbling_over_the_control_file_makes_nobody_hang_or_spin)
{
	struct bt t;
	bt_init(&t, 8, 4, 0, ABD_BROADCAST_BLOCK);
	struct abd_service *pub;
	cr_assert_eq(abd_service_publish_broadcast(t.name, &t.cfg, &t.opts, 0, &pub), 0);
	pid_t v1 = abd_test_fork(victim_sub_main, &t);
	pid_t v2 = abd_test_fork(victim_sub_main, &t);
	wait_ready(&t, pub, 2);
	int ctl = abd__bcast_ctl_fd(pub->bc);
	pid_t sc = abd_test_fork(scribbler_main, &ctl);
	struct rusage ru0, ru1;
	getrusage(RUSAGE_SELF, &ru0);
	uint64_t end = abd_test_now_ns() + 2 * SEC, t0 = abd_test_now_ns();
	uint64_t v = 0;
	while (abd_test_now_ns() < end) {
		uint64_t c0 = abd_test_now_ns();
		int r = abd_service_push(pub, &v, sizeof(v), 50 * MS);
		uint64_t took = abd_test_now_ns() - c0;
		cr_assert(took < 1050 * MS, "push took %llu ns", (unsigned long long)took);
		cr_assert(r == 0 || r == -ETIMEDOUT, "push: %d", r);
		if (r == 0)
			v++;
		if (!(v & 63))
			usleep(1000); /* a stream, not a CPU hog: the victims must run too */
	}
	getrusage(RUSAGE_SELF, &ru1);
	double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec -
	                      ru0.ru_stime.tv_sec) +
	             (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec -
	                      ru0.ru_stime.tv_usec) / 1e6;
	double wall = (double)(abd_test_now_ns() - t0) / 1e9;
	fprintf(stderr, "scribbled: %llu pushed, publisher cpu %.2f of %.2f s\n",
	        (unsigned long long)v, cpu, wall);
	cr_assert_gt(v, 100, "the publisher was held back: %llu pushed", (unsigned long long)v);
	cr_assert_eq(abd_test_wait_within(v1, 20 * SEC), 0);
	cr_assert_eq(abd_test_wait_within(v2, 20 * SEC), 0);
	kill(sc, SIGKILL);
	abd_test_wait(sc);
	abd_service_close(pub);
	bt_fini(&t);
}

/* ------------------------------------------------------------------ random deaths -- */

/* Reads forever, by copy and in place, until killed. */
static int reader_main(void *arg)
{
	struct bt *t = arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	struct abd_service *s = sub_open(t);
	if (!s)
		return 10;
	for (unsigned i = 0;; i++) {
		uint64_t v;
		const void *p;
		size_t n;
		if (i & 1) {
			if (abd_service_peek(s, &p, &n, 50 * MS) == 0)
				(void)abd_service_release(s);
		} else {
			(void)abd_service_pop(s, &v, sizeof(v), 50 * MS);
		}
	}
}

ABD_TEST(broadcast, subscribers_killed_at_random_points_block_nobody)
{
	struct bt t;
	/* three seats: the reader in order, and one killed reader after another (each takes the
	 * seat a dead one left) */
	bt_init(&t, 8, 3, 0, ABD_BROADCAST_BLOCK);
	t.n = (long)abd_test_scaled(4000, 400);
	struct abd_service *pub;
	cr_assert_eq(abd_service_publish_broadcast(t.name, &t.cfg, &t.opts, 0, &pub), 0);
	pid_t good = abd_test_fork(in_order_main, &t);
	wait_subscribers(pub, 1);
	struct abd_reactor *r = abd_service_reactor(pub);
	pid_t victim = abd_test_fork(reader_main, &t);
	unsigned killed = 0;
	long respawn = -1; /* a lap after a death: its seat is free only if the publisher freed it */
	uint64_t x = abd_test_now_ns();
	for (long i = 0; i < t.n; i++) {
		uint64_t v = (uint64_t)i;
		cr_assert_eq(abd_service_push(pub, &v, sizeof(v), 10 * SEC), 0, "push %ld", i);
		abd_reactor_run_once(r, 0); /* the victims' handshakes */
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		if (i == respawn)
			victim = abd_test_fork(reader_main, &t);
		else if (victim > 0 && x % 97 == 0) {
			struct timespec d = { 0, (long)(x % 2000) * 1000 };
			nanosleep(&d, NULL); /* let it run into some call first */
			kill(victim, SIGKILL);
			cr_assert_eq(abd_test_wait(victim), 128 + SIGKILL, "the victim ended by itself");
			killed++;
			victim = -1;
			respawn = i + 2 * 8;
		}
	}
	if (victim > 0) {
		kill(victim, SIGKILL);
		abd_test_wait(victim);
	}
	fprintf(stderr, "random deaths: %u subscribers killed\n", killed);
	abd_service_close(pub);
	cr_assert_eq(abd_test_wait_within(good, 60 * SEC), 0);
	bt_fini(&t);
}

/* A publisher child that pushes 0, 1, 2, ... (BLOCK) until it is killed. */
static int endless_pub_main(void *arg)
{
	struct bt *t = arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	struct abd_service *pub;
	if (abd_service_publish_broadcast(t->name, &t->cfg, &t->opts, 0, &pub) != 0)
		return 10;
	for (;;) {
		struct abd_service_stats st;
		abd_service_stats(pub, &st);
		if (st.consumers >= 1)
			break;
		abd_reactor_run_once(abd_service_reactor(pub), 5 * MS);
	}
	for (uint64_t v = 0;; v++)
		if (abd_service_push(pub, &v, sizeof(v), 10 * SEC) != 0)
			return 11;
}

ABD_TEST(broadcast, a_publisher_killed_at_a_random_point_leaves_every_committed_message)
{
	for (int round = 0; round < 5; round++) {
		struct bt t;
		bt_init(&t, 16, 2, 0, ABD_BROADCAST_BLOCK);
		pid_t pubpid = abd_test_fork(endless_pub_main, &t);
		struct abd_service *s = sub_open(&t);
		cr_assert_not_null(s);
		/* read some, then kill it at a random moment while it pushes */
		uint64_t v = 0, want = 0;
		for (; want < 100; want++) {
			cr_assert_eq(abd_service_pop(s, &v, sizeof(v), 10 * SEC), 8);
			cr_assert_eq(v, want);
		}
		struct timespec d = { 0, (long)(abd_test_now_ns() % 3000) * 1000 };
		nanosleep(&d, NULL);
		kill(pubpid, SIGKILL);
		cr_assert_eq(abd_test_wait(pubpid), 128 + SIGKILL);
		/* the handle learns of the death first (its registry watch), then drains */
		for (uint64_t end = abd_test_now_ns() + 10 * SEC; abd_service_closed(s) == 0;) {
			cr_assert_lt(abd_test_now_ns(), end, "the death did not reach the subscriber");
			abd_reactor_run_once(abd_service_reactor(s), 10 * MS);
		}
		cr_assert_eq(abd_service_closed(s), -ECONNRESET);
		/* everything it committed, in order, with no gap; then -EPIPE */
		int r;
		while ((r = abd_service_pop(s, &v, sizeof(v), 10 * SEC)) == 8) {
			cr_assert_eq(v, want, "after the publisher's death");
			want++;
		}
		cr_assert_eq(r, -EPIPE);
		struct abd_service_stats st;
		cr_assert_eq(abd_service_stats(s, &st), 0);
		cr_assert_eq(st.pushed, want, "drained up to the head the publisher committed");
		cr_assert_eq(abd_service_lost(s), 0);
		abd_service_close(s);
		bt_fini(&t);
	}
}
