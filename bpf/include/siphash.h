/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* SipHash-1-3 over the director's two fixed flow-key sizes: the BPF mirror of
 * tablegen/src/hash.rs, which is the reference. Same key halves (two little-endian u64),
 * same input layout, destination first (IPv4: dst[4] dport[2] 0 0 | src[4] sport[2] = 14
 * bytes; IPv6: dst[16] | src[16] sport[2] dport[2] = 36 bytes; wire byte order; unhashed
 * fields zero), passed as message words in registers. The part before `|` is the same for
 * every packet to a VIP (and port, IPv4): hashing can start from the state after it
 * (siphash13_*_from). A director test runs random flows through the program and compares
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

/* A flow's fields as read from the packet (network byte order). */
struct sip_flow_key {
	__u64 w[4];   /* IPv6: src (w[0], w[1]), dst (w[2], w[3]), memory order */
	__u32 src4;   /* IPv4 */
	__u32 dst4;
	__u16 sport;
	__u16 dport;
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

/* The SipHash state, v0..v3. */
struct sip_state {
	__u64 v[4];
};

static __always_inline struct sip_state sip_start(__u64 k0, __u64 k1)
{
	struct sip_state st = { {
		k0 ^ 0x736f6d6570736575ULL,
		k1 ^ 0x646f72616e646f6dULL,
		k0 ^ 0x6c7967656e657261ULL,
		k1 ^ 0x7465646279746573ULL,
	} };

	return st;
}

/* The IPv4 message from the state after its destination word d0 (dst[4] dport[2] 0 0):
 * s = src[4] sport[2] in memory order (its top two bytes zero). */
static __always_inline __u64 siphash13_v4_from(struct sip_state st, __u64 s)
{
	return sip_finish(st.v[0], st.v[1], st.v[2], st.v[3], ((__u64)14 << 56) | sip_le64(s));
}

static __always_inline __u64 siphash13_v4(__u64 k0, __u64 k1, __u64 d0, __u64 s)
{
	struct sip_state st = sip_start(k0, k1);

	SIP_COMPRESS(st.v[0], st.v[1], st.v[2], st.v[3], sip_le64(d0));
	return siphash13_v4_from(st, s);
}

/* The IPv6 message from the state after its destination words: s0, s1 = src; tail = sport,
 * dport. */
static __always_inline __u64 siphash13_v6_from(struct sip_state st, __u64 s0, __u64 s1,
					       __u32 tail)
{
	SIP_COMPRESS(st.v[0], st.v[1], st.v[2], st.v[3], sip_le64(s0));
	SIP_COMPRESS(st.v[0], st.v[1], st.v[2], st.v[3], sip_le64(s1));
	return sip_finish(st.v[0], st.v[1], st.v[2], st.v[3], ((__u64)36 << 56) | sip_le32(tail));
}

static __always_inline __u64 siphash13_v6(__u64 k0, __u64 k1, __u64 d0, __u64 d1, __u64 s0,
					  __u64 s1, __u32 tail)
{
	struct sip_state st = sip_start(k0, k1);

	SIP_COMPRESS(st.v[0], st.v[1], st.v[2], st.v[3], sip_le64(d0));
	SIP_COMPRESS(st.v[0], st.v[1], st.v[2], st.v[3], sip_le64(d1));
	return siphash13_v6_from(st, s0, s1, tail);
}

#endif
