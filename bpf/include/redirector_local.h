/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Local or next hop (docs/development/second-chance.md): does a socket on this host own the
 * inner flow (TCP: established, handshake or a valid SYN cookie; ICMP errors: the quoted
 * flow)? */
#ifndef XDPLB_REDIRECTOR_LOCAL_H
#define XDPLB_REDIRECTOR_LOCAL_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
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
#include "redirector_parse.h"

#define TCP_STATE_LISTEN 10 /* include/net/tcp_states.h: TCP_LISTEN */

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

#define UDP_STATE_CONNECTED 1 /* TCP_ESTABLISHED: what connect() makes of a UDP socket */

/* UDP second chance: does a connected UDP socket here own the flow (as a QUIC server's
 * socket per client does)? An unconnected one (the server's listener) owns no flow: it takes
 * whatever nobody else does. Returns the accept reason, or 0. */
static __always_inline int udp_local(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;
	struct udphdr *uh;
	__u32 tuple_len;
	int reason = 0;

	/* The fragments of one datagram must meet in one stack; the later ones have no ports
	 * to look up and are delivered at the first hop, so the first is too. */
	if (p->inner_first_frag)
		return REDIR_ACCEPT_UDP_FRAGMENT;
	if (p->inner_l3_off > PULL_LEN || p->inner_l4_off > PULL_LEN)
		return 0; /* verifier: bounds the variable offsets */
	uh = data + p->inner_l4_off;
	if ((void *)(uh + 1) > data_end)
		return 0; /* verifier: checked in parse_inner */
	if (!p->inner_v6) {
		struct iphdr *ip = data + p->inner_l3_off;

		if ((void *)(ip + 1) > data_end)
			return 0; /* verifier */
		tuple.ipv4.saddr = ip->saddr;
		tuple.ipv4.daddr = ip->daddr;
		tuple.ipv4.sport = uh->source;
		tuple.ipv4.dport = uh->dest;
		tuple_len = sizeof(tuple.ipv4);
	} else {
		struct ipv6hdr *ip6 = data + p->inner_l3_off;

		if ((void *)(ip6 + 1) > data_end)
			return 0; /* verifier */
		__builtin_memcpy(tuple.ipv6.saddr, &ip6->saddr, 16);
		__builtin_memcpy(tuple.ipv6.daddr, &ip6->daddr, 16);
		tuple.ipv6.sport = uh->source;
		tuple.ipv6.dport = uh->dest;
		tuple_len = sizeof(tuple.ipv6);
	}
	/* The kernel's own lookup: a connected socket scores above a bound one, also within a
	 * SO_REUSEPORT group. */
	sk = bpf_sk_lookup_udp(skb, &tuple, tuple_len, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	/* Connected, and to this very client. "Connected" alone is not enough: the lookup
	 * scores each socket as it walks the port's chain and reads nothing under a lock, so it
	 * may pick a server's new per-client socket in the moment between its bind() and its
	 * connect() (unconnected, it matches every client as the listener does, and the newest
	 * socket wins the tie). If that connect() to another client completes before the state
	 * is read here, the socket looks connected, but the stack will not deliver this
	 * datagram to it: the listener would take it and the flow would move here
	 * (docs/development/second-chance.md, "Connected to whom"). dst_port: a 4-byte load,
	 * as 5.10 allows for this field; the kernel fills the low 16 bits (network order). */
	if (sk->state == UDP_STATE_CONNECTED &&
	    (__u16)*(volatile __u32 *)&sk->dst_port == uh->source) {
		if (!p->inner_v6) {
			if (sk->dst_ip4 == tuple.ipv4.saddr)
				reason = REDIR_ACCEPT_UDP_SOCKET;
		} else if (sk->dst_ip6[0] == tuple.ipv6.saddr[0] &&
			   sk->dst_ip6[1] == tuple.ipv6.saddr[1] &&
			   sk->dst_ip6[2] == tuple.ipv6.saddr[2] &&
			   sk->dst_ip6[3] == tuple.ipv6.saddr[3]) {
			reason = REDIR_ACCEPT_UDP_SOCKET;
		}
	}
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

#endif
