//! Co-located mode (docs/setup/colocated.md), packet tests: the real XDP program through
//! BPF_PROG_TEST_RUN on a host that is also backend 10.1.0.1 / fd00:1::1 (dp0's addresses,
//! the lab's encap sources). A row whose primary is this host: a SYN or a segment of a real
//! local socket goes to the stack as it came; anything else is encapsulated to this host, for
//! its redirector; a row whose primary is elsewhere is forwarded as by a dedicated director,
//! and stays so after the fast path has its next hop.

mod common;

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};

use common::*;
use director::counters as reason;
use director::datapath::{Datapath, Settings};
use tablegen::hash::Flow;

/// Two services whose tables (2^16 rows: the fast path's kind) name this host among others.
fn yaml() -> String {
    format!(
        r#"services:
  - name: web
    hash_key: {KEY}
    seed: {SEED}
    binds:
      - {{ vip: 10.100.0.1, proto: tcp, port: 80 }}
      - {{ vip: 10.100.0.1, proto: udp, port: 53 }}
    backends:
      - {{ name: self, address: 10.1.0.1 }}
      - {{ name: b2, address: 10.1.0.12 }}
      - {{ name: b3, address: 10.1.0.13 }}
  - name: web6
    hash_key: {KEY}
    seed: {SEED}
    binds:
      - {{ vip: "fd00:100::1", proto: tcp, port: 443 }}
    backends:
      - {{ name: self, address: "fd00:1::1" }}
      - {{ name: b2, address: "fd00:1::32" }}
      - {{ name: b3, address: "fd00:1::33" }}
"#
    )
}

fn colocated(on: bool) -> Settings {
    Settings {
        colocated: on,
        ..settings()
    }
}

fn this_host(a: IpAddr) -> bool {
    a == IpAddr::V4(SRC4) || a == IpAddr::V6(SRC6)
}

/// Run `f` in a fresh lab with the program loaded, co-located (or not), tables installed.
fn run<R: Send + 'static>(
    on: bool,
    f: impl FnOnce(&Datapath, &Installed, u32) -> R + Send + 'static,
) -> R {
    let lab = Lab::new();
    let pin = lab.fs.pin_dir();
    let ingress = lab.ingress;
    lab.ns.run(move || {
        let dp = Datapath::open(&pin).expect("load");
        dp.set_config(&colocated(on)).unwrap();
        let inst = install(&dp, &yaml());
        f(&dp, &inst, ingress)
    })
}

/// The first flow from `client` (source ports from 20000 up: below the ephemeral range, so no
/// connection of a test has one) whose row's primary is (`here`) or is not this host.
fn flow_where(
    inst: &Installed,
    service: &str,
    client: &str,
    vip: &str,
    port: u16,
    here: bool,
) -> Flow {
    (20000..21000u16)
        .map(|sport| Flow {
            src: client.parse().unwrap(),
            dst: vip.parse().unwrap(),
            sport,
            dport: port,
        })
        .find(|f| this_host(inst.expect(service, f).1[0]) == here)
        .expect("some flow of each kind among 1000")
}

/// A TCP segment with the given flags set (SYN, ACK) and a payload.
fn segment(f: &Flow, syn: bool, ack: bool, payload: &[u8]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(CLIENT_MAC, DIR_MAC);
    let b = match (f.src, f.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => b.ipv4(s.octets(), d.octets(), 60),
        (IpAddr::V6(s), IpAddr::V6(d)) => b.ipv6(s.octets(), d.octets(), 60),
        _ => panic!("mixed families"),
    };
    let mut t = b.tcp(f.sport, f.dport, 1, 1000);
    if syn {
        t = t.syn();
    }
    if ack {
        t = t.ack(77);
    }
    let mut out = Vec::new();
    t.write(&mut out, payload).unwrap();
    out
}

fn reasons(dp: &Datapath) -> Vec<u64> {
    dp.counters().reasons.iter().map(|r| r.packets).collect()
}

const V4: (&str, &str, &str, u16) = ("web", "192.0.2.7", "10.100.0.1", 80);
const V6: (&str, &str, &str, u16) = ("web6", "2001:db8::7", "fd00:100::1", 443);

#[test]
fn a_syn_for_this_host_goes_to_its_stack_as_it_came() {
    run(true, |dp, inst, ingress| {
        for (service, client, vip, port) in [V4, V6] {
            let f = flow_where(inst, service, client, vip, port, true);
            let frame = segment(&f, true, false, b"");
            for _ in 0..2 {
                let (ret, out) = dp.test_run(&frame, ingress).unwrap();
                assert_eq!(ret, XDP_PASS, "{f:?}");
                assert_eq!(out, frame, "untouched: {f:?}");
            }
        }
        let r = reasons(dp);
        assert_eq!(r[reason::COLOCATED_DIRECT], 4);
        assert_eq!(r.iter().sum::<u64>(), 4, "no other reason: {r:?}");
        let c = dp.counters();
        assert_eq!(c.services[0].packets, 2, "counted for its service");
        assert_eq!(c.services[1].packets, 2);
    });
}

#[test]
fn without_a_socket_the_packet_is_encapsulated_to_this_host_for_its_redirector() {
    run(true, |dp, inst, ingress| {
        for (service, client, vip, port) in [V4, V6] {
            let f = flow_where(inst, service, client, vip, port, true);
            let (hash, row) = inst.expect(service, &f);
            let frame = segment(&f, false, true, b"moved here");
            // Twice: the second time the fast path could have taken it; it must not.
            for _ in 0..2 {
                let (ret, out) = dp.test_run(&frame, ingress).unwrap();
                assert_eq!(ret, XDP_PASS, "{f:?}");
                // Outer destination and source: this host; the hop list the row's alternates,
                // index 0: what a dedicated director sends, and the redirector here forwards
                // it to the next hop as a second-chance packet. The frame keeps its own MACs.
                assert_eq!(
                    hex(&out),
                    hex(&expected_gue(DIR_MAC, CLIENT_MAC, &row, hash, &frame[14..])),
                    "{f:?} {row:?}"
                );
            }
        }
        // UDP (no sockets looked up in the director): to this host's redirector as well.
        let f = (20000..21000u16)
            .map(|sport| Flow {
                src: "192.0.2.7".parse().unwrap(),
                dst: "10.100.0.1".parse().unwrap(),
                sport,
                dport: 53,
            })
            .find(|f| this_host(inst.expect("web", f).1[0]))
            .unwrap();
        let (hash, row) = inst.expect("web", &f);
        let frame = udp_packet(f.src, f.dst, f.sport, f.dport, b"q");
        let (ret, out) = dp.test_run(&frame, ingress).unwrap();
        assert_eq!(ret, XDP_PASS);
        assert_eq!(
            hex(&out),
            hex(&expected_gue(DIR_MAC, CLIENT_MAC, &row, hash, &frame[14..]))
        );
        let r = reasons(dp);
        assert_eq!(r[reason::COLOCATED_SELF], 5);
        assert_eq!(r.iter().sum::<u64>(), 5, "no other reason: {r:?}");
    });
}

/// A real connection to the VIP in the test's namespace: its segments stay here, those of a
/// flow only the listener matches do not.
#[test]
fn a_local_socket_keeps_its_segments_on_this_host() {
    run(true, |dp, inst, ingress| {
        sh(&["ip", "link", "set", "lo", "up"]);
        sh(&["ip", "addr", "add", "10.100.0.1/32", "dev", "lo"]);
        sh(&["ip", "addr", "add", "fd00:100::1/128", "dev", "lo", "nodad"]);
        for (service, _, vip, port) in [V4, V6] {
            let vip: IpAddr = vip.parse().unwrap();
            let listener = TcpListener::bind(SocketAddr::new(vip, port)).unwrap();
            let mut kept = Vec::new();
            // Connect until a connection's row names this host first (one in three rows).
            let (f, stream) = (0..200)
                .find_map(|_| {
                    let s = TcpStream::connect(SocketAddr::new(vip, port))
                        .unwrap_or_else(|e| panic!("connect to {vip} port {port}: {e}"));
                    let local = s.local_addr().unwrap();
                    let f = Flow {
                        src: local.ip(),
                        dst: vip,
                        sport: local.port(),
                        dport: port,
                    };
                    if this_host(inst.expect(service, &f).1[0]) {
                        Some((f, s))
                    } else {
                        kept.push(s);
                        None
                    }
                })
                .expect("a connection whose primary is this host");
            let _accepted = listener.accept().unwrap();
            let frame = segment(&f, false, true, b"data");
            let (ret, out) = dp.test_run(&frame, ingress).unwrap();
            assert_eq!(ret, XDP_PASS, "{f:?}");
            assert_eq!(out, frame, "established here: to the stack as it came");
            drop(stream);

            // Same VIP and port, a client port nobody connected from: only the listener
            // matches, so the packet goes to the redirector (encapsulated), not the stack.
            let other = flow_where(
                inst,
                service,
                &f.src.to_string(),
                &vip.to_string(),
                port,
                true,
            );
            let frame = segment(&other, false, true, b"not mine");
            let (ret, out) = dp.test_run(&frame, ingress).unwrap();
            assert_eq!(ret, XDP_PASS);
            assert_ne!(out, frame, "encapsulated: {other:?}");
        }
        let r = reasons(dp);
        assert_eq!(r[reason::COLOCATED_DIRECT], 2, "{r:?}");
        assert_eq!(r[reason::COLOCATED_SELF], 2, "{r:?}");
    });
}

#[test]
fn a_row_whose_primary_is_elsewhere_is_forwarded_as_by_a_director_tier() {
    run(true, |dp, inst, ingress| {
        for (service, client, vip, port) in [V4, V6] {
            let f = flow_where(inst, service, client, vip, port, false);
            let (hash, row) = inst.expect(service, &f);
            for syn in [true, false] {
                let frame = segment(&f, syn, !syn, b"elsewhere");
                // Twice: the general path, then the fast path with the cached next hop.
                for _ in 0..2 {
                    let (ret, out) = dp.test_run(&frame, ingress).unwrap();
                    assert_eq!(ret, out_dp0(), "{f:?}");
                    let want = expected_gue(backend_mac(row[0]), DIR_MAC, &row, hash, &frame[14..]);
                    assert_eq!(hex(&out), hex(&want), "{f:?} {row:?}");
                }
            }
        }
        assert_eq!(reasons(dp).iter().sum::<u64>(), 0, "a forward is no reason");
    });
}

/// Without `colocated`, nothing of the above happens: a row naming the director's own
/// address is sent as any other (the kernel has no route to forward to itself: dropped, as
/// before the mode existed).
#[test]
fn not_colocated_a_row_naming_this_host_is_not_delivered_here() {
    run(false, |dp, inst, ingress| {
        let (service, client, vip, port) = V4;
        let f = flow_where(inst, service, client, vip, port, true);
        let frame = segment(&f, true, false, b"");
        let (ret, _) = dp.test_run(&frame, ingress).unwrap();
        assert_ne!(ret, XDP_PASS, "never delivered here without colocated");
        let r = reasons(dp);
        assert_eq!(r[reason::COLOCATED_DIRECT] + r[reason::COLOCATED_SELF], 0);
    });
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A `gue` check of this host's own backend connects to the VIP here (a GUE packet to
/// itself would never pass its redirector); of another backend it still goes through the
/// tunnel. Without `colocated` the own backend is probed through the tunnel like any other.
#[test]
fn a_gue_check_of_this_hosts_own_backend_goes_direct() {
    use director::health::{round, ProbeSettings, Target};
    use std::time::Duration;
    use tablegen::config::{Health, HealthCheck};

    let lab = Lab::new();
    lab.ns.run(|| {
        sh(&["ip", "link", "set", "lo", "up"]);
        sh(&["ip", "addr", "add", "10.100.0.1/32", "dev", "lo"]);
        let _listener = TcpListener::bind("10.100.0.1:80").unwrap();
        let target = |address: &str| Target {
            service: "web".into(),
            backend: "b".into(),
            address: address.parse().unwrap(),
            health: Health {
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(300),
                rise: 1,
                fall: 1,
                jitter_percent: 0,
                hold: Duration::ZERO,
                fail_open_below: 0,
                announce_min_healthy: 0,
                checks: vec![HealthCheck::Gue {
                    vip: "10.100.0.1".parse().unwrap(),
                    port: 80,
                }],
            },
        };
        let settings = |colocated| ProbeSettings {
            gue_port: GUE_PORT,
            src_v4: Some(IpAddr::V4(SRC4)),
            src_v6: Some(IpAddr::V6(SRC6)),
            colocated,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // No prober (no raw socket): only the direct check can pass.
            round(&target("10.1.0.1"), &settings(true), None)
                .await
                .expect("own backend: connected to the VIP here");
            assert!(round(&target("10.1.0.12"), &settings(true), None)
                .await
                .is_err());
            assert!(round(&target("10.1.0.1"), &settings(false), None)
                .await
                .is_err());
        });
        // And a VIP nobody listens on fails the direct check too.
        drop(_listener);
        rt.block_on(async {
            assert!(round(&target("10.1.0.1"), &settings(true), None)
                .await
                .is_err());
        });
    });
}
