//! One active controller per cluster: a Consul lock on `<prefix>/controller/lock`, held by a
//! session with a TTL. The holder renews its session; when it dies (or loses Consul for longer
//! than the TTL) Consul invalidates the session, the lock is free, and a standby, blocked on the
//! key, takes it at once.
//!
//! The lock alone does not stop a paused holder from publishing after its session expired; the
//! daemon therefore checks that it still holds the lock just before a publish, and publishes
//! with `Expect::Current` (so a version published by a new holder in between makes it fail).

use std::sync::Arc;
use std::time::Duration;

use cluster::consul::{Consul, ConsulError};
use cluster::{ConsulConfig, OnEnd, Session};

/// The lock and this process's session.
#[derive(Debug)]
pub struct Leader {
    consul: Arc<Consul>,
    key: String,
    /// Written as the lock's value: who holds it.
    holder: String,
    session: Session,
    index: u64,
}

impl Leader {
    /// Builds the client; does not contact Consul. `holder` names this process in the lock.
    pub fn new(config: &ConsulConfig, holder: &str, ttl: Duration) -> Result<Leader, ConsulError> {
        Ok(Leader {
            consul: Arc::new(Consul::new(config)?),
            key: format!("{}/controller/lock", config.prefix),
            holder: holder.to_string(),
            session: Session::new(&format!("xdplb controller {holder}"), ttl, OnEnd::Release),
            index: 0,
        })
    }

    /// This process's session, when it has one.
    pub fn session(&self) -> Option<&str> {
        self.session.id()
    }

    /// The lock's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Tries to take the lock (creating a session first when there is none). True when this
    /// process holds it now.
    pub async fn try_acquire(&mut self) -> Result<bool, ConsulError> {
        // A standby keeps its session alive too: one that expired while waiting cannot take
        // the lock (Consul refuses an invalid session), so renew it or start a new one.
        self.session.renew(&self.consul).await?;
        let session = self.session.ensure(&self.consul).await?;
        let r = self
            .consul
            .acquire(&self.key, &session, self.holder.clone().into_bytes())
            .await;
        if r.is_err() {
            // Perhaps the session died between the renewal and the acquire: start afresh.
            self.session.forget();
        }
        r
    }

    /// Renews the session. False when Consul forgot it (expired): the lock is lost and the
    /// next [`Leader::try_acquire`] starts a new session.
    pub async fn renew(&mut self) -> Result<bool, ConsulError> {
        self.session.renew(&self.consul).await
    }

    /// Asks Consul whether this process's session holds the lock right now.
    pub async fn holds(&self) -> Result<bool, ConsulError> {
        let Some(s) = self.session.id() else {
            return Ok(false);
        };
        let (entry, _) = self.consul.read(&self.key, None).await?;
        Ok(entry.and_then(|e| e.session).as_deref() == Some(s))
    }

    /// Who holds the lock now (its value), if anyone.
    pub async fn holder(&self) -> Result<Option<String>, ConsulError> {
        let (entry, _) = self.consul.read(&self.key, None).await?;
        Ok(entry
            .filter(|e| e.session.is_some())
            .map(|e| String::from_utf8_lossy(&e.value).into_owned()))
    }

    /// Blocks until the lock key changes (or `wait` passes): a standby waits here between
    /// attempts, so it takes over as soon as the holder's session is gone.
    pub async fn wait_for_change(&mut self, wait: Duration) -> Result<(), ConsulError> {
        let block = (self.index > 0).then_some((self.index, wait));
        let (_, index) = self.consul.read(&self.key, block).await?;
        // An index that goes backwards means Consul was reset: start again.
        self.index = if index < self.index { 0 } else { index };
        if block.is_none() {
            // The first read answers at once; do not spin.
            tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
        }
        Ok(())
    }

    /// Gives the lock up (a clean shutdown): a standby takes over without waiting for a TTL.
    pub async fn resign(&mut self) {
        if let Some(s) = self.session.id() {
            let _ = self.consul.release(&self.key, s).await;
        }
        // Forgotten either way; one Consul did not hear of ends at its TTL.
        let _ = self.session.destroy(&self.consul).await;
    }
}
