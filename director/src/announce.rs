//! Route announcement: which VIPs this director asks the routers to send it, and the "route
//! tokens" that say so to the local BGP speaker (BIRD).
//!
//! A token is a `blackhole` route to the VIP in a routing table of its own (`announce.table`,
//! never looked up for forwarding: no rule points at it), written with an rtnetlink protocol
//! number that says how to announce it: `announce.protocol` plainly, `announce.graceful_protocol`
//! with the GRACEFUL_SHUTDOWN community (65535:0, RFC 8326). BIRD's kernel protocol learns the
//! table and its BGP protocols export what it learnt; docs/development/route-announcement.md
//! has the design and the bounds, docs/setup/bgp.md the BIRD side.
//!
//! This module owns: the `announce:` section of director.yaml, the per-VIP decision (pure:
//! [`decide`]), the persisted drain state, the token table (through `ip`), and what `status`
//! shows of all that. Must not do: touch BIRD's configuration or talk BGP itself.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tablegen::config::{Config, State as BackendState};
use tracing::{info, warn};
use yaml::{Checker, Node};

use crate::config::ConfigProblem;
use crate::health::{Key, Tracker};

/// The section's keys, in the order docs/setup/director.md lists them.
const FIELDS: &[&str] = &[
    "table",
    "protocol",
    "graceful_protocol",
    "drain_delay_ms",
    "bird_socket",
    "withdraw_when_refused",
];

/// Most milliseconds `drain_delay_ms` may be (one hour).
pub const DRAIN_DELAY_MAX_MS: u64 = 3_600_000;

/// `announce:` in director.yaml: present = this director announces its VIPs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// The routing table the tokens live in.
    pub table: u32,
    /// The rtnetlink protocol of a token announced plainly.
    pub protocol: u8,
    /// The rtnetlink protocol of a token announced with GRACEFUL_SHUTDOWN.
    pub graceful_protocol: u8,
    /// How long a drain announces with GRACEFUL_SHUTDOWN before it withdraws.
    pub drain_delay: Duration,
    /// BIRD's control socket: only looked at (can we connect?), for `status` and the log.
    pub bird_socket: PathBuf,
    /// A refused table source (the newest config or cluster version could not be installed)
    /// withdraws the VIPs of the services it holds.
    pub withdraw_when_refused: bool,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        AnnounceConfig {
            table: 200,
            protocol: 250,
            graceful_protocol: 251,
            drain_delay: Duration::from_secs(30),
            bird_socket: "/run/bird/bird.ctl".into(),
            withdraw_when_refused: true,
        }
    }
}

/// Reads the `announce:` section, recording every error at its position.
pub fn section(c: &mut Checker<'_, ConfigProblem>, n: &Node) -> Option<AnnounceConfig> {
    let f = c.fields(n, FIELDS, "announce", "`announce`")?;
    let mut a = AnnounceConfig::default();
    let mut ok = true;
    if let Some(v) = f.get("table") {
        // 0 and 253..=255 are the kernel's own (unspec, default, main, local).
        match c.uint(v, "announce.table", 1u32, 252u32) {
            Some(t) => a.table = t,
            None => ok = false,
        }
    }
    for (field, slot) in [
        ("protocol", &mut a.protocol),
        ("graceful_protocol", &mut a.graceful_protocol),
    ] {
        if let Some(v) = f.get(field) {
            // Below 5 are the kernel's (kernel, boot, static, ...); 255 is reserved.
            match c.uint(v, field, 5u8, 254u8) {
                Some(p) => *slot = p,
                None => ok = false,
            }
        }
    }
    if ok && a.protocol == a.graceful_protocol {
        let pos = f
            .get("graceful_protocol")
            .or(f.get("protocol"))
            .map(|v| v.start);
        c.err(
            pos.unwrap_or(n.start),
            ConfigProblem::SameProtocol {
                protocol: a.protocol,
            },
        );
        ok = false;
    }
    if let Some(v) = f.get("drain_delay_ms") {
        match c.uint(v, "drain_delay_ms", 0u64, DRAIN_DELAY_MAX_MS) {
            Some(ms) => a.drain_delay = Duration::from_millis(ms),
            None => ok = false,
        }
    }
    if let Some(v) = f.get("bird_socket") {
        match c.scalar(v, "bird_socket", "a path") {
            Some(s) if !s.trim().is_empty() => a.bird_socket = s.trim().into(),
            Some(_) => {
                c.err(
                    v.start,
                    ConfigProblem::EmptyPath {
                        field: "bird_socket",
                    },
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    if let Some(v) = f.get("withdraw_when_refused") {
        match c.boolean(v, "withdraw_when_refused") {
            Some(b) => a.withdraw_when_refused = b,
            None => ok = false,
        }
    }
    ok.then_some(a)
}

/// How a VIP is announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Token {
    /// Plainly: routers use this director.
    Announce,
    /// With GRACEFUL_SHUTDOWN: routers prefer the other directors, this one is going.
    Graceful,
}

/// The operator's drain, kept in `<state_dir>/director-drain.json` across restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// When it began, Unix milliseconds.
    pub since_ms: u64,
}

/// The drain file of a state directory.
pub fn drain_file(state_dir: &Path) -> PathBuf {
    state_dir.join("director-drain.json")
}

/// The drain in force, if any (an unreadable file counts as drained: the operator asked).
pub fn read_drain(state_dir: &Path) -> Option<Drain> {
    let text = std::fs::read_to_string(drain_file(state_dir)).ok()?;
    Some(serde_json::from_str(&text).unwrap_or(Drain { since_ms: 0 }))
}

/// Starts a drain (kept if one is already in force: its clock does not restart).
pub fn start_drain(state_dir: &Path) -> std::io::Result<Drain> {
    if let Some(d) = read_drain(state_dir) {
        return Ok(d);
    }
    let d = Drain { since_ms: now_ms() };
    let json = serde_json::to_vec(&d).expect("drain serialises");
    std::fs::create_dir_all(state_dir)?;
    daemon_support::write_atomic(&drain_file(state_dir), &json, 0o644)?;
    Ok(d)
}

/// Ends a drain; true if there was one.
pub fn end_drain(state_dir: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(drain_file(state_dir)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What the decision looks at besides the config: gathered by the daemon each time.
#[derive(Debug, Default)]
pub struct Inputs<'a> {
    /// The last loaded (published) config, if any.
    pub config: Option<&'a Config>,
    /// Services whose table is live in the kernel.
    pub live: BTreeSet<String>,
    /// Problems of the director as a whole (an interface down, XDP not attached): each
    /// withdraws every VIP.
    pub director: Vec<String>,
    /// The table source's newest version was refused (with why), when that withdraws.
    pub refused: Option<String>,
    /// Health by (service, backend).
    pub health: Option<&'a BTreeMap<Key, Tracker>>,
    /// The operator's drain and the configured delay, with the time now (Unix ms).
    pub drain: Option<Drain>,
    pub drain_delay: Duration,
    pub now_ms: u64,
}

/// One VIP: what the director announces and, when it does not, why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipState {
    pub vip: IpAddr,
    /// The services bound to it.
    pub services: Vec<String>,
    /// The token wanted (and, once published, in the table); `None`: withdrawn.
    pub token: Option<Token>,
    /// Why it is not announced plainly (empty when it is).
    pub why_not: Vec<String>,
}

/// Per VIP, announce or not and why: the VIP is announced when the director is sound (every
/// interface up with the program attached), every service bound to it has live tables (and
/// no refused newer version, when that withdraws), each checked service has at least its
/// `announce_min_healthy` healthy backends, and no drain is in force; a drain announces with
/// GRACEFUL_SHUTDOWN for `drain_delay`, then withdraws.
pub fn decide(inp: &Inputs<'_>) -> Vec<VipState> {
    let Some(config) = inp.config else {
        return Vec::new();
    };
    let mut by_vip: BTreeMap<IpAddr, Vec<&tablegen::config::Service>> = BTreeMap::new();
    for s in &config.services {
        let vips: BTreeSet<IpAddr> = s.binds.iter().map(|b| b.vip).collect();
        for v in vips {
            by_vip.entry(v).or_default().push(s);
        }
    }
    by_vip
        .into_iter()
        .map(|(vip, services)| {
            let mut why: Vec<String> = inp.director.clone();
            if let Some(r) = &inp.refused {
                why.push(format!("tables refused: {r}"));
            }
            for s in &services {
                if !inp.live.contains(&s.name) {
                    why.push(format!("service {}: no live table", s.name));
                }
                if let Some(h) = &s.health {
                    let healthy = s
                        .backends
                        .iter()
                        .filter(|b| matches!(b.state, BackendState::Active | BackendState::Filling))
                        .filter(|b| {
                            inp.health
                                .and_then(|v| v.get(&(s.name.clone(), b.name.clone())))
                                .is_none_or(|t| t.healthy)
                        })
                        .count();
                    if (healthy as u64) < u64::from(h.announce_min_healthy) {
                        why.push(format!(
                            "service {}: {healthy} healthy backend(s), announce_min_healthy is {}",
                            s.name, h.announce_min_healthy
                        ));
                    }
                }
            }
            let token = if !why.is_empty() {
                None
            } else if let Some(d) = inp.drain {
                let until = d.since_ms + inp.drain_delay.as_millis() as u64;
                if inp.now_ms < until {
                    why.push(format!(
                        "draining: graceful shutdown announced, withdrawn in {} ms",
                        until - inp.now_ms
                    ));
                    Some(Token::Graceful)
                } else {
                    why.push(
                        "drained (xdplb-director undrain-announcements brings it back)".into(),
                    );
                    None
                }
            } else {
                Some(Token::Announce)
            };
            VipState {
                vip,
                services: services.iter().map(|s| s.name.clone()).collect(),
                token,
                why_not: why,
            }
        })
        .collect()
}

/// When a drain in force next changes a decision (its delay runs out), if it does.
pub fn drain_deadline(drain: Option<Drain>, delay: Duration, now_ms: u64) -> Option<u64> {
    let d = drain?;
    let until = d.since_ms + delay.as_millis() as u64;
    (until > now_ms).then_some(until)
}

/// Whether BIRD answers on its control socket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BirdState {
    pub socket: String,
    pub reachable: bool,
    pub error: Option<String>,
}

/// Connects to BIRD's control socket (and hangs up): is a BGP speaker there to read the
/// tokens?
pub fn probe_bird(socket: &Path) -> BirdState {
    let r = std::os::unix::net::UnixStream::connect(socket);
    BirdState {
        socket: socket.display().to_string(),
        reachable: r.is_ok(),
        error: r.err().map(|e| e.to_string()),
    }
}

/// What `status` shows of announcement (kept in the state file).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceState {
    pub table: u32,
    pub bird: BirdState,
    /// The drain in force, Unix ms of its start.
    pub drained_since_ms: Option<u64>,
    pub vips: Vec<VipState>,
}

/// Errors writing the token table.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("running ip {args}")]
    Spawn {
        args: String,
        source: std::io::Error,
    },
    #[error("ip {args}: {stderr}")]
    Failed { args: String, stderr: String },
}

/// The token table as this daemon last wrote it.
#[derive(Debug)]
pub struct Tokens {
    cfg: AnnounceConfig,
    current: BTreeMap<IpAddr, Token>,
}

fn ip(args: &[String]) -> Result<(), TokenError> {
    ip_output(args).map(drop)
}

fn ip_output(args: &[String]) -> Result<String, TokenError> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| TokenError::Spawn {
            args: args.join(" "),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(TokenError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The tokens of `cfg`'s two protocols in its table, as `ip -j route show table <t>` lists
/// them (routes of other protocols are not ours and are left out).
fn parse_tokens(cfg: &AnnounceConfig, json: &str) -> BTreeMap<IpAddr, Token> {
    let routes: Vec<serde_json::Value> = serde_json::from_str(json).unwrap_or_default();
    let mut out = BTreeMap::new();
    for r in routes {
        let proto = r["protocol"].as_str().and_then(|p| p.parse::<u8>().ok());
        let token = match proto {
            Some(p) if p == cfg.protocol => Token::Announce,
            Some(p) if p == cfg.graceful_protocol => Token::Graceful,
            _ => continue,
        };
        let dst = r["dst"].as_str().unwrap_or_default();
        let dst = dst.split('/').next().unwrap_or_default();
        if let Ok(vip) = dst.parse::<IpAddr>() {
            out.insert(vip, token);
        }
    }
    out
}

fn prefix(vip: IpAddr) -> String {
    match vip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

fn fam(vip: IpAddr) -> &'static str {
    if vip.is_ipv4() {
        "-4"
    } else {
        "-6"
    }
}

/// Removes every token of both protocols from the table: what shutdown, a start and the
/// unit's ExecStopPost (`xdplb-director flush-announcements`) do.
pub fn flush(cfg: &AnnounceConfig) -> Result<(), TokenError> {
    for f in ["-4", "-6"] {
        for p in [cfg.protocol, cfg.graceful_protocol] {
            let args: Vec<String> = [
                f,
                "route",
                "flush",
                "table",
                &cfg.table.to_string(),
                "proto",
                &p.to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            match ip(&args) {
                // The kernel makes a table when its first route comes: none yet, none to flush.
                Err(TokenError::Failed { stderr, .. })
                    if stderr.contains("FIB table does not exist") => {}
                r => r?,
            }
        }
    }
    Ok(())
}

impl Tokens {
    /// Starts from an empty token table (whatever an earlier run left is flushed).
    pub fn new(cfg: AnnounceConfig) -> Result<Tokens, TokenError> {
        flush(&cfg)?;
        Ok(Tokens {
            cfg,
            current: BTreeMap::new(),
        })
    }

    /// Writes the tokens `want` asks for: replaced (a change of protocol is one replace, so
    /// BIRD sees an update, never a withdrawal in between) or deleted.
    pub fn publish(&mut self, want: &[VipState]) -> Vec<TokenError> {
        let mut errors = Vec::new();
        let wanted: BTreeMap<IpAddr, Token> = want
            .iter()
            .filter_map(|v| v.token.map(|t| (v.vip, t)))
            .collect();
        let table = self.cfg.table.to_string();
        for (vip, t) in &wanted {
            if self.current.get(vip) == Some(t) {
                continue;
            }
            let proto = match t {
                Token::Announce => self.cfg.protocol,
                Token::Graceful => self.cfg.graceful_protocol,
            }
            .to_string();
            let args: Vec<String> = [
                fam(*vip),
                "route",
                "replace",
                "blackhole",
                &prefix(*vip),
                "table",
                &table,
                "proto",
                &proto,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            match ip(&args) {
                Ok(()) => {
                    info!(vip = %vip, token = ?t, "vip announced");
                    self.current.insert(*vip, *t);
                }
                Err(e) => errors.push(e),
            }
        }
        let gone: Vec<IpAddr> = self
            .current
            .keys()
            .filter(|v| !wanted.contains_key(v))
            .copied()
            .collect();
        for vip in gone {
            let args: Vec<String> = [fam(vip), "route", "del", &prefix(vip), "table", &table]
                .iter()
                .map(|s| s.to_string())
                .collect();
            match ip(&args) {
                Ok(()) => {
                    let why = want
                        .iter()
                        .find(|v| v.vip == vip)
                        .map(|v| v.why_not.join("; "))
                        .unwrap_or_else(|| "no longer bound".into());
                    warn!(vip = %vip, why, "vip withdrawn");
                    self.current.remove(&vip);
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// Takes what the kernel's table holds as the current tokens, so the next
    /// [`Tokens::publish`] rewrites what someone else removed or changed (a stray
    /// `flush-announcements`, an operator's `ip route flush table`); true if it differed.
    pub fn resync(&mut self) -> Result<bool, TokenError> {
        let table = self.cfg.table.to_string();
        let mut kernel = BTreeMap::new();
        for f in ["-4", "-6"] {
            let args: Vec<String> = ["-j", f, "route", "show", "table", &table]
                .iter()
                .map(|s| s.to_string())
                .collect();
            match ip_output(&args) {
                Ok(json) => kernel.extend(parse_tokens(&self.cfg, &json)),
                // No token written yet: the kernel has no such table.
                Err(TokenError::Failed { stderr, .. })
                    if stderr.contains("FIB table does not exist") => {}
                Err(e) => return Err(e),
            }
        }
        let differs = kernel != self.current;
        self.current = kernel;
        Ok(differs)
    }

    /// Withdraws everything (daemon shutdown).
    pub fn withdraw_all(&mut self) -> Result<(), TokenError> {
        flush(&self.cfg)?;
        self.current.clear();
        Ok(())
    }
}

/// The daemon's side: the token table, the drain file, BIRD's socket, and the last decision.
#[derive(Debug)]
pub struct Announcer {
    cfg: AnnounceConfig,
    state_dir: PathBuf,
    tokens: Tokens,
    last: AnnounceState,
    resynced: std::time::Instant,
}

/// How often the daemon compares the token table with what it wrote (and rewrites what
/// differs): a token removed behind its back would otherwise stay withdrawn.
pub const RESYNC: Duration = Duration::from_secs(1);

/// How often the daemon looks again at what no event tells it (XDP attachment, BIRD's socket,
/// the drain file) while it announces.
pub const TICK: Duration = Duration::from_millis(200);

impl Announcer {
    /// Starts with an empty token table (see [`Tokens::new`]).
    pub fn new(cfg: AnnounceConfig, state_dir: &Path) -> Result<Announcer, TokenError> {
        let tokens = Tokens::new(cfg.clone())?;
        Ok(Announcer {
            last: AnnounceState {
                table: cfg.table,
                ..AnnounceState::default()
            },
            cfg,
            state_dir: state_dir.into(),
            tokens,
            resynced: std::time::Instant::now(),
        })
    }

    pub fn config(&self) -> &AnnounceConfig {
        &self.cfg
    }

    /// Decides for every VIP with `inp` (its drain and time filled in here), publishes what
    /// changed at once, and returns what `status` shows; `None` when nothing changed.
    pub fn update(&mut self, mut inp: Inputs<'_>) -> Option<AnnounceState> {
        inp.drain = read_drain(&self.state_dir);
        inp.drain_delay = self.cfg.drain_delay;
        inp.now_ms = now_ms();
        let mut vips = decide(&inp);
        if self.resynced.elapsed() >= RESYNC {
            self.resynced = std::time::Instant::now();
            match self.tokens.resync() {
                Ok(true) => warn!(
                    table = self.cfg.table,
                    "route tokens changed behind the daemon's back: writing what it decided again"
                ),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %daemon_support::error_chain(&e), "reading the route tokens failed")
                }
            }
        }
        for e in self.tokens.publish(&vips) {
            tracing::error!(error = %daemon_support::error_chain(&e), "writing a route token failed");
        }
        // What is in the table is what status shows.
        for v in &mut vips {
            v.token = self.tokens.current.get(&v.vip).copied();
        }
        let bird = probe_bird(&self.cfg.bird_socket);
        if bird.reachable != self.last.bird.reachable || self.last.bird.socket.is_empty() {
            if bird.reachable {
                info!(socket = %bird.socket, "bird control socket answers");
            } else {
                warn!(
                    socket = %bird.socket,
                    error = bird.error.as_deref().unwrap_or(""),
                    "bird not reachable on its control socket: routers may not hear the announcements; forwarding goes on"
                );
            }
        }
        let next = AnnounceState {
            table: self.cfg.table,
            bird,
            drained_since_ms: inp.drain.map(|d| d.since_ms),
            vips,
        };
        // The countdown in a draining VIP's reason changes every time: compare without it.
        let same = {
            let strip = |s: &AnnounceState| {
                let mut s = s.clone();
                for v in &mut s.vips {
                    v.why_not.retain(|w| !w.starts_with("draining"));
                }
                s
            };
            strip(&next) == strip(&self.last)
        };
        self.last = next.clone();
        (!same).then_some(next)
    }

    /// When the drain in force next changes a decision, Unix ms.
    pub fn deadline_ms(&self) -> Option<u64> {
        drain_deadline(read_drain(&self.state_dir), self.cfg.drain_delay, now_ms())
    }

    /// Withdraws everything: the daemon is stopping.
    pub fn shutdown(&mut self) {
        match self.tokens.withdraw_all() {
            Ok(()) => info!("every vip withdrawn: the daemon stops"),
            Err(e) => {
                tracing::error!(error = %daemon_support::error_chain(&e), "withdrawing at shutdown failed")
            }
        }
    }
}

/// The director as a whole: each configured interface up and with an XDP program attached.
pub fn director_problems(interfaces: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for i in interfaces {
        match crate::host::link_running(i) {
            Ok(true) => {}
            Ok(false) => out.push(format!("interface {i} is down")),
            Err(e) => out.push(format!("interface {i}: {e}")),
        }
        match crate::datapath::xdp_attached(i) {
            Ok(true) => {}
            Ok(false) => out.push(format!("interface {i}: no xdp program attached")),
            Err(e) => out.push(format!("interface {i}: xdp attachment unknown: {e}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(Path::new("b.yaml"), text).unwrap()
    }

    const TWO: &str = "services:\n  - name: web\n    hash_key: 000102030405060708090a0b0c0d0e0f\n    seed: 0f0e0d0c0b0a09080706050403020100\n    binds: [ { vip: 10.0.0.1, proto: tcp, port: 80 } ]\n    health: { checks: [ { type: tcp, port: 80 } ], announce_min_healthy: 2 }\n    backends:\n      - { name: a, address: 10.1.0.1 }\n      - { name: b, address: 10.1.0.2 }\n  - name: dns\n    hash_key: 000102030405060708090a0b0c0d0e0f\n    seed: 0f0e0d0c0b0a09080706050403020100\n    binds: [ { vip: 10.0.0.2, proto: udp, port: 53 } ]\n    backends:\n      - { name: a, address: 10.1.0.1 }\n";

    fn inputs(c: &Config) -> Inputs<'_> {
        Inputs {
            config: Some(c),
            live: c.services.iter().map(|s| s.name.clone()).collect(),
            drain_delay: Duration::from_secs(10),
            now_ms: 1_000_000,
            ..Inputs::default()
        }
    }

    #[test]
    fn the_token_table_is_read_back_with_only_our_protocols() {
        let cfg = AnnounceConfig::default();
        let v4 = r#"[{"type":"blackhole","dst":"10.100.0.1","protocol":"250","flags":[]},
            {"type":"blackhole","dst":"10.100.0.2/32","protocol":"251","flags":[]},
            {"type":"blackhole","dst":"10.100.0.3","protocol":"boot","flags":[]},
            {"type":"blackhole","dst":"10.100.0.4","protocol":"12","flags":[]}]"#;
        let got = parse_tokens(&cfg, v4);
        let want: BTreeMap<IpAddr, Token> = [
            ("10.100.0.1".parse().unwrap(), Token::Announce),
            ("10.100.0.2".parse().unwrap(), Token::Graceful),
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want);
        let v6 = r#"[{"type":"blackhole","dst":"fd00:100::1","dev":"lo","protocol":"251","metric":1024,"flags":[],"pref":"medium"}]"#;
        assert_eq!(
            parse_tokens(&cfg, v6).into_iter().collect::<Vec<_>>(),
            vec![("fd00:100::1".parse().unwrap(), Token::Graceful)]
        );
        assert!(parse_tokens(&cfg, "").is_empty());
    }

    #[test]
    fn everything_sound_announces_every_vip() {
        let c = config(TWO);
        let d = decide(&inputs(&c));
        assert_eq!(d.len(), 2);
        assert!(d
            .iter()
            .all(|v| v.token == Some(Token::Announce) && v.why_not.is_empty()));
    }

    #[test]
    fn too_few_healthy_withdraws_that_vip_alone() {
        let c = config(TWO);
        let mut view = BTreeMap::new();
        view.insert(("web".into(), "a".into()), Tracker::new(false, 0));
        let mut i = inputs(&c);
        i.health = Some(&view);
        let d = decide(&i);
        let web = d.iter().find(|v| v.services == ["web"]).unwrap();
        assert_eq!(web.token, None);
        assert!(web.why_not[0].contains("1 healthy backend(s), announce_min_healthy is 2"));
        let dns = d.iter().find(|v| v.services == ["dns"]).unwrap();
        assert_eq!(dns.token, Some(Token::Announce));
    }

    #[test]
    fn director_problems_and_missing_tables_withdraw() {
        let c = config(TWO);
        let mut i = inputs(&c);
        i.director = vec!["eth0: xdp not attached".into()];
        assert!(decide(&i).iter().all(|v| v.token.is_none()));
        let mut i = inputs(&c);
        i.live.remove("dns");
        let d = decide(&i);
        assert_eq!(d.iter().filter(|v| v.token.is_none()).count(), 1);
    }

    #[test]
    fn a_drain_is_graceful_for_its_delay_then_withdraws() {
        let c = config(TWO);
        let mut i = inputs(&c);
        i.drain = Some(Drain {
            since_ms: i.now_ms - 4_000,
        });
        assert!(decide(&i).iter().all(|v| v.token == Some(Token::Graceful)));
        assert_eq!(
            drain_deadline(i.drain, i.drain_delay, i.now_ms),
            Some(i.now_ms + 6_000)
        );
        i.now_ms += 6_000;
        assert!(decide(&i).iter().all(|v| v.token.is_none()));
        assert_eq!(drain_deadline(i.drain, i.drain_delay, i.now_ms), None);
    }

    #[test]
    fn section_errors_have_positions() {
        let e = crate::DirectorConfig::parse(
            Path::new("/x/d.yaml"),
            "announce:\n  table: 254\n  protocol: 2\n  drain_delay_ms: x\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/x/d.yaml:2:10:"), "{e}");
        assert!(e.contains("/x/d.yaml:3:13:"), "{e}");
        assert!(e.contains("/x/d.yaml:4:19:"), "{e}");
        let e = crate::DirectorConfig::parse(
            Path::new("/x/d.yaml"),
            "announce: { protocol: 240, graceful_protocol: 240 }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/x/d.yaml:1:47:"), "{e}");
        let c = crate::DirectorConfig::parse(
            Path::new("/x/d.yaml"),
            "announce: { table: 100, drain_delay_ms: 500 }\n",
        )
        .unwrap();
        let a = c.announce.unwrap();
        assert_eq!((a.table, a.drain_delay), (100, Duration::from_millis(500)));
    }
}
