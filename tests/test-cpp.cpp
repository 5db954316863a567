// SPDX-License-Identifier: MIT
// The C++ layer (include/abd/abd.hpp), as TAP, compiled with -fno-exceptions: move-only
// owners that free what they own (no descriptor left behind), std::expected errors, names
// checked before they reach C, timeouts, the typed service against a C peer in another process
// (tests/cpp-peer.c, ABD_SERVICE_TYPED) in both directions, a mismatched layout refused with
// EPROTOTYPE, the reactor embedded in a poll() loop, rings with their loan guards, the
// registry, watch and acquisition owners; broadcast services with their loan and peek guards,
// fanned out to subscriber processes and against the C peer's typed loan/peek both ways;
// request-response with a forked C++ server, pending calls as guards.
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
static_assert(move_only<abd::loan_guard<>> && move_only<abd::loan_guard<cpp_sample>>);
static_assert(move_only<abd::peek_guard<>> && move_only<abd::peek_guard<cpp_sample>>);
// send() consumes the loan: it is called on an rvalue (std::move(loan).send()), never on an lvalue.
template <class G>
concept sendable_lvalue = requires(G &g) { g.send(); };
static_assert(!sendable_lvalue<abd::loan_guard<>> && !sendable_lvalue<abd::loan_guard<cpp_sample>>);
static_assert(move_only<abd::pending_call>);
static_assert(requires(abd::loan_guard<> &g) { std::move(g).send(1); });
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


// ----------------------------------------------------------------------------- broadcast --

// Broadcast message i: 8..207 bytes, its number then a pattern of its own.
std::size_t bmsg_len(std::uint64_t i) { return 8 + i % 200; }
void bmsg_fill(std::span<std::byte> b, std::uint64_t i)
{
	std::memcpy(b.data(), &i, 8);
	for (std::size_t k = 8; k < b.size(); k++)
		b[k] = std::byte((i * 31 + k) & 0xff);
}
bool bmsg_ok(std::span<const std::byte> b, std::uint64_t i)
{
	std::uint64_t v = 0;
	if (b.size() != bmsg_len(i))
		return false;
	std::memcpy(&v, b.data(), 8);
	bool ok = v == i;
	for (std::size_t k = 8; k < b.size(); k++)
		ok &= b[k] == std::byte((i * 31 + k) & 0xff);
	return ok;
}

// Runs the publisher's reactor (it answers the handshakes) until n subscribers hold a seat.
template <class S>
bool wait_subscribers(S &pub, std::uint64_t n)
{
	for (int i = 0; i < 2000; i++) {
		auto st = pub.stats();
		if (st && st->consumers >= n)
			return true;
		(void)pub.reactor().run_once(10ms);
	}
	return false;
}

// A subscriber process: every message in order, intact, none lost, then broken_pipe. In place
// (peek guards), or copied (pop) when copy is set. Its exit code says what went wrong.
int fanout_subscriber(const name_buf &name, std::uint64_t count, bool copy)
{
	auto sub = abd::service<>::subscribe(name, {.dir = dir}, 10s);
	if (!sub)
		return 10;
	std::array<std::byte, 256> buf;
	for (std::uint64_t i = 0; i < count; i++) {
		if (copy) {
			auto n = sub->pop(buf, 10s);
			if (!n)
				return 11;
			if (!bmsg_ok(std::span(buf).first(*n), i))
				return 12;
		} else {
			auto m = sub->peek(10s);
			if (!m)
				return 11;
			if (!bmsg_ok(m->data(), i))
				return 12;
		}
	}
	auto end = sub->peek(10s);
	if (end || end.error() != std::errc::broken_pipe)
		return 13;
	auto lost = sub->lost();
	if (!lost || *lost != 0)
		return 14;
	return 0;
}

void test_broadcast_fanout()
{
	int before = count_fds();
	name_buf name = fresh_name("fan");
	constexpr int subs = 3;
	constexpr std::uint64_t count = 500;
	pid_t kids[subs];
	for (int k = 0; k < subs; k++) {
		kids[k] = fork();
		if (kids[k] == 0)
			_exit(fanout_subscriber(name, count, k == subs - 1));
	}
	{
		auto pub = abd::service<>::publish_broadcast(name, {.dir = dir, .capacity = 8, .slot_size = 256},
		                                             {.subscribers = 4}, abd::service_flags::producer);
		TAP_CHECK(pub.has_value(), "publish_broadcast an untyped service: %s", pub ? "ok" : why(pub.error()));
		TAP_CHECK(pub && pub->is_broadcast() && pub->is_publisher(), "the handle is a broadcast publisher");
		bool up = pub && wait_subscribers(*pub, subs);
		TAP_CHECK(up, "%d subscriber processes subscribed", subs);
		bool ok = up;
		for (std::uint64_t i = 0; ok && i < count; i++) {
			auto l = pub->loan(bmsg_len(i), 10s);
			ok = l && l->data().size() == bmsg_len(i);
			if (ok) {
				bmsg_fill(l->data(), i);
				ok = std::move(*l).send().has_value() && !*l;
			}
		}
		TAP_CHECK(ok, "%llu messages of 8..207 bytes lent, written in place and sent (capacity 8: the BLOCK "
		          "publisher keeps pace with the slowest subscriber)",
		          static_cast<unsigned long long>(count));
		auto st = pub ? pub->stats() : abd::result<abd::service_stats>(std::unexpected(pub.error()));
		TAP_CHECK(st && st->pushed == count, "the publisher's stats count them");
	}
	int codes[subs], good = 0;
	for (int k = 0; k < subs; k++)
		good += (codes[k] = wait_exit(kids[k])) == 0;
	TAP_CHECK(good == subs, "every subscriber process got every message in order and intact, none lost, then "
	          "broken_pipe; two through peek guards, one through pop (exits %d %d %d)",
	          codes[0], codes[1], codes[2]);
	TAP_CHECK(count_fds() == before, "no descriptor left behind (%d before, %d after)", before, count_fds());
}

void test_broadcast_loan_dropped()
{
	int before = count_fds();
	name_buf name = fresh_name("loan");
	{
		auto pub = abd::service<>::publish_broadcast(name, {.dir = dir, .capacity = 4, .slot_size = 64},
		                                             {.subscribers = 1}, abd::service_flags::producer);
		TAP_CHECK(pub.has_value(), "publish a broadcast service");
		if (!pub)
			return;
		auto sub = abd::service<>::subscribe(name, {.dir = dir}, 5s);
		TAP_CHECK(sub.has_value(), "subscribe to it: %s", sub ? "ok" : why(sub.error()));
		if (!sub)
			return;
		{
			auto l = pub->loan(5, 0s);
			TAP_CHECK(l && l->data().size() == 5, "loan 5 bytes: the guard's data() is that span");
			if (l)
				std::memcpy(l->data().data(), "drop!", 5);
			auto second = pub->loan(5, 0s);
			TAP_CHECK(!second && second.error() == std::errc::device_or_resource_busy,
			          "a second loan while one is out: device_or_resource_busy (EBUSY)");
			abd::loan_guard<> moved = l ? std::move(*l) : abd::loan_guard<>();
			TAP_CHECK(l && !*l && l->data().empty() && moved && moved.data().size() == 5,
			          "a moved loan: the moved-from guard is empty, the new one holds the chunk");
		} // destroyed unsent
		auto none = sub->peek(0s);
		TAP_CHECK(!none && none.error() == std::errc::resource_unavailable_try_again,
		          "a loan destroyed unsent is not delivered: %s", none ? "delivered" : why(none.error()));
		auto next = pub->loan(4, 0s);
		TAP_CHECK(next.has_value(), "its destructor gave the chunk back: the next loan succeeds: %s",
		          next ? "ok" : why(next.error()));
		if (next) {
			std::memcpy(next->data().data(), "sent", 4);
			TAP_CHECK(std::move(*next).send().has_value() && !*next, "send() publishes it and empties the guard");
		}
		{
			auto m = sub->peek(1s);
			TAP_CHECK(m && std::string_view(reinterpret_cast<const char *>(m->data().data()), m->data().size()) == "sent",
			          "the subscriber gets the sent message, never the dropped one");
		}
		auto big = pub->loan(64, 0s);
		if (big) {
			auto r = std::move(*big).send(65);
			TAP_CHECK(!r && r.error() == std::errc::message_size && *big,
			          "send(len) over the slot size: message_size, and the guard keeps the loan");
			TAP_CHECK(std::move(*big).send(3).has_value(), "which it then sends shorter");
		} else
			TAP_CHECK(false, "loan the whole slot: %s", why(big.error()));
		auto m3 = sub->peek(1s);
		TAP_CHECK(m3 && m3->data().size() == 3, "send(3) published 3 bytes");
		m3 = abd::result<abd::peek_guard<>>(std::unexpected(std::error_code()));
		auto back = pub->loan(8, 0s);
		TAP_CHECK(back && back->unloan().has_value() && !*back && pub->loan(8, 0s).has_value(),
		          "unloan() gives the chunk back at once");
		auto wrong_side = sub->loan(8, 0s);
		auto wrong_side2 = pub->peek(0s);
		TAP_CHECK(!wrong_side && wrong_side.error() == std::errc::operation_not_permitted && !wrong_side2 &&
		              wrong_side2.error() == std::errc::operation_not_permitted,
		          "a subscriber cannot loan, a publisher cannot peek (operation_not_permitted)");
		// A guard that outlives its service holds nothing and touches nothing.
		auto late = pub->loan(8, 0s);
		pub->close();
		TAP_CHECK(late && !*late && late->data().empty(), "a loan whose service closed is empty");
		if (late) {
			auto r = std::move(*late).send();
			TAP_CHECK(!r && r.error().value() == ESTALE, "and its send() gives ESTALE: %s", r ? "sent" : why(r.error()));
		}
		auto after = sub->peek(1s);
		TAP_CHECK(!after && after.error() == std::errc::broken_pipe, "nothing of it reached the subscriber: broken_pipe");
	}
	TAP_CHECK(count_fds() == before, "no descriptor left behind (%d before, %d after)", before, count_fds());
}

void test_broadcast_peek_releases()
{
	name_buf name = fresh_name("peek");
	auto pub = abd::service<cpp_sample>::publish_broadcast(name, {.dir = dir, .capacity = 2},
	                                                        {.subscribers = 1, .policy = abd::broadcast_policy::block},
	                                                        abd::service_flags::producer);
	TAP_CHECK(pub.has_value(), "publish_broadcast abd::service<cpp_sample>, BLOCK, capacity 2");
	if (!pub)
		return;
	auto wrong = abd::service<cpp_sample_v2>::subscribe(name, {.dir = dir}, 0s);
	TAP_CHECK(!wrong && wrong.error() == std::errc::wrong_protocol_type,
	          "a subscriber with another layout is refused: wrong_protocol_type (EPROTOTYPE): %s",
	          wrong ? "subscribed" : why(wrong.error()));
	auto sub = abd::service<cpp_sample>::subscribe(name, {.dir = dir}, 5s);
	TAP_CHECK(sub.has_value() && sub->is_broadcast(), "a subscriber of the same type gets it");
	if (!sub)
		return;
	bool ok = true;
	for (std::uint64_t i = 0; i < 2 && ok; i++) {
		auto l = pub->loan(1s);
		ok = l.has_value();
		if (ok) {
			*l.value() = cpp_sample_make(i);
			ok = std::move(*l).send().has_value();
		}
	}
	TAP_CHECK(ok, "two typed loans written as cpp_sample and sent");
	auto full = pub->loan(0s);
	TAP_CHECK(!full && full.error() == std::errc::resource_unavailable_try_again,
	          "a whole ring ahead of its subscriber, the BLOCK publisher has no room (EAGAIN)");
	{
		auto m = sub->peek(1s);
		TAP_CHECK(m && cpp_sample_ok(m->get(), 0) && (*m)->sensor == 7,
		          "peek the first sample in place as a const cpp_sample");
		auto again = sub->peek(0s);
		TAP_CHECK(!again && again.error() == std::errc::device_or_resource_busy,
		          "a second peek while one is held: device_or_resource_busy (EBUSY)");
		auto still = pub->loan(0s);
		TAP_CHECK(!still && still.error() == std::errc::resource_unavailable_try_again,
		          "while the peek guard holds the sample, the publisher still has no room");
	}
	auto room = pub->loan(0s);
	TAP_CHECK(room.has_value(), "the peek guard's destruction released it: the publisher has room again: %s",
	          room ? "ok" : why(room.error()));
	if (room) {
		**room = cpp_sample_make(2);
		(void)std::move(*room).send();
	}
	auto m1 = sub->peek(1s);
	abd::peek_guard<cpp_sample> held = m1 ? std::move(*m1) : abd::peek_guard<cpp_sample>();
	TAP_CHECK(m1 && !*m1 && !m1->get() && held && cpp_sample_ok(held.get(), 1),
	          "a moved peek guard: the moved-from one is empty, the new one holds sample 1");
	TAP_CHECK(held.release().has_value() && !held, "release() lets it go at once");
	auto m2 = sub->peek(1s);
	TAP_CHECK(m2 && cpp_sample_ok(m2->get(), 2), "the next peek is sample 2");
	auto lost = sub->lost();
	TAP_CHECK(lost && *lost == 0, "nothing lost");
	sub->close();
	TAP_CHECK(m2 && !*m2 && !m2->get(), "a peek guard whose service closed holds nothing (its destructor touches nothing)");
	auto queue = abd::service<cpp_sample>::publish(fresh_name("queue"), {.dir = dir});
	auto not_bcast = queue ? abd::service<cpp_sample>::subscribe(queue->name(), {.dir = dir}, 1s)
	                       : abd::result<abd::service<cpp_sample>>(std::unexpected(queue.error()));
	TAP_CHECK(!not_bcast && not_bcast.error() == std::errc::protocol_not_supported,
	          "subscribe() to a work queue: protocol_not_supported: %s", not_bcast ? "subscribed" : why(not_bcast.error()));
}

void test_broadcast_c_publisher(bool v2)
{
	name_buf name = fresh_name(v2 ? "bcpubv2" : "bcpub");
	pid_t peer = spawn_peer("bpub", name, 100, v2);
	auto sub = abd::service<cpp_sample>::subscribe(name, {.dir = dir}, 10s);
	if (v2) {
		TAP_CHECK(!sub && sub.error() == std::errc::wrong_protocol_type,
		          "subscribing to a C broadcast publisher of another layout: wrong_protocol_type: %s",
		          sub ? "subscribed" : why(sub.error()));
		kill(peer, SIGKILL);
		(void)wait_exit(peer);
		return;
	}
	TAP_CHECK(sub.has_value(), "C++ subscribes to a C publisher's typed broadcast service: %s",
	          sub ? "ok" : why(sub.error()));
	long got = 0, bad = 0;
	if (sub) {
		for (;;) {
			auto s = sub->peek(10s);
			if (!s) {
				TAP_CHECK(s.error() == std::errc::broken_pipe, "the stream ends with broken_pipe: %s", why(s.error()));
				break;
			}
			bad += !cpp_sample_ok(s->get(), static_cast<std::uint64_t>(got++));
		}
	}
	TAP_CHECK(got == 100 && bad == 0,
	          "the C++ peek guards read the C publisher's 100 loaned samples intact (%ld, %ld bad)", got, bad);
	TAP_CHECK(wait_exit(peer) == 0, "the C publisher (name_loan/name_send) exited 0");
}

void test_broadcast_cpp_publisher(bool v2)
{
	name_buf name = fresh_name(v2 ? "bcppv2" : "bcpp");
	auto pub = abd::service<cpp_sample>::publish_broadcast(name, {.dir = dir, .capacity = 16}, {.subscribers = 2},
	                                                        abd::service_flags::producer);
	TAP_CHECK(pub.has_value(), "C++ publishes a typed broadcast service");
	if (!pub)
		return;
	pid_t peer = spawn_peer("bsub", name, 100, v2);
	if (v2) {
		int code = -1;
		for (int i = 0; i < 1000 && code < 0; i++) {
			(void)pub->reactor().run_once(10ms);
			int st;
			if (waitpid(peer, &st, WNOHANG) == peer)
				code = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
		}
		TAP_CHECK(code == 3, "a C subscriber with another layout is refused with EPROTOTYPE (exit %d)", code);
		return;
	}
	TAP_CHECK(wait_subscribers(*pub, 1), "the C subscriber subscribed");
	bool ok = true;
	for (std::uint64_t i = 0; i < 100 && ok; i++) {
		auto l = pub->loan(10s);
		ok = l.has_value();
		if (ok) {
			**l = cpp_sample_make(i);
			ok = std::move(*l).send().has_value();
		}
	}
	TAP_CHECK(ok, "100 samples lent as cpp_sample and sent");
	pub->close();
	TAP_CHECK(wait_exit(peer) == 0, "the C subscriber (name_peek) got them all, none lost, then EPIPE");
}


// ----------------------------------------------------------------------------- rpc --

// A C++ request-response server process: answers sample i with 3 i (a u64), sample 999 with
// io_error; its exit code says what went wrong.
int rpc_server(const name_buf &name)
{
	auto srv = abd::service<cpp_sample>::publish_rpc(name, {.dir = dir, .capacity = 16}, {.in_flight = 2});
	if (!srv)
		return 10;
	for (;;) {
		auto req = srv->take(30s);
		if (!req)
			return 11;
		if (!cpp_sample_ok(&req->value, req->value.seq))
			(void)srv->reply_error(req->token, std::errc::bad_message);
		else if (req->value.seq == 999)
			(void)srv->reply_error(req->token, std::errc::io_error);
		else
			(void)srv->reply_value(req->token, std::uint64_t{req->value.seq * 3});
	}
}

void test_rpc_forked_server()
{
	int before = count_fds();
	name_buf name = fresh_name("rpc");
	pid_t server = fork();
	if (server == 0)
		_exit(rpc_server(name));
	{
		auto wrong = abd::service<cpp_sample_v2>::open(name, {.dir = dir}, abd::service_flags::none, 10s);
		TAP_CHECK(!wrong && wrong.error() == std::errc::wrong_protocol_type,
		          "a client with another request layout is refused: wrong_protocol_type: %s",
		          wrong ? "opened" : why(wrong.error()));
		auto client = abd::service<cpp_sample>::open(name, {.dir = dir}, abd::service_flags::none, 10s);
		TAP_CHECK(client && client->is_rpc() && !client->is_broadcast(),
		          "a C++ client opens the C++ server's request-response service: %s", client ? "ok" : why(client.error()));
		if (!client) {
			kill(server, SIGKILL);
			(void)wait_exit(server);
			return;
		}
		bool ok = true;
		for (std::uint64_t i = 0; i < 200 && ok; i++) {
			auto v = client->call_value<std::uint64_t>(cpp_sample_make(i), 5s);
			ok = v && *v == 3 * i;
		}
		TAP_CHECK(ok, "200 calls with a deadline, each answered with its own value (call_value)");
		std::array<std::byte, 16> resp{};
		auto n = client->call(cpp_sample_make(7), resp, 5s);
		std::uint64_t got = 0;
		if (n && *n == sizeof got)
			std::memcpy(&got, resp.data(), sizeof got);
		TAP_CHECK(n && *n == 8 && got == 21, "call() gives the answer's length in a span");
		auto err = client->call_value<std::uint64_t>(cpp_sample_make(999), 5s);
		TAP_CHECK(!err && err.error() == std::errc::io_error, "the server's reply_error reaches the caller: %s",
		          err ? "answered" : why(err.error()));
		{
			auto a = client->call_send(cpp_sample_make(20), 1s);
			auto b = client->call_send(cpp_sample_make(21), 1s);
			auto c = client->call_send(cpp_sample_make(22), 1s);
			TAP_CHECK(a && b && a->pending() && !c && c.error() == std::errc::device_or_resource_busy,
			          "two calls in flight (in_flight 2), a third: device_or_resource_busy");
		} // a and b destroyed unanswered
		auto d = client->call_send(cpp_sample_make(23), 1s);
		auto e = client->call_send(cpp_sample_make(24), 1s);
		TAP_CHECK(d && e, "pending calls destroyed unwaited were cancelled: their places are free again: %s",
		          !d ? why(d.error()) : !e ? why(e.error()) : "ok");
		if (d && e) {
			auto ve = e->wait(resp, 5s);
			auto vd = d->wait(std::span(resp).subspan(8), 5s);
			std::uint64_t x = 0, y = 0;
			std::memcpy(&x, resp.data(), 8);
			std::memcpy(&y, resp.data() + 8, 8);
			TAP_CHECK(ve && vd && x == 72 && y == 69 && !d->pending() && !e->pending(),
			          "each waited call gets its own answer, none of the cancelled ones (%llu %llu)",
			          static_cast<unsigned long long>(x), static_cast<unsigned long long>(y));
		}
		auto late = client->call_send(cpp_sample_make(30), 1s);
		abd::service<cpp_sample> moved = std::move(*client);
		TAP_CHECK(late && late->pending(), "a call stays pending when its service is moved");
		kill(server, SIGKILL);
		auto dead = late ? late->wait(resp, 10s) : abd::result<std::size_t>(std::unexpected(late.error()));
		// (the server may have answered it before the kill)
		TAP_CHECK(dead ? *dead == 8 : dead.error() == std::errc::broken_pipe,
		          "the server killed: the pending call ends with broken_pipe: %s", dead ? "answered first" : why(dead.error()));
		auto after = moved.call_value<std::uint64_t>(cpp_sample_make(31), 10s);
		TAP_CHECK(!after && after.error() == std::errc::broken_pipe, "and a new call too: %s",
		          after ? "answered" : why(after.error()));
	}
	TAP_CHECK(wait_exit(server) == 128 + SIGKILL, "the server was killed");
	TAP_CHECK(count_fds() == before, "no descriptor left behind (%d before, %d after)", before, count_fds());
}

void test_rpc_bytes_same_process()
{
	name_buf name = fresh_name("rpcb");
	auto srv = abd::service<>::publish_rpc(name, {.dir = dir, .slot_size = 64}, {.response_size = 64, .in_flight = 1});
	TAP_CHECK(srv && srv->is_rpc(), "publish_rpc an untyped request-response service: %s", srv ? "ok" : why(srv.error()));
	if (!srv)
		return;
	auto client = abd::service<>::open(name, {.dir = dir}, abd::service_flags::none, 5s);
	TAP_CHECK(client.has_value(), "open it as a client");
	if (!client)
		return;
	auto p = client->call_send("ping", 1s);
	std::array<std::byte, 64> buf;
	auto none = srv->try_take(std::span(buf).first(2));
	TAP_CHECK(!none && none.error() == std::errc::message_size, "try_take into a span too small: message_size (it stays)");
	auto req = srv->take(buf, 1s);
	TAP_CHECK(req && req->size == 4 && std::memcmp(buf.data(), "ping", 4) == 0, "take() gives the request and a token");
	std::array<char, 64> out{};
	auto early = p ? p->poll(std::as_writable_bytes(std::span(out))) : abd::result<std::size_t>(std::unexpected(p.error()));
	TAP_CHECK(!early && early.error() == std::errc::resource_unavailable_try_again && p->pending(),
	          "poll() before the answer: resource_unavailable_try_again, still pending");
	TAP_CHECK(req && srv->reply(req->token, "pong").has_value(), "reply() with a string_view");
	auto twice = req ? srv->reply(req->token, "again") : abd::result<void>();
	TAP_CHECK(!twice && twice.error().value() == ESTALE, "a second reply to the same token: ESTALE");
	auto n = p->wait(std::as_writable_bytes(std::span(out)), 1s);
	TAP_CHECK(n && std::string_view(out.data(), *n) == "pong" && !p->pending(), "wait() gets the answer and ends the call");
	auto orphan = client->call_send("lost", 1s);
	client->close();
	auto stale = orphan ? orphan->wait(std::as_writable_bytes(std::span(out)), 1s)
	                    : abd::result<std::size_t>(std::unexpected(orphan.error()));
	TAP_CHECK(orphan && !orphan->pending() && !stale && stale.error().value() == ESTALE,
	          "a pending call whose service closed is detached (ESTALE): %s", stale ? "answered" : why(stale.error()));
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
	test_broadcast_fanout();
	test_broadcast_loan_dropped();
	test_broadcast_peek_releases();
	test_broadcast_c_publisher(false);
	test_broadcast_c_publisher(true);
	test_broadcast_cpp_publisher(false);
	test_broadcast_cpp_publisher(true);
	test_rpc_forked_server();
	test_rpc_bytes_same_process();
	TAP_CHECK(count_fds() == fds, "no descriptor left behind by the whole program (%d, %d)", fds, count_fds());
	nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	return tap_done();
}
