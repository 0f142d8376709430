//! The fast paths (bpf/include/director_fast.h) held to the general path. Every packet runs
//! through the general path alone and then through the whole program (test-only entry points,
//! bpf/test/director_paths.bpf.c, on the daemon's pinned maps): the verdict, the bytes and
//! what the counters gained must be the same, and the fast path must have been taken exactly
//! for the packets that are its case.

mod common;

use std::net::IpAddr;

use common::*;
use director::datapath::{Count, Datapath};
use libbpf_rs::{MapCore, MapFlags};

const PATHS_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/director_paths.bpf.o"));

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// 2^16-row tables (the default) unless said; services the fast path takes and services it
/// leaves to the general path, one reason each.
fn yaml() -> String {
    let sharer = format!("vip: {}, proto: tcp, port: 80", sharing_slot(150));
    // (name, extra settings, binds; "tcp80 X" is vip X, tcp, port 80, backends)
    let services: &[(&str, &str, &[&str], &[&str])] = &[
        (
            "fast",
            "",
            &[
                "tcp80 10.100.0.1",
                "vip: 10.100.0.1, proto: udp, port: 53",
                "vip: 10.100.0.1, proto: tcp, port: 8080",
                "vip: 10.100.0.1, proto: tcp, ports: 1000-2000",
            ],
            &["10.1.0.11", "10.1.0.12", "10.1.0.13"],
        ),
        (
            "src-ip",
            "    hash: [src_ip]\n",
            &["tcp80 10.100.0.5"],
            &["10.1.0.14", "10.1.0.15"],
        ),
        (
            "three-hops",
            "    hops: 3\n",
            &["tcp80 10.100.0.6"],
            &["10.1.0.21", "10.1.0.22", "10.1.0.23", "10.1.0.24"],
        ),
        (
            "v6-backends",
            "",
            &["tcp80 10.100.0.7", "vip: 10.100.0.7, proto: udp, port: 53"],
            &["fd00:1::31", "fd00:1::32"],
        ),
        // IPv4 in IPv6 behind a route with MTU 1400.
        (
            "far-v6-backends",
            "",
            &["tcp80 10.100.0.12"],
            &["fd00:9::21", "fd00:9::22"],
        ),
        (
            "small-table",
            "    table_bits: 8\n",
            &["tcp80 10.100.0.8"],
            &["10.1.0.41", "10.1.0.42"],
        ),
        // Behind a route with MTU 1000: small packets fit, large ones are too big.
        (
            "far",
            "",
            &["tcp80 10.100.0.9"],
            &["10.9.0.11", "10.9.0.12"],
        ),
        (
            "unresolved",
            "",
            &["tcp80 10.100.0.10"],
            &["10.1.0.200", "10.1.0.201"],
        ),
        // Out of the other interface: a redirect.
        (
            "other-egress",
            "",
            &["tcp80 10.100.0.11"],
            &["10.2.0.10", "10.2.0.11"],
        ),
        // Shares 10.100.0.1's TCP slot of the bind index, which 10.100.0.1 keeps (the
        // smaller): the slot overflows, and this VIP is found in director_vips by the general
        // path.
        ("slot-sharer", "", &[&sharer], &["10.1.0.17", "10.1.0.18"]),
        (
            "fast6",
            "",
            &[
                "vip: \"fd00:100::1\", proto: tcp, port: 443",
                "vip: \"fd00:100::1\", proto: udp, port: 53",
            ],
            &["fd00:1::31", "fd00:1::32", "fd00:1::33"],
        ),
        (
            "v4-backends",
            "",
            &[
                "tcp80 \"fd00:100::2\"",
                "vip: \"fd00:100::2\", proto: udp, port: 53",
            ],
            &["10.1.0.45", "10.1.0.46"],
        ),
        // IPv6 in IPv4 behind a route with MTU 1000.
        (
            "far-v4-backends",
            "",
            &["tcp80 \"fd00:100::20\""],
            &["10.9.0.21", "10.9.0.22"],
        ),
        // IPv6 in IPv4, three backends per row.
        (
            "three-hops-v4-backends",
            "    hops: 3\n",
            &["tcp80 \"fd00:100::21\""],
            &["10.1.0.47", "10.1.0.48", "10.1.0.49"],
        ),
        // Behind a route with MTU 1400.
        (
            "far6",
            "",
            &["tcp80 \"fd00:100::19\""],
            &["fd00:9::11", "fd00:9::12"],
        ),
    ];
    let mut y = String::from("services:\n");
    for (name, extra, binds, backends) in services {
        y += &format!(
            "  - name: {name}\n    hash_key: {KEY}\n    seed: {SEED}\n{extra}    binds:\n"
        );
        for b in *binds {
            let b = match b.strip_prefix("tcp80 ") {
                Some(vip) => format!("vip: {vip}, proto: tcp, port: 80"),
                None => b.to_string(),
            };
            y += &format!("      - {{ {b} }}\n");
        }
        y += "    backends:\n";
        for (i, a) in backends.iter().enumerate() {
            y += &format!("      - {{ name: b{i}, address: \"{a}\" }}\n");
        }
    }
    y
}

/// The bind index slot of (IPv4 address, protocol) (abi.h: director_vip_slot).
fn slot_of(a: [u8; 4], proto: u8) -> u32 {
    let w2 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
    (w2 ^ u32::from_ne_bytes(a))
        .wrapping_add(proto as u32)
        .wrapping_mul(0x9e3779b1)
        >> 20
}

/// The first address of 10.<net>.0.0/16 whose TCP slot is 10.100.0.1's.
fn sharing_slot(net: u8) -> String {
    let want = slot_of([10, 100, 0, 1], 6);
    (0..=u16::MAX)
        .map(|i| [10, net, (i >> 8) as u8, i as u8])
        .find(|a| slot_of(*a, 6) == want)
        .map(|a| std::net::Ipv4Addr::from(a).to_string())
        .expect("a /16 has an address in every slot")
}

fn ipv4_checksum(frame: &mut [u8]) {
    let ihl = (frame[14] & 0x0f) as usize * 4;
    frame[24] = 0;
    frame[25] = 0;
    let ck = etherparse::checksum::Sum16BitWords::new()
        .add_slice(&frame[14..14 + ihl])
        .ones_complement()
        .to_be();
    frame[24..26].copy_from_slice(&ck.to_be_bytes());
}

/// What is done to a plain frame, and whether the fast path may still take it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    Plain,
    NoDf,
    Tos,
    UdpZeroChecksum,
    IpOptions,
    Vlan,
    Padding,
    FirstFragment,
    LaterFragment,
    Truncated,
}

impl Variant {
    const ALL: [Variant; 10] = [
        Variant::Plain,
        Variant::NoDf,
        Variant::Tos,
        Variant::UdpZeroChecksum,
        Variant::IpOptions,
        Variant::Vlan,
        Variant::Padding,
        Variant::FirstFragment,
        Variant::LaterFragment,
        Variant::Truncated,
    ];

    fn fast_shape(self) -> bool {
        matches!(
            self,
            Variant::Plain | Variant::NoDf | Variant::Tos | Variant::UdpZeroChecksum
        )
    }

    /// Whether the variant means anything for this family.
    fn applies(self, v6: bool) -> bool {
        !(v6 && self == Variant::NoDf)
    }

    fn apply(self, mut f: Vec<u8>) -> Vec<u8> {
        match self {
            Variant::Vlan => {
                let mut out = f[..12].to_vec();
                out.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
                out.extend_from_slice(&f[12..]);
                return out;
            }
            Variant::Padding => {
                f.extend_from_slice(&[0u8; 10]);
                return f;
            }
            _ => {}
        }
        if u16::from_be_bytes([f[12], f[13]]) == 0x86dd {
            self.apply_v6(f)
        } else {
            self.apply_v4(f)
        }
    }

    fn apply_v6(self, mut f: Vec<u8>) -> Vec<u8> {
        // An 8-byte extension header in front of the L4 header.
        let ext = |f: &[u8], kind: u8, body: [u8; 6]| {
            let mut out = f[..54].to_vec();
            out.push(f[20]);
            out.push(0);
            out.extend_from_slice(&body);
            out.extend_from_slice(&f[54..]);
            out[20] = kind;
            let plen = u16::from_be_bytes([out[18], out[19]]) + 8;
            out[18..20].copy_from_slice(&plen.to_be_bytes());
            out
        };
        match self {
            Variant::Plain | Variant::NoDf => {}
            Variant::Tos => {
                f[14] = 0x6b; // traffic class 0xb9
                f[15] = 0x90 | (f[15] & 0x0f);
            }
            Variant::UdpZeroChecksum => {
                if f[20] == 17 {
                    f[60] = 0;
                    f[61] = 0;
                }
            }
            Variant::IpOptions => f = ext(&f, 0, [1, 4, 0, 0, 0, 0]), // hop-by-hop, PadN
            Variant::Vlan | Variant::Padding => unreachable!("applied alike to both"),
            Variant::FirstFragment => f = ext(&f, 44, [0, 1, 0, 0, 0, 7]),
            Variant::LaterFragment => f = ext(&f, 44, [0, 16, 0, 0, 0, 7]),
            Variant::Truncated => f.truncate(14 + 40 + 6),
        }
        f
    }

    fn apply_v4(self, mut f: Vec<u8>) -> Vec<u8> {
        match self {
            Variant::Plain => {}
            Variant::NoDf => {
                f[20] &= !0x40;
                ipv4_checksum(&mut f);
            }
            Variant::Tos => {
                f[15] = 0xb9;
                ipv4_checksum(&mut f);
            }
            Variant::UdpZeroChecksum => {
                if f[23] == 17 {
                    f[40] = 0;
                    f[41] = 0;
                }
            }
            Variant::IpOptions => {
                let mut out = f[..34].to_vec();
                out.extend_from_slice(&[1, 1, 1, 1]);
                out.extend_from_slice(&f[34..]);
                out[14] = 0x46;
                let tot = u16::from_be_bytes([out[16], out[17]]) + 4;
                out[16..18].copy_from_slice(&tot.to_be_bytes());
                ipv4_checksum(&mut out);
                f = out;
            }
            Variant::Vlan | Variant::Padding => unreachable!("applied alike to both"),
            Variant::FirstFragment => {
                f[20] = 0x20; // MF, offset 0
                ipv4_checksum(&mut f);
            }
            Variant::LaterFragment => {
                f[20] = 0x00;
                f[21] = 0x02; // offset 16 bytes
                ipv4_checksum(&mut f);
            }
            Variant::Truncated => f.truncate(14 + 20 + 6),
        }
        f
    }
}

/// Runs one frame through an entry point of the test object: (verdict, frame out).
fn run(obj: &mut libbpf_rs::Object, name: &str, frame: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
    let prog = obj
        .progs_mut()
        .find(|p| p.name() == name)
        .unwrap_or_else(|| panic!("the test object has {name}"));
    // struct xdp_md, or none before 5.15 (the ingress is then lo: Lab::ingress)
    let mut ctx = director::datapath::xdp_test_ctx(frame.len(), ifindex).unwrap();
    let mut out = vec![0u8; frame.len() + 256];
    let input = libbpf_rs::ProgramInput {
        data_in: Some(frame),
        data_out: Some(&mut out),
        context_in: ctx.as_mut().map(|c| &mut c[..]),
        repeat: 1,
        ..Default::default()
    };
    let o = prog.test_run(input).expect("test run");
    let (ret, n) = (o.return_value, o.data.map(|d| d.len()).unwrap_or(0));
    out.truncate(n);
    (ret, out)
}

fn counts(dp: &Datapath) -> (Vec<Count>, Vec<Count>) {
    let c = dp.counters();
    (c.reasons, c.binds)
}

fn gained(before: &(Vec<Count>, Vec<Count>), after: &(Vec<Count>, Vec<Count>)) -> Vec<String> {
    let diff = |b: &[Count], a: &[Count], what: &str| {
        a.iter()
            .enumerate()
            .filter_map(|(i, x)| {
                let y = b.get(i).copied().unwrap_or_default();
                (*x != y).then(|| {
                    format!(
                        "{what}[{i}] +{}/+{}",
                        x.packets - y.packets,
                        x.bytes - y.bytes
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    let mut v = diff(&before.0, &after.0, "reason");
    v.extend(diff(&before.1, &after.1, "bind"));
    v
}

#[test]
fn the_fast_path_gives_what_the_general_path_gives() {
    let lab = Lab::new();
    lab.ns.ip(&[
        "neigh",
        "replace",
        "10.2.0.11",
        "lladdr",
        "02:00:00:00:be:0b",
        "dev",
        "dq0",
        "nud",
        "permanent",
    ]);
    let pin = lab.fs.pin_dir();
    let dp0 = lab.ingress; // dp0, or lo before 5.15
    lab.ns.run(move || {
        // One CPU throughout: the next hops the general path caches are per CPU.
        let mut one = nix::sched::CpuSet::new();
        one.set(0).unwrap();
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one).unwrap();

        let dp = Datapath::open(&pin).expect("load");
        let mut s = settings();
        s.nexthop_ttl_ms = 600_000; // no expiry between the two runs of a packet
        dp.set_config(&s).unwrap();
        install(&dp, &yaml());

        let mut open = libbpf_rs::ObjectBuilder::default()
            .open_memory(PATHS_OBJECT)
            .unwrap();
        for mut m in open.maps_mut() {
            let path = pin.join(m.name().to_str().unwrap());
            if path.exists() {
                m.reuse_pinned_map(&path).unwrap();
            }
        }
        let mut obj = open.load().unwrap();
        let probe = libbpf_rs::MapHandle::try_from(
            &obj.maps().find(|m| m.name() == "fast_path_probe").unwrap(),
        )
        .unwrap();
        let taken = || {
            let v = probe
                .lookup(&1u32.to_ne_bytes(), MapFlags::ANY)
                .unwrap()
                .unwrap();
            u64::from_ne_bytes(v[..8].try_into().unwrap())
        };

        // (service's VIP, port, is its case when the shape is)
        let (sharer, host_sharer) = (sharing_slot(150), sharing_slot(151));
        let targets: &[(&str, u16, bool)] = &[
            (&sharer, 80, false),      // its slot is 10.100.0.1's: overflowed
            (&host_sharer, 80, false), // host traffic in that overflowed slot
            ("10.100.0.1", 80, true),
            ("10.100.0.1", 53, true),    // UDP
            ("10.100.0.1", 8080, true),  // the VIP's second single-port bind
            ("10.100.0.1", 1500, false), // a range: no started hash
            ("10.100.0.1", 81, false),   // no bind covers it
            ("10.100.0.5", 80, false),   // hashes the source address only
            ("10.100.0.6", 80, false),   // three backends per row
            ("10.100.0.7", 80, true),    // IPv6 backends: IPv4 in IPv6
            ("10.100.0.7", 53, true),    // UDP (not with a zero checksum)
            ("10.100.0.12", 80, true),   // IPv4 in IPv6, fits its route's MTU unless large
            ("10.100.0.8", 80, false),   // a 2^8-row table
            ("10.100.0.9", 80, true),    // fits its route's MTU unless large
            ("10.100.0.10", 80, false),  // neighbour unresolved: never cached
            ("10.100.0.11", 80, true),   // redirect to the other interface
            ("10.200.0.1", 80, true),    // host traffic
            ("10.100.0.99", 80, true),   // likewise
            ("fd00:100::1", 443, true),
            ("fd00:100::1", 53, true),   // UDP
            ("fd00:100::1", 80, false),  // no bind covers it
            ("fd00:100::2", 80, true),   // IPv4 backends: IPv6 in IPv4
            ("fd00:100::2", 53, true),   // UDP
            ("fd00:100::20", 80, true),  // IPv6 in IPv4, fits its route's MTU unless large
            ("fd00:100::21", 80, false), // IPv6 in IPv4, three backends per row
            ("fd00:100::19", 80, true),  // fits its route's MTU unless large
            ("2001:db8::1", 80, true),   // host traffic
            ("fd00:100::99", 80, true),  // likewise
        ];
        let mut x: u64 = 0x2545f4914f6cdd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Random sources per (target, variant, payload): 3, or XDPLB_FAST_PATH_SOURCES (at
        // least 1). The kernel test matrix asks for 1 in an emulated guest, where each packet's
        // counter reads cost milliseconds; every target, variant and payload still runs.
        let sources: usize = std::env::var("XDPLB_FAST_PATH_SOURCES")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n >= 1)
            .unwrap_or(3);
        let (mut fast, mut general_only) = (0, 0);
        for &(vip, port, case) in targets {
            let dst = ip(vip);
            for variant in Variant::ALL {
                if !variant.applies(dst.is_ipv6()) {
                    continue;
                }
                for payload in [0usize, 100, 1300] {
                    for _ in 0..sources {
                        let r = next();
                        let src = if dst.is_ipv6() {
                            IpAddr::from(std::net::Ipv6Addr::from(
                                (0x2001_0db8_u128 << 96) | (r as u128) << 16 | 7,
                            ))
                        } else {
                            IpAddr::from(((r >> 32) as u32 | 0x0100_0000).to_be_bytes())
                        };
                        let sport = (r as u16) | 1024;
                        let body = vec![0x5a; payload];
                        let frame = if port == 53 {
                            udp_packet(src, dst, sport, port, &body)
                        } else {
                            tcp_packet(src, dst, sport, port, &body)
                        };
                        let frame = variant.apply(frame);
                        // Host traffic too: no slot of the bind index overflows here, so
                        // a slot of another pair (or none) settles it.
                        let mut want_fast = case && variant.fast_shape();
                        if [".9", ".12", "::19", "::20"]
                            .iter()
                            .any(|e| vip.ends_with(e))
                        {
                            // MTU 1000 and 1400 routes: 1300 bytes do not fit
                            want_fast &= payload < 1300;
                        }
                        if vip == "10.100.0.7" && variant == Variant::UdpZeroChecksum {
                            // IPv4 in IPv6: a UDP checksum of 0 covers nothing, the outer
                            // checksum has to sum the bytes (the general path does)
                            want_fast &= port != 53;
                        }
                        let what = format!("{vip}:{port} {variant:?} {payload} bytes from {src}");

                        let c0 = counts(&dp);
                        let g = run(&mut obj, "xdplb_director_general", &frame, dp0);
                        let c1 = counts(&dp);
                        let t0 = taken();
                        let p = run(&mut obj, "xdplb_director_probed", &frame, dp0);
                        let c2 = counts(&dp);
                        let took = taken() - t0 == 1;

                        assert_eq!(p.0, g.0, "verdict: {what}");
                        assert_eq!(p.1, g.1, "frame: {what}");
                        assert_eq!(gained(&c1, &c2), gained(&c0, &c1), "counters: {what}");
                        assert_eq!(took, want_fast, "fast path taken: {what}");
                        if took {
                            fast += 1;
                        } else {
                            general_only += 1;
                        }
                    }
                }
            }
        }
        // The loop really had both kinds (the counts are fixed by the cases above: with three
        // sources, over 250 and over 1200).
        assert!(
            fast > 250 * sources / 3 && general_only > 1200 * sources / 3,
            "{fast} fast, {general_only} general"
        );
    });
}
