/* SPDX-License-Identifier: MIT */
/* The registry: record format, directory rules, publish / enumerate / lookup / liveness / GC,
 * hostile directory entries, and watch events, with real processes. */
#include <abd/probe.h>
#include <dirent.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/time.h>
#include <sys/resource.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <poll.h>
#include <sys/wait.h>
#include <grp.h>
#include <sys/prctl.h>

#include "config.h"
#include "registry-util.h"
#include "runtime/internal.h"
#include "runtime/registry-internal.h"

/* ------------------------------------------------------------------ grammar & format -- */

ABD_TEST(registry, service_name_grammar)
{
	cr_assert(abd_service_name_valid("camera.frames"));
	cr_assert(abd_service_name_valid("a-b_C.9"));
	char longest[ABD_SERVICE_MAX + 2];
	memset(longest, 'x', sizeof(longest));
	longest[ABD_SERVICE_MAX] = 0;
	cr_assert(abd_service_name_valid(longest));
	longest[ABD_SERVICE_MAX] = 'x';
	longest[ABD_SERVICE_MAX + 1] = 0;
	cr_assert_not(abd_service_name_valid(longest));
	const char *bad[] = { "", ".hidden", "..", "a/b", "a b", "a\nb", "caf\xc3\xa9", "x*", NULL };
	for (int i = 0; bad[i]; i++) {
		cr_assert_not(abd_service_name_valid(bad[i]), "'%s' accepted", bad[i]);
		struct abd_record *rec = (void *)1;
		cr_assert_eq(abd_record_new(bad[i], &rec), -EINVAL);
		cr_assert_null(rec);
	}
	cr_assert_not(abd_service_name_valid(NULL));
}

static struct abd_record *full_record(void)
{
	struct abd_record *rec;
	cr_assert_eq(abd_record_new("svc.full", &rec), 0);
	cr_assert_eq(abd_record_add_fd(rec, "ring", 7, ABD_FD_MEMFD), 0);
	cr_assert_eq(abd_record_add_fd(rec, "wake", 8, ABD_FD_EVENTFD), 0);
	cr_assert_eq(abd_record_add_fd(rec, "ring", 9, ABD_FD_MEMFD), -EEXIST);
	cr_assert_eq(abd_record_add_fd(rec, ".x", 9, ABD_FD_MEMFD), -EINVAL);
	cr_assert_eq(abd_record_add_fd(rec, "x", -1, ABD_FD_MEMFD), -EINVAL);
	cr_assert_eq(abd_record_add_fd(rec, "x", 1, (enum abd_fd_kind)99), -EINVAL);
	cr_assert_eq(abd_record_set_socket(rec, "/run/abd/svc.sock"), 0);
	cr_assert_eq(abd_record_set_caps(rec, 0x8000000000000001u), 0);
	cr_assert_eq(abd_record_add_meta(rec, "owner", "camera team"), 0);
	cr_assert_eq(abd_record_add_meta(rec, "bytes", "\x01\xff\"\\ {}"), 0);
	cr_assert_eq(abd_record_add_meta(rec, "empty", ""), 0);
	cr_assert_eq(abd_record_add_meta(rec, "owner", "again"), -EEXIST);
	cr_assert_eq(abd_record_add_meta(rec, "bad key", "v"), -EINVAL);
	rec->pid = 4242;
	rec->uid = 1000;
	rec->start_time = 123456789;
	rec->pidns_dev = 4;
	rec->pidns_ino = 4026531836u;
	rec->published_ns = 1700000000123456789u;
	for (int i = 0; i < ABD_INSTANCE_SIZE; i++)
		rec->instance[i] = (uint8_t)(i * 17);
	return rec;
}

ABD_TEST(registry, record_roundtrip)
{
	struct abd_record *rec = full_record();
	uint8_t buf[4096];
	long len = abd_record_encode(rec, buf, sizeof(buf));
	cr_assert_gt(len, 0);
	cr_assert_eq(abd_record_encode(rec, buf, (size_t)len - 1), -ENOSPC);
	struct abd_record *back;
	const char *why = NULL;
	cr_assert_eq(abd_record_decode(buf, (size_t)len, &back, &why), 0, "%s", why);
	cr_assert_str_eq(abd_record_service(back), "svc.full");
	cr_assert_eq(memcmp(abd_record_instance(back), rec->instance, ABD_INSTANCE_SIZE), 0);
	cr_assert_eq(abd_record_pid(back), 4242);
	cr_assert_eq(abd_record_uid(back), 1000);
	cr_assert_eq(abd_record_start_time(back), 123456789);
	uint64_t dev, ino;
	abd_record_pidns(back, &dev, &ino);
	cr_assert_eq(dev, 4);
	cr_assert_eq(ino, 4026531836u);
	cr_assert_eq(abd_record_caps(back), 0x8000000000000001u);
	cr_assert_eq(abd_record_published_ns(back), 1700000000123456789u);
	cr_assert_str_eq(abd_record_socket(back), "/run/abd/svc.sock");
	cr_assert_eq(abd_record_fd_count(back), 2);
	const char *slot;
	int fd;
	enum abd_fd_kind kind;
	cr_assert_eq(abd_record_fd_at(back, 1, &slot, &fd, &kind), 0);
	cr_assert_str_eq(slot, "wake");
	cr_assert_eq(fd, 8);
	cr_assert_eq(kind, ABD_FD_EVENTFD);
	cr_assert_eq(abd_record_fd_at(back, 2, &slot, &fd, &kind), -ERANGE);
	cr_assert_eq(abd_record_fd_by_name(back, "ring"), 7);
	cr_assert_eq(abd_record_fd_by_name(back, "nope"), -ENOENT);
	cr_assert_eq(abd_record_meta_count(back), 3);
	cr_assert_str_eq(abd_record_meta(back, "bytes"), "\x01\xff\"\\ {}");
	cr_assert_str_eq(abd_record_meta(back, "empty"), "");
	cr_assert_null(abd_record_meta(back, "nope"));
	/* Encoding the decoded record gives the same bytes. */
	uint8_t again[4096];
	cr_assert_eq(abd_record_encode(back, again, sizeof(again)), len);
	cr_assert_eq(memcmp(buf, again, (size_t)len), 0);
	/* A decoded record can still be extended (its tables move to their own blocks). */
	cr_assert_eq(abd_record_add_meta(back, "later", "added"), 0);
	cr_assert_eq(abd_record_add_fd(back, "extra", 11, ABD_FD_SOCKET), 0);
	for (int i = 0; i < 20; i++) {
		char k[16];
		snprintf(k, sizeof(k), "m%d", i);
		cr_assert_eq(abd_record_add_meta(back, k, "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv"), 0);
	}
	cr_assert_str_eq(abd_record_meta(back, "owner"), "camera team");
	cr_assert_str_eq(abd_record_meta(back, "m19"), "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv");
	cr_assert_eq(abd_record_fd_by_name(back, "extra"), 11);
	cr_assert_eq(abd_record_fd_by_name(back, "ring"), 7);
	struct abd_record *third;
	len = abd_record_encode(back, again, sizeof(again));
	cr_assert_gt(len, 0);
	cr_assert_eq(abd_record_decode(again, (size_t)len, &third, NULL), 0);
	cr_assert_str_eq(abd_record_meta(third, "later"), "added");
	abd_record_free(third);
	abd_record_free(back);
	abd_record_free(rec);
}

ABD_TEST(registry, crc32c_known_answer)
{
	/* The check value of CRC-32C (Castagnoli), by the instruction and by the table. */
	cr_assert_eq(abd__crc32c("123456789", 9), 0xE3069283u);
	cr_assert_eq(abd__crc32c_sw("123456789", 9), 0xE3069283u);
	uint8_t buf[1000];
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 7 + 3);
	for (size_t n = 0; n <= sizeof(buf); n += 37)
		cr_assert_eq(abd__crc32c(buf, n), abd__crc32c_sw(buf, n), "length %zu", n);
}

ABD_TEST(registry, record_bounds)
{
	struct abd_record *rec;
	cr_assert_eq(abd_record_new("bounds", &rec), 0);
	char name[16];
	for (int i = 0; i < ABD_SLOTS_MAX; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		cr_assert_eq(abd_record_add_fd(rec, name, i, ABD_FD_OTHER), 0);
	}
	cr_assert_eq(abd_record_add_fd(rec, "one-more", 1, ABD_FD_OTHER), -ENOSPC);
	char big[ABD_META_VALUE_MAX + 2];
	memset(big, 'v', sizeof(big));
	big[ABD_META_VALUE_MAX + 1] = 0;
	cr_assert_eq(abd_record_add_meta(rec, "big", big), -ENAMETOOLONG);
	big[ABD_META_VALUE_MAX] = 0;
	int added = 0, r;
	while ((r = abd_record_add_meta(rec, (snprintf(name, sizeof(name), "k%d", added), name),
	                                big)) == 0)
		added++;
	cr_assert_eq(r, -ENOSPC);
	cr_assert_eq(added, ABD_META_BYTES_MAX / (ABD_META_VALUE_MAX + 4 + 3));
	char sock[ABD_SOCKET_PATH_MAX + 2];
	memset(sock, 'p', sizeof(sock));
	sock[ABD_SOCKET_PATH_MAX + 1] = 0;
	cr_assert_eq(abd_record_set_socket(rec, sock), -ENAMETOOLONG);
	/* The largest record still decodes. */
	rec->pid = 1;
	uint8_t *buf = malloc(ABD_RECORD_MAX);
	long len = abd_record_encode(rec, buf, ABD_RECORD_MAX);
	cr_assert_gt(len, 0);
	struct abd_record *back;
	cr_assert_eq(abd_record_decode(buf, (size_t)len, &back, NULL), 0);
	abd_record_free(back);
	free(buf);
	abd_record_free(rec);
}

static void fix_crc(uint8_t *buf, size_t len)
{
	uint32_t c = abd__crc32c(buf, len - 4);
	memcpy(buf + len - 4, &c, 4);
}

ABD_TEST(registry, decode_rejects_every_corruption)
{
	struct abd_record *rec = full_record();
	uint8_t buf[4096], bad[4096 + 8];
	long len = abd_record_encode(rec, buf, sizeof(buf));
	struct abd_record *out;
	/* Every truncation. */
	for (long n = 0; n < len; n++) {
		out = (void *)1;
		cr_assert_lt(abd_record_decode(buf, (size_t)n, &out, NULL), 0, "length %ld", n);
		cr_assert_null(out);
	}
	/* Every single-bit flip: CRC32C catches them all. */
	for (long i = 0; i < len; i++)
		for (int bit = 0; bit < 8; bit++) {
			memcpy(bad, buf, (size_t)len);
			bad[i] ^= (uint8_t)(1u << bit);
			cr_assert_lt(abd_record_decode(bad, (size_t)len, &out, NULL), 0, "byte %ld", i);
		}
	/* A trailing byte. */
	memcpy(bad, buf, (size_t)len);
	bad[len] = 0;
	cr_assert_eq(abd_record_decode(bad, (size_t)len + 1, &out, NULL), -EBADMSG);
	/* A future major version, even with a good checksum. */
	memcpy(bad, buf, (size_t)len);
	bad[4] = 2;
	fix_crc(bad, (size_t)len);
	const char *why;
	cr_assert_eq(abd_record_decode(bad, (size_t)len, &out, &why), -EPROTONOSUPPORT);
	/* Bad content with a good checksum: a service outside the grammar. */
	memcpy(bad, buf, (size_t)len);
	bad[ABD__HEADER_LEN] = '.';
	fix_crc(bad, (size_t)len);
	cr_assert_eq(abd_record_decode(bad, (size_t)len, &out, &why), -EBADMSG);
	cr_assert_str_eq(why, "service name outside the grammar");
	abd_record_free(rec);
}

ABD_TEST(registry, decode_1_1_carries_the_pidfs_ino)
{
	/* 1.1 = 1.0 + the publisher's pidfs inode (u64 at 96, header 104); written only when
	 * known, so a record without one stays 1.0 and both re-encode to their own bytes. */
	struct abd_record *rec = full_record();
	uint8_t buf[4096], again[4096];
	long len0 = abd_record_encode(rec, buf, sizeof(buf));
	cr_assert_eq(buf[6], 0, "no inode: 1.0");
	rec->pidfs_ino = 0x1122334455667788u;
	long len = abd_record_encode(rec, buf, sizeof(buf));
	cr_assert_eq(len, len0 + 8);
	cr_assert_eq(buf[6], 1);
	cr_assert_eq(buf[12], ABD__HEADER_LEN_1_1);
	struct abd_record *back;
	const char *why = NULL;
	cr_assert_eq(abd_record_decode(buf, (size_t)len, &back, &why), 0, "%s", why);
	cr_assert_eq(abd_record_pidfs_ino(back), 0x1122334455667788u);
	cr_assert_str_eq(abd_record_meta(back, "owner"), "camera team");
	cr_assert_eq(abd_record_encode(back, again, sizeof(again)), len);
	cr_assert_eq(memcmp(buf, again, (size_t)len), 0);
	abd_record_free(back);
	/* 1.1 is exact: no inode, or a 1.0 header, or a trailing byte, is refused */
	memcpy(again, buf, (size_t)len);
	memset(again + ABD__HEADER_LEN, 0, 8);
	fix_crc(again, (size_t)len);
	cr_assert_eq(abd_record_decode(again, (size_t)len, &back, &why), -EBADMSG);
	cr_assert_str_eq(why, "1.1 record without a pidfs inode");
	memcpy(again, buf, (size_t)len);
	again[12] = ABD__HEADER_LEN;
	fix_crc(again, (size_t)len);
	cr_assert_eq(abd_record_decode(again, (size_t)len, &back, &why), -EBADMSG);
	cr_assert_str_eq(why, "bad header length");
	abd_record_free(rec);
}

ABD_TEST(registry, decode_accepts_a_later_minor)
{
	/* A 1.2 record: a longer header and a trailing extension, both skipped by a 1.1 reader. */
	struct abd_record *rec = full_record();
	uint8_t buf[4096], newer[4096];
	long len = abd_record_encode(rec, buf, sizeof(buf));
	const size_t extra_h = 8, extra_t = 5;
	size_t nlen = (size_t)len + extra_h + extra_t;
	memcpy(newer, buf, ABD__HEADER_LEN);
	memset(newer + ABD__HEADER_LEN, 0xEE, extra_h);
	memcpy(newer + ABD__HEADER_LEN + extra_h, buf + ABD__HEADER_LEN,
	       (size_t)len - ABD__HEADER_LEN - 4);
	memset(newer + nlen - 4 - extra_t, 0xDD, extra_t);
	newer[6] = 2; /* minor */
	uint32_t total = (uint32_t)nlen;
	memcpy(newer + 8, &total, 4);
	uint16_t hlen = (uint16_t)(ABD__HEADER_LEN + extra_h);
	memcpy(newer + 12, &hlen, 2);
	fix_crc(newer, nlen);
	struct abd_record *back;
	const char *why = NULL;
	cr_assert_eq(abd_record_decode(newer, nlen, &back, &why), 0, "%s", why);
	cr_assert_str_eq(abd_record_service(back), "svc.full");
	cr_assert_str_eq(abd_record_meta(back, "owner"), "camera team");
	cr_assert_eq(abd_record_pidfs_ino(back), 0xEEEEEEEEEEEEEEEEu, "1.1's field is read");
	abd_record_free(back);
	/* The same bytes claiming minor 0 or 1 are refused: 1.0 and 1.1 are exact. */
	newer[6] = 0;
	fix_crc(newer, nlen);
	cr_assert_eq(abd_record_decode(newer, nlen, &back, &why), -EBADMSG);
	newer[6] = 1;
	fix_crc(newer, nlen);
	cr_assert_eq(abd_record_decode(newer, nlen, &back, &why), -EBADMSG);
	abd_record_free(rec);
}

/* ------------------------------------------------------------------ directory rules -- */

ABD_TEST(registry, directory_rules)
{
	char dir[256], path[300], why[512];
	abd_test_mkdtemp(dir, sizeof(dir));
	struct abd_registry *reg = NULL;

	snprintf(path, sizeof(path), "%s/missing", dir);
	cr_assert_eq(abd_registry_open(path, 0, &reg, why, sizeof(why)), -ENOENT);
	cr_assert_eq(abd_registry_open(path, ABD_REGISTRY_CREATE, &reg, why, sizeof(why)), 0, "%s",
	             why);
	struct stat st;
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0700);
	cr_assert_str_eq(abd_registry_path(reg), path);
	cr_assert_geq(abd_registry_fd(reg), 0);
	cr_assert_str_eq(abd_fs_type_name(abd_registry_fs_type(reg)), "tmpfs");
	abd_registry_free(reg);

	snprintf(path, sizeof(path), "%s/shared", dir);
	cr_assert_eq(abd_registry_open(path, ABD_REGISTRY_CREATE | ABD_REGISTRY_SHARED, &reg, why,
	                               sizeof(why)), 0, "%s", why);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 01777);
	abd_registry_free(reg);

	/* World-writable without the sticky bit: refused, and the reason says why. */
	cr_assert_eq(chmod(path, 0777), 0);
	cr_assert_eq(abd_registry_open(path, 0, &reg, why, sizeof(why)), -EPERM);
	cr_assert_null(reg);
	cr_assert_not_null(strstr(why, "sticky"), "%s", why);

	/* Owned by another, non-root user: refused. */
	if (geteuid() == 0) {
		cr_assert_eq(chmod(path, 0755), 0);
		cr_assert_eq(chown(path, 4321, 4321), 0);
		cr_assert_eq(abd_registry_open(path, 0, &reg, why, sizeof(why)), -EPERM);
		cr_assert_not_null(strstr(why, "uid 4321"), "%s", why);
	}

	snprintf(path, sizeof(path), "%s/file", dir);
	close(open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
	cr_assert_eq(abd_registry_open(path, 0, &reg, why, sizeof(why)), -ENOTDIR);

	/* $ABD_REGISTRY chooses when dir is NULL. */
	snprintf(path, sizeof(path), "%s/env", dir);
	setenv("ABD_REGISTRY", path, 1);
	cr_assert_eq(abd_registry_open(NULL, 0, &reg, why, sizeof(why)), 0, "%s", why);
	cr_assert_str_eq(abd_registry_path(reg), path);
	abd_registry_free(reg);
	unsetenv("ABD_REGISTRY");

	cr_assert_eq(abd_registry_open(dir, 0x80, &reg, NULL, 0), -EINVAL);
	cr_assert_eq(abd_registry_open("", 0, &reg, NULL, 0), -EINVAL);
	cr_assert_eq(abd_registry_open(dir, 0, NULL, NULL, 0), -EINVAL);
	abd_test_rmtree(dir);
}

/* A filesystem without O_TMPFILE: bpffs, mounted in a private mount namespace. */
static int no_tmpfile_child(void *arg)
{
	const char *dir = arg;
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return 77;
	if (mount("none", dir, "bpf", 0, NULL) < 0)
		return 77;
	struct abd_registry *reg;
	if (abd_registry_open(dir, 0, &reg, NULL, 0) < 0)
		return 2;
	struct abd_record *rec;
	struct abd_publication *pub;
	abd_record_new("x", &rec);
	int r = abd_publish(reg, rec, &pub);
	int ok = r == -EOPNOTSUPP && strcmp(abd_fs_type_name(abd_registry_fs_type(reg)), "bpf") == 0;
	abd_record_free(rec);
	abd_registry_free(reg);
	return ok ? 0 : 3;
}

ABD_TEST(registry, no_tmpfile_is_eopnotsupp)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to mount a filesystem without O_TMPFILE");
	char dir[256];
	abd_test_mkdtemp(dir, sizeof(dir));
	int st = abd_test_wait(abd_test_fork(no_tmpfile_child, dir));
	abd_test_rmtree(dir);
	if (st == 77)
		cr_skip_test("cannot mount bpffs in a private mount namespace here");
	cr_assert_eq(st, 0, "publish on bpffs: status %d", st);
}

/* ------------------------------------------------------------------ publish & read -- */

ABD_TEST(registry, publish_enumerate_withdraw)
{
	struct scratch s;
	scratch_open(&s);
	/* A directory others can reach (a private one skips the fchmod: nobody else could read
	 * the record anyway)... */
	abd_registry_free(s.reg);
	cr_assert_eq(chmod(s.dir, 01777), 0);
	cr_assert_eq(abd_registry_open(s.dir, 0, &s.reg, NULL, 0), 0);
	umask(077); /* ...where the record must stay readable by others whatever the umask */
	struct abd_record *rec;
	cr_assert_eq(abd_record_new("camera.frames", &rec), 0);
	cr_assert_eq(abd_record_add_meta(rec, "fps", "30"), 0);
	struct abd_publication *a, *b;
	cr_assert_eq(abd_publish(s.reg, rec, &a), 0);
	cr_assert_eq(abd_publish(s.reg, rec, &b), 0);
	umask(022);
	abd_record_free(rec);
	struct abd_publication *c = publish_simple(s.reg, "other");

	char name[ABD_RECORD_NAME_MAX + 1];
	snprintf(name, sizeof(name), "%s", abd_publication_name(a));
	cr_assert_eq(strncmp(name, "camera.frames.", 14), 0);
	cr_assert_eq(strlen(name), 14 + 32);
	cr_assert_neq(strcmp(name, abd_publication_name(b)), 0, "instance ids must differ");
	char path[600];
	snprintf(path, sizeof(path), "%s/%s", s.dir, name);
	struct stat st;
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0644);
	cr_assert_eq(st.st_nlink, 1);

	struct abd_snapshot *snap;
	cr_assert_eq(abd_registry_snapshot(s.reg, &snap), 0);
	cr_assert_eq(abd_snapshot_count(snap), 3);
	for (size_t i = 0; i < 3; i++) {
		const struct abd_entry *e = abd_snapshot_entry(snap, i);
		cr_assert_eq(e->state, ABD_STATE_ALIVE, "%s: %s", e->name, e->reason);
		cr_assert_eq(e->pid, getpid());
		cr_assert_eq(e->uid, geteuid());
		cr_assert_null(e->reason);
		cr_assert_not_null(e->record);
		if (i)
			cr_assert_lt(strcmp(abd_snapshot_entry(snap, i - 1)->name, e->name), 0);
	}
	cr_assert_null(abd_snapshot_entry(snap, 3));
	abd_snapshot_free(snap);

	struct abd_record *found;
	cr_assert_eq(abd_registry_lookup(s.reg, "camera.frames", &found), 0);
	cr_assert_eq(memcmp(abd_record_instance(found), abd_record_instance(abd_publication_record(b)),
	                    ABD_INSTANCE_SIZE), 0, "lookup picks the latest publication");
	cr_assert_str_eq(abd_record_meta(found, "fps"), "30");
	uint64_t start = abd_record_start_time(found);
	cr_assert_gt(start, 0);
	abd_record_free(found);
	cr_assert_eq(abd_registry_lookup(s.reg, "absent", &found), -ENOENT);
	cr_assert_eq(abd_registry_lookup(s.reg, "../x", &found), -EINVAL);
	cr_assert_eq(abd_registry_liveness(s.reg, name), ABD_STATE_ALIVE);

	cr_assert_eq(abd_withdraw(a), 0);
	cr_assert_eq(abd_registry_liveness(s.reg, name), -ENOENT);
	cr_assert_eq(abd_withdraw(b), 0);
	cr_assert_eq(abd_withdraw(c), 0);
	cr_assert_eq(abd_withdraw(NULL), 0);
	cr_assert_eq(count_state(s.reg, 0), 0);
	scratch_close(&s);
}

ABD_TEST(registry, death_makes_stale_and_gc_removes)
{
	struct scratch s;
	scratch_open(&s);
	char dead[128], live[128];
	int hold_dead, hold_live;
	pid_t pd = spawn_publisher(s.dir, "svc.dead", 0, dead, sizeof(dead), &hold_dead);
	pid_t pl = spawn_publisher(s.dir, "svc.live", 1, live, sizeof(live), &hold_live);
	cr_assert_eq(abd_registry_liveness(s.reg, dead), ABD_STATE_ALIVE);
	kill(pd, SIGKILL);
	cr_assert_eq(abd_test_wait(pd), 128 + SIGKILL);
	close(hold_dead);
	cr_assert_eq(abd_registry_liveness(s.reg, dead), ABD_STATE_STALE);
	cr_assert_eq(abd_registry_liveness(s.reg, live), ABD_STATE_ALIVE);
	cr_assert_eq(count_state(s.reg, ABD_STATE_STALE), 1);
	unsigned failed = 99;
	cr_assert_eq(abd_registry_gc(s.reg, &failed), 1);
	cr_assert_eq(failed, 0);
	cr_assert_eq(abd_registry_liveness(s.reg, dead), -ENOENT);
	cr_assert_eq(abd_registry_liveness(s.reg, live), ABD_STATE_ALIVE);
	cr_assert_eq(abd_registry_gc(s.reg, NULL), 0);
	close(hold_live);
	cr_assert_eq(abd_test_wait(pl), 0);
	cr_assert_eq(count_state(s.reg, 0), 0);
	scratch_close(&s);
}

/* Write a crafted record file named name (or its proper name when NULL) into dir. */
static void craft(struct scratch *s, struct abd_record *rec, const char *name, bool lock,
                  int *keep_fd)
{
	uint8_t buf[4096];
	long len = abd_record_encode(rec, buf, sizeof(buf));
	cr_assert_gt(len, 0);
	char proper[ABD_RECORD_NAME_MAX + 1];
	if (!name) {
		int o = snprintf(proper, sizeof(proper), "%s.", rec->service);
		for (int i = 0; i < ABD_INSTANCE_SIZE; i++)
			o += snprintf(proper + o, sizeof(proper) - (size_t)o, "%02x", rec->instance[i]);
		name = proper;
	}
	int fd = openat(abd_registry_fd(s->reg), name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0644);
	cr_assert_geq(fd, 0, "create %s: %s", name, strerror(errno));
	cr_assert_eq(write(fd, buf, (size_t)len), len);
	if (lock) {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
		cr_assert_eq(fcntl(fd, F_OFD_SETLK, &fl), 0);
	}
	if (keep_fd)
		*keep_fd = fd;
	else
		close(fd);
}

static struct abd_record *self_record(const char *service, uint8_t seed)
{
	struct abd_record *rec;
	cr_assert_eq(abd_record_new(service, &rec), 0);
	rec->pid = getpid();
	rec->uid = geteuid();
	uint64_t start;
	uid_t uid;
	cr_assert_eq(abd__proc_lookup(getpid(), &start, &uid), 1);
	rec->start_time = start;
	struct stat st;
	cr_assert_eq(stat("/proc/self/ns/pid", &st), 0);
	rec->pidns_dev = st.st_dev;
	rec->pidns_ino = st.st_ino;
	memset(rec->instance, seed, sizeof(rec->instance));
	return rec;
}

static const struct abd_entry *find_entry(struct abd_snapshot *snap, const char *name)
{
	for (size_t i = 0; i < abd_snapshot_count(snap); i++)
		if (strcmp(abd_snapshot_entry(snap, i)->name, name) == 0)
			return abd_snapshot_entry(snap, i);
	return NULL;
}

static void expect_invalid(struct abd_snapshot *snap, const char *name, const char *reason_part)
{
	const struct abd_entry *e = find_entry(snap, name);
	cr_assert_not_null(e, "entry %s not reported", name);
	cr_assert_eq(e->state, ABD_STATE_INVALID, "%s: state %s", name, abd_state_name(e->state));
	cr_assert_not_null(e->reason);
	cr_assert_not_null(strstr(e->reason, reason_part), "%s: reason '%s' lacks '%s'", name,
	                   e->reason, reason_part);
	cr_assert_null(e->record);
}

/* pad: genuine records published beside the hostile entries, so that a snapshot of the
 * directory takes the batched path (past 64 entries: io_uring where the profile has it). */
static void hostile_entries(size_t pad)
{
	struct scratch s;
	scratch_open(&s);
	int dfd = abd_registry_fd(s.reg);
	const char *hex = "00112233445566778899aabbccddeeff";
	char name[128];

	/* One genuine record, which must stay alive through all of it. */
	struct abd_publication *good = publish_simple(s.reg, "good");
	struct abd_publication **pads = pad ? calloc(pad, sizeof(*pads)) : NULL;
	for (size_t i = 0; i < pad; i++)
		pads[i] = publish_simple(s.reg, "pad");

	/* Garbage and empty files with proper names. */
	snprintf(name, sizeof(name), "garbage.%s", hex);
	int fd = openat(dfd, name, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	cr_assert_eq(write(fd, "hello, world, this is not a record", 34), 34);
	close(fd);
	snprintf(name, sizeof(name), "empty.%s", hex);
	close(openat(dfd, name, O_CREAT | O_WRONLY | O_CLOEXEC, 0644));

	/* Truncated: a real record cut short. */
	struct abd_record *rec = self_record("trunc", 1);
	uint8_t buf[4096];
	long len = abd_record_encode(rec, buf, sizeof(buf));
	char tname[128];
	snprintf(tname, sizeof(tname), "trunc.%s", "01010101010101010101010101010101");
	fd = openat(dfd, tname, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	cr_assert_eq(write(fd, buf, (size_t)len - 10), len - 10);
	close(fd);
	abd_record_free(rec);

	/* Oversized: 1 GiB, sparse; must not be read. */
	snprintf(name, sizeof(name), "huge.%s", hex);
	fd = openat(dfd, name, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	cr_assert_eq(ftruncate(fd, 1 << 30), 0);
	close(fd);

	/* A FIFO (opening it for read must not block), a socket, a directory, a device node. */
	snprintf(name, sizeof(name), "fifo.%s", hex);
	cr_assert_eq(mkfifoat(dfd, name, 0644), 0);
	snprintf(name, sizeof(name), "sock.%s", hex);
	int sk = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", s.dir, name);
	cr_assert_eq(bind(sk, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(sk);
	snprintf(name, sizeof(name), "dir.%s", hex);
	cr_assert_eq(mkdirat(dfd, name, 0755), 0);
	bool have_dev = false;
	snprintf(name, sizeof(name), "dev.%s", hex);
	if (mknodat(dfd, name, S_IFCHR | 0644, makedev(1, 3)) == 0)
		have_dev = true;

	/* A symlink to the good record, and a hard link to another valid record. */
	snprintf(name, sizeof(name), "link.%s", hex);
	cr_assert_eq(symlinkat(abd_publication_name(good), dfd, name), 0);
	int keep_hl;
	rec = self_record("hl", 2);
	craft(&s, rec, NULL, true, &keep_hl);
	char hlname[128], hl2[128];
	snprintf(hlname, sizeof(hlname), "hl.%s", "02020202020202020202020202020202");
	snprintf(hl2, sizeof(hl2), "hl.%s", "02020202020202020202020202020203");
	cr_assert_eq(linkat(dfd, hlname, dfd, hl2, 0), 0);
	abd_record_free(rec);

	/* A record from a future major version. */
	rec = self_record("future", 3);
	len = abd_record_encode(rec, buf, sizeof(buf));
	buf[4] = 9;
	fix_crc(buf, (size_t)len);
	char fname[128];
	snprintf(fname, sizeof(fname), "future.%s", "03030303030303030303030303030303");
	fd = openat(dfd, fname, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	cr_assert_eq(write(fd, buf, (size_t)len), len);
	close(fd);
	abd_record_free(rec);

	/* Names outside the grammar. */
	close(openat(dfd, ".hidden", O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
	close(openat(dfd, "no-instance", O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
	close(openat(dfd, "bad name.00112233445566778899aabbccddeeff", O_CREAT | O_WRONLY | O_CLOEXEC,
	             0644));
	close(openat(dfd, "x.00112233445566778899AABBCCDDEEFF", O_CREAT | O_WRONLY | O_CLOEXEC, 0644));

	/* A valid record under a name that is not its own. */
	rec = self_record("mismatch", 4);
	char mname[128];
	snprintf(mname, sizeof(mname), "mismatch.%s", "05050505050505050505050505050505");
	int keep_m;
	craft(&s, rec, mname, true, &keep_m);
	abd_record_free(rec);

	/* An owner that does not match the uid the record claims, and a record naming a process
	 * that runs as another uid. */
	int keep_o = -1, keep_p = -1;
	char oname[128], pname[128];
	snprintf(oname, sizeof(oname), "owner.%s", "06060606060606060606060606060606");
	snprintf(pname, sizeof(pname), "proc.%s", "07070707070707070707070707070707");
	if (geteuid() == 0) {
		rec = self_record("owner", 6);
		rec->uid = 1234;
		craft(&s, rec, NULL, true, &keep_o);
		abd_record_free(rec);
		rec = self_record("proc", 7);
		rec->uid = 4321;
		craft(&s, rec, NULL, true, &keep_p);
		cr_assert_eq(fchownat(dfd, pname, 4321, 4321, 0), 0);
		abd_record_free(rec);
	}

	unsigned batched = abd__snapshots_uring();
	struct abd_snapshot *snap;
	cr_assert_eq(abd_registry_snapshot(s.reg, &snap), 0);
	/* The path the snapshot took: batched through io_uring exactly when the directory is big
	 * and the profile has io_uring (the linux-5.4 and no-io_uring profiles take the other). */
	bool uring = ABD_HAVE_LIBURING && pad && abd_probe_has(ABD_FEAT_IO_URING) == 1 &&
	             abd_probe_has(ABD_FEAT_URING_READ) == 1;
	cr_assert_eq(abd__snapshots_uring() - batched, uring ? 1u : 0u);
	const struct abd_entry *g = find_entry(snap, abd_publication_name(good));
	cr_assert_not_null(g);
	cr_assert_eq(g->state, ABD_STATE_ALIVE);
	for (size_t i = 0; i < pad; i++) {
		const struct abd_entry *e = find_entry(snap, abd_publication_name(pads[i]));
		cr_assert(e && e->state == ABD_STATE_ALIVE);
	}
	snprintf(name, sizeof(name), "garbage.%s", hex);
	expect_invalid(snap, name, "bad magic");
	snprintf(name, sizeof(name), "empty.%s", hex);
	expect_invalid(snap, name, "truncated");
	expect_invalid(snap, tname, "truncated");
	snprintf(name, sizeof(name), "huge.%s", hex);
	expect_invalid(snap, name, "oversized");
	snprintf(name, sizeof(name), "fifo.%s", hex);
	expect_invalid(snap, name, "FIFO");
	snprintf(name, sizeof(name), "sock.%s", hex);
	expect_invalid(snap, name, "socket");
	snprintf(name, sizeof(name), "dir.%s", hex);
	expect_invalid(snap, name, "directory");
	if (have_dev) {
		snprintf(name, sizeof(name), "dev.%s", hex);
		expect_invalid(snap, name, "device");
	}
	snprintf(name, sizeof(name), "link.%s", hex);
	expect_invalid(snap, name, "symlink");
	expect_invalid(snap, hlname, "hard links");
	expect_invalid(snap, hl2, "hard links");
	expect_invalid(snap, fname, "future version");
	expect_invalid(snap, ".hidden", "grammar");
	expect_invalid(snap, "no-instance", "grammar");
	expect_invalid(snap, "bad name.00112233445566778899aabbccddeeff", "grammar");
	expect_invalid(snap, "x.00112233445566778899AABBCCDDEEFF", "grammar");
	expect_invalid(snap, mname, "does not match");
	if (geteuid() == 0) {
		expect_invalid(snap, oname, "claims uid 1234");
		expect_invalid(snap, pname, "runs as uid 0");
	}
	abd_snapshot_free(snap);

	/* GC removes none of them: they are not stale records. */
	cr_assert_eq(abd_registry_gc(s.reg, NULL), 0);
	/* A watch reports them the same way. */
	struct abd_watch *w;
	cr_assert_eq(abd_watch_new(s.reg, 0, &w), 0);
	cr_assert_eq(abd_watch_process(w, NULL, NULL), (int)abd_watch_count(w));
	for (size_t i = 0; i < abd_watch_count(w); i++) {
		const struct abd_entry *e = abd_watch_entry(w, i);
		bool genuine = strcmp(e->name, abd_publication_name(good)) == 0 ||
		               strncmp(e->name, "pad.", 4) == 0;
		cr_assert_eq(e->state, genuine ? ABD_STATE_ALIVE : ABD_STATE_INVALID, "%s", e->name);
	}
	abd_watch_free(w);

	close(keep_hl);
	close(keep_m);
	abd__close(keep_o);
	abd__close(keep_p);
	abd_withdraw(good);
	for (size_t i = 0; i < pad; i++)
		abd_withdraw(pads[i]);
	free(pads);
	scratch_close(&s);
}

ABD_TEST(registry, hostile_entries_are_reported_never_followed)
{
	hostile_entries(0);
}

ABD_TEST(registry, hostile_entries_in_a_big_directory)
{
	/* The same entries among 100 genuine records: the batched reading must report every one
	 * as the one-by-one reading does. */
	hostile_entries(100);
}

ABD_TEST(registry, reused_pid_cannot_fake_liveness)
{
	/* A record that names a live process (us, with our true start time) but whose lock
	 * nobody holds: stale. Only the lock speaks for the publisher. */
	struct scratch s;
	scratch_open(&s);
	struct abd_record *rec = self_record("reused", 9);
	craft(&s, rec, NULL, false, NULL);
	abd_record_free(rec);
	cr_assert_eq(count_state(s.reg, ABD_STATE_STALE), 1);
	cr_assert_eq(abd_registry_gc(s.reg, NULL), 1);
	scratch_close(&s);
}

/* ------------------------------------------------------------------ watching -- */

struct seen {
	int added, removed, died;
	char last[256];
	enum abd_state last_state;
};

static void on_event(void *ud, enum abd_event_type type, const struct abd_entry *e)
{
	struct seen *s = ud;
	if (type == ABD_EVENT_ADDED)
		s->added++;
	else if (type == ABD_EVENT_REMOVED)
		s->removed++;
	else if (type == ABD_EVENT_DIED)
		s->died++;
	snprintf(s->last, sizeof(s->last), "%s", e->name);
	s->last_state = e->state;
}

/* Block on the watch fd (the point: no polling) until at least one event. */
static void wait_events(struct abd_watch *w, struct seen *seen)
{
	for (int spins = 0; spins < 1000; spins++) {
		struct pollfd pfd = { .fd = abd_watch_fd(w), .events = POLLIN };
		cr_assert_eq(poll(&pfd, 1, 10000), 1, "no notification within 10 s");
		int n = abd_watch_process(w, on_event, seen);
		cr_assert_geq(n, 0, "abd_watch_process: %s", strerror(-n));
		if (n > 0)
			return;
	}
	cr_assert_fail("woken 1000 times without an event");
}

static void watch_lifecycle(unsigned flags)
{
	struct scratch s;
	scratch_open(&s);
	struct abd_publication *before = publish_simple(s.reg, "before");
	struct abd_watch *w;
	cr_assert_eq(abd_watch_new(s.reg, flags, &w), 0);
	struct seen seen = { 0 };
	cr_assert_eq(abd_watch_process(w, on_event, &seen), 1, "initial state as added");
	cr_assert_eq(seen.added, 1);

	char name[128];
	int hold;
	pid_t pid = spawn_publisher(s.dir, "svc.watch", 1, name, sizeof(name), &hold);
	wait_events(w, &seen);
	cr_assert_eq(seen.added, 2);
	cr_assert_str_eq(seen.last, name);
	cr_assert_eq(seen.last_state, ABD_STATE_ALIVE);
	close(hold); /* the child withdraws */
	cr_assert_eq(abd_test_wait(pid), 0);
	while (seen.removed < 1)
		wait_events(w, &seen);
	cr_assert_eq(seen.died, 0, "a withdrawal is not a death");

	pid = spawn_publisher(s.dir, "svc.victim", 0, name, sizeof(name), &hold);
	while (seen.added < 3)
		wait_events(w, &seen);
	kill(pid, SIGKILL);
	while (seen.died < 1)
		wait_events(w, &seen);
	cr_assert_str_eq(seen.last, name);
	cr_assert_eq(seen.last_state, ABD_STATE_STALE);
	cr_assert_eq(abd_test_wait(pid), 128 + SIGKILL);
	close(hold);
	cr_assert_eq(abd_registry_gc(s.reg, NULL), 1);
	while (seen.removed < 2)
		wait_events(w, &seen);
	cr_assert_eq(abd_watch_count(w), 1);
	cr_assert_str_eq(abd_watch_entry(w, 0)->name, abd_publication_name(before));
	abd_watch_free(w);
	abd_withdraw(before);
	scratch_close(&s);
}

ABD_TEST(registry, watch_added_removed_died)
{
	watch_lifecycle(0);
}

ABD_TEST(registry, watch_with_pidfds)
{
	abd_test_require(ABD_FEAT_PIDFD_OPEN);
	watch_lifecycle(ABD_WATCH_PIDFD);
}

ABD_TEST(registry, bad_arguments)
{
	struct abd_record *rec;
	cr_assert_eq(abd_record_new("x", NULL), -EINVAL);
	cr_assert_eq(abd_record_new(NULL, &rec), -EINVAL);
	cr_assert_eq(abd_record_decode(NULL, 10, &rec, NULL), -EINVAL);
	cr_assert_eq(abd_record_decode("", 0, NULL, NULL), -EINVAL);
	struct abd_publication *pub;
	cr_assert_eq(abd_publish(NULL, NULL, &pub), -EINVAL);
	cr_assert_eq(abd_publish(NULL, NULL, NULL), -EINVAL);
	struct abd_snapshot *snap;
	cr_assert_eq(abd_registry_snapshot(NULL, &snap), -EINVAL);
	cr_assert_eq(abd_registry_gc(NULL, NULL), -EINVAL);
	struct abd_watch *w;
	cr_assert_eq(abd_watch_new(NULL, 0, &w), -EINVAL);
	cr_assert_eq(abd_watch_process(NULL, NULL, NULL), -EINVAL);
	cr_assert_eq(abd_registry_liveness(NULL, "x"), -EINVAL);
	abd_registry_free(NULL);
	abd_record_free(NULL);
	abd_snapshot_free(NULL);
	abd_watch_free(NULL);
	cr_assert_str_eq(abd_state_name(ABD_STATE_STALE), "stale");
	cr_assert_str_eq(abd_event_name(ABD_EVENT_DIED), "died");
	cr_assert_null(abd_event_name((enum abd_event_type)0));
}

static int publish_many_and_die(void *arg)
{
	const char *dir = arg;
	struct abd_registry *reg;
	if (abd_registry_open(dir, 0, &reg, NULL, 0) < 0)
		return 10;
	struct abd_record *rec;
	abd_record_new("many.dead", &rec);
	for (int i = 0; i < 40; i++) {
		struct abd_publication *pub;
		if (abd_publish(reg, rec, &pub) < 0)
			return 11;
	}
	_exit(0); /* without withdrawing: 40 stale records */
}

static void scribble_stack(void)
{
	volatile char junk[4096];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = 'x';
}

ABD_TEST(registry, watch_keeps_the_reason_of_invalid_entries)
{
	/* The reason of an invalid entry lives in the watch's own copy of the entry, not in a
	 * temporary gone by the time the caller asks. */
	struct scratch s;
	scratch_open(&s);
	int fd = openat(abd_registry_fd(s.reg), "bad.00000000000000000000000000000000",
	                O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "garbage", 7), 7);
	close(fd);
	struct abd_watch *w;
	cr_assert_eq(abd_watch_new(s.reg, 0, &w), 0);
	cr_assert_geq(abd_watch_process(w, NULL, NULL), 0);
	/* a name arriving later goes through the event path (reconcile) */
	fd = openat(abd_registry_fd(s.reg), "bad.11111111111111111111111111111111",
	            O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	cr_assert_geq(fd, 0);
	close(fd);
	for (int i = 0; i < 100 && abd_watch_count(w) < 2; i++) {
		struct pollfd p = { abd_watch_fd(w), POLLIN, 0 };
		poll(&p, 1, 100);
		cr_assert_geq(abd_watch_process(w, NULL, NULL), 0);
	}
	cr_assert_eq(abd_watch_count(w), 2);
	scribble_stack();
	for (size_t i = 0; i < abd_watch_count(w); i++) {
		const struct abd_entry *e = abd_watch_entry(w, i);
		cr_assert_eq(e->state, ABD_STATE_INVALID);
		cr_assert_not_null(e->reason);
		cr_assert(strstr(e->reason, "malformed") || strstr(e->reason, "record"), "%s: %s",
		          e->name, e->reason);
	}
	abd_watch_free(w);
	scratch_close(&s);
}

static int publish_and_report(void *arg)
{
	int *p = arg;
	struct abd_registry *reg;
	char dir[64];
	if (read(p[0], dir, sizeof(dir)) != (ssize_t)sizeof(dir) ||
	    abd_registry_open(dir, 0, &reg, NULL, 0) < 0)
		return 1;
	struct abd_record *rec;
	struct abd_publication *pub;
	if (abd_record_new("fork.child", &rec) < 0 || abd_publish(reg, rec, &pub) < 0)
		return 2;
	const uint8_t *id = abd_record_instance(abd_publication_record(pub));
	if (write(p[1], id, ABD_INSTANCE_SIZE) != ABD_INSTANCE_SIZE)
		return 3;
	abd_withdraw(pub);
	abd_record_free(rec);
	abd_registry_free(reg);
	return 0;
}

ABD_TEST(registry, forked_child_draws_its_own_instances)
{
	/* Instance ids come from a per-process pool: a child forked after the parent drew from it
	 * must not hand out the parent's next ids. */
	struct scratch s;
	scratch_open(&s);
	struct abd_publication *first = publish_simple(s.reg, "fork.parent");
	int to_child[2], from_child[2];
	cr_assert_eq(pipe2(to_child, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(from_child, O_CLOEXEC), 0);
	int ends[2] = { to_child[0], from_child[1] };
	pid_t pid = abd_test_fork(publish_and_report, ends);
	close(to_child[0]);
	close(from_child[1]);
	char dir[64] = { 0 };
	snprintf(dir, sizeof(dir), "%s", s.dir);
	cr_assert_eq(write(to_child[1], dir, sizeof(dir)), (ssize_t)sizeof(dir));
	uint8_t child_id[ABD_INSTANCE_SIZE];
	cr_assert_eq(read(from_child[0], child_id, sizeof(child_id)), (ssize_t)sizeof(child_id));
	cr_assert_eq(abd_test_wait(pid), 0);
	close(to_child[1]);
	close(from_child[0]);
	struct abd_publication *second = publish_simple(s.reg, "fork.parent");
	cr_assert_neq(memcmp(child_id, abd_record_instance(abd_publication_record(second)),
	                     ABD_INSTANCE_SIZE), 0, "the child handed out the parent's next id");
	cr_assert_neq(memcmp(abd_record_instance(abd_publication_record(first)),
	                     abd_record_instance(abd_publication_record(second)), ABD_INSTANCE_SIZE), 0);
	abd_withdraw(first);
	abd_withdraw(second);
	scratch_close(&s);
}

ABD_TEST(registry, child_without_atfork_publishes_its_own_pid)
{
	/* The publisher's pid is cached (runtime/registry.c, self_pid): a child made by _Fork(),
	 * which runs no atfork handler, must still publish its own pid and its own instance ids,
	 * whatever the parent had cached before. */
	struct scratch s;
	scratch_open(&s);
	struct abd_publication *first = publish_simple(s.reg, "nofork.parent");
	int p[2];
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	pid_t pid = _Fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct abd_record *rec;
		struct abd_publication *pub;
		int32_t out[1 + ABD_INSTANCE_SIZE / 4] = { 0 };
		if (abd_record_new("nofork.child", &rec) == 0 && abd_publish(s.reg, rec, &pub) == 0) {
			out[0] = abd_record_pid(abd_publication_record(pub));
			memcpy(&out[1], abd_record_instance(abd_publication_record(pub)), ABD_INSTANCE_SIZE);
		}
		_exit(write(p[1], out, sizeof(out)) == (ssize_t)sizeof(out) ? 0 : 1);
	}
	close(p[1]);
	int32_t got[1 + ABD_INSTANCE_SIZE / 4];
	cr_assert_eq(read(p[0], got, sizeof(got)), (ssize_t)sizeof(got));
	close(p[0]);
	int status;
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	cr_assert_eq(got[0], pid, "the child published pid %d, it is %d", (int)got[0], (int)pid);
	struct abd_publication *second = publish_simple(s.reg, "nofork.parent");
	cr_assert_eq(abd_record_pid(abd_publication_record(second)), getpid());
	cr_assert_neq(memcmp(&got[1], abd_record_instance(abd_publication_record(second)),
	                     ABD_INSTANCE_SIZE), 0, "the child handed out the parent's next id");
	abd_withdraw(first);
	abd_withdraw(second);
	abd_registry_gc(s.reg, NULL); /* the child's record: its publisher is gone */
	scratch_close(&s);
}

static int snapshot_short_of_fds(void *arg)
{
	const char *dir = arg;
	struct abd_registry *reg;
	if (abd_registry_open(dir, 0, &reg, NULL, 0) < 0)
		return 10;
	/* Room for a few descriptors only: most batched opens fail with EMFILE. */
	int probe = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (probe < 0)
		return 11;
	close(probe);
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = (rlim_t)probe + 8;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 12;
	struct abd_snapshot *snap;
	if (abd_registry_snapshot(reg, &snap) < 0)
		return 13;
	int alive = 0;
	for (size_t i = 0; i < abd_snapshot_count(snap); i++)
		alive += abd_snapshot_entry(snap, i)->state == ABD_STATE_ALIVE;
	abd_snapshot_free(snap);
	abd_registry_free(reg);
	return alive == 100 ? 0 : 20;
}

ABD_TEST(registry, big_snapshot_short_of_descriptors_reads_every_record)
{
	/* A batch opens many records at once; those refused for lack of descriptors are read one
	 * by one after the batch closed its own, not reported invalid. */
	struct scratch s;
	scratch_open(&s);
	struct abd_publication *pubs[100];
	for (int i = 0; i < 100; i++)
		pubs[i] = publish_simple(s.reg, "fds.alive");
	cr_assert_eq(abd_test_wait(abd_test_fork(snapshot_short_of_fds, s.dir)), 0);
	for (int i = 0; i < 100; i++)
		abd_withdraw(pubs[i]);
	scratch_close(&s);
}

ABD_TEST(registry, big_directory_states)
{
	/* Past 64 entries a snapshot reads the records another way (batched through io_uring
	 * where the profile has it): the states must not change. */
	struct scratch s;
	scratch_open(&s);
	struct abd_publication *pubs[40];
	for (int i = 0; i < 40; i++)
		pubs[i] = publish_simple(s.reg, "many.alive");
	cr_assert_eq(abd_test_wait(abd_test_fork(publish_many_and_die, s.dir)), 0);
	cr_assert_eq(count_state(s.reg, ABD_STATE_ALIVE), 40);
	cr_assert_eq(count_state(s.reg, ABD_STATE_STALE), 40);
	/* A flock() on a stale record is not the publisher's OFD lock (F_OFD_GETLK does not see
	 * it, and neither may the lock table): it stays stale. */
	struct abd_snapshot *snap;
	cr_assert_eq(abd_registry_snapshot(s.reg, &snap), 0);
	int held = -1;
	for (size_t i = 0; i < abd_snapshot_count(snap) && held < 0; i++)
		if (abd_snapshot_entry(snap, i)->state == ABD_STATE_STALE)
			held = openat(abd_registry_fd(s.reg), abd_snapshot_entry(snap, i)->name,
			              O_RDONLY | O_CLOEXEC);
	abd_snapshot_free(snap);
	cr_assert_geq(held, 0);
	cr_assert_eq(flock(held, LOCK_SH), 0);
	cr_assert_eq(count_state(s.reg, ABD_STATE_STALE), 40);
	close(held);
	for (int i = 0; i < 20; i++)
		abd_withdraw(pubs[i]);
	cr_assert_eq(count_state(s.reg, ABD_STATE_ALIVE), 20);
	cr_assert_eq(abd_registry_gc(s.reg, NULL), 40);
	for (int i = 20; i < 40; i++)
		abd_withdraw(pubs[i]);
	cr_assert_eq(count_state(s.reg, 0), 0);
	scratch_close(&s);
}

/* ------------------------------------------------------------------ staged publication -- */

/* Directory entries other than "." and "..": what any reader could find, abd or not. */
static int names_in(const char *dir)
{
	DIR *d = opendir(dir);
	cr_assert_not_null(d);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	return n;
}

ABD_TEST(registry, staged_publish_is_invisible_until_commit)
{
	struct scratch s;
	scratch_open(&s);
	struct abd_watch *w;
	cr_assert_eq(abd_watch_new(s.reg, 0, &w), 0);
	struct seen seen = { 0 };
	cr_assert_eq(abd_watch_process(w, on_event, &seen), 0);

	struct abd_record *rec;
	cr_assert_eq(abd_record_new("staged.svc", &rec), 0);
	cr_assert_eq(abd_record_add_meta(rec, "k", "v"), 0);
	struct abd_publication *pub;
	cr_assert_eq(abd_publish_prepare(s.reg, rec, &pub), 0);
	abd_record_free(rec);
	char name[ABD_RECORD_NAME_MAX + 1];
	snprintf(name, sizeof(name), "%s", abd_publication_name(pub));
	cr_assert_eq(strncmp(name, "staged.svc.", 11), 0);
	cr_assert_geq(abd_publication_fd(pub), 0);

	/* Prepared: complete, locked, and nowhere to be seen. */
	cr_assert_eq(names_in(s.dir), 0, "a prepared record has no name yet");
	cr_assert_eq(count_state(s.reg, 0), 0);
	cr_assert_eq(abd_registry_liveness(s.reg, name), -ENOENT);
	struct abd_record *found;
	cr_assert_eq(abd_registry_lookup(s.reg, "staged.svc", &found), -ENOENT);
	cr_assert_eq(abd_registry_gc(s.reg, NULL), 0);
	cr_assert_eq(abd_watch_process(w, on_event, &seen), 0, "the watch saw a prepared record");
	cr_assert_eq(seen.added, 0);

	cr_assert_eq(abd_publish_commit(pub), 0);
	wait_events(w, &seen);
	cr_assert_eq(seen.added, 1);
	cr_assert_str_eq(seen.last, name);
	cr_assert_eq(seen.last_state, ABD_STATE_ALIVE);
	cr_assert_eq(abd_registry_liveness(s.reg, name), ABD_STATE_ALIVE);
	cr_assert_eq(abd_registry_lookup(s.reg, "staged.svc", &found), 0);
	cr_assert_str_eq(abd_record_meta(found, "k"), "v");
	cr_assert_eq(abd_record_pid(found), getpid());
	abd_record_free(found);
	cr_assert_eq(count_state(s.reg, ABD_STATE_ALIVE), 1);

	/* A second commit changes nothing. */
	cr_assert_eq(abd_publish_commit(pub), -EALREADY);
	cr_assert_eq(names_in(s.dir), 1);
	cr_assert_eq(abd_publish_commit(NULL), -EINVAL);

	cr_assert_eq(abd_withdraw(pub), 0);
	while (seen.removed < 1)
		wait_events(w, &seen);
	cr_assert_eq(seen.died, 0);
	cr_assert_eq(names_in(s.dir), 0);
	abd_watch_free(w);
	scratch_close(&s);
}

ABD_TEST(registry, staged_publish_errors)
{
	struct scratch s;
	scratch_open(&s);
	struct abd_record *rec;
	cr_assert_eq(abd_record_new("staged.err", &rec), 0);
	struct abd_publication *pub = (void *)1;
	cr_assert_eq(abd_publish_prepare(NULL, rec, &pub), -EINVAL);
	cr_assert_null(pub);
	cr_assert_eq(abd_publish_prepare(s.reg, NULL, &pub), -EINVAL);
	cr_assert_eq(abd_publish_prepare(s.reg, rec, NULL), -EINVAL);

	/* Withdrawing a publication never committed: nothing appears, nothing is removed. */
	cr_assert_eq(abd_publish_prepare(s.reg, rec, &pub), 0);
	cr_assert_eq(abd_withdraw(pub), 0);
	cr_assert_eq(names_in(s.dir), 0);

	/* Name taken: the commit fails with -EEXIST, the holder's record is untouched, and the
	 * prepared publication can still be withdrawn without removing it. */
	struct abd_publication *holder;
	cr_assert_eq(abd_publish(s.reg, rec, &holder), 0);
	cr_assert_eq(abd_record_set_instance(rec, abd_record_instance(abd_publication_record(holder))),
	             0);
	cr_assert_eq(abd_publish_prepare(s.reg, rec, &pub), 0);
	cr_assert_str_eq(abd_publication_name(pub), abd_publication_name(holder));
	cr_assert_eq(abd_publish_commit(pub), -EEXIST);
	cr_assert_eq(abd_publish_commit(pub), -EEXIST, "a failed commit leaves it uncommitted");
	cr_assert_eq(abd_withdraw(pub), 0);
	cr_assert_eq(names_in(s.dir), 1);
	cr_assert_eq(abd_registry_liveness(s.reg, abd_publication_name(holder)), ABD_STATE_ALIVE);
	/* abd_publish itself leaves nothing behind when the name is taken. */
	cr_assert_eq(abd_publish(s.reg, rec, &pub), -EEXIST);
	cr_assert_null(pub);
	cr_assert_eq(names_in(s.dir), 1);
	cr_assert_eq(abd_withdraw(holder), 0);
	abd_record_free(rec);
	cr_assert_eq(names_in(s.dir), 0);
	scratch_close(&s);
}

/* Prepares a record, says so on the pipe and waits to be killed. */
static int prepare_and_wait(void *arg)
{
	int *ends = arg; /* [0]: the registry's directory comes here, [1]: the name goes there */
	char dir[256] = { 0 };
	if (read(ends[0], dir, sizeof(dir)) <= 0)
		return 10;
	struct abd_registry *reg;
	struct abd_record *rec;
	struct abd_publication *pub;
	if (abd_registry_open(dir, 0, &reg, NULL, 0) < 0 || abd_record_new("staged.kill", &rec) < 0 ||
	    abd_publish_prepare(reg, rec, &pub) < 0)
		return 11;
	const char *name = abd_publication_name(pub);
	if (write(ends[1], name, strlen(name) + 1) < 0)
		return 12;
	for (;;)
		pause();
}

ABD_TEST(registry, killed_between_prepare_and_commit_leaves_nothing)
{
	struct scratch s;
	scratch_open(&s);
	struct abd_watch *w;
	cr_assert_eq(abd_watch_new(s.reg, 0, &w), 0);
	struct seen seen = { 0 };
	cr_assert_eq(abd_watch_process(w, on_event, &seen), 0);
	int to_child[2], from_child[2];
	cr_assert_eq(pipe2(to_child, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(from_child, O_CLOEXEC), 0);
	int ends[2] = { to_child[0], from_child[1] };
	pid_t pid = abd_test_fork(prepare_and_wait, ends);
	close(to_child[0]);
	close(from_child[1]);
	cr_assert_eq(write(to_child[1], s.dir, strlen(s.dir) + 1), (ssize_t)strlen(s.dir) + 1);
	char name[ABD_RECORD_NAME_MAX + 1];
	ssize_t n = read(from_child[0], name, sizeof(name));
	cr_assert_gt(n, 0, "the child did not prepare (status %d)", n == 0 ? abd_test_wait(pid) : -1);
	close(to_child[1]);
	close(from_child[0]);
	cr_assert_eq(names_in(s.dir), 0);
	kill(pid, SIGKILL);
	cr_assert_eq(abd_test_wait(pid), 128 + SIGKILL);
	/* The unnamed file went with its last descriptor: no name, nothing stale, nothing to GC,
	 * no event (the close of an unnamed file names no record the watch knows). */
	cr_assert_eq(names_in(s.dir), 0);
	cr_assert_eq(count_state(s.reg, 0), 0);
	cr_assert_eq(abd_registry_gc(s.reg, NULL), 0);
	cr_assert_eq(abd_registry_liveness(s.reg, name), -ENOENT);
	cr_assert_eq(abd_watch_process(w, on_event, &seen), 0);
	cr_assert_eq(seen.added + seen.removed + seen.died, 0);
	abd_watch_free(w);
	scratch_close(&s);
}

static int commit_in_child(void *arg)
{
	struct abd_publication *pub = arg; /* the parent's, copied by fork */
	int r = abd_publish_commit(pub);
	return r == -ECHILD ? 0 : 20 + (r < 0 ? -r : 0);
}

ABD_TEST(registry, staged_commit_belongs_to_the_preparing_process)
{
	/* A child forked between prepare and commit shares the record's descriptor, but the
	 * record names the parent's pid: the child's commit is refused, the parent's works. */
	struct scratch s;
	scratch_open(&s);
	struct abd_record *rec;
	cr_assert_eq(abd_record_new("staged.fork", &rec), 0);
	struct abd_publication *pub;
	cr_assert_eq(abd_publish_prepare(s.reg, rec, &pub), 0);
	abd_record_free(rec);
	pid_t pid = abd_test_fork(commit_in_child, pub);
	cr_assert_eq(abd_test_wait(pid), 0, "the child's commit was not refused with -ECHILD");
	cr_assert_eq(names_in(s.dir), 0);
	cr_assert_eq(abd_publish_commit(pub), 0);
	struct abd_snapshot *snap;
	cr_assert_eq(abd_registry_snapshot(s.reg, &snap), 0);
	cr_assert_eq(abd_snapshot_count(snap), 1);
	const struct abd_entry *e = abd_snapshot_entry(snap, 0);
	cr_assert_eq(e->state, ABD_STATE_ALIVE, "%s", e->reason ? e->reason : "");
	cr_assert_eq(e->pid, getpid());
	abd_snapshot_free(snap);
	cr_assert_eq(abd_withdraw(pub), 0);
	scratch_close(&s);
}

/* ------------------------------------------------------------------ abd_watch_wait -- */

static void on_alarm(int sig)
{
	(void)sig;
}

static void watch_wait_lifecycle(unsigned flags)
{
	struct scratch s;
	scratch_open(&s);
	struct abd_watch *w;
	cr_assert_eq(abd_watch_new(s.reg, flags, &w), 0);
	struct seen seen = { 0 };
	cr_assert_eq(abd_watch_wait(w, 0, on_event, &seen), 0, "an empty directory, one look");
	cr_assert_eq(abd_watch_wait(w, 30, on_event, &seen), 0, "nothing within 30 ms");

	/* The publisher may come before or during the wait: either way one call reports it. */
	char name[128];
	int hold;
	pid_t pid = spawn_publisher(s.dir, "svc.wait", 1, name, sizeof(name), &hold);
	cr_assert_geq(abd_watch_wait(w, -1, on_event, &seen), 1);
	cr_assert_eq(seen.added, 1);
	cr_assert_str_eq(seen.last, name);
	cr_assert_eq(seen.last_state, ABD_STATE_ALIVE);
	/* Whatever mode the wait left its descriptor in, abd_watch_process never blocks. */
	cr_assert_eq(abd_watch_process(w, on_event, &seen), 0);
	close(hold); /* the child withdraws */
	while (seen.removed < 1)
		cr_assert_geq(abd_watch_wait(w, -1, on_event, &seen), 0);
	cr_assert_eq(abd_test_wait(pid), 0);
	cr_assert_eq(seen.died, 0);

	pid = spawn_publisher(s.dir, "svc.wait.victim", 0, name, sizeof(name), &hold);
	while (seen.added < 2)
		cr_assert_geq(abd_watch_wait(w, -1, on_event, &seen), 0);
	kill(pid, SIGKILL);
	while (seen.died < 1)
		cr_assert_geq(abd_watch_wait(w, -1, on_event, &seen), 0);
	cr_assert_str_eq(seen.last, name);
	cr_assert_eq(abd_test_wait(pid), 128 + SIGKILL);
	close(hold);
	cr_assert_eq(abd_registry_gc(s.reg, NULL), 1);
	while (seen.removed < 2)
		cr_assert_geq(abd_watch_wait(w, -1, on_event, &seen), 0);

	/* A signal ends an unbounded sleep with -EINTR; nothing is lost. */
	struct sigaction sa = { .sa_handler = on_alarm }, old;
	cr_assert_eq(sigaction(SIGALRM, &sa, &old), 0); /* no SA_RESTART */
	struct itimerval it = { .it_value = { .tv_usec = 50000 } };
	cr_assert_eq(setitimer(ITIMER_REAL, &it, NULL), 0);
	cr_assert_eq(abd_watch_wait(w, -1, on_event, &seen), -EINTR);
	cr_assert_eq(sigaction(SIGALRM, &old, NULL), 0);

	/* The directory moved away: -EIDRM, at once and again, never a sleep for good. (A removal
	 * is told only once the last reference to the directory goes, the registry's own
	 * descriptor included; a move at once.) */
	char moved[300];
	snprintf(moved, sizeof(moved), "%s.moved", s.dir);
	cr_assert_eq(rename(s.dir, moved), 0);
	cr_assert_eq(abd_watch_wait(w, -1, on_event, &seen), -EIDRM);
	cr_assert_eq(abd_watch_wait(w, -1, on_event, &seen), -EIDRM);
	abd_watch_free(w);
	abd_registry_free(s.reg);
	abd_test_rmtree(moved);
	cr_assert_eq(abd_watch_wait(NULL, 0, on_event, &seen), -EINVAL);
}

ABD_TEST(registry, watch_wait_added_removed_died)
{
	watch_wait_lifecycle(0);
}

ABD_TEST(registry, watch_wait_with_pidfds)
{
	abd_test_require(ABD_FEAT_PIDFD_OPEN);
	watch_wait_lifecycle(ABD_WATCH_PIDFD);
}

/* ------------------------------------------------------------------ who may publish -- */

#define PUB_USER 1000 /* an ordinary uid (and gid) */

/* Publish service in reg with the record's publication time replaced by published_ns (0:
 * as abd_publish wrote it): the record is prepared, rewritten in place (time and checksum),
 * then committed, as any publisher could do with its own record. */
static struct abd_publication *publish_forged(struct abd_registry *reg, const char *service,
                                              uint64_t published_ns)
{
	struct abd_record *rec;
	struct abd_publication *pub;
	if (abd_record_new(service, &rec) < 0 || abd_publish_prepare(reg, rec, &pub) < 0)
		return NULL;
	abd_record_free(rec);
	if (published_ns) {
		int fd = abd_publication_fd(pub);
		uint8_t buf[ABD_RECORD_MAX];
		ssize_t n = pread(fd, buf, sizeof(buf), 0);
		if (n < 80)
			return NULL;
		for (int i = 0; i < 8; i++)
			buf[72 + i] = (uint8_t)(published_ns >> (8 * i));
		uint32_t crc = abd__crc32c(buf, (size_t)n - 4);
		for (int i = 0; i < 4; i++)
			buf[n - 4 + i] = (uint8_t)(crc >> (8 * i));
		if (pwrite(fd, buf, (size_t)n, 0) != n)
			return NULL;
	}
	if (abd_publish_commit(pub) < 0)
		return NULL;
	return pub;
}

struct forger {
	const char *dir;
	uint64_t published_ns;
	int out_w, hold_r;
	int close_in_child[2]; /* the parent's ends, which fork copied */
};

/* As uid/gid PUB_USER: publish "who" with a forged publication time, report the record's
 * name, hold it until the parent closes the pipe. */
static int forger_main(void *arg)
{
	struct forger *f = arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	close(f->close_in_child[0]);
	close(f->close_in_child[1]);
	if (setgroups(0, NULL) < 0 || setresgid(PUB_USER, PUB_USER, PUB_USER) < 0 ||
	    setresuid(PUB_USER, PUB_USER, PUB_USER) < 0)
		return 90;
	prctl(PR_SET_PDEATHSIG, SIGKILL); /* cleared by the change of credentials */
	struct abd_registry *reg;
	if (abd_registry_open(f->dir, 0, &reg, NULL, 0) < 0)
		return 91;
	struct abd_publication *pub = publish_forged(reg, "who", f->published_ns);
	if (!pub)
		return 92;
	const char *name = abd_publication_name(pub);
	if (write(f->out_w, name, strlen(name) + 1) < 0)
		return 93;
	char b;
	while (read(f->hold_r, &b, 1) > 0)
		;
	abd_withdraw(pub);
	abd_registry_free(reg);
	return 0;
}

static bool same_instance(const struct abd_record *rec, const struct abd_publication *pub)
{
	return memcmp(abd_record_instance(rec), abd_record_instance(abd_publication_record(pub)),
	              ABD_INSTANCE_SIZE) == 0;
}

/* A local user publishes the name later than root, with a publication time of 2^62: root's
 * lookup still takes root's own record, sees the user's as untrusted, and takes it only when
 * it trusts uid (or gid) PUB_USER. Without any trusted record: -ENOENT, never the user's. */
ABD_TEST(registry, lookup_trusts_the_file_owner_not_the_timestamp)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to publish as uid %d (setresuid)", PUB_USER);
	struct scratch s;
	scratch_open(&s);
	cr_assert_eq(chmod(s.dir, 01777), 0);
	struct abd_publication *mine = publish_forged(s.reg, "who", 0);
	cr_assert_not_null(mine);
	int out[2], hold[2];
	cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(hold, O_CLOEXEC), 0);
	struct forger f = { s.dir, 1ull << 62, out[1], hold[0], { out[0], hold[1] } };
	pid_t u = abd_test_fork(forger_main, &f);
	close(out[1]);
	close(hold[0]);
	char uname[ABD_RECORD_NAME_MAX + 1] = "";
	ssize_t n = read(out[0], uname, sizeof(uname));
	close(out[0]);
	cr_assert_gt(n, 0, "the uid %d publisher failed (status %d)", PUB_USER,
	             n == 0 ? abd_test_wait(u) : -1);

	struct abd_record *rec = NULL;
	cr_assert_eq(abd_registry_lookup(s.reg, "who", &rec), 0);
	cr_assert_eq(abd_record_uid(rec), 0, "took uid %u's record (published_ns %llu)",
	             (unsigned)abd_record_uid(rec), (unsigned long long)abd_record_published_ns(rec));
	cr_assert(same_instance(rec, mine));
	abd_record_free(rec);

	/* the user's record is alive, and untrusted by the default policy only */
	uid_t uids[1] = { PUB_USER };
	gid_t gids[1] = { PUB_USER }, other_gids[1] = { PUB_USER + 4242 };
	struct abd_lookup_opts by_uid = { .publisher_uids = uids, .n_publisher_uids = 1 };
	struct abd_lookup_opts by_gid = { .publisher_gids = gids, .n_publisher_gids = 1 };
	struct abd_lookup_opts by_other = { .publisher_gids = other_gids, .n_publisher_gids = 1 };
	struct abd_snapshot *snap;
	cr_assert_eq(abd_registry_snapshot(s.reg, &snap), 0);
	unsigned untrusted = 0;
	for (size_t i = 0; i < abd_snapshot_count(snap); i++) {
		const struct abd_entry *e = abd_snapshot_entry(snap, i);
		cr_assert_eq(e->state, ABD_STATE_ALIVE, "%s: %s", e->name, e->reason);
		int t = abd_entry_trusted(s.reg, e, NULL);
		cr_assert_eq(t, e->uid == 0, "%s (uid %u): trusted %d", e->name, (unsigned)e->uid, t);
		untrusted += !t;
		cr_assert_eq(abd_entry_trusted(s.reg, e, &by_uid), 1);
		cr_assert_eq(abd_entry_trusted(s.reg, e, &by_gid), 1);
		cr_assert_eq(abd_entry_trusted(s.reg, e, &by_other), e->uid == 0);
	}
	cr_assert_eq(untrusted, 1);
	abd_snapshot_free(snap);

	/* trusted by uid or by group: the user's record is the newer (by its inode change time) */
	cr_assert_eq(abd_registry_lookup_opts(s.reg, "who", &by_uid, &rec), 0);
	cr_assert_eq(abd_record_uid(rec), PUB_USER);
	abd_record_free(rec);
	cr_assert_eq(abd_registry_lookup_opts(s.reg, "who", &by_gid, &rec), 0);
	cr_assert_eq(abd_record_uid(rec), PUB_USER);
	abd_record_free(rec);
	cr_assert_eq(abd_registry_lookup_opts(s.reg, "who", &by_other, &rec), 0);
	cr_assert_eq(abd_record_uid(rec), 0);
	abd_record_free(rec);

	/* skipping root's record leaves nothing trusted */
	struct abd_lookup_opts skip = { .skip = abd_record_instance(abd_publication_record(mine)),
	                                .n_skip = 1 };
	cr_assert_eq(abd_registry_lookup_opts(s.reg, "who", &skip, &rec), -ENOENT);
	cr_assert_null(rec);

	/* with root's record withdrawn, only the user's is alive: not ours to take */
	cr_assert_eq(abd_withdraw(mine), 0);
	cr_assert_eq(abd_registry_lookup(s.reg, "who", &rec), -ENOENT);
	cr_assert_null(rec);
	cr_assert_eq(abd_registry_lookup_opts(s.reg, "who", &by_other, &rec), -ENOENT);
	cr_assert_eq(abd_registry_lookup_opts(s.reg, "who", &by_uid, &rec), 0);
	cr_assert_eq(abd_record_uid(rec), PUB_USER);
	abd_record_free(rec);

	/* bad options */
	struct abd_lookup_opts bad = { .n_publisher_uids = 1 };
	cr_assert_eq(abd_registry_lookup_opts(s.reg, "who", &bad, &rec), -EINVAL);
	bad = (struct abd_lookup_opts){ .publisher_uids = uids, .n_publisher_uids = ABD_PUBLISHER_MAX + 1 };
	cr_assert_eq(abd_registry_lookup_opts(s.reg, "who", &bad, &rec), -E2BIG);
	bad = (struct abd_lookup_opts){ .reserved[0] = &bad };
	cr_assert_eq(abd_registry_lookup_opts(s.reg, "who", &bad, &rec), -EINVAL);

	close(hold[1]);
	cr_assert_eq(abd_test_wait(u), 0);
	scratch_close(&s);
}

/* Among trusted records the newer by the kernel's inode change time comes first, whatever
 * publication time a record states. */
ABD_TEST(registry, lookup_orders_by_kernel_time)
{
	struct scratch s;
	scratch_open(&s);
	struct abd_publication *old = publish_forged(s.reg, "order", 1ull << 62);
	cr_assert_not_null(old);
	struct timespec nap = { 0, 20 * 1000 * 1000 }; /* past the clock's tick */
	nanosleep(&nap, NULL);
	struct abd_publication *new = publish_forged(s.reg, "order", 0);
	cr_assert_not_null(new);
	struct abd_record *rec;
	cr_assert_eq(abd_registry_lookup(s.reg, "order", &rec), 0);
	cr_assert(same_instance(rec, new), "took the record stating published_ns %llu",
	          (unsigned long long)abd_record_published_ns(rec));
	abd_record_free(rec);
	/* a skipped candidate gives the next */
	struct abd_lookup_opts skip = { .skip = abd_record_instance(abd_publication_record(new)),
	                                .n_skip = 1 };
	cr_assert_eq(abd_registry_lookup_opts(s.reg, "order", &skip, &rec), 0);
	cr_assert(same_instance(rec, old));
	abd_record_free(rec);
	abd_withdraw(old);
	abd_withdraw(new);
	scratch_close(&s);
}

/* ------------------------------------------------------------------ bounded watches -- */

static void count_event(void *ud, enum abd_event_type type, const struct abd_entry *e)
{
	(void)type, (void)e;
	(*(int *)ud)++;
}

/* A watch of one service keeps nothing for other entries: with many alive records of other
 * names (and ABD_WATCH_PIDFD), it holds the same descriptors as in an empty directory, and
 * reports only its service's records. */
ABD_TEST(registry, watch_of_one_service_ignores_the_rest)
{
	struct scratch s;
	scratch_open(&s);
	unsigned n = (unsigned)abd_test_scaled(300, 30);
	struct abd_publication **pubs = calloc(n, sizeof(*pubs));
	cr_assert_not_null(pubs);
	int fds0 = abd_test_count_fds();
	struct abd_watch_opts o = { .flags = ABD_WATCH_PIDFD, .service = "mine" };
	struct abd_watch *w;
	cr_assert_eq(abd_watch_new_opts(s.reg, &o, &w), 0);
	int cost_empty = abd_test_count_fds() - fds0;
	abd_watch_free(w);
	char name[32];
	for (unsigned i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "other.%u", i);
		pubs[i] = publish_simple(s.reg, name);
	}
	struct abd_publication *mine = publish_simple(s.reg, "mine");
	struct abd_publication *near = publish_simple(s.reg, "mine.x"); /* not "mine" */
	fds0 = abd_test_count_fds();
	cr_assert_eq(abd_watch_new_opts(s.reg, &o, &w), 0);
	int events = 0;
	cr_assert_eq(abd_watch_process(w, count_event, &events), 1);
	cr_assert_eq(abd_watch_count(w), 1);
	cr_assert_str_eq(abd_watch_entry(w, 0)->name, abd_publication_name(mine));
	int cost = abd_test_count_fds() - fds0;
	/* + one pidfd for the one record of the service, where pidfds exist */
	cr_assert_leq(cost, cost_empty + 1, "a watch of one service holds %d descriptors with %u "
	              "other records, %d without", cost, n, cost_empty);
	/* other services' changes are not events */
	abd_withdraw(pubs[0]);
	pubs[0] = NULL;
	abd_withdraw(near);
	cr_assert_eq(abd_watch_wait(w, 50, count_event, &events), 0);
	abd_withdraw(mine);
	cr_assert_eq(abd_watch_wait(w, 2000, count_event, &events), 1);
	abd_watch_free(w);
	struct abd_watch_opts bad = { .service = "../x" };
	cr_assert_eq(abd_watch_new_opts(s.reg, &bad, &w), -EINVAL);
	bad = (struct abd_watch_opts){ .reserved[0] = &bad };
	cr_assert_eq(abd_watch_new_opts(s.reg, &bad, &w), -EINVAL);
	cr_assert_eq(abd_watch_new_opts(s.reg, NULL, &w), 0);
	abd_watch_free(w);
	for (unsigned i = 0; i < n; i++)
		abd_withdraw(pubs[i]);
	free(pubs);
	scratch_close(&s);
}

/* A record's owner opening its alive record for writing and closing it, again and again:
 * every close is an IN_CLOSE_WRITE to every watcher, and each must cost a bounded number of
 * looks at the record (it cost up to 200 lock tests and yields each). */
ABD_TEST(registry, writable_closes_of_an_alive_record_cost_bounded_work)
{
	struct scratch s;
	scratch_open(&s);
	char name[ABD_RECORD_NAME_MAX + 1];
	int hold;
	pid_t pid = spawn_publisher(s.dir, "busy", 1, name, sizeof(name), &hold);
	for (int flags = 0; flags <= ABD_WATCH_PIDFD; flags += ABD_WATCH_PIDFD) {
		struct abd_watch *w;
		cr_assert_eq(abd_watch_new(s.reg, (unsigned)flags, &w), 0);
		int events = 0;
		cr_assert_eq(abd_watch_process(w, count_event, &events), 1);
		unsigned rounds = (unsigned)abd_test_scaled(100, 20);
		for (unsigned i = 0; i < rounds; i++) {
			/* the owner (this test runs as the publisher's uid) */
			int fd = openat(abd_registry_fd(s.reg), name, O_WRONLY | O_CLOEXEC);
			cr_assert_geq(fd, 0, "%s", strerror(errno));
			close(fd);
			cr_assert_eq(abd_watch_process(w, count_event, &events), 0,
			             "an alive record reported as changed");
		}
		cr_assert_eq(abd_watch_entry(w, 0)->state, ABD_STATE_ALIVE);
		unsigned checks = abd__watch_checks(w);
		cr_assert_leq(checks, 2 * rounds + 2 * (4 + 2),
		              "%u writable closes cost %u looks at the record (flags %d)", rounds, checks,
		              flags);
		abd_watch_free(w);
	}
	close(hold);
	cr_assert_eq(abd_test_wait(pid), 0);
	scratch_close(&s);
}
