/* SPDX-License-Identifier: MIT */
/* Helpers shared by the registry suites: scratch registries and child publishers. */
#ifndef ABD_TESTS_REGISTRY_UTIL_H
#define ABD_TESTS_REGISTRY_UTIL_H

#include <abd/abd.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

struct scratch {
	char dir[256];
	struct abd_registry *reg;
};

static inline void scratch_open(struct scratch *s)
{
	abd_test_mkdtemp(s->dir, sizeof(s->dir));
	char why[256];
	int r = abd_registry_open(s->dir, 0, &s->reg, why, sizeof(why));
	cr_assert_eq(r, 0, "abd_registry_open(%s): %s (%s)", s->dir, strerror(-r), why);
}

static inline void scratch_close(struct scratch *s)
{
	abd_registry_free(s->reg);
	s->reg = NULL;
	abd_test_rmtree(s->dir);
}

/* Publish service in reg; cr_assert on failure. */
static inline struct abd_publication *publish_simple(struct abd_registry *reg, const char *service)
{
	struct abd_record *rec;
	cr_assert_eq(abd_record_new(service, &rec), 0);
	struct abd_publication *pub = NULL;
	int r = abd_publish(reg, rec, &pub);
	abd_record_free(rec);
	cr_assert_eq(r, 0, "abd_publish(%s): %s", service, strerror(-r));
	return pub;
}

/* Count snapshot entries in a state (0: all). */
static inline size_t count_state(struct abd_registry *reg, enum abd_state state)
{
	struct abd_snapshot *snap;
	cr_assert_eq(abd_registry_snapshot(reg, &snap), 0);
	size_t n = 0;
	for (size_t i = 0; i < abd_snapshot_count(snap); i++)
		if (!state || abd_snapshot_entry(snap, i)->state == state)
			n++;
	abd_snapshot_free(snap);
	return n;
}

/* A child that publishes `service` in dir, writes its record's name to the pipe, then waits
 * for the parent to close its end (or to be killed). exit_without_withdraw leaves the record
 * stale. */
struct child_pub {
	const char *dir;
	const char *service;
	int pipe_w;       /* child writes the name here */
	int hold_r;       /* child waits for EOF here */
	int withdraw;     /* withdraw before exiting */
	int close_in_child[2]; /* the parent's ends, which fork copied */
};

static inline int child_pub_main(void *arg)
{
	struct child_pub *c = arg;
	close(c->close_in_child[0]);
	close(c->close_in_child[1]);
	struct abd_registry *reg;
	if (abd_registry_open(c->dir, 0, &reg, NULL, 0) < 0)
		return 10;
	struct abd_record *rec;
	struct abd_publication *pub;
	if (abd_record_new(c->service, &rec) < 0 || abd_publish(reg, rec, &pub) < 0)
		return 11;
	abd_record_free(rec);
	const char *name = abd_publication_name(pub);
	if (write(c->pipe_w, name, strlen(name) + 1) < 0)
		return 12;
	char b;
	while (read(c->hold_r, &b, 1) > 0)
		;
	if (c->withdraw)
		abd_withdraw(pub);
	return 0;
}

/* Start a child publisher; returns its pid, the record name in name, and the descriptor that
 * holds it (close it to let the child exit). */
static inline pid_t spawn_publisher(const char *dir, const char *service, int withdraw,
                                    char *name, size_t name_size, int *hold_w)
{
	int out[2], hold[2];
	cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(hold, O_CLOEXEC), 0);
	struct child_pub c = { dir, service, out[1], hold[0], withdraw, { out[0], hold[1] } };
	pid_t pid = abd_test_fork(child_pub_main, &c);
	close(out[1]);
	close(hold[0]);
	ssize_t n = read(out[0], name, name_size);
	close(out[0]);
	cr_assert_gt(n, 0, "child publisher failed (status %d)", n == 0 ? abd_test_wait(pid) : -1);
	*hold_w = hold[1];
	return pid;
}

#endif
