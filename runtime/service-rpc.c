/* SPDX-License-Identifier: MIT */
/* Request-response services: the request ring and the response file (rpc.c) as a kind of
 * service. service.c does the registry, the acquisition, the watch, the closed state, the
 * events and the waiting; this file creates and attaches the two files, states their
 * geometry in the record, and implements take/reply (the server) and call (a client).
 * docs/rpc.md. The channel is svc->ring (the requests: the server is its single consumer,
 * each client a producer) and svc->rpcs (server) or svc->rpcc (client). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ring-internal.h"
#include "rpc-internal.h"
#include "service-internal.h"

/* bad requests a try_take drops before it says -EAGAIN: a flood of them costs the server
 * their count, in bounded steps */
#define TAKE_BAD_MAX 64

int abd__srpc_create(struct abd_service *svc, const struct abd_service_config *cfg,
                     const struct abd_rpc_opts *opts, const uint8_t *nonce,
                     struct abd_record *rec)
{
	static const struct abd_rpc_opts defaults;
	if (!opts)
		opts = &defaults;
	abd__check(!opts->reserved[0] && !opts->reserved[1] && !opts->reserved[2], -EINVAL);
	uint32_t cap = cfg->capacity ? cfg->capacity : ABD_SERVICE_DEFAULT_CAPACITY;
	uint32_t req = cfg->slot_size   ? cfg->slot_size
	               : cfg->type_size ? cfg->type_size
	                                : ABD_SERVICE_DEFAULT_SLOT_SIZE;
	uint32_t resp = opts->response_size ? opts->response_size : req;
	uint32_t cells = opts->in_flight ? opts->in_flight : ABD_RPC_DEFAULT_IN_FLIGHT;
	abd__check(req <= ABD_RING_MAX_SLOT_SIZE - ABD__RPC_REQ_HDR &&
	                   resp <= ABD_RING_MAX_SLOT_SIZE && cells <= ABD_RPC_MAX_IN_FLIGHT,
	           -EINVAL);
	svc->roles = ABD_RING_CONSUMER;
	int r = abd_ring_new(cap, req + ABD__RPC_REQ_HDR,
	                     ABD_RING_CONSUMER | ABD_RING_SINGLE_CONSUMER, nonce, &svc->ring);
	if (r == 0)
		r = abd__rpc_server_new(svc->ring, cells, resp, &svc->rpcs);
	if (r == 0)
		r = abd_record_add_fd(rec, "ring", abd_ring_fd(svc->ring), ABD_FD_MEMFD);
	/* the response file is checked by the client itself (rpc.c: seals, size, header, nonce) */
	if (r == 0)
		r = abd_record_add_fd(rec, "responses", abd__rpc_server_fd(svc->rpcs), ABD_FD_OTHER);
	if (r == 0)
		r = abd_record_add_meta(rec, "abd.service", ABD__SRPC_PROTO);
	if (r == 0)
		r = abd__service_add_meta_u64(rec, "abd.capacity", false, cap);
	if (r == 0)
		r = abd__service_add_meta_u64(rec, "abd.slot_size", false, req);
	if (r == 0)
		r = abd__service_add_meta_u64(rec, "abd.response_size", false, resp);
	if (r == 0)
		r = abd__service_add_meta_u64(rec, "abd.in_flight", false, cells);
	return r;
}

/* The geometry a record declares, checked: 0 or -EPROTONOSUPPORT. */
static int record_geom(const struct abd_record *rec, uint64_t *cap, uint64_t *req)
{
	uint64_t resp, cells;
	if (!abd__service_meta_u64(rec, "abd.capacity", 10, cap) ||
	    !abd__service_meta_u64(rec, "abd.slot_size", 10, req) ||
	    !abd__service_meta_u64(rec, "abd.response_size", 10, &resp) ||
	    !abd__service_meta_u64(rec, "abd.in_flight", 10, &cells) || *cap < 2 ||
	    *cap > ABD_RING_MAX_CAPACITY || (*cap & (*cap - 1)) || *req < 1 ||
	    *req > ABD_RING_MAX_SLOT_SIZE - ABD__RPC_REQ_HDR || resp < 1 ||
	    resp > ABD_RING_MAX_SLOT_SIZE || cells < 1 || cells > ABD_RPC_MAX_IN_FLIGHT)
		return -EPROTONOSUPPORT;
	return 0;
}

int abd__srpc_check_record(const struct abd_record *rec, uint64_t *max_request)
{
	uint64_t cap;
	return record_geom(rec, &cap, max_request);
}

int abd__srpc_attach(struct abd_service *svc, const struct abd_record *rec,
                     const struct abd_acquired *a, const struct abd_service *local)
{
	if (svc->roles == ABD_RING_CONSUMER)
		return -EPERM; /* the server is the requests' one consumer; an opener calls */
	uint64_t cap, req;
	int r = record_geom(rec, &cap, &req);
	if (r < 0)
		return r;
	int ring = local ? abd_ring_fd(local->ring) : abd_acquired_fd(a, "ring");
	int resp = local ? abd__rpc_server_fd(local->rpcs) : abd_acquired_fd(a, "responses");
	if (ring < 0 || resp < 0)
		return -EPROTONOSUPPORT;
	struct abd_ring_attach_opts lim = { .capacity = (uint32_t)cap,
		                            .slot_size = (uint32_t)req + ABD__RPC_REQ_HDR };
	r = abd_ring_attach_opts(ring, -1, abd_record_instance(rec), ABD_RING_PRODUCER, &lim,
	                         &svc->ring);
	if (r == 0 && !svc->roles) /* an observer: counted by nobody */
		abd__store(&svc->ring->leases[svc->ring->lease].roles, 0u, RELAXED);
	if (r == 0 && svc->roles)
		r = abd__rpc_client_new(svc->ring, resp, &svc->rpcc);
	if (r == 0 && svc->roles)
		svc->roles = ABD_RING_PRODUCER;
	if (r < 0) {
		abd_ring_free(svc->ring);
		svc->ring = NULL;
	}
	return r;
}

void abd__srpc_free(struct abd_service *svc)
{
	abd__rpc_server_free(svc->rpcs);
	abd__rpc_client_free(svc->rpcc);
	svc->rpcs = NULL;
	svc->rpcc = NULL;
}

int abd__srpc_wait_prepare(struct abd_service *svc, const uint32_t **word, uint32_t *value,
                           int64_t *tmo)
{
	*word = abd__rpc_futex(svc->rpcc);
	abd__rpc_announce(svc->rpcc, true); /* withdrawn by abd__srpc_wait_finish */
	*value = abd__load(*word, SEQ_CST);
	*tmo = -1;
	/* after the value: an answer written since is either seen here or moves the word */
	if (!abd__rpc_ready(svc->rpcc, svc->rpc_ticket))
		return 0;
	abd__srpc_wait_finish(svc);
	return 1;
}

/* The announcement stays while a READABLE wait is armed on the word: a blocking wait that ends
 * meanwhile must not withdraw it. (READABLE's own end leaves it set until the next wait: a
 * spare wake per answer at worst, never a missing one.) */
void abd__srpc_wait_finish(struct abd_service *svc)
{
	abd__rpc_announce(svc->rpcc, svc->rd_waiting);
}

/* ------------------------------------------------------------------ server -- */

static bool server(const struct abd_service *svc)
{
	return svc->kind == ABD__SERVICE_RPC && svc->rpcs;
}

static bool client(const struct abd_service *svc)
{
	return svc->kind == ABD__SERVICE_RPC && svc->rpcc;
}

int abd_service_try_take(struct abd_service *svc, void *buf, size_t size, uint64_t *token)
{
	abd__check(svc && token && (buf || !size), -EINVAL);
	if (!server(svc))
		return -EPERM;
	if (abd__service_is_closed(svc))
		return -EPIPE;
	int r = -EAGAIN;
	for (int i = 0; i < TAKE_BAD_MAX; i++) {
		r = abd__rpc_take(svc->rpcs, buf, size, token);
		if (r != -EBADMSG)
			break;
		r = -EAGAIN;
	}
	return r;
}

int abd_service_take(struct abd_service *svc, void *buf, size_t size, uint64_t *token,
                     int64_t timeout_ns)
{
	abd__check(svc && token && (buf || !size), -EINVAL);
	return abd__service_blocking(
		svc, ABD__OP_TAKE,
		&(struct abd__service_args){ .buf = buf, .len = size, .token = token }, timeout_ns);
}

int abd_service_reply(struct abd_service *svc, uint64_t token, const void *data, size_t len)
{
	abd__check(svc && (data || !len), -EINVAL);
	if (!server(svc))
		return -EPERM;
	return abd__rpc_reply(svc->rpcs, token, data, len, 0);
}

int abd_service_reply_error(struct abd_service *svc, uint64_t token, int error)
{
	abd__check(svc && error < 0 && error > -4096, -EINVAL);
	if (!server(svc))
		return -EPERM;
	return abd__rpc_reply(svc->rpcs, token, NULL, 0, error);
}

/* ------------------------------------------------------------------ client -- */

int abd__srpc_try_send(struct abd_service *svc, const void *data, size_t len, uint64_t *ticket)
{
	if (!client(svc))
		return -EPERM;
	if (svc->msg_size && len != svc->msg_size)
		return -EMSGSIZE;
	if (abd__service_is_closed(svc))
		return -EPIPE;
	return abd__rpc_send(svc->rpcc, data, len, ticket);
}

int abd__srpc_try_answer(struct abd_service *svc, uint64_t ticket, void *buf, size_t size)
{
	if (!client(svc))
		return -EPERM;
	int r = abd__rpc_poll(svc->rpcc, ticket, buf, size);
	if (r == -EAGAIN && abd__service_is_closed(svc)) {
		/* the server left: this answer will never come */
		abd__rpc_cancel(svc->rpcc, ticket);
		r = -EPIPE;
	}
	return r;
}

int abd_service_call_send(struct abd_service *svc, const void *req, size_t len,
                          uint64_t *ticket, int64_t timeout_ns)
{
	abd__check(svc && ticket && (req || !len), -EINVAL);
	return abd__service_blocking(
		svc, ABD__OP_SEND,
		&(struct abd__service_args){ .data = req, .len = len, .token = ticket }, timeout_ns);
}

int abd_service_call_poll(struct abd_service *svc, uint64_t ticket, void *resp, size_t size)
{
	abd__check(svc && (resp || !size), -EINVAL);
	return abd__srpc_try_answer(svc, ticket, resp, size);
}

int abd_service_call_wait(struct abd_service *svc, uint64_t ticket, void *resp, size_t size,
                          int64_t timeout_ns)
{
	abd__check(svc && (resp || !size), -EINVAL);
	if (!client(svc))
		return -EPERM;
	uint64_t saved = svc->rpc_ticket;
	svc->rpc_ticket = ticket;
	int r = abd__service_blocking(
		svc, ABD__OP_ANSWER,
		&(struct abd__service_args){ .buf = resp, .len = size, .token = &ticket }, timeout_ns);
	if (r == -ECANCELED)
		return r; /* the handle is gone */
	svc->rpc_ticket = saved;
	/* given up: a late answer is dropped (rpc.c), never delivered to a later call */
	if (r == -ETIMEDOUT)
		abd__rpc_cancel(svc->rpcc, ticket);
	return r;
}

int abd_service_call_cancel(struct abd_service *svc, uint64_t ticket)
{
	abd__check(svc, -EINVAL);
	if (!client(svc))
		return -EPERM;
	return abd__rpc_cancel(svc->rpcc, ticket);
}

int abd_service_call(struct abd_service *svc, const void *req, size_t len, void *resp,
                     size_t size, int64_t timeout_ns)
{
	abd__check(svc && (req || !len) && (resp || !size), -EINVAL);
	int64_t deadline = timeout_ns > 0 ? abd__service_now_ns() + timeout_ns : timeout_ns;
	uint64_t ticket;
	int r = abd_service_call_send(svc, req, len, &ticket, timeout_ns);
	if (r < 0)
		return r;
	int64_t left = deadline > 0 ? deadline - abd__service_now_ns() : deadline;
	if (deadline > 0 && left <= 0)
		left = 1; /* the deadline passed while sending: look once more */
	r = abd_service_call_wait(svc, ticket, resp, size, left);
	if (r == -ECANCELED)
		return r; /* the handle is gone */
	/* the caller has no ticket to wait again with: a call that did not end ends here (a
	 * later answer is dropped) */
	if (r < 0)
		(void)abd__rpc_cancel(svc->rpcc, ticket);
	return r == -EAGAIN ? -ETIMEDOUT : r; /* -EAGAIN: timeout 0, no answer at once */
}

int abd_service_is_rpc(const struct abd_service *svc)
{
	abd__check(svc, -EINVAL);
	return svc->kind == ABD__SERVICE_RPC;
}
