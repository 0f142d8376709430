//! End-to-end tests: the real xdplb (two `xdplb-director`s behind an ECMP router, three or four
//! backends running `xdplb-redirector`) in the lab, with hundreds of real TCP connections that
//! exchange data throughout, and a precise count of broken ones, which must be zero.
//!
//! The scenarios run one at a time (a lock): each builds its own lab, and on two cores several
//! labs at once would measure the machine, not xdplb.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use lab::addr::{self, Family, FAMILIES};
use lab::client::{probe_tcp, probe_udp, Pool, PoolConfig, PoolReport, ProbeReport};
use lab::icmp::{send_too_big, TooBigWatch};
use lab::system::{Binaries, System, SystemOptions};
use lab::{LabOptions, Node};

const SERVER: &str = env!("CARGO_BIN_EXE_xdplb-lab-server");
static SERIAL: Mutex<()> = Mutex::new(());

fn start(opts: SystemOptions) -> (MutexGuard<'static, ()>, System) {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bins = Binaries::for_tests(Path::new(SERVER)).expect("build the daemons");
    let sys = System::start(bins, opts).expect("start xdplb in the lab");
    (guard, sys)
}

fn pool(sys: &System, target: SocketAddr, n: usize) -> Pool {
    let p = Pool::start(&sys.lab().ns(Node::Client), PoolConfig::new(target, n)).unwrap();
    let s = p.wait_established(Duration::from_secs(15));
    assert_eq!(s.established, n, "every connection up: {s}");
    p
}

fn hold(d: Duration) {
    std::thread::sleep(d);
}

fn assert_unbroken(report: &PoolReport) {
    assert_eq!(
        report.stats.broken,
        0,
        "broken connections: {:#?}",
        report.broken_list()
    );
}

fn assert_no_broken(p: &Pool) {
    let s = p.stats();
    assert_eq!(s.broken, 0, "{s}");
}

fn on(p: &ProbeReport, backend: &str) -> usize {
    p.per_backend.get(backend).copied().unwrap_or(0)
}

fn avoids(backend: &'static str) -> impl Fn(&ProbeReport) -> bool {
    move |p| p.failures() == 0 && on(p, backend) == 0
}

fn matches_shares(shares: BTreeMap<String, f64>, tol: f64) -> impl Fn(&ProbeReport) -> bool {
    move |p| {
        let total = p.answered().max(1) as f64;
        p.failures() == 0
            && shares
                .iter()
                .all(|(b, s)| (on(p, b) as f64 / total - s).abs() <= tol)
    }
}

/// Two seconds into a drain: nothing broke and `backend` still holds its `open` connections.
fn assert_drain_keeps(p: &Pool, backend: &str, open: usize) {
    hold(Duration::from_secs(2));
    assert_no_broken(p);
    assert_eq!(
        p.open_on(backend),
        open,
        "{backend} keeps its connections while draining"
    );
}

/// Wait until 200 new IPv4 connections in a row avoid `backend` (at most 10 s).
fn new_flows_avoid(sys: &System, backend: &'static str) {
    sys.wait_new_flows(Family::V4, 200, Duration::from_secs(10), avoids(backend))
        .unwrap();
}

#[test]
fn new_connections_spread_over_the_backends_in_line_with_the_table() {
    let (_g, sys) = start(SystemOptions::default());
    let shares = sys.expected_shares().unwrap();
    assert_eq!(shares.len(), 3);
    for f in FAMILIES {
        let p = probe_tcp(&sys.lab().ns(Node::Client), addr::vip_tcp(f), 900, 16).unwrap();
        assert!(
            matches_shares(shares.clone(), 0.06)(&p),
            "{f:?}: {p} vs table {shares:?}"
        );
    }
}

#[test]
fn drain_then_deactivate_then_activate_breaks_no_connection() {
    let (_g, sys) = start(SystemOptions::default());
    let p = pool(&sys, addr::vip_tcp(Family::V4), 300);
    let on3 = p.open_on("backend-3");
    assert!(on3 > 50, "{}", p.stats());

    sys.tablegen(&["drain", "backend-3"]).unwrap();
    new_flows_avoid(&sys, "backend-3");
    let before = p.exchanges_on("backend-3");
    assert_drain_keeps(&p, "backend-3", on3);
    assert!(
        p.exchanges_on("backend-3") > before + on3 as u64 * 10,
        "they keep exchanging"
    );

    // Its clients finish; then it leaves the table.
    p.close_backend("backend-3");
    hold(Duration::from_millis(300));
    sys.tablegen(&["deactivate", "backend-3"]).unwrap();
    new_flows_avoid(&sys, "backend-3");
    hold(Duration::from_secs(1));
    assert_no_broken(&p);

    sys.tablegen(&["activate", "backend-3"]).unwrap();
    let shares = sys.expected_shares().unwrap();
    sys.wait_new_flows(
        Family::V4,
        300,
        Duration::from_secs(10),
        matches_shares(shares, 0.08),
    )
    .unwrap();
    hold(Duration::from_secs(2));
    let report = p.stop();
    assert_unbroken(&report);
    assert_eq!(report.stats.closed, on3);
}

#[test]
fn a_backend_not_in_the_config_before_is_added_without_breaking_connections() {
    let opts = SystemOptions {
        lab: LabOptions {
            backends: 4,
            ..LabOptions::default()
        },
        configured: 3,
        consul: false,
        metrics: false,
    };
    let (_g, sys) = start(opts);
    let p = pool(&sys, addr::vip_tcp(Family::V4), 300);
    let probe = probe_tcp(
        &sys.lab().ns(Node::Client),
        addr::vip_tcp(Family::V4),
        100,
        8,
    )
    .unwrap();
    assert_eq!(on(&probe, "backend-4"), 0, "{probe}");

    // The operator adds the new backend to the file as `filling`, then makes it active.
    let path = sys.backends_yaml();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("      - { name: backend-4, address: 10.200.2.24, state: filling }\n");
    sys.lab().write_file("backends.yaml", &text).unwrap();
    sys.wait_new_flows(Family::V4, 200, Duration::from_secs(10), |p| {
        p.failures() == 0 && on(p, "backend-4") > 20
    })
    .unwrap();
    sys.tablegen(&["activate", "backend-4"]).unwrap();
    let shares = sys.expected_shares().unwrap();
    assert_eq!(shares.len(), 4);
    sys.wait_new_flows(
        Family::V4,
        400,
        Duration::from_secs(10),
        matches_shares(shares, 0.08),
    )
    .unwrap();
    hold(Duration::from_secs(2));
    assert_unbroken(&p.stop());
}

#[test]
fn a_director_dying_while_traffic_flows_breaks_no_connection() {
    let (_g, sys) = start(SystemOptions::default());
    let p4 = pool(&sys, addr::vip_tcp(Family::V4), 200);
    let p6 = pool(&sys, addr::vip_tcp(Family::V6), 100);
    hold(Duration::from_millis(500));
    sys.kill_director_host(1).unwrap();
    hold(Duration::from_secs(3));
    assert_no_broken(&p4);
    assert_no_broken(&p6);
    let probe = probe_tcp(
        &sys.lab().ns(Node::Client),
        addr::vip_tcp(Family::V4),
        200,
        16,
    )
    .unwrap();
    assert_eq!(
        probe.failures(),
        0,
        "new connections still work with one director: {probe}"
    );
    sys.revive_director_host(1).unwrap();
    hold(Duration::from_secs(2));
    assert_unbroken(&p4.stop());
    assert_unbroken(&p6.stop());
}

#[test]
fn restarting_a_director_daemon_while_traffic_flows_breaks_no_connection() {
    let (_g, sys) = start(SystemOptions::default());
    let p = pool(&sys, addr::vip_tcp(Family::V4), 300);
    for i in 1..=2 {
        sys.stop_director(i).unwrap();
        // The stopped daemon withdrew its VIPs, so the router sends everything to the other
        // director; its program and tables stay pinned and attached and keep forwarding
        // whatever still arrives meanwhile: old and new connections alike go on.
        let probe = probe_tcp(
            &sys.lab().ns(Node::Client),
            addr::vip_tcp(Family::V4),
            100,
            8,
        )
        .unwrap();
        assert_eq!(probe.failures(), 0, "director-{i} daemon down: {probe}");
        hold(Duration::from_millis(500));
        sys.start_director(i).unwrap();
        // Announced again before the other director's turn: the router has both paths.
        sys.wait_announced().unwrap();
        hold(Duration::from_secs(1));
    }
    assert_unbroken(&p.stop());
}

#[test]
fn a_bad_edit_of_backends_yaml_changes_nothing_and_the_good_edit_after_it_takes_effect() {
    let (_g, sys) = start(SystemOptions::default());
    let p = pool(&sys, addr::vip_tcp(Family::V4), 200);
    let path = sys.backends_yaml();
    let good = std::fs::read_to_string(&path).unwrap();
    let bad = good.replace(
        "address: 10.200.2.23 }",
        "address: 10.200.2.23, state: drainig }",
    );
    assert_ne!(good, bad);
    sys.lab().write_file("backends.yaml", &bad).unwrap();
    hold(Duration::from_secs(2));
    let probe = probe_tcp(
        &sys.lab().ns(Node::Client),
        addr::vip_tcp(Family::V4),
        300,
        16,
    )
    .unwrap();
    let shares = sys.expected_shares_of(&good).unwrap();
    assert!(
        matches_shares(shares, 0.1)(&probe),
        "the old table still serves: {probe}"
    );
    for i in 1..=2 {
        let log = sys.lab().log(&format!("xdplb-director-{i}"));
        assert!(
            log.contains("backends.yaml:"),
            "director-{i} says where the error is:\n{log}"
        );
    }

    let fixed = good.replace(
        "address: 10.200.2.23 }",
        "address: 10.200.2.23, state: draining }",
    );
    sys.lab().write_file("backends.yaml", &fixed).unwrap();
    new_flows_avoid(&sys, "backend-3");
    hold(Duration::from_secs(1));
    assert_unbroken(&p.stop());
}

#[test]
fn second_chance_shows_in_the_redirector_counters_during_a_drain() {
    let (_g, sys) = start(SystemOptions::default());
    let p = pool(&sys, addr::vip_tcp(Family::V4), 200);
    // Packets backends 1 and 2 passed on (to backend-3: nothing else is draining).
    let forwarded_by_others = || -> u64 {
        (1..=2)
            .map(|i| sys.redirector_counter(i, "forward").unwrap())
            .sum()
    };
    let before = forwarded_by_others();
    sys.tablegen(&["drain", "backend-3"]).unwrap();
    sys.wait_new_flows(
        Family::V4,
        100,
        Duration::from_secs(10),
        avoids("backend-3"),
    )
    .unwrap();
    let ex3 = p.exchanges_on("backend-3");
    hold(Duration::from_secs(2));
    let forwarded = forwarded_by_others() - before;
    let exchanged = p.exchanges_on("backend-3") - ex3;
    // Every request on a backend-3 connection now goes to its new primary first and on to
    // backend-3 from there.
    assert!(exchanged > 100, "{}", p.stats());
    assert!(
        forwarded >= exchanged,
        "{forwarded} packets passed on for {exchanged} exchanges"
    );
    assert_unbroken(&p.stop());
}

#[test]
fn ipv6_vip_and_the_udp_service_work_end_to_end() {
    let (_g, sys) = start(SystemOptions::default());
    let p = pool(&sys, addr::vip_tcp(Family::V6), 300);
    for f in FAMILIES {
        let u = probe_udp(&sys.lab().ns(Node::Client), addr::vip_udp(f), 300, 16).unwrap();
        assert_eq!(u.failures(), 0, "{f:?} UDP: {u}");
        assert_eq!(u.per_backend.len(), 3, "{f:?} UDP spreads: {u}");
    }
    hold(Duration::from_secs(2));
    let report = p.stop();
    assert_unbroken(&report);
    assert_eq!(report.stats.per_backend.len(), 3, "{}", report.stats);
}

#[test]
fn an_icmp_too_big_about_a_live_flow_reaches_the_backend_that_owns_it() {
    let (_g, sys) = start(SystemOptions::default());
    for f in FAMILIES {
        let p = pool(&sys, addr::vip_tcp(f), 30);
        let watches: Vec<TooBigWatch> = (1..=3)
            .map(|i| TooBigWatch::start(&sys.lab().ns(Node::Backend(i)), f.vip()).unwrap())
            .collect();
        let conns = p.conns();
        // One flow per backend, so a misdirected message shows.
        let mut sent = BTreeMap::new();
        for c in &conns {
            let (Some(b), Some(local)) = (&c.backend, c.local) else {
                continue;
            };
            if sent.contains_key(b) {
                continue;
            }
            send_too_big(&sys.lab().ns(Node::Router), addr::vip_tcp(f), local, 1400).unwrap();
            sent.insert(b.clone(), local.port());
        }
        assert_eq!(sent.len(), 3, "{}", p.stats());
        for (i, w) in watches.iter().enumerate() {
            let name = format!("backend-{}", i + 1);
            let got = w.quoted_client_ports(Duration::from_millis(500));
            assert_eq!(
                got,
                vec![sent[&name]],
                "{f:?}: {name} gets exactly its own flow's message"
            );
        }
        assert_unbroken(&p.stop());
    }
}

#[test]
fn ipv6_backends_get_gue_over_ipv6_and_drain_without_breaking() {
    let (_g, sys) = start(SystemOptions::default());
    // Two services: `web` on the IPv4 VIP with the backends' IPv4 addresses (as before), and
    // `web6` on the IPv6 VIP with their IPv6 addresses: GUE over IPv6, IPv6 hop lists.
    let mut text = String::from("services:\n");
    for (name, f, seed) in [
        ("web", Family::V4, lab::system::SEED),
        ("web6", Family::V6, "a1b2c3d4e5f60718293a4b5c6d7e8f90"),
    ] {
        text.push_str(&format!(
            "  - name: {name}\n    hash_key: {}\n    seed: {seed}\n    table_bits: 16\n    \
             hash: [src_ip, src_port, dst_ip, dst_port]\n    binds:\n      \
             - {{ vip: \"{}\", proto: tcp, port: 80 }}\n      \
             - {{ vip: \"{}\", proto: udp, port: 53 }}\n    backends:\n",
            lab::system::HASH_KEY,
            f.vip(),
            f.vip()
        ));
        for i in 1..=3 {
            let a = addr::backend(f, i);
            text.push_str(&format!(
                "      - {{ name: backend-{i}, address: \"{a}\" }}\n"
            ));
        }
    }
    sys.lab().write_file("backends.yaml", &text).unwrap();
    sys.tablegen(&["check"]).unwrap();
    let client = sys.lab().ns(Node::Client);
    // The IPv6 VIP moves to another service (another seed): connections opened before both
    // directors have it would move too, so wait for the directors, not for new flows.
    sys.wait_directors_serve(&["web", "web6"], Duration::from_secs(10))
        .unwrap();
    sys.wait_new_flows(Family::V6, 300, Duration::from_secs(10), |p| {
        p.failures() == 0 && p.per_backend.len() == 3
    })
    .unwrap();
    let p = pool(&sys, addr::vip_tcp(Family::V6), 200);
    let on3 = p.open_on("backend-3");
    sys.tablegen(&["drain", "backend-3", "--service", "web6"])
        .unwrap();
    sys.wait_new_flows(
        Family::V6,
        200,
        Duration::from_secs(10),
        avoids("backend-3"),
    )
    .unwrap();
    // Only web6 drained: IPv4 flows still reach backend-3.
    let v4 = probe_tcp(&client, addr::vip_tcp(Family::V4), 200, 16).unwrap();
    assert!(on(&v4, "backend-3") > 30, "{v4}");
    let u6 = probe_udp(&client, addr::vip_udp(Family::V6), 200, 16).unwrap();
    assert!(u6.failures() == 0 && on(&u6, "backend-3") == 0, "{u6}");
    hold(Duration::from_secs(2));
    assert_eq!(p.open_on("backend-3"), on3);
    assert_unbroken(&p.stop());
}

#[test]
fn stopping_the_system_leaves_nothing_behind() {
    let (_g, sys) = start(SystemOptions::default());
    let prefix = sys.lab().prefix().to_owned();
    let run_dir = sys.lab().run_dir().to_owned();
    let bpffs = sys.lab().bpffs().unwrap();
    let mounts = || std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(mounts().contains(bpffs.to_str().unwrap()));
    drop(sys);
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(!list.contains(&prefix), "namespaces left: {list}");
    assert!(
        !mounts().contains(bpffs.to_str().unwrap()),
        "bpffs still mounted"
    );
    assert!(!run_dir.exists(), "{} left", run_dir.display());
}

#[test]
fn consul_mode_a_published_drain_reaches_both_directors_and_breaks_no_connection() {
    let (_g, sys) = start(SystemOptions {
        consul: true,
        ..SystemOptions::default()
    });
    let p = pool(&sys, addr::vip_tcp(Family::V4), 300);
    let on3 = p.open_on("backend-3");
    assert!(on3 > 50, "{}", p.stats());

    // The operator edits the file, then publishes it; the directors only read Consul.
    sys.tablegen(&["drain", "backend-3"]).unwrap();
    sys.cluster_publish("drain backend-3").unwrap();
    new_flows_avoid(&sys, "backend-3");
    assert_drain_keeps(&p, "backend-3", on3);

    // Both directors serve the published version, with the same checksum.
    let bins = Binaries::for_tests(Path::new(SERVER)).unwrap();
    let current = sys.cluster(&["current", "--json"]).unwrap();
    let current: serde_json::Value = serde_json::from_str(&current).unwrap();
    assert_eq!(current["current"].as_u64(), Some(2), "{current}");
    let mut checksums = Vec::new();
    for i in 1..=2 {
        let node = Node::Director(i);
        let out = sys
            .lab()
            .ns(node)
            .command(&bins.director)
            .arg("--config")
            .arg(sys.lab().run_dir().join(node.name()).join("director.yaml"))
            .args(["status", "--json"])
            .run()
            .unwrap();
        let st: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            st["cluster"]["applied_version"], current["current"],
            "{out}"
        );
        assert_eq!(st["cluster"]["connected"], true, "{out}");
        assert!(
            st["source"].as_str().unwrap().starts_with("consul "),
            "{out}"
        );
        let sums: Vec<(String, String)> = st["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["name"].to_string(), s["checksum"].to_string()))
            .collect();
        assert!(!sums.is_empty(), "{out}");
        checksums.push(sums);
    }
    assert_eq!(checksums[0], checksums[1]);

    let report = p.stop();
    assert_unbroken(&report);
}
