//! Table benchmarks: balance, movement, build and change times (run with
//! `cargo bench -p xdplb-tablegen`). Plain `Instant` timing, median of repeated runs; numbers
//! are printed, never asserted (benchmarks are not tests).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use tablegen::config::{Backend, Bind, Proto, Service, State};
use tablegen::hash::{key_halves, siphash13, HashFields};
use tablegen::table::{build, Planner, Table};

fn service(n: usize, bits: u8, hops: u8) -> Service {
    Service {
        name: "bench".into(),
        hash_key: [1; 16],
        seed: *b"xdplb-bench-seed",
        table_bits: bits,
        hops,
        hash_fields: HashFields::ALL,
        binds: vec![Bind {
            vip: "10.100.0.1".parse().unwrap(),
            proto: Proto::Tcp,
            port_first: 80,
            port_last: 80,
        }],
        backends: (0..n)
            .map(|i| Backend {
                name: format!("backend-{i}"),
                address: if n > 60000 {
                    IpAddr::V6(Ipv6Addr::from(0xfd00_u128 << 112 | i as u128))
                } else {
                    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32))
                },
                weight: 1,
                state: State::Active,
            })
            .collect(),
        health: None,
        udp_second_chance: false,
    }
}

/// This thread's CPU time. On a shared 2-vCPU machine wall time includes time spent preempted
/// by other jobs; thread CPU time does not (caches are still shared).
fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One measured run: wall time and on-CPU time.
fn timed<R>(f: impl FnOnce() -> R) -> (Duration, Duration) {
    let (c, t) = (cpu_time(), Instant::now());
    black_box(f());
    (t.elapsed(), cpu_time() - c)
}

/// Medians of wall and on-CPU time over `runs` runs, and the smallest on-CPU time.
struct Stats {
    wall: Duration,
    cpu: Duration,
    cpu_min: Duration,
}

fn stats(mut runs: Vec<(Duration, Duration)>) -> Stats {
    let n = runs.len();
    runs.sort_by_key(|r| r.0);
    let wall = runs[n / 2].0;
    runs.sort_by_key(|r| r.1);
    Stats {
        wall,
        cpu: runs[n / 2].1,
        cpu_min: runs[0].1,
    }
}

fn median<F: FnMut() -> R, R>(runs: usize, mut f: F) -> Stats {
    stats((0..runs).map(|_| timed(&mut f)).collect())
}

fn ms(s: Stats) -> String {
    let f = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "cpu median {:.2} ms (min {:.2}), wall median {:.2} ms",
        f(s.cpu),
        f(s.cpu_min),
        f(s.wall)
    )
}

fn primary_counts(t: &Table, n: usize) -> Vec<u32> {
    let mut c = vec![0u32; n];
    for r in 0..t.rows {
        c[t.row(r)[0] as usize] += 1;
    }
    c
}

fn max_min(c: &[u32]) -> f64 {
    let max = *c.iter().max().unwrap() as f64;
    let min = *c.iter().min().unwrap() as f64;
    max / min
}

/// GLB-style plain rendezvous: an independent hash per (row, backend), primary = highest.
fn plain_rendezvous_max_min(n: usize, bits: u8, seed: &[u8; 16]) -> f64 {
    let (k0, k1) = key_halves(seed);
    let mut c = vec![0u32; n];
    for r in 0..1u32 << bits {
        let mut best = (0u64, 0usize);
        for b in 0..n {
            let mut buf = r.to_le_bytes().to_vec();
            buf.extend_from_slice(format!("backend-{b}").as_bytes());
            let h = siphash13(k0, k1, &buf);
            if h >= best.0 {
                best = (h, b);
            }
        }
        c[best.1] += 1;
    }
    max_min(&c)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` (the repository's test command)
    // runs this binary too, unoptimised and without it: then only check that it works.
    if !std::env::args().any(|a| a == "--bench") {
        let s = service(20, 8, 2);
        let t = build(&s);
        assert_eq!(primary_counts(&t, 20).iter().sum::<u32>(), t.rows);
        println!("bench smoke run ok (run `cargo bench -p xdplb-tablegen` for numbers)");
        return;
    }
    // Balance over several seeds: the worst and the mean of max/min primary rows.
    println!("== balance: 100 equal backends, 2^16 rows, hops 2");
    let mut ours = Vec::new();
    let mut plain = Vec::new();
    for seed in 0..8u8 {
        let mut s = service(100, 16, 2);
        s.seed[0] = seed;
        ours.push(max_min(&primary_counts(&build(&s), 100)));
        plain.push(plain_rendezvous_max_min(100, 16, &s.seed));
    }
    let stat = |v: &[f64]| {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let max = v.iter().cloned().fold(0.0, f64::max);
        format!("mean {mean:.3}, worst {max:.3} over {} seeds", v.len())
    };
    println!(
        "stratified weighted rendezvous (xdplb): max/min {}",
        stat(&ours)
    );
    println!(
        "plain rendezvous (GLB-style):           max/min {}",
        stat(&plain)
    );
    let big: Vec<f64> = (0..3u8)
        .map(|seed| {
            let mut s = service(100, 20, 2);
            s.seed[0] = seed;
            max_min(&primary_counts(&build(&s), 100))
        })
        .collect();
    println!(
        "xdplb at 2^20 rows:                     max/min {}",
        stat(&big)
    );
    let mut w = service(100, 16, 2);
    for (i, b) in w.backends.iter_mut().enumerate() {
        b.weight = 1 + (i % 4) as u32;
    }
    let c = primary_counts(&build(&w), 100);
    let per_weight: Vec<f64> = (0..100)
        .map(|i| f64::from(c[i]) / f64::from(w.backends[i].weight))
        .collect();
    let (mx, mn) = per_weight
        .iter()
        .fold((0.0f64, f64::MAX), |(a, b), &x| (a.max(x), b.min(x)));
    println!(
        "weights 1..4, rows per unit of weight:  max/min {:.3}",
        mx / mn
    );

    println!("== movement when one backend is added (100 -> 101, 2^16 rows)");
    let mut moved_ratio = Vec::new();
    for seed in 0..8u8 {
        let mut s = service(101, 16, 2);
        s.seed[0] = seed;
        let after = build(&s);
        s.backends.pop();
        let before = build(&s);
        let mut changed = 0u32;
        let mut kept = 0u32;
        for r in 0..before.rows {
            let (a, b) = (before.row(r), after.row(r));
            if a[0] != b[0] {
                changed += 1;
                kept += u32::from(b.contains(&a[0]));
            }
        }
        assert_eq!(changed, kept, "add property violated");
        moved_ratio.push(f64::from(changed) / (f64::from(before.rows) / 101.0));
    }
    println!("primary changed / (rows/(N+1)): {}", stat(&moved_ratio));

    println!("== full build, 2^16 rows, hops 2 (median)");
    for n in [100usize, 1000] {
        let s = service(n, 16, 2);
        let d = median(11, || build(&s));
        println!("{n} equal-weight backends: {}", ms(d));
        let mut w = s.clone();
        for (i, b) in w.backends.iter_mut().enumerate() {
            b.weight = 1 + (i % 4) as u32;
        }
        let d = median(11, || build(&w));
        println!("{n} backends, weights 1..4: {}", ms(d));
    }
    let s = service(1000, 16, 4);
    println!("1000 backends, hops 4: {}", ms(median(5, || build(&s))));

    println!("== one-backend change at 1000 backends, 2^16 rows (median, includes table())");
    let mut s = service(1001, 16, 2);
    let extra = s.backends.pop().unwrap();
    let base = Planner::new(s.clone());
    let bench_change = |label: &str, f: &dyn Fn(&mut Planner)| {
        let mut runs = Vec::new();
        for _ in 0..21 {
            let mut p = base.clone();
            runs.push(timed(|| {
                f(&mut p);
                p.table()
            }));
        }
        println!("{label}: {}", ms(stats(runs)));
    };
    bench_change("drain", &|p| p.set_state(7, State::Draining));
    bench_change("deactivate", &|p| p.set_state(7, State::Inactive));
    bench_change("add", &|p| p.add_backend(extra.clone()));
    bench_change("weight 1 -> 3", &|p| p.set_weight(7, 3));
    let mut drained = base.clone();
    drained.set_state(7, State::Draining);
    let mut dd = drained.clone();
    dd.set_state(7, State::Inactive);
    assert_eq!(dd.table(), build(dd.service()), "incremental != full build");

    println!("== scale");
    let s = service(4096, 16, 2);
    println!("4096 backends, 2^16 rows: {}", ms(median(3, || build(&s))));
    let s = service(4096, 20, 4);
    println!(
        "4096 backends, 2^20 rows, hops 4: {}",
        ms(median(3, || build(&s)))
    );
    let s = service(100, 20, 2);
    println!("100 backends, 2^20 rows: {}", ms(median(3, || build(&s))));
}
