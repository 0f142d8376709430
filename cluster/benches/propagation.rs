//! Publish → every director has the new table live, with three followers on one Consul.
//!
//! Each follower runs the director's real check: parse the text with tablegen, build every
//! table, compare every checksum with the published ones. The publisher computes those
//! checksums with tablegen too, inside the timed span. Run: `cargo bench -p xdplb-cluster`.
//! Reports median / p90 / max over the runs, for `consul agent -dev` (in memory) and a
//! one-node server with a data directory (raft log on disk, as in production).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::testing::ConsulAgent;
use cluster::{ApplyError, Follower, PublishMeta, ServiceDigest, VersionMeta};

const FOLLOWERS: usize = 3;
const RUNS: usize = 40;

fn tablegen_digests(text: &str) -> Result<BTreeMap<String, ServiceDigest>, ApplyError> {
    let config = tablegen::config::Config::parse(Path::new("backends.yaml"), text)
        .map_err(|e| e.to_string())?;
    let tables = tablegen::table::build_all(&config);
    Ok(cluster::service_digests(
        tables
            .iter()
            .map(|t| (t.service.as_str(), t.version, t.checksum)),
    ))
}

/// What a director's `verify_and_apply` does, minus the map swap.
fn verify(text: &str, meta: &VersionMeta) -> Result<(), ApplyError> {
    let mine = tablegen_digests(text)?;
    if mine != meta.services {
        return Err("checksum mismatch".into());
    }
    Ok(())
}

fn text(backends: usize, table_bits: u8, drained: Option<usize>) -> String {
    let mut s = format!(
        "services:\n  - name: web\n    hash_key: 6c8d0f1e2a3b4c5d6e7f8091a2b3c4d5\n    seed: 0f1e2d3c4b5a69788796a5b4c3d2e1f0\n    table_bits: {table_bits}\n    hops: 2\n    hash: [src_ip, src_port, dst_ip, dst_port]\n    binds:\n      - {{ vip: 10.100.0.1, proto: tcp, port: 443 }}\n    backends:\n"
    );
    for b in 0..backends {
        let state = if Some(b) == drained {
            "draining"
        } else {
            "active"
        };
        s.push_str(&format!(
            "      - {{ name: backend-{b:04}, address: 10.1.{}.{}, state: {state} }}\n",
            b / 250,
            b % 250 + 1
        ));
    }
    s
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run(agent: &ConsulAgent, label: &str, backends: usize, table_bits: u8, runs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("xdplb/bench-{backends}-{table_bits}");
    let publisher = common::store(
        agent,
        &prefix,
        &dir.path().join("p"),
        Duration::from_secs(300),
    );
    let mut followers = Vec::new();
    let live: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    for i in 0..FOLLOWERS {
        let state = dir.path().join(format!("d{i}.json"));
        let store = common::store(agent, &prefix, &state, Duration::from_secs(300));
        let live = live.clone();
        let f = Arc::new(Follower::new(
            store,
            &state,
            move |text: &str, meta: &VersionMeta| {
                verify(text, meta)?;
                // Here a director swaps the table in: the moment the version is live.
                live.lock().unwrap().push((meta.version, Instant::now()));
                Ok(())
            },
        ));
        let g = f.clone();
        tokio::spawn(async move { g.run(std::future::pending()).await });
        followers.push(f);
    }
    let mut total = Vec::new();
    let mut all_live = Vec::new();
    let mut publish_only = Vec::new();
    let mut build = Vec::new();
    for r in 0..runs + 2 {
        let t = text(backends, table_bits, Some(r % backends));
        let mut rxs: Vec<_> = followers.iter().map(|f| f.subscribe()).collect();
        let t0 = Instant::now();
        let services = tablegen_digests(&t).unwrap();
        let t1 = Instant::now();
        let meta = PublishMeta {
            services,
            ..PublishMeta::default()
        };
        let v = publisher.publish(&t, meta).await.unwrap().version;
        let t2 = Instant::now();
        for rx in &mut rxs {
            tokio::time::timeout(
                Duration::from_secs(60),
                rx.wait_for(|s| s.applied_version() == Some(v)),
            )
            .await
            .expect("followers apply in time")
            .unwrap();
        }
        let t3 = Instant::now();
        let last_live = live
            .lock()
            .unwrap()
            .iter()
            .filter(|(ver, _)| *ver == v)
            .map(|(_, at)| *at)
            .max()
            .unwrap();
        if r >= 2 {
            // the first two warm connections and caches
            all_live.push(last_live - t0);
            build.push(t1 - t0);
            publish_only.push(t2 - t1);
            total.push(t3 - t0);
        }
    }
    for v in [&mut total, &mut all_live, &mut publish_only, &mut build] {
        v.sort();
    }
    println!(
        "{label:<14} {backends:>5} backends, 2^{table_bits:<2} rows, {FOLLOWERS} followers, {runs} runs: \
         publish->live on all: median {:>7.1?} p90 {:>7.1?} max {:>7.1?}; \
         ->applied+persisted on all: median {:>7.1?}; \
         (publisher tablegen {:>7.1?}, publish call {:>6.1?})",
        pct(&all_live, 0.5),
        pct(&all_live, 0.9),
        all_live[all_live.len() - 1],
        pct(&total, 0.5),
        pct(&build, 0.5),
        pct(&publish_only, 0.5),
    );
    for f in &followers {
        assert!(f.status().rejected.is_none());
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it:
    // then only a quick smoke run, so the test suite stays fast (and debug builds of tablegen
    // are slow).
    let full = std::env::args().any(|a| a == "--bench");
    rt.block_on(async {
        let dev = ConsulAgent::dev().unwrap();
        if !full {
            run(&dev, "smoke (-dev)", 20, 10, 3).await;
            return;
        }
        run(&dev, "consul -dev", 100, 16, RUNS).await;
        drop(dev);
        let server = ConsulAgent::server().unwrap();
        run(&server, "consul server", 100, 16, RUNS).await;
        run(&server, "consul server", 4096, 20, 5).await;
    });
}
