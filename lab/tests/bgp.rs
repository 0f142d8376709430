//! BGP end to end: real BIRD 2 on the router and on both directors (`LabOptions::bgp`), the
//! VIP routes learnt from what each `xdplb-director` announces (no static VIP route), BFD on
//! every session, and hundreds of long-lived TCP connections counted for breakage while
//! announcements come and go.
//!
//! A crashed daemon (SIGKILL) is detected by its supervisor, the lab's stand-in for systemd:
//! it runs the unit's ExecStopPost command (`xdplb-director flush-announcements`) once the
//! daemon is gone; the director's BIRD then withdraws. A dead link is BFD's to detect.
//! The scenarios run one at a time (a lock), as in e2e.rs.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use lab::addr::{self, Family, FAMILIES};
use lab::client::{probe_tcp, Pool, PoolConfig, PoolReport};
use lab::system::{Binaries, System, SystemOptions, LAB_DRAIN_DELAY};
use lab::{LabOptions, Node};

const SERVER: &str = env!("CARGO_BIN_EXE_xdplb-lab-server");
static SERIAL: Mutex<()> = Mutex::new(());

fn start() -> (MutexGuard<'static, ()>, System) {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bins = Binaries::for_tests(Path::new(SERVER)).expect("build the daemons");
    let opts = SystemOptions {
        lab: LabOptions::default().with_bgp(),
        ..SystemOptions::default()
    };
    let sys = System::start(bins, opts).expect("start xdplb with BGP in the lab");
    (guard, sys)
}

fn pool(sys: &System, n: usize) -> Pool {
    let p = Pool::start(
        &sys.lab().ns(Node::Client),
        PoolConfig::new(addr::vip_tcp(Family::V4), n),
    )
    .unwrap();
    let s = p.wait_established(Duration::from_secs(15));
    assert_eq!(s.established, n, "every connection up: {s}");
    p
}

fn assert_unbroken(report: &PoolReport) {
    assert_eq!(
        report.stats.broken,
        0,
        "broken connections: {:#?}",
        report.broken_list()
    );
}

/// Packets director `i`'s program forwarded for the services so far.
fn forwarded(sys: &System, i: usize) -> u64 {
    let s: serde_json::Value = serde_json::from_str(&sys.director_status(i).unwrap()).unwrap();
    s["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["packets"].as_u64().unwrap())
        .sum()
}

/// Director `i`'s status: per VIP (as text) whether it announces and why not.
fn announced(sys: &System, i: usize) -> Vec<(String, Option<String>, Vec<String>)> {
    let s: serde_json::Value = serde_json::from_str(&sys.director_status(i).unwrap()).unwrap();
    s["announce"]["vips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["vip"].as_str().unwrap().to_string(),
                v["token"].as_str().map(str::to_string),
                v["why_not"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| w.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

/// New connections all get answers (through whatever paths the router has now).
fn new_connections_answered(sys: &System) {
    for f in FAMILIES {
        let p = probe_tcp(&sys.lab().ns(Node::Client), addr::vip_tcp(f), 100, 8).unwrap();
        assert_eq!(p.failures(), 0, "{f:?}: {p}");
    }
}

#[test]
fn both_directors_announce_and_the_router_spreads_over_both() {
    let (_g, sys) = start();
    for f in FAMILIES {
        assert_eq!(sys.lab().vip_paths(f).unwrap(), vec![1, 2], "{f:?}");
    }
    // The router learnt them from BIRD, none is static.
    let routes = sys
        .lab()
        .ns(Node::Router)
        .ip(["-4", "route", "show", "exact", &addr::VIP_V4.to_string()])
        .unwrap();
    assert!(routes.contains("proto bird"), "{routes}");
    for i in 1..=2 {
        for (vip, token, why) in announced(&sys, i) {
            assert_eq!(token.as_deref(), Some("announce"), "{vip}: {why:?}");
        }
    }
    let before = [forwarded(&sys, 1), forwarded(&sys, 2)];
    new_connections_answered(&sys);
    let after = [forwarded(&sys, 1), forwarded(&sys, 2)];
    for i in 0..2 {
        assert!(
            after[i] > before[i] + 50,
            "director-{} forwarded {} packets",
            i + 1,
            after[i] - before[i]
        );
    }
}

#[test]
fn a_killed_daemon_is_withdrawn_and_no_connection_breaks() {
    let (_g, sys) = start();
    let p = pool(&sys, 200);
    std::thread::sleep(Duration::from_secs(1));
    sys.kill_director_daemon(1).unwrap();
    let took = sys
        .lab()
        .wait_vip_paths(&[2], Duration::from_secs(10))
        .unwrap();
    println!("director-1's daemon killed: router path gone after {took:?}");
    // Its program still forwards what reaches it; the router sends nothing more its way.
    std::thread::sleep(Duration::from_secs(2));
    new_connections_answered(&sys);
    let report = p.stop();
    assert_unbroken(&report);
    let status = sys.director_cmd(1, &["status"]).unwrap();
    assert!(
        status.contains("NOT ANNOUNCED") && status.contains("the daemon is not running"),
        "{status}"
    );
}

#[test]
fn link_down_withdraws_and_traffic_moves() {
    let (_g, sys) = start();
    let p = pool(&sys, 200);
    sys.lab().set_director_link(2, false).unwrap();
    let took = sys
        .lab()
        .wait_vip_paths(&[1], Duration::from_secs(10))
        .unwrap();
    println!("director-2's link down: router path gone after {took:?}");
    std::thread::sleep(Duration::from_secs(1));
    new_connections_answered(&sys);
    let why = announced(&sys, 2);
    assert!(
        why.iter()
            .all(|(_, t, w)| t.is_none() && w.iter().any(|w| w.contains("eth0 is down"))),
        "{why:?}"
    );
    sys.lab().set_director_link(2, true).unwrap();
    sys.lab()
        .wait_vip_paths(&[1, 2], Duration::from_secs(20))
        .unwrap();
    new_connections_answered(&sys);
    assert_unbroken(&p.stop());
}

#[test]
fn xdp_detached_by_hand_withdraws() {
    let (_g, sys) = start();
    let p = pool(&sys, 200);
    // The operator takes the program away behind the daemon's back.
    let ns = sys.lab().ns(Node::Director(1));
    let links = ns
        .command("bpftool")
        .args(["-j", "link", "show"])
        .run()
        .unwrap();
    let links: serde_json::Value = serde_json::from_str(&links).unwrap();
    let id = links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["type"] == "xdp")
        .map(|l| l["id"].as_u64().unwrap())
        .expect("the director's xdp link");
    // Only the director's own links: the lab's pass programs on the router are not in its
    // namespace, but bpftool lists links of every namespace; pick director-1's by ifindex.
    let _ = id;
    let ifindex = ns.ip(["-j", "link", "show", "dev", "eth0"]).unwrap();
    let ifindex: serde_json::Value = serde_json::from_str(&ifindex).unwrap();
    let ifindex = ifindex[0]["ifindex"].as_u64().unwrap();
    let prog = ns.ip(["-d", "-j", "link", "show", "dev", "eth0"]).unwrap();
    let prog: serde_json::Value = serde_json::from_str(&prog).unwrap();
    let prog_id = prog[0]["xdp"]["prog"]["id"].as_u64().expect("xdp prog id");
    let link = links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            l["type"] == "xdp"
                && l["prog_id"].as_u64() == Some(prog_id)
                && l["ifindex"].as_u64() == Some(ifindex)
        })
        .map(|l| l["id"].as_u64().unwrap())
        .expect("director-1's xdp link");
    ns.command("bpftool")
        .args(["link", "detach", "id", &link.to_string()])
        .run()
        .unwrap();
    sys.lab()
        .wait_vip_paths(&[2], Duration::from_secs(10))
        .unwrap();
    let why = announced(&sys, 1);
    assert!(
        why.iter()
            .all(|(_, t, w)| t.is_none() && w.iter().any(|w| w.contains("no xdp program"))),
        "{why:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    new_connections_answered(&sys);
    assert_unbroken(&p.stop());
}

#[test]
fn graceful_drain_moves_traffic_then_withdraws_and_undrain_brings_it_back() {
    let (_g, sys) = start();
    let p = pool(&sys, 200);
    let out = sys.director_cmd(1, &["drain-announcements"]).unwrap();
    assert!(out.contains("drained"), "{out}");
    // The router prefers director-2 at once (GRACEFUL_SHUTDOWN: local pref 0)...
    let took = sys
        .lab()
        .wait_vip_paths(&[2], Duration::from_secs(5))
        .unwrap();
    println!("drain: one path after {took:?}");
    let graceful = sys
        .lab()
        .birdc(
            Node::Router,
            &["show", "route", "all", &format!("{}/32", addr::VIP_V4)],
        )
        .unwrap();
    assert!(graceful.contains("(65535,0)"), "{graceful}");
    for (vip, t, w) in announced(&sys, 1) {
        assert_eq!(t.as_deref(), Some("graceful"), "{vip}: {w:?}");
    }
    // ...and after the delay director-1 withdraws: the router has no route from it at all.
    std::thread::sleep(LAB_DRAIN_DELAY + Duration::from_secs(1));
    let gone = sys
        .lab()
        .birdc(
            Node::Router,
            &["show", "route", &format!("{}/32", addr::VIP_V4)],
        )
        .unwrap();
    assert!(
        !gone.contains(&addr::director(Family::V4, 1).to_string()),
        "{gone}"
    );
    for (vip, t, w) in announced(&sys, 1) {
        assert_eq!(t, None, "{vip}: {w:?}");
    }
    // The drain outlives a daemon restart.
    sys.stop_director(1).unwrap();
    sys.start_director(1).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sys.lab().vip_paths(Family::V4).unwrap(), vec![2]);
    new_connections_answered(&sys);

    let out = sys.director_cmd(1, &["undrain-announcements"]).unwrap();
    assert!(out.contains("undrained"), "{out}");
    let took = sys
        .lab()
        .wait_vip_paths(&[1, 2], Duration::from_secs(10))
        .unwrap();
    println!("undrain: two paths after {took:?}");
    new_connections_answered(&sys);
    assert_unbroken(&p.stop());
}

#[test]
fn bird_gone_is_said_and_forwarding_goes_on() {
    let (_g, sys) = start();
    sys.lab()
        .stop(
            &lab::Lab::bird_label(Node::Director(1)),
            nix::sys::signal::Signal::SIGTERM,
            Duration::from_secs(3),
        )
        .unwrap();
    let _ = std::fs::remove_file(sys.lab().bird_socket(Node::Director(1)));
    // BFD: the router drops director-1's path within a second.
    sys.lab()
        .wait_vip_paths(&[2], Duration::from_secs(5))
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let status = sys.director_cmd(1, &["status"]).unwrap();
    assert!(status.contains("BIRD NOT REACHABLE"), "{status}");
    assert!(
        sys.lab()
            .log("xdplb-director-1")
            .contains("bird not reachable on its control socket"),
        "the log says so"
    );
    // The daemon and its program go on; the tokens stay for when BIRD is back.
    for (vip, t, w) in announced(&sys, 1) {
        assert_eq!(t.as_deref(), Some("announce"), "{vip}: {w:?}");
    }
    new_connections_answered(&sys);
    sys.lab().start_bird(Node::Director(1)).unwrap();
    sys.lab()
        .wait_vip_paths(&[1, 2], Duration::from_secs(20))
        .unwrap();
}
