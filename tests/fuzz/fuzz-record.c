/* SPDX-License-Identifier: MIT */
/* The record decoder on arbitrary bytes: it must return a record or an error, never read out
 * of bounds or hit undefined behaviour; a decoded 1.0 or 1.1 record must re-encode to the same
 * bytes, and the reader's file-name parser and JSON-facing accessors must cope with what it
 * yields. */
#include <abd/abd.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
uint32_t abd__crc32c(const void *data, size_t len);

static int one(const uint8_t *data, size_t size)
{
	struct abd_record *rec = NULL;
	const char *why = NULL;
	int r = abd_record_decode(data, size, &rec, &why);
	if (r < 0) {
		if (rec || (r == -EBADMSG && !why))
			abort();
		return 0;
	}
	/* Every accessor on what came out. */
	size_t sum = strlen(abd_record_service(rec)) + strlen(abd_record_socket(rec));
	for (size_t i = 0; i < abd_record_fd_count(rec); i++) {
		const char *slot;
		int fd;
		enum abd_fd_kind kind;
		if (abd_record_fd_at(rec, i, &slot, &fd, &kind) < 0 || fd < 0 ||
		    abd_record_fd_by_name(rec, slot) != fd)
			abort();
		sum += strlen(slot);
	}
	for (size_t i = 0; i < abd_record_meta_count(rec); i++) {
		const char *k, *v;
		if (abd_record_meta_at(rec, i, &k, &v) < 0 || abd_record_meta(rec, k) != v)
			abort();
		sum += strlen(k) + strlen(v);
	}
	if (!abd_service_name_valid(abd_record_service(rec)))
		abort();
	/* Round trip: a 1.0 or 1.1 record re-encodes to exactly its bytes. */
	uint8_t *buf = malloc(ABD_RECORD_MAX);
	long len = abd_record_encode(rec, buf, ABD_RECORD_MAX);
	if (len <= 0)
		abort();
	if (size >= 8 && data[6] <= 1 && data[7] == 0 &&
	    ((size_t)len != size || memcmp(buf, data, size) != 0))
		abort();
	struct abd_record *again = NULL;
	if (abd_record_decode(buf, (size_t)len, &again, NULL) != 0)
		abort();
	abd_record_free(again);
	free(buf);
	abd_record_free(rec);
	return sum == (size_t)-1;
}

/* Each input twice: as it is, and with its checksum made right, so that mutations reach the
 * parser behind the checksum instead of stopping at it. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	one(data, size);
	if (size < 4 || size > ABD_RECORD_MAX)
		return 0;
	uint8_t *copy = malloc(size);
	memcpy(copy, data, size);
	uint32_t c = abd__crc32c(copy, size - 4);
	memcpy(copy + size - 4, &c, 4); /* little-endian hosts, as the format */
	one(copy, size);
	free(copy);
	return 0;
}
