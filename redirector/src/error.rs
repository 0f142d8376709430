//! Errors of the redirector library: each variant says what was being done and to what.

use std::path::PathBuf;

/// Everything the library can fail at. The binary prints the chain with
/// `daemon_support::error_chain`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read config {path}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("open the redirector BPF object")]
    Open(#[source] libbpf_rs::Error),
    #[error("load the redirector BPF object into the kernel")]
    Load(#[source] libbpf_rs::Error),
    #[error("reuse pinned map {path}")]
    ReusePin {
        path: PathBuf,
        #[source]
        source: libbpf_rs::Error,
    },
    #[error("pin {path}")]
    Pin {
        path: PathBuf,
        #[source]
        source: libbpf_rs::Error,
    },
    #[error("create bpffs directory {path}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Bpffs(#[from] daemon_support::BpffsError),
    #[error(transparent)]
    Kernel(#[from] daemon_support::KernelTooOld),
    #[error("metrics: cannot listen on {addr}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("update BPF map {map}")]
    MapUpdate {
        map: &'static str,
        #[source]
        source: libbpf_rs::Error,
    },
    #[error("open pinned object {path} (is the redirector running? `xdplb-redirector run`)")]
    OpenPinned {
        path: PathBuf,
        #[source]
        source: libbpf_rs::Error,
    },
    #[error("list the tc {what} of {interface} (netlink)")]
    TcQuery {
        what: &'static str,
        interface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("interface {name} not found")]
    NoInterface { name: String },
    #[error("attach to tc ingress of {interface}")]
    Attach {
        interface: String,
        #[source]
        source: libbpf_rs::Error,
    },
    #[error("detach from tc ingress of {interface}")]
    Detach {
        interface: String,
        #[source]
        source: libbpf_rs::Error,
    },
    #[error("run `{command}`: {message}")]
    Command { command: String, message: String },
    #[error(transparent)]
    Sysctl(#[from] daemon_support::sysctl::SysctlError),
    #[error("save setup state {path}")]
    SaveState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read setup state {path}")]
    LoadState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse setup state {path}")]
    ParseState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// This error and its causes on one line, as the binary prints it
    /// ([`daemon_support::error_chain`]): for logs, whose `%e` would show only what was being
    /// done.
    pub fn chain(&self) -> String {
        daemon_support::error_chain(self)
    }

    /// Whether this is a configuration problem that only the operator can fix (the file is
    /// missing, unreadable or invalid, `bpffs_dir` is not on a bpffs, the kernel is too old): the
    /// binary exits with EX_CONFIG (78) on these, and the systemd unit does not restart it.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Error::ReadConfig { .. }
                | Error::Config(_)
                | Error::Bpffs(daemon_support::BpffsError::NotBpffs { .. })
                | Error::Kernel(_)
        )
    }
}
