//! The Grafana dashboard (etc/grafana/xdplb.json) is valid JSON, and every metric its queries
//! use is one the daemons export (their catalogues, which the daemons' tests hold to real
//! scrapes), with labels and reasons they export; every exported metric is documented in
//! docs/setup/metrics.md.

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

/// The label matchers right after each metric name: (metric, label, value).
fn matchers(expr: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(p) = expr[i..].find("xdplb_") {
        let start = i + p;
        let rest = &expr[start..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..end];
        i = start + end;
        let Some(sel) = rest[end..].strip_prefix('{') else {
            continue;
        };
        let close = sel.find('}').expect("a selector is closed");
        for m in sel[..close].split(',').filter(|m| !m.trim().is_empty()) {
            let op = m.find(['=', '!']).expect("a matcher has an operator");
            let label = m[..op].trim().to_string();
            let value = m[op..]
                .trim_start_matches(['=', '!', '~'])
                .trim()
                .trim_matches('"')
                .to_string();
            out.push((name.to_string(), label, value));
        }
    }
    out
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
        "xdplb_redirector_reloads_total",
        "xdplb_director_cluster_refusals_total",
        "xdplb_director_cluster_applied_version",
        "xdplb_director_backend_healthy",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard does not show {needed}"
        );
    }
    // Every label a query matches on is one of its metric's labels, and every reason, verdict
    // and program it names is one the daemons print: a typo would show an empty panel.
    let defs: Vec<&daemon_support::metrics::Def> = director::metrics::FAMILIES
        .iter()
        .chain(redirector::metrics::FAMILIES)
        .collect();
    let reasons: BTreeSet<&str> = director::counters::REASONS
        .iter()
        .map(|r| r.1)
        .chain(redirector::counters::NAMES.iter().map(|r| r.1))
        .collect();
    let verdicts: BTreeSet<&str> = director::counters::REASONS
        .iter()
        .map(|r| r.2)
        .chain(redirector::counters::NAMES.iter().map(|r| r.2))
        .collect();
    let mut matched = BTreeSet::new();
    for e in &all {
        for (metric, label, value) in matchers(e) {
            let labels: Vec<&str> = defs
                .iter()
                .filter(|d| d.name == metric)
                .flat_map(|d| d.labels.iter().copied())
                .collect();
            assert!(
                labels.contains(&label.as_str()),
                "{metric} has no label {label} (in `{e}`)"
            );
            let known: Option<&BTreeSet<&str>> = match label.as_str() {
                "reason" => Some(&reasons),
                "verdict" => Some(&verdicts),
                _ => None,
            };
            if let (Some(known), false) = (known, value.contains(['$', '|', '.'])) {
                assert!(
                    known.contains(value.as_str()),
                    "{label}=\"{value}\" is not one the daemons print (in `{e}`)"
                );
            }
            if label == "program" {
                assert!(["director", "redirector"].contains(&value.as_str()), "{e}");
            }
            matched.insert(format!("{label}={value}"));
        }
    }
    // Second chance and both per-backend shares come from the redirectors' own counters.
    for needed in ["reason=forward", "reason=syn", "verdict=local"] {
        assert!(matched.contains(needed), "no query matches {needed}");
    }
}

#[test]
fn matchers_are_read_from_selectors() {
    assert_eq!(
        matchers(
            r#"sum(rate(xdplb_packets_total{program="redirector",reason!="syn"}[5m])) / xdplb_x"#
        ),
        vec![
            (
                "xdplb_packets_total".into(),
                "program".into(),
                "redirector".into()
            ),
            ("xdplb_packets_total".into(), "reason".into(), "syn".into()),
        ]
    );
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
