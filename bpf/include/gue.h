/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* GUE wire format, byte-compatible with GitHub GLB Director (docs/development/wire-format.md).
 *
 *   outer IPv4|IPv6 / UDP (dport = GUE port, sport = from flow hash, v4 csum 0)
 *   / struct gue_hdr / struct gue_hoplist + hops / inner IPv4|IPv6 packet
 *
 * No bitfields: byte 0 is (version << 6 | C << 5 | hlen); we always send version 0, C 0,
 * so byte 0 == hlen. */
#ifndef XDPLB_GUE_H
#define XDPLB_GUE_H

#include <linux/types.h>

#define GUE_DEFAULT_PORT 19523

struct gue_hdr {
	__u8 ver_c_hlen; /* version:2 C:1 hlen:5 (hlen in 32-bit words of private data) */
	__u8 proto;      /* inner protocol: 4 = IPv4, 41 = IPv6 */
	__be16 flags;    /* always 0 */
};

/* Private data, first word. */
struct gue_hoplist {
	__be16 type;     /* GUE_HOPS_IPV4 (GLB's only type) or GUE_HOPS_IPV6 (xdplb), | flags */
	__u8 next_hop;   /* index of the next hop to try, starts at 0 */
	__u8 hop_count;  /* number of addresses that follow */
	/* followed by hop_count __be32 (type 0) or hop_count 16-byte addresses (type 1) */
};

#define GUE_HOPS_IPV4 0
#define GUE_HOPS_IPV6 1
/* The type's first byte on the wire holds flags (0 in GLB's packets), its second the kind of
 * address above. GUE_HOPS_F_UDP (xdplb): an inner UDP packet stays on a hop only if a
 * connected UDP socket there owns its flow, and the list ends with the primary again, so a
 * flow nobody owns yet comes back to it (docs/development/second-chance.md). */
#define GUE_HOPS_KIND_MASK 0x00ff
#define GUE_HOPS_F_UDP 0x0100

#define GUE_VER_MASK 0xc0
#define GUE_C_BIT 0x20
#define GUE_HLEN_MASK 0x1f

#define GUE_PROTO_IPV4 4
#define GUE_PROTO_IPV6 41

/* hlen is 5 bits: at most 31 words of private data = 1 + 30 IPv4 hops or 1 + 7 IPv6 hops. */
#define GUE_MAX_HOPS 4 /* tablegen's hops range is 2..=4: primary + up to 3 alternates */

#endif
