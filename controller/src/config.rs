//! controller.yaml: where the cluster and Prometheus are, the timing, and per service the load
//! query and the law's parameters. Read with positions (the `yaml` crate): every error at its
//! `file:line:column`, all at once, and a file with errors changes nothing.
//!
//! ```yaml
//! consul:                      # as in director.yaml (docs/setup/cluster.md)
//!   address: http://127.0.0.1:8500
//!   prefix: xdplb/edge-ams
//! prometheus: http://127.0.0.1:9090
//! interval_secs: 10            # one control step per interval
//! min_publish_interval_secs: 30
//! operator_backoff_secs: 300   # after an operator's version, publish nothing for this long
//! lock_ttl_secs: 15            # the active controller's Consul session
//! status_file: /run/xdplb-controller/status.json
//! metrics: 127.0.0.1:9643      # optional
//! services:
//!   - name: web
//!     query: 'avg by (backend) (rate(node_cpu_busy_seconds_total{service="web"}[1m]))'
//!     backend_label: backend   # the label whose value is the backend's name
//!     overloaded_above: 0.9    # in the query's units
//!     # optional, the defaults shown:
//!     gain: 0.5
//!     max_step: 0.2
//!     min_factor: 0.5
//!     max_factor: 2.0
//!     dead_band: 0.05
//!     act_band: 0.1
//!     overload_share: 0.5
//!     min_data_share: 0.5
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cluster::{ConsulConfig, ConsulSection};
use url::Url;
use yaml::{Checker, Node, Pos, Problem};

use crate::law::{Params, ParamsError};

/// Default place of the status file.
pub const DEFAULT_STATUS_FILE: &str = "/run/xdplb-controller/status.json";
/// Default config path.
pub const DEFAULT_CONFIG: &str = "/etc/xdplb/controller.yaml";

/// One controlled service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub name: String,
    pub query: String,
    pub backend_label: String,
    pub params: Params,
}

/// A validated controller.yaml.
#[derive(Debug, Clone)]
pub struct Config {
    pub consul: ConsulConfig,
    pub prometheus: Url,
    pub interval: Duration,
    pub min_publish_interval: Duration,
    pub operator_backoff: Duration,
    pub lock_ttl: Duration,
    pub status_file: PathBuf,
    pub metrics: Option<SocketAddr>,
    pub services: Vec<ServiceConfig>,
}

/// One error of controller.yaml.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigProblem {
    #[error(transparent)]
    Yaml(#[from] Problem),
    #[error("`{field}` must be a number, found `{text}`")]
    NotANumber { field: String, text: String },
    #[error("service `{service}`: {source}")]
    Params {
        service: String,
        #[source]
        source: ParamsError,
    },
    #[error("consul: {0}")]
    Consul(String),
    #[error("prometheus: {0}")]
    Prometheus(String),
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("service `{0}` appears twice; keep one")]
    DuplicateService(String),
    #[error("`services` is empty: name at least one service to control")]
    NoServices,
    #[error("min_publish_interval_secs must be at least interval_secs ({interval})")]
    PublishFasterThanInterval { interval: u64 },
}

pub type ConfigErrors = yaml::Errors<ConfigProblem>;

const TOP: &[&str] = &[
    "consul",
    "prometheus",
    "interval_secs",
    "min_publish_interval_secs",
    "operator_backoff_secs",
    "lock_ttl_secs",
    "status_file",
    "metrics",
    "services",
];

const SERVICE: &[&str] = &[
    "name",
    "query",
    "backend_label",
    "overloaded_above",
    "gain",
    "max_step",
    "min_factor",
    "max_factor",
    "dead_band",
    "act_band",
    "overload_share",
    "min_data_share",
];

impl Config {
    /// Reads and checks `text` (from `path`, for messages).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let mut c: Checker<'_, ConfigProblem> = Checker::new(path);
        let root = c.document(text);
        let Some(root) = root else {
            if c.is_clean() {
                c.err(
                    Pos {
                        line: 1,
                        column: 1,
                        offset: 0,
                    },
                    Problem::MissingField {
                        field: "consul".into(),
                        context: "the top level",
                    },
                );
            }
            c.finish()?;
            unreachable!("an error was recorded");
        };
        let config = read(&mut c, &root);
        c.finish()?;
        Ok(config.expect("no error recorded, so every part was read"))
    }
}

fn float(c: &mut Checker<'_, ConfigProblem>, n: &Node, field: &str) -> Option<f64> {
    let s = c.scalar(n, field, "a number")?;
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Some(v),
        _ => {
            c.err(
                n.start,
                ConfigProblem::NotANumber {
                    field: field.to_string(),
                    text: s.to_string(),
                },
            );
            None
        }
    }
}

fn read(c: &mut Checker<'_, ConfigProblem>, root: &Node) -> Option<Config> {
    let f = c.fields(root, TOP, "the top level", "the file")?;
    let consul = c
        .required(&f, "consul")
        .and_then(|n| {
            let s = ConsulSection::from_node(c, n)?;
            Some((n.start, s))
        })
        .and_then(|(pos, s)| match s.validate() {
            Ok(v) => Some(v),
            Err(e) => {
                c.err(pos, ConfigProblem::Consul(e.to_string()));
                None
            }
        });
    let prometheus = c.required(&f, "prometheus").and_then(|n| {
        let s = c.scalar(n, "prometheus", "an http:// or https:// address")?;
        match Url::parse(s.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(_) => {
                c.err(
                    n.start,
                    ConfigProblem::Prometheus(format!(
                        "`{s}` is not an http:// or https:// address"
                    )),
                );
                None
            }
            Err(e) => {
                c.err(n.start, ConfigProblem::Prometheus(format!("`{s}`: {e}")));
                None
            }
        }
    });
    let secs = |c: &mut Checker<'_, ConfigProblem>, name: &str, default: u64, min: u64| match f
        .get(name)
    {
        None => Some(default),
        Some(n) => c.uint::<u64>(n, name, min, 86_400),
    };
    let interval = secs(c, "interval_secs", 10, 1);
    let min_publish = secs(c, "min_publish_interval_secs", 30, 1);
    let backoff = secs(c, "operator_backoff_secs", 300, 0);
    let ttl = secs(c, "lock_ttl_secs", 15, 10);
    if let (Some(i), Some(p)) = (interval, min_publish) {
        if p < i {
            c.err(
                f.key_pos("min_publish_interval_secs"),
                ConfigProblem::PublishFasterThanInterval { interval: i },
            );
        }
    }
    let status_file = match f.get("status_file") {
        None => Some(PathBuf::from(DEFAULT_STATUS_FILE)),
        Some(n) => c
            .scalar(n, "status_file", "a path")
            .map(|s| PathBuf::from(s.trim())),
    };
    let metrics = match f.get("metrics") {
        None => Some(None),
        Some(n) => c.scalar(n, "metrics", "an address and port").and_then(|s| {
            match daemon_support::metrics::parse_listen(s) {
                Ok(a) => Some(Some(a)),
                Err(e) => {
                    c.err(n.start, ConfigProblem::Metrics(e.to_string()));
                    None
                }
            }
        }),
    };
    let services = c.required(&f, "services").and_then(|n| {
        let items = c.seq(n, "services")?;
        if items.is_empty() {
            c.err(n.start, ConfigProblem::NoServices);
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match service(c, item) {
                Some(s) => {
                    if out.iter().any(|o: &ServiceConfig| o.name == s.name) {
                        c.err(item.start, ConfigProblem::DuplicateService(s.name.clone()));
                        ok = false;
                    }
                    out.push(s);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    });
    Some(Config {
        consul: consul?,
        prometheus: prometheus?,
        interval: Duration::from_secs(interval?),
        min_publish_interval: Duration::from_secs(min_publish?),
        operator_backoff: Duration::from_secs(backoff?),
        lock_ttl: Duration::from_secs(ttl?),
        status_file: status_file?,
        metrics: metrics?,
        services: services?,
    })
}

fn service(c: &mut Checker<'_, ConfigProblem>, n: &Node) -> Option<ServiceConfig> {
    let f = c.fields(n, SERVICE, "service", "a service")?;
    let text = |c: &mut Checker<'_, ConfigProblem>, name: &str| {
        c.required(&f, name)
            .and_then(|n| c.scalar(n, name, "a string"))
            .map(|s| s.trim().to_string())
    };
    let name = text(c, "name");
    let query = text(c, "query");
    let label = text(c, "backend_label");
    let overloaded = c
        .required(&f, "overloaded_above")
        .and_then(|n| float(c, n, "overloaded_above"));
    let d = Params::default();
    let opt = |c: &mut Checker<'_, ConfigProblem>, field: &str, default: f64| match f.get(field) {
        None => Some(default),
        Some(n) => float(c, n, field),
    };
    let gain = opt(c, "gain", d.gain);
    let max_step = opt(c, "max_step", d.max_step);
    let min_factor = opt(c, "min_factor", d.min_factor);
    let max_factor = opt(c, "max_factor", d.max_factor);
    let dead_band = opt(c, "dead_band", d.dead_band);
    let act_band = opt(c, "act_band", d.act_band);
    let overload_share = opt(c, "overload_share", d.overload_share);
    let min_data_share = opt(c, "min_data_share", d.min_data_share);
    let name = name?;
    let params = Params {
        gain: gain?,
        max_step: max_step?,
        min_factor: min_factor?,
        max_factor: max_factor?,
        dead_band: dead_band?,
        act_band: act_band?,
        overloaded_above: overloaded?,
        overload_share: overload_share?,
        min_data_share: min_data_share?,
    };
    if let Err(source) = params.check() {
        c.err(
            n.start,
            ConfigProblem::Params {
                service: name.clone(),
                source,
            },
        );
        return None;
    }
    Some(ServiceConfig {
        name,
        query: query?,
        backend_label: label?,
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
consul:
  address: http://127.0.0.1:8500
  prefix: xdplb/test
prometheus: http://127.0.0.1:9090
interval_secs: 2
min_publish_interval_secs: 4
services:
  - name: web
    query: 'load{service=\"web\"}'
    backend_label: backend
    overloaded_above: 0.9
    gain: 0.4
";

    #[test]
    fn a_good_file_reads() {
        let c = Config::parse(Path::new("c.yaml"), GOOD).unwrap();
        assert_eq!(c.interval, Duration::from_secs(2));
        assert_eq!(c.operator_backoff, Duration::from_secs(300));
        assert_eq!(c.services[0].params.gain, 0.4);
        assert_eq!(c.services[0].params.max_factor, 2.0);
        assert_eq!(c.consul.prefix, "xdplb/test");
    }

    #[test]
    fn the_shipped_example_reads() {
        let text = include_str!("../../etc/controller.yaml");
        let c = Config::parse(Path::new("etc/controller.yaml"), text).unwrap();
        assert_eq!(c.services.len(), 1);
        assert_eq!(
            c.services[0].params,
            Params {
                overloaded_above: 0.9,
                ..Params::default()
            }
        );
        assert_eq!(c.status_file, PathBuf::from(DEFAULT_STATUS_FILE));
    }

    #[test]
    fn every_error_at_its_position() {
        let bad = GOOD
            .replace("gain: 0.4", "gain: lots\n    dead_band: 0.3")
            .replace("prometheus: http://127.0.0.1:9090", "prometheus: ftp://x")
            .replace(
                "min_publish_interval_secs: 4",
                "min_publish_interval_secs: 1",
            )
            .replace("backend_label: backend", "backend_lable: backend");
        let e = Config::parse(Path::new("c.yaml"), &bad).unwrap_err();
        let text = e.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("c.yaml:4:13: prometheus:"), "{text}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("c.yaml:6:1: min_publish")),
            "{text}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("unknown field `backend_lable`")),
            "{text}"
        );
        assert!(
            lines.iter().any(|l| l.contains("`gain` must be a number")),
            "{text}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("missing field `backend_label`")),
            "{text}"
        );
    }

    #[test]
    fn bad_parameters_are_refused_with_the_service() {
        let bad = GOOD.replace("gain: 0.4", "dead_band: 0.3");
        let e = Config::parse(Path::new("c.yaml"), &bad).unwrap_err();
        assert!(e.to_string().contains("service `web`: the bands"), "{e}");
    }
}
