/* SPDX-License-Identifier: MIT */
/* `abd-perf fanout`: one publisher, 1, 2 and 4 subscribers that each receive every message.
 *   abd-bcast  throughput  a broadcast service (abd_service_publish_broadcast, BLOCK policy):
 *                          the publisher loans a chunk, writes the message's first 64 bytes
 *                          (sequence number, stamp), sends; each subscriber peeks in place,
 *                          checks the sequence and releases. Figure: the slowest
 *                          subscriber's messages per second (the publisher's pace under
 *                          BLOCK), counted after a warm-up.
 *              latency     the same, paced: the publisher sends the next message once every
 *                          subscriber took the last one; each subscriber sleeps in its
 *                          blocking peek and records stamp -> received. p50/p99 over all
 *                          subscribers' samples.
 *   vs iceoryx (2.x C API, the same work: loan a chunk of the message's size, write its first
 *   64 bytes, publish; each subscriber takes the chunk (a WaitSet sleep when there is none),
 *   checks, releases; WAIT_FOR_CONSUMER / BLOCK_PRODUCER so that nothing is lost, as with
 *   BLOCK). Sizes 64 B, 64 KiB and 4 MiB: zero-copy on both sides, so the message's size
 *   changes only which pool chunk is lent, not what is written.
 * Placement: the publisher on one vCPU, every subscriber on the other ("split"), or all on
 * one ("shared"). Without iceoryx built, its rows are skipped and abd's have no ratio. */
#include <abd/abd.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "perf/bench.h"

#if ABD_PERF_ICEORYX
#include <iceoryx_binding_c/log.h>
#include <iceoryx_binding_c/publisher.h>
#include <iceoryx_binding_c/runtime.h>
#include <iceoryx_binding_c/subscriber.h>
#include <iceoryx_binding_c/wait_set.h>
#endif

#define FO_MAX_SUBS 4
#define FO_HEADER 64 /* bytes every message writes and every subscriber reads */
#define FO_DEADLINE_S 60

struct fo_msg {
	uint64_t seq;
	uint64_t stamp;
};

/* Shared between the parent and the 1 + n children of one sample. */
struct fo_ctl {
	char dir[96];
	pid_t roudi;
	_Atomic uint32_t ready; /* children set up */
	_Atomic uint32_t go;
	_Atomic uint64_t acked; /* latency: messages taken, all subscribers */
	uint64_t sub_begin[FO_MAX_SUBS], sub_end[FO_MAX_SUBS]; /* throughput window per subscriber */
	uint64_t sub_bad[FO_MAX_SUBS];
	int err;
	char why[160];
	uint64_t samples[]; /* latency: FO_MAX_SUBS x iters */
};

struct fo_case {
	bool iceoryx;
	bool latency;
	unsigned subs;
	size_t bytes;
	const char *cpus;
	uint64_t iters, warm;
};

static int fo_fail(struct fo_ctl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fo_fail(struct fo_ctl *c, const char *fmt, ...)
{
	if (!c->err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->why, sizeof(c->why), fmt, ap);
		va_end(ap);
		c->err = -EPROTO;
	}
	return 1;
}

static uint32_t fo_capacity(size_t bytes)
{
	return bytes >= (1u << 20) ? 16 : bytes >= 4096 ? 64 : 256;
}

static void fo_wait_go(struct fo_ctl *c)
{
	while (!atomic_load(&c->go))
		usleep(100);
}

/* The publisher's pacing in latency rows: every subscriber took message k. */
static void fo_wait_acked(struct fo_ctl *c, uint64_t want)
{
	struct timespec d = {0, 20000};
	while (atomic_load(&c->acked) < want)
		nanosleep(&d, NULL);
}

/* ---- abd ---- */

static int ab_pub(struct fo_ctl *c, const struct fo_case *k)
{
	struct abd_service_config cfg = {.dir = c->dir, .capacity = fo_capacity(k->bytes),
	                                 .slot_size = (uint32_t)k->bytes};
	struct abd_broadcast_opts o = {.subscribers = k->subs, .policy = ABD_BROADCAST_BLOCK};
	struct abd_service *s;
	int e = abd_service_publish_broadcast("fanout", &cfg, &o, 0, &s);
	if (e < 0)
		return fo_fail(c, "publish_broadcast: %s", strerror(-e));
	atomic_fetch_add(&c->ready, 1);
	fo_wait_go(c);
	uint64_t n = k->warm + k->iters;
	for (uint64_t i = 0; i < n && !c->err; i++) {
		if (k->latency)
			fo_wait_acked(c, i * k->subs);
		void *buf;
		e = abd_service_loan(s, k->bytes, &buf, -1);
		if (e < 0) {
			fo_fail(c, "loan: %s", strerror(-e));
			break;
		}
		struct fo_msg m = {i, bench_now_ns()};
		memset(buf, 0, FO_HEADER);
		memcpy(buf, &m, sizeof(m));
		e = abd_service_send(s, buf, k->bytes);
		if (e < 0) {
			fo_fail(c, "send: %s", strerror(-e));
			break;
		}
	}
	/* stay until every subscriber is through: a publisher's close ends the service */
	while (atomic_load(&c->ready) < 1 + 2 * k->subs && !c->err)
		usleep(200);
	abd_service_close(s);
	return c->err ? 1 : 0;
}

static int ab_sub(struct fo_ctl *c, const struct fo_case *k, unsigned idx)
{
	struct abd_service_config cfg = {.dir = c->dir};
	struct abd_service *s;
	int e = abd_service_open("fanout", &cfg, ABD_SERVICE_CONSUMER, 10000000000ll, &s);
	if (e < 0)
		return fo_fail(c, "open: %s", strerror(-e));
	atomic_fetch_add(&c->ready, 1);
	fo_wait_go(c);
	uint64_t n = k->warm + k->iters, bad = 0;
	for (uint64_t i = 0; i < n; i++) {
		const void *p;
		size_t len;
		e = abd_service_peek(s, &p, &len, -1);
		if (e < 0) {
			fo_fail(c, "peek %llu: %s", (unsigned long long)i, strerror(-e));
			break;
		}
		uint64_t now = bench_now_ns();
		struct fo_msg m;
		memcpy(&m, p, sizeof(m));
		bench_msg_used(p);
		bad += m.seq != i || len != k->bytes;
		(void)abd_service_release(s);
		if (k->latency) {
			if (i >= k->warm)
				c->samples[idx * k->iters + (i - k->warm)] = now - m.stamp;
			atomic_fetch_add(&c->acked, 1);
		} else if (i == k->warm) {
			c->sub_begin[idx] = now;
		}
	}
	c->sub_end[idx] = bench_now_ns();
	c->sub_bad[idx] = bad;
	atomic_fetch_add(&c->ready, 1);
	abd_service_close(s);
	return c->err ? 1 : 0;
}

/* ---- iceoryx ---- */
#if ABD_PERF_ICEORYX
static char *ix_config(size_t bytes)
{
	/* chunks: the ring's worth for every subscriber's queue to share, plus the in-flight ones
	 * (iceoryx's chunk header and alignment fit in the 4 KiB of slack) */
	static char text[512];
	uint32_t cap = fo_capacity(bytes);
	snprintf(text, sizeof(text),
	         "[general]\nversion = 1\n\n[[segment]]\n\n[[segment.mempool]]\nsize = %zu\n"
	         "count = %u\n",
	         (bytes + 4096 + 63) & ~(size_t)63, cap + 2 * FO_MAX_SUBS + 8);
	return text;
}

static int ix_setup(struct fo_ctl *c, const char *name)
{
	if (bench_roudi_join(c->roudi) < 0)
		return fo_fail(c, "join roudi's namespaces");
	iox_set_loglevel(Iceoryx_LogLevel_Warn);
	iox_runtime_init(name);
	return 0;
}

static int ix_pub(struct fo_ctl *c, const struct fo_case *k)
{
	if (ix_setup(c, "fanout-pub"))
		return 1;
	iox_pub_storage_t st;
	iox_pub_options_t po;
	iox_pub_options_init(&po);
	po.subscriberTooSlowPolicy = ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER;
	iox_pub_t pub = iox_pub_init(&st, "abd-perf", "fanout", "msg", &po);
	atomic_fetch_add(&c->ready, 1);
	fo_wait_go(c);
	uint64_t n = k->warm + k->iters;
	for (uint64_t i = 0; i < n && !c->err; i++) {
		if (k->latency)
			fo_wait_acked(c, i * k->subs);
		void *buf;
		enum iox_AllocationResult a;
		while ((a = iox_pub_loan_chunk(pub, &buf, (uint32_t)k->bytes)) ==
		       AllocationResult_RUNNING_OUT_OF_CHUNKS)
			usleep(10);
		if (a != AllocationResult_SUCCESS) {
			fo_fail(c, "iox_pub_loan_chunk: result %d", (int)a);
			break;
		}
		struct fo_msg m = {i, bench_now_ns()};
		memset(buf, 0, FO_HEADER);
		memcpy(buf, &m, sizeof(m));
		iox_pub_publish_chunk(pub, buf);
	}
	while (atomic_load(&c->ready) < 1 + 2 * k->subs && !c->err)
		usleep(200);
	iox_pub_deinit(pub);
	iox_runtime_shutdown();
	return c->err ? 1 : 0;
}

static int ix_sub(struct fo_ctl *c, const struct fo_case *k, unsigned idx)
{
	char name[32];
	snprintf(name, sizeof(name), "fanout-sub%u", idx);
	if (ix_setup(c, name))
		return 1;
	iox_sub_storage_t st;
	iox_ws_storage_t wst;
	iox_sub_options_t so;
	iox_sub_options_init(&so);
	so.queueCapacity = fo_capacity(k->bytes);
	so.historyRequest = 0;
	so.queueFullPolicy = QueueFullPolicy_BLOCK_PRODUCER;
	iox_sub_t sub = iox_sub_init(&st, "abd-perf", "fanout", "msg", &so);
	iox_ws_t ws = iox_ws_init(&wst);
	if (iox_ws_attach_subscriber_state(ws, sub, SubscriberState_HAS_DATA, 0, NULL) !=
	    WaitSetResult_SUCCESS)
		return fo_fail(c, "iox_ws_attach_subscriber_state failed");
	for (int i = 0; i < 1000 && iox_sub_get_subscription_state(sub) != SubscribeState_SUBSCRIBED; i++)
		usleep(10000);
	atomic_fetch_add(&c->ready, 1);
	fo_wait_go(c);
	uint64_t n = k->warm + k->iters, bad = 0;
	for (uint64_t i = 0; i < n && !c->err; i++) {
		const void *p;
		enum iox_ChunkReceiveResult r;
		while ((r = iox_sub_take_chunk(sub, &p)) == ChunkReceiveResult_NO_CHUNK_AVAILABLE) {
			iox_notification_info_t ev[1];
			uint64_t missed = 0;
			iox_ws_wait(ws, ev, 1, &missed);
		}
		if (r != ChunkReceiveResult_SUCCESS) {
			fo_fail(c, "iox_sub_take_chunk: result %d", (int)r);
			break;
		}
		uint64_t now = bench_now_ns();
		struct fo_msg m;
		memcpy(&m, p, sizeof(m));
		bench_msg_used(p);
		bad += m.seq != i;
		iox_sub_release_chunk(sub, p);
		if (k->latency) {
			if (i >= k->warm)
				c->samples[idx * k->iters + (i - k->warm)] = now - m.stamp;
			atomic_fetch_add(&c->acked, 1);
		} else if (i == k->warm) {
			c->sub_begin[idx] = now;
		}
	}
	c->sub_end[idx] = bench_now_ns();
	c->sub_bad[idx] = bad;
	atomic_fetch_add(&c->ready, 1);
	iox_ws_deinit(ws);
	iox_sub_deinit(sub);
	iox_runtime_shutdown();
	return c->err ? 1 : 0;
}
#endif

#if !ABD_PERF_ICEORYX
static int ix_missing(void *ctx, struct bench_row *row)
{
	(void)ctx;
	row->skipped = "not built: iceoryx_binding_c (cmake package) not found at configure time";
	return 0;
}
#endif

/* ---- one sample ---- */

static int fo_sample(void *ctx, struct bench_row *row)
{
	const struct fo_case *k = ctx;
	int a, b;
	const char *why;
	if (bench_cpus(k->cpus, &a, &b, &why) < 0) {
		row->skipped = why;
		return 0;
	}
	size_t size = sizeof(struct fo_ctl) + (k->latency ? FO_MAX_SUBS * k->iters * 8 : 0);
	struct fo_ctl *c = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (c == MAP_FAILED)
		return -errno;
	int r = bench_tmpdir(c->dir, sizeof(c->dir));
	if (r < 0) {
		munmap(c, size);
		return r;
	}
#if ABD_PERF_ICEORYX
	if (k->iceoryx && (r = bench_roudi_start(ix_config(k->bytes), &c->roudi)) < 0) {
		bench_rmdir(c->dir);
		munmap(c, size);
		row->skipped = bench_reason("iox-roudi did not start: %s", strerror(-r));
		return 0;
	}
#endif
	pid_t kids[1 + FO_MAX_SUBS];
	unsigned nk = 0;
	for (unsigned i = 0; i <= k->subs; i++) {
		pid_t p = fork();
		if (p < 0)
			break;
		if (p == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			bench_pin(i == 0 ? a : b);
			int x;
#if ABD_PERF_ICEORYX
			if (k->iceoryx)
				x = i == 0 ? ix_pub(c, k) : ix_sub(c, k, i - 1);
			else
#endif
				x = i == 0 ? ab_pub(c, k) : ab_sub(c, k, i - 1);
			_exit(x);
		}
		kids[nk++] = p;
	}
	uint64_t deadline = bench_now_ns() + (uint64_t)FO_DEADLINE_S * 1000000000u;
	while (atomic_load(&c->ready) < nk && !c->err && bench_now_ns() < deadline && nk == k->subs + 1)
		usleep(1000);
	atomic_store(&c->go, 1);
	bool late = false;
	for (unsigned i = 0; i < nk; i++) {
		int st;
		while (waitpid(kids[i], &st, WNOHANG) == 0) {
			if (bench_now_ns() > deadline) {
				late = true;
				for (unsigned j = 0; j < nk; j++)
					kill(kids[j], SIGKILL);
			}
			usleep(1000);
		}
		if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0) && !c->err)
			fo_fail(c, "child %u ended with status %d", i, st);
	}
#if ABD_PERF_ICEORYX
	if (k->iceoryx)
		bench_roudi_stop(&c->roudi);
#endif
	bench_rmdir(c->dir);
	if (late || c->err || nk != k->subs + 1) {
		row->skipped = bench_reason("%s", late ? "timeout" : c->err ? c->why : "fork failed");
		munmap(c, size);
		return 0;
	}
	uint64_t bad = 0;
	for (unsigned i = 0; i < k->subs; i++)
		bad += c->sub_bad[i];
	if (bad) {
		row->skipped = bench_reason("%llu messages out of order or of the wrong size",
		                            (unsigned long long)bad);
	} else if (k->latency) {
		struct bench_stats st;
		bench_stats(c->samples, k->iters * k->subs, &st);
		bench_row_latency(row, &st);
	} else {
		double slowest = 0;
		for (unsigned i = 0; i < k->subs; i++) {
			double rate = (double)k->iters * 1e9 / (double)(c->sub_end[i] - c->sub_begin[i]);
			if (i == 0 || rate < slowest)
				slowest = rate;
		}
		row->ops_per_s = slowest;
	}
	row->iters = k->iters;
	row->msg_bytes = (unsigned)k->bytes;
	munmap(c, size);
	return 0;
}

void bench_fanout(void)
{
	static const size_t sizes[] = {64, 64 * 1024, 4 * 1024 * 1024};
	static const unsigned subs[] = {1, 2, 4};
	static const char *const cpus[] = {BENCH_SPLIT, BENCH_SHARED};
	for (int m = 0; m < 2; m++) {
		for (int lat = 0; lat < 2; lat++) {
			for (size_t z = 0; z < sizeof(sizes) / sizeof(sizes[0]); z++) {
				for (size_t s = 0; s < sizeof(subs) / sizeof(subs[0]); s++) {
					char name[48];
					snprintf(name, sizeof(name), "%s-%usub", lat ? "latency" : "throughput",
					         subs[s]);
					uint64_t it = lat ? bench_iters(2000, 200)
					                  : bench_iters(sizes[z] >= (1u << 20) ? 20000 : 200000,
					                                sizes[z] >= (1u << 20) ? 2000 : 20000);
					struct fo_case mine = {.latency = lat, .subs = subs[s], .bytes = sizes[z],
					                       .cpus = cpus[m], .iters = it,
					                       .warm = bench_warmup(it)};
					struct fo_case theirs = mine;
					theirs.iceoryx = true;
					struct bench_row row = {.subject = "abd-bcast",
					                        .case_name = bench_reason("%s", name),
					                        .cpus = cpus[m], .msg_bytes = (unsigned)sizes[z],
					                        .baseline = "iceoryx"};
					struct bench_versus *v = calloc(1, sizeof(*v));
					if (!v)
						return;
					v->fn = fo_sample;
					v->ctx = &mine;
#if ABD_PERF_ICEORYX
					v->base_fn = fo_sample;
#else
					v->base_fn = ix_missing;
#endif
					v->base_ctx = &theirs;
					bench_versus(v, row);
					free(v);
				}
			}
		}
	}
}
