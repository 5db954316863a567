/* SPDX-License-Identifier: MIT */
/* Services: a ring published under a name, opened by name (include/abd/service.h).
 *
 * The publisher's half: ring + handshake server + record with the type in its
 * metadata; the server runs on the reactor (an io source on its fd and a timer for its
 * deadline). The opener's half: a registry watch on the reactor, which finds the publisher
 * (open) and then learns of its withdrawal or death (closed). The closed state lives in two
 * places: the handle (what this process learnt) and the ring header's `closed` word (what any
 * participant learnt: the publisher on close, any opener's watch on a death), so that the fast
 * paths check one load and every participant stops at once. */
#include <abd/acquire.h>
#include <abd/registry.h>
#include <abd/service.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>

#include "internal.h"
#include "reactor-internal.h"
#include "ring-internal.h"
#include "service-internal.h"

#define SERVICE_PROTO "ring/2"
/* Blocking waits sleep in the service's reactor, on a futex source of the handle's own word
 * beside the reactor's other sources (the registry watch tells an opener of its publisher's
 * death, the handshake server serves a publisher's openers): no periodic wake-up. Where the
 * reactor cannot be run (a blocking call made from inside one of its callbacks, or from another
 * thread than its owner), nothing can tell the sleeper of such an event: it sleeps on the word
 * at most this long at a time, then looks (background). */
#define REFUSED_SLICE_NS (100ll * 1000 * 1000)
/* A closed ring that producers are still attached to ends (-EPIPE) when the last one leaves; a
 * departing producer wakes the consumers, a dead one cannot: they look this often. */
#define CLOSED_LOOK_NS (100ll * 1000 * 1000)
/* A blocking wait sleeps this long on the plain futex before it moves into the reactor. */
#define FIRST_NS (1000ll * 1000)
/* Back-off of a candidate that failed for a passing reason (alive but not answering: no
 * kernel event says when it starts to): first retry, and the cap. */
#define RETRY_FIRST_NS (1000ll * 1000)
#define RETRY_MAX_NS (1000ll * 1000 * 1000)
/* Closed word values in the ring header (docs/ring.md line 7). */
enum { CLOSED_OPEN = 0, CLOSED_WITHDRAWN = 1, CLOSED_DIED = 2 };


/* This process's publishers. An opener of a service published by its own process attaches
 * to the ring directly: a handshake with itself would wait for a server that only runs when
 * the opener returns (and pidfd_getfd may be switched off). */
static pthread_mutex_t local_lock = PTHREAD_MUTEX_INITIALIZER;
static struct abd_service *local_pubs;

static void local_add(struct abd_service *svc)
{
	pthread_mutex_lock(&local_lock);
	svc->next_local = local_pubs;
	local_pubs = svc;
	pthread_mutex_unlock(&local_lock);
}

static void local_remove(struct abd_service *svc)
{
	pthread_mutex_lock(&local_lock);
	for (struct abd_service **p = &local_pubs; *p; p = &(*p)->next_local)
		if (*p == svc) {
			*p = svc->next_local;
			break;
		}
	pthread_mutex_unlock(&local_lock);
}

/* Attach to a ring this process publishes: 0, -ENOENT (not ours), or attach's error. */
static int local_attach(const uint8_t *instance, unsigned flags, struct abd_ring **out)
{
	int r = -ENOENT;
	pthread_mutex_lock(&local_lock);
	for (struct abd_service *p = local_pubs; p; p = p->next_local) {
		if (memcmp(p->instance, instance, ABD_INSTANCE_SIZE) != 0)
			continue;
		int wfd = abd_ring_wait_fd(p->ring);
		r = abd_ring_attach(abd_ring_fd(p->ring), wfd < 0 ? -1 : wfd, instance, flags, out);
		break;
	}
	pthread_mutex_unlock(&local_lock);
	return r;
}

int64_t abd__service_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#define now_ns abd__service_now_ns

static bool type_name_valid(const char *s)
{
	size_t n = strlen(s);
	if (n > ABD_SERVICE_TYPE_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      strchr("._:<>-", c)))
			return false;
	}
	return true;
}

static bool zero(const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

/* ------------------------------------------------------------------ closed state -- */

/* Wake every announced sleeper of both kinds, armed or not: a closed ring owes everyone a
 * look. */
static void wake_all(struct abd_ring *r)
{
	abd__ring_wake_all(r, ABD_RING_WAIT_DATA);
	abd__ring_wake_all(r, ABD_RING_WAIT_SPACE);
}

static inline bool shared_closed(const struct abd_service *svc) ABD_NONBLOCKING
{
	if (abd__unlikely(svc->kind == ABD__SERVICE_BCAST)) {
		ABD__RTSAN_EXEMPT_BEGIN; /* one load */
		bool c = abd__bcast_closed(svc->bc);
		ABD__RTSAN_EXEMPT_END;
		return c;
	}
	return abd__load(&svc->ring->h->closed, RELAXED) != CLOSED_OPEN;
}

/* The service has its channel (an opener: it opened). */
static inline bool opened(const struct abd_service *svc)
{
	return svc->ring || svc->bc;
}

/* What the header's closed word says (a hint: any participant can write it). */
static int hint_status(const struct abd_service *svc)
{
	if (svc->kind == ABD__SERVICE_BCAST)
		return -ESHUTDOWN;
	uint32_t w = abd__load(&svc->ring->h->closed, ACQUIRE);
	return w == CLOSED_OPEN ? 0 : w == CLOSED_DIED ? -ECONNRESET : -ESHUTDOWN;
}

static bool hint_confirmed(struct abd_service *svc);
static void mark_closed(struct abd_service *svc, int status);

/* The closed word in the ring header is shared memory: any participant, a hostile one too, can
 * store "closed" there. The publisher's own state is its own (svc->closed, set only by its
 * close), so a peer cannot stop its pushes; an opener takes the word as a hint and believes it
 * once the registry agrees (hint_confirmed). */
static inline bool is_closed(struct abd_service *svc) ABD_NONBLOCKING
{
	if (abd__unlikely(svc->closed != 0))
		return true;
	if (abd__likely(svc->publisher || !shared_closed(svc)))
		return false;
	/* a broadcast channel's closed word is the publisher's alone (sealed data file) */
	if (svc->kind == ABD__SERVICE_BCAST) {
		ABD__RTSAN_EXEMPT_BEGIN;
		mark_closed(svc, -ESHUTDOWN);
		ABD__RTSAN_EXEMPT_END;
		return true;
	}
	/* the registry's word on it: openat + F_OFD_GETLK, which never sleep */
	ABD__RTSAN_EXEMPT_BEGIN;
	bool c = hint_confirmed(svc);
	ABD__RTSAN_EXEMPT_END;
	return c;
}

static int closed_status(struct abd_service *svc)
{
	return is_closed(svc) ? svc->closed : 0;
}

static void closed_cb(struct abd_source *src, int status, uint64_t value, void *ud);

static void deliver_closed_later(struct abd_service *svc)
{
	if (!svc->fn || svc->closed_delivered || svc->closed_src || !svc->closed)
		return;
	/* failure (ENOMEM): the state is still visible through push/pop and abd_service_closed */
	(void)abd_reactor_add_defer(svc->reactor, closed_cb, svc, &svc->closed_src);
}

/* This process learnt that the publisher left: remember it, tell every participant through
 * the ring header, wake every sleeper, and queue the event. */
static void mark_closed(struct abd_service *svc, int status)
{
	if (svc->closed)
		return;
	if (svc->kind == ABD__SERVICE_BCAST) {
		/* subscribers cannot write the data file: each learns it from its own watch (or
		 * the publisher's closed word); blocked calls of this handle look when the
		 * reactor's turn that brought the news returns */
		abd__bcast_set_closed(svc->bc);
		svc->closed = status;
		deliver_closed_later(svc);
		return;
	}
	uint32_t expect = CLOSED_OPEN;
	uint32_t want = status == -ECONNRESET ? CLOSED_DIED : CLOSED_WITHDRAWN;
	if (!abd__cas(&svc->ring->h->closed, &expect, want, SEQ_CST))
		status = expect == CLOSED_DIED ? -ECONNRESET : -ESHUTDOWN;
	svc->closed = status;
	wake_all(svc->ring);
	deliver_closed_later(svc);
}

/* An opener found the closed word set (is_closed): is the publisher gone for the registry, the
 * authority? Its record removed: withdrawn; its lock free: died (the handle is closed from now
 * on). Still there and alive: a peer's word, not the publisher's; asked again at most every
 * HINT_RECHECK_NS. */
#define HINT_RECHECK_NS (1000ll * 1000)
static bool hint_confirmed(struct abd_service *svc)
{
	int64_t now = now_ns();
	if (svc->hint_checked_ns && now - svc->hint_checked_ns < HINT_RECHECK_NS)
		return false;
	svc->hint_checked_ns = now;
	int r = abd_registry_liveness(svc->reg, svc->record_name);
	if (r == ABD_STATE_ALIVE)
		return false;
	mark_closed(svc, r == ABD_STATE_STALE ? -ECONNRESET : -ESHUTDOWN);
	return true;
}

static void real_close(struct abd_service *svc);
static bool close_if_pending(struct abd_service *svc);

static void event(struct abd_service *svc, enum abd_service_event ev, int status)
{
	if (!svc->fn)
		return;
	svc->in_event = true;
	svc->fn(svc, ev, status, svc->ud);
	svc->in_event = false;
}

static void closed_cb(struct abd_source *src, abd__unused int status, abd__unused uint64_t value,
                      void *ud)
{
	struct abd_service *svc = ud;
	abd_source_free(src);
	svc->closed_src = NULL;
	svc->closed_delivered = true;
	event(svc, ABD_SERVICE_EVENT_CLOSED, svc->closed);
	close_if_pending(svc);
}

/* ------------------------------------------------------------------ opener: watch -- */

static void on_watch(void *ud, enum abd_event_type type, const struct abd_entry *e)
{
	struct abd_service *svc = ud;
	if (type == ABD_EVENT_OVERFLOW) {
		/* events were lost (the rescan that follows an overflow reports what it finds):
		 * an opener looks again rather than trust that the rescan saw everything */
		if (!opened(svc))
			svc->changed = true;
		return;
	}
	if (!e->name)
		return;
	if (opened(svc)) {
		if (strcmp(e->name, svc->record_name) != 0)
			return;
		if (type == ABD_EVENT_DIED)
			mark_closed(svc, -ECONNRESET);
		else if (type == ABD_EVENT_REMOVED)
			mark_closed(svc, shared_closed(svc) ? hint_status(svc) : -ESHUTDOWN);
		return;
	}
	if (e->service && strcmp(e->service, svc->name) == 0) {
		svc->changed = true;
		/* a failed candidate that left or died: nothing to retry */
		if (type != ABD_EVENT_ADDED && e->instance)
			for (unsigned i = 0; i < svc->nfailed; i++)
				if (memcmp(svc->failed[i].instance, e->instance, ABD_INSTANCE_SIZE) == 0) {
					svc->failed[i] = svc->failed[--svc->nfailed];
					break;
				}
	}
}

/* The watch runs on the reactor (abd_reactor_add_watch). */
static void watch_cb(abd__unused struct abd_source *src, int status, enum abd_event_type type,
                     const struct abd_entry *entry, void *ud)
{
	struct abd_service *svc = ud;
	if (status == 0) {
		on_watch(svc, type, entry);
		return;
	}
	/* The source is inactive now. The directory itself went away: nobody can find the
	 * service any more, call it withdrawn. Other failures (ENOMEM...) leave the ring's closed
	 * word, which the publisher and other openers still set, as the only news. */
	if (status == -EIDRM && opened(svc))
		mark_closed(svc, -ESHUTDOWN);
}

/* ------------------------------------------------------------------ shared -- */

static int setup_reactor(struct abd_service *svc, const struct abd_service_config *cfg)
{
	if (cfg->reactor) {
		svc->reactor = cfg->reactor;
		return 0;
	}
	svc->own_reactor = true;
	return abd_reactor_new(cfg->reactor_flags, &svc->reactor);
}

static int check_config(const struct abd_service_config *cfg)
{
	abd__check(zero(cfg->reserved, sizeof(cfg->reserved)), -EINVAL);
	abd__check(!cfg->type_name || type_name_valid(cfg->type_name), -EINVAL);
	abd__check(!cfg->n_allow_uids || cfg->allow_uids, -EINVAL);
	abd__check(!cfg->n_allow_gids || cfg->allow_gids, -EINVAL);
	abd__check(cfg->n_allow_uids <= ABD_SERVICE_ALLOW_MAX, -E2BIG);
	abd__check(cfg->n_allow_gids <= ABD_SERVICE_ALLOW_MAX, -E2BIG);
	abd__check(!(cfg->reactor_flags & ~(ABD_REACTOR_FORCE_EPOLL | ABD_REACTOR_FORCE_IO_URING)),
	           -EINVAL);
	abd__check(!cfg->n_publisher_uids || cfg->publisher_uids, -EINVAL);
	abd__check(!cfg->n_publisher_gids || cfg->publisher_gids, -EINVAL);
	abd__check(cfg->n_publisher_uids <= ABD_SERVICE_ALLOW_MAX, -E2BIG);
	abd__check(cfg->n_publisher_gids <= ABD_SERVICE_ALLOW_MAX, -E2BIG);
	return 0;
}

static void set_record_name(struct abd_service *svc, const uint8_t *instance)
{
	int n = snprintf(svc->record_name, sizeof(svc->record_name), "%s.", svc->name);
	for (int i = 0; i < ABD_INSTANCE_SIZE && n > 0; i++)
		n += snprintf(svc->record_name + n, sizeof(svc->record_name) - (size_t)n, "%02x",
		              instance[i]);
}

static unsigned ring_roles(unsigned flags)
{
	unsigned roles = 0;
	if (flags & ABD_SERVICE_PRODUCER)
		roles |= ABD_RING_PRODUCER;
	if (flags & ABD_SERVICE_CONSUMER)
		roles |= ABD_RING_CONSUMER;
	if (!roles && !(flags & ABD_SERVICE_OBSERVER))
		roles = ABD_RING_PRODUCER | ABD_RING_CONSUMER;
	return roles;
}

/* ------------------------------------------------------------------ publish -- */

#define PUBLISH_FLAGS                                                                  \
	(ABD_SERVICE_PRODUCER | ABD_SERVICE_CONSUMER | ABD_SERVICE_SINGLE_PRODUCER |         \
	 ABD_SERVICE_SINGLE_CONSUMER | ABD_SERVICE_OBSERVER)

int abd__service_add_meta_u64(struct abd_record *rec, const char *key, bool hex, uint64_t v)
{
	char buf[32];
	if (hex)
		snprintf(buf, sizeof(buf), "%016llx", (unsigned long long)v);
	else
		snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
	return abd_record_add_meta(rec, key, buf);
}

static int publish(const char *name, const struct abd_service_config *cfg,
                   const struct abd_broadcast_opts *bopts, const struct abd_rpc_opts *ropts,
                   enum abd__service_kind kind, unsigned flags, struct abd_service **out)
{
	static const struct abd_service_config defaults;
	abd__check(out, -EINVAL);
	*out = NULL;
	abd__check(name && abd_service_name_valid(name), -EINVAL);
	abd__check(!(flags & ~PUBLISH_FLAGS), -EINVAL);
	/* a broadcast publisher is its channel's one producer */
	abd__check(kind != ABD__SERVICE_BCAST ||
	                   !(flags & (ABD_SERVICE_CONSUMER | ABD_SERVICE_SINGLE_PRODUCER |
	                              ABD_SERVICE_SINGLE_CONSUMER)),
	           -EINVAL);
	/* a request-response server is its requests' one consumer */
	abd__check(kind != ABD__SERVICE_RPC || !(flags & ~ABD_SERVICE_CONSUMER), -EINVAL);
	/* an observer holds no role; in a single-producer/consumer ring every handle holds one */
	abd__check(!(flags & ABD_SERVICE_OBSERVER) ||
	                   !(flags & (ABD_SERVICE_PRODUCER | ABD_SERVICE_CONSUMER |
	                              ABD_SERVICE_SINGLE_PRODUCER | ABD_SERVICE_SINGLE_CONSUMER)),
	           -EINVAL);
	if (!cfg)
		cfg = &defaults;
	int r = check_config(cfg);
	if (r < 0)
		return r;
	uint32_t cap = cfg->capacity ? cfg->capacity : ABD_SERVICE_DEFAULT_CAPACITY;
	uint32_t slot = cfg->slot_size ? cfg->slot_size
	                : cfg->type_size ? cfg->type_size : ABD_SERVICE_DEFAULT_SLOT_SIZE;
	abd__check(cap >= 2 && cap <= ABD_RING_MAX_CAPACITY && !(cap & (cap - 1)), -EINVAL);
	abd__check(slot >= 1 && slot <= (kind == ABD__SERVICE_BCAST ? ABD_BROADCAST_MAX_PAYLOAD
	                                                          : ABD_RING_MAX_SLOT_SIZE),
	           -EINVAL);
	abd__check(cfg->type_size <= slot, -EINVAL);

	struct abd_service *svc = calloc(1, sizeof(*svc));
	if (!svc)
		return -ENOMEM;
	svc->publisher = true;
	svc->kind = kind;
	snprintf(svc->name, sizeof(svc->name), "%s", name);
	snprintf(svc->type_name, sizeof(svc->type_name), "%s", cfg->type_name ? cfg->type_name : "");
	svc->type_size = svc->msg_size = cfg->type_size;
	svc->type_hash = cfg->type_hash;
	svc->roles = ring_roles(flags);
	if (kind == ABD__SERVICE_BCAST && !(flags & ABD_SERVICE_OBSERVER))
		svc->roles = ABD_RING_PRODUCER;
	svc->pub_pid = getpid();

	struct abd_record *rec = NULL;
	uint8_t nonce[ABD_INSTANCE_SIZE];
	unsigned modes = (flags & ABD_SERVICE_SINGLE_PRODUCER ? ABD_RING_SINGLE_PRODUCER : 0) |
	                 (flags & ABD_SERVICE_SINGLE_CONSUMER ? ABD_RING_SINGLE_CONSUMER : 0);
	char why[256];
	r = abd_registry_open(cfg->dir, ABD_REGISTRY_CREATE, &svc->reg, why, sizeof(why));
	if (r < 0)
		goto fail;
	if (getrandom(nonce, sizeof(nonce), 0) != (ssize_t)sizeof(nonce)) {
		r = -EIO;
		goto fail;
	}
	nonce[0] |= 1; /* never all zero */
	r = abd_record_new(name, &rec);
	if (r == 0)
		r = abd_record_set_instance(rec, nonce);
	if (r == 0 && kind == ABD__SERVICE_BCAST) {
		r = abd__sbc_create(svc, cfg, bopts, flags, nonce, rec);
	} else if (r == 0 && kind == ABD__SERVICE_RPC) {
		r = abd__srpc_create(svc, cfg, ropts, nonce, rec);
	} else if (r == 0) {
		r = abd_ring_new(cap, slot, modes | svc->roles, nonce, &svc->ring);
		if (r == 0 && !svc->roles) /* an observer: counted by nobody */
			abd__store(&svc->ring->leases[svc->ring->lease].roles, 0u, RELAXED);
		if (r == 0)
			r = abd_record_add_fd(rec, "ring", abd_ring_fd(svc->ring), ABD_FD_MEMFD);
		if (r == 0 && abd_ring_wait_fd(svc->ring) >= 0)
			r = abd_record_add_fd(rec, "wake", abd_ring_wait_fd(svc->ring), ABD_FD_EVENTFD);
		if (r == 0)
			r = abd_record_add_meta(rec, "abd.service", SERVICE_PROTO);
		if (r == 0)
			r = abd__service_add_meta_u64(rec, "abd.capacity", false, cap);
		if (r == 0)
			r = abd__service_add_meta_u64(rec, "abd.slot_size", false, slot);
	}
	if (r == 0)
		r = abd_record_add_meta(rec, "abd.type", svc->type_name);
	if (r == 0)
		r = abd__service_add_meta_u64(rec, "abd.type_size", false, svc->type_size);
	if (r == 0)
		r = abd__service_add_meta_u64(rec, "abd.type_hash", true, svc->type_hash);
	if (r == 0)
		r = abd_acquire_server_new(svc->reg, 0, &svc->srv);
	for (unsigned i = 0; r == 0 && i < cfg->n_allow_uids; i++)
		r = abd_acquire_server_allow_uid(svc->srv, cfg->allow_uids[i]);
	for (unsigned i = 0; r == 0 && i < cfg->n_allow_gids; i++)
		r = abd_acquire_server_allow_gid(svc->srv, cfg->allow_gids[i]);
	if (r == 0)
		r = abd_record_set_socket(rec, abd_acquire_server_socket(svc->srv));
	if (r == 0 && cfg->ptracer) {
		r = abd_acquire_set_ptracer(cfg->ptracer);
		if (r == -EOPNOTSUPP) /* no Yama: nothing stops a same-uid ptracer anyway */
			r = 0;
	}
	if (r == 0)
		r = setup_reactor(svc, cfg);
	if (r == 0)
		r = abd_reactor_add_acquire_server(svc->reactor, svc->srv, &svc->srv_src);
	if (r == 0)
		r = abd_publish(svc->reg, rec, &svc->pub);
	if (r == 0)
		r = abd_acquire_server_serve(svc->srv, abd_publication_record(svc->pub));
	if (r < 0)
		goto fail;
	abd_record_free(rec);
	set_record_name(svc, nonce);
	memcpy(svc->instance, nonce, sizeof(nonce));
	local_add(svc);
	*out = svc;
	return 0;
fail:
	abd_record_free(rec);
	real_close(svc);
	return r;
}

int abd_service_publish(const char *name, const struct abd_service_config *cfg, unsigned flags,
                        struct abd_service **out)
{
	return publish(name, cfg, NULL, NULL, ABD__SERVICE_RING, flags, out);
}

int abd_service_publish_broadcast(const char *name, const struct abd_service_config *cfg,
                                  const struct abd_broadcast_opts *opts, unsigned flags,
                                  struct abd_service **out)
{
	return publish(name, cfg, opts, NULL, ABD__SERVICE_BCAST, flags, out);
}

int abd_service_publish_rpc(const char *name, const struct abd_service_config *cfg,
                            const struct abd_rpc_opts *opts, unsigned flags,
                            struct abd_service **out)
{
	return publish(name, cfg, NULL, opts, ABD__SERVICE_RPC, flags, out);
}

/* ------------------------------------------------------------------ open -- */

#define OPEN_FLAGS                                                                     \
	(ABD_SERVICE_PRODUCER | ABD_SERVICE_CONSUMER | ABD_SERVICE_PIDFD_GETFD |             \
	 ABD_SERVICE_SCM_RIGHTS | ABD_SERVICE_OBSERVER)

bool abd__service_meta_u64(const struct abd_record *rec, const char *key, int base, uint64_t *v)
{
	const char *s = abd_record_meta(rec, key);
	if (!s || !*s)
		return false;
	char *end;
	errno = 0;
	unsigned long long x = strtoull(s, &end, base);
	if (*end || errno)
		return false;
	*v = x;
	return true;
}

/* Check the record against what the opener expects. */
static int check_record(struct abd_service *svc, const struct abd_record *rec,
                        const struct abd_service_config *cfg)
{
	const char *proto = abd_record_meta(rec, "abd.service");
	const char *tname = abd_record_meta(rec, "abd.type");
	uint64_t cap, slot = 0, tsize, thash;
	svc->kind = proto && strcmp(proto, ABD__SBC_PROTO) == 0    ? ABD__SERVICE_BCAST
	            : proto && strcmp(proto, ABD__SRPC_PROTO) == 0 ? ABD__SERVICE_RPC
	                                                            : ABD__SERVICE_RING;
	if (svc->kind == ABD__SERVICE_RPC) {
		int r = abd__srpc_check_record(rec, &slot);
		if (r < 0)
			return r;
	} else if (svc->kind == ABD__SERVICE_BCAST) {
		int r = abd__sbc_check_record(svc, rec, &slot);
		if (r < 0)
			return r;
	} else if (!proto || strcmp(proto, SERVICE_PROTO) != 0 ||
	           !abd__service_meta_u64(rec, "abd.capacity", 10, &cap) ||
	           !abd__service_meta_u64(rec, "abd.slot_size", 10, &slot)) {
		return -EPROTONOSUPPORT;
	}
	if (!tname || !abd__service_meta_u64(rec, "abd.type_size", 10, &tsize) ||
	    !abd__service_meta_u64(rec, "abd.type_hash", 16, &thash) || strlen(tname) > ABD_SERVICE_TYPE_MAX ||
	    tsize > slot)
		return -EPROTONOSUPPORT;
	if (cfg->type_name && *cfg->type_name &&
	    (strcmp(cfg->type_name, tname) != 0 || cfg->type_size != tsize ||
	     cfg->type_hash != thash))
		return -EPROTOTYPE;
	if (cfg->type_size > slot)
		return -EMSGSIZE;
	snprintf(svc->type_name, sizeof(svc->type_name), "%s", tname);
	svc->type_size = (uint32_t)tsize;
	svc->type_hash = thash;
	svc->msg_size = cfg->type_size ? cfg->type_size : (uint32_t)tsize;
	return 0;
}

/* What attach may map: the geometry the record declares (checked by check_record), within the
 * ring's default mapping limit. */
static struct abd_ring_attach_opts declared_geometry(const struct abd_record *rec)
{
	struct abd_ring_attach_opts o = { 0 };
	uint64_t cap = 0, slot = 0;
	if (abd__service_meta_u64(rec, "abd.capacity", 10, &cap) && abd__service_meta_u64(rec, "abd.slot_size", 10, &slot) &&
	    cap >= 1 && cap <= ABD_RING_MAX_CAPACITY && slot >= 1 && slot <= ABD_RING_MAX_SLOT_SIZE) {
		o.capacity = (uint32_t)cap;
		o.slot_size = (uint32_t)slot;
	}
	return o;
}

/* The ring's closed word is set as we attach: is the publisher really leaving? The word is a
 * hint any participant can write (is_closed); a peer that keeps it set must not turn every new
 * opener away until its timeout. The registry decides: the record gone or its lock free. */
static bool closing_as_we_came(struct abd_service *svc, const struct abd_record *rec)
{
	set_record_name(svc, abd_record_instance(rec));
	return abd_registry_liveness(svc->reg, svc->record_name) != ABD_STATE_ALIVE;
}

typedef int kind_attach_fn(struct abd_service *svc, const struct abd_record *rec,
                           const struct abd_acquired *a, const struct abd_service *local);

/* A broadcast or request-response candidate: attach (abd__sbc_attach, abd__srpc_attach) to its
 * publisher's own handle when that is in this process, else to the descriptors acquired. */
static int attach_kind(struct abd_service *svc, const struct abd_record *rec, unsigned aflags,
                       kind_attach_fn *attach)
{
	int r = -ENOENT;
	if (abd_record_pid(rec) == getpid()) {
		pthread_mutex_lock(&local_lock);
		for (struct abd_service *p = local_pubs; p; p = p->next_local)
			if ((svc->kind == ABD__SERVICE_BCAST ? p->bc != NULL : p->rpcs != NULL) &&
			    memcmp(p->instance, abd_record_instance(rec), ABD_INSTANCE_SIZE) == 0) {
				r = attach(svc, rec, NULL, p);
				break;
			}
		pthread_mutex_unlock(&local_lock);
	}
	if (r == -ENOENT) {
		struct abd_acquired *a = NULL;
		r = abd_acquire(svc->reg, rec, aflags, -1, &a);
		if (r == 0)
			r = attach(svc, rec, a, NULL);
		abd_acquired_free(a);
	}
	return r;
}

/* A broadcast candidate: its channel. */
static int bcast_attach_candidate(struct abd_service *svc, const struct abd_record *rec,
                                  unsigned aflags)
{
	int r = attach_kind(svc, rec, aflags, abd__sbc_attach);
	if (r == 0 && abd__bcast_closed(svc->bc))
		r = -EAGAIN; /* withdrawing: wait for its removal or a successor */
	if (r < 0 && svc->bc) {
		abd__bcast_free(svc->bc);
		svc->bc = NULL;
	}
	return r;
}

/* A request-response candidate: its files. */
static int rpc_attach_candidate(struct abd_service *svc, const struct abd_record *rec,
                                unsigned aflags)
{
	int r = attach_kind(svc, rec, aflags, abd__srpc_attach);
	if (r == 0 && shared_closed(svc) && closing_as_we_came(svc, rec))
		r = -EAGAIN; /* withdrawing: wait for its removal or a successor */
	if (r < 0) {
		abd__srpc_free(svc);
		abd_ring_free(svc->ring);
		svc->ring = NULL;
	}
	return r;
}

/* Attach to the candidate rec: 0, or the error of the acquisition or the attach. */
static int attach_candidate(struct abd_service *svc, const struct abd_record *rec,
                            unsigned flags)
{
	unsigned aflags = (flags & ABD_SERVICE_PIDFD_GETFD ? ABD_ACQUIRE_PIDFD_GETFD : 0) |
	                  (flags & ABD_SERVICE_SCM_RIGHTS ? ABD_ACQUIRE_SCM_RIGHTS : 0);
	/* A publisher that is there gets the acquisition's own bound, whatever is left of the
	 * wait for one to appear (timeout_ns 0 still opens a present service). */
	int64_t left = -1;
	struct abd_acquired *a = NULL;
	/* the observer attaches with both roles but does not count itself (stats) */
	unsigned rflags = svc->roles ? svc->roles : ABD_RING_PRODUCER | ABD_RING_CONSUMER;
	int r = -ENOENT;
	if (svc->kind == ABD__SERVICE_BCAST)
		return bcast_attach_candidate(svc, rec, aflags);
	if (svc->kind == ABD__SERVICE_RPC)
		return rpc_attach_candidate(svc, rec, aflags);
	if (abd_record_pid(rec) == getpid())
		r = local_attach(abd_record_instance(rec), rflags, &svc->ring);
	if (r == -ENOENT) {
		r = abd_acquire(svc->reg, rec, aflags, left, &a);
		if (r == 0) {
			int memfd = abd_acquired_fd(a, "ring");
			int wfd = abd_acquired_fd(a, "wake");
			struct abd_ring_attach_opts lim = declared_geometry(rec);
			r = memfd < 0 ? -EPROTONOSUPPORT
			              : abd_ring_attach_opts(memfd, wfd < 0 ? -1 : wfd, abd_record_instance(rec),
			                                     rflags, &lim, &svc->ring);
		}
	}
	if (r == 0) {
		if (!svc->roles) /* an observer: counted by nobody, awaited by nobody */
			abd__store(&svc->ring->leases[svc->ring->lease].roles, 0u, RELAXED);
		if (svc->msg_size > svc->ring->slot_size)
			r = -EMSGSIZE;
		else if (shared_closed(svc) && closing_as_we_came(svc, rec))
			r = -EAGAIN; /* wait for its removal or a successor */
	}
	abd_acquired_free(a);
	if (r < 0 && svc->ring) {
		abd_ring_free(svc->ring);
		svc->ring = NULL;
	}
	return r;
}

/* The candidate failed: pass it over, for good or until its back-off ends. */
static void candidate_failed(struct abd_service *svc, const uint8_t *instance, bool final)
{
	struct failed_candidate *f = NULL;
	for (unsigned i = 0; i < svc->nfailed && !f; i++)
		if (memcmp(svc->failed[i].instance, instance, ABD_INSTANCE_SIZE) == 0)
			f = &svc->failed[i];
	if (!f && svc->nfailed < FAILED_MAX) {
		f = &svc->failed[svc->nfailed++];
		memset(f, 0, sizeof(*f));
	}
	if (!f) {
		/* full: forget the retry that comes first (a final one is never forgotten before) */
		f = &svc->failed[0];
		for (unsigned i = 1; i < FAILED_MAX; i++)
			if (svc->failed[i].retry_ns < f->retry_ns)
				f = &svc->failed[i];
		memset(f, 0, sizeof(*f));
	}
	memcpy(f->instance, instance, ABD_INSTANCE_SIZE);
	if (final) {
		f->retry_ns = INT64_MAX;
		return;
	}
	f->backoff_ns = f->backoff_ns ? f->backoff_ns * 2 : RETRY_FIRST_NS;
	if (f->backoff_ns > RETRY_MAX_NS)
		f->backoff_ns = RETRY_MAX_NS;
	f->retry_ns = now_ns() + f->backoff_ns;
}

/* Errors after which the candidate may yet answer: it died or withdrew (the registry will
 * say), refused or dropped the connection, or was not serving yet. */
static bool passing_error(int r)
{
	return r == -ESRCH || r == -ECONNREFUSED || r == -ECONNRESET || r == -ENOENT ||
	       r == -EAGAIN || r == -ETIMEDOUT || r == -EPIPE;
}

/* Errors that end this candidate (not the open): verification, access, a held role. */
static bool candidate_error(int r)
{
	return r == -EPROTO || r == -ESTALE || r == -EBADMSG || r == -EACCES || r == -EPERM ||
	       r == -EBUSY || r == -EUSERS || r == -EPROTONOSUPPORT || r == -EMSGSIZE ||
	       r == -ENXIO || r == -ENOTSOCK || r == -ELOOP;
}

/* One look: try the trusted candidates in order, passing over those that fail. 0 opened,
 * -EAGAIN none (left) to take now, or a final error. */
static int try_open(struct abd_service *svc, const struct abd_service_config *cfg,
                    unsigned flags)
{
	uint8_t skip[FAILED_MAX][ABD_INSTANCE_SIZE];
	struct abd_lookup_opts opts = {
		.publisher_uids = cfg->publisher_uids,
		.n_publisher_uids = cfg->n_publisher_uids,
		.publisher_gids = cfg->publisher_gids,
		.n_publisher_gids = cfg->n_publisher_gids,
		.skip = &skip[0][0],
	};
	/* at most FAILED_MAX candidates per look: more failing ones than the opener remembers
	 * wait for the next look, they never keep it busy */
	for (unsigned tries = 0; tries < FAILED_MAX; tries++) {
		int64_t now = now_ns();
		opts.n_skip = 0;
		for (unsigned i = 0; i < svc->nfailed; i++)
			if (svc->failed[i].retry_ns > now)
				memcpy(skip[opts.n_skip++], svc->failed[i].instance, ABD_INSTANCE_SIZE);
		struct abd_record *rec = NULL;
		int r = abd_registry_lookup_opts(svc->reg, svc->name, &opts, &rec);
		if (r == -ENOENT) {
			/* nothing left to try now: a final error when nothing may yet answer */
			bool waiting = false;
			for (unsigned i = 0; i < svc->nfailed; i++)
				waiting |= svc->failed[i].retry_ns != INT64_MAX;
			return svc->final_err && !waiting ? svc->final_err : -EAGAIN;
		}
		if (r < 0)
			return r;
		/* the type is the service's, not the candidate's: another type ends the open */
		r = check_record(svc, rec, cfg);
		if (r == 0)
			r = attach_candidate(svc, rec, flags);
		if (r == 0) {
			svc->pub_pid = abd_record_pid(rec);
			set_record_name(svc, abd_record_instance(rec));
		} else if (r != -EPROTOTYPE && (passing_error(r) || candidate_error(r))) {
			bool final = !passing_error(r);
			candidate_failed(svc, abd_record_instance(rec), final);
			if (final && !svc->final_err)
				svc->final_err = r;
			r = 1; /* the next candidate */
		}
		abd_record_free(rec);
		if (r <= 0)
			return r;
	}
	return -EAGAIN;
}

/* When the first candidate passed over for a passing reason may be tried again (-1: none
 * waits for a retry). Nothing else is ever waited for by the clock: news of the service comes
 * from the registry's watch. */
static int64_t next_retry_ns(const struct abd_service *svc)
{
	int64_t at = -1;
	for (unsigned i = 0; i < svc->nfailed; i++)
		if (svc->failed[i].retry_ns != INT64_MAX && (at < 0 || svc->failed[i].retry_ns < at))
			at = svc->failed[i].retry_ns;
	int64_t soonest = now_ns() + RETRY_FIRST_NS;
	return at >= 0 && at < soonest ? soonest : at;
}

/* The open's watch of the registry, for this service's records only (its cost does not grow
 * with the directory). It exists before the first lookup, so that a publication between a
 * lookup and the wait is an event. During the open it is driven by hand (abd_watch_process on
 * its descriptor); it joins the reactor once the service is opened. */
static int open_watch(struct abd_service *svc)
{
	return abd_watch_new_opts(svc->reg,
	                          &(struct abd_watch_opts){ .flags = ABD_WATCH_PIDFD,
	                                                    .service = svc->name },
	                          &svc->watch);
}

/* The registry directory went away under the watch (removed, renamed, replaced: inotify's
 * IN_DELETE_SELF, IN_MOVE_SELF, IN_IGNORED): the watch and the lookups still see the old one.
 * Open the directory the configuration names again (created, as the first time, if it is
 * missing) and look there. */
static int open_reopen(struct abd_service *svc, const struct abd_service_config *cfg)
{
	abd_watch_free(svc->watch);
	svc->watch = NULL;
	abd_registry_free(svc->reg);
	svc->reg = NULL;
	char why[256];
	int r = abd_registry_open(cfg->dir, ABD_REGISTRY_CREATE, &svc->reg, why, sizeof(why));
	if (r == 0)
		r = open_watch(svc);
	svc->changed = true;
	return r;
}

/* Sleep until the watch has news of the service, a passed-over candidate's back-off ends or
 * the deadline comes, running a given reactor meanwhile (embedded: its descriptor beside the
 * watch's). The sleep is a ppoll: a stop (SIGSTOP/SIGCONT, a debugger's PTRACE_INTERRUPT)
 * resumes it, a signal handler that runs ends it (-EINTR). 0: look again. */
static int open_wait(struct abd_service *svc, const struct abd_service_config *cfg,
                     int64_t deadline)
{
	struct pollfd p[2] = { { .fd = abd_watch_fd(svc->watch), .events = POLLIN },
		               { .fd = -1, .events = POLLIN } };
	if (!svc->own_reactor) {
		/* what is ready now, first (and -EBUSY from inside one of its callbacks) */
		int r = abd_reactor_run_once(svc->reactor, 0);
		if (r < 0)
			return r;
		if ((p[1].fd = abd_reactor_fd(svc->reactor)) < 0)
			return p[1].fd;
	}
	int64_t until = next_retry_ns(svc);
	if (deadline >= 0 && (until < 0 || deadline < until))
		until = deadline;
	while (!svc->changed) {
		struct timespec ts, *tsp = NULL;
		if (until >= 0) {
			int64_t left = until - now_ns();
			left = left < 0 ? 0 : left;
			ts = (struct timespec){ (time_t)(left / 1000000000), (long)(left % 1000000000) };
			tsp = &ts;
		}
		int n = ppoll(p, p[1].fd < 0 ? 1 : 2, tsp, NULL);
		if (n < 0)
			return errno == EINTR ? -EINTR : -errno;
		if (n == 0)
			return 0; /* a back-off ended, or the deadline came */
		if (p[0].revents) {
			int r = abd_watch_process(svc->watch, on_watch, svc);
			if (r == -EIDRM)
				return open_reopen(svc, cfg);
			if (r < 0)
				return r;
		}
		if (p[1].revents) {
			int r = abd_reactor_run_once(svc->reactor, 0);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

int abd_service_open(const char *name, const struct abd_service_config *cfg, unsigned flags,
                     int64_t timeout_ns, struct abd_service **out)
{
	static const struct abd_service_config defaults;
	abd__check(out, -EINVAL);
	*out = NULL;
	abd__check(name && abd_service_name_valid(name), -EINVAL);
	abd__check(!(flags & ~OPEN_FLAGS), -EINVAL);
	abd__check((flags & (ABD_SERVICE_PIDFD_GETFD | ABD_SERVICE_SCM_RIGHTS)) !=
	                   (ABD_SERVICE_PIDFD_GETFD | ABD_SERVICE_SCM_RIGHTS),
	           -EINVAL);
	abd__check(!(flags & ABD_SERVICE_OBSERVER) ||
	                   !(flags & (ABD_SERVICE_PRODUCER | ABD_SERVICE_CONSUMER)),
	           -EINVAL);
	if (!cfg)
		cfg = &defaults;
	int r = check_config(cfg);
	if (r < 0)
		return r;
	struct abd_service *svc = calloc(1, sizeof(*svc));
	if (!svc)
		return -ENOMEM;
	snprintf(svc->name, sizeof(svc->name), "%s", name);
	svc->roles = ring_roles(flags);
	int64_t deadline = timeout_ns < 0 ? -1 : now_ns() + timeout_ns;
	char why[256];
	r = abd_registry_open(cfg->dir, ABD_REGISTRY_CREATE, &svc->reg, why, sizeof(why));
	if (r == 0)
		r = setup_reactor(svc, cfg);
	if (r == 0)
		r = open_watch(svc);
	while (r == 0) {
		svc->changed = false;
		r = try_open(svc, cfg, flags);
		if (r != -EAGAIN)
			break;
		if (deadline >= 0 && deadline <= now_ns()) {
			r = svc->final_err ? svc->final_err : -ETIMEDOUT;
			break;
		}
		r = open_wait(svc, cfg, deadline);
	}
	/* opened: from now on the watch reports the publisher's withdrawal or death */
	if (r == 0)
		r = abd_reactor_add_watch(svc->reactor, svc->watch, watch_cb, svc, &svc->watch_src);
	if (r < 0) {
		real_close(svc);
		return r;
	}
	*out = svc;
	return 0;
}

/* ------------------------------------------------------------------ close -- */

static void readable_disarm(struct abd_service *svc);

static void real_close(struct abd_service *svc)
{
	if (svc->publisher)
		local_remove(svc);
	if (svc->publisher && svc->ring) {
		/* openers see -EPIPE from now on and sleepers wake, before the record goes */
		uint32_t expect = CLOSED_OPEN;
		abd__cas(&svc->ring->h->closed, &expect, CLOSED_WITHDRAWN, SEQ_CST);
		wake_all(svc->ring);
	}
	if (svc->publisher && svc->bc)
		abd__bcast_close(svc->bc);
	readable_disarm(svc);
	abd_source_free(svc->blk_src[0]);
	abd_source_free(svc->blk_src[1]);
	abd_source_free(svc->closed_src);
	abd_source_free(svc->srv_src);
	abd_source_free(svc->watch_src);
	if (svc->pub)
		(void)abd_withdraw(svc->pub);
	abd_acquire_server_free(svc->srv);
	abd_watch_free(svc->watch);
	abd__srpc_free(svc); /* before the ring it borrows */
	abd_ring_free(svc->ring);
	abd__bcast_free(svc->bc);
	if (svc->own_reactor)
		abd_reactor_free(svc->reactor);
	abd_registry_free(svc->reg);
	free(svc);
}

/* Close now unless a callback or a blocking call of this handle is on the stack. */
static bool close_if_pending(struct abd_service *svc)
{
	if (!svc->close_pending || svc->in_event || svc->depth)
		return false;
	real_close(svc);
	return true;
}

void abd_service_close(struct abd_service *svc)
{
	if (!svc)
		return;
	if (svc->in_event || svc->depth) {
		svc->close_pending = true;
		return;
	}
	real_close(svc);
}

/* ------------------------------------------------------------------ messages -- */

int abd_service_try_push(struct abd_service *svc, const void *data, size_t len) ABD_NONBLOCKING
{
	abd__check(svc && (data || !len), -EINVAL);
	if (abd__unlikely(!(svc->roles & ABD_RING_PRODUCER)))
		return -EPERM;
	if (abd__unlikely(svc->msg_size && len != svc->msg_size))
		return -EMSGSIZE;
	if (is_closed(svc))
		return -EPIPE;
	if (abd__unlikely(svc->kind != ABD__SERVICE_RING)) {
		if (svc->kind == ABD__SERVICE_RPC)
			return -EPERM; /* abd_service_call */
		/* a broadcast publication makes no call that sleeps (a futex wake at most) */
		ABD__RTSAN_EXEMPT_BEGIN;
		int r = abd__sbc_try_push(svc, data, len);
		ABD__RTSAN_EXEMPT_END;
		return r;
	}
	return abd_ring_try_push(svc->ring, data, len);
}

/* Live producers still attached to the ring, other than this handle. */
static unsigned live_producers(const struct abd_service *svc)
{
	struct abd_ring *r = svc->ring;
	unsigned n = 0;
	for (unsigned i = 0; i < r->lease_count; i++) {
		if (i == r->lease || abd__load(&r->leases[i].state, ACQUIRE) != ABD__LEASE_HELD ||
		    !(abd__load(&r->leases[i].roles, RELAXED) & ABD_RING_PRODUCER))
			continue;
		if (abd__ring_lease_alive(r, i) == 1)
			n++;
	}
	return n;
}

/* The end of a closed ring: empty, and no producer left that might still commit a message it
 * began before it saw the flag (its next push fails, so it has no reason to stay). "Empty" is
 * decided after recovery: a producer that died between its claim and its commit left a slot
 * that stops every pop, with committed messages perhaps behind it (docs/protocol.md: nothing
 * committed is lost); recovery turns it into a tombstone pops skip. Bounded: a peer forging
 * dead leases cannot keep it going. */
#define CLOSED_RECOVER_ROUNDS 4
static int pop_closed(struct abd_service *svc, void *buf, size_t size)
{
	if (live_producers(svc))
		return -EAGAIN;
	int r = abd_ring_try_pop(svc->ring, buf, size); /* what the last producer committed */
	for (int i = 0; r == -EAGAIN && i < CLOSED_RECOVER_ROUNDS; i++) {
		if (abd_ring_recover(svc->ring) <= 0)
			break;
		r = abd_ring_try_pop(svc->ring, buf, size);
	}
	return r == -EAGAIN ? -EPIPE : r;
}

static inline int typed_len(const struct abd_service *svc, int r) ABD_NONBLOCKING
{
	if (abd__unlikely(svc->msg_size) && r >= 0 && (uint32_t)r != svc->msg_size)
		return -EMSGSIZE;
	return r;
}

int abd_service_try_pop(struct abd_service *svc, void *buf, size_t size) ABD_NONBLOCKING
{
	abd__check(svc && (buf || !size), -EINVAL);
	if (abd__unlikely(!(svc->roles & ABD_RING_CONSUMER)))
		return -EPERM;
	if (abd__unlikely(svc->kind != ABD__SERVICE_RING)) {
		if (svc->kind == ABD__SERVICE_RPC)
			return -EPERM; /* abd_service_take */
		ABD__RTSAN_EXEMPT_BEGIN; /* as try_push */
		int r = abd__sbc_try_pop(svc, buf, size);
		ABD__RTSAN_EXEMPT_END;
		return typed_len(svc, r);
	}
	int r = abd_ring_try_pop(svc->ring, buf, size);
	if (abd__unlikely(r == -EAGAIN) && is_closed(svc)) {
		/* a closed ring's end: F_OFD_GETLK per producer lease, which never sleeps */
		ABD__RTSAN_EXEMPT_BEGIN;
		r = pop_closed(svc, buf, size);
		ABD__RTSAN_EXEMPT_END;
	}
	return typed_len(svc, r);
}

/* Background duties while a blocking call waits: the handshakes (publisher) and the registry
 * watch (opener) are reactor sources, so run the reactor without blocking. From inside one of
 * its callbacks (or another thread) that is refused: an opener then asks the registry about
 * its publisher directly (one openat + F_OFD_GETLK). */
static void background(struct abd_service *svc)
{
	int r = abd_reactor_run_once(svc->reactor, 0);
	if (r != -EBUSY || svc->publisher || svc->closed)
		return;
	r = abd_registry_liveness(svc->reg, svc->record_name);
	if (r == ABD_STATE_STALE)
		mark_closed(svc, -ECONNRESET);
	else if (r == -ENOENT)
		mark_closed(svc, -ESHUTDOWN);
}

/* The kind's wait announcement (ring: abd_ring_wait_prepare; broadcast: service-bcast.c):
 * 0 and the word to sleep on with its value (and a bound in *tmo, < 0 none), 1 to go on
 * without sleeping, or -errno. finish withdraws it. */
static int chan_prepare(struct abd_service *svc, enum abd_ring_wait_for what,
                        const uint32_t **word, uint32_t *value, int64_t *tmo)
{
	if (svc->kind == ABD__SERVICE_BCAST)
		return abd__sbc_wait_prepare(svc, word, value, tmo);
	if (svc->rpcc && what == ABD_RING_WAIT_DATA) /* a client waits for an answer */
		return abd__srpc_wait_prepare(svc, word, value, tmo);
	*word = abd_ring_futex(svc->ring, what);
	return abd_ring_wait_prepare(svc->ring, what, value, tmo);
}

static void chan_finish(struct abd_service *svc, enum abd_ring_wait_for what)
{
	if (svc->kind == ABD__SERVICE_BCAST)
		abd__bcast_wait_finish(svc->bc);
	else if (svc->rpcc && what == ABD_RING_WAIT_DATA)
		abd__srpc_wait_finish(svc);
	else
		abd_ring_wait_finish(svc->ring, what);
}

static bool chan_futex(const struct abd_service *svc)
{
	return svc->kind == ABD__SERVICE_BCAST ? abd_probe_has(ABD_FEAT_FUTEX) == 1
	                                       : svc->ring->use_futex;
}

/* Sleep on the handle's own word for at most ns (< 0: no limit). 0 or -EINTR. */
static int sleep_slice(struct abd_service *svc, const uint32_t *word, uint32_t value, int64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000), (long)(ns % 1000000000) };
	if (chan_futex(svc)) {
		long e = syscall(SYS_futex, word, FUTEX_WAIT, value, ns < 0 ? NULL : &ts, NULL, 0);
		return e < 0 && errno == EINTR ? -EINTR : 0;
	}
	/* no futex (denied by the profile): nap */
	struct timespec nap = { 0, 100000 };
	if (ns >= 0 && ns < nap.tv_nsec)
		nap.tv_nsec = (long)ns;
	return nanosleep(&nap, NULL) < 0 && errno == EINTR ? -EINTR : 0;
}

static void blk_cb(abd__unused struct abd_source *src, abd__unused int status,
                   abd__unused uint64_t value, void *ud)
{
	*(bool *)ud = true;
}

/* Sleep in the service's reactor until the handle's own word is woken (a futex source), one of
 * the reactor's own sources has work (the handshake server, the registry watch: a publisher's
 * death closes the handle from there) or ns pass (< 0: no limit). No periodic wake-up. Returns
 * 1 when it slept (0 or -EINTR in *err), 0 when it cannot here: no futex source could be made,
 * or run_once refused (called from inside one of its callbacks, or from another thread than its
 * owner). */
static int reactor_sleep(struct abd_service *svc, enum abd_ring_wait_for what,
                         const uint32_t *word, uint32_t value, int64_t ns, int *err)
{
	if (svc->blk_nofutex || !chan_futex(svc))
		return 0;
	struct abd_source **src = &svc->blk_src[what];
	bool *fired = &svc->blk_fired[what];
	if (!*src) {
		*fired = false;
		if (abd_reactor_add_futex(svc->reactor, word, value, blk_cb, fired, src) < 0) {
			*src = NULL;
			svc->blk_nofutex = true;
			return 0;
		}
	} else if (*fired) {
		/* a fired source is re-armed with the word's current value; one still armed from an
		 * earlier sleep waits on the word already and fires with the next wake */
		*fired = false;
		if (abd_source_futex_arm(*src, value) < 0) {
			*fired = true;
			return 0;
		}
	}
	int64_t start = ns > 0 ? now_ns() : 0;
	int n = abd_reactor_run_once(svc->reactor, ns);
	if (n == -EBUSY)
		return 0;
	*err = n < 0 ? n : 0;
	/* A signal handler ran (the wait ended early with nothing to do): report it as the
	 * futex path does. */
	if (n == 0 && !*fired && abd__reactor_interrupted(svc->reactor) &&
	    (ns < 0 || now_ns() - start < ns))
		*err = -EINTR;
	return 1;
}

/* Wait once for `what` (or the deadline): 0 to retry, -errno to stop. */
static int wait_once(struct abd_service *svc, enum abd_ring_wait_for what, int64_t deadline)
{
	int64_t left = deadline >= 0 ? deadline - now_ns() : -1;
	if (deadline >= 0 && left <= 0)
		return -ETIMEDOUT;
	uint32_t value;
	int64_t tmo;
	const uint32_t *word;
	int r = chan_prepare(svc, what, &word, &value, &tmo);
	if (r < 0)
		return r;
	if (r == 0 && !is_closed(svc)) {
		if (tmo >= 0 && (left < 0 || tmo < left))
			left = tmo;
		/* A busy stream's sleeps are short: take them on the plain futex, the cheapest wait,
		 * with the reactor's turn after each (background). A wait that outlasts FIRST_NS
		 * moves into the reactor, to sleep there without periodic wake-ups. */
		int64_t first = left < 0 || left > FIRST_NS ? FIRST_NS : left;
		r = sleep_slice(svc, word, value, first);
		if (r == 0 && (left < 0 || left > first) && abd__load(word, ACQUIRE) == value) {
			/* nothing woke us (the word is unchanged, our announcement stands): the rest of
			 * the wait in the reactor, on the same value */
			int64_t rest = left < 0 ? -1 : left - first;
			if (reactor_sleep(svc, what, word, value, rest, &r)) {
				chan_finish(svc, what);
				return r;
			}
			/* refused here (inside a callback, another thread): sleep on the word, then
			 * look (background) */
			r = sleep_slice(svc, word, value,
			                rest < 0 || rest > REFUSED_SLICE_NS ? REFUSED_SLICE_NS : rest);
		}
	} else if (r == 0) {
		/* closed, but a producer is still attached: it wakes us when it leaves; one that dies
		 * cannot (CLOSED_LOOK_NS) */
		r = sleep_slice(svc, word, value, left < 0 || left > CLOSED_LOOK_NS ? CLOSED_LOOK_NS : left);
	} else {
		r = 0;
	}
	chan_finish(svc, what);
	if (r == 0) {
		background(svc);
		if (abd__reactor_interrupted(svc->reactor))
			r = -EINTR; /* the signal came during the reactor's turn */
	}
	return r;
}

static int try_op(struct abd_service *svc, enum abd__service_op op,
                  struct abd__service_args *a)
{
	switch (op) {
	case ABD__OP_PUSH: return abd_service_try_push(svc, a->data, a->len);
	case ABD__OP_POP: return abd_service_try_pop(svc, a->buf, a->len);
	case ABD__OP_LOAN: return abd_service_loan(svc, a->len, a->loan, 0);
	case ABD__OP_PEEK: return abd_service_peek(svc, a->peek, a->peek_len, 0);
	case ABD__OP_TAKE: return abd_service_try_take(svc, a->buf, a->len, a->token);
	case ABD__OP_SEND: return abd__srpc_try_send(svc, a->data, a->len, a->token);
	case ABD__OP_ANSWER: return abd__srpc_try_answer(svc, *a->token, a->buf, a->len);
	}
	return -EINVAL;
}

/* The blocking loop of every form. A callback run meanwhile (background) may close the
 * handle: the close waits for this loop to end, which then answers -ECANCELED. */
int abd__service_blocking(struct abd_service *svc, enum abd__service_op op,
                          struct abd__service_args *a, int64_t timeout_ns)
{
	bool push = op == ABD__OP_PUSH || op == ABD__OP_LOAN || op == ABD__OP_SEND;
	int64_t deadline = -1;
	int r;
	/* rounds that found nothing to do after a wait: a peer scribbling over the ring's words can
	 * end every wait at once; past a few dozen in a row the loop naps (ring-wait.c) */
	struct abd__ring_backoff backoff = { 0 };
	bool waited = false;
	svc->depth++;
	for (;;) {
		r = try_op(svc, op, a);
		if (r != -EAGAIN || timeout_ns == 0)
			break;
		if (deadline < 0 && timeout_ns > 0)
			deadline = now_ns() + timeout_ns;
		if (waited) {
			int64_t left = deadline < 0 ? -1 : deadline - now_ns();
			r = abd__ring_backoff(&backoff, deadline >= 0 && left < 0 ? 0 : left);
			if (r < 0)
				break;
		}
		waited = true;
		r = wait_once(svc, push ? ABD_RING_WAIT_SPACE : ABD_RING_WAIT_DATA, deadline);
		if (r == 0 && svc->close_pending)
			r = -ECANCELED;
		if (r < 0)
			break;
	}
	svc->depth--;
	if (close_if_pending(svc) && r >= 0)
		r = -ECANCELED; /* done, but the handle is gone now: say so */
	return r;
}

int abd_service_push(struct abd_service *svc, const void *data, size_t len, int64_t timeout_ns)
{
	abd__check(svc, -EINVAL);
	return abd__service_blocking(svc, ABD__OP_PUSH,
	                             &(struct abd__service_args){ .data = data, .len = len },
	                             timeout_ns);
}

int abd_service_pop(struct abd_service *svc, void *buf, size_t size, int64_t timeout_ns)
{
	abd__check(svc, -EINVAL);
	return abd__service_blocking(svc, ABD__OP_POP,
	                             &(struct abd__service_args){ .buf = buf, .len = size },
	                             timeout_ns);
}

/* ------------------------------------------------------------------ READABLE -- */

static void readable_arm(struct abd_service *svc);

static void readable_disarm(struct abd_service *svc)
{
	if (svc->rd_waiting) {
		chan_finish(svc, ABD_RING_WAIT_DATA);
		svc->rd_waiting = false;
	}
	abd_source_free(svc->rd_futex);
	abd_source_free(svc->rd_timer);
	abd_source_free(svc->rd_defer);
	svc->rd_futex = svc->rd_timer = svc->rd_defer = NULL;
}

static void readable_fire(struct abd_service *svc)
{
	if (svc->rd_waiting) {
		chan_finish(svc, ABD_RING_WAIT_DATA);
		svc->rd_waiting = false;
	}
	event(svc, ABD_SERVICE_EVENT_READABLE, 0);
	if (svc->close_pending) {
		close_if_pending(svc);
		return;
	}
	if (svc->fn)
		readable_arm(svc);
}

static void rd_futex_cb(abd__unused struct abd_source *src, abd__unused int status,
                        abd__unused uint64_t value, void *ud)
{
	readable_fire(ud);
}

static void rd_defer_cb(struct abd_source *src, abd__unused int status,
                        abd__unused uint64_t value, void *ud)
{
	struct abd_service *svc = ud;
	abd_source_free(src);
	svc->rd_defer = NULL;
	readable_fire(svc);
}

/* A wake-up bound the ring asked for (a live peer's claim in the way, a publication that may
 * still be in flight), or the look of a reactor that could not make a futex source. */
static void rd_timer_cb(abd__unused struct abd_source *src, abd__unused int status,
                        abd__unused uint64_t value, void *ud)
{
	struct abd_service *svc = ud;
	/* (a broadcast subscriber: the look itself, a READABLE that may find nothing) */
	if (svc->kind == ABD__SERVICE_BCAST || svc->rpcc ||
	    abd__load(&svc->ring->h->tail, ACQUIRE) != abd__load(&svc->ring->h->head, ACQUIRE) ||
	    is_closed(svc)) {
		readable_fire(svc);
		return;
	}
	if (svc->rd_waiting) { /* nothing yet: announce again, for a fresh bound */
		chan_finish(svc, ABD_RING_WAIT_DATA);
		svc->rd_waiting = false;
	}
	readable_arm(svc);
}

static void readable_arm(struct abd_service *svc)
{
	if (svc->rd_waiting || svc->rd_defer)
		return;
	uint32_t value;
	int64_t tmo;
	const uint32_t *word;
	int r = chan_prepare(svc, ABD_RING_WAIT_DATA, &word, &value, &tmo);
	if (r != 0 || is_closed(svc)) {
		/* something to read already (or an error to report by a pop): next iteration */
		if (r == 0)
			chan_finish(svc, ABD_RING_WAIT_DATA);
		(void)abd_reactor_add_defer(svc->reactor, rd_defer_cb, svc, &svc->rd_defer);
		return;
	}
	svc->rd_waiting = true;
	bool futex_ok = false;
	if (chan_futex(svc)) {
		if (svc->rd_futex)
			futex_ok = abd_source_futex_arm(svc->rd_futex, value) == 0;
		else
			futex_ok = abd_reactor_add_futex(svc->reactor, word, value, rd_futex_cb, svc,
			                                 &svc->rd_futex) == 0;
	}
	int64_t t = futex_ok ? tmo : (tmo >= 0 && tmo < REFUSED_SLICE_NS ? tmo : REFUSED_SLICE_NS);
	if (t >= 0) {
		if (t == 0)
			t = 1;
		if (svc->rd_timer)
			(void)abd_source_set_timer(svc->rd_timer, (uint64_t)t, 0, 0);
		else
			(void)abd_reactor_add_timer(svc->reactor, (uint64_t)t, 0, 0, rd_timer_cb, svc,
			                            &svc->rd_timer);
	}
}

int abd_service_set_event_fn(struct abd_service *svc, abd_service_event_fn *fn, void *userdata)
{
	abd__check(svc, -EINVAL);
	svc->fn = fn;
	svc->ud = userdata;
	if (!fn) {
		readable_disarm(svc);
		return 0;
	}
	deliver_closed_later(svc);
	if ((svc->roles & ABD_RING_CONSUMER) || svc->rpcc)
		readable_arm(svc);
	return 0;
}

/* ------------------------------------------------------------------ inspection -- */

struct abd_reactor *abd_service_reactor(const struct abd_service *svc)
{
	return svc ? svc->reactor : NULL;
}

struct abd_ring *abd_service_ring(const struct abd_service *svc)
{
	return svc ? svc->ring : NULL;
}

bool abd__service_is_closed(struct abd_service *svc)
{
	return is_closed(svc);
}

int abd_service_closed(const struct abd_service *svc)
{
	abd__check(svc, -EINVAL);
	/* may ask the registry and cache its answer: state of the handle, not of the caller's */
	return closed_status((struct abd_service *)(uintptr_t)svc);
}

const char *abd_service_name(const struct abd_service *svc)
{
	return svc ? svc->name : NULL;
}

const char *abd_service_record_name(const struct abd_service *svc)
{
	return svc ? svc->record_name : NULL;
}

int abd_service_is_publisher(const struct abd_service *svc)
{
	abd__check(svc, -EINVAL);
	return svc->publisher;
}

pid_t abd_service_publisher_pid(const struct abd_service *svc)
{
	abd__check(svc, -EINVAL);
	return svc->pub_pid;
}

int abd_service_type(const struct abd_service *svc, const char **name, uint32_t *size,
                     uint64_t *hash)
{
	abd__check(svc, -EINVAL);
	if (name)
		*name = svc->type_name;
	if (size)
		*size = svc->type_size;
	if (hash)
		*hash = svc->type_hash;
	return 0;
}

int abd_service_stats(const struct abd_service *svc, struct abd_service_stats *out)
{
	abd__check(svc && out, -EINVAL);
	if (svc->kind == ABD__SERVICE_BCAST) {
		abd__sbc_stats(svc, out);
		return 0;
	}
	struct abd_ring *r = svc->ring;
	struct abd__ring_hdr *h = r->h;
	memset(out, 0, sizeof(*out));
	out->capacity = r->cap;
	out->slot_size = r->slot_size;
	uint64_t head = abd__load(&h->head, ACQUIRE), tail = abd__load(&h->tail, ACQUIRE);
	out->pushed = tail;
	out->popped = head;
	out->occupancy = tail > head ? tail - head : 0;
	if (out->occupancy > r->cap)
		out->occupancy = r->cap;
	out->recovered = abd__load(&h->recovered, RELAXED);
	out->wakes = abd__load(&h->wakes, RELAXED);
	out->waits = abd__load(&h->waits, RELAXED);
	out->data_sleepers = abd__ring_sleepers(svc->ring, ABD_RING_WAIT_DATA);
	out->space_sleepers = abd__ring_sleepers(svc->ring, ABD_RING_WAIT_SPACE);
	for (unsigned i = 0; i < r->lease_count; i++) {
		if (i == r->lease || abd__load(&r->leases[i].state, ACQUIRE) != ABD__LEASE_HELD)
			continue;
		if (abd__ring_lease_alive(r, i) != 1)
			continue;
		uint32_t roles = abd__load(&r->leases[i].roles, RELAXED);
		out->producers += !!(roles & ABD_RING_PRODUCER);
		out->consumers += !!(roles & ABD_RING_CONSUMER);
	}
	return 0;
}
