/* SPDX-License-Identifier: MIT */
/* The service handle, shared by the service layer's files: service.c (registry, acquisition,
 * watch, events, waiting: everything a kind of channel has in common) and one file per kind
 * beside the ring's (service-bcast.c). A kind provides its channel's creation and attach, its
 * try forms, its wait announcement (a futex word to sleep on) and its statistics; service.c
 * dispatches on svc->kind, one predictable branch on the fast paths. */
#ifndef ABD_RUNTIME_SERVICE_INTERNAL_H
#define ABD_RUNTIME_SERVICE_INTERNAL_H

#include <abd/acquire.h>
#include <abd/registry.h>
#include <abd/service.h>
#include <stdbool.h>

#include "bcast-internal.h"
#include "internal.h"

enum abd__service_kind {
	ABD__SERVICE_RING = 0,  /* a work queue: abd.service = ring/2 */
	ABD__SERVICE_BCAST = 1, /* a broadcast channel: abd.service = bcast/1 (service-bcast.c) */
	ABD__SERVICE_RPC = 2,   /* request-response: abd.service = rpc/1 (service-rpc.c) */
};

/* Retry values of a candidate: docs/service.md. */
#define FAILED_MAX 16

struct abd_service {
	char name[ABD_SERVICE_MAX + 1];
	char record_name[ABD_RECORD_NAME_MAX + 1];
	char type_name[ABD_SERVICE_TYPE_MAX + 1];
	uint32_t type_size; /* the service's type size (0: variable) */
	uint64_t type_hash;
	uint32_t msg_size; /* every message of this handle has exactly this size (0: any) */
	bool publisher;
	unsigned roles; /* ABD_RING_PRODUCER / ABD_RING_CONSUMER bits; 0 for an observer */
	pid_t pub_pid;
	int closed; /* 0, -ESHUTDOWN or -ECONNRESET: what this handle learnt */
	int64_t hint_checked_ns; /* opener: when the registry last denied the header's closed word */

	struct abd_registry *reg;
	struct abd_reactor *reactor;
	bool own_reactor;
	/* the channel: exactly one of them, by kind */
	enum abd__service_kind kind;
	struct abd_ring *ring;
	struct abd__bcast *bc;
	/* request-response (service-rpc.c): the request ring is `ring`; the server's response
	 * file, or a client's view of it and the call a blocking wait is for (0: any) */
	struct abd__rpc_server *rpcs;
	struct abd__rpc_client *rpcc;
	uint64_t rpc_ticket;

	/* publisher */
	struct abd_publication *pub;
	struct abd_acquire_server *srv;
	struct abd_source *srv_src;

	/* opener */
	struct abd_watch *watch;
	struct abd_source *watch_src;
	bool changed; /* open: an event named our service */
	/* open: candidates that failed, passed over (lookup's skip list) until retry_ns (final:
	 * for the rest of the open) or until the registry says they left */
	struct failed_candidate {
		uint8_t instance[ABD_INSTANCE_SIZE];
		int64_t retry_ns;  /* INT64_MAX: failed for good */
		int64_t backoff_ns;
	} failed[FAILED_MAX];
	unsigned nfailed;
	int final_err; /* the first error of a candidate that failed for good */

	/* events */
	abd_service_event_fn *fn;
	void *ud;
	struct abd_source *closed_src;
	bool closed_delivered;
	bool in_event, close_pending;
	unsigned depth; /* blocking calls in progress (they may run the reactor) */
	/* READABLE */
	struct abd_source *rd_futex, *rd_timer, *rd_defer;
	bool rd_waiting;
	/* blocking push (SPACE) and pop (DATA) asleep in the reactor: io_uring FUTEX_WAIT sources
	 * on the ring's words, one-shot, fired[] set by their callback */
	struct abd_source *blk_src[2];
	bool blk_fired[2];
	bool blk_nofutex; /* the reactor could not make a futex source (no thread or eventfd) */

	/* publisher: on the list of this process's publications */
	uint8_t instance[ABD_INSTANCE_SIZE];
	struct abd_service *next_local;
};

/* service.c, for the kinds' files */
int64_t abd__service_now_ns(void);
int abd__service_add_meta_u64(struct abd_record *rec, const char *key, bool hex, uint64_t v);
bool abd__service_meta_u64(const struct abd_record *rec, const char *key, int base, uint64_t *v);
/* The blocking loop of every form: op until it stops saying -EAGAIN, waiting on the kind's
 * word in between (docs/service.md, "Waiting"). */
enum abd__service_op {
	ABD__OP_PUSH, ABD__OP_POP, ABD__OP_LOAN, ABD__OP_PEEK,
	ABD__OP_TAKE, ABD__OP_SEND, ABD__OP_ANSWER, /* request-response */
};
struct abd__service_args {
	const void *data;
	void *buf;
	size_t len;
	void **loan;
	const void **peek;
	size_t *peek_len;
	uint64_t *token; /* take: the token; send: the ticket; answer: the ticket */
};
int abd__service_blocking(struct abd_service *svc, enum abd__service_op op,
                          struct abd__service_args *a, int64_t timeout_ns);
bool abd__service_is_closed(struct abd_service *svc);

/* service-bcast.c */
int abd__sbc_create(struct abd_service *svc, const struct abd_service_config *cfg,
                    const struct abd_broadcast_opts *opts, unsigned flags, const uint8_t *nonce,
                    struct abd_record *rec);
#define ABD__SBC_PROTO "bcast/1"
/* the record's broadcast geometry: 0 and the largest message in *max_payload, or
 * -EPROTONOSUPPORT */
int abd__sbc_check_record(struct abd_service *svc, const struct abd_record *rec,
                          uint64_t *max_payload);
/* attach to the publisher's channel: its descriptors acquired (a), or its own handle in this
 * process (local) */
int abd__sbc_attach(struct abd_service *svc, const struct abd_record *rec,
                    const struct abd_acquired *a, const struct abd_service *local);
int abd__sbc_try_push(struct abd_service *svc, const void *data, size_t len);
int abd__sbc_try_pop(struct abd_service *svc, void *buf, size_t size);
int abd__sbc_wait_prepare(struct abd_service *svc, const uint32_t **word, uint32_t *value,
                          int64_t *tmo);
void abd__sbc_stats(const struct abd_service *svc, struct abd_service_stats *out);

/* service-rpc.c */
#define ABD__SRPC_PROTO "rpc/1"
struct abd__rpc_server;
struct abd__rpc_client;
int abd__srpc_create(struct abd_service *svc, const struct abd_service_config *cfg,
                     const struct abd_rpc_opts *opts, const uint8_t *nonce,
                     struct abd_record *rec);
/* the record's request-response geometry: 0 and the largest request, or -EPROTONOSUPPORT */
int abd__srpc_check_record(const struct abd_record *rec, uint64_t *max_request);
/* attach to the server's files: its descriptors acquired (a), or its own handle (local) */
int abd__srpc_attach(struct abd_service *svc, const struct abd_record *rec,
                     const struct abd_acquired *a, const struct abd_service *local);
void abd__srpc_free(struct abd_service *svc);
int abd__srpc_try_send(struct abd_service *svc, const void *data, size_t len, uint64_t *ticket);
int abd__srpc_try_answer(struct abd_service *svc, uint64_t ticket, void *buf, size_t size);
/* a client's wait: its mailbox word (1: the answer waited for is there already) */
int abd__srpc_wait_prepare(struct abd_service *svc, const uint32_t **word, uint32_t *value,
                           int64_t *tmo);
void abd__srpc_wait_finish(struct abd_service *svc);

#endif
