//! Config reloads by result, kept in `<state_dir>/redirector-reloads.json` so that `status` (a
//! process of its own) and `/metrics` read the same numbers, and so that they survive daemon
//! restarts like the kernel's counters. Owns that file; written only by `run`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

/// How reloads ended. `run` applying the config at start counts as an applied reload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloads {
    /// The config was read and written to the maps.
    pub applied: u64,
    /// The config file was invalid: nothing changed, the last good one stays.
    pub rejected: u64,
    /// Valid, but writing it failed part way (a map update, a host setup step).
    pub failed: u64,
    /// When a config was last applied, Unix seconds.
    pub last_success: Option<u64>,
    /// When a reload was last rejected or failed, Unix seconds, and why.
    pub last_rejected: Option<u64>,
    pub last_error: Option<String>,
}

/// What a reload came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Rejected,
    Failed,
}

fn file(state_dir: &Path) -> PathBuf {
    state_dir.join("redirector-reloads.json")
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Reloads {
    /// What the file says; nothing yet (or unreadable) reads as no reloads.
    pub fn read(state_dir: &Path) -> Reloads {
        std::fs::read(file(state_dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Count one reload and write the file. A file that cannot be written costs the record,
    /// never the reload: it is logged.
    pub fn record(&mut self, state_dir: &Path, outcome: Outcome, error: Option<String>) {
        let t = now();
        match outcome {
            Outcome::Applied => {
                self.applied += 1;
                self.last_success = Some(t);
            }
            Outcome::Rejected | Outcome::Failed => {
                if outcome == Outcome::Rejected {
                    self.rejected += 1;
                } else {
                    self.failed += 1;
                }
                self.last_rejected = Some(t);
                self.last_error = error;
            }
        }
        let json = serde_json::to_vec_pretty(self).expect("reloads serialise");
        let path = file(state_dir);
        if let Err(e) = daemon_support::write_atomic(&path, &json, 0o644) {
            warn!(path = %path.display(), error = %e, "cannot record the reload");
        }
    }

    /// Forget the record (`detach`: the counters it sits beside are gone too).
    pub fn remove(state_dir: &Path) {
        let _ = std::fs::remove_file(file(state_dir));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloads_are_counted_by_result_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Reloads::read(dir.path()), Reloads::default());
        let mut r = Reloads::read(dir.path());
        r.record(dir.path(), Outcome::Applied, None);
        r.record(
            dir.path(),
            Outcome::Rejected,
            Some("r.yaml:1:1: bad".into()),
        );
        r.record(dir.path(), Outcome::Failed, Some("map".into()));
        r.record(dir.path(), Outcome::Applied, None);
        let back = Reloads::read(dir.path());
        assert_eq!(back, r);
        assert_eq!((back.applied, back.rejected, back.failed), (2, 1, 1));
        assert!(back.last_success.is_some() && back.last_rejected.is_some());
        assert_eq!(back.last_error.as_deref(), Some("map"));
        Reloads::remove(dir.path());
        assert_eq!(Reloads::read(dir.path()), Reloads::default());
    }
}
