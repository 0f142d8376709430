//! The xdplb lab: the whole system on one machine, in network namespaces — a client, a router
//! spreading the VIPs over two directors by ECMP, the directors, and backends that answer the
//! client directly (DSR). The README's demo, the end-to-end tests and the benchmarks all run on
//! it. See docs/development/lab.md for the picture and the address plan.
//!
//! - [`topology`]: builds and tears down the namespaces and links ([`topology::Lab`] is the guard).
//! - [`addr`]: the address plan (lab-only ranges).
//! - [`bgp`]: BIRD on the router and the directors (the `bgp` option): VIP routes over BGP.
//! - [`server`]: the backend server (`xdplb-lab-server`).
//! - [`client`]: the client driver that counts broken connections precisely.
//! - [`churn`]: short-lived connections replaced as they end (traffic that follows the table).
//! - [`load`]: the load-aware controller's loop through the lab: load exporters, Prometheus.
//! - [`system`]: the real xdplb in the lab: the operator's files, the daemons, `tablegen`.
//! - [`demo`], [`bench`]: the README's demo and the on-demand benchmarks.
//! - [`icmp`]: "too big" messages about a live flow, and a watcher on the backends.
//! - [`signal`]: Ctrl-C turned into an orderly teardown.
//! - [`cleanup`]: removes what a killed run left behind.
//! - [`cmd`], [`netns`]: the typed wrappers for `ip` and friends, and running code in a namespace.
//! - [`testns`]: the one-namespace-per-test fixture the daemons' root tests use (a
//!   dev-dependency of theirs).
//!
//! The lab only ever sends traffic to addresses inside namespaces it created, and bounds every
//! loop in count and time.

pub mod addr;
pub mod bench;
pub mod bgp;
pub mod churn;
pub mod cleanup;
pub mod client;
pub mod cmd;
pub mod demo;
pub mod icmp;
pub mod load;
pub mod netns;
pub mod server;
pub mod signal;
pub mod system;
pub mod testns;
pub mod topology;
pub mod udp_flows;

pub use addr::Family;
pub use topology::{Lab, LabError, LabOptions, Node, Routing};

/// `d` stretched by `XDPLB_LAB_SLOWDOWN` (a whole factor, default 1): the lab's waits for
/// daemons and flows are sized for a real machine, and an emulated one (the kernel test matrix
/// runs the lab in qemu without KVM) is many times slower. Bounds stay bounds, only longer.
pub fn scaled(d: std::time::Duration) -> std::time::Duration {
    static FACTOR: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let f = *FACTOR.get_or_init(|| {
        std::env::var("XDPLB_LAB_SLOWDOWN")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|f| (1..=100).contains(f))
            .unwrap_or(1)
    });
    d * f
}
