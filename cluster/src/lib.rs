//! Cluster sync for xdplb directors through Consul.
//!
//! Directors behind one ECMP group must forward every flow the same way, so they must serve the
//! same tables. This crate keeps numbered, immutable versions of `backends.yaml` in Consul's KV
//! store under one prefix per cluster, with a `current` pointer to the live one:
//!
//! - [`Store`] publishes (under a session lock, with check-and-set), lists, reads (checking
//!   integrity), rolls back and watches `current` with blocking queries;
//! - [`Follower`] is a director's table source: it follows `current`, hands each new version to
//!   the director's `verify_and_apply` callback, keeps the last good version when that refuses,
//!   persists what it applied, and reports a [`FollowerStatus`];
//! - [`ConsulSection`] / [`ConsulConfig`] are director.yaml's `consul:` section;
//! - [`health`]: directors' health views (ephemeral, in TTL sessions) and the directors x
//!   backends matrix of `tablegen cluster health`; never a table version;
//! - [`session::Session`]: a Consul session its one holder keeps alive (health views, the
//!   load-aware controller's lock);
//! - [`testing::ConsulAgent`] runs a real Consul agent for tests.
//!
//! This crate stores config text and checksums, never tables, and does not depend on tablegen:
//! the caller computes checksums and verifies them. Only [`consul`] talks to Consul.
//!
//! How a director plugs it in (the callback is where it parses, builds, compares and swaps):
//!
//! ```no_run
//! use std::sync::Arc;
//! use cluster::{ApplyError, ConsulSection, Follower, Store, VersionMeta};
//!
//! # async fn director(section: ConsulSection, shutdown: tokio::sync::oneshot::Receiver<()>)
//! #     -> Result<(), Box<dyn std::error::Error>> {
//! let config = section.validate()?; // director.yaml `consul:`
//! let store = Arc::new(Store::new(&config)?);
//! let verify_and_apply = |text: &str, meta: &VersionMeta| -> Result<(), ApplyError> {
//!     // tablegen::config::Config::parse, table::build_all, compare every
//!     // (table.version, table.checksum) with meta.services[&table.service], then swap.
//!     let _ = (text, meta);
//!     Ok(())
//! };
//! let follower = Arc::new(Follower::new(store.clone(), &config.state_file, verify_and_apply));
//! let f = follower.clone();
//! tokio::spawn(async move { f.run(async { let _ = shutdown.await; }).await });
//! // `status` command: follower.status() (serde::Serialize), or follower.subscribe().
//! // Publishing its own file: store.publish_if_changed(text, meta).await?
//! # Ok(()) }
//! ```

pub mod config;
pub mod consul;
pub mod follower;
pub mod health;
pub mod meta;
pub mod session;
pub mod state;
pub mod store;
pub mod testing;

pub use config::{ConfigError, ConsulConfig, ConsulSection, Token};
pub use consul::ConsulError;
pub use follower::{Applied, ApplyError, Follower, FollowerStatus, Rejection, Source};
pub use health::{HealthView, HealthViews, HealthWriter, Matrix};
pub use meta::{service_digests, Expect, Mismatch, PublishMeta, ServiceDigest, VersionMeta};
pub use session::{OnEnd, Session};
pub use state::StateError;
pub use store::{Error, Store, Version, Watched, CHUNK_SIZE};
