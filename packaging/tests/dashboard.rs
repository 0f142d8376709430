//! The Grafana dashboard (etc/grafana/xdplb.json) is valid JSON, and every metric its queries
//! use is one the daemons export (their catalogues, which the daemons' tests hold to real
//! scrapes); every exported metric is documented in docs/setup/metrics.md.

use std::collections::BTreeSet;
use std::path::Path;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn exported() -> BTreeSet<&'static str> {
    director::metrics::FAMILIES
        .iter()
        .chain(redirector::metrics::FAMILIES)
        .map(|d| d.name)
        .collect()
}

/// Every `expr` of every panel (rows nest panels) and of the templating queries.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(p) = expr[i..].find("xdplb_") {
        let start = i + p;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        out.push(expr[start..end].to_string());
        i = end;
    }
    out
}

#[test]
fn every_dashboard_query_uses_exported_metrics() {
    let text = std::fs::read_to_string(repo().join("etc/grafana/xdplb.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(json["uid"], "xdplb");
    let mut all = Vec::new();
    exprs(&json, &mut all);
    assert!(all.len() >= 15, "queries found: {all:?}");
    let exported = exported();
    let mut used = BTreeSet::new();
    for e in &all {
        let names = metric_names(e);
        for n in names {
            assert!(
                exported.contains(n.as_str()),
                "{n} (in `{e}`) is not exported"
            );
            used.insert(n);
        }
    }
    // What the dashboard promises: packets in, backend shares, second chance, drops, reloads
    // and refusals, cluster sync, health.
    for needed in [
        "xdplb_director_service_packets_total",
        "xdplb_packets_total",
        "xdplb_director_reloads_total",
        "xdplb_director_cluster_refusals_total",
        "xdplb_director_cluster_applied_version",
        "xdplb_director_backend_healthy",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard does not show {needed}"
        );
    }
}

#[test]
fn every_exported_metric_is_documented() {
    let doc = std::fs::read_to_string(repo().join("docs/setup/metrics.md")).unwrap();
    for name in exported() {
        assert!(
            doc.contains(&format!("`{name}`")),
            "{name} is not in docs/setup/metrics.md"
        );
    }
    for d in director::metrics::FAMILIES
        .iter()
        .chain(redirector::metrics::FAMILIES)
    {
        let counter = d.kind == daemon_support::metrics::Kind::Counter;
        assert_eq!(
            counter,
            d.name.ends_with("_total"),
            "{}: _total on counters only",
            d.name
        );
        assert!(d.name.starts_with("xdplb_"), "{}", d.name);
    }
}
