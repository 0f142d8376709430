/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Header parsing helpers for XDP programs: every read is bounds-checked right before use
 * against data_end. No SEC() code, no maps. */
#ifndef XDPLB_PARSE_H
#define XDPLB_PARSE_H

#include <linux/types.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include "consts.h"

/* The frame's length in bytes. Computed on the full 64-bit pointers: with 32-bit
 * subregisters (-mcpu=v3) clang would otherwise subtract their low halves, which the
 * verifier refuses on packet pointers. */
static __always_inline __u32 frame_bytes(void *data, void *data_end)
{
	__u64 n = (__u64)data_end - (__u64)data;

	asm volatile("" : "+r"(n));
	return n;
}

struct vlan_hdr_ {
	__be16 tci;
	__be16 proto;
};

/* Ethernet with at most one 802.1Q tag. Returns the L3 offset (14 or 18) and sets *proto
 * (network order), or returns -1 if the frame is too short for its L2 header. */
static __always_inline int parse_l2(void *data, void *data_end, __be16 *proto)
{
	struct ethhdr *eth = data;
	struct vlan_hdr_ *vlan;

	if ((void *)(eth + 1) > data_end)
		return -1;
	*proto = eth->h_proto;
	if (eth->h_proto != bpf_htons(ETH_P_8021Q_))
		return ETH_HLEN_;
	vlan = (void *)(eth + 1);
	if ((void *)(vlan + 1) > data_end)
		return -1;
	*proto = vlan->proto;
	return ETH_HLEN_ + (int)sizeof(*vlan);
}

/* An IPv4 address as the ::ffff:a.b.c.d form used in map keys. */
static __always_inline void addr_v4mapped(__u8 *out16, __be32 a)
{
	__u32 *w = (__u32 *)out16;

	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0xffff);
	w[3] = a;
}

#endif
