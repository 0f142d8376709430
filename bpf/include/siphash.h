/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* SipHash-1-3 over the director's two fixed flow-key sizes: the BPF mirror of
 * tablegen/src/hash.rs, which is the reference. Same key halves (two little-endian u64),
 * same input layout (IPv4: src[4] dst[4] sport[2] dport[2] = 12 bytes; IPv6: src[16] dst[16]
 * sport[2] dport[2] = 36 bytes; wire byte order; unhashed fields zero). A director test runs
 * random flows through the program and compares with the Rust function. No SEC() code. */
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

/* The flow key, 8-byte aligned so the message words load directly. */
struct sip_flow_key {
	union {
		struct {
			__be32 src;
			__be32 dst;
			__be16 sport;
			__be16 dport;
			__u32 pad; /* not hashed: the 12-byte key ends before it */
		} v4;
		struct {
			__u8 src[16];
			__u8 dst[16];
			__be16 sport;
			__be16 dport;
			__u32 pad; /* not hashed */
		} v6;
		__u64 w[5];
	};
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

/* The 4 bytes after the last full word, as a little-endian number. */
static __always_inline __u64 sip_tail4(const void *p)
{
	__u32 x;

	__builtin_memcpy(&x, p, 4);
	return (__u64)sip_le32(x);
}

/* hashed = 12 (IPv4) or 36 (IPv6) bytes of k. */
static __always_inline __u64 siphash13_flow(__u64 k0, __u64 k1, const struct sip_flow_key *k,
					    int is_v6)
{
	__u64 v0 = k0 ^ 0x736f6d6570736575ULL;
	__u64 v1 = k1 ^ 0x646f72616e646f6dULL;
	__u64 v2 = k0 ^ 0x6c7967656e657261ULL;
	__u64 v3 = k1 ^ 0x7465646279746573ULL;

	SIP_COMPRESS(v0, v1, v2, v3, sip_le64(k->w[0]));
	if (!is_v6)
		return sip_finish(v0, v1, v2, v3,
				  ((__u64)12 << 56) | sip_tail4(&k->w[1]));
	SIP_COMPRESS(v0, v1, v2, v3, sip_le64(k->w[1]));
	SIP_COMPRESS(v0, v1, v2, v3, sip_le64(k->w[2]));
	SIP_COMPRESS(v0, v1, v2, v3, sip_le64(k->w[3]));
	return sip_finish(v0, v1, v2, v3, ((__u64)36 << 56) | sip_tail4(&k->w[4]));
}

#endif
