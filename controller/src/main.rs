//! `xdplb-controller`: the load-aware controller daemon (`run`), its view (`status`) and a
//! config check (`check`). Thin: the work is the library's ([`controller`]).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use clap::Parser;
use tokio::sync::watch;
use tracing::info;

use controller::cli::{Cli, Command};
use controller::config::Config;
use controller::daemon::{self, Controller, Status};
use controller::leader::Leader;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "xdplb-controller: {}",
                daemon_support::error_chain(e.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

fn load(path: &Path) -> Result<Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Config::parse(path, &text).map_err(|e| anyhow!("{} error(s):\n{e}", e.errors.len()))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Check => {
            let c = load(&cli.config)?;
            println!(
                "{}: ok ({} service(s))",
                cli.config.display(),
                c.services.len()
            );
            Ok(())
        }
        Command::Status { json } => status(&cli.config, json),
        Command::Run => {
            let config = load(&cli.config)?;
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,consulrs=off,rustify=off".into());
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .init();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(daemon_main(config))
        }
    }
}

async fn daemon_main(config: Config) -> Result<()> {
    let me = daemon::default_name();
    let leader = Leader::new(&config.consul, &me, config.lock_ttl)
        .context("setting up the Consul client")?;
    let mut ctl =
        Controller::new(config.clone(), me.clone()).context("setting up the Consul client")?;
    let _metrics = match config.metrics {
        Some(addr) => {
            let st = ctl.status();
            let render: Arc<daemon_support::metrics::http::Render> =
                Arc::new(move || controller::metrics::render(&st.lock().expect("status lock")));
            Some(
                daemon_support::metrics::http::Server::start(addr, render)
                    .with_context(|| format!("listening for metrics on {addr}"))?,
            )
        }
        None => None,
    };
    let (session_tx, session_rx) = watch::channel(None::<String>);
    let (stop_tx, stop_rx) = watch::channel(false);
    let lead = tokio::spawn(daemon::leadership(
        leader,
        config.lock_ttl,
        session_tx,
        stop_rx,
    ));
    info!(me = %me, services = config.services.len(), "controller started");
    daemon_support::notify::ready();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let session = session_rx.borrow().clone();
                let status = ctl.step(session.as_deref()).await;
                ctl.write_status(&status);
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    info!("stopping: giving the controller lock up");
    daemon_support::notify::stopping();
    let _ = stop_tx.send(true);
    let _ = lead.await;
    Ok(())
}

fn status(config: &Path, json: bool) -> Result<()> {
    let c = load(config)?;
    let text = std::fs::read_to_string(&c.status_file).with_context(|| {
        format!(
            "reading {} (is the controller running?)",
            c.status_file.display()
        )
    })?;
    if json {
        print!("{text}");
        return Ok(());
    }
    let s: Status = serde_json::from_str(&text)
        .with_context(|| format!("parsing {}", c.status_file.display()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!(
        "controller {}: {} (active: {}), updated {}s ago",
        s.me,
        s.role,
        s.active.as_deref().unwrap_or("nobody"),
        now.saturating_sub(s.updated_unix)
    );
    let show = |v: Option<u64>| v.map_or("none".to_string(), |v| v.to_string());
    println!(
        "current version {}, operator's version {}, {} version(s) published by this process",
        show(s.current_version),
        show(s.operator_version),
        s.publishes
    );
    match &s.last_publish {
        Some(p) => println!(
            "last controller version {} ({}s ago, by {}): {}",
            p.version,
            now.saturating_sub(p.at_unix),
            p.by,
            p.comment
        ),
        None => println!("no controller version in the chain of current"),
    }
    if let Some(h) = &s.holding {
        println!("not publishing: {h}");
    }
    if let Some(e) = &s.last_error {
        println!("ERROR: {e}");
    }
    for svc in &s.services {
        println!(
            "service {}: mean load {}{}",
            svc.name,
            svc.mean.map_or("-".into(), |m| format!("{m:.3}")),
            svc.frozen
                .as_ref()
                .map_or(String::new(), |f| format!(", FROZEN: {f}"))
        );
        println!(
            "  {:<16} {:<9} {:>8} {:>7} {:>9} {:>8} {:>8}  WHY",
            "BACKEND", "STATE", "LOAD", "DEV", "OPERATOR", "WEIGHT", "WANTED"
        );
        for b in &svc.backends {
            println!(
                "  {:<16} {:<9} {:>8} {:>7} {:>9} {:>8} {:>8}  {}",
                b.name,
                b.state,
                b.load.map_or("-".into(), |l| format!("{l:.3}")),
                b.deviation
                    .map_or("-".into(), |d| format!("{:+.0}%", d * 100.0)),
                b.operator_weight,
                b.weight,
                b.wanted_weight,
                b.reason
            );
        }
    }
    Ok(())
}
