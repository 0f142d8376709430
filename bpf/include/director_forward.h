/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The general path's forwarding of a bound packet: hash, table row, next hop (bpf_fib_lookup,
 * its answer cached per backend and CPU), encapsulation, and the verdict. */
#ifndef XDPLB_DIRECTOR_FORWARD_H
#define XDPLB_DIRECTOR_FORWARD_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi.h"
#include "consts.h"
#include "gue.h"
#include "parse.h"
#include "director_maps.h"
#include "director_pkt.h"
#include "director_csum.h"
#include "director_encap.h"
#include "director_icmp.h"
#include "director_hash.h"
#include "nexthop.h" /* nexthop_fill() */
#include "director_colocated.h"

/* The route MTU toward a backend, for a packet bpf_fib_lookup found too big on a kernel that
 * did not say the MTU: before 5.12 its mtu_result is only the tot_len it was asked about.
 * Bisects with further lookups of the same route, each asking whether a length fits: at most
 * 16 for any length. Only a too-big answer on such a kernel pays them. `dst_lo`/`dst_hi` are
 * the row's hop address (IPv4 in the first 4 bytes); `ports` the GUE source port and
 * destination port (network order, source in bits 0-15) and the lookup's mtu_result (bits
 * 32-47), returned at once where it is the MTU; `meta` the ingress in the high 32 bits, bit 16
 * for an IPv6 outer header, the length found too big in the low 16.
 * A global function: the verifier checks it once, not once per path of the caller (it takes
 * scalars, the only arguments besides the context that 5.10 allows such a function). */
__attribute__((noinline)) int xdplb_route_mtu(struct xdp_md *ctx, __u64 dst_lo, __u64 dst_hi,
					      __u64 ports, __u64 meta)
{
	struct bpf_fib_lookup fib;
	const struct director_config *cfg;
	__u32 zero = 0, lo = 0, hi = meta & 0xffff, i;
	int v6 = (meta >> 16) & 1;

	/* 5.12+: the kernel said (mtu_result, below the length asked about) */
	if (((ports >> 32) & 0xffff) < hi)
		return (int)((ports >> 32) & 0xffff);
	cfg = bpf_map_lookup_elem(&director_config, &zero);
	if (!cfg)
		return 0;
	for (i = 0; i < 16 && hi - lo > 1; i++) {
		__u32 mid = lo + (hi - lo) / 2;

		/* afresh each time: a lookup writes back egress, metric and gateway */
		__builtin_memset(&fib, 0, sizeof(fib));
		fib.family = v6 ? AF_INET6_ : AF_INET_;
		fib.l4_protocol = IPPROTO_UDP_;
		fib.sport = (__u16)ports;
		fib.dport = (__u16)(ports >> 16);
		fib.tot_len = (__u16)mid;
		fib.ifindex = (__u32)(meta >> 32);
		if (v6)
			__builtin_memcpy(fib.ipv6_src, cfg->src6, 16);
		else
			fib.ipv4_src = cfg->src4;
		__builtin_memcpy(fib.ipv6_dst, &dst_lo, 8);
		__builtin_memcpy(&fib.ipv6_dst[2], &dst_hi, 8);
		if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) == BPF_FIB_LKUP_RET_FRAG_NEEDED)
			hi = mid;
		else
			lo = mid;
	}
	return (int)lo;
}

static __always_inline int forward(struct xdp_md *ctx, struct pkt *p)
{
	struct bpf_fib_lookup fib; /* zeroed on the path that calls bpf_fib_lookup */
	struct encap_args a = {};
	const union director_slot *slot;
	const struct director_table_hdr *hdr;
	const struct director_row *row;
	const struct director_config *cfg;
	void *fixed, *table = NULL, *data, *data_end;
	const struct director_hash_state *hs;
	struct director_nexthop *nh = NULL;
	__u32 key = p->service, zero = 0, idx, ingress = ctx->ingress_ifindex, overhead, tot_len;
	__u32 hsi = hash_state_index(p);
	__u32 egress = 0, cur_len;
	__u64 frame_len = p->frame_len, now = 0, k0 = 0, k1 = 0;
	__u8 fields = 0;
	__u32 in_fixed = 0;
	int rc, outer_v6;

	/* Hash first, from the state found by the destination alone: the CPU runs it while the
	 * table is looked up. */
	hs = bpf_map_lookup_elem(&director_hash_states, &hsi);
	if (hs) {
		k0 = hs->hash_k0;
		k1 = hs->hash_k1;
		fields = hs->fields;
	}
	a.hash = flow_hash(p, k0, k1, fields, hs);

	/* Each kind of table has its own call sites: the verifier inlines per call site, and a
	 * call site that can see both kinds of map is not even a direct call. */
	fixed = bpf_map_lookup_elem(&director_tables_fixed, &key);
	if (fixed) {
		in_fixed = 1;
		/* verifier: a flag the compiler cannot turn back into a test of the map pointer (see
		 * the second lookup below) */
		asm volatile("" : "+r"(in_fixed));
		slot = bpf_map_lookup_elem(fixed, &zero);
		/* an empty statement the compiler cannot merge: the two lookups stay apart */
		asm volatile("" : "+r"(slot));
	} else {
		table = bpf_map_lookup_elem(&director_tables, &key);
		if (!table)
			return verdict(p, DIRECTOR_DROP_NO_BACKEND, XDP_DROP);
		slot = bpf_map_lookup_elem(table, &zero);
	}
	if (!slot)
		return verdict(p, DIRECTOR_DROP_NO_BACKEND, XDP_DROP);
	hdr = &slot->hdr;
	if (hdr->width == 0 || hdr->width > GUE_MAX_HOPS)
		return verdict(p, DIRECTOR_DROP_NO_BACKEND, XDP_DROP);

	/* The table version decides which key counts: hash again, from the start, if the state
	 * was not made with its key. */
	if (hdr->hash_k0 != k0 || hdr->hash_k1 != k1 || hdr->fields != fields)
		a.hash = flow_hash(p, hdr->hash_k0, hdr->hash_k1, hdr->fields, NULL);
	idx = 1 + ((__u32)a.hash & hdr->rows_mask);

	cfg = bpf_map_lookup_elem(&director_config, &zero);
	if (!cfg)
		return verdict(p, DIRECTOR_DROP_NO_SOURCE, XDP_DROP);
	outer_v6 = hdr->family == 6;
	if (outer_v6 ? !(*(__u64 *)cfg->src6 | *(__u64 *)(cfg->src6 + 8)) : !cfg->src4)
		return verdict(p, DIRECTOR_DROP_NO_SOURCE, XDP_DROP);
	a.cfg = cfg;
	/* UDP second chance: the row's alternates, then the primary again (gue.h). */
	a.udp_sc = (hdr->gue_flags & DIRECTOR_GUE_UDP_SECOND_CHANCE) && p->ip_proto == IPPROTO_UDP_;
	a.alternates = hdr->width - 1 + a.udp_sc;
	a.outer_v6 = outer_v6;
	a.outer_df = p->df;
	overhead = encap_overhead(outer_v6, a.alternates);

	/* Drop Ethernet padding: the outer lengths must describe the inner packet exactly. */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	cur_len = frame_bytes(data, data_end);
	if (cur_len > p->l3_off + p->ip_len) {
		if (bpf_xdp_adjust_tail(ctx, (int)(p->l3_off + p->ip_len) - (int)cur_len))
			return verdict(p, DIRECTOR_DROP_ENCAP_FAILED, XDP_DROP);
	}
	/* Grow the frame now, before the row is known: the helper call runs while the hash is
	 * still being computed. The inner packet's sum (IPv6 outer) is taken first, at its old
	 * offset. Every path below either encapsulates or, for "too big", shrinks back first. */
	if (outer_v6)
		a.payload_sum = inner_sum(ctx, p);
	a.grown = ETH_HLEN_ + overhead - p->l3_off;
	if (bpf_xdp_adjust_head(ctx, 0 - (int)a.grown))
		return verdict(p, DIRECTOR_DROP_ENCAP_FAILED, XDP_DROP);

	/* verifier: branch on the flag, not on `fixed`. Older verifiers (Debian 12's 6.1 among
	 * them) do not know that an inner map pointer is never NULL: testing `fixed` again, they
	 * walk the other branch too, with this path's NULL `table`, and refuse the program. */
	if (in_fixed) {
		slot = bpf_map_lookup_elem(fixed, &idx);
		asm volatile("" : "+r"(slot)); /* as above */
	} else {
		slot = bpf_map_lookup_elem(table, &idx);
	}
	if (!slot)
		return verdict(p, DIRECTOR_DROP_NO_BACKEND, XDP_DROP);
	row = &slot->row;
	a.row = row;

	/* Co-located mode, primary on this host: no network round trip (director_colocated.h). */
	if (cfg->colocated && colocated_is_self(row, cfg, outer_v6)) {
		rc = colocated_direct(ctx, p, &a);
		if (rc >= 0)
			return rc;
		rc = COLOCATED_SELF_RC; /* a.dmac NULL: the frame keeps its own MACs */
		goto send;
	}

	tot_len = overhead + p->ip_len;
	if (cfg->nexthop_ttl_ms) {
		__u32 nk = row->primary_nh;

		nh = bpf_map_lookup_elem(&director_nexthops, &nk);
		now = bpf_jiffies64(); /* inlined by the verifier: a load, not a call */
		if (nh && nh->expires > now && nh->generation == cfg->generation &&
		    nh->ingress == ingress && tot_len <= nh->mtu &&
		    *(__u64 *)nh->addr == *(__u64 *)row->hops[0] &&
		    *(__u64 *)(nh->addr + 8) == *(__u64 *)(row->hops[0] + 8)) {
			a.dmac = nh->dmac;
			a.smac = nh->smac;
			egress = nh->ifindex;
			rc = BPF_FIB_LKUP_RET_SUCCESS;
			goto send;
		}
	}

	__builtin_memset(&fib, 0, sizeof(fib));
	fib.family = outer_v6 ? AF_INET6_ : AF_INET_;
	fib.l4_protocol = IPPROTO_UDP_;
	fib.sport = bpf_htons(0xc000 | ((a.hash >> 32) & 0x3fff));
	fib.dport = cfg->gue_port;
	fib.tot_len = (__u16)tot_len;
	fib.ifindex = ingress;
	if (outer_v6) {
		__builtin_memcpy(fib.ipv6_src, cfg->src6, 16);
		__builtin_memcpy(fib.ipv6_dst, row->hops[0], 16);
	} else {
		fib.ipv4_src = cfg->src4;
		__builtin_memcpy(&fib.ipv4_dst, row->hops[0], 4);
	}
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		a.dmac = fib.dmac;
		a.smac = fib.smac;
		egress = fib.ifindex;
		if (nh)
			nexthop_fill(nh, row->hops[0], now, cfg->nexthop_ttl_ms, cfg->generation,
				     ingress, &fib);
	}

	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		break;
	case BPF_FIB_LKUP_RET_FRAG_NEEDED:
		if (p->df && !p->icmp_error) {
			/* one call whatever the kernel: no second path for the verifier to walk */
			__u32 mtu = (__u32)xdplb_route_mtu(
				ctx, *(__u64 *)row->hops[0], *(__u64 *)(row->hops[0] + 8),
				fib.sport | ((__u64)fib.dport << 16) | ((__u64)fib.mtu_result << 32),
				((__u64)ingress << 32) | ((__u64)outer_v6 << 16) | (__u16)tot_len);

			mtu = mtu > overhead ? mtu - overhead : 0;

			/* back to the frame as received: the answer quotes it */
			if (bpf_xdp_adjust_head(ctx, (int)a.grown) || reply_too_big(ctx, p, mtu))
				return verdict(p, DIRECTOR_DROP_ENCAP_FAILED, XDP_DROP);
			return verdict(p, DIRECTOR_TX_TOO_BIG, XDP_TX);
		}
		/* No DF (or an ICMP error, which never gets an ICMP answer): the kernel fragments
		 * the outer packet, which carries no DF either. */
		a.outer_df = 0;
		break;
	case BPF_FIB_LKUP_RET_FWD_DISABLED:
		return verdict(p, DIRECTOR_DROP_FWD_DISABLED, XDP_DROP);
	default:
		return verdict(p, DIRECTOR_DROP_NO_ROUTE, XDP_DROP);
	}

send:
	if (encap(ctx, p, &a))
		return verdict(p, DIRECTOR_DROP_ENCAP_FAILED, XDP_DROP);

	count(&stats_bind, p->bind, frame_len);
	if (rc == COLOCATED_SELF_RC)
		return verdict(p, DIRECTOR_PASS_COLOCATED_SELF, XDP_PASS);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		/* The frame keeps its own MACs (ours as destination): the kernel routes the GUE
		 * packet, resolves the neighbour and sends it (needs the interface's forwarding and
		 * accept_local, which the daemon sets). */
		return verdict(p, DIRECTOR_PASS_NO_NEIGH, XDP_PASS);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return verdict(p, DIRECTOR_PASS_TOO_BIG_FRAGMENT, XDP_PASS);
	if (egress == ingress)
		return XDP_TX;
	rc = bpf_redirect(egress, 0);
	if (rc != XDP_REDIRECT)
		return verdict(p, DIRECTOR_DROP_REDIRECT_FAILED, XDP_DROP);
	return rc;
}

#endif
