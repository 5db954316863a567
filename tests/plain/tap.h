/* SPDX-License-Identifier: MIT */
/* A minimal TAP writer for the plain subset: Criterion cannot run under MSan (not
 * instrumented) or TSan (its fork arena clashes with TSan's memory layout), so these programs
 * exercise the library without it. */
#ifndef ABD_TESTS_PLAIN_TAP_H
#define ABD_TESTS_PLAIN_TAP_H

#include <stdio.h>
#include <stdlib.h>

static int tap_n, tap_failed;

/* Every line is flushed as it is written: the programs fork, and a child that leaves through a
 * path that flushes stdio would otherwise print the parent's buffered lines a second time and
 * break the TAP plan (seen under TSan in plain-reactor-services). */

#define TAP_CHECK(cond, ...)                                                           \
	do {                                                                               \
		tap_n++;                                                                       \
		if (cond) {                                                                    \
			printf("ok %d - ", tap_n);                                                 \
		} else {                                                                       \
			tap_failed++;                                                              \
			printf("not ok %d - %s:%d: ", tap_n, __FILE__, __LINE__);                  \
		}                                                                              \
		printf(__VA_ARGS__);                                                           \
		printf("\n");                                                                  \
		fflush(stdout); /* nothing buffered for a forked child to print again */       \
	} while (0)

#define TAP_SKIP(...)                                                                  \
	do {                                                                               \
		tap_n++;                                                                       \
		printf("ok %d - # SKIP ", tap_n);                                              \
		printf(__VA_ARGS__);                                                           \
		printf("\n");                                                                  \
		fflush(stdout); /* nothing buffered for a forked child to print again */       \
	} while (0)

static inline int tap_done(void)
{
	printf("1..%d\n", tap_n);
	return tap_failed ? 1 : 0;
}

#endif
