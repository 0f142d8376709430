//! A small typed wrapper for the external tools the lab drives (`ip`, `sysctl`, `ethtool`, the
//! daemons). Every failure names the exact command line and carries its stderr, so a broken
//! lab step reads like `ip -n xl42-0-router route replace ...` failed: "Nexthop has invalid gateway".
//!
//! It never goes through a shell: arguments are passed as they are, so there is no quoting to get
//! wrong and no shell script hiding in a string.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};

/// What went wrong when running an external command.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// The program could not be started at all (not installed, not executable).
    #[error("could not start `{cmd}`")]
    Spawn {
        /// The command line.
        cmd: String,
        /// Why it could not start.
        source: std::io::Error,
    },
    /// The program ran and exited unsuccessfully.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
    },
}

/// A command line: a program and its arguments.
#[derive(Debug, Clone)]
pub struct Cmd {
    argv: Vec<OsString>,
}

impl Cmd {
    /// A command running `program`.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            argv: vec![program.as_ref().to_owned()],
        }
    }

    /// `ip` with `-n <netns>` so it acts inside that network namespace.
    pub fn ip(netns: &str) -> Self {
        Self::new("ip").args(["-n", netns])
    }

    /// `program` run inside the network namespace through `ip netns exec`, exactly as an
    /// operator would type it (the process sees the namespace's own `/sys`).
    pub fn in_netns(netns: &str, program: impl AsRef<OsStr>) -> Self {
        Self::new("ip").args(["netns", "exec", netns]).arg(program)
    }

    /// Appends one argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.argv.push(a.as_ref().to_owned());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.argv
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.argv[0]);
        c.args(&self.argv[1..]);
        c
    }

    /// Runs the command to completion and returns its standard output.
    pub fn run(&self) -> Result<String, CmdError> {
        let out = self
            .command()
            .stdin(Stdio::null())
            .output()
            .map_err(|source| CmdError::Spawn {
                cmd: self.to_string(),
                source,
            })?;
        if !out.status.success() {
            return Err(CmdError::Failed {
                cmd: self.to_string(),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts the command in the background with stdout and stderr appended to `log`. The child
    /// gets its own process group, so a Ctrl-C in the terminal reaches only the lab's driver,
    /// which then stops the children in order.
    pub fn spawn_logged(&self, log: &File) -> Result<Child, CmdError> {
        let err = |source| CmdError::Spawn {
            cmd: self.to_string(),
            source,
        };
        self.command()
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(err)?)
            .stderr(log.try_clone().map_err(err)?)
            .process_group(0)
            .spawn()
            .map_err(err)
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.argv.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
                write!(f, "'{}'", a.replace('\'', r"'\''"))?;
            } else {
                f.write_str(&a)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_the_command_and_its_stderr() {
        let err = Cmd::new("sh")
            .args(["-c", "echo nope >&2; exit 3"])
            .run()
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`sh -c 'echo nope >&2; exit 3'` failed"),
            "{msg}"
        );
        assert!(msg.ends_with("nope"), "{msg}");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = Cmd::new("/nonexistent/xdplb-lab-tool").run().unwrap_err();
        assert!(matches!(err, CmdError::Spawn { .. }), "{err}");
    }

    #[test]
    fn stdout_is_returned() {
        assert_eq!(Cmd::new("echo").arg("hi").run().unwrap(), "hi\n");
    }
}
