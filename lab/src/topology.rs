//! The lab topology: one network namespace per machine, veth links between them, and a guard
//! ([`Lab`]) that removes all of it when dropped — on success, on a failed assertion (unwinding),
//! and on Ctrl-C (the binaries turn the signal into an early return, see [`crate::signal`]).
//!
//! ```text
//!                                   10.200.10.0/30
//!                           +------ to-d1 ======== eth0 [ director-1 ]  xdplb-director:
//!                           |      (XDP pass)                           XDP, one arm (GUE
//!  [ client ]               |                                           back out via XDP_TX),
//!    eth0 ===== to-client [ router ]  BIRD 2                            BIRD 2 (BGP + BFD)
//!  10.200.1.0/24            |  ECMP (L4 hash)  10.200.10.4/30
//!                           +------ to-d2 ======== eth0 [ director-2 ]
//!                           |      (XDP pass)
//!                         br-be  (bridge: the backend network, 10.200.2.0/24)
//!                     +-----+-----+
//!                   to-b1 to-b2 to-b3
//!                     |     |     |
//!                   eth0  eth0  eth0
//!             [ backend-1 ] [ backend-2 ] [ backend-3 ]   xdplb-redirector (TC ingress),
//!                                                         xdplb-lab-server, VIPs on lo
//! ```
//!
//! See docs/development/lab.md for the address plan and why each choice.
//!
//! Names: every namespace is `xl<pid>-<n>-<node>` (e.g. `xl4242-0-backend-1`): unique per process
//! and per lab, so concurrent tests and two runs in a row never collide, and `xdplb-lab cleanup`
//! can find what a killed run left behind. Interface names are local to each namespace.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::addr::{self, Family, FAMILIES};
use crate::cmd::{Cmd, CmdError};
use crate::netns::{Netns, NetnsError};

/// Every lab namespace and run directory name starts with this.
pub const NS_PREFIX: &str = "xl";
/// Where labs keep their run directories (configs, logs, bpffs mount).
pub const RUN_ROOT: &str = "/run/xdplb-lab";

/// The lab's XDP pass program (see bpf/xdp_pass.bpf.c).
static XDP_PASS_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xdp_pass.o"));

static LAB_SEQ: AtomicUsize = AtomicUsize::new(0);

/// Errors while building or driving the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// An external command failed.
    #[error(transparent)]
    Cmd(#[from] CmdError),
    /// Running code inside a namespace failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A file or directory of the lab could not be written.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Mounting the lab's bpffs failed.
    #[error("mount bpffs on {path}")]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// Why.
        source: nix::Error,
    },
    /// Something did not become ready in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// A process the lab started exited by itself.
    #[error("{name} exited early ({status}); its log:\n{log}")]
    Exited {
        /// The process's label.
        name: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its log.
        log: String,
    },
    /// backends.yaml does not parse (the lab reads it to know the expected shares).
    #[error("{0}")]
    BadConfig(String),
    /// Ctrl-C (see [`crate::signal`]): the wait was cut short so the lab can be torn down.
    #[error(transparent)]
    Interrupted(#[from] crate::signal::Interrupted),
    /// No process with that label is running.
    #[error("no running process called {0}")]
    NoSuchProcess(String),
}

/// A machine of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    /// Where the client driver runs.
    Client,
    /// The router: ECMP over the directors, backend network bridge, DSR return path.
    Router,
    /// Director `i` (1-based).
    Director(usize),
    /// Backend `i` (1-based).
    Backend(usize),
}

impl Node {
    /// The node's short name: `client`, `router`, `director-1`, `backend-3`. Backends carry the
    /// same name in backends.yaml.
    pub fn name(self) -> String {
        match self {
            Node::Client => "client".into(),
            Node::Router => "router".into(),
            Node::Director(i) => format!("director-{i}"),
            Node::Backend(i) => format!("backend-{i}"),
        }
    }
}

/// How many of each machine the lab has.
#[derive(Debug, Clone, Copy)]
pub struct LabOptions {
    /// Directors (the router spreads the VIPs over all of them).
    pub directors: usize,
    /// Backends on the backend network.
    pub backends: usize,
    /// BIRD 2 on the router and the directors: the router learns the VIP routes over BGP (with
    /// BFD) from what each director announces (see [`crate::bgp`]). On by default, and needed
    /// by xdplb in the lab ([`crate::system::System`]): the lab has no static route to the VIPs
    /// through the directors. Off only for the plain-routing self-tests of the topology
    /// ([`LabOptions::plain`]), where no xdplb component runs and nothing would be announced.
    pub bgp: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            directors: 2,
            backends: 3,
            bgp: true,
        }
    }
}

impl LabOptions {
    /// The default topology without BIRD, for the plain [`Routing`] modes only.
    pub fn plain() -> Self {
        Self {
            bgp: false,
            ..Self::default()
        }
    }
}

/// How the router sends VIP traffic on. The plain-routing modes need no xdplb component at all:
/// they prove the topology (ECMP, DSR return path, the lab's own server and client) by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Plain routing: the router sends the VIPs straight to one backend.
    Backend(usize),
    /// Plain routing: ECMP (L4 hash) over all backends.
    EcmpBackends,
    /// ECMP over the directors, which forward as plain IP routers (one arm, back to the router);
    /// the router sends what comes back from director `i` to backend `i` (policy routing on the
    /// incoming interface). Exercises every link the real data path uses.
    PlainDirectors,
    /// ECMP over the directors, which run `xdplb-director`: the real thing. The router learns
    /// these routes over BGP from the directors' BIRD (never static): selecting this mode only
    /// removes what a plain mode wrote.
    Directors,
}

struct Running {
    label: String,
    child: Child,
    log: PathBuf,
}

/// A running lab. Dropping it tears everything down: processes it started, its namespaces (and
/// with them every veth, route, XDP and TC program), its bpffs mount and its run directory.
pub struct Lab {
    prefix: String,
    run_dir: PathBuf,
    opts: LabOptions,
    namespaces: Vec<Netns>,
    children: Mutex<Vec<Running>>,
    routing: Mutex<Option<Routing>>,
    bpffs: Mutex<Option<PathBuf>>,
    torn_down: bool,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("prefix", &self.prefix)
            .field("opts", &self.opts)
            .finish()
    }
}

impl Lab {
    /// Builds the topology. On any error, what was built so far is removed again.
    pub fn up(opts: LabOptions) -> Result<Self, LabError> {
        // 0 directors: the co-located layout, where the backends direct (System::start_colocated).
        assert!((0..=9).contains(&opts.directors), "0 to 9 directors");
        assert!((1..=9).contains(&opts.backends), "1 to 9 backends");
        let seq = LAB_SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("{NS_PREFIX}{}-{seq}", std::process::id());
        let run_dir = Path::new(RUN_ROOT).join(&id);
        let mut lab = Lab {
            prefix: format!("{id}-"),
            run_dir,
            opts,
            namespaces: Vec::new(),
            children: Mutex::new(Vec::new()),
            routing: Mutex::new(None),
            bpffs: Mutex::new(None),
            torn_down: false,
        };
        // From here on, an error drops `lab`, which removes whatever exists already.
        lab.build()?;
        Ok(lab)
    }

    /// The nodes of this lab, in creation order.
    pub fn nodes(&self) -> Vec<Node> {
        let mut v = vec![Node::Client, Node::Router];
        v.extend((1..=self.opts.directors).map(Node::Director));
        v.extend((1..=self.opts.backends).map(Node::Backend));
        v
    }

    /// The options the lab was built with.
    pub fn options(&self) -> LabOptions {
        self.opts
    }

    /// The namespace name prefix of this lab (`xl<pid>-<n>-`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The lab's run directory: configs, logs.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The namespace of `node`.
    pub fn ns(&self, node: Node) -> Netns {
        Netns::existing(&format!("{}{}", self.prefix, node.name()))
    }

    fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> LabError + 'a {
        move |source| LabError::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }

    fn build(&mut self) -> Result<(), LabError> {
        fs::create_dir_all(&self.run_dir).map_err(Self::io("create", &self.run_dir))?;
        let xdp_obj = self.run_dir.join("xdp_pass.o");
        fs::write(&xdp_obj, XDP_PASS_OBJ).map_err(Self::io("write", &xdp_obj))?;

        for node in self.nodes() {
            let ns = Netns::create(&format!("{}{}", self.prefix, node.name()))?;
            self.namespaces.push(ns.clone());
            // Before any link exists, so every interface starts from these defaults:
            // no reverse-path filter anywhere (DSR replies leave from the VIP, which the router
            // routes elsewhere), and no IPv6 duplicate address detection delay.
            let mut s = vec![
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
                // A link that goes down and up again (a director "dying" and coming back) keeps
                // its IPv6 addresses, as IPv4 does.
                ("net.ipv6.conf.all.keep_addr_on_down", "1"),
                ("net.ipv6.conf.default.keep_addr_on_down", "1"),
            ];
            if node == Node::Router {
                s.extend([
                    ("net.ipv4.ip_forward", "1"),
                    ("net.ipv6.conf.all.forwarding", "1"),
                    ("net.ipv6.conf.default.forwarding", "1"),
                    // ECMP on the L4 5-tuple: flows of one client spread over the directors.
                    ("net.ipv4.fib_multipath_hash_policy", "1"),
                    ("net.ipv6.fib_multipath_hash_policy", "1"),
                    // A director whose link lost carrier leaves the ECMP group at once (what
                    // BFD or a BGP session drop does for a real router).
                    ("net.ipv4.conf.all.ignore_routes_with_linkdown", "1"),
                    ("net.ipv4.conf.default.ignore_routes_with_linkdown", "1"),
                    ("net.ipv6.conf.all.ignore_routes_with_linkdown", "1"),
                    ("net.ipv6.conf.default.ignore_routes_with_linkdown", "1"),
                    ("net.ipv4.conf.all.send_redirects", "0"),
                    ("net.ipv4.conf.default.send_redirects", "0"),
                ]);
            }
            ns.sysctl(&s)?;
        }

        let router = self.ns(Node::Router);
        self.veth(Node::Router, "to-client", Node::Client, 1500)?;
        for i in 1..=self.opts.directors {
            self.veth(
                Node::Router,
                &format!("to-d{i}"),
                Node::Director(i),
                addr::INNER_MTU,
            )?;
            // The director sends GUE back out of the link it received on (native XDP_TX);
            // a veth delivers such frames only when its peer runs an XDP program.
            router.ip([
                "link",
                "set",
                "dev",
                &format!("to-d{i}"),
                "xdpdrv",
                "obj",
                xdp_obj.to_str().expect("utf-8 run dir"),
                "sec",
                "xdp",
            ])?;
        }
        let mtu = addr::INNER_MTU.to_string();
        router.ip([
            "link",
            "add",
            "br-be",
            "mtu",
            &mtu,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        router.ip(["link", "set", "br-be", "up"])?;
        for i in 1..=self.opts.backends {
            let port = format!("to-b{i}");
            self.veth(Node::Router, &port, Node::Backend(i), addr::INNER_MTU)?;
            router.ip(["link", "set", &port, "master", "br-be"])?;
        }

        for f in FAMILIES {
            let lan = addr::lan_prefix(f);
            let dl = addr::director_link_prefix(f);
            self.add_addr(Node::Client, "eth0", addr::client(f), lan)?;
            self.add_addr(Node::Router, "to-client", addr::router_client_side(f), lan)?;
            self.add_addr(Node::Router, "br-be", addr::router_backend_side(f), lan)?;
            self.default_route(Node::Client, addr::router_client_side(f))?;
            for i in 1..=self.opts.directors {
                let dev = format!("to-d{i}");
                self.add_addr(Node::Router, &dev, addr::router_director_side(f, i), dl)?;
                self.add_addr(Node::Director(i), "eth0", addr::director(f, i), dl)?;
                self.default_route(Node::Director(i), addr::router_director_side(f, i))?;
            }
            for i in 1..=self.opts.backends {
                self.add_addr(Node::Backend(i), "eth0", addr::backend(f, i), lan)?;
                self.default_route(Node::Backend(i), addr::router_backend_side(f))?;
            }
        }
        if self.opts.bgp {
            self.start_bird(Node::Router)?;
            for i in 1..=self.opts.directors {
                self.start_bird(Node::Director(i))?;
            }
            // Sessions up before anyone relies on them: a lab whose BGP does not come up says
            // so here, not later as missing routes.
            self.wait_bgp_established(Duration::from_secs(30))?;
        }
        Ok(())
    }

    /// A veth pair from `a`'s `a_dev` to `b`'s `eth0`, both up, created directly inside the two
    /// namespaces (no name ever appears in the host's own namespace).
    fn veth(&self, a: Node, a_dev: &str, b: Node, mtu: u32) -> Result<(), LabError> {
        let (na, nb) = (self.ns(a), self.ns(b));
        let mtu = mtu.to_string();
        na.ip(["link", "add", a_dev, "type", "veth", "peer", "name", "eth0"])?;
        na.ip(["link", "set", "eth0", "netns", nb.name()])?;
        for (ns, dev) in [(&na, a_dev), (&nb, "eth0")] {
            ns.ip(["link", "set", dev, "mtu", &mtu, "up"])?;
            // Checksums and segmentation in software: a frame that an XDP program rewrites
            // must carry a complete checksum and fit the MTU, as it would from a real NIC.
            ns.command("ethtool")
                .args(["-K", dev, "tx", "off", "tso", "off", "gso", "off"])
                .run()?;
        }
        Ok(())
    }

    fn add_addr(
        &self,
        node: Node,
        dev: &str,
        ip: std::net::IpAddr,
        len: u8,
    ) -> Result<(), LabError> {
        let cidr = format!("{ip}/{len}");
        let mut args = vec!["addr", "add", cidr.as_str(), "dev", dev];
        if ip.is_ipv6() {
            args.push("nodad");
        }
        self.ns(node).ip(args)?;
        Ok(())
    }

    fn default_route(&self, node: Node, via: std::net::IpAddr) -> Result<(), LabError> {
        let fam = if via.is_ipv6() { "-6" } else { "-4" };
        self.ns(node)
            .ip([fam, "route", "add", "default", "via", &via.to_string()])?;
        Ok(())
    }

    /// Puts both VIPs on backend `i`'s loopback, as a DSR backend has them, with ARP for them
    /// off. The redirector's own setup does this in the real path; the plain-routing modes need
    /// it done by hand.
    pub fn add_vips_on_backend(&self, i: usize) -> Result<(), LabError> {
        let ns = self.ns(Node::Backend(i));
        ns.sysctl(&[
            ("net.ipv4.conf.all.arp_ignore", "1"),
            ("net.ipv4.conf.all.arp_announce", "2"),
        ])?;
        for f in FAMILIES {
            let cidr = format!("{}/{}", f.vip(), addr::host_prefix(f));
            ns.ip(["addr", "replace", &cidr, "dev", "lo"])?;
        }
        Ok(())
    }

    /// Points the router's VIP routes at `routing`. Idempotent; switching modes replaces the
    /// routes and the policy rules of the previous mode. [`Routing::Directors`] writes no route:
    /// it removes the plain modes' static ones, so only what BIRD learnt over BGP is left.
    pub fn route_vips(&self, routing: Routing) -> Result<(), LabError> {
        let router = self.ns(Node::Router);
        let mut current = self.routing.lock().unwrap();
        if *current == Some(Routing::PlainDirectors) {
            self.plain_directors(false)?;
        }
        for f in FAMILIES {
            let fam = if f == Family::V4 { "-4" } else { "-6" };
            let vip = format!("{}/{}", f.vip(), addr::host_prefix(f));
            if routing == Routing::Directors {
                if current.is_some_and(|c| c != Routing::Directors) {
                    // The static route of the previous plain mode (`proto boot`); BIRD's own
                    // route (`proto bird`) stays.
                    router.ip([fam, "route", "del", &vip, "proto", "boot"])?;
                }
                continue;
            }
            let mut args: Vec<String> = [fam, "route", "replace", &vip]
                .iter()
                .map(|s| s.to_string())
                .collect();
            match routing {
                Routing::Backend(i) => {
                    args.extend(["via".into(), addr::backend(f, i).to_string()]);
                }
                Routing::EcmpBackends => {
                    for i in 1..=self.opts.backends {
                        let via = addr::backend(f, i).to_string();
                        args.extend(["nexthop".into(), "via".into(), via]);
                        args.extend(["dev".into(), "br-be".into()]);
                    }
                }
                Routing::Directors => unreachable!("no static route to the directors"),
                Routing::PlainDirectors => {
                    for i in 1..=self.opts.directors {
                        let via = addr::director(f, i).to_string();
                        args.extend(["nexthop".into(), "via".into(), via]);
                        args.extend(["dev".into(), format!("to-d{i}")]);
                    }
                }
            }
            router.ip(&args)?;
        }
        if routing == Routing::PlainDirectors {
            self.plain_directors(true)?;
        }
        *current = Some(routing);
        Ok(())
    }

    /// Turns the directors into plain one-armed IP routers (or back), with per-director policy
    /// routing on the router.
    fn plain_directors(&self, on: bool) -> Result<(), LabError> {
        let router = self.ns(Node::Router);
        let v = if on { "1" } else { "0" };
        for i in 1..=self.opts.directors {
            self.ns(Node::Director(i)).sysctl(&[
                ("net.ipv4.ip_forward", v),
                ("net.ipv6.conf.all.forwarding", v),
                ("net.ipv4.conf.all.send_redirects", "0"),
                ("net.ipv4.conf.eth0.send_redirects", "0"),
            ])?;
            let table = (100 + i).to_string();
            let pref = (1000 + i).to_string();
            let backend = (i - 1) % self.opts.backends + 1;
            for f in FAMILIES {
                let fam = if f == Family::V4 { "-4" } else { "-6" };
                let iif = format!("to-d{i}");
                if on {
                    let vip = format!("{}/{}", f.vip(), addr::host_prefix(f));
                    let via = addr::backend(f, backend).to_string();
                    router.ip([fam, "route", "replace", &vip, "via", &via, "table", &table])?;
                    router.ip([
                        fam, "rule", "add", "pref", &pref, "iif", &iif, "lookup", &table,
                    ])?;
                } else {
                    router.ip([fam, "rule", "del", "pref", &pref])?;
                    router.ip([fam, "route", "flush", "table", &table])?;
                }
            }
        }
        Ok(())
    }

    /// Sets director `i`'s link up or down from the director's side: a director host dying (or
    /// coming back). The router sees the carrier go and leaves it out of the ECMP group.
    pub fn set_director_link(&self, i: usize, up: bool) -> Result<(), LabError> {
        let ns = self.ns(Node::Director(i));
        ns.ip(["link", "set", "eth0", if up { "up" } else { "down" }])?;
        if up {
            // The kernel dropped the default routes with the link; a rebooted host has them again.
            for f in FAMILIES {
                let fam = if f == Family::V4 { "-4" } else { "-6" };
                let via = addr::router_director_side(f, i).to_string();
                ns.ip([fam, "route", "replace", "default", "via", &via])?;
            }
        }
        Ok(())
    }

    /// The lab's bpffs (mounted on first use under the run directory). `ip netns exec` gives each
    /// process a fresh /sys, so pins must live on a bpffs of our own that every namespace sees.
    pub fn bpffs(&self) -> Result<PathBuf, LabError> {
        let mut guard = self.bpffs.lock().unwrap();
        if let Some(p) = &*guard {
            return Ok(p.clone());
        }
        let path = self.run_dir.join("bpffs");
        fs::create_dir_all(&path).map_err(Self::io("create", &path))?;
        nix::mount::mount(
            Some("bpf"),
            &path,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|source| LabError::Mount {
            path: path.clone(),
            source,
        })?;
        *guard = Some(path.clone());
        Ok(path)
    }

    /// Writes `text` to `name` in the run directory, atomically (temp file + rename), the way an
    /// editor or config management saves a file.
    pub fn write_file(&self, name: &str, text: &str) -> Result<PathBuf, LabError> {
        let path = self.run_dir.join(name);
        daemon_support::write_atomic(&path, text.as_bytes(), 0o644)
            .map_err(Self::io("write", &path))?;
        Ok(path)
    }

    /// Starts `cmd` in the background under `label`, logging to `<run dir>/<label>.log`.
    pub fn spawn(&self, label: &str, cmd: &Cmd) -> Result<(), LabError> {
        let log = self.run_dir.join(format!("{label}.log"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(Self::io("open", &log))?;
        writeln!(&file, "### {cmd}").map_err(Self::io("write", &log))?;
        let child = cmd.spawn_logged(&file)?;
        self.children.lock().unwrap().push(Running {
            label: label.to_owned(),
            child,
            log,
        });
        Ok(())
    }

    /// Fails if the process called `label` has exited (with the end of its log).
    pub fn check_running(&self, label: &str) -> Result<(), LabError> {
        let mut children = self.children.lock().unwrap();
        let r = children
            .iter_mut()
            .find(|r| r.label == label)
            .ok_or_else(|| LabError::NoSuchProcess(label.to_owned()))?;
        if let Ok(Some(status)) = r.child.try_wait() {
            let log = log_tail(&r.log, 30);
            let name = r.label.clone();
            children.retain(|r| r.label != label);
            return Err(LabError::Exited { name, status, log });
        }
        Ok(())
    }

    /// The log of the process called `label`, as written so far.
    pub fn log(&self, label: &str) -> String {
        fs::read_to_string(self.run_dir.join(format!("{label}.log"))).unwrap_or_default()
    }

    /// Stops the process called `label`: `signal`, then SIGKILL if it is still there after
    /// `grace`. Returns its exit status.
    pub fn stop(
        &self,
        label: &str,
        signal: Signal,
        grace: Duration,
    ) -> Result<std::process::ExitStatus, LabError> {
        let mut running = {
            let mut children = self.children.lock().unwrap();
            let pos = children
                .iter()
                .position(|r| r.label == label)
                .ok_or_else(|| LabError::NoSuchProcess(label.to_owned()))?;
            children.remove(pos)
        };
        Ok(stop_child(&mut running.child, signal, grace))
    }

    /// Starts the lab server in every backend and waits until each answers on TCP.
    pub fn start_servers(&self, server_bin: &Path) -> Result<(), LabError> {
        for i in 1..=self.opts.backends {
            self.spawn_server(server_bin, i)?;
        }
        for i in 1..=self.opts.backends {
            self.wait_server(i)?;
        }
        Ok(())
    }

    /// Starts the lab server in backend `i` (again, after a test stopped it) and waits until it
    /// answers on TCP.
    pub fn start_server(&self, server_bin: &Path, i: usize) -> Result<(), LabError> {
        self.spawn_server(server_bin, i)?;
        self.wait_server(i)
    }

    fn spawn_server(&self, server_bin: &Path, i: usize) -> Result<(), LabError> {
        let node = Node::Backend(i);
        let cmd = self.ns(node).command(server_bin).args([
            "--name",
            &node.name(),
            "--tcp",
            &addr::TCP_PORT.to_string(),
            "--udp",
            &addr::UDP_PORT.to_string(),
            "--vip",
            &addr::VIP_V4.to_string(),
            "--vip",
            &addr::VIP_V6.to_string(),
        ]);
        self.spawn(&format!("server-{}", node.name()), &cmd)
    }

    fn wait_server(&self, i: usize) -> Result<(), LabError> {
        let label = format!("server-{}", Node::Backend(i).name());
        let target = SocketAddr::new(addr::backend(Family::V4, i), addr::TCP_PORT);
        self.wait_for(&label, Duration::from_secs(10), || {
            self.ns(Node::Client)
                .run(move || TcpStream::connect_timeout(&target, Duration::from_millis(300)))
                .map(|r| r.is_ok())
                .unwrap_or(false)
        })
    }

    /// Polls `ready` every 50 ms until it holds, failing early if the process `label` exits.
    pub fn wait_for(
        &self,
        label: &str,
        within: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), LabError> {
        let within = crate::scaled(within);
        let start = Instant::now();
        loop {
            crate::signal::check()?;
            self.check_running(label)?;
            if ready() {
                return Ok(());
            }
            if start.elapsed() > within {
                return Err(LabError::Timeout {
                    what: format!("{label} to be ready"),
                    after: within,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Tears the lab down now and reports every step that failed (dropping does the same but can
    /// only print).
    pub fn shutdown(mut self) -> Result<(), Vec<String>> {
        let errors = self.teardown();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn teardown(&mut self) -> Vec<String> {
        if self.torn_down {
            return Vec::new();
        }
        self.torn_down = true;
        let mut errors = Vec::new();
        let failing = std::thread::panicking();
        let mut children =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()));
        // Stop in reverse start order: daemons before the servers they depend on.
        for r in children.iter_mut().rev() {
            if failing {
                eprintln!("--- {} log (end) ---\n{}", r.label, log_tail(&r.log, 40));
            }
            stop_child(&mut r.child, Signal::SIGTERM, Duration::from_secs(3));
        }
        for ns in self.namespaces.iter().rev() {
            // Anything still inside (e.g. a grandchild of a daemon) was started by this lab.
            if let Ok(pids) = ns.pids() {
                for pid in pids {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        if let Some(p) = self.bpffs.lock().unwrap_or_else(|e| e.into_inner()).take() {
            if let Err(e) = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH) {
                errors.push(format!("umount {}: {e}", p.display()));
            }
        }
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = ns.delete() {
                errors.push(e.to_string());
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.run_dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                errors.push(format!("remove {}: {e}", self.run_dir.display()));
            }
        }
        errors
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for e in self.teardown() {
            eprintln!("lab teardown: {e}");
        }
    }
}

fn stop_child(child: &mut Child, signal: Signal, grace: Duration) -> std::process::ExitStatus {
    let pid = Pid::from_raw(child.id() as i32);
    if let Ok(Some(status)) = child.try_wait() {
        return status;
    }
    let _ = kill(pid, signal);
    let start = Instant::now();
    while start.elapsed() < grace {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(pid, Signal::SIGKILL);
    child.wait().expect("wait for a child we started")
}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
