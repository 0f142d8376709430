//! Packet tests: the real XDP program through BPF_PROG_TEST_RUN, maps filled by the daemon's
//! own code (tables::snapshot + Datapath::install), exact expected bytes built independently.
//! Runs as root; bpf_fib_lookup resolves next hops in a namespace each test builds.

mod common;

use std::net::IpAddr;

use common::*;
use director::bpf::types::director_limit as Limit;
use director::counters as reason;
use director::datapath::{AbiBytes, Datapath};
use libbpf_rs::MapCore;
use tablegen::hash::Flow;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One service per bind kind, v4 and v6 VIPs and backends.
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
    table_bits: 8
    binds:
      - {{ vip: "fd00:100::1", proto: tcp, port: 443 }}
      - {{ vip: 10.100.0.3, proto: tcp, port: 443 }}
      - {{ vip: 10.100.0.3, proto: udp, port: 443 }}
    backends:
      - {{ name: b1, address: "fd00:1::31" }}
      - {{ name: b2, address: "fd00:1::32" }}
      - {{ name: b3, address: "fd00:1::33" }}
  - name: v6to4
    hash_key: {KEY}
    seed: {SEED}
    table_bits: 8
    binds:
      - {{ vip: "fd00:100::2", proto: udp, port: 53 }}
    backends:
      - {{ name: b1, address: 10.1.0.41 }}
      - {{ name: b2, address: 10.1.0.42 }}
  - name: far
    hash_key: {KEY}
    seed: {SEED}
    table_bits: 8
    binds:
      - {{ vip: 10.100.0.9, proto: tcp, port: 80 }}
      - {{ vip: "fd00:100::9", proto: tcp, port: 80 }}
    backends:
      - {{ name: b1, address: 10.9.0.11 }}
      - {{ name: b2, address: 10.9.0.12 }}
  - name: far6
    hash_key: {KEY}
    seed: {SEED}
    table_bits: 8
    binds:
      - {{ vip: "fd00:100::19", proto: tcp, port: 80 }}
    backends:
      - {{ name: b1, address: "fd00:9::11" }}
      - {{ name: b2, address: "fd00:9::12" }}
  - name: unresolved
    hash_key: {KEY}
    seed: {SEED}
    table_bits: 8
    binds:
      - {{ vip: 10.100.0.10, proto: tcp, port: 80 }}
    backends:
      - {{ name: b1, address: 10.1.0.200 }}
  - name: other-port
    hash_key: {KEY}
    seed: {SEED}
    table_bits: 8
    binds:
      - {{ vip: 10.100.0.11, proto: tcp, port: 80 }}
    backends:
      - {{ name: b1, address: 10.2.0.10 }}
  - name: empty
    hash_key: {KEY}
    seed: {SEED}
    table_bits: 8
    binds:
      - {{ vip: 10.100.0.12, proto: tcp, port: 80 }}
    backends:
      - {{ name: b1, address: 10.1.0.51, state: inactive }}
"#
    )
}

/// A fresh lab: run `f` in its namespace with a loaded datapath, settings written, no tables,
/// and the ingress of the test runs (dp0, or lo before 5.15: `common::ingress`).
fn in_lab<R: Send + 'static>(f: impl FnOnce(&Datapath, u32) -> R + Send + 'static) -> R {
    let lab = Lab::new();
    let pin = lab.fs.pin_dir();
    let ingress = lab.ingress;
    lab.ns.run(move || {
        let dp = Datapath::open(&pin).expect("load");
        dp.set_config(&settings()).unwrap();
        f(&dp, ingress)
    })
}

struct T {
    lab: Lab,
}

impl T {
    fn new() -> T {
        T { lab: Lab::new() }
    }

    /// Load, install, run `f` inside the namespace with the datapath, the installed config,
    /// the ingress of the test runs (dp0, or lo before 5.15: `common::ingress`) and dq0.
    fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Datapath, &Installed, u32, u32) -> R + Send + 'static,
    ) -> R {
        let pin = self.lab.fs.pin_dir();
        let (ingress, dq0) = (self.lab.ingress, self.lab.dq0);
        self.lab.ns.run(move || {
            let dp = Datapath::open(&pin).expect("load");
            dp.set_config(&settings()).unwrap();
            let inst = install(&dp, &yaml());
            f(&dp, &inst, ingress, dq0)
        })
    }
}

fn flow(src: &str, dst: &str, sport: u16, dport: u16) -> Flow {
    Flow {
        src: ip(src),
        dst: ip(dst),
        sport,
        dport,
    }
}

fn reason_count(dp: &Datapath, r: usize) -> u64 {
    dp.counters().reasons[r].packets
}

/// Run and expect a GUE frame to the flow's row, built independently.
fn check_forward(
    dp: &Datapath,
    inst: &Installed,
    ifindex: u32,
    service: &str,
    f: Flow,
    frame: &[u8],
    l3: usize,
) {
    let (hash, row) = inst.expect(service, &f);
    let (ret, out) = dp.test_run(frame, ifindex).unwrap();
    assert_eq!(ret, out_dp0(), "verdict for {f:?}");
    let want = expected_gue(backend_mac(row[0]), DIR_MAC, &row, hash, &frame[l3..]);
    assert_eq!(hex(&out), hex(&want), "frame for {f:?} to {row:?}");
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn v4_tcp_single_port_bind_is_encapsulated_exactly() {
    T::new().run(|dp, inst, ingress, _| {
        let f = flow("192.0.2.7", "10.100.0.1", 40000, 80);
        let frame = tcp_packet(f.src, f.dst, f.sport, f.dport, b"hello");
        check_forward(dp, inst, ingress, "web", f, &frame, 14);
        let c = dp.counters();
        let id = 0; // first service
        assert_eq!(c.services[id].packets, 1);
        assert_eq!(c.services[id].bytes, frame.len() as u64);
        assert_eq!(
            c.reasons.iter().map(|r| r.packets).sum::<u64>(),
            0,
            "a forward is no reason"
        );
    });
}

/// Two VIPs whose (VIP, TCP) pairs share a slot of the bind index: the smaller one gets the
/// slot, the other is found through the director_vips hash map; both reach their own service,
/// and a port neither binds still passes.
#[test]
fn vips_sharing_a_bind_index_slot_both_forward() {
    let mapped = |a: std::net::Ipv4Addr| a.to_ipv6_mapped().octets();
    let addr = |i: u32| std::net::Ipv4Addr::from(0x0a64_0100 + i); // 10.100.1.0 + i
    let mut first_in_slot = std::collections::HashMap::new();
    let slots = Limit::DIRECTOR_VIP_SLOTS.0;
    let (a, b) = (0..slots)
        .find_map(|i| {
            let slot = director::datapath::vip_slot(&mapped(addr(i)), 6);
            first_in_slot.insert(slot, i).map(|j| (addr(j), addr(i)))
        })
        .expect("as many addresses as slots collide somewhere");
    let yaml = format!(
        "services:\n  - name: first\n    hash_key: {KEY}\n    seed: {SEED}\n    table_bits: 8\n    binds:\n      - {{ vip: {a}, proto: tcp, port: 80 }}\n    backends:\n      - {{ name: b1, address: 10.1.0.11 }}\n      - {{ name: b2, address: 10.1.0.12 }}\n  - name: second\n    hash_key: {KEY}\n    seed: {SEED}\n    table_bits: 8\n    binds:\n      - {{ vip: {b}, proto: tcp, port: 80 }}\n    backends:\n      - {{ name: b1, address: 10.1.0.21 }}\n      - {{ name: b2, address: 10.1.0.22 }}\n"
    );
    in_lab(move |dp, ingress| {
        let inst = install(dp, &yaml);
        for (service, vip) in [("first", a), ("second", b)] {
            let f = flow("192.0.2.7", &vip.to_string(), 40000, 80);
            let frame = tcp_packet(f.src, f.dst, f.sport, f.dport, b"hello");
            check_forward(dp, &inst, ingress, service, f, &frame, 14);
        }
        let other = tcp_packet(ip("192.0.2.7"), IpAddr::V4(b), 40000, 81, b"hello");
        let (ret, out) = dp.test_run(&other, ingress).unwrap();
        assert_eq!((ret, out), (XDP_PASS, other));
        assert_eq!(reason_count(dp, reason::PORT_NOT_BOUND), 1);
    });
}

/// Tables of exactly 2^16 rows live in the fixed-size map, all others in the variable-size
/// one (abi.h). A service whose table size changes moves between them, and every packet is
/// forwarded by the table installed last: a stale copy left in the other map would be found
/// first and send many of these flows elsewhere.
#[test]
fn tables_move_between_the_fixed_and_sized_maps_as_they_grow_and_shrink() {
    let yaml = |bits: u8| {
        format!(
            "services:\n  - name: big\n    hash_key: {KEY}\n    seed: {SEED}\n    table_bits: {bits}\n    binds:\n      - {{ vip: 10.100.0.1, proto: tcp, port: 80 }}\n    backends:\n      - {{ name: b1, address: 10.1.0.11 }}\n      - {{ name: b2, address: 10.1.0.12 }}\n      - {{ name: b3, address: 10.1.0.13 }}\n"
        )
    };
    in_lab(move |dp, ingress| {
        for bits in [17, 16, 18, 8] {
            let inst = install(dp, &yaml(bits));
            assert_eq!(dp.table_hdr(0).unwrap().rows_mask, (1u32 << bits) - 1);
            for i in 0..200u16 {
                let f = flow(
                    &format!("192.0.2.{}", 1 + i % 200),
                    "10.100.0.1",
                    1000 + i,
                    80,
                );
                let frame = tcp_packet(f.src, f.dst, f.sport, f.dport, b"");
                check_forward(dp, &inst, ingress, "big", f, &frame, 14);
            }
        }
    });
}

/// A health-checked service's versions alternate between two table maps, each written with
/// only the rows that changed since it last held a version: after every swap the kernel's
/// table is exactly the new version, row for row, and packets are forwarded by it.
#[test]
fn health_changes_rewrite_the_swapped_out_table_exactly() {
    use std::collections::BTreeSet;
    use tablegen::table::Planner;
    let yaml = |bits: u8| {
        format!(
            "health:\n  checks:\n    - {{ type: tcp, port: 80 }}\nservices:\n  - name: web\n    hash_key: {KEY}\n    seed: {SEED}\n    table_bits: {bits}\n    binds:\n      - {{ vip: 10.100.0.1, proto: tcp, port: 80 }}\n    backends:\n      - {{ name: b1, address: 10.1.0.11 }}\n      - {{ name: b2, address: 10.1.0.12 }}\n      - {{ name: b3, address: 10.1.0.13 }}\n      - {{ name: b4, address: 10.1.0.14 }}\n"
        )
    };
    in_lab(move |dp, ingress| {
        for bits in [16u8, 10] {
            let loaded =
                director::source::build(std::path::Path::new("backends.yaml"), &yaml(bits))
                    .expect("valid config");
            let planner = Planner::new(loaded.config.services[0].clone());
            let mut ids = director::tables::Ids::default();
            let mut maps = BTreeSet::new();
            for demoted in [
                &[][..],
                &["b1"],
                &["b2"],
                &["b1", "b3"],
                &["b2"],
                &[],
                &["b4"],
            ] {
                let names: BTreeSet<String> = demoted.iter().map(|s| s.to_string()).collect();
                let table = director::health::overlay(&planner, &names);
                let snap = director::tables::snapshot(
                    &loaded.config,
                    std::slice::from_ref(&table),
                    &ids,
                    true,
                    true,
                )
                .unwrap();
                assert!(snap.services[0].health_checked);
                dp.install(&snap).unwrap();
                ids = snap.ids.clone();
                // Every row of the map in the slot, as the program reads it.
                let outer = if bits == 16 {
                    "director_tables_fixed"
                } else {
                    "director_tables"
                };
                let outer =
                    libbpf_rs::MapHandle::from_pinned_path(dp.pin_dir().join(outer)).unwrap();
                let id = outer
                    .lookup(&0u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY)
                    .unwrap()
                    .unwrap();
                let id = u32::from_ne_bytes(id[..4].try_into().unwrap());
                maps.insert(id);
                let inner = libbpf_rs::MapHandle::from_map_id(id).unwrap();
                let hdr = dp.table_hdr(0).unwrap();
                assert_eq!((hdr.version, hdr.checksum), (table.version, table.checksum));
                let want = &snap.services[0].rows;
                assert_eq!(want.len(), table.rows as usize);
                for r in 0..want.len() {
                    let got = inner
                        .lookup(&(1 + r as u32).to_ne_bytes(), libbpf_rs::MapFlags::ANY)
                        .unwrap()
                        .unwrap();
                    assert_eq!(
                        got,
                        want.row(r).as_bytes(),
                        "2^{bits} rows, {demoted:?} demoted: row {r}"
                    );
                }
                let inst = Installed {
                    config: loaded.config.clone(),
                    tables: vec![table],
                };
                for i in 0..100u16 {
                    let f = flow(&format!("192.0.2.{}", 1 + i), "10.100.0.1", 2000 + i, 80);
                    let frame = tcp_packet(f.src, f.dst, f.sport, f.dport, b"");
                    check_forward(dp, &inst, ingress, "web", f, &frame, 14);
                }
            }
            // Two maps took turns (the first version's map and one more), not one per version.
            assert_eq!(maps.len(), 2, "2^{bits} rows: maps used {maps:?}");
        }
    });
}

#[test]
fn v4_udp_port_range_bind_and_all_ports_bind() {
    T::new().run(|dp, inst, ingress, _| {
        for port in [5000, 5050, 5100] {
            let f = flow("192.0.2.8", "10.100.0.1", 1234, port);
            let frame = udp_packet(f.src, f.dst, f.sport, f.dport, b"x");
            check_forward(dp, inst, ingress, "web", f, &frame, 14);
        }
        // Outside the range: passes untouched.
        let frame = udp_packet(ip("192.0.2.8"), ip("10.100.0.1"), 1234, 5101, b"x");
        assert_eq!(
            dp.test_run(&frame, ingress).unwrap(),
            (XDP_PASS, frame.clone())
        );
        assert_eq!(reason_count(dp, reason::PORT_NOT_BOUND), 1);
        // All ports, width 3 (two alternates), hash on the source address only.
        for port in [1, 80, 65535] {
            let f = flow("192.0.2.9", "10.100.0.2", 999, port);
            let frame = tcp_packet(f.src, f.dst, f.sport, f.dport, b"");
            check_forward(dp, inst, ingress, "any", f, &frame, 14);
        }
    });
}

#[test]
fn v6_inner_v6_outer_has_valid_udp_checksum() {
    T::new().run(|dp, inst, ingress, _| {
        let f = flow("2001:db8::7", "fd00:100::1", 40000, 443);
        let frame = tcp_packet(f.src, f.dst, f.sport, f.dport, b"hello six");
        check_forward(dp, inst, ingress, "web6", f, &frame, 14);
        // Odd payload length and UDP inner.
        let frame = tcp_packet(f.src, f.dst, 40001, f.dport, b"odd");
        check_forward(
            dp,
            inst,
            ingress,
            "web6",
            Flow { sport: 40001, ..f },
            &frame,
            14,
        );
    });
}

#[test]
fn v4_inner_over_v6_outer_and_v6_inner_over_v4_outer() {
    T::new().run(|dp, inst, ingress, _| {
        let f = flow("192.0.2.7", "10.100.0.3", 40000, 443);
        let frame = tcp_packet(f.src, f.dst, f.sport, f.dport, b"four in six");
        check_forward(dp, inst, ingress, "web6", f, &frame, 14);
        let f = flow("2001:db8::9", "fd00:100::2", 5353, 53);
        let frame = udp_packet(f.src, f.dst, f.sport, f.dport, b"six in four");
        check_forward(dp, inst, ingress, "v6to4", f, &frame, 14);
    });
}

#[test]
fn vlan_tagged_frame_is_forwarded_untagged() {
    T::new().run(|dp, inst, ingress, _| {
        let f = flow("192.0.2.7", "10.100.0.1", 40000, 80);
        let plain = tcp_packet(f.src, f.dst, f.sport, f.dport, b"vlan");
        let mut tagged = plain[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        tagged.extend_from_slice(&plain[12..]);
        check_forward(dp, inst, ingress, "web", f, &tagged, 18);
        // Truncated tag: passes untouched.
        let cut = tagged[..16].to_vec();
        assert_eq!(dp.test_run(&cut, ingress).unwrap(), (XDP_PASS, cut.clone()));
        assert_eq!(reason_count(dp, reason::UNPARSED), 1);
    });
}

/// An IPv4 header with `words` 32-bit option words (NOPs).
fn with_ip_options(frame: &[u8], words: usize) -> Vec<u8> {
    let mut out = frame[..14].to_vec();
    let ihl = (frame[14] & 0x0f) as usize * 4;
    let mut iph = frame[14..14 + ihl].to_vec();
    iph.extend(std::iter::repeat_n(1u8, words * 4));
    iph[0] = 0x40 | (5 + words) as u8;
    let tot = u16::from_be_bytes([iph[2], iph[3]]) + (words * 4) as u16;
    iph[2..4].copy_from_slice(&tot.to_be_bytes());
    iph[10] = 0;
    iph[11] = 0;
    let ck = etherparse::checksum::Sum16BitWords::new()
        .add_slice(&iph)
        .ones_complement()
        .to_be();
    iph[10..12].copy_from_slice(&ck.to_be_bytes());
    out.extend_from_slice(&iph);
    out.extend_from_slice(&frame[14 + ihl..]);
    out
}

#[test]
fn ipv4_options_any_header_length() {
    T::new().run(|dp, inst, ingress, _| {
        for words in [1, 3, 10] {
            let f = flow("192.0.2.7", "10.100.0.1", 40000 + words as u16, 80);
            let frame = with_ip_options(&tcp_packet(f.src, f.dst, f.sport, f.dport, b"opt"), words);
            check_forward(dp, inst, ingress, "web", f, &frame, 14);
        }
    });
}

#[test]
fn ethernet_padding_is_not_carried() {
    T::new().run(|dp, inst, ingress, _| {
        let f = flow("192.0.2.7", "10.100.0.1", 40000, 80);
        let frame = tcp_packet(f.src, f.dst, f.sport, f.dport, b"");
        let mut padded = frame.clone();
        padded.resize(60, 0xee);
        let (hash, row) = inst.expect("web", &f);
        let (ret, out) = dp.test_run(&padded, ingress).unwrap();
        assert_eq!(ret, out_dp0());
        assert_eq!(
            out,
            expected_gue(backend_mac(row[0]), DIR_MAC, &row, hash, &frame[14..])
        );
    });
}

#[test]
fn non_vip_traffic_is_untouched_and_counted_once() {
    T::new().run(|dp, _, ingress, _| {
        let frames = vec![
            tcp_packet(ip("192.0.2.7"), ip("10.1.0.1"), 40000, 22, b"ssh"),
            udp_packet(ip("2001:db8::1"), ip("fd00:1::1"), 1, 53, b"dns"),
            // ARP
            eth([0xff; 6], CLIENT_MAC, 0x0806, &[0u8; 28]),
            // ICMP echo to a non-VIP
            {
                let mut v = Vec::new();
                etherparse::PacketBuilder::ethernet2(CLIENT_MAC, DIR_MAC)
                    .ipv4([192, 0, 2, 7], [10, 1, 0, 1], 64)
                    .icmpv4_echo_request(1, 1)
                    .write(&mut v, b"ping")
                    .unwrap();
                v
            },
            // UDP to a VIP that only binds TCP: no (VIP, udp) entry
            udp_packet(ip("192.0.2.7"), ip("10.100.0.2"), 1, 80, b""),
        ];
        for f in &frames {
            assert_eq!(dp.test_run(f, ingress).unwrap(), (XDP_PASS, f.clone()));
        }
        let c = dp.counters();
        assert_eq!(c.reasons[reason::NOT_VIP].packets, frames.len() as u64);
        let others: u64 =
            c.reasons.iter().map(|r| r.packets).sum::<u64>() - c.reasons[reason::NOT_VIP].packets;
        assert_eq!(others, 0);
        assert!(c.services.iter().all(|s| s.packets == 0));
    });
}

#[test]
fn truncated_and_malformed_headers_at_every_layer() {
    T::new().run(|dp, _, ingress, _| {
        let good = tcp_packet(ip("192.0.2.7"), ip("10.100.0.1"), 40000, 80, b"");
        let good6 = tcp_packet(ip("2001:db8::7"), ip("fd00:100::1"), 40000, 443, b"");
        let mut cases: Vec<(&str, Vec<u8>, u32, usize)> = vec![
            // (BPF_PROG_TEST_RUN refuses frames under 14 bytes, so the shortest is a bare header.)
            (
                "ethernet only",
                good[..14].to_vec(),
                XDP_PASS,
                reason::UNPARSED,
            ),
            (
                "ipv4 cut",
                good[..14 + 12].to_vec(),
                XDP_PASS,
                reason::UNPARSED,
            ),
            (
                "ipv6 cut",
                good6[..14 + 30].to_vec(),
                XDP_PASS,
                reason::UNPARSED,
            ),
            (
                "tcp ports cut",
                good[..14 + 20 + 6].to_vec(),
                XDP_PASS,
                reason::UNPARSED,
            ),
        ];
        // tot_len says 20 + 6 bytes: consistent IP, but fewer than 8 L4 bytes for a VIP.
        let mut short = good[..14 + 20 + 6].to_vec();
        short[16..18].copy_from_slice(&26u16.to_be_bytes());
        cases.push((
            "tcp cut, consistent ip",
            short,
            XDP_DROP,
            reason::L4_TRUNCATED,
        ));
        let mut bad_version = good.clone();
        bad_version[14] = 0x55;
        cases.push(("ipv4 version 5", bad_version, XDP_PASS, reason::UNPARSED));
        let mut bad_ihl = good.clone();
        bad_ihl[14] = 0x44;
        cases.push(("ihl 4", bad_ihl, XDP_PASS, reason::UNPARSED));
        let mut long_ihl = good.clone();
        long_ihl[14] = 0x4f; // 60 bytes, more than tot_len
        cases.push(("ihl beyond tot_len", long_ihl, XDP_PASS, reason::UNPARSED));
        let mut big_tot = good.clone();
        big_tot[16..18].copy_from_slice(&1500u16.to_be_bytes());
        cases.push(("tot_len beyond frame", big_tot, XDP_PASS, reason::UNPARSED));
        let mut big_pl = good6.clone();
        big_pl[18..20].copy_from_slice(&1500u16.to_be_bytes());
        cases.push((
            "payload_len beyond frame",
            big_pl,
            XDP_PASS,
            reason::UNPARSED,
        ));
        let mut jumbo = good6.clone();
        jumbo[18..20].copy_from_slice(&0u16.to_be_bytes());
        cases.push(("payload_len 0", jumbo, XDP_PASS, reason::UNPARSED));
        let mut bad6 = good6.clone();
        bad6[14] = 0x45;
        cases.push(("ipv6 version 4", bad6, XDP_PASS, reason::UNPARSED));
        let mut short6 = good6[..14 + 40 + 4].to_vec();
        short6[18..20].copy_from_slice(&4u16.to_be_bytes());
        cases.push((
            "ipv6 tcp cut, consistent",
            short6,
            XDP_DROP,
            reason::L4_TRUNCATED,
        ));
        for (name, frame, verdict, r) in cases {
            let before = reason_count(dp, r);
            let (ret, out) = dp.test_run(&frame, ingress).unwrap();
            assert_eq!(ret, verdict, "{name}");
            if verdict == XDP_PASS {
                assert_eq!(out, frame, "{name}: a pass leaves the frame unchanged");
            }
            assert_eq!(reason_count(dp, r), before + 1, "{name}: counter");
        }
    });
}

/// An ICMP error sent by a router to the VIP, quoting the backend's reply (VIP -> client).
fn icmp4_frag_needed(vip: &str, client: &str, vport: u16, cport: u16, mtu: u16) -> Vec<u8> {
    let quoted = tcp_packet(ip(vip), ip(client), vport, cport, b"");
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2(CLIENT_MAC, DIR_MAC)
        .ipv4([198, 51, 100, 1], ip4(vip), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
        ))
        .write(&mut v, &quoted[14..14 + 28])
        .unwrap();
    v
}

fn ip4(s: &str) -> [u8; 4] {
    match ip(s) {
        IpAddr::V4(a) => a.octets(),
        _ => panic!(),
    }
}

fn ip6(s: &str) -> [u8; 16] {
    match ip(s) {
        IpAddr::V6(a) => a.octets(),
        _ => panic!(),
    }
}

#[test]
fn icmp_frag_needed_and_packet_too_big_follow_the_flow() {
    T::new().run(|dp, inst, ingress, _| {
        // The flow client -> VIP and the router's ICMP about the reply VIP -> client.
        let f = flow("192.0.2.7", "10.100.0.1", 40000, 80);
        let (_, flow_row) = inst.expect("web", &f);
        let icmp = icmp4_frag_needed("10.100.0.1", "192.0.2.7", 80, 40000, 1400);
        let (hash, row) = inst.expect("web", &f);
        assert_eq!(row, flow_row);
        let (ret, out) = dp.test_run(&icmp, ingress).unwrap();
        assert_eq!(ret, out_dp0());
        assert_eq!(
            hex(&out),
            hex(&expected_gue(
                backend_mac(row[0]),
                DIR_MAC,
                &row,
                hash,
                &icmp[14..]
            ))
        );

        let f6 = flow("2001:db8::7", "fd00:100::1", 40000, 443);
        let quoted = tcp_packet(f6.dst, f6.src, 443, 40000, b"");
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2(CLIENT_MAC, DIR_MAC)
            .ipv6(ip6("2001:db8:ff::1"), ip6("fd00:100::1"), 64)
            .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 })
            .write(&mut v, &quoted[14..14 + 48])
            .unwrap();
        let (hash, row) = inst.expect("web6", &f6);
        let (ret, out) = dp.test_run(&v, ingress).unwrap();
        assert_eq!(ret, out_dp0());
        assert_eq!(
            hex(&out),
            hex(&expected_gue(
                backend_mac(row[0]),
                DIR_MAC,
                &row,
                hash,
                &v[14..]
            ))
        );

        // Other ICMP to a VIP: passes, counted.
        let mut echo = Vec::new();
        etherparse::PacketBuilder::ethernet2(CLIENT_MAC, DIR_MAC)
            .ipv4([192, 0, 2, 7], [10, 100, 0, 1], 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut echo, b"ping")
            .unwrap();
        assert_eq!(
            dp.test_run(&echo, ingress).unwrap(),
            (XDP_PASS, echo.clone())
        );
        // frag-needed quoting a port no bind covers: passes, counted as icmp.
        let stray = icmp4_frag_needed("10.100.0.1", "192.0.2.7", 81, 40000, 1400);
        assert_eq!(
            dp.test_run(&stray, ingress).unwrap(),
            (XDP_PASS, stray.clone())
        );
        // frag-needed cut inside the quoted header.
        let cut = icmp[..14 + 20 + 8 + 10].to_vec();
        let mut cut = cut;
        cut[16..18].copy_from_slice(&38u16.to_be_bytes());
        assert_eq!(dp.test_run(&cut, ingress).unwrap().0, XDP_PASS);
        assert_eq!(reason_count(dp, reason::ICMP), 3);
    });
}

#[test]
fn fragments_first_forwarded_later_passed() {
    T::new().run(|dp, inst, ingress, _| {
        let f = flow("192.0.2.7", "10.100.0.1", 40000, 80);
        let mut first = tcp_packet(f.src, f.dst, f.sport, f.dport, b"first fragment");
        first[20] |= 0x20; // MF
        first[24] = 0;
        first[25] = 0;
        let ck = {
            let mut h = first[14..34].to_vec();
            h[10] = 0;
            h[11] = 0;
            etherparse::checksum::Sum16BitWords::new()
                .add_slice(&h)
                .ones_complement()
                .to_be()
        };
        first[24..26].copy_from_slice(&ck.to_be_bytes());
        check_forward(dp, inst, ingress, "web", f, &first, 14);

        // A later fragment (offset 185*8) to the VIP: passes, counted.
        let mut later = first.clone();
        later[20] = 0x00;
        later[21] = 185;
        assert_eq!(
            dp.test_run(&later, ingress).unwrap(),
            (XDP_PASS, later.clone())
        );
        assert_eq!(reason_count(dp, reason::FRAGMENT), 1);
        // A later fragment to a non-VIP: passes, the one total only.
        let mut other = later.clone();
        other[30..34].copy_from_slice(&[10, 1, 0, 1]);
        assert_eq!(
            dp.test_run(&other, ingress).unwrap(),
            (XDP_PASS, other.clone())
        );
        assert_eq!(reason_count(dp, reason::FRAGMENT), 1);
        assert_eq!(reason_count(dp, reason::NOT_VIP), 1);

        // First fragment to an IPv6 backend: the outer checksum sums the bytes (slow path).
        let f6 = flow("192.0.2.7", "10.100.0.3", 40000, 443);
        let mut first6 = tcp_packet(f6.src, f6.dst, f6.sport, f6.dport, &[7u8; 301]);
        first6[20] |= 0x20;
        first6[24] = 0;
        first6[25] = 0;
        let ck = {
            let h = first6[14..34].to_vec();
            etherparse::checksum::Sum16BitWords::new()
                .add_slice(&h)
                .ones_complement()
                .to_be()
        };
        first6[24..26].copy_from_slice(&ck.to_be_bytes());
        check_forward(dp, inst, ingress, "web6", f6, &first6, 14);

        // IPv6 fragment header to a VIP: passes, counted; other extension headers too.
        let mut frag6 = tcp_packet(ip("2001:db8::7"), ip("fd00:100::1"), 1, 443, b"");
        frag6[14 + 6] = 44;
        assert_eq!(
            dp.test_run(&frag6, ingress).unwrap(),
            (XDP_PASS, frag6.clone())
        );
        assert_eq!(reason_count(dp, reason::FRAGMENT), 2);
        let mut hbh = frag6.clone();
        hbh[14 + 6] = 0;
        assert_eq!(dp.test_run(&hbh, ingress).unwrap(), (XDP_PASS, hbh.clone()));
        assert_eq!(reason_count(dp, reason::IPV6_EXT), 1);
    });
}

/// `frame` (Ethernet + IPv6) with extension headers inserted after the IPv6 header: each
/// (type, total length in bytes, a multiple of 8), options padded with PadN.
fn with_ipv6_ext(frame: &[u8], headers: &[(u8, usize)]) -> Vec<u8> {
    let mut out = frame[..14 + 40].to_vec();
    let mut next = frame[14 + 6];
    let mut chain = Vec::new();
    for &(kind, len) in headers.iter().rev() {
        let mut h = vec![next, (len / 8 - 1) as u8, 1, (len - 4) as u8];
        h.resize(len, 0);
        chain.splice(0..0, h);
        next = kind;
    }
    out[14 + 6] = next;
    let plen = u16::from_be_bytes([frame[14 + 4], frame[14 + 5]]) as usize + chain.len();
    out[14 + 4..14 + 6].copy_from_slice(&(plen as u16).to_be_bytes());
    out.extend_from_slice(&chain);
    out.extend_from_slice(&frame[14 + 40..]);
    out
}

/// Hop-by-hop, routing and destination options headers are walked to the TCP/UDP header (the
/// outer IPv6 checksum then sums the inner bytes); a chain too long or cut off passes,
/// counted `ipv6_ext`, and only when it is to a VIP.
#[test]
fn ipv6_extension_headers_are_walked_to_the_bind() {
    T::new().run(|dp, inst, ingress, _| {
        let f = flow("2001:db8::7", "fd00:100::1", 40000, 443);
        let plain = tcp_packet(f.src, f.dst, f.sport, f.dport, b"with options");
        let hbh = with_ipv6_ext(&plain, &[(0, 8)]);
        check_forward(dp, inst, ingress, "web6", f, &hbh, 14);

        // To IPv4 backends: hop-by-hop, routing and destination options, UDP.
        let f4 = flow("2001:db8::7", "fd00:100::2", 40001, 53);
        let udp = udp_packet(f4.src, f4.dst, f4.sport, f4.dport, b"query");
        let three = with_ipv6_ext(&udp, &[(0, 8), (43, 24), (60, 16)]);
        check_forward(dp, inst, ingress, "v6to4", f4, &three, 14);
        assert_eq!(reason_count(dp, reason::IPV6_EXT), 0);

        // Five headers: more than the program walks.
        let five = with_ipv6_ext(&plain, &[(0, 8), (60, 8), (43, 8), (60, 8), (60, 8)]);
        assert_eq!(
            dp.test_run(&five, ingress).unwrap(),
            (XDP_PASS, five.clone())
        );
        assert_eq!(reason_count(dp, reason::IPV6_EXT), 1);
        // A header longer than what is left of the payload.
        let mut cut = hbh.clone();
        cut[14 + 40 + 1] = 30;
        assert_eq!(dp.test_run(&cut, ingress).unwrap(), (XDP_PASS, cut.clone()));
        assert_eq!(reason_count(dp, reason::IPV6_EXT), 2);
        // Not to a VIP: the host's own traffic, counted as such.
        let host = with_ipv6_ext(
            &tcp_packet(f.src, ip("fd00:1::1"), 40000, 22, b"ssh"),
            &[(0, 8)],
        );
        let not_vip = reason_count(dp, reason::NOT_VIP);
        assert_eq!(
            dp.test_run(&host, ingress).unwrap(),
            (XDP_PASS, host.clone())
        );
        assert_eq!(reason_count(dp, reason::NOT_VIP), not_vip + 1);
        assert_eq!(reason_count(dp, reason::IPV6_EXT), 2);
    });
}

#[test]
fn udp_zero_checksum_inner_over_ipv6_outer() {
    T::new().run(|dp, inst, ingress, _| {
        // UDP over IPv4 may carry checksum 0: its own checksum cannot stand in for the
        // payload, so the IPv6 outer checksum sums the bytes (odd and even lengths).
        for len in [0usize, 1, 2, 255, 300, 513, 1001] {
            let f = flow("192.0.2.7", "10.100.0.3", 40000 + len as u16, 443);
            let payload: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
            let mut frame = udp_packet(f.src, f.dst, f.sport, f.dport, &payload);
            frame[14 + 20 + 6] = 0;
            frame[14 + 20 + 7] = 0;
            check_forward(dp, inst, ingress, "web6", f, &frame, 14);
        }
    });
}

#[test]
fn too_big_after_encapsulation_answers_frag_needed() {
    T::new().run(|dp, inst, ingress, _| {
        // Route to 10.9.0.0/24 has MTU 1000: 980 bytes of IP + 40 of GUE does not fit.
        let f = flow("192.0.2.7", "10.100.0.9", 40000, 80);
        let frame = tcp_packet(f.src, f.dst, f.sport, f.dport, &[0u8; 980 - 40]);
        assert_eq!(frame.len() - 14, 980);
        let (ret, out) = dp.test_run(&frame, ingress).unwrap();
        assert_eq!(ret, XDP_TX);
        // Expected: from the VIP to the client, quoting IP header + 8 bytes, MTU 1000 - 40.
        let mut want = Vec::new();
        etherparse::PacketBuilder::ethernet2(DIR_MAC, CLIENT_MAC)
            .ipv4([10, 100, 0, 9], [192, 0, 2, 7], 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: 960,
                },
            ))
            .write(&mut want, &frame[14..14 + 28])
            .unwrap();
        want[15] = 0xc0; // TOS: network control
        want[20] = 0; // no DF, as the kernel's own ICMP errors
        want[24] = 0;
        want[25] = 0;
        let ck = etherparse::checksum::Sum16BitWords::new()
            .add_slice(&want[14..34])
            .ones_complement()
            .to_be();
        want[24..26].copy_from_slice(&ck.to_be_bytes());
        assert_eq!(hex(&out), hex(&want));
        assert_eq!(reason_count(dp, reason::TOO_BIG), 1);

        // 939 bytes fit exactly? 960 + 40 = 1000: fits.
        let fits = tcp_packet(f.src, f.dst, f.sport, f.dport, &[0u8; 960 - 40]);
        let (ret, _) = dp.test_run(&fits, ingress).unwrap();
        assert_eq!(ret, out_dp0());
        assert_eq!(reason_count(dp, reason::TOO_BIG), 1);

        // Without DF: encapsulated without DF and handed to the kernel to fragment.
        let mut nodf = frame.clone();
        nodf[20] &= !0x40;
        let ck = {
            let mut h = nodf[14..34].to_vec();
            h[10] = 0;
            h[11] = 0;
            etherparse::checksum::Sum16BitWords::new()
                .add_slice(&h)
                .ones_complement()
                .to_be()
        };
        nodf[24..26].copy_from_slice(&ck.to_be_bytes());
        let (hash, row) = inst.expect("far", &f);
        let (ret, out) = dp.test_run(&nodf, ingress).unwrap();
        assert_eq!(ret, XDP_PASS);
        assert_eq!(
            hex(&out),
            hex(&expected_gue(DIR_MAC, CLIENT_MAC, &row, hash, &nodf[14..]))
        );
        assert_eq!(reason_count(dp, reason::TOO_BIG_FRAGMENT), 1);

        // IPv6 client to a service whose backends are behind MTU 1400: packet too big, MTU
        // minus 72 bytes of outer IPv6 + UDP + GUE + one 16-byte hop.
        let f6 = flow("2001:db8::7", "fd00:100::19", 40000, 80);
        let big6 = tcp_packet(f6.src, f6.dst, f6.sport, f6.dport, &[0u8; 1300]);
        let (ret, out) = dp.test_run(&big6, ingress).unwrap();
        assert_eq!(ret, XDP_TX);
        let mut want6 = Vec::new();
        etherparse::PacketBuilder::ethernet2(DIR_MAC, CLIENT_MAC)
            .ipv6(ip6("fd00:100::19"), ip6("2001:db8::7"), 64)
            .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1400 - 72 })
            .write(&mut want6, &big6[14..14 + 48])
            .unwrap();
        assert_eq!(hex(&out), hex(&want6));
        assert_eq!(reason_count(dp, reason::TOO_BIG), 2);
    });
}

#[test]
fn unresolved_neighbour_hands_the_encapsulated_packet_to_the_kernel() {
    T::new().run(|dp, inst, ingress, _| {
        let f = flow("192.0.2.7", "10.100.0.10", 40000, 80);
        let frame = tcp_packet(f.src, f.dst, f.sport, f.dport, b"arp first");
        let (hash, row) = inst.expect("unresolved", &f);
        let (ret, out) = dp.test_run(&frame, ingress).unwrap();
        assert_eq!(ret, XDP_PASS);
        // The frame keeps its own addresses: addressed to us, so the stack takes it.
        assert_eq!(
            hex(&out),
            hex(&expected_gue(DIR_MAC, CLIENT_MAC, &row, hash, &frame[14..]))
        );
        assert_eq!(reason_count(dp, reason::NO_NEIGH), 1);
        assert_eq!(
            dp.counters().services[6].packets,
            1,
            "still counted for its service"
        );
    });
}

#[test]
fn other_egress_interface_is_a_redirect_and_no_backend_drops() {
    T::new().run(|dp, inst, ingress, dq0| {
        let f = flow("192.0.2.7", "10.100.0.11", 40000, 80);
        let frame = tcp_packet(f.src, f.dst, f.sport, f.dport, b"");
        let (hash, row) = inst.expect("other-port", &f);
        let (ret, out) = dp.test_run(&frame, ingress).unwrap();
        assert_eq!(ret, XDP_REDIRECT);
        assert_ne!(dq0, ingress);
        assert_eq!(
            hex(&out),
            hex(&expected_gue(
                backend_mac(row[0]),
                [0x02, 0, 0, 0, 0, 0x02],
                &row,
                hash,
                &frame[14..]
            ))
        );
        let frame = tcp_packet(ip("192.0.2.7"), ip("10.100.0.12"), 1, 80, b"");
        assert_eq!(dp.test_run(&frame, ingress).unwrap().0, XDP_DROP);
        assert_eq!(reason_count(dp, reason::NO_BACKEND), 1);
    });
}

/// Many random flows through the program against tablegen's lookup: same row, same backend.
#[test]
fn random_flows_match_tablegen_lookup() {
    T::new().run(|dp, inst, ingress, _| random_flows(dp, inst, ingress));
}

/// `T::run` with the pinned director_hash_states map at hand.
fn with_hash_states(
    f: impl FnOnce(&Datapath, &Installed, u32, &libbpf_rs::MapHandle) + Send + 'static,
) {
    let t = T::new();
    let states = t.lab.fs.pin_dir().join("director_hash_states");
    t.run(move |dp, inst, ingress, _| {
        let m = libbpf_rs::MapHandle::from_pinned_path(&states).unwrap();
        f(dp, inst, ingress, &m)
    });
}

/// The program starts each packet's hash from a state in director_hash_states, found by the
/// destination alone. A state that is not its table's key (another service on the VIP, a key
/// change in flight), half-written or made for another destination must cost a hash from the
/// start, never a wrong row.
#[test]
fn wrong_torn_or_foreign_hash_states_still_hash_with_the_tables_key() {
    with_hash_states(|dp, inst, ingress, m| {
        let size = director::bpf::types::director_hash_state::SIZE;
        let live: Vec<(u32, Vec<u8>)> = (0..Limit::DIRECTOR_HASH_STATES.0)
            .filter_map(|i| {
                let v = m
                    .lookup(&i.to_ne_bytes(), libbpf_rs::MapFlags::ANY)
                    .ok()??;
                (v[17] != 0).then_some((i, v))
            })
            .collect();
        let web = director::datapath::hash_state_index_v4("10.100.0.1".parse().unwrap(), 80);
        let web6 = director::datapath::hash_state_index_v6(
            &"fd00:100::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        for i in [web, web6] {
            assert!(
                live.iter().any(|(j, _)| *j as usize == i),
                "a state for entry {i}"
            );
        }

        // Torn: one state word from another write, the check from the old one.
        for (i, v) in &live {
            let mut v = v.clone();
            v[24] ^= 0x5a;
            m.update(&i.to_ne_bytes(), &v, libbpf_rs::MapFlags::ANY)
                .unwrap();
        }
        random_flows(dp, inst, ingress);

        // Another key, with a check that matches it: the header's key decides.
        for (i, v) in &live {
            let mut v = v.clone();
            v[0] ^= 1;
            v[56] ^= 1;
            m.update(&i.to_ne_bytes(), &v, libbpf_rs::MapFlags::ANY)
                .unwrap();
        }
        random_flows(dp, inst, ingress);

        // Junk everywhere, both families.
        let mut junk = vec![0u8; size];
        for i in 0..Limit::DIRECTOR_HASH_STATES.0 {
            junk[..4].copy_from_slice(&i.to_ne_bytes());
            junk[16] = 0x0f;
            junk[17] = if i % 2 == 0 { 4 } else { 6 };
            junk[56..60].copy_from_slice(&i.to_ne_bytes());
            m.update(&i.to_ne_bytes(), &junk, libbpf_rs::MapFlags::ANY)
                .unwrap();
        }
        random_flows(dp, inst, ingress);
    });
}

/// The states are used: one whose state words are off but whose check matches them (which
/// only a wrong daemon could write) changes the hash of every flow to that destination.
#[test]
fn packets_hash_from_the_destination_state() {
    with_hash_states(|dp, inst, ingress, m| {
        use director::datapath::{hash_state, hash_state_index_v4, hash_state_index_v6};
        let bytes = |s: &director::bpf::types::director_hash_state| s.as_bytes().to_vec();
        // (service, its slot: the order in yaml(), a flow to one of its single-port binds)
        let cases = [
            ("web", 0, flow("192.0.2.7", "10.100.0.1", 40000, 80)),
            ("web6", 2, flow("2001:db8::7", "fd00:100::1", 40000, 443)),
        ];
        for (service, id, f) in cases {
            let hdr = dp.table_hdr(id).unwrap();
            let (i, mut st) = match f.dst {
                IpAddr::V4(a) => (
                    hash_state_index_v4(a, f.dport),
                    hash_state(&hdr, f.dst, f.dport),
                ),
                IpAddr::V6(a) => (hash_state_index_v6(&a.octets()), hash_state(&hdr, f.dst, 0)),
            };
            let key = (i as u32).to_ne_bytes();
            let written = m.lookup(&key, libbpf_rs::MapFlags::ANY).unwrap().unwrap();
            assert_eq!(
                written,
                bytes(&st),
                "the daemon wrote this state for {service}"
            );
            let frame = tcp_packet(f.src, f.dst, f.sport, f.dport, b"");
            check_forward(dp, inst, ingress, service, f, &frame, 14);
            st.v[1] ^= 1 << 40;
            st.check ^= 1 << 40;
            m.update(&key, &bytes(&st), libbpf_rs::MapFlags::ANY)
                .unwrap();
            let (hash, row) = inst.expect(service, &f);
            let want = expected_gue(backend_mac(row[0]), DIR_MAC, &row, hash, &frame[14..]);
            let (ret, out) = dp.test_run(&frame, ingress).unwrap();
            assert_eq!(ret, out_dp0());
            assert_ne!(
                hex(&out),
                hex(&want),
                "{service}: hashed from the (altered) state"
            );
        }
    });
}

/// 1500 random flows of three services (IPv4 and IPv6 VIPs, single-port and all-ports binds):
/// every output is the exact GUE frame to the row tablegen's own lookup gives.
fn random_flows(dp: &Datapath, inst: &Installed, ingress: u32) {
    {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..1500 {
            let r = next();
            let (service, f, udp) = match i % 3 {
                0 => {
                    let src = IpAddr::from(((r >> 32) as u32).to_be_bytes());
                    (
                        "web",
                        Flow {
                            src,
                            dst: ip("10.100.0.1"),
                            sport: r as u16,
                            dport: 80,
                        },
                        false,
                    )
                }
                1 => {
                    let mut a = [0u8; 16];
                    a[..8].copy_from_slice(&r.to_be_bytes());
                    a[8..].copy_from_slice(&next().to_be_bytes());
                    a[0] = 0x20;
                    let f = Flow {
                        src: IpAddr::from(a),
                        dst: ip("fd00:100::1"),
                        sport: r as u16,
                        dport: 443,
                    };
                    ("web6", f, false)
                }
                _ => {
                    let src = IpAddr::from(((r >> 32) as u32).to_be_bytes());
                    let f = Flow {
                        src,
                        dst: ip("10.100.0.2"),
                        sport: r as u16,
                        dport: (r >> 16) as u16,
                    };
                    ("any", f, true)
                }
            };
            let frame = if udp && service != "any" {
                udp_packet(f.src, f.dst, f.sport, f.dport, b"")
            } else {
                tcp_packet(f.src, f.dst, f.sport, f.dport, b"")
            };
            let (hash, row) = inst.expect(service, &f);
            let (ret, out) = dp.test_run(&frame, ingress).unwrap();
            assert_eq!(ret, out_dp0());
            // The primary is the outer destination; the whole frame must match too.
            let want = expected_gue(backend_mac(row[0]), DIR_MAC, &row, hash, &frame[14..]);
            assert_eq!(out, want, "flow {f:?}");
        }
    }
}

/// Next hops are reused for nexthop_ttl_ms; a changed neighbour is picked up after that, and
/// at once when the daemon moves the generation on. No restart either way.
#[test]
fn changed_neighbour_is_picked_up_without_restart() {
    let t = T::new();
    let ns = t.lab.ns.name.clone();
    t.run(move |dp, inst, ingress, _| {
        let f = flow("192.0.2.7", "10.100.0.1", 40000, 80);
        let frame = tcp_packet(f.src, f.dst, f.sport, f.dport, b"");
        let (hash, row) = inst.expect("web", &f);
        let send = |mac: [u8; 6]| {
            let (ret, out) = dp.test_run(&frame, ingress).unwrap();
            assert_eq!(ret, out_dp0());
            assert_eq!(out, expected_gue(mac, DIR_MAC, &row, hash, &frame[14..]));
        };
        send(backend_mac(row[0]));
        let new_mac = [0x02, 0, 0, 0, 0xaa, 0xbb];
        let ip = row[0].to_string();
        sh(&[
            "ip",
            "-n",
            &ns,
            "neigh",
            "replace",
            &ip,
            "lladdr",
            "02:00:00:00:aa:bb",
            "dev",
            "dp0",
            "nud",
            "permanent",
        ]);
        // Whether the cached next hop is still used right after the change depends on how
        // long `ip` took (under load it can exceed the TTL), so only the outcome after the
        // TTL is asserted: the new neighbour, without a restart.
        std::thread::sleep(std::time::Duration::from_millis(150));
        send(new_mac);
        // Generation bump: immediate.
        let m = backend_mac(row[0]);
        let mac = format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        );
        sh(&[
            "ip",
            "-n",
            &ns,
            "neigh",
            "replace",
            &ip,
            "lladdr",
            &mac,
            "dev",
            "dp0",
            "nud",
            "permanent",
        ]);
        dp.bump_generation().unwrap();
        send(backend_mac(row[0]));
        // A route change: the backend now goes out of dq0 (redirect), after a bump.
        sh(&[
            "ip",
            "-n",
            &ns,
            "route",
            "add",
            &format!("{ip}/32"),
            "via",
            "10.2.0.10",
            "dev",
            "dq0",
        ]);
        dp.bump_generation().unwrap();
        let (ret, out) = dp.test_run(&frame, ingress).unwrap();
        assert_eq!(ret, XDP_REDIRECT);
        // Out of dq0 (its MAC) to the new route's gateway: on a kernel whose test runs come
        // in on lo, a frame out of dp0 is a redirect too, and only the bytes tell them apart.
        let gateway = [0x02, 0, 0, 0, 0xbe, 0x0a];
        assert_eq!(
            hex(&out),
            hex(&expected_gue(
                gateway,
                [0x02, 0, 0, 0, 0, 0x02],
                &row,
                hash,
                &frame[14..]
            ))
        );
    });
}

/// `yaml()`'s `web` service with other binds (the rest of the services as they are).
fn web_with_binds(binds: &str) -> String {
    let y = yaml();
    let start = y.find("    binds:\n").unwrap();
    let end = y.find("    backends:\n").unwrap();
    format!("{}    binds:\n{binds}{}", &y[..start], &y[end..])
}

/// Install `yaml` the daemon's way, ids carried over from `prev`: returns the new ids.
fn install_after(dp: &Datapath, yaml: &str, prev: &director::tables::Ids) -> director::tables::Ids {
    let loaded = director::source::build(std::path::Path::new("backends.yaml"), yaml).unwrap();
    let snap =
        director::tables::snapshot(&loaded.config, &loaded.tables, prev, true, true).unwrap();
    dp.install(&snap).unwrap();
    snap.ids
}

/// The program counts per bind only; a service's count is its binds' plus what its removed
/// binds counted. Removing a bind (and giving its id to a new one) must not lose what it
/// counted for its service.
#[test]
fn removed_binds_keep_counting_for_their_service() {
    in_lab(|dp, ingress| {
        let both = "      - { vip: 10.100.0.1, proto: tcp, port: 80 }\n      - { vip: 10.100.0.1, proto: udp, ports: 5000-5100 }\n";
        let ids = install_after(dp, &web_with_binds(both), &Default::default());
        let web = ids.services["web"] as usize;
        let tcp = |n: usize| {
            for i in 0..n {
                let f = tcp_packet(
                    ip("192.0.2.7"),
                    ip("10.100.0.1"),
                    40000 + i as u16,
                    80,
                    b"x",
                );
                assert_eq!(dp.test_run(&f, ingress).unwrap().0, out_dp0());
            }
        };
        let udp = |n: usize, port: u16| {
            for i in 0..n {
                let f = udp_packet(
                    ip("192.0.2.7"),
                    ip("10.100.0.1"),
                    40000 + i as u16,
                    port,
                    b"x",
                );
                assert_eq!(dp.test_run(&f, ingress).unwrap().0, out_dp0());
            }
        };
        tcp(3);
        udp(2, 5000);
        let c = dp.counters();
        assert_eq!(c.services[web].packets, 5);
        let web_udp = |ids: &director::tables::Ids| {
            *ids.binds
                .iter()
                .find(|(n, _)| n.starts_with("web|") && n.contains("|udp|"))
                .unwrap()
                .1
        };
        let udp_bind = web_udp(&ids);

        // The UDP range goes; a new UDP bind comes and gets the freed id.
        let other = "      - { vip: 10.100.0.1, proto: tcp, port: 80 }\n      - { vip: 10.100.0.1, proto: udp, port: 6000 }\n";
        let ids2 = install_after(dp, &web_with_binds(other), &ids);
        let new_bind = web_udp(&ids2);
        assert_eq!(new_bind, udp_bind, "the freed id is handed out again");
        let c = dp.counters();
        assert_eq!(
            c.services[web].packets, 5,
            "the removed range's packets stay"
        );
        assert_eq!(
            c.binds[new_bind as usize].packets, 0,
            "the new bind starts at zero"
        );
        udp(1, 6000);
        tcp(1);
        let c = dp.counters();
        assert_eq!(c.services[web].packets, 7);
        assert_eq!(c.binds[new_bind as usize].packets, 1);
    });
}

/// Pins of a version that counted every packet for its service too (`stats_service`): the
/// part of a service's count its current binds do not explain is what its removed binds
/// counted, and it carries over.
#[test]
fn service_counts_of_older_pins_carry_over() {
    let lab = Lab::new();
    let pin = lab.fs.pin_dir();
    let ingress = lab.ingress;
    lab.ns.run(move || {
        let dp = Datapath::open(&pin).unwrap();
        dp.set_config(&settings()).unwrap();
        let ids = install_after(&dp, &yaml(), &Default::default());
        let web = ids.services["web"];
        for i in 0..4u16 {
            let f = tcp_packet(ip("192.0.2.7"), ip("10.100.0.1"), 40000 + i, 80, b"x");
            assert_eq!(dp.test_run(&f, ingress).unwrap().0, out_dp0());
        }
        drop(dp);
        // What the older version would have pinned: per CPU, the binds' counts plus 7
        // packets (700 bytes) of a bind removed long ago, on CPU 0.
        let bind = libbpf_rs::MapHandle::from_pinned_path(pin.join("stats_bind")).unwrap();
        let ncpu = libbpf_rs::num_possible_cpus().unwrap();
        let mut totals = vec![[0u64; 2]; ncpu];
        totals[0] = [7, 700];
        for (name, id) in &ids.binds {
            if !name.starts_with("web|") {
                continue;
            }
            let per = bind
                .lookup_percpu(&id.to_ne_bytes(), libbpf_rs::MapFlags::ANY)
                .unwrap()
                .unwrap();
            for (t, v) in totals.iter_mut().zip(per) {
                t[0] += u64::from_ne_bytes(v[..8].try_into().unwrap());
                t[1] += u64::from_ne_bytes(v[8..16].try_into().unwrap());
            }
        }
        let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        let mut old = libbpf_rs::MapHandle::create(
            libbpf_rs::MapType::PercpuArray,
            Some("stats_service"),
            4,
            16,
            Limit::DIRECTOR_MAX_SERVICES.0,
            &opts,
        )
        .unwrap();
        let vals: Vec<Vec<u8>> = totals
            .iter()
            .map(|t| [t[0].to_ne_bytes(), t[1].to_ne_bytes()].concat())
            .collect();
        old.update_percpu(&web.to_ne_bytes(), &vals, libbpf_rs::MapFlags::ANY)
            .unwrap();
        old.pin(pin.join("stats_service")).unwrap();
        std::fs::remove_file(pin.join("stats_service_retired")).unwrap();

        let dp = Datapath::open(&pin).unwrap();
        let c = dp.counters();
        assert_eq!(c.services[web as usize].packets, 4 + 7);
        assert!(
            !pin.join("stats_service").exists(),
            "the old map is unpinned"
        );
        assert_eq!(
            c.services[web as usize].bytes - c.binds.iter().map(|b| b.bytes).sum::<u64>(),
            700
        );
    });
}

/// A service with `udp_second_chance`: its UDP packets carry the flagged hop list (type
/// 0x0100 | kind) ending with the primary again, over IPv4 and IPv6 outer headers and at
/// widths 2 and 4 (the fast paths' width among them: they must hand these to encap()); its
/// TCP packets and other services' UDP packets keep GLB's list.
#[test]
fn udp_second_chance_lists_end_with_the_primary() {
    let yaml = format!(
        "services:\n  - name: quic\n    hash_key: {KEY}\n    seed: {SEED}\n    table_bits: 8\n    udp_second_chance: true\n    binds:\n      - {{ vip: 10.100.0.1, proto: udp, port: 443 }}\n      - {{ vip: 10.100.0.1, proto: tcp, port: 443 }}\n    backends:\n      - {{ name: b1, address: 10.1.0.11 }}\n      - {{ name: b2, address: 10.1.0.12 }}\n      - {{ name: b3, address: 10.1.0.13 }}\n  - name: quic6\n    hash_key: {KEY}\n    seed: {SEED}\n    table_bits: 8\n    hops: 4\n    udp_second_chance: true\n    binds:\n      - {{ vip: \"fd00:100::1\", proto: udp, port: 443 }}\n    backends:\n      - {{ name: b1, address: \"fd00:1::31\" }}\n      - {{ name: b2, address: \"fd00:1::32\" }}\n      - {{ name: b3, address: \"fd00:1::33\" }}\n      - {{ name: b4, address: \"fd00:1::34\" }}\n  - name: dns\n    hash_key: {KEY}\n    seed: {SEED}\n    table_bits: 8\n    binds:\n      - {{ vip: 10.100.0.2, proto: udp, port: 53 }}\n    backends:\n      - {{ name: b1, address: 10.1.0.11 }}\n      - {{ name: b2, address: 10.1.0.12 }}\n"
    );
    in_lab(move |dp, ingress| {
        let inst = install(dp, &yaml);
        assert_eq!(dp.table_hdr(0).unwrap().gue_flags, 1);
        assert_eq!(dp.table_hdr(2).unwrap().gue_flags, 0);
        let check = |service: &str, f: Flow, frame: &[u8], udp_sc: bool| {
            let (hash, row) = inst.expect(service, &f);
            // Twice: the first fills the next-hop cache the fast paths need.
            for _ in 0..2 {
                let (ret, out) = dp.test_run(frame, ingress).unwrap();
                assert_eq!(ret, out_dp0(), "verdict for {f:?}");
                let want = expected_gue_with(
                    backend_mac(row[0]),
                    DIR_MAC,
                    &row,
                    hash,
                    &frame[14..],
                    udp_sc,
                );
                assert_eq!(hex(&out), hex(&want), "frame for {f:?} to {row:?}");
            }
        };
        for i in 0..20u16 {
            let f = flow("192.0.2.7", "10.100.0.1", 40000 + i, 443);
            let frame = udp_packet(f.src, f.dst, f.sport, f.dport, b"initial");
            check("quic", f, &frame, true);
            let frame = tcp_packet(f.src, f.dst, f.sport, f.dport, b"");
            check("quic", f, &frame, false);
            let f = flow("2001:db8::7", "fd00:100::1", 40000 + i, 443);
            let frame = udp_packet(f.src, f.dst, f.sport, f.dport, b"initial six");
            check("quic6", f, &frame, true);
            let f = flow("192.0.2.7", "10.100.0.2", 40000 + i, 53);
            let frame = udp_packet(f.src, f.dst, f.sport, f.dport, b"query");
            check("dns", f, &frame, false);
        }
    });
}
