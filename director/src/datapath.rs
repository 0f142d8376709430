//! The only module that touches the kernel's BPF objects: loads the XDP program, pins and
//! reuses maps under `<bpffs_dir>/director`, attaches through pinned bpf_links, swaps table
//! versions, reads counters.
//!
//! Pinned layout (docs/setup/director.md): `<pin_dir>/<map name>` for every map,
//! `<pin_dir>/prog` for the program, `<pin_dir>/links/<ifname>` for each XDP link. A pinned
//! link keeps the program attached when the daemon exits; a new daemon loads its program, reuses
//! the pinned maps (tables keep forwarding) and swaps the program into the links atomically.
//!
//! Must not do: decide policy (which tables, when); that is the daemon's.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libbpf_rs::libbpf_sys;
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType, Object, ObjectBuilder};

use crate::bpf::types::{
    director_config, director_counter, director_hash_state, director_slot, director_table_hdr,
    director_vip, director_vip_filter, director_vip_key, director_vip_slot,
};
use crate::error::DatapathError;
use crate::tables::{ServiceImage, Snapshot, VipKey, MAX_BINDS, MAX_SERVICES};
use tablegen::hash::{flow_key_bytes, flow_key_split, siphash13_state, Flow, HashFields};

/// The compiled program (build.rs writes it next to the skeleton).
const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/director.bpf.o"));
const PROG_NAME: &str = "xdplb_director";
const MAP_TABLES: &str = "director_tables";
const MAP_TABLES_FIXED: &str = "director_tables_fixed";
const MAP_VIPS: &str = "director_vips";
const MAP_CONFIG: &str = "director_config";
const MAP_VIP_FILTER: &str = "director_vip_filter";
const MAP_VIP_INDEX: &str = "director_vip_index";
const MAP_HASH_STATES: &str = "director_hash_states";
/// Maps older versions pinned and this one no longer uses: unpinned when the program loads.
const RETIRED_MAPS: &[&str] = &["director_slot_keys", MAP_SERVICE_TOTALS];
const MAP_REASON: &str = "stats_reason";
const MAP_SERVICE: &str = "stats_service_retired";
/// Older versions counted every packet for its service too, in this map: read once to carry
/// the removed binds' counts over (see `Datapath::open`), then unpinned.
const MAP_SERVICE_TOTALS: &str = "stats_service";
const MAP_BIND: &str = "stats_bind";
/// Inner maps must carry the template's flags exactly (the kernel compares them).
const INNER_FLAGS: u32 = libbpf_sys::BPF_F_INNER_MAP | libbpf_sys::BPF_F_MMAPABLE;
const FIXED_FLAGS: u32 = libbpf_sys::BPF_F_MMAPABLE;
/// DIRECTOR_FIXED_ROWS of abi.h: tables of exactly this many rows go in
/// `director_tables_fixed`, in inner maps of 1 + FIXED_ROWS entries.
const FIXED_ROWS: usize = 65536;
const SLOT_SIZE: usize = std::mem::size_of::<director_slot>();

const _: () = assert!(SLOT_SIZE == 72);
const _: () = assert!(std::mem::size_of::<director_config>() == 32);
const _: () = assert!(std::mem::size_of::<director_vip_key>() == 20);
const _: () = assert!(std::mem::size_of::<director_counter>() == 16);
const _: () = assert!(std::mem::size_of::<director_vip_filter>() == 8 + VIP_FILTER_BITS / 8);
const _: () = assert!(std::mem::size_of::<director_vip_slot>() == 160);

/// DIRECTOR_VIP_FILTER_BITS of abi.h.
const VIP_FILTER_BITS: usize = 4096;
/// DIRECTOR_VIP_SLOTS of abi.h.
const VIP_SLOTS: usize = 4096;

/// The bytes of a plain `repr(C)` map type from abi.h (explicit padding, no pointers).
fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: only used with the generated abi.h types: repr(C), Copy, every byte initialised
    // (abi.h spells out padding as fields, and values are built from Default).
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

fn from_bytes<T: Copy + Default>(b: &[u8]) -> T {
    let mut v = T::default();
    let n = std::mem::size_of::<T>().min(b.len());
    // SAFETY: T is a plain abi.h type for which every bit pattern is valid.
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), (&mut v as *mut T).cast::<u8>(), n) };
    v
}

/// libbpf's own maps (".kconfig": the kernel's settings this boot, e.g. CONFIG_HZ) are named
/// "<object>.<section>". They belong to one load: never pinned, never reused.
fn is_internal(map_name: &str) -> bool {
    map_name.contains('.')
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths we build have no NUL")
}

fn last_os_error(rc: i32) -> io::Error {
    if rc < 0 {
        io::Error::from_raw_os_error(-rc)
    } else {
        io::Error::last_os_error()
    }
}

/// XDP attachment mode actually in use on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    Native,
    Generic,
    /// Found pinned from an earlier run; the mode was chosen then.
    Kept,
}

impl AttachMode {
    fn flags(self) -> u32 {
        match self {
            AttachMode::Native => libbpf_sys::XDP_FLAGS_DRV_MODE,
            _ => libbpf_sys::XDP_FLAGS_SKB_MODE,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
            AttachMode::Kept => "kept",
        }
    }
}

/// Runtime settings of the program (the `director_config` map).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub src4: Option<std::net::Ipv4Addr>,
    pub src6: Option<std::net::Ipv6Addr>,
    pub gue_port: u16,
    pub nexthop_ttl_ms: u32,
}

/// Summed-over-CPUs packet and byte counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

/// The loaded program and its (pinned) maps.
#[derive(Debug)]
pub struct Datapath {
    obj: Object,
    /// The bind index this process last swapped in (slot -> slot bytes): a reload that
    /// changes only tables skips building and swapping an identical one (and its RCU wait).
    vip_index_written: std::sync::Mutex<Option<BTreeMap<usize, Vec<u8>>>>,
    pin_dir: PathBuf,
    tables: MapHandle,
    tables_fixed: MapHandle,
    vips: MapHandle,
    vip_filter: MapHandle,
    vip_index: MapHandle,
    hash_states: MapHandle,
    /// The hash states this process last wrote (entry -> value bytes), to write only changes.
    hash_states_written: std::sync::Mutex<BTreeMap<usize, Vec<u8>>>,
    config: MapHandle,
    reason: MapHandle,
    service: MapHandle,
    bind: MapHandle,
}

impl Datapath {
    /// Load the program, reusing every map already pinned under `pin_dir` (so a restart keeps
    /// the tables) and pinning the others. Nothing is attached yet.
    pub fn open(pin_dir: &Path) -> Result<Datapath, DatapathError> {
        common::check_bpffs(pin_dir)?;
        fs::create_dir_all(pin_dir.join("links")).map_err(|source| DatapathError::PinDir {
            path: pin_dir.into(),
            source,
        })?;
        let mut open = ObjectBuilder::default()
            .open_memory(OBJECT)
            .map_err(DatapathError::Load)?;
        let mut fresh = Vec::new();
        for mut m in open.maps_mut() {
            let name = m.name().to_string_lossy().into_owned();
            if is_internal(&name) {
                continue;
            }
            let path = pin_dir.join(&name);
            if path.exists() {
                m.reuse_pinned_map(&path)
                    .map_err(|source| DatapathError::ReusePin {
                        path: path.clone(),
                        source,
                    })?;
            } else {
                fresh.push(name);
            }
        }
        let mut obj = open.load().map_err(DatapathError::Load)?;
        for mut m in obj.maps_mut() {
            let name = m.name().to_string_lossy().into_owned();
            if fresh.contains(&name) {
                let path = pin_dir.join(&name);
                m.pin(&path).map_err(|e| DatapathError::Pin {
                    path,
                    source: io::Error::other(e.to_string()),
                })?;
            }
        }
        let handle = |name: &'static str| -> Result<MapHandle, DatapathError> {
            let m = obj
                .maps()
                .find(|m| m.name() == name)
                .expect("the object defines the map");
            MapHandle::try_from(&m).map_err(|source| DatapathError::Map {
                map: name,
                what: "duplicating its fd".into(),
                source,
            })
        };
        let dp = Datapath {
            tables: handle(MAP_TABLES)?,
            tables_fixed: handle(MAP_TABLES_FIXED)?,
            vips: handle(MAP_VIPS)?,
            vip_filter: handle(MAP_VIP_FILTER)?,
            vip_index: handle(MAP_VIP_INDEX)?,
            hash_states: handle(MAP_HASH_STATES)?,
            hash_states_written: std::sync::Mutex::new(BTreeMap::new()),
            config: handle(MAP_CONFIG)?,
            reason: handle(MAP_REASON)?,
            service: handle(MAP_SERVICE)?,
            bind: handle(MAP_BIND)?,
            pin_dir: pin_dir.into(),
            obj,
            vip_index_written: std::sync::Mutex::new(None),
        };
        // The filter may be fresh, or left by another version of the daemon: make it match the
        // VIPs now pinned before the program is attached.
        let pinned: Vec<Vec<u8>> = dp.vips.keys().collect();
        dp.write_vip_filter(pinned.iter().map(Vec::as_slice))?;
        // Likewise the bind index (absent when the pins come from a version without it).
        let mut binds = BTreeMap::new();
        for k in &pinned {
            let key: director_vip_key = from_bytes(k);
            if let Ok(Some(v)) = dp.vips.lookup(k, MapFlags::ANY) {
                binds.insert((key.addr, key.proto), from_bytes::<director_vip>(&v));
            }
        }
        dp.write_vip_index(&binds)?;
        // And the hash states (absent likewise, or a version behind after a crash).
        dp.write_hash_states(&binds, |id| dp.table_hdr(id), true)?;
        // Pins of a version that counted per service as well: what a service counted beyond
        // its current binds is what its removed binds counted (per CPU: both were counted on
        // the same CPU).
        if fresh.iter().any(|m| m == MAP_SERVICE) {
            if let Ok(old) = MapHandle::from_pinned_path(pin_dir.join(MAP_SERVICE_TOTALS)) {
                for (service, ids) in binds_of_services(&binds) {
                    let Some(mut left) = percpu(&old, service) else {
                        continue;
                    };
                    for b in ids {
                        for (l, c) in left.iter_mut().zip(percpu(&dp.bind, b).unwrap_or_default()) {
                            l.packets = l.packets.saturating_sub(c.packets);
                            l.bytes = l.bytes.saturating_sub(c.bytes);
                        }
                    }
                    set_percpu(&dp.service, service, &left, MAP_SERVICE)?;
                }
            }
        }
        for name in RETIRED_MAPS {
            let _ = fs::remove_file(pin_dir.join(name));
        }
        // The program pin is for bpftool and the curious: the links keep it alive.
        let prog_pin = pin_dir.join("prog");
        let _ = fs::remove_file(&prog_pin);
        let rc = unsafe {
            // SAFETY: a valid program fd and a NUL-terminated path.
            libbpf_sys::bpf_obj_pin(dp.prog_fd(), cpath(&prog_pin).as_ptr())
        };
        if rc != 0 {
            return Err(DatapathError::Pin {
                path: prog_pin,
                source: last_os_error(rc),
            });
        }
        Ok(dp)
    }

    fn prog_fd(&self) -> i32 {
        self.obj
            .progs()
            .find(|p| p.name() == PROG_NAME)
            .expect("the object defines the program")
            .as_fd()
            .as_raw_fd()
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Attach to `iface` (or move an existing pinned link of it to this program). With
    /// `want = None` the mode is native, falling back to generic if the driver refuses.
    pub fn attach(
        &self,
        iface: &str,
        want: Option<AttachMode>,
    ) -> Result<AttachMode, DatapathError> {
        let path = self.pin_dir.join("links").join(iface);
        if path.exists() {
            let link = open_pinned(&path)?;
            let rc = unsafe {
                // SAFETY: valid fds; NULL opts means "replace whatever program is there".
                libbpf_sys::bpf_link_update(link.as_raw_fd(), self.prog_fd(), std::ptr::null())
            };
            if rc == 0 {
                return Ok(AttachMode::Kept);
            }
            // The link's interface went away (or was re-created): start over.
            tracing::warn!(iface, error = %last_os_error(rc), "stale pinned link, re-attaching");
            let _ = fs::remove_file(&path);
        }
        let ifindex =
            nix::net::if_::if_nametoindex(iface).map_err(|source| DatapathError::Interface {
                name: iface.into(),
                source,
            })?;
        let modes = match want {
            Some(m) => vec![m],
            None => vec![AttachMode::Native, AttachMode::Generic],
        };
        let mut last = None;
        for mode in modes {
            // SAFETY: zeroed is a valid bpf_link_create_opts; sz tells libbpf its version.
            let mut opts: libbpf_sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
            opts.sz = std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _;
            opts.flags = mode.flags();
            let fd = unsafe {
                // SAFETY: valid program fd, an ifindex, initialised opts.
                libbpf_sys::bpf_link_create(
                    self.prog_fd(),
                    ifindex as i32,
                    libbpf_sys::BPF_XDP,
                    &opts,
                )
            };
            if fd < 0 {
                let e = last_os_error(fd);
                tracing::info!(iface, mode = mode.as_str(), error = %e, "xdp attach refused");
                last = Some((mode, e));
                continue;
            }
            // SAFETY: a fresh fd we own.
            let link = unsafe { OwnedFd::from_raw_fd(fd) };
            let rc = unsafe {
                // SAFETY: valid link fd and path.
                libbpf_sys::bpf_obj_pin(link.as_raw_fd(), cpath(&path).as_ptr())
            };
            if rc != 0 {
                return Err(DatapathError::Pin {
                    path,
                    source: last_os_error(rc),
                });
            }
            return Ok(mode);
        }
        let (mode, source) = last.expect("at least one mode was tried");
        Err(DatapathError::Attach {
            iface: iface.into(),
            mode: mode.as_str(),
            source,
        })
    }

    /// Interfaces with a pinned link.
    pub fn attached(&self) -> Vec<String> {
        attached_in(&self.pin_dir)
    }

    /// Detach and unpin the link of one interface.
    pub fn detach_iface(&self, iface: &str) -> Result<(), DatapathError> {
        detach_link(&self.pin_dir.join("links").join(iface))
    }

    /// Write the runtime settings (outer sources, GUE port, next-hop reuse). Also moves the
    /// next-hop generation on, so nothing cached under older settings is used again.
    pub fn set_config(&self, s: &Settings) -> Result<(), DatapathError> {
        let generation = self.read_config().generation.wrapping_add(1);
        let c = director_config {
            src6: s.src6.map(|a| a.octets()).unwrap_or_default(),
            src4: u32::from_ne_bytes(s.src4.map(|a| a.octets()).unwrap_or_default()),
            gue_port: s.gue_port.to_be(),
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
            .map(|v| from_bytes(&v))
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
            .update(&0u32.to_ne_bytes(), bytes_of(c), MapFlags::ANY)
            .map_err(|source| DatapathError::Map {
                map: MAP_CONFIG,
                what: "writing the settings".into(),
                source,
            })
    }

    /// Build a new inner map holding `img` and swap it into the service's slot. The swap is
    /// one map update: packets see the old version or this one, never a mix.
    pub fn install_service(&self, img: &ServiceImage) -> Result<(), DatapathError> {
        let t0 = std::time::Instant::now();
        // abi.h: FIXED_ROWS rows in a map of the one fixed size (inlined lookups), others
        // in one sized to fit.
        let fixed = img.rows.len() == FIXED_ROWS;
        let (entries, flags, outer, outer_name, other) = if fixed {
            let e = 1 + FIXED_ROWS;
            (
                e,
                FIXED_FLAGS,
                &self.tables_fixed,
                MAP_TABLES_FIXED,
                &self.tables,
            )
        } else {
            let e = 1 + img.rows.len().max(1);
            (e, INNER_FLAGS, &self.tables, MAP_TABLES, &self.tables_fixed)
        };
        let name = format!("xdplb_t{}", img.id);
        let opts = libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            map_flags: flags,
            ..Default::default()
        };
        let inner = MapHandle::create(
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
                inner.as_fd().as_raw_fd(),
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            return Err(DatapathError::MmapTable {
                service: img.name.clone(),
                source: io::Error::last_os_error(),
            });
        }
        {
            // SAFETY: the mapping is len >= entries * SLOT_SIZE bytes, writable, ours alone
            // until the swap below publishes it.
            let buf =
                unsafe { std::slice::from_raw_parts_mut(mem.cast::<u8>(), entries * SLOT_SIZE) };
            buf[..std::mem::size_of::<director_table_hdr>()].copy_from_slice(bytes_of(&img.hdr));
            for (i, row) in img.rows.iter().enumerate() {
                let off = (1 + i) * SLOT_SIZE;
                buf[off..off + SLOT_SIZE].copy_from_slice(bytes_of(row));
            }
        }
        // SAFETY: unmapping exactly what was mapped.
        unsafe { libc::munmap(mem, len) };
        tracing::debug!(service = %img.name, took_us = t0.elapsed().as_micros() as u64, "table built in the kernel");
        let fd = inner.as_fd().as_raw_fd() as u32;
        outer
            .update(&img.id.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .map_err(|source| DatapathError::Map {
                map: outer_name,
                what: format!("swapping in the table of {}", img.name),
                source,
            })?;
        // A table that changed kind: its old version goes only now. The program looks in the
        // fixed map first, so every packet meanwhile sees one whole version, old or new.
        let _ = other.delete(&img.id.to_ne_bytes());
        Ok(())
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
                .map(bytes_of)
                .chain(old_keys.iter().map(Vec::as_slice)),
        )?;
        for (key, v) in &snap.vips {
            self.vips
                .update(bytes_of(&vip_key(key)), bytes_of(v), MapFlags::ANY)
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
            .map(|k| bytes_of(&vip_key(k)).to_vec())
            .collect();
        let stale: Vec<Vec<u8>> = self.vips.keys().filter(|k| !want.contains(k)).collect();
        for k in stale {
            let _ = self.vips.delete(&k);
        }
        self.write_vip_filter(new_keys.iter().map(bytes_of))?;
        let live: BTreeSet<u32> = snap.services.iter().map(|s| s.id).collect();
        for id in 0..MAX_SERVICES as u32 {
            if !live.contains(&id) && self.inner_id(id).is_some() {
                let _ = self.tables_fixed.delete(&id.to_ne_bytes());
                let _ = self.tables.delete(&id.to_ne_bytes());
            }
        }
        // Backend ids may now name other addresses: cached next hops must not be reused.
        if !swapped.is_empty() {
            self.bump_generation()?;
        }
        Ok(swapped)
    }

    /// Write the started flow hashes (abi.h `director_hash_state`) of these binds: one per
    /// IPv6 VIP and one per IPv4 VIP and port of a single-port bind, with the key and fields
    /// of the bind's table. Only what changed since the last call, unless `all`.
    fn write_hash_states(
        &self,
        binds: &BTreeMap<VipKey, director_vip>,
        hdr_of: impl Fn(u32) -> Option<director_table_hdr>,
        all: bool,
    ) -> Result<(), DatapathError> {
        let want: BTreeMap<usize, Vec<u8>> = hash_states(binds, hdr_of)
            .into_iter()
            .map(|(i, st)| (i, bytes_of(&st).to_vec()))
            .collect();
        let mut written = self
            .hash_states_written
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let zero = bytes_of(&director_hash_state::default()).to_vec();
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
    fn write_vip_index(&self, binds: &BTreeMap<VipKey, director_vip>) -> Result<(), DatapathError> {
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
            .map(|(i, slot)| (*i, bytes_of(slot).to_vec()))
            .collect();
        let mut written = self
            .vip_index_written
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if written.as_ref() == Some(&image) {
            return Ok(());
        }
        let opts = libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
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
                .update(&(*i as u32).to_ne_bytes(), bytes_of(slot), MapFlags::ANY)
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
    fn write_vip_filter<'a>(
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

    /// Every counter.
    pub fn counters(&self) -> Counters {
        Counters::read(
            &self.reason,
            ServiceCounts::Retired(&self.service),
            &self.bind,
            &self.vips,
        )
    }

    /// Run the program once on `frame` (BPF_PROG_TEST_RUN) as if received on `ifindex` of the
    /// calling thread's network namespace. Returns the verdict and the frame it leaves.
    pub fn test_run(&self, frame: &[u8], ifindex: u32) -> Result<(u32, Vec<u8>), DatapathError> {
        let (ret, out, _) = self.test_run_repeat(frame, ifindex, 1)?;
        Ok((ret, out))
    }

    /// As [`Datapath::test_run`], `repeat` times on the same buffer (the kernel does not
    /// restore it between runs: see design.md §11); returns the kernel's mean time per run.
    pub fn test_run_repeat(
        &self,
        frame: &[u8],
        ifindex: u32,
        repeat: u32,
    ) -> Result<(u32, Vec<u8>, Duration), DatapathError> {
        let prog = self
            .obj
            .progs_mut()
            .find(|p| p.name() == PROG_NAME)
            .expect("program exists");
        let mut ctx = [0u8; 24]; // struct xdp_md
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes()); // data_end
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes()); // ingress_ifindex
        let mut out = vec![0u8; frame.len() + 256];
        let input = libbpf_rs::ProgramInput {
            data_in: Some(frame),
            data_out: Some(&mut out),
            context_in: Some(&mut ctx),
            repeat,
            ..Default::default()
        };
        let o = prog.test_run(input).map_err(DatapathError::TestRun)?;
        let ret = o.return_value;
        let dur = o.duration;
        let n = o.data.map(|d| d.len()).unwrap_or(0);
        out.truncate(n);
        Ok((ret, out, dur))
    }
}

/// The bit of a VIP address (IPv4 as ::ffff:a.b.c.d) in director_vip_filter: as maybe_vip in
/// bpf/director.bpf.c computes it.
fn vip_filter_bit(addr: &[u8; 16]) -> usize {
    let w = |i: usize| u32::from_ne_bytes(addr[4 * i..4 * i + 4].try_into().unwrap());
    ((w(0) ^ w(1) ^ w(2) ^ w(3)).wrapping_mul(0x9e37_79b1) >> 20) as usize
}

/// The bind index slot of a (VIP, protocol): as find_vip in bpf/director.bpf.c computes it.
pub fn vip_slot(addr: &[u8; 16], proto: u8) -> usize {
    let w = |i: usize| u32::from_ne_bytes(addr[4 * i..4 * i + 4].try_into().unwrap());
    ((w(0) ^ w(1) ^ w(2) ^ w(3))
        .wrapping_add(u32::from(proto))
        .wrapping_mul(0x9e37_79b1)
        >> 20) as usize
}

/// The director_hash_states entry of an IPv4 destination and port, as hash_state_index in
/// bpf/director.bpf.c computes it (address and port as they sit in the packet, read natively).
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

fn vip_key(k: &VipKey) -> director_vip_key {
    director_vip_key {
        addr: k.0,
        proto: k.1,
        ..Default::default()
    }
}

fn open_pinned(path: &Path) -> Result<OwnedFd, DatapathError> {
    let fd = unsafe {
        // SAFETY: NUL-terminated path.
        libbpf_sys::bpf_obj_get(cpath(path).as_ptr())
    };
    if fd < 0 {
        return Err(DatapathError::OpenPinned {
            path: path.into(),
            source: last_os_error(fd),
        });
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn attached_in(pin_dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(pin_dir.join("links"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn detach_link(path: &Path) -> Result<(), DatapathError> {
    let link = open_pinned(path)?;
    let rc = unsafe {
        // SAFETY: a valid link fd.
        libbpf_sys::bpf_link_detach(link.as_raw_fd())
    };
    // ENOLINK: already detached (interface gone); the pin still has to go.
    if rc != 0 && last_os_error(rc).raw_os_error() != Some(libc::ENOLINK) {
        return Err(DatapathError::Detach {
            path: path.into(),
            source: last_os_error(rc),
        });
    }
    fs::remove_file(path).map_err(|source| DatapathError::Detach {
        path: path.into(),
        source,
    })
}

/// Remove everything the director attached and pinned under `pin_dir`. Idempotent.
pub fn detach_all(pin_dir: &Path) -> Result<Vec<String>, DatapathError> {
    let ifaces = attached_in(pin_dir);
    for i in &ifaces {
        detach_link(&pin_dir.join("links").join(i))?;
    }
    if let Ok(rd) = fs::read_dir(pin_dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                let _ = fs::remove_dir(&p);
            } else {
                fs::remove_file(&p).map_err(|source| DatapathError::Detach {
                    path: p.clone(),
                    source,
                })?;
            }
        }
    }
    let _ = fs::remove_dir(pin_dir);
    Ok(ifaces)
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

fn table_hdr(
    fixed: Option<&MapHandle>,
    sized: &MapHandle,
    service: u32,
) -> Option<director_table_hdr> {
    let inner = MapHandle::from_map_id(inner_id(fixed, sized, service)?).ok()?;
    let v = inner.lookup(&0u32.to_ne_bytes(), MapFlags::ANY).ok()??;
    Some(from_bytes(&v))
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
fn percpu(map: &MapHandle, key: u32) -> Option<Vec<director_counter>> {
    let vals = map
        .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)
        .ok()??;
    Some(vals.iter().map(|v| from_bytes(v)).collect())
}

fn set_percpu(
    map: &MapHandle,
    key: u32,
    vals: &[director_counter],
    name: &'static str,
) -> Result<(), DatapathError> {
    let bytes: Vec<Vec<u8>> = vals.iter().map(|c| bytes_of(c).to_vec()).collect();
    map.update_percpu(&key.to_ne_bytes(), &bytes, MapFlags::ANY)
        .map_err(|source| DatapathError::Map {
            map: name,
            what: format!("writing the counters of entry {key}"),
            source,
        })
}

/// The binds (stats_bind ids) of each service (slot) in these (VIP, protocol) entries.
fn binds_of_services(binds: &BTreeMap<VipKey, director_vip>) -> BTreeMap<u32, Vec<u32>> {
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
enum ServiceCounts<'a> {
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
    fn read(
        reason: &MapHandle,
        services: ServiceCounts,
        bind: &MapHandle,
        vips: &MapHandle,
    ) -> Counters {
        let (ServiceCounts::Retired(m) | ServiceCounts::Totals(m)) = services;
        let mut c = Counters {
            reasons: (0..crate::counters::REASONS.len() as u32)
                .map(|i| sum_percpu(reason, i))
                .collect(),
            services: (0..MAX_SERVICES as u32).map(|i| sum_percpu(m, i)).collect(),
            binds: (0..MAX_BINDS as u32).map(|i| sum_percpu(bind, i)).collect(),
        };
        if let ServiceCounts::Retired(_) = services {
            let pairs: BTreeMap<VipKey, director_vip> = vips
                .keys()
                .filter_map(|k| {
                    let key: director_vip_key = from_bytes(&k);
                    let v = vips.lookup(&k, MapFlags::ANY).ok()??;
                    Some(((key.addr, key.proto), from_bytes::<director_vip>(&v)))
                })
                .collect();
            for (service, ids) in binds_of_services(&pairs) {
                let Some(total) = c.services.get_mut(service as usize) else {
                    continue;
                };
                for b in ids {
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

    pub fn counters(&self) -> Counters {
        let services = match &self.service {
            Ok(m) => ServiceCounts::Retired(m),
            Err(m) => ServiceCounts::Totals(m),
        };
        Counters::read(&self.reason, services, &self.bind, &self.vips)
    }

    /// Number of (VIP, protocol) entries in the bind index.
    pub fn vip_entries(&self) -> usize {
        self.vips.keys().count()
    }

    /// The bind index entry of (VIP, protocol), as the program sees it.
    pub fn vip(&self, key: &VipKey) -> Option<director_vip> {
        let v = self
            .vips
            .lookup(bytes_of(&vip_key(key)), MapFlags::ANY)
            .ok()??;
        Some(from_bytes(&v))
    }
}
