/* SPDX-License-Identifier: MIT */
/* Waiting: the eventcounts in the header, each sleeper's own word, and the blocking forms.
 *
 * A waiter for `what` reads its own lease's word (the value it will sleep on), sets its bit in
 * the header's sleeping map, arms the header word (bit 0; the arming count beside it is bumped),
 * re-checks the ring, and only then sleeps on its own word. A waker publishes its slot with a
 * sequentially consistent store or CAS, then loads the header word: either the waiter's
 * re-check sees the slot or the waker sees the armed bit, never neither. A waker that sees it
 * armed claims one sleeper's bit (ring.c, wake_n), adds one to that sleeper's word and wakes it:
 * a waiter that has not slept yet finds its word changed and does not sleep. Only when no
 * announced sleeper is left does a waker disarm the header word. A sleeper that dies leaves
 * its bit: it costs one waker a spare wake, nothing more, and its lease's recovery clears it. */
#include <abd/probe.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>

#include "compat/kernel.h"
#include "config.h"
#include "ring-internal.h"

#if ABD_HAVE_LIBURING
#include <liburing.h>
#endif

/* Behind a live participant's claim no waker owes us a wake for that participant's death (the
 * kernel drops its lease lock; nothing a futex waiter can wait on): re-check its lease after
 * 1 ms, doubling while the same claim stays in the way, up to 16 ms. Its commit does wake us
 * (we are announced), its exit makes its pidfd readable: where io_uring has FUTEX_WAIT the
 * sleep waits for both at once; elsewhere it waits on the word in 1 ms steps for the first
 * ABD__STALL_FUTEX_NS of the stall (a preempted claimer commits within a few time slices),
 * then polls the pidfd for the rest of each back-off step (a stopped or very slow claimer's
 * commit is then seen at the end of the step, its death at once). */
#define ABD__STALL_POLL_NS 1000000
#define ABD__STALL_POLL_MAX_SHIFT 4
#define ABD__STALL_FUTEX_NS 8000000
#define ABD__SPIN 128 /* most try-op iterations before sleeping */
#define ABD__SPIN_MIN 16 /* fewest: enough to catch a busy peer's answer on another CPU */
#define ABD__YIELD_BACKOFF_MAX 63 /* most yield hints ignored after fruitless yields */

/* A blocked call that keeps being woken for nothing (a sleep ended, or the re-check said go,
 * and the operation still finds nothing to do) is either unlucky among many sleepers or facing
 * a peer that scribbles over the futex words or floods the eventfd. After this many such rounds
 * in a row it naps between rounds, ABD__FRUITLESS_NAP_NS doubling up to ..._MAX_NS (never past
 * its deadline), so that what a peer writes cannot make it burn a CPU. */
#define ABD__FRUITLESS_ROUNDS 32
#define ABD__FRUITLESS_NAP_NS 20000
#define ABD__FRUITLESS_NAP_MAX_NS 2000000

uint64_t abd__ring_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool role_ok(const struct abd_ring *r, enum abd_ring_wait_for what)
{
	return what == ABD_RING_WAIT_DATA ? r->roles & ABD_RING_CONSUMER : r->roles & ABD_RING_PRODUCER;
}

/* A live participant holds the slot we wait behind. Give it stuck_ns, then take the slot. */
static int stuck(struct abd_ring *r, enum abd_ring_wait_for what, uint64_t pos,
                 struct abd__ring_slot *s, uint64_t c, bool takeable, int64_t *tmo)
{
	uint64_t now = abd__ring_now_ns();
	if (r->stuck_pos != pos || r->stuck_what != (unsigned)what) {
		r->stuck_pos = pos;
		r->stuck_what = what;
		r->stuck_since = now;
		r->stuck_rounds = 0;
		*tmo = ABD__STALL_POLL_NS;
		return 0;
	}
	if (r->stuck_rounds < ABD__STALL_POLL_MAX_SHIFT)
		r->stuck_rounds++;
	*tmo = (int64_t)ABD__STALL_POLL_NS << r->stuck_rounds;
	if (r->stuck_ns > 0 && now - r->stuck_since < (uint64_t)r->stuck_ns &&
	    (uint64_t)*tmo > r->stuck_ns - (now - r->stuck_since))
		*tmo = (int64_t)(r->stuck_ns - (now - r->stuck_since)); /* not past the stuck timeout */
	if (!takeable || r->stuck_ns == 0 || now - r->stuck_since < (uint64_t)r->stuck_ns)
		return 0;
	uint32_t seq = abd__ctl_seq(c);
	uint64_t v = abd__ctl_state(c) == ABD__SLOT_WRITING ? abd__ctl(seq, ABD__SLOT_TOMB, 0)
	                                                    : abd__ctl(seq + r->cap, ABD__SLOT_FREE, 0);
	if (abd__cas(&s->ctl, &c, v, SEQ_CST)) {
		abd__add(&r->h->recovered, 1, RELAXED);
		abd__ring_wake(r, what == ABD_RING_WAIT_DATA ? ABD_RING_WAIT_SPACE : ABD_RING_WAIT_DATA);
	}
	r->stuck_pos = UINT64_MAX;
	return 1;
}

/* A slot claimed by `lease` blocks us: recover it if the claimer died. 1 = retry now. */
static int blocked_by(struct abd_ring *r, enum abd_ring_wait_for what, uint64_t pos,
                      struct abd__ring_slot *s, uint64_t c, bool takeable, int64_t *tmo)
{
	unsigned lease = abd__ctl_lease(c);
	if (lease == r->lease)
		return 0; /* our own claim: nothing to recover */
	int alive = abd__ring_lease_alive(r, lease);
	if (alive < 0)
		return alive;
	if (!alive) {
		int n = abd__ring_reap_lease(r, lease);
		if (n > 0) {
			abd__ring_wake_all(r, ABD_RING_WAIT_DATA);
			abd__ring_wake_all(r, ABD_RING_WAIT_SPACE);
		}
		return n < 0 ? n : 1;
	}
	r->stalled = true;
	r->stall_lease = lease;
	return stuck(r, what, pos, s, c, takeable, tmo);
}

/* After announcing: may the operation proceed (1), or must we sleep (0, *tmo)? */
static int recheck(struct abd_ring *r, enum abd_ring_wait_for what, int64_t *tmo)
{
	*tmo = -1;
	r->stalled = false;
	if (what == ABD_RING_WAIT_DATA) {
		uint64_t h = r->modes & ABD_RING_SINGLE_CONSUMER ? r->sc_head : abd__load(&r->h->head, SEQ_CST);
		struct abd__ring_slot *s = abd__slot(r, h);
		uint64_t c = abd__load(&s->ctl, SEQ_CST);
		int32_t d = (int32_t)(abd__ctl_seq(c) - (uint32_t)h);
		unsigned st = abd__ctl_state(c);
		if ((d == 0 && st == ABD__SLOT_FREE) || d < 0)
			return 0; /* empty: free for position h, or still an earlier lap */
		if (d == 0 && st == ABD__SLOT_WRITING) {
			/* take a live producer's slot only when committed messages wait behind it */
			bool behind = abd__load(&r->h->tail, ACQUIRE) > h + 1;
			return blocked_by(r, what, h, s, c, behind, tmo);
		}
		return 1;
	}
	uint64_t t = r->modes & ABD_RING_SINGLE_PRODUCER ? r->sp_tail : abd__load(&r->h->tail, SEQ_CST);
	if (abd__ring_spsc(r)) /* a single consumer moves the head only; slots are not marked free */
		return t - abd__load(&r->h->head, SEQ_CST) < r->cap;
	/* The slot word classified exactly as the claims do (mp_claim, sp_claim_slow): whatever a
	 * peer wrote there, "go" here means the claim can make progress, so a word the claims call
	 * full cannot keep a waiter spinning between this check and the claim. */
	struct abd__ring_slot *s = abd__slot(r, t);
	uint64_t c = abd__load(&s->ctl, SEQ_CST);
	int32_t d = (int32_t)(abd__ctl_seq(c) - (uint32_t)t);
	unsigned st = abd__ctl_state(c);
	if (d >= 0)
		return 1; /* free for t (claim it), or taken or done (step the tail past it) */
	/* an earlier lap still holds the slot: full */
	if (d == -(int32_t)r->cap && (st == ABD__SLOT_READING || st == ABD__SLOT_WRITING))
		return blocked_by(r, what, t, s, c, true, tmo);
	return 0; /* consumers will wake us */
}

/* Was the wake that ended this announcement made from our own CPU? Then the waker was running
 * here when it woke us, and the scheduler usually switched to us at once (wake-up preemption):
 * the waker is runnable behind us, most likely with more to publish. If we now slept again at
 * the first empty look, it would wake us for its next message, and so on: two context switches
 * per message (measured: 1 message per wake in both directions, 1.5 M msg/s on one vCPU). The
 * hint makes our next sleep attempt yield the CPU first, once (prepare). */
/* Blocking pushes made by this thread (any ring). A consumer that pushed between its wake and
 * its next wait for data is answering (a ping-pong, a pipeline stage): its waker waits for that
 * answer rather than having more to publish, and a yield would only give up the woken
 * sleeper's scheduling preference (docs/ring.md, section 5): the data hint is not used then.
 * (A producer waiting for space pushes by definition: its hint is unaffected.) */
/* initial-exec: a plain %fs-relative access, not a __tls_get_addr call per blocking push (the
 * library is linked, not dlopen()ed late; a few bytes of static TLS) */
static _Thread_local __attribute__((tls_model("initial-exec"))) unsigned long thread_pushes;

static void note_waker(struct abd_ring *r, enum abd_ring_wait_for what)
{
	if (abd__load(&r->leases[r->lease].wake[what], RELAXED) == r->prep_value[what])
		return; /* no waker picked us: not woken (timeout, or the re-check said go) */
	const uint32_t *wc = what == ABD_RING_WAIT_SPACE ? &r->h->space_waker_cpu : &r->h->data_waker_cpu;
	uint32_t waker = abd__load(wc, RELAXED);
	int cpu = sched_getcpu();
	r->yield_hint[what] = waker != 0 && cpu >= 0 && waker == (uint32_t)cpu + 1;
	r->hint_pushes[what] = thread_pushes;
}

/* Will the next sleep attempt yield first (prepare)? */
static bool yield_due(const struct abd_ring *r, enum abd_ring_wait_for what)
{
	return r->yield_hint[what] && !r->yield_skip[what] &&
	       (what == ABD_RING_WAIT_SPACE || r->hint_pushes[what] == thread_pushes);
}

static void finish(struct abd_ring *r, enum abd_ring_wait_for what)
{
	unsigned bit = what == ABD_RING_WAIT_SPACE ? 2 : 1;
	if (!(r->sleeping & bit))
		return;
	note_waker(r, what);
	/* withdraw from the map, unless a waker claimed our bit already */
	uint64_t *map = what == ABD_RING_WAIT_SPACE ? r->h->space_sleeping : r->h->data_sleeping;
	__atomic_fetch_and(&map[r->lease / 64], ~(UINT64_C(1) << (r->lease % 64)), __ATOMIC_SEQ_CST);
	r->sleeping &= ~bit;
}

/* The grace rule. A single producer (consumer) in unfenced mode publishes with a release store
 * and then loads the futex word with no fence between them (ring.c, publish_check), so a
 * publication may still sit in its CPU's store buffer when a waiter arms the word and
 * re-checks: the publisher read the word unarmed, the waiter saw no message. The waiter reads
 * the publisher's mode after arming: "fenced" makes its re-check exact (a publisher switching
 * to unfenced stores the mode and then fences, so it sees our arming; one switching back
 * stores the mode after its publications, so we see them). Otherwise the racing publication
 * read the word before the arming that last turned it from unarmed to armed, and becomes
 * visible within a store-buffer drain (nanoseconds): the re-check is exact once the word has
 * stayed armed, unchanged, for ABD__RING_GRACE_NS — the waiter's previous arming returned the
 * same value (no waker disarmed or bumped it since) at least that long ago. Until then the
 * sleep is bounded by what is left of the grace. A waiter meets the grace only when it arms
 * while its publisher streams unfenced, whose next publication wakes it; a publisher that
 * stops right inside the race delays its last message by at most the grace. */
static int64_t grace_left(struct abd_ring *r, enum abd_ring_wait_for what, uint32_t value)
{
	uint64_t now = abd__ring_now_ns();
	if (r->armed_value[what] != value) {
		r->armed_value[what] = value;
		r->armed_at[what] = now;
		return ABD__RING_GRACE_NS;
	}
	uint64_t age = now - r->armed_at[what];
	return age >= ABD__RING_GRACE_NS ? -1 : (int64_t)(ABD__RING_GRACE_NS - age);
}

static int prepare(struct abd_ring *r, enum abd_ring_wait_for what, uint32_t *value, int64_t *tmo)
{
	unsigned bit = what == ABD_RING_WAIT_SPACE ? 2 : 1;
	if (r->sleeping & bit)
		return -EALREADY;
	uint64_t *pair = what == ABD_RING_WAIT_SPACE ? &r->h->space_pair : &r->h->data_pair;
	uint64_t *map = what == ABD_RING_WAIT_SPACE ? r->h->space_sleeping : r->h->data_sleeping;
	if (r->yield_hint[what] && r->yield_skip[what]) {
		r->yield_hint[what] = false;
		r->yield_skip[what]--;
	} else if (r->yield_hint[what] && !yield_due(r, what)) {
		r->yield_hint[what] = false; /* we answered since the wake: no yield */
	} else if (r->yield_hint[what]) {
		/* woken last time by a waker on our CPU (note_waker): let it run first (when nothing
		 * else is runnable here this returns at once), and look again before arming: an
		 * arming that turns out needless costs the next publisher a wake syscall */
		r->yield_hint[what] = false;
		sched_yield();
		int64_t t;
		int e = recheck(r, what, &t);
		if (e != 0) {
			r->yield_backoff[what] = 0;
			return e;
		}
		/* Nothing came of it: the waker had nothing more, or another task took the CPU. A
		 * yield also gives up the preference a woken sleeper gets, so with unrelated tasks
		 * on this CPU it can cost us a scheduler slice: ignore the next hints, 1, 3, 7 .. 63
		 * of them after fruitless yields in a row. */
		r->yield_backoff[what] = (uint8_t)(r->yield_backoff[what] * 2 + 1 > ABD__YIELD_BACKOFF_MAX
		                                   ? ABD__YIELD_BACKOFF_MAX
		                                   : r->yield_backoff[what] * 2 + 1);
		r->yield_skip[what] = r->yield_backoff[what];
	}
	/* our own word's value first: a wake that claims us from here on changes it */
	*value = abd__load(&r->leases[r->lease].wake[what], SEQ_CST);
	r->prep_value[what] = *value;
	__atomic_fetch_or(&map[r->lease / 64], UINT64_C(1) << (r->lease % 64), __ATOMIC_SEQ_CST);
	r->sleeping |= bit;
	/* arm: bit 0 of the word, and the arming count beside it, in one CAS (see ring.c, wake_n:
	 * a waker's disarm fails if we armed after it looked at the map) */
	uint64_t p = abd__load(pair, SEQ_CST);
	bool paired = false;
	for (int i = 0; i < 64 && !paired; i++) /* bounded: a peer may write the pair in a loop */
		paired = abd__cas(pair, &p, abd__pair(abd__pair_word(p) | 1, abd__pair_arms(p) + 1), SEQ_CST);
	uint32_t armed_word = abd__pair_word(p) | 1;
	if (!paired) {
		/* the two halves apart: still armed and counted, only the disarm's guard is weaker,
		 * and only while a peer keeps rewriting the words */
		uint32_t *word = what == ABD_RING_WAIT_SPACE ? &r->h->space_futex : &r->h->data_futex;
		uint32_t *arms = what == ABD_RING_WAIT_SPACE ? &r->h->space_arms : &r->h->data_arms;
		armed_word = __atomic_fetch_or(word, 1, __ATOMIC_SEQ_CST) | 1;
		__atomic_fetch_add(arms, 1, __ATOMIC_SEQ_CST);
	}
	abd__ring_flush_stats(r);
	/* the publisher's mode, after arming and before the re-check; multi-producer commits and
	 * multi-consumer releases are CASes and leave it 0 (fenced) */
	const uint32_t *mode = what == ABD_RING_WAIT_DATA ? &r->h->tail_unfenced : &r->h->head_unfenced;
	bool unfenced = abd__load(mode, SEQ_CST) != 0;
	int e = recheck(r, what, tmo);
	if (e != 0) {
		finish(r, what);
		return e;
	}
	int64_t g = unfenced ? grace_left(r, what, armed_word) : -1;
	if (g >= 0 && (*tmo < 0 || g < *tmo))
		*tmo = g;
	return 0;
}

int abd_ring_wait_prepare(struct abd_ring *r, enum abd_ring_wait_for what, uint32_t *futex_value,
                          int64_t *timeout_ns)
{
	abd__check(r && futex_value && timeout_ns, -EINVAL);
	abd__check(what == ABD_RING_WAIT_DATA || what == ABD_RING_WAIT_SPACE, -EINVAL);
	if (!role_ok(r, what))
		return -EPERM;
	/* a streamed role's position is the stream's (abd_ring_stream_open) */
	if (r->streams & (what == ABD_RING_WAIT_DATA ? ABD_RING_CONSUMER : ABD_RING_PRODUCER))
		return -EBUSY;
	return prepare(r, what, futex_value, timeout_ns);
}

int abd_ring_wait_finish(struct abd_ring *r, enum abd_ring_wait_for what)
{
	abd__check(r, -EINVAL);
	abd__check(what == ABD_RING_WAIT_DATA || what == ABD_RING_WAIT_SPACE, -EINVAL);
	finish(r, what);
	return 0;
}

/* A pidfd of the participant whose claim we wait behind (blocked_by), or -1. The pid comes
 * from its lease (shared memory: untrusted), so the pidfd is only ever a hint that ends a sleep
 * early: the lock decides liveness. Only for a holder in our PID namespace (as its lease says).
 * -ESRCH: no such process, it may have just exited (the caller re-checks at once). */
static int stall_pidfd(struct abd_ring *r)
{
	if (r->stall_lease >= r->lease_count || abd_probe_has(ABD_FEAT_PIDFD_OPEN) != 1)
		return -1;
	const struct abd__ring_lease *l = &r->leases[r->stall_lease];
	uint32_t pid = abd__load(&l->pid, RELAXED), gen = abd__load(&l->gen, RELAXED);
	uint64_t ns = abd__ring_pidns();
	if (pid == 0 || pid > INT32_MAX || ns == 0 || abd__load(&l->pidns, RELAXED) != ns)
		return -1;
	if (r->stall_pidfd >= 0 && r->stall_pid == pid && r->stall_gen == gen)
		return r->stall_exited ? -1 : r->stall_pidfd; /* exited, yet the lease holds: no hint */
	abd__close(r->stall_pidfd);
	r->stall_exited = false;
	r->stall_pidfd = abd__pidfd_open((pid_t)pid, 0);
	if (r->stall_pidfd < 0) {
		int e = errno;
		r->stall_pidfd = -1;
		return e == ESRCH ? -ESRCH : -1;
	}
	r->stall_pid = pid;
	r->stall_gen = gen;
	return r->stall_pidfd;
}

#if ABD_HAVE_LIBURING
enum { STALL_WORD = 1, STALL_PIDFD = 2, STALL_CANCEL = 3 };

static void stall_uring_free(struct abd_ring *r)
{
	if (!r->stall_uring)
		return;
	io_uring_queue_exit(r->stall_uring);
	free(r->stall_uring);
	r->stall_uring = NULL;
}

/* The handle's io_uring for stalled sleeps, made by the calling thread (its single issuer, with
 * deferred task work: no task work is ever queued on the thread outside our own wait), or NULL
 * where the kernel or its policy has no IORING_OP_FUTEX_WAIT. */
static struct io_uring *stall_uring(struct abd_ring *r)
{
	pid_t tid = gettid();
	if (r->stall_uring && r->stall_uring_tid != tid)
		stall_uring_free(r); /* another thread uses the handle now */
	if (r->stall_uring || r->stall_uring_off)
		return r->stall_uring;
	if (abd_choose_backend() != ABD_BACKEND_IO_URING ||
	    abd_probe_has(ABD_FEAT_URING_FUTEX_WAIT) != 1) {
		r->stall_uring_off = true;
		return NULL;
	}
	struct io_uring *u = calloc(1, sizeof(*u));
	if (!u)
		return NULL; /* this sleep takes the other way; the next one tries again */
	int e = io_uring_queue_init(4, u, IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
	if (e < 0) {
		free(u);
		if (e != -ENOMEM && e != -EMFILE && e != -ENFILE)
			r->stall_uring_off = true;
		return NULL;
	}
	r->stall_uring = u;
	r->stall_uring_tid = tid;
	r->stall_uring_free = stall_uring_free;
	return u;
}

/* Behind a live claim: sleep until our word is woken (the claimer committed), the claimer's
 * pidfd says it exited, or tsp (relative; NULL: no limit). Returns 0 (slept: the caller
 * re-checks), -EINTR, or 1 when there is no such io_uring (the caller sleeps another way).
 * Whatever ended the wait, both requests are cancelled and reaped before returning. */
static int stall_uring_wait(struct abd_ring *r, enum abd_ring_wait_for what, uint32_t value,
                            int pfd, const struct timespec *tsp)
{
	struct io_uring *u = stall_uring(r);
	if (!u)
		return 1;
	struct io_uring_sqe *sqe = io_uring_get_sqe(u);
	/* liburing 2.3 has no helper: fd = futex2 flags (shared word), addr = word, addr2 = value */
	io_uring_prep_rw(ABD_IORING_OP_FUTEX_WAIT, sqe, ABD_FUTEX2_SIZE_U32,
	                 &r->leases[r->lease].wake[what], 0, value);
	sqe->addr3 = ABD_FUTEX_BITSET_MATCH_ANY;
	io_uring_sqe_set_data64(sqe, STALL_WORD);
	sqe = io_uring_get_sqe(u);
	io_uring_prep_poll_add(sqe, pfd, POLLIN);
	io_uring_sqe_set_data64(sqe, STALL_PIDFD);
	struct __kernel_timespec kts, *kp = NULL;
	if (tsp) {
		kts.tv_sec = tsp->tv_sec;
		kts.tv_nsec = tsp->tv_nsec;
		kp = &kts;
	}
	struct io_uring_cqe *cqe;
	int e = io_uring_submit_and_wait_timeout(u, &cqe, 1, kp, NULL);
	if (e < 0 && e != -ETIME && e != -EINTR) {
		/* not even submitted, or the ring is unusable: drop it, sleep the other way */
		if (io_uring_sq_ready(u) > 0) {
			stall_uring_free(r);
			r->stall_uring_off = true;
			return 1;
		}
	}
	bool interrupted = e == -EINTR;
	/* reap: both requests end (completed or cancelled) before we return */
	unsigned pending = STALL_WORD | STALL_PIDFD, cancels = 0;
	for (bool cancelled = false; pending || cancels;) {
		unsigned head, n = 0;
		io_uring_for_each_cqe(u, head, cqe) {
			uint64_t d = io_uring_cqe_get_data64(cqe);
			if (d == STALL_CANCEL)
				cancels--;
			else if (d == STALL_WORD || d == STALL_PIDFD)
				pending &= ~(unsigned)d;
			if (d == STALL_PIDFD && cqe->res > 0)
				r->stall_exited = true; /* the re-check decides; no second hint from it */
			n++;
		}
		io_uring_cq_advance(u, n);
		if (!pending && !cancels)
			break;
		if (!cancelled && pending) {
			for (unsigned d = STALL_WORD; d <= STALL_PIDFD; d++) {
				if (!(pending & d))
					continue;
				sqe = io_uring_get_sqe(u);
				io_uring_prep_cancel64(sqe, d, 0);
				io_uring_sqe_set_data64(sqe, STALL_CANCEL);
				cancels++;
			}
			cancelled = true;
		}
		e = io_uring_submit_and_wait(u, 1);
		if (e == -EINTR)
			interrupted = true;
		else if (e < 0) {
			/* cannot reap: the ring goes (its exit cancels what is left) */
			stall_uring_free(r);
			r->stall_uring_off = true;
			break;
		}
	}
	return interrupted ? -EINTR : 0;
}
#else
static int stall_uring_wait(struct abd_ring *r, enum abd_ring_wait_for what, uint32_t value,
                            int pfd, const struct timespec *tsp)
{
	(void)r, (void)what, (void)value, (void)pfd, (void)tsp;
	return 1;
}
#endif

/* Sleep on our own word for at most ns (-1: no limit). Returns 0 (woken, timed out or
 * spurious: the caller re-checks) or -EINTR. Behind a live participant's claim (the caller's
 * limit is then the stall back-off, stuck) the claimer's commit or death is what we wait for
 * (ABD__STALL_FUTEX_NS says how): the pidfd is a pid from shared memory, a hint that can only
 * end a sleep early; the lease decides. */
static int sleep_on(struct abd_ring *r, enum abd_ring_wait_for what, uint32_t value, int64_t ns)
{
	struct timespec ts, *tsp = NULL;
	if (ns >= 0) {
		ts.tv_sec = ns / 1000000000;
		ts.tv_nsec = ns % 1000000000;
		tsp = &ts;
	}
	r->own_waits++;
	abd__add(&r->h->waits, 1, RELAXED);
	if (r->stalled && ns >= 0) {
		int pfd = stall_pidfd(r);
		if (pfd == -ESRCH)
			return 0;
		if (pfd >= 0) {
			int e = stall_uring_wait(r, what, value, pfd, tsp);
			if (e <= 0)
				return e;
			if (abd__ring_now_ns() - r->stuck_since >= ABD__STALL_FUTEX_NS) {
				struct pollfd p = { .fd = pfd, .events = POLLIN };
				e = ppoll(&p, 1, tsp, NULL);
				if (e < 0 && errno == EINTR)
					return -EINTR;
				if (e > 0)
					r->stall_exited = true;
				return 0;
			}
			if (ns > ABD__STALL_POLL_NS) { /* early in the stall: the word, 1 ms at a time */
				ts.tv_sec = 0;
				ts.tv_nsec = ABD__STALL_POLL_NS;
			}
		}
	}
	if (r->use_futex) {
		long e = syscall(SYS_futex, &r->leases[r->lease].wake[what], FUTEX_WAIT, value, tsp,
		                 NULL, 0);
		return e < 0 && errno == EINTR ? -EINTR : 0;
	}
	/* no futex (denied by the profile): nap */
	struct timespec nap = { 0, 100000 };
	if (tsp && (ts.tv_sec == 0 && ts.tv_nsec < nap.tv_nsec))
		nap = ts;
	return nanosleep(&nap, NULL) < 0 && errno == EINTR ? -EINTR : 0;
}

/* After a round of a blocking loop that ended with nothing done (fruitless: see
 * ABD__FRUITLESS_ROUNDS): count it, and past the limit nap for the next step of the backoff,
 * at most left_ns (< 0: no deadline). A round that lasted at least the longest nap (it slept in
 * the kernel: a wait slice ran out) is no spin: it starts the count afresh and naps nothing, so
 * that an idle sleeper's slices do not each cost a nap and a second wake-up. 0, or -EINTR. */
int abd__ring_backoff(struct abd__ring_backoff *b, int64_t left_ns)
{
	uint64_t now = abd__ring_now_ns();
	bool slept = b->since && now - b->since >= ABD__FRUITLESS_NAP_MAX_NS;
	b->since = now;
	if (slept) {
		b->rounds = 0;
		b->nap_ns = 0;
		return 0;
	}
	if (++b->rounds < ABD__FRUITLESS_ROUNDS)
		return 0;
	int64_t ns = b->nap_ns ? b->nap_ns : ABD__FRUITLESS_NAP_NS;
	b->nap_ns = ns * 2 > ABD__FRUITLESS_NAP_MAX_NS ? ABD__FRUITLESS_NAP_MAX_NS : ns * 2;
	if (left_ns >= 0 && left_ns < ns)
		ns = left_ns;
	struct timespec ts = { (time_t)(ns / 1000000000), (long)(ns % 1000000000) };
	int r = nanosleep(&ts, NULL) < 0 && errno == EINTR ? -EINTR : 0;
	b->since = abd__ring_now_ns(); /* the nap is not part of the next round */
	return r;
}

/* The shared loop of the blocking forms: op() until it stops saying -EAGAIN. The caller made
 * the first attempt (the try form itself, inline): e is its -EAGAIN. The deadline is checked at
 * every round, whatever the round found. */
static int blocking(struct abd_ring *r, enum abd_ring_wait_for what, int64_t timeout_ns,
                    int (*op)(struct abd_ring *, void *), void *arg, int e)
{
	/* Adaptive spin: keep spinning while spins pay off (a peer on another CPU answers within
	 * microseconds), stop when they do not (a peer sharing our CPU cannot run while we spin). */
	/* no spin when we are about to yield to a waker on our CPU: it cannot answer while we spin */
	unsigned spin = yield_due(r, what) ? 0 : r->spin;
	for (unsigned i = 0; e == -EAGAIN && i < spin; i++) {
		abd__cpu_relax();
		e = op(r, arg);
	}
	if (e != -EAGAIN) {
		if (spin && r->spin < ABD__SPIN)
			r->spin = r->spin * 2 + 1; /* a spin paid off */
		return e;
	}
	if (spin && r->spin > ABD__SPIN_MIN)
		r->spin /= 2;
	uint64_t deadline = timeout_ns > 0 ? abd__ring_now_ns() + (uint64_t)timeout_ns : 0;
	struct abd__ring_backoff backoff = { 0 };
	for (bool first = true;; first = false) {
		int64_t left = -1;
		if (timeout_ns > 0) {
			uint64_t now = abd__ring_now_ns();
			if (now >= deadline)
				return -ETIMEDOUT;
			left = (int64_t)(deadline - now);
		}
		if (!first) {
			int b = abd__ring_backoff(&backoff, left);
			if (b < 0)
				return b;
		}
		uint32_t value;
		int64_t tmo;
		int p = prepare(r, what, &value, &tmo);
		if (p < 0)
			return p;
		if (p == 0) {
			if (timeout_ns == 0) {
				finish(r, what);
				return -EAGAIN;
			}
			if (timeout_ns > 0) {
				uint64_t now = abd__ring_now_ns();
				if (now >= deadline) {
					finish(r, what);
					return -ETIMEDOUT;
				}
				left = (int64_t)(deadline - now);
			}
			if (tmo >= 0 && (left < 0 || tmo < left))
				left = tmo;
			int s = sleep_on(r, what, value, left);
			finish(r, what);
			if (s < 0)
				return s;
		}
		e = op(r, arg);
		if (e != -EAGAIN)
			return e;
		if (timeout_ns == 0)
			return e;
	}
}

struct push_arg {
	const void *data;
	size_t len;
};
struct pop_arg {
	void *buf;
	size_t size;
};

static int push_op(struct abd_ring *r, void *a)
{
	struct push_arg *p = a;
	return abd_ring_try_push(r, p->data, p->len);
}

static int pop_op(struct abd_ring *r, void *a)
{
	struct pop_arg *p = a;
	return abd_ring_try_pop(r, p->buf, p->size);
}

/* The blocking forms try first, as the try forms do (their short paths included), and enter
 * the waiting loop only when that says -EAGAIN: a message that goes through at once costs what
 * a try form costs (measured before: 13-14 ns per push + pop against 5.8 ns). */
int abd_ring_push(struct abd_ring *r, const void *data, size_t len, int64_t timeout_ns)
{
	abd__check(r && (data || len == 0) && timeout_ns >= -1, -EINVAL);
	int e = abd_ring_try_push(r, data, len);
	if (abd__unlikely(e == -EAGAIN)) {
		struct push_arg a = { data, len };
		e = blocking(r, ABD_RING_WAIT_SPACE, timeout_ns, push_op, &a, e);
	}
	if (e == 0)
		thread_pushes++;
	return e;
}

int abd_ring_pop(struct abd_ring *r, void *buf, size_t size, int64_t timeout_ns)
{
	abd__check(r && (buf || size == 0) && size <= INT32_MAX && timeout_ns >= -1, -EINVAL);
	int e = abd_ring_try_pop(r, buf, size);
	if (abd__unlikely(e == -EAGAIN)) {
		struct pop_arg a = { buf, size };
		e = blocking(r, ABD_RING_WAIT_DATA, timeout_ns, pop_op, &a, e);
	}
	return e;
}
