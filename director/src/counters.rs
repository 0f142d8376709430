//! Names of the director's counters: `enum director_reason` in bpf/include/abi.h, from the
//! generated type. Append-only, like the enum: a retired reason keeps its slot under a RETIRED_
//! name. A test holds every reason in the object's BTF to a name here.

use crate::bpf::types::{director_limit as Limit, director_reason as R};

/// (reason, name, verdict, why) in reason order. Names are stable: `status` prints them.
pub const REASONS: &[(R, &str, &str, &str)] = &[
    (
        R::DIRECTOR_PASS_NOT_VIP,
        "not_vip",
        "pass",
        "not a bound service: host traffic, the one total",
    ),
    (
        R::DIRECTOR_PASS_UNPARSED,
        "unparsed",
        "pass",
        "L2/L3 header truncated or invalid: the kernel decides",
    ),
    (
        R::DIRECTOR_PASS_PORT_NOT_BOUND,
        "port_not_bound",
        "pass",
        "a VIP, but no bind covers this protocol and port",
    ),
    (
        R::DIRECTOR_PASS_FRAGMENT,
        "fragment",
        "pass",
        "a later fragment to a VIP: it carries no ports",
    ),
    (
        R::DIRECTOR_PASS_ICMP,
        "icmp",
        "pass",
        "ICMP to a VIP other than frag-needed/packet-too-big of a bound flow",
    ),
    (
        R::DIRECTOR_PASS_IPV6_EXT,
        "ipv6_ext",
        "pass",
        "IPv6 extension headers to a VIP not walked: more than 4, or cut off",
    ),
    (
        R::DIRECTOR_DROP_L4_TRUNCATED,
        "l4_truncated",
        "drop",
        "bound VIP and protocol, but the L4 header is cut off",
    ),
    (
        R::DIRECTOR_DROP_NO_BACKEND,
        "no_backend",
        "drop",
        "bound, but the service has no table or no eligible backend",
    ),
    (
        R::DIRECTOR_DROP_NO_SOURCE,
        "no_source",
        "drop",
        "no encap source address for the backends' address family",
    ),
    (
        R::DIRECTOR_DROP_NO_ROUTE,
        "no_route",
        "drop",
        "the kernel has no usable route to the backend",
    ),
    (
        R::DIRECTOR_PASS_NO_NEIGH,
        "no_neigh",
        "pass",
        "encapsulated; the kernel resolves the next hop's neighbour and sends it",
    ),
    (
        R::DIRECTOR_TX_TOO_BIG,
        "too_big",
        "tx",
        "answered with frag-needed / packet-too-big (PMTU discovery)",
    ),
    (
        R::DIRECTOR_PASS_TOO_BIG_FRAGMENT,
        "too_big_fragment",
        "pass",
        "too big, no DF: encapsulated without DF, the kernel fragments",
    ),
    (
        R::DIRECTOR_DROP_ENCAP_FAILED,
        "encap_failed",
        "drop",
        "the kernel refused to grow or trim the frame",
    ),
    (
        R::DIRECTOR_DROP_FWD_DISABLED,
        "fwd_disabled",
        "drop",
        "forwarding is off on the ingress interface (fib lookup refused)",
    ),
    (
        R::DIRECTOR_DROP_REDIRECT_FAILED,
        "redirect_failed",
        "drop",
        "bpf_redirect refused the egress interface",
    ),
    (
        R::DIRECTOR_PASS_COLOCATED_DIRECT,
        "colocated_direct",
        "pass",
        "co-located, primary on this host: a SYN or a local socket's segment, to the stack as is",
    ),
    (
        R::DIRECTOR_PASS_COLOCATED_SELF,
        "colocated_self",
        "pass",
        "co-located, primary on this host: encapsulated to it, for its redirector to decide",
    ),
];

const _: () = assert!(REASONS.len() <= Limit::DIRECTOR_COUNTERS_MAX.0 as usize);

/// The index of a reason in `stats_reason` and in [`crate::datapath::Counters::reasons`].
pub const fn index(r: R) -> usize {
    r.0 as usize
}

pub const NOT_VIP: usize = index(R::DIRECTOR_PASS_NOT_VIP);
pub const UNPARSED: usize = index(R::DIRECTOR_PASS_UNPARSED);
pub const PORT_NOT_BOUND: usize = index(R::DIRECTOR_PASS_PORT_NOT_BOUND);
pub const FRAGMENT: usize = index(R::DIRECTOR_PASS_FRAGMENT);
pub const ICMP: usize = index(R::DIRECTOR_PASS_ICMP);
pub const IPV6_EXT: usize = index(R::DIRECTOR_PASS_IPV6_EXT);
pub const L4_TRUNCATED: usize = index(R::DIRECTOR_DROP_L4_TRUNCATED);
pub const NO_BACKEND: usize = index(R::DIRECTOR_DROP_NO_BACKEND);
pub const NO_SOURCE: usize = index(R::DIRECTOR_DROP_NO_SOURCE);
pub const NO_ROUTE: usize = index(R::DIRECTOR_DROP_NO_ROUTE);
pub const NO_NEIGH: usize = index(R::DIRECTOR_PASS_NO_NEIGH);
pub const TOO_BIG: usize = index(R::DIRECTOR_TX_TOO_BIG);
pub const TOO_BIG_FRAGMENT: usize = index(R::DIRECTOR_PASS_TOO_BIG_FRAGMENT);
pub const ENCAP_FAILED: usize = index(R::DIRECTOR_DROP_ENCAP_FAILED);
pub const FWD_DISABLED: usize = index(R::DIRECTOR_DROP_FWD_DISABLED);
pub const REDIRECT_FAILED: usize = index(R::DIRECTOR_DROP_REDIRECT_FAILED);
pub const COLOCATED_DIRECT: usize = index(R::DIRECTOR_PASS_COLOCATED_DIRECT);
pub const COLOCATED_SELF: usize = index(R::DIRECTOR_PASS_COLOCATED_SELF);

#[cfg(test)]
mod tests {
    use libbpf_rs::btf::types::Enum;
    use libbpf_rs::btf::Btf;

    use super::*;

    /// Every reason the compiled object can count (its BTF's `enum director_reason`, the object
    /// the daemon loads) has the name and verdict here that `status` prints, at its index; and
    /// nothing here is missing from the object.
    #[test]
    fn every_reason_in_the_object_has_its_name() {
        let btf = Btf::from_raw("director", crate::datapath::OBJECT)
            .expect("the object parses")
            .expect("the object has BTF");
        let reasons: Enum<'_> = btf
            .type_by_name("director_reason")
            .expect("the object's BTF has enum director_reason");
        let mut seen = 0;
        for m in reasons.iter() {
            let c_name = m.name.expect("named").to_str().unwrap().to_string();
            let value = usize::try_from(m.value).unwrap();
            if c_name == "DIRECTOR_REASON_COUNT" {
                assert_eq!(
                    value,
                    REASONS.len(),
                    "a reason without a name (or one too many)"
                );
                continue;
            }
            let rest = c_name.strip_prefix("DIRECTOR_").unwrap();
            let (verdict, name) = rest.split_once('_').unwrap();
            let (r, our_name, our_verdict, _) = REASONS
                .get(value)
                .unwrap_or_else(|| panic!("{c_name} = {value} has no name in REASONS"));
            assert_eq!(index(*r), value, "{c_name}");
            assert_eq!(*our_name, name.to_lowercase(), "{c_name}");
            assert_eq!(*our_verdict, verdict.to_lowercase(), "{c_name}");
            seen += 1;
        }
        assert_eq!(seen, REASONS.len());
    }

    /// The hash field bits of abi.h are tablegen's.
    #[test]
    fn hash_fields_are_tablegen_s() {
        use crate::bpf::types::xdplb_hash_field as F;
        use tablegen::hash::HashFields;
        assert_eq!(F::XDPLB_HASH_SRC_IP.0, u32::from(HashFields::SRC_IP));
        assert_eq!(F::XDPLB_HASH_SRC_PORT.0, u32::from(HashFields::SRC_PORT));
        assert_eq!(F::XDPLB_HASH_DST_IP.0, u32::from(HashFields::DST_IP));
        assert_eq!(F::XDPLB_HASH_DST_PORT.0, u32::from(HashFields::DST_PORT));
        assert_eq!(F::XDPLB_HASH_ALL.0, u32::from(HashFields::ALL.0));
    }
}
