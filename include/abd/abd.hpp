// SPDX-License-Identifier: MIT
// abd for C++23/26: a header-only layer over the C API (docs/cpp.md).
//
//   auto svc = abd::service<sample>::publish("camera.samples");   // result<service<sample>>
//   if (!svc) return svc.error();                                 // a std::error_code
//   svc->push(sample{...}, 5s);                                    // result<void>
//
//   auto in = abd::service<sample>::open("camera.samples", {}, abd::service_flags::consumer, 5s);
//   abd::result<sample> s = in->pop(abd::forever);
//
// Broadcast services lend and peek in place through guards (loan_guard, peek_guard), and a
// request-response client's asynchronous call is a guard too (pending_call): docs/cpp.md.
//
// Every handle is a move-only owner that frees what it owns (the C free function) when it goes
// out of scope; a *_ref is a borrowed, copyable view of a handle another object owns. Every call
// returns abd::result<T> (std::expected<T, std::error_code>, generic category: the C call's
// -errno), nothing throws, and the header compiles with -fno-exceptions. Buffers are std::span,
// timeouts std::chrono durations or time points (abd::forever: no limit), names
// std::string_view (copied to a NUL-terminated buffer; an embedded NUL or a name longer than
// its C bound gives errc::invalid_argument). Threads, descriptors and errors are as the C
// headers say: this layer adds no state of its own besides the callbacks it keeps alive.
#ifndef ABD_ABD_HPP
#define ABD_ABD_HPP

#if !defined(__cplusplus) || __cplusplus < 202302L
#error "abd.hpp needs C++23 or later (std::expected): compile with -std=c++23 or -std=c++26"
#endif

#include <abd/abd.h>

#include <array>
#include <bit>
#include <cerrno>
#include <chrono>
#include <climits>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <expected>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

#include <sys/types.h>
#include <unistd.h>

namespace abd {

// ------------------------------------------------------------------------------ results --

template <class T>
using result = std::expected<T, std::error_code>;

// The error of a C call's -errno (its generic_category code compares equal to std::errc).
[[nodiscard]] inline std::error_code error_from(int negative_errno) noexcept
{
	return {negative_errno < 0 ? -negative_errno : negative_errno, std::generic_category()};
}

namespace detail {
[[nodiscard]] inline std::unexpected<std::error_code> fail(int negative_errno) noexcept
{
	return std::unexpected(error_from(negative_errno));
}
[[nodiscard]] inline std::unexpected<std::error_code> fail(std::errc e) noexcept
{
	return std::unexpected(std::make_error_code(e));
}
[[nodiscard]] inline result<void> check(long r) noexcept
{
	if (r < 0)
		return fail(static_cast<int>(r));
	return {};
}
// A non-negative count, length or descriptor, or the error.
[[nodiscard]] inline result<int> value(int r) noexcept
{
	if (r < 0)
		return fail(r);
	return r;
}
} // namespace detail

// The C structs that share their name with a C function, which hides them in C++ unless
// spelled `struct abd_x`: here under names of their own.
using service_stats = struct ::abd_service_stats;
using ring_stats = struct ::abd_ring_stats;
using ring_attach_opts = struct ::abd_ring_attach_opts;
using acquire_server_stats = struct ::abd_acquire_server_stats;

// ----------------------------------------------------------------------------- timeouts --

// No time limit: abd::forever wherever a timeout is taken.
struct forever_t {
	explicit constexpr forever_t(int) noexcept {}
};
inline constexpr forever_t forever{0};

// A timeout as the C calls take it (int64 nanoseconds, negative: no limit), from a duration
// (rounded up to whole nanoseconds; zero or negative: do not wait; beyond ~30 years: no
// limit), a time point (the time left until then, on its own clock) or abd::forever.
class timeout {
public:
	constexpr timeout(forever_t) noexcept : ns_(-1) {}
	template <class Rep, class Period>
	constexpr timeout(std::chrono::duration<Rep, Period> d) noexcept : ns_(from(d))
	{
	}
	template <class Clock, class Duration>
	timeout(std::chrono::time_point<Clock, Duration> deadline) noexcept
	    : ns_(from(deadline - Clock::now()))
	{
	}
	[[nodiscard]] constexpr std::int64_t ns() const noexcept { return ns_; }
	[[nodiscard]] constexpr bool is_forever() const noexcept { return ns_ < 0; }
	// Whole milliseconds, rounded up, for the calls that take them (-1: no limit).
	[[nodiscard]] constexpr int ms() const noexcept
	{
		if (ns_ < 0)
			return -1;
		std::int64_t ms = ns_ / 1000000 + (ns_ % 1000000 != 0);
		return ms > INT_MAX ? -1 : static_cast<int>(ms);
	}

private:
	static constexpr std::int64_t limit = std::int64_t{1} << 60; // ~36 years
	template <class Rep, class Period>
	static constexpr std::int64_t from(std::chrono::duration<Rep, Period> d) noexcept
	{
		using fns = std::chrono::duration<long double, std::nano>;
		long double v = std::chrono::duration_cast<fns>(d).count();
		if (!(v > 0))
			return 0;
		if (v >= static_cast<long double>(limit))
			return -1;
		return std::chrono::ceil<std::chrono::nanoseconds>(d).count();
	}
	std::int64_t ns_;
};

// ----------------------------------------------------------------------------- names --

namespace detail {
// A copy of a std::string_view with its terminating NUL, for a C call. ok() is false for an
// embedded NUL or more than Max bytes. null_if_empty: an empty view stands for NULL (the C
// call's default).
template <std::size_t Max>
class c_string {
public:
	explicit c_string(std::string_view s, bool null_if_empty = false) noexcept
	    : null_(null_if_empty && s.empty()), ok_(s.size() <= Max && s.find('\0') == s.npos)
	{
		if (ok_) {
			if (!s.empty())
				std::memcpy(buf_, s.data(), s.size());
			buf_[s.size()] = '\0';
		} else
			buf_[0] = '\0';
	}
	c_string(const c_string &) = delete;
	c_string &operator=(const c_string &) = delete;
	[[nodiscard]] bool ok() const noexcept { return ok_; }
	[[nodiscard]] const char *get() const noexcept { return null_ ? nullptr : buf_; }

private:
	bool null_, ok_;
	char buf_[Max + 1];
};
using name_string = c_string<ABD_SERVICE_MAX>;
using path_string = c_string<PATH_MAX - 1>;
using slot_string = c_string<ABD_SLOT_NAME_MAX>;

// A C string the library returned, as a view ("" for NULL).
[[nodiscard]] inline std::string_view view(const char *s) noexcept
{
	return s ? std::string_view(s) : std::string_view();
}

// The owner of one C handle: frees it with Free, move-only.
template <class T, void (*Free)(T *)>
class owner {
public:
	owner() noexcept = default;
	explicit owner(T *p) noexcept : p_(p) {}
	owner(owner &&o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
	owner &operator=(owner &&o) noexcept
	{
		if (this != &o)
			reset(std::exchange(o.p_, nullptr));
		return *this;
	}
	owner(const owner &) = delete;
	owner &operator=(const owner &) = delete;
	~owner() { reset(); }
	void reset(T *p = nullptr) noexcept
	{
		if (T *old = std::exchange(p_, p))
			Free(old);
	}
	[[nodiscard]] T *get() const noexcept { return p_; }
	[[nodiscard]] T *release() noexcept { return std::exchange(p_, nullptr); }

private:
	T *p_ = nullptr;
};

inline void withdraw_quietly(abd_publication *p) noexcept { (void)abd_withdraw(p); }

// A callback kept alive on the heap for as long as the C object that calls it: its address is
// the C userdata, stable across moves of the C++ owner.
struct callback_base {
	virtual ~callback_base() = default;
};
template <class F>
struct callback final : callback_base {
	explicit callback(F &&f) : fn(std::move(f)) {}
	F fn;
};
template <class F>
[[nodiscard]] std::unique_ptr<callback<std::decay_t<F>>> make_callback(F &&f) noexcept
{
	return std::unique_ptr<callback<std::decay_t<F>>>(
		new (std::nothrow) callback<std::decay_t<F>>(std::decay_t<F>(std::forward<F>(f))));
}
} // namespace detail

// ----------------------------------------------------------------------------- descriptors --

// An owned file descriptor (closed on destruction), e.g. one taken from an acquisition.
class unique_fd {
public:
	unique_fd() noexcept = default;
	explicit unique_fd(int fd) noexcept : fd_(fd) {}
	unique_fd(unique_fd &&o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
	unique_fd &operator=(unique_fd &&o) noexcept
	{
		if (this != &o)
			reset(std::exchange(o.fd_, -1));
		return *this;
	}
	unique_fd(const unique_fd &) = delete;
	unique_fd &operator=(const unique_fd &) = delete;
	~unique_fd() { reset(); }
	void reset(int fd = -1) noexcept
	{
		int old = std::exchange(fd_, fd);
		if (old >= 0)
			(void)::close(old);
	}
	[[nodiscard]] int get() const noexcept { return fd_; }
	[[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }
	explicit operator bool() const noexcept { return fd_ >= 0; }

private:
	int fd_ = -1;
};

// ----------------------------------------------------------------------------- records --

class record;

// A record borrowed from its owner (a record, a publication, a snapshot or watch entry).
class record_view {
public:
	record_view() noexcept = default;
	record_view(const abd_record *r) noexcept : r_(r) {}
	[[nodiscard]] const abd_record *get() const noexcept { return r_; }
	explicit operator bool() const noexcept { return r_ != nullptr; }

	[[nodiscard]] std::string_view service() const noexcept { return detail::view(abd_record_service(r_)); }
	// The 16-byte instance id (empty for an empty view).
	[[nodiscard]] std::span<const std::uint8_t> instance() const noexcept
	{
		const std::uint8_t *p = abd_record_instance(r_);
		return p ? std::span<const std::uint8_t>(p, ABD_INSTANCE_SIZE) : std::span<const std::uint8_t>();
	}
	[[nodiscard]] pid_t pid() const noexcept { return abd_record_pid(r_); }
	[[nodiscard]] uid_t uid() const noexcept { return abd_record_uid(r_); }
	[[nodiscard]] std::uint64_t start_time() const noexcept { return abd_record_start_time(r_); }
	[[nodiscard]] std::uint64_t caps() const noexcept { return abd_record_caps(r_); }
	[[nodiscard]] std::uint64_t published_ns() const noexcept { return abd_record_published_ns(r_); }
	[[nodiscard]] std::string_view socket() const noexcept { return detail::view(abd_record_socket(r_)); }
	[[nodiscard]] std::size_t fd_count() const noexcept { return abd_record_fd_count(r_); }
	// The descriptor number a slot names in the publisher's process (not one of ours).
	[[nodiscard]] result<int> fd(std::string_view slot) const noexcept
	{
		detail::slot_string s(slot);
		if (!s.ok())
			return detail::fail(std::errc::invalid_argument);
		return detail::value(abd_record_fd_by_name(r_, s.get()));
	}
	[[nodiscard]] std::size_t meta_count() const noexcept { return abd_record_meta_count(r_); }
	// The value of a metadata key; nullopt when absent.
	[[nodiscard]] std::optional<std::string_view> meta(std::string_view key) const noexcept
	{
		detail::c_string<ABD_META_KEY_MAX> k(key);
		const char *v = k.ok() ? abd_record_meta(r_, k.get()) : nullptr;
		if (!v)
			return std::nullopt;
		return std::string_view(v);
	}

protected:
	const abd_record *r_ = nullptr;
};

// An owned record: one a publisher builds, or a copy a lookup returned.
class record : public record_view {
public:
	record() noexcept = default;
	explicit record(abd_record *r) noexcept : record_view(r), own_(r) {}
	record(record &&o) noexcept : record_view(o.r_), own_(std::move(o.own_)) { o.r_ = nullptr; }
	record &operator=(record &&o) noexcept
	{
		own_ = std::move(o.own_);
		r_ = std::exchange(o.r_, nullptr);
		return *this;
	}

	[[nodiscard]] static result<record> create(std::string_view service) noexcept
	{
		detail::name_string n(service);
		if (!n.ok())
			return detail::fail(std::errc::invalid_argument);
		abd_record *r = nullptr;
		if (int e = abd_record_new(n.get(), &r); e < 0)
			return detail::fail(e);
		return record(r);
	}
	[[nodiscard]] static result<record> decode(std::span<const std::byte> wire,
	                                           const char **why = nullptr) noexcept
	{
		abd_record *r = nullptr;
		if (int e = abd_record_decode(wire.data(), wire.size(), &r, why); e < 0)
			return detail::fail(e);
		return record(r);
	}
	[[nodiscard]] abd_record *get() const noexcept { return own_.get(); }
	[[nodiscard]] abd_record *release() noexcept
	{
		r_ = nullptr;
		return own_.release();
	}

	result<void> add_fd(std::string_view slot, int fd, abd_fd_kind kind) noexcept
	{
		detail::slot_string s(slot);
		if (!s.ok())
			return detail::fail(std::errc::invalid_argument);
		return detail::check(abd_record_add_fd(get(), s.get(), fd, kind));
	}
	result<void> set_socket(std::string_view path) noexcept
	{
		detail::c_string<ABD_SOCKET_PATH_MAX> p(path);
		if (!p.ok())
			return detail::fail(std::errc::invalid_argument);
		return detail::check(abd_record_set_socket(get(), p.get()));
	}
	result<void> set_instance(std::span<const std::uint8_t, ABD_INSTANCE_SIZE> id) noexcept
	{
		return detail::check(abd_record_set_instance(get(), id.data()));
	}
	result<void> set_caps(std::uint64_t caps) noexcept { return detail::check(abd_record_set_caps(get(), caps)); }
	result<void> add_meta(std::string_view key, std::string_view value) noexcept
	{
		detail::c_string<ABD_META_KEY_MAX> k(key);
		detail::c_string<ABD_META_VALUE_MAX> v(value);
		if (!k.ok() || !v.ok())
			return detail::fail(std::errc::invalid_argument);
		return detail::check(abd_record_add_meta(get(), k.get(), v.get()));
	}
	// The wire format into buf: the length written.
	[[nodiscard]] result<std::size_t> encode(std::span<std::byte> buf) const noexcept
	{
		long n = abd_record_encode(get(), buf.data(), buf.size());
		if (n < 0)
			return detail::fail(static_cast<int>(n));
		return static_cast<std::size_t>(n);
	}

private:
	detail::owner<abd_record, abd_record_free> own_;
};

// A published record: withdrawn (unlinked, lock released) when destroyed.
class publication {
public:
	publication() noexcept = default;
	explicit publication(abd_publication *p) noexcept : own_(p) {}
	[[nodiscard]] abd_publication *get() const noexcept { return own_.get(); }
	[[nodiscard]] abd_publication *release() noexcept { return own_.release(); }
	explicit operator bool() const noexcept { return get() != nullptr; }

	[[nodiscard]] record_view record() const noexcept { return abd_publication_record(get()); }
	[[nodiscard]] std::string_view name() const noexcept { return detail::view(abd_publication_name(get())); }
	[[nodiscard]] int fd() const noexcept { return abd_publication_fd(get()); }
	// A prepared publication (registry::publish_prepare) gets its name.
	result<void> commit() noexcept { return detail::check(abd_publish_commit(get())); }
	// Withdraw now and report unlinkat's error (the destructor withdraws silently).
	result<void> withdraw() noexcept { return detail::check(abd_withdraw(own_.release())); }

private:
	detail::owner<abd_publication, detail::withdraw_quietly> own_;
};

// A directory snapshot: a range of const abd_entry&, sorted by name.
class snapshot {
public:
	class iterator {
	public:
		using value_type = abd_entry;
		using difference_type = std::ptrdiff_t;
		iterator() noexcept = default;
		iterator(const abd_snapshot *s, std::size_t i) noexcept : s_(s), i_(i) {}
		const abd_entry &operator*() const noexcept { return *abd_snapshot_entry(s_, i_); }
		const abd_entry *operator->() const noexcept { return abd_snapshot_entry(s_, i_); }
		iterator &operator++() noexcept { return ++i_, *this; }
		iterator operator++(int) noexcept { return iterator(s_, i_++); }
		bool operator==(const iterator &) const noexcept = default;

	private:
		const abd_snapshot *s_ = nullptr;
		std::size_t i_ = 0;
	};
	snapshot() noexcept = default;
	explicit snapshot(abd_snapshot *s) noexcept : own_(s) {}
	[[nodiscard]] abd_snapshot *get() const noexcept { return own_.get(); }
	[[nodiscard]] std::size_t size() const noexcept { return abd_snapshot_count(get()); }
	[[nodiscard]] const abd_entry &operator[](std::size_t i) const noexcept { return *abd_snapshot_entry(get(), i); }
	[[nodiscard]] iterator begin() const noexcept { return {get(), 0}; }
	[[nodiscard]] iterator end() const noexcept { return {get(), size()}; }

private:
	detail::owner<abd_snapshot, abd_snapshot_free> own_;
};

// ----------------------------------------------------------------------------- registry --

class acquired;
class watch;

// An open registry directory.
class registry {
public:
	registry() noexcept = default;
	explicit registry(abd_registry *r) noexcept : own_(r) {}
	[[nodiscard]] abd_registry *get() const noexcept { return own_.get(); }
	[[nodiscard]] abd_registry *release() noexcept { return own_.release(); }
	explicit operator bool() const noexcept { return get() != nullptr; }

	// dir empty: the default choice (registry.h). reason, when not empty, receives a one-line
	// explanation of a failure (NUL-terminated, truncated to its size).
	[[nodiscard]] static result<registry> open(std::string_view dir = {}, unsigned flags = 0,
	                                           std::span<char> reason = {}) noexcept
	{
		detail::path_string d(dir, true);
		if (!d.ok())
			return detail::fail(std::errc::invalid_argument);
		abd_registry *r = nullptr;
		int e = abd_registry_open(d.get(), flags, &r, reason.empty() ? nullptr : reason.data(),
		                          reason.size());
		if (e < 0)
			return detail::fail(e);
		return registry(r);
	}

	[[nodiscard]] std::string_view path() const noexcept { return detail::view(abd_registry_path(get())); }
	[[nodiscard]] int fd() const noexcept { return abd_registry_fd(get()); }
	[[nodiscard]] unsigned long fs_type() const noexcept { return abd_registry_fs_type(get()); }

	[[nodiscard]] result<publication> publish(record_view rec) noexcept
	{
		abd_publication *p = nullptr;
		if (int e = abd_publish(get(), rec.get(), &p); e < 0)
			return detail::fail(e);
		return publication(p);
	}
	[[nodiscard]] result<publication> publish_prepare(record_view rec) noexcept
	{
		abd_publication *p = nullptr;
		if (int e = abd_publish_prepare(get(), rec.get(), &p); e < 0)
			return detail::fail(e);
		return publication(p);
	}
	// The trusted alive record of a service (opts: nullptr for the default policy).
	[[nodiscard]] result<record> lookup(std::string_view service,
	                                    const abd_lookup_opts *opts = nullptr) noexcept
	{
		detail::name_string n(service);
		if (!n.ok())
			return detail::fail(std::errc::invalid_argument);
		abd_record *r = nullptr;
		if (int e = abd_registry_lookup_opts(get(), n.get(), opts, &r); e < 0)
			return detail::fail(e);
		return record(r);
	}
	// ABD_STATE_ALIVE or ABD_STATE_STALE.
	[[nodiscard]] result<abd_state> liveness(std::string_view record_name) noexcept
	{
		detail::c_string<ABD_RECORD_NAME_MAX> n(record_name);
		if (!n.ok())
			return detail::fail(std::errc::invalid_argument);
		int e = abd_registry_liveness(get(), n.get());
		if (e < 0)
			return detail::fail(e);
		return static_cast<abd_state>(e);
	}
	[[nodiscard]] result<snapshot> take_snapshot() noexcept
	{
		abd_snapshot *s = nullptr;
		if (int e = abd_registry_snapshot(get(), &s); e < 0)
			return detail::fail(e);
		return snapshot(s);
	}
	[[nodiscard]] result<bool> trusted(const abd_entry &entry,
	                                   const abd_lookup_opts *opts = nullptr) noexcept
	{
		int e = abd_entry_trusted(get(), &entry, opts);
		if (e < 0)
			return detail::fail(e);
		return e == 1;
	}
	// Stale records removed (failed: those that could not be).
	result<int> gc(unsigned *failed = nullptr) noexcept { return detail::value(abd_registry_gc(get(), failed)); }
	result<int> gc_sockets(unsigned *failed = nullptr) noexcept
	{
		return detail::value(abd_registry_gc_sockets(get(), failed));
	}

	// Take the descriptors of a record's publisher (acquire.h); abd::forever: the C default
	// (ABD_ACQUIRE_TIMEOUT_NS), as every step of an acquisition is bounded.
	[[nodiscard]] result<acquired> acquire(record_view rec, unsigned flags = 0,
	                                       timeout limit = forever) noexcept;
	// Watch the directory (service: only that service's records; empty: all).
	[[nodiscard]] result<watch> watch_changes(unsigned flags = 0, std::string_view service = {}) noexcept;

private:
	detail::owner<abd_registry, abd_registry_free> own_;
};

// A registry watch. Callbacks are called as fn(abd_event_type, const abd_entry &).
class watch {
public:
	watch() noexcept = default;
	explicit watch(abd_watch *w) noexcept : own_(w) {}
	[[nodiscard]] abd_watch *get() const noexcept { return own_.get(); }
	[[nodiscard]] abd_watch *release() noexcept { return own_.release(); }
	explicit operator bool() const noexcept { return get() != nullptr; }

	[[nodiscard]] int fd() const noexcept { return abd_watch_fd(get()); }
	// Every pending notification, without blocking: the number of events.
	template <class F>
	result<int> process(F &&fn) noexcept
	{
		return detail::value(abd_watch_process(get(), &trampoline<std::remove_reference_t<F>>, &fn));
	}
	// Wait for at least one event (or the timeout: 0 events).
	template <class F>
	result<int> wait(timeout limit, F &&fn) noexcept
	{
		return detail::value(
			abd_watch_wait(get(), limit.ms(), &trampoline<std::remove_reference_t<F>>, &fn));
	}
	template <class F>
	result<int> rescan(F &&fn) noexcept
	{
		return detail::value(abd_watch_rescan(get(), &trampoline<std::remove_reference_t<F>>, &fn));
	}
	[[nodiscard]] std::size_t size() const noexcept { return abd_watch_count(get()); }
	[[nodiscard]] const abd_entry *entry(std::size_t i) const noexcept { return abd_watch_entry(get(), i); }

private:
	template <class F>
	static void trampoline(void *userdata, abd_event_type type, const abd_entry *entry)
	{
		(*static_cast<F *>(userdata))(type, *entry);
	}
	detail::owner<abd_watch, abd_watch_free> own_;
};

inline result<watch> registry::watch_changes(unsigned flags, std::string_view service) noexcept
{
	detail::name_string n(service, true);
	if (!n.ok())
		return detail::fail(std::errc::invalid_argument);
	abd_watch_opts opts{};
	opts.flags = flags;
	opts.service = n.get();
	abd_watch *w = nullptr;
	if (int e = abd_watch_new_opts(get(), &opts, &w); e < 0)
		return detail::fail(e);
	return watch(w);
}

// ----------------------------------------------------------------------------- acquisition --

// One descriptor slot of an acquisition.
struct acquired_slot {
	std::string_view name;
	int fd; // borrowed (owned by the acquisition), -1 once taken
	abd_fd_kind kind;
	std::uint64_t size; // a memfd's size, 0 for other kinds
};
// The publisher as the kernel vouched for it.
struct peer_credentials {
	pid_t pid;
	uid_t uid;
	gid_t gid;
};

// The descriptors abd_acquire obtained; those not taken are closed on destruction.
class acquired {
public:
	acquired() noexcept = default;
	explicit acquired(abd_acquired *a) noexcept : own_(a) {}
	[[nodiscard]] abd_acquired *get() const noexcept { return own_.get(); }
	explicit operator bool() const noexcept { return get() != nullptr; }

	[[nodiscard]] abd_fd_transfer path() const noexcept { return abd_acquired_path(get()); }
	[[nodiscard]] int fallback() const noexcept { return abd_acquired_fallback(get()); }
	[[nodiscard]] result<peer_credentials> peer() const noexcept
	{
		peer_credentials c{};
		if (int e = abd_acquired_peer(get(), &c.pid, &c.uid, &c.gid); e < 0)
			return detail::fail(e);
		return c;
	}
	[[nodiscard]] std::size_t size() const noexcept { return abd_acquired_count(get()); }
	[[nodiscard]] result<acquired_slot> at(std::size_t i) const noexcept
	{
		const char *name = nullptr;
		acquired_slot s{};
		if (int e = abd_acquired_fd_at(get(), i, &name, &s.fd, &s.kind, &s.size); e < 0)
			return detail::fail(e);
		s.name = detail::view(name);
		return s;
	}
	// A slot's descriptor, borrowed.
	[[nodiscard]] result<int> fd(std::string_view slot) const noexcept
	{
		detail::slot_string s(slot);
		if (!s.ok())
			return detail::fail(std::errc::invalid_argument);
		return detail::value(abd_acquired_fd(get(), s.get()));
	}
	// A slot's descriptor, now the caller's.
	[[nodiscard]] result<unique_fd> take_fd(std::string_view slot) noexcept
	{
		detail::slot_string s(slot);
		if (!s.ok())
			return detail::fail(std::errc::invalid_argument);
		int fd = abd_acquired_take_fd(get(), s.get());
		if (fd < 0)
			return detail::fail(fd);
		return unique_fd(fd);
	}

private:
	detail::owner<abd_acquired, abd_acquired_free> own_;
};

inline result<acquired> registry::acquire(record_view rec, unsigned flags, timeout limit) noexcept
{
	abd_acquired *a = nullptr;
	if (int e = abd_acquire(get(), rec.get(), flags, limit.ns(), &a); e < 0)
		return detail::fail(e);
	return acquired(a);
}

// The handshake server of a publisher (acquire.h).
class acquire_server {
public:
	acquire_server() noexcept = default;
	explicit acquire_server(abd_acquire_server *s) noexcept : own_(s) {}
	[[nodiscard]] abd_acquire_server *get() const noexcept { return own_.get(); }
	explicit operator bool() const noexcept { return get() != nullptr; }

	[[nodiscard]] static result<acquire_server> create(registry &reg, unsigned flags = 0) noexcept
	{
		abd_acquire_server *s = nullptr;
		if (int e = abd_acquire_server_new(reg.get(), flags, &s); e < 0)
			return detail::fail(e);
		return acquire_server(s);
	}
	[[nodiscard]] std::string_view socket() const noexcept { return detail::view(abd_acquire_server_socket(get())); }
	result<void> serve(record_view published) noexcept
	{
		return detail::check(abd_acquire_server_serve(get(), published.get()));
	}
	result<void> allow_uid(uid_t uid) noexcept { return detail::check(abd_acquire_server_allow_uid(get(), uid)); }
	result<void> allow_gid(gid_t gid) noexcept { return detail::check(abd_acquire_server_allow_gid(get(), gid)); }
	result<void> set_max_pending(unsigned n) noexcept
	{
		return detail::check(abd_acquire_server_set_max_pending(get(), n));
	}
	result<void> set_timeout(timeout t) noexcept
	{
		return detail::check(abd_acquire_server_set_timeout(get(), t.ns()));
	}
	[[nodiscard]] int fd() const noexcept { return abd_acquire_server_fd(get()); }
	// Clients answered with descriptors.
	result<int> process() noexcept { return detail::value(abd_acquire_server_process(get())); }
	// CLOCK_MONOTONIC ns by which process() must run again; nullopt: nothing pending.
	[[nodiscard]] std::optional<std::int64_t> deadline() const noexcept
	{
		std::int64_t d = abd_acquire_server_deadline(get());
		if (d < 0)
			return std::nullopt;
		return d;
	}
	[[nodiscard]] result<acquire_server_stats> stats() const noexcept
	{
		acquire_server_stats st{};
		if (int e = abd_acquire_server_stats(get(), &st); e < 0)
			return detail::fail(e);
		return st;
	}

private:
	detail::owner<abd_acquire_server, abd_acquire_server_free> own_;
};

// ----------------------------------------------------------------------------- reactor --

// A reactor source: removed (its callback never called again) when destroyed. Keeps the C++
// callback it calls alive.
class source {
public:
	source() noexcept = default;
	source(abd_source *s, std::unique_ptr<detail::callback_base> fn) noexcept
	    : fn_(std::move(fn)), own_(s)
	{
	}
	[[nodiscard]] abd_source *get() const noexcept { return own_.get(); }
	explicit operator bool() const noexcept { return get() != nullptr; }
	void reset() noexcept
	{
		own_.reset();
		fn_.reset();
	}
	// Re-arm or change a timer source.
	result<void> set_timer(timeout when, std::chrono::nanoseconds period = {}) noexcept
	{
		return detail::check(abd_source_set_timer(get(), static_cast<std::uint64_t>(when.ns() < 0 ? 0 : when.ns()),
		                                          static_cast<std::uint64_t>(period.count()), 0));
	}
	// Re-arm a futex source that has fired.
	result<void> futex_arm(std::uint32_t expected) noexcept
	{
		return detail::check(abd_source_futex_arm(get(), expected));
	}

private:
	// Declared first, destroyed last: the source goes before its callback.
	std::unique_ptr<detail::callback_base> fn_;
	detail::owner<abd_source, abd_source_free> own_;
};

// A borrowed reactor (the one a service runs on), or the base of an owned one. Callbacks of
// the add calls are called as fn(int status, std::uint64_t value) (reactor.h); the watch
// source's as fn(int status, abd_event_type, const abd_entry *).
class reactor_ref {
public:
	reactor_ref() noexcept = default;
	reactor_ref(abd_reactor *r) noexcept : r_(r) {}
	[[nodiscard]] abd_reactor *get() const noexcept { return r_; }
	explicit operator bool() const noexcept { return r_ != nullptr; }

	[[nodiscard]] result<abd_backend> backend() const noexcept
	{
		int b = abd_reactor_backend(r_);
		if (b < 0)
			return detail::fail(b);
		return static_cast<abd_backend>(b);
	}
	// Embedding in another loop: poll fd() for POLLIN, then run_once(0ns). Retry EINTR.
	[[nodiscard]] result<int> fd() const noexcept { return detail::value(abd_reactor_fd(r_)); }
	// The number of callbacks run (0 on timeout).
	result<int> run_once(timeout limit = std::chrono::nanoseconds(0)) noexcept
	{
		return detail::value(abd_reactor_run_once(r_, limit.ns()));
	}
	result<void> run() noexcept { return detail::check(abd_reactor_run(r_)); }
	result<void> stop() noexcept { return detail::check(abd_reactor_stop(r_)); }

	template <class F>
	[[nodiscard]] result<source> add_io(int fd, std::uint32_t events, F &&fn) noexcept
	{
		return add(std::forward<F>(fn), [&](abd_source_fn *t, void *u, abd_source **out) {
			return abd_reactor_add_io(r_, fd, events, t, u, out);
		});
	}
	template <class F>
	[[nodiscard]] result<source> add_eventfd(int fd, F &&fn) noexcept
	{
		return add(std::forward<F>(fn), [&](abd_source_fn *t, void *u, abd_source **out) {
			return abd_reactor_add_eventfd(r_, fd, t, u, out);
		});
	}
	template <class F>
	[[nodiscard]] result<source> add_pidfd(int pidfd, F &&fn) noexcept
	{
		return add(std::forward<F>(fn), [&](abd_source_fn *t, void *u, abd_source **out) {
			return abd_reactor_add_pidfd(r_, pidfd, t, u, out);
		});
	}
	// A timer due after `when` (from now), then every `period` (zero: one-shot).
	template <class F>
	[[nodiscard]] result<source> add_timer(timeout when, std::chrono::nanoseconds period, F &&fn) noexcept
	{
		auto w = static_cast<std::uint64_t>(when.ns() < 0 ? 0 : when.ns());
		auto p = static_cast<std::uint64_t>(period.count() < 0 ? 0 : period.count());
		return add(std::forward<F>(fn), [&](abd_source_fn *t, void *u, abd_source **out) {
			return abd_reactor_add_timer(r_, w, p, 0, t, u, out);
		});
	}
	template <class F>
	[[nodiscard]] result<source> add_futex(const std::uint32_t *word, std::uint32_t expected, F &&fn) noexcept
	{
		return add(std::forward<F>(fn), [&](abd_source_fn *t, void *u, abd_source **out) {
			return abd_reactor_add_futex(r_, word, expected, t, u, out);
		});
	}
	template <class F>
	[[nodiscard]] result<source> add_defer(F &&fn) noexcept
	{
		return add(std::forward<F>(fn), [&](abd_source_fn *t, void *u, abd_source **out) {
			return abd_reactor_add_defer(r_, t, u, out);
		});
	}
	// Drive a watch from the reactor; the watch must outlive the source.
	template <class F>
	[[nodiscard]] result<source> add_watch(watch &w, F &&fn) noexcept
	{
		using C = std::decay_t<F>;
		auto cb = detail::make_callback(std::forward<F>(fn));
		if (!cb)
			return detail::fail(-ENOMEM);
		abd_source *s = nullptr;
		int e = abd_reactor_add_watch(r_, w.get(), &watch_trampoline<C>, cb.get(), &s);
		if (e < 0)
			return detail::fail(e);
		return source(s, std::move(cb));
	}
	// Serve a handshake server from the reactor; the server must outlive the source.
	[[nodiscard]] result<source> add_acquire_server(acquire_server &srv) noexcept
	{
		abd_source *s = nullptr;
		if (int e = abd_reactor_add_acquire_server(r_, srv.get(), &s); e < 0)
			return detail::fail(e);
		return source(s, nullptr);
	}

protected:
	abd_reactor *r_ = nullptr;

private:
	template <class C>
	static void trampoline(abd_source *, int status, std::uint64_t value, void *userdata)
	{
		static_cast<detail::callback<C> *>(userdata)->fn(status, value);
	}
	template <class C>
	static void watch_trampoline(abd_source *, int status, abd_event_type type,
	                             const abd_entry *entry, void *userdata)
	{
		static_cast<detail::callback<C> *>(userdata)->fn(status, type, entry);
	}
	template <class F, class Add>
	result<source> add(F &&fn, Add &&call) noexcept
	{
		using C = std::decay_t<F>;
		static_assert(std::is_invocable_v<C &, int, std::uint64_t>,
		              "abd reactor callbacks are called as fn(int status, std::uint64_t value)");
		auto cb = detail::make_callback(std::forward<F>(fn));
		if (!cb)
			return detail::fail(-ENOMEM);
		abd_source *s = nullptr;
		if (int e = call(&trampoline<C>, cb.get(), &s); e < 0)
			return detail::fail(e);
		return source(s, std::move(cb));
	}
};

// An owned reactor (freed, with every source still on it, when destroyed). Sources must not
// outlive it: destroy them first (or release the reactor last).
class reactor : public reactor_ref {
public:
	reactor() noexcept = default;
	explicit reactor(abd_reactor *r) noexcept : reactor_ref(r) {}
	reactor(reactor &&o) noexcept : reactor_ref(std::exchange(o.r_, nullptr)) {}
	reactor &operator=(reactor &&o) noexcept
	{
		if (this != &o) {
			abd_reactor_free(r_);
			r_ = std::exchange(o.r_, nullptr);
		}
		return *this;
	}
	reactor(const reactor &) = delete;
	reactor &operator=(const reactor &) = delete;
	~reactor() { abd_reactor_free(r_); }
	[[nodiscard]] abd_reactor *release() noexcept { return std::exchange(r_, nullptr); }

	// flags: 0, ABD_REACTOR_FORCE_EPOLL or ABD_REACTOR_FORCE_IO_URING.
	[[nodiscard]] static result<reactor> create(unsigned flags = 0) noexcept
	{
		abd_reactor *r = nullptr;
		if (int e = abd_reactor_new(flags, &r); e < 0)
			return detail::fail(e);
		return reactor(r);
	}
};

// ----------------------------------------------------------------------------- ring --

class ring_ref;

// A claimed slot of a ring (ring_ref::try_reserve): write into data(), then commit(len). One
// not committed is aborted (consumers skip it) when destroyed.
class reservation {
public:
	reservation() noexcept = default;
	reservation(abd_ring *r, void *data, std::size_t size) noexcept : r_(r), data_(data), size_(size) {}
	reservation(reservation &&o) noexcept
	    : r_(std::exchange(o.r_, nullptr)), data_(std::exchange(o.data_, nullptr)), size_(o.size_)
	{
	}
	reservation &operator=(reservation &&o) noexcept
	{
		if (this != &o) {
			abort();
			r_ = std::exchange(o.r_, nullptr);
			data_ = std::exchange(o.data_, nullptr);
			size_ = o.size_;
		}
		return *this;
	}
	~reservation() { abort(); }
	// The slot's payload: slot-size bytes, 16-byte aligned.
	[[nodiscard]] std::span<std::byte> data() const noexcept
	{
		return {static_cast<std::byte *>(data_), data_ ? size_ : 0};
	}
	result<void> commit(std::size_t len) noexcept
	{
		if (!data_)
			return detail::fail(std::errc::invalid_argument);
		int e = abd_ring_commit(r_, data_, len);
		if (e == -EMSGSIZE) // the slot stays reserved
			return detail::fail(e);
		data_ = nullptr;
		return detail::check(e);
	}
	// Give the slot up now; the destructor does it for one not committed.
	result<void> abort() noexcept
	{
		if (!data_)
			return {};
		return detail::check(abd_ring_abort(r_, std::exchange(data_, nullptr)));
	}

private:
	abd_ring *r_ = nullptr;
	void *data_ = nullptr;
	std::size_t size_ = 0;
};

// A message peeked in place (ring_ref::try_peek): released back to the producers when
// destroyed, or by release() (which says whether the bytes could have changed meanwhile).
class peeked {
public:
	peeked() noexcept = default;
	peeked(abd_ring *r, const void *data, std::size_t len) noexcept : r_(r), data_(data), len_(len) {}
	peeked(peeked &&o) noexcept
	    : r_(std::exchange(o.r_, nullptr)), data_(std::exchange(o.data_, nullptr)), len_(o.len_)
	{
	}
	peeked &operator=(peeked &&o) noexcept
	{
		if (this != &o) {
			(void)release();
			r_ = std::exchange(o.r_, nullptr);
			data_ = std::exchange(o.data_, nullptr);
			len_ = o.len_;
		}
		return *this;
	}
	~peeked() { (void)release(); }
	[[nodiscard]] std::span<const std::byte> data() const noexcept
	{
		return {static_cast<const std::byte *>(data_), data_ ? len_ : 0};
	}
	// errc::owner_dead: the slot was taken meanwhile, discard what was read.
	result<void> release() noexcept
	{
		if (!data_)
			return {};
		return detail::check(abd_ring_release(r_, std::exchange(data_, nullptr)));
	}

private:
	abd_ring *r_ = nullptr;
	const void *data_ = nullptr;
	std::size_t len_ = 0;
};

// The inline fast path of a single-producer single-consumer ring (ring.h, streams), closed
// when destroyed. Keep it in a local variable.
class ring_stream {
public:
	explicit ring_stream(abd_ring_stream s) noexcept : s_(s) {}
	ring_stream(ring_stream &&o) noexcept : s_(o.s_) { o.s_.ring = nullptr; }
	ring_stream &operator=(ring_stream &&) = delete;
	~ring_stream()
	{
		if (s_.ring)
			(void)abd_ring_stream_close(&s_);
	}
	result<void> push(std::span<const std::byte> msg) noexcept
	{
		return detail::check(abd_ring_stream_push(&s_, msg.data(), msg.size()));
	}
	result<std::size_t> pop(std::span<std::byte> buf) noexcept
	{
		int n = abd_ring_stream_pop(&s_, buf.data(), buf.size());
		if (n < 0)
			return detail::fail(n);
		return static_cast<std::size_t>(n);
	}
	// The raw stream and its C calls: they return an int, no std::expected to build.
	[[nodiscard]] abd_ring_stream &get() noexcept { return s_; }

private:
	abd_ring_stream s_;
};

// A borrowed ring (the one a service owns), or the base of an owned one.
class ring_ref {
public:
	ring_ref() noexcept = default;
	ring_ref(abd_ring *r) noexcept : r_(r) {}
	[[nodiscard]] abd_ring *get() const noexcept { return r_; }
	explicit operator bool() const noexcept { return r_ != nullptr; }

	[[nodiscard]] int fd() const noexcept { return abd_ring_fd(r_); }
	[[nodiscard]] result<int> wait_fd() const noexcept { return detail::value(abd_ring_wait_fd(r_)); }
	[[nodiscard]] std::array<std::uint8_t, ABD_RING_NONCE_SIZE> nonce() const noexcept
	{
		std::array<std::uint8_t, ABD_RING_NONCE_SIZE> n{};
		(void)abd_ring_nonce(r_, n.data());
		return n;
	}
	[[nodiscard]] std::size_t capacity() const noexcept
	{
		std::int64_t c = abd_ring_capacity(r_);
		return c < 0 ? 0 : static_cast<std::size_t>(c);
	}
	[[nodiscard]] std::size_t slot_size() const noexcept
	{
		std::int64_t c = abd_ring_slot_size(r_);
		return c < 0 ? 0 : static_cast<std::size_t>(c);
	}

	result<void> try_push(std::span<const std::byte> msg) noexcept
	{
		return detail::check(abd_ring_try_push(r_, msg.data(), msg.size()));
	}
	result<void> push(std::span<const std::byte> msg, timeout limit) noexcept
	{
		return detail::check(abd_ring_push(r_, msg.data(), msg.size(), limit.ns()));
	}
	// The message's length.
	result<std::size_t> try_pop(std::span<std::byte> buf) noexcept
	{
		return length(abd_ring_try_pop(r_, buf.data(), buf.size()));
	}
	result<std::size_t> pop(std::span<std::byte> buf, timeout limit) noexcept
	{
		return length(abd_ring_pop(r_, buf.data(), buf.size(), limit.ns()));
	}
	// Typed forms for a trivially copyable T (a message of another size: errc::bad_message).
	template <class T>
	result<void> try_push_value(const T &v) noexcept
	{
		static_assert(std::is_trivially_copyable_v<T>, "a ring message is copied as bytes: T must be trivially copyable");
		return try_push(std::as_bytes(std::span<const T, 1>(&v, 1)));
	}
	template <class T>
	result<T> try_pop_value() noexcept
	{
		static_assert(std::is_trivially_copyable_v<T>, "a ring message is copied as bytes: T must be trivially copyable");
		std::array<std::byte, sizeof(T)> b;
		int n = abd_ring_try_pop(r_, b.data(), b.size());
		if (n < 0)
			return detail::fail(n);
		if (static_cast<std::size_t>(n) != sizeof(T))
			return detail::fail(-EBADMSG);
		return std::bit_cast<T>(b);
	}

	// Zero-copy: claim a slot (released by the guard), or take the oldest message in place.
	[[nodiscard]] result<reservation> try_reserve() noexcept
	{
		void *data = nullptr;
		if (int e = abd_ring_try_reserve(r_, &data); e < 0)
			return detail::fail(e);
		return reservation(r_, data, slot_size());
	}
	[[nodiscard]] result<peeked> try_peek() noexcept
	{
		const void *data = nullptr;
		std::size_t len = 0;
		if (int e = abd_ring_try_peek(r_, &data, &len); e < 0)
			return detail::fail(e);
		return peeked(r_, data, len);
	}
	// role: ABD_RING_PRODUCER or ABD_RING_CONSUMER.
	[[nodiscard]] result<ring_stream> stream(unsigned role) noexcept
	{
		abd_ring_stream s = abd_ring_stream_open(r_, role);
		if (s.ret < 0)
			return detail::fail(s.ret);
		return ring_stream(s);
	}

	result<int> recover() noexcept { return detail::value(abd_ring_recover(r_)); }
	result<void> set_stuck_timeout(std::chrono::nanoseconds t) noexcept
	{
		return detail::check(abd_ring_set_stuck_timeout(r_, t.count()));
	}
	[[nodiscard]] result<ring_stats> stats() const noexcept
	{
		ring_stats st{};
		if (int e = abd_ring_stats(r_, &st); e < 0)
			return detail::fail(e);
		return st;
	}

protected:
	abd_ring *r_ = nullptr;

private:
	static result<std::size_t> length(int n) noexcept
	{
		if (n < 0)
			return detail::fail(n);
		return static_cast<std::size_t>(n);
	}
};

// An owned ring handle (abd_ring_free when destroyed).
class ring : public ring_ref {
public:
	ring() noexcept = default;
	explicit ring(abd_ring *r) noexcept : ring_ref(r) {}
	ring(ring &&o) noexcept : ring_ref(std::exchange(o.r_, nullptr)) {}
	ring &operator=(ring &&o) noexcept
	{
		if (this != &o) {
			abd_ring_free(r_);
			r_ = std::exchange(o.r_, nullptr);
		}
		return *this;
	}
	ring(const ring &) = delete;
	ring &operator=(const ring &) = delete;
	~ring() { abd_ring_free(r_); }
	[[nodiscard]] abd_ring *release() noexcept { return std::exchange(r_, nullptr); }

	// A new ring; nonce (16 bytes) empty: a random one.
	[[nodiscard]] static result<ring> create(std::uint32_t capacity, std::uint32_t slot_size, unsigned flags = 0,
	                                         std::span<const std::uint8_t> nonce = {}) noexcept
	{
		if (!nonce.empty() && nonce.size() != ABD_RING_NONCE_SIZE)
			return detail::fail(std::errc::invalid_argument);
		return create_impl(capacity, slot_size, flags, nonce.empty() ? nullptr : nonce.data());
	}
	// Map a ring made elsewhere (descriptors borrowed; expected_nonce empty: not checked).
	[[nodiscard]] static result<ring> attach(int memfd, int wait_fd, std::span<const std::uint8_t> expected_nonce = {},
	                                         unsigned flags = 0, const ring_attach_opts *opts = nullptr) noexcept
	{
		if (!expected_nonce.empty() && expected_nonce.size() != ABD_RING_NONCE_SIZE)
			return detail::fail(std::errc::invalid_argument);
		abd_ring *r = nullptr;
		int e = abd_ring_attach_opts(memfd, wait_fd, expected_nonce.empty() ? nullptr : expected_nonce.data(),
		                             flags, opts, &r);
		if (e < 0)
			return detail::fail(e);
		return ring(r);
	}

private:
	static result<ring> create_impl(std::uint32_t capacity, std::uint32_t slot_size, unsigned flags,
	                                const std::uint8_t *nonce) noexcept
	{
		abd_ring *r = nullptr;
		if (int e = abd_ring_new(capacity, slot_size, flags, nonce, &r); e < 0)
			return detail::fail(e);
		return ring(r);
	}
};

// ----------------------------------------------------------------------------- services --

// The identity of a message type (service.h, "Typed services"): a name, the size, and
// hash = FNV-1a 64 of a layout description; the same computation as abd_service_type_hash.
[[nodiscard]] constexpr std::uint64_t type_hash(std::string_view layout) noexcept
{
	std::uint64_t h = 0xcbf29ce484222325u;
	for (char c : layout) {
		if (c == '\0')
			break; // as the C function, which stops at the NUL
		h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3u;
	}
	return h;
}

// Is name a valid message type name (1..ABD_SERVICE_TYPE_MAX bytes of [A-Za-z0-9._:<>-])?
[[nodiscard]] constexpr bool type_name_valid(std::string_view name) noexcept
{
	if (name.empty() || name.size() > ABD_SERVICE_TYPE_MAX)
		return false;
	for (char c : name) {
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		          c == '.' || c == '_' || c == ':' || c == '<' || c == '>' || c == '-';
		if (!ok)
			return false;
	}
	return true;
}

// The type identity of T for abd::service<T>. By default T declares it:
//     struct sample {
//         static constexpr std::string_view abd_type_name = "example.sample";
//         static constexpr std::string_view abd_type_layout = "u64 seq; f64 value";
//         std::uint64_t seq; double value;
//     };
// For a struct from a C header, specialize instead:
//     template <> struct abd::message_type<sample> {
//         static constexpr std::string_view name = "example.sample", layout = "...";
//     };
// A C peer gives the same strings to ABD_SERVICE_TYPED(prefix, struct sample, name, layout).
template <class T>
struct message_type {
	static_assert(requires {
		{ T::abd_type_name } -> std::convertible_to<std::string_view>;
		{ T::abd_type_layout } -> std::convertible_to<std::string_view>;
	}, "abd::service<T> needs T's type identity, the strings a C peer gives ABD_SERVICE_TYPED: "
	   "declare static constexpr std::string_view abd_type_name and abd_type_layout in T, or "
	   "specialize abd::message_type<T> with `name` and `layout`");
	static constexpr std::string_view name = T::abd_type_name;
	static constexpr std::string_view layout = T::abd_type_layout;
};

// A message type as a service publishes it.
struct type_info {
	std::string_view name; // "" untyped
	std::uint32_t size;    // 0 variable
	std::uint64_t hash;
};

enum class service_flags : unsigned {
	none = 0, // both roles
	producer = ABD_SERVICE_PRODUCER,
	consumer = ABD_SERVICE_CONSUMER,
	single_producer = ABD_SERVICE_SINGLE_PRODUCER,
	single_consumer = ABD_SERVICE_SINGLE_CONSUMER,
	pidfd_getfd = ABD_SERVICE_PIDFD_GETFD,
	scm_rights = ABD_SERVICE_SCM_RIGHTS,
	observer = ABD_SERVICE_OBSERVER,
};
[[nodiscard]] constexpr service_flags operator|(service_flags a, service_flags b) noexcept
{
	return static_cast<service_flags>(static_cast<unsigned>(a) | static_cast<unsigned>(b));
}

// What a publisher offers and an opener expects (abd_service_config), zero meaning the C
// default. Borrowed for the duration of the call. The type fields are for service<>; a
// service<T> sets them from T.
struct service_options {
	std::string_view dir{}; // empty: the default registry
	std::uint32_t capacity = 0;
	std::uint32_t slot_size = 0;
	std::string_view type_name{};
	std::uint32_t type_size = 0;
	std::uint64_t type_hash = 0;
	std::span<const uid_t> allow_uids{};
	std::span<const gid_t> allow_gids{};
	pid_t ptracer = 0;
	reactor_ref reactor{}; // run on this reactor (it must outlive the service)
	unsigned reactor_flags = 0;
	std::span<const uid_t> publisher_uids{};
	std::span<const gid_t> publisher_gids{};
};

// The events of a service (on_event): fn(abd_service_event, int status).

namespace detail {
// The C configuration of options; holds the NUL-terminated copies of its strings.
class service_config {
public:
	service_config(const service_options &o) noexcept : dir_(o.dir, true), type_(o.type_name, true)
	{
		ok_ = dir_.ok() && type_.ok() && o.allow_uids.size() <= UINT_MAX && o.allow_gids.size() <= UINT_MAX;
		c_.dir = dir_.get();
		c_.capacity = o.capacity;
		c_.slot_size = o.slot_size;
		c_.type_name = type_.get();
		c_.type_size = o.type_size;
		c_.type_hash = o.type_hash;
		c_.allow_uids = o.allow_uids.data();
		c_.n_allow_uids = static_cast<unsigned>(o.allow_uids.size());
		c_.allow_gids = o.allow_gids.data();
		c_.n_allow_gids = static_cast<unsigned>(o.allow_gids.size());
		c_.ptracer = o.ptracer;
		c_.reactor = o.reactor.get();
		c_.reactor_flags = o.reactor_flags;
		c_.publisher_uids = o.publisher_uids.data();
		c_.n_publisher_uids = o.publisher_uids.size();
		c_.publisher_gids = o.publisher_gids.data();
		c_.n_publisher_gids = o.publisher_gids.size();
	}
	[[nodiscard]] bool ok() const noexcept { return ok_; }
	[[nodiscard]] const abd_service_config *get() const noexcept { return &c_; }

private:
	path_string dir_;
	c_string<ABD_SERVICE_TYPE_MAX> type_;
	abd_service_config c_{};
	bool ok_;
};

// What a service shares with its outstanding loan or peek guard: the C handle (nullptr once
// the service closed, so that a guard that outlived it touches nothing) and the chunk lent or
// peeked (nullptr when none). Counted by hand, not atomically: a service and its guards are
// used by one thread at a time (service.h).
struct guard_link {
	abd_service *svc;
	const void *out;
	unsigned refs;
};
class link_ptr {
public:
	link_ptr() noexcept = default;
	explicit link_ptr(guard_link *p) noexcept : p_(p) {} // adopts one reference
	link_ptr(link_ptr &&o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
	link_ptr &operator=(link_ptr &&o) noexcept
	{
		if (this != &o) {
			reset();
			p_ = std::exchange(o.p_, nullptr);
		}
		return *this;
	}
	link_ptr(const link_ptr &) = delete;
	link_ptr &operator=(const link_ptr &) = delete;
	~link_ptr() { reset(); }
	void reset() noexcept
	{
		if (guard_link *p = std::exchange(p_, nullptr); p && --p->refs == 0)
			delete p;
	}
	[[nodiscard]] link_ptr share() const noexcept
	{
		if (p_)
			p_->refs++;
		return link_ptr(p_);
	}
	[[nodiscard]] guard_link *get() const noexcept { return p_; }
	guard_link *operator->() const noexcept { return p_; }
	explicit operator bool() const noexcept { return p_ != nullptr; }

private:
	guard_link *p_ = nullptr;
};

// A chunk of the payload pool as a T (the pool's chunks are 64-byte aligned).
template <class T>
[[nodiscard]] T *in_chunk(const void *p) noexcept
{
	return std::launder(reinterpret_cast<T *>(const_cast<void *>(p)));
}
} // namespace detail

template <class T>
class service;

// A chunk of a broadcast publisher's payload pool, lent by service::loan to write a message in
// place: std::move(loan).send() publishes it (no copy); destroyed unsent, it is given back
// (abd_service_unloan) and nobody sees it. loan_guard<> is bytes (data(): the size asked for),
// loan_guard<T> one T (*loan, loan->field: the chunk's previous bytes until written).
// One loan at a time per service: a second loan while this one is out is errc::device_or_
// resource_busy. Destroy the guard before its service; one that outlived it (or a moved-from
// guard) holds nothing: operator bool is false, data() is empty, send() gives ESTALE
// (errc::invalid_argument for a moved-from one), and its destructor does nothing.
template <class T = void>
class loan_guard {
public:
	loan_guard() noexcept = default;
	loan_guard(loan_guard &&o) noexcept
	    : link_(std::move(o.link_)), data_(std::exchange(o.data_, nullptr)), size_(o.size_)
	{
	}
	loan_guard &operator=(loan_guard &&o) noexcept
	{
		if (this != &o) {
			(void)unloan();
			link_ = std::move(o.link_);
			data_ = std::exchange(o.data_, nullptr);
			size_ = o.size_;
		}
		return *this;
	}
	loan_guard(const loan_guard &) = delete;
	loan_guard &operator=(const loan_guard &) = delete;
	~loan_guard() { (void)unloan(); }

	// Whether it holds a loan of a service still open.
	explicit operator bool() const noexcept { return data_ && link_ && link_->svc; }
	[[nodiscard]] std::span<std::byte> data() const noexcept
	    requires std::is_void_v<T>
	{
		return *this ? std::span<std::byte>(static_cast<std::byte *>(data_), size_) : std::span<std::byte>();
	}
	[[nodiscard]] T *get() const noexcept
	    requires(!std::is_void_v<T>)
	{
		return *this ? detail::in_chunk<T>(data_) : nullptr;
	}
	template <class U = T>
	    requires(!std::is_void_v<U>)
	U &operator*() const noexcept
	{
		return *detail::in_chunk<U>(data_);
	}
	T *operator->() const noexcept
	    requires(!std::is_void_v<T>)
	{
		return detail::in_chunk<T>(data_);
	}

	// Publish the first len bytes (loan_guard<>; at most the slot size), or all of it. The
	// guard is empty afterwards, except after errc::message_size (len over the slot size):
	// the loan stays out, to send again or be given back by the destructor.
	result<void> send(std::size_t len) &&
	    requires std::is_void_v<T>
	{
		return send_(len);
	}
	result<void> send() && { return send_(size_); }
	// Give the chunk back unsent now (the destructor does it otherwise).
	result<void> unloan() noexcept
	{
		if (!data_)
			return {};
		void *d = std::exchange(data_, nullptr);
		detail::link_ptr l = std::move(link_);
		if (!l || !l->svc)
			return {};
		l->out = nullptr;
		return detail::check(abd_service_unloan(l->svc, d));
	}

private:
	template <class>
	friend class service;
	loan_guard(detail::link_ptr l, void *data, std::size_t size) noexcept
	    : link_(std::move(l)), data_(data), size_(size)
	{
	}
	result<void> send_(std::size_t len) noexcept
	{
		if (!data_)
			return detail::fail(std::errc::invalid_argument);
		if (!link_ || !link_->svc) {
			data_ = nullptr;
			link_.reset();
			return detail::fail(-ESTALE);
		}
		int e = abd_service_send(link_->svc, data_, len);
		if (e == -EMSGSIZE) // the loan stays out
			return detail::fail(e);
		link_->out = nullptr;
		data_ = nullptr;
		link_.reset();
		return detail::check(e);
	}
	detail::link_ptr link_;
	void *data_ = nullptr;
	std::size_t size_ = 0;
};

// A broadcast subscriber's next message, read in place (service::peek): read-only, valid while
// the guard holds it; its destructor (or release()) lets it go, and only then does the
// subscriber move on (a BLOCK publisher waits for that). peek_guard<> is bytes (data()),
// peek_guard<T> one const T. One peek at a time per service (another while this one is held:
// errc::device_or_resource_busy). Destroy it before its service; one that outlived it (or a
// moved-from one) holds nothing: operator bool is false, data() is empty.
template <class T = void>
class peek_guard {
public:
	peek_guard() noexcept = default;
	peek_guard(peek_guard &&o) noexcept
	    : link_(std::move(o.link_)), data_(std::exchange(o.data_, nullptr)), len_(o.len_)
	{
	}
	peek_guard &operator=(peek_guard &&o) noexcept
	{
		if (this != &o) {
			(void)release();
			link_ = std::move(o.link_);
			data_ = std::exchange(o.data_, nullptr);
			len_ = o.len_;
		}
		return *this;
	}
	peek_guard(const peek_guard &) = delete;
	peek_guard &operator=(const peek_guard &) = delete;
	~peek_guard() { (void)release(); }

	explicit operator bool() const noexcept { return data_ && link_ && link_->svc; }
	[[nodiscard]] std::span<const std::byte> data() const noexcept
	    requires std::is_void_v<T>
	{
		return *this ? std::span<const std::byte>(static_cast<const std::byte *>(data_), len_)
		             : std::span<const std::byte>();
	}
	[[nodiscard]] const T *get() const noexcept
	    requires(!std::is_void_v<T>)
	{
		return *this ? detail::in_chunk<const T>(data_) : nullptr;
	}
	template <class U = T>
	    requires(!std::is_void_v<U>)
	const U &operator*() const noexcept
	{
		return *detail::in_chunk<const U>(data_);
	}
	const T *operator->() const noexcept
	    requires(!std::is_void_v<T>)
	{
		return detail::in_chunk<const T>(data_);
	}
	// Done with the message now (the destructor does it otherwise).
	result<void> release() noexcept
	{
		if (!data_)
			return {};
		data_ = nullptr;
		detail::link_ptr l = std::move(link_);
		if (!l || !l->svc)
			return {};
		l->out = nullptr;
		return detail::check(abd_service_release(l->svc));
	}

private:
	template <class>
	friend class service;
	peek_guard(detail::link_ptr l, const void *data, std::size_t len) noexcept
	    : link_(std::move(l)), data_(data), len_(len)
	{
	}
	detail::link_ptr link_;
	const void *data_ = nullptr;
	std::size_t len_ = 0;
};

// What a broadcast publisher chooses (abd_broadcast_opts), zero meaning the C default.
enum class broadcast_policy : std::uint32_t {
	block = ABD_BROADCAST_BLOCK,         // a subscriber a whole ring behind holds the publisher back
	overwrite = ABD_BROADCAST_OVERWRITE, // the oldest message is overwritten; lost() counts it
};
struct broadcast_options {
	std::uint32_t subscribers = 0; // at most this many at a time (1..64; 0: 8)
	std::uint32_t history = 0;     // messages a late subscriber still gets (< capacity)
	broadcast_policy policy = broadcast_policy::block;
};

// What a request-response server offers (abd_rpc_opts), zero meaning the C default.
struct rpc_options {
	std::uint32_t response_size = 0; // the largest answer (0: the slot size)
	std::uint32_t in_flight = 0;     // calls one client may have in flight (1..64; 0: 8)
};

// A request a server took (service::take): its length in the buffer given, and the token that
// names it for reply().
struct rpc_request {
	std::size_t size;
	std::uint64_t token;
};

namespace detail {
class service_base;
}

// A request-response client's call in flight (service::call_send): poll() or wait() for the
// answer; a call destroyed (or moved from) before it ended is cancelled (abd_service_call_
// cancel), so its answer is dropped and its in_flight place is free again. A call ends with
// its answer, timed_out (wait), broken_pipe, bad_message, the server's error, or cancel();
// after resource_unavailable_try_again (poll: not yet), message_size (an answer longer than
// the buffer: it stays), interrupted or operation_canceled it is still in flight. Destroy it
// before its service; one that outlived it is detached (pending() false, poll/wait ESTALE).
class pending_call {
public:
	pending_call() noexcept = default;
	pending_call(pending_call &&o) noexcept
	    : link_(std::move(o.link_)), ticket_(o.ticket_), pending_(std::exchange(o.pending_, false))
	{
	}
	pending_call &operator=(pending_call &&o) noexcept
	{
		if (this != &o) {
			(void)cancel();
			link_ = std::move(o.link_);
			ticket_ = o.ticket_;
			pending_ = std::exchange(o.pending_, false);
		}
		return *this;
	}
	pending_call(const pending_call &) = delete;
	pending_call &operator=(const pending_call &) = delete;
	~pending_call() { (void)cancel(); }

	// Still in flight (not answered, failed or cancelled), on a service still open.
	[[nodiscard]] bool pending() const noexcept { return pending_ && link_ && link_->svc; }
	[[nodiscard]] std::uint64_t ticket() const noexcept { return ticket_; }
	// The answer's length in resp, if it came (never sleeps).
	result<std::size_t> poll(std::span<std::byte> resp) noexcept
	{
		if (!usable())
			return detail::fail(pending_ ? -ESTALE : -EINVAL);
		return end(abd_service_call_poll(link_->svc, ticket_, resp.data(), resp.size()));
	}
	result<std::size_t> wait(std::span<std::byte> resp, timeout limit = forever) noexcept
	{
		if (!usable())
			return detail::fail(pending_ ? -ESTALE : -EINVAL);
		return end(abd_service_call_wait(link_->svc, ticket_, resp.data(), resp.size(), limit.ns()));
	}
	// Give the call up now (the destructor does it otherwise): a later answer is dropped.
	result<void> cancel() noexcept
	{
		if (!std::exchange(pending_, false))
			return {};
		detail::link_ptr l = std::move(link_);
		if (!l || !l->svc)
			return {};
		return detail::check(abd_service_call_cancel(l->svc, ticket_));
	}

private:
	friend class detail::service_base;
	pending_call(detail::link_ptr l, std::uint64_t ticket) noexcept
	    : link_(std::move(l)), ticket_(ticket), pending_(true)
	{
	}
	[[nodiscard]] bool usable() const noexcept { return pending_ && link_ && link_->svc; }
	result<std::size_t> end(int n) noexcept
	{
		bool still = n == -EAGAIN || n == -EMSGSIZE || n == -EINTR || n == -ECANCELED;
		if (!still) {
			pending_ = false;
			link_.reset();
		}
		if (n < 0)
			return detail::fail(n);
		return static_cast<std::size_t>(n);
	}
	detail::link_ptr link_;
	std::uint64_t ticket_ = 0;
	bool pending_ = false;
};

namespace detail {
// What every service handle has, typed or not.
class service_base {
public:
	[[nodiscard]] abd_service *get() const noexcept { return own_.get(); }
	explicit operator bool() const noexcept { return get() != nullptr; }

	// Leave the service now (the destructor does it otherwise).
	void close() noexcept
	{
		detach_guards();
		own_.reset();
		event_.reset();
	}
	// Empty while open; errc::shut_down (withdrawn) or connection_reset (died) once the
	// publisher left.
	[[nodiscard]] std::error_code closed() const noexcept
	{
		int e = abd_service_closed(get());
		return e < 0 ? error_from(e) : std::error_code();
	}
	[[nodiscard]] std::string_view name() const noexcept { return view(abd_service_name(get())); }
	[[nodiscard]] std::string_view record_name() const noexcept { return view(abd_service_record_name(get())); }
	[[nodiscard]] bool is_publisher() const noexcept { return abd_service_is_publisher(get()) == 1; }
	[[nodiscard]] pid_t publisher_pid() const noexcept { return abd_service_publisher_pid(get()); }
	[[nodiscard]] result<type_info> type() const noexcept
	{
		const char *n = nullptr;
		type_info t{};
		if (int e = abd_service_type(get(), &n, &t.size, &t.hash); e < 0)
			return fail(e);
		t.name = view(n);
		return t;
	}
	// The ring's figures (abd::service_stats: the C struct abd_service_stats).
	[[nodiscard]] result<service_stats> stats() const noexcept
	{
		service_stats st{};
		if (int e = abd_service_stats(get(), &st); e < 0)
			return fail(e);
		return st;
	}
	// The reactor it runs on, to run or embed (fd(), run_once()).
	[[nodiscard]] reactor_ref reactor() const noexcept { return abd_service_reactor(get()); }
	// The ring, for the zero-copy and batch forms (they do not check closed()).
	[[nodiscard]] ring_ref ring() const noexcept { return abd_service_ring(get()); }
	// A broadcast service (publisher or subscriber), not a work queue.
	[[nodiscard]] bool is_broadcast() const noexcept { return abd_service_is_broadcast(get()) == 1; }
	// A broadcast subscriber: the messages it missed since it joined (overwritten before it
	// read them under the OVERWRITE policy); 0 for every other handle.
	[[nodiscard]] result<std::uint64_t> lost() const noexcept
	{
		std::int64_t n = abd_service_lost(get());
		if (n < 0)
			return fail(static_cast<int>(n));
		return static_cast<std::uint64_t>(n);
	}
	// A request-response service (server or client).
	[[nodiscard]] bool is_rpc() const noexcept { return abd_service_is_rpc(get()) == 1; }

	// ---- request-response, server side (docs/rpc.md).

	// Answer the request of token with bytes, with the bytes of a trivially copyable value, or
	// with an error its caller's call returns (a generic_category code). Never blocks. ESTALE:
	// answered already, or the caller gave that call up.
	result<void> reply(std::uint64_t token, std::span<const std::byte> answer) noexcept
	{
		return check(abd_service_reply(get(), token, answer.data(), answer.size()));
	}
	result<void> reply(std::uint64_t token, std::string_view answer) noexcept
	{
		return reply(token, std::as_bytes(std::span(answer)));
	}
	template <class R>
	    requires(!std::is_convertible_v<const R &, std::string_view> &&
	             !std::is_convertible_v<const R &, std::span<const std::byte>>)
	result<void> reply_value(std::uint64_t token, const R &answer) noexcept
	{
		static_assert(std::is_trivially_copyable_v<R>, "an answer is copied as bytes: R must be trivially copyable");
		return reply(token, std::as_bytes(std::span<const R, 1>(&answer, 1)));
	}
	result<void> reply_error(std::uint64_t token, std::error_code e) noexcept
	{
		if (e.category() != std::generic_category() || e.value() <= 0 || e.value() >= 4096)
			return fail(std::errc::invalid_argument);
		return check(abd_service_reply_error(get(), token, -e.value()));
	}
	result<void> reply_error(std::uint64_t token, std::errc e) noexcept
	{
		return reply_error(token, std::make_error_code(e));
	}

	// An answer of n bytes in b as an R (another size: bad_message); for call_value.
	template <class R>
	[[nodiscard]] static result<R> answer_as(result<std::size_t> n, const std::array<std::byte, sizeof(R)> &b) noexcept
	{
		if (!n)
			return std::unexpected(n.error());
		if (*n != sizeof(R))
			return fail(-EBADMSG);
		return std::bit_cast<R>(b);
	}

	// Events from the service's reactor: fn(abd_service_event event, int status).
	template <class F>
	result<void> on_event(F &&fn) noexcept
	{
		using C = std::decay_t<F>;
		static_assert(std::is_invocable_v<C &, abd_service_event, int>,
		              "service events are called as fn(abd_service_event event, int status)");
		auto cb = make_callback(std::forward<F>(fn));
		if (!cb)
			return fail(-ENOMEM);
		if (int e = abd_service_set_event_fn(get(), &event_trampoline<C>, cb.get()); e < 0)
			return fail(e);
		event_ = std::move(cb); // the previous callback is not called any more
		return {};
	}
	result<void> clear_events() noexcept
	{
		if (int e = abd_service_set_event_fn(get(), nullptr, nullptr); e < 0)
			return fail(e);
		event_.reset();
		return {};
	}

protected:
	service_base() noexcept = default;
	explicit service_base(abd_service *s) noexcept : own_(s) {}
	service_base(service_base &&) noexcept = default;
	service_base &operator=(service_base &&o) noexcept
	{
		if (this != &o) {
			close();
			own_ = std::move(o.own_);
			event_ = std::move(o.event_);
			link_ = std::move(o.link_);
		}
		return *this;
	}
	~service_base() { detach_guards(); }

	static int publish_raw(std::string_view name, const service_options &o, service_flags flags,
	                       abd_service **out) noexcept
	{
		name_string n(name);
		service_config c(o);
		if (!n.ok() || !c.ok())
			return -EINVAL;
		return abd_service_publish(n.get(), c.get(), static_cast<unsigned>(flags), out);
	}
	static int open_raw(std::string_view name, const service_options &o, service_flags flags, timeout limit,
	                    abd_service **out) noexcept
	{
		name_string n(name);
		service_config c(o);
		if (!n.ok() || !c.ok())
			return -EINVAL;
		return abd_service_open(n.get(), c.get(), static_cast<unsigned>(flags), limit.ns(), out);
	}
	static int publish_broadcast_raw(std::string_view name, const service_options &o,
	                                 const broadcast_options &b, service_flags flags,
	                                 abd_service **out) noexcept
	{
		name_string n(name);
		service_config c(o);
		if (!n.ok() || !c.ok())
			return -EINVAL;
		abd_broadcast_opts opts{};
		opts.subscribers = b.subscribers;
		opts.history = b.history;
		opts.policy = static_cast<std::uint32_t>(b.policy);
		return abd_service_publish_broadcast(n.get(), c.get(), &opts, static_cast<unsigned>(flags), out);
	}
	// open() as a subscriber, refusing a work queue (protocol_not_supported).
	static int subscribe_raw(std::string_view name, const service_options &o, timeout limit,
	                         abd_service **out) noexcept
	{
		int e = open_raw(name, o, service_flags::consumer, limit, out);
		if (e == 0 && abd_service_is_broadcast(*out) != 1) {
			abd_service_close(std::exchange(*out, nullptr));
			e = -EPROTONOSUPPORT;
		}
		return e;
	}
	static int publish_rpc_raw(std::string_view name, const service_options &o, const rpc_options &r,
	                           service_flags flags, abd_service **out) noexcept
	{
		name_string n(name);
		service_config c(o);
		if (!n.ok() || !c.ok())
			return -EINVAL;
		abd_rpc_opts opts{};
		opts.response_size = r.response_size;
		opts.in_flight = r.in_flight;
		return abd_service_publish_rpc(n.get(), c.get(), &opts, static_cast<unsigned>(flags), out);
	}
	[[nodiscard]] result<rpc_request> take_raw(std::span<std::byte> buf, timeout limit, bool wait) noexcept
	{
		rpc_request r{0, 0};
		int n = wait ? abd_service_take(get(), buf.data(), buf.size(), &r.token, limit.ns())
		             : abd_service_try_take(get(), buf.data(), buf.size(), &r.token);
		if (n < 0)
			return fail(n);
		r.size = static_cast<std::size_t>(n);
		return r;
	}
	[[nodiscard]] result<std::size_t> call_raw(std::span<const std::byte> req, std::span<std::byte> resp,
	                                           timeout limit) noexcept
	{
		int n = abd_service_call(get(), req.data(), req.size(), resp.data(), resp.size(), limit.ns());
		if (n < 0)
			return fail(n);
		return static_cast<std::size_t>(n);
	}
	[[nodiscard]] result<pending_call> call_send_raw(std::span<const std::byte> req, timeout limit) noexcept
	{
		guard_link *l = link();
		if (!l)
			return fail(get() ? -ENOMEM : -EINVAL);
		std::uint64_t ticket = 0;
		if (int e = abd_service_call_send(get(), req.data(), req.size(), &ticket, limit.ns()); e < 0)
			return fail(e);
		return pending_call(link_.share(), ticket);
	}

	// A loan (buf) or a peek (data, len) for a new guard: the link shared with it.
	[[nodiscard]] result<link_ptr> lend(std::size_t size, timeout limit, void **buf) noexcept
	{
		guard_link *l = link();
		if (!l)
			return fail(get() ? -ENOMEM : -EINVAL);
		if (l->out)
			return fail(-EBUSY);
		if (int e = abd_service_loan(get(), size, buf, limit.ns()); e < 0)
			return fail(e);
		l->out = *buf;
		return link_.share();
	}
	[[nodiscard]] result<link_ptr> look(timeout limit, const void **data, std::size_t *len) noexcept
	{
		guard_link *l = link();
		if (!l)
			return fail(get() ? -ENOMEM : -EINVAL);
		if (l->out)
			return fail(-EBUSY);
		if (int e = abd_service_peek(get(), data, len, limit.ns()); e < 0)
			return fail(e);
		l->out = *data;
		return link_.share();
	}

private:
	template <class C>
	static void event_trampoline(abd_service *, abd_service_event event, int status, void *userdata)
	{
		static_cast<callback<C> *>(userdata)->fn(event, status);
	}
	guard_link *link() noexcept
	{
		if (!link_ && get())
			link_ = link_ptr(new (std::nothrow) guard_link{get(), nullptr, 1});
		return link_.get();
	}
	// The service is closing: give back what a guard still holds, and tell the guard.
	void detach_guards() noexcept
	{
		if (guard_link *l = link_.get()) {
			if (l->out && l->svc) {
				if (abd_service_is_publisher(l->svc) == 1)
					(void)abd_service_unloan(l->svc, const_cast<void *>(l->out));
				else
					(void)abd_service_release(l->svc);
			}
			l->svc = nullptr;
			l->out = nullptr;
		}
		link_.reset();
	}
	// Declared first, destroyed last: the service goes before its callback.
	std::unique_ptr<callback_base> event_;
	owner<abd_service, abd_service_close> own_;
	link_ptr link_;
};
} // namespace detail

// A typed service: every message is one T, copied as bytes; T's name, size and layout hash
// are published and checked at open (another definition: errc::protocol_error... EPROTOTYPE).
template <class T = void>
class service : public detail::service_base {
	static_assert(std::is_trivially_copyable_v<T>,
	              "abd::service<T>: messages cross processes as raw bytes in shared memory, so T "
	              "must be trivially copyable (no pointers to this process's memory, no owning "
	              "members such as std::string or std::vector, no virtual functions)");
	static_assert(!std::is_pointer_v<T>, "abd::service<T>: a pointer means nothing in another process");
	static_assert(sizeof(T) <= ABD_RING_MAX_SLOT_SIZE, "abd::service<T>: T does not fit a ring slot");
	static_assert(type_name_valid(message_type<T>::name),
	              "abd::service<T>: the type name must be 1..64 bytes of [A-Za-z0-9._:<>-]");

public:
	using value_type = T;
	// The identity published and checked (the same as ABD_SERVICE_TYPED's).
	static constexpr type_info identity{message_type<T>::name, static_cast<std::uint32_t>(sizeof(T)),
	                                    abd::type_hash(message_type<T>::layout)};

	service() noexcept = default;
	explicit service(abd_service *s) noexcept : service_base(s) {}

	[[nodiscard]] static result<service> publish(std::string_view name, service_options o = {},
	                                             service_flags flags = service_flags::none) noexcept
	{
		typed(o);
		abd_service *s = nullptr;
		if (int e = publish_raw(name, o, flags, &s); e < 0)
			return detail::fail(e);
		return service(s);
	}
	[[nodiscard]] static result<service> open(std::string_view name, service_options o = {},
	                                          service_flags flags = service_flags::none,
	                                          timeout limit = forever) noexcept
	{
		typed(o);
		abd_service *s = nullptr;
		if (int e = open_raw(name, o, flags, limit, &s); e < 0)
			return detail::fail(e);
		return service(s);
	}

	result<void> try_push(const T &v) noexcept
	{
		return detail::check(abd_service_try_push(get(), &v, sizeof(T)));
	}
	result<void> push(const T &v, timeout limit = forever) noexcept
	{
		return detail::check(abd_service_push(get(), &v, sizeof(T), limit.ns()));
	}
	result<T> try_pop() noexcept
	{
		std::array<std::byte, sizeof(T)> b;
		return as_value(abd_service_try_pop(get(), b.data(), b.size()), b);
	}
	result<T> pop(timeout limit = forever) noexcept
	{
		std::array<std::byte, sizeof(T)> b;
		return as_value(abd_service_pop(get(), b.data(), b.size(), limit.ns()), b);
	}

	// ---- broadcast (docs/broadcast.md): every subscriber gets every message.

	// Publish a broadcast service of T: this handle is its publisher (push, loan).
	[[nodiscard]] static result<service> publish_broadcast(std::string_view name, service_options o = {},
	                                                       broadcast_options b = {},
	                                                       service_flags flags = service_flags::none) noexcept
	{
		typed(o);
		abd_service *s = nullptr;
		if (int e = publish_broadcast_raw(name, o, b, flags, &s); e < 0)
			return detail::fail(e);
		return service(s);
	}
	// Subscribe to the broadcast service `name` (open() as a consumer; a work queue of that
	// name: protocol_not_supported). It starts with the publisher's history.
	[[nodiscard]] static result<service> subscribe(std::string_view name, service_options o = {},
	                                               timeout limit = forever) noexcept
	{
		typed(o);
		abd_service *s = nullptr;
		if (int e = subscribe_raw(name, o, limit, &s); e < 0)
			return detail::fail(e);
		return service(s);
	}
	// Publisher: a chunk of the pool to write one T in place, waiting up to limit for room
	// (BLOCK policy). std::move(l).send() publishes it; dropped, it is given back.
	[[nodiscard]] result<loan_guard<T>> loan(timeout limit = forever) noexcept
	{
		void *buf = nullptr;
		auto l = lend(sizeof(T), limit, &buf);
		if (!l)
			return std::unexpected(l.error());
		return loan_guard<T>(std::move(*l), buf, sizeof(T));
	}
	// Subscriber: the next message in place, held until the guard goes. A message of another
	// size is released and gives errc::bad_message.
	[[nodiscard]] result<peek_guard<T>> peek(timeout limit = forever) noexcept
	{
		const void *data = nullptr;
		std::size_t len = 0;
		auto l = look(limit, &data, &len);
		if (!l)
			return std::unexpected(l.error());
		peek_guard<T> g(std::move(*l), data, len);
		if (len != sizeof(T)) {
			(void)g.release();
			return detail::fail(-EBADMSG);
		}
		return g;
	}

	// ---- request-response (docs/rpc.md): requests are T, answers bytes or a value R.

	// Publish a request-response service whose requests are T: this handle is the server.
	[[nodiscard]] static result<service> publish_rpc(std::string_view name, service_options o = {},
	                                                 rpc_options r = {},
	                                                 service_flags flags = service_flags::none) noexcept
	{
		typed(o);
		abd_service *s = nullptr;
		if (int e = publish_rpc_raw(name, o, r, flags, &s); e < 0)
			return detail::fail(e);
		return service(s);
	}
	// Server: the next request and its token for reply() / reply_value() / reply_error(). A
	// request of another size (an untyped client's) is answered with bad_message and gives it.
	struct request {
		T value;
		std::uint64_t token;
	};
	[[nodiscard]] result<request> take(timeout limit = forever) noexcept { return take_value(limit, true); }
	[[nodiscard]] result<request> try_take() noexcept { return take_value(forever, false); }
	// Client: call with req; the answer's length in resp, or the answer as an R.
	[[nodiscard]] result<std::size_t> call(const T &req, std::span<std::byte> resp, timeout limit = forever) noexcept
	{
		return call_raw(std::as_bytes(std::span<const T, 1>(&req, 1)), resp, limit);
	}
	template <class R>
	[[nodiscard]] result<R> call_value(const T &req, timeout limit = forever) noexcept
	{
		static_assert(std::is_trivially_copyable_v<R>, "an answer is copied as bytes: R must be trivially copyable");
		std::array<std::byte, sizeof(R)> b;
		return answer_as<R>(call(req, b, limit), b);
	}
	// Client, asynchronous: send req (waiting up to limit for room), then poll/wait the call.
	[[nodiscard]] result<pending_call> call_send(const T &req, timeout limit = forever) noexcept
	{
		return call_send_raw(std::as_bytes(std::span<const T, 1>(&req, 1)), limit);
	}

private:
	static void typed(service_options &o) noexcept
	{
		o.type_name = identity.name;
		o.type_size = identity.size;
		o.type_hash = identity.hash;
	}
	result<request> take_value(timeout limit, bool wait) noexcept
	{
		std::array<std::byte, sizeof(T)> b;
		auto r = take_raw(b, limit, wait);
		if (!r)
			return std::unexpected(r.error());
		if (r->size != sizeof(T)) {
			(void)abd_service_reply_error(get(), r->token, -EBADMSG);
			return detail::fail(-EBADMSG);
		}
		return request{std::bit_cast<T>(b), r->token};
	}
	static result<T> as_value(int n, const std::array<std::byte, sizeof(T)> &b) noexcept
	{
		if (n < 0)
			return detail::fail(n);
		if (static_cast<std::size_t>(n) != sizeof(T))
			return detail::fail(-EBADMSG);
		return std::bit_cast<T>(b);
	}
};

// An untyped service: messages are byte strings up to the slot size.
template <>
class service<void> : public detail::service_base {
public:
	service() noexcept = default;
	explicit service(abd_service *s) noexcept : service_base(s) {}

	[[nodiscard]] static result<service> publish(std::string_view name, const service_options &o = {},
	                                             service_flags flags = service_flags::none) noexcept
	{
		abd_service *s = nullptr;
		if (int e = publish_raw(name, o, flags, &s); e < 0)
			return detail::fail(e);
		return service(s);
	}
	[[nodiscard]] static result<service> open(std::string_view name, const service_options &o = {},
	                                          service_flags flags = service_flags::none,
	                                          timeout limit = forever) noexcept
	{
		abd_service *s = nullptr;
		if (int e = open_raw(name, o, flags, limit, &s); e < 0)
			return detail::fail(e);
		return service(s);
	}

	result<void> try_push(std::span<const std::byte> msg) noexcept
	{
		return detail::check(abd_service_try_push(get(), msg.data(), msg.size()));
	}
	result<void> try_push(std::string_view msg) noexcept { return try_push(std::as_bytes(std::span(msg))); }
	result<void> push(std::span<const std::byte> msg, timeout limit = forever) noexcept
	{
		return detail::check(abd_service_push(get(), msg.data(), msg.size(), limit.ns()));
	}
	result<void> push(std::string_view msg, timeout limit = forever) noexcept
	{
		return push(std::as_bytes(std::span(msg)), limit);
	}
	// The message's length in buf.
	result<std::size_t> try_pop(std::span<std::byte> buf) noexcept
	{
		return length(abd_service_try_pop(get(), buf.data(), buf.size()));
	}
	result<std::size_t> try_pop(std::span<char> buf) noexcept { return try_pop(std::as_writable_bytes(buf)); }
	result<std::size_t> pop(std::span<std::byte> buf, timeout limit = forever) noexcept
	{
		return length(abd_service_pop(get(), buf.data(), buf.size(), limit.ns()));
	}
	result<std::size_t> pop(std::span<char> buf, timeout limit = forever) noexcept
	{
		return pop(std::as_writable_bytes(buf), limit);
	}

	// ---- broadcast (docs/broadcast.md): every subscriber gets every message.

	// Publish a broadcast service: this handle is its publisher (push, loan).
	[[nodiscard]] static result<service> publish_broadcast(std::string_view name, const service_options &o = {},
	                                                       const broadcast_options &b = {},
	                                                       service_flags flags = service_flags::none) noexcept
	{
		abd_service *s = nullptr;
		if (int e = publish_broadcast_raw(name, o, b, flags, &s); e < 0)
			return detail::fail(e);
		return service(s);
	}
	// Subscribe to the broadcast service `name` (open() as a consumer; a work queue of that
	// name: protocol_not_supported). It starts with the publisher's history.
	[[nodiscard]] static result<service> subscribe(std::string_view name, const service_options &o = {},
	                                               timeout limit = forever) noexcept
	{
		abd_service *s = nullptr;
		if (int e = subscribe_raw(name, o, limit, &s); e < 0)
			return detail::fail(e);
		return service(s);
	}
	// Publisher: size bytes of the pool (at most the slot size) to write a message in place,
	// waiting up to limit for room (BLOCK policy). std::move(l).send(len) publishes it;
	// dropped, it is given back.
	[[nodiscard]] result<loan_guard<>> loan(std::size_t size, timeout limit = forever) noexcept
	{
		void *buf = nullptr;
		auto l = lend(size, limit, &buf);
		if (!l)
			return std::unexpected(l.error());
		return loan_guard<>(std::move(*l), buf, size);
	}
	// Subscriber: the next message in place, held until the guard goes.
	[[nodiscard]] result<peek_guard<>> peek(timeout limit = forever) noexcept
	{
		const void *data = nullptr;
		std::size_t len = 0;
		auto l = look(limit, &data, &len);
		if (!l)
			return std::unexpected(l.error());
		return peek_guard<>(std::move(*l), data, len);
	}

	// ---- request-response (docs/rpc.md): requests and answers are bytes.

	// Publish a request-response service: this handle is the server.
	[[nodiscard]] static result<service> publish_rpc(std::string_view name, const service_options &o = {},
	                                                 const rpc_options &r = {},
	                                                 service_flags flags = service_flags::none) noexcept
	{
		abd_service *s = nullptr;
		if (int e = publish_rpc_raw(name, o, r, flags, &s); e < 0)
			return detail::fail(e);
		return service(s);
	}
	// Server: the next request into buf: its length and its token for reply().
	[[nodiscard]] result<rpc_request> take(std::span<std::byte> buf, timeout limit = forever) noexcept
	{
		return take_raw(buf, limit, true);
	}
	[[nodiscard]] result<rpc_request> try_take(std::span<std::byte> buf) noexcept
	{
		return take_raw(buf, forever, false);
	}
	// Client: call with req, the answer's length in resp.
	[[nodiscard]] result<std::size_t> call(std::span<const std::byte> req, std::span<std::byte> resp,
	                                       timeout limit = forever) noexcept
	{
		return call_raw(req, resp, limit);
	}
	[[nodiscard]] result<std::size_t> call(std::string_view req, std::span<char> resp,
	                                       timeout limit = forever) noexcept
	{
		return call_raw(std::as_bytes(std::span(req)), std::as_writable_bytes(resp), limit);
	}
	[[nodiscard]] result<pending_call> call_send(std::span<const std::byte> req, timeout limit = forever) noexcept
	{
		return call_send_raw(req, limit);
	}
	[[nodiscard]] result<pending_call> call_send(std::string_view req, timeout limit = forever) noexcept
	{
		return call_send_raw(std::as_bytes(std::span(req)), limit);
	}

private:
	static result<std::size_t> length(int n) noexcept
	{
		if (n < 0)
			return detail::fail(n);
		return static_cast<std::size_t>(n);
	}
};

// ----------------------------------------------------------------------------- probe --

// Whether this process may use a kernel feature (probe.h).
[[nodiscard]] inline bool has(abd_feature f) noexcept { return abd_probe_has(f) == 1; }
[[nodiscard]] inline std::string_view version() noexcept { return abd_version_string(); }

} // namespace abd

#endif
