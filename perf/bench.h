/* SPDX-License-Identifier: MIT */
/* abd-perf: the benchmark harness shared by every family (baselines, peers, ring, ...).
 *
 * Adding a family: write perf/<family>.c with `int bench_<family>(void)`, declare it below,
 * add one line to the table in perf/abd-perf.c and the file to `perf_sources` in
 * perf/meson.build. A family measures, then hands each result to bench_emit() as a
 * struct bench_row; the emitter prints the text table or the JSON lines and computes ratios.
 *
 * Naming: our subjects `abd-...` (they must set .baseline), bare kernel floors `bare-...`,
 * peers `zmq-ipc`, `nng-ipc`, `iceoryx`. A row's `case` says what was measured ("rtt",
 * "throughput", "oneway-busy", ...), `cpus` how the two processes were placed:
 *   "split"  — each process pinned to its own allowed vCPU;
 *   "shared" — both pinned to the same vCPU.
 * A subject that cannot run is emitted with .skipped = reason, never with a number.
 *
 * Everything here is process-global and single-threaded (abd-perf runs one bench at a time);
 * the measuring happens in forked children, the main process only collects. */
#ifndef ABD_PERF_BENCH_H
#define ABD_PERF_BENCH_H

#include <sched.h>
#include <stddef.h>
#include <sys/types.h>
#include <stdint.h>
#include <time.h>

/* ---- options (parsed by abd-perf.c) ---- */

struct bench_opts {
	bool json;     /* --json: one JSON object per line instead of the table */
	bool quick;    /* --quick: smoke-run sizes, a few seconds per family */
	uint64_t iters; /* --iters N: overrides every family's default (0 = not given) */
	unsigned rounds; /* --rounds N: interleaved rounds of each abd row and its baseline
	                  * (0 = not given: BENCH_ROUNDS_DEFAULT) */
};
extern struct bench_opts bench_opt;
extern const char *bench_family; /* the family being run (set by abd-perf.c) */
extern int bench_failures;       /* crashes and harness errors so far: abd-perf exits 1 */

/* The iteration count a family should use: --iters if given, else `quick` under --quick,
 * else `full`. Warm-up counts are derived by bench_warmup(). */
uint64_t bench_iters(uint64_t full, uint64_t quick);
uint64_t bench_warmup(uint64_t iters); /* iters/10, at least 10, at most 10000 */

/* Rounds: every abd row is measured alternately with its baseline, one sample of each per
 * round (see bench_versus below). */
#define BENCH_ROUNDS_DEFAULT 5
#define BENCH_ROUNDS_MAX 32
unsigned bench_rounds(void); /* --rounds, else BENCH_ROUNDS_DEFAULT */

/* ---- time, CPUs ---- */

static inline uint64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The CPU mode strings; a family passes one of these as row.cpus. */
#define BENCH_SPLIT "split"
#define BENCH_SHARED "shared"

/* Picks the CPUs for a mode from this process's allowed set: *a for the first (ping /
 * producer) process, *b for the second. Returns 0, or -EOPNOTSUPP with *why set when the
 * mode cannot be honoured (split with a single allowed CPU). */
int bench_cpus(const char *mode, int *a, int *b, const char **why);
int bench_pin(int cpu); /* sched_setaffinity(0, {cpu}); 0 or -errno */

/* A message buffer the compiler must treat as read (bench_msg_used, after a copy out) or as
 * rewritten (bench_msg_fresh, before a copy in) by code it cannot see. The bare rings copy
 * messages with memcpy into and out of local buffers whose bytes nothing else reads: without
 * these, clang drops the consumer's copy (it loads only the 8 bytes it checks) and turns the
 * producer's into a store of known bytes, so a "1 KiB" bare row moved 8 bytes per message on
 * the consumer's side. abd-ring's rows copy through library calls, which the compiler cannot
 * elide; these make the bare rows do the same work. They emit no instruction. */
#define BENCH_MSG_MAX 1024
static inline __attribute__((always_inline)) void bench_msg_used(const void *msg)
{
	__asm__ volatile("" : : "m"(*(const unsigned char(*)[BENCH_MSG_MAX])msg));
}
static inline __attribute__((always_inline)) void bench_msg_fresh(void *msg)
{
	__asm__ volatile("" : "+m"(*(unsigned char(*)[BENCH_MSG_MAX])msg));
}

/* Spin-wait helper for busy-polling transports: a pause instruction while the two processes
 * have their own vCPUs, sched_yield() when they share one (a pure spin would burn the whole
 * timeslice of the peer it waits for). The runners set the mode in each child. */
extern bool bench_spin_yields;
/* In a runner's child: the CPU it is pinned to and the CPU of the other child (equal in
 * shared mode), e.g. for a transport that forks a third process of its own. */
extern int bench_cpu_self, bench_cpu_other;
static inline void bench_relax(void)
{
	if (bench_spin_yields)
		sched_yield();
#if defined(__x86_64__) || defined(__i386__)
	else
		__builtin_ia32_pause();
#elif defined(__aarch64__)
	else
		__asm__ volatile("yield");
#endif
}

/* A fresh private directory on tmpfs (/dev/shm, else /run, else /tmp) for sockets and
 * records: fills out ("<base>/abd-perf-XXXXXX"); 0 or -errno. bench_rmdir() removes it
 * with the files directly inside it. */
int bench_tmpdir(char *out, size_t len);
void bench_rmdir(const char *dir);

/* ---- statistics ---- */

struct bench_stats {
	uint64_t n;
	double p50, p99, p999, min, max, mean; /* ns */
};
/* Sorts samples[0..n) in place and fills *st (nearest-rank percentiles). The caller passes
 * only the timed samples, warm-up already left out. */
void bench_stats(uint64_t *samples, uint64_t n, struct bench_stats *st);

/* ---- rows ---- */

struct bench_row {
	const char *bench;     /* family; NULL = the family being run */
	const char *subject;   /* "abd-ring", "bare-futex", "zmq-ipc", ... */
	const char *case_name; /* "rtt", "throughput", ... */
	const char *cpus;      /* BENCH_SPLIT, BENCH_SHARED or NULL when it does not apply */
	unsigned msg_bytes;    /* message size, 0 = n/a */
	uint64_t iters;        /* timed iterations (or messages for throughput) */
	/* Figures: 0 means "does not apply" and the key is left out. */
	double p50_ns, p99_ns, p999_ns, ops_per_s;
	/* CPU time (getrusage) over the row's window, for idle rows: emitted as cpu_ns whenever
	 * cpu_measured is set, 0 included; the ratio of such a row is of cpu_ns. */
	double cpu_ns;
	bool cpu_measured;
	/* Wake-ups per second of a sleeping process (voluntary context switches over the window),
	 * for the idle family: emitted as wakeups_per_s whenever wakeups_measured is set, 0
	 * included; the ratio of such a row is of wakeups_per_s (null while the baseline's is 0),
	 * and its baseline_figure is emitted even when 0. */
	double wakeups_per_s;
	bool wakeups_measured;
	/* Wake-ups per message (voluntary context switches of the receiving processes over the
	 * window / messages), for the herd family: emitted as wakeups_per_msg whenever
	 * wakeups_per_msg_measured is set, 0 included; on a row without ops_per_s the ratio is
	 * of wakeups_per_msg. */
	double wakeups_per_msg;
	bool wakeups_per_msg_measured;
	/* abd-... rows: the subject compared against, and its case when it differs from this
	 * row's (e.g. "rtt" vs "rtt-2lines"), with the same cpus. The runners and bench_versus
	 * measure such a row in interleaved rounds against that baseline row and emit `ratio` =
	 * this row's figure / the baseline's, round by round: p50 for latency rows, ops_per_s for
	 * throughput rows, cpu_ns for idle rows, named in `ratio_of`. A skipped baseline gives
	 * "ratio": null. (bench_emit of an abd row without rounds falls back to the baseline row
	 * emitted last in this invocation: one sample each, at different moments.) */
	const char *baseline;
	const char *baseline_case;
	const char *skipped;   /* non-NULL: the subject could not run, and this is why */
	/* Syscalls made by both processes in the timed phase, per round trip / message
	 * (JSON `syscalls_per_msg`, per round trip for ping-pong rows; present, 0 included, only
	 * when has_syscalls). */
	bool has_syscalls;
	double syscalls_per_msg;
	/* Set by bench_emit_versus (never by a family): the rounds this row's ratio was taken
	 * over, the median of the rounds' ratios and their extremes, and the baseline's median
	 * figure over the same rounds (JSON rounds, ratio, ratio_min, ratio_max,
	 * baseline_figure). rounds == 0: a row measured once. */
	unsigned rounds;
	bool has_ratio;
	double ratio, ratio_min, ratio_max, baseline_figure;
};

/* Prints one row (table line or JSON object) and remembers it for later ratios. */
void bench_emit(const struct bench_row *row);
/* Emits a skipped row; `fmt` formats the reason. */
void bench_skip(const struct bench_row *tmpl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Fills the latency figures of a row from stats. */
void bench_row_latency(struct bench_row *row, const struct bench_stats *st);
/* A skip reason that outlives the buffer it was formatted in (rows are copied by value). */
const char *bench_reason(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- interleaved rounds: an abd row against its baseline ----
 *
 * Cross-vCPU speed on a shared VM drifts several times over within minutes, so a ratio of two
 * figures taken at different moments measures the drift. bench_versus() measures the abd row
 * and its baseline alternately, bench_rounds() times: round r takes one sample of each, the
 * abd row first in even rounds and the baseline first in odd ones (a drift inside a round
 * then favours neither side over the run). The ratio of a round is computed within the round;
 * the row's ratio is the median of the rounds' ratios, with their min and max beside it, and
 * each figure of either row is its median over the rounds.
 *
 * A measure callback takes one sample: it fills the figures of *row (whose subject, case,
 * cpus and size are set) or sets row->skipped; it returns 0 or -errno. */
typedef int (*bench_measure_fn)(void *ctx, struct bench_row *row);

struct bench_versus {
	bench_measure_fn fn;      /* the abd row's sample */
	void *ctx;
	/* The baseline's sample: base_fn, or (base_fn NULL) the row named by the abd row's
	 * baseline / baseline_case and cpus in a subject table (bench_subject_find), whose run
	 * function is called with every other row of the subject left out. */
	bench_measure_fn base_fn;
	void *base_ctx;
	/* Filled by bench_versus: the samples of each round (n of them; theirs[] skipped from the
	 * round the baseline failed). */
	unsigned n;
	struct bench_row mine[BENCH_ROUNDS_MAX], theirs[BENCH_ROUNDS_MAX];
};

/* Measures row (an abd row: .baseline set) against its baseline in bench_rounds() rounds and
 * emits both (bench_emit_versus). Returns 0, or the -errno of the abd row's failing sample
 * (the row is then emitted skipped). */
int bench_versus(struct bench_versus *v, struct bench_row row);
/* Emits from samples already taken in n interleaved rounds (a family that interleaves inside
 * one process of its own): the baseline's row first, with its medians, unless a row of the
 * same subject, case and cpus was emitted already in this invocation; then row with its
 * medians, rounds and the ratio's median, min and max. mine[k] / theirs[k] skipped: that
 * round has no ratio (a skipped mine[0] emits row skipped). */
void bench_emit_versus(const struct bench_row *row, const struct bench_row *mine,
                       const struct bench_row *theirs, unsigned n);
/* The median of each figure of rows[0..n) (skipped ones left out) into *out's figures. */
void bench_row_median(struct bench_row *out, const struct bench_row *rows, unsigned n);

/* ---- iceoryx's daemon (perf/peers.c; only with ABD_PERF_ICEORYX) ----
 * bench_roudi_start forks a keeper that makes a private mount namespace (tmpfs on /tmp and
 * /dev/shm) and execs iox-roudi with the given TOML configuration; 0 and *roudi, or -errno.
 * A child joins its namespaces with bench_roudi_join before iox_runtime_init. */
int bench_roudi_start(const char *config, pid_t *roudi);
void bench_roudi_stop(pid_t *roudi);
int bench_roudi_join(pid_t pid);

/* ---- named subjects, so one family can run another family's rows beside its own ---- */

struct bench_subject {
	const char *name;
	void (*run)(void); /* measures and emits every row of this subject */
};
/* Runs the named subject (from bench_baseline_subjects[] or bench_peer_subjects[]) unless it
 * already ran in this invocation. Returns 0, or -ENOENT for an unknown name. */
int bench_subject_run(const char *name);
const struct bench_subject *bench_subject_find(const char *name); /* NULL: unknown */
void bench_subject_list(void); /* prints the names, one per line */

/* ---- two-process runners ----
 *
 * A runner forks two children (A = ping / producer, B = pong / consumer), pins them per
 * row.cpus, hands both the same zeroed MAP_SHARED mapping of `shm_size` bytes, runs the
 * transport callbacks, and emits the row (figures, or skipped with the reason). The main
 * process never blocks on the transport: it waits for the children with a deadline and
 * kills them when it passes (reported as skipped: "timeout").
 *
 * Order: prepare() in the main process before the fork (create fds there that both children
 * inherit, store them in shm); then B runs init(), then A runs init() (so a listener exists
 * before its dialer), then both loop; fini() in each child, cleanup() in the main process
 * after both have exited. Every callback returns 0 or -errno; a failing child reports
 * `<role>: <callback>: <strerror>` unless it called bench_fail() with its own reason. */

enum bench_role { BENCH_A = 0, BENCH_B = 1 };

struct bench_pair {
	size_t shm_size;
	void *arg;
	int (*prepare)(void *shm, void *arg);                              /* optional */
	int (*init)(enum bench_role, void *shm, void *arg, void **state);   /* optional; state = shm */
	void (*fini)(enum bench_role, void *state);                         /* optional */
	void (*cleanup)(void *shm, void *arg);                              /* optional */

	/* Ping-pong: A's ping() sends one message and waits for the reply; B's pong() waits for
	 * one message and replies. The runner times each ping() with bench_now_ns(); ping() may
	 * instead store its own sample in *sample_ns (e.g. a one-way time), which then wins.
	 * pong() is called exactly as many times as ping(). */
	int (*ping)(void *state, uint64_t *sample_ns);
	int (*pong)(void *state);
	bool halve; /* report round trip / 2 (a one-way figure) */
	struct bench_stats *result; /* optional: receives the ping-pong statistics */
	/* Count both processes' syscalls over the timed phase (perf tracepoint
	 * raw_syscalls:sys_enter on each process's main thread and threads it starts later;
	 * needs root or CAP_PERFMON) and report syscalls_per_msg; left out when not permitted.
	 * Counting makes each syscall a little slower: use it for syscall-free fast paths. */
	bool count_syscalls;

	/* Throughput: A's produce() sends n messages, B's consume() receives n. B is timed from
	 * the end of the warm-up batch to the last message: ops_per_s = iters / that time. */
	int (*produce)(void *state, uint64_t n);
	int (*consume)(void *state, uint64_t n);
};

/* Ping-pong: `bench_warmup(iters)` untimed round trips, then `iters` timed ones; fills the
 * row's p50/p99/p999 and emits it. Returns 0 or -errno (the row is emitted either way).
 * A row with .baseline is measured in interleaved rounds against it (bench_versus: each
 * round runs the pair once with `iters`). A row without one that this invocation emitted
 * already (same subject, case, cpus, size) is not measured again. */
int bench_pingpong(const struct bench_pair *p, struct bench_row row, uint64_t iters);
/* Throughput: `bench_warmup(iters)` messages, then `iters` timed; fills ops_per_s. */
int bench_throughput(const struct bench_pair *p, struct bench_row row, uint64_t iters);
/* One sample of a runner, not emitted: fills *row's figures (or row->skipped); 0 or -errno.
 * For a family's own measure callbacks (bench_versus). */
int bench_pingpong_once(const struct bench_pair *p, struct bench_row *row, uint64_t iters);
int bench_throughput_once(const struct bench_pair *p, struct bench_row *row, uint64_t iters);
/* The same as a bench_measure_fn: ctx is a struct bench_pair_sample. */
struct bench_pair_sample {
	const struct bench_pair *p;
	uint64_t iters;
	bool throughput; /* else ping-pong */
};
int bench_pair_sample(void *ctx, struct bench_row *row);

/* In a callback (prepare in the main process, or any callback in a child): sets the skip
 * reason the row will carry. Returns -ECANCELED so a callback can `return bench_fail(...)`. */
int bench_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Futex helpers on a shared 32-bit word (not PRIVATE: the word is in shared memory). */
int bench_futex_wait(uint32_t *word, uint32_t expected); /* 0, or -errno other than EAGAIN/EINTR */
int bench_futex_wake(uint32_t *word);

/* Flags between a runner's processes in its shared memory: bench_post stores v (release) and
 * wakes the word's waiters; bench_until sleeps until the word holds want (0, or the -errno of
 * bench_futex_wait). */
static inline void bench_post(uint32_t *word, uint32_t v)
{
	__atomic_store_n(word, v, __ATOMIC_RELEASE);
	bench_futex_wake(word);
}

static inline int bench_until(uint32_t *word, uint32_t want)
{
	uint32_t cur;
	while ((cur = __atomic_load_n(word, __ATOMIC_ACQUIRE)) != want) {
		int r = bench_futex_wait(word, cur);
		if (r < 0)
			return r;
	}
	return 0;
}

/* In a ping() before its clock starts: wait until process pid (the pong side, which stored
 * its pid in the shared memory at init) is asleep, state S or D in /proc/PID/stat, relaxing
 * between looks; gives up after 100 ms (and returns 0: the sample is taken anyway). For the
 * "-asleep" round trips, whose every sample must include the wake-up of a sleeping peer.
 * 0, or -errno when the peer's stat cannot be read. */
int bench_until_asleep(pid_t pid);
/* The voluntary context switches of every thread of pid (/proc/PID/task/N/status, io_uring
 * workers included), or -1 when it cannot be read. */
int64_t bench_vcsw(pid_t pid);

/* Syscall counting for your own loops: the tracepoint id (looked up once, > 0, or -errno),
 * a counter on the calling thread (fd, or -errno), its count so far (-1 for fd < 0). */
int bench_syscall_tracepoint(void);
int bench_syscalls_open(int tracepoint);
int64_t bench_syscalls_read(int fd);

/* ---- families ---- */

void bench_baselines(void);
void bench_peers(void);
void bench_discovery(void);
void bench_reactor(void);
void bench_ring(void);
void bench_pingpong_family(void);
void bench_acquire(void);
void bench_service(void);
/* The pingpong family's service rows: abd-service rtt-block-io_uring / rtt-block-epoll, a
 * 64-byte round trip through two services with blocking push/pop (perf/bench-service.c). */
void bench_service_rtt(const char *cpus, uint64_t iters);
/* The service family's producer/consumer pair (perf/bench-service.c): one process publishes
 * a service of 1024 slots of 64 bytes (consumer role), the other opens it (producer role);
 * 64-byte messages through abd_ring_* on the service's ring (direct) or abd_service_*,
 * spinning on the try forms or blocking; typed: the service carries the message type below.
 * The C side of the cpp family's rows. */
void bench_service_pair(struct bench_pair *p, bool direct, bool block, bool typed);
#define BENCH_MSG64_TYPE "perf.msg64"
#define BENCH_MSG64_LAYOUT "u64 seq; u8 pad[56]"
/* C++ through <abd/abd.hpp> against the same workloads in C (perf/bench-cpp.cpp; skipped rows
 * when abd-perf was built without a C++26 compiler). */
void bench_cpp(void);
/* perf/bench-service.c: request-response round trips (the pingpong family); ring_block is the
 * abd-ring rtt-block pair of perf/bench-ring.c, the call-vs-ring row's baseline. */
void bench_rpc_rtt(const char *cpus, uint64_t iters, const struct bench_pair *ring_block);
void bench_recover(void);
void bench_idle(void);
void bench_herd(void);
void bench_fanout(void);
/* abd-perf --idle-worker KIND DIR FD: one process of the idle family (perf/bench-idle.c). */
int bench_idle_worker(const char *kind, const char *dir, const char *fd);

/* One peer row beside a family's own: subject "zmq-ipc" / "nng-ipc" / "iceoryx", case
 * "rtt" (blocking round trip), "rtt-busy" (iceoryx only: busy-polling round trip, followed
 * by its "oneway-busy" half) or "throughput" (zmq, nng), cpus BENCH_SPLIT / BENCH_SHARED,
 * message size 1..4096. Emits the row (skipped when the peer was not built or cannot run);
 * returns 0, -ENOENT for a combination that does not exist, -EINVAL for a bad size. */
int bench_peer(const char *subject, const char *case_name, const char *cpus, unsigned bytes);

/* Subject tables (name + run, ending with {0}); a family with subjects other families may want
 * beside their rows adds its table to subject_tables in bench.c. */
extern const struct bench_subject bench_baseline_subjects[];
extern const struct bench_subject bench_peer_subjects[];

#endif
