//! The positioned document tree that both OSV encodings are read into before
//! [`super`] maps it onto typed advisories.
//!
//! JSON is read by a small recursive-descent parser here rather than by
//! serde_json, because serde_json does not say where a value was once it
//! has been parsed, and every error about an advisory (a missing `introduced`
//! event, a number where a version belongs) must name a line and column.
//! YAML is read from saphyr-parser's event stream, whose events carry spans.
//! Both produce the same [`Node`] tree, so the mapping and its error messages
//! are written once.
//!
//! The limits ([`super::MAX_DEPTH`], [`super::MAX_NODES`],
//! [`super::MAX_CONTAINER_LEN`], [`super::MAX_EXPANDED_BYTES`]) are checked
//! while the tree grows, so a hostile document is refused before it costs
//! more than a bounded amount of memory. The JSON parser recurses at most
//! `MAX_DEPTH` levels; the YAML builder keeps its own stack on the heap.
//!
//! YAML details:
//!
//! * Scalars are resolved with the YAML 1.2 core schema: `null`, `~` and the
//!   empty plain scalar are null, `true`/`false` (three spellings each) are
//!   booleans, and plain scalars that look like integers or floats are
//!   numbers. Unlike PyYAML (YAML 1.1), `yes`, `on` and unquoted timestamps
//!   stay strings. A number keeps its source text, so `fixed: 1.10` can still
//!   be read as the version "1.10" (see [`Value::Number`]).
//! * Tags are ignored except `!!str`, which makes a plain scalar a string.
//! * Aliases are expanded (by copying the anchored node), and every copy
//!   counts against the node and byte budgets, which is what stops a
//!   "billion laughs" document. An alias to a node that is still open (a
//!   recursive alias) is refused.
//! * Only one document is allowed per file, and mapping keys must be
//!   scalars. Duplicate keys are refused in both encodings, since two
//!   readers could otherwise disagree about which value counts.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, ScalarStyle, Tag};

use super::{MAX_CONTAINER_LEN, MAX_DEPTH, MAX_EXPANDED_BYTES, MAX_NODES};

/// Where a node or an error is in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Loc {
    /// A byte offset into the source (the JSON parser); line and column are
    /// computed only when an error needs them.
    Byte(usize),
    /// A 1-based line and column (in characters), as the YAML parser
    /// reports them.
    LineCol(u32, u32),
}

impl Loc {
    /// The 1-based line and column (counted in characters) of this location
    /// in `src`.
    pub(super) fn line_col(self, src: &str) -> (u32, u32) {
        match self {
            Loc::LineCol(l, c) => (l, c),
            Loc::Byte(at) => {
                let before = src.as_bytes().get(..at).unwrap_or(src.as_bytes());
                let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
                let start = before
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |p| p + 1);
                // Count characters, not bytes: skip UTF-8 continuation bytes.
                let col = before[start..]
                    .iter()
                    .filter(|&&b| (b & 0xC0) != 0x80)
                    .count()
                    + 1;
                (to_u32(line), to_u32(col))
            }
        }
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One value of the document and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Node {
    pub value: Value,
    pub loc: Loc,
}

/// A JSON-like value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Null,
    Bool(bool),
    /// A number, as its source text: JSON number syntax, or for YAML a
    /// plain scalar that the core schema reads as an integer or float
    /// (`0x1F`, `.inf` and `1.` included).
    Number(String),
    Str(String),
    Array(Vec<Node>),
    /// The members in document order, keys unique.
    Object(Vec<(String, Node)>),
}

impl Value {
    /// The kind of value, for "expected X, found Y" messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::Str(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

/// Why the document could not be read into a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TreeError {
    pub loc: Loc,
    pub reason: String,
}

fn fail<T>(loc: Loc, reason: impl Into<String>) -> Result<T, TreeError> {
    Err(TreeError {
        loc,
        reason: reason.into(),
    })
}

/// What the tree may still grow by: values and scalar bytes.
struct Budget {
    nodes: usize,
    bytes: usize,
}

impl Budget {
    fn new() -> Budget {
        Budget {
            nodes: MAX_NODES,
            bytes: MAX_EXPANDED_BYTES,
        }
    }

    fn take(&mut self, nodes: usize, bytes: usize, loc: Loc) -> Result<(), TreeError> {
        match (self.nodes.checked_sub(nodes), self.bytes.checked_sub(bytes)) {
            (Some(n), Some(b)) => {
                self.nodes = n;
                self.bytes = b;
                Ok(())
            }
            (None, _) => fail(loc, format!("document has more than {MAX_NODES} values")),
            (_, None) => fail(
                loc,
                format!("document expands to more than {MAX_EXPANDED_BYTES} bytes of text"),
            ),
        }
    }
}

/// Checks that the keys of an object are unique, returning the location of
/// the first repeated one. Sorting keeps this O(k log k) for huge objects.
fn check_unique_keys(entries: &[(String, Node)]) -> Result<(), TreeError> {
    if entries.len() < 2 {
        return Ok(());
    }
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_unstable_by(|&a, &b| entries[a].0.cmp(&entries[b].0).then(a.cmp(&b)));
    for w in order.windows(2) {
        if entries[w[0]].0 == entries[w[1]].0 {
            let (key, node) = &entries[w[1]];
            return fail(node.loc, format!("duplicate key {}", preview(key)));
        }
    }
    Ok(())
}

/// Renders at most a few characters of untrusted text for a message,
/// quoted and escaped.
pub(super) fn preview(s: &str) -> String {
    const MAX: usize = 40;
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push_str("...");
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

/// Parses one JSON document (RFC 8259; a leading UTF-8 byte order mark is
/// skipped) into a tree.
pub(super) fn parse_json(src: &str) -> Result<Node, TreeError> {
    let mut p = Json {
        src,
        b: src.as_bytes(),
        pos: 0,
        budget: Budget::new(),
    };
    if p.b.starts_with(b"\xEF\xBB\xBF") {
        p.pos = 3;
    }
    p.ws();
    let node = p.value(0)?;
    p.ws();
    if p.pos < p.b.len() {
        return fail(Loc::Byte(p.pos), "trailing characters after the document");
    }
    Ok(node)
}

struct Json<'a> {
    src: &'a str,
    b: &'a [u8],
    pos: usize,
    budget: Budget,
}

impl Json<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Describes what is at the current position, for error messages.
    fn found(&self) -> String {
        match self.src.get(self.pos..).and_then(|s| s.chars().next()) {
            None => "end of input".to_string(),
            Some(c) => format!("{:?}", c),
        }
    }

    fn here(&self) -> Loc {
        Loc::Byte(self.pos)
    }

    fn value(&mut self, depth: usize) -> Result<Node, TreeError> {
        let loc = self.here();
        self.budget.take(1, 0, loc)?;
        let value = match self.peek() {
            None => return fail(loc, "unexpected end of input, expected a value"),
            Some(b'{' | b'[') if depth >= MAX_DEPTH => {
                return fail(loc, format!("nested more than {MAX_DEPTH} levels deep"));
            }
            Some(b'{') => self.object(depth)?,
            Some(b'[') => self.array(depth)?,
            Some(b'"') => Value::Str(self.string()?),
            Some(b't') => self.literal("true", Value::Bool(true))?,
            Some(b'f') => self.literal("false", Value::Bool(false))?,
            Some(b'n') => self.literal("null", Value::Null)?,
            Some(b'-' | b'0'..=b'9') => self.number()?,
            Some(_) => return fail(loc, format!("expected a value, found {}", self.found())),
        };
        Ok(Node { value, loc })
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, TreeError> {
        if self.b[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            fail(
                self.here(),
                format!("expected a value, found {}", self.found()),
            )
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Value, TreeError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return fail(self.here(), "invalid number: expected a digit"),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return fail(self.here(), "invalid number: expected a digit after '.'");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return fail(
                    self.here(),
                    "invalid number: expected a digit in the exponent",
                );
            }
        }
        Ok(Value::Number(self.src[start..self.pos].to_string()))
    }

    fn hex4(&mut self) -> Result<u32, TreeError> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                _ => return fail(self.here(), "invalid \\u escape: expected 4 hex digits"),
            };
            v = v * 16 + u32::from(d);
            self.pos += 1;
        }
        Ok(v)
    }

    /// Reads a string starting at its opening quote.
    fn string(&mut self) -> Result<String, TreeError> {
        let open = self.here();
        self.pos += 1;
        let mut out = String::new();
        loop {
            // Copy the run of ordinary characters in one go. The stop bytes
            // are ASCII, so both ends are character boundaries.
            let start = self.pos;
            while let Some(c) = self.peek() {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(&self.src[start..self.pos]);
            match self.peek() {
                None => return fail(open, "unterminated string"),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let esc = self.here();
                    self.pos += 1;
                    let c = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            let hi = self.hex4()?;
                            let code = match hi {
                                0xD800..=0xDBFF => {
                                    if !self.b[self.pos..].starts_with(b"\\u") {
                                        return fail(esc, "lone leading surrogate in \\u escape");
                                    }
                                    self.pos += 2;
                                    let lo = self.hex4()?;
                                    if !(0xDC00..=0xDFFF).contains(&lo) {
                                        return fail(esc, "invalid surrogate pair in \\u escape");
                                    }
                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                }
                                0xDC00..=0xDFFF => {
                                    return fail(esc, "lone trailing surrogate in \\u escape");
                                }
                                v => v,
                            };
                            // Every value left is a valid scalar value.
                            out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                            continue;
                        }
                        _ => return fail(esc, "invalid escape"),
                    };
                    self.pos += 1;
                    out.push(c);
                }
                Some(_) => return fail(self.here(), "control character in string"),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, TreeError> {
        self.pos += 1;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            if items.len() == MAX_CONTAINER_LEN {
                return fail(
                    self.here(),
                    format!("array has more than {MAX_CONTAINER_LEN} elements"),
                );
            }
            items.push(self.value(depth + 1)?);
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => {
                    return fail(
                        self.here(),
                        format!("expected ',' or ']' in array, found {}", self.found()),
                    );
                }
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, TreeError> {
        self.pos += 1;
        let mut entries = Vec::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(entries));
        }
        loop {
            if self.peek() != Some(b'"') {
                return fail(
                    self.here(),
                    format!("expected a string key, found {}", self.found()),
                );
            }
            if entries.len() == MAX_CONTAINER_LEN {
                return fail(
                    self.here(),
                    format!("object has more than {MAX_CONTAINER_LEN} members"),
                );
            }
            let key = self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return fail(
                    self.here(),
                    format!("expected ':' after a key, found {}", self.found()),
                );
            }
            self.pos += 1;
            self.ws();
            let value = self.value(depth + 1)?;
            entries.push((key, value));
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    check_unique_keys(&entries)?;
                    return Ok(Value::Object(entries));
                }
                _ => {
                    return fail(
                        self.here(),
                        format!("expected ',' or '}}' in object, found {}", self.found()),
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// YAML
// ---------------------------------------------------------------------------

/// Parses one YAML document into a tree.
pub(super) fn parse_yaml(src: &str) -> Result<Node, TreeError> {
    let mut b = Yaml {
        stack: Vec::new(),
        anchors: HashMap::new(),
        budget: Budget::new(),
        root: None,
    };
    let mut documents = 0usize;
    for event in Parser::new_from_str(src) {
        let (event, span) = event.map_err(|e| TreeError {
            loc: Loc::LineCol(to_u32(e.marker().line()), to_u32(e.marker().col() + 1)),
            reason: format!("invalid YAML: {}", e.info()),
        })?;
        let loc = Loc::LineCol(to_u32(span.start.line()), to_u32(span.start.col() + 1));
        match event {
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return fail(loc, "more than one YAML document");
                }
            }
            Event::Alias(id) => {
                let Some(anchored) = b.anchors.get(&id) else {
                    return fail(
                        loc,
                        "alias to a node that is not complete (recursive alias)",
                    );
                };
                let (nodes, bytes) = (anchored.nodes, anchored.bytes);
                b.budget.take(nodes, bytes, loc)?;
                let mut node = anchored.node.clone();
                node.loc = loc;
                b.attach(node, nodes, bytes)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                let bytes = text.len();
                b.budget.take(1, bytes, loc)?;
                let value = scalar(text, style, tag.as_deref());
                b.finish(Node { value, loc }, anchor, 1, bytes)?;
            }
            Event::SequenceStart(anchor, _) => b.open(Open::Seq(Vec::new()), anchor, loc)?,
            Event::MappingStart(anchor, _) => b.open(
                Open::Map {
                    entries: Vec::new(),
                    key: None,
                    seen: HashSet::new(),
                },
                anchor,
                loc,
            )?,
            Event::SequenceEnd | Event::MappingEnd => b.close()?,
        }
    }
    match b.root {
        Some(node) => Ok(node),
        None => fail(Loc::LineCol(1, 1), "empty YAML document"),
    }
}

/// Resolves a scalar with the core schema (see the module docs).
fn scalar(text: Cow<'_, str>, style: ScalarStyle, tag: Option<&Tag>) -> Value {
    let forced_str = tag.is_some_and(|t| t.is_yaml_core_schema() && t.suffix == "str");
    if style != ScalarStyle::Plain || forced_str {
        return Value::Str(text.into_owned());
    }
    match &*text {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        t if is_yaml_number(t) => Value::Number(text.into_owned()),
        _ => Value::Str(text.into_owned()),
    }
}

/// Whether a plain scalar is an integer or float in the YAML 1.2 core
/// schema.
fn is_yaml_number(t: &str) -> bool {
    let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    if let Some(h) = t.strip_prefix("0x") {
        return digits(h, 16);
    }
    if let Some(o) = t.strip_prefix("0o") {
        return digits(o, 8);
    }
    if matches!(t, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let unsigned = t.strip_prefix(['-', '+']).unwrap_or(t);
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") {
        return true;
    }
    // [0-9]+(\.[0-9]*)? | \.[0-9]+, then an optional exponent.
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        None => digits(mantissa, 10),
        Some(("", frac)) => digits(frac, 10),
        Some((int, frac)) => digits(int, 10) && (frac.is_empty() || digits(frac, 10)),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e), 10));
    mantissa_ok && exponent_ok
}

/// A node that aliases may copy, with its cost.
struct Anchored {
    node: Node,
    nodes: usize,
    bytes: usize,
}

/// A collection being built.
enum Open {
    Seq(Vec<Node>),
    Map {
        entries: Vec<(String, Node)>,
        /// The key read, waiting for its value.
        key: Option<(String, Loc)>,
        seen: HashSet<String>,
    },
}

struct Frame {
    open: Open,
    anchor: usize,
    loc: Loc,
    /// What the collection has cost so far, itself included.
    nodes: usize,
    bytes: usize,
}

struct Yaml {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchored>,
    budget: Budget,
    root: Option<Node>,
}

impl Yaml {
    fn open(&mut self, open: Open, anchor: usize, loc: Loc) -> Result<(), TreeError> {
        if self.stack.len() >= MAX_DEPTH {
            return fail(loc, format!("nested more than {MAX_DEPTH} levels deep"));
        }
        self.budget.take(1, 0, loc)?;
        self.stack.push(Frame {
            open,
            anchor,
            loc,
            nodes: 1,
            bytes: 0,
        });
        Ok(())
    }

    fn close(&mut self) -> Result<(), TreeError> {
        let Some(frame) = self.stack.pop() else {
            return fail(Loc::LineCol(1, 1), "unbalanced YAML events");
        };
        let value = match frame.open {
            Open::Seq(items) => Value::Array(items),
            Open::Map { entries, key, .. } => {
                if let Some((_, loc)) = key {
                    // The parser always pairs keys with values; be safe.
                    return fail(loc, "mapping key without a value");
                }
                Value::Object(entries)
            }
        };
        let node = Node {
            value,
            loc: frame.loc,
        };
        self.finish(node, frame.anchor, frame.nodes, frame.bytes)
    }

    /// Registers a completed node under its anchor (copying it, which costs
    /// its size again) and attaches it to its parent.
    fn finish(
        &mut self,
        node: Node,
        anchor: usize,
        nodes: usize,
        bytes: usize,
    ) -> Result<(), TreeError> {
        if anchor != 0 {
            self.budget.take(nodes, bytes, node.loc)?;
            self.anchors.insert(
                anchor,
                Anchored {
                    node: node.clone(),
                    nodes,
                    bytes,
                },
            );
        }
        self.attach(node, nodes, bytes)
    }

    fn attach(&mut self, node: Node, nodes: usize, bytes: usize) -> Result<(), TreeError> {
        let Some(parent) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        parent.nodes = parent.nodes.saturating_add(nodes);
        parent.bytes = parent.bytes.saturating_add(bytes);
        match &mut parent.open {
            Open::Seq(items) => {
                if items.len() == MAX_CONTAINER_LEN {
                    return fail(
                        node.loc,
                        format!("sequence has more than {MAX_CONTAINER_LEN} elements"),
                    );
                }
                items.push(node);
            }
            Open::Map { entries, key, seen } => match key.take() {
                None => {
                    let text = match node.value {
                        Value::Str(s) | Value::Number(s) => s,
                        Value::Null => "null".to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Array(_) | Value::Object(_) => {
                            return fail(node.loc, "mapping keys must be scalars");
                        }
                    };
                    if entries.len() == MAX_CONTAINER_LEN {
                        return fail(
                            node.loc,
                            format!("mapping has more than {MAX_CONTAINER_LEN} keys"),
                        );
                    }
                    if !seen.insert(text.clone()) {
                        return fail(node.loc, format!("duplicate key {}", preview(&text)));
                    }
                    *key = Some((text, node.loc));
                }
                Some((k, _)) => entries.push((k, node)),
            },
        }
        Ok(())
    }
}
