/* SPDX-License-Identifier: MIT */
/* Plain subset (MSan, TSan): the reactor on each backend this profile has. Events come from
 * other threads here (TSan sees every hand-off), sources go with requests in flight (futex
 * sources with their thread asleep), the embedding fd is driven by poll(), and calls from a
 * foreign thread are refused. The full
 * behavioural suite is tests/test-reactor.c. */
#include <abd/abd.h>
#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"

static void count(struct abd_source *s, int status, uint64_t value, void *ud)
{
	(void)s;
	(void)value;
	if (status == 0)
		(*(int *)ud)++;
}

static void never(struct abd_source *s, int status, uint64_t value, void *ud)
{
	(void)s, (void)status, (void)value;
	(*(int *)ud)++;
}

static int run_until(struct abd_reactor *r, const int *n, int want)
{
	for (int i = 0; i < 400 && *n < want; i++)
		if (abd_reactor_run_once(r, 50 * 1000 * 1000) < 0)
			return 0;
	return *n >= want;
}

static void *write_later(void *arg)
{
	usleep(5000);
	uint64_t one = 1;
	(void)!write(*(int *)arg, &one, sizeof(one));
	return NULL;
}

static _Atomic uint32_t word;

/* FUTEX_WAKE the word, its value unchanged, until a sleeper was woken (a futex thread goes to
 * sleep a moment after the arm call returned). */
static void *wake_later(void *arg)
{
	(void)arg;
	usleep(5000);
	for (int i = 0; i < 2000; i++) {
		if (syscall(SYS_futex, &word, FUTEX_WAKE, 1, NULL, NULL, 0) == 1)
			break;
		usleep(1000);
	}
	return NULL;
}

struct foreign {
	struct abd_reactor *r;
	int res[3];
};

static void *foreign_calls(void *arg)
{
	struct foreign *f = arg;
	f->res[0] = abd_reactor_run_once(f->r, 0);
	f->res[1] = abd_reactor_add_defer(f->r, count, NULL, NULL);
	f->res[2] = abd_reactor_stop(f->r);
	return NULL;
}

static void suite(unsigned flags, const char *name)
{
	struct abd_reactor *r;
	int e = abd_reactor_new(flags, &r);
	if (e == -EOPNOTSUPP) {
		TAP_SKIP("%s: not available under this profile", name);
		return;
	}
	TAP_CHECK(e == 0, "%s: reactor created (%d)", name, e);
	if (e)
		return;

	int n = 0, efd = eventfd(0, EFD_CLOEXEC);
	struct abd_source *s;
	abd_reactor_add_eventfd(r, efd, count, &n, &s);
	pthread_t t;
	pthread_create(&t, NULL, write_later, &efd);
	TAP_CHECK(run_until(r, &n, 1), "%s: eventfd written by another thread", name);
	pthread_join(t, NULL);

	atomic_store(&word, 0);
	int fn = 0;
	struct abd_source *fs = NULL;
	e = abd_reactor_add_futex(r, (const uint32_t *)&word, 0, count, &fn, &fs);
	TAP_CHECK(e == 0, "%s: futex source added (%d)", name, e);
	if (e == 0) {
		pthread_create(&t, NULL, wake_later, NULL);
		TAP_CHECK(run_until(r, &fn, 1), "%s: futex word woken by another thread", name);
		pthread_join(t, NULL);
		/* Re-armed, then freed while asleep on the word (a futex thread is woken and joined). */
		TAP_CHECK(abd_source_futex_arm(fs, 0) == 0, "%s: futex source re-armed", name);
		abd_reactor_run_once(r, 0);
		usleep(2000);
		abd_source_free(fs);
		TAP_CHECK(abd_reactor_add_futex(r, (const uint32_t *)&word, 0, count, &fn, NULL) == 0,
		          "%s: floating futex source added", name);
		usleep(2000);
	}

	/* Sources removed with requests in flight, some with their events already in. */
	int bad = 0;
	for (int i = 0; i < 50; i++) {
		int e2 = eventfd(0, EFD_CLOEXEC);
		struct abd_source *a, *b;
		abd_reactor_add_eventfd(r, e2, never, &bad, &a);
		abd_reactor_add_timer(r, (uint64_t)(i % 2) * 1000, 0, 0, never, &bad, &b);
		if (i & 1) {
			uint64_t one = 1;
			(void)!write(e2, &one, sizeof(one));
		}
		abd_source_free(a);
		abd_source_free(b);
		abd_reactor_run_once(r, 0);
		close(e2);
	}
	abd_reactor_run_once(r, 1000000);
	TAP_CHECK(bad == 0, "%s: no callback after removal (%d)", name, bad);

	/* Embedded: only the fd's readiness drives the loop. */
	int fd = abd_reactor_fd(r), tn = 0;
	abd_reactor_add_timer(r, 1000000, 0, 0, count, &tn, NULL);
	abd_reactor_add_defer(r, count, &tn, NULL);
	int ok = fd >= 0;
	for (int i = 0; ok && tn < 2 && i < 100; i++) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int pr = poll(&p, 1, 10000);
		if (pr < 0 && errno == EINTR)
			continue;
		ok = pr == 1 && abd_reactor_run_once(r, 0) >= 0;
	}
	TAP_CHECK(ok && tn == 2, "%s: driven from a poll() loop", name);

	struct foreign f = { r, { 0 } };
	pthread_create(&t, NULL, foreign_calls, &f);
	pthread_join(t, NULL);
	TAP_CHECK(f.res[0] == -EBUSY && f.res[1] == -EBUSY && f.res[2] == -EBUSY,
	          "%s: calls from another thread are -EBUSY", name);

	abd_source_free(s);
	close(efd);
	abd_reactor_free(r);
}

int main(void)
{
	suite(ABD_REACTOR_FORCE_IO_URING, "io_uring");
	suite(ABD_REACTOR_FORCE_EPOLL, "epoll");
	return tap_done();
}
