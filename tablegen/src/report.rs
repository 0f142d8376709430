//! What the CLI reports: per-service table statistics (`show`), where one flow goes (`lookup`)
//! and what changed between two table sets (`diff`).
//!
//! The serde field names here are a stable interface (scripts and tests parse the JSON): only
//! add fields, never rename or remove one. 64-bit hashes are 16 hex digits in strings because
//! JSON numbers lose precision above 2^53 in most readers.
//!
//! Must not do: I/O (the binary prints).

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::config::{Backend, Config, Proto, Service};
use crate::hash::{flow_hash, Flow};
use crate::table::Table;

/// `show --json`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Show {
    pub services: Vec<ShowService>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ShowService {
    pub name: String,
    pub rows: u32,
    pub hops: u8,
    /// Backends per row actually used: `min(hops, eligible backends)`.
    pub width: u8,
    pub version: String,
    pub checksum: String,
    pub backends: Vec<ShowBackend>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ShowBackend {
    pub name: String,
    pub address: IpAddr,
    pub state: String,
    pub weight: u32,
    pub primary_rows: u32,
    pub alternate_rows: u32,
}

/// `YYYY-MM-DD HH:MM:SS` in UTC for a Unix time (Howard Hinnant's civil-from-days; no time
/// crate needed).
pub fn utc(unix: u64) -> String {
    let (days, secs) = ((unix / 86400) as i64, unix % 86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

pub fn hex64(v: u64) -> String {
    format!("{v:016x}")
}

/// Statistics of one service's table.
pub fn show_service(s: &Service, t: &Table) -> ShowService {
    let mut primary = vec![0u32; s.backends.len()];
    let mut alternate = vec![0u32; s.backends.len()];
    for r in 0..t.rows {
        for (pos, &b) in t.row(r).iter().enumerate() {
            if pos == 0 {
                primary[b as usize] += 1;
            } else {
                alternate[b as usize] += 1;
            }
        }
    }
    ShowService {
        name: s.name.clone(),
        rows: t.rows,
        hops: s.hops,
        width: t.width,
        version: hex64(t.version),
        checksum: hex64(t.checksum),
        backends: s
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| ShowBackend {
                name: b.name.clone(),
                address: b.address,
                state: b.state.to_string(),
                weight: b.weight,
                primary_rows: primary[i],
                alternate_rows: alternate[i],
            })
            .collect(),
    }
}

pub fn show(config: &Config, tables: &[Table]) -> Show {
    Show {
        services: config
            .services
            .iter()
            .zip(tables)
            .map(|(s, t)| show_service(s, t))
            .collect(),
    }
}

/// A flow as typed on the command line: `tcp 192.0.2.7:51000 10.100.0.1:80`
/// (IPv6 as `[2001:db8::7]:51000`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSpec {
    pub proto: Proto,
    pub flow: Flow,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("cannot parse flow `{0}`: expected `PROTO SRC:PORT VIP:PORT`, e.g. `tcp 192.0.2.7:51000 10.100.0.1:80` (IPv6 as [addr]:port)")]
    BadFlow(String),
    #[error("no service binds {proto} {vip}:{port}")]
    NoService {
        proto: Proto,
        vip: IpAddr,
        port: u16,
    },
    #[error("service `{0}` has no eligible backend: its traffic is dropped")]
    EmptyTable(String),
}

impl std::str::FromStr for FlowSpec {
    type Err = LookupError;
    fn from_str(s: &str) -> Result<FlowSpec, LookupError> {
        let bad = || LookupError::BadFlow(s.to_string());
        let parts: Vec<&str> = s.split_whitespace().collect();
        let [proto, src, dst] = parts[..] else {
            return Err(bad());
        };
        let proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return Err(bad()),
        };
        let src: SocketAddr = src.parse().map_err(|_| bad())?;
        let dst: SocketAddr = dst.parse().map_err(|_| bad())?;
        Ok(FlowSpec {
            proto,
            flow: Flow {
                src: src.ip(),
                dst: dst.ip(),
                sport: src.port(),
                dport: dst.port(),
            },
        })
    }
}

/// `lookup --json`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Lookup {
    pub service: String,
    pub hash: String,
    pub row: u32,
    /// Addresses, primary first.
    pub hops: Vec<IpAddr>,
    pub names: Vec<String>,
}

/// Where `spec` goes: the service whose bind matches, the flow hash, the row and its hops.
pub fn lookup(config: &Config, tables: &[Table], spec: &FlowSpec) -> Result<Lookup, LookupError> {
    let f = &spec.flow;
    let (s, t) = config
        .services
        .iter()
        .zip(tables)
        .find(|(s, _)| s.matches(spec.proto, f.dst, f.dport))
        .ok_or(LookupError::NoService {
            proto: spec.proto,
            vip: f.dst,
            port: f.dport,
        })?;
    if t.width == 0 {
        return Err(LookupError::EmptyTable(s.name.clone()));
    }
    let hash = flow_hash(&s.hash_key, s.hash_fields, f);
    let row = (hash & u64::from(t.rows - 1)) as u32;
    let entries = t.row(row);
    Ok(Lookup {
        service: s.name.clone(),
        hash: hex64(hash),
        row,
        hops: entries
            .iter()
            .map(|&b| s.backends[b as usize].address)
            .collect(),
        names: entries
            .iter()
            .map(|&b| s.backends[b as usize].name.clone())
            .collect(),
    })
}

/// A table with the backends its entries index, as `diff` compares them (built from a config
/// or read from a table file).
#[derive(Clone, Debug)]
pub struct NamedTable<'a> {
    pub service: &'a str,
    pub backends: &'a [Backend],
    pub table: &'a Table,
}

/// `diff --json`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Diff {
    pub services: Vec<DiffService>,
    /// Services only in NEW / only in OLD.
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DiffService {
    pub name: String,
    /// Rows compared: the larger of the two tables (a smaller table's row `r & (rows - 1)`
    /// serves the same flows).
    pub rows: u32,
    pub primary_changed: u32,
    /// Of the rows whose primary changed, how many still hold the old primary as an alternate
    /// (its established flows survive by second chance).
    pub primary_changed_keeps_old: u32,
    pub hop_list_changed: u32,
}

fn row_names<'a>(t: &NamedTable<'a>, r: u32) -> Vec<&'a str> {
    if t.table.width == 0 {
        return Vec::new();
    }
    t.table
        .row(r & (t.table.rows - 1))
        .iter()
        .map(|&b| t.backends[b as usize].name.as_str())
        .collect()
}

/// Compare two sets of tables by service name; backends are compared by name (their identity).
pub fn diff(old: &[NamedTable<'_>], new: &[NamedTable<'_>]) -> Diff {
    let mut out = Diff {
        services: Vec::new(),
        added: Vec::new(),
        removed: Vec::new(),
    };
    for n in new {
        let Some(o) = old.iter().find(|o| o.service == n.service) else {
            out.added.push(n.service.to_string());
            continue;
        };
        let rows = o.table.rows.max(n.table.rows);
        let mut d = DiffService {
            name: n.service.to_string(),
            rows,
            primary_changed: 0,
            primary_changed_keeps_old: 0,
            hop_list_changed: 0,
        };
        for r in 0..rows {
            let (a, b) = (row_names(o, r), row_names(n, r));
            if a != b {
                d.hop_list_changed += 1;
            }
            if a.first() != b.first() {
                d.primary_changed += 1;
                if a.first().is_some_and(|p| b.contains(p)) {
                    d.primary_changed_keeps_old += 1;
                }
            }
        }
        out.services.push(d);
    }
    for o in old {
        if !new.iter().any(|n| n.service == o.service) {
            out.removed.push(o.service.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_known_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(super::utc(1_795_664_523), "2026-11-26 03:42:03");
    }
}
