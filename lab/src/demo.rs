//! The README's demo: the whole system in the lab, told in plain words and numbers. Each step
//! states a promise, shows what happened, and records whether the promise held; the summary at
//! the end lists them, and the command exits non-zero if any broke.
//!
//! Steps: the router learns the VIPs from both directors over BGP; connections spread over three
//! backends; `tablegen drain backend-3` live while long-lived connections on backend-3 keep
//! exchanging; backend-3 deactivated and activated; director-1 dies while connections flow, the
//! router drops its path, it comes back; director-1's announcements drained gracefully and
//! brought back.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::addr::{self, Family};
use crate::client::{probe_tcp, probe_udp, Pool, PoolConfig, PoolStats};
use crate::signal;
use crate::system::{Binaries, System, SystemOptions};
use crate::topology::Node;

/// A promise the demo checked.
#[derive(Debug, Clone)]
pub struct Promise {
    /// What was promised.
    pub what: String,
    /// Whether it held.
    pub held: bool,
    /// The numbers behind the verdict.
    pub detail: String,
}

/// Errors that stop the demo early (a promise breaking does not: it is recorded).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The lab or a daemon failed.
    #[error(transparent)]
    Lab(#[from] crate::topology::LabError),
    /// A tool failed.
    #[error(transparent)]
    Cmd(#[from] crate::cmd::CmdError),
    /// Running in a namespace failed.
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
    /// Ctrl-C.
    #[error(transparent)]
    Interrupted(#[from] signal::Interrupted),
}

struct Demo {
    sys: System,
    promises: Vec<Promise>,
    start: Instant,
}

impl Demo {
    fn say(&self, text: &str) {
        println!("[{:>5.1}s] {text}", self.start.elapsed().as_secs_f64());
    }

    fn step(&self, title: &str) {
        println!("\n== {title}");
    }

    fn promise(&mut self, what: &str, held: bool, detail: String) {
        let mark = if held { "ok  " } else { "FAIL" };
        println!("   {mark} {what}: {detail}");
        self.promises.push(Promise {
            what: what.to_owned(),
            held,
            detail,
        });
    }

    /// Lets `pools` run for `d`, printing a progress line every second.
    fn watch(&self, d: Duration, pools: &[(&str, &Pool)]) -> Result<(), DemoError> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            signal::sleep(Duration::from_secs(1).min(end - Instant::now()))?;
            let mut line = String::new();
            for (name, p) in pools {
                let _ = write!(line, "{name}: {}   ", p.stats().progress());
            }
            self.say(line.trim_end());
        }
        Ok(())
    }
}

/// "36/34/30%": each backend's share of the answers, in backend order.
fn pcts(p: &crate::client::ProbeReport) -> String {
    let total = p.answered().max(1) as f64;
    let v: Vec<String> = p
        .per_backend
        .values()
        .map(|n| format!("{:.0}", *n as f64 * 100.0 / total))
        .collect();
    v.join("/") + "%"
}

fn spread_text(p: &crate::client::ProbeReport) -> String {
    p.to_string()
}

fn within(
    shares: &std::collections::BTreeMap<String, f64>,
    p: &crate::client::ProbeReport,
    tol: f64,
) -> bool {
    let total = p.answered().max(1) as f64;
    shares.iter().all(|(b, share)| {
        let got = p.per_backend.get(b).copied().unwrap_or(0) as f64 / total;
        (got - share).abs() <= tol
    })
}

/// Runs the demo; returns the promises it checked.
pub fn run(bins: Binaries) -> Result<Vec<Promise>, DemoError> {
    let start = Instant::now();
    println!("xdplb demo: a client, a router spreading the VIPs over two directors by ECMP, and");
    println!("three backends, each in its own network namespace on this machine. The router");
    println!("learns the VIPs from the directors over BGP (BIRD 2, with BFD): no static route.");
    println!(
        "VIPs: {} and {} (TCP {}, UDP {}).",
        addr::VIP_V4,
        addr::VIP_V6,
        addr::TCP_PORT,
        addr::UDP_PORT
    );
    let sys = System::start(bins, SystemOptions::default())?;
    let mut d = Demo {
        sys,
        promises: Vec::new(),
        start,
    };
    d.say(&format!(
        "lab up: namespaces {}*, files in {}",
        d.sys.lab().prefix(),
        d.sys.lab().run_dir().display()
    ));
    let client = d.sys.lab().ns(Node::Client);

    d.step("1. The router learnt the VIPs from both directors over BGP");
    let mut routes = String::new();
    let mut ok = true;
    for f in [Family::V4, Family::V6] {
        let fam = if f == Family::V4 { "-4" } else { "-6" };
        let out = d.sys.lab().ns(Node::Router).ip([
            fam,
            "route",
            "show",
            "exact",
            &f.vip().to_string(),
        ])?;
        routes.push_str(out.trim_end());
        routes.push('\n');
        ok &= out.contains("proto bird") && d.sys.lab().vip_paths(f)? == [1, 2];
    }
    d.say(&format!(
        "router$ ip route show exact <VIP>\n{}",
        routes.trim_end()
    ));
    d.promise(
        "the router has one path per director for each VIP, learnt over BGP",
        ok,
        "written by the router's BIRD (proto bird), from what each director's BIRD announces"
            .into(),
    );

    d.step("2. New connections spread over the three backends as the table says");
    let shares = d.sys.expected_shares()?;
    let expected: Vec<String> = shares
        .iter()
        .map(|(b, s)| format!("{b} {:.0}%", s * 100.0))
        .collect();
    d.say(&format!("table shares (tablegen): {}", expected.join(", ")));
    let p4 = probe_tcp(&client, addr::vip_tcp(Family::V4), 600, 16)?;
    d.say(&format!(
        "600 TCP connections to {}: {}",
        addr::vip_tcp(Family::V4),
        spread_text(&p4)
    ));
    let p6 = probe_tcp(&client, addr::vip_tcp(Family::V6), 300, 16)?;
    d.say(&format!(
        "300 TCP connections to {}: {}",
        addr::vip_tcp(Family::V6),
        spread_text(&p6)
    ));
    let pu = probe_udp(&client, addr::vip_udp(Family::V4), 300, 16)?;
    d.say(&format!(
        "300 UDP requests to {}: {}",
        addr::vip_udp(Family::V4),
        spread_text(&pu)
    ));
    let ok = p4.failures() == 0
        && p6.failures() == 0
        && pu.failures() == 0
        && within(&shares, &p4, 0.08);
    d.promise(
        "connections spread over 3 backends in line with the table",
        ok,
        format!(
            "backend-1/2/3 got IPv4 {}, IPv6 {}, UDP {}; the table says {}; {} failed",
            pcts(&p4),
            pcts(&p6),
            pcts(&pu),
            shares
                .values()
                .map(|s| format!("{:.0}", s * 100.0))
                .collect::<Vec<_>>()
                .join("/")
                + "%",
            p4.failures() + p6.failures() + pu.failures()
        ),
    );

    d.step("3. Long-lived connections: 300 over IPv4, 60 over IPv6, each exchanging every ~80 ms");
    let pool4 = Pool::start(&client, PoolConfig::new(addr::vip_tcp(Family::V4), 300))?;
    let pool6 = Pool::start(&client, PoolConfig::new(addr::vip_tcp(Family::V6), 60))?;
    pool4.wait_established(Duration::from_secs(10));
    pool6.wait_established(Duration::from_secs(10));
    d.watch(
        Duration::from_secs(2),
        &[("IPv4", &pool4), ("IPv6", &pool6)],
    )?;
    let on3_before = pool4.open_on("backend-3") + pool6.open_on("backend-3");
    d.say(&format!("{on3_before} of them are on backend-3"));
    println!("   (progress lines: open connections by backend number, exchanges, broken)");

    d.step("4. `tablegen drain backend-3`, live");
    let ex3_before = pool4.exchanges_on("backend-3") + pool6.exchanges_on("backend-3");
    let out = d.sys.tablegen(&["drain", "backend-3"])?;
    d.say(&format!("$ tablegen drain backend-3\n{}", out.trim_end()));
    let t = Instant::now();
    let newp = d
        .sys
        .wait_new_flows(Family::V4, 300, Duration::from_secs(10), |p| {
            !p.per_backend.contains_key("backend-3") && p.failures() == 0
        });
    match newp {
        Ok(p) => {
            d.say(&format!(
                "both directors use the new table after {:.1}s",
                t.elapsed().as_secs_f64()
            ));
            d.promise(
                "new connections avoid backend-3 after the drain",
                true,
                format!("300 new: {p}"),
            );
        }
        Err(e) => d.promise(
            "new connections avoid backend-3 after the drain",
            false,
            daemon_support::error_chain(&e),
        ),
    }
    d.watch(
        Duration::from_secs(4),
        &[("IPv4", &pool4), ("IPv6", &pool6)],
    )?;
    let ex3_after = pool4.exchanges_on("backend-3") + pool6.exchanges_on("backend-3");
    let on3_after = pool4.open_on("backend-3") + pool6.open_on("backend-3");
    let broken = pool4.stats().broken + pool6.stats().broken;
    d.promise(
        "connections on backend-3 keep exchanging through the drain, none broken",
        broken == 0 && on3_after == on3_before && ex3_after > ex3_before,
        format!(
            "{on3_after} of {on3_before} still open on backend-3, {} exchanges on them since the \
             drain; {broken} broken in all",
            ex3_after - ex3_before
        ),
    );
    let mut forwarded = Vec::new();
    for i in 1..=2 {
        let n = d.sys.redirector_counter(i, "forward")?;
        forwarded.push(format!("backend-{i} {n}"));
    }
    d.say(&format!(
        "second chance at work: packets the redirectors passed on to backend-3 \
         (xdplb-redirector status): {}",
        forwarded.join(", ")
    ));

    d.step("5. backend-3's clients finish; `tablegen deactivate backend-3`");
    pool4.close_backend("backend-3");
    pool6.close_backend("backend-3");
    signal::sleep(Duration::from_millis(300))?;
    let out = d.sys.tablegen(&["deactivate", "backend-3"])?;
    d.say(&format!(
        "$ tablegen deactivate backend-3\n{}",
        out.trim_end()
    ));
    let newp = d
        .sys
        .wait_new_flows(Family::V4, 300, Duration::from_secs(10), |p| {
            !p.per_backend.contains_key("backend-3") && p.failures() == 0
        });
    d.watch(
        Duration::from_secs(2),
        &[("IPv4", &pool4), ("IPv6", &pool6)],
    )?;
    let broken = pool4.stats().broken + pool6.stats().broken;
    d.promise(
        "backend-3 out of the table: new connections avoid it, none broken",
        newp.is_ok() && broken == 0,
        match newp {
            Ok(p) => format!("300 new: {p}; {broken} broken"),
            Err(e) => daemon_support::error_chain(&e),
        },
    );

    d.step("6. `tablegen activate backend-3`: it takes new connections again");
    let out = d.sys.tablegen(&["activate", "backend-3"])?;
    d.say(&format!(
        "$ tablegen activate backend-3\n{}",
        out.trim_end()
    ));
    let shares = d.sys.expected_shares()?;
    let newp = d
        .sys
        .wait_new_flows(Family::V4, 300, Duration::from_secs(10), |p| {
            within(&shares, p, 0.08) && p.failures() == 0
        });
    d.watch(
        Duration::from_secs(2),
        &[("IPv4", &pool4), ("IPv6", &pool6)],
    )?;
    let broken = pool4.stats().broken + pool6.stats().broken;
    d.promise(
        "backend-3 back: new connections reach it, established ones stay, none broken",
        newp.is_ok() && broken == 0,
        match newp {
            Ok(p) => format!("300 new: {p}; {broken} broken"),
            Err(e) => daemon_support::error_chain(&e),
        },
    );

    d.step("7. director-1 dies while connections flow (link down, daemon killed)");
    let pool_more = Pool::start(&client, PoolConfig::new(addr::vip_tcp(Family::V4), 150))?;
    pool_more.wait_established(Duration::from_secs(10));
    let t = Instant::now();
    d.sys.kill_director_host(1)?;
    let gone = d.sys.lab().wait_vip_paths(&[2], Duration::from_secs(5));
    d.say(&format!(
        "director-1 is gone; the router dropped its path after {} (link down; BFD ends its BGP \
         sessions) and sends all flows to director-2",
        match &gone {
            Ok(_) => format!("{:.0} ms", t.elapsed().as_secs_f64() * 1e3),
            Err(e) => daemon_support::error_chain(e),
        }
    ));
    d.watch(
        Duration::from_secs(4),
        &[("IPv4", &pool4), ("IPv6", &pool6), ("new", &pool_more)],
    )?;
    let p = probe_tcp(&client, addr::vip_tcp(Family::V4), 300, 16)?;
    let broken = pool4.stats().broken + pool6.stats().broken + pool_more.stats().broken;
    d.promise(
        "a director dies: no connection breaks, new ones still work",
        gone.is_ok() && broken == 0 && p.failures() == 0,
        format!("{broken} broken; 300 new: {p}"),
    );
    let t = Instant::now();
    d.sys.revive_director_host(1)?;
    d.say(&format!(
        "director-1 is back (daemon started, link up): BGP up again and the VIPs announced, the \
         router has both paths after {:.1}s",
        t.elapsed().as_secs_f64()
    ));
    d.watch(
        Duration::from_secs(3),
        &[("IPv4", &pool4), ("IPv6", &pool6), ("new", &pool_more)],
    )?;

    d.step("8. `xdplb-director drain-announcements` on director-1, then undrain");
    let delay = crate::system::LAB_DRAIN_DELAY;
    let out = d.sys.director_cmd(1, &["drain-announcements"])?;
    d.say(&format!(
        "director-1$ xdplb-director drain-announcements\n{}",
        out.trim_end()
    ));
    let t = Instant::now();
    let moved = d.sys.lab().wait_vip_paths(&[2], Duration::from_secs(5));
    d.say(&format!(
        "announced with GRACEFUL_SHUTDOWN: the router prefers director-2 after {:.0} ms; \
         withdrawn after the configured {:.0}s",
        t.elapsed().as_secs_f64() * 1e3,
        delay.as_secs_f64()
    ));
    d.watch(
        delay + Duration::from_secs(1),
        &[("IPv4", &pool4), ("IPv6", &pool6), ("new", &pool_more)],
    )?;
    let route = d.sys.lab().birdc(
        Node::Router,
        &["show", "route", &format!("{}/32", addr::VIP_V4)],
    )?;
    let withdrawn = !route.contains(&addr::director(Family::V4, 1).to_string());
    let t = Instant::now();
    let out = d.sys.director_cmd(1, &["undrain-announcements"])?;
    d.say(&format!(
        "director-1$ xdplb-director undrain-announcements\n{}",
        out.trim_end()
    ));
    let back = d.sys.wait_announced().map(|_| t.elapsed());
    d.watch(
        Duration::from_secs(1),
        &[("IPv4", &pool4), ("IPv6", &pool6), ("new", &pool_more)],
    )?;
    let broken = pool4.stats().broken + pool6.stats().broken + pool_more.stats().broken;
    d.promise(
        "a graceful drain moves the flows off director-1, withdraws after the delay, and \
         undrain brings it back; none broken",
        moved.is_ok() && withdrawn && broken == 0,
        format!(
            "one path after the drain: {}; withdrawn after {:.0}s: {withdrawn}; both paths \
             again: {} the undrain; {broken} broken",
            moved.is_ok(),
            delay.as_secs_f64(),
            match back {
                Ok(t) => format!("{:.0} ms after", t.as_secs_f64() * 1e3),
                Err(e) => daemon_support::error_chain(&e),
            }
        ),
    );

    d.step("Summary");
    let reports: Vec<(&str, PoolStats)> = vec![
        ("IPv4 long-lived", pool4.stop().stats),
        ("IPv6 long-lived", pool6.stop().stats),
        ("during director death", pool_more.stop().stats),
    ];
    let mut broken = 0;
    for (name, s) in &reports {
        println!("   {name}: {s}");
        broken += s.broken;
    }
    d.promise(
        "no long-lived connection broke in the whole demo",
        broken == 0,
        format!("{broken} broken"),
    );
    println!();
    for p in &d.promises {
        println!("   {} {}", if p.held { "kept  " } else { "BROKEN" }, p.what);
    }
    let broken = d.promises.iter().filter(|p| !p.held).count();
    if broken == 0 {
        println!(
            "\nall {} promises kept; tearing the lab down",
            d.promises.len()
        );
    } else {
        println!(
            "\n{broken} of {} promises BROKEN; tearing the lab down",
            d.promises.len()
        );
    }
    Ok(d.promises)
}
