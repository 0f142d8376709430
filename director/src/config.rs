//! `director.yaml`: read with positions (the `yaml` crate) and validated once into
//! [`DirectorConfig`].
//!
//! Every field is checked where it stands and every error is reported at once, as
//! `file:line:col: message`; later code never re-validates. The operator reference is
//! docs/setup/director.md; keep the two in step. Must not do: touch the kernel.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use daemon_support::{defaults, valid_ifname};
use serde::Deserialize;
use yaml::{Checker, Node, Problem};

use crate::error::ConfigError;

/// Most milliseconds `nexthop_ttl_ms` and `reload_debounce_ms` may be.
pub const NEXTHOP_TTL_MAX_MS: u32 = 60_000;
pub const RELOAD_DEBOUNCE_MAX_MS: u64 = 10_000;

/// XDP attachment mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic where the driver refuses it.
    Auto,
    Native,
    Generic,
}

/// The top-level keys of director.yaml, in the order docs/setup/director.md lists them.
const FIELDS: &[&str] = &[
    "interfaces",
    "xdp_mode",
    "encap_source_v4",
    "encap_source_v6",
    "colocated",
    "gue_port",
    "bpffs_dir",
    "backends",
    "state_dir",
    "kernel_fallback",
    "reload_debounce_ms",
    "nexthop_ttl_ms",
    "source",
    "consul",
    "publish",
    "announce",
    "health_view",
    "metrics",
];

/// The fields of `health_view:`.
const HEALTH_VIEW_FIELDS: &[&str] = &["director", "ttl_s"];
/// Bounds of `health_view.ttl_s` (Consul takes session TTLs of 10 s to 24 h).
pub const HEALTH_VIEW_TTL_S: (u64, u64) = (10, 3600);

/// What can be wrong in director.yaml besides what any YAML config can get wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    #[error(transparent)]
    Yaml(#[from] Problem),
    #[error("`{name}` is not an interface name; use the kernel's name (1 to 15 characters, no `/`, `:` or white space)")]
    BadInterface { name: String },
    #[error("interface `{name}` is listed twice; keep one")]
    DuplicateInterface { name: String },
    #[error("`{field}`: `{text}` is not an {family} address")]
    BadAddress {
        field: &'static str,
        text: String,
        family: &'static str,
    },
    #[error("`{field}` must not be empty")]
    EmptyPath { field: &'static str },
    #[error("source: consul needs a consul: section (address, prefix, ...)")]
    ConsulWithoutSection,
    #[error("publish: true needs source: consul (it publishes backends to the cluster)")]
    PublishWithoutConsul,
    #[error("colocated: true needs encap_source_v4 and/or encap_source_v6: this host's own backend addresses, as backends.yaml lists them")]
    ColocatedWithoutSource,
    #[error("`protocol` and `graceful_protocol` are both {protocol}; the two kinds of route token need two protocol numbers")]
    SameProtocol { protocol: u8 },
    #[error("health_view needs a consul: section (address, prefix, ...): it writes there")]
    HealthViewWithoutConsul,
    #[error("director name `{name}` is not usable as a Consul key: use 1 to 128 letters, digits, `.`, `_` or `-`")]
    BadDirectorName { name: String },
    #[error("metrics: {0}")]
    Metrics(daemon_support::metrics::ListenError),
    /// The `consul:` section's own check (`cluster::ConsulSection::validate`).
    #[error("{0}")]
    Consul(String),
}

/// Where the director takes its tables from.
#[derive(Clone, Debug)]
pub enum Source {
    /// `backends` on disk, watched.
    File,
    /// The `current` version of a Consul cluster (docs/development/cluster-sync.md), verified
    /// before it is swapped.
    Consul(Box<cluster::ConsulConfig>),
}

/// The validated director configuration.
#[derive(Clone, Debug)]
pub struct DirectorConfig {
    /// Interfaces to attach to; empty = load and pin, attach nowhere.
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpMode,
    pub encap_source_v4: Option<Ipv4Addr>,
    pub encap_source_v6: Option<Ipv6Addr>,
    /// `colocated:`: this host is also a backend, whose addresses are the encap sources; a
    /// row whose primary is one of them goes to this host's own stack (docs/setup/colocated.md).
    pub colocated: bool,
    pub gue_port: u16,
    pub bpffs_dir: PathBuf,
    /// backends.yaml, resolved against director.yaml's directory if relative.
    pub backends: PathBuf,
    pub state_dir: PathBuf,
    /// Set forwarding / accept_local / send_redirects on attached interfaces, so the kernel
    /// can finish packets the XDP program hands to it (unresolved neighbour, too big).
    pub kernel_fallback: bool,
    pub reload_debounce: Duration,
    /// How long the program reuses a next hop (route + neighbour) per backend and CPU; 0 =
    /// look it up for every packet.
    pub nexthop_ttl_ms: u32,
    /// `source:` (and, for Consul, the validated `consul:` section).
    pub source: Source,
    /// `source: consul` only: also publish `backends` (watched) to the cluster when it
    /// changes (`Store::publish_if_changed`).
    pub publish: bool,
    /// `announce:`: announce the VIPs through the local BGP speaker (route tokens).
    pub announce: Option<crate::announce::AnnounceConfig>,
    /// `health_view:`: write this director's health view to Consul (off by default).
    pub health_view: Option<HealthViewConfig>,
    /// Where `GET /metrics` is served; `None` (the default): no endpoint.
    pub metrics: Option<std::net::SocketAddr>,
}

/// `health_view:` of director.yaml: where and as whom the director writes its health view
/// (`cluster::health`).
#[derive(Clone, Debug)]
pub struct HealthViewConfig {
    /// This director's name in the view (default: the host name).
    pub director: String,
    /// The session TTL: the view disappears this long (up to twice this: Consul's grace)
    /// after the director stops renewing it.
    pub ttl: Duration,
    /// The `consul:` section, validated.
    pub consul: cluster::ConsulConfig,
}

/// A director name usable as one Consul key segment.
fn valid_director_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// This host's name, for `health_view.director`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl DirectorConfig {
    /// Read and validate `path`.
    pub fn load(path: &Path) -> Result<DirectorConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validate `text` read from `path` (the path is used for messages and relative paths).
    /// An empty file (all comments, as shipped) is the all-defaults config.
    pub fn parse(path: &Path, text: &str) -> Result<DirectorConfig, ConfigError> {
        let mut c = Checker::new(path);
        let root = c.document(text);
        let config = match &root {
            Some(root) => check(&mut c, path, root),
            None => defaults(path, None),
        };
        c.finish()?;
        Ok(config.expect("a config whenever no error was recorded"))
    }

    /// Where this director's objects are pinned.
    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs_dir.join("director")
    }

    /// The program's runtime settings.
    pub fn settings(&self) -> crate::datapath::Settings {
        crate::datapath::Settings {
            src4: self.encap_source_v4,
            src6: self.encap_source_v6,
            colocated: self.colocated,
            gue_port: self.gue_port,
            nexthop_ttl_ms: self.nexthop_ttl_ms,
        }
    }

    /// The state file `status` reads.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("director-state.json")
    }

    /// The sysctls the daemon changed, with their earlier values (`host::SysctlLog`).
    pub fn sysctl_log(&self) -> PathBuf {
        self.state_dir.join("director-sysctls.json")
    }
}

/// The all-defaults config, with `backends` resolved against director.yaml's directory.
fn defaults(path: &Path, source: Option<Source>) -> Option<DirectorConfig> {
    Some(DirectorConfig {
        interfaces: Vec::new(),
        xdp_mode: XdpMode::Auto,
        encap_source_v4: None,
        encap_source_v6: None,
        colocated: false,
        gue_port: defaults::GUE_PORT,
        bpffs_dir: defaults::BPFFS_DIR.into(),
        backends: resolve(path, defaults::BACKENDS.into()),
        state_dir: defaults::STATE_DIR.into(),
        kernel_fallback: true,
        reload_debounce: Duration::from_millis(2),
        nexthop_ttl_ms: 100,
        source: source.unwrap_or(Source::File),
        publish: false,
        announce: None,
        health_view: None,
        metrics: None,
    })
}

fn resolve(path: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        path.parent().unwrap_or(Path::new("/")).join(p)
    }
}

/// Check every field of the document, recording each error; the config if there was none.
fn check(c: &mut Checker<'_, ConfigProblem>, path: &Path, root: &Node) -> Option<DirectorConfig> {
    let f = c.fields(root, FIELDS, "director.yaml", "director.yaml")?;
    let mut cfg = defaults(path, None)?;
    let mut ok = true;
    let mut set = |ok_field: bool| ok &= ok_field;

    if let Some(n) = f.get("interfaces") {
        match interfaces(c, n) {
            Some(v) => cfg.interfaces = v,
            None => set(false),
        }
    }
    if let Some(n) = f.get("xdp_mode") {
        match c.one_of(n, "xdp_mode", &["auto", "native", "generic"]) {
            Some(i) => cfg.xdp_mode = [XdpMode::Auto, XdpMode::Native, XdpMode::Generic][i],
            None => set(false),
        }
    }
    if let Some(n) = f.get("encap_source_v4") {
        match address::<Ipv4Addr>(c, n, "encap_source_v4", "IPv4") {
            Some(a) => cfg.encap_source_v4 = Some(a),
            None => set(false),
        }
    }
    if let Some(n) = f.get("encap_source_v6") {
        match address::<Ipv6Addr>(c, n, "encap_source_v6", "IPv6") {
            Some(a) => cfg.encap_source_v6 = Some(a),
            None => set(false),
        }
    }
    if let Some(n) = f.get("colocated") {
        match c.boolean(n, "colocated") {
            Some(b) => cfg.colocated = b,
            None => set(false),
        }
    }
    if cfg.colocated && f.get("encap_source_v4").is_none() && f.get("encap_source_v6").is_none() {
        c.err(
            f.key_pos("colocated"),
            ConfigProblem::ColocatedWithoutSource,
        );
    }
    if let Some(n) = f.get("gue_port") {
        match c.uint(n, "gue_port", 1u16, u16::MAX) {
            Some(p) => cfg.gue_port = p,
            None => set(false),
        }
    }
    for (field, slot) in [
        ("bpffs_dir", &mut cfg.bpffs_dir),
        ("state_dir", &mut cfg.state_dir),
    ] {
        if let Some(n) = f.get(field) {
            match path_field(c, n, field) {
                Some(p) => *slot = p,
                None => set(false),
            }
        }
    }
    if let Some(n) = f.get("backends") {
        match path_field(c, n, "backends") {
            Some(p) => cfg.backends = resolve(path, p),
            None => set(false),
        }
    }
    if let Some(n) = f.get("kernel_fallback") {
        match c.boolean(n, "kernel_fallback") {
            Some(b) => cfg.kernel_fallback = b,
            None => set(false),
        }
    }
    if let Some(n) = f.get("reload_debounce_ms") {
        match c.uint(n, "reload_debounce_ms", 0u64, RELOAD_DEBOUNCE_MAX_MS) {
            Some(ms) => cfg.reload_debounce = Duration::from_millis(ms),
            None => set(false),
        }
    }
    if let Some(n) = f.get("nexthop_ttl_ms") {
        match c.uint(n, "nexthop_ttl_ms", 0u32, NEXTHOP_TTL_MAX_MS) {
            Some(ms) => cfg.nexthop_ttl_ms = ms,
            None => set(false),
        }
    }
    if let Some(n) = f.get("metrics") {
        match c.scalar(n, "metrics", "an address and port") {
            Some(t) => match daemon_support::metrics::parse_listen(t) {
                Ok(a) => cfg.metrics = Some(a),
                Err(e) => c.err(n.start, ConfigProblem::Metrics(e)),
            },
            None => set(false),
        }
    }
    if let Some(n) = f.get("publish") {
        match c.boolean(n, "publish") {
            Some(b) => cfg.publish = b,
            None => set(false),
        }
    }
    if let Some(n) = f.get("announce") {
        match crate::announce::section(c, n) {
            Some(a) => cfg.announce = Some(a),
            None => set(false),
        }
    }
    // `health_view:` is completed below, once the `consul:` section is known.
    let mut view: Option<(String, u64)> = None;
    if let Some(n) = f.get("health_view") {
        match c.fields(n, HEALTH_VIEW_FIELDS, "health_view", "health_view") {
            None => set(false),
            Some(hf) => {
                let mut name = Some(host_name());
                if let Some(dn) = hf.get("director") {
                    name = c.scalar(dn, "director", "a name").map(str::to_string);
                }
                let ttl = match hf.get("ttl_s") {
                    None => Some(15),
                    Some(tn) => c.uint(tn, "ttl_s", HEALTH_VIEW_TTL_S.0, HEALTH_VIEW_TTL_S.1),
                };
                let name = match name {
                    Some(name) if !valid_director_name(&name) => {
                        c.err(
                            hf.get("director").map_or(n.start, |d| d.start),
                            ConfigProblem::BadDirectorName { name },
                        );
                        None
                    }
                    other => other,
                };
                match (name, ttl) {
                    (Some(name), Some(ttl)) => view = Some((name, ttl)),
                    _ => set(false),
                }
            }
        }
    }
    // Also read by `tablegen cluster` (publishing from an operator's machine), so the section
    // may be present with `source: file`; it is always checked for shape, and validated (which
    // reads the token file) only when the director follows Consul.
    let section = f
        .get("consul")
        .map(|n| (cluster::ConsulSection::from_node(c, n), n));
    if section.as_ref().is_some_and(|(s, _)| s.is_none()) {
        set(false);
    }
    let consul = match f.get("source") {
        None => false,
        Some(n) => match c.one_of(n, "source", &["file", "consul"]) {
            Some(i) => i == 1,
            None => {
                set(false);
                false
            }
        },
    };
    // Validated (the token file read) once, when something uses it.
    let mut validated: Option<cluster::ConsulConfig> = None;
    if consul || view.is_some() {
        match &section {
            None if consul => c.err(f.key_pos("source"), ConfigProblem::ConsulWithoutSection),
            None => c.err(
                f.key_pos("health_view"),
                ConfigProblem::HealthViewWithoutConsul,
            ),
            Some((None, _)) => {}
            Some((Some(s), n)) => match s.clone().validate() {
                Ok(cc) => validated = Some(cc),
                Err(e) => c.err(
                    consul_field_pos(n, e.field()),
                    ConfigProblem::Consul(daemon_support::error_chain(&e)),
                ),
            },
        }
    }
    if consul {
        if let Some(cc) = &validated {
            cfg.source = Source::Consul(Box::new(cc.clone()));
        }
    } else if cfg.publish {
        c.err(f.key_pos("publish"), ConfigProblem::PublishWithoutConsul);
    }
    if let (Some((director, ttl)), Some(cc)) = (view, validated) {
        cfg.health_view = Some(HealthViewConfig {
            director,
            ttl: Duration::from_secs(ttl),
            consul: cc,
        });
    }
    (ok && c.is_clean()).then_some(cfg)
}

/// Where `field` of the `consul:` section is (its value), or the section itself.
fn consul_field_pos(section: &Node, field: &str) -> yaml::Pos {
    section
        .as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_scalar() == Some(field)))
        .map_or(section.start, |(_, v)| v.start)
}

fn interfaces(c: &mut Checker<'_, ConfigProblem>, n: &Node) -> Option<Vec<String>> {
    let items = c.scalar_list(n, "interfaces", "an interface name")?;
    let mut out: Vec<String> = Vec::new();
    let mut ok = true;
    for (name, node) in items {
        if !valid_ifname(name) {
            c.err(
                node.start,
                ConfigProblem::BadInterface { name: name.into() },
            );
            ok = false;
        } else if out.iter().any(|o| o == name) {
            c.err(
                node.start,
                ConfigProblem::DuplicateInterface { name: name.into() },
            );
            ok = false;
        } else {
            out.push(name.into());
        }
    }
    ok.then_some(out)
}

fn address<A: std::str::FromStr>(
    c: &mut Checker<'_, ConfigProblem>,
    n: &Node,
    field: &'static str,
    family: &'static str,
) -> Option<A> {
    let s = c.scalar(n, field, "an IP address")?;
    let a = s.trim().parse::<A>().ok();
    if a.is_none() {
        c.err(
            n.start,
            ConfigProblem::BadAddress {
                field,
                text: s.into(),
                family,
            },
        );
    }
    a
}

fn path_field(
    c: &mut Checker<'_, ConfigProblem>,
    n: &Node,
    field: &'static str,
) -> Option<PathBuf> {
    let s = c.scalar(n, field, "a path")?;
    if s.trim().is_empty() {
        c.err(n.start, ConfigProblem::EmptyPath { field });
        return None;
    }
    Some(PathBuf::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_only_is_defaults_and_attaches_nothing() {
        let c =
            DirectorConfig::parse(Path::new("/etc/xdplb/director.yaml"), "# nothing\n\n").unwrap();
        assert!(c.interfaces.is_empty());
        assert_eq!(c.gue_port, defaults::GUE_PORT);
        assert_eq!(c.backends, PathBuf::from(defaults::BACKENDS));
        assert_eq!(c.xdp_mode, XdpMode::Auto);
    }

    #[test]
    fn colocated_needs_this_hosts_backend_address() {
        let e = DirectorConfig::parse(Path::new("/x/d.yaml"), "gue_port: 19523\ncolocated: true\n")
            .unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("/x/d.yaml:2:1: colocated: true needs encap_source_v4"),
            "{s}"
        );
        let e =
            DirectorConfig::parse(Path::new("/x/d.yaml"), "colocated: yes please\n").unwrap_err();
        assert!(e.to_string().starts_with("/x/d.yaml:1:"), "{e}");
        let c = DirectorConfig::parse(
            Path::new("/x/d.yaml"),
            "colocated: true\nencap_source_v6: \"fd00::11\"\n",
        )
        .unwrap();
        assert!(c.colocated && c.settings().colocated);
        let c =
            DirectorConfig::parse(Path::new("/x/d.yaml"), "encap_source_v4: 10.0.0.1\n").unwrap();
        assert!(!c.colocated && !c.settings().colocated);
    }

    #[test]
    fn errors_carry_line_and_column() {
        let e = DirectorConfig::parse(Path::new("/x/d.yaml"), "interfaces: [eth0]\ngue_prot: 1\n")
            .unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("/x/d.yaml:2:1: "), "{s}");
        let e = DirectorConfig::parse(Path::new("/x/d.yaml"), "encap_source_v4: 10.0.0.300\n")
            .unwrap_err();
        assert!(e.to_string().starts_with("/x/d.yaml:1:"), "{e}");
    }

    #[test]
    fn shipped_example_is_valid_and_attaches_nothing() {
        let text = include_str!("../../etc/director.yaml");
        let c = DirectorConfig::parse(Path::new("/etc/xdplb/director.yaml"), text).unwrap();
        assert!(c.interfaces.is_empty());
        // Uncommenting every example line gives a valid config too.
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.split_once(": ").is_some_and(|(k, _)| {
                    k.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                })
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let c = DirectorConfig::parse(Path::new("/etc/xdplb/director.yaml"), &uncommented)
            .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        assert_eq!(c.interfaces, vec!["eth0".to_string()]);
        assert_eq!(c.nexthop_ttl_ms, 100);
    }

    #[test]
    fn source_defaults_to_file_and_consul_needs_its_section() {
        let c = DirectorConfig::parse(Path::new("/x/d.yaml"), "interfaces: []\n").unwrap();
        assert!(matches!(c.source, Source::File));
        // A consul: section alone (for tablegen cluster) keeps the file source.
        let c = DirectorConfig::parse(
            Path::new("/x/d.yaml"),
            "consul: { address: http://127.0.0.1:8500, prefix: xdplb/a }\n",
        )
        .unwrap();
        assert!(matches!(c.source, Source::File));
        let e = DirectorConfig::parse(Path::new("/x/d.yaml"), "publish: true\n").unwrap_err();
        assert!(e.to_string().contains("needs source: consul"), "{e}");
        let e = DirectorConfig::parse(Path::new("/x/d.yaml"), "source: consul\n").unwrap_err();
        assert!(e.to_string().contains("consul: section"), "{e}");
        let e = DirectorConfig::parse(
            Path::new("/x/d.yaml"),
            "source: consul\nconsul: { address: ftp://x, prefix: a }\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("consul.address"), "{e}");
        let c = DirectorConfig::parse(
            Path::new("/x/d.yaml"),
            "source: consul\nconsul:\n  address: http://127.0.0.1:8500\n  prefix: xdplb/a\n  state_file: /tmp/s.json\n",
        )
        .unwrap();
        match c.source {
            Source::Consul(cc) => {
                assert_eq!(cc.prefix, "xdplb/a");
                assert_eq!(cc.state_file, PathBuf::from("/tmp/s.json"));
            }
            Source::File => panic!("expected consul"),
        }
    }

    #[test]
    fn relative_backends_path_is_next_to_the_file() {
        let c = DirectorConfig::parse(Path::new("/x/d.yaml"), "backends: b.yaml\n").unwrap();
        assert_eq!(c.backends, PathBuf::from("/x/b.yaml"));
    }
}
