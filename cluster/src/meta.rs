//! What a published version says about itself: the JSON stored at
//! `<prefix>/versions/<n>/meta`, and the input a publisher supplies.
//!
//! Checksums arrive as data (computed by tablegen in the caller): this crate never builds a
//! table, so it does not depend on tablegen.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Layout version of the stored meta/chunks. Bumped only on an incompatible change.
pub const FORMAT: u32 = 1;

/// What tablegen computed for one service of the published config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDigest {
    /// Hash of the service's canonical config (`tablegen::table::Table::version`).
    #[serde(with = "hex16")]
    pub version: u64,
    /// Hash of the built table (`tablegen::table::Table::checksum`): every director must
    /// reproduce it before it swaps the table in.
    #[serde(with = "hex16")]
    pub checksum: u64,
}

/// The `services` of a [`PublishMeta`] from (service name, version, checksum) triples, as
/// tablegen computed them (`Table::service`, `Table::version`, `Table::checksum`).
pub fn service_digests<'a>(
    tables: impl IntoIterator<Item = (&'a str, u64, u64)>,
) -> BTreeMap<String, ServiceDigest> {
    tables
        .into_iter()
        .map(|(name, version, checksum)| (name.to_string(), ServiceDigest { version, checksum }))
        .collect()
}

/// One way the tables built from a version's text differ from what its publisher recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("service {service} is not in the published checksums")]
    Unpublished { service: String },
    #[error(
        "service {service}: built here as version {:016x} checksum {:016x}, published as version {:016x} checksum {:016x}",
        built.version, built.checksum, published.version, published.checksum
    )]
    Differs {
        service: String,
        built: ServiceDigest,
        published: ServiceDigest,
    },
    #[error("published service {service} is not in the text")]
    NotBuilt { service: String },
}

/// Metadata of one immutable version, as stored in Consul.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMeta {
    pub format: u32,
    /// The version number (1, 2, ...).
    pub version: u64,
    /// Seconds since the Unix epoch when it was published.
    pub created_unix: u64,
    /// Who published it (`user@host` by default).
    pub author: String,
    #[serde(default)]
    pub comment: String,
    /// The live version when this one was published (None for the first).
    pub parent: Option<u64>,
    /// Per service name: what a director must reproduce.
    pub services: BTreeMap<String, ServiceDigest>,
    /// Length of the config text in bytes.
    pub size: u64,
    /// Number of chunk keys holding the text.
    pub chunks: u32,
    /// SHA-256 of the config text, lowercase hex.
    pub sha256: String,
}

impl VersionMeta {
    /// Every difference between `built` (the digests of the tables built from this version's
    /// text, by [`service_digests`]) and the published ones; the version reproduces when there
    /// is none. This is the one check of a version: a director refuses to install a version
    /// that does not reproduce, and `tablegen cluster` warns with the same words before an
    /// operator rolls back to it. Both the config hash (version) and the table hash (checksum)
    /// must match: the same table from a different config is still a different version.
    pub fn mismatches(&self, built: &BTreeMap<String, ServiceDigest>) -> Vec<Mismatch> {
        let mut out = Vec::new();
        for (service, &b) in built {
            match self.services.get(service) {
                None => out.push(Mismatch::Unpublished {
                    service: service.clone(),
                }),
                Some(&p) if p != b => out.push(Mismatch::Differs {
                    service: service.clone(),
                    built: b,
                    published: p,
                }),
                Some(_) => {}
            }
        }
        for service in self.services.keys() {
            if !built.contains_key(service) {
                out.push(Mismatch::NotBuilt {
                    service: service.clone(),
                });
            }
        }
        out
    }
}

/// What a publisher supplies besides the text.
#[derive(Debug, Clone, Default)]
pub struct PublishMeta {
    /// Per service name: version and checksum computed by tablegen from the same text.
    pub services: BTreeMap<String, ServiceDigest>,
    /// Defaults to `$USER@hostname`.
    pub author: Option<String>,
    pub comment: String,
    /// Optimistic concurrency: publish only if the live version is still this one.
    pub expect: Expect,
}

/// A precondition on the live version (`current`), checked under the publish lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Expect {
    /// Last writer wins (a director publishing its own file).
    #[default]
    Any,
    /// Only if `current` is exactly this (None: no version published yet). An operator tool
    /// reads `current`, edits, and publishes with this, so two edits of the same base cannot
    /// silently overwrite each other: the second gets `Error::Conflict` and redoes its edit.
    Current(Option<u64>),
}

/// SHA-256 of `data`, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// `user@hostname`, for the author field: `$USER` (or `$LOGNAME`), else the account name of
/// the uid (cron, systemd units and some containers set neither), else `uid<N>`, so a version
/// never says `unknown@host`.
pub fn default_author() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            let uid = nix::unistd::getuid();
            match nix::unistd::User::from_uid(uid) {
                Ok(Some(u)) => u.name,
                _ => format!("uid{uid}"),
            }
        });
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    format!("{user}@{host}")
}

/// u64 as exactly 16 lowercase hex digits: JSON numbers lose precision above 2^53.
mod hex16 {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() != 16 {
            return Err(D::Error::custom(format!(
                "expected 16 hex digits, got {s:?}"
            )));
        }
        u64::from_str_radix(&s, 16).map_err(|e| D::Error::custom(format!("{s:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_16_hex_digits() {
        let d = ServiceDigest {
            version: 0x1f,
            checksum: u64::MAX,
        };
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(
            j,
            r#"{"version":"000000000000001f","checksum":"ffffffffffffffff"}"#
        );
        assert_eq!(serde_json::from_str::<ServiceDigest>(&j).unwrap(), d);
        assert!(serde_json::from_str::<ServiceDigest>(
            r#"{"version":"1f","checksum":"ffffffffffffffff"}"#
        )
        .is_err());
    }

    fn meta(services: BTreeMap<String, ServiceDigest>) -> VersionMeta {
        VersionMeta {
            format: FORMAT,
            version: 3,
            created_unix: 0,
            author: "a@b".into(),
            comment: String::new(),
            parent: None,
            services,
            size: 0,
            chunks: 1,
            sha256: String::new(),
        }
    }

    #[test]
    fn a_version_reproduces_only_when_every_version_and_checksum_matches() {
        let published = service_digests([("web", 1, 10), ("db", 2, 20)]);
        let m = meta(published.clone());
        assert_eq!(m.mismatches(&published), vec![]);

        // Same table, different config hash: refused (a checksum-only check let it through).
        let other_config = service_digests([("web", 9, 10), ("db", 2, 20)]);
        assert_eq!(
            m.mismatches(&other_config),
            vec![Mismatch::Differs {
                service: "web".into(),
                built: ServiceDigest {
                    version: 9,
                    checksum: 10
                },
                published: ServiceDigest {
                    version: 1,
                    checksum: 10
                },
            }]
        );
        let other_table = service_digests([("web", 1, 11), ("db", 2, 20)]);
        assert_eq!(m.mismatches(&other_table).len(), 1);

        let renamed = service_digests([("www", 1, 10), ("db", 2, 20)]);
        let found: Vec<String> = m
            .mismatches(&renamed)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            found,
            [
                "service www is not in the published checksums",
                "published service web is not in the text"
            ]
        );
    }

    #[test]
    fn sha256_known_answer() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
