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
    let lab = Lab::up(LabOptions::plain())?;
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
    /// Director-1's daemon SIGKILLed to the router's VIP routes without it, per round (the
    /// supervisor's `flush-announcements`, as systemd's ExecStopPost, then BIRD).
    pub kill: Vec<Duration>,
    /// Director-1's BIRD frozen (SIGSTOP: a host that stops answering while its link stays
    /// up, no TCP close) to the router's VIP routes without it, per round: BFD's detection.
    pub bird_freeze: Vec<Duration>,
    /// `drain-announcements` on director-1 to the router's VIP route without it (the
    /// GRACEFUL_SHUTDOWN path loses the ECMP group), per round.
    pub drain_moved: Vec<Duration>,
    /// `drain-announcements` on director-1 to the last packet its program forwarded (as
    /// observed by polling its counter: an upper bound by one poll), per round.
    pub drain_last_packet: Vec<Duration>,
    /// `drain-announcements` to the withdrawal at the router (after the configured delay).
    pub drain_withdrawn: Vec<Duration>,
    /// Connections broken during the drains (all rounds).
    pub drain_broken: usize,
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
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
        let line = |f: &mut std::fmt::Formatter<'_>, what: &str, v: &[Duration]| {
            let all = v.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ");
            writeln!(
                f,
                "{what}: median {} ({} rounds: {all})",
                ms(median(v)),
                v.len()
            )
        };
        line(f, "daemon killed -> router path removed", &self.kill)?;
        line(
            f,
            "director's BIRD frozen (BFD) -> router path removed",
            &self.bird_freeze,
        )?;
        line(
            f,
            "graceful drain -> router path left the ECMP group",
            &self.drain_moved,
        )?;
        line(
            f,
            "graceful drain -> last packet through the drained director",
            &self.drain_last_packet,
        )?;
        line(
            f,
            "graceful drain -> withdrawn at the router",
            &self.drain_withdrawn,
        )?;
        writeln!(
            f,
            "configured drain delay {}; target for the last packet: delay + 1 s = {}; \
             connections broken during the drains: {}",
            ms(self.drain_delay),
            ms(self.drain_delay + Duration::from_secs(1)),
            self.drain_broken
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

/// Whether the router's BIRD still has director-1's IPv4 VIP route (plain or graceful).
fn router_has_d1_route(sys: &System) -> Result<bool, BenchError> {
    let out = sys
        .lab()
        .birdc(Node::Router, &["show", "route", "protocol", "d1_v4"])?;
    Ok(out.contains(&format!("{}/32", addr::VIP_V4)))
}

/// Polls every millisecond until the router's VIP routes (both families) go through director-2
/// alone; how long since `t0`.
fn until_only_d2(sys: &System, t0: Instant) -> Result<Duration, BenchError> {
    sys.lab().wait_vip_paths(&[2], Duration::from_secs(10))?;
    Ok(t0.elapsed())
}

/// The BGP benchmark on a running lab, `rounds` times each:
///
/// - director-1's daemon SIGKILLed until the router's path is gone, then restarted until the
///   router has both paths again;
/// - director-1's BIRD frozen (SIGSTOP: BFD's case; a killed BIRD closes its TCP sessions,
///   which the router notices at once) until the router's path is gone, then killed and
///   started again;
/// - director-1 drained while 100 connections exchange data: until its path leaves the ECMP
///   group, until the last packet its program forwards (its counter polled until a second
///   past the withdrawal), and until the withdrawal; then undrained.
pub fn run_bgp(sys: &System, rounds: usize) -> Result<BgpFigures, BenchError> {
    let mut fig = BgpFigures {
        drain_delay: crate::system::LAB_DRAIN_DELAY,
        ..BgpFigures::default()
    };
    let lab = sys.lab();
    let bird1 = Lab::bird_label(Node::Director(1));
    for r in 1..=rounds {
        signal::check()?;
        let t0 = Instant::now();
        sys.kill_director_daemon(1)?;
        fig.kill.push(until_only_d2(sys, t0)?);
        sys.stop_director(1)?;
        sys.start_director(1)?;
        let back = sys.wait_announced()?;
        println!(
            "round {r}: daemon killed: path removed after {:?}; restarted: both paths after {back:?}",
            fig.kill.last().unwrap()
        );

        signal::check()?;
        let pid = lab
            .bird_pid(Node::Director(1))
            .ok_or("director-1's BIRD wrote no pid file")?;
        let t0 = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGSTOP,
        )?;
        let frozen = until_only_d2(sys, t0);
        lab.stop(&bird1, nix::sys::signal::Signal::SIGKILL, Duration::ZERO)?;
        fig.bird_freeze.push(frozen?);
        lab.start_bird(Node::Director(1))?;
        let back = sys.wait_announced()?;
        println!(
            "round {r}: BIRD frozen: path removed after {:?}; restarted: both paths after {back:?}",
            fig.bird_freeze.last().unwrap()
        );

        signal::check()?;
        let pool = crate::client::Pool::start(
            &lab.ns(Node::Client),
            crate::client::PoolConfig::new(addr::vip_tcp(Family::V4), 100),
        )?;
        pool.wait_established(Duration::from_secs(15));
        // Director-1 carries some of them: its counter moves before the drain.
        let before = forwarded(sys, 1).unwrap_or(0);
        std::thread::sleep(Duration::from_millis(500));
        if forwarded(sys, 1).unwrap_or(0) == before {
            return Err("director-1 forwarded nothing before the drain".into());
        }
        let t0 = Instant::now();
        sys.director_cmd(1, &["drain-announcements"])?;
        let mut last = forwarded(sys, 1).unwrap_or(0);
        let mut last_at = t0.elapsed();
        let (mut moved, mut withdrawn) = (None, None);
        loop {
            let now = t0.elapsed();
            if let Some(n) = forwarded(sys, 1) {
                if n != last {
                    last = n;
                    last_at = t0.elapsed();
                }
            }
            if moved.is_none() && lab.vip_paths(Family::V4)? == [2] {
                moved = Some(t0.elapsed());
            }
            if withdrawn.is_none() && !router_has_d1_route(sys)? {
                withdrawn = Some(t0.elapsed());
            }
            let end = withdrawn.map_or(fig.drain_delay + Duration::from_secs(5), |w| {
                w + Duration::from_secs(1)
            });
            if now > end {
                break;
            }
        }
        let report = pool.stop();
        fig.drain_broken += report.stats.broken;
        fig.drain_last_packet.push(last_at);
        fig.drain_moved.extend(moved);
        fig.drain_withdrawn.extend(withdrawn);
        println!(
            "round {r}: drain: left ECMP after {moved:?}, last packet by {last_at:?}, withdrawn \
             after {withdrawn:?}, {} broken",
            report.stats.broken
        );
        sys.director_cmd(1, &["undrain-announcements"])?;
        sys.wait_announced()?;
    }
    Ok(fig)
}
