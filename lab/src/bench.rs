//! The lab's benchmarks, on demand (`xdplb-lab bench`, best from a release build), never timed
//! assertions in tests. Three paths on the same machine, measured the same way:
//!
//! - **direct**: client → router → backend-1's own address (two veths, one routing pass);
//! - **plain**: the VIP through the same topology with the directors as plain kernel routers
//!   (four veths, two routing passes at the router, no encapsulation): what the lab's extra hops
//!   cost by themselves;
//! - **xdplb**: the VIP through the real directors (XDP, GUE) and redirectors (TC), DSR back.
//!
//! On one machine every hop costs the same shared CPUs, so *xdplb vs plain* is what the load
//! balancer adds; *xdplb vs direct* also counts the lab's detour, which directors on their own
//! hosts would not put on the client's and backend's CPUs. Figures: single-stream TCP
//! throughput (client → server, the direction the director carries; median of 3 runs), the
//! latency of short requests on new connections (median, p99), and how long a saved
//! backends.yaml takes until new flows follow it on both directors.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::addr::{self, Family};
use crate::client::{probe_tcp, throughput};
use crate::netns::Netns;
use crate::signal;
use crate::system::System;
use crate::topology::{Lab, LabOptions, Node, Routing};

/// Figures for one path.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathFigures {
    /// Single-stream throughput, Gbit/s (median of the runs).
    pub gbit_per_s: f64,
    /// Median latency of a short request on a new connection.
    pub median: Duration,
    /// 99th percentile of the same.
    pub p99: Duration,
}

/// Everything the benchmark measured.
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    /// Straight to a backend.
    pub direct: PathFigures,
    /// The VIP through the directors acting as plain routers.
    pub plain: PathFigures,
    /// The VIP through xdplb.
    pub xdplb: PathFigures,
    /// Save to live on both directors, one figure per change.
    pub table_live: Vec<Duration>,
}

type BenchError = Box<dyn std::error::Error>;

fn median_f(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// Measures each `(name, target)` path, alternating between them so drift hits all alike.
fn measure(
    client: &Netns,
    paths: &[(&str, SocketAddr)],
    seconds: u64,
    requests: usize,
) -> Result<Vec<PathFigures>, BenchError> {
    let mut rates = vec![Vec::new(); paths.len()];
    for round in 1..=3 {
        for (i, (name, target)) in paths.iter().enumerate() {
            signal::check()?;
            let t = throughput(client, *target, Duration::from_secs(seconds))??;
            println!(
                "  throughput run {round} {name:<6} {:.2} Gbit/s",
                t.gbit_per_s()
            );
            rates[i].push(t.gbit_per_s());
        }
    }
    let mut lat = vec![Vec::new(); paths.len()];
    for _ in 0..4 {
        for (i, (_, target)) in paths.iter().enumerate() {
            signal::check()?;
            let p = probe_tcp(client, *target, requests / 4, 8)?;
            if p.failures() > 0 {
                return Err(format!("latency run to {target}: {p}").into());
            }
            lat[i].extend(p.latencies);
        }
    }
    Ok((0..paths.len())
        .map(|i| PathFigures {
            gbit_per_s: median_f(&mut rates[i]),
            median: percentile(&mut lat[i], 0.5),
            p99: percentile(&mut lat[i], 0.99),
        })
        .collect())
}

/// Direct and xdplb figures and the table-change times, on a running system.
pub fn run_xdplb(sys: &System, seconds: u64, requests: usize) -> Result<BenchReport, BenchError> {
    let client = sys.lab().ns(Node::Client);
    let direct = SocketAddr::new(addr::backend(Family::V4, 1), addr::TCP_PORT);
    println!(
        "xdplb lab: {seconds}s throughput runs, {requests} short requests per path, 8 at a time"
    );
    let f = measure(
        &client,
        &[("direct", direct), ("xdplb", addr::vip_tcp(Family::V4))],
        seconds,
        requests,
    )?;
    let mut rep = BenchReport {
        direct: f[0],
        xdplb: f[1],
        ..Default::default()
    };

    println!("table change: `tablegen drain|activate backend-3` until new flows follow on both directors");
    for round in 0..6 {
        signal::check()?;
        let drain = round % 2 == 0;
        let t = Instant::now();
        sys.tablegen(&[if drain { "drain" } else { "activate" }, "backend-3"])?;
        // Drained: not one of 96 new flows on backend-3 (a director still on the old table
        // would send it about 16). Active: at least a quarter (one director alone: a sixth).
        sys.wait_new_flows(Family::V4, 96, Duration::from_secs(10), |p| {
            let on3 = p.per_backend.get("backend-3").copied().unwrap_or(0);
            p.failures() == 0 && if drain { on3 == 0 } else { on3 >= 24 }
        })?;
        let took = t.elapsed();
        println!(
            "  {}: live after {took:.1?}",
            if drain { "drain   " } else { "activate" }
        );
        rep.table_live.push(took);
    }
    Ok(rep)
}

/// The VIP through a lab whose directors are plain kernel routers.
pub fn run_plain(server: &Path, seconds: u64, requests: usize) -> Result<PathFigures, BenchError> {
    let lab = Lab::up(LabOptions::default())?;
    lab.start_servers(server)?;
    for i in 1..=lab.options().backends {
        lab.add_vips_on_backend(i)?;
    }
    lab.route_vips(Routing::PlainDirectors)?;
    println!("plain lab (directors as kernel routers, no xdplb):");
    let f = measure(
        &lab.ns(Node::Client),
        &[("plain", addr::vip_tcp(Family::V4))],
        seconds,
        requests,
    )?;
    Ok(f[0])
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let pct = |a: f64, b: f64| (a / b - 1.0) * 100.0;
        writeln!(
            f,
            "                     direct    plain     xdplb   xdplb/plain  xdplb/direct"
        )?;
        let (d, p, x) = (self.direct, self.plain, self.xdplb);
        writeln!(
            f,
            "throughput Gbit/s  {:>7.2}  {:>7.2}  {:>7.2}   ratio {:.2}    ratio {:.2}",
            d.gbit_per_s,
            p.gbit_per_s,
            x.gbit_per_s,
            x.gbit_per_s / p.gbit_per_s,
            x.gbit_per_s / d.gbit_per_s
        )?;
        for (name, a, b, c) in [
            ("median ms", d.median, p.median, x.median),
            ("p99 ms", d.p99, p.p99, x.p99),
        ] {
            writeln!(
                f,
                "{name:<18} {:>7.3}  {:>7.3}  {:>7.3}   {:>+7.1}%    {:>+7.1}%",
                ms(a),
                ms(b),
                ms(c),
                pct(ms(c), ms(b)),
                pct(ms(c), ms(a))
            )?;
        }
        let mut live = self.table_live.clone();
        if !live.is_empty() {
            let all: Vec<String> = live.iter().map(|d| format!("{:.0}", ms(*d))).collect();
            write!(
                f,
                "table live ms      median {:.0} ({})",
                ms(percentile(&mut live, 0.5)),
                all.join(", ")
            )?;
        }
        Ok(())
    }
}

/// What the BGP benchmark measured (`xdplb-lab bench-bgp`).
#[derive(Debug, Clone, Default)]
pub struct BgpFigures {
    /// Director-1's daemon SIGKILLed to the router's VIP route without it, per round.
    pub kill: Vec<Duration>,
    /// `drain-announcements` on director-1 to the last packet its program forwarded, per round.
    pub drain_last_packet: Vec<Duration>,
    /// `drain-announcements` to the withdrawal at the router (after the configured delay).
    pub drain_withdrawn: Vec<Duration>,
    /// The configured drain delay.
    pub drain_delay: Duration,
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

impl std::fmt::Display for BgpFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
        let all = |v: &[Duration]| v.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ");
        writeln!(
            f,
            "daemon killed -> router path removed: median {} ({} rounds: {})",
            ms(median(&self.kill)),
            self.kill.len(),
            all(&self.kill)
        )?;
        writeln!(
            f,
            "graceful drain -> last packet through the drained director: median {} ({})",
            ms(median(&self.drain_last_packet)),
            all(&self.drain_last_packet)
        )?;
        writeln!(
            f,
            "graceful drain -> withdrawn at the router: median {} (configured delay {})",
            ms(median(&self.drain_withdrawn)),
            ms(self.drain_delay)
        )
    }
}

/// Packets director `i`'s program forwarded for the services, from `status --json`.
fn forwarded(sys: &System, i: usize) -> Option<u64> {
    let s: serde_json::Value = serde_json::from_str(&sys.director_status(i).ok()?).ok()?;
    Some(
        s["services"]
            .as_array()?
            .iter()
            .filter_map(|s| s["packets"].as_u64())
            .sum(),
    )
}

/// The BGP benchmark on a running lab with BGP: `rounds` times, director-1's daemon killed
/// (the router's path gone: polled every millisecond) and director-1 drained while 100
/// connections exchange data (its forwarded-packet counter polled until the withdrawal and a
/// second after).
pub fn run_bgp(sys: &System, rounds: usize) -> Result<BgpFigures, Box<dyn std::error::Error>> {
    let mut fig = BgpFigures {
        drain_delay: crate::system::LAB_DRAIN_DELAY,
        ..BgpFigures::default()
    };
    let lab = sys.lab();
    for r in 0..rounds {
        signal::check()?;
        let t0 = Instant::now();
        sys.kill_director_daemon(1)?;
        lab.wait_vip_paths(&[2], Duration::from_secs(10))?;
        fig.kill.push(t0.elapsed());
        sys.stop_director(1)?;
        sys.start_director(1)?;
        lab.wait_vip_paths(&[1, 2], Duration::from_secs(20))?;
        println!("round {}: kill {:?}", r + 1, fig.kill[r]);

        let pool = crate::client::Pool::start(
            &lab.ns(Node::Client),
            crate::client::PoolConfig::new(addr::vip_tcp(Family::V4), 100),
        )?;
        pool.wait_established(Duration::from_secs(15));
        std::thread::sleep(Duration::from_millis(500));
        let t0 = Instant::now();
        sys.director_cmd(1, &["drain-announcements"])?;
        let mut last = forwarded(sys, 1).unwrap_or(0);
        let mut last_at = Duration::ZERO;
        let mut withdrawn = None;
        while t0.elapsed() < fig.drain_delay + Duration::from_secs(1) {
            if let Some(n) = forwarded(sys, 1) {
                if n != last {
                    last = n;
                    last_at = t0.elapsed();
                }
            }
            if withdrawn.is_none()
                && lab
                    .birdc(Node::Router, &["show", "route", "count"])?
                    .contains("1 of 2 routes")
            {
                withdrawn = Some(t0.elapsed());
            }
        }
        fig.drain_last_packet.push(last_at);
        if let Some(w) = withdrawn {
            fig.drain_withdrawn.push(w);
        }
        let report = pool.stop();
        println!(
            "round {}: drain: last packet {:?}, withdrawn {:?}, broken {}",
            r + 1,
            last_at,
            withdrawn,
            report.stats.broken
        );
        sys.director_cmd(1, &["undrain-announcements"])?;
        lab.wait_vip_paths(&[1, 2], Duration::from_secs(20))?;
    }
    Ok(fig)
}
