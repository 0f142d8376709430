//! `cargo bench -p xdplb-director --bench metrics`: one scrape of a large director's
//! `/metrics` (docs/development/benchmarking.md): 64 services, 1000 backends, a bind each
//! (every reason of the program is always exported, with its packets and bytes). The real
//! daemon runs in-process in a network namespace of its own, loaded and pinned on a bpffs of its
//! own, attached to no interface; the bench scrapes it over HTTP from inside the namespace, one
//! scrape at a time, and reports the median and 90th percentile time and the answer's size.
//! Targets: median <= 5 ms, size <= 1 MB. Reported, not asserted.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use director::config::DirectorConfig;
use director::datapath::PinnedView;
use director::Control;

const SERVICES: usize = 64;
const BACKENDS: usize = 1000;
const SCRAPES: usize = 300;
const ADDR: &str = "127.0.0.1:9641";

fn backends_yaml() -> String {
    let mut s = String::from("services:\n");
    let mut left = BACKENDS;
    for i in 0..SERVICES {
        let n = left / (SERVICES - i);
        left -= n;
        s.push_str(&format!(
            "  - name: svc{i}\n    hash_key: {KEY}\n    seed: {SEED}\n    table_bits: 10\n    binds:\n      - {{ vip: 10.100.{}.{}, proto: tcp, port: 80 }}\n    backends:\n",
            i / 250,
            i % 250 + 1
        ));
        for b in 0..n {
            s.push_str(&format!(
                "      - {{ name: s{i}-b{b}, address: 10.{}.{}.{} }}\n",
                64 + i / 16,
                (i % 16) * 16 + b / 250,
                b % 250 + 1
            ));
        }
    }
    s
}

fn scrape() -> (Duration, usize) {
    let t = Instant::now();
    let mut s = TcpStream::connect(ADDR).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::with_capacity(256 * 1024);
    s.read_to_end(&mut out).unwrap();
    let took = t.elapsed();
    assert!(out.starts_with(b"HTTP/1.1 200"));
    let body = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |p| out.len() - p - 4);
    (took, body)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this binary with no flag: a
    // smoke pass (a few scrapes, the same checks, no figures to read).
    let quick = !std::env::args().any(|a| a == "--bench");
    let scrapes = if quick { 5 } else { SCRAPES };
    let ns = netns();
    let fs = Bpffs::new();
    let dir = PathBuf::from(format!("/run/{}", unique("xdplb-metrics-bench-")));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("backends.yaml"), backends_yaml()).unwrap();
    let yaml = format!(
        "interfaces: []\nencap_source_v4: 10.1.0.1\nbpffs_dir: {}\nbackends: {}\nstate_dir: {}\nmetrics: {ADDR}\n",
        fs.root.display(),
        dir.join("backends.yaml").display(),
        dir.display()
    );
    let cfg = DirectorConfig::parse(&dir.join("director.yaml"), &yaml).unwrap();
    let control = Control::new();
    let handle = control.handle();
    let pin = cfg.pin_dir();
    let c2 = cfg.clone();
    let nsname = ns.name.clone();
    let join = std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/run/netns/{nsname}")).unwrap();
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        director::run(c2, control)
    });
    let t0 = Instant::now();
    while PinnedView::open(&pin)
        .ok()
        .and_then(|v| v.table_hdr(SERVICES as u32 - 1))
        .is_none()
        || director::state::State::read(&cfg.state_file()).is_none_or(|s| s.pid == 0)
    {
        assert!(t0.elapsed() < Duration::from_secs(120), "tables live");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (times, size) = ns.run(|| {
        for _ in 0..if quick { 1 } else { 20 } {
            scrape();
        }
        let mut times = Vec::with_capacity(scrapes);
        let mut size = 0;
        for _ in 0..scrapes {
            let (t, n) = scrape();
            times.push(t);
            size = n;
        }
        (times, size)
    });
    let mut sorted = times.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    let p90 = sorted[sorted.len() * 9 / 10];
    // The render alone (what a scrape does besides HTTP): gather + encode, in this process.
    let mut render = Vec::with_capacity(100);
    for _ in 0..if quick { 2 } else { 100 } {
        let t = Instant::now();
        let text = director::metrics::render(&director::status::gather(&cfg)).encode();
        render.push(t.elapsed());
        assert!(text.len() == size);
    }
    render.sort();
    let st = director::status::gather(&cfg);
    println!(
        "metrics scrape, {} services, {} binds, {} backends, {} reasons: median {:.2} ms, p90 {:.2} ms \
         (render alone: median {:.2} ms), {} bytes ({:.0} KiB); targets: median <= 5 ms, <= 1 MB",
        st.services.len(),
        st.binds.len(),
        st.services.iter().map(|s| s.backends).sum::<usize>(),
        st.reasons.len(),
        median.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3,
        render[render.len() / 2].as_secs_f64() * 1e3,
        size,
        size as f64 / 1024.0
    );
    handle.shutdown();
    join.join().unwrap().unwrap();
    let _ = director::datapath::detach_all(&pin);
    let _ = std::fs::remove_dir_all(&dir);
}
