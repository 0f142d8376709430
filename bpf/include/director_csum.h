/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The director's checksums: 64-bit ones' complement sums (fold64, sum16, pseudo_sum), the
 * sum of a whole frame region (the one global function, xdplb_sum_frame) and the sum of the
 * inner packet that the outer IPv6 UDP checksum needs (inner_sum). */
#ifndef XDPLB_DIRECTOR_CSUM_H
#define XDPLB_DIRECTOR_CSUM_H

#include <linux/bpf.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "csum.h"
#include "director_pkt.h"

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

#endif
