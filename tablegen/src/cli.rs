//! The command-line interface of the `tablegen` binary, as a clap definition.
//!
//! It lives in the library so packaging can generate the man page and shell completions from
//! [`command`] without running the binary. The binary (`src/bin/tablegen.rs`) does the I/O.
//!
//! Must not do: I/O.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// Default location of the backends file.
pub const DEFAULT_CONFIG: &str = "/etc/xdplb/backends.yaml";

/// Compile xdplb's backends.yaml into forwarding tables, and edit backend states.
#[derive(Debug, Parser)]
#[command(name = "tablegen", version, about, long_about = None)]
pub struct Cli {
    /// The backends file.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG, value_name = "FILE")]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config: exit 0, or print every error (file:line:column: message) and exit 1.
    Check,
    /// Write the binary tables of every service to FILE (atomically).
    Build {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Per service: rows, hops, version, checksum; per backend: state, weight, rows held.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Which service, hash, row and hops a flow gets: 'tcp 192.0.2.7:51000 10.100.0.1:80'
    /// (IPv6 as `[addr]:port`).
    Lookup {
        #[arg(value_name = "FLOW")]
        flow: String,
        #[arg(long)]
        json: bool,
    },
    /// Compare two table sets; OLD and NEW are each a config file or a binary table file
    /// (recognised by its magic).
    Diff {
        old: PathBuf,
        new: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Stop sending new flows to a backend; its flows continue by second chance.
    Drain(Target),
    /// Mark a backend as being added (takes flows; counts as in transition).
    Fill(Target),
    /// Make a backend active.
    Activate(Target),
    /// Take a backend out of the table.
    Deactivate(Target),
    /// Set a backend's weight (relative share of rows).
    Weight {
        #[command(flatten)]
        target: Target,
        #[arg(value_name = "N")]
        weight: u32,
    },
}

/// A backend to edit.
#[derive(Debug, Args)]
pub struct Target {
    /// Backend name.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The service, where the backend name is in several services.
    #[arg(long, value_name = "SERVICE")]
    pub service: Option<String>,
}

/// The clap command, for man pages and completions.
pub fn command() -> clap::Command {
    Cli::command()
}

#[cfg(test)]
mod tests {
    #[test]
    fn definition_is_consistent() {
        super::command().debug_assert();
    }
}
