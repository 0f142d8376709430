//! The running daemon keeps the program's cached next hops true: a neighbour or route change
//! in the middle of a stream of forwarded packets is used by the next packets on every CPU,
//! long before the next-hop TTL (here a minute) could have made the old entries stale.
//!
//! The packets go through the daemon's own program, the one pinned and attached to `v0`
//! (BPF_PROG_TEST_RUN on the pinned program, run on each CPU in turn: the cache is per CPU,
//! and a CPU that never cached the old next hop would prove nothing).

mod common;

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use libbpf_rs::libbpf_sys;
use redirector::daemon::{self, Event};
use redirector::datapath;

/// One run of the pinned program on the calling thread's CPU: (verdict, frame out).
fn test_run_pinned(prog: &Path, pkt: &[u8]) -> (i32, Vec<u8>) {
    let handle = libbpf_rs::ProgramHandle::from_pinned_path(prog).expect("pinned program");
    let mut out = vec![0u8; pkt.len() + 512];
    let mut opts = libbpf_sys::bpf_test_run_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _,
        data_in: pkt.as_ptr().cast(),
        data_size_in: pkt.len() as u32,
        data_out: out.as_mut_ptr().cast(),
        data_size_out: out.len() as u32,
        repeat: 1,
        ..Default::default()
    };
    // SAFETY: a valid program fd; data_in/data_out describe buffers of the sizes given, which
    // outlive the call.
    let rc = unsafe { libbpf_sys::bpf_prog_test_run_opts(handle.as_fd().as_raw_fd(), &mut opts) };
    assert_eq!(rc, 0, "bpf_prog_test_run_opts");
    out.truncate(opts.data_size_out as usize);
    (opts.retval as i32, out)
}

fn forward_frame(hop: IpAddr) -> Vec<u8> {
    let inner = |v6: bool| {
        if v6 {
            tcp(CLIENT6.into(), VIP6.into(), 42000, 80, "A", b"data")
        } else {
            tcp(CLIENT4.into(), VIP4.into(), 42000, 80, "A", b"data")
        }
    };
    match hop {
        IpAddr::V4(h) => gue_frame(
            DIRECTOR4.into(),
            SELF4.into(),
            &Hops::V4 {
                next: 0,
                hops: vec![h],
            },
            &inner(false),
        ),
        IpAddr::V6(h) => gue_frame(
            DIRECTOR6.into(),
            SELF6.into(),
            &Hops::V6 {
                next: 0,
                hops: vec![h],
            },
            &inner(true),
        ),
    }
}

fn mac(s: &str) -> [u8; 6] {
    let b: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap())
        .collect();
    b.try_into().unwrap()
}

#[test]
fn neighbour_and_route_changes_mid_stream_are_used_at_once() {
    let tmp = common::TmpDir::with_bpffs("nh");
    let cfg_path = tmp.0.join("redirector.yaml");
    std::fs::write(
        &cfg_path,
        format!(
            "interfaces: [v0]\nallowed_sources: [192.0.2.96/28, '2001:db8:1::100/128']\n\
             nexthop_ttl_ms: 60000\nbpffs_dir: {}\nstate_dir: {}\n",
            tmp.0.join("bpffs").display(),
            tmp.0.join("state").display()
        ),
    )
    .unwrap();
    let ns = with_lab("nh-daemon");
    ns.sysctl("net.ipv4.conf.lo.forwarding", "1");
    ns.sysctl("net.ipv4.conf.all.forwarding", "1");
    ns.sysctl("net.ipv6.conf.all.forwarding", "1");
    let neigh = |hop: &str, lladdr: &str| {
        ns.ip(&[
            "neigh",
            "replace",
            hop,
            "lladdr",
            lladdr,
            "dev",
            "v0",
            "nud",
            "permanent",
        ])
    };
    ns.run(|| {
        let config = redirector::config::Config::load(&cfg_path).unwrap();
        let pin_dir = config.pin_dir();
        let prog = pin_dir.join(datapath::PINNED_PROG);
        let (tx, rx) = mpsc::channel();
        let path = cfg_path.clone();
        let daemon = std::thread::spawn(move || daemon::run(&path, rx));
        // Attached comes after the watcher started.
        let start = Instant::now();
        while datapath::attached_prog_id("v0").ok().flatten().is_none()
            || datapath::attached_prog_id("v0").unwrap() != datapath::pinned_prog_id(&pin_dir)
        {
            assert!(start.elapsed() < Duration::from_secs(10), "daemon attached");
            std::thread::sleep(Duration::from_millis(20));
        }

        let all = cpus();
        // The destination MAC each CPU's forwarded packet leaves with, deduplicated.
        let send = |hop: IpAddr| {
            let pkt = forward_frame(hop);
            let mut seen: Vec<[u8; 6]> = all
                .iter()
                .map(|&c| {
                    pin_to_cpu(c);
                    let (verdict, out) = test_run_pinned(&prog, &pkt);
                    assert_eq!(verdict, TC_ACT_REDIRECT, "{hop} forwarded");
                    out[..6].try_into().unwrap()
                })
                .collect();
            seen.dedup();
            seen
        };
        // Keep sending until every CPU uses `want`; how long that took.
        let until = |hop: IpAddr, want: [u8; 6]| {
            let t = Instant::now();
            loop {
                if send(hop) == [want] {
                    return t.elapsed();
                }
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "{hop}: every CPU uses {want:02x?} (the TTL is a minute)"
                );
            }
        };
        let (h4, h4b, h6): (IpAddr, IpAddr, IpAddr) = (HOP4.into(), HOP4_B.into(), HOP6.into());
        for hop in [h4, h6] {
            assert_eq!(
                send(hop),
                [HOP_MAC],
                "{hop}: cached on every CPU from here on"
            );
        }

        // A neighbour changes its MAC mid-stream.
        neigh(&HOP4.to_string(), "02:00:00:00:ee:03");
        let took4 = until(h4, mac("02:00:00:00:ee:03"));
        neigh(&HOP6.to_string(), "02:00:00:00:ee:06");
        let took6 = until(h6, mac("02:00:00:00:ee:06"));

        // A route sends the hop through a gateway (another neighbour) instead.
        neigh(&HOP4_B.to_string(), "02:00:00:00:ee:04");
        assert_eq!(send(h4b), [mac("02:00:00:00:ee:04")]);
        assert_eq!(send(h4), [mac("02:00:00:00:ee:03")], "cached again");
        ns.ip(&[
            "route",
            "add",
            &format!("{HOP4}/32"),
            "via",
            &HOP4_B.to_string(),
            "dev",
            "v0",
        ]);
        let took_route = until(h4, mac("02:00:00:00:ee:04"));
        eprintln!(
            "used on every CPU after: neighbour v4 {took4:?}, v6 {took6:?}, route {took_route:?}"
        );

        tx.send(Event::Stop).unwrap();
        daemon.join().unwrap().unwrap();
        daemon::detach(&pin_dir, &config.state_dir).unwrap();
    });
}
