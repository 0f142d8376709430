//! The director's `/metrics`: its metric catalogue ([`FAMILIES`]) and the render of one scrape
//! from [`crate::status::gather`], the same reading `xdplb-director status --json` prints (the
//! pinned maps summed over CPUs at scrape time, and the state file), so both always show the
//! same numbers and counters survive daemon restarts. docs/setup/metrics.md documents each
//! family; a test holds that page and the Grafana dashboard to [`FAMILIES`].

use std::sync::Arc;

use daemon_support::metrics::{Def, Exposition, Kind};

use crate::config::DirectorConfig;
use crate::status::Status;

macro_rules! defs {
    ($($id:ident = $name:literal, $kind:ident, [$($l:literal),*], $help:literal;)*) => {
        $(pub const $id: Def = Def { name: $name, kind: Kind::$kind, labels: &[$($l),*], help: $help };)*
        /// Every family the director exports, in exposition order.
        pub const FAMILIES: &[Def] = &[$($id),*];
    };
}

defs! {
    BUILD_INFO = "xdplb_build_info", Gauge, ["program", "version"],
        "The daemon's program and version (always 1).";
    LOADED = "xdplb_director_loaded", Gauge, [],
        "1 when the director's program and maps are pinned, 0 when nothing is loaded.";
    INTERFACE_INFO = "xdplb_director_interface_info", Gauge, ["interface", "mode"],
        "An interface the XDP program is attached to, and how (always 1).";
    PACKETS = "xdplb_packets_total", Counter, ["program", "reason", "verdict"],
        "Packets the program did not forward to a backend, by reason (pass, drop or tx).";
    BYTES = "xdplb_bytes_total", Counter, ["program", "reason", "verdict"],
        "Bytes of the packets in xdplb_packets_total, by reason.";
    SERVICE_PACKETS = "xdplb_director_service_packets_total", Counter, ["service"],
        "Packets a service's binds matched, over the life of its pins.";
    SERVICE_BYTES = "xdplb_director_service_bytes_total", Counter, ["service"],
        "Bytes of the packets in xdplb_director_service_packets_total.";
    BIND_PACKETS = "xdplb_director_bind_packets_total", Counter, ["service", "bind"],
        "Packets one bind (VIP, protocol, ports) matched.";
    BIND_BYTES = "xdplb_director_bind_bytes_total", Counter, ["service", "bind"],
        "Bytes of the packets in xdplb_director_bind_packets_total.";
    TABLE_INFO = "xdplb_director_table_info", Gauge, ["service", "version", "checksum"],
        "The table the kernel holds for a service: its version and checksum, hex (always 1).";
    TABLE_LIVE = "xdplb_director_table_live", Gauge, ["service"],
        "1 when the kernel holds a table for the service, 0 when it does not (it drops).";
    TABLE_ROWS = "xdplb_director_table_rows", Gauge, ["service"],
        "Rows of a service's installed table.";
    TABLE_BACKENDS = "xdplb_director_table_backends", Gauge, ["service"],
        "Backends of a service's installed table.";
    RELOADS = "xdplb_director_reloads_total", Counter, ["result"],
        "Table reloads by result: applied, rejected (invalid source, refused version), failed (the kernel refused).";
    LAST_RELOAD = "xdplb_director_last_reload_success_timestamp_seconds", Gauge, [],
        "When tables were last installed, Unix seconds.";
    LAST_REJECTED = "xdplb_director_last_reload_rejected_timestamp_seconds", Gauge, [],
        "When a reload was last rejected or failed, Unix seconds.";
    CLUSTER_CONNECTED = "xdplb_director_cluster_connected", Gauge, [],
        "Consul source: 1 when the last request to Consul got an answer.";
    CLUSTER_CURRENT = "xdplb_director_cluster_current_version", Gauge, [],
        "Consul source: the version Consul says is current.";
    CLUSTER_APPLIED = "xdplb_director_cluster_applied_version", Gauge, [],
        "Consul source: the version this director serves.";
    CLUSTER_REFUSED = "xdplb_director_cluster_refused_version", Gauge, [],
        "Consul source: the newest version refused and not yet superseded, 0 when none.";
    CLUSTER_REFUSALS = "xdplb_director_cluster_refusals_total", Counter, [],
        "Consul source: versions this director refused (checksum not reproduced, unreadable, not installable).";
    CLUSTER_LAST_CONTACT = "xdplb_director_cluster_last_contact_timestamp_seconds", Gauge, [],
        "Consul source: when Consul last answered, Unix seconds.";
    BACKEND_HEALTHY = "xdplb_director_backend_healthy", Gauge, ["service", "backend"],
        "Health-checked services: 1 when the backend passes its checks, 0 when it fails them.";
    BACKEND_TRANSITIONS = "xdplb_director_backend_health_transitions_total", Counter, ["service", "backend"],
        "Health-checked services: times the backend changed between healthy and unhealthy.";
    BACKEND_DEMOTED = "xdplb_director_backend_demoted", Gauge, ["service", "backend"],
        "Health-checked services: 1 when the installed table demotes the backend (as if draining).";
    FAIL_OPEN = "xdplb_director_service_fail_open", Gauge, ["service"],
        "Health-checked services: 1 when too few backends are healthy and health is ignored.";
}

/// One scrape: everything `status` reads, as metric families.
pub fn render(st: &Status) -> Exposition {
    let mut e = Exposition::new();
    e.family(&BUILD_INFO)
        .sample(&["director", env!("CARGO_PKG_VERSION")], 1.0);
    e.family(&LOADED)
        .sample(&[], f64::from(u8::from(st.loaded)));
    {
        let mut f = e.family(&INTERFACE_INFO);
        for i in &st.interfaces {
            f.sample(&[&i.name, &i.mode], 1.0);
        }
    }
    if st.loaded {
        let mut f = e.family(&PACKETS);
        for r in &st.reasons {
            f.sample(&["director", r.reason, r.verdict], r.packets as f64);
        }
        let mut f = e.family(&BYTES);
        for r in &st.reasons {
            f.sample(&["director", r.reason, r.verdict], r.bytes as f64);
        }
    }
    let mut f = e.family(&SERVICE_PACKETS);
    for s in &st.services {
        f.sample(&[&s.name], s.packets as f64);
    }
    let mut f = e.family(&SERVICE_BYTES);
    for s in &st.services {
        f.sample(&[&s.name], s.bytes as f64);
    }
    // A bind is named `service|vip|protocol|ports`.
    let split = |b: &str| -> (String, String) {
        match b.split_once('|') {
            Some((s, rest)) => (s.to_string(), rest.replace('|', " ")),
            None => (String::new(), b.to_string()),
        }
    };
    let mut f = e.family(&BIND_PACKETS);
    for b in &st.binds {
        let (s, bind) = split(&b.bind);
        f.sample(&[&s, &bind], b.packets as f64);
    }
    let mut f = e.family(&BIND_BYTES);
    for b in &st.binds {
        let (s, bind) = split(&b.bind);
        f.sample(&[&s, &bind], b.bytes as f64);
    }
    let mut f = e.family(&TABLE_INFO);
    for s in st.services.iter().filter(|s| s.live) {
        f.sample(&[&s.name, &s.version, &s.checksum], 1.0);
    }
    let mut f = e.family(&TABLE_LIVE);
    for s in &st.services {
        f.sample(&[&s.name], f64::from(u8::from(s.live)));
    }
    let mut f = e.family(&TABLE_ROWS);
    for s in &st.services {
        f.sample(&[&s.name], f64::from(s.rows));
    }
    let mut f = e.family(&TABLE_BACKENDS);
    for s in &st.services {
        f.sample(&[&s.name], s.backends as f64);
    }
    e.family(&RELOADS)
        .sample(&["applied"], st.reloads.applied as f64)
        .sample(&["rejected"], st.reloads.rejected as f64)
        .sample(&["failed"], st.reloads.failed as f64);
    if let Some(r) = &st.last_reload {
        e.family(&LAST_RELOAD).sample(&[], r.time as f64);
    }
    if let Some(r) = &st.last_rejected {
        e.family(&LAST_REJECTED).sample(&[], r.time as f64);
    }
    if let Some(c) = &st.cluster {
        e.family(&CLUSTER_CONNECTED)
            .sample(&[], f64::from(u8::from(c.connected)));
        if let Some(v) = c.current_version {
            e.family(&CLUSTER_CURRENT).sample(&[], v as f64);
        }
        if let Some(v) = c.applied_version {
            e.family(&CLUSTER_APPLIED).sample(&[], v as f64);
        }
        e.family(&CLUSTER_REFUSED)
            .sample(&[], c.rejected.as_ref().map_or(0.0, |r| r.version as f64));
        e.family(&CLUSTER_REFUSALS)
            .sample(&[], st.reloads.cluster_refusals as f64);
        if let Some(t) = c.last_contact {
            e.family(&CLUSTER_LAST_CONTACT).sample(&[], t as f64);
        }
    }
    if let Some(h) = &st.health {
        let mut f = e.family(&BACKEND_HEALTHY);
        for (s, m) in &h.backends {
            for (b, t) in m {
                f.sample(&[s, b], f64::from(u8::from(t.healthy)));
            }
        }
        let mut f = e.family(&BACKEND_TRANSITIONS);
        for (s, m) in &h.backends {
            for (b, t) in m {
                f.sample(&[s, b], t.transitions as f64);
            }
        }
        let mut f = e.family(&BACKEND_DEMOTED);
        for (s, m) in &h.backends {
            let demoted = h.services.get(s).map(|x| &x.demoted);
            for b in m.keys() {
                let d = demoted.is_some_and(|d| d.contains(b));
                f.sample(&[s, b], f64::from(u8::from(d)));
            }
        }
        let mut f = e.family(&FAIL_OPEN);
        for (s, sh) in &h.services {
            f.sample(&[s], f64::from(u8::from(sh.fail_open)));
        }
    }
    e
}

/// What the endpoint calls on each scrape.
pub fn renderer(cfg: DirectorConfig) -> Arc<daemon_support::metrics::http::Render> {
    Arc::new(move || render(&crate::status::gather(&cfg)).encode())
}
