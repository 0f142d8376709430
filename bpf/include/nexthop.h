/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The next-hop cache both programs keep (director_nexthops, the redirector's nexthops): a
 * bpf_fib_lookup answer reused per CPU until its expiry in jiffies or until the daemon moves
 * its generation on after a route, neighbour or link change
 * (docs/development/director-datapath.md, "Next hops"). Here: the expiry's arithmetic. */
#ifndef XDPLB_NEXTHOP_H
#define XDPLB_NEXTHOP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* The kernel's tick rate, for the next-hop expiry in jiffies (libbpf reads it from the kernel
 * config). Unknown (0): assume 100, the lowest Linux has, so a next hop is never kept longer
 * than asked. */
extern const unsigned int CONFIG_HZ __kconfig __weak;

/* A TTL in ms as jiffies, rounded up so a short TTL still caches for one tick. */
static __always_inline __u64 ttl_jiffies(__u32 ms)
{
	__u64 hz = CONFIG_HZ ? CONFIG_HZ : 100;

	return ((__u64)ms * hz + 999) / 1000;
}

#endif
