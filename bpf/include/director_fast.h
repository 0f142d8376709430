/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The fast paths: fast_v4 and fast_v6 take the common case straight through, or hand the
 * untouched packet to the general path (docs/development/director-datapath.md, "The fast
 * path"). */
#ifndef XDPLB_DIRECTOR_FAST_H
#define XDPLB_DIRECTOR_FAST_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi.h"
#include "consts.h"
#include "gue.h"
#include "parse.h"
#include "siphash.h"
#include "director_maps.h"
#include "director_pkt.h"
#include "director_csum.h"
#include "director_encap.h"

/* The fast paths' answers when the packet is not their case: the general path decides; or,
 * from fast_v4, an IPv6 frame for fast_v6 to try. */
#define FAST_FALLBACK -1
#define FAST_V6 -2

/* How many of a (VIP, protocol)'s port ranges the fast paths look through. */
#define FAST_RANGES 4

/* The first of the first FAST_RANGES ranges of v that covers port (host order), as
 * match_port() would find it: its service | bind << 16, or -1 (the general path looks at
 * them all). */
static __always_inline long fast_range(const struct director_vip *v, __u16 port)
{
#pragma unroll
	for (int i = 0; i < FAST_RANGES; i++) {
		if (i >= v->count)
			break;
		if (port >= v->ranges[i].first && port <= v->ranges[i].last)
			return v->ranges[i].service | (__u32)v->ranges[i].bind << 16;
	}
	return -1;
}

/* What fast_bind() answers for an address that no bind has: host traffic. */
#define FAST_NOT_VIP -3

/* The key of the one-entry maps, read from .rodata rather than stored on the stack each
 * time: one less value for the two fast paths to keep in a register. Not static: clang lays
 * out .rodata globals first, in the order they are defined, so this one stays at offset 0
 * ahead of director.bpf.c's (the program's text does not depend on them). */
const __u32 fast_zero = 0;

/* The bind of (address, protocol, port) by the bind index, as find_vip() and match_port()
 * find it: its service | bind << 16. FAST_NOT_VIP: no bind has the address and protocol (the
 * slot holds another pair and did not overflow, or none), which find_vip() concludes too;
 * FAST_FALLBACK: only the general path can tell. The address as in director_vip_slot (a0, a1:
 * its two 64-bit halves; xw: the xor of its four 32-bit words). */
static __always_inline long fast_bind(__u32 xw, __u64 a0, __u64 a1, __u8 proto, __be16 dport)
{
	const struct director_vip_slot *vs;
	__u32 slot = ((xw + proto) * 0x9e3779b1u) >> 20;
	void *index = bpf_map_lookup_elem(&director_vip_index, &fast_zero);

	if (!index)
		return FAST_FALLBACK;
	vs = bpf_map_lookup_elem(index, &slot);
	if (!vs)
		return FAST_FALLBACK;
	if (vs->proto != proto || *(const __u64 *)vs->addr != a0 ||
	    *(const __u64 *)(vs->addr + 8) != a1)
		return vs->overflow ? FAST_FALLBACK : FAST_NOT_VIP;
	return fast_range(&vs->vip, bpf_ntohs(dport));
}

/* The outer Ethernet header, to the next hop nh. */
static __always_inline void put_eth(void *data, const struct director_nexthop *nh, __be16 type)
{
	const void *mac = nh->dmac;

	asm volatile("" : "+r"(mac)); /* wide loads: dmac, smac are 2-byte aligned */
	*(__u64 *)data = *(const __u64 *)mac;
	*(__u32 *)(data + 8) = *(const __u32 *)(mac + 8);
	*(__u16 *)(data + 12) = type;
}

/* Count the encapsulated frame for its bind and send it out of egress: XDP_TX when that is
 * where it came in, as forward() does. */
static __always_inline int fast_send(__u16 bind, __u32 frame_len, __u32 egress, __u32 ingress)
{
	count(&stats_bind, bind, frame_len);
	if (egress == ingress)
		return XDP_TX;
	if (bpf_redirect(egress, 0) != XDP_REDIRECT) {
		count(&stats_reason, DIRECTOR_DROP_REDIRECT_FAILED, frame_len);
		return XDP_DROP;
	}
	return XDP_REDIRECT;
}

/* The row of hash in a fixed-size table (hdr: its entry 0), and its primary's next hop if
 * the general path cached it on this CPU, for this ingress interface, still valid, with room
 * for an outer packet of outer_len bytes: the row, and *nh set; else NULL. */
static __always_inline const struct director_row *
fast_row(__u32 ingress, void *fixed, const struct director_table_hdr *hdr,
	 const struct director_config *cfg, __u64 hash, __u32 outer_len,
	 const struct director_nexthop **nh)
{
	const union director_slot *rslot;
	const struct director_nexthop *n;
	const struct director_row *row;
	__u32 idx = 1 + ((__u32)hash & hdr->rows_mask);

	rslot = bpf_map_lookup_elem(fixed, &idx);
	asm volatile("" : "+r"(rslot)); /* as in forward(): the two lookups stay apart */
	if (!rslot)
		return NULL;
	row = &rslot->row;
	n = bpf_map_lookup_elem(&director_nexthops, &row->primary_nh);
	if (!n || n->expires <= bpf_jiffies64() || n->generation != cfg->generation ||
	    n->ingress != ingress || outer_len > n->mtu ||
	    *(const __u64 *)n->addr != *(const __u64 *)row->hops[0] ||
	    *(const __u64 *)(n->addr + 8) != *(const __u64 *)(row->hops[0] + 8))
		return NULL;
	*nh = n;
	return row;
}

/* Grow the frame by 40 and write the outer Ethernet, IPv4, UDP, GUE and hop list headers (one
 * alternate) as encap() does, in front of the inner packet (IPv6 when inner_v6, a constant at
 * each call site), then count and send it. Every value the headers need is read after the
 * bpf_xdp_adjust_head call, the inner IP header from where it now is: clang keeps only r6-r9
 * across a call, so values read before it go to the stack and come back (one syscall 43.5 ->
 * 39 ns for IPv4, docs/development/director-datapath.md). */
static __always_inline int fast_encap4(struct xdp_md *ctx, const struct director_row *row,
				       const struct director_nexthop *nh,
				       const struct director_config *cfg, __u64 hash, __u16 bind,
				       const int inner_v6)
{
	void *data, *data_end;
	__u64 *w64;
	__u32 w0, w1, w2, src, dst4, tot, tos;

	if (bpf_xdp_adjust_head(ctx, -40))
		return FAST_FALLBACK; /* nothing changed: the general path tries and counts */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (inner_v6) {
		struct ipv6hdr *ip6 = data + ETH_HLEN_ + 40;

		/* verifier: the frame just grew by 40, in front of the IP header it had */
		if ((void *)(ip6 + 1) > data_end)
			return XDP_DROP;
		tot = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
		tos = (bpf_ntohl(*(const __u32 *)ip6) >> 20) & 0xff;
		w1 = bpf_htonl(IP_DF_); /* routers never fragment IPv6: DF, as classify_v6 says */
	} else {
		struct iphdr *ip = data + ETH_HLEN_ + 40;

		if ((void *)(ip + 1) > data_end) /* verifier: as above */
			return XDP_DROP;
		tot = bpf_ntohs(ip->tot_len);
		tos = ip->tos;
		w1 = ip->frag_off & bpf_htons(IP_DF_) ? bpf_htonl(IP_DF_) : 0;
	}
	w0 = bpf_htonl((0x45u << 24) | (tos << 16) | (40 + tot));
	w2 = bpf_htonl((DEFAULT_TTL_ << 24) | (IPPROTO_UDP_ << 16));
	src = cfg->src4;
	dst4 = *(const __u32 *)row->hops[0];
	put_eth(data, nh, bpf_htons(ETH_P_IP_));
	/* 8 bytes a store, built in memory order (sip_join32): each value one store */
	w64 = data + ETH_HLEN_;
	w64[0] = sip_join32(w0, w1);
	w64[1] = sip_join32(sip_join16((__u16)w2, ~fold64((__u64)w0 + w1 + w2 + src + dst4)), src);
	w64[2] = sip_join32(dst4, sip_join16(bpf_htons(0xc000 | ((hash >> 32) & 0x3fff)),
					     cfg->gue_port));
	w64[3] = sip_join32(sip_join16(bpf_htons((__u16)(20 + tot)), 0),
			    sip_join16(bpf_htons((2 << 8) | (inner_v6 ? GUE_PROTO_IPV6 :
									 GUE_PROTO_IPV4)),
				       0));
	w64[4] = sip_join32(sip_join16(bpf_htons(GUE_HOPS_IPV4), bpf_htons(1)),
			    *(const __u32 *)row->hops[1]);
	return fast_send(bind, ETH_HLEN_ + tot, nh->ifindex, ctx->ingress_ifindex);
}

/* Write the outer Ethernet, IPv6, UDP, GUE and hop list headers (one alternate) as encap()
 * does, in the 72 bytes the frame has grown by, in front of an inner packet of inner_len bytes
 * whose sum (as inner_sum() takes it) is sum; gue_w: the GUE header's first word. 0, or -1 if
 * the frame is not as long as the verifier needs to see. */
static __always_inline int fast_put6(struct xdp_md *ctx, const struct director_nexthop *nh,
				     const struct director_row *row,
				     const struct director_config *cfg, __u32 tos, __u64 hash,
				     __u32 inner_len, __be16 gue_w, __u64 sum)
{
	const __u32 *src = (const __u32 *)cfg->src6;
	const __u32 *dst = (const __u32 *)row->hops[0];
	const __u32 *alt = (const __u32 *)row->hops[1];
	__u32 udp_len = 32 + inner_len;
	__be16 sport = bpf_htons(0xc000 | ((hash >> 32) & 0x3fff));
	__be16 gue_port = cfg->gue_port, ulen = bpf_htons((__u16)udp_len);
	void *data, *data_end;
	__u64 *w64;
	__u32 *w;

	sum += (__u64)src[0] + src[1] + src[2] + src[3] + dst[0] + dst[1] + dst[2] + dst[3] +
	       alt[0] + alt[1] + alt[2] + alt[3] + ulen + bpf_htons(IPPROTO_UDP_) + sport +
	       gue_port + ulen + gue_w + bpf_htons(GUE_HOPS_IPV6) + bpf_htons(1);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + ETH_HLEN_ + 72 > data_end) /* verifier: the frame just grew by 72 */
		return -1;
	put_eth(data, nh, bpf_htons(ETH_P_IPV6_));
	w = data + ETH_HLEN_;
	put_ip6_outer(w, tos, (__u32)hash, udp_len, src, dst);
	w64 = (void *)(w + 10);
	w64[0] = sip_join32(sip_join16(sport, gue_port),
			    sip_join16(ulen, csum_udp_mangle0(~fold64(sum))));
	w64[1] = sip_join32(sip_join16(gue_w, 0), sip_join16(bpf_htons(GUE_HOPS_IPV6), bpf_htons(1)));
	w64[2] = *(const __u64 *)alt;
	w64[3] = *(const __u64 *)(alt + 2);
	return 0;
}

/* fast_v4's packet to a table of IPv6 backends: outer IPv6 with its UDP checksum, the inner
 * IPv4 packet's sum as inner_sum() takes it (a valid IPv4 header sums to zero and a valid L4
 * checksum leaves the complement of the pseudo header). A UDP checksum of 0 covers nothing:
 * the general path sums the bytes. The row first and the frame grown after it, as for IPv4 in
 * IPv4, and the inner header read from where it then is. */
static __always_inline int fast_v4_in_v6(struct xdp_md *ctx, void *fixed,
					 const struct director_table_hdr *hdr,
					 const struct director_config *cfg, __u64 hash, __u16 bind,
					 __u32 tot)
{
	const struct director_nexthop *nh;
	const struct director_row *row;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + ETH_HLEN_;
	__be16 *l4 = (void *)(ip + 1);
	__u32 l4_len;
	__u64 sum;

	/* The protocol and UDP checksum read again here, not kept from fast_v4: held across its
	 * lookups they took registers from the IPv4 case, which then went to the stack. */
	if ((void *)(l4 + 4) > data_end) /* verifier: fast_v4 checked it */
		return FAST_FALLBACK;
	if (hdr->family != 6 || (ip->protocol == IPPROTO_UDP_ && !l4[3]) ||
	    !(*(const __u64 *)cfg->src6 | *(const __u64 *)(cfg->src6 + 8)))
		return FAST_FALLBACK;
	row = fast_row(ctx->ingress_ifindex, fixed, hdr, cfg, hash, tot + 72, &nh);
	if (!row)
		return FAST_FALLBACK;
	if (bpf_xdp_adjust_head(ctx, -72))
		return FAST_FALLBACK;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	ip = data + ETH_HLEN_ + 72;
	if ((void *)(ip + 1) > data_end) /* verifier: the frame just grew by 72 */
		return XDP_DROP;
	tot = bpf_ntohs(ip->tot_len);
	l4_len = tot - sizeof(*ip);
	sum = (__u16)~fold64((__u64)ip->saddr + ip->daddr + bpf_htons((__u16)l4_len) +
			     bpf_htons((__u16)(l4_len >> 16)) + bpf_htons(ip->protocol));
	if (fast_put6(ctx, nh, row, cfg, ip->tos, hash, tot,
		      bpf_htons((5 << 8) | GUE_PROTO_IPV4), sum))
		return XDP_DROP;
	return fast_send(bind, ETH_HLEN_ + tot, nh->ifindex, ctx->ingress_ifindex);
}

/* The common case, straight through: an untagged IPv4 frame without IP options, padding or
 * fragmentation, TCP or UDP, to a single-port bind among the first FAST_RANGES of its (VIP,
 * protocol) slot in the bind index, hashed on all four fields from a started state, with a
 * 2^16-row table of two backends per row (IPv4, or IPv6: fast_v4_in_v6) and the primary's
 * next hop cached on this CPU and fitting. And IPv4 host traffic of that shape, which the bind index slot settles (as
 * find_vip() would: no bind, no overflow). An IPv6 frame returns FAST_V6,
 * anything else FAST_FALLBACK, having changed nothing (not the frame, not a counter), and the
 * general path decides as if the fast path did not exist: every packet the fast path
 * takes gets the verdict, bytes and counts the general path gives it (tested against it:
 * director/tests/fast_path.rs).
 *
 * Why a second path: by one syscall per packet (docs/development/benchmarking.md) a run costs about what its
 * instructions cost, and the general path, written for every case, carries its state through
 * the stack and branches on cases the common one never has (docs/development/
 * director-datapath.md, "The fast path"). */
static __always_inline int fast_v4(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + ETH_HLEN_;
	__be16 *ports = (void *)(ip + 1);
	const struct director_hash_state *hs;
	const union director_slot *hslot;
	const struct director_row *row;
	const struct director_config *cfg;
	const struct director_nexthop *nh;
	__u32 dst, hsi, key, tot;
	long r;
	__u32 frame_len, ingress;
	__u64 d0, hash;
	__u16 dport;
	__u8 proto;
	void *fixed;

	/* 8 bytes of L4, as the general path asks of a bound packet */
	if ((void *)(ports + 4) > data_end)
		return FAST_FALLBACK;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6_))
		return FAST_V6; /* fast_v6's case, maybe */
	if (eth->h_proto != bpf_htons(ETH_P_IP_) || *(__u8 *)ip != 0x45 ||
	    (ip->frag_off & bpf_htons(IP_MF_ | IP_OFFSET_)))
		return FAST_FALLBACK;
	proto = ip->protocol;
	if (proto != IPPROTO_TCP_ && proto != IPPROTO_UDP_)
		return FAST_FALLBACK;
	frame_len = frame_bytes(data, data_end);
	tot = bpf_ntohs(ip->tot_len);
	if (ETH_HLEN_ + tot != frame_len)
		return FAST_FALLBACK;
	dst = ip->daddr;
	dport = ports[1];

	/* The bind: the slot of (::ffff:dst, proto) in the bind index. Another pair's slot that
	 * did not overflow, or an empty one, means no bind at all: host traffic, which leaves here
	 * with the verdict and count classify_l4 gives it (the VIP filter would only have
	 * answered sooner). */
	r = fast_bind(bpf_htonl(0xffff) ^ dst, 0, ((__u64)dst << 32) | bpf_htonl(0xffff), proto,
		      dport);
	if (r == FAST_NOT_VIP) {
		count(&stats_reason, DIRECTOR_PASS_NOT_VIP, frame_len);
		return XDP_PASS;
	}
	if (r < 0)
		return FAST_FALLBACK;
	key = r & 0xffff;

	/* The hash from the destination's started state (abi.h), all four fields. */
	hsi = ((dst ^ ((__u32)dport * 0x10001u)) * 0x9e3779b1u) >> 18;
	hs = bpf_map_lookup_elem(&director_hash_states, &hsi);
	if (!hs || hs->family != 4 || hs->fields != XDPLB_HASH_ALL)
		return FAST_FALLBACK;
	d0 = sip_join32(dst, sip_join16(dport, 0));
	if ((hs->hash_k0 ^ hs->hash_k1 ^ XDPLB_HASH_ALL ^ (4ULL << 8) ^ sip_le64(d0) ^ hs->v[0] ^
	     hs->v[1] ^ hs->v[2] ^ hs->v[3]) != hs->check)
		return FAST_FALLBACK;
	hash = sip_finish(hs->v[0], hs->v[1], hs->v[2], hs->v[3],
			  ((__u64)14 << 56) | sip_le64(sip_join32(ip->saddr, sip_join16(ports[0], 0))));

	/* The table: one version, made with the state's key. */
	fixed = bpf_map_lookup_elem(&director_tables_fixed, &key);
	if (!fixed)
		return FAST_FALLBACK;
	hslot = bpf_map_lookup_elem(fixed, &fast_zero);
	asm volatile("" : "+r"(hslot)); /* as in forward(): the two lookups stay apart */
	if (!hslot || hslot->hdr.width != 2 || hslot->hdr.hash_k0 != hs->hash_k0 ||
	    hslot->hdr.hash_k1 != hs->hash_k1 || hslot->hdr.fields != XDPLB_HASH_ALL ||
	    (hslot->hdr.gue_flags && proto == IPPROTO_UDP_)) /* UDP second chance: 3 hops */
		return FAST_FALLBACK;
	cfg = bpf_map_lookup_elem(&director_config, &fast_zero);
	if (!cfg || !cfg->nexthop_ttl_ms)
		return FAST_FALLBACK;
	if (hslot->hdr.family != 4)
		return fast_v4_in_v6(ctx, fixed, &hslot->hdr, cfg, hash, r >> 16, tot);
	if (!cfg->src4)
		return FAST_FALLBACK;
	ingress = ctx->ingress_ifindex;
	row = fast_row(ingress, fixed, &hslot->hdr, cfg, hash, tot + 40, &nh);
	if (!row)
		return FAST_FALLBACK;
	/* Encapsulate as encap() does for an IPv4 outer header and one alternate: outer IPv4 20,
	 * UDP 8, GUE 4, hop list word 4, the alternate 4. */
	return fast_encap4(ctx, row, nh, cfg, hash, r >> 16, 0);
}

/* The same for IPv6: no extension headers; IPv4 backends (outer IPv4, as fast_v4 writes it)
 * or IPv6 backends (outer IPv6 with its UDP checksum). Returns FAST_FALLBACK, with the frame
 * as it came, when the packet is not its case. */
static __always_inline int fast_v6(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6 = data + ETH_HLEN_;
	__be16 *ports = (void *)(ip6 + 1);
	const struct director_hash_state *hs;
	const union director_slot *hslot;
	const struct director_row *row;
	const struct director_config *cfg;
	const struct director_nexthop *nh;
	__u32 x, hsi, key, plen, frame_len, ingress;
	long r;
	__u64 d0, d1, hash;
	__u32 h0;
	__u16 w3;
	__u16 dport;
	__u8 proto;
	void *fixed;

	/* 8 bytes of L4, as the general path asks of a bound packet */
	if ((void *)(ports + 4) > data_end)
		return FAST_FALLBACK;
	if ((*(__u8 *)ip6 >> 4) != 6) /* the EtherType is IPv6: fast_v4 has looked */
		return FAST_FALLBACK;
	proto = ip6->nexthdr;
	if (proto != IPPROTO_TCP_ && proto != IPPROTO_UDP_)
		return FAST_FALLBACK;
	frame_len = frame_bytes(data, data_end);
	plen = bpf_ntohs(ip6->payload_len);
	if (ETH_HLEN_ + sizeof(*ip6) + plen != frame_len)
		return FAST_FALLBACK;
	d0 = *(const __u64 *)&ip6->daddr;
	d1 = *(const __u64 *)((void *)&ip6->daddr + 8);
	x = (__u32)d0 ^ (__u32)(d0 >> 32) ^ (__u32)d1 ^ (__u32)(d1 >> 32);
	dport = ports[1];

	r = fast_bind(x, d0, d1, proto, dport);
	if (r == FAST_NOT_VIP) {
		count(&stats_reason, DIRECTOR_PASS_NOT_VIP, frame_len);
		return XDP_PASS;
	}
	if (r < 0)
		return FAST_FALLBACK;
	key = r & 0xffff;

	hsi = (x * 0x9e3779b1u) >> 18;
	hs = bpf_map_lookup_elem(&director_hash_states, &hsi);
	if (!hs || hs->family != 6 || hs->fields != XDPLB_HASH_ALL)
		return FAST_FALLBACK;
	if ((hs->hash_k0 ^ hs->hash_k1 ^ XDPLB_HASH_ALL ^ (6ULL << 8) ^ sip_le64(d0) ^
	     sip_le64(d1) ^ hs->v[0] ^ hs->v[1] ^ hs->v[2] ^ hs->v[3]) != hs->check)
		return FAST_FALLBACK;
	{
		struct sip_state st = { { hs->v[0], hs->v[1], hs->v[2], hs->v[3] } };

		hash = siphash13_v6_from(st, *(const __u64 *)&ip6->saddr,
					 *(const __u64 *)((void *)&ip6->saddr + 8),
					 sip_join16(ports[0], dport));
		/* Here, not after the table lookups, where clang would sink it: the state's four
		 * words are then used up in registers instead of kept on the stack across the
		 * lookups (one syscall 51 -> 49 ns, restored 43.5 -> 41; IPv4 gains nothing). */
		asm volatile("" : "+r"(hash));
	}

	fixed = bpf_map_lookup_elem(&director_tables_fixed, &key);
	if (!fixed)
		return FAST_FALLBACK;
	hslot = bpf_map_lookup_elem(fixed, &fast_zero);
	asm volatile("" : "+r"(hslot));
	if (!hslot || hslot->hdr.width != 2 || hslot->hdr.hash_k0 != hs->hash_k0 ||
	    hslot->hdr.hash_k1 != hs->hash_k1 || hslot->hdr.fields != XDPLB_HASH_ALL ||
	    (hslot->hdr.gue_flags && proto == IPPROTO_UDP_)) /* UDP second chance: 3 hops */
		return FAST_FALLBACK;
	cfg = bpf_map_lookup_elem(&director_config, &fast_zero);
	if (!cfg || !cfg->nexthop_ttl_ms)
		return FAST_FALLBACK;
	if (hslot->hdr.family == 4) {
		/* IPv4 backends (GLB's only kind, the common dual-stack setup): as fast_v4 does,
		 * the row first, then the frame grown by 40 and IPv4 / UDP / GUE written. */
		if (!cfg->src4)
			return FAST_FALLBACK;
		row = fast_row(ctx->ingress_ifindex, fixed, &hslot->hdr, cfg, hash,
			       sizeof(*ip6) + plen + 40, &nh);
		if (!row)
			return FAST_FALLBACK;
		return fast_encap4(ctx, row, nh, cfg, hash, r >> 16, 1);
	}
	if (hslot->hdr.family != 6 ||
	    !(*(const __u64 *)cfg->src6 | *(const __u64 *)(cfg->src6 + 8)))
		return FAST_FALLBACK;
	/* Grow the frame now, as forward() does: the helper call runs while the hash is still
	 * being computed (2 ns by one syscall). What the encapsulation needs of the old header is
	 * read first; a miss from here on shrinks the frame back before falling back. */
	h0 = ((const __u32 *)ip6)[0];
	w3 = ((const __u16 *)ip6)[3];
	if (bpf_xdp_adjust_head(ctx, -72))
		return FAST_FALLBACK;
	ingress = ctx->ingress_ifindex;
	row = fast_row(ingress, fixed, &hslot->hdr, cfg, hash, sizeof(*ip6) + plen + 72, &nh);
	if (!row)
		goto undo;

	/* Encapsulate as encap() does for an IPv6 outer header and one alternate: outer IPv6 40,
	 * UDP 8, GUE 4, hop list word 4, the alternate 16. The inner packet's sum as inner_sum()
	 * takes it: its valid L4 checksum stands in for the payload, so the L4 segment sums to
	 * the complement of its pseudo header, whose addresses and length are the IPv6 header's
	 * own and cancel. Left: the first word, the next header and hop limit word (w3), and the
	 * complement of the pseudo header's next header word (0, nexthdr). */
	{
		__u32 tos = (bpf_ntohl(h0) >> 20) & 0xff;
		__u32 egress = nh->ifindex;
		__u16 bind = r >> 16;
		__u64 sum;

		sum = (__u64)h0 + w3 + (__u16)~bpf_htons(proto);
		if (fast_put6(ctx, nh, row, cfg, tos, hash, sizeof(*ip6) + plen,
			      bpf_htons((5 << 8) | GUE_PROTO_IPV6), sum))
			return XDP_DROP;
		return fast_send(bind, frame_len, egress, ingress);
	}
undo:
	/* Back to the frame as received (it only grew): the general path sees it unchanged. */
	bpf_xdp_adjust_head(ctx, 72);
	return FAST_FALLBACK;
}

#endif
