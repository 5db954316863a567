/* SPDX-License-Identifier: MIT */
/* Recovery on demand: abd_ring_recover, the scan of the whole lease table (the lease table
 * itself, and the cleanup of one lease, are in ring-lease.c). */
#include <errno.h>

#include "ring-internal.h"

int abd_ring_recover(struct abd_ring *r)
{
	abd__check(r, -EINVAL);
	abd__ring_flush_stats(r);
	int total = 0;
	for (unsigned i = 0; i < r->lease_count; i++) {
		if (i == r->lease || abd__load(&r->leases[i].state, ACQUIRE) != ABD__LEASE_HELD)
			continue;
		int alive = abd__ring_lease_alive(r, i);
		if (alive < 0)
			return alive;
		if (alive)
			continue;
		int n = abd__ring_reap_lease(r, i);
		if (n < 0)
			return n;
		total += n;
	}
	if (total) {
		abd__ring_wake_all(r, ABD_RING_WAIT_DATA);
		abd__ring_wake_all(r, ABD_RING_WAIT_SPACE);
	}
	return total;
}
