/* SPDX-License-Identifier: MIT */
/* Broadcast channels: one publisher, a bounded number of subscribers, every subscriber gets
 * every message (docs/broadcast.md is the specification). Two memfds:
 *
 *   data     header, slots, payload pool. Written by the publisher only: it maps the file
 *            writable and then seals it with F_SEAL_FUTURE_WRITE, so that every other mapping
 *            is read-only (mmap PROT_WRITE: EPERM, mprotect: EACCES, write: EPERM).
 *   control  one entry per subscriber (its published cursor, the chunk it holds in place) and
 *            the wake words: writable by every subscriber, sealed against size changes.
 *
 * Leases are OFD locks on the control memfd (byte 0: the publisher, byte 64 + i: subscriber
 * i), taken through a description of the handle's own, as the ring's (ring-lease.c). Internal:
 * the service layer (service-bcast.c) is the public face. */
#ifndef ABD_RUNTIME_BCAST_INTERNAL_H
#define ABD_RUNTIME_BCAST_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"

#define ABD__BCAST_MAGIC "ABDBCST1"
#define ABD__BCAST_VERSION 1u
#define ABD__BCAST_HEADER_SIZE 512u
#define ABD__BCAST_CHECKSUM_OFF 88u /* FNV-1a 64 of the bytes before it */
#define ABD__BCAST_SLOT_SIZE 32u
#define ABD__BCAST_ENTRY_SIZE 64u
#define ABD__BCAST_CTL_HEADER 512u
#define ABD__BCAST_MAX_CAPACITY (1u << 16)
#define ABD__BCAST_MAX_SUBSCRIBERS 64u
#define ABD__BCAST_MAX_PAYLOAD (1u << 30)
/* What an attacher maps at most unless told otherwise. */
#define ABD__BCAST_ATTACH_MAX (UINT64_C(4) << 30)

enum abd__bcast_policy { ABD__BCAST_BLOCK = 0, ABD__BCAST_OVERWRITE = 1 };

struct abd__bcast_geom {
	uint32_t capacity;    /* slots: a power of two, 2 .. ABD__BCAST_MAX_CAPACITY */
	uint32_t subscribers; /* 1 .. ABD__BCAST_MAX_SUBSCRIBERS */
	uint32_t history;     /* < capacity: messages a late joiner still gets */
	uint32_t policy;      /* enum abd__bcast_policy */
	uint64_t max_payload; /* 1 .. ABD__BCAST_MAX_PAYLOAD */
};

/* attach flags */
enum { ABD__BCAST_SUBSCRIBER = 1u, ABD__BCAST_OBSERVER = 2u };

struct abd__bcast;

/* Publisher: create both memfds (nonce: 16 bytes). 0, -EINVAL, -EOPNOTSUPP (no
 * F_SEAL_FUTURE_WRITE), -ENOMEM, -errno. */
int abd__bcast_new(const struct abd__bcast_geom *g, const uint8_t *nonce,
                   struct abd__bcast **out);
/* Subscriber (or observer: no seat; the control file, if given, mapped read-only for the
 * statistics): both descriptors borrowed.
 * expect: the geometry the opener was told of (NULL: any), max_map: 0 = default limit.
 * 0, -EINVAL, -EPROTO (seals, size, header), -ESTALE (nonce), -EFBIG, -EUSERS (every entry
 * held by a live subscriber), -errno. */
int abd__bcast_attach(int data_fd, int ctl_fd, const uint8_t *nonce,
                      const struct abd__bcast_geom *expect, uint64_t max_map, unsigned flags,
                      struct abd__bcast **out);
void abd__bcast_free(struct abd__bcast *b);

int abd__bcast_data_fd(const struct abd__bcast *b);
int abd__bcast_ctl_fd(const struct abd__bcast *b);
const struct abd__bcast_geom *abd__bcast_geom(const struct abd__bcast *b);
bool abd__bcast_is_publisher(const struct abd__bcast *b);

/* Publisher. loan: a chunk of at least size bytes to write in place (one loan at a time:
 * -EBUSY); -EAGAIN when a BLOCK channel has no room (a live subscriber lags a whole lap),
 * -EMSGSIZE. send: publish len bytes of the loaned chunk. unloan: give it back unsent.
 * try_publish: loan + copy + send. */
int abd__bcast_loan(struct abd__bcast *b, size_t size, void **buf);
int abd__bcast_send(struct abd__bcast *b, const void *buf, size_t len);
int abd__bcast_unloan(struct abd__bcast *b, const void *buf);
int abd__bcast_try_publish(struct abd__bcast *b, const void *data, size_t len);
/* The publisher leaves: the closed word (1) and a wake of every sleeper. */
void abd__bcast_close(struct abd__bcast *b);
/* The publisher is alive (its lease on the control memfd): 1, 0, -errno. */
int abd__bcast_publisher_alive(struct abd__bcast *b);

/* Subscriber. try_recv: the next message into buf, its length; -EAGAIN none yet, -EPIPE
 * closed (closed word, or abd__bcast_set_closed) and drained, -EMSGSIZE (longer than size:
 * it stays), -EBADMSG (a slot the publisher garbled: skipped). Messages overwritten before
 * they were read (OVERWRITE, or a peer that forged cursors) are skipped and counted in lost.
 * peek: the next message in place (read-only) until release. */
int abd__bcast_try_recv(struct abd__bcast *b, void *buf, size_t size);
int abd__bcast_peek(struct abd__bcast *b, const void **data, size_t *len);
int abd__bcast_release(struct abd__bcast *b);
uint64_t abd__bcast_lost(const struct abd__bcast *b);
uint64_t abd__bcast_pos(const struct abd__bcast *b); /* the next message it reads */
/* This process learnt that the publisher left (the registry): drain, then -EPIPE. */
void abd__bcast_set_closed(struct abd__bcast *b);
bool abd__bcast_closed(const struct abd__bcast *b);

/* Waiting. prepare: announce, then re-check. Returns 1 when the caller may proceed (data to
 * read / room to publish: no sleep, nothing announced), 0 when it may sleep on *word while it
 * holds *value, for at most *tmo ns (< 0: no bound; a publisher waiting on a lagging
 * subscriber re-checks its lease that often). finish withdraws the announcement. */
int abd__bcast_wait_prepare(struct abd__bcast *b, const uint32_t **word, uint32_t *value,
                            int64_t *tmo);
void abd__bcast_wait_finish(struct abd__bcast *b);

struct abd__bcast_stats {
	uint64_t head;      /* messages published */
	uint64_t wakes;     /* wake syscalls the publisher made */
	uint64_t bytes;     /* payload bytes published */
	uint64_t last_len;  /* the newest message's length */
	uint64_t last_ns;   /* CLOCK_MONOTONIC of the newest message's send (0 none) */
	uint32_t subscribers; /* live subscribers (F_OFD_GETLK each; 0 for an observer) */
	uint32_t closed;
};
/* A snapshot from the data header (observer-safe: no write). */
void abd__bcast_stats(struct abd__bcast *b, struct abd__bcast_stats *out);

#endif
