//! Health as the data plane sees it: per backend, consecutive passes and failures turned into
//! healthy or not by `rise` and `fall`; per service, which backends the installed table demotes,
//! with fail-open below a share of healthy backends and at most one change per hold time.
//!
//! Pure: times are passed in, nothing is read or written here. The checker (`mod.rs`) feeds
//! results in; the daemon asks for the decision when it builds tables.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One backend's health, as kept across restarts (the state directory's health file) and
/// shown by `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracker {
    pub healthy: bool,
    /// Unix seconds of the last change (or of the first check).
    pub since: u64,
    /// Consecutive passes and failures; one is always 0.
    #[serde(default)]
    pub passes: u32,
    #[serde(default)]
    pub failures: u32,
    /// Why the last failed probe failed, per check (`tcp:80: connection refused`).
    #[serde(default)]
    pub last_error: Option<String>,
    /// Changes between healthy and unhealthy, over the life of the state file.
    #[serde(default)]
    pub transitions: u64,
}

impl Tracker {
    pub fn new(healthy: bool, now_unix: u64) -> Tracker {
        Tracker {
            healthy,
            since: now_unix,
            passes: 0,
            failures: 0,
            last_error: None,
            transitions: 0,
        }
    }

    /// Counts one probe round (every check of the backend); true when health flipped: `rise`
    /// passes in a row make an unhealthy backend healthy, `fall` failures in a row the reverse.
    pub fn record(
        &mut self,
        result: Result<(), String>,
        rise: u32,
        fall: u32,
        now_unix: u64,
    ) -> bool {
        match result {
            Ok(()) => {
                self.passes = self.passes.saturating_add(1);
                self.failures = 0;
                if !self.healthy && self.passes >= rise {
                    self.healthy = true;
                    self.since = now_unix;
                    self.transitions += 1;
                    return true;
                }
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                self.passes = 0;
                self.last_error = Some(e);
                if self.healthy && self.failures >= fall {
                    self.healthy = false;
                    self.since = now_unix;
                    self.transitions += 1;
                    return true;
                }
            }
        }
        false
    }
}

/// What a service's installed table does with health.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Backends demoted as if draining (by name).
    pub demoted: BTreeSet<String>,
    /// Too few healthy backends: health is ignored and the table is the published one.
    pub fail_open: bool,
}

/// The decision for one service from its checked backends' health (`(name, healthy)`, only
/// backends that are in the table and not already draining) and the fail-open share in percent:
/// fewer healthy than that share of them, and health is ignored.
pub fn decide<'a>(
    backends: impl IntoIterator<Item = (&'a str, bool)>,
    fail_open_below: u8,
) -> Decision {
    let mut total = 0usize;
    let mut unhealthy = BTreeSet::new();
    for (name, healthy) in backends {
        total += 1;
        if !healthy {
            unhealthy.insert(name.to_string());
        }
    }
    let healthy = total - unhealthy.len();
    if unhealthy.is_empty() {
        return Decision::default();
    }
    // healthy / total < share / 100, without rounding.
    if healthy * 100 < usize::from(fail_open_below) * total || healthy == 0 {
        return Decision {
            demoted: BTreeSet::new(),
            fail_open: true,
        };
    }
    Decision {
        demoted: unhealthy,
        fail_open: false,
    }
}

/// Damping: at most one change of a service's installed decision per hold time.
#[derive(Debug, Default)]
pub struct Damper {
    /// Per service: the decision installed and when it was installed.
    installed: BTreeMap<String, (Decision, Option<Instant>)>,
}

impl Damper {
    /// The decision to install now for `service` given the one wanted, and when to look again
    /// if the wanted one must wait for the hold time to pass.
    pub fn admit(
        &mut self,
        service: &str,
        wanted: &Decision,
        hold: Duration,
        now: Instant,
    ) -> (Decision, Option<Instant>) {
        let entry = self
            .installed
            .entry(service.to_string())
            .or_insert_with(|| (Decision::default(), None));
        if &entry.0 == wanted {
            return (entry.0.clone(), None);
        }
        match entry.1 {
            Some(at) if now < at + hold => (entry.0.clone(), Some(at + hold)),
            _ => {
                *entry = (wanted.clone(), Some(now));
                (wanted.clone(), None)
            }
        }
    }

    /// The first decision after a start, from the persisted view: installed at once, and it
    /// starts the hold.
    pub fn start(&mut self, service: &str, decision: Decision, now: Instant) {
        self.installed
            .insert(service.to_string(), (decision, Some(now)));
    }

    /// Forget services that are gone.
    pub fn retain(&mut self, services: &BTreeSet<String>) {
        self.installed.retain(|s, _| services.contains(s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_are_counted_in_a_row_and_asymmetric() {
        let mut t = Tracker::new(true, 0);
        assert!(!t.record(Err("x".into()), 3, 2, 1));
        assert!(!t.record(Ok(()), 3, 2, 2), "a pass resets the failures");
        assert!(!t.record(Err("x".into()), 3, 2, 3));
        assert!(t.record(Err("y".into()), 3, 2, 4));
        assert_eq!((t.healthy, t.since, t.failures), (false, 4, 2));
        assert_eq!(t.last_error.as_deref(), Some("y"));
        assert!(!t.record(Ok(()), 3, 2, 5));
        assert!(!t.record(Ok(()), 3, 2, 6));
        assert!(t.record(Ok(()), 3, 2, 7));
        assert_eq!((t.healthy, t.since), (true, 7));
        assert!(!t.record(Ok(()), 3, 2, 8), "no flip while it stays healthy");
    }

    #[test]
    fn below_the_share_health_is_ignored() {
        let d = decide([("a", true), ("b", false), ("c", true), ("d", true)], 50);
        assert_eq!(d.demoted, ["b".to_string()].into());
        assert!(!d.fail_open);
        // Exactly half healthy is not below half.
        let d = decide([("a", true), ("b", false)], 50);
        assert!(!d.fail_open && d.demoted.len() == 1);
        let d = decide([("a", true), ("b", false), ("c", false)], 50);
        assert!(d.fail_open && d.demoted.is_empty());
        // All unhealthy fails open even with a share of 0.
        let d = decide([("a", false)], 0);
        assert!(d.fail_open);
        assert_eq!(decide([("a", true)], 50), Decision::default());
        assert_eq!(decide([], 50), Decision::default());
    }

    #[test]
    fn one_change_per_hold_time_and_the_last_wanted_wins() {
        let hold = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut d = Damper::default();
        let down = Decision {
            demoted: ["b".to_string()].into(),
            fail_open: false,
        };
        // The first change goes in at once.
        assert_eq!(d.admit("web", &down, hold, t0), (down.clone(), None));
        // Back up 1 s later: held until t0 + 10 s.
        let up = Decision::default();
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            d.admit("web", &up, hold, t1),
            (down.clone(), Some(t0 + hold))
        );
        // Down again before then: nothing to do, it is what is installed.
        assert_eq!(d.admit("web", &down, hold, t1), (down.clone(), None));
        let t2 = t0 + hold;
        assert_eq!(d.admit("web", &up, hold, t2), (up.clone(), None));
        // Another service has its own hold.
        assert_eq!(d.admit("db", &down, hold, t2), (down.clone(), None));
    }
}
