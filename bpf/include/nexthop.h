/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The next-hop cache both programs keep (director_nexthops, the redirector's nexthops): a
 * bpf_fib_lookup answer reused per CPU until its expiry in jiffies or until the daemon moves
 * its generation on after a route, neighbour or link change
 * (docs/development/director-datapath.md, "Next hops"). Here: the expiry's arithmetic and the
 * fill of an entry from a full bpf_fib_lookup answer. */
#ifndef XDPLB_NEXTHOP_H
#define XDPLB_NEXTHOP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"

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

/* Both caches' entries (abi.h: director_nexthop, redir_nexthop) have this one layout. */
#define NEXTHOP_SAME_AT(field)                                                                  \
	_Static_assert(__builtin_offsetof(struct director_nexthop, field) ==                    \
			       __builtin_offsetof(struct redir_nexthop, field),                  \
		       "next-hop entries differ at " #field)
NEXTHOP_SAME_AT(addr);
NEXTHOP_SAME_AT(expires);
NEXTHOP_SAME_AT(generation);
NEXTHOP_SAME_AT(ingress);
NEXTHOP_SAME_AT(ifindex);
NEXTHOP_SAME_AT(mtu);
NEXTHOP_SAME_AT(dmac);
NEXTHOP_SAME_AT(smac);
_Static_assert(sizeof(struct director_nexthop) == sizeof(struct redir_nexthop),
	       "next-hop entries differ in size");

/* Fill a cache entry, either program's (one layout, asserted above), from a full
 * bpf_fib_lookup answer for the 16-byte `hop` it is kept for, made for `ingress` at `now`
 * (jiffies) under `generation`, kept for `ttl_ms`. */
static __always_inline void nexthop_fill(void *entry, const void *hop, __u64 now, __u32 ttl_ms,
					 __u32 generation, __u32 ingress,
					 const struct bpf_fib_lookup *fib)
{
	struct director_nexthop *nh = entry;

	/* 8-byte aligned in both callers (a table row, an address the caller compares as two
	 * __u64): copied in two words, as it was before this function, not byte by byte. */
	__builtin_memcpy(nh->addr, __builtin_assume_aligned(hop, 8), 16);
	nh->expires = now + ttl_jiffies(ttl_ms);
	nh->generation = generation;
	nh->ingress = ingress;
	nh->ifindex = fib->ifindex;
	/* The route MTU on kernels that report it (5.12+), else the length of the packet the
	 * lookup was made for: a longer one then takes the full lookup, which decides "too
	 * big". */
	nh->mtu = fib->mtu_result;
	__builtin_memcpy(nh->dmac, fib->dmac, 6);
	__builtin_memcpy(nh->smac, fib->smac, 6);
}

#endif
