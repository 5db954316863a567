/* SPDX-License-Identifier: MIT */
/* The registry watch and the acquisition handshake server on the reactor, on both backends
 * (suites reactor_services_uring and reactor_services_epoll), with real processes: a
 * publisher killed with SIGKILL is reported dead through the reactor, another process
 * acquires from a server the reactor serves, a client that connects and never speaks blocks
 * nobody, and removing either source with work in flight never calls back (ASan/UBSan). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "harness.h"
#include "tests/reactor-util.h"
#include "runtime/registry-internal.h"
#include "tests/registry-util.h"

#define REACTOR_TEST(name, ...) ABD_REACTOR_TEST(reactor_services, name, ##__VA_ARGS__)

static struct abd_reactor *new_reactor(unsigned flags)
{
	struct abd_reactor *r = NULL;
	int e = abd_reactor_new(flags, &r);
	cr_assert_eq(e, 0, "abd_reactor_new: %s", strerror(-e));
	return r;
}

/* Run the loop until cond(arg) or a generous safety bound (a failure, not a timing check). */
static void run_until(struct abd_reactor *r, bool (*cond)(void *), void *arg)
{
	uint64_t end = abd_test_now_ns() + 20ull * 1000000000u;
	while (!cond(arg)) {
		int n = abd_reactor_run_once(r, 100 * 1000 * 1000);
		cr_assert_geq(n, 0, "run_once: %s", strerror(-n));
		cr_assert_lt(abd_test_now_ns(), end, "the event never came");
	}
}

static void spin(struct abd_reactor *r, int turns)
{
	for (int i = 0; i < turns; i++)
		cr_assert_geq(abd_reactor_run_once(r, 20 * 1000 * 1000), 0);
}

/* ------------------------------------------------------------------ watch -- */

#define SEEN_MAX 64

struct seen {
	int n, added, removed, died, errors, last_status;
	char names[SEEN_MAX][128];
	enum abd_event_type types[SEEN_MAX];
	struct abd_source *src;
	bool free_source_on_first;  /* the callback frees its source at once */
	struct abd_watch *free_watch_on_first;
};

static void on_watch(struct abd_source *src, int status, enum abd_event_type type,
                     const struct abd_entry *e, void *ud)
{
	struct seen *s = ud;
	cr_assert_not_null(src);
	if (status < 0) {
		s->errors++;
		s->last_status = status;
		cr_assert_null(e);
		return;
	}
	cr_assert_not_null(e);
	if (s->n < SEEN_MAX) {
		snprintf(s->names[s->n], sizeof(s->names[0]), "%s", e->name);
		s->types[s->n] = type;
	}
	s->n++;
	if (type == ABD_EVENT_ADDED)
		s->added++;
	else if (type == ABD_EVENT_REMOVED)
		s->removed++;
	else if (type == ABD_EVENT_DIED)
		s->died++;
	if (s->free_source_on_first) {
		s->free_source_on_first = false;
		abd_source_free(src);
		s->src = NULL;
	}
	if (s->free_watch_on_first) {
		struct abd_watch *w = s->free_watch_on_first;
		s->free_watch_on_first = NULL;
		abd_watch_free(w);
	}
}

static bool got(struct seen *s, enum abd_event_type type, const char *name)
{
	for (int i = 0; i < s->n && i < SEEN_MAX; i++)
		if (s->types[i] == type && strcmp(s->names[i], name) == 0)
			return true;
	return false;
}

struct want {
	struct seen *s;
	enum abd_event_type type;
	const char *name;
};

static bool want_cb(void *arg)
{
	struct want *w = arg;
	return got(w->s, w->type, w->name);
}

static void wait_event(struct abd_reactor *r, struct seen *s, enum abd_event_type type,
                       const char *name)
{
	struct want w = { s, type, name };
	run_until(r, want_cb, &w);
}

static void watch_case(unsigned flags, unsigned watch_flags)
{
	struct scratch sc;
	scratch_open(&sc);
	struct abd_publication *before = publish_simple(sc.reg, "rw.before");
	struct abd_reactor *r = new_reactor(flags);
	struct abd_watch *w;
	cr_assert_eq(abd_watch_new(sc.reg, watch_flags, &w), 0);
	struct seen s = { 0 };
	cr_assert_eq(abd_reactor_add_watch(r, w, on_watch, &s, &s.src), 0);
	cr_assert_not_null(s.src);
	cr_assert_eq(abd_reactor_add_watch(r, w, on_watch, &s, NULL), -EBUSY, "attached twice");
	cr_assert_eq(abd_watch_process(w, NULL, NULL), -EBUSY);

	/* the first iteration reports what is there */
	wait_event(r, &s, ABD_EVENT_ADDED, abd_publication_name(before));

	/* a publisher in another process: added, then SIGKILL: died, pushed by the kernel */
	char name[128];
	int hold;
	pid_t pid = spawn_publisher(sc.dir, "rw.child", 0, name, sizeof(name), &hold);
	wait_event(r, &s, ABD_EVENT_ADDED, name);
	cr_assert_eq(s.died, 0);
	kill(pid, SIGKILL);
	cr_assert_eq(abd_test_wait(pid), 128 + SIGKILL);
	close(hold);
	wait_event(r, &s, ABD_EVENT_DIED, name);

	/* a withdrawal: removed */
	char left[128];
	snprintf(left, sizeof(left), "%s", abd_publication_name(before));
	abd_withdraw(before);
	wait_event(r, &s, ABD_EVENT_REMOVED, left);
	cr_assert_eq(s.errors, 0);
	cr_assert_eq(abd_watch_count(w), 1, "the stale record stays in the view");

	abd_source_free(s.src);
	cr_assert_eq(abd_watch_process(w, NULL, NULL), 0, "detached: usable on its own again");
	abd_watch_free(w);
	abd_reactor_free(r);
	scratch_close(&sc);
}

REACTOR_TEST(watch_reports_added_died_removed)
{
	watch_case(flags, 0);
}

REACTOR_TEST(watch_with_pidfds_reports_death)
{
	abd_test_require(ABD_FEAT_PIDFD_OPEN);
	watch_case(flags, ABD_WATCH_PIDFD);
}

/* inotify descriptors of this process in blocking mode (no O_NONBLOCK in their fdinfo). */
static int blocking_inotify_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	cr_assert_not_null(d);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		char path[300], link[64] = { 0 };
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		if (readlink(path, link, sizeof(link) - 1) < 0 || strcmp(link, "anon_inode:inotify"))
			continue;
		snprintf(path, sizeof(path), "/proc/self/fdinfo/%s", e->d_name);
		FILE *f = fopen(path, "re");
		cr_assert_not_null(f);
		char line[256];
		unsigned long flags = 0;
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "flags: %lo", &flags) == 1)
				break;
		fclose(f);
		n += !(flags & O_NONBLOCK);
	}
	closedir(d);
	return n;
}

/* abd_watch_wait sleeps in read(2) on a blocking inotify descriptor: attached to a reactor
 * afterwards, the watch must hand it over non-blocking again (a reactor never blocks in it). */
REACTOR_TEST(watch_waited_on_then_attached_reads_non_blocking)
{
	struct scratch sc;
	scratch_open(&sc);
	struct abd_watch *w;
	cr_assert_eq(abd_watch_new(sc.reg, 0, &w), 0);
	int before = blocking_inotify_fds();
	struct abd_publication *pub = publish_simple(sc.reg, "rw.waited");
	cr_assert_eq(abd_watch_wait(w, -1, NULL, NULL), 1);
	cr_assert_eq(blocking_inotify_fds(), before + 1, "the wait slept in a blocking read");
	struct abd_reactor *r = new_reactor(flags);
	struct seen s = { 0 };
	cr_assert_eq(abd_reactor_add_watch(r, w, on_watch, &s, &s.src), 0);
	cr_assert_eq(blocking_inotify_fds(), before, "attached with a blocking descriptor");
	char name[128];
	snprintf(name, sizeof(name), "%s", abd_publication_name(pub));
	abd_withdraw(pub);
	wait_event(r, &s, ABD_EVENT_REMOVED, name);
	cr_assert_eq(s.errors, 0);
	abd_source_free(s.src);
	abd_watch_free(w);
	abd_reactor_free(r);
	scratch_close(&sc);
}

/* ABD_WATCH_PIDFD: pidfds armed by abd_watch_process move to the reactor when the watch is
 * attached (one pidfd source per alive record), and each death is reported once. */
REACTOR_TEST(pidfd_sources_follow_alive_records)
{
	abd_test_require(ABD_FEAT_PIDFD_OPEN);
	struct scratch sc;
	scratch_open(&sc);
	struct abd_reactor *r = new_reactor(flags);
	struct abd_watch *w;
	cr_assert_eq(abd_watch_new(sc.reg, ABD_WATCH_PIDFD, &w), 0);
	char names[3][128];
	int holds[3];
	pid_t pids[3];
	for (int i = 0; i < 3; i++)
		pids[i] = spawn_publisher(sc.dir, "rw.many", 0, names[i], sizeof(names[i]), &holds[i]);
	/* attach after abd_watch_process armed the pidfds in the watch's own epoll: they move */
	cr_assert_eq(abd_watch_process(w, NULL, NULL), 3);
	struct seen s = { 0 };
	cr_assert_eq(abd_reactor_add_watch(r, w, on_watch, &s, &s.src), 0);
	for (int i = 0; i < 3; i++) {
		kill(pids[i], SIGKILL);
		cr_assert_eq(abd_test_wait(pids[i]), 128 + SIGKILL);
		close(holds[i]);
		wait_event(r, &s, ABD_EVENT_DIED, names[i]);
	}
	cr_assert_eq(s.added, 0, "already reported by abd_watch_process");
	abd_watch_free(w); /* removes the source too */
	abd_reactor_free(r);
	scratch_close(&sc);
}

static bool rescanned(void *arg)
{
	return abd__watch_rescans(arg) >= 1;
}

REACTOR_TEST(watch_overflow_rescans_and_reports_the_difference)
{
	long max = abd_test_read_long("/proc/sys/fs/inotify/max_queued_events");
	if (max < 0 || max > 65536)
		cr_skip_test("fs.inotify.max_queued_events is %ld: too many events to overflow", max);
	struct scratch sc;
	scratch_open(&sc);
	struct abd_publication *leaving = publish_simple(sc.reg, "ro.leaving");
	struct abd_reactor *r = new_reactor(flags);
	struct abd_watch *w;
	cr_assert_eq(abd_watch_new(sc.reg, 0, &w), 0);
	struct seen s = { 0 };
	cr_assert_eq(abd_reactor_add_watch(r, w, on_watch, &s, &s.src), 0);
	wait_event(r, &s, ABD_EVENT_ADDED, abd_publication_name(leaving));
	/* three events per cycle (create, delete, close of the unnamed file) */
	struct abd_record *rec;
	cr_assert_eq(abd_record_new("ro.flood", &rec), 0);
	for (long i = 0; i < max / 3 + 64; i++) {
		struct abd_publication *p;
		cr_assert_eq(abd_publish(sc.reg, rec, &p), 0);
		abd_withdraw(p);
	}
	abd_record_free(rec);
	char left[128];
	snprintf(left, sizeof(left), "%s", abd_publication_name(leaving));
	abd_withdraw(leaving);
	struct abd_publication *arriving = publish_simple(sc.reg, "ro.arriving");
	run_until(r, rescanned, w);
	wait_event(r, &s, ABD_EVENT_REMOVED, left);
	wait_event(r, &s, ABD_EVENT_ADDED, abd_publication_name(arriving));
	cr_assert_eq(abd_watch_count(w), 1);
	cr_assert_eq(s.errors, 0);
	abd_source_free(s.src);
	abd_watch_free(w);
	abd_reactor_free(r);
	abd_withdraw(arriving);
	scratch_close(&sc);
}

/* Free the source while its inotify read is in flight and events are queued behind it:
 * its callback never runs again. */
REACTOR_TEST(watch_removal_with_a_read_in_flight)
{
	struct scratch sc;
	scratch_open(&sc);
	struct abd_reactor *r = new_reactor(flags);
	struct abd_watch *w;
	cr_assert_eq(abd_watch_new(sc.reg, ABD_WATCH_PIDFD, &w), 0);
	struct seen s = { 0 };
	cr_assert_eq(abd_reactor_add_watch(r, w, on_watch, &s, &s.src), 0);
	spin(r, 2); /* the read and the pidfd polls are in the kernel now */
	struct abd_publication *a = publish_simple(sc.reg, "rf.a");
	abd_source_free(s.src);
	spin(r, 3);
	struct abd_publication *b = publish_simple(sc.reg, "rf.b");
	spin(r, 3);
	cr_assert_eq(s.n, 0, "a removed watch source called back");
	abd_watch_free(w);
	/* a second watch freed before the reactor ever ran: still silent, nothing leaked */
	cr_assert_eq(abd_watch_new(sc.reg, ABD_WATCH_PIDFD, &w), 0);
	cr_assert_eq(abd_reactor_add_watch(r, w, on_watch, &s, NULL), 0);
	abd_watch_free(w);
	spin(r, 2);
	cr_assert_eq(s.n, 0);
	abd_reactor_free(r);
	abd_withdraw(a);
	abd_withdraw(b);
	scratch_close(&sc);
}

/* The callback frees its own source in the middle of a batch of events: no more calls. */
REACTOR_TEST(watch_source_freed_from_its_callback)
{
	struct scratch sc;
	scratch_open(&sc);
	struct abd_publication *p[3];
	for (int i = 0; i < 3; i++)
		p[i] = publish_simple(sc.reg, "rc.svc");
	struct abd_reactor *r = new_reactor(flags);
	struct abd_watch *w;
	cr_assert_eq(abd_watch_new(sc.reg, 0, &w), 0);
	struct seen s = { .free_source_on_first = true };
	cr_assert_eq(abd_reactor_add_watch(r, w, on_watch, &s, &s.src), 0);
	spin(r, 3);
	cr_assert_eq(s.n, 1, "events after the source was freed: %d", s.n);
	abd_watch_free(w);
	/* the same with the watch itself freed from its callback */
	cr_assert_eq(abd_watch_new(sc.reg, 0, &w), 0);
	struct seen t = { .free_watch_on_first = w };
	cr_assert_eq(abd_reactor_add_watch(r, w, on_watch, &t, NULL), 0);
	spin(r, 3);
	cr_assert_eq(t.n, 1, "events after the watch was freed: %d", t.n);
	abd_reactor_free(r);
	for (int i = 0; i < 3; i++)
		abd_withdraw(p[i]);
	scratch_close(&sc);
}

/* The reactor goes first: the watch and server detach and stay usable, then free cleanly. */
REACTOR_TEST(reactor_freed_before_its_watch_and_server)
{
	struct scratch sc;
	scratch_open(&sc);
	struct abd_reactor *r = new_reactor(flags);
	struct abd_watch *w;
	cr_assert_eq(abd_watch_new(sc.reg, ABD_WATCH_PIDFD, &w), 0);
	struct seen s = { 0 };
	cr_assert_eq(abd_reactor_add_watch(r, w, on_watch, &s, NULL), 0);
	struct abd_acquire_server *srv;
	cr_assert_eq(abd_acquire_server_new(sc.reg, 0, &srv), 0);
	cr_assert_eq(abd_reactor_add_acquire_server(r, srv, NULL), 0);
	cr_assert_eq(abd_reactor_add_acquire_server(r, srv, NULL), -EBUSY);
	cr_assert_eq(abd_acquire_server_process(srv), -EBUSY);
	struct abd_publication *p = publish_simple(sc.reg, "rr.svc");
	spin(r, 2);
	abd_reactor_free(r);
	cr_assert_geq(abd_watch_process(w, NULL, NULL), 0);
	cr_assert_geq(abd_acquire_server_process(srv), 0);
	abd_acquire_server_free(srv);
	abd_watch_free(w);
	abd_withdraw(p);
	scratch_close(&sc);
}

/* ------------------------------------------------------------------ server -- */

/* The parent publishes a ring service and serves its handshake on the reactor. */
struct service {
	struct scratch sc;
	struct abd_ring *ring;
	struct abd_acquire_server *srv;
	struct abd_publication *pub;
	struct abd_source *src;
};

static void service_start(struct service *sv, struct abd_reactor *r, const char *name)
{
	memset(sv, 0, sizeof(*sv));
	scratch_open(&sv->sc);
	uint8_t nonce[16];
	cr_assert_eq(getrandom(nonce, sizeof(nonce), 0), (ssize_t)sizeof(nonce));
	cr_assert_eq(abd_ring_new(16, 64, 0, nonce, &sv->ring), 0);
	struct abd_record *rec;
	cr_assert_eq(abd_record_new(name, &rec), 0);
	cr_assert_eq(abd_record_set_instance(rec, nonce), 0);
	cr_assert_eq(abd_record_add_fd(rec, "ring", abd_ring_fd(sv->ring), ABD_FD_MEMFD), 0);
	cr_assert_eq(abd_acquire_server_new(sv->sc.reg, 0, &sv->srv), 0);
	cr_assert_eq(abd_record_set_socket(rec, abd_acquire_server_socket(sv->srv)), 0);
	cr_assert_eq(abd_publish(sv->sc.reg, rec, &sv->pub), 0);
	abd_record_free(rec);
	cr_assert_eq(abd_acquire_server_serve(sv->srv, abd_publication_record(sv->pub)), 0);
	cr_assert_eq(abd_reactor_add_acquire_server(r, sv->srv, &sv->src), 0);
}

static void service_stop(struct service *sv)
{
	abd_acquire_server_free(sv->srv); /* removes the source too */
	abd_withdraw(sv->pub);
	abd_ring_free(sv->ring);
	scratch_close(&sv->sc);
}

struct acquirer {
	const char *dir, *service;
	int count;
};

/* A consumer process: acquire by handshake `count` times; exit 0 when every one worked. */
static int acquirer_main(void *arg)
{
	struct acquirer *a = arg;
	struct abd_registry *reg;
	if (abd_registry_open(a->dir, 0, &reg, NULL, 0) < 0)
		return 10;
	struct abd_record *rec;
	if (abd_registry_lookup(reg, a->service, &rec) < 0)
		return 11;
	for (int i = 0; i < a->count; i++) {
		struct abd_acquired *got;
		int e = abd_acquire(reg, rec, ABD_ACQUIRE_SCM_RIGHTS, 5ll * 1000000000, &got);
		if (e < 0)
			return 20 + (-e & 63);
		if (abd_acquired_path(got) != ABD_FD_TRANSFER_SCM_RIGHTS ||
		    abd_acquired_fd(got, "ring") < 0)
			return 12;
		abd_acquired_free(got);
	}
	abd_record_free(rec);
	abd_registry_free(reg);
	return 0;
}

struct child_exit {
	int done;
	pid_t pid;
	int status;
};

static void on_child_exit(struct abd_source *src, int status, uint64_t v, void *ud)
{
	(void)src, (void)status, (void)v;
	struct child_exit *c = ud;
	c->status = abd_test_wait(c->pid);
	c->done = 1;
}

static bool child_done(void *arg)
{
	return ((struct child_exit *)arg)->done;
}

/* Run the reactor (which serves the handshake) until the child process exits: its exit is
 * a reactor source too (EOF of a pipe whose write end only the child holds). */
static int run_child(struct abd_reactor *r, int (*fn)(void *), void *arg)
{
	struct child_exit c = { 0 };
	int p[2];
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	c.pid = abd_test_fork(fn, arg);
	close(p[1]); /* the child's copy closes at its exit */
	struct abd_source *s;
	int e = abd_reactor_add_io(r, p[0], POLLIN, on_child_exit, &c, &s);
	cr_assert_eq(e, 0, "add_io: %s", strerror(-e));
	run_until(r, child_done, &c);
	abd_source_free(s);
	close(p[0]);
	return c.status;
}

REACTOR_TEST(handshake_served_to_another_process)
{
	struct abd_reactor *r = new_reactor(flags);
	struct service sv;
	service_start(&sv, r, "rs.svc");
	struct acquirer a = { sv.sc.dir, "rs.svc", 5 };
	cr_assert_eq(run_child(r, acquirer_main, &a), 0, "the consumer failed");
	struct abd_acquire_server_stats st;
	cr_assert_eq(abd_acquire_server_stats(sv.srv, &st), 0);
	cr_assert_eq(st.served, 5);
	cr_assert_eq(st.accepted, 1, "the repeats reuse the kept connection on the reactor too");
	service_stop(&sv);
	abd_reactor_free(r);
}

static int connect_silent(const struct service *sv)
{
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", sv->sc.dir,
	         abd_acquire_server_socket(sv->srv));
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect: %s",
	             strerror(errno));
	return fd;
}

static bool peer_closed(int fd)
{
	char b;
	struct pollfd p = { .fd = fd, .events = POLLIN };
	return poll(&p, 1, 0) == 1 && recv(fd, &b, 1, MSG_DONTWAIT) == 0;
}

struct fdset {
	const int *fds;
	int n;
};

static bool all_closed(void *arg)
{
	const struct fdset *f = arg;
	for (int i = 0; i < f->n; i++)
		if (!peer_closed(f->fds[i]))
			return false;
	return true;
}

struct expired {
	struct abd_acquire_server *srv;
	uint64_t want;
};

static bool expired_cb(void *arg)
{
	struct expired *x = arg;
	struct abd_acquire_server_stats st;
	abd_acquire_server_stats(x->srv, &st);
	return st.expired >= x->want;
}

REACTOR_TEST(silent_clients_block_nobody)
{
	struct abd_reactor *r = new_reactor(flags);
	struct service sv;
	service_start(&sv, r, "rh.svc");
	cr_assert_eq(abd_acquire_server_set_timeout(sv.srv, 200ll * 1000000), 0);
	cr_assert_eq(abd_acquire_server_set_max_pending(sv.srv, 4), 0);
	/* six clients connect and never speak: the server keeps four, evicting the oldest */
	int silent[6];
	for (int i = 0; i < 6; i++) {
		silent[i] = connect_silent(&sv);
		spin(r, 1);
	}
	spin(r, 2);
	struct abd_acquire_server_stats st;
	cr_assert_eq(abd_acquire_server_stats(sv.srv, &st), 0);
	cr_assert_eq(st.pending, 4, "pending %llu", (unsigned long long)st.pending);
	cr_assert_eq(st.evicted, 2);
	/* meanwhile another process acquires, several times */
	struct acquirer a = { sv.sc.dir, "rh.svc", 3 };
	cr_assert_eq(run_child(r, acquirer_main, &a), 0, "a silent client blocked the consumer");
	/* and the silent ones are dropped at their deadline by the reactor's timer */
	struct expired x = { sv.srv, 1 };
	run_until(r, expired_cb, &x);
	/* every silent client is disconnected (io_uring: once the cancelled polls are back) */
	run_until(r, all_closed, &(struct fdset){ silent, 6 });
	cr_assert_eq(abd_acquire_server_stats(sv.srv, &st), 0);
	cr_assert_eq(st.served, 3);
	cr_assert_eq(st.pending, 0);
	/* each silent client was evicted or expired (a consumer caught between connect and
	 * send is pending for a moment and may evict one more) */
	cr_assert_eq(st.expired + st.evicted, 6);
	for (int i = 0; i < 6; i++)
		close(silent[i]);
	service_stop(&sv);
	abd_reactor_free(r);
}

/* Removing the server's source with connections pending and polls in flight: they are
 * closed, nothing calls back, the server works on its own again. */
REACTOR_TEST(server_removal_with_connections_pending)
{
	struct abd_reactor *r = new_reactor(flags);
	struct service sv;
	service_start(&sv, r, "rp.svc");
	int silent[3];
	for (int i = 0; i < 3; i++)
		silent[i] = connect_silent(&sv);
	spin(r, 2);
	struct abd_acquire_server_stats st;
	cr_assert_eq(abd_acquire_server_stats(sv.srv, &st), 0);
	cr_assert_eq(st.pending, 3);
	abd_source_free(sv.src);
	/* io_uring: the cancelled polls let go of the sockets as their completions come back */
	run_until(r, all_closed, &(struct fdset){ silent, 3 });
	for (int i = 0; i < 3; i++)
		close(silent[i]);
	int late = connect_silent(&sv);
	spin(r, 3); /* the reactor no longer serves: the late client stays unanswered */
	cr_assert_eq(abd_acquire_server_stats(sv.srv, &st), 0);
	cr_assert_eq(st.pending, 0);
	cr_assert_geq(abd_acquire_server_process(sv.srv), 0);
	cr_assert_eq(abd_acquire_server_stats(sv.srv, &st), 0);
	cr_assert_eq(st.pending, 1, "the server serves on its own again");
	close(late);
	/* attach again, then free the server itself with the reactor's polls in flight */
	cr_assert_eq(abd_reactor_add_acquire_server(r, sv.srv, NULL), 0);
	spin(r, 1);
	abd_acquire_server_free(sv.srv);
	spin(r, 2);
	abd_withdraw(sv.pub);
	abd_ring_free(sv.ring);
	scratch_close(&sv.sc);
	abd_reactor_free(r);
}

ABD_TEST(reactor_services, bad_arguments)
{
	struct abd_reactor *r;
	cr_assert_eq(abd_reactor_new(0, &r), 0);
	struct abd_source *s = (struct abd_source *)1;
	cr_assert_eq(abd_reactor_add_watch(r, NULL, on_watch, NULL, &s), -EINVAL);
	cr_assert_null(s);
	cr_assert_eq(abd_reactor_add_watch(NULL, NULL, on_watch, NULL, NULL), -EINVAL);
	cr_assert_eq(abd_reactor_add_acquire_server(r, NULL, NULL), -EINVAL);
	cr_assert_eq(abd_reactor_add_acquire_server(NULL, NULL, NULL), -EINVAL);
	struct scratch sc;
	scratch_open(&sc);
	struct abd_watch *w;
	cr_assert_eq(abd_watch_new(sc.reg, 0, &w), 0);
	cr_assert_eq(abd_reactor_add_watch(r, w, NULL, NULL, NULL), -EINVAL);
	abd_watch_free(w);
	abd_reactor_free(r);
	scratch_close(&sc);
}
