/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Co-located mode (docs/setup/colocated.md): the director runs on a backend, whose own
 * addresses are the outer sources (director_config.src4 / src6). A row whose primary is this
 * host is not sent over the network:
 * - a TCP SYN, or a TCP segment a local socket owns (bpf_skc_lookup_tcp: established,
 *   handshake, time-wait), goes to the stack as it came (XDP_PASS, `colocated_direct`);
 * - anything else (no socket, a SYN cookie ACK, UDP, ICMP errors, fragments) is encapsulated to
 *   this host as to any primary and handed to the stack (XDP_PASS, `colocated_self`), where the
 *   redirector's TC program takes it as GUE from a director: second chance, the next hop and
 *   the hop list exactly as a dedicated director tier's packet would get them.
 * Called from forward() once the row is known, when director_config.colocated is set; a
 * dedicated director never gets here. The fast path never takes such a row: forward() returns
 * before it caches a next hop for this host, and the fast path only sends to cached ones. */
#ifndef XDPLB_DIRECTOR_COLOCATED_H
#define XDPLB_DIRECTOR_COLOCATED_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi.h"
#include "consts.h"
#include "director_maps.h"
#include "director_pkt.h"
#include "director_encap.h"

#define COLOCATED_TCP_LISTEN 10 /* include/net/tcp_states.h: TCP_LISTEN */

/* Is the row's primary this host (the outer source of the row's family)? */
static __always_inline int colocated_is_self(const struct director_row *row,
					     const struct director_config *cfg, int outer_v6)
{
	if (outer_v6)
		return *(const __u64 *)row->hops[0] == *(const __u64 *)cfg->src6 &&
		       *(const __u64 *)(row->hops[0] + 8) == *(const __u64 *)(cfg->src6 + 8);
	return *(const __u32 *)row->hops[0] == cfg->src4;
}

/* A TCP segment (the frame as received) that this host's stack takes as it is: a SYN
 * without ACK (new flows land on the primary), or one whose flow has a socket here other than
 * a listener. 1 or 0. `offs`: the IP header's offset (bits 0-15), the TCP header's (16-31),
 * 1 in bit 32 for IPv6. A global function, as xdplb_route_mtu: the verifier checks it once,
 * not once per path of forward() that reaches it. */
__attribute__((noinline)) int xdplb_colocated_tcp_here(struct xdp_md *ctx, __u64 offs)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;
	__u32 l3 = offs & 0xff, l4 = (offs >> 16) & 0x1ff, len;
	__u8 *ip = data + l3, *th = data + l4;
	int here;

	if ((void *)(th + 20) > data_end || (void *)(ip + 40) > data_end)
		return 0; /* classify checked both: for the verifier */
	if ((th[13] & 0x12) == 0x02) /* SYN without ACK */
		return 1;
	if (offs >> 32) {
		__builtin_memcpy(tuple.ipv6.saddr, ip + 8, 16);
		__builtin_memcpy(tuple.ipv6.daddr, ip + 24, 16);
		tuple.ipv6.sport = *(__be16 *)th;
		tuple.ipv6.dport = *(__be16 *)(th + 2);
		len = sizeof(tuple.ipv6);
	} else {
		__builtin_memcpy(&tuple.ipv4.saddr, ip + 12, 4);
		__builtin_memcpy(&tuple.ipv4.daddr, ip + 16, 4);
		tuple.ipv4.sport = *(__be16 *)th;
		tuple.ipv4.dport = *(__be16 *)(th + 2);
		len = sizeof(tuple.ipv4);
	}
	sk = bpf_skc_lookup_tcp(ctx, &tuple, len, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	here = sk->state != COLOCATED_TCP_LISTEN;
	bpf_sk_release(sk);
	return here;
}

/* forward()'s rc for a packet colocated_direct() left to encapsulate to this host: not a
 * bpf_fib_lookup answer. */
#define COLOCATED_SELF_RC 0x100

/* The packet of a row whose primary is this host, in a frame forward() has grown by a->grown
 * (the encapsulation's room): a TCP segment this host's stack takes goes to it as it came
 * (the verdict), anything else -1: forward() encapsulates it to this host with the frame's
 * own MACs (ours as destination, as for an unresolved neighbour), so the stack takes the GUE
 * packet and the redirector's TC program decides (COLOCATED_SELF_RC). One encap() call site
 * for both: the verifier walks it once more per path, not twice. */
static __always_inline int colocated_direct(struct xdp_md *ctx, struct pkt *p,
					    const struct encap_args *a)
{
	if (p->ip_proto != IPPROTO_TCP_ || p->icmp_error)
		return -1;
	/* back to the frame as received, to look at it and maybe hand it on */
	if (bpf_xdp_adjust_head(ctx, (int)a->grown))
		return verdict(p, DIRECTOR_DROP_ENCAP_FAILED, XDP_DROP);
	if (xdplb_colocated_tcp_here(ctx, p->l3_off | p->l4_off << 16 | (__u64)p->is_v6 << 32)) {
		count(&stats_bind, p->bind, p->frame_len);
		return verdict(p, DIRECTOR_PASS_COLOCATED_DIRECT, XDP_PASS);
	}
	if (bpf_xdp_adjust_head(ctx, 0 - (int)a->grown))
		return verdict(p, DIRECTOR_DROP_ENCAP_FAILED, XDP_DROP);
	return -1;
}

#endif
