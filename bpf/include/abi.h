/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The kernel <-> userspace contract: every map key and value struct and every enum that both
 * sides read. The only such contract: Rust uses the types libbpf-cargo generates from BTF.
 *
 * Rules: fixed-width types, explicit padding fields, no bool, no bitfields, byte order stated
 * on every address and port field. Reason enums are append-only: a retired value is renamed
 * (RETIRED_...), never reused. */
#ifndef XDPLB_ABI_H
#define XDPLB_ABI_H

#include <linux/types.h>

/* Flow hash fields a service hashes; same bits as tablegen::hash::HashFields. */
#define XDPLB_HASH_SRC_IP 1
#define XDPLB_HASH_SRC_PORT 2
#define XDPLB_HASH_DST_IP 4
#define XDPLB_HASH_DST_PORT 8

/* ---- director (bpf/director.bpf.c) ---- */
/* ---- redirector (bpf/redirector.bpf.c) ---- */

/* Why the redirector did what it did to a packet: the index into the per-CPU `counters` array.
 * Append-only (see the rules above). userspace names them in redirector/src/counters.rs. */
enum redir_reason {
	REDIR_PASS_NOT_GUE = 0,          /* not UDP to the GUE port: left untouched */
	REDIR_ACCEPT_SYN = 1,            /* inner TCP SYN without ACK: new flows land here */
	REDIR_ACCEPT_SOCKET = 2,         /* a local socket (established/handshake) owns the flow */
	REDIR_ACCEPT_SYNCOOKIE = 3,      /* ACK carrying a valid SYN cookie of a local listener */
	REDIR_ACCEPT_ICMP = 4,           /* ICMP error about a flow that lives here */
	REDIR_ACCEPT_UDP = 5,            /* inner UDP: balanced per packet, always local */
	REDIR_ACCEPT_HOPS_EXHAUSTED = 6, /* nobody left to ask: local, so the client gets an RST */
	REDIR_ACCEPT_NEXT_HOP_SELF = 7,  /* the next hop is this host */
	REDIR_ACCEPT_NO_HOPLIST = 8,     /* GUE without private data (plain tunnel, probe) */
	REDIR_ACCEPT_OTHER = 9,          /* inner protocol without ports, or a later fragment */
	REDIR_FORWARD = 10,              /* sent on to the next hop */
	REDIR_DROP_SRC_NOT_ALLOWED = 11, /* outer source outside the director ranges */
	REDIR_DROP_BAD_OUTER = 12,       /* outer IP/UDP header truncated or inconsistent */
	REDIR_DROP_OUTER_FRAGMENT = 13,  /* fragmented GUE: cannot be parsed here */
	REDIR_DROP_BAD_GUE = 14,         /* GUE header: version, C bit, flags, proto, length */
	REDIR_DROP_BAD_HOPLIST = 15,     /* hop list: type, index, count, length, family */
	REDIR_DROP_BAD_INNER = 16,       /* inner IP/L4 header truncated or inconsistent */
	REDIR_DROP_DECAP_FAILED = 17,    /* the kernel refused to strip the outer headers */
	REDIR_DROP_NO_ROUTE = 18,        /* no usable route to the next hop */
	REDIR_DROP_TOO_BIG = 19,         /* next hop's route MTU is below the packet's size */
	REDIR_DROP_REDIRECT_FAILED = 20, /* the redirect helper failed */
	REDIR_REASON_COUNT = 21,         /* not a reason: how many this object knows */
};

/* Room in the counters array: reasons can be added without resizing the pinned map. */
#define REDIR_COUNTERS_MAX 64

/* Key of the allowed-director LPM tries (prefixlen first, as the kernel requires). */
struct redir_lpm_v4 {
	__u32 prefixlen; /* host byte order */
	__u8 addr[4];    /* network byte order */
};

struct redir_lpm_v6 {
	__u32 prefixlen; /* host byte order */
	__u8 addr[16];   /* network byte order */
};

/* Key of the self-address set: IPv4 as ::ffff:a.b.c.d, network byte order. */
struct redir_addr {
	__u8 addr[16];
};

/* Value of the one-entry `settings` array: runtime settings the daemon can change in place. */
struct redir_settings {
	__u32 self_addr_count; /* entries in self_addrs; 0 skips the lookup (the common case) */
	__u32 pad;
};

#endif
