//! The `tablegen` binary, run for real on temporary files: exit codes, messages, JSON shapes
//! (a stable interface), and in-place edits that change exactly one line.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const CONFIG: &str = "\
# production pools: edit with `tablegen drain NAME` etc.
services:
  - name: web            # public site
    hash_key: 6c8d0f1e2a3b4c5d6e7f8091a2b3c4d5
    seed: 0f1e2d3c4b5a69788796a5b4c3d2e1f0
    table_bits: 10
    binds:
      - { vip: 10.100.0.1, proto: tcp, port: 80 }
      - { vip: \"fd00:100::1\", proto: tcp, ports: 8000-8100 }
    backends:
      - { name: backend-1, address: 10.0.0.21 }   # rack a
      - { name: backend-2, address: 10.0.0.22, weight: 2 }
      - { name: backend-3,   address: 10.0.0.23 }   # odd spacing survives
      - name: backend-4
        address: 10.0.0.24   # block style
  - name: api
    hash_key: 00112233445566778899aabbccddeeff
    seed: ffeeddccbbaa99887766554433221100
    table_bits: 8
    binds:
      - { vip: 10.100.0.2, proto: udp, port: 53 }
    backends:
      - { name: backend-1, address: 10.0.0.21 }
      - { name: api-2, address: 10.0.0.31 }
";

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new(config: &str) -> Dir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("backends.yaml"), config).unwrap();
        Dir { dir }
    }
    fn config(&self) -> PathBuf {
        self.dir.path().join("backends.yaml")
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tablegen"))
            .arg("--config")
            .arg(self.config())
            .args(args)
            .output()
            .unwrap()
    }
    fn text(&self) -> String {
        fs::read_to_string(self.config()).unwrap()
    }
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn fails(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "expected exit 1: {o:?}");
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn json(o: &Output) -> Value {
    serde_json::from_str(&ok(o)).unwrap()
}

/// Lines of `b` that differ from `a` (same line count required).
fn diff_lines(a: &str, b: &str) -> Vec<(usize, String)> {
    let (al, bl): (Vec<_>, Vec<_>) = (a.lines().collect(), b.lines().collect());
    assert_eq!(al.len(), bl.len(), "line count changed:\n{b}");
    al.iter()
        .zip(&bl)
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, (_, y))| (i + 1, y.to_string()))
        .collect()
}

fn no_temp_files(dir: &Path) {
    let names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names.iter().all(|n| !n.to_string_lossy().contains(".tmp")),
        "temp file left: {names:?}"
    );
}

#[test]
fn check_accepts_a_valid_file_and_lists_every_error_of_a_bad_one() {
    let d = Dir::new(CONFIG);
    assert!(ok(&d.run(&["check"])).contains("ok (2 services, 6 backends)"));
    let bad = CONFIG
        .replace("weight: 2", "weight: 0")
        .replace("table_bits: 8", "table_bits: 30")
        .replace("10.0.0.31", "10.0.0.999");
    fs::write(d.config(), bad).unwrap();
    let err = fails(&d.run(&["check"]));
    let file = d.config().display().to_string();
    for want in [
        format!("{file}:12:56: weight must be a whole number"),
        format!("{file}:19:17: table_bits 30 is out of range"),
        format!("{file}:24:33: `10.0.0.999` is not an IP address"),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
    assert!(err.contains("3 error(s)"), "{err}");
}

#[test]
fn version_and_help_and_default_config() {
    let out = Command::new(env!("CARGO_BIN_EXE_tablegen"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(ok(&out).starts_with("tablegen "));
    let out = Command::new(env!("CARGO_BIN_EXE_tablegen"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(ok(&out).contains("/etc/xdplb/backends.yaml"));
    let out = Command::new(env!("CARGO_BIN_EXE_tablegen"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn show_json_has_the_stable_fields() {
    let d = Dir::new(CONFIG);
    let v = json(&d.run(&["show", "--json"]));
    let services = v["services"].as_array().unwrap();
    assert_eq!(services.len(), 2);
    let web = &services[0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["rows"], 1024);
    assert_eq!(web["hops"], 2);
    for f in ["version", "checksum"] {
        let s = web[f].as_str().unwrap();
        assert!(
            s.len() == 16 && s.bytes().all(|c| c.is_ascii_hexdigit()),
            "{f}: {s}"
        );
    }
    let backends = web["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 4);
    let b2 = &backends[1];
    assert_eq!(b2["name"], "backend-2");
    assert_eq!(b2["address"], "10.0.0.22");
    assert_eq!(b2["state"], "active");
    assert_eq!(b2["weight"], 2);
    let primary: u64 = backends
        .iter()
        .map(|b| b["primary_rows"].as_u64().unwrap())
        .sum();
    let alternate: u64 = backends
        .iter()
        .map(|b| b["alternate_rows"].as_u64().unwrap())
        .sum();
    assert_eq!((primary, alternate), (1024, 1024));
    // The human form names the same things.
    let text = ok(&d.run(&["show"]));
    assert!(text.contains("service web: 1024 rows, hops 2"), "{text}");
}

#[test]
fn lookup_reports_service_hash_row_and_hops() {
    let d = Dir::new(CONFIG);
    let v = json(&d.run(&["lookup", "tcp 192.0.2.7:51000 10.100.0.1:80", "--json"]));
    assert_eq!(v["service"], "web");
    assert_eq!(v["hash"].as_str().unwrap().len(), 16);
    let hash = u64::from_str_radix(v["hash"].as_str().unwrap(), 16).unwrap();
    assert_eq!(v["row"].as_u64().unwrap(), hash & 1023);
    let hops = v["hops"].as_array().unwrap();
    let names = v["names"].as_array().unwrap();
    assert_eq!((hops.len(), names.len()), (2, 2));
    assert!(hops[0].as_str().unwrap().starts_with("10.0.0."));
    // The same flow again gives the same answer; an IPv6 flow to the v6 bind works.
    assert_eq!(
        json(&d.run(&["lookup", "tcp 192.0.2.7:51000 10.100.0.1:80", "--json"])),
        v
    );
    let v6 = json(&d.run(&[
        "lookup",
        "tcp [2001:db8::7]:40000 [fd00:100::1]:8050",
        "--json",
    ]));
    assert_eq!(v6["service"], "web");
    let udp = json(&d.run(&["lookup", "udp 192.0.2.7:5353 10.100.0.2:53", "--json"]));
    assert_eq!(udp["service"], "api");
    let err = fails(&d.run(&["lookup", "tcp 192.0.2.7:51000 10.100.0.1:81"]));
    assert!(err.contains("no service binds tcp 10.100.0.1:81"), "{err}");
    let err = fails(&d.run(&["lookup", "tcp nonsense"]));
    assert!(err.contains("expected `PROTO SRC:PORT VIP:PORT`"), "{err}");
}

#[test]
fn build_writes_a_table_file_that_diffs_equal_to_its_config() {
    let d = Dir::new(CONFIG);
    let out = d.path("tables.bin");
    ok(&d.run(&["build", "--out", out.to_str().unwrap()]));
    let bytes = fs::read(&out).unwrap();
    assert!(bytes.starts_with(b"XDPLBTBL"));
    no_temp_files(d.dir.path());
    let v = json(&d.run(&[
        "diff",
        out.to_str().unwrap(),
        d.config().to_str().unwrap(),
        "--json",
    ]));
    for s in v["services"].as_array().unwrap() {
        assert_eq!(s["primary_changed"], 0);
        assert_eq!(s["hop_list_changed"], 0);
    }
    // A corrupt table file is refused.
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    fs::write(&out, bad).unwrap();
    let err = fails(&d.run(&["diff", out.to_str().unwrap(), d.config().to_str().unwrap()]));
    assert!(err.contains("corrupt"), "{err}");
}

#[test]
fn diff_counts_moved_rows_and_second_chances() {
    let d = Dir::new(CONFIG);
    let old = d.path("old.yaml");
    fs::copy(d.config(), &old).unwrap();
    ok(&d.run(&["drain", "backend-3"]));
    let v = json(&d.run(&[
        "diff",
        old.to_str().unwrap(),
        d.config().to_str().unwrap(),
        "--json",
    ]));
    let web = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "web")
        .unwrap();
    assert_eq!(web["rows"], 1024);
    let changed = web["primary_changed"].as_u64().unwrap();
    assert!(changed > 100, "{web}");
    // Draining keeps every moved row's old primary as an alternate.
    assert_eq!(web["primary_changed_keeps_old"], changed);
    assert_eq!(web["hop_list_changed"], changed);
    let api = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "api")
        .unwrap();
    assert_eq!(api["primary_changed"], 0);
}

#[test]
fn drain_changes_only_that_line_atomically_and_keeps_the_mode() {
    let d = Dir::new(CONFIG);
    fs::set_permissions(d.config(), fs::Permissions::from_mode(0o640)).unwrap();
    let out = ok(&d.run(&["drain", "backend-3"]));
    assert!(
        out.contains("backend backend-3 of service web: state draining"),
        "{out}"
    );
    assert_eq!(
        diff_lines(CONFIG, &d.text()),
        [(13, "      - { name: backend-3,   address: 10.0.0.23, state: draining }   # odd spacing survives".to_string())]
    );
    let mode = fs::metadata(d.config()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    no_temp_files(d.dir.path());
    // Draining again is a no-op that says so.
    let before = d.text();
    assert!(ok(&d.run(&["drain", "backend-3"])).contains("nothing to do"));
    assert_eq!(d.text(), before);
    // Activate sets the state back; only that line differs from the original.
    ok(&d.run(&["activate", "backend-3"]));
    assert_eq!(
        diff_lines(CONFIG, &d.text()),
        [(13, "      - { name: backend-3,   address: 10.0.0.23, state: active }   # odd spacing survives".to_string())]
    );
}

#[test]
fn second_transition_is_refused_naming_the_first() {
    let d = Dir::new(CONFIG);
    ok(&d.run(&["fill", "backend-4"]));
    let filled = d.text();
    let err = fails(&d.run(&["drain", "backend-2"]));
    assert!(
        err.contains("`backend-4` (filling) is already in transition"),
        "{err}"
    );
    assert_eq!(d.text(), filled, "refused edit must not write");
    // Finishing the first transition allows the second.
    ok(&d.run(&["activate", "backend-4"]));
    ok(&d.run(&["drain", "backend-2"]));
}

#[test]
fn block_style_backends_get_one_new_line() {
    let d = Dir::new(CONFIG);
    ok(&d.run(&["weight", "backend-4", "3"]));
    let text = d.text();
    let want = CONFIG.replace(
        "        address: 10.0.0.24   # block style\n",
        "        address: 10.0.0.24   # block style\n        weight: 3\n",
    );
    assert_eq!(text, want);
    ok(&d.run(&["weight", "backend-4", "5"]));
    assert_eq!(d.text(), want.replace("weight: 3", "weight: 5"));
    let err = fails(&d.run(&["weight", "backend-4", "0"]));
    assert!(err.contains("deactivate"), "{err}");
}

#[test]
fn ambiguous_names_need_service_and_unknown_names_fail() {
    let d = Dir::new(CONFIG);
    let err = fails(&d.run(&["deactivate", "backend-1"]));
    assert!(
        err.contains("several services (web, api); say which with --service"),
        "{err}"
    );
    ok(&d.run(&["deactivate", "backend-1", "--service", "api"]));
    let lines = diff_lines(CONFIG, &d.text());
    assert_eq!(
        lines,
        [(
            23,
            "      - { name: backend-1, address: 10.0.0.21, state: inactive }".to_string()
        )]
    );
    let err = fails(&d.run(&["drain", "nobody"]));
    assert!(err.contains("no backend `nobody`"), "{err}");
}

#[test]
fn edits_refuse_an_invalid_file_and_leave_it_alone() {
    let bad = CONFIG.replace("weight: 2", "weight: zero");
    let d = Dir::new(&bad);
    let err = fails(&d.run(&["drain", "backend-3"]));
    assert!(err.contains("fix them before editing"), "{err}");
    assert!(err.contains(":12:56: weight must be"), "{err}");
    assert_eq!(d.text(), bad);
}

#[test]
fn empty_pools_are_valid_with_a_warning_and_diff_lists_added_services() {
    let empty = "services:\n  - name: idle\n    hash_key: 6c8d0f1e2a3b4c5d6e7f8091a2b3c4d5\n    seed: 0f1e2d3c4b5a69788796a5b4c3d2e1f0\n    binds: []\n    backends: []\n";
    let d = Dir::new(empty);
    let out = d.run(&["check"]);
    ok(&out);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("warning") && err.contains("the table is empty"),
        "{err}"
    );
    let v = json(&d.run(&["show", "--json"]));
    assert_eq!(v["services"][0]["rows"], 65536);
    assert_eq!(v["services"][0]["backends"].as_array().unwrap().len(), 0);
    let new = d.path("new.yaml");
    fs::write(&new, CONFIG).unwrap();
    let v = json(&d.run(&[
        "diff",
        d.config().to_str().unwrap(),
        new.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(v["added"], serde_json::json!(["web", "api"]));
    assert_eq!(v["removed"], serde_json::json!(["idle"]));
}
