/* SPDX-License-Identifier: MIT */
/* abdctl serve / send / recv / info on ring services, run as the built binary ($ABD_ABDCTL):
 * what they print and their exit codes (docs/abdctl.1). */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <stdio.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"

#define SEC (1000ll * 1000 * 1000)

static const char *abdctl(void)
{
	const char *p = getenv("ABD_ABDCTL");
	if (!p || access(p, X_OK) != 0)
		cr_skip_test("ABD_ABDCTL is not set to the built abdctl");
	return p;
}

/* Start abdctl with argv (argv[0] is replaced by the binary); stdin from `in` (NULL: empty),
 * stdout to *out_fd (may be NULL: discarded). */
static pid_t start(const char **argv, const char *in, int *out_fd)
{
	int o[2], i[2];
	cr_assert_eq(pipe2(o, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(i, O_CLOEXEC), 0);
	argv[0] = abdctl();
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(i[0], 0);
		if (out_fd) {
			dup2(o[1], 1);
		} else { /* discarded: a closed pipe would kill it with SIGPIPE */
			int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
			dup2(null, 1);
		}
		char *args[16];
		size_t n = 0;
		for (; argv[n] && n < 15; n++)
			args[n] = (char *)(uintptr_t)argv[n];
		args[n] = NULL;
		execv(args[0], args);
		_exit(127);
	}
	close(i[0]);
	close(o[1]);
	if (in) {
		ssize_t n = write(i[1], in, strlen(in));
		cr_assert_eq(n, (ssize_t)strlen(in));
	}
	close(i[1]);
	if (out_fd)
		*out_fd = o[0];
	else
		close(o[0]);
	return pid;
}

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

/* Run to completion; returns the exit status, output in out. */
static int run(const char **argv, const char *in, char *out, size_t size)
{
	int fd;
	pid_t pid = start(argv, in, &fd);
	slurp(fd, out, size);
	return abd_test_wait(pid);
}

/* Wait until a service of that name is alive in dir. */
static void wait_alive(const char *dir, const char *name)
{
	struct abd_registry *reg;
	cr_assert_eq(abd_registry_open(dir, 0, &reg, NULL, 0), 0);
	uint64_t end = abd_test_now_ns() + 10 * SEC;
	struct abd_record *rec = NULL;
	while (abd_registry_lookup(reg, name, &rec) != 0) {
		cr_assert_lt(abd_test_now_ns(), end, "%s did not appear", name);
		struct timespec ts = { 0, 5 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	abd_record_free(rec);
	abd_registry_free(reg);
}

/* Wait until n consumers are attached to the service (an observer's statistics). */
static void wait_consumers(const char *dir, const char *name, uint32_t n)
{
	struct abd_service_config cfg = { 0 };
	cfg.dir = dir;
	struct abd_service *obs;
	cr_assert_eq(abd_service_open(name, &cfg, ABD_SERVICE_OBSERVER, 10 * SEC, &obs), 0);
	uint64_t end = abd_test_now_ns() + 10 * SEC;
	struct abd_service_stats st;
	for (;;) {
		cr_assert_eq(abd_service_stats(obs, &st), 0);
		if (st.consumers >= n)
			break;
		cr_assert_lt(abd_test_now_ns(), end, "%u consumers did not attach", n);
		struct timespec ts = { 0, 5 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	abd_service_close(obs);
}

ABD_TEST(service_cli, serve_prints_what_send_sends)
{
	char dir[256], out[4096], buf[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	const char *serve[] = { NULL, "serve", "--dir", dir, "--count", "4", "cli.echo", NULL };
	int sfd;
	pid_t s = start(serve, NULL, &sfd);
	wait_alive(dir, "cli.echo");
	const char *send[] = { NULL, "send", "--dir", dir, "cli.echo", "one", "two words", NULL };
	cr_assert_eq(run(send, NULL, buf, sizeof(buf)), 0);
	const char *send_stdin[] = { NULL, "send", "--dir", dir, "cli.echo", NULL };
	cr_assert_eq(run(send_stdin, "line\\1\ntab\there\n", buf, sizeof(buf)), 0);
	slurp(sfd, out, sizeof(out));
	cr_assert_eq(abd_test_wait(s), 0, "serve exits 0 after --count messages");
	cr_assert_str_eq(out, "one\ntwo words\nline\\\\1\ntab\\x09here\n");
	abd_test_rmtree(dir);
}

ABD_TEST(service_cli, recv_json_and_the_exit_codes)
{
	char dir[256], out[4096], buf[1024];
	abd_test_mkdtemp(dir, sizeof(dir));
	/* 3: nothing appears in time */
	const char *absent[] = { NULL, "send", "--dir", dir, "--timeout", "100", "cli.none", "x",
		                     NULL };
	cr_assert_eq(run(absent, NULL, buf, sizeof(buf)), 3);
	const char *absent_recv[] = { NULL, "recv", "--dir", dir, "--timeout", "0", "cli.none", NULL };
	cr_assert_eq(run(absent_recv, NULL, buf, sizeof(buf)), 3);

	const char *hold[] = { NULL, "serve", "--dir", dir, "--hold", "cli.box", NULL };
	pid_t h = start(hold, NULL, NULL);
	wait_alive(dir, "cli.box");
	const char *recv2[] = { NULL, "recv", "--dir", dir, "--count", "2", "--json", "cli.box", NULL };
	int rfd;
	pid_t r = start(recv2, NULL, &rfd);
	const char *send[] = { NULL, "send", "--dir", dir, "cli.box", "a\"b", "c", NULL };
	cr_assert_eq(run(send, NULL, buf, sizeof(buf)), 0);
	slurp(rfd, out, sizeof(out));
	cr_assert_eq(abd_test_wait(r), 0);
	cr_assert_str_eq(out, "{\"seq\":0,\"len\":3,\"data\":\"a\\\"b\"}\n"
	                      "{\"seq\":1,\"len\":1,\"data\":\"c\"}\n");

	/* 4: the publisher leaves while recv waits; what was in the ring is printed first */
	const char *recv_all[] = { NULL, "recv", "--dir", dir, "cli.box", NULL };
	r = start(recv_all, NULL, &rfd);
	wait_consumers(dir, "cli.box", 1); /* recv holds the ring before the publisher goes */
	const char *send1[] = { NULL, "send", "--dir", dir, "cli.box", "last", NULL };
	cr_assert_eq(run(send1, NULL, buf, sizeof(buf)), 0);
	kill(h, SIGTERM);
	cr_assert_eq(abd_test_wait(h), 0, "serve exits 0 on SIGTERM");
	slurp(rfd, out, sizeof(out));
	cr_assert_eq(abd_test_wait(r), 4, "recv exits 4 once the publisher left");
	cr_assert_str_eq(out, "last\n");

	/* 6: a record that is not a ring service */
	const char *pub[] = { NULL, "publish", "--dir", dir, "cli.plain", NULL };
	pid_t p = start(pub, NULL, NULL);
	wait_alive(dir, "cli.plain");
	const char *send_plain[] = { NULL, "send", "--dir", dir, "cli.plain", "x", NULL };
	cr_assert_eq(run(send_plain, NULL, buf, sizeof(buf)), 6);
	kill(p, SIGTERM);
	abd_test_wait(p);
	abd_test_rmtree(dir);
}

ABD_TEST(service_cli, help_and_usage_errors)
{
	char buf[4096];
	const char *cmds[] = { "serve", "send", "recv", "info", "pub", "sub", "hz" };
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		const char *help[] = { NULL, cmds[i], "--help", NULL };
		cr_assert_eq(run(help, NULL, buf, sizeof(buf)), 0, "%s --help", cmds[i]);
		cr_assert(strstr(buf, "usage: abdctl") && strstr(buf, "Exit"), "%s --help: %s", cmds[i],
		          buf);
	}
	const char *bad_cap[] = { NULL, "serve", "--capacity", "3", "x", NULL };
	cr_assert_eq(run(bad_cap, NULL, buf, sizeof(buf)), 2);
	const char *no_name[] = { NULL, "send", NULL };
	cr_assert_eq(run(no_name, NULL, buf, sizeof(buf)), 2);
	const char *bad_name[] = { NULL, "recv", "../x", NULL };
	cr_assert_eq(run(bad_name, NULL, buf, sizeof(buf)), 2);
}

ABD_TEST(service_cli, info_shows_live_ring_statistics)
{
	char dir[256], out[8192];
	abd_test_mkdtemp(dir, sizeof(dir));
	const char *serve[] = { NULL, "serve", "--dir", dir, "--capacity", "64", "cli.stats", NULL };
	pid_t s = start(serve, NULL, NULL);
	wait_alive(dir, "cli.stats");
	const char *info[] = { NULL, "info", "--dir", dir, "--json", "--interval", "50", "cli.stats",
		                   NULL };
	cr_assert_eq(run(info, NULL, out, sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "\"ring\":{"), "%s", out);
	cr_assert(strstr(out, "\"capacity\":64"), "%s", out);
	cr_assert(strstr(out, "\"consumers\":1"), "the serving consumer, not the observer: %s", out);
	cr_assert(strstr(out, "\"producers\":0"), "%s", out);
	cr_assert(strstr(out, "\"closed\":false"), "%s", out);
	kill(s, SIGTERM);
	cr_assert_eq(abd_test_wait(s), 0);
	abd_test_rmtree(dir);
}

ABD_TEST(service_cli, typed_services_from_the_shell)
{
	char dir[256], out[4096], buf[1024];
	abd_test_mkdtemp(dir, sizeof(dir));
	const char *serve[] = { NULL, "serve", "--dir", dir, "--type", "pose:4:beef", "--count", "2",
		                    "cli.typed", NULL };
	int sfd;
	pid_t s = start(serve, NULL, &sfd);
	wait_alive(dir, "cli.typed");
	/* 6: another type name, or the same name with another hash */
	const char *other[] = { NULL, "send", "--dir", dir, "--type", "other", "cli.typed", "x", NULL };
	cr_assert_eq(run(other, NULL, buf, sizeof(buf)), 6);
	const char *hash[] = { NULL, "recv", "--dir", dir, "--type", "pose:4:beee", "--timeout", "0",
		                   "cli.typed", NULL };
	cr_assert_eq(run(hash, NULL, buf, sizeof(buf)), 6);
	/* 1: the right type, but a message that is not 4 bytes; nothing reaches serve */
	const char *short_msg[] = { NULL, "send", "--dir", dir, "--type", "pose:4:beef", "cli.typed",
		                        "abc", NULL };
	cr_assert_eq(run(short_msg, NULL, buf, sizeof(buf)), 1);
	/* 2: a bad escape is refused before anything is opened or sent */
	const char *bad_esc[] = { NULL, "send", "--dir", dir, "--escaped", "cli.typed", "ab\\x0",
		                      NULL };
	cr_assert_eq(run(bad_esc, NULL, buf, sizeof(buf)), 2);
	/* binary messages of exactly 4 bytes, round-tripped through the escaping recv prints */
	const char *bin[] = { NULL, "send", "--dir", dir, "--type", "pose:4:BEEF", "--escaped",
		                  "cli.typed", "ab\\x00\\x7f", "\\\\xyz", NULL };
	cr_assert_eq(run(bin, NULL, buf, sizeof(buf)), 0);
	slurp(sfd, out, sizeof(out));
	cr_assert_eq(abd_test_wait(s), 0, "serve exits 0 after --count messages");
	cr_assert_str_eq(out, "ab\\x00\\x7f\n\\\\xyz\n");
	/* 2: malformed --type values */
	const char *bad[][2] = { { "pose:x", "" }, { "pose:4:zz", "" }, { ":4", "" },
		                     { "pose:-1", "" }, { "bad name", "" } };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *a[] = { NULL, "serve", "--dir", dir, "--type", bad[i][0], "cli.bad", NULL };
		cr_assert_eq(run(a, NULL, buf, sizeof(buf)), 2, "--type '%s'", bad[i][0]);
	}
	abd_test_rmtree(dir);
}

/* ---- signals: recv and send end as their help says; a spurious EINTR is not an end ---- */

/* abdctl with stdin from /dev/null, stdout and stderr into pipes (*out_fd, *err_fd). */
static pid_t start_piped(const char **argv, int *out_fd, int *err_fd)
{
	int o[2], e[2];
	cr_assert_eq(pipe2(o, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(e, O_CLOEXEC), 0);
	argv[0] = abdctl();
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
		dup2(null, 0);
		dup2(o[1], 1);
		dup2(e[1], 2);
		char *args[16];
		size_t n = 0;
		for (; argv[n] && n < 15; n++)
			args[n] = (char *)(uintptr_t)argv[n];
		args[n] = NULL;
		execv(args[0], args);
		_exit(127);
	}
	close(o[1]);
	close(e[1]);
	*out_fd = o[0];
	*err_fd = e[0];
	return pid;
}

/* Reads fd until its text so far ends with `want` (10 s at most). */
static void read_until(int fd, const char *want, char *buf, size_t size)
{
	size_t n = 0;
	uint64_t end = abd_test_now_ns() + 10 * SEC;
	buf[0] = 0;
	while (strlen(buf) < strlen(want) || strcmp(buf + strlen(buf) - strlen(want), want)) {
		uint64_t now = abd_test_now_ns();
		cr_assert_lt(now, end, "waited 10 s for \"%s\"; got \"%s\"", want, buf);
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, (int)((end - now) / 1000000) + 1) <= 0)
			continue;
		ssize_t r = read(fd, buf + n, size - 1 - n);
		cr_assert_gt(r, 0, "the output ended before \"%s\"; got \"%s\"", want, buf);
		n += (size_t)r;
		buf[n] = 0;
	}
}

/* The exit status of pid within `ns` (128 + signal when killed); fails the test after that. */
static int wait_within(pid_t pid, uint64_t ns)
{
	int st = abd_test_wait_within(pid, ns);
	cr_assert_neq(st, -2, "pid %d did not exit within %llu ms", (int)pid,
	              (unsigned long long)(ns / 1000000));
	cr_assert_geq(st, 0);
	return st;
}

static void nap_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

/* recv gets two messages, then sig: it exits 0 (recv --help: "interrupted") and says
 * nothing on stderr. */
static void recv_then(int sig)
{
	char dir[256], out[4096], err[4096], buf[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	const char *serve[] = { NULL, "serve", "--dir", dir, "--hold", "cli.sig", NULL };
	pid_t s = start(serve, NULL, NULL);
	wait_alive(dir, "cli.sig");
	const char *recv[] = { NULL, "recv", "--dir", dir, "cli.sig", NULL };
	int ofd, efd;
	pid_t r = start_piped(recv, &ofd, &efd);
	wait_consumers(dir, "cli.sig", 1);
	const char *send[] = { NULL, "send", "--dir", dir, "cli.sig", "one", "two", NULL };
	cr_assert_eq(run(send, NULL, buf, sizeof(buf)), 0);
	read_until(ofd, "one\ntwo\n", out, sizeof(out));
	nap_ms(150); /* recv asleep in pop again */
	cr_assert_eq(kill(r, sig), 0);
	int st = wait_within(r, 5 * SEC);
	slurp(efd, err, sizeof(err));
	close(ofd);
	cr_expect_eq(st, 0, "recv stopped by %s after two messages exits 0, not %d (stderr: %s)",
	             strsignal(sig), st, err);
	cr_expect_str_empty(err, "recv stopped by a signal is no error");
	kill(s, SIGTERM);
	cr_assert_eq(abd_test_wait(s), 0);
	abd_test_rmtree(dir);
}

ABD_TEST(service_cli, recv_after_messages_sigint_exits_0)
{
	recv_then(SIGINT);
}

ABD_TEST(service_cli, recv_after_messages_sigterm_exits_0)
{
	recv_then(SIGTERM);
}

/* A SIGINT while recv waits for a name nobody publishes ends it at once (exit 0), not when
 * --timeout runs out. */
ABD_TEST(service_cli, recv_waiting_for_a_publisher_stops_on_sigint)
{
	char dir[256], out[256], err[4096];
	abd_test_mkdtemp(dir, sizeof(dir));
	const char *recv[] = { NULL, "recv", "--dir", dir, "--timeout", "30000", "cli.never", NULL };
	int ofd, efd;
	pid_t r = start_piped(recv, &ofd, &efd);
	nap_ms(300);
	cr_assert_eq(kill(r, SIGINT), 0);
	int st = wait_within(r, 3 * SEC);
	slurp(efd, err, sizeof(err));
	slurp(ofd, out, sizeof(out));
	cr_expect_eq(st, 0, "exit %d (stderr: %s)", st, err);
	cr_expect_str_empty(err);
	abd_test_rmtree(dir);
}

/* The end of a recv test: send msg to name, recv (pid r, stdout ofd, stderr efd) prints it,
 * SIGTERM ends it with exit 0; then the publisher s is stopped and dir removed. */
static void recv_gets_then_sigterm_exits_0(const char *dir, const char *name, const char *msg,
                                           pid_t r, int ofd, int efd, pid_t s)
{
	char out[4096], err[4096], buf[256], want[256];
	const char *send[] = { NULL, "send", "--dir", dir, name, msg, NULL };
	cr_assert_eq(run(send, NULL, buf, sizeof(buf)), 0);
	snprintf(want, sizeof(want), "%s\n", msg);
	read_until(ofd, want, out, sizeof(out));
	cr_assert_eq(kill(r, SIGTERM), 0);
	int st = wait_within(r, 5 * SEC);
	slurp(efd, err, sizeof(err));
	close(ofd);
	cr_expect_eq(st, 0, "exit %d (stderr: %s)", st, err);
	kill(s, SIGTERM);
	cr_assert_eq(abd_test_wait(s), 0);
	abd_test_rmtree(dir);
}

/* recv waiting for a name nobody publishes yet: it sleeps (a count of its wake-ups over 2 s,
 * not a timing), a debugger's attach or a job stop does not end the wait, it receives once the
 * name is published, and SIGTERM then ends it with exit 0. */
ABD_TEST(service_cli, recv_waiting_for_a_name_sleeps_and_survives_stops)
{
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	const char *recv[] = { NULL, "recv", "--dir", dir, "--timeout", "-1", "cli.later", NULL };
	int ofd, efd;
	pid_t r = start_piped(recv, &ofd, &efd);
	abd_test_wait_asleep(r); /* waiting for the name */
	long before = abd_test_ctxsw(r);
	nap_ms(2000);
	long woke = abd_test_ctxsw(r) - before;
	cr_expect_geq(before, 0);
	cr_expect_leq(woke, 1, "recv waiting for a missing name woke %ld times in 2 s", woke);
	abd_test_stops_leave_running(r, 1);
	const char *serve[] = { NULL, "serve", "--dir", dir, "--hold", "cli.later", NULL };
	pid_t s = start(serve, NULL, NULL);
	wait_consumers(dir, "cli.later", 1);
	recv_gets_then_sigterm_exits_0(dir, "cli.later", "hello", r, ofd, efd, s);
}

/* send waiting for a name: a debugger's attach and a job stop do not end it; SIGINT does,
 * at once, with exit 130 and a line saying so (docs/abdctl.1, SIGNALS). */
ABD_TEST(service_cli, send_waiting_for_a_name_survives_stops_and_sigint_exits_130)
{
	char dir[256], out[256], err[4096];
	abd_test_mkdtemp(dir, sizeof(dir));
	const char *send[] = { NULL, "send", "--dir", dir, "--timeout", "30000", "cli.never", "m",
		               NULL };
	int ofd, efd;
	pid_t p = start_piped(send, &ofd, &efd);
	nap_ms(300);
	abd_test_stops_leave_running(p, 1);
	uint64_t t0 = abd_test_now_ns();
	cr_assert_eq(kill(p, SIGINT), 0);
	int st = wait_within(p, 5 * SEC);
	uint64_t ms = (abd_test_now_ns() - t0) / 1000000;
	slurp(efd, err, sizeof(err));
	slurp(ofd, out, sizeof(out));
	cr_expect_eq(st, 130, "exit %d (stderr: %s)", st, err);
	cr_expect(strstr(err, "interrupted by") && strstr(err, "before the service was opened"),
	          "stderr: %s", err);
	cr_expect_lt(ms, 500, "send took %llu ms to stop on SIGINT", (unsigned long long)ms);
	abd_test_rmtree(dir);
}

/* What `strace -p` does to a recv asleep in pop: PTRACE_SEIZE, PTRACE_INTERRUPT (the sleep
 * ends with EINTR, no handler runs), detach. recv keeps running and prints the next message. */
ABD_TEST(service_cli, recv_survives_a_ptrace_interrupt)
{
	char dir[256], out[4096], buf[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	const char *serve[] = { NULL, "serve", "--dir", dir, "--hold", "cli.ptrace", NULL };
	pid_t s = start(serve, NULL, NULL);
	wait_alive(dir, "cli.ptrace");
	const char *recv[] = { NULL, "recv", "--dir", dir, "cli.ptrace", NULL };
	int ofd, efd;
	pid_t r = start_piped(recv, &ofd, &efd);
	wait_consumers(dir, "cli.ptrace", 1);
	const char *send1[] = { NULL, "send", "--dir", dir, "cli.ptrace", "before", NULL };
	cr_assert_eq(run(send1, NULL, buf, sizeof(buf)), 0);
	read_until(ofd, "before\n", out, sizeof(out));
	for (int i = 0; i < 3; i++) {
		nap_ms(150); /* asleep in pop */
		abd_test_ptrace_interrupt(r);
	}
	nap_ms(200);
	cr_assert_eq(waitpid(r, NULL, WNOHANG), 0, "recv exited after a ptrace attach and detach");
	recv_gets_then_sigterm_exits_0(dir, "cli.ptrace", "after", r, ofd, efd, s);
}

/* send blocked on a full ring: a ptrace interrupt does not end it; SIGINT does, with exit 130
 * and the count of messages sent on stderr (send --help). */
ABD_TEST(service_cli, send_blocked_survives_ptrace_and_sigint_exits_130)
{
	char dir[256], out[256], err[4096];
	abd_test_mkdtemp(dir, sizeof(dir));
	const char *serve[] = { NULL, "serve", "--dir", dir, "--hold", "--capacity", "2", "cli.full",
		                NULL };
	pid_t s = start(serve, NULL, NULL);
	wait_alive(dir, "cli.full");
	const char *send[] = { NULL, "send", "--dir", dir, "cli.full", "1", "2", "3", "4", NULL };
	int ofd, efd;
	pid_t p = start_piped(send, &ofd, &efd);
	nap_ms(300); /* two sent, asleep in push for room */
	for (int i = 0; i < 3; i++) {
		abd_test_ptrace_interrupt(p);
		nap_ms(150);
	}
	cr_assert_eq(waitpid(p, NULL, WNOHANG), 0, "send exited after a ptrace attach and detach");
	cr_assert_eq(kill(p, SIGINT), 0);
	int st = wait_within(p, 5 * SEC);
	slurp(efd, err, sizeof(err));
	slurp(ofd, out, sizeof(out));
	cr_expect_eq(st, 130, "exit %d (stderr: %s)", st, err);
	cr_expect(strstr(err, "interrupted by") && strstr(err, "after 2 messages"),
	          "stderr says it was interrupted after 2 messages: %s", err);
	kill(s, SIGTERM);
	cr_assert_eq(abd_test_wait(s), 0);
	abd_test_rmtree(dir);
}

/* ---------------------------------------------------------------- who may publish -- */

#define PUB_USER 1000

/* uid PUB_USER serves cli.cam in a shared registry: root's `abdctl send cli.cam` does not
 * deliver to it (no trusted publisher appears: exit 3), and does with --publisher-uid. */
ABD_TEST(service_cli, send_passes_over_another_users_service_unless_trusted)
{
	const char *ctl = abdctl();
	if (geteuid() != 0)
		cr_skip_test("needs root to serve as uid %d (setresuid)", PUB_USER);
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	cr_assert_eq(chmod(dir, 01777), 0);
	int o[2];
	cr_assert_eq(pipe2(o, O_CLOEXEC), 0);
	fflush(NULL);
	pid_t srv = fork();
	cr_assert_geq(srv, 0);
	if (srv == 0) {
		if (setgroups(0, NULL) < 0 || setresgid(PUB_USER, PUB_USER, PUB_USER) < 0 ||
		    setresuid(PUB_USER, PUB_USER, PUB_USER) < 0)
			_exit(126);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(o[1], 1);
		execl(ctl, ctl, "serve", "--dir", dir, "--count", "1", "cli.cam", (char *)NULL);
		_exit(127);
	}
	close(o[1]);
	/* appeared (looked up trusting everyone) */
	struct abd_registry *reg;
	cr_assert_eq(abd_registry_open(dir, 0, &reg, NULL, 0), 0);
	uid_t any[1] = { ABD_PUBLISHER_ANY };
	struct abd_lookup_opts opts = { .publisher_uids = any, .n_publisher_uids = 1 };
	struct abd_record *rec = NULL;
	uint64_t end = abd_test_now_ns() + 10 * SEC;
	while (abd_registry_lookup_opts(reg, "cli.cam", &opts, &rec) != 0) {
		cr_assert_lt(abd_test_now_ns(), end, "uid %d's serve did not publish", PUB_USER);
		struct timespec ts = { 0, 5 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	cr_assert_eq(abd_record_uid(rec), PUB_USER);
	abd_record_free(rec);
	abd_registry_free(reg);

	char out[4096];
	const char *a1[] = { NULL, "send", "--dir", dir, "--timeout", "300", "cli.cam", "to-1000", NULL };
	cr_assert_eq(run(a1, NULL, out, sizeof(out)), 3, "root's send reached uid %d's service",
	             PUB_USER);
	const char *a2[] = { NULL, "send", "--dir", dir, "--timeout", "5000", "--publisher-uid",
		             "1000", "cli.cam", "trusted", NULL };
	cr_assert_eq(run(a2, NULL, out, sizeof(out)), 0);
	slurp(o[0], out, sizeof(out));
	cr_assert_eq(abd_test_wait(srv), 0);
	cr_assert_str_eq(out, "trusted\n", "uid %d's serve received: %s", PUB_USER, out);
	abd_test_rmtree(dir);
}

/* ------------------------------------------------------------------ broadcast: pub/sub/hz -- */

ABD_TEST(service_cli, pub_reaches_every_sub_and_a_late_sub_gets_the_history)
{
	char dir[256], out[2][1024], buf[1024];
	abd_test_mkdtemp(dir, sizeof(dir));
	const char *sub[] = { NULL, "sub", "--dir", dir, "cli.fan", NULL };
	int fd[2];
	pid_t s[2];
	for (int i = 0; i < 2; i++)
		s[i] = start(sub, NULL, &fd[i]);
	const char *pub[] = { NULL, "pub", "--dir", dir, "--wait", "2", "cli.fan", "one", "two", "3",
		              NULL };
	cr_assert_eq(run(pub, NULL, buf, sizeof(buf)), 0);
	for (int i = 0; i < 2; i++) {
		slurp(fd[i], out[i], sizeof(out[i]));
		cr_assert_eq(abd_test_wait(s[i]), 4, "sub exits 4 once the publisher left");
		cr_assert_str_eq(out[i], "one\ntwo\n3\n", "subscriber %d", i);
	}
	/* --hold with a history: a subscriber that comes later gets the last 2 */
	const char *hold[] = { NULL, "pub", "--dir", dir, "--capacity", "4", "--history", "2",
		               "--hold", "cli.hist", NULL };
	pid_t h = start(hold, "a\nb\nc\n", NULL);
	wait_alive(dir, "cli.hist");
	const char *late[] = { NULL, "sub", "--dir", dir, "--count", "2", "--json", "cli.hist", NULL };
	cr_assert_eq(run(late, NULL, out[0], sizeof(out[0])), 0);
	cr_assert_str_eq(out[0], "{\"seq\":0,\"len\":1,\"data\":\"b\"}\n"
	                         "{\"seq\":1,\"len\":1,\"data\":\"c\"}\n");
	/* info shows it as a broadcast service */
	const char *info[] = { NULL, "info", "--dir", dir, "cli.hist", NULL };
	cr_assert_eq(run(info, NULL, buf, sizeof(buf)), 0);
	cr_assert(strstr(buf, "broadcast 4 slots of 256 bytes") && strstr(buf, "3 messages"), "%s",
	          buf);
	const char *infoj[] = { NULL, "info", "--dir", dir, "--json", "cli.hist", NULL };
	cr_assert_eq(run(infoj, NULL, buf, sizeof(buf)), 0);
	cr_assert(strstr(buf, "\"kind\":\"broadcast\",\"bytes\":3,"), "%s", buf);
	/* sub on a ring service: 6 */
	const char *serve[] = { NULL, "serve", "--dir", dir, "--hold", "cli.ring", NULL };
	pid_t r = start(serve, NULL, NULL);
	wait_alive(dir, "cli.ring");
	const char *subring[] = { NULL, "sub", "--dir", dir, "cli.ring", NULL };
	cr_assert_eq(run(subring, NULL, buf, sizeof(buf)), 6);
	kill(r, SIGTERM);
	kill(h, SIGTERM);
	cr_assert_eq(abd_test_wait(h), 0);
	abd_test_wait(r);
	abd_test_rmtree(dir);
}

ABD_TEST(service_cli, sub_reports_what_the_overwrite_policy_took)
{
	char dir[256], out[8192];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct abd_service_config cfg = { .dir = dir, .capacity = 4, .slot_size = 16 };
	struct abd_broadcast_opts bo = { .subscribers = 2, .policy = ABD_BROADCAST_OVERWRITE };
	struct abd_service *pub;
	cr_assert_eq(abd_service_publish_broadcast("cli.over", &cfg, &bo, 0, &pub), 0);
	const char *sub[] = { NULL, "sub", "--dir", dir, "--json", "cli.over", NULL };
	int fd;
	pid_t s = start(sub, NULL, &fd);
	for (uint64_t end = abd_test_now_ns() + 10 * SEC;;) { /* serve its open */
		struct abd_service_stats st;
		cr_assert_eq(abd_service_stats(pub, &st), 0);
		if (st.consumers == 1)
			break;
		cr_assert_lt(abd_test_now_ns(), end);
		abd_reactor_run_once(abd_service_reactor(pub), 5 * 1000 * 1000);
	}
	/* it cannot read while stopped: 20 messages through 4 slots */
	kill(s, SIGSTOP);
	for (int i = 0; i < 20; i++) {
		char m[8];
		int n = snprintf(m, sizeof(m), "m%d", i);
		cr_assert_eq(abd_service_try_push(pub, m, (size_t)n), 0);
	}
	kill(s, SIGCONT);
	struct timespec ts = { 0, 300 * 1000 * 1000 };
	nanosleep(&ts, NULL);
	abd_service_close(pub);
	slurp(fd, out, sizeof(out));
	cr_assert_eq(abd_test_wait(s), 4);
	long msgs = 0, lost = -1;
	for (char *p = out; (p = strchr(p, '{')); p++) {
		if (!strncmp(p, "{\"seq\"", 6))
			msgs++;
		char *t = strstr(p, "\"total_lost\":");
		if (!strncmp(p, "{\"lost\"", 7) && t)
			lost = strtol(t + 13, NULL, 10);
	}
	cr_assert_gt(lost, 0, "no loss reported: %s", out);
	cr_assert_eq(msgs + lost, 20, "%ld printed + %ld lost: %s", msgs, lost, out);
	cr_assert(strstr(out, "\"data\":\"m19\""), "the newest is delivered: %s", out);
	abd_test_rmtree(dir);
}

ABD_TEST(service_cli, hz_shows_the_rate_of_a_running_stream_without_a_seat)
{
	char dir[256], out[4096];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct abd_service_config cfg = { .dir = dir, .capacity = 64, .slot_size = 100 };
	/* one seat only: hz must not take it */
	struct abd_broadcast_opts bo = { .subscribers = 1 };
	struct abd_service *pub;
	cr_assert_eq(abd_service_publish_broadcast("cli.hz", &cfg, &bo, 0, &pub), 0);
	const char *hz[] = { NULL, "hz", "--dir", dir, "--interval", "200", "--count", "3", "--json",
		             "cli.hz", NULL };
	int fd;
	pid_t h = start(hz, NULL, &fd);
	char msg[100] = { 0 };
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint64_t end = abd_test_now_ns() + 20 * SEC;
	size_t n = 0;
	/* a stream of 100-byte messages, about 2000 a second, until hz printed its 3 lines */
	for (;;) {
		cr_assert_lt(abd_test_now_ns(), end, "hz printed: %.*s", (int)n, out);
		cr_assert_eq(abd_service_try_push(pub, msg, sizeof(msg)), 0);
		abd_reactor_run_once(abd_service_reactor(pub), 500 * 1000);
		if (poll(&p, 1, 0) == 1) {
			ssize_t r = read(fd, out + n, sizeof(out) - 1 - n);
			if (r <= 0)
				break;
			n += (size_t)r;
		}
	}
	out[n] = 0;
	close(fd);
	cr_assert_eq(abd_test_wait(h), 0);
	char *last = NULL;
	for (char *q = out; (q = strstr(q, "{\"service\"")); q++)
		last = q;
	cr_assert(last && strstr(last, "\"kind\":\"broadcast\""), "%s", out);
	double rate = strtod(strstr(last, "\"msgs_per_s\":") + 13, NULL);
	double bps = strtod(strstr(last, "\"bytes_per_s\":") + 14, NULL);
	cr_assert_gt(rate, 100, "%s", out);
	cr_assert(bps > rate * 99 && bps < rate * 101 + 1000, "100 bytes a message: %s", out);
	cr_assert(strstr(last, "\"latency_us\""), "%s", out);
	cr_assert(strstr(last, "\"subscribers\":0"), "hz is no subscriber: %s", out);
	abd_service_close(pub);
	abd_test_rmtree(dir);
}
