/* SPDX-License-Identifier: MIT */
/* Records: building, reading, and the wire format (docs/registry.md, "Record format").
 *
 * The decoder is the one place where bytes written by anybody become structure, so it checks
 * every length against what is left before it touches a byte, and takes nothing on trust:
 * fuzzed by tests/fuzz/fuzz-record.c. */
#include <abd/registry.h>

#include <endian.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/internal.h"
#include "runtime/registry-internal.h"

/* ------------------------------------------------------------------ CRC32C -- */

/* Castagnoli polynomial, reflected; one table, built once. x86-64 has the instruction. */
static uint32_t crc_table[256];
static bool crc_hw;
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_table[i] = c;
	}
#if defined(__x86_64__) && defined(__clang__)
	crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

uint32_t abd__crc32c_sw(const void *data, size_t len)
{
	pthread_once(&crc_once, crc_init);
	const uint8_t *p = data;
	uint32_t c = 0xFFFFFFFFu;
	for (size_t i = 0; i < len; i++)
		c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
	return c ^ 0xFFFFFFFFu;
}

#if defined(__x86_64__) && defined(__clang__)
__attribute__((target("sse4.2"))) static uint32_t crc_sse42(const uint8_t *p, size_t n)
{
	uint64_t c = 0xFFFFFFFFu;
	for (; n >= 8; p += 8, n -= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
	}
	uint32_t c32 = (uint32_t)c;
	while (n--)
		c32 = __builtin_ia32_crc32qi(c32, *p++);
	return c32 ^ 0xFFFFFFFFu;
}
#endif

uint32_t abd__crc32c(const void *data, size_t len)
{
	pthread_once(&crc_once, crc_init);
#if defined(__x86_64__) && defined(__clang__)
	if (crc_hw)
		return crc_sse42(data, len);
#endif
	return abd__crc32c_sw(data, len);
}

/* ------------------------------------------------------------------ grammar -- */

/* [a-zA-Z0-9._-] as a bitmap of the 128 ASCII codes: one test per character of every name a
 * watcher decodes. */
static const uint64_t name_chars[2] = {
	0x03ff000000000000u | (uint64_t)1 << '.' | (uint64_t)1 << '-', /* '0'..'9' '.' '-' */
	0x07fffffe07fffffeu | (uint64_t)1 << ('_' - 64),              /* 'A'..'Z' 'a'..'z' '_' */
};

static bool name_char(unsigned char c)
{
	return c < 128 && (name_chars[c >> 6] >> (c & 63)) & 1;
}

bool abd__name_valid(const char *s, size_t len, size_t max)
{
	if (len == 0 || len > max || s[0] == '.')
		return false;
	for (size_t i = 0; i < len; i++)
		if (!name_char((unsigned char)s[i]))
			return false;
	return true;
}

ABD_EXPORT int abd_service_name_valid(const char *name)
{
	if (!name)
		return 0;
	size_t len = strnlen(name, ABD_SERVICE_MAX + 1);
	return abd__name_valid(name, len, ABD_SERVICE_MAX);
}

/* ------------------------------------------------------------------ building -- */

ABD_EXPORT int abd_record_new(const char *service, struct abd_record **out)
{
	abd__check(out, -EINVAL);
	*out = NULL;
	abd__check(abd_service_name_valid(service), -EINVAL);
	struct abd_record *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	memcpy(r->service, service, strlen(service) + 1);
	*out = r;
	return 0;
}

ABD_EXPORT void abd_record_free(struct abd_record *rec)
{
	if (!rec)
		return;
	if (rec->packed || rec->in_arena) {
		if (!rec->packed) { /* grown out of the arena: the tables are its own */
			free(rec->slots);
			free(rec->meta);
			free(rec->blob);
		}
		if (!rec->in_arena)
			free(rec); /* tables live in the same allocation */
		return;
	}
	free(rec->slots);
	free(rec->meta);
	free(rec->blob);
	free(rec);
}

int abd__record_copy(const struct abd_record *src, struct abd_record **out)
{
	struct abd_record *r = malloc(sizeof(*r));
	if (!r)
		return -ENOMEM;
	*r = *src;
	r->packed = false;
	r->in_arena = false;
	r->slots = NULL;
	r->meta = NULL;
	r->blob = NULL;
	if (src->nslots && !(r->slots = malloc(src->nslots * sizeof(*r->slots))))
		goto fail;
	if (src->nmeta && !(r->meta = malloc(src->nmeta * sizeof(*r->meta))))
		goto fail;
	if (src->blob_len && !(r->blob = malloc(src->blob_len)))
		goto fail;
	if (src->nslots)
		memcpy(r->slots, src->slots, src->nslots * sizeof(*r->slots));
	if (src->nmeta)
		memcpy(r->meta, src->meta, src->nmeta * sizeof(*r->meta));
	if (src->blob_len)
		memcpy(r->blob, src->blob, src->blob_len);
	r->slots_cap = src->nslots;
	r->meta_cap = src->nmeta;
	r->blob_cap = src->blob_len;
	*out = r;
	return 0;
fail:
	abd_record_free(r);
	return -ENOMEM;
}

/* A decoded record keeps its tables in its own allocation; before one grows, give each its
 * own heap block. */
static int unpack(struct abd_record *r)
{
	if (!r->packed)
		return 0;
	struct abd__slot *slots = r->slots_cap ? malloc(r->slots_cap * sizeof(*slots)) : NULL;
	struct abd__meta *meta = r->meta_cap ? malloc(r->meta_cap * sizeof(*meta)) : NULL;
	char *blob = r->blob_cap ? malloc(r->blob_cap) : NULL;
	if ((r->slots_cap && !slots) || (r->meta_cap && !meta) || (r->blob_cap && !blob)) {
		free(slots);
		free(meta);
		free(blob);
		return -ENOMEM;
	}
	if (r->nslots)
		memcpy(slots, r->slots, r->nslots * sizeof(*slots));
	if (r->nmeta)
		memcpy(meta, r->meta, r->nmeta * sizeof(*meta));
	if (r->blob_len)
		memcpy(blob, r->blob, r->blob_len);
	r->slots = slots;
	r->meta = meta;
	r->blob = blob;
	r->packed = false;
	return 0;
}

static int slot_find(const struct abd_record *r, const char *name, size_t len)
{
	for (size_t i = 0; i < r->nslots; i++)
		if (r->slots[i].name_len == len && memcmp(r->slots[i].name, name, len) == 0)
			return (int)i;
	return -1;
}

static int slot_push(struct abd_record *r, const char *name, size_t len, int32_t fd,
                     uint8_t kind)
{
	if (r->nslots == r->slots_cap) {
		if (unpack(r) < 0)
			return -ENOMEM;
		size_t cap = r->slots_cap ? r->slots_cap * 2 : 4;
		if (cap > ABD_SLOTS_MAX)
			cap = ABD_SLOTS_MAX;
		void *p = realloc(r->slots, cap * sizeof(*r->slots));
		if (!p)
			return -ENOMEM;
		r->slots = p;
		r->slots_cap = cap;
	}
	struct abd__slot *s = &r->slots[r->nslots++];
	memcpy(s->name, name, len);
	s->name[len] = 0;
	s->name_len = (uint8_t)len;
	s->fd = fd;
	s->kind = kind;
	return 0;
}

ABD_EXPORT int abd_record_add_fd(struct abd_record *rec, const char *slot, int fd,
                                 enum abd_fd_kind kind)
{
	abd__check(rec && slot && fd >= 0, -EINVAL);
	abd__check((unsigned)kind <= ABD_FD_SOCKET, -EINVAL);
	size_t len = strnlen(slot, ABD_SLOT_NAME_MAX + 1);
	abd__check(abd__name_valid(slot, len, ABD_SLOT_NAME_MAX), -EINVAL);
	if (slot_find(rec, slot, len) >= 0)
		return -EEXIST;
	if (rec->nslots >= ABD_SLOTS_MAX)
		return -ENOSPC;
	return slot_push(rec, slot, len, fd, (uint8_t)kind);
}

ABD_EXPORT int abd_record_set_socket(struct abd_record *rec, const char *path)
{
	abd__check(rec && path, -EINVAL);
	size_t len = strnlen(path, ABD_SOCKET_PATH_MAX + 1);
	if (len > ABD_SOCKET_PATH_MAX)
		return -ENAMETOOLONG;
	memcpy(rec->socket, path, len + 1);
	rec->socket_len = (uint16_t)len;
	return 0;
}

ABD_EXPORT int abd_record_set_instance(struct abd_record *rec, const uint8_t *instance)
{
	static const uint8_t zero[ABD_INSTANCE_SIZE];
	abd__check(rec && instance && memcmp(instance, zero, ABD_INSTANCE_SIZE) != 0, -EINVAL);
	memcpy(rec->instance, instance, ABD_INSTANCE_SIZE);
	rec->instance_chosen = true;
	return 0;
}

ABD_EXPORT int abd_record_set_caps(struct abd_record *rec, uint64_t caps)
{
	abd__check(rec, -EINVAL);
	rec->caps = caps;
	return 0;
}

static const char *meta_key(const struct abd_record *r, size_t i)
{
	return r->blob + r->meta[i].key;
}

static const char *meta_value(const struct abd_record *r, size_t i)
{
	return r->blob + r->meta[i].value;
}

/* Append key and value (with their NULs) to the blob. */
static int meta_push(struct abd_record *r, const char *key, size_t klen, const char *value,
                     size_t vlen)
{
	if ((r->nmeta == r->meta_cap || r->blob_len + klen + vlen + 2 > r->blob_cap) &&
	    unpack(r) < 0)
		return -ENOMEM;
	if (r->nmeta == r->meta_cap) {
		size_t cap = r->meta_cap ? r->meta_cap * 2 : 4;
		if (cap > ABD_META_MAX)
			cap = ABD_META_MAX;
		void *p = realloc(r->meta, cap * sizeof(*r->meta));
		if (!p)
			return -ENOMEM;
		r->meta = p;
		r->meta_cap = cap;
	}
	size_t need = r->blob_len + klen + vlen + 2;
	if (need > r->blob_cap) {
		size_t cap = r->blob_cap ? r->blob_cap : 64;
		while (cap < need)
			cap *= 2;
		void *p = realloc(r->blob, cap);
		if (!p)
			return -ENOMEM;
		r->blob = p;
		r->blob_cap = cap;
	}
	struct abd__meta *m = &r->meta[r->nmeta++];
	m->key = (uint32_t)r->blob_len;
	m->klen = (uint16_t)klen;
	memcpy(r->blob + r->blob_len, key, klen);
	r->blob[r->blob_len + klen] = 0;
	r->blob_len += klen + 1;
	m->value = (uint32_t)r->blob_len;
	m->vlen = (uint16_t)vlen;
	if (vlen)
		memcpy(r->blob + r->blob_len, value, vlen);
	r->blob[r->blob_len + vlen] = 0;
	r->blob_len += vlen + 1;
	r->meta_bytes += 4 + klen + vlen;
	return 0;
}

static int meta_find(const struct abd_record *r, const char *key, size_t klen)
{
	for (size_t i = 0; i < r->nmeta; i++)
		if (r->meta[i].klen == klen && memcmp(meta_key(r, i), key, klen) == 0)
			return (int)i;
	return -1;
}

ABD_EXPORT int abd_record_add_meta(struct abd_record *rec, const char *key, const char *value)
{
	abd__check(rec && key && value, -EINVAL);
	size_t klen = strnlen(key, ABD_META_KEY_MAX + 1);
	abd__check(abd__name_valid(key, klen, ABD_META_KEY_MAX), -EINVAL);
	size_t vlen = strnlen(value, ABD_META_VALUE_MAX + 1);
	if (vlen > ABD_META_VALUE_MAX)
		return -ENAMETOOLONG;
	if (meta_find(rec, key, klen) >= 0)
		return -EEXIST;
	if (rec->nmeta >= ABD_META_MAX || rec->meta_bytes + 4 + klen + vlen > ABD_META_BYTES_MAX)
		return -ENOSPC;
	return meta_push(rec, key, klen, value, vlen);
}

/* ------------------------------------------------------------------ reading -- */

ABD_EXPORT const char *abd_record_service(const struct abd_record *rec)
{
	return rec ? rec->service : NULL;
}
ABD_EXPORT const uint8_t *abd_record_instance(const struct abd_record *rec)
{
	return rec ? rec->instance : NULL;
}
ABD_EXPORT pid_t abd_record_pid(const struct abd_record *rec)
{
	return rec ? rec->pid : 0;
}
ABD_EXPORT uid_t abd_record_uid(const struct abd_record *rec)
{
	return rec ? rec->uid : (uid_t)-1;
}
ABD_EXPORT uint64_t abd_record_start_time(const struct abd_record *rec)
{
	return rec ? rec->start_time : 0;
}
ABD_EXPORT void abd_record_pidns(const struct abd_record *rec, uint64_t *dev, uint64_t *ino)
{
	if (dev)
		*dev = rec ? rec->pidns_dev : 0;
	if (ino)
		*ino = rec ? rec->pidns_ino : 0;
}
ABD_EXPORT uint64_t abd_record_pidfs_ino(const struct abd_record *rec)
{
	return rec ? rec->pidfs_ino : 0;
}
ABD_EXPORT uint64_t abd_record_caps(const struct abd_record *rec)
{
	return rec ? rec->caps : 0;
}
ABD_EXPORT uint64_t abd_record_published_ns(const struct abd_record *rec)
{
	return rec ? rec->published_ns : 0;
}
ABD_EXPORT const char *abd_record_socket(const struct abd_record *rec)
{
	return rec ? rec->socket : NULL;
}
ABD_EXPORT size_t abd_record_fd_count(const struct abd_record *rec)
{
	return rec ? rec->nslots : 0;
}

ABD_EXPORT int abd_record_fd_at(const struct abd_record *rec, size_t i, const char **slot,
                                int *fd, enum abd_fd_kind *kind)
{
	abd__check(rec, -EINVAL);
	if (i >= rec->nslots)
		return -ERANGE;
	if (slot)
		*slot = rec->slots[i].name;
	if (fd)
		*fd = rec->slots[i].fd;
	if (kind)
		*kind = rec->slots[i].kind > ABD_FD_SOCKET ? ABD_FD_OTHER
		                                           : (enum abd_fd_kind)rec->slots[i].kind;
	return 0;
}

ABD_EXPORT int abd_record_fd_by_name(const struct abd_record *rec, const char *slot)
{
	abd__check(rec && slot, -EINVAL);
	int i = slot_find(rec, slot, strnlen(slot, ABD_SLOT_NAME_MAX + 1));
	return i < 0 ? -ENOENT : rec->slots[i].fd;
}

ABD_EXPORT size_t abd_record_meta_count(const struct abd_record *rec)
{
	return rec ? rec->nmeta : 0;
}

ABD_EXPORT int abd_record_meta_at(const struct abd_record *rec, size_t i, const char **key,
                                  const char **value)
{
	abd__check(rec, -EINVAL);
	if (i >= rec->nmeta)
		return -ERANGE;
	if (key)
		*key = meta_key(rec, i);
	if (value)
		*value = meta_value(rec, i);
	return 0;
}

ABD_EXPORT const char *abd_record_meta(const struct abd_record *rec, const char *key)
{
	if (!rec || !key)
		return NULL;
	int i = meta_find(rec, key, strnlen(key, ABD_META_KEY_MAX + 1));
	return i < 0 ? NULL : meta_value(rec, (size_t)i);
}

/* ------------------------------------------------------------------ wire format -- */

static void put16(uint8_t *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, 2);
}
static void put32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}
static void put64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}
static uint16_t get16(const uint8_t *p)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return le16toh(v);
}
static uint32_t get32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return le32toh(v);
}
static uint64_t get64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return le64toh(v);
}

static size_t slots_len(const struct abd_record *r)
{
	size_t n = 0;
	for (size_t i = 0; i < r->nslots; i++)
		n += ABD__SLOT_FIXED + r->slots[i].name_len;
	return n;
}

/* A record that knows its publisher's pidfs inode is written as 1.1, any other as 1.0: what a
 * 1.0 reader reads exactly, and a decoded record re-encodes to its own bytes either way. */
static size_t header_len(const struct abd_record *r)
{
	return r->pidfs_ino ? ABD__HEADER_LEN_1_1 : ABD__HEADER_LEN;
}

size_t abd__record_size(const struct abd_record *r)
{
	return header_len(r) + strlen(r->service) + r->socket_len + slots_len(r) + r->meta_bytes +
	       4;
}

ABD_EXPORT long abd_record_encode(const struct abd_record *rec, void *buf, size_t size)
{
	abd__check(rec && (buf || size == 0), -EINVAL);
	size_t svc = strlen(rec->service);
	size_t sl = slots_len(rec);
	size_t total = abd__record_size(rec);
	if (size < total)
		return -ENOSPC;
	size_t hlen = header_len(rec);
	uint8_t *p = buf;
	memset(p, 0, hlen);
	memcpy(p, ABD__MAGIC, 4);
	put16(p + 4, ABD__VERSION_MAJOR);
	put16(p + 6, rec->pidfs_ino ? 1 : 0);
	put32(p + 8, (uint32_t)total);
	put16(p + 12, (uint16_t)hlen);
	put16(p + 14, 0);
	memcpy(p + 16, rec->instance, ABD_INSTANCE_SIZE);
	put32(p + 32, (uint32_t)rec->pid);
	put32(p + 36, rec->uid);
	put64(p + 40, rec->start_time);
	put64(p + 48, rec->pidns_dev);
	put64(p + 56, rec->pidns_ino);
	put64(p + 64, rec->caps);
	put64(p + 72, rec->published_ns);
	put16(p + 80, (uint16_t)svc);
	put16(p + 82, rec->socket_len);
	put16(p + 84, (uint16_t)rec->nslots);
	put16(p + 86, (uint16_t)rec->nmeta);
	put32(p + 88, (uint32_t)sl);
	put32(p + 92, (uint32_t)rec->meta_bytes);
	if (rec->pidfs_ino)
		put64(p + ABD__HEADER_LEN, rec->pidfs_ino);
	uint8_t *q = p + hlen;
	memcpy(q, rec->service, svc);
	q += svc;
	memcpy(q, rec->socket, rec->socket_len);
	q += rec->socket_len;
	for (size_t i = 0; i < rec->nslots; i++) {
		const struct abd__slot *s = &rec->slots[i];
		put32(q, (uint32_t)s->fd);
		/* a later minor's kind (kept raw from decoding) is written as what this version can
		 * say: ABD_FD_OTHER, so that what we encode always decodes */
		q[4] = s->kind > ABD_FD_SOCKET ? (uint8_t)ABD_FD_OTHER : s->kind;
		q[5] = s->name_len;
		memcpy(q + ABD__SLOT_FIXED, s->name, s->name_len);
		q += ABD__SLOT_FIXED + s->name_len;
	}
	for (size_t i = 0; i < rec->nmeta; i++) {
		const struct abd__meta *m = &rec->meta[i];
		put16(q, m->klen);
		put16(q + 2, m->vlen);
		memcpy(q + 4, meta_key(rec, i), m->klen);
		memcpy(q + 4 + m->klen, meta_value(rec, i), m->vlen);
		q += 4 + m->klen + m->vlen;
	}
	put32(q, abd__crc32c(p, total - 4));
	return (long)total;
}

#define BAD(msg)                                                                       \
	do {                                                                               \
		*why = (msg);                                                                  \
		r = -EBADMSG;                                                                  \
		goto fail;                                                                     \
	} while (0)

struct abd__arena_block {
	struct abd__arena_block *next;
	size_t used, cap;
	max_align_t data[];
};

#define ARENA_BLOCK (64 * 1024)

void *abd__arena_alloc(struct abd__arena *a, size_t n)
{
	n = (n + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1);
	struct abd__arena_block *b = a->head;
	if (!b || b->cap - b->used < n) {
		size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
		if (!(b = malloc(sizeof(*b) + cap)))
			return NULL;
		b->used = 0;
		b->cap = cap;
		b->next = a->head;
		a->head = b;
	}
	void *p = (char *)b->data + b->used;
	b->used += n;
	return p;
}

void abd__arena_free(struct abd__arena *a)
{
	while (a->head) {
		struct abd__arena_block *b = a->head;
		a->head = b->next;
		free(b);
	}
}

ABD_EXPORT int abd_record_decode(const void *buf, size_t len, struct abd_record **out,
                                 const char **why)
{
	return abd__record_decode_in(buf, len, out, why, NULL);
}

int abd__record_decode_in(const void *buf, size_t len, struct abd_record **out, const char **why,
                          struct abd__arena *arena)
{
	const char *why_local;
	if (!why)
		why = &why_local;
	*why = NULL;
	abd__check(out && (buf || len == 0), -EINVAL);
	*out = NULL;
	const uint8_t *p = buf;
	int r;
	struct abd_record *rec = NULL;

	if (len < 4 || memcmp(p, ABD__MAGIC, 4) != 0) {
		*why = len < 4 ? "truncated" : "bad magic";
		return -EBADMSG;
	}
	if (len < ABD__HEADER_LEN + 4) {
		*why = "truncated";
		return -EBADMSG;
	}
	uint16_t major = get16(p + 4), minor = get16(p + 6);
	if (major > ABD__VERSION_MAJOR) {
		*why = "future major version";
		return -EPROTONOSUPPORT;
	}
	if (major != ABD__VERSION_MAJOR) {
		*why = "bad version";
		return -EBADMSG;
	}
	uint32_t total = get32(p + 8);
	if (total > ABD_RECORD_MAX) {
		*why = "oversized";
		return -EBADMSG;
	}
	if (total != len) {
		*why = total > len ? "truncated" : "length mismatch";
		return -EBADMSG;
	}
	if (get32(p + len - 4) != abd__crc32c(p, len - 4)) {
		*why = "bad checksum";
		return -EBADMSG;
	}
	/* A minor this code knows (1.0, 1.1) must be exact: its own header length, no flags, no
	 * trailing bytes, known kinds. A later one may add to each; what it adds is skipped. */
	bool known = minor <= ABD__VERSION_MINOR;
	size_t want = minor == 0 ? ABD__HEADER_LEN : ABD__HEADER_LEN_1_1;
	uint16_t hlen = get16(p + 12);
	if (hlen < want || (known && hlen != want) || (size_t)hlen > len - 4) {
		*why = "bad header length";
		return -EBADMSG;
	}
	if (known && get16(p + 14) != 0) {
		*why = "reserved flags set";
		return -EBADMSG;
	}
	size_t svc = get16(p + 80), sock = get16(p + 82), nslots = get16(p + 84),
	       nmeta = get16(p + 86), sl = get32(p + 88), ml = get32(p + 92);
	if (svc == 0 || svc > ABD_SERVICE_MAX || sock > ABD_SOCKET_PATH_MAX ||
	    nslots > ABD_SLOTS_MAX || nmeta > ABD_META_MAX || sl > ABD_RECORD_MAX ||
	    ml > ABD_META_BYTES_MAX) {
		*why = "section length out of bounds";
		return -EBADMSG;
	}
	/* All terms are bounded by 64 KiB each: no overflow in size_t. */
	size_t body = (size_t)hlen + svc + sock + sl + ml + 4;
	if (body > len || (known && body != len)) {
		*why = "sections do not add up to the length";
		return -EBADMSG;
	}

	/* One allocation for the record and its tables, sized from the header (the walk below
	 * still checks every entry against the bytes actually present). */
	size_t blob = nmeta ? ml + 1 : 0;
	size_t size = sizeof(*rec) + nslots * sizeof(*rec->slots) + nmeta * sizeof(*rec->meta) + blob;
	rec = arena ? abd__arena_alloc(arena, size) : malloc(size);
	if (!rec)
		return -ENOMEM;
	memset(rec, 0, sizeof(*rec));
	rec->packed = true;
	rec->in_arena = arena != NULL;
	rec->slots = (struct abd__slot *)(rec + 1);
	rec->meta = (struct abd__meta *)(rec->slots + nslots);
	rec->blob = (char *)(rec->meta + nmeta);
	rec->slots_cap = nslots;
	rec->meta_cap = nmeta;
	rec->blob_cap = blob;
	memcpy(rec->instance, p + 16, ABD_INSTANCE_SIZE);
	rec->pid = (int32_t)get32(p + 32);
	rec->uid = get32(p + 36);
	rec->start_time = get64(p + 40);
	rec->pidns_dev = get64(p + 48);
	rec->pidns_ino = get64(p + 56);
	rec->caps = get64(p + 64);
	rec->published_ns = get64(p + 72);
	if (minor >= 1)
		rec->pidfs_ino = get64(p + ABD__HEADER_LEN);
	if (rec->pid <= 0)
		BAD("pid out of range");
	if (minor == 1 && !rec->pidfs_ino)
		BAD("1.1 record without a pidfs inode"); /* 1.1 is written only with one */

	const uint8_t *q = p + hlen;
	if (!abd__name_valid((const char *)q, svc, ABD_SERVICE_MAX))
		BAD("service name outside the grammar");
	memcpy(rec->service, q, svc);
	rec->service[svc] = 0;
	q += svc;
	if (memchr(q, 0, sock))
		BAD("NUL in socket path");
	memcpy(rec->socket, q, sock);
	rec->socket[sock] = 0;
	rec->socket_len = (uint16_t)sock;
	q += sock;

	const uint8_t *end = q + sl;
	for (size_t i = 0; i < nslots; i++) {
		if ((size_t)(end - q) < ABD__SLOT_FIXED)
			BAD("slot table truncated");
		int32_t fd = (int32_t)get32(q);
		uint8_t kind = q[4], nl = q[5];
		if ((size_t)(end - q) - ABD__SLOT_FIXED < nl)
			BAD("slot table truncated");
		const char *name = (const char *)q + ABD__SLOT_FIXED;
		if (fd < 0)
			BAD("slot fd out of range");
		/* a later minor's kind is kept as it is: abd_record_fd_at shows it as
		 * ABD_FD_OTHER, and abd_acquire refuses it (it cannot verify what it does not know) */
		if (kind > ABD_FD_SOCKET && known)
			BAD("unknown slot kind");
		if (!abd__name_valid(name, nl, ABD_SLOT_NAME_MAX))
			BAD("slot name outside the grammar");
		if (slot_find(rec, name, nl) >= 0)
			BAD("duplicate slot name");
		if ((r = slot_push(rec, name, nl, fd, kind)) < 0)
			goto fail;
		q += ABD__SLOT_FIXED + nl;
	}
	if (q != end)
		BAD("slot table length mismatch");

	end = q + ml;
	for (size_t i = 0; i < nmeta; i++) {
		if ((size_t)(end - q) < 4)
			BAD("metadata truncated");
		size_t kl = get16(q), vl = get16(q + 2);
		if ((size_t)(end - q) - 4 < kl + vl)
			BAD("metadata truncated");
		const char *k = (const char *)q + 4, *v = k + kl;
		if (!abd__name_valid(k, kl, ABD_META_KEY_MAX))
			BAD("metadata key outside the grammar");
		if (vl > ABD_META_VALUE_MAX)
			BAD("metadata value too long");
		if (memchr(v, 0, vl))
			BAD("NUL in metadata value");
		if (meta_find(rec, k, kl) >= 0)
			BAD("duplicate metadata key");
		if ((r = meta_push(rec, k, kl, v, vl)) < 0)
			goto fail;
		q += 4 + kl + vl;
	}
	if (q != end)
		BAD("metadata length mismatch");
	*out = rec;
	return 0;
fail:
	abd_record_free(rec);
	return r;
}
