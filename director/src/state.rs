//! The daemon's state file (`<state_dir>/director-state.json`): what `status` shows besides
//! the counters it reads from the pinned maps, and the service/bind ids a restart must keep.
//! Written atomically (temp file + rename).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::tables::Ids;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub mode: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    pub id: u32,
    pub name: String,
    pub version: u64,
    pub checksum: u64,
    pub rows: u32,
    pub width: u8,
    pub backends: usize,
    pub binds: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reload {
    /// Seconds since the Unix epoch.
    pub time: u64,
    /// Services whose table was swapped.
    pub swapped: Vec<String>,
    /// From reading the source to the last swap, microseconds.
    pub took_us: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub time: u64,
    pub error: String,
}

/// A version the director refused (Consul source).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRejection {
    pub version: u64,
    pub error: String,
}

/// Where a Consul-following director stands (cluster::FollowerStatus, flattened).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub address: String,
    pub prefix: String,
    /// The last request to Consul got an answer.
    pub connected: bool,
    /// Seconds since the Unix epoch.
    pub last_contact: Option<u64>,
    pub last_error: Option<String>,
    /// What Consul says is live.
    pub current_version: Option<u64>,
    /// What this director serves.
    pub applied_version: Option<u64>,
    /// `consul` or `state_file` (the persisted copy, applied at start).
    pub applied_from: Option<String>,
    pub applied_at: Option<u64>,
    /// The newest version refused (checksum not reproduced, unreadable, not installable);
    /// cleared once a version is applied.
    pub rejected: Option<ClusterRejection>,
}

/// Reloads by result, kept in the state file so they survive restarts like the kernel's
/// counters. A health overlay install is not a reload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadCounts {
    /// Tables installed.
    pub applied: u64,
    /// The source was refused (invalid backends.yaml, a cluster version not reproduced):
    /// nothing changed.
    pub rejected: u64,
    /// The kernel refused an install: tables already swapped stay.
    pub failed: u64,
    /// Consul source: versions refused (each refusal of a version once, until one is applied).
    pub cluster_refusals: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub pid: u32,
    pub source: String,
    pub interfaces: Vec<Interface>,
    pub services: Vec<ServiceState>,
    pub ids: Ids,
    pub last_reload: Option<Reload>,
    pub last_rejected: Option<Rejected>,
    #[serde(default)]
    pub reloads: ReloadCounts,
    /// Consul source only.
    #[serde(default)]
    pub cluster: Option<ClusterState>,
    /// Only when some service is health-checked: the view a restart starts from.
    #[serde(default)]
    pub health: Option<crate::health::HealthState>,
    /// Only with `announce:`: per VIP announced or not, and why; BIRD's socket; the drain.
    #[serde(default)]
    pub announce: Option<crate::announce::AnnounceState>,
    /// `health_view:` only: the health view in Consul (written when, last error).
    #[serde(default)]
    pub health_view: Option<crate::health::publish::ViewStatus>,
}

impl State {
    pub fn read(path: &Path) -> Option<State> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }

    /// Replaced whole ([`daemon_support::write_atomic`]); 0644: `status` reads it.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("state serialises");
        daemon_support::write_atomic(path, &json, 0o644)
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
