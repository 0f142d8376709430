//! Health checks: the director probes every backend of every service that configures checks,
//! keeps each backend's health by `rise` and `fall`, and tells the daemon when a backend's
//! health flips. The daemon turns that into a demotion overlay on the tables it installs
//! ([`view::decide`], [`view::Damper`]); the published tables, and so the cluster's checksums,
//! stay the operator's.
//!
//! The probes run on one thread with its own single-threaded tokio runtime, one task per
//! (service, backend), each starting at a random point of its interval and jittered after, so
//! probes to many backends do not fire together.
//!
//! Must not do: touch maps or tables (the daemon does), block the daemon's loop.

pub mod overlay;
pub mod packet;
pub mod probe;
pub mod view;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

pub use overlay::overlay;
pub use view::{decide, Damper, Decision, Tracker};

/// One check of a backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Check {
    /// A TCP connect to the backend's own address.
    Tcp { port: u16 },
    /// `GET path` on the backend's own address; `expect` empty = any 2xx.
    Http {
        port: u16,
        path: String,
        host: Option<String>,
        expect: Vec<u16>,
    },
    /// A SYN to `vip:port` through the tunnel to the backend, as client traffic goes; proves
    /// the redirector, the VIP on the backend and the listener.
    Gue { vip: IpAddr, port: u16 },
}

impl Check {
    /// `tcp:80`, `http:8080/healthz`, `gue:10.100.0.1:80`.
    pub fn describe(&self) -> String {
        match self {
            Check::Tcp { port } => format!("tcp:{port}"),
            Check::Http { port, path, .. } => format!("http:{port}{path}"),
            Check::Gue { vip, port } => format!("gue:{}", SocketAddr::new(*vip, *port)),
        }
    }
}

/// How one backend is checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Spec {
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// Each interval is stretched or shrunk by up to this percentage, at random.
    pub jitter_percent: u8,
    pub checks: Vec<Check>,
}

/// One backend of one service to check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub service: String,
    pub backend: String,
    pub address: IpAddr,
    pub spec: Spec,
}

/// (service, backend name).
pub type Key = (String, String);

/// What the director needs from its own configuration to probe.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    pub gue_port: u16,
    pub src_v4: Option<IpAddr>,
    pub src_v6: Option<IpAddr>,
}

enum Command {
    Targets(Vec<Target>),
}

/// The running checker.
pub struct Checker {
    trackers: Arc<Mutex<BTreeMap<Key, Tracker>>>,
    commands: mpsc::UnboundedSender<Command>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker").finish_non_exhaustive()
    }
}

/// Unix seconds now.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Checker {
    /// Starts the checker thread with the health view a previous run left (`persisted`), and
    /// calls `flipped` (from the checker thread) whenever a backend's health changes.
    pub fn start(
        settings: ProbeSettings,
        persisted: BTreeMap<Key, Tracker>,
        flipped: impl Fn() + Send + Sync + 'static,
    ) -> std::io::Result<Checker> {
        let trackers = Arc::new(Mutex::new(persisted));
        let (commands, rx) = mpsc::unbounded_channel();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = trackers.clone();
        let thread = std::thread::Builder::new()
            .name("health".into())
            .spawn(move || {
                rt.block_on(run(settings, shared, rx, stopped, Arc::new(flipped)));
            })?;
        Ok(Checker {
            trackers,
            commands,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The backends to check from now on; others stop being checked and are forgotten, the
    /// ones that stay keep their health.
    pub fn set_targets(&self, targets: Vec<Target>) {
        let _ = self.commands.send(Command::Targets(targets));
    }

    /// A copy of every tracked backend's health.
    pub fn view(&self) -> BTreeMap<Key, Tracker> {
        self.trackers.lock().unwrap().clone()
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Flipped = Arc<dyn Fn() + Send + Sync>;

async fn run(
    settings: ProbeSettings,
    trackers: Arc<Mutex<BTreeMap<Key, Tracker>>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
    flipped: Flipped,
) {
    let gue = match probe::GueProber::start(settings.gue_port) {
        Ok(g) => Some(g),
        Err(e) => {
            warn!(error = %e, "health: no raw sockets (CAP_NET_RAW?): gue checks fail");
            None
        }
    };
    let mut tasks: HashMap<Target, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            cmd = commands.recv() => match cmd {
                None => break,
                Some(Command::Targets(targets)) => {
                    tasks.retain(|t, h| {
                        let keep = targets.contains(t);
                        if !keep {
                            h.abort();
                        }
                        keep
                    });
                    let now = now_unix();
                    {
                        let mut tr = trackers.lock().unwrap();
                        tr.retain(|(s, b), _| targets.iter().any(|t| &t.service == s && &t.backend == b));
                        for t in &targets {
                            // A backend never seen before starts unhealthy until it passes `rise`.
                            tr.entry((t.service.clone(), t.backend.clone()))
                                .or_insert_with(|| Tracker::new(false, now));
                        }
                    }
                    for t in targets {
                        if tasks.contains_key(&t) {
                            continue;
                        }
                        let h = tokio::spawn(check_loop(
                            t.clone(),
                            settings.clone(),
                            gue.clone(),
                            trackers.clone(),
                            flipped.clone(),
                        ));
                        tasks.insert(t, h);
                    }
                }
            }
        }
    }
    for (_, h) in tasks {
        h.abort();
    }
}

async fn check_loop(
    t: Target,
    settings: ProbeSettings,
    gue: Option<probe::GueProber>,
    trackers: Arc<Mutex<BTreeMap<Key, Tracker>>>,
    flipped: Flipped,
) {
    let key = (t.service.clone(), t.backend.clone());
    // Start somewhere in the first interval, so a fleet of backends is spread over it.
    let first = t
        .spec
        .interval
        .mul_f64(f64::from(probe::random_u32()) / f64::from(u32::MAX));
    tokio::time::sleep(first).await;
    loop {
        let started = tokio::time::Instant::now();
        let result = round(&t, &settings, gue.as_ref()).await;
        let flip = {
            let mut tr = trackers.lock().unwrap();
            let Some(tracker) = tr.get_mut(&key) else {
                return;
            };
            let flip = tracker.record(result.clone(), t.spec.rise, t.spec.fall, now_unix());
            if flip {
                if tracker.healthy {
                    info!(service = %t.service, backend = %t.backend, "backend healthy");
                } else {
                    warn!(service = %t.service, backend = %t.backend, error = %result.as_ref().err().map_or("", |e| e.as_str()), "backend unhealthy");
                }
            }
            flip
        };
        if flip {
            flipped();
        }
        let j = f64::from(t.spec.jitter_percent) / 100.0;
        let factor = 1.0 + j * (2.0 * f64::from(probe::random_u32()) / f64::from(u32::MAX) - 1.0);
        tokio::time::sleep_until(started + t.spec.interval.mul_f64(factor.max(0.0))).await;
    }
}

/// Every check of one backend, each within the timeout; the first failure is the round's.
async fn round(
    t: &Target,
    settings: &ProbeSettings,
    gue: Option<&probe::GueProber>,
) -> Result<(), String> {
    for check in &t.spec.checks {
        let fut = async {
            match check {
                Check::Tcp { port } => probe::tcp(SocketAddr::new(t.address, *port)).await,
                Check::Http {
                    port,
                    path,
                    host,
                    expect,
                } => {
                    let addr = SocketAddr::new(t.address, *port);
                    let host = host.clone().unwrap_or_else(|| addr.to_string());
                    probe::http(addr, &host, path, expect).await
                }
                Check::Gue { vip, port } => match gue {
                    Some(g) => {
                        let src = if vip.is_ipv4() {
                            settings.src_v4
                        } else {
                            settings.src_v6
                        };
                        g.probe(t.address, *vip, *port, src).await
                    }
                    None => Err("gue: no raw socket to read answers (CAP_NET_RAW)".into()),
                },
            }
        };
        match tokio::time::timeout(t.spec.timeout, fut).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("{}: {e}", check.describe())),
            Err(_) => {
                return Err(format!(
                    "{}: no answer within {} ms",
                    check.describe(),
                    t.spec.timeout.as_millis()
                ))
            }
        }
    }
    Ok(())
}
