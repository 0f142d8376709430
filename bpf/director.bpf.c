/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The director's XDP program: match a bound service, hash the flow, pick the table row, wrap
 * the packet in GUE (bpf/include/gue.h) and send it toward the row's primary backend.
 *
 * Rules (docs/development/director-datapath.md explains each and compares with GLB/Katran):
 * - Anything that is not a bound service leaves byte-for-byte unchanged with XDP_PASS and bumps
 *   one total counter only.
 * - ICMP frag-needed / ICMPv6 packet-too-big quoting a bound flow is hashed on the quoted tuple
 *   reversed, so it reaches the backend that owns the flow. Other ICMP to a VIP passes.
 * - First fragments are forwarded by their ports; later fragments (no ports) pass.
 * - Next hops come from bpf_fib_lookup, its answer reused per backend and CPU for a short
 *   while. An unresolved neighbour: the packet is encapsulated and handed to the kernel
 *   (XDP_PASS), which resolves it and forwards.
 * - Too big after encapsulation: frag-needed / packet-too-big back to the client (PMTU keeps
 *   working); an IPv4 packet without DF is encapsulated without DF and the kernel fragments.
 *
 * One header per concern, in bpf/include/ (the order a packet meets them):
 *   director_maps.h      every map (key and value types: abi.h)
 *   director_pkt.h       the per-packet state and the counters every verdict bumps
 *   director_fast.h      fast_v4 / fast_v6: the common case straight through
 *   director_classify.h  the general path: parse, classify, bind match (director_bind.h)
 *   director_forward.h   hash (director_hash.h), row, next hop, then encapsulate
 *                        (director_encap.h, director_csum.h) or answer too big
 *                        (director_icmp.h)
 *
 * The entry function is last and reads as the flow. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "parse.h"
#include "director_maps.h"     /* every map */
#include "director_pkt.h"      /* per-packet state, counters */
#include "director_fast.h"     /* fast_v4, fast_v6 */
#include "director_classify.h" /* the general path: classify_v4/v6 -> classify_l4 */
#include "director_forward.h"  /* -> forward: hash, row, next hop, encap */

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Never read by the program: they name abi.h's enums so that the object's BTF, and the Rust
 * types libbpf-cargo generates from it, carry them (clang emits an enum only where the object
 * uses it). director_reason_count also tells a reader of the object how many reasons it
 * counts. */
const volatile enum director_reason director_reason_count = DIRECTOR_REASON_COUNT;
const volatile enum director_limit director_limits = DIRECTOR_MAX_SERVICES;
const volatile enum xdplb_hash_field director_hash_fields = XDPLB_HASH_ALL;

/* Every case: parse, classify, forward. */
static __always_inline int director_general(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct pkt p = {};
	__be16 proto;
	int l3;

	p.frame_len = frame_bytes(data, data_end);
	l3 = parse_l2(data, data_end, &proto);
	if (l3 < 0)
		return verdict(&p, DIRECTOR_PASS_UNPARSED, XDP_PASS);
	p.l3_off = l3;
	if (proto == bpf_htons(ETH_P_IP_))
		return classify_v4(ctx, &p, data, data_end);
	if (proto == bpf_htons(ETH_P_IPV6_))
		return classify_v6(ctx, &p, data, data_end);
	/* ARP, LLDP, ...: the host's own traffic */
	return verdict(&p, DIRECTOR_PASS_NOT_VIP, XDP_PASS);
}

/* Tests only (bpf/test/director_paths.bpf.c): which path each packet took. */
#ifdef XDPLB_FAST_PATH_PROBE
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} fast_path_probe SEC(".maps");

static __always_inline void probe_path(__u32 fast)
{
	__u64 *n = bpf_map_lookup_elem(&fast_path_probe, &fast);

	if (n)
		(*n)++;
}
#else
#define probe_path(fast) do { } while (0)
#endif

/* The whole program; bpf/bench/director_bench.bpf.c wraps it in a bench-only entry point. */
static __always_inline int director(struct xdp_md *ctx)
{
	int rc = fast_v4(ctx);

	if (rc == FAST_V6)
		rc = fast_v6(ctx);

	probe_path(rc >= 0);
	if (rc >= 0)
		return rc;
	return director_general(ctx);
}

SEC("xdp")
int xdplb_director(struct xdp_md *ctx)
{
	return director(ctx);
}
