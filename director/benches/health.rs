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
//! 3. The checker's own cost: 1000 backends checked every second by `tcp` checks. The checker
//!    runs in a network namespace made for the run (the director's side), the backends are
//!    1000 addresses local to a second one (one listener answers them all, so no 4-tuple is
//!    reused), the two joined by a veth pair whose ends each receive in a threaded-NAPI kernel
//!    thread: what the backends' kernel does for a probe (SYN, ACK, RST received, SYN-ACK
//!    sent) runs in the backends' side's threads and is not counted; what the director's
//!    kernel does runs in the checker's thread (sending, connecting, closing) and in the
//!    director's veth's receive thread (SYN-ACKs received, the ACK sent from there), and both
//!    are counted, as the director's cost. CPU time from the scheduler (`schedstat`, exact;
//!    utime + stime, sampled at each tick, is printed beside it) as a share of one core, and
//!    the process's resident memory and the allocator's bytes in use (`mallinfo2`), sampled
//!    over `XDPLB_BENCH_CHECKER_SECS` seconds (default 60, 0 leaves it out), a line every
//!    100 s (every sixth of a shorter run).

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

/// CPU time of one task (a thread of this process, or a kernel thread), read from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
struct TaskCpu {
    /// Time on a CPU, from the scheduler's own clock (`schedstat`'s first field): exact, not
    /// sampled.
    run: f64,
    /// utime + stime (`stat` fields 14 and 15): sampled at each tick (250 Hz here), so a
    /// task that runs in short bursts is over- or under-counted by chance.
    ticks: f64,
}

impl std::ops::Sub for TaskCpu {
    type Output = TaskCpu;
    fn sub(self, o: TaskCpu) -> TaskCpu {
        TaskCpu {
            run: self.run - o.run,
            ticks: self.ticks - o.ticks,
        }
    }
}

impl std::ops::Add for TaskCpu {
    type Output = TaskCpu;
    fn add(self, o: TaskCpu) -> TaskCpu {
        TaskCpu {
            run: self.run + o.run,
            ticks: self.ticks + o.ticks,
        }
    }
}

/// `dir` is `/proc/<pid>` or `/proc/self/task/<tid>`.
fn task_cpu(dir: &std::path::Path) -> TaskCpu {
    let tick = 100.0; // USER_HZ: what /proc reports in, 100 on every Linux we run on.
    let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
    // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let (u, s): (f64, f64) = (rest[11].parse().unwrap(), rest[12].parse().unwrap());
    let sched = std::fs::read_to_string(dir.join("schedstat")).unwrap();
    let ns: f64 = sched.split(' ').next().unwrap().parse().unwrap();
    TaskCpu {
        run: ns / 1e9,
        ticks: (u + s) / tick,
    }
}

/// This process's thread named `name`.
fn thread_dir(name: &str) -> std::path::PathBuf {
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            return t.path();
        }
    }
    panic!("no thread named {name}");
}

/// Kernel threads whose name starts with `prefix` (cut, as the kernel cuts names, to 15
/// bytes), by pid.
fn kthreads(prefix: &str) -> BTreeSet<u32> {
    let prefix = &prefix[..prefix.len().min(15)];
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| {
            let pid: u32 = p.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(p.path().join("comm")).ok()?;
            comm.starts_with(prefix).then_some(pid)
        })
        .collect()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes the process's allocator has handed out and not had back (every arena, and blocks
/// it mapped on their own), in KiB: what RSS holds apart from pages the allocator keeps free.
fn heap_kib() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's own statistics.
    let m = unsafe { libc::mallinfo2() };
    ((m.uordblks + m.hblkhd) / 1024) as u64
}

fn loadavg() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split(' ').take(3).collect::<Vec<_>>().join(" ")
}

/// The director's side and the backends' side of the checker's run: two namespaces joined by
/// a veth pair, each veth with threaded NAPI, so that each side's receive work runs in a
/// kernel thread of its own (`napi/<veth>-<id>`) instead of inline on whichever thread sent
/// the packet, as it does over loopback.
struct Wire {
    director: lab::testns::TestNetns,
    backends: lab::testns::TestNetns,
    /// The kernel thread that receives on the director's veth (SYN-ACKs and whatever else the
    /// backends send), and the one that receives on the backends' veth (SYNs, ACKs, RSTs).
    director_rx: u32,
    backends_rx: u32,
}

impl Wire {
    fn new() -> Wire {
        let director = lab::testns::TestNetns::new("xdplb-bench-hc-d");
        let backends = lab::testns::TestNetns::new("xdplb-bench-hc-b");
        // Names unique on the machine: the NAPI threads are named after them.
        let (vd, vb) = (
            format!("hcd{}", std::process::id()),
            format!("hcb{}", std::process::id()),
        );
        director.ip(&[
            "link",
            "add",
            &vd,
            "type",
            "veth",
            "peer",
            "name",
            &vb,
            "netns",
            &backends.name,
        ]);
        director.ip(&["addr", "add", "10.201.0.1/30", "dev", &vd]);
        backends.ip(&["addr", "add", "10.201.0.2/30", "dev", &vb]);
        director.ip(&["link", "set", &vd, "up"]);
        backends.ip(&["link", "set", &vb, "up"]);
        // The 1000 backend addresses: routed to the backends' side, local there (one
        // listener answers them all; no 4-tuple is reused, no port runs out).
        director.ip(&["route", "add", "10.200.0.0/16", "via", "10.201.0.2"]);
        backends.ip(&["route", "add", "local", "10.200.0.0/16", "dev", "lo"]);
        // GRO on gives a veth NAPI (without XDP), `threaded` moves its poll into a kernel
        // thread. TSO off: a veth whose sender can segment hands only some packets to the
        // peer's NAPI (the kernel's GRO eligibility test) and the rest, TCP's among them, to
        // the receiving CPU's backlog, processed inline on the sending thread as over
        // loopback.
        let mut rx = Vec::new();
        for (ns, dev) in [(&director, &vd), (&backends, &vb)] {
            ns.exec(&["ethtool", "-K", dev, "gro", "on", "tso", "off"]);
            let name = format!("napi/{dev}-");
            let before = kthreads(&name);
            ns.exec(&[
                "sh",
                "-c",
                &format!("echo 1 > /sys/class/net/{dev}/threaded"),
            ]);
            let t0 = Instant::now();
            let new = loop {
                let new: Vec<u32> = kthreads(&name).difference(&before).copied().collect();
                if !new.is_empty() || t0.elapsed() > Duration::from_secs(5) {
                    break new;
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            assert_eq!(new.len(), 1, "one NAPI thread for {dev}: {new:?}");
            rx.push(new[0]);
        }
        Wire {
            director,
            backends,
            director_rx: rx[0],
            backends_rx: rx[1],
        }
    }
}

fn checker() {
    let secs: u64 = std::env::var("XDPLB_BENCH_CHECKER_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    if secs == 0 {
        return;
    }
    let wire = Wire::new();
    // The backends: one listener in their namespace whose thread accepts and drops.
    let l = wire
        .backends
        .run(|| std::net::TcpListener::bind("0.0.0.0:0").unwrap());
    let port = l.local_addr().unwrap().port();
    std::thread::Builder::new()
        .name("listener".into())
        .spawn(move || {
            for c in l.incoming() {
                drop(c);
            }
        })
        .unwrap();
    // The checker's thread is started from this one, and so lives in the director's
    // namespace.
    wire.director.enter();
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
    let checker_dir = thread_dir("health");
    let listener_dir = thread_dir("listener");
    let director_rx = std::path::PathBuf::from(format!("/proc/{}", wire.director_rx));
    let backends_rx = std::path::PathBuf::from(format!("/proc/{}", wire.backends_rx));
    // (checker thread, director's NAPI thread, listener thread, backends' NAPI thread)
    let sample = || {
        (
            task_cpu(&checker_dir),
            task_cpu(&director_rx),
            task_cpu(&listener_dir) + task_cpu(&backends_rx),
        )
    };
    let (first, t0, rss0, heap0) = (sample(), Instant::now(), rss_kib(), heap_kib());
    println!(
        "checker: 1000 tcp backends every 1 s for {secs} s, {healthy} healthy after settling; load average {}",
        loadavg()
    );
    let (mut rss_max, mut heap_max) = (rss0, heap0);
    let mut last = (t0, first);
    // A line every 100 s (every sixth of a shorter run).
    let step = Duration::from_secs((secs / 6).clamp(1, 100));
    let pct = |cpu: f64, wall: f64| cpu / wall * 100.0;
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        rss_max = rss_max.max(rss_kib());
        heap_max = heap_max.max(heap_kib());
        if last.0.elapsed() >= step {
            let now = sample();
            let wall = last.0.elapsed().as_secs_f64();
            let (ck, d, b) = (now.0 - last.1 .0, now.1 - last.1 .1, now.2 - last.1 .2);
            println!(
                "  at {:>4} s, last {:.0} s: checker thread {:.2} % of one core (ticks {:.2} %), + director-side receive {:.2} % = {:.2} %; backends' side (not counted) {:.2} %; RSS {} KiB, heap in use {} KiB; load average {}",
                t0.elapsed().as_secs(),
                wall,
                pct(ck.run, wall),
                pct(ck.ticks, wall),
                pct(d.run, wall),
                pct(ck.run + d.run, wall),
                pct(b.run, wall),
                rss_kib(),
                heap_kib(),
                loadavg()
            );
            last = (Instant::now(), now);
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let end = sample();
    let (ck, d, b) = (end.0 - first.0, end.1 - first.1, end.2 - first.2);
    let still = c.view().values().filter(|t| t.healthy).count();
    println!(
        "checker, 1000 backends every 1 s for {secs} s ({still} healthy at the end): checker thread {:.2} % of one core (ticks {:.2} %), director-side receive {:.2} %, together {:.2} %; backends' side, not counted: {:.2} %; RSS {rss0} KiB at the start, {} KiB at the end, {rss_max} KiB at most; heap in use {heap0} KiB at the start, {} KiB at the end, {heap_max} KiB at most; load average {}",
        pct(ck.run, wall),
        pct(ck.ticks, wall),
        pct(d.run, wall),
        pct(ck.run + d.run, wall),
        pct(b.run, wall),
        rss_kib(),
        heap_kib(),
        loadavg()
    );
}
