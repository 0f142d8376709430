//! Removes what a lab run left behind when it could not clean up itself (SIGKILL, a second
//! Ctrl-C, a machine crash between the steps): namespaces named `xl<pid>-<n>-*` and run
//! directories `/run/xdplb-lab/xl<pid>-<n>` whose process is gone. A running lab is left alone
//! unless asked. Only names with the lab's prefix are ever touched.

use std::fs;
use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd::Cmd;
use crate::netns::Netns;
use crate::topology::{NS_PREFIX, RUN_ROOT};

/// What a cleanup removed.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// Run directories removed.
    pub dirs: Vec<PathBuf>,
    /// Steps that failed.
    pub errors: Vec<String>,
}

/// The pid in a lab name (`xl<pid>-<n>` or `xl<pid>-<n>-<node>`), if it is one.
pub fn owner_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(NS_PREFIX)?;
    let mut parts = rest.splitn(3, '-');
    let pid = parts.next()?.parse().ok()?;
    let seq = parts.next()?;
    (!seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit())).then_some(pid)
}

/// Whether `pid` runs (a zombie, killed but not yet reaped, does not).
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Removes leftovers of labs whose process is gone (or of every lab, with `include_live`).
pub fn leftovers(include_live: bool) -> CleanupReport {
    let mut report = CleanupReport::default();
    let stale = |name: &str| {
        owner_pid(name)
            .is_some_and(|pid| include_live || (!alive(pid) && pid != std::process::id() as i32))
    };
    let list = match Cmd::new("ip").args(["netns", "list"]).run() {
        Ok(l) => l,
        Err(e) => {
            report.errors.push(e.to_string());
            String::new()
        }
    };
    let names: Vec<String> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| stale(n))
        .map(str::to_owned)
        .collect();
    for name in &names {
        let ns = Netns::existing(name);
        // Processes still inside were started by that lab (daemons, servers).
        for pid in ns.pids().unwrap_or_default() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    for name in names {
        match Netns::existing(&name).delete() {
            Ok(()) => report.namespaces.push(name),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if let Ok(entries) = fs::read_dir(RUN_ROOT) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !stale(&name) {
                continue;
            }
            let dir = entry.path();
            for mount_point in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
                if Path::new(mount_point).starts_with(&dir) {
                    if let Err(e) =
                        nix::mount::umount2(mount_point, nix::mount::MntFlags::MNT_DETACH)
                    {
                        report.errors.push(format!("umount {mount_point}: {e}"));
                    }
                }
            }
            match fs::remove_dir_all(&dir) {
                Ok(()) => report.dirs.push(dir),
                Err(e) => report.errors.push(format!("remove {}: {e}", dir.display())),
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn recognises_only_lab_names() {
        assert_eq!(owner_pid("xl4242-0-backend-1"), Some(4242));
        assert_eq!(owner_pid("xl4242-12"), Some(4242));
        assert_eq!(owner_pid("xlfoo-0-client"), None);
        assert_eq!(owner_pid("xl4242-client"), None);
        assert_eq!(owner_pid("blue"), None);
        assert_eq!(owner_pid("xl42"), None);
    }
}
