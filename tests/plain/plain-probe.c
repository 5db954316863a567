/* SPDX-License-Identifier: MIT */
/* Plain subset (MSan, TSan): the probe reads kernel answers through raw syscalls; every byte it reports
 * must be initialised. */
#include <abd/abd.h>
#include <errno.h>
#include <string.h>

#include "tap.h"

int main(void)
{
	uint64_t mask = abd_probe_features();
	int agree = 1;
	for (int f = 0; f < ABD_FEAT__COUNT; f++) {
		int has = abd_probe_has(f);
		int err = abd_probe_error(f);
		if (has != (err == 0) || has != !!(mask & ABD_FEATURE_BIT(f)))
			agree = 0;
	}
	TAP_CHECK(agree, "has, error and mask agree for every feature");
	TAP_CHECK(abd_backend_name(abd_choose_backend()) != NULL, "backend chosen: %s",
	          abd_backend_name(abd_choose_backend()));
	TAP_CHECK(abd_fd_transfer_name(abd_choose_fd_transfer()) != NULL, "fd transfer chosen");
	TAP_CHECK(abd_wake_name(abd_choose_wake()) != NULL, "wake chosen");
	abd_features_disable(ABD_FEATURE_BIT(ABD_FEAT_EVENTFD));
	TAP_CHECK(abd_probe_error(ABD_FEAT_EVENTFD) != 0, "mask switches eventfd off");
	TAP_CHECK(abd_probe_tmpfile("/dev/shm") == 0 || abd_probe_tmpfile("/dev/shm") == -ENOENT,
	          "tmpfile on /dev/shm");
	TAP_CHECK(abd_probe_ptrace_scope() >= -ENOENT, "ptrace scope read");
	return tap_done();
}
