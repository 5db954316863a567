/* SPDX-License-Identifier: MIT */
/* abdctl list / watch / gc / publish: the registry from the command line. */
#include <abd/abd.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "abdctl.h"

/* ------------------------------------------------------------------ shared -- */

struct opts {
	const char *dir;
	bool json, all, pidfd;
	const char *name;
	char **meta;
	int nmeta;
	struct abdctl_publishers pubs;
	uid_t allow_uids[64];
	gid_t allow_gids[64];
	int nallow_uids, nallow_gids;
};

enum { OPT_ALL = OPT_COMMAND, OPT_PIDFD, OPT_META, OPT_ALLOW_UID, OPT_ALLOW_GID };

/* Parses the options of a registry command: the shared ones and those named in allowed
 * ("json all pidfd meta pub allow"); 0 or ABDCTL_USAGE (said why). o->meta: free it. */
static int parse(const char *cmd, int argc, char **argv, struct opts *o, const char *allowed,
                 bool want_name)
{
	static const struct option longopts[] = {
		ABDCTL_OPT_DIR,
		ABDCTL_OPT_JSON,
		ABDCTL_OPT_PUBLISHERS,
		{ "all", no_argument, NULL, OPT_ALL },
		{ "pidfd", no_argument, NULL, OPT_PIDFD },
		{ "meta", required_argument, NULL, OPT_META },
		{ "allow-uid", required_argument, NULL, OPT_ALLOW_UID },
		{ "allow-gid", required_argument, NULL, OPT_ALLOW_GID },
		{ 0 },
	};
	memset(o, 0, sizeof(*o));
	abdctl_publishers_init(&o->pubs);
	o->meta = calloc((size_t)argc, sizeof(*o->meta));
	if (!o->meta)
		return ABDCTL_FAIL;
	abdctl_getopt_reset();
	int c;
	int li = -1;
	while ((c = getopt_long(argc, argv, ":", longopts, &li)) != -1) {
		const char *need = c == OPT_JSON ? "json" : c == OPT_ALL ? "all" : c == OPT_PIDFD ? "pidfd"
		                 : c == OPT_META ? "meta"
		                 : c == OPT_PUBLISHER_UID || c == OPT_PUBLISHER_GID ? "pub"
		                 : c == OPT_ALLOW_UID || c == OPT_ALLOW_GID ? "allow" : NULL;
		if (need && !strstr(allowed, need)) {
			fprintf(stderr, "abdctl %s: unexpected argument '--%s' (see --help)\n", cmd,
			        longopts[li].name);
			return ABDCTL_USAGE;
		}
		long long v;
		switch (c) {
		case OPT_DIR: o->dir = optarg; break;
		case OPT_JSON: o->json = true; break;
		case OPT_ALL: o->all = true; break;
		case OPT_PIDFD: o->pidfd = true; break;
		case OPT_META: o->meta[o->nmeta++] = optarg; break;
		case OPT_PUBLISHER_UID:
		case OPT_PUBLISHER_GID:
			if (abdctl_publisher_option(cmd, c, optarg, &o->pubs))
				return ABDCTL_USAGE;
			break;
		case OPT_ALLOW_UID:
		case OPT_ALLOW_GID:
			if (!parse_ll(optarg, 0, (long long)UINT32_MAX - 1, &v) ||
			    (c == OPT_ALLOW_UID ? o->nallow_uids : o->nallow_gids) >= 64) {
				fprintf(stderr, "abdctl %s: --allow-%s wants a number (at most 64 of them), "
				        "not '%s'\n", cmd, c == OPT_ALLOW_UID ? "uid" : "gid", optarg);
				return ABDCTL_USAGE;
			}
			if (c == OPT_ALLOW_UID)
				o->allow_uids[o->nallow_uids++] = (uid_t)v;
			else
				o->allow_gids[o->nallow_gids++] = (gid_t)v;
			break;
		default: return abdctl_bad_option(cmd, c, argv);
		}
	}
	if (optind < argc && want_name)
		o->name = argv[optind++];
	if (optind < argc) {
		fprintf(stderr, "abdctl %s: unexpected argument '%s' (see --help)\n", cmd, argv[optind]);
		return ABDCTL_USAGE;
	}
	if (want_name && !o->name) {
		fprintf(stderr, "abdctl %s: a service name is required (see --help)\n", cmd);
		return ABDCTL_USAGE;
	}
	return 0;
}

void abdctl_publishers_init(struct abdctl_publishers *p)
{
	memset(p, 0, sizeof(*p));
	p->opts.publisher_uids = p->uids;
	p->opts.publisher_gids = p->gids;
}

int abdctl_publisher_option(const char *cmd, int opt, const char *arg,
                            struct abdctl_publishers *p)
{
	bool u = opt == OPT_PUBLISHER_UID;
	size_t *n = u ? &p->opts.n_publisher_uids : &p->opts.n_publisher_gids;
	long long v = 0;
	bool any = u && !strcmp(arg, "any");
	if ((!any && !parse_ll(arg, 0, (long long)UINT32_MAX - 1, &v)) || *n >= ABD_PUBLISHER_MAX) {
		fprintf(stderr, "abdctl %s: --publisher-%s wants a number%s (at most %d of them), not '%s'\n",
		        cmd, u ? "uid" : "gid", u ? " or 'any'" : "", ABD_PUBLISHER_MAX, arg);
		return ABDCTL_USAGE;
	}
	if (u)
		p->uids[(*n)++] = any ? ABD_PUBLISHER_ANY : (uid_t)v;
	else
		p->gids[(*n)++] = (gid_t)v;
	return 0;
}

void abdctl_warn_shared(const char *cmd, struct abd_registry *reg)
{
	struct stat st;
	if (fstat(abd_registry_fd(reg), &st) < 0 || !(st.st_mode & 022))
		return;
	fprintf(stderr,
	        "abdctl %s: warning: %s (mode %04o, owner uid %u) is writable by %s: they can "
	        "publish any name (only records of publishers you trust are taken)%s; see "
	        "docs/operations.md\n",
	        cmd, abd_registry_path(reg), (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid,
	        st.st_mode & 002 ? "every user" : "its group",
	        st.st_mode & S_ISVTX ? ", and the directory's owner can remove anyone's record"
	                             : ", and remove or replace anyone's record");
}

static struct abd_registry *open_registry(const char *cmd, const struct opts *o)
{
	struct abd_registry *reg;
	char why[512];
	int r = abd_registry_open(o->dir, 0, &reg, why, sizeof(why));
	if (r < 0) {
		fprintf(stderr, "abdctl %s: cannot open the registry: %s\n", cmd, why[0] ? why : strerror(-r));
		return NULL;
	}
	return reg;
}

static void print_instance(FILE *out, const uint8_t *id)
{
	for (int i = 0; i < ABD_INSTANCE_SIZE; i++)
		fprintf(out, "%02x", id[i]);
}

/* One entry as a JSON object (no newline). trusted: -1 unknown (not shown), 0, 1. */
static void entry_json(FILE *out, const struct abd_entry *e, const char *event, int trusted)
{
	fputc('{', out);
	if (event)
		fprintf(out, "\"event\":\"%s\",", event);
	fputs("\"name\":", out);
	json_string(out, e->name);
	fputs(",\"service\":", out);
	json_string(out, e->service);
	fputs(",\"instance\":", out);
	if (e->instance) {
		fputc('"', out);
		print_instance(out, e->instance);
		fputc('"', out);
	} else {
		fputs("null", out);
	}
	fprintf(out, ",\"pid\":%d,\"uid\":", (int)e->pid);
	if (e->uid == (uid_t)-1)
		fputs("null", out);
	else
		fprintf(out, "%u", (unsigned)e->uid);
	fprintf(out, ",\"state\":\"%s\",\"reason\":", abd_state_name(e->state));
	json_string(out, e->reason);
	if (e->record && trusted >= 0)
		fprintf(out, ",\"authorized\":%s", trusted ? "true" : "false");
	if (e->record) {
		fputs(",\"socket\":", out);
		json_string(out, abd_record_socket(e->record));
		fputs(",\"meta\":{", out);
		for (size_t i = 0; i < abd_record_meta_count(e->record); i++) {
			const char *k, *v;
			abd_record_meta_at(e->record, i, &k, &v);
			if (i)
				fputc(',', out);
			json_string(out, k);
			fputc(':', out);
			json_string(out, v);
		}
		fputc('}', out);
	}
	fputc('}', out);
}

/* Text: names may hold any byte; show them with control bytes escaped. */
static void print_safe(FILE *out, const char *s)
{
	for (; s && *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c < 0x20 || c == 0x7f)
			fprintf(out, "\\x%02x", c);
		else
			fputc(c, out);
	}
}

/* An alive record of a publisher the caller does not trust shows as "unauthorized". */
static void entry_text(FILE *out, const struct abd_entry *e, const char *event, int trusted)
{
	if (event)
		fprintf(out, "%-8s ", event);
	fprintf(out, "%-8s ",
	        e->state == ABD_STATE_ALIVE && trusted == 0 ? "unauthorized" : abd_state_name(e->state));
	if (e->state == ABD_STATE_INVALID) {
		print_safe(out, e->name);
		fputs("  (", out);
		print_safe(out, e->reason);
		fputs(")\n", out);
		return;
	}
	fprintf(out, "pid %-7d uid %-6u ", (int)e->pid, (unsigned)e->uid);
	print_safe(out, e->service);
	fputc(' ', out);
	print_instance(out, e->instance);
	for (size_t i = 0; i < abd_record_meta_count(e->record); i++) {
		const char *k, *v;
		abd_record_meta_at(e->record, i, &k, &v);
		fprintf(out, " %s=", k);
		print_safe(out, v);
	}
	fputc('\n', out);
}

/* SIGINT/SIGTERM (and SIGHUP) as a descriptor, so the loops wait on one poll. */
static int signals_fd(sigset_t *old)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, old);
	return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

/* ------------------------------------------------------------------ list -- */

void abdctl_list_help(FILE *out)
{
	fprintf(out,
	        "usage: abdctl list [--dir DIR] [--json] [--all] [--publisher-uid UID]...\n"
	        "                   [--publisher-gid GID]...\n\n"
	        "Lists the services alive in the registry; --all adds stale records (dead publishers,\n"
	        "removed by 'abdctl gc') and invalid entries with the reason they were refused.\n"
	        "An alive record whose publisher you do not trust shows as 'unauthorized': lookups,\n"
	        "send, recv and info pass it over.\n"
	        ABDCTL_PUBLISHERS_HELP
	        "--json prints one array of objects: name, service, instance, pid, uid, state\n"
	        "(alive, stale, invalid), reason, authorized (records only), socket, meta.\n"
	        "The registry: --dir, else $ABD_REGISTRY, /run/abd, $XDG_RUNTIME_DIR/abd,\n"
	        "/dev/shm/abd-UID. A registry other users may write is warned about on stderr.\n");
}

int abdctl_list(int argc, char **argv)
{
	struct opts o;
	int r = parse("list", argc, argv, &o, "json all pub", false);
	struct abdctl_publishers *pubs = &o.pubs;
	if (r) {
		free(o.meta);
		return r;
	}
	free(o.meta);
	struct abd_registry *reg = open_registry("list", &o);
	if (!reg)
		return ABDCTL_FAIL;
	abdctl_warn_shared("list", reg);
	struct abd_snapshot *snap;
	r = abd_registry_snapshot(reg, &snap);
	if (r < 0) {
		fprintf(stderr, "abdctl list: %s: %s\n", abd_registry_path(reg), strerror(-r));
		abd_registry_free(reg);
		return ABDCTL_FAIL;
	}
	if (o.json)
		fputc('[', stdout);
	bool first = true;
	for (size_t i = 0; i < abd_snapshot_count(snap); i++) {
		const struct abd_entry *e = abd_snapshot_entry(snap, i);
		if (!o.all && e->state != ABD_STATE_ALIVE)
			continue;
		int trusted = e->record ? abd_entry_trusted(reg, e, &pubs->opts) : -1;
		if (o.json) {
			fputs(first ? "\n" : ",\n", stdout);
			entry_json(stdout, e, NULL, trusted);
		} else {
			entry_text(stdout, e, NULL, trusted);
		}
		first = false;
	}
	if (o.json)
		fputs(first ? "]\n" : "\n]\n", stdout);
	else if (first)
		fprintf(stderr, "(no %s in %s)\n", o.all ? "entries" : "live services",
		        abd_registry_path(reg));
	abd_snapshot_free(snap);
	abd_registry_free(reg);
	return fflush(stdout) == 0 ? ABDCTL_OK : ABDCTL_FAIL;
}

/* ------------------------------------------------------------------ watch -- */

void abdctl_watch_help(FILE *out)
{
	fprintf(out,
	        "usage: abdctl watch [--dir DIR] [--json] [--pidfd] [--publisher-uid UID]...\n"
	        "                    [--publisher-gid GID]...\n\n"
	        "Prints the registry's entries as 'added' events, then every change as it happens:\n"
	        "added, removed, died (a publisher exited without withdrawing). Deaths are pushed by\n"
	        "the kernel (IN_CLOSE_WRITE of the record; --pidfd adds a pidfd per publisher), never\n"
	        "polled. An alive record whose publisher you do not trust shows as 'unauthorized'.\n"
	        "When the kernel's event queue overflows, the registry is read again, the changes\n"
	        "printed, then a line 'overflow' (JSON: {\"event\":\"overflow\"}).\n"
	        ABDCTL_PUBLISHERS_HELP
	        "--json prints one object per line: event, name, service, instance, pid, uid,\n"
	        "state, reason, authorized. Stops cleanly on SIGINT or SIGTERM.\n");
}

struct watch_ctx {
	bool json;
	int err;
	struct abd_reactor *rx;
	struct abd_registry *reg;
	const struct abd_lookup_opts *pubs;
};

/* A signal (SIGINT, SIGTERM, SIGHUP) on the signalfd: stop the loop. */
static void on_signal(struct abd_source *src, int status, uint64_t revents, void *ud)
{
	(void)src, (void)status, (void)revents;
	abd_reactor_stop(ud);
}

static void on_event(struct abd_source *src, int status, enum abd_event_type type,
                     const struct abd_entry *e, void *ud)
{
	(void)src;
	struct watch_ctx *c = ud;
	if (status < 0) {
		c->err = status;
		abd_reactor_stop(c->rx);
		return;
	}
	if (type == ABD_EVENT_OVERFLOW) {
		/* the view was rescanned and the differences printed already */
		if (c->json)
			fputs("{\"event\":\"overflow\"}\n", stdout);
		else
			fputs("overflow (the kernel's event queue overflowed: the registry was read "
			      "again and the changes above are what it found)\n", stdout);
		fflush(stdout);
		return;
	}
	int trusted = e->record ? abd_entry_trusted(c->reg, e, c->pubs) : -1;
	if (c->json) {
		entry_json(stdout, e, abd_event_name(type), trusted);
		fputc('\n', stdout);
	} else {
		entry_text(stdout, e, abd_event_name(type), trusted);
	}
	fflush(stdout);
}

int abdctl_watch(int argc, char **argv)
{
	struct opts o;
	int r = parse("watch", argc, argv, &o, "json pidfd pub", false);
	free(o.meta);
	if (r)
		return r;
	struct abd_registry *reg = open_registry("watch", &o);
	if (!reg)
		return ABDCTL_FAIL;
	abdctl_warn_shared("watch", reg);
	struct abd_watch *w;
	r = abd_watch_new(reg, o.pidfd ? ABD_WATCH_PIDFD : 0, &w);
	if (r < 0) {
		fprintf(stderr, "abdctl watch: %s: %s\n", abd_registry_path(reg), strerror(-r));
		abd_registry_free(reg);
		return ABDCTL_FAIL;
	}
	sigset_t old;
	int sfd = signals_fd(&old);
	struct watch_ctx ctx = { .json = o.json, .reg = reg, .pubs = &o.pubs.opts };
	int rc = ABDCTL_OK;
	/* everything runs on the reactor: the watch (inotify, deaths) and the signals */
	r = abd_reactor_new(0, &ctx.rx);
	if (r == 0)
		r = abd_reactor_add_watch(ctx.rx, w, on_event, &ctx, NULL);
	if (r == 0)
		r = sfd < 0 ? -errno : abd_reactor_add_io(ctx.rx, sfd, POLLIN, on_signal, ctx.rx, NULL);
	if (r == 0)
		r = abd_reactor_run(ctx.rx);
	if (r == 0)
		r = ctx.err;
	abd_watch_free(w);
	abd_reactor_free(ctx.rx);
	if (r < 0) {
		fprintf(stderr, "abdctl watch: %s: %s\n", abd_registry_path(reg),
		        r == -EIDRM ? "the registry directory was removed" : strerror(-r));
		rc = ABDCTL_FAIL;
	}
	if (sfd >= 0)
		close(sfd);
	abd_registry_free(reg);
	return rc;
}

/* ------------------------------------------------------------------ gc -- */

void abdctl_gc_help(FILE *out)
{
	fprintf(out, "usage: abdctl gc [--dir DIR]\n\n"
	             "Removes stale records (their publisher died: nobody holds the record's lock) and\n"
	             "prints how many. Live records and invalid entries are left alone; another user's\n"
	             "stale record in a sticky directory is counted as not removable. Also removes\n"
	             "dead publishers' handshake sockets (.abd-*.sock that no alive record names and\n"
	             "nobody listens on), counted on stderr.\n");
}

int abdctl_gc(int argc, char **argv)
{
	struct opts o;
	int r = parse("gc", argc, argv, &o, "", false);
	free(o.meta);
	if (r)
		return r;
	struct abd_registry *reg = open_registry("gc", &o);
	if (!reg)
		return ABDCTL_FAIL;
	unsigned failed = 0, sfailed = 0;
	/* Sockets first, so their count can be told apart; abd_registry_gc sweeps them too. */
	int sockets = abd_registry_gc_sockets(reg, &sfailed);
	r = sockets < 0 ? sockets : abd_registry_gc(reg, &failed);
	abd_registry_free(reg);
	if (r < 0) {
		fprintf(stderr, "abdctl gc: %s\n", strerror(-r));
		return ABDCTL_FAIL;
	}
	printf("%d\n", r);
	if (sockets)
		fprintf(stderr, "abdctl gc: removed %d dead handshake socket(s)\n", sockets);
	if (sfailed)
		fprintf(stderr, "abdctl gc: %u dead handshake socket(s) could not be removed\n", sfailed);
	if (failed)
		fprintf(stderr, "abdctl gc: %u stale record(s) could not be removed (owned by another "
		                "user in a sticky directory?)\n", failed);
	return ABDCTL_OK;
}

/* ------------------------------------------------------------------ publish -- */

void abdctl_publish_help(FILE *out)
{
	fprintf(out,
	        "usage: abdctl publish [--dir DIR] NAME [--meta KEY=VALUE]... [--allow-uid UID]...\n"
	        "                      [--allow-gid GID]...\n\n"
	        "Publishes a record for service NAME ([A-Za-z0-9._-], at most %d bytes, no leading\n"
	        "dot) and holds it until SIGINT or SIGTERM, then withdraws it. Killed (-9), it leaves\n"
	        "a stale record that watchers are told about at once and 'abdctl gc' removes.\n"
	        "The service exposes a small ring (slot \"ring\": a sealed memfd whose header carries\n"
	        "the record's instance id as its nonce), its eventfd (slot \"wake\") and a handshake\n"
	        "socket answered by this process, so 'abdctl info NAME' can acquire them. Other users\n"
	        "may acquire with --allow-uid UID / --allow-gid GID.\n"
	        "Prints the record's file name.\n",
	        ABD_SERVICE_MAX);
}

static void no_tmpfile(struct abd_registry *reg)
{
	fprintf(stderr, "abdctl publish: %s is on %s (f_type 0x%lx), which has no O_TMPFILE: "
	                "records cannot be published atomically there. Use a tmpfs directory "
	                "(/run, /dev/shm or $XDG_RUNTIME_DIR).\n",
	        abd_registry_path(reg), abd_fs_type_name(abd_registry_fs_type(reg)),
	        abd_registry_fs_type(reg));
}

int abdctl_publish(int argc, char **argv)
{
	struct opts o;
	int r = parse("publish", argc, argv, &o, "meta allow", true);
	if (r) {
		free(o.meta);
		return r;
	}
	struct abd_record *rec;
	if (abd_record_new(o.name, &rec) < 0) {
		fprintf(stderr, "abdctl publish: '%s' is not a service name: use 1..%d bytes of "
		                "[A-Za-z0-9._-], not starting with '.'\n", o.name, ABD_SERVICE_MAX);
		free(o.meta);
		return ABDCTL_USAGE;
	}
	for (int i = 0; i < o.nmeta; i++) {
		char *eq = strchr(o.meta[i], '=');
		if (eq)
			*eq = 0;
		r = eq ? abd_record_add_meta(rec, o.meta[i], eq + 1) : -EINVAL;
		if (r < 0) {
			fprintf(stderr, "abdctl publish: --meta %s: %s\n", o.meta[i],
			        r == -EINVAL ? "expected KEY=VALUE, KEY of [A-Za-z0-9._-]" : strerror(-r));
			free(o.meta);
			abd_record_free(rec);
			return ABDCTL_USAGE;
		}
	}
	free(o.meta);
	struct abd_registry *reg = open_registry("publish", &o);
	if (!reg) {
		abd_record_free(rec);
		return ABDCTL_FAIL;
	}
	/* What a consumer acquires: a ring whose nonce is the record's instance id, its eventfd,
	 * and the handshake socket that hands them out (docs/acquire.md). */
	uint8_t nonce[ABD_INSTANCE_SIZE];
	struct abd_ring *ring = NULL;
	struct abd_acquire_server *srv = NULL;
	r = getrandom(nonce, sizeof(nonce), 0) == (ssize_t)sizeof(nonce) ? 0 : -EIO;
	if (r == 0)
		r = abd_ring_new(64, 256, 0, nonce, &ring);
	if (r == 0)
		r = abd_record_set_instance(rec, nonce);
	if (r == 0)
		r = abd_record_add_fd(rec, "ring", abd_ring_fd(ring), ABD_FD_MEMFD);
	if (r == 0 && abd_ring_wait_fd(ring) >= 0)
		r = abd_record_add_fd(rec, "wake", abd_ring_wait_fd(ring), ABD_FD_EVENTFD);
	if (r == 0)
		r = abd_acquire_server_new(reg, 0, &srv);
	for (int i = 0; r == 0 && i < o.nallow_uids; i++)
		r = abd_acquire_server_allow_uid(srv, o.allow_uids[i]);
	for (int i = 0; r == 0 && i < o.nallow_gids; i++)
		r = abd_acquire_server_allow_gid(srv, o.allow_gids[i]);
	if (r == 0)
		r = abd_record_set_socket(rec, abd_acquire_server_socket(srv));
	if (r < 0) {
		/* the socket cannot be bound where O_TMPFILE is missing either: say the cause */
		if (abd_probe_tmpfile(abd_registry_path(reg)) == -EOPNOTSUPP)
			no_tmpfile(reg);
		else
			fprintf(stderr, "abdctl publish: cannot set up the service's ring and socket: %s\n",
			        strerror(-r));
		abd_acquire_server_free(srv);
		abd_ring_free(ring);
		abd_record_free(rec);
		abd_registry_free(reg);
		return ABDCTL_FAIL;
	}
	sigset_t old;
	int sfd = signals_fd(&old);
	struct abd_publication *pub;
	r = abd_publish(reg, rec, &pub);
	abd_record_free(rec);
	if (r == 0)
		r = abd_acquire_server_serve(srv, abd_publication_record(pub));
	if (r == -EOPNOTSUPP) {
		no_tmpfile(reg);
	} else if (r < 0) {
		fprintf(stderr, "abdctl publish: %s: %s\n", abd_registry_path(reg), strerror(-r));
	}
	if (r < 0) {
		close(sfd);
		abd_acquire_server_free(srv);
		abd_ring_free(ring);
		abd_registry_free(reg);
		return ABDCTL_FAIL;
	}
	/* serve handshakes on the reactor until a signal */
	struct abd_reactor *rx = NULL;
	r = abd_reactor_new(0, &rx);
	if (r == 0)
		r = abd_reactor_add_acquire_server(rx, srv, NULL);
	if (r == 0)
		r = sfd < 0 ? -errno : abd_reactor_add_io(rx, sfd, POLLIN, on_signal, rx, NULL);
	if (r < 0) {
		fprintf(stderr, "abdctl publish: cannot start the reactor: %s\n", strerror(-r));
		abd_reactor_free(rx);
		abd_withdraw(pub);
		close(sfd);
		abd_acquire_server_free(srv);
		abd_ring_free(ring);
		abd_registry_free(reg);
		return ABDCTL_FAIL;
	}
	printf("%s\n", abd_publication_name(pub));
	fflush(stdout);
	int rr = abd_reactor_run(rx);
	if (rr < 0)
		fprintf(stderr, "abdctl publish: reactor: %s\n", strerror(-rr));
	r = abd_withdraw(pub);
	abd_acquire_server_free(srv);
	abd_reactor_free(rx);
	abd_ring_free(ring);
	close(sfd);
	abd_registry_free(reg);
	if (r < 0) {
		fprintf(stderr, "abdctl publish: withdraw: %s\n", strerror(-r));
		return ABDCTL_FAIL;
	}
	return ABDCTL_OK;
}
