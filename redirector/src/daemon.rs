//! The `run`, `detach` and `status` commands.
//!
//! `run` attaches and then serves events until told to stop; stopping leaves the program
//! attached and pinned, so a restart (or upgrade) never interrupts traffic: the next `run`
//! reuses the pinned maps and swaps its program into the same tc filter slot atomically.

use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::mpsc::Receiver;

use serde::Serialize;
use tracing::{debug, info, info_span, warn};

use crate::config::Config;
use daemon_support::notify;

use crate::reloads::{Outcome, Reloads};
use crate::{counters, datapath, setup, Error};

/// What the daemon is told while it runs (signals in the binary, channel sends in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Re-read the config file: allowed ranges, self addresses, VIPs.
    Reload,
    /// Stop serving; the program stays attached and pinned.
    Stop,
}

/// Load, attach, pin, report ready, then apply reloads until [`Event::Stop`] (or the sender is
/// dropped).
pub fn run(config_path: &Path, events: Receiver<Event>) -> Result<(), Error> {
    let mut config = Config::load(config_path)?;
    let _span = info_span!("run", config = %config_path.display()).entered();
    // Before any host change: a bpffs_dir that is not on a bpffs is a config error (exit 78)
    // that must leave the host as it was.
    let pin_dir = config.pin_dir();
    datapath::ensure_pin_dir(&pin_dir)?;
    // `/metrics` (off unless configured): a taken port stops the start before any host change.
    // Its address, like gue_port and interfaces, changes only on restart.
    let _metrics = match config.metrics {
        Some(addr) => Some(
            daemon_support::metrics::http::Server::start(
                addr,
                crate::metrics::renderer(config.clone()),
            )
            .map_err(|source| Error::Metrics { addr, source })?,
        ),
        None => None,
    };
    if config.setup_on_run {
        setup::apply(&config)?;
    }

    // Whatever setup_on_run says: with these on, GRO hands the program merged GUE it would
    // have to drop. A host without ethtool is told, and runs on.
    match setup::keep_gue_unmerged(&config.state_dir, &config.interfaces) {
        Ok(off) => {
            for (interface, feature) in off {
                warn!(%interface, feature, "GRO would merge GUE datagrams on this interface: turned it off (`detach` turns it on again)");
            }
        }
        Err(e) => {
            warn!(error = %e.chain(), "could not check the interfaces' GRO features: merged GUE would be dropped (gro_merged)")
        }
    }

    let mut object = MaybeUninit::uninit();
    let mut skel = datapath::load_with(
        &mut object,
        config.gue_port,
        config.nexthop_ttl_ms,
        Some(&pin_dir),
    )?;
    // Tables first, then the program goes live: it never runs with an empty allow list.
    // Pinned before attaching, so whatever gets attached can be found by status and detach
    // even if attaching to a later interface fails.
    apply_maps(&skel.maps, &config)?;
    datapath::pin(&mut skel, &pin_dir)?;
    // Route and neighbour changes: the program's cached next hops follow them at once
    // (without this, within nexthop_ttl_ms). The watcher moves the generation in the pinned
    // settings map itself, from its own thread; nothing to watch when nothing is cached.
    let _net = if config.nexthop_ttl_ms > 0 {
        datapath::bump_generation(&skel.maps.settings)?;
        watch_next_hops(&pin_dir)
    } else {
        None
    };
    for ifc in &config.interfaces {
        datapath::attach(skel.progs.redirector.as_fd(), ifc)?;
        info!(interface = %ifc, "attached to tc ingress");
    }
    // The config at start is the first applied one. The state directory is the one read at
    // start: a reload that moves it moves the record only at the next restart.
    let state_dir = config.state_dir.clone();
    let mut reloads = Reloads::read(&state_dir);
    reloads.record(&state_dir, Outcome::Applied, None);
    notify::ready();
    info!(pin_dir = %pin_dir.display(), "ready");

    for event in events {
        match event {
            Event::Stop => break,
            Event::Reload => {
                notify::reloading();
                match Config::load(config_path) {
                    Ok(new) => {
                        if new.gue_port != config.gue_port
                            || new.interfaces != config.interfaces
                            || new.nexthop_ttl_ms != config.nexthop_ttl_ms
                        {
                            warn!("gue_port, nexthop_ttl_ms and interfaces change only on restart; keeping the old ones");
                        }
                        let result = apply_maps(&skel.maps, &new).and_then(|()| {
                            if new.setup_on_run {
                                setup::apply(&new).map(|_| ())
                            } else {
                                Ok(())
                            }
                        });
                        match result {
                            Ok(()) => {
                                info!(
                                    allowed_sources = new.allowed_sources.len(),
                                    vips = new.vips.len(),
                                    "config reloaded"
                                );
                                reloads.record(&state_dir, Outcome::Applied, None);
                                config = new;
                            }
                            Err(e) => {
                                warn!(error = %e.chain(), "config reload failed part way");
                                reloads.record(&state_dir, Outcome::Failed, Some(e.chain()));
                            }
                        }
                    }
                    Err(e) => {
                        warn!(error = %e.chain(), "config rejected, keeping the last good one");
                        reloads.record(&state_dir, Outcome::Rejected, Some(e.chain()));
                    }
                }
                notify::ready();
            }
        }
    }
    notify::stopping();
    info!("stopping; the program stays attached (run `xdplb-redirector detach` to remove it)");
    Ok(())
}

/// Start the route/neighbour watcher (`daemon_support::netwatch`): each burst of changes moves
/// the next-hop generation on. A failure only costs the bound: next hops then follow
/// nexthop_ttl_ms.
fn watch_next_hops(pin_dir: &Path) -> Option<daemon_support::netwatch::NetWatch> {
    let settings = match datapath::PinnedMaps::open(pin_dir) {
        Ok(maps) => maps.settings,
        Err(e) => {
            warn!(error = %e.chain(), "no route/neighbour notifications: next hops follow nexthop_ttl_ms only");
            return None;
        }
    };
    daemon_support::netwatch::watch(move || {
        match datapath::bump_generation(&settings) {
            Ok(()) => debug!("route or neighbour changed: cached next hops are stale"),
            Err(e) => warn!(error = %e.chain(), "could not make cached next hops stale"),
        }
        true
    })
    .map_err(|e| warn!(error = %e, "no route/neighbour notifications: next hops follow nexthop_ttl_ms only"))
    .ok()
}

fn apply_maps(maps: &crate::skel::RedirectorMaps<'_>, config: &Config) -> Result<(), Error> {
    datapath::set_allowed_sources(&maps.allowed_v4, &maps.allowed_v6, &config.allowed_sources)?;
    datapath::set_self_addrs(&maps.self_addrs, &maps.settings, &config.self_addresses)
}

/// Remove our tc filter from every interface, the pins in `pin_dir`, and what `setup` recorded
/// in `state_dir`. Works without a valid config (package removal must not depend on one).
pub fn detach(pin_dir: &Path, state_dir: &Path) -> Result<Vec<String>, Error> {
    let interfaces = datapath::detach_all()?;
    for ifc in &interfaces {
        info!(interface = %ifc, "detached");
    }
    datapath::unpin(pin_dir);
    Reloads::remove(state_dir);
    setup::undo(state_dir)?;
    Ok(interfaces)
}

/// Attachment and counters, as `status` prints them.
#[derive(Debug, Serialize)]
pub struct Status {
    pub pin_dir: String,
    /// The id of the pinned program, when pinned.
    pub program_id: Option<u32>,
    pub interfaces: Vec<InterfaceStatus>,
    /// Packets and bytes per reason, summed over CPUs (empty when not pinned).
    pub counters: Vec<Counter>,
    /// Config reloads by result (the start's apply counts as one).
    pub reloads: Reloads,
}

#[derive(Debug, Serialize)]
pub struct InterfaceStatus {
    pub name: String,
    /// The id of the program in our tc filter, if any.
    pub attached_program_id: Option<u32>,
    /// Whether that is the pinned (current) program.
    pub current: bool,
}

#[derive(Debug, Serialize)]
pub struct Counter {
    pub reason: &'static str,
    pub verdict: &'static str,
    pub packets: u64,
    /// Packets' lengths as received; 0 in pins of a version that counted no bytes.
    pub bytes: u64,
}

/// Read attachment and counters.
pub fn status(config: &Config) -> Result<Status, Error> {
    let pin_dir = config.pin_dir();
    let program_id = datapath::pinned_prog_id(&pin_dir);
    let mut interfaces = Vec::new();
    for ifc in &config.interfaces {
        let attached = match datapath::attached_prog_id(ifc) {
            Ok(id) => id,
            Err(Error::NoInterface { .. }) => None,
            Err(e) => return Err(e),
        };
        interfaces.push(InterfaceStatus {
            name: ifc.clone(),
            attached_program_id: attached,
            current: attached.is_some() && attached == program_id,
        });
    }
    let counters = match datapath::PinnedMaps::open(&pin_dir) {
        Ok(maps) => {
            let bytes = match &maps.counter_bytes {
                Some(m) => datapath::read_bytes(m)?,
                None => Vec::new(),
            };
            datapath::read_counters(&maps.counters)?
                .into_iter()
                .zip(counters::NAMES)
                .enumerate()
                .map(|(i, (packets, (_, reason, verdict)))| Counter {
                    reason,
                    verdict,
                    packets,
                    bytes: bytes.get(i).copied().unwrap_or(0),
                })
                .collect()
        }
        Err(_) => Vec::new(),
    };
    Ok(Status {
        pin_dir: pin_dir.display().to_string(),
        program_id,
        interfaces,
        counters,
        reloads: Reloads::read(&config.state_dir),
    })
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.program_id {
            Some(id) => writeln!(f, "program: id {id}, pinned in {}", self.pin_dir)?,
            None => writeln!(f, "program: not pinned in {}", self.pin_dir)?,
        }
        for i in &self.interfaces {
            let state = match (i.attached_program_id, i.current) {
                (None, _) => "not attached".to_string(),
                (Some(id), true) => format!("attached (id {id})"),
                (Some(id), false) => format!("attached (id {id}, NOT the pinned program)"),
            };
            writeln!(f, "interface {}: {state}", i.name)?;
        }
        let r = &self.reloads;
        writeln!(
            f,
            "reloads: {} applied, {} rejected, {} failed; last applied {}",
            r.applied,
            r.rejected,
            r.failed,
            r.last_success.map_or("never".to_string(), ago)
        )?;
        if let (Some(t), Some(e)) = (r.last_rejected, &r.last_error) {
            writeln!(f, "last rejected config ({}):", ago(t))?;
            for l in e.lines() {
                writeln!(f, "  {l}")?;
            }
        }
        if !self.counters.is_empty() {
            writeln!(f, "counters:")?;
            for c in &self.counters {
                writeln!(
                    f,
                    "  {:<8} {:<20} {} packets {} bytes",
                    c.verdict, c.reason, c.packets, c.bytes
                )?;
            }
        }
        Ok(())
    }
}

fn ago(t: u64) -> String {
    format!("{}s ago", crate::reloads::now().saturating_sub(t))
}
