//! Installing: the runtime settings, the tables (one inner map per version, swapped whole), the
//! binds (`director_vips`, the bind index, the VIP filter) and the started flow hashes.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd};

use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

use super::counters::{percpu, set_percpu};
use super::{
    AbiBytes, Datapath, Settings, FIXED_FLAGS, FIXED_ROWS, INNER_FLAGS, MAP_CONFIG,
    MAP_HASH_STATES, MAP_SERVICE, MAP_TABLES, MAP_TABLES_FIXED, MAP_VIPS, MAP_VIP_FILTER,
    MAP_VIP_INDEX, SLOT_SIZE, VIP_FILTER_BITS, VIP_SLOTS,
};
use crate::bpf::types::{
    director_config, director_hash_state, director_table_hdr, director_vip, director_vip_filter,
    director_vip_key, director_vip_slot,
};
use crate::error::DatapathError;
use crate::tables::{Rows, ServiceImage, Snapshot, VipKey, MAX_SERVICES};
use tablegen::hash::{flow_key_bytes, flow_key_split, siphash13_state, Flow, HashFields};

impl Datapath {
    /// Write the runtime settings (outer sources, GUE port, next-hop reuse). Also moves the
    /// next-hop generation on, so nothing cached under older settings is used again.
    pub fn set_config(&self, s: &Settings) -> Result<(), DatapathError> {
        let generation = self.read_config().generation.wrapping_add(1);
        let c = director_config {
            src6: s.src6.map(|a| a.octets()).unwrap_or_default(),
            src4: u32::from_ne_bytes(s.src4.map(|a| a.octets()).unwrap_or_default()),
            gue_port: s.gue_port.to_be(),
            colocated: u8::from(s.colocated),
            nexthop_ttl_ms: s.nexthop_ttl_ms,
            generation,
            ..Default::default()
        };
        self.write_config(&c)
    }

    fn read_config(&self) -> director_config {
        self.config
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()
            .map(|v| director_config::from_bytes(&v))
            .unwrap_or_default()
    }

    /// Make every cached next hop stale (after a table change, or when routes or neighbours
    /// may have changed).
    pub fn bump_generation(&self) -> Result<(), DatapathError> {
        let mut c = self.read_config();
        c.generation = c.generation.wrapping_add(1);
        self.write_config(&c)
    }

    fn write_config(&self, c: &director_config) -> Result<(), DatapathError> {
        self.config
            .update(&0u32.to_ne_bytes(), c.as_bytes(), MapFlags::ANY)
            .map_err(|source| DatapathError::Map {
                map: MAP_CONFIG,
                what: "writing the settings".into(),
                source,
            })
    }

    /// Put `img` into a service's slot: written into an inner map of its own and swapped in
    /// with one map update, so packets see the old version or this one, never a mix.
    ///
    /// The inner map is a new one, or, for a service whose table follows health, the one the
    /// previous swap of that service took out: the kernel returns from a swap only after every
    /// program that could still read the old map has finished (an RCU grace period), so it is
    /// ours again, and only the rows that differ from what it holds are written.
    pub fn install_service(&self, img: &ServiceImage) -> Result<(), DatapathError> {
        let t0 = std::time::Instant::now();
        // abi.h: FIXED_ROWS rows in a map of the one fixed size (inlined lookups), others
        // in one sized to fit.
        let fixed = img.rows.len() == FIXED_ROWS;
        let (entries, outer, outer_name, other) = if fixed {
            (
                1 + FIXED_ROWS,
                &self.tables_fixed,
                MAP_TABLES_FIXED,
                &self.tables,
            )
        } else {
            (
                1 + img.rows.len().max(1),
                &self.tables,
                MAP_TABLES,
                &self.tables_fixed,
            )
        };
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let pair = kept.remove(&img.id).unwrap_or_default();
        // The spare is only ours if the map in the slot is the one we put there last.
        let live_is_ours = pair
            .live
            .as_ref()
            .is_some_and(|l| Some(l.id) == self.inner_id(img.id));
        let reuse = pair.spare.filter(|s| {
            live_is_ours && img.health_checked && s.entries == entries && s.fixed == fixed
        });
        let (mut table, changed) = match reuse {
            Some(mut spare) => {
                let rows = spare.rows.take();
                let changed = rows.as_ref().and_then(|r| img.rows.differ(r));
                (spare, changed)
            }
            None => (self.create_table(img, entries, fixed)?, None),
        };
        let written = table.write(&img.hdr, &img.rows, changed.as_deref());
        tracing::debug!(service = %img.name, rows = written, took_us = t0.elapsed().as_micros() as u64, "table written in the kernel");
        outer
            .update(&img.id.to_ne_bytes(), &table.id_fd(), MapFlags::ANY)
            .map_err(|source| DatapathError::Map {
                map: outer_name,
                what: format!("swapping in the table of {}", img.name),
                source,
            })?;
        // A table that changed kind: its old version goes only now. The program looks in the
        // fixed map first, so every packet meanwhile sees one whole version, old or new.
        let _ = other.delete(&img.id.to_ne_bytes());
        if img.health_checked {
            table.rows = Some(img.rows.clone());
            kept.insert(
                img.id,
                KeptPair {
                    live: Some(table),
                    spare: pair.live.filter(|_| live_is_ours),
                },
            );
        }
        Ok(())
    }

    /// A new, zeroed inner map for a table of `entries` slots, mapped into our memory.
    fn create_table(
        &self,
        img: &ServiceImage,
        entries: usize,
        fixed: bool,
    ) -> Result<KeptTable, DatapathError> {
        let name = format!("xdplb_t{}", img.id);
        let opts = self
            .table_btf
            .opts(if fixed { FIXED_FLAGS } else { INNER_FLAGS });
        let map = MapHandle::create(
            MapType::Array,
            Some(&name),
            4,
            SLOT_SIZE as u32,
            entries as u32,
            &opts,
        )
        .map_err(|source| DatapathError::CreateTable {
            service: img.name.clone(),
            source,
        })?;
        let len = (entries * SLOT_SIZE).div_ceil(4096) * 4096;
        // SAFETY: mapping a BPF_F_MMAPABLE array of `entries` slots; len covers it page-rounded.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.as_fd().as_raw_fd(),
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            return Err(DatapathError::MmapTable {
                service: img.name.clone(),
                source: io::Error::last_os_error(),
            });
        }
        let id = map.info().map(|i| i.info.id).unwrap_or(0);
        Ok(KeptTable {
            map,
            id,
            mem: mem.cast(),
            len,
            entries,
            fixed,
            rows: None,
        })
    }

    /// Install a whole snapshot: changed tables first, then the bind index (so no bind ever
    /// points at an empty slot), then remove what is gone. Returns the services swapped.
    pub fn install(&self, snap: &Snapshot) -> Result<Vec<String>, DatapathError> {
        let ncpu = libbpf_rs::num_possible_cpus().unwrap_or(1);
        let zero = vec![vec![0u8; 16]; ncpu];
        // Removed binds first (their ids may be handed out again below): what they counted
        // stays with their service. Packets that still match one in the moment before the
        // new binds are in place are not carried over.
        for &(bind, service) in &snap.retired_binds {
            let (Some(b), Some(mut total)) =
                (percpu(&self.bind, bind), percpu(&self.service, service))
            else {
                continue;
            };
            for (t, c) in total.iter_mut().zip(b) {
                t.packets += c.packets;
                t.bytes += c.bytes;
            }
            set_percpu(&self.service, service, &total, MAP_SERVICE)?;
            let _ = self
                .bind
                .update_percpu(&bind.to_ne_bytes(), &zero, MapFlags::ANY);
        }
        for id in &snap.fresh_service_ids {
            let _ = self
                .service
                .update_percpu(&id.to_ne_bytes(), &zero, MapFlags::ANY);
        }
        for id in &snap.fresh_bind_ids {
            let _ = self
                .bind
                .update_percpu(&id.to_ne_bytes(), &zero, MapFlags::ANY);
        }
        let mut swapped = Vec::new();
        for img in &snap.services {
            let same = self.table_hdr(img.id).is_some_and(|h| {
                h.version == img.hdr.version
                    && h.checksum == img.hdr.checksum
                    && h.service == img.id
            });
            if !same {
                self.install_service(img)?;
                swapped.push(img.name.clone());
            }
        }
        // The filter must cover every VIP the program can find: old and new ones while the
        // VIP map changes, only the new ones afterwards.
        let new_keys: Vec<director_vip_key> = snap.vips.keys().map(vip_key).collect();
        let old_keys: Vec<Vec<u8>> = self.vips.keys().collect();
        self.write_vip_filter(
            new_keys
                .iter()
                .map(AbiBytes::as_bytes)
                .chain(old_keys.iter().map(Vec::as_slice)),
        )?;
        for (key, v) in &snap.vips {
            self.vips
                .update(vip_key(key).as_bytes(), v.as_bytes(), MapFlags::ANY)
                .map_err(|source| DatapathError::Map {
                    map: MAP_VIPS,
                    what: "writing a bind".into(),
                    source,
                })?;
        }
        // Every pair is in the hash map now: the index may send overflowed slots there.
        self.write_vip_index(&snap.vips)?;
        // After the tables: until a state follows, packets hash again with their header's key.
        let hdr_of = |id: u32| snap.services.iter().find(|s| s.id == id).map(|s| s.hdr);
        self.write_hash_states(&snap.vips, hdr_of, false)?;
        let want: BTreeSet<Vec<u8>> = snap
            .vips
            .keys()
            .map(|k| vip_key(k).as_bytes().to_vec())
            .collect();
        let stale: Vec<Vec<u8>> = self.vips.keys().filter(|k| !want.contains(k)).collect();
        for k in stale {
            let _ = self.vips.delete(&k);
        }
        self.write_vip_filter(new_keys.iter().map(AbiBytes::as_bytes))?;
        let live: BTreeSet<u32> = snap.services.iter().map(|s| s.id).collect();
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| live.contains(id));
        // Every slot is looked at (two lookups each) only when the set of services changed
        // since this process last installed, or on its first install (a previous run's).
        let mut installed = self.installed_ids.lock().unwrap_or_else(|e| e.into_inner());
        if installed.as_ref() != Some(&live) {
            for id in 0..MAX_SERVICES as u32 {
                if !live.contains(&id) && self.inner_id(id).is_some() {
                    let _ = self.tables_fixed.delete(&id.to_ne_bytes());
                    let _ = self.tables.delete(&id.to_ne_bytes());
                }
            }
            *installed = Some(live);
        }
        drop(installed);
        // Backend ids may now name other addresses: cached next hops must not be reused.
        if !swapped.is_empty() {
            self.bump_generation()?;
        }
        Ok(swapped)
    }

    /// Write the started flow hashes (abi.h `director_hash_state`) of these binds: one per
    /// IPv6 VIP and one per IPv4 VIP and port of a single-port bind, with the key and fields
    /// of the bind's table. Only what changed since the last call, unless `all`.
    pub(super) fn write_hash_states(
        &self,
        binds: &BTreeMap<VipKey, director_vip>,
        hdr_of: impl Fn(u32) -> Option<director_table_hdr>,
        all: bool,
    ) -> Result<(), DatapathError> {
        let want: BTreeMap<usize, Vec<u8>> = hash_states(binds, hdr_of)
            .into_iter()
            .map(|(i, st)| (i, st.as_bytes().to_vec()))
            .collect();
        let mut written = self
            .hash_states_written
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let zero = director_hash_state::default().as_bytes().to_vec();
        let gone: Vec<usize> = written
            .keys()
            .filter(|k| !want.contains_key(k))
            .copied()
            .collect();
        let changes = want
            .iter()
            .filter(|(k, v)| all || written.get(*k) != Some(*v))
            .map(|(k, v)| (*k, v.clone()))
            .chain(gone.into_iter().map(|k| (k, zero.clone())))
            .collect::<Vec<_>>();
        for (i, value) in changes {
            self.hash_states
                .update(&(i as u32).to_ne_bytes(), &value, MapFlags::ANY)
                .map_err(|source| DatapathError::Map {
                    map: MAP_HASH_STATES,
                    what: format!("writing hash state {i}"),
                    source,
                })?;
        }
        *written = want;
        Ok(())
    }

    /// Build a new bind index for these binds and swap it in whole (abi.h: the smallest pair
    /// of a slot gets it, the others are marked to be looked up in director_vips).
    pub(super) fn write_vip_index(
        &self,
        binds: &BTreeMap<VipKey, director_vip>,
    ) -> Result<(), DatapathError> {
        let err = |what: &str| {
            let what = what.to_string();
            move |source| DatapathError::Map {
                map: MAP_VIP_INDEX,
                what,
                source,
            }
        };
        let mut slots: BTreeMap<usize, director_vip_slot> = BTreeMap::new();
        // Protocol 0 marks "is a VIP" for the slow paths; the index is for TCP/UDP only.
        for ((addr, proto), v) in binds.iter().filter(|((_, p), _)| *p != 0) {
            let slot = slots.entry(vip_slot(addr, *proto)).or_default();
            if slot.proto == 0 {
                slot.addr = *addr;
                slot.proto = *proto;
                slot.vip = *v;
            } else {
                slot.overflow = 1;
            }
        }
        let image: BTreeMap<usize, Vec<u8>> = slots
            .iter()
            .map(|(i, slot)| (*i, slot.as_bytes().to_vec()))
            .collect();
        let mut written = self
            .vip_index_written
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if written.as_ref() == Some(&image) {
            return Ok(());
        }
        let opts = self.vip_index_btf.opts(0);
        let inner = MapHandle::create(
            MapType::Array,
            Some("vip_index"),
            4,
            std::mem::size_of::<director_vip_slot>() as u32,
            VIP_SLOTS as u32,
            &opts,
        )
        .map_err(err("creating a bind index"))?;
        for (i, slot) in &slots {
            inner
                .update(&(*i as u32).to_ne_bytes(), slot.as_bytes(), MapFlags::ANY)
                .map_err(err("filling the bind index"))?;
        }
        let fd = inner.as_fd().as_raw_fd() as u32;
        self.vip_index
            .update(&0u32.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .map_err(err("swapping in the bind index"))?;
        *written = Some(image);
        Ok(())
    }

    /// Write director_vip_filter with the bits of these director_vip_key byte strings.
    pub(super) fn write_vip_filter<'a>(
        &self,
        keys: impl Iterator<Item = &'a [u8]>,
    ) -> Result<(), DatapathError> {
        let mut bits = [0u64; VIP_FILTER_BITS / 64];
        for k in keys {
            let b = vip_filter_bit(k[..16].try_into().expect("a 20-byte VIP key"));
            bits[b / 64] |= 1 << (b % 64);
        }
        let mut v = Vec::with_capacity(std::mem::size_of::<director_vip_filter>());
        v.extend_from_slice(&1u32.to_ne_bytes()); // enabled
        v.extend_from_slice(&0u32.to_ne_bytes());
        for w in bits {
            v.extend_from_slice(&w.to_ne_bytes());
        }
        self.vip_filter
            .update(&0u32.to_ne_bytes(), &v, MapFlags::ANY)
            .map_err(|source| DatapathError::Map {
                map: MAP_VIP_FILTER,
                what: "writing the VIP filter".into(),
                source,
            })
    }

    fn inner_id(&self, service: u32) -> Option<u32> {
        inner_id(Some(&self.tables_fixed), &self.tables, service)
    }

    /// The header of the table currently in a service's slot.
    pub fn table_hdr(&self, service: u32) -> Option<director_table_hdr> {
        table_hdr(Some(&self.tables_fixed), &self.tables, service)
    }
}

/// The bit of a VIP address (IPv4 as ::ffff:a.b.c.d) in director_vip_filter: as maybe_vip in
/// bpf/include/director_bind.h computes it.
fn vip_filter_bit(addr: &[u8; 16]) -> usize {
    let w = |i: usize| u32::from_ne_bytes(addr[4 * i..4 * i + 4].try_into().unwrap());
    ((w(0) ^ w(1) ^ w(2) ^ w(3)).wrapping_mul(0x9e37_79b1) >> 20) as usize
}

/// The bind index slot of a (VIP, protocol): as find_vip in bpf/include/director_bind.h
/// computes it.
pub fn vip_slot(addr: &[u8; 16], proto: u8) -> usize {
    let w = |i: usize| u32::from_ne_bytes(addr[4 * i..4 * i + 4].try_into().unwrap());
    ((w(0) ^ w(1) ^ w(2) ^ w(3))
        .wrapping_add(u32::from(proto))
        .wrapping_mul(0x9e37_79b1)
        >> 20) as usize
}

/// The director_hash_states entry of an IPv4 destination and port, as hash_state_index in
/// bpf/include/director_hash.h computes it (address and port as they sit in the packet, read
/// natively).
pub fn hash_state_index_v4(addr: Ipv4Addr, port: u16) -> usize {
    let a = u32::from_ne_bytes(addr.octets());
    let p = u32::from(u16::from_ne_bytes(port.to_be_bytes()));
    ((a ^ p.wrapping_mul(0x1_0001)).wrapping_mul(0x9e37_79b1) >> 18) as usize
}

/// The director_hash_states entry of an IPv6 destination.
pub fn hash_state_index_v6(addr: &[u8; 16]) -> usize {
    let w = |i: usize| u32::from_ne_bytes(addr[4 * i..4 * i + 4].try_into().unwrap());
    ((w(0) ^ w(1) ^ w(2) ^ w(3)).wrapping_mul(0x9e37_79b1) >> 18) as usize
}

/// The started flow hash of one destination under a table's key and fields (abi.h).
pub fn hash_state(hdr: &director_table_hdr, dst: IpAddr, dport: u16) -> director_hash_state {
    let unspecified = match dst {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    let flow = Flow {
        src: unspecified,
        dst,
        sport: 0,
        dport,
    };
    let (buf, len) = flow_key_bytes(HashFields(hdr.fields), &flow);
    let dst_part = &buf[..flow_key_split(len)];
    let v = siphash13_state(hdr.hash_k0, hdr.hash_k1, dst_part);
    let family: u8 = if dst.is_ipv4() { 4 } else { 6 };
    let mut check = v[0]
        ^ v[1]
        ^ v[2]
        ^ v[3]
        ^ hdr.hash_k0
        ^ hdr.hash_k1
        ^ (u64::from(hdr.fields) | u64::from(family) << 8);
    for w in dst_part.chunks_exact(8) {
        check ^= u64::from_le_bytes(w.try_into().unwrap());
    }
    director_hash_state {
        hash_k0: hdr.hash_k0,
        hash_k1: hdr.hash_k1,
        fields: hdr.fields,
        family,
        v,
        check,
        ..Default::default()
    }
}

/// Every entry of director_hash_states for these binds; of binds that share an entry, the
/// first in (VIP, protocol, port) order gets it.
fn hash_states(
    binds: &BTreeMap<VipKey, director_vip>,
    hdr_of: impl Fn(u32) -> Option<director_table_hdr>,
) -> BTreeMap<usize, director_hash_state> {
    let mut out = BTreeMap::new();
    for ((addr, _), v) in binds.iter().filter(|((_, p), _)| *p != 0) {
        let ip = std::net::Ipv6Addr::from(*addr);
        for r in v.ranges.iter().take(v.count as usize) {
            let Some(hdr) = hdr_of(u32::from(r.service)) else {
                continue;
            };
            let (i, dst, port) = match ip.to_ipv4_mapped() {
                // IPv4 hashes the port first too: one entry per single-port bind.
                Some(a) if r.first == r.last => {
                    (hash_state_index_v4(a, r.first), a.into(), r.first)
                }
                Some(_) => continue,
                None => (hash_state_index_v6(addr), ip.into(), 0),
            };
            out.entry(i).or_insert_with(|| hash_state(&hdr, dst, port));
        }
    }
    out
}

pub(super) fn vip_key(k: &VipKey) -> director_vip_key {
    director_vip_key {
        addr: k.0,
        proto: k.1,
        ..Default::default()
    }
}

/// The id of a service's inner map in one outer table map.
fn slot_id(outer: &MapHandle, service: u32) -> Option<u32> {
    let v = outer.lookup(&service.to_ne_bytes(), MapFlags::ANY).ok()??;
    Some(u32::from_ne_bytes(v[..4].try_into().ok()?))
}

/// The inner map the program uses for a service: the fixed-size kind first, as it looks
/// (`fixed` is None for pins of a version without it).
fn inner_id(fixed: Option<&MapHandle>, sized: &MapHandle, service: u32) -> Option<u32> {
    fixed
        .and_then(|m| slot_id(m, service))
        .or_else(|| slot_id(sized, service))
}

pub(super) fn table_hdr(
    fixed: Option<&MapHandle>,
    sized: &MapHandle,
    service: u32,
) -> Option<director_table_hdr> {
    let inner = MapHandle::from_map_id(inner_id(fixed, sized, service)?).ok()?;
    let v = inner.lookup(&0u32.to_ne_bytes(), MapFlags::ANY).ok()??;
    Some(director_table_hdr::from_bytes(&v))
}

/// A table's inner map this process created and keeps mapped (see
/// [`Datapath::install_service`]).
#[derive(Debug)]
pub(super) struct KeptTable {
    map: MapHandle,
    /// The kernel's id of `map`, as the outer maps report it.
    id: u32,
    mem: *mut u8,
    len: usize,
    entries: usize,
    fixed: bool,
    /// What its rows hold, when known.
    rows: Option<Rows>,
}

// SAFETY: `mem` is a shared mapping owned by this value alone (unmapped on drop); every access
// goes through `&mut self` or the `Datapath`'s mutex around it.
unsafe impl Send for KeptTable {}

impl KeptTable {
    /// Write `hdr` and `rows` (of them, only `changed` when given); returns the rows written.
    fn write(&mut self, hdr: &director_table_hdr, rows: &Rows, changed: Option<&[usize]>) -> usize {
        // SAFETY: the mapping is len >= entries * SLOT_SIZE bytes and writable; no program
        // reads this map while we hold it (new, or swapped out by a swap that has returned).
        let buf = unsafe { std::slice::from_raw_parts_mut(self.mem, self.entries * SLOT_SIZE) };
        buf[..director_table_hdr::SIZE].copy_from_slice(hdr.as_bytes());
        let mut put = |r: usize| {
            let off = (1 + r) * SLOT_SIZE;
            buf[off..off + SLOT_SIZE].copy_from_slice(rows.row(r).as_bytes());
        };
        match changed {
            Some(list) => {
                list.iter().for_each(|&r| put(r));
                list.len()
            }
            None => {
                (0..rows.len()).for_each(&mut put);
                rows.len()
            }
        }
    }

    fn id_fd(&self) -> [u8; 4] {
        (self.map.as_fd().as_raw_fd() as u32).to_ne_bytes()
    }
}

impl Drop for KeptTable {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what create_table mapped.
        unsafe { libc::munmap(self.mem.cast(), self.len) };
    }
}

/// Per health-checked service: the map in its slot and the one the last swap took out.
#[derive(Debug, Default)]
pub(super) struct KeptPair {
    live: Option<KeptTable>,
    spare: Option<KeptTable>,
}
