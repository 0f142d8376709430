//! The fast path (`fast_v4` in bpf/director.bpf.c) held to the general path. Every packet runs
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
    let svc = |name: &str, extra: &str, binds: &[&str], backends: &[&str]| {
        let mut s =
            format!("  - name: {name}\n    hash_key: {KEY}\n    seed: {SEED}\n{extra}    binds:\n");
        for b in binds {
            s += &format!("      - {{ {b} }}\n");
        }
        s += "    backends:\n";
        for (i, a) in backends.iter().enumerate() {
            s += &format!("      - {{ name: b{i}, address: \"{a}\" }}\n");
        }
        s
    };
    let tcp80 = |vip: &str| format!("vip: {vip}, proto: tcp, port: 80");
    let mut y = String::from("services:\n");
    y += &svc(
        "fast",
        "",
        &[
            &tcp80("10.100.0.1"),
            "vip: 10.100.0.1, proto: udp, port: 53",
            "vip: 10.100.0.1, proto: tcp, ports: 1000-2000",
        ],
        &["10.1.0.11", "10.1.0.12", "10.1.0.13"],
    );
    y += &svc(
        "src-ip",
        "    hash: [src_ip]\n",
        &[&tcp80("10.100.0.5")],
        &["10.1.0.14", "10.1.0.15"],
    );
    y += &svc(
        "three-hops",
        "    hops: 3\n",
        &[&tcp80("10.100.0.6")],
        &["10.1.0.21", "10.1.0.22", "10.1.0.23", "10.1.0.24"],
    );
    y += &svc(
        "v6-backends",
        "",
        &[&tcp80("10.100.0.7")],
        &["fd00:1::31", "fd00:1::32"],
    );
    y += &svc(
        "small-table",
        "    table_bits: 8\n",
        &[&tcp80("10.100.0.8")],
        &["10.1.0.41", "10.1.0.42"],
    );
    // Behind a route with MTU 1000: small packets fit, large ones are too big.
    y += &svc(
        "far",
        "",
        &[&tcp80("10.100.0.9")],
        &["10.9.0.11", "10.9.0.12"],
    );
    y += &svc(
        "unresolved",
        "",
        &[&tcp80("10.100.0.10")],
        &["10.1.0.200", "10.1.0.201"],
    );
    // Out of the other interface: a redirect.
    y += &svc(
        "other-egress",
        "",
        &[&tcp80("10.100.0.11")],
        &["10.2.0.10", "10.2.0.11"],
    );
    y
}

/// The VIP filter's bit of an IPv4 address (abi.h: director_vip_filter).
fn filter_bit(a: [u8; 4]) -> u32 {
    let w2 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
    (w2 ^ u32::from_ne_bytes(a)).wrapping_mul(0x9e3779b1) >> 20
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

    fn apply(self, mut f: Vec<u8>) -> Vec<u8> {
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
            Variant::Vlan => {
                let mut out = f[..12].to_vec();
                out.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
                out.extend_from_slice(&f[12..]);
                f = out;
            }
            Variant::Padding => f.extend_from_slice(&[0u8; 10]),
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
    let mut ctx = [0u8; 24]; // struct xdp_md
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let mut out = vec![0u8; frame.len() + 256];
    let input = libbpf_rs::ProgramInput {
        data_in: Some(frame),
        data_out: Some(&mut out),
        context_in: Some(&mut ctx),
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
    let dp0 = lab.dp0;
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

        let vip_bits: Vec<u32> = [1, 5, 6, 7, 8, 9, 10, 11]
            .iter()
            .map(|&i| filter_bit([10, 100, 0, i]))
            .collect();
        // (service's VIP, port, is its case when the shape is)
        let targets: &[(&str, u16, bool)] = &[
            ("10.100.0.1", 80, true),
            ("10.100.0.1", 53, true),    // UDP
            ("10.100.0.1", 1500, false), // a range: no started hash
            ("10.100.0.1", 81, false),   // no bind covers it
            ("10.100.0.5", 80, false),   // hashes the source address only
            ("10.100.0.6", 80, false),   // three backends per row
            ("10.100.0.7", 80, false),   // IPv6 backends
            ("10.100.0.8", 80, false),   // a 2^8-row table
            ("10.100.0.9", 80, true),    // fits its route's MTU unless large
            ("10.100.0.10", 80, false),  // neighbour unresolved: never cached
            ("10.100.0.11", 80, true),   // redirect to the other interface
            ("10.200.0.1", 80, true),    // host traffic (unless its filter bit is a VIP's)
            ("10.100.0.99", 80, true),   // likewise
        ];
        let mut x: u64 = 0x2545f4914f6cdd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut fast, mut general_only) = (0, 0);
        for &(vip, port, case) in targets {
            for variant in Variant::ALL {
                for payload in [0usize, 100, 1200] {
                    for _ in 0..4 {
                        let r = next();
                        let src = IpAddr::from(((r >> 32) as u32 | 0x0100_0000).to_be_bytes());
                        let sport = (r as u16) | 1024;
                        let body = vec![0x5a; payload];
                        let frame = if port == 53 {
                            udp_packet(src, ip(vip), sport, port, &body)
                        } else {
                            tcp_packet(src, ip(vip), sport, port, &body)
                        };
                        let frame = variant.apply(frame);
                        let dst: [u8; 4] = match ip(vip) {
                            IpAddr::V4(a) => a.octets(),
                            _ => unreachable!(),
                        };
                        let host = !dst.starts_with(&[10, 100, 0]) || dst[3] > 11;
                        let mut want_fast = case && variant.fast_shape();
                        if host && vip_bits.contains(&filter_bit(dst)) {
                            want_fast = false; // the filter cannot tell it from a VIP
                        }
                        if vip == "10.100.0.9" && payload == 1200 {
                            want_fast = false; // too big for the route
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
        // The loop really had both kinds (the counts are fixed by the cases above).
        assert!(
            fast > 200 && general_only > 1000,
            "{fast} fast, {general_only} general"
        );
    });
}
