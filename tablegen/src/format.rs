//! The binary table file written by `tablegen build --out` (layout: docs/development/table-format.md).
//!
//! Little-endian throughout. A file is a header (magic `XDPLBTBL`, format version, service
//! count), one block per service, and a trailing SipHash-1-3 checksum of every byte before it.
//! Each block carries its table's checksum over the *table section* (rows, width, backend
//! addresses and names, entries), the same bytes [`crate::table::table_checksum`] hashes, so a
//! reader verifies both the file and every table. The file holds no secret: the flow-hash key
//! stays in the config.
//!
//! Must not do: I/O (callers pass bytes in and write bytes out).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::{Backend, Bind, Proto, Service, State};
use crate::hash::{siphash13, HashFields};
use crate::table::{table_checksum, Table};

pub const MAGIC: &[u8; 8] = b"XDPLBTBL";
pub const FORMAT_VERSION: u32 = 1;
/// Fixed key of the file checksum (content identification, not a secret).
const FILE_KEY: (u64, u64) = (0x7864_706c_622d_6669, 0x6c65_2d63_6865_636b);

/// One service as stored in a table file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceTable {
    pub name: String,
    pub table_bits: u8,
    pub hops: u8,
    pub hash_fields: HashFields,
    pub binds: Vec<Bind>,
    pub backends: Vec<Backend>,
    pub table: Table,
}

/// Why a table file could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not an xdplb table file (bad magic)")]
    BadMagic,
    #[error("table file format version {0} is not supported (this tablegen reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u32),
    #[error("table file is truncated (needed {needed} more bytes at offset {offset})")]
    Truncated { offset: usize, needed: usize },
    #[error("table file checksum mismatch (stored {stored:016x}, computed {computed:016x}): the file is corrupt")]
    FileChecksum { stored: u64, computed: u64 },
    #[error("table of service `{service}` has a bad checksum (stored {stored:016x}, computed {computed:016x})")]
    TableChecksum {
        service: String,
        stored: u64,
        computed: u64,
    },
    #[error("invalid table file at offset {offset}: {what}")]
    Invalid { offset: usize, what: &'static str },
    #[error("{0} bytes after the end of the table file")]
    TrailingBytes(usize),
}

fn put_addr(b: &mut Vec<u8>, a: &IpAddr) {
    let mut buf = [0u8; 16];
    match a {
        IpAddr::V4(v) => {
            b.push(4);
            buf[..4].copy_from_slice(&v.octets());
        }
        IpAddr::V6(v) => {
            b.push(6);
            buf = v.octets();
        }
    }
    b.extend_from_slice(&buf);
}

fn put_name(b: &mut Vec<u8>, s: &str) {
    // Names longer than 65535 bytes are cut for the file; configs never have such names.
    let n = s.len().min(usize::from(u16::MAX));
    b.extend_from_slice(&(n as u16).to_le_bytes());
    b.extend_from_slice(&s.as_bytes()[..n]);
}

/// The table section: what a table's checksum covers.
pub fn table_section(rows: u32, width: u8, backends: &[Backend], entries: &[u32]) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + backends.len() * 32 + entries.len() * 4);
    b.extend_from_slice(&rows.to_le_bytes());
    b.extend_from_slice(&[width, 0, 0, 0]);
    b.extend_from_slice(&(backends.len() as u32).to_le_bytes());
    for be in backends {
        put_addr(&mut b, &be.address);
        put_name(&mut b, &be.name);
    }
    for e in entries {
        b.extend_from_slice(&e.to_le_bytes());
    }
    b
}

/// Serialise the tables of `services` (`tables[i]` must be the table of `services[i]`).
pub fn write(services: &[Service], tables: &[Table]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&(services.len() as u32).to_le_bytes());
    for (s, t) in services.iter().zip(tables) {
        put_name(&mut b, &s.name);
        b.extend_from_slice(&t.version.to_le_bytes());
        b.extend_from_slice(&t.checksum.to_le_bytes());
        b.extend_from_slice(&[s.table_bits, s.hops, s.hash_fields.0, 0]);
        b.extend_from_slice(&(s.binds.len() as u32).to_le_bytes());
        for bind in &s.binds {
            put_addr(&mut b, &bind.vip);
            b.push(bind.proto.number());
            b.extend_from_slice(&bind.port_first.to_le_bytes());
            b.extend_from_slice(&bind.port_last.to_le_bytes());
        }
        // Weights and states: not part of the table section (filling vs active forwards alike).
        b.extend_from_slice(&(s.backends.len() as u32).to_le_bytes());
        for be in &s.backends {
            b.extend_from_slice(&be.weight.to_le_bytes());
            b.push(be.state as u8);
        }
        b.extend_from_slice(&table_section(t.rows, t.width, &s.backends, &t.entries));
    }
    let sum = file_checksum(&b);
    b.extend_from_slice(&sum.to_le_bytes());
    b
}

/// The file checksum over `body` (everything before the trailing 8 bytes).
pub fn file_checksum(body: &[u8]) -> u64 {
    siphash13(FILE_KEY.0, FILE_KEY.1, body)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.b.len() - self.at < n {
            return Err(FormatError::Truncated {
                offset: self.at,
                needed: n - (self.b.len() - self.at),
            });
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn invalid(&self, what: &'static str) -> FormatError {
        FormatError::Invalid {
            offset: self.at,
            what,
        }
    }
    fn name(&mut self) -> Result<String, FormatError> {
        let n = usize::from(self.u16()?);
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| self.invalid("name is not UTF-8"))
    }
    fn addr(&mut self) -> Result<IpAddr, FormatError> {
        let fam = self.u8()?;
        let raw: [u8; 16] = self.take(16)?.try_into().unwrap();
        match fam {
            4 => Ok(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(raw))),
            _ => Err(self.invalid("address family is neither 4 nor 6")),
        }
    }
    /// A count of items of at least `min_size` bytes each, checked against what is left so a
    /// corrupt count cannot make the reader allocate gigabytes.
    fn count(&mut self, min_size: usize) -> Result<usize, FormatError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size) > self.b.len() - self.at {
            return Err(self.invalid("count larger than the file"));
        }
        Ok(n)
    }
}

/// Parse and verify a table file.
pub fn read(bytes: &[u8]) -> Result<Vec<ServiceTable>, FormatError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    if bytes.len() < 16 + 8 {
        return Err(FormatError::Truncated {
            offset: bytes.len(),
            needed: 24 - bytes.len(),
        });
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if version != FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    let stored = u64::from_le_bytes(sum.try_into().unwrap());
    let computed = file_checksum(body);
    if stored != computed {
        return Err(FormatError::FileChecksum { stored, computed });
    }
    let mut r = Reader { b: body, at: 12 };
    let n = r.count(4)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.name()?;
        let version = r.u64()?;
        let checksum = r.u64()?;
        let [table_bits, hops, hash_fields, _] = <[u8; 4]>::try_from(r.take(4)?).unwrap();
        let nb = r.count(22)?;
        let mut binds = Vec::with_capacity(nb);
        for _ in 0..nb {
            let vip = r.addr()?;
            let proto = match r.u8()? {
                6 => Proto::Tcp,
                17 => Proto::Udp,
                _ => return Err(r.invalid("bind protocol is neither tcp nor udp")),
            };
            let port_first = r.u16()?;
            let port_last = r.u16()?;
            binds.push(Bind {
                vip,
                proto,
                port_first,
                port_last,
            });
        }
        let nback = r.count(5)?;
        let mut ws = Vec::with_capacity(nback);
        for _ in 0..nback {
            let w = r.u32()?;
            let st = match r.u8()? {
                0 => State::Active,
                1 => State::Filling,
                2 => State::Draining,
                3 => State::Inactive,
                _ => return Err(r.invalid("unknown backend state")),
            };
            ws.push((w, st));
        }
        let rows = r.u32()?;
        let [width, _, _, _] = <[u8; 4]>::try_from(r.take(4)?).unwrap();
        if r.u32()? as usize != nback {
            return Err(r.invalid("backend counts disagree"));
        }
        let mut backends = Vec::with_capacity(nback);
        for (weight, state) in ws {
            let address = r.addr()?;
            let name = r.name()?;
            backends.push(Backend {
                name,
                address,
                weight,
                state,
            });
        }
        if !rows.is_power_of_two() || usize::from(width) > backends.len() {
            return Err(r.invalid("rows is not a power of two or width exceeds the backends"));
        }
        let ne = rows as usize * usize::from(width);
        let raw = r.take(ne.checked_mul(4).ok_or(r.invalid("table too large"))?)?;
        let entries: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        if entries.iter().any(|&e| e as usize >= backends.len()) {
            return Err(r.invalid("entry refers to a backend that does not exist"));
        }
        let computed = table_checksum(rows, width, &backends, &entries);
        if computed != checksum {
            return Err(FormatError::TableChecksum {
                service: name,
                stored: checksum,
                computed,
            });
        }
        out.push(ServiceTable {
            table: Table {
                service: name.clone(),
                rows,
                width,
                entries,
                version,
                checksum,
            },
            name,
            table_bits,
            hops,
            hash_fields: HashFields(hash_fields),
            binds,
            backends,
        });
    }
    if r.at != body.len() {
        return Err(FormatError::TrailingBytes(body.len() - r.at));
    }
    Ok(out)
}
