//! The director library's error types: each variant says what was being done, and to what.

use std::io;
use std::path::PathBuf;

/// Errors of the data path (BPF object, maps, attachment).
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the XDP program: {0}")]
    Load(#[source] libbpf_rs::Error),
    #[error("reusing pinned map {path}: {source}")]
    ReusePin {
        path: PathBuf,
        source: libbpf_rs::Error,
    },
    #[error("pinning {path}: {source}")]
    Pin { path: PathBuf, source: io::Error },
    #[error("creating bpffs directory {path}: {source}")]
    PinDir { path: PathBuf, source: io::Error },
    #[error("opening pinned object {path}: {source}")]
    OpenPinned { path: PathBuf, source: io::Error },
    #[error("interface {name}: {source}")]
    Interface { name: String, source: nix::Error },
    #[error("attaching XDP to {iface} ({mode}): {source}")]
    Attach {
        iface: String,
        mode: &'static str,
        source: io::Error,
    },
    #[error("replacing the program of the pinned XDP link of {iface}: {source}")]
    LinkUpdate { iface: String, source: io::Error },
    #[error("detaching the XDP link {path}: {source}")]
    Detach { path: PathBuf, source: io::Error },
    #[error("map {map}: {what}: {source}")]
    Map {
        map: &'static str,
        what: String,
        source: libbpf_rs::Error,
    },
    #[error("creating the table of service {service}: {source}")]
    CreateTable {
        service: String,
        source: libbpf_rs::Error,
    },
    #[error("mapping the table of service {service} into memory: {source}")]
    MmapTable { service: String, source: io::Error },
    #[error("running the program (BPF_PROG_TEST_RUN): {0}")]
    TestRun(#[source] libbpf_rs::Error),
}

/// Errors turning a validated backends config into kernel images.
#[derive(Debug, thiserror::Error)]
pub enum TablesError {
    #[error("{vip} {proto}: {count} binds, but the director holds at most {max} per VIP and protocol; merge ports into ranges")]
    TooManyBinds {
        vip: std::net::IpAddr,
        proto: &'static str,
        count: usize,
        max: usize,
    },
    #[error("{count} services, but the director holds at most {max}")]
    TooManyServices { count: usize, max: usize },
    #[error("{count} binds, but the director holds at most {max}")]
    TooManyBindIds { count: usize, max: usize },
    #[error("{count} distinct backend addresses, but the director holds at most {max}")]
    TooManyBackends { count: usize, max: usize },
    #[error("{count} (VIP, protocol) pairs, but the director holds at most {max}")]
    TooManyVips { count: usize, max: usize },
    #[error("service {service}: its backends are IPv{family} but no encap_source_v{family} is configured in director.yaml")]
    NoSource { service: String, family: u8 },
}

/// Errors reading director.yaml.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// Errors reading a table source (backends.yaml).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Invalid(#[from] tablegen::config::ConfigErrors),
    #[error("{path}: {source}")]
    Unusable { path: PathBuf, source: TablesError },
    /// Consul source: nothing to serve yet (no persisted version, Consul down or empty).
    #[error("{0}")]
    NoVersion(String),
}

/// Why a reload did not go live.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("installing the tables: {0}")]
    Install(#[from] DatapathError),
}

/// Errors of the daemon as a whole.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("first table load: {0}")]
    FirstLoad(#[source] ReloadError),
    #[error("watching {path}: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
    #[error("writing state file {path}: {source}")]
    State { path: PathBuf, source: io::Error },
    #[error("setting {path}: {source}")]
    Sysctl { path: PathBuf, source: io::Error },
    #[error("consul source: {0}")]
    Cluster(#[from] cluster::Error),
    #[error("consul source: starting its runtime: {0}")]
    Runtime(#[source] io::Error),
}
