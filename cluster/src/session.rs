//! A Consul session kept alive by the one process that holds it: created on first use,
//! renewed, forgotten when Consul says it expired (the next use then creates a new one), and
//! destroyed on a clean stop. What the session's keys do when it ends is [`OnEnd`]'s.
//!
//! Used by the directors' health views ([`crate::health::HealthWriter`], keys deleted) and the
//! load-aware controller's lock (released), so both renew by the same rules.

use std::time::Duration;

use crate::consul::{Consul, ConsulError};

/// What happens to the keys a session holds when it expires or is destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnEnd {
    /// The locks are released; the keys stay (a lock others wait for).
    Release,
    /// The keys are deleted (what a process keeps in Consul only while it lives).
    Delete,
}

/// One process's session (see the module docs).
#[derive(Debug)]
pub struct Session {
    name: String,
    ttl: Duration,
    on_end: OnEnd,
    id: Option<String>,
}

impl Session {
    /// A session named `name` (shown by Consul) with `ttl`; nothing is created until
    /// [`Session::ensure`].
    pub fn new(name: &str, ttl: Duration, on_end: OnEnd) -> Session {
        Session {
            name: name.to_string(),
            ttl,
            on_end,
            id: None,
        }
    }

    /// The session's id, when it has one.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The session's id, creating the session when there is none.
    pub async fn ensure(&mut self, consul: &Consul) -> Result<String, ConsulError> {
        if let Some(id) = &self.id {
            return Ok(id.clone());
        }
        let id = match self.on_end {
            OnEnd::Release => consul.session_create(&self.name, self.ttl).await?,
            OnEnd::Delete => {
                consul
                    .session_create_ephemeral(&self.name, self.ttl)
                    .await?
            }
        };
        self.id = Some(id.clone());
        Ok(id)
    }

    /// Renews the session. Ok(false) when there is none, or Consul forgot it (expired): its
    /// keys are gone or released, and the next [`Session::ensure`] creates a new one.
    pub async fn renew(&mut self, consul: &Consul) -> Result<bool, ConsulError> {
        let Some(id) = &self.id else {
            return Ok(false);
        };
        if consul.session_renew(id).await? {
            Ok(true)
        } else {
            self.id = None;
            Ok(false)
        }
    }

    /// Forgets the session without a word to Consul (a call in it failed in a way that says
    /// it may be gone): the next [`Session::ensure`] creates a new one.
    pub fn forget(&mut self) {
        self.id = None;
    }

    /// Destroys the session (its keys are released or deleted at once) and forgets it;
    /// returns the id it had, if any.
    pub async fn destroy(&mut self, consul: &Consul) -> Result<Option<String>, ConsulError> {
        match self.id.take() {
            Some(id) => consul.session_destroy(&id).await.map(|()| Some(id)),
            None => Ok(None),
        }
    }
}
