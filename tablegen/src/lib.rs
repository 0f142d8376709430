//! xdplb tablegen: compiles `backends.yaml` into forwarding tables.
//!
//! Pure: config text in, tables out. No file or network I/O, no clock (the CLI in
//! `src/bin/tablegen.rs` and the daemons do the I/O).

pub mod hash;
