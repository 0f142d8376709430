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
 * The entry function is last and reads as the flow. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "abi.h"
#include "gue.h"
#include "csum.h"
#include "parse.h"
#include "siphash.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* ---- maps (all pinned by the daemon under <bpffs_dir>/director) ---- */

/* Service slot -> that service's current table (entry 0 header, 1 + r row r). A reload builds
 * a new inner map and swaps the slot: a packet sees the whole old or the whole new version.
 * Tables of up to DIRECTOR_FIXED_ROWS rows are in director_tables_fixed (one size: the
 * lookups are inlined), larger ones here: BPF_F_INNER_MAP lets versions of different sizes
 * share the slot type. BPF_F_MMAPABLE lets the daemon fill a new version with one memory copy
 * instead of a syscall per row. */
struct director_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP | BPF_F_MMAPABLE);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, union director_slot);
};

/* Never read by the program: its definition gives BTF the full slot type (clang emits only a
 * forward declaration for types reached solely through the map-in-map definition), so
 * libbpf can create the inner-map template and libbpf-cargo can generate the Rust type. */
struct director_table director_table_template SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, DIRECTOR_MAX_SERVICES);
	__type(key, __u32);
	__array(values, struct director_table);
} director_tables SEC(".maps");

/* Flow hashes already started per VIP (abi.h): a packet hashes only its source part, and
 * need not wait for the bind match and the table lookup to start. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DIRECTOR_HASH_STATES);
	__type(key, __u32);
	__type(value, struct director_hash_state);
} director_hash_states SEC(".maps");

/* Tables of DIRECTOR_FIXED_ROWS rows (abi.h): one size, so lookups in them are inlined. */
struct director_table_fixed {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1 + DIRECTOR_FIXED_ROWS);
	__type(key, __u32);
	__type(value, union director_slot);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, DIRECTOR_MAX_SERVICES);
	__type(key, __u32);
	__array(values, struct director_table_fixed);
} director_tables_fixed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DIRECTOR_MAX_VIPS);
	__type(key, struct director_vip_key);
	__type(value, struct director_vip);
} director_vips SEC(".maps");

/* The bind index (abi.h): the fast path of every TCP/UDP packet to a VIP. No BPF_F_INNER_MAP:
 * every version has the same size, so the verifier inlines the lookup. */
struct director_vip_index_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DIRECTOR_VIP_SLOTS);
	__type(key, __u32);
	__type(value, struct director_vip_slot);
};

/* For BTF, as director_table_template. */
struct director_vip_index_map director_vip_index_template SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct director_vip_index_map);
} director_vip_index SEC(".maps");

/* Which addresses may be VIPs (abi.h): the early exit for host traffic. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct director_vip_filter);
} director_vip_filter SEC(".maps");

/* A map, not rodata, so a restarted daemon can change addresses without reloading. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct director_config);
} director_config SEC(".maps");

/* Next hops per backend and CPU: bpf_fib_lookup costs more than everything else together,
 * so its answer is reused until it expires (nexthop_ttl_ms) or the daemon bumps the
 * generation. Per CPU: no locking, and no CPU ever reads a half-written MAC. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DIRECTOR_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct director_nexthop);
} director_nexthops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DIRECTOR_COUNTERS_MAX);
	__type(key, __u32);
	__type(value, struct director_counter);
} stats_reason SEC(".maps");

/* Never written here: what the removed binds of each service counted, kept by the daemon. A
 * service's count is that plus its binds' (one counter per packet instead of two). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DIRECTOR_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct director_counter);
} stats_service_retired SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DIRECTOR_MAX_BINDS);
	__type(key, __u32);
	__type(value, struct director_counter);
} stats_bind SEC(".maps");

/* The kernel's tick rate, for the next-hop expiry in jiffies (libbpf reads it from the kernel
 * config). Unknown (0): assume 100, the lowest Linux has, so a next hop is never kept longer
 * than asked. */
extern const unsigned int CONFIG_HZ __kconfig __weak;

/* A TTL in ms as jiffies, rounded up so a short TTL still caches for one tick. */
static __always_inline __u64 ttl_jiffies(__u32 ms)
{
	__u64 hz = CONFIG_HZ ? CONFIG_HZ : 100;

	return ((__u64)ms * hz + 999) / 1000;
}

/* ---- per-packet state ---- */

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

/* ---- bind match ---- */

static __always_inline const struct director_vip *lookup_vip(const __u8 *vip16, __u8 proto)
{
	struct director_vip_key key = {};

	__builtin_memcpy(key.addr, vip16, 16);
	key.proto = proto;
	return bpf_map_lookup_elem(&director_vips, &key);
}

/* The binds of a (VIP, TCP/UDP): the index slot, or the hash map when the slot overflowed (or
 * no index is installed yet). vip16 must be 8-byte aligned. */
static __always_inline const struct director_vip *find_vip(struct pkt *p, const __u8 *vip16,
							   __u8 proto)
{
	const __u32 *w = (const __u32 *)vip16;
	const __u64 *a = (const __u64 *)vip16;
	const struct director_vip_slot *s;
	__u32 zero = 0, slot;
	void *index;

	slot = (((w[0] ^ w[1] ^ w[2] ^ w[3]) + proto) * 0x9e3779b1u) >> 20;
	index = bpf_map_lookup_elem(&director_vip_index, &zero);
	if (!index)
		return lookup_vip(vip16, proto);
	s = bpf_map_lookup_elem(index, &slot);
	if (!s)
		return NULL;
	if (s->proto == proto && *(const __u64 *)s->addr == a[0] &&
	    *(const __u64 *)(s->addr + 8) == a[1])
		return &s->vip;
	if (s->overflow)
		return lookup_vip(vip16, proto);
	return NULL;
}

/* Find the bind covering port among a (VIP, protocol)'s ranges: 0 and p->service/bind set on
 * a match, 1 if none covers it. */
static __always_inline int match_port(struct pkt *p, const struct director_vip *v, __u16 port)
{
#pragma unroll
	for (int i = 0; i < DIRECTOR_VIP_RANGES; i++) {
		if (i >= v->count)
			break;
		if (port >= v->ranges[i].first && port <= v->ranges[i].last) {
			p->service = v->ranges[i].service;
			p->bind = v->ranges[i].bind;
			return 0;
		}
	}
	return 1;
}

/* 0: this address is certainly no VIP (its bit in director_vip_filter is clear); 1: maybe. */
static __always_inline int maybe_vip(const __u8 *vip16)
{
	const struct director_vip_filter *f;
	const __u32 *w = (const __u32 *)vip16;
	__u32 zero = 0, bit;

	f = bpf_map_lookup_elem(&director_vip_filter, &zero);
	if (!f || !f->enabled)
		return 1;
	bit = ((w[0] ^ w[1] ^ w[2] ^ w[3]) * 0x9e3779b1u) >> 20;
	return (f->bits[bit >> 6] >> (bit & 63)) & 1;
}

/* Is this address a VIP at all? For the paths that have no port to match. */
static __always_inline int is_vip(const __u8 *vip16)
{
	return lookup_vip(vip16, 0) != NULL;
}

/* ---- checksums ---- */

static __always_inline __u16 fold64(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	return csum_fold((__u32)s);
}

/* The unfolded ones' complement sum of bytes (even) bytes at p. Summed as 32-bit words: half
 * the loads of 16-bit words, and folding gives the same 16-bit sum. Packet data only (x86
 * allows unaligned packet loads; stack loads must be aligned). */
static __always_inline __u64 sum16(const void *p, int bytes)
{
	const __u32 *w = p;
	__u64 s = 0;

#pragma unroll
	for (int i = 0; i < bytes / 4; i++)
		s += w[i];
	if (bytes & 2)
		s += *(const __u16 *)(p + bytes - 2);
	return s;
}

/* The ones' complement sum of the pseudo header of an L4 segment (RFC 768 / RFC 8200). */
static __always_inline __u64 pseudo_sum(int v6, const void *src, const void *dst, __u32 l4_len,
					__u8 proto)
{
	__u64 s = sum16(src, v6 ? 16 : 4) + sum16(dst, v6 ? 16 : 4);

	return s + bpf_htons((__u16)l4_len) + bpf_htons((__u16)(l4_len >> 16)) + bpf_htons(proto);
}

#define CSUM_CHUNK 256
#define CSUM_MAX_CHUNKS 36 /* 9216 bytes: jumbo frames */

/* Slow path: the folded ones' complement sum of [off, off + len) of the frame. Only for inner
 * packets whose own checksum does not cover them (UDP checksum 0, first fragments).
 * A global function: the verifier checks it once, not once per path of the caller. */
__attribute__((noinline)) int xdplb_sum_frame(struct xdp_md *ctx, __u32 off, __u32 len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 s = 0;
	__u32 done = 0;

	if (off > 64 || len > CSUM_CHUNK * CSUM_MAX_CHUNKS)
		return 0;
	for (int i = 0; i < CSUM_MAX_CHUNKS; i++) {
		/* verifier: the mask bounds the offset (len and off are checked above) */
		void *ptr = data + ((off + done) & 0x3fff);

		/* verifier: keep the checked pointer and the one passed in the same register */
		asm volatile("" : "+r"(ptr));
		if (done + CSUM_CHUNK > len)
			break;
		if (ptr + CSUM_CHUNK > data_end)
			return 0;
		s += (__u32)bpf_csum_diff(NULL, 0, ptr, CSUM_CHUNK, 0);
		done += CSUM_CHUNK;
	}
	/* The rest (< 256 bytes) in power-of-two pieces: bpf_csum_diff wants multiples of 4. */
#pragma unroll
	for (int size = 128; size >= 4; size /= 2) {
		void *ptr = data + ((off + done) & 0x3fff);

		asm volatile("" : "+r"(ptr)); /* verifier: as above */
		if (done + size <= len) {
			if (ptr + size > data_end)
				return 0;
			s += (__u32)bpf_csum_diff(NULL, 0, ptr, size, 0);
			done += size;
		}
	}
	{
		__u8 *b = data + ((off + done) & 0x3fff);
		__u32 rest = len - done; /* 0..3 bytes */

		if (rest >= 2) {
			if ((void *)(b + 2) > data_end)
				return 0;
			s += *(__u16 *)b;
			b += 2;
			rest -= 2;
		}
		if (rest == 1) {
			/* odd length: the last byte is the first half of a zero-padded word */
			__u16 last = 0;

			if ((void *)(b + 1) > data_end)
				return 0;
			*(__u8 *)&last = *b;
			s += last;
		}
	}
	return fold64(s);
}

/* The ones' complement sum of the whole inner packet, needed for the UDP checksum of an IPv6
 * outer header. Fast path: a valid IPv4 header sums to zero and a valid L4 checksum makes the
 * L4 segment sum to the complement of its pseudo header, so only fixed-size fields are read. */
static __always_inline __u64 inner_sum(struct xdp_md *ctx, struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 l4_len = p->ip_len - (p->l4_off - p->l3_off);
	__u64 s = 0;

	if (p->slow_csum)
		return (__u16)xdplb_sum_frame(ctx, p->l3_off, p->ip_len);
	if (p->is_v6) {
		struct ipv6hdr *ip6 = data + (p->l3_off & 0xff);

		if ((void *)(ip6 + 1) > data_end) /* verifier: checked while parsing */
			return 0;
		/* header + L4 = header - pseudo header: the addresses cancel, leaving the first
		 * 8 header bytes minus the pseudo header's length and protocol. */
		s = sum16(ip6, 8);
		return s + (__u16)~fold64(bpf_htons((__u16)l4_len) +
					  bpf_htons((__u16)(l4_len >> 16)) +
					  bpf_htons(p->ip_proto));
	}
	if (p->ip_proto == IPPROTO_ICMP_)
		return 0; /* ICMPv4 has no pseudo header: a valid message sums to zero */
	{
		struct iphdr *ip = data + (p->l3_off & 0xff);

		if ((void *)(ip + 1) > data_end) /* verifier: checked while parsing */
			return 0;
		return (__u16)~fold64(pseudo_sum(0, &ip->saddr, &ip->daddr, l4_len, p->ip_proto));
	}
}

/* ---- encapsulation ---- */

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
	__u32 alternates;
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
	__be16 type_w = bpf_htons(a->outer_v6 ? GUE_HOPS_IPV6 : GUE_HOPS_IPV4);
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
		for (int i = 1; i < GUE_MAX_HOPS; i++) {
			const __u32 *h = (const __u32 *)a->row->hops[i];

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
		for (int i = 1; i < GUE_MAX_HOPS; i++) {
			__u32 *o = w + (i - 1);

			if (i > alternates)
				break;
			if ((void *)(o + 1) > data_end)
				return -1;
			*o = *(const __u32 *)a->row->hops[i];
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

/* ---- too big: answer the client so its PMTU discovery works ---- */

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

/* ---- forwarding ---- */

/* The director_hash_states entry of the packet's destination (abi.h). */
static __always_inline __u32 hash_state_index(const struct pkt *p)
{
	__u32 x;

	if (p->is_v6)
		x = (__u32)p->flow.w[2] ^ (__u32)(p->flow.w[2] >> 32) ^ (__u32)p->flow.w[3] ^
		    (__u32)(p->flow.w[3] >> 32);
	else
		x = p->flow.dst4 ^ ((__u32)p->flow.dport * 0x10001u);
	return (x * 0x9e3779b1u) >> 18;
}

/* Load hs's state into st if it was made for this key, fields, family and destination
 * (abi.h: `check`); `check` comes in as the xor of the key, the fields and the packet's
 * destination words. */
static __always_inline int started(const struct director_hash_state *hs, __u8 family, __u64 check,
				   struct sip_state *st)
{
	if (!hs || hs->family != family)
		return 0;
	check ^= ((__u64)family << 8) ^ hs->v[0] ^ hs->v[1] ^ hs->v[2] ^ hs->v[3];
	if (check != hs->check)
		return 0;
	st->v[0] = hs->v[0];
	st->v[1] = hs->v[1];
	st->v[2] = hs->v[2];
	st->v[3] = hs->v[3];
	return 1;
}

/* The flow hash with a service's key; unhashed fields are zero, exactly as tablegen's
 * flow_key_bytes. From `hs`'s state when it was made for this key, fields and destination
 * (abi.h), else from the start. */
static __always_inline __u64 flow_hash(const struct pkt *p, __u64 k0, __u64 k1, __u8 fields,
				       const struct director_hash_state *hs)
{
	__u64 src = fields & XDPLB_HASH_SRC_IP ? ~0ULL : 0;
	__u64 dst = fields & XDPLB_HASH_DST_IP ? ~0ULL : 0;
	__u16 sport = fields & XDPLB_HASH_SRC_PORT ? p->flow.sport : 0;
	__u16 dport = fields & XDPLB_HASH_DST_PORT ? p->flow.dport : 0;
	__u64 check = k0 ^ k1 ^ fields;
	struct sip_state st;

	if (p->is_v6) {
		__u64 d0 = p->flow.w[2] & dst, d1 = p->flow.w[3] & dst;
		__u64 s0 = p->flow.w[0] & src, s1 = p->flow.w[1] & src;
		__u32 tail = sip_join16(sport, dport);

		if (started(hs, 6, check ^ sip_le64(d0) ^ sip_le64(d1), &st))
			return siphash13_v6_from(st, s0, s1, tail);
		return siphash13_v6(k0, k1, d0, d1, s0, s1, tail);
	} else {
		__u64 d0 = sip_join32(p->flow.dst4 & dst, sip_join16(dport, 0));
		__u64 s = sip_join32(p->flow.src4 & src, sip_join16(sport, 0));

		if (started(hs, 4, check ^ sip_le64(d0), &st))
			return siphash13_v4_from(st, s);
		return siphash13_v4(k0, k1, d0, s);
	}
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
	a.alternates = hdr->width - 1;
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

	if (fixed) {
		slot = bpf_map_lookup_elem(fixed, &idx);
		asm volatile("" : "+r"(slot)); /* as above */
	} else {
		slot = bpf_map_lookup_elem(table, &idx);
	}
	if (!slot)
		return verdict(p, DIRECTOR_DROP_NO_BACKEND, XDP_DROP);
	row = &slot->row;


	a.row = row;

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
		if (nh) {
			__builtin_memcpy(nh->addr, row->hops[0], 16);
			nh->expires = now + ttl_jiffies(cfg->nexthop_ttl_ms);
			nh->generation = cfg->generation;
			nh->ingress = ingress;
			nh->ifindex = fib.ifindex;
			/* The route MTU on kernels that report it (5.12+), else this frame's length:
			 * a larger frame then takes the full lookup, which decides "too big". */
			nh->mtu = fib.mtu_result;
			__builtin_memcpy(nh->dmac, fib.dmac, 6);
			__builtin_memcpy(nh->smac, fib.smac, 6);
		}
	}

	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		break;
	case BPF_FIB_LKUP_RET_FRAG_NEEDED:
		if (p->df && !p->icmp_error) {
			__u32 mtu = fib.mtu_result > overhead ? fib.mtu_result - overhead : 0;

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

/* ---- classification ---- */

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

/* ---- the fast path ---- */

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
 * time: one less value for the two fast paths to keep in a register. */
static const __u32 fast_zero = 0;

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

/* The common case, straight through: an untagged IPv4 frame without IP options, padding or
 * fragmentation, TCP or UDP, to a single-port bind among the first FAST_RANGES of its (VIP,
 * protocol) slot in the bind index, hashed on all four fields from a started state, with a
 * 2^16-row table of two IPv4 backends per row and the primary's next hop cached on this CPU
 * and fitting. And IPv4 host traffic of that shape, which the bind index slot settles (as
 * find_vip() would: no bind, no overflow). An IPv6 frame returns FAST_V6,
 * anything else FAST_FALLBACK, having changed nothing (not the frame, not a counter), and the
 * general path below decides as if the fast path did not exist: every packet the fast path
 * takes gets the verdict, bytes and counts the general path gives it (tested against it:
 * director/tests/fast_path.rs).
 *
 * Why a second path: by one syscall per packet (design.md §11) a run costs about what its
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
	if (!hslot || hslot->hdr.width != 2 || hslot->hdr.family != 4 ||
	    hslot->hdr.hash_k0 != hs->hash_k0 || hslot->hdr.hash_k1 != hs->hash_k1 ||
	    hslot->hdr.fields != XDPLB_HASH_ALL)
		return FAST_FALLBACK;
	cfg = bpf_map_lookup_elem(&director_config, &fast_zero);
	if (!cfg || !cfg->src4 || !cfg->nexthop_ttl_ms)
		return FAST_FALLBACK;
	ingress = ctx->ingress_ifindex;
	row = fast_row(ingress, fixed, &hslot->hdr, cfg, hash, tot + 40, &nh);
	if (!row)
		return FAST_FALLBACK;

	/* Encapsulate as encap() does for an IPv4 outer header and one alternate: outer IPv4 20,
	 * UDP 8, GUE 4, hop list word 4, the alternate 4. Every value the headers need is read
	 * after the bpf_xdp_adjust_head call, the inner IP header from where it now is: clang
	 * keeps only r6-r9 across a call, so values read before it go to the stack and come
	 * back (one syscall 43.5 -> 39 ns, docs/development/director-datapath.md). */
	{
		__u64 *w64;
		__u32 w0, w1, w2, src, dst4;

		if (bpf_xdp_adjust_head(ctx, -40))
			return FAST_FALLBACK; /* nothing changed: the general path tries and counts */
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		/* verifier: the frame just grew by 40, in front of the IP header it had */
		if (data + ETH_HLEN_ + 40 + sizeof(*ip) > data_end)
			return XDP_DROP;
		ip = data + ETH_HLEN_ + 40;
		tot = bpf_ntohs(ip->tot_len);
		w0 = bpf_htonl((0x45u << 24) | ((__u32)ip->tos << 16) | (40 + tot));
		w1 = ip->frag_off & bpf_htons(IP_DF_) ? bpf_htonl(IP_DF_) : 0;
		w2 = bpf_htonl((DEFAULT_TTL_ << 24) | (IPPROTO_UDP_ << 16));
		src = cfg->src4;
		dst4 = *(const __u32 *)row->hops[0];
		put_eth(data, nh, bpf_htons(ETH_P_IP_));
		/* 8 bytes a store, built in memory order (sip_join32): each value one store */
		w64 = data + ETH_HLEN_;
		w64[0] = sip_join32(w0, w1);
		w64[1] = sip_join32(sip_join16((__u16)w2, ~fold64((__u64)w0 + w1 + w2 + src + dst4)),
				    src);
		w64[2] = sip_join32(dst4, sip_join16(bpf_htons(0xc000 | ((hash >> 32) & 0x3fff)),
						     cfg->gue_port));
		w64[3] = sip_join32(sip_join16(bpf_htons((__u16)(20 + tot)), 0),
				    sip_join16(bpf_htons((2 << 8) | GUE_PROTO_IPV4), 0));
		w64[4] = sip_join32(sip_join16(bpf_htons(GUE_HOPS_IPV4), bpf_htons(1)),
				    *(const __u32 *)row->hops[1]);
		return fast_send(r >> 16, ETH_HLEN_ + tot, nh->ifindex, ctx->ingress_ifindex);
	}
}

/* The same for IPv6: no extension headers, IPv6 backends, outer IPv6 with its UDP checksum.
 * Returns FAST_FALLBACK, with the frame as it came, when the packet is not its case. */
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
	__u32 h0, h1;
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
	if (!hslot || hslot->hdr.width != 2 || hslot->hdr.family != 6 ||
	    hslot->hdr.hash_k0 != hs->hash_k0 || hslot->hdr.hash_k1 != hs->hash_k1 ||
	    hslot->hdr.fields != XDPLB_HASH_ALL)
		return FAST_FALLBACK;
	cfg = bpf_map_lookup_elem(&director_config, &fast_zero);
	if (!cfg || !(*(const __u64 *)cfg->src6 | *(const __u64 *)(cfg->src6 + 8)) ||
	    !cfg->nexthop_ttl_ms)
		return FAST_FALLBACK;
	/* Grow the frame now, as forward() does: the helper call runs while the hash is still
	 * being computed (2 ns by one syscall). What the encapsulation needs of the old header is
	 * read first; a miss from here on shrinks the frame back before falling back. */
	h0 = ((const __u32 *)ip6)[0];
	h1 = ((const __u32 *)ip6)[1];
	if (bpf_xdp_adjust_head(ctx, -72))
		return FAST_FALLBACK;
	ingress = ctx->ingress_ifindex;
	row = fast_row(ingress, fixed, &hslot->hdr, cfg, hash, sizeof(*ip6) + plen + 72, &nh);
	if (!row)
		goto undo;

	/* Encapsulate as encap() does for an IPv6 outer header and one alternate: outer IPv6 40,
	 * UDP 8, GUE 4, hop list word 4, the alternate 16. The inner packet's sum as inner_sum()
	 * takes it: its valid L4 checksum stands in for the payload. */
	{
		const __u32 *src = (const __u32 *)cfg->src6;
		const __u32 *dst = (const __u32 *)row->hops[0];
		const __u32 *alt = (const __u32 *)row->hops[1];
		__u32 udp_len = 32 + sizeof(*ip6) + plen;
		__u32 tos = (bpf_ntohl(h0) >> 20) & 0xff;
		__u32 egress = nh->ifindex;
		__be16 sport = bpf_htons(0xc000 | ((hash >> 32) & 0x3fff));
		__be16 gue_port = cfg->gue_port, ulen = bpf_htons((__u16)udp_len);
		__be16 gue_w = bpf_htons((5 << 8) | GUE_PROTO_IPV6);
		__u16 bind = r >> 16;
		__u64 sum, *w64;
		__u32 *w;

		sum = (__u64)h0 + h1;
		sum += (__u16)~fold64(bpf_htons((__u16)plen) + bpf_htons((__u16)(plen >> 16)) +
				      bpf_htons(proto));
		sum += (__u64)src[0] + src[1] + src[2] + src[3] + dst[0] + dst[1] + dst[2] + dst[3] +
		       alt[0] + alt[1] + alt[2] + alt[3] + ulen + bpf_htons(IPPROTO_UDP_) + sport +
		       gue_port + ulen + gue_w + bpf_htons(GUE_HOPS_IPV6) + bpf_htons(1);
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		if (data + ETH_HLEN_ + 72 > data_end) /* verifier: the frame just grew by 72 */
			return XDP_DROP;
		put_eth(data, nh, bpf_htons(ETH_P_IPV6_));
		w = data + ETH_HLEN_;
		put_ip6_outer(w, tos, (__u32)hash, udp_len, src, dst);
		w64 = (void *)(w + 10);
		w64[0] = sip_join32(sip_join16(sport, gue_port),
				    sip_join16(ulen, csum_udp_mangle0(~fold64(sum))));
		w64[1] = sip_join32(sip_join16(gue_w, 0),
				    sip_join16(bpf_htons(GUE_HOPS_IPV6), bpf_htons(1)));
		w64[2] = *(const __u64 *)alt;
		w64[3] = *(const __u64 *)(alt + 2);
		return fast_send(bind, frame_len, egress, ingress);
	}
undo:
	/* Back to the frame as received (it only grew): the general path sees it unchanged. */
	bpf_xdp_adjust_head(ctx, 72);
	return FAST_FALLBACK;
}

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
