//! The director's `/metrics` in-process, in a test namespace: it reads the numbers
//! `status --json` reads (compared sample by sample after real packets through the program),
//! `promtool check metrics` accepts it, and bad requests get a clear HTTP error (400, 404,
//! 405, 408, 431) while a slow client holding a connection blocks no other scrape.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use director::config::DirectorConfig;
use director::datapath::{Datapath, PinnedView};
use director::Control;

const ADDR: &str = "127.0.0.1:9641";

fn spawn_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(path).expect("open netns");
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `request` as it is and reads the whole answer (the server closes after errors and
/// after `Connection: close`): (status code, head, body).
fn exchange(request: &[u8]) -> (u16, String, String) {
    let addr: SocketAddr = ADDR.parse().unwrap();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    read_answer(&mut s)
}

fn read_answer(s: &mut TcpStream) -> (u16, String, String) {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_string(), body.to_string())
}

fn scrape() -> String {
    let (code, head, body) =
        exchange(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(code, 200, "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body
}

/// The samples of a text-format exposition: `name{labels}` -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", l.join(","))
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Setup {
    lab: Lab,
    dir: PathBuf,
    cfg: DirectorConfig,
}

impl Setup {
    fn new() -> Setup {
        let lab = Lab::new();
        let dir = PathBuf::from(format!("/run/{}", unique("xdplb-metrics-test-")));
        std::fs::create_dir_all(&dir).unwrap();
        let yaml = format!(
            "interfaces: [dp0]\nxdp_mode: generic\nencap_source_v4: 10.1.0.1\nbpffs_dir: {}\nbackends: {}\nstate_dir: {}\nreload_debounce_ms: 5\nmetrics: {ADDR}\n",
            lab.fs.root.display(),
            dir.join("backends.yaml").display(),
            dir.display()
        );
        let cfg = DirectorConfig::parse(&dir.join("director.yaml"), &yaml).unwrap();
        assert_eq!(cfg.metrics, Some(ADDR.parse().unwrap()));
        std::fs::write(
            dir.join("backends.yaml"),
            format!(
                "services:\n  - name: web\n    hash_key: {KEY}\n    seed: {SEED}\n    table_bits: 8\n    binds:\n      - {{ vip: 10.100.0.1, proto: tcp, port: 80 }}\n      - {{ vip: 10.100.0.1, proto: udp, port: 53 }}\n    backends:\n      - {{ name: b11, address: 10.1.0.11 }}\n      - {{ name: b12, address: 10.1.0.12 }}\n"
            ),
        )
        .unwrap();
        Setup { lab, dir, cfg }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn metrics_read_what_status_reads_and_bad_requests_get_http_errors() {
    let s = Setup::new();
    let control = Control::new();
    let h = control.handle();
    let cfg = s.cfg.clone();
    let j = spawn_in(&s.lab.ns.name, move || director::run(cfg, control));
    let pin = s.cfg.pin_dir();
    wait_until("first table", Duration::from_secs(10), || {
        PinnedView::open(&pin)
            .ok()
            .and_then(|v| v.table_hdr(0))
            .is_some()
    });
    wait_until("state written", Duration::from_secs(10), || {
        director::state::State::read(&s.cfg.state_file()).is_some_and(|st| st.pid != 0)
    });

    // Real packets through the program: forwarded (both binds), passed (not a VIP), dropped
    // (the L4 header cut off).
    let dp0 = s.lab.dp0;
    let pin2 = pin.clone();
    s.lab.ns.run(move || {
        let dp = Datapath::open(&pin2).unwrap();
        let vip = "10.100.0.1".parse().unwrap();
        let client = "192.0.2.1".parse().unwrap();
        for i in 0..7 {
            dp.test_run(&tcp_packet(client, vip, 1000 + i, 80, b"x"), dp0)
                .unwrap();
        }
        for i in 0..3 {
            dp.test_run(&udp_packet(client, vip, 2000 + i, 53, b"q"), dp0)
                .unwrap();
        }
        for i in 0..5 {
            let other = "10.9.9.9".parse().unwrap();
            dp.test_run(&tcp_packet(client, other, 3000 + i, 80, b""), dp0)
                .unwrap();
        }
        let mut cut = tcp_packet(client, vip, 4000, 80, b"");
        cut.truncate(14 + 20 + 8);
        dp.test_run(&cut, dp0).unwrap();
    });

    let text = s.lab.ns.run(scrape);
    let st = director::status::gather(&s.cfg);
    let m = samples(&text);
    let get = |k: String| -> f64 {
        *m.get(&k)
            .unwrap_or_else(|| panic!("no sample {k} in:\n{text}"))
    };
    let mut nonzero = 0;
    for r in &st.reasons {
        let l = [
            ("program", "director"),
            ("reason", r.reason),
            ("verdict", r.verdict),
        ];
        assert_eq!(
            get(key("xdplb_packets_total", &l)),
            r.packets as f64,
            "{}",
            r.reason
        );
        assert_eq!(
            get(key("xdplb_bytes_total", &l)),
            r.bytes as f64,
            "{}",
            r.reason
        );
        nonzero += usize::from(r.packets > 0);
    }
    assert!(
        nonzero >= 2,
        "traffic counted under several reasons: {:?}",
        st.reasons
    );
    assert_eq!(st.services.len(), 1);
    let web = &st.services[0];
    assert_eq!(
        web.packets, 10,
        "seven TCP and three UDP packets to the service"
    );
    assert_eq!(
        get(key(
            "xdplb_director_service_packets_total",
            &[("service", "web")]
        )),
        10.0
    );
    assert_eq!(
        get(key(
            "xdplb_director_service_bytes_total",
            &[("service", "web")]
        )),
        web.bytes as f64
    );
    assert_eq!(st.binds.len(), 2);
    // Status (and so a scrape) reads only the slots the installed tables use; reading every
    // slot gives the same numbers for them.
    let full = PinnedView::open(&pin).unwrap().counters();
    let all = full.services[web.id as usize];
    assert_eq!((all.packets, all.bytes), (web.packets, web.bytes));
    let ids = director::state::State::read(&s.cfg.state_file())
        .unwrap()
        .ids
        .binds;
    for b in &st.binds {
        let all = full.binds[ids[&b.bind] as usize];
        assert_eq!((all.packets, all.bytes), (b.packets, b.bytes), "{}", b.bind);
    }
    for b in &st.binds {
        let (svc, rest) = b.bind.split_once('|').unwrap();
        let l = [("service", svc), ("bind", &rest.replace('|', " "))];
        assert_eq!(
            get(key("xdplb_director_bind_packets_total", &l)),
            b.packets as f64
        );
        assert_eq!(
            get(key("xdplb_director_bind_bytes_total", &l)),
            b.bytes as f64
        );
    }
    assert_eq!(
        get(key(
            "xdplb_director_table_info",
            &[
                ("service", "web"),
                ("version", &web.version),
                ("checksum", &web.checksum)
            ]
        )),
        1.0
    );
    assert_eq!(
        get(key(
            "xdplb_director_reloads_total",
            &[("result", "applied")]
        )),
        1.0
    );
    assert_eq!(
        get(key(
            "xdplb_director_last_reload_success_timestamp_seconds",
            &[]
        )),
        st.last_reload.as_ref().unwrap().time as f64
    );
    // Every family it exposes is in the catalogue, which docs/setup/metrics.md documents.
    for name in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = name.split_whitespace().next().unwrap();
        assert!(
            director::metrics::FAMILIES.iter().any(|d| d.name == name),
            "{name} not in the catalogue"
        );
    }
    promtool_check(&text);

    // Bad input: a clear error each, and the endpoint keeps serving.
    let ns = &s.lab.ns;
    let (c, _, body) = ns.run(|| exchange(b"GARBAGE\x01\x02 \r\n\r\n"));
    assert_eq!(c, 400, "{body}");
    let (c, _, body) = ns.run(|| exchange(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_eq!(c, 404, "{body}");
    assert!(body.contains("/metrics"), "{body}");
    let (c, head, _) = ns.run(|| exchange(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"));
    assert_eq!(c, 405, "{head}");
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Fill: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    let (c, _, body) = ns.run(|| exchange(&huge));
    assert_eq!(c, 431, "{body}");
    // A client that sends half a request and waits: others are served meanwhile, and it gets
    // 408 once the head timeout passes.
    let slow = ns.run(|| {
        let mut s = TcpStream::connect(ADDR).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(b"GET /metr").unwrap();
        s
    });
    for _ in 0..3 {
        let text = ns.run(scrape);
        assert!(text.contains("xdplb_packets_total"));
    }
    let mut slow = slow;
    let (c, _, body) = read_answer(&mut slow);
    assert_eq!(c, 408, "{body}");
    // Keep-alive: two scrapes on one connection, then HEAD.
    ns.run(|| {
        let mut s = TcpStream::connect(ADDR).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for _ in 0..2 {
            s.write_all(b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8];
            while !head.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut byte).unwrap();
                head.push(byte[0]);
            }
            let head = String::from_utf8(head).unwrap();
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).unwrap();
        }
        s.write_all(b"HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let (c, _, body) = read_answer(&mut s);
        assert_eq!(c, 200);
        assert!(body.is_empty(), "HEAD has no body");
    });

    h.shutdown();
    j.join().unwrap().unwrap();
    let _ = Path::new(&s.dir);
}

/// A taken port stops `run` before anything is loaded.
#[test]
fn a_taken_metrics_port_stops_the_start() {
    let s = Setup::new();
    let ns = s.lab.ns.name.clone();
    let cfg = s.cfg.clone();
    let r = spawn_in(&ns, move || {
        let _hold = std::net::TcpListener::bind(ADDR).unwrap();
        director::run(cfg, Control::new())
    })
    .join()
    .unwrap();
    let e = r.expect_err("the port is taken");
    assert!(
        daemon_support::error_chain(&e).contains("metrics: cannot listen on 127.0.0.1:9641"),
        "{}",
        daemon_support::error_chain(&e)
    );
    assert!(
        PinnedView::open(&s.cfg.pin_dir()).is_err(),
        "nothing pinned"
    );
}
