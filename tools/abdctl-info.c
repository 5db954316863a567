/* SPDX-License-Identifier: MIT */
/* abdctl info NAME: a service's record, its liveness, and an acquisition attempt. */
#include <abd/abd.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "abdctl.h"

void abdctl_info_help(FILE *out)
{
	fprintf(out,
	        "usage: abdctl info [--dir DIR] [--json] [--pidfd-getfd | --scm-rights]\n"
	        "                   [--timeout MS] [--interval MS] [--publisher-uid UID]...\n"
	        "                   [--publisher-gid GID]... NAME\n\n"
	        "Shows the record of service NAME (its newest alive record, else any record of it),\n"
	        "its liveness, and tries to acquire its descriptors: the path used (pidfd_getfd or\n"
	        "scm_rights) and why the fast path was not, the publisher's credentials as the\n"
	        "kernel vouched for them, each descriptor's kind and size, or the exact error.\n"
	        "--pidfd-getfd / --scm-rights force a path. A record whose publisher you do not trust\n"
	        "is shown as 'unauthorized' and not acquired from.\n"
	        ABDCTL_PUBLISHERS_HELP
	        "For a ring service (abdctl serve, abd_service_publish) it also shows the ring's live\n"
	        "statistics, sampled twice --interval MS apart (default 500): capacity, occupancy,\n"
	        "producers and consumers attached, sleepers, messages pushed and popped per second.\n"
	        "Exit: 0 acquired, 1 failed, 3 not found.\n");
}

struct ring_live {
	int err; /* 0, or why there are no figures (-EPROTONOSUPPORT: not a ring service) */
	struct abd_service_stats a, b;
	double seconds;
	const char *type;
	uint32_t type_size;
	int closed;
	bool broadcast;
};

/* Attach as an observer (no role, not counted) and sample the statistics twice. */
static void ring_live(const char *dir, const char *name, unsigned flags, int64_t interval_ns,
                      const struct abd_lookup_opts *pubs, struct ring_live *out)
{
	memset(out, 0, sizeof(*out));
	struct abd_service_config cfg = { 0 };
	cfg.dir = dir;
	cfg.publisher_uids = pubs->publisher_uids;
	cfg.n_publisher_uids = pubs->n_publisher_uids;
	cfg.publisher_gids = pubs->publisher_gids;
	cfg.n_publisher_gids = pubs->n_publisher_gids;
	struct abd_service *svc;
	unsigned sflags = ABD_SERVICE_OBSERVER |
	                  (flags & ABD_ACQUIRE_PIDFD_GETFD ? ABD_SERVICE_PIDFD_GETFD : 0) |
	                  (flags & ABD_ACQUIRE_SCM_RIGHTS ? ABD_SERVICE_SCM_RIGHTS : 0);
	out->err = abd_service_open(name, &cfg, sflags, 0, &svc);
	if (out->err < 0)
		return;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	abd_service_stats(svc, &out->a);
	struct timespec nap = { (time_t)(interval_ns / 1000000000), (long)(interval_ns % 1000000000) };
	nanosleep(&nap, NULL);
	abd_service_stats(svc, &out->b);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	out->seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	abd_service_type(svc, &out->type, &out->type_size, NULL);
	static char type[ABD_SERVICE_TYPE_MAX + 1];
	snprintf(type, sizeof(type), "%s", out->type);
	out->type = type;
	out->closed = abd_service_closed(svc);
	out->broadcast = abd_service_is_broadcast(svc) == 1;
	abd_service_close(svc);
}

static double rate(uint64_t a, uint64_t b, double s)
{
	return s > 0 && b >= a ? (double)(b - a) / s : 0;
}

static void hex(FILE *out, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fprintf(out, "%02x", p[i]);
}

/* The first trusted alive record of the service (lookup's order), else the first entry
 * naming it (*untrusted: an alive record of a publisher not trusted). */
static int find(struct abd_registry *reg, const char *name, const struct abd_lookup_opts *pubs,
                struct abd_record **rec, enum abd_state *state, bool *untrusted, char *file,
                size_t file_size)
{
	*untrusted = false;
	if (abd_registry_lookup_opts(reg, name, pubs, rec) == 0) {
		*state = ABD_STATE_ALIVE;
		const uint8_t *id = abd_record_instance(*rec);
		int n = snprintf(file, file_size, "%s.", name);
		for (int i = 0; i < ABD_INSTANCE_SIZE; i++)
			n += snprintf(file + n, file_size - (size_t)n, "%02x", id[i]);
		return 0;
	}
	struct abd_snapshot *snap;
	int r = abd_registry_snapshot(reg, &snap);
	if (r < 0)
		return r;
	r = -ENOENT;
	for (size_t i = 0; i < abd_snapshot_count(snap); i++) {
		const struct abd_entry *e = abd_snapshot_entry(snap, i);
		if (!((e->service && !strcmp(e->service, name)) || !strcmp(e->name, name)))
			continue;
		*state = e->state;
		*untrusted = e->state == ABD_STATE_ALIVE && abd_entry_trusted(reg, e, pubs) == 0;
		snprintf(file, file_size, "%s", e->name);
		*rec = NULL;
		r = 0;
		/* copy the record through its encoding: the snapshot owns e->record */
		if (e->record) {
			static uint8_t buf[ABD_RECORD_MAX];
			long len = abd_record_encode(e->record, buf, sizeof(buf));
			const char *why;
			r = len < 0 ? (int)len : abd_record_decode(buf, (size_t)len, rec, &why);
		}
		break;
	}
	abd_snapshot_free(snap);
	return r;
}

int abdctl_info(int argc, char **argv)
{
	enum { OPT_PIDFD_GETFD = OPT_COMMAND, OPT_SCM_RIGHTS, OPT_TIMEOUT, OPT_INTERVAL };
	static const struct option longopts[] = {
		ABDCTL_OPT_DIR,
		ABDCTL_OPT_JSON,
		ABDCTL_OPT_PUBLISHERS,
		{ "pidfd-getfd", no_argument, NULL, OPT_PIDFD_GETFD },
		{ "scm-rights", no_argument, NULL, OPT_SCM_RIGHTS },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "interval", required_argument, NULL, OPT_INTERVAL },
		{ 0 },
	};
	struct abdctl_publishers pubs;
	abdctl_publishers_init(&pubs);
	const char *dir = NULL, *name = NULL;
	bool json = false;
	unsigned flags = 0;
	int64_t timeout_ns = -1, interval_ns = 500 * 1000000ll;
	abdctl_getopt_reset();
	int c;
	while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_DIR: dir = optarg; break;
		case OPT_JSON: json = true; break;
		case OPT_PIDFD_GETFD: flags = ABD_ACQUIRE_PIDFD_GETFD; break;
		case OPT_SCM_RIGHTS: flags = ABD_ACQUIRE_SCM_RIGHTS; break;
		case OPT_PUBLISHER_UID:
		case OPT_PUBLISHER_GID:
			if (abdctl_publisher_option("info", c, optarg, &pubs))
				return ABDCTL_USAGE;
			break;
		case OPT_TIMEOUT:
		case OPT_INTERVAL:
			if (!parse_ms(optarg, c == OPT_TIMEOUT ? &timeout_ns : &interval_ns)) {
				fprintf(stderr, "abdctl info: --%s wants milliseconds (0..%lld, or -1), not "
				        "'%s'\n", c == OPT_TIMEOUT ? "timeout" : "interval",
				        (long long)(INT64_MAX / 1000000), optarg);
				return ABDCTL_USAGE;
			}
			break;
		default: return abdctl_bad_option("info", c, argv);
		}
	}
	if (optind < argc)
		name = argv[optind++];
	if (optind < argc) {
		fprintf(stderr, "abdctl info: unexpected argument '%s' (see --help)\n", argv[optind]);
		return ABDCTL_USAGE;
	}
	if (!name) {
		fprintf(stderr, "abdctl info: a service name is required (see --help)\n");
		return ABDCTL_USAGE;
	}
	struct abd_registry *reg;
	char reason[256];
	int r = abd_registry_open(dir, 0, &reg, reason, sizeof(reason));
	if (r < 0) {
		fprintf(stderr, "abdctl info: %s\n", reason);
		return ABDCTL_FAIL;
	}
	struct abd_record *rec = NULL;
	enum abd_state state = ABD_STATE_INVALID;
	bool untrusted = false;
	char file[ABD_RECORD_NAME_MAX + 256];
	r = find(reg, name, &pubs.opts, &rec, &state, &untrusted, file, sizeof(file));
	if (r < 0) {
		if (json) {
			printf("{\"name\":");
			json_string(stdout, name);
			printf(",\"state\":\"absent\",\"acquire\":{\"error\":\"%s\"}}\n", errno_name(r));
		} else
			fprintf(stderr, "abdctl info: %s: %s\n", name,
			        r == -ENOENT ? "no such service" : strerror(-r));
		abd_registry_free(reg);
		return r == -ENOENT ? ABDCTL_NOTFOUND : ABDCTL_FAIL;
	}
	struct abd_acquired *a = NULL;
	/* never acquire from a publisher the caller does not trust */
	int ar = untrusted ? -EPERM : rec ? abd_acquire(reg, rec, flags, timeout_ns, &a) : -EBADMSG;
	struct ring_live live = { .err = -ENOENT };
	if (ar == 0 && state == ABD_STATE_ALIVE && abd_record_meta(rec, "abd.service"))
		ring_live(dir, name, flags, interval_ns < 0 ? 0 : interval_ns, &pubs.opts, &live);
	const char *state_name = untrusted ? "unauthorized" : abd_state_name(state);

	if (json) {
		printf("{\"name\":");
		json_string(stdout, file);
		printf(",\"state\":\"%s\"", state_name);
		if (rec) {
			uint64_t dev, ino;
			abd_record_pidns(rec, &dev, &ino);
			printf(",\"service\":");
			json_string(stdout, abd_record_service(rec));
			printf(",\"instance\":\"");
			hex(stdout, abd_record_instance(rec), ABD_INSTANCE_SIZE);
			printf("\",\"pid\":%d,\"uid\":%u,\"start_time\":%llu,\"pidfs_ino\":%llu,"
			       "\"pidns\":{\"dev\":%llu,\"ino\":%llu},\"socket\":",
			       (int)abd_record_pid(rec), (unsigned)abd_record_uid(rec),
			       (unsigned long long)abd_record_start_time(rec),
			       (unsigned long long)abd_record_pidfs_ino(rec), (unsigned long long)dev,
			       (unsigned long long)ino);
			json_string(stdout, abd_record_socket(rec));
			printf(",\"slots\":[");
			for (size_t i = 0; i < abd_record_fd_count(rec); i++) {
				const char *slot;
				int fd;
				enum abd_fd_kind kind;
				abd_record_fd_at(rec, i, &slot, &fd, &kind);
				printf("%s{\"slot\":", i ? "," : "");
				json_string(stdout, slot);
				printf(",\"fd\":%d,\"kind\":\"%s\"}", fd,
				       abd_fd_kind_name(kind) ? abd_fd_kind_name(kind) : "unknown");
			}
			printf("]");
		}
		printf(",\"acquire\":{");
		if (ar == 0) {
			pid_t pid;
			uid_t uid;
			gid_t gid;
			abd_acquired_peer(a, &pid, &uid, &gid);
			printf("\"path\":\"%s\",\"fallback\":", abd_fd_transfer_name(abd_acquired_path(a)));
			if (abd_acquired_fallback(a))
				printf("\"%s\"", errno_name(abd_acquired_fallback(a)));
			else
				printf("null");
			printf(",\"peer\":{\"pid\":%d,\"uid\":%u,\"gid\":%u},\"fds\":[", (int)pid,
			       (unsigned)uid, (unsigned)gid);
			for (size_t i = 0; i < abd_acquired_count(a); i++) {
				const char *slot;
				enum abd_fd_kind kind;
				uint64_t size;
				abd_acquired_fd_at(a, i, &slot, NULL, &kind, &size);
				printf("%s{\"slot\":", i ? "," : "");
				json_string(stdout, slot);
				printf(",\"kind\":\"%s\",\"size\":%llu}", abd_fd_kind_name(kind),
				       (unsigned long long)size);
			}
			printf("]");
		} else {
			printf("\"error\":\"%s\",\"message\":", errno_name(ar));
			json_string(stdout, strerror(-ar));
		}
		printf("}");
		if (live.err == 0) {
			const struct abd_service_stats *b = &live.b;
			printf(",\"ring\":{\"type\":");
			json_string(stdout, live.type);
			printf(",\"type_size\":%u,\"capacity\":%llu,\"slot_size\":%llu,\"occupancy\":%llu,"
			       "\"producers\":%u,\"consumers\":%u,\"data_sleepers\":%u,"
			       "\"space_sleepers\":%u,\"pushed\":%llu,\"popped\":%llu,\"recovered\":%llu,"
			       "\"wakes\":%llu,\"pushed_per_s\":%.1f,\"popped_per_s\":%.1f,"
			       "\"interval_s\":%.3f,\"closed\":%s",
			       live.type_size, (unsigned long long)b->capacity,
			       (unsigned long long)b->slot_size, (unsigned long long)b->occupancy,
			       b->producers, b->consumers, b->data_sleepers, b->space_sleepers,
			       (unsigned long long)b->pushed, (unsigned long long)b->popped,
			       (unsigned long long)b->recovered, (unsigned long long)b->wakes,
			       rate(live.a.pushed, b->pushed, live.seconds),
			       rate(live.a.popped, b->popped, live.seconds), live.seconds,
			       live.closed ? "true" : "false");
			/* a broadcast service: consumers are its live subscribers (docs/broadcast.md) */
			if (live.broadcast)
				printf(",\"kind\":\"broadcast\",\"bytes\":%llu,\"bytes_per_s\":%.1f",
				       (unsigned long long)b->bytes, rate(live.a.bytes, b->bytes, live.seconds));
			printf("}");
		} else if (live.err != -ENOENT) {
			printf(",\"ring\":{\"error\":\"%s\"}", errno_name(live.err));
		}
		printf("}\n");
	} else {
		printf("record   %s\nstate    %s\n", file, state_name);
		if (rec) {
			printf("pid      %d\nuid      %u\nsocket   %s\n", (int)abd_record_pid(rec),
			       (unsigned)abd_record_uid(rec),
			       *abd_record_socket(rec) ? abd_record_socket(rec) : "(none)");
			for (size_t i = 0; i < abd_record_fd_count(rec); i++) {
				const char *slot;
				int fd;
				enum abd_fd_kind kind;
				abd_record_fd_at(rec, i, &slot, &fd, &kind);
				printf("slot     %s: fd %d, %s\n", slot, fd,
				       abd_fd_kind_name(kind) ? abd_fd_kind_name(kind) : "unknown");
			}
		}
		if (ar == 0) {
			pid_t pid;
			uid_t uid;
			gid_t gid;
			abd_acquired_peer(a, &pid, &uid, &gid);
			printf("acquire  %s", abd_fd_transfer_name(abd_acquired_path(a)));
			if (abd_acquired_fallback(a))
				printf(" (pidfd_getfd not used: %s)", errno_name(abd_acquired_fallback(a)));
			printf("\npeer     pid %d, uid %u, gid %u\n", (int)pid, (unsigned)uid, (unsigned)gid);
			for (size_t i = 0; i < abd_acquired_count(a); i++) {
				const char *slot;
				enum abd_fd_kind kind;
				uint64_t size;
				abd_acquired_fd_at(a, i, &slot, NULL, &kind, &size);
				printf("got      %s: %s", slot, abd_fd_kind_name(kind));
				if (kind == ABD_FD_MEMFD)
					printf(", %llu bytes, nonce verified", (unsigned long long)size);
				printf("\n");
			}
		} else {
			printf("acquire  failed: %s (%s)\n", errno_name(ar), strerror(-ar));
		}
		if (live.err == 0) {
			const struct abd_service_stats *b = &live.b;
			printf("type     %s (%s)\n", *live.type ? live.type : "bytes",
			       live.type_size ? "fixed size" : "variable size");
			if (live.broadcast) {
				printf("broadcast %llu slots of %llu bytes, %u subscribers; %llu messages "
				       "(%.0f msg/s), %llu bytes (%.0f B/s) published%s\n",
				       (unsigned long long)b->capacity, (unsigned long long)b->slot_size,
				       b->consumers, (unsigned long long)b->pushed,
				       rate(live.a.pushed, b->pushed, live.seconds),
				       (unsigned long long)b->bytes, rate(live.a.bytes, b->bytes, live.seconds),
				       live.closed ? ", CLOSED" : "");
			} else {
				printf("ring     %llu slots of %llu bytes, %llu waiting%s\n",
				       (unsigned long long)b->capacity, (unsigned long long)b->slot_size,
				       (unsigned long long)b->occupancy, live.closed ? ", CLOSED" : "");
				printf("peers    %u producers, %u consumers attached; %u consumers and %u producers "
				       "asleep\n", b->producers, b->consumers, b->data_sleepers, b->space_sleepers);
				printf("traffic  %llu pushed, %llu popped, %llu recovered; %.0f msg/s in, %.0f msg/s "
				       "out (over %.2f s)\n",
				       (unsigned long long)b->pushed, (unsigned long long)b->popped,
				       (unsigned long long)b->recovered, rate(live.a.pushed, b->pushed, live.seconds),
				       rate(live.a.popped, b->popped, live.seconds), live.seconds);
			}
		} else if (live.err != -ENOENT) {
			printf("ring     no live statistics: %s\n", errno_name(live.err));
		}
	}
	abd_acquired_free(a);
	abd_record_free(rec);
	abd_registry_free(reg);
	return ar == 0 ? ABDCTL_OK : ABDCTL_FAIL;
}
