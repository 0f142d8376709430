//! The binary's errors as an operator reads them: one line saying what was being done and
//! why, each cause once, and the exit code the systemd unit acts on (78, EX_CONFIG: not
//! restarted; 1: restarted).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{unique, Bpffs};

/// Runs the binary with `args`; returns (exit code, stderr).
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xdplb-director"))
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A directory under /run, removed on drop.
struct TmpDir(PathBuf);

impl TmpDir {
    fn new() -> TmpDir {
        let p = PathBuf::from(format!("/run/{}", unique("xdplb-test-cli-")));
        std::fs::create_dir_all(&p).unwrap();
        TmpDir(p)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    }
}

impl TmpDir {
    /// A director.yaml with these interfaces (YAML list), backends file and bpffs_dir, its
    /// state under this directory; returns its path.
    fn director_yaml(&self, interfaces: &str, backends: &Path, bpffs: &Path) -> String {
        self.write(
            "director.yaml",
            &format!(
                "interfaces: {interfaces}\nencap_source_v4: 10.0.0.1\nbackends: {}\nbpffs_dir: {}\nstate_dir: {}\n",
                backends.display(),
                bpffs.display(),
                self.0.join("state").display()
            ),
        )
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The error line: the last line of stderr (a daemon may have logged before failing).
fn error_line(stderr: &str) -> &str {
    stderr.lines().last().unwrap_or("")
}

#[test]
fn config_errors_are_one_line_with_each_cause_once_and_exit_78() {
    let tmp = TmpDir::new();
    let unknown = tmp.write("unknown.yaml", "interfaces: []\nsource_v4: 10.0.0.1\n");
    let dir = tmp.0.to_str().unwrap().to_string();

    let (code, stderr) = run(&["run", "--config", "/nonexistent/director.yaml"]);
    assert_eq!(code, Some(78), "{stderr}");
    assert_eq!(
        stderr,
        "xdplb-director: reading /nonexistent/director.yaml: No such file or directory (os error 2)\n"
    );

    let (code, stderr) = run(&["run", "--config", &dir]);
    assert_eq!(code, Some(78), "{stderr}");
    assert_eq!(
        stderr,
        format!("xdplb-director: reading {dir}: Is a directory (os error 21)\n")
    );

    // The file:line:column is given once, not repeated after the message.
    for cmd in ["run", "status"] {
        let (code, stderr) = run(&["--config", &unknown, cmd]);
        assert_eq!(code, Some(78), "{cmd}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{cmd}: {stderr}");
        assert!(
            stderr.starts_with(&format!(
                "xdplb-director: {unknown}:2:1: unknown field `source_v4` in director.yaml; expected one of: interfaces,"
            )),
            "{cmd}: {stderr}"
        );
        assert!(!stderr.contains(" at line "), "{cmd}: {stderr}");
        assert!(stderr.ends_with(", metrics\n"), "{cmd}: {stderr}");
    }

    // Every error of the file at once, each at its own position (these were all at 1:1, one
    // per run, before).
    let pins = tmp.0.join("bpf");
    let several = tmp.write(
        "several.yaml",
        &format!(
            "interfaces: [eth0, 'eth0/1']\ngue_port: 0\nnexthop_ttl_ms: 70000\npublish: true\nbpffs_dir: {}\n",
            pins.display()
        ),
    );
    let (code, stderr) = run(&["--config", &several, "run"]);
    assert_eq!(code, Some(78), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!("xdplb-director: {several}:1:20: `eth0/1` is not an interface name; use the kernel's name (1 to 15 characters, no `/`, `:` or white space)").as_str(),
            &format!("{several}:2:11: `gue_port` must be a whole number from 1 to 65535, found `0`"),
            &format!("{several}:3:17: `nexthop_ttl_ms` must be a whole number from 0 to 60000, found `70000`"),
            &format!("{several}:4:1: publish: true needs source: consul (it publishes backends to the cluster)"),
        ],
        "{stderr}"
    );
    assert!(!pins.exists(), "a refused config changes nothing");
}

#[test]
fn a_missing_backends_file_is_named_once_and_exits_78() {
    let tmp = TmpDir::new();
    let fs = Bpffs::new();
    let backends = tmp.0.join("backends.yaml");
    let cfg = tmp.director_yaml("[]", &backends, &fs.root);
    let (code, stderr) = run(&["run", "--config", &cfg]);
    assert_eq!(code, Some(78), "{stderr}");
    assert_eq!(
        error_line(&stderr),
        format!(
            "xdplb-director: first table load: reading {}: No such file or directory (os error 2)",
            backends.display()
        )
    );
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");
    // It pinned into an empty directory and had nothing to forward: the pins are gone again.
    assert!(!fs.pin_dir().exists(), "a failed first start left pins");

    // Pins from before (an earlier run) are another matter: they stay.
    director::datapath::Datapath::open(&fs.pin_dir()).unwrap();
    let (code, stderr) = run(&["run", "--config", &cfg]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(fs.pin_dir().join("prog").exists(), "earlier pins kept");
}

#[test]
fn interfaces_and_the_bpffs_are_checked_before_anything_is_created() {
    let tmp = TmpDir::new();
    // On /run's tmpfs: the interface is checked first, the bpffs next.
    let bpffs = tmp.0.join("not-bpffs");
    let backends = tmp.write("backends.yaml", "services: []\n");
    let cases = [
        // Not a config error as far as systemd goes: the interface may yet appear (exit 1:
        // the unit restarts the daemon).
        (
            "[xdplbnosuch0]",
            1,
            "interface xdplbnosuch0: ENODEV: No such device".to_string(),
        ),
        (
            "[]",
            78,
            format!(
                "{0} is not on a bpffs; mount one (mount -t bpf bpf {0})",
                bpffs.display()
            ),
        ),
    ];
    for (interfaces, want_code, message) in cases {
        let cfg = tmp.director_yaml(interfaces, Path::new(&backends), &bpffs);
        let (code, stderr) = run(&["run", "--config", &cfg]);
        assert_eq!(code, Some(want_code), "{interfaces}: {stderr}");
        assert_eq!(stderr, format!("xdplb-director: {message}\n"));
        assert!(!bpffs.exists(), "{interfaces}: nothing created");
        assert!(
            !tmp.0.join("state").exists(),
            "{interfaces}: no state written"
        );
    }
}

#[test]
fn detach_says_what_it_removed_and_when_there_was_nothing() {
    let tmp = TmpDir::new();
    let fs = Bpffs::new();
    let backends = tmp.write("backends.yaml", "services: []\n");
    let cfg = tmp.director_yaml("[]", Path::new(&backends), &fs.root);
    let detach = || {
        let out = Command::new(env!("CARGO_BIN_EXE_xdplb-director"))
            .args(["--config", &cfg, "detach"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let pins = fs.pin_dir();
    assert_eq!(
        detach(),
        format!(
            "detached from 0 interface(s); nothing was pinned under {}\n",
            pins.display()
        )
    );
    director::datapath::Datapath::open(&pins).unwrap();
    assert!(pins.join("prog").exists());
    assert_eq!(
        detach(),
        format!("detached from 0 interface(s); removed {}\n", pins.display())
    );
    assert!(!pins.exists());
}
