// SPDX-License-Identifier: MIT
// The C++ layer (include/abd/abd.hpp), as TAP, compiled with -fno-exceptions: move-only
// owners that free what they own (no descriptor left behind), std::expected errors, names
// checked before they reach C, timeouts, the typed service against a C peer in another process
// (tests/cpp-peer.c, ABD_SERVICE_TYPED) in both directions, a mismatched layout refused with
// EPROTOTYPE, the reactor embedded in a poll() loop, rings with their loan guards, the
// registry, watch and acquisition owners.
#include <abd/abd.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <type_traits>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cpp-sample.h"
#include "plain/tap.h"

using namespace std::chrono_literals;

#ifdef __cpp_exceptions
#error "tests/test-cpp.cpp is compiled with -fno-exceptions: abd.hpp must not need them"
#endif

// The C++ side names the C struct's identity with the strings the C peer gives the macro.
template <>
struct abd::message_type<cpp_sample> {
	static constexpr std::string_view name = CPP_SAMPLE_NAME;
	static constexpr std::string_view layout = CPP_SAMPLE_LAYOUT;
};
// The same bytes under the other layout string (what a peer built from a changed struct has).
struct cpp_sample_v2 : cpp_sample {
	static constexpr std::string_view abd_type_name = CPP_SAMPLE_NAME;
	static constexpr std::string_view abd_type_layout = CPP_SAMPLE_LAYOUT_V2;
};

namespace {

char dir[64];
int n_name = 0;

// A service name of its own for each test. No std::string in this file: MSan runs it, and
// libstdc++ (not instrumented) builds std::string's bytes out of its sight.
struct name_buf {
	char s[ABD_SERVICE_MAX + 1];
	operator std::string_view() const noexcept { return s; }
	const char *c_str() const noexcept { return s; }
};
name_buf fresh_name(const char *what)
{
	name_buf n;
	std::snprintf(n.s, sizeof n.s, "cpp.%s.%d.%d", what, int(getpid()), n_name++);
	return n;
}

// strerror, not error_code::message(): the latter is built in libstdc++ (see above).
const char *why(std::error_code e) { return std::strerror(e.value()); }

int count_fds()
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	while (dirent *e = readdir(d))
		n += e->d_name[0] != '.';
	closedir(d);
	return n - 1; // the directory's own descriptor
}

// Runs the C peer: cpp-peer MODE DIR NAME COUNT [v2]. Returns its pid.
pid_t spawn_peer(const char *mode, const name_buf &name, long count, bool v2 = false)
{
	const char *root = getenv("ABD_BUILD_ROOT");
	char peer[4096], n[32];
	std::snprintf(peer, sizeof peer, "%s/tests/cpp-peer", root ? root : ".");
	std::snprintf(n, sizeof n, "%ld", count);
	pid_t pid = fork();
	if (pid == 0) {
		execl(peer, peer, mode, dir, name.c_str(), n, v2 ? "v2" : nullptr, static_cast<char *>(nullptr));
		_exit(127);
	}
	return pid;
}

int wait_exit(pid_t pid)
{
	int st = 0;
	if (waitpid(pid, &st, 0) != pid)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int rm_entry(const char *path, const struct stat *, int, struct FTW *) { return remove(path); }

// ----------------------------------------------------------------------------- compile time --

template <class T>
constexpr bool move_only = !std::is_copy_constructible_v<T> && !std::is_copy_assignable_v<T> &&
                           std::is_nothrow_move_constructible_v<T>;
static_assert(move_only<abd::service<cpp_sample>> && move_only<abd::service<>>);
static_assert(move_only<abd::registry> && move_only<abd::record> && move_only<abd::publication>);
static_assert(move_only<abd::snapshot> && move_only<abd::watch> && move_only<abd::reactor>);
static_assert(move_only<abd::source> && move_only<abd::ring> && move_only<abd::acquired>);
static_assert(move_only<abd::acquire_server> && move_only<abd::unique_fd>);
static_assert(move_only<abd::reservation> && move_only<abd::peeked> && move_only<abd::ring_stream>);
static_assert(std::is_copy_constructible_v<abd::reactor_ref> && std::is_copy_constructible_v<abd::ring_ref>);
// The identity is computed at compile time, as the C function computes it at run time.
static_assert(abd::service<cpp_sample>::identity.size == sizeof(cpp_sample));
static_assert(abd::service<cpp_sample>::identity.hash == abd::type_hash(CPP_SAMPLE_LAYOUT));
static_assert(abd::type_hash("") == 0xcbf29ce484222325u);
static_assert(abd::timeout(abd::forever).ns() == -1 && abd::timeout(1500us).ns() == 1500000);
static_assert(abd::timeout(-5s).ns() == 0 && abd::timeout(std::chrono::hours::max()).ns() == -1);
static_assert(abd::timeout(std::chrono::duration<double>(0.25)).ns() == 250000000);
static_assert(abd::timeout(1ns).ms() == 1 && abd::timeout(abd::forever).ms() == -1);

// ----------------------------------------------------------------------------- tests --

void test_type_identity()
{
	const char *layouts[] = {"", "u64 seq", CPP_SAMPLE_LAYOUT, CPP_SAMPLE_LAYOUT_V2, "\xff\x01 bytes"};
	bool same = true;
	for (const char *l : layouts)
		same &= abd::type_hash(l) == abd_service_type_hash(l);
	TAP_CHECK(same, "abd::type_hash equals the C abd_service_type_hash on every layout tried");
	TAP_CHECK(abd::service<cpp_sample>::identity.hash != abd::service<cpp_sample_v2>::identity.hash,
	          "another layout string gives another hash");
}

void test_names_rejected()
{
	int before = count_fds();
	std::string_view with_nul("cpp.bad\0name", 12);
	auto a = abd::service<>::publish(with_nul, {.dir = dir});
	TAP_CHECK(!a && a.error() == std::errc::invalid_argument,
	          "a service name with an embedded NUL is refused (invalid_argument): %s",
	          a ? "published" : why(a.error()));
	char longer_buf[ABD_SERVICE_MAX + 1];
	std::memset(longer_buf, 'x', sizeof longer_buf);
	std::string_view longer(longer_buf, sizeof longer_buf);
	auto b = abd::service<>::open(longer, {.dir = dir}, abd::service_flags::consumer, 0s);
	TAP_CHECK(!b && b.error() == std::errc::invalid_argument,
	          "a service name longer than ABD_SERVICE_MAX is refused (invalid_argument)");
	auto c = abd::service<>::publish("cpp.ok", {.dir = std::string_view("/dev/shm\0x", 10)});
	TAP_CHECK(!c && c.error() == std::errc::invalid_argument,
	          "a directory with an embedded NUL is refused (invalid_argument)");
	auto reg = abd::registry::open(dir);
	auto snap = reg ? reg->take_snapshot() : abd::result<abd::snapshot>(std::unexpected(reg.error()));
	TAP_CHECK(snap && snap->size() == 0, "nothing was published by the refused calls");
	auto d = abd::service<>::publish(longer.substr(1), {.dir = dir});
	TAP_CHECK(d.has_value(), "a name of exactly ABD_SERVICE_MAX bytes is accepted");
	d = abd::result<abd::service<>>(std::unexpected(std::error_code()));
	snap = abd::result<abd::snapshot>(std::unexpected(std::error_code()));
	reg = abd::result<abd::registry>(std::unexpected(std::error_code()));
	TAP_CHECK(count_fds() == before, "no descriptor left behind (%d before, %d after)", before, count_fds());
}

void test_bytes_roundtrip()
{
	int before = count_fds();
	name_buf name = fresh_name("bytes");
	{
		auto pub = abd::service<>::publish(name, {.dir = dir, .capacity = 8, .slot_size = 64},
		                                   abd::service_flags::producer);
		TAP_CHECK(pub.has_value(), "publish an untyped service: %s", pub ? "ok" : why(pub.error()));
		if (!pub)
			return;
		auto sub = abd::service<>::open(name, {.dir = dir}, abd::service_flags::consumer, 5s);
		TAP_CHECK(sub.has_value(), "open it by name in the same process");
		if (!sub)
			return;
		TAP_CHECK(pub->push("hello", 1s).has_value(), "push a string_view");
		std::array<char, 64> buf{};
		auto n = sub->pop(std::span(buf), 1s);
		TAP_CHECK(n && std::string_view(buf.data(), *n) == "hello", "pop it back into a span");
		auto empty = sub->try_pop(std::span(buf));
		TAP_CHECK(!empty && empty.error() == std::errc::resource_unavailable_try_again,
		          "try_pop on an empty service: resource_unavailable_try_again (EAGAIN)");
		char big_buf[65] = {};
		auto big = pub->try_push(std::string_view(big_buf, sizeof big_buf));
		TAP_CHECK(!big && big.error() == std::errc::message_size, "a message over the slot size: message_size");
		auto timed = sub->pop(std::span(buf), 20ms);
		TAP_CHECK(!timed && timed.error() == std::errc::timed_out, "pop with a deadline: timed_out");
		// The C struct abd_service_stats is hidden by the function of the same name in C++:
		// abd::service_stats names it.
		abd::result<abd::service_stats> st = pub->stats();
		TAP_CHECK(st && st->capacity == 8 && st->slot_size == 64 && st->pushed == 1 && st->consumers >= 1,
		          "stats() gives the service's figures");
		auto t = sub->type();
		TAP_CHECK(t && t->name.empty() && t->size == 0, "an untyped service has no type");
		// Moving the owner keeps the service open; the moved-from handle is empty.
		abd::service<> moved = std::move(*pub);
		TAP_CHECK(moved && !*pub && moved.push("again", 1s).has_value(), "a moved service still pushes");
		n = sub->pop(std::span(buf), 1s);
		TAP_CHECK(n && std::string_view(buf.data(), *n) == "again", "and its message arrives");
		moved.close();
		n = sub->pop(std::span(buf), 1s);
		TAP_CHECK(!n && n.error() == std::errc::broken_pipe && sub->closed().value() == ESHUTDOWN,
		          "after the publisher's close: broken_pipe, closed() is ESHUTDOWN");
	}
	auto reg = abd::registry::open(dir);
	auto rec = reg ? reg->lookup(name) : abd::result<abd::record>(std::unexpected(reg.error()));
	TAP_CHECK(!rec && rec.error() == std::errc::no_such_file_or_directory,
	          "the record is gone once the owners went out of scope");
	reg = abd::result<abd::registry>(std::unexpected(std::error_code()));
	TAP_CHECK(count_fds() == before, "no descriptor left behind (%d before, %d after)", before, count_fds());
}

void test_typed_same_process()
{
	name_buf name = fresh_name("typed");
	auto pub = abd::service<cpp_sample>::publish(name, {.dir = dir, .capacity = 16});
	TAP_CHECK(pub.has_value(), "publish abd::service<cpp_sample>");
	if (!pub)
		return;
	auto t = pub->type();
	TAP_CHECK(t && t->name == CPP_SAMPLE_NAME && t->size == sizeof(cpp_sample) &&
	              t->hash == abd_service_type_hash(CPP_SAMPLE_LAYOUT),
	          "the service carries T's name, size and layout hash");
	auto wrong = abd::service<cpp_sample_v2>::open(name, {.dir = dir}, abd::service_flags::consumer, 0s);
	TAP_CHECK(!wrong && wrong.error() == std::errc::wrong_protocol_type,
	          "an opener with another layout is refused: wrong_protocol_type (EPROTOTYPE): %s",
	          wrong ? "opened" : why(wrong.error()));
	auto sub = abd::service<cpp_sample>::open(name, {.dir = dir}, abd::service_flags::consumer, 5s);
	TAP_CHECK(sub.has_value(), "an opener of the same type gets it");
	if (!sub)
		return;
	bool ok = true;
	for (uint64_t i = 0; i < 40 && ok; i++) {
		ok &= pub->push(cpp_sample_make(i), 1s).has_value();
		abd::result<cpp_sample> s = sub->pop(1s);
		ok &= s && cpp_sample_ok(&*s, i);
	}
	TAP_CHECK(ok, "40 samples pushed and popped as values, each intact");
	auto raw = abd::service<>::open(name, {.dir = dir}, abd::service_flags::producer, 5s);
	TAP_CHECK(raw.has_value(), "an untyped opener may join a typed service");
	if (raw) {
		auto r = raw->try_push("short");
		TAP_CHECK(!r && r.error() == std::errc::message_size,
		          "but a message of another size is refused (message_size): %s",
		          r ? "pushed" : why(r.error()));
		cpp_sample one = cpp_sample_make(7);
		TAP_CHECK(raw->try_push(std::as_bytes(std::span(&one, 1))).has_value(), "the type's bytes are taken");
		auto got = sub->try_pop();
		TAP_CHECK(got && cpp_sample_ok(&*got, 7), "and the typed consumer pops them as a sample");
	}
}

void test_interop_c_publisher()
{
	name_buf name = fresh_name("cpub");
	pid_t peer = spawn_peer("pub", name, 100);
	auto sub = abd::service<cpp_sample>::open(name, {.dir = dir}, abd::service_flags::consumer, 10s);
	TAP_CHECK(sub.has_value(), "C++ abd::service<T> opens a C publisher's ABD_SERVICE_TYPED service: %s",
	          sub ? "ok" : why(sub.error()));
	long got = 0, bad = 0;
	if (sub) {
		for (;;) {
			auto s = sub->pop(10s);
			if (!s) {
				TAP_CHECK(s.error() == std::errc::broken_pipe, "the stream ends with broken_pipe: %s",
				          why(s.error()));
				break;
			}
			bad += !cpp_sample_ok(&*s, static_cast<uint64_t>(got++));
		}
	}
	TAP_CHECK(got == 100 && bad == 0, "the C++ consumer got the C publisher's 100 samples intact (%ld, %ld bad)",
	          got, bad);
	TAP_CHECK(wait_exit(peer) == 0, "the C publisher exited 0");
}

void test_interop_cpp_publisher(bool v2)
{
	name_buf name = fresh_name(v2 ? "cppv2" : "cpp");
	auto pub = abd::service<cpp_sample>::publish(name, {.dir = dir, .capacity = 16}, abd::service_flags::producer);
	TAP_CHECK(pub.has_value(), "C++ publishes abd::service<cpp_sample>");
	if (!pub)
		return;
	pid_t peer = spawn_peer("sub", name, 100, v2);
	if (v2) {
		// Serve the handshake until the peer gave up.
		int code = -1;
		for (int i = 0; i < 1000 && code < 0; i++) {
			(void)pub->reactor().run_once(10ms);
			int st;
			if (waitpid(peer, &st, WNOHANG) == peer)
				code = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
		}
		TAP_CHECK(code == 3, "a C consumer with another layout is refused with EPROTOTYPE (exit %d)", code);
		return;
	}
	// Wait for the C consumer (running the reactor answers its handshake), then stream.
	abd::result<abd::service_stats> st;
	for (int i = 0; i < 1000 && !(st && st->consumers > 0); i++) {
		(void)pub->reactor().run_once(10ms);
		st = pub->stats();
	}
	TAP_CHECK(st && st->consumers == 1, "the C consumer opened the C++ publisher's service");
	bool ok = true;
	for (uint64_t i = 0; i < 100 && ok; i++)
		ok &= pub->push(cpp_sample_make(i), 10s).has_value();
	TAP_CHECK(ok, "100 samples pushed");
	pub->close();
	TAP_CHECK(wait_exit(peer) == 0, "the C consumer (ABD_SERVICE_TYPED) got them all, then EPIPE");
}

void test_reactor_embedded()
{
	int before = count_fds();
	name_buf name = fresh_name("embed");
	pid_t peer = spawn_peer("pub", name, 30);
	{
		auto sub = abd::service<cpp_sample>::open(name, {.dir = dir}, abd::service_flags::consumer, 10s);
		TAP_CHECK(sub.has_value(), "open the C publisher's service for the embedded loop");
		if (!sub) {
			(void)wait_exit(peer);
			return;
		}
		long got = 0, readable = 0;
		int closed = 0;
		auto ev = sub->on_event([&](abd_service_event e, int status) {
			if (e == ABD_SERVICE_EVENT_READABLE) {
				readable++;
				while (auto s = sub->try_pop())
					got += cpp_sample_ok(&*s, static_cast<uint64_t>(got));
			} else if (e == ABD_SERVICE_EVENT_CLOSED)
				closed = status;
		});
		TAP_CHECK(ev.has_value(), "on_event takes a lambda");
		auto fd = sub->reactor().fd();
		TAP_CHECK(fd.has_value(), "the service's reactor gives its descriptor");
		// Our own loop: poll() the reactor's descriptor next to others, run_once(0) when ready.
		auto deadline = std::chrono::steady_clock::now() + 20s;
		while (fd && closed == 0 && std::chrono::steady_clock::now() < deadline) {
			pollfd p{*fd, POLLIN, 0};
			int r = poll(&p, 1, 100);
			if (r < 0 && errno != EINTR)
				break;
			(void)sub->reactor().run_once(0ns);
		}
		TAP_CHECK(readable > 0 && got == 30, "READABLE events in a poll() loop delivered all 30 samples (%ld events)",
		          readable);
		TAP_CHECK(closed == -ESHUTDOWN, "then CLOSED with -ESHUTDOWN (status %d)", closed);
	}
	TAP_CHECK(wait_exit(peer) == 0, "the C publisher exited 0");
	TAP_CHECK(count_fds() == before, "no descriptor left behind (%d before, %d after)", before, count_fds());
}

void test_reactor_sources()
{
	int before = count_fds();
	{
		auto r = abd::reactor::create();
		TAP_CHECK(r.has_value(), "abd::reactor::create");
		if (!r)
			return;
		int fired = 0, deferred = 0;
		uint64_t counted = 0;
		auto t = r->add_timer(1ms, 1ms, [&](int status, uint64_t n) { fired += status == 0 ? int(n) : 0; });
		auto d = r->add_defer([&](int, uint64_t) { deferred++; });
		int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		auto e = r->add_eventfd(efd, [&](int, uint64_t v) { counted += v; });
		TAP_CHECK(t && d && e, "timer, deferred and eventfd sources take lambdas");
		uint64_t three = 3;
		TAP_CHECK(write(efd, &three, sizeof(three)) == sizeof(three), "eventfd written");
		for (int i = 0; i < 200 && (fired < 3 || counted < 3 || deferred < 1); i++)
			(void)r->run_once(10ms);
		TAP_CHECK(fired >= 3 && deferred == 1 && counted == 3, "each callback ran (timer %d, defer %d, eventfd %llu)",
		          fired, deferred, static_cast<unsigned long long>(counted));
		t->reset();
		int was = fired;
		for (int i = 0; i < 5; i++)
			(void)r->run_once(2ms);
		TAP_CHECK(fired == was, "a source reset is never called again");
		e = abd::result<abd::source>(std::unexpected(std::error_code()));
		close(efd);
	}
	TAP_CHECK(count_fds() == before, "no descriptor left behind (%d before, %d after)", before, count_fds());
}

void test_ring()
{
	int before = count_fds();
	{
		auto r = abd::ring::create(8, 64);
		TAP_CHECK(r.has_value(), "abd::ring::create");
		if (!r)
			return;
		auto peer = abd::ring::attach(r->fd(), r->wait_fd().value_or(-1), r->nonce());
		TAP_CHECK(peer.has_value(), "attach a second handle with the nonce checked");
		if (!peer)
			return;
		std::array<std::byte, 64> buf{};
		TAP_CHECK(r->try_push(std::as_bytes(std::span("abc", 3))).has_value(), "try_push a span");
		auto n = peer->pop(buf, 1s);
		TAP_CHECK(n && *n == 3 && std::memcmp(buf.data(), "abc", 3) == 0, "pop it from the other handle");
		{
			auto res = r->try_reserve();
			TAP_CHECK(res && res->data().size() == 64, "try_reserve gives the slot as a span");
			// not committed: aborted when the guard goes
		}
		auto none = peer->try_pop(buf);
		TAP_CHECK(!none && none.error() == std::errc::resource_unavailable_try_again,
		          "a reservation dropped uncommitted is skipped by consumers");
		{
			auto res = r->try_reserve();
			if (res) {
				std::memcpy(res->data().data(), "zero", 4);
				TAP_CHECK(res->commit(4).has_value(), "commit a reservation");
			}
			auto pk = peer->try_peek();
			TAP_CHECK(pk && pk->data().size() == 4 && std::memcmp(pk->data().data(), "zero", 4) == 0,
			          "try_peek sees it in place");
		}
		TAP_CHECK(peer->try_pop(buf).error() == std::errc::resource_unavailable_try_again,
		          "the peeked message was released by its guard");
		struct pair {
			uint32_t a, b;
		};
		TAP_CHECK(r->try_push_value(pair{1, 2}).has_value(), "try_push_value");
		auto p = peer->try_pop_value<pair>();
		TAP_CHECK(p && p->a == 1 && p->b == 2, "try_pop_value");
		auto st = r->stats();
		TAP_CHECK(st && st->pushed >= 2, "ring stats");
		auto spsc = abd::ring::create(8, 64, ABD_RING_SINGLE_PRODUCER | ABD_RING_SINGLE_CONSUMER);
		if (spsc) {
			auto ps = spsc->stream(ABD_RING_PRODUCER);
			auto cs = spsc->stream(ABD_RING_CONSUMER);
			bool ok = ps && cs;
			for (int i = 0; ok && i < 20; i++) {
				ok &= ps->push(std::as_bytes(std::span(&i, 1))).has_value();
				int v = -1;
				auto got = cs->pop(std::as_writable_bytes(std::span(&v, 1)));
				ok &= got && *got == sizeof(int) && v == i;
			}
			TAP_CHECK(ok, "streams on a single-producer single-consumer ring");
		} else
			TAP_CHECK(false, "spsc ring: %s", why(spsc.error()));
		auto bad = abd::ring::create(3, 64);
		TAP_CHECK(!bad && bad.error() == std::errc::invalid_argument, "a capacity that is not a power of two");
	}
	TAP_CHECK(count_fds() == before, "no descriptor left behind (%d before, %d after)", before, count_fds());
}

// A forked child publishes a record with an eventfd slot and serves it through a handshake
// server on its reactor, all through the C++ owners; the parent looks it up, acquires it and
// takes the descriptor.
void test_registry_and_acquire()
{
	int before = count_fds();
	name_buf name = fresh_name("rec");
	int ready[2];
	if (pipe2(ready, O_CLOEXEC) < 0) {
		TAP_CHECK(false, "pipe");
		return;
	}
	pid_t child = fork();
	if (child == 0) {
		close(ready[0]);
		auto reg = abd::registry::open(dir);
		auto rec = abd::record::create(name);
		int efd = eventfd(0, EFD_CLOEXEC);
		if (!reg || !rec || efd < 0)
			_exit(10);
		auto srv = abd::acquire_server::create(*reg);
		if (!srv || !rec->add_fd("wake", efd, ABD_FD_EVENTFD) || !rec->add_meta("color", "blue") ||
		    !rec->set_socket(srv->socket()))
			_exit(11);
		auto pub = reg->publish(*rec);
		if (!pub || !srv->serve(pub->record()))
			_exit(12);
		auto loop = abd::reactor::create();
		if (!loop)
			_exit(13);
		auto src = loop->add_acquire_server(*srv);
		if (!src)
			_exit(14);
		(void)!write(ready[1], "r", 1);
		for (;;)
			(void)loop->run_once(100ms);
	}
	close(ready[1]);
	char c;
	bool up = read(ready[0], &c, 1) == 1;
	close(ready[0]);
	TAP_CHECK(up, "the child published a record through abd::registry::publish");
	{
		auto reg = abd::registry::open(dir);
		auto rec = reg ? reg->lookup(name) : abd::result<abd::record>(std::unexpected(reg.error()));
		TAP_CHECK(rec && rec->pid() == child && rec->meta("color") == "blue" && !rec->meta("size"),
		          "lookup gives an owned record with its metadata");
		bool seen = false;
		if (auto snap = reg->take_snapshot())
			for (const abd_entry &e : *snap)
				seen |= e.service && std::strcmp(e.service, name.c_str()) == 0 && e.state == ABD_STATE_ALIVE;
		TAP_CHECK(seen, "a snapshot iterates its entries");
		auto w = reg->watch_changes(0, name);
		int added = 0;
		auto ev = w ? w->process([&](abd_event_type t, const abd_entry &) { added += t == ABD_EVENT_ADDED; })
		            : abd::result<int>(std::unexpected(w.error()));
		TAP_CHECK(ev && added == 1, "a watch of one service reports it once (ADDED)");
		if (rec) {
			auto a = reg->acquire(*rec, 0, 5s);
			TAP_CHECK(a.has_value(), "acquire the publisher's descriptors: %s", a ? "ok" : why(a.error()));
			if (a) {
				auto cred = a->peer();
				TAP_CHECK(cred && cred->pid == child, "the peer's credentials");
				auto slot = a->at(0);
				TAP_CHECK(slot && slot->name == "wake" && slot->kind == ABD_FD_EVENTFD, "slot 0 is the eventfd");
				auto fd = a->take_fd("wake");
				TAP_CHECK(fd && fd->get() >= 0, "take_fd gives an owned descriptor");
				auto again = a->take_fd("wake");
				TAP_CHECK(!again && again.error() == std::errc::bad_file_descriptor, "taking it twice: bad_file_descriptor");
				auto missing = a->fd("nope");
				TAP_CHECK(!missing && missing.error() == std::errc::no_such_file_or_directory, "an unknown slot");
			}
		}
		kill(child, SIGKILL);
		(void)wait_exit(child);
		if (w) {
			int died = 0;
			for (int i = 0; i < 50 && !died; i++)
				(void)w->wait(100ms, [&](abd_event_type t, const abd_entry &) { died += t == ABD_EVENT_DIED; });
			TAP_CHECK(died == 1, "the watch reports the child's death");
		}
		auto gone = reg->lookup(name);
		TAP_CHECK(!gone && gone.error() == std::errc::no_such_file_or_directory, "a dead publisher's record is not looked up");
		auto removed = reg->gc();
		TAP_CHECK(removed && *removed >= 1, "gc removes the stale record");
	}
	TAP_CHECK(count_fds() == before, "no descriptor left behind (%d before, %d after)", before, count_fds());
}

} // namespace

int main()
{
	setvbuf(stdout, nullptr, _IOLBF, 0);
	std::snprintf(dir, sizeof dir, "/dev/shm/abd-cpp-XXXXXX");
	if (!mkdtemp(dir)) {
		std::printf("Bail out! mkdtemp\n");
		return 1;
	}
	int fds = count_fds();
	test_type_identity();
	test_names_rejected();
	test_bytes_roundtrip();
	test_typed_same_process();
	test_interop_c_publisher();
	test_interop_cpp_publisher(false);
	test_interop_cpp_publisher(true);
	test_reactor_embedded();
	test_reactor_sources();
	test_ring();
	test_registry_and_acquire();
	TAP_CHECK(count_fds() == fds, "no descriptor left behind by the whole program (%d, %d)", fds, count_fds());
	nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	return tap_done();
}
