//! Names for the kernel's per-CPU counters, one per `enum redir_reason` in `bpf/include/abi.h`.
//!
//! The values come from the generated `redir_reason` constants; only the names live here, and
//! a test checks that every reason the object knows has one.

use crate::skel::types::redir_reason as R;

/// `(reason, name, verdict)`, in reason order. Names are stable: status output and metrics use
/// them.
pub const NAMES: [(R, &str, &str); 21] = [
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
];

/// The name of a reason index.
pub fn name(reason: u32) -> &'static str {
    NAMES
        .get(reason as usize)
        .map_or("unknown", |(_, name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_name_in_order() {
        assert_eq!(NAMES.len() as u32, R::REDIR_REASON_COUNT.0);
        for (i, (r, _, _)) in NAMES.iter().enumerate() {
            assert_eq!(r.0, i as u32);
        }
        assert!(
            (R::REDIR_REASON_COUNT.0 as usize) <= 64,
            "REDIR_COUNTERS_MAX"
        );
    }
}
