//! Checking `backends.yaml` field by field into a [`Config`], collecting every error with its
//! position (through the `yaml` crate's `Checker`) before giving up.
//!
//! Field lists, value parsers (ports, keys, weights, states, hash fields) and the cross-checks
//! (unique names and addresses, one address family, the transition limit, non-overlapping
//! binds) live here and nowhere else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use yaml::{Checker, Fields, Node, Pos};

use super::error::{ConfigErrors, ErrorKind};
use super::types::*;
use crate::hash::HashFields;

impl Config {
    /// Parse and validate `text`, which was read from `path` (used in messages only).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let mut v = Validator {
            c: Checker::new(path),
        };
        let Some(root) = v.c.document(text) else {
            if v.c.is_clean() {
                v.err(
                    Pos {
                        line: 1,
                        column: 1,
                        offset: 0,
                    },
                    ErrorKind::Empty,
                );
            }
            return Err(v.finish());
        };
        let services = v.config(&root);
        v.c.finish()?;
        Ok(Config { services })
    }
}

const SERVICE_FIELDS: &[&str] = &[
    "name",
    "hash_key",
    "seed",
    "table_bits",
    "hops",
    "hash",
    "binds",
    "backends",
    "health",
    "udp_second_chance",
];
const BIND_FIELDS: &[&str] = &["vip", "proto", "port", "ports"];
const BACKEND_FIELDS: &[&str] = &["name", "address", "weight", "state"];

struct Validator<'a> {
    c: Checker<'a, ErrorKind>,
}

fn family(a: &IpAddr) -> &'static str {
    if a.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

fn parse_key(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn parse_port(s: &str) -> Result<u16, &'static str> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return Err("not a whole number");
    }
    s.parse::<u32>()
        .ok()
        .filter(|p| *p <= 65535)
        .map(|p| p as u16)
        .ok_or("larger than 65535")
}

fn bind_text(b: &Bind) -> String {
    let vip = match b.vip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    if b.port_first == b.port_last {
        format!("{} {vip}:{}", b.proto, b.port_first)
    } else {
        format!("{} {vip}:{}-{}", b.proto, b.port_first, b.port_last)
    }
}

impl Validator<'_> {
    fn err(&mut self, pos: Pos, kind: impl Into<ErrorKind>) {
        self.c.err(pos, kind);
    }

    /// Only called once an error was recorded.
    fn finish(self) -> ConfigErrors {
        self.c
            .finish()
            .err()
            .unwrap_or(ConfigErrors { errors: Vec::new() })
    }

    fn config(&mut self, root: &Node) -> Vec<Service> {
        let Some(top) = self.c.fields(
            root,
            &["services", "health"],
            "the top level",
            "the top level of the config",
        ) else {
            return Vec::new();
        };
        // Every service's health defaults; a broken block is reported once, here.
        let (defaults, defaults_ok) = match top.get("health") {
            None => (None, true),
            Some(n) => {
                let p = self.health_block(n);
                let ok = p.is_some();
                (p, ok)
            }
        };
        let Some(list) = self.c.required(&top, "services") else {
            return Vec::new();
        };
        let Some(items) = self.c.seq(list, "services") else {
            return Vec::new();
        };

        let mut services = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        // Every bind seen so far, with its service and line, for the overlap check.
        let mut all_binds: Vec<(Bind, String, Pos)> = Vec::new();
        for item in items {
            let Some(f) = self.c.fields(item, SERVICE_FIELDS, "service", "a service") else {
                continue;
            };
            let mut ok = true;
            let name = self.name(&f);
            if let Some((name, pos)) = &name {
                if let Some(first) = names.get(name) {
                    self.err(
                        *pos,
                        ErrorKind::DuplicateService {
                            name: name.clone(),
                            first_line: *first,
                        },
                    );
                } else {
                    names.insert(name.clone(), pos.line);
                }
            }
            let hash_key = self.key(&f, "hash_key");
            let seed = self.key(&f, "seed");
            let table_bits = match f.get("table_bits") {
                None => Some(TABLE_BITS_DEFAULT),
                Some(n) => self.c.scalar(n, "table_bits", "a number").and_then(|s| {
                    let v = s
                        .parse::<u8>()
                        .ok()
                        .filter(|v| (TABLE_BITS_MIN..=TABLE_BITS_MAX).contains(v));
                    if v.is_none() {
                        self.err(
                            n.start,
                            ErrorKind::TableBitsRange {
                                value: s.to_string(),
                            },
                        );
                    }
                    v
                }),
            };
            let hops = match f.get("hops") {
                None => Some(HOPS_DEFAULT),
                Some(n) => self.c.scalar(n, "hops", "a number").and_then(|s| {
                    let v = s
                        .parse::<u8>()
                        .ok()
                        .filter(|v| (HOPS_MIN..=HOPS_MAX).contains(v));
                    if v.is_none() {
                        self.err(
                            n.start,
                            ErrorKind::HopsRange {
                                value: s.to_string(),
                            },
                        );
                    }
                    v
                }),
            };
            let hash_fields = match f.get("hash") {
                None => Some(HashFields::ALL),
                Some(n) => self.hash_fields(n),
            };
            let svc_name = name.as_ref().map(|(n, _)| n.clone()).unwrap_or_default();
            let binds = match self.c.required(&f, "binds") {
                None => None,
                Some(n) => self.binds(n, &svc_name, &mut all_binds),
            };
            let backends = match self.c.required(&f, "backends") {
                None => None,
                Some(n) => self.backends(n, hops.unwrap_or(HOPS_DEFAULT)),
            };
            let udp_second_chance = match f.get("udp_second_chance") {
                None => Some(false),
                Some(n) => self.c.boolean(n, "udp_second_chance").and_then(|on| {
                    let udp = binds
                        .as_ref()
                        .is_none_or(|b| b.iter().any(|b| b.proto == Proto::Udp));
                    if on && !udp {
                        self.err(n.start, ErrorKind::UdpSecondChanceWithoutUdp);
                        return None;
                    }
                    Some(on)
                }),
            };
            let own_health = match f.get("health") {
                None => Some(None),
                Some(n) => self.health_block(n).map(Some),
            };
            let health = match (&own_health, &binds) {
                (Some(own), Some(binds)) if defaults_ok => {
                    self.health_of(defaults.as_ref(), own.as_ref(), binds)
                }
                _ => None,
            };
            ok &= name.is_some()
                && hash_key.is_some()
                && seed.is_some()
                && table_bits.is_some()
                && hops.is_some()
                && hash_fields.is_some()
                && binds.is_some()
                && backends.is_some()
                && udp_second_chance.is_some()
                && health.is_some();
            if ok {
                services.push(Service {
                    name: svc_name,
                    hash_key: hash_key.unwrap(),
                    seed: seed.unwrap(),
                    table_bits: table_bits.unwrap(),
                    hops: hops.unwrap(),
                    hash_fields: hash_fields.unwrap(),
                    binds: binds.unwrap(),
                    backends: backends.unwrap(),
                    health: health.unwrap(),
                    udp_second_chance: udp_second_chance.unwrap(),
                });
            }
        }
        services
    }

    fn name(&mut self, f: &Fields<'_>) -> Option<(String, Pos)> {
        let n = self.c.required(f, "name")?;
        let s = self.c.scalar(n, "name", "a string")?;
        if s.trim().is_empty() {
            self.err(n.start, ErrorKind::EmptyName);
            return None;
        }
        Some((s.to_string(), n.start))
    }

    fn key(&mut self, f: &Fields<'_>, field: &'static str) -> Option<[u8; 16]> {
        let n = self.c.required(f, field)?;
        let s = self.c.scalar(n, field, "32 hex digits")?;
        let k = parse_key(s);
        if k.is_none() {
            let found = if s.len() != 32 {
                format!("{} characters", s.chars().count())
            } else {
                "a character that is not a hex digit".to_string()
            };
            self.err(n.start, ErrorKind::BadKey { field, found });
        }
        k
    }

    fn hash_fields(&mut self, n: &Node) -> Option<HashFields> {
        let items = self.c.seq(n, "hash")?;
        if items.is_empty() {
            self.err(n.start, ErrorKind::EmptyHash);
            return None;
        }
        let mut bits = 0u8;
        let mut ok = true;
        for it in items {
            let Some(s) = self.c.scalar(it, "hash", "a field name") else {
                ok = false;
                continue;
            };
            let bit = match s {
                "src_ip" => HashFields::SRC_IP,
                "src_port" => HashFields::SRC_PORT,
                "dst_ip" => HashFields::DST_IP,
                "dst_port" => HashFields::DST_PORT,
                _ => {
                    self.err(
                        it.start,
                        ErrorKind::BadHashField {
                            text: s.to_string(),
                        },
                    );
                    ok = false;
                    continue;
                }
            };
            if bits & bit != 0 {
                self.err(
                    it.start,
                    ErrorKind::DuplicateHashField {
                        text: s.to_string(),
                    },
                );
                ok = false;
            }
            bits |= bit;
        }
        ok.then_some(HashFields(bits))
    }

    fn address(&mut self, n: &Node, field: &'static str) -> Option<IpAddr> {
        let s = self.c.scalar(n, field, "an IP address")?;
        let a = s.trim().parse::<IpAddr>().ok();
        if a.is_none() {
            self.err(
                n.start,
                ErrorKind::BadAddress {
                    text: s.to_string(),
                },
            );
        }
        a
    }

    fn binds(
        &mut self,
        n: &Node,
        service: &str,
        all: &mut Vec<(Bind, String, Pos)>,
    ) -> Option<Vec<Bind>> {
        let items = self.c.seq(n, "binds")?;
        let mut out = Vec::new();
        let mut ok = true;
        for it in items {
            match self.bind(it) {
                Some(b) => {
                    let clash = all.iter().find(|(o, _, _)| {
                        o.vip == b.vip
                            && o.proto == b.proto
                            && o.port_first <= b.port_last
                            && b.port_first <= o.port_last
                    });
                    if let Some((o, osvc, opos)) = clash {
                        self.err(
                            it.start,
                            ErrorKind::OverlappingBind {
                                bind: bind_text(&b),
                                other: bind_text(o),
                                other_service: osvc.clone(),
                                other_line: opos.line,
                            },
                        );
                        ok = false;
                    } else {
                        all.push((b, service.to_string(), it.start));
                    }
                    out.push(b);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn bind(&mut self, n: &Node) -> Option<Bind> {
        let f = self.c.fields(n, BIND_FIELDS, "bind", "a bind")?;
        let vip = self
            .c
            .required(&f, "vip")
            .and_then(|v| self.address(v, "vip"));
        let proto = self.c.required(&f, "proto").and_then(|p| {
            let s = self.c.scalar(p, "proto", "tcp or udp")?;
            let v = match s {
                "tcp" => Some(Proto::Tcp),
                "udp" => Some(Proto::Udp),
                _ => None,
            };
            if v.is_none() {
                self.err(
                    p.start,
                    ErrorKind::BadProto {
                        text: s.to_string(),
                    },
                );
            }
            v
        });
        let ports = match (f.get("port"), f.get("ports")) {
            (Some(p), None) => {
                self.c
                    .scalar(p, "port", "a port number")
                    .and_then(|s| match parse_port(s) {
                        Ok(0) => {
                            self.err(
                                p.start,
                                ErrorKind::BadPort {
                                    text: s.into(),
                                    why: "port 0 is not a port",
                                },
                            );
                            None
                        }
                        Ok(v) => Some((v, v)),
                        Err(why) => {
                            self.err(
                                p.start,
                                ErrorKind::BadPort {
                                    text: s.into(),
                                    why,
                                },
                            );
                            None
                        }
                    })
            }
            (None, Some(p)) => self.c.scalar(p, "ports", "a port range").and_then(|s| {
                let r = if s.trim() == "all" {
                    Ok((0, 65535))
                } else if let Some((a, b)) = s.split_once('-') {
                    match (parse_port(a), parse_port(b)) {
                        (Ok(a), Ok(b)) if a <= b => Ok((a, b)),
                        (Ok(_), Ok(_)) => Err("FIRST is larger than LAST"),
                        (Err(e), _) | (_, Err(e)) => Err(e),
                    }
                } else {
                    Err("no `-` between FIRST and LAST")
                };
                match r {
                    Ok(v) => Some(v),
                    Err(why) => {
                        self.err(
                            p.start,
                            ErrorKind::BadPortRange {
                                text: s.into(),
                                why,
                            },
                        );
                        None
                    }
                }
            }),
            _ => {
                let pos = f.found.get("ports").map(|p| p.start).unwrap_or(n.start);
                self.err(pos, ErrorKind::PortChoice);
                None
            }
        };
        let (port_first, port_last) = ports?;
        Some(Bind {
            vip: vip?,
            proto: proto?,
            port_first,
            port_last,
        })
    }

    fn backends(&mut self, n: &Node, hops: u8) -> Option<Vec<Backend>> {
        let items = self.c.seq(n, "backends")?;
        let mut out: Vec<(Backend, Pos)> = Vec::new();
        let mut ok = true;
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut addrs: HashMap<IpAddr, (String, usize)> = HashMap::new();
        let mut first_family: Option<(IpAddr, String, usize)> = None;
        let mut in_transition: Vec<String> = Vec::new();
        let limit = hops.saturating_sub(1);
        for it in items {
            let Some(f) = self.c.fields(it, BACKEND_FIELDS, "backend", "a backend") else {
                ok = false;
                continue;
            };
            let name = self.name(&f);
            let addr_node = self.c.required(&f, "address");
            let address = addr_node.and_then(|a| self.address(a, "address"));
            let weight = match f.get("weight") {
                None => Some(1),
                Some(w) => self.c.scalar(w, "weight", "a whole number").and_then(|s| {
                    let v = s
                        .trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|v| (1..=u64::from(WEIGHT_MAX)).contains(v))
                        .map(|v| v as u32);
                    if v.is_none() {
                        self.err(
                            w.start,
                            ErrorKind::BadWeight {
                                text: s.to_string(),
                            },
                        );
                    }
                    v
                }),
            };
            let state_node = f.get("state");
            let state = match state_node {
                None => Some(State::Active),
                Some(sn) => self.c.scalar(sn, "state", "a state").and_then(|s| {
                    let v = State::parse(s);
                    if v.is_none() {
                        self.err(
                            sn.start,
                            ErrorKind::BadState {
                                text: s.to_string(),
                            },
                        );
                    }
                    v
                }),
            };
            if let Some((name, pos)) = &name {
                if let Some(first) = names.get(name) {
                    self.err(
                        *pos,
                        ErrorKind::DuplicateBackendName {
                            name: name.clone(),
                            first_line: *first,
                        },
                    );
                    ok = false;
                } else {
                    names.insert(name.clone(), pos.line);
                }
            }
            let bname = name.as_ref().map(|(n, _)| n.clone()).unwrap_or_default();
            if let (Some(a), Some(an)) = (address, addr_node) {
                if let Some((other, line)) = addrs.get(&a) {
                    self.err(
                        an.start,
                        ErrorKind::DuplicateBackendAddress {
                            address: a,
                            other: other.clone(),
                            first_line: *line,
                        },
                    );
                    ok = false;
                } else {
                    addrs.insert(a, (bname.clone(), an.start.line));
                }
                match &first_family {
                    None => first_family = Some((a, bname.clone(), an.start.line)),
                    Some((fa, fname, fline)) if fa.is_ipv4() != a.is_ipv4() => {
                        self.err(
                            an.start,
                            ErrorKind::MixedFamilies {
                                name: bname.clone(),
                                family: family(&a),
                                first: fname.clone(),
                                first_family: family(fa),
                                first_line: *fline,
                            },
                        );
                        ok = false;
                    }
                    Some(_) => {}
                }
            }
            if let (Some(st), Some(sn)) = (state, state_node) {
                if st.in_transition() {
                    if in_transition.len() >= usize::from(limit) {
                        let already = in_transition
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ");
                        let already = if in_transition.len() == 1 {
                            format!("{already} is")
                        } else {
                            format!("{already} are")
                        };
                        self.err(
                            sn.start,
                            ErrorKind::TooManyInTransition {
                                name: bname.clone(),
                                state: st,
                                already,
                                hops,
                                limit,
                            },
                        );
                        ok = false;
                    }
                    in_transition.push(bname.clone());
                }
            }
            match (name, address, weight, state) {
                (Some((name, pos)), Some(address), Some(weight), Some(state)) => out.push((
                    Backend {
                        name,
                        address,
                        weight,
                        state,
                    },
                    pos,
                )),
                _ => ok = false,
            }
        }
        ok.then(|| out.into_iter().map(|(b, _)| b).collect())
    }
}

mod health;

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
services:
  - name: web
    hash_key: 6c8d0f1e2a3b4c5d6e7f8091a2b3c4d5
    seed: 0f1e2d3c4b5a69788796a5b4c3d2e1f0
    binds:
      - { vip: 10.100.0.1, proto: tcp, port: 80 }
      - { vip: \"fd00:100::1\", proto: tcp, ports: 8000-8100 }
    backends:
      - { name: backend-1, address: 10.0.0.21 }
      - { name: backend-2, address: 10.0.0.22, weight: 2 }
      - { name: backend-3, address: 10.0.0.23, state: draining }
";

    #[test]
    fn parses_a_full_example_with_defaults() {
        let c = Config::parse(Path::new("b.yaml"), GOOD).unwrap();
        let s = &c.services[0];
        assert_eq!(s.table_bits, 16);
        assert_eq!(s.hops, 2);
        assert_eq!(s.hash_fields, HashFields::ALL);
        assert_eq!(s.binds[1].port_first, 8000);
        assert_eq!(s.binds[1].port_last, 8100);
        assert_eq!(s.backends[1].weight, 2);
        assert_eq!(s.backends[2].state, State::Draining);
        assert_eq!(s.hash_key[0], 0x6c);
        assert!(c.warnings().is_empty());
    }

    #[test]
    fn unquoted_ipv6_and_block_style_are_accepted() {
        let text = GOOD
            .replace("\"fd00:100::1\"", "fd00:100::1")
            .replace("10.0.0.21", "fd00::21")
            .replace("10.0.0.22", "fd00::22")
            .replace("10.0.0.23", "fd00::23");
        let c = Config::parse(Path::new("b.yaml"), &text).unwrap();
        assert_eq!(
            c.services[0].binds[1].vip,
            "fd00:100::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            c.services[0].backends[0].address,
            "fd00::21".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn all_ports_and_quoted_numbers() {
        let text = GOOD
            .replace("port: 80 }", "ports: all }")
            .replace("weight: 2", "weight: \"2\"");
        let c = Config::parse(Path::new("b.yaml"), &text).unwrap();
        assert_eq!(
            (
                c.services[0].binds[0].port_first,
                c.services[0].binds[0].port_last
            ),
            (0, 65535)
        );
        assert_eq!(c.services[0].backends[1].weight, 2);
    }

    #[test]
    fn empty_service_list_is_valid() {
        let c = Config::parse(Path::new("b.yaml"), "services: []\n").unwrap();
        assert!(c.services.is_empty());
    }
}
