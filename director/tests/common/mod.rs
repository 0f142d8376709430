//! Shared fixtures for the director's root tests: a network namespace with routes and
//! neighbours for bpf_fib_lookup, a private bpffs, the real Datapath filled by the daemon's
//! own code, and independent builders for input and expected frames (etherparse).
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use director::datapath::Datapath;
use director::tables;
use etherparse::{IpNumber, Ipv4Header, Ipv6Header, UdpHeader};
use tablegen::config::Config;
use tablegen::hash::{flow_hash, gue_source_port, Flow};
use tablegen::table::Table;

pub const DIR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xcc];
pub const SRC4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
pub const SRC6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1);
pub const GUE_PORT: u16 = daemon_support::defaults::GUE_PORT;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// The lab director's settings: both outer sources, next hops reused for 100 ms.
pub fn settings() -> director::datapath::Settings {
    director::datapath::Settings {
        src4: Some(SRC4),
        src6: Some(SRC6),
        colocated: false,
        gue_port: GUE_PORT,
        nexthop_ttl_ms: 100,
    }
}

pub use lab::testns::{sh, unique};

/// The tests' network namespace (`xdplbd-<pid>-<n>`), deleted on drop.
pub type Netns = lab::testns::TestNetns;

/// A new namespace for one test.
pub fn netns() -> Netns {
    Netns::new("xdplbd")
}

/// A bpffs of our own under /run (`ip netns exec` remounts /sys), unmounted on drop.
#[derive(Debug)]
pub struct Bpffs {
    pub root: PathBuf,
}

impl Bpffs {
    pub fn new() -> Bpffs {
        let root = PathBuf::from(format!("/run/{}", unique("xdplb-test-"))).join("bpffs");
        std::fs::create_dir_all(&root).unwrap();
        sh(&["mount", "-t", "bpf", "bpf", root.to_str().unwrap()]);
        Bpffs { root }
    }

    pub fn pin_dir(&self) -> PathBuf {
        self.root.join("director")
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = director::datapath::detach_all(&self.pin_dir());
        let _ = Command::new("umount").arg(&self.root).status();
        let _ = std::fs::remove_dir(&self.root);
        let _ = std::fs::remove_dir(self.root.parent().unwrap());
    }
}

/// Backend MACs in the lab: the last byte is the address's last byte.
pub fn backend_mac(a: IpAddr) -> [u8; 6] {
    let last = match a {
        IpAddr::V4(v) => v.octets()[3],
        IpAddr::V6(v) => v.octets()[15],
    };
    [0x02, 0, 0, 0, 0xbe, last]
}

/// The director's namespace: `dp0` (ingress and route to the backends, with the director's
/// addresses) paired with `dp1`; `dq0`/`dq1` for a second egress (10.2.0.0/24, fd00:2::/64).
/// Backends 10.1.0.10-.59 and fd00:1::10-59 have permanent neighbours; 10.1.0.200 and
/// fd00:1::200 do not (unresolved). 10.9.0.0/24 (MTU 1000) and fd00:9::/64 (MTU 1400) go through small-MTU routes.
#[derive(Debug)]
pub struct Lab {
    pub ns: Netns,
    pub fs: Bpffs,
    pub dp0: u32,
    pub dq0: u32,
    /// The interface the tests' frames come in on: `dp0`, or on a kernel whose test runs
    /// take no XDP context (before 5.15) the namespace's loopback device ([`ingress`]).
    pub ingress: u32,
}

/// Whether a test run can name dp0 as the frame's ingress (kernel 5.15 and later).
pub fn ingress_is_dp0() -> bool {
    director::datapath::xdp_test_ctx_supported()
}

/// The ingress of the tests' frames: `dp0`, or lo (`LOOPBACK_IFINDEX`) where the kernel's
/// test run cannot be told another (before 5.15).
pub fn ingress(dp0: u32) -> u32 {
    if ingress_is_dp0() {
        dp0
    } else {
        director::datapath::LOOPBACK_IFINDEX
    }
}

/// The verdict of a frame the program sends on out of dp0: `XDP_TX` when it came in on dp0,
/// `XDP_REDIRECT` (to dp0) when it came in on lo. The source MAC of the frame it leaves says
/// which interface that is either way (the route's: dp0's or dq0's).
pub fn out_dp0() -> u32 {
    if ingress_is_dp0() {
        XDP_TX
    } else {
        XDP_REDIRECT
    }
}

impl Lab {
    pub fn new() -> Lab {
        let ns = netns();
        ns.ip(&["link", "add", "dp0", "type", "veth", "peer", "name", "dp1"]);
        ns.ip(&["link", "add", "dq0", "type", "veth", "peer", "name", "dq1"]);
        ns.ip(&["link", "set", "dp0", "address", "02:00:00:00:00:01"]);
        ns.ip(&["link", "set", "dq0", "address", "02:00:00:00:00:02"]);
        for d in ["dp0", "dp1", "dq0", "dq1"] {
            ns.ip(&["link", "set", d, "up"]);
        }
        ns.ip(&["addr", "add", "10.1.0.1/24", "dev", "dp0"]);
        ns.ip(&["addr", "add", "fd00:1::1/64", "dev", "dp0", "nodad"]);
        ns.ip(&["addr", "add", "10.2.0.1/24", "dev", "dq0"]);
        ns.ip(&["addr", "add", "fd00:2::1/64", "dev", "dq0", "nodad"]);
        for i in 10..60u8 {
            let a4 = format!("10.1.0.{i}");
            let a6 = format!("fd00:1::{i:x}");
            let mac4 = format!("02:00:00:00:be:{i:02x}");
            ns.ip(&[
                "neigh",
                "replace",
                &a4,
                "lladdr",
                &mac4,
                "dev",
                "dp0",
                "nud",
                "permanent",
            ]);
            ns.ip(&[
                "neigh",
                "replace",
                &a6,
                "lladdr",
                &mac4,
                "dev",
                "dp0",
                "nud",
                "permanent",
            ]);
        }
        ns.ip(&[
            "neigh",
            "replace",
            "10.2.0.10",
            "lladdr",
            "02:00:00:00:be:0a",
            "dev",
            "dq0",
            "nud",
            "permanent",
        ]);
        // A gateway for the small-MTU routes (route MTUs count for the fib lookup only when locked).
        ns.ip(&[
            "route",
            "add",
            "10.9.0.0/24",
            "via",
            "10.1.0.10",
            "dev",
            "dp0",
            "mtu",
            "lock",
            "1000",
        ]);
        ns.ip(&[
            "-6",
            "route",
            "add",
            "fd00:9::/64",
            "via",
            "fd00:1::10",
            "dev",
            "dp0",
            "mtu",
            "lock",
            "1400",
        ]);
        ns.sysctl("net.ipv4.conf.dp0.forwarding", "1");
        ns.sysctl("net.ipv4.conf.dq0.forwarding", "1");
        ns.sysctl("net.ipv6.conf.all.forwarding", "1");
        let dp0 = ns.ifindex("dp0");
        let dq0 = ns.ifindex("dq0");
        if !ingress_is_dp0() {
            // The ingress is lo: bpf_fib_lookup forwards only from an interface that does.
            ns.sysctl("net.ipv4.conf.lo.forwarding", "1");
        }
        Lab {
            ns,
            fs: Bpffs::new(),
            dp0,
            dq0,
            ingress: ingress(dp0),
        }
    }

    /// Load the program (pins in this lab's bpffs) and set the director's addresses.
    pub fn datapath(&self) -> Datapath {
        let dp = Datapath::open(&self.fs.pin_dir()).expect("load the director program");
        dp.set_config(&settings()).unwrap();
        dp
    }
}

/// A parsed config with its tables, installed into a datapath by the daemon's own code.
#[derive(Debug, Clone)]
pub struct Installed {
    pub config: Config,
    pub tables: Vec<Table>,
}

pub fn install(dp: &Datapath, yaml: &str) -> Installed {
    let loaded = director::source::build(Path::new("backends.yaml"), yaml).expect("valid config");
    let snap = tables::snapshot(
        &loaded.config,
        &loaded.tables,
        &Default::default(),
        true,
        true,
    )
    .expect("snapshot");
    dp.install(&snap).expect("install");
    Installed {
        config: loaded.config,
        tables: loaded.tables,
    }
}

impl Installed {
    /// (hash, backends of the row) for a flow of `service`, computed by tablegen.
    pub fn expect(&self, service: &str, flow: &Flow) -> (u64, Vec<IpAddr>) {
        let i = self
            .config
            .services
            .iter()
            .position(|s| s.name == service)
            .unwrap();
        let s = &self.config.services[i];
        let t = &self.tables[i];
        let h = flow_hash(&s.hash_key, s.hash_fields, flow);
        let row = t.row((h as u32) & (t.rows - 1));
        (
            h,
            row.iter()
                .map(|b| s.backends[*b as usize].address)
                .collect(),
        )
    }
}

pub const KEY: &str = "000102030405060708090a0b0c0d0e0f";
pub const SEED: &str = "0f0e0d0c0b0a09080706050403020100";

/// Input frames.
pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&dst);
    v.extend_from_slice(&src);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

pub fn tcp_packet(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(CLIENT_MAC, DIR_MAC);
    let mut out = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => b
            .ipv4(s.octets(), d.octets(), 60)
            .tcp(sport, dport, 1, 1000)
            .write(&mut out, payload)
            .unwrap(),
        (IpAddr::V6(s), IpAddr::V6(d)) => b
            .ipv6(s.octets(), d.octets(), 60)
            .tcp(sport, dport, 1, 1000)
            .write(&mut out, payload)
            .unwrap(),
        _ => panic!("mixed families"),
    }
    out
}

pub fn udp_packet(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(CLIENT_MAC, DIR_MAC);
    let mut out = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => b
            .ipv4(s.octets(), d.octets(), 60)
            .udp(sport, dport)
            .write(&mut out, payload)
            .unwrap(),
        (IpAddr::V6(s), IpAddr::V6(d)) => b
            .ipv6(s.octets(), d.octets(), 60)
            .udp(sport, dport)
            .write(&mut out, payload)
            .unwrap(),
        _ => panic!("mixed families"),
    }
    out
}

/// The expected GUE frame for `inner` (an IP packet) sent to `row` (primary first).
pub fn expected_gue(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    row: &[IpAddr],
    hash: u64,
    inner: &[u8],
) -> Vec<u8> {
    expected_gue_with(dst_mac, src_mac, row, hash, inner, false)
}

/// As [`expected_gue`]; `udp_sc`: a service with UDP second chance, whose hop list is flagged
/// (type 0x01xx) and ends with the primary again.
pub fn expected_gue_with(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    row: &[IpAddr],
    hash: u64,
    inner: &[u8],
    udp_sc: bool,
) -> Vec<u8> {
    let mut hops: Vec<IpAddr> = row[1..].to_vec();
    if udp_sc {
        hops.push(row[0]);
    }
    let inner_v6 = inner[0] >> 4 == 6;
    let (tos, df) = if inner_v6 {
        (((inner[0] & 0x0f) << 4) | (inner[1] >> 4), true)
    } else {
        (inner[1], inner[6] & 0x40 != 0)
    };
    let outer_v6 = row[0].is_ipv6();
    let mut gue = Vec::new();
    let hop_words = if outer_v6 { 4 } else { 1 };
    gue.push((1 + hop_words * hops.len()) as u8); // version 0, C 0, hlen
    gue.push(if inner_v6 { 41 } else { 4 });
    gue.extend_from_slice(&[0, 0]);
    gue.push(u8::from(udp_sc)); // flags
    gue.push(u8::from(outer_v6)); // kind: 0 IPv4, 1 IPv6 hops
    gue.push(0);
    gue.push(hops.len() as u8);
    for h in &hops {
        match h {
            IpAddr::V4(a) => gue.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => gue.extend_from_slice(&a.octets()),
        }
    }
    gue.extend_from_slice(inner);
    let sport = gue_source_port(hash);
    let mut out = Vec::new();
    out.extend_from_slice(&dst_mac);
    out.extend_from_slice(&src_mac);
    match row[0] {
        IpAddr::V4(dst) => {
            out.extend_from_slice(&0x0800u16.to_be_bytes());
            let udp = UdpHeader {
                source_port: sport,
                destination_port: GUE_PORT,
                length: (8 + gue.len()) as u16,
                checksum: 0,
            };
            let mut ip = Ipv4Header::new(
                (8 + gue.len()) as u16,
                64,
                IpNumber::UDP,
                SRC4.octets(),
                dst.octets(),
            )
            .unwrap();
            ip.dont_fragment = df;
            ip.identification = 0;
            ip.dscp = etherparse::Ipv4Dscp::try_new(tos >> 2).unwrap();
            ip.ecn = etherparse::Ipv4Ecn::try_new(tos & 3).unwrap();
            ip.header_checksum = ip.calc_header_checksum();
            ip.write(&mut out).unwrap();
            udp.write(&mut out).unwrap();
        }
        IpAddr::V6(dst) => {
            out.extend_from_slice(&0x86ddu16.to_be_bytes());
            let ip = Ipv6Header {
                traffic_class: tos,
                flow_label: etherparse::Ipv6FlowLabel::try_new((hash as u32) & 0xfffff).unwrap(),
                payload_length: (8 + gue.len()) as u16,
                next_header: IpNumber::UDP,
                hop_limit: 64,
                source: SRC6.octets(),
                destination: dst.octets(),
            };
            let udp = UdpHeader::with_ipv6_checksum(sport, GUE_PORT, &ip, &gue).unwrap();
            ip.write(&mut out).unwrap();
            udp.write(&mut out).unwrap();
        }
    }
    out.extend_from_slice(&gue);
    out
}

/// backends.yaml with one service `name` (2^16 rows) of 100 backends, backend `drained`
/// draining (none if out of range): what the benches reload.
pub fn hundred_backends(name: &str, drained: usize) -> String {
    let mut s = format!("services:\n  - name: {name}\n    hash_key: {KEY}\n    seed: {SEED}\n    table_bits: 16\n    binds:\n      - {{ vip: 10.100.0.1, proto: tcp, port: 80 }}\n    backends:\n");
    for i in 0..100 {
        let state = if i == drained {
            ", state: draining"
        } else {
            ""
        };
        s.push_str(&format!(
            "      - {{ name: b{i}, address: 10.3.{}.{}{state} }}\n",
            i / 200,
            10 + i % 200
        ));
    }
    s
}
