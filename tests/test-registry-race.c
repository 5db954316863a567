/* SPDX-License-Identifier: MIT */
/* The registry under concurrency and crashes, with real processes: publishers racing readers
 * and watchers, kill -9 inside publish, inotify overflow, root and a user sharing a directory. */
#include <grp.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

#include "registry-util.h"
#include "runtime/registry-internal.h"

/* ------------------------------------------------------------------ helpers -- */

/* Drain a watch until the directory is quiet and nothing is pending. */
static int drain(struct abd_watch *w, abd_watch_fn fn, void *ud)
{
	for (;;) {
		int n = abd_watch_process(w, fn, ud);
		if (n < 0)
			return n;
		struct pollfd p = { abd_watch_fd(w), POLLIN, 0 };
		if (n == 0 && poll(&p, 1, 0) == 0)
			return 0;
	}
}

/* 0 if the watch's view equals a fresh snapshot (same names, same states), else a code. */
static int view_equals_directory(struct abd_watch *w, struct abd_registry *reg)
{
	struct abd_snapshot *snap;
	if (abd_registry_snapshot(reg, &snap) < 0)
		return 40;
	int r = 0;
	if (abd_snapshot_count(snap) != abd_watch_count(w))
		r = 41;
	for (size_t i = 0; i < abd_watch_count(w) && !r; i++) {
		const struct abd_entry *we = abd_watch_entry(w, i);
		bool found = false;
		for (size_t j = 0; j < abd_snapshot_count(snap); j++) {
			const struct abd_entry *se = abd_snapshot_entry(snap, j);
			if (strcmp(se->name, we->name) == 0) {
				found = true;
				if (se->state != we->state)
					r = 42;
			}
		}
		if (!found)
			r = 43;
	}
	abd_snapshot_free(snap);
	return r;
}

/* ------------------------------------------------------------------ the race -- */

struct race_shared {
	_Atomic int stop;       /* set when every publisher has exited */
	_Atomic int torn;       /* an invalid entry or an event about one */
	_Atomic long snapshots, events;
	char why[256];
};

struct race_arg {
	const char *dir;
	struct race_shared *sh;
	int index;
	unsigned long cycles;
};

static int race_publisher(void *arg)
{
	struct race_arg *a = arg;
	struct abd_registry *reg;
	if (abd_registry_open(a->dir, 0, &reg, NULL, 0) < 0)
		return 10;
	char svc[32];
	snprintf(svc, sizeof(svc), "race.p%d", a->index);
	struct abd_record *rec;
	if (abd_record_new(svc, &rec) < 0 || abd_record_add_meta(rec, "index", svc) < 0)
		return 11;
	for (unsigned long i = 0; i < a->cycles; i++) {
		struct abd_publication *pub;
		if (abd_publish(reg, rec, &pub) < 0)
			return 12;
		if (abd_withdraw(pub) < 0)
			return 13;
	}
	/* Even publishers die holding a final record: it stays, stale. */
	struct abd_publication *last;
	if (abd_publish(reg, rec, &last) < 0)
		return 14;
	if (a->index % 2)
		abd_withdraw(last);
	_exit(0);
}

static void race_event(void *ud, enum abd_event_type type, const struct abd_entry *e)
{
	struct race_shared *sh = ud;
	sh->events++;
	if (type == ABD_EVENT_OVERFLOW)
		return; /* a placeholder: the rescan before it reported every change */
	/* A record written by our publishers is never seen half-written. */
	bool torn = (type != ABD_EVENT_REMOVED && e->state == ABD_STATE_INVALID) ||
	            (e->state != ABD_STATE_INVALID &&
	             (!e->record || strcmp(abd_record_meta(e->record, "index"), e->service) != 0));
	if (torn && !sh->torn++)
		snprintf(sh->why, sizeof(sh->why), "%s %s: %s", abd_event_name(type), e->name,
		         e->reason ? e->reason : "(record does not match its publisher)");
}

static int race_reader(void *arg)
{
	struct race_arg *a = arg;
	struct abd_registry *reg;
	if (abd_registry_open(a->dir, 0, &reg, NULL, 0) < 0)
		return 20;
	struct abd_watch *w;
	if (abd_watch_new(reg, a->index % 2 ? ABD_WATCH_PIDFD : 0, &w) < 0)
		return 21;
	while (!a->sh->stop) {
		struct abd_snapshot *snap;
		if (abd_registry_snapshot(reg, &snap) < 0)
			return 22;
		for (size_t i = 0; i < abd_snapshot_count(snap); i++)
			race_event(a->sh, ABD_EVENT_ADDED, abd_snapshot_entry(snap, i));
		abd_snapshot_free(snap);
		a->sh->snapshots++;
		if (abd_watch_process(w, race_event, a->sh) < 0)
			return 23;
	}
	if (drain(w, race_event, a->sh) < 0)
		return 24;
	int r = view_equals_directory(w, reg);
	abd_watch_free(w);
	abd_registry_free(reg);
	return r;
}

ABD_TEST(registry_race, publishers_readers_watchers)
{
	struct scratch s;
	scratch_open(&s);
	enum { PUBLISHERS = 32, READERS = 4 };
	unsigned long cycles = abd_test_scaled(200, 10);
	struct race_shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
	                              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(sh, MAP_FAILED);
	memset(sh, 0, sizeof(*sh));
	struct race_arg ra[READERS], pa[PUBLISHERS];
	pid_t readers[READERS], pubs[PUBLISHERS];
	for (int i = 0; i < READERS; i++) {
		ra[i] = (struct race_arg){ s.dir, sh, i, 0 };
		readers[i] = abd_test_fork(race_reader, &ra[i]);
	}
	for (int i = 0; i < PUBLISHERS; i++) {
		pa[i] = (struct race_arg){ s.dir, sh, i, cycles };
		pubs[i] = abd_test_fork(race_publisher, &pa[i]);
	}
	for (int i = 0; i < PUBLISHERS; i++)
		cr_assert_eq(abd_test_wait(pubs[i]), 0, "publisher %d", i);
	sh->stop = 1;
	for (int i = 0; i < READERS; i++)
		cr_assert_eq(abd_test_wait(readers[i]), 0,
		             "reader %d: its final view differs from the directory (or it failed)", i);
	cr_assert_eq(sh->torn, 0, "a torn or foreign record was seen: %s", sh->why);
	cr_assert_gt(sh->snapshots, 0);
	cr_assert_eq(count_state(s.reg, ABD_STATE_STALE), PUBLISHERS / 2);
	cr_assert_eq(count_state(s.reg, 0), PUBLISHERS / 2);
	cr_assert_eq(abd_registry_gc(s.reg, NULL), PUBLISHERS / 2);
	cr_log_info("%lu cycles x %d publishers; %ld snapshots, %ld events", cycles, PUBLISHERS,
	            (long)sh->snapshots, (long)sh->events);
	munmap(sh, sizeof(*sh));
	scratch_close(&s);
}

/* ------------------------------------------------------------------ kill -9 -- */

static int publish_forever(void *arg)
{
	const char *dir = arg;
	struct abd_registry *reg;
	if (abd_registry_open(dir, 0, &reg, NULL, 0) < 0)
		return 10;
	struct abd_record *rec;
	if (abd_record_new("victim", &rec) < 0 || abd_record_add_meta(rec, "pad", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx") < 0)
		return 11;
	for (unsigned i = 0;; i++) {
		struct abd_publication *pub;
		if (abd_publish(reg, rec, &pub) < 0)
			return 12;
		/* Keep one in eight (bounded: a killed child leaves at most that many). */
		if (i % 8 || i > 400)
			abd_withdraw(pub);
	}
}

struct kill_seen {
	int died, added_stale, removed;
};

static void kill_event(void *ud, enum abd_event_type type, const struct abd_entry *e)
{
	struct kill_seen *k = ud;
	cr_assert_neq(e->state, ABD_STATE_INVALID, "partial record seen: %s (%s)", e->name,
	              e->reason);
	if (type == ABD_EVENT_DIED)
		k->died++;
	if (type == ABD_EVENT_ADDED && e->state == ABD_STATE_STALE)
		k->added_stale++;
	if (type == ABD_EVENT_REMOVED)
		k->removed++;
}

ABD_TEST(registry_race, kill9_inside_publish)
{
	struct scratch s;
	scratch_open(&s);
	struct abd_watch *w;
	cr_assert_eq(abd_watch_new(s.reg, 0, &w), 0);
	struct kill_seen seen = { 0 };
	unsigned rounds = (unsigned)abd_test_scaled(40, 6);
	srand((unsigned)abd_test_now_ns());
	for (unsigned i = 0; i < rounds; i++) {
		pid_t pid = abd_test_fork(publish_forever, s.dir);
		/* Watch while it publishes (so records are seen alive, then dead), and kill it at a
		 * random moment: most of its time is spent inside abd_publish/abd_withdraw. */
		uint64_t deadline = abd_test_now_ns() + (uint64_t)(rand() % 3000) * 1000;
		while (abd_test_now_ns() < deadline) {
			struct pollfd p = { abd_watch_fd(w), POLLIN, 0 };
			if (poll(&p, 1, 1) > 0)
				cr_assert_geq(abd_watch_process(w, kill_event, &seen), 0);
		}
		kill(pid, SIGKILL);
		int st = abd_test_wait(pid);
		cr_assert(st == 128 + SIGKILL, "publisher exited with %d before the kill", st);
		cr_assert_eq(drain(w, kill_event, &seen), 0);
	}
	/* Nothing partial, nothing alive: every record left is stale, and the watch says so. */
	size_t total = count_state(s.reg, 0);
	cr_assert_eq(count_state(s.reg, ABD_STATE_STALE), total);
	cr_assert_eq(view_equals_directory(w, s.reg), 0);
	cr_assert_eq(seen.died + seen.added_stale >= (int)total, true,
	             "%zu stale records, %d died + %d added stale", total, seen.died, seen.added_stale);
	cr_assert_eq(abd_registry_gc(s.reg, NULL), (int)total);
	cr_assert_eq(count_state(s.reg, 0), 0);
	cr_assert_eq(drain(w, kill_event, &seen), 0);
	cr_assert_eq(abd_watch_count(w), 0);
	cr_log_info("%u kills: %zu stale records, %d deaths pushed", rounds, total, seen.died);
	abd_watch_free(w);
	scratch_close(&s);
}

/* ------------------------------------------------------------------ overflow -- */

struct names_seen {
	char added[8][128];
	int nadded;
	char removed[8][128];
	int nremoved;
	char died[8][128];
	int ndied;
	int overflows;
	struct abd_watch *w;       /* to check the view when the overflow is reported */
	struct abd_registry *reg;
	int view_at_overflow;      /* view_equals_directory() then */
};


static void note(char (*list)[128], int *n, const char *name)
{
	if (*n < 8)
		snprintf(list[(*n)++], 128, "%s", name);
}

static void overflow_event(void *ud, enum abd_event_type type, const struct abd_entry *e)
{
	struct names_seen *s = ud;
	if (type == ABD_EVENT_ADDED)
		note(s->added, &s->nadded, e->name);
	else if (type == ABD_EVENT_REMOVED)
		note(s->removed, &s->nremoved, e->name);
	else if (type == ABD_EVENT_DIED)
		note(s->died, &s->ndied, e->name);
	else if (type == ABD_EVENT_OVERFLOW) {
		s->overflows++;
		cr_assert_str_eq(e->name, "");
		cr_assert_null(e->record);
		s->view_at_overflow = view_equals_directory(s->w, s->reg);
	}
}

static bool listed(char (*list)[128], int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (strcmp(list[i], name) == 0)
			return true;
	return false;
}

/* The changes made while the queue overflowed: a death, a withdrawal, an addition. */
static void overflow_scenario(bool real_overflow)
{
	struct scratch s;
	scratch_open(&s);
	char victim[128];
	int hold;
	pid_t pid = spawn_publisher(s.dir, "ovf.victim", 0, victim, sizeof(victim), &hold);
	struct abd_publication *leaving = publish_simple(s.reg, "ovf.leaving");
	struct abd_publication *staying = publish_simple(s.reg, "ovf.staying");
	struct abd_watch *w;
	cr_assert_eq(abd_watch_new(s.reg, 0, &w), 0);
	struct names_seen seen = { 0 };
	cr_assert_eq(abd_watch_process(w, overflow_event, &seen), 3);

	if (real_overflow) {
		/* Three events per cycle (create, delete, close of the unnamed file). */
		long max = abd_test_read_long("/proc/sys/fs/inotify/max_queued_events");
		long cycles = max / 3 + 64;
		struct abd_record *rec;
		cr_assert_eq(abd_record_new("ovf.flood", &rec), 0);
		for (long i = 0; i < cycles; i++) {
			struct abd_publication *p;
			cr_assert_eq(abd_publish(s.reg, rec, &p), 0);
			abd_withdraw(p);
		}
		abd_record_free(rec);
	}
	kill(pid, SIGKILL);
	cr_assert_eq(abd_test_wait(pid), 128 + SIGKILL);
	close(hold);
	const char *leaving_name = abd_publication_name(leaving);
	char left[128];
	snprintf(left, sizeof(left), "%s", leaving_name);
	abd_withdraw(leaving);
	struct abd_publication *arriving = publish_simple(s.reg, "ovf.arriving");

	seen.w = w;
	seen.reg = s.reg;
	if (real_overflow) {
		cr_assert_eq(drain(w, overflow_event, &seen), 0);
		cr_assert_geq(abd__watch_rescans(w), 1, "the queue did not overflow");
		/* told, once, after the rescan made the view right */
		cr_assert_eq(seen.overflows, (int)abd__watch_rescans(w));
		cr_assert_eq(seen.view_at_overflow, 0, "the view was wrong when the overflow was told");
	} else {
		cr_assert_geq(abd_watch_rescan(w, overflow_event, &seen), 3);
		cr_assert_eq(seen.overflows, 0, "an explicit rescan is no overflow");
	}
	cr_assert(listed(seen.died, seen.ndied, victim), "victim's death reported");
	cr_assert(listed(seen.removed, seen.nremoved, left), "withdrawal reported");
	cr_assert(listed(seen.added, seen.nadded, abd_publication_name(arriving)),
	          "arrival after the overflow reported");
	cr_assert_eq(view_equals_directory(w, s.reg), 0);
	cr_assert_eq(abd_watch_count(w), 3);
	abd_watch_free(w);
	abd_withdraw(arriving);
	abd_withdraw(staying);
	scratch_close(&s);
}

ABD_TEST(registry_race, rescan_reports_the_difference)
{
	overflow_scenario(false);
}

ABD_TEST(registry_race, inotify_overflow_resyncs)
{
	long max = abd_test_read_long("/proc/sys/fs/inotify/max_queued_events");
	if (max < 0 || max > 65536)
		cr_skip_test("fs.inotify.max_queued_events is %ld: too many events to overflow it "
		             "quickly", max);
	overflow_scenario(true);
}

/* ------------------------------------------------------------------ root + user -- */

#define USER_UID 23456
#define USER_GID 23456

struct user_arg {
	const char *dir;
	const char *root_record;
	int out_w, hold_r;
	int close_in_child[2];
};

/* Runs as an ordinary user: publish, see root's record, fail to delete or overwrite it. */
static int user_main(void *arg)
{
	struct user_arg *a = arg;
	close(a->close_in_child[0]);
	close(a->close_in_child[1]);
	gid_t g = USER_GID;
	if (setgroups(1, &g) < 0 || setresgid(USER_GID, USER_GID, USER_GID) < 0 ||
	    setresuid(USER_UID, USER_UID, USER_UID) < 0)
		return 30;
	struct abd_registry *reg;
	char why[256];
	if (abd_registry_open(a->dir, 0, &reg, why, sizeof(why)) < 0)
		return 31;
	struct abd_publication *pub;
	struct abd_record *rec;
	abd_record_new("user.svc", &rec);
	int r = abd_publish(reg, rec, &pub);
	abd_record_free(rec);
	if (r < 0)
		return 32; /* protected_regular must not break O_TMPFILE + linkat */
	/* Root's record: visible and alive to us. */
	if (abd_registry_liveness(reg, a->root_record) != ABD_STATE_ALIVE)
		return 33;
	struct abd_snapshot *snap;
	if (abd_registry_snapshot(reg, &snap) < 0)
		return 34;
	int alive_root = 0;
	for (size_t i = 0; i < abd_snapshot_count(snap); i++) {
		const struct abd_entry *e = abd_snapshot_entry(snap, i);
		if (strcmp(e->name, a->root_record) == 0 && e->state == ABD_STATE_ALIVE && e->uid == 0)
			alive_root = 1;
	}
	abd_snapshot_free(snap);
	if (!alive_root)
		return 35;
	/* Neither delete (sticky) nor overwrite (0644) root's record. */
	if (unlinkat(abd_registry_fd(reg), a->root_record, 0) == 0 || errno != EPERM)
		return 36;
	if (openat(abd_registry_fd(reg), a->root_record, O_WRONLY | O_CLOEXEC) >= 0 ||
	    errno != EACCES)
		return 37;
	/* Nor spoof root: a record claiming uid 0 in a file we own is refused by readers. */
	uint8_t buf[1024];
	long len = abd_record_encode(abd_publication_record(pub), buf, sizeof(buf));
	memset(buf + 16, 0, ABD_INSTANCE_SIZE); /* instance 00..01: the name below */
	buf[31] = 1;
	memset(buf + 36, 0, 4);                 /* uid 0 */
	uint32_t c = abd__crc32c(buf, (size_t)len - 4);
	memcpy(buf + len - 4, &c, 4);
	int fd = openat(abd_registry_fd(reg), "user.svc.00000000000000000000000000000001",
	                O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, buf, (size_t)len) != len)
		return 38;
	close(fd);
	if (write(a->out_w, abd_publication_name(pub), strlen(abd_publication_name(pub)) + 1) < 0)
		return 39;
	char b;
	while (read(a->hold_r, &b, 1) > 0)
		;
	/* Root's record is stale now (root withdrew nothing but closed it): our GC cannot
	 * remove it, and says so. */
	unsigned failed = 0;
	int removed = abd_registry_gc(reg, &failed);
	if (removed != 0 || failed != 1)
		return 40;
	abd_withdraw(pub);
	unlinkat(abd_registry_fd(reg), "user.svc.00000000000000000000000000000001", 0);
	abd_registry_free(reg);
	return 0;
}

static int set_protected_regular(int v)
{
	FILE *f = fopen("/proc/sys/fs/protected_regular", "we");
	if (!f)
		return -1;
	int r = fprintf(f, "%d\n", v) > 0 ? 0 : -1;
	return fclose(f) == 0 ? r : -1;
}

ABD_TEST(registry_race, root_and_user_share_a_sticky_registry)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to switch to an ordinary uid (setresuid)");
	/* fs.protected_regular=2 (Ubuntu's default) forbids O_CREAT on others' files in sticky
	 * directories; publication must not depend on that. The sysctl is global: hold a lock so
	 * parallel runs of this test save and restore it in turn. */
	int lk = open("/dev/shm/abd-test-protected-regular.lock", O_CREAT | O_RDWR | O_CLOEXEC, 0600);
	cr_assert_geq(lk, 0);
	flock(lk, LOCK_EX);
	long saved = abd_test_read_long("/proc/sys/fs/protected_regular");
	bool changed = saved >= 0 && saved < 2 && set_protected_regular(2) == 0;

	char base[256], dir[300];
	abd_test_mkdtemp(base, sizeof(base));
	chmod(base, 0755);
	snprintf(dir, sizeof(dir), "%s/shared", base);
	struct abd_registry *reg;
	char why[256];
	cr_assert_eq(abd_registry_open(dir, ABD_REGISTRY_CREATE | ABD_REGISTRY_SHARED, &reg, why,
	                               sizeof(why)), 0, "%s", why);
	struct abd_publication *rootpub = publish_simple(reg, "root.svc");

	int out[2], hold[2];
	cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(hold, O_CLOEXEC), 0);
	struct user_arg ua = { dir, abd_publication_name(rootpub), out[1], hold[0], { out[0], hold[1] } };
	pid_t pid = abd_test_fork(user_main, &ua);
	close(out[1]);
	close(hold[0]);
	char user_name[128] = "";
	ssize_t n = read(out[0], user_name, sizeof(user_name));
	close(out[0]);
	if (n <= 0) {
		close(hold[1]);
		int st = abd_test_wait(pid);
		abd_withdraw(rootpub);
		abd_registry_free(reg);
		abd_test_rmtree(base);
		if (changed)
			set_protected_regular((int)saved);
		close(lk);
		cr_assert_fail("the user's side failed with code %d", st);
	}
	/* Root sees the user's record alive, and the spoof as invalid. */
	struct abd_snapshot *snap;
	cr_assert_eq(abd_registry_snapshot(reg, &snap), 0);
	int user_alive = 0, spoof_refused = 0;
	for (size_t i = 0; i < abd_snapshot_count(snap); i++) {
		const struct abd_entry *e = abd_snapshot_entry(snap, i);
		if (strcmp(e->name, user_name) == 0 && e->state == ABD_STATE_ALIVE && e->uid == USER_UID)
			user_alive = 1;
		if (strstr(e->name, "00000000000000000000000000000001") &&
		    e->state == ABD_STATE_INVALID && strstr(e->reason, "claims uid 0"))
			spoof_refused = 1;
	}
	abd_snapshot_free(snap);
	/* Root's GC leaves the user's live record alone. */
	cr_assert_eq(abd_registry_gc(reg, NULL), 0);
	/* Root's record goes stale (closed without unlink), then the user tries GC. */
	int rfd = abd_publication_fd(rootpub);
	char root_name[128];
	snprintf(root_name, sizeof(root_name), "%s", abd_publication_name(rootpub));
	struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET };
	fcntl(rfd, F_OFD_SETLK, &fl);
	close(hold[1]);
	int st = abd_test_wait(pid);
	abd_withdraw(rootpub);
	abd_registry_free(reg);
	abd_test_rmtree(base);
	if (changed)
		set_protected_regular((int)saved);
	close(lk);
	cr_assert(user_alive, "root does not see the user's record alive");
	cr_assert(spoof_refused, "a user's record claiming uid 0 was not refused");
	cr_assert_eq(st, 0, "the user's side failed with code %d", st);
}

ABD_TEST(registry_race, user_without_permission_gets_eacces)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to switch to an ordinary uid (setresuid)");
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	chmod(dir, 0755); /* root's, not writable by others */
	pid_t pid = fork();
	if (pid == 0) {
		if (setresgid(USER_GID, USER_GID, USER_GID) < 0 ||
		    setresuid(USER_UID, USER_UID, USER_UID) < 0)
			_exit(30);
		struct abd_registry *reg;
		if (abd_registry_open(dir, 0, &reg, NULL, 0) < 0)
			_exit(31);
		struct abd_record *rec;
		struct abd_publication *pub;
		abd_record_new("denied", &rec);
		_exit(abd_publish(reg, rec, &pub) == -EACCES ? 0 : 32);
	}
	int st = abd_test_wait(pid);
	abd_test_rmtree(dir);
	cr_assert_eq(st, 0, "code %d", st);
}
