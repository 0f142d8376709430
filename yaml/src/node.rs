//! A YAML document as a tree of nodes that remember where they came from.
//!
//! A config check needs a line and column for every semantic error (a duplicate address is
//! valid YAML, so a serde deserializer would never point at it), and tablegen's in-place edits
//! need byte offsets to change one backend's line without touching the rest of the file.
//! yaml-rust2's event parser reports a marker for every event, so this module builds a small
//! marked tree from those events. Scalars stay untyped strings: the config decides what each
//! field's text means, which also keeps YAML 1.1 surprises (`no` -> false, `0777` -> octal) out
//! of every schema.
//!
//! Must not do: I/O, or any interpretation of field names (that is the caller's job).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in the source text. `line` and `column` are 1-based (column counted in
/// characters, as editors do); `offset` is a byte offset into the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
    pub offset: usize,
}

/// One node of the document.
#[derive(Clone, Debug)]
pub struct Node {
    pub kind: NodeKind,
    /// Where the node starts (for a scalar: its first character, quote included).
    pub start: Pos,
    /// For collections: where the parser saw the end event. For a flow collection this is the
    /// closing bracket; for a block collection it is wherever the next token starts.
    pub end: Pos,
}

#[derive(Clone, Debug)]
pub enum NodeKind {
    /// Text and whether it was plain (unquoted, so `~`/`null`/empty mean "no value").
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Key/value pairs in source order (duplicates are kept; `config` reports them).
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            NodeKind::Seq(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_scalar(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A plain `~`, `null` or empty scalar: YAML's "no value".
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { text, plain: true }
            if text.is_empty() || text == "~" || text == "null" || text == "Null" || text == "NULL")
    }

    /// What kind of node this is, for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar { .. } if self.is_null() => "an empty value",
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// Whether the collection was written in flow style (`{ ... }` / `[ ... ]`).
    pub fn is_flow(&self, text: &str) -> bool {
        matches!(
            text.as_bytes().get(self.start.offset),
            Some(b'{') | Some(b'[')
        )
    }
}

/// A YAML syntax error, with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Maps yaml-rust2 markers (character index, 1-based line, 0-based column) to `Pos`.
struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset of the start of each line (line 1 at index 0).
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, line_starts }
    }

    fn pos(&self, m: &Marker) -> Pos {
        let line = m.line().max(1);
        let start = self
            .line_starts
            .get(line - 1)
            .copied()
            .unwrap_or(self.text.len());
        // The column counts characters, not bytes: walk the line to find the byte offset so that
        // a non-ASCII comment earlier in the file cannot shift an edit.
        let rest = &self.text[start..];
        let offset = start
            + rest
                .char_indices()
                .nth(m.col())
                .map(|(i, _)| i)
                .unwrap_or(rest.len());
        Pos {
            line,
            column: m.col() + 1,
            offset,
        }
    }
}

enum Frame {
    Seq(Pos, Vec<Node>, usize),
    Map(Pos, Vec<(Node, Node)>, Option<Node>, usize),
}

struct Builder<'a> {
    index: LineIndex<'a>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    /// Documents seen; a config is exactly one document.
    docs: usize,
    extra_doc: Option<Pos>,
}

impl Builder<'_> {
    fn push_node(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            Some(Frame::Seq(_, items, _)) => items.push(node),
            Some(Frame::Map(_, pairs, key, _)) => match key.take() {
                Some(k) => pairs.push((k, node)),
                None => *key = Some(node),
            },
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
        }
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = self.index.pos(&mark);
        match ev {
            Event::DocumentStart => {
                self.docs += 1;
                if self.docs > 1 && self.extra_doc.is_none() {
                    self.extra_doc = Some(pos);
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == TScalarStyle::Plain;
                let node = Node {
                    kind: NodeKind::Scalar { text, plain },
                    start: pos,
                    end: pos,
                };
                self.push_node(node, anchor);
            }
            Event::Alias(id) => {
                // An alias is a copy of the anchored node; positions stay those of the anchor,
                // which is where an error in the shared value has to be fixed.
                let node = self.anchors.get(&id).cloned().unwrap_or(Node {
                    kind: NodeKind::Scalar {
                        text: String::new(),
                        plain: true,
                    },
                    start: pos,
                    end: pos,
                });
                self.push_node(node, 0);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq(pos, Vec::new(), anchor)),
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(pos, Vec::new(), None, anchor))
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq(start, items, a)) => (
                        Node {
                            kind: NodeKind::Seq(items),
                            start,
                            end: pos,
                        },
                        a,
                    ),
                    Some(Frame::Map(start, pairs, _, a)) => {
                        // yaml-rust2 marks a block mapping where it recognised it (at the first
                        // `:`); the mapping really starts at its first key.
                        let start = pairs.first().map_or(start, |(k, _)| k.start.min(start));
                        (
                            Node {
                                kind: NodeKind::Map(pairs),
                                start,
                                end: pos,
                            },
                            a,
                        )
                    }
                    None => return,
                };
                self.push_node(node, anchor);
            }
            _ => {}
        }
    }
}

/// Parse one YAML document into a marked tree. An empty document gives `Ok(None)`.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut b = Builder {
        index: LineIndex::new(text),
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        docs: 0,
        extra_doc: None,
    };
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut b, true) {
        return Err(SyntaxError {
            pos: b.index.pos(e.marker()),
            message: e.info().to_string(),
        });
    }
    if let Some(pos) = b.extra_doc {
        return Err(SyntaxError {
            pos,
            message: "a second YAML document; the config is exactly one document (remove the `---` line and what follows, or merge it)".into(),
        });
    }
    Ok(b.root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_byte_offsets_are_exact() {
        let text = "# é comment\na:\n  - { x: 1, y: \"two\" }\n";
        let root = parse(text).unwrap().unwrap();
        let (k, v) = &root.as_map().unwrap()[0];
        assert_eq!((k.start.line, k.start.column), (2, 1));
        let item = &v.as_seq().unwrap()[0];
        assert_eq!((item.start.line, item.start.column), (3, 5));
        assert_eq!(&text[item.start.offset..item.start.offset + 1], "{");
        assert!(item.is_flow(text));
        let (_, y) = &item.as_map().unwrap()[1];
        assert_eq!(&text[y.start.offset..y.start.offset + 5], "\"two\"");
        assert_eq!(&text[item.end.offset..item.end.offset + 1], "}");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.line >= 1, "{e:?}");
    }

    #[test]
    fn aliases_copy_the_anchored_node() {
        let root = parse("a: &x { k: v }\nb: *x\n").unwrap().unwrap();
        let m = root.as_map().unwrap();
        assert_eq!(m[1].1.as_map().unwrap()[0].1.as_scalar(), Some("v"));
    }
}
