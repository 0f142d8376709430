//! Versions of one director cluster in Consul's KV store: publish, list, get, the `current`
//! pointer, rollback, and watching `current` with blocking queries.
//!
//! Key layout under the cluster's prefix `<p>`:
//!
//! ```text
//! <p>/versions/<n>/chunk/<i>   the backends.yaml text, split into chunks of CHUNK_SIZE bytes
//! <p>/versions/<n>/meta        VersionMeta (JSON); written after every chunk
//! <p>/last                     the last version number handed out (decimal); CAS counter
//! <p>/current                  the live version number (decimal); CAS only
//! <p>/lock                     publisher lock (Consul session)
//! ```
//!
//! Invariants (the tests hold them under concurrent publishers):
//! - a version is immutable: chunks and meta are written create-only (`cas=0`), never updated;
//! - `current` only ever points to a version whose chunks and meta are all written: a publisher
//!   writes the chunks, then the meta, and only then moves `current` (check-and-set);
//! - publishers are serialised by the session lock, so numbers are handed out and made live in
//!   order; the counter and `current` are still check-and-set, so a publisher that lost its
//!   session without noticing can neither reuse a number nor overwrite a newer `current`.
//!
//! We store the config text, never the tables: 2^20 rows per service would not fit in Consul,
//! and every director rebuilds the tables deterministically and checks the published checksums.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use crate::config::ConsulConfig;
use crate::consul::{Consul, ConsulError};
use crate::meta::{default_author, sha256_hex, Expect, PublishMeta, VersionMeta, FORMAT};

/// Chunk size: well under Consul's default 512 KiB value limit (`kv_max_value_size`).
pub const CHUNK_SIZE: usize = 256 * 1024;
/// Publisher session TTL; renewed while a publish runs.
const SESSION_TTL: Duration = Duration::from_secs(15);
/// How long one wait for the lock blocks in Consul before we look again.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// What went wrong with the version store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Consul(#[from] ConsulError),
    #[error("version {version} does not exist (or is not complete)")]
    NotFound { version: u64 },
    #[error("version {version}: chunk {chunk} of {chunks} is missing")]
    MissingChunk {
        version: u64,
        chunk: u32,
        chunks: u32,
    },
    #[error("version {version}: text does not match its meta ({what}: published {expected}, read {actual})")]
    Integrity {
        version: u64,
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("version {version}: the text is not UTF-8")]
    NotUtf8 { version: u64 },
    #[error("key {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("the live version is {actual:?}, not the expected {expected:?}: re-read and redo the change")]
    Conflict {
        expected: Option<u64>,
        actual: Option<u64>,
    },
    #[error("version {version} already exists: refusing to overwrite an immutable version")]
    VersionExists { version: u64 },
    #[error(
        "lost the publisher lock (consul session {session} expired) before making the version live"
    )]
    LockLost { session: String },
}

/// A version with its text, integrity already checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub meta: VersionMeta,
    pub text: String,
}

/// Result of one watch on `current`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watched {
    /// The live version, None when nothing is published (or Consul lost its data).
    pub version: Option<u64>,
    /// Pass it to the next [`Store::watch_current`].
    pub index: u64,
}

/// The versions of one director cluster.
#[derive(Debug)]
pub struct Store {
    consul: Arc<Consul>,
    prefix: String,
    watch_wait: Duration,
}

impl Store {
    /// Builds the client (reads the CA file); does not contact Consul.
    pub fn new(config: &ConsulConfig) -> Result<Store, Error> {
        Ok(Store {
            consul: Arc::new(Consul::new(config)?),
            prefix: config.prefix.clone(),
            watch_wait: config.watch_wait,
        })
    }

    /// HTTP requests made so far (idle-cost checks, metrics).
    pub fn requests(&self) -> u64 {
        self.consul.requests()
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }
    fn meta_key(&self, v: u64) -> String {
        self.key(&format!("versions/{v}/meta"))
    }
    fn chunk_key(&self, v: u64, i: u32) -> String {
        self.key(&format!("versions/{v}/chunk/{i}"))
    }

    /// Every director's health view and when each was last seen ([`crate::health`]).
    pub async fn health_views(&self) -> Result<crate::health::HealthViews, Error> {
        crate::health::read_views(&self.consul, &self.prefix).await
    }

    /// Publishes `text` as a new version and makes it live. Returns its meta.
    pub async fn publish(&self, text: &str, meta: PublishMeta) -> Result<VersionMeta, Error> {
        let lock = self.lock().await?;
        let result = self.publish_locked(text, meta, false, &lock).await;
        lock.release().await;
        result.map(|(m, _)| m)
    }

    /// Like [`Store::publish`], but if the live version already has exactly this text and
    /// these service digests, publishes nothing and returns it with `false`. For a director
    /// that publishes its own file: restarts and repeated writes create no new versions.
    pub async fn publish_if_changed(
        &self,
        text: &str,
        meta: PublishMeta,
    ) -> Result<(VersionMeta, bool), Error> {
        let lock = self.lock().await?;
        let result = self.publish_locked(text, meta, true, &lock).await;
        lock.release().await;
        result
    }

    async fn publish_locked(
        &self,
        text: &str,
        meta: PublishMeta,
        skip_unchanged: bool,
        lock: &Lock,
    ) -> Result<(VersionMeta, bool), Error> {
        let (current, current_index) = self.read_current().await?;
        if let Expect::Current(expected) = meta.expect {
            if expected != current {
                return Err(Error::Conflict {
                    expected,
                    actual: current,
                });
            }
        }
        if let (true, Some(live)) = (skip_unchanged, current) {
            let live = self.meta(live).await?;
            if live.sha256 == sha256_hex(text.as_bytes()) && live.services == meta.services {
                debug!(prefix = %self.prefix, version = live.version, "unchanged; not publishing");
                return Ok((live, false));
            }
        }
        let version = self.allocate().await?;
        let bytes = text.as_bytes();
        let chunks: Vec<&[u8]> = if bytes.is_empty() {
            vec![&[][..]]
        } else {
            bytes.chunks(CHUNK_SIZE).collect()
        };
        let vmeta = VersionMeta {
            format: FORMAT,
            version,
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            author: meta.author.unwrap_or_else(default_author),
            comment: meta.comment,
            parent: current,
            services: meta.services,
            size: bytes.len() as u64,
            chunks: chunks.len() as u32,
            sha256: sha256_hex(bytes),
        };
        for (i, chunk) in chunks.iter().enumerate() {
            let key = self.chunk_key(version, i as u32);
            if !self.consul.write(&key, chunk.to_vec(), Some(0)).await? {
                return Err(Error::VersionExists { version });
            }
        }
        let meta_json = serde_json::to_vec(&vmeta).expect("VersionMeta serialises");
        if !self
            .consul
            .write(&self.meta_key(version), meta_json, Some(0))
            .await?
        {
            return Err(Error::VersionExists { version });
        }
        lock.check()?;
        if !self
            .consul
            .write(
                &self.key("current"),
                version.to_string().into_bytes(),
                Some(current_index),
            )
            .await?
        {
            // Someone moved `current` without holding the lock (ours had expired).
            let (actual, _) = self.read_current().await?;
            warn!(prefix = %self.prefix, version, ?actual, "current moved under us; version left unpublished");
            return Err(Error::Conflict {
                expected: current,
                actual,
            });
        }
        info!(
            prefix = %self.prefix,
            version,
            parent = ?current,
            size = vmeta.size,
            chunks = vmeta.chunks,
            "published version"
        );
        Ok((vmeta, true))
    }

    /// Hands out the next version number (check-and-set on `<p>/last`).
    async fn allocate(&self) -> Result<u64, Error> {
        let key = self.key("last");
        loop {
            let (entry, _) = self.consul.read(&key, None).await?;
            let (last, cas) = match entry {
                Some(e) => (parse_number(&key, &e.value)?, e.modify_index),
                // First publish, or the counter was lost while versions survived (a partial
                // restore): never hand out a number that exists.
                None => (self.versions().await?.last().copied().unwrap_or(0), 0),
            };
            let next = last + 1;
            if self
                .consul
                .write(&key, next.to_string().into_bytes(), Some(cas))
                .await?
            {
                return Ok(next);
            }
            debug!(prefix = %self.prefix, "version counter moved, retrying");
        }
    }

    /// Numbers of the complete versions (meta written), ascending.
    pub async fn versions(&self) -> Result<Vec<u64>, Error> {
        let base = self.key("versions/");
        let mut out: Vec<u64> = self
            .consul
            .keys(&base)
            .await?
            .iter()
            .filter_map(|k| k.strip_prefix(&base)?.strip_suffix("/meta")?.parse().ok())
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Metas of the complete versions, ascending.
    pub async fn list(&self) -> Result<Vec<VersionMeta>, Error> {
        let mut out = Vec::new();
        for v in self.versions().await? {
            out.push(self.meta(v).await?);
        }
        Ok(out)
    }

    /// The meta of one version.
    pub async fn meta(&self, version: u64) -> Result<VersionMeta, Error> {
        let key = self.meta_key(version);
        let raw = self
            .consul
            .read_raw(&key)
            .await?
            .ok_or(Error::NotFound { version })?;
        let meta: VersionMeta = serde_json::from_slice(&raw).map_err(|e| Error::Corrupt {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        if meta.version != version {
            return Err(Error::Corrupt {
                key,
                reason: format!("says it is version {}", meta.version),
            });
        }
        if meta.format != FORMAT {
            return Err(Error::Corrupt {
                key,
                reason: format!("format {} (this build reads {FORMAT})", meta.format),
            });
        }
        Ok(meta)
    }

    /// One version's text and meta, after checking size and SHA-256.
    pub async fn get(&self, version: u64) -> Result<Version, Error> {
        let meta = self.meta(version).await?;
        let mut bytes = Vec::with_capacity(meta.size as usize);
        for i in 0..meta.chunks {
            let chunk = self
                .consul
                .read_raw(&self.chunk_key(version, i))
                .await?
                .ok_or(Error::MissingChunk {
                    version,
                    chunk: i,
                    chunks: meta.chunks,
                })?;
            bytes.extend_from_slice(&chunk);
        }
        if bytes.len() as u64 != meta.size {
            return Err(Error::Integrity {
                version,
                what: "size",
                expected: meta.size.to_string(),
                actual: bytes.len().to_string(),
            });
        }
        let sha = sha256_hex(&bytes);
        if sha != meta.sha256 {
            return Err(Error::Integrity {
                version,
                what: "sha256",
                expected: meta.sha256.clone(),
                actual: sha,
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| Error::NotUtf8 { version })?;
        Ok(Version { meta, text })
    }

    /// The live version (None before the first publish).
    pub async fn current(&self) -> Result<Option<u64>, Error> {
        Ok(self.read_current().await?.0)
    }

    async fn read_current(&self) -> Result<(Option<u64>, u64), Error> {
        let key = self.key("current");
        match self.consul.read(&key, None).await?.0 {
            Some(e) => Ok((Some(parse_number(&key, &e.value)?), e.modify_index)),
            None => Ok((None, 0)),
        }
    }

    /// Makes an existing, complete version live (rollback or roll forward), under the lock and
    /// with check-and-set. `expect` as for publishing.
    pub async fn set_current(&self, version: u64, expect: Expect) -> Result<(), Error> {
        // Read it whole first: never point `current` at something a director cannot load.
        self.get(version).await?;
        let lock = self.lock().await?;
        let result = async {
            let (current, index) = self.read_current().await?;
            if let Expect::Current(expected) = expect {
                if expected != current {
                    return Err(Error::Conflict {
                        expected,
                        actual: current,
                    });
                }
            }
            lock.check()?;
            if !self
                .consul
                .write(
                    &self.key("current"),
                    version.to_string().into_bytes(),
                    Some(index),
                )
                .await?
            {
                let (actual, _) = self.read_current().await?;
                return Err(Error::Conflict {
                    expected: current,
                    actual,
                });
            }
            info!(prefix = %self.prefix, version, previous = ?current, "moved current");
            Ok(())
        }
        .await;
        lock.release().await;
        result
    }

    /// Deletes complete versions older than the newest `keep` ones and incomplete leftovers of
    /// crashed publishers; never the live version. Returns the numbers deleted.
    pub async fn prune(&self, keep: usize) -> Result<Vec<u64>, Error> {
        let lock = self.lock().await?;
        let result = async {
            let base = self.key("versions/");
            let mut all: Vec<u64> = self
                .consul
                .keys(&base)
                .await?
                .iter()
                .filter_map(|k| k.strip_prefix(&base)?.split('/').next()?.parse().ok())
                .collect();
            all.sort_unstable();
            all.dedup();
            let complete = self.versions().await?;
            let current = self.current().await?;
            let kept: Vec<u64> = complete.iter().rev().take(keep).copied().collect();
            let mut deleted = Vec::new();
            for v in all {
                if Some(v) == current || kept.contains(&v) {
                    continue;
                }
                lock.check()?;
                self.consul
                    .delete_tree(&self.key(&format!("versions/{v}/")))
                    .await?;
                deleted.push(v);
            }
            info!(prefix = %self.prefix, ?deleted, "pruned versions");
            Ok(deleted)
        }
        .await;
        lock.release().await;
        result
    }

    /// One blocking query on `current`: returns when it changes after `index`, or after the
    /// configured wait. Start with index 0 (answers at once). Consul's rules for the index are
    /// the caller's ([`crate::follower`] follows them).
    pub async fn watch_current(&self, index: u64) -> Result<Watched, Error> {
        let key = self.key("current");
        let block = (index > 0).then_some((index, self.watch_wait));
        let (entry, new_index) = self.consul.read(&key, block).await?;
        let version = match entry {
            Some(e) => Some(parse_number(&key, &e.value)?),
            None => None,
        };
        Ok(Watched {
            version,
            index: new_index,
        })
    }

    /// Takes the publisher lock: a Consul session, renewed in the background, that holds
    /// `<p>/lock`. Waits (blocking queries, no polling) while another publisher holds it.
    async fn lock(&self) -> Result<Lock, Error> {
        let key = self.key("lock");
        let holder = default_author();
        let session = self
            .consul
            .session_create(&format!("xdplb publisher {holder}"), SESSION_TTL)
            .await?;
        let mut lock = Lock {
            consul: self.consul.clone(),
            key,
            session,
            lost: Arc::new(AtomicBool::new(false)),
            renew: None,
            released: false,
        };
        let mut index = 0;
        loop {
            let acquired = self
                .consul
                .acquire(&lock.key, &lock.session, holder.clone().into_bytes())
                .await;
            match acquired {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    lock.release().await;
                    return Err(e.into());
                }
            }
            // Held by someone else: wait until the lock key changes, then try again.
            match self.consul.read(&lock.key, Some((index, LOCK_WAIT))).await {
                Ok((_, i)) => index = if i < index { 0 } else { i },
                Err(e) => {
                    lock.release().await;
                    return Err(e.into());
                }
            }
            // Keep our own session alive while we wait.
            match self.consul.session_renew(&lock.session).await {
                Ok(true) => {}
                Ok(false) => {
                    let session = lock.session.clone();
                    lock.release().await;
                    return Err(Error::LockLost { session });
                }
                Err(e) => {
                    lock.release().await;
                    return Err(e.into());
                }
            }
        }
        lock.start_renewing();
        debug!(prefix = %self.prefix, session = %lock.session, "publisher lock taken");
        Ok(lock)
    }
}

/// The publisher lock. Release it with [`Lock::release`]; if dropped instead (a cancelled
/// publish), it is released in the background, and in the worst case its session expires.
struct Lock {
    consul: Arc<Consul>,
    key: String,
    session: String,
    lost: Arc<AtomicBool>,
    renew: Option<tokio::task::JoinHandle<()>>,
    released: bool,
}

impl Lock {
    /// Renews the session every TTL/3 until released; marks the lock lost if Consul says the
    /// session is gone.
    fn start_renewing(&mut self) {
        let consul = self.consul.clone();
        let session = self.session.clone();
        let lost = self.lost.clone();
        self.renew = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(SESSION_TTL / 3).await;
                match consul.session_renew(&session).await {
                    Ok(true) => {}
                    Ok(false) => {
                        warn!(session = %session, "publisher session expired");
                        lost.store(true, Ordering::Relaxed);
                        return;
                    }
                    Err(e) => {
                        warn!(session = %session, error = %e, "renewing publisher session failed")
                    }
                }
            }
        }));
    }

    /// Fails if the session was found expired.
    fn check(&self) -> Result<(), Error> {
        if self.lost.load(Ordering::Relaxed) {
            return Err(Error::LockLost {
                session: self.session.clone(),
            });
        }
        Ok(())
    }

    async fn release(mut self) {
        self.released = true;
        release(&self.consul, &self.key, &self.session, self.renew.take()).await;
    }
}

async fn release(
    consul: &Consul,
    key: &str,
    session: &str,
    renew: Option<tokio::task::JoinHandle<()>>,
) {
    if let Some(h) = renew {
        h.abort();
    }
    // Destroying the session alone would release the lock too, but release first so the
    // next publisher does not wait for the destroy to replicate.
    if let Err(e) = consul.release(key, session).await {
        warn!(key = %key, error = %e, "releasing publisher lock failed; the session expiry will");
    }
    if let Err(e) = consul.session_destroy(session).await {
        warn!(session = %session, error = %e, "destroying publisher session failed; it will expire");
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let renew = self.renew.take();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let consul = self.consul.clone();
                let key = self.key.clone();
                let session = self.session.clone();
                rt.spawn(async move { release(&consul, &key, &session, renew).await });
            }
            Err(_) => {
                warn!(session = %self.session, "publish interrupted; the lock is released when its session expires")
            }
        }
    }
}

fn parse_number(key: &str, value: &[u8]) -> Result<u64, Error> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| Error::Corrupt {
            key: key.to_string(),
            reason: format!("not a number: {:?}", String::from_utf8_lossy(value)),
        })
}
