//! The Consul table source (docs/development/cluster-sync.md): a [`cluster::Follower`] follows
//! the cluster's `current` version; its `verify_and_apply` callback parses the version with
//! tablegen, builds the tables, compares every service's version and checksum with the
//! published meta, and only then hands the tables to the daemon, which installs them exactly as
//! it installs a file's. The callback waits for the daemon's outcome, so the follower records
//! (and persists) a version as applied only once its tables are live.
//!
//! Threads: the follower runs on a small tokio runtime owned by this source; the daemon's
//! loop stays synchronous. A verified version is parked in a one-slot mailbox and the daemon
//! is woken with [`Event::Changed`]; [`TableSource::load`] takes it, [`TableSource::finished`]
//! answers the waiting callback.
//!
//! With `publish: true` the source also watches the local backends file and publishes it
//! (`Store::publish_if_changed`: no new version when nothing changed) whenever it changes;
//! the director then applies it like every other follower, from Consul.
//!
//! Refusals (checksum not reproduced, unparsable text, tables the kernel side cannot hold)
//! leave the running tables alone and show in `status` (`cluster.rejected`) and the log.
//! Must not do: touch maps (the daemon installs).

use std::path::PathBuf;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use cluster::{ApplyError, ConsulConfig, Follower, FollowerStatus, Store, VersionMeta};
use tracing::{info, warn};

use crate::daemon::Event;
use crate::error::{DaemonError, SourceError};
use crate::source::{self, Loaded, TableSource};
use crate::state::{ClusterRejection, ClusterState};

/// How long the first load waits for a version (the persisted one is immediate; otherwise
/// Consul must answer and have one published).
pub const FIRST_VERSION_WAIT: Duration = Duration::from_secs(30);

type Callback = Box<dyn Fn(&str, &VersionMeta) -> Result<(), ApplyError> + Send + Sync>;

/// A verified version waiting for the daemon.
struct Pending {
    loaded: Loaded,
    version: u64,
    reply: Sender<Result<(), String>>,
}

#[derive(Default)]
struct Mailbox {
    pending: Option<Pending>,
    /// The source is gone: callbacks refuse at once instead of waiting for nobody.
    closed: bool,
}

#[derive(Default)]
struct Shared {
    mailbox: Mutex<Mailbox>,
    arrived: Condvar,
    /// The daemon's event channel, once it watches.
    wake: Mutex<Option<Sender<Event>>>,
}

impl Shared {
    fn wake(&self, ev: Event) {
        if let Some(w) = self.wake.lock().expect("wake lock").as_ref() {
            let _ = w.send(ev);
        }
    }
}

/// Tables from a Consul cluster. See the module docs.
pub struct ConsulSource {
    describe: String,
    address: String,
    prefix: String,
    shared: Arc<Shared>,
    follower: Arc<Follower<Callback>>,
    rt: Option<tokio::runtime::Runtime>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// Taken by `load`, answered by `finished`.
    in_flight: Option<Pending>,
    /// The tables live now (what a SIGHUP reinstalls).
    last: Option<Loaded>,
    first_wait: Duration,
    /// `publish: true`: the backends file's watcher (dropping it ends the publisher thread).
    publisher: Option<Box<dyn std::any::Any + Send>>,
}

impl std::fmt::Debug for ConsulSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulSource")
            .field("describe", &self.describe)
            .finish()
    }
}

impl ConsulSource {
    /// Starts following: the persisted version (if any) is offered first, then Consul's.
    /// `publish`: a backends file to publish when it changes.
    pub fn start(
        config: ConsulConfig,
        publish: Option<PathBuf>,
    ) -> Result<ConsulSource, DaemonError> {
        Self::start_with(config, publish, FIRST_VERSION_WAIT)
    }

    /// [`ConsulSource::start`] with another wait for the first version.
    pub fn start_with(
        config: ConsulConfig,
        publish: Option<PathBuf>,
        first_wait: Duration,
    ) -> Result<ConsulSource, DaemonError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(4)
            .thread_name("xdplb-consul")
            .enable_all()
            .build()
            .map_err(DaemonError::Runtime)?;
        let _guard = rt.enter();
        let store = Arc::new(Store::new(&config)?);
        let shared = Arc::new(Shared::default());
        let callback: Callback = {
            let shared = shared.clone();
            let prefix = config.prefix.clone();
            Box::new(move |text: &str, meta: &VersionMeta| {
                verify_and_hand_over(&shared, &prefix, text, meta).map_err(ApplyError::from)
            })
        };
        let follower = Arc::new(Follower::new(store, &config.state_file, callback));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let f = follower.clone();
        rt.spawn(async move {
            f.run(async {
                let _ = rx.await;
            })
            .await
        });
        // Status changes (connected, current version, refusals) go to the state file.
        let mut changes = follower.subscribe();
        let s = shared.clone();
        rt.spawn(async move {
            while changes.changed().await.is_ok() {
                s.wake(Event::Status);
            }
        });
        // Publishing starts before the first load: this director may be the one that puts the
        // first version there. The file source's own watcher; its events become publishes on a
        // thread that ends when the watcher (kept in `publisher`) is dropped.
        let publisher = match publish {
            None => None,
            Some(path) => {
                let (tx, rx) = mpsc::channel();
                let guard = source::FileSource::new(&path).watch(tx)?;
                let store = follower.store().clone();
                let handle = rt.handle().clone();
                std::thread::Builder::new()
                    .name("xdplb-publish".into())
                    .spawn(move || publisher(path, store, handle, rx))
                    .map_err(DaemonError::Runtime)?;
                Some(guard)
            }
        };
        let address = config.address.to_string();
        Ok(ConsulSource {
            describe: format!(
                "consul {} prefix {}",
                address.trim_end_matches('/'),
                config.prefix
            ),
            address: address.trim_end_matches('/').to_string(),
            prefix: config.prefix.clone(),
            shared,
            follower,
            rt: Some(rt),
            shutdown: Some(tx),
            in_flight: None,
            last: None,
            first_wait,
            publisher,
        })
    }

    /// The follower's own status.
    pub fn follower_status(&self) -> FollowerStatus {
        self.follower.status()
    }
}

/// The follower's callback (a blocking thread): build, verify, hand over, wait for the outcome.
fn verify_and_hand_over(
    shared: &Shared,
    prefix: &str,
    text: &str,
    meta: &VersionMeta,
) -> Result<(), String> {
    let origin = PathBuf::from(format!("consul:{prefix}/versions/{}", meta.version));
    let loaded = source::build(&origin, text).map_err(|e| daemon_support::error_chain(&e))?;
    verify(&loaded, meta)?;
    let (reply, answer) = mpsc::channel();
    {
        let mut mb = shared.mailbox.lock().expect("mailbox lock");
        if mb.closed {
            return Err("the director is stopping".into());
        }
        // The follower offers one version at a time, so nothing is overwritten here.
        mb.pending = Some(Pending {
            loaded,
            version: meta.version,
            reply,
        });
    }
    shared.arrived.notify_all();
    shared.wake(Event::Changed);
    match answer.recv() {
        Ok(r) => r,
        Err(_) => Err("the director stopped before installing it".into()),
    }
}

/// The version reproduces here: [`cluster::VersionMeta::mismatches`] finds nothing.
pub fn verify(loaded: &Loaded, meta: &VersionMeta) -> Result<(), String> {
    let problems = meta.mismatches(&loaded.digests());
    if problems.is_empty() {
        return Ok(());
    }
    let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
    Err(format!(
        "version {} does not reproduce: {}",
        meta.version,
        problems.join("; ")
    ))
}

impl TableSource for ConsulSource {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn load(&mut self) -> Result<Loaded, SourceError> {
        let mut mb = self.shared.mailbox.lock().expect("mailbox lock");
        if mb.pending.is_none() && self.last.is_none() {
            // The first load: wait for the persisted version or Consul's.
            info!(
                wait_s = self.first_wait.as_secs(),
                "waiting for the first version (state file or consul)"
            );
            mb = self
                .shared
                .arrived
                .wait_timeout_while(mb, self.first_wait, |m| m.pending.is_none())
                .expect("mailbox lock")
                .0;
        }
        match mb.pending.take() {
            Some(p) => {
                let loaded = p.loaded.clone();
                info!(version = p.version, "installing cluster version");
                self.in_flight = Some(p);
                Ok(loaded)
            }
            None => match &self.last {
                // A SIGHUP: reinstall what is live (idempotent).
                Some(l) => Ok(l.clone()),
                None => {
                    let st = self.follower.status();
                    Err(SourceError::NoVersion(format!(
                        "{}: no version to serve after {}s: no persisted version, and consul {} (last error: {})",
                        self.describe,
                        self.first_wait.as_secs(),
                        match st.current_version {
                            _ if !st.connected => "unreachable".to_string(),
                            None => "has none published".to_string(),
                            Some(v) => format!("has version {v} but it was refused"),
                        },
                        st.last_error.as_deref().unwrap_or("none")
                    )))
                }
            },
        }
    }

    fn watch(&mut self, wake: Sender<Event>) -> Result<Box<dyn std::any::Any + Send>, DaemonError> {
        // Wake first, then look: a version parked in between is announced by its callback
        // or seen here (a duplicate wake-up is harmless).
        *self.shared.wake.lock().expect("wake lock") = Some(wake.clone());
        let pending = self
            .shared
            .mailbox
            .lock()
            .expect("mailbox lock")
            .pending
            .is_some();
        if pending {
            let _ = wake.send(Event::Changed);
        }
        // Status changes until now had nobody to wake (the first apply is recorded by the
        // follower just after the daemon wrote its state): refresh once now.
        let _ = wake.send(Event::Status);
        Ok(Box::new(()))
    }

    fn finished(&mut self, result: Result<(), String>) {
        let Some(p) = self.in_flight.take() else {
            return;
        };
        if result.is_ok() {
            self.last = Some(p.loaded);
        } else {
            warn!(
                version = p.version,
                "cluster version not installed; keeping the last good tables"
            );
        }
        let _ = p.reply.send(result);
    }

    fn cluster(&self) -> Option<ClusterState> {
        let s = self.follower.status();
        let unix = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        Some(ClusterState {
            address: self.address.clone(),
            prefix: self.prefix.clone(),
            connected: s.connected,
            last_contact: s.last_contact.map(unix),
            last_error: s.last_error.clone(),
            current_version: s.current_version,
            applied_version: s.applied_version(),
            applied_from: s.applied.as_ref().map(|a| {
                match a.source {
                    cluster::Source::Consul => "consul",
                    cluster::Source::StateFile => "state_file",
                }
                .to_string()
            }),
            applied_at: s.applied.as_ref().map(|a| unix(a.at)),
            rejected: s.rejected.map(|r| ClusterRejection {
                version: r.version,
                error: r.error,
            }),
        })
    }
}

/// Publishes `path` at start and after every change; retries every 2 s while Consul fails.
fn publisher(
    path: PathBuf,
    store: Arc<Store>,
    rt: tokio::runtime::Handle,
    rx: mpsc::Receiver<Event>,
) {
    let mut due = true;
    loop {
        if due {
            due = !publish_once(&path, &store, &rt);
        }
        let ev = if due {
            rx.recv_timeout(Duration::from_secs(2))
        } else {
            rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
        };
        match ev {
            Ok(_) => {
                // Debounce: an editor's save is several events.
                while rx.recv_timeout(Duration::from_millis(20)).is_ok() {}
                due = true;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// True when done (published, unchanged, or invalid: only a new edit can fix that).
fn publish_once(path: &std::path::Path, store: &Store, rt: &tokio::runtime::Handle) -> bool {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "not publishing: cannot read it");
            return true;
        }
    };
    let loaded = match source::build(path, &text) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %daemon_support::error_chain(&e), "not publishing an invalid backends file");
            return true;
        }
    };
    let meta = cluster::PublishMeta {
        services: loaded.digests(),
        author: None,
        comment: format!("published by xdplb-director from {}", path.display()),
        expect: cluster::Expect::Any,
    };
    match rt.block_on(store.publish_if_changed(&text, meta)) {
        Ok((m, true)) => {
            info!(version = m.version, path = %path.display(), "published");
            true
        }
        Ok((m, false)) => {
            info!(
                version = m.version,
                "backends file unchanged from the live version; nothing published"
            );
            true
        }
        Err(e) => {
            warn!(error = %daemon_support::error_chain(&e), "publishing failed; retrying");
            false
        }
    }
}

impl Drop for ConsulSource {
    fn drop(&mut self) {
        self.publisher = None;
        {
            let mut mb = self.shared.mailbox.lock().expect("mailbox lock");
            mb.closed = true;
            // Dropping the reply senders releases a waiting callback.
            mb.pending = None;
        }
        self.in_flight = None;
        *self.shared.wake.lock().expect("wake lock") = None;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}
