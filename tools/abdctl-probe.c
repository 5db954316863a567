/* SPDX-License-Identifier: MIT */
#include <abd/abd.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "abdctl.h"

void abdctl_probe_help(FILE *out)
{
	fprintf(out, "usage: abdctl probe [--json]\n\n"
	             "Tries each kernel feature abd uses and prints what answered, why each missing\n"
	             "one is missing, and the backend, descriptor transfer and wake-up abd picks.\n"
	             "ABD_DISABLE=feature,... switches features off as if the kernel lacked them.\n");
}

int abdctl_probe(int argc, char **argv)
{
	static const struct option longopts[] = { ABDCTL_OPT_JSON, { 0 } };
	bool json = false;
	abdctl_getopt_reset();
	int c;
	while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
		if (c != OPT_JSON)
			return abdctl_bad_option("probe", c, argv);
		json = true;
	}
	if (optind < argc) {
		fprintf(stderr, "abdctl probe: unexpected argument '%s' (see --help)\n", argv[optind]);
		return ABDCTL_USAGE;
	}
	const char *backend = abd_backend_name(abd_choose_backend());
	const char *transfer = abd_fd_transfer_name(abd_choose_fd_transfer());
	const char *wake = abd_wake_name(abd_choose_wake());
	const char *profile = getenv("ABD_PROFILE");
	const char *disabled = getenv("ABD_DISABLE");
	int scope = abd_probe_ptrace_scope();

	if (json) {
		printf("{\"version\":");
		json_string(stdout, abd_version_string());
		printf(",\"profile\":");
		json_string(stdout, profile ? profile : "native");
		printf(",\"backend\":\"%s\",\"fd_transfer\":\"%s\",\"wake\":\"%s\"", backend, transfer,
		       wake);
		if (scope >= 0)
			printf(",\"ptrace_scope\":%d", scope);
		else
			printf(",\"ptrace_scope\":null");
		printf(",\"cap_sys_ptrace\":%s", abd_probe_cap_sys_ptrace() ? "true" : "false");
		printf(",\"disabled\":");
		json_string(stdout, disabled ? disabled : "");
		printf(",\"features\":{");
		for (int f = 0; f < ABD_FEAT__COUNT; f++)
			printf("%s\"%s\":%s", f ? "," : "", abd_feature_name(f),
			       abd_probe_has(f) ? "true" : "false");
		printf("},\"errors\":{");
		bool first = true;
		for (int f = 0; f < ABD_FEAT__COUNT; f++) {
			int e = abd_probe_error(f);
			if (!e)
				continue;
			printf("%s\"%s\":\"%s\"", first ? "" : ",", abd_feature_name(f),
			       e == -ECANCELED ? "disabled" : errno_name(e));
			first = false;
		}
		printf("}}\n");
		return ABDCTL_OK;
	}

	printf("abd %s, profile %s\n", abd_version_string(), profile ? profile : "native");
	printf("  backend      %s\n  fd_transfer  %s\n  wake         %s\n", backend, transfer, wake);
	if (scope >= 0)
		printf("  yama         ptrace_scope=%d%s\n", scope,
		       scope == 1 ? " (pidfd_getfd between siblings needs PR_SET_PTRACER; "
		                    "handshake otherwise)"
		                  : "");
	else
		printf("  yama         absent\n");
	printf("  cap_sys_ptrace %s\n", abd_probe_cap_sys_ptrace() ? "yes" : "no");
	if (disabled && *disabled)
		printf("  ABD_DISABLE  %s\n", disabled);
	printf("features:\n");
	for (int f = 0; f < ABD_FEAT__COUNT; f++) {
		int e = abd_probe_error(f);
		printf("  %-24s %s", abd_feature_name(f), abd_probe_has(f) ? "yes" : "no");
		if (e == -ECANCELED)
			printf("  (disabled by feature mask)");
		else if (e)
			printf("  (%s: %s)", errno_name(e), strerror(-e));
		printf("\n");
	}
	return ABDCTL_OK;
}
