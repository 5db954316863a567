/* SPDX-License-Identifier: MIT */
/* abdctl: the operator's view of abd. */
#include <abd/abd.h>
#include <stdio.h>
#include <string.h>

#include "abdctl.h"

static const struct abdctl_command commands[] = {
	{ "probe", "what this kernel offers and the choices abd makes", abdctl_probe,
	  abdctl_probe_help },
	{ "emulate", "run a command as if on another kernel (seccomp profile)", abdctl_emulate,
	  abdctl_emulate_help },
	{ "list", "the services in the registry (--all: stale and invalid too)", abdctl_list,
	  abdctl_list_help },
	{ "watch", "print registry changes as they happen: added, removed, died", abdctl_watch,
	  abdctl_watch_help },
	{ "gc", "remove stale records of dead publishers", abdctl_gc, abdctl_gc_help },
	{ "info", "a service's record, liveness and an acquisition attempt", abdctl_info,
	  abdctl_info_help },
	{ "publish", "publish a service record and hold it until interrupted", abdctl_publish,
	  abdctl_publish_help },
	{ "serve", "publish a ring service and print the messages that arrive", abdctl_serve,
	  abdctl_serve_help },
	{ "send", "send messages (arguments or stdin lines) to a ring service", abdctl_send,
	  abdctl_send_help },
	{ "recv", "receive messages from a ring service", abdctl_recv, abdctl_recv_help },
	{ "pub", "publish a broadcast service and send messages to every subscriber", abdctl_pub,
	  abdctl_pub_help },
	{ "sub", "subscribe to a broadcast service and print every message", abdctl_sub,
	  abdctl_sub_help },
	{ "hz", "a running service's message rate, bytes/s and latency", abdctl_hz,
	  abdctl_hz_help },
	{ "call", "call a request-response service and print the answers", abdctl_call,
	  abdctl_call_help },
};

static void usage(FILE *out)
{
	fprintf(out, "usage: abdctl COMMAND [ARGS...]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(out, "\n'abdctl COMMAND --help' for a command's options. abd %s\n",
	        abd_version_string());
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return ABDCTL_USAGE;
	}
	if (is_help_flag(argv[1])) {
		usage(stdout);
		return ABDCTL_OK;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("abdctl %s\n", abd_version_string());
		return ABDCTL_OK;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[1], commands[i].name) != 0)
			continue;
		if (argc > 2 && is_help_flag(argv[2])) {
			commands[i].help(stdout);
			return ABDCTL_OK;
		}
		return commands[i].run(argc - 1, argv + 1);
	}
	fprintf(stderr, "abdctl: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return ABDCTL_USAGE;
}
