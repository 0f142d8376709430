//! xdplb director: the XDP GUE forwarder (bpf/director.bpf.c) and its daemon.
//!
//! Module map: `config` (director.yaml), `source` (where table versions come from: the
//! file, or `consul` following a cluster),
//! `tables` (pure: config + tables -> kernel images), `datapath` (the only module touching
//! BPF objects), `daemon` (the run loop), `state` + `status` (what `status` shows), `host`
//! (sysctls), `counters` (reason names), `metrics`
//! (`/metrics`: the catalogue and the render of a scrape), `cli` (the clap definition),
//! `announce` (which VIPs are announced over BGP: the route tokens).

pub mod announce;
pub mod cli;
pub mod config;
pub mod consul;
pub mod counters;
pub mod daemon;
pub mod datapath;
pub mod error;
pub mod health;
pub mod host;
pub mod metrics;
pub mod source;
pub mod state;
pub mod status;
pub mod tables;

/// The libbpf-cargo skeleton: only its `types` (the abi.h structs) are used.
pub mod bpf {
    #![allow(
        clippy::all,
        missing_debug_implementations,
        non_camel_case_types,
        dead_code
    )]
    include!(concat!(env!("OUT_DIR"), "/director.skel.rs"));
}

pub use config::DirectorConfig;
pub use daemon::{run, Control, Handle};
