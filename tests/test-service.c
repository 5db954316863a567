/* SPDX-License-Identifier: MIT */
/* Services (include/abd/service.h): publish and open by name, the type check, waiting for a
 * publisher with a timeout, the publisher's withdrawal and death (event + -EPIPE, never a
 * crash), the access policy with a real second uid, statistics, and argument errors. Real
 * processes, real kernel, every profile. */
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "harness.h"

#define SEC (1000ll * 1000 * 1000)
#define OTHER_UID 1001

struct ctx {
	char dir[256];
	struct abd_reactor *reactor;
	struct abd_service_config cfg;
};

/* A scratch registry, and one reactor shared by every service of this process: opening a
 * service runs it, so a publisher of this process answers the handshake meanwhile. */
static void ctx_init(struct ctx *c)
{
	memset(c, 0, sizeof(*c));
	abd_test_mkdtemp(c->dir, sizeof(c->dir));
	cr_assert_eq(abd_reactor_new(0, &c->reactor), 0);
	c->cfg.dir = c->dir;
	c->cfg.reactor = c->reactor;
}

static void ctx_fini(struct ctx *c)
{
	abd_reactor_free(c->reactor);
	abd_test_rmtree(c->dir);
}

/* ---------------------------------------------------------------- a publisher child -- */

struct child_pub {
	const char *dir, *name;
	const char *type;
	uint32_t type_size;
	uint64_t type_hash;
	uid_t allow_uid; /* 0: default policy */
	unsigned flags;
	int ready_w; /* written once published */
	int msgs;    /* push this many 8-byte messages after publishing (producer role) */
	uid_t as_uid; /* 0: stay root; else run as this uid (and gid) */
};

/* Publish, say so, push what was asked, then serve until killed (SIGTERM: close cleanly). */
static volatile sig_atomic_t child_stop;
static void on_term(int sig)
{
	(void)sig;
	child_stop = 1;
}

static int child_pub_main(void *arg)
{
	struct child_pub *p = arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	signal(SIGTERM, on_term);
	if (p->as_uid && (setgroups(0, NULL) < 0 || setresgid(p->as_uid, p->as_uid, p->as_uid) < 0 ||
	                  setresuid(p->as_uid, p->as_uid, p->as_uid) < 0))
		return 12;
	if (p->as_uid) {
		/* a change of credentials clears the parent-death signal: ask again */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
	}
	struct abd_service_config cfg = { 0 };
	cfg.dir = p->dir;
	cfg.type_name = p->type;
	cfg.type_size = p->type_size;
	cfg.type_hash = p->type_hash;
	uid_t allow[1] = { p->allow_uid };
	if (p->allow_uid) {
		cfg.allow_uids = allow;
		cfg.n_allow_uids = 1;
	}
	struct abd_service *svc;
	int r = abd_service_publish(p->name, &cfg, p->flags, &svc);
	char ok = r == 0 ? 1 : 0;
	if (write(p->ready_w, &ok, 1) != 1 || r < 0)
		return 10;
	for (int i = 0; i < p->msgs; i++) {
		uint64_t v = (uint64_t)i;
		if (abd_service_push(svc, &v, sizeof(v), 5 * SEC) < 0)
			return 11;
	}
	while (!child_stop)
		abd_reactor_run_once(abd_service_reactor(svc), 50 * 1000 * 1000);
	abd_service_close(svc);
	return 0;
}

static pid_t start_child_pub(struct child_pub *p)
{
	int fds[2];
	cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
	p->ready_w = fds[1];
	pid_t pid = abd_test_fork(child_pub_main, p);
	close(fds[1]);
	char ok = 0;
	cr_assert_eq(read(fds[0], &ok, 1), 1, "publisher child died before publishing");
	close(fds[0]);
	cr_assert_eq(ok, 1, "publisher child failed to publish");
	return pid;
}

/* ---------------------------------------------------------------- round trips -- */

ABD_TEST(service, publish_open_push_pop_both_ways)
{
	struct ctx c;
	ctx_init(&c);
	struct abd_service *pub, *op;
	cr_assert_eq(abd_service_publish("svc.rt", &c.cfg, 0, &pub), 0);
	cr_assert_eq(abd_service_is_publisher(pub), 1);
	cr_assert_eq(abd_service_open("svc.rt", &c.cfg, 0, 2 * SEC, &op), 0);
	cr_assert_eq(abd_service_is_publisher(op), 0);
	cr_assert_str_eq(abd_service_record_name(op), abd_service_record_name(pub));
	cr_assert_eq(abd_service_publisher_pid(op), getpid());
	char buf[256];
	cr_assert_eq(abd_service_try_push(pub, "to-opener", 9), 0);
	cr_assert_eq(abd_service_pop(op, buf, sizeof(buf), SEC), 9);
	cr_assert_eq(memcmp(buf, "to-opener", 9), 0);
	cr_assert_eq(abd_service_push(op, "to-publisher", 12, SEC), 0);
	cr_assert_eq(abd_service_try_pop(pub, buf, sizeof(buf)), 12);
	cr_assert_eq(abd_service_try_pop(pub, buf, sizeof(buf)), -EAGAIN);
	cr_assert_eq(abd_service_closed(op), 0);
	abd_service_close(op);
	abd_service_close(pub);
	ctx_fini(&c);
}

ABD_TEST(service, roles_are_enforced)
{
	struct ctx c;
	ctx_init(&c);
	struct abd_service *pub, *prod, *obs;
	cr_assert_eq(abd_service_publish("svc.roles", &c.cfg, ABD_SERVICE_CONSUMER, &pub), 0);
	cr_assert_eq(abd_service_open("svc.roles", &c.cfg, ABD_SERVICE_PRODUCER, 2 * SEC, &prod), 0);
	cr_assert_eq(abd_service_open("svc.roles", &c.cfg, ABD_SERVICE_OBSERVER, 2 * SEC, &obs), 0);
	char b[8];
	cr_assert_eq(abd_service_try_push(pub, "x", 1), -EPERM);
	cr_assert_eq(abd_service_try_pop(prod, b, sizeof(b)), -EPERM);
	cr_assert_eq(abd_service_try_push(obs, "x", 1), -EPERM);
	cr_assert_eq(abd_service_try_pop(obs, b, sizeof(b)), -EPERM);
	struct abd_service_stats st;
	cr_assert_eq(abd_service_stats(obs, &st), 0);
	cr_assert_eq(st.producers, 1, "one producer attached besides the observer: %u", st.producers);
	cr_assert_eq(st.consumers, 1, "one consumer (the publisher): %u", st.consumers);
	cr_assert_eq(abd_service_try_push(prod, "abc", 3), 0);
	cr_assert_eq(abd_service_stats(obs, &st), 0);
	cr_assert_eq(st.occupancy, 1);
	cr_assert_eq(st.capacity, ABD_SERVICE_DEFAULT_CAPACITY);
	cr_assert_eq(abd_service_try_pop(pub, b, sizeof(b)), 3);
	abd_service_close(obs);
	abd_service_close(prod);
	abd_service_close(pub);
	ctx_fini(&c);
}

/* ---------------------------------------------------------------- types -- */

struct point {
	int32_t x, y;
};

ABD_TEST(service, type_mismatch_is_eprototype)
{
	struct ctx c;
	ctx_init(&c);
	c.cfg.type_name = "point";
	c.cfg.type_size = sizeof(struct point);
	c.cfg.type_hash = 0x1234;
	struct abd_service *pub, *op;
	cr_assert_eq(abd_service_publish("svc.typed", &c.cfg, 0, &pub), 0);

	struct abd_service_config want = c.cfg;
	want.type_name = "point3";
	cr_assert_eq(abd_service_open("svc.typed", &want, 0, SEC, &op), -EPROTOTYPE, "name");
	want = c.cfg;
	want.type_size = 12;
	cr_assert_eq(abd_service_open("svc.typed", &want, 0, SEC, &op), -EPROTOTYPE, "size");
	want = c.cfg;
	want.type_hash = 0x1235;
	cr_assert_eq(abd_service_open("svc.typed", &want, 0, SEC, &op), -EPROTOTYPE, "hash");

	/* the right type, and no type at all, both open */
	cr_assert_eq(abd_service_open("svc.typed", &c.cfg, 0, SEC, &op), 0);
	const char *tn;
	uint32_t ts;
	uint64_t th;
	cr_assert_eq(abd_service_type(op, &tn, &ts, &th), 0);
	cr_assert_str_eq(tn, "point");
	cr_assert_eq(ts, sizeof(struct point));
	cr_assert_eq(th, 0x1234);
	struct point p = { 1, 2 }, q;
	cr_assert_eq(abd_service_try_push(op, &p, 3), -EMSGSIZE, "a typed handle pushes whole values");
	cr_assert_eq(abd_service_try_push(op, &p, sizeof(p)), 0);
	cr_assert_eq(abd_service_pop(pub, &q, sizeof(q), SEC), (int)sizeof(q));
	cr_assert_eq(q.y, 2);
	abd_service_close(op);
	want = c.cfg;
	want.type_name = NULL;
	want.type_size = 0;
	cr_assert_eq(abd_service_open("svc.typed", &want, 0, SEC, &op), 0);
	abd_service_close(op);
	abd_service_close(pub);
	ctx_fini(&c);
}

ABD_TEST(service, a_plain_record_is_not_a_ring_service)
{
	struct ctx c;
	ctx_init(&c);
	struct abd_registry *reg;
	struct abd_record *rec;
	struct abd_publication *pubn;
	cr_assert_eq(abd_registry_open(c.dir, 0, &reg, NULL, 0), 0);
	cr_assert_eq(abd_record_new("svc.plain", &rec), 0);
	cr_assert_eq(abd_publish(reg, rec, &pubn), 0);
	struct abd_service *op;
	cr_assert_eq(abd_service_open("svc.plain", &c.cfg, 0, SEC, &op), -EPROTONOSUPPORT);
	abd_withdraw(pubn);
	abd_record_free(rec);
	abd_registry_free(reg);
	ctx_fini(&c);
}

/* ---------------------------------------------------------------- waiting -- */

ABD_TEST(service, open_times_out_when_absent)
{
	struct ctx c;
	ctx_init(&c);
	struct abd_service *op = (struct abd_service *)&c; /* must be reset to NULL */
	cr_assert_eq(abd_service_open("svc.absent", &c.cfg, 0, 0, &op), -ETIMEDOUT);
	cr_assert_null(op);
	cr_assert_eq(abd_service_open("svc.absent", &c.cfg, 0, 100 * 1000 * 1000, &op), -ETIMEDOUT);
	ctx_fini(&c);
}

struct late_pub {
	struct child_pub p;
	int delay_ms;
};

static int late_pub_main(void *arg)
{
	struct late_pub *l = arg;
	struct timespec ts = { 0, l->delay_ms * 1000000l };
	nanosleep(&ts, NULL);
	return child_pub_main(&l->p);
}

ABD_TEST(service, open_waits_for_a_publisher_to_appear)
{
	struct ctx c;
	ctx_init(&c);
	int fds[2];
	cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
	struct late_pub l = { .p = { .dir = c.dir, .name = "svc.late", .ready_w = fds[1], .msgs = 1 },
	                      .delay_ms = 200 };
	pid_t pid = abd_test_fork(late_pub_main, &l);
	close(fds[1]);
	struct abd_service *op;
	int r = abd_service_open("svc.late", &c.cfg, ABD_SERVICE_CONSUMER, 10 * SEC, &op);
	cr_assert_eq(r, 0, "open: %d", r);
	uint64_t v = 99;
	cr_assert_eq(abd_service_pop(op, &v, sizeof(v), 5 * SEC), 8);
	cr_assert_eq(v, 0);
	abd_service_close(op);
	kill(pid, SIGTERM);
	cr_assert_eq(abd_test_wait(pid), 0);
	close(fds[0]);
	ctx_fini(&c);
}

static void nap_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000l };
	nanosleep(&ts, NULL);
}

/* ---------------------------------------------------------------- waiting for a name -- */

/* An opener in a process of its own: open `name` (20 s at most) as a consumer, with its own
 * reactor or a given one, under a SIGUSR1 handler with sa_flags. The exit status is the open's
 * errno (0: opened). */
struct opener {
	const char *dir, *name;
	bool given;
	int sa_flags;
	int ready_w; /* written just before the open */
};

static void on_usr1_opener(int sig)
{
	(void)sig;
}

static int opener_main(void *arg)
{
	struct opener *o = arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	struct sigaction sa = { 0 };
	sa.sa_handler = on_usr1_opener;
	sa.sa_flags = o->sa_flags;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	struct abd_service_config cfg = { 0 };
	cfg.dir = o->dir;
	if (o->given && abd_reactor_new(0, &cfg.reactor) < 0)
		return 100;
	if (write(o->ready_w, "R", 1) != 1)
		return 101;
	struct abd_service *svc;
	int r = abd_service_open(o->name, &cfg, ABD_SERVICE_CONSUMER, 20 * SEC, &svc);
	abd_service_close(svc);
	abd_reactor_free(cfg.reactor);
	return -r;
}

/* Start an opener; after settle_ms it has reached its sleep (its first lookup found nothing). */
static pid_t start_opener(struct opener *o, long settle_ms)
{
	int fds[2];
	cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
	o->ready_w = fds[1];
	pid_t pid = abd_test_fork(opener_main, o);
	close(fds[1]);
	char c;
	cr_assert_eq(read(fds[0], &c, 1), 1, "the opener child died before opening");
	close(fds[0]);
	nap_ms(settle_ms);
	return pid;
}

/* Publish o's name from another process: the opener must open it within 3 s (it ends with
 * status 0). Returns the milliseconds from the publication to the opener's end. */
static uint64_t publish_for(const struct opener *o, pid_t op)
{
	uint64_t t0 = abd_test_now_ns();
	struct child_pub p = { .dir = o->dir, .name = o->name, .flags = ABD_SERVICE_PRODUCER };
	pid_t pub = start_child_pub(&p);
	int st = abd_test_wait_within(op, 3 * SEC);
	uint64_t ms = (abd_test_now_ns() - t0) / 1000000;
	kill(pub, SIGTERM);
	cr_expect_eq(abd_test_wait(pub), 0);
	cr_assert_eq(st, 0, "%s: the opener ended with %d (-2: still waiting 3 s after the "
	             "publication)", o->name, st);
	return ms;
}

/* An opener waiting for a name nobody publishes sleeps: no periodic look (a count of its
 * wake-ups, not a timing). When another process publishes the name, inotify wakes it and it
 * opens at once. */
static void open_sleeps_until_published(bool given)
{
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct opener o = { .dir = dir, .name = "svc.later", .given = given };
	pid_t op = start_opener(&o, 0);
	abd_test_wait_asleep(op);
	long before = abd_test_ctxsw(op);
	nap_ms(2000);
	long woke = abd_test_ctxsw(op) - before;
	cr_expect_geq(before, 0);
	/* a look once a second would be 2 here */
	cr_expect_leq(woke, 1, "an opener waiting for a missing name woke %ld times in 2 s", woke);
	uint64_t ms = publish_for(&o, op);
	cr_expect_lt(ms, 500, "the opener took %llu ms to open a published name",
	             (unsigned long long)ms);
	abd_test_rmtree(dir);
}

ABD_TEST(service, open_sleeps_until_the_name_is_published)
{
	open_sleeps_until_published(false);
}

ABD_TEST(service, open_sleeps_until_the_name_is_published_given_reactor)
{
	open_sleeps_until_published(true);
}

/* A signal handler that runs while open waits ends it with -EINTR, with or without
 * SA_RESTART, own reactor or a given one. A signal every 50 ms: one that lands between two
 * syscalls interrupts nothing (the classic window), and that is not what this is about. */
static void open_interrupted(int sa_flags, bool given)
{
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct opener o = { .dir = dir, .name = "svc.never", .given = given, .sa_flags = sa_flags };
	pid_t op = start_opener(&o, 300);
	uint64_t t0 = abd_test_now_ns(), end = t0 + 5 * SEC;
	int status;
	pid_t w;
	while ((w = waitpid(op, &status, WNOHANG)) == 0 && abd_test_now_ns() < end) {
		kill(op, SIGUSR1);
		nap_ms(50);
	}
	uint64_t ms = (abd_test_now_ns() - t0) / 1000000;
	if (w == 0) {
		kill(op, SIGKILL);
		abd_test_wait(op);
	}
	cr_assert_eq(w, op, "the opener still waited after 5 s of SIGUSR1 every 50 ms");
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == EINTR,
	          "the interrupted open ended with status %#x, not -EINTR", status);
	cr_expect_lt(ms, 1000, "-EINTR after %llu ms", (unsigned long long)ms);
	abd_test_rmtree(dir);
}

ABD_TEST(service, a_signal_interrupts_a_waiting_open)
{
	open_interrupted(0, false);
	open_interrupted(SA_RESTART, false);
}

ABD_TEST(service, a_signal_interrupts_a_waiting_open_given_reactor)
{
	open_interrupted(0, true);
	open_interrupted(SA_RESTART, true);
}

/* A debugger's attach (PTRACE_SEIZE + PTRACE_INTERRUPT, then detach) and SIGSTOP/SIGCONT end
 * the opener's sleep with no handler run: the open goes on waiting and opens the name when it
 * is published. */
static void open_survives_stops(bool given)
{
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct opener o = { .dir = dir, .name = "svc.traced", .given = given };
	pid_t op = start_opener(&o, 300);
	abd_test_stops_leave_running(op, 3);
	publish_for(&o, op);
	abd_test_rmtree(dir);
}

ABD_TEST(service, open_waits_on_through_ptrace_and_job_stops)
{
	open_survives_stops(false);
}

ABD_TEST(service, open_waits_on_through_ptrace_and_job_stops_given_reactor)
{
	open_survives_stops(true);
}

/* A publication while the opener is inside a lookup (listing a directory made slow by
 * thousands of other entries) is not missed: the watch exists before the first lookup and
 * reports it. Rounds start the publisher at staggered delays across the opener's first look. */
ABD_TEST(service, open_sees_a_publication_made_during_its_lookup)
{
	char dir[256], path[320];
	abd_test_mkdtemp(dir, sizeof(dir));
	unsigned junk = (unsigned)abd_test_scaled(20000, 2000);
	for (unsigned i = 0; i < junk; i++) {
		snprintf(path, sizeof(path), "%s/other.%u", dir, i);
		int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
		cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
		close(fd);
	}
	/* how long one look takes here: the delays spread over it */
	struct abd_registry *reg;
	struct abd_record *rec;
	cr_assert_eq(abd_registry_open(dir, 0, &reg, NULL, 0), 0);
	uint64_t t = abd_test_now_ns();
	cr_assert_eq(abd_registry_lookup(reg, "svc.race", &rec), -ENOENT);
	uint64_t look_us = (abd_test_now_ns() - t) / 1000;
	abd_registry_free(reg);
	unsigned rounds = 12;
	for (unsigned i = 0; i < rounds; i++) {
		char name[32];
		snprintf(name, sizeof(name), "svc.race%u", i);
		struct opener o = { .dir = dir, .name = name };
		pid_t op = start_opener(&o, 0);
		/* the opener's watch and its first look each list the directory once */
		uint64_t delay_us = look_us * 3 * i / rounds;
		struct timespec ts = { (time_t)(delay_us / 1000000), (long)(delay_us % 1000000) * 1000 };
		nanosleep(&ts, NULL);
		publish_for(&o, op);
	}
	abd_test_rmtree(dir);
}

/* The registry directory is replaced while an opener waits (renameat2 RENAME_EXCHANGE: the
 * old one moves aside, a new one takes its path) and the service is published in the new one:
 * the watch's IN_MOVE_SELF makes the opener open the path again, and it finds it. */
ABD_TEST(service, open_follows_a_replaced_registry_directory)
{
	char dir[256], aside[300];
	abd_test_mkdtemp(dir, sizeof(dir));
	snprintf(aside, sizeof(aside), "%s.aside", dir);
	cr_assert_eq(mkdir(aside, 0700), 0, "mkdir: %s", strerror(errno));
	struct opener o = { .dir = dir, .name = "svc.moved" };
	pid_t op = start_opener(&o, 300);
	cr_assert_eq(renameat2(AT_FDCWD, aside, AT_FDCWD, dir, RENAME_EXCHANGE), 0,
	             "renameat2: %s", strerror(errno));
	publish_for(&o, op);
	abd_test_rmtree(dir);
	abd_test_rmtree(aside);
}

/* ---------------------------------------------------------------- the publisher leaves -- */

struct seen {
	int closed, status, readable;
};

static void on_event(struct abd_service *svc, enum abd_service_event ev, int status, void *ud)
{
	(void)svc;
	struct seen *s = ud;
	if (ev == ABD_SERVICE_EVENT_CLOSED) {
		s->closed++;
		s->status = status;
	} else if (ev == ABD_SERVICE_EVENT_READABLE) {
		s->readable++;
	}
}

static void run_until(struct abd_reactor *r, const int *flag, int64_t timeout_ns)
{
	uint64_t end = abd_test_now_ns() + (uint64_t)timeout_ns;
	while (!*flag && abd_test_now_ns() < end)
		abd_reactor_run_once(r, 50 * 1000 * 1000);
}

static void publisher_leaves(bool crash, bool force_epoll)
{
	struct ctx c;
	memset(&c, 0, sizeof(c));
	abd_test_mkdtemp(c.dir, sizeof(c.dir));
	cr_assert_eq(abd_reactor_new(force_epoll ? ABD_REACTOR_FORCE_EPOLL : 0, &c.reactor), 0);
	c.cfg.dir = c.dir;
	c.cfg.reactor = c.reactor;
	struct child_pub p = { .dir = c.dir, .name = "svc.leaves", .msgs = 3,
	                       .flags = ABD_SERVICE_PRODUCER };
	pid_t pid = start_child_pub(&p);
	struct abd_service *cons, *prod;
	cr_assert_eq(abd_service_open("svc.leaves", &c.cfg, ABD_SERVICE_CONSUMER, 5 * SEC, &cons), 0);
	cr_assert_eq(abd_service_open("svc.leaves", &c.cfg, ABD_SERVICE_PRODUCER, 5 * SEC, &prod), 0);
	struct seen seen = { 0 };
	cr_assert_eq(abd_service_set_event_fn(cons, on_event, &seen), 0);
	/* the three messages are in (the child pushed them before serving) */
	struct abd_service_stats st;
	uint64_t end = abd_test_now_ns() + 5 * SEC;
	do
		cr_assert_eq(abd_service_stats(cons, &st), 0);
	while (st.pushed < 3 && abd_test_now_ns() < end);
	cr_assert_eq(st.pushed, 3);
	cr_assert_eq(abd_service_try_push(prod, &(uint64_t){ 3 }, 8), 0);

	kill(pid, crash ? SIGKILL : SIGTERM);
	cr_assert_eq(abd_test_wait(pid), crash ? 128 + SIGKILL : 0);
	run_until(c.reactor, &seen.closed, 5 * SEC);
	cr_assert_eq(seen.closed, 1, "the CLOSED event arrived once");
	cr_assert_eq(seen.status, crash ? -ECONNRESET : -ESHUTDOWN, "status %d", seen.status);
	cr_assert_eq(abd_service_closed(cons), crash ? -ECONNRESET : -ESHUTDOWN);
	/* producers are refused at once; what was committed is still delivered, then -EPIPE */
	cr_assert_eq(abd_service_try_push(prod, &(uint64_t){ 4 }, 8), -EPIPE);
	cr_assert_eq(abd_service_push(prod, &(uint64_t){ 4 }, 8, SEC), -EPIPE);
	abd_service_close(prod);
	for (uint64_t i = 0; i < 4; i++) {
		uint64_t v = 99;
		cr_assert_eq(abd_service_try_pop(cons, &v, sizeof(v)), 8, "message %lu", (unsigned long)i);
		cr_assert_eq(v, i);
	}
	cr_assert_eq(abd_service_try_pop(cons, &(uint64_t){ 0 }, 8), -EPIPE);
	cr_assert_eq(abd_service_pop(cons, &(uint64_t){ 0 }, 8, SEC), -EPIPE);
	abd_service_close(cons);
	ctx_fini(&c);
}

ABD_TEST(service, publisher_withdraws_event_and_epipe)
{
	publisher_leaves(false, false);
}

ABD_TEST(service, publisher_killed_event_and_epipe)
{
	publisher_leaves(true, false);
}

ABD_TEST(service, publisher_killed_event_and_epipe_epoll)
{
	publisher_leaves(true, true);
}

/* A consumer asleep in a blocking pop, with nobody running its reactor, wakes with -EPIPE
 * when the publisher is killed. */
ABD_TEST(service, blocking_pop_ends_when_the_publisher_dies)
{
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct child_pub p = { .dir = dir, .name = "svc.sleep", .flags = ABD_SERVICE_PRODUCER };
	pid_t pid = start_child_pub(&p);
	struct abd_service_config cfg = { 0 };
	cfg.dir = dir;
	struct abd_service *cons;
	cr_assert_eq(abd_service_open("svc.sleep", &cfg, ABD_SERVICE_CONSUMER, 5 * SEC, &cons), 0);
	pid_t killer = fork();
	cr_assert_geq(killer, 0);
	if (killer == 0) {
		struct timespec ts = { 0, 200 * 1000 * 1000 };
		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		_exit(0);
	}
	char b[8];
	int r = abd_service_pop(cons, b, sizeof(b), 20 * SEC);
	cr_assert_eq(r, -EPIPE, "pop: %d", r);
	cr_assert_eq(abd_service_closed(cons), -ECONNRESET);
	abd_test_wait(killer);
	abd_test_wait(pid);
	abd_service_close(cons);
	abd_test_rmtree(dir);
}

/* The publisher's own close: openers see -EPIPE at once (the ring's closed word), before any
 * registry event. */
ABD_TEST(service, close_marks_the_ring_for_every_opener)
{
	struct ctx c;
	ctx_init(&c);
	struct abd_service *pub, *op;
	cr_assert_eq(abd_service_publish("svc.close", &c.cfg, 0, &pub), 0);
	cr_assert_eq(abd_service_open("svc.close", &c.cfg, 0, 2 * SEC, &op), 0);
	abd_service_close(pub);
	cr_assert_eq(abd_service_try_push(op, "x", 1), -EPIPE);
	cr_assert_eq(abd_service_try_pop(op, &(char){ 0 }, 1), -EPIPE);
	cr_assert_eq(abd_service_closed(op), -ESHUTDOWN);
	abd_service_close(op);
	ctx_fini(&c);
}

/* ---------------------------------------------------------------- READABLE -- */

ABD_TEST(service, readable_event_on_a_shared_reactor)
{
	struct ctx c;
	ctx_init(&c);
	struct abd_service *pub, *op;
	cr_assert_eq(abd_service_publish("svc.readable", &c.cfg, ABD_SERVICE_CONSUMER, &pub), 0);
	cr_assert_eq(abd_service_open("svc.readable", &c.cfg, ABD_SERVICE_PRODUCER, 2 * SEC, &op), 0);
	struct seen seen = { 0 };
	cr_assert_eq(abd_service_set_event_fn(pub, on_event, &seen), 0);
	for (int round = 0; round < 3; round++) {
		int before = seen.readable;
		cr_assert_eq(abd_service_try_push(op, "ping", 4), 0);
		uint64_t end = abd_test_now_ns() + 5 * SEC;
		char b[8];
		int got = 0;
		while (!got && abd_test_now_ns() < end) {
			abd_reactor_run_once(c.reactor, 50 * 1000 * 1000);
			if (seen.readable > before)
				got = abd_service_try_pop(pub, b, sizeof(b)) == 4;
		}
		cr_assert(got, "round %d: READABLE then the message", round);
	}
	abd_service_close(op);
	abd_service_close(pub);
	ctx_fini(&c);
}

/* ---------------------------------------------------------------- access policy -- */

struct other_user {
	const char *dir;
	int result_w;
};

static int other_user_main(void *arg)
{
	struct other_user *o = arg;
	if (setgroups(0, NULL) < 0 || setresgid(OTHER_UID, OTHER_UID, OTHER_UID) < 0 ||
	    setresuid(OTHER_UID, OTHER_UID, OTHER_UID) < 0)
		return 90;
	prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
	struct abd_service_config cfg = { 0 };
	cfg.dir = o->dir;
	struct abd_service *svc;
	int r[2];
	r[0] = abd_service_open("svc.private", &cfg, ABD_SERVICE_PRODUCER, 2 * SEC, &svc);
	if (r[0] == 0)
		abd_service_close(svc);
	r[1] = abd_service_open("svc.shared", &cfg, ABD_SERVICE_PRODUCER, 2 * SEC, &svc);
	if (r[1] == 0) {
		r[1] = abd_service_push(svc, "from-1001", 9, SEC);
		abd_service_close(svc);
	}
	return write(o->result_w, r, sizeof(r)) == (ssize_t)sizeof(r) ? 0 : 91;
}

ABD_TEST(service, access_denied_for_another_uid)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to run a second uid (setresuid)");
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	cr_assert_eq(chmod(dir, 01777), 0);
	struct child_pub priv = { .dir = dir, .name = "svc.private" };
	struct child_pub shared = { .dir = dir, .name = "svc.shared", .allow_uid = OTHER_UID,
	                            .flags = ABD_SERVICE_CONSUMER };
	pid_t p1 = start_child_pub(&priv), p2 = start_child_pub(&shared);
	int fds[2];
	cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
	struct other_user o = { dir, fds[1] };
	pid_t u = abd_test_fork(other_user_main, &o);
	close(fds[1]);
	int r[2] = { 1, 1 };
	cr_assert_eq(read(fds[0], r, sizeof(r)), (ssize_t)sizeof(r));
	close(fds[0]);
	cr_assert_eq(abd_test_wait(u), 0);
	cr_assert_eq(r[0], -EACCES, "the default policy refuses uid %d: %d", OTHER_UID, r[0]);
	cr_assert_eq(r[1], 0, "an allowed uid opens and pushes: %d", r[1]);
	kill(p1, SIGTERM);
	kill(p2, SIGTERM);
	cr_assert_eq(abd_test_wait(p1), 0);
	cr_assert_eq(abd_test_wait(p2), 0);
	abd_test_rmtree(dir);
}

/* ---------------------------------------------------------------- who may publish -- */

#define PUB_USER 1000 /* an ordinary uid (and gid) */

/* root publishes svc.who, then uid PUB_USER publishes it too (later by every clock). root's
 * open takes root's service; the user's only when the configuration trusts that uid or
 * group; with root's gone, never the user's by default (the wait times out). */
ABD_TEST(service, open_takes_only_trusted_publishers)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to publish as uid %d (setresuid)", PUB_USER);
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	cr_assert_eq(chmod(dir, 01777), 0);
	struct child_pub root_pub = { .dir = dir, .name = "svc.who" };
	struct child_pub user_pub = { .dir = dir, .name = "svc.who", .as_uid = PUB_USER };
	pid_t pr = start_child_pub(&root_pub);
	nap_ms(20);
	pid_t pu = start_child_pub(&user_pub);
	struct abd_service_config cfg = { 0 };
	cfg.dir = dir;
	struct abd_service *svc;
	cr_assert_eq(abd_service_open("svc.who", &cfg, ABD_SERVICE_PRODUCER, 2 * SEC, &svc), 0);
	cr_assert_eq(abd_service_publisher_pid(svc), pr, "opened uid %d's service (pid %d)",
	             PUB_USER, (int)abd_service_publisher_pid(svc));
	abd_service_close(svc);

	uid_t uids[1] = { PUB_USER };
	gid_t gids[1] = { PUB_USER }, other[1] = { PUB_USER + 4242 };
	cfg.publisher_uids = uids;
	cfg.n_publisher_uids = 1;
	cr_assert_eq(abd_service_open("svc.who", &cfg, ABD_SERVICE_PRODUCER, 2 * SEC, &svc), 0);
	cr_assert_eq(abd_service_publisher_pid(svc), pu, "trusting uid %d: its newer service", PUB_USER);
	cr_assert_eq(abd_service_push(svc, "hello", 5, SEC), 0);
	abd_service_close(svc);

	kill(pr, SIGTERM);
	cr_assert_eq(abd_test_wait(pr), 0);
	cfg.publisher_uids = NULL;
	cfg.n_publisher_uids = 0;
	svc = NULL;
	cr_assert_eq(abd_service_open("svc.who", &cfg, ABD_SERVICE_PRODUCER, SEC / 4, &svc),
	             -ETIMEDOUT, "only uid %d's service is alive: not ours to open", PUB_USER);
	cr_assert_null(svc);
	cfg.publisher_gids = other;
	cfg.n_publisher_gids = 1;
	cr_assert_eq(abd_service_open("svc.who", &cfg, ABD_SERVICE_PRODUCER, SEC / 4, &svc),
	             -ETIMEDOUT);
	cfg.publisher_gids = gids;
	cr_assert_eq(abd_service_open("svc.who", &cfg, ABD_SERVICE_PRODUCER, 2 * SEC, &svc), 0,
	             "trusting gid %d", PUB_USER);
	cr_assert_eq(abd_service_publisher_pid(svc), pu);
	abd_service_close(svc);

	cfg.n_publisher_gids = ABD_SERVICE_ALLOW_MAX + 1;
	cr_assert_eq(abd_service_open("svc.who", &cfg, ABD_SERVICE_PRODUCER, 0, &svc), -E2BIG);
	cfg.publisher_gids = NULL;
	cfg.n_publisher_gids = 1;
	cr_assert_eq(abd_service_open("svc.who", &cfg, ABD_SERVICE_PRODUCER, 0, &svc), -EINVAL);

	kill(pu, SIGTERM);
	cr_assert_eq(abd_test_wait(pu), 0);
	abd_test_rmtree(dir);
}

/* A publisher of svc.flaky that looks like a ring service but whose handshake socket accepts
 * each connection and hangs up at once. It counts the connections and reports the count on
 * SIGTERM. */
struct flaky {
	const char *dir;
	int ready_w, count_w;
};

static int flaky_main(void *arg)
{
	struct flaky *f = arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	signal(SIGTERM, on_term);
	struct abd_registry *reg;
	if (abd_registry_open(f->dir, 0, &reg, NULL, 0) < 0)
		return 20;
	uint8_t rnd[16];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return 21;
	char name[64] = ".abd-";
	for (int i = 0; i < 16; i++)
		snprintf(name + 5 + 2 * i, 3, "%02x", rnd[i]);
	strcat(name, ".sock");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", f->dir, name);
	int l = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l, 64) < 0)
		return 22;
	int memfd = memfd_create("flaky", MFD_CLOEXEC);
	struct abd_record *rec;
	struct abd_publication *pub;
	if (memfd < 0 || ftruncate(memfd, 4096) < 0 || abd_record_new("svc.flaky", &rec) < 0 ||
	    abd_record_add_fd(rec, "ring", memfd, ABD_FD_MEMFD) < 0 ||
	    abd_record_set_socket(rec, name) < 0 ||
	    abd_record_add_meta(rec, "abd.service", "ring/2") < 0 ||
	    abd_record_add_meta(rec, "abd.capacity", "2") < 0 ||
	    abd_record_add_meta(rec, "abd.slot_size", "8") < 0 ||
	    abd_record_add_meta(rec, "abd.type", "") < 0 ||
	    abd_record_add_meta(rec, "abd.type_size", "0") < 0 ||
	    abd_record_add_meta(rec, "abd.type_hash", "0000000000000000") < 0 ||
	    abd_publish(reg, rec, &pub) < 0)
		return 23;
	abd_record_free(rec);
	char ok = 1;
	if (write(f->ready_w, &ok, 1) != 1)
		return 24;
	unsigned count = 0;
	while (!child_stop) {
		struct pollfd p = { .fd = l, .events = POLLIN };
		if (poll(&p, 1, 50) <= 0)
			continue;
		int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		if (c >= 0) {
			count++;
			close(c);
		}
	}
	abd_withdraw(pub);
	unlink(sa.sun_path);
	close(l);
	close(memfd);
	abd_registry_free(reg);
	return write(f->count_w, &count, sizeof(count)) == (ssize_t)sizeof(count) ? 0 : 25;
}

/* A newer candidate that fails (its handshake hangs up) is passed over for the older one that
 * works; alone, it is tried again only after a growing back-off, not every millisecond. */
ABD_TEST(service, open_passes_over_a_failing_candidate_without_spinning)
{
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct child_pub good = { .dir = dir, .name = "svc.flaky" };
	pid_t pg = start_child_pub(&good);
	nap_ms(20);
	int ready[2], count[2];
	cr_assert_eq(pipe2(ready, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(count, O_CLOEXEC), 0);
	struct flaky fl = { dir, ready[1], count[1] };
	pid_t pf = abd_test_fork(flaky_main, &fl);
	close(ready[1]);
	close(count[1]);
	char ok = 0;
	cr_assert_eq(read(ready[0], &ok, 1), 1, "the flaky publisher failed (status %d)",
	             abd_test_wait(pf));
	close(ready[0]);

	struct abd_service_config cfg = { 0 };
	cfg.dir = dir;
	struct abd_service *svc;
	/* the handshake: the flaky one's socket is the one that fails */
	unsigned flags = ABD_SERVICE_CONSUMER | ABD_SERVICE_SCM_RIGHTS;
	uint64_t t0 = abd_test_now_ns();
	cr_assert_eq(abd_service_open("svc.flaky", &cfg, flags, 2 * SEC, &svc), 0);
	cr_assert_eq(abd_service_publisher_pid(svc), pg, "opened the failing candidate?");
	cr_log_info("the fail-over took %llu ms",
	            (unsigned long long)(abd_test_now_ns() - t0) / 1000000);
	abd_service_close(svc);

	kill(pg, SIGTERM);
	cr_assert_eq(abd_test_wait(pg), 0);
	t0 = abd_test_now_ns();
	cr_assert_eq(abd_service_open("svc.flaky", &cfg, flags, 3 * SEC / 2, &svc), -ETIMEDOUT);
	uint64_t took = abd_test_now_ns() - t0;
	kill(pf, SIGTERM);
	unsigned n = 0;
	cr_assert_eq(read(count[0], &n, sizeof(n)), (ssize_t)sizeof(n));
	close(count[0]);
	cr_assert_eq(abd_test_wait(pf), 0);
	/* back-off 1, 2, 4 ... 512 ms, then 1 s: about 12 tries in 1.5 s (+1 by the first open);
	 * a retry every millisecond would be hundreds */
	cr_assert_leq(n, 20, "%u connections to the failing candidate in %llu ms", n,
	              (unsigned long long)took / 1000000);
	cr_assert_geq(n, 2, "the failing candidate was never retried (%u)", n);
	abd_test_rmtree(dir);
}

/* ---------------------------------------------------------------- bounded cost -- */

/* One process publishing n records of other names (one descriptor each), held until the
 * parent closes the pipe. */
struct many {
	const char *dir;
	unsigned n;
	int ready_w, hold_r;
	int close_in_child[2];
};

static int many_main(void *arg)
{
	struct many *m = arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	close(m->close_in_child[0]);
	close(m->close_in_child[1]);
	struct rlimit rl = { m->n + 256, m->n + 256 };
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 30;
	struct abd_registry *reg;
	if (abd_registry_open(m->dir, 0, &reg, NULL, 0) < 0)
		return 31;
	for (unsigned i = 0; i < m->n; i++) {
		char name[32];
		snprintf(name, sizeof(name), "busy.%u", i);
		struct abd_record *rec;
		struct abd_publication *pub;
		if (abd_record_new(name, &rec) < 0 || abd_publish(reg, rec, &pub) < 0)
			return 32;
		abd_record_free(rec);
	}
	char ok = 1;
	if (write(m->ready_w, &ok, 1) != 1)
		return 33;
	char b;
	while (read(m->hold_r, &b, 1) > 0)
		;
	return 0; /* the records go stale with the process */
}

struct fd_cost {
	const char *dir;
	int result_w;
};

/* Under RLIMIT_NOFILE 1024: open svc.target, report the result and the descriptors the open
 * handle holds. */
static int fd_cost_main(void *arg)
{
	struct fd_cost *c = arg;
	struct rlimit rl = { 1024, 1024 };
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 40;
	struct abd_service_config cfg = { 0 };
	cfg.dir = c->dir;
	int res[3];
	res[1] = abd_test_count_fds();
	struct abd_service *svc = NULL;
	res[0] = abd_service_open("svc.target", &cfg, ABD_SERVICE_PRODUCER, 2 * SEC, &svc);
	res[2] = abd_test_count_fds();
	abd_service_close(svc);
	return write(c->result_w, res, sizeof(res)) == (ssize_t)sizeof(res) ? 0 : 41;
}

static void open_cost(const char *dir, int *r, int *cost)
{
	int p[2];
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	struct fd_cost c = { dir, p[1] };
	pid_t pid = abd_test_fork(fd_cost_main, &c);
	close(p[1]);
	int res[3] = { 1, 0, 0 };
	cr_assert_eq(read(p[0], res, sizeof(res)), (ssize_t)sizeof(res), "opener child: status %d",
	             abd_test_wait(pid));
	close(p[0]);
	cr_assert_eq(abd_test_wait(pid), 0);
	*r = res[0];
	*cost = res[2] - res[1];
}

/* An opened service costs the same descriptors whatever else the registry holds: with 1,100
 * alive records of another process and RLIMIT_NOFILE 1024, the open succeeds and holds as
 * many descriptors as in a registry with nothing else. */
ABD_TEST(service, open_costs_a_fixed_number_of_descriptors)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to raise RLIMIT_NOFILE for a publisher of 1,100 records");
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct child_pub target = { .dir = dir, .name = "svc.target" };
	pid_t pt = start_child_pub(&target);
	int r0, cost0, r1, cost1;
	open_cost(dir, &r0, &cost0);
	cr_assert_eq(r0, 0, "%s", strerror(-r0));

	int ready[2], hold[2];
	cr_assert_eq(pipe2(ready, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(hold, O_CLOEXEC), 0);
	struct many m = { dir, 1100, ready[1], hold[0], { ready[0], hold[1] } };
	pid_t pm = abd_test_fork(many_main, &m);
	close(ready[1]);
	close(hold[0]);
	char ok = 0;
	cr_assert_eq(read(ready[0], &ok, 1), 1, "the publisher of 1,100 records failed (status %d)",
	             abd_test_wait(pm));
	close(ready[0]);

	open_cost(dir, &r1, &cost1);
	cr_assert_eq(r1, 0, "with 1,100 other alive records under RLIMIT_NOFILE 1024: %s",
	             strerror(-r1));
	cr_assert_leq(cost1, cost0, "one open handle holds %d descriptors with 1,100 other records, "
	              "%d without", cost1, cost0);
	close(hold[1]);
	cr_assert_eq(abd_test_wait(pm), 0);
	kill(pt, SIGTERM);
	cr_assert_eq(abd_test_wait(pt), 0);
	abd_test_rmtree(dir);
}

/* ---------------------------------------------------------------- arguments -- */

ABD_TEST(service, bad_arguments)
{
	struct ctx c;
	ctx_init(&c);
	struct abd_service *s = NULL;
	struct abd_service_config cfg = c.cfg;
	cr_assert_eq(abd_service_publish(NULL, &cfg, 0, &s), -EINVAL);
	cr_assert_eq(abd_service_publish("ok", &cfg, 0, NULL), -EINVAL);
	cr_assert_eq(abd_service_publish("../x", &cfg, 0, &s), -EINVAL);
	cr_assert_eq(abd_service_publish("ok", &cfg, 1u << 20, &s), -EINVAL);
	cr_assert_eq(abd_service_publish("ok", &cfg, ABD_SERVICE_OBSERVER | ABD_SERVICE_PRODUCER, &s),
	             -EINVAL);
	cfg.capacity = 3;
	cr_assert_eq(abd_service_publish("ok", &cfg, 0, &s), -EINVAL, "capacity not a power of two");
	cfg = c.cfg;
	cfg.slot_size = 8;
	cfg.type_size = 16;
	cr_assert_eq(abd_service_publish("ok", &cfg, 0, &s), -EINVAL, "type larger than a slot");
	cfg = c.cfg;
	cfg.type_name = "bad name";
	cr_assert_eq(abd_service_publish("ok", &cfg, 0, &s), -EINVAL);
	cfg = c.cfg;
	cfg.reserved[0] = &cfg;
	cr_assert_eq(abd_service_publish("ok", &cfg, 0, &s), -EINVAL);
	cfg = c.cfg;
	cfg.n_allow_uids = ABD_SERVICE_ALLOW_MAX + 1;
	uid_t many[ABD_SERVICE_ALLOW_MAX + 1] = { 0 };
	cfg.allow_uids = many;
	cr_assert_eq(abd_service_publish("ok", &cfg, 0, &s), -E2BIG);
	cr_assert_eq(abd_service_open("ok", &c.cfg, ABD_SERVICE_PIDFD_GETFD | ABD_SERVICE_SCM_RIGHTS,
	                              0, &s),
	             -EINVAL);
	cr_assert_eq(abd_service_open("ok", &c.cfg, ABD_SERVICE_SINGLE_PRODUCER, 0, &s), -EINVAL);
	cr_assert_null(s);
	cr_assert_eq(abd_service_try_push(NULL, "x", 1), -EINVAL);
	cr_assert_eq(abd_service_try_pop(NULL, NULL, 0), -EINVAL);
	cr_assert_eq(abd_service_closed(NULL), -EINVAL);
	cr_assert_eq(abd_service_stats(NULL, NULL), -EINVAL);
	cr_assert_null(abd_service_reactor(NULL));
	abd_service_close(NULL);
	/* nothing was published by the failures */
	cr_assert_eq(abd_service_open("ok", &c.cfg, 0, 0, &s), -ETIMEDOUT);
	ctx_fini(&c);
}

ABD_TEST(service, single_producer_mode_refuses_a_second_producer)
{
	struct ctx c;
	ctx_init(&c);
	struct abd_service *pub, *p1, *p2;
	cr_assert_eq(abd_service_publish("svc.sp", &c.cfg,
	                                 ABD_SERVICE_CONSUMER | ABD_SERVICE_SINGLE_PRODUCER, &pub),
	             0);
	cr_assert_eq(abd_service_open("svc.sp", &c.cfg, ABD_SERVICE_PRODUCER, SEC, &p1), 0);
	cr_assert_eq(abd_service_open("svc.sp", &c.cfg, ABD_SERVICE_PRODUCER, SEC, &p2), -EBUSY);
	abd_service_close(p1);
	cr_assert_eq(abd_service_open("svc.sp", &c.cfg, ABD_SERVICE_PRODUCER, SEC, &p2), 0);
	abd_service_close(p2);
	abd_service_close(pub);
	ctx_fini(&c);
}

/* The service's fast paths stay the ring's: with nobody asleep, pushes and pops make no wake
 * syscall (the ring counts every one it makes), closed flag check or not. */
ABD_TEST(service, fast_path_makes_no_wake_syscall)
{
	struct ctx c;
	ctx_init(&c);
	struct abd_service *pub, *op;
	cr_assert_eq(abd_service_publish("svc.fast", &c.cfg, ABD_SERVICE_CONSUMER, &pub), 0);
	cr_assert_eq(abd_service_open("svc.fast", &c.cfg, ABD_SERVICE_PRODUCER, SEC, &op), 0);
	unsigned n = (unsigned)abd_test_scaled(100000, 1000);
	uint64_t v = 0, got = 0;
	for (unsigned i = 0; i < n; i++) {
		v = i;
		cr_assert_eq(abd_service_try_push(op, &v, sizeof(v)), 0);
		cr_assert_eq(abd_service_try_pop(pub, &got, sizeof(got)), 8);
		cr_assert_eq(got, i);
	}
	struct abd_ring_stats a, b;
	cr_assert_eq(abd_ring_stats(abd_service_ring(op), &a), 0);
	cr_assert_eq(abd_ring_stats(abd_service_ring(pub), &b), 0);
	cr_assert_eq(a.own_wakes + b.own_wakes, 0, "wake syscalls: %lu",
	             (unsigned long)(a.own_wakes + b.own_wakes));
	cr_assert_eq(a.own_waits + b.own_waits, 0);
	abd_service_close(op);
	abd_service_close(pub);
	ctx_fini(&c);
}

/* A blocking pop from inside a callback of the service's own (given) reactor cannot run that
 * reactor: it asks the registry about its publisher itself, and still ends with -EPIPE. */
struct in_cb {
	struct abd_service *cons;
	int r;
	bool ran;
};

static void pop_in_callback(struct abd_source *src, int status, uint64_t value, void *ud)
{
	(void)status, (void)value;
	struct in_cb *c = ud;
	abd_source_free(src);
	char b[8];
	c->r = abd_service_pop(c->cons, b, sizeof(b), 20 * SEC);
	c->ran = true;
}

ABD_TEST(service, blocking_pop_inside_a_callback_ends_when_the_publisher_dies)
{
	struct ctx c;
	ctx_init(&c);
	struct child_pub p = { .dir = c.dir, .name = "svc.incb", .flags = ABD_SERVICE_PRODUCER };
	pid_t pid = start_child_pub(&p);
	struct in_cb st = { 0 };
	cr_assert_eq(abd_service_open("svc.incb", &c.cfg, ABD_SERVICE_CONSUMER, 5 * SEC, &st.cons), 0);
	pid_t killer = fork();
	cr_assert_geq(killer, 0);
	if (killer == 0) {
		struct timespec ts = { 0, 200 * 1000 * 1000 };
		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		_exit(0);
	}
	struct abd_source *src;
	cr_assert_eq(abd_reactor_add_defer(c.reactor, pop_in_callback, &st, &src), 0);
	while (!st.ran)
		cr_assert_geq(abd_reactor_run_once(c.reactor, SEC), 0);
	cr_assert_eq(st.r, -EPIPE, "pop: %d", st.r);
	cr_assert_eq(abd_service_closed(st.cons), -ECONNRESET);
	abd_test_wait(killer);
	abd_test_wait(pid);
	abd_service_close(st.cons);
	ctx_fini(&c);
}

/* An event-driven consumer reaches -EPIPE from events alone when the last producer leaves
 * after the publisher withdrew: a closed ring ends for consumers only once no producer is
 * attached, so that producer's leaving must wake them (else the consumer saw -EAGAIN last and
 * waits forever). */
struct drain {
	int messages, done, last, closed;
};

static void drain_on_event(struct abd_service *svc, enum abd_service_event ev, int status,
                           void *ud)
{
	(void)status;
	struct drain *d = ud;
	d->closed |= ev == ABD_SERVICE_EVENT_CLOSED;
	char b[16];
	for (;;) {
		int r = abd_service_try_pop(svc, b, sizeof(b));
		d->last = r;
		if (r == -EPIPE)
			d->done = 1;
		if (r < 0)
			break;
		d->messages++;
	}
}

struct late_producer {
	const char *dir;
	int ready_w, go_r;
};

static int late_producer_main(void *arg)
{
	struct late_producer *lp = arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	struct abd_service_config cfg = { 0 };
	cfg.dir = lp->dir;
	struct abd_service *svc;
	int r = abd_service_open("svc.drain", &cfg, ABD_SERVICE_PRODUCER, 5 * SEC, &svc);
	char ok = r == 0;
	if (write(lp->ready_w, &ok, 1) != 1 || r < 0)
		return 10;
	char go;
	if (read(lp->go_r, &go, 1) != 1)
		return 11;
	abd_service_close(svc); /* the publisher is gone by now: this is the last producer */
	return 0;
}

ABD_TEST(service, event_driven_consumer_ends_when_the_last_producer_leaves)
{
	struct ctx c;
	ctx_init(&c);
	struct child_pub p = { .dir = c.dir, .name = "svc.drain", .flags = ABD_SERVICE_PRODUCER,
		               .msgs = 3 };
	pid_t pub = start_child_pub(&p);
	int ready[2], go[2];
	cr_assert_eq(pipe2(ready, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(go, O_CLOEXEC), 0);
	struct late_producer lp = { .dir = c.dir, .ready_w = ready[1], .go_r = go[0] };
	pid_t prod = abd_test_fork(late_producer_main, &lp);
	close(ready[1]);
	close(go[0]);
	char ok = 0;
	cr_assert_eq(read(ready[0], &ok, 1), 1);
	cr_assert_eq(ok, 1, "the producer opened the service");
	close(ready[0]);

	struct abd_service *op;
	cr_assert_eq(abd_service_open("svc.drain", &c.cfg, ABD_SERVICE_CONSUMER, 5 * SEC, &op), 0);
	struct drain d = { 0 };
	cr_assert_eq(abd_service_set_event_fn(op, drain_on_event, &d), 0);
	cr_assert_eq(kill(pub, SIGTERM), 0);
	cr_assert_eq(abd_test_wait(pub), 0);
	uint64_t end = abd_test_now_ns() + 10 * SEC;
	while ((!d.closed || d.messages < 3) && abd_test_now_ns() < end)
		abd_reactor_run_once(c.reactor, 100 * 1000 * 1000); /* no pop here: events only */
	cr_assert(d.closed && d.messages == 3, "closed %d, %d messages", d.closed, d.messages);
	cr_assert_eq(d.done, 0, "-EPIPE while a producer is still attached");

	cr_assert_eq(write(go[1], "x", 1), 1); /* the last producer leaves */
	close(go[1]);
	cr_assert_eq(abd_test_wait(prod), 0);
	end = abd_test_now_ns() + 10 * SEC;
	while (!d.done && abd_test_now_ns() < end)
		abd_reactor_run_once(c.reactor, 100 * 1000 * 1000);
	cr_assert(d.done, "no -EPIPE from events alone (last pop %d)", d.last);
	abd_service_close(op);
	ctx_fini(&c);
}

/* ---------------------------------------------------------------- sleeping -- */

static long my_voluntary_switches(void)
{
	FILE *f = fopen("/proc/thread-self/status", "re");
	cr_assert(f);
	char line[256];
	long v = -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "voluntary_ctxt_switches: %ld", &v) == 1)
			break;
	fclose(f);
	cr_assert_geq(v, 0);
	return v;
}

/* A consumer blocked in pop on an idle service sleeps in its reactor (io_uring FUTEX_WAIT on
 * the ring's word, beside the registry watch): it does not wake every 20 ms to look. */
ABD_TEST(service, blocking_pop_sleeps_without_periodic_wakeups)
{
	abd_test_require(ABD_FEAT_IO_URING);
	abd_test_require(ABD_FEAT_URING_FUTEX_WAIT);
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct child_pub p = { .dir = dir, .name = "svc.idle", .flags = ABD_SERVICE_PRODUCER };
	pid_t pid = start_child_pub(&p);
	struct abd_service_config cfg = { 0 };
	cfg.dir = dir;
	struct abd_service *cons;
	cr_assert_eq(abd_service_open("svc.idle", &cfg, ABD_SERVICE_CONSUMER, 5 * SEC, &cons), 0);
	char b[8];
	(void)abd_service_pop(cons, b, sizeof(b), 0); /* arm what a first wait arms */
	long before = my_voluntary_switches();
	int r = abd_service_pop(cons, b, sizeof(b), SEC);
	long woke = my_voluntary_switches() - before;
	cr_assert_eq(r, -ETIMEDOUT, "pop on an idle service: %d", r);
	/* 20 ms slices would be 50 sleeps; here two (1 ms on the futex, then the reactor), plus
	 * a few a sanitizer runtime or a busy machine adds (6 seen under RTSan) */
	cr_assert_leq(woke, 12, "an idle blocking pop slept %ld times in 1 s", woke);
	abd_service_close(cons);
	kill(pid, SIGTERM);
	abd_test_wait(pid);
	abd_test_rmtree(dir);
}

static void on_usr1(int sig)
{
	(void)sig;
}

struct poker {
	pthread_t target;
	_Atomic bool done;
};

/* A signal every 50 ms until the pop returns: one that lands while the thread runs user code
 * between two syscalls interrupts nothing (the classic EINTR window; a sanitizer build widens
 * it), and that is not what this test is about. */
static void *poke(void *arg)
{
	struct poker *k = arg;
	while (!k->done) {
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
		if (!k->done)
			pthread_kill(k->target, SIGUSR1);
	}
	return NULL;
}

/* A signal handler that ran while pop slept ends the pop with -EINTR, on every backend (so a
 * program's SIGINT flag is seen), and nothing is lost: the message pushed later arrives. */
ABD_TEST(service, a_signal_interrupts_a_blocking_pop)
{
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct sigaction sa = { 0 }, old;
	sa.sa_handler = on_usr1; /* no SA_RESTART */
	sigemptyset(&sa.sa_mask);
	cr_assert_eq(sigaction(SIGUSR1, &sa, &old), 0);
	struct abd_service_config cfg = { 0 };
	cfg.dir = dir;
	struct abd_service *pub, *cons;
	cr_assert_eq(abd_service_publish("svc.intr", &cfg, ABD_SERVICE_PRODUCER, &pub), 0);
	cr_assert_eq(abd_service_open("svc.intr", &cfg, ABD_SERVICE_CONSUMER, 5 * SEC, &cons), 0);
	struct poker k = { pthread_self(), false };
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, poke, &k), 0);
	char b[8];
	int r = abd_service_pop(cons, b, sizeof(b), 10 * SEC);
	k.done = true;
	pthread_join(t, NULL);
	cr_assert_eq(r, -EINTR, "pop interrupted by a signal handler: %d", r);
	cr_assert_eq(abd_service_push(pub, "after", 5, SEC), 0);
	cr_assert_eq(abd_service_pop(cons, b, sizeof(b), SEC), 5);
	abd_service_close(cons);
	abd_service_close(pub);
	sigaction(SIGUSR1, &old, NULL);
	abd_test_rmtree(dir);
}

/* A blocked call sleeps until there is work: a consumer blocked in pop on an empty ring and a
 * producer blocked in push on a full one make at most a handful of wake-ups in 2 s (a count
 * of voluntary context switches, not a timing), on every profile: no periodic look. When the
 * other side acts, the blocked call completes at once. */
struct blocked {
	const char *dir, *name;
	bool push;
	int ready_w;
};

static int blocked_main(void *arg)
{
	struct blocked *b = arg;
	struct abd_service_config cfg = { 0 };
	cfg.dir = b->dir;
	struct abd_service *svc;
	unsigned flags = b->push ? ABD_SERVICE_PRODUCER : ABD_SERVICE_CONSUMER;
	if (abd_service_open(b->name, &cfg, flags, 3 * SEC, &svc) < 0)
		return 10;
	int e = 0;
	if (b->push) /* fill the ring (capacity 2) without blocking */
		for (int i = 0; i < 2 && e == 0; i++)
			e = abd_service_push(svc, "f", 1, 0);
	if (e < 0 || write(b->ready_w, "r", 1) != 1)
		return 11;
	char buf[16];
	e = b->push ? abd_service_push(svc, "late", 4, 8 * SEC) : abd_service_pop(svc, buf, sizeof(buf), 8 * SEC);
	abd_service_close(svc);
	return b->push ? (e == 0 ? 0 : 12) : (e == 4 && memcmp(buf, "late", 4) == 0 ? 0 : 13);
}

static void blocked_call_sleeps(bool push)
{
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct abd_service_config cfg = { 0 };
	cfg.dir = dir;
	cfg.capacity = 2;
	cfg.slot_size = 16;
	struct abd_service *pub;
	cr_assert_eq(abd_service_publish("svc.blocked", &cfg,
	                                 push ? ABD_SERVICE_CONSUMER : ABD_SERVICE_PRODUCER, &pub), 0);
	int fds[2];
	cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
	struct blocked b = { dir, "svc.blocked", push, fds[1] };
	pid_t c = abd_test_fork(blocked_main, &b);
	close(fds[1]);
	/* serve the handshake until the child says it is about to block */
	struct pollfd p = { .fd = fds[0], .events = POLLIN };
	while (poll(&p, 1, 0) == 0)
		(void)abd_reactor_run_once(abd_service_reactor(pub), 10 * 1000 * 1000);
	char ch;
	cr_assert_eq(read(fds[0], &ch, 1), 1, "the child failed before blocking");
	close(fds[0]);
	abd_test_wait_asleep(c); /* asleep in its blocking call */
	long before = abd_test_ctxsw(c);
	nap_ms(2000);
	long woke = abd_test_ctxsw(c) - before;
	cr_expect_geq(before, 0);
	cr_expect_leq(woke, 3, "a %s blocked for 2 s woke %ld times", push ? "producer" : "consumer",
	              woke);
	uint64_t t0 = abd_test_now_ns();
	char buf[16];
	if (push)
		cr_assert_eq(abd_service_pop(pub, buf, sizeof(buf), SEC), 1, "made room");
	else
		cr_assert_eq(abd_service_push(pub, "late", 4, SEC), 0);
	int st = abd_test_wait_within(c, 3 * SEC);
	uint64_t ms = (abd_test_now_ns() - t0) / 1000000;
	cr_assert_eq(st, 0, "the blocked %s ended with %d", push ? "push" : "pop", st);
	cr_expect_lt(ms, 500, "the blocked call took %llu ms to complete", (unsigned long long)ms);
	abd_service_close(pub);
	abd_test_rmtree(dir);
}

ABD_TEST(service, a_blocked_pop_sleeps_until_a_message)
{
	blocked_call_sleeps(false);
}

ABD_TEST(service, a_blocked_push_sleeps_until_room)
{
	blocked_call_sleeps(true);
}
