// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* xdplb redirector: TC clsact ingress on a backend (docs/development/second-chance.md).
 *
 * For UDP to the GUE port from an allowed source (directors, other backends) it decides, for
 * the inner packet:
 *   local -> strip outer IP/UDP/GUE and hand the inner packet to the stack (TC_ACT_OK);
 *   next hop -> rewrite the outer header toward the next hop in the GUE hop list and redirect
 *   it out of an interface (TC_ACT_REDIRECT), which needs no ip_forward;
 *   malformed or not allowed -> TC_ACT_SHOT.
 * Everything else leaves untouched. Every verdict bumps one counter (enum redir_reason).
 *
 * The entry function is last and reads as the flow. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
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
#include "csum.h"
#include "gue.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define TCP_STATE_LISTEN 10 /* include/net/tcp_states.h: TCP_LISTEN */

/* How much of the packet must be linear for the parsers: outer IPv6 (40) + UDP (8) + GUE (4) +
 * private data (max 124) + inner IPv6 (40) + TCP (20) + eth (14) = 250. */
#define PULL_LEN 256

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by userspace before load (a change means a new program, swapped in atomically). */
const volatile __u16 gue_port = GUE_DEFAULT_PORT; /* host byte order */

/* Readable by userspace so it can tell which reasons this object counts. */
const volatile enum redir_reason redir_reason_count = REDIR_REASON_COUNT;

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct redir_lpm_v4);
	__type(value, __u8);
} allowed_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct redir_lpm_v6);
	__type(value, __u8);
} allowed_v6 SEC(".maps");

/* This host's addresses beyond the packet's own outer destination: a hop naming one of them is
 * "self". */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct redir_addr);
	__type(value, __u8);
} self_addrs SEC(".maps");

/* One entry; an array lookup is inlined by the verifier, so reading it costs almost nothing. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct redir_settings);
} settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REDIR_COUNTERS_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(enum redir_reason reason)
{
	__u32 key = reason;
	__u64 *n = bpf_map_lookup_elem(&counters, &key);

	if (n)
		*n += 1;
}

/* What the parsers found; offsets are from skb->data (start of Ethernet). */
struct pkt {
	__u8 outer_v6;
	__u8 inner_v6;
	__u8 inner_proto; /* IPPROTO_* of the inner L4 header */
	__u8 inner_later_frag;
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

/* GUE header and hop list (design.md section 3): 0 = ok, <0 = -reason. */
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
	__u32 l4_min;

	if (off > sizeof(struct ethhdr) + 60 + 8 + 4 + 124)
		return -REDIR_DROP_BAD_GUE; /* verifier: bounds the variable offset */
	p->inner_l3_off = off;
	p->inner_later_frag = 0;
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
	} else {
		struct ipv6hdr *ip6 = data + off;

		if ((void *)(ip6 + 1) > data_end)
			return -REDIR_DROP_BAD_INNER;
		if (ip6->version != 6)
			return -REDIR_DROP_BAD_INNER;
		p->inner_proto = ip6->nexthdr;
		p->inner_l4_off = off + sizeof(*ip6);
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
	}
	return 0;
}

/* ---- local or next hop ---- */

/* Does a socket here own the TCP flow (sk != listener), or is this ACK a valid SYN cookie of
 * the listener that matched? Returns the accept reason, or 0. */
static __always_inline int tcp_local(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;
	struct tcphdr *th;
	__u32 tuple_len;
	void *iph;
	__u32 iph_len;
	int reason = 0;

	if (p->inner_l3_off > PULL_LEN || p->inner_l4_off > PULL_LEN)
		return 0; /* verifier: bounds the variable offsets */
	iph = data + p->inner_l3_off;
	th = data + p->inner_l4_off;
	if ((void *)(th + 1) > data_end)
		return 0; /* verifier: checked in parse_inner */

	if (th->syn && !th->ack)
		return REDIR_ACCEPT_SYN;

	if (!p->inner_v6) {
		struct iphdr *ip = iph;

		if ((void *)(ip + 1) > data_end)
			return 0; /* verifier */
		tuple.ipv4.saddr = ip->saddr;
		tuple.ipv4.daddr = ip->daddr;
		tuple.ipv4.sport = th->source;
		tuple.ipv4.dport = th->dest;
		tuple_len = sizeof(tuple.ipv4);
		iph_len = sizeof(struct iphdr);
	} else {
		struct ipv6hdr *ip6 = iph;

		if ((void *)(ip6 + 1) > data_end)
			return 0; /* verifier */
		__builtin_memcpy(tuple.ipv6.saddr, &ip6->saddr, 16);
		__builtin_memcpy(tuple.ipv6.daddr, &ip6->daddr, 16);
		tuple.ipv6.sport = th->source;
		tuple.ipv6.dport = th->dest;
		tuple_len = sizeof(tuple.ipv6);
		iph_len = sizeof(struct ipv6hdr);
	}

	/* skc: also finds request (mid-handshake) and time-wait sockets, and listeners. */
	sk = bpf_skc_lookup_tcp(skb, &tuple, tuple_len, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	if (sk->state != TCP_STATE_LISTEN) {
		reason = REDIR_ACCEPT_SOCKET;
	} else if (th->ack && !th->syn && !th->rst) {
		/* Only a listener matched: with cookies the handshake left no socket behind. */
		if ((void *)iph + iph_len > data_end)
			goto out; /* verifier */
		if (bpf_tcp_check_syncookie(sk, iph, iph_len, th, sizeof(*th)) == 0)
			reason = REDIR_ACCEPT_SYNCOOKIE;
	}
out:
	bpf_sk_release(sk);
	return reason;
}

/* An ICMP error quotes the packet we sent: look up its flow reversed. Returns the accept
 * reason, 0 when it is not ours (second chance), <0 = -reason when it is not an error at all
 * (treated as other local traffic by the caller). */
static __always_inline int icmp_local(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct bpf_sock_tuple tuple = {};
	__u32 tuple_len, q_off;
	__u8 q_proto;
	__u16 *ports;
	struct bpf_sock *sk;
	__u8 *icmp;

	if (p->inner_l4_off > PULL_LEN)
		return 0; /* verifier */
	icmp = data + p->inner_l4_off;
	if ((void *)(icmp + 8) > data_end)
		return 0; /* verifier: checked in parse_inner */

	if (!p->inner_v6) {
		struct iphdr *q;

		if (icmp[0] != ICMP_DEST_UNREACH && icmp[0] != ICMP_TIME_EXCEEDED &&
		    icmp[0] != ICMP_PARAMETERPROB)
			return -1;
		q = (void *)(icmp + 8);
		if ((void *)(q + 1) > data_end || q->version != 4 || q->ihl < 5)
			return 0;
		q_proto = q->protocol;
		q_off = p->inner_l4_off + 8 + q->ihl * 4;
		/* The quoted packet went from the VIP to the client; we see the client's side. */
		tuple.ipv4.saddr = q->daddr;
		tuple.ipv4.daddr = q->saddr;
		tuple_len = sizeof(tuple.ipv4);
	} else {
		struct ipv6hdr *q;

		if (icmp[0] < ICMPV6_DEST_UNREACH || icmp[0] > ICMPV6_PARAMPROB)
			return -1;
		q = (void *)(icmp + 8);
		if ((void *)(q + 1) > data_end || q->version != 6)
			return 0;
		q_proto = q->nexthdr;
		q_off = p->inner_l4_off + 8 + sizeof(*q);
		__builtin_memcpy(tuple.ipv6.saddr, &q->daddr, 16);
		__builtin_memcpy(tuple.ipv6.daddr, &q->saddr, 16);
		tuple_len = sizeof(tuple.ipv6);
	}
	if (q_proto == IPPROTO_UDP)
		return REDIR_ACCEPT_ICMP; /* UDP is always local (see main) */
	if (q_proto != IPPROTO_TCP)
		return 0;
	if (q_off > PULL_LEN + 60)
		return 0; /* verifier: bounds the variable offset */
	ports = data + q_off;
	if ((void *)(ports + 2) > data_end)
		return 0;
	/* tuple.ipv4 and tuple.ipv6 keep sport/dport at different offsets. */
	if (!p->inner_v6) {
		tuple.ipv4.sport = ports[1];
		tuple.ipv4.dport = ports[0];
	} else {
		tuple.ipv6.sport = ports[1];
		tuple.ipv6.dport = ports[0];
	}
	sk = bpf_skc_lookup_tcp(skb, &tuple, tuple_len, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	q_proto = sk->state != TCP_STATE_LISTEN;
	bpf_sk_release(sk);
	return q_proto ? REDIR_ACCEPT_ICMP : 0;
}

/* ---- actions ---- */

/* Strip outer IP/UDP/GUE so the stack sees the inner packet behind the original Ethernet
 * header. */
static __always_inline int decap(struct __sk_buff *skb, struct pkt *p)
{
	__s32 strip = p->strip_len;
	void *data, *data_end;
	struct ethhdr *eth;

	/* bpf_skb_change_proto() moves the L3 start by the size difference of the two IP
	 * headers (pushing or popping 20 bytes after the MAC header), so it changes how much
	 * adjust_room still has to remove. */
	if (!p->outer_v6 && p->inner_v6) {
		if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IPV6), 0))
			return -1;
		strip += sizeof(struct ipv6hdr) - sizeof(struct iphdr);
	} else if (p->outer_v6 && !p->inner_v6) {
		if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IP), 0))
			return -1;
		strip -= sizeof(struct ipv6hdr) - sizeof(struct iphdr);
	}
	if (bpf_skb_adjust_room(skb, -strip, BPF_ADJ_ROOM_MAC, 0))
		return -1;
	/* A NIC that validated the outer UDP checksum marks the skb CHECKSUM_UNNECESSARY for
	 * one checksum; that one is gone now, and the inner packet's was never checked. */
	bpf_csum_level(skb, BPF_CSUM_LEVEL_DEC);

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return -1; /* verifier: pointers are invalid after adjust_room */
	eth->h_proto = p->inner_v6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP);
	return 0;
}

/* Is `addr` (16 bytes, IPv4 mapped) one of this host's addresses from the config? Most hosts
 * configure none: skip the hash lookup then (it is a tenth of the forwarding cost). */
static __always_inline int is_self_addr(struct redir_addr *addr)
{
	__u32 zero = 0;
	struct redir_settings *cfg = bpf_map_lookup_elem(&settings, &zero);

	if (!cfg || !cfg->self_addr_count)
		return 0;
	return bpf_map_lookup_elem(&self_addrs, addr) != NULL;
}

/* Rewrite the outer header toward the next hop: source = the address the packet was sent to
 * (ours), destination = the hop, index advanced, checksums fixed. Returns a TC verdict and
 * sets *reason. */
static __always_inline int forward(struct __sk_buff *skb, struct pkt *p, enum redir_reason *reason)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct bpf_fib_lookup fib = {};
	struct gue_hoplist *hl;
	struct ethhdr *eth = data;
	struct redir_addr self = {};
	__u32 off, acc;
	__u16 old_word, new_word;
	int rc;

	if (p->hoplist_off > sizeof(struct ethhdr) + 60 + 8 + 4)
		return TC_ACT_SHOT; /* verifier: bounds the variable offset */
	hl = data + p->hoplist_off;
	if ((void *)(hl + 1) > data_end || (void *)(eth + 1) > data_end)
		return TC_ACT_SHOT; /* verifier: checked in parse_gue */
	/* The word (next_hop, hop_count) changes; the UDP checksum covers it. */
	old_word = *(__u16 *)&hl->next_hop;

	if (!p->outer_v6) {
		struct iphdr *ip = (void *)(eth + 1);
		struct udphdr *udp;
		__be32 hop, old_src;

		if ((void *)(ip + 1) > data_end)
			return TC_ACT_SHOT; /* verifier */
		off = p->hoplist_off + sizeof(*hl) + p->next_hop * 4;
		if (off > PULL_LEN)
			return TC_ACT_SHOT; /* verifier */
		if (data + off + 4 > data_end)
			return TC_ACT_SHOT; /* verifier: length checked in parse_gue */
		hop = *(__be32 *)(data + off);
		self.addr[10] = 0xff;
		self.addr[11] = 0xff;
		__builtin_memcpy(&self.addr[12], &hop, 4);
		if (hop == ip->daddr || is_self_addr(&self)) {
			*reason = REDIR_ACCEPT_NEXT_HOP_SELF;
			return -1;
		}
		udp = (void *)ip + ip->ihl * 4;
		if ((void *)(udp + 1) > data_end)
			return TC_ACT_SHOT; /* verifier */
		old_src = ip->saddr;
		/* {saddr, daddr}: {old_src, us} becomes {us, hop}, a change of old_src -> hop. */
		acc = csum_acc_start(ip->check);
		acc = csum_acc_replace32(acc, old_src, hop);
		ip->check = csum_acc_finish(acc);
		ip->saddr = ip->daddr;
		ip->daddr = hop;
		/* GLB sends GUE over IPv4 without a UDP checksum. */
		udp->check = 0;

		fib.family = AF_INET;
		fib.tos = ip->tos;
		fib.l4_protocol = IPPROTO_UDP;
		fib.tot_len = bpf_ntohs(ip->tot_len);
		fib.ipv4_src = ip->saddr;
		fib.ipv4_dst = hop;
	} else {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		struct udphdr *udp = (void *)(ip6 + 1);
		__u32 hop[4], old_src[4];

		if ((void *)(udp + 1) > data_end)
			return TC_ACT_SHOT; /* verifier */
		off = p->hoplist_off + sizeof(*hl) + p->next_hop * 16;
		if (off > PULL_LEN)
			return TC_ACT_SHOT; /* verifier */
		if (data + off + 16 > data_end)
			return TC_ACT_SHOT; /* verifier: length checked in parse_gue */
		__builtin_memcpy(hop, data + off, 16);
		__builtin_memcpy(self.addr, hop, 16);
		if ((hop[0] == ip6->daddr.in6_u.u6_addr32[0] &&
		     hop[1] == ip6->daddr.in6_u.u6_addr32[1] &&
		     hop[2] == ip6->daddr.in6_u.u6_addr32[2] &&
		     hop[3] == ip6->daddr.in6_u.u6_addr32[3]) ||
		    is_self_addr(&self)) {
			*reason = REDIR_ACCEPT_NEXT_HOP_SELF;
			return -1;
		}
		__builtin_memcpy(old_src, &ip6->saddr, 16);
		/* UDP over IPv6 needs a valid checksum (RFC 8200); the pseudo-header's addresses
		 * change by old_src -> hop and the payload by the next-hop index. A zero checksum
		 * (RFC 6935 tunnels) stays zero. */
		if (udp->check) {
			new_word = old_word;
			((__u8 *)&new_word)[0] += 1;
			acc = csum_acc_start(udp->check);
			acc = csum_acc_replace128(acc, old_src, hop);
			acc = csum_acc_replace16(acc, old_word, new_word);
			udp->check = csum_udp_mangle0(csum_acc_finish(acc));
		}
		__builtin_memcpy(&ip6->saddr, &ip6->daddr, 16);
		__builtin_memcpy(&ip6->daddr, hop, 16);

		fib.family = AF_INET6;
		fib.l4_protocol = IPPROTO_UDP;
		fib.tot_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
		__builtin_memcpy(fib.ipv6_src, &ip6->saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, hop, 16);
	}
	hl->next_hop += 1;

	/* The fast path needs forwarding enabled on the ingress interface (the kernel checks it
	 * even for this lookup). Without it, redirect out of the ingress interface and let the
	 * neighbour code route within it: backends and their peers share that network. */
	fib.ifindex = skb->ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		eth = data;
		if ((void *)(eth + 1) > data_end)
			return TC_ACT_SHOT; /* verifier: helper calls invalidate packet pointers */
		__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
		rc = bpf_redirect(fib.ifindex, 0);
		break;
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		rc = bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
		break;
	case BPF_FIB_LKUP_RET_FWD_DISABLED:
		rc = bpf_redirect_neigh(skb->ifindex, NULL, 0, 0);
		break;
	case BPF_FIB_LKUP_RET_FRAG_NEEDED:
		*reason = REDIR_DROP_TOO_BIG;
		return TC_ACT_SHOT;
	default:
		*reason = REDIR_DROP_NO_ROUTE;
		return TC_ACT_SHOT;
	}
	if (rc != TC_ACT_REDIRECT) {
		*reason = REDIR_DROP_REDIRECT_FAILED;
		return TC_ACT_SHOT;
	}
	*reason = REDIR_FORWARD;
	return TC_ACT_REDIRECT;
}

/* ---- entry points ---- */

static __always_inline int verdict(enum redir_reason reason, int action)
{
	count(reason);
	return action;
}

SEC("tc")
int redirector(struct __sk_buff *skb)
{
	enum redir_reason reason = 0; /* 0: not decided yet (REDIR_PASS_NOT_GUE is never one) */
	struct pkt p = {};
	int rc, action;
	__u32 need;

	/* Frames addressed to other hosts (promiscuous mode) are the stack's to drop. */
	if (skb->pkt_type != PACKET_HOST)
		return verdict(REDIR_PASS_NOT_GUE, TC_ACT_OK);

	rc = parse_outer(skb, &p);
	if (rc == 0)
		return verdict(REDIR_PASS_NOT_GUE, TC_ACT_OK);
	if (rc < 0)
		return verdict(-rc, TC_ACT_SHOT);
	if (!source_allowed(skb, &p))
		return verdict(REDIR_DROP_SRC_NOT_ALLOWED, TC_ACT_SHOT);

	/* Headers may sit in paged data (GRO, some drivers); the parsers need them linear.
	 * Pulling costs even when there is nothing to pull: only call it when needed. */
	need = skb->len < PULL_LEN ? skb->len : PULL_LEN;
	if ((void *)(long)skb->data + need > (void *)(long)skb->data_end)
		bpf_skb_pull_data(skb, need);

	rc = parse_gue(skb, &p);
	if (rc < 0)
		return verdict(-rc, TC_ACT_SHOT);
	rc = parse_inner(skb, &p);
	if (rc < 0)
		return verdict(-rc, TC_ACT_SHOT);

	/* Local or next hop, in the order of docs/development/second-chance.md. */
	if (p.inner_later_frag) {
		reason = REDIR_ACCEPT_OTHER;
	} else if (p.inner_proto == IPPROTO_TCP) {
		reason = tcp_local(skb, &p);
	} else if (p.inner_proto == IPPROTO_UDP) {
		reason = REDIR_ACCEPT_UDP;
	} else if (p.inner_proto == (p.inner_v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP)) {
		rc = icmp_local(skb, &p);
		reason = rc < 0 ? REDIR_ACCEPT_OTHER : rc;
	} else {
		reason = REDIR_ACCEPT_OTHER;
	}

	if (!reason) {
		if (p.hoplist_off == 0) {
			reason = REDIR_ACCEPT_NO_HOPLIST;
		} else if (p.next_hop >= p.hop_count) {
			reason = REDIR_ACCEPT_HOPS_EXHAUSTED;
		} else {
			action = forward(skb, &p, &reason);
			if (action >= 0)
				return verdict(reason, action);
			/* next hop is self: fall through to local */
		}
	}

	if (decap(skb, &p))
		return verdict(REDIR_DROP_DECAP_FAILED, TC_ACT_SHOT);
	return verdict(reason, TC_ACT_OK);
}

/* Benchmark baseline only, never attached: the cost of the test harness itself. */
SEC("tc")
int harness_floor(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}
