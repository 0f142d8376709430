//! The daemon's side of health: from a loaded (published, verified) config to the tables it
//! installs. Keeps the published tables' rankings for the services that are checked, the
//! decision installed per service, the damping, and the checker itself.
//!
//! The published config and its checksums are never changed: the overlay exists only in the
//! tables handed to the kernel, and `status` shows both.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tablegen::config::{Config, Health, Service, State};
use tablegen::table::{Planner, Table};
use tracing::{error, info};

use super::{decide, overlay, Checker, Damper, Decision, Key, ProbeSettings, Target, Tracker};

/// Per service, what `status` shows of health.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHealth {
    /// Health ignored: fewer than the fail-open share of the backends are healthy.
    pub fail_open: bool,
    /// Backends the installed table demotes.
    pub demoted: Vec<String>,
    /// The published table's version and checksum (what the cluster verifies).
    pub published_version: u64,
    pub published_checksum: u64,
}

struct Checked {
    planner: Planner,
    health: Health,
    published: Table,
}

/// What the state file keeps of health: the view a restart starts from, and what `status`
/// shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthState {
    /// Per checked service.
    pub services: BTreeMap<String, ServiceHealth>,
    /// Per service, per backend.
    pub backends: BTreeMap<String, BTreeMap<String, Tracker>>,
}

impl HealthState {
    /// The trackers by (service, backend), as the checker keeps them.
    pub fn view(&self) -> BTreeMap<Key, Tracker> {
        self.backends
            .iter()
            .flat_map(|(s, m)| {
                m.iter()
                    .map(move |(b, t)| ((s.clone(), b.clone()), t.clone()))
            })
            .collect()
    }
}

/// The health overlay and its checker.
pub struct HealthPlane {
    settings: ProbeSettings,
    checker: Option<Checker>,
    /// Given to the checker when it starts: called on every flip.
    notify: Arc<dyn Fn() + Send + Sync>,
    /// Health a previous run left (state file): the view a restart starts from.
    persisted: BTreeMap<Key, Tracker>,
    checked: BTreeMap<String, Checked>,
    damper: Damper,
    installed: BTreeMap<String, Decision>,
    /// When a held change is due.
    wake_at: Option<Instant>,
}

impl std::fmt::Debug for HealthPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthPlane")
            .field("installed", &self.installed)
            .finish_non_exhaustive()
    }
}

impl HealthPlane {
    pub fn new(
        settings: ProbeSettings,
        persisted: BTreeMap<Key, Tracker>,
        notify: impl Fn() + Send + Sync + 'static,
    ) -> HealthPlane {
        HealthPlane {
            settings,
            checker: None,
            notify: Arc::new(notify),
            persisted,
            checked: BTreeMap::new(),
            damper: Damper::default(),
            installed: BTreeMap::new(),
            wake_at: None,
        }
    }

    /// A new published config and its tables: keep the rankings of the checked services and
    /// tell the checker what to probe. Starts the checker on the first config with checks.
    pub fn configure(&mut self, config: &Config, tables: &[Table]) {
        let mut checked = BTreeMap::new();
        let mut targets = Vec::new();
        for (s, t) in config.services.iter().zip(tables) {
            let Some(h) = s.health.as_ref().filter(|h| !h.checks.is_empty()) else {
                continue;
            };
            for b in &s.backends {
                if b.state == State::Inactive {
                    continue;
                }
                targets.push(Target {
                    service: s.name.clone(),
                    backend: b.name.clone(),
                    address: b.address,
                    health: h.clone(),
                });
            }
            // The rankings are rebuilt only when the service changed.
            let planner = match self.checked.remove(&s.name) {
                Some(c) if c.planner.service() == s => c.planner,
                _ => Planner::new(s.clone()),
            };
            checked.insert(
                s.name.clone(),
                Checked {
                    planner,
                    health: h.clone(),
                    published: t.clone(),
                },
            );
        }
        self.checked = checked;
        let names: BTreeSet<String> = self.checked.keys().cloned().collect();
        self.damper.retain(&names);
        self.installed.retain(|s, _| names.contains(s));
        if targets.is_empty() {
            self.checker = None;
            return;
        }
        if self.checker.is_none() {
            let notify = self.notify.clone();
            match Checker::start(
                self.settings.clone(),
                std::mem::take(&mut self.persisted),
                move || notify(),
            ) {
                Ok(c) => self.checker = Some(c),
                Err(e) => {
                    error!(error = %e, "health checks not started: every backend counts as healthy");
                    return;
                }
            }
        }
        if let Some(c) = &self.checker {
            c.set_targets(targets);
        }
    }

    /// The tables to install for a new load of `config` and its published `tables`, with
    /// health applied as decided now.
    pub fn tables(&mut self, config: &Config, tables: &[Table], now: Instant) -> Vec<Table> {
        self.build(config, tables, now).0
    }

    /// After a health change or at [`Self::wake_at`]: the tables to install if some service's
    /// installed decision changes now (the hold time allowing), else `None`.
    pub fn update(
        &mut self,
        config: &Config,
        tables: &[Table],
        now: Instant,
    ) -> Option<Vec<Table>> {
        let (out, changed) = self.build(config, tables, now);
        changed.then_some(out)
    }

    fn build(&mut self, config: &Config, tables: &[Table], now: Instant) -> (Vec<Table>, bool) {
        let view = self.view();
        let first = self.installed.is_empty();
        self.wake_at = None;
        let mut changed = false;
        let mut out = Vec::with_capacity(tables.len());
        for (s, t) in config.services.iter().zip(tables) {
            let Some(c) = self.checked.get(&s.name) else {
                out.push(t.clone());
                continue;
            };
            let wanted = wanted(s, &c.health, &view);
            let decision = if first {
                // A start (or the first checked config): the persisted view goes in at once
                // and starts the hold.
                self.damper.start(&s.name, wanted.clone(), now);
                wanted
            } else {
                let (d, due) = self.damper.admit(&s.name, &wanted, c.health.hold, now);
                if let Some(due) = due {
                    self.wake_at = Some(self.wake_at.map_or(due, |w| w.min(due)));
                }
                d
            };
            let before = self.installed.get(&s.name);
            if before != Some(&decision) {
                changed = true;
                if decision.fail_open {
                    error!(service = %s.name, "fewer healthy backends than the fail-open share: health ignored, forwarding by the published table");
                } else if before.is_some_and(|b| b.fail_open) {
                    info!(service = %s.name, "enough healthy backends again: health applied");
                }
                info!(service = %s.name, demoted = ?decision.demoted, fail_open = decision.fail_open, "health overlay");
            }
            out.push(if decision.demoted.is_empty() {
                t.clone()
            } else {
                overlay(&c.planner, &decision.demoted)
            });
            self.installed.insert(s.name.clone(), decision);
        }
        (out, changed)
    }

    /// When a held change must be looked at again.
    pub fn wake_at(&self) -> Option<Instant> {
        self.wake_at
    }

    /// Every checked backend's health.
    pub fn view(&self) -> BTreeMap<Key, Tracker> {
        match &self.checker {
            Some(c) => c.view(),
            None => self.persisted.clone(),
        }
    }

    /// What the state file keeps; `None` when no service is checked.
    pub fn state(&self) -> Option<HealthState> {
        if self.checked.is_empty() {
            return None;
        }
        let mut backends: BTreeMap<String, BTreeMap<String, Tracker>> = BTreeMap::new();
        for ((s, b), t) in self.view() {
            backends.entry(s).or_default().insert(b, t);
        }
        Some(HealthState {
            services: self.services(),
            backends,
        })
    }

    /// Per checked service, what `status` shows.
    pub fn services(&self) -> BTreeMap<String, ServiceHealth> {
        self.checked
            .iter()
            .map(|(name, c)| {
                let d = self.installed.get(name).cloned().unwrap_or_default();
                (
                    name.clone(),
                    ServiceHealth {
                        fail_open: d.fail_open,
                        demoted: d.demoted.into_iter().collect(),
                        published_version: c.published.version,
                        published_checksum: c.published.checksum,
                    },
                )
            })
            .collect()
    }
}

/// What health asks of `s`'s table: its active and filling backends (draining and inactive
/// ones are out of new flows already) by their health; an unchecked one counts as healthy.
fn wanted(s: &Service, h: &Health, view: &BTreeMap<Key, Tracker>) -> Decision {
    decide(
        s.backends
            .iter()
            .filter(|b| matches!(b.state, State::Active | State::Filling))
            .map(|b| {
                let healthy = view
                    .get(&(s.name.clone(), b.name.clone()))
                    .is_none_or(|t| t.healthy);
                (b.name.as_str(), healthy)
            }),
        h.fail_open_below,
    )
}

/// The address the probes of a family come from, when director.yaml names one.
pub fn probe_settings(gue_port: u16, src4: Option<IpAddr>, src6: Option<IpAddr>) -> ProbeSettings {
    ProbeSettings {
        gue_port,
        src_v4: src4,
        src_v6: src6,
        colocated: false,
    }
}
