//! A bounded fuzzer: valid frames, mutated (header fields, lengths, truncation, IPv4 options,
//! IPv6 extension headers, VLAN tags, padding), through the real XDP program
//! (BPF_PROG_TEST_RUN) and held to a reference model written here from the wire formats, not
//! from the program: a frame not addressed to a VIP leaves unchanged with XDP_PASS; a frame
//! the model can forward leaves as exactly the GUE frame tablegen's row gives; every other
//! frame passes unchanged or drops, with the one reason the model names counted. The program
//! never forwards a frame the model cannot (it never writes an outer header the model did not
//! predict, byte for byte).
//!
//! Seeded: the seed is printed, `XDPLB_FUZZ_SEED=<n>` reproduces a run, `XDPLB_FUZZ_SECS`
//! (default 25) bounds it. Frames that found a bug are kept in `tests/data/fuzz/*.hex` and
//! replayed first on every run.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use director::counters as reason;
use director::datapath::Datapath;
use tablegen::hash::Flow;

fn yaml() -> String {
    format!(
        r#"services:
  - name: web
    hash_key: {KEY}
    seed: {SEED}
    table_bits: 8
    binds:
      - {{ vip: 10.100.0.1, proto: tcp, port: 80 }}
      - {{ vip: 10.100.0.1, proto: udp, ports: 5000-5100 }}
    backends:
      - {{ name: b1, address: 10.1.0.11 }}
      - {{ name: b2, address: 10.1.0.12 }}
      - {{ name: b3, address: 10.1.0.13 }}
  - name: any
    hash_key: {KEY}
    seed: {SEED}
    table_bits: 8
    hops: 3
    hash: [src_ip]
    binds:
      - {{ vip: 10.100.0.2, proto: tcp, ports: all }}
    backends:
      - {{ name: b1, address: 10.1.0.21 }}
      - {{ name: b2, address: 10.1.0.22 }}
      - {{ name: b3, address: 10.1.0.23 }}
      - {{ name: b4, address: 10.1.0.24 }}
  - name: web6
    hash_key: {KEY}
    seed: {SEED}
    table_bits: 16
    binds:
      - {{ vip: "fd00:100::1", proto: tcp, port: 443 }}
      - {{ vip: 10.100.0.3, proto: udp, port: 443 }}
    backends:
      - {{ name: b1, address: "fd00:1::31" }}
      - {{ name: b2, address: "fd00:1::32" }}
      - {{ name: b3, address: "fd00:1::33" }}
  - name: v6to4
    hash_key: {KEY}
    seed: {SEED}
    table_bits: 16
    binds:
      - {{ vip: "fd00:100::2", proto: udp, port: 53 }}
    backends:
      - {{ name: b1, address: 10.1.0.41 }}
      - {{ name: b2, address: 10.1.0.42 }}
"#
    )
}

const TCP: u8 = 6;
const UDP: u8 = 17;

/// The model's copy of the binds above: (VIP, protocol, first port, last port, service).
const BINDS: &[(&str, u8, u16, u16, &str)] = &[
    ("10.100.0.1", TCP, 80, 80, "web"),
    ("10.100.0.1", UDP, 5000, 5100, "web"),
    ("10.100.0.2", TCP, 0, 65535, "any"),
    ("fd00:100::1", TCP, 443, 443, "web6"),
    ("10.100.0.3", UDP, 443, 443, "web6"),
    ("fd00:100::2", UDP, 53, 53, "v6to4"),
];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn is_vip(a: IpAddr) -> bool {
    BINDS.iter().any(|b| ip(b.0) == a)
}

fn vip_has_proto(a: IpAddr, proto: u8) -> bool {
    BINDS.iter().any(|b| ip(b.0) == a && b.1 == proto)
}

fn bound(a: IpAddr, proto: u8, port: u16) -> Option<&'static str> {
    BINDS
        .iter()
        .find(|b| ip(b.0) == a && b.1 == proto && (b.2..=b.3).contains(&port))
        .map(|b| b.4)
}

/// What the model says must happen to a frame.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// Unchanged, XDP_PASS, this reason counted.
    Pass(usize),
    /// XDP_DROP, this reason counted.
    Drop(usize),
    /// Encapsulated for `service`'s row of `flow`: the IP packet at `l3`, `ip_len` bytes, its
    /// upper layer at `l4`. `summed`: the inner checksum does not cover the packet (UDP
    /// checksum 0, a first fragment, IPv6 extension headers), so an IPv6 outer checksum sums
    /// its bytes; otherwise it counts the inner packet as its own checksums say it is.
    Forward {
        service: &'static str,
        flow: Flow,
        l3: usize,
        l4: usize,
        ip_len: usize,
        summed: bool,
    },
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn addr4(b: &[u8], at: usize) -> IpAddr {
    IpAddr::from(<[u8; 4]>::try_from(&b[at..at + 4]).unwrap())
}

fn addr6(b: &[u8], at: usize) -> IpAddr {
    IpAddr::from(<[u8; 16]>::try_from(&b[at..at + 16]).unwrap())
}

/// The flow an ICMP error (frag-needed, packet-too-big) quotes at `q`, client -> VIP, if it
/// is a bound one: (service, flow).
fn quoted_flow(f: &[u8], q: usize, v6: bool) -> Option<(&'static str, Flow)> {
    let n = f.len();
    let (src, dst, proto, l4) = if v6 {
        if q + 40 > n {
            return None;
        }
        (addr6(f, q + 8), addr6(f, q + 24), f[q + 6], q + 40)
    } else {
        if q + 20 > n {
            return None;
        }
        let ihl = (f[q] & 0x0f) as usize * 4;
        if f[q] >> 4 != 4 || ihl < 20 || be16(f, q + 6) & 0x1fff != 0 {
            return None;
        }
        (addr4(f, q + 12), addr4(f, q + 16), f[q + 9], q + ihl)
    };
    if proto != TCP && proto != UDP || l4 + 8 > n {
        return None;
    }
    let (qsport, qdport) = (be16(f, l4), be16(f, l4 + 2));
    // The quoted packet is VIP -> client.
    let service = bound(src, proto, qsport)?;
    Some((
        service,
        Flow {
            src: dst,
            dst: src,
            sport: qdport,
            dport: qsport,
        },
    ))
}

/// The reference model: the wire formats and the binds above, nothing of the program.
fn model(f: &[u8]) -> Expect {
    let n = f.len();
    let mut l3 = 14;
    let mut ethertype = be16(f, 12);
    if ethertype == 0x8100 {
        if n < 18 {
            return Expect::Pass(reason::UNPARSED);
        }
        ethertype = be16(f, 16);
        l3 = 18;
    }
    let (v6, dst, mut proto, ip_len, mut l4, first_fragment);
    let mut walked = false;
    match ethertype {
        0x0800 => {
            if l3 + 20 > n {
                return Expect::Pass(reason::UNPARSED);
            }
            let ihl = (f[l3] & 0x0f) as usize * 4;
            let tot = be16(f, l3 + 2) as usize;
            if f[l3] >> 4 != 4 || ihl < 20 || tot < ihl || l3 + tot > n {
                return Expect::Pass(reason::UNPARSED);
            }
            v6 = false;
            dst = addr4(f, l3 + 16);
            proto = f[l3 + 9];
            ip_len = tot;
            l4 = l3 + ihl;
            let frag = be16(f, l3 + 6);
            if frag & 0x1fff != 0 {
                return Expect::Pass(if is_vip(dst) {
                    reason::FRAGMENT
                } else {
                    reason::NOT_VIP
                });
            }
            first_fragment = frag & 0x2000 != 0;
        }
        0x86dd => {
            if l3 + 40 > n {
                return Expect::Pass(reason::UNPARSED);
            }
            let plen = be16(f, l3 + 4) as usize;
            if f[l3] >> 4 != 6 || plen == 0 || l3 + 40 + plen > n {
                return Expect::Pass(reason::UNPARSED);
            }
            v6 = true;
            dst = addr6(f, l3 + 24);
            proto = f[l3 + 6];
            ip_len = 40 + plen;
            l4 = l3 + 40;
            first_fragment = false;
            // Hop-by-hop, routing, destination options: at most 4, each leaving 8 bytes.
            for _ in 0..4 {
                if !matches!(proto, 0 | 43 | 60) || l4 + 8 > n {
                    break;
                }
                let len = (f[l4 + 1] as usize + 1) * 8;
                if l4 + len + 8 > l3 + ip_len {
                    break;
                }
                proto = f[l4];
                l4 += len;
                walked = true;
            }
        }
        _ => return Expect::Pass(reason::NOT_VIP),
    }
    if !is_vip(dst) {
        return Expect::Pass(reason::NOT_VIP);
    }
    if proto == TCP || proto == UDP {
        if !vip_has_proto(dst, proto) {
            return Expect::Pass(reason::NOT_VIP);
        }
        if l4 + 8 > n {
            return Expect::Drop(reason::L4_TRUNCATED);
        }
        let (sport, dport) = (be16(f, l4), be16(f, l4 + 2));
        let Some(service) = bound(dst, proto, dport) else {
            return Expect::Pass(reason::PORT_NOT_BOUND);
        };
        let src = if v6 {
            addr6(f, l3 + 8)
        } else {
            addr4(f, l3 + 12)
        };
        let udp_zero = !v6 && proto == UDP && be16(f, l4 + 6) == 0;
        return Expect::Forward {
            service,
            flow: Flow {
                src,
                dst,
                sport,
                dport,
            },
            l3,
            l4,
            ip_len,
            summed: walked || first_fragment || udp_zero,
        };
    }
    let icmp = if v6 { 58 } else { 1 };
    if proto == icmp && !first_fragment {
        if l4 + 8 > n {
            return Expect::Pass(reason::ICMP);
        }
        let error = if v6 {
            f[l4] == 2
        } else {
            f[l4] == 3 && f[l4 + 1] == 4
        };
        if error {
            if let Some((service, flow)) = quoted_flow(f, l4 + 8, v6) {
                return Expect::Forward {
                    service,
                    flow,
                    l3,
                    l4,
                    ip_len,
                    summed: walked,
                };
            }
        }
        return Expect::Pass(reason::ICMP);
    }
    if v6 && proto == 44 {
        return Expect::Pass(reason::FRAGMENT);
    }
    if v6 && matches!(proto, 0 | 43 | 60) {
        return Expect::Pass(reason::IPV6_EXT);
    }
    Expect::Pass(reason::PORT_NOT_BOUND)
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
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// A valid frame to start from: to a bind, to a VIP's other port, to the host, or an ICMP
/// error about a bound flow.
fn seed_frame(r: &mut Rng) -> Vec<u8> {
    let src4 = IpAddr::from((r.next() as u32 | 0x0100_0000).to_be_bytes());
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&r.next().to_be_bytes());
    a[8..].copy_from_slice(&r.next().to_be_bytes());
    a[0] = 0x20;
    let src6 = IpAddr::from(a);
    let sport = r.next() as u16 | 1024;
    let body: Vec<u8> = (0..r.below(200)).map(|_| r.byte()).collect();
    match r.below(12) {
        0 => tcp_packet(src4, ip("10.100.0.1"), sport, 80, &body),
        1 => udp_packet(
            src4,
            ip("10.100.0.1"),
            sport,
            5000 + r.below(120) as u16,
            &body,
        ),
        2 => tcp_packet(src4, ip("10.100.0.2"), sport, r.next() as u16, &body),
        3 => tcp_packet(src6, ip("fd00:100::1"), sport, 443, &body),
        4 => udp_packet(src4, ip("10.100.0.3"), sport, 443, &body),
        5 => udp_packet(src6, ip("fd00:100::2"), sport, 53, &body),
        6 => tcp_packet(src4, ip("10.1.0.1"), sport, 22, &body),
        7 => udp_packet(src6, ip("fd00:1::1"), sport, 53, &body),
        8 => tcp_packet(src4, ip("10.100.0.1"), sport, 81, &body),
        9 => {
            let quoted = tcp_packet(ip("10.100.0.1"), src4, 80, sport, b"");
            let mut v = Vec::new();
            etherparse::PacketBuilder::ethernet2(CLIENT_MAC, DIR_MAC)
                .ipv4([198, 51, 100, 1], [10, 100, 0, 1], 64)
                .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                    etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                        next_hop_mtu: 1400,
                    },
                ))
                .write(&mut v, &quoted[14..14 + 28])
                .unwrap();
            v
        }
        10 => {
            let quoted = tcp_packet(ip("fd00:100::1"), src6, 443, sport, b"");
            let mut v = Vec::new();
            etherparse::PacketBuilder::ethernet2(CLIENT_MAC, DIR_MAC)
                .ipv6(
                    [0x20, 1, 0xd, 0xb8, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                    ip6_octets("fd00:100::1"),
                    64,
                )
                .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 })
                .write(&mut v, &quoted[14..14 + 48])
                .unwrap();
            v
        }
        _ => udp_packet(src4, ip("10.100.0.2"), sport, 80, &body), // VIP without UDP
    }
}

fn ip6_octets(s: &str) -> [u8; 16] {
    match ip(s) {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => unreachable!(),
    }
}

/// Where the IP header is (after at most one VLAN tag).
fn l3_of(f: &[u8]) -> usize {
    if f.len() >= 18 && be16(f, 12) == 0x8100 {
        18
    } else {
        14
    }
}

fn set16(f: &mut [u8], at: usize, v: u16) {
    if at + 2 <= f.len() {
        f[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
}

/// One random change, of the kinds a broken or hostile sender makes.
fn mutate(r: &mut Rng, mut f: Vec<u8>) -> Vec<u8> {
    let l3 = l3_of(&f);
    let v6 = f.len() > l3 && f[l3] >> 4 == 6;
    let random16 = |r: &mut Rng| match r.below(4) {
        0 => 0,
        1 => 0xffff,
        2 => r.below(80) as u16,
        _ => r.next() as u16,
    };
    match r.below(14) {
        // a byte anywhere in the first 100
        0 => {
            let i = r.below(f.len().min(100));
            f[i] = r.byte();
        }
        // truncated
        1 => {
            let to = 14 + r.below(f.len() - 13);
            f.truncate(to);
        }
        // Ethernet padding or trailing junk
        2 => {
            let n = 1 + r.below(64);
            for _ in 0..n {
                f.push(r.byte());
            }
        }
        // a VLAN tag (or a second one)
        3 => {
            let tag = [0x81, 0x00, r.byte() & 0x0f, r.byte()];
            f.splice(12..12, tag);
        }
        // the IP length field
        4 => {
            let at = if v6 { l3 + 4 } else { l3 + 2 };
            let v = match r.below(3) {
                0 => random16(r),
                1 => be16(&f, at.min(f.len() - 2)).wrapping_add(r.below(9) as u16),
                _ => be16(&f, at.min(f.len() - 2)).wrapping_sub(r.below(9) as u16),
            };
            set16(&mut f, at, v);
        }
        // version / IHL byte
        5 => {
            if f.len() > l3 {
                f[l3] = if r.chance(2) {
                    (f[l3] & 0xf0) | (r.byte() & 0x0f)
                } else {
                    r.byte()
                };
            }
        }
        // protocol / next header
        6 => {
            let at = if v6 { l3 + 6 } else { l3 + 9 };
            let choices = [0u8, 1, 6, 17, 43, 44, 58, 60, 47, 132];
            if at < f.len() {
                f[at] = choices[r.below(choices.len())];
            }
        }
        // IPv4 flags and fragment offset
        7 => {
            if !v6 {
                let v = [0x2000u16, 0x4000, 0x0001, 0x2001, 0x1fff, r.next() as u16];
                set16(&mut f, l3 + 6, v[r.below(v.len())]);
            }
        }
        // IPv4 options (any bytes), lengths kept consistent or not
        8 => {
            if !v6 && f.len() >= l3 + 20 {
                let words = 1 + r.below(10);
                let ihl = ((f[l3] & 0x0f) as usize * 4).clamp(20, 60);
                let opts: Vec<u8> = (0..words * 4).map(|_| r.byte()).collect();
                let at = (l3 + ihl).min(f.len());
                f.splice(at..at, opts);
                f[l3] = 0x40 | ((ihl / 4 + words).min(15) as u8);
                if !r.chance(4) {
                    let tot = be16(&f, l3 + 2).wrapping_add(words as u16 * 4);
                    set16(&mut f, l3 + 2, tot);
                }
            }
        }
        // IPv6 extension headers: hop-by-hop, routing, fragment, destination options
        9 => {
            if v6 && f.len() >= l3 + 40 {
                let kinds = [0u8, 43, 44, 60];
                let kind = kinds[r.below(4)];
                let len = 8 * (1 + r.below(4));
                let mut h = vec![f[l3 + 6], (len / 8 - 1) as u8];
                h.extend((2..len).map(|_| r.byte()));
                if r.chance(8) {
                    h[1] = r.byte(); // a length that lies
                }
                f.splice(l3 + 40..l3 + 40, h);
                f[l3 + 6] = kind;
                if !r.chance(4) {
                    let plen = be16(&f, l3 + 4).wrapping_add(len as u16);
                    set16(&mut f, l3 + 4, plen);
                }
            }
        }
        // ports
        10 => {
            let ihl = if v6 {
                40
            } else {
                (f.get(l3).map_or(5, |b| b & 0x0f) as usize * 4).max(20)
            };
            let at = l3 + ihl + if r.chance(2) { 0 } else { 2 };
            let v = random16(r);
            set16(&mut f, at, v);
        }
        // the destination address: another VIP, a non-VIP, a near miss
        11 => {
            let vips4 = [
                [10u8, 100, 0, 1],
                [10, 100, 0, 2],
                [10, 100, 0, 3],
                [10, 100, 0, 4],
            ];
            if v6 && f.len() >= l3 + 40 {
                let mut a = ip6_octets(if r.chance(2) {
                    "fd00:100::1"
                } else {
                    "fd00:100::2"
                });
                if r.chance(3) {
                    a[15] ^= 1 << r.below(8);
                }
                f[l3 + 24..l3 + 40].copy_from_slice(&a);
            } else if f.len() >= l3 + 20 {
                f[l3 + 16..l3 + 20].copy_from_slice(&vips4[r.below(4)]);
            }
        }
        // the EtherType
        12 => {
            let t = [0x0800u16, 0x86dd, 0x8100, 0x0806, 0x88a8, r.next() as u16];
            set16(&mut f, 12, t[r.below(t.len())]);
        }
        // ICMP type and code
        _ => {
            let ihl = if v6 { 40 } else { 20 };
            let at = l3 + ihl;
            if at + 2 <= f.len() {
                f[at] = [2u8, 3, 8, 128, r.byte()][r.below(5)];
                f[at + 1] = [0u8, 4, r.byte()][r.below(3)];
            }
        }
    }
    f
}

/// The ones' complement sum of `b` as 16-bit big-endian words (odd length: zero-padded).
fn sum16(b: &[u8]) -> u64 {
    b.chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u64)
        .sum()
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The outer UDP checksum of `frame` (Ethernet + IPv6 + UDP + GUE + `inner`) redone with the
/// inner packet counted as its own checksums say it is: an IPv4 header sums to zero, the
/// upper layer (at `l4` in `inner`) to the complement of its pseudo header (ICMPv4: to zero).
/// A sender's bad inner checksum then shows in the outer one too, and the backend's stack
/// drops the packet, as it would have dropped the inner one.
fn as_its_checksums_say(frame: &mut [u8], inner: &[u8], l4: usize) {
    let v6 = inner[0] >> 4 == 6;
    let l4_len = inner.len() - l4;
    let (proto, addrs) = if v6 {
        (inner[6], &inner[8..40])
    } else {
        (inner[9], &inner[12..20])
    };
    let pseudo = sum16(addrs) + (l4_len as u64 >> 16) + (l4_len as u64 & 0xffff) + proto as u64;
    let upper = if !v6 && proto == 1 {
        0
    } else {
        !fold(pseudo) as u64
    };
    let header = if v6 { sum16(&inner[..40]) } else { 0 };
    let gue_end = frame.len() - inner.len();
    let udp = 14 + 40;
    let outer_pseudo = sum16(&frame[14 + 8..14 + 40]) + (frame.len() - udp) as u64 + 17;
    let mut s = outer_pseudo + sum16(&frame[udp..udp + 6]) + sum16(&frame[udp + 8..gue_end]);
    s += header + upper;
    let mut ck = !fold(s);
    if ck == 0 {
        ck = 0xffff;
    }
    frame[udp + 6..udp + 8].copy_from_slice(&ck.to_be_bytes());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// Run one frame and hold it to the model. Returns the reason counted (or "forward").
fn check(
    dp: &Datapath,
    reasons: &libbpf_rs::MapHandle,
    inst: &Installed,
    ingress: u32,
    f: &[u8],
) -> Result<String, String> {
    let before = reason_packets(reasons);
    let (ret, out) = dp
        .test_run(f, ingress)
        .map_err(|e| format!("test run: {e}"))?;
    let after = reason_packets(reasons);
    let counted: Vec<usize> = (0..after.len())
        .filter(|&i| after[i] != before[i])
        .collect();
    let name = |i: usize| director::counters::REASONS[i].1.to_string();
    let expect = model(f);
    match expect {
        Expect::Pass(r) => {
            if (ret, &out[..]) != (XDP_PASS, f) {
                return Err(format!(
                    "model: pass unchanged ({}); program: verdict {ret}, frame {}",
                    name(r),
                    if out == f { "unchanged" } else { "changed" }
                ));
            }
            if counted != [r] {
                return Err(format!(
                    "model: pass counted {}; program counted {:?}",
                    name(r),
                    counted.iter().map(|&i| name(i)).collect::<Vec<_>>()
                ));
            }
            Ok(name(r))
        }
        Expect::Drop(r) => {
            if ret != XDP_DROP || counted != [r] {
                return Err(format!(
                    "model: drop counted {}; program: verdict {ret}, counted {:?}",
                    name(r),
                    counted.iter().map(|&i| name(i)).collect::<Vec<_>>()
                ));
            }
            Ok(name(r))
        }
        Expect::Forward {
            service,
            flow,
            l3,
            l4,
            ip_len,
            summed,
        } => {
            let (hash, row) = inst.expect(service, &flow);
            let inner = &f[l3..l3 + ip_len];
            let mut want = expected_gue(backend_mac(row[0]), DIR_MAC, &row, hash, inner);
            if row[0].is_ipv6() && !summed {
                as_its_checksums_say(&mut want, inner, l4 - l3);
            }
            if ret != out_dp0() || out != want {
                return Err(format!(
                    "model: forward {flow:?} of {service} to {row:?} (verdict {}); program: verdict {ret}, counted {:?}\n  want {}\n  got  {}",
                    out_dp0(),
                    counted.iter().map(|&i| name(i)).collect::<Vec<_>>(),
                    hex(&want),
                    hex(&out)
                ));
            }
            if !counted.is_empty() {
                return Err(format!(
                    "forwarded, yet counted {:?}",
                    counted.iter().map(|&i| name(i)).collect::<Vec<_>>()
                ));
            }
            Ok("forward".into())
        }
    }
}

/// Packets counted per reason (the pinned `stats_reason`, summed over CPUs): reading only
/// this map keeps the run at thousands of frames a second.
fn reason_packets(m: &libbpf_rs::MapHandle) -> Vec<u64> {
    use libbpf_rs::MapCore;
    (0..director::counters::REASONS.len() as u32)
        .map(|i| {
            m.lookup_percpu(&i.to_ne_bytes(), libbpf_rs::MapFlags::ANY)
                .unwrap()
                .unwrap_or_default()
                .iter()
                .map(|v| u64::from_ne_bytes(v[..8].try_into().unwrap()))
                .sum()
        })
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
    println!("director fuzz: seed {seed} (XDPLB_FUZZ_SEED={seed} reproduces), {secs} s");
    let lab = Lab::new();
    let pin = lab.fs.pin_dir();
    let ingress = lab.ingress;
    lab.ns.run(move || {
        let dp = Datapath::open(&pin).expect("load");
        let pin = dp.pin_dir().to_path_buf();
        dp.set_config(&settings()).unwrap();
        let inst = install(&dp, &yaml());
        let reasons = libbpf_rs::MapHandle::from_pinned_path(pin.join("stats_reason")).unwrap();
        let mut failures = Vec::new();
        for (name, f) in regressions() {
            if let Err(e) = check(&dp, &reasons, &inst, ingress, &f) {
                failures.push(format!("regression {name}: {e}"));
            }
        }
        let mut r = Rng(seed | 1);
        let mut seen: BTreeMap<String, u64> = BTreeMap::new();
        let (start, mut frames) = (Instant::now(), 0u64);
        while start.elapsed() < Duration::from_secs(secs) && failures.len() < 5 {
            let mut f = seed_frame(&mut r);
            for _ in 0..1 + r.below(3) {
                f = mutate(&mut r, f);
            }
            frames += 1;
            match check(&dp, &reasons, &inst, ingress, &f) {
                Ok(what) => *seen.entry(what).or_default() += 1,
                Err(e) => failures.push(format!("frame {}: {e}", hex(&f))),
            }
        }
        let took = start.elapsed().as_secs_f64();
        println!(
            "director fuzz: {frames} frames in {took:.1} s ({:.0} frames/s)",
            frames as f64 / took
        );
        for (what, n) in &seen {
            println!("director fuzz:   {what:16} {n}");
        }
        assert!(
            failures.is_empty(),
            "seed {seed}: {} frame(s) the program and the model disagree on (keep each as \
             tests/data/fuzz/<name>.hex):\n{}",
            failures.len(),
            failures.join("\n")
        );
        // The run reached the interesting outcomes, not only the parser's first check.
        for must in ["forward", "not_vip", "unparsed"] {
            assert!(seen.contains_key(must), "no frame was {must}: {seen:?}");
        }
    });
}
