//! The follower's local copy of the last applied version, so a director that starts while
//! Consul is unreachable serves what it served before. One JSON file, replaced atomically
//! (temp file in the same directory, fsync, rename, fsync the directory).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::meta::{sha256_hex, VersionMeta};
use crate::store::Version;

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading cluster state {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing cluster state {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cluster state {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cluster state {path}: the text does not match its sha256; ignoring it")]
    Integrity { path: PathBuf },
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    meta: VersionMeta,
    text: String,
}

/// Loads the persisted version. Ok(None) when there is no file yet.
pub fn load(path: &Path) -> Result<Option<Version>, StateError> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let file: StateFile = serde_json::from_slice(&data).map_err(|source| StateError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    if sha256_hex(file.text.as_bytes()) != file.meta.sha256 {
        return Err(StateError::Integrity {
            path: path.to_path_buf(),
        });
    }
    Ok(Some(Version {
        meta: file.meta,
        text: file.text,
    }))
}

/// Replaces the persisted version atomically. Creates the directory if needed.
pub fn save(path: &Path, version: &Version) -> Result<(), StateError> {
    let err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let json = serde_json::to_vec(&StateFile {
        meta: version.meta.clone(),
        text: version.text.clone(),
    })
    .expect("state serialises");
    // 0600: the text holds the services' hash keys.
    daemon_support::write_atomic(path, &json, 0o600).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn version(text: &str) -> Version {
        Version {
            meta: VersionMeta {
                format: crate::meta::FORMAT,
                version: 7,
                created_unix: 1,
                author: "a@b".into(),
                comment: String::new(),
                parent: Some(6),
                services: BTreeMap::new(),
                size: text.len() as u64,
                chunks: 1,
                sha256: sha256_hex(text.as_bytes()),
            },
            text: text.into(),
        }
    }

    #[test]
    fn round_trip_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        assert!(load(&path).unwrap().is_none());
        let v = version("services: []\n");
        save(&path, &v).unwrap();
        assert_eq!(load(&path).unwrap().unwrap(), v);
        save(&path, &version("services: [x]\n")).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().text, "services: [x]\n");
        // No temp files left behind.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );

        let tampered = std::fs::read_to_string(&path)
            .unwrap()
            .replace("[x]", "[y]");
        std::fs::write(&path, tampered).unwrap();
        assert!(matches!(load(&path), Err(StateError::Integrity { .. })));
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(load(&path), Err(StateError::Parse { .. })));
    }
}
