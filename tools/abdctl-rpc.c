/* SPDX-License-Identifier: MIT */
/* abdctl serve --reply / call: request-response services (include/abd/service.h,
 * docs/rpc.md) from the shell. */
#include <abd/abd.h>
#include <ctype.h>
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

enum reply_mode { REPLY_ECHO, REPLY_UPPER, REPLY_REVERSE };

struct ropts {
	const char *dir, *name;
	unsigned long capacity, slot_size, response_size, count;
	bool count_set, json, epoll, escaped;
	int64_t timeout_ns; /* call: waiting for the service, then for each answer; -1 forever */
	enum reply_mode mode;
	char **msgs;
	int nmsgs;
	struct abdctl_publishers pubs;
};

/* --reply[=echo|upper|reverse]: false for another mode */
static bool parse_mode(const char *s, enum reply_mode *m)
{
	if (!s || !strcmp(s, "echo"))
		*m = REPLY_ECHO;
	else if (!strcmp(s, "upper"))
		*m = REPLY_UPPER;
	else if (!strcmp(s, "reverse"))
		*m = REPLY_REVERSE;
	else
		return false;
	return true;
}

static int rparse(const char *cmd, int argc, char **argv, struct ropts *o, bool serve)
{
	enum {
		OPT_CAPACITY = OPT_COMMAND, OPT_SLOT_SIZE, OPT_RESPONSE_SIZE, OPT_COUNT, OPT_TIMEOUT,
		OPT_REPLY, OPT_ESCAPED, OPT_EPOLL,
	};
	static const struct option longopts[] = {
		ABDCTL_OPT_DIR,
		ABDCTL_OPT_JSON,
		ABDCTL_OPT_PUBLISHERS,
		{ "capacity", required_argument, NULL, OPT_CAPACITY },
		{ "slot-size", required_argument, NULL, OPT_SLOT_SIZE },
		{ "response-size", required_argument, NULL, OPT_RESPONSE_SIZE },
		{ "count", required_argument, NULL, OPT_COUNT },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "reply", optional_argument, NULL, OPT_REPLY },
		{ "escaped", no_argument, NULL, OPT_ESCAPED },
		{ "epoll", no_argument, NULL, OPT_EPOLL },
		{ 0 },
	};
	memset(o, 0, sizeof(*o));
	abdctl_publishers_init(&o->pubs);
	o->timeout_ns = 5000ll * 1000 * 1000;
	o->msgs = calloc((size_t)argc, sizeof(*o->msgs));
	if (!o->msgs)
		return ABDCTL_FAIL;
	abdctl_getopt_reset();
	int c, li = -1;
	while ((c = getopt_long(argc, argv, ":", longopts, &li)) != -1) {
		bool serve_only = c == OPT_CAPACITY || c == OPT_SLOT_SIZE || c == OPT_RESPONSE_SIZE ||
		                  c == OPT_COUNT || c == OPT_REPLY;
		bool call_only = c == OPT_TIMEOUT || c == OPT_ESCAPED || c == OPT_PUBLISHER_UID ||
		                 c == OPT_PUBLISHER_GID;
		if ((serve_only && !serve) || (call_only && serve)) {
			fprintf(stderr, "abdctl %s: unexpected argument '--%s' (see --help)\n", cmd,
			        longopts[li].name);
			return ABDCTL_USAGE;
		}
		long long v;
		switch (c) {
		case OPT_DIR: o->dir = optarg; break;
		case OPT_JSON: o->json = true; break;
		case OPT_EPOLL: o->epoll = true; break;
		case OPT_ESCAPED: o->escaped = true; break;
		case OPT_PUBLISHER_UID:
		case OPT_PUBLISHER_GID:
			if (abdctl_publisher_option(cmd, c, optarg, &o->pubs))
				return ABDCTL_USAGE;
			break;
		case OPT_REPLY:
			if (!parse_mode(optarg, &o->mode)) {
				fprintf(stderr, "abdctl %s: --reply takes echo, upper or reverse, not '%s'\n",
				        cmd, optarg);
				return ABDCTL_USAGE;
			}
			break;
		case OPT_TIMEOUT:
			if (!parse_ms(optarg, &o->timeout_ns))
				goto bad_number;
			break;
		case OPT_CAPACITY:
		case OPT_SLOT_SIZE:
		case OPT_RESPONSE_SIZE:
		case OPT_COUNT:
			if (!parse_ll(optarg, 0, LONG_MAX, &v))
				goto bad_number;
			*(c == OPT_CAPACITY ? &o->capacity : c == OPT_SLOT_SIZE ? &o->slot_size
			  : c == OPT_RESPONSE_SIZE ? &o->response_size : &o->count) = (unsigned long)v;
			o->count_set |= c == OPT_COUNT;
			break;
		default: return abdctl_bad_option(cmd, c, argv);
		}
		continue;
	bad_number:
		fprintf(stderr, "abdctl %s: --%s wants a non-negative number%s, not '%s'\n", cmd,
		        longopts[li].name, c == OPT_TIMEOUT ? " of milliseconds or -1" : "", optarg);
		return ABDCTL_USAGE;
	}
	if (optind < argc)
		o->name = argv[optind++];
	while (optind < argc && !serve)
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
	if (!serve && !o->nmsgs) {
		fprintf(stderr, "abdctl %s: a message is required (see --help)\n", cmd);
		return ABDCTL_USAGE;
	}
	return 0;
}

static const char *explain(int r)
{
	switch (r) {
	case -ETIMEDOUT: return "no answer in time (--timeout)";
	case -EPIPE: return "the server left (withdrew or died)";
	case -EACCES: return "the server's access policy refused us";
	case -EPROTONOSUPPORT: return "that service is not a request-response service";
	case -EMSGSIZE: return "the request is longer than the service takes";
	default: return strerror(-r);
	}
}

static int exit_for(int r)
{
	switch (r) {
	case -EPIPE: return ABDCTL_CLOSED;
	case -EACCES: case -EPERM: return ABDCTL_DENIED;
	case -EPROTOTYPE: case -EPROTONOSUPPORT: return ABDCTL_MISMATCH;
	default: return ABDCTL_FAIL;
	}
}

/* ------------------------------------------------------------------ serve --reply -- */

void abdctl_serve_reply_help(FILE *out)
{
	fprintf(out,
	        "usage: abdctl serve --reply[=MODE] [--dir DIR] [--capacity N] [--slot-size B]\n"
	        "                    [--response-size B] [--count N] [--json] [--epoll] NAME\n\n"
	        "Publishes a request-response service NAME and answers every call: MODE echo (the\n"
	        "default) answers each request with itself, upper with its ASCII letters in upper\n"
	        "case, reverse with its bytes in reverse order. Prints each request as it is\n"
	        "answered, one per line (control bytes escaped as \\xNN), or one JSON object per\n"
	        "line with --json. Requests go through a ring of N slots (default %u) of up to B\n"
	        "bytes (default %u); answers are at most --response-size bytes (default: the same).\n"
	        "Runs until SIGINT/SIGTERM (or --count calls answered), then withdraws: pending\n"
	        "calls fail. Call it with 'abdctl call NAME MSG'.\n\n"
	        "Exit: 0 stopped by a signal or after --count calls, 1 failure, 2 usage.\n",
	        ABD_SERVICE_DEFAULT_CAPACITY, ABD_SERVICE_DEFAULT_SLOT_SIZE);
}

static void print_line(FILE *out, const char *buf, size_t len)
{
	for (size_t i = 0; i < len; i++) {
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

struct reply_state {
	struct abd_service *svc;
	char *req, *resp;
	size_t req_size, resp_size;
	enum reply_mode mode;
	bool json, count_set;
	unsigned long seen, count;
	int err;
};

static size_t transform(enum reply_mode mode, const char *in, size_t n, char *out, size_t max)
{
	if (n > max)
		n = max;
	for (size_t i = 0; i < n; i++) {
		char c = mode == REPLY_REVERSE ? in[n - 1 - i] : in[i];
		out[i] = mode == REPLY_UPPER && c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
	}
	return n;
}

static void reply_event(struct abd_service *svc, enum abd_service_event ev, UNUSED int status,
                        void *ud)
{
	struct reply_state *st = ud;
	if (ev != ABD_SERVICE_EVENT_READABLE)
		return;
	for (;;) {
		if (st->count_set && st->seen >= st->count)
			break;
		uint64_t token;
		int n = abd_service_try_take(svc, st->req, st->req_size, &token);
		if (n == -EAGAIN)
			break;
		if (n < 0) {
			st->err = n;
			break;
		}
		size_t m = transform(st->mode, st->req, (size_t)n, st->resp, st->resp_size);
		int r = abd_service_reply(svc, token, st->resp, m);
		if (st->json) {
			fprintf(stdout, "{\"seq\":%lu,\"len\":%d,\"data\":", st->seen, n);
			json_string_n(stdout, st->req, (size_t)n);
			fprintf(stdout, ",\"answered\":%s}\n", r == 0 ? "true" : "false");
		} else {
			print_line(stdout, st->req, (size_t)n);
		}
		st->seen++;
	}
	fflush(stdout);
	if (st->err || (st->count_set && st->seen >= st->count))
		abd_reactor_stop(abd_service_reactor(svc));
}

static void reply_signal(UNUSED struct abd_source *src, UNUSED int status, UNUSED uint64_t value,
                         void *ud)
{
	struct reply_state *st = ud;
	abd_reactor_stop(abd_service_reactor(st->svc));
}

int abdctl_serve_reply(int argc, char **argv)
{
	struct ropts o;
	int r = rparse("serve", argc, argv, &o, true);
	free(o.msgs);
	if (r)
		return r;
	if (o.capacity > ABD_RING_MAX_CAPACITY || (o.capacity & (o.capacity - 1)) ||
	    o.capacity == 1 || o.slot_size > ABD_RING_MAX_SLOT_SIZE - 64 ||
	    o.response_size > ABD_RING_MAX_SLOT_SIZE) {
		fprintf(stderr, "abdctl serve: --capacity wants a power of two (2..%u), --slot-size "
		                "and --response-size at most %u bytes\n", ABD_RING_MAX_CAPACITY,
		        ABD_RING_MAX_SLOT_SIZE - 64);
		return ABDCTL_USAGE;
	}
	struct abd_service_config cfg = { 0 };
	cfg.dir = o.dir;
	cfg.capacity = (uint32_t)o.capacity;
	cfg.slot_size = (uint32_t)o.slot_size;
	cfg.reactor_flags = o.epoll ? ABD_REACTOR_FORCE_EPOLL : 0;
	struct abd_rpc_opts ro = { .response_size = (uint32_t)o.response_size };
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	struct reply_state st = { .mode = o.mode, .json = o.json, .count = o.count,
		                  .count_set = o.count_set };
	r = abd_service_publish_rpc(o.name, &cfg, &ro, 0, &st.svc);
	if (r < 0) {
		fprintf(stderr, "abdctl serve: %s: %s\n", o.name,
		        r == -EOPNOTSUPP ? "the registry's filesystem has no O_TMPFILE (use tmpfs), or "
		                           "the kernel has no F_SEAL_FUTURE_WRITE"
		                         : strerror(-r));
		close(sfd);
		return ABDCTL_FAIL;
	}
	struct abd_registry *wreg;
	if (abd_registry_open(o.dir, 0, &wreg, NULL, 0) == 0) {
		abdctl_warn_shared("serve", wreg);
		abd_registry_free(wreg);
	}
	st.req_size = o.slot_size ? o.slot_size : ABD_SERVICE_DEFAULT_SLOT_SIZE;
	st.resp_size = o.response_size ? o.response_size : st.req_size;
	st.req = malloc(st.req_size);
	st.resp = malloc(st.resp_size);
	struct abd_reactor *re = abd_service_reactor(st.svc);
	struct abd_source *sig = NULL;
	r = st.req && st.resp ? abd_reactor_add_io(re, sfd, POLLIN, reply_signal, &st, &sig) : -ENOMEM;
	if (r == 0)
		r = abd_service_set_event_fn(st.svc, reply_event, &st);
	if (r == 0) {
		fprintf(stderr, "serving %s, answering (%s reactor)\n", abd_service_record_name(st.svc),
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
	free(st.req);
	free(st.resp);
	close(sfd);
	return r < 0 ? ABDCTL_FAIL : ABDCTL_OK;
}

/* ------------------------------------------------------------------ call -- */

void abdctl_call_help(FILE *out)
{
	fprintf(out,
	        "usage: abdctl call [--dir DIR] [--timeout MS] [--escaped] [--json] [--epoll]\n"
	        "                   [--publisher-uid UID]... [--publisher-gid GID]... NAME MSG...\n\n"
	        "Opens the request-response service NAME, waiting up to --timeout MS (default 5000;\n"
	        "-1: forever) for it to appear, calls it with each MSG in turn, each call with a\n"
	        "deadline of --timeout MS, and prints each answer as a line (control bytes escaped as\n"
	        "\\xNN), or as a JSON object with --json: {\"seq\":N,\"len\":N,\"data\":\"...\",\"us\":N}\n"
	        "(us: the call's round trip in microseconds). --escaped decodes \\\\ and \\xNN in each\n"
	        "message.\n"
	        ABDCTL_PUBLISHERS_HELP "\n"
	        "Exit: 0 every call answered, 1 failure (e.g. no answer in time), 2 usage, 3 no such\n"
	        "service appeared in time, 4 the server left, 5 access denied by the server's policy,\n"
	        "6 not a request-response service, 128 + N stopped by signal N.\n");
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* \\ and \xNN, in place: the decoded length, or -1 */
static ssize_t unescape(char *s, size_t n)
{
	size_t w = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '\\')
			s[w++] = s[i];
		else if (i + 1 < n && s[i + 1] == '\\')
			s[w++] = '\\', i++;
		else if (i + 3 < n && s[i + 1] == 'x' && hexval(s[i + 2]) >= 0 && hexval(s[i + 3]) >= 0)
			s[w++] = (char)(hexval(s[i + 2]) << 4 | hexval(s[i + 3])), i += 3;
		else
			return -1;
	}
	return (ssize_t)w;
}

static volatile sig_atomic_t stop_signal;

static void on_stop(int sig)
{
	if (!stop_signal)
		stop_signal = sig;
}

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int abdctl_call(int argc, char **argv)
{
	struct ropts o;
	int r = rparse("call", argc, argv, &o, false);
	if (r) {
		free(o.msgs);
		return r;
	}
	size_t *lens = calloc((size_t)o.nmsgs, sizeof(*lens));
	for (int i = 0; lens && i < o.nmsgs; i++) {
		ssize_t len = (ssize_t)strlen(o.msgs[i]);
		if (o.escaped && (len = unescape(o.msgs[i], (size_t)len)) < 0) {
			fprintf(stderr, "abdctl call: message %d: a bad escape (--escaped takes \\\\ and "
			                "\\xNN)\n", i + 1);
			free(lens);
			free(o.msgs);
			return ABDCTL_USAGE;
		}
		lens[i] = (size_t)len;
	}
	if (!lens) {
		free(o.msgs);
		return ABDCTL_FAIL;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	struct abd_service_config cfg = { 0 };
	cfg.dir = o.dir;
	cfg.publisher_uids = o.pubs.uids;
	cfg.n_publisher_uids = o.pubs.opts.n_publisher_uids;
	cfg.publisher_gids = o.pubs.gids;
	cfg.n_publisher_gids = o.pubs.opts.n_publisher_gids;
	cfg.reactor_flags = o.epoll ? ABD_REACTOR_FORCE_EPOLL : 0;
	struct abd_service *svc = NULL;
	r = abd_service_open(o.name, &cfg, ABD_SERVICE_PRODUCER, o.timeout_ns, &svc);
	if (r == 0 && abd_service_is_rpc(svc) != 1)
		r = -EPROTONOSUPPORT;
	if (r < 0) {
		abd_service_close(svc);
		free(lens);
		free(o.msgs);
		if (r == -EINTR && stop_signal)
			return 128 + stop_signal;
		fprintf(stderr, "abdctl call: %s: %s\n", o.name,
		        r == -ETIMEDOUT ? "no server of that name appeared in time (--timeout)"
		                        : explain(r));
		return r == -ETIMEDOUT ? ABDCTL_NOTFOUND : exit_for(r);
	}
	size_t size = ABD_RING_MAX_SLOT_SIZE;
	char *resp = malloc(size);
	r = resp ? 0 : -ENOMEM;
	for (int i = 0; r >= 0 && i < o.nmsgs && !stop_signal; i++) {
		int64_t t0 = mono_ns();
		int64_t deadline = o.timeout_ns < 0 ? -1 : t0 + o.timeout_ns;
		uint64_t ticket;
		/* -EINTR without our signal (ptrace, SIGSTOP/SIGCONT): go on with the time left */
		do
			r = abd_service_call_send(svc, o.msgs[i], lens[i], &ticket,
			                          deadline < 0 ? -1 : deadline - mono_ns());
		while (r == -EINTR && !stop_signal && (deadline < 0 || mono_ns() < deadline));
		while (r >= 0) {
			int64_t left = deadline < 0 ? -1 : deadline - mono_ns();
			r = abd_service_call_wait(svc, ticket, resp, size, left < 0 && deadline >= 0 ? 0 : left);
			if (r != -EINTR || stop_signal)
				break;
		}
		if (r == -EAGAIN) /* the deadline passed between two waits */
			r = -ETIMEDOUT;
		int64_t us = (mono_ns() - t0) / 1000;
		if (r < 0)
			break;
		if (o.json) {
			printf("{\"seq\":%d,\"len\":%d,\"data\":", i, r);
			json_string_n(stdout, resp, (size_t)r);
			printf(",\"us\":%lld}\n", (long long)us);
		} else {
			print_line(stdout, resp, (size_t)r);
		}
		fflush(stdout);
	}
	if (r == -EINTR && stop_signal) {
		fprintf(stderr, "abdctl call: %s: interrupted by %s\n", o.name, strsignal(stop_signal));
		r = 128 + stop_signal;
	} else if (r < 0) {
		fprintf(stderr, "abdctl call: %s: %s\n", o.name, explain(r));
		r = exit_for(r);
	} else {
		r = stop_signal ? 128 + stop_signal : ABDCTL_OK;
	}
	free(resp);
	free(lens);
	free(o.msgs);
	abd_service_close(svc);
	return r;
}
