/* SPDX-License-Identifier: MIT */
/* `abd-perf peers`: the peer libraries abd is measured against, each compiled in only when
 * meson found it (ABD_PERF_ZMQ, ABD_PERF_NNG, ABD_PERF_ICEORYX) and reported as skipped
 * otherwise.
 *   zmq-ipc   libzmq REQ/REP over ipc://, round trip; PUSH/PULL throughput
 *   nng-ipc   nng pair1 over ipc://, round trip and throughput
 *   iceoryx   iceoryx 2.x C API, 2 topics; busy-polling round trip (+ one way = half of it)
 *             and WaitSet (blocking) round trip. The bench starts its own iox-roudi in a
 *             private mount namespace (tmpfs on /tmp and /dev/shm, where roudi keeps its
 *             socket and shared memory), so it neither needs nor disturbs a system roudi.
 * Each library is used from the two runner children only (after the fork): none of them
 * survives fork(). Their I/O threads run on the child's CPU (affinity is inherited). */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "perf/bench.h"

#if ABD_PERF_ZMQ
#include <zmq.h>
#endif
#if ABD_PERF_NNG
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#endif
#if ABD_PERF_ICEORYX
#include <iceoryx_binding_c/log.h>
#include <iceoryx_binding_c/publisher.h>
#include <iceoryx_binding_c/runtime.h>
#include <iceoryx_binding_c/subscriber.h>
#include <iceoryx_binding_c/wait_set.h>
#endif

static const char *const modes[] = {BENCH_SPLIT, BENCH_SHARED};

/* What every peer transport shares: a scratch directory, the message size, the mode. */
struct peer_shm {
	char dir[96];
	unsigned bytes;
	bool busy, tput;
	pid_t roudi; /* iceoryx: the keeper process that became iox-roudi */
};

struct peer_arg {
	unsigned bytes;
	bool busy, tput;
};

static int dir_prepare(void *shm, void *arg)
{
	struct peer_shm *s = shm;
	const struct peer_arg *a = arg;
	s->bytes = a->bytes;
	s->busy = a->busy;
	s->tput = a->tput;
	return bench_tmpdir(s->dir, sizeof(s->dir));
}

static void dir_cleanup(void *shm, void *arg)
{
	(void)arg;
	bench_rmdir(((struct peer_shm *)shm)->dir);
}

/* ---- ZeroMQ ---- */
#if ABD_PERF_ZMQ
struct zq_state {
	void *ctx, *sock;
	unsigned bytes;
};

static int zq_err(const char *what)
{
	return bench_fail("%s: %s", what, zmq_strerror(zmq_errno()));
}

static int zq_open(enum bench_role role, void *shm, int type, void **state)
{
	struct peer_shm *s = shm;
	struct zq_state *z = calloc(1, sizeof(*z));
	char ep[128];
	int zero = 0;
	if (!z)
		return -ENOMEM;
	*state = z;
	z->bytes = s->bytes;
	snprintf(ep, sizeof(ep), "ipc://%s/zmq", s->dir);
	if (!(z->ctx = zmq_ctx_new()) || !(z->sock = zmq_socket(z->ctx, type)))
		return zq_err("zmq_socket");
	zmq_setsockopt(z->sock, ZMQ_LINGER, &zero, sizeof(zero));
	if ((role == BENCH_B ? zmq_bind(z->sock, ep) : zmq_connect(z->sock, ep)) < 0)
		return zq_err(role == BENCH_B ? "zmq_bind" : "zmq_connect");
	return 0;
}

static int zq_rr_init(enum bench_role role, void *shm, void *arg, void **state)
{
	(void)arg;
	return zq_open(role, shm, role == BENCH_A ? ZMQ_REQ : ZMQ_REP, state);
}

static int zq_pp_init(enum bench_role role, void *shm, void *arg, void **state)
{
	(void)arg;
	return zq_open(role, shm, role == BENCH_A ? ZMQ_PUSH : ZMQ_PULL, state);
}

static void zq_fini(enum bench_role role, void *state)
{
	(void)role;
	struct zq_state *z = state;
	if (z->sock)
		zmq_close(z->sock);
	if (z->ctx)
		zmq_ctx_term(z->ctx);
	free(z);
}

static int zq_put(struct zq_state *z)
{
	char buf[4096] = {1};
	return zmq_send(z->sock, buf, z->bytes, 0) == (int)z->bytes ? 0 : zq_err("zmq_send");
}

static int zq_get(struct zq_state *z)
{
	char buf[4096];
	return zmq_recv(z->sock, buf, sizeof(buf), 0) == (int)z->bytes ? 0 : zq_err("zmq_recv");
}

static int zq_ping(void *state, uint64_t *ns)
{
	(void)ns;
	int r = zq_put(state);
	return r ? r : zq_get(state);
}

static int zq_pong(void *state)
{
	int r = zq_get(state);
	return r ? r : zq_put(state);
}

static int zq_produce(void *state, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		if (zq_put(state))
			return -EIO;
	return 0;
}

static int zq_consume(void *state, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		if (zq_get(state))
			return -EIO;
	return 0;
}
#endif

/* ---- nng ---- */
#if ABD_PERF_NNG
struct ng_state {
	nng_socket sock;
	bool open;
	unsigned bytes;
};

static int ng_init(enum bench_role role, void *shm, void *arg, void **state)
{
	(void)arg;
	struct peer_shm *s = shm;
	struct ng_state *n = calloc(1, sizeof(*n));
	char url[128];
	int r;
	if (!n)
		return -ENOMEM;
	*state = n;
	n->bytes = s->bytes;
	snprintf(url, sizeof(url), "ipc://%s/nng", s->dir);
	if ((r = nng_pair1_open(&n->sock)) != 0)
		return bench_fail("nng_pair1_open: %s", nng_strerror(r));
	n->open = true;
	if (s->tput) { /* queue like ZeroMQ's default high-water mark instead of lock-step */
		nng_socket_set_int(n->sock, NNG_OPT_SENDBUF, 1000);
		nng_socket_set_int(n->sock, NNG_OPT_RECVBUF, 1000);
	}
	r = role == BENCH_B ? nng_listen(n->sock, url, NULL, 0) : nng_dial(n->sock, url, NULL, 0);
	if (r != 0)
		return bench_fail("%s: %s", role == BENCH_B ? "nng_listen" : "nng_dial", nng_strerror(r));
	return 0;
}

static void ng_fini(enum bench_role role, void *state)
{
	(void)role;
	struct ng_state *n = state;
	if (n->open)
		nng_close(n->sock);
	free(n);
}

static int ng_put(struct ng_state *n)
{
	char buf[4096] = {1};
	int r = nng_send(n->sock, buf, n->bytes, 0);
	return r ? bench_fail("nng_send: %s", nng_strerror(r)) : 0;
}

static int ng_get(struct ng_state *n)
{
	char buf[4096];
	size_t len = sizeof(buf);
	int r = nng_recv(n->sock, buf, &len, 0);
	if (r)
		return bench_fail("nng_recv: %s", nng_strerror(r));
	return len == n->bytes ? 0 : bench_fail("nng_recv: %zu bytes, expected %u", len, n->bytes);
}

static int ng_ping(void *state, uint64_t *ns)
{
	(void)ns;
	int r = ng_put(state);
	return r ? r : ng_get(state);
}

static int ng_pong(void *state)
{
	int r = ng_get(state);
	return r ? r : ng_put(state);
}

static int ng_produce(void *state, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		if (ng_put(state))
			return -EIO;
	return 0;
}

static int ng_consume(void *state, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		if (ng_get(state))
			return -EIO;
	return 0;
}
#endif

/* ---- iceoryx ---- */
#if ABD_PERF_ICEORYX
/* Roudi's pools: chunk size includes iceoryx's chunk header. */
static const char roudi_config[] = "[general]\nversion = 1\n\n[[segment]]\n\n"
                                   "[[segment.mempool]]\nsize = 128\ncount = 1024\n\n"
                                   "[[segment.mempool]]\nsize = 1152\ncount = 1024\n\n"
                                   "[[segment.mempool]]\nsize = 4224\ncount = 256\n";

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	ssize_t n = write(fd, text, strlen(text));
	close(fd);
	return n == (ssize_t)strlen(text) ? 0 : -EIO;
}

/* In the keeper: a private mount namespace (a user namespace too when not privileged), tmpfs
 * over /tmp and /dev/shm. Returns 0 or a step name with errno set. */
static const char *private_mounts(void)
{
	uid_t uid = getuid();
	gid_t gid = getgid();
	if (unshare(CLONE_NEWNS) < 0) {
		char map[64];
		if (errno != EPERM || unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
			return "unshare";
		snprintf(map, sizeof(map), "%u %u 1", uid, uid);
		if (write_file("/proc/self/uid_map", map) < 0)
			return "uid_map";
		write_file("/proc/self/setgroups", "deny");
		snprintf(map, sizeof(map), "%u %u 1", gid, gid);
		if (write_file("/proc/self/gid_map", map) < 0)
			return "gid_map";
	}
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return "mount --make-rprivate /";
	if (mount("abd-perf", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") < 0)
		return "mount tmpfs /tmp";
	if (mount("abd-perf", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") < 0)
		return "mount tmpfs /dev/shm";
	return NULL;
}

void bench_roudi_stop(pid_t *roudi)
{
	if (*roudi <= 0)
		return;
	kill(*roudi, SIGTERM);
	for (int i = 0; i < 300; i++) { /* 3 s, then no more asking */
		if (waitpid(*roudi, NULL, WNOHANG) == *roudi) {
			*roudi = 0;
			return;
		}
		usleep(10000);
	}
	kill(*roudi, SIGKILL);
	waitpid(*roudi, NULL, 0);
	*roudi = 0;
}

/* Forks the keeper, which sets up the namespace and execs iox-roudi with `config`; waits for
 * roudi's socket. The keeper reports a failed step through the pipe; exec closes it
 * (O_CLOEXEC). */
int bench_roudi_start(const char *config, pid_t *roudi)
{
	int p[2];
	char why[160] = "";
	*roudi = 0;
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		close(p[0]), close(p[1]);
		return -errno;
	}
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM); /* survives exec: roudi goes with abd-perf */
		const char *step = private_mounts();
		int fd;
		if (!step && write_file("/tmp/roudi.toml", config) < 0)
			step = "write /tmp/roudi.toml";
		if (!step && (fd = open("/tmp/roudi.log", O_WRONLY | O_CREAT | O_CLOEXEC, 0600)) >= 0) {
			dup2(fd, 1), dup2(fd, 2);
			/* Monitoring off: on a loaded machine a late keep-alive made roudi
			 * reclaim a live benchmark process's chunks mid-run. */
			execlp("iox-roudi", "iox-roudi", "-c", "/tmp/roudi.toml", "-l", "warning", "-m", "off",
			       (char *)NULL);
			step = "exec iox-roudi";
		}
		dprintf(p[1], "%s: %s", step ? step : "open /tmp/roudi.log", strerror(errno));
		_exit(127);
	}
	close(p[1]);
	ssize_t n = read(p[0], why, sizeof(why) - 1);
	close(p[0]);
	*roudi = pid;
	if (n > 0) {
		why[n] = 0;
		bench_roudi_stop(roudi);
		return bench_fail("roudi keeper: %s", why), -ENOTSUP;
	}
	/* roudi is running in its namespace: wait for its socket, seen through its root. */
	char sock[64];
	snprintf(sock, sizeof(sock), "/proc/%d/root/tmp/roudi", pid);
	for (int i = 0; i < 500; i++) {
		struct stat st;
		if (stat(sock, &st) == 0)
			return 0;
		if (waitpid(pid, NULL, WNOHANG) == pid) {
			*roudi = 0;
			break;
		}
		usleep(10000);
	}
	bench_roudi_stop(roudi);
	return -ETIMEDOUT;
}

static void roudi_stop(struct peer_shm *s)
{
	bench_roudi_stop(&s->roudi);
}

static int roudi_start(void *shm, void *arg)
{
	struct peer_shm *s = shm;
	int r = dir_prepare(shm, arg);
	if (r < 0)
		return r;
	r = bench_roudi_start(roudi_config, &s->roudi);
	if (r < 0)
		bench_rmdir(s->dir);
	return r;
}

static void roudi_cleanup(void *shm, void *arg)
{
	roudi_stop(shm);
	dir_cleanup(shm, arg);
}

/* In a child: join the keeper's namespaces (its user namespace first, when it made one). */
int bench_roudi_join(pid_t pid)
{
	char path[64];
	struct stat mine, theirs;
	snprintf(path, sizeof(path), "/proc/%d/ns/user", pid);
	if (stat("/proc/self/ns/user", &mine) == 0 && stat(path, &theirs) == 0 &&
	    mine.st_ino != theirs.st_ino) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWUSER) < 0)
			return bench_fail("setns(user): %s", strerror(errno));
		close(fd);
	}
	snprintf(path, sizeof(path), "/proc/%d/ns/mnt", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWNS) < 0)
		return bench_fail("setns(mnt): %s", strerror(errno));
	close(fd);
	return 0;
}

struct ix_state {
	iox_pub_storage_t pub_storage;
	iox_sub_storage_t sub_storage;
	iox_ws_storage_t ws_storage;
	iox_pub_t pub;
	iox_sub_t sub;
	iox_ws_t ws;
	unsigned bytes;
	bool busy, runtime;
};

static int ix_init(enum bench_role role, void *shm, void *arg, void **state)
{
	(void)arg;
	struct peer_shm *s = shm;
	struct ix_state *x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	*state = x;
	x->bytes = s->bytes;
	x->busy = s->busy;
	int r = bench_roudi_join(s->roudi);
	if (r < 0)
		return r;
	iox_set_loglevel(Iceoryx_LogLevel_Warn);
	iox_runtime_init(role == BENCH_A ? "abd-perf-a" : "abd-perf-b");
	x->runtime = true;

	iox_pub_options_t po;
	iox_pub_options_init(&po);
	po.subscriberTooSlowPolicy = ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER;
	iox_sub_options_t so;
	iox_sub_options_init(&so);
	so.queueCapacity = 256;
	so.historyRequest = 0;
	so.queueFullPolicy = QueueFullPolicy_BLOCK_PRODUCER;
	x->pub = iox_pub_init(&x->pub_storage, "abd-perf", role == BENCH_A ? "ping" : "pong", "msg", &po);
	x->sub = iox_sub_init(&x->sub_storage, "abd-perf", role == BENCH_A ? "pong" : "ping", "msg", &so);
	if (!x->busy) {
		x->ws = iox_ws_init(&x->ws_storage);
		if (iox_ws_attach_subscriber_state(x->ws, x->sub, SubscriberState_HAS_DATA, 0, NULL) !=
		    WaitSetResult_SUCCESS)
			return bench_fail("iox_ws_attach_subscriber_state failed");
	}
	/* A starts only when both directions are connected (B is already up). */
	for (int i = 0; role == BENCH_A && i < 1000; i++) {
		if (iox_pub_has_subscribers(x->pub) &&
		    iox_sub_get_subscription_state(x->sub) == SubscribeState_SUBSCRIBED)
			return 0;
		usleep(10000);
	}
	return role == BENCH_A ? bench_fail("iceoryx: no connection after 10 s") : 0;
}

static void ix_fini(enum bench_role role, void *state)
{
	(void)role;
	struct ix_state *x = state;
	if (x->ws)
		iox_ws_deinit(x->ws);
	if (x->sub)
		iox_sub_deinit(x->sub);
	if (x->pub)
		iox_pub_deinit(x->pub);
	if (x->runtime)
		iox_runtime_shutdown();
	free(x);
}

static int ix_put(struct ix_state *x)
{
	void *chunk;
	enum iox_AllocationResult a = iox_pub_loan_chunk(x->pub, &chunk, x->bytes);
	if (a != AllocationResult_SUCCESS)
		return bench_fail("iox_pub_loan_chunk: result %d", (int)a);
	memset(chunk, 1, x->bytes);
	iox_pub_publish_chunk(x->pub, chunk);
	return 0;
}

static int ix_get(struct ix_state *x)
{
	const void *chunk;
	enum iox_ChunkReceiveResult r;
	while ((r = iox_sub_take_chunk(x->sub, &chunk)) == ChunkReceiveResult_NO_CHUNK_AVAILABLE) {
		if (x->busy) {
			bench_relax();
		} else {
			iox_notification_info_t events[1];
			uint64_t missed = 0;
			iox_ws_wait(x->ws, events, 1, &missed);
		}
	}
	if (r != ChunkReceiveResult_SUCCESS)
		return bench_fail("iox_sub_take_chunk: result %d", (int)r);
	iox_sub_release_chunk(x->sub, chunk);
	return 0;
}

static int ix_ping(void *state, uint64_t *ns)
{
	(void)ns;
	int r = ix_put(state);
	return r ? r : ix_get(state);
}

static int ix_pong(void *state)
{
	int r = ix_get(state);
	return r ? r : ix_put(state);
}
#endif

/* ---- the exported entry ---- */

int bench_peer(const char *subject, const char *case_name, const char *cpus, unsigned bytes)
{
	bool rtt = !strcmp(case_name, "rtt"), busy = !strcmp(case_name, "rtt-busy"),
	     tput = !strcmp(case_name, "throughput");
	struct bench_row row = {.subject = subject, .case_name = case_name, .cpus = cpus,
	                        .msg_bytes = bytes};
	struct peer_arg arg = {.bytes = bytes, .busy = busy, .tput = tput};
	struct bench_pair p = {.shm_size = sizeof(struct peer_shm), .arg = &arg,
	                       .prepare = dir_prepare, .cleanup = dir_cleanup};
	uint64_t n_rtt = bench_iters(10000, 1000), n_tput = bench_iters(200000, 20000);

	if (bytes == 0 || bytes > 4096)
		return -EINVAL;
	if (!strcmp(subject, "zmq-ipc")) {
		if (!rtt && !tput)
			return -ENOENT;
#if ABD_PERF_ZMQ
		p.init = rtt ? zq_rr_init : zq_pp_init;
		p.fini = zq_fini;
		p.ping = zq_ping, p.pong = zq_pong;
		p.produce = zq_produce, p.consume = zq_consume;
#else
		bench_skip(&row, "not built: libzmq (pkg-config libzmq) not found at configure time");
		return 0;
#endif
	} else if (!strcmp(subject, "nng-ipc")) {
		if (!rtt && !tput)
			return -ENOENT;
#if ABD_PERF_NNG
		p.init = ng_init;
		p.fini = ng_fini;
		p.ping = ng_ping, p.pong = ng_pong;
		p.produce = ng_produce, p.consume = ng_consume;
#else
		bench_skip(&row, "not built: nng (cmake package nng) not found at configure time");
		return 0;
#endif
	} else if (!strcmp(subject, "iceoryx")) {
		if (!rtt && !busy)
			return -ENOENT;
#if ABD_PERF_ICEORYX
		p.prepare = roudi_start;
		p.cleanup = roudi_cleanup;
		p.init = ix_init;
		p.fini = ix_fini;
		p.ping = ix_ping, p.pong = ix_pong;
		struct bench_stats st;
		p.result = &st;
		if (bench_pingpong(&p, row, n_rtt) == 0 && busy) {
			/* One way = half the busy-polling round trip, the figure iceoryx publishes. */
			row.case_name = "oneway-busy";
			st.p50 /= 2, st.p99 /= 2, st.p999 /= 2;
			bench_row_latency(&row, &st);
			bench_emit(&row);
		}
		return 0;
#else
		bench_skip(&row, "not built: iceoryx_binding_c (cmake package) not found at configure time");
		return 0;
#endif
	} else {
		return -ENOENT;
	}
	if (tput)
		bench_throughput(&p, row, n_tput);
	else
		bench_pingpong(&p, row, n_rtt);
	return 0;
}

static void run_zmq(void)
{
	for (int m = 0; m < 2; m++) {
		bench_peer("zmq-ipc", "rtt", modes[m], 64);
		bench_peer("zmq-ipc", "throughput", modes[m], 64);
	}
}

static void run_nng(void)
{
	for (int m = 0; m < 2; m++) {
		bench_peer("nng-ipc", "rtt", modes[m], 64);
		bench_peer("nng-ipc", "throughput", modes[m], 64);
	}
}

static void run_iceoryx(void)
{
	for (int m = 0; m < 2; m++) {
		bench_peer("iceoryx", "rtt-busy", modes[m], 64);
		bench_peer("iceoryx", "rtt", modes[m], 64);
	}
}

const struct bench_subject bench_peer_subjects[] = {
	{"zmq-ipc", run_zmq},
	{"nng-ipc", run_nng},
	{"iceoryx", run_iceoryx},
	{0},
};

void bench_peers(void)
{
	for (const struct bench_subject *s = bench_peer_subjects; s->name; s++)
		bench_subject_run(s->name);
}
