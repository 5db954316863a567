/* SPDX-License-Identifier: MIT */
/* Plain subset (MSan, TSan) of the ring: threads with a handle each (what TSan sees), forked
 * processes with sleeping consumers, zero-copy and batch forms, a dead producer's slot
 * recovered, hostile headers refused, the reactor wait pair, and streams between threads. Every byte popped must be
 * initialised (MSan) and every hand-over ordered (TSan). */
#include <abd/ring.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"

static unsigned scaled(unsigned n, unsigned min)
{
	const char *e = getenv("ABD_TEST_SCALE");
	unsigned d = e ? (unsigned)strtoul(e, NULL, 10) : 1;
	n /= d ? d : 1;
	return n < min ? min : n;
}

#define NP 2
#define NC 2

struct tctx {
	int fd, evfd;
	unsigned id, n;
	unsigned *seen;
	int ok;
	int multi;
};

static void *producer(void *arg)
{
	struct tctx *c = arg;
	struct abd_ring *r;
	c->ok = 0;
	if (abd_ring_attach(c->fd, c->evfd, NULL, ABD_RING_PRODUCER, &r) < 0)
		return NULL;
	for (unsigned i = 0; i < c->n; i++) {
		uint64_t v = (uint64_t)c->id << 32 | i;
		if (i % 3 == 0) {
			void *p;
			int e;
			while ((e = abd_ring_try_reserve(r, &p)) == -EAGAIN)
				sched_yield();
			if (e < 0)
				goto out;
			memcpy(p, &v, 8);
			if (abd_ring_commit(r, p, 8) < 0)
				goto out;
		} else if (abd_ring_push(r, &v, 8, -1) < 0) {
			goto out;
		}
	}
	c->ok = 1;
out:
	abd_ring_free(r);
	return NULL;
}

static void *consumer(void *arg)
{
	struct tctx *c = arg;
	struct abd_ring *r;
	c->ok = 0;
	/* with several consumers, one may need to push back a second stop its batch took */
	unsigned roles = ABD_RING_CONSUMER;
	if (c->multi)
		roles |= ABD_RING_PRODUCER;
	if (abd_ring_attach(c->fd, c->evfd, NULL, roles, &r) < 0)
		return NULL;
	int64_t last[NP] = { -1, -1 };
	for (unsigned k = 0;; k++) {
		uint64_t v[4];
		size_t lens[4];
		int n;
		if (k % 4 == 1) {
			const void *p;
			size_t len;
			n = abd_ring_try_peek(r, &p, &len);
			if (n == 0) {
				if (len != 8)
					goto out;
				memcpy(&v[0], p, 8);
				if (abd_ring_release(r, p) < 0)
					goto out;
				n = 1;
			} else if (n == -EAGAIN) {
				continue;
			} else {
				goto out;
			}
		} else if (k % 4 == 2) {
			n = abd_ring_try_pop_batch(r, v, 8, lens, 4);
			if (n < 0)
				goto out;
		} else {
			n = abd_ring_pop(r, &v[0], 8, -1) == 8 ? 1 : -1;
			if (n < 0)
				goto out;
		}
		for (int i = 0; i < n; i++) {
			if (v[i] == UINT64_MAX) {
				c->ok = 1;
				/* a batch may have taken a second stop: put it back */
				for (int j = i + 1; j < n; j++)
					if (abd_ring_push(r, &v[j], 8, -1) < 0)
						c->ok = 0;
				goto out;
			}
			unsigned p = (unsigned)(v[i] >> 32), s = (unsigned)v[i];
			if (p >= NP || s >= c->n || (int64_t)s <= last[p])
				goto out;
			last[p] = s;
			__atomic_fetch_add(&c->seen[p * c->n + s], 1, __ATOMIC_RELAXED);
		}
	}
out:
	abd_ring_free(r);
	return NULL;
}

static void threads_run(unsigned mode, unsigned np, unsigned nc, const char *what)
{
	unsigned n = scaled(100000, 2000);
	struct abd_ring *r0, *r;
	if (abd_ring_new(16, 8, mode, NULL, &r0) < 0) {
		TAP_CHECK(0, "%s: create", what);
		return;
	}
	int fd = dup(abd_ring_fd(r0)), evfd = abd_ring_wait_fd(r0) >= 0 ? dup(abd_ring_wait_fd(r0)) : -1;
	abd_ring_free(r0);
	unsigned *seen = calloc((size_t)NP * n, sizeof(unsigned));
	pthread_t th[NP + NC];
	struct tctx c[NP + NC];
	for (unsigned i = 0; i < np + nc; i++) {
		c[i] = (struct tctx){ fd, evfd, i, n, seen, 0, nc > 1 };
		pthread_create(&th[i], NULL, i < np ? producer : consumer, &c[i]);
	}
	int ok = 1;
	for (unsigned i = 0; i < np; i++) {
		pthread_join(th[i], NULL);
		ok &= c[i].ok;
	}
	ok &= abd_ring_attach(fd, evfd, NULL, ABD_RING_PRODUCER, &r) == 0;
	uint64_t stop = UINT64_MAX;
	for (unsigned i = 0; ok && i < nc; i++)
		ok &= abd_ring_push(r, &stop, 8, -1) == 0;
	for (unsigned i = np; i < np + nc; i++) {
		pthread_join(th[i], NULL);
		ok &= c[i].ok;
	}
	unsigned bad = 0;
	for (unsigned p = 0; p < np; p++)
		for (unsigned i = 0; i < n; i++)
			bad += seen[p * n + i] != 1;
	TAP_CHECK(ok && bad == 0, "%s: %u messages each from %u producer threads to %u consumer threads, "
	          "exactly once and in order per producer (%u wrong)", what, n, np, nc, bad);
	free(seen);
	abd_ring_free(r);
	close(fd);
	if (evfd >= 0)
		close(evfd);
}

/* Processes whose consumers sleep: no lost wake-up, everything arrives once. */
static int proc_producer(int fd, int evfd, unsigned n)
{
	struct abd_ring *r;
	if (abd_ring_attach(fd, evfd, NULL, ABD_RING_PRODUCER, &r) < 0)
		return 1;
	for (unsigned i = 1; i <= n; i++) {
		uint64_t v = i;
		if (abd_ring_push(r, &v, 8, -1) < 0)
			return 2;
	}
	abd_ring_free(r);
	return 0;
}

static int proc_consumer(int fd, int evfd, uint64_t *sum)
{
	struct abd_ring *r;
	if (abd_ring_attach(fd, evfd, NULL, ABD_RING_CONSUMER, &r) < 0)
		return 1;
	uint64_t s = 0;
	for (unsigned k = 0;; k++) {
		uint64_t v;
		if (abd_ring_pop(r, &v, 8, -1) != 8)
			return 2;
		if (v == UINT64_MAX)
			break;
		s += v;
		if (k % 5 == 4)
			sched_yield();
	}
	__atomic_fetch_add(sum, s, __ATOMIC_RELAXED);
	abd_ring_free(r);
	return 0;
}

static void processes(void)
{
	unsigned n = scaled(100000, 5000);
	struct abd_ring *r;
	if (abd_ring_new(8, 8, 0, NULL, &r) < 0) {
		TAP_CHECK(0, "processes: create");
		return;
	}
	uint64_t *sum = mmap(NULL, 8, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	*sum = 0;
	pid_t pids[4];
	for (int i = 0; i < 4; i++) {
		fflush(NULL);
		pids[i] = fork();
		if (pids[i] == 0)
			_exit(i < 2 ? proc_producer(abd_ring_fd(r), abd_ring_wait_fd(r), n)
			            : proc_consumer(abd_ring_fd(r), abd_ring_wait_fd(r), sum));
	}
	int ok = 1, st;
	for (int i = 0; i < 2; i++)
		ok &= waitpid(pids[i], &st, 0) == pids[i] && WIFEXITED(st) && WEXITSTATUS(st) == 0;
	uint64_t stop = UINT64_MAX;
	for (int i = 0; i < 2; i++)
		ok &= abd_ring_push(r, &stop, 8, -1) == 0;
	for (int i = 2; i < 4; i++)
		ok &= waitpid(pids[i], &st, 0) == pids[i] && WIFEXITED(st) && WEXITSTATUS(st) == 0;
	TAP_CHECK(ok && *sum == (uint64_t)n * (n + 1), "2 producer + 2 consumer processes, %u messages, "
	          "consumers sleeping: all arrived once", 2 * n);
	munmap(sum, 8);
	abd_ring_free(r);
}

static void dead_producer(void)
{
	struct abd_ring *r;
	if (abd_ring_new(8, 16, 0, NULL, &r) < 0) {
		TAP_CHECK(0, "dead producer: create");
		return;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		struct abd_ring *c;
		void *p;
		if (abd_ring_attach(abd_ring_fd(r), -1, NULL, ABD_RING_PRODUCER, &c) == 0 &&
		    abd_ring_try_reserve(c, &p) == 0)
			raise(SIGKILL);
		_exit(1);
	}
	int st;
	waitpid(pid, &st, 0);
	int pushed = abd_ring_try_push(r, "behind", 6);
	char b[16];
	int n = abd_ring_pop(r, b, sizeof(b), -1);
	TAP_CHECK(WIFSIGNALED(st) && pushed == 0 && n == 6 && memcmp(b, "behind", 6) == 0,
	          "a dead producer's claim is skipped, the message behind it delivered");
	abd_ring_free(r);
}

static void hostile(void)
{
	struct abd_ring *r;
	if (abd_ring_new(4, 8, 0, NULL, &r) < 0) {
		TAP_CHECK(0, "hostile: create");
		return;
	}
	struct stat st;
	fstat(abd_ring_fd(r), &st);
	unsigned char *img = malloc((size_t)st.st_size);
	ssize_t got = pread(abd_ring_fd(r), img, (size_t)st.st_size, 0);
	abd_ring_free(r);
	int all = got == st.st_size;
	for (int off = 0; off < 80 && all; off++) {
		img[off] ^= 0x5a;
		int fd = memfd_create("plain", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		all &= pwrite(fd, img, (size_t)st.st_size, 0) == st.st_size;
		fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
		int e = abd_ring_attach(fd, -1, NULL, 0, &r);
		all &= e == -EPROTO; /* the checksum covers the nonce too */
		if (e == 0)
			abd_ring_free(r);
		close(fd);
		img[off] ^= 0x5a;
	}
	TAP_CHECK(all, "every corrupted header byte is refused with -EPROTO");
	free(img);
}

static void reactor(void)
{
	struct abd_ring *r;
	if (abd_ring_new(4, 8, 0, NULL, &r) < 0) {
		TAP_CHECK(0, "reactor: create");
		return;
	}
	int efd = abd_ring_wait_fd(r);
	uint32_t v;
	int64_t t;
	int a = abd_ring_wait_prepare(r, ABD_RING_WAIT_DATA, &v, &t);
	int pushed = abd_ring_try_push(r, "x", 1);
	struct pollfd p = { .fd = efd, .events = POLLIN };
	int ready = efd >= 0 ? poll(&p, 1, 0) : 1;
	abd_ring_wait_finish(r, ABD_RING_WAIT_DATA);
	char b[8];
	int n = abd_ring_try_pop(r, b, 8);
	TAP_CHECK(a == 0 && pushed == 0 && ready == 1 && n == 1 && b[0] == 'x',
	          "a reactor sleeping on the eventfd is woken by a push");
	abd_ring_free(r);
}

/* Streams between two threads, each with its own handle: every message's bytes are handed over
 * in order (TSan: the inline publication and take are ordered; MSan: every popped byte is
 * initialised), the consumer blocking in between so that the stream owes it wakes. */
struct sctx {
	int fd, evfd;
	unsigned n;
	int ok;
	uint64_t wakes;
};

static void *stream_producer(void *arg)
{
	struct sctx *c = arg;
	struct abd_ring *r;
	if (abd_ring_attach(c->fd, c->evfd, NULL, ABD_RING_PRODUCER, &r) < 0)
		return NULL;
	struct abd_ring_stream s = abd_ring_stream_open(r, ABD_RING_PRODUCER);
	int ok = s.ret == 0;
	unsigned char msg[24];
	for (unsigned i = 0; ok && i < c->n;) {
		size_t len = 1 + i % sizeof(msg);
		memset(msg, (int)(i & 0xff), len);
		int e = abd_ring_stream_push(&s, msg, len);
		if (e == -EAGAIN) {
			sched_yield();
			continue;
		}
		ok = e == 0;
		i++;
		if (i % 512 == 0)
			usleep(100); /* the consumer runs dry and sleeps */
	}
	ok = abd_ring_stream_close(&s) == 0 && ok;
	c->ok = ok;
	abd_ring_free(r);
	return NULL;
}

static void streams(void)
{
	struct abd_ring *r;
	if (abd_ring_new(16, 32, ABD_RING_SINGLE_PRODUCER | ABD_RING_SINGLE_CONSUMER | ABD_RING_CONSUMER,
	                 NULL, &r) < 0) {
		TAP_CHECK(0, "streams: create");
		return;
	}
	struct sctx c = { abd_ring_fd(r), abd_ring_wait_fd(r), scaled(100000, 5000), 0, 0 };
	pthread_t th;
	if (pthread_create(&th, NULL, stream_producer, &c) != 0) {
		TAP_CHECK(0, "streams: thread");
		abd_ring_free(r);
		return;
	}
	struct abd_ring_stream s = abd_ring_stream_open(r, ABD_RING_CONSUMER);
	unsigned bad = s.ret != 0;
	unsigned char buf[32];
	for (unsigned i = 0; !bad && i < c.n;) {
		int e = abd_ring_stream_pop(&s, buf, sizeof(buf));
		if (e == -EAGAIN) {
			if (i % 7 == 0) {
				/* sleep in the handle's blocking form for a while: close, pop, reopen */
				bad |= abd_ring_stream_close(&s) != 0;
				e = abd_ring_pop(r, buf, sizeof(buf), 2000000000);
				s = abd_ring_stream_open(r, ABD_RING_CONSUMER);
				bad |= s.ret != 0;
				if (e < 0)
					continue;
			} else {
				sched_yield();
				continue;
			}
		}
		size_t len = 1 + i % 24;
		bad |= e != (int)len;
		for (size_t k = 0; k < len && k < sizeof(buf); k++)
			bad |= buf[k] != (unsigned char)(i & 0xff);
		i++;
	}
	bad |= abd_ring_stream_close(&s) != 0;
	pthread_join(th, NULL);
	struct abd_ring_stats st;
	abd_ring_stats(r, &st);
	TAP_CHECK(!bad && c.ok && st.pushed == c.n && st.popped == c.n,
	          "streams between threads: %u messages of 1-24 bytes in order, counted (%llu/%llu), "
	          "%llu wakes", c.n, (unsigned long long)st.pushed, (unsigned long long)st.popped,
	          (unsigned long long)st.wakes);
	abd_ring_free(r);
}

int main(void)
{
	threads_run(0, NP, NC, "MPMC");
	threads_run(ABD_RING_SINGLE_PRODUCER | ABD_RING_SINGLE_CONSUMER, 1, 1, "SPSC");
	threads_run(ABD_RING_SINGLE_CONSUMER, NP, 1, "MPSC");
	processes();
	dead_producer();
	hostile();
	reactor();
	streams();
	return tap_done();
}
