//! The only module that talks to Consul: a thin, typed wrapper over its HTTP API.
//!
//! It owns the HTTP client (one connection pool, TLS with the configured CA, the ACL token, the
//! datacenter, time limits on every request) and knows nothing about versions or tables:
//! callers speak in keys, byte values, modify indexes and sessions.
//!
//! Most calls go through `consulrs`, as the design asks. Where consulrs 0.1 cannot do what we
//! need, the call is made here with the same `reqwest` client, and the reason is written next
//! to it:
//!
//! - **Reads of keys that may not exist, and blocking queries** ([`Consul::read`]). consulrs
//!   maps every non-2xx answer to `ClientError::APIError`, dropping the response headers. A 404
//!   is normal for `current` before the first publish, and its `X-Consul-Index` header is what
//!   a blocking query must send next; without it a follower could only poll. consulrs also
//!   reports each 404 at ERROR level (its functions are `#[instrument(err)]`).
//! - **Writing a value we own.** `consulrs::kv::set` takes `&'static [u8]`; we build the same
//!   `SetKeyRequest` (with `cas` / `acquire` / `release`) and run it through
//!   `consulrs::api::exec_with_result`.
//! - **Time limits.** consulrs builds its reqwest client without timeouts, so a partitioned
//!   Consul would hang a call forever; we build the client (timeouts, CA file) ourselves and
//!   hand it to consulrs, and bound every consulrs future with `tokio::time::timeout`.
//! - **Sessions in another datacenter.** consulrs's `CreateSessionRequest` has no `dc`
//!   parameter. Consul sessions belong to a node of the agent's datacenter anyway, so
//!   publishing (which locks) is only supported against the agent's own datacenter; reads work
//!   against any datacenter.
//! - **Logging.** consulrs and rustify log each request at INFO and each non-2xx answer (a
//!   normal 404 too) at ERROR, with no context; their futures run with tracing switched off
//!   and we report their errors ourselves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use consulrs::api::kv::common::KVPair;
use consulrs::api::kv::requests::{
    DeleteKeyRequest, ReadKeysRequest, ReadRawKeyRequest, SetKeyRequest,
};
use consulrs::api::session::requests::{
    CreateSessionRequest, DeleteSessionRequest, RenewSessionRequest,
};
use consulrs::client::{ConsulClient, ConsulClientSettings};
use consulrs::error::ClientError;
use tracing::debug;
use tracing::instrument::WithSubscriber;
use tracing::subscriber::NoSubscriber;
use url::Url;

use crate::config::ConsulConfig;

/// Time limit for one ordinary (non-blocking) request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time limit for connecting to the agent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What went wrong talking to Consul. `op` says what we were doing, `key` to which key.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    #[error("building the HTTP client for consul at {address}")]
    Client {
        address: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("reading the consul CA file {path}")]
    CaFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing the consul CA file {path} as PEM")]
    CaPem {
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("consul {op} {key}: no answer within {timeout:?}")]
    Timeout {
        op: &'static str,
        key: String,
        timeout: Duration,
    },
    #[error("consul {op} {key}")]
    Api {
        op: &'static str,
        key: String,
        #[source]
        source: ClientError,
    },
    #[error("consul {op} {key}")]
    Http {
        op: &'static str,
        key: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("consul {op} {key}: HTTP {code}: {body}")]
    Status {
        op: &'static str,
        key: String,
        code: u16,
        body: String,
    },
    #[error("consul {op} {key}: undecodable answer: {reason}")]
    Decode {
        op: &'static str,
        key: String,
        reason: String,
    },
}

impl ConsulError {
    /// True when the error says the request never got a real answer (network, timeout, 5xx),
    /// so retrying later can help.
    pub fn is_transient(&self) -> bool {
        match self {
            ConsulError::Timeout { .. } | ConsulError::Http { .. } => true,
            ConsulError::Status { code, .. } => *code >= 500,
            ConsulError::Api { source, .. } => match source {
                ClientError::APIError { code, .. } => *code >= 500,
                _ => true,
            },
            _ => false,
        }
    }
}

/// One key as read from Consul.
#[derive(Debug, Clone)]
pub struct KvEntry {
    pub value: Vec<u8>,
    pub modify_index: u64,
    /// Session holding the key's lock, if any.
    pub session: Option<String>,
}

/// A connection to one Consul agent.
pub struct Consul {
    client: ConsulClient,
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    dc: Option<String>,
    requests: AtomicU64,
}

impl std::fmt::Debug for Consul {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consul")
            .field("address", &self.base.as_str())
            .field("datacenter", &self.dc)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Consul {
    /// Builds the client. Reads the CA file; does not contact Consul.
    pub fn new(config: &ConsulConfig) -> Result<Consul, ConsulError> {
        let address = config.address.as_str().trim_end_matches('/').to_string();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|source| ConsulError::CaFile {
                path: path.display().to_string(),
                source,
            })?;
            let cert =
                reqwest::Certificate::from_pem(&pem).map_err(|source| ConsulError::CaPem {
                    path: path.display().to_string(),
                    source,
                })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|source| ConsulError::Client {
            address: address.clone(),
            source,
        })?;
        // Built by hand rather than with `ConsulClient::new`, which would build a second
        // reqwest client without timeouts and read CONSUL_* environment variables.
        let settings = ConsulClientSettings {
            address: address.clone(),
            ca_certs: Vec::new(),
            client_cert: None,
            client_key: None,
            token: config.token.as_ref().map(|t| t.expose().to_string()),
            verify: true,
            version: 1,
        };
        let client = ConsulClient {
            http: rustify::clients::reqwest::Client::new(&address, http.clone()),
            settings,
        };
        Ok(Consul {
            client,
            http,
            base: config.address.clone(),
            token: config.token.as_ref().map(|t| t.expose().to_string()),
            dc: config.datacenter.clone(),
            requests: AtomicU64::new(0),
        })
    }

    /// Number of HTTP requests this client has started (for the idle-cost test and metrics).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    async fn bounded<T>(
        &self,
        op: &'static str,
        key: &str,
        fut: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<Result<T, ClientError>, ConsulError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        // consulrs and rustify log every request at INFO and every non-2xx answer (a normal
        // 404 included) at ERROR, without context. Silence them here: we return their errors
        // as values and log them with context where we know what they mean.
        let quiet = fut.with_subscriber(NoSubscriber::default());
        tokio::time::timeout(REQUEST_TIMEOUT, quiet)
            .await
            .map_err(|_| ConsulError::Timeout {
                op,
                key: key.to_string(),
                timeout: REQUEST_TIMEOUT,
            })
    }

    fn api_error(op: &'static str, key: &str, source: ClientError) -> ConsulError {
        ConsulError::Api {
            op,
            key: key.to_string(),
            source,
        }
    }

    /// Reads one key. With `block = Some((index, wait))` this is a blocking query: Consul
    /// answers when the key's index moves past `index` or after `wait`. Returns the entry (None
    /// when the key does not exist) and the `X-Consul-Index` to send next time.
    ///
    /// Not consulrs: see the module docs (a 404 must keep its index header).
    pub async fn read(
        &self,
        key: &str,
        block: Option<(u64, Duration)>,
    ) -> Result<(Option<KvEntry>, u64), ConsulError> {
        const OP: &str = "read";
        let mut url = self.kv_url(key);
        {
            let mut q = url.query_pairs_mut();
            if let Some(dc) = &self.dc {
                q.append_pair("dc", dc);
            }
            if let Some((index, wait)) = block {
                q.append_pair("index", &index.to_string());
                q.append_pair("wait", &format!("{}ms", wait.as_millis()));
            }
        }
        let mut req = self.http.get(url);
        if let Some(token) = &self.token {
            req = req.header("X-Consul-Token", token);
        }
        if let Some((_, wait)) = block {
            // Consul adds up to wait/16 of jitter before answering.
            req = req.timeout(wait + wait / 16 + REQUEST_TIMEOUT);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let http_err = |source| ConsulError::Http {
            op: OP,
            key: key.to_string(),
            source,
        };
        let resp = req.send().await.map_err(http_err)?;
        let status = resp.status().as_u16();
        let index = resp
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let body = resp.bytes().await.map_err(http_err)?;
        match status {
            404 => Ok((None, index)),
            200 => {
                let decode = |reason: String| ConsulError::Decode {
                    op: OP,
                    key: key.to_string(),
                    reason,
                };
                let mut pairs: Vec<KVPair> =
                    serde_json::from_slice(&body).map_err(|e| decode(e.to_string()))?;
                let Some(pair) = pairs.pop() else {
                    return Ok((None, index));
                };
                let value: Vec<u8> = match pair.value {
                    Some(v) => v
                        .try_into()
                        .map_err(|e: ClientError| decode(e.to_string()))?,
                    None => Vec::new(),
                };
                Ok((
                    Some(KvEntry {
                        value,
                        modify_index: pair.modify_index,
                        session: pair.session.filter(|s| !s.is_empty()),
                    }),
                    index,
                ))
            }
            code => Err(ConsulError::Status {
                op: OP,
                key: key.to_string(),
                code,
                body: String::from_utf8_lossy(&body).trim().to_string(),
            }),
        }
    }

    fn kv_url(&self, key: &str) -> Url {
        let mut url = self.base.clone();
        {
            // Keys are validated to plain path characters (config::validate_prefix and the
            // fixed layout), so pushing them segment by segment cannot change their meaning.
            let mut segs = url
                .path_segments_mut()
                .expect("http(s) URL has a path (checked in config)");
            segs.pop_if_empty().push("v1").push("kv");
            segs.extend(key.split('/'));
        }
        url
    }

    /// Reads a key's raw value through consulrs. None when the key does not exist.
    pub async fn read_raw(&self, key: &str) -> Result<Option<Vec<u8>>, ConsulError> {
        const OP: &str = "read";
        let mut opts = ReadRawKeyRequest::builder();
        if let Some(dc) = &self.dc {
            opts.dc(dc.as_str());
        }
        let res = self
            .bounded(
                OP,
                key,
                consulrs::kv::raw(&self.client, key, Some(&mut opts)),
            )
            .await?;
        match res {
            Ok(r) => Ok(Some(r.response)),
            Err(ClientError::APIError { code: 404, .. }) => Ok(None),
            Err(e) => Err(Self::api_error(OP, key, e)),
        }
    }

    /// Writes a key. `cas`: None = unconditional, Some(0) = only if absent, Some(i) = only if
    /// its modify index is still i. Returns false when the check-and-set did not apply.
    pub async fn write(
        &self,
        key: &str,
        value: Vec<u8>,
        cas: Option<u64>,
    ) -> Result<bool, ConsulError> {
        let mut b = SetKeyRequest::builder();
        b.key(key).value(value);
        if let Some(c) = cas {
            b.cas(c);
        }
        self.set(b, "write", key).await
    }

    /// Takes the lock on `key` for `session` (and writes `value`). False if someone holds it.
    pub async fn acquire(
        &self,
        key: &str,
        session: &str,
        value: Vec<u8>,
    ) -> Result<bool, ConsulError> {
        let mut b = SetKeyRequest::builder();
        b.key(key).value(value).acquire(session);
        self.set(b, "acquire", key).await
    }

    /// Releases the lock on `key` held by `session`.
    pub async fn release(&self, key: &str, session: &str) -> Result<bool, ConsulError> {
        let mut b = SetKeyRequest::builder();
        b.key(key).value(Vec::new()).release(session);
        self.set(b, "release", key).await
    }

    async fn set(
        &self,
        mut b: consulrs::api::kv::requests::SetKeyRequestBuilder,
        op: &'static str,
        key: &str,
    ) -> Result<bool, ConsulError> {
        if let Some(dc) = &self.dc {
            b.dc(dc.as_str());
        }
        let endpoint = b.build().map_err(|e| ConsulError::Decode {
            op,
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        let res = self
            .bounded(
                op,
                key,
                consulrs::api::exec_with_result(&self.client, endpoint),
            )
            .await?;
        res.map(|r| r.response)
            .map_err(|e| Self::api_error(op, key, e))
    }

    /// Lists the keys under `prefix` (recursively). Empty when there are none.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, ConsulError> {
        const OP: &str = "list";
        let mut opts = ReadKeysRequest::builder();
        opts.recurse(true);
        if let Some(dc) = &self.dc {
            opts.dc(dc.as_str());
        }
        let res = self
            .bounded(
                OP,
                prefix,
                consulrs::kv::keys(&self.client, prefix, Some(&mut opts)),
            )
            .await?;
        match res {
            Ok(r) => Ok(r.response),
            Err(ClientError::APIError { code: 404, .. }) => Ok(Vec::new()),
            Err(e) => Err(Self::api_error(OP, prefix, e)),
        }
    }

    /// Deletes every key under `prefix`.
    pub async fn delete_tree(&self, prefix: &str) -> Result<(), ConsulError> {
        const OP: &str = "delete";
        let mut opts = DeleteKeyRequest::builder();
        opts.recurse(true);
        if let Some(dc) = &self.dc {
            opts.dc(dc.as_str());
        }
        let res = self
            .bounded(
                OP,
                prefix,
                consulrs::kv::delete(&self.client, prefix, Some(&mut opts)),
            )
            .await?;
        res.map(|_| ()).map_err(|e| Self::api_error(OP, prefix, e))
    }

    /// Creates a session that releases its locks when it expires or is destroyed.
    pub async fn session_create(&self, name: &str, ttl: Duration) -> Result<String, ConsulError> {
        self.session_create_with(name, ttl, "release").await
    }

    /// Creates a session whose keys are deleted when it expires or is destroyed: what a
    /// process keeps in Consul only while it lives.
    pub async fn session_create_ephemeral(
        &self,
        name: &str,
        ttl: Duration,
    ) -> Result<String, ConsulError> {
        self.session_create_with(name, ttl, "delete").await
    }

    async fn session_create_with(
        &self,
        name: &str,
        ttl: Duration,
        behavior: &str,
    ) -> Result<String, ConsulError> {
        const OP: &str = "create session";
        let mut opts = CreateSessionRequest::builder();
        opts.name(name)
            .behavior(behavior)
            .ttl(format!("{}s", ttl.as_secs().max(10)))
            // Our writes are create-only or check-and-set, so a holder that lost its session
            // cannot corrupt anything; no need to keep the lock unusable after an expiry.
            .lock_delay("0s");
        let res = self
            .bounded(
                OP,
                name,
                consulrs::session::create(&self.client, Some(&mut opts)),
            )
            .await?;
        res.map(|r| r.response.id)
            .map_err(|e| Self::api_error(OP, name, e))
    }

    /// Renews a session. Ok(false) when Consul no longer knows it (expired).
    pub async fn session_renew(&self, id: &str) -> Result<bool, ConsulError> {
        const OP: &str = "renew session";
        let mut opts = RenewSessionRequest::builder();
        if let Some(dc) = &self.dc {
            opts.dc(dc.as_str());
        }
        let res = self
            .bounded(
                OP,
                id,
                consulrs::session::renew(&self.client, id, Some(&mut opts)),
            )
            .await?;
        match res {
            Ok(r) => Ok(!r.response.is_empty()),
            Err(ClientError::APIError { code: 404, .. }) => Ok(false),
            Err(e) => Err(Self::api_error(OP, id, e)),
        }
    }

    /// Destroys a session (releasing its locks).
    pub async fn session_destroy(&self, id: &str) -> Result<(), ConsulError> {
        const OP: &str = "destroy session";
        let mut opts = DeleteSessionRequest::builder();
        if let Some(dc) = &self.dc {
            opts.dc(dc.as_str());
        }
        let res = self
            .bounded(
                OP,
                id,
                consulrs::session::delete(&self.client, id, Some(&mut opts)),
            )
            .await?;
        debug!(session = id, "consul session destroyed");
        res.map(|_| ()).map_err(|e| Self::api_error(OP, id, e))
    }
}
