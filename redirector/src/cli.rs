//! The command line, as a clap definition packaging can reach (`redirector::cli::Cli`) to
//! generate the man page. Parsing only: the binary acts on it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// xdplb backend redirector: GUE decapsulation and second chance on TC ingress.
#[derive(Debug, Parser)]
#[command(name = "xdplb-redirector", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = daemon_support::defaults::REDIRECTOR_CONFIG)]
    pub config: PathBuf,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach and run in the foreground. SIGHUP reloads the config (allowed ranges, self
    /// addresses, VIPs); SIGTERM/SIGINT stop the daemon but leave the program attached and
    /// pinned, so a restart does not interrupt traffic.
    Run,
    /// Remove the tc filter, the pins, and every host change `setup` made.
    Detach,
    /// Show attachment and per-reason packet counters.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Set up Direct Server Return: VIPs on the VIP interface, arp_ignore/arp_announce, loose
    /// reverse-path filter. Idempotent; `detach` reverses it.
    Setup,
}
