/* SPDX-License-Identifier: MIT */
/* abdctl list / watch / gc / publish, run as the built binary ($ABD_ABDCTL). */
#include <dirent.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <grp.h>
#include <sys/prctl.h>

#include "registry-util.h"

static char *abdctl(void)
{
	char *p = getenv("ABD_ABDCTL");
	if (!p || access(p, X_OK) != 0)
		cr_skip_test("ABD_ABDCTL is not set to the built abdctl");
	return p;
}

/* Start abdctl with args; its stdout (and stderr when err_out) come back on *out_fd. */
static pid_t start(char *const argv[], int *out_fd, bool err_out)
{
	int p[2];
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		dup2(p[1], 1);
		if (err_out)
			dup2(p[1], 2);
		execv(argv[0], argv);
		_exit(127);
	}
	close(p[1]);
	*out_fd = p[0];
	return pid;
}

/* Read everything until EOF into buf; returns the length. */
static size_t slurp(int fd, char *buf, size_t size)
{
	size_t n = 0;
	ssize_t r;
	while (n + 1 < size && (r = read(fd, buf + n, size - 1 - n)) > 0)
		n += (size_t)r;
	buf[n] = 0;
	close(fd);
	return n;
}

/* Read one line (without '\n'), waiting at most 10 s. */
/* A line within ms milliseconds of silence (the peer may be slow: a sanitizer build on a loaded
 * machine). */
static bool read_line_within(int fd, char *line, size_t size, int ms)
{
	size_t n = 0;
	while (n + 1 < size) {
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, ms) <= 0)
			break;
		char c;
		if (read(fd, &c, 1) != 1)
			break;
		if (c == '\n') {
			line[n] = 0;
			return true;
		}
		line[n++] = c;
	}
	line[n] = 0;
	return false;
}

static bool read_line(int fd, char *line, size_t size)
{
	return read_line_within(fd, line, size, 10000);
}

/* Run and collect: exit status and output. */
static int run(char *const argv[], char *out, size_t size, bool err_out)
{
	int fd;
	pid_t pid = start(argv, &fd, err_out);
	slurp(fd, out, size);
	return abd_test_wait(pid);
}

/* Valid JSON (one document, or one per line with lines=true) in valid UTF-8, checked by
 * Python's strict decoder and parser. */
static void assert_json(const char *text, bool lines)
{
	if (access("/usr/bin/python3", X_OK) != 0)
		return;
	char path[] = "/dev/shm/abd-test-json-XXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	char script[512];
	snprintf(script, sizeof(script),
	         "import json,sys\nt=open('%s','rb').read().decode('utf-8')\n"
	         "[json.loads(l) for l in t.splitlines() if l] if %d else json.loads(t)\n",
	         path, lines ? 1 : 0);
	char *argv[] = { "/usr/bin/python3", "-c", script, NULL };
	char out[4096];
	int st = run(argv, out, sizeof(out), true);
	unlink(path);
	cr_assert_eq(st, 0, "invalid JSON:\n%s\n%s", text, out);
}

ABD_TEST(registry_cli, list_json_survives_hostile_bytes)
{
	char *ctl = abdctl();
	struct scratch s;
	scratch_open(&s);
	struct abd_record *rec;
	cr_assert_eq(abd_record_new("cli.list", &rec), 0);
	cr_assert_eq(abd_record_add_meta(rec, "weird", "\x01\x7f\xff\"\\\n{}"), 0);
	struct abd_publication *pub;
	cr_assert_eq(abd_publish(s.reg, rec, &pub), 0);
	abd_record_free(rec);
	int dfd = abd_registry_fd(s.reg);
	close(openat(dfd, "bad\x01\xff\"\\name", O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
	close(openat(dfd, "garbage.00112233445566778899aabbccddeeff", O_CREAT | O_WRONLY | O_CLOEXEC,
	             0644));

	static char out[65536];
	char *argv[] = { ctl, "list", "--dir", s.dir, "--json", "--all", NULL };
	cr_assert_eq(run(argv, out, sizeof(out), false), 0);
	assert_json(out, false);
	cr_assert_not_null(strstr(out, "\"state\":\"alive\""), "%s", out);
	cr_assert_not_null(strstr(out, "\"state\":\"invalid\""), "%s", out);
	cr_assert_not_null(strstr(out, "\"reason\":\"malformed record: truncated\""), "%s", out);
	cr_assert_not_null(strstr(out, abd_publication_name(pub)), "%s", out);

	/* Without --all: only the live one. */
	char *argv2[] = { ctl, "list", "--dir", s.dir, "--json", NULL };
	cr_assert_eq(run(argv2, out, sizeof(out), false), 0);
	assert_json(out, false);
	cr_assert_null(strstr(out, "invalid"), "%s", out);
	/* Text output escapes control bytes. */
	char *argv3[] = { ctl, "list", "--dir", s.dir, "--all", NULL };
	cr_assert_eq(run(argv3, out, sizeof(out), false), 0);
	cr_assert_null(strchr(out, '\x01'), "raw control byte in text output");
	abd_withdraw(pub);
	scratch_close(&s);
}

/* Names and metadata are bytes: valid UTF-8 reaches JSON as the same characters (not one
 * \u00XX per byte, which a reader decodes as Latin-1 garble); what is not UTF-8 is still
 * escaped, so the document stays valid. */
ABD_TEST(registry_cli, list_json_passes_utf8_through)
{
	char *ctl = abdctl();
	struct scratch s;
	scratch_open(&s);
	struct abd_record *rec;
	cr_assert_eq(abd_record_new("cli.utf8", &rec), 0);
	cr_assert_eq(abd_record_add_meta(rec, "label", "caméra ✓ 😀"), 0);
	cr_assert_eq(abd_record_add_meta(rec, "mixed", "é\xff\xc0\xaf\xed\xa0\x80" "\xc2\x85"), 0);
	struct abd_publication *pub;
	cr_assert_eq(abd_publish(s.reg, rec, &pub), 0);
	abd_record_free(rec);
	int dfd = abd_registry_fd(s.reg);
	close(openat(dfd, "café✓", O_CREAT | O_WRONLY | O_CLOEXEC, 0644));

	static char out[65536];
	char *argv[] = { ctl, "list", "--dir", s.dir, "--json", "--all", NULL };
	cr_assert_eq(run(argv, out, sizeof(out), false), 0);
	assert_json(out, false);
	cr_assert_not_null(strstr(out, "\"label\":\"caméra ✓ 😀\""), "%s", out);
	cr_assert_not_null(strstr(out, "\"name\":\"café✓\""), "%s", out);
	/* é passes; a stray byte, an overlong form, a surrogate: one \u00XX per byte; U+0085
	 * (a C1 control a terminal may act on): escaped as itself */
	cr_assert_not_null(strstr(out, "\"mixed\":\"é\\u00ff\\u00c0\\u00af\\u00ed\\u00a0\\u0080"
	                               "\\u0085\""), "%s", out);
	abd_withdraw(pub);
	scratch_close(&s);
}

/* A record that says it is a ring service (abd.service) but is not one (abdctl publish's ring
 * carries none of a service's geometry): the ring's error by its name, EPROTONOSUPPORT, as
 * every errno the library returns (tests/test-cli.c). abdctl publish serves the handshake, so
 * the acquisition succeeds under every profile. */
ABD_TEST(registry_cli, info_json_names_the_error_of_a_record_that_is_not_a_ring)
{
	char *ctl = abdctl();
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	int pfd;
	char name[256];
	char *pargv[] = { ctl, "publish", "--dir", dir, "cli.notring", "--meta", "abd.service=ring",
	                  NULL };
	pid_t pub = start(pargv, &pfd, false);
	cr_assert(read_line(pfd, name, sizeof(name)), "publish printed no name");
	static char out[65536];
	/* options after the operand, and --name=value: getopt_long's forms */
	char *argv[] = { ctl, "info", "cli.notring", "--json", "--interval=0", "--dir", dir, NULL };
	int st = run(argv, out, sizeof(out), false);
	kill(pub, SIGTERM);
	cr_assert_eq(abd_test_wait(pub), 0);
	close(pfd);
	abd_test_rmtree(dir);
	cr_assert_eq(st, 0, "%s", out);
	assert_json(out, false);
	cr_assert_not_null(strstr(out, "\"ring\":{\"error\":\"EPROTONOSUPPORT\"}"), "%s", out);
	cr_assert_null(strstr(out, "E?"), "%s", out);
}

/* A number that does not fit is a usage error, said as such: never truncated, wrapped or
 * multiplied past its type (--timeout in ms became ns by a multiplication that overflowed). */
ABD_TEST(registry_cli, options_refuse_numbers_that_do_not_fit)
{
	char *ctl = abdctl();
	char out[8192];
	struct {
		char *argv[8];
		const char *says;
	} cases[] = {
		{ { ctl, "info", "--timeout", "99999999999999999", "x.y", NULL }, "--timeout" },
		{ { ctl, "info", "--interval", "9223372036854775807", "x.y", NULL }, "--interval" },
		{ { ctl, "info", "--timeout", "-5", "x.y", NULL }, "--timeout" },
		{ { ctl, "info", "--timeout", "1e3", "x.y", NULL }, "--timeout" },
		{ { ctl, "list", "--publisher-uid", "", NULL }, "--publisher-uid" },
		{ { ctl, "list", "--publisher-uid", "4294967295", NULL }, "--publisher-uid" },
		{ { ctl, "list", "--publisher-gid", " 7", NULL }, "--publisher-gid" },
		{ { ctl, "publish", "--allow-uid", "4294967296", "x.y", NULL }, "--allow-uid" },
		{ { ctl, "publish", "--allow-gid", "", "x.y", NULL }, "--allow-gid" },
		{ { ctl, "send", "--timeout", "99999999999999999", "x.y", "m", NULL }, "--timeout" },
		{ { ctl, "recv", "--count", "18446744073709551616", "x.y", NULL }, "--count" },
		{ { ctl, "serve", "--capacity", "-1", "x.y", NULL }, "--capacity" },
		{ { ctl, "info", "--timeout", NULL }, "wants a value" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cr_assert_eq(run(cases[i].argv, out, sizeof(out), true), 2, "%s %s %s: %s",
		             cases[i].argv[1], cases[i].argv[2], cases[i].argv[3], out);
		cr_assert_not_null(strstr(out, cases[i].says), "%s", out);
	}
}

static void expect_event(int fd, const char *event, const char *name)
{
	char line[4096], want_event[64], want_name[256];
	snprintf(want_event, sizeof(want_event), "\"event\":\"%s\"", event);
	snprintf(want_name, sizeof(want_name), "\"name\":\"%s\"", name);
	for (int i = 0; i < 20; i++) {
		cr_assert(read_line(fd, line, sizeof(line)), "watch: no '%s' event for %s", event, name);
		assert_json(line, true);
		if (strstr(line, want_event) && strstr(line, want_name))
			return;
	}
	cr_assert_fail("watch: no '%s' event for %s", event, name);
}

ABD_TEST(registry_cli, publish_watch_gc)
{
	char *ctl = abdctl();
	struct scratch s;
	scratch_open(&s);
	struct abd_publication *before = publish_simple(s.reg, "cli.before");

	int wfd;
	char *wargv[] = { ctl, "watch", "--dir", s.dir, "--json", NULL };
	pid_t watcher = start(wargv, &wfd, false);
	expect_event(wfd, "added", abd_publication_name(before));

	/* publish, then SIGTERM: withdrawn. */
	int pfd;
	char name[256];
	char *pargv[] = { ctl, "publish", "--dir", s.dir, "cli.svc", "--meta", "a=b", NULL };
	pid_t pub = start(pargv, &pfd, false);
	cr_assert(read_line(pfd, name, sizeof(name)), "publish printed no name");
	expect_event(wfd, "added", name);
	char out[8192];
	char *largv[] = { ctl, "list", "--dir", s.dir, NULL };
	cr_assert_eq(run(largv, out, sizeof(out), false), 0);
	cr_assert_not_null(strstr(out, "cli.svc"), "%s", out);
	cr_assert_not_null(strstr(out, "a=b"), "%s", out);
	kill(pub, SIGTERM);
	cr_assert_eq(abd_test_wait(pub), 0);
	close(pfd);
	expect_event(wfd, "removed", name);

	/* publish, then kill -9: died, stale, removed by gc. */
	pub = start(pargv, &pfd, false);
	cr_assert(read_line(pfd, name, sizeof(name)));
	expect_event(wfd, "added", name);
	kill(pub, SIGKILL);
	cr_assert_eq(abd_test_wait(pub), 128 + SIGKILL);
	close(pfd);
	expect_event(wfd, "died", name);
	char *gargv[] = { ctl, "gc", "--dir", s.dir, NULL };
	cr_assert_eq(run(gargv, out, sizeof(out), false), 0);
	cr_assert_str_eq(out, "1\n");
	expect_event(wfd, "removed", name);
	/* ... and so is the handshake socket the killed publisher left behind. */
	DIR *d = opendir(s.dir);
	cr_assert_not_null(d);
	for (struct dirent *e; (e = readdir(d));)
		cr_assert(strncmp(e->d_name, ".abd-", 5) != 0, "%s left behind by gc", e->d_name);
	closedir(d);

	/* SIGINT: the watcher exits cleanly. */
	kill(watcher, SIGINT);
	cr_assert_eq(abd_test_wait(watcher), 0);
	close(wfd);
	abd_withdraw(before);
	scratch_close(&s);
}

ABD_TEST(registry_cli, usage_errors)
{
	char *ctl = abdctl();
	char out[8192];
	char *a1[] = { ctl, "publish", "--dir", "/dev/shm", ".bad", NULL };
	cr_assert_eq(run(a1, out, sizeof(out), true), 2);
	cr_assert_not_null(strstr(out, "not a service name"), "%s", out);
	char *a2[] = { ctl, "publish", "x", "--meta", "novalue", NULL };
	cr_assert_eq(run(a2, out, sizeof(out), true), 2);
	char *a3[] = { ctl, "list", "--bogus", NULL };
	cr_assert_eq(run(a3, out, sizeof(out), true), 2);
	char *cmds[] = { "list", "watch", "gc", "publish" };
	for (int i = 0; i < 4; i++) {
		char *a[] = { ctl, cmds[i], "--help", NULL };
		cr_assert_eq(run(a, out, sizeof(out), true), 0);
		cr_assert_not_null(strstr(out, "--dir"), "%s --help: %s", cmds[i], out);
	}
	/* An unsafe directory: refused with the reason. */
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	chmod(dir, 0777);
	char *a4[] = { ctl, "list", "--dir", dir, NULL };
	cr_assert_eq(run(a4, out, sizeof(out), true), 1);
	cr_assert_not_null(strstr(out, "sticky"), "%s", out);
	abd_test_rmtree(dir);
}

ABD_TEST(registry_cli, publish_names_the_filesystem_without_tmpfile)
{
	char *ctl = abdctl();
	if (geteuid() != 0)
		cr_skip_test("needs root to mount a filesystem without O_TMPFILE");
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	int p[2];
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
		    mount("none", dir, "bpf", 0, NULL) < 0)
			_exit(77);
		dup2(p[1], 2);
		execl(ctl, ctl, "publish", "--dir", dir, "x", (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	char out[4096];
	slurp(p[0], out, sizeof(out));
	int st = abd_test_wait(pid);
	abd_test_rmtree(dir);
	if (st == 77)
		cr_skip_test("cannot mount bpffs in a private mount namespace here");
	cr_assert_eq(st, 1, "%s", out);
	cr_assert_not_null(strstr(out, "bpf"), "%s", out);
	cr_assert_not_null(strstr(out, "tmpfs"), "%s", out);
}

/* ------------------------------------------------------------------ who may publish -- */

#define PUB_USER 1000

static int user_pub_main(void *arg)
{
	if (setgroups(0, NULL) < 0 || setresgid(PUB_USER, PUB_USER, PUB_USER) < 0 ||
	    setresuid(PUB_USER, PUB_USER, PUB_USER) < 0)
		return 90;
	prctl(PR_SET_PDEATHSIG, SIGKILL); /* cleared by the change of credentials */
	return child_pub_main(arg);
}

/* A record of uid PUB_USER in a shared directory: root's `abdctl list` shows it as
 * unauthorized (and warns that others can write the registry), alive once that uid is
 * trusted with --publisher-uid. */
ABD_TEST(registry_cli, list_shows_unauthorized_publishers)
{
	char *ctl = abdctl();
	if (geteuid() != 0)
		cr_skip_test("needs root to publish as uid %d (setresuid)", PUB_USER);
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	cr_assert_eq(chmod(dir, 01777), 0);
	int out[2], hold[2];
	cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(hold, O_CLOEXEC), 0);
	struct child_pub c = { dir, "cli.who", out[1], hold[0], 1, { out[0], hold[1] } };
	pid_t pid = abd_test_fork(user_pub_main, &c);
	close(out[1]);
	close(hold[0]);
	char name[ABD_RECORD_NAME_MAX + 1];
	ssize_t n = read(out[0], name, sizeof(name));
	close(out[0]);
	cr_assert_gt(n, 0, "the uid %d publisher failed (status %d)", PUB_USER,
	             n == 0 ? abd_test_wait(pid) : -1);

	static char buf[16384];
	char *a1[] = { ctl, "list", "--dir", dir, NULL };
	cr_assert_eq(run(a1, buf, sizeof(buf), true), 0, "%s", buf);
	cr_assert_not_null(strstr(buf, "unauthorized"), "%s", buf);
	cr_assert_not_null(strstr(buf, "cli.who"), "%s", buf);
	cr_assert_not_null(strstr(buf, "warning"), "no warning about a world-writable registry: %s",
	                   buf);
	char *a2[] = { ctl, "list", "--dir", dir, "--publisher-uid", "1000", NULL };
	cr_assert_eq(run(a2, buf, sizeof(buf), false), 0);
	cr_assert_null(strstr(buf, "unauthorized"), "%s", buf);
	cr_assert_not_null(strstr(buf, "alive"), "%s", buf);
	char *a3[] = { ctl, "list", "--dir", dir, "--json", NULL };
	cr_assert_eq(run(a3, buf, sizeof(buf), false), 0);
	assert_json(buf, false);
	cr_assert_not_null(strstr(buf, "\"authorized\":false"), "%s", buf);
	char *a4[] = { ctl, "list", "--dir", dir, "--json", "--publisher-gid", "1000", NULL };
	cr_assert_eq(run(a4, buf, sizeof(buf), false), 0);
	cr_assert_not_null(strstr(buf, "\"authorized\":true"), "%s", buf);
	char *a5[] = { ctl, "list", "--dir", dir, "--publisher-uid", "alice", NULL };
	cr_assert_eq(run(a5, buf, sizeof(buf), true), 2, "%s", buf);
	/* a private registry: no warning */
	char priv[256];
	abd_test_mkdtemp(priv, sizeof(priv));
	cr_assert_eq(chmod(priv, 0700), 0);
	char *a6[] = { ctl, "list", "--dir", priv, NULL };
	run(a6, buf, sizeof(buf), true);
	cr_assert_null(strstr(buf, "warning"), "%s", buf);
	abd_test_rmtree(priv);

	close(hold[1]);
	cr_assert_eq(abd_test_wait(pid), 0);
	abd_test_rmtree(dir);
}

/* ------------------------------------------------------------------ overflow -- */

/* The watcher is stopped while more events happen than the kernel's inotify queue holds: when
 * it runs again it reads the registry again, prints what changed (a record withdrawn, one
 * published meanwhile), then says that the queue overflowed. */
ABD_TEST(registry_cli, watch_prints_an_overflow)
{
	char *ctl = abdctl();
	long max = abd_test_read_long("/proc/sys/fs/inotify/max_queued_events");
	if (max < 0 || max > 65536)
		cr_skip_test("fs.inotify.max_queued_events is %ld: too many events to overflow it "
		             "quickly", max);
	struct scratch s;
	scratch_open(&s);
	struct abd_publication *leaving = publish_simple(s.reg, "cli.leaving");
	char left[ABD_RECORD_NAME_MAX + 1];
	snprintf(left, sizeof(left), "%s", abd_publication_name(leaving));
	int wfd;
	char *wargv[] = { ctl, "watch", "--dir", s.dir, "--json", NULL };
	/* The epoll backend: SIGSTOP stops the watcher's threads, not io_uring's workers, which may
	 * go on draining the inotify queue into completions while it is stopped, so that the queue
	 * never overflows (seen under load). With epoll, nothing reads the queue while it is
	 * stopped. (The library's overflow paths, through io_uring too, have their own tests in
	 * registry_race and reactor_services.) */
	cr_assert_eq(setenv("ABD_DISABLE", "io_uring", 1), 0);
	pid_t watcher = start(wargv, &wfd, false);
	unsetenv("ABD_DISABLE");
	expect_event(wfd, "added", left);

	cr_assert_eq(kill(watcher, SIGSTOP), 0);
	/* three events per cycle: create, delete, close of the unnamed file */
	struct abd_record *rec;
	cr_assert_eq(abd_record_new("cli.flood", &rec), 0);
	for (long i = 0; i < max / 3 + 64; i++) {
		struct abd_publication *p;
		cr_assert_eq(abd_publish(s.reg, rec, &p), 0);
		abd_withdraw(p);
	}
	abd_record_free(rec);
	abd_withdraw(leaving);
	struct abd_publication *arriving = publish_simple(s.reg, "cli.arriving");
	cr_assert_eq(kill(watcher, SIGCONT), 0);

	char line[4096];
	bool removed = false, added = false, overflow = false;
	while (!overflow) {
		/* the watcher first works through the whole queue it was stopped in front of (tens
		 * of thousands of events): slow in a sanitizer build on a busy machine */
		cr_assert(read_line_within(wfd, line, sizeof(line), 30000),
		          "watch printed no overflow (removed %d, added %d)", removed, added);
		assert_json(line, true);
		removed |= strstr(line, "\"event\":\"removed\"") && strstr(line, left);
		added |= strstr(line, "\"event\":\"added\"") &&
		         strstr(line, abd_publication_name(arriving));
		overflow = strstr(line, "{\"event\":\"overflow\"}") != NULL;
	}
	cr_assert(removed && added, "the changes come before the overflow line");
	kill(watcher, SIGINT);
	cr_assert_eq(abd_test_wait(watcher), 0);
	close(wfd);
	abd_withdraw(arriving);
	scratch_close(&s);
}
