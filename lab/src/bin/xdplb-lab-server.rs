//! `xdplb-lab-server`: the lab's backend server (see `lab::server`). Runs inside a backend's
//! network namespace until killed.

use std::net::IpAddr;

use clap::Parser;

/// TCP and UDP server that answers every request with its own name.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The name to answer with (the backend's name).
    #[arg(long)]
    name: String,
    /// TCP port (all addresses).
    #[arg(long, default_value_t = 80)]
    tcp: u16,
    /// UDP port (all addresses).
    #[arg(long, default_value_t = 53)]
    udp: u16,
    /// UDP port with a connected socket per client, as QUIC servers keep them (VIPs only;
    /// 0: none).
    #[arg(long = "udp-connected", default_value_t = lab::addr::UDP_CONNECTED_PORT)]
    udp_connected: u16,
    /// A VIP served here: UDP answers to it leave from it (repeatable).
    #[arg(long = "vip")]
    vips: Vec<IpAddr>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = lab::server::ServerConfig {
        name: args.name,
        tcp_port: args.tcp,
        udp_port: args.udp,
        udp_connected_port: args.udp_connected,
        vips: args.vips,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(lab::server::run(cfg))?;
    Ok(())
}
