//! Loading: the program object, every map reused from its pin under `<bpffs_dir>/director`
//! or created and pinned, and the state a map of an older version leaves (see `Datapath::open`).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use libbpf_rs::libbpf_sys;
use libbpf_rs::{MapCore, MapFlags, MapHandle, ObjectBuilder};

use super::counters::{binds_of_services, percpu, set_percpu};
use super::AbiBytes;
use super::InnerBtf;
use super::{
    cpath, is_internal, last_os_error, Datapath, MAP_BIND, MAP_CONFIG, MAP_HASH_STATES, MAP_REASON,
    MAP_SERVICE, MAP_SERVICE_TOTALS, MAP_TABLES, MAP_TABLES_FIXED, MAP_VIPS, MAP_VIP_FILTER,
    MAP_VIP_INDEX, OBJECT, PROG_NAME, RETIRED_MAPS,
};
use crate::bpf::types::{director_vip, director_vip_key};
use crate::error::DatapathError;

impl Datapath {
    /// Load the program, reusing every map already pinned under `pin_dir` (so a restart keeps
    /// the tables) and pinning the others. Nothing is attached yet.
    pub fn open(pin_dir: &Path) -> Result<Datapath, DatapathError> {
        daemon_support::check_kernel()?;
        daemon_support::check_bpffs(pin_dir)?;
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
            table_btf: InnerBtf::of(&obj, "director_table_template"),
            vip_index_btf: InnerBtf::of(&obj, "director_vip_index_template"),
            tables: handle(MAP_TABLES)?,
            tables_fixed: handle(MAP_TABLES_FIXED)?,
            vips: handle(MAP_VIPS)?,
            vip_filter: handle(MAP_VIP_FILTER)?,
            vip_index: handle(MAP_VIP_INDEX)?,
            hash_states: handle(MAP_HASH_STATES)?,
            hash_states_written: std::sync::Mutex::new(BTreeMap::new()),
            kept: std::sync::Mutex::new(BTreeMap::new()),
            installed_ids: std::sync::Mutex::new(None),
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
            let key = director_vip_key::from_bytes(k);
            if let Ok(Some(v)) = dp.vips.lookup(k, MapFlags::ANY) {
                binds.insert((key.addr, key.proto), director_vip::from_bytes(&v));
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

    pub(super) fn prog_fd(&self) -> i32 {
        self.obj
            .progs()
            .find(|p| p.name() == PROG_NAME)
            .expect("the object defines the program")
            .as_fd()
            .as_raw_fd()
    }
}
