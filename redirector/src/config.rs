//! `/etc/xdplb/redirector.yaml`: read with positions (the `yaml` crate) and validated once
//! into [`Config`].
//!
//! Every field is checked where it stands and every error is reported at once, as
//! `file:line:col: message`. Later code never re-validates: a [`Config`] is always usable.
//! Pure: no I/O except [`Config::load`], which reads the file.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use daemon_support::{defaults, valid_ifname};
use yaml::{Checker, Node, Problem};

use crate::skel::types::redir_limit as Limit;

/// Default interface that carries the VIPs.
pub const DEFAULT_VIP_INTERFACE: &str = "lo";
/// Distinct `allowed_sources` per address family: `max_entries` of `allowed_v4`/`allowed_v6`
/// (`REDIR_MAX_ALLOWED` of abi.h's `enum redir_limit`). Checked here so an oversized list is a
/// config error (exit 78), not a map update failing at every start.
pub const MAX_ALLOWED_SOURCES: usize = Limit::REDIR_MAX_ALLOWED.0 as usize;
/// Distinct `self_addresses`: `max_entries` of `self_addrs` (`REDIR_MAX_SELF_ADDRS`).
pub const MAX_SELF_ADDRESSES: usize = Limit::REDIR_MAX_SELF_ADDRS.0 as usize;

/// Most milliseconds `nexthop_ttl_ms` may be (as the director's).
pub const NEXTHOP_TTL_MAX_MS: u32 = 60_000;

/// The keys of redirector.yaml, in the order docs/setup/redirector.md lists them. Unknown keys
/// are errors: a typo must not silently do nothing.
const FIELDS: &[&str] = &[
    "interfaces",
    "gue_port",
    "nexthop_ttl_ms",
    "allowed_sources",
    "self_addresses",
    "vips",
    "vip_interface",
    "setup_on_run",
    "bpffs_dir",
    "state_dir",
    "metrics",
];

/// A validated redirector configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Interfaces whose tc ingress gets the program (where GUE from the directors arrives).
    pub interfaces: Vec<String>,
    /// UDP destination port of GUE.
    pub gue_port: u16,
    /// How long the program reuses a next hop from `bpf_fib_lookup` per CPU (ms; 0 = never);
    /// the bound for a route or neighbour change the daemon did not report.
    pub nexthop_ttl_ms: u32,
    /// Source ranges GUE is accepted from: the directors and the other backends (second-chance
    /// packets come from the backend that passed them on). Everything else is dropped and
    /// counted.
    pub allowed_sources: Vec<Cidr>,
    /// Addresses of this host that a hop list may name besides the one a packet was sent to.
    pub self_addresses: Vec<IpAddr>,
    /// Service addresses this backend serves (put on `vip_interface` by `setup`).
    pub vips: Vec<IpAddr>,
    /// Interface that carries the VIPs: `lo`, or a dummy interface `setup` creates.
    pub vip_interface: String,
    /// Whether `run` performs `setup` before attaching.
    pub setup_on_run: bool,
    /// bpffs directory; pins live in `<bpffs_dir>/redirector`.
    pub bpffs_dir: PathBuf,
    /// Where `setup` records what it changed, so `detach` can reverse exactly that.
    pub state_dir: PathBuf,
    /// Where `GET /metrics` is served; `None` (the default): no endpoint.
    pub metrics: Option<std::net::SocketAddr>,
}

/// Every problem of a redirector.yaml, each at its position, one `file:line:col: message` per
/// line.
pub type ConfigError = yaml::Errors<ConfigProblem>;

/// What can be wrong in redirector.yaml besides what any YAML config can get wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    #[error(transparent)]
    Yaml(#[from] Problem),
    #[error("interfaces: list at least one interface that receives GUE from the directors")]
    NoInterfaces,
    #[error("{field}: `{name}` is not an interface name; use the kernel's name (1 to 15 characters, no `/`, `:` or white space)")]
    BadInterface { field: &'static str, name: String },
    /// A prefix `Cidr::from_str` refused; its message says why.
    #[error("{0}")]
    BadCidr(String),
    #[error("allowed_sources: {count} {family} entries, at most {MAX_ALLOWED_SOURCES} (use wider prefixes)")]
    TooManySources { count: usize, family: &'static str },
    #[error("self_addresses: {count} addresses, at most {MAX_SELF_ADDRESSES}")]
    TooManySelfAddresses { count: usize },
    #[error("{field}: `{text}` is not an IP address; write an IPv4 address like 192.0.2.10 or an IPv6 address like 2001:db8::10")]
    BadAddress { field: &'static str, text: String },
    #[error("vips: {addr} cannot be a VIP (unspecified, multicast or loopback)")]
    BadVip { addr: IpAddr },
    #[error("metrics: {0}")]
    Metrics(daemon_support::metrics::ListenError),
    #[error("{field}: `{path}` must be an absolute path")]
    RelativePath { field: &'static str, path: String },
}

/// An address prefix, e.g. `10.0.0.0/24`; a bare address means the single host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an address or prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: prefix length must be 0..={max}"))?,
        };
        let cidr = Cidr { addr, prefix };
        // Host bits set is nearly always a typo for another network: refuse it.
        if cidr.network() != addr {
            return Err(format!(
                "`{s}` has host bits set; did you mean {}/{prefix}?",
                cidr.network()
            ));
        }
        Ok(cidr)
    }
}

impl Cidr {
    /// The address with the host bits cleared.
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Config {
    /// Parse and validate `text`, the content of `path` (used in messages only).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut c = Checker::new(path);
        let config = match c.document(text) {
            Some(root) => check(&mut c, &root),
            // An empty file misses its required fields, like any file without them.
            None if c.is_clean() => {
                let empty = Node {
                    kind: yaml::NodeKind::Map(Vec::new()),
                    start: yaml::Pos {
                        line: 1,
                        column: 1,
                        offset: 0,
                    },
                    end: yaml::Pos::default(),
                };
                check(&mut c, &empty)
            }
            None => None,
        };
        c.finish()?;
        Ok(config.expect("a config whenever no error was recorded"))
    }

    /// Read and validate the file at `path`.
    pub fn load(path: &Path) -> Result<Config, crate::Error> {
        let text = std::fs::read_to_string(path).map_err(|source| crate::Error::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Config::parse(path, &text)?)
    }

    /// `<bpffs_dir>/redirector`.
    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs_dir.join("redirector")
    }
}

/// Check every field of the document, recording each error; the config if there was none.
fn check(c: &mut Checker<'_, ConfigProblem>, root: &Node) -> Option<Config> {
    let f = c.fields(root, FIELDS, "redirector.yaml", "redirector.yaml")?;

    let interfaces = c.required(&f, "interfaces").and_then(|n| {
        let items = c.scalar_list(n, "interfaces", "an interface name")?;
        if n.as_seq().is_some_and(<[Node]>::is_empty) {
            c.err(n.start, ConfigProblem::NoInterfaces);
            return None;
        }
        let mut ok = true;
        for (name, node) in &items {
            if !valid_ifname(name) {
                c.err(
                    node.start,
                    ConfigProblem::BadInterface {
                        field: "interfaces",
                        name: name.to_string(),
                    },
                );
                ok = false;
            }
        }
        ok.then(|| items.iter().map(|(s, _)| s.to_string()).collect::<Vec<_>>())
    });

    let gue_port = match f.get("gue_port") {
        None => Some(defaults::GUE_PORT),
        Some(n) => c.uint(n, "gue_port", 1u16, u16::MAX),
    };

    let nexthop_ttl_ms = match f.get("nexthop_ttl_ms") {
        None => Some(crate::datapath::DEFAULT_NEXTHOP_TTL_MS),
        Some(n) => c.uint(n, "nexthop_ttl_ms", 0u32, NEXTHOP_TTL_MAX_MS),
    };

    let allowed_sources = c.required(&f, "allowed_sources").and_then(|n| {
        let items = c.scalar_list(n, "allowed_sources", "an address or prefix")?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (text, node) in items {
            match text.parse::<Cidr>() {
                Ok(cidr) => out.push(cidr),
                Err(m) => {
                    c.err(node.start, ConfigProblem::BadCidr(m));
                    ok = false;
                }
            }
        }
        for (family, v4) in [("IPv4", true), ("IPv6", false)] {
            let distinct: HashSet<&Cidr> = out.iter().filter(|c| c.addr.is_ipv4() == v4).collect();
            if distinct.len() > MAX_ALLOWED_SOURCES {
                c.err(
                    n.start,
                    ConfigProblem::TooManySources {
                        count: distinct.len(),
                        family,
                    },
                );
                ok = false;
            }
        }
        ok.then_some(out)
    });

    let self_addresses = match f.get("self_addresses") {
        None => Some(Vec::new()),
        Some(n) => addresses(c, n, "self_addresses").and_then(|v| {
            let distinct: HashSet<&IpAddr> = v.iter().map(|(a, _)| a).collect();
            if distinct.len() > MAX_SELF_ADDRESSES {
                c.err(
                    n.start,
                    ConfigProblem::TooManySelfAddresses {
                        count: distinct.len(),
                    },
                );
                return None;
            }
            Some(v.into_iter().map(|(a, _)| a).collect::<Vec<_>>())
        }),
    };

    let vips = match f.get("vips") {
        None => Some(Vec::new()),
        Some(n) => addresses(c, n, "vips").and_then(|v| {
            let mut ok = true;
            for (addr, node) in &v {
                if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() {
                    c.err(node.start, ConfigProblem::BadVip { addr: *addr });
                    ok = false;
                }
            }
            ok.then(|| v.into_iter().map(|(a, _)| a).collect::<Vec<_>>())
        }),
    };

    let vip_interface = match f.get("vip_interface") {
        None => Some(DEFAULT_VIP_INTERFACE.to_string()),
        Some(n) => c
            .scalar(n, "vip_interface", "an interface name")
            .and_then(|name| {
                if valid_ifname(name) {
                    Some(name.to_string())
                } else {
                    c.err(
                        n.start,
                        ConfigProblem::BadInterface {
                            field: "vip_interface",
                            name: name.to_string(),
                        },
                    );
                    None
                }
            }),
    };

    let setup_on_run = match f.get("setup_on_run") {
        None => Some(false),
        Some(n) => c.boolean(n, "setup_on_run"),
    };

    let metrics = match f.get("metrics") {
        None => Some(None),
        Some(n) => match c.scalar(n, "metrics", "an address and port") {
            None => None,
            Some(t) => match daemon_support::metrics::parse_listen(t) {
                Ok(a) => Some(Some(a)),
                Err(e) => {
                    c.err(n.start, ConfigProblem::Metrics(e));
                    None
                }
            },
        },
    };
    let mut dir = |field: &'static str, default: &str| match f.get(field) {
        None => Some(PathBuf::from(default)),
        Some(n) => c.scalar(n, field, "an absolute path").and_then(|s| {
            if Path::new(s).is_absolute() {
                Some(PathBuf::from(s))
            } else {
                c.err(
                    n.start,
                    ConfigProblem::RelativePath {
                        field,
                        path: s.to_string(),
                    },
                );
                None
            }
        }),
    };
    let bpffs_dir = dir("bpffs_dir", defaults::BPFFS_DIR);
    let state_dir = dir("state_dir", defaults::STATE_DIR);

    Some(Config {
        interfaces: interfaces?,
        gue_port: gue_port?,
        nexthop_ttl_ms: nexthop_ttl_ms?,
        allowed_sources: allowed_sources?,
        self_addresses: self_addresses?,
        vips: vips?,
        vip_interface: vip_interface?,
        setup_on_run: setup_on_run?,
        bpffs_dir: bpffs_dir?,
        state_dir: state_dir?,
        metrics: metrics?,
    })
}

/// The IP addresses of a list, each with its node; an item that is not one is reported and
/// left out, so the caller still checks the others.
fn addresses<'n>(
    c: &mut Checker<'_, ConfigProblem>,
    n: &'n Node,
    field: &'static str,
) -> Option<Vec<(IpAddr, &'n Node)>> {
    let items = c.scalar_list(n, field, "an IP address")?;
    let mut out = Vec::with_capacity(items.len());
    for (text, node) in items {
        match text.trim().parse::<IpAddr>() {
            Ok(a) => out.push((a, node)),
            Err(_) => c.err(
                node.start,
                ConfigProblem::BadAddress {
                    field,
                    text: text.to_string(),
                },
            ),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("r.yaml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c =
            parse("interfaces: [eth0]\nallowed_sources: [10.0.0.0/24, 'fd00::/64', 192.0.2.7]\n")
                .unwrap();
        assert_eq!(c.gue_port, 19523);
        assert_eq!(c.nexthop_ttl_ms, 100);
        assert_eq!(c.vip_interface, "lo");
        assert_eq!(c.pin_dir(), PathBuf::from("/sys/fs/bpf/xdplb/redirector"));
        assert_eq!(c.allowed_sources[2].prefix, 32);
        assert_eq!(c.allowed_sources[1].to_string(), "fd00::/64");
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        for (text, want) in [
            (
                "interfaces: []\nallowed_sources: []\n",
                "r.yaml:1:13: interfaces: list at least one",
            ),
            (
                "interfaces: [e]\nallowed_sources: [10.0.0.1/24]\n",
                "r.yaml:2:19: `10.0.0.1/24` has host bits set",
            ),
            (
                "interfaces: [e]\nallowed_sources: [10.0.0.0/33]\n",
                "r.yaml:2:19: `10.0.0.0/33`: prefix length must be 0..=32",
            ),
            (
                "interfaces: [e]\nallowed_sources: [nope]\n",
                "r.yaml:2:19: `nope` is not an address",
            ),
            (
                "interfaces: [e]\nallowed_sources: []\nvipz: []\n",
                "r.yaml:3:1: unknown field `vipz` in redirector.yaml; expected one of: interfaces,",
            ),
            (
                "interfaces: [e]\nallowed_sources: []\nvipz: []\n",
                "metrics (did you mean `vips`?)",
            ),
            (
                "interfaces: [e]\nallowed_sources: []\nvips: [127.0.0.1]\n",
                "r.yaml:3:8: vips: 127.0.0.1 cannot be a VIP",
            ),
            (
                "interfaces: [e]\nallowed_sources: []\ngue_port: 0\n",
                "r.yaml:3:11: `gue_port` must be a whole number from 1 to 65535, found `0`",
            ),
            (
                "allowed_sources: []\ninterfaces: [eth0, 'eth0:1']\n",
                "r.yaml:2:20: interfaces: `eth0:1` is not an interface name",
            ),
            (
                "interfaces: [averyverylongname]\nallowed_sources: []\n",
                "r.yaml:1:14: interfaces: `averyverylongname` is not an interface name",
            ),
            (
                "interfaces: [e]\nallowed_sources: []\nvip_interface: ''\n",
                "r.yaml:3:16: vip_interface: `` is not an interface name",
            ),
            (
                "interfaces: [e]\nallowed_sources: []\nbpffs_dir: bpf\n",
                "r.yaml:3:12: bpffs_dir: `bpf` must be an absolute path",
            ),
            (
                "interfaces: [e]\nallowed_sources: []\nstate_dir: run/x\n",
                "r.yaml:3:12: state_dir: `run/x` must be an absolute path",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: got {e:?}, want {want:?}");
        }
    }

    #[test]
    fn every_error_is_reported_at_once_at_its_own_position() {
        let e = parse(
            "interfaces: [eth0, 'a/b']\nallowed_sources: [10.0.0.1/24, fd00::/64, x]\nvips: [0.0.0.0]\nsetup_on_run: yes\n",
        )
        .unwrap_err();
        let lines: Vec<&str> = e.lines().map(|l| l.split(": ").next().unwrap()).collect();
        assert_eq!(
            lines,
            [
                "r.yaml:1:20",
                "r.yaml:2:19",
                "r.yaml:2:43",
                "r.yaml:3:8",
                "r.yaml:4:15"
            ],
            "{e}"
        );
    }

    #[test]
    fn lists_must_fit_the_maps() {
        let v4 = |n: usize| {
            (0..n)
                .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Duplicates count once; the other family has its own room.
        let fits = format!(
            "interfaces: [e]\nallowed_sources: [{}, {}, 'fd00::/64']\n",
            v4(MAX_ALLOWED_SOURCES),
            v4(1)
        );
        assert_eq!(parse(&fits).unwrap().allowed_sources.len(), 1026);
        let e = parse(&format!(
            "interfaces: [e]\nallowed_sources: [{}]\n",
            v4(MAX_ALLOWED_SOURCES + 1)
        ))
        .unwrap_err();
        assert!(
            e.contains("r.yaml:2:18: allowed_sources: 1025 IPv4 entries, at most 1024"),
            "{e}"
        );
        let addrs = (0..=MAX_SELF_ADDRESSES)
            .map(|i| format!("10.1.{}.{}", i / 256, i % 256))
            .collect::<Vec<_>>()
            .join(", ");
        let e = parse(&format!(
            "interfaces: [e]\nallowed_sources: []\nself_addresses: [{addrs}]\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("r.yaml:3:17: self_addresses: 257 addresses"),
            "{e}"
        );
    }
}
