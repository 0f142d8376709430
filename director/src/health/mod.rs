//! Health checks: the director probes every backend of every service that configures checks,
//! keeps each backend's health by `rise` and `fall`, and tells the daemon when a backend's
//! health flips. The daemon turns that into a demotion overlay on the tables it installs
//! ([`view::decide`], [`view::Damper`]); the published tables, and so the cluster's checksums,
//! stay the operator's.
//!
//! The probes run on one thread with its own single-threaded tokio runtime, one task per
//! (service, backend), each starting at a random point of its interval and jittered after, so
//! probes to many backends do not fire together; starts are put on a shared 10 ms grid
//! (`Grid`), so the thread wakes once per tick for the probes due in it.
//!
//! Must not do: touch maps or tables (the daemon does), block the daemon's loop.

pub mod overlay;
pub mod packet;
pub mod plane;
pub mod probe;
pub mod publish;
pub mod view;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use tablegen::config::{Health, HealthCheck};
use tokio::sync::mpsc;
use tracing::{info, warn};

pub use overlay::overlay;
pub use plane::{HealthPlane, HealthState, ServiceHealth};
pub use view::{decide, Damper, Decision, Tracker};

/// One backend of one service to check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub service: String,
    pub backend: String,
    pub address: IpAddr,
    pub health: Health,
}

/// (service, backend name).
pub type Key = (String, String);

/// What the director needs from its own configuration to probe.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    pub gue_port: u16,
    pub src_v4: Option<IpAddr>,
    pub src_v6: Option<IpAddr>,
    /// Co-located mode: `src_v4` / `src_v6` are this host's own backend addresses, whose
    /// `gue` checks connect to the VIP here directly (a GUE packet to itself would not pass
    /// the redirector, which sees only what arrives from the network).
    pub colocated: bool,
}

impl ProbeSettings {
    /// Whether `backend` is this host (co-located mode only).
    pub fn is_self(&self, backend: IpAddr) -> bool {
        self.colocated && (self.src_v4 == Some(backend) || self.src_v6 == Some(backend))
    }
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
        // The view changes here, before this returns: a backend never seen before is unhealthy
        // until it passes `rise`, from the first table that includes it.
        let now = now_unix();
        {
            let mut tr = self.trackers.lock().unwrap();
            tr.retain(|(s, b), _| targets.iter().any(|t| &t.service == s && &t.backend == b));
            for t in &targets {
                tr.entry((t.service.clone(), t.backend.clone()))
                    .or_insert_with(|| Tracker::new(false, now));
            }
        }
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
    // The raw sockets that read `gue` answers are opened with the first target that has a
    // `gue` check (and kept from then on): a raw TCP socket receives a copy of every TCP
    // packet the host receives, `tcp` and `http` probes' answers included, so a director
    // without `gue` checks does not pay for one. `None`: not needed yet.
    let mut gue: Option<Option<probe::GueProber>> = None;
    let mut tasks: HashMap<Target, tokio::task::JoinHandle<()>> = HashMap::new();
    let grid = Grid(tokio::time::Instant::now());
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            cmd = commands.recv() => match cmd {
                None => break,
                Some(Command::Targets(targets)) => {
                    let wants_gue = targets
                        .iter()
                        .any(|t| t.health.checks.iter().any(|c| matches!(c, HealthCheck::Gue { .. })));
                    if wants_gue && gue.is_none() {
                        gue = Some(match probe::GueProber::start(settings.gue_port) {
                            Ok(g) => Some(g),
                            Err(e) => {
                                warn!(error = %e, "health: no raw sockets (CAP_NET_RAW?): gue checks fail");
                                None
                            }
                        });
                    }
                    tasks.retain(|t, h| {
                        let keep = targets.contains(t);
                        if !keep {
                            h.abort();
                        }
                        keep
                    });
                    for t in targets {
                        if tasks.contains_key(&t) {
                            continue;
                        }
                        let h = tokio::spawn(check_loop(
                            t.clone(),
                            grid,
                            settings.clone(),
                            gue.clone().flatten(),
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

/// Probes start on a shared grid of [`Grid::TICK`]: the thread wakes once a tick for all the
/// probes due in it, not once for each (1000 backends checked every second would otherwise
/// wake it some 600 times a second for timers alone, at the runtime's 1 ms resolution). Start
/// points and jitter keep their spread over the interval: each probe is due at its unrounded
/// time (the previous one's plus the jittered interval), and starts at the grid point nearest
/// to it, so rounding never adds up and the mean interval stays the configured one.
#[derive(Debug, Clone, Copy)]
struct Grid(tokio::time::Instant);

impl Grid {
    const TICK: std::time::Duration = std::time::Duration::from_millis(10);

    /// The point of the grid nearest to `t`.
    fn nearest(self, t: tokio::time::Instant) -> tokio::time::Instant {
        let tick = Self::TICK.as_nanos();
        let since = t.saturating_duration_since(self.0).as_nanos();
        let ticks = (since + tick / 2) / tick;
        self.0 + std::time::Duration::from_nanos((ticks * tick) as u64)
    }
}

async fn check_loop(
    t: Target,
    grid: Grid,
    settings: ProbeSettings,
    gue: Option<probe::GueProber>,
    trackers: Arc<Mutex<BTreeMap<Key, Tracker>>>,
    flipped: Flipped,
) {
    let key = (t.service.clone(), t.backend.clone());
    // Start somewhere in the first interval, so a fleet of backends is spread over it.
    let first = t
        .health
        .interval
        .mul_f64(f64::from(probe::random_u32()) / f64::from(u32::MAX));
    let mut due = tokio::time::Instant::now() + first;
    tokio::time::sleep_until(grid.nearest(due)).await;
    loop {
        let result = round(&t, &settings, gue.as_ref()).await;
        let flip = {
            let mut tr = trackers.lock().unwrap();
            let Some(tracker) = tr.get_mut(&key) else {
                return;
            };
            let flip = tracker.record(result.clone(), t.health.rise, t.health.fall, now_unix());
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
        let j = f64::from(t.health.jitter_percent) / 100.0;
        let factor = 1.0 + j * (2.0 * f64::from(probe::random_u32()) / f64::from(u32::MAX) - 1.0);
        // A round that overran the interval (a timeout longer than it) starts the next one
        // at once, and the schedule goes on from now.
        due = (due + t.health.interval.mul_f64(factor.max(0.0))).max(tokio::time::Instant::now());
        tokio::time::sleep_until(grid.nearest(due)).await;
    }
}

/// Every check of one backend, each within the timeout; the first failure is the round's.
/// `gue`: the prober, `None` without raw sockets. Public for tests of one round.
pub async fn round(
    t: &Target,
    settings: &ProbeSettings,
    gue: Option<&probe::GueProber>,
) -> Result<(), String> {
    for check in &t.health.checks {
        let fut = async {
            match check {
                HealthCheck::Tcp { port } => probe::tcp(SocketAddr::new(t.address, *port)).await,
                HealthCheck::Http {
                    port,
                    path,
                    host,
                    expect,
                } => {
                    let addr = SocketAddr::new(t.address, *port);
                    let host = host.clone().unwrap_or_else(|| addr.to_string());
                    probe::http(addr, &host, path, expect).await
                }
                // Co-located, this host's own backend: the VIP is on this host; connect to it.
                HealthCheck::Gue { vip, port } if settings.is_self(t.address) => {
                    probe::tcp(SocketAddr::new(*vip, *port)).await
                }
                HealthCheck::Gue { vip, port } => match gue {
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
        match tokio::time::timeout(t.health.timeout, fut).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("{}: {e}", check.describe())),
            Err(_) => {
                return Err(format!(
                    "{}: no answer within {} ms",
                    check.describe(),
                    t.health.timeout.as_millis()
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn probe_starts_go_to_the_nearest_point_of_the_grid() {
        let t0 = tokio::time::Instant::now();
        let g = Grid(t0);
        let ms = Duration::from_millis;
        assert_eq!(g.nearest(t0), t0);
        assert_eq!(g.nearest(t0 + ms(4)), t0);
        assert_eq!(g.nearest(t0 + ms(5)), t0 + ms(10));
        assert_eq!(g.nearest(t0 + ms(1234)), t0 + ms(1230));
        assert_eq!(g.nearest(t0 + ms(1236)), t0 + ms(1240));
        // Before the grid's origin: its first point.
        assert_eq!(Grid(t0 + ms(50)).nearest(t0), t0 + ms(50));
    }

    /// Raw TCP sockets of this thread's network namespace (`/proc/thread-self/net/raw`, then
    /// `raw6`).
    fn raw_sockets() -> (usize, usize) {
        let count = |f: &str| {
            std::fs::read_to_string(format!("/proc/thread-self/net/{f}"))
                .unwrap()
                .lines()
                .skip(1)
                .count()
        };
        (count("raw"), count("raw6"))
    }

    /// A raw TCP socket receives a copy of every TCP packet the host receives: the checker
    /// opens the `gue` prober's only when a target has a `gue` check.
    #[test]
    fn the_raw_sockets_open_with_the_first_gue_check() {
        let ns = lab::testns::TestNetns::new("xdplb-health-raw");
        ns.run(|| {
            let target = |address: &str, check: HealthCheck| Target {
                service: "web".into(),
                backend: address.into(),
                address: address.parse().unwrap(),
                health: Health {
                    interval: Duration::from_millis(100),
                    timeout: Duration::from_millis(50),
                    rise: 1,
                    fall: 1,
                    jitter_percent: 0,
                    hold: Duration::from_secs(1),
                    fail_open_below: 50,
                    announce_min_healthy: 1,
                    checks: vec![check],
                },
            };
            let settings = ProbeSettings {
                gue_port: 19523,
                src_v4: None,
                src_v6: None,
                colocated: false,
            };
            let c = Checker::start(settings, BTreeMap::new(), || {}).unwrap();
            let tcp = target("127.0.0.1", HealthCheck::Tcp { port: 9 });
            c.set_targets(vec![tcp.clone()]);
            let t0 = std::time::Instant::now();
            // Probed (and refused: nothing listens) at least once, with no raw socket open.
            let error = loop {
                if let Some(e) = c.view().values().find_map(|t| t.last_error.clone()) {
                    break e;
                }
                assert!(t0.elapsed() < Duration::from_secs(5), "never probed");
                std::thread::sleep(Duration::from_millis(10));
            };
            assert!(error.contains("refused"), "{error}");
            assert_eq!(raw_sockets(), (0, 0));
            let gue = target(
                "127.0.0.2",
                HealthCheck::Gue {
                    vip: "10.9.9.9".parse().unwrap(),
                    port: 80,
                },
            );
            c.set_targets(vec![tcp, gue]);
            while raw_sockets() != (1, 1) {
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "raw sockets: {:?}",
                    raw_sockets()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        });
    }
}
