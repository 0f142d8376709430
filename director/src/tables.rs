//! Pure conversion: a validated backends config and its tablegen tables become the images the
//! kernel maps hold (one table per service, the VIP/bind index), with service and bind ids
//! that stay stable across reloads so counters keep their meaning.
//!
//! Must not do: touch maps (that is `datapath`), I/O, clocks.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use tablegen::config::{Config, Proto, Service};
use tablegen::hash::key_halves;
use tablegen::table::Table;

use crate::bpf::types::{
    director_limit as Limit, director_port_range, director_row, director_table_hdr, director_vip,
};
use crate::error::TablesError;

/// Sizes fixed by bpf/include/abi.h's `enum director_limit` (the pinned maps are created with
/// them), from the generated type.
pub const MAX_SERVICES: usize = Limit::DIRECTOR_MAX_SERVICES.0 as usize;
pub const MAX_BINDS: usize = Limit::DIRECTOR_MAX_BINDS.0 as usize;
pub const MAX_VIPS: usize = Limit::DIRECTOR_MAX_VIPS.0 as usize;
pub const VIP_RANGES: usize = Limit::DIRECTOR_VIP_RANGES.0 as usize;
pub const MAX_BACKENDS: usize = Limit::DIRECTOR_MAX_BACKENDS.0 as usize;
/// GUE_MAX_HOPS (bpf/include/gue.h): the addresses a generated `director_row` holds.
pub const MAX_HOPS: usize = array_len(|r: director_row| r.hops);

/// `director_table_hdr.gue_flags`: bpf/include/abi.h's `enum director_gue_flag`.
pub const GUE_UDP_SECOND_CHANCE: u8 = 1;

const fn array_len<T, const N: usize>(_: fn(director_row) -> [T; N]) -> usize {
    N
}

const _: () = assert!(std::mem::size_of::<director_row>() == 72);
const _: () = assert!(std::mem::size_of::<director_table_hdr>() == 48);
const _: () = assert!(std::mem::size_of::<director_vip>() == 8 + 8 * VIP_RANGES);

/// A VIP map key: the address in 16 bytes (IPv4 as ::ffff:a.b.c.d) and the protocol
/// (0 = "is a VIP" marker).
pub type VipKey = ([u8; 16], u8);

/// The 16-byte form of an address used in map keys and rows.
pub fn addr16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The hop form of a backend address: IPv4 in the first 4 bytes (what the program copies).
fn hop16(a: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match a {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

/// Service and bind ids, kept across reloads and restarts (saved in the state file).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ids {
    pub services: BTreeMap<String, u32>,
    pub binds: BTreeMap<String, u32>,
    /// Backend address -> its slot in the next-hop cache.
    #[serde(default)]
    pub backends: BTreeMap<String, u32>,
}

fn alloc(map: &BTreeMap<String, u32>, used: &BTreeSet<u32>) -> u32 {
    let mut taken: BTreeSet<u32> = map.values().copied().collect();
    taken.extend(used.iter().copied());
    (0..)
        .find(|i| !taken.contains(i))
        .expect("ids are bounded by the caller")
}

/// Keep the ids of names that still exist, give new names the lowest free ids.
fn assign(prev: &BTreeMap<String, u32>, names: &[String]) -> (BTreeMap<String, u32>, Vec<u32>) {
    // A set to look names up in: a thousand backends against a thousand ids is a million
    // string comparisons otherwise (a millisecond on every health change).
    let wanted: BTreeSet<&String> = names.iter().collect();
    let mut out: BTreeMap<String, u32> = prev
        .iter()
        .filter(|(n, _)| wanted.contains(n))
        .map(|(n, i)| (n.clone(), *i))
        .collect();
    let mut fresh = Vec::new();
    for n in names {
        if !out.contains_key(n) {
            let id = alloc(&out, &BTreeSet::new());
            out.insert(n.clone(), id);
            fresh.push(id);
        }
    }
    (out, fresh)
}

/// The text identity of a bind (its stats id key), e.g. `web|10.100.0.1|tcp|80-80`.
pub fn bind_name(service: &str, vip: IpAddr, proto: Proto, first: u16, last: u16) -> String {
    format!("{service}|{vip}|{}|{first}-{last}", proto.as_str())
}

/// One service's table as the kernel holds it.
#[derive(Clone, Debug)]
pub struct ServiceImage {
    pub id: u32,
    pub name: String,
    pub hdr: director_table_hdr,
    /// Row r at index r (the map holds it at 1 + r).
    pub rows: Rows,
    pub backends: usize,
    pub binds: usize,
    /// Its table changes with the backends' health (the service has checks): the datapath
    /// keeps the version a swap took out, to write the next one into (changed rows only).
    pub health_checked: bool,
}

/// A table's rows in the form they are built from: tablegen's entries and, per backend, its
/// hop address and next-hop slot. A `director_row` is made on demand ([`Rows::row`]), so a
/// version that differs from another in a few rows costs only those rows ([`Rows::differ`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rows {
    width: usize,
    count: usize,
    entries: Vec<u32>,
    hops: Vec<[u8; 16]>,
    slots: Vec<u32>,
}

impl Rows {
    /// How many rows (0 for a service without backends).
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Row `r` as the kernel holds it: backend addresses, primary first, and the primary's
    /// next-hop cache slot.
    pub fn row(&self, r: usize) -> director_row {
        let entries = &self.entries[r * self.width..(r + 1) * self.width];
        let mut row = director_row::default();
        for (i, b) in entries.iter().take(MAX_HOPS).enumerate() {
            row.hops[i] = self.hops[*b as usize];
        }
        row.primary_nh = self.slots[entries[0] as usize];
        row
    }

    /// Every row, in order.
    pub fn iter(&self) -> impl Iterator<Item = director_row> + '_ {
        (0..self.count).map(|r| self.row(r))
    }

    /// The rows whose kernel form differs between `self` and `other`, or `None` when they
    /// cannot be compared row by row (other sizes, or the backends' addresses or slots
    /// differ: then every row may).
    pub fn differ(&self, other: &Rows) -> Option<Vec<usize>> {
        if (self.width, self.count) != (other.width, other.count)
            || self.hops != other.hops
            || self.slots != other.slots
        {
            return None;
        }
        let w = self.width.max(1);
        Some(
            self.entries
                .chunks_exact(w)
                .zip(other.entries.chunks_exact(w))
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .map(|(r, _)| r)
                .collect(),
        )
    }
}

/// Everything one reload installs.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub services: Vec<ServiceImage>,
    pub vips: BTreeMap<VipKey, director_vip>,
    pub ids: Ids,
    /// Ids handed out for the first time by this snapshot: their counters start at zero.
    pub fresh_service_ids: Vec<u32>,
    pub fresh_bind_ids: Vec<u32>,
    /// Binds of the previous snapshot that are gone while their service stays: (bind id,
    /// service id). Their counts move into the service's retired total (the program counts
    /// per bind only; a service's count is its binds' plus what its removed binds counted).
    pub retired_binds: Vec<(u32, u32)>,
}

/// The header of a service's table.
pub fn table_hdr(id: u32, service: &Service, table: &Table) -> director_table_hdr {
    let (k0, k1) = key_halves(&service.hash_key);
    let family = match service.backends.first().map(|b| b.address) {
        Some(IpAddr::V6(_)) => 6,
        _ => 4,
    };
    director_table_hdr {
        hash_k0: k0,
        hash_k1: k1,
        version: table.version,
        checksum: table.checksum,
        rows_mask: table.rows - 1,
        width: table.width,
        fields: service.hash_fields.0,
        family,
        gue_flags: if service.udp_second_chance {
            GUE_UDP_SECOND_CHANCE
        } else {
            0
        },
        service: id,
        ..Default::default()
    }
}

/// The rows of a service's table: backend addresses, primary first, and the primary's
/// next-hop cache slot (`nh` maps an address to it).
pub fn table_rows(service: &Service, table: &Table, nh: &BTreeMap<String, u32>) -> Rows {
    let width = usize::from(table.width);
    if width == 0 {
        return Rows::default();
    }
    // Per backend once, not per row: 65536 rows of address formatting cost milliseconds.
    Rows {
        width,
        count: table.entries.len() / width,
        entries: table.entries.clone(),
        hops: service.backends.iter().map(|b| hop16(b.address)).collect(),
        slots: service
            .backends
            .iter()
            .map(|b| nh.get(&b.address.to_string()).copied().unwrap_or(0))
            .collect(),
    }
}

/// Build the kernel images of `config` and its `tables` (tablegen::table::build_all order).
/// `have_v4` / `have_v6`: whether director.yaml gives an outer source of that family.
pub fn snapshot(
    config: &Config,
    tables: &[Table],
    prev: &Ids,
    have_v4: bool,
    have_v6: bool,
) -> Result<Snapshot, TablesError> {
    if config.services.len() > MAX_SERVICES {
        return Err(TablesError::TooManyServices {
            count: config.services.len(),
            max: MAX_SERVICES,
        });
    }
    let service_names: Vec<String> = config.services.iter().map(|s| s.name.clone()).collect();
    let bind_names: Vec<String> = config
        .services
        .iter()
        .flat_map(|s| {
            s.binds
                .iter()
                .map(|b| bind_name(&s.name, b.vip, b.proto, b.port_first, b.port_last))
        })
        .collect();
    if bind_names.len() > MAX_BINDS {
        return Err(TablesError::TooManyBindIds {
            count: bind_names.len(),
            max: MAX_BINDS,
        });
    }
    let (service_ids, fresh_service_ids) = assign(&prev.services, &service_names);
    let (bind_ids, fresh_bind_ids) = assign(&prev.binds, &bind_names);
    let retired_binds = prev
        .binds
        .iter()
        .filter(|(name, _)| !bind_ids.contains_key(*name))
        .filter_map(|(name, id)| {
            let service = name.split_once('|')?.0;
            Some((*id, *service_ids.get(service)?))
        })
        .collect();
    let mut backend_names: Vec<String> = config
        .services
        .iter()
        .flat_map(|s| s.backends.iter().map(|b| b.address.to_string()))
        .collect();
    backend_names.sort();
    backend_names.dedup();
    if backend_names.len() > MAX_BACKENDS {
        return Err(TablesError::TooManyBackends {
            count: backend_names.len(),
            max: MAX_BACKENDS,
        });
    }
    let (backend_ids, _) = assign(&prev.backends, &backend_names);

    let mut services = Vec::new();
    let mut ranges: BTreeMap<VipKey, Vec<director_port_range>> = BTreeMap::new();
    for (service, table) in config.services.iter().zip(tables) {
        let id = service_ids[&service.name];
        let hdr = table_hdr(id, service, table);
        if table.width > 0 {
            let (family, have) = if hdr.family == 6 {
                (6, have_v6)
            } else {
                (4, have_v4)
            };
            if !have {
                return Err(TablesError::NoSource {
                    service: service.name.clone(),
                    family,
                });
            }
        }
        for b in &service.binds {
            let bid =
                bind_ids[&bind_name(&service.name, b.vip, b.proto, b.port_first, b.port_last)];
            ranges
                .entry((addr16(b.vip), b.proto.number()))
                .or_default()
                .push(director_port_range {
                    first: b.port_first,
                    last: b.port_last,
                    service: id as u16,
                    bind: bid as u16,
                });
            ranges.entry((addr16(b.vip), 0)).or_default();
        }
        services.push(ServiceImage {
            id,
            name: service.name.clone(),
            hdr,
            rows: table_rows(service, table, &backend_ids),
            backends: service.backends.len(),
            binds: service.binds.len(),
            health_checked: service
                .health
                .as_ref()
                .is_some_and(|h| !h.checks.is_empty()),
        });
    }
    if ranges.len() > MAX_VIPS {
        return Err(TablesError::TooManyVips {
            count: ranges.len(),
            max: MAX_VIPS,
        });
    }
    let mut vips = BTreeMap::new();
    for (key, mut list) in ranges {
        if list.len() > VIP_RANGES {
            let vip = if key.0[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] {
                IpAddr::from([key.0[12], key.0[13], key.0[14], key.0[15]])
            } else {
                IpAddr::from(key.0)
            };
            return Err(TablesError::TooManyBinds {
                vip,
                proto: if key.1 == 6 { "tcp" } else { "udp" },
                count: list.len(),
                max: VIP_RANGES,
            });
        }
        // Narrowest first: a single port wins over a range containing it (tablegen refuses
        // overlaps today; the order keeps the rule obvious if that ever changes).
        list.sort_by_key(|r| (u32::from(r.last) - u32::from(r.first), r.first));
        let mut v = director_vip {
            count: list.len() as u32,
            ..Default::default()
        };
        v.ranges[..list.len()].copy_from_slice(&list);
        vips.insert(key, v);
    }
    Ok(Snapshot {
        services,
        vips,
        ids: Ids {
            services: service_ids,
            binds: bind_ids,
            backends: backend_ids,
        },
        fresh_service_ids,
        fresh_bind_ids,
        retired_binds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::AbiBytes;

    /// `tablegen lookup --director` reads the kernel's tables with tablegen's own idea of
    /// abi.h's layout: held here to the types generated from abi.h, through the images the
    /// daemon installs.
    #[test]
    fn tablegen_reads_the_installed_table_as_the_daemon_writes_it() {
        use tablegen::installed::{parse_hdr, HDR_SIZE, MAX_HOPS as TG_HOPS, ROW_SIZE};
        assert_eq!(HDR_SIZE, std::mem::size_of::<director_table_hdr>());
        assert_eq!(ROW_SIZE, std::mem::size_of::<director_row>());
        assert_eq!(TG_HOPS, MAX_HOPS);
        for (family, addr) in [(4, "10.0.0."), (6, "2001:db8::")] {
            let text = format!(
                "services:\n  - name: web\n    hash_key: 0102030405060708090a0b0c0d0e0f10\n    seed: 02020202020202020202020202020202\n    table_bits: 8\n    hops: 3\n    hash: [src_ip, dst_port]\n    binds: []\n    backends:\n      - {{ name: a, address: \"{addr}1\" }}\n      - {{ name: b, address: \"{addr}2\" }}\n      - {{ name: c, address: \"{addr}3\" }}\n      - {{ name: d, address: \"{addr}4\" }}\n"
            );
            let c = Config::parse(std::path::Path::new("t.yaml"), &text).unwrap();
            let t = tablegen::table::build(&c.services[0]);
            let hdr = table_hdr(5, &c.services[0], &t);
            let rows = table_rows(&c.services[0], &t, &BTreeMap::new());
            let h = parse_hdr(hdr.as_bytes()).unwrap();
            assert_eq!(h.hash_key, c.services[0].hash_key);
            assert_eq!((h.version, h.checksum), (t.version, t.checksum));
            assert_eq!(
                (h.rows, h.width, h.family, h.service),
                (t.rows, 3, family, 5)
            );
            assert_eq!(h.fields, c.services[0].hash_fields);
            for (r, row) in rows.iter().enumerate() {
                let row = &row;
                let want: Vec<IpAddr> = t
                    .row(r as u32)
                    .iter()
                    .map(|&b| c.services[0].backends[b as usize].address)
                    .collect();
                assert_eq!(h.parse_row(row.as_bytes()).unwrap(), want, "row {r}");
            }
        }
    }

    #[test]
    fn ids_are_stable_and_reused_lowest_first() {
        let mut prev = BTreeMap::new();
        prev.insert("a".to_string(), 0);
        prev.insert("b".to_string(), 1);
        prev.insert("c".to_string(), 2);
        let (ids, fresh) = assign(&prev, &["c".into(), "d".into(), "a".into()]);
        assert_eq!(ids["a"], 0);
        assert_eq!(ids["c"], 2);
        assert_eq!(ids["d"], 1);
        assert_eq!(fresh, vec![1]);
    }
}
