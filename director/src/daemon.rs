//! The daemon: load and attach, install the first tables, then reload on file change (or a
//! new Consul version) or SIGHUP until told to stop. Runs in the foreground; the caller passes the control channel,
//! so tests run the whole daemon in-process and stop it with a [`Handle`].
//!
//! A reload builds a whole new snapshot and swaps it in; an invalid source is refused with its
//! file:line:col message, logged, remembered for `status`, and the last good tables keep
//! forwarding. Exiting leaves the program attached (pinned links): only `detach` removes it.

use std::fs;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use daemon_support::{error_chain, notify};
use tracing::{debug, error, info, warn};

use crate::announce::{self, Announcer};
use crate::config::{DirectorConfig, Source, XdpMode};
use crate::consul::ConsulSource;
use crate::datapath::{AttachMode, Datapath};
use crate::error::{DaemonError, DatapathError, ReloadError, SourceError};
use crate::health::HealthPlane;
use crate::source::{FileSource, Loaded, TableSource};
use crate::state::{self, Interface, Rejected, Reload, ServiceState, State};
use crate::tables::{self, Snapshot};

/// What wakes the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The source may have a new version (file event); debounced.
    Changed,
    /// Reload now (SIGHUP).
    Reload,
    /// The source's status changed (Consul reachable or not, ...): rewrite the state file.
    Status,
    /// A route, neighbour or link changed (`netwatch`): cached next hops are stale.
    NextHops,
    /// A backend's health flipped (the health checker): the overlay may change.
    Health,
    /// The operator drained or undrained the announcements (SIGUSR1): look again now.
    Announce,
    Shutdown,
}

/// Sends events to a running daemon.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: Sender<Event>,
}

impl Handle {
    pub fn reload(&self) {
        let _ = self.tx.send(Event::Reload);
    }

    pub fn shutdown(&self) {
        let _ = self.tx.send(Event::Shutdown);
    }

    /// Look at the announcements again now (the drain file changed).
    pub fn announce(&self) {
        let _ = self.tx.send(Event::Announce);
    }
}

/// The daemon's event channel: create it, keep a [`Handle`], pass it to [`run`].
#[derive(Debug)]
pub struct Control {
    tx: Sender<Event>,
    rx: Receiver<Event>,
}

impl Control {
    pub fn new() -> Control {
        let (tx, rx) = channel();
        Control { tx, rx }
    }

    pub fn handle(&self) -> Handle {
        Handle {
            tx: self.tx.clone(),
        }
    }
}

impl Default for Control {
    fn default() -> Self {
        Self::new()
    }
}

/// Run with the table source director.yaml names (`source: file | consul`).
pub fn run(cfg: DirectorConfig, control: Control) -> Result<(), DaemonError> {
    let source: Box<dyn TableSource> = match &cfg.source {
        Source::File => Box::new(FileSource::new(&cfg.backends)),
        Source::Consul(c) => Box::new(ConsulSource::start(
            (**c).clone(),
            cfg.publish.then(|| cfg.backends.clone()),
        )?),
    };
    run_with(cfg, source, control)
}

/// Run with any table source.
pub fn run_with(
    cfg: DirectorConfig,
    mut source: Box<dyn TableSource>,
    control: Control,
) -> Result<(), DaemonError> {
    // A misspelt or missing interface: said before anything is loaded, pinned or changed.
    for iface in &cfg.interfaces {
        nix::net::if_::if_nametoindex(iface.as_str()).map_err(|source| {
            DatapathError::Interface {
                name: iface.clone(),
                source,
            }
        })?;
    }
    // `/metrics` (off unless configured): a taken port stops the start here, before anything
    // is loaded. It reads what `status` reads, so it serves whatever is pinned.
    let _metrics = match cfg.metrics {
        Some(addr) => Some(
            daemon_support::metrics::http::Server::start(
                addr,
                crate::metrics::renderer(cfg.clone()),
            )
            .map_err(|source| DaemonError::Metrics { addr, source })?,
        ),
        None => None,
    };
    // A start that pins into an empty directory and then has nothing to forward takes its
    // pins away again: a failed first start leaves the bpffs as it found it.
    let pinned_before = fs::read_dir(cfg.pin_dir()).is_ok_and(|mut d| d.next().is_some());
    let dp = Datapath::open(&cfg.pin_dir())?;
    dp.set_config(&cfg.settings())?;
    let state_path = cfg.state_file();
    let mut st = State::read(&state_path).unwrap_or_default();
    st.pid = std::process::id();
    // Health starts from the view the last run left, not from "all healthy": a backend that
    // was down before a restart stays demoted from the first table.
    let health_tx = control.tx.clone();
    let mut health = HealthPlane::new(
        crate::health::ProbeSettings {
            gue_port: cfg.gue_port,
            src_v4: cfg.encap_source_v4.map(Into::into),
            src_v6: cfg.encap_source_v6.map(Into::into),
            colocated: cfg.colocated,
        },
        st.health.as_ref().map(|h| h.view()).unwrap_or_default(),
        move || {
            let _ = health_tx.send(Event::Health);
        },
    );
    // The health view in Consul (health_view:): off the forwarding path; a Consul that cannot
    // be reached is logged and shown by `status`, and changes nothing else.
    let view_tx = control.tx.clone();
    let view = cfg.health_view.as_ref().and_then(|hv| {
        crate::health::publish::ViewPublisher::start(hv, move || {
            let _ = view_tx.send(Event::Status);
        })
        .map_err(|e| error!(error = %e, "health view: not written to consul"))
        .ok()
    });
    // The last version loaded: the health overlay is rebuilt from it.
    let mut last: Option<Loaded> = None;
    st.source = source.describe();
    refresh_cluster(&mut st, source.as_ref());

    // Watch before the first load: an edit saved while we load and attach is then a queued
    // event for the loop below, not a change nobody notices until the next one.
    let _guard = source.watch(control.tx.clone())?;
    // Route and neighbour changes: the cached next hops follow them at once (without this,
    // within nexthop_ttl_ms). Not needed when nothing is cached.
    let _net = if cfg.nexthop_ttl_ms > 0 {
        let tx = control.tx.clone();
        daemon_support::netwatch::watch(move || tx.send(Event::NextHops).is_ok())
            .map_err(|e| warn!(error = %e, "no route/neighbour notifications: next hops follow nexthop_ttl_ms only"))
            .ok()
    } else {
        None
    };

    // The first version. If it is unusable but a previous run left tables pinned, those keep
    // forwarding and we wait for a fix; with nothing to forward, fail loudly.
    let had_tables = st.services.iter().any(|s| dp.table_hdr(s.id).is_some());
    // The newest version refused, while it is (announcement withdraws on it).
    let mut refused: Option<String> = None;
    if let Err(e) = reload(&cfg, &dp, source.as_mut(), &mut st, &mut health, &mut last) {
        refused = Some(error_chain(&e));
        if !had_tables {
            sync_view(&mut st, view.as_ref());
            let _ = st.write(&state_path);
            if !pinned_before {
                drop(dp);
                if let Err(u) = crate::datapath::detach_all(&cfg.pin_dir()) {
                    warn!(error = %error_chain(&u), "removing what this start pinned");
                }
            }
            return Err(DaemonError::FirstLoad(e));
        }
        error!(source = %source.describe(), error = %error_chain(&e), "config rejected, keeping the pinned tables");
    }

    let mut v6 = cfg.encap_source_v6.is_some();
    v6 |= st
        .services
        .iter()
        .any(|s| dp.table_hdr(s.id).is_some_and(|h| h.family == 6));
    st.interfaces.clear();
    for iface in &cfg.interfaces {
        if cfg.kernel_fallback {
            crate::host::apply_fallback_sysctls(iface, v6, &cfg.sysctl_log())?;
        }
        let want = match cfg.xdp_mode {
            XdpMode::Auto => None,
            XdpMode::Native => Some(AttachMode::Native),
            XdpMode::Generic => Some(AttachMode::Generic),
        };
        let mode = dp.attach(iface, want)?;
        let prev = State::read(&state_path)
            .and_then(|s| s.interfaces.into_iter().find(|i| &i.name == iface))
            .map(|i| i.mode);
        let mode = match (mode, prev) {
            (AttachMode::Kept, Some(p)) => p,
            (m, _) => m.as_str().to_string(),
        };
        info!(iface, mode, "xdp attached");
        if crate::host::is_veth(iface) {
            warn!(
                iface,
                mode,
                "veth: in native mode XDP_TX and redirects out of a veth are dropped unless its \
                 peer runs an XDP program (a pass program will do), and senders on this host need \
                 `ethtool -K <their veth> tx off` or their checksums arrive broken; see \
                 docs/setup/director.md, \"On a veth\""
            );
        }
        st.interfaces.push(Interface {
            name: iface.clone(),
            mode,
        });
    }
    for iface in dp.attached() {
        if !cfg.interfaces.contains(&iface) {
            dp.detach_iface(&iface)?;
            crate::host::restore_sysctls(&cfg.sysctl_log(), Some(&iface))?;
            info!(iface, "xdp detached: no longer configured");
        }
    }
    // Announcing starts once the program is attached and the first tables are live: the
    // first decision below can already say yes.
    let mut ann = match cfg.announce.clone() {
        Some(a) => Some(Announcer::new(a, &cfg.state_dir)?),
        None => None,
    };
    announce_update(
        &cfg,
        &dp,
        &mut st,
        &health,
        last.as_ref(),
        refused.as_deref(),
        ann.as_mut(),
    );
    sync_view(&mut st, view.as_ref());
    refresh_cluster(&mut st, source.as_ref());
    write_state(&st, &state_path)?;
    notify::ready();

    loop {
        notify::watchdog();
        // A health change held back by its service's hold time is due at `wake_at`; while
        // announcing, what no event reports (XDP attachment, BIRD, a drain's delay) is looked
        // at every tick; the systemd watchdog wants a sign of life in any case.
        let now = Instant::now();
        let mut wake = now + WATCHDOG_TICK;
        if let Some(at) = health.wake_at() {
            wake = wake.min(at);
        }
        if let Some(a) = &ann {
            wake = wake.min(now + announce::TICK);
            if let Some(ms) = a.deadline_ms() {
                let left = Duration::from_millis(ms.saturating_sub(announce::now_ms()));
                wake = wake.min(now + left);
            }
        }
        let ev = match control
            .rx
            .recv_timeout(wake.saturating_duration_since(Instant::now()))
        {
            Ok(ev) => Some(ev),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let ev = match ev {
            Some(ev) => ev,
            None if health.wake_at().is_some_and(|at| at <= Instant::now()) => Event::Health,
            None => Event::Announce,
        };
        match ev {
            Event::Shutdown => break,
            Event::Announce => {}
            Event::Health => {
                health_changed(&cfg, &dp, &mut st, &mut health, last.as_ref());
                sync_view(&mut st, view.as_ref());
                write_state(&st, &state_path)?;
            }
            Event::Status => {
                sync_view(&mut st, view.as_ref());
                refresh_cluster(&mut st, source.as_ref());
                write_state(&st, &state_path)?;
            }
            Event::NextHops => next_hops_changed(&dp),
            Event::Changed | Event::Reload => {
                debug!(event = ?ev, "woken");
                // Debounce: an editor's save is several events (write, rename, chmod).
                let deadline = Instant::now() + cfg.reload_debounce;
                let mut stop = false;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match control.rx.recv_timeout(left) {
                        Ok(Event::Shutdown) => {
                            stop = true;
                            break;
                        }
                        Ok(Event::NextHops) => next_hops_changed(&dp),
                        Ok(_) => continue,
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                if stop {
                    break;
                }
                notify::reloading();
                match reload(&cfg, &dp, source.as_mut(), &mut st, &mut health, &mut last) {
                    Ok(()) => refused = None,
                    Err(e) => {
                        warn!(source = %source.describe(), error = %error_chain(&e), "config rejected, keeping last good tables");
                        refused = Some(error_chain(&e));
                    }
                }
                sync_view(&mut st, view.as_ref());
                refresh_cluster(&mut st, source.as_ref());
                write_state(&st, &state_path)?;
                notify::ready();
            }
        }
        if ann.is_some()
            && announce_update(
                &cfg,
                &dp,
                &mut st,
                &health,
                last.as_ref(),
                refused.as_deref(),
                ann.as_mut(),
            )
        {
            write_state(&st, &state_path)?;
        }
    }
    notify::stopping();
    if let Some(a) = &mut ann {
        a.shutdown();
        if let Some(s) = &mut st.announce {
            for v in &mut s.vips {
                v.token = None;
                v.why_not = vec!["the daemon stopped".into()];
            }
        }
    }
    // The view leaves Consul with the daemon: its checks stop here.
    drop(view);
    st.health_view = None;
    st.pid = 0;
    refresh_cluster(&mut st, source.as_ref());
    if let Some(c) = &mut st.cluster {
        c.connected = false;
    }
    write_state(&st, &state_path)?;
    info!("stopped; the program stays attached (xdplb-director detach removes it)");
    Ok(())
}

/// At least this often the loop wakes (and tells the systemd watchdog it lives).
const WATCHDOG_TICK: Duration = Duration::from_secs(1);

/// Decides every VIP's announcement from what the daemon knows now and publishes the
/// changes; true when `st` changed.
fn announce_update(
    cfg: &DirectorConfig,
    dp: &Datapath,
    st: &mut State,
    health: &HealthPlane,
    last: Option<&Loaded>,
    refused: Option<&str>,
    ann: Option<&mut Announcer>,
) -> bool {
    let Some(ann) = ann else { return false };
    let view = health.view();
    let inp = announce::Inputs {
        config: last.map(|l| &l.config),
        live: st
            .services
            .iter()
            .filter(|s| dp.table_hdr(s.id).is_some())
            .map(|s| s.name.clone())
            .collect(),
        director: announce::director_problems(&cfg.interfaces),
        refused: refused
            .filter(|_| ann.config().withdraw_when_refused)
            .map(str::to_string),
        health: Some(&view),
        ..announce::Inputs::default()
    };
    match ann.update(inp) {
        Some(s) => {
            st.announce = Some(s);
            true
        }
        None => false,
    }
}

/// A backend's health flipped, or a held change is due: install the tables the overlay asks
/// for now, if they differ from the installed ones.
fn health_changed(
    cfg: &DirectorConfig,
    dp: &Datapath,
    st: &mut State,
    health: &mut HealthPlane,
    last: Option<&Loaded>,
) {
    let t0 = Instant::now();
    if let Some(l) = last {
        if let Some(installed) = health.update(&l.config, &l.tables, t0) {
            let snap = tables::snapshot(
                &l.config,
                &installed,
                &st.ids,
                cfg.encap_source_v4.is_some(),
                cfg.encap_source_v6.is_some(),
            );
            match snap.map(|snap| (dp.install(&snap), snap)) {
                Ok((Ok(swapped), snap)) => {
                    let took = t0.elapsed();
                    info!(
                        swapped = swapped.len(),
                        took_us = took.as_micros() as u64,
                        "health overlay live"
                    );
                    record(st, &snap, swapped, took);
                }
                Ok((Err(e), _)) => {
                    error!(error = %error_chain(&e), "installing the health overlay failed")
                }
                Err(e) => error!(error = %error_chain(&e), "building the health overlay failed"),
            }
        }
    }
    st.health = health.state();
}

/// The Consul follower's state into `st`, counting a refusal each time a different version
/// (or the same one again after something was applied) is refused.
fn refresh_cluster(st: &mut State, source: &dyn TableSource) {
    let new = source.cluster();
    let refused = |c: &Option<state::ClusterState>| c.as_ref().and_then(|c| c.rejected.clone());
    if let Some(r) = refused(&new) {
        if refused(&st.cluster).is_none_or(|old| old.version != r.version) {
            st.reloads.cluster_refusals += 1;
        }
    }
    st.cluster = new;
}

/// A route or neighbour changed: every CPU looks each backend's next hop up again.
fn next_hops_changed(dp: &Datapath) {
    match dp.bump_generation() {
        Ok(()) => debug!("route or neighbour changed: cached next hops are stale"),
        Err(e) => warn!(error = %error_chain(&e), "could not make cached next hops stale"),
    }
}

/// The health view to Consul follows the state's health; the state shows how writing it goes.
fn sync_view(st: &mut State, view: Option<&crate::health::publish::ViewPublisher>) {
    if let Some(v) = view {
        v.set(crate::health::publish::services(st.health.as_ref()));
        st.health_view = Some(v.status());
    }
}

fn write_state(st: &State, path: &std::path::Path) -> Result<(), DaemonError> {
    st.write(path).map_err(|source| DaemonError::State {
        path: path.into(),
        source,
    })
}

/// Load the source, build, install, and tell the source how it went. On error, records it in
/// `st` and leaves the kernel as it was (nothing is touched before the whole snapshot is built).
fn reload(
    cfg: &DirectorConfig,
    dp: &Datapath,
    source: &mut dyn TableSource,
    st: &mut State,
    health: &mut HealthPlane,
    last: &mut Option<Loaded>,
) -> Result<(), ReloadError> {
    let r = load_and_install(cfg, dp, source, st, health, last);
    source.finished(r.as_ref().map(|_| ()).map_err(|e| error_chain(e)));
    r
}

fn load_and_install(
    cfg: &DirectorConfig,
    dp: &Datapath,
    source: &mut dyn TableSource,
    st: &mut State,
    health: &mut HealthPlane,
    last: &mut Option<Loaded>,
) -> Result<(), ReloadError> {
    let t0 = Instant::now();
    let result = source.load().and_then(|loaded| {
        debug!(
            took_us = t0.elapsed().as_micros() as u64,
            "source loaded and tables built"
        );
        // The published (verified) tables stay as they are; the kernel gets them with the
        // health overlay.
        health.configure(&loaded.config, &loaded.tables);
        let installed = health.tables(&loaded.config, &loaded.tables, Instant::now());
        let snap = tables::snapshot(
            &loaded.config,
            &installed,
            &st.ids,
            cfg.encap_source_v4.is_some(),
            cfg.encap_source_v6.is_some(),
        )
        .map_err(|e| SourceError::Unusable {
            path: source_path(cfg),
            source: e,
        })?;
        *last = Some(loaded);
        Ok(snap)
    });
    st.health = health.state();
    let snap = match result {
        Ok(s) => s,
        Err(e) => {
            st.last_rejected = Some(Rejected {
                time: state::now(),
                error: error_chain(&e),
            });
            st.reloads.rejected += 1;
            return Err(e.into());
        }
    };
    debug!(took_us = t0.elapsed().as_micros() as u64, "snapshot ready");
    match dp.install(&snap) {
        Ok(swapped) => {
            let took = t0.elapsed();
            info!(
                services = snap.services.len(),
                swapped = swapped.len(),
                took_us = took.as_micros() as u64,
                "tables live"
            );
            record(st, &snap, swapped, took);
            st.reloads.applied += 1;
            Ok(())
        }
        Err(e) => {
            // A kernel refusal mid-install: tables already swapped stay (each is whole);
            // the next reload retries the rest.
            error!(error = %error_chain(&e), "installing tables failed");
            st.last_rejected = Some(Rejected {
                time: state::now(),
                error: error_chain(&e),
            });
            st.reloads.failed += 1;
            Err(e.into())
        }
    }
}

fn record(st: &mut State, snap: &Snapshot, swapped: Vec<String>, took: Duration) {
    st.ids = snap.ids.clone();
    st.services = snap
        .services
        .iter()
        .map(|s| ServiceState {
            id: s.id,
            name: s.name.clone(),
            version: s.hdr.version,
            checksum: s.hdr.checksum,
            rows: s.hdr.rows_mask + 1,
            width: s.hdr.width,
            backends: s.backends,
            binds: s.binds,
        })
        .collect();
    st.last_reload = Some(Reload {
        time: state::now(),
        swapped,
        took_us: took.as_micros() as u64,
    });
}

/// What an unusable config is called in messages: the file, or the Consul prefix.
fn source_path(cfg: &DirectorConfig) -> std::path::PathBuf {
    match &cfg.source {
        Source::File => cfg.backends.clone(),
        Source::Consul(c) => format!("consul:{}", c.prefix).into(),
    }
}
