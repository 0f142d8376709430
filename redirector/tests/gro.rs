//! GUE that GRO would merge. A backend whose interface has UDP GRO forwarding on
//! (`rx-udp-gro-forwarding`) merges GUE datagrams of one outer flow (same addresses, ports and
//! size, as the packets of one client flow are) into one skb before tc sees it, and the
//! program cannot take that apart. The daemon turns the feature off on its interfaces, so
//! every datagram arrives, and is decapsulated, on its own.
//!
//! Real packets over a veth pair: the sender ("director" namespace) sends bursts with UDP GSO
//! through a veth that cannot segment UDP itself, so the kernel segments each burst in software
//! and the datagrams reach the backend's veth back to back, in one NAPI poll, where GRO (on
//! for the veth) can merge them.

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use redirector::daemon::{self, Event};
use redirector::datapath;

/// Datagrams per GSO send (one burst), and bursts per family.
const SEGMENTS: usize = 16;
const BURSTS: usize = 20;

/// One burst: `SEGMENTS` GUE datagrams of equal size (inner UDP client -> VIP:7000), sent
/// with UDP GSO from `sock`.
fn send_bursts(sock: &UdpSocket, client: IpAddr, vip: IpAddr) {
    let mut seg_len = 0;
    for b in 0..BURSTS {
        let mut buf = Vec::new();
        for s in 0..SEGMENTS {
            let mut gue_pkt = gue(&Hops::None, vip.is_ipv6());
            gue_pkt.extend(udp(
                client,
                vip,
                5000,
                7000,
                &[(b * SEGMENTS + s) as u8; 64],
            ));
            seg_len = gue_pkt.len();
            buf.extend(gue_pkt);
        }
        nix::sys::socket::setsockopt(
            sock,
            nix::sys::socket::sockopt::UdpGsoSegment,
            &(seg_len as i32),
        )
        .unwrap();
        assert_eq!(sock.send(&buf).unwrap(), buf.len());
    }
}

/// Datagrams `sock` receives until `want` or a quiet second.
fn receive(sock: &UdpSocket, want: usize) -> usize {
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut n = 0;
    let mut buf = [0u8; 2048];
    while n < want {
        match sock.recv(&mut buf) {
            Ok(_) => n += 1,
            Err(_) => break,
        }
    }
    n
}

fn features(ns: &Netns, dev: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "ethtool", "-k", dev])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn gue_is_never_merged_by_gro_on_the_daemons_interface() {
    let tmp = common::TmpDir::with_bpffs("gro");
    let d = netns("gro-dir");
    let b = netns("gro-be");
    let (dl, bl) = (lab::testns::unique("gd"), lab::testns::unique("gb"));
    sh(&[
        "ip",
        "link",
        "add",
        &dl,
        "address",
        "02:00:00:00:00:64",
        "netns",
        &d.name,
        "type",
        "veth",
        "peer",
        "name",
        &bl,
        "address",
        "02:00:00:00:00:01",
        "netns",
        &b.name,
    ]);
    for (ns, dev, a4, a6) in [(&d, &dl, DIRECTOR4, DIRECTOR6), (&b, &bl, SELF4, SELF6)] {
        ns.ip(&["addr", "add", &format!("{a4}/24"), "dev", dev]);
        ns.ip(&["addr", "add", &format!("{a6}/64"), "dev", dev, "nodad"]);
        ns.ip(&["link", "set", dev, "up"]);
    }
    for (a, mac) in [
        (SELF4.to_string(), "02:00:00:00:00:01"),
        (SELF6.to_string(), "02:00:00:00:00:01"),
    ] {
        d.ip(&[
            "neigh",
            "replace",
            &a,
            "lladdr",
            mac,
            "dev",
            &dl,
            "nud",
            "permanent",
        ]);
    }
    for a in [DIRECTOR4.to_string(), DIRECTOR6.to_string()] {
        b.ip(&[
            "neigh",
            "replace",
            &a,
            "lladdr",
            "02:00:00:00:00:64",
            "dev",
            &bl,
            "nud",
            "permanent",
        ]);
    }
    b.ip(&["addr", "add", &format!("{VIP4}/32"), "dev", "lo"]);
    b.ip(&["addr", "add", &format!("{VIP6}/128"), "dev", "lo"]);
    b.sysctl("net.ipv4.conf.all.rp_filter", "0");
    b.sysctl(&format!("net.ipv4.conf.{bl}.rp_filter"), "0");
    // The sender's veth cannot segment UDP: each GSO send leaves it as separate datagrams in
    // one go. The backend's veth runs GRO (NAPI) with UDP GRO forwarding, as an operator may
    // have it for forwarded UDP.
    d.exec(&["ethtool", "-K", &dl, "tx-udp-segmentation", "off"]);
    b.exec(&[
        "ethtool",
        "-K",
        &bl,
        "gro",
        "on",
        "rx-udp-gro-forwarding",
        "on",
    ]);
    assert!(features(&b, &bl).contains("rx-udp-gro-forwarding: on"));

    let cfg_path = tmp.0.join("redirector.yaml");
    std::fs::write(
        &cfg_path,
        format!(
            "interfaces: [{bl}]\nallowed_sources: [192.0.2.96/28, '2001:db8:1::100/128']\n\
             bpffs_dir: {}\nstate_dir: {}\n",
            tmp.0.join("bpffs").display(),
            tmp.0.join("state").display()
        ),
    )
    .unwrap();
    let config = redirector::config::Config::load(&cfg_path).unwrap();
    let pin_dir = config.pin_dir();

    let (tx, rx) = mpsc::channel();
    let daemon = b.run(|| {
        let path = cfg_path.clone();
        let daemon = std::thread::spawn(move || daemon::run(&path, rx));
        let start = Instant::now();
        while datapath::attached_prog_id(&bl).ok().flatten().is_none() {
            assert!(start.elapsed() < Duration::from_secs(10), "daemon attached");
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    });
    assert!(
        features(&b, &bl).contains("rx-udp-gro-forwarding: off"),
        "the daemon turned UDP GRO forwarding off"
    );

    let counters = || {
        b.run(|| {
            let maps = datapath::PinnedMaps::open(&pin_dir).unwrap();
            let c = datapath::read_counters(&maps.counters).unwrap();
            let at = |r: &str| {
                c[redirector::counters::NAMES
                    .iter()
                    .position(|(_, n, _)| *n == r)
                    .unwrap()]
            };
            (at("udp"), at("gro_merged"), at("decap_failed"))
        })
    };
    // Send both families; the backend's server counts what reaches it.
    let round = |label: &str| {
        let mut got = Vec::new();
        for (client, vip, src, dst) in [
            (
                IpAddr::from(CLIENT4),
                IpAddr::from(VIP4),
                IpAddr::from(DIRECTOR4),
                IpAddr::from(SELF4),
            ),
            (
                IpAddr::from(CLIENT6),
                IpAddr::from(VIP6),
                IpAddr::from(DIRECTOR6),
                IpAddr::from(SELF6),
            ),
        ] {
            let server = b.run(|| {
                let s = UdpSocket::bind(SocketAddr::new(vip, 7000)).unwrap();
                // Room for every datagram of the round: none may be lost to a full queue.
                nix::sys::socket::setsockopt(
                    &s,
                    nix::sys::socket::sockopt::RcvBufForce,
                    &(8 << 20),
                )
                .unwrap();
                s
            });
            d.run(|| {
                let sock = UdpSocket::bind(SocketAddr::new(src, 50000)).unwrap();
                sock.connect(SocketAddr::new(dst, GUE_PORT)).unwrap();
                send_bursts(&sock, client, vip);
            });
            let n = receive(&server, SEGMENTS * BURSTS);
            eprintln!(
                "{label}: {vip}: {n} of {} datagrams delivered",
                SEGMENTS * BURSTS
            );
            got.push(n);
        }
        got
    };

    let got = round("daemon running");
    let (local, merged, failed) = counters();
    eprintln!("udp {local}, gro_merged {merged}, decap_failed {failed}");
    assert_eq!((merged, failed), (0, 0), "no GUE merged");
    assert_eq!(got, [SEGMENTS * BURSTS; 2], "every datagram delivered");
    assert_eq!(local, (2 * SEGMENTS * BURSTS) as u64);

    // The same traffic with the feature turned on behind the daemon's back: GRO merges, the
    // program drops the merged packets and says why. (This is what the setting protects
    // from, and proves that this test's traffic is mergeable.)
    b.exec(&["ethtool", "-K", &bl, "rx-udp-gro-forwarding", "on"]);
    let got = round("feature on again");
    let (_, merged, failed) = counters();
    eprintln!("gro_merged {merged}, decap_failed {failed}");
    assert!(merged > 0, "GRO merged some bursts");
    assert_eq!(
        failed, 0,
        "counted as merged, not as a failed decapsulation"
    );
    assert!(got.iter().all(|&n| n < SEGMENTS * BURSTS));

    tx.send(Event::Stop).unwrap();
    daemon.join().unwrap().unwrap();
    // detach turns the feature on again only if the daemon turned it off: it did (before the
    // hand-made change); the interface ends as the operator had it.
    b.run(|| daemon::detach(&pin_dir, &config.state_dir).unwrap());
    assert!(features(&b, &bl).contains("rx-udp-gro-forwarding: on"));
}
