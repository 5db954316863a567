/* SPDX-License-Identifier: MIT */
/* Plain subset (MSan, TSan): acquisition by both paths from a real publisher process, the
 * automatic choice, threads acquiring at once (the process-wide refusal memory), and an
 * in-process server fed garbage. */
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "tap.h"
#include "tests/acquire-util.h"

static pid_t fork_fn(int (*fn)(void *), void *arg)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0)
		_exit(fn(arg));
	return pid;
}

struct th {
	const char *dir;
	int ok;
	int first_err; /* the first failure: an acquisition's -errno, or 1 for a failed check */
	char why[96];  /* the failed check's reason (tpub_check_why) */
};

static void *thread_main(void *arg)
{
	struct th *t = arg;
	for (int i = 0; i < 20; i++) {
		struct abd_acquired *a;
		int r = tpub_acquire(t->dir, "plain.svc", 0, -1, &a);
		if (r == 0) {
			bool good = tpub_check_fds_ex(a, false);
			t->ok += good;
			if (!good && !t->first_err) {
				t->first_err = 1;
				snprintf(t->why, sizeof(t->why), "%s", tpub_check_why);
			}
			abd_acquired_free(a);
		} else if (!t->first_err) {
			t->first_err = r;
		}
	}
	return NULL;
}

/* Threads sharing one registry handle and one record, by the handshake: the handle's entry
 * for the publisher (its kept connection) is taken by one thread at a time; the others
 * connect their own, and what is put back twice is closed. */
struct shared_th {
	struct abd_registry *reg;
	const struct abd_record *rec;
	int ok, first_err;
};

static void *shared_thread_main(void *arg)
{
	struct shared_th *t = arg;
	for (int i = 0; i < 20; i++) {
		struct abd_acquired *a = NULL;
		int r = abd_acquire(t->reg, t->rec, ABD_ACQUIRE_SCM_RIGHTS, -1, &a);
		if (r == 0 && tpub_check_fds_ex(a, false))
			t->ok++;
		else if (!t->first_err)
			t->first_err = r ? r : 1;
		abd_acquired_free(a);
	}
	return NULL;
}

int main(void)
{
	char dir[] = "/dev/shm/abd-plain-acquire-XXXXXX";
	if (!mkdtemp(dir)) {
		TAP_SKIP("no /dev/shm");
		return tap_done();
	}
	struct tpub t;
	tpub_init(&t, dir, "plain.svc");
	int r = tpub_start(&t, fork_fn);
	TAP_CHECK(r == 0, "publisher started (%d)", r);
	if (r != 0)
		return tap_done();

	struct abd_acquired *a = NULL;
	r = tpub_acquire(dir, "plain.svc", ABD_ACQUIRE_SCM_RIGHTS, -1, &a);
	TAP_CHECK(r == 0 && abd_acquired_path(a) == ABD_FD_TRANSFER_SCM_RIGHTS && tpub_check_fds(a),
	          "handshake: %d", r);
	pid_t pid = 0;
	uid_t uid = 1;
	abd_acquired_peer(a, &pid, &uid, NULL);
	TAP_CHECK(pid == t.pid && uid == geteuid(), "handshake peer is the publisher");
	abd_acquired_free(a);

	a = NULL;
	r = tpub_acquire(dir, "plain.svc", ABD_ACQUIRE_PIDFD_GETFD, -1, &a);
	if (abd_probe_has(ABD_FEAT_PIDFD_GETFD) == 1)
		TAP_CHECK(r == 0 && abd_acquired_path(a) == ABD_FD_TRANSFER_PIDFD_GETFD &&
		          tpub_check_fds(a), "pidfd_getfd: %d", r);
	else
		TAP_CHECK(r == -ENOSYS || r == -EPERM, "pidfd_getfd unavailable here: %d", r);
	abd_acquired_free(a);

	a = NULL;
	r = tpub_acquire(dir, "plain.svc", 0, -1, &a);
	enum abd_fd_transfer want = abd_probe_has(ABD_FEAT_PIDFD_GETFD) == 1
	                                ? ABD_FD_TRANSFER_PIDFD_GETFD
	                                : ABD_FD_TRANSFER_SCM_RIGHTS;
	TAP_CHECK(r == 0 && abd_acquired_path(a) == want, "automatic choice: %s",
	          r == 0 ? abd_fd_transfer_name(abd_acquired_path(a)) : strerror(-r));
	abd_acquired_free(a);

	struct th ths[4];
	pthread_t tid[4];
	for (int i = 0; i < 4; i++) {
		ths[i] = (struct th){ .dir = dir };
		pthread_create(&tid[i], NULL, thread_main, &ths[i]);
	}
	int ok = 0, err = 0;
	const char *why = "";
	for (int i = 0; i < 4; i++) {
		pthread_join(tid[i], NULL);
		ok += ths[i].ok;
		if (!err) {
			err = ths[i].first_err;
			why = ths[i].why;
		}
	}
	TAP_CHECK(ok == 80, "4 threads x 20 acquisitions: %d verified (first failure: %s%s)", ok,
	          err == 1 ? "a descriptor check, " : err ? strerror(-err) : "none", err == 1 ? why : "");

	{
		struct abd_registry *sreg = NULL;
		struct abd_record *srec = NULL;
		r = abd_registry_open(dir, 0, &sreg, NULL, 0);
		if (r == 0)
			r = abd_registry_lookup(sreg, "plain.svc", &srec);
		struct shared_th sh[4];
		ok = err = 0;
		for (int i = 0; i < 4 && r == 0; i++) {
			sh[i] = (struct shared_th){ .reg = sreg, .rec = srec };
			pthread_create(&tid[i], NULL, shared_thread_main, &sh[i]);
		}
		for (int i = 0; i < 4 && r == 0; i++) {
			pthread_join(tid[i], NULL);
			ok += sh[i].ok;
			if (!err)
				err = sh[i].first_err;
		}
		TAP_CHECK(r == 0 && ok == 80,
		          "4 threads x 20 handshakes through one handle (kept connections): %d verified "
		          "(setup %d, first failure %d)", ok, r, err);
		abd_record_free(srec);
		abd_registry_free(sreg);
	}
	TAP_CHECK(tpub_stop(&t) == 0, "publisher exits cleanly");

	/* an in-process server: garbage and descriptors from a client change nothing */
	struct abd_registry *reg;
	struct abd_acquire_server *srv;
	r = abd_registry_open(dir, 0, &reg, NULL, 0);
	if (r == 0)
		r = abd_acquire_server_new(reg, 0, &srv);
	TAP_CHECK(r == 0, "server: %d", r);
	if (r == 0) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir, abd_acquire_server_socket(srv));
		int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		int c = connect(s, (struct sockaddr *)&sa, sizeof(sa));
		char junk[100];
		memset(junk, 0xa5, sizeof(junk));
		ssize_t n = c == 0 ? send(s, junk, sizeof(junk), 0) : -1;
		r = abd_acquire_server_process(srv);
		struct abd_acquire_server_stats st;
		abd_acquire_server_stats(srv, &st);
		TAP_CHECK(n == 100 && r == 0 && st.malformed == 1 && st.pending == 0,
		          "garbage refused (malformed %llu)", (unsigned long long)st.malformed);
		close(s);
		abd_acquire_server_free(srv);
		abd_registry_free(reg);
	}
	rmdir(dir);
	return tap_done();
}
