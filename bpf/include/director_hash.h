/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The flow hash (siphash.h, mirrored by tablegen::hash): from the state director_hash_states
 * keeps per destination when it was made for the table's key, else from the start. */
#ifndef XDPLB_DIRECTOR_HASH_H
#define XDPLB_DIRECTOR_HASH_H

#include <linux/types.h>

#include "abi.h"
#include "siphash.h"
#include "director_pkt.h"

/* The director_hash_states entry of the packet's destination (abi.h). */
static __always_inline __u32 hash_state_index(const struct pkt *p)
{
	__u32 x;

	if (p->is_v6)
		x = (__u32)p->flow.w[2] ^ (__u32)(p->flow.w[2] >> 32) ^ (__u32)p->flow.w[3] ^
		    (__u32)(p->flow.w[3] >> 32);
	else
		x = p->flow.dst4 ^ ((__u32)p->flow.dport * 0x10001u);
	return (x * 0x9e3779b1u) >> 18;
}

/* Load hs's state into st if it was made for this key, fields, family and destination
 * (abi.h: `check`); `check` comes in as the xor of the key, the fields and the packet's
 * destination words. */
static __always_inline int started(const struct director_hash_state *hs, __u8 family, __u64 check,
				   struct sip_state *st)
{
	if (!hs || hs->family != family)
		return 0;
	check ^= ((__u64)family << 8) ^ hs->v[0] ^ hs->v[1] ^ hs->v[2] ^ hs->v[3];
	if (check != hs->check)
		return 0;
	st->v[0] = hs->v[0];
	st->v[1] = hs->v[1];
	st->v[2] = hs->v[2];
	st->v[3] = hs->v[3];
	return 1;
}

/* The flow hash with a service's key; unhashed fields are zero, exactly as tablegen's
 * flow_key_bytes. From `hs`'s state when it was made for this key, fields and destination
 * (abi.h), else from the start. */
static __always_inline __u64 flow_hash(const struct pkt *p, __u64 k0, __u64 k1, __u8 fields,
				       const struct director_hash_state *hs)
{
	__u64 src = fields & XDPLB_HASH_SRC_IP ? ~0ULL : 0;
	__u64 dst = fields & XDPLB_HASH_DST_IP ? ~0ULL : 0;
	__u16 sport = fields & XDPLB_HASH_SRC_PORT ? p->flow.sport : 0;
	__u16 dport = fields & XDPLB_HASH_DST_PORT ? p->flow.dport : 0;
	__u64 check = k0 ^ k1 ^ fields;
	struct sip_state st;

	if (p->is_v6) {
		__u64 d0 = p->flow.w[2] & dst, d1 = p->flow.w[3] & dst;
		__u64 s0 = p->flow.w[0] & src, s1 = p->flow.w[1] & src;
		__u32 tail = sip_join16(sport, dport);

		if (started(hs, 6, check ^ sip_le64(d0) ^ sip_le64(d1), &st))
			return siphash13_v6_from(st, s0, s1, tail);
		return siphash13_v6(k0, k1, d0, d1, s0, s1, tail);
	} else {
		__u64 d0 = sip_join32(p->flow.dst4 & dst, sip_join16(dport, 0));
		__u64 s = sip_join32(p->flow.src4 & src, sip_join16(sport, 0));

		if (started(hs, 4, check ^ sip_le64(d0), &st))
			return siphash13_v4_from(st, s);
		return siphash13_v4(k0, k1, d0, s);
	}
}

#endif
