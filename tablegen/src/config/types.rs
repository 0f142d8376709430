//! The typed, validated `backends.yaml`: [`Config`], its [`Service`]s, their [`Bind`]s and
//! [`Backend`]s, and the limits validation holds them to.
//!
//! Values of these types only come out of [`Config::parse`] (in `validate`), so every
//! invariant listed on [`Service`] holds wherever they are used.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::hash::HashFields;

/// Smallest and largest `table_bits`: 256 rows is the least that still spreads a pool of a
/// few backends evenly; 2^20 rows (4 MiB of entries per hop) is the most a director map is
/// sized for.
pub const TABLE_BITS_MIN: u8 = 8;
pub const TABLE_BITS_MAX: u8 = 20;
pub const TABLE_BITS_DEFAULT: u8 = 16;
/// Hops per row: 2 is GLB's primary + secondary; 4 bounds the GUE header at 16 bytes of hops.
pub const HOPS_MIN: u8 = 2;
pub const HOPS_MAX: u8 = 4;
pub const HOPS_DEFAULT: u8 = 2;
/// Weights are relative; the cap keeps `weight` far from float precision limits in the score.
pub const WEIGHT_MAX: u32 = 1_000_000;

/// A validated config: every service's fields are in range and consistent (see [`Service`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub services: Vec<Service>,
}

/// One service: binds (where traffic arrives) and a pool of backends (where it goes).
///
/// Invariants after validation: `name` non-empty and unique in the config;
/// `table_bits` in `TABLE_BITS_MIN..=TABLE_BITS_MAX`; `hops` in `HOPS_MIN..=HOPS_MAX`;
/// backend names and addresses unique in the service; all backend addresses of one family;
/// at most `hops - 1` backends filling or draining; no bind overlaps another bind anywhere in
/// the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    /// The flow-hash key (secret: knowing it lets an attacker aim flows at one backend).
    pub hash_key: [u8; 16],
    /// Seeds the table's rendezvous scores; changing it reshuffles every row.
    pub seed: [u8; 16],
    pub table_bits: u8,
    pub hops: u8,
    pub hash_fields: HashFields,
    pub binds: Vec<Bind>,
    pub backends: Vec<Backend>,
    /// How directors check the backends (`None`: not checked, every backend counts as
    /// healthy). A director's local view: it never changes this table or its checksums, and
    /// it is not part of the service's version.
    pub health: Option<Health>,
    /// UDP flows get a second chance as TCP flows do: a backend keeps a datagram only if a
    /// connected UDP socket there owns its flow (docs/development/second-chance.md). Off by
    /// default: a server answering from one unconnected socket (DNS, syslog) has no such
    /// socket, so its datagrams would all make the round of the row first.
    pub udp_second_chance: bool,
}

impl Service {
    /// Number of rows, `2^table_bits`.
    pub fn rows(&self) -> u32 {
        1u32 << self.table_bits
    }

    /// The index of the backend called `name`.
    pub fn backend_index(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.name == name)
    }

    /// The bind that matches a packet, if any.
    pub fn matches(&self, proto: Proto, vip: IpAddr, port: u16) -> bool {
        self.binds.iter().any(|b| {
            b.proto == proto && b.vip == vip && (b.port_first..=b.port_last).contains(&port)
        })
    }
}

/// Where a service receives traffic: a VIP, a protocol and a port range (inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bind {
    pub vip: IpAddr,
    pub proto: Proto,
    pub port_first: u16,
    pub port_last: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A real server. Its identity for hashing is its `name`: renaming a backend moves its rows,
/// changing its address does not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub name: String,
    pub address: IpAddr,
    pub weight: u32,
    pub state: State,
}

/// A backend's state (docs/development/table-algorithm.md: filling and draining are the
/// transitions). The discriminants are part of the table file format and of the version hash:
/// never renumber them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Takes new flows.
    Active = 0,
    /// Takes new flows like `Active`, but counts as "in transition" (being added).
    Filling = 1,
    /// Keeps its established flows through second chance, takes no new ones.
    Draining = 2,
    /// Left out of the table.
    Inactive = 3,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Filling => "filling",
            State::Draining => "draining",
            State::Inactive => "inactive",
        }
    }

    /// Whether the backend appears in the table at all.
    pub fn eligible(self) -> bool {
        self != State::Inactive
    }

    /// Filling and draining count against the `hops - 1` transition limit.
    pub fn in_transition(self) -> bool {
        matches!(self, State::Filling | State::Draining)
    }

    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "active" => State::Active,
            "filling" => State::Filling,
            "draining" => State::Draining,
            "inactive" => State::Inactive,
            _ => return None,
        })
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A non-fatal finding: the config is valid but probably not what was meant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub service: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "service `{}`: {}", self.service, self.message)
    }
}

impl Config {
    /// Valid but suspicious: a service with no eligible backend (its table is empty and the
    /// director drops its traffic) or with no bind (it receives nothing).
    pub fn warnings(&self) -> Vec<Warning> {
        let mut out = Vec::new();
        for s in &self.services {
            if !s.backends.iter().any(|b| b.state.eligible()) {
                out.push(Warning {
                    service: s.name.clone(),
                    message: "no active, filling or draining backend: the table is empty and traffic to this service is dropped".into(),
                });
            }
            if s.binds.is_empty() {
                out.push(Warning {
                    service: s.name.clone(),
                    message: "no binds: this service receives no traffic".into(),
                });
            }
        }
        out
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// Health checking of a service's backends: the top-level `health:` block gives every
/// service's defaults, a service's own `health:` overrides them field by field (its `checks`
/// replace the defaults' list; `checks: []` turns checking off for the service).
///
/// Invariants after validation: `timeout < interval`; `rise`, `fall` in `1..=HEALTH_COUNT_MAX`;
/// `jitter_percent` and `fail_open_below` in `0..=100`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Health {
    pub interval: Duration,
    /// For one probe of one check.
    pub timeout: Duration,
    /// Consecutive passes that make an unhealthy backend healthy.
    pub rise: u32,
    /// Consecutive failures that make a healthy backend unhealthy.
    pub fall: u32,
    /// Each interval is stretched or shrunk at random by up to this share, so probes to many
    /// backends do not fire together.
    pub jitter_percent: u8,
    /// At most one change of the service's installed table for health per hold time: a
    /// flapping backend is batched.
    pub hold: Duration,
    /// Fewer healthy backends than this share (percent) of those taking new flows, and health
    /// is ignored for the service (fail open): the likelier fault is the checker's own network.
    pub fail_open_below: u8,
    /// A director announces the service's VIPs (BGP) only while at least this many of its
    /// backends taking new flows are healthy by its own checks (0: health never withdraws).
    pub announce_min_healthy: u32,
    /// All must pass for a probe round to pass.
    pub checks: Vec<HealthCheck>,
}

pub const HEALTH_INTERVAL_DEFAULT: Duration = Duration::from_secs(2);
pub const HEALTH_TIMEOUT_DEFAULT: Duration = Duration::from_secs(1);
pub const HEALTH_RISE_DEFAULT: u32 = 3;
pub const HEALTH_FALL_DEFAULT: u32 = 2;
pub const HEALTH_JITTER_DEFAULT: u8 = 10;
pub const HEALTH_HOLD_DEFAULT: Duration = Duration::from_secs(10);
pub const HEALTH_FAIL_OPEN_DEFAULT: u8 = 50;
pub const HEALTH_COUNT_MAX: u32 = 100;
pub const HEALTH_ANNOUNCE_MIN_DEFAULT: u32 = 1;
pub const HEALTH_ANNOUNCE_MIN_MAX: u32 = 65_535;

/// One check of a backend.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HealthCheck {
    /// A TCP connection to the backend's own address is accepted.
    Tcp { port: u16 },
    /// `GET path` on the backend's own address answers with a status in `expect` (any 2xx
    /// when empty); `host` is the Host header (default: the address).
    Http {
        port: u16,
        path: String,
        host: Option<String>,
        expect: Vec<u16>,
    },
    /// A SYN to `vip:port` sent to the backend through the tunnel, as client traffic goes,
    /// answered by the backend directly: proves the redirector, the VIP on the backend and the
    /// listener.
    Gue { vip: IpAddr, port: u16 },
}

impl HealthCheck {
    /// `tcp:80`, `http:8080/healthz`, `gue:10.100.0.1:80`.
    pub fn describe(&self) -> String {
        match self {
            HealthCheck::Tcp { port } => format!("tcp:{port}"),
            HealthCheck::Http { port, path, .. } => format!("http:{port}{path}"),
            HealthCheck::Gue { vip, port } => {
                format!("gue:{}", std::net::SocketAddr::new(*vip, *port))
            }
        }
    }
}
