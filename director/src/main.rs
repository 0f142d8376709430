//! `xdplb-director`: parse arguments, set up logging and signals, call the library.

use anyhow::Context;
use clap::Parser;
use director::cli::{Cli, Command};
use director::daemon::{self, Control};
use director::DirectorConfig;
use nix::sys::signal::{SigSet, Signal};

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // EX_CONFIG for what only the operator can fix: the unit does not restart on it.
            let config = e.downcast_ref::<director::error::ConfigError>().is_some()
                || e.downcast_ref::<director::error::DaemonError>()
                    .is_some_and(director::error::DaemonError::is_config);
            daemon_support::exit_with("xdplb-director", e.as_ref(), config)
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Plain lines for the journal (the unit sets NO_COLOR) and for pipes.
        .with_ansi(
            std::env::var_os("NO_COLOR").is_none()
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )
        .init();
    let cfg = DirectorConfig::load(&cli.config)?;
    match cli.command {
        Command::Run => {
            // Block the signals in every thread (threads inherit the mask) and take them
            // synchronously in one thread that turns them into daemon events.
            let mut set = SigSet::empty();
            set.add(Signal::SIGHUP);
            set.add(Signal::SIGTERM);
            set.add(Signal::SIGINT);
            set.add(Signal::SIGUSR1);
            set.thread_block().context("blocking signals")?;
            let control = Control::new();
            let handle = control.handle();
            std::thread::spawn(move || loop {
                match set.wait() {
                    Ok(Signal::SIGHUP) => handle.reload(),
                    Ok(Signal::SIGUSR1) => handle.announce(),
                    Ok(_) => {
                        handle.shutdown();
                        break;
                    }
                    Err(_) => continue,
                }
            });
            daemon::run(cfg, control).map_err(anyhow::Error::from)
        }
        Command::Status { json } => {
            let s = director::status::gather(&cfg);
            print!("{}", if json { s.to_json() } else { s.to_text() });
            Ok(())
        }
        Command::DrainAnnouncements | Command::UndrainAnnouncements => {
            let a = cfg
                .announce
                .as_ref()
                .context("director.yaml has no announce: section; nothing is announced")?;
            let drain = matches!(cli.command, Command::DrainAnnouncements);
            if drain {
                let d = director::announce::start_drain(&cfg.state_dir)
                    .context("writing the drain file")?;
                println!(
                    "drained: graceful shutdown announced, withdrawn {} ms after {}",
                    a.drain_delay.as_millis(),
                    d.since_ms
                );
            } else {
                let was = director::announce::end_drain(&cfg.state_dir)
                    .context("removing the drain file")?;
                println!(
                    "{}",
                    if was {
                        "undrained: the vips are announced again where nothing else withdraws them"
                    } else {
                        "not drained"
                    }
                );
            }
            // Tell a running daemon (it also looks every tick).
            let st = director::state::State::read(&cfg.state_file()).unwrap_or_default();
            let comm =
                std::fs::read_to_string(format!("/proc/{}/comm", st.pid)).unwrap_or_default();
            if st.pid != 0 && comm.trim() == "xdplb-director" {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(st.pid as i32),
                    Signal::SIGUSR1,
                );
            }
            Ok(())
        }
        Command::FlushAnnouncements => {
            match &cfg.announce {
                Some(a) => {
                    director::announce::flush(a).context("flushing the route tokens")?;
                    println!("route tokens flushed from table {}", a.table);
                }
                None => println!("director.yaml has no announce: section; nothing to flush"),
            }
            Ok(())
        }
        Command::Detach => {
            let pinned = cfg.pin_dir().exists();
            let ifaces = director::datapath::detach_all(&cfg.pin_dir())?;
            let _ = std::fs::remove_file(cfg.state_file());
            println!(
                "detached from {} interface(s); {} {}",
                ifaces.len(),
                if pinned {
                    "removed"
                } else {
                    "nothing was pinned under"
                },
                cfg.pin_dir().display()
            );
            for r in director::host::restore_sysctls(&cfg.sysctl_log(), None)? {
                match r {
                    director::host::Restored::Reverted(c) => {
                        println!("restored {} = {}", c.path.display(), c.before)
                    }
                    director::host::Restored::Kept { change, now } => println!(
                        "left {} = {} (changed since xdplb-director set it to {})",
                        change.path.display(),
                        now,
                        change.set
                    ),
                }
            }
            Ok(())
        }
    }
}
