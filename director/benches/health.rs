//! `cargo bench -p xdplb-director --bench health`: what health checking costs a director.
//!
//! 1. Applying a health change at 1000 backends and 2^16 rows: the overlay alone (from the
//!    published table's kept rankings), and the whole way the daemon goes from a flip to a
//!    swapped table: overlay, kernel images (`tables::snapshot`), `Datapath::install` into
//!    real pinned maps (a bpffs of its own). Two clocks: until a reader of the kernel's slot
//!    sees the new table (live), and until `install` returns. Median and 90th percentile, in
//!    milliseconds.
//! 2. From a backend's failure to the table without it live, through the real daemon
//!    in-process (`XDPLB_BENCH_SKIP_DETECTION=1` leaves it out).
//! 3. The checker's own cost: 1000 backends checked every second by `tcp` checks, on 1000
//!    addresses inside a network namespace made for the run (routed to its loopback, one
//!    listener answering them all), so no 4-tuple is reused and nothing leaves the namespace.
//!    CPU time of the checker's thread (`/proc/self/task/<tid>/stat` utime + stime) as a share
//!    of one core, and the process's resident memory, sampled over
//!    `XDPLB_BENCH_CHECKER_SECS` seconds (default 60, 0 leaves it out; the figures in
//!    docs/development/benchmarking.md are from 600 s).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use director::datapath::Datapath;
use director::health::{overlay, Checker, ProbeSettings, Target};
use director::tables::{self, Ids};
use tablegen::config::{Config, Health, HealthCheck, Service};
use tablegen::table::Planner;

/// `n` equal backends and 2^`bits` rows, as backends.yaml says it.
fn service(n: usize, bits: u8) -> Service {
    let mut text = format!(
        "services:\n  - name: web\n    hash_key: 07070707070707070707070707070707\n    seed: 09090909090909090909090909090909\n    table_bits: {bits}\n    binds: []\n    backends:\n"
    );
    for i in 0..n {
        text.push_str(&format!(
            "      - {{ name: backend-{i}, address: 10.0.{}.{} }}\n",
            i / 250,
            i % 250 + 1
        ));
    }
    let mut c = Config::parse(std::path::Path::new("bench.yaml"), &text).unwrap();
    c.services.remove(0)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this binary with no flag:
    // then only check that it builds.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "bench binary built; run `cargo bench -p xdplb-director --bench health` for figures"
        );
        return;
    }
    let t0 = Instant::now();
    let planner = Planner::new(service(1000, 16));
    println!(
        "rankings kept at 1000 backends, 2^16 rows: {:.1} ms (once per reload)",
        t0.elapsed().as_secs_f64() * 1e3
    );
    for demoted in [1usize, 10, 100] {
        let names: BTreeSet<String> = (0..demoted).map(|i| format!("backend-{}", i * 7)).collect();
        let mut ms: Vec<f64> = (0..200)
            .map(|_| {
                let t = Instant::now();
                let table = overlay(&planner, &names);
                std::hint::black_box(&table);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        println!(
            "overlay, {demoted:>3} of 1000 backends demoted: median {:.2} ms, p90 {:.2} ms",
            ms[ms.len() / 2],
            ms[ms.len() * 9 / 10]
        );
    }
    to_swapped(&planner);
    // Each part can be left out: XDPLB_BENCH_SKIP_DETECTION=1 (about 40 s),
    // XDPLB_BENCH_CHECKER_SECS=0.
    if std::env::var_os("XDPLB_BENCH_SKIP_DETECTION").is_none() {
        detection();
    }
    checker();
}

/// From a backend's failure to the table without it in the kernel, through the real daemon
/// (in-process, attached nowhere: the pinned tables are what forwards): `tcp` checks every
/// 200 ms, fall 2, hold 1 s, 3 backends on loopback addresses, 2^16 rows. The failure is the
/// backend's listener closing (connections refused at once); the clock stops when the table
/// header in the kernel carries another checksum than the published one.
fn detection() {
    use director::datapath::PinnedView;
    let fs = common::Bpffs::new();
    let dir = std::path::PathBuf::from(format!(
        "/run/{}",
        lab::testns::unique("xdplb-bench-detect-")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // Backends that accept (and drop) what connects: a listener that never accepts fills
    // its queue with the probes' connections after some 128 probes, and then its backend
    // fails too.
    let first = Backend::serve("127.0.0.2", 0);
    let port = first.port;
    let _others = [first, Backend::serve("127.0.0.4", port)];
    let mut victim = Some(Backend::serve("127.0.0.3", port));
    std::fs::write(
        dir.join("backends.yaml"),
        format!(
            "health:\n  interval: 200ms\n  timeout: 150ms\n  rise: 1\n  fall: 2\n  hold: 1s\n  fail_open_below: 10%\n  checks:\n    - {{ type: tcp, port: {port} }}\nservices:\n  - name: web\n    hash_key: 07070707070707070707070707070707\n    seed: 09090909090909090909090909090909\n    binds:\n      - {{ vip: 10.100.0.1, proto: tcp, port: 80 }}\n    backends:\n      - {{ name: b1, address: 127.0.0.2 }}\n      - {{ name: b2, address: 127.0.0.3 }}\n      - {{ name: b3, address: 127.0.0.4 }}\n"
        ),
    )
    .unwrap();
    let cfg = director::DirectorConfig::parse(
        &dir.join("director.yaml"),
        &format!(
            "interfaces: []\nencap_source_v4: 10.1.0.1\nbpffs_dir: {}\nstate_dir: {}\nbackends: backends.yaml\nreload_debounce_ms: 1\n",
            fs.root.display(),
            dir.display()
        ),
    )
    .unwrap();
    let control = director::Control::new();
    let handle = control.handle();
    let run_cfg = cfg.clone();
    let join = std::thread::spawn(move || director::run(run_cfg, control));
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        let t0 = Instant::now();
        while !ok() {
            assert!(t0.elapsed() < Duration::from_secs(20), "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let all_healthy = || {
        let st = director::status::gather(&cfg);
        st.health.as_ref().is_some_and(|h| {
            h.backends
                .get("web")
                .is_some_and(|m| m.len() == 3 && m.values().all(|t| t.healthy))
                && h.services["web"].demoted.is_empty()
        })
    };
    wait("every backend healthy", &all_healthy);
    let st = director::status::gather(&cfg);
    let id = st.services[0].id;
    let published = st.health.as_ref().unwrap().services["web"].published_checksum;
    let view = PinnedView::open(&cfg.pin_dir()).unwrap();
    let installed = || view.table_hdr(id).map(|h| h.checksum);
    let mut ms = Vec::new();
    for _ in 0..12 {
        wait("published table back", &|| {
            installed() == Some(published) && all_healthy()
        });
        // Past the hold of the last change: the next one applies at once.
        std::thread::sleep(Duration::from_millis(1100));
        let t0 = Instant::now();
        drop(victim.take());
        while installed() == Some(published) {
            assert!(t0.elapsed() < Duration::from_secs(10), "never demoted");
            std::thread::sleep(Duration::from_micros(500));
        }
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
        victim = Some(Backend::serve("127.0.0.3", port));
    }
    handle.shutdown();
    join.join().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    ms.sort_by(f64::total_cmp);
    println!(
        "failure to table live (tcp every 200 ms, fall 2; bound 200 x 2 + 50 = 450 ms), {} runs: min {:.0} ms, median {:.0} ms, max {:.0} ms",
        ms.len(),
        ms[0],
        ms[ms.len() / 2],
        ms[ms.len() - 1]
    );
}

/// A TCP listener whose thread accepts and drops connections until the value is dropped,
/// which closes the listener before it returns (connections to it are refused from then on).
struct Backend {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    fn serve(addr: &str, port: u16) -> Backend {
        use std::sync::atomic::Ordering;
        let l = std::net::TcpListener::bind((addr, port)).unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => drop(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        Backend {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// From a health change to the swapped table: overlay, images, install (alternating between
/// two demoted backends, so every run swaps). Two clocks: until a thread that keeps reading
/// the service's slot in the kernel (as the program finds it) sees the new table's header
/// ("live": what a packet arriving then is forwarded by), and until `install` returns, which
/// includes the RCU grace period the kernel waits out after every map-in-map update before
/// returning (so userspace knows no program still reads the old table).
fn to_swapped(planner: &Planner) {
    use director::datapath::PinnedView;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let fs = common::Bpffs::new();
    let dp = Datapath::open(&fs.pin_dir()).unwrap();
    dp.set_config(&common::settings()).unwrap();
    let config = Config {
        services: vec![planner.service().clone()],
    };
    let mut ids = Ids::default();
    // The checksum the watcher waits for (0: none), and how long after the start it saw it.
    let want = Arc::new(AtomicU64::new(0));
    let seen_us = Arc::new(AtomicU64::new(0));
    let started = Arc::new(std::sync::Mutex::new(Instant::now()));
    let stop = Arc::new(AtomicBool::new(false));
    let view = PinnedView::open(&fs.pin_dir()).unwrap();
    let watcher = {
        let (want, seen_us, started, stop) =
            (want.clone(), seen_us.clone(), started.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let w = want.load(Ordering::Acquire);
                if w == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                if view.table_hdr(0).map(|h| h.checksum) == Some(w) {
                    let t0 = *started.lock().unwrap();
                    seen_us.store(t0.elapsed().as_micros() as u64, Ordering::Release);
                    want.store(0, Ordering::Release);
                }
                std::thread::sleep(Duration::from_micros(20));
            }
        })
    };
    let (mut live, mut returned, mut parts) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..70 {
        let names: BTreeSet<String> =
            [format!("backend-{}", if i % 2 == 0 { 3 } else { 11 })].into();
        seen_us.store(0, Ordering::Release);
        let t = Instant::now();
        *started.lock().unwrap() = t;
        let table = overlay(planner, &names);
        want.store(table.checksum, Ordering::Release);
        let t_overlay = t.elapsed();
        let snap = tables::snapshot(&config, &[table], &ids, true, false).unwrap();
        let t_snap = t.elapsed();
        let swapped = dp.install(&snap).unwrap();
        let took = t.elapsed();
        assert_eq!(swapped.len(), 1);
        assert_eq!(snap.services[0].id, 0);
        let t_wait = Instant::now();
        while seen_us.load(Ordering::Acquire) == 0 {
            assert!(t_wait.elapsed() < Duration::from_secs(5), "never seen live");
            std::thread::sleep(Duration::from_micros(100));
        }
        ids = snap.ids.clone();
        // The first runs create the two maps the service's versions then alternate between.
        if i >= 10 {
            live.push(seen_us.load(Ordering::Acquire) as f64 / 1e3);
            returned.push(took.as_secs_f64() * 1e3);
            parts.push((
                t_overlay.as_secs_f64() * 1e3,
                (t_snap - t_overlay).as_secs_f64() * 1e3,
                (took - t_snap).as_secs_f64() * 1e3,
            ));
        }
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[v.len() * 9 / 10])
    };
    let (lm, lp) = median(&mut live);
    let (rm, rp) = median(&mut returned);
    let (om, _) = median(&mut parts.iter().map(|p| p.0).collect());
    let (sm, _) = median(&mut parts.iter().map(|p| p.1).collect());
    let (im, _) = median(&mut parts.iter().map(|p| p.2).collect());
    println!(
        "health change to swapped table, 1000 backends, 2^16 rows, {} runs: live in the kernel median {lm:.2} ms, p90 {lp:.2} ms; install returned median {rm:.2} ms, p90 {rp:.2} ms (medians of the parts: overlay {om:.2} ms, images {sm:.2} ms, install {im:.2} ms)",
        live.len()
    );
}

/// utime + stime of this process's thread named `name`, in seconds.
fn thread_cpu_seconds(name: &str) -> f64 {
    let tick = 100.0; // USER_HZ: what /proc reports in, 100 on every Linux we run on.
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap();
        // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
        let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        let (u, s): (f64, f64) = (rest[11].parse().unwrap(), rest[12].parse().unwrap());
        return (u + s) / tick;
    }
    panic!("no thread named {name}");
}

fn cpu_seconds() -> f64 {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn checker() {
    let secs: u64 = std::env::var("XDPLB_BENCH_CHECKER_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    if secs == 0 {
        return;
    }
    // A namespace of our own: 10.200.0.0/16 is local on its loopback, so one listener
    // answers 1000 backend addresses and the probes never leave it.
    let ns = lab::testns::TestNetns::new("xdplb-bench-health");
    ns.ip(&["route", "add", "local", "10.200.0.0/16", "dev", "lo"]);
    ns.enter();
    let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    let health = Health {
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        rise: 3,
        fall: 2,
        jitter_percent: 10,
        hold: Duration::from_secs(10),
        fail_open_below: 50,
        announce_min_healthy: 1,
        checks: vec![HealthCheck::Tcp { port }],
    };
    let targets: Vec<Target> = (0..1000)
        .map(|i| Target {
            service: "web".into(),
            backend: format!("backend-{i}"),
            address: std::net::Ipv4Addr::new(10, 200, (i / 250) as u8, (i % 250 + 1) as u8).into(),
            health: health.clone(),
        })
        .collect();
    let c = Checker::start(
        ProbeSettings {
            gue_port: 19523,
            src_v4: None,
            src_v6: None,
            colocated: false,
        },
        BTreeMap::new(),
        || {},
    )
    .unwrap();
    c.set_targets(targets);
    // Settle: every backend has risen.
    std::thread::sleep(Duration::from_secs(5));
    let healthy = c.view().values().filter(|t| t.healthy).count();
    let (cpu0, thread0, t0, rss0) = (
        cpu_seconds(),
        thread_cpu_seconds("health"),
        Instant::now(),
        rss_kib(),
    );
    let mut rss_max = rss0;
    let mut last = (t0, thread0);
    let step = Duration::from_secs((secs / 6).max(1));
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        rss_max = rss_max.max(rss_kib());
        if last.0.elapsed() >= step {
            let now = thread_cpu_seconds("health");
            println!(
                "  at {:>4} s: checker thread {:.2} % of one core over the last {} s, RSS {} KiB",
                t0.elapsed().as_secs(),
                (now - last.1) / last.0.elapsed().as_secs_f64() * 100.0,
                last.0.elapsed().as_secs(),
                rss_kib()
            );
            last = (Instant::now(), now);
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let thread = (thread_cpu_seconds("health") - thread0) / wall;
    let cpu = (cpu_seconds() - cpu0) / wall;
    let still = c.view().values().filter(|t| t.healthy).count();
    println!(
        "checker, 1000 backends every 1 s for {secs} s ({healthy} healthy after settling, {still} at the end): checker thread {:.2} % of one core (whole process, listener included: {:.2} %); RSS {rss0} KiB at the start, {} KiB at the end, {rss_max} KiB at most",
        thread * 100.0,
        cpu * 100.0,
        rss_kib()
    );
}
