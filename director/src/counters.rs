//! Names of the director's counters: `enum director_reason` in bpf/include/abi.h, by index.
//! Append-only, like the enum: a retired reason keeps its slot under a RETIRED_ name.

/// (name, verdict, why) per reason index.
pub const REASONS: &[(&str, &str, &str)] = &[
    (
        "not_vip",
        "pass",
        "not a bound service: host traffic, the one total",
    ),
    (
        "unparsed",
        "pass",
        "L2/L3 header truncated or invalid: the kernel decides",
    ),
    (
        "port_not_bound",
        "pass",
        "a VIP, but no bind covers this protocol and port",
    ),
    (
        "fragment",
        "pass",
        "a later fragment to a VIP: it carries no ports",
    ),
    (
        "icmp",
        "pass",
        "ICMP to a VIP other than frag-needed/packet-too-big of a bound flow",
    ),
    (
        "ipv6_ext",
        "pass",
        "IPv6 extension headers to a VIP not walked: more than 4, or cut off",
    ),
    (
        "l4_truncated",
        "drop",
        "bound VIP and protocol, but the L4 header is cut off",
    ),
    (
        "no_backend",
        "drop",
        "bound, but the service has no table or no eligible backend",
    ),
    (
        "no_source",
        "drop",
        "no encap source address for the backends' address family",
    ),
    (
        "no_route",
        "drop",
        "the kernel has no usable route to the backend",
    ),
    (
        "no_neigh",
        "pass",
        "encapsulated; the kernel resolves the next hop's neighbour and sends it",
    ),
    (
        "too_big",
        "tx",
        "answered with frag-needed / packet-too-big (PMTU discovery)",
    ),
    (
        "too_big_fragment",
        "pass",
        "too big, no DF: encapsulated without DF, the kernel fragments",
    ),
    (
        "encap_failed",
        "drop",
        "the kernel refused to grow or trim the frame",
    ),
    (
        "fwd_disabled",
        "drop",
        "forwarding is off on the ingress interface (fib lookup refused)",
    ),
    (
        "redirect_failed",
        "drop",
        "bpf_redirect refused the egress interface",
    ),
];

pub const NOT_VIP: usize = 0;
pub const UNPARSED: usize = 1;
pub const PORT_NOT_BOUND: usize = 2;
pub const FRAGMENT: usize = 3;
pub const ICMP: usize = 4;
pub const IPV6_EXT: usize = 5;
pub const L4_TRUNCATED: usize = 6;
pub const NO_BACKEND: usize = 7;
pub const NO_SOURCE: usize = 8;
pub const NO_ROUTE: usize = 9;
pub const NO_NEIGH: usize = 10;
pub const TOO_BIG: usize = 11;
pub const TOO_BIG_FRAGMENT: usize = 12;
pub const ENCAP_FAILED: usize = 13;
pub const FWD_DISABLED: usize = 14;
pub const REDIRECT_FAILED: usize = 15;
