//! `cargo bench -p xdplb-director --bench cluster`: the cluster's propagation target
//! (docs/development/benchmarking.md) with real director daemons, not bare followers
//! (cluster/benches/propagation.rs measures those).
//!
//! A real Consul (`consul agent -dev`, cluster::testing::ConsulAgent) and three in-process
//! directors with `source: consul`, each on its own bpffs, attached to no interface, exactly as
//! director/tests/cluster.rs runs them. Each run publishes a changed backends.yaml (100
//! backends, 2^16 rows, alternately draining b1 and b2) and times publish start (the
//! publisher's tablegen digests included) to the moment the last of the three directors has the
//! new table header in its pinned map. The bench polls the maps every 1 ms; the daemons do not
//! poll (they block on Consul).
//!
//! Idle: the process's CPU time (getrusage, all threads: three directors, their followers and
//! their blocking queries) over 10 s with nothing published.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cluster::testing::ConsulAgent;
use cluster::{Expect, PublishMeta, ServiceDigest, Store};
use common::*;
use director::config::DirectorConfig;
use director::datapath::PinnedView;
use director::Control;

const DIRECTORS: usize = 3;
const RUNS: usize = 30;
const IDLE: Duration = Duration::from_secs(10);

/// 100 backends, 2^16 rows; `drained` is draining.
fn text(drained: usize) -> String {
    hundred_backends("web", drained)
}

/// What tablegen computes for `text`: the digests a publisher sends.
fn digests(text: &str) -> BTreeMap<String, ServiceDigest> {
    director::source::build(Path::new("backends.yaml"), text)
        .unwrap()
        .digests()
}

struct Director {
    dir: PathBuf,
    // Dropped after the daemon stopped (field order): detaches and unmounts.
    handle: Option<director::Handle>,
    join: Option<JoinHandle<Result<(), director::error::DaemonError>>>,
    view: Option<PinnedView>,
    pin: PathBuf,
    _fs: Bpffs,
}

impl Director {
    fn new(consul: &ConsulAgent, prefix: &str) -> Director {
        let fs = Bpffs::new();
        let dir = PathBuf::from(format!("/run/{}", unique("xdplb-cluster-bench-")));
        std::fs::create_dir_all(&dir).unwrap();
        let yaml = format!(
            "interfaces: []\nencap_source_v4: 10.1.0.1\nbpffs_dir: {}\nstate_dir: {}\nsource: consul\nconsul:\n  address: {}\n  prefix: {}\n  state_file: {}\n",
            fs.root.display(),
            dir.display(),
            consul.address(),
            prefix,
            dir.join("cluster-state.json").display()
        );
        let cfg = DirectorConfig::parse(&dir.join("director.yaml"), &yaml).unwrap();
        let control = Control::new();
        let handle = control.handle();
        let pin = cfg.pin_dir();
        let join = std::thread::spawn(move || director::run(cfg, control));
        Director {
            dir,
            handle: Some(handle),
            join: Some(join),
            view: None,
            pin,
            _fs: fs,
        }
    }

    /// The table version in the kernel's header of service slot 0 (the only service).
    fn live_version(&mut self) -> Option<u64> {
        if self.view.is_none() {
            self.view = PinnedView::open(&self.pin).ok();
        }
        self.view.as_ref()?.table_hdr(0).map(|h| h.version)
    }
}

impl Drop for Director {
    fn drop(&mut self) {
        self.view = None;
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Poll every 1 ms until every director serves `version`; the moment the last one does.
fn wait_all(ds: &mut [Director], version: u64, since: Instant) -> Instant {
    let mut pending: Vec<usize> = (0..ds.len()).collect();
    loop {
        pending.retain(|&i| ds[i].live_version() != Some(version));
        if pending.is_empty() {
            return Instant::now();
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "directors {pending:?} never served version {version:#x}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// User + system CPU time of this process, all threads (getrusage(RUSAGE_SELF)).
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut u), 0);
        u
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this binary with no flag:
    // then only check that it builds.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "bench binary built; run `cargo bench -p xdplb-director --bench cluster` for figures"
        );
        return;
    }
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let consul = ConsulAgent::dev().unwrap();
    let prefix = format!("xdplb-bench/{}", unique("director-"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = {
        let _g = rt.enter();
        let config = consul.config(&prefix, Path::new("/nonexistent/unused.json"));
        Arc::new(Store::new(&config).unwrap())
    };
    let publish = |t: &str| {
        let meta = PublishMeta {
            services: digests(t),
            author: Some("director-bench".into()),
            comment: String::new(),
            expect: Expect::Any,
        };
        rt.block_on(store.publish(t, meta)).unwrap()
    };

    let first = text(1);
    let v0 = digests(&first)["web"].version;
    publish(&first);
    let mut ds: Vec<Director> = (0..DIRECTORS)
        .map(|_| Director::new(&consul, &prefix))
        .collect();
    let t = Instant::now();
    wait_all(&mut ds, v0, t);
    println!(
        "{DIRECTORS} directors started and on the first version in {:?}",
        t.elapsed()
    );

    let mut all_live = Vec::new();
    let mut first_live = Vec::new();
    let mut publish_call = Vec::new();
    for r in 0..RUNS + 2 {
        let t = text(if r % 2 == 0 { 2 } else { 1 });
        let t0 = Instant::now();
        let services = digests(&t);
        let want = services["web"].version;
        let t1 = Instant::now();
        let meta = PublishMeta {
            services,
            author: Some("director-bench".into()),
            comment: String::new(),
            expect: Expect::Any,
        };
        rt.block_on(store.publish(&t, meta)).unwrap();
        let t2 = Instant::now();
        // The first director to serve it, then all.
        let mut first = None;
        while first.is_none() {
            if ds.iter_mut().any(|d| d.live_version() == Some(want)) {
                first = Some(Instant::now());
            } else {
                assert!(t0.elapsed() < Duration::from_secs(60), "nobody went live");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let last = wait_all(&mut ds, want, t0);
        if r >= 2 {
            // the first two warm connections and caches
            first_live.push(first.unwrap() - t0);
            all_live.push(last - t0);
            publish_call.push(t2 - t1);
        }
        // Let the directors settle (persist state, finish logging) before the next publish.
        std::thread::sleep(Duration::from_millis(100));
    }
    for v in [&mut all_live, &mut first_live, &mut publish_call] {
        v.sort();
    }
    println!(
        "publish -> new table live on all {DIRECTORS} directors, 100 backends, 2^16 rows, {RUNS} runs:"
    );
    println!(
        "  all {DIRECTORS} live      median {:>8.1?}  p90 {:>8.1?}  min {:>8.1?}  max {:>8.1?}",
        pct(&all_live, 0.5),
        pct(&all_live, 0.9),
        all_live[0],
        all_live[all_live.len() - 1]
    );
    println!(
        "  first live      median {:>8.1?}  p90 {:>8.1?}",
        pct(&first_live, 0.5),
        pct(&first_live, 0.9)
    );
    println!(
        "  publish call    median {:>8.1?}  (Consul writes under the lock)",
        pct(&publish_call, 0.5)
    );

    // Idle: nothing published, nobody polling in this process.
    std::thread::sleep(Duration::from_secs(1));
    let (c0, w0) = (cpu_time(), Instant::now());
    std::thread::sleep(IDLE);
    let (cpu, wall) = (cpu_time() - c0, w0.elapsed());
    println!(
        "idle, {DIRECTORS} directors following Consul: {cpu:?} CPU in {wall:.1?} ({:.3}% of one core)",
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0
    );
    drop(ds);
}
