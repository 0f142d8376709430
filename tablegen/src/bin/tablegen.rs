//! `tablegen`: the operator CLI. Thin: parse arguments, read files, call the library, print,
//! and write files atomically. Exit status 0 = success, 1 = refused or invalid, 2 = usage.
//! `tablegen cluster ...` (Consul) is in `tablegen/cluster.rs`; `lookup --director` (a
//! director's installed tables) in `tablegen/director.rs`.

// A crate root looks for modules beside itself; keep this binary's modules in its own folder.
#[path = "tablegen/cluster.rs"]
mod cluster;
#[path = "tablegen/director.rs"]
mod director;

use std::fs;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;

use tablegen::cli::{Cli, Command, Target};
use tablegen::config::{Config, State};
use tablegen::edit::{self, Change};
use tablegen::format;
use tablegen::report::{self, hex64, FlowSpec};
use tablegen::table;
use tablegen::tableset::TableSet;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tablegen: {}", daemon_support::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn read_text(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Read and validate the config; on errors the message is every `file:line:col: ...` line.
fn load(path: &Path) -> Result<Config> {
    let text = read_text(path)?;
    parse(path, &text)
}

/// Validate config text read from `path` (a file, or where a stored version came from).
fn parse(path: &Path, text: &str) -> Result<Config> {
    let config = Config::parse(path, text)
        .map_err(|e| anyhow::anyhow!("{} error(s):\n{e}", e.errors.len()))?;
    for w in config.warnings() {
        eprintln!("tablegen: warning: {}: {w}", path.display());
    }
    Ok(config)
}

/// Write `bytes` to `path` so that readers see the old file or the new one, never a mix
/// ([`daemon_support::write_atomic`]: keeps the old file's mode and owner, follows a symlink).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    daemon_support::write_atomic(path, bytes, 0o666)
        .with_context(|| format!("writing {}", path.display()))
}

/// A table set to diff: a binary table file or a config.
fn load_tables(path: &Path) -> Result<TableSet> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(TableSet::from_bytes(path, bytes)?)
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints a diff (`tablegen diff`, `tablegen cluster diff`); OLD and NEW are named as given.
fn print_diff(d: &report::Diff, old: &str, new: &str, json: bool) -> Result<()> {
    if json {
        return print_json(d);
    }
    for s in &d.services {
        println!(
            "service {}: {} rows; primary changed in {} rows ({} keep the old primary as an alternate); hop list changed in {} rows",
            s.name, s.rows, s.primary_changed, s.primary_changed_keeps_old, s.hop_list_changed
        );
    }
    for s in &d.added {
        println!("service {s}: only in {new}");
    }
    for s in &d.removed {
        println!("service {s}: only in {old}");
    }
    Ok(())
}

fn edit_cmd(config: &Path, t: &Target, change: Change) -> Result<()> {
    let text = read_text(config)?;
    let e = edit::apply(config, &text, t.service.as_deref(), &t.name, change)?;
    let what = match change {
        Change::State(s) => format!("state {s}"),
        Change::Weight(w) => format!("weight {w}"),
    };
    if !e.changed {
        println!(
            "{}: backend {} of service {} already has {what}; nothing to do",
            config.display(),
            e.backend,
            e.service
        );
        return Ok(());
    }
    write_atomic(config, e.text.as_bytes())?;
    println!(
        "{}:{}: backend {} of service {}: {what}",
        config.display(),
        e.line,
        e.backend,
        e.service
    );
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    let config = cli.config.as_path();
    match &cli.command {
        Command::Check => {
            let c = load(config)?;
            let backends: usize = c.services.iter().map(|s| s.backends.len()).sum();
            println!(
                "{}: ok ({} services, {backends} backends)",
                config.display(),
                c.services.len()
            );
        }
        Command::Build { out } => {
            let c = load(config)?;
            let tables = table::build_all(&c);
            write_atomic(out, &format::write(&c.services, &tables))?;
            for t in &tables {
                println!(
                    "{}: {} rows x {}, version {}, checksum {}",
                    t.service,
                    t.rows,
                    t.width,
                    hex64(t.version),
                    hex64(t.checksum)
                );
            }
        }
        Command::Show { json } => {
            let c = load(config)?;
            let tables = table::build_all(&c);
            let show = report::show(&c, &tables);
            if *json {
                return print_json(&show);
            }
            for s in &show.services {
                println!(
                    "service {}: {} rows, hops {} (width {}), version {}, checksum {}",
                    s.name, s.rows, s.hops, s.width, s.version, s.checksum
                );
                println!(
                    "  {:<20} {:<40} {:<9} {:>6} {:>8} {:>9}",
                    "NAME", "ADDRESS", "STATE", "WEIGHT", "PRIMARY", "ALTERNATE"
                );
                for b in &s.backends {
                    println!(
                        "  {:<20} {:<40} {:<9} {:>6} {:>8} {:>9}",
                        b.name, b.address, b.state, b.weight, b.primary_rows, b.alternate_rows
                    );
                }
            }
        }
        Command::Lookup {
            flow,
            json,
            director,
            bpffs_dir,
            state_dir,
        } => {
            let spec: FlowSpec = flow.parse()?;
            let c = load(config)?;
            let tables = table::build_all(&c);
            if *director {
                let l = director::lookup(&c, &tables, &spec, bpffs_dir, state_dir)?;
                if *json {
                    return print_json(&l);
                }
                director::print(&l);
                return Ok(());
            }
            let l = report::lookup(&c, &tables, &spec)?;
            if *json {
                return print_json(&l);
            }
            let hops: Vec<String> = l
                .hops
                .iter()
                .zip(&l.names)
                .map(|(a, n)| format!("{a} ({n})"))
                .collect();
            println!(
                "service {}, hash {}, row {}, hops: {}",
                l.service,
                l.hash,
                l.row,
                hops.join(", ")
            );
        }
        Command::Diff { old, new, json } => {
            let (o, n) = (load_tables(old)?, load_tables(new)?);
            let d = report::diff(&o.named(), &n.named());
            print_diff(
                &d,
                &old.display().to_string(),
                &new.display().to_string(),
                *json,
            )?;
        }
        Command::Drain(t) => edit_cmd(config, t, Change::State(State::Draining))?,
        Command::Fill(t) => edit_cmd(config, t, Change::State(State::Filling))?,
        Command::Activate(t) => edit_cmd(config, t, Change::State(State::Active))?,
        Command::Deactivate(t) => edit_cmd(config, t, Change::State(State::Inactive))?,
        Command::Weight { target, weight } => {
            if *weight == 0 {
                bail!(
                    "weight must be at least 1; to take a backend out use `tablegen deactivate {}`",
                    target.name
                );
            }
            edit_cmd(config, target, Change::Weight(*weight))?
        }
        Command::Cluster(c) => cluster::run(config, c)?,
    }
    Ok(())
}
