//! The director's health checker against the real lab: backends running the lab server behind
//! their redirectors, probed from inside a director's namespace by `tcp` (the backend's own
//! address) and `gue` (a SYN to the VIP through the tunnel, answered directly by the backend),
//! for both VIP families.
//!
//! The checker runs in-process here; how the daemon turns its verdicts into tables is tested
//! with the daemon.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use director::health::{Check, Checker, ProbeSettings, Spec, Target, Tracker};
use lab::addr::{self, Family};
use lab::system::{Binaries, System, SystemOptions};
use lab::Node;

const SERVER: &str = env!("CARGO_BIN_EXE_xdplb-lab-server");

fn spec(vip: std::net::IpAddr) -> Spec {
    Spec {
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(150),
        rise: 2,
        fall: 2,
        jitter_percent: 10,
        checks: vec![
            Check::Tcp {
                port: addr::TCP_PORT,
            },
            Check::Gue {
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
                spec: spec(vip),
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
    let bins = Binaries::for_tests(Path::new(SERVER)).expect("build the daemons");
    let sys = System::start(bins, SystemOptions::default()).expect("start xdplb in the lab");
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
