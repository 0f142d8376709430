//! What can be wrong in `backends.yaml`: [`ErrorKind`] (each message says how to fix it), and
//! the positioned [`ConfigError`] / [`ConfigErrors`] the `yaml` crate prints as
//! `file:line:col: message`.

use std::net::IpAddr;

use yaml::Problem;

use super::types::{State, HOPS_MAX, HOPS_MIN, TABLE_BITS_MAX, TABLE_BITS_MIN, WEIGHT_MAX};

/// One problem in a config file, at a position: `file:line:col: message`.
pub type ConfigError = yaml::Located<ErrorKind>;

/// What is wrong; each message also says how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// What any YAML config can get wrong (syntax, unknown, repeated or missing field, type).
    #[error(transparent)]
    Yaml(#[from] Problem),
    #[error("the config is empty; write at least `services: []`")]
    Empty,
    #[error(
        "service name `{name}` is already used at line {first_line}; service names must be unique"
    )]
    DuplicateService { name: String, first_line: usize },
    #[error("udp_second_chance is set but the service has no udp bind; remove it, or add a bind with `proto: udp`")]
    UdpSecondChanceWithoutUdp,
    #[error("name must not be empty")]
    EmptyName,
    #[error("backend name `{name}` is already used in this service at line {first_line}; backend names must be unique within a service (the name is the backend's identity in the table)")]
    DuplicateBackendName { name: String, first_line: usize },
    #[error("address {address} is already used by backend `{other}` at line {first_line}; each backend of a service needs its own address")]
    DuplicateBackendAddress {
        address: IpAddr,
        other: String,
        first_line: usize,
    },
    #[error("`{text}` is not an IP address; write an IPv4 address like 10.0.0.21 or an IPv6 address like fd00::21")]
    BadAddress { text: String },
    #[error("backend `{name}` is {family} but backend `{first}` at line {first_line} is {first_family}; all backends of a service must use one address family")]
    MixedFamilies {
        name: String,
        family: &'static str,
        first: String,
        first_family: &'static str,
        first_line: usize,
    },
    #[error("bad port `{text}`: {why}; use a number from 1 to 65535, or `ports: FIRST-LAST` / `ports: all` for a range")]
    BadPort { text: String, why: &'static str },
    #[error("bad port range `{text}`: {why}; write FIRST-LAST with 0 <= FIRST <= LAST <= 65535 (e.g. 8000-8100), or `all`")]
    BadPortRange { text: String, why: &'static str },
    #[error(
        "bind needs exactly one of `port` (one port) or `ports` (a range FIRST-LAST, or `all`)"
    )]
    PortChoice,
    #[error("bind {bind} overlaps bind {other} of service `{other_service}` at line {other_line}; a packet must match exactly one bind")]
    OverlappingBind {
        bind: String,
        other: String,
        other_service: String,
        other_line: usize,
    },
    #[error("`{text}` is not a protocol; use `tcp` or `udp`")]
    BadProto { text: String },
    #[error("table_bits {value} is out of range; use {min}..={max} (the table has 2^table_bits rows; 16 is the default)", min = TABLE_BITS_MIN, max = TABLE_BITS_MAX)]
    TableBitsRange { value: String },
    #[error("hops {value} is out of range; use {min}..={max} (2 = primary + secondary, as GLB)", min = HOPS_MIN, max = HOPS_MAX)]
    HopsRange { value: String },
    #[error("`{field}` must be 32 hex digits (128 bits), found {found}; generate one with `od -An -tx1 -N16 /dev/urandom | tr -d ' \\n'`")]
    BadKey { field: &'static str, found: String },
    #[error("weight must be a whole number from 1 to {max}, found `{text}`; to take a backend out, set `state: inactive` instead of weight 0", max = WEIGHT_MAX)]
    BadWeight { text: String },
    #[error("`{text}` is not a state; use active, filling, draining or inactive")]
    BadState { text: String },
    #[error("`{text}` is not a hash field; use src_ip, src_port, dst_ip or dst_port")]
    BadHashField { text: String },
    #[error("hash field `{text}` is listed twice; remove one")]
    DuplicateHashField { text: String },
    #[error("`hash` must list at least one field (the default is all four)")]
    EmptyHash,
    #[error("`{field}` must be a duration like 2s, 500ms or 1m (from 1ms to 1h), found `{text}`")]
    BadDuration { field: &'static str, text: String },
    #[error("`{field}` must be a percentage from 0% to 100%, found `{text}`")]
    BadPercent { field: &'static str, text: String },
    #[error("health check timeout {timeout:?} is not shorter than the interval {interval:?}; a probe must end before the next one starts: lower `timeout` or raise `interval`")]
    TimeoutNotBelowInterval {
        timeout: std::time::Duration,
        interval: std::time::Duration,
    },
    #[error("`{field}` does not apply to a {check} check; remove it")]
    CheckFieldNotApplicable {
        field: &'static str,
        check: &'static str,
    },
    #[error("bad health check port `{text}`; use a number from 1 to 65535")]
    BadCheckPort { text: String },
    #[error("health check path `{text}` must start with / and hold no spaces, e.g. /healthz")]
    BadCheckPath { text: String },
    #[error("health check host `{text}` must be a host name without spaces")]
    BadCheckHost { text: String },
    #[error("`{text}` is not an HTTP status code; use codes from 100 to 599, e.g. [200, 204]")]
    BadStatusCode { text: String },
    #[error("a gue check needs a VIP and a port: give `vip` and `port`, or give the service a bind with a single port first")]
    GueCheckTarget,
    #[error("backend `{name}` is {state}, but {already} already in transition; with hops: {hops} at most {limit} backend(s) may be filling or draining at once: finish that transition first (set it to active or inactive), or raise hops")]
    TooManyInTransition {
        name: String,
        state: State,
        already: String,
        hops: u8,
        limit: u8,
    },
}

/// Every error found in a config, in file order. Displays one `file:line:col: message` per
/// line.
pub type ConfigErrors = yaml::Errors<ErrorKind>;
