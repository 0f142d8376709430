//! The sysctl journal: every sysctl a daemon changes is recorded, with the value it had, in a
//! file of its own (`<state_dir>/<daemon>-sysctls.json`) *before* the new value is written, so
//! a crash between the two never loses the way back. Putting values back (`restore`) touches
//! only those still holding what the daemon wrote: a value someone changed since is theirs,
//! and stays.
//!
//! Owns reading and writing `/proc/sys` for the daemons; must not decide which sysctls to set
//! (the director's `host` module and the redirector's `setup` do).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::info;

/// Why a sysctl or the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("reading sysctl {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("setting sysctl {path} to {value}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the sysctl journal {path}")]
    ReadJournal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the sysctl journal {path} is not valid; fix or remove it")]
    ParseJournal {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing the sysctl journal {path}")]
    WriteJournal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One sysctl a daemon changed: what it was before, what the daemon wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlChange {
    pub path: PathBuf,
    pub before: String,
    pub set: String,
}

/// What [`Journal::restore`] did with one recorded change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restored {
    /// Put back to its value from before the daemon.
    Reverted(SysctlChange),
    /// Changed by someone else since, or gone with its interface (`now` is "(gone)"): left
    /// as it is.
    Kept { change: SysctlChange, now: String },
}

/// The file's shape (`{"changes": [...]}`, oldest first).
#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    changes: Vec<SysctlChange>,
}

/// `/proc/sys/net/<family>/conf/<iface>/<key>`, e.g. (`ipv4`, `all`, `rp_filter`). Built from
/// parts, not from a dotted key: an interface name may itself hold a dot (`eth0.100`).
pub fn conf_path(family: &str, iface: &str, key: &str) -> PathBuf {
    Path::new("/proc/sys/net")
        .join(family)
        .join("conf")
        .join(iface)
        .join(key)
}

/// The current value of a sysctl, trimmed.
pub fn read(path: &Path) -> Result<String, SysctlError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| SysctlError::Read {
            path: path.into(),
            source,
        })
}

fn write(path: &Path, value: &str) -> Result<(), SysctlError> {
    std::fs::write(path, value).map_err(|source| SysctlError::Write {
        path: path.into(),
        value: value.into(),
        source,
    })
}

/// A daemon's sysctl journal file.
#[derive(Clone, Debug)]
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    /// The journal at `path` (created by the first change).
    pub fn new(path: impl Into<PathBuf>) -> Journal {
        Journal { path: path.into() }
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recorded changes not yet put back, oldest first (none when there is no file).
    pub fn changes(&self) -> Result<Vec<SysctlChange>, SysctlError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice::<File>(&bytes)
                .map(|f| f.changes)
                .map_err(|source| SysctlError::ParseJournal {
                    path: self.path.clone(),
                    source,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(SysctlError::ReadJournal {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Atomically; no changes left removes the file.
    fn save(&self, changes: Vec<SysctlChange>) -> Result<(), SysctlError> {
        let err = |source| SysctlError::WriteJournal {
            path: self.path.clone(),
            source,
        };
        if changes.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(e)),
                _ => Ok(()),
            };
        }
        let text = serde_json::to_vec_pretty(&File { changes }).expect("plain data serializes");
        crate::fs::write_atomic(&self.path, &text, 0o644).map_err(err)
    }

    /// Record a change made without the journal (by an earlier version that kept its own
    /// record), unless its path is already recorded.
    pub fn record(&self, change: SysctlChange) -> Result<(), SysctlError> {
        let mut changes = self.changes()?;
        if !changes.iter().any(|c| c.path == change.path) {
            changes.push(change);
            self.save(changes)?;
        }
        Ok(())
    }

    /// Set `path` to `value` unless it already holds it. See [`Journal::set_if`].
    pub fn set(&self, path: &Path, value: &str) -> Result<bool, SysctlError> {
        self.set_if(path, |now| now != value, value)
    }

    /// Set `path` to `value` when `needs_change(current value)`; returns whether it did. The
    /// change is in the journal before the value is written, and a path keeps its first
    /// `before`: a restart, which finds the daemon's own value already there, never records
    /// it as the original.
    pub fn set_if(
        &self,
        path: &Path,
        needs_change: impl Fn(&str) -> bool,
        value: &str,
    ) -> Result<bool, SysctlError> {
        let now = read(path)?;
        if !needs_change(&now) {
            return Ok(false);
        }
        let mut changes = self.changes()?;
        if !changes.iter().any(|c| c.path == path) {
            changes.push(SysctlChange {
                path: path.into(),
                before: now.clone(),
                set: value.into(),
            });
            self.save(changes)?;
        }
        write(path, value)?;
        info!(path = %path.display(), before = now, value, "sysctl set");
        Ok(true)
    }

    /// Put back the recorded changes whose path `mine` selects (all of them for a detach, or
    /// those of one interface), newest first, and forget them; the others stay recorded. A
    /// value that no longer holds what the daemon wrote was changed by someone since and is
    /// left as it is. Every selected change is tried; the first failure is returned after.
    pub fn restore(&self, mine: impl Fn(&Path) -> bool) -> Result<Vec<Restored>, SysctlError> {
        let changes = self.changes()?;
        let (selected, mut keep): (Vec<_>, Vec<_>) =
            changes.into_iter().partition(|c| mine(&c.path));
        let mut done = Vec::new();
        let mut first_error = None;
        for c in selected.into_iter().rev() {
            // Unreadable: the interface is gone, and its settings with it.
            let now = read(&c.path).unwrap_or_else(|_| "(gone)".to_string());
            if now != c.set {
                info!(path = %c.path.display(), now, "sysctl changed since: left as it is");
                done.push(Restored::Kept { change: c, now });
                continue;
            }
            match write(&c.path, &c.before) {
                Ok(()) => {
                    info!(path = %c.path.display(), value = c.before, "sysctl restored");
                    done.push(Restored::Reverted(c));
                }
                Err(e) => {
                    // Still ours to put back: keep it recorded for the next try.
                    keep.push(c);
                    first_error.get_or_insert(e);
                }
            }
        }
        self.save(keep)?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of stand-in sysctls (plain files: the journal reads and writes paths).
    fn fake(values: &[(&str, &str)]) -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        for (name, v) in values {
            std::fs::write(dir.path().join(name), format!("{v}\n")).unwrap();
        }
        let journal = Journal::new(dir.path().join("state/d-sysctls.json"));
        (dir, journal)
    }

    #[test]
    fn restore_puts_back_only_what_nobody_changed_since() {
        let (dir, j) = fake(&[("arp_ignore", "0"), ("rp_filter", "1")]);
        let (a, r) = (dir.path().join("arp_ignore"), dir.path().join("rp_filter"));
        assert!(j.set(&a, "1").unwrap());
        assert!(j.set_if(&r, |v| v == "1", "2").unwrap());
        assert_eq!(read(&a).unwrap(), "1");
        assert_eq!(read(&r).unwrap(), "2");
        // The operator sets rp_filter after us: that value is theirs.
        std::fs::write(&r, "0").unwrap();
        let done = j.restore(|_| true).unwrap();
        assert_eq!(read(&a).unwrap(), "0", "ours: put back");
        assert_eq!(read(&r).unwrap(), "0", "the operator's: kept");
        assert!(
            matches!(&done[0], Restored::Kept { now, .. } if now == "0"),
            "{done:?}"
        );
        assert!(
            matches!(&done[1], Restored::Reverted(c) if c.path == a),
            "{done:?}"
        );
        assert!(!j.path().exists(), "nothing left to put back");
    }

    #[test]
    fn a_second_set_keeps_the_first_before_and_unchanged_values_are_not_recorded() {
        let (dir, j) = fake(&[("forwarding", "0"), ("accept_local", "1")]);
        let (f, l) = (
            dir.path().join("forwarding"),
            dir.path().join("accept_local"),
        );
        assert!(j.set(&f, "1").unwrap());
        assert!(!j.set(&l, "1").unwrap(), "already set");
        // A restart finds its own value: nothing to do, the original stays recorded.
        assert!(!j.set(&f, "1").unwrap());
        std::fs::write(&f, "0").unwrap();
        assert!(j.set(&f, "1").unwrap());
        let changes = j.changes().unwrap();
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            (changes[0].before.as_str(), changes[0].set.as_str()),
            ("0", "1")
        );
    }

    #[test]
    fn restore_of_one_selection_keeps_the_others_recorded() {
        let (dir, j) = fake(&[("a", "0"), ("b", "0")]);
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        j.set(&a, "1").unwrap();
        j.set(&b, "1").unwrap();
        j.restore(|p| p == a).unwrap();
        assert_eq!(read(&a).unwrap(), "0");
        assert_eq!(read(&b).unwrap(), "1");
        assert_eq!(j.changes().unwrap().len(), 1);
    }

    /// Write-ahead: the record is on disk before the value is written. The kernel refuses
    /// the write here (a read-only sysctl, even for root), so what is on disk afterwards is
    /// what was there before the write was tried.
    #[test]
    fn the_record_exists_before_the_value_is_written() {
        let sysctl = Path::new("/proc/sys/kernel/osrelease");
        let release = read(sysctl).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path().join("d-sysctls.json"));
        let e = j.set(sysctl, "not-a-release").unwrap_err();
        assert!(matches!(e, SysctlError::Write { .. }), "{e:?}");
        assert_eq!(
            j.changes().unwrap(),
            [SysctlChange {
                path: sysctl.into(),
                before: release.clone(),
                set: "not-a-release".into()
            }]
        );
        // Restoring a value that never took is a no-op: it does not hold what was "set".
        let done = j.restore(|_| true).unwrap();
        assert!(matches!(&done[..], [Restored::Kept { .. }]), "{done:?}");
        assert_eq!(read(sysctl).unwrap(), release);
    }

    #[test]
    fn a_broken_journal_is_an_error_not_an_empty_one() {
        let (_dir, j) = fake(&[]);
        std::fs::create_dir_all(j.path().parent().unwrap()).unwrap();
        std::fs::write(j.path(), "{ not json").unwrap();
        assert!(matches!(j.changes(), Err(SysctlError::ParseJournal { .. })));
    }

    #[test]
    fn conf_paths_keep_dots_in_interface_names() {
        assert_eq!(
            conf_path("ipv4", "eth0.100", "rp_filter"),
            Path::new("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
    }
}
