// SPDX-License-Identifier: MIT
// Publish/subscribe from C++26 through the C API: the headers are plain C with extern "C", so
// C++ needs no binding, only a little RAII. One program, two roles:
//
//   pubsub-cxx sub example.cxx 5 &
//   pubsub-cxx pub example.cxx 5
#include <abd/abd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

namespace {

using namespace std::chrono_literals;

// Every abd call returns a negative errno on failure: turn that into an exception here.
struct abd_error : std::runtime_error {
	int code;
	abd_error(std::string_view what, int r)
	    : std::runtime_error(std::string(what) + ": " + std::strerror(-r)), code(r) {}
};
int check(int r, std::string_view what)
{
	if (r < 0)
		throw abd_error(what, r);
	return r;
}

constexpr int64_t ns(std::chrono::nanoseconds d) { return d.count(); }

// The handle closes itself: abd_service_close accepts NULL, like every abd free function.
struct service_close {
	void operator()(abd_service *s) const noexcept { abd_service_close(s); }
};
using service = std::unique_ptr<abd_service, service_close>;

service publish(const std::string &name, const abd_service_config &cfg)
{
	abd_service *s = nullptr;
	check(abd_service_publish(name.c_str(), &cfg, ABD_SERVICE_PRODUCER, &s), "publish " + name);
	return service(s);
}

service open(const std::string &name, std::chrono::nanoseconds timeout)
{
	abd_service *s = nullptr;
	check(abd_service_open(name.c_str(), nullptr, ABD_SERVICE_CONSUMER, ns(timeout), &s),
	      "open " + name);
	return service(s);
}

int run_pub(const std::string &name, long count)
{
	abd_service_config cfg{}; // zeroed: every field its default
	cfg.capacity = 64;
	cfg.slot_size = 128;
	service svc = publish(name, cfg);

	// Wait for a subscriber; running the reactor answers its handshake.
	struct abd_service_stats st{}; // "struct": abd_service_stats is also a function
	for (int i = 0; i < 1000 && (abd_service_stats(svc.get(), &st) < 0 || st.consumers == 0); i++)
		check(abd_reactor_run_once(abd_service_reactor(svc.get()), ns(10ms)), "reactor");
	if (st.consumers == 0)
		throw std::runtime_error("no subscriber came");

	for (long i = 1; i <= count; i++) {
		std::string msg = "c++ message " + std::to_string(i) + " of " + std::to_string(count);
		check(abd_service_push(svc.get(), msg.data(), msg.size(), ns(5s)), "push");
	}
	std::printf("pubsub-cxx pub: sent %ld messages\n", count);
	return 0; // svc closes here: the subscriber drains, then gets -EPIPE
}

int run_sub(const std::string &name, long expect)
{
	service svc = open(name, 10s);
	std::printf("pubsub-cxx sub: opened %s\n", name.c_str());
	std::fflush(stdout);
	char storage[4096];
	std::span<char> buf(storage);
	long got = 0;
	for (;;) {
		int n = abd_service_pop(svc.get(), buf.data(), buf.size(), -1);
		if (n == -EPIPE)
			break;
		check(n, "pop");
		std::printf("pubsub-cxx sub: %.*s\n", n, buf.data());
		got++;
	}
	std::printf("pubsub-cxx sub: publisher left after %ld messages\n", got);
	return expect < 0 || got == expect ? 0 : 1;
}

} // namespace

int main(int argc, char **argv)
{
	if (argc < 3) {
		std::fprintf(stderr, "usage: pubsub-cxx pub|sub NAME [COUNT]\n");
		return 2;
	}
	std::string_view mode = argv[1];
	std::string name = argv[2];
	long count = argc > 3 ? std::strtol(argv[3], nullptr, 10) : -1;
	try {
		if (mode == "pub")
			return run_pub(name, count < 0 ? 10 : count);
		if (mode == "sub")
			return run_sub(name, count);
	} catch (const std::exception &e) {
		std::fprintf(stderr, "pubsub-cxx %s: %s\n", argv[1], e.what());
		return 1;
	}
	std::fprintf(stderr, "pubsub-cxx: unknown mode %s\n", argv[1]);
	return 2;
}
