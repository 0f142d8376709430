//! Names for the kernel's per-CPU counters, one per `enum redir_reason` in `bpf/include/abi.h`.
//!
//! The values come from the generated `redir_reason` constants; only the names live here, and
//! a test checks that every reason the object knows has one.

use crate::skel::types::{redir_limit as Limit, redir_reason as R};

/// `(reason, name, verdict)`, in reason order. Names are stable: status output and metrics use
/// them.
pub const NAMES: [(R, &str, &str); 24] = [
    (R::REDIR_PASS_NOT_GUE, "not_gue", "pass"),
    (R::REDIR_ACCEPT_SYN, "syn", "local"),
    (R::REDIR_ACCEPT_SOCKET, "socket", "local"),
    (R::REDIR_ACCEPT_SYNCOOKIE, "syncookie", "local"),
    (R::REDIR_ACCEPT_ICMP, "icmp", "local"),
    (R::REDIR_ACCEPT_UDP, "udp", "local"),
    (R::REDIR_ACCEPT_HOPS_EXHAUSTED, "hops_exhausted", "local"),
    (R::REDIR_ACCEPT_NEXT_HOP_SELF, "next_hop_self", "local"),
    (R::REDIR_ACCEPT_NO_HOPLIST, "no_hoplist", "local"),
    (R::REDIR_ACCEPT_OTHER, "other", "local"),
    (R::REDIR_FORWARD, "forward", "forward"),
    (R::REDIR_DROP_SRC_NOT_ALLOWED, "source_not_allowed", "drop"),
    (R::REDIR_DROP_BAD_OUTER, "bad_outer", "drop"),
    (R::REDIR_DROP_OUTER_FRAGMENT, "outer_fragment", "drop"),
    (R::REDIR_DROP_BAD_GUE, "bad_gue", "drop"),
    (R::REDIR_DROP_BAD_HOPLIST, "bad_hoplist", "drop"),
    (R::REDIR_DROP_BAD_INNER, "bad_inner", "drop"),
    (R::REDIR_DROP_DECAP_FAILED, "decap_failed", "drop"),
    (R::REDIR_DROP_NO_ROUTE, "no_route", "drop"),
    (R::REDIR_DROP_TOO_BIG, "too_big", "drop"),
    (R::REDIR_DROP_REDIRECT_FAILED, "redirect_failed", "drop"),
    (R::REDIR_ACCEPT_UDP_SOCKET, "udp_socket", "local"),
    (R::REDIR_ACCEPT_UDP_FRAGMENT, "udp_fragment", "local"),
    (R::REDIR_DROP_GRO_MERGED, "gro_merged", "drop"),
];

const _: () = assert!(R::REDIR_REASON_COUNT.0 <= Limit::REDIR_COUNTERS_MAX.0);

/// The name of a reason index.
pub fn name(reason: u32) -> &'static str {
    NAMES
        .get(reason as usize)
        .map_or("unknown", |(_, name, _)| name)
}

#[cfg(test)]
mod tests {
    use libbpf_rs::btf::types::Enum;
    use libbpf_rs::btf::Btf;

    use super::*;

    /// The compiled object (build.rs writes it beside the skeleton, which embeds the same).
    const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/redirector.bpf.o"));

    #[test]
    fn every_reason_has_a_name_in_order() {
        assert_eq!(NAMES.len() as u32, R::REDIR_REASON_COUNT.0);
        for (i, (r, _, _)) in NAMES.iter().enumerate() {
            assert_eq!(r.0, i as u32);
        }
    }

    /// Every reason the compiled object can count (its BTF's `enum redir_reason`) has the name
    /// and verdict here that `status` prints, at its index; and nothing here is missing from
    /// the object.
    #[test]
    fn every_reason_in_the_object_has_its_name() {
        let btf = Btf::from_raw("redirector", OBJECT)
            .expect("the object parses")
            .expect("the object has BTF");
        let reasons: Enum<'_> = btf
            .type_by_name("redir_reason")
            .expect("the object's BTF has enum redir_reason");
        let mut seen = 0;
        for m in reasons.iter() {
            let c_name = m.name.expect("named").to_str().unwrap().to_string();
            let value = usize::try_from(m.value).unwrap();
            if c_name == "REDIR_REASON_COUNT" {
                assert_eq!(
                    value,
                    NAMES.len(),
                    "a reason without a name (or one too many)"
                );
                continue;
            }
            let (r, name, verdict) = NAMES
                .get(value)
                .unwrap_or_else(|| panic!("{c_name} = {value} has no name in NAMES"));
            assert_eq!(r.0 as usize, value, "{c_name}");
            assert_eq!(super::name(value as u32), *name);
            // The enum says what happened to the packet; the verdict printed must agree.
            let want = match c_name.strip_prefix("REDIR_").unwrap() {
                v if v.starts_with("PASS_") => "pass",
                v if v.starts_with("ACCEPT_") => "local",
                v if v.starts_with("DROP_") => "drop",
                "FORWARD" => "forward",
                other => panic!("{other}: a reason of a kind status cannot print"),
            };
            assert_eq!(*verdict, want, "{c_name}");
            seen += 1;
        }
        assert_eq!(seen, NAMES.len());
    }
}
