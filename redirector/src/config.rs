//! `/etc/xdplb/redirector.yaml`: the serde file shape, validated once into [`Config`].
//!
//! Later code never re-validates: a [`Config`] is always usable. Pure: no I/O except
//! [`Config::load`], which reads the file.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

/// Default UDP destination port of GUE, as GLB Director uses.
pub const DEFAULT_GUE_PORT: u16 = 19523;
/// Default bpffs directory; the redirector pins under `<bpffs_dir>/redirector`.
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/xdplb";
/// Default directory for the record of what `setup` changed (tmpfs: gone at reboot, like the
/// changes themselves).
pub const DEFAULT_STATE_DIR: &str = "/run/xdplb";
/// Default interface that carries the VIPs.
pub const DEFAULT_VIP_INTERFACE: &str = "lo";
/// Distinct `allowed_sources` per address family: `max_entries` of `allowed_v4`/`allowed_v6` in
/// `bpf/redirector.bpf.c`. Checked here so an oversized list is a config error (exit 78), not a
/// map update failing at every start.
pub const MAX_ALLOWED_SOURCES: usize = 1024;
/// Distinct `self_addresses`: `max_entries` of `self_addrs`.
pub const MAX_SELF_ADDRESSES: usize = 256;

/// Whether the kernel would accept `name` as an interface name (`dev_valid_name`).
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace())
}

/// The file as written. Unknown keys are errors: a typo must not silently do nothing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    interfaces: Vec<String>,
    #[serde(default)]
    gue_port: Option<u16>,
    allowed_sources: Vec<String>,
    #[serde(default)]
    self_addresses: Vec<IpAddr>,
    #[serde(default)]
    vips: Vec<IpAddr>,
    #[serde(default)]
    vip_interface: Option<String>,
    #[serde(default)]
    setup_on_run: bool,
    #[serde(default)]
    bpffs_dir: Option<PathBuf>,
    #[serde(default)]
    state_dir: Option<PathBuf>,
}

/// A validated redirector configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Interfaces whose tc ingress gets the program (where GUE from the directors arrives).
    pub interfaces: Vec<String>,
    /// UDP destination port of GUE.
    pub gue_port: u16,
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
}

/// A configuration problem, located in the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}:{column}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
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
        let at = |line: usize, column: usize, message: String| ConfigError {
            path: path.display().to_string(),
            line,
            column,
            message,
        };
        let file: FileConfig = serde_yaml::from_str(text).map_err(|e| {
            let (line, column, message) = common::yaml_error(&e);
            at(line, column, message)
        })?;
        // serde_yaml keeps no positions after deserializing: point at the key's line.
        let line_of = |key: &str| {
            text.lines()
                .position(|l| l.trim_start().starts_with(&format!("{key}:")))
                .map_or(1, |i| i + 1)
        };

        if file.interfaces.is_empty() {
            return Err(at(
                line_of("interfaces"),
                1,
                "interfaces: list at least one interface that receives GUE from the directors"
                    .into(),
            ));
        }
        if let Some(bad) = file.interfaces.iter().find(|i| !valid_ifname(i)) {
            return Err(at(
                line_of("interfaces"),
                1,
                format!("interfaces: `{bad}` is not an interface name"),
            ));
        }
        let mut allowed_sources = Vec::new();
        for d in &file.allowed_sources {
            allowed_sources.push(
                d.parse::<Cidr>()
                    .map_err(|m| at(line_of("allowed_sources"), 1, m))?,
            );
        }
        for (family, v4) in [("IPv4", true), ("IPv6", false)] {
            let distinct: HashSet<&Cidr> = allowed_sources
                .iter()
                .filter(|c| c.addr.is_ipv4() == v4)
                .collect();
            if distinct.len() > MAX_ALLOWED_SOURCES {
                return Err(at(
                    line_of("allowed_sources"),
                    1,
                    format!(
                        "allowed_sources: {} {family} entries, at most {MAX_ALLOWED_SOURCES} \
                         (use wider prefixes)",
                        distinct.len()
                    ),
                ));
            }
        }
        let distinct: HashSet<&IpAddr> = file.self_addresses.iter().collect();
        if distinct.len() > MAX_SELF_ADDRESSES {
            return Err(at(
                line_of("self_addresses"),
                1,
                format!(
                    "self_addresses: {} addresses, at most {MAX_SELF_ADDRESSES}",
                    distinct.len()
                ),
            ));
        }
        let gue_port = file.gue_port.unwrap_or(DEFAULT_GUE_PORT);
        if gue_port == 0 {
            return Err(at(line_of("gue_port"), 1, "gue_port: must not be 0".into()));
        }
        for v in &file.vips {
            if v.is_unspecified() || v.is_multicast() || v.is_loopback() {
                return Err(at(line_of("vips"), 1, format!("vips: {v} cannot be a VIP")));
            }
        }
        let vip_interface = file
            .vip_interface
            .unwrap_or_else(|| DEFAULT_VIP_INTERFACE.to_string());
        if !valid_ifname(&vip_interface) {
            return Err(at(
                line_of("vip_interface"),
                1,
                format!("vip_interface: `{vip_interface}` is not an interface name"),
            ));
        }
        for (key, dir) in [
            ("bpffs_dir", &file.bpffs_dir),
            ("state_dir", &file.state_dir),
        ] {
            if let Some(d) = dir.as_ref().filter(|d| !d.is_absolute()) {
                return Err(at(
                    line_of(key),
                    1,
                    format!("{key}: `{}` must be an absolute path", d.display()),
                ));
            }
        }
        Ok(Config {
            interfaces: file.interfaces,
            gue_port,
            allowed_sources,
            self_addresses: file.self_addresses,
            vips: file.vips,
            vip_interface,
            setup_on_run: file.setup_on_run,
            bpffs_dir: file.bpffs_dir.unwrap_or_else(|| DEFAULT_BPFFS_DIR.into()),
            state_dir: file.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
        })
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
                "r.yaml:1:1: interfaces:",
            ),
            (
                "interfaces: [e]\nallowed_sources: [10.0.0.1/24]\n",
                "r.yaml:2:1: `10.0.0.1/24` has host bits set",
            ),
            (
                "interfaces: [e]\nallowed_sources: [10.0.0.0/33]\n",
                "prefix length must be 0..=32",
            ),
            (
                "interfaces: [e]\nallowed_sources: [nope]\n",
                "`nope` is not an address",
            ),
            (
                "interfaces: [e]\nallowed_sources: []\nvipz: []\n",
                "r.yaml:3:1: unknown field `vipz`",
            ),
            (
                "interfaces: [e]\nallowed_sources: []\nvips: [127.0.0.1]\n",
                "r.yaml:3:1: vips: 127.0.0.1",
            ),
            (
                "interfaces: [e]\nallowed_sources: []\ngue_port: 0\n",
                "r.yaml:3:1: gue_port",
            ),
            (
                "allowed_sources: []\ninterfaces: [eth0, 'eth0:1']\n",
                "r.yaml:2:1: interfaces: `eth0:1` is not an interface name",
            ),
            (
                "interfaces: [averyverylongname]\nallowed_sources: []\n",
                "is not an interface name",
            ),
            (
                "interfaces: [e]\nallowed_sources: []\nvip_interface: ''\n",
                "r.yaml:3:1: vip_interface",
            ),
            (
                "interfaces: [e]\nallowed_sources: []\nbpffs_dir: bpf\n",
                "r.yaml:3:1: bpffs_dir: `bpf` must be an absolute path",
            ),
            (
                "interfaces: [e]\nallowed_sources: []\nstate_dir: run/x\n",
                "r.yaml:3:1: state_dir",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: got {e:?}, want {want:?}");
        }
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
            e.contains("r.yaml:2:1: allowed_sources: 1025 IPv4 entries, at most 1024"),
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
            e.contains("r.yaml:3:1: self_addresses: 257 addresses"),
            "{e}"
        );
    }
}
