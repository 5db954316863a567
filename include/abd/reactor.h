/* SPDX-License-Identifier: MIT */
/* The reactor: one single-threaded event loop per thread that wants one, with an io_uring
 * backend and an epoll twin of the same behaviour (docs/reactor.md).
 *
 * Sources: fd readiness, eventfd reads, pidfd exits, timers, futex-word waits, deferred
 * callbacks, a registry watch and an acquisition handshake server. Each add call returns a source handle; abd_source_free() removes it at any
 * time, also from inside any callback (its own included), and once it returns that source's
 * callback is never called again.
 *
 * Descriptors given to the reactor (fd, eventfd, pidfd) are *borrowed*: the caller keeps them
 * open until the source is freed and closes them afterwards. Descriptors the reactor creates
 * (ring, epoll, timerfds, the embedding fd, the eventfd of a futex source's thread) are its
 * own, O_CLOEXEC, and closed by abd_reactor_free() (or when their source is freed).
 *
 * Threads: a reactor belongs to the thread that created it. Every call from another thread
 * returns -EBUSY (void calls do nothing). The only threads it makes itself serve futex
 * sources where the backend cannot wait on a futex word (abd_reactor_add_futex); they block
 * every signal and run no callback. After fork() the child must not use the parent's
 * reactor: calls return -ECHILD; abd_reactor_free() and abd_source_free() in the child only
 * release the child's memory and descriptors and never touch the kernel objects it still
 * shares with the parent (fork copies no futex thread: the parent's keep serving the
 * parent).
 *
 * Callbacks run from abd_reactor_run_once()/abd_reactor_run() on the owning thread. A
 * callback may add and free sources and call abd_reactor_stop(); it must not call
 * abd_reactor_free(), abd_reactor_run_once() or abd_reactor_run() on its own reactor (those
 * return -EBUSY / do nothing there). */
#ifndef ABD_REACTOR_H
#define ABD_REACTOR_H

#include <abd/common.h>
#include <abd/probe.h>
#include <abd/registry.h>

ABD_BEGIN_DECLS

struct abd_reactor;
struct abd_source;

/* abd_reactor_new flags. Without either, the backend is abd_choose_backend()'s. */
#define ABD_REACTOR_FORCE_EPOLL 0x1u
#define ABD_REACTOR_FORCE_IO_URING 0x2u

/* Every callback gets its source, a status and a value:
 *   status 0: the event happened; value says how (per source type below);
 *   status -errno: the kernel refused the watch (e.g. -EBADF for a closed fd); the source is
 *   then inactive and only abd_source_free() remains to be called on it. */
typedef void abd_source_fn(struct abd_source *source, int status, uint64_t value, void *userdata);

/* Create a reactor. flags: 0, ABD_REACTOR_FORCE_EPOLL or ABD_REACTOR_FORCE_IO_URING.
 * Errors: -EINVAL (out NULL, unknown or both force flags), -EOPNOTSUPP (io_uring forced
 * but the probe or the build lacks it), -ENOMEM, or what io_uring_setup / epoll_create1
 * returned (-EMFILE, -EPERM...). */
ABD_EXPORT int abd_reactor_new(unsigned flags, struct abd_reactor **out);

/* Remove every source (cancelling in-flight io_uring requests and waiting for the kernel to
 * let go of them) and close the reactor's descriptors. NULL is ignored; so is a call from a
 * callback or from another thread. */
ABD_EXPORT void abd_reactor_free(struct abd_reactor *reactor);
ABD_DEFINE_POINTER_CLEANUP(struct abd_reactor, abd_reactor_free)

/* ABD_BACKEND_IO_URING or ABD_BACKEND_EPOLL; -EINVAL for NULL. */
ABD_EXPORT int abd_reactor_backend(const struct abd_reactor *reactor);

/* Embedding: an fd that becomes readable (POLLIN) when the reactor has work; then call
 * abd_reactor_run_once(reactor, 0). epoll: the epoll fd itself; io_uring: the ring fd (the
 * first call moves a DEFER_TASKRUN ring's sources to a ring without it, losing no event:
 * under DEFER_TASKRUN the kernel does not wake pollers). io_uring completes requests with
 * task work on the owning thread, which makes that thread's poll()/epoll_wait() return EINTR
 * first: retry on EINTR. The fd stays the reactor's (do not close it; do not read it).
 * Errors: -EINVAL, -EBUSY, -ECHILD, -ENOMEM, or what io_uring_setup returned. */
ABD_EXPORT int abd_reactor_fd(struct abd_reactor *reactor);

/* Wait up to timeout_ns (0: do not block; negative: no limit) for events, then dispatch
 * every ready one and every deferred callback queued before this call. Returns the number of
 * callbacks run (0 on timeout), or -EINVAL, -EBUSY (another thread, or from a callback),
 * -ECHILD (after fork), or a kernel error (-ENOMEM...). Signals interrupting the wait give 0. */
ABD_EXPORT int abd_reactor_run_once(struct abd_reactor *reactor, int64_t timeout_ns);

/* Run until abd_reactor_stop(). Returns 0 once stopped, or what run_once returned on error. */
ABD_EXPORT int abd_reactor_run(struct abd_reactor *reactor);

/* Make abd_reactor_run() return after the current iteration. 0, -EINVAL, -EBUSY, -ECHILD. */
ABD_EXPORT int abd_reactor_stop(struct abd_reactor *reactor);

/* The add calls share their arguments and errors: fn required; userdata passed back; out
 * NULL makes the source *floating*: the reactor owns it and frees it once it can never fire
 * again (a deferred call after running, a pidfd after the exit, a one-shot timer after
 * expiry) or with the reactor. Errors: -EINVAL (bad arguments), -EBUSY (another thread),
 * -ECHILD (after fork), -ENOMEM, -EOPNOTSUPP (not on this backend), or a kernel error. */

/* fd readiness, level-triggered: fn(value = revents) each iteration while the fd is ready
 * for any of events (POLLIN, POLLOUT, POLLPRI; POLLERR/POLLHUP always). fd borrowed.
 * epoll: one source per fd (a second one: -EEXIST); io_uring allows several. */
ABD_EXPORT int abd_reactor_add_io(struct abd_reactor *reactor, int fd, uint32_t events,
                                  abd_source_fn *fn, void *userdata, struct abd_source **out);

/* An eventfd: the reactor reads (drains) the counter and calls fn(value = what it read).
 * Give an EFD_NONBLOCK eventfd if anyone else also reads it. fd borrowed. */
ABD_EXPORT int abd_reactor_add_eventfd(struct abd_reactor *reactor, int fd, abd_source_fn *fn,
                                       void *userdata, struct abd_source **out);

/* A pidfd (pidfd_open): fn(value 0) once, when the process exits; the source is then
 * inactive. pidfd borrowed. */
ABD_EXPORT int abd_reactor_add_pidfd(struct abd_reactor *reactor, int pidfd, abd_source_fn *fn,
                                     void *userdata, struct abd_source **out);

/* Timers on CLOCK_MONOTONIC. when_ns: from now, or with ABD_TIMER_ABSOLUTE a clock_gettime
 * (CLOCK_MONOTONIC) time in ns; period_ns 0: one-shot, else periodic. fn(value = how many
 * expirations since the last call, >= 1). Timers due in the same iteration run in the order
 * the kernel reports them, which is deadline order. */
#define ABD_TIMER_ABSOLUTE 0x1u
ABD_EXPORT int abd_reactor_add_timer(struct abd_reactor *reactor, uint64_t when_ns,
                                     uint64_t period_ns, unsigned flags, abd_source_fn *fn,
                                     void *userdata, struct abd_source **out);

/* Re-arm or change a timer source (also after a one-shot timer expired). -EINVAL if source
 * is not a timer; -EBUSY, -ECHILD. */
ABD_EXPORT int abd_source_set_timer(struct abd_source *source, uint64_t when_ns,
                                    uint64_t period_ns, unsigned flags);

/* Wait until the 32-bit word (4-byte aligned; may be in shared memory, waited on as a shared,
 * non-private futex) is woken with FUTEX_WAKE while it holds expected, or holds another value
 * when the wait begins: fn(value 1 if woken, 0 if the word differed); either way, look at the
 * word again (a wake may be meant for another sleeper of the word). One-shot: re-arm with
 * abd_source_futex_arm() after checking the word. The word's memory must stay mapped until
 * the source is freed. Every backend: io_uring waits with IORING_OP_FUTEX_WAIT where the
 * kernel has it (Linux 6.7, probe feature ABD_FEAT_URING_FUTEX_WAIT); elsewhere (epoll,
 * older io_uring) a thread of the reactor's own, one per source with all signals blocked,
 * waits on the word and wakes the loop through a private eventfd in the reactor's set, so
 * abd_reactor_fd() reports it too. Such a wait begins a moment after the call returns (a
 * word changed meanwhile gives value 0), and a turn of the loop that finds the word moved
 * ends it there, value 0, wake or not; freeing the source wakes and joins the thread (where
 * futex_waitv is missing, with a FUTEX_WAKE on the word: its other sleepers see a spurious
 * wake-up). Errors as for every add call, and -EAGAIN (no thread could be made), -EMFILE or
 * -ENFILE (no eventfd), -EOPNOTSUPP (the probe has no futex(2) at all). */
ABD_EXPORT int abd_reactor_add_futex(struct abd_reactor *reactor, const uint32_t *word,
                                     uint32_t expected, abd_source_fn *fn, void *userdata,
                                     struct abd_source **out);

/* Re-arm a futex source that has fired, with a new expected value. -EINVAL (not a futex
 * source), -EALREADY (still armed), -EBUSY, -ECHILD. */
ABD_EXPORT int abd_source_futex_arm(struct abd_source *source, uint32_t expected);

/* fn(value 0) once, on the next iteration of the loop (never from inside this call). Runs
 * even if nothing else happens: the loop does not block while deferred calls wait. */
ABD_EXPORT int abd_reactor_add_defer(struct abd_reactor *reactor, abd_source_fn *fn,
                                     void *userdata, struct abd_source **out);

/* ------------------------------------------------------------ registry and handshakes -- */

struct abd_acquire_server;

/* A registry watch's events through the reactor: status 0 with type and entry (entry valid
 * only during the call), or status -errno with type 0 and entry NULL when the watch failed
 * (-EIDRM: the directory was removed or moved; -ENOMEM; another -errno of reading inotify):
 * the source is then inactive and only abd_source_free() remains to be called on it. */
typedef void abd_watch_event_fn(struct abd_source *source, int status, enum abd_event_type type,
                                const struct abd_entry *entry, void *userdata);

/* Drive a registry watch (abd_watch_new) from the reactor. The directory's inotify stream is
 * read by the reactor (an io_uring READ, or epoll readiness then read(2)); deaths come from
 * the kernel as they do for abd_watch_process: IN_CLOSE_WRITE of the record, and with
 * ABD_WATCH_PIDFD one pidfd source per alive record of this PID namespace. An inotify
 * overflow makes the watch rescan and report the difference. The first iteration reports
 * every entry the watch has not reported yet as ABD_EVENT_ADDED; then each change once.
 *
 * watch is borrowed and must outlive the source, or be freed first: abd_watch_free() on an
 * attached watch removes the source as well (the source handle is then gone: do not free it
 * again). While attached, abd_watch_process/abd_watch_rescan return -EBUSY. The callback may
 * free the source (the watch then stops reporting at once, even mid-batch), the watch
 * (deferred until the batch is over) and other sources. fn required; out NULL: floating, freed
 * with the watch or the reactor.
 * Errors: -EINVAL, -EBUSY (another thread, or the watch is attached already), -ECHILD,
 * -ENOMEM, or a kernel error (-EMFILE for a pidfd...). */
ABD_EXPORT int abd_reactor_add_watch(struct abd_reactor *reactor, struct abd_watch *watch,
                                     abd_watch_event_fn *fn, void *userdata,
                                     struct abd_source **out);

/* Serve an acquisition handshake server (abd_acquire_server_new) from the reactor: the
 * listening socket and each accepted connection are reactor sources (readiness, then
 * non-blocking accept4/recvmsg/sendmsg: the request carries no descriptors and the reply is a
 * single datagram, so nothing ever waits), and one reactor timer drops connections that stay
 * silent past their deadline. The server's limits hold as documented in acquire.h: at most
 * max_pending silent connections (the oldest is evicted), a bounded number of accepts per
 * iteration, so a hostile client can neither block the loop nor starve other sources.
 *
 * srv is borrowed and must outlive the source, or be freed first: abd_acquire_server_free()
 * removes the source as well (the handle is then gone). Removing the source closes the
 * connections still pending; the listening socket stays srv's. While attached,
 * abd_acquire_server_process returns -EBUSY. out NULL: floating (freed with srv or the
 * reactor). Errors: -EINVAL, -EBUSY (another thread, or srv attached already), -ECHILD,
 * -ENOMEM, or a kernel error. */
ABD_EXPORT int abd_reactor_add_acquire_server(struct abd_reactor *reactor,
                                              struct abd_acquire_server *srv,
                                              struct abd_source **out);

/* Remove and free a source; NULL is ignored. Allowed at any time on the owning thread,
 * inside any callback too. Afterwards its callback is never called again; memory the kernel
 * may still write (an in-flight io_uring request) is released only when the kernel has
 * returned the request. From another thread: ignored. */
ABD_EXPORT void abd_source_free(struct abd_source *source);
ABD_DEFINE_POINTER_CLEANUP(struct abd_source, abd_source_free)

/* The userdata given at add time (NULL for NULL). */
ABD_EXPORT void *abd_source_userdata(const struct abd_source *source);

ABD_END_DECLS

#endif
