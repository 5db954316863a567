/* SPDX-License-Identifier: MIT */
/* abdctl: one file per command; this header is what they share. */
#ifndef ABD_TOOLS_ABDCTL_H
#define ABD_TOOLS_ABDCTL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Exit codes: 0 success, 1 the operation failed, 2 usage error, 3 not found (or did not
 * appear in time), 4 the service closed (its publisher left), 5 access denied, 6 not a ring
 * service or another message type. */
enum {
	ABDCTL_OK = 0,
	ABDCTL_FAIL = 1,
	ABDCTL_USAGE = 2,
	ABDCTL_NOTFOUND = 3,
	ABDCTL_CLOSED = 4,
	ABDCTL_DENIED = 5,
	ABDCTL_MISMATCH = 6,
};

struct abdctl_command {
	const char *name;
	const char *summary;
	int (*run)(int argc, char **argv); /* argv[0] is the command name */
	void (*help)(FILE *out);
};

int abdctl_probe(int argc, char **argv);
void abdctl_probe_help(FILE *out);
int abdctl_emulate(int argc, char **argv);
void abdctl_emulate_help(FILE *out);
int abdctl_list(int argc, char **argv);
void abdctl_list_help(FILE *out);
int abdctl_watch(int argc, char **argv);
void abdctl_watch_help(FILE *out);
int abdctl_gc(int argc, char **argv);
void abdctl_gc_help(FILE *out);
int abdctl_publish(int argc, char **argv);
void abdctl_publish_help(FILE *out);
int abdctl_serve(int argc, char **argv);
void abdctl_serve_help(FILE *out);
int abdctl_send(int argc, char **argv);
void abdctl_send_help(FILE *out);
int abdctl_recv(int argc, char **argv);
void abdctl_recv_help(FILE *out);
int abdctl_pub(int argc, char **argv);
void abdctl_pub_help(FILE *out);
int abdctl_sub(int argc, char **argv);
void abdctl_sub_help(FILE *out);
int abdctl_hz(int argc, char **argv);
void abdctl_hz_help(FILE *out);
int abdctl_call(int argc, char **argv);
void abdctl_call_help(FILE *out);
/* abdctl serve --reply (abdctl-rpc.c): a request-response server */
int abdctl_serve_reply(int argc, char **argv);
void abdctl_serve_reply_help(FILE *out);
int abdctl_info(int argc, char **argv);
void abdctl_info_help(FILE *out);

/* JSON output: a string, valid UTF-8 passed through, what JSON requires (and the control
 * characters a terminal acts on) escaped; a byte that is not UTF-8 becomes \u00XX, so that
 * any input stays valid JSON. s NULL: null. */
void json_string(FILE *out, const char *s);
void json_string_n(FILE *out, const char *s, size_t len);

/* "EPERM" for -EPERM or EPERM (strerrorname_np where glibc has it, else errno_name_table);
 * "E?" for a number neither knows. errno_name_table: the names of Linux's errnos, NULL for
 * another number. */
const char *errno_name(int err);
const char *errno_name_table(int err);

bool is_help_flag(const char *arg);

/* Option values. parse_ll: s is a decimal number (digits, a '-' only where min < 0, nothing
 * else) in [min, max]. parse_ms: milliseconds (or -1: no limit) as nanoseconds, refusing what
 * would overflow. Both: false, and *out untouched, for anything else. */
bool parse_ll(const char *s, long long min, long long max, long long *out);
bool parse_ms(const char *s, int64_t *ns);

/* Options are parsed with getopt_long (GNU: options and operands in any order, "--" ends
 * the options, --name=value or --name value). Long options without a short form take values
 * from 256 up; each command lists its own, plus these shared ones where they apply. */
enum {
	OPT_DIR = 256,
	OPT_JSON,
	OPT_PUBLISHER_UID,
	OPT_PUBLISHER_GID,
	OPT_COMMAND, /* first value free for a command's own */
};
#include <getopt.h>
#define ABDCTL_OPT_DIR { "dir", required_argument, NULL, OPT_DIR }
#define ABDCTL_OPT_JSON { "json", no_argument, NULL, OPT_JSON }
#define ABDCTL_OPT_PUBLISHERS                                                              \
	{ "publisher-uid", required_argument, NULL, OPT_PUBLISHER_UID },                       \
	{ "publisher-gid", required_argument, NULL, OPT_PUBLISHER_GID }

/* getopt_long returned c ('?': an unknown option, ':': a value missing) for argv: says so on
 * stderr for command cmd and returns ABDCTL_USAGE. Call getopt_long with an optstring
 * starting with ':' and opterr 0. */
int abdctl_bad_option(const char *cmd, int c, char **argv);
/* The start of a command's getopt_long loop: getopt's state reset, its messages off. */
void abdctl_getopt_reset(void);

/* --publisher-uid UID / --publisher-gid GID (repeatable; UID "any": every owner): the
 * publishers the caller trusts besides itself and root (registry.h, abd_lookup_opts).
 * abdctl_publishers_init first; abdctl_publisher_option for OPT_PUBLISHER_UID/_GID and its
 * value: 0, or ABDCTL_USAGE (said why). */
#include <abd/registry.h>
struct abdctl_publishers {
	uid_t uids[ABD_PUBLISHER_MAX];
	gid_t gids[ABD_PUBLISHER_MAX];
	struct abd_lookup_opts opts; /* pointing into uids/gids */
};
void abdctl_publishers_init(struct abdctl_publishers *p);
int abdctl_publisher_option(const char *cmd, int opt, const char *arg,
                            struct abdctl_publishers *p);
#define ABDCTL_PUBLISHERS_HELP                                                              \
	"--publisher-uid UID / --publisher-gid GID (repeatable; UID 'any' trusts everyone): also\n" \
	"trust records published by that uid or group; by default only your own and root's are\n"  \
	"taken (the record file's owner, as the kernel set it, is the publisher).\n"
/* Warn on stderr when the registry directory lets other users write it (group or others:
 * they can publish any name, and in a group-writable sticky directory a group member can
 * delete another member's record); docs/operations.md. */
void abdctl_warn_shared(const char *cmd, struct abd_registry *reg);

#endif
