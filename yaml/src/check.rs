//! [`Checker`]: walks a marked tree and records every error with its position.
//!
//! Each helper returns `None` after recording why, so a schema reads as a list of fields and
//! goes on past a bad one: the caller builds its value only when every part came back `Some`.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{hint, Errors, Located, Problem};
use crate::node::{self, Node, Pos};

/// Collects the errors of one file. `K` is the config's own error kind; it wraps [`Problem`]
/// for the errors every YAML config can have.
#[derive(Debug)]
pub struct Checker<'p, K> {
    path: &'p Path,
    errors: Vec<Located<K>>,
}

/// The fields of one mapping, looked up by name after unknown and duplicate keys were reported.
#[derive(Debug)]
pub struct Fields<'n> {
    /// The mapping itself (a missing field is reported at its start).
    pub map: &'n Node,
    /// Known keys present, to their values (the first occurrence of a repeated key).
    pub found: HashMap<&'n str, &'n Node>,
    /// Known keys present, to the key node.
    pub keys: HashMap<&'n str, &'n Node>,
    /// What the mapping is, for messages ("service", "the top level").
    pub context: &'static str,
}

impl<'n> Fields<'n> {
    /// The value of `name`, unless absent or written as an empty value (`~`, `null`, nothing).
    pub fn get(&self, name: &str) -> Option<&'n Node> {
        self.found.get(name).copied().filter(|n| !n.is_null())
    }

    /// Where the key `name` is written, or else where the mapping starts.
    pub fn key_pos(&self, name: &str) -> Pos {
        self.keys.get(name).map_or(self.map.start, |k| k.start)
    }
}

impl<'p, K: From<Problem>> Checker<'p, K> {
    /// A checker for the file at `path` (used in messages only).
    pub fn new(path: &'p Path) -> Self {
        Checker {
            path,
            errors: Vec::new(),
        }
    }

    /// Record an error at `pos`.
    pub fn err(&mut self, pos: Pos, kind: impl Into<K>) {
        self.errors.push(Located {
            path: self.path.to_path_buf(),
            line: pos.line,
            column: pos.column,
            kind: kind.into(),
        });
    }

    /// No error recorded so far.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }

    /// Everything recorded, in file order; `Ok` if nothing was.
    pub fn finish(mut self) -> Result<(), Errors<K>> {
        if self.errors.is_empty() {
            return Ok(());
        }
        // File order reads best; errors found by cross-checks come last otherwise.
        self.errors.sort_by_key(|e| (e.line, e.column));
        Err(Errors {
            errors: self.errors,
        })
    }

    /// The document's root node. `None` for an empty document (nothing but comments) and for a
    /// syntax error, which is recorded: tell the two apart with [`Checker::is_clean`].
    pub fn document(&mut self, text: &str) -> Option<Node> {
        match node::parse(text) {
            Ok(root) => root,
            Err(e) => {
                self.err(e.pos, Problem::Syntax(e.message));
                None
            }
        }
    }

    /// Check that `node` is a mapping with only `allowed` keys, each once; report the rest,
    /// with "did you mean" for a key close to an allowed one.
    pub fn fields<'n>(
        &mut self,
        node: &'n Node,
        allowed: &[&str],
        context: &'static str,
        what: &'static str,
    ) -> Option<Fields<'n>> {
        let Some(pairs) = node.as_map() else {
            self.err(
                node.start,
                Problem::NotAMapping {
                    what,
                    found: node.describe(),
                },
            );
            return None;
        };
        let mut found = HashMap::new();
        let mut keys = HashMap::new();
        for (k, val) in pairs {
            let Some(key) = k.as_scalar() else {
                self.err(
                    k.start,
                    Problem::WrongType {
                        field: "key".into(),
                        expected: "a field name",
                        found: k.describe(),
                    },
                );
                continue;
            };
            if !allowed.contains(&key) {
                self.err(
                    k.start,
                    Problem::UnknownField {
                        field: key.to_string(),
                        context,
                        expected: allowed.join(", "),
                        hint: hint(key, allowed),
                    },
                );
                continue;
            }
            // The first occurrence wins; the repeat is reported where it is.
            if found.contains_key(key) {
                self.err(
                    k.start,
                    Problem::DuplicateField {
                        field: key.to_string(),
                        context,
                    },
                );
            } else {
                found.insert(key, val);
                keys.insert(key, k);
            }
        }
        Some(Fields {
            map: node,
            found,
            keys,
            context,
        })
    }

    /// The value of field `name`, or a "missing field" error (at the empty value if the key is
    /// there without one, else at the start of the mapping).
    pub fn required<'n>(&mut self, f: &Fields<'n>, name: &str) -> Option<&'n Node> {
        let n = f.get(name);
        if n.is_none() {
            let pos = f.found.get(name).map(|n| n.start).unwrap_or(f.map.start);
            self.err(
                pos,
                Problem::MissingField {
                    field: name.to_string(),
                    context: f.context,
                },
            );
        }
        n
    }

    /// The text of a scalar, or "`field` must be `expected`".
    pub fn scalar<'n>(
        &mut self,
        n: &'n Node,
        field: &str,
        expected: &'static str,
    ) -> Option<&'n str> {
        let s = n.as_scalar();
        if s.is_none() {
            self.err(
                n.start,
                Problem::WrongType {
                    field: field.to_string(),
                    expected,
                    found: n.describe(),
                },
            );
        }
        s
    }

    /// The items of a list.
    pub fn seq<'n>(&mut self, n: &'n Node, field: &str) -> Option<&'n [Node]> {
        let s = n.as_seq();
        if s.is_none() {
            self.err(
                n.start,
                Problem::WrongType {
                    field: field.to_string(),
                    expected: "a list",
                    found: n.describe(),
                },
            );
        }
        s
    }

    /// A whole number in `min..=max` (decimal digits only: no sign, no octal or hex).
    pub fn uint<T>(&mut self, n: &Node, field: &str, min: T, max: T) -> Option<T>
    where
        T: Copy + Into<u64> + TryFrom<u64>,
    {
        let s = self.scalar(n, field, "a whole number")?;
        let t = s.trim();
        let v = (!t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()))
            .then(|| t.parse::<u64>().ok())
            .flatten()
            .filter(|v| (min.into()..=max.into()).contains(v))
            .and_then(|v| T::try_from(v).ok());
        if v.is_none() {
            self.err(
                n.start,
                Problem::NumberRange {
                    field: field.to_string(),
                    text: s.to_string(),
                    min: min.into(),
                    max: max.into(),
                },
            );
        }
        v
    }

    /// `true` or `false` (YAML 1.2: not `yes`/`no`/`on`/`off`).
    pub fn boolean(&mut self, n: &Node, field: &str) -> Option<bool> {
        let s = self.scalar(n, field, "true or false")?;
        let v = match s {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            _ => None,
        };
        if v.is_none() {
            self.err(
                n.start,
                Problem::NotABool {
                    field: field.to_string(),
                    text: s.to_string(),
                },
            );
        }
        v
    }

    /// One of `choices`, returned as its index.
    pub fn one_of(&mut self, n: &Node, field: &str, choices: &[&str]) -> Option<usize> {
        let s = self.scalar(n, field, "a word")?;
        let v = choices.iter().position(|c| *c == s);
        if v.is_none() {
            self.err(
                n.start,
                Problem::NotOneOf {
                    field: field.to_string(),
                    text: s.to_string(),
                    choices: choices.join(", "),
                    hint: hint(s, choices),
                },
            );
        }
        v
    }

    /// The scalars of a list, each with its node (for positions). An item that is not a
    /// scalar is reported and left out, so the caller still checks the others; `None` only if
    /// `n` is not a list. (A caller builds its value only when [`Checker::finish`] is `Ok`.)
    pub fn scalar_list<'n>(
        &mut self,
        n: &'n Node,
        field: &str,
        expected: &'static str,
    ) -> Option<Vec<(&'n str, &'n Node)>> {
        let items = self.seq(n, field)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            if let Some(s) = self.scalar(it, &format!("{field}[{i}]"), expected) {
                out.push((s, it));
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> String {
        let mut c: Checker<'_, Problem> = Checker::new(Path::new("t.yaml"));
        if let Some(root) = c.document(text) {
            if let Some(f) = c.fields(
                &root,
                &["port", "on", "mode", "name"],
                "the top level",
                "the file",
            ) {
                if let Some(p) = f.get("port") {
                    c.uint(p, "port", 1u16, 65535);
                }
                if let Some(p) = f.get("on") {
                    c.boolean(p, "on");
                }
                if let Some(p) = f.get("mode") {
                    c.one_of(p, "mode", &["auto", "native"]);
                }
                c.required(&f, "name");
            }
        }
        match c.finish() {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn every_error_is_reported_at_its_position_in_file_order() {
        let got = check("prot: 1\nport: 0x10\non: yes\nmode: nativ\nport: 2\n");
        assert_eq!(
            got,
            "t.yaml:1:1: unknown field `prot` in the top level; expected one of: port, on, mode, name (did you mean `port`?)\n\
             t.yaml:1:1: missing field `name` in the top level; add it\n\
             t.yaml:2:7: `port` must be a whole number from 1 to 65535, found `0x10`\n\
             t.yaml:3:5: `on` must be true or false, found `yes`\n\
             t.yaml:4:7: `mode` must be one of: auto, native; found `nativ` (did you mean `native`?)\n\
             t.yaml:5:1: field `port` appears twice in this the top level; keep one"
        );
    }

    #[test]
    fn good_values_and_an_empty_document_record_nothing() {
        assert_eq!(check("port: 80\non: false\nmode: auto\nname: x\n"), "");
        let mut c: Checker<'_, Problem> = Checker::new(Path::new("t.yaml"));
        assert!(c.document("# only a comment\n").is_none());
        assert!(c.is_clean());
        assert!(c.document("a: [1\n").is_none());
        assert!(!c.is_clean());
    }
}
