/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Protocol numbers and sizes the BPF objects use, so no object needs the kernel's internal
 * headers. No SEC() code. */
#ifndef XDPLB_CONSTS_H
#define XDPLB_CONSTS_H

#define ETH_ALEN_ 6
#define ETH_HLEN_ 14
#define ETH_P_IP_ 0x0800
#define ETH_P_IPV6_ 0x86DD
#define ETH_P_8021Q_ 0x8100

#define IPPROTO_ICMP_ 1
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define IPPROTO_ICMPV6_ 58
#define IPPROTO_FRAGMENT_ 44

#define IP_DF_ 0x4000
#define IP_MF_ 0x2000
#define IP_OFFSET_ 0x1fff

#define ICMP_DEST_UNREACH_ 3
#define ICMP_FRAG_NEEDED_ 4
#define ICMPV6_PKT_TOOBIG_ 2

#define IPV6_MIN_MTU_ 1280
#define DEFAULT_TTL_ 64

#define AF_INET_ 2
#define AF_INET6_ 10

#endif
