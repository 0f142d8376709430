//! `GET /metrics`, shared by both daemons: the `metrics:` listen address (parsed and checked
//! once, for each daemon's config to report at its position), the exposition ([`Exposition`]:
//! metric families in the Prometheus text format 0.0.4, encoded by the `prometheus` crate), and
//! the small HTTP/1.1 server that answers scrapes ([`http`]).
//!
//! Must not know either daemon's metrics: each daemon renders its own [`Exposition`] from what
//! `status` reads, at scrape time.

pub mod http;

use std::net::SocketAddr;

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

/// The `Content-Type` of a scrape's answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why a `metrics:` value is not a listen address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    #[error(
        "`{0}` has no address: write one, e.g. `127.0.0.1{0}` (recommended) or `0.0.0.0{0}` to \
         listen on every address"
    )]
    NoHost(String),
    #[error("`{0}` is not an address and port: write e.g. `127.0.0.1:9641` or `[::1]:9641`")]
    Malformed(String),
    #[error("`{0}`: port 0 picks a random port; write the port Prometheus scrapes")]
    PortZero(String),
}

/// The `metrics:` listen address as an operator writes it: an IP address and a port
/// (`127.0.0.1:9641`, `[::1]:9641`). No host names, no port alone: every address (`0.0.0.0`,
/// `[::]`) is taken only when written out.
pub fn parse_listen(text: &str) -> Result<SocketAddr, ListenError> {
    let t = text.trim();
    if t.starts_with(':') {
        return Err(ListenError::NoHost(t.to_string()));
    }
    let addr: SocketAddr = t
        .parse()
        .map_err(|_| ListenError::Malformed(t.to_string()))?;
    if addr.port() == 0 {
        return Err(ListenError::PortZero(t.to_string()));
    }
    Ok(addr)
}

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One metric family a daemon exports: the catalogue entry its docs and tests read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

/// The metric families of one scrape, in the order they were written.
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<MetricFamily>,
}

/// Samples of one family, added to its [`Exposition`].
#[derive(Debug)]
pub struct FamilyWriter<'a> {
    def: &'a Def,
    family: &'a mut MetricFamily,
}

impl FamilyWriter<'_> {
    /// One sample; `labels` are the values of the family's labels, in [`Def::labels`] order.
    pub fn sample(&mut self, labels: &[&str], value: f64) -> &mut Self {
        assert_eq!(
            labels.len(),
            self.def.labels.len(),
            "{}: label values do not match the family's labels",
            self.def.name
        );
        let pairs = self
            .def
            .labels
            .iter()
            .zip(labels)
            .map(|(n, v)| {
                let mut p = LabelPair::default();
                p.set_name((*n).to_string());
                p.set_value((*v).to_string());
                p
            })
            .collect();
        let mut m = Metric::from_label(pairs);
        match self.def.kind {
            Kind::Counter => {
                let mut c = Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            Kind::Gauge => {
                let mut g = Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        self.family.mut_metric().push(m);
        self
    }
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// The family `def`, to add samples to. A family left without samples is not exposed.
    pub fn family<'a>(&'a mut self, def: &'a Def) -> FamilyWriter<'a> {
        let mut f = MetricFamily::default();
        f.set_name(def.name.to_string());
        f.set_help(def.help.to_string());
        f.set_field_type(match def.kind {
            Kind::Counter => MetricType::COUNTER,
            Kind::Gauge => MetricType::GAUGE,
        });
        self.families.push(f);
        FamilyWriter {
            def,
            family: self.families.last_mut().expect("just pushed"),
        }
    }

    /// The names of the families that have samples.
    pub fn names(&self) -> Vec<String> {
        self.families
            .iter()
            .filter(|f| !f.get_metric().is_empty())
            .map(|f| f.name().to_string())
            .collect()
    }

    /// The text format (0.0.4). Families without samples are dropped first (in place: a
    /// scrape encodes once, so nothing is copied).
    pub fn encode(&mut self) -> String {
        self.families.retain(|f| !f.get_metric().is_empty());
        let mut out = Vec::with_capacity(64 * 1024);
        // Only names and labels from the daemons' own catalogues, each family once: the
        // encoder's checks cannot fail on them.
        TextEncoder::new()
            .encode(&self.families, &mut out)
            .expect("valid metric families encode");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_as_an_operator_writes_them() {
        assert_eq!(
            parse_listen("127.0.0.1:9641").unwrap(),
            "127.0.0.1:9641".parse().unwrap()
        );
        assert_eq!(
            parse_listen("[::1]:9642").unwrap(),
            "[::1]:9642".parse().unwrap()
        );
        assert!(parse_listen("0.0.0.0:9641").is_ok());
        assert!(matches!(parse_listen(":9641"), Err(ListenError::NoHost(_))));
        assert!(matches!(
            parse_listen("localhost:9641"),
            Err(ListenError::Malformed(_))
        ));
        assert!(matches!(
            parse_listen("127.0.0.1"),
            Err(ListenError::Malformed(_))
        ));
        assert!(matches!(
            parse_listen("127.0.0.1:0"),
            Err(ListenError::PortZero(_))
        ));
    }

    #[test]
    fn families_encode_in_the_text_format_and_empty_ones_are_left_out() {
        const C: Def = Def {
            name: "xdplb_test_packets_total",
            kind: Kind::Counter,
            help: "Packets.",
            labels: &["reason"],
        };
        const G: Def = Def {
            name: "xdplb_test_empty",
            kind: Kind::Gauge,
            help: "Nothing.",
            labels: &[],
        };
        let mut e = Exposition::new();
        e.family(&C)
            .sample(&["a\"b"], 3.0)
            .sample(&["c"], 12345678901.0);
        e.family(&G);
        let text = e.encode();
        assert_eq!(
            text,
            "# HELP xdplb_test_packets_total Packets.\n\
             # TYPE xdplb_test_packets_total counter\n\
             xdplb_test_packets_total{reason=\"a\\\"b\"} 3\n\
             xdplb_test_packets_total{reason=\"c\"} 12345678901\n"
        );
        assert_eq!(e.names(), ["xdplb_test_packets_total"]);
    }
}
