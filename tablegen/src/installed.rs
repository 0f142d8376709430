//! A director's installed tables, as its kernel maps hold them: the bytes of abi.h's
//! `director_table_hdr` (entry 0 of a service's table) and `director_row` (entry 1 + r) read
//! back, and one flow looked up in them beside the published table (`tablegen lookup
//! --director`). The installed table is the published one with the director's health
//! overlay; the comparison says whether health changed where the flow goes.
//!
//! The director's tests hold these offsets to the types its build generates from abi.h, so a
//! layout change there fails a test here rather than misreading a map.
//!
//! Must not do: I/O (the binary opens the pinned maps and the director's state file).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::config::{Config, Service};
use crate::hash::{flow_hash, Flow, HashFields};
use crate::report::{hex64, Lookup};

/// `sizeof(struct director_table_hdr)`.
pub const HDR_SIZE: usize = 48;
/// `sizeof(struct director_row)`.
pub const ROW_SIZE: usize = 72;
/// `GUE_MAX_HOPS`: the addresses a row holds.
pub const MAX_HOPS: usize = 4;

/// Byte offsets of `director_table_hdr`'s fields.
pub mod hdr_offset {
    pub const HASH_K0: usize = 0;
    pub const HASH_K1: usize = 8;
    pub const VERSION: usize = 16;
    pub const CHECKSUM: usize = 24;
    pub const ROWS_MASK: usize = 32;
    pub const WIDTH: usize = 36;
    pub const FIELDS: usize = 37;
    pub const FAMILY: usize = 38;
    pub const SERVICE: usize = 40;
}

/// `director_row.hops` starts the row; each hop is 16 bytes.
pub const ROW_HOPS_OFFSET: usize = 0;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InstalledError {
    #[error("a table header of {0} bytes (expected {HDR_SIZE}): not a table this tablegen reads")]
    HdrSize(usize),
    #[error("a table row of {0} bytes (expected {ROW_SIZE}): not a table this tablegen reads")]
    RowSize(usize),
    #[error("the installed table's address family is {0}, neither 4 nor 6")]
    Family(u8),
    #[error("the installed table of `{0}` has no eligible backend: its traffic is dropped")]
    Empty(String),
}

/// A service's installed table header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstalledHdr {
    /// The SipHash key (`hash_k0`, `hash_k1` as little-endian halves).
    pub hash_key: [u8; 16],
    pub version: u64,
    pub checksum: u64,
    pub rows: u32,
    pub width: u8,
    pub fields: HashFields,
    pub family: u8,
    /// The table's slot (the director's service id).
    pub service: u32,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Entry 0 of a service's table map.
pub fn parse_hdr(b: &[u8]) -> Result<InstalledHdr, InstalledError> {
    if b.len() < HDR_SIZE {
        return Err(InstalledError::HdrSize(b.len()));
    }
    use hdr_offset as o;
    let mut hash_key = [0u8; 16];
    hash_key[..8].copy_from_slice(&u64_at(b, o::HASH_K0).to_le_bytes());
    hash_key[8..].copy_from_slice(&u64_at(b, o::HASH_K1).to_le_bytes());
    let family = b[o::FAMILY];
    if family != 4 && family != 6 {
        return Err(InstalledError::Family(family));
    }
    Ok(InstalledHdr {
        hash_key,
        version: u64_at(b, o::VERSION),
        checksum: u64_at(b, o::CHECKSUM),
        rows: u32_at(b, o::ROWS_MASK).wrapping_add(1),
        width: b[o::WIDTH],
        fields: HashFields(b[o::FIELDS]),
        family,
        service: u32_at(b, o::SERVICE),
    })
}

impl InstalledHdr {
    /// The flow's hash and row in this table, with the key and fields the kernel uses.
    pub fn row_of(&self, flow: &Flow) -> (u64, u32) {
        let hash = flow_hash(&self.hash_key, self.fields, flow);
        (hash, (hash & u64::from(self.rows - 1)) as u32)
    }

    /// The backend addresses of a row entry (entry 1 + r of the map), primary first.
    pub fn parse_row(&self, b: &[u8]) -> Result<Vec<IpAddr>, InstalledError> {
        if b.len() < ROW_SIZE {
            return Err(InstalledError::RowSize(b.len()));
        }
        Ok((0..usize::from(self.width).min(MAX_HOPS))
            .map(|i| {
                let h = &b[ROW_HOPS_OFFSET + 16 * i..ROW_HOPS_OFFSET + 16 * (i + 1)];
                if self.family == 4 {
                    IpAddr::V4(Ipv4Addr::new(h[0], h[1], h[2], h[3]))
                } else {
                    IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(h).expect("16 bytes")))
                }
            })
            .collect())
    }
}

/// `lookup --director --json`. Only add fields (see [`crate::report`]).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DirectorLookup {
    pub service: String,
    /// The hash and row in the installed table (its key and fields, from the kernel).
    pub hash: String,
    pub row: u32,
    /// Where the director sends the flow now, primary first.
    pub hops: Vec<IpAddr>,
    /// Backend names by address from the published config (`?` when it has no such address).
    pub names: Vec<String>,
    /// The installed table's version and checksum (the kernel's header).
    pub installed_version: String,
    pub installed_checksum: String,
    /// The published table (`--config`), as plain `lookup` shows it.
    pub published: Lookup,
    /// The published table the director serves is the one `--config` builds (same checksum).
    /// When false, the comparison below is with another version than the director's.
    pub published_matches: bool,
    /// The installed row differs from the published row: the director's health overlay
    /// changed where this flow goes (when `published_matches`).
    pub changed_by_health: bool,
    /// Of that, whether the primary changed (new flows go elsewhere).
    pub primary_changed: bool,
    /// The backends the director demotes in this service (its state file).
    pub demoted: Vec<String>,
    /// The director's daemon runs (pid alive); the kernel forwards by these tables either way.
    pub daemon_running: bool,
}

/// What the binary read of one director for a flow's service.
#[derive(Clone, Debug)]
pub struct Installed {
    pub hdr: InstalledHdr,
    pub hash: u64,
    pub row: u32,
    pub hops: Vec<IpAddr>,
    /// The checksum of the published table the director built this one from.
    pub published_checksum: u64,
    pub demoted: Vec<String>,
    pub daemon_running: bool,
}

/// Name of a backend of `s` by address.
fn name_of(s: &Service, a: IpAddr) -> String {
    s.backends
        .iter()
        .find(|b| b.address == a)
        .map_or_else(|| "?".to_string(), |b| b.name.clone())
}

/// The installed row beside the published lookup `published` of `config`.
pub fn compare(
    config: &Config,
    published: Lookup,
    published_checksum: u64,
    installed: Installed,
) -> Result<DirectorLookup, InstalledError> {
    if installed.hops.is_empty() {
        return Err(InstalledError::Empty(published.service));
    }
    let s = config
        .services
        .iter()
        .find(|s| s.name == published.service)
        .expect("the published lookup's service is in its config");
    let changed = installed.hops != published.hops;
    Ok(DirectorLookup {
        service: published.service.clone(),
        hash: hex64(installed.hash),
        row: installed.row,
        names: installed.hops.iter().map(|a| name_of(s, *a)).collect(),
        hops: installed.hops.clone(),
        installed_version: hex64(installed.hdr.version),
        installed_checksum: hex64(installed.hdr.checksum),
        published_matches: installed.published_checksum == published_checksum,
        changed_by_health: changed,
        primary_changed: installed.hops.first() != published.hops.first(),
        published,
        demoted: installed.demoted,
        daemon_running: installed.daemon_running,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::key_halves;

    #[test]
    fn a_header_reads_back_what_was_written() {
        let key: [u8; 16] = std::array::from_fn(|i| i as u8 + 1);
        let (k0, k1) = key_halves(&key);
        let mut b = vec![0u8; HDR_SIZE];
        b[0..8].copy_from_slice(&k0.to_ne_bytes());
        b[8..16].copy_from_slice(&k1.to_ne_bytes());
        b[16..24].copy_from_slice(&7u64.to_ne_bytes());
        b[24..32].copy_from_slice(&9u64.to_ne_bytes());
        b[32..36].copy_from_slice(&1023u32.to_ne_bytes());
        b[36] = 2;
        b[37] = 15;
        b[38] = 4;
        b[40..44].copy_from_slice(&3u32.to_ne_bytes());
        let h = parse_hdr(&b).unwrap();
        assert_eq!(h.hash_key, key);
        assert_eq!((h.version, h.checksum, h.rows), (7, 9, 1024));
        assert_eq!((h.width, h.fields.0, h.family, h.service), (2, 15, 4, 3));
        let mut row = vec![0u8; ROW_SIZE];
        row[..4].copy_from_slice(&[10, 0, 0, 1]);
        row[16..20].copy_from_slice(&[10, 0, 0, 2]);
        assert_eq!(
            h.parse_row(&row).unwrap(),
            vec![IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2])]
        );
        assert_eq!(parse_hdr(&b[..40]), Err(InstalledError::HdrSize(40)));
        b[38] = 5;
        assert_eq!(parse_hdr(&b), Err(InstalledError::Family(5)));
    }
}
