/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The director's per-packet state, filled by classification (director_classify.h) and read
 * by everything after it, and the counters every verdict bumps. */
#ifndef XDPLB_DIRECTOR_PKT_H
#define XDPLB_DIRECTOR_PKT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "director_maps.h"
#include "siphash.h"

struct pkt {
	struct sip_flow_key flow; /* client -> VIP (the quoted tuple reversed for ICMP errors) */
	__u64 frame_len;          /* as received, for the counters */
	__u32 l3_off;             /* 14, or 18 with an 802.1Q tag */
	__u32 ip_len;             /* IPv4 tot_len or 40 + IPv6 payload_len */
	__u32 l4_off;             /* offset of the L4 header of the packet itself */
	__u16 service;
	__u16 bind;
	__u8 is_v6;      /* family of the packet (becomes the inner family) */
	__u8 ip_proto;   /* protocol field of the packet's own IP header */
	__u8 tos;        /* IPv4 TOS / IPv6 traffic class, copied to the outer header */
	__u8 df;         /* IPv4 DF bit set (always 1 for IPv6: routers never fragment it) */
	__u8 slow_csum;  /* the inner L4 checksum cannot stand in for the payload sum */
	__u8 icmp_error; /* a frag-needed / packet-too-big being forwarded */
	__u8 pad[2];
};

static __always_inline void count(void *map, __u32 idx, __u64 bytes)
{
	struct director_counter *c = bpf_map_lookup_elem(map, &idx);

	/* verifier: an in-range index of an array map always has a value */
	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline int verdict(struct pkt *p, __u32 reason, int action)
{
	count(&stats_reason, reason, p->frame_len);
	return action;
}

#endif
