//! Per-packet cost of the redirector, measured as docs/development/benchmarking.md describes.
//!
//! BPF_PROG_TEST_RUN with `repeat > 1` runs the program again on the *same* skb: after the first
//! run a decapsulated packet is no longer GUE and a forwarded one has its index advanced, so a
//! large repeat would measure the pass path (tests/datapath.rs
//! `test_run_repeat_reuses_the_rewritten_packet` shows it). So: one syscall per packet
//! (`repeat = 1`), the kernel's own timing of that one run, median over many runs, and the same
//! for an empty tc program (`harness_floor`) as the floor, reported beside every figure.
//!
//! Run as root: `cargo bench -p xdplb-redirector`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::mem::MaybeUninit;
use std::net::IpAddr;

use common::*;
use redirector::skel::RedirectorSkel;

/// Runs per case under `cargo bench`; `cargo test --all-targets` runs this binary too, without
/// `--bench`, and then only checks that every case still works.
fn runs() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        20_000
    } else {
        200
    }
}

struct Stats {
    median: u64,
    p10: u64,
    p90: u64,
}

fn measure(prog: &libbpf_rs::ProgramMut<'_>, pkt: &[u8], want: i32) -> Stats {
    stats(samples(prog, pkt, want, runs()))
}

fn stats(mut ns: Vec<u64>) -> Stats {
    ns.sort_unstable();
    Stats {
        median: ns[ns.len() / 2],
        p10: ns[ns.len() / 10],
        p90: ns[ns.len() * 9 / 10],
    }
}

/// Rounds of [`alternate`]: every case runs in each, in turn.
const ROUNDS: usize = 8;

/// Measure `cases` in turn, [`ROUNDS`] times `runs() / ROUNDS` packets each, so that the
/// machine's load changing during the bench hits every case alike; the first case is the
/// floor of the others. Prints each case's pooled figures and the range of its per-round
/// medians above the floor of the same round.
fn alternate(cases: &[(&str, &libbpf_rs::ProgramMut<'_>, &[u8], i32)]) {
    let per_round = (runs() / ROUNDS).max(20);
    let mut all: Vec<Vec<u64>> = vec![Vec::new(); cases.len()];
    let mut above: Vec<Vec<i64>> = vec![Vec::new(); cases.len()];
    for _ in 0..ROUNDS {
        let mut medians = Vec::with_capacity(cases.len());
        for (i, (_, prog, pkt, want)) in cases.iter().enumerate() {
            let ns = samples(prog, pkt, *want, per_round);
            medians.push(stats(ns.clone()).median as i64);
            all[i].extend(ns);
        }
        for (i, m) in medians.iter().enumerate() {
            above[i].push(m - medians[0]);
        }
    }
    let floor = stats(all[0].clone()).median as i64;
    for (i, (name, ..)) in cases.iter().enumerate() {
        let s = stats(std::mem::take(&mut all[i]));
        let (lo, hi) = (
            above[i].iter().min().unwrap(),
            above[i].iter().max().unwrap(),
        );
        let diff = if i == 0 {
            "-".to_string()
        } else {
            format!("{} [{lo}..{hi}]", s.median as i64 - floor)
        };
        println!(
            "{:<44} {:>8} {:>8} {:>8} {:>12}",
            name, s.p10, s.median, s.p90, diff
        );
    }
}

/// `runs` kernel-timed runs of `prog` on `pkt` (after a warm-up of a twentieth), unsorted.
fn samples(prog: &libbpf_rs::ProgramMut<'_>, pkt: &[u8], want: i32, runs: usize) -> Vec<u64> {
    let mut out = vec![0u8; pkt.len() + 512];
    let warmup = runs / 20;
    let mut ns = Vec::with_capacity(runs);
    for i in 0..runs + warmup {
        let input = libbpf_rs::ProgramInput {
            data_in: Some(pkt),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        };
        let o = prog.test_run(input).expect("test_run");
        assert_eq!(o.return_value as i32, want);
        if i >= warmup {
            // the first runs warm the caches and branch predictors
            ns.push(o.duration.as_nanos() as u64);
        }
    }
    ns
}

fn main() {
    let ns = with_lab("bench");
    ns.run(|| {
        let mut obj = MaybeUninit::uninit();
        let skel: RedirectorSkel<'_> = load(&mut obj);
        // The same program without the next-hop cache: bpf_fib_lookup for every packet.
        let mut obj_uncached = MaybeUninit::uninit();
        let uncached: RedirectorSkel<'_> = load_with_ttl(&mut obj_uncached, 0);
        let v4 = |a| IpAddr::V4(a);
        let v6 = |a| IpAddr::V6(a);
        let (_l, _c, _s) = connect(v4(VIP4), 80, v4(CLIENT4), 41000);
        let hops4 = Hops::V4 {
            next: 0,
            hops: vec![HOP4],
        };
        let hops6 = Hops::V6 {
            next: 0,
            hops: vec![HOP6],
        };
        let syn = gue_frame(
            v4(DIRECTOR4),
            v4(SELF4),
            &hops4,
            &tcp(v4(CLIENT4), v4(VIP4), 40000, 80, "S", b""),
        );
        let established = gue_frame(
            v4(DIRECTOR4),
            v4(SELF4),
            &hops4,
            &tcp(v4(CLIENT4), v4(VIP4), 41000, 80, "A", &[0u8; 64]),
        );
        let forward = gue_frame(
            v4(DIRECTOR4),
            v4(SELF4),
            &hops4,
            &tcp(v4(CLIENT4), v4(VIP4), 41001, 80, "A", &[0u8; 64]),
        );
        let forward_nolisten = gue_frame(
            v4(DIRECTOR4),
            v4(SELF4),
            &hops4,
            &tcp(v4(CLIENT4), v4(VIP4), 41001, 81, "A", &[0u8; 64]),
        );
        let forward6 = gue_frame(
            v6(DIRECTOR6),
            v6(SELF6),
            &hops6,
            &tcp(v6(CLIENT6), v6(VIP6), 41001, 80, "A", &[0u8; 64]),
        );
        // UDP second chance: a QUIC-like server, a listener and a connected socket per client.
        let _ul4 = udp_socket((v4(VIP4), 443).into(), None);
        let _uc4 = udp_socket((v4(VIP4), 443).into(), Some((v4(CLIENT4), 5000).into()));
        let _ul6 = udp_socket((v6(VIP6), 443).into(), None);
        let _uc6 = udp_socket((v6(VIP6), 443).into(), Some((v6(CLIENT6), 5000).into()));
        let udp_plain = gue_frame(
            v4(DIRECTOR4),
            v4(SELF4),
            &hops4,
            &udp(v4(CLIENT4), v4(VIP4), 5000, 443, &[0u8; 64]),
        );
        let udp_sc4 = gue_frame_with(
            v4(DIRECTOR4),
            v4(SELF4),
            &hops4,
            &udp(v4(CLIENT4), v4(VIP4), 5000, 443, &[0u8; 64]),
            1,
        );
        let udp_sc6 = gue_frame_with(
            v6(DIRECTOR6),
            v6(SELF6),
            &hops6,
            &udp(v6(CLIENT6), v6(VIP6), 5000, 443, &[0u8; 64]),
            1,
        );
        let udp_sc4_fwd = gue_frame_with(
            v4(DIRECTOR4),
            v4(SELF4),
            &hops4,
            &udp(v4(CLIENT4), v4(VIP4), 5001, 443, &[0u8; 64]),
            1,
        );
        let mut non_gue = Vec::new();
        etherparse::PacketBuilder::ethernet2(DIRECTOR_MAC, LO_MAC)
            .ipv4(CLIENT4.octets(), SELF4.octets(), 64)
            .tcp(40000, 22, 1, 100)
            .ack(1)
            .write(&mut non_gue, &[0u8; 64])
            .unwrap();

        let floor = measure(&skel.progs.harness_floor, &established, TC_ACT_OK);
        println!(
            "redirector per-packet cost: BPF_PROG_TEST_RUN, repeat=1, {} runs each, kernel-timed",
            runs()
        );
        println!(
            "{:<44} {:>8} {:>8} {:>8} {:>12}",
            "case", "p10 ns", "median", "p90", "median-floor"
        );
        println!(
            "{:<44} {:>8} {:>8} {:>8} {:>12}",
            "harness floor (empty tc program)", floor.p10, floor.median, floor.p90, "-"
        );
        let prog = &skel.progs.redirector;
        let report = |name: &str, pkt: &[u8], want: i32| {
            let s = measure(prog, pkt, want);
            println!(
                "{:<44} {:>8} {:>8} {:>8} {:>12}",
                name,
                s.p10,
                s.median,
                s.p90,
                s.median as i64 - floor.median as i64
            );
        };
        report("non-GUE pass", &non_gue, TC_ACT_OK);
        report("local: SYN, decap v4-in-v4", &syn, TC_ACT_OK);
        report(
            "local: established socket lookup + decap",
            &established,
            TC_ACT_OK,
        );
        report("local: UDP, no second chance, decap", &udp_plain, TC_ACT_OK);
        report(
            "local: UDP connected socket v4 + decap",
            &udp_sc4,
            TC_ACT_OK,
        );
        report(
            "local: UDP connected socket v6 + decap",
            &udp_sc6,
            TC_ACT_OK,
        );
        report(
            "forward: UDP listener only v4, fwd off",
            &udp_sc4_fwd,
            TC_ACT_REDIRECT,
        );
        // Forwarding off (the default on a backend): bpf_fib_lookup stops at its forwarding
        // check and the packet leaves through bpf_redirect_neigh, whose route and neighbour
        // lookup run after the program returns, outside this measurement.
        report(
            "forward v4, ip_forward off (redirect_neigh)",
            &forward,
            TC_ACT_REDIRECT,
        );
        report(
            "forward v4, no listener, ip_forward off",
            &forward_nolisten,
            TC_ACT_REDIRECT,
        );
        report(
            "forward v6, forwarding off (redirect_neigh)",
            &forward6,
            TC_ACT_REDIRECT,
        );
        // Forwarding on: the next hop from the per-CPU cache (filled by the warm-up's first
        // packet), against the full FIB lookup (route + neighbour) inside the program for
        // every packet, in turn with the floor, so the load hits all alike.
        for key in [
            "net/ipv4/conf/lo/forwarding",
            "net/ipv4/conf/all/forwarding",
            "net/ipv6/conf/all/forwarding",
        ] {
            std::fs::write(format!("/proc/sys/{key}"), "1").unwrap();
        }
        println!(
            "forwarding on, {ROUNDS} rounds in turn (median-floor [range of the rounds' medians]):"
        );
        alternate(&[
            (
                "harness floor (empty tc program)",
                &skel.progs.harness_floor,
                &established,
                TC_ACT_OK,
            ),
            (
                "forward v4, fwd on, next hop cached",
                prog,
                &forward,
                TC_ACT_REDIRECT,
            ),
            (
                "forward v4, fwd on, no cache (fib_lookup)",
                &uncached.progs.redirector,
                &forward,
                TC_ACT_REDIRECT,
            ),
            (
                "forward v6, fwd on, next hop cached",
                prog,
                &forward6,
                TC_ACT_REDIRECT,
            ),
            (
                "forward v6, fwd on, no cache (fib_lookup)",
                &uncached.progs.redirector,
                &forward6,
                TC_ACT_REDIRECT,
            ),
            (
                "local: UDP connected socket v4 + decap",
                prog,
                &udp_sc4,
                TC_ACT_OK,
            ),
            (
                "local: UDP connected socket v6 + decap",
                prog,
                &udp_sc6,
                TC_ACT_OK,
            ),
            (
                "local: established socket lookup + decap",
                prog,
                &established,
                TC_ACT_OK,
            ),
        ]);
    });
}
