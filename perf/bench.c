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

unsigned bench_rounds(void)
{
	return bench_opt.rounds ? bench_opt.rounds : BENCH_ROUNDS_DEFAULT;
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

/* Every reason stays allocated until exit, reachable from here (rows that carried one may
 * have been dropped; LeakSanitizer builds run the CI smoke). */
static char **reasons;
static size_t nreasons;

const char *bench_reason(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	char **more = realloc(reasons, (nreasons + 1) * sizeof(*reasons));
	char *s = more ? strdup(buf) : NULL;
	if (more)
		reasons = more;
	if (!s)
		return "(out of memory formatting the reason)";
	reasons[nreasons++] = s;
	return s;
}

/* ---- rows ---- */

/* Capture: while a baseline's single row is measured for bench_versus, the subject's run
 * function runs with every other row left out (the runners return at once), and the row it
 * emits is kept here instead of printed. */
static struct {
	bool active, got;
	const char *subject, *case_name, *cpus;
	struct bench_row row;
} capture;

static bool same_str(const char *a, const char *b);

static bool capture_wants(const struct bench_row *r)
{
	return !capture.got && same_str(r->subject, capture.subject) &&
	       same_str(r->case_name, capture.case_name) && same_str(r->cpus, capture.cpus);
}

struct kept {
	char *subject, *case_name, *cpus;
	unsigned msg_bytes;
	double p50, ops, cpu, wake, wake_msg;
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

static bool same_str(const char *a, const char *b)
{
	return same(a, b);
}

static const struct kept *find_kept(const char *subject, const char *case_name, const char *cpus)
{
	for (size_t i = nkept; i-- > 0;)
		if (same(kept[i].subject, subject) && same(kept[i].case_name, case_name) &&
		    (!cpus || same(kept[i].cpus, cpus)))
			return &kept[i];
	return NULL;
}

/* A row of this subject, case, cpus and size emitted already in this invocation. */
static bool emitted(const struct bench_row *r)
{
	for (size_t i = 0; i < nkept; i++)
		if (same(kept[i].subject, r->subject) && same(kept[i].case_name, r->case_name) &&
		    same(kept[i].cpus, r->cpus) && kept[i].msg_bytes == r->msg_bytes)
			return true;
	return false;
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
		.msg_bytes = r->msg_bytes,
		.p50 = r->p50_ns,
		.ops = r->ops_per_s,
		.cpu = r->cpu_ns,
		.wake = r->wakeups_per_s,
		.wake_msg = r->wakeups_per_msg,
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

/* The figure a row's ratio is of: CPU time for idle rows, ops/s for throughput rows, else
 * the p50. */
static const char *ratio_key(const struct bench_row *r)
{
	if (r->wakeups_measured)
		return "wakeups_per_s";
	if (r->wakeups_per_msg_measured && r->ops_per_s <= 0)
		return "wakeups_per_msg";
	return r->cpu_measured ? "cpu_ns" : r->ops_per_s > 0 && r->p50_ns <= 0 ? "ops_per_s" : "p50_ns";
}

static double figure_of(const struct bench_row *r, const char *key)
{
	return !strcmp(key, "p50_ns")          ? r->p50_ns
	       : !strcmp(key, "cpu_ns")        ? r->cpu_ns
	       : !strcmp(key, "wakeups_per_s") ? r->wakeups_per_s
	       : !strcmp(key, "wakeups_per_msg") ? r->wakeups_per_msg
	                                       : r->ops_per_s;
}

static const char *fmt_figure(char *buf, size_t len, const char *key, double v)
{
	if (!strcmp(key, "wakeups_per_s")) {
		snprintf(buf, len, "%.1f/s", v);
		return buf;
	}
	if (!strcmp(key, "wakeups_per_msg")) {
		snprintf(buf, len, "%.2f/msg", v);
		return buf;
	}
	return !strcmp(key, "ops_per_s") ? fmt_ops(buf, len, v) : fmt_ns(buf, len, v);
}

static const char *ratio_label(const char *key)
{
	return !strcmp(key, "p50_ns") ? "p50" : !strcmp(key, "cpu_ns") ? "cpu"
	       : !strcmp(key, "wakeups_per_s") ? "wake-ups"
	       : !strcmp(key, "wakeups_per_msg") ? "wake-ups/msg" : "ops/s";
}

void bench_emit(const struct bench_row *in)
{
	struct bench_row r = *in;
	if (!r.bench)
		r.bench = bench_family ? bench_family : "?";

	if (capture.active) {
		/* measuring one baseline row for bench_versus: keep it, print nothing */
		if (capture_wants(&r)) {
			capture.row = r;
			capture.row.skipped = r.skipped ? bench_reason("%s", r.skipped) : NULL;
			capture.got = true;
		}
		return;
	}

	bool have_ratio = false;
	double ratio = 0;
	const char *ratio_of = ratio_key(&r);
	const char *bcase = r.baseline_case ? r.baseline_case : r.case_name;
	if (r.rounds) {
		have_ratio = r.has_ratio;
		ratio = r.ratio;
	} else if (r.baseline && !r.skipped) {
		/* one sample each: the baseline's row emitted last (measured now if needed) */
		const struct kept *b = find_kept(r.baseline, bcase, r.cpus);
		if (!b && bench_subject_run(r.baseline) == 0)
			b = find_kept(r.baseline, bcase, r.cpus);
		if (b && !b->skipped) {
			double mine = figure_of(&r, ratio_of);
			double theirs = !strcmp(ratio_of, "p50_ns")          ? b->p50
			                : !strcmp(ratio_of, "cpu_ns")        ? b->cpu
			                : !strcmp(ratio_of, "wakeups_per_s") ? b->wake
			                : !strcmp(ratio_of, "wakeups_per_msg") ? b->wake_msg
			                                                     : b->ops;
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
			if (r.wakeups_measured)
				printf(",\"wakeups_per_s\":%.2f", r.wakeups_per_s);
			if (r.wakeups_per_msg_measured)
				printf(",\"wakeups_per_msg\":%.3f", r.wakeups_per_msg);
			if (r.rounds)
				printf(",\"rounds\":%u", r.rounds);
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
			if (have_ratio && r.rounds)
				printf(",\"ratio_min\":%.3f,\"ratio_max\":%.3f", r.ratio_min, r.ratio_max);
			if (r.rounds && (r.baseline_figure > 0 || r.wakeups_measured ||
			                 r.wakeups_per_msg_measured))
				printf(",\"baseline_figure\":%.2f", r.baseline_figure);
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
			char how[96] = "";
			if (r.baseline && have_ratio && r.rounds) {
				char bf[16];
				snprintf(how, sizeof(how), " (%s; %u rounds %.2f-%.2fx; baseline %s)",
				         ratio_label(ratio_of),
				         r.rounds, r.ratio_min, r.ratio_max,
				         fmt_figure(bf, sizeof(bf), ratio_of, r.baseline_figure));
			} else if (r.baseline && have_ratio) {
				snprintf(how, sizeof(how), " (%s)",
				         ratio_label(ratio_of));
			} else if (r.rounds) {
				snprintf(how, sizeof(how), "%s(median of %u rounds)", r.baseline ? " " : "", r.rounds);
			}
			printf("%-10s %-24s %-18s %-6s %5s %9s %9s %9s %10s %8s  %s%s\n", r.bench,
			       r.subject, r.case_name ? r.case_name : "", r.cpus ? r.cpus : "", bytes,
			       fmt_ns(p50, sizeof(p50), r.p50_ns), fmt_ns(p99, sizeof(p99), r.p99_ns),
			       fmt_ns(p999, sizeof(p999), r.p999_ns), fmt_ops(ops, sizeof(ops), r.ops_per_s),
			       rat, r.baseline ? r.baseline : "", how);
			if (r.has_syscalls)
				printf("%*s syscalls/msg %.6f\n", 10, "", r.syscalls_per_msg);
			if (r.cpu_measured)
				printf("%-10s %-24s %-18s cpu %.0f ns\n", "", "", "", r.cpu_ns);
			if (r.wakeups_measured && r.baseline && r.rounds)
				printf("%-10s %-24s %-18s wake-ups %.2f/s (baseline %s: %.2f/s)\n", "", "", "",
				       r.wakeups_per_s, r.baseline, r.baseline_figure);
			else if (r.wakeups_measured)
				printf("%-10s %-24s %-18s wake-ups %.2f/s\n", "", "", "", r.wakeups_per_s);
			if (r.wakeups_per_msg_measured)
				printf("%-10s %-24s %-18s wake-ups %.3f per message\n", "", "", "",
				       r.wakeups_per_msg);
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

/* ---- the peer asleep ---- */

int bench_until_asleep(pid_t pid)
{
	static int fd = -1;
	static pid_t fd_pid;
	if (fd < 0 || fd_pid != pid) {
		char path[40];
		if (fd >= 0)
			close(fd);
		snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			return -errno;
		fd_pid = pid;
	}
	uint64_t deadline = bench_now_ns() + 100000000u;
	for (;;) {
		char buf[512];
		ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
		if (n <= 0)
			return n < 0 ? -errno : -ESRCH;
		buf[n] = 0;
		const char *paren = strrchr(buf, ')');
		if (!paren || !paren[1] || !paren[2])
			return -EPROTO;
		if (paren[2] == 'S' || paren[2] == 'D')
			return 0;
		if (bench_now_ns() > deadline)
			return 0; /* never asleep: the sample is taken anyway */
		bench_relax();
	}
}

int64_t bench_vcsw(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	int64_t sum = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char p[96], line[128];
		snprintf(p, sizeof(p), "/proc/%d/task/%s/status", (int)pid, de->d_name);
		FILE *f = fopen(p, "re");
		if (!f)
			continue; /* the thread exited meanwhile */
		while (fgets(line, sizeof(line), f))
			if (!strncmp(line, "voluntary_ctxt_switches:", 24)) {
				sum += strtoll(line + 24, NULL, 10);
				break;
			}
		fclose(f);
	}
	closedir(d);
	return sum;
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

static void skip_row(struct bench_row *row, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void skip_row(struct bench_row *row, const char *fmt, ...)
{
	char why[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	row->skipped = bench_reason("%s", why);
}

/* One sample of a pair: fills *row's figures, or row->skipped; never emits. */
static int measure(const struct bench_pair *p, enum kind kind, struct bench_row *row, uint64_t iters)
{
	int cpu[2], r;
	const char *why = NULL;
	uint64_t warm = bench_warmup(iters);

	if ((r = bench_cpus(row->cpus, &cpu[0], &cpu[1], &why)) < 0) {
		skip_row(row, "%s", why ? why : strerror(-r));
		return 0;
	}
	struct ctl *c = map_shared(sizeof(*c));
	void *shm = map_shared(p->shm_size);
	uint64_t *samples = kind == PINGPONG ? map_shared(iters * sizeof(uint64_t)) : NULL;
	if (!c || !shm || (kind == PINGPONG && !samples)) {
		r = -ENOMEM;
		skip_row(row, "mmap: %s", strerror(ENOMEM));
		bench_failures++;
		goto unmap;
	}
	c->syscalls[0] = c->syscalls[1] = -1;
	if (p->count_syscalls)
		c->syscall_tp = bench_syscall_tracepoint();
	main_reason[0] = 0;
	if (p->prepare && (r = p->prepare(shm, p->arg)) < 0) {
		if (main_reason[0])
			skip_row(row, "%s", main_reason);
		else
			skip_row(row, "prepare: %s", strerror(-r));
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
			            !strcmp(row->cpus ? row->cpus : "", BENCH_SHARED), c, shm, samples, warm,
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
			skip_row(row, "%s died of signal %d", k == BENCH_A ? "A" : "B", WTERMSIG(status[k]));
			r = -ECHILD;
			goto unmap;
		}
	if (timeout) {
		skip_row(row, "timeout (%s)", c->reason[0] ? c->reason : "no progress");
		r = -ETIMEDOUT;
	} else if (atomic_load(&c->stage) == STAGE_ABORT || c->err[0] || c->err[1]) {
		skip_row(row, "%s", c->reason[0] ? c->reason : "failed");
		r = c->err[0] ? c->err[0] : c->err[1] ? c->err[1] : -ECANCELED;
	} else if (kind == PINGPONG) {
		set_syscalls(row, c, iters);
		struct bench_stats st;
		bench_stats(samples, iters, &st);
		bench_row_latency(row, &st);
		if (p->result)
			*p->result = st;
		r = 0;
	} else {
		set_syscalls(row, c, iters);
		row->iters = iters;
		row->ops_per_s = (double)iters * 1e9 / (double)(c->t1 - c->t0 ? c->t1 - c->t0 : 1);
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

struct pair_sample {
	const struct bench_pair *p;
	enum kind kind;
	uint64_t iters;
};

static int pair_sample(void *ctx, struct bench_row *row)
{
	const struct pair_sample *ps = ctx;
	return measure(ps->p, ps->kind, row, ps->iters);
}

static int run(const struct bench_pair *p, enum kind kind, struct bench_row row, uint64_t iters)
{
	int r;
	if (capture.active) {
		/* a baseline's subject run for bench_versus: only the row it wants */
		if (!capture_wants(&row))
			return -EALREADY;
		r = measure(p, kind, &row, iters);
		bench_emit(&row);
		return r;
	}
	if (row.baseline) {
		struct pair_sample ps = {p, kind, iters};
		struct bench_versus *v = calloc(1, sizeof(*v));
		if (!v) {
			bench_skip(&row, "out of memory");
			bench_failures++;
			return -ENOMEM;
		}
		v->fn = pair_sample;
		v->ctx = &ps;
		r = bench_versus(v, row);
		free(v);
		return r;
	}
	if (emitted(&row))
		return -EALREADY; /* measured already in this invocation (e.g. beside an abd row) */
	r = measure(p, kind, &row, iters);
	bench_emit(&row);
	return r;
}

int bench_pair_sample(void *ctx, struct bench_row *row)
{
	const struct bench_pair_sample *ps = ctx;
	return measure(ps->p, ps->throughput ? THROUGHPUT : PINGPONG, row, ps->iters ? ps->iters : 1);
}

int bench_pingpong_once(const struct bench_pair *p, struct bench_row *row, uint64_t iters)
{
	return measure(p, PINGPONG, row, iters ? iters : 1);
}

int bench_throughput_once(const struct bench_pair *p, struct bench_row *row, uint64_t iters)
{
	return measure(p, THROUGHPUT, row, iters ? iters : 1);
}

int bench_pingpong(const struct bench_pair *p, struct bench_row row, uint64_t iters)
{
	return run(p, PINGPONG, row, iters ? iters : 1);
}

int bench_throughput(const struct bench_pair *p, struct bench_row row, uint64_t iters)
{
	return run(p, THROUGHPUT, row, iters ? iters : 1);
}

/* ---- interleaved rounds ---- */

static int cmp_double(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;
	return (a > b) - (a < b);
}

static double median(double *v, unsigned n)
{
	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void bench_row_median(struct bench_row *out, const struct bench_row *rows, unsigned n)
{
	enum { P50, P99, P999, OPS, CPU, SYS, WAKE, WMSG, NFIG };
	double v[NFIG][BENCH_ROUNDS_MAX];
	unsigned k[NFIG] = {0};
	bool cpu = false, sys = false, wake = false, wmsg = false;
	uint64_t iters = 0;
	if (n > BENCH_ROUNDS_MAX)
		n = BENCH_ROUNDS_MAX;
	for (unsigned i = 0; i < n; i++) {
		const struct bench_row *r = &rows[i];
		if (r->skipped)
			continue;
		if (!iters)
			iters = r->iters;
		if (r->p50_ns > 0)
			v[P50][k[P50]++] = r->p50_ns;
		if (r->p99_ns > 0)
			v[P99][k[P99]++] = r->p99_ns;
		if (r->p999_ns > 0)
			v[P999][k[P999]++] = r->p999_ns;
		if (r->ops_per_s > 0)
			v[OPS][k[OPS]++] = r->ops_per_s;
		if (r->cpu_measured) {
			cpu = true;
			v[CPU][k[CPU]++] = r->cpu_ns;
		}
		if (r->wakeups_measured) {
			wake = true;
			v[WAKE][k[WAKE]++] = r->wakeups_per_s;
		}
		if (r->wakeups_per_msg_measured) {
			wmsg = true;
			v[WMSG][k[WMSG]++] = r->wakeups_per_msg;
		}
		if (r->has_syscalls) {
			sys = true;
			v[SYS][k[SYS]++] = r->syscalls_per_msg;
		}
	}
	out->p50_ns = median(v[P50], k[P50]);
	out->p99_ns = median(v[P99], k[P99]);
	out->p999_ns = median(v[P999], k[P999]);
	out->ops_per_s = median(v[OPS], k[OPS]);
	out->cpu_measured = cpu;
	out->cpu_ns = median(v[CPU], k[CPU]);
	out->wakeups_measured = wake;
	out->wakeups_per_s = median(v[WAKE], k[WAKE]);
	out->wakeups_per_msg_measured = wmsg;
	out->wakeups_per_msg = median(v[WMSG], k[WMSG]);
	out->has_syscalls = sys;
	out->syscalls_per_msg = median(v[SYS], k[SYS]);
	if (iters)
		out->iters = iters;
}

/* A row emitted already with exactly this subject, case and cpus. */
static bool emitted_as(const char *subject, const char *case_name, const char *cpus)
{
	for (size_t i = 0; i < nkept; i++)
		if (same(kept[i].subject, subject) && same(kept[i].case_name, case_name) &&
		    same(kept[i].cpus, cpus))
			return true;
	return false;
}

void bench_emit_versus(const struct bench_row *row, const struct bench_row *mine,
                       const struct bench_row *theirs, unsigned n)
{
	struct bench_row r = *row;
	const char *bcase = r.baseline_case ? r.baseline_case : r.case_name;
	if (n > BENCH_ROUNDS_MAX)
		n = BENCH_ROUNDS_MAX;

	/* the baseline's row, from the samples taken beside this one */
	if (r.baseline && !emitted_as(r.baseline, bcase, r.cpus)) {
		struct bench_row b = {.bench = r.bench, .subject = r.baseline, .case_name = bcase,
		                      .cpus = r.cpus};
		unsigned nb = 0;
		const char *why = NULL;
		for (unsigned k = 0; k < n; k++) {
			if (theirs[k].skipped) {
				why = why ? why : theirs[k].skipped;
				continue;
			}
			if (!nb++)
				b.msg_bytes = theirs[k].msg_bytes;
		}
		if (nb) {
			bench_row_median(&b, theirs, n);
			b.rounds = nb;
			bench_emit(&b);
		} else {
			bench_skip(&b, "%s", why ? why : "not measured");
		}
	}

	for (unsigned k = 0; k < n; k++)
		if (mine[k].skipped) {
			bench_skip(&r, "%s", mine[k].skipped);
			return;
		}
	if (!n) {
		bench_skip(&r, "not measured");
		return;
	}
	bench_row_median(&r, mine, n);
	const char *key = ratio_key(&r);
	double ratios[BENCH_ROUNDS_MAX], base[BENCH_ROUNDS_MAX];
	unsigned nr = 0, nbase = 0;
	for (unsigned k = 0; k < n; k++) {
		if (theirs[k].skipped)
			continue;
		double a = figure_of(&mine[k], key), t = figure_of(&theirs[k], key);
		if (t > 0 || theirs[k].wakeups_measured ||
		    theirs[k].wakeups_per_msg_measured) /* 0 wake-ups is a figure */
			base[nbase++] = t;
		if (a > 0 && t > 0)
			ratios[nr++] = a / t;
	}
	r.rounds = n;
	r.baseline_figure = median(base, nbase);
	r.has_ratio = nr > 0;
	if (nr) {
		r.ratio = median(ratios, nr); /* sorts: the extremes are the ends */
		r.ratio_min = ratios[0];
		r.ratio_max = ratios[nr - 1];
	}
	bench_emit(&r);
}

/* One sample of the baseline row t names (subject, case, cpus): its subject's run function,
 * every other row left out, the row caught by bench_emit instead of printed. */
static void subject_sample(struct bench_row *t)
{
	const struct bench_subject *s = bench_subject_find(t->subject);
	if (!s) {
		t->skipped = bench_reason("no baseline subject %s", t->subject);
		return;
	}
	if (capture.active) {
		t->skipped = "a baseline inside a baseline's measurement";
		return;
	}
	capture.active = true;
	capture.got = false;
	capture.subject = t->subject;
	capture.case_name = t->case_name;
	capture.cpus = t->cpus;
	s->run();
	capture.active = false;
	if (!capture.got) {
		t->skipped = bench_reason("%s has no row %s (%s)", t->subject,
		                          t->case_name ? t->case_name : "-", t->cpus ? t->cpus : "-");
		bench_failures++; /* a baseline named but not measurable: a harness bug */
		return;
	}
	struct bench_row c = capture.row;
	c.bench = t->bench;
	c.subject = t->subject;
	c.case_name = t->case_name;
	c.cpus = t->cpus;
	c.baseline = c.baseline_case = NULL;
	*t = c;
}

int bench_versus(struct bench_versus *v, struct bench_row row)
{
	unsigned rounds = bench_rounds();
	if (rounds > BENCH_ROUNDS_MAX)
		rounds = BENCH_ROUNDS_MAX;
	if (!row.bench)
		row.bench = bench_family ? bench_family : "?";
	struct bench_row btmpl = {.bench = row.bench, .subject = row.baseline,
	                          .case_name = row.baseline_case ? row.baseline_case : row.case_name,
	                          .cpus = row.cpus};
	const char *bskip = NULL;
	int err = 0;
	v->n = 0;
	for (unsigned k = 0; k < rounds && !err; k++) {
		/* even rounds: the abd row first; odd rounds: the baseline first */
		for (int half = 0; half < 2; half++) {
			bool base = (half == 0) == (k % 2 == 1);
			if (base) {
				struct bench_row *t = &v->theirs[k];
				*t = btmpl;
				if (bskip) {
					t->skipped = bskip; /* it failed once: not again in every round */
				} else if (v->base_fn) {
					int e = v->base_fn(v->base_ctx, t);
					if (e < 0 && !t->skipped)
						t->skipped = bench_reason("%s", strerror(-e));
				} else {
					subject_sample(t);
				}
				if (t->skipped)
					bskip = t->skipped;
			} else {
				struct bench_row *m = &v->mine[k];
				*m = row;
				m->skipped = NULL;
				int e = v->fn(v->ctx, m);
				if (e < 0 && !m->skipped)
					m->skipped = bench_reason("%s", strerror(-e));
				if (m->skipped)
					err = e < 0 ? e : -ECANCELED;
			}
		}
		v->n = k + 1;
	}
	bench_emit_versus(&row, v->mine, v->theirs, v->n);
	return err;
}
