//! The director's health checker against the real lab: backends running the lab server behind
//! their redirectors, probed from inside a director's namespace by `tcp` (the backend's own
//! address) and `gue` (a SYN to the VIP through the tunnel, answered directly by the backend),
//! for both VIP families.
//!
//! The first test runs the checker in-process; the second runs the real directors with
//! health checks in backends.yaml and real client connections.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use director::health::{Checker, ProbeSettings, Target, Tracker};
use lab::addr::{self, Family};
use lab::client::{probe_tcp, Pool, PoolConfig, ProbeReport};
use lab::system::{backends_yaml, BackendLine, Binaries, System, SystemOptions};
use lab::Node;
use tablegen::config::{Health, HealthCheck};

const SERVER: &str = env!("CARGO_BIN_EXE_xdplb-lab-server");
/// One lab at a time: on two cores several would measure the machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn start() -> (MutexGuard<'static, ()>, System) {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bins = Binaries::for_tests(Path::new(SERVER)).expect("build the daemons");
    let sys = System::start(bins, SystemOptions::default()).expect("start xdplb in the lab");
    (guard, sys)
}

fn health(vip: std::net::IpAddr) -> Health {
    Health {
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(150),
        rise: 2,
        fall: 2,
        jitter_percent: 10,
        hold: Duration::from_secs(10),
        fail_open_below: 50,
        announce_min_healthy: 1,
        checks: vec![
            HealthCheck::Tcp {
                port: addr::TCP_PORT,
            },
            HealthCheck::Gue {
                vip,
                port: addr::TCP_PORT,
            },
        ],
    }
}

fn targets(backends: usize) -> Vec<Target> {
    let mut out = Vec::new();
    for (service, family) in [("web4", Family::V4), ("web6", Family::V6)] {
        let vip = match family {
            Family::V4 => addr::VIP_V4.into(),
            Family::V6 => addr::VIP_V6.into(),
        };
        for i in 1..=backends {
            out.push(Target {
                service: service.into(),
                backend: Node::Backend(i).name(),
                address: addr::backend(family, i),
                health: health(vip),
            });
        }
    }
    out
}

/// Waits until `ok` holds for the checker's view, or panics with the view.
fn wait_view(
    checker: &Checker,
    what: &str,
    within: Duration,
    ok: impl Fn(&BTreeMap<(String, String), Tracker>) -> bool,
) -> Duration {
    let t0 = Instant::now();
    loop {
        let v = checker.view();
        if ok(&v) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "{what}: not within {within:?}: {v:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn healthy(v: &BTreeMap<(String, String), Tracker>, service: &str, backend: usize) -> bool {
    v[&(service.to_string(), Node::Backend(backend).name())].healthy
}

#[test]
fn probes_follow_the_server_and_the_redirector_on_each_backend() {
    let (_g, sys) = start();
    let backends = SystemOptions::default().lab.backends;
    let flips = Arc::new(AtomicUsize::new(0));

    // The checker lives in director-1's namespace: its thread is created there.
    let f = flips.clone();
    let checker = sys
        .lab()
        .ns(Node::Director(1))
        .run(move || {
            Checker::start(
                ProbeSettings {
                    gue_port: 19523,
                    src_v4: Some(addr::director(Family::V4, 1)),
                    src_v6: Some(addr::director(Family::V6, 1)),
                    colocated: false,
                },
                BTreeMap::new(),
                move || {
                    f.fetch_add(1, Ordering::SeqCst);
                },
            )
        })
        .unwrap()
        .expect("start the checker (raw sockets need CAP_NET_RAW)");
    checker.set_targets(targets(backends));

    // New backends start unhealthy and rise after two passes of both checks.
    wait_view(
        &checker,
        "every backend healthy",
        Duration::from_secs(5),
        |v| v.len() == 2 * backends && v.values().all(|t| t.healthy),
    );
    assert_eq!(flips.load(Ordering::SeqCst), 2 * backends);

    // The server on backend-2 stops: both of its checks are refused, for both families; the
    // others stay healthy.
    sys.lab()
        .stop(
            "server-backend-2",
            nix::sys::signal::Signal::SIGTERM,
            Duration::from_secs(5),
        )
        .unwrap();
    let took = wait_view(
        &checker,
        "backend-2 unhealthy",
        Duration::from_secs(3),
        |v| !healthy(v, "web4", 2) && !healthy(v, "web6", 2),
    );
    let v = checker.view();
    for s in ["web4", "web6"] {
        assert!(healthy(&v, s, 1) && healthy(&v, s, 3), "{v:#?}");
        let err = v[&(s.to_string(), "backend-2".to_string())]
            .last_error
            .clone()
            .unwrap();
        assert!(err.contains("tcp:80") && err.contains("refused"), "{err}");
    }
    // interval x fall plus one probe's timeout and the jitter, with room for a loaded machine.
    assert!(took < Duration::from_millis(1500), "{took:?}");

    // Without the redirector on backend-3, GUE reaches a UDP port nobody listens on: the gue
    // check fails (no answer) while a plain connect to the backend still works. This is what
    // the gue check proves beyond a connect.
    sys.lab()
        .ns(Node::Backend(3))
        .command("tc")
        .args(["filter", "del", "dev", "eth0", "ingress"])
        .run()
        .unwrap();
    wait_view(
        &checker,
        "backend-3 unhealthy",
        Duration::from_secs(3),
        |v| !healthy(v, "web4", 3),
    );
    let err = checker.view()[&("web4".to_string(), "backend-3".to_string())]
        .last_error
        .clone()
        .unwrap();
    assert!(err.starts_with("gue:10.100.0.1:80: no answer"), "{err}");
    assert!(healthy(&checker.view(), "web4", 1));

    // Targets that go away are forgotten; the rest keep their state.
    checker.set_targets(
        targets(backends)
            .into_iter()
            .filter(|t| t.service == "web4")
            .collect(),
    );
    wait_view(&checker, "web6 forgotten", Duration::from_secs(2), |v| {
        v.keys().all(|(s, _)| s == "web4") && healthy(v, "web4", 1)
    });
    drop(checker);
    drop(sys);
}

/// The lab's backends.yaml with health checks: a connect to the backend and a SYN through
/// the tunnel, every 300 ms, two in a row to change, one change per second at most.
fn checked_backends_yaml() -> String {
    let lines: Vec<BackendLine> = (1..=3)
        .map(|index| BackendLine {
            index,
            state: "active",
        })
        .collect();
    format!(
        "health:\n  interval: 300ms\n  timeout: 200ms\n  rise: 2\n  fall: 2\n  hold: 1s\n  checks:\n    - {{ type: tcp, port: 80 }}\n    - {{ type: gue }}\n{}",
        backends_yaml(&lines)
    )
}

/// Director `i`'s health view of service `web` from `status --json`: backend -> healthy.
fn director_health(sys: &System, i: usize) -> BTreeMap<String, bool> {
    let v: serde_json::Value = serde_json::from_str(&sys.director_status(i).unwrap()).unwrap();
    v["health"]["backends"]["web"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(b, t)| (b.clone(), t["healthy"].as_bool().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

fn wait_directors(sys: &System, what: &str, ok: impl Fn(&BTreeMap<String, bool>) -> bool) {
    let t0 = Instant::now();
    loop {
        let views: Vec<_> = (1..=2).map(|i| director_health(sys, i)).collect();
        if views.iter().all(&ok) {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "{what}: {views:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn on(p: &ProbeReport, backend: &str) -> usize {
    p.per_backend.get(backend).copied().unwrap_or(0)
}

#[test]
fn a_dead_server_gets_no_new_connections_and_its_return_gets_them_again() {
    let (_g, sys) = start();
    sys.lab()
        .write_file("backends.yaml", &checked_backends_yaml())
        .unwrap();
    wait_directors(&sys, "every backend healthy on both directors", |v| {
        v.len() == 3 && v.values().all(|h| *h)
    });

    let p = Pool::start(
        &sys.lab().ns(Node::Client),
        PoolConfig::new(addr::vip_tcp(Family::V4), 200),
    )
    .unwrap();
    let s = p.wait_established(Duration::from_secs(15));
    assert_eq!(s.established, 200, "{s}");
    assert!(p.open_on("backend-2") > 20, "{}", p.stats());

    // The server dies: its connections end with it, and new ones avoid it once both directors
    // have seen it fail twice (no hold: it is the first change).
    sys.lab()
        .stop(
            "server-backend-2",
            nix::sys::signal::Signal::SIGKILL,
            Duration::from_secs(5),
        )
        .unwrap();
    let t0 = Instant::now();
    let client = sys.lab().ns(Node::Client);
    loop {
        let probe = probe_tcp(&client, addr::vip_tcp(Family::V4), 100, 16).unwrap();
        if probe.failures() == 0 && on(&probe, "backend-2") == 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "still sent to backend-2: {probe}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = t0.elapsed();
    eprintln!("new connections avoid the dead backend after {took:?}");
    wait_directors(&sys, "backend-2 unhealthy", |v| {
        v.get("backend-2") == Some(&false)
    });
    // Both fall-open rules hold: 2 of 3 healthy is above half, so health applies.
    let st: serde_json::Value = serde_json::from_str(&sys.director_status(1).unwrap()).unwrap();
    assert_eq!(st["health"]["services"]["web"]["fail_open"], false, "{st}");
    assert_eq!(
        st["health"]["services"]["web"]["demoted"][0], "backend-2",
        "{st}"
    );

    // Back: after `rise` passes (and the hold since the last change), new connections reach
    // it again.
    sys.lab().start_server(Path::new(SERVER), 2).unwrap();
    sys.wait_new_flows(Family::V4, 200, Duration::from_secs(10), |p| {
        p.failures() == 0 && on(p, "backend-2") > 20
    })
    .unwrap();

    let report = p.stop();
    let broken_elsewhere: usize = report
        .stats
        .broken_per_backend
        .iter()
        .filter(|(b, _)| b.as_str() != "backend-2")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(broken_elsewhere, 0, "{:#?}", report.broken_list());
}

/// A command in a lab namespace that must work.
fn sh(sys: &System, node: Node, args: &[&str]) {
    sys.lab()
        .ns(node)
        .command(args[0])
        .args(&args[1..])
        .run()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
}

/// Until new connections all succeed and `pred` holds for where they went.
fn wait_flows(sys: &System, what: &str, pred: impl Fn(&ProbeReport) -> bool) {
    sys.wait_new_flows(Family::V4, 150, Duration::from_secs(12), |p| {
        p.failures() == 0 && pred(p)
    })
    .unwrap_or_else(|e| panic!("{what}: {e}"));
}

/// A hung server, a backend whose link is down, rows whose primary and secondary are both
/// unhealthy, and too few healthy backends: each as operators meet them, through the real
/// directors. The `http` check (the lab server answers `GET` with its name) is what sees a
/// hung process: the kernel still completes handshakes for it, so `tcp` and `gue` pass.
#[test]
fn hung_unreachable_and_doubly_unhealthy_backends_are_avoided_and_too_few_fail_open() {
    let (_g, sys) = start();
    let lines: Vec<BackendLine> = (1..=3)
        .map(|index| BackendLine {
            index,
            state: "active",
        })
        .collect();
    let text = format!(
        "health:\n  interval: 300ms\n  timeout: 200ms\n  rise: 2\n  fall: 2\n  hold: 1s\n  fail_open_below: 30%\n  checks:\n    - {{ type: http, port: 80, path: /healthz }}\n    - {{ type: gue }}\n{}",
        backends_yaml(&lines)
    );
    sys.lab().write_file("backends.yaml", &text).unwrap();
    wait_directors(&sys, "every backend healthy", |v| {
        v.len() == 3 && v.values().all(|h| *h)
    });

    // Hung: SIGSTOP. New connections would be accepted by its kernel and never answered.
    sh(
        &sys,
        Node::Backend(2),
        &["pkill", "-STOP", "-f", "xdplb-lab-server --name backend-2 "],
    );
    wait_flows(&sys, "hung backend-2 avoided", |p| on(p, "backend-2") == 0);
    sh(
        &sys,
        Node::Backend(2),
        &["pkill", "-CONT", "-f", "xdplb-lab-server --name backend-2 "],
    );
    wait_flows(&sys, "backend-2 back after SIGCONT", |p| {
        on(p, "backend-2") > 10
    });

    // Unreachable: the router's port to it goes down (on the backend's own side the kernel
    // would also drop its routes, which a real link that comes back keeps).
    sh(&sys, Node::Router, &["ip", "link", "set", "to-b2", "down"]);
    wait_flows(&sys, "unreachable backend-2 avoided", |p| {
        on(p, "backend-2") == 0
    });
    sh(&sys, Node::Router, &["ip", "link", "set", "to-b2", "up"]);
    wait_flows(&sys, "backend-2 back after link up", |p| {
        on(p, "backend-2") > 10
    });

    // Two of three dead: every row whose primary and secondary are both among them still
    // reaches the healthy one (1 of 3 healthy is above the 30% fail-open share).
    for i in [1, 2] {
        sys.lab()
            .stop(
                &format!("server-backend-{i}"),
                nix::sys::signal::Signal::SIGKILL,
                Duration::from_secs(5),
            )
            .unwrap();
    }
    wait_flows(&sys, "all new flows on backend-3", |p| {
        on(p, "backend-3") == p.answered() && p.answered() > 0
    });
    let st: serde_json::Value = serde_json::from_str(&sys.director_status(1).unwrap()).unwrap();
    assert_eq!(st["health"]["services"]["web"]["fail_open"], false, "{st}");

    // The last one dies too: below the share, health is ignored and the published table
    // goes back in, said as such.
    sys.lab()
        .stop(
            "server-backend-3",
            nix::sys::signal::Signal::SIGKILL,
            Duration::from_secs(5),
        )
        .unwrap();
    let t0 = Instant::now();
    loop {
        let st: serde_json::Value = serde_json::from_str(&sys.director_status(1).unwrap()).unwrap();
        if st["health"]["services"]["web"]["fail_open"] == true {
            assert_eq!(
                st["health"]["services"]["web"]["demoted"],
                serde_json::json!([])
            );
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no fail-open: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A server back and the service leaves fail-open (1 of 3 healthy again).
    sys.lab().start_server(Path::new(SERVER), 3).unwrap();
    wait_flows(&sys, "backend-3 serves alone again", |p| {
        on(p, "backend-3") == p.answered() && p.answered() > 0
    });
}

/// Director `i`'s view of backend-2 in `status --json`: (healthy, since).
fn backend2(sys: &System, i: usize) -> (bool, u64) {
    let v: serde_json::Value = serde_json::from_str(&sys.director_status(i).unwrap()).unwrap();
    let t = &v["health"]["backends"]["web"]["backend-2"];
    (
        t["healthy"].as_bool().unwrap_or(true),
        t["since"].as_u64().unwrap_or(0),
    )
}

/// Each director decides for itself: director-1 cannot reach backend-2's port (a policy rule in
/// its namespace refuses its own TCP to it; the traffic it forwards is GUE, over UDP, and goes
/// through), director-2 can. Director-1 demotes backend-2, director-2 does not, and no
/// connection breaks. Director-1 restarted keeps backend-2 demoted from its first table (the
/// same `since`: the view was kept, not found again). Then backend-2 flaps every second and the
/// hold time batches it.
#[test]
fn directors_decide_alone_keep_their_view_across_a_restart_and_batch_a_flapping_backend() {
    let (_g, sys) = start();
    let lines: Vec<BackendLine> = (1..=3)
        .map(|index| BackendLine {
            index,
            state: "active",
        })
        .collect();
    let text = format!(
        "health:\n  interval: 300ms\n  timeout: 200ms\n  rise: 2\n  fall: 2\n  hold: 3s\n  checks:\n    - {{ type: tcp, port: 80 }}\n{}",
        backends_yaml(&lines)
    );
    sys.lab().write_file("backends.yaml", &text).unwrap();
    wait_directors(&sys, "every backend healthy", |v| {
        v.len() == 3 && v.values().all(|h| *h)
    });
    let p = Pool::start(
        &sys.lab().ns(Node::Client),
        PoolConfig::new(addr::vip_tcp(Family::V4), 200),
    )
    .unwrap();
    let s = p.wait_established(Duration::from_secs(15));
    assert_eq!(s.established, 200, "{s}");

    let b2 = addr::backend(Family::V4, 2).to_string();
    let rule = [
        "rule", "add", "to", &b2, "ipproto", "tcp", "dport", "80", "prohibit",
    ];
    let unrule = [
        "rule", "del", "to", &b2, "ipproto", "tcp", "dport", "80", "prohibit",
    ];
    let ip = |args: &[&str]| {
        let mut a = vec!["ip"];
        a.extend_from_slice(args);
        sh(&sys, Node::Director(1), &a);
    };
    ip(&rule);
    let t0 = Instant::now();
    while backend2(&sys, 1).0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "director-1 never demoted backend-2"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Director-2 still sees it healthy, a while later.
    std::thread::sleep(Duration::from_secs(2));
    assert!(backend2(&sys, 2).0, "director-2 demoted backend-2 too");
    let (_, since) = backend2(&sys, 1);

    // A restart of director-1's daemon starts from the view it kept.
    sys.stop_director(1).unwrap();
    sys.start_director(1).unwrap();
    let (healthy, since_after) = backend2(&sys, 1);
    assert!(!healthy, "restarted director-1 forgot backend-2 was down");
    assert_eq!(since_after, since, "the view was found again, not kept");
    let st: serde_json::Value = serde_json::from_str(&sys.director_status(1).unwrap()).unwrap();
    assert_eq!(
        st["health"]["services"]["web"]["demoted"][0], "backend-2",
        "{st}"
    );

    // Flapping: the rule comes and goes every second for 12 s; with hold 3 s the director
    // changes its table at most 12/3 + 1 times (without the hold it would follow each flip).
    let label = "xdplb-director-1";
    let before = sys.lab().log(label).matches("health overlay live").count();
    let t0 = Instant::now();
    let mut on_ = true;
    while t0.elapsed() < Duration::from_secs(12) {
        std::thread::sleep(Duration::from_secs(1));
        if on_ {
            ip(&unrule);
        } else {
            ip(&rule);
        }
        on_ = !on_;
    }
    if on_ {
        ip(&unrule);
    }
    let changes = sys.lab().log(label).matches("health overlay live").count() - before;
    eprintln!("table changes while flapping for 12 s with hold 3 s: {changes}");
    assert!(
        changes <= 5,
        "{changes} table changes in 12 s with a 3 s hold"
    );
    assert!(changes >= 1, "the flapping was never seen");

    // Back to healthy on both; nothing broke through any of it.
    wait_directors(&sys, "every backend healthy again", |v| {
        v.len() == 3 && v.values().all(|h| *h)
    });
    let report = p.stop();
    assert_eq!(report.stats.broken, 0, "{:#?}", report.broken_list());
}

/// `tablegen lookup --director` reads where a director sends a flow now from its kernel: with
/// backend-2 demoted on director-1, its answer differs from the published lookup exactly for
/// the flows whose published primary is backend-2 (the new primary is healthy, backend-2
/// stays second so its flows survive), and director-2, which sees backend-2 healthy, answers
/// as published.
#[test]
fn lookup_through_a_director_shows_what_its_health_changed() {
    let (_g, sys) = start();
    let lines: Vec<BackendLine> = (1..=3)
        .map(|index| BackendLine {
            index,
            state: "active",
        })
        .collect();
    let text = format!(
        "health:\n  interval: 300ms\n  timeout: 200ms\n  rise: 2\n  fall: 2\n  hold: 1s\n  checks:\n    - {{ type: tcp, port: 80 }}\n{}",
        backends_yaml(&lines)
    );
    sys.lab().write_file("backends.yaml", &text).unwrap();
    wait_directors(&sys, "every backend healthy", |v| {
        v.len() == 3 && v.values().all(|h| *h)
    });
    // Only director-1 cannot reach backend-2's port (as in the test above).
    let b2 = addr::backend(Family::V4, 2).to_string();
    sh(
        &sys,
        Node::Director(1),
        &[
            "ip", "rule", "add", "to", &b2, "ipproto", "tcp", "dport", "80", "prohibit",
        ],
    );
    let t0 = Instant::now();
    loop {
        let st: serde_json::Value = serde_json::from_str(&sys.director_status(1).unwrap()).unwrap();
        if st["health"]["services"]["web"]["demoted"] == serde_json::json!(["backend-2"]) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "never demoted: {st}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(backend2(&sys, 2).0, "director-2 demoted backend-2 too");

    let json = |s: String| -> serde_json::Value { serde_json::from_str(&s).unwrap() };
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    };
    let (mut demoted_rows, mut same_rows) = (0, 0);
    for port in 40000..40060u16 {
        let flow = format!("tcp 192.0.2.7:{port} {}:80", addr::VIP_V4);
        let published = json(sys.tablegen(&["lookup", "--json", &flow]).unwrap());
        let d1 = json(sys.director_lookup(1, &["--json", &flow]).unwrap());
        let d2 = json(sys.director_lookup(2, &["--json", &flow]).unwrap());
        let (p, h1, h2) = (
            names(&published["names"]),
            names(&d1["names"]),
            names(&d2["names"]),
        );
        assert_eq!(d1["published"], published, "{flow}");
        assert_eq!(d1["published_matches"], true, "{d1}");
        assert_eq!(
            d1["row"], published["row"],
            "{flow}: the kernel's hash is tablegen's"
        );
        assert_eq!(h2, p, "{flow}: director-2 sees backend-2 healthy");
        assert_eq!(d2["changed_by_health"], false, "{d2}");
        if p[0] == "backend-2" {
            demoted_rows += 1;
            // The next backend of the row is primary; backend-2 stays a hop (second chance).
            assert_eq!(h1[0], p[1], "{flow}: {d1}");
            assert!(h1.contains(&p[0]), "{flow}: {d1}");
            let (mut a, mut b) = (h1.clone(), p.clone());
            a.sort();
            b.sort();
            assert_eq!(a, b, "{flow}: {d1}");
            assert_eq!(d1["changed_by_health"], true, "{d1}");
            assert_eq!(d1["primary_changed"], true, "{d1}");
        } else {
            same_rows += 1;
            assert_eq!(h1, p, "{flow}: {d1}");
            assert_eq!(d1["changed_by_health"], false, "{d1}");
        }
        assert_eq!(d1["demoted"], serde_json::json!(["backend-2"]), "{d1}");
        assert_eq!(d1["daemon_running"], true, "{d1}");
    }
    assert!(
        demoted_rows > 5 && same_rows > 5,
        "{demoted_rows} {same_rows}"
    );

    // The text form says it too, and a wrong state directory is said as such.
    let flow = (40000..40060u16)
        .map(|port| format!("tcp 192.0.2.7:{port} {}:80", addr::VIP_V4))
        .find(|f| json(sys.tablegen(&["lookup", "--json", f]).unwrap())["names"][0] == "backend-2")
        .unwrap();
    let text = sys.director_lookup(1, &[&flow]).unwrap();
    assert!(
        text.contains("health: CHANGED BY HEALTH: new flows go to backend-")
            && text.contains("instead of backend-2 (demoted: backend-2)"),
        "{text}"
    );
    let err = sys
        .tablegen(&["lookup", "--director", "--state-dir", "/nonexistent", &flow])
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/director-state.json"), "{err}");
}
