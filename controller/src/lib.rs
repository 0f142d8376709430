//! The load-aware controller: per service, it reads every backend's load from Prometheus,
//! moves the backends' weights so their loads converge to the service's mean, and publishes
//! the result as a new cluster version, which every director verifies and applies like any
//! other. One controller is active per cluster (a Consul lock); others stand by.
//!
//! - [`cli`], the command line (here so packaging renders man pages from it);
//! - [`law`], the control law, pure (proportional step, bounds, dead band and hysteresis,
//!   fleet-overload guard, freezing without data);
//! - [`config`], controller.yaml;
//! - [`prom`], the load query against Prometheus;
//! - [`leader`], the Consul lock that makes one controller the active one;
//! - [`daemon`], the loop: read, decide, publish (or say why not), and the status;
//! - [`metrics`], the status as `/metrics`.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod law;
pub mod leader;
pub mod metrics;
pub mod prom;
