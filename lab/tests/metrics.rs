//! Metrics end to end: the real daemons serve `/metrics` in the lab, `promtool check metrics`
//! accepts every endpoint, and a real Prometheus (its own storage in the lab's run directory,
//! listening on the router's lab address) scrapes all of them during a drain. The test asks
//! Prometheus' HTTP API for second-chance forwards and for each backend's new connections and
//! holds them to what the traffic did (`status --json` of each daemon, the client's own
//! counts), and for the bytes and reloads both sides count. Meanwhile 100 concurrent scrapers
//! hammer a director and a redirector for 10 s: both keep serving, their memory stays bounded,
//! and the drain (a table reload on both directors) and a redirector's config reload go through.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lab::addr::{self, Family};
use lab::client::{probe_tcp, Pool, PoolConfig};
use lab::system::{Binaries, System, SystemOptions};
use lab::Node;

const SERVER: &str = env!("CARGO_BIN_EXE_xdplb-lab-server");
const PROMETHEUS_PORT: u16 = 9090;

/// One HTTP/1.1 GET on a new connection: (status, body).
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

/// `get` from inside the router's namespace (every daemon's lab address is reachable there).
fn get_from_router(sys: &System, addr: SocketAddr, path: &str) -> (u16, String) {
    let path = path.to_string();
    sys.lab()
        .ns(Node::Router)
        .run(move || get(addr, &path))
        .unwrap()
        .unwrap_or_else(|e| panic!("GET {addr}{}: {e}", "/"))
}

fn promtool_check(text: &str, what: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (scripts/setup.sh installs the prometheus package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics on {what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prometheus, run by the lab in the router namespace.
struct Prometheus {
    addr: SocketAddr,
}

impl Prometheus {
    fn start(sys: &System, targets: &[SocketAddr]) -> Prometheus {
        let dir = sys.lab().run_dir().join("prometheus");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: xdplb\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        let cfg = sys
            .lab()
            .write_file("prometheus/prometheus.yml", &config)
            .unwrap();
        let ip: IpAddr = addr::router_client_side(Family::V4);
        let addr = SocketAddr::new(ip, PROMETHEUS_PORT);
        let cmd = sys
            .lab()
            .ns(Node::Router)
            .command("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn");
        sys.lab().spawn("prometheus", &cmd).unwrap();
        let p = Prometheus { addr };
        sys.lab()
            .wait_for("prometheus", Duration::from_secs(60), || {
                sys.lab()
                    .ns(Node::Router)
                    .run(move || get(addr, "/-/ready"))
                    .ok()
                    .and_then(Result::ok)
                    .is_some_and(|(c, _)| c == 200)
            })
            .unwrap();
        p
    }

    /// An instant query: the value of each series by its `instance` label.
    fn query(&self, sys: &System, q: &str) -> BTreeMap<String, f64> {
        let (code, body) = get_from_router(
            sys,
            self.addr,
            &format!("/api/v1/query?query={}", urlencode(q)),
        );
        assert_eq!(code, 200, "{q}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["status"], "success", "{q}: {body}");
        json["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let inst = r["metric"]["instance"].as_str().unwrap_or("").to_string();
                let v: f64 = r["value"][1].as_str().unwrap().parse().unwrap();
                (inst, v)
            })
            .collect()
    }

    /// Until `q` gives `want` per instance (Prometheus has scraped what the daemons count).
    fn wait_equal(&self, sys: &System, q: &str, want: &BTreeMap<String, f64>) {
        let t0 = Instant::now();
        loop {
            let got = self.query(sys, q);
            if &got == want {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{q}: Prometheus has {got:?}, the daemons say {want:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn redirector_counts(sys: &System, reason: &str) -> BTreeMap<String, f64> {
    (1..=3)
        .map(|i| {
            let a = sys.metrics_address(Node::Backend(i)).unwrap();
            (
                a.to_string(),
                sys.redirector_counter(i, reason).unwrap() as f64,
            )
        })
        .collect()
}

/// `status --json` of backend `i`'s redirector.
fn redirector_json(sys: &System, i: usize) -> serde_json::Value {
    serde_json::from_str(&sys.redirector_status(i).unwrap()).unwrap()
}

/// The bytes of `reason` per backend, as each redirector's `status --json` says.
fn redirector_bytes(sys: &System, reason: &str) -> BTreeMap<String, f64> {
    (1..=3)
        .map(|i| {
            let a = sys.metrics_address(Node::Backend(i)).unwrap();
            let j = redirector_json(sys, i);
            let n: u64 = j["counters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["reason"] == reason)
                .map(|c| c["bytes"].as_u64().unwrap())
                .sum();
            (a.to_string(), n as f64)
        })
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// The pid of the process in `node`'s namespace whose command is `comm`.
fn pid_in(sys: &System, node: Node, comm: &str) -> u32 {
    sys.lab()
        .ns(node)
        .pids()
        .unwrap()
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| comm.starts_with(c.trim()))
        })
        .unwrap_or_else(|| panic!("no {comm} in {node:?}")) as u32
}

/// `scrapers` threads scraping `addr` from the router namespace for `d`: (answers, failures).
fn storm(sys: &System, addr: SocketAddr, scrapers: usize, d: Duration) -> (u64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let (ok2, bad2) = (ok.clone(), bad.clone());
    sys.lab()
        .ns(Node::Router)
        .run(move || {
            let end = Instant::now() + d;
            let threads: Vec<_> = (0..scrapers)
                .map(|_| {
                    let (ok, bad) = (ok2.clone(), bad2.clone());
                    // Threads started here are in the router's namespace too.
                    std::thread::spawn(move || {
                        while Instant::now() < end {
                            match get(addr, "/metrics") {
                                Ok((200, body)) if body.contains("xdplb_build_info") => {
                                    ok.fetch_add(1, Ordering::Relaxed)
                                }
                                _ => bad.fetch_add(1, Ordering::Relaxed),
                            };
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        })
        .unwrap();
    (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed))
}

#[test]
fn prometheus_scrapes_a_drain_and_sees_what_the_traffic_did() {
    let bins = Binaries::for_tests(Path::new(SERVER)).expect("build the daemons");
    let sys = System::start(
        bins,
        SystemOptions {
            metrics: true,
            ..SystemOptions::default()
        },
    )
    .expect("start xdplb in the lab");
    let endpoints: Vec<(Node, SocketAddr)> = [
        Node::Director(1),
        Node::Director(2),
        Node::Backend(1),
        Node::Backend(2),
        Node::Backend(3),
    ]
    .into_iter()
    .map(|n| (n, sys.metrics_address(n).unwrap()))
    .collect();

    // The exposition itself, as promtool reads it.
    for (node, a) in &endpoints {
        let (code, text) = get_from_router(&sys, *a, "/metrics");
        assert_eq!(code, 200, "{node:?}");
        assert!(text.contains("xdplb_packets_total"), "{node:?}: {text}");
        promtool_check(&text, &format!("{node:?} {a}"));
    }

    let targets: Vec<SocketAddr> = endpoints.iter().map(|(_, a)| *a).collect();
    let prom = Prometheus::start(&sys, &targets);
    let t0 = Instant::now();
    while prom.query(&sys, "up == 1").len() < targets.len() {
        assert!(t0.elapsed() < Duration::from_secs(30), "every target up");
        std::thread::sleep(Duration::from_millis(250));
    }

    // Long-lived connections on every backend, then backend-3 drains.
    let p = Pool::start(
        &sys.lab().ns(Node::Client),
        PoolConfig::new(addr::vip_tcp(Family::V4), 300),
    )
    .unwrap();
    assert_eq!(p.wait_established(Duration::from_secs(15)).established, 300);
    let on3 = p.open_on("backend-3");
    assert!(on3 > 50, "{}", p.stats());

    // 100 scrapers each on director-1 and backend-1 for 10 s, while traffic flows. Their
    // memory is measured after a warm-up (the first renders size the buffers). During them
    // backend-3 drains (a table reload on both directors) and backend-1's redirector reloads
    // its config: neither waits for the scrapes, and backend-3's connections go on by second
    // chance.
    let d1 = sys.metrics_address(Node::Director(1)).unwrap();
    let b1 = sys.metrics_address(Node::Backend(1)).unwrap();
    let d1_pid = pid_in(&sys, Node::Director(1), "xdplb-director");
    let b1_pid = pid_in(&sys, Node::Backend(1), "xdplb-redirector");
    storm(&sys, d1, 100, Duration::from_secs(1));
    storm(&sys, b1, 100, Duration::from_secs(1));
    let (d_rss0, b_rss0) = (rss_kib(d1_pid), rss_kib(b1_pid));
    let applied = |sys: &System| {
        redirector_json(sys, 1)["reloads"]["applied"]
            .as_u64()
            .unwrap()
    };
    let b1_applied0 = applied(&sys);
    let (d, b) = std::thread::scope(|s| {
        let d = s.spawn(|| storm(&sys, d1, 100, Duration::from_secs(10)));
        let b = s.spawn(|| storm(&sys, b1, 100, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_secs(1));
        let t = Instant::now();
        sys.tablegen(&["drain", "backend-3"]).unwrap();
        sys.wait_new_flows(Family::V4, 200, Duration::from_secs(10), |r| {
            r.failures() == 0 && r.per_backend.get("backend-3").copied().unwrap_or(0) == 0
        })
        .unwrap();
        let drained = t.elapsed();
        let t = Instant::now();
        let hup = std::process::Command::new("kill")
            .args(["-HUP", &b1_pid.to_string()])
            .status()
            .unwrap();
        assert!(hup.success());
        while applied(&sys) == b1_applied0 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "backend-1's reload under scrapes"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "under 2 x 100 scrapers: drain live on both directors after {drained:?}, \
             redirector reload counted after {:?}",
            t.elapsed()
        );
        (d.join().unwrap(), b.join().unwrap())
    });
    let (d_rss1, b_rss1) = (rss_kib(d1_pid), rss_kib(b1_pid));
    eprintln!(
        "100 scrapers for 10 s: director {} answers ({} failed), RSS {d_rss0} -> {d_rss1} KiB; \
         redirector {} answers ({} failed), RSS {b_rss0} -> {b_rss1} KiB",
        d.0, d.1, b.0, b.1
    );
    assert_eq!(d.1, 0, "every scrape of the director answered");
    assert_eq!(b.1, 0, "every scrape of the redirector answered");
    assert!(d.0 >= 100 && b.0 >= 100, "they kept serving: {d:?} {b:?}");
    // Bounded, not timed: 100 connections' buffers and one shared render fit in 16 MiB.
    assert!(
        d_rss1 <= d_rss0 + 16 * 1024,
        "director RSS {d_rss0} -> {d_rss1} KiB"
    );
    assert!(
        b_rss1 <= b_rss0 + 16 * 1024,
        "redirector RSS {b_rss0} -> {b_rss1} KiB"
    );
    assert_eq!(p.stats().broken, 0, "{}", p.stats());
    assert_eq!(
        p.open_on("backend-3"),
        on3,
        "backend-3 keeps its connections"
    );

    // New connections after the drain: Prometheus' per-backend SYN counts move exactly as the
    // client's own per-backend counts say.
    let syn = r#"xdplb_packets_total{program="redirector",reason="syn"}"#;
    prom.wait_equal(&sys, syn, &redirector_counts(&sys, "syn"));
    let before = prom.query(&sys, syn);
    let probe = probe_tcp(
        &sys.lab().ns(Node::Client),
        addr::vip_tcp(Family::V4),
        300,
        16,
    )
    .unwrap();
    assert_eq!(probe.failures(), 0, "{probe}");
    prom.wait_equal(&sys, syn, &redirector_counts(&sys, "syn"));
    let after = prom.query(&sys, syn);
    let expected = sys.expected_shares().unwrap();
    for i in 1..=3 {
        let inst = sys.metrics_address(Node::Backend(i)).unwrap().to_string();
        let name = format!("backend-{i}");
        let moved = after[&inst] - before[&inst];
        let conns = probe.per_backend.get(&name).copied().unwrap_or(0) as f64;
        eprintln!(
            "{name}: {moved} SYNs in Prometheus, {conns} new connections, share {:.3} (table {:.3})",
            moved / 300.0,
            expected[&name]
        );
        // A SYN the client retransmitted counts twice; nothing else does.
        assert!(
            moved >= conns && moved <= conns + 3.0,
            "{name}: {moved} vs {conns}"
        );
        assert!(
            (moved / 300.0 - expected[&name]).abs() < 0.12,
            "{name}'s share"
        );
    }
    assert_eq!(
        after[&sys.metrics_address(Node::Backend(3)).unwrap().to_string()],
        before[&sys.metrics_address(Node::Backend(3)).unwrap().to_string()],
        "a draining backend gets no new connections"
    );

    // Second chance: the connections still on backend-3 reach it through the other backends,
    // which count the forwards; Prometheus has the same numbers as `status --json`.
    let report = p.stop();
    assert_eq!(report.stats.broken, 0);
    let fwd = r#"xdplb_packets_total{program="redirector",reason="forward"}"#;
    let want = redirector_counts(&sys, "forward");
    prom.wait_equal(&sys, fwd, &want);
    let total: f64 = want.values().sum();
    assert!(
        total >= on3 as f64,
        "at least one forward per connection on backend-3: {want:?}"
    );
    let via_prom: f64 = prom.query(&sys, &format!("sum({fwd})")).values().sum();
    assert_eq!(via_prom, total);
    // Their bytes: each forwarded packet carries at least its Ethernet, outer IPv4, UDP and GUE
    // headers and an inner IPv4 and TCP header (86 bytes).
    let fwd_bytes = r#"xdplb_bytes_total{program="redirector",reason="forward"}"#;
    let want_bytes = redirector_bytes(&sys, "forward");
    prom.wait_equal(&sys, fwd_bytes, &want_bytes);
    for (inst, n) in &want {
        assert!(
            want_bytes[inst] >= n * 86.0,
            "{inst}: {want_bytes:?} for {want:?}"
        );
    }
    // Reloads by result on both sides: backend-1's SIGHUP is in Prometheus.
    let reloads_want: BTreeMap<String, f64> = (1..=3)
        .map(|i| {
            let a = sys.metrics_address(Node::Backend(i)).unwrap();
            let n = redirector_json(&sys, i)["reloads"]["applied"]
                .as_u64()
                .unwrap();
            (a.to_string(), n as f64)
        })
        .collect();
    assert_eq!(reloads_want[&b1.to_string()], (b1_applied0 + 1) as f64);
    prom.wait_equal(
        &sys,
        r#"xdplb_redirector_reloads_total{result="applied"}"#,
        &reloads_want,
    );
    // And the directors' per-service counts, as their status says.
    let svc = r#"xdplb_director_service_packets_total{service="web"}"#;
    let dir_want: BTreeMap<String, f64> = (1..=2)
        .map(|i| {
            let text = sys.director_status(i).unwrap();
            let j: serde_json::Value = serde_json::from_str(&text).unwrap();
            let n = j["services"][0]["packets"].as_u64().unwrap() as f64;
            (
                sys.metrics_address(Node::Director(i)).unwrap().to_string(),
                n,
            )
        })
        .collect();
    prom.wait_equal(&sys, svc, &dir_want);
    let reloads = prom.query(&sys, r#"xdplb_director_reloads_total{result="applied"}"#);
    assert!(
        reloads.values().all(|v| *v >= 2.0),
        "start and drain: {reloads:?}"
    );
}
