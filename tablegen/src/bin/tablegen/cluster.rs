//! `tablegen cluster ...`: the operator side of cluster sync. Publishes the backends file as a
//! new version in Consul, lists versions, prints one, diffs two, and moves `current` (rollback).
//!
//! Everything Consul-shaped is the `cluster` crate's ([`cluster::Store`]); this module only
//! resolves the connection settings, validates and builds with the tablegen library, and
//! prints. The library stays pure: the tokio runtime lives here, for these commands only.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde::Serialize;

use cluster::{ConsulConfig, ConsulSection, Expect, PublishMeta, Store, VersionMeta};
use tablegen::cli::{
    Cluster, ClusterCommand, ConsulArgs, Expected, VersionRef, DEFAULT_DIRECTOR_CONFIG,
};
use tablegen::report::{self, hex64, utc};
use tablegen::table;
use tablegen::tableset::TableSet;

use super::{load, parse, print_diff, print_json, read_text, write_atomic};

pub fn run(config: &Path, c: &Cluster) -> Result<()> {
    init_tracing();
    let consul = consul_config(&c.consul)?;
    let store = Store::new(&consul).context("setting up the Consul client")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let cx = Ctx {
        store,
        consul,
        rt,
        config,
    };
    match &c.command {
        ClusterCommand::Publish {
            comment,
            expect_current,
        } => cx.publish(comment, *expect_current),
        ClusterCommand::Versions { json } => cx.versions(*json),
        ClusterCommand::Current { json } => cx.current(*json),
        ClusterCommand::Get { version, out } => cx.get(*version, out.as_deref()),
        ClusterCommand::Diff { old, new, json } => cx.diff(*old, *new, *json),
        ClusterCommand::Rollback {
            version,
            expect_current,
        } => cx.rollback(*version, *expect_current),
        ClusterCommand::Health { json } => cx.health(*json),
    }
}

/// Warnings of the cluster crate (a lock not released, ...) go to stderr; `RUST_LOG` for more.
/// consulrs logs every request and every 404 without context: kept quiet.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,consulrs=off,rustify=off".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .try_init();
}

/// The settings: the file's `consul:` section (if the file exists and has one), each flag
/// overriding its field. An explicitly named file must exist; the default one may not.
fn consul_config(args: &ConsulArgs) -> Result<ConsulConfig> {
    let (path, explicit) = match &args.director_config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_DIRECTOR_CONFIG), false),
    };
    let from_file = match fs::read_to_string(&path) {
        Ok(text) => ConsulSection::from_director_yaml(&path, &text)
            .map_err(|e| anyhow!("{e}"))
            .context("reading the consul: section")?,
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut s = from_file.unwrap_or_else(|| ConsulSection {
        address: String::new(),
        datacenter: None,
        token: None,
        token_file: None,
        ca_file: None,
        prefix: String::new(),
        state_file: None,
    });
    if let Some(a) = &args.consul_address {
        s.address = a.clone();
    }
    if let Some(p) = &args.prefix {
        s.prefix = p.clone();
    }
    if let Some(t) = &args.token_file {
        s.token = None;
        s.token_file = Some(t.clone());
    }
    if let Some(c) = &args.ca_file {
        s.ca_file = Some(c.clone());
    }
    if let Some(d) = &args.datacenter {
        s.datacenter = Some(d.clone());
    }
    let missing: Vec<&str> = [
        (s.address.is_empty(), "--consul-address"),
        (s.prefix.is_empty(), "--prefix"),
    ]
    .into_iter()
    .filter_map(|(m, flag)| m.then_some(flag))
    .collect();
    if !missing.is_empty() {
        return Err(anyhow!(
            "where is the cluster? {} has no `consul:` section{}; pass {} (or --director-config FILE; see docs/setup/cluster.md)",
            path.display(),
            if path.exists() { "" } else { " (no such file)" },
            missing.join(" and ")
        ));
    }
    let from = if args.director_config.is_some() || path.exists() {
        format!("consul settings from {} and flags", path.display())
    } else {
        "consul settings from flags".to_string()
    };
    s.validate().context(from)
}

struct Ctx<'a> {
    store: Store,
    consul: ConsulConfig,
    rt: tokio::runtime::Runtime,
    /// The local backends file (`--config`).
    config: &'a Path,
}

/// `versions --json`.
#[derive(Serialize)]
struct VersionsJson<'a> {
    current: Option<u64>,
    versions: &'a [VersionMeta],
}

/// `current --json`.
#[derive(Serialize)]
struct CurrentJson<'a> {
    current: Option<u64>,
    meta: Option<&'a VersionMeta>,
}

impl Ctx<'_> {
    fn block_on<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, cluster::Error>>,
    ) -> Result<T> {
        self.rt.block_on(f).map_err(|e| self.explain(e))
    }

    /// Adds where we were talking to, and turns a conflict into what to do about it.
    fn explain(&self, e: cluster::Error) -> anyhow::Error {
        let at = format!(
            "consul {} prefix {}",
            self.consul.address.as_str().trim_end_matches('/'),
            self.consul.prefix
        );
        match e {
            cluster::Error::Conflict { expected, actual } => {
                let (exp, act) = (show(expected), show(actual));
                let mut msg = format!(
                    "refused: the live version is {act}, not {exp} as --expect-current says: \
                     someone changed the cluster in between"
                );
                if let (Some(x), Some(a)) = (expected, actual) {
                    msg.push_str(&format!(
                        ". See what changed with `tablegen cluster diff {x} {a}`, redo your change on \
                         version {a} (`tablegen cluster get {a} --out FILE`), and retry with --expect-current {a}"
                    ));
                } else {
                    msg.push_str(&format!(". Check, then retry with --expect-current {act}"));
                }
                anyhow!(msg).context(at)
            }
            e => anyhow::Error::new(e).context(at),
        }
    }

    fn health(&self, json: bool) -> Result<()> {
        let views = self.block_on(self.store.health_views())?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let m = cluster::Matrix::new(&views, now);
        if json {
            return print_json(&m);
        }
        if m.directors.is_empty() {
            println!("no director writes its health view here (director.yaml: health_view)");
            return Ok(());
        }
        let ago = |t: u64| format!("{}s ago", now.saturating_sub(t));
        for d in &m.directors {
            let what = match d.presence {
                cluster::health::Presence::Live => "live",
                cluster::health::Presence::Stale => "STALE (not rewritten within its TTL)",
                cluster::health::Presence::Absent => {
                    "ABSENT (view gone: died, stopped or lost Consul)"
                }
            };
            println!(
                "director {}: {what}, last written {}",
                d.name,
                d.updated.map_or("never".into(), ago)
            );
        }
        let width = m
            .backends
            .iter()
            .map(|b| b.service.len() + b.backend.len() + 1)
            .max()
            .unwrap_or(0)
            .max(7);
        let present: Vec<&cluster::health::DirectorColumn> = m
            .directors
            .iter()
            .filter(|d| d.presence != cluster::health::Presence::Absent)
            .collect();
        let mut head = format!("{:<width$}", "BACKEND");
        for d in &present {
            head.push_str(&format!("  {:<24}", d.name));
        }
        println!("{}", head.trim_end());
        for b in &m.backends {
            let mut line = format!("{:<width$}", format!("{}/{}", b.service, b.backend));
            for d in &present {
                let cell = match b.directors.get(&d.name) {
                    Some(v) => format!(
                        "{} since {}",
                        if v.healthy { "healthy" } else { "UNHEALTHY" },
                        ago(v.since)
                    ),
                    None => "-".to_string(),
                };
                line.push_str(&format!("  {cell:<24}"));
            }
            println!("{}", line.trim_end());
        }
        Ok(())
    }

    fn current_version(&self) -> Result<Option<u64>> {
        self.block_on(self.store.current())
    }

    fn resolve(&self, v: VersionRef) -> Result<u64> {
        match v {
            VersionRef::Number(n) => Ok(n),
            VersionRef::Current => self
                .current_version()?
                .ok_or_else(|| anyhow!("nothing is published yet: there is no current version")),
        }
    }

    fn publish(&self, comment: &str, expect: Option<Expected>) -> Result<()> {
        let text = read_text(self.config)?;
        // A file that does not validate publishes nothing: its errors, file:line:col each.
        let config = parse(self.config, &text)?;
        let tables = table::build_all(&config);
        let services = cluster::service_digests(
            tables
                .iter()
                .map(|t| (t.service.as_str(), t.version, t.checksum)),
        );
        let meta = PublishMeta {
            services,
            author: None,
            comment: comment.to_string(),
            expect: match expect {
                Some(Expected(v)) => Expect::Current(v),
                None => Expect::Any,
            },
        };
        let (m, created) = self.block_on(self.store.publish_if_changed(&text, meta))?;
        if !created {
            println!(
                "unchanged: version {} is live with exactly this file; nothing published",
                m.version
            );
            return Ok(());
        }
        println!(
            "published version {} (parent {}) from {}; it is live",
            m.version,
            show(m.parent),
            self.config.display()
        );
        print_digests(&m, "  ");
        Ok(())
    }

    fn versions(&self, json: bool) -> Result<()> {
        let current = self.current_version()?;
        let list = self.block_on(self.store.list())?;
        if json {
            return print_json(&VersionsJson {
                current,
                versions: &list,
            });
        }
        if list.is_empty() {
            println!("no versions published under {}", self.consul.prefix);
            return Ok(());
        }
        println!(
            "  {:>7}  {:<19}  {:<24}  {:>6}  COMMENT",
            "VERSION", "CREATED (UTC)", "AUTHOR", "PARENT"
        );
        for m in &list {
            let mark = if Some(m.version) == current { '*' } else { ' ' };
            println!(
                "{mark} {:>7}  {:<19}  {:<24}  {:>6}  {}",
                m.version,
                utc(m.created_unix),
                m.author,
                show(m.parent),
                m.comment
            );
            print_digests(m, "           ");
        }
        println!("(* = current)");
        Ok(())
    }

    fn current(&self, json: bool) -> Result<()> {
        let current = self.current_version()?;
        let meta = match current {
            Some(v) => Some(self.block_on(self.store.meta(v))?),
            None => None,
        };
        if json {
            return print_json(&CurrentJson {
                current,
                meta: meta.as_ref(),
            });
        }
        match meta {
            None => println!("nothing published under {}", self.consul.prefix),
            Some(m) => {
                println!(
                    "current: version {} (parent {}), published {} UTC by {}{}",
                    m.version,
                    show(m.parent),
                    utc(m.created_unix),
                    m.author,
                    if m.comment.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", m.comment)
                    }
                );
                print_digests(&m, "  ");
            }
        }
        Ok(())
    }

    fn get(&self, v: VersionRef, out: Option<&Path>) -> Result<()> {
        let n = self.resolve(v)?;
        let version = self.block_on(self.store.get(n))?;
        match out {
            Some(path) => {
                write_atomic(path, version.text.as_bytes())?;
                eprintln!("version {n} written to {}", path.display());
            }
            None => print!("{}", version.text),
        }
        Ok(())
    }

    /// A stored version's tables, built here. Says so when they do not reproduce the published
    /// checksums (a different tablegen, or a damaged version): directors would refuse it.
    fn tables(&self, n: u64) -> Result<TableSet> {
        let version = self.block_on(self.store.get(n))?;
        let origin = PathBuf::from(format!("consul:{}/versions/{n}", self.consul.prefix));
        let loaded = TableSet::build(parse(&origin, &version.text)?);
        for msg in reproduce(&loaded, &version.meta) {
            eprintln!("tablegen: warning: version {n}: {msg}");
        }
        Ok(loaded)
    }

    fn diff(&self, old: VersionRef, new: Option<VersionRef>, json: bool) -> Result<()> {
        let o = self.resolve(old)?;
        let old_tables = self.tables(o)?;
        let (new_tables, new_name) = match new {
            Some(v) => {
                let n = self.resolve(v)?;
                (self.tables(n)?, format!("version {n}"))
            }
            None => (
                TableSet::build(load(self.config)?),
                self.config.display().to_string(),
            ),
        };
        let d = report::diff(&old_tables.named(), &new_tables.named());
        print_diff(&d, &format!("version {o}"), &new_name, json)
    }

    fn rollback(&self, n: u64, expect: Option<Expected>) -> Result<()> {
        // Directors check the checksums themselves; warn early if they will refuse it.
        self.tables(n)?;
        let before = self.current_version()?;
        let expect = match expect {
            Some(Expected(v)) => Expect::Current(v),
            None => Expect::Any,
        };
        self.block_on(self.store.set_current(n, expect))?;
        if before == Some(n) {
            println!("version {n} is live already");
        } else {
            println!("version {n} is live (was {})", show(before));
        }
        Ok(())
    }
}

/// Why directors will refuse the version, by the check they use themselves.
fn reproduce(loaded: &TableSet, meta: &VersionMeta) -> Vec<String> {
    let built = cluster::service_digests(
        loaded
            .items
            .iter()
            .map(|(name, _, t)| (name.as_str(), t.version, t.checksum)),
    );
    meta.mismatches(&built)
        .iter()
        .map(|m| format!("{m}; directors that build what this tablegen builds will refuse it"))
        .collect()
}

fn print_digests(m: &VersionMeta, indent: &str) {
    for (name, d) in &m.services {
        println!(
            "{indent}{name}: version {}, checksum {}",
            hex64(d.version),
            hex64(d.checksum)
        );
    }
}

fn show(v: Option<u64>) -> String {
    v.map_or_else(|| "none".to_string(), |v| v.to_string())
}
