/* SPDX-License-Identifier: MIT */
/* A typed ring: ABD_RING_TYPED gives push/pop functions that take a `struct sample` and
 * nothing else, and the service records the type's name, size and layout hash, so a consumer
 * built against another definition of the struct is refused at open (-EPROTOTYPE) instead of
 * reading garbage.
 *
 *   typed-ring sub example.samples 1000 &
 *   typed-ring pub example.samples 1000
 *   typed-ring sub-v2 example.samples      (expects another layout: refused) */
#include <abd/abd.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECOND_NS 1000000000ll

struct sample {
	uint64_t seq;
	double value;
	uint32_t sensor;
	uint32_t check; /* seq * 2654435761, truncated: lets the consumer verify each sample */
};
/* sample_ring_push/pop/try_push/try_pop(struct abd_ring *, struct sample *, ...) */
ABD_RING_TYPED(sample_ring, struct sample)

/* The type's identity: a name, its size, and a hash of a description of its layout
 * (abd_service_type_hash: FNV-1a 64 of the string), the convention every binding follows:
 * the C++ layer's abd::service<T> and pubsub.cpp's `typed-*` modes give the same strings. */
#define SAMPLE_TYPE "example.sample"
#define SAMPLE_LAYOUT "u64 seq; f64 value; u32 sensor; u32 check"
#define SAMPLE_LAYOUT_V2 "u64 seq; f64 value; u64 sensor" /* what a newer consumer expects */

static struct abd_service_config sample_config(const char *layout)
{
	struct abd_service_config cfg = {0};
	cfg.capacity = 256;
	cfg.type_name = SAMPLE_TYPE;
	cfg.type_size = sizeof(struct sample); /* slot_size 0: the type's size */
	cfg.type_hash = abd_service_type_hash(layout);
	return cfg;
}

static int publish(const char *name, long count)
{
	struct abd_service_config cfg = sample_config(SAMPLE_LAYOUT);
	struct abd_service *svc;
	int r = abd_service_publish(name, &cfg, ABD_SERVICE_PRODUCER, &svc);
	if (r < 0) {
		fprintf(stderr, "typed pub: %s: %s\n", name, strerror(-r));
		return 1;
	}
	struct abd_service_stats st = {0};
	for (int i = 0; i < 1000 && (abd_service_stats(svc, &st) < 0 || st.consumers == 0); i++)
		(void)abd_reactor_run_once(abd_service_reactor(svc), SECOND_NS / 100);
	struct abd_ring *ring = abd_service_ring(svc);
	r = sample_ring_check_slot(ring); /* the slots hold a struct sample: -EMSGSIZE if not */
	for (long i = 0; i < count && r == 0; i++) {
		struct sample s = {.seq = (uint64_t)i, .value = (double)i / 8, .sensor = 7,
		                   .check = (uint32_t)((uint64_t)i * 2654435761u)};
		r = sample_ring_try_push(ring, &s); /* no syscall unless a consumer sleeps */
		if (r == -EAGAIN)
			r = sample_ring_push(ring, &s, 5 * SECOND_NS); /* full: wait for space */
	}
	if (r < 0)
		fprintf(stderr, "typed pub: push: %s\n", strerror(-r));
	else
		printf("typed pub: sent %ld samples\n", count);
	abd_service_close(svc);
	return r < 0;
}

static bool sample_ok(const struct sample *s, long expected_seq)
{
	return s->seq == (uint64_t)expected_seq && s->check == (uint32_t)(s->seq * 2654435761u);
}

static int subscribe(const char *name, long expect, const char *layout)
{
	struct abd_service_config cfg = sample_config(layout);
	struct abd_service *svc;
	int r = abd_service_open(name, &cfg, ABD_SERVICE_CONSUMER, 10 * SECOND_NS, &svc);
	if (r == -EPROTOTYPE) {
		printf("typed sub: %s carries another layout of %s: refused (EPROTOTYPE)\n", name,
		       SAMPLE_TYPE);
		return 3;
	}
	if (r < 0) {
		fprintf(stderr, "typed sub: %s: %s\n", name, strerror(-r));
		return 1;
	}
	struct abd_ring *ring = abd_service_ring(svc);
	long got = 0, bad = 0;
	struct sample s;
	for (;;) {
		/* The typed calls work on the ring itself, which knows nothing of the service's
		 * closed state: wait in slices and ask the service in between. */
		r = sample_ring_pop(ring, &s, SECOND_NS / 10);
		if (r == 0) {
			bad += !sample_ok(&s, got++);
			continue;
		}
		if (r != -ETIMEDOUT) {
			fprintf(stderr, "typed sub: pop: %s\n", strerror(-r));
			break;
		}
		(void)abd_reactor_run_once(abd_service_reactor(svc), 0); /* notices a death */
		if (abd_service_closed(svc) != 0) {
			while (sample_ring_try_pop(ring, &s) == 0) /* what is left */
				bad += !sample_ok(&s, got++);
			break;
		}
	}
	printf("typed sub: %ld samples, %ld out of order or corrupt\n", got, bad);
	abd_service_close(svc);
	return bad == 0 && (expect < 0 || got == expect) ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: typed-ring pub|sub|sub-v2 NAME [COUNT]\n");
		return 2;
	}
	long count = argc > 3 ? strtol(argv[3], NULL, 10) : -1;
	if (!strcmp(argv[1], "pub"))
		return publish(argv[2], count < 0 ? 1000 : count);
	if (!strcmp(argv[1], "sub"))
		return subscribe(argv[2], count, SAMPLE_LAYOUT);
	if (!strcmp(argv[1], "sub-v2"))
		return subscribe(argv[2], count, SAMPLE_LAYOUT_V2);
	fprintf(stderr, "typed-ring: unknown mode %s\n", argv[1]);
	return 2;
}
