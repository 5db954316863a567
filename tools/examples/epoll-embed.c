/* SPDX-License-Identifier: MIT */
/* Embedding abd in an event loop you already have: here a plain epoll loop that also owns a
 * timer of its own. The service's reactor joins the loop through one descriptor
 * (abd_reactor_fd): when it polls readable, run the reactor once without blocking; the service
 * then calls back with READABLE (pop until -EAGAIN) or CLOSED (the publisher left).
 *
 *   epoll-embed example.chat [COUNT]     (subscribes, like pubsub-subscriber) */
#include <abd/abd.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define SECOND_NS 1000000000ll

struct app {
	long got;
	bool closed; /* the publisher left: drain, then -EPIPE */
	bool done;
};

/* Pop until the ring is empty (-EAGAIN) or closed and drained (-EPIPE). */
static void drain(struct abd_service *svc, struct app *app)
{
	char buf[4096];
	int n;
	while ((n = abd_service_try_pop(svc, buf, sizeof(buf) - 1)) >= 0) {
		buf[n] = '\0';
		printf("epoll-embed: %s\n", buf);
		app->got++;
	}
	if (n == -EPIPE)
		app->done = true;
	else if (n != -EAGAIN) {
		fprintf(stderr, "epoll-embed: pop: %s\n", strerror(-n));
		app->done = true;
	}
}

static void on_event(struct abd_service *svc, enum abd_service_event event, int status, void *userdata)
{
	struct app *app = userdata;
	if (event == ABD_SERVICE_EVENT_CLOSED) {
		printf("epoll-embed: publisher %s\n", status == -ECONNRESET ? "died" : "closed the service");
		app->closed = true;
	}
	drain(svc, app); /* READABLE: messages wait; CLOSED: read what is left, then -EPIPE */
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "example.chat";
	long expect = argc > 2 ? strtol(argv[2], NULL, 10) : -1;
	enum { TAG_ABD = 1, TAG_TIMER = 2 };

	/* The application's own loop and its own source: a 1 s timer. */
	int ep = epoll_create1(EPOLL_CLOEXEC);
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	struct itimerspec every_second = {.it_interval = {1, 0}, .it_value = {1, 0}};
	if (ep < 0 || tfd < 0 || timerfd_settime(tfd, 0, &every_second, NULL) < 0) {
		perror("epoll-embed: epoll/timerfd");
		return 1;
	}
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = TAG_TIMER};
	epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);

	struct abd_service *svc;
	int r = abd_service_open(name, NULL, ABD_SERVICE_CONSUMER, 10 * SECOND_NS, &svc);
	if (r < 0) {
		fprintf(stderr, "epoll-embed: cannot open %s: %s\n", name, strerror(-r));
		return 1;
	}
	struct app app = {0};
	r = abd_service_set_event_fn(svc, on_event, &app);
	if (r < 0) {
		fprintf(stderr, "epoll-embed: event callback: %s\n", strerror(-r));
		return 1;
	}

	/* The one descriptor through which abd joins this loop. It stays the reactor's. */
	struct abd_reactor *reactor = abd_service_reactor(svc);
	int rfd = abd_reactor_fd(reactor);
	if (rfd < 0) {
		fprintf(stderr, "epoll-embed: reactor fd: %s\n", strerror(-rfd));
		return 1;
	}
	ev = (struct epoll_event){.events = EPOLLIN, .data.u32 = TAG_ABD};
	epoll_ctl(ep, EPOLL_CTL_ADD, rfd, &ev);
	printf("epoll-embed: opened %s; reactor fd %d in my epoll set\n", name, rfd);
	fflush(stdout);

	drain(svc, &app); /* what arrived before the callback was set */
	while (!app.done) {
		struct epoll_event evs[4];
		/* Once closed, pop says -EAGAIN (not yet -EPIPE) while a producer still holds the
		 * ring, and its leaving raises no event: look again every 10 ms until -EPIPE. */
		int n = epoll_wait(ep, evs, 4, app.closed ? 10 : -1);
		if (n == 0 && app.closed)
			drain(svc, &app);
		if (n < 0 && errno == EINTR)
			continue; /* io_uring task work interrupts the wait: normal, retry */
		if (n < 0) {
			perror("epoll-embed: epoll_wait");
			break;
		}
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u32 == TAG_ABD) {
				r = abd_reactor_run_once(reactor, 0); /* never blocks */
				if (r < 0)
					fprintf(stderr, "epoll-embed: reactor: %s\n", strerror(-r));
			} else {
				uint64_t ticks;
				if (read(tfd, &ticks, sizeof(ticks)) == (ssize_t)sizeof(ticks)) {
					struct abd_service_stats st;
					if (abd_service_stats(svc, &st) == 0)
						printf("epoll-embed: tick: %ld received, %llu waiting\n", app.got,
						       (unsigned long long)st.occupancy);
				}
			}
		}
		fflush(stdout);
	}
	printf("epoll-embed: %ld messages\n", app.got);
	abd_service_close(svc);
	close(tfd);
	close(ep);
	return expect < 0 || app.got == expect ? 0 : 1;
}
