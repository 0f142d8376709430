//! Where table versions come from: the backends.yaml file ([`FileSource`]) or a Consul cluster
//! ([`crate::consul::ConsulSource`], docs/development/cluster-sync.md). A source produces a
//! validated config and its tables and wakes the daemon when a new version may be there; the
//! daemon installs it and tells the source how that went.
//!
//! Must not do: touch maps (the daemon installs what a source returns).

use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;

use tablegen::config::Config;
use tablegen::table::Table;

use crate::daemon::Event;
use crate::error::{DaemonError, SourceError};

/// A validated config and its tables, in config order.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    pub tables: Vec<Table>,
}

impl Loaded {
    /// What a publisher sends and a director checks for these tables.
    pub fn digests(&self) -> std::collections::BTreeMap<String, cluster::ServiceDigest> {
        cluster::service_digests(
            self.tables
                .iter()
                .map(|t| (t.service.as_str(), t.version, t.checksum)),
        )
    }
}

/// A source of table versions.
pub trait TableSource: Send {
    /// For logs and status, e.g. the file path.
    fn describe(&self) -> String;
    /// Fetch, validate and build the current version.
    fn load(&mut self) -> Result<Loaded, SourceError>;
    /// Start sending [`Event::Changed`] on `wake` whenever a new version may be available.
    /// The returned guard stops watching when dropped.
    fn watch(&mut self, wake: Sender<Event>) -> Result<Box<dyn std::any::Any + Send>, DaemonError>;
    /// The outcome of the reload that followed the last [`TableSource::load`]: `Ok` once its
    /// tables are live, `Err` (the message) if they were refused or not installed.
    fn finished(&mut self, _result: Result<(), String>) {}
    /// For `status`: a cluster source's view of Consul.
    fn cluster(&self) -> Option<crate::state::ClusterState> {
        None
    }
}

/// backends.yaml on disk, watched through its directory so that editors which save by
/// writing a new file and renaming it over the old one are seen too.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    pub fn new(path: &Path) -> FileSource {
        FileSource { path: path.into() }
    }
}

/// Parse and build (pure; shared by the daemon and the tests).
pub fn build(path: &Path, text: &str) -> Result<Loaded, SourceError> {
    let config = Config::parse(path, text)?;
    let tables = tablegen::table::build_all(&config);
    Ok(Loaded { config, tables })
}

impl TableSource for FileSource {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn load(&mut self) -> Result<Loaded, SourceError> {
        let text = std::fs::read_to_string(&self.path).map_err(|source| SourceError::Read {
            path: self.path.clone(),
            source,
        })?;
        build(&self.path, &text)
    }

    fn watch(&mut self, wake: Sender<Event>) -> Result<Box<dyn std::any::Any + Send>, DaemonError> {
        use notify::{RecursiveMode, Watcher};
        let dir = self.path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let name = self.path.file_name().map(|n| n.to_os_string());
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            if ev.kind.is_access() {
                return;
            }
            if ev
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
            {
                let _ = wake.send(Event::Changed);
            }
        })
        .map_err(|source| DaemonError::Watch {
            path: dir.clone(),
            source,
        })?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|source| DaemonError::Watch {
                path: dir.clone(),
                source,
            })?;
        Ok(Box::new(watcher))
    }
}
