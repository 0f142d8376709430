//! Named network namespaces (`/run/netns/<name>`, the same ones `ip netns` shows) and a way to
//! run Rust code inside one: a dedicated thread joins the namespace with `setns(2)`, so every
//! socket it opens lives there for good, while the rest of the process stays where it was.
//!
//! This module creates and deletes namespaces; it does not decide what goes in them (that is
//! [`crate::topology`]).

use std::fs::File;
use std::path::PathBuf;
use std::thread::JoinHandle;

use nix::sched::{setns, CloneFlags};

use crate::cmd::{Cmd, CmdError};

/// Errors from entering a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// `/run/netns/<name>` could not be opened.
    #[error("open network namespace {path}")]
    Open {
        /// The namespace file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `setns(2)` refused.
    #[error("enter network namespace {name}")]
    Enter {
        /// The namespace name.
        name: String,
        /// Why.
        source: nix::Error,
    },
    /// The thread running inside the namespace panicked.
    #[error("the thread inside network namespace {name} panicked")]
    Panicked {
        /// The namespace name.
        name: String,
    },
}

/// A named network namespace. Dropping it does not delete it: the lab deletes its namespaces in
/// one place ([`crate::topology::Lab`]'s drop), in the right order.
#[derive(Debug, Clone)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace and brings its loopback up.
    pub fn create(name: &str) -> Result<Self, CmdError> {
        Cmd::new("ip").args(["netns", "add", name]).run()?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle on an existing namespace.
    pub fn existing(name: &str) -> Self {
        Self {
            name: name.to_owned(),
        }
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <name> <args>` and returns its output.
    pub fn ip<I, S>(&self, args: I) -> Result<String, CmdError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Cmd::ip(&self.name).args(args).run()
    }

    /// Sets sysctls inside the namespace (`sysctl -w k=v ...`, one command for all of them).
    pub fn sysctl(&self, settings: &[(&str, &str)]) -> Result<(), CmdError> {
        let args = settings.iter().map(|(k, v)| format!("{k}={v}"));
        self.command("sysctl")
            .args(["-q", "-w"])
            .args(args)
            .run()
            .map(drop)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Cmd {
        Cmd::in_netns(&self.name, program)
    }

    /// The pids of the processes living in the namespace.
    pub fn pids(&self) -> Result<Vec<i32>, CmdError> {
        let out = Cmd::new("ip").args(["netns", "pids", &self.name]).run()?;
        Ok(out
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect())
    }

    /// Deletes the namespace (its veths go with it).
    pub fn delete(&self) -> Result<(), CmdError> {
        Cmd::new("ip")
            .args(["netns", "delete", &self.name])
            .run()
            .map(drop)
    }

    /// Starts `f` on a new thread inside this namespace.
    pub fn spawn<F, R>(&self, f: F) -> Result<JoinHandle<Result<R, NetnsError>>, NetnsError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let path = PathBuf::from("/run/netns").join(&self.name);
        let file = File::open(&path).map_err(|source| NetnsError::Open { path, source })?;
        let name = self.name.clone();
        let thread = std::thread::Builder::new().name(format!("netns {name}"));
        let handle = thread
            .spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .map_err(|source| NetnsError::Enter { name, source })?;
                Ok(f())
            })
            .expect("spawn a thread");
        Ok(handle)
    }

    /// Runs `f` inside this namespace and waits for it.
    pub fn run<F, R>(&self, f: F) -> Result<R, NetnsError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.spawn(f)?.join().map_err(|_| NetnsError::Panicked {
            name: self.name.clone(),
        })?
    }
}
