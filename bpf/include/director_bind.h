/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Bind match: is a destination a VIP, and which bind of its (VIP, protocol) covers a port.
 * The bind index (director_vip_index) first, the director_vips hash map behind it. */
#ifndef XDPLB_DIRECTOR_BIND_H
#define XDPLB_DIRECTOR_BIND_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"
#include "director_maps.h"
#include "director_pkt.h"

static __always_inline const struct director_vip *lookup_vip(const __u8 *vip16, __u8 proto)
{
	struct director_vip_key key = {};

	__builtin_memcpy(key.addr, vip16, 16);
	key.proto = proto;
	return bpf_map_lookup_elem(&director_vips, &key);
}

/* The binds of a (VIP, TCP/UDP): the index slot, or the hash map when the slot overflowed (or
 * no index is installed yet). vip16 must be 8-byte aligned. */
static __always_inline const struct director_vip *find_vip(struct pkt *p, const __u8 *vip16,
							   __u8 proto)
{
	const __u32 *w = (const __u32 *)vip16;
	const __u64 *a = (const __u64 *)vip16;
	const struct director_vip_slot *s;
	__u32 zero = 0, slot;
	void *index;

	slot = (((w[0] ^ w[1] ^ w[2] ^ w[3]) + proto) * 0x9e3779b1u) >> 20;
	index = bpf_map_lookup_elem(&director_vip_index, &zero);
	if (!index)
		return lookup_vip(vip16, proto);
	s = bpf_map_lookup_elem(index, &slot);
	if (!s)
		return NULL;
	if (s->proto == proto && *(const __u64 *)s->addr == a[0] &&
	    *(const __u64 *)(s->addr + 8) == a[1])
		return &s->vip;
	if (s->overflow)
		return lookup_vip(vip16, proto);
	return NULL;
}

/* Find the bind covering port among a (VIP, protocol)'s ranges: 0 and p->service/bind set on
 * a match, 1 if none covers it. */
static __always_inline int match_port(struct pkt *p, const struct director_vip *v, __u16 port)
{
#pragma unroll
	for (int i = 0; i < DIRECTOR_VIP_RANGES; i++) {
		if (i >= v->count)
			break;
		if (port >= v->ranges[i].first && port <= v->ranges[i].last) {
			p->service = v->ranges[i].service;
			p->bind = v->ranges[i].bind;
			return 0;
		}
	}
	return 1;
}

/* 0: this address is certainly no VIP (its bit in director_vip_filter is clear); 1: maybe. */
static __always_inline int maybe_vip(const __u8 *vip16)
{
	const struct director_vip_filter *f;
	const __u32 *w = (const __u32 *)vip16;
	__u32 zero = 0, bit;

	f = bpf_map_lookup_elem(&director_vip_filter, &zero);
	if (!f || !f->enabled)
		return 1;
	bit = ((w[0] ^ w[1] ^ w[2] ^ w[3]) * 0x9e3779b1u) >> 20;
	return (f->bits[bit >> 6] >> (bit & 63)) & 1;
}

/* Is this address a VIP at all? For the paths that have no port to match. */
static __always_inline int is_vip(const __u8 *vip16)
{
	return lookup_vip(vip16, 0) != NULL;
}

#endif
