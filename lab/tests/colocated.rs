//! The co-located layout (docs/setup/colocated.md) end to end: no director hosts; the router
//! spreads the VIPs over three backends by static ECMP routes, and each backend runs its
//! redirector and a co-located `xdplb-director` on the same eth0. Hundreds of real TCP
//! connections exchange data throughout, with a precise count of broken ones.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use lab::addr::{self, Family, FAMILIES};
use lab::client::probe_tcp;
use lab::client::{Pool, PoolConfig, ProbeReport};
use lab::system::{Binaries, System};
use lab::Node;

const SERVER: &str = env!("CARGO_BIN_EXE_xdplb-lab-server");
static SERIAL: Mutex<()> = Mutex::new(());

fn start() -> (MutexGuard<'static, ()>, System) {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bins = Binaries::for_tests(Path::new(SERVER)).expect("build the daemons");
    let sys = System::start_colocated(bins, 3).expect("start the co-located layout");
    (guard, sys)
}

fn pool(sys: &System, family: Family, n: usize) -> Pool {
    let p = Pool::start(
        &sys.lab().ns(Node::Client),
        PoolConfig::new(addr::vip_tcp(family), n),
    )
    .unwrap();
    let s = p.wait_established(Duration::from_secs(20));
    assert_eq!(s.established, n, "every connection up: {s}");
    p
}

fn on(p: &ProbeReport, backend: &str) -> usize {
    p.per_backend.get(backend).copied().unwrap_or(0)
}

fn assert_no_broken(p: &Pool) {
    let s = p.stats();
    assert_eq!(s.broken, 0, "{s}");
}

/// 300 long-lived connections per family reach all three hosts; each host delivers the
/// packets whose primary it is without sending them out (`colocated_direct`), and sends the
/// others on in GUE; then drain, deactivate and activate one backend while they flow: none
/// breaks.
#[test]
fn colocated_connections_reach_every_host_and_survive_drain_deactivate_activate() {
    let (_g, sys) = start();
    let pools: Vec<Pool> = FAMILIES.iter().map(|f| pool(&sys, *f, 300)).collect();
    for p in &pools {
        for b in ["backend-1", "backend-2", "backend-3"] {
            assert!(p.open_on(b) > 30, "{b}: {}", p.stats());
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    for i in 1..=3 {
        let direct = sys
            .colocated_director_counter(i, "colocated_direct")
            .unwrap();
        assert!(
            direct > 100,
            "backend-{i} delivered its own flows here: {direct}"
        );
        // What the others' directors sent it arrived as GUE, decapsulated by its redirector.
        let socket = sys.redirector_counter(i, "socket").unwrap();
        assert!(
            socket > 100,
            "backend-{i} got its flows from the other hosts: {socket}"
        );
    }

    let on3: Vec<usize> = pools.iter().map(|p| p.open_on("backend-3")).collect();
    sys.tablegen(&["drain", "backend-3"]).unwrap();
    sys.wait_new_flows(Family::V4, 200, Duration::from_secs(10), |p| {
        p.failures() == 0 && on(p, "backend-3") == 0
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    for (p, n) in pools.iter().zip(&on3) {
        assert_no_broken(p);
        assert_eq!(
            p.open_on("backend-3"),
            *n,
            "backend-3 keeps its connections"
        );
    }
    for p in &pools {
        p.close_backend("backend-3");
    }
    std::thread::sleep(Duration::from_millis(300));
    sys.tablegen(&["deactivate", "backend-3"]).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    sys.tablegen(&["activate", "backend-3"]).unwrap();
    sys.wait_new_flows(Family::V4, 300, Duration::from_secs(10), |p| {
        p.failures() == 0 && on(p, "backend-3") > 50
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    for (p, n) in pools.into_iter().zip(on3) {
        let report = p.stop();
        assert_eq!(
            report.stats.broken,
            0,
            "broken connections: {:#?}",
            report.broken_list()
        );
        assert_eq!(report.stats.closed, n);
    }
}

/// Host 3 dies (its link goes down and the router takes it out of the ECMP group): the flows
/// the router sent it move to the other two hosts, whose directors send them to the same
/// backends, so no connection on backend-1 or backend-2 breaks; once backend-3 is out of the
/// table (`tablegen deactivate`, what its failing health checks would do), new connections
/// spread over the other two.
#[test]
fn a_host_dying_breaks_only_its_own_connections() {
    let (_g, sys) = start();
    let p = pool(&sys, Family::V4, 300);
    sys.lab()
        .ns(Node::Backend(3))
        .ip(["link", "set", "eth0", "down"])
        .unwrap();
    sys.route_colocated(&[1, 2]).unwrap();
    sys.tablegen(&["deactivate", "backend-3"]).unwrap();
    sys.wait_new_flows(Family::V4, 200, Duration::from_secs(10), |p| {
        p.failures() == 0
            && on(p, "backend-3") == 0
            && on(p, "backend-1") > 0
            && on(p, "backend-2") > 0
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let report = p.stop();
    let broken = &report.stats.broken_per_backend;
    for b in ["backend-1", "backend-2"] {
        assert_eq!(
            broken.get(b).copied().unwrap_or(0),
            0,
            "{b}: {:#?}",
            report.broken_list()
        );
    }
}

/// A fourth host joins the ECMP group while 300 connections flow, its backend added to the
/// table as `filling` first: a quarter of the flows' packets now arrive at the new host, whose
/// director sends them to the same backends; none breaks. Then `activate`: new flows reach
/// it.
#[test]
fn a_host_added_to_the_ecmp_group_breaks_no_connection() {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bins = Binaries::for_tests(Path::new(SERVER)).expect("build the daemons");
    let sys = System::start_colocated_with(bins, 4, 3).expect("start the co-located layout");
    let p = pool(&sys, Family::V4, 300);
    let probe = probe_tcp(
        &sys.lab().ns(Node::Client),
        addr::vip_tcp(Family::V4),
        100,
        8,
    )
    .unwrap();
    assert_eq!(on(&probe, "backend-4"), 0, "{probe}");

    let path = sys.backends_yaml();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("      - { name: backend-4, address: 10.200.2.24, state: filling }\n");
    sys.lab().write_file("backends.yaml", &text).unwrap();
    // Every host's director has the new table before the router sends anything to host 4.
    std::thread::sleep(Duration::from_secs(2));
    sys.route_colocated(&[1, 2, 3, 4]).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_no_broken(&p);
    // Host 4 now directs a quarter of the flows: counted by its director as forwards or
    // deliveries of its own.
    let (dropped, passed) = (
        sys.colocated_director_counter(4, "no_backend").unwrap(),
        sys.colocated_director_counter(4, "no_neigh").unwrap(),
    );
    assert_eq!(
        (dropped, passed),
        (0, 0),
        "host 4 forwards, never drops or punts"
    );
    sys.tablegen(&["activate", "backend-4"]).unwrap();
    sys.wait_new_flows(Family::V4, 200, Duration::from_secs(10), |p| {
        p.failures() == 0 && on(p, "backend-4") > 20
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let report = p.stop();
    assert_eq!(
        report.stats.broken,
        0,
        "broken connections: {:#?}",
        report.broken_list()
    );
    drop(sys);
    drop(guard);
}
