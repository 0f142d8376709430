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

struct TmpDir(PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        // The daemon mounted a bpffs under it.
        let _ = nix::mount::umount2(
            &self.0.join("bpffs/redirector"),
            nix::mount::MntFlags::MNT_DETACH,
        );
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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
        if &buf[..n] == b"READY=1" {
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
    let tmp = TmpDir(PathBuf::from(format!(
        "/run/xdplb-test-redirector-{}",
        std::process::id()
    )));
    std::fs::create_dir_all(&tmp.0).unwrap();
    let cfg_path = tmp.0.join("redirector.yaml");
    write_config(&cfg_path, &tmp.0, "192.0.2.96/28");
    let notify_path = tmp.0.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::env::set_var("NOTIFY_SOCKET", &notify_path);

    let ns = Netns::with_lab("daemon");
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
        // Detaching twice is fine.
        daemon::detach(&config.pin_dir(), &config.state_dir).unwrap();
    });
}

#[test]
fn binary_exits_78_on_a_config_error() {
    // EX_CONFIG: the systemd unit does not restart on it.
    for args in [
        vec!["--config", "/nonexistent/redirector.yaml", "run"],
        vec!["--config", "/dev/null", "status"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_xdplb-redirector"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(78),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
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
    let tmp = TmpDir(PathBuf::from(format!(
        "/run/xdplb-test-redirector-bin-{}",
        std::process::id()
    )));
    let bpffs = tmp.0.join("bpffs");
    std::fs::create_dir_all(&bpffs).unwrap();
    // `ip netns exec` gives the daemon a private mount namespace: a bpffs it mounted itself
    // would vanish with it, so the test mounts one first, as systemd does at boot.
    nix::mount::mount(
        Some("bpffs"),
        &bpffs,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
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
    let ns = Netns::with_lab("bin");
    let bin = env!("CARGO_BIN_EXE_xdplb-redirector");
    let mut child = KillOnDrop(
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
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pin_dir = bpffs.join("redirector");
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
    wait("program pinned", &|| pin_dir.join("prog").exists());
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
    assert!(pin_dir.join("prog").exists());

    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            bin,
            "--config",
            cfg_path.to_str().unwrap(),
            "detach",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!filters(&ns).contains("redirector"));
    assert!(!pin_dir.join("prog").exists());
    let _ = nix::mount::umount2(&bpffs, nix::mount::MntFlags::MNT_DETACH);
}
