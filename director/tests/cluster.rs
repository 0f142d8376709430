//! Directors following one real Consul (`consul agent`, cluster::testing::ConsulAgent), run
//! in-process with `source: consul`: publish, drain, roll back and concurrent publishers end
//! with every director on the same checksum in its BPF maps; Consul killed and restarted
//! under running directors (tables stay, a fresh director starts from the persisted version,
//! all catch up); a version whose checksum a director cannot reproduce is refused, reported
//! in `status`, and the old table keeps serving.
//!
//! The directors attach to no interface (the maps are what is checked), so they run in this
//! process's network namespace where the agent listens on loopback; each has its own bpffs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cluster::testing::ConsulAgent;
use cluster::{Expect, PublishMeta, ServiceDigest, Store, VersionMeta};
use common::*;
use director::config::DirectorConfig;
use director::datapath::PinnedView;
use director::status::Status;
use director::Control;

fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("info,cluster=debug,director=debug")
        .try_init();
}

fn backends(ports: &[u8], draining: &[u8]) -> String {
    let mut s = format!(
        "services:\n  - name: web\n    hash_key: {KEY}\n    seed: {SEED}\n    table_bits: 8\n    binds:\n      - {{ vip: 10.100.0.1, proto: tcp, port: 80 }}\n    backends:\n"
    );
    for p in ports {
        let state = if draining.contains(p) {
            ", state: draining"
        } else {
            ""
        };
        s.push_str(&format!(
            "      - {{ name: b{p}, address: 10.1.0.{p}{state} }}\n"
        ));
    }
    s
}

/// What tablegen computes for `text`: the digests a publisher sends.
fn digests(text: &str) -> BTreeMap<String, ServiceDigest> {
    director::source::build(Path::new("backends.yaml"), text)
        .unwrap()
        .digests()
}

fn checksum(text: &str) -> u64 {
    digests(text)["web"].checksum
}

struct Cluster {
    consul: ConsulAgent,
    prefix: String,
    store: Arc<Store>,
    rt: tokio::runtime::Runtime,
}

impl Cluster {
    fn new(consul: ConsulAgent) -> Cluster {
        logs();
        let prefix = format!("xdplb-test/{}", unique("director-"));
        let rt = tokio::runtime::Runtime::new().unwrap();
        let config = consul.config(&prefix, Path::new("/nonexistent/unused.json"));
        let store = {
            let _g = rt.enter();
            Arc::new(Store::new(&config).unwrap())
        };
        Cluster {
            consul,
            prefix,
            store,
            rt,
        }
    }

    fn publish(&self, text: &str) -> VersionMeta {
        self.publish_with(text, digests(text))
    }

    fn publish_with(&self, text: &str, services: BTreeMap<String, ServiceDigest>) -> VersionMeta {
        let meta = PublishMeta {
            services,
            author: Some("director-test".into()),
            comment: String::new(),
            expect: Expect::Any,
        };
        self.rt.block_on(self.store.publish(text, meta)).unwrap()
    }

    fn rollback(&self, version: u64) {
        self.rt
            .block_on(self.store.set_current(version, Expect::Any))
            .unwrap();
    }

    fn director(&self) -> Director {
        Director::new(self, None, None)
    }
}

struct Director {
    dir: PathBuf,
    // Dropped after the daemon stopped (field order): detaches and unmounts.
    handle: Option<director::Handle>,
    join: Option<JoinHandle<Result<(), director::error::DaemonError>>>,
    cfg: DirectorConfig,
    _fs: Bpffs,
}

impl Director {
    /// A director with its own bpffs and state; `state_file` preset to a persisted version.
    /// `publish`: this director also publishes that backends file (`publish: true`).
    fn new(c: &Cluster, state_from: Option<&Director>, publish: Option<&Path>) -> Director {
        let fs = Bpffs::new();
        let dir = PathBuf::from(format!("/run/{}", unique("xdplb-cluster-test-")));
        std::fs::create_dir_all(&dir).unwrap();
        let state_file = dir.join("cluster-state.json");
        if let Some(d) = state_from {
            std::fs::copy(d.dir.join("cluster-state.json"), &state_file).unwrap();
        }
        let mut yaml = format!(
            "interfaces: []\nencap_source_v4: 10.1.0.1\nbpffs_dir: {}\nstate_dir: {}\nreload_debounce_ms: 1\nsource: consul\nconsul:\n  address: {}\n  prefix: {}\n  state_file: {}\n",
            fs.root.display(),
            dir.display(),
            c.consul.address(),
            c.prefix,
            state_file.display()
        );
        if let Some(p) = publish {
            yaml.push_str(&format!("publish: true\nbackends: {}\n", p.display()));
        }
        let cfg = DirectorConfig::parse(&dir.join("director.yaml"), &yaml).unwrap();
        let control = Control::new();
        let handle = control.handle();
        let run_cfg = cfg.clone();
        let join = std::thread::spawn(move || director::run(run_cfg, control));
        Director {
            dir,
            handle: Some(handle),
            join: Some(join),
            cfg,
            _fs: fs,
        }
    }

    fn status(&self) -> Status {
        director::status::gather(&self.cfg)
    }

    /// The checksum in the kernel's table header of service `web` (the daemon's own view).
    fn live_checksum(&self) -> Option<u64> {
        let st = self.status();
        let id = st.services.iter().find(|s| s.name == "web")?.id;
        PinnedView::open(&self.cfg.pin_dir())
            .ok()?
            .table_hdr(id)
            .map(|h| h.checksum)
    }

    fn applied(&self) -> Option<u64> {
        self.status().cluster?.applied_version
    }

    fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        if let Some(j) = self.join.take() {
            j.join().unwrap().unwrap();
        }
    }
}

impl Drop for Director {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every director serves `version` with `checksum` in its maps.
fn all_on(ds: &[&Director], version: u64, checksum: u64) {
    wait_until(
        &format!("every director on version {version}"),
        Duration::from_secs(10),
        || {
            ds.iter()
                .all(|d| d.applied() == Some(version) && d.live_checksum() == Some(checksum))
        },
    );
}

#[test]
fn three_directors_publish_drain_rollback_and_concurrent_publishers() {
    let c = Cluster::new(ConsulAgent::dev().unwrap());
    let v1 = backends(&[11, 12, 13], &[]);
    let m1 = c.publish(&v1);
    let d: Vec<Director> = (0..3).map(|_| c.director()).collect();
    let ds: Vec<&Director> = d.iter().collect();
    all_on(&ds, m1.version, checksum(&v1));

    let st = d[0].status();
    assert!(st.source.starts_with("consul "), "{}", st.source);
    let text = st.to_text();
    assert!(text.contains("consul: connected"), "{text}");
    assert!(text.contains("(in sync)"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&st.to_json()).unwrap();
    assert_eq!(json["cluster"]["applied_version"], m1.version);
    assert_eq!(json["cluster"]["current_version"], m1.version);
    assert_eq!(json["cluster"]["connected"], true);

    // Drain b13.
    let v2 = backends(&[11, 12, 13], &[13]);
    assert_ne!(checksum(&v1), checksum(&v2));
    let m2 = c.publish(&v2);
    all_on(&ds, m2.version, checksum(&v2));

    // Roll back.
    c.rollback(m1.version);
    all_on(&ds, m1.version, checksum(&v1));

    // Two publishers at once: nothing lost, every version whole, all directors on the last.
    let texts: Vec<String> = (0..6)
        .map(|i| backends(&[11, 12, 13, 20 + i as u8], &[]))
        .collect();
    let (a, b) = c.rt.block_on(async {
        let pa = async {
            let mut out = Vec::new();
            for t in &texts[..3] {
                let meta = PublishMeta {
                    services: digests(t),
                    ..Default::default()
                };
                out.push(c.store.publish(t, meta).await.unwrap().version);
            }
            out
        };
        let pb = async {
            let mut out = Vec::new();
            for t in &texts[3..] {
                let meta = PublishMeta {
                    services: digests(t),
                    ..Default::default()
                };
                out.push(c.store.publish(t, meta).await.unwrap().version);
            }
            out
        };
        tokio::join!(pa, pb)
    });
    let mut all: Vec<u64> = a.iter().chain(&b).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 6, "{a:?} {b:?}");
    for (i, v) in a.iter().chain(&b).enumerate() {
        let got = c.rt.block_on(c.store.get(*v)).unwrap();
        assert_eq!(got.text, texts[i]);
    }
    let current = c.rt.block_on(c.store.current()).unwrap().unwrap();
    let live = c.rt.block_on(c.store.get(current)).unwrap();
    all_on(&ds, current, checksum(&live.text));
}

#[test]
fn consul_down_forwarding_goes_on_and_directors_catch_up() {
    let mut c = Cluster::new(ConsulAgent::server().unwrap());
    let v1 = backends(&[11, 12], &[]);
    let m1 = c.publish(&v1);
    let d1 = c.director();
    let d2 = c.director();
    all_on(&[&d1, &d2], m1.version, checksum(&v1));

    c.consul.kill();
    wait_until("directors see consul down", Duration::from_secs(10), || {
        [&d1, &d2]
            .iter()
            .all(|d| d.status().cluster.is_some_and(|c| !c.connected))
    });
    // Forwarding goes on: the tables stay in the maps, the status says what is wrong.
    for d in [&d1, &d2] {
        assert_eq!(d.live_checksum(), Some(checksum(&v1)));
        assert_eq!(d.applied(), Some(m1.version));
        let text = d.status().to_text();
        assert!(text.contains("NOT CONNECTED"), "{text}");
    }
    // A director that starts while Consul is down serves its persisted version. The follower
    // records it as applied just after the tables go live: wait for both.
    let d3 = Director::new(&c, Some(&d1), None);
    wait_until(
        "the fresh director serves the persisted version",
        Duration::from_secs(10),
        || d3.live_checksum() == Some(checksum(&v1)) && d3.applied() == Some(m1.version),
    );
    let st3 = d3.status().cluster.unwrap();
    assert_eq!(st3.applied_version, Some(m1.version));
    assert_eq!(st3.applied_from.as_deref(), Some("state_file"));
    assert!(!st3.connected);

    c.consul.restart().unwrap();
    let v2 = backends(&[11, 12, 14], &[]);
    let m2 = {
        // The store reconnects by itself; the first calls may still find the agent electing.
        let t0 = Instant::now();
        loop {
            let meta = PublishMeta {
                services: digests(&v2),
                ..Default::default()
            };
            match c.rt.block_on(c.store.publish(&v2, meta)) {
                Ok(m) => break m,
                Err(e) if t0.elapsed() < Duration::from_secs(15) => {
                    eprintln!("publish after restart: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("publish after restart: {e}"),
            }
        }
    };
    all_on(&[&d1, &d2, &d3], m2.version, checksum(&v2));
    for d in [&d1, &d2, &d3] {
        let st = d.status().cluster.unwrap();
        assert!(st.connected);
        assert_eq!(st.applied_from.as_deref(), Some("consul"));
    }
}

#[test]
fn a_version_that_does_not_reproduce_is_refused_and_reported() {
    let c = Cluster::new(ConsulAgent::dev().unwrap());
    let v1 = backends(&[11, 12], &[]);
    let m1 = c.publish(&v1);
    let mut d1 = c.director();
    let d2 = c.director();
    all_on(&[&d1, &d2], m1.version, checksum(&v1));

    // A publisher whose tablegen computes another table (simulated: a wrong checksum).
    let v2 = backends(&[11, 12, 13], &[]);
    let mut bad = digests(&v2);
    bad.get_mut("web").unwrap().checksum ^= 1;
    let m2 = c.publish_with(&v2, bad);
    wait_until("both directors refuse it", Duration::from_secs(10), || {
        [&d1, &d2].iter().all(|d| {
            d.status()
                .cluster
                .and_then(|c| c.rejected)
                .is_some_and(|r| r.version == m2.version)
        })
    });
    for d in [&d1, &d2] {
        assert_eq!(d.live_checksum(), Some(checksum(&v1)), "old table serves");
        let st = d.status();
        let cl = st.cluster.clone().unwrap();
        assert_eq!(cl.applied_version, Some(m1.version));
        assert_eq!(cl.current_version, Some(m2.version));
        let r = cl.rejected.unwrap();
        assert!(r.error.contains("does not reproduce"), "{}", r.error);
        let text = st.to_text();
        assert!(text.contains("REFUSED"), "{text}");
        assert!(text.contains("NOT IN SYNC"), "{text}");
    }
    // A restart does not take the refused version either: the persisted one is served.
    d1.stop();
    let d1b = Director::new(&c, Some(&d1), None);
    wait_until(
        "restarted director settles",
        Duration::from_secs(10),
        || {
            d1b.status()
                .cluster
                .is_some_and(|c| c.connected && c.rejected.is_some_and(|r| r.version == m2.version))
        },
    );
    assert_eq!(d1b.live_checksum(), Some(checksum(&v1)));

    // The next good version is taken and the refusal cleared.
    let m3 = c.publish(&v2);
    all_on(&[&d1b, &d2], m3.version, checksum(&v2));
    assert!(d2.status().cluster.unwrap().rejected.is_none());
}

#[test]
fn a_director_publishes_its_own_file_and_the_others_follow() {
    let c = Cluster::new(ConsulAgent::dev().unwrap());
    let dir = PathBuf::from(format!("/run/{}", unique("xdplb-cluster-pub-")));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("backends.yaml");
    let v1 = backends(&[11, 12, 13], &[]);
    std::fs::write(&file, &v1).unwrap();
    // Nothing is published yet: the publishing director puts the first version there.
    let publisher = Director::new(&c, None, Some(&file));
    let follower = c.director();
    let current = || c.rt.block_on(c.store.current()).unwrap();
    wait_until(
        "the first version is published",
        Duration::from_secs(10),
        || current().is_some(),
    );
    let first = current().unwrap();
    all_on(&[&publisher, &follower], first, checksum(&v1));

    // A drain written the way editors save (new file renamed over the old).
    let v2 = backends(&[11, 12, 13], &[12]);
    let tmp = dir.join("backends.swp");
    std::fs::write(&tmp, &v2).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    wait_until("the drain is published", Duration::from_secs(10), || {
        current() != Some(first)
    });
    let second = current().unwrap();
    all_on(&[&publisher, &follower], second, checksum(&v2));

    // An invalid edit is not published; the cluster stays on the drain.
    std::fs::write(&file, "services: [oops\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(current(), Some(second));
    assert_eq!(c.rt.block_on(c.store.versions()).unwrap().len(), 2);
    drop(publisher);
    let _ = std::fs::remove_dir_all(&dir);
}
