//! The real xdplb in the lab: the operator's files (`backends.yaml`, `director.yaml`,
//! `redirector.yaml`, written as an operator would write them), the daemons
//! (`xdplb-director run`, `xdplb-redirector run`) started in their namespaces, and `tablegen`
//! for changes. [`System`] owns the [`Lab`], so dropping it stops the daemons and removes
//! everything.
//!
//! Each node's files live in `<run dir>/<node>/` (its `/etc/xdplb`). Both directors watch one
//! shared `backends.yaml` (`<run dir>/backends.yaml`): in production config management or the
//! Consul sync puts the same file on every director.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::addr::{self, Family, FAMILIES};
use crate::client::{probe_tcp, ProbeReport};
use crate::cmd::{Cmd, CmdError};
use crate::topology::{Lab, LabError, LabOptions, Node, Routing};

/// Where the programs are.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `xdplb-lab-server`.
    pub server: PathBuf,
    /// `xdplb-director`.
    pub director: PathBuf,
    /// `xdplb-redirector`.
    pub redirector: PathBuf,
    /// `tablegen`.
    pub tablegen: PathBuf,
}

impl Binaries {
    /// All four in one directory (cargo's `target/<profile>/`).
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            server: dir.join("xdplb-lab-server"),
            director: dir.join("xdplb-director"),
            redirector: dir.join("xdplb-redirector"),
            tablegen: dir.join("tablegen"),
        }
    }

    /// For the lab's own tests: the binaries cargo built beside the lab server. `cargo test
    /// --workspace` builds every binary first; `cargo test -p xdplb-lab` does not, so under
    /// cargo (`$CARGO` set) they are built here with the same cargo and profile: always, not
    /// only when missing, since a daemon binary left from an older tree would test the wrong
    /// code (cargo does nothing when they are fresh). A test binary run by itself (the kernel
    /// matrix's guests, which have no cargo) uses what is there and builds only what is missing.
    pub fn for_tests(server: &Path) -> Result<Self, CmdError> {
        let dir = server.parent().expect("binary in a directory");
        let bins = Self::in_dir(dir);
        let under_cargo = std::env::var_os("CARGO").is_some();
        if under_cargo || !bins.missing().is_empty() {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Cmd::new(cargo).args([
                "build",
                "--quiet",
                "-p",
                "xdplb-director",
                "-p",
                "xdplb-redirector",
                "-p",
                "xdplb-tablegen",
            ]);
            if dir.file_name().is_some_and(|p| p == "release") {
                cmd = cmd.arg("--release");
            }
            cmd.run()?;
        }
        Ok(bins)
    }

    /// The ones that do not exist.
    pub fn missing(&self) -> Vec<&Path> {
        [
            &self.server,
            &self.director,
            &self.redirector,
            &self.tablegen,
        ]
        .into_iter()
        .map(PathBuf::as_path)
        .filter(|p| !p.exists())
        .collect()
    }
}

/// A backend line of backends.yaml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendLine {
    /// Backend index (1-based): name `backend-i`, address 10.200.2.(20+i).
    pub index: usize,
    /// `active`, `filling`, `draining` or `inactive`.
    pub state: &'static str,
}

/// The service's secret hash key in the lab's backends.yaml (a lab value, not a secret).
pub const HASH_KEY: &str = "6c8d0f1e2a3b4c5d6e7f8091a2b3c4d5";
/// The service's seed in the lab's backends.yaml.
pub const SEED: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// backends.yaml for the lab's service `web`: both VIPs, TCP 80 and UDP 53, the given
/// backends (by their IPv4 addresses; IPv6 clients reach them as IPv6 inside IPv4 GUE, as in
/// GLB). Hashing on the full 4-tuple: the lab has one client address, whose connections must
/// still spread.
pub fn backends_yaml(backends: &[BackendLine]) -> String {
    let mut s = String::from(
        "# xdplb lab: the services the directors balance.\n\
         services:\n\
         \x20 - name: web\n",
    );
    let _ = writeln!(s, "    hash_key: {HASH_KEY}");
    let _ = writeln!(s, "    seed: {SEED}");
    s.push_str(
        "    table_bits: 16\n\
         \x20   hops: 2\n\
         \x20   hash: [src_ip, src_port, dst_ip, dst_port]\n\
         \x20   binds:\n",
    );
    for f in FAMILIES {
        let vip = f.vip();
        let _ = writeln!(
            s,
            "      - {{ vip: \"{vip}\", proto: tcp, port: {} }}",
            addr::TCP_PORT
        );
        let _ = writeln!(
            s,
            "      - {{ vip: \"{vip}\", proto: udp, port: {} }}",
            addr::UDP_PORT
        );
    }
    s.push_str("    backends:\n");
    for b in backends {
        let a = addr::backend(Family::V4, b.index);
        let _ = write!(s, "      - {{ name: backend-{}, address: {a}", b.index);
        if b.state != "active" {
            let _ = write!(s, ", state: {}", b.state);
        }
        s.push_str(" }\n");
    }
    s
}

/// How to start the system.
#[derive(Debug, Clone)]
pub struct SystemOptions {
    /// The topology.
    pub lab: LabOptions,
    /// Backends in the initial backends.yaml (1..=n, all active); the others have a server and
    /// a redirector but are not in the config yet (to be added later).
    pub configured: usize,
    /// Directors take their tables from Consul (`source: consul`): a `consul agent -dev` runs
    /// in the router namespace, backends.yaml is published with `tablegen cluster publish`
    /// (see [`System::cluster_publish`]) before the directors start.
    pub consul: bool,
    /// Every daemon serves `/metrics` on its own lab address: directors on
    /// [`METRICS_PORT_DIRECTOR`], redirectors on [`METRICS_PORT_REDIRECTOR`].
    pub metrics: bool,
}

/// The directors' `/metrics` port when [`SystemOptions::metrics`] is set.
pub const METRICS_PORT_DIRECTOR: u16 = 9641;
/// The redirectors' `/metrics` port when [`SystemOptions::metrics`] is set.
pub const METRICS_PORT_REDIRECTOR: u16 = 9642;

impl Default for SystemOptions {
    fn default() -> Self {
        Self {
            lab: LabOptions::default(),
            configured: 3,
            consul: false,
            metrics: false,
        }
    }
}

/// How long a drain announces GRACEFUL_SHUTDOWN before it withdraws, in the lab's
/// director.yaml.
pub const LAB_DRAIN_DELAY: Duration = Duration::from_secs(3);

/// The lab running xdplb.
#[derive(Debug)]
pub struct System {
    lab: Lab,
    bins: Binaries,
    consul: bool,
    metrics: bool,
}

/// Runs the director (`$1 run --config $2`), writes its pid to `$3`, passes SIGTERM/SIGINT on,
/// and once it has gone, for whatever reason, runs the unit's ExecStopPost command.
const SUPERVISOR: &str = r#"
"$1" run --config "$2" & pid=$!
echo "$pid" > "$3"
trap 'kill -TERM "$pid"' TERM INT
wait "$pid"
wait "$pid" 2>/dev/null
"$1" flush-announcements --config "$2"
"#;

/// The lab's Consul: the router's address on director-1's link (every director reaches it).
const CONSUL_PREFIX: &str = "xdplb/lab";

impl System {
    /// Builds the lab, writes the operator's files, starts servers, redirectors and directors,
    /// waits until the router has learnt a path through every director over BGP, and then
    /// until new connections get answers. xdplb in the lab needs BGP ([`LabOptions::bgp`], on
    /// by default): the lab has no other route to the VIPs through the directors.
    pub fn start(bins: Binaries, opts: SystemOptions) -> Result<Self, LabError> {
        if !opts.lab.bgp {
            return Err(LabError::BadConfig(
                "xdplb in the lab needs BGP (LabOptions::bgp): the router learns the VIPs \
                 only from the directors' announcements"
                    .into(),
            ));
        }
        let lab = Lab::up(opts.lab)?;
        let sys = System {
            lab,
            bins,
            consul: opts.consul,
            metrics: opts.metrics,
        };
        sys.lab.start_servers(&sys.bins.server)?;
        let lines: Vec<BackendLine> = (1..=opts.configured)
            .map(|index| BackendLine {
                index,
                state: "active",
            })
            .collect();
        sys.lab
            .write_file("backends.yaml", &backends_yaml(&lines))?;
        for i in 1..=opts.lab.backends {
            sys.start_redirector(i)?;
        }
        if sys.consul {
            sys.start_consul()?;
            sys.cluster_publish("lab start")?;
        }
        for i in 1..=opts.lab.directors {
            sys.start_director(i)?;
        }
        sys.wait_announced()?;
        sys.wait_serving(Duration::from_secs(20))?;
        Ok(sys)
    }

    /// The co-located layout (docs/setup/colocated.md): no director hosts; every one of
    /// `backends` backends runs its redirector and a director in co-located mode on the same
    /// eth0, and the router spreads the VIPs over the backends by static ECMP routes. Returns
    /// once new connections get answers.
    pub fn start_colocated(bins: Binaries, backends: usize) -> Result<Self, LabError> {
        Self::start_colocated_with(bins, backends, backends)
    }

    /// [`System::start_colocated`] with `hosts` hosts, of which the first `configured` are
    /// in backends.yaml and in the router's ECMP group; the others run both daemons too and
    /// wait to be added ([`System::route_colocated`]).
    pub fn start_colocated_with(
        bins: Binaries,
        hosts: usize,
        configured: usize,
    ) -> Result<Self, LabError> {
        let backends = hosts;
        let lab = Lab::up(LabOptions {
            directors: 0,
            backends,
            bgp: false,
        })?;
        let sys = System {
            lab,
            bins,
            consul: false,
            metrics: false,
        };
        sys.lab.start_servers(&sys.bins.server)?;
        let lines: Vec<BackendLine> = (1..=configured)
            .map(|index| BackendLine {
                index,
                state: "active",
            })
            .collect();
        sys.lab
            .write_file("backends.yaml", &backends_yaml(&lines))?;
        for i in 1..=backends {
            sys.start_redirector(i)?;
            sys.start_colocated_director(i)?;
        }
        // Each host's neighbour entries for the others, resolved before VIP traffic: the
        // director's XDP cannot resolve one, and the packet it hands the kernel for that
        // (`no_neigh`) meets this host's own redirector first, which takes a SYN in it as
        // its own (docs/setup/colocated.md, "Known problem").
        for i in 1..=backends {
            for j in (1..=backends).filter(|j| *j != i) {
                for f in FAMILIES {
                    sys.lab
                        .ns(Node::Backend(i))
                        .command("ping")
                        .args(["-c", "1", "-W", "2"])
                        .arg(addr::backend(f, j).to_string())
                        .run()?;
                }
            }
        }
        if configured == backends {
            sys.lab.route_vips(Routing::EcmpBackends)?;
        } else {
            sys.route_colocated(&(1..=configured).collect::<Vec<_>>())?;
        }
        sys.wait_serving(Duration::from_secs(20))?;
        Ok(sys)
    }

    /// The router's static ECMP routes for both VIPs over the co-located `hosts` (backend
    /// indices): a host joins or leaves the group.
    pub fn route_colocated(&self, hosts: &[usize]) -> Result<(), LabError> {
        let router = self.lab.ns(Node::Router);
        for f in FAMILIES {
            let fam = if f == Family::V4 { "-4" } else { "-6" };
            let len = if f == Family::V4 { 32 } else { 128 };
            let vip = format!("{}/{len}", f.vip());
            let mut args: Vec<String> = [fam, "route", "replace", &vip]
                .iter()
                .map(|s| s.to_string())
                .collect();
            for i in hosts {
                args.extend([
                    "nexthop".into(),
                    "via".into(),
                    addr::backend(f, *i).to_string(),
                ]);
                args.extend(["dev".into(), "br-be".into()]);
            }
            router.ip(&args)?;
        }
        Ok(())
    }

    /// The director.yaml of backend `i` in the co-located layout: its own backend addresses
    /// as the encap sources, generic XDP (a veth delivers native XDP_TX frames only when its
    /// peer runs XDP, and the router's bridge ports do not).
    pub fn colocated_director_yaml(&self, i: usize) -> Result<String, LabError> {
        let node = Node::Backend(i);
        let state = self.lab.run_dir().join(node.name()).join("director-state");
        Ok(format!(
            "# xdplb lab: the co-located director on {name}.\n\
             interfaces: [eth0]\n\
             xdp_mode: generic\n\
             colocated: true\n\
             encap_source_v4: {s4}\n\
             encap_source_v6: \"{s6}\"\n\
             backends: {backends}\n\
             bpffs_dir: {bpffs}\n\
             state_dir: {state}\n",
            name = node.name(),
            s4 = addr::backend(Family::V4, i),
            s6 = addr::backend(Family::V6, i),
            backends = self.backends_yaml().display(),
            bpffs = self.bpffs_dir(node)?.display(),
            state = state.display(),
        ))
    }

    /// Writes backend `i`'s co-located director.yaml and starts `xdplb-director run` in its
    /// namespace; returns once the program is attached to its eth0.
    pub fn start_colocated_director(&self, i: usize) -> Result<(), LabError> {
        let node = Node::Backend(i);
        let yaml = self.colocated_director_yaml(i)?;
        let path = self
            .lab
            .write_file(&format!("{}/director.yaml", node.name()), &yaml)?;
        let label = format!("xdplb-director-colocated-{i}");
        let cmd = self
            .lab
            .ns(node)
            .command(&self.bins.director)
            .arg("--config")
            .arg(&path)
            .arg("run");
        self.lab.spawn(&label, &cmd)?;
        let ns = self.lab.ns(node);
        self.lab.wait_for(&label, Duration::from_secs(15), || {
            ns.ip(["-d", "link", "show", "dev", "eth0"])
                .is_ok_and(|out| out.contains("prog/xdp"))
        })
    }

    /// `xdplb-director status --json` of backend `i`'s co-located director.
    pub fn colocated_director_status(&self, i: usize) -> Result<String, CmdError> {
        self.status_json(Node::Backend(i), &self.bins.director, "director.yaml")
    }

    /// Packets backend `i`'s co-located director counted under `reason` (e.g.
    /// `colocated_direct`: delivered on the host without leaving it).
    pub fn colocated_director_counter(&self, i: usize, reason: &str) -> Result<u64, LabError> {
        let text = self.colocated_director_status(i)?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| LabError::BadConfig(format!("director status --json: {e}")))?;
        let reasons = json["reasons"].as_array().cloned().unwrap_or_default();
        Ok(reasons
            .iter()
            .filter(|c| c["reason"] == reason)
            .filter_map(|c| c["packets"].as_u64())
            .sum())
    }

    /// Until the router's IPv4 and IPv6 VIP routes go through every director (each director
    /// announces both VIPs), at most 30 s; the error shows the router's BGP sessions.
    pub fn wait_announced(&self) -> Result<Duration, LabError> {
        let all: Vec<usize> = (1..=self.lab.options().directors).collect();
        self.lab.wait_vip_paths(&all, Duration::from_secs(30))
    }

    /// The lab underneath.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The shared backends.yaml.
    pub fn backends_yaml(&self) -> PathBuf {
        self.lab.run_dir().join("backends.yaml")
    }

    fn label(node: Node) -> String {
        match node {
            Node::Director(i) => format!("xdplb-director-{i}"),
            Node::Backend(i) => format!("xdplb-redirector-{i}"),
            other => other.name(),
        }
    }

    fn bpffs_dir(&self, node: Node) -> Result<PathBuf, LabError> {
        Ok(self.lab.bpffs()?.join(node.name()))
    }

    /// The redirector.yaml of backend `i`, as its operator writes it.
    pub fn redirector_yaml(&self, i: usize) -> Result<String, LabError> {
        let node = Node::Backend(i);
        let state = self.lab.run_dir().join(node.name()).join("state");
        Ok(format!(
            "# xdplb lab: the redirector on {name}.\n\
             interfaces: [eth0]\n\
             # GUE is accepted only from the directors and, for second chance, the other backends.\n\
             allowed_sources: [\"{d4}\", \"{d6}\", \"{b4}\", \"{b6}\"]\n\
             self_addresses: [\"{a4}\", \"{a6}\"]\n\
             vips: [\"{v4}\", \"{v6}\"]\n\
             vip_interface: lo\n\
             # VIPs on lo, arp_ignore/arp_announce, reverse-path filter: done by the daemon.\n\
             setup_on_run: true\n\
             bpffs_dir: {bpffs}\n\
             state_dir: {state}\n\
             {metrics}",
            metrics = self.metrics_line(node),
            name = node.name(),
            d4 = addr::DIRECTOR_RANGE_V4,
            d6 = addr::DIRECTOR_RANGE_V6,
            b4 = addr::BACKEND_NET_V4,
            b6 = addr::BACKEND_NET_V6,
            a4 = addr::backend(Family::V4, i),
            a6 = addr::backend(Family::V6, i),
            v4 = addr::VIP_V4,
            v6 = addr::VIP_V6,
            bpffs = self.bpffs_dir(node)?.display(),
            state = state.display(),
        ))
    }

    /// Where `node`'s daemon serves `/metrics` (with [`SystemOptions::metrics`]): its own
    /// address on its link, reachable from the router namespace.
    pub fn metrics_address(&self, node: Node) -> Option<SocketAddr> {
        match node {
            Node::Director(i) => Some(SocketAddr::new(
                addr::director(Family::V4, i),
                METRICS_PORT_DIRECTOR,
            )),
            Node::Backend(i) => Some(SocketAddr::new(
                addr::backend(Family::V4, i),
                METRICS_PORT_REDIRECTOR,
            )),
            _ => None,
        }
    }

    fn metrics_line(&self, node: Node) -> String {
        match self.metrics_address(node) {
            Some(a) if self.metrics => format!("metrics: {a}\n"),
            _ => String::new(),
        }
    }

    /// The lab's Consul agent URL (consul mode).
    pub fn consul_address(&self) -> String {
        format!("http://{}:8500", addr::router_director_side(Family::V4, 1))
    }

    /// The key prefix of the lab's cluster in Consul (consul mode).
    pub fn consul_prefix(&self) -> &'static str {
        CONSUL_PREFIX
    }

    /// Starts `consul agent -dev` in the router namespace, HTTP on [`System::consul_address`];
    /// waits until it answers KV reads (a leader is elected).
    fn start_consul(&self) -> Result<(), LabError> {
        let ip = addr::router_director_side(Family::V4, 1).to_string();
        let cmd = self.lab.ns(Node::Router).command("consul").args([
            "agent",
            "-dev",
            "-bind=127.0.0.1",
            &format!("-client={ip}"),
            "-log-level=warn",
        ]);
        self.lab.spawn("consul", &cmd)?;
        self.lab.wait_for("consul", Duration::from_secs(30), || {
            self.cluster(&["current"]).is_ok()
        })
    }

    /// `tablegen --config <backends.yaml> cluster <args>` against the lab's Consul, run in the
    /// router namespace (where the agent listens), as an operator would.
    pub fn cluster(&self, args: &[&str]) -> Result<String, CmdError> {
        self.lab
            .ns(Node::Router)
            .command(&self.bins.tablegen)
            .arg("--config")
            .arg(self.backends_yaml())
            .arg("cluster")
            .args(["--consul-address", &self.consul_address()])
            .args(["--prefix", CONSUL_PREFIX])
            .args(args)
            .run()
    }

    /// Publishes backends.yaml as the cluster's new live version.
    pub fn cluster_publish(&self, comment: &str) -> Result<String, CmdError> {
        self.cluster(&["publish", "--comment", comment])
    }

    /// The director.yaml of director `i`, as its operator writes it.
    pub fn director_yaml(&self, i: usize) -> Result<String, LabError> {
        let node = Node::Director(i);
        let state = self.lab.run_dir().join(node.name()).join("state");
        let consul = if self.consul {
            format!(
                "source: consul\n\
                 consul:\n\
                 \x20 address: {}\n\
                 \x20 prefix: {CONSUL_PREFIX}\n\
                 \x20 state_file: {}\n",
                self.consul_address(),
                state.join("cluster-state.json").display()
            )
        } else {
            String::new()
        };
        Ok(format!(
            "# xdplb lab: {name}.\n\
             interfaces: [eth0]\n\
             xdp_mode: native\n\
             encap_source_v4: {s4}\n\
             encap_source_v6: \"{s6}\"\n\
             backends: {backends}\n\
             bpffs_dir: {bpffs}\n\
             state_dir: {state}\n\
             {metrics}\
             {consul}\
             announce:\n\
             \x20 table: {table}\n\
             \x20 drain_delay_ms: {delay}\n\
             \x20 bird_socket: {bird}\n\
             \x20 # The directors share one backends.yaml: a bad edit is refused by all of them\n\
             \x20 # at once, and withdrawing on it would take the VIPs away.\n\
             \x20 withdraw_when_refused: false\n",
            metrics = self.metrics_line(node),
            name = node.name(),
            s4 = addr::director(Family::V4, i),
            s6 = addr::director(Family::V6, i),
            backends = self.backends_yaml().display(),
            bpffs = self.bpffs_dir(node)?.display(),
            state = state.display(),
            table = crate::bgp::TOKEN_TABLE,
            delay = LAB_DRAIN_DELAY.as_millis(),
            bird = self.lab.bird_socket(node).display(),
        ))
    }

    fn config_path(&self, node: Node, file: &str) -> PathBuf {
        self.lab.run_dir().join(node.name()).join(file)
    }

    /// Writes backend `i`'s redirector.yaml and starts `xdplb-redirector run` in its namespace.
    pub fn start_redirector(&self, i: usize) -> Result<(), LabError> {
        let node = Node::Backend(i);
        let yaml = self.redirector_yaml(i)?;
        let path = self
            .lab
            .write_file(&format!("{}/redirector.yaml", node.name()), &yaml)?;
        let cmd = self
            .lab
            .ns(node)
            .command(&self.bins.redirector)
            .args(["--config"])
            .arg(&path)
            .arg("run");
        self.lab.spawn(&Self::label(node), &cmd)?;
        let ns = self.lab.ns(node);
        self.lab
            .wait_for(&Self::label(node), Duration::from_secs(15), || {
                ns.command("tc")
                    .args(["filter", "show", "dev", "eth0", "ingress"])
                    .run()
                    .is_ok_and(|out| out.contains("bpf"))
            })
    }

    /// Writes director `i`'s director.yaml and starts `xdplb-director run` in its namespace.
    ///
    /// The daemon runs under a small supervisor that does what the unit's `ExecStopPost=` does
    /// once the daemon is gone, however it went: the same `xdplb-director flush-announcements`
    /// (systemd itself is not in the lab). Returns once the program is attached, which after a
    /// restart it already is: [`System::wait_announced`] waits for the announcement.
    pub fn start_director(&self, i: usize) -> Result<(), LabError> {
        let yaml = self.director_yaml(i)?;
        self.start_director_with(i, &yaml)
    }

    /// Starts director `i` as [`System::start_director`] does, with `yaml` as its director.yaml.
    pub fn start_director_with(&self, i: usize, yaml: &str) -> Result<(), LabError> {
        let node = Node::Director(i);
        let path = self
            .lab
            .write_file(&format!("{}/director.yaml", node.name()), yaml)?;
        let cmd = self
            .lab
            .ns(node)
            .command("sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("xdplb-director-supervisor")
            .arg(&self.bins.director)
            .arg(&path)
            .arg(self.daemon_pid_file(i));
        self.lab.spawn(&Self::label(node), &cmd)?;
        let ns = self.lab.ns(node);
        self.lab
            .wait_for(&Self::label(node), Duration::from_secs(15), || {
                ns.ip(["-d", "link", "show", "dev", "eth0"])
                    .is_ok_and(|out| out.contains("prog/xdp"))
            })
    }

    fn daemon_pid_file(&self, i: usize) -> PathBuf {
        self.lab
            .run_dir()
            .join(Node::Director(i).name())
            .join("daemon.pid")
    }

    /// The pid of director `i`'s daemon (under its supervisor).
    pub fn director_daemon_pid(&self, i: usize) -> Option<i32> {
        std::fs::read_to_string(self.daemon_pid_file(i))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// SIGKILLs director `i`'s daemon (a crash); its supervisor then runs what the
    /// unit's ExecStopPost runs. The program stays attached.
    pub fn kill_director_daemon(&self, i: usize) -> Result<(), LabError> {
        let pid = self
            .director_daemon_pid(i)
            .ok_or_else(|| LabError::NoSuchProcess(format!("xdplb-director-{i} (no pid file)")))?;
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        Ok(())
    }

    /// `xdplb-director <args> --config <director.yaml>` on director `i`, as its operator runs it.
    pub fn director_cmd(&self, i: usize, args: &[&str]) -> Result<String, CmdError> {
        self.lab
            .ns(Node::Director(i))
            .command(&self.bins.director)
            .args(args)
            .arg("--config")
            .arg(self.config_path(Node::Director(i), "director.yaml"))
            .run()
    }

    /// Stops director `i`'s daemon (SIGTERM; its program keeps forwarding from bpffs).
    pub fn stop_director(&self, i: usize) -> Result<(), LabError> {
        self.lab.stop(
            &Self::label(Node::Director(i)),
            Signal::SIGTERM,
            Duration::from_secs(5),
        )?;
        Ok(())
    }

    /// Director `i`'s host dies: its link goes down (the router drops the path at once, the
    /// link being down; BFD ends its BGP sessions) and its daemon is killed (SIGKILL).
    pub fn kill_director_host(&self, i: usize) -> Result<(), LabError> {
        self.lab.set_director_link(i, false)?;
        self.lab.stop(
            &Self::label(Node::Director(i)),
            Signal::SIGKILL,
            Duration::from_secs(1),
        )?;
        Ok(())
    }

    /// Director `i`'s host comes back: daemon started, then the link up; returns once the
    /// router has its paths again (BGP and BFD up, the VIPs announced).
    pub fn revive_director_host(&self, i: usize) -> Result<(), LabError> {
        self.start_director(i)?;
        self.lab.set_director_link(i, true)?;
        self.wait_announced()?;
        Ok(())
    }

    /// Runs `tablegen --config <backends.yaml> <args>` as the operator would.
    pub fn tablegen(&self, args: &[&str]) -> Result<String, CmdError> {
        Cmd::new(&self.bins.tablegen)
            .arg("--config")
            .arg(self.backends_yaml())
            .args(args)
            .run()
    }

    /// `tablegen --config <backends.yaml> lookup --director <args>` against director `i`'s
    /// installed tables (its pins and state directory), as an operator on its host runs it.
    pub fn director_lookup(&self, i: usize, args: &[&str]) -> Result<String, LabError> {
        let node = Node::Director(i);
        Ok(Cmd::new(&self.bins.tablegen)
            .arg("--config")
            .arg(self.backends_yaml())
            .args(["lookup", "--director", "--bpffs-dir"])
            .arg(self.bpffs_dir(node)?)
            .arg("--state-dir")
            .arg(self.lab.run_dir().join(node.name()).join("state"))
            .args(args)
            .run()?)
    }

    /// `<bin> --config <node's file> status --json` inside the node.
    fn status_json(&self, node: Node, bin: &Path, config: &str) -> Result<String, CmdError> {
        self.lab
            .ns(node)
            .command(bin)
            .arg("--config")
            .arg(self.config_path(node, config))
            .args(["status", "--json"])
            .run()
    }

    /// `xdplb-redirector status --json` on backend `i`.
    pub fn redirector_status(&self, i: usize) -> Result<String, CmdError> {
        self.status_json(Node::Backend(i), &self.bins.redirector, "redirector.yaml")
    }

    /// `xdplb-director status --json` on director `i`.
    pub fn director_status(&self, i: usize) -> Result<String, CmdError> {
        self.status_json(Node::Director(i), &self.bins.director, "director.yaml")
    }

    /// Until every director has each of `services` live in its kernel (or `within` passes).
    /// New flows alone cannot show that a config which moves a VIP to another service is in
    /// on both directors: the old one answers them just as well.
    pub fn wait_directors_serve(
        &self,
        services: &[&str],
        within: Duration,
    ) -> Result<(), LabError> {
        let serves = |i: usize| -> bool {
            let Ok(text) = self.director_status(i) else {
                return false;
            };
            let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let live = json["services"].as_array().cloned().unwrap_or_default();
            services
                .iter()
                .all(|name| live.iter().any(|s| s["name"] == *name && s["live"] == true))
        };
        let directors = self.lab.options().directors;
        let within = crate::scaled(within);
        let start = Instant::now();
        while !(1..=directors).all(serves) {
            crate::signal::check()?;
            if start.elapsed() > within {
                return Err(LabError::Timeout {
                    what: format!("every director to serve {services:?}"),
                    after: within,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Backend `i`'s redirector counter for `reason` (packets), from `status --json`; e.g.
    /// `forward`: packets it passed on to the next hop (second chance).
    pub fn redirector_counter(&self, i: usize, reason: &str) -> Result<u64, LabError> {
        let text = self.redirector_status(i)?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| LabError::BadConfig(format!("redirector status --json: {e}")))?;
        let counters = json["counters"].as_array().cloned().unwrap_or_default();
        Ok(counters
            .iter()
            .filter(|c| c["reason"] == reason)
            .filter_map(|c| c["packets"].as_u64())
            .sum())
    }

    /// Share of table rows whose primary is each backend, per the tablegen library: where new
    /// flows should land.
    pub fn expected_shares(&self) -> Result<BTreeMap<String, f64>, LabError> {
        let path = self.backends_yaml();
        let text = std::fs::read_to_string(&path).map_err(|source| LabError::Io {
            what: "read",
            path: path.clone(),
            source,
        })?;
        self.expected_shares_of(&text)
    }

    /// [`System::expected_shares`] for the backends.yaml text `text`.
    pub fn expected_shares_of(&self, text: &str) -> Result<BTreeMap<String, f64>, LabError> {
        let path = self.backends_yaml();
        let config = tablegen::config::Config::parse(&path, text)
            .map_err(|e| LabError::BadConfig(e.to_string()))?;
        let service = &config.services[0];
        let table = tablegen::table::build(service);
        let mut shares = BTreeMap::new();
        for b in &service.backends {
            shares.insert(b.name.clone(), 0.0);
        }
        if table.width > 0 {
            for r in 0..table.rows {
                let primary = table.row(r)[0] as usize;
                *shares
                    .get_mut(&service.backends[primary].name)
                    .expect("known backend") += 1.0 / f64::from(table.rows);
            }
        }
        Ok(shares)
    }

    /// New connections through the VIP of `family` until `pred` holds for a probe of `n` (or
    /// `within` passes): the way to see a table change take effect on both directors.
    pub fn wait_new_flows(
        &self,
        family: Family,
        n: usize,
        within: Duration,
        pred: impl Fn(&ProbeReport) -> bool,
    ) -> Result<ProbeReport, LabError> {
        let within = crate::scaled(within);
        let start = Instant::now();
        let client = self.lab.ns(Node::Client);
        loop {
            crate::signal::check()?;
            let p = probe_tcp(&client, addr::vip_tcp(family), n, 16)?;
            if pred(&p) {
                return Ok(p);
            }
            if start.elapsed() > within {
                return Err(LabError::Timeout {
                    what: format!("new connections to match (last probe: {p})"),
                    after: within,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_serving(&self, within: Duration) -> Result<(), LabError> {
        for f in FAMILIES {
            self.wait_new_flows(f, 40, within, |p| p.failures() == 0)?;
        }
        Ok(())
    }

    /// The VIP TCP service of `family`.
    pub fn vip(&self, family: Family) -> SocketAddr {
        addr::vip_tcp(family)
    }
}
