//! Counters: the per-CPU `stats_reason`, `stats_bind` and `stats_service_retired` arrays,
//! summed over CPUs; a service counts what its current binds count plus what its removed
//! ones did.

use std::collections::BTreeMap;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::{AbiBytes, Datapath};
use crate::bpf::types::{director_counter, director_vip, director_vip_key};
use crate::error::DatapathError;
use crate::tables::{VipKey, MAX_BINDS, MAX_SERVICES};

/// Summed-over-CPUs packet and byte counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

impl Datapath {
    /// Every counter.
    pub fn counters(&self) -> Counters {
        Counters::read(
            &self.reason,
            ServiceCounts::Retired(&self.service),
            &self.bind,
            &self.vips,
            Slots::All,
        )
    }
}

/// Which service and bind slots to read: a per-CPU lookup is a syscall copying one value per
/// CPU, so `status` and `/metrics` read only the slots the installed config uses (a handful of
/// the 256 + 4096), and leave the others at zero.
#[derive(Clone, Copy, Debug)]
pub enum Slots<'a> {
    All,
    Only {
        services: &'a [u32],
        binds: &'a [u32],
    },
}

fn sum_percpu(map: &MapHandle, key: u32) -> Count {
    let mut c = Count::default();
    for x in percpu(map, key).unwrap_or_default() {
        c.packets += x.packets;
        c.bytes += x.bytes;
    }
    c
}

/// One entry of a per-CPU counter array, per CPU.
pub(super) fn percpu(map: &MapHandle, key: u32) -> Option<Vec<director_counter>> {
    let vals = map
        .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)
        .ok()??;
    Some(
        vals.iter()
            .map(|v| director_counter::from_bytes(v))
            .collect(),
    )
}

pub(super) fn set_percpu(
    map: &MapHandle,
    key: u32,
    vals: &[director_counter],
    name: &'static str,
) -> Result<(), DatapathError> {
    let bytes: Vec<Vec<u8>> = vals.iter().map(|c| c.as_bytes().to_vec()).collect();
    map.update_percpu(&key.to_ne_bytes(), &bytes, MapFlags::ANY)
        .map_err(|source| DatapathError::Map {
            map: name,
            what: format!("writing the counters of entry {key}"),
            source,
        })
}

/// The binds (stats_bind ids) of each service (slot) in these (VIP, protocol) entries.
pub(super) fn binds_of_services(binds: &BTreeMap<VipKey, director_vip>) -> BTreeMap<u32, Vec<u32>> {
    let mut out: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for v in binds.values() {
        for r in v.ranges.iter().take(v.count as usize) {
            out.entry(u32::from(r.service))
                .or_default()
                .push(u32::from(r.bind));
        }
    }
    out
}

/// Where a service's count comes from.
pub(super) enum ServiceCounts<'a> {
    /// What its removed binds counted; its current binds' counts are added.
    Retired(&'a MapHandle),
    /// Pins of an older daemon, which counted every packet for its service as well.
    Totals(&'a MapHandle),
}

/// All counters, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Indexed by `director_reason`.
    pub reasons: Vec<Count>,
    /// Indexed by service id.
    pub services: Vec<Count>,
    /// Indexed by bind id.
    pub binds: Vec<Count>,
}

impl Counters {
    pub(super) fn read(
        reason: &MapHandle,
        services: ServiceCounts,
        bind: &MapHandle,
        vips: &MapHandle,
        slots: Slots<'_>,
    ) -> Counters {
        let (ServiceCounts::Retired(m) | ServiceCounts::Totals(m)) = services;
        let read = |map: &MapHandle, max: usize, only: Option<&[u32]>| -> Vec<Count> {
            match only {
                None => (0..max as u32).map(|i| sum_percpu(map, i)).collect(),
                Some(ids) => {
                    let mut v = vec![Count::default(); max];
                    for &i in ids {
                        if let Some(slot) = v.get_mut(i as usize) {
                            *slot = sum_percpu(map, i);
                        }
                    }
                    v
                }
            }
        };
        let (only_services, only_binds) = match slots {
            Slots::All => (None, None),
            Slots::Only { services, binds } => (Some(services), Some(binds)),
        };
        let mut c = Counters {
            reasons: (0..crate::counters::REASONS.len() as u32)
                .map(|i| sum_percpu(reason, i))
                .collect(),
            services: read(m, MAX_SERVICES, only_services),
            binds: read(bind, MAX_BINDS, only_binds),
        };
        let selected: Option<std::collections::HashSet<u32>> =
            only_binds.map(|o| o.iter().copied().collect());
        if let ServiceCounts::Retired(_) = services {
            let pairs: BTreeMap<VipKey, director_vip> = vips
                .keys()
                .filter_map(|k| {
                    let key = director_vip_key::from_bytes(&k);
                    let v = vips.lookup(&k, MapFlags::ANY).ok()??;
                    Some(((key.addr, key.proto), director_vip::from_bytes(&v)))
                })
                .collect();
            for (service, ids) in binds_of_services(&pairs) {
                let Some(total) = c.services.get_mut(service as usize) else {
                    continue;
                };
                for b in ids {
                    // A bind outside the selection was not read: read it now.
                    if selected.as_ref().is_some_and(|o| !o.contains(&b)) {
                        if let Some(slot) = c.binds.get_mut(b as usize) {
                            *slot = sum_percpu(bind, b);
                        }
                    }
                    if let Some(x) = c.binds.get(b as usize) {
                        total.packets += x.packets;
                        total.bytes += x.bytes;
                    }
                }
            }
        }
        c
    }
}
