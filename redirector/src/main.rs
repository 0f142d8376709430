//! `xdplb-redirector`: parse arguments, set up logging and signals, call the library.

use std::process::ExitCode;
use std::sync::mpsc;

use anyhow::Context;
use clap::Parser;
use daemon_support::defaults;
use nix::sys::signal::{SigSet, Signal};
use redirector::cli::{Cli, Command, LogFormat};
use redirector::config::Config;
use redirector::daemon::{self, Event};
use tracing::warn;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // EX_CONFIG ([`redirector::Error::is_config`]): the unit does not restart on what
            // only the operator can fix. A reload (SIGHUP) never exits: a bad file is logged
            // and the last good config stays.
            let config = e
                .downcast_ref::<redirector::Error>()
                .is_some_and(redirector::Error::is_config);
            daemon_support::exit_with("xdplb-redirector", e.as_ref(), config)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run => {
            // Block the signals in every thread (threads inherit the mask); one thread takes
            // them synchronously and turns them into events, so the library has no handlers.
            let mut set = SigSet::empty();
            for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
                set.add(s);
            }
            set.thread_block().context("block signals")?;
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || loop {
                let event = match set.wait() {
                    Ok(Signal::SIGHUP) => Event::Reload,
                    Ok(_) => Event::Stop,
                    Err(_) => continue,
                };
                if tx.send(event).is_err() || event == Event::Stop {
                    break;
                }
            });
            daemon::run(&cli.config, rx)?;
        }
        Command::Detach => {
            // Package removal runs this: a missing or broken config must not keep the program
            // attached, so fall back to the default locations.
            let (pin_dir, state_dir) = match Config::load(&cli.config) {
                Ok(c) => (c.pin_dir(), c.state_dir),
                Err(e) => {
                    warn!(error = %e.chain(), "config unusable; detaching with the default paths");
                    (
                        std::path::Path::new(defaults::BPFFS_DIR).join("redirector"),
                        defaults::STATE_DIR.into(),
                    )
                }
            };
            let pinned = pin_dir.exists();
            let interfaces = daemon::detach(&pin_dir, &state_dir)?;
            println!(
                "detached from {} interface(s); {} {}",
                interfaces.len(),
                if pinned {
                    "removed"
                } else {
                    "nothing was pinned under"
                },
                pin_dir.display()
            );
        }
        Command::Status { json } => {
            let config = Config::load(&cli.config)?;
            let status = daemon::status(&config)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{status}");
            }
        }
        Command::Setup => {
            let config = Config::load(&cli.config)?;
            let changes = redirector::setup::apply(&config)?;
            println!("{}", serde_json::to_string_pretty(&changes)?);
        }
    }
    Ok(())
}
