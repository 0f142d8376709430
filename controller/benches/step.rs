//! CPU of the controller's steps at scale: 64 services x 100 backends, one PromQL query per
//! service against a real Prometheus (scraping 6400 series), the current version read from a
//! real Consul. Measured as the CPU time of the thread that runs the steps (RUSAGE_THREAD; the
//! tokio runtime is current-thread, so the HTTP clients run there too), which is what the
//! controller process spends; Consul and Prometheus are separate processes and not counted.
//!
//! - a steady step (loads balanced: the law decides, nothing to publish);
//! - a publishing step (loads imbalanced: set every weight, build all 64 tables for their
//!   checksums, publish).
//!
//! `cargo bench -p xdplb-controller --bench step`. Under `cargo test --all-targets` it does one
//! step of each kind as a smoke run.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::testing::ConsulAgent;
use cluster::{Expect, PublishMeta, Store};
use controller::config::Config;
use controller::daemon::Controller;
use controller::leader::Leader;

const SERVICES: usize = 64;
const BACKENDS: usize = 100;

fn thread_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we pass and reads nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    assert_eq!(r, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn backends_text() -> String {
    let mut s = String::from("services:\n");
    for i in 0..SERVICES {
        s.push_str(&format!(
            "  - name: svc{i:02}\n    hash_key: 6c8d0f1e2a3b4c5d6e7f8091a2b3c4{i:02x}\n    seed: 0f1e2d3c4b5a69788796a5b4c3d2e1{i:02x}\n    binds:\n      - {{ vip: 10.100.{}.{}, proto: tcp, port: 443 }}\n    backends:\n",
            i / 200,
            i % 200 + 1
        ));
        for b in 0..BACKENDS {
            s.push_str(&format!(
                "      - {{ name: b{b:03}, address: 10.1.{}.{} }}\n",
                b / 250,
                b % 250 + 1
            ));
        }
    }
    s
}

/// Serves 6400 series; `skew` > 0 makes every service's b000 that much hotter.
fn exporter(skew: Arc<Mutex<f64>>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let k = *skew.lock().unwrap();
            let mut body = String::from("# TYPE xdplb_bench_load gauge\n");
            for i in 0..SERVICES {
                for b in 0..BACKENDS {
                    let v = if b == 0 { 0.5 * (1.0 + k) } else { 0.5 };
                    body.push_str(&format!(
                        "xdplb_bench_load{{service=\"svc{i:02}\",backend=\"b{b:03}\"}} {v}\n"
                    ));
                }
            }
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// Prometheus and its data directory (removed when dropped, after the process).
struct Prom(Child, #[allow(dead_code)] tempfile::TempDir);
impl Drop for Prom {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prometheus(target: SocketAddr) -> (Prom, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    std::fs::write(
        dir.path().join("p.yml"),
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: load\n    static_configs:\n      - targets: ['{target}']\n"),
    )
    .unwrap();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("p.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (scripts/setup.sh installs it)");
    (Prom(child, dir), addr)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let runs = if bench { 20 } else { 1 };
    let consul = ConsulAgent::dev().expect("consul");
    let dir = tempfile::tempdir().unwrap();
    let ccfg = consul.config("xdplb/bench", &dir.path().join("s.json"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = Store::new(&ccfg).unwrap();
    let text = backends_text();
    let tables = tablegen::config::Config::parse(Path::new("b.yaml"), &text).unwrap();
    let built = tablegen::table::build_all(&tables);
    let services = cluster::service_digests(
        built
            .iter()
            .map(|t| (t.service.as_str(), t.version, t.checksum)),
    );
    rt.block_on(store.publish(
        &text,
        PublishMeta {
            services,
            author: Some("operator@bench".into()),
            comment: String::new(),
            expect: Expect::Any,
        },
    ))
    .unwrap();
    let skew = Arc::new(Mutex::new(0.0));
    let exp = exporter(skew.clone());
    let (_prom, paddr) = prometheus(exp);
    let yaml = format!(
        "consul:\n  address: {}\n  prefix: xdplb/bench\nprometheus: http://{paddr}\ninterval_secs: 10\nmin_publish_interval_secs: 10\noperator_backoff_secs: 0\nstatus_file: {}\nservices:\n{}",
        consul.address(),
        dir.path().join("status.json").display(),
        (0..SERVICES)
            .map(|i| format!("  - name: svc{i:02}\n    query: 'xdplb_bench_load{{service=\"svc{i:02}\"}}'\n    backend_label: backend\n    overloaded_above: 0.9\n"))
            .collect::<String>()
    );
    let config = Config::parse(Path::new("controller.yaml"), &yaml).unwrap();
    let mut ctl = Controller::new(config.clone(), "xdplb-controller@bench:1".into()).unwrap();
    // Wait for Prometheus to have all 6400 series.
    let t0 = Instant::now();
    loop {
        let s = rt.block_on(ctl.step(None));
        let n: usize = s
            .services
            .iter()
            .flat_map(|s| &s.backends)
            .filter(|b| b.load.is_some())
            .count();
        if n == SERVICES * BACKENDS {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "prometheus has {n} series"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut steady = Vec::new();
    for _ in 0..runs {
        let c0 = thread_cpu();
        let s = rt.block_on(ctl.step(None));
        steady.push(thread_cpu() - c0);
        assert!(s.last_error.is_none(), "{s:?}");
        assert!(s.services.iter().all(|s| s.frozen.is_none()));
    }
    // Publishing steps: b000 of every service 40 % hotter; each step publishes one version (three
    // steps take its factor from 1 to 0.58, short of the 0.5 bound).
    *skew.lock().unwrap() = 0.4;
    std::thread::sleep(Duration::from_secs(3));
    let mut leader =
        Leader::new(&ccfg, "xdplb-controller@bench:1", Duration::from_secs(15)).unwrap();
    assert!(rt.block_on(leader.try_acquire()).unwrap());
    let session = leader.session().unwrap().to_string();
    let mut publishing = Vec::new();
    for i in 0..runs.min(3) {
        // The minimum publish interval counts from the last version: wait it out, untimed.
        if i > 0 {
            std::thread::sleep(Duration::from_secs(11));
        }
        let before = rt.block_on(store.current()).unwrap();
        let c0 = thread_cpu();
        let s = rt.block_on(ctl.step(Some(&session)));
        publishing.push(thread_cpu() - c0);
        assert!(s.last_error.is_none(), "{s:?}");
        assert_ne!(
            rt.block_on(store.current()).unwrap(),
            before,
            "{:?}",
            s.holding
        );
    }
    let st = median(steady);
    let pb = median(publishing);
    println!(
        "{SERVICES} services x {BACKENDS} backends: steady step {:.1} ms CPU (median of {runs}) = {:.2} % of a core at a 10 s interval; publishing step {:.1} ms CPU (median of {})",
        st.as_secs_f64() * 1e3,
        st.as_secs_f64() / 10.0 * 100.0,
        pb.as_secs_f64() * 1e3,
        runs.min(3)
    );
}
