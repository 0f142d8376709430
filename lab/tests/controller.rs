//! The load-aware controller with the real system around it: two directors in cluster mode
//! (tables from the lab's Consul), three backends whose servers count the connections they
//! serve, a load exporter per backend (load = connections served now x its cost per
//! connection; backend-1 costs twice as much), a real Prometheus scraping the exporters, and
//! the real `xdplb-controller` in the router namespace. A client keeps 300 real TCP connections
//! through the VIP, each living 1 to 2 s and then replaced, so new connections follow the table
//! of the moment, and every broken one is counted.
//!
//! One test walks through the cases in turn (the lab takes a while to start): convergence from
//! equal weights, a load step (backend-2's cost doubles), and an operator's drain published
//! through the cluster while the controller runs. Throughout, not one connection may break.
//!
//! What is held to ±10 % / ±25 % is each backend's *table load*: its share of the table's rows
//! in the live version (what tablegen builds and every director installs) times its cost. That
//! is the load the live weights give a backend, free of the sampling noise of a few hundred
//! connections; the client's own count of where its new connections landed, times the costs,
//! is held to it within ±15 % at each settled point. Short intervals keep the run to minutes
//! (docs/development/load-controller.md lists them and the production defaults).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use lab::addr::{self, Family};
use lab::churn::{Churn, ChurnConfig};
use lab::load::{controller_binary, LoadExporters, Prometheus, LOAD_METRIC};
use lab::system::{Binaries, System, SystemOptions};
use lab::Node;
use tablegen::config::{Config, State};

const SERVER: &str = env!("CARGO_BIN_EXE_xdplb-lab-server");
const AUTHOR_PREFIX: &str = "xdplb-controller@";

/// The controller's settings in this test (production defaults in etc/controller.yaml).
const INTERVAL_SECS: u64 = 2;
const MIN_PUBLISH_SECS: u64 = 8;
const BACKOFF_SECS: u64 = 4;
/// Prometheus averages each backend's load over this window (its scrape interval is 1 s).
const WINDOW_SECS: u64 = 6;

/// A published version as the test reads it.
#[derive(Debug, Clone)]
struct Version {
    number: u64,
    created_unix: u64,
    author: String,
    comment: String,
    /// Per backend: weight and state.
    backends: BTreeMap<String, (u32, State)>,
    /// Per backend: share of the table's rows whose primary it is.
    shares: BTreeMap<String, f64>,
}

impl Version {
    fn by_controller(&self) -> bool {
        self.author.starts_with(AUTHOR_PREFIX)
    }

    /// Table load of each active backend: row share x cost.
    fn loads(&self, costs: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
        self.backends
            .iter()
            .filter(|(_, (_, s))| *s == State::Active)
            .map(|(b, _)| (b.clone(), self.shares[b] * costs[b]))
            .collect()
    }
}

/// Relative deviations from the mean.
fn deviations(loads: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let mean = loads.values().sum::<f64>() / loads.len().max(1) as f64;
    loads
        .iter()
        .map(|(b, l)| (b.clone(), (l - mean) / mean))
        .collect()
}

fn within(devs: &BTreeMap<String, f64>, band: f64) -> bool {
    devs.values().all(|d| d.abs() <= band)
}

fn show(devs: &BTreeMap<String, f64>) -> String {
    let v: Vec<String> = devs
        .iter()
        .map(|(b, d)| format!("{b} {:+.1}%", d * 100.0))
        .collect();
    v.join(", ")
}

struct Walk {
    sys: System,
    exporters: LoadExporters,
    churn: Churn,
    status_file: std::path::PathBuf,
    cache: BTreeMap<u64, Version>,
}

impl Walk {
    fn costs(&self) -> BTreeMap<String, f64> {
        (1..=3)
            .map(|i| (Node::Backend(i).name(), self.exporters.cost(i)))
            .collect()
    }

    /// Every version, oldest first.
    fn versions(&mut self) -> Vec<Version> {
        let out = self.sys.cluster(&["versions", "--json"]).unwrap();
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut list = Vec::new();
        for m in json["versions"].as_array().unwrap() {
            let number = m["version"].as_u64().unwrap();
            if !self.cache.contains_key(&number) {
                let text = self.sys.cluster(&["get", &number.to_string()]).unwrap();
                let config = Config::parse(Path::new("version.yaml"), &text).unwrap();
                let backends = config.services[0]
                    .backends
                    .iter()
                    .map(|b| (b.name.clone(), (b.weight, b.state)))
                    .collect();
                let shares = self.sys.expected_shares_of(&text).unwrap();
                self.cache.insert(
                    number,
                    Version {
                        number,
                        created_unix: m["created_unix"].as_u64().unwrap(),
                        author: m["author"].as_str().unwrap().to_string(),
                        comment: m["comment"].as_str().unwrap_or("").to_string(),
                        backends,
                        shares,
                    },
                );
            }
            list.push(self.cache[&number].clone());
        }
        list
    }

    fn current(&mut self) -> Version {
        self.versions().pop().expect("a version")
    }

    fn status(&self) -> serde_json::Value {
        std::fs::read_to_string(&self.status_file)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn controller_log(&self) -> String {
        self.sys.lab().log("xdplb-controller")
    }

    fn assert_unbroken(&self) {
        let s = self.churn.stats();
        assert!(s.broken.is_empty(), "broken connections: {s}");
    }

    /// Until the live version's table loads of `eligible` are within ±10 % and stay so for
    /// `hold`, at most `limit`. Returns the version that got there (the first of the run that
    /// stayed within the band) and the time from `t0` to its publication.
    fn converge(&mut self, since: u64, limit: Duration, hold: Duration) -> (Version, Duration) {
        let start = Instant::now();
        let t0_unix = unix_now();
        let mut inside: Option<(Version, Instant)> = None;
        loop {
            let v = self.current();
            let devs = deviations(&v.loads(&self.costs()));
            if within(&devs, 0.10) {
                let (first, at) = inside.get_or_insert_with(|| (v.clone(), Instant::now()));
                if at.elapsed() >= hold {
                    let first = first.clone();
                    let took = Duration::from_secs(first.created_unix.saturating_sub(t0_unix));
                    return (first, took);
                }
            } else {
                inside = None;
            }
            self.assert_unbroken();
            assert!(
                start.elapsed() < limit,
                "not within ±10 % after {limit:?} (since version {since}): version {} gives {}\n\
                 status: {}\ncontroller log:\n{}",
                v.number,
                show(&devs),
                self.status(),
                self.controller_log()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// The loads the client's own new connections put on each of `eligible` over `window`:
    /// connections that landed there x cost.
    fn measured(&self, eligible: &[&str], window: Duration) -> BTreeMap<String, f64> {
        let before = self.churn.stats().per_backend;
        std::thread::sleep(window);
        let after = self.churn.stats().per_backend;
        let costs = self.costs();
        eligible
            .iter()
            .map(|b| {
                let n = after.get(*b).copied().unwrap_or(0) - before.get(*b).copied().unwrap_or(0);
                (b.to_string(), n as f64 * costs[*b])
            })
            .collect()
    }

    /// The client's connections agree with the table: their loads within ±15 % of the mean.
    fn assert_connections_follow(&self, eligible: &[&str]) {
        let devs = deviations(&self.measured(eligible, Duration::from_secs(8)));
        eprintln!("  new connections x cost over 8 s: {}", show(&devs));
        assert!(
            within(&devs, 0.15),
            "the connections do not follow the table: {}",
            show(&devs)
        );
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Largest overshoot over `vs`: a table-load deviation on the other side of the mean from
/// where the backend started (for backends that started outside ±10 %).
fn overshoot(vs: &[Version], costs: &BTreeMap<String, f64>) -> f64 {
    let Some(first) = vs.first() else { return 0.0 };
    let start = deviations(&first.loads(costs));
    let mut worst: f64 = 0.0;
    for v in vs {
        for (b, d) in deviations(&v.loads(costs)) {
            let s = start.get(&b).copied().unwrap_or(0.0);
            if s.abs() > 0.10 && d.signum() == -s.signum() {
                worst = worst.max(d.abs());
            }
        }
    }
    worst
}

/// Direction changes of the backends' weights over the controller's versions among `vs`.
fn reversals(vs: &[Version]) -> usize {
    let mut last: BTreeMap<String, (u32, i8)> = BTreeMap::new();
    let mut n = 0;
    for v in vs.iter().filter(|v| v.by_controller()) {
        for (b, (w, _)) in &v.backends {
            let e = last.entry(b.clone()).or_insert((*w, 0));
            let dir = (i64::from(*w) - i64::from(e.0)).signum() as i8;
            if dir != 0 {
                if e.1 != 0 && e.1 != dir {
                    n += 1;
                }
                e.1 = dir;
            }
            e.0 = *w;
        }
    }
    n
}

#[test]
fn the_controller_balances_real_connections_through_the_directors() {
    let bins = Binaries::for_tests(Path::new(SERVER)).expect("build the daemons");
    let controller = controller_binary(Path::new(SERVER)).expect("build the controller");
    let sys = System::start(
        bins,
        SystemOptions {
            consul: true,
            ..SystemOptions::default()
        },
    )
    .expect("start xdplb in the lab");
    let lab = sys.lab();

    // The operator's version the controller works from: every backend in every row (hops 3
    // of 3). A weight change can move a backend down a row's ranking by more than one place;
    // a connection survives it only while its backend is still among the row's hops (with
    // hops 2 here, the first step already reset a connection; docs/development/
    // load-controller.md has the numbers).
    let yaml = std::fs::read_to_string(sys.backends_yaml()).unwrap();
    lab.write_file("backends.yaml", &yaml.replace("hops: 2", "hops: 3"))
        .unwrap();
    sys.cluster_publish("every backend in every row").unwrap();
    let applied = |i: usize| -> Option<u64> {
        let st: serde_json::Value = serde_json::from_str(&sys.director_status(i).ok()?).ok()?;
        st["cluster"]["applied_version"].as_u64()
    };
    let t0 = Instant::now();
    while !(1..=2).all(|i| applied(i) == Some(2)) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "version 2 not applied"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // backend-1 does twice the work per connection.
    let exporters = LoadExporters::start(lab, &[(1, 2.0), (2, 1.0), (3, 1.0)]).unwrap();
    let targets: Vec<_> = (1..=3).map(LoadExporters::address).collect();
    let prometheus = Prometheus::start(lab, &targets).unwrap();
    let churn = Churn::start(
        &lab.ns(Node::Client),
        ChurnConfig::new(addr::vip_tcp(Family::V4), 300),
    )
    .unwrap();

    let status_file = lab.run_dir().join("controller-status.json");
    let config = format!(
        "consul:\n  address: {consul}\n  prefix: {prefix}\n\
         prometheus: {prom}\n\
         interval_secs: {INTERVAL_SECS}\n\
         min_publish_interval_secs: {MIN_PUBLISH_SECS}\n\
         operator_backoff_secs: {BACKOFF_SECS}\n\
         lock_ttl_secs: 10\n\
         status_file: {status}\n\
         services:\n\
         \x20 - name: web\n\
         \x20   query: 'avg_over_time({LOAD_METRIC}[{WINDOW_SECS}s])'\n\
         \x20   backend_label: backend\n\
         \x20   # Loads are connection-costs here, not utilisation: no overload in this test.\n\
         \x20   overloaded_above: 1000000\n",
        consul = sys.consul_address(),
        prefix = sys.consul_prefix(),
        prom = prometheus.url(),
        status = status_file.display(),
    );
    let cfg = lab.write_file("controller.yaml", &config).unwrap();
    let cmd = lab
        .ns(Node::Router)
        .command("env")
        .arg("RUST_LOG=info,consulrs=off,rustify=off")
        .arg(&controller)
        .args(["run", "--config"])
        .arg(&cfg);
    lab.spawn("xdplb-controller", &cmd).unwrap();

    let mut w = Walk {
        sys,
        exporters,
        churn,
        status_file,
        cache: BTreeMap::new(),
    };
    let all = ["backend-1", "backend-2", "backend-3"];

    // 1. From equal weights, backend-1 at twice the cost: converge.
    let (at, took) = w.converge(2, Duration::from_secs(150), Duration::from_secs(12));
    let vs = w.versions();
    let upto: Vec<Version> = vs
        .iter()
        .filter(|v| v.number <= at.number)
        .cloned()
        .collect();
    let publishes = upto.iter().filter(|v| v.by_controller()).count();
    let over = overshoot(&vs, &w.costs());
    eprintln!(
        "2x cost: within ±10 % with version {} after {publishes} controller versions ({took:?}); \
         overshoot {:.1}%, {} direction changes; now {}",
        at.number,
        over * 100.0,
        reversals(&vs),
        show(&deviations(&w.current().loads(&w.costs())))
    );
    assert!(publishes >= 1, "the controller never published");
    assert!(publishes <= 10, "{publishes} versions to converge");
    assert!(over <= 0.25, "overshoot {:.1}%", over * 100.0);
    for v in &vs[2..] {
        assert!(v.by_controller(), "{v:?}");
        assert!(
            v.comment.contains("load controller (operator's version 2)"),
            "{v:?}"
        );
    }
    // backend-1 ends with about half the others' weight.
    let cur = w.current();
    let ratio = f64::from(cur.backends["backend-1"].0) / f64::from(cur.backends["backend-2"].0);
    assert!((0.4..=0.6).contains(&ratio), "{cur:?}");
    w.assert_connections_follow(&all);
    w.assert_unbroken();

    // 2. A load step: backend-2's cost doubles. Settles again, without oscillating.
    let step_from = w.current().number;
    let step_unix = unix_now();
    w.exporters.set_cost(2, 2.0);
    let (at, _) = w.converge(step_from, Duration::from_secs(150), Duration::from_secs(12));
    let vs: Vec<Version> = w
        .versions()
        .into_iter()
        .filter(|v| v.number >= step_from)
        .collect();
    let publishes = vs
        .iter()
        .filter(|v| v.by_controller() && v.number <= at.number && v.number > step_from)
        .count();
    let secs = at.created_unix.saturating_sub(step_unix);
    let over = overshoot(&vs, &w.costs());
    let turns = reversals(&vs);
    eprintln!(
        "load step: within ±10 % with version {} after {publishes} controller versions, {secs} s \
         = {:.1} control intervals of {INTERVAL_SECS} s; overshoot {:.1}%, {turns} direction changes",
        at.number,
        secs as f64 / INTERVAL_SECS as f64,
        over * 100.0
    );
    assert!(publishes >= 1, "the controller did not react to the step");
    assert!(publishes <= 10, "{publishes} versions to settle");
    assert!(over <= 0.25, "overshoot {:.1}%", over * 100.0);
    assert!(turns <= 2, "weights oscillate: {turns} direction changes");
    w.assert_connections_follow(&all);
    w.assert_unbroken();

    // 3. The operator drains backend-2 through the cluster while the controller runs: the
    //    drain stands, the controller backs off, then balances the two others around it.
    w.sys.tablegen(&["drain", "backend-2"]).unwrap();
    w.sys.cluster_publish("drain backend-2").unwrap();
    let op = w.current();
    assert!(!op.by_controller(), "{op:?}");
    assert_eq!(op.backends["backend-2"].1, State::Draining);
    std::thread::sleep(Duration::from_secs(BACKOFF_SECS - 1));
    assert_eq!(
        w.current().number,
        op.number,
        "published within the backoff"
    );
    let eligible = ["backend-1", "backend-3"];
    let (at, _) = w.converge(op.number, Duration::from_secs(150), Duration::from_secs(12));
    let after: Vec<Version> = w
        .versions()
        .into_iter()
        .filter(|v| v.number > op.number)
        .collect();
    eprintln!(
        "drain: the controller published {} versions around it, within ±10 % with version {}",
        after.len(),
        at.number
    );
    assert!(!after.is_empty(), "the controller did not adapt");
    for v in &after {
        assert!(v.by_controller(), "{v:?}");
        assert_eq!(
            v.backends["backend-2"].1,
            State::Draining,
            "drain undone by {v:?}"
        );
        assert!(
            v.comment
                .contains(&format!("operator's version {}", op.number)),
            "{v:?}"
        );
    }
    let s = w.status();
    assert_eq!(s["role"], "active", "{s}");
    assert_eq!(s["operator_version"].as_u64(), Some(op.number), "{s}");
    assert!(
        w.churn.stats().open_per_backend.get("backend-2").copied() == Some(0),
        "new connections still reach the drained backend: {}",
        w.churn.stats()
    );
    w.assert_connections_follow(&eligible);

    // Both directors forward the live version.
    let live = w.current().number;
    for i in 1..=2 {
        let st: serde_json::Value =
            serde_json::from_str(&w.sys.director_status(i).unwrap()).unwrap();
        assert_eq!(
            st["cluster"]["applied_version"].as_u64(),
            Some(live),
            "{st}"
        );
    }

    let Walk {
        sys,
        churn,
        exporters,
        ..
    } = w;
    let stats = churn.stop();
    eprintln!("client: {stats}");
    assert!(stats.broken.is_empty(), "broken connections: {stats}");
    assert!(stats.completed > 10_000, "{stats}");
    drop(exporters);
    drop(sys);
}
