/* SPDX-License-Identifier: MIT */
/* abdctl serve / send / recv: ring services (include/abd/service.h) from the shell. */
#include <abd/abd.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "abdctl.h"

#define UNUSED __attribute__((unused))

struct sopts {
	const char *dir, *name;
	unsigned long capacity, slot_size, count;
	long long timeout_ms; /* waiting for the service to appear; -1 forever */
	bool json, count_set, epoll, hold, escaped;
	/* --type NAME[:SIZE[:HASH]] */
	const char *type_name;
	char type_buf[ABD_SERVICE_TYPE_MAX + 1];
	uint32_t type_size;
	uint64_t type_hash;
	char **msgs;
	int nmsgs;
	struct abdctl_publishers pubs;
	/* broadcast (pub, hz) */
	unsigned long subscribers, history, wait_subs;
	uint32_t policy;
	long long interval_ms;
};

static bool number(const char *s, unsigned long *out)
{
	long long v;
	if (!parse_ll(s, 0, LONG_MAX, &v))
		return false;
	*out = (unsigned long)v;
	return true;
}

/* --type NAME[:SIZE[:HASH]]: SIZE decimal bytes (0 or absent: variable), HASH hexadecimal
 * (absent: 0). The name's grammar is the library's (checked by publish/open: -EINVAL). */
static bool parse_type(const char *s, struct sopts *o)
{
	const char *c1 = strchr(s, ':');
	size_t n = c1 ? (size_t)(c1 - s) : strlen(s);
	if (!n || n > ABD_SERVICE_TYPE_MAX)
		return false;
	memcpy(o->type_buf, s, n);
	o->type_buf[n] = 0;
	o->type_name = o->type_buf;
	if (!c1)
		return true;
	const char *c2 = strchr(c1 + 1, ':');
	char *end;
	errno = 0;
	unsigned long size = strtoul(c1 + 1, &end, 10);
	if (end == c1 + 1 || (c2 ? end != c2 : *end != 0) || errno || c1[1] == '-' ||
	    size > ABD_RING_MAX_SLOT_SIZE)
		return false;
	o->type_size = (uint32_t)size;
	if (!c2)
		return true;
	errno = 0;
	unsigned long long hash = strtoull(c2 + 1, &end, 16);
	if (end == c2 + 1 || *end || errno || c2[1] == '-')
		return false;
	o->type_hash = hash;
	return true;
}

/* Options shared by serve/send/recv plus the command's own ("cap slot count timeout json
 * hold msgs pub"); 0 or ABDCTL_USAGE (said why). o->msgs: free it. */
static int sparse(const char *cmd, int argc, char **argv, struct sopts *o, const char *allowed)
{
	enum {
		OPT_CAPACITY = OPT_COMMAND, OPT_SLOT_SIZE, OPT_COUNT, OPT_TIMEOUT, OPT_TYPE, OPT_ESCAPED,
		OPT_HOLD, OPT_EPOLL, OPT_SUBSCRIBERS, OPT_HISTORY, OPT_POLICY, OPT_WAIT, OPT_INTERVAL,
	};
	static const struct option longopts[] = {
		ABDCTL_OPT_DIR,
		ABDCTL_OPT_JSON,
		ABDCTL_OPT_PUBLISHERS,
		{ "capacity", required_argument, NULL, OPT_CAPACITY },
		{ "slot-size", required_argument, NULL, OPT_SLOT_SIZE },
		{ "count", required_argument, NULL, OPT_COUNT },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "type", required_argument, NULL, OPT_TYPE },
		{ "escaped", no_argument, NULL, OPT_ESCAPED },
		{ "hold", no_argument, NULL, OPT_HOLD },
		{ "epoll", no_argument, NULL, OPT_EPOLL },
		{ "subscribers", required_argument, NULL, OPT_SUBSCRIBERS },
		{ "history", required_argument, NULL, OPT_HISTORY },
		{ "policy", required_argument, NULL, OPT_POLICY },
		{ "wait", required_argument, NULL, OPT_WAIT },
		{ "interval", required_argument, NULL, OPT_INTERVAL },
		{ 0 },
	};
	memset(o, 0, sizeof(*o));
	abdctl_publishers_init(&o->pubs);
	o->timeout_ms = 5000;
	o->interval_ms = 1000;
	o->msgs = calloc((size_t)argc, sizeof(*o->msgs));
	if (!o->msgs)
		return ABDCTL_FAIL;
	abdctl_getopt_reset();
	int c;
	int li = -1;
	while ((c = getopt_long(argc, argv, ":", longopts, &li)) != -1) {
		const char *need = c == OPT_CAPACITY ? "cap" : c == OPT_SLOT_SIZE ? "slot"
		                 : c == OPT_COUNT ? "count" : c == OPT_TIMEOUT ? "timeout"
		                 : c == OPT_JSON ? "json" : c == OPT_ESCAPED ? "msgs" : c == OPT_HOLD ? "hold"
		                 : c == OPT_PUBLISHER_UID || c == OPT_PUBLISHER_GID ? "pub"
		                 : c == OPT_SUBSCRIBERS || c == OPT_HISTORY || c == OPT_POLICY ? "bcast"
		                 : c == OPT_WAIT ? "wait" : c == OPT_INTERVAL ? "interval" : NULL;
		if (need && !strstr(allowed, need)) {
			fprintf(stderr, "abdctl %s: unexpected argument '--%s' (see --help)\n", cmd,
			        longopts[li].name);
			return ABDCTL_USAGE;
		}
		long long ms;
		switch (c) {
		case OPT_DIR: o->dir = optarg; break;
		case OPT_JSON: o->json = true; break;
		case OPT_ESCAPED: o->escaped = true; break;
		case OPT_HOLD: o->hold = true; break;
		case OPT_EPOLL: o->epoll = true; break;
		case OPT_PUBLISHER_UID:
		case OPT_PUBLISHER_GID:
			if (abdctl_publisher_option(cmd, c, optarg, &o->pubs))
				return ABDCTL_USAGE;
			break;
		case OPT_POLICY:
			if (strcmp(optarg, "block") != 0 && strcmp(optarg, "overwrite") != 0) {
				fprintf(stderr, "abdctl %s: --policy wants 'block' or 'overwrite', not '%s'\n",
				        cmd, optarg);
				return ABDCTL_USAGE;
			}
			o->policy = strcmp(optarg, "overwrite") == 0 ? ABD_BROADCAST_OVERWRITE
			                                              : ABD_BROADCAST_BLOCK;
			break;
		case OPT_INTERVAL:
			if (!parse_ll(optarg, 1, INT64_MAX / 1000000, &o->interval_ms))
				goto bad_number;
			break;
		case OPT_CAPACITY:
		case OPT_SLOT_SIZE:
		case OPT_COUNT:
		case OPT_SUBSCRIBERS:
		case OPT_HISTORY:
		case OPT_WAIT:
			if (!number(optarg, c == OPT_CAPACITY ? &o->capacity
			                    : c == OPT_SLOT_SIZE ? &o->slot_size
			                    : c == OPT_SUBSCRIBERS ? &o->subscribers
			                    : c == OPT_HISTORY ? &o->history
			                    : c == OPT_WAIT ? &o->wait_subs : &o->count))
				goto bad_number;
			o->count_set |= c == OPT_COUNT;
			break;
		case OPT_TIMEOUT:
			if (!strcmp(optarg, "-1"))
				o->timeout_ms = -1;
			else if (parse_ll(optarg, 0, INT64_MAX / 1000000, &ms))
				o->timeout_ms = ms;
			else
				goto bad_number;
			break;
		case OPT_TYPE:
			if (!parse_type(optarg, o)) {
				fprintf(stderr, "abdctl %s: --type wants NAME[:SIZE[:HASH]] (SIZE in bytes, "
				                "at most %u; HASH in hexadecimal), not '%s'\n", cmd,
				        ABD_RING_MAX_SLOT_SIZE, optarg);
				return ABDCTL_USAGE;
			}
			break;
		default: return abdctl_bad_option(cmd, c, argv);
		}
		continue;
	bad_number:
		for (const struct option *l = longopts; l->name; l++)
			if (l->val == c)
				fprintf(stderr, "abdctl %s: --%s wants a non-negative number, not '%s'\n",
				        cmd, l->name, optarg);
		return ABDCTL_USAGE;
	}
	/* operands: the name, then (send) the messages; after "--" too */
	if (optind < argc)
		o->name = argv[optind++];
	while (optind < argc && strstr(allowed, "msgs"))
		o->msgs[o->nmsgs++] = argv[optind++];
	if (optind < argc) {
		fprintf(stderr, "abdctl %s: unexpected argument '%s' (see --help)\n", cmd, argv[optind]);
		return ABDCTL_USAGE;
	}
	if (!o->name) {
		fprintf(stderr, "abdctl %s: a service name is required (see --help)\n", cmd);
		return ABDCTL_USAGE;
	}
	if (!abd_service_name_valid(o->name)) {
		fprintf(stderr, "abdctl %s: '%s' is not a service name: use 1..%d bytes of "
		                "[A-Za-z0-9._-], not starting with '.'\n", cmd, o->name, ABD_SERVICE_MAX);
		return ABDCTL_USAGE;
	}
	return 0;
}

static void set_type(struct abd_service_config *cfg, const struct sopts *o)
{
	cfg->type_name = o->type_name;
	cfg->type_size = o->type_size;
	cfg->type_hash = o->type_hash;
}

/* Undo print_msg's escaping (\\ and \xNN) in place; the decoded length, or -1 on a bad
 * escape. */
static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static ssize_t unescape(char *s, size_t n)
{
	size_t w = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '\\') {
			s[w++] = s[i];
		} else if (i + 1 < n && s[i + 1] == '\\') {
			s[w++] = '\\';
			i += 1;
		} else if (i + 3 < n && s[i + 1] == 'x' && hexval(s[i + 2]) >= 0 &&
		           hexval(s[i + 3]) >= 0) {
			s[w++] = (char)(hexval(s[i + 2]) << 4 | hexval(s[i + 3]));
			i += 3;
		} else {
			return -1;
		}
	}
	return (ssize_t)w;
}

/* The exit code for a service error. */
static int exit_for(int r)
{
	switch (r) {
	case -ETIMEDOUT: return ABDCTL_NOTFOUND;
	case -EPIPE: return ABDCTL_CLOSED;
	case -EACCES: case -EPERM: return ABDCTL_DENIED;
	case -EPROTOTYPE: case -EPROTONOSUPPORT: return ABDCTL_MISMATCH;
	default: return ABDCTL_FAIL;
	}
}

static const char *explain(int r)
{
	switch (r) {
	case -ETIMEDOUT: return "no publisher of that name appeared in time (--timeout)";
	case -EPIPE: return "the publisher left (withdrew or died)";
	case -EACCES: return "the publisher's access policy refused us";
	case -EPROTOTYPE: return "the service carries another message type";
	case -EPROTONOSUPPORT: return "that record is not a service of a kind this abd knows";
	case -EUSERS: return "every subscriber seat is taken (the publisher's --subscribers)";
	default: return strerror(-r);
	}
}

/* One message as a line: text with control bytes and backslashes escaped, or a JSON object. */
static void print_msg(FILE *out, const char *buf, int len, bool json, unsigned long seq)
{
	if (json) {
		fprintf(out, "{\"seq\":%lu,\"len\":%d,\"data\":", seq, len);
		json_string_n(out, buf, (size_t)len);
		fputs("}\n", out);
		return;
	}
	for (int i = 0; i < len; i++) {
		unsigned char c = (unsigned char)buf[i];
		if (c == '\\')
			fputs("\\\\", out);
		else if (c < 0x20 || c == 0x7f)
			fprintf(out, "\\x%02x", c);
		else
			fputc(c, out);
	}
	fputc('\n', out);
}

static int block_signals(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

/* send and recv: SIGINT, SIGTERM and SIGHUP run a handler that records the signal, so that a
 * blocking call they interrupt returns -EINTR and the command ends cleanly. Any other -EINTR
 * (a ptrace attach or detach, SIGSTOP/SIGCONT: no handler of ours ran) is retried. No
 * SA_RESTART: a sleep must end when the signal comes. A signal that lands between the check
 * of stop_signal and the sleep of the next call would be missed: the handler arms alarm(1),
 * whose SIGALRM (caught, ignored) ends that sleep a second later at the latest. */
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
	if (!stop_signal)
		stop_signal = sig;
	alarm(1);
}

static void on_alarm(UNUSED int sig)
{
}

static void catch_stop_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_stop_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = on_alarm;
	sigaction(SIGALRM, &sa, NULL);
}

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* abd_service_open sleeps until the registry has news of the name, and a signal handler that
 * runs meanwhile ends it with -EINTR: ours (SIGINT/SIGTERM/SIGHUP: stop_signal set) stops the
 * command; another one (SIGALRM) opens again for the time that is left. A stop without a
 * handler (ptrace, SIGSTOP/SIGCONT) does not end the call. */
static int open_until_signal(const char *name, const struct abd_service_config *cfg,
                             unsigned flags, long long timeout_ms, struct abd_service **svc)
{
	/* timeout_ms <= INT64_MAX / 1000000 (sparse): a deadline past the clock's range is none */
	int64_t now = mono_ns(), wait = timeout_ms * 1000000;
	int64_t deadline = timeout_ms < 0 || wait > INT64_MAX - now ? -1 : now + wait;
	for (;;) {
		if (stop_signal)
			return -EINTR;
		int64_t left = deadline < 0 ? -1 : deadline - mono_ns();
		int r = abd_service_open(name, cfg, flags, deadline >= 0 && left < 0 ? 0 : left, svc);
		if (r != -EINTR)
			return r;
	}
}

/* ------------------------------------------------------------------ serve -- */

void abdctl_serve_help(FILE *out)
{
	fprintf(out,
	        "usage: abdctl serve [--dir DIR] [--capacity N] [--slot-size B] [--type T] [--count N]\n"
	        "                    [--json] [--hold] [--epoll] NAME\n\n"
	        "Publishes a ring service NAME (capacity N slots, a power of two, default %u; messages\n"
	        "of up to B bytes, default %u) and prints every message that arrives, one per line\n"
	        "(control bytes escaped as \\xNN), or one JSON object per line with --json. Runs until\n"
	        "SIGINT/SIGTERM (or --count messages), then withdraws: its openers see the service\n"
	        "closed. Send to it with 'abdctl send NAME MSG...'. --hold publishes the ring without\n"
	        "reading it, for 'abdctl send' and 'abdctl recv' to meet through it. --epoll forces\n"
	        "the epoll reactor. --type NAME[:SIZE[:HASH]] publishes a typed service: openers that\n"
	        "name a type must name the same one (abd_service_config's type_name, type_size,\n"
	        "type_hash; SIZE in bytes, 0 or absent: any length; HASH in hexadecimal).\n\n"
	        "Exit: 0 stopped by a signal or after --count messages, 1 failure, 2 usage.\n\n",
	        ABD_SERVICE_DEFAULT_CAPACITY, ABD_SERVICE_DEFAULT_SLOT_SIZE);
	abdctl_serve_reply_help(out);
}

struct serve_state {
	struct abd_service *svc;
	char *buf;
	size_t size;
	bool json;
	unsigned long seen, count;
	bool count_set;
	int err;
};

static void serve_event(struct abd_service *svc, enum abd_service_event ev, UNUSED int status,
                        void *ud)
{
	struct serve_state *st = ud;
	if (ev != ABD_SERVICE_EVENT_READABLE)
		return;
	for (;;) {
		if (st->count_set && st->seen >= st->count)
			break;
		int n = abd_service_try_pop(svc, st->buf, st->size);
		if (n == -EAGAIN)
			break;
		if (n < 0) {
			if (n != -EBADMSG && n != -EOWNERDEAD) {
				st->err = n;
				break;
			}
			continue;
		}
		print_msg(stdout, st->buf, n, st->json, st->seen++);
	}
	fflush(stdout);
	if (st->err || (st->count_set && st->seen >= st->count))
		abd_reactor_stop(abd_service_reactor(svc));
}

static void serve_signal(UNUSED struct abd_source *src, UNUSED int status,
                         UNUSED uint64_t value, void *ud)
{
	struct serve_state *st = ud;
	abd_reactor_stop(abd_service_reactor(st->svc));
}

int abdctl_serve(int argc, char **argv)
{
	/* --reply[=MODE]: a request-response server (abdctl-rpc.c) */
	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (!strcmp(argv[i], "--reply") || !strncmp(argv[i], "--reply=", 8))
			return abdctl_serve_reply(argc, argv);
	struct sopts o;
	int r = sparse("serve", argc, argv, &o, "cap slot count json hold");
	free(o.msgs);
	if (r)
		return r;
	struct abd_service_config cfg = { 0 };
	cfg.dir = o.dir;
	cfg.capacity = (uint32_t)o.capacity;
	cfg.slot_size = (uint32_t)o.slot_size;
	set_type(&cfg, &o);
	cfg.reactor_flags = o.epoll ? ABD_REACTOR_FORCE_EPOLL : 0;
	if (o.capacity > ABD_RING_MAX_CAPACITY || (o.capacity & (o.capacity - 1)) || o.capacity == 1 ||
	    o.slot_size > ABD_RING_MAX_SLOT_SIZE) {
		fprintf(stderr, "abdctl serve: --capacity wants a power of two (2..%u), --slot-size "
		                "1..%u bytes\n", ABD_RING_MAX_CAPACITY, ABD_RING_MAX_SLOT_SIZE);
		return ABDCTL_USAGE;
	}
	int sfd = block_signals();
	struct serve_state st = { .json = o.json, .count = o.count, .count_set = o.count_set };
	r = abd_service_publish(o.name, &cfg, o.hold ? ABD_SERVICE_OBSERVER : ABD_SERVICE_CONSUMER,
	                        &st.svc);
	if (r < 0) {
		fprintf(stderr, "abdctl serve: %s: %s\n", o.name,
		        r == -EOPNOTSUPP ? "the registry's filesystem has no O_TMPFILE: use a tmpfs "
		                           "directory (/run, /dev/shm or $XDG_RUNTIME_DIR)"
		        : r == -EINVAL && o.type_name
		                ? "bad --type (a name of [A-Za-z0-9._:<>-], a size no larger than "
		                  "--slot-size)"
		                : strerror(-r));
		close(sfd);
		return r == -EINVAL && o.type_name ? ABDCTL_USAGE : ABDCTL_FAIL;
	}
	struct abd_registry *wreg;
	if (abd_registry_open(o.dir, 0, &wreg, NULL, 0) == 0) {
		abdctl_warn_shared("serve", wreg);
		abd_registry_free(wreg);
	}
	st.size = (size_t)abd_ring_slot_size(abd_service_ring(st.svc));
	st.buf = malloc(st.size);
	struct abd_reactor *re = abd_service_reactor(st.svc);
	struct abd_source *sig = NULL;
	r = st.buf ? abd_reactor_add_io(re, sfd, POLLIN, serve_signal, &st, &sig) : -ENOMEM;
	if (r == 0 && !o.hold)
		r = abd_service_set_event_fn(st.svc, serve_event, &st);
	if (r == 0) {
		fprintf(stderr, "serving %s (%s reactor)\n", abd_service_record_name(st.svc),
		        abd_backend_name((enum abd_backend)abd_reactor_backend(re)));
		if (!st.count_set || st.count > 0)
			r = abd_reactor_run(re);
	}
	if (r == 0)
		r = st.err;
	if (r < 0)
		fprintf(stderr, "abdctl serve: %s\n", strerror(-r));
	abd_source_free(sig);
	abd_service_close(st.svc);
	free(st.buf);
	close(sfd);
	return r < 0 ? ABDCTL_FAIL : ABDCTL_OK;
}

/* ------------------------------------------------------------------ send -- */

/* The arguments' escapes, checked before anything is opened: 0 and *lens (free it), or an
 * exit code (o->msgs freed). */
static int decode_msgs(const char *cmd, struct sopts *o, size_t **lensp)
{
	size_t *lens = calloc((size_t)o->nmsgs + 1, sizeof(*lens));
	for (int i = 0; lens && i < o->nmsgs; i++) {
		ssize_t len = (ssize_t)strlen(o->msgs[i]);
		if (o->escaped && (len = unescape(o->msgs[i], (size_t)len)) < 0) {
			fprintf(stderr, "abdctl %s: message %d: a bad escape (--escaped takes \\\\ and "
			                "\\xNN)\n", cmd, i + 1);
			free(lens);
			free(o->msgs);
			return ABDCTL_USAGE;
		}
		lens[i] = (size_t)len;
	}
	if (!lens) {
		free(o->msgs);
		return ABDCTL_FAIL;
	}
	*lensp = lens;
	return 0;
}

static int send_all(const char *cmd, struct abd_service *svc, struct sopts *o, size_t *lens);

void abdctl_send_help(FILE *out)
{
	fprintf(out,
	        "usage: abdctl send [--dir DIR] [--timeout MS] [--type T] [--escaped] [--epoll]\n"
	        "                   [--publisher-uid UID]... [--publisher-gid GID]... NAME [MSG...]\n\n"
	        "Opens the ring service NAME as a producer, waiting up to --timeout MS (default 5000;\n"
	        "-1: forever) for it to appear, and sends each MSG as one message, or with no MSG each\n"
	        "line of standard input (without its newline). A full ring makes it wait. --escaped\n"
	        "decodes \\\\ and \\xNN in each message (what recv prints), for binary messages.\n"
	        "--type NAME[:SIZE[:HASH]] opens only a service of that type (see serve); with a SIZE,\n"
	        "every message must be exactly SIZE bytes.\n"
	        ABDCTL_PUBLISHERS_HELP "\n"
	        "Exit: 0 all sent, 1 failure (e.g. a message longer than the slot size), 2 usage,\n"
	        "3 no such service appeared in time, 4 the publisher left before everything was sent,\n"
	        "5 access denied by the publisher's policy, 6 not a ring service / another type,\n"
	        "128 + N stopped by signal N (SIGINT, SIGTERM, SIGHUP) before everything was sent,\n"
	        "also while it waits for the service.\n");
}

int abdctl_send(int argc, char **argv)
{
	struct sopts o;
	int r = sparse("send", argc, argv, &o, "timeout msgs pub");
	struct abdctl_publishers *pubs = &o.pubs;
	if (r) {
		free(o.msgs);
		return r;
	}
	size_t *lens;
	if ((r = decode_msgs("send", &o, &lens)))
		return r;
	struct abd_service_config cfg = { 0 };
	cfg.dir = o.dir;
	set_type(&cfg, &o);
	cfg.publisher_uids = pubs->uids;
	cfg.n_publisher_uids = pubs->opts.n_publisher_uids;
	cfg.publisher_gids = pubs->gids;
	cfg.n_publisher_gids = pubs->opts.n_publisher_gids;
	cfg.reactor_flags = o.epoll ? ABD_REACTOR_FORCE_EPOLL : 0;
	struct abd_service *svc;
	catch_stop_signals();
	r = open_until_signal(o.name, &cfg, ABD_SERVICE_PRODUCER, o.timeout_ms, &svc);
	if (r < 0) {
		free(lens);
		free(o.msgs);
		if (r == -EINTR) {
			fprintf(stderr, "abdctl send: %s: interrupted by %s before the service was "
			                "opened\n", o.name, strsignal(stop_signal));
			return 128 + stop_signal;
		}
		fprintf(stderr, "abdctl send: %s: %s\n", o.name, explain(r));
		return exit_for(r);
	}
	if (abd_service_is_rpc(svc) == 1) {
		fprintf(stderr, "abdctl send: %s: a request-response service (abdctl call calls it)\n",
		        o.name);
		abd_service_close(svc);
		free(lens);
		free(o.msgs);
		return ABDCTL_MISMATCH;
	}
	return send_all("send", svc, &o, lens);
}

/* Push the arguments (or the lines of standard input), then report: the exit code. Frees
 * lens and o->msgs; closes svc. */
static int send_all(const char *cmd, struct abd_service *svc, struct sopts *o, size_t *lens)
{
	int r = 0;
	unsigned long sent = 0;
	bool complete = false; /* every message sent (or end of input reached) */
	if (o->nmsgs) {
		for (int i = 0; r >= 0 && i < o->nmsgs && !stop_signal; i++) {
			while ((r = abd_service_push(svc, o->msgs[i], lens[i], -1)) == -EINTR &&
			       !stop_signal)
				; /* not our signal (ptrace, SIGSTOP/SIGCONT): push again */
			sent += r >= 0;
		}
		complete = sent == (unsigned long)o->nmsgs;
	} else {
		char *line = NULL;
		size_t cap = 0;
		ssize_t n;
		while (r >= 0 && !stop_signal) {
			errno = 0;
			if ((n = getline(&line, &cap, stdin)) < 0) {
				if (errno != EINTR) {
					complete = !ferror(stdin);
					break;
				}
				clearerr(stdin); /* stop_signal, or a spurious EINTR: read again */
				continue;
			}
			if (n > 0 && line[n - 1] == '\n')
				line[--n] = 0;
			if (o->escaped && (n = unescape(line, (size_t)n)) < 0)
				r = -EILSEQ;
			else
				while ((r = abd_service_push(svc, line, (size_t)n, -1)) == -EINTR &&
				       !stop_signal)
					;
			sent += r >= 0;
		}
		free(line);
	}
	free(lens);
	free(o->msgs);
	o->msgs = NULL;
	if (stop_signal && !complete && (r >= 0 || r == -EINTR)) {
		/* stopped before everything was sent (the message being pushed, if any, was not) */
		fprintf(stderr, "abdctl %s: %s: interrupted by %s after %lu message%s\n", cmd, o->name,
		        strsignal(stop_signal), sent, sent == 1 ? "" : "s");
		abd_service_close(svc);
		return 128 + stop_signal;
	}
	if (r == -EMSGSIZE && o->type_size)
		fprintf(stderr, "abdctl %s: %s: message %lu: not %u bytes (type %s)\n", cmd, o->name,
		        sent + 1, o->type_size, o->type_name);
	else if (r == -EILSEQ)
		fprintf(stderr, "abdctl %s: %s: message %lu: a bad escape (--escaped takes \\\\ "
		        "and \\xNN)\n", cmd, o->name, sent + 1);
	else if (r < 0)
		fprintf(stderr, "abdctl %s: %s: message %lu: %s\n", cmd, o->name, sent + 1,
		        r == -EMSGSIZE ? "longer than the service's slot size" : explain(r));
	if (r >= 0 && o->hold) {
		/* pub --hold: serve late subscribers (the history) until a signal */
		fprintf(stderr, "holding %s\n", abd_service_record_name(svc));
		while (!stop_signal)
			(void)abd_reactor_run_once(abd_service_reactor(svc), 1000ll * 1000 * 1000);
	}
	abd_service_close(svc);
	if (r == -EILSEQ)
		return ABDCTL_USAGE;
	return r < 0 ? exit_for(r) : ABDCTL_OK;
}

/* ------------------------------------------------------------------ recv -- */

void abdctl_recv_help(FILE *out)
{
	fprintf(out,
	        "usage: abdctl recv [--dir DIR] [--timeout MS] [--count N] [--type T] [--json] [--epoll]\n"
	        "                   [--publisher-uid UID]... [--publisher-gid GID]... NAME\n\n"
	        "Opens the ring service NAME as a consumer, waiting up to --timeout MS (default 5000;\n"
	        "-1: forever) for it to appear, and prints every message it pops, one per line (control\n"
	        "bytes escaped as \\xNN), or one JSON object per line with --json: {\"seq\":N,\"len\":N,\n"
	        "\"data\":\"...\"}. Stops after --count N messages, on SIGINT/SIGTERM, or when the\n"
	        "publisher has left and the ring is drained. --type NAME[:SIZE[:HASH]] opens only a\n"
	        "service of that type (see serve).\n"
	        ABDCTL_PUBLISHERS_HELP "\n"
	        "Exit: 0 --count reached or interrupted, 1 failure, 2 usage, 3 no such service\n"
	        "appeared in time, 4 the publisher left (after printing what was left in the ring),\n"
	        "5 access denied by the publisher's policy, 6 not a ring service / another type.\n");
}

/* recv, and sub (a broadcast service only: losses reported) */
static int receive(const char *cmd, int argc, char **argv, bool sub)
{
	struct sopts o;
	int r = sparse(cmd, argc, argv, &o, "timeout count json pub");
	struct abdctl_publishers *pubs = &o.pubs;
	free(o.msgs);
	if (r)
		return r;
	struct abd_service_config cfg = { 0 };
	cfg.dir = o.dir;
	set_type(&cfg, &o);
	cfg.publisher_uids = pubs->uids;
	cfg.n_publisher_uids = pubs->opts.n_publisher_uids;
	cfg.publisher_gids = pubs->gids;
	cfg.n_publisher_gids = pubs->opts.n_publisher_gids;
	cfg.reactor_flags = o.epoll ? ABD_REACTOR_FORCE_EPOLL : 0;
	catch_stop_signals();
	struct abd_service *svc;
	r = open_until_signal(o.name, &cfg, ABD_SERVICE_CONSUMER, o.timeout_ms, &svc);
	if (r == -EINTR)
		return ABDCTL_OK; /* stopped by SIGINT/SIGTERM/SIGHUP while waiting: a clean end */
	if (r < 0) {
		fprintf(stderr, "abdctl %s: %s: %s\n", cmd, o.name, explain(r));
		return exit_for(r);
	}
	if (sub && abd_service_is_broadcast(svc) != 1) {
		fprintf(stderr, "abdctl sub: %s: not a broadcast service (abdctl recv takes a ring)\n",
		        o.name);
		abd_service_close(svc);
		return ABDCTL_MISMATCH;
	}
	struct abd_service_stats sst;
	size_t size = abd_service_stats(svc, &sst) == 0 ? (size_t)sst.slot_size : 0;
	char *buf = malloc(size ? size : 1);
	unsigned long seen = 0;
	int64_t lost = 0;
	r = buf ? 0 : -ENOMEM;
	while (r >= 0 && (!o.count_set || seen < o.count) && !stop_signal) {
		r = abd_service_pop(svc, buf, size, -1);
		int64_t l = abd_service_lost(svc);
		if (l > lost) { /* overwritten before we read them (the overwrite policy) */
			if (o.json)
				printf("{\"lost\":%lld,\"total_lost\":%lld}\n", (long long)(l - lost),
				       (long long)l);
			else
				fprintf(stderr, "abdctl %s: %s: lost %lld message%s (%lld in all)\n", cmd,
				        o.name, (long long)(l - lost), l - lost == 1 ? "" : "s",
				        (long long)l);
			lost = l;
		}
		/* -EINTR: our signal (the loop ends) or a spurious one (ptrace, SIGSTOP/SIGCONT:
		 * pop again) */
		if (r == -EINTR || r == -EBADMSG || r == -EOWNERDEAD) {
			r = 0;
			continue;
		}
		if (r >= 0) {
			print_msg(stdout, buf, r, o.json, seen++);
			fflush(stdout);
		}
	}
	if (r < 0)
		fprintf(stderr, "abdctl %s: %s: %s\n", cmd, o.name, explain(r));
	free(buf);
	abd_service_close(svc);
	return r < 0 ? exit_for(r) : ABDCTL_OK;
}

int abdctl_recv(int argc, char **argv)
{
	return receive("recv", argc, argv, false);
}

/* ------------------------------------------------------------------ pub / sub / hz -- */

void abdctl_pub_help(FILE *out)
{
	fprintf(out,
	        "usage: abdctl pub [--dir DIR] [--capacity N] [--slot-size B] [--subscribers N]\n"
	        "                  [--history N] [--policy block|overwrite] [--wait N] [--timeout MS]\n"
	        "                  [--type T] [--escaped] [--hold] NAME [MSG...]\n\n"
	        "Publishes a broadcast service NAME (every subscriber gets every message:\n"
	        "docs/broadcast.md): capacity N slots (a power of two, default %u), messages of up\n"
	        "to B bytes (default %u), at most --subscribers N at a time (default %u), the last\n"
	        "--history N messages kept for late subscribers (< capacity, default 0), and what a\n"
	        "slow subscriber costs: --policy block (the default: pub waits for it) or overwrite\n"
	        "(it loses the oldest messages, and is told how many). --wait N first waits up to\n"
	        "--timeout MS (default 5000; -1 forever) for N subscribers. Then sends each MSG (or\n"
	        "each line of standard input) and withdraws: subscribers get what was sent, then the\n"
	        "service closes. --hold stays (serving the history to late subscribers) until\n"
	        "SIGINT/SIGTERM. --escaped and --type as for send.\n\n"
	        "Exit: 0 all sent, 1 failure, 2 usage, 3 fewer than --wait N subscribers came in time,\n"
	        "128 + N stopped by signal N before everything was sent.\n",
	        ABD_SERVICE_DEFAULT_CAPACITY, ABD_SERVICE_DEFAULT_SLOT_SIZE,
	        ABD_BROADCAST_DEFAULT_SUBSCRIBERS);
}

int abdctl_pub(int argc, char **argv)
{
	struct sopts o;
	int r = sparse("pub", argc, argv, &o, "cap slot bcast wait timeout msgs hold");
	if (r) {
		free(o.msgs);
		return r;
	}
	size_t *lens;
	if ((r = decode_msgs("pub", &o, &lens)))
		return r;
	struct abd_service_config cfg = { 0 };
	cfg.dir = o.dir;
	cfg.capacity = (uint32_t)o.capacity;
	cfg.slot_size = (uint32_t)o.slot_size;
	set_type(&cfg, &o);
	struct abd_broadcast_opts bo = { .subscribers = (uint32_t)o.subscribers,
		                         .history = (uint32_t)o.history, .policy = o.policy };
	struct abd_service *svc = NULL;
	if (o.subscribers > ABD_BROADCAST_MAX_SUBSCRIBERS || o.slot_size > ABD_BROADCAST_MAX_PAYLOAD ||
	    o.capacity > UINT32_MAX)
		r = -EINVAL;
	else
		r = abd_service_publish_broadcast(o.name, &cfg, &bo, 0, &svc);
	if (r < 0) {
		fprintf(stderr, "abdctl pub: %s: %s\n", o.name,
		        r == -EINVAL ? "bad geometry (--capacity a power of two, --history below it, "
		                       "--subscribers 1..64, --slot-size up to 1 GiB) or --type"
		                     : strerror(-r));
		free(lens);
		free(o.msgs);
		return r == -EINVAL ? ABDCTL_USAGE : ABDCTL_FAIL;
	}
	catch_stop_signals();
	int64_t deadline = o.timeout_ms < 0 ? -1 : mono_ns() + o.timeout_ms * 1000000;
	for (;;) { /* --wait N: serve openers until N subscribers are there */
		struct abd_service_stats st;
		if (abd_service_stats(svc, &st) == 0 && st.consumers >= o.wait_subs)
			break;
		if (stop_signal || (deadline >= 0 && mono_ns() >= deadline)) {
			fprintf(stderr, "abdctl pub: %s: %s before %lu subscriber%s came\n", o.name,
			        stop_signal ? "interrupted" : "timed out", o.wait_subs,
			        o.wait_subs == 1 ? "" : "s");
			free(lens);
			free(o.msgs);
			abd_service_close(svc);
			return stop_signal ? 128 + stop_signal : ABDCTL_NOTFOUND;
		}
		(void)abd_reactor_run_once(abd_service_reactor(svc), 10ll * 1000 * 1000);
	}
	return send_all("pub", svc, &o, lens);
}

void abdctl_sub_help(FILE *out)
{
	fprintf(out,
	        "usage: abdctl sub [--dir DIR] [--timeout MS] [--count N] [--type T] [--json] [--epoll]\n"
	        "                  [--publisher-uid UID]... [--publisher-gid GID]... NAME\n\n"
	        "Subscribes to the broadcast service NAME (waiting up to --timeout MS, default 5000;\n"
	        "-1: forever) and prints every message, first the history the publisher keeps, as\n"
	        "recv does (--json: one object per line). Messages the overwrite policy took before\n"
	        "they were read are reported: on stderr ('lost N messages'), or with --json as a line\n"
	        "{\"lost\":N,\"total_lost\":M}. Stops after --count N messages, on SIGINT/SIGTERM, or\n"
	        "when the publisher has left and everything it sent is printed.\n"
	        ABDCTL_PUBLISHERS_HELP "\n"
	        "Exit: as recv; 6 also when NAME is a ring service, not a broadcast one.\n");
}

int abdctl_sub(int argc, char **argv)
{
	return receive("sub", argc, argv, true);
}

void abdctl_hz_help(FILE *out)
{
	fprintf(out,
	        "usage: abdctl hz [--dir DIR] [--timeout MS] [--interval MS] [--count N] [--json]\n"
	        "                 [--publisher-uid UID]... [--publisher-gid GID]... NAME\n\n"
	        "Watches a running service without taking part: it attaches as an observer (no\n"
	        "seat, no role: it never holds a publisher back nor takes a message) and prints,\n"
	        "every --interval MS (default 1000), the message rate, and for a broadcast service\n"
	        "the bytes per second, the live subscribers and the latency from a message's send to\n"
	        "the moment hz saw it (min / median / max of the interval; hz looks every\n"
	        "millisecond, so this tells a steady stream from a stalled or bursty one; abd-perf\n"
	        "measures latency precisely). --count N stops after N lines. Stops when the\n"
	        "publisher leaves.\n"
	        ABDCTL_PUBLISHERS_HELP "\n"
	        "Exit: 0 --count reached or interrupted, 3 no such service appeared in time, 4 the\n"
	        "publisher left, 1 failure, 2 usage.\n");
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int abdctl_hz(int argc, char **argv)
{
	struct sopts o;
	int r = sparse("hz", argc, argv, &o, "timeout interval count json pub");
	free(o.msgs);
	if (r)
		return r;
	struct abd_service_config cfg = { 0 };
	cfg.dir = o.dir;
	cfg.publisher_uids = o.pubs.uids;
	cfg.n_publisher_uids = o.pubs.opts.n_publisher_uids;
	cfg.publisher_gids = o.pubs.gids;
	cfg.n_publisher_gids = o.pubs.opts.n_publisher_gids;
	catch_stop_signals();
	struct abd_service *svc;
	r = open_until_signal(o.name, &cfg, ABD_SERVICE_OBSERVER, o.timeout_ms, &svc);
	if (r == -EINTR)
		return ABDCTL_OK;
	if (r < 0) {
		fprintf(stderr, "abdctl hz: %s: %s\n", o.name, explain(r));
		return exit_for(r);
	}
	bool bcast = abd_service_is_broadcast(svc) == 1;
	size_t cap = 1024, n = 0;
	uint64_t *lat = malloc(cap * sizeof(*lat));
	struct abd_service_stats st, prev;
	r = lat ? abd_service_stats(svc, &prev) : -ENOMEM;
	int64_t t0 = mono_ns();
	unsigned long lines = 0;
	uint64_t seen_head = r == 0 ? prev.pushed : 0;
	while (r >= 0 && !stop_signal && (!o.count_set || lines < o.count)) {
		struct timespec ms = { 0, 1000 * 1000 };
		nanosleep(&ms, NULL);
		(void)abd_reactor_run_once(abd_service_reactor(svc), 0); /* the publisher's news */
		if (abd_service_closed(svc) != 0) {
			r = -EPIPE;
			break;
		}
		if ((r = abd_service_stats(svc, &st)) < 0)
			break;
		int64_t now = mono_ns();
		if (bcast && st.pushed != seen_head && st.last_send_ns && n < cap) {
			lat[n++] = (uint64_t)now > st.last_send_ns ? (uint64_t)now - st.last_send_ns : 0;
			seen_head = st.pushed;
		}
		if (now - t0 < o.interval_ms * 1000000)
			continue;
		double secs = (double)(now - t0) / 1e9;
		double rate = (double)(st.pushed - prev.pushed) / secs;
		double bps = (double)(st.bytes - prev.bytes) / secs;
		qsort(lat, n, sizeof(*lat), cmp_u64);
		double lmin = n ? (double)lat[0] / 1e3 : 0, lmed = n ? (double)lat[n / 2] / 1e3 : 0,
		       lmax = n ? (double)lat[n - 1] / 1e3 : 0;
		if (o.json) {
			printf("{\"service\":");
			json_string(stdout, o.name);
			printf(",\"kind\":\"%s\",\"msgs_per_s\":%.1f,\"total\":%llu",
			       bcast ? "broadcast" : "ring", rate, (unsigned long long)st.pushed);
			if (bcast) {
				printf(",\"bytes_per_s\":%.1f,\"subscribers\":%u", bps, st.consumers);
				if (n)
					printf(",\"latency_us\":{\"min\":%.1f,\"median\":%.1f,\"max\":%.1f}",
					       lmin, lmed, lmax);
			}
			printf("}\n");
		} else if (bcast) {
			printf("%s: %.1f msg/s, %.1f B/s, %u subscriber%s", o.name, rate, bps,
			       st.consumers, st.consumers == 1 ? "" : "s");
			if (n)
				printf(", latency min %.1f us, median %.1f us, max %.1f us", lmin, lmed,
				       lmax);
			printf("\n");
		} else {
			printf("%s: %.1f msg/s\n", o.name, rate);
		}
		fflush(stdout);
		lines++;
		prev = st;
		t0 = now;
		n = 0;
	}
	free(lat);
	if (r < 0 && r != -EPIPE)
		fprintf(stderr, "abdctl hz: %s: %s\n", o.name, explain(r));
	abd_service_close(svc);
	return r == -EPIPE ? ABDCTL_CLOSED : r < 0 ? exit_for(r) : ABDCTL_OK;
}
