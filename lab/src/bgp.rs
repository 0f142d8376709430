//! BGP in the lab (`LabOptions::bgp`, on by default): BIRD 2 on the router and on every
//! director, the VIP routes learnt over BGP with BFD, never written by hand.
//!
//! Each director's BIRD learns the route tokens `xdplb-director` writes in its token table
//! (docs/development/route-announcement.md) and announces them to the router; the router's
//! BIRD merges the equal paths into one ECMP route in its kernel table and gives a path with
//! the GRACEFUL_SHUTDOWN community (65535:0) the lowest preference, so it leaves the ECMP group
//! before it is withdrawn. The configs are the shipped example's (etc/bird/) shape with the
//! lab's addresses. BFD (100 ms x 8) notices a dead link or BIRD within 800 ms: the shipped
//! example's 100 ms x 3 flapped in the lab when the shared machine was loaded (sessions ended
//! by BFD with every process alive, the VIP routes gone for seconds), so the lab allows a
//! longer stall and still stays under a second.

use std::path::PathBuf;
use std::time::Duration;

use crate::addr::{self, Family, FAMILIES};
use crate::topology::{Lab, LabError, Node};

/// The router's AS; every director shares one AS.
pub const ROUTER_AS: u32 = 65000;
pub const DIRECTOR_AS: u32 = 65001;
/// The directors' token table and protocol numbers (director.yaml `announce:` defaults).
pub const TOKEN_TABLE: u32 = 200;
pub const TOKEN_PROTO: u8 = 250;
pub const GRACEFUL_PROTO: u8 = 251;

const BFD: &str = "min rx interval 100 ms; min tx interval 100 ms; multiplier 8;";

/// The router's bird.conf: one BGP session per director and family, BFD, and the ECMP route
/// in the kernel.
pub fn router_conf(directors: usize) -> String {
    let mut s = format!(
        "# xdplb lab: the router's BIRD.\n\
         log stderr all;\n\
         router id {rid};\n\
         protocol device {{ }}\n\
         protocol kernel kernel4 {{ merge paths on; ipv4 {{ import none; export where source = RTS_BGP; }}; }}\n\
         protocol kernel kernel6 {{ merge paths on; ipv6 {{ import none; export where source = RTS_BGP; }}; }}\n\
         protocol bfd {{ interface \"to-d*\" {{ {BFD} }}; }}\n\
         # RFC 8326: a path marked GRACEFUL_SHUTDOWN is the least preferred, so the other\n\
         # directors' paths win and it leaves the ECMP group before it is withdrawn.\n\
         filter from_directors {{\n\
         \x20 if net.type = NET_IP4 then {{ if net !~ [ {v4}/32 ] then reject; }}\n\
         \x20 else {{ if net !~ [ {v6}/128 ] then reject; }}\n\
         \x20 if (65535, 0) ~ bgp_community then bgp_local_pref = 0;\n\
         \x20 accept;\n\
         }}\n\
         template bgp director {{\n\
         \x20 local as {ROUTER_AS};\n\
         \x20 hold time 3; keepalive time 1; connect retry time 1; error wait time 1, 5;\n\
         \x20 bfd on;\n\
         }}\n",
        rid = addr::router_client_side(Family::V4),
        v4 = addr::VIP_V4,
        v6 = addr::VIP_V6,
    );
    for i in 1..=directors {
        for f in FAMILIES {
            let (ch, tag) = channel(f);
            s.push_str(&format!(
                "protocol bgp d{i}_{tag} from director {{\n\
                 \x20 source address {local};\n\
                 \x20 neighbor {peer} as {DIRECTOR_AS};\n\
                 \x20 {ch} {{ import filter from_directors; export none; }};\n\
                 }}\n",
                local = addr::router_director_side(f, i),
                peer = addr::director(f, i),
            ));
        }
    }
    s
}

/// Director `i`'s bird.conf: the token table learnt, the VIPs announced to the router.
pub fn director_conf(i: usize) -> String {
    let mut s = format!(
        "# xdplb lab: director-{i}'s BIRD.\n\
         log stderr all;\n\
         router id {rid};\n\
         protocol device {{ }}\n",
        rid = addr::director(Family::V4, i),
    );
    for f in FAMILIES {
        let (ch, tag) = channel(f);
        s.push_str(&format!(
            "protocol kernel tokens_{tag} {{\n\
             \x20 kernel table {TOKEN_TABLE};\n\
             \x20 learn; scan time 2;\n\
             \x20 {ch} {{ import where krt_source = {TOKEN_PROTO} || krt_source = {GRACEFUL_PROTO}; export none; }};\n\
             }}\n"
        ));
    }
    s.push_str(&format!(
        "protocol bfd {{ interface \"eth0\" {{ {BFD} }}; }}\n\
         filter to_routers {{\n\
         \x20 if krt_source = {GRACEFUL_PROTO} then bgp_community.add((65535, 0));\n\
         \x20 accept;\n\
         }}\n"
    ));
    for f in FAMILIES {
        let (ch, tag) = channel(f);
        s.push_str(&format!(
            "protocol bgp router_{tag} {{\n\
             \x20 local {local} as {DIRECTOR_AS};\n\
             \x20 neighbor {peer} as {ROUTER_AS};\n\
             \x20 hold time 3; keepalive time 1; connect retry time 1; error wait time 1, 5;\n\
             \x20 bfd on;\n\
             \x20 {ch} {{ import none; export filter to_routers; next hop self; }};\n\
             }}\n",
            local = addr::director(f, i),
            peer = addr::router_director_side(f, i),
        ));
    }
    s
}

fn channel(f: Family) -> (&'static str, &'static str) {
    match f {
        Family::V4 => ("ipv4", "v4"),
        Family::V6 => ("ipv6", "v6"),
    }
}

impl Lab {
    /// The control socket of `node`'s BIRD.
    pub fn bird_socket(&self, node: Node) -> PathBuf {
        self.run_dir().join(format!("bird-{}.ctl", node.name()))
    }

    /// The process label of `node`'s BIRD.
    pub fn bird_label(node: Node) -> String {
        format!("bird-{}", node.name())
    }

    /// Writes `node`'s bird.conf and starts BIRD in its namespace (in the foreground, as the
    /// lab's child), waiting for its control socket.
    pub fn start_bird(&self, node: Node) -> Result<(), LabError> {
        let conf = match node {
            Node::Router => router_conf(self.options().directors),
            Node::Director(i) => director_conf(i),
            other => panic!("no BIRD on {}", other.name()),
        };
        let path = self.write_file(&format!("bird-{}.conf", node.name()), &conf)?;
        let sock = self.bird_socket(node);
        let _ = std::fs::remove_file(&sock);
        let pid = self.run_dir().join(format!("bird-{}.pid", node.name()));
        let cmd = self
            .ns(node)
            .command("bird")
            .arg("-f")
            .arg("-c")
            .arg(&path)
            .arg("-s")
            .arg(&sock)
            .arg("-P")
            .arg(&pid);
        let label = Self::bird_label(node);
        self.spawn(&label, &cmd)?;
        self.wait_for(&label, Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        })
    }

    /// The pid of `node`'s BIRD (from its pid file).
    pub fn bird_pid(&self, node: Node) -> Option<i32> {
        let pid = self.run_dir().join(format!("bird-{}.pid", node.name()));
        std::fs::read_to_string(pid).ok()?.trim().parse().ok()
    }

    /// `birdc -s <socket> <args>` for `node`'s BIRD.
    pub fn birdc(&self, node: Node, args: &[&str]) -> Result<String, LabError> {
        Ok(self
            .ns(node)
            .command("birdc")
            .arg("-s")
            .arg(self.bird_socket(node))
            .args(args)
            .run()?)
    }

    /// The router's paths to the VIP of `f` in its kernel table (0: no route), and through
    /// which directors.
    pub fn vip_paths(&self, f: Family) -> Result<Vec<usize>, LabError> {
        let fam = if f == Family::V4 { "-4" } else { "-6" };
        let out =
            self.ns(Node::Router)
                .ip([fam, "route", "show", "exact", &f.vip().to_string()])?;
        // A path over a dead link may stay in the route, marked linkdown: it carries nothing.
        let mut via = Vec::new();
        for l in out.lines().filter(|l| !l.contains("linkdown")) {
            for w in l.split_whitespace() {
                if let Some(i) = w.strip_prefix("to-d").and_then(|n| n.parse::<usize>().ok()) {
                    via.push(i);
                }
            }
        }
        via.sort();
        via.dedup();
        Ok(via)
    }

    /// Polls until the router's IPv4 and IPv6 VIP routes go through exactly `directors`;
    /// returns how long it took.
    pub fn wait_vip_paths(
        &self,
        directors: &[usize],
        within: Duration,
    ) -> Result<Duration, LabError> {
        let within = crate::scaled(within);
        let start = std::time::Instant::now();
        loop {
            crate::signal::check()?;
            let mut all = true;
            for f in FAMILIES {
                if self.vip_paths(f)? != directors {
                    all = false;
                }
            }
            if all {
                return Ok(start.elapsed());
            }
            if start.elapsed() > within {
                let now: Vec<_> = FAMILIES
                    .iter()
                    .map(|f| self.vip_paths(*f).unwrap_or_default())
                    .collect();
                return Err(LabError::Timeout {
                    what: format!(
                        "the router's VIP routes via directors {directors:?} (IPv4, IPv6 now \
                         via {now:?}); the router's BGP sessions:\n{}",
                        self.bgp_sessions_text()
                    ),
                    after: within,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The router's BGP sessions (one per director and family) and whether each is
    /// Established.
    pub fn bgp_sessions(&self) -> Result<Vec<(String, bool)>, LabError> {
        let out = self.birdc(Node::Router, &["show", "protocols"])?;
        Ok(out
            .lines()
            .filter(|l| l.starts_with('d') && l.contains("BGP"))
            .map(|l| {
                let name = l.split_whitespace().next().unwrap_or_default().to_string();
                (name, l.contains("Established"))
            })
            .collect())
    }

    /// `birdc show protocols` on the router, or why it could not be had: for error messages.
    fn bgp_sessions_text(&self) -> String {
        match self.birdc(Node::Router, &["show", "protocols"]) {
            Ok(out) => out,
            Err(e) => format!("(birdc failed: {e})"),
        }
    }

    /// Polls until every BGP session of the router is Established (BFD up with it).
    pub fn wait_bgp_established(&self, within: Duration) -> Result<Duration, LabError> {
        let within = crate::scaled(within);
        let want = 2 * self.options().directors;
        let start = std::time::Instant::now();
        loop {
            crate::signal::check()?;
            self.check_running(&Self::bird_label(Node::Router))?;
            let up = self
                .bgp_sessions()
                .map(|s| s.iter().filter(|(_, up)| *up).count())
                .unwrap_or(0);
            if up == want {
                return Ok(start.elapsed());
            }
            if start.elapsed() > within {
                return Err(LabError::Timeout {
                    what: format!(
                        "the router's {want} BGP sessions to the directors to be Established; \
                         now:\n{}",
                        self.bgp_sessions_text()
                    ),
                    after: within,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
