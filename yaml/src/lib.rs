//! xdplb-yaml: the one YAML layer of every xdplb config file (`backends.yaml`,
//! `director.yaml`, `redirector.yaml`, and the `consul:` section the director and tablegen
//! share).
//!
//! A config is read in two steps. [`node::parse`] turns the text into a tree of [`Node`]s that
//! remember their line, column and byte offset; a [`Checker`] then walks that tree field by
//! field and collects *every* problem as a [`Located`] error (`file:line:col: message`), so an
//! operator fixes a file in one round. Unknown keys are refused with "did you mean `x`?" when a
//! known key is close.
//!
//! No serde: a deserializer reports one error and forgets positions once it has built a value,
//! while here each field is checked where it stands. serde_yaml (deprecated upstream) is
//! therefore not used by any config reader; scalars are interpreted by the schema that owns
//! them (so YAML 1.1 guesses such as `no` -> false or `0777` -> octal never apply).
//!
//! - [`node`]: the marked tree and the parser.
//! - [`error`]: [`Problem`] (what can be wrong with any YAML config), [`Located`], [`Errors`].
//! - [`check`]: [`Checker`] and [`Fields`], the walk that records errors.
//! - [`golden`]: the driver of each config crate's golden error-file tests.
//!
//! Must not do: I/O, or know any config's schema (each crate owns its own).

pub mod check;
pub mod error;
pub mod golden;
pub mod node;

pub use check::{Checker, Fields};
pub use error::{did_you_mean, Errors, Located, Problem};
pub use node::{parse, Node, NodeKind, Pos, SyntaxError};
