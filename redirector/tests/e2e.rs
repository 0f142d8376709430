//! End to end through real interfaces: the program attached to tc ingress of veth ports, real
//! GUE packets on the wire, real TCP connections into the backends' stacks.
//!
//! Topology (one L2 segment, a bridge in the director namespace):
//!
//! ```text
//!  ns dir: client 203.0.113.7 (lo) -> tun0 --[test encapsulator: GUE]--> br0 192.0.2.100
//!                                                                       |            |
//!  ns b (backend 192.0.2.1, redirector on b0) ---------------------------+            |
//!  ns c (backend 192.0.2.3, redirector on c0) ----------------------------------------+
//! ```
//!
//! The encapsulator plays the director: it reads the client's packets from a tun device and
//! sends them as GUE to a primary with a hop list, like a table row. Backends answer the client
//! directly (DSR).

mod common;

use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use redirector::datapath;

const B4: Ipv4Addr = SELF4; // 192.0.2.1
const C4: Ipv4Addr = HOP4; // 192.0.2.3

/// Where the encapsulator sends: 0 = C as primary (no alternates), 1 = B as primary with C as
/// the secondary.
static MODE: AtomicU8 = AtomicU8::new(0);

fn open_tun(name: &str) -> OwnedFd {
    const TUNSETIFF: u64 = 0x4004_54ca;
    const IFF_TUN: i16 = 0x0001;
    const IFF_NO_PI: i16 = 0x1000;
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: i16,
        pad: [u8; 22],
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .unwrap();
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TUN | IFF_NO_PI,
        pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF takes a struct ifreq, which IfReq lays out (name, flags, padding).
    let rc = unsafe { nix::libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) };
    assert_eq!(rc, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    OwnedFd::from(file)
}

/// Read the client's packets from the tun device and send them as GUE. Runs until `stop`.
fn encapsulate(tun: OwnedFd, udp: UdpSocket, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = [nix::poll::PollFd::new(
            tun.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        if nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(50u16)).unwrap_or(0) == 0 {
            continue;
        }
        let n = nix::unistd::read(tun.as_raw_fd(), &mut buf).unwrap();
        let inner = &buf[..n];
        let (to, hops) = match MODE.load(Ordering::Relaxed) {
            0 => (
                C4,
                Hops::V4 {
                    next: 0,
                    hops: vec![],
                },
            ),
            _ => (
                B4,
                Hops::V4 {
                    next: 0,
                    hops: vec![C4],
                },
            ),
        };
        let mut payload = gue(&hops, inner[0] >> 4 == 6);
        payload.extend_from_slice(inner);
        udp.send_to(&payload, (to, GUE_PORT)).unwrap();
    }
}

struct Backend<'o> {
    ns: Netns,
    skel: redirector::skel::RedirectorSkel<'o>,
}

fn backend<'o>(
    obj: &'o mut MaybeUninit<libbpf_rs::OpenObject>,
    tag: &str,
    dir: &Netns,
    addr: Ipv4Addr,
    port: &str,
) -> Backend<'o> {
    let ns = netns(tag);
    sh(&[
        "ip", "-n", &dir.name, "link", "add", port, "type", "veth", "peer", "name", "eth0",
        "netns", &ns.name,
    ]);
    dir.ip(&["link", "set", port, "master", "br0", "up"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
    ns.ip(&["addr", "add", &format!("{VIP4}/32"), "dev", "lo"]);
    ns.ip(&["addr", "add", &format!("{VIP6}/128"), "dev", "lo"]);
    // DSR: replies to clients go straight back through the director namespace's router role.
    ns.ip(&["route", "add", "203.0.113.0/24", "via", "192.0.2.100"]);
    let skel = datapath::load(obj, GUE_PORT, None).unwrap();
    let sources: Vec<redirector::config::Cidr> = ["192.0.2.0/24".parse().unwrap()].to_vec();
    datapath::set_allowed_sources(&skel.maps.allowed_v4, &skel.maps.allowed_v6, &sources).unwrap();
    let fd = skel.progs.redirector.as_fd();
    ns.run(|| datapath::attach(fd, "eth0")).unwrap();
    Backend { ns, skel }
}

fn listen(b: &Backend<'_>, addr: SocketAddr) -> TcpListener {
    b.ns.run(|| TcpListener::bind(addr).unwrap())
}

/// Accept one connection, echo what it reads once, uppercased, prefixed with `name`.
fn serve_once(l: TcpListener, name: &'static str) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            s.write_all(format!("{name}:{}", n).as_bytes()).unwrap();
        }
        got
    })
}

#[test]
fn gue_over_veth_reaches_real_sockets_and_second_chance_keeps_connections() {
    let dir = netns("dir");
    dir.ip(&["link", "add", "br0", "type", "bridge"]);
    dir.ip(&["link", "set", "br0", "up"]);
    dir.ip(&["addr", "add", "192.0.2.100/24", "dev", "br0"]);
    dir.ip(&["addr", "add", &format!("{CLIENT4}/32"), "dev", "lo"]);
    dir.sysctl("net.ipv4.conf.all.rp_filter", "0");
    dir.sysctl("net.ipv4.conf.br0.rp_filter", "0");
    let (mut ob, mut oc) = (MaybeUninit::uninit(), MaybeUninit::uninit());
    let b = backend(&mut ob, "b", &dir, B4, "pb");
    let c = backend(&mut oc, "c", &dir, C4, "pc");

    // The "director": the client's VIP traffic goes into tun0 and comes out as GUE.
    let stop = Arc::new(AtomicBool::new(false));
    let (tun, udp) = dir.run(|| {
        let tun = open_tun("tun0");
        sh(&["ip", "link", "set", "tun0", "up"]);
        sh(&[
            "ip",
            "route",
            "add",
            &format!("{VIP4}/32"),
            "dev",
            "tun0",
            "src",
            &CLIENT4.to_string(),
        ]);
        sh(&[
            "ip",
            "-6",
            "route",
            "add",
            &format!("{VIP6}/128"),
            "dev",
            "tun0",
        ]);
        sh(&["sysctl", "-qw", "net.ipv4.conf.tun0.rp_filter=0"]);
        let udp = UdpSocket::bind(("192.0.2.100", 0xc001)).unwrap();
        (tun, udp)
    });
    let encap = {
        let stop = stop.clone();
        std::thread::spawn(move || encapsulate(tun, udp, stop))
    };

    // 1. C is primary: a real connection handshakes through GUE and the redirector on C.
    MODE.store(0, Ordering::Relaxed);
    let on_c = serve_once(listen(&c, SocketAddr::new(IpAddr::V4(VIP4), 80)), "c");
    let on_b = serve_once(listen(&b, SocketAddr::new(IpAddr::V4(VIP4), 80)), "b");
    let mut conn1 = dir.run(|| {
        TcpStream::connect_timeout(
            &SocketAddr::new(IpAddr::V4(VIP4), 80),
            Duration::from_secs(5),
        )
        .unwrap()
    });
    conn1
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    conn1.write_all(b"one").unwrap();
    let mut buf = [0u8; 16];
    let n = conn1.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"c:3");

    // 2. The table changes: B becomes primary, C secondary. The old connection keeps working
    //    (B has no socket for it and passes it on to C); a new one lands on B.
    MODE.store(1, Ordering::Relaxed);
    conn1.write_all(b"two!").unwrap();
    let n = conn1.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"c:4");
    let mut conn2 = dir.run(|| {
        TcpStream::connect_timeout(
            &SocketAddr::new(IpAddr::V4(VIP4), 80),
            Duration::from_secs(5),
        )
        .unwrap()
    });
    conn2
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    conn2.write_all(b"new").unwrap();
    let n = conn2.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"b:3");
    drop(conn1);
    drop(conn2);
    assert_eq!(on_c.join().unwrap(), b"onetwo!");
    assert_eq!(on_b.join().unwrap(), b"new");

    // 3. IPv6 inside IPv4 GUE: decapsulation changes the family for real.
    let udp6 = b.ns.run(|| UdpSocket::bind((common::VIP6, 5353)).unwrap());
    udp6.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    dir.run(|| {
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{CLIENT6}/128"),
            "dev",
            "lo",
            "nodad",
        ]);
        let s = UdpSocket::bind((CLIENT6, 5000)).unwrap();
        s.send_to(b"six", (common::VIP6, 5353)).unwrap();
    });
    let (n, from) = udp6.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from.ip()), (&b"six"[..], IpAddr::V6(CLIENT6)));

    stop.store(true, Ordering::Relaxed);
    encap.join().unwrap();

    let cb = |s: &redirector::skel::RedirectorSkel<'_>, r| counter(s, r);
    assert!(cb(&b.skel, "forward") >= 2, "B passed conn1's packets on");
    assert!(cb(&b.skel, "syn") >= 1 && cb(&b.skel, "socket") >= 1);
    assert!(cb(&b.skel, "udp") >= 1);
    assert!(cb(&c.skel, "syn") >= 1 && cb(&c.skel, "socket") >= 2);
    for s in [&b.skel, &c.skel] {
        for r in [
            "source_not_allowed",
            "bad_gue",
            "bad_hoplist",
            "bad_inner",
            "decap_failed",
            "gro_merged",
            "no_route",
            "redirect_failed",
        ] {
            assert_eq!(cb(s, r), 0, "{r}");
        }
    }
}
