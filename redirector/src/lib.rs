//! xdplb redirector: the backend side of xdplb.
//!
//! A TC (clsact ingress) BPF program, `bpf/redirector.bpf.c`, takes GUE packets from the
//! directors, hands those that belong to this host to the stack (decapsulated) and gives the
//! others a second chance at the next backend in the packet's hop list. This crate loads,
//! attaches, configures and observes that program, and sets up the host for Direct Server
//! Return (`setup`).
//!
//! Modules: [`config`] (file -> validated [`config::Config`]), [`datapath`] (the only module that
//! calls into BPF maps and programs; the daemon holds the loaded skeleton and passes it back), [`setup`] (host changes for DSR, reversible), [`daemon`] (the
//! `run`/`detach`/`status` commands), [`cli`] (the clap definition, shared with packaging for
//! man pages), [`counters`] (reason names for the kernel's per-CPU counters), [`metrics`] (`/metrics`: the
//! catalogue and the render of a scrape), [`reloads`] (config reloads by result, for `status` and
//! `/metrics`).

pub mod cli;
pub mod config;
pub mod counters;
pub mod daemon;
pub mod datapath;
pub mod error;
pub mod metrics;
pub mod reloads;
pub mod setup;

pub use error::Error;

/// The generated libbpf-rs skeleton of `bpf/redirector.bpf.c` (`types::` carries the ABI structs
/// of `bpf/include/abi.h`).
pub mod skel {
    #![allow(
        clippy::all,
        clippy::pedantic,
        missing_debug_implementations,
        non_camel_case_types,
        non_upper_case_globals,
        dead_code,
        unused_qualifications
    )]
    include!(concat!(env!("OUT_DIR"), "/redirector.skel.rs"));
}
