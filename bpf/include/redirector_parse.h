/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The redirector's parsers: outer IP/UDP, the allowed-source check, the GUE header and hop
 * list (docs/development/wire-format.md), the inner IP/L4 headers. Each returns <0 = -reason
 * for a packet to drop. */
#ifndef XDPLB_REDIRECTOR_PARSE_H
#define XDPLB_REDIRECTOR_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <linux/tcp.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi.h"
#include "gue.h"
#include "redirector_maps.h"

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/* How much of the packet must be linear for the parsers: outer IPv6 (40) + UDP (8) + GUE (4) +
 * private data (max 124) + inner IPv6 (40) + TCP (20) + eth (14) = 250. */
#define PULL_LEN 256

/* What the parsers found; offsets are from skb->data (start of Ethernet). */
struct pkt {
	__u8 outer_v6;
	__u8 inner_v6;
	__u8 inner_proto; /* IPPROTO_* of the inner L4 header */
	__u8 inner_later_frag;
	__u8 inner_first_frag; /* IPv4 MF set at offset 0: the L4 header of a split datagram */
	__u8 udp_sc;           /* hop list flag GUE_HOPS_F_UDP: UDP second chance */
	__u16 inner_l3_off;
	__u16 inner_l4_off;
	__u16 hoplist_off; /* 0 = no private data */
	__u16 hop_type;
	__u8 next_hop;
	__u8 hop_count;
	__u16 strip_len; /* outer IP + UDP + GUE + private data */
};

/* ---- parsing ---- */

/* Outer IP and UDP: 1 = GUE for us (p filled), 0 = not GUE, <0 = -reason. */
static __always_inline int parse_outer(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct udphdr *udp;
	__u32 l3_len;

	if ((void *)(eth + 1) > data_end)
		return 0;

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return 0;
		if (ip->protocol != IPPROTO_UDP)
			return 0;
		if (ip->version != 4 || ip->ihl < 5)
			return 0; /* not a packet we understand: the stack will judge it */
		l3_len = ip->ihl * 4;
		udp = (void *)ip + l3_len;
		if ((void *)(udp + 1) > data_end)
			return 0;
		if (udp->dest != bpf_htons(gue_port))
			return 0;
		/* From here on it claims to be GUE for us. */
		if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
			return -REDIR_DROP_OUTER_FRAGMENT;
		if (bpf_ntohs(ip->tot_len) < l3_len + sizeof(*udp) + sizeof(struct gue_hdr))
			return -REDIR_DROP_BAD_OUTER;
		/* Checked in each branch, next to its bounds check: merged, clang may recompute
		 * the pointer where the verifier no longer knows it is in bounds. */
		if (bpf_ntohs(udp->len) < sizeof(*udp) + sizeof(struct gue_hdr))
			return -REDIR_DROP_BAD_OUTER;
		p->outer_v6 = 0;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return 0;
		/* GLB and xdplb directors never add extension headers. */
		if (ip6->nexthdr != IPPROTO_UDP)
			return 0;
		l3_len = sizeof(*ip6);
		udp = (void *)(ip6 + 1);
		if ((void *)(udp + 1) > data_end)
			return 0;
		if (udp->dest != bpf_htons(gue_port))
			return 0;
		if (ip6->version != 6)
			return -REDIR_DROP_BAD_OUTER;
		if (bpf_ntohs(ip6->payload_len) < sizeof(*udp) + sizeof(struct gue_hdr))
			return -REDIR_DROP_BAD_OUTER;
		if (bpf_ntohs(udp->len) < sizeof(*udp) + sizeof(struct gue_hdr))
			return -REDIR_DROP_BAD_OUTER;
		p->outer_v6 = 1;
	} else {
		return 0;
	}
	p->strip_len = l3_len + sizeof(*udp);
	return 1;
}

/* The outer source must be a director: anyone else could inject packets into our stack. */
static __always_inline int source_allowed(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (!p->outer_v6) {
		struct iphdr *ip = data + sizeof(struct ethhdr);
		struct redir_lpm_v4 key = { .prefixlen = 32 };

		if ((void *)(ip + 1) > data_end)
			return 0; /* verifier: checked in parse_outer */
		__builtin_memcpy(key.addr, &ip->saddr, 4);
		return bpf_map_lookup_elem(&allowed_v4, &key) != NULL;
	} else {
		struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
		struct redir_lpm_v6 key = { .prefixlen = 128 };

		if ((void *)(ip6 + 1) > data_end)
			return 0; /* verifier: checked in parse_outer */
		__builtin_memcpy(key.addr, &ip6->saddr, 16);
		return bpf_map_lookup_elem(&allowed_v6, &key) != NULL;
	}
}

/* GUE header and hop list (docs/development/wire-format.md): 0 = ok, <0 = -reason. */
static __always_inline int parse_gue(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 off = sizeof(struct ethhdr) + p->strip_len;
	struct gue_hdr *gue;
	struct gue_hoplist *hl;
	__u32 hlen, need;

	if (off > sizeof(struct ethhdr) + 60 + 8)
		return -REDIR_DROP_BAD_OUTER; /* verifier: bounds the variable offset */
	gue = data + off;
	if ((void *)(gue + 1) > data_end)
		return -REDIR_DROP_BAD_GUE;
	/* Version 0, data message (C = 0): all GLB sends; anything else is not for us. */
	if (gue->ver_c_hlen & (GUE_VER_MASK | GUE_C_BIT))
		return -REDIR_DROP_BAD_GUE;
	/* Flags would add optional fields in front of the private data we interpret. */
	if (gue->flags)
		return -REDIR_DROP_BAD_GUE;
	if (gue->proto == GUE_PROTO_IPV4)
		p->inner_v6 = 0;
	else if (gue->proto == GUE_PROTO_IPV6)
		p->inner_v6 = 1;
	else
		return -REDIR_DROP_BAD_GUE;
	hlen = (gue->ver_c_hlen & GUE_HLEN_MASK) * 4;
	p->strip_len += sizeof(*gue) + hlen;
	p->hoplist_off = 0;
	p->hop_count = 0;
	p->next_hop = 0;
	if (hlen == 0)
		return 0;

	hl = (void *)(gue + 1);
	if ((void *)(hl + 1) > data_end)
		return -REDIR_DROP_BAD_HOPLIST;
	p->hop_type = bpf_ntohs(hl->type);
	if (p->hop_type & ~(GUE_HOPS_KIND_MASK | GUE_HOPS_F_UDP))
		return -REDIR_DROP_BAD_HOPLIST; /* a flag we do not know */
	p->udp_sc = !!(p->hop_type & GUE_HOPS_F_UDP);
	p->hop_type &= GUE_HOPS_KIND_MASK;
	if (p->hop_type == GUE_HOPS_IPV4) {
		if (p->outer_v6)
			return -REDIR_DROP_BAD_HOPLIST; /* the rewrite keeps the outer family */
		need = sizeof(*hl) + hl->hop_count * 4;
	} else if (p->hop_type == GUE_HOPS_IPV6) {
		if (!p->outer_v6)
			return -REDIR_DROP_BAD_HOPLIST;
		need = sizeof(*hl) + hl->hop_count * 16;
	} else {
		return -REDIR_DROP_BAD_HOPLIST;
	}
	/* hlen may exceed the list (padding); it may not be shorter. */
	if (need > hlen)
		return -REDIR_DROP_BAD_HOPLIST;
	if (hl->next_hop > hl->hop_count)
		return -REDIR_DROP_BAD_HOPLIST;
	p->next_hop = hl->next_hop;
	p->hop_count = hl->hop_count;
	p->hoplist_off = off + sizeof(*gue);
	return 0;
}

/* Inner IP header and the first bytes of L4: 0 = ok, <0 = -reason. */
static __always_inline int parse_inner(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 off = sizeof(struct ethhdr) + p->strip_len;
	__u32 l4_min, l4_len;

	if (off > sizeof(struct ethhdr) + 60 + 8 + 4 + 124)
		return -REDIR_DROP_BAD_GUE; /* verifier: bounds the variable offset */
	p->inner_l3_off = off;
	p->inner_later_frag = 0;
	p->inner_first_frag = 0;
	if (!p->inner_v6) {
		struct iphdr *ip = data + off;

		if ((void *)(ip + 1) > data_end)
			return -REDIR_DROP_BAD_INNER;
		if (ip->version != 4 || ip->ihl < 5)
			return -REDIR_DROP_BAD_INNER;
		if ((void *)ip + ip->ihl * 4 > data_end)
			return -REDIR_DROP_BAD_INNER;
		p->inner_proto = ip->protocol;
		p->inner_l4_off = off + ip->ihl * 4;
		if (ip->frag_off & bpf_htons(IP_OFFSET)) {
			p->inner_later_frag = 1; /* no L4 header to look at */
			return 0;
		}
		p->inner_first_frag = !!(ip->frag_off & bpf_htons(IP_MF));
		l4_len = bpf_ntohs(ip->tot_len) - ip->ihl * 4;
		if (bpf_ntohs(ip->tot_len) < ip->ihl * 4)
			return -REDIR_DROP_BAD_INNER;
	} else {
		struct ipv6hdr *ip6 = data + off;

		if ((void *)(ip6 + 1) > data_end)
			return -REDIR_DROP_BAD_INNER;
		if (ip6->version != 6)
			return -REDIR_DROP_BAD_INNER;
		p->inner_proto = ip6->nexthdr;
		p->inner_l4_off = off + sizeof(*ip6);
		l4_len = bpf_ntohs(ip6->payload_len);
	}

	switch (p->inner_proto) {
	case IPPROTO_TCP:
		l4_min = sizeof(struct tcphdr);
		break;
	case IPPROTO_UDP:
		l4_min = sizeof(struct udphdr);
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		l4_min = 8;
		break;
	default:
		return 0;
	}
	if (p->inner_l4_off > PULL_LEN)
		return -REDIR_DROP_BAD_INNER; /* verifier: bounds the variable offset */
	if (data + p->inner_l4_off + l4_min > data_end)
		return -REDIR_DROP_BAD_INNER;
	if (p->inner_proto == IPPROTO_TCP) {
		struct tcphdr *th = data + p->inner_l4_off;

		if ((void *)(th + 1) > data_end)
			return -REDIR_DROP_BAD_INNER; /* verifier: checked just above */
		if (th->doff < 5)
			return -REDIR_DROP_BAD_INNER;
	} else if (p->inner_proto == IPPROTO_UDP && !p->inner_first_frag) {
		struct udphdr *uh = data + p->inner_l4_off;

		if ((void *)(uh + 1) > data_end)
			return -REDIR_DROP_BAD_INNER; /* verifier: checked just above */
		/* The datagram must fit the IP payload: a lie here would have the socket lookup
		 * judge a packet the stack then drops anyway. */
		if (bpf_ntohs(uh->len) < sizeof(*uh) || bpf_ntohs(uh->len) > l4_len)
			return -REDIR_DROP_BAD_INNER;
	}
	return 0;
}

#endif
