//! `tablegen cluster ...`, the real binary against a real Consul agent (`consul agent -dev`,
//! started and killed by each test): publish, list, diff, roll back, and the refusals (a broken
//! file, a concurrent change).

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use cluster::testing::ConsulAgent;
use serde_json::Value;

const CONFIG: &str = "\
services:
  - name: web
    hash_key: 6c8d0f1e2a3b4c5d6e7f8091a2b3c4d5
    seed: 0f1e2d3c4b5a69788796a5b4c3d2e1f0
    table_bits: 10
    binds:
      - { vip: 10.100.0.1, proto: tcp, port: 80 }
    backends:
      - { name: backend-1, address: 10.0.0.21 }
      - { name: backend-2, address: 10.0.0.22, weight: 2 }
      - { name: backend-3, address: 10.0.0.23 }
      - { name: backend-4, address: 10.0.0.24 }
  - name: api
    hash_key: 00112233445566778899aabbccddeeff
    seed: ffeeddccbbaa99887766554433221100
    table_bits: 8
    binds:
      - { vip: 10.100.0.2, proto: udp, port: 53 }
    backends:
      - { name: api-1, address: 10.0.0.31 }
      - { name: api-2, address: 10.0.0.32 }
";

struct Env {
    _agent: ConsulAgent,
    dir: tempfile::TempDir,
}

impl Env {
    /// A Consul agent, a backends file, and a director.yaml whose `consul:` section points at
    /// the agent (the director's other fields are ignored by tablegen).
    fn new() -> Env {
        let agent = ConsulAgent::dev().unwrap();
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("backends.yaml"), CONFIG).unwrap();
        fs::write(
            dir.path().join("director.yaml"),
            format!(
                "interfaces: [eth0]\nconsul:\n  address: {}\n  prefix: xdplb/test\n",
                agent.address()
            ),
        )
        .unwrap();
        Env { _agent: agent, dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn config(&self) -> PathBuf {
        self.path("backends.yaml")
    }
    /// `tablegen ARGS` (local commands).
    fn tablegen(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tablegen"))
            .arg("--config")
            .arg(self.config())
            .args(args)
            .output()
            .unwrap()
    }
    /// `tablegen cluster ARGS`.
    fn cluster(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tablegen"))
            .arg("--config")
            .arg(self.config())
            .arg("cluster")
            .arg("--director-config")
            .arg(self.path("director.yaml"))
            .args(args)
            .output()
            .unwrap()
    }
    fn versions(&self) -> Value {
        json(&self.cluster(&["versions", "--json"]))
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
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected exit 1: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn json(o: &Output) -> Value {
    serde_json::from_str(&ok(o)).unwrap()
}

fn numbers(versions: &Value) -> Vec<u64> {
    versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect()
}

/// Per service name: (version, checksum) as `tablegen show --json` computes them locally.
fn local_digests(env: &Env) -> Vec<(String, String, String)> {
    let show = json(&env.tablegen(&["show", "--json"]));
    show["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["version"].as_str().unwrap().to_string(),
                s["checksum"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn publish_drain_diff_rollback() {
    let env = Env::new();

    // Nothing yet.
    let v = env.versions();
    assert_eq!(v["current"], Value::Null);
    assert!(numbers(&v).is_empty());
    assert!(ok(&env.cluster(&["current"])).contains("nothing published"));

    // First publish: version 1, live, with the checksums tablegen computes locally.
    let out = ok(&env.cluster(&["publish", "--comment", "first", "--expect-current", "none"]));
    assert!(out.contains("published version 1 (parent none)"), "{out}");
    let v1_digests = local_digests(&env);
    let v = env.versions();
    assert_eq!(v["current"], 1);
    assert_eq!(numbers(&v), [1]);
    let meta = &v["versions"][0];
    assert_eq!(meta["comment"], "first");
    assert!(meta["author"].as_str().unwrap().contains('@'), "{meta}");
    for (name, version, checksum) in &v1_digests {
        assert_eq!(meta["services"][name]["version"], version.as_str());
        assert_eq!(meta["services"][name]["checksum"], checksum.as_str());
    }
    let human = ok(&env.cluster(&["versions"]));
    assert!(human.contains("first"), "{human}");
    for (name, _, checksum) in &v1_digests {
        assert!(
            human.contains(&format!("{name}: version")) && human.contains(checksum.as_str()),
            "{human}"
        );
    }

    // The same file again: nothing new.
    let out = ok(&env.cluster(&["publish"]));
    assert!(out.contains("unchanged: version 1"), "{out}");
    assert_eq!(numbers(&env.versions()), [1]);

    // Drain a backend, preview against the live version, publish: version 2.
    let v1_text = fs::read_to_string(env.config()).unwrap();
    let v1_show = json(&env.tablegen(&["show", "--json"]));
    ok(&env.tablegen(&["drain", "backend-3"]));
    let preview = json(&env.cluster(&["diff", "current", "--json"]));
    let out = ok(&env.cluster(&[
        "publish",
        "--comment",
        "drain backend-3",
        "--expect-current",
        "1",
    ]));
    assert!(out.contains("published version 2 (parent 1)"), "{out}");
    let v = env.versions();
    assert_eq!(v["current"], 2);
    assert_eq!(numbers(&v), [1, 2]);
    assert_eq!(v["versions"][1]["parent"], 1);
    assert_eq!(
        ok(&env.cluster(&["get", "1"])),
        v1_text,
        "get returns the text as published"
    );

    // diff 1 2: exactly the drained backend's primary rows moved, each keeping backend-3 as
    // an alternate; api untouched. Same JSON as the local `tablegen diff`.
    let d = json(&env.cluster(&["diff", "1", "2", "--json"]));
    assert_eq!(d, preview, "preview before publishing = diff after");
    fs::write(env.path("v1.yaml"), &v1_text).unwrap();
    let local = json(&env.tablegen(&[
        "diff",
        env.path("v1.yaml").to_str().unwrap(),
        env.config().to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(d, local);
    let drained_rows = v1_show["services"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "backend-3")
        .unwrap()["primary_rows"]
        .as_u64()
        .unwrap();
    assert!(drained_rows > 0);
    let web = &d["services"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["rows"], 1024);
    assert_eq!(web["primary_changed"], drained_rows);
    assert_eq!(web["primary_changed_keeps_old"], drained_rows);
    let api = &d["services"][1];
    assert_eq!(
        (api["name"].as_str(), api["hop_list_changed"].as_u64()),
        (Some("api"), Some(0))
    );
    assert_eq!(d["added"], Value::Array(vec![]));
    assert_eq!(d["removed"], Value::Array(vec![]));
    let human = ok(&env.cluster(&["diff", "1", "2"]));
    assert!(
        human.contains(&format!(
            "service web: 1024 rows; primary changed in {drained_rows} rows"
        )),
        "{human}"
    );

    // Roll back to 1: current moves, no version is created.
    let out = ok(&env.cluster(&["rollback", "1", "--expect-current", "2"]));
    assert!(out.contains("version 1 is live (was 2)"), "{out}");
    let c = json(&env.cluster(&["current", "--json"]));
    assert_eq!(c["current"], 1);
    assert_eq!(c["meta"]["version"], 1);
    assert_eq!(numbers(&env.versions()), [1, 2]);
    assert!(ok(&env.cluster(&["current"])).contains("current: version 1"));

    // A broken file publishes nothing and says where it is broken.
    let broken = CONFIG.replace("weight: 2", "weight: 0");
    fs::write(env.config(), &broken).unwrap();
    let err = fails(&env.cluster(&["publish", "--comment", "broken"]));
    let line = broken
        .lines()
        .position(|l| l.contains("weight: 0"))
        .unwrap()
        + 1;
    let want = format!("{}:{line}:", env.config().display());
    assert!(err.contains(&want), "want {want:?} in {err}");
    assert!(err.contains("weight"), "{err}");
    assert_eq!(numbers(&env.versions()), [1, 2]);
    assert_eq!(env.versions()["current"], 1);

    // A concurrent change: this operator edited from version 2, but 1 is live (rolled back by
    // someone else). Refused, with what to do; nothing published, nothing moved.
    fs::write(env.config(), CONFIG.replace("10.0.0.24", "10.0.0.25")).unwrap();
    let err = fails(&env.cluster(&["publish", "--expect-current", "2"]));
    assert!(
        err.contains("refused: the live version is 1, not 2 as --expect-current says"),
        "{err}"
    );
    assert!(err.contains("--expect-current 1"), "{err}");
    let err = fails(&env.cluster(&["rollback", "2", "--expect-current", "2"]));
    assert!(
        err.contains("refused: the live version is 1, not 2"),
        "{err}"
    );
    let v = env.versions();
    assert_eq!((numbers(&v), v["current"].as_u64()), (vec![1, 2], Some(1)));

    // With the right base it goes through.
    let out = ok(&env.cluster(&["publish", "--expect-current", "1"]));
    assert!(out.contains("published version 3 (parent 1)"), "{out}");
}

#[test]
fn connection_settings() {
    let env = Env::new();
    // Flags override the file's fields: another prefix is another (empty) cluster.
    ok(&env.cluster(&["publish"]));
    let other = json(&env.cluster(&["--prefix", "xdplb/other", "versions", "--json"]));
    assert!(numbers(&other).is_empty());
    assert_eq!(numbers(&env.versions()), [1]);

    // A file without a `consul:` section, a bad prefix, an unreachable agent: clear refusals.
    fs::write(env.path("no-consul.yaml"), "interfaces: [eth0]\n").unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tablegen"))
            .arg("--config")
            .arg(env.config())
            .arg("cluster")
            .args(args)
            .output()
            .unwrap()
    };
    let no_consul = env.path("no-consul.yaml");
    let err = fails(&run(&[
        "--director-config",
        no_consul.to_str().unwrap(),
        "versions",
    ]));
    assert!(err.contains("has no `consul:` section"), "{err}");
    let err = fails(&run(&[
        "--director-config",
        env.path("director.yaml").to_str().unwrap(),
        "--prefix",
        "/bad",
        "versions",
    ]));
    assert!(err.contains("consul.prefix \"/bad\""), "{err}");
    let err = fails(&run(&[
        "--director-config",
        no_consul.to_str().unwrap(),
        "--consul-address",
        "http://127.0.0.1:1",
        "--prefix",
        "xdplb/x",
        "versions",
    ]));
    assert!(
        err.contains("consul http://127.0.0.1:1 prefix xdplb/x"),
        "{err}"
    );
    // reqwest's and hyper's errors repeat their causes in their messages: said once.
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
}

#[test]
fn https_and_acl_token_from_flags() {
    let agent = ConsulAgent::dev_secure().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("backends.yaml");
    fs::write(&config, CONFIG).unwrap();
    let token = dir.path().join("token");
    fs::write(&token, format!("{}\n", cluster::testing::ROOT_TOKEN)).unwrap();
    let empty = dir.path().join("empty.yaml");
    fs::write(&empty, "{}\n").unwrap();
    let ca = agent.ca_file();
    let address = agent.https_address();
    let run = |extra: &[&str], args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tablegen"))
            .arg("--config")
            .arg(&config)
            .args(["cluster", "--director-config"])
            .arg(&empty)
            .args(["--consul-address", &address, "--prefix", "xdplb/secure"])
            .args(extra)
            .args(args)
            .output()
            .unwrap()
    };
    let (ca, token) = (ca.to_str().unwrap(), token.to_str().unwrap());
    let out = ok(&run(
        &["--ca-file", ca, "--token-file", token],
        &["publish"],
    ));
    assert!(out.contains("published version 1"), "{out}");
    // Without the token, ACLs deny; without the CA, the certificate is not trusted.
    let err = fails(&run(&["--ca-file", ca], &["versions"]));
    assert!(err.contains("403"), "{err}");
    let err = fails(&run(&["--token-file", token], &["versions"]));
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let v = json(&run(
        &["--ca-file", ca, "--token-file", token],
        &["versions", "--json"],
    ));
    assert_eq!((numbers(&v), v["current"].as_u64()), (vec![1], Some(1)));
}

/// Without `$USER` and `$LOGNAME` (cron, systemd units) the author is the uid's account name.
#[test]
fn a_publish_without_user_in_the_environment_names_the_account() {
    let env = Env::new();
    let out = Command::new(env!("CARGO_BIN_EXE_tablegen"))
        .arg("--config")
        .arg(env.config())
        .args(["cluster", "--director-config"])
        .arg(env.path("director.yaml"))
        .args(["publish", "--comment", "cron"])
        .env_remove("USER")
        .env_remove("LOGNAME")
        .output()
        .unwrap();
    ok(&out);
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid)
        .unwrap()
        .map_or(format!("uid{uid}"), |u| u.name);
    let author = env.versions()["versions"][0]["author"].clone();
    assert!(
        author.as_str().unwrap().starts_with(&format!("{name}@")),
        "{author}"
    );
}

/// `tablegen cluster health`: the directors x backends matrix from the views directors write
/// (written here through the same `cluster::HealthWriter` a director uses), with a director
/// whose view is gone named as absent; never a version.
#[test]
fn health_shows_each_directors_view_and_the_ones_gone() {
    use cluster::health::{BackendView, HealthView, HealthWriter};
    use std::collections::BTreeMap;

    let env = Env::new();
    assert!(ok(&env.cluster(&["health"])).contains("no director writes its health view"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _g = rt.enter();
    let cfg = env._agent.config(
        "xdplb/test",
        std::path::Path::new("/nonexistent/unused.json"),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let view = |d: &str, b2: bool| HealthView {
        director: d.into(),
        updated: now,
        ttl_secs: 10,
        services: [(
            "web".to_string(),
            BTreeMap::from([
                (
                    "backend-1".to_string(),
                    BackendView {
                        healthy: true,
                        since: now - 100,
                        last_error: None,
                    },
                ),
                (
                    "backend-2".to_string(),
                    BackendView {
                        healthy: b2,
                        since: now - 40,
                        last_error: (!b2).then(|| "tcp:80: refused".to_string()),
                    },
                ),
            ]),
        )]
        .into(),
    };
    let mut writers: Vec<HealthWriter> = ["d1", "d2", "d3"]
        .iter()
        .map(|d| HealthWriter::new(&cfg, d, std::time::Duration::from_secs(10)).unwrap())
        .collect();
    for (w, (d, b2)) in writers
        .iter_mut()
        .zip([("d1", false), ("d2", true), ("d3", true)])
    {
        rt.block_on(w.write(&view(d, b2))).unwrap();
    }
    // d3 stops: its view goes, the record that it was there stays.
    rt.block_on(writers[2].close()).unwrap();

    let text = ok(&env.cluster(&["health"]));
    assert!(text.contains("director d1: live, last written "), "{text}");
    assert!(text.contains("director d2: live"), "{text}");
    assert!(text.contains("director d3: ABSENT"), "{text}");
    let b2 = text
        .lines()
        .find(|l| l.starts_with("web/backend-2"))
        .unwrap();
    assert!(
        b2.contains("UNHEALTHY since 40s ago") && b2.contains("healthy since 40s ago"),
        "{text}"
    );
    let j = json(&env.cluster(&["health", "--json"]));
    assert_eq!(j["directors"][2]["presence"], "absent", "{j}");
    assert_eq!(j["directors"][0]["presence"], "live", "{j}");
    assert_eq!(j["backends"][1]["directors"]["d1"]["healthy"], false, "{j}");
    assert_eq!(j["backends"][1]["directors"]["d2"]["healthy"], true, "{j}");
    assert!(j["backends"][1]["directors"].get("d3").is_none(), "{j}");
    // Never a table version.
    assert_eq!(numbers(&env.versions()), Vec::<u64>::new());
}
