//! Helpers shared by the integration tests and the benchmark: config texts, a stand-in for
//! tablegen's checksum, and followers wired to a test Consul agent.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster::testing::ConsulAgent;
use cluster::{
    ApplyError, Follower, FollowerStatus, PublishMeta, ServiceDigest, Store, VersionMeta,
};
use sha2::{Digest, Sha256};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "cluster=info,consulrs=warn,rustify=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A backends.yaml in the design's shape with `backends` backends per service.
pub fn config_text(services: usize, backends: usize, tag: &str) -> String {
    let mut s = format!("# {tag}\nservices:\n");
    for svc in 0..services {
        s.push_str(&format!(
            "  - name: svc-{svc}\n    hash_key: 6c8d0f1e2a3b4c5d6e7f8091a2b3c4d5\n    seed: 0f1e2d3c4b5a69788796a5b4c3d2e1f0\n    table_bits: 20\n    hops: 2\n    hash: [src_ip, src_port, dst_ip, dst_port]\n    binds:\n      - {{ vip: 10.100.0.{svc}, proto: tcp, port: 443 }}\n    backends:\n"
        ));
        for b in 0..backends {
            s.push_str(&format!(
                "      - {{ name: backend-{svc}-{b:04}, address: 10.{}.{}.{}, weight: 1, state: active }}\n",
                svc + 1,
                b / 250,
                b % 250 + 1
            ));
        }
    }
    s
}

/// Stand-in for tablegen's per-service checksum: the real one is computed from built tables;
/// here any deterministic function of the text does, and a follower that computes a different
/// one plays "a director with a different software version".
pub fn checksum(text: &str) -> u64 {
    let d = Sha256::digest(text.as_bytes());
    u64::from_le_bytes(d[..8].try_into().unwrap())
}

pub fn publish_meta(text: &str) -> PublishMeta {
    PublishMeta {
        services: digests(text, checksum(text)),
        comment: "test".into(),
        ..PublishMeta::default()
    }
}

pub fn digests(text: &str, sum: u64) -> BTreeMap<String, ServiceDigest> {
    let _ = text;
    BTreeMap::from([(
        "web".to_string(),
        ServiceDigest {
            version: 1,
            checksum: sum,
        },
    )])
}

/// The callback a test director passes: recompute, compare, "swap" (record the version).
pub type Applied = Arc<Mutex<Vec<(u64, String)>>>;

pub fn verifier(
    applied: Applied,
    skew: u64,
) -> impl Fn(&str, &VersionMeta) -> Result<(), ApplyError> + Send + Sync + 'static {
    move |text: &str, meta: &VersionMeta| {
        let mine = checksum(text) ^ skew;
        let published = meta.services["web"].checksum;
        if mine != published {
            return Err(format!(
                "service web: computed checksum {mine:016x}, published {published:016x}"
            )
            .into());
        }
        applied
            .lock()
            .unwrap()
            .push((meta.version, text.to_string()));
        Ok(())
    }
}

pub type Callback = Box<dyn Fn(&str, &VersionMeta) -> Result<(), ApplyError> + Send + Sync>;
pub type TestFollower = Follower<Callback>;

pub struct Running {
    pub follower: Arc<TestFollower>,
    pub applied: Applied,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn status(&self) -> FollowerStatus {
        self.follower.status()
    }
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
    }
    /// Waits until the status satisfies `pred`; panics with the status after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&FollowerStatus) -> bool,
    ) {
        let mut rx = self.follower.subscribe();
        let res = tokio::time::timeout(timeout, rx.wait_for(|s| pred(s))).await;
        if res.is_err() {
            panic!(
                "timed out waiting for {what}: {:#?}",
                self.follower.status()
            );
        }
    }
}

pub fn store(agent: &ConsulAgent, prefix: &str, state: &Path, wait: Duration) -> Arc<Store> {
    let mut cfg = agent.config(prefix, state);
    cfg.watch_wait = wait;
    Arc::new(Store::new(&cfg).unwrap())
}

/// Starts a follower on its own store (own connection), like a separate director.
pub fn spawn_follower(store: Arc<Store>, state_file: &Path, skew: u64) -> Running {
    let applied: Applied = Arc::default();
    let cb: Callback = Box::new(verifier(applied.clone(), skew));
    let follower = Arc::new(Follower::new(store, state_file, cb));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let f = follower.clone();
    let task = tokio::spawn(async move {
        f.run(async {
            let _ = rx.await;
        })
        .await
    });
    Running {
        follower,
        applied,
        stop: Some(tx),
        task,
    }
}
