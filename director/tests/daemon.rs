//! The daemon in-process (shutdown handle): reload on file change (bad edit kept out, good
//! edit picked up), restart without interrupting forwarding, detach, status, atomic swaps
//! under traffic, and the unresolved-neighbour fallback with real packets between namespaces.

mod common;

use std::net::{IpAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use director::config::{DirectorConfig, XdpMode};
use director::datapath::Settings;
use director::datapath::{Datapath, PinnedView};
use director::state::State;
use director::Control;
use tablegen::hash::Flow;

fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("debug")
        .try_init();
}

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

fn backends(ports: &[u8], extra: &str) -> String {
    let mut s = format!(
        "services:\n  - name: web\n    hash_key: {KEY}\n    seed: {SEED}\n    table_bits: 8\n    binds:\n      - {{ vip: 10.100.0.1, proto: tcp, port: 80 }}\n    backends:\n"
    );
    for p in ports {
        s.push_str(&format!("      - {{ name: b{p}, address: 10.1.0.{p} }}\n"));
    }
    s.push_str(extra);
    s
}

/// A TCP packet to the `web` VIP of [`backends`].
fn vip_packet() -> Vec<u8> {
    tcp_packet(
        "192.0.2.1".parse().unwrap(),
        "10.100.0.1".parse().unwrap(),
        1,
        80,
        b"",
    )
}

/// Replace a file the way editors do: write a temporary file, rename it over.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Setup {
    lab: Lab,
    dir: PathBuf,
    cfg: DirectorConfig,
}

impl Setup {
    fn new() -> Setup {
        Setup::with("")
    }

    /// With more director.yaml lines.
    fn with(extra: &str) -> Setup {
        Setup::on(Lab::new(), "dp0", extra)
    }

    /// On `lab`, attached to `interfaces` (a YAML list's items, e.g. "dp0, dm0").
    fn on(lab: Lab, interfaces: &str, extra: &str) -> Setup {
        logs();
        let dir = PathBuf::from(format!("/run/{}", unique("xdplb-daemon-test-")));
        std::fs::create_dir_all(&dir).unwrap();
        let yaml = format!(
            "interfaces: [{interfaces}]\nxdp_mode: generic\nencap_source_v4: 10.1.0.1\nbpffs_dir: {}\nbackends: {}\nstate_dir: {}\nreload_debounce_ms: 5\n{extra}",
            lab.fs.root.display(),
            dir.join("backends.yaml").display(),
            dir.display()
        );
        let cfg = DirectorConfig::parse(&dir.join("director.yaml"), &yaml).unwrap();
        assert_eq!(cfg.xdp_mode, XdpMode::Generic);
        Setup { lab, dir, cfg }
    }

    fn backends_path(&self) -> PathBuf {
        self.dir.join("backends.yaml")
    }

    fn start(
        &self,
    ) -> (
        director::Handle,
        JoinHandle<Result<(), director::error::DaemonError>>,
    ) {
        let control = Control::new();
        let handle = control.handle();
        let cfg = self.cfg.clone();
        let j = spawn_in(&self.lab.ns.name, move || director::run(cfg, control));
        (handle, j)
    }

    fn state(&self) -> State {
        State::read(&self.cfg.state_file()).unwrap_or_default()
    }

    fn live_version(&self) -> Option<u64> {
        PinnedView::open(&self.cfg.pin_dir())
            .ok()?
            .table_hdr(0)
            .map(|h| h.version)
    }

    fn xdp_prog_id(&self) -> Option<u32> {
        let out = std::process::Command::new("ip")
            .args(["-n", &self.lab.ns.name, "-d", "-j", "link", "show", "dp0"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["xdp"]["prog"]["id"].as_u64().map(|x| x as u32)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn version_of(yaml: &str) -> u64 {
    let l = director::source::build(Path::new("b.yaml"), yaml).unwrap();
    l.tables[0].version
}

#[test]
fn reload_refuses_a_bad_edit_and_picks_up_the_next_good_one() {
    let s = Setup::new();
    let v1 = backends(&[11, 12], "");
    std::fs::write(s.backends_path(), &v1).unwrap();
    let (h, j) = s.start();
    wait_until("first table", Duration::from_secs(10), || {
        s.live_version() == Some(version_of(&v1))
    });
    wait_until("attached", Duration::from_secs(10), || {
        s.xdp_prog_id().is_some()
    });

    // A bad edit (unknown state on line 11), saved by rename: refused, old table stays.
    let bad = backends(
        &[11, 12],
        "      - { name: b13, address: 10.1.0.13, state: sleepy }\n",
    );
    replace(&s.backends_path(), &bad);
    wait_until("rejection", Duration::from_secs(10), || {
        s.state().last_rejected.is_some()
    });
    let err = s.state().last_rejected.unwrap().error;
    assert!(err.contains("backends.yaml:11:"), "file:line:col in {err}");
    assert_eq!(s.live_version(), Some(version_of(&v1)));

    // The next good edit (written in place) goes live.
    let v2 = backends(&[11, 12, 13], "");
    let t0 = Instant::now();
    std::fs::write(s.backends_path(), &v2).unwrap();
    wait_until("second table", Duration::from_secs(10), || {
        s.live_version() == Some(version_of(&v2))
    });
    eprintln!("save -> live: {:?}", t0.elapsed());

    // SIGHUP's path: an explicit reload of an unchanged file swaps nothing.
    h.reload();
    let before = s.state().last_reload.unwrap().time;
    wait_until("reload recorded", Duration::from_secs(10), || {
        s.state()
            .last_reload
            .is_some_and(|r| r.swapped.is_empty() && r.time >= before)
    });
    h.shutdown();
    j.join().unwrap().unwrap();
}

/// A `tracing` writer into a shared buffer: the log lines of one thread, for assertions.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines().map(str::to_string).collect()
    }
}

#[test]
fn attaching_to_a_veth_warns_once_and_says_what_to_do() {
    let lab = Lab::new();
    // A bridge beside the lab's veth dp0: attached alike, but no veth.
    lab.ns.ip(&["link", "add", "dm0", "type", "bridge"]);
    lab.ns.ip(&["link", "set", "dm0", "up"]);
    let drivers = lab.ns.run(|| {
        ["dp0", "dm0", "nonexistent0"].map(|i| director::host::driver(i).map_err(|e| e.kind()))
    });
    assert_eq!(drivers[0].as_deref(), Ok("veth"));
    assert_eq!(drivers[1].as_deref(), Ok("bridge"));
    assert!(drivers[2].is_err(), "{drivers:?}");

    let s = Setup::on(lab, "dp0, dm0", "");
    std::fs::write(s.backends_path(), backends(&[11], "")).unwrap();
    let log = Captured::default();
    let control = Control::new();
    let h = control.handle();
    let cfg = s.cfg.clone();
    let writer = log.clone();
    let j = spawn_in(&s.lab.ns.name, move || {
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter("info")
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || director::run(cfg, control))
    });
    wait_until("both attached", Duration::from_secs(10), || {
        s.state().interfaces.len() == 2
    });
    h.shutdown();
    j.join().unwrap().unwrap();

    let lines = log.lines();
    let attached: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("xdp attached"))
        .collect();
    assert_eq!(attached.len(), 2, "{lines:#?}");
    let warned: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("veth"))
        .collect();
    assert_eq!(warned.len(), 1, "one warning, for dp0 only: {lines:#?}");
    let w = warned[0];
    eprintln!("the warning: {w}");
    for what in [
        "iface=\"dp0\"",
        "peer runs an XDP program",
        "ethtool -K <their veth> tx off",
        "docs/setup/director.md",
    ] {
        assert!(w.contains(what), "{what:?} missing from {w}");
    }
}

/// The sysctls `kernel_fallback` sets on dp0 (IPv4 only here), read in the lab namespace.
const DP0_SYSCTLS: [&str; 3] = [
    "/proc/sys/net/ipv4/conf/dp0/forwarding",
    "/proc/sys/net/ipv4/conf/dp0/accept_local",
    "/proc/sys/net/ipv4/conf/dp0/send_redirects",
];

fn read_sysctls(s: &Setup) -> Vec<String> {
    s.lab.ns.run(|| {
        DP0_SYSCTLS
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap().trim().to_string())
            .collect()
    })
}

#[test]
fn restart_keeps_forwarding_and_detach_removes_everything() {
    let s = Setup::new();
    let v1 = backends(&[11, 12], "");
    std::fs::write(s.backends_path(), &v1).unwrap();
    // Known values before: forwarding on (the lab's), the other two as the daemon does not
    // want them.
    s.lab.ns.run(|| {
        for (p, v) in DP0_SYSCTLS.iter().zip(["1", "0", "1"]) {
            std::fs::write(p, v).unwrap();
        }
    });
    let before = read_sysctls(&s);
    assert_eq!(before, ["1", "0", "1"]);
    let (h, j) = s.start();
    wait_until("first table", Duration::from_secs(10), || {
        s.live_version() == Some(version_of(&v1))
    });
    wait_until("attached", Duration::from_secs(10), || s.state().pid != 0);
    let prog1 = s.xdp_prog_id().unwrap();
    h.shutdown();
    j.join().unwrap().unwrap();
    assert_eq!(read_sysctls(&s), ["1", "1", "0"], "kernel_fallback applied");
    let journal = daemon_support::sysctl::Journal::new(s.cfg.sysctl_log());
    let log = journal.changes().unwrap();
    assert_eq!(log.len(), 2, "only what it changed: {log:?}");

    // Daemon gone: still attached, tables still in the kernel, packets still forwarded.
    assert_eq!(s.xdp_prog_id(), Some(prog1));
    assert_eq!(s.live_version(), Some(version_of(&v1)));
    let pin = s.cfg.pin_dir();
    let ingress = s.lab.ingress;
    let forwarded = move || {
        let pin = pin.clone();
        move || {
            let dp = Datapath::open(&pin).unwrap();
            let f = vip_packet();
            dp.test_run(&f, ingress).unwrap().0
        }
    };
    assert_eq!(s.lab.ns.run(forwarded()), out_dp0());

    // Restart: the new program replaces the old one in the same link; tables untouched.
    let (h, j) = s.start();
    wait_until("restarted", Duration::from_secs(10), || {
        s.state().pid != 0 && s.xdp_prog_id().is_some_and(|p| p != prog1)
    });
    assert_eq!(s.live_version(), Some(version_of(&v1)));
    let st = s.state();
    assert_eq!(st.interfaces.len(), 1);
    assert_eq!(st.interfaces[0].mode, "generic");
    assert!(
        st.last_reload.unwrap().swapped.is_empty(),
        "same config: no swap on restart"
    );
    // The restart found the values set: the originals recorded first are kept.
    assert_eq!(journal.changes().unwrap(), log);
    assert_eq!(s.lab.ns.run(forwarded()), out_dp0());

    // status reads the pinned maps and the state file.
    let status = director::status::gather(&s.cfg);
    assert!(status.loaded);
    assert_eq!(status.services.len(), 1);
    assert!(status.services[0].live);
    assert_eq!(
        status.services[0].version,
        format!("{:016x}", version_of(&v1))
    );
    let json: serde_json::Value = serde_json::from_str(&status.to_json()).unwrap();
    assert_eq!(json["interfaces"][0]["name"], "dp0");
    assert!(status.to_text().contains("interface dp0: xdp generic"));
    h.shutdown();
    j.join().unwrap().unwrap();

    // detach: no program on the interface, nothing pinned.
    let removed = director::datapath::detach_all(&s.cfg.pin_dir()).unwrap();
    assert_eq!(removed, vec!["dp0".to_string()]);
    assert_eq!(s.xdp_prog_id(), None);
    assert!(!s.cfg.pin_dir().exists());
    assert!(!director::status::gather(&s.cfg).loaded);

    // ... and the host settings are back, except one the operator changed in the meantime.
    s.lab
        .ns
        .run(|| std::fs::write(DP0_SYSCTLS[1], "0").unwrap());
    let path = s.cfg.sysctl_log();
    let done = s
        .lab
        .ns
        .run(move || director::host::restore_sysctls(&path, None).unwrap());
    let kept: Vec<_> = done
        .iter()
        .filter_map(|r| match r {
            director::host::Restored::Kept { change, now } => Some((change.path.clone(), now)),
            director::host::Restored::Reverted(_) => None,
        })
        .collect();
    assert_eq!(kept, [(PathBuf::from(DP0_SYSCTLS[1]), &"0".to_string())]);
    assert_eq!(read_sysctls(&s), before);
    assert!(!s.cfg.sysctl_log().exists());
}

#[test]
fn first_config_invalid_without_pinned_tables_fails_loudly() {
    let s = Setup::new();
    std::fs::write(s.backends_path(), "services: [\n").unwrap();
    let (_h, j) = s.start();
    let e = daemon_support::error_chain(&j.join().unwrap().unwrap_err());
    assert!(e.starts_with("first table load: "), "{e}");
    assert!(e.contains("backends.yaml:"), "{e}");
}

/// Swap two table versions as fast as possible while another thread runs packets: every
/// output must be exactly what one whole version gives.
#[test]
fn table_swaps_are_atomic_under_traffic() {
    swaps_are_atomic_under_traffic(8);
}

/// The same with 2^16-row tables, which live in the fixed-size maps and are what the fast
/// path reads (bpf/include/director_fast.h, fast_v4).
#[test]
fn table_swaps_are_atomic_under_traffic_in_the_fast_path() {
    swaps_are_atomic_under_traffic(16);
}

fn swaps_are_atomic_under_traffic(table_bits: u32) {
    let lab = Lab::new();
    let pin = lab.fs.pin_dir();
    let ingress = lab.ingress;
    let bits = format!("table_bits: {table_bits}");
    let a = backends(&[11, 12, 13], "").replace("table_bits: 8", &bits);
    let b = backends(&[21, 22, 23, 24], "").replace("table_bits: 8", &bits);
    let name = lab.ns.name.clone();
    spawn_in(&name, move || {
        let dp = Arc::new(Datapath::open(&pin).unwrap());
        dp.set_config(&Settings {
            src6: None,
            ..settings()
        })
        .unwrap();
        let ia = install(&dp, &a);
        let ib = director::source::build(Path::new("b.yaml"), &b).unwrap();
        let la = director::source::build(Path::new("a.yaml"), &a).unwrap();
        let snap_a =
            director::tables::snapshot(&la.config, &la.tables, &Default::default(), true, false)
                .unwrap();
        // As the daemon does: the second version keeps the first one's ids.
        let snap_b =
            director::tables::snapshot(&ib.config, &ib.tables, &snap_a.ids, true, false).unwrap();
        let inst_b = Installed {
            config: ib.config.clone(),
            tables: ib.tables.clone(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let swapper = {
            let dp = dp.clone();
            let stop = stop.clone();
            let swaps = swaps.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    dp.install_service(&snap_b.services[0]).unwrap();
                    dp.install_service(&snap_a.services[0]).unwrap();
                    swaps.fetch_add(2, Ordering::Relaxed);
                }
            })
        };
        let (mut seen_a, mut seen_b) = (0, 0);
        // Each swap waits for an RCU grace period, which under this load takes long: run
        // packets until enough swaps happened (bounded).
        let t0 = Instant::now();
        for i in 0.. {
            if i >= 2000
                && (swaps.load(Ordering::Relaxed) >= 10 || t0.elapsed() > Duration::from_secs(60))
            {
                break;
            }
            let i: u32 = i;
            let f = Flow {
                src: IpAddr::from((0xc0000200u32 + i).to_be_bytes()),
                dst: "10.100.0.1".parse().unwrap(),
                sport: (i * 7919) as u16,
                dport: 80,
            };
            let frame = tcp_packet(f.src, f.dst, f.sport, f.dport, b"");
            let (ret, out) = dp.test_run(&frame, ingress).unwrap();
            assert_eq!(ret, out_dp0());
            let want = |inst: &Installed| {
                let (h, row) = inst.expect("web", &f);
                expected_gue(backend_mac(row[0]), DIR_MAC, &row, h, &frame[14..])
            };
            if out == want(&ia) {
                seen_a += 1;
            } else if out == want(&inst_b) {
                seen_b += 1;
            } else {
                panic!("packet {i} matches neither whole version");
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        let swaps = swaps.load(Ordering::Relaxed);
        eprintln!("swaps {swaps}, outputs: version a {seen_a}, version b {seen_b}");
        assert!(swaps >= 10, "the swapper ran ({swaps})");
        assert!(
            seen_a > 0 && seen_b > 0,
            "both versions were seen ({seen_a}/{seen_b})"
        );
    })
    .join()
    .unwrap();
}

/// Next hops are cached per backend and CPU for nexthop_ttl_ms (here a minute); a changed
/// neighbour or route must still be used by the next packets, not a minute later.
#[test]
fn route_and_neighbour_changes_are_used_at_once() {
    let s = Setup::with("nexthop_ttl_ms: 60000\n");
    let v1 = backends(&[11], "");
    std::fs::write(s.backends_path(), &v1).unwrap();
    let (h, j) = s.start();
    wait_until("first table", Duration::from_secs(10), || {
        s.live_version() == Some(version_of(&v1))
    });
    wait_until("attached", Duration::from_secs(10), || s.state().pid != 0);
    // (verdict, destination MAC) of a packet to the VIP in on dp0 (lo before 5.15: common's
    // `ingress`), run on every CPU (the cache is per CPU: a CPU that had not cached the old
    // next hop proves nothing).
    let cpus: Vec<usize> = {
        let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
        (0..nix::sched::CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap())
            .collect()
    };
    let send = || {
        let pin = s.cfg.pin_dir();
        let ingress = s.lab.ingress;
        let cpus = cpus.clone();
        s.lab.ns.run(move || {
            let dp = Datapath::open(&pin).unwrap();
            let f = vip_packet();
            let mut seen = Vec::new();
            for c in cpus {
                let mut one = nix::sched::CpuSet::new();
                one.set(c).unwrap();
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one).unwrap();
                let (ret, out) = dp.test_run(&f, ingress).unwrap();
                seen.push((ret, out[..6].to_vec()));
            }
            seen.dedup();
            seen
        })
    };
    let b11 = backend_mac("10.1.0.11".parse().unwrap()).to_vec();
    assert_eq!(
        send(),
        [(out_dp0(), b11)],
        "cached on every CPU from here on"
    );

    // The backend's neighbour entry gets another MAC.
    let moved = vec![0x02, 0, 0, 0, 0xee, 0x01];
    s.lab.ns.ip(&[
        "neigh",
        "replace",
        "10.1.0.11",
        "lladdr",
        "02:00:00:00:ee:01",
        "dev",
        "dp0",
        "nud",
        "permanent",
    ]);
    wait_until("the new neighbour", Duration::from_secs(5), || {
        send() == [(out_dp0(), moved.clone())]
    });

    // A route sends the backend out of another interface, through a gateway there.
    s.lab.ns.ip(&[
        "route",
        "add",
        "10.1.0.11/32",
        "via",
        "10.2.0.10",
        "dev",
        "dq0",
    ]);
    let gw = backend_mac("10.2.0.10".parse().unwrap()).to_vec();
    wait_until("the new route", Duration::from_secs(5), || {
        send() == [(XDP_REDIRECT, gw.clone())]
    });
    h.shutdown();
    j.join().unwrap().unwrap();
}

/// Real packets: client namespace -> director (generic XDP, attached by the daemon) ->
/// backend namespace. The backend's neighbour is unknown at first: the program hands the
/// encapsulated packet to the kernel, which resolves it and forwards; later packets go by
/// XDP redirect. The backend receives both as GUE on its UDP socket.
#[test]
fn unresolved_neighbour_really_reaches_the_backend() {
    let c = netns();
    let d = netns();
    let b = netns();
    let (cl, dl, dr, br) = (unique("xc"), unique("xd"), unique("xe"), unique("xb"));
    sh(&[
        "ip", "link", "add", &cl, "netns", &c.name, "type", "veth", "peer", "name", &dl, "netns",
        &d.name,
    ]);
    sh(&[
        "ip", "link", "add", &dr, "netns", &d.name, "type", "veth", "peer", "name", &br, "netns",
        &b.name,
    ]);
    c.ip(&["addr", "add", "10.50.0.2/24", "dev", &cl]);
    c.ip(&["link", "set", &cl, "up"]);
    c.ip(&["route", "add", "10.100.0.0/24", "via", "10.50.0.1"]);
    d.ip(&["addr", "add", "10.50.0.1/24", "dev", &dl]);
    d.ip(&["addr", "add", "10.60.0.1/24", "dev", &dr]);
    d.ip(&["link", "set", &dl, "up"]);
    d.ip(&["link", "set", &dr, "up"]);
    b.ip(&["addr", "add", "10.60.0.2/24", "dev", &br]);
    b.ip(&["link", "set", &br, "up"]);

    let fs = Bpffs::new();
    let dir = PathBuf::from(format!("/run/{}", unique("xdplb-e2e-")));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("backends.yaml"),
        format!(
            "services:\n  - name: udp\n    hash_key: {KEY}\n    seed: {SEED}\n    table_bits: 8\n    binds:\n      - {{ vip: 10.100.0.1, proto: udp, port: 7000 }}\n    backends:\n      - {{ name: b, address: 10.60.0.2 }}\n"
        ),
    )
    .unwrap();
    let yaml = format!(
        "interfaces: [{dl}]\nxdp_mode: generic\nencap_source_v4: 10.60.0.1\nbpffs_dir: {}\nbackends: backends.yaml\nstate_dir: {}\n",
        fs.root.display(),
        dir.display()
    );
    let cfg = DirectorConfig::parse(&dir.join("director.yaml"), &yaml).unwrap();
    let control = Control::new();
    let handle = control.handle();
    let cfg2 = cfg.clone();
    let daemon = spawn_in(&d.name, move || director::run(cfg2, control));
    wait_until("daemon ready", Duration::from_secs(10), || {
        State::read(&cfg.state_file()).is_some_and(|s| !s.interfaces.is_empty())
    });

    let rx = spawn_in(&b.name, || {
        let s = UdpSocket::bind("10.60.0.2:19523").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        for _ in 0..2 {
            let (n, from) = s.recv_from(&mut buf).unwrap();
            got.push((buf[..n].to_vec(), from));
        }
        got
    });
    std::thread::sleep(Duration::from_millis(100));
    spawn_in(&c.name, || {
        let s = UdpSocket::bind("10.50.0.2:4000").unwrap();
        s.send_to(b"first", "10.100.0.1:7000").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        s.send_to(b"second", "10.100.0.1:7000").unwrap();
    })
    .join()
    .unwrap();
    let got = rx.join().unwrap();
    for ((payload, from), want) in got.iter().zip([&b"first"[..], b"second"]) {
        assert_eq!(
            from.ip(),
            "10.60.0.1".parse::<IpAddr>().unwrap(),
            "outer source: the director"
        );
        // GUE: hlen 1 (hop list header, no alternates), proto 4, then the inner IPv4 packet.
        assert_eq!(&payload[..8], &[1, 4, 0, 0, 0, 0, 0, 0]);
        let inner = &payload[8..];
        assert_eq!(&inner[12..16], &[10, 50, 0, 2]);
        assert_eq!(&inner[16..20], &[10, 100, 0, 1]);
        assert!(inner.ends_with(want));
    }
    let view = PinnedView::open(&cfg.pin_dir()).unwrap();
    let c_ = view.counters();
    assert_eq!(
        c_.reasons[director::counters::NO_NEIGH].packets,
        1,
        "first packet: kernel path"
    );
    assert_eq!(c_.services[0].packets, 2, "both forwarded for the service");
    handle.shutdown();
    daemon.join().unwrap().unwrap();
    director::datapath::detach_all(&cfg.pin_dir()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
