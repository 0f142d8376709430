/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* GUE encapsulation (gue.h, docs/development/wire-format.md): the outer Ethernet, IP, UDP,
 * GUE and hop list headers written in front of the inner IP packet. */
#ifndef XDPLB_DIRECTOR_ENCAP_H
#define XDPLB_DIRECTOR_ENCAP_H

#include <linux/bpf.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi.h"
#include "consts.h"
#include "csum.h"
#include "gue.h"
#include "siphash.h"
#include "director_csum.h"
#include "director_pkt.h"

static __always_inline __u32 encap_overhead(int outer_v6, __u32 alternates)
{
	if (outer_v6)
		return sizeof(struct ipv6hdr) + sizeof(struct udphdr) + sizeof(struct gue_hdr) +
		       sizeof(struct gue_hoplist) + 16 * alternates;
	return sizeof(struct iphdr) + sizeof(struct udphdr) + sizeof(struct gue_hdr) +
	       sizeof(struct gue_hoplist) + 4 * alternates;
}

struct encap_args {
	const struct director_row *row;
	const struct director_config *cfg;
	const __u8 *dmac; /* NULL: keep the frame's own addresses (kernel path) */
	const __u8 *smac;
	__u64 hash;
	__u32 grown;       /* bytes the frame was grown by: the old frame starts there */
	__u64 payload_sum; /* inner packet sum, IPv6 outer only */
	__u32 alternates;  /* hops in the list, the primary again included when udp_sc */
	__u8 udp_sc;       /* UDP second chance: flag the list, end it with the primary */
	__u8 outer_v6;
	__u8 outer_df;
};

/* 6 bytes as three 16-bit words (MAC addresses sit at even offsets everywhere here). */
static __always_inline void copy_mac(void *dst, const void *src)
{
	const __u16 *s = src;
	__u16 *d = dst;

	d[0] = s[0];
	d[1] = s[1];
	d[2] = s[2];
}

/* The row slot of the i-th hop of the list (1-based): the row's alternates in order, and
 * with UDP second chance the primary (slot 0) once more at the end. The caller stops at
 * i > alternates. */
static __always_inline int hop_slot(const struct encap_args *a, int i)
{
	if (i >= GUE_MAX_HOPS || (a->udp_sc && i == (int)a->alternates))
		return 0;
	return i;
}

/* The outer IPv6 header (UDP, DEFAULT_TTL_) as ten words in network order, stored once each
 * (see encap()). flow: the flow label's bits, tos: the traffic class. */
static __always_inline void put_ip6_outer(__u32 *w, __u32 tos, __u32 flow, __u32 udp_len,
					  const __u32 *src, const __u32 *dst)
{
	__u64 *w64 = (__u64 *)w;

	asm volatile("" : "+r"(src), "+r"(dst)); /* wide loads, whatever clang knows of them */
	w64[0] = sip_join32(bpf_htonl((6u << 28) | (tos << 20) | (flow & 0xfffff)),
			    bpf_htonl((udp_len << 16) | (IPPROTO_UDP_ << 8) | DEFAULT_TTL_));
	w64[1] = *(const __u64 *)src;
	w64[2] = *(const __u64 *)(src + 2);
	w64[3] = *(const __u64 *)dst;
	w64[4] = *(const __u64 *)(dst + 2);
}

/* Write Ethernet / outer IP / UDP / GUE / hop list in front of the inner IP packet, in the
 * room forward() grew the frame by (the old Ethernet and VLAN header are overwritten).
 * Returns 0 or -1.
 *
 * Every header word is computed in a register and stored once, and the checksums are summed
 * from those registers and from the map values, never read back from the packet: a load that
 * spans several just-made smaller stores waits for them to retire (store forwarding fails),
 * which cost 10 ns for the IPv4 header checksum alone. */
static __always_inline int encap(struct xdp_md *ctx, struct pkt *p, const struct encap_args *a)
{
	__u32 alternates = a->alternates;
	__u32 gue_len = sizeof(struct udphdr) + sizeof(struct gue_hdr) + sizeof(struct gue_hoplist) +
			(a->outer_v6 ? 16 : 4) * alternates;
	__u32 udp_len = gue_len + p->ip_len;
	__u32 ip_hlen = a->outer_v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);
	const __u32 *dst = (const __u32 *)a->row->hops[0];
	/* UDP / GUE / hop list words, network order as they sit in the packet */
	__be16 sport = bpf_htons(0xc000 | ((a->hash >> 32) & 0x3fff));
	__be16 dport = a->cfg->gue_port;
	__be16 ulen = bpf_htons((__u16)udp_len);
	__be16 gue_w = bpf_htons((__u16)(((1 + (a->outer_v6 ? 4 : 1) * alternates) << 8) |
					 (p->is_v6 ? GUE_PROTO_IPV6 : GUE_PROTO_IPV4)));
	__be16 type_w = bpf_htons((a->udp_sc ? GUE_HOPS_F_UDP : 0) |
				  (a->outer_v6 ? GUE_HOPS_IPV6 : GUE_HOPS_IPV4));
	__be16 count_w = bpf_htons((__u16)alternates); /* next_hop 0, hop_count */
	__u16 old_mac[6];
	__u16 *w16;
	__u32 *w;
	void *data, *data_end;

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	/* The longest fixed part: Ethernet, IPv6, UDP, GUE, hop list word. */
	if (data + ETH_HLEN_ + sizeof(struct ipv6hdr) + 16 > data_end)
		return -1;

	w16 = data;
	if (a->dmac) {
		copy_mac(w16, a->dmac);
		copy_mac(w16 + 3, a->smac);
	} else {
		/* The kernel path keeps the frame's own addresses: they are still in the old
		 * Ethernet header, past the room just grown (which they may overlap). */
		void *old = data + (a->grown & 0xff);

		if (old + 12 > data_end)
			return -1;
		copy_mac(old_mac, old);
		copy_mac(old_mac + 3, old + 6);
		copy_mac(w16, old_mac);
		copy_mac(w16 + 3, old_mac + 3);
	}
	w16[6] = a->outer_v6 ? bpf_htons(ETH_P_IPV6_) : bpf_htons(ETH_P_IP_);

	w = data + ETH_HLEN_;
	if (a->outer_v6) {
		const __u32 *src = (const __u32 *)a->cfg->src6;
		__u32 fl = (__u32)a->hash & 0xfffff; /* flow label: spreads the flow on ECMP paths */
		__u64 s;

		put_ip6_outer(w, p->tos, fl, udp_len, src, dst);
		w16 = (void *)(w + 10);
		/* pseudo header, UDP header, GUE, hop list word, then the hops and the payload */
		s = (__u64)src[0] + src[1] + src[2] + src[3] + dst[0] + dst[1] + dst[2] + dst[3] +
		    ulen + bpf_htons(IPPROTO_UDP_) + sport + dport + ulen + gue_w + type_w + count_w;
		w = (void *)(w16 + 8);
#pragma unroll
		for (int i = 1; i <= GUE_MAX_HOPS; i++) {
			const __u32 *h = (const __u32 *)a->row->hops[hop_slot(a, i)];
			__u32 *o = w + 4 * (i - 1);

			if (i > alternates)
				break;
			if ((void *)(o + 4) > data_end)
				return -1;
			o[0] = h[0];
			o[1] = h[1];
			o[2] = h[2];
			o[3] = h[3];
			s += (__u64)h[0] + h[1] + h[2] + h[3];
		}
		s += a->payload_sum;
		w16[3] = csum_udp_mangle0(~fold64(s));
	} else {
		__u32 w0 = bpf_htonl((0x45u << 24) | ((__u32)p->tos << 16) | (ip_hlen + udp_len));
		__u32 w1 = a->outer_df ? bpf_htonl(IP_DF_) : 0; /* id 0, flags, offset 0 */
		__u32 w2 = bpf_htonl((DEFAULT_TTL_ << 24) | (IPPROTO_UDP_ << 16)); /* check 0 */
		__u32 src = a->cfg->src4;

		w[0] = w0;
		w[1] = w1;
		w[2] = w2;
		w[3] = src;
		w[4] = dst[0];
		w16 = (void *)(w + 5);
		((__u16 *)w)[5] = ~fold64((__u64)w0 + w1 + w2 + src + dst[0]);
		w16[3] = 0; /* over IPv4: no UDP checksum (GLB does the same) */
		w = (void *)(w16 + 8);
#pragma unroll
		for (int i = 1; i <= GUE_MAX_HOPS; i++) {
			__u32 *o = w + (i - 1);

			if (i > alternates)
				break;
			if ((void *)(o + 1) > data_end)
				return -1;
			*o = *(const __u32 *)a->row->hops[hop_slot(a, i)];
		}
	}
	w16[0] = sport;
	w16[1] = dport;
	w16[2] = ulen;
	w16[4] = gue_w;
	w16[5] = 0; /* GUE flags */
	w16[6] = type_w;
	w16[7] = count_w;
	return 0;
}

#endif
