//! Shared test fixtures: a network namespace per test, packet builders for GUE as the
//! directors (ours and GLB's) send it, a loaded redirector with a `test_run` wrapper, and a
//! scratch directory with a bpffs of its own for tests that run the daemon.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::PacketBuilder;
use libbpf_rs::MapCore;
use redirector::config::Cidr;
use redirector::datapath;
use redirector::skel::RedirectorSkel;

pub const GUE_PORT: u16 = daemon_support::defaults::GUE_PORT;

/// Addresses used in the namespaces (documentation ranges: nothing real).
pub const DIRECTOR4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
pub const SELF4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const HOP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
pub const HOP4_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 4);
pub const VIP4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
pub const STRANGER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);

pub const DIRECTOR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x100);
pub const SELF6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const HOP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 3);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 7);

/// MAC of the next hop's static neighbour entry in [`Netns::with_lab`].
pub const HOP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];
/// test_run runs on the namespace's loopback device, whose address is all zeros: frames must
/// be sent to it to count as PACKET_HOST.
pub const LO_MAC: [u8; 6] = [0; 6];
pub const DIRECTOR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x64];

#[allow(unused_imports)] // only some of the test binaries run commands
pub use lab::testns::sh;

/// The tests' network namespace (`redirector-<tag>-<pid>-<n>`), deleted on drop.
pub type Netns = lab::testns::TestNetns;

/// A new namespace for one test.
pub fn netns(tag: &str) -> Netns {
    Netns::new(&format!("redirector-{tag}"))
}

/// The namespace every test_run case uses: VIPs and the client address on lo (so a real
/// client can connect from it), this host's addresses on a veth pair with the next hops
/// behind static neighbour entries (so the FIB lookup succeeds with known MACs).
pub fn with_lab(tag: &str) -> Netns {
    let ns = netns(tag);
    ns.ip(&["addr", "add", &format!("{VIP4}/32"), "dev", "lo"]);
    ns.ip(&["addr", "add", &format!("{CLIENT4}/32"), "dev", "lo"]);
    ns.ip(&["addr", "add", &format!("{VIP6}/128"), "dev", "lo"]);
    ns.ip(&["addr", "add", &format!("{CLIENT6}/128"), "dev", "lo"]);
    ns.ip(&[
        "link",
        "add",
        "v0",
        "address",
        "02:00:00:00:00:01",
        "type",
        "veth",
        "peer",
        "name",
        "v1",
    ]);
    ns.ip(&["link", "set", "v0", "up"]);
    ns.ip(&["link", "set", "v1", "up"]);
    ns.ip(&["addr", "add", &format!("{SELF4}/24"), "dev", "v0"]);
    ns.ip(&["addr", "add", &format!("{SELF6}/64"), "dev", "v0", "nodad"]);
    for hop in [HOP4.to_string(), HOP4_B.to_string(), HOP6.to_string()] {
        ns.ip(&[
            "neigh",
            "replace",
            &hop,
            "lladdr",
            "02:00:00:00:00:03",
            "dev",
            "v0",
            "nud",
            "permanent",
        ]);
    }
    ns
}

/// Load the redirector (no pins) allowing the test directors.
pub fn load(object: &mut std::mem::MaybeUninit<libbpf_rs::OpenObject>) -> RedirectorSkel<'_> {
    load_with_ttl(object, datapath::DEFAULT_NEXTHOP_TTL_MS)
}

/// As [`load`], reusing next hops for `nexthop_ttl_ms` (0: never).
pub fn load_with_ttl(
    object: &mut std::mem::MaybeUninit<libbpf_rs::OpenObject>,
    nexthop_ttl_ms: u32,
) -> RedirectorSkel<'_> {
    let skel =
        datapath::load_with(object, GUE_PORT, nexthop_ttl_ms, None).expect("load redirector");
    let sources: Vec<Cidr> = ["192.0.2.96/28", "2001:db8:1::100/128"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    datapath::set_allowed_sources(&skel.maps.allowed_v4, &skel.maps.allowed_v6, &sources).unwrap();
    skel
}

/// One test_run: (TC verdict, output bytes, the reason counted).
pub fn run(skel: &RedirectorSkel<'_>, pkt: &[u8]) -> (i32, Vec<u8>, &'static str) {
    let before = datapath::read_counters(&skel.maps.counters).unwrap();
    let bytes_before = datapath::read_bytes(&skel.maps.counter_bytes).unwrap();
    let mut out = vec![0u8; pkt.len() + 512];
    let input = libbpf_rs::ProgramInput {
        data_in: Some(pkt),
        data_out: Some(&mut out),
        ..Default::default()
    };
    let output = skel.progs.redirector.test_run(input).expect("test_run");
    let verdict = output.return_value as i32;
    let data = output.data.expect("data out").to_vec();
    let after = datapath::read_counters(&skel.maps.counters).unwrap();
    let changed: Vec<usize> = (0..after.len())
        .filter(|&i| after[i] != before[i])
        .collect();
    assert_eq!(
        changed.len(),
        1,
        "exactly one counter per packet: {changed:?}"
    );
    assert_eq!(after[changed[0]] - before[changed[0]], 1);
    // Its bytes: the packet's length as it came in, for that reason and no other.
    let bytes_after = datapath::read_bytes(&skel.maps.counter_bytes).unwrap();
    let moved: Vec<(usize, u64)> = (0..bytes_after.len())
        .filter(|&i| bytes_after[i] != bytes_before[i])
        .map(|i| (i, bytes_after[i] - bytes_before[i]))
        .collect();
    assert_eq!(
        moved,
        vec![(changed[0], pkt.len() as u64)],
        "the packet's bytes, for its reason"
    );
    let reason = redirector::counters::name(changed[0] as u32);
    (verdict, data, reason)
}

/// Run the calling thread on `cpu` only: test_run runs on the caller's CPU, and the next-hop
/// cache is per CPU.
pub fn pin_to_cpu(cpu: usize) {
    let mut one = nix::sched::CpuSet::new();
    one.set(cpu).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one).unwrap();
}

/// The CPUs the calling thread may run on.
pub fn cpus() -> Vec<usize> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap())
        .collect()
}

pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_SHOT: i32 = 2;
pub const TC_ACT_REDIRECT: i32 = 7;

/// Hop list of GUE private data.
#[derive(Clone, Debug)]
pub enum Hops {
    /// No private data at all (hlen 0).
    None,
    V4 {
        next: u8,
        hops: Vec<Ipv4Addr>,
    },
    V6 {
        next: u8,
        hops: Vec<Ipv6Addr>,
    },
}

/// GUE header + private data, exactly as docs/development/wire-format.md has them (GLB's type 0
/// for IPv4 hops).
pub fn gue(hops: &Hops, inner_v6: bool) -> Vec<u8> {
    gue_with(hops, inner_v6, 0)
}

/// As [`gue`], with `flags` in the hop list type's first byte (1: UDP second chance).
pub fn gue_with(hops: &Hops, inner_v6: bool, flags: u8) -> Vec<u8> {
    let mut private = Vec::new();
    match hops {
        Hops::None => {}
        Hops::V4 { next, hops } => {
            private.extend_from_slice(&[flags, 0]);
            private.push(*next);
            private.push(hops.len() as u8);
            for h in hops {
                private.extend_from_slice(&h.octets());
            }
        }
        Hops::V6 { next, hops } => {
            private.extend_from_slice(&[flags, 1]);
            private.push(*next);
            private.push(hops.len() as u8);
            for h in hops {
                private.extend_from_slice(&h.octets());
            }
        }
    }
    assert_eq!(private.len() % 4, 0);
    let mut g = vec![
        (private.len() / 4) as u8,
        if inner_v6 { 41 } else { 4 },
        0,
        0,
    ];
    g.extend_from_slice(&private);
    g
}

/// Outer Ethernet/IP/UDP around `payload` (GUE + inner). IPv4 gets UDP checksum 0 as GLB
/// sends it; IPv6 gets a valid one.
pub fn outer(src: IpAddr, dst: IpAddr, sport: u16, payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(DIRECTOR_MAC, LO_MAC);
    let mut out = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            eth.ipv4(s.octets(), d.octets(), 64)
                .udp(sport, GUE_PORT)
                .write(&mut out, payload)
                .unwrap();
            out[14 + 20 + 6] = 0;
            out[14 + 20 + 7] = 0;
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            eth.ipv6(s.octets(), d.octets(), 64)
                .udp(sport, GUE_PORT)
                .write(&mut out, payload)
                .unwrap();
        }
        _ => panic!("mixed outer families"),
    }
    out
}

/// A TCP segment from `src:sport` to `dst:dport` (IP header onwards).
pub fn tcp(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    flags: &str,
    payload: &[u8],
) -> Vec<u8> {
    tcp_seq(src, dst, sport, dport, 1000, 2000, flags, payload)
}

/// As [`tcp`] with explicit sequence and acknowledgment numbers.
#[allow(clippy::too_many_arguments)]
pub fn tcp_seq(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: &str,
    payload: &[u8],
) -> Vec<u8> {
    let b = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    };
    let mut t = b.tcp(sport, dport, seq, 64240);
    if flags.contains('S') {
        t = t.syn();
    }
    if flags.contains('A') {
        t = t.ack(ack);
    }
    if flags.contains('R') {
        t = t.rst();
    }
    if flags.contains('P') {
        t = t.psh();
    }
    let mut out = Vec::new();
    t.write(&mut out, payload).unwrap();
    out
}

/// A UDP datagram (IP header onwards).
pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    };
    let mut out = Vec::new();
    b.udp(sport, dport).write(&mut out, payload).unwrap();
    out
}

/// The full GUE frame a director sends: outer + GUE(hops) + inner.
pub fn gue_frame(outer_src: IpAddr, outer_dst: IpAddr, hops: &Hops, inner: &[u8]) -> Vec<u8> {
    gue_frame_with(outer_src, outer_dst, hops, inner, 0)
}

/// As [`gue_frame`], with hop list flags (1: UDP second chance, as a director sends a UDP
/// packet of a service with `udp_second_chance`).
pub fn gue_frame_with(
    outer_src: IpAddr,
    outer_dst: IpAddr,
    hops: &Hops,
    inner: &[u8],
    flags: u8,
) -> Vec<u8> {
    let inner_v6 = inner[0] >> 4 == 6;
    let mut payload = gue_with(hops, inner_v6, flags);
    payload.extend_from_slice(inner);
    outer(outer_src, outer_dst, 0xc123, &payload)
}

/// What the stack must receive after decapsulation: the original Ethernet header (with the
/// inner family's ethertype) followed by the inner packet, byte for byte.
pub fn decapsulated(inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&LO_MAC);
    out.extend_from_slice(&DIRECTOR_MAC);
    out.extend_from_slice(if inner[0] >> 4 == 6 {
        &[0x86, 0xdd]
    } else {
        &[0x08, 0x00]
    });
    out.extend_from_slice(inner);
    out
}

/// Counter value of a reason.
pub fn counter(skel: &RedirectorSkel<'_>, reason: &str) -> u64 {
    let c = datapath::read_counters(&skel.maps.counters).unwrap();
    let i = redirector::counters::NAMES
        .iter()
        .position(|(_, n, _)| *n == reason)
        .unwrap();
    c[i]
}

/// Keep the MapCore import used (status code reads through it too).
pub fn map_is_empty(m: &impl MapCore) -> bool {
    m.keys().next().is_none()
}

/// A real TCP connection inside the namespace: a listener on `vip:port` and a client bound to
/// `client:cport`. Returns (listener, client, accepted server side).
pub fn connect(
    vip: IpAddr,
    port: u16,
    client: IpAddr,
    cport: u16,
) -> (
    std::net::TcpListener,
    std::net::TcpStream,
    std::net::TcpStream,
) {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage};
    use std::net::SocketAddr;
    let listener = std::net::TcpListener::bind(SocketAddr::new(vip, port)).unwrap();
    let family = if client.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::empty(), None).unwrap();
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(SocketAddr::new(client, cport)),
    )
    .unwrap();
    socket::connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(SocketAddr::new(vip, port)),
    )
    .unwrap();
    let stream = std::net::TcpStream::from(fd);
    let (server, _) = listener.accept().unwrap();
    (listener, stream, server)
}

/// A UDP socket bound to `local` with SO_REUSEADDR and SO_REUSEPORT (as a QUIC server binds
/// its listener and its per-client sockets to one port), connected to `peer` if given.
pub fn udp_socket(
    local: std::net::SocketAddr,
    peer: Option<std::net::SocketAddr>,
) -> std::net::UdpSocket {
    use nix::sys::socket::{self as so, sockopt, SockaddrStorage};
    let family = if local.is_ipv6() {
        so::AddressFamily::Inet6
    } else {
        so::AddressFamily::Inet
    };
    let fd = so::socket(family, so::SockType::Datagram, so::SockFlag::empty(), None).unwrap();
    so::setsockopt(&fd, sockopt::ReuseAddr, &true).unwrap();
    so::setsockopt(&fd, sockopt::ReusePort, &true).unwrap();
    use std::os::fd::AsRawFd;
    so::bind(fd.as_raw_fd(), &SockaddrStorage::from(local)).unwrap();
    if let Some(peer) = peer {
        so::connect(fd.as_raw_fd(), &SockaddrStorage::from(peer)).unwrap();
    }
    std::net::UdpSocket::from(fd)
}

/// `/run/xdplb-test-redirector-<tag>-<pid>`, with a bpffs of its own mounted at `bpffs/` (the
/// daemon never mounts one: as systemd does at boot, whoever runs it provides it). Under /run,
/// not /sys/fs/bpf: `ip netns exec` remounts /sys, this stays visible to the daemon it runs.
pub struct TmpDir(pub std::path::PathBuf);

impl TmpDir {
    pub fn with_bpffs(tag: &str) -> TmpDir {
        let tmp = TmpDir(std::path::PathBuf::from(format!(
            "/run/xdplb-test-redirector-{tag}-{}",
            std::process::id()
        )));
        std::fs::create_dir_all(tmp.bpffs()).unwrap();
        nix::mount::mount(
            Some("bpffs"),
            &tmp.bpffs(),
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        tmp
    }

    pub fn bpffs(&self) -> std::path::PathBuf {
        self.0.join("bpffs")
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.bpffs(), nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
