//! A bounded fuzzer: GUE frames as directors send them (and other traffic), mutated (outer
//! lengths, fragments, ports, sources, GUE version/flags/hlen/protocol, hop list type, hop
//! counts and next-hop indices, inner headers, truncation, padding, VLAN tags), through the
//! real TC program (BPF_PROG_TEST_RUN) and held to a reference model written here from
//! docs/development/wire-format.md:
//!
//! - a frame that is not GUE for this host leaves unchanged with TC_ACT_OK (`not_gue`);
//! - GUE from a source outside the director ranges, or malformed, is dropped with the one
//!   reason the model names;
//! - every other frame is either decapsulated to exactly its inner packet (with a local reason
//!   the inner packet allows) or forwarded to the next hop of its list with exactly the
//!   rewritten outer header (source = the address it came to, destination = the hop, index + 1,
//!   checksums updated as RFC 1624 does, preserving any error): never beyond its hop count, so
//!   no packet loops; a forward the kernel cannot route is dropped (`no_route`).
//!
//! Seeded: the seed is printed, `XDPLB_FUZZ_SEED=<n>` reproduces a run, `XDPLB_FUZZ_SECS`
//! (default 25) bounds it. Frames that found a bug are kept in `tests/data/fuzz/*.hex` and
//! replayed first.

mod common;

use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use common::*;
use redirector::datapath;
use redirector::skel::RedirectorSkel;

/// The TC verdict, the frame out, and the reasons counted.
fn run(skel: &RedirectorSkel<'_>, pkt: &[u8]) -> Result<(i32, Vec<u8>, Vec<&'static str>), String> {
    let before = datapath::read_counters(&skel.maps.counters).unwrap();
    let mut out = vec![0u8; pkt.len() + 512];
    let input = libbpf_rs::ProgramInput {
        data_in: Some(pkt),
        data_out: Some(&mut out),
        ..Default::default()
    };
    let output = skel
        .progs
        .redirector
        .test_run(input)
        .map_err(|e| format!("test run refused {}: {e}", hex(pkt)))?;
    let verdict = output.return_value as i32;
    let data = output.data.expect("data out").to_vec();
    let after = datapath::read_counters(&skel.maps.counters).unwrap();
    let counted = (0..after.len())
        .filter(|&i| after[i] != before[i])
        .map(|i| redirector::counters::name(i as u32))
        .collect();
    Ok((verdict, data, counted))
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// What the model makes of a frame.
#[derive(Debug)]
enum Expect {
    NotGue,
    Drop(&'static str),
    Gue(Gue),
}

/// A GUE frame for this host that parses: what may become of it.
#[derive(Debug)]
struct Gue {
    outer_v6: bool,
    /// Where the inner packet starts (Ethernet's 14 + outer IP + UDP + GUE + private data).
    inner: usize,
    inner_v6: bool,
    /// The inner protocol, None for a later fragment.
    proto: Option<u8>,
    /// (offset of the hop list, next, count), when there is one.
    hops: Option<(usize, u8, u8)>,
    /// The hop list's UDP second chance flag, with a UDP datagram that is no fragment.
    udp_sc: bool,
}

fn allowed(f: &[u8], v6: bool) -> bool {
    if v6 {
        f[22..38] == Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x100).octets()
    } else {
        f[26..29] == [192, 0, 2] && f[29] & 0xf0 == 96
    }
}

fn model(f: &[u8]) -> Expect {
    let n = f.len();
    if f[..6] != LO_MAC {
        return Expect::NotGue; // not PACKET_HOST: the stack's to drop
    }
    let (outer_v6, strip) = match be16(f, 12) {
        0x0800 => {
            if n < 34 || f[23] != 17 || f[14] >> 4 != 4 || f[14] & 0x0f < 5 {
                return Expect::NotGue;
            }
            let ihl = (f[14] & 0x0f) as usize * 4;
            let udp = 14 + ihl;
            if udp + 8 > n || be16(f, udp + 2) != GUE_PORT {
                return Expect::NotGue;
            }
            if be16(f, 20) & 0x3fff != 0 {
                return Expect::Drop("outer_fragment");
            }
            if (be16(f, 16) as usize) < ihl + 12 || be16(f, udp + 4) < 12 {
                return Expect::Drop("bad_outer");
            }
            (false, ihl + 8)
        }
        0x86dd => {
            if n < 62 || f[20] != 17 || be16(f, 56) != GUE_PORT {
                return Expect::NotGue;
            }
            if f[14] >> 4 != 6 || be16(f, 18) < 12 || be16(f, 58) < 12 {
                return Expect::Drop("bad_outer");
            }
            (true, 48)
        }
        _ => return Expect::NotGue,
    };
    if !allowed(f, outer_v6) {
        return Expect::Drop("source_not_allowed");
    }
    let g = 14 + strip;
    if g + 4 > n {
        return Expect::Drop("bad_gue");
    }
    if f[g] & 0xe0 != 0 || be16(f, g + 2) != 0 {
        return Expect::Drop("bad_gue");
    }
    let inner_v6 = match f[g + 1] {
        4 => false,
        41 => true,
        _ => return Expect::Drop("bad_gue"),
    };
    let hlen = (f[g] & 0x1f) as usize * 4;
    let mut hops = None;
    let mut flagged = false;
    if hlen > 0 {
        let h = g + 4;
        if h + 4 > n {
            return Expect::Drop("bad_hoplist");
        }
        // The type's first byte holds flags: 0x01 (UDP second chance) is the only one known.
        let t = be16(f, h);
        flagged = t & 0x0100 != 0;
        if t & !0x01ff != 0 {
            return Expect::Drop("bad_hoplist");
        }
        let size = match t & 0xff {
            0 if !outer_v6 => 4,
            1 if outer_v6 => 16,
            _ => return Expect::Drop("bad_hoplist"),
        };
        let (next, count) = (f[h + 2], f[h + 3]);
        if 4 + count as usize * size > hlen || next > count {
            return Expect::Drop("bad_hoplist");
        }
        hops = Some((h, next, count));
    }
    let i = g + 4 + hlen;
    let mut first_frag = false;
    let (proto, l4, l4_len) = if inner_v6 {
        if i + 40 > n || f[i] >> 4 != 6 {
            return Expect::Drop("bad_inner");
        }
        (f[i + 6], i + 40, be16(f, i + 4) as usize)
    } else {
        if i + 20 > n || f[i] >> 4 != 4 || f[i] & 0x0f < 5 {
            return Expect::Drop("bad_inner");
        }
        let ihl = (f[i] & 0x0f) as usize * 4;
        if i + ihl > n {
            return Expect::Drop("bad_inner");
        }
        if be16(f, i + 6) & 0x1fff != 0 {
            return Expect::Gue(Gue {
                outer_v6,
                inner: i,
                inner_v6,
                proto: None,
                hops,
                udp_sc: false,
            });
        }
        first_frag = be16(f, i + 6) & 0x2000 != 0;
        let tot = be16(f, i + 2) as usize;
        if tot < ihl {
            return Expect::Drop("bad_inner");
        }
        (f[i + 9], i + ihl, tot - ihl)
    };
    let l4_min = match proto {
        6 => 20,
        17 | 1 | 58 => 8,
        _ => 0,
    };
    if l4_min > 0 && (l4 > 256 || l4 + l4_min > n || (proto == 6 && f[l4 + 12] >> 4 < 5)) {
        return Expect::Drop("bad_inner");
    }
    // A UDP length must fit the IP payload (not checkable in a first fragment).
    if proto == 17 && !first_frag {
        let ulen = be16(f, l4 + 4) as usize;
        if ulen < 8 || ulen > l4_len {
            return Expect::Drop("bad_inner");
        }
    }
    Expect::Gue(Gue {
        outer_v6,
        inner: i,
        inner_v6,
        proto: Some(proto),
        hops,
        udp_sc: flagged && proto == 17 && !first_frag,
    })
}

/// RFC 1624: a checksum `ck` over data whose 16-bit words `old` became `new`.
fn csum_update(ck: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut s = !ck as u64;
    for (o, n) in old.chunks(2).zip(new.chunks(2)) {
        s += !u16::from_be_bytes([o[0], o[1]]) as u64;
        s += u16::from_be_bytes([n[0], n[1]]) as u64;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The frame forwarded to the next hop, MACs aside: (frame, hop).
fn forwarded(f: &[u8], g: &Gue) -> (Vec<u8>, IpAddr) {
    let (h, next, _) = g.hops.expect("a hop list");
    let mut out = f.to_vec();
    out[h + 2] = next + 1;
    if g.outer_v6 {
        let at = h + 4 + next as usize * 16;
        let hop: [u8; 16] = f[at..at + 16].try_into().unwrap();
        out[22..38].copy_from_slice(&f[38..54]);
        out[38..54].copy_from_slice(&hop);
        let ck = be16(f, 60);
        if ck != 0 {
            let mut new = csum_update(ck, &f[22..38], &hop);
            new = csum_update(new, &f[h + 2..h + 4], &out[h + 2..h + 4]);
            if new == 0 {
                new = 0xffff;
            }
            out[60..62].copy_from_slice(&new.to_be_bytes());
        }
        (out, IpAddr::from(hop))
    } else {
        let at = h + 4 + next as usize * 4;
        let hop: [u8; 4] = f[at..at + 4].try_into().unwrap();
        out[26..30].copy_from_slice(&f[30..34]);
        out[30..34].copy_from_slice(&hop);
        let ck = csum_update(be16(f, 24), &f[26..30], &hop);
        out[24..26].copy_from_slice(&ck.to_be_bytes());
        let udp = 14 + (f[14] & 0x0f) as usize * 4;
        out[udp + 6..udp + 8].copy_from_slice(&[0, 0]);
        (out, IpAddr::from(hop))
    }
}

/// The reasons a local delivery of this inner packet may give.
fn local_reasons(g: &Gue) -> &'static [&'static str] {
    match g.proto {
        None => &["other"],
        // No UDP socket in the fuzz namespace: flagged datagrams go round like TCP data.
        Some(17) if g.udp_sc => &["no_hoplist", "hops_exhausted", "next_hop_self"],
        Some(17) => &["udp", "udp_fragment"],
        Some(6) => &[
            "syn",
            "socket",
            "syncookie",
            "no_hoplist",
            "hops_exhausted",
            "next_hop_self",
        ],
        Some(p) if p == if g.inner_v6 { 58 } else { 1 } => &[
            "icmp",
            "other",
            "no_hoplist",
            "hops_exhausted",
            "next_hop_self",
        ],
        Some(_) => &["other"],
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn check(skel: &RedirectorSkel<'_>, f: &[u8]) -> Result<&'static str, String> {
    let (verdict, out, counted) = run(skel, f)?;
    let expect = model(f);
    let reason = match counted[..] {
        [r] => r,
        _ => return Err(format!("counted {counted:?}, not one reason ({expect:?})")),
    };
    match expect {
        Expect::NotGue => {
            if (verdict, &out[..], reason) != (TC_ACT_OK, f, "not_gue") {
                return Err(format!("model: not GUE; program: {verdict} {reason}"));
            }
        }
        Expect::Drop(want) => {
            if (verdict, reason) != (TC_ACT_SHOT, want) {
                return Err(format!("model: drop {want}; program: {verdict} {reason}"));
            }
        }
        Expect::Gue(g) => match (verdict, reason) {
            (TC_ACT_OK, r) if local_reasons(&g).contains(&r) => {
                match (r, g.hops) {
                    ("no_hoplist", Some(_)) => return Err("no_hoplist with a hop list".into()),
                    ("hops_exhausted", Some((_, next, count))) if next < count => {
                        return Err(format!("hops_exhausted at {next} of {count}"))
                    }
                    _ => {}
                }
                let mut want = f[..12].to_vec();
                want.extend_from_slice(if g.inner_v6 {
                    &[0x86, 0xdd]
                } else {
                    &[0x08, 0x00]
                });
                want.extend_from_slice(&f[g.inner..]);
                if out != want {
                    return Err(format!(
                        "{r}: decapsulated wrong\n  want {}\n  got  {}",
                        hex(&want),
                        hex(&out)
                    ));
                }
            }
            (TC_ACT_REDIRECT, "forward") => {
                let Some((_, next, count)) = g.hops else {
                    return Err("forwarded without a hop list".into());
                };
                if next >= count || g.proto.is_none() || (g.proto == Some(17) && !g.udp_sc) {
                    return Err(format!(
                        "forwarded at hop {next} of {count}, inner {:?}",
                        g.proto
                    ));
                }
                let (mut want, hop) = forwarded(f, &g);
                let known: [IpAddr; 3] = [IpAddr::V4(HOP4), IpAddr::V4(HOP4_B), IpAddr::V6(HOP6)];
                if known.contains(&hop) {
                    want[..6].copy_from_slice(&HOP_MAC);
                    want[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
                }
                if out != want {
                    return Err(format!(
                        "forward to {hop}: wrong frame\n  want {}\n  got  {}",
                        hex(&want),
                        hex(&out)
                    ));
                }
            }
            (TC_ACT_SHOT, "no_route") if g.hops.is_some_and(|(_, n, c)| n < c) => {}
            // The route's MTU (v0: 1500) against the length the outer header declares.
            (TC_ACT_SHOT, "too_big")
                if g.hops.is_some_and(|(_, n, c)| n < c) && declared_len(f, g.outer_v6) > 1500 => {}
            _ => {
                return Err(format!(
                    "model: decapsulate or forward {g:?}; program: {verdict} {reason}"
                ))
            }
        },
    }
    Ok(reason)
}

/// xorshift64*: small, seedable, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545f4914f6cdd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn v6(a: Ipv6Addr) -> IpAddr {
    IpAddr::V6(a)
}

/// A valid frame to start from.
fn seed_frame(r: &mut Rng) -> Vec<u8> {
    let sport = r.next() as u16 | 1024;
    let body: Vec<u8> = (0..r.below(100)).map(|_| r.byte()).collect();
    let flags = ["A", "S", "AP", "R"][r.below(4)];
    let inner4 = match r.below(4) {
        0 => udp(v4(CLIENT4), v4(VIP4), sport, 53, &body),
        1 => {
            let mut v = Vec::new();
            etherparse::PacketBuilder::ipv4(CLIENT4.octets(), VIP4.octets(), 64)
                .icmpv4_echo_request(1, 1)
                .write(&mut v, &body)
                .unwrap();
            v
        }
        _ => tcp(v4(CLIENT4), v4(VIP4), sport, 80, flags, &body),
    };
    let inner6 = tcp(v6(CLIENT6), v6(VIP6), sport, 80, flags, &body);
    let inner = if r.below(3) == 0 { inner6 } else { inner4 };
    let next = r.below(3) as u8;
    match r.below(9) {
        0..=2 => gue_frame(
            v4(DIRECTOR4),
            v4(SELF4),
            &Hops::V4 {
                next,
                hops: vec![HOP4, HOP4_B],
            },
            &inner,
        ),
        3 => gue_frame(
            v4(DIRECTOR4),
            v4(SELF4),
            &Hops::V4 {
                next: 0,
                hops: vec![SELF4, HOP4],
            },
            &inner,
        ),
        4 => gue_frame(v4(DIRECTOR4), v4(SELF4), &Hops::None, &inner),
        5 | 6 => gue_frame(
            v6(DIRECTOR6),
            v6(SELF6),
            &Hops::V6 {
                next: next.min(1),
                hops: vec![HOP6],
            },
            &inner,
        ),
        7 => gue_frame(
            v4(STRANGER4),
            v4(SELF4),
            &Hops::V4 {
                next: 0,
                hops: vec![HOP4],
            },
            &inner,
        ),
        _ => {
            // Not GUE: the host's own traffic.
            let ip = if r.below(2) == 0 {
                udp(v4(CLIENT4), v4(SELF4), sport, 53, &body)
            } else {
                tcp(v6(CLIENT6), v6(SELF6), sport, 22, "A", &body)
            };
            let mut f = LO_MAC.to_vec();
            f.extend_from_slice(&DIRECTOR_MAC);
            f.extend_from_slice(if ip[0] >> 4 == 6 {
                &[0x86, 0xdd]
            } else {
                &[0x08, 0x00]
            });
            f.extend_from_slice(&ip);
            f
        }
    }
}

fn set(f: &mut [u8], at: usize, v: u8) {
    if at < f.len() {
        f[at] = v;
    }
}

fn set16(f: &mut [u8], at: usize, v: u16) {
    if at + 2 <= f.len() {
        f[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
}

/// One random change. Offsets are those of an unchanged outer header (IPv4 without options
/// or IPv6): a change after another may land elsewhere, which is fuzzing too.
fn mutate(r: &mut Rng, mut f: Vec<u8>) -> Vec<u8> {
    let v6 = be16(&f, 12) == 0x86dd;
    let udp = if v6 { 54 } else { 34 };
    let g = udp + 8;
    let small = |r: &mut Rng| [0u16, 1, 11, 12, 13, 0xffff, r.below(200) as u16][r.below(7)];
    match r.below(16) {
        0 => {
            let i = r.below(f.len().min(120));
            f[i] = r.byte();
        }
        1 => {
            let to = 14 + r.below(f.len() - 13);
            f.truncate(to);
        }
        2 => {
            for _ in 0..1 + r.below(40) {
                f.push(r.byte());
            }
        }
        3 => f.splice(12..12, [0x81, 0x00, 0, r.byte()]).for_each(drop),
        // outer lengths
        4 => {
            let at = [if v6 { 18 } else { 16 }, udp + 4][r.below(2)];
            let v = small(r);
            set16(&mut f, at, v);
        }
        // outer fragment bits, or IHL
        5 => {
            if v6 {
                set(&mut f, 14, [0x60, 0x40, 0x70][r.below(3)]);
            } else if r.below(2) == 0 {
                set16(&mut f, 20, [0x2000u16, 0x0001, 0x4000, 0][r.below(4)]);
            } else {
                set(&mut f, 14, 0x40 | (r.byte() & 0x0f));
            }
        }
        // destination port
        6 => {
            let v = [GUE_PORT, GUE_PORT + 1, 6080, r.next() as u16][r.below(4)];
            set16(&mut f, udp + 2, v);
        }
        // outer source: inside or outside the director ranges
        7 => {
            if v6 {
                set(&mut f, 37, [0x00, 0x01, 0x100u16 as u8][r.below(3)]);
            } else {
                set(&mut f, 29, [96u8, 100, 111, 112, 95][r.below(5)]);
            }
        }
        // GUE version, C bit, hlen
        8 => {
            let b = f.get(g).copied().unwrap_or(0);
            let v = match r.below(4) {
                0 => b | 0x40,
                1 => b | 0x20,
                2 => (b & 0xe0) | (r.byte() & 0x1f),
                _ => b.wrapping_add(1),
            };
            set(&mut f, g, v);
        }
        // GUE protocol, flags
        9 => {
            if r.below(2) == 0 {
                set(&mut f, g + 1, [4u8, 41, 0, 17, 6][r.below(5)]);
            } else {
                set(&mut f, g + 2 + r.below(2), r.byte());
            }
        }
        // hop list type
        10 => set16(&mut f, g + 4, [0u16, 1, 2, 0x100][r.below(4)]),
        // next-hop index
        11 => set(&mut f, g + 6, [0u8, 1, 2, 3, 4, 255][r.below(6)]),
        // hop count
        12 => set(&mut f, g + 7, [0u8, 1, 2, 3, 4, 31, 255][r.below(7)]),
        // a hop address byte
        13 => {
            let at = g + 8 + r.below(if v6 { 16 } else { 8 });
            set(&mut f, at, r.byte());
        }
        // inner version / IHL / protocol, at the first hop list's size
        14 => {
            let hlen = f.get(g).map_or(0, |b| (b & 0x1f) as usize * 4);
            let i = g + 4 + hlen;
            match r.below(3) {
                0 => set(&mut f, i, r.byte()),
                1 => set(
                    &mut f,
                    i + if v6 { 6 } else { 9 },
                    [0u8, 1, 6, 17, 44, 58, 132][r.below(7)],
                ),
                _ => set16(&mut f, i + 6, [0x2000u16, 0x0001, 0x4000][r.below(3)]),
            }
        }
        // the EtherType or the destination MAC
        _ => {
            if r.below(2) == 0 {
                set16(&mut f, 12, [0x0800u16, 0x86dd, 0x0806][r.below(3)]);
            } else {
                set(&mut f, r.below(6), [1u8, 0xff, 2][r.below(3)]);
            }
        }
    }
    f
}

/// The outer IP packet's length as its header declares it.
fn declared_len(f: &[u8], v6: bool) -> usize {
    if v6 {
        40 + be16(f, 18) as usize
    } else {
        be16(f, 16) as usize
    }
}

fn shorter_than_ip_header(f: &[u8]) -> bool {
    match be16(f, 12) {
        0x0800 => f.len() < 14 + 20,
        0x86dd => f.len() < 14 + 40,
        _ => false,
    }
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// The frames that once found a bug: `tests/data/fuzz/*.hex`, one frame per file.
fn regressions() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
    let mut v = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "hex") {
                let text = std::fs::read_to_string(&p).unwrap();
                let body: String = text.lines().filter(|l| !l.starts_with('#')).collect();
                v.push((p.display().to_string(), unhex(&body)));
            }
        }
    }
    v.sort();
    v
}

#[test]
fn mutated_frames_match_the_model() {
    let seed: u64 = std::env::var("XDPLB_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let secs: u64 = std::env::var("XDPLB_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    println!("redirector fuzz: seed {seed} (XDPLB_FUZZ_SEED={seed} reproduces), {secs} s");
    let ns = with_lab("fuzz");
    // Forwards take the FIB fast path (test runs come in on lo).
    ns.sysctl("net.ipv4.conf.lo.forwarding", "1");
    ns.sysctl("net.ipv4.conf.all.forwarding", "1");
    ns.sysctl("net.ipv6.conf.all.forwarding", "1");
    ns.run(|| {
        let mut obj = MaybeUninit::uninit();
        let skel = load(&mut obj);
        let mut failures = Vec::new();
        for (name, f) in regressions() {
            if let Err(e) = check(&skel, &f) {
                failures.push(format!("regression {name}: {e}"));
            }
        }
        let mut r = Rng(seed | 1);
        let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
        let (start, mut frames, mut refused) = (Instant::now(), 0u64, 0u64);
        while start.elapsed() < Duration::from_secs(secs) && failures.len() < 5 {
            let mut f = seed_frame(&mut r);
            for _ in 0..1 + r.below(3) {
                f = mutate(&mut r, f);
            }
            frames += 1;
            match check(&skel, &f) {
                Ok(what) => *seen.entry(what).or_default() += 1,
                // The kernel's test runner refuses an IP frame shorter than its IP header
                // (EINVAL): such frames are never run, and counted apart, not as passes.
                Err(e) if e.starts_with("test run refused") && shorter_than_ip_header(&f) => {
                    refused += 1
                }
                Err(e) => failures.push(format!("frame {}: {e}", hex(&f))),
            }
        }
        let took = start.elapsed().as_secs_f64();
        println!(
            "redirector fuzz: {frames} frames in {took:.1} s ({:.0} frames/s)",
            frames as f64 / took
        );
        for (what, n) in &seen {
            println!("redirector fuzz:   {what:18} {n}");
        }
        println!("redirector fuzz:   not run: {refused} frames shorter than their IP header");
        assert!(
            failures.is_empty(),
            "seed {seed}: {} frame(s) the program and the model disagree on (keep each as \
             tests/data/fuzz/<name>.hex):\n{}",
            failures.len(),
            failures.join("\n")
        );
        for must in ["forward", "not_gue", "bad_gue", "source_not_allowed"] {
            assert!(seen.contains_key(must), "no frame was {must}: {seen:?}");
        }
    });
}
