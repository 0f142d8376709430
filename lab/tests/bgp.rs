//! BGP end to end: real BIRD 2 on the router and on both directors (the lab's default), the
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
use lab::system::{backends_yaml, BackendLine, Binaries, System, SystemOptions, LAB_DRAIN_DELAY};
use lab::Node;

const SERVER: &str = env!("CARGO_BIN_EXE_xdplb-lab-server");
static SERIAL: Mutex<()> = Mutex::new(());

fn start() -> (MutexGuard<'static, ()>, System) {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bins = Binaries::for_tests(Path::new(SERVER)).expect("build the daemons");
    let opts = SystemOptions {
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

/// Wait (15 s at most) until both directors see every backend of `services` healthy.
fn wait_all_healthy(sys: &System, services: &[&str]) {
    let t0 = std::time::Instant::now();
    loop {
        let views: Vec<serde_json::Value> = (1..=2)
            .map(|i| serde_json::from_str(&sys.director_status(i).unwrap()).unwrap())
            .collect();
        let all = views.iter().all(|v| {
            services.iter().all(|svc| {
                v["health"]["backends"][*svc].as_object().is_some_and(|m| {
                    m.len() == 3 && m.values().all(|t| t["healthy"].as_bool() == Some(true))
                })
            })
        });
        if all {
            return;
        }
        let health: Vec<_> = views.iter().map(|v| &v["health"]["backends"]).collect();
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "every backend healthy on both directors: {health:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
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

    // Restarted, it announces again.
    sys.stop_director(1).unwrap();
    sys.start_director(1).unwrap();
    let took = sys.wait_announced().unwrap();
    println!("director-1's daemon restarted: both paths after {took:?}");
    // A flush behind the running daemon's back (a stray ExecStopPost of an older run, an
    // operator's `flush-announcements`) is noticed and undone within the resync period.
    sys.director_cmd(1, &["flush-announcements"]).unwrap();
    sys.lab()
        .wait_vip_paths(&[2], Duration::from_secs(5))
        .unwrap();
    let took = sys.wait_announced().unwrap();
    println!("tokens flushed behind director-1's back: both paths again after {took:?}");
    assert!(
        sys.lab()
            .log("xdplb-director-1")
            .contains("route tokens changed behind the daemon's back"),
        "the log says so"
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
    // The operator takes the program away behind the daemon's back: the program on eth0 (in
    // director-1's namespace), then its link (program ids are unique on the host).
    let ns = sys.lab().ns(Node::Director(1));
    let net = ns
        .command("bpftool")
        .args(["-j", "net", "show", "dev", "eth0"])
        .run()
        .unwrap();
    let net: serde_json::Value = serde_json::from_str(&net).unwrap();
    let prog_id = net[0]["xdp"][0]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("xdp program on eth0: {net}"));
    let links = ns
        .command("bpftool")
        .args(["-j", "link", "show"])
        .run()
        .unwrap();
    let links: serde_json::Value = serde_json::from_str(&links).unwrap();
    let link = links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["prog_id"].as_u64() == Some(prog_id))
        .map(|l| l["id"].as_u64().unwrap())
        .unwrap_or_else(|| panic!("the link of program {prog_id}: {links}"));
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

/// Director `i`'s token for `vip`.
fn token_of(sys: &System, i: usize, vip: &str) -> Option<String> {
    announced(sys, i)
        .into_iter()
        .find(|(v, _, _)| v == vip)
        .and_then(|(_, t, _)| t)
}

fn wait_token(sys: &System, i: usize, vip: &str, want: Option<&str>) {
    let t0 = std::time::Instant::now();
    while token_of(sys, i, vip).as_deref() != want {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "director-{i} {vip}: {:?}",
            announced(sys, i)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn refused_tables_withdraw_that_director_only() {
    let (_g, sys) = start();
    // Director-2 gets a backends.yaml of its own, the same text to begin with.
    let own = sys.lab().run_dir().join("director-2").join("backends.yaml");
    let good = std::fs::read_to_string(sys.backends_yaml()).unwrap();
    sys.lab()
        .write_file("director-2/backends.yaml", &good)
        .unwrap();
    // A file of its own is the case where stepping aside on a refused file is right (the
    // lab's shared file has it off).
    let yaml = sys
        .director_yaml(2)
        .unwrap()
        .replace(
            &sys.backends_yaml().display().to_string(),
            &own.display().to_string(),
        )
        .replace(
            "withdraw_when_refused: false",
            "withdraw_when_refused: true",
        );
    assert!(yaml.contains("withdraw_when_refused: true"), "{yaml}");
    sys.stop_director(2).unwrap();
    sys.start_director_with(2, &yaml).unwrap();
    sys.lab()
        .wait_vip_paths(&[1, 2], Duration::from_secs(20))
        .unwrap();
    let p = pool(&sys, 200);
    // A file that does not validate: director-2 keeps forwarding with its last good tables,
    // and steps aside.
    sys.lab()
        .write_file("director-2/backends.yaml", "services: [ { name: web } ]\n")
        .unwrap();
    let took = sys
        .lab()
        .wait_vip_paths(&[1], Duration::from_secs(10))
        .unwrap();
    println!("director-2's tables refused: router path gone after {took:?}");
    let why = announced(&sys, 2);
    assert!(
        why.iter()
            .all(|(_, t, w)| t.is_none() && w.iter().any(|w| w.contains("tables refused"))),
        "{why:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    new_connections_answered(&sys);
    sys.lab()
        .write_file("director-2/backends.yaml", &good)
        .unwrap();
    sys.lab()
        .wait_vip_paths(&[1, 2], Duration::from_secs(20))
        .unwrap();
    new_connections_answered(&sys);
    assert_unbroken(&p.stop());
}

/// Two services, one per VIP: `web4` checked through the tunnel (gue), `web6` by a TCP
/// connect to port 80. Director-1 alone cannot connect to any backend's port 80 (a policy
/// rule refuses its own TCP; the GUE it forwards is UDP and goes through): every `web6`
/// backend is unhealthy there, so director-1 withdraws the IPv6 VIP alone and keeps the IPv4
/// one; director-2 announces both.
#[test]
fn all_backends_of_one_vip_unhealthy_on_one_director_withdraw_that_vip_there() {
    let (_g, sys) = start();
    let lines: Vec<BackendLine> = (1..=3)
        .map(|index| BackendLine {
            index,
            state: "active",
        })
        .collect();
    let one = backends_yaml(&lines);
    // The lab's one service, split in two by address family.
    let (head, rest) = one.split_once("    backends:\n").unwrap();
    let backends = format!("    backends:\n{rest}");
    let binds4: String = head
        .lines()
        .filter(|l| !l.contains("vip: \"fd"))
        .map(|l| format!("{l}\n"))
        .collect();
    let binds6: String = head
        .lines()
        .skip_while(|l| !l.contains("- name: web"))
        .filter(|l| !l.contains("vip: \"10."))
        .map(|l| format!("{}\n", l.replace("name: web", "name: web6")))
        .collect();
    let text = format!(
        "health:\n  interval: 300ms\n  timeout: 200ms\n  rise: 2\n  fall: 2\n  hold: 1s\n  checks:\n    - {{ type: gue }}\n{binds4}{backends}{binds6}    health: {{ checks: [ {{ type: tcp, port: 80 }} ], announce_min_healthy: 1 }}\n{backends}"
    );
    sys.lab().write_file("backends.yaml", &text).unwrap();
    let v4 = addr::VIP_V4.to_string();
    let v6 = addr::VIP_V6.to_string();
    for i in 1..=2 {
        wait_token(&sys, i, &v4, Some("announce"));
        wait_token(&sys, i, &v6, Some("announce"));
    }
    sys.lab()
        .wait_vip_paths(&[1, 2], Duration::from_secs(10))
        .unwrap();
    // Backends start unhealthy until they pass `rise`; announcing needs only one. Until both
    // directors see all three healthy their tables differ, and a connection whose SYN and ACK
    // take different directors can meet two primaries: start the connections after that.
    wait_all_healthy(&sys, &["web", "web6"]);
    let p = pool(&sys, 200);
    let ns = sys.lab().ns(Node::Director(1));
    ns.ip([
        "rule",
        "add",
        "to",
        addr::BACKEND_NET_V4,
        "ipproto",
        "tcp",
        "dport",
        "80",
        "prohibit",
    ])
    .unwrap();
    wait_token(&sys, 1, &v6, None);
    let why = announced(&sys, 1);
    let w6 = why.iter().find(|(v, _, _)| *v == v6).unwrap();
    assert!(
        w6.2.iter()
            .any(|w| w.contains("service web6: 0 healthy backend(s)")),
        "{why:?}"
    );
    assert_eq!(token_of(&sys, 1, &v4).as_deref(), Some("announce"));
    assert_eq!(token_of(&sys, 2, &v6).as_deref(), Some("announce"));
    let t0 = std::time::Instant::now();
    while sys.lab().vip_paths(Family::V6).unwrap() != vec![2] {
        assert!(t0.elapsed() < Duration::from_secs(5), "v6 paths");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(sys.lab().vip_paths(Family::V4).unwrap(), vec![1, 2]);
    new_connections_answered(&sys);
    ns.ip([
        "rule",
        "del",
        "to",
        addr::BACKEND_NET_V4,
        "ipproto",
        "tcp",
        "dport",
        "80",
        "prohibit",
    ])
    .unwrap();
    sys.lab()
        .wait_vip_paths(&[1, 2], Duration::from_secs(15))
        .unwrap();
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
