// SPDX-License-Identifier: MIT
// cpp: what <abd/abd.hpp> costs over the C calls it wraps (docs/cpp.md: nothing, is the claim).
//
// The service family's workload (perf/bench-service.c): one process publishes a service of 1024
// slots of 64 bytes (consumer role), the other opens it by name (producer role), and 64-byte
// messages go one way, each numbered in its first 8 bytes and checked by the consumer. Here
// every call of it goes through the C++ layer, and each row is measured in interleaved rounds
// against the very same workload written in C (bench_service_pair), which is the baseline:
//   abd-cpp-ring    throughput-svc        abd::ring_ref try_push/try_pop (spans) on the
//                                         service's ring     vs abd-ring    throughput-svc
//   abd-cpp-service throughput            abd::service<> try_push/try_pop (spans), spinning
//                                                            vs abd-service throughput
//   abd-cpp-service throughput-block      abd::service<> push/pop(abd::forever)
//                                                            vs abd-service throughput-block
//   abd-cpp-service throughput-typed      abd::service<msg64> try_push(const T &)/try_pop()
//                                         -> result<T>       vs abd-service throughput-typed
//                                         (C: the same type set in abd_service_config)
// A ratio of 1 means the wrapper adds nothing; docs/perf.md ("cpp") says how to read the
// generated code of the loops as well.
extern "C" {
#include "perf/bench.h"
}

#include <abd/abd.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <span>
#include <string_view>

namespace {

using namespace std::chrono_literals;

constexpr std::string_view name = "perf.cpp";
constexpr std::size_t bytes = 64;

struct msg64 {
	static constexpr std::string_view abd_type_name = BENCH_MSG64_TYPE;
	static constexpr std::string_view abd_type_layout = BENCH_MSG64_LAYOUT;
	std::uint64_t seq;
	unsigned char pad[56];
};
static_assert(sizeof(msg64) == bytes);

enum class api { ring, service, typed };

struct cfg {
	api how;
	bool block;
};

struct shared {
	char dir[128];
	std::atomic<std::uint32_t> opened; // A opened the service
};

struct state {
	const cfg *c = nullptr;
	shared *s = nullptr;
	abd::service<> svc;
	abd::service<msg64> typed;
	abd::ring_ref ring;
};

state *child; // one per child process, made in init

abd::service_options options(const shared *s)
{
	return {.dir = s->dir, .capacity = 1024, .slot_size = bytes};
}

int c_prepare(void *shm, void *)
{
	auto *s = static_cast<shared *>(shm);
	return bench_tmpdir(s->dir, sizeof(s->dir));
}

void c_cleanup(void *shm, void *)
{
	bench_rmdir(static_cast<shared *>(shm)->dir);
}

int fail(const char *what, std::error_code e)
{
	return bench_fail("%s: %s", what, e.message().c_str());
}

// B publishes at init; A opens in its first produce() (the warm-up), while B runs the
// service's reactor in its first consume() until A has: as bench-service.c, so that the
// handshake path (no pidfd_getfd) is answered.
int c_init(enum bench_role role, void *shm, void *arg, void **out)
{
	alignas(state) static unsigned char storage[sizeof(state)]; // destroyed by c_fini only
	child = new (storage) state{};
	child->c = static_cast<const cfg *>(arg);
	child->s = static_cast<shared *>(shm);
	*out = child;
	if (role == BENCH_A)
		return 0;
	if (child->c->how == api::typed) {
		auto svc = abd::service<msg64>::publish(name, options(child->s), abd::service_flags::consumer);
		if (!svc)
			return fail("publish", svc.error());
		child->typed = std::move(*svc);
		return 0;
	}
	auto svc = abd::service<>::publish(name, options(child->s), abd::service_flags::consumer);
	if (!svc)
		return fail("publish", svc.error());
	child->svc = std::move(*svc);
	child->ring = child->svc.ring();
	return 0;
}

int c_open(state *st)
{
	if (st->c->how == api::typed) {
		auto svc = abd::service<msg64>::open(name, options(st->s), abd::service_flags::producer, 10s);
		if (!svc)
			return fail("open", svc.error());
		st->typed = std::move(*svc);
	} else {
		auto svc = abd::service<>::open(name, options(st->s), abd::service_flags::producer, 10s);
		if (!svc)
			return fail("open", svc.error());
		st->svc = std::move(*svc);
		st->ring = st->svc.ring();
	}
	st->s->opened.store(1);
	return 0;
}

int c_serve_open(state *st)
{
	abd::reactor_ref r = st->c->how == api::typed ? st->typed.reactor() : st->svc.reactor();
	std::uint64_t deadline = bench_now_ns() + 15000000000ull;
	while (!st->s->opened.load()) {
		if (bench_now_ns() > deadline)
			return bench_fail("the producer did not open the service within 15 s");
		auto n = r.run_once(1ms);
		if (!n && n.error() != std::errc::interrupted && n.error() != std::errc::timed_out)
			return fail("run_once", n.error());
	}
	return 0;
}

void c_fini(enum bench_role, void *state_)
{
	static_cast<state *>(state_)->~state(); // closes the services
}

int code(std::error_code e)
{
	return -e.value(); // the errno category: the C library's errno
}

int c_produce(void *state_, std::uint64_t n)
{
	auto *st = static_cast<state *>(state_);
	int e;
	if (!st->svc && !st->typed && (e = c_open(st)) < 0)
		return e;
	const cfg &c = *st->c;
	if (c.how == api::typed) {
		msg64 m{};
		for (std::uint64_t i = 0; i < n; i++) {
			m.seq = i;
			abd::result<void> r;
			while (!(r = st->typed.try_push(m)) && r.error() == std::errc::resource_unavailable_try_again)
				bench_relax();
			if (!r)
				return code(r.error());
		}
		return 0;
	}
	std::array<std::byte, bytes> msg{};
	for (std::uint64_t i = 0; i < n; i++) {
		std::memcpy(msg.data(), &i, sizeof(i));
		abd::result<void> r;
		if (c.block)
			r = st->svc.push(std::span<const std::byte>(msg), abd::forever);
		else if (c.how == api::ring)
			while (!(r = st->ring.try_push(msg)) && r.error() == std::errc::resource_unavailable_try_again)
				bench_relax();
		else
			while (!(r = st->svc.try_push(std::span<const std::byte>(msg))) &&
			       r.error() == std::errc::resource_unavailable_try_again)
				bench_relax();
		if (!r)
			return code(r.error());
	}
	return 0;
}

int c_consume(void *state_, std::uint64_t n)
{
	auto *st = static_cast<state *>(state_);
	int e;
	if (!st->s->opened.load() && (e = c_serve_open(st)) < 0)
		return e;
	const cfg &c = *st->c;
	if (c.how == api::typed) {
		for (std::uint64_t i = 0; i < n; i++) {
			abd::result<msg64> m;
			while (!(m = st->typed.try_pop()) && m.error() == std::errc::resource_unavailable_try_again)
				bench_relax();
			if (!m)
				return code(m.error());
		}
		return 0;
	}
	std::array<std::byte, bytes> msg;
	for (std::uint64_t i = 0; i < n; i++) {
		abd::result<std::size_t> r;
		if (c.block)
			r = st->svc.pop(std::span<std::byte>(msg), abd::forever);
		else if (c.how == api::ring)
			while (!(r = st->ring.try_pop(msg)) && r.error() == std::errc::resource_unavailable_try_again)
				bench_relax();
		else
			while (!(r = st->svc.try_pop(std::span<std::byte>(msg))) &&
			       r.error() == std::errc::resource_unavailable_try_again)
				bench_relax();
		if (!r)
			return code(r.error());
		if (*r != bytes)
			return -EBADMSG;
	}
	return 0;
}

void row(const char *cpus, const char *subject, const char *case_name, const cfg &mine_cfg,
         bool direct, uint64_t iters)
{
	static bench_pair mine_pair, c_pair;
	mine_pair = bench_pair{};
	mine_pair.shm_size = sizeof(shared);
	mine_pair.arg = const_cast<cfg *>(&mine_cfg);
	mine_pair.prepare = c_prepare;
	mine_pair.init = c_init;
	mine_pair.fini = c_fini;
	mine_pair.cleanup = c_cleanup;
	mine_pair.produce = c_produce;
	mine_pair.consume = c_consume;
	bench_service_pair(&c_pair, direct, mine_cfg.block, mine_cfg.how == api::typed);
	bench_row r{};
	r.subject = subject;
	r.case_name = case_name;
	r.cpus = cpus;
	r.msg_bytes = bytes;
	r.baseline = direct ? "abd-ring" : "abd-service";
	r.baseline_case = case_name;
	static struct bench_pair_sample mine, theirs;
	mine = {&mine_pair, iters, true};
	theirs = {&c_pair, iters, true};
	auto *v = static_cast<struct bench_versus *>(std::calloc(1, sizeof(struct bench_versus)));
	if (!v) {
		bench_skip(&r, "out of memory");
		return;
	}
	v->fn = bench_pair_sample;
	v->ctx = &mine;
	v->base_fn = bench_pair_sample;
	v->base_ctx = &theirs;
	bench_versus(v, r);
	std::free(v);
}

} // namespace

extern "C" void bench_cpp(void)
{
	static const cfg ring{api::ring, false}, service{api::service, false}, block{api::service, true},
		typed{api::typed, false};
	// --quick (the CI smoke) checks the rows' shape: small sizes keep it short on a loaded machine
	uint64_t spin = bench_iters(2000000, 20000), blocking = bench_iters(500000, 5000);
	for (const char *cpus : {BENCH_SPLIT, BENCH_SHARED}) {
		row(cpus, "abd-cpp-ring", "throughput-svc", ring, true, spin);
		row(cpus, "abd-cpp-service", "throughput", service, false, spin);
		row(cpus, "abd-cpp-service", "throughput-block", block, false, blocking);
		row(cpus, "abd-cpp-service", "throughput-typed", typed, false, spin);
	}
}
