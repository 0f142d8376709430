/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* SipHash-1-3 over the director's two fixed flow-key sizes: the BPF mirror of
 * tablegen/src/hash.rs, which is the reference. Same key halves (two little-endian u64),
 * same input layout (IPv4: src[4] dst[4] sport[2] dport[2] = 12 bytes; IPv6: src[16] dst[16]
 * sport[2] dport[2] = 36 bytes; wire byte order; unhashed fields zero), passed as message
 * words in registers. A director test runs random flows through the program and compares
 * with the Rust function. No SEC() code. */
#ifndef XDPLB_SIPHASH_H
#define XDPLB_SIPHASH_H

#include <linux/types.h>

/* The message words are little-endian by definition, whatever the CPU. */
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define sip_le64(x) __builtin_bswap64(x)
#define sip_le32(x) __builtin_bswap32(x)
#else
#define sip_le64(x) (x)
#define sip_le32(x) (x)
#endif

static __always_inline __u64 sip_rotl(__u64 x, int b)
{
	return (x << b) | (x >> (64 - b));
}

#define SIPROUND(v0, v1, v2, v3)                                                           \
	do {                                                                               \
		v0 += v1;                                                                  \
		v1 = sip_rotl(v1, 13);                                                     \
		v1 ^= v0;                                                                  \
		v0 = sip_rotl(v0, 32);                                                     \
		v2 += v3;                                                                  \
		v3 = sip_rotl(v3, 16);                                                     \
		v3 ^= v2;                                                                  \
		v0 += v3;                                                                  \
		v3 = sip_rotl(v3, 21);                                                     \
		v3 ^= v0;                                                                  \
		v2 += v1;                                                                  \
		v1 = sip_rotl(v1, 17);                                                     \
		v1 ^= v2;                                                                  \
		v2 = sip_rotl(v2, 32);                                                     \
	} while (0)

/* Words in memory order: the u64 (u32) whose bytes are lo's bytes then hi's bytes, lo and hi
 * as loaded from memory. Building the message this way in registers and storing it in whole
 * words means every later load has the width of the store that wrote it: a load spanning
 * several narrower stores stalls until they retire (store forwarding fails). */
static __always_inline __u64 sip_join32(__u32 lo, __u32 hi)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	return ((__u64)lo << 32) | hi;
#else
	return ((__u64)hi << 32) | lo;
#endif
}

static __always_inline __u32 sip_join16(__u16 lo, __u16 hi)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	return ((__u32)lo << 16) | hi;
#else
	return ((__u32)hi << 16) | lo;
#endif
}

/* The flow key as message words: the IPv4 message is w[0] (src, dst) then ports (12 bytes),
 * the IPv6 one w[0..3] (src, dst) then ports (36 bytes). */
struct sip_flow_key {
	__u64 w[4];  /* IPv4: w[0] only */
	__u32 ports; /* sport, dport as in the packet */
	__u32 pad;
};

/* One compression round per full word (the "1" of 1-3). */
#define SIP_COMPRESS(v0, v1, v2, v3, m)                                                    \
	do {                                                                               \
		v3 ^= (m);                                                                 \
		SIPROUND(v0, v1, v2, v3);                                                  \
		v0 ^= (m);                                                                 \
	} while (0)

/* Finalisation: the last partial word carries the length in its top byte; three rounds. */
static __always_inline __u64 sip_finish(__u64 v0, __u64 v1, __u64 v2, __u64 v3, __u64 last)
{
	SIP_COMPRESS(v0, v1, v2, v3, last);
	v2 ^= 0xff;
	SIPROUND(v0, v1, v2, v3);
	SIPROUND(v0, v1, v2, v3);
	SIPROUND(v0, v1, v2, v3);
	return v0 ^ v1 ^ v2 ^ v3;
}

/* The IPv4 message: m0 = src, dst; tail = sport, dport (memory order, unhashed fields zero). */
static __always_inline __u64 siphash13_v4(__u64 k0, __u64 k1, __u64 m0, __u32 tail)
{
	__u64 v0 = k0 ^ 0x736f6d6570736575ULL;
	__u64 v1 = k1 ^ 0x646f72616e646f6dULL;
	__u64 v2 = k0 ^ 0x6c7967656e657261ULL;
	__u64 v3 = k1 ^ 0x7465646279746573ULL;

	SIP_COMPRESS(v0, v1, v2, v3, sip_le64(m0));
	return sip_finish(v0, v1, v2, v3, ((__u64)12 << 56) | sip_le32(tail));
}

/* The IPv6 message: m0, m1 = src; m2, m3 = dst; tail = sport, dport. */
static __always_inline __u64 siphash13_v6(__u64 k0, __u64 k1, __u64 m0, __u64 m1, __u64 m2,
					  __u64 m3, __u32 tail)
{
	__u64 v0 = k0 ^ 0x736f6d6570736575ULL;
	__u64 v1 = k1 ^ 0x646f72616e646f6dULL;
	__u64 v2 = k0 ^ 0x6c7967656e657261ULL;
	__u64 v3 = k1 ^ 0x7465646279746573ULL;

	SIP_COMPRESS(v0, v1, v2, v3, sip_le64(m0));
	SIP_COMPRESS(v0, v1, v2, v3, sip_le64(m1));
	SIP_COMPRESS(v0, v1, v2, v3, sip_le64(m2));
	SIP_COMPRESS(v0, v1, v2, v3, sip_le64(m3));
	return sip_finish(v0, v1, v2, v3, ((__u64)36 << 56) | sip_le32(tail));
}

#endif
