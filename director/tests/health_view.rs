//! The health view in Consul (director.yaml `health_view:`) against a real `consul agent`:
//! two directors (the real binary) write their views and the matrix shows both; a killed
//! director's view vanishes after its session TTL and the matrix names it absent; a stopped
//! one takes its view along. An unreachable Consul is reported in `status` and changes
//! nothing else: health checks and the installed tables go on. A `health_view:` without a
//! `consul:` section is refused at its position.
//!
//! The directors attach to no interface (the maps are what is checked) and probe backends on
//! loopback addresses, so they run in this process's network namespace, where the agent
//! listens; each has its own bpffs.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster::health::Presence;
use cluster::testing::ConsulAgent;
use cluster::{Matrix, Store};
use common::*;
use director::config::DirectorConfig;
use director::Control;

const DIRECTOR: &str = env!("CARGO_BIN_EXE_xdplb-director");

/// backend-1 answers on `port` (a listener on 127.0.0.2), backend-2 (127.0.0.3) refuses.
fn backends(port: u16) -> String {
    format!(
        "health:\n  interval: 200ms\n  timeout: 150ms\n  rise: 1\n  fall: 1\n  hold: 1s\n  fail_open_below: 10%\n  checks:\n    - {{ type: tcp, port: {port} }}\nservices:\n  - name: web\n    hash_key: {KEY}\n    seed: {SEED}\n    table_bits: 8\n    binds:\n      - {{ vip: 10.100.0.1, proto: tcp, port: 80 }}\n    backends:\n      - {{ name: backend-1, address: 127.0.0.2 }}\n      - {{ name: backend-2, address: 127.0.0.3 }}\n"
    )
}

/// A director's files: director.yaml, backends.yaml, state; its own bpffs.
struct Files {
    dir: PathBuf,
    fs: Bpffs,
}

impl Files {
    fn new(port: u16, consul: &str, prefix: &str, name: &str) -> Files {
        let fs = Bpffs::new();
        let dir = PathBuf::from(format!("/run/{}", lab::testns::unique("xdplb-view-test-")));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("backends.yaml"), backends(port)).unwrap();
        std::fs::write(
            dir.join("director.yaml"),
            format!(
                "interfaces: []\nencap_source_v4: 10.1.0.1\nbpffs_dir: {}\nstate_dir: {}\nbackends: backends.yaml\nconsul:\n  address: {consul}\n  prefix: {prefix}\nhealth_view:\n  director: {name}\n  ttl_s: 10\n",
                fs.root.display(),
                dir.display(),
            ),
        )
        .unwrap();
        Files { dir, fs }
    }

    fn config(&self) -> DirectorConfig {
        DirectorConfig::load(&self.dir.join("director.yaml")).unwrap()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = &self.fs;
    }
}

/// `xdplb-director run` as a process of its own, so it can be killed.
struct Proc {
    child: Child,
    files: Files,
}

impl Proc {
    fn start(files: Files) -> Proc {
        let log = std::fs::File::create(files.dir.join("log")).unwrap();
        let child = Command::new(DIRECTOR)
            .arg("--config")
            .arg(files.dir.join("director.yaml"))
            .arg("run")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Proc { child, files }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.files.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn matrix(store: &Store, rt: &tokio::runtime::Runtime) -> Matrix {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Matrix::new(&rt.block_on(store.health_views()).unwrap(), now)
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    t0.elapsed()
}

/// `backend` on `director` in the matrix: Some(healthy) or None.
fn cell(m: &Matrix, backend: &str, director: &str) -> Option<bool> {
    m.backends
        .iter()
        .find(|b| b.service == "web" && b.backend == backend)?
        .directors
        .get(director)
        .map(|v| v.healthy)
}

fn presence(m: &Matrix, director: &str) -> Option<Presence> {
    m.directors
        .iter()
        .find(|d| d.name == director)
        .map(|d| d.presence)
}

#[test]
fn two_directors_write_their_views_and_a_killed_ones_vanishes_after_its_ttl() {
    let agent = ConsulAgent::dev().unwrap();
    let listener = TcpListener::bind("127.0.0.2:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let prefix = format!("xdplb-test/{}", lab::testns::unique("view-"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = {
        let _g = rt.enter();
        Store::new(&agent.config(&prefix, Path::new("/nonexistent/unused.json"))).unwrap()
    };
    let mut d1 = Proc::start(Files::new(port, &agent.address(), &prefix, "director-1"));
    let mut d2 = Proc::start(Files::new(port, &agent.address(), &prefix, "director-2"));

    wait_until("both views in consul", Duration::from_secs(30), || {
        let m = matrix(&store, &rt);
        ["director-1", "director-2"].iter().all(|d| {
            presence(&m, d) == Some(Presence::Live)
                && cell(&m, "backend-1", d) == Some(true)
                && cell(&m, "backend-2", d) == Some(false)
        })
    });
    // The view is no table version: nothing was published.
    assert_eq!(rt.block_on(store.current()).unwrap(), None);
    let st = director::status::gather(&d1.files.config());
    let v = st.health_view.clone().expect("status shows the view");
    assert!(v.last_error.is_none() && v.written_at.is_some(), "{v:?}");
    assert!(st.to_text().contains(&format!(
        "health view: consul {} key {prefix}/health/views/director-1: written",
        agent.address().trim_end_matches('/')
    )));

    // Killed: its session is no longer renewed and the view goes after the TTL (Consul allows
    // itself up to twice the TTL).
    d2.child.kill().unwrap();
    d2.child.wait().unwrap();
    let took = wait_until("director-2's view gone", Duration::from_secs(40), || {
        presence(&matrix(&store, &rt), "director-2") == Some(Presence::Absent)
    });
    eprintln!("a killed director's view vanished after {took:?} (ttl 10 s)");
    let m = matrix(&store, &rt);
    assert_eq!(cell(&m, "backend-1", "director-2"), None, "{m:?}");
    assert_eq!(presence(&m, "director-1"), Some(Presence::Live), "{m:?}");
    assert_eq!(cell(&m, "backend-2", "director-1"), Some(false), "{m:?}");

    // Stopped: the view leaves with the daemon at once.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d1.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(d1.child.wait().unwrap().success(), "{}", d1.log());
    let m = matrix(&store, &rt);
    assert_eq!(presence(&m, "director-1"), Some(Presence::Absent), "{m:?}");
    assert!(m.backends.is_empty(), "{m:?}");
    drop(listener);
}

#[test]
fn an_unreachable_consul_is_reported_and_changes_nothing_else() {
    let listener = TcpListener::bind("127.0.0.2:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Nothing listens on the discard port of loopback: every request is refused.
    let files = Files::new(port, "http://127.0.0.1:9", "xdplb-test/none", "director-x");
    let cfg = files.config();
    let control = Control::new();
    let handle = control.handle();
    let run_cfg = cfg.clone();
    let join = std::thread::spawn(move || director::run(run_cfg, control));

    wait_until(
        "backend-2 demoted, the table live, the consul error shown",
        Duration::from_secs(20),
        || {
            let st = director::status::gather(&cfg);
            st.services.iter().any(|s| s.name == "web" && s.live)
                && st
                    .health
                    .as_ref()
                    .is_some_and(|h| h.services["web"].demoted == ["backend-2"])
                && st
                    .health_view
                    .as_ref()
                    .is_some_and(|v| v.last_error.is_some())
        },
    );
    let st = director::status::gather(&cfg);
    let v = st.health_view.clone().unwrap();
    let e = v.last_error.unwrap();
    eprintln!("unreachable consul: {e}");
    assert!(
        e.contains("consul create session xdplb-health-director-x"),
        "{e}"
    );
    assert!(v.written_at.is_none());
    let text = st.to_text();
    assert!(
        text.contains("health view: consul http://127.0.0.1:9 key xdplb-test/none/health/views/director-x: NOT WRITTEN (never written): "),
        "{text}"
    );
    handle.shutdown();
    join.join().unwrap().unwrap();
    drop(listener);
}

#[test]
fn a_health_view_needs_a_consul_section_and_a_usable_name() {
    let e = DirectorConfig::parse(
        Path::new("director.yaml"),
        "interfaces: []\nhealth_view:\n  director: d1\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("director.yaml:2:1: health_view needs a consul: section"),
        "{e}"
    );
    let e = DirectorConfig::parse(
        Path::new("director.yaml"),
        "consul:\n  address: http://127.0.0.1:8500\n  prefix: p\nhealth_view:\n  director: \"a/b\"\n  ttl_s: 5\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("director.yaml:5:13: director name `a/b`"), "{e}");
    assert!(e.contains("director.yaml:6:10:"), "{e}");
    // Off by default.
    let c = DirectorConfig::parse(Path::new("director.yaml"), "interfaces: []\n").unwrap();
    assert!(c.health_view.is_none());
}
