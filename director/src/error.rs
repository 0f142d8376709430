//! The director library's error types: each variant says what was being done, and to what;
//! the cause is its `source()`, not repeated in its message. The binary, logs and `status`
//! print the whole chain with `daemon_support::error_chain`.

use std::io;
use std::path::PathBuf;

/// Errors of the data path (BPF object, maps, attachment).
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the XDP program")]
    Load(#[source] libbpf_rs::Error),
    #[error("reusing pinned map {path}")]
    ReusePin {
        path: PathBuf,
        source: libbpf_rs::Error,
    },
    #[error("pinning {path}")]
    Pin { path: PathBuf, source: io::Error },
    #[error("creating bpffs directory {path}")]
    PinDir { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Bpffs(#[from] daemon_support::BpffsError),
    #[error(transparent)]
    Kernel(#[from] daemon_support::KernelTooOld),
    #[error("opening pinned object {path}")]
    OpenPinned { path: PathBuf, source: io::Error },
    #[error("interface {name}")]
    Interface { name: String, source: nix::Error },
    #[error("attaching XDP to {iface} ({mode})")]
    Attach {
        iface: String,
        mode: &'static str,
        source: io::Error,
    },
    #[error("replacing the program of the pinned XDP link of {iface}")]
    LinkUpdate { iface: String, source: io::Error },
    #[error("detaching the XDP link {path}")]
    Detach { path: PathBuf, source: io::Error },
    #[error("map {map}: {what}")]
    Map {
        map: &'static str,
        what: String,
        source: libbpf_rs::Error,
    },
    #[error("creating the table of service {service}")]
    CreateTable {
        service: String,
        source: libbpf_rs::Error,
    },
    #[error("mapping the table of service {service} into memory")]
    MmapTable { service: String, source: io::Error },
    #[error("running the program (BPF_PROG_TEST_RUN)")]
    TestRun(#[source] libbpf_rs::Error),
    #[error("this kernel cannot run an XDP test as received on interface {ifindex}: before 5.15 a test run takes no context and its ingress is the loopback device (interface 1)")]
    TestRunIngress { ifindex: u32 },
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
    #[error("reading {path}")]
    Read { path: PathBuf, source: io::Error },
    /// Every error of the file, one `file:line:col: message` per line.
    #[error(transparent)]
    Invalid(#[from] yaml::Errors<crate::config::ConfigProblem>),
}

/// Errors reading a table source (backends.yaml).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("reading {path}")]
    Read { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Invalid(#[from] tablegen::config::ConfigErrors),
    #[error("{path}")]
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
    #[error("installing the tables")]
    Install(#[from] DatapathError),
}

/// Errors of the daemon as a whole.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("first table load")]
    FirstLoad(#[source] ReloadError),
    #[error("watching {path}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
    #[error("writing state file {path}")]
    State { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Sysctl(#[from] daemon_support::sysctl::SysctlError),
    #[error("consul source")]
    Cluster(#[from] cluster::Error),
    #[error("consul source: starting its runtime")]
    Runtime(#[source] io::Error),
    #[error("route tokens (announce:)")]
    Announce(#[from] crate::announce::TokenError),
    #[error("metrics: cannot listen on {addr}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: io::Error,
    },
}

impl DaemonError {
    /// A problem only the operator can fix (director.yaml, a backends file that is missing or
    /// invalid, `bpffs_dir` not on a bpffs, a kernel too old): the binary exits with EX_CONFIG (78) and the
    /// systemd unit does not restart it. Not when Consul has no version yet: a restart may
    /// well fix that.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            DaemonError::Config(_)
                | DaemonError::Datapath(DatapathError::Bpffs(
                    daemon_support::BpffsError::NotBpffs { .. }
                ))
                | DaemonError::Datapath(DatapathError::Kernel(_))
                | DaemonError::FirstLoad(ReloadError::Source(
                    SourceError::Read { .. }
                        | SourceError::Invalid(_)
                        | SourceError::Unusable { .. }
                ))
        )
    }
}
