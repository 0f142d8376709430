//! `director.yaml`: the file struct (serde) validated once into [`DirectorConfig`].
//!
//! Later code never re-validates. The operator reference is docs/setup/director.md; keep
//! the two in step. Must not do: touch the kernel.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;

pub const DEFAULT_PATH: &str = "/etc/xdplb/director.yaml";
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/xdplb";
pub const DEFAULT_BACKENDS: &str = "/etc/xdplb/backends.yaml";
pub const DEFAULT_STATE_DIR: &str = "/run/xdplb";
pub const DEFAULT_GUE_PORT: u16 = 19523;

/// XDP attachment mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic where the driver refuses it.
    Auto,
    Native,
    Generic,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    interfaces: Vec<String>,
    #[serde(default = "default_mode")]
    xdp_mode: XdpMode,
    #[serde(default)]
    encap_source_v4: Option<Ipv4Addr>,
    #[serde(default)]
    encap_source_v6: Option<Ipv6Addr>,
    #[serde(default = "default_gue_port")]
    gue_port: u16,
    #[serde(default = "default_bpffs")]
    bpffs_dir: PathBuf,
    #[serde(default = "default_backends")]
    backends: PathBuf,
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    #[serde(default = "default_true")]
    kernel_fallback: bool,
    #[serde(default = "default_debounce")]
    reload_debounce_ms: u64,
    #[serde(default = "default_nexthop_ttl")]
    nexthop_ttl_ms: u32,
    #[serde(default)]
    source: SourceKind,
    /// Also read by `tablegen cluster` (publishing from an operator's machine), so it may be
    /// present with `source: file`; only validated when the director follows Consul.
    #[serde(default)]
    consul: Option<cluster::ConsulSection>,
    #[serde(default)]
    publish: bool,
}

/// `source:` in director.yaml.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SourceKind {
    #[default]
    File,
    Consul,
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

fn default_mode() -> XdpMode {
    XdpMode::Auto
}
fn default_gue_port() -> u16 {
    DEFAULT_GUE_PORT
}
fn default_bpffs() -> PathBuf {
    DEFAULT_BPFFS_DIR.into()
}
fn default_backends() -> PathBuf {
    DEFAULT_BACKENDS.into()
}
fn default_state_dir() -> PathBuf {
    DEFAULT_STATE_DIR.into()
}
fn default_true() -> bool {
    true
}
fn default_nexthop_ttl() -> u32 {
    100
}
fn default_debounce() -> u64 {
    2
}

/// The validated director configuration.
#[derive(Clone, Debug)]
pub struct DirectorConfig {
    /// Interfaces to attach to; empty = load and pin, attach nowhere.
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpMode,
    pub encap_source_v4: Option<Ipv4Addr>,
    pub encap_source_v6: Option<Ipv6Addr>,
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
    pub fn parse(path: &Path, text: &str) -> Result<DirectorConfig, ConfigError> {
        let invalid = |line: usize, column: usize, message: String| ConfigError::Invalid {
            path: path.into(),
            line,
            column,
            message,
        };
        // An empty file (all comments, as shipped) is the all-defaults config.
        let file: File = if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim().starts_with('#'))
        {
            serde_yaml::from_str("{}").expect("empty mapping parses")
        } else {
            serde_yaml::from_str(text).map_err(|e| {
                let (line, column, message) = common::yaml_error(&e);
                invalid(line, column, message)
            })?
        };
        if file.gue_port == 0 {
            return Err(invalid(1, 1, "gue_port must not be 0".into()));
        }
        for (i, name) in file.interfaces.iter().enumerate() {
            if name.is_empty() || name.len() > 15 || name.contains('/') {
                return Err(invalid(
                    1,
                    1,
                    format!("interfaces[{i}]: `{name}` is not an interface name"),
                ));
            }
        }
        if file.nexthop_ttl_ms > 60_000 {
            return Err(invalid(1, 1, "nexthop_ttl_ms must be at most 60000".into()));
        }
        if file.reload_debounce_ms > 10_000 {
            return Err(invalid(
                1,
                1,
                "reload_debounce_ms must be at most 10000".into(),
            ));
        }
        let source = match (file.source, file.consul) {
            (SourceKind::File, _) => Source::File,
            (SourceKind::Consul, None) => {
                return Err(invalid(
                    1,
                    1,
                    "source: consul needs a consul: section (address, prefix, ...)".into(),
                ))
            }
            (SourceKind::Consul, Some(section)) => Source::Consul(Box::new(
                section
                    .validate()
                    .map_err(|e| invalid(1, 1, cluster::error_chain(&e)))?,
            )),
        };
        if file.publish && matches!(source, Source::File) {
            return Err(invalid(
                1,
                1,
                "publish: true needs source: consul (it publishes backends to the cluster)".into(),
            ));
        }
        let base = path.parent().unwrap_or(Path::new("/"));
        let backends = if file.backends.is_absolute() {
            file.backends
        } else {
            base.join(file.backends)
        };
        Ok(DirectorConfig {
            interfaces: file.interfaces,
            xdp_mode: file.xdp_mode,
            encap_source_v4: file.encap_source_v4,
            encap_source_v6: file.encap_source_v6,
            gue_port: file.gue_port,
            bpffs_dir: file.bpffs_dir,
            backends,
            state_dir: file.state_dir,
            kernel_fallback: file.kernel_fallback,
            reload_debounce: Duration::from_millis(file.reload_debounce_ms),
            nexthop_ttl_ms: file.nexthop_ttl_ms,
            source,
            publish: file.publish,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_only_is_defaults_and_attaches_nothing() {
        let c =
            DirectorConfig::parse(Path::new("/etc/xdplb/director.yaml"), "# nothing\n\n").unwrap();
        assert!(c.interfaces.is_empty());
        assert_eq!(c.gue_port, DEFAULT_GUE_PORT);
        assert_eq!(c.backends, PathBuf::from(DEFAULT_BACKENDS));
        assert_eq!(c.xdp_mode, XdpMode::Auto);
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
