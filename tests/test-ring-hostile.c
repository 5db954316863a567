/* SPDX-License-Identifier: MIT */
/* The ring against hostile input: corrupted headers, truncated or unsealed files, the wrong
 * kind of descriptor, and a peer that keeps scribbling over the shared memory after attach.
 * Every case must give -EPROTO / -EINVAL (or garbled messages), never a crash; ASan checks
 * that no access leaves the mapping. */
#include <abd/ring.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
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
