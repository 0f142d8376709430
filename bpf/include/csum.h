/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Internet checksum helpers (RFC 1071 / RFC 1624) for BPF programs. No SEC() code.
 *
 * The ones' complement sum does not care about byte order as long as every 16-bit word is
 * loaded and stored the same way, so these work on raw network-order words straight from the
 * packet: nothing here calls bpf_ntohs(). */
#ifndef XDPLB_CSUM_H
#define XDPLB_CSUM_H

#include <linux/types.h>

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* Add the replacement of one 16-bit word `from` by `to` to an unfolded accumulator
 * (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')). */
static __always_inline __u32 csum_acc_replace16(__u32 acc, __u16 from, __u16 to)
{
	return acc + (__u16)~from + to;
}

/* As above for a 32-bit field (an IPv4 address), as two 16-bit words. */
static __always_inline __u32 csum_acc_replace32(__u32 acc, __u32 from, __u32 to)
{
	acc = csum_acc_replace16(acc, (__u16)from, (__u16)to);
	return csum_acc_replace16(acc, (__u16)(from >> 16), (__u16)(to >> 16));
}

/* As above for a 128-bit field (an IPv6 address) given as four 32-bit words. */
static __always_inline __u32 csum_acc_replace128(__u32 acc, const __u32 *from, const __u32 *to)
{
#pragma unroll
	for (int i = 0; i < 4; i++)
		acc = csum_acc_replace32(acc, from[i], to[i]);
	return acc;
}

/* Start an incremental update of a stored checksum field (network order as loaded). */
static __always_inline __u32 csum_acc_start(__u16 check)
{
	return (__u16)~check;
}

/* Finish an incremental update: the value to store back in the checksum field. */
static __always_inline __u16 csum_acc_finish(__u32 acc)
{
	return (__u16)~csum_fold(acc);
}

/* UDP transmits a computed 0 as 0xffff: 0 means "no checksum" (RFC 768). */
static __always_inline __u16 csum_udp_mangle0(__u16 check)
{
	return check ? check : 0xffff;
}

#endif
