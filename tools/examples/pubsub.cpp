// SPDX-License-Identifier: MIT
// Publish/subscribe from C++ through <abd/abd.hpp> (docs/cpp.md): owners that close
// themselves, std::expected results, std::chrono timeouts. One program, four roles:
//
//   pubsub-cxx sub example.chat 5 &            text messages, interchangeable with the C
//   pubsub-cxx pub example.chat 5              pubsub-publisher / pubsub-subscriber
//
//   pubsub-cxx typed-sub example.samples 1000 &   abd::service<sample>: the same type as
//   pubsub-cxx typed-pub example.samples 1000     typed-ring.c, so either side may be C
//
// Exit: 0 done, 1 an error (printed), 2 usage, 3 the service carries another message type.
#include <abd/abd.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

using namespace std::chrono_literals;

namespace {

// The message type. Its name and layout string are its identity: the service publishes them
// (with sizeof) and every opener's must match, or its open fails (errc::wrong_protocol_type).
// typed-ring.c gives the C struct of the same layout the same two strings.
struct sample {
	static constexpr std::string_view abd_type_name = "example.sample";
	static constexpr std::string_view abd_type_layout = "u64 seq; f64 value; u32 sensor; u32 check";
	std::uint64_t seq;
	double value;
	std::uint32_t sensor;
	std::uint32_t check; // seq * 2654435761, truncated: the consumer verifies each sample
};

int fail(std::string_view what, std::error_code e)
{
	std::fprintf(stderr, "pubsub-cxx: %.*s: %s\n", int(what.size()), what.data(), e.message().c_str());
	return e == std::errc::wrong_protocol_type ? 3 : 1;
}

// A publisher answers openers from its reactor: run it until a subscriber is there.
template <class Service>
bool wait_for_subscriber(Service &svc)
{
	for (int i = 0; i < 1000; i++) {
		if (auto st = svc.stats(); st && st->consumers > 0)
			return true;
		(void)svc.reactor().run_once(10ms);
	}
	return false;
}

int text_pub(std::string_view name, long count)
{
	auto svc = abd::service<>::publish(name, {.capacity = 64, .slot_size = 128}, abd::service_flags::producer);
	if (!svc)
		return fail("publish", svc.error());
	if (!wait_for_subscriber(*svc))
		return fail("waiting for a subscriber", std::make_error_code(std::errc::timed_out));
	for (long i = 1; i <= count; i++) {
		std::string msg = "c++ message " + std::to_string(i) + " of " + std::to_string(count);
		if (auto r = svc->push(msg, 5s); !r)
			return fail("push", r.error());
	}
	std::printf("pubsub-cxx pub: sent %ld messages\n", count);
	return 0; // svc closes here: the subscriber drains, then gets broken_pipe
}

int text_sub(std::string_view name, long expect)
{
	auto svc = abd::service<>::open(name, {}, abd::service_flags::consumer, 10s);
	if (!svc)
		return fail("open", svc.error());
	char buf[4096];
	long got = 0;
	for (;;) {
		auto n = svc->pop(std::span(buf), abd::forever);
		if (!n && n.error() == std::errc::broken_pipe)
			break; // the publisher left and everything it sent was read
		if (!n)
			return fail("pop", n.error());
		std::printf("pubsub-cxx sub: %.*s\n", int(*n), buf);
		got++;
	}
	std::printf("pubsub-cxx sub: publisher left after %ld messages\n", got);
	return expect < 0 || got == expect ? 0 : 1;
}

int typed_pub(std::string_view name, long count)
{
	auto svc = abd::service<sample>::publish(name, {.capacity = 256}, abd::service_flags::producer);
	if (!svc)
		return fail("publish", svc.error());
	if (!wait_for_subscriber(*svc))
		return fail("waiting for a subscriber", std::make_error_code(std::errc::timed_out));
	for (long i = 0; i < count; i++) {
		auto seq = static_cast<std::uint64_t>(i);
		sample s{seq, double(i) / 8, 7, static_cast<std::uint32_t>(seq * 2654435761u)};
		if (auto r = svc->push(s, 5s); !r)
			return fail("push", r.error());
	}
	std::printf("pubsub-cxx typed-pub: sent %ld samples\n", count);
	return 0;
}

int typed_sub(std::string_view name, long expect)
{
	auto svc = abd::service<sample>::open(name, {}, abd::service_flags::consumer, 10s);
	if (!svc)
		return fail("open", svc.error());
	long got = 0, bad = 0;
	for (;;) {
		abd::result<sample> s = svc->pop(abd::forever);
		if (!s && s.error() == std::errc::broken_pipe)
			break;
		if (!s)
			return fail("pop", s.error());
		bad += s->seq != static_cast<std::uint64_t>(got) || s->check != static_cast<std::uint32_t>(s->seq * 2654435761u);
		got++;
	}
	std::printf("pubsub-cxx typed-sub: %ld samples, %ld out of order or corrupt\n", got, bad);
	return bad == 0 && (expect < 0 || got == expect) ? 0 : 1;
}

} // namespace

int main(int argc, char **argv)
{
	if (argc < 3) {
		std::fprintf(stderr, "usage: pubsub-cxx pub|sub|typed-pub|typed-sub NAME [COUNT]\n");
		return 2;
	}
	std::string_view mode = argv[1], name = argv[2];
	long count = argc > 3 ? std::strtol(argv[3], nullptr, 10) : -1;
	if (mode == "pub")
		return text_pub(name, count < 0 ? 10 : count);
	if (mode == "sub")
		return text_sub(name, count);
	if (mode == "typed-pub")
		return typed_pub(name, count < 0 ? 1000 : count);
	if (mode == "typed-sub")
		return typed_sub(name, count);
	std::fprintf(stderr, "pubsub-cxx: unknown mode %s\n", argv[1]);
	return 2;
}
