/* SPDX-License-Identifier: MIT */
/* The registry across user namespaces (docs/operations.md, "Containers"): a record is trusted
 * only when its file's owner equals the uid it claims as the reader sees both, so
 *  - processes in one user namespace (a rootless container) share a registry as usual;
 *  - a reader under another uid map never takes a record for alive: either the directory is
 *    refused with a reason (its owner is unmapped there) or the record reads as invalid.
 * Real processes: the child calls unshare(CLONE_NEWUSER) and the parent writes its maps. */
#include <sched.h>
#include <sys/wait.h>

#include "registry-util.h"

/* Outside uid/gid that the namespace's root maps to: any uid nobody on a test machine uses. */
#define NS_ID 231072u

enum { CHILD_SKIP = 77 };

struct ns_child {
	const char *dir;
	int ready_w; /* child -> parent: "unshared" (one byte), or nothing if it could not */
	int go_r;    /* parent -> child: maps written */
	int (*body)(const char *dir, int out_w);
	int out_w;   /* child -> parent: a line of findings */
};

static int ns_child_main(void *arg)
{
	struct ns_child *c = arg;
	char b = 0;
	if (unshare(CLONE_NEWUSER) < 0)
		return CHILD_SKIP;
	if (write(c->ready_w, "u", 1) != 1 || read(c->go_r, &b, 1) != 1 || b != 'g')
		return 10;
	/* the maps are in place: become the namespace's root, which is NS_ID outside (until now
	 * we were still the outer root, which the namespace cannot name) */
	if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0 || getuid() != 0)
		return 11;
	return c->body(c->dir, c->out_w);
}

static void write_file(pid_t pid, const char *what, const char *text)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, what);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	ssize_t n = write(fd, text, strlen(text));
	int e = errno;
	close(fd);
	cr_assert_eq(n, (ssize_t)strlen(text), "write %s: %s", path, strerror(e));
}

/* Start body in a child inside a new user namespace whose root maps to NS_ID; returns its
 * pid, and in *res_r the read end of the pipe it writes its findings to. Skips the test when
 * user namespaces are not available here (sysctl, container policy) or we cannot write
 * another uid's map. */
static pid_t start_in_userns(const char *dir, int (*body)(const char *, int), int *res_r)
{
	if (geteuid() != 0)
		cr_skip_test("mapping namespace root to uid %u needs root (CAP_SETUID) here", NS_ID);
	int ready[2], go[2], res[2];
	cr_assert_eq(pipe2(ready, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(go, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(res, O_CLOEXEC), 0);
	struct ns_child c = { dir, ready[1], go[0], body, res[1] };
	pid_t pid = abd_test_fork(ns_child_main, &c);
	close(ready[1]);
	close(go[0]);
	close(res[1]);
	char b = 0;
	ssize_t n = read(ready[0], &b, 1);
	close(ready[0]);
	if (n != 1) {
		close(go[1]);
		close(res[0]);
		int code = abd_test_wait(pid);
		if (code == CHILD_SKIP)
			cr_skip_test("unshare(CLONE_NEWUSER) is refused here (user.max_user_namespaces, "
			             "or a container's seccomp policy)");
		cr_assert_fail("the namespace child exited %d before unsharing", code);
	}
	char map[64];
	snprintf(map, sizeof(map), "0 %u 1\n", NS_ID);
	write_file(pid, "uid_map", map);
	write_file(pid, "setgroups", "deny\n");
	write_file(pid, "gid_map", map);
	cr_assert_eq(write(go[1], "g", 1), 1);
	close(go[1]);
	*res_r = res[0];
	return pid;
}

/* Read what the child wrote, up to EOF (it closes its end when it is done talking). */
static void read_findings(int fd, char *out, size_t out_size)
{
	size_t got = 0;
	ssize_t n;
	while (got + 1 < out_size && (n = read(fd, out + got, out_size - 1 - got)) > 0)
		got += (size_t)n;
	out[got] = 0;
	close(fd);
}

/* start_in_userns, then its findings and its exit code. */
static int run_in_userns(const char *dir, int (*body)(const char *, int), char *out,
                         size_t out_size)
{
	int res;
	pid_t pid = start_in_userns(dir, body, &res);
	read_findings(res, out, out_size);
	return abd_test_wait(pid);
}

/* ------------------------------------------------------- another uid map -- */

/* Inside the namespace: the outer root's registry and record must not look alive. Writes
 * "refused <why>" or "entries <n> alive <a> invalid <i> <reason of the first invalid>". */
static int look_from_inside(const char *dir, int out_w)
{
	struct abd_registry *reg;
	char why[256] = "", line[512];
	int r = abd_registry_open(dir, 0, &reg, why, sizeof(why));
	if (r < 0) {
		snprintf(line, sizeof(line), "refused %d %s", r, why);
		return write(out_w, line, strlen(line)) > 0 ? 0 : 20;
	}
	struct abd_snapshot *snap;
	if (abd_registry_snapshot(reg, &snap) < 0)
		return 21;
	size_t alive = 0, invalid = 0;
	const char *reason = "";
	for (size_t i = 0; i < abd_snapshot_count(snap); i++) {
		const struct abd_entry *e = abd_snapshot_entry(snap, i);
		alive += e->state == ABD_STATE_ALIVE;
		if (e->state == ABD_STATE_INVALID && !invalid++)
			reason = e->reason ? e->reason : "";
	}
	snprintf(line, sizeof(line), "entries %zu alive %zu invalid %zu %s",
	         abd_snapshot_count(snap), alive, invalid, reason);
	abd_snapshot_free(snap);
	abd_registry_free(reg);
	return write(out_w, line, strlen(line)) > 0 ? 0 : 22;
}

ABD_TEST(userns, foreign_map_never_reads_alive)
{
	struct scratch s;
	scratch_open(&s);
	cr_assert_eq(chmod(s.dir, 0755), 0); /* let the namespace in, as /run/abd would */
	struct abd_publication *pub = publish_simple(s.reg, "userns.outer");
	char out[512];
	int code = run_in_userns(s.dir, look_from_inside, out, sizeof(out));
	cr_assert_eq(code, 0, "child: exit %d (%s)", code, out);
	size_t n = 0, alive = 0, invalid = 0;
	cr_log_info("inside another uid map: %s", out);
	if (strncmp(out, "refused ", 8) == 0) {
		/* the directory's owner (root) is unmapped: it shows as the overflow uid */
		cr_assert(strstr(out, "owned by"), "a refusal names the owner: %s", out);
	} else {
		cr_assert_eq(sscanf(out, "entries %zu alive %zu invalid %zu", &n, &alive, &invalid), 3,
		             "%s", out);
		cr_assert_eq(n, 1, "%s", out);
		cr_assert_eq(alive, 0, "the outer root's record looked alive inside: %s", out);
		cr_assert_eq(invalid, 1, "%s", out);
	}
	/* and from outside it is still alive */
	cr_assert_eq(count_state(s.reg, ABD_STATE_ALIVE), 1);
	cr_assert_eq(abd_withdraw(pub), 0);
	scratch_close(&s);
}

/* ---------------------------------------------- one namespace, two processes -- */

/* Inside: publish, then a second process of the namespace must see it alive with uid 0 as
 * the namespace sees it. Writes "ok" or what went wrong. */
static int sibling_sees(const char *dir)
{
	struct abd_registry *reg;
	if (abd_registry_open(dir, 0, &reg, NULL, 0) < 0)
		return 30;
	struct abd_snapshot *snap;
	if (abd_registry_snapshot(reg, &snap) < 0)
		return 31;
	int r = 32;
	for (size_t i = 0; i < abd_snapshot_count(snap); i++) {
		const struct abd_entry *e = abd_snapshot_entry(snap, i);
		if (e->service && strcmp(e->service, "userns.inner") == 0 &&
		    e->state == ABD_STATE_ALIVE && e->uid == 0)
			r = 0;
	}
	abd_snapshot_free(snap);
	abd_registry_free(reg);
	return r;
}

static int publish_inside(const char *dir, int out_w)
{
	struct abd_registry *reg;
	char why[256] = "", line[512];
	int r = abd_registry_open(dir, 0, &reg, why, sizeof(why));
	if (r < 0) {
		snprintf(line, sizeof(line), "open %d %s", r, why);
		return write(out_w, line, strlen(line)) > 0 ? 40 : 41;
	}
	struct abd_record *rec;
	struct abd_publication *pub = NULL;
	r = abd_record_new("userns.inner", &rec);
	if (r == 0)
		r = abd_publish(reg, rec, &pub);
	abd_record_free(rec);
	if (r < 0) {
		snprintf(line, sizeof(line), "publish %d", r);
		return write(out_w, line, strlen(line)) > 0 ? 42 : 43;
	}
	fflush(NULL);
	pid_t sib = fork();
	if (sib == 0)
		_exit(sibling_sees(dir));
	int status = 0;
	waitpid(sib, &status, 0);
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
	snprintf(line, sizeof(line), "sibling %d", code);
	/* hold the record until the parent has looked from outside: it closes our pipe */
	ssize_t w = write(out_w, line, strlen(line));
	close(out_w);
	(void)w;
	pause(); /* the parent kills us; the record stays, stale */
	abd_withdraw(pub);
	abd_registry_free(reg);
	return 0;
}

/* The parent's side for one_namespace_shares: reads the child's line while it holds its
 * record, looks from outside, then kills it. */
ABD_TEST(userns, one_namespace_shares_and_outside_sees_invalid)
{
	struct scratch s;
	scratch_open(&s);
	/* the namespace's root owns its registry, as a rootless container's user owns its own */
	cr_assert_eq(chown(s.dir, NS_ID, NS_ID), 0);
	int res;
	pid_t pid = start_in_userns(s.dir, publish_inside, &res);
	char line[512];
	read_findings(res, line, sizeof(line)); /* it holds its record while we look */
	/* from outside: the file is owned by NS_ID but claims uid 0, so it is not trusted */
	struct abd_snapshot *snap;
	cr_assert_eq(abd_registry_snapshot(s.reg, &snap), 0);
	size_t count = abd_snapshot_count(snap);
	enum abd_state st = count ? abd_snapshot_entry(snap, 0)->state : 0;
	char reason[256] = "";
	if (count && abd_snapshot_entry(snap, 0)->reason)
		snprintf(reason, sizeof(reason), "%s", abd_snapshot_entry(snap, 0)->reason);
	abd_snapshot_free(snap);
	kill(pid, SIGKILL);
	abd_test_wait(pid);
	cr_assert_str_eq(line, "sibling 0", "inside the namespace: %s", line);
	cr_assert_eq(count, 1);
	cr_assert_eq(st, ABD_STATE_INVALID, "outside, a record claiming uid 0 in a file owned by "
	             "uid %u must read as invalid (state %d)", NS_ID, (int)st);
	cr_assert(strstr(reason, "uid") || strstr(reason, "own"), "the reason says why: %s", reason);
	scratch_close(&s);
}
