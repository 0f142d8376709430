//! Phase-one end-to-end tests: the lab's own topology with plain routing, no xdplb component.
//! They prove what the real tests stand on: ECMP with L4 hashing over the directors, the DSR
//! return path, the server and the client driver, teardown on every path, and leftovers cleanup.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab::addr::{self, Family, FAMILIES};
use lab::client::{probe_tcp, probe_udp, Pool, PoolConfig};
use lab::{Lab, LabOptions, Node, Routing};

const SERVER: &str = env!("CARGO_BIN_EXE_xdplb-lab-server");
const LAB: &str = env!("CARGO_BIN_EXE_xdplb-lab");

/// The plain-routing self-tests need no BIRD: no director announces anything here.
fn plain_lab(routing: Routing) -> Lab {
    let lab = Lab::up(LabOptions::plain()).expect("lab up");
    lab.start_servers(Path::new(SERVER)).expect("servers");
    for i in 1..=lab.options().backends {
        lab.add_vips_on_backend(i).expect("vips on backend");
    }
    lab.route_vips(routing).expect("routes");
    lab
}

fn lab_namespaces(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

fn run_pool(
    lab: &Lab,
    target: std::net::SocketAddr,
    n: usize,
    hold: Duration,
) -> lab::client::PoolReport {
    let pool = Pool::start(&lab.ns(Node::Client), PoolConfig::new(target, n)).expect("pool");
    let s = pool.wait_established(Duration::from_secs(10));
    assert_eq!(s.established, n, "all connections up: {s}");
    std::thread::sleep(hold);
    let report = pool.stop();
    assert_eq!(
        report.stats.broken,
        0,
        "broken: {:#?}",
        report.broken_list()
    );
    assert!(report.stats.exchanges >= (n as u64) * 5, "{}", report.stats);
    report
}

#[test]
fn plain_route_to_one_backend_breaks_nothing_over_tcp_and_udp() {
    let lab = plain_lab(Routing::Backend(1));
    for f in FAMILIES {
        let report = run_pool(&lab, addr::vip_tcp(f), 200, Duration::from_secs(2));
        assert_eq!(
            report.stats.per_backend.get("backend-1"),
            Some(&200),
            "{}",
            report.stats
        );
        // Connected UDP sockets: an answer counts only if it comes from the VIP itself.
        let udp = probe_udp(&lab.ns(Node::Client), addr::vip_udp(f), 100, 10).unwrap();
        assert_eq!(udp.failures(), 0, "{udp}");
        assert_eq!(udp.per_backend.get("backend-1"), Some(&100), "{udp}");
    }
}

#[test]
fn ecmp_over_plain_directors_spreads_flows_and_breaks_nothing() {
    let lab = plain_lab(Routing::PlainDirectors);
    for f in FAMILIES {
        // Director i hands its flows to backend i: the backend tells which director carried it.
        let report = run_pool(&lab, addr::vip_tcp(f), 300, Duration::from_secs(2));
        for b in ["backend-1", "backend-2"] {
            let n = report.stats.per_backend.get(b).copied().unwrap_or(0);
            assert!(
                n >= 90,
                "{f:?}: ECMP should give each director about half: {}",
                report.stats
            );
        }
    }
}

#[test]
fn ecmp_over_backends_spreads_new_connections_over_three() {
    let lab = plain_lab(Routing::EcmpBackends);
    let probe = probe_tcp(&lab.ns(Node::Client), addr::vip_tcp(Family::V4), 600, 20).unwrap();
    assert_eq!(probe.failures(), 0, "{probe}");
    for i in 1..=3 {
        let n = probe
            .per_backend
            .get(&format!("backend-{i}"))
            .copied()
            .unwrap_or(0);
        assert!(n >= 120, "each backend about a third: {probe}");
    }
}

#[test]
fn a_director_link_going_down_leaves_the_ecmp_group_and_coming_back_rejoins() {
    let lab = plain_lab(Routing::PlainDirectors);
    let client = lab.ns(Node::Client);
    let target = addr::vip_tcp(Family::V6);
    lab.set_director_link(1, false).unwrap();
    let probe = probe_tcp(&client, target, 200, 10).unwrap();
    assert_eq!(probe.failures(), 0, "{probe}");
    assert_eq!(
        probe.per_backend.get("backend-2"),
        Some(&200),
        "only director-2 left: {probe}"
    );
    lab.set_director_link(1, true).unwrap();
    // The router takes the nexthop back when the carrier returns; give it a moment.
    let start = Instant::now();
    loop {
        let probe = probe_tcp(&client, target, 200, 10).unwrap();
        if probe.per_backend.get("backend-1").copied().unwrap_or(0) >= 50 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "director-1 never came back: {probe}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn teardown_leaves_nothing_behind_and_a_second_lab_in_a_row_works() {
    for _ in 0..2 {
        let lab = plain_lab(Routing::Backend(2));
        let prefix = lab.prefix().to_owned();
        let run_dir = lab.run_dir().to_owned();
        assert_eq!(lab_namespaces(&prefix).len(), 7);
        let probe = probe_tcp(&lab.ns(Node::Client), addr::vip_tcp(Family::V4), 20, 4).unwrap();
        assert_eq!(probe.per_backend.get("backend-2"), Some(&20), "{probe}");
        lab.shutdown().expect("clean teardown");
        assert!(lab_namespaces(&prefix).is_empty());
        assert!(!run_dir.exists());
    }
}

#[test]
fn teardown_happens_when_a_test_panics() {
    let prefix = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let lab = plain_lab(Routing::Backend(1));
        *prefix.lock().unwrap() = lab.prefix().to_owned();
        panic!("a failing assertion inside a lab test");
    });
    assert!(result.is_err());
    let prefix = prefix.into_inner().unwrap();
    assert!(prefix.starts_with("xl"));
    assert!(lab_namespaces(&prefix).is_empty());
}

fn wait_for_lab_of(pid: u32) -> String {
    let prefix = format!("xl{pid}-");
    let start = Instant::now();
    while lab_namespaces(&prefix).len() < 7 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "xdplb-lab up never came up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    prefix
}

#[test]
fn ctrl_c_tears_the_lab_down() {
    let mut child = Command::new(LAB)
        .args(["up", "--routing", "backend-1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let prefix = format!("xl{}-", child.id());
    // The steady state: `up` has printed its namespaces (servers running, routes in place).
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    // Keep the pipe open until the child exits: it still prints while tearing down.
    let mut lines = std::io::BufRead::lines(stdout).map_while(Result::ok);
    let up = lines.by_ref().any(|l| l.starts_with("namespaces:"));
    assert!(up, "xdplb-lab up never came up");
    assert_eq!(lab_namespaces(&prefix).len(), 7);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    drop(lines);
    assert!(status.success(), "{status}");
    assert!(lab_namespaces(&prefix).is_empty());
}

#[test]
fn cleanup_removes_what_a_killed_run_left_behind() {
    let mut child = Command::new(LAB)
        .args(["up", "--routing", "backend-1"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let prefix = wait_for_lab_of(child.id());
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert_eq!(
        lab_namespaces(&prefix).len(),
        7,
        "a killed run leaves its namespaces"
    );
    let out = Command::new(LAB).arg("cleanup").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        lab_namespaces(&prefix).is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let run_dir = Path::new(lab::topology::RUN_ROOT).join(prefix.trim_end_matches('-'));
    assert!(!run_dir.exists());
}

#[test]
fn the_client_driver_counts_every_connection_that_breaks() {
    let lab = plain_lab(Routing::Backend(1));
    let target = addr::vip_tcp(Family::V4);
    let pool = Pool::start(&lab.ns(Node::Client), PoolConfig::new(target, 50)).unwrap();
    assert_eq!(
        pool.wait_established(Duration::from_secs(10)).established,
        50
    );
    // Moving the VIP to another backend mid-connection: backend-2 has no such connections and
    // answers each one's next segment with a reset.
    lab.route_vips(Routing::Backend(2)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let report = pool.stop();
    assert_eq!(report.stats.broken, 50, "{}", report.stats);
    assert_eq!(
        report.stats.broken_by_kind.get("reset"),
        Some(&50),
        "{}",
        report.stats
    );
}
