/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The kernel <-> userspace contract: every map key and value struct and every enum that both
 * sides read. The only such contract: Rust uses the types libbpf-cargo generates from BTF,
 * never a copy of a number from here.
 *
 * Rules: fixed-width types, explicit padding fields, no bool, no bitfields, byte order stated
 * on every address and port field. Numbers userspace needs are enum constants, not #defines:
 * an enum reaches BTF (and so the generated Rust) when the object names it, so each program
 * has a .rodata global of each of its enums (director_maps.h, redirector_maps.h). Reason
 * enums are append-only: a retired value is renamed (RETIRED_...), never reused. */
#ifndef XDPLB_ABI_H
#define XDPLB_ABI_H

#include <linux/types.h>

/* Flow hash fields a service hashes; same bits as tablegen::hash::HashFields (a director
 * test holds them equal). */
enum xdplb_hash_field {
	XDPLB_HASH_SRC_IP = 1,
	XDPLB_HASH_SRC_PORT = 2,
	XDPLB_HASH_DST_IP = 4,
	XDPLB_HASH_DST_PORT = 8,
	XDPLB_HASH_ALL = 15, /* the default: all four */
};

/* ---- director (bpf/director.bpf.c) ---- */

/* Sizes of the director's pinned maps and their values: fixed at first load, so generous.
 * Changing one changes the map ABI (a new map name). */
enum director_limit {
	DIRECTOR_MAX_SERVICES = 256,   /* director_tables slots = stats_service_retired entries */
	DIRECTOR_MAX_BINDS = 4096,     /* stats_bind entries */
	DIRECTOR_MAX_VIPS = 4096,      /* director_vips entries: (VIP, protocol) pairs */
	DIRECTOR_VIP_RANGES = 16,      /* binds per (VIP, protocol); the daemon refuses more */
	DIRECTOR_COUNTERS_MAX = 64,    /* stats_reason entries: room to append reasons */
	DIRECTOR_MAX_BACKENDS = 16384, /* director_nexthops entries (distinct backend addresses) */
	DIRECTOR_VIP_FILTER_BITS = 4096, /* bits of director_vip_filter (below) */
	DIRECTOR_VIP_SLOTS = 4096,     /* slots of the bind index (below) */
	DIRECTOR_HASH_STATES = 16384,  /* director_hash_states entries (below) */
	DIRECTOR_FIXED_ROWS = 65536,   /* rows of a table in director_tables_fixed (below) */
};

/* Why the director did not forward a packet: the index into the per-CPU `stats_reason` array.
 * Append-only (see the rules above); userspace names them in director/src/counters.rs, and a
 * test there holds every value of this enum, as the object's BTF has it, to a name. */
enum director_reason {
	DIRECTOR_PASS_NOT_VIP = 0,         /* not a bound service: the one total for host traffic */
	DIRECTOR_PASS_UNPARSED = 1,        /* L3 header truncated or invalid: the kernel decides */
	DIRECTOR_PASS_PORT_NOT_BOUND = 2,  /* a VIP, but no bind covers this protocol and port */
	DIRECTOR_PASS_FRAGMENT = 3,        /* a later fragment to a VIP: carries no ports */
	DIRECTOR_PASS_ICMP = 4,            /* other ICMP to a VIP: the kernel decides */
	DIRECTOR_PASS_IPV6_EXT = 5,        /* IPv6 extension headers to a VIP, not walked (too many, cut off) */
	DIRECTOR_DROP_L4_TRUNCATED = 6,    /* bound (VIP, protocol) but no full L4 ports/length */
	DIRECTOR_DROP_NO_BACKEND = 7,      /* bound, but no table or no eligible backend */
	DIRECTOR_DROP_NO_SOURCE = 8,       /* no outer source address for the backends' family */
	DIRECTOR_DROP_NO_ROUTE = 9,        /* the kernel has no usable route to the backend */
	DIRECTOR_PASS_NO_NEIGH = 10,       /* encapsulated; the kernel resolves the neighbour */
	DIRECTOR_TX_TOO_BIG = 11,          /* answered with frag-needed / packet-too-big */
	DIRECTOR_PASS_TOO_BIG_FRAGMENT = 12, /* encapsulated without DF; the kernel fragments */
	DIRECTOR_DROP_ENCAP_FAILED = 13,   /* the kernel refused to grow or trim the frame */
	DIRECTOR_DROP_FWD_DISABLED = 14,   /* forwarding is off on the ingress interface */
	DIRECTOR_DROP_REDIRECT_FAILED = 15, /* bpf_redirect refused the egress interface */
	DIRECTOR_PASS_COLOCATED_DIRECT = 16, /* co-located, primary here: SYN or a local socket, to the stack as is */
	DIRECTOR_PASS_COLOCATED_SELF = 17, /* co-located, primary here, no socket: GUE to this host's redirector */
	DIRECTOR_REASON_COUNT = 18,        /* not a reason: how many this object knows */
};

/* Per-CPU packet and byte counts (stats_reason, stats_bind, stats_service_retired). */
struct director_counter {
	__u64 packets;
	__u64 bytes; /* frame length as received */
};

/* Runtime settings: the single entry of `director_config`, written by the daemon. */
struct director_config {
	__u8 src6[16];   /* outer source for IPv6 backends, network order; all zero = none */
	__be32 src4;     /* outer source for IPv4 backends, network order; 0 = none */
	__be16 gue_port; /* outer UDP destination port, network order */
	__u8 colocated;  /* 1: this host is also a backend, whose addresses are src4 / src6
			  * (director_colocated.h); 0: a dedicated director (was padding) */
	__u8 pad;
	__u32 nexthop_ttl_ms; /* how long a next hop from bpf_fib_lookup is reused; 0 = never */
	__u32 generation;     /* bumped by the daemon: every cached next hop becomes stale */
};

/* Key of `director_vips`: one entry per (VIP, protocol). Protocol 0 marks "this address is a
 * VIP" for the slow paths (ICMP, fragments, extension headers) that have no port to match. */
struct director_vip_key {
	__u8 addr[16]; /* network order; IPv4 as ::ffff:a.b.c.d */
	__u8 proto;    /* IPPROTO_TCP, IPPROTO_UDP, or 0 */
	__u8 pad[3];
};

/* One bind of a (VIP, protocol): destination ports first..=last (all ports: 0..=65535). */
struct director_port_range {
	__u16 first;   /* host order */
	__u16 last;    /* host order, inclusive */
	__u16 service; /* slot in director_tables and stats_service_retired */
	__u16 bind;    /* index in stats_bind */
};

/* Value of `director_vips`: the binds of one (VIP, protocol), narrowest range first, so a
 * single port wins over a range that contains it. */
struct director_vip {
	__u32 count; /* used entries of ranges */
	__u32 pad;
	struct director_port_range ranges[DIRECTOR_VIP_RANGES];
};

/* Value of the one-entry `director_vip_filter`: a superset of the VIP addresses as a bit set,
 * so traffic to other addresses leaves after one array read instead of a hash lookup. The bit
 * of an address (IPv4 as ::ffff:a.b.c.d): xor its four 32-bit words (native order), multiply
 * by 0x9e3779b1 mod 2^32, keep the top 12 bits. The daemon sets a VIP's bit before adding the
 * VIP and clears it only after removing it. enabled 0 (a fresh map) = no filter. */
struct director_vip_filter {
	__u32 enabled;
	__u32 pad;
	__u64 bits[DIRECTOR_VIP_FILTER_BITS / 64];
};

/* The bind index: what TCP/UDP packets to a VIP read instead of the `director_vips` hash map
 * (an array lookup the verifier inlines, against a hash map lookup: ~15 ns less per packet).
 * An inner map of the one-slot `director_vip_index`, rebuilt whole and swapped on every bind
 * change, so a packet sees one version. The slot of a (VIP, protocol): xor the address's four
 * 32-bit words (native order), add the protocol, multiply by 0x9e3779b1 mod 2^32, keep the top
 * 12 bits. When several pairs share a slot, the smallest (address, protocol) gets it and
 * `overflow` sends the others to `director_vips`, which always holds every pair. */
struct director_vip_slot {
	__u8 addr[16]; /* network order; IPv4 as ::ffff:a.b.c.d */
	__u8 proto;    /* IPPROTO_TCP or IPPROTO_UDP; 0 = empty */
	__u8 overflow; /* other pairs with this slot: look them up in director_vips */
	__u8 pad[6];
	struct director_vip vip;
};

/* Entry 0 of a service's table (inner map of `director_tables`): everything a packet needs
 * besides its row, in the same map as the rows so one lookup sees one consistent version. */
struct director_table_hdr {
	__u64 hash_k0;   /* SipHash key: hash_key[0..8] as a little-endian u64 */
	__u64 hash_k1;   /* hash_key[8..16] as a little-endian u64 */
	__u64 version;   /* tablegen Table.version */
	__u64 checksum;  /* tablegen Table.checksum */
	__u32 rows_mask; /* rows - 1 (rows is a power of two) */
	__u8 width;      /* backends per row, 1..=GUE_MAX_HOPS; 0 = no eligible backend */
	__u8 fields;     /* XDPLB_HASH_* */
	__u8 family;     /* backends' address family: 4 or 6 */
	__u8 gue_flags;  /* DIRECTOR_GUE_* */
	__u32 service;   /* slot in director_tables (a check for tests and status) */
	__u32 pad2;
};

/* director_table_hdr.gue_flags. UDP_SECOND_CHANCE: the service's UDP packets carry the hop
 * list flag GUE_HOPS_F_UDP (gue.h) and end their list with the primary again
 * (docs/development/second-chance.md). */
enum director_gue_flag {
	DIRECTOR_GUE_UDP_SECOND_CHANCE = 1,
};

/* Value of `director_hash_states`: the flow hash of a VIP (and port, IPv4) already started.
 * Every packet to a VIP hashes the same destination words first (siphash.h: IPv4 dst[4]
 * dport[2] 0 0, IPv6 dst[16]), so the daemon keeps SipHash's state after them, with the key
 * and fields it was made with: the packet hashes only its source part (IPv4: 4 SipHash rounds
 * instead of 5; IPv6: 6 instead of 8), and it reads the key as soon as it has its destination
 * instead of waiting for the bind match and the table.
 *
 * Index: IPv4 ((dst ^ dport * 0x10001) * 0x9e3779b1) >> 18, IPv6 ((xor of dst's four 32-bit
 * words) * 0x9e3779b1) >> 18 (addresses and port as read from the packet, native order).
 * IPv4 entries exist for single-port binds only. Pairs that share an index: the smallest gets
 * it; the others hash from the start.
 *
 * Trust: the table's own header decides the key; a state is used only if its key and fields
 * are the header's and `check` matches: the xor of v[0..3], hash_k0, hash_k1, fields | family
 * << 8 and the packet's own (masked) destination words as SipHash reads them. The daemon
 * rewrites entries in place, so a packet may read a half-written one, a stale one or one made
 * for another destination: the check then fails and the packet hashes from the start with the
 * header's key. */
struct director_hash_state {
	__u64 hash_k0; /* as director_table_hdr */
	__u64 hash_k1;
	__u8 fields;
	__u8 family;   /* 4 or 6; 0 = empty */
	__u8 pad[6];
	__u64 v[4];    /* SipHash-1-3 state after the destination words */
	__u64 check;
};

/* Tables of exactly DIRECTOR_FIXED_ROWS rows (2^16, tablegen's default) live in inner maps of
 * that one size, 1 + DIRECTOR_FIXED_ROWS entries, in `director_tables_fixed`: no
 * BPF_F_INNER_MAP, so the verifier inlines both lookups a packet makes in them (~2 ns). Other
 * sizes (2^8..2^20 rows) live in `director_tables`, sized to fit, at the price of two helper
 * calls per packet: padding a small table to 2^16 rows would cost 4.7 MB. A service is in one
 * of the two; the program asks `director_tables_fixed` first.
 *
 * Entries 1..=rows: the backends of row r at entry 1 + r, primary first. */
struct director_row {
	__u8 hops[4][16]; /* GUE_MAX_HOPS addresses, network order; IPv4 in the first 4 bytes */
	__u32 primary_nh; /* the primary's slot in director_nexthops */
	__u32 pad;
};

/* A next hop from bpf_fib_lookup, reused per CPU until it expires or the generation moves
 * on (value of the per-CPU array `director_nexthops`, indexed by backend). */
struct director_nexthop {
	__u8 addr[16];    /* the backend it is for, as in the row: a reused slot never misleads */
	__u64 expires;    /* bpf_jiffies64() deadline */
	__u32 generation; /* director_config.generation when filled */
	__u32 ingress;    /* ingress ifindex the lookup was made for */
	__u32 ifindex;    /* egress */
	__u16 mtu;        /* a frame of this outer IP length is known to fit */
	__u8 dmac[6];
	__u8 smac[6];
	__u8 pad[6];
};

/* The inner maps' value: entry 0 is a header, the rest are rows. */
union director_slot {
	struct director_table_hdr hdr;
	struct director_row row;
};

/* ---- redirector (bpf/redirector.bpf.c) ---- */

/* Why the redirector did what it did to a packet: the index into the per-CPU `counters` and
 * `counter_bytes` arrays.
 * Append-only (see the rules above). Userspace names them in redirector/src/counters.rs, and a
 * test there holds every value of this enum, as the object's BTF has it, to a name. */
enum redir_reason {
	REDIR_PASS_NOT_GUE = 0,          /* not UDP to the GUE port: left untouched */
	REDIR_ACCEPT_SYN = 1,            /* inner TCP SYN without ACK: new flows land here */
	REDIR_ACCEPT_SOCKET = 2,         /* a local socket (established/handshake) owns the flow */
	REDIR_ACCEPT_SYNCOOKIE = 3,      /* ACK carrying a valid SYN cookie of a local listener */
	REDIR_ACCEPT_ICMP = 4,           /* ICMP error about a flow that lives here */
	REDIR_ACCEPT_UDP = 5,            /* inner UDP without second chance: always local */
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
	REDIR_ACCEPT_UDP_SOCKET = 21,    /* UDP second chance: a connected socket owns the flow */
	REDIR_ACCEPT_UDP_FRAGMENT = 22,  /* UDP second chance: a first fragment stays with the rest */
	REDIR_DROP_GRO_MERGED = 23,      /* GRO merged several GUE datagrams into one skb */
	REDIR_REASON_COUNT = 24,         /* not a reason: how many this object knows */
};

/* Sizes of the redirector's pinned maps. */
enum redir_limit {
	REDIR_COUNTERS_MAX = 64,      /* counters, counter_bytes entries: reasons can be appended without resizing */
	REDIR_MAX_ALLOWED = 1024,     /* allowed_v4 / allowed_v6 entries (per family) */
	REDIR_MAX_SELF_ADDRS = 256,   /* self_addrs entries */
	REDIR_NEXTHOP_SLOTS = 256,    /* nexthops entries per CPU: a hop address hashes to one */
};

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
	__u32 generation;      /* bumped by the daemon: every cached next hop becomes stale (was
				* padding, always 0: a map pinned by an older daemon reads as 0) */
};

/* A next hop from bpf_fib_lookup, reused per CPU until it expires (the load-time
 * nexthop_ttl_ms) or the generation in `settings` moves on: value of the per-CPU array
 * `nexthops`, whose slot is a hash of the hop address. The layout and the rules of
 * director_nexthop. */
struct redir_nexthop {
	__u8 addr[16];    /* the hop it is for (IPv4 as ::ffff:a.b.c.d): a shared slot never misleads */
	__u64 expires;    /* bpf_jiffies64() deadline */
	__u32 generation; /* redir_settings.generation when filled */
	__u32 ingress;    /* ingress ifindex the lookup was made for */
	__u32 ifindex;    /* egress */
	__u16 mtu;        /* an outer packet of this IP length is known to fit */
	__u8 dmac[6];
	__u8 smac[6];
	__u8 pad[6];
};

#endif
