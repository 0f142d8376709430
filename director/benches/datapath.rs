//! `cargo bench -p xdplb-director`: per-packet cost of the XDP program and file-save-to-live
//! latency, measured as docs/development/benchmarking.md describes (the method and its pitfall).
//!
//! Per packet, two methods, each beside its own harness floor (an empty XDP program measured
//! the same way):
//! - One syscall per packet: BPF_PROG_TEST_RUN with repeat = 1 on the daemon's program, so
//!   every run starts from the original frame (with repeat > 1 the kernel reruns the
//!   already-encapsulated buffer and an encapsulating program measures its pass path). The
//!   kernel's own per-run duration, median over many syscalls. Nothing of one run overlaps
//!   the next, so each takes its whole latency: the pessimistic figure (what it adds:
//!   docs/development/director-datapath.md, "What the one-syscall method adds").
//! - Repeat 100 000 on the bench-only entry point of bpf/bench/director_bench.bpf.c, which puts
//!   the original frame back after every run; its restore is measured alone and subtracted.
//!   Warm, as a NAPI poll of many packets is. The frame left after the batch is checked to be
//!   the original.
//!
//! The naive repeat = 1,000,000 number is printed too, to show the pitfall, and a yardstick:
//! bpf/bench/bare_forwarder.bpf.c, the least a keyed-hash GUE forwarder does, by both methods.
//!
//! `XDPLB_BENCH_OBJECT=<file.o>` measures another build of the bench object (an experiment:
//! compile bpf/bench/director_bench.bpf.c with other -D flags) by both methods, its plain
//! `xdplb_director` entry point for the first.
//! `XDPLB_BARE_OBJECT=<file.o>` measures another build of the yardstick alone, the same way.
//! `XDPLB_GLB_OBJECT=<file.o>` (not empty) measures GLB Director's XDP program alone, the
//! same way: an object built outside this repository (docs/development/director-datapath.md,
//! "Calibration against GLB Director" says how), its maps filled here for the IPv4 and
//! IPv6-client frames.
//!
//! Reload: the daemon in-process; write backends.yaml (100 backends, 2^16 rows), poll the
//! pinned table header until the new version is live; median over the runs.

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use director::datapath::{Datapath, PinnedView};
use libbpf_rs::{libbpf_sys, MapCore};

const RUNS: usize = 200_000;

/// `r0 = XDP_PASS; exit`: the floor.
fn empty_prog() -> OwnedFd {
    let insns = [
        libbpf_sys::bpf_insn {
            code: 0xb7,
            _bitfield_align_1: [],
            _bitfield_1: libbpf_sys::bpf_insn::new_bitfield_1(0, 0),
            off: 0,
            imm: 2,
        },
        libbpf_sys::bpf_insn {
            code: 0x95,
            _bitfield_align_1: [],
            _bitfield_1: libbpf_sys::bpf_insn::new_bitfield_1(0, 0),
            off: 0,
            imm: 0,
        },
    ];
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            libbpf_sys::BPF_PROG_TYPE_XDP,
            c"empty".as_ptr(),
            c"GPL".as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            std::ptr::null_mut(),
        )
    };
    assert!(fd >= 0, "load empty program: {fd}");
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Kernel-measured ns of one run of `prog` on `frame` (fresh copy each syscall).
fn run_once(prog: i32, frame: &[u8], ifindex: u32, repeat: u32) -> (u32, u32) {
    let (ret, ns, _) = run_batch(prog, frame, ifindex, repeat);
    (ret, ns as u32)
}

/// One syscall per packet, RUNS times: (median, p90, verdict, mean of the fastest 90%). The
/// kernel's timer may read in coarse steps (10 ns on the development VM at the time of writing):
/// the median then moves by whole steps, while the mean of the runs below p90 (a run's start
/// falls anywhere between two ticks, so the steps average out) resolves below one.
fn median_ns(prog: i32, frame: &[u8], ifindex: u32) -> (f64, f64, u32, f64) {
    // Warm up caches and the branch predictor.
    for _ in 0..5000 {
        run_once(prog, frame, ifindex, 1);
    }
    let mut v = Vec::with_capacity(RUNS);
    let mut ret = 0;
    for _ in 0..RUNS {
        let (r, d) = run_once(prog, frame, ifindex, 1);
        ret = r;
        v.push(d);
    }
    v.sort_unstable();
    let low = &v[..RUNS * 9 / 10];
    let mean = low.iter().map(|&d| f64::from(d)).sum::<f64>() / low.len() as f64;
    (v[RUNS / 2] as f64, v[RUNS * 9 / 10] as f64, ret, mean)
}

const BENCH_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/director_bench.bpf.o"));
/// bpf/bench/director_bench.bpf.c: bytes restored after each run.
const BENCH_RESTORE: usize = 64;
const BATCH: u32 = 100_000;
const BATCHES: usize = 31;

/// The other method of docs/development/benchmarking.md: repeat > 1 on a bench-only entry point that puts the
/// original frame back after every run (bpf/bench/director_bench.bpf.c). Warm caches and
/// branch predictors, as in a NAPI poll of many packets; the restore's own cost is measured
/// by an entry point that only restores, and subtracted.
fn restored(pin: &Path, empty: i32, ifindex: u32, frames: &[(&str, &Vec<u8>, u32)]) {
    let other = std::env::var("XDPLB_BENCH_OBJECT")
        .ok()
        .map(|p| std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}")));
    let mut open = libbpf_rs::ObjectBuilder::default()
        .open_memory(other.as_deref().unwrap_or(BENCH_OBJECT))
        .unwrap();
    for mut m in open.maps_mut() {
        let path = pin.join(m.name().to_str().unwrap());
        if path.exists() {
            m.reuse_pinned_map(&path).unwrap();
        }
    }
    let obj = open.load().unwrap();
    let prog = |name: &str| {
        obj.progs()
            .find(|p| p.name() == name)
            .unwrap_or_else(|| panic!("bench object has {name}"))
            .as_fd()
            .as_raw_fd()
    };
    let (bench, restore) = (prog("xdplb_director_bench"), prog("xdplb_bench_restore"));
    let map = obj.maps().find(|m| m.name() == "bench_frame").unwrap();
    if other.is_some() {
        // An experiment: its plain entry point by the other method too, so both can be
        // compared with the main numbers.
        println!("per packet, one syscall per packet (repeat 1), {RUNS} runs, XDPLB_BENCH_OBJECT:");
        let (floor, _, _, floor_mean) = median_ns(empty, frames[0].1, ifindex);
        for (name, frame, want) in frames {
            let (m, _, ret, mean) = median_ns(prog("xdplb_director"), frame, ifindex);
            assert_eq!(ret, *want, "{name}");
            println!(
                "  {name:<34} median {m:>5.0} ns  (floor {floor:.0} ns, program alone ~{:.0} ns)  mean<p90 {mean:.1} ns (floor {floor_mean:.1}, over it {:.1})",
                m - floor,
                mean - floor_mean
            );
        }
    }
    let per_run = |fd: i32, frame: &[u8], want: u32| restored_ns(&map, fd, frame, ifindex, want);
    let v4 = frames[0].1;
    let floor = per_run(empty, v4, XDP_PASS);
    let restore_ns = per_run(restore, v4, XDP_PASS) - floor;
    println!("per packet, BPF_PROG_TEST_RUN, repeat {BATCH} on a bench entry point that restores the frame, median of {BATCHES} batches:");
    println!(
        "  {:<34} {floor:>6.1} ns per run",
        "empty XDP program (harness floor)"
    );
    println!(
        "  {:<34} {restore_ns:>6.1} ns (subtracted below)",
        "restoring the frame"
    );
    for (name, frame, want) in frames {
        let total = per_run(bench, frame, *want) - restore_ns;
        println!(
            "  {name:<34} {total:>6.1} ns  (floor {floor:.1} ns, program alone ~{:.1} ns)",
            total - floor
        );
    }
}

/// Median ns per run of `fd`, an entry point that restores the frame from `frame_map`
/// (bpf/bench/restore.h), over BATCHES batches of BATCH runs; the frame left after each batch
/// must be the original.
fn restored_ns(frame_map: &impl MapCore, fd: i32, frame: &[u8], ifindex: u32, want: u32) -> f64 {
    let mut value = vec![0u8; 8 + BENCH_RESTORE];
    value[0..4].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    value[8..].copy_from_slice(&frame[..BENCH_RESTORE]);
    frame_map
        .update(&0u32.to_ne_bytes(), &value, libbpf_rs::MapFlags::ANY)
        .unwrap();
    let mut v: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let (ret, ns, out) = run_batch(fd, frame, ifindex, BATCH);
            assert_eq!(ret, want, "verdict");
            // After BATCH runs the buffer must still be the original frame: otherwise the
            // runs after the first measured something else.
            assert_eq!(out, frame, "frame restored after every run");
            ns
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[BATCHES / 2]
}

const BARE_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bare_forwarder.bpf.o"));

/// The yardstick (bpf/bench/bare_forwarder.bpf.c): a bare keyed-hash GUE forwarder, by both
/// methods, for the same IPv4 frame; its output is checked to be GUE to one of its backends.
fn bare(empty: i32, ifindex: u32, v4: &[u8]) {
    let other = std::env::var("XDPLB_BARE_OBJECT")
        .ok()
        .map(|p| std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}")));
    let obj = libbpf_rs::ObjectBuilder::default()
        .open_memory(other.as_deref().unwrap_or(BARE_OBJECT))
        .unwrap()
        .load()
        .unwrap();
    let map = |name: &str| obj.maps().find(|m| m.name() == name).unwrap();
    let prog = |name: &str| {
        obj.progs()
            .find(|p| p.name() == name)
            .unwrap()
            .as_fd()
            .as_raw_fd()
    };
    // struct bare_bind: k0, k1, vip, port, pad (the director's key and VIP)
    let vip = [10u8, 100, 0, 1];
    let key: [u8; 16] = u128::from_str_radix(KEY, 16).unwrap().to_be_bytes();
    let mut bind = Vec::from(key);
    bind.extend_from_slice(&vip);
    bind.extend_from_slice(&80u16.to_be_bytes());
    bind.extend_from_slice(&[0, 0]);
    let slot = u32::from_ne_bytes(vip).wrapping_mul(0x9e37_79b1) >> 20;
    map("bare_binds")
        .update(&slot.to_ne_bytes(), &bind, libbpf_rs::MapFlags::ANY)
        .unwrap();
    let rows = map("bare_rows");
    for r in 0..65536u32 {
        rows.update(
            &r.to_ne_bytes(),
            &(r & 1).to_ne_bytes(),
            libbpf_rs::MapFlags::ANY,
        )
        .unwrap();
    }
    for b in 0..2u8 {
        // struct bare_backend: addr, src, dmac, smac
        let addr = [10, 1, 0, 11 + b];
        let mut v = Vec::from(addr);
        v.extend_from_slice(&[10, 1, 0, 1]);
        v.extend_from_slice(&backend_mac(std::net::IpAddr::from(addr)));
        v.extend_from_slice(&DIR_MAC);
        map("bare_backends")
            .update(&u32::from(b).to_ne_bytes(), &v, libbpf_rs::MapFlags::ANY)
            .unwrap();
    }
    let fwd = prog("bare_forwarder");
    let (ret, _, out) = run_batch(fwd, v4, ifindex, 1);
    assert_eq!(ret, XDP_TX, "bare forwarder verdict");
    assert_eq!(
        &out[14 + 16..14 + 19],
        &[10, 1, 0],
        "outer destination a backend"
    );
    assert_eq!(&out[54..], &v4[14..], "inner packet intact");
    let (floor, _, _, floor_mean) = median_ns(empty, v4, ifindex);
    let (m, _, _, mean) = median_ns(fwd, v4, ifindex);
    let frame_map = map("bench_frame");
    let rfloor = restored_ns(&frame_map, empty, v4, ifindex, XDP_PASS);
    let restore = restored_ns(
        &frame_map,
        prog("bare_bench_restore"),
        v4,
        ifindex,
        XDP_PASS,
    ) - rfloor;
    let r = restored_ns(
        &frame_map,
        prog("bare_forwarder_bench"),
        v4,
        ifindex,
        XDP_TX,
    ) - restore;
    println!("yardstick: a bare keyed-hash GUE forwarder (bpf/bench/bare_forwarder.bpf.c), same IPv4 frame:");
    println!("  one syscall per packet             median {m:>5.0} ns  (floor {floor:.0} ns, program alone ~{:.0} ns)  mean<p90 {mean:.1} ns (floor {floor_mean:.1}, over it {:.1})", m - floor, mean - floor_mean);
    println!("  restored frame                      {r:>6.1} ns  (floor {rfloor:.1} ns, program alone ~{:.1} ns)", r - rfloor);
}

/// GLB Director's XDP program (`XDPLB_GLB_OBJECT`, built outside this repository), by both
/// methods, on the director's IPv4 and IPv6-in-IPv4 frames and the pass frame, so its figures
/// sit beside the director's from the same harness. Its maps, in GLB's layout: `config_bits`
/// (0: gateway MAC, 1: IPv4 source, 3: hash fields, 4: second-chance hash fields, none),
/// `glb_binds` (IPv4, IPv6, protocol, port: the table), `glb_tables` (an inner array of 2^16
/// rows of two IPv4 hops), `glb_table_secrets` (the SipHash key). Entry points: its own
/// `xdp_glb_director`, and `glb_bench` / `glb_bench_restore` around it with
/// bpf/bench/restore.h, as bpf/bench/director_bench.bpf.c does for the director.
fn glb(path: &str, empty: i32, ifindex: u32, frames: &[(&str, &Vec<u8>, u32)]) {
    use libbpf_rs::{MapFlags, MapHandle, MapType};
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let obj = libbpf_rs::ObjectBuilder::default()
        .open_memory(&bytes)
        .unwrap()
        .load()
        .unwrap();
    let map = |name: &str| {
        obj.maps()
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("GLB object has map {name}"))
    };
    let prog = |name: &str| {
        obj.progs()
            .find(|p| p.name() == name)
            .unwrap_or_else(|| panic!("GLB object has {name}"))
            .as_fd()
            .as_raw_fd()
    };
    let cfg = map("config_bits");
    let bit = |i: u32, v: &[u8]| {
        let mut b = [0u8; 6];
        b[..v.len()].copy_from_slice(v);
        cfg.update(&i.to_ne_bytes(), &b, MapFlags::ANY).unwrap();
    };
    bit(0, &backend_mac("10.1.0.11".parse().unwrap()));
    bit(1, &[10, 1, 0, 1]);
    bit(3, &[1, 1, 1, 1]); // src_addr, dst_addr, src_port, dst_port: all four, as the director
    bit(4, &[]);
    // struct glb_bind (packed): ipv4, ipv6, proto (host order), port (network order)
    let binds = map("glb_binds");
    let bind = |v4: [u8; 4], v6: [u8; 16], port: u16| {
        let mut k = Vec::from(v4);
        k.extend_from_slice(&v6);
        k.extend_from_slice(&6u16.to_ne_bytes());
        k.extend_from_slice(&port.to_be_bytes());
        binds
            .update(&k, &0u32.to_ne_bytes(), MapFlags::ANY)
            .unwrap();
    };
    bind([10, 100, 0, 1], [0; 16], 80);
    let v6: std::net::Ipv6Addr = "fd00:100::2".parse().unwrap();
    bind([0; 4], v6.octets(), 443);
    let key: [u8; 16] = u128::from_str_radix(KEY, 16).unwrap().to_be_bytes();
    map("glb_table_secrets")
        .update(&0u32.to_ne_bytes(), &key, MapFlags::ANY)
        .unwrap();
    let rows = MapHandle::create(
        MapType::Array,
        Some("glb_rows"),
        4,
        8,
        65536,
        &libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        },
    )
    .unwrap();
    for r in 0..65536u32 {
        let (a, b) = if r & 1 == 0 { (11u8, 12u8) } else { (12, 11) };
        rows.update(&r.to_ne_bytes(), &[10, 1, 0, a, 10, 1, 0, b], MapFlags::ANY)
            .unwrap();
    }
    map("glb_tables")
        .update(
            &0u32.to_ne_bytes(),
            &(rows.as_fd().as_raw_fd() as u32).to_ne_bytes(),
            MapFlags::ANY,
        )
        .unwrap();
    let glb = prog("xdp_glb_director");
    for (name, frame, want) in frames {
        let (ret, _, out) = run_batch(glb, frame, ifindex, 1);
        assert_eq!(ret, *want, "GLB: {name}");
        if *want == XDP_TX {
            assert_eq!(
                &out[14 + 16..14 + 19],
                &[10, 1, 0],
                "GLB outer destination a backend"
            );
        }
    }
    println!("GLB per packet, one syscall per packet (repeat 1), {RUNS} runs:");
    let (floor, _, _, floor_mean) = median_ns(empty, frames[0].1, ifindex);
    for (name, frame, _) in frames {
        let (m, _, _, mean) = median_ns(glb, frame, ifindex);
        println!(
            "  {name:<34} median {m:>5.0} ns  (floor {floor:.0} ns, program alone ~{:.0} ns)  mean<p90 {mean:.1} ns (floor {floor_mean:.1}, over it {:.1})",
            m - floor,
            mean - floor_mean
        );
    }
    let frame_map = map("bench_frame");
    let per_run =
        |fd: i32, frame: &[u8], want: u32| restored_ns(&frame_map, fd, frame, ifindex, want);
    let v4 = frames[0].1;
    let rfloor = per_run(empty, v4, XDP_PASS);
    let restore = per_run(prog("glb_bench_restore"), v4, XDP_PASS) - rfloor;
    println!("GLB per packet, BPF_PROG_TEST_RUN, repeat {BATCH} on a bench entry point that restores the frame, median of {BATCHES} batches:");
    println!(
        "  {:<34} {rfloor:>6.1} ns per run",
        "empty XDP program (harness floor)"
    );
    println!(
        "  {:<34} {restore:>6.1} ns (subtracted below)",
        "restoring the frame"
    );
    for (name, frame, want) in frames {
        let total = per_run(prog("glb_bench"), frame, *want) - restore;
        println!(
            "  {name:<34} {total:>6.1} ns  (floor {rfloor:.1} ns, program alone ~{:.1} ns)",
            total - rfloor
        );
    }
}

/// One BPF_PROG_TEST_RUN of `repeat` runs (fresh copy of `frame` in): verdict, kernel-timed ns
/// per run, output frame.
fn run_batch(prog: i32, frame: &[u8], ifindex: u32, repeat: u32) -> (u32, f64, Vec<u8>) {
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let mut out = vec![0u8; 4096];
    let mut opts: libbpf_sys::bpf_test_run_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _;
    opts.data_in = frame.as_ptr().cast();
    opts.data_size_in = frame.len() as u32;
    opts.data_out = out.as_mut_ptr().cast();
    opts.data_size_out = out.len() as u32;
    opts.ctx_in = ctx.as_ptr().cast();
    opts.ctx_size_in = ctx.len() as u32;
    opts.repeat = repeat as i32;
    // The kernel's figure: whole ns per run, its timer around the runs only. (The wall clock
    // is no use here: on this VM it adds ~150 ns per run spent outside that timer.)
    let rc = unsafe { libbpf_sys::bpf_prog_test_run_opts(prog, &mut opts) };
    assert_eq!(rc, 0, "test run");
    out.truncate(opts.data_size_out as usize);
    (opts.retval, f64::from(opts.duration), out)
}

fn prog_fd(pin_dir: &Path) -> OwnedFd {
    let p = std::ffi::CString::new(pin_dir.join("prog").to_str().unwrap()).unwrap();
    let fd = unsafe { libbpf_sys::bpf_obj_get(p.as_ptr()) };
    assert!(fd >= 0);
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn packets(lab: &Lab) {
    let pin = lab.fs.pin_dir();
    let dp0 = lab.dp0;
    lab.ns.run(move || {
        let dp = Datapath::open(&pin).unwrap();
        dp.set_config(&settings()).unwrap();
        let yaml = format!(
            "services:\n  - name: v4\n    hash_key: {KEY}\n    seed: {SEED}\n    binds:\n      - {{ vip: 10.100.0.1, proto: tcp, port: 80 }}\n    backends:\n      - {{ name: a, address: 10.1.0.11 }}\n      - {{ name: b, address: 10.1.0.12 }}\n      - {{ name: c, address: 10.1.0.13 }}\n  - name: v6\n    hash_key: {KEY}\n    seed: {SEED}\n    binds:\n      - {{ vip: \"fd00:100::1\", proto: tcp, port: 443 }}\n    backends:\n      - {{ name: a, address: \"fd00:1::31\" }}\n      - {{ name: b, address: \"fd00:1::32\" }}\n  - name: v6v4\n    hash_key: {KEY}\n    seed: {SEED}\n    binds:\n      - {{ vip: \"fd00:100::2\", proto: tcp, port: 443 }}\n    backends:\n      - {{ name: a, address: 10.1.0.11 }}\n      - {{ name: b, address: 10.1.0.12 }}\n  - name: v4v6\n    hash_key: {KEY}\n    seed: {SEED}\n    binds:\n      - {{ vip: 10.100.0.2, proto: tcp, port: 80 }}\n    backends:\n      - {{ name: a, address: \"fd00:1::31\" }}\n      - {{ name: b, address: \"fd00:1::32\" }}\n"
        );
        install(&dp, &yaml);
        let prog = prog_fd(&pin);
        let empty = empty_prog();
        let v4 = tcp_packet("192.0.2.7".parse().unwrap(), "10.100.0.1".parse().unwrap(), 40000, 80, &[0u8; 10]);
        let v6 = tcp_packet("2001:db8::7".parse().unwrap(), "fd00:100::1".parse().unwrap(), 40000, 443, &[0u8; 10]);
        let pass = tcp_packet("192.0.2.7".parse().unwrap(), "10.1.0.1".parse().unwrap(), 40000, 22, &[0u8; 10]);
        let v6v4 = tcp_packet("2001:db8::7".parse().unwrap(), "fd00:100::2".parse().unwrap(), 40000, 443, &[0u8; 10]);
        let v4v6 = tcp_packet("192.0.2.7".parse().unwrap(), "10.100.0.2".parse().unwrap(), 40000, 80, &[0u8; 10]);
        // IPv4 first: the floors are measured with its frame.
        let frames = [
            ("IPv4 in IPv4 (XDP_TX)", &v4, XDP_TX),
            ("IPv6 in IPv6 (XDP_TX)", &v6, XDP_TX),
            ("IPv6 in IPv4 (XDP_TX)", &v6v4, XDP_TX),
            ("IPv4 in IPv6 (XDP_TX)", &v4v6, XDP_TX),
            ("non-VIP pass (XDP_PASS)", &pass, XDP_PASS),
        ];
        // Another build of the yardstick (an experiment): only the yardstick.
        if std::env::var_os("XDPLB_BARE_OBJECT").is_some() {
            bare(empty.as_raw_fd(), dp0, &v4);
            return;
        }
        // GLB Director's program (a calibration): only it.
        if let Some(path) = std::env::var("XDPLB_GLB_OBJECT").ok().filter(|p| !p.is_empty()) {
            let glb_frames = [frames[0], frames[2], frames[4]];
            glb(&path, empty.as_raw_fd(), dp0, &glb_frames);
            return;
        }
        // Another build of the bench object (an experiment): only the method that loads it.
        if std::env::var_os("XDPLB_BENCH_OBJECT").is_some() {
            restored(&pin, empty.as_raw_fd(), dp0, &frames);
            return;
        }
        println!("per packet, BPF_PROG_TEST_RUN, one syscall per packet (repeat 1), kernel-timed, {RUNS} runs:");
        let (floor, floor90, _, floor_mean) = median_ns(empty.as_raw_fd(), &v4, dp0);
        println!("  {:<34} median {:>5.0} ns  p90 {:>5.0} ns  mean<p90 {:.1} ns", "empty XDP program (harness floor)", floor, floor90, floor_mean);
        for (name, frame, want) in frames {
            let (m, p90, ret, mean) = median_ns(prog.as_raw_fd(), frame, dp0);
            assert_eq!(ret, want, "{name}");
            println!("  {name:<34} median {m:>5.0} ns  p90 {p90:>5.0} ns  (floor {floor:.0} ns, program alone ~{:.0} ns)  mean<p90 {mean:.1} ns (over the floor {:.1})", m - floor, mean - floor_mean);
        }
        restored(&pin, empty.as_raw_fd(), dp0, &frames);
        bare(empty.as_raw_fd(), dp0, &v4);
        let (_, naive) = run_once(prog.as_raw_fd(), &v4, dp0, 1_000_000);
        let (_, naive_empty) = run_once(empty.as_raw_fd(), &v4, dp0, 1_000_000);
        println!("  pitfall: IPv4 with repeat 1000000 on one buffer reports {naive} ns (empty: {naive_empty} ns): after the first run it measures the pass path of an encapsulated frame");
    });
}

fn reload(lab: &Lab) {
    let dir = PathBuf::from(format!("/run/{}", unique("xdplb-bench-")));
    std::fs::create_dir_all(&dir).unwrap();
    let text = |drained: usize| hundred_backends("big", drained);
    let path = dir.join("backends.yaml");
    std::fs::write(&path, text(0)).unwrap();
    // Pure costs first: tablegen build and the kernel swap.
    let t = Instant::now();
    let loaded = director::source::build(&path, &text(1)).unwrap();
    let build = t.elapsed();
    let yaml = format!(
        "interfaces: []\nencap_source_v4: 10.1.0.1\nbpffs_dir: {}\nbackends: {}\nstate_dir: {}\nreload_debounce_ms: 2\n",
        lab.fs.root.display(),
        path.display(),
        dir.display()
    );
    let cfg = director::DirectorConfig::parse(&dir.join("director.yaml"), &yaml).unwrap();
    let pin = cfg.pin_dir();
    let control = director::Control::new();
    let handle = control.handle();
    let cfg2 = cfg.clone();
    let d = std::thread::spawn(move || director::run(cfg2, control));
    let v0 = director::source::build(&path, &text(0)).unwrap().tables[0].version;
    let t0 = Instant::now();
    while PinnedView::open(&pin)
        .ok()
        .and_then(|p| p.table_hdr(0))
        .map(|h| h.version)
        != Some(v0)
    {
        assert!(t0.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(1));
    }
    let view = PinnedView::open(&pin).unwrap();
    let live = |v: u64| view.table_hdr(0).map(|h| h.version) == Some(v);
    let snap = director::tables::snapshot(
        &loaded.config,
        &loaded.tables,
        &Default::default(),
        true,
        false,
    )
    .unwrap();
    let dp = Datapath::open(&cfg.pin_dir()).unwrap();
    let mut swaps = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        dp.install_service(&snap.services[0]).unwrap();
        swaps.push(t.elapsed());
    }
    swaps.sort();
    let mut lat = Vec::new();
    let mut took = Vec::new();
    for i in 0..21 {
        let drained = 1 + i % 50;
        let want = director::source::build(&path, &text(drained))
            .unwrap()
            .tables[0]
            .version;
        let t = Instant::now();
        if std::env::var_os("RUST_LOG").is_some() {
            tracing::info!("bench: writing backends.yaml");
        }
        std::fs::write(&path, text(drained)).unwrap();
        while !live(want) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "reload did not go live"
            );
            // Poll without spinning: on 2 CPUs a spinning poller slows the daemon it measures.
            std::thread::sleep(Duration::from_micros(200));
        }
        lat.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(50));
        if let Some(st) = director::state::State::read(&cfg.state_file()) {
            took.push(st.last_reload.map(|r| r.took_us).unwrap_or(0));
        }
    }
    lat.sort();
    handle.shutdown();
    d.join().unwrap().unwrap();
    println!("reload, 100 backends, 65536 rows, debounce 2 ms:");
    println!("  tablegen parse + build          {build:?}");
    println!(
        "  kernel swap (new inner map)     median {:?}  (the syscall returns after an RCU grace period; the table is live before it)",
        swaps[swaps.len() / 2]
    );
    took.sort();
    println!(
        "  daemon: read + build + install  median {} us",
        took[took.len() / 2]
    );
    println!(
        "  file save -> new table live     median {:?}  min {:?}  max {:?}",
        lat[lat.len() / 2],
        lat[0],
        lat[lat.len() - 1]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this binary with no flag:
    // then only check that it works, quickly.
    let quick = !std::env::args().any(|a| a == "--bench");
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let lab = Lab::new();
    if quick {
        println!("bench binary built; run `cargo bench -p xdplb-director` for figures");
        return;
    }
    if std::env::var_os("XDPLB_BENCH_SKIP_PACKETS").is_none() {
        packets(&lab);
    }
    if std::env::var_os("XDPLB_BENCH_SKIP_RELOAD").is_none() {
        let lab2 = Lab::new();
        reload(&lab2);
    }
}
