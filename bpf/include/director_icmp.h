/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Too big: answer the client with frag-needed / packet-too-big so its PMTU discovery works. */
#ifndef XDPLB_DIRECTOR_ICMP_H
#define XDPLB_DIRECTOR_ICMP_H

#include <linux/bpf.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "parse.h"
#include "director_csum.h"
#include "director_pkt.h"

/* Turn the frame into frag-needed (IPv4) / packet-too-big (IPv6) from the VIP to the client,
 * quoting the offending IP header and 8 bytes, and send it back out of the ingress port with
 * the Ethernet (and VLAN) header reversed. */
static __always_inline int reply_too_big(struct xdp_md *ctx, struct pkt *p, __u32 mtu)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 l3 = p->l3_off;
	/* IPv4: its header (any IHL) and 8 bytes; IPv6: the fixed header and 8 bytes (of the L4
	 * header, or of the first extension header) */
	__u32 quote = p->is_v6 ? sizeof(struct ipv6hdr) + 8 : (p->l4_off - p->l3_off) + 8;
	__u32 hdr = p->is_v6 ? sizeof(struct ipv6hdr) + sizeof(struct icmp6hdr) :
			       sizeof(struct iphdr) + sizeof(struct icmphdr);
	__u8 l2[18];
	int delta;

	if (l3 != ETH_HLEN_ && l3 != ETH_HLEN_ + 4) /* verifier: parse_l2's two outcomes */
		return -1;
	if (quote > 68)
		return -1;
	if (data + 18 > data_end) /* the bound packet has more than 18 bytes */
		return -1;
	__builtin_memcpy(l2, data, 18);

	/* Cut the frame to L2 + quote, then prepend the new IP + ICMP headers. */
	delta = (int)(l3 + quote) - (int)frame_bytes(data, data_end);
	if (delta < 0 && bpf_xdp_adjust_tail(ctx, delta))
		return -1;
	if (bpf_xdp_adjust_head(ctx, 0 - (int)hdr))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;

	/* Ethernet (and VLAN tag) back where they came from */
	if (data + 18 > data_end)
		return -1;
	__builtin_memcpy(data, l2 + 6, 6);
	__builtin_memcpy(data + 6, l2, 6);
	if (l3 == ETH_HLEN_)
		__builtin_memcpy(data + 12, l2 + 12, 2);
	else
		__builtin_memcpy(data + 12, l2 + 12, 6);

	if (p->is_v6) {
		struct ipv6hdr *ip6 = data + l3;
		struct icmp6hdr *icmp = (void *)(ip6 + 1);
		struct ipv6hdr *orig = (void *)(icmp + 1);
		__u32 mlen = sizeof(*icmp) + 48;
		__u64 s;

		if ((void *)(orig + 1) + 8 > data_end)
			return -1;
		*(__be32 *)ip6 = bpf_htonl(6u << 28);
		ip6->payload_len = bpf_htons((__u16)mlen);
		ip6->nexthdr = IPPROTO_ICMPV6_;
		ip6->hop_limit = DEFAULT_TTL_;
		ip6->saddr = orig->daddr;
		ip6->daddr = orig->saddr;
		icmp->icmp6_type = ICMPV6_PKT_TOOBIG_;
		icmp->icmp6_code = 0;
		icmp->icmp6_cksum = 0;
		icmp->icmp6_mtu = bpf_htonl(mtu < IPV6_MIN_MTU_ ? IPV6_MIN_MTU_ : mtu);
		s = pseudo_sum(1, &ip6->saddr, &ip6->daddr, mlen, IPPROTO_ICMPV6_);
		s += sum16(icmp, sizeof(*icmp) + 48);
		icmp->icmp6_cksum = ~fold64(s);
	} else {
		struct iphdr *ip = data + l3;
		struct icmphdr *icmp = (void *)(ip + 1);
		struct iphdr *orig = (void *)(icmp + 1);
		__u16 *w = (void *)icmp;
		__u64 s = 0;

		if ((void *)(orig + 1) > data_end)
			return -1;
		ip->version = 4;
		ip->ihl = 5;
		ip->tos = 0xc0; /* network control, as the kernel sends ICMP errors */
		ip->tot_len = bpf_htons((__u16)(sizeof(*ip) + sizeof(*icmp) + quote));
		ip->id = 0;
		ip->frag_off = 0;
		ip->ttl = DEFAULT_TTL_;
		ip->protocol = IPPROTO_ICMP_;
		ip->check = 0;
		ip->saddr = orig->daddr;
		ip->daddr = orig->saddr;
		ip->check = ~fold64(sum16(ip, sizeof(*ip)));
		icmp->type = ICMP_DEST_UNREACH_;
		icmp->code = ICMP_FRAG_NEEDED_;
		icmp->checksum = 0;
		icmp->un.frag.__unused = 0;
		icmp->un.frag.mtu = bpf_htons((__u16)mtu);
		/* quote is 28..68 bytes: IHL words plus 8 */
		for (int i = 0; i < (8 + 68) / 2; i++) {
			if (i >= (8 + quote) / 2)
				break;
			if ((void *)(w + i + 1) > data_end)
				return -1;
			s += w[i];
		}
		icmp->checksum = ~fold64(s);
	}
	return 0;
}

#endif
