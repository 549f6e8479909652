//! A small pull reader for the XML that CycloneDX uses, written by hand
//! instead of pulling in an XML crate.
//!
//! CycloneDX XML needs only a sliver of XML 1.0: elements, attributes,
//! character data, CDATA sections, comments, processing instructions (the
//! `<?xml ...?>` declaration) and the five predefined entities plus numeric
//! character references. This reader handles exactly that, in one forward
//! pass over a `&str`, borrowing from the input wherever no entity has to be
//! decoded.
//!
//! What it refuses, and why:
//!
//! * **Document type declarations** (`<!DOCTYPE ...>`). A CycloneDX BOM never
//!   has one, and a DTD is where entity declarations live: the "billion
//!   laughs" document (ten entities that each expand to ten of the previous
//!   one) and external entities (`<!ENTITY x SYSTEM "file:///etc/passwd">`)
//!   both need it. Refusing the DTD outright means no entity is ever
//!   expanded, so expansion cannot blow up and nothing outside the input is
//!   ever read.
//! * **Undefined entities** (`&foo;`), which without a DTD can only be an
//!   error.
//! * Nesting deeper than [`MAX_XML_DEPTH`] and more than
//!   [`MAX_XML_ATTRIBUTES`] attributes on one element, so that the element
//!   stack and the attribute list stay small.
//! * Anything that is not well-formed in the ways that matter here:
//!   mismatched end tags, unterminated comments or CDATA sections, text or a
//!   second element after the root element.
//!
//! It does not check every production of the XML grammar (name characters
//! beyond the ASCII punctuation that ends a name, `--` inside comments,
//! duplicate attributes) and does not resolve namespaces: the CycloneDX
//! reader compares prefixes with the root element's itself. The input must
//! already be UTF-8 (the caller checks); an `encoding` in the XML
//! declaration is ignored.
//!
//! Every step moves forward through the input, so the reader runs in linear
//! time, and it allocates only for decoded text, the attribute list of the
//! current element and the stack of open element names.

use std::borrow::Cow;

use super::{MAX_XML_ATTRIBUTES, MAX_XML_DEPTH, SbomErrorKind, limit_msg, preview};

/// An error at a byte offset of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct XmlError {
    /// The byte offset the problem was found at.
    pub offset: usize,
    /// What kind of failure it was.
    pub kind: SbomErrorKind,
    /// A short explanation that quotes at most a few bytes of the input.
    pub reason: String,
}

fn err(offset: usize, reason: impl Into<String>) -> XmlError {
    XmlError {
        offset,
        kind: SbomErrorKind::Malformed,
        reason: reason.into(),
    }
}

/// One step of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Event<'a> {
    /// An element starts. A self-closing element (`<a/>`) yields a `Start`
    /// immediately followed by an `End`.
    Start(Start<'a>),
    /// The innermost open element ends.
    End,
    /// Character data or a CDATA section, with entities decoded. Text
    /// outside the root element is never reported (it must be whitespace).
    Text(Cow<'a, str>),
    /// The root element has ended and only whitespace, comments and
    /// processing instructions followed it.
    Eof,
}

/// A start tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Start<'a> {
    /// The qualified name, prefix included (`bom`, `cdx:bom`).
    pub name: &'a str,
    /// The attributes in document order, values decoded.
    pub attrs: Vec<(&'a str, Cow<'a, str>)>,
    /// The byte offset of the `<`.
    pub offset: usize,
}

impl<'a> Start<'a> {
    /// The value of the attribute with this qualified name, if present.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// Splits a qualified name into its prefix (if any) and local part.
pub(super) fn split_name(name: &str) -> (Option<&str>, &str) {
    match name.split_once(':') {
        Some((prefix, local)) => (Some(prefix), local),
        None => (None, name),
    }
}

/// The pull reader; see the module documentation.
pub(super) struct Reader<'a> {
    src: &'a str,
    pos: usize,
    /// The names of the open elements, innermost last.
    open: Vec<&'a str>,
    /// A self-closing tag was just reported; its `End` is due next.
    pending_end: bool,
    /// The root element has been opened (and maybe closed).
    seen_root: bool,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `src`.
    pub fn new(src: &'a str) -> Reader<'a> {
        Reader {
            src,
            pos: 0,
            open: Vec::new(),
            pending_end: false,
            seen_root: false,
        }
    }

    /// The byte offset the reader has reached, for errors raised by callers.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Reads the next event.
    pub fn next_event(&mut self) -> Result<Event<'a>, XmlError> {
        if self.pending_end {
            self.pending_end = false;
            self.open.pop();
            return Ok(Event::End);
        }
        loop {
            let rest = &self.src[self.pos..];
            if rest.is_empty() {
                return match self.open.last() {
                    Some(name) => Err(err(
                        self.pos,
                        format!(
                            "unexpected end of input inside <{}>",
                            preview(name.as_bytes())
                        ),
                    )),
                    None if !self.seen_root => Err(err(self.pos, "no root element")),
                    None => Ok(Event::Eof),
                };
            }
            if let Some(after) = rest.strip_prefix('<') {
                let start = self.pos;
                if after.starts_with('?') {
                    self.pos = self.find_end(start, "?>", "processing instruction")?;
                } else if after.starts_with("!--") {
                    self.pos = self.find_end(start + 4, "-->", "comment")?;
                } else if after.starts_with("![CDATA[") {
                    if self.open.is_empty() {
                        return Err(err(start, "CDATA section outside the root element"));
                    }
                    let body = start + "<![CDATA[".len();
                    let end = self.find_end(body, "]]>", "CDATA section")?;
                    self.pos = end;
                    return Ok(Event::Text(Cow::Borrowed(&self.src[body..end - 3])));
                } else if after.starts_with("!DOCTYPE") {
                    return Err(XmlError {
                        offset: start,
                        kind: SbomErrorKind::Unsupported,
                        reason: "document type declarations (<!DOCTYPE>) are not accepted: \
                                 CycloneDX needs none and they are how entity bombs and \
                                 external entities get in"
                            .into(),
                    });
                } else if after.starts_with('!') {
                    return Err(err(start, "unknown markup declaration"));
                } else if after.starts_with('/') {
                    return self.end_tag(start);
                } else {
                    return self.start_tag(start);
                }
            } else {
                let len = rest.find('<').unwrap_or(rest.len());
                let raw = &rest[..len];
                let at = self.pos;
                self.pos += len;
                if self.open.is_empty() {
                    if let Some(i) = raw.find(|c: char| !c.is_ascii_whitespace()) {
                        let what = if self.seen_root { "after" } else { "before" };
                        return Err(err(at + i, format!("text {what} the root element")));
                    }
                    continue;
                }
                return Ok(Event::Text(decode(raw, at)?));
            }
        }
    }

    /// Consumes the rest of the element whose `Start` was just read,
    /// including its `End`.
    pub fn skip_element(&mut self) -> Result<(), XmlError> {
        let mut level = 1usize;
        loop {
            match self.next_event()? {
                Event::Start(_) => level += 1,
                Event::End => {
                    level -= 1;
                    if level == 0 {
                        return Ok(());
                    }
                }
                Event::Text(_) => {}
                // Unreachable while an element is open, but harmless.
                Event::Eof => return Ok(()),
            }
        }
    }

    /// Reads the text content of the element whose `Start` was just read,
    /// through its `End`, trimmed. Text inside child elements is ignored.
    /// More than `max` bytes of text is an error of kind
    /// [`SbomErrorKind::Limit`].
    pub fn read_text(&mut self, max: usize) -> Result<String, XmlError> {
        let mut out = String::new();
        let mut level = 1usize;
        loop {
            match self.next_event()? {
                Event::Start(_) => level += 1,
                Event::End => {
                    level -= 1;
                    if level == 0 {
                        let trimmed = out.trim();
                        return Ok(if trimmed.len() == out.len() {
                            out
                        } else {
                            trimmed.to_owned()
                        });
                    }
                }
                Event::Text(t) if level == 1 => {
                    if out.len() + t.len() > max {
                        return Err(XmlError {
                            offset: self.pos,
                            kind: SbomErrorKind::Limit,
                            reason: limit_msg(format_args!("text longer than {max} bytes")),
                        });
                    }
                    out.push_str(&t);
                }
                Event::Text(_) => {}
                Event::Eof => return Ok(out),
            }
        }
    }

    /// Finds `terminator` at or after `from` and returns the offset just
    /// past it.
    fn find_end(&self, from: usize, terminator: &str, what: &str) -> Result<usize, XmlError> {
        let from = from.min(self.src.len());
        match self.src[from..].find(terminator) {
            Some(i) => Ok(from + i + terminator.len()),
            None => Err(err(from, format!("unterminated {what}"))),
        }
    }

    /// Reads a name at the current position.
    fn name(&mut self) -> Result<&'a str, XmlError> {
        let rest = &self.src[self.pos..];
        let len = rest
            .find(|c: char| {
                c.is_ascii_whitespace() || matches!(c, '/' | '>' | '=' | '<' | '"' | '\'' | '&')
            })
            .unwrap_or(rest.len());
        let name = &rest[..len];
        let valid_first = name
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_' || c == ':');
        if !valid_first {
            return Err(err(
                self.pos,
                format!("expected a name, found `{}`", preview(rest.as_bytes())),
            ));
        }
        self.pos += len;
        Ok(name)
    }

    fn skip_ws(&mut self) {
        let rest = &self.src[self.pos..];
        self.pos += rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_whitespace())
                .len();
    }

    fn start_tag(&mut self, start: usize) -> Result<Event<'a>, XmlError> {
        if self.open.is_empty() && self.seen_root {
            return Err(err(start, "a second element after the root element"));
        }
        if self.open.len() >= MAX_XML_DEPTH {
            return Err(XmlError {
                offset: start,
                kind: SbomErrorKind::Limit,
                reason: limit_msg(format_args!("elements nested deeper than {MAX_XML_DEPTH}")),
            });
        }
        self.pos = start + 1;
        let name = self.name()?;
        let mut attrs = Vec::new();
        loop {
            let before_ws = self.pos;
            self.skip_ws();
            let rest = &self.src[self.pos..];
            if rest.starts_with("/>") {
                self.pos += 2;
                self.pending_end = true;
                break;
            }
            if rest.starts_with('>') {
                self.pos += 1;
                break;
            }
            if rest.is_empty() {
                return Err(err(start, "unterminated start tag"));
            }
            if self.pos == before_ws {
                return Err(err(self.pos, "expected whitespace between attributes"));
            }
            if attrs.len() >= MAX_XML_ATTRIBUTES {
                return Err(XmlError {
                    offset: self.pos,
                    kind: SbomErrorKind::Limit,
                    reason: limit_msg(format_args!(
                        "more than {MAX_XML_ATTRIBUTES} attributes on one element"
                    )),
                });
            }
            let attr_name = self.name()?;
            self.skip_ws();
            if !self.src[self.pos..].starts_with('=') {
                return Err(err(self.pos, "expected `=` after an attribute name"));
            }
            self.pos += 1;
            self.skip_ws();
            let quote = match self.src[self.pos..].chars().next() {
                Some(q @ ('"' | '\'')) => q,
                _ => return Err(err(self.pos, "expected a quoted attribute value")),
            };
            let value_start = self.pos + 1;
            let Some(len) = self.src[value_start..].find(quote) else {
                return Err(err(self.pos, "unterminated attribute value"));
            };
            let raw = &self.src[value_start..value_start + len];
            if let Some(i) = raw.find('<') {
                return Err(err(value_start + i, "`<` in an attribute value"));
            }
            attrs.push((attr_name, decode(raw, value_start)?));
            self.pos = value_start + len + 1;
        }
        self.open.push(name);
        self.seen_root = true;
        Ok(Event::Start(Start {
            name,
            attrs,
            offset: start,
        }))
    }

    fn end_tag(&mut self, start: usize) -> Result<Event<'a>, XmlError> {
        self.pos = start + 2;
        let name = self.name()?;
        self.skip_ws();
        if !self.src[self.pos..].starts_with('>') {
            return Err(err(self.pos, "expected `>` to close an end tag"));
        }
        self.pos += 1;
        match self.open.pop() {
            Some(open) if open == name => Ok(Event::End),
            Some(open) => Err(err(
                start,
                format!(
                    "end tag </{}> does not match <{}>",
                    preview(name.as_bytes()),
                    preview(open.as_bytes())
                ),
            )),
            None => Err(err(start, "end tag without a start tag")),
        }
    }
}

/// Decodes the predefined entities and character references in `raw`,
/// which starts at byte `at` of the input (for error offsets).
fn decode(raw: &str, at: usize) -> Result<Cow<'_, str>, XmlError> {
    let Some(first) = raw.find('&') else {
        return Ok(Cow::Borrowed(raw));
    };
    let mut out = String::with_capacity(raw.len());
    out.push_str(&raw[..first]);
    let mut rest = &raw[first..];
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let offset = at + (raw.len() - rest.len()) + amp;
        let after = &rest[amp + 1..];
        // Entity names and character references are short; looking no
        // further than this keeps a stray `&` in a huge text cheap.
        let Some(semi) = after.bytes().take(16).position(|b| b == b';') else {
            return Err(err(offset, "`&` that does not start an entity reference"));
        };
        let entity = &after[..semi];
        let ch = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "apos" => '\'',
            "quot" => '"',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse::<u32>().ok()
                } else {
                    return Err(err(
                        offset,
                        format!("undefined entity &{};", preview(entity.as_bytes())),
                    ));
                };
                match code.and_then(char::from_u32) {
                    Some(c) if c != '\0' => c,
                    _ => {
                        return Err(err(
                            offset,
                            format!(
                                "invalid character reference &{};",
                                preview(entity.as_bytes())
                            ),
                        ));
                    }
                }
            }
        };
        out.push(ch);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(src: &str) -> Result<Vec<String>, XmlError> {
        let mut r = Reader::new(src);
        let mut out = Vec::new();
        loop {
            match r.next_event()? {
                Event::Start(s) => {
                    let attrs: Vec<String> =
                        s.attrs.iter().map(|(n, v)| format!("{n}={v}")).collect();
                    out.push(format!("<{}{}>", s.name, attrs.join(",")));
                }
                Event::End => out.push("/".into()),
                Event::Text(t) => out.push(t.into_owned()),
                Event::Eof => return Ok(out),
            }
        }
    }

    #[test]
    fn reads_elements_attributes_text_and_cdata() {
        // A byte order mark is the caller's business (it strips one).
        assert!(events("\u{feff}<a/>").is_err());
        let got = events(
            "<?xml version=\"1.0\"?>\n<!-- c --><a x='1 &amp; 2' y=\"&#x41;&#66;\">t&lt;u<b/>\
             <![CDATA[<raw&>]]></a>\n",
        )
        .unwrap();
        assert_eq!(got, ["<ax=1 & 2,y=AB>", "t<u", "<b>", "/", "<raw&>", "/"]);
    }

    #[test]
    fn rejects_malformed_documents() {
        for (src, want) in [
            ("", "no root element"),
            ("<a>", "unexpected end of input"),
            ("<a></b>", "does not match"),
            ("<a/><b/>", "second element"),
            ("x<a/>", "text before"),
            ("<a/>x", "text after"),
            ("<a>&foo;</a>", "undefined entity"),
            ("<a>&#0;</a>", "invalid character reference"),
            ("<a>a & b</a>", "does not start an entity"),
            ("<a x=1/>", "quoted attribute value"),
            ("<a x='1'y='2'/>", "whitespace between attributes"),
            ("<a><!-- </a>", "unterminated comment"),
            ("<a><![CDATA[ </a>", "unterminated CDATA"),
            ("<a x='<'/>", "`<` in an attribute value"),
            ("<1/>", "expected a name"),
            ("<a", "unterminated start tag"),
        ] {
            let e = events(src).unwrap_err();
            assert!(e.reason.contains(want), "{src:?}: {e:?}");
        }
    }

    #[test]
    fn refuses_doctype_so_entities_never_expand() {
        let e = events("<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>").unwrap_err();
        assert_eq!(e.kind, SbomErrorKind::Unsupported);
        assert_eq!(e.offset, 0);
    }

    #[test]
    fn depth_and_attribute_caps() {
        let deep = "<a>".repeat(MAX_XML_DEPTH + 1);
        let e = events(&deep).unwrap_err();
        assert_eq!(e.kind, SbomErrorKind::Limit);
        assert_eq!(e.offset, 3 * MAX_XML_DEPTH);
        let attrs: String = (0..=MAX_XML_ATTRIBUTES)
            .map(|i| format!(" a{i}='x'"))
            .collect();
        let e = events(&format!("<a{attrs}/>")).unwrap_err();
        assert_eq!(e.kind, SbomErrorKind::Limit);
    }

    #[test]
    fn read_text_and_skip() {
        let mut r = Reader::new("<a><b> x <c>ignored</c>y </b><d><e/></d></a>");
        assert!(matches!(r.next_event().unwrap(), Event::Start(_)));
        assert!(matches!(r.next_event().unwrap(), Event::Start(_)));
        assert_eq!(r.read_text(100).unwrap(), "x y");
        assert!(matches!(r.next_event().unwrap(), Event::Start(_)));
        r.skip_element().unwrap();
        assert_eq!(r.next_event().unwrap(), Event::End);
        assert_eq!(r.next_event().unwrap(), Event::Eof);
        let mut r = Reader::new("<a>0123456789</a>");
        r.next_event().unwrap();
        assert_eq!(r.read_text(9).unwrap_err().kind, SbomErrorKind::Limit);
    }

    #[test]
    fn multibyte_text_near_ampersands() {
        assert!(events("<a>&ééééééééééééééé</a>").is_err());
        assert_eq!(events("<a>é&amp;é</a>").unwrap(), ["<a>", "é&é", "/"]);
    }
}
