//! A real Consul agent for tests (this crate's, and the director's): started on free loopback
//! ports with its own data directory, waited on until it has a leader and its node is
//! registered, killed on drop. Needs the `consul` binary (scripts/setup.sh installs it).
//!
//! Modes: [`ConsulAgent::dev`] (`consul agent -dev`, in memory: a restart starts empty),
//! [`ConsulAgent::server`] (a one-node server with a data directory: a restart keeps the KV
//! store) and [`ConsulAgent::dev_secure`] (dev, plus HTTPS with a CA made by `consul tls` and
//! ACLs on with default deny). Only loopback addresses are used.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::config::{ConsulConfig, ConsulSection};

/// How long an agent may take to elect itself and register its node.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

static AGENTS: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Clone, Copy)]
struct Ports {
    http: u16,
    serf_lan: u16,
    serf_wan: u16,
    server: u16,
    https: u16,
}

/// The management ACL token of a [`ConsulAgent::dev_secure`] agent.
pub const ROOT_TOKEN: &str = "xdplb-test-root-token";

/// A running (or stopped) test Consul agent.
#[derive(Debug)]
pub struct ConsulAgent {
    child: Option<Child>,
    dir: tempfile::TempDir,
    ports: Ports,
    dev: bool,
    secure: bool,
    node: String,
}

impl ConsulAgent {
    /// `consul agent -dev`: fast, in memory.
    pub fn dev() -> std::io::Result<ConsulAgent> {
        Self::start(true, false)
    }

    /// A one-node server with a data directory that survives [`ConsulAgent::restart`].
    pub fn server() -> std::io::Result<ConsulAgent> {
        Self::start(false, false)
    }

    /// A dev agent that also serves HTTPS (certificate from its own CA, see
    /// [`ConsulAgent::ca_file`]) and enforces ACLs (default deny; [`ROOT_TOKEN`] may do all).
    pub fn dev_secure() -> std::io::Result<ConsulAgent> {
        Self::start(true, true)
    }

    fn start(dev: bool, secure: bool) -> std::io::Result<ConsulAgent> {
        let n = AGENTS.fetch_add(1, Ordering::Relaxed);
        let mut last_err = None;
        // Ports are picked free but may be taken between picking and binding: try again.
        for _ in 0..3 {
            let mut agent = ConsulAgent {
                child: None,
                ports: free_ports()?,
                dev,
                secure,
                node: format!("xdplb-cluster-{}-{n}", std::process::id()),
                dir: tempfile::Builder::new()
                    .prefix("xdplb-cluster-consul-")
                    .tempdir()?,
            };
            match agent.launch() {
                Ok(()) => return Ok(agent),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    /// `http://127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.http)
    }

    /// `https://127.0.0.1:<port>` of a [`ConsulAgent::dev_secure`] agent.
    pub fn https_address(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.https)
    }

    /// The CA that signed a [`ConsulAgent::dev_secure`] agent's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls/consul-agent-ca.pem")
    }

    /// A validated config for this agent, with `prefix` and a state file under `state_dir`.
    pub fn config(&self, prefix: &str, state_file: &Path) -> ConsulConfig {
        ConsulSection {
            address: self.address(),
            datacenter: None,
            token: None,
            token_file: None,
            ca_file: None,
            prefix: prefix.to_string(),
            state_file: Some(state_file.to_path_buf()),
        }
        .validate()
        .expect("test config is valid")
    }

    /// The agent's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("consul.log")
    }

    /// Kills the agent (SIGKILL: no graceful leave) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the agent again on the same ports and data directory; waits until it is ready.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.launch()
    }

    fn launch(&mut self) -> std::io::Result<()> {
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let p = self.ports;
        let mut cmd = Command::new("consul");
        cmd.arg("agent");
        if self.dev {
            cmd.arg("-dev");
        } else {
            cmd.args(["-server", "-bootstrap-expect", "1"])
                .arg(format!("-data-dir={}", data.display()))
                // Raft timings for one fast local node (the default multiplier 5 is for WANs).
                .args(["-hcl", "performance { raft_multiplier = 1 }"]);
        }
        if self.secure {
            let tls = self.dir.path().join("tls");
            if !tls.join("dc1-server-consul-0.pem").exists() {
                std::fs::create_dir_all(&tls)?;
                for args in [
                    &["tls", "ca", "create"][..],
                    &["tls", "cert", "create", "-server", "-dc", "dc1"],
                ] {
                    let out = Command::new("consul")
                        .args(args)
                        .current_dir(&tls)
                        .output()?;
                    if !out.status.success() {
                        return Err(std::io::Error::other(format!(
                            "consul {}: {}",
                            args.join(" "),
                            String::from_utf8_lossy(&out.stderr)
                        )));
                    }
                }
            }
            let hcl = format!(
                r#"ports {{ https = {https} }}
ca_file = "{dir}/consul-agent-ca.pem"
cert_file = "{dir}/dc1-server-consul-0.pem"
key_file = "{dir}/dc1-server-consul-0-key.pem"
acl {{
  enabled = true
  default_policy = "deny"
  tokens {{
    master = "{ROOT_TOKEN}"
    agent = "{ROOT_TOKEN}"
  }}
}}"#,
                https = p.https,
                dir = tls.display()
            );
            cmd.args(["-hcl", &hcl]);
        }
        cmd.args([
            "-bind=127.0.0.1",
            "-client=127.0.0.1",
            "-dns-port=-1",
            "-grpc-port=-1",
            "-log-level=warn",
            "-disable-host-node-id",
        ])
        .arg(format!("-node={}", self.node))
        .arg(format!("-http-port={}", p.http))
        .arg(format!("-serf-lan-port={}", p.serf_lan))
        .arg(format!("-serf-wan-port={}", p.serf_wan))
        .arg(format!("-server-port={}", p.server))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
        let child = cmd.spawn().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("starting consul (run scripts/setup.sh to install it): {e}"),
            )
        })?;
        self.child = Some(child);
        match self.wait_ready() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.kill();
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                Err(std::io::Error::other(format!(
                    "consul agent not ready: {e}; log tail:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )))
            }
        }
    }

    fn wait_ready(&mut self) -> std::io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.ports.http));
        let node_path = format!("/v1/health/node/{}", self.node);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    return Err(std::io::Error::other(format!("consul exited: {status}")));
                }
            }
            let token = self.secure.then_some(ROOT_TOKEN);
            let leader = http_get(addr, "/v1/status/leader", token).unwrap_or_default();
            if leader.starts_with("\"1") {
                // Sessions need the node registered with a passing serfHealth check.
                let node = http_get(addr, &node_path, token).unwrap_or_default();
                if node.contains("serfHealth") && node.contains("\"passing\"") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "no leader/node after {READY_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ConsulAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Five ports free for TCP and UDP on 127.0.0.1 (serf uses both).
fn free_ports() -> std::io::Result<Ports> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < 5 {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = tcp.local_addr()?.port();
        if let Ok(udp) = UdpSocket::bind((Ipv4Addr::LOCALHOST, port)) {
            ports.push(port);
            held.push((tcp, udp));
        }
    }
    Ok(Ports {
        http: ports[0],
        serf_lan: ports[1],
        serf_wan: ports[2],
        server: ports[3],
        https: ports[4],
    })
}

/// A minimal HTTP/1.0 GET returning the body (readiness probe only).
fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let auth = token
        .map(|t| format!("X-Consul-Token: {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    Ok(resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}
