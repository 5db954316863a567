/* SPDX-License-Identifier: MIT */
/* Request-response services (abd_service_publish_rpc, abd_service_call & co.) across real
 * processes, through the registry: calls and their answers, the asynchronous form, a server
 * killed or withdrawing with calls pending (-EPIPE within a bound), and abdctl serve --reply /
 * abdctl call. Children die with the test (PR_SET_PDEATHSIG); a watchdog alarm turns a hang
 * into a failure. */
#include <abd/abd.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define WATCHDOG_S 120
#define MS 1000000ll
#define SEC (1000 * MS)

static void watchdog(void)
{
	alarm(WATCHDOG_S);
}

static void child_setup(void)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static void *shared_alloc(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(p, MAP_FAILED);
	return p;
}

struct shared {
	int ready;       /* the server published */
	int pending;     /* clients with their calls in flight */
	int answer;      /* 0: the server answers; 1: it takes and keeps every request */
	int delay_ms;    /* the server answers this long after it took the request */
	uint64_t killed; /* when the parent killed the server (abd_test_now_ns) */
	uint64_t taken;
	int64_t worst_ns[16]; /* per client: kill -> the last -EPIPE */
	int results[16];
};

struct proc_args {
	const char *dir;
	struct shared *sh;
	unsigned id, calls;
};

/* "R:" + the request */
static size_t answer(const char *req, size_t n, char *out)
{
	memcpy(out, "R:", 2);
	memcpy(out + 2, req, n);
	return n + 2;
}

static int server_main(void *arg)
{
	struct proc_args *a = arg;
	child_setup();
	struct abd_service_config cfg = { 0 };
	cfg.dir = a->dir;
	cfg.capacity = 64;
	cfg.slot_size = 128;
	struct abd_service *svc;
	int r = abd_service_publish_rpc("calc", &cfg, NULL, 0, &svc);
	if (r < 0)
		return 10;
	__atomic_store_n(&a->sh->ready, 1, __ATOMIC_RELEASE);
	char req[128], resp[256];
	for (;;) {
		uint64_t token;
		int n = abd_service_take(svc, req, sizeof(req), &token, -1);
		if (n == -EINTR)
			continue;
		if (n < 0)
			return 11;
		__atomic_add_fetch(&a->sh->taken, 1, __ATOMIC_RELAXED);
		if (__atomic_load_n(&a->sh->answer, __ATOMIC_ACQUIRE))
			continue; /* keep it: the caller waits */
		if (a->sh->delay_ms)
			usleep((useconds_t)a->sh->delay_ms * 1000);
		size_t m = answer(req, (size_t)n, resp);
		if (abd_service_reply(svc, token, resp, m) < 0)
			return 12;
	}
}

static pid_t server_start(const char *dir, struct shared *sh, struct proc_args *a)
{
	*a = (struct proc_args){ dir, sh, 0, 0 };
	pid_t p = abd_test_fork(server_main, a);
	uint64_t end = abd_test_now_ns() + 10 * SEC;
	while (!__atomic_load_n(&sh->ready, __ATOMIC_ACQUIRE)) {
		cr_assert_lt(abd_test_now_ns(), end, "the server did not publish");
		usleep(1000);
	}
	return p;
}

static int open_client(const char *dir, struct abd_service **svc)
{
	struct abd_service_config cfg = { 0 };
	cfg.dir = dir;
	return abd_service_open("calc", &cfg, 0, 10 * SEC, svc);
}

/* ---- calls, synchronous and asynchronous ---- */

static int caller_main(void *arg)
{
	struct proc_args *a = arg;
	child_setup();
	struct abd_service *svc;
	if (open_client(a->dir, &svc) < 0)
		return 10;
	if (abd_service_is_rpc(svc) != 1)
		return 11;
	char req[4][64], resp[256], want[256];
	for (unsigned i = 0; i < a->calls; i++) {
		/* one synchronous call */
		int len = snprintf(req[0], sizeof(req[0]), "client %u call %u", a->id, i);
		int n = abd_service_call(svc, req[0], (size_t)len, resp, sizeof(resp), 10 * SEC);
		size_t m = answer(req[0], (size_t)len, want);
		if (n < 0 || (size_t)n != m || memcmp(resp, want, m) != 0)
			return 12;
		/* three in flight, collected in reverse */
		uint64_t t[3];
		size_t l[3];
		for (unsigned j = 0; j < 3; j++) {
			l[j] = (size_t)snprintf(req[j + 1], sizeof(req[j + 1]), "client %u async %u.%u",
			                        a->id, i, j);
			if (abd_service_call_send(svc, req[j + 1], l[j], &t[j], 10 * SEC) < 0)
				return 13;
		}
		for (unsigned j = 3; j-- > 0;) {
			n = abd_service_call_wait(svc, t[j], resp, sizeof(resp), 10 * SEC);
			m = answer(req[j + 1], l[j], want);
			if (n < 0 || (size_t)n != m || memcmp(resp, want, m) != 0)
				return 14;
		}
	}
	abd_service_close(svc);
	return 0;
}

ABD_TEST(rpc_service, clients_in_several_processes_get_their_own_answers)
{
	watchdog();
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct shared *sh = shared_alloc(sizeof(*sh));
	struct proc_args sa;
	pid_t srv = server_start(dir, sh, &sa);
	unsigned calls = (unsigned)abd_test_scaled(300, 30);
	struct proc_args ca[4];
	pid_t cl[4];
	for (unsigned i = 0; i < 4; i++) {
		ca[i] = (struct proc_args){ dir, sh, i, calls };
		cl[i] = abd_test_fork(caller_main, &ca[i]);
	}
	for (unsigned i = 0; i < 4; i++)
		cr_expect_eq(abd_test_wait_within(cl[i], 60 * SEC), 0, "client %u", i);
	cr_expect_eq(sh->taken, 4ull * calls * 4);
	kill(srv, SIGKILL);
	abd_test_wait(srv);
	munmap(sh, sizeof(*sh));
	abd_test_rmtree(dir);
}

/* ---- a caller asleep in its call is woken by the answer, not by its deadline ---- */

ABD_TEST(rpc_service, a_sleeping_caller_is_woken_by_its_answer)
{
	watchdog();
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct shared *sh = shared_alloc(sizeof(*sh));
	sh->delay_ms = 100; /* the caller is asleep in the reactor by then */
	struct proc_args sa;
	pid_t srv = server_start(dir, sh, &sa);
	struct abd_service *svc;
	cr_assert_eq(open_client(dir, &svc), 0);
	char resp[64];
	for (int i = 0; i < 3; i++) {
		uint64_t t0 = abd_test_now_ns();
		int n = abd_service_call(svc, "wake", 4, resp, sizeof(resp), 5 * SEC);
		uint64_t ms = (abd_test_now_ns() - t0) / MS;
		cr_expect_eq(n, 6, "call %d: %d", i, n);
		cr_expect(ms >= 100 && ms < 1000, "call %d took %llu ms: the answer woke it", i,
		          (unsigned long long)ms);
	}
	abd_service_close(svc);
	kill(srv, SIGKILL);
	abd_test_wait(srv);
	munmap(sh, sizeof(*sh));
	abd_test_rmtree(dir);
}

/* ---- a server that dies, or withdraws, with calls pending ---- */

static int pending_main(void *arg)
{
	struct proc_args *a = arg;
	child_setup();
	struct abd_service *svc;
	if (open_client(a->dir, &svc) < 0)
		return 10;
	uint64_t t[3];
	char resp[256];
	if (abd_service_call_send(svc, "one", 3, &t[0], SEC) < 0 ||
	    abd_service_call_send(svc, "two", 3, &t[1], SEC) < 0)
		return 11;
	__atomic_add_fetch(&a->sh->pending, 1, __ATOMIC_RELEASE);
	/* a synchronous call with no deadline, then the two asynchronous ones */
	int r = abd_service_call(svc, "three", 5, resp, sizeof(resp), -1);
	int r1 = abd_service_call_wait(svc, t[1], resp, sizeof(resp), -1);
	int r0 = abd_service_call_poll(svc, t[0], resp, sizeof(resp));
	uint64_t now = abd_test_now_ns();
	a->sh->worst_ns[a->id] = (int64_t)(now - __atomic_load_n(&a->sh->killed, __ATOMIC_ACQUIRE));
	a->sh->results[a->id] = r == -EPIPE && r1 == -EPIPE && r0 == -EPIPE ? 0 : r < 0 ? r : 1;
	/* the handle stays closed: a new call fails at once */
	if (abd_service_call(svc, "four", 4, resp, sizeof(resp), SEC) != -EPIPE)
		return 12;
	abd_service_close(svc);
	return 0;
}

static void pending_calls_fail(bool kill_it)
{
	watchdog();
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct shared *sh = shared_alloc(sizeof(*sh));
	sh->answer = 1; /* the server takes and keeps every request */
	struct proc_args sa;
	pid_t srv = server_start(dir, sh, &sa);
	struct proc_args ca[4];
	pid_t cl[4];
	for (unsigned i = 0; i < 4; i++) {
		ca[i] = (struct proc_args){ dir, sh, i, 0 };
		cl[i] = abd_test_fork(pending_main, &ca[i]);
	}
	uint64_t end = abd_test_now_ns() + 20 * SEC;
	while (__atomic_load_n(&sh->pending, __ATOMIC_ACQUIRE) < 4 || sh->taken < 12) {
		cr_assert_lt(abd_test_now_ns(), end, "the calls did not reach the server");
		usleep(1000);
	}
	usleep(50 * 1000); /* everybody asleep in its call */
	__atomic_store_n(&sh->killed, abd_test_now_ns(), __ATOMIC_RELEASE);
	kill(srv, kill_it ? SIGKILL : SIGTERM); /* SIGTERM: the default action, a death too */
	cr_expect_eq(abd_test_wait(srv), 128 + (kill_it ? SIGKILL : SIGTERM));
	for (unsigned i = 0; i < 4; i++) {
		cr_expect_eq(abd_test_wait_within(cl[i], 10 * SEC), 0, "client %u", i);
		cr_expect_eq(sh->results[i], 0, "client %u: every pending call -EPIPE (%d)", i,
		             sh->results[i]);
		cr_log_info("client %u: -EPIPE %lld us after the kill", i,
		            (long long)(sh->worst_ns[i] / 1000));
		cr_expect_lt(sh->worst_ns[i], 2 * SEC, "client %u learnt of the death in time", i);
	}
	munmap(sh, sizeof(*sh));
	abd_test_rmtree(dir);
}

ABD_TEST(rpc_service, a_killed_server_fails_every_pending_call_with_epipe)
{
	pending_calls_fail(true);
}

/* a server that withdraws (abd_service_close) while calls wait */
static int withdrawing_main(void *arg)
{
	struct proc_args *a = arg;
	child_setup();
	struct abd_service_config cfg = { 0 };
	cfg.dir = a->dir;
	struct abd_service *svc;
	if (abd_service_publish_rpc("calc", &cfg, NULL, 0, &svc) < 0)
		return 10;
	__atomic_store_n(&a->sh->ready, 1, __ATOMIC_RELEASE);
	char req[256];
	uint64_t token;
	while (__atomic_load_n(&a->sh->taken, __ATOMIC_ACQUIRE) < 1) {
		int n = abd_service_take(svc, req, sizeof(req), &token, SEC);
		if (n >= 0)
			__atomic_add_fetch(&a->sh->taken, 1, __ATOMIC_RELEASE);
	}
	usleep(100 * 1000);
	__atomic_store_n(&a->sh->killed, abd_test_now_ns(), __ATOMIC_RELEASE);
	abd_service_close(svc);
	return 0;
}

ABD_TEST(rpc_service, a_withdrawing_server_fails_the_pending_call_with_epipe)
{
	watchdog();
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct shared *sh = shared_alloc(sizeof(*sh));
	struct proc_args sa = { dir, sh, 0, 0 };
	pid_t srv = abd_test_fork(withdrawing_main, &sa);
	while (!__atomic_load_n(&sh->ready, __ATOMIC_ACQUIRE))
		usleep(1000);
	struct abd_service *svc;
	cr_assert_eq(open_client(dir, &svc), 0);
	char resp[64];
	int r = abd_service_call(svc, "hello", 5, resp, sizeof(resp), 10 * SEC);
	uint64_t took = abd_test_now_ns() - sh->killed;
	cr_expect_eq(r, -EPIPE, "got %d", r);
	cr_expect_lt(took, 2 * SEC, "%llu ms after the close", (unsigned long long)(took / MS));
	cr_expect_eq(abd_service_closed(svc), -ESHUTDOWN);
	abd_service_close(svc);
	cr_expect_eq(abd_test_wait(srv), 0);
	munmap(sh, sizeof(*sh));
	abd_test_rmtree(dir);
}

/* ---- deadlines through the service ---- */

ABD_TEST(rpc_service, a_call_past_its_deadline_is_etimedout_and_its_answer_is_dropped)
{
	watchdog();
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct abd_service_config cfg = { 0 };
	cfg.dir = dir;
	struct abd_rpc_opts ro = { .in_flight = 1 };
	struct abd_service *srv, *cli;
	cr_assert_eq(abd_service_publish_rpc("calc", &cfg, &ro, 0, &srv), 0);
	cr_assert_eq(abd_service_open("calc", &cfg, 0, 5 * SEC, &cli), 0);
	char buf[64];
	uint64_t token;
	uint64_t t0 = abd_test_now_ns();
	cr_expect_eq(abd_service_call(cli, "late", 4, buf, sizeof(buf), 50 * MS), -ETIMEDOUT);
	uint64_t took = abd_test_now_ns() - t0;
	cr_expect(took >= 50 * MS && took < 1000 * MS, "%llu ms", (unsigned long long)(took / MS));
	/* the server answers it now: too late, and the next call in the same cell gets its own */
	cr_assert_eq(abd_service_try_take(srv, buf, sizeof(buf), &token), 4);
	cr_expect_eq(abd_service_reply(srv, token, "R:late", 6), 0);
	uint64_t ticket;
	cr_assert_eq(abd_service_call_send(cli, "next", 4, &ticket, 0), 0);
	cr_expect_eq(abd_service_call_poll(cli, ticket, buf, sizeof(buf)), -EAGAIN,
	             "the late answer is not the next call's");
	cr_assert_eq(abd_service_try_take(srv, buf, sizeof(buf), &token), 4);
	cr_expect_eq(abd_service_reply(srv, token, "R:next", 6), 0);
	cr_expect_eq(abd_service_reply(srv, token, "again", 5), -ESTALE, "answered once only");
	cr_assert_eq(abd_service_call_wait(cli, ticket, buf, sizeof(buf), SEC), 6);
	cr_expect_eq(memcmp(buf, "R:next", 6), 0);
	/* an error answer */
	cr_assert_eq(abd_service_call_send(cli, "bad", 3, &ticket, 0), 0);
	cr_assert_eq(abd_service_try_take(srv, buf, sizeof(buf), &token), 3);
	cr_expect_eq(abd_service_reply_error(srv, token, -ENOENT), 0);
	cr_expect_eq(abd_service_call_wait(cli, ticket, buf, sizeof(buf), SEC), -ENOENT);
	/* the wrong forms for each side */
	cr_expect_eq(abd_service_try_push(cli, "x", 1), -EPERM);
	cr_expect_eq(abd_service_try_pop(srv, buf, sizeof(buf)), -EPERM);
	cr_expect_eq(abd_service_try_take(cli, buf, sizeof(buf), &token), -EPERM);
	cr_expect_eq(abd_service_call_send(srv, "x", 1, &ticket, 0), -EPERM);
	cr_expect_eq(abd_service_call_poll(cli, 12345, buf, sizeof(buf)), -EINVAL);
	abd_service_close(cli);
	abd_service_close(srv);
	abd_test_rmtree(dir);
}

ABD_TEST(rpc_service, publish_rpc_checks_its_arguments)
{
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct abd_service_config cfg = { 0 };
	cfg.dir = dir;
	struct abd_service *svc = NULL;
	struct abd_rpc_opts bad = { .in_flight = ABD_RPC_MAX_IN_FLIGHT + 1 };
	cr_expect_eq(abd_service_publish_rpc("calc", &cfg, &bad, 0, &svc), -EINVAL);
	bad = (struct abd_rpc_opts){ .reserved = { 1 } };
	cr_expect_eq(abd_service_publish_rpc("calc", &cfg, &bad, 0, &svc), -EINVAL);
	cr_expect_eq(abd_service_publish_rpc("calc", &cfg, NULL, ABD_SERVICE_PRODUCER, &svc), -EINVAL);
	cr_expect_eq(abd_service_publish_rpc("bad/name", &cfg, NULL, 0, &svc), -EINVAL);
	cr_expect_null(svc);
	/* a ring service is not request-response */
	cr_assert_eq(abd_service_publish("ring", &cfg, 0, &svc), 0);
	cr_expect_eq(abd_service_is_rpc(svc), 0);
	uint64_t t;
	cr_expect_eq(abd_service_call_send(svc, "x", 1, &t, 0), -EPERM);
	abd_service_close(svc);
	abd_test_rmtree(dir);
}

/* ---- abdctl serve --reply / call ---- */

static const char *abdctl(void)
{
	const char *p = getenv("ABD_ABDCTL");
	if (!p || access(p, X_OK) != 0)
		cr_skip_test("ABD_ABDCTL is not set to the built abdctl");
	return p;
}

/* Run abdctl with argv; stdout into out; returns the exit status. background: start it and
 * return its pid instead (stdout discarded). */
static int run(const char **argv, char *out, size_t size, pid_t *background)
{
	int o[2];
	cr_assert_eq(pipe2(o, O_CLOEXEC), 0);
	argv[0] = abdctl();
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (background) {
			int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
			dup2(null, 1);
		} else {
			dup2(o[1], 1);
		}
		execv(argv[0], (char **)(uintptr_t)argv);
		_exit(127);
	}
	close(o[1]);
	if (background) {
		close(o[0]);
		*background = pid;
		return 0;
	}
	size_t n = 0;
	ssize_t r;
	while (n + 1 < size && (r = read(o[0], out + n, size - 1 - n)) > 0)
		n += (size_t)r;
	out[n] = 0;
	close(o[0]);
	return abd_test_wait(pid);
}

ABD_TEST(rpc_service, abdctl_serve_reply_answers_abdctl_call)
{
	watchdog();
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	pid_t srv;
	const char *serve[] = { NULL, "serve", "--reply=upper", "--dir", dir, "calc", NULL };
	run(serve, NULL, 0, &srv);
	char out[1024];
	const char *call[] = { NULL, "call", "--dir", dir, "calc", "hello", "w\\x6frld", NULL };
	cr_expect_eq(run(call, out, sizeof(out), NULL), 0);
	cr_expect_str_eq(out, "HELLO\nW\\\\X6FRLD\n");
	const char *json[] = { NULL, "call", "--json", "--escaped", "--dir", dir, "calc", "w\\x6frld",
		               NULL };
	cr_expect_eq(run(json, out, sizeof(out), NULL), 0);
	cr_expect(strncmp(out, "{\"seq\":0,\"len\":5,\"data\":\"WORLD\",\"us\":", 37) == 0, "%s", out);
	/* not there: exit 3; not a request-response service: exit 6 */
	const char *missing[] = { NULL, "call", "--timeout", "100", "--dir", dir, "nobody", "x", NULL };
	cr_expect_eq(run(missing, out, sizeof(out), NULL), 3);
	pid_t ring;
	const char *hold[] = { NULL, "serve", "--hold", "--dir", dir, "ring", NULL };
	run(hold, NULL, 0, &ring);
	const char *wrong[] = { NULL, "call", "--dir", dir, "ring", "x", NULL };
	cr_expect_eq(run(wrong, out, sizeof(out), NULL), 6);
	const char *send[] = { NULL, "send", "--dir", dir, "calc", "x", NULL };
	cr_expect_eq(run(send, out, sizeof(out), NULL), 6, "send to a request-response service");
	const char *usage[] = { NULL, "call", "--dir", dir, "calc", NULL };
	cr_expect_eq(run(usage, out, sizeof(out), NULL), 2, "a message is required");
	/* the server stops on SIGTERM, withdrawn: a call then finds nobody */
	kill(srv, SIGTERM);
	cr_expect_eq(abd_test_wait(srv), 0);
	kill(ring, SIGTERM);
	cr_expect_eq(abd_test_wait(ring), 0);
	cr_expect_eq(run(missing, out, sizeof(out), NULL), 3);
	abd_test_rmtree(dir);
}

/* ---- the asynchronous form on a reactor ---- */

struct async_state {
	uint64_t tickets[3];
	int answered, events;
	char seen[3][64];
};

static void async_event(struct abd_service *svc, enum abd_service_event ev, int status,
                        void *ud)
{
	struct async_state *st = ud;
	if (ev != ABD_SERVICE_EVENT_READABLE || status != 0)
		return;
	st->events++;
	for (int i = 0; i < 3; i++) {
		if (!st->tickets[i])
			continue;
		int n = abd_service_call_poll(svc, st->tickets[i], st->seen[i], sizeof(st->seen[i]) - 1);
		if (n == -EAGAIN)
			continue;
		st->tickets[i] = 0;
		if (n >= 0) {
			st->seen[i][n] = 0;
			st->answered++;
		}
	}
	if (st->answered == 3)
		abd_reactor_stop(abd_service_reactor(svc));
}

static int answer_three(void *arg)
{
	struct proc_args *a = arg;
	child_setup();
	struct abd_service_config cfg = { 0 };
	cfg.dir = a->dir;
	struct abd_service *svc;
	if (abd_service_publish_rpc("calc", &cfg, NULL, 0, &svc) < 0)
		return 10;
	__atomic_store_n(&a->sh->ready, 1, __ATOMIC_RELEASE);
	char req[64], resp[80];
	for (int i = 0; i < 3; i++) {
		uint64_t token;
		int n = abd_service_take(svc, req, sizeof(req), &token, 10 * SEC);
		if (n < 0)
			return 11;
		usleep(20 * 1000); /* one at a time: each answer a wake of its own */
		size_t m = answer(req, (size_t)n, resp);
		if (abd_service_reply(svc, token, resp, m) < 0)
			return 12;
	}
	usleep(500 * 1000); /* the client reads before the server withdraws */
	abd_service_close(svc);
	return 0;
}

ABD_TEST(rpc_service, answers_reach_a_client_driven_by_its_reactor)
{
	watchdog();
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct shared *sh = shared_alloc(sizeof(*sh));
	struct proc_args sa = { dir, sh, 0, 0 };
	pid_t srv = abd_test_fork(answer_three, &sa);
	while (!__atomic_load_n(&sh->ready, __ATOMIC_ACQUIRE))
		usleep(1000);
	struct abd_service *svc;
	cr_assert_eq(open_client(dir, &svc), 0);
	struct async_state st = { 0 };
	const char *req[3] = { "a", "bb", "ccc" };
	for (int i = 0; i < 3; i++)
		cr_assert_eq(abd_service_call_send(svc, req[i], strlen(req[i]), &st.tickets[i], 0), 0);
	cr_assert_eq(abd_service_set_event_fn(svc, async_event, &st), 0);
	struct abd_reactor *r = abd_service_reactor(svc);
	uint64_t end = abd_test_now_ns() + 10 * SEC;
	while (st.answered < 3 && abd_test_now_ns() < end)
		cr_assert_geq(abd_reactor_run_once(r, 100 * MS), 0);
	cr_expect_eq(st.answered, 3);
	cr_expect_str_eq(st.seen[0], "R:a");
	cr_expect_str_eq(st.seen[1], "R:bb");
	cr_expect_str_eq(st.seen[2], "R:ccc");
	cr_expect_leq(st.events, 12, "no busy loop of events: %d", st.events);
	abd_service_close(svc);
	cr_expect_eq(abd_test_wait(srv), 0);
	munmap(sh, sizeof(*sh));
	abd_test_rmtree(dir);
}
