//! `xdplb-lab`: the lab's command line — the demo, a lab to play in, the benchmarks, the client
//! driver, and the cleanup of leftovers. Thin: each subcommand calls into the `lab` library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use lab::client::{Pool, PoolConfig};
use lab::netns::Netns;
use lab::system::{Binaries, System, SystemOptions};
use lab::{addr, signal, Lab, LabOptions, Node, Routing};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "The xdplb lab: the whole system in network namespaces"
)]
struct Args {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The README's demo: the whole system, a live drain, a director dying; exits non-zero if
    /// any promise broke.
    Demo,
    /// Benchmarks: throughput and latency through the VIP against direct, and how long a saved
    /// backends.yaml takes to be live on both directors. Build with --release first.
    Bench {
        /// Seconds per throughput run.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Short requests per latency measurement.
        #[arg(long, default_value_t = 4000)]
        requests: usize,
    },
    /// The BGP benchmark: a director's daemon killed until the router's path is gone, its
    /// host (link) killed the same way, and a graceful drain until the last packet through the
    /// drained director and the withdrawal.
    BenchBgp {
        /// How many rounds of each.
        #[arg(long, default_value_t = 7)]
        rounds: usize,
    },
    /// Build the lab, start the backend servers, and keep it until Ctrl-C (to explore it with
    /// `ip netns exec`).
    Up {
        /// How the router forwards the VIPs: plain-directors, ecmp-backends, backend-N (static
        /// routes, no xdplb), or directors (the real xdplb daemons; the router learns the VIPs
        /// from them over BGP).
        #[arg(long, default_value = "plain-directors", value_parser = parse_routing)]
        routing: Routing,
    },
    /// Run the client driver in an existing namespace and report broken connections.
    Client {
        /// The namespace to run in (e.g. xl4242-0-client).
        #[arg(long)]
        netns: String,
        /// Where to connect.
        #[arg(long, default_value = "10.100.0.1:80")]
        target: SocketAddr,
        /// How many long-lived connections.
        #[arg(long, default_value_t = 100)]
        connections: usize,
        /// How long to keep them exchanging.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Remove namespaces and run directories left by lab runs that are gone.
    Cleanup {
        /// Also remove those of labs that are still running.
        #[arg(long)]
        all: bool,
    },
}

fn parse_routing(s: &str) -> Result<Routing, String> {
    match s {
        "plain-directors" => Ok(Routing::PlainDirectors),
        "ecmp-backends" => Ok(Routing::EcmpBackends),
        "directors" => Ok(Routing::Directors),
        _ => s
            .strip_prefix("backend-")
            .and_then(|n| n.parse().ok())
            .map(Routing::Backend)
            .ok_or_else(|| format!("unknown routing {s:?}")),
    }
}

/// Where the lab's and the other xdplb binaries are: beside this one.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("find this executable")?;
    Ok(exe
        .parent()
        .context("executable without a directory")?
        .to_owned())
}

fn binaries() -> anyhow::Result<Binaries> {
    let bins = Binaries::in_dir(&bin_dir()?);
    let missing = bins.missing();
    if !missing.is_empty() {
        bail!(
            "missing {}: build them first (cargo build -p xdplb-director -p xdplb-redirector \
             -p xdplb-tablegen -p xdplb-lab)",
            missing
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(bins)
}

fn demo() -> anyhow::Result<bool> {
    signal::install();
    let promises = lab::demo::run(binaries()?)?;
    Ok(promises.iter().all(|p| p.held))
}

fn bench(seconds: u64, requests: usize) -> anyhow::Result<()> {
    signal::install();
    let bins = binaries()?;
    let err = |e: Box<dyn std::error::Error>| anyhow::anyhow!("{e}");
    let mut report = {
        let sys = System::start(bins.clone(), SystemOptions::default())?;
        lab::bench::run_xdplb(&sys, seconds, requests).map_err(err)?
    };
    report.plain = lab::bench::run_plain(&bins.server, seconds, requests).map_err(err)?;
    println!("\nsummary (targets, for directors on their own hosts: throughput ratio >= 0.95,");
    println!("median latency <= +5 %, p99 <= +10 %; see docs/development/lab.md)\n{report}");
    Ok(())
}

fn up(routing: Routing) -> anyhow::Result<()> {
    signal::install();
    if routing == Routing::Directors {
        let sys = System::start(binaries()?, SystemOptions::default())?;
        println!(
            "lab up with xdplb; files in {}",
            sys.lab().run_dir().display()
        );
        return hold(sys.lab());
    }
    // The plain modes: no xdplb, no BIRD (nothing would be announced), static routes.
    let lab = Lab::up(LabOptions::plain())?;
    lab.start_servers(&bin_dir()?.join("xdplb-lab-server"))?;
    for i in 1..=lab.options().backends {
        lab.add_vips_on_backend(i)?;
    }
    lab.route_vips(routing)?;
    println!("lab up ({routing:?})");
    hold(&lab)?;
    lab.shutdown()
        .map_err(|e| anyhow::anyhow!("teardown: {}", e.join("; ")))
}

fn hold(lab: &Lab) -> anyhow::Result<()> {
    println!("namespaces:");
    for node in lab.nodes() {
        println!("  {}", lab.ns(node).name());
    }
    println!(
        "try: xdplb-lab client --netns {} --target {}:{} --connections 100 --seconds 10\n\
         (Ctrl-C here tears the lab down)",
        lab.ns(Node::Client).name(),
        addr::VIP_V4,
        addr::TCP_PORT
    );
    while signal::sleep(Duration::from_secs(3600)).is_ok() {}
    println!("tearing down");
    Ok(())
}

fn client(
    netns: String,
    target: SocketAddr,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<bool> {
    signal::install();
    let mut cfg = PoolConfig::new(target, connections);
    cfg.open_over = Duration::from_secs(1).min(Duration::from_secs(seconds));
    let pool = Pool::start(&Netns::existing(&netns), cfg)?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) && !signal::interrupted() {
        let _ = signal::sleep(Duration::from_secs(1));
        println!("{:>4.0}s  {}", start.elapsed().as_secs_f64(), pool.stats());
    }
    let report = pool.stop();
    println!("final: {}", report.stats);
    for b in report.broken_list() {
        println!("  broken {b}");
    }
    Ok(report.stats.broken == 0 && report.stats.established == connections)
}

fn bench_bgp(rounds: usize) -> anyhow::Result<()> {
    signal::install();
    let bins = binaries()?;
    let sys = System::start(bins, SystemOptions::default())?;
    let fig = lab::bench::run_bgp(&sys, rounds).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("\nsummary (BFD 100 ms x 8; timings on a shared machine)\n{fig}");
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.cmd {
        Command::Demo => demo(),
        Command::Bench { seconds, requests } => bench(seconds, requests).map(|()| true),
        Command::BenchBgp { rounds } => bench_bgp(rounds).map(|()| true),
        Command::Up { routing } => up(routing).map(|()| true),
        Command::Client {
            netns,
            target,
            connections,
            seconds,
        } => client(netns, target, connections, seconds),
        Command::Cleanup { all } => {
            let r = lab::cleanup::leftovers(all);
            for n in &r.namespaces {
                println!("deleted namespace {n}");
            }
            for d in &r.dirs {
                println!("removed {}", d.display());
            }
            for e in &r.errors {
                eprintln!("cleanup: {e}");
            }
            if r.namespaces.is_empty() && r.dirs.is_empty() && r.errors.is_empty() {
                println!("nothing to clean up");
            }
            Ok(r.errors.is_empty())
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xdplb-lab: {}", daemon_support::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
