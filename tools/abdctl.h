/* SPDX-License-Identifier: MIT */
/* abdctl: one file per command; this header is what they share. */
#ifndef ABD_TOOLS_ABDCTL_H
#define ABD_TOOLS_ABDCTL_H

#include <stdbool.h>
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
int abdctl_info(int argc, char **argv);
void abdctl_info_help(FILE *out);

/* JSON output: a string with every byte escaped so that any input stays valid JSON. */
void json_string(FILE *out, const char *s);
void json_string_n(FILE *out, const char *s, size_t len);

/* "EPERM" for -EPERM or EPERM; "E?" for an unknown number. */
const char *errno_name(int err);

bool is_help_flag(const char *arg);

/* --publisher-uid UID / --publisher-gid GID (repeatable; UID "any": every owner): the
 * publishers the caller trusts besides itself and root (registry.h, abd_lookup_opts), taken
 * out of argv before the command's own parser sees it. 0, or ABDCTL_USAGE (said why). */
#include <abd/registry.h>
struct abdctl_publishers {
	uid_t uids[ABD_PUBLISHER_MAX];
	gid_t gids[ABD_PUBLISHER_MAX];
	struct abd_lookup_opts opts; /* pointing into uids/gids */
};
int abdctl_take_publishers(const char *cmd, int *argc, char **argv, struct abdctl_publishers *p);
#define ABDCTL_PUBLISHERS_HELP                                                              \
	"--publisher-uid UID / --publisher-gid GID (repeatable; UID 'any' trusts everyone): also\n" \
	"trust records published by that uid or group; by default only your own and root's are\n"  \
	"taken (the record file's owner, as the kernel set it, is the publisher).\n"
/* Warn on stderr when the registry directory lets other users write it (group or others:
 * they can publish any name, and in a group-writable sticky directory a group member can
 * delete another member's record); docs/operations.md. */
void abdctl_warn_shared(const char *cmd, struct abd_registry *reg);

#endif
