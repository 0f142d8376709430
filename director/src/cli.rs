//! The command line of `xdplb-director` (in the library so packaging can render man pages
//! from it with clap_mangen).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "xdplb-director",
    version,
    about = "xdplb director: XDP GUE load balancer daemon"
)]
pub struct Cli {
    /// director.yaml
    #[arg(long, short, global = true, default_value = daemon_support::defaults::DIRECTOR_CONFIG)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load, attach, and serve tables from backends.yaml or, with `source: consul`, the
    /// cluster's live version, in the foreground (reload: file change, new version or SIGHUP;
    /// stop: SIGTERM/SIGINT, the program stays attached).
    Run,
    /// Show interfaces, tables, last reload, last rejected config, the Consul state (cluster
    /// mode) and counters.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Planned maintenance: announce every VIP with the GRACEFUL_SHUTDOWN community
    /// (65535:0) so routers move traffic to the other directors, then withdraw after
    /// `announce.drain_delay_ms`. Kept across daemon restarts until undrain-announcements.
    DrainAnnouncements,
    /// End a drain: the VIPs are announced again where everything else allows it.
    UndrainAnnouncements,
    /// Remove every route token now (the unit's ExecStopPost, after the daemon exited or was
    /// killed). A running daemon puts back what it announces.
    FlushAnnouncements,
    /// Detach from every interface, remove every pinned object, and put back the sysctls
    /// kernel_fallback changed.
    Detach,
}
