//! [`TableSet`]: the tables of every service of one config, with the backends they name: what
//! `tablegen diff` compares, built from a config or read from a table file.
//!
//! Must not do: I/O (the caller reads the file and passes its bytes).

use std::path::Path;

use crate::config::{Backend, Config, ConfigErrors};
use crate::format::{self, FormatError};
use crate::report::NamedTable;
use crate::table::{self, Table};

/// One table per service, in the config's order.
#[derive(Clone, Debug)]
pub struct TableSet {
    pub items: Vec<(String, Vec<Backend>, Table)>,
}

/// Why bytes are not a table set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableSetError {
    #[error("reading tables from {path}")]
    Format {
        path: String,
        #[source]
        source: FormatError,
    },
    #[error("{path} is neither a table file nor UTF-8 text")]
    NotText { path: String },
    #[error("{} error(s):\n{errors}", errors.errors.len())]
    Config { errors: ConfigErrors },
}

impl TableSet {
    /// Builds the tables of every service of `config`.
    pub fn build(config: Config) -> TableSet {
        let tables = table::build_all(&config);
        TableSet {
            items: config
                .services
                .into_iter()
                .zip(tables)
                .map(|(s, t)| (s.name, s.backends, t))
                .collect(),
        }
    }

    /// A binary table file (recognised by its magic) or a config to build, read from `path`
    /// (used in messages only).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<TableSet, TableSetError> {
        if bytes.starts_with(format::MAGIC) {
            let services = format::read(&bytes).map_err(|source| TableSetError::Format {
                path: path.display().to_string(),
                source,
            })?;
            return Ok(TableSet {
                items: services
                    .into_iter()
                    .map(|s| (s.name, s.backends, s.table))
                    .collect(),
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| TableSetError::NotText {
            path: path.display().to_string(),
        })?;
        let config =
            Config::parse(path, &text).map_err(|errors| TableSetError::Config { errors })?;
        Ok(TableSet::build(config))
    }

    /// The tables as `report::diff` takes them.
    pub fn named(&self) -> Vec<NamedTable<'_>> {
        self.items
            .iter()
            .map(|(n, b, t)| NamedTable {
                service: n,
                backends: b,
                table: t,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
services:
  - name: web
    hash_key: 6c8d0f1e2a3b4c5d6e7f8091a2b3c4d5
    seed: 0f1e2d3c4b5a69788796a5b4c3d2e1f0
    table_bits: 8
    binds: [{ vip: 10.100.0.1, proto: tcp, port: 80 }]
    backends: [{ name: b1, address: 10.0.0.21 }, { name: b2, address: 10.0.0.22 }]
";

    #[test]
    fn a_config_and_its_table_file_are_the_same_set() {
        let built = TableSet::from_bytes(Path::new("b.yaml"), TEXT.into()).unwrap();
        let config = Config::parse(Path::new("b.yaml"), TEXT).unwrap();
        let tables = table::build_all(&config);
        let file = format::write(&config.services, &tables);
        let read = TableSet::from_bytes(Path::new("t.bin"), file).unwrap();
        assert_eq!(built.items.len(), 1);
        assert_eq!(built.items[0].2.checksum, read.items[0].2.checksum);
        assert_eq!(built.items[0].1, read.items[0].1);
        let d = crate::report::diff(&built.named(), &read.named());
        assert_eq!(d.services[0].hop_list_changed, 0);
    }

    #[test]
    fn bad_bytes_say_what_they_are_not() {
        let e = TableSet::from_bytes(Path::new("x"), vec![0xff, 0xfe]).unwrap_err();
        assert_eq!(e.to_string(), "x is neither a table file nor UTF-8 text");
        let e = TableSet::from_bytes(Path::new("b.yaml"), b"services: 1\n".to_vec()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "1 error(s):\nb.yaml:1:11: `services` must be a list, found a scalar"
        );
        let mut file = format::MAGIC.to_vec();
        file.push(1);
        let e = TableSet::from_bytes(Path::new("t.bin"), file).unwrap_err();
        assert!(
            e.to_string().starts_with("reading tables from t.bin"),
            "{e}"
        );
    }
}
