//! The controller daemon: every interval, per service, read the loads, run the law, and (when
//! this process is the active controller and the rules below allow) publish a new version with
//! the weights it wants, through the cluster's normal path.
//!
//! The weights are relative to the *operator's* weights: those of the newest version in the
//! chain of `current` (following parents) not published by a controller. A controller version
//! is recognised by its author (`xdplb-controller@<host>`). Its weights are the operator's
//! multiplied by the service's scale (so that factors such as 0.83 are representable as whole
//! numbers; weights are relative, so the scale itself changes no table row) and by each
//! backend's factor. Only weights change: states and everything else come from `current` as
//! they are.
//!
//! Publishing rules: only the lock holder publishes (checked with Consul just before), with
//! `Expect::Current` on the version it read; at most one version per `min_publish_interval`
//! (counted from the last controller version, whoever published it); never within
//! `operator_backoff` of an operator's version; nothing when no weight would change.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cluster::consul::Consul;
use cluster::{Expect, PublishMeta, Store, VersionMeta};
use serde::{Deserialize, Serialize};
use tablegen::config::{Config as Tables, State, WEIGHT_MAX};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Config;
use crate::law::{self, Input, Motion, Sample};
use crate::leader::Leader;
use crate::prom::{self, Prometheus};

/// Authors of controller versions start with this.
pub const AUTHOR_PREFIX: &str = "xdplb-controller@";
/// Largest multiplier put on the operator's weights.
const SCALE_MAX: u64 = 1000;

/// What `status` shows: the controller's view, rewritten every interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// This process (`xdplb-controller@host:pid`).
    pub me: String,
    /// `active` (holds the lock), `standby`, or `starting`.
    pub role: String,
    /// Who holds the lock, as Consul says.
    pub active: Option<String>,
    pub updated_unix: u64,
    pub current_version: Option<u64>,
    /// The operator's version the weights are relative to.
    pub operator_version: Option<u64>,
    /// Why nothing is published now, when that is a rule (backoff, interval), not the law.
    pub holding: Option<String>,
    pub last_publish: Option<Published>,
    /// Versions this process published.
    pub publishes: u64,
    pub last_error: Option<String>,
    pub services: Vec<ServiceStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    pub version: u64,
    pub at_unix: u64,
    pub by: String,
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub mean: Option<f64>,
    /// Set when the service is frozen, with why.
    pub frozen: Option<String>,
    pub backends: Vec<BackendStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub name: String,
    pub state: String,
    pub load: Option<f64>,
    /// (load - mean) / mean.
    pub deviation: Option<f64>,
    pub operator_weight: u32,
    /// In `current`.
    pub weight: u32,
    /// What the law wants now.
    pub wanted_weight: u32,
    pub factor: f64,
    pub wanted_factor: f64,
    pub reason: String,
}

/// Why a step failed as a whole (Consul, a version that does not parse).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Cluster(#[from] cluster::Error),
    #[error("version {version} does not validate: {errors}")]
    Invalid { version: u64, errors: String },
    #[error("nothing is published yet: the controller needs an operator's version to start from")]
    NothingPublished,
    #[error("editing the weights: {0}")]
    Edit(#[from] tablegen::edit::EditError),
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `xdplb-controller@host:pid`.
pub fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("{AUTHOR_PREFIX}{host}:{}", std::process::id())
}

/// Is this version a controller's?
pub fn by_controller(m: &VersionMeta) -> bool {
    m.author.starts_with(AUTHOR_PREFIX)
}

/// The whole-number multiplier on the operator's weights of a service whose largest operator
/// weight is `max_base`: as fine as possible, with `max_base * max_factor * scale` a valid
/// weight.
pub fn scale(max_base: u32, max_factor: f64) -> u64 {
    let room = f64::from(WEIGHT_MAX) / (f64::from(max_base.max(1)) * max_factor);
    (room.floor() as u64).clamp(1, SCALE_MAX)
}

struct Parsed {
    meta: VersionMeta,
    text: String,
    tables: Tables,
}

/// The control loop's state.
pub struct Controller {
    config: Config,
    store: Store,
    consul: Consul,
    prom: Prometheus,
    me: String,
    /// Versions are immutable: parsed once.
    cache: BTreeMap<u64, Arc<Parsed>>,
    motions: BTreeMap<(String, String), Motion>,
    status: Arc<Mutex<Status>>,
    /// Last freeze reason logged per service (log on change only).
    logged: BTreeMap<String, Option<String>>,
    publishes: u64,
    last_publish: Option<Published>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").field("me", &self.me).finish()
    }
}

impl Controller {
    pub fn new(config: Config, me: String) -> Result<Controller, cluster::Error> {
        let store = Store::new(&config.consul)?;
        let consul = Consul::new(&config.consul)?;
        let timeout = config.interval.min(Duration::from_secs(10));
        let prom = Prometheus::new(config.prometheus.clone(), timeout);
        let status = Arc::new(Mutex::new(Status {
            me: me.clone(),
            role: "starting".into(),
            ..Status::default()
        }));
        Ok(Controller {
            config,
            store,
            consul,
            prom,
            me,
            cache: BTreeMap::new(),
            motions: BTreeMap::new(),
            status,
            logged: BTreeMap::new(),
            publishes: 0,
            last_publish: None,
        })
    }

    /// The status, shared with the metrics endpoint.
    pub fn status(&self) -> Arc<Mutex<Status>> {
        self.status.clone()
    }

    async fn version(&mut self, v: u64) -> Result<Arc<Parsed>, StepError> {
        if let Some(p) = self.cache.get(&v) {
            return Ok(p.clone());
        }
        let version = self.store.get(v).await?;
        let origin = PathBuf::from(format!("consul:{}/versions/{v}", self.config.consul.prefix));
        let tables = Tables::parse(&origin, &version.text).map_err(|e| StepError::Invalid {
            version: v,
            errors: e.to_string(),
        })?;
        let p = Arc::new(Parsed {
            meta: version.meta,
            text: version.text,
            tables,
        });
        // Keep the cache small: the versions in use are the newest ones.
        while self.cache.len() >= 16 {
            let oldest = *self.cache.keys().next().expect("not empty");
            self.cache.remove(&oldest);
        }
        self.cache.insert(v, p.clone());
        Ok(p)
    }

    /// One interval. `session`: this process's lock session when it believes it is active.
    pub async fn step(&mut self, session: Option<&str>) -> Status {
        let now = now_unix();
        let mut status = Status {
            me: self.me.clone(),
            role: if session.is_some() {
                "active"
            } else {
                "standby"
            }
            .into(),
            updated_unix: now,
            publishes: self.publishes,
            ..Status::default()
        };
        match self.lock_session().await {
            Ok(s) => status.active = s.map(|(_, holder)| holder),
            Err(e) => status.last_error = Some(e.to_string()),
        }
        if let Err(e) = self.step_inner(session, now, &mut status).await {
            warn!(error = %daemon_support::error_chain(&e), "controller step failed; weights left as they are");
            status.last_error = Some(daemon_support::error_chain(&e));
        }
        status.publishes = self.publishes;
        if status.last_publish.is_none() {
            status.last_publish = self.last_publish.clone();
        }
        *self.status.lock().expect("status lock") = status.clone();
        status
    }

    /// The lock's session and holder, as Consul says now.
    async fn lock_session(&self) -> Result<Option<(String, String)>, cluster::ConsulError> {
        let key = format!("{}/controller/lock", self.config.consul.prefix);
        let (entry, _) = self.consul.read(&key, None).await?;
        Ok(entry.and_then(|e| {
            let s = e.session?;
            Some((s, String::from_utf8_lossy(&e.value).into_owned()))
        }))
    }

    async fn step_inner(
        &mut self,
        session: Option<&str>,
        now: u64,
        status: &mut Status,
    ) -> Result<(), StepError> {
        let current = self
            .store
            .current()
            .await?
            .ok_or(StepError::NothingPublished)?;
        status.current_version = Some(current);
        let cur = self.version(current).await?;
        // The operator's version: walk parents past controller versions.
        let mut base = cur.clone();
        while by_controller(&base.meta) {
            let Some(parent) = base.meta.parent else {
                break;
            };
            base = self.version(parent).await?;
        }
        status.operator_version = Some(base.meta.version);
        if by_controller(&cur.meta) {
            status.last_publish = Some(Published {
                version: cur.meta.version,
                at_unix: cur.meta.created_unix,
                by: cur.meta.author.clone(),
                comment: cur.meta.comment.clone(),
            });
        }
        let scaled = by_controller(&cur.meta);

        let mut weights: Vec<(String, String, u32)> = Vec::new();
        let mut changes: Vec<String> = Vec::new();
        let mut decided: Vec<(String, law::Step)> = Vec::new();
        for svc_cfg in self.config.services.clone() {
            let Some(svc) = cur.tables.service(&svc_cfg.name) else {
                status.services.push(ServiceStatus {
                    name: svc_cfg.name.clone(),
                    mean: None,
                    frozen: Some(format!(
                        "no service {} in version {current}: nothing to control",
                        svc_cfg.name
                    )),
                    backends: Vec::new(),
                });
                continue;
            };
            let base_svc = base.tables.service(&svc_cfg.name);
            let base_weight = |b: &str| {
                base_svc
                    .and_then(|s| s.backends.iter().find(|x| x.name == b))
                    .map(|x| x.weight)
            };
            let max_base = svc
                .backends
                .iter()
                .filter_map(|b| base_weight(&b.name))
                .max()
                .unwrap_or(1);
            let k = scale(max_base, svc_cfg.params.max_factor);
            let answer = self
                .prom
                .query(&svc_cfg.query, &svc_cfg.backend_label)
                .await;
            let fetch_error = answer.as_ref().err().map(|e| e.to_string());
            let inputs: Vec<Input> = svc
                .backends
                .iter()
                .map(|b| {
                    let w0 = base_weight(&b.name).unwrap_or(b.weight);
                    let factor = if scaled {
                        f64::from(b.weight) / (f64::from(w0) * k as f64)
                    } else {
                        f64::from(b.weight) / f64::from(w0)
                    };
                    Input {
                        name: b.name.clone(),
                        eligible: matches!(b.state, State::Active | State::Filling),
                        factor,
                        sample: match &answer {
                            Ok(a) => prom::sample_of(a, &b.name),
                            Err(_) => Sample::Missing,
                        },
                        motion: self
                            .motions
                            .get(&(svc_cfg.name.clone(), b.name.clone()))
                            .copied()
                            .unwrap_or_default(),
                    }
                })
                .collect();
            let step = law::step(&svc_cfg.params, &inputs, fetch_error.as_deref());
            let freeze = step.frozen.as_ref().map(|f| f.to_string());
            if self.logged.get(&svc_cfg.name) != Some(&freeze) {
                match &freeze {
                    Some(why) => warn!(service = %svc_cfg.name, "{why}"),
                    None if self.logged.contains_key(&svc_cfg.name) => {
                        info!(service = %svc_cfg.name, "load data back: controlling again")
                    }
                    None => {}
                }
                self.logged.insert(svc_cfg.name.clone(), freeze.clone());
            }
            let mut backends = Vec::new();
            for (b, d) in svc.backends.iter().zip(&step.backends) {
                let w0 = base_weight(&b.name).unwrap_or(b.weight);
                let wanted = ((f64::from(w0) * k as f64 * d.wanted).round() as u64)
                    .clamp(1, u64::from(WEIGHT_MAX)) as u32;
                if wanted != b.weight || !scaled {
                    weights.push((svc_cfg.name.clone(), b.name.clone(), wanted));
                }
                if d.wanted != d.factor {
                    changes.push(format!(
                        "{}/{} {:.2}x->{:.2}x ({})",
                        svc_cfg.name,
                        b.name,
                        d.factor,
                        d.wanted,
                        d.deviation.map_or("no load".into(), |x| format!(
                            "load {:+.0}% of mean",
                            x * 100.0
                        ))
                    ));
                }
                backends.push(BackendStatus {
                    name: b.name.clone(),
                    state: b.state.as_str().to_string(),
                    load: d.load,
                    deviation: d.deviation,
                    operator_weight: w0,
                    weight: b.weight,
                    wanted_weight: wanted,
                    factor: d.factor,
                    wanted_factor: d.wanted,
                    reason: d.reason.clone(),
                });
            }
            status.services.push(ServiceStatus {
                name: svc_cfg.name.clone(),
                mean: step.mean,
                frozen: freeze,
                backends,
            });
            decided.push((svc_cfg.name.clone(), step));
        }

        if changes.is_empty() {
            return Ok(());
        }
        // The rules that hold a publish back, in the order an operator asks about them.
        let Some(session) = session else {
            status.holding = Some("standby: the active controller publishes".into());
            return Ok(());
        };
        if !by_controller(&cur.meta) {
            let until = cur.meta.created_unix + self.config.operator_backoff.as_secs();
            if now < until {
                status.holding = Some(format!(
                    "operator's version {current} ({}): backing off for {}s more",
                    cur.meta.author,
                    until - now
                ));
                return Ok(());
            }
        }
        let last = status
            .last_publish
            .as_ref()
            .map(|p| p.at_unix)
            .max(self.last_publish.as_ref().map(|p| p.at_unix))
            .unwrap_or(0);
        let next = last + self.config.min_publish_interval.as_secs();
        if now < next {
            status.holding = Some(format!(
                "at most one version per {}s: next in {}s",
                self.config.min_publish_interval.as_secs(),
                next - now
            ));
            return Ok(());
        }
        match self.lock_session().await {
            Ok(Some((s, _))) if s == session => {}
            Ok(_) => {
                status.holding = Some("lost the controller lock: not publishing".into());
                return Ok(());
            }
            Err(e) => {
                status.holding = Some(format!("cannot confirm the controller lock: {e}"));
                return Ok(());
            }
        }
        let refs: Vec<(&str, &str, u32)> = weights
            .iter()
            .map(|(s, b, w)| (s.as_str(), b.as_str(), *w))
            .collect();
        let origin = PathBuf::from(format!(
            "consul:{}/versions/{current}",
            self.config.consul.prefix
        ));
        let text = tablegen::edit::set_weights(&origin, &cur.text, &refs)?;
        let tables = Tables::parse(&origin, &text).map_err(|e| StepError::Invalid {
            version: current,
            errors: e.to_string(),
        })?;
        let built = tablegen::table::build_all(&tables);
        let services = cluster::service_digests(
            built
                .iter()
                .map(|t| (t.service.as_str(), t.version, t.checksum)),
        );
        let mut comment = format!(
            "load controller (operator's version {}): {}",
            base.meta.version,
            changes.join("; ")
        );
        if comment.len() > 1000 {
            let mut cut = 990;
            while !comment.is_char_boundary(cut) {
                cut -= 1;
            }
            comment.truncate(cut);
            comment.push_str(" ...");
        }
        let meta = PublishMeta {
            services,
            author: Some(self.me.clone()),
            comment: comment.clone(),
            expect: Expect::Current(Some(current)),
        };
        match self.store.publish(&text, meta).await {
            Ok(m) => {
                info!(version = m.version, parent = current, "{comment}");
                self.publishes += 1;
                let p = Published {
                    version: m.version,
                    at_unix: m.created_unix,
                    by: self.me.clone(),
                    comment,
                };
                self.last_publish = Some(p.clone());
                status.last_publish = Some(p);
                status.current_version = Some(m.version);
                for (name, step) in decided {
                    for (b, m) in step.motions() {
                        self.motions.insert((name.clone(), b), m);
                    }
                }
                Ok(())
            }
            Err(cluster::Error::Conflict { actual, .. }) => {
                // Someone published in between: theirs stands, we look again next interval.
                status.holding = Some(format!(
                    "version {} was published while we computed: it stands",
                    actual.map_or("none".into(), |v| v.to_string())
                ));
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the status file (atomically).
    pub fn write_status(&self, status: &Status) {
        let path = &self.config.status_file;
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let json = serde_json::to_vec_pretty(status).expect("status serialises");
        if let Err(e) = daemon_support::write_atomic(path, &json, 0o644) {
            warn!(path = %path.display(), error = %e, "cannot write the status file");
        }
    }
}

/// Keeps (or waits for) the lock until `shutdown`; sends this process's session while it holds
/// the lock, None otherwise.
pub async fn leadership(
    mut leader: Leader,
    ttl: Duration,
    tx: watch::Sender<Option<String>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut active = false;
    loop {
        if *shutdown.borrow() {
            break;
        }
        if active {
            tokio::select! {
                _ = tokio::time::sleep(ttl / 3) => {}
                _ = shutdown.changed() => continue,
            }
            match leader.renew().await {
                Ok(true) => {}
                Ok(false) => {
                    warn!("the controller session expired: standing by");
                    active = false;
                    let _ = tx.send(None);
                }
                Err(e) => warn!(error = %e, "renewing the controller session failed"),
            }
            continue;
        }
        match leader.try_acquire().await {
            Ok(true) => {
                info!(lock = leader.key(), "this controller is now the active one");
                active = true;
                let _ = tx.send(leader.session().map(str::to_string));
            }
            Ok(false) => {
                let wait = ttl / 2;
                tokio::select! {
                    r = leader.wait_for_change(wait) => {
                        if let Err(e) = r {
                            warn!(error = %e, "watching the controller lock failed");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) => {
                warn!(error = %e, "taking the controller lock failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
    let _ = tx.send(None);
    leader.resign().await;
}
