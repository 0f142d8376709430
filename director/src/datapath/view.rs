//! The read-only view of the pinned maps for `status`: no program is loaded.

use std::io;
use std::path::Path;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::counters::{Counters, ServiceCounts, Slots};
use super::install::{table_hdr, vip_key};
use super::{
    AbiBytes, MAP_BIND, MAP_REASON, MAP_SERVICE, MAP_SERVICE_TOTALS, MAP_TABLES, MAP_TABLES_FIXED,
    MAP_VIPS,
};
use crate::bpf::types::{director_table_hdr, director_vip};
use crate::error::DatapathError;
use crate::tables::VipKey;

/// Read-only view of the pinned maps for `status`: no program is loaded.
#[derive(Debug)]
pub struct PinnedView {
    tables: MapHandle,
    tables_fixed: Option<MapHandle>,
    reason: MapHandle,
    /// stats_service_retired, or an older daemon's stats_service (see `ServiceCounts`).
    service: Result<MapHandle, MapHandle>,
    bind: MapHandle,
    vips: MapHandle,
}

impl PinnedView {
    pub fn open(pin_dir: &Path) -> Result<PinnedView, DatapathError> {
        let open = |name: &str| {
            let path = pin_dir.join(name);
            MapHandle::from_pinned_path(&path).map_err(|e| DatapathError::OpenPinned {
                path,
                source: io::Error::other(e.to_string()),
            })
        };
        Ok(PinnedView {
            tables: open(MAP_TABLES)?,
            // Absent in pins left by a version without it.
            tables_fixed: open(MAP_TABLES_FIXED).ok(),
            reason: open(MAP_REASON)?,
            service: match open(MAP_SERVICE) {
                Ok(m) => Ok(m),
                Err(e) => Err(open(MAP_SERVICE_TOTALS).map_err(|_| e)?),
            },
            bind: open(MAP_BIND)?,
            vips: open(MAP_VIPS)?,
        })
    }

    pub fn table_hdr(&self, service: u32) -> Option<director_table_hdr> {
        table_hdr(self.tables_fixed.as_ref(), &self.tables, service)
    }

    /// Every counter slot, in use or not.
    pub fn counters(&self) -> Counters {
        self.counters_of(Slots::All)
    }

    /// The reasons, and only the service and bind slots in `slots` (others read as zero).
    pub fn counters_of(&self, slots: Slots<'_>) -> Counters {
        let services = match &self.service {
            Ok(m) => ServiceCounts::Retired(m),
            Err(m) => ServiceCounts::Totals(m),
        };
        Counters::read(&self.reason, services, &self.bind, &self.vips, slots)
    }

    /// Number of (VIP, protocol) entries in the bind index.
    pub fn vip_entries(&self) -> usize {
        self.vips.keys().count()
    }

    /// The bind index entry of (VIP, protocol), as the program sees it.
    pub fn vip(&self, key: &VipKey) -> Option<director_vip> {
        let v = self
            .vips
            .lookup(vip_key(key).as_bytes(), MapFlags::ANY)
            .ok()??;
        Some(director_vip::from_bytes(&v))
    }
}
