// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* xdplb redirector: TC clsact ingress on a backend (docs/development/second-chance.md).
 *
 * For UDP to the GUE port from an allowed source (directors, other backends) it decides, for
 * the inner packet:
 *   local -> strip outer IP/UDP/GUE and hand the inner packet to the stack (TC_ACT_OK);
 *   next hop -> rewrite the outer header toward the next hop in the GUE hop list and redirect
 *   it out of an interface (TC_ACT_REDIRECT), which needs no ip_forward;
 *   malformed or not allowed -> TC_ACT_SHOT.
 * Everything else leaves untouched. Every verdict counts the packet and its bytes for one reason
 * (enum redir_reason).
 *
 * In bpf/include/: redirector_maps.h (settings, maps, the counter), redirector_parse.h (outer,
 * GUE and inner headers), redirector_local.h (does a local socket own the flow). Here: the
 * actions (decap, forward to the next hop) and the entry function, last, which reads as the
 * flow. */
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

#include "redirector_maps.h"  /* settings, maps, count() */
#include "redirector_parse.h" /* outer, GUE, inner headers */
#include "redirector_local.h" /* does a local socket own the flow? */
#include "nexthop.h"          /* nexthop_fill() */

char LICENSE[] SEC("license") = "Dual BSD/GPL";

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
static __always_inline int is_self_addr(const struct redir_settings *cfg, struct redir_addr *addr)
{
	if (!cfg || !cfg->self_addr_count)
		return 0;
	return bpf_map_lookup_elem(&self_addrs, addr) != NULL;
}

/* The nexthops slot of a hop: its four address words xor-folded, times 2^32 / phi, top bits. */
static __always_inline __u32 nexthop_slot(const struct redir_addr *a)
{
	const __u32 *w = (const __u32 *)a->addr;

	return ((w[0] ^ w[1] ^ w[2] ^ w[3]) * 0x9e3779b1u) >> 24; /* REDIR_NEXTHOP_SLOTS = 2^8 */
}

/* Redirect out of `ifindex` toward the MACs given: the frame's Ethernet header is rewritten. */
static __always_inline int send_to(struct __sk_buff *skb, __u32 ifindex, const __u8 *dmac,
				   const __u8 *smac)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_SHOT; /* verifier: helper calls invalidate packet pointers */
	__builtin_memcpy(eth->h_dest, dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, smac, ETH_ALEN);
	return bpf_redirect(ifindex, 0);
}

/* Rewrite the outer header toward the next hop: source = the address the packet was sent to
 * (ours), destination = the hop, index advanced, checksums fixed. Returns a TC verdict and
 * sets *reason. */
static __always_inline int forward(struct __sk_buff *skb, struct pkt *p, enum redir_reason *reason)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct bpf_fib_lookup fib;
	struct gue_hoplist *hl;
	struct ethhdr *eth = data;
	struct redir_addr self = {}; /* the hop, IPv4 mapped: the self check's and the cache's key */
	struct redir_nexthop *nh = NULL;
	const struct redir_settings *cfg;
	__u32 off, acc, tot_len, zero = 0, ingress = skb->ifindex;
	__u64 now = 0;
	__u16 old_word, new_word;
	int rc;

	cfg = bpf_map_lookup_elem(&settings, &zero);
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
		if (hop == ip->daddr || is_self_addr(cfg, &self)) {
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
		tot_len = bpf_ntohs(ip->tot_len);
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
		    is_self_addr(cfg, &self)) {
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
		tot_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
	}
	hl->next_hop += 1;

	/* The hop's next hop as this CPU last found it, if still good (nexthop.h). Only
	 * bpf_fib_lookup's full answers are kept: with forwarding off there is nothing to keep. */
	if (nexthop_ttl_ms && cfg) {
		__u32 slot = nexthop_slot(&self);

		nh = bpf_map_lookup_elem(&nexthops, &slot);
		now = bpf_jiffies64(); /* inlined by the verifier: a load, not a call */
		if (nh && nh->expires > now && nh->generation == cfg->generation &&
		    nh->ingress == ingress && tot_len <= nh->mtu &&
		    *(__u64 *)nh->addr == *(__u64 *)self.addr &&
		    *(__u64 *)(nh->addr + 8) == *(__u64 *)(self.addr + 8)) {
			rc = send_to(skb, nh->ifindex, nh->dmac, nh->smac);
			goto sent;
		}
	}

	/* The fast path needs forwarding enabled on the ingress interface (the kernel checks it
	 * even for this lookup). Without it, redirect out of the ingress interface and let the
	 * neighbour code route within it: backends and their peers share that network. */
	__builtin_memset(&fib, 0, sizeof(fib));
	fib.l4_protocol = IPPROTO_UDP;
	fib.tot_len = tot_len;
	fib.ifindex = ingress;
	if (!p->outer_v6) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return TC_ACT_SHOT; /* verifier */
		fib.family = AF_INET;
		fib.tos = ip->tos;
		fib.ipv4_src = ip->saddr;
		fib.ipv4_dst = ip->daddr;
	} else {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return TC_ACT_SHOT; /* verifier */
		fib.family = AF_INET6;
		__builtin_memcpy(fib.ipv6_src, &ip6->saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, &ip6->daddr, 16);
	}
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
		if (nh)
			nexthop_fill(nh, self.addr, now, nexthop_ttl_ms, cfg->generation, ingress,
				     &fib);
		rc = send_to(skb, fib.ifindex, fib.dmac, fib.smac);
		break;
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		rc = bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
		break;
	case BPF_FIB_LKUP_RET_FWD_DISABLED:
		rc = bpf_redirect_neigh(ingress, NULL, 0, 0);
		break;
	case BPF_FIB_LKUP_RET_FRAG_NEEDED:
		*reason = REDIR_DROP_TOO_BIG;
		return TC_ACT_SHOT;
	default:
		*reason = REDIR_DROP_NO_ROUTE;
		return TC_ACT_SHOT;
	}
sent:
	if (rc != TC_ACT_REDIRECT) {
		*reason = REDIR_DROP_REDIRECT_FAILED;
		return TC_ACT_SHOT;
	}
	*reason = REDIR_FORWARD;
	return TC_ACT_REDIRECT;
}

/* ---- entry points ---- */

/* Count the packet (len: its length as received) for reason, and return action. */
static __always_inline int verdict(__u32 len, enum redir_reason reason, int action)
{
	count(reason, len);
	return action;
}

SEC("tc")
int redirector(struct __sk_buff *skb)
{
	enum redir_reason reason = 0; /* 0: not decided yet (REDIR_PASS_NOT_GUE is never one) */
	struct pkt p = {};
	__u32 len = skb->len; /* as received: decap and forward change it */
	int rc, action;
	__u32 need;

	/* Frames addressed to other hosts (promiscuous mode) are the stack's to drop. */
	if (skb->pkt_type != PACKET_HOST)
		return verdict(len, REDIR_PASS_NOT_GUE, TC_ACT_OK);

	rc = parse_outer(skb, &p);
	if (rc == 0)
		return verdict(len, REDIR_PASS_NOT_GUE, TC_ACT_OK);
	if (rc < 0)
		return verdict(len, -rc, TC_ACT_SHOT);
	if (!source_allowed(skb, &p))
		return verdict(len, REDIR_DROP_SRC_NOT_ALLOWED, TC_ACT_SHOT);
	/* Several GUE datagrams that GRO merged into one skb (UDP GRO forwarding, fraglist GRO, a
	 * UDP_GRO socket or a tunnel on the port): one outer header is all this program could
	 * strip or rewrite, the later datagrams' GUE headers would stay in the payload. The daemon
	 * turns those features off on its interfaces (docs/development/second-chance.md, "GRO"). */
	if (skb->gso_size)
		return verdict(len, REDIR_DROP_GRO_MERGED, TC_ACT_SHOT);

	/* Headers may sit in paged data (GRO, some drivers); the parsers need them linear.
	 * Pulling costs even when there is nothing to pull: only call it when needed. */
	need = skb->len < PULL_LEN ? skb->len : PULL_LEN;
	if ((void *)(long)skb->data + need > (void *)(long)skb->data_end)
		bpf_skb_pull_data(skb, need);

	rc = parse_gue(skb, &p);
	if (rc < 0)
		return verdict(len, -rc, TC_ACT_SHOT);
	rc = parse_inner(skb, &p);
	if (rc < 0)
		return verdict(len, -rc, TC_ACT_SHOT);

	/* Local or next hop, in the order of docs/development/second-chance.md. */
	if (p.inner_later_frag) {
		reason = REDIR_ACCEPT_OTHER;
	} else if (p.inner_proto == IPPROTO_TCP) {
		reason = tcp_local(skb, &p);
	} else if (p.inner_proto == IPPROTO_UDP) {
		reason = p.udp_sc ? udp_local(skb, &p) : REDIR_ACCEPT_UDP;
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
				return verdict(len, reason, action);
			/* next hop is self: fall through to local */
		}
	}

	if (decap(skb, &p))
		return verdict(len, REDIR_DROP_DECAP_FAILED, TC_ACT_SHOT);
	return verdict(len, reason, TC_ACT_OK);
}

/* Benchmark baseline only, never attached: the cost of the test harness itself. */
SEC("tc")
int harness_floor(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}
