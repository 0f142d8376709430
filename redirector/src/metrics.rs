//! The redirector's `/metrics`: its metric catalogue ([`FAMILIES`]) and the render of one
//! scrape from [`crate::daemon::status`], the same reading `xdplb-redirector status --json`
//! prints (the pinned per-CPU counters summed at scrape time), so both show the same numbers
//! and counters survive daemon restarts. docs/setup/metrics.md documents each family.

use std::sync::Arc;

use daemon_support::metrics::{Def, Exposition, Kind};

use crate::config::Config;
use crate::daemon::Status;

macro_rules! defs {
    ($($id:ident = $name:literal, $kind:ident, [$($l:literal),*], $help:literal;)*) => {
        $(pub const $id: Def = Def { name: $name, kind: Kind::$kind, labels: &[$($l),*], help: $help };)*
        /// Every family the redirector exports, in exposition order.
        pub const FAMILIES: &[Def] = &[$($id),*];
    };
}

defs! {
    BUILD_INFO = "xdplb_build_info", Gauge, ["program", "version"],
        "The daemon's program and version (always 1).";
    LOADED = "xdplb_redirector_loaded", Gauge, [],
        "1 when the redirector's program is pinned, 0 when nothing is loaded.";
    ATTACHED = "xdplb_redirector_attached", Gauge, ["interface"],
        "1 when the pinned program is the one in the interface's tc ingress filter, 0 otherwise.";
    PACKETS = "xdplb_packets_total", Counter, ["program", "reason", "verdict"],
        "Packets the program decided on, by reason: local (delivered here), forward (second chance at the next hop), drop, pass (not GUE).";
    BYTES = "xdplb_bytes_total", Counter, ["program", "reason", "verdict"],
        "Bytes of the packets in xdplb_packets_total, by reason (as received, outer headers included).";
    RELOADS = "xdplb_redirector_reloads_total", Counter, ["result"],
        "Config reloads by result: applied (the start's included), rejected (invalid file), failed (applying it failed part way).";
    LAST_RELOAD = "xdplb_redirector_last_reload_success_timestamp_seconds", Gauge, [],
        "When a config was last applied, Unix seconds.";
    LAST_REJECTED = "xdplb_redirector_last_reload_rejected_timestamp_seconds", Gauge, [],
        "When a reload was last rejected or failed, Unix seconds.";
}

/// One scrape: everything `status` reads, as metric families.
pub fn render(st: &Status) -> Exposition {
    let mut e = Exposition::new();
    e.family(&BUILD_INFO)
        .sample(&["redirector", env!("CARGO_PKG_VERSION")], 1.0);
    e.family(&LOADED)
        .sample(&[], f64::from(u8::from(st.program_id.is_some())));
    let mut f = e.family(&ATTACHED);
    for i in &st.interfaces {
        f.sample(&[&i.name], f64::from(u8::from(i.current)));
    }
    let mut f = e.family(&PACKETS);
    for c in &st.counters {
        f.sample(&["redirector", c.reason, c.verdict], c.packets as f64);
    }
    let mut f = e.family(&BYTES);
    for c in &st.counters {
        f.sample(&["redirector", c.reason, c.verdict], c.bytes as f64);
    }
    let r = &st.reloads;
    e.family(&RELOADS)
        .sample(&["applied"], r.applied as f64)
        .sample(&["rejected"], r.rejected as f64)
        .sample(&["failed"], r.failed as f64);
    if let Some(t) = r.last_success {
        e.family(&LAST_RELOAD).sample(&[], t as f64);
    }
    if let Some(t) = r.last_rejected {
        e.family(&LAST_REJECTED).sample(&[], t as f64);
    }
    e
}

/// What the endpoint calls on each scrape. A status that cannot be read (netlink refused)
/// still answers, with what is known.
pub fn renderer(config: Config) -> Arc<daemon_support::metrics::http::Render> {
    Arc::new(move || match crate::daemon::status(&config) {
        Ok(st) => render(&st).encode(),
        Err(e) => {
            tracing::warn!(error = %e.chain(), "metrics: status unreadable");
            let mut x = Exposition::new();
            x.family(&BUILD_INFO)
                .sample(&["redirector", env!("CARGO_PKG_VERSION")], 1.0);
            x.encode()
        }
    })
}
