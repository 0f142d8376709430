//! The controller daemon (the real binary) against a real Consul and a real Prometheus that
//! scrapes a load exporter. The exporter reports, per backend, a load that follows the weights
//! the cluster's *current* version gives it (read from Consul, as a director would): each
//! backend's connections move toward its weight share with a lag of about a second, and its
//! load is connections times its cost per connection. So the loop is closed through every real
//! part the controller talks to; only the backends' work is modelled. (The lab test with
//! directors and real connections is separate.)
//!
//! One test walks the controller through the cases in turn (they share one Consul and one
//! Prometheus, which take seconds to start): convergence with a 2x-cost backend, a load step,
//! bad input for single backends, Prometheus stopped and restarted, a fleet-wide overload, and
//! an operator's drain. Another kills the active controller and watches the standby take over.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::testing::ConsulAgent;
use cluster::{ConsulConfig, Expect, PublishMeta, Store, VersionMeta};
use controller::daemon::Status;
use tablegen::config::{Config as Tables, State};

const CONTROLLER: &str = env!("CARGO_BIN_EXE_xdplb-controller");

const BACKENDS: &str = "\
services:
  - name: web
    hash_key: 6c8d0f1e2a3b4c5d6e7f8091a2b3c4d5
    seed: 0f1e2d3c4b5a69788796a5b4c3d2e1f0
    table_bits: 10
    binds:
      - { vip: 10.100.0.1, proto: tcp, port: 80 }
    backends:
      - { name: b1, address: 10.0.0.21 }
      - { name: b2, address: 10.0.0.22 }
      - { name: b3, address: 10.0.0.23 }
      - { name: b4, address: 10.0.0.24 }
";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
    t0.elapsed()
}

/// What the modelled backends do, and what the exporter shows of it.
#[derive(Debug, Default)]
struct Plant {
    cost: BTreeMap<String, f64>,
    conns: BTreeMap<String, f64>,
    load: BTreeMap<String, f64>,
    /// Exporter overrides: these backends report NaN / have no series.
    nan: BTreeSet<String>,
    missing: BTreeSet<String>,
    /// Every load multiplied by this in the exporter (a fleet-wide overload).
    boost: f64,
}

type Shared = Arc<Mutex<Plant>>;

fn start_exporter(plant: Shared) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let body = {
                let p = plant.lock().unwrap();
                let mut b = String::from("# TYPE xdplb_test_load gauge\n");
                for (name, l) in &p.load {
                    if p.missing.contains(name) {
                        continue;
                    }
                    let v = if p.nan.contains(name) {
                        "NaN".to_string()
                    } else {
                        format!("{}", l * p.boost)
                    };
                    b.push_str(&format!(
                        "xdplb_test_load{{service=\"web\",backend=\"{name}\"}} {v}\n"
                    ));
                }
                b
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// Weight and state per backend of `web`.
type Weights = BTreeMap<String, (u32, State)>;

/// Weights and states of `web` in a version's text.
fn weights(text: &str) -> Weights {
    let c = Tables::parse(Path::new("v.yaml"), text).unwrap();
    c.services[0]
        .backends
        .iter()
        .map(|b| (b.name.clone(), (b.weight, b.state)))
        .collect()
}

/// Moves the plant toward the current version's weights, every 100 ms, until the test ends.
fn start_plant(consul: ConsulConfig, plant: Shared) {
    std::thread::spawn(move || {
        let rt = rt();
        let store = Store::new(&consul).unwrap();
        let mut cache: BTreeMap<u64, Weights> = BTreeMap::new();
        let dt = 0.1;
        let tau = 1.0;
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let Ok(Some(v)) = rt.block_on(store.current()) else {
                continue;
            };
            let w = match cache.entry(v) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let Ok(ver) = rt.block_on(store.get(v)) else {
                        continue;
                    };
                    e.insert(weights(&ver.text))
                }
            };
            let eligible: f64 = w
                .values()
                .filter(|(_, s)| *s == State::Active)
                .map(|(w, _)| f64::from(*w))
                .sum();
            let mut p = plant.lock().unwrap();
            for (name, (wt, st)) in w {
                let share = if *st == State::Active {
                    f64::from(*wt) / eligible
                } else {
                    0.0
                };
                // 200 connections in all; capacity 100 connection-costs per backend.
                let c = p.conns.entry(name.clone()).or_insert(50.0);
                *c += (200.0 * share - *c) * (dt / tau);
                let c = *c;
                let cost = p.cost[name];
                p.load.insert(name.clone(), c * cost / 100.0);
            }
        }
    });
}

struct Prometheus {
    child: Option<Child>,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: load\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let mut p = Prometheus {
            child: None,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        p.launch();
        p
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={}", self.addr))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (scripts/setup.sh installs it)");
        self.child = Some(child);
        let addr = self.addr;
        wait_until("prometheus ready", Duration::from_secs(60), || {
            http_get(addr, "/-/ready").is_some_and(|(c, _)| c == 200)
        });
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.kill();
    }
}

fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

struct Ctl {
    child: Option<Child>,
    status: PathBuf,
    log: PathBuf,
}

impl Ctl {
    fn start(dir: &Path, name: &str, consul: &str, prefix: &str, prom: SocketAddr) -> Ctl {
        let status = dir.join(format!("{name}-status.json"));
        let log = dir.join(format!("{name}.log"));
        let cfg = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                "consul:\n  address: {consul}\n  prefix: {prefix}\nprometheus: http://{prom}\n\
                 interval_secs: 1\nmin_publish_interval_secs: 2\noperator_backoff_secs: 4\n\
                 lock_ttl_secs: 10\nstatus_file: {}\nservices:\n  - name: web\n\
                 \x20   query: 'xdplb_test_load{{service=\"web\"}}'\n    backend_label: backend\n\
                 \x20   overloaded_above: 0.9\n",
                status.display()
            ),
        )
        .unwrap();
        let child = Command::new(CONTROLLER)
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info,consulrs=off,rustify=off")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Ctl {
            child: Some(child),
            status,
            log,
        }
    }

    fn status(&self) -> Option<Status> {
        let t = std::fs::read_to_string(&self.status).ok()?;
        serde_json::from_str(&t).ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to give the lock up.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        self.kill();
    }
}

fn operator_publish(rt: &tokio::runtime::Runtime, store: &Store, text: &str) -> VersionMeta {
    let tables = Tables::parse(Path::new("backends.yaml"), text).unwrap();
    let built = tablegen::table::build_all(&tables);
    let services = cluster::service_digests(
        built
            .iter()
            .map(|t| (t.service.as_str(), t.version, t.checksum)),
    );
    let current = rt.block_on(store.current()).unwrap();
    rt.block_on(store.publish(
        text,
        PublishMeta {
            services,
            author: Some("operator@test".into()),
            comment: "by hand".into(),
            expect: Expect::Current(current),
        },
    ))
    .unwrap()
}

/// Every version (meta and the weights of `web`) from `from` on.
fn versions_since(
    rt: &tokio::runtime::Runtime,
    store: &Store,
    from: u64,
) -> Vec<(VersionMeta, Weights)> {
    rt.block_on(store.versions())
        .unwrap()
        .into_iter()
        .filter(|&v| v >= from)
        .map(|v| {
            let ver = rt.block_on(store.get(v)).unwrap();
            let w = weights(&ver.text);
            (ver.meta, w)
        })
        .collect()
}

/// Deviations from the mean of the eligible backends' true loads.
fn deviations(plant: &Shared, eligible: &[&str]) -> BTreeMap<String, f64> {
    let p = plant.lock().unwrap();
    let loads: Vec<(String, f64)> = eligible
        .iter()
        .filter_map(|n| Some((n.to_string(), *p.load.get(*n)?)))
        .collect();
    let mean = loads.iter().map(|(_, l)| l).sum::<f64>() / loads.len().max(1) as f64;
    loads
        .into_iter()
        .map(|(n, l)| (n, (l - mean) / mean))
        .collect()
}

/// Until every eligible backend is within ±10 % of the mean and stays there for `hold`;
/// returns the time it took and the largest overshoot seen (a deviation on the other side of
/// the mean from where the backend started).
fn converge(plant: &Shared, eligible: &[&str], limit: Duration, hold: Duration) -> (Duration, f64) {
    let start: BTreeMap<String, f64> = deviations(plant, eligible);
    let t0 = Instant::now();
    let mut inside_since: Option<Instant> = None;
    let mut overshoot: f64 = 0.0;
    loop {
        let d = deviations(plant, eligible);
        for (n, x) in &d {
            let s = start.get(n).copied().unwrap_or(0.0);
            if s.abs() > 0.1 && x.signum() == -s.signum() {
                overshoot = overshoot.max(x.abs());
            }
        }
        if d.values().all(|x| x.abs() <= 0.10) {
            let since = *inside_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= hold {
                return (since - t0, overshoot);
            }
        } else {
            inside_since = None;
        }
        assert!(
            t0.elapsed() < limit,
            "not within ±10 % after {limit:?}: {d:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Direction changes of each backend's weight over controller versions.
fn reversals(vs: &[(VersionMeta, Weights)]) -> usize {
    let mut last: BTreeMap<String, (u32, i8)> = BTreeMap::new();
    let mut n = 0;
    for (m, w) in vs {
        if !m.author.starts_with(controller::daemon::AUTHOR_PREFIX) {
            last.clear(); // an operator's version restarts the count
            continue;
        }
        for (b, (wt, _)) in w {
            let e = last.entry(b.clone()).or_insert((*wt, 0));
            let dir = (*wt as i64 - e.0 as i64).signum() as i8;
            if dir != 0 {
                if e.1 != 0 && e.1 != dir {
                    n += 1;
                }
                e.1 = dir;
            }
            e.0 = *wt;
        }
    }
    n
}

struct Lab {
    _consul: ConsulAgent,
    consul_cfg: ConsulConfig,
    prefix: String,
    store: Store,
    rt: tokio::runtime::Runtime,
    plant: Shared,
    prom: Prometheus,
    dir: tempfile::TempDir,
}

fn lab(prefix: &str) -> Lab {
    let consul = ConsulAgent::dev().expect("consul (scripts/setup.sh installs it)");
    let dir = tempfile::tempdir().unwrap();
    let consul_cfg = consul.config(prefix, &dir.path().join("state.json"));
    let store = Store::new(&consul_cfg).unwrap();
    let rt = rt();
    operator_publish(&rt, &store, BACKENDS);
    let plant: Shared = Arc::new(Mutex::new(Plant {
        cost: [("b1", 1.0), ("b2", 1.0), ("b3", 2.0), ("b4", 1.0)]
            .into_iter()
            .map(|(n, c)| (n.to_string(), c))
            .collect(),
        boost: 1.0,
        ..Plant::default()
    }));
    start_plant(consul_cfg.clone(), plant.clone());
    let exporter = start_exporter(plant.clone());
    let prom = Prometheus::start(exporter);
    Lab {
        _consul: consul,
        consul_cfg,
        prefix: prefix.to_string(),
        store,
        rt,
        plant,
        prom,
        dir,
    }
}

impl Lab {
    fn ctl(&self, name: &str) -> Ctl {
        Ctl::start(
            self.dir.path(),
            name,
            self.consul_cfg.address.as_str().trim_end_matches('/'),
            &self.prefix,
            self.prom.addr,
        )
    }
    fn last_version(&self) -> u64 {
        self.rt.block_on(self.store.current()).unwrap().unwrap()
    }
}

fn service(s: &Status) -> &controller::daemon::ServiceStatus {
    &s.services[0]
}

#[test]
fn converges_settles_freezes_and_yields_to_the_operator() {
    let mut lab = lab("xdplb/ctl-walk");
    let a = lab.ctl("a");
    let all = ["b1", "b2", "b3", "b4"];

    // 1. b3 does twice the work per connection: loads converge to the mean.
    let (t, overshoot) = converge(
        &lab.plant,
        &all,
        Duration::from_secs(90),
        Duration::from_secs(5),
    );
    let vs = versions_since(&lab.rt, &lab.store, 1);
    let steps = vs.len() - 1;
    eprintln!(
        "2x cost: within ±10 % after {t:?}, {steps} controller versions, overshoot {:.1}%, {} reversals",
        overshoot * 100.0,
        reversals(&vs)
    );
    assert!(overshoot <= 0.25, "overshoot {overshoot}");
    assert!(steps <= 15, "{steps} versions");
    assert!(reversals(&vs) <= 1);
    let (_, w) = vs.last().unwrap();
    let ratio = f64::from(w["b3"].0) / f64::from(w["b1"].0);
    assert!((0.4..=0.6).contains(&ratio), "{w:?}");
    // Each version says it was the controller, and why.
    for (m, _) in &vs[1..] {
        assert!(m.author.starts_with("xdplb-controller@"), "{m:?}");
        assert!(
            m.comment.contains("load controller (operator's version 1)"),
            "{m:?}"
        );
        assert_eq!(m.parent, Some(m.version - 1));
    }
    // At most one version per min_publish_interval (2 s).
    for pair in vs[1..].windows(2) {
        assert!(
            pair[1].0.created_unix - pair[0].0.created_unix >= 2,
            "{pair:?}"
        );
    }

    // 2. Load step: b1's cost doubles.
    let before = lab.last_version();
    lab.plant.lock().unwrap().cost.insert("b1".into(), 2.0);
    let (t, overshoot) = converge(
        &lab.plant,
        &all,
        Duration::from_secs(90),
        Duration::from_secs(6),
    );
    let vs = versions_since(&lab.rt, &lab.store, before);
    eprintln!(
        "load step: within ±10 % after {t:?}, {} versions, overshoot {:.1}%, {} reversals",
        vs.len() - 1,
        overshoot * 100.0,
        reversals(&vs)
    );
    assert!(overshoot <= 0.25);
    assert!(reversals(&vs) <= 1, "weights oscillate: {vs:?}");
    // Settled: no new version for a while.
    let settled = lab.last_version();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        lab.last_version(),
        settled,
        "still publishing after settling"
    );

    // 3. Bad input for single backends: b2 reports NaN, b3 has no series. Make b1 cheap again
    //    so the law has work to do on the others.
    {
        let mut p = lab.plant.lock().unwrap();
        p.nan.insert("b2".into());
        p.missing.insert("b3".into());
        p.cost.insert("b1".into(), 1.0);
    }
    let held = lab.rt.block_on(lab.store.get(settled)).unwrap();
    let held = weights(&held.text);
    wait_until(
        "a version with b2, b3 left alone",
        Duration::from_secs(30),
        || lab.last_version() > settled,
    );
    wait_until("reasons for b2 and b3", Duration::from_secs(10), || {
        a.status().is_some_and(|s| {
            let b = &service(&s).backends;
            b[1].reason.contains("NaN") && b[2].reason.contains("no series")
        })
    });
    std::thread::sleep(Duration::from_secs(4));
    for (_, w) in versions_since(&lab.rt, &lab.store, settled) {
        assert_eq!(w["b2"], held["b2"]);
        assert_eq!(w["b3"], held["b3"]);
    }
    let s = a.status().unwrap();
    assert!(service(&s).frozen.is_none(), "{s:?}");
    // A query that returns nothing at all: frozen, and it says so.
    lab.plant
        .lock()
        .unwrap()
        .missing
        .extend(all.map(String::from));
    wait_until("frozen without series", Duration::from_secs(15), || {
        a.status()
            .and_then(|s| service(&s).frozen.clone())
            .is_some_and(|f| f.contains("only 0 of 4"))
    });
    {
        let mut p = lab.plant.lock().unwrap();
        p.missing.clear();
        p.nan.clear();
    }
    converge(
        &lab.plant,
        &all,
        Duration::from_secs(90),
        Duration::from_secs(3),
    );

    // 4. Prometheus stopped: frozen (not reset), log and status say so; restarted: resumes.
    lab.prom.kill();
    lab.plant.lock().unwrap().cost.insert("b4".into(), 2.0);
    wait_until("frozen without prometheus", Duration::from_secs(15), || {
        a.status()
            .and_then(|s| service(&s).frozen.clone())
            .is_some_and(|f| f.contains("no load data"))
    });
    let frozen_at = lab.last_version();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(lab.last_version(), frozen_at, "published while frozen");
    assert!(a.log().contains("weights frozen"), "{}", a.log());
    lab.prom.launch();
    wait_until(
        "resumes after prometheus restarts",
        Duration::from_secs(40),
        || lab.last_version() > frozen_at,
    );
    assert!(a.log().contains("load data back"), "{}", a.log());
    converge(
        &lab.plant,
        &all,
        Duration::from_secs(90),
        Duration::from_secs(3),
    );

    // 5. A fleet-wide overload (every load x2.5, all above 0.9): no changes, status says why.
    {
        let mut p = lab.plant.lock().unwrap();
        p.boost = 2.5;
        p.cost.insert("b4".into(), 1.0);
    }
    wait_until("fleet overload seen", Duration::from_secs(15), || {
        a.status()
            .and_then(|s| service(&s).frozen.clone())
            .is_some_and(|f| f.contains("fleet-wide overload"))
    });
    let overloaded_at = lab.last_version();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        lab.last_version(),
        overloaded_at,
        "published during a fleet overload"
    );
    lab.plant.lock().unwrap().boost = 1.0;

    // 6. The operator drains b2 (from their own file): the drain stands, the controller backs
    //    off, then balances the other three.
    let drained = BACKENDS.replace(
        "{ name: b2, address: 10.0.0.22 }",
        "{ name: b2, address: 10.0.0.22, state: draining }",
    );
    let op = operator_publish(&lab.rt, &lab.store, &drained);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lab.last_version(),
        op.version,
        "published within the backoff"
    );
    let s = a.status().unwrap();
    assert!(
        s.holding
            .as_deref()
            .is_some_and(|h| h.contains("backing off"))
            || !service(&s)
                .backends
                .iter()
                .any(|b| b.wanted_weight != b.weight),
        "{s:?}"
    );
    let eligible = ["b1", "b3", "b4"];
    converge(
        &lab.plant,
        &eligible,
        Duration::from_secs(90),
        Duration::from_secs(3),
    );
    let vs = versions_since(&lab.rt, &lab.store, op.version);
    assert!(vs.len() > 1, "the controller did not adapt");
    for (m, w) in &vs {
        assert_eq!(w["b2"].1, State::Draining, "drain undone by {m:?}");
        if m.version > op.version {
            assert!(m
                .comment
                .contains(&format!("operator's version {}", op.version)));
        }
    }
    drop(a);
}

#[test]
fn the_standby_takes_over_when_the_active_controller_dies() {
    let lab = lab("xdplb/ctl-failover");
    let mut a = lab.ctl("a");
    wait_until("a active", Duration::from_secs(20), || {
        a.status().is_some_and(|s| s.role == "active")
    });
    let b = lab.ctl("b");
    wait_until("b standing by", Duration::from_secs(20), || {
        b.status()
            .is_some_and(|s| s.role == "standby" && s.active.is_some())
    });
    let a_name = a.status().unwrap().me;
    let b_name = b.status().unwrap().me;
    wait_until("a publishes", Duration::from_secs(30), || {
        lab.last_version() > 1
    });
    a.kill();
    let killed = Instant::now();
    while b.status().is_none_or(|s| s.role != "active") {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "b did not take over: {:?}\n{}",
            b.status(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = killed.elapsed();
    eprintln!("standby took over {took:?} after the active one was killed (session TTL 10 s)");
    // Consul invalidates a session between TTL and 2 x TTL after its last renewal.
    assert!(took <= Duration::from_secs(21), "{took:?}");
    // Still imbalanced by then? b3 costs twice: b goes on publishing; make sure it does.
    lab.plant.lock().unwrap().cost.insert("b1".into(), 2.0);
    let all = ["b1", "b2", "b3", "b4"];
    converge(
        &lab.plant,
        &all,
        Duration::from_secs(90),
        Duration::from_secs(3),
    );
    // Never two publishers: a's versions, then b's, never interleaved; b's all after a died.
    let vs = versions_since(&lab.rt, &lab.store, 2);
    let authors: Vec<&str> = vs.iter().map(|(m, _)| m.author.as_str()).collect();
    let first_b = authors
        .iter()
        .position(|a| *a == b_name)
        .expect("b published");
    assert!(
        authors[..first_b].iter().all(|x| *x == a_name),
        "{authors:?}"
    );
    assert!(
        authors[first_b..].iter().all(|x| *x == b_name),
        "{authors:?}"
    );
    assert!(b.log().contains("now the active one"));
}
