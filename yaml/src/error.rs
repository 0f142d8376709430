//! The errors every YAML config can have, and how one is located and printed.
//!
//! A config crate defines its own error kind for what only it knows (a bad port range, a
//! duplicate backend) and wraps [`Problem`] for the rest, so every message of every config
//! reads the same way: `file:line:col: what is wrong; how to fix it`.

use std::fmt;
use std::path::PathBuf;

/// What can be wrong with any YAML config, whatever its schema. Each message says how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("YAML syntax error: {0}")]
    Syntax(String),
    #[error("unknown field `{field}` in {context}; expected one of: {expected}{hint}")]
    UnknownField {
        field: String,
        context: &'static str,
        /// The allowed fields, comma-separated.
        expected: String,
        /// ` (did you mean `x`?)` or empty.
        hint: String,
    },
    #[error("field `{field}` appears twice in this {context}; keep one")]
    DuplicateField {
        field: String,
        context: &'static str,
    },
    #[error("missing field `{field}` in {context}; add it")]
    MissingField {
        field: String,
        context: &'static str,
    },
    #[error("{what} must be a mapping (`key: value` fields), found {found}")]
    NotAMapping {
        what: &'static str,
        found: &'static str,
    },
    #[error("`{field}` must be {expected}, found {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("`{field}` must be a whole number from {min} to {max}, found `{text}`")]
    NumberRange {
        field: String,
        text: String,
        min: u64,
        max: u64,
    },
    #[error("`{field}` must be true or false, found `{text}`")]
    NotABool { field: String, text: String },
    #[error("`{field}` must be one of: {choices}; found `{text}`{hint}")]
    NotOneOf {
        field: String,
        text: String,
        /// The allowed values, comma-separated.
        choices: String,
        hint: String,
    },
}

/// One error at a position in a file: displays as `file:line:col: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located<K> {
    /// The file as the caller named it (messages only).
    pub path: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub kind: K,
}

impl<K: fmt::Display> fmt::Display for Located<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.kind
        )
    }
}

impl<K: fmt::Display + fmt::Debug> std::error::Error for Located<K> {}

/// Every error found in one file, in file order. Displays one `file:line:col: message` per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Errors<K> {
    pub errors: Vec<Located<K>>,
}

impl<K: fmt::Display> fmt::Display for Errors<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl<K: fmt::Display + fmt::Debug> std::error::Error for Errors<K> {}

/// The closest of `known` to `word`, if it is close enough to be a typo (at most two edits;
/// ties go to the first in alphabetical order, so the hint is stable).
pub fn did_you_mean<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (strsim::levenshtein(word, k), *k))
        .min()
        .filter(|(d, _)| *d <= 2)
        .map(|(_, k)| k)
}

/// ` (did you mean `x`?)` for [`Problem::UnknownField`] and [`Problem::NotOneOf`], or "".
pub fn hint(word: &str, known: &[&str]) -> String {
    did_you_mean(word, known)
        .map(|k| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_the_nearest_key_and_strangers_none() {
        let known = ["gue_port", "interfaces", "xdp_mode"];
        assert_eq!(did_you_mean("gue_prot", &known), Some("gue_port"));
        assert_eq!(did_you_mean("interface", &known), Some("interfaces"));
        assert_eq!(did_you_mean("source_v4", &known), None);
        assert_eq!(hint("xdp_mod", &known), " (did you mean `xdp_mode`?)");
        assert_eq!(hint("zzz", &known), "");
    }

    #[test]
    fn errors_print_one_position_per_line() {
        let at = |line, kind| Located {
            path: "d.yaml".into(),
            line,
            column: 3,
            kind,
        };
        let e = Errors {
            errors: vec![
                at(1, Problem::Syntax("x".into())),
                at(
                    4,
                    Problem::NotABool {
                        field: "publish".into(),
                        text: "yes".into(),
                    },
                ),
            ],
        };
        assert_eq!(
            e.to_string(),
            "d.yaml:1:3: YAML syntax error: x\nd.yaml:4:3: `publish` must be true or false, found `yes`"
        );
    }
}
