//! `cargo bench -p xdplb-director --bench health`: the cost of applying a health change to a
//! table, at 1000 backends and 2^16 rows (the overlay the daemon builds before it swaps the
//! table in), from the published table's kept rankings.
//!
//! Prints the median and the 90th percentile of 200 runs per case, in milliseconds.
//!
//! Then the checker's own cost: 1000 backends (tcp checks of a loopback listener, every
//! second), the process's CPU time (getrusage) and resident memory over
//! `XDPLB_BENCH_CHECKER_SECS` seconds (default 60; the target is stated for 10 minutes).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use director::health::{overlay, Checker, ProbeSettings, Target};
use tablegen::config::{Config, Health, HealthCheck, Service};
use tablegen::table::Planner;

/// `n` equal backends and 2^`bits` rows, as backends.yaml says it.
fn service(n: usize, bits: u8) -> Service {
    let mut text = format!(
        "services:\n  - name: web\n    hash_key: 07070707070707070707070707070707\n    seed: 09090909090909090909090909090909\n    table_bits: {bits}\n    binds: []\n    backends:\n"
    );
    for i in 0..n {
        text.push_str(&format!(
            "      - {{ name: backend-{i}, address: 10.0.{}.{} }}\n",
            i / 250,
            i % 250 + 1
        ));
    }
    let mut c = Config::parse(std::path::Path::new("bench.yaml"), &text).unwrap();
    c.services.remove(0)
}

fn main() {
    let t0 = Instant::now();
    let planner = Planner::new(service(1000, 16));
    println!(
        "rankings kept at 1000 backends, 2^16 rows: {:.1} ms (once per reload)",
        t0.elapsed().as_secs_f64() * 1e3
    );
    for demoted in [1usize, 10, 100] {
        let names: BTreeSet<String> = (0..demoted).map(|i| format!("backend-{}", i * 7)).collect();
        let mut ms: Vec<f64> = (0..200)
            .map(|_| {
                let t = Instant::now();
                let table = overlay(&planner, &names);
                std::hint::black_box(&table);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        println!(
            "overlay, {demoted:>3} of 1000 backends demoted: median {:.2} ms, p90 {:.2} ms",
            ms[ms.len() / 2],
            ms[ms.len() * 9 / 10]
        );
    }
    checker();
}

fn cpu_seconds() -> f64 {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn checker() {
    let secs: u64 = std::env::var("XDPLB_BENCH_CHECKER_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    // A listener on loopback that accepts and drops (the kernel completes the handshakes).
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    let health = Health {
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        rise: 3,
        fall: 2,
        jitter_percent: 10,
        hold: Duration::from_secs(10),
        fail_open_below: 50,
        announce_min_healthy: 1,
        checks: vec![HealthCheck::Tcp { port }],
    };
    let targets: Vec<Target> = (0..1000)
        .map(|i| Target {
            service: "web".into(),
            backend: format!("backend-{i}"),
            address: "127.0.0.1".parse().unwrap(),
            health: health.clone(),
        })
        .collect();
    let c = Checker::start(
        ProbeSettings {
            gue_port: 19523,
            src_v4: None,
            src_v6: None,
        },
        BTreeMap::new(),
        || {},
    )
    .unwrap();
    c.set_targets(targets);
    // Settle: every backend has risen.
    std::thread::sleep(Duration::from_secs(5));
    let healthy = c.view().values().filter(|t| t.healthy).count();
    let (cpu0, t0, rss0) = (cpu_seconds(), Instant::now(), rss_kib());
    let mut rss_max = rss0;
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        rss_max = rss_max.max(rss_kib());
    }
    let cpu = (cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64();
    println!(
        "checker, 1000 backends every 1 s for {secs} s ({healthy} healthy after settling): {:.2} % of one core; RSS {rss0} KiB at the start, {} KiB at the end, {rss_max} KiB at most",
        cpu * 100.0,
        rss_kib()
    );
}
