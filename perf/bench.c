/* SPDX-License-Identifier: MIT */
/* The harness: options, statistics, the row emitter, the subject registry and the
 * two-process runners. See bench.h. */
#include <dirent.h>
#include <errno.h>
#include <linux/futex.h>
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "compat/kernel.h"
#include "perf/bench.h"

struct bench_opts bench_opt;
bool bench_spin_yields;
int bench_cpu_self = -1, bench_cpu_other = -1;
const char *bench_family;     /* set by abd-perf.c around each family */
int bench_failures;           /* rows whose child crashed or the harness failed */

uint64_t bench_iters(uint64_t full, uint64_t quick)
{
	if (bench_opt.iters)
		return bench_opt.iters;
	return bench_opt.quick ? quick : full;
}

uint64_t bench_warmup(uint64_t iters)
{
	uint64_t w = iters / 10;
	return w < 10 ? 10 : w > 10000 ? 10000 : w;
}

/* ---- CPUs ---- */

int bench_cpus(const char *mode, int *a, int *b, const char **why)
{
	cpu_set_t set;
	int first = -1, second = -1;

	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return -errno;
	for (int c = 0; c < CPU_SETSIZE && second < 0; c++) {
		if (!CPU_ISSET(c, &set))
			continue;
		if (first < 0)
			first = c;
		else
			second = c;
	}
	if (first < 0)
		return -ESRCH;
	*a = *b = first;
	if (mode && !strcmp(mode, BENCH_SPLIT)) {
		if (second < 0) {
			*why = "only one CPU allowed";
			return -EOPNOTSUPP;
		}
		*b = second;
	}
	return 0;
}

int bench_pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set) < 0 ? -errno : 0;
}

int bench_tmpdir(char *out, size_t len)
{
	static const char *const bases[] = {"/dev/shm", "/run", "/tmp"};
	for (size_t i = 0; i < sizeof(bases) / sizeof(bases[0]); i++) {
		snprintf(out, len, "%s/abd-perf-XXXXXX", bases[i]);
		if (mkdtemp(out))
			return 0;
	}
	return -errno;
}

void bench_rmdir(const char *dir)
{
	DIR *d = opendir(dir);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d)))
			if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
				unlinkat(dirfd(d), e->d_name, 0);
		closedir(d);
	}
	rmdir(dir);
}

/* ---- statistics ---- */

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
	return (a > b) - (a < b);
}

static double rank(const uint64_t *s, uint64_t n, double p)
{
	uint64_t i = (uint64_t)ceil(p * (double)n);
	return (double)s[i ? i - 1 : 0];
}

void bench_stats(uint64_t *samples, uint64_t n, struct bench_stats *st)
{
	*st = (struct bench_stats){.n = n};
	if (!n)
		return;
	qsort(samples, n, sizeof(*samples), cmp_u64);
	double sum = 0;
	for (uint64_t i = 0; i < n; i++)
		sum += (double)samples[i];
	st->p50 = rank(samples, n, 0.50);
	st->p99 = rank(samples, n, 0.99);
	st->p999 = rank(samples, n, 0.999);
	st->min = (double)samples[0];
	st->max = (double)samples[n - 1];
	st->mean = sum / (double)n;
}

void bench_row_latency(struct bench_row *row, const struct bench_stats *st)
{
	row->p50_ns = st->p50;
	row->p99_ns = st->p99;
	row->p999_ns = st->p999;
	row->iters = st->n;
}

/* ---- rows ---- */

struct kept {
	char *subject, *case_name, *cpus;
	double p50, ops, cpu;
	bool skipped;
};
static struct kept *kept;
static size_t nkept;

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static bool same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

static const struct kept *find_kept(const char *subject, const char *case_name, const char *cpus)
{
	for (size_t i = nkept; i-- > 0;)
		if (same(kept[i].subject, subject) && same(kept[i].case_name, case_name) &&
		    (!cpus || same(kept[i].cpus, cpus)))
			return &kept[i];
	return NULL;
}

static void keep(const struct bench_row *r)
{
	struct kept *k = realloc(kept, (nkept + 1) * sizeof(*kept));
	if (!k)
		return;
	kept = k;
	kept[nkept++] = (struct kept){
		.subject = dup_or_null(r->subject),
		.case_name = dup_or_null(r->case_name),
		.cpus = dup_or_null(r->cpus),
		.p50 = r->p50_ns,
		.ops = r->ops_per_s,
		.cpu = r->cpu_ns,
		.skipped = r->skipped != NULL,
	};
}

static void json_str(const char *s)
{
	if (!s) {
		fputs("null", stdout);
		return;
	}
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20 || *p >= 0x7f)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

static void json_key_str(const char *key, const char *val)
{
	printf(",\"%s\":", key);
	json_str(val);
}

static void json_key_num(const char *key, double v, int decimals)
{
	if (v > 0 && isfinite(v))
		printf(",\"%s\":%.*f", key, decimals, v);
}

static const char *fmt_ns(char *buf, size_t len, double ns)
{
	if (ns <= 0)
		snprintf(buf, len, "-");
	else if (ns < 1e3)
		snprintf(buf, len, "%.0fns", ns);
	else if (ns < 1e6)
		snprintf(buf, len, "%.2fus", ns / 1e3);
	else if (ns < 1e9)
		snprintf(buf, len, "%.2fms", ns / 1e6);
	else
		snprintf(buf, len, "%.2fs", ns / 1e9);
	return buf;
}

static const char *fmt_ops(char *buf, size_t len, double ops)
{
	if (ops <= 0)
		snprintf(buf, len, "-");
	else if (ops >= 1e6)
		snprintf(buf, len, "%.1fM/s", ops / 1e6);
	else
		snprintf(buf, len, "%.1fk/s", ops / 1e3);
	return buf;
}

static void print_header(void)
{
	static bool done;
	if (done || bench_opt.json)
		return;
	done = true;
	printf("%-10s %-24s %-18s %-6s %5s %9s %9s %9s %10s %8s  %s\n", "bench", "subject", "case",
	       "cpus", "bytes", "p50", "p99", "p99.9", "ops/s", "ratio", "vs baseline");
}

void bench_emit(const struct bench_row *in)
{
	struct bench_row r = *in;
	if (!r.bench)
		r.bench = bench_family ? bench_family : "?";

	/* The ratio against the baseline's row in this invocation (measured now if needed). */
	bool have_ratio = false;
	double ratio = 0;
	const char *ratio_of = r.cpu_measured ? "cpu_ns"
	                       : r.ops_per_s > 0 && r.p50_ns <= 0 ? "ops_per_s" : "p50_ns";
	const char *bcase = r.baseline_case ? r.baseline_case : r.case_name;
	if (r.baseline && !r.skipped) {
		const struct kept *b = find_kept(r.baseline, bcase, r.cpus);
		if (!b && bench_subject_run(r.baseline) == 0)
			b = find_kept(r.baseline, bcase, r.cpus);
		if (b && !b->skipped) {
			double mine = !strcmp(ratio_of, "p50_ns") ? r.p50_ns
			              : !strcmp(ratio_of, "cpu_ns") ? r.cpu_ns : r.ops_per_s;
			double theirs = !strcmp(ratio_of, "p50_ns") ? b->p50
			                : !strcmp(ratio_of, "cpu_ns") ? b->cpu : b->ops;
			if (mine > 0 && theirs > 0) {
				ratio = mine / theirs;
				have_ratio = true;
			}
		}
	}
	keep(&r);

	if (bench_opt.json) {
		printf("{\"bench\":");
		json_str(r.bench);
		json_key_str("subject", r.subject);
		if (r.case_name)
			json_key_str("case", r.case_name);
		if (r.cpus)
			json_key_str("cpus", r.cpus);
		if (r.msg_bytes)
			printf(",\"msg_bytes\":%u", r.msg_bytes);
		if (r.skipped) {
			printf(",\"skipped\":true");
			json_key_str("reason", r.skipped);
		} else {
			if (r.iters)
				printf(",\"iters\":%llu", (unsigned long long)r.iters);
			json_key_num("p50_ns", r.p50_ns, 1);
			json_key_num("p99_ns", r.p99_ns, 1);
			json_key_num("p999_ns", r.p999_ns, 1);
			json_key_num("ops_per_s", r.ops_per_s, 0);
			if (r.has_syscalls)
				printf(",\"syscalls_per_msg\":%.6f", r.syscalls_per_msg);
			if (r.cpu_measured)
				printf(",\"cpu_ns\":%.0f", r.cpu_ns);
		}
		if (r.baseline) {
			json_key_str("baseline", r.baseline);
			if (bcase)
				json_key_str("baseline_case", bcase);
			json_key_str("ratio_of", ratio_of);
			if (have_ratio)
				printf(",\"ratio\":%.3f", ratio);
			else
				printf(",\"ratio\":null");
		}
		printf("}\n");
	} else {
		char p50[16], p99[16], p999[16], ops[16], rat[16] = "", bytes[16] = "";
		print_header();
		if (r.msg_bytes)
			snprintf(bytes, sizeof(bytes), "%u", r.msg_bytes);
		if (have_ratio)
			snprintf(rat, sizeof(rat), "%.2fx", ratio);
		else if (r.baseline)
			snprintf(rat, sizeof(rat), "n/a");
		if (r.skipped) {
			printf("%-10s %-24s %-18s %-6s %5s skipped: %s\n", r.bench, r.subject,
			       r.case_name ? r.case_name : "", r.cpus ? r.cpus : "", bytes, r.skipped);
		} else {
			printf("%-10s %-24s %-18s %-6s %5s %9s %9s %9s %10s %8s  %s%s\n", r.bench,
			       r.subject, r.case_name ? r.case_name : "", r.cpus ? r.cpus : "", bytes,
			       fmt_ns(p50, sizeof(p50), r.p50_ns), fmt_ns(p99, sizeof(p99), r.p99_ns),
			       fmt_ns(p999, sizeof(p999), r.p999_ns), fmt_ops(ops, sizeof(ops), r.ops_per_s),
			       rat, r.baseline ? r.baseline : "",
			       r.baseline && have_ratio ? (!strcmp(ratio_of, "p50_ns") ? " (p50)"
			                                   : !strcmp(ratio_of, "cpu_ns") ? " (cpu)" : " (ops/s)")
			                                : "");
			if (r.has_syscalls)
				printf("%*s syscalls/msg %.6f\n", 10, "", r.syscalls_per_msg);
			if (r.cpu_measured)
				printf("%-10s %-24s %-18s cpu %.0f ns\n", "", "", "", r.cpu_ns);
		}
	}
	fflush(stdout);
}

void bench_skip(const struct bench_row *tmpl, const char *fmt, ...)
{
	char why[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	struct bench_row r = *tmpl;
	r.skipped = why;
	bench_emit(&r);
}

/* ---- subjects ---- */

static const struct bench_subject *const subject_tables[] = {bench_baseline_subjects,
                                                             bench_peer_subjects};

const struct bench_subject *bench_subject_find(const char *name)
{
	for (size_t t = 0; t < sizeof(subject_tables) / sizeof(subject_tables[0]); t++)
		for (const struct bench_subject *s = subject_tables[t]; s->name; s++)
			if (!strcmp(s->name, name))
				return s;
	return NULL;
}

void bench_subject_list(void)
{
	for (size_t t = 0; t < sizeof(subject_tables) / sizeof(subject_tables[0]); t++)
		for (const struct bench_subject *s = subject_tables[t]; s->name; s++)
			printf("%s\n", s->name);
}

int bench_subject_run(const char *name)
{
	static const char *ran[64];
	static size_t nran;

	for (size_t i = 0; i < nran; i++)
		if (!strcmp(ran[i], name))
			return 0;
	const struct bench_subject *s = bench_subject_find(name);
	if (!s)
		return -ENOENT;
	if (nran < sizeof(ran) / sizeof(ran[0]))
		ran[nran++] = s->name;
	s->run();
	return 0;
}

/* ---- futex ---- */

int bench_futex_wait(uint32_t *word, uint32_t expected)
{
	if (syscall(SYS_futex, word, FUTEX_WAIT, expected, NULL, NULL, 0) < 0 && errno != EAGAIN &&
	    errno != EINTR)
		return -errno;
	return 0;
}

int bench_futex_wake(uint32_t *word)
{
	return syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0) < 0 ? -errno : 0;
}

/* ---- syscall counting ---- */

int bench_syscall_tracepoint(void)
{
	static int id; /* 0: not looked up yet */
	static const char path[] = "/sys/kernel/tracing/events/raw_syscalls/sys_enter/id";
	char buf[32] = "";
	int p[2];

	if (id)
		return id;
	id = -ENOENT;
	/* tracefs is often not mounted: mount it in a private mount namespace of a helper. */
	if (pipe2(p, O_CLOEXEC) < 0)
		return id = -errno;
	pid_t pid = fork();
	if (pid == 0) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 && unshare(CLONE_NEWNS) == 0 &&
		    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 &&
		    mount("nodev", "/sys/kernel/tracing", "tracefs", 0, NULL) == 0)
			fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0 && read(fd, buf, sizeof(buf) - 1) > 0)
			(void)!write(p[1], buf, strlen(buf));
		_exit(0);
	}
	close(p[1]);
	if (pid > 0) {
		ssize_t n = read(p[0], buf, sizeof(buf) - 1);
		waitpid(pid, NULL, 0);
		if (n > 0 && atoi(buf) > 0)
			id = atoi(buf);
	}
	close(p[0]);
	return id;
}

int bench_syscalls_open(int tracepoint)
{
	struct perf_event_attr a = {
		.type = PERF_TYPE_TRACEPOINT,
		.size = sizeof(a),
		.config = (uint64_t)tracepoint,
		.inherit = 1,
	};
	int fd = (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int64_t bench_syscalls_read(int fd)
{
	uint64_t n;
	if (fd < 0 || read(fd, &n, sizeof(n)) != (ssize_t)sizeof(n))
		return -1;
	return n ? (int64_t)n - 1 : 0; /* this read() itself was counted */
}

/* ---- runners ---- */

/* The control block both children and the main process share. */
struct ctl {
	_Atomic uint32_t stage; /* 0 start, 1 B ready, 2 A ready, STAGE_CONSUMED, STAGE_ABORT */
	int err[2];
	uint64_t t0, t1;        /* throughput: B's timed window */
	int syscall_tp;         /* raw_syscalls:sys_enter id, when counting */
	int64_t syscalls[2];    /* each side's syscalls in the timed phase, -1 = not counted */
	char reason[200];
};
#define STAGE_CONSUMED 3u
#define STAGE_ABORT 99u

static struct ctl *child_ctl; /* in a child: where bench_fail() writes */
static char main_reason[200];  /* in the main process (prepare): the same */

int bench_fail(const char *fmt, ...)
{
	char *out = child_ctl ? child_ctl->reason : main_reason;
	if (!out[0]) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(out, sizeof(main_reason), fmt, ap);
		va_end(ap);
	}
	return -ECANCELED;
}

static void *map_shared(size_t size)
{
	void *p = mmap(NULL, size ? size : 1, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void note_error(struct ctl *c, enum bench_role role, const char *what, int err)
{
	if (!c->reason[0] && err != -ECANCELED)
		snprintf(c->reason, sizeof(c->reason), "%s: %s: %s", role == BENCH_A ? "A" : "B", what,
		         strerror(-err));
	c->err[role] = err;
	atomic_store(&c->stage, STAGE_ABORT);
}

static bool wait_stage(struct ctl *c, uint32_t want)
{
	uint32_t s;
	while ((s = atomic_load(&c->stage)) < want)
		usleep(50);
	return s != STAGE_ABORT;
}

enum kind { PINGPONG, THROUGHPUT };

/* Body of each child; returns the exit status. */
static int child(const struct bench_pair *p, enum kind kind, enum bench_role role, int cpu,
                 int other, bool shared, struct ctl *c, void *shm, uint64_t *samples, uint64_t warm,
                 uint64_t iters)
{
	void *state = shm;
	int r;

	child_ctl = c;
	prctl(PR_SET_PDEATHSIG, SIGKILL); /* abd-perf killed: nothing keeps spinning */
	if (getppid() == 1)
		return 1;
	bench_spin_yields = shared;
	bench_cpu_self = cpu;
	bench_cpu_other = other;
	if ((r = bench_pin(cpu)) < 0)
		return note_error(c, role, "sched_setaffinity", r), 1;
	if (role == BENCH_A && !wait_stage(c, 1))
		return 1;
	if (p->init && (r = p->init(role, shm, p->arg, &state)) < 0)
		return note_error(c, role, "init", r), 1;
	atomic_fetch_add(&c->stage, 1); /* B: 0 -> 1, A: 1 -> 2 */
	if (!wait_stage(c, 2))
		goto out;

	/* The syscall counter (when asked for) runs over the timed phase only. */
	int cfd = -1;
	int tp = p->count_syscalls ? c->syscall_tp : 0;
	if (kind == PINGPONG && role == BENCH_A) {
		for (uint64_t i = 0; i < warm + iters; i++) {
			if (i == warm && tp > 0)
				cfd = bench_syscalls_open(tp);
			uint64_t own = 0, t0 = bench_now_ns();
			if ((r = p->ping(state, &own)) < 0) {
				note_error(c, role, "ping", r);
				break;
			}
			uint64_t t = own ? own : bench_now_ns() - t0;
			if (i >= warm)
				samples[i - warm] = p->halve ? t / 2 : t;
		}
		c->syscalls[role] = bench_syscalls_read(cfd);
	} else if (kind == PINGPONG) {
		for (uint64_t i = 0; i < warm + iters; i++) {
			if (i == warm && tp > 0)
				cfd = bench_syscalls_open(tp);
			if ((r = p->pong(state)) < 0) {
				note_error(c, role, "pong", r);
				break;
			}
		}
		c->syscalls[role] = bench_syscalls_read(cfd);
	} else if (role == BENCH_A) {
		if ((r = p->produce(state, warm)) == 0) {
			cfd = tp > 0 ? bench_syscalls_open(tp) : -1;
			r = p->produce(state, iters);
			c->syscalls[role] = bench_syscalls_read(cfd);
		}
		/* Stay open until B has everything: closing may drop what is still queued. */
		if (r < 0)
			note_error(c, role, "produce", r);
		else
			wait_stage(c, STAGE_CONSUMED);
	} else {
		if ((r = p->consume(state, warm)) < 0) {
			note_error(c, role, "consume", r);
		} else {
			cfd = tp > 0 ? bench_syscalls_open(tp) : -1;
			c->t0 = bench_now_ns();
			if ((r = p->consume(state, iters)) < 0)
				note_error(c, role, "consume", r);
			c->t1 = bench_now_ns();
			c->syscalls[role] = bench_syscalls_read(cfd);
			uint32_t running = 2;
			atomic_compare_exchange_strong(&c->stage, &running, STAGE_CONSUMED);
		}
	}
	if (cfd >= 0)
		close(cfd);
out:
	if (p->fini)
		p->fini(role, state);
	return c->err[role] ? 1 : 0;
}

static void set_syscalls(struct bench_row *row, const struct ctl *c, uint64_t iters)
{
	if (c->syscalls[0] >= 0 && c->syscalls[1] >= 0) {
		row->has_syscalls = true;
		row->syscalls_per_msg = (double)(c->syscalls[0] + c->syscalls[1]) / (double)iters;
	}
}

static int run(const struct bench_pair *p, enum kind kind, struct bench_row row, uint64_t iters)
{
	int cpu[2], r;
	const char *why = NULL;
	uint64_t warm = bench_warmup(iters);

	if ((r = bench_cpus(row.cpus, &cpu[0], &cpu[1], &why)) < 0) {
		bench_skip(&row, "%s", why ? why : strerror(-r));
		return 0;
	}
	struct ctl *c = map_shared(sizeof(*c));
	void *shm = map_shared(p->shm_size);
	uint64_t *samples = kind == PINGPONG ? map_shared(iters * sizeof(uint64_t)) : NULL;
	if (!c || !shm || (kind == PINGPONG && !samples)) {
		r = -ENOMEM;
		bench_skip(&row, "mmap: %s", strerror(ENOMEM));
		bench_failures++;
		goto unmap;
	}
	c->syscalls[0] = c->syscalls[1] = -1;
	if (p->count_syscalls)
		c->syscall_tp = bench_syscall_tracepoint();
	main_reason[0] = 0;
	if (p->prepare && (r = p->prepare(shm, p->arg)) < 0) {
		if (main_reason[0])
			bench_skip(&row, "%s", main_reason);
		else
			bench_skip(&row, "prepare: %s", strerror(-r));
		goto unmap;
	}

	fflush(stdout);
	pid_t pid[2] = {-1, -1};
	int pidfd[2] = {-1, -1}, status[2] = {0, 0};
	bool done[2] = {false, false}, killed[2] = {false, false};
	for (int role = BENCH_B; role >= BENCH_A; role--) {
		pid[role] = fork();
		if (pid[role] == 0)
			_exit(child(p, kind, (enum bench_role)role, cpu[role], cpu[1 - role],
			            !strcmp(row.cpus ? row.cpus : "", BENCH_SHARED), c, shm, samples, warm,
			            iters));
		if (pid[role] < 0) {
			note_error(c, (enum bench_role)role, "fork", -errno);
			break;
		}
		pidfd[role] = abd__pidfd_open(pid[role], 0);
	}

	/* A generous deadline: a run that takes minutes is broken or starved, not slow. A child
	 * that fails or dies ends the run at once: its peer would wait for it forever. */
	uint64_t deadline = bench_now_ns() + (bench_opt.quick ? 30 : 120) * 1000000000ull;
	bool timeout = false, stop = false;
	while (!stop) {
		struct pollfd pfd[2];
		int who[2], n = 0, ms;
		for (int k = 0; k < 2; k++)
			if (pid[k] > 0 && !done[k]) {
				pfd[n] = (struct pollfd){.fd = pidfd[k], .events = POLLIN};
				who[n++] = k;
			}
		if (!n)
			break;
		uint64_t now = bench_now_ns();
		if (atomic_load(&c->stage) == STAGE_ABORT && deadline > now + 2000000000ull)
			deadline = now + 2000000000ull; /* a failing side: the other gets 2 s to notice */
		if (now >= deadline) {
			timeout = true;
			break;
		}
		ms = (int)((deadline - now) / 1000000) + 1;
		if (pidfd[0] < 0 || pidfd[1] < 0)
			ms = ms < 10 ? ms : 10; /* no pidfd: poll waitpid instead */
		if (poll(pfd, (nfds_t)n, ms) < 0 && errno != EINTR)
			break;
		for (int j = 0; j < n; j++) {
			int k = who[j];
			if (waitpid(pid[k], &status[k], WNOHANG) != pid[k])
				continue;
			done[k] = true;
			if (!WIFEXITED(status[k]) || WEXITSTATUS(status[k]) != 0)
				stop = true;
		}
	}
	for (int k = 0; k < 2; k++)
		if (pid[k] > 0 && !done[k])
			killed[k] = kill(pid[k], SIGKILL) == 0;
	for (int k = 0; k < 2; k++) {
		if (pid[k] > 0 && !done[k])
			done[k] = waitpid(pid[k], &status[k], 0) == pid[k];
		if (pidfd[k] >= 0)
			close(pidfd[k]);
	}
	if (p->cleanup)
		p->cleanup(shm, p->arg);

	for (int k = 0; k < 2; k++)
		if (!killed[k] && WIFSIGNALED(status[k])) {
			bench_failures++;
			bench_skip(&row, "%s died of signal %d", k == BENCH_A ? "A" : "B", WTERMSIG(status[k]));
			r = -ECHILD;
			goto unmap;
		}
	if (timeout) {
		bench_skip(&row, "timeout (%s)", c->reason[0] ? c->reason : "no progress");
		r = -ETIMEDOUT;
	} else if (atomic_load(&c->stage) == STAGE_ABORT || c->err[0] || c->err[1]) {
		bench_skip(&row, "%s", c->reason[0] ? c->reason : "failed");
		r = c->err[0] ? c->err[0] : c->err[1] ? c->err[1] : -ECANCELED;
	} else if (kind == PINGPONG) {
		set_syscalls(&row, c, iters);
		struct bench_stats st;
		bench_stats(samples, iters, &st);
		bench_row_latency(&row, &st);
		if (p->result)
			*p->result = st;
		bench_emit(&row);
		r = 0;
	} else {
		set_syscalls(&row, c, iters);
		row.iters = iters;
		row.ops_per_s = (double)iters * 1e9 / (double)(c->t1 - c->t0 ? c->t1 - c->t0 : 1);
		bench_emit(&row);
		r = 0;
	}
unmap:
	if (samples)
		munmap(samples, iters * sizeof(uint64_t));
	if (shm)
		munmap(shm, p->shm_size ? p->shm_size : 1);
	if (c)
		munmap(c, sizeof(*c));
	return r;
}

int bench_pingpong(const struct bench_pair *p, struct bench_row row, uint64_t iters)
{
	return run(p, PINGPONG, row, iters ? iters : 1);
}

int bench_throughput(const struct bench_pair *p, struct bench_row row, uint64_t iters)
{
	return run(p, THROUGHPUT, row, iters ? iters : 1);
}
