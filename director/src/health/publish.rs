//! The director's health view in Consul (director.yaml `health_view:`, off by default): a
//! thread with its own runtime writes the view the daemon hands it into
//! `<prefix>/health/views/<director>` ([`cluster::HealthWriter`]: a TTL session whose keys are
//! deleted when it expires), renews the session every TTL / 3, rewrites the view at least every
//! TTL / 2, and deletes it when the daemon stops.
//!
//! Consul is never in the forwarding path: errors are logged, kept for `status`, and retried on
//! the next tick; the daemon's loop never waits on this thread. Never a table version: the
//! published tables stay the operator's.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use cluster::health::BackendView;
use cluster::{HealthView, HealthWriter};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use super::{now_unix, HealthState};
use crate::config::HealthViewConfig;

/// Per service, per backend: what goes into Consul.
pub type Services = BTreeMap<String, BTreeMap<String, BackendView>>;

/// What `status` shows of the view in Consul.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewStatus {
    pub consul: String,
    pub key: String,
    /// Unix seconds of the last successful write.
    pub written_at: Option<u64>,
    /// The last attempt failed (Consul unreachable, refused, ...); cleared by a success.
    pub last_error: Option<String>,
}

/// The running publisher. Dropping it deletes the view (ends its session).
pub struct ViewPublisher {
    tx: watch::Sender<Services>,
    status: Arc<Mutex<ViewStatus>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ViewPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewPublisher").finish_non_exhaustive()
    }
}

/// The view of a health state, as written to Consul (an error only while unhealthy).
pub fn services(h: Option<&HealthState>) -> Services {
    h.map(|h| {
        h.backends
            .iter()
            .map(|(s, m)| {
                (
                    s.clone(),
                    m.iter()
                        .map(|(b, t)| {
                            (
                                b.clone(),
                                BackendView {
                                    healthy: t.healthy,
                                    since: t.since,
                                    last_error: (!t.healthy)
                                        .then(|| t.last_error.clone())
                                        .flatten(),
                                },
                            )
                        })
                        .collect(),
                )
            })
            .collect()
    })
    .unwrap_or_default()
}

impl ViewPublisher {
    /// Starts the thread; `changed` is called (from it) whenever [`Self::status`] changes.
    pub fn start(
        cfg: &HealthViewConfig,
        changed: impl Fn() + Send + 'static,
    ) -> Result<ViewPublisher, std::io::Error> {
        let writer = HealthWriter::new(&cfg.consul, &cfg.director, cfg.ttl)
            .map_err(|e| std::io::Error::other(daemon_support::error_chain(&e)))?;
        let status = Arc::new(Mutex::new(ViewStatus {
            consul: cfg
                .consul
                .address
                .as_str()
                .trim_end_matches('/')
                .to_string(),
            key: format!("{}/health/views/{}", cfg.consul.prefix, cfg.director),
            written_at: None,
            last_error: None,
        }));
        let (tx, rx) = watch::channel(Services::new());
        let (stop, stopped) = oneshot::channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let st = status.clone();
        let director = cfg.director.clone();
        let thread = std::thread::Builder::new()
            .name("health-view".into())
            .spawn(move || rt.block_on(run(writer, director, rx, st, stopped, changed)))?;
        Ok(ViewPublisher {
            tx,
            status,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The view to write from now on (written only when it differs from the last one).
    pub fn set(&self, view: Services) {
        self.tx.send_if_modified(|cur| {
            if *cur == view {
                false
            } else {
                *cur = view;
                true
            }
        });
    }

    pub fn status(&self) -> ViewStatus {
        self.status.lock().unwrap().clone()
    }
}

impl Drop for ViewPublisher {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run(
    mut writer: HealthWriter,
    director: String,
    mut rx: watch::Receiver<Services>,
    status: Arc<Mutex<ViewStatus>>,
    mut stopped: oneshot::Receiver<()>,
    changed: impl Fn(),
) {
    let ttl = writer.ttl();
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_write: Option<tokio::time::Instant> = None;
    let mut dirty = true;
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            r = rx.changed() => {
                if r.is_err() {
                    break;
                }
                dirty = true;
            }
            _ = tick.tick() => {
                match writer.renew().await {
                    Ok(true) => {}
                    // Expired (Consul lost it, or we were away longer than the TTL): the view
                    // is gone, write it again in a new session.
                    Ok(false) => dirty = true,
                    Err(e) => report(&status, &changed, Err(daemon_support::error_chain(&e))),
                }
                if last_write.is_none_or(|t| t.elapsed() >= ttl / 2) {
                    dirty = true;
                }
            }
        }
        if !dirty {
            continue;
        }
        let view = HealthView {
            director: director.clone(),
            updated: now_unix(),
            ttl_secs: ttl.as_secs(),
            services: rx.borrow_and_update().clone(),
        };
        match writer.write(&view).await {
            Ok(()) => {
                dirty = false;
                last_write = Some(tokio::time::Instant::now());
                report(&status, &changed, Ok(view.updated));
            }
            Err(e) => report(&status, &changed, Err(daemon_support::error_chain(&e))),
        }
    }
    // Stopping: the view goes with the director (bounded: Consul may be away).
    let _ = tokio::time::timeout(Duration::from_secs(5), writer.close()).await;
}

/// Records the outcome of a write; logs when it changes from working to failing and back.
fn report(status: &Mutex<ViewStatus>, changed: &impl Fn(), r: Result<u64, String>) {
    let mut st = status.lock().unwrap();
    match r {
        Ok(t) => {
            if st.last_error.take().is_some() || st.written_at.is_none() {
                info!(key = %st.key, "health view written to consul");
            }
            st.written_at = Some(t);
        }
        Err(e) => {
            if st.last_error.as_deref() != Some(e.as_str()) {
                warn!(key = %st.key, error = %e, "health view not written to consul (forwarding and health checks go on)");
            }
            st.last_error = Some(e);
        }
    }
    drop(st);
    changed();
}
