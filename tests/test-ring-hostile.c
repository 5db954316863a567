/* SPDX-License-Identifier: MIT */
/* The ring against hostile input: corrupted headers, truncated or unsealed files, the wrong
 * kind of descriptor, and a peer that keeps scribbling over the shared memory after attach.
 * Every case must give -EPROTO / -EINVAL (or garbled messages), never a crash; ASan checks
 * that no access leaves the mapping. */
#include <abd/ring.h>
#include <abd/service.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

/* A valid ring's bytes. */
static unsigned char *image(uint32_t cap, uint32_t slot, unsigned mode, size_t *size)
{
	struct abd_ring *r;
	cr_assert_eq(abd_ring_new(cap, slot, mode, NULL, &r), 0);
	struct stat st;
	cr_assert_eq(fstat(abd_ring_fd(r), &st), 0);
	unsigned char *buf = malloc((size_t)st.st_size);
	cr_assert_eq(pread(abd_ring_fd(r), buf, (size_t)st.st_size, 0), st.st_size);
	abd_ring_free(r);
	/* the creator's lease is gone with it; a stale HELD lease is what a crash leaves anyway */
	*size = (size_t)st.st_size;
	return buf;
}

static int memfd_with(const void *buf, size_t len, int seals)
{
	int fd = memfd_create("hostile", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	cr_assert_geq(fd, 0);
	if (len)
		cr_assert_eq(pwrite(fd, buf, len, 0), (ssize_t)len);
	if (seals)
		cr_assert_eq(fcntl(fd, F_ADD_SEALS, seals), 0);
	return fd;
}

static int attach_bytes(const void *buf, size_t len, int seals)
{
	int fd = memfd_with(buf, len, seals);
	struct abd_ring *r = NULL;
	int e = abd_ring_attach(fd, -1, NULL, 0, &r);
	if (e == 0) {
		/* it attached: it must also work */
		cr_assert_eq(abd_ring_try_push(r, "ok", 2), 0);
		char b[8];
		cr_assert_eq(abd_ring_try_pop(r, b, sizeof(b)), 2);
		abd_ring_free(r);
	}
	close(fd);
	return e;
}

struct field {
	const char *name;
	size_t off, size;
};
/* docs/ring.md, "Header" */
static const struct field fields[] = {
	{ "magic", 0, 8 },         { "version", 8, 4 },       { "header_size", 12, 4 },
	{ "capacity", 32, 4 },     { "slot_size", 36, 4 },    { "slot_stride", 40, 4 },
	{ "modes", 44, 4 },        { "lease_count", 48, 4 },  { "lease_offset", 52, 4 },
	{ "slots_offset", 56, 8 }, { "total_size", 64, 8 },
};

ABD_TEST(ring_hostile, every_header_field_corrupted_is_eproto)
{
	size_t size;
	unsigned char *img = image(8, 24, 0, &size);
	cr_assert_eq(attach_bytes(img, size, SEALS), 0, "the pristine image attaches");
	for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
		uint64_t orig = 0;
		memcpy(&orig, img + fields[f].off, fields[f].size);
		const uint64_t bad[] = { 0, 1, 3, orig + 1, orig - 1, orig * 2, orig ^ 0x80,
		                         UINT64_MAX, UINT32_MAX, (uint64_t)1 << 31, 4096, orig << 20 };
		for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
			uint64_t v = bad[b];
			if (memcmp(&v, &orig, fields[f].size) == 0)
				continue;
			unsigned char *c = malloc(size);
			memcpy(c, img, size);
			memcpy(c + fields[f].off, &v, fields[f].size);
			int e = attach_bytes(c, size, SEALS);
			cr_assert_eq(e, -EPROTO, "%s = %#llx: %d", fields[f].name, (unsigned long long)v, e);
			free(c);
		}
	}
	free(img);
}

ABD_TEST(ring_hostile, nonce_mismatch_is_estale)
{
	size_t size;
	unsigned char *img = image(4, 8, 0, &size);
	int fd = memfd_with(img, size, SEALS);
	uint8_t nonce[16];
	memcpy(nonce, img + 16, 16);
	struct abd_ring *r;
	cr_assert_eq(abd_ring_attach(fd, -1, nonce, 0, &r), 0);
	abd_ring_free(r);
	nonce[15] ^= 1;
	cr_assert_eq(abd_ring_attach(fd, -1, nonce, 0, &r), -ESTALE);
	close(fd);
	free(img);
}

ABD_TEST(ring_hostile, random_header_bytes_never_crash)
{
	size_t size;
	unsigned char *img = image(4, 8, 0, &size);
	uint64_t s = abd_test_now_ns() | 1;
	unsigned n = (unsigned)abd_test_scaled(3000, 300);
	for (unsigned i = 0; i < n; i++) {
		unsigned char *c = malloc(size);
		memcpy(c, img, size);
		for (int k = 0; k < 1 + (int)(i % 4); k++) {
			s ^= s << 13, s ^= s >> 7, s ^= s << 17;
			c[s % 80] ^= (unsigned char)(1u << (s >> 60 & 7));
		}
		int e = attach_bytes(c, size, SEALS);
		cr_assert(e == 0 || e == -EPROTO, "%d", e);
		free(c);
	}
	free(img);
}

ABD_TEST(ring_hostile, truncated_grown_and_unsealed_files)
{
	size_t size;
	unsigned char *img = image(8, 8, 0, &size);
	const size_t cuts[] = { 0, 1, 100, 511, 512, 4096, size - 4096, size - 1 };
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++)
		cr_assert_eq(attach_bytes(img, cuts[i], SEALS), -EPROTO, "truncated to %zu", cuts[i]);
	/* grown past the header's size */
	unsigned char *big = calloc(1, size + 4096);
	memcpy(big, img, size);
	cr_assert_eq(attach_bytes(big, size + 4096, SEALS), -EPROTO);
	free(big);
	/* seals missing: a peer could shrink it under us (SIGBUS) */
	cr_assert_eq(attach_bytes(img, size, 0), -EPROTO);
	cr_assert_eq(attach_bytes(img, size, F_SEAL_SHRINK), -EPROTO);
	cr_assert_eq(attach_bytes(img, size, F_SEAL_SHRINK | F_SEAL_GROW), -EPROTO);
	free(img);
}

ABD_TEST(ring_hostile, wrong_kinds_of_descriptor)
{
	struct abd_ring *r;
	int p[2];
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	cr_assert_eq(abd_ring_attach(p[0], -1, NULL, 0, &r), -EINVAL, "a pipe");
	int ev = eventfd(0, EFD_CLOEXEC);
	cr_assert_eq(abd_ring_attach(ev, -1, NULL, 0, &r), -EINVAL, "an eventfd as the memfd");
	char dir[128];
	abd_test_mkdtemp(dir, sizeof(dir));
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_eq(abd_ring_attach(dfd, -1, NULL, 0, &r), -EINVAL, "a directory");
	/* a plain tmpfs file holding a valid image: no seals at all */
	size_t size;
	unsigned char *img = image(4, 8, 0, &size);
	char path[160];
	snprintf(path, sizeof(path), "%s/ring", dir);
	int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	cr_assert_eq(pwrite(f, img, size, 0), (ssize_t)size);
	cr_assert_eq(abd_ring_attach(f, -1, NULL, 0, &r), -EPROTO, "not a memfd");
	/* a good memfd with a wait fd that is not an eventfd */
	int m = memfd_with(img, size, SEALS);
	cr_assert_eq(abd_ring_attach(m, p[1], NULL, 0, &r), -EINVAL, "a pipe as the wait fd");
	cr_assert_eq(abd_ring_attach(m, 1000000, NULL, 0, &r), -EINVAL, "a closed wait fd");
	cr_assert_eq(abd_ring_attach(m, ev, NULL, 0, &r), 0);
	abd_ring_free(r);
	close(m);
	close(f);
	close(dfd);
	close(ev);
	close(p[0]);
	close(p[1]);
	free(img);
	abd_test_rmtree(dir);
}

/* A peer keeps writing garbage over the slots and positions (and even the geometry) while we
 * use the ring: messages may be garbled, calls may fail, nothing may crash or hang. */
ABD_TEST(ring_hostile, scribbling_peer_cannot_crash_us)
{
	const unsigned modes[] = { 0, ABD_RING_SINGLE_PRODUCER | ABD_RING_SINGLE_CONSUMER };
	for (size_t mi = 0; mi < 2; mi++) {
		struct abd_ring *r;
		cr_assert_eq(abd_ring_new(8, 32, modes[mi], NULL, &r), 0);
		struct stat st;
		fstat(abd_ring_fd(r), &st);
		unsigned char *m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		                        abd_ring_fd(r), 0);
		cr_assert_neq(m, MAP_FAILED);
		uint64_t s = abd_test_now_ns() | 1;
		unsigned n = (unsigned)abd_test_scaled(20000, 2000);
		for (unsigned i = 0; i < n; i++) {
			for (int k = 0; k < 4; k++) {
				s ^= s << 13, s ^= s >> 7, s ^= s << 17;
				size_t at;
				switch (s & 3) {
				case 0: at = 128 + (s >> 8) % 128; break;       /* tail, head */
				case 1: at = 32 + (s >> 8) % 48; break;         /* geometry, after attach */
				default: at = 8704 + (s >> 8) % (8 * 64); break; /* slots */
				}
				if (at < (size_t)st.st_size)
					m[at] = (unsigned char)(s >> 40);
			}
			char buf[64];
			const void *p;
			void *w;
			size_t len;
			int e;
			switch (i % 8) {
			case 0: e = abd_ring_try_push(r, "abc", 3); break;
			case 1: e = abd_ring_try_pop(r, buf, sizeof(buf)); break;
			case 2:
				e = abd_ring_try_peek(r, &p, &len);
				if (e == 0) {
					cr_assert_leq(len, 32);
					memcpy(buf, p, len);
					abd_ring_release(r, p);
				}
				break;
			case 3:
				e = abd_ring_try_reserve(r, &w);
				if (e == 0) {
					memset(w, 7, 32);
					e = abd_ring_commit(r, w, 32);
				}
				break;
			case 4: e = abd_ring_pop(r, buf, sizeof(buf), 0); break;
			case 5: e = abd_ring_push(r, "x", 1, 0); break;
			case 6: e = abd_ring_recover(r); break;
			default: {
				uint32_t v;
				int64_t t;
				e = abd_ring_wait_prepare(r, ABD_RING_WAIT_DATA, &v, &t);
				abd_ring_wait_finish(r, ABD_RING_WAIT_DATA);
			}
			}
			(void)e;
		}
		munmap(m, (size_t)st.st_size);
		abd_ring_free(r);
	}
}

/* ---- A peer that shares the descriptors and the memory (docs/ring.md, section 10) ---- */

/* Run fn(arg) in a child and wait at most limit_ms for it: its exit status (128 + signal when
 * killed), or -ETIMEDOUT after killing a child that overran (a hang). *cpu_ns: the child's
 * user + system time. */
static int run_bounded(int (*fn)(void *), void *arg, unsigned limit_ms, uint64_t *cpu_ns)
{
	pid_t pid = abd_test_fork(fn, arg);
	cr_assert_gt(pid, 0);
	uint64_t end = abd_test_now_ns() + (uint64_t)limit_ms * 1000000u;
	for (;;) {
		int status;
		struct rusage ru;
		pid_t w = wait4(pid, &status, WNOHANG, &ru);
		cr_assert_geq(w, 0);
		if (w == pid) {
			if (cpu_ns)
				*cpu_ns = (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000u +
				          (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000u;
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		}
		if (abd_test_now_ns() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return -ETIMEDOUT;
		}
		usleep(2000);
	}
}

/* A peer that shares the memory scribbles over the wake state of the others (docs/ring.md,
 * section 5): it sets every bit of both sleeping maps (every participant, and the bits past the
 * participant table, claims to sleep), clears them again, and adds to and FUTEX_WAKEs every
 * lease's wake words, in a loop, in its own process. The victim's blocking calls on an empty
 * (full) ring must still return at their deadline, without spinning, and a message pushed
 * meanwhile must still reach a blocked consumer. Offsets as docs/ring.md gives them: header
 * line 4 (data) and 5 (space) hold the map at byte 16; a lease is one line at 512 + 64 i, its
 * wake words at byte 32. */
#define HDR_DATA_MAP 272
#define HDR_SPACE_MAP 336
#define LEASE_WAKE(i) (512 + 64 * (i) + 32)

struct scribble {
	int memfd;
	volatile int *stop;
};

static int wake_scribbler(void *arg)
{
	struct scribble *sc = arg;
	struct stat st;
	if (fstat(sc->memfd, &st) < 0)
		return 10;
	unsigned char *m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED,
	                        sc->memfd, 0);
	if (m == MAP_FAILED)
		return 11;
	for (unsigned n = 0; !*sc->stop; n++) {
		uint64_t *maps[2] = { (uint64_t *)(m + HDR_DATA_MAP), (uint64_t *)(m + HDR_SPACE_MAP) };
		for (int k = 0; k < 2; k++)
			for (int w = 0; w < 2; w++)
				__atomic_store_n(&maps[k][w], n & 1 ? UINT64_MAX : 0, __ATOMIC_SEQ_CST);
		for (int i = 0; i < ABD_RING_MAX_PARTICIPANTS; i++)
			for (int w = 0; w < 2; w++) {
				uint32_t *word = (uint32_t *)(m + LEASE_WAKE(i)) + w;
				if (n % 3 == 0)
					__atomic_fetch_add(word, 1, __ATOMIC_SEQ_CST);
				if (n % 5 == 0)
					syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
			}
		if (n % 64 == 0)
			usleep(100);
	}
	munmap(m, (size_t)st.st_size);
	return 0;
}

static int scribbled_victim(void *arg)
{
	(void)arg;
	struct abd_ring *p, *c;
	if (abd_ring_new(4, 16, ABD_RING_PRODUCER, NULL, &p) < 0)
		return 10;
	if (abd_ring_attach(abd_ring_fd(p), -1, NULL, ABD_RING_CONSUMER, &c) < 0)
		return 11;
	volatile int *stop = mmap(NULL, sizeof(int), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	                          -1, 0);
	if (stop == MAP_FAILED)
		return 12;
	struct scribble sc = { abd_ring_fd(p), stop };
	pid_t peer = abd_test_fork(wake_scribbler, &sc);
	char b[16];
	int rc = 0;
	struct rusage ru0, ru1;
	getrusage(RUSAGE_THREAD, &ru0);
	/* an empty ring: the pop returns at its deadline */
	if (abd_ring_pop(c, b, sizeof(b), 100000000) != -ETIMEDOUT)
		rc = 13;
	/* a full ring: so does the push */
	for (int i = 0; i < 4 && !rc; i++)
		if (abd_ring_try_push(p, "f", 1) != 0)
			rc = 14;
	if (!rc && abd_ring_push(p, "g", 1, 100000000) != -ETIMEDOUT)
		rc = 15;
	getrusage(RUSAGE_THREAD, &ru1);
	/* 200 ms of waiting: spinning through it would cost most of it in CPU; asleep, woken
	 * for nothing by the peer, the back-off naps keep it to a few ms */
	int64_t cpu_us = (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec -
	                  ru0.ru_stime.tv_sec) * 1000000 +
	                 (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec -
	                  ru0.ru_stime.tv_usec);
	if (!rc && cpu_us > 60000) {
		fprintf(stderr, "victim: %lld us of CPU in 200 ms of waiting\n", (long long)cpu_us);
		rc = 19;
	}
	for (int i = 0; i < 4 && !rc; i++)
		if (abd_ring_try_pop(c, b, sizeof(b)) != 1)
			rc = 16;
	/* a message pushed while the consumer sleeps reaches it (a thread of ours pushes it) */
	if (!rc) {
		pid_t pusher = fork();
		if (pusher == 0) {
			usleep(50000);
			_exit(abd_ring_try_push(p, "late", 4) == 0 ? 0 : 1);
		}
		int got = abd_ring_pop(c, b, sizeof(b), 2000000000);
		int st;
		waitpid(pusher, &st, 0);
		if (got != 4 || memcmp(b, "late", 4) != 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			rc = 17;
	}
	*stop = 1;
	if (abd_test_wait(peer) != 0 && !rc)
		rc = 18;
	abd_ring_free(c);
	abd_ring_free(p);
	return rc;
}

ABD_TEST(ring_hostile, scribbled_wake_state_costs_no_hang_and_no_spin)
{
	uint64_t cpu = 0;
	int e = run_bounded(scribbled_victim, NULL, 10000, &cpu);
	cr_assert_eq(e, 0, "the victim %s (%d)", e == -ETIMEDOUT ? "hung" : "failed", e);
}

/* A peer writes a value into the slot word at the tail (head) that no protocol state has: the
 * claims call the ring full (empty). The blocking forms must agree, sleep, and return at their
 * deadline (before, the push's re-check said "go", the claim said "full", and the loop spun at
 * full speed for as long as it was left running, never reaching its deadline check). */
struct garbage_case {
	unsigned modes;
	bool push;
	uint64_t word;
};

static int garbage_victim(void *arg)
{
	const struct garbage_case *g = arg;
	struct abd_ring *r;
	if (abd_ring_new(4, 16, g->modes, NULL, &r) < 0)
		return 10;
	struct stat st;
	if (fstat(abd_ring_fd(r), &st) < 0)
		return 11;
	unsigned char *m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED,
	                        abd_ring_fd(r), 0);
	if (m == MAP_FAILED)
		return 12;
	/* slot 0 holds position 0, the tail and the head of a fresh ring; a push needs a ring
	 * with the lap before still in use, so fill it first (cap 4: positions 0..3, then the
	 * producer's next claim is position 4 in slot 0) */
	char b[16];
	if (g->push)
		for (int i = 0; i < 4; i++)
			if (abd_ring_try_push(r, "f", 1) != 0)
				return 13;
	__atomic_store_n((uint64_t *)(void *)(m + 8704), g->word, __ATOMIC_SEQ_CST);
	uint64_t t0 = abd_test_now_ns();
	int e = g->push ? abd_ring_push(r, "x", 1, 50000000) : abd_ring_pop(r, b, sizeof(b), 50000000);
	uint64_t dt = abd_test_now_ns() - t0;
	if (e >= 0)
		return 14; /* a garbage word is neither a free slot nor a message */
	if (dt > 1050000000)
		return 15; /* past the deadline + 1 s (the wall bound allows for a loaded machine; the
		            * CPU bound below is the exact one) */
	munmap(m, (size_t)st.st_size);
	abd_ring_free(r);
	return 0;
}

ABD_TEST(ring_hostile, garbage_slot_word_cannot_make_a_blocking_call_spin)
{
	const unsigned modes[] = { 0, ABD_RING_SINGLE_PRODUCER, ABD_RING_SINGLE_CONSUMER,
	                           ABD_RING_SINGLE_PRODUCER | ABD_RING_SINGLE_CONSUMER };
	const uint64_t words[] = { 0xffffffffu, UINT64_MAX, (uint64_t)0x7fffffff | (uint64_t)9 << 32,
	                           (uint64_t)2 << 32 | 1000 };
	for (size_t mi = 0; mi < sizeof(modes) / sizeof(modes[0]); mi++)
		for (size_t wi = 0; wi < sizeof(words) / sizeof(words[0]); wi++)
			for (int push = 0; push < 2; push++) {
				struct garbage_case g = { modes[mi], push, words[wi] };
				uint64_t cpu = 0;
				int e = run_bounded(garbage_victim, &g, 3000, &cpu);
				cr_assert_eq(e, 0, "modes %#x word %#llx %s: %s (%d)", modes[mi],
				             (unsigned long long)words[wi], push ? "push" : "pop",
				             e == -ETIMEDOUT ? "spun past its deadline" : "failed", e);
				/* a 50 ms wait asleep costs a few ms of CPU with the ring's setup; spinning
				 * through it costs all 50 */
				cr_assert_lt(cpu, 30000000, "modes %#x word %#llx %s: %llu ns of CPU",
				             modes[mi], (unsigned long long)words[wi], push ? "push" : "pop",
				             (unsigned long long)cpu);
			}
}

/* A sealed, sparse memfd whose valid header declares capacity x slot_size (a peer chose both):
 * nothing of it but the header is written. */
static int sparse_ring(uint32_t cap, uint32_t slot, uint64_t *total)
{
	size_t size;
	unsigned char *img = image(4, 8, 0, &size);
	uint64_t stride = (16 + (uint64_t)slot + 15) & ~UINT64_C(15);
	if (stride > 32)
		stride = (stride + 63) & ~UINT64_C(63);
	*total = 8704 + (uint64_t)cap * stride;
	uint32_t st32 = (uint32_t)stride;
	memcpy(img + 32, &cap, 4);
	memcpy(img + 36, &slot, 4);
	memcpy(img + 40, &st32, 4);
	memcpy(img + 64, total, 8);
	uint64_t h = UINT64_C(0xcbf29ce484222325); /* FNV-1a 64 of bytes 0..71 (docs/ring.md) */
	for (size_t i = 0; i < 72; i++)
		h = (h ^ img[i]) * UINT64_C(0x100000001b3);
	memcpy(img + 72, &h, 8);
	int fd = memfd_create("sparse", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, (off_t)*total), 0, "a sparse file of %llu bytes",
	             (unsigned long long)*total);
	cr_assert_eq(pwrite(fd, img, 8704, 0), 8704);
	cr_assert_eq(fcntl(fd, F_ADD_SEALS, SEALS), 0);
	free(img);
	return fd;
}

static uint64_t file_bytes(int fd)
{
	struct stat st;
	cr_assert_eq(fstat(fd, &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

/* A peer hands over a sealed sparse memfd of 4 TiB with a valid header: the default attach
 * refuses it (-EFBIG) before mapping anything (before, it was mapped with MAP_POPULATE: the
 * kernel set out to fault in 4 TiB of tmpfs), and a geometry other than the one the opener
 * was told of is refused. */
ABD_TEST(ring_hostile, huge_sparse_memfd_is_refused_not_faulted_in)
{
	uint64_t total;
	int fd = sparse_ring(1u << 18, 1u << 24, &total);
	cr_assert_gt(total, UINT64_C(4) << 40);
	struct abd_ring *r = NULL;
	uint64_t t0 = abd_test_now_ns();
	cr_assert_eq(abd_ring_attach(fd, -1, NULL, 0, &r), -EFBIG);
	cr_assert_lt(abd_test_now_ns() - t0, 100000000u, "refused at once");
	struct abd_ring_attach_opts o = { 0 };
	o.max_size = total - 1;
	cr_assert_eq(abd_ring_attach_opts(fd, -1, NULL, 0, &o, &r), -EFBIG);
	cr_assert_lt(file_bytes(fd), 1u << 20, "nothing was faulted in");
	/* an opener that allows it maps it lazily: only the pages it touches */
	o.max_size = total;
	o.capacity = 1u << 17;
	cr_assert_eq(abd_ring_attach_opts(fd, -1, NULL, 0, &o, &r), -EPROTO, "not the declared geometry");
	o.capacity = 1u << 18;
	o.slot_size = 1u << 23;
	cr_assert_eq(abd_ring_attach_opts(fd, -1, NULL, 0, &o, &r), -EPROTO, "not the declared geometry");
	o.slot_size = 1u << 24;
	o.reserved[0] = 1;
	cr_assert_eq(abd_ring_attach_opts(fd, -1, NULL, 0, &o, &r), -EINVAL);
	o.reserved[0] = 0;
	cr_assert_eq(abd_ring_attach_opts(fd, -1, NULL, 0, &o, &r), 0);
	cr_assert_eq(abd_ring_try_push(r, "four TiB", 8), 0);
	char b[16];
	cr_assert_eq(abd_ring_try_pop(r, b, sizeof(b)), 8);
	cr_assert_lt(file_bytes(fd), 1u << 20, "only the header and one slot's page were touched");
	abd_ring_free(r);
	close(fd);
}

/* Within the default limit, the peer's size is still its choice: attach does not pre-fault it
 * (before, a 256 MiB sparse ring cost 256 MiB of memory on attach). */
ABD_TEST(ring_hostile, attach_does_not_prefault_a_size_the_peer_chose)
{
	uint64_t total;
	int fd = sparse_ring(1u << 12, 1u << 16, &total);
	cr_assert_gt(total, UINT64_C(256) << 20);
	cr_assert_lt(total, ABD_RING_ATTACH_DEFAULT_MAX);
	struct abd_ring *r = NULL;
	cr_assert_eq(abd_ring_attach(fd, -1, NULL, 0, &r), 0);
	cr_assert_lt(file_bytes(fd), 4u << 20, "%llu bytes faulted in on attach",
	             (unsigned long long)file_bytes(fd));
	abd_ring_free(r);
	close(fd);
}

/* ---- The service's closed state is not the peer's to set ---- */

struct closed_pub {
	const char *dir;
	int ready_w, go_r; /* pipes: "published" to the test, "scribbled" from it */
};

/* Serve svc's reactor until fd is readable (the handshakes of openers run there). */
static int serve_until(struct abd_service *svc, int fd)
{
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 0) == 1)
			return 0;
		int e = abd_reactor_run_once(abd_service_reactor(svc), 10000000);
		if (e < 0 && e != -EINTR)
			return e;
	}
}

static int closed_publisher(void *arg)
{
	struct closed_pub *c = arg;
	struct abd_service_config cfg = { 0 };
	cfg.dir = c->dir;
	struct abd_service *svc;
	if (abd_service_publish("hostile.closed", &cfg, 0, &svc) < 0)
		return 10;
	if (write(c->ready_w, "p", 1) != 1)
		return 11;
	char x;
	if (serve_until(svc, c->go_r) < 0 || read(c->go_r, &x, 1) != 1)
		return 12;
	/* a peer stored "withdrawn" into the header: the publisher's pushes go on */
	int e = abd_service_try_push(svc, "from the publisher", 18);
	if (e != 0)
		return 20 + (e == -EPIPE);
	if (abd_service_closed(svc) != 0)
		return 13;
	if (write(c->ready_w, "q", 1) != 1)
		return 14;
	if (serve_until(svc, c->go_r) < 0)
		return 15;
	abd_service_close(svc); /* the real withdrawal */
	return 0;
}

/* A peer stores "closed" into the ring header's closed word. The publisher's own state lives in
 * its process: its pushes go on (before, they failed with -EPIPE); an opener takes the word
 * for a hint the registry must confirm: it goes on too, and sees -EPIPE once the publisher
 * really withdraws. */
ABD_TEST(ring_hostile, closed_word_in_shared_memory_stops_nobody)
{
	char dir[128];
	abd_test_mkdtemp(dir, sizeof(dir));
	int ready[2], go[2];
	cr_assert_eq(pipe2(ready, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(go, O_CLOEXEC), 0);
	struct closed_pub c = { dir, ready[1], go[0] };
	pid_t pid = abd_test_fork(closed_publisher, &c);
	close(ready[1]); /* the child's ends: a child that exits early is seen as EOF */
	close(go[0]);
	char x;
	cr_assert_eq(read(ready[0], &x, 1), 1);
	struct abd_service_config cfg = { 0 };
	cfg.dir = dir;
	struct abd_service *op;
	cr_assert_eq(abd_service_open("hostile.closed", &cfg, 0, 5000000000ll, &op), 0);
	int mfd = abd_ring_fd(abd_service_ring(op));
	struct stat st;
	cr_assert_eq(fstat(mfd, &st), 0);
	unsigned char *m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	cr_assert_neq(m, MAP_FAILED);
	__atomic_store_n((uint32_t *)(void *)(m + 448), 1u, __ATOMIC_SEQ_CST); /* "withdrawn" */
	cr_assert_eq(write(go[1], "g", 1), 1);
	if (read(ready[0], &x, 1) != 1)
		cr_assert_fail("the publisher's push failed: exit %d (21: -EPIPE)", abd_test_wait(pid));
	/* the opener: the registry says the publisher is alive, so the word is a peer's */
	cr_assert_eq(abd_service_try_push(op, "from the opener", 15), 0);
	char b[64];
	cr_assert_eq(abd_service_pop(op, b, sizeof(b), 2000000000ll), 18);
	cr_assert_eq(memcmp(b, "from the publisher", 18), 0);
	cr_assert_eq(abd_service_pop(op, b, sizeof(b), 2000000000ll), 15);
	cr_assert_eq(abd_service_closed(op), 0);
	/* a new opener, the word still set: it opens (the registry says alive), not waits for ever */
	struct abd_service *op2;
	cr_assert_eq(abd_service_open("hostile.closed", &cfg, 0, 1000000000ll, &op2), 0,
	             "a peer's closed word turned a new opener away");
	cr_assert_eq(abd_service_try_push(op2, "second opener", 13), 0);
	cr_assert_eq(abd_service_pop(op, b, sizeof(b), 2000000000ll), 13);
	abd_service_close(op2);
	/* the publisher withdraws for real: the opener learns it */
	cr_assert_eq(write(go[1], "d", 1), 1);
	cr_assert_eq(abd_test_wait(pid), 0);
	cr_assert_eq(abd_service_pop(op, b, sizeof(b), 2000000000ll), -EPIPE);
	cr_assert_eq(abd_service_try_push(op, "late", 4), -EPIPE);
	munmap(m, (size_t)st.st_size);
	abd_service_close(op);
	close(ready[0]);
	close(go[1]);
	abd_test_rmtree(dir);
}
