//! In-place edits of `backends.yaml` for `tablegen drain|fill|activate|deactivate|weight`.
//!
//! The operator's file is theirs: comments, ordering, quoting and layout must survive. So an
//! edit is a text splice at byte offsets taken from the marked YAML tree, touching only the
//! one backend's `state:` or `weight:` value (or adding that key to the backend's flow mapping,
//! or as one new line in its block mapping). The result is validated as a whole config before
//! the caller writes it, so an edit can never leave an invalid file behind.
//!
//! Must not do: I/O (the binary reads, and writes atomically).

use std::path::Path;

use crate::config::{Config, ConfigErrors, State};
use yaml::Node;

/// What to change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    State(State),
    Weight(u32),
}

/// Why an edit was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("the config has errors; fix them before editing:\n{0}")]
    Invalid(ConfigErrors),
    #[error("no backend `{0}` in any service")]
    NoBackend(String),
    #[error("no backend `{backend}` in service `{service}`")]
    NoBackendInService { backend: String, service: String },
    #[error("no service `{0}`")]
    NoService(String),
    #[error("backend `{backend}` is in several services ({services}); say which with --service")]
    Ambiguous { backend: String, services: String },
    #[error("cannot make `{backend}` {state}: {already} already in transition in service `{service}`, and hops: {hops} allows at most {limit} backend(s) filling or draining at once; finish that transition first (`tablegen activate NAME` or `tablegen deactivate NAME`)")]
    Transition {
        backend: String,
        state: State,
        service: String,
        already: String,
        hops: u8,
        limit: u8,
    },
    #[error(
        "weight must be from 1 to {}; to take a backend out use `tablegen deactivate`",
        crate::config::WEIGHT_MAX
    )]
    BadWeight,
    #[error("backend `{backend}` at line {line}: {why}; edit the file by hand")]
    Unsupported {
        backend: String,
        line: usize,
        why: &'static str,
    },
    #[error("the edited config does not validate (this is a tablegen bug):\n{0}")]
    Result(ConfigErrors),
}

/// The outcome of a successful edit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edited {
    /// The whole new file text (equal to the input when nothing had to change).
    pub text: String,
    pub service: String,
    pub backend: String,
    /// 1-based line that changed or was added.
    pub line: usize,
    pub changed: bool,
}

/// Apply `change` to backend `backend` (in `service`, required when the name is ambiguous).
pub fn apply(
    path: &Path,
    text: &str,
    service: Option<&str>,
    backend: &str,
    change: Change,
) -> Result<Edited, EditError> {
    if let Change::Weight(w) = change {
        if !(1..=crate::config::WEIGHT_MAX).contains(&w) {
            return Err(EditError::BadWeight);
        }
    }
    let config = match Config::parse(path, text) {
        Ok(c) => c,
        Err(errors) => return repair(path, text, service, backend, change, errors),
    };
    let svc = match service {
        Some(name) => {
            let s = config
                .service(name)
                .ok_or_else(|| EditError::NoService(name.to_string()))?;
            if s.backend_index(backend).is_none() {
                return Err(EditError::NoBackendInService {
                    backend: backend.to_string(),
                    service: name.to_string(),
                });
            }
            s
        }
        None => {
            let found: Vec<_> = config
                .services
                .iter()
                .filter(|s| s.backend_index(backend).is_some())
                .collect();
            match found[..] {
                [] => return Err(EditError::NoBackend(backend.to_string())),
                [s] => s,
                _ => {
                    return Err(EditError::Ambiguous {
                        backend: backend.to_string(),
                        services: found
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
                }
            }
        }
    };
    let current = &svc.backends[svc.backend_index(backend).unwrap()];
    if let Change::State(st) = change {
        if st.in_transition() && !current.state.in_transition() {
            let others: Vec<String> = svc
                .backends
                .iter()
                .filter(|b| b.name != backend && b.state.in_transition())
                .map(|b| format!("`{}` ({})", b.name, b.state))
                .collect();
            let limit = svc.hops - 1;
            if others.len() >= usize::from(limit) {
                let verb = if others.len() == 1 { "is" } else { "are" };
                return Err(EditError::Transition {
                    backend: backend.to_string(),
                    state: st,
                    service: svc.name.clone(),
                    already: format!("{} {verb}", others.join(", ")),
                    hops: svc.hops,
                    limit,
                });
            }
        }
    }
    let unchanged = match change {
        Change::State(st) => current.state == st,
        Change::Weight(w) => current.weight == w,
    };

    // Locate the backend's mapping in the marked tree (the config parsed, so the shape holds).
    let root = yaml::parse(text)
        .ok()
        .flatten()
        .expect("validated config parses");
    let node = find_backend(&root, &svc.name, backend).expect("validated backend is in the tree");
    if unchanged {
        return Ok(Edited {
            text: text.to_string(),
            service: svc.name.clone(),
            backend: backend.to_string(),
            line: node.start.line,
            changed: false,
        });
    }
    let (key, value) = match change {
        Change::State(st) => ("state", st.as_str().to_string()),
        Change::Weight(w) => ("weight", w.to_string()),
    };
    let (new_text, line) =
        splice(text, node, key, &value).map_err(|why| EditError::Unsupported {
            backend: backend.to_string(),
            line: node.start.line,
            why,
        })?;
    Config::parse(path, &new_text).map_err(EditError::Result)?;
    Ok(Edited {
        text: new_text,
        service: svc.name.clone(),
        backend: backend.to_string(),
        line,
        changed: true,
    })
}

/// The file is invalid already. The edit may be the fix (say, `activate` on one of two
/// backends draining at once), so apply it to the tree and accept the result only if the whole
/// file then validates; otherwise report the file's own errors.
fn repair(
    path: &Path,
    text: &str,
    service: Option<&str>,
    backend: &str,
    change: Change,
    errors: ConfigErrors,
) -> Result<Edited, EditError> {
    let invalid = || EditError::Invalid(errors.clone());
    let root = yaml::parse(text).ok().flatten().ok_or_else(invalid)?;
    let name_of = |n: &Node| get(n, "name").and_then(Node::as_scalar).map(str::to_string);
    let hits: Vec<(String, &Node)> = get(&root, "services")
        .and_then(Node::as_seq)
        .unwrap_or(&[])
        .iter()
        .filter_map(|s| Some((name_of(s)?, s)))
        .filter(|(n, _)| service.is_none_or(|want| want == n))
        .filter_map(|(n, s)| Some((n, find_in_service(s, backend)?)))
        .collect();
    let (svc, node) = match &hits[..] {
        [] => return Err(invalid()),
        [one] => one,
        many => {
            return Err(EditError::Ambiguous {
                backend: backend.to_string(),
                services: many
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    };
    let (key, value) = match change {
        Change::State(st) => ("state", st.as_str().to_string()),
        Change::Weight(w) => ("weight", w.to_string()),
    };
    let (new_text, line) = splice(text, node, key, &value).map_err(|_| invalid())?;
    Config::parse(path, &new_text).map_err(|_| invalid())?;
    Ok(Edited {
        changed: new_text != text,
        text: new_text,
        service: svc.clone(),
        backend: backend.to_string(),
        line,
    })
}

fn get<'n>(map: &'n Node, key: &str) -> Option<&'n Node> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_scalar() == Some(key))
        .map(|(_, v)| v)
}

fn find_backend<'n>(root: &'n Node, service: &str, backend: &str) -> Option<&'n Node> {
    let svc = get(root, "services")?
        .as_seq()?
        .iter()
        .find(|s| get(s, "name").and_then(Node::as_scalar) == Some(service))?;
    find_in_service(svc, backend)
}

fn find_in_service<'n>(svc: &'n Node, backend: &str) -> Option<&'n Node> {
    get(svc, "backends")?
        .as_seq()?
        .iter()
        .find(|b| get(b, "name").and_then(Node::as_scalar) == Some(backend))
}

/// End (byte offset) of the scalar that starts at `start`: a quoted scalar ends after its
/// closing quote; a plain one before a comment, the line end, or (in flow style) `,` / `}`.
fn scalar_end(text: &str, start: usize, flow: bool) -> Result<usize, &'static str> {
    let bytes = text.as_bytes();
    match bytes.get(start) {
        Some(b'"') => {
            let mut i = start + 1;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' => i += 2,
                    b'"' => return Ok(i + 1),
                    b'\n' => return Err("a quoted value spans lines"),
                    _ => i += 1,
                }
            }
            Err("unterminated quoted value")
        }
        Some(b'\'') => {
            let mut i = start + 1;
            while i < bytes.len() {
                match bytes[i] {
                    b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
                    b'\'' => return Ok(i + 1),
                    b'\n' => return Err("a quoted value spans lines"),
                    _ => i += 1,
                }
            }
            Err("unterminated quoted value")
        }
        Some(_) => {
            let mut i = start;
            while i < bytes.len() {
                let c = bytes[i];
                if c == b'\n' || c == b'\r' || (flow && (c == b',' || c == b'}' || c == b']')) {
                    break;
                }
                if c == b'#' && i > start && matches!(bytes[i - 1], b' ' | b'\t') {
                    break;
                }
                i += 1;
            }
            while i > start && matches!(bytes[i - 1], b' ' | b'\t') {
                i -= 1;
            }
            Ok(i)
        }
        None => Err("the value is missing"),
    }
}

/// Set `key: value` in the mapping `node`; returns the new text and the changed line.
fn splice(
    text: &str,
    node: &Node,
    key: &str,
    value: &str,
) -> Result<(String, usize), &'static str> {
    let e = splice_edit(text, node, key, value)?;
    let mut out = String::with_capacity(text.len() + e.with.len());
    out.push_str(&text[..e.start]);
    out.push_str(&e.with);
    out.push_str(&text[e.end..]);
    Ok((out, e.line))
}

/// One replacement of `text[start..end]` by `with`; `line` is the line that changed or was
/// added.
struct Splice {
    start: usize,
    end: usize,
    with: String,
    line: usize,
}

/// What [`splice`] changes, without copying the text (so many edits cost one copy).
fn splice_edit(text: &str, node: &Node, key: &str, value: &str) -> Result<Splice, &'static str> {
    let flow = node.is_flow(text);
    let pairs = node.as_map().ok_or("not a mapping")?;
    if let Some((start, end)) = value_span(text, node, key)? {
        let line = pairs
            .iter()
            .find(|(k, _)| k.as_scalar() == Some(key))
            .map_or(node.start.line, |(_, v)| v.start.line);
        return Ok(Splice {
            start,
            end,
            with: value.to_string(),
            line,
        });
    }
    if flow {
        // Before the closing brace, after the last non-blank character: `{ a: 1 }` ->
        // `{ a: 1, key: value }`.
        let close = node.end.offset;
        if text.as_bytes().get(close) != Some(&b'}') {
            return Err("cannot find the closing `}` of the backend");
        }
        let head = text[..close].trim_end_matches([' ', '\t']);
        let at = head.len();
        let sep = if head.ends_with(',') || head.ends_with('{') {
            " "
        } else {
            ", "
        };
        Ok(Splice {
            start: at,
            end: at,
            with: format!("{sep}{key}: {value}"),
            line: node.end.line,
        })
    } else {
        // A new line after the last field's line, indented like the fields.
        let (first_key, _) = pairs.first().ok_or("empty mapping")?;
        let (_, last_val) = pairs.last().unwrap();
        if last_val.as_scalar().is_none() {
            return Err("the last field is not a plain value");
        }
        let indent = first_key.start.column - 1;
        let line_end = text[last_val.start.offset..]
            .find('\n')
            .map(|i| last_val.start.offset + i + 1);
        let at = line_end.unwrap_or(text.len());
        // Keep the file's line endings (this line's, or the file's when it is the last line).
        let crlf = match line_end {
            Some(e) => text[..e].ends_with("\r\n"),
            None => text.contains("\r\n"),
        };
        let eol = if crlf { "\r\n" } else { "\n" };
        let mut with = String::new();
        if line_end.is_none() {
            with.push_str(eol);
        }
        with.push_str(&" ".repeat(indent));
        with.push_str(&format!("{key}: {value}{eol}"));
        Ok(Splice {
            start: at,
            end: at,
            with,
            line: last_val.start.line + 1,
        })
    }
}

/// Byte range of the scalar value of `key` in the mapping `node`, if the key is there.
fn value_span(text: &str, node: &Node, key: &str) -> Result<Option<(usize, usize)>, &'static str> {
    let flow = node.is_flow(text);
    let pairs = node.as_map().ok_or("not a mapping")?;
    let Some((_, v)) = pairs.iter().find(|(k, _)| k.as_scalar() == Some(key)) else {
        return Ok(None);
    };
    if v.is_null() {
        return Err("the field has no value");
    }
    let start = v.start.offset;
    Ok(Some((start, scalar_end(text, start, flow)?)))
}

/// Set many backends' weights at once (the load controller's edit): one parse, one splice per
/// backend, one validation of the result. `weights`: (service, backend, weight). A backend
/// whose weight is already right is left as it is. Same promises as [`apply`]: only the
/// weights change, the rest of the text stays byte for byte.
pub fn set_weights(
    path: &Path,
    text: &str,
    weights: &[(&str, &str, u32)],
) -> Result<String, EditError> {
    if weights
        .iter()
        .any(|(_, _, w)| !(1..=crate::config::WEIGHT_MAX).contains(w))
    {
        return Err(EditError::BadWeight);
    }
    let config = Config::parse(path, text).map_err(EditError::Invalid)?;
    let root = yaml::parse(text)
        .ok()
        .flatten()
        .expect("validated config parses");
    // (start, end, replacement), applied from the end of the text so offsets stay true.
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for &(service, backend, weight) in weights {
        let svc = config
            .service(service)
            .ok_or_else(|| EditError::NoService(service.to_string()))?;
        let idx = svc
            .backend_index(backend)
            .ok_or_else(|| EditError::NoBackendInService {
                backend: backend.to_string(),
                service: service.to_string(),
            })?;
        if svc.backends[idx].weight == weight {
            continue;
        }
        let node = find_backend(&root, service, backend).expect("validated backend is in the tree");
        let unsupported = |why| EditError::Unsupported {
            backend: backend.to_string(),
            line: node.start.line,
            why,
        };
        let e = splice_edit(text, node, "weight", &weight.to_string()).map_err(unsupported)?;
        edits.push((e.start, e.end, e.with));
    }
    edits.sort_by_key(|e| e.0);
    let mut out = String::with_capacity(text.len() + 16 * edits.len());
    let mut at = 0;
    for (start, end, with) in edits {
        out.push_str(&text[at..start]);
        out.push_str(&with);
        at = end;
    }
    out.push_str(&text[at..]);
    Config::parse(path, &out).map_err(EditError::Result)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# head comment
services:
  - name: web   # the web pool
    hash_key: 6c8d0f1e2a3b4c5d6e7f8091a2b3c4d5
    seed: 0f1e2d3c4b5a69788796a5b4c3d2e1f0
    binds:
      - { vip: 10.100.0.1, proto: tcp, port: 80 }
    backends:
      - { name: b1, address: 10.0.0.21 }     # rack 1
      - { name: b2, address: 10.0.0.22, state: \"filling\" }
      - name: b3
        address: 10.0.0.23
        weight: 2 # big box
      - name: b4
        address: 10.0.0.24
";

    fn edit(b: &str, c: Change) -> Result<Edited, EditError> {
        apply(Path::new("x.yaml"), FILE, None, b, c)
    }

    fn changed_lines(a: &str, b: &str) -> Vec<String> {
        let al: Vec<&str> = a.lines().collect();
        b.lines()
            .filter(|l| !al.contains(l))
            .map(String::from)
            .collect()
    }

    #[test]
    fn adds_state_to_a_flow_mapping() {
        let e = edit("b1", Change::State(State::Inactive)).unwrap();
        assert_eq!(
            changed_lines(FILE, &e.text),
            ["      - { name: b1, address: 10.0.0.21, state: inactive }     # rack 1"]
        );
        assert_eq!(e.text.lines().count(), FILE.lines().count());
    }

    #[test]
    fn replaces_a_quoted_state() {
        let e = edit("b2", Change::State(State::Active)).unwrap();
        assert_eq!(
            changed_lines(FILE, &e.text),
            ["      - { name: b2, address: 10.0.0.22, state: active }"]
        );
    }

    #[test]
    fn block_mappings_get_a_line_or_a_changed_value() {
        let e = edit("b3", Change::Weight(5)).unwrap();
        assert_eq!(
            changed_lines(FILE, &e.text),
            ["        weight: 5 # big box"]
        );
        let e = edit("b4", Change::Weight(3)).unwrap();
        assert_eq!(changed_lines(FILE, &e.text), ["        weight: 3"]);
        assert!(e
            .text
            .ends_with("        address: 10.0.0.24\n        weight: 3\n"));
    }

    #[test]
    fn crlf_files_keep_crlf() {
        let crlf = FILE.replace('\n', "\r\n");
        let e = apply(Path::new("x"), &crlf, None, "b4", Change::Weight(3)).unwrap();
        assert_eq!(
            e.text,
            crlf.replace("10.0.0.24\r\n", "10.0.0.24\r\n        weight: 3\r\n")
        );
        let e = apply(Path::new("x"), &crlf, None, "b3", Change::Weight(4)).unwrap();
        assert_eq!(
            e.text,
            crlf.replace("weight: 2 # big box", "weight: 4 # big box")
        );
    }

    #[test]
    fn refuses_a_second_transition_naming_the_first() {
        let e = edit("b1", Change::State(State::Draining)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("`b2` (filling) is already in transition"),
            "{msg}"
        );
    }

    #[test]
    fn an_edit_that_fixes_an_invalid_file_is_allowed() {
        let two = FILE.replace(
            "address: 10.0.0.21 }",
            "address: 10.0.0.21, state: draining }",
        );
        assert!(Config::parse(Path::new("x"), &two).is_err());
        let e = apply(
            Path::new("x"),
            &two,
            None,
            "b2",
            Change::State(State::Active),
        )
        .unwrap();
        assert!(e.changed);
        Config::parse(Path::new("x"), &e.text).unwrap();
        // An edit that leaves it invalid reports the file's errors.
        let err = apply(Path::new("x"), &two, None, "b3", Change::Weight(4)).unwrap_err();
        assert!(err.to_string().contains("already in transition"), "{err}");
    }

    #[test]
    fn unknown_backend_is_an_error() {
        assert_eq!(
            edit("zz", Change::State(State::Active)),
            Err(EditError::NoBackend("zz".into()))
        );
    }
    #[test]
    fn sets_many_weights_in_one_edit() {
        let out = set_weights(
            Path::new("x.yaml"),
            FILE,
            &[
                ("web", "b1", 700),
                ("web", "b3", 2000),
                ("web", "b4", 1000),
                ("web", "b2", 1),
            ],
        )
        .unwrap();
        assert_eq!(
            changed_lines(FILE, &out),
            [
                "      - { name: b1, address: 10.0.0.21, weight: 700 }     # rack 1",
                "        weight: 2000 # big box",
                "        weight: 1000",
            ]
        );
        // b2 already had weight 1 (the default): untouched; everything else byte for byte.
        assert_eq!(out.lines().count(), FILE.lines().count() + 1);
        let c = Config::parse(Path::new("x.yaml"), &out).unwrap();
        let w: Vec<u32> = c.services[0].backends.iter().map(|b| b.weight).collect();
        assert_eq!(w, [700, 1, 2000, 1000]);
        assert_eq!(
            set_weights(Path::new("x.yaml"), FILE, &[("web", "nope", 2)]),
            Err(EditError::NoBackendInService {
                backend: "nope".into(),
                service: "web".into()
            })
        );
        assert_eq!(
            set_weights(Path::new("x.yaml"), FILE, &[("web", "b1", 0)]),
            Err(EditError::BadWeight)
        );
    }
}
