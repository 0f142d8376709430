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

/// Compile xdplb's backends.yaml into forwarding tables, edit backend states, and publish them
/// to a director cluster.
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
    ///
    /// With --director: where a director on this host sends it now, read from the tables
    /// its kernel holds (the published table with its health overlay), beside the published
    /// table and whether health changed it.
    Lookup {
        #[arg(value_name = "FLOW")]
        flow: String,
        #[arg(long)]
        json: bool,
        /// Ask the director on this host: read its installed tables from the pinned maps
        /// under --bpffs-dir and its state file under --state-dir (root).
        #[arg(long)]
        director: bool,
        /// director.yaml's `bpffs_dir` (the maps are pinned in its `director/`).
        #[arg(long, value_name = "DIR", default_value = daemon_support::defaults::BPFFS_DIR, requires = "director")]
        bpffs_dir: PathBuf,
        /// director.yaml's `state_dir` (director-state.json).
        #[arg(long, value_name = "DIR", default_value = daemon_support::defaults::STATE_DIR, requires = "director")]
        state_dir: PathBuf,
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
    /// Publish the config to a director cluster through Consul, list its versions, compare
    /// them and roll back.
    Cluster(Cluster),
}

/// Default director config, whose `consul:` section says where the cluster lives.
pub const DEFAULT_DIRECTOR_CONFIG: &str = "/etc/xdplb/director.yaml";

/// `tablegen cluster ...`: Consul connection, then what to do.
#[derive(Debug, Args)]
pub struct Cluster {
    #[command(flatten)]
    pub consul: ConsulArgs,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// Where the cluster's versions live. The `consul:` section of the director config is read
/// (if the file exists); each flag overrides the field of the same name.
#[derive(Debug, Args)]
pub struct ConsulArgs {
    /// YAML file whose `consul:` section to use (director.yaml, or a file with only that
    /// section). The default file is optional when --consul-address and --prefix are given.
    #[arg(long, global = true, value_name = "FILE")]
    pub director_config: Option<PathBuf>,
    /// Consul agent URL, http:// or https:// (consul.address).
    #[arg(long, global = true, value_name = "URL")]
    pub consul_address: Option<String>,
    /// Key prefix of the director cluster (consul.prefix).
    #[arg(long, global = true, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// File holding the ACL token (consul.token_file).
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// CA bundle for an https:// address (consul.ca_file).
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Consul datacenter (consul.datacenter).
    #[arg(long, global = true, value_name = "DC")]
    pub datacenter: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Validate the backends file (--config) and publish it as a new version, made live at
    /// once. Publishes nothing when the live version has the same text and checksums.
    Publish {
        /// Why: stored with the version, shown by `versions`.
        #[arg(long, default_value = "", value_name = "TEXT")]
        comment: String,
        /// Publish only if version N is still the live one (`none`: nothing published yet).
        /// Refused otherwise, so a concurrent change is never overwritten.
        #[arg(long, value_name = "N")]
        expect_current: Option<Expected>,
    },
    /// List the versions: number, time, author, parent, comment, per-service checksums.
    Versions {
        #[arg(long)]
        json: bool,
    },
    /// The live version.
    Current {
        #[arg(long)]
        json: bool,
    },
    /// Print a version's backends file (to stdout, or to FILE atomically); V is a number or
    /// `current`.
    Get {
        #[arg(value_name = "V", default_value = "current")]
        version: VersionRef,
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Compare the tables of version OLD with version NEW (same output as `tablegen diff`).
    /// OLD and NEW are numbers or `current`; without NEW, OLD is compared with the local
    /// backends file (--config): what publishing it would change.
    Diff {
        #[arg(value_name = "OLD")]
        old: VersionRef,
        #[arg(value_name = "NEW")]
        new: Option<VersionRef>,
        #[arg(long)]
        json: bool,
    },
    /// The directors' health views (directors that set `health_view:` in director.yaml):
    /// per backend, healthy or not and since when on each director; directors whose view is
    /// stale or gone (died, stopped, lost Consul) are named. Never part of a version.
    Health {
        #[arg(long)]
        json: bool,
    },
    /// Make version N live again (usually an older one): directors switch to its tables.
    Rollback {
        #[arg(value_name = "N")]
        version: u64,
        /// Only if version M is still the live one (`none`: nothing published yet).
        #[arg(long, value_name = "M")]
        expect_current: Option<Expected>,
    },
}

/// A version on the command line: a number, or `current` (the live one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef {
    Current,
    Number(u64),
}

impl std::str::FromStr for VersionRef {
    type Err = String;
    fn from_str(s: &str) -> Result<VersionRef, String> {
        if s == "current" {
            return Ok(VersionRef::Current);
        }
        s.parse()
            .map(VersionRef::Number)
            .map_err(|_| format!("`{s}` is not a version: expected a number or `current`"))
    }
}

/// `--expect-current`: the version the operator believes is live (None: nothing published).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected(pub Option<u64>);

impl std::str::FromStr for Expected {
    type Err = String;
    fn from_str(s: &str) -> Result<Expected, String> {
        if s == "none" {
            return Ok(Expected(None));
        }
        s.parse()
            .map(|n| Expected(Some(n)))
            .map_err(|_| format!("`{s}` is not a version: expected a number or `none`"))
    }
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

    #[test]
    fn version_arguments() {
        use super::{Expected, VersionRef};
        assert_eq!("current".parse(), Ok(VersionRef::Current));
        assert_eq!("7".parse(), Ok(VersionRef::Number(7)));
        assert!("latest".parse::<VersionRef>().is_err());
        assert_eq!("none".parse(), Ok(Expected(None)));
        assert_eq!("3".parse(), Ok(Expected(Some(3))));
        assert!("-1".parse::<Expected>().is_err());
    }
}
