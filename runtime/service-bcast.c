/* SPDX-License-Identifier: MIT */
/* Broadcast services: the broadcast channel (bcast.c) as a kind of service. service.c does
 * the registry, the acquisition, the watch, the events and the waiting; this file creates and
 * attaches the channel, states its geometry in the record and implements the kind's try
 * forms, loans and in-place reads. docs/broadcast.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ring-internal.h"
#include "service-internal.h"

#define DEFAULT_PAYLOAD 256u

static const char *policy_name(uint32_t p)
{
	return p == ABD__BCAST_OVERWRITE ? "overwrite" : "block";
}

int abd__sbc_create(struct abd_service *svc, const struct abd_service_config *cfg,
                    const struct abd_broadcast_opts *opts, abd__unused unsigned flags,
                    const uint8_t *nonce, struct abd_record *rec)
{
	static const struct abd_broadcast_opts defaults;
	if (!opts)
		opts = &defaults;
	abd__check(!opts->reserved0 && !opts->reserved[0] && !opts->reserved[1] &&
	                   !opts->reserved[2] && !opts->reserved[3],
	           -EINVAL);
	uint32_t cap = cfg->capacity ? cfg->capacity : ABD_SERVICE_DEFAULT_CAPACITY;
	struct abd__bcast_geom g = {
		.capacity = cap,
		.subscribers = opts->subscribers ? opts->subscribers : ABD_BROADCAST_DEFAULT_SUBSCRIBERS,
		.history = opts->history,
		.policy = opts->policy,
		.max_payload = cfg->slot_size   ? cfg->slot_size
		               : cfg->type_size ? cfg->type_size
		                                : DEFAULT_PAYLOAD,
	};
	abd__check(g.subscribers <= ABD_BROADCAST_MAX_SUBSCRIBERS && g.history < cap &&
	                   g.policy <= ABD_BROADCAST_OVERWRITE,
	           -EINVAL);
	int r = abd__bcast_new(&g, nonce, &svc->bc);
	if (r == 0)
		r = abd_record_add_fd(rec, "data", abd__bcast_data_fd(svc->bc), ABD_FD_MEMFD);
	if (r == 0)
		r = abd_record_add_fd(rec, "control", abd__bcast_ctl_fd(svc->bc), ABD_FD_OTHER);
	if (r == 0)
		r = abd_record_add_meta(rec, "abd.service", ABD__SBC_PROTO);
	if (r == 0)
		r = abd__service_add_meta_u64(rec, "abd.capacity", false, g.capacity);
	if (r == 0)
		r = abd__service_add_meta_u64(rec, "abd.slot_size", false, g.max_payload);
	if (r == 0)
		r = abd__service_add_meta_u64(rec, "abd.subscribers", false, g.subscribers);
	if (r == 0)
		r = abd__service_add_meta_u64(rec, "abd.history", false, g.history);
	if (r == 0)
		r = abd_record_add_meta(rec, "abd.policy", policy_name(g.policy));
	return r;
}

/* The geometry a record declares, checked: 0 or -EPROTONOSUPPORT. */
static int record_geom(const struct abd_record *rec, struct abd__bcast_geom *g)
{
	uint64_t cap, slot, subs, hist;
	const char *pol = abd_record_meta(rec, "abd.policy");
	if (!abd__service_meta_u64(rec, "abd.capacity", 10, &cap) ||
	    !abd__service_meta_u64(rec, "abd.slot_size", 10, &slot) ||
	    !abd__service_meta_u64(rec, "abd.subscribers", 10, &subs) ||
	    !abd__service_meta_u64(rec, "abd.history", 10, &hist) || !pol ||
	    (strcmp(pol, "block") != 0 && strcmp(pol, "overwrite") != 0) || cap < 2 ||
	    cap > ABD__BCAST_MAX_CAPACITY || (cap & (cap - 1)) || slot < 1 ||
	    slot > ABD__BCAST_MAX_PAYLOAD || subs < 1 || subs > ABD__BCAST_MAX_SUBSCRIBERS ||
	    hist >= cap)
		return -EPROTONOSUPPORT;
	*g = (struct abd__bcast_geom){ .capacity = (uint32_t)cap, .subscribers = (uint32_t)subs,
		                       .history = (uint32_t)hist,
		                       .policy = strcmp(pol, "overwrite") == 0 ? ABD__BCAST_OVERWRITE
		                                                               : ABD__BCAST_BLOCK,
		                       .max_payload = slot };
	return 0;
}

int abd__sbc_check_record(abd__unused struct abd_service *svc, const struct abd_record *rec,
                          uint64_t *max_payload)
{
	struct abd__bcast_geom g;
	int r = record_geom(rec, &g);
	if (r == 0)
		*max_payload = g.max_payload;
	return r;
}

int abd__sbc_attach(struct abd_service *svc, const struct abd_record *rec,
                    const struct abd_acquired *a, const struct abd_service *local)
{
	if (svc->roles == ABD_RING_PRODUCER)
		return -EPERM; /* the publisher is the one producer */
	struct abd__bcast_geom g;
	int r = record_geom(rec, &g);
	if (r < 0)
		return r;
	unsigned flags = svc->roles ? ABD__BCAST_SUBSCRIBER : ABD__BCAST_OBSERVER;
	int data = local ? abd__bcast_data_fd(local->bc) : abd_acquired_fd(a, "data");
	int ctl = local ? abd__bcast_ctl_fd(local->bc) : abd_acquired_fd(a, "control");
	if (data < 0 || (flags == ABD__BCAST_SUBSCRIBER && ctl < 0))
		return -EPROTONOSUPPORT;
	r = abd__bcast_attach(data, ctl, abd_record_instance(rec), &g, 0, flags, &svc->bc);
	if (r < 0)
		return r;
	if (svc->roles)
		svc->roles = ABD_RING_CONSUMER;
	return 0;
}

int abd__sbc_try_push(struct abd_service *svc, const void *data, size_t len)
{
	return abd__bcast_try_publish(svc->bc, data, len);
}

int abd__sbc_try_pop(struct abd_service *svc, void *buf, size_t size)
{
	int r = abd__bcast_try_recv(svc->bc, buf, size);
	/* the registry may know that the publisher left (its closed word: a withdrawal only) */
	if (r == -EAGAIN && abd__service_is_closed(svc))
		r = abd__bcast_try_recv(svc->bc, buf, size);
	return r;
}

int abd__sbc_wait_prepare(struct abd_service *svc, const uint32_t **word, uint32_t *value,
                          int64_t *tmo)
{
	return abd__bcast_wait_prepare(svc->bc, word, value, tmo);
}

void abd__sbc_stats(const struct abd_service *svc, struct abd_service_stats *out)
{
	struct abd__bcast_stats st;
	const struct abd__bcast_geom *g = abd__bcast_geom(svc->bc);
	abd__bcast_stats(svc->bc, &st);
	memset(out, 0, sizeof(*out));
	out->capacity = g->capacity;
	out->slot_size = g->max_payload;
	out->pushed = st.head;
	out->wakes = st.wakes;
	out->consumers = st.subscribers;
	out->lost = abd__bcast_lost(svc->bc);
	out->bytes = st.bytes;
	out->last_send_ns = st.last_ns;
	if (!svc->publisher && svc->roles) {
		out->popped = abd__bcast_pos(svc->bc);
		out->occupancy = st.head > out->popped ? st.head - out->popped : 0;
	}
}

/* ------------------------------------------------------------------ public calls -- */

int abd_service_loan(struct abd_service *svc, size_t size, void **buf, int64_t timeout_ns)
{
	abd__check(svc && buf, -EINVAL);
	*buf = NULL;
	if (svc->kind != ABD__SERVICE_BCAST || !svc->publisher || !(svc->roles & ABD_RING_PRODUCER))
		return -EPERM;
	if (timeout_ns != 0)
		return abd__service_blocking(svc, ABD__OP_LOAN,
		                             &(struct abd__service_args){ .len = size, .loan = buf },
		                             timeout_ns);
	if (svc->msg_size && size != svc->msg_size)
		return -EMSGSIZE;
	if (abd__service_is_closed(svc))
		return -EPIPE;
	return abd__bcast_loan(svc->bc, size, buf);
}

int abd_service_send(struct abd_service *svc, void *buf, size_t len)
{
	abd__check(svc && buf, -EINVAL);
	if (svc->kind != ABD__SERVICE_BCAST || !svc->publisher || !(svc->roles & ABD_RING_PRODUCER))
		return -EPERM;
	if (svc->msg_size && len != svc->msg_size)
		return -EMSGSIZE;
	return abd__bcast_send(svc->bc, buf, len);
}

int abd_service_unloan(struct abd_service *svc, void *buf)
{
	abd__check(svc && buf, -EINVAL);
	if (svc->kind != ABD__SERVICE_BCAST || !svc->publisher)
		return -EPERM;
	return abd__bcast_unloan(svc->bc, buf);
}

int abd_service_peek(struct abd_service *svc, const void **data, size_t *len, int64_t timeout_ns)
{
	abd__check(svc && data && len, -EINVAL);
	*data = NULL;
	*len = 0;
	if (svc->kind != ABD__SERVICE_BCAST || !(svc->roles & ABD_RING_CONSUMER))
		return -EPERM;
	if (timeout_ns != 0)
		return abd__service_blocking(
			svc, ABD__OP_PEEK, &(struct abd__service_args){ .peek = data, .peek_len = len },
			timeout_ns);
	int r = abd__bcast_peek(svc->bc, data, len);
	if (r == -EAGAIN && abd__service_is_closed(svc))
		r = abd__bcast_peek(svc->bc, data, len);
	return r;
}

int abd_service_release(struct abd_service *svc)
{
	abd__check(svc, -EINVAL);
	if (svc->kind != ABD__SERVICE_BCAST || !(svc->roles & ABD_RING_CONSUMER))
		return -EPERM;
	return abd__bcast_release(svc->bc);
}

int64_t abd_service_lost(const struct abd_service *svc)
{
	abd__check(svc, -EINVAL);
	return svc->kind == ABD__SERVICE_BCAST ? (int64_t)abd__bcast_lost(svc->bc) : 0;
}

int abd_service_is_broadcast(const struct abd_service *svc)
{
	abd__check(svc, -EINVAL);
	return svc->kind == ABD__SERVICE_BCAST;
}
