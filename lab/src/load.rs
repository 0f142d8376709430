//! The load-aware controller's loop closed through the lab: a load exporter per backend, a
//! Prometheus that scrapes them, and the `xdplb-controller` binary, which reads the loads and
//! publishes weights to the lab's Consul for the directors.
//!
//! - [`LoadExporters`]: in each backend's namespace, an HTTP `/metrics` endpoint (a thread of
//!   the calling process) that asks the backend's server how many connections it serves now
//!   (the server's `CONNS` line) and reports `xdplb_lab_backend_load{backend}` = that count x
//!   the backend's cost per connection, which the caller sets and changes at will.
//! - [`Prometheus`]: a real Prometheus in the router namespace (its storage in the run
//!   directory), stopped and started again at will.
//! - [`controller_binary`]: the controller binary for the lab's tests, built like the daemons.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::addr::{self, Family};
use crate::cmd::{Cmd, CmdError};
use crate::netns::NetnsError;
use crate::topology::{Lab, LabError, Node};

/// The exporters' port, on each backend's own address.
pub const EXPORTER_PORT: u16 = 9650;
/// Prometheus' port, on the router's client-side address.
pub const PROMETHEUS_PORT: u16 = 9090;
/// The metric the exporters serve.
pub const LOAD_METRIC: &str = "xdplb_lab_backend_load";

/// One load exporter per backend (see the module docs); dropping it stops them.
#[derive(Debug)]
pub struct LoadExporters {
    costs: Arc<Mutex<BTreeMap<usize, f64>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<(), NetnsError>>>,
}

impl LoadExporters {
    /// Starts the exporters of `backends` (index and cost per connection) in their namespaces.
    pub fn start(lab: &Lab, backends: &[(usize, f64)]) -> Result<Self, LabError> {
        let costs = Arc::new(Mutex::new(backends.iter().copied().collect()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &(i, _) in backends {
            let listen = Self::address(i);
            let ready = lab.ns(Node::Backend(i)).run(move || {
                let l = TcpListener::bind(listen)?;
                l.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(l)
            })?;
            let listener = ready.map_err(|source| LabError::Io {
                what: "listen",
                path: PathBuf::from(listen.to_string()),
                source,
            })?;
            let (costs, stop) = (costs.clone(), stop.clone());
            threads.push(
                lab.ns(Node::Backend(i))
                    .spawn(move || serve(listener, i, &costs, &stop))?,
            );
        }
        Ok(Self {
            costs,
            stop,
            threads,
        })
    }

    /// Where backend `i`'s exporter listens (reachable from the router namespace).
    pub fn address(i: usize) -> SocketAddr {
        SocketAddr::new(addr::backend(Family::V4, i), EXPORTER_PORT)
    }

    /// Backend `i`'s cost per connection from now on.
    pub fn set_cost(&self, i: usize, cost: f64) {
        self.costs.lock().unwrap().insert(i, cost);
    }

    /// Backend `i`'s cost per connection.
    pub fn cost(&self, i: usize) -> f64 {
        self.costs.lock().unwrap().get(&i).copied().unwrap_or(1.0)
    }
}

impl Drop for LoadExporters {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// How many connections the server of the namespace serves now (its `CONNS` answer).
fn served_now() -> std::io::Result<u64> {
    let target = SocketAddr::from(([127, 0, 0, 1], addr::TCP_PORT));
    let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.write_all(b"CONNS\n")?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("odd CONNS answer {line:?}")))
}

fn serve(listener: TcpListener, i: usize, costs: &Mutex<BTreeMap<usize, f64>>, stop: &AtomicBool) {
    let name = Node::Backend(i).name();
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut s, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        // Read the request's head (a GET with no body) to its blank line.
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        // No answer from the server: no series (as a real exporter whose source is down).
        let body = match served_now() {
            Ok(n) => {
                let cost = costs.lock().unwrap().get(&i).copied().unwrap_or(1.0);
                format!(
                    "# HELP {LOAD_METRIC} Connections served now times the cost per connection.\n\
                     # TYPE {LOAD_METRIC} gauge\n\
                     {LOAD_METRIC}{{backend=\"{name}\"}} {}\n\
                     # HELP xdplb_lab_backend_connections Connections served now.\n\
                     # TYPE xdplb_lab_backend_connections gauge\n\
                     xdplb_lab_backend_connections{{backend=\"{name}\"}} {n}\n",
                    n as f64 * cost
                )
            }
            Err(_) => String::new(),
        };
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

/// A Prometheus in the router namespace, scraping `targets` every second.
#[derive(Debug)]
pub struct Prometheus {
    addr: SocketAddr,
    cmd: Cmd,
}

const PROMETHEUS_LABEL: &str = "prometheus";

impl Prometheus {
    /// Writes its config, starts it and waits until it is ready.
    pub fn start(lab: &Lab, targets: &[SocketAddr]) -> Result<Self, LabError> {
        let dir = lab.run_dir().join("prometheus");
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: lab\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        std::fs::create_dir_all(dir.join("data")).map_err(|source| LabError::Io {
            what: "create",
            path: dir.clone(),
            source,
        })?;
        let cfg = lab.write_file("prometheus/prometheus.yml", &config)?;
        let addr = SocketAddr::new(addr::router_client_side(Family::V4), PROMETHEUS_PORT);
        let cmd = lab
            .ns(Node::Router)
            .command("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn");
        let p = Prometheus { addr, cmd };
        p.launch(lab)?;
        Ok(p)
    }

    /// Its HTTP address (in the router namespace).
    pub fn address(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL, for controller.yaml's `prometheus:`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts it (again) and waits until it is ready.
    pub fn launch(&self, lab: &Lab) -> Result<(), LabError> {
        lab.spawn(PROMETHEUS_LABEL, &self.cmd)?;
        let addr = self.addr;
        lab.wait_for(PROMETHEUS_LABEL, Duration::from_secs(60), || {
            lab.ns(Node::Router)
                .run(move || http_get(addr, "/-/ready"))
                .ok()
                .flatten()
                .is_some_and(|(code, _)| code == 200)
        })
    }

    /// Stops it (SIGTERM); its data stays for the next [`Prometheus::launch`].
    pub fn stop(&self, lab: &Lab) -> Result<(), LabError> {
        lab.stop(PROMETHEUS_LABEL, Signal::SIGTERM, Duration::from_secs(10))?;
        Ok(())
    }
}

/// One HTTP/1.1 GET on a new connection: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// The `xdplb-controller` binary beside the lab server (`server`: its path), built as
/// [`crate::system::Binaries::for_tests`] builds the daemons: with the same cargo and profile
/// under cargo, only when missing otherwise.
pub fn controller_binary(server: &Path) -> Result<PathBuf, CmdError> {
    let dir = server.parent().expect("binary in a directory");
    let bin = dir.join("xdplb-controller");
    if std::env::var_os("CARGO").is_some() || !bin.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Cmd::new(cargo).args(["build", "--quiet", "-p", "xdplb-controller"]);
        if dir.file_name().is_some_and(|p| p == "release") {
            cmd = cmd.arg("--release");
        }
        cmd.run()?;
    }
    Ok(bin)
}
