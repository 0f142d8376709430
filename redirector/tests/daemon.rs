//! The daemon in-process and the binary: setup, run (ready notification, reload, keeping the
//! last good config), hitless restart, status, detach reversing everything. One test in this
//! binary, because it sets `NOTIFY_SOCKET` for the process.

mod common;

use std::net::IpAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use libbpf_rs::MapCore;
use redirector::config::Config;
use redirector::daemon::{self, Event};
use redirector::datapath::PinnedMaps;

const EXTRA_VIP: &str = "198.51.100.20";

fn write_config(path: &Path, tmp: &Path, sources: &str) {
    std::fs::write(
        path,
        format!(
            "interfaces: [v0]\nallowed_sources: [{sources}]\nvips: [{EXTRA_VIP}, '2001:db8:100::20']\n\
             vip_interface: lo\nbpffs_dir: {}\nstate_dir: {}\n",
            tmp.join("bpffs").display(),
            tmp.join("state").display()
        ),
    )
    .unwrap();
}

fn wait_ready(sock: &UnixDatagram) {
    let mut buf = [0u8; 64];
    loop {
        let n = sock.recv(&mut buf).expect("READY=1 within the timeout");
        if buf[..n].trim_ascii_end() == b"READY=1" {
            return;
        }
    }
}

fn sysctl(key: &str) -> String {
    std::fs::read_to_string(Path::new("/proc/sys").join(key.replace('.', "/")))
        .unwrap()
        .trim()
        .to_string()
}

fn allowed_v4(maps: &PinnedMaps) -> Vec<Vec<u8>> {
    let mut k: Vec<Vec<u8>> = maps.allowed_v4.keys().collect();
    k.sort();
    k
}

fn key(prefix: u32, a: [u8; 4]) -> Vec<u8> {
    let mut k = prefix.to_ne_bytes().to_vec();
    k.extend_from_slice(&a);
    k
}

#[test]
fn setup_run_reload_restart_status_detach() {
    let tmp = common::TmpDir::with_bpffs("daemon");
    let cfg_path = tmp.0.join("redirector.yaml");
    write_config(&cfg_path, &tmp.0, "192.0.2.96/28");
    let notify_path = tmp.0.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::env::set_var("NOTIFY_SOCKET", &notify_path);

    let ns = with_lab("daemon");
    ns.sysctl("net.ipv4.conf.all.rp_filter", "1");
    ns.run(|| {
        let config = Config::load(&cfg_path).unwrap();

        // setup: VIPs on lo, ARP and rp_filter knobs; a second run changes nothing more.
        let arp_ignore_before = sysctl("net.ipv4.conf.all.arp_ignore");
        let first = redirector::setup::apply(&config).unwrap();
        let again = redirector::setup::apply(&config).unwrap();
        assert_eq!(first, again, "setup is idempotent");
        assert_eq!(first.addresses.len(), 2);
        assert_eq!(sysctl("net.ipv4.conf.all.arp_ignore"), "1");
        assert_eq!(sysctl("net.ipv4.conf.v0.arp_announce"), "2");
        assert_eq!(sysctl("net.ipv4.conf.all.rp_filter"), "2");
        let addrs = String::from_utf8(
            Command::new("ip")
                .args(["-o", "addr", "show", "dev", "lo"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        assert!(
            addrs.contains(&format!("{EXTRA_VIP}/32")) && addrs.contains("2001:db8:100::20/128")
        );

        // run: ready after attaching; maps hold the config.
        let (tx, rx) = mpsc::channel();
        let path = cfg_path.clone();
        let daemon = std::thread::spawn(move || daemon::run(&path, rx));
        wait_ready(&notify);
        let status = daemon::status(&config).unwrap();
        let first_id = status.program_id.expect("pinned");
        assert_eq!(status.interfaces.len(), 1);
        assert!(status.interfaces[0].current, "{status}");
        assert_eq!(status.counters.len(), redirector::counters::NAMES.len());
        let maps = PinnedMaps::open(&config.pin_dir()).unwrap();
        assert_eq!(allowed_v4(&maps), vec![key(28, [192, 0, 2, 96])]);

        // reload: new sources replace the old; a broken file keeps the last good config.
        write_config(&cfg_path, &tmp.0, "192.0.2.128/28, 192.0.2.1");
        tx.send(Event::Reload).unwrap();
        wait_ready(&notify);
        assert_eq!(
            allowed_v4(&maps),
            vec![key(28, [192, 0, 2, 128]), key(32, [192, 0, 2, 1])]
        );
        std::fs::write(
            &cfg_path,
            "interfaces: [v0]\nallowed_sources: [not-an-address]\n",
        )
        .unwrap();
        tx.send(Event::Reload).unwrap();
        wait_ready(&notify);
        assert_eq!(allowed_v4(&maps).len(), 2);
        // Counted by result (the start is the first applied), as status and /metrics show.
        let r = daemon::status(&config).unwrap().reloads;
        assert_eq!((r.applied, r.rejected, r.failed), (2, 1, 0), "{r:?}");
        assert!(r.last_success.is_some() && r.last_rejected.is_some());
        assert!(
            r.last_error.as_deref().unwrap().contains("not-an-address"),
            "{r:?}"
        );
        let text = redirector::metrics::render(&daemon::status(&config).unwrap()).encode();
        for line in [
            "xdplb_redirector_reloads_total{result=\"applied\"} 2",
            "xdplb_redirector_reloads_total{result=\"rejected\"} 1",
            "xdplb_redirector_reloads_total{result=\"failed\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.contains("xdplb_redirector_last_reload_rejected_timestamp_seconds "));

        // stop: the program stays attached and pinned.
        tx.send(Event::Stop).unwrap();
        daemon.join().unwrap().unwrap();
        let status = daemon::status(&config).unwrap();
        assert_eq!(status.program_id, Some(first_id));
        assert_eq!(status.interfaces[0].attached_program_id, Some(first_id));

        // restart: a new program replaces the old in the same filter; the pinned maps carry on.
        write_config(&cfg_path, &tmp.0, "192.0.2.96/28");
        let (tx, rx) = mpsc::channel();
        let path = cfg_path.clone();
        let daemon = std::thread::spawn(move || daemon::run(&path, rx));
        wait_ready(&notify);
        let status = daemon::status(&config).unwrap();
        let second_id = status.program_id.unwrap();
        assert_ne!(second_id, first_id);
        assert!(status.interfaces[0].current);
        assert_eq!(
            allowed_v4(&maps),
            vec![key(28, [192, 0, 2, 96])],
            "same pinned map, re-synced"
        );
        tx.send(Event::Stop).unwrap();
        daemon.join().unwrap().unwrap();

        // The binary reads the same state.
        let out = Command::new(env!("CARGO_BIN_EXE_xdplb-redirector"))
            .args(["--config", cfg_path.to_str().unwrap(), "status", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["program_id"], second_id);
        assert_eq!(json["interfaces"][0]["current"], true);
        // The restart's apply is counted on top of what the first run recorded.
        assert_eq!(json["reloads"]["applied"], 3);
        assert_eq!(json["reloads"]["rejected"], 1);

        // detach: filter, pins and setup's changes are gone.
        let detached = daemon::detach(&config.pin_dir(), &config.state_dir).unwrap();
        assert_eq!(detached, vec!["v0".to_string()]);
        let status = daemon::status(&config).unwrap();
        assert_eq!(status.program_id, None);
        assert_eq!(status.interfaces[0].attached_program_id, None);
        assert_eq!(sysctl("net.ipv4.conf.all.arp_ignore"), arp_ignore_before);
        assert_eq!(sysctl("net.ipv4.conf.all.rp_filter"), "1");
        let addrs = String::from_utf8(
            Command::new("ip")
                .args(["-o", "addr", "show", "dev", "lo"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        assert!(!addrs.contains(EXTRA_VIP), "{addrs}");
        assert!(
            addrs.contains(&format!("{}/32", IpAddr::V4(VIP4))),
            "VIPs set up by hand stay"
        );
        assert_eq!(
            daemon::status(&config).unwrap().reloads.applied,
            0,
            "detach forgets them"
        );
        // Detaching twice is fine.
        daemon::detach(&config.pin_dir(), &config.state_dir).unwrap();
    });
}

/// A sysctl the operator changes after `setup` is theirs: `detach` leaves it as it is, and puts
/// back only what still holds the value `setup` wrote.
#[test]
fn detach_keeps_a_sysctl_the_operator_changed_after_setup() {
    let tmp = common::TmpDir::with_bpffs("operator");
    let cfg_path = tmp.0.join("redirector.yaml");
    write_config(&cfg_path, &tmp.0, "192.0.2.96/28");
    let ns = with_lab("operator");
    ns.sysctl("net.ipv4.conf.all.rp_filter", "1");
    ns.run(|| {
        let config = Config::load(&cfg_path).unwrap();
        let arp_ignore_before = sysctl("net.ipv4.conf.v0.arp_ignore");
        let changes = redirector::setup::apply(&config).unwrap();
        let recorded: Vec<_> = changes.sysctls.iter().map(|c| c.path.clone()).collect();
        assert!(
            recorded.contains(&PathBuf::from("/proc/sys/net/ipv4/conf/all/rp_filter")),
            "{recorded:?}"
        );
        assert_eq!(sysctl("net.ipv4.conf.all.rp_filter"), "2");
        assert_eq!(sysctl("net.ipv4.conf.v0.arp_ignore"), "1");

        // The operator turns reverse-path filtering off by hand.
        std::fs::write("/proc/sys/net/ipv4/conf/all/rp_filter", "0").unwrap();
        daemon::detach(&config.pin_dir(), &config.state_dir).unwrap();
        assert_eq!(
            sysctl("net.ipv4.conf.all.rp_filter"),
            "0",
            "the operator's value stays"
        );
        assert_eq!(
            sysctl("net.ipv4.conf.v0.arp_ignore"),
            arp_ignore_before,
            "setup's own value is put back"
        );
        assert!(!config.state_dir.join("redirector-sysctls.json").exists());
    });
}

/// Run the binary with `args` (in network namespace `netns` if given); returns (exit code,
/// stderr).
fn run_bin(netns: Option<&str>, args: &[&str]) -> (Option<i32>, String) {
    let bin = env!("CARGO_BIN_EXE_xdplb-redirector");
    let mut cmd = match netns {
        None => Command::new(bin),
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, bin]);
            c
        }
    };
    let out = cmd.args(args).env_remove("NOTIFY_SOCKET").output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn binary_exits_78_on_every_config_error() {
    // EX_CONFIG: the systemd unit (RestartPreventExitStatus=78) does not restart on it. Every
    // case fails before touching the host (the last one proves it in a namespace).
    let tmp = PathBuf::from(format!(
        "/run/xdplb-test-redirector-exit-{}",
        std::process::id()
    ));
    let _cleanup = TmpDir(tmp.clone());
    std::fs::create_dir_all(&tmp).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/redirector.yaml");
    let write = |name: &str, text: &str| {
        let path = tmp.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let invalid = write(
        "invalid.yaml",
        "interfaces: [v0]\nallowed_sources: [10.0.0.1/24]\n",
    );
    let unknown_key = write(
        "unknown.yaml",
        "interfaces: [v0]\nallowed_sources: []\nvipz: []\n",
    );
    // A directory on tmpfs, not a bpffs: refused, nothing created and nothing mounted.
    let not_bpffs_dir = tmp.join("not-bpffs");
    let not_bpffs = write(
        "not-bpffs.yaml",
        &format!(
            "interfaces: [v0]\nallowed_sources: []\nbpffs_dir: {}\nstate_dir: {}\n",
            not_bpffs_dir.display(),
            tmp.join("state").display()
        ),
    );
    let cases: [(&[&str], &str); 10] = [
        (
            &["--config", "/nonexistent/redirector.yaml", "run"],
            "read config /nonexistent/redirector.yaml",
        ),
        (
            &["--config", "/dev/null", "run"],
            "/dev/null:1:1: missing field `interfaces`",
        ),
        (
            &["--config", "/dev/null", "status"],
            "/dev/null:1:1: missing field `interfaces`",
        ),
        (&["--config", tmp.to_str().unwrap(), "run"], "read config"),
        // The shipped example names no interface: the package installs an inert daemon.
        (
            &["--config", shipped.to_str().unwrap(), "run"],
            "interfaces: list at least one interface",
        ),
        (&["--config", &invalid, "run"], "invalid.yaml:2:19:"),
        (&["--config", &invalid, "setup"], "invalid.yaml:2:19:"),
        (&["--config", &invalid, "status"], "invalid.yaml:2:19:"),
        (
            &["--config", &unknown_key, "run"],
            "unknown.yaml:3:1: unknown field `vipz`",
        ),
        (
            &["--config", &not_bpffs, "run"],
            &format!(
                "{} is not on a bpffs; mount one (mount -t bpf bpf {})",
                not_bpffs_dir.display(),
                not_bpffs_dir.display()
            ),
        ),
    ];
    for (args, message) in cases {
        let (code, stderr) = run_bin(None, args);
        assert_eq!(code, Some(78), "{args:?}: {stderr}");
        // Each cause once: no message repeated by its own source, and no parser's own
        // " at line L column C" after the file:line:column.
        assert_eq!(
            stderr.matches(message).count(),
            1,
            "{args:?}: want {message:?} once in {stderr}"
        );
        assert!(!stderr.contains(" at line "), "{args:?}: {stderr}");
        // One line per error: an empty file misses both required fields, and says so at once.
        let want_lines = if args[1] == "/dev/null" { 2 } else { 1 };
        assert_eq!(stderr.lines().count(), want_lines, "{args:?}: {stderr}");
        if want_lines == 2 {
            assert!(
                stderr.ends_with(
                    "/dev/null:1:1: missing field `allowed_sources` in redirector.yaml; add it\n"
                ),
                "{stderr}"
            );
        }
    }
    let (_, stderr) = run_bin(None, &["--config", "/nonexistent/redirector.yaml", "run"]);
    assert_eq!(
        stderr,
        "xdplb-redirector: read config /nonexistent/redirector.yaml: No such file or directory (os error 2)\n"
    );
    assert!(
        !not_bpffs_dir.exists(),
        "nothing created on the wrong file system"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(tmp.to_str().unwrap()), "{mounts}");

    // The bpffs is checked before setup_on_run changes anything: no dummy interface, no VIP,
    // no record of changes.
    let with_setup = write(
        "not-bpffs-setup.yaml",
        &format!(
            "interfaces: [v0]\nallowed_sources: []\nvips: [{EXTRA_VIP}]\n\
             vip_interface: xdplbexit0\nsetup_on_run: true\nbpffs_dir: {}\nstate_dir: {}\n",
            not_bpffs_dir.display(),
            tmp.join("state").display()
        ),
    );
    let ns = with_lab("exit");
    let (code, stderr) = run_bin(Some(&ns.name), &["--config", &with_setup, "run"]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("is not on a bpffs"), "{stderr}");
    let link = Command::new("ip")
        .args(["-n", &ns.name, "link", "show", "xdplbexit0"])
        .output()
        .unwrap();
    assert!(!link.status.success(), "setup ran: dummy interface created");
    assert!(!tmp.join("state").exists(), "setup ran: changes recorded");
    assert!(!not_bpffs_dir.exists());
}

#[test]
fn binary_prints_its_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_xdplb-redirector"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("xdplb-redirector "));
}

/// The daemon process of a test: killed if the test fails before stopping it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn the_binary_reloads_on_sighup_and_leaves_the_program_attached_on_sigterm() {
    let tmp = common::TmpDir::with_bpffs("bin");
    let bpffs = tmp.bpffs();
    let cfg_path = tmp.0.join("redirector.yaml");
    let write = |sources: &str| {
        std::fs::write(
            &cfg_path,
            format!(
                "interfaces: [v0]\nallowed_sources: [{sources}]\nbpffs_dir: {}\nstate_dir: {}\n",
                bpffs.display(),
                tmp.0.join("state").display()
            ),
        )
        .unwrap()
    };
    write("192.0.2.96/28");
    let ns = with_lab("bin");
    let bin = env!("CARGO_BIN_EXE_xdplb-redirector");
    // `ip netns exec` runs the daemon in a mount namespace of its own, as a systemd unit does:
    // the pins land in the test's bpffs all the same. Logs go to a file per run.
    let spawn = |log: &Path| {
        KillOnDrop(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns.name,
                    bin,
                    "--config",
                    cfg_path.to_str().unwrap(),
                    "run",
                ])
                .env_remove("NOTIFY_SOCKET")
                .env("NO_COLOR", "1")
                .stderr(std::fs::File::create(log).unwrap())
                .spawn()
                .unwrap(),
        )
    };
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let start = std::time::Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out: {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let pin_dir = bpffs.join("redirector");
    let pinned_id = || {
        libbpf_rs::Program::fd_from_pinned_path(pin_dir.join("prog"))
            .ok()
            .and_then(|fd| redirector::datapath::prog_id(std::os::fd::AsFd::as_fd(&fd)))
    };

    let log1 = tmp.0.join("run1.log");
    let mut child = spawn(&log1);
    wait("program pinned", &|| pinned_id().is_some());
    let first_id = pinned_id().unwrap();
    let maps = PinnedMaps::open(&pin_dir).unwrap();
    wait("allow list", &|| {
        allowed_v4(&maps) == vec![key(28, [192, 0, 2, 96])]
    });

    write("192.0.2.128/28");
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait("reloaded allow list", &|| {
        allowed_v4(&maps) == vec![key(28, [192, 0, 2, 128])]
    });

    // A broken file on reload is logged, not an exit (and not exit 78): the last good config
    // keeps running.
    std::fs::write(
        &cfg_path,
        "interfaces: [v0]\nallowed_sources: [192.0.2.1/24]\n",
    )
    .unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait("reload rejected", &|| {
        read(&log1).contains("config rejected")
    });
    assert!(
        read(&log1).contains("redirector.yaml:2:19: `192.0.2.1/24` has host bits set"),
        "{}",
        read(&log1)
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(child.0.try_wait().unwrap().is_none(), "still running");
    assert_eq!(allowed_v4(&maps), vec![key(28, [192, 0, 2, 128])]);

    write("192.0.2.128/28");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(child.0.wait().unwrap().success());
    let filters = |ns: &Netns| {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &ns.name, "tc", "filter", "show", "dev", "v0", "ingress",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        filters(&ns).contains("redirector"),
        "still attached after SIGTERM"
    );
    assert_eq!(pinned_id(), Some(first_id));

    // Restart: the clsact qdisc is there already. libbpf must not print the kernel's
    // "Exclusivity flag on, cannot modify" (nor anything else from the kernel) on any run.
    let log2 = tmp.0.join("run2.log");
    let mut child = spawn(&log2);
    wait("new program pinned", &|| {
        pinned_id().is_some_and(|id| id != first_id)
    });
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(child.0.wait().unwrap().success());
    for log in [&log1, &log2] {
        let text = read(log);
        assert!(text.contains("attached to tc ingress"), "{text}");
        assert!(!text.contains("libbpf: Kernel error message"), "{text}");
    }

    let ns_bin = |args: &[&str]| {
        let mut full = vec!["netns", "exec", &ns.name, bin, "--config"];
        full.push(cfg_path.to_str().unwrap());
        full.extend_from_slice(args);
        let out = Command::new("ip").args(&full).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("libbpf: Kernel error message"),
            "{args:?}: {stderr}"
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // status and detach look at every interface, most without a clsact qdisc: quietly.
    assert!(ns_bin(&["status"]).contains("interface v0: attached"));
    ns_bin(&["detach"]);
    assert!(!filters(&ns).contains("redirector"));
    assert!(pinned_id().is_none());
    assert!(ns_bin(&["status"]).contains("interface v0: not attached"));
    ns_bin(&["detach"]);
}
