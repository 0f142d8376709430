//! Directors' health views in Consul, for operators to compare (`tablegen cluster health`).
//! A director that opts in keeps its view under `<prefix>/health/views/<director>`, written in
//! a session with a TTL whose keys are deleted when it expires: the view disappears when the
//! director dies or cannot reach Consul for longer than the TTL. `<prefix>/health/seen/<director>`
//! (no session) keeps the time it last wrote, so a vanished director shows as absent.
//!
//! Never a table version: followers never read these keys, and nothing here touches the
//! versions or `current`. The published tables stay the operator's.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConsulConfig;
use crate::consul::{Consul, ConsulError};
use crate::session::{OnEnd, Session};
use crate::store::Error;

/// Shortest session TTL Consul accepts.
pub const MIN_TTL: Duration = Duration::from_secs(10);

/// One backend as a director sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendView {
    pub healthy: bool,
    /// Unix seconds of the last change.
    pub since: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A director's whole view, the value of its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthView {
    pub director: String,
    /// Unix seconds of this write; the director rewrites it at least every TTL / 2.
    pub updated: u64,
    pub ttl_secs: u64,
    /// Per service, per backend.
    pub services: BTreeMap<String, BTreeMap<String, BackendView>>,
}

/// Writes one director's view, in its session.
#[derive(Debug)]
pub struct HealthWriter {
    consul: Consul,
    view_key: String,
    seen_key: String,
    session: Session,
}

impl HealthWriter {
    /// Builds the client (reads the CA file); does not contact Consul. `ttl` is at least
    /// [`MIN_TTL`].
    pub fn new(config: &ConsulConfig, director: &str, ttl: Duration) -> Result<Self, Error> {
        Ok(HealthWriter {
            consul: Consul::new(config)?,
            view_key: format!("{}/health/views/{director}", config.prefix),
            seen_key: format!("{}/health/seen/{director}", config.prefix),
            session: Session::new(
                &format!("xdplb-health-{director}"),
                ttl.max(MIN_TTL),
                OnEnd::Delete,
            ),
        })
    }

    /// The session TTL.
    pub fn ttl(&self) -> Duration {
        self.session.ttl()
    }

    /// Writes `view` (creating the session first when there is none). An earlier session of
    /// the same director that still holds the key (a restart within its TTL) makes this fail
    /// until that session expires.
    pub async fn write(&mut self, view: &HealthView) -> Result<(), Error> {
        let session = self.session.ensure(&self.consul).await?;
        let value = serde_json::to_vec(view).expect("a view serialises");
        if !self.consul.acquire(&self.view_key, &session, value).await? {
            return Err(Error::Corrupt {
                key: self.view_key.clone(),
                reason: "held by another session (an earlier run of this director, until its TTL passes, or another director of the same name)".into(),
            });
        }
        self.consul
            .write(&self.seen_key, view.updated.to_string().into_bytes(), None)
            .await?;
        Ok(())
    }

    /// Keeps the session alive. Ok(false) when Consul forgot it (expired): the view is gone
    /// and the next [`Self::write`] starts a new session.
    pub async fn renew(&mut self) -> Result<bool, Error> {
        Ok(self.session.renew(&self.consul).await?)
    }

    /// Ends the session: the view is deleted at once.
    pub async fn close(&mut self) -> Result<(), ConsulError> {
        self.session.destroy(&self.consul).await.map(drop)
    }
}

/// Every director's view as Consul holds it now, and when each director was last seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthViews {
    pub views: Vec<HealthView>,
    /// Director -> unix seconds of its last write (also for directors whose view is gone).
    pub seen: BTreeMap<String, u64>,
}

/// Reads the views under `prefix`.
pub async fn read_views(consul: &Consul, prefix: &str) -> Result<HealthViews, Error> {
    let mut out = HealthViews::default();
    let base = format!("{prefix}/health/");
    for key in consul.keys(&base).await? {
        let Some(rest) = key.strip_prefix(&base) else {
            continue;
        };
        let Some(bytes) = consul.read_raw(&key).await? else {
            continue; // deleted between the list and the read
        };
        let corrupt = |reason: String| Error::Corrupt {
            key: key.clone(),
            reason,
        };
        if let Some(name) = rest.strip_prefix("views/") {
            let v: HealthView = serde_json::from_slice(&bytes)
                .map_err(|e| corrupt(format!("not a health view: {e}")))?;
            if v.director != name {
                return Err(corrupt(format!("names director {}", v.director)));
            }
            out.views.push(v);
        } else if let Some(name) = rest.strip_prefix("seen/") {
            let t = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| corrupt("not a time".into()))?;
            out.seen.insert(name.to_string(), t);
        }
    }
    Ok(out)
}

/// A director's standing in the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// Its view is there and fresh.
    Live,
    /// Its view is there but older than its TTL: it stopped rewriting it (stuck, or its
    /// clock is off) while its session lives on.
    Stale,
    /// It wrote a view once, and the view is gone (the director died, stopped, or lost Consul
    /// for longer than its TTL).
    Absent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectorColumn {
    pub name: String,
    pub presence: Presence,
    /// Unix seconds of its last write.
    pub updated: Option<u64>,
}

/// One backend's row: what each present director thinks of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendRow {
    pub service: String,
    pub backend: String,
    /// Director -> its view; a present director that does not check the backend has none.
    pub directors: BTreeMap<String, BackendView>,
}

/// `tablegen cluster health`: directors x backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Matrix {
    pub directors: Vec<DirectorColumn>,
    pub backends: Vec<BackendRow>,
}

impl Matrix {
    /// The matrix at `now` (unix seconds).
    pub fn new(v: &HealthViews, now: u64) -> Matrix {
        let mut directors: BTreeMap<String, DirectorColumn> = BTreeMap::new();
        let mut rows: BTreeMap<(String, String), BTreeMap<String, BackendView>> = BTreeMap::new();
        for view in &v.views {
            let stale = now.saturating_sub(view.updated) > view.ttl_secs;
            directors.insert(
                view.director.clone(),
                DirectorColumn {
                    name: view.director.clone(),
                    presence: if stale {
                        Presence::Stale
                    } else {
                        Presence::Live
                    },
                    updated: Some(view.updated),
                },
            );
            for (s, m) in &view.services {
                for (b, bv) in m {
                    rows.entry((s.clone(), b.clone()))
                        .or_default()
                        .insert(view.director.clone(), bv.clone());
                }
            }
        }
        for (name, t) in &v.seen {
            directors
                .entry(name.clone())
                .or_insert_with(|| DirectorColumn {
                    name: name.clone(),
                    presence: Presence::Absent,
                    updated: Some(*t),
                });
        }
        Matrix {
            directors: directors.into_values().collect(),
            backends: rows
                .into_iter()
                .map(|((service, backend), directors)| BackendRow {
                    service,
                    backend,
                    directors,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(d: &str, updated: u64, b2: bool) -> HealthView {
        let mut m = BTreeMap::new();
        m.insert(
            "b1".to_string(),
            BackendView {
                healthy: true,
                since: 1,
                last_error: None,
            },
        );
        m.insert(
            "b2".to_string(),
            BackendView {
                healthy: b2,
                since: 2,
                last_error: None,
            },
        );
        HealthView {
            director: d.into(),
            updated,
            ttl_secs: 10,
            services: [("web".to_string(), m)].into(),
        }
    }

    #[test]
    fn the_matrix_says_live_stale_and_absent() {
        let v = HealthViews {
            views: vec![view("d1", 100, false), view("d2", 80, true)],
            seen: [("d1".into(), 100), ("d2".into(), 80), ("d3".into(), 50)].into(),
        };
        let m = Matrix::new(&v, 101);
        let p: Vec<_> = m
            .directors
            .iter()
            .map(|d| (d.name.as_str(), d.presence))
            .collect();
        assert_eq!(
            p,
            [
                ("d1", Presence::Live),
                ("d2", Presence::Stale),
                ("d3", Presence::Absent)
            ]
        );
        assert_eq!(m.backends.len(), 2);
        assert!(!m.backends[1].directors["d1"].healthy);
        assert!(m.backends[1].directors["d2"].healthy);
        assert!(!m.backends[1].directors.contains_key("d3"));
    }
}
