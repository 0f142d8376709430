//! The command line of `xdplb-controller` (in the library so packaging can render its man
//! pages and completions from it, as it does for the daemons).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::DEFAULT_CONFIG;

/// Load-aware controller for xdplb: moves backend weights so that backend loads (read from
/// Prometheus) converge to each service's mean, and publishes them through cluster sync.
#[derive(Parser, Debug)]
#[command(name = "xdplb-controller", version)]
pub struct Cli {
    /// controller.yaml
    #[arg(long, short, global = true, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller (active or standby: one per cluster publishes).
    Run,
    /// Show the running controller's view (from its status file).
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check controller.yaml and exit.
    Check,
}
