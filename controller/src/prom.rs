//! Reads backend loads from Prometheus: one instant query (`GET /api/v1/query`) per service,
//! over HTTP with time limits, and the answer's series matched to backends by one label.
//!
//! Owns nothing else: what the loads mean is the law's ([`crate::law`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::law::Sample;

/// Why a query gave no loads at all (the service is then frozen).
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    #[error("prometheus at {address}: {source}")]
    Http {
        address: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("prometheus at {address}: HTTP {code}: {body}")]
    Status {
        address: String,
        code: u16,
        body: String,
    },
    #[error("prometheus at {address}: the query failed: {error}")]
    Query { address: String, error: String },
    #[error("prometheus at {address}: the query must return an instant vector, not a {kind}")]
    NotAVector { address: String, kind: String },
    #[error("prometheus at {address}: undecodable answer: {reason}")]
    Decode { address: String, reason: String },
}

/// A Prometheus server.
#[derive(Debug, Clone)]
pub struct Prometheus {
    http: reqwest::Client,
    base: Url,
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
    value: (serde_json::Value, String),
}

impl Prometheus {
    /// A client with a time limit per query. Does not contact the server.
    pub fn new(base: Url, timeout: Duration) -> Prometheus {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .timeout(timeout)
            .build()
            .expect("a plain reqwest client builds");
        Prometheus { http, base }
    }

    fn address(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    /// Runs `query` and returns, per value of `label`, every sample of a series carrying it.
    pub async fn query(
        &self,
        query: &str,
        label: &str,
    ) -> Result<BTreeMap<String, Vec<f64>>, PromError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("http(s) URL has a path (checked in config)")
            .pop_if_empty()
            .extend(["api", "v1", "query"]);
        let resp = self
            .http
            .get(url)
            .query(&[("query", query)])
            .send()
            .await
            .map_err(|source| PromError::Http {
                address: self.address(),
                source,
            })?;
        let code = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|source| PromError::Http {
            address: self.address(),
            source,
        })?;
        let answer: Answer = match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(e) if code == 200 => {
                return Err(PromError::Decode {
                    address: self.address(),
                    reason: e.to_string(),
                })
            }
            Err(_) => {
                return Err(PromError::Status {
                    address: self.address(),
                    code,
                    body: String::from_utf8_lossy(&body).trim().to_string(),
                })
            }
        };
        if answer.status != "success" {
            return Err(PromError::Query {
                address: self.address(),
                error: answer.error.unwrap_or_else(|| format!("HTTP {code}")),
            });
        }
        let data = answer.data.ok_or_else(|| PromError::Decode {
            address: self.address(),
            reason: "no data".into(),
        })?;
        if data.result_type != "vector" {
            return Err(PromError::NotAVector {
                address: self.address(),
                kind: data.result_type,
            });
        }
        let series: Vec<Series> =
            serde_json::from_value(data.result).map_err(|e| PromError::Decode {
                address: self.address(),
                reason: e.to_string(),
            })?;
        let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for s in series {
            let Some(b) = s.metric.get(label) else {
                continue;
            };
            // Prometheus writes NaN and infinities as "NaN", "+Inf", "-Inf".
            let v = s.value.1.parse::<f64>().unwrap_or(f64::NAN);
            out.entry(b.clone()).or_default().push(v);
        }
        Ok(out)
    }
}

/// The sample of backend `name` in a query's answer.
pub fn sample_of(answer: &BTreeMap<String, Vec<f64>>, name: &str) -> Sample {
    match answer.get(name).map(Vec::as_slice) {
        None | Some([]) => Sample::Missing,
        Some([v]) => Sample::from_value(*v),
        Some(_) => Sample::Ambiguous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_by_backend() {
        let a: BTreeMap<String, Vec<f64>> = [
            ("b1".to_string(), vec![0.5]),
            ("b2".to_string(), vec![f64::NAN]),
            ("b3".to_string(), vec![0.1, 0.2]),
            ("b4".to_string(), vec![-0.5]),
        ]
        .into();
        assert_eq!(sample_of(&a, "b1"), Sample::Value(0.5));
        assert_eq!(sample_of(&a, "b2"), Sample::NotANumber);
        assert_eq!(sample_of(&a, "b3"), Sample::Ambiguous);
        assert_eq!(sample_of(&a, "b4"), Sample::Negative(-0.5));
        assert_eq!(sample_of(&a, "b5"), Sample::Missing);
    }
}
