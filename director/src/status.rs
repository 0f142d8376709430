//! `xdplb-director status`: the state file plus the pinned maps, as text or JSON.
//! Reads only: works while the daemon runs, after it stopped, and as a non-daemon process.

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::DirectorConfig;
use crate::counters::REASONS;
use crate::datapath::{Count, PinnedView, Slots};
use crate::state::State;

#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    pub id: u32,
    pub name: String,
    /// What the kernel holds now (from the table header), hex.
    pub version: String,
    pub checksum: String,
    pub rows: u32,
    pub width: u8,
    pub backends: usize,
    pub live: bool,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct BindStatus {
    pub bind: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct ReasonStatus {
    pub reason: &'static str,
    pub verdict: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub pin_dir: String,
    pub loaded: bool,
    pub daemon_pid: u32,
    pub source: String,
    pub interfaces: Vec<crate::state::Interface>,
    pub services: Vec<ServiceStatus>,
    pub binds: Vec<BindStatus>,
    pub reasons: Vec<ReasonStatus>,
    pub last_reload: Option<crate::state::Reload>,
    pub last_rejected: Option<crate::state::Rejected>,
    /// Reloads by result, since the state file was created.
    pub reloads: crate::state::ReloadCounts,
    /// Consul source only: connected, last contact, current and applied version, refusal.
    pub cluster: Option<crate::state::ClusterState>,
    /// Only when some service is health-checked: per service the overlay (fail-open,
    /// demoted backends, the published version and checksum beside the installed ones in
    /// `services`), per backend its health.
    pub health: Option<crate::health::HealthState>,
    /// Only with `announce:` in director.yaml: per VIP, announced or not and why, BIRD's
    /// control socket, the operator's drain.
    pub announce: Option<crate::announce::AnnounceState>,
    /// `health_view:` only: the view in Consul (key, last write, last error).
    pub health_view: Option<crate::health::publish::ViewStatus>,
}

/// Gather the status of the director configured by `cfg`.
pub fn gather(cfg: &DirectorConfig) -> Status {
    let mut st = State::read(&cfg.state_file()).unwrap_or_default();
    // A daemon that died without cleaning up (crash, SIGKILL) left its pid behind.
    if st.pid != 0 && !std::path::Path::new(&format!("/proc/{}", st.pid)).exists() {
        st.pid = 0;
    }
    let view = PinnedView::open(&cfg.pin_dir()).ok();
    // Only the slots the installed config uses: reading all 256 + 4096 per-CPU slots is most
    // of what a scrape would cost.
    let service_ids: Vec<u32> = st.services.iter().map(|s| s.id).collect();
    let bind_ids: Vec<u32> = st.ids.binds.values().copied().collect();
    let counters = view
        .as_ref()
        .map(|v| {
            v.counters_of(Slots::Only {
                services: &service_ids,
                binds: &bind_ids,
            })
        })
        .unwrap_or_default();
    let get = |v: &[Count], i: u32| v.get(i as usize).copied().unwrap_or_default();
    let services = st
        .services
        .iter()
        .map(|s| {
            let hdr = view.as_ref().and_then(|v| v.table_hdr(s.id));
            let c = get(&counters.services, s.id);
            ServiceStatus {
                id: s.id,
                name: s.name.clone(),
                version: format!("{:016x}", hdr.map(|h| h.version).unwrap_or(s.version)),
                checksum: format!("{:016x}", hdr.map(|h| h.checksum).unwrap_or(s.checksum)),
                rows: s.rows,
                width: s.width,
                backends: s.backends,
                live: hdr.is_some(),
                packets: c.packets,
                bytes: c.bytes,
            }
        })
        .collect();
    let binds = st
        .ids
        .binds
        .iter()
        .map(|(name, id)| {
            let c = get(&counters.binds, *id);
            BindStatus {
                bind: name.clone(),
                packets: c.packets,
                bytes: c.bytes,
            }
        })
        .collect();
    let reasons = REASONS
        .iter()
        .map(|(r, name, verdict, _)| {
            let c = get(&counters.reasons, r.0);
            ReasonStatus {
                reason: name,
                verdict,
                packets: c.packets,
                bytes: c.bytes,
            }
        })
        .collect();
    Status {
        pin_dir: cfg.pin_dir().display().to_string(),
        loaded: view.is_some(),
        daemon_pid: st.pid,
        source: st.source,
        interfaces: st.interfaces,
        services,
        binds,
        reasons,
        last_reload: st.last_reload,
        last_rejected: st.last_rejected,
        reloads: st.reloads,
        cluster: st.cluster,
        health: st.health,
        announce: cfg.announce.as_ref().map(|a| {
            let mut s = st.announce.unwrap_or_default();
            s.table = a.table;
            // Read now: the drain is the operator's file, in force even while no daemon runs.
            s.drained_since_ms = crate::announce::read_drain(&cfg.state_dir).map(|d| d.since_ms);
            if st.pid == 0 {
                // Nothing announces without a daemon: its shutdown (or the unit's
                // ExecStopPost after a crash) withdrew every token.
                for v in &mut s.vips {
                    v.token = None;
                    v.why_not = vec!["the daemon is not running".into()];
                }
                s.bird = crate::announce::probe_bird(&a.bird_socket);
            }
            s
        }),
        health_view: st.health_view,
    }
}

fn ago(t: u64) -> String {
    let now = crate::state::now();
    format!("{}s ago", now.saturating_sub(t))
}

impl Status {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("status serialises")
    }

    pub fn to_text(&self) -> String {
        let mut o = String::new();
        if !self.loaded {
            let _ = writeln!(
                o,
                "director: not loaded (nothing pinned under {})",
                self.pin_dir
            );
            return o;
        }
        let daemon = if self.daemon_pid > 0 {
            format!("pid {}", self.daemon_pid)
        } else {
            "not running".into()
        };
        let _ = writeln!(o, "director: loaded ({}), daemon {daemon}", self.pin_dir);
        let _ = writeln!(o, "source: {}", self.source);
        if let Some(c) = &self.cluster {
            let show = |v: Option<u64>| v.map_or("none".to_string(), |v| v.to_string());
            let _ = writeln!(
                o,
                "consul: {}, last contact {}",
                if c.connected {
                    "connected"
                } else {
                    "NOT CONNECTED"
                },
                c.last_contact.map_or("never".to_string(), ago)
            );
            let sync = match (c.current_version, c.applied_version) {
                (Some(a), Some(b)) if a == b => " (in sync)",
                (None, _) => "",
                _ => " (NOT IN SYNC)",
            };
            let _ = writeln!(
                o,
                "cluster version: current {}, applied {}{}{}",
                show(c.current_version),
                show(c.applied_version),
                c.applied_from
                    .as_deref()
                    .map(|f| format!(" from {f}"))
                    .unwrap_or_default(),
                sync
            );
            match &c.rejected {
                Some(r) => {
                    let _ = writeln!(o, "cluster version REFUSED: {}: {}", r.version, r.error);
                }
                None => {
                    let _ = writeln!(o, "cluster version refused: none");
                }
            }
            if let (false, Some(e)) = (c.connected, &c.last_error) {
                let _ = writeln!(o, "consul error: {e}");
            }
        }
        if self.interfaces.is_empty() {
            let _ = writeln!(o, "interfaces: none attached");
        }
        for i in &self.interfaces {
            let _ = writeln!(o, "interface {}: xdp {}", i.name, i.mode);
        }
        match &self.last_reload {
            Some(r) => {
                let _ = writeln!(
                    o,
                    "last reload: {} ({} swapped, {} us)",
                    ago(r.time),
                    r.swapped.len(),
                    r.took_us
                );
            }
            None => {
                let _ = writeln!(o, "last reload: never");
            }
        }
        match &self.last_rejected {
            Some(r) => {
                let _ = writeln!(o, "last rejected config ({}):", ago(r.time));
                for l in r.error.lines() {
                    let _ = writeln!(o, "  {l}");
                }
            }
            None => {
                let _ = writeln!(o, "last rejected config: none");
            }
        }
        let _ = writeln!(o, "services:");
        for s in &self.services {
            let _ = writeln!(
                o,
                "  {:<16} version {} checksum {} rows {} width {} backends {}{} packets {} bytes {}",
                s.name, s.version, s.checksum, s.rows, s.width, s.backends,
                if s.live { "" } else { " (NOT LIVE)" }, s.packets, s.bytes
            );
        }
        if let Some(h) = &self.health {
            let _ = writeln!(o, "health:");
            for (name, sh) in &h.services {
                let what = if sh.fail_open {
                    "FAIL-OPEN (too few healthy backends: health ignored)".to_string()
                } else if sh.demoted.is_empty() {
                    "all healthy".to_string()
                } else {
                    format!("demoting {}", sh.demoted.join(", "))
                };
                let _ = writeln!(
                    o,
                    "  {name}: {what}; published version {:016x} checksum {:016x}",
                    sh.published_version, sh.published_checksum
                );
                for (b, t) in h.backends.get(name).into_iter().flatten() {
                    let _ = write!(
                        o,
                        "    {b:<16} {:<9} since {}",
                        if t.healthy { "healthy" } else { "UNHEALTHY" },
                        ago(t.since)
                    );
                    if t.failures > 0 {
                        let _ = write!(o, ", {} failed in a row", t.failures);
                    } else {
                        let _ = write!(o, ", {} passed in a row", t.passes);
                    }
                    match &t.last_error {
                        Some(e) if !t.healthy || t.failures > 0 => {
                            let _ = writeln!(o, ": {e}");
                        }
                        _ => {
                            let _ = writeln!(o);
                        }
                    }
                }
            }
        }
        if let Some(a) = &self.announce {
            let bird = if a.bird.reachable {
                format!("bird answers on {}", a.bird.socket)
            } else {
                format!(
                    "BIRD NOT REACHABLE on {} ({}): routers hear nothing from this host; forwarding goes on",
                    a.bird.socket,
                    a.bird.error.as_deref().unwrap_or("no answer")
                )
            };
            let drain = match a.drained_since_ms {
                Some(ms) => format!(", DRAINED since {}", ago(ms / 1000)),
                None => String::new(),
            };
            let _ = writeln!(o, "announcements (table {}): {bird}{drain}", a.table);
            for v in &a.vips {
                let what = match v.token {
                    Some(crate::announce::Token::Announce) => "announced".to_string(),
                    Some(crate::announce::Token::Graceful) => {
                        "announced with GRACEFUL_SHUTDOWN".to_string()
                    }
                    None => "NOT ANNOUNCED".to_string(),
                };
                let why = if v.why_not.is_empty() {
                    String::new()
                } else {
                    format!(": {}", v.why_not.join("; "))
                };
                let _ = writeln!(
                    o,
                    "  {:<40} {what} ({}){why}",
                    v.vip.to_string(),
                    v.services.join(", ")
                );
            }
        }
        if let Some(v) = &self.health_view {
            let written = v.written_at.map_or("never written".to_string(), |t| {
                format!("written {}", ago(t))
            });
            match &v.last_error {
                None => {
                    let _ = writeln!(
                        o,
                        "health view: consul {} key {}: {written}",
                        v.consul, v.key
                    );
                }
                Some(e) => {
                    let _ = writeln!(
                        o,
                        "health view: consul {} key {}: NOT WRITTEN ({written}): {e}",
                        v.consul, v.key
                    );
                }
            }
        }
        let _ = writeln!(o, "binds:");
        for b in &self.binds {
            let _ = writeln!(
                o,
                "  {:<40} packets {} bytes {}",
                b.bind, b.packets, b.bytes
            );
        }
        let _ = writeln!(o, "not forwarded:");
        for r in &self.reasons {
            if r.packets > 0 {
                let _ = writeln!(
                    o,
                    "  {:<18} {:<4} packets {} bytes {}",
                    r.reason, r.verdict, r.packets, r.bytes
                );
            }
        }
        o
    }
}
