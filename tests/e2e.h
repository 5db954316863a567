/* SPDX-License-Identifier: MIT */
/* The end-to-end test's shared state: a file in the scratch directory that the driver
 * (tests/test-e2e.c) and every peer (tests/e2e-peer.c) map. Counters only move forward; the
 * per-message byte counts say how often each message was received. */
#ifndef ABD_TESTS_E2E_H
#define ABD_TESTS_E2E_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define E2E_PRODUCERS 4
#define E2E_CONSUMERS 4
#define E2E_PAYLOAD 40

struct e2e_msg {
	uint32_t producer;
	uint32_t seq;
	uint8_t payload[E2E_PAYLOAD];
	uint64_t check; /* FNV-1a of everything before it */
};

struct e2e_peer_stat {
	uint64_t starts;   /* times this peer (re)started */
	uint64_t messages; /* messages it sent or received, over all its lives */
	int32_t backend;   /* its reactor's backend (enum abd_backend) */
	int32_t pidfd_getfd; /* abd_probe_has(ABD_FEAT_PIDFD_GETFD) in it */
	int32_t emulated;  /* it ran under an emulated profile (ABD_PROFILE set, not native) */
	int32_t pad;
};

struct e2e_ctl {
	uint32_t quota;   /* messages per producer */
	uint32_t closing; /* the driver is about to close the service: peers may stop */
	uint32_t go;      /* producers start once the driver has seen every consumer join */
	uint32_t limit;   /* producers push sequence numbers below this only: the driver raises it
	                   * kill by kill, so a fast run cannot outpace its kill schedule */
	uint32_t joined;  /* consumer opens so far */
	uint64_t received;
	uint64_t corrupt;  /* checksum or range failures seen by consumers */
	uint64_t bad_pops; /* pop errors other than the expected ones */
	uint32_t next[E2E_PRODUCERS]; /* producer i's next sequence number (stored before pushing) */
	struct e2e_peer_stat prod[E2E_PRODUCERS], cons[E2E_CONSUMERS];
	uint8_t seen[]; /* quota * E2E_PRODUCERS counters */
};

static inline uint64_t e2e_fnv(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * UINT64_C(0x100000001b3);
	return h;
}

static inline void e2e_fill(struct e2e_msg *m, uint32_t producer, uint32_t seq)
{
	m->producer = producer;
	m->seq = seq;
	uint64_t x = ((uint64_t)producer << 32 | seq) * UINT64_C(0x9e3779b97f4a7c15);
	for (int i = 0; i < E2E_PAYLOAD; i++) {
		x ^= x >> 29;
		x *= UINT64_C(0xbf58476d1ce4e5b9);
		m->payload[i] = (uint8_t)(x >> 56);
	}
	m->check = e2e_fnv(m, offsetof(struct e2e_msg, check));
}

static inline int e2e_valid(const struct e2e_msg *m, uint32_t quota)
{
	if (m->producer >= E2E_PRODUCERS || m->seq >= quota)
		return 0;
	struct e2e_msg want;
	e2e_fill(&want, m->producer, m->seq);
	return want.check == m->check && memcmp(want.payload, m->payload, E2E_PAYLOAD) == 0;
}

#endif
