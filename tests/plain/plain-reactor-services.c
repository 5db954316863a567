/* SPDX-License-Identifier: MIT */
/* Plain subset (MSan, TSan): the registry watch and the handshake server on the reactor, on
 * each backend this profile has. A child publisher killed with SIGKILL is reported dead
 * through the reactor; a consumer process acquires from the server the reactor serves while a
 * silent client holds a connection; a thread publishes and withdraws through its own
 * registry handle while the reactor thread watches (TSan sees the hand-offs through the
 * kernel); sources go with work in flight. The Criterion suite is
 * tests/test-reactor-services.c. */
#include <abd/abd.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"

static char dir[128];

struct seen {
	int added, removed, died, errors;
	char last_died[128];
	const char *watch_for; /* name whose addition sets named_added */
	int named_added;
};

static void on_watch(struct abd_source *src, int status, enum abd_event_type type,
                     const struct abd_entry *e, void *ud)
{
	(void)src;
	struct seen *s = ud;
	if (status < 0) {
		s->errors++;
		return;
	}
	if (type == ABD_EVENT_ADDED) {
		s->added++;
		if (s->watch_for && strcmp(e->name, s->watch_for) == 0)
			s->named_added++;
	}
	else if (type == ABD_EVENT_REMOVED)
		s->removed++;
	else if (type == ABD_EVENT_DIED) {
		s->died++;
		snprintf(s->last_died, sizeof(s->last_died), "%s", e->name);
	}
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Run until *v >= want (or 20 s: a failure, not a timing check). */
static bool run_until(struct abd_reactor *r, const int *v, int want)
{
	uint64_t end = now_ns() + 20ull * 1000000000u;
	while (*v < want && now_ns() < end)
		if (abd_reactor_run_once(r, 50 * 1000 * 1000) < 0)
			return false;
	return *v >= want;
}

/* ---- a child publisher, killed ---- */

static pid_t spawn_publisher(char *name, size_t size)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		struct abd_registry *reg;
		struct abd_record *rec;
		struct abd_publication *pub;
		if (abd_registry_open(dir, 0, &reg, NULL, 0) < 0 || abd_record_new("p.child", &rec) < 0 ||
		    abd_publish(reg, rec, &pub) < 0)
			_exit(1);
		const char *n = abd_publication_name(pub);
		if (write(p[1], n, strlen(n) + 1) < 0)
			_exit(2);
		for (;;)
			pause();
	}
	close(p[1]);
	ssize_t n = pid > 0 ? read(p[0], name, size) : -1;
	close(p[0]);
	return n > 0 ? pid : -1;
}

/* ---- a consumer process ---- */

static int consumer_main(void)
{
	struct abd_registry *reg;
	struct abd_record *rec;
	if (abd_registry_open(dir, 0, &reg, NULL, 0) < 0 || abd_registry_lookup(reg, "p.svc", &rec) < 0)
		return 10;
	for (int i = 0; i < 3; i++) {
		struct abd_acquired *a;
		if (abd_acquire(reg, rec, ABD_ACQUIRE_SCM_RIGHTS, 5ll * 1000000000, &a) < 0)
			return 11;
		abd_acquired_free(a);
	}
	abd_record_free(rec);
	abd_registry_free(reg);
	return 0;
}

static void on_eof(struct abd_source *src, int status, uint64_t v, void *ud)
{
	(void)src, (void)status, (void)v;
	(*(int *)ud)++;
}

/* ---- a publishing thread ---- */

#define THREAD_PUBS 20
static struct abd_publication *thread_pubs[THREAD_PUBS];
static struct abd_registry *thread_reg; /* must outlive the publications */

/* Publishes THREAD_PUBS records through its own registry handle (the main thread withdraws
 * them after the join, then frees the handle). */
static void *publisher_thread(void *arg)
{
	(void)arg;
	struct abd_record *rec;
	if (abd_registry_open(dir, 0, &thread_reg, NULL, 0) < 0 || abd_record_new("p.thread", &rec) < 0)
		return (void *)1;
	for (int i = 0; i < THREAD_PUBS; i++)
		if (abd_publish(thread_reg, rec, &thread_pubs[i]) < 0)
			return (void *)2;
	abd_record_free(rec);
	return NULL;
}

static int connect_silent(struct abd_acquire_server *srv)
{
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir, abd_acquire_server_socket(srv));
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void backend(unsigned flags, const char *label)
{
	struct abd_reactor *r;
	int e = abd_reactor_new(flags, &r);
	if (e == -EOPNOTSUPP) {
		TAP_SKIP("%s: not in this build", label);
		return;
	}
	TAP_CHECK(e == 0, "%s: reactor (%s)", label, strerror(-e));
	if (e)
		return;
	struct abd_registry *reg;
	e = abd_registry_open(dir, 0, &reg, NULL, 0);
	TAP_CHECK(e == 0, "%s: registry", label);
	if (e) {
		abd_reactor_free(r);
		return;
	}
	struct abd_watch *w;
	struct seen s = { 0 };
	struct abd_source *ws = NULL;
	unsigned wflags = abd_probe_has(ABD_FEAT_PIDFD_OPEN) == 1 ? ABD_WATCH_PIDFD : 0;
	e = abd_watch_new(reg, wflags, &w);
	if (e == 0)
		e = abd_reactor_add_watch(r, w, on_watch, &s, &ws);
	TAP_CHECK(e == 0, "%s: watch on the reactor (%s)", label, strerror(-e));

	/* the service the reactor serves */
	uint8_t nonce[16];
	struct abd_ring *ring = NULL;
	struct abd_acquire_server *srv = NULL;
	struct abd_record *rec = NULL;
	struct abd_publication *pub = NULL;
	e = getrandom(nonce, sizeof(nonce), 0) == (ssize_t)sizeof(nonce) ? 0 : -EIO;
	if (e == 0)
		e = abd_ring_new(16, 64, 0, nonce, &ring);
	if (e == 0)
		e = abd_record_new("p.svc", &rec);
	if (e == 0)
		e = abd_record_set_instance(rec, nonce);
	if (e == 0)
		e = abd_record_add_fd(rec, "ring", abd_ring_fd(ring), ABD_FD_MEMFD);
	if (e == 0)
		e = abd_acquire_server_new(reg, 0, &srv);
	if (e == 0)
		e = abd_record_set_socket(rec, abd_acquire_server_socket(srv));
	if (e == 0)
		e = abd_publish(reg, rec, &pub);
	if (e == 0)
		e = abd_acquire_server_serve(srv, abd_publication_record(pub));
	if (e == 0)
		e = abd_reactor_add_acquire_server(r, srv, NULL);
	TAP_CHECK(e == 0, "%s: server on the reactor (%s)", label, strerror(-e));
	abd_record_free(rec);
	TAP_CHECK(run_until(r, &s.added, 1), "%s: the first iteration reports the service", label);

	/* a publisher process killed: died through the reactor */
	char name[128] = "";
	pid_t pid = spawn_publisher(name, sizeof(name));
	TAP_CHECK(pid > 0, "%s: child publisher", label);
	if (pid > 0) {
		s.watch_for = name;
		TAP_CHECK(run_until(r, &s.named_added, 1), "%s: child's record added", label);
		s.watch_for = NULL;
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		TAP_CHECK(run_until(r, &s.died, 1) && strcmp(s.last_died, name) == 0,
		          "%s: SIGKILL reported as died", label);
	}

	/* a consumer process acquires while a silent client holds a connection */
	int silent = connect_silent(srv);
	int eof = 0, p[2];
	if (pipe2(p, O_CLOEXEC) == 0) {
		pid_t c = fork();
		if (c == 0)
			_exit(consumer_main());
		close(p[1]);
		struct abd_source *es = NULL;
		abd_reactor_add_io(r, p[0], POLLIN, on_eof, &eof, &es);
		bool ended = run_until(r, &eof, 1);
		int st = -1;
		waitpid(c, &st, 0);
		TAP_CHECK(ended && WIFEXITED(st) && WEXITSTATUS(st) == 0,
		          "%s: another process acquired 3 times past a silent client (status %d)",
		          label, st);
		abd_source_free(es);
		close(p[0]);
	}
	if (silent >= 0)
		close(silent);

	/* a thread publishes while the reactor watches; the main thread withdraws */
	pthread_t t;
	int added = s.added, removed = s.removed;
	if (pthread_create(&t, NULL, publisher_thread, NULL) == 0) {
		for (int i = 0; i < 3; i++)
			abd_reactor_run_once(r, 1000 * 1000);
		void *ret;
		pthread_join(t, &ret);
		TAP_CHECK(ret == NULL, "%s: publishing thread", label);
		TAP_CHECK(run_until(r, &s.added, added + THREAD_PUBS), "%s: the thread's records added",
		          label);
		for (int i = 0; i < THREAD_PUBS; i++)
			abd_withdraw(thread_pubs[i]);
		abd_registry_free(thread_reg);
		TAP_CHECK(run_until(r, &s.removed, removed + THREAD_PUBS), "%s: and removed", label);
	}

	/* removal with work in flight: no callback afterwards */
	int calls = s.added + s.removed + s.died;
	abd_source_free(ws);
	struct abd_publication *late = NULL;
	struct abd_record *lr;
	if (abd_record_new("p.late", &lr) == 0) {
		abd_publish(reg, lr, &late);
		abd_record_free(lr);
	}
	for (int i = 0; i < 3; i++)
		abd_reactor_run_once(r, 10 * 1000 * 1000);
	TAP_CHECK(s.added + s.removed + s.died == calls && s.errors == 0,
	          "%s: a removed watch source never calls back", label);
	abd_withdraw(late);
	abd_watch_free(w);
	abd_acquire_server_free(srv); /* its source goes too, with polls in flight */
	abd_reactor_run_once(r, 0);
	abd_withdraw(pub);
	abd_ring_free(ring);
	abd_reactor_free(r);
	abd_registry_free(reg);
}

int main(void)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(dir, sizeof(dir), "%s/abd-plain-rs-XXXXXX", base);
	if (!mkdtemp(dir)) {
		TAP_CHECK(0, "mkdtemp: %s", strerror(errno));
		return tap_done();
	}
	if (abd_probe_has(ABD_FEAT_IO_URING) == 1)
		backend(ABD_REACTOR_FORCE_IO_URING, "io_uring");
	else
		TAP_SKIP("io_uring: not in this profile");
	backend(ABD_REACTOR_FORCE_EPOLL, "epoll");
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		TAP_CHECK(0, "cleanup");
	return tap_done();
}
