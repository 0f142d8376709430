//! `backends.yaml`: parse, validate, and turn into the typed [`Config`].
//!
//! Two steps, as the house style asks: the YAML text becomes a marked tree (the `yaml` crate),
//! and [`Config::parse`] checks every field of it once, collecting *all* errors with their
//! file, line and column before giving up, so an operator fixes a file in one round. Code that
//! receives a [`Config`] never re-validates: every invariant listed on [`Service`] holds.
//!
//! - `types`: [`Config`], [`Service`], [`Bind`], [`Backend`], [`State`] and the limits.
//! - `error`: [`ErrorKind`], [`ConfigError`], [`ConfigErrors`].
//! - `validate`: [`Config::parse`], the field-by-field check.
//!
//! The schema is documented for operators in docs/setup/backends.md; keep the two in step.
//!
//! Must not do: I/O (the caller reads the file and passes its path only for messages).

mod error;
mod types;
mod validate;

pub use error::{ConfigError, ConfigErrors, ErrorKind};
pub use types::{
    Backend, Bind, Config, Health, HealthCheck, Proto, Service, State, Warning, HEALTH_COUNT_MAX,
    HEALTH_FAIL_OPEN_DEFAULT, HEALTH_FALL_DEFAULT, HEALTH_HOLD_DEFAULT, HEALTH_INTERVAL_DEFAULT,
    HEALTH_JITTER_DEFAULT, HEALTH_RISE_DEFAULT, HEALTH_TIMEOUT_DEFAULT, HOPS_DEFAULT, HOPS_MAX,
    HOPS_MIN, TABLE_BITS_DEFAULT, TABLE_BITS_MAX, TABLE_BITS_MIN, WEIGHT_MAX,
};
