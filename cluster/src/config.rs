//! The `consul:` section of director.yaml (and of tablegen's publish options): the file shape,
//! read with positions by [`ConsulSection::from_node`], and its validation into a typed
//! [`ConsulConfig`] that later code never re-checks.
//!
//! ```yaml
//! consul:
//!   address: https://127.0.0.1:8501   # the local agent; http:// or https://
//!   datacenter: dc1                   # optional; default: the agent's own
//!   token_file: /etc/xdplb/consul.token   # or `token: ...` (not both)
//!   ca_file: /etc/xdplb/consul-ca.pem      # https only: trust this CA
//!   prefix: xdplb/edge-ams                 # one prefix per director cluster
//!   state_file: /var/lib/xdplb/cluster-state.json
//! ```

use std::path::PathBuf;
use std::time::Duration;

use url::Url;
use yaml::{Checker, Node, Problem};

/// Default place where a follower keeps the last applied version.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/xdplb/cluster-state.json";

/// The section as written in the file (see [`ConsulSection::from_node`]).
#[derive(Debug, Clone)]
pub struct ConsulSection {
    pub address: String,
    pub datacenter: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub prefix: String,
    pub state_file: Option<PathBuf>,
}

/// An ACL token. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(secret: impl Into<String>) -> Token {
        Token(secret.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A validated Consul configuration.
#[derive(Debug, Clone)]
pub struct ConsulConfig {
    /// Agent address, `http` or `https`, no query or fragment.
    pub address: Url,
    pub datacenter: Option<String>,
    pub token: Option<Token>,
    /// PEM CA bundle trusted for `https` (in addition to the system roots).
    pub ca_file: Option<PathBuf>,
    /// Key prefix of this director cluster, without leading or trailing `/`.
    pub prefix: String,
    /// Where a follower persists the last applied version.
    pub state_file: PathBuf,
    /// How long one blocking query may wait in Consul (Consul caps it at 10 minutes). Not in
    /// the file: tests shorten it.
    pub watch_wait: Duration,
}

/// Why a `consul:` section was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("consul.address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("consul.ca_file is only used with an https:// address")]
    CaFileWithoutHttps,
    #[error("consul.token and consul.token_file are both set; keep one")]
    TokenTwice,
    #[error("consul.token_file {path}: cannot read it")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("consul.token_file {path} is empty")]
    TokenFileEmpty { path: PathBuf },
    #[error("consul.token is empty")]
    TokenEmpty,
    #[error("consul.prefix {prefix:?}: {reason}")]
    Prefix { prefix: String, reason: String },
    #[error(
        "consul.datacenter {datacenter:?}: only letters, digits, '-', '_' and '.' are allowed"
    )]
    Datacenter { datacenter: String },
}

impl ConsulSection {
    /// The section's fields, in the order the docs list them.
    pub const FIELDS: &'static [&'static str] = &[
        "address",
        "datacenter",
        "token",
        "token_file",
        "ca_file",
        "prefix",
        "state_file",
    ];

    /// Read the section from its node in a config file, recording every problem (unknown or
    /// missing field, wrong type) in `c` with its position. `None` if there was one.
    pub fn from_node<K: From<Problem>>(c: &mut Checker<'_, K>, node: &Node) -> Option<Self> {
        let f = c.fields(node, Self::FIELDS, "consul", "`consul`")?;
        let text = |c: &mut Checker<'_, K>, name: &str, required: bool| {
            let n = if required {
                c.required(&f, name)
            } else {
                f.get(name)
            };
            match n {
                None => Ok(None),
                Some(n) => c
                    .scalar(n, &format!("consul.{name}"), "a string")
                    .map(|s| Some(s.to_string()))
                    .ok_or(()),
            }
        };
        let address = text(c, "address", true);
        let datacenter = text(c, "datacenter", false);
        let token = text(c, "token", false);
        let token_file = text(c, "token_file", false);
        let ca_file = text(c, "ca_file", false);
        let prefix = text(c, "prefix", true);
        let state_file = text(c, "state_file", false);
        Some(ConsulSection {
            address: address.ok()??,
            datacenter: datacenter.ok()?,
            token: token.ok()?,
            token_file: token_file.ok()?.map(PathBuf::from),
            ca_file: ca_file.ok()?.map(PathBuf::from),
            prefix: prefix.ok()??,
            state_file: state_file.ok()?.map(PathBuf::from),
        })
    }

    /// The `consul:` section of a director.yaml's text (read from `path`, used in messages
    /// only), or `None` if it has none. Only that section is checked here; the other fields
    /// are the director's.
    pub fn from_director_yaml(
        path: &std::path::Path,
        text: &str,
    ) -> Result<Option<Self>, yaml::Errors<Problem>> {
        let mut c: Checker<'_, Problem> = Checker::new(path);
        let root = c.document(text);
        let node = root.as_ref().and_then(|root| {
            root.as_map()?
                .iter()
                .find(|(k, _)| k.as_scalar() == Some("consul"))
                .map(|(_, v)| v)
                .filter(|v| !v.is_null())
        });
        let section = node.and_then(|n| Self::from_node(&mut c, n));
        c.finish()?;
        Ok(section)
    }

    /// Checks the section and reads the token file.
    pub fn validate(self) -> Result<ConsulConfig, ConfigError> {
        let address = parse_address(&self.address)?;
        if self.ca_file.is_some() && address.scheme() != "https" {
            return Err(ConfigError::CaFileWithoutHttps);
        }
        let token = match (self.token, self.token_file) {
            (Some(_), Some(_)) => return Err(ConfigError::TokenTwice),
            (Some(t), None) if t.trim().is_empty() => return Err(ConfigError::TokenEmpty),
            (Some(t), None) => Some(Token(t.trim().to_string())),
            (None, Some(path)) => {
                let text =
                    std::fs::read_to_string(&path).map_err(|source| ConfigError::TokenFile {
                        path: path.clone(),
                        source,
                    })?;
                let t = text.trim();
                if t.is_empty() {
                    return Err(ConfigError::TokenFileEmpty { path });
                }
                Some(Token(t.to_string()))
            }
            (None, None) => None,
        };
        if let Some(dc) = &self.datacenter {
            if dc.is_empty()
                || !dc
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(ConfigError::Datacenter {
                    datacenter: dc.clone(),
                });
            }
        }
        validate_prefix(&self.prefix)?;
        Ok(ConsulConfig {
            address,
            datacenter: self.datacenter,
            token,
            ca_file: self.ca_file,
            prefix: self.prefix,
            state_file: self
                .state_file
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_FILE)),
            watch_wait: Duration::from_secs(300),
        })
    }
}

impl ConfigError {
    /// The field of the section the error is about, so a reader can point at it.
    pub fn field(&self) -> &'static str {
        match self {
            ConfigError::Address { .. } => "address",
            ConfigError::CaFileWithoutHttps => "ca_file",
            ConfigError::TokenTwice | ConfigError::TokenEmpty => "token",
            ConfigError::TokenFile { .. } | ConfigError::TokenFileEmpty { .. } => "token_file",
            ConfigError::Prefix { .. } => "prefix",
            ConfigError::Datacenter { .. } => "datacenter",
        }
    }
}

fn parse_address(text: &str) -> Result<Url, ConfigError> {
    let err = |reason: &str| ConfigError::Address {
        address: text.to_string(),
        reason: reason.to_string(),
    };
    let url = Url::parse(text).map_err(|e| err(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(err("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(err("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err("no query or fragment allowed"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err("no credentials in the URL; use token_file"));
    }
    Ok(url)
}

/// A prefix is one or more `/`-separated segments of `[A-Za-z0-9._-]`, so every key we build
/// from it is a plain URL path.
pub fn validate_prefix(prefix: &str) -> Result<(), ConfigError> {
    let err = |reason: &str| ConfigError::Prefix {
        prefix: prefix.to_string(),
        reason: reason.to_string(),
    };
    if prefix.is_empty() {
        return Err(err("empty"));
    }
    for seg in prefix.split('/') {
        if seg.is_empty() {
            return Err(err("empty segment (leading, trailing or double '/')"));
        }
        if seg == "." || seg == ".." {
            return Err(err("'.' and '..' segments are not allowed"));
        }
        if !seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(err(
                "only letters, digits, '-', '_', '.' and '/' are allowed",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> ConsulSection {
        let mut c: Checker<'_, Problem> = Checker::new(std::path::Path::new("c.yaml"));
        let root = c.document(text).unwrap();
        let s = ConsulSection::from_node(&mut c, &root);
        c.finish().unwrap();
        s.unwrap()
    }

    #[test]
    fn valid_minimal() {
        let c = section("address: http://127.0.0.1:8500\nprefix: xdplb/lab\n")
            .validate()
            .unwrap();
        assert_eq!(c.address.as_str(), "http://127.0.0.1:8500/");
        assert_eq!(c.prefix, "xdplb/lab");
        assert_eq!(c.state_file, PathBuf::from(DEFAULT_STATE_FILE));
        assert!(c.token.is_none());
    }

    #[test]
    fn token_file_is_read_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cr3t\n").unwrap();
        let c = section(&format!(
            "address: https://consul.example:8501\nprefix: p\ntoken_file: {}\nca_file: /x.pem\n",
            path.display()
        ))
        .validate()
        .unwrap();
        assert_eq!(c.token.as_ref().unwrap().expose(), "s3cr3t");
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn refusals() {
        let cases = [
            ("address: ftp://h\nprefix: p\n", "scheme"),
            ("address: not a url\nprefix: p\n", "consul.address"),
            ("address: http://h?x=1\nprefix: p\n", "query"),
            ("address: http://u:pw@h\nprefix: p\n", "credentials"),
            ("address: http://h\nprefix: p\nca_file: /ca\n", "https"),
            (
                "address: http://h\nprefix: p\ntoken: a\ntoken_file: /t\n",
                "both",
            ),
            ("address: http://h\nprefix: p\ntoken: ' '\n", "empty"),
            ("address: http://h\nprefix: /p\n", "empty segment"),
            ("address: http://h\nprefix: p/\n", "empty segment"),
            ("address: http://h\nprefix: a/../b\n", "'..'"),
            ("address: http://h\nprefix: a b\n", "only letters"),
            ("address: http://h\nprefix: ''\n", "empty"),
            (
                "address: http://h\nprefix: p\ndatacenter: 'd c'\n",
                "datacenter",
            ),
            (
                "address: http://h\nprefix: p\ntoken_file: /nonexistent/t\n",
                "cannot read",
            ),
        ];
        for (yaml, want) in cases {
            let e = section(yaml).validate().unwrap_err().to_string();
            assert!(e.contains(want), "{yaml:?}: got {e:?}, want {want:?}");
        }
    }

    #[test]
    fn the_section_of_a_director_yaml_is_read_alone() {
        let p = std::path::Path::new("d.yaml");
        let s = ConsulSection::from_director_yaml(
            p,
            "interfaces: [eth0]\nconsul:\n  address: http://h\n  prefix: p\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!((s.address.as_str(), s.prefix.as_str()), ("http://h", "p"));
        assert!(ConsulSection::from_director_yaml(p, "# none\n")
            .unwrap()
            .is_none());
        assert!(ConsulSection::from_director_yaml(p, "consul:\n")
            .unwrap()
            .is_none());
        let e = ConsulSection::from_director_yaml(p, "x: 1\nconsul: { prefix: p }\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "d.yaml:2:9: missing field `address` in consul; add it");
    }

    #[test]
    fn unknown_and_missing_fields_are_refused_at_their_positions() {
        let mut c: Checker<'_, Problem> = Checker::new(std::path::Path::new("c.yaml"));
        let root = c
            .document("address: http://h\nprefx: q\ntoken: [a]\n")
            .unwrap();
        assert!(ConsulSection::from_node(&mut c, &root).is_none());
        let e = c.finish().unwrap_err().to_string();
        assert_eq!(
            e,
            "c.yaml:1:1: missing field `prefix` in consul; add it\n\
             c.yaml:2:1: unknown field `prefx` in consul; expected one of: address, datacenter, \
             token, token_file, ca_file, prefix, state_file (did you mean `prefix`?)\n\
             c.yaml:3:8: `consul.token` must be a string, found a list"
        );
    }
}
