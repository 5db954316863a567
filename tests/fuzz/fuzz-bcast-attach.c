/* SPDX-License-Identifier: MIT */
/* abd__bcast_attach on arbitrary bytes: a hostile publisher's data file (docs/broadcast.md).
 *
 * Input: byte 0 = options, the rest = the data file's contents.
 *   bit 0: seal it as a publisher does (SHRINK|GROW|FUTURE_WRITE|SEAL)
 *   bit 1: recompute the header checksum, so mutations reach the geometry checks
 *   bit 2: after a successful attach, the "publisher" keeps scribbling the input's tail over
 *          the file through the writable mapping it made before sealing
 *   bit 3: attach as an observer
 * The control file is made the size the header's subscriber count implies (or 0 bytes when
 * bit 4 is set). A successful attach is exercised with every subscriber call; nothing may
 * crash, leak or hang. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "runtime/bcast-internal.h"

#define MAX_FILE (1u << 20)

static void exercise(struct abd__bcast *b, const uint8_t *data, size_t size, unsigned char *m,
                     size_t fsize)
{
	char buf[256];
	const void *p;
	size_t len;
	for (size_t i = 0; i < 64; i++) {
		if (m && size > 8) {
			/* the publisher writes its next byte somewhere */
			size_t at = ((size_t)data[i % size] << 8 | data[(i + 1) % size]) * 131u % fsize;
			m[at] = data[(i + 2) % size];
		}
		const uint32_t *word;
		uint32_t value;
		int64_t tmo;
		struct abd__bcast_stats st;
		switch (i % 5) {
		case 0: (void)abd__bcast_try_recv(b, buf, sizeof(buf)); break;
		case 1:
			if (abd__bcast_peek(b, &p, &len) == 0) {
				memcpy(buf, p, len < sizeof(buf) ? len : sizeof(buf));
				(void)abd__bcast_release(b);
			}
			break;
		case 2:
			if (abd__bcast_wait_prepare(b, &word, &value, &tmo) == 0)
				abd__bcast_wait_finish(b);
			break;
		case 3: abd__bcast_stats(b, &st); break;
		default: (void)abd__bcast_try_recv(b, buf, 1); break;
		}
	}
}

static uint64_t fnv(const unsigned char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3u;
	return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned opts = data[0];
	data++, size--;
	size_t fsize = size > MAX_FILE ? MAX_FILE : size;
	int fd = memfd_create("fuzz-bcast", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	int cfd = memfd_create("fuzz-bcast-ctl", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	unsigned char *m = NULL;
	if (fd < 0 || cfd < 0)
		goto out;
	unsigned char *copy = malloc(fsize ? fsize : 1);
	memcpy(copy, data, fsize);
	if ((opts & 2) && fsize >= ABD__BCAST_CHECKSUM_OFF + 8) {
		uint64_t sum = fnv(copy, ABD__BCAST_CHECKSUM_OFF);
		memcpy(copy + ABD__BCAST_CHECKSUM_OFF, &sum, sizeof(sum));
	}
	ssize_t w = fsize ? write(fd, copy, fsize) : 0;
	uint32_t subs = 0;
	if (fsize >= 40)
		memcpy(&subs, copy + 36, sizeof(subs));
	free(copy);
	if (w != (ssize_t)fsize)
		goto out;
	if (fsize && (opts & 4)) {
		m = mmap(NULL, fsize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (m == MAP_FAILED)
			m = NULL;
	}
	if (opts & 1)
		fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | 0x0010 /* FUTURE_WRITE */ |
		                               F_SEAL_SEAL);
	if (!(opts & 16) && subs <= 64 && ftruncate(cfd, 512 + 64 * (off_t)subs) < 0)
		goto out;
	fcntl(cfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	struct abd__bcast *b = NULL;
	unsigned flags = (opts & 8) ? ABD__BCAST_OBSERVER : ABD__BCAST_SUBSCRIBER;
	if (abd__bcast_attach(fd, cfd, NULL, NULL, MAX_FILE * 2, flags, &b) == 0) {
		if (flags == ABD__BCAST_SUBSCRIBER)
			exercise(b, data, (opts & 4) ? size : 0, m, fsize);
		abd__bcast_free(b);
	}
out:
	if (m)
		munmap(m, fsize);
	if (fd >= 0)
		close(fd);
	if (cfd >= 0)
		close(cfd);
	return 0;
}
