/* SPDX-License-Identifier: MIT */
/* Request-response on top of a ring (docs/rpc.md is the specification).
 *
 * Requests travel from clients to the server through an ordinary ring (ring.c), each with a
 * small header naming the caller's mailbox; responses come back through a second memfd, the
 * *response file*, that only the server can write: it maps it writable, then seals it with
 * F_SEAL_FUTURE_WRITE, so that every other holder can map it read-only and nothing more. Each
 * participant lease of the request ring owns one mailbox of `cells` response cells and a futex
 * word the client sleeps on. The service layer (service.c) publishes and opens the two
 * descriptors; this file knows nothing of the registry. */
#ifndef ABD_RUNTIME_RPC_INTERNAL_H
#define ABD_RUNTIME_RPC_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ring-internal.h"

#define ABD__RPC_MAGIC UINT64_C(0x3152435052444241) /* "ABDRPCR1" in little-endian bytes */
#define ABD__RPC_VERSION 1u
#define ABD__RPC_HEADER_SIZE 128u
#define ABD__RPC_MAILBOX_HDR 64u
#define ABD__RPC_CELL_HDR 32u
#define ABD__RPC_CELLS_DEFAULT 8u
#define ABD__RPC_CELLS_MAX 64u
#define ABD__RPC_REQ_HDR 24u
/* the most a response file may be (a client maps it: the size is the server's choice) */
#define ABD__RPC_MAX_SIZE ((uint64_t)1 << 30)

/* The response file's header (line 0-1, written once by the server before sealing). */
struct abd__rpc_hdr {
	uint64_t magic;
	uint32_t version;
	uint32_t header_size;
	uint8_t nonce[16];      /* the request ring's nonce: binds the two files */
	uint32_t mailboxes;     /* = the request ring's lease count */
	uint32_t cells;         /* per mailbox, 1 .. ABD__RPC_CELLS_MAX */
	uint32_t cell_size;     /* largest response */
	uint32_t cell_stride;   /* round_up(32 + cell_size, 64) */
	uint64_t mailbox_stride; /* 64 + cells * cell_stride */
	uint64_t reserved0;     /* zero */
	uint64_t total_size;    /* 128 + mailboxes * mailbox_stride (offset 64, as in a ring) */
	uint64_t checksum;      /* FNV-1a 64 of bytes 0..71 */
	uint8_t pad[128 - 80];
};
_Static_assert(sizeof(struct abd__rpc_hdr) == ABD__RPC_HEADER_SIZE, "two lines");
_Static_assert(offsetof(struct abd__rpc_hdr, total_size) == 64, "the size where a ring has it");
_Static_assert(offsetof(struct abd__rpc_hdr, checksum) == 72, "checksum after 72 bytes");

/* Line 0 of a mailbox: the word its client sleeps on, bumped after every response written
 * into the mailbox; responses: how many were written (statistics). */
struct abd__rpc_mailbox {
	uint32_t futex;
	uint32_t pad0;
	uint64_t responses;
	uint8_t pad[48];
};
_Static_assert(sizeof(struct abd__rpc_mailbox) == ABD__RPC_MAILBOX_HDR, "one line");

/* A response cell. seq is a seqlock: odd while the server writes the cell, even once done. */
struct abd__rpc_cell {
	uint32_t seq;
	uint32_t gen;    /* the generation the request named */
	uint64_t id;     /* the request id the response answers */
	uint32_t len;
	int32_t status;  /* 0, or the -errno the server answered with */
	uint64_t pad;
	unsigned char data[];
};
_Static_assert(sizeof(struct abd__rpc_cell) == ABD__RPC_CELL_HDR, "32-byte cell header");

/* The request header, in front of every request's payload in the ring. */
enum { ABD__RPC_REQ_WAKE = 1 }; /* the caller may sleep: wake its mailbox word */
struct abd__rpc_req {
	uint32_t slot;  /* the caller's mailbox: its lease in the request ring */
	uint32_t gen;   /* that lease's generation as the caller read it */
	uint64_t id;    /* the caller's request id; its low 8 bits are the cell */
	uint16_t flags; /* ABD__RPC_REQ_* */
	uint16_t pad0;
	uint32_t pad1;
};
_Static_assert(sizeof(struct abd__rpc_req) == ABD__RPC_REQ_HDR, "24-byte request header");

static inline uint64_t abd__rpc_checksum(const void *hdr)
{
	const unsigned char *p = hdr;
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	for (size_t i = 0; i < offsetof(struct abd__rpc_hdr, checksum); i++)
		h = (h ^ p[i]) * UINT64_C(0x100000001b3);
	return h;
}

static inline uint32_t abd__rpc_cell_stride(uint32_t cell_size)
{
	return (uint32_t)((ABD__RPC_CELL_HDR + (uint64_t)cell_size + 63) & ~UINT64_C(63));
}

struct abd__rpc_server;
struct abd__rpc_client;

/* ---- server (rpc.c) ---- */

/* A response file for the requests of `ring` (the server's consumer handle, borrowed: it must
 * outlive the server), `cells` per mailbox (0: ABD__RPC_CELLS_DEFAULT) of up to resp_size
 * bytes. 0, -EINVAL, -ENOMEM, or a memfd/seal error. */
int abd__rpc_server_new(struct abd_ring *ring, uint32_t cells, uint32_t resp_size,
                        struct abd__rpc_server **out);
void abd__rpc_server_free(struct abd__rpc_server *s);
/* The response file (owned by s): hand it to clients. */
int abd__rpc_server_fd(const struct abd__rpc_server *s);
/* Take one request: its payload length, and *token for the reply; -EAGAIN none waiting;
 * -EBADMSG a malformed request was dropped (call again); -EMSGSIZE its payload is larger than
 * size (it is kept: call again with a larger buffer); the ring's other errors. */
int abd__rpc_take(struct abd__rpc_server *s, void *buf, size_t size, uint64_t *token);
/* Answer the request of token: 0; -ESTALE a newer request of the same caller's cell was taken
 * since (the caller gave this one up): nothing written; -EMSGSIZE len > the cell size;
 * -EINVAL a token this server never gave. status: 0 or a -errno the caller receives. */
int abd__rpc_reply(struct abd__rpc_server *s, uint64_t token, const void *data, size_t len,
                   int status);
/* Counters: malformed requests dropped, stale replies dropped. */
void abd__rpc_server_counts(const struct abd__rpc_server *s, uint64_t *bad, uint64_t *stale);

/* ---- client (rpc.c) ---- */

/* Map the response file resp_fd (borrowed: not kept) of the requests of `ring` (the client's
 * producer handle, borrowed: it must outlive the client). Checks the seals (shrink, grow,
 * future write, seal), the size (at most ABD__RPC_MAX_SIZE) and a private copy of the header
 * (the nonce must be the ring's) before any other use, and never pre-faults.
 * 0, -EINVAL, -EPROTO, -ESTALE (nonce), -EFBIG, -ENOMEM. */
int abd__rpc_client_new(struct abd_ring *ring, int resp_fd, struct abd__rpc_client **out);
void abd__rpc_client_free(struct abd__rpc_client *c);
/* Send a request: 0 and *ticket; -EBUSY every cell is in flight; -EMSGSIZE too long for the
 * ring; -EAGAIN the ring is full (nothing sent); the ring's other errors. */
int abd__rpc_send(struct abd__rpc_client *c, const void *data, size_t len, uint64_t *ticket);
/* The response of ticket, if it came: its length (copied into buf), the server's negative
 * status, -EAGAIN not yet, -EMSGSIZE longer than size (it stays: poll again with more room),
 * -EINVAL not a ticket in flight. A response ends the ticket. */
int abd__rpc_poll(struct abd__rpc_client *c, uint64_t ticket, void *buf, size_t size);
/* Say (true) that the client may sleep on its word from now on, so that the server wakes it
 * after an answer, or (false) that it does not: before looking at its cells, and after. */
void abd__rpc_announce(struct abd__rpc_client *c, bool asleep);
/* Whether the answer of ticket (0: of any ticket in flight) has come, without taking it. */
bool abd__rpc_ready(const struct abd__rpc_client *c, uint64_t ticket);
/* Give up a ticket: a response that comes later is never delivered. 0 or -EINVAL. */
int abd__rpc_cancel(struct abd__rpc_client *c, uint64_t ticket);
/* Tickets in flight. */
unsigned abd__rpc_in_flight(const struct abd__rpc_client *c);
/* The client's own mailbox word: read it, poll, and sleep on it with that value. */
const uint32_t *abd__rpc_futex(const struct abd__rpc_client *c);
/* This client's mailbox (its lease in the request ring) and generation. */
unsigned abd__rpc_slot(const struct abd__rpc_client *c);

/* Sleep on `word` while it holds `value`, at most ns (< 0: no limit): 0 (woken, or a reason to
 * look again) or -errno to end the wait (-EINTR, -EPIPE, ...). */
typedef int abd__rpc_sleep_fn(void *arg, const uint32_t *word, uint32_t value, int64_t ns);
/* Wait for ticket's response until deadline (CLOCK_MONOTONIC ns; < 0 none): as poll, or
 * -ETIMEDOUT (the ticket is given up), or sleep's error (the ticket stays in flight). sleep
 * NULL: a plain FUTEX_WAIT. Bounded: a burst of wake-ups for nothing (forged requests naming
 * this mailbox) makes it nap, never spin. */
int abd__rpc_wait(struct abd__rpc_client *c, uint64_t ticket, void *buf, size_t size,
                  int64_t deadline, abd__rpc_sleep_fn *sleep, void *arg);

#endif
