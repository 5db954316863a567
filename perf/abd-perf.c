/* SPDX-License-Identifier: MIT */
/* abd-perf [--json] [--quick] [--iters N] [--rounds N] [BENCH|SUBJECT...]
 * abd-perf list | subjects
 * Runs the named benchmark families (all of them when none is named), or single subjects
 * such as bare-futex or zmq-ipc. See bench.h and docs/perf.md. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perf/bench.h"

#if !ABD_PERF_CPP
/* Built without a C++26 compiler: the cpp family's rows, skipped with the reason. */
void bench_cpp(void)
{
	static const char *const cases[] = { "throughput-svc", "throughput", "throughput-block",
	                                     "throughput-typed" };
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		bench_skip(&(struct bench_row){ .subject = i ? "abd-cpp-service" : "abd-cpp-ring",
		                                .case_name = cases[i], .cpus = BENCH_SPLIT,
		                                .msg_bytes = 64 },
		           "abd-perf was built without a C++ compiler taking -std=c++26 "
		           "(meson setup with CXX=clang++-22)");
}
#endif

/* One line per family. */
static const struct {
	const char *name;
	void (*run)(void);
	const char *what;
} families[] = {
	{"baselines", bench_baselines, "kernel floors: cache line, spin SPSC, futex, eventfd, pipe, unix, inotify, pidfd"},
	{"discovery", bench_discovery, "registry: publish -> watcher, enumerate 1k/10k, exit -> died, vs inotify/readdir/pidfd"},
	{"reactor", bench_reactor, "reactor: wake-up through io_uring futex/eventfd and epoll vs bare, dispatch and idle CPU with 1k sources"},
	{"ring", bench_ring, "shared-memory ring throughput 1P1C/2P2C, 8 B-1 KiB, spin/blocking; syscalls per message"},
	{"pingpong", bench_pingpong_family, "round trip 64 B through two rings (spin, blocking), two services (blocking; io_uring, epoll) and a request-response call vs floors and peers"},
	{"acquire", bench_acquire, "acquisition with verification by pidfd_getfd and by the SCM_RIGHTS handshake vs bare pidfd_getfd / socketpair SCM_RIGHTS"},
	{"service", bench_service, "service front door vs the ring it wraps: try/blocking push-pop through abd_service_* and abd_ring_* on one setup"},
	{"recover", bench_recover, "a SIGKILL inside a ring claim: kill -> the consumer sleeping behind it gets the next message, vs kill -> F_OFD_SETLKW returns"},
	{"idle", bench_idle, "wake-ups per second of a process asleep in pop, push, open, a 1k-service watch; native, linux-5.4, no-io_uring; vs bare futex/eventfd"},
	{"cpp", bench_cpp, "the service family's workloads through <abd/abd.hpp> (ring, service, blocking, typed) vs the same in C"},
	{"herd", bench_herd, "4 consumers blocked on one work-queue ring (abd_ring, abd_service), 1 producer: wake-ups per message paced, throughput unpaced; vs 1 consumer"},
	{"fanout", bench_fanout, "broadcast: 1 publisher, 1/2/4 subscribers, 64 B/64 KiB/4 MiB loans, throughput and latency; vs iceoryx"},
	{"peers", bench_peers, "peer libraries: ZeroMQ ipc, nng ipc, iceoryx (skipped when not built)"},
};
#define NFAMILIES (sizeof(families) / sizeof(families[0]))

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: abd-perf [--json] [--quick] [--iters N] [--rounds N] [BENCH|SUBJECT...]\n"
	        "       abd-perf list       the families, one a line: name, description\n"
	        "       abd-perf subjects   the subjects that also run alone\n"
	        "  --json     one JSON object per line\n"
	        "  --quick    smoke-run sizes (a few seconds per family)\n"
	        "  --iters N  timed iterations (messages for throughput rows) for every subject\n"
	        "  --rounds N each abd row and its baseline are measured alternately, N rounds\n"
	        "             (1..%d, default %d): ratio = median of the rounds' ratios\n"
	        "With no BENCH, runs every family; a SUBJECT (e.g. bare-futex) runs alone.\n",
	        BENCH_ROUNDS_MAX, BENCH_ROUNDS_DEFAULT);
}

static int find(const char *name)
{
	for (size_t i = 0; i < NFAMILIES; i++)
		if (!strcmp(families[i].name, name))
			return (int)i;
	return -1;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"json", no_argument, NULL, 'j'},
		{"quick", no_argument, NULL, 'q'},
		{"iters", required_argument, NULL, 'n'},
		{"rounds", required_argument, NULL, 'r'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	if (argc == 5 && !strcmp(argv[1], "--idle-worker"))
		return bench_idle_worker(argv[2], argv[3], argv[4]); /* perf/bench-idle.c */
	int c;
	while ((c = getopt_long(argc, argv, "+jqn:r:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'j': bench_opt.json = true; break;
		case 'q': bench_opt.quick = true; break;
		case 'n': {
			char *end;
			errno = 0;
			unsigned long long n = strtoull(optarg, &end, 10);
			if (errno || *end || !n || n > 100000000ull) {
				fprintf(stderr, "abd-perf: --iters wants 1..100000000\n");
				return 2;
			}
			bench_opt.iters = n;
			break;
		}
		case 'r': {
			char *end;
			errno = 0;
			unsigned long n = strtoul(optarg, &end, 10);
			if (errno || *end || !n || n > BENCH_ROUNDS_MAX) {
				fprintf(stderr, "abd-perf: --rounds wants 1..%d\n", BENCH_ROUNDS_MAX);
				return 2;
			}
			bench_opt.rounds = (unsigned)n;
			break;
		}
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}

	if (optind < argc && !strcmp(argv[optind], "list")) {
		for (size_t i = 0; i < NFAMILIES; i++)
			printf("%-12s %s\n", families[i].name, families[i].what);
		return 0;
	}
	if (optind < argc && !strcmp(argv[optind], "subjects")) {
		bench_subject_list();
		return 0;
	}
	for (int i = optind; i < argc; i++)
		if (find(argv[i]) < 0 && !bench_subject_find(argv[i])) {
			fprintf(stderr, "abd-perf: unknown benchmark '%s' (try: abd-perf list)\n", argv[i]);
			return 2;
		}

	if (optind == argc) {
		for (size_t i = 0; i < NFAMILIES; i++) {
			bench_family = families[i].name;
			families[i].run();
		}
	} else {
		for (int i = optind; i < argc; i++) {
			int f = find(argv[i]);
			if (f < 0) {
				bench_family = "subject";
				bench_subject_run(argv[i]);
				continue;
			}
			bench_family = families[f].name;
			families[f].run();
		}
	}
	return bench_failures ? 1 : 0;
}
