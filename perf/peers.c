/* SPDX-License-Identifier: MIT */
/* `abd-perf peers`: the peer libraries, each when it was found at build time. */
#include "perf/bench.h"

static void run_zmq(void)
{
	bench_skip(&(struct bench_row){.subject = "zmq-ipc", .case_name = "rtt"}, "not built yet");
}

const struct bench_subject bench_peer_subjects[] = {
	{"zmq-ipc", run_zmq},
	{0},
};

void bench_peers(void)
{
	for (const struct bench_subject *s = bench_peer_subjects; s->name; s++)
		bench_subject_run(s->name);
}
