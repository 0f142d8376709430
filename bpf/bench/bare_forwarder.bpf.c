/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Bench-only, never shipped: the least an XDP GUE forwarder with a keyed hash does per IPv4 TCP
 * packet, as a yardstick for the director (docs/development/director-datapath.md, "What it
 * costs"). It keeps the director's hash (SipHash-1-3 over the same 14 bytes, from the start: no
 * per-VIP state) and its GUE output for one alternate, and drops everything else the director
 * does: one array lookup for the bind with its key in it, one for the row (a backend index), one
 * for the backend's address and next-hop MACs (as if resolved by someone else, never checked), no
 * table versions, no port ranges, no VLAN, no IP options, no ICMP, no fragments, no MTU, no
 * counters. director/benches/datapath.rs fills its maps and measures it beside the director by
 * both methods. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "gue.h"
#include "siphash.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Layouts the bench writes (director/benches/datapath.rs spells them out). */
struct bare_bind {
	__u64 k0, k1; /* SipHash key */
	__be32 vip;
	__be16 port;
	__u16 pad;
};

struct bare_backend {
	__be32 addr;
	__be32 src; /* outer source */
	__u8 dmac[6];
	__u8 smac[6];
};

/* Slot: the destination address times 0x9e3779b1, top 12 bits. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct bare_bind);
} bare_binds SEC(".maps");

/* 2^16 rows: a backend index each (the primary; the one alternate is the other backend). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} bare_rows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct bare_backend);
} bare_backends SEC(".maps");

static __always_inline __u16 bare_fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (s & 0xffff) + (s >> 16);
}

static __always_inline int bare(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + ETH_HLEN_;
	__be16 *ports = data + ETH_HLEN_ + sizeof(*ip);
	const struct bare_bind *b;
	const struct bare_backend *be, *alt;
	__u32 slot, row, *idx, other, tot, len, w0, w1, w2;
	__u64 hash;
	__u16 *w16;
	__u32 *w;

	if ((void *)(ports + 2) > end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP_) || ip->ihl != 5 || ip->protocol != IPPROTO_TCP_)
		return XDP_PASS;
	slot = (ip->daddr * 0x9e3779b1u) >> 20;
	b = bpf_map_lookup_elem(&bare_binds, &slot);
	if (!b || b->vip != ip->daddr || b->port != ports[1])
		return XDP_PASS;
	hash = siphash13_v4(b->k0, b->k1, sip_join32(ip->daddr, sip_join16(ports[1], 0)),
			    sip_join32(ip->saddr, sip_join16(ports[0], 0)));
	row = hash & 0xffff;
	idx = bpf_map_lookup_elem(&bare_rows, &row);
	if (!idx)
		return XDP_DROP;
	row = *idx & 1;
	other = row ^ 1;
	be = bpf_map_lookup_elem(&bare_backends, &row);
	alt = bpf_map_lookup_elem(&bare_backends, &other);
	if (!be || !alt)
		return XDP_DROP;
	tot = bpf_ntohs(ip->tot_len);
	/* outer IPv4 20, UDP 8, GUE 4, hop list word 4, one alternate 4 */
	if (bpf_xdp_adjust_head(ctx, -40))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + ETH_HLEN_ + 40 > end)
		return XDP_DROP;
	w16 = data;
	w16[0] = ((const __u16 *)be->dmac)[0];
	w16[1] = ((const __u16 *)be->dmac)[1];
	w16[2] = ((const __u16 *)be->dmac)[2];
	w16[3] = ((const __u16 *)be->smac)[0];
	w16[4] = ((const __u16 *)be->smac)[1];
	w16[5] = ((const __u16 *)be->smac)[2];
	w16[6] = bpf_htons(ETH_P_IP_);
	w = data + ETH_HLEN_;
	len = 40 + tot;
	w0 = bpf_htonl((0x45u << 24) | len);
	w1 = bpf_htonl(IP_DF_);
	w2 = bpf_htonl((DEFAULT_TTL_ << 24) | (IPPROTO_UDP_ << 16));
	w[0] = w0;
	w[1] = w1;
	w[2] = w2;
	w[3] = be->src;
	w[4] = be->addr;
	((__u16 *)w)[5] = ~bare_fold((__u64)w0 + w1 + w2 + be->src + be->addr);
	w16 = (void *)(w + 5);
	w16[0] = bpf_htons(0xc000 | ((hash >> 32) & 0x3fff));
	w16[1] = bpf_htons(GUE_DEFAULT_PORT);
	w16[2] = bpf_htons(len - 20);
	w16[3] = 0;
	w16[4] = bpf_htons((2 << 8) | GUE_PROTO_IPV4); /* 2 words of private data */
	w16[5] = 0;
	w16[6] = bpf_htons(GUE_HOPS_IPV4);
	w16[7] = bpf_htons(1); /* next hop 0, one hop */
	*(__u32 *)(w16 + 8) = alt->addr;
	return XDP_TX;
}

SEC("xdp")
int bare_forwarder(struct xdp_md *ctx)
{
	return bare(ctx);
}

#include "restore.h"

SEC("xdp")
int bare_forwarder_bench(struct xdp_md *ctx)
{
	int rc = bare(ctx);

	if (restore(ctx))
		return XDP_ABORTED;
	return rc;
}

SEC("xdp")
int bare_bench_restore(struct xdp_md *ctx)
{
	if (restore(ctx))
		return XDP_ABORTED;
	return XDP_PASS;
}
