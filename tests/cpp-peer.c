/* SPDX-License-Identifier: MIT */
/* The C side of the C/C++ interoperation tests (tests/test-cpp.cpp): a typed service through
 * ABD_SERVICE_TYPED, the same struct and strings the C++ side gives abd::service<T> through
 * abd::message_type (tests/cpp-sample.h).
 *
 *   cpp-peer pub|sub|bpub|bsub DIR NAME COUNT [v2]
 *
 * pub: publish, wait for a consumer, push COUNT samples, close. sub: open, pop COUNT samples,
 * each checked, then expect -EPIPE once the publisher left. bpub and bsub: the same on a
 * broadcast service, through the typed macros' loan/send and peek/release (in place).
 * v2: the other layout of the type.
 * Exit: 0 done, 3 the open was refused with -EPROTOTYPE, 1 anything else (said on stderr). */
#include <abd/abd.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpp-sample.h"

#define SEC (1000ll * 1000 * 1000)

ABD_SERVICE_TYPED(sample_svc, struct cpp_sample, CPP_SAMPLE_NAME, CPP_SAMPLE_LAYOUT)
ABD_SERVICE_TYPED(sample_v2_svc, struct cpp_sample, CPP_SAMPLE_NAME, CPP_SAMPLE_LAYOUT_V2)

static int fail(const char *what, int e)
{
	fprintf(stderr, "cpp-peer: %s: %s\n", what, strerror(-e));
	return e == -EPROTOTYPE ? 3 : 1;
}

static int broadcast(bool pub, const char *name, const struct abd_service_config *cfg, long count)
{
	struct abd_service *svc;
	int e;
	if (pub) {
		struct abd_broadcast_opts opts = {0};
		opts.subscribers = 4;
		e = abd_service_publish_broadcast(name, cfg, &opts, ABD_SERVICE_PRODUCER, &svc);
		if (e < 0)
			return fail("publish_broadcast", e);
		struct abd_service_stats st = {0};
		for (int i = 0; i < 2000 && (abd_service_stats(svc, &st) < 0 || st.consumers == 0); i++)
			(void)abd_reactor_run_once(abd_service_reactor(svc), SEC / 100);
		for (long i = 0; i < count; i++) {
			struct cpp_sample *s;
			e = sample_svc_loan(svc, &s, 10 * SEC);
			if (e == 0) {
				*s = cpp_sample_make((uint64_t)i);
				e = sample_svc_send(svc, s);
			}
			if (e < 0) {
				abd_service_close(svc);
				return fail("loan/send", e);
			}
		}
		abd_service_close(svc);
		return 0;
	}
	e = abd_service_open(name, cfg, ABD_SERVICE_CONSUMER, 10 * SEC, &svc);
	if (e < 0)
		return fail("open", e);
	if (abd_service_is_broadcast(svc) != 1) {
		abd_service_close(svc);
		return fail("open (not a broadcast service)", -EPROTONOSUPPORT);
	}
	for (long i = 0; i < count; i++) {
		const struct cpp_sample *s;
		e = sample_svc_peek(svc, &s, 10 * SEC);
		if (e < 0) {
			abd_service_close(svc);
			return fail("peek", e);
		}
		bool ok = cpp_sample_ok(s, (uint64_t)i);
		(void)abd_service_release(svc);
		if (!ok) {
			fprintf(stderr, "cpp-peer: sample %ld is wrong\n", i);
			abd_service_close(svc);
			return 1;
		}
	}
	const struct cpp_sample *s;
	e = sample_svc_peek(svc, &s, 10 * SEC);
	int64_t lost = abd_service_lost(svc);
	abd_service_close(svc);
	if (e != -EPIPE)
		return fail("peek after the last sample (expected EPIPE)", e == 0 ? -EEXIST : e);
	if (lost != 0) {
		fprintf(stderr, "cpp-peer: %lld messages lost\n", (long long)lost);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: cpp-peer pub|sub|bpub|bsub DIR NAME COUNT [v2]\n");
		return 2;
	}
	bool v2 = argc > 5 && !strcmp(argv[5], "v2");
	long count = strtol(argv[4], NULL, 10);
	struct abd_service_config cfg = {0};
	cfg.dir = argv[2];
	cfg.capacity = 16;
	if (v2)
		sample_v2_svc_set_type(&cfg);
	else
		sample_svc_set_type(&cfg);
	struct abd_service *svc;
	int e;
	if (!strcmp(argv[1], "bpub") || !strcmp(argv[1], "bsub"))
		return broadcast(argv[1][1] == 'p', argv[3], &cfg, count);
	if (!strcmp(argv[1], "pub")) {
		e = abd_service_publish(argv[3], &cfg, ABD_SERVICE_PRODUCER, &svc);
		if (e < 0)
			return fail("publish", e);
		struct abd_service_stats st = {0};
		for (int i = 0; i < 2000 && (abd_service_stats(svc, &st) < 0 || st.consumers == 0); i++)
			(void)abd_reactor_run_once(abd_service_reactor(svc), SEC / 100);
		for (long i = 0; i < count; i++) {
			struct cpp_sample s = cpp_sample_make((uint64_t)i);
			e = sample_svc_push(svc, &s, 10 * SEC);
			if (e < 0) {
				abd_service_close(svc);
				return fail("push", e);
			}
		}
		abd_service_close(svc);
		return 0;
	}
	e = abd_service_open(argv[3], &cfg, ABD_SERVICE_CONSUMER, 10 * SEC, &svc);
	if (e < 0)
		return fail("open", e);
	for (long i = 0; i < count; i++) {
		struct cpp_sample s;
		e = sample_svc_pop(svc, &s, 10 * SEC);
		if (e < 0) {
			abd_service_close(svc);
			return fail("pop", e);
		}
		if (!cpp_sample_ok(&s, (uint64_t)i)) {
			fprintf(stderr, "cpp-peer: sample %ld is wrong (seq %llu)\n", i,
			        (unsigned long long)s.seq);
			abd_service_close(svc);
			return 1;
		}
	}
	struct cpp_sample s;
	e = sample_svc_pop(svc, &s, 10 * SEC);
	abd_service_close(svc);
	if (e != -EPIPE)
		return fail("pop after the last sample (expected EPIPE)", e);
	return 0;
}
