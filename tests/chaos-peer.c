/* SPDX-License-Identifier: MIT */
/* The chaos peer (issue 14, docs/ring.md section 10): an admitted participant of a live
 * service that, for a set time, writes random and adversarial values into every shared word
 * of the ring (header, leases, slot words and lengths, futex words, statistics, the closed
 * word), wakes the futex words, flips O_NONBLOCK on the shared eventfd and memfd descriptions
 * and saturates the eventfd's count, while victim processes (the publisher, openers that
 * produce and consume, a sleeper) run every blocking call with deadlines: push, pop, open,
 * the ring's own blocking forms, wait_prepare/finish, the reactor's run_once. The publisher
 * also serves a request-response service (take, reply) whose request ring the peer writes
 * over the same way, while a caller calls it with deadlines (call, call_send + call_wait).
 *
 * Pass (TAP, one line per victim): no victim crashed or hung; every call returned within its
 * deadline plus the slack (ABD_CHAOS_SLACK_MS, default 250 ms), not counting the time the
 * victim spent runnable but waiting for a CPU (/proc/self/schedstat: the machines this runs on
 * are shared, and the peer itself keeps a CPU busy; both figures are printed); a victim's descriptors after it closed everything are what they were before it
 * opened anything; and while blocked in calls that ended at their deadline, a victim used at
 * most a quarter of a CPU. Garbled messages and failed calls are the peer's right.
 *
 * ABD_CHAOS_SECONDS sets the duration (default 30 s, divided by ABD_TEST_SCALE in the sanitizer
 * builds, at least 3; the CI runs it once per kernel profile). */
#include <abd/abd.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "plain/tap.h"

#define MS 1000000ll
#define NAME "chaos.ring"
#define RPC_NAME "chaos.rpc"
#define SLOT 64
#define CAP 16

enum { V_PUBLISHER, V_CONSUMER, V_PRODUCER, V_SLEEPER, V_CALLER, V_COUNT };
static const char *const vnames[V_COUNT] = { "publisher", "consumer", "producer", "sleeper",
	                                     "caller" };

struct vstats {
	uint64_t calls, timeouts, errors, over;
	int64_t max_over_ns;     /* the worst overrun past a deadline, less the time the victim
	                          * was runnable but waiting for a CPU (the machine's load) */
	int64_t max_raw_over_ns; /* the same, wall clock only */
	int64_t max_open_over_ns; /* open: past its timeout alone (its bound adds the acquisition) */
	char worst[48];
	uint64_t blocked_wall_ns, blocked_cpu_ns;
	int fds_before, fds_after;
	int done;
};

struct shared {
	uint64_t stop_ns;
	int64_t slack_ns;
	struct vstats v[V_COUNT];
	uint64_t chaos_writes, chaos_flips, chaos_saturations, chaos_wakes;
	int chaos_done;
};

static struct shared *sh;
static char dir[128];

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd_state;
static uint64_t rnd(void)
{
	uint64_t s = rnd_state;
	s ^= s << 13, s ^= s >> 7, s ^= s << 17;
	return rnd_state = s;
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	int n = 0;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* Time this process has spent runnable but waiting for a CPU (/proc/self/schedstat, field 2):
 * what a loaded machine adds to a call, not what the library does. 0 where unavailable. */
static int schedstat_fd = -1;
static uint64_t runq_ns(void)
{
	char buf[128];
	if (schedstat_fd < 0)
		return 0;
	ssize_t n = pread(schedstat_fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	unsigned long long run, wait;
	return sscanf(buf, "%llu %llu", &run, &wait) == 2 ? wait : 0;
}

static bool running(void)
{
	return now_ns() < sh->stop_ns;
}

static void account(struct vstats *v, const char *what, int64_t tmo, uint64_t wall, uint64_t cpu,
                    uint64_t runq, int r)
{
	v->calls++;
	if (r == -ETIMEDOUT) {
		v->timeouts++;
		v->blocked_wall_ns += wall;
		v->blocked_cpu_ns += cpu;
	} else if (r < 0 && r != -EAGAIN) {
		v->errors++;
	}
	if (tmo < 0)
		return;
	int64_t raw = (int64_t)wall - tmo, over = raw - (int64_t)runq;
	if (raw > v->max_raw_over_ns)
		v->max_raw_over_ns = raw;
	if (over > v->max_over_ns) {
		v->max_over_ns = over;
		snprintf(v->worst, sizeof(v->worst), "%s (%d)", what, r);
	}
	if (over > sh->slack_ns)
		v->over++;
}

/* Run one blocking call with timeout tmo (ns) and account for it. */
#define TIMED(v, what, tmo, expr)                                                      \
	({                                                                                 \
		uint64_t w0_ = now_ns(), c0_ = cpu_ns(), q0_ = runq_ns();                      \
		int r_ = (expr);                                                               \
		account((v), (what), (tmo), now_ns() - w0_, cpu_ns() - c0_, runq_ns() - q0_, r_); \
		r_;                                                                            \
	})

static int64_t some_timeout(void)
{
	static const int64_t t[] = { 0, 1 * MS, 5 * MS, 20 * MS, 50 * MS };
	return t[rnd() % (sizeof(t) / sizeof(t[0]))];
}

static void child_setup(unsigned seed)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	schedstat_fd = open("/proc/self/schedstat", O_RDONLY | O_CLOEXEC);
	rnd_state = now_ns() * 2654435761u + seed * 0x9e3779b97f4a7c15ull + 1;
}

static struct abd_service_config config(void)
{
	struct abd_service_config cfg = { 0 };
	cfg.dir = dir;
	cfg.capacity = CAP;
	cfg.slot_size = SLOT;
	return cfg;
}

/* ---- victims ---- */

static int publisher(int ready_w)
{
	child_setup(V_PUBLISHER);
	struct vstats *v = &sh->v[V_PUBLISHER];
	v->fds_before = count_fds() - 1; /* ready_w is closed below */
	struct abd_service_config cfg = config();
	struct abd_service *svc, *rpc;
	if (abd_service_publish(NAME, &cfg, 0, &svc) < 0)
		return 10;
	cfg.reactor = abd_service_reactor(svc); /* one reactor serves both */
	if (abd_service_publish_rpc(RPC_NAME, &cfg, NULL, 0, &rpc) < 0)
		return 12;
	if (write(ready_w, "p", 1) != 1)
		return 11;
	close(ready_w);
	unsigned char buf[256];
	while (running()) {
		int64_t t = some_timeout();
		uint64_t token;
		switch (rnd() % 5) {
		case 0: TIMED(v, "service push", t, abd_service_push(svc, "pub", 3, t)); break;
		case 1: TIMED(v, "service pop", t, abd_service_pop(svc, buf, sizeof(buf), t)); break;
		case 2: (void)abd_service_try_push(svc, "try", 3); break;
		case 3:
			if (TIMED(v, "service take", t, abd_service_take(rpc, buf, sizeof(buf), &token, t)) >= 0)
				(void)abd_service_reply(rpc, token, "answer", 6);
			break;
		default:
			/* the handshakes of openers are served here */
			TIMED(v, "reactor run_once", t,
			      abd_reactor_run_once(abd_service_reactor(svc), t > 0 ? t : 1 * MS));
		}
	}
	abd_service_close(rpc); /* before the service whose reactor it borrows */
	abd_service_close(svc);
	v->fds_after = count_fds();
	v->done = 1;
	return 0;
}

/* A caller of the request-response service: open, a burst of calls with deadlines, close. */
static int caller(int which)
{
	child_setup((unsigned)which);
	struct vstats *v = &sh->v[which];
	v->fds_before = count_fds();
	unsigned char buf[256];
	while (running()) {
		struct abd_service_config cfg = config();
		struct abd_service *svc = NULL;
		int64_t ot = 300 * MS;
		int e = TIMED(v, "open", ot + ABD_ACQUIRE_TIMEOUT_NS,
		              abd_service_open(RPC_NAME, &cfg, 0, ot, &svc));
		if (e < 0) {
			struct timespec nap = { 0, 2 * MS };
			nanosleep(&nap, NULL);
			continue;
		}
		for (int k = 0; k < 64 && running(); k++) {
			int64_t t = some_timeout();
			uint64_t ticket;
			if (rnd() % 2) {
				TIMED(v, "call", t, abd_service_call(svc, "q", 1, buf, sizeof(buf), t));
			} else if (TIMED(v, "call_send", t, abd_service_call_send(svc, "q", 1, &ticket, t)) == 0 &&
			           TIMED(v, "call_wait", t, abd_service_call_wait(svc, ticket, buf, sizeof(buf), t)) < 0)
				(void)abd_service_call_cancel(svc, ticket);
		}
		abd_service_close(svc);
	}
	v->fds_after = count_fds();
	v->done = 1;
	return 0;
}

/* An opener: open (with a deadline), a burst of blocking calls of the service and of its ring,
 * close; again until the time is up. */
static int opener(int which)
{
	child_setup((unsigned)which);
	struct vstats *v = &sh->v[which];
	v->fds_before = count_fds();
	unsigned flags = which == V_PRODUCER ? ABD_SERVICE_PRODUCER : ABD_SERVICE_CONSUMER;
	unsigned char buf[256];
	while (running()) {
		struct abd_service_config cfg = config();
		struct abd_service *svc = NULL;
		int64_t ot = 300 * MS;
		/* open's bound (service.h): its timeout for a publisher to appear, and at most
		 * ABD_ACQUIRE_TIMEOUT_NS more to acquire one that is there; its own overrun past the
		 * timeout alone is reported apart */
		uint64_t o0 = now_ns(), oq = runq_ns();
		int e = TIMED(v, "open", ot + ABD_ACQUIRE_TIMEOUT_NS,
		              abd_service_open(NAME, &cfg, flags, ot, &svc));
		int64_t oo = (int64_t)(now_ns() - o0) - ot - (int64_t)(runq_ns() - oq);
		if (oo > v->max_open_over_ns)
			v->max_open_over_ns = oo;
		if (e < 0) {
			struct timespec nap = { 0, 2 * MS };
			nanosleep(&nap, NULL);
			continue;
		}
		struct abd_ring *ring = abd_service_ring(svc);
		for (int k = 0; k < 64 && running(); k++) {
			int64_t t = which == V_SLEEPER ? 100 * MS : some_timeout();
			if (which == V_SLEEPER) {
				TIMED(v, "service pop", t, abd_service_pop(svc, buf, sizeof(buf), t));
				continue;
			}
			switch (rnd() % 4) {
			case 0:
				if (which == V_PRODUCER)
					TIMED(v, "service push", t, abd_service_push(svc, "prod", 4, t));
				else
					TIMED(v, "service pop", t, abd_service_pop(svc, buf, sizeof(buf), t));
				break;
			case 1:
				if (which == V_PRODUCER)
					TIMED(v, "ring push", t, abd_ring_push(ring, "ring", 4, t));
				else
					TIMED(v, "ring pop", t, abd_ring_pop(ring, buf, sizeof(buf), t));
				break;
			case 2: {
				enum abd_ring_wait_for what =
					which == V_PRODUCER ? ABD_RING_WAIT_SPACE : ABD_RING_WAIT_DATA;
				uint32_t val;
				int64_t tmo;
				uint64_t w0 = now_ns(), q0 = runq_ns();
				if (abd_ring_wait_prepare(ring, what, &val, &tmo) == 0) {
					struct timespec nap = { 0, (long)(rnd() % (2 * MS)) };
					nanosleep(&nap, NULL);
				}
				abd_ring_wait_finish(ring, what);
				account(v, "wait prepare/finish", 2 * MS, now_ns() - w0, 0, runq_ns() - q0, 0);
				break;
			}
			default:
				if (which == V_PRODUCER)
					(void)abd_service_try_push(svc, "t", 1);
				else
					(void)abd_service_try_pop(svc, buf, sizeof(buf));
			}
		}
		abd_service_close(svc);
	}
	v->fds_after = count_fds();
	v->done = 1;
	return 0;
}

/* ---- the peer ---- */

static uint64_t adversarial(uint64_t near)
{
	switch (rnd() % 10) {
	case 0: return 0;
	case 1: return 1;
	case 2: return 0xffffffffu;
	case 3: return UINT64_MAX;
	case 4: return near + (rnd() % 5) - 2;
	case 5: /* a slot word: seq near the position, any state, any lease */
		return (uint32_t)(near + (rnd() % 40) - 20) | (rnd() % 16) << 32 | (rnd() % 130) << 48;
	case 6: return (uint64_t)1 << (rnd() % 64);
	case 7: return near ^ (1ull << (rnd() % 64));
	default: return rnd();
	}
}

static void flip_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		(void)fcntl(fd, F_SETFL, fl ^ O_NONBLOCK);
}

static int chaos(void)
{
	child_setup(99);
	struct abd_service_config cfg = config();
	struct abd_service *svc;
	int e = abd_service_open(NAME, &cfg, ABD_SERVICE_OBSERVER, 5000 * MS, &svc);
	if (e < 0)
		return 10;
	struct abd_ring *ring = abd_service_ring(svc);
	int mfd = abd_ring_fd(ring), efd = abd_ring_wait_fd(ring);
	struct stat st;
	if (fstat(mfd, &st) < 0)
		return 11;
	size_t size = (size_t)st.st_size;
	unsigned char *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (m == MAP_FAILED)
		return 12;
	unsigned char geometry[128];
	memcpy(geometry, m, sizeof(geometry));
	/* the request ring of the request-response service: written over the same way, and fed
	 * garbage requests (any length, any header: mailboxes and cells out of range too) */
	struct abd_service *rsvc;
	if (abd_service_open(RPC_NAME, &cfg, 0, 5000 * MS, &rsvc) < 0)
		return 13;
	struct abd_ring *rring = abd_service_ring(rsvc);
	int rfd = abd_ring_fd(rring);
	if (fstat(rfd, &st) < 0)
		return 14;
	size_t rsize = (size_t)st.st_size;
	unsigned char *rm = mmap(NULL, rsize, PROT_READ | PROT_WRITE, MAP_SHARED, rfd, 0);
	if (rm == MAP_FAILED)
		return 15;
	bool garbled = false;
	uint64_t n = 0;
	while (running()) {
		uint64_t r = rnd();
		unsigned kind = (unsigned)(r % 1000);
		uint64_t tail = __atomic_load_n((uint64_t *)(void *)(m + 128), __ATOMIC_RELAXED);
		if (garbled) { /* a garbled geometry is put back at once: openers may then attach */
			memcpy(m, geometry, sizeof(geometry));
			garbled = false;
		}
		if (kind < 75) {
			uint64_t req[SLOT / 8];
			for (size_t i = 0; i < SLOT / 8; i++)
				req[i] = adversarial(rnd() % 300);
			(void)abd_ring_try_push(rring, req, rnd() % (SLOT + 1));
			sh->chaos_writes++;
		} else if (kind < 150) {
			/* a word of the request ring's state: header lines 2-7, leases, slots */
			size_t at = (r >> 10) % 2 ? 128 + (rnd() % (384 / 4)) * 4
			                          : 512 + (rnd() % ((rsize - 512) / 4)) * 4;
			uint64_t rtail = __atomic_load_n((uint64_t *)(void *)(rm + 128), __ATOMIC_RELAXED);
			__atomic_store_n((uint32_t *)(void *)(rm + at), (uint32_t)adversarial(rtail),
			                 __ATOMIC_RELAXED);
			sh->chaos_writes++;
		} else if (kind < 600) {
			/* a word anywhere the ring's state lives: header lines 2-7, leases, slots */
			size_t at;
			switch ((r >> 10) % 4) {
			case 0: at = 128 + (rnd() % (384 / 4)) * 4; break;
			case 1: at = 512 + (rnd() % (8192 / 4)) * 4; break;
			default: at = 8704 + (rnd() % ((size - 8704) / 8)) * 8; break;
			}
			if ((r >> 20) & 1 && at + 8 <= size && at % 8 == 0)
				__atomic_store_n((uint64_t *)(void *)(m + at), adversarial(tail), __ATOMIC_RELAXED);
			else
				__atomic_store_n((uint32_t *)(void *)(m + at), (uint32_t)adversarial(tail),
				                 __ATOMIC_RELAXED);
			sh->chaos_writes++;
		} else if (kind < 700) {
			/* the futex words and the closed word, the favourite targets */
			static const size_t hot[] = { 256, 260, 320, 324, 448, 132, 196 };
			size_t at = hot[rnd() % (sizeof(hot) / sizeof(hot[0]))];
			__atomic_store_n((uint32_t *)(void *)(m + at), (uint32_t)adversarial(tail),
			                 __ATOMIC_RELAXED);
			sh->chaos_writes++;
		} else if (kind < 800) {
			syscall(SYS_futex, m + 256, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
			syscall(SYS_futex, m + 320, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
			sh->chaos_wakes++;
		} else if (kind < 900) {
			flip_nonblock(r & (1 << 12) ? mfd : efd);
			sh->chaos_flips++;
		} else if (kind < 990) {
			if (efd >= 0) {
				/* saturate the count (our own write must not block: set the flag, write,
				 * then leave the description blocking for everyone else) */
				int fl = fcntl(efd, F_GETFL);
				(void)fcntl(efd, F_SETFL, fl | O_NONBLOCK);
				uint64_t big = UINT64_C(0xfffffffffffffffe);
				ssize_t w = write(efd, &big, sizeof(big));
				(void)w;
				(void)fcntl(efd, F_SETFL, fl & ~O_NONBLOCK);
				sh->chaos_saturations++;
			}
		} else {
			m[rnd() % sizeof(geometry)] ^= (unsigned char)(1u << (rnd() % 8));
			garbled = true;
			sh->chaos_writes++;
		}
		if (++n % 64 == 0) {
			/* leave the CPUs to the victims now and then: the point is what the writes do,
			 * not starving everyone */
			struct timespec nap = { 0, 20000 };
			nanosleep(&nap, NULL);
		}
	}
	memcpy(m, geometry, sizeof(geometry));
	munmap(m, size);
	munmap(rm, rsize);
	abd_service_close(rsvc);
	abd_service_close(svc);
	sh->chaos_done = 1;
	return 0;
}

static pid_t spawn(int (*fn)(int), int arg)
{
	fflush(stdout);
	pid_t p = fork();
	if (p == 0)
		_exit(fn(arg));
	return p;
}

static int run_chaos(int unused)
{
	(void)unused;
	return chaos();
}

int main(void)
{
	/* the sanitizer builds divide stress by ABD_TEST_SCALE: 30 s becomes 3 s there */
	const char *s = getenv("ABD_CHAOS_SECONDS"), *sc = getenv("ABD_TEST_SCALE");
	long scale = sc && *sc ? strtol(sc, NULL, 10) : 1;
	long secs = s && *s ? strtol(s, NULL, 10) : 30 / (scale > 1 ? scale : 1);
	if (secs < 3)
		secs = 3;
	const char *sl = getenv("ABD_CHAOS_SLACK_MS");
	long slack_ms = sl && *sl ? strtol(sl, NULL, 10) : 250;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		TAP_CHECK(0, "shared stats");
		return tap_done();
	}
	memset(sh, 0, sizeof(*sh));
	sh->slack_ns = slack_ms * MS;
	snprintf(dir, sizeof(dir), "/dev/shm/abd-chaos.XXXXXX");
	if (!mkdtemp(dir)) {
		TAP_CHECK(0, "mkdtemp");
		return tap_done();
	}
	printf("# chaos peer: %ld s, slack %ld ms, profile %s\n", secs, slack_ms,
	       getenv("ABD_PROFILE") ? getenv("ABD_PROFILE") : "native");
	fflush(stdout);
	sh->stop_ns = now_ns() + (uint64_t)secs * 1000000000u + 5000 * MS; /* set again below */

	int ready[2];
	if (pipe2(ready, O_CLOEXEC) < 0) {
		TAP_CHECK(0, "pipe");
		return tap_done();
	}
	pid_t pids[V_COUNT + 1];
	pids[V_PUBLISHER] = spawn(publisher, ready[1]);
	close(ready[1]);
	char x;
	bool published = read(ready[0], &x, 1) == 1;
	close(ready[0]);
	TAP_CHECK(published, "the publisher published");
	if (!published) {
		kill(pids[V_PUBLISHER], SIGKILL);
		waitpid(pids[V_PUBLISHER], NULL, 0);
		return tap_done();
	}
	sh->stop_ns = now_ns() + (uint64_t)secs * 1000000000u;
	pids[V_CONSUMER] = spawn(opener, V_CONSUMER);
	pids[V_PRODUCER] = spawn(opener, V_PRODUCER);
	pids[V_SLEEPER] = spawn(opener, V_SLEEPER);
	pids[V_CALLER] = spawn(caller, V_CALLER);
	pids[V_COUNT] = spawn(run_chaos, 0);

	/* every process must be done a little after the stop time: a hang is killed and reported */
	int status[V_COUNT + 1];
	bool reaped[V_COUNT + 1] = { 0 };
	uint64_t limit = sh->stop_ns + 20000 * MS;
	unsigned left = V_COUNT + 1;
	while (left && now_ns() < limit) {
		for (int i = 0; i <= V_COUNT; i++)
			if (!reaped[i] && waitpid(pids[i], &status[i], WNOHANG) == pids[i]) {
				reaped[i] = true;
				left--;
			}
		struct timespec nap = { 0, 20 * MS };
		nanosleep(&nap, NULL);
	}
	for (int i = 0; i <= V_COUNT; i++)
		if (!reaped[i]) {
			kill(pids[i], SIGKILL);
			waitpid(pids[i], &status[i], 0);
			status[i] = -1;
		}

	TAP_CHECK(status[V_COUNT] == 0 && sh->chaos_done,
	          "the chaos peer ran: %llu writes, %llu futex wakes, %llu flag flips, %llu eventfd "
	          "saturations (status %d)",
	          (unsigned long long)sh->chaos_writes, (unsigned long long)sh->chaos_wakes,
	          (unsigned long long)sh->chaos_flips, (unsigned long long)sh->chaos_saturations,
	          status[V_COUNT]);
	for (int i = 0; i < V_COUNT; i++) {
		struct vstats *v = &sh->v[i];
		bool exited = status[i] >= 0 && WIFEXITED(status[i]) && WEXITSTATUS(status[i]) == 0;
		double cpu = v->blocked_wall_ns ? (double)v->blocked_cpu_ns / (double)v->blocked_wall_ns : 0;
		printf("# %s: %llu calls, %llu timed out, %llu other errors; worst overrun %.1f ms "
		       "(%s; %.1f ms with the time spent waiting for a CPU); blocked %.2f s using "
		       "%.1f%% of a CPU; fds %d -> %d; open at worst %.1f ms past its timeout\n",
		       vnames[i], (unsigned long long)v->calls, (unsigned long long)v->timeouts,
		       (unsigned long long)v->errors, (double)v->max_over_ns / 1e6, v->worst,
		       (double)v->max_raw_over_ns / 1e6,
		       (double)v->blocked_wall_ns / 1e9, cpu * 100, v->fds_before, v->fds_after,
		       (double)v->max_open_over_ns / 1e6);
		TAP_CHECK(exited && v->done,
		          "%s neither crashed nor hung (status %s %d)", vnames[i],
		          status[i] < 0 ? "hung, killed" : WIFSIGNALED(status[i]) ? "signal" : "exit",
		          status[i] < 0 ? 0 : WIFSIGNALED(status[i]) ? WTERMSIG(status[i])
		                                                      : WEXITSTATUS(status[i]));
		TAP_CHECK(v->calls > 0 && v->over == 0,
		          "%s: every one of %llu calls returned within its deadline + %ld ms (worst "
		          "%.1f ms over: %s; %llu over)",
		          vnames[i], (unsigned long long)v->calls, slack_ms,
		          (double)v->max_over_ns / 1e6, v->worst, (unsigned long long)v->over);
		TAP_CHECK(v->fds_before == v->fds_after, "%s: no descriptor leaked (%d -> %d)",
		          vnames[i], v->fds_before, v->fds_after);
		TAP_CHECK(cpu < 0.25, "%s: blocked until its deadlines for %.2f s, it used %.1f%% of a CPU",
		          vnames[i], (double)v->blocked_wall_ns / 1e9, cpu * 100);
	}
	/* the registry directory: nothing of the publisher's is left but what it withdrew */
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		printf("# could not remove %s\n", dir);
	return tap_done();
}
