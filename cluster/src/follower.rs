//! A director's side of the cluster: follow `current`, hand every new version to the
//! director's `verify_and_apply` callback, keep the last good one when that refuses, and say
//! where things stand in a [`FollowerStatus`].
//!
//! It watches with blocking queries only (an idle follower sends one request per
//! `watch_wait`), backs off on errors, and starts over by itself when Consul comes back. It
//! never un-applies: with Consul down, or empty after a restart, the last applied version
//! stays live. The last applied version is persisted (see [`crate::state`]) and applied first
//! on start, so a director that starts while Consul is down serves it.
//!
//! The callback owns the meaning of "valid": the director parses the text with tablegen,
//! builds the tables, compares every checksum with `meta.services`, and swaps only if all
//! match. This module never builds tables.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use daemon_support::error_chain;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::meta::VersionMeta;
use crate::state;
use crate::store::{Error, Store, Version};

/// Error type a `verify_and_apply` callback returns; its text ends up in the status.
pub type ApplyError = Box<dyn std::error::Error + Send + Sync + 'static>;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Floor between two watches that brought nothing new: protects against a Consul (or proxy)
/// that answers blocking queries at once (or strips `X-Consul-Index`), which would otherwise
/// turn into a busy loop. A watch that brings a new version is never delayed.
const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Where the applied version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Read from Consul.
    Consul,
    /// The persisted copy, applied at start.
    StateFile,
}

/// A version the callback refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub version: u64,
    pub error: String,
}

/// What a follower knows, for `status` output and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FollowerStatus {
    /// The last request to Consul got an answer.
    pub connected: bool,
    /// When Consul last answered.
    pub last_contact: Option<SystemTime>,
    /// The last error talking to Consul or persisting state (kept after recovery, for the
    /// record; `connected` says whether it still applies).
    pub last_error: Option<String>,
    /// What Consul says is live (None: nothing published, or not known yet).
    pub current_version: Option<u64>,
    /// What this director serves.
    pub applied: Option<Applied>,
    /// The newest version refused by the callback; cleared when a version is applied or
    /// `current` comes back to the applied one.
    pub rejected: Option<Rejection>,
}

/// The version a director serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub meta: VersionMeta,
    pub source: Source,
    pub at: SystemTime,
}

impl FollowerStatus {
    /// The applied version number, if any.
    pub fn applied_version(&self) -> Option<u64> {
        self.applied.as_ref().map(|a| a.meta.version)
    }
    /// True when this director serves what Consul says is live.
    pub fn in_sync(&self) -> bool {
        self.connected
            && self.current_version.is_some()
            && self.current_version == self.applied_version()
    }
}

/// Follows one cluster's `current`. Share it in an `Arc`: `run` on one task, `status` /
/// `subscribe` from anywhere.
pub struct Follower<F> {
    store: Arc<Store>,
    state_file: PathBuf,
    apply: Arc<F>,
    status: watch::Sender<FollowerStatus>,
}

impl<F> std::fmt::Debug for Follower<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("store", &self.store)
            .field("state_file", &self.state_file)
            .field("status", &*self.status.borrow())
            .finish()
    }
}

enum Outcome {
    Applied,
    Rejected,
    /// Could not read the version (Consul trouble): try again later.
    Retry,
}

impl<F> Follower<F>
where
    F: Fn(&str, &VersionMeta) -> Result<(), ApplyError> + Send + Sync + 'static,
{
    /// `verify_and_apply(text, meta)` must make the version live, or refuse it and leave the
    /// running tables alone. It runs on a blocking thread (building tables is CPU work).
    pub fn new(store: Arc<Store>, state_file: impl Into<PathBuf>, verify_and_apply: F) -> Self {
        Follower {
            store,
            state_file: state_file.into(),
            apply: Arc::new(verify_and_apply),
            status: watch::Sender::new(FollowerStatus::default()),
        }
    }

    /// A snapshot of the status.
    pub fn status(&self) -> FollowerStatus {
        self.status.borrow().clone()
    }

    /// Status changes, as they happen.
    pub fn subscribe(&self) -> watch::Receiver<FollowerStatus> {
        self.status.subscribe()
    }

    /// The store this follower reads (a director may publish through it too).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Applies the persisted version, then follows Consul until `shutdown` completes.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::select! {
            _ = shutdown => {}
            _ = self.follow() => {}
        }
    }

    async fn follow(&self) {
        let mut applied = self.restore().await;
        let mut rejected: Option<u64> = None;
        let mut index = 0u64;
        let mut backoff = BACKOFF_MIN;
        let mut last_seen: Option<Option<u64>> = None;
        loop {
            let started = Instant::now();
            let watched = match self.store.watch_current(index).await {
                Ok(w) => w,
                Err(e) => {
                    let msg = error_chain(&e);
                    let was_connected = self.status.borrow().connected;
                    self.status.send_modify(|s| {
                        s.connected = false;
                        s.last_error = Some(msg.clone());
                    });
                    if was_connected {
                        warn!(error = %msg, applied = ?applied, "consul unreachable; keeping the applied version");
                    }
                    // Consul may come back with a different (e.g. empty) state: start over
                    // with a non-blocking read.
                    index = 0;
                    sleep_jittered(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            backoff = BACKOFF_MIN;
            let fresh = index == 0 || watched.index < index;
            let unchanged = watched.index == index;
            let nothing_new = last_seen == Some(watched.version);
            last_seen = Some(watched.version);
            // Consul's rules: an index that goes backwards means a reset (restart from empty,
            // snapshot restore): read afresh; never block on index 0.
            index = if watched.index < index {
                0
            } else {
                watched.index.max(1)
            };
            let was_connected = self.status.borrow().connected;
            if !was_connected {
                info!(current = ?watched.version, applied = ?applied, "consul reachable");
            }
            self.status.send_modify(|s| {
                s.connected = true;
                s.last_contact = Some(SystemTime::now());
                s.current_version = watched.version;
                if watched.version.is_some() && watched.version == applied {
                    s.rejected = None;
                }
            });
            if fresh || !unchanged {
                // `current` was written (or Consul may be another store than before: after a
                // start, an error, an index reset). The same number may now mean other content
                // (a restarted, empty Consul numbers from 1 again): look again at a refused
                // version, and compare the applied one's meta before trusting its number.
                rejected = None;
                if let Some(v) = watched.version.filter(|v| Some(*v) == applied) {
                    if let Ok(meta) = self.store.meta(v).await {
                        let same = self
                            .status
                            .borrow()
                            .applied
                            .as_ref()
                            .is_some_and(|a| a.meta == meta);
                        if !same {
                            warn!(version = v, "version number reused with other content (consul was reset); applying it");
                            applied = None;
                        }
                    }
                }
            }
            if let Some(v) = watched.version {
                if Some(v) != applied && Some(v) != rejected {
                    match self.fetch_and_apply(v).await {
                        Outcome::Applied => {
                            applied = Some(v);
                            rejected = None;
                        }
                        Outcome::Rejected => rejected = Some(v),
                        Outcome::Retry => {
                            index = 0;
                            sleep_jittered(backoff).await;
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                            continue;
                        }
                    }
                }
            }
            if nothing_new && started.elapsed() < MIN_WATCH_INTERVAL {
                tokio::time::sleep(MIN_WATCH_INTERVAL - started.elapsed()).await;
            }
        }
    }

    /// Applies the persisted version, if there is a valid one. Returns its number if applied.
    async fn restore(&self) -> Option<u64> {
        let path = self.state_file.clone();
        let loaded = tokio::task::spawn_blocking(move || state::load(&path))
            .await
            .expect("state::load does not panic");
        let version = match loaded {
            Ok(Some(v)) => v,
            Ok(None) => return None,
            Err(e) => {
                let msg = error_chain(&e);
                warn!(error = %msg, "cannot use the persisted cluster state");
                self.status.send_modify(|s| s.last_error = Some(msg));
                return None;
            }
        };
        let number = version.meta.version;
        match self.call_apply(version.clone()).await {
            Ok(()) => {
                info!(version = number, path = %self.state_file.display(), "applied the persisted version");
                self.status.send_modify(|s| {
                    s.applied = Some(Applied {
                        meta: version.meta,
                        source: Source::StateFile,
                        at: SystemTime::now(),
                    })
                });
                Some(number)
            }
            Err(msg) => {
                error!(version = number, error = %msg, "persisted version refused");
                self.status.send_modify(|s| {
                    s.rejected = Some(Rejection {
                        version: number,
                        error: msg,
                    })
                });
                None
            }
        }
    }

    async fn fetch_and_apply(&self, number: u64) -> Outcome {
        let version = match self.store.get(number).await {
            Ok(v) => v,
            Err(Error::Consul(e)) => {
                let msg = error_chain(&e);
                warn!(version = number, error = %msg, "cannot read the new version; will retry");
                self.status.send_modify(|s| {
                    s.connected = false;
                    s.last_error = Some(msg);
                });
                return Outcome::Retry;
            }
            Err(e) => {
                // Damaged or incomplete in Consul: no retry will fix it until `current` moves.
                let msg = error_chain(&e);
                error!(version = number, error = %msg, "refusing version: cannot load it; keeping the applied version");
                self.status.send_modify(|s| {
                    s.rejected = Some(Rejection {
                        version: number,
                        error: msg,
                    })
                });
                return Outcome::Rejected;
            }
        };
        match self.call_apply(version.clone()).await {
            Ok(()) => {
                info!(
                    version = number,
                    services = version.meta.services.len(),
                    "applied version"
                );
                // Persist before reporting, so a status that says "applied" also means "will
                // be served after a restart without Consul".
                let path = self.state_file.clone();
                let meta = version.meta.clone();
                let saved = tokio::task::spawn_blocking(move || state::save(&path, &version))
                    .await
                    .expect("state::save does not panic");
                self.status.send_modify(|s| {
                    s.applied = Some(Applied {
                        meta,
                        source: Source::Consul,
                        at: SystemTime::now(),
                    });
                    s.rejected = None;
                    if let Err(e) = &saved {
                        s.last_error = Some(error_chain(e));
                    }
                });
                if let Err(e) = saved {
                    warn!(error = %error_chain(&e), "cannot persist the applied version");
                }
                Outcome::Applied
            }
            Err(msg) => {
                error!(
                    version = number,
                    error = %msg,
                    "refusing version: this director cannot reproduce it; keeping the last good tables"
                );
                self.status.send_modify(|s| {
                    s.rejected = Some(Rejection {
                        version: number,
                        error: msg,
                    })
                });
                Outcome::Rejected
            }
        }
    }

    async fn call_apply(&self, version: Version) -> Result<(), String> {
        let apply = self.apply.clone();
        match tokio::task::spawn_blocking(move || apply(&version.text, &version.meta)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(error_chain(&*e)),
            Err(e) => Err(format!("verify_and_apply panicked: {e}")),
        }
    }
}

/// Sleeps `base` plus up to 25% jitter, so many directors do not retry in lockstep.
async fn sleep_jittered(base: Duration) {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0) as u64;
    let jitter = base.as_nanos() as u64 / 4;
    let extra = if jitter == 0 { 0 } else { nanos % jitter };
    tokio::time::sleep(base + Duration::from_nanos(extra)).await;
}
