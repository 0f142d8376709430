/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Classification for the general path: what the packet is (IPv4, IPv6 and its extension
 * headers, TCP/UDP, ICMP errors quoting a bound flow, fragments), whether it is bound, and the
 * verdict for everything that is not forwarded. */
#ifndef XDPLB_DIRECTOR_CLASSIFY_H
#define XDPLB_DIRECTOR_CLASSIFY_H

#include <linux/bpf.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi.h"
#include "consts.h"
#include "parse.h"
#include "director_pkt.h"
#include "director_bind.h"
#include "director_forward.h"

/* IPv6 extension headers walked to find the upper layer (hop-by-hop, routing, destination
 * options; the fragment header is not: a fragment passes), and at most how many. */
#define IPV6_EXT_MAX 4
static __always_inline int is_ipv6_ext(__u8 proto)
{
	return proto == 0 || proto == 43 || proto == 60;
}

/* TCP/UDP ports at l4 (client -> VIP). Returns 0, or -1 if fewer than 8 bytes are there. */
static __always_inline int read_ports(void *l4, void *data_end, __be16 *sport, __be16 *dport)
{
	__be16 *ports = l4;

	if ((void *)(ports + 4) > data_end) /* 8 bytes: the part an ICMP error quotes */
		return -1;
	*sport = ports[0];
	*dport = ports[1];
	return 0;
}

/* An ICMP frag-needed / ICMPv6 packet-too-big: find the quoted flow (VIP -> client), reverse
 * it (client -> VIP) and match its bind. 0: bound; otherwise not. */
static __always_inline int classify_icmp_error(struct pkt *p, void *quoted, void *data_end)
{
	const struct director_vip *v;
	__be16 qsport, qdport;
	__u8 vip[16] __attribute__((aligned(8)));

	if (p->is_v6) {
		struct ipv6hdr *q = quoted;

		if ((void *)(q + 1) > data_end)
			return -1;
		if (q->nexthdr != IPPROTO_TCP_ && q->nexthdr != IPPROTO_UDP_)
			return -1;
		if (read_ports(q + 1, data_end, &qsport, &qdport))
			return -1;
		p->flow.w[0] = *(const __u64 *)&q->daddr;
		p->flow.w[1] = *(const __u64 *)((void *)&q->daddr + 8);
		p->flow.w[2] = *(const __u64 *)&q->saddr;
		p->flow.w[3] = *(const __u64 *)((void *)&q->saddr + 8);
		p->flow.sport = qdport;
		p->flow.dport = qsport;
		__builtin_memcpy(vip, &q->saddr, 16);
		v = find_vip(p, vip, q->nexthdr);
		return v ? match_port(p, v, bpf_ntohs(qsport)) : -1;
	} else {
		struct iphdr *q = quoted;
		__u32 qihl;

		if ((void *)(q + 1) > data_end)
			return -1;
		qihl = q->ihl * 4;
		if (q->version != 4 || qihl < sizeof(*q))
			return -1;
		if (q->protocol != IPPROTO_TCP_ && q->protocol != IPPROTO_UDP_)
			return -1;
		if (q->frag_off & bpf_htons(IP_OFFSET_))
			return -1;
		if (read_ports(quoted + qihl, data_end, &qsport, &qdport))
			return -1;
		p->flow.src4 = q->daddr;
		p->flow.dst4 = q->saddr;
		p->flow.sport = qdport;
		p->flow.dport = qsport;
		addr_v4mapped(vip, q->saddr);
		v = find_vip(p, vip, q->protocol);
		return v ? match_port(p, v, bpf_ntohs(qsport)) : -1;
	}
}

/* Decide for the L4 part, once the IP header is known. vip16 is the destination. */
static __always_inline int classify_l4(struct xdp_md *ctx, struct pkt *p, const __u8 *vip16,
				       void *l4, void *data_end, int first_fragment)
{
	__be16 sport, dport;

	/* Every branch below starts by asking whether the destination is a VIP. */
	if (!maybe_vip(vip16))
		return verdict(p, DIRECTOR_PASS_NOT_VIP, XDP_PASS);
	if (p->ip_proto == IPPROTO_TCP_ || p->ip_proto == IPPROTO_UDP_) {
		/* The one lookup that all host traffic to TCP/UDP pays. */
		const struct director_vip *v = find_vip(p, vip16, p->ip_proto);

		if (!v)
			return verdict(p, DIRECTOR_PASS_NOT_VIP, XDP_PASS);
		/* A VIP: now the ports are needed. A cut-off header to a VIP is nobody's traffic
		 * but ours, and no backend could use it. */
		if (read_ports(l4, data_end, &sport, &dport))
			return verdict(p, DIRECTOR_DROP_L4_TRUNCATED, XDP_DROP);
		if (match_port(p, v, bpf_ntohs(dport)))
			return verdict(p, DIRECTOR_PASS_PORT_NOT_BOUND, XDP_PASS);
		p->flow.sport = sport;
		p->flow.dport = dport;
		/* The inner checksum covers more than this packet (first fragment), or nothing
		 * (UDP over IPv4 may send 0): the IPv6 outer checksum has to sum the bytes. */
		if (first_fragment)
			p->slow_csum = 1;
		if (p->ip_proto == IPPROTO_UDP_ && !p->is_v6 &&
		    ((struct udphdr *)l4)->check == 0)
			p->slow_csum = 1;
		return forward(ctx, p);
	}

	if (!is_vip(vip16))
		return verdict(p, DIRECTOR_PASS_NOT_VIP, XDP_PASS);
	if (p->ip_proto == (p->is_v6 ? IPPROTO_ICMPV6_ : IPPROTO_ICMP_) && !first_fragment) {
		__u8 *icmp = l4;

		if ((void *)(icmp + 8) > data_end)
			return verdict(p, DIRECTOR_PASS_ICMP, XDP_PASS);
		if ((p->is_v6 && icmp[0] == ICMPV6_PKT_TOOBIG_) ||
		    (!p->is_v6 && icmp[0] == ICMP_DEST_UNREACH_ && icmp[1] == ICMP_FRAG_NEEDED_)) {
			if (classify_icmp_error(p, icmp + 8, data_end) == 0) {
				p->icmp_error = 1;
				return forward(ctx, p);
			}
		}
		/* Echo and every other ICMP: the kernel answers or drops (it owns no VIP unless
		 * the operator put one on lo to answer pings). */
		return verdict(p, DIRECTOR_PASS_ICMP, XDP_PASS);
	}
	if (p->is_v6 && p->ip_proto == IPPROTO_FRAGMENT_)
		return verdict(p, DIRECTOR_PASS_FRAGMENT, XDP_PASS);
	if (p->is_v6 && is_ipv6_ext(p->ip_proto))
		return verdict(p, DIRECTOR_PASS_IPV6_EXT, XDP_PASS);
	/* A VIP, but a protocol no bind serves (GRE, SCTP, ...). */
	return verdict(p, DIRECTOR_PASS_PORT_NOT_BOUND, XDP_PASS);
}

static __always_inline int classify_v4(struct xdp_md *ctx, struct pkt *p, void *data,
				       void *data_end)
{
	struct iphdr *ip = data + p->l3_off;
	__u32 ihl, tot;
	__u8 vip[16] __attribute__((aligned(8)));

	if ((void *)(ip + 1) > data_end)
		return verdict(p, DIRECTOR_PASS_UNPARSED, XDP_PASS);
	ihl = ip->ihl * 4;
	tot = bpf_ntohs(ip->tot_len);
	/* Malformed: the kernel drops it; we cannot tell whose it is, so we don't touch it. */
	if (ip->version != 4 || ihl < sizeof(*ip) || tot < ihl ||
	    p->l3_off + tot > p->frame_len)
		return verdict(p, DIRECTOR_PASS_UNPARSED, XDP_PASS);
	if ((void *)ip + ihl > data_end) /* verifier: tot <= frame length implies it */
		return verdict(p, DIRECTOR_PASS_UNPARSED, XDP_PASS);

	p->ip_len = tot;
	p->l4_off = p->l3_off + ihl;
	p->ip_proto = ip->protocol;
	p->tos = ip->tos;
	p->df = !!(ip->frag_off & bpf_htons(IP_DF_));
	p->flow.src4 = ip->saddr;
	p->flow.dst4 = ip->daddr;
	addr_v4mapped(vip, ip->daddr);

	if (ip->frag_off & bpf_htons(IP_OFFSET_)) {
		/* A later fragment carries no ports: no bind can be matched, no flow hashed. */
		if (!maybe_vip(vip) || !is_vip(vip))
			return verdict(p, DIRECTOR_PASS_NOT_VIP, XDP_PASS);
		return verdict(p, DIRECTOR_PASS_FRAGMENT, XDP_PASS);
	}
	return classify_l4(ctx, p, vip, (void *)ip + ihl, data_end,
			   !!(ip->frag_off & bpf_htons(IP_MF_)));
}

static __always_inline int classify_v6(struct xdp_md *ctx, struct pkt *p, void *data,
				       void *data_end)
{
	struct ipv6hdr *ip6 = data + p->l3_off;
	__u8 vip[16] __attribute__((aligned(8)));
	__u32 off;
	void *l4;

	if ((void *)(ip6 + 1) > data_end)
		return verdict(p, DIRECTOR_PASS_UNPARSED, XDP_PASS);
	p->ip_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
	/* payload_len 0 is a jumbogram (or garbage): not ours to parse */
	if (ip6->version != 6 || ip6->payload_len == 0 || p->l3_off + p->ip_len > p->frame_len)
		return verdict(p, DIRECTOR_PASS_UNPARSED, XDP_PASS);

	p->is_v6 = 1;
	p->df = 1;
	p->ip_proto = ip6->nexthdr;
	p->tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
	p->flow.w[0] = *(const __u64 *)&ip6->saddr;
	p->flow.w[1] = *(const __u64 *)((void *)&ip6->saddr + 8);
	p->flow.w[2] = *(const __u64 *)&ip6->daddr;
	p->flow.w[3] = *(const __u64 *)((void *)&ip6->daddr + 8);
	__builtin_memcpy(vip, &ip6->daddr, 16);
	/* Hop-by-hop, routing and destination options headers: walk up to IPV6_EXT_MAX of them
	 * to the upper layer. A chain that is longer, or that leaves less than 8 bytes of the
	 * payload after it, keeps its extension header as the protocol: classify_l4 passes it
	 * (ipv6_ext). */
	off = p->l3_off + sizeof(*ip6);
#pragma unroll
	for (int i = 0; i < IPV6_EXT_MAX; i++) {
		__u8 *e;
		__u32 len;

		if (!is_ipv6_ext(p->ip_proto))
			break;
		e = data + (off & 0x3fff); /* verifier: off < 64 KiB (the payload bounds it) */
		asm volatile("" : "+r"(e)); /* verifier: check and use the same register */
		if ((void *)(e + 8) > data_end)
			break;
		len = ((__u32)e[1] + 1) * 8;
		if (off + len + 8 > p->l3_off + p->ip_len)
			break;
		p->ip_proto = e[0];
		off += len;
		/* The inner L4 checksum no longer stands in for the whole inner packet. */
		p->slow_csum = 1;
	}
	p->l4_off = off;
	l4 = data + (off & 0x3fff);
	return classify_l4(ctx, p, vip, l4, data_end, 0);
}

#endif
