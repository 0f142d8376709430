//! xdplb tablegen: compiles `backends.yaml` into forwarding tables.
//!
//! Pure: config text in, tables out. No file or network I/O, no clock (the CLI in
//! `src/bin/tablegen.rs` and the daemons do the I/O).
//!
//! - [`config`]: parse and validate `backends.yaml` into typed services (errors with positions).
//! - [`table`]: rendezvous tables per service; [`table::Planner`] for one-backend changes.
//! - [`score`]: the per-row backend scores the tables rank by.
//! - [`hash`]: the keyed flow hash the director's XDP program mirrors.
//! - [`format`](mod@format): the binary table file.
//! - [`report`]: `show` / `lookup` / `diff` results (stable JSON).
//! - [`edit`]: in-place edits of a backend's state or weight.
//! - [`tableset`]: a config's tables as `diff` compares them, from a config or a table file.
//! - [`installed`]: a director's installed tables read back from its kernel maps' bytes, and a
//!   flow looked up in them beside the published table (`lookup --director`).
//! - [`cli`]: the clap definition of the `tablegen` command.
//!
//! YAML is read through the `yaml` crate (xdplb-yaml), which gives every node its position.

pub mod cli;
pub mod config;
pub mod edit;
pub mod format;
pub mod hash;
pub mod installed;
pub mod report;
pub mod score;
pub mod table;
pub mod tableset;
