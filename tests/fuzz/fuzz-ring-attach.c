/* SPDX-License-Identifier: MIT */
/* abd_ring_attach on arbitrary bytes: a hostile peer's memfd.
 *
 * Input: byte 0 = options, the rest = the file's contents.
 *   bit 0: seal the file (SHRINK|GROW|SEAL) as a real ring is sealed
 *   bit 1: recompute the header checksum, so mutations reach the geometry checks
 *   bit 2: after a successful attach, also scribble the input's tail over the live slots
 * A successful attach is exercised with every fast path; nothing may crash, leak or hang. */
#include <abd/ring.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "runtime/ring-internal.h"

#define MAX_FILE (1u << 20)

static void exercise(struct abd_ring *r, const uint8_t *data, size_t size, int fd, size_t fsize)
{
	char buf[256];
	const void *p;
	void *w;
	size_t len;
	unsigned char *m = NULL;
	if (size > 0) {
		m = mmap(NULL, fsize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (m == MAP_FAILED)
			m = NULL;
	}
	for (size_t i = 0; i < 64; i++) {
		if (m && size > 8) {
			/* the peer writes its next byte somewhere */
			size_t at = ((size_t)data[i % size] << 8 | data[(i + 1) % size]) * 131u % fsize;
			m[at] = data[(i + 2) % size];
		}
		int e;
		switch (i % 7) {
		case 0: e = abd_ring_try_push(r, "fuzz", 4); break;
		case 1: e = abd_ring_try_pop(r, buf, sizeof(buf)); break;
		case 2:
			e = abd_ring_try_peek(r, &p, &len);
			if (e == 0) {
				memcpy(buf, p, len < sizeof(buf) ? len : sizeof(buf));
				e = abd_ring_release(r, p);
			}
			break;
		case 3:
			e = abd_ring_try_reserve(r, &w);
			if (e == 0)
				e = abd_ring_commit(r, w, 1);
			break;
		case 4: e = abd_ring_pop(r, buf, sizeof(buf), 0); break;
		case 5: e = abd_ring_recover(r); break;
		default: e = abd_ring_push(r, "y", 1, 0); break;
		}
		(void)e;
	}
	if (m)
		munmap(m, fsize);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned opts = data[0];
	data++, size--;
	size_t fsize = size > MAX_FILE ? MAX_FILE : size;
	int fd = memfd_create("fuzz-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return 0;
	unsigned char *copy = malloc(fsize ? fsize : 1);
	memcpy(copy, data, fsize);
	if ((opts & 2) && fsize >= sizeof(struct abd__ring_hdr)) {
		uint64_t sum = abd__ring_checksum(copy);
		memcpy(copy + offsetof(struct abd__ring_hdr, checksum), &sum, sizeof(sum));
	}
	if (fsize && write(fd, copy, fsize) != (ssize_t)fsize)
		goto out;
	if (opts & 1)
		fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	struct abd_ring *r = NULL;
	if (abd_ring_attach(fd, -1, NULL, 0, &r) == 0) {
		exercise(r, data, (opts & 4) ? size : 0, fd, fsize);
		abd_ring_free(r);
	}
out:
	free(copy);
	close(fd);
	return 0;
}
