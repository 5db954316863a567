/* SPDX-License-Identifier: MIT */
/* Plain subset (MSan, TSan): publish, enumerate, parse, watch a death, from two threads with
 * their own handles. Every byte the registry hands back must be initialised. */
#include <abd/abd.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"

static char dir[] = "/dev/shm/abd-plain-registry-XXXXXX";

/* Sum every field so that MSan sees each byte used. */
static unsigned long touch(const struct abd_entry *e)
{
	unsigned long h = (unsigned long)e->state + strlen(e->name);
	if (e->reason)
		h += strlen(e->reason);
	if (e->record) {
		const struct abd_record *r = e->record;
		h += strlen(abd_record_service(r)) + (unsigned long)abd_record_pid(r) +
		     abd_record_uid(r) + abd_record_start_time(r) + abd_record_caps(r) +
		     strlen(abd_record_socket(r)) + abd_record_published_ns(r);
		for (int i = 0; i < ABD_INSTANCE_SIZE; i++)
			h += abd_record_instance(r)[i];
		for (size_t i = 0; i < abd_record_meta_count(r); i++) {
			const char *k, *v;
			abd_record_meta_at(r, i, &k, &v);
			h += strlen(k) + strlen(v);
		}
	}
	return h;
}

static void *worker(void *arg)
{
	long id = (long)arg;
	struct abd_registry *reg;
	if (abd_registry_open(dir, 0, &reg, NULL, 0) < 0)
		return (void *)1;
	struct abd_record *rec;
	char svc[32];
	snprintf(svc, sizeof(svc), "plain.t%ld", id);
	abd_record_new(svc, &rec);
	abd_record_add_meta(rec, "k", "v");
	abd_record_add_fd(rec, "ring", 3, ABD_FD_MEMFD);
	unsigned long sink = 0;
	for (int i = 0; i < 50; i++) {
		struct abd_publication *pub;
		if (abd_publish(reg, rec, &pub) < 0)
			return (void *)2;
		struct abd_snapshot *snap;
		if (abd_registry_snapshot(reg, &snap) < 0)
			return (void *)3;
		for (size_t j = 0; j < abd_snapshot_count(snap); j++)
			sink += touch(abd_snapshot_entry(snap, j));
		abd_snapshot_free(snap);
		abd_withdraw(pub);
	}
	abd_record_free(rec);
	abd_registry_free(reg);
	return sink ? NULL : (void *)4;
}

static int died;
static void on_event(void *ud, enum abd_event_type type, const struct abd_entry *e)
{
	unsigned long *sink = ud;
	*sink += touch(e);
	if (type == ABD_EVENT_DIED)
		died++;
}

int main(void)
{
	if (!mkdtemp(dir)) {
		TAP_SKIP("mkdtemp %s: %s", dir, strerror(errno));
		return tap_done();
	}
	struct abd_registry *reg;
	int r = abd_registry_open(dir, 0, &reg, NULL, 0);
	TAP_CHECK(r == 0, "open %s", dir);
	if (r)
		return tap_done();

	/* Records: encode, decode, and decode garbage of every length. */
	struct abd_record *rec, *back = NULL;
	abd_record_new("plain.svc", &rec);
	abd_record_add_meta(rec, "bytes", "\x01\x7f\xff");
	abd_record_set_socket(rec, "/run/abd/plain.sock");
	uint8_t buf[2048];
	long len = abd_record_encode(rec, buf, sizeof(buf));
	TAP_CHECK(len > 0 && abd_record_decode(buf, (size_t)len, &back, NULL) == -EBADMSG,
	          "an unpublished record (pid 0) is refused by the decoder");
	unsigned seed = 1;
	int bad = 0;
	for (int n = 0; n < 2000; n++) {
		uint8_t junk[256];
		for (size_t i = 0; i < sizeof(junk); i++)
			junk[i] = (uint8_t)(seed = seed * 1103515245u + 12345u) >> 16;
		memcpy(junk, "ABDR\x01\x00", 6);
		struct abd_record *out = NULL;
		if (abd_record_decode(junk, (size_t)(n % 256), &out, NULL) == 0)
			bad++;
		abd_record_free(out);
	}
	TAP_CHECK(bad == 0, "random bytes never decode");

	/* Publish and read back in one process. */
	struct abd_publication *pub;
	r = abd_publish(reg, rec, &pub);
	TAP_CHECK(r == 0, "publish: %s", strerror(-r));
	struct abd_record *found = NULL;
	TAP_CHECK(abd_registry_lookup(reg, "plain.svc", &found) == 0 &&
	          strcmp(abd_record_meta(found, "bytes"), "\x01\x7f\xff") == 0,
	          "lookup returns the record");
	abd_record_free(found);

	/* Two threads, each with its own handles, publishing and enumerating. */
	pthread_t t[2];
	for (long i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, worker, (void *)i);
	void *res[2];
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], &res[i]);
	TAP_CHECK(res[0] == NULL && res[1] == NULL, "threads publish and enumerate");

	/* A watched child that dies without withdrawing. */
	struct abd_watch *w;
	unsigned long sink = 0;
	TAP_CHECK(abd_watch_new(reg, ABD_WATCH_PIDFD, &w) == 0, "watch");
	TAP_CHECK(abd_watch_process(w, on_event, &sink) == 1, "initial state: one record");
	int sync[2];
	if (pipe(sync) < 0)
		return 1;
	pid_t pid = fork();
	if (pid == 0) {
		struct abd_publication *p;
		abd_publish(reg, rec, &p);
		if (write(sync[1], "x", 1) < 0)
			_exit(1);
		pause();
		_exit(0);
	}
	char c;
	TAP_CHECK(read(sync[0], &c, 1) == 1, "child published");
	while (abd_watch_count(w) < 2) {
		struct pollfd p = { abd_watch_fd(w), POLLIN, 0 };
		if (poll(&p, 1, 5000) <= 0)
			break;
		abd_watch_process(w, on_event, &sink);
	}
	TAP_CHECK(abd_watch_count(w) == 2, "the child's record was added");
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	for (int i = 0; i < 100 && !died; i++) {
		struct pollfd p = { abd_watch_fd(w), POLLIN, 0 };
		if (poll(&p, 1, 5000) <= 0)
			break;
		abd_watch_process(w, on_event, &sink);
	}
	TAP_CHECK(died == 1, "the child's death was pushed");
	TAP_CHECK(abd_registry_gc(reg, NULL) == 1, "gc removes the stale record");
	abd_watch_free(w);
	close(sync[0]);
	close(sync[1]);
	abd_withdraw(pub);
	abd_record_free(rec);
	abd_registry_free(reg);
	rmdir(dir);
	return tap_done();
}
