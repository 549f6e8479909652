//! SBOMs pushed for an image digest: one model for CycloneDX and SPDX, format
//! detection, and the "pulled in by" chains of the dependency graph.
//!
//! `patchgap sbom push --image sha256:... FILE` hands the collector a
//! document that some scanner (trivy, syft, cyclonedx-py, ...) wrote about an
//! image. Its components become *declared* evidence for every workload that
//! runs that digest, and its dependency graph says through which chain a
//! component came in. [`Sbom::parse`] reads any of:
//!
//! * CycloneDX JSON (`"bomFormat": "CycloneDX"`, spec 1.x; tested with 1.4,
//!   1.5, 1.6 and 1.7) and CycloneDX XML (root `<bom>` in the
//!   `http://cyclonedx.org/schema/bom/1.x` namespace), in `cyclonedx.rs`;
//! * SPDX 2.x JSON (`"spdxVersion": "SPDX-2.3"`) and tag-value (a first tag
//!   `SPDXVersion:`), in `spdx.rs`.
//!
//! The format is found from the content, never from the file name (which
//! only names the file in errors). SPDX 3 (JSON-LD), SPDX RDF/XML and YAML
//! are recognised and refused as unsupported.
//!
//! # The model
//!
//! Both formats map onto [`Sbom`]: a list of [`Component`]s, the edges of
//! the dependency graph between their ids, and the root (the document's
//! subject). The mapping is deliberately the same for both, so the same scan
//! written in either format gives the same components:
//!
//! * `components` holds every component the document names, *including the
//!   root*: CycloneDX's `metadata.component` (and the components nested in
//!   it) is a component like the others, just as SPDX's described package
//!   is one of its `packages`. Nested CycloneDX components
//!   (`components[].components`) are flattened in document pre-order.
//!   Components without a purl (an operating system, a Go main module) are
//!   kept, and so are components without an id.
//! * `edges` are `(from, to)` pairs meaning "`from` brings in `to`":
//!   CycloneDX `dependencies[].dependsOn`; SPDX `DEPENDS_ON` and `CONTAINS`
//!   as written and `DEPENDENCY_OF`, `RUNTIME_DEPENDENCY_OF` and
//!   `CONTAINED_BY` reversed. Other SPDX relationship types (dev, build and
//!   test dependencies, `OTHER`, `GENERATED_FROM`, ...) say nothing about
//!   what is inside the image and are ignored. Edges whose ends are not both
//!   components (SPDX packages `CONTAINS` files; typos) and self-loops are
//!   dropped and counted in [`Sbom::dropped_edges`]; repeated edges are
//!   kept once.
//! * `root` is CycloneDX's `metadata.component` or the package that the
//!   SPDX document `DESCRIBES` (the first one, if it describes several).
//!
//! # Hostile input
//!
//! An SBOM comes from whoever pushes it, so the parsers treat it as hostile.
//! The input is capped at [`MAX_INPUT_BYTES`] before any work; the counts
//! that could otherwise grow faster than the input are capped
//! ([`MAX_COMPONENTS`], [`MAX_EDGES`], [`MAX_LIST_ITEMS`]), and so is every
//! string that is kept ([`MAX_FIELD_LEN`]). Exceeding a cap rejects the
//! whole document with [`SbomErrorKind::Limit`] rather than silently keeping
//! part of it, because an operator pushing an SBOM should learn that it was
//! not taken. JSON nesting is bounded by serde_json's recursion limit (128)
//! and XML nesting by [`MAX_XML_DEPTH`]. The XML reader refuses DTDs, so no
//! entity is ever expanded (see `xml.rs`). Every parser runs in linear time
//! (JSON is read twice: a probe that keeps two strings, then the parse).
//! Memory is bounded by the input plus the caps: a 64 MiB document of empty
//! components or of edges peaks at about 150 MB, input included. Errors name
//! the file, the position (line and column for JSON and XML, counted in
//! bytes from 1; the line for tag-value) and the reason, quoting at most a
//! few bytes of the input.

mod cyclonedx;
pub mod records;
mod spdx;
mod xml;

use std::{
    borrow::Cow,
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet, VecDeque},
    fmt,
    sync::Arc,
};

use serde::{Deserialize, Deserializer, de};

/// The largest document accepted, in bytes. Real image SBOMs are a few MiB
/// (trivy's full Debian 12 rootfs scan is 1.3 MiB); this leaves room for
/// very large images while keeping a hostile push cheap.
pub const MAX_INPUT_BYTES: usize = 64 << 20;

/// The most components one document may hold, nested and root included.
pub const MAX_COMPONENTS: usize = 500_000;

/// The most dependency edges one document may hold, counted as read (before
/// dangling and repeated edges are dropped).
pub const MAX_EDGES: usize = 2_000_000;

/// The longest string that is kept (ids, names, versions, purls, CPEs,
/// licences, tool names, header fields), in bytes. Strings that are not
/// kept (descriptions, licence texts, hashes) are not limited beyond the
/// input size.
pub const MAX_FIELD_LEN: usize = 16 << 10;

/// The most items in a small list that is kept: the licences of one
/// component, its external references, the tools or creators of a document.
pub const MAX_LIST_ITEMS: usize = 1024;

/// The deepest element nesting accepted in XML (serde_json's default
/// recursion limit bounds JSON the same way).
pub const MAX_XML_DEPTH: usize = 128;

/// The most attributes accepted on one XML element.
pub const MAX_XML_ATTRIBUTES: usize = 64;

/// The most chains [`Sbom::pulled_in_by`] returns.
pub const MAX_CHAINS: usize = 4;

/// The longest chain [`Sbom::pulled_in_by`] considers, in components.
pub const MAX_CHAIN_LEN: usize = 64;

/// How many ancestors of a component [`Sbom::pulled_in_by`] visits at most
/// before it stops looking further up the graph.
pub const MAX_CHAIN_VISITS: usize = 100_000;

/// How many partial chains [`Sbom::pulled_in_by`] explores at most while
/// ranking chains by length.
pub const MAX_CHAIN_STATES: usize = 20_000;

/// The SBOM standard a document follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SbomFormat {
    /// OWASP CycloneDX.
    CycloneDx,
    /// SPDX (ISO/IEC 5962).
    Spdx,
}

impl SbomFormat {
    /// `"cyclonedx"` or `"spdx"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SbomFormat::CycloneDx => "cyclonedx",
            SbomFormat::Spdx => "spdx",
        }
    }
}

/// How the document was written down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SbomSyntax {
    /// JSON (both formats).
    Json,
    /// XML (CycloneDX).
    Xml,
    /// `Tag: value` lines (SPDX).
    TagValue,
}

/// A tool that produced the document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tool {
    /// Its name, e.g. `trivy`.
    pub name: String,
    /// Its version, e.g. `0.76.0`. SPDX writes `Tool: syft-1.18.1`; the
    /// version is split off at the last `-` or space that is followed by a
    /// digit.
    pub version: Option<String>,
}

/// What kind of thing a component is: CycloneDX's `type`, SPDX's
/// `primaryPackagePurpose`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ComponentKind {
    /// `application` / `APPLICATION`.
    Application,
    /// `framework` / `FRAMEWORK`.
    Framework,
    /// `library` / `LIBRARY`.
    Library,
    /// `container` / `CONTAINER`.
    Container,
    /// `platform` (CycloneDX).
    Platform,
    /// `operating-system` / `OPERATING-SYSTEM`.
    OperatingSystem,
    /// `device` / `DEVICE`.
    Device,
    /// `device-driver` (CycloneDX).
    DeviceDriver,
    /// `firmware` / `FIRMWARE`.
    Firmware,
    /// `file` / `FILE`.
    File,
    /// `machine-learning-model` (CycloneDX).
    MachineLearningModel,
    /// `data` (CycloneDX).
    Data,
    /// `cryptographic-asset` (CycloneDX).
    CryptographicAsset,
    /// `SOURCE` (SPDX).
    Source,
    /// `ARCHIVE` (SPDX).
    Archive,
    /// `INSTALL` (SPDX).
    Install,
    /// `OTHER`, or a value this parser does not know.
    Other,
    /// Not given (SPDX's purpose is optional; syft omits it).
    Unspecified,
}

impl ComponentKind {
    /// Maps a CycloneDX `type` or SPDX purpose, case-insensitively and with
    /// `_` read as `-`.
    fn parse(value: &str) -> ComponentKind {
        let v = value.trim().to_ascii_lowercase().replace('_', "-");
        match v.as_str() {
            "application" => ComponentKind::Application,
            "framework" => ComponentKind::Framework,
            "library" => ComponentKind::Library,
            "container" => ComponentKind::Container,
            "platform" => ComponentKind::Platform,
            "operating-system" => ComponentKind::OperatingSystem,
            "device" => ComponentKind::Device,
            "device-driver" => ComponentKind::DeviceDriver,
            "firmware" => ComponentKind::Firmware,
            "file" => ComponentKind::File,
            "machine-learning-model" => ComponentKind::MachineLearningModel,
            "data" => ComponentKind::Data,
            "cryptographic-asset" => ComponentKind::CryptographicAsset,
            "source" => ComponentKind::Source,
            "archive" => ComponentKind::Archive,
            "install" => ComponentKind::Install,
            "" => ComponentKind::Unspecified,
            _ => ComponentKind::Other,
        }
    }

    /// The CycloneDX spelling (lower case with `-`), `other` or
    /// `unspecified`.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::Application => "application",
            ComponentKind::Framework => "framework",
            ComponentKind::Library => "library",
            ComponentKind::Container => "container",
            ComponentKind::Platform => "platform",
            ComponentKind::OperatingSystem => "operating-system",
            ComponentKind::Device => "device",
            ComponentKind::DeviceDriver => "device-driver",
            ComponentKind::Firmware => "firmware",
            ComponentKind::File => "file",
            ComponentKind::MachineLearningModel => "machine-learning-model",
            ComponentKind::Data => "data",
            ComponentKind::CryptographicAsset => "cryptographic-asset",
            ComponentKind::Source => "source",
            ComponentKind::Archive => "archive",
            ComponentKind::Install => "install",
            ComponentKind::Other => "other",
            ComponentKind::Unspecified => "unspecified",
        }
    }
}

/// One component (CycloneDX) or package (SPDX).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// The CycloneDX `bom-ref` or the SPDX `SPDXID`. Both are optional in
    /// practice (a hand-written CycloneDX BOM often has no `bom-ref`); a
    /// component without an id takes no part in the graph.
    pub id: Option<Arc<str>>,
    /// The name, as written (may be empty if the document omits it).
    pub name: String,
    /// The version, if any (`version`, `versionInfo`, `PackageVersion`).
    pub version: Option<String>,
    /// CycloneDX's `group` (a Maven group id, an npm scope); SPDX has none.
    pub group: Option<String>,
    /// The package URL as written (the first one for SPDX, which may list
    /// several `purl` external references). Not validated here; parse it
    /// with `patchgap_proto::purl::Purl::parse`.
    pub purl: Option<String>,
    /// What kind of component it is.
    pub kind: ComponentKind,
    /// A CPE (CycloneDX's `cpe`; SPDX's first `cpe23Type` or `cpe22Type`
    /// reference).
    pub cpe: Option<String>,
    /// Licence ids, names or expressions as written; `NOASSERTION` and
    /// `NONE` are left out. SPDX gives the declared licence, then the
    /// concluded one if it differs.
    pub licenses: Vec<String>,
    /// The OS source package, where the tool records it (trivy's
    /// `aquasecurity:trivy:SrcName` property); distro advisories name
    /// source packages.
    pub source: Option<String>,
}

impl Component {
    fn empty() -> Component {
        Component {
            id: None,
            name: String::new(),
            version: None,
            group: None,
            purl: None,
            kind: ComponentKind::Unspecified,
            cpe: None,
            licenses: Vec::new(),
            source: None,
        }
    }
}

/// A parsed SBOM; see the module documentation for how both formats map
/// onto it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sbom {
    /// CycloneDX or SPDX.
    pub format: SbomFormat,
    /// JSON, XML or tag-value.
    pub syntax: SbomSyntax,
    /// The specification version as written: `1.6` (CycloneDX), `SPDX-2.3`.
    pub spec_version: String,
    /// CycloneDX's `serialNumber` or SPDX's `documentNamespace`.
    pub serial: Option<String>,
    /// When the document was made (`metadata.timestamp`,
    /// `creationInfo.created`), as written.
    pub created: Option<String>,
    /// The tools that made it.
    pub tools: Vec<Tool>,
    /// Every component, root included, in document order.
    pub components: Vec<Component>,
    /// `(from, to)`: `from` brings in `to`. Both ends are ids of components.
    pub edges: Vec<(Arc<str>, Arc<str>)>,
    /// The id of the document's subject, if it names one that is a
    /// component.
    pub root: Option<Arc<str>>,
    /// Edges dropped because an end is not a component, or both ends are
    /// the same.
    pub dropped_edges: usize,
    /// Components whose id repeats an earlier one's. They are kept, but the
    /// id refers to the first.
    pub duplicate_ids: usize,
}

/// Where in the input an error was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The line, from 1.
    pub line: usize,
    /// The column in bytes, from 1; `None` for tag-value, whose errors are
    /// about whole lines.
    pub column: Option<usize>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(column) => write!(f, "{}:{column}", self.line),
            None => write!(f, "{}", self.line),
        }
    }
}

/// What went wrong, for callers that react differently (a CLI exit code, a
/// gRPC status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SbomErrorKind {
    /// The input is larger than [`MAX_INPUT_BYTES`].
    TooLarge,
    /// The input is not UTF-8.
    Encoding,
    /// The input is not CycloneDX or SPDX.
    UnknownFormat,
    /// A recognised format or feature that is not supported (SPDX 3,
    /// RDF/XML, YAML, an XML DTD, a CycloneDX major version other than 1).
    Unsupported,
    /// A syntax error, a truncated document, a value of the wrong type, a
    /// missing required field.
    Malformed,
    /// One of the caps documented on this module was exceeded.
    Limit,
}

/// Why a document was rejected. The message reads
/// `FILE:LINE:COLUMN: REASON` (or `FILE:LINE: REASON`, `FILE: REASON`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {reason}", .position.map(|p| format!(":{p}")).unwrap_or_default())]
pub struct SbomError {
    /// The file name the caller passed in.
    pub file: String,
    /// Where, if the problem has a place.
    pub position: Option<Position>,
    /// What kind of problem it is.
    pub kind: SbomErrorKind,
    /// A short explanation; it quotes at most a few bytes of the input.
    pub reason: String,
}

impl SbomError {
    fn new(file: &str, position: Option<Position>, kind: SbomErrorKind, reason: String) -> Self {
        SbomError {
            file: file.to_owned(),
            position,
            kind,
            reason,
        }
    }

    /// An error at byte `offset` of `text`, with line and column.
    fn at_offset(
        file: &str,
        text: &str,
        offset: usize,
        kind: SbomErrorKind,
        reason: String,
    ) -> Self {
        let (line, column) = line_col(text.as_bytes(), offset);
        SbomError::new(
            file,
            Some(Position {
                line,
                column: Some(column),
            }),
            kind,
            reason,
        )
    }

    /// Maps a serde_json error, which carries its own line and column.
    fn from_json(file: &str, e: &serde_json::Error) -> Self {
        let full = e.to_string();
        // serde_json appends " at line L column C"; the position is kept
        // separately, so strip it from the reason.
        let reason = match full.rfind(" at line ") {
            Some(i) if e.line() > 0 => &full[..i],
            _ => full.as_str(),
        };
        let kind = if reason.starts_with(LIMIT_PREFIX) {
            SbomErrorKind::Limit
        } else {
            SbomErrorKind::Malformed
        };
        let position = (e.line() > 0).then(|| Position {
            line: e.line(),
            column: Some(e.column().max(1)),
        });
        SbomError::new(file, position, kind, clip(reason))
    }
}

/// Every cap-exceeded message starts with this, so that JSON errors (which
/// pass through serde as plain strings) can be told apart.
const LIMIT_PREFIX: &str = "limit exceeded: ";

fn limit_msg(what: impl fmt::Display) -> String {
    format!("{LIMIT_PREFIX}{what}")
}

/// Shortens a message to one line of at most about 200 characters. serde
/// quotes whole offending strings ("invalid type: string \"...\""), which
/// may be megabytes of the input.
fn clip(s: &str) -> String {
    const MAX: usize = 200;
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Renders at most a few bytes of input for an error message, escaped.
fn preview(bytes: &[u8]) -> String {
    const MAX: usize = 24;
    let shown = &bytes[..bytes.len().min(MAX)];
    let mut out = shown.escape_ascii().to_string();
    if bytes.len() > MAX {
        out.push_str("...");
    }
    out
}

/// The 1-based line and byte column of `offset` in `bytes`.
fn line_col(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    (line, before.len() - line_start + 1)
}

impl Sbom {
    /// Detects the format of `bytes` and parses it. `file_name` is used
    /// only in errors.
    pub fn parse(bytes: &[u8], file_name: &str) -> Result<Sbom, SbomError> {
        if bytes.len() > MAX_INPUT_BYTES {
            return Err(SbomError::new(
                file_name,
                None,
                SbomErrorKind::TooLarge,
                format!(
                    "{} bytes is more than the {MAX_INPUT_BYTES} accepted",
                    bytes.len()
                ),
            ));
        }
        if bytes.starts_with(&[0x1f, 0x8b]) {
            return Err(SbomError::new(
                file_name,
                None,
                SbomErrorKind::Unsupported,
                "the file is gzip-compressed; decompress it first".into(),
            ));
        }
        if bytes.starts_with(&[0xfe, 0xff]) || bytes.starts_with(&[0xff, 0xfe]) {
            return Err(SbomError::new(
                file_name,
                None,
                SbomErrorKind::Encoding,
                "UTF-16 is not supported; re-encode the file as UTF-8".into(),
            ));
        }
        let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let at = e.valid_up_to();
                return Err(SbomError::at_offset(
                    file_name,
                    // Only the valid prefix is needed to count lines.
                    std::str::from_utf8(&bytes[..at]).unwrap_or_default(),
                    at,
                    SbomErrorKind::Encoding,
                    format!(
                        "invalid UTF-8 starting with `{}`",
                        preview(&bytes[at..(at + 4).min(bytes.len())])
                    ),
                ));
            }
        };
        let start = text.trim_start();
        if start.starts_with('{') {
            parse_json(text, file_name)
        } else if start.starts_with('<') {
            cyclonedx::parse_xml(text, file_name)
        } else if spdx::looks_like_tag_value(text) {
            spdx::parse_tag_value(text, file_name)
        } else {
            let hint = if start.starts_with("---")
                || start.starts_with("spdxVersion:")
                || start.starts_with("bomFormat:")
            {
                " (YAML SBOMs are not supported)"
            } else {
                ""
            };
            let kind = if hint.is_empty() {
                SbomErrorKind::UnknownFormat
            } else {
                SbomErrorKind::Unsupported
            };
            let offset = text.len() - start.len();
            Err(SbomError::at_offset(
                file_name,
                text,
                offset,
                kind,
                format!(
                    "not CycloneDX JSON or XML, nor SPDX JSON or tag-value: starts with `{}`{hint}",
                    preview(start.as_bytes())
                ),
            ))
        }
    }

    /// The component with this id (the first, if the id repeats). This is
    /// a linear scan; [`DepGraph::component`] looks ids up in an index.
    pub fn component(&self, id: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.id.as_deref() == Some(id))
    }

    /// The root component, if the document names one.
    pub fn root_component(&self) -> Option<&Component> {
        self.component(self.root.as_deref()?)
    }

    /// An index of the dependency graph, for asking [`DepGraph::pulled_in_by`]
    /// about many components without rebuilding it each time.
    pub fn graph(&self) -> DepGraph<'_> {
        DepGraph::new(self)
    }

    /// The chains through which the component `component_id` came in, each
    /// from a starting point to the component itself (both included):
    /// `[root, A, B, component]` reads "pulled in by root -> A -> B".
    ///
    /// Chains start at the root when the root leads to the component, and
    /// otherwise at components that nothing depends on. They are returned
    /// shortest first, at most [`MAX_CHAINS`] of them, without repeated
    /// components. The result is empty for an unknown id, for the root
    /// itself and for a component that nothing brings in. The search visits
    /// at most [`MAX_CHAIN_VISITS`] ancestors and explores at most
    /// [`MAX_CHAIN_STATES`] partial chains, so a pathological graph gives
    /// fewer chains rather than unbounded work.
    ///
    /// This builds the graph index first (linear in the document); use
    /// [`Sbom::graph`] to ask about many components.
    pub fn pulled_in_by(&self, component_id: &str) -> Vec<Vec<&str>> {
        self.graph().pulled_in_by(component_id)
    }
}

/// Reads the top-level keys of a JSON document to tell CycloneDX from SPDX.
#[derive(Deserialize)]
#[serde(expecting = "a JSON object with `bomFormat` (CycloneDX) or `spdxVersion` (SPDX)")]
struct JsonProbe {
    #[serde(rename = "bomFormat")]
    bom_format: Option<Field>,
    #[serde(rename = "spdxVersion")]
    spdx_version: Option<Field>,
    #[serde(rename = "@context")]
    context: Option<de::IgnoredAny>,
}

fn parse_json(text: &str, file: &str) -> Result<Sbom, SbomError> {
    // A first pass that keeps nothing but two strings: it finds syntax
    // errors early and tells the formats apart whatever the key order.
    let probe: JsonProbe =
        serde_json::from_str(text).map_err(|e| SbomError::from_json(file, &e))?;
    let unsupported =
        |reason: String| SbomError::new(file, None, SbomErrorKind::Unsupported, reason);
    match (&probe.bom_format, &probe.spdx_version) {
        (Some(Field(f)), None) if f == "CycloneDX" => cyclonedx::parse_json(text, file),
        (Some(Field(f)), None) => Err(SbomError::new(
            file,
            None,
            SbomErrorKind::UnknownFormat,
            format!("bomFormat is `{}`, not `CycloneDX`", preview(f.as_bytes())),
        )),
        (None, Some(Field(v))) if v.starts_with("SPDX-2.") => spdx::parse_json(text, file),
        (None, Some(Field(v))) => Err(unsupported(format!(
            "spdxVersion `{}` is not supported (only SPDX-2.x)",
            preview(v.as_bytes())
        ))),
        (Some(_), Some(_)) => Err(SbomError::new(
            file,
            None,
            SbomErrorKind::Malformed,
            "both bomFormat and spdxVersion are present".into(),
        )),
        (None, None) if probe.context.is_some() => Err(unsupported(
            "JSON-LD documents (SPDX 3) are not supported; export SPDX 2.3 or CycloneDX".into(),
        )),
        (None, None) => Err(SbomError::new(
            file,
            None,
            SbomErrorKind::UnknownFormat,
            "JSON without `bomFormat` or `spdxVersion` is not an SBOM".into(),
        )),
    }
}

/// A JSON string that is kept: at most [`MAX_FIELD_LEN`] bytes, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field(String);

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                if v.len() > MAX_FIELD_LEN {
                    return Err(E::custom(limit_msg(format_args!(
                        "a string of {} bytes is longer than {MAX_FIELD_LEN}",
                        v.len()
                    ))));
                }
                Ok(Field(v.trim().to_owned()))
            }
        }
        d.deserialize_str(V)
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON array of at most [`MAX_LIST_ITEMS`] items.
struct CappedVec<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for CappedVec<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CappedVec<T>, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for V<T> {
            type Value = CappedVec<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<CappedVec<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element()? {
                    if out.len() == MAX_LIST_ITEMS {
                        return Err(de::Error::custom(limit_msg(format_args!(
                            "a list of more than {MAX_LIST_ITEMS} items"
                        ))));
                    }
                    out.push(item);
                }
                Ok(CappedVec(out))
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

/// Collects what a format parser reads; [`Builder::finish`] checks the graph.
struct Builder {
    format: SbomFormat,
    syntax: SbomSyntax,
    spec_version: String,
    serial: Option<String>,
    created: Option<String>,
    tools: Vec<Tool>,
    /// Every id seen, so each distinct id is stored once however many
    /// edges name it.
    ids: HashSet<Arc<str>>,
    components: Vec<Component>,
    edges: Vec<(Arc<str>, Arc<str>)>,
    root: Option<Arc<str>>,
}

impl Builder {
    fn new(format: SbomFormat, syntax: SbomSyntax) -> Builder {
        Builder {
            format,
            syntax,
            spec_version: String::new(),
            serial: None,
            created: None,
            tools: Vec::new(),
            ids: HashSet::new(),
            components: Vec::new(),
            edges: Vec::new(),
            root: None,
        }
    }

    /// The shared copy of the id `s`.
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(id) = self.ids.get(s) {
            return Arc::clone(id);
        }
        let id: Arc<str> = Arc::from(s);
        self.ids.insert(Arc::clone(&id));
        id
    }

    /// Appends a placeholder component and returns its index, so that a
    /// parent can be filled in after its nested components (pre-order).
    fn reserve_component(&mut self) -> Result<usize, String> {
        if self.components.len() >= MAX_COMPONENTS {
            return Err(limit_msg(format_args!(
                "more than {MAX_COMPONENTS} components"
            )));
        }
        self.components.push(Component::empty());
        Ok(self.components.len() - 1)
    }

    fn add_component(&mut self, c: Component) -> Result<(), String> {
        let i = self.reserve_component()?;
        self.components[i] = c;
        Ok(())
    }

    /// Adds an edge between two interned ids.
    fn add_edge(&mut self, from: Arc<str>, to: Arc<str>) -> Result<(), String> {
        if self.edges.len() >= MAX_EDGES {
            return Err(limit_msg(format_args!(
                "more than {MAX_EDGES} dependency edges"
            )));
        }
        self.edges.push((from, to));
        Ok(())
    }

    fn add_tool(&mut self, name: String, version: Option<String>) -> Result<(), String> {
        if self.tools.len() >= MAX_LIST_ITEMS {
            return Err(limit_msg(format_args!("more than {MAX_LIST_ITEMS} tools")));
        }
        if !name.is_empty() {
            self.tools.push(Tool { name, version });
        }
        Ok(())
    }

    fn finish(self) -> Sbom {
        let mut known: HashSet<&str> = HashSet::with_capacity(self.components.len());
        let mut duplicate_ids = 0;
        for c in &self.components {
            if let Some(id) = &c.id
                && !known.insert(id)
            {
                duplicate_ids += 1;
            }
        }
        let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(self.edges.len());
        let mut keep = vec![false; self.edges.len()];
        let mut dropped_edges = 0;
        for (i, (from, to)) in self.edges.iter().enumerate() {
            if from == to || !known.contains(&**from) || !known.contains(&**to) {
                dropped_edges += 1;
            } else if seen.insert((from, to)) {
                keep[i] = true;
            }
        }
        let root = self.root.filter(|r| known.contains(&**r));
        drop(seen);
        drop(known);
        let edges = self
            .edges
            .into_iter()
            .zip(keep)
            .filter_map(|(e, k)| k.then_some(e))
            .collect();
        Sbom {
            format: self.format,
            syntax: self.syntax,
            spec_version: self.spec_version,
            serial: self.serial,
            created: self.created,
            tools: self.tools,
            components: self.components,
            edges,
            root,
            dropped_edges,
            duplicate_ids,
        }
    }
}

/// Splits SPDX's `name-1.2.3` (or `name 1.2.3`) tool spelling.
fn split_tool(s: &str) -> (String, Option<String>) {
    let s = s.trim();
    let split = s
        .char_indices()
        .filter(|&(i, c)| {
            (c == '-' || c == ' ') && s[i + 1..].starts_with(|d: char| d.is_ascii_digit())
        })
        .map(|(i, _)| i)
        .next_back();
    match split {
        Some(i) if i > 0 => (s[..i].trim().to_owned(), Some(s[i + 1..].to_owned())),
        _ => (s.to_owned(), None),
    }
}

/// The dependency graph of an [`Sbom`], indexed for [`DepGraph::pulled_in_by`].
#[derive(Debug)]
pub struct DepGraph<'a> {
    sbom: &'a Sbom,
    /// Node number by id; a node is the first component with that id.
    index: HashMap<&'a str, u32>,
    /// The component index of each node.
    nodes: Vec<usize>,
    /// Successors of node `n`: `fwd[fwd_at[n]..fwd_at[n + 1]]`.
    fwd_at: Vec<u32>,
    fwd: Vec<u32>,
    /// Predecessors, laid out the same way.
    rev_at: Vec<u32>,
    rev: Vec<u32>,
    root: Option<u32>,
}

/// Compressed adjacency lists for `pairs` over `n` nodes, in input order.
fn adjacency(n: usize, pairs: impl Iterator<Item = (u32, u32)> + Clone) -> (Vec<u32>, Vec<u32>) {
    let mut at = vec![0u32; n + 1];
    for (a, _) in pairs.clone() {
        at[a as usize + 1] += 1;
    }
    for i in 0..n {
        at[i + 1] += at[i];
    }
    let mut fill = at.clone();
    let mut out = vec![0u32; at[n] as usize];
    for (a, b) in pairs {
        let slot = &mut fill[a as usize];
        out[*slot as usize] = b;
        *slot += 1;
    }
    (at, out)
}

impl<'a> DepGraph<'a> {
    fn new(sbom: &'a Sbom) -> DepGraph<'a> {
        let mut index = HashMap::with_capacity(sbom.components.len());
        let mut nodes = Vec::with_capacity(sbom.components.len());
        for (i, c) in sbom.components.iter().enumerate() {
            if let Some(id) = &c.id
                && !index.contains_key(&**id)
            {
                // Capped at MAX_COMPONENTS, so it fits.
                index.insert(&**id, nodes.len() as u32);
                nodes.push(i);
            }
        }
        let pairs: Vec<(u32, u32)> = sbom
            .edges
            .iter()
            .filter_map(|(a, b)| Some((*index.get(&**a)?, *index.get(&**b)?)))
            .collect();
        let (fwd_at, fwd) = adjacency(nodes.len(), pairs.iter().copied());
        let (rev_at, rev) = adjacency(nodes.len(), pairs.iter().map(|&(a, b)| (b, a)));
        let root = sbom.root.as_deref().and_then(|r| index.get(r).copied());
        DepGraph {
            sbom,
            index,
            nodes,
            fwd_at,
            fwd,
            rev_at,
            rev,
            root,
        }
    }

    fn successors(&self, n: u32) -> &[u32] {
        let n = n as usize;
        &self.fwd[self.fwd_at[n] as usize..self.fwd_at[n + 1] as usize]
    }

    fn predecessors(&self, n: u32) -> &[u32] {
        let n = n as usize;
        &self.rev[self.rev_at[n] as usize..self.rev_at[n + 1] as usize]
    }

    fn id(&self, n: u32) -> &'a str {
        let sbom: &'a Sbom = self.sbom;
        sbom.components[self.nodes[n as usize]]
            .id
            .as_deref()
            .unwrap_or_default()
    }

    /// The component with this id (the first, if the id repeats), from the
    /// index: use it to name the ids of a chain.
    pub fn component(&self, id: &str) -> Option<&'a Component> {
        let sbom: &'a Sbom = self.sbom;
        let n = *self.index.get(id)?;
        sbom.components.get(self.nodes[n as usize])
    }

    /// See [`Sbom::pulled_in_by`].
    pub fn pulled_in_by(&self, component_id: &str) -> Vec<Vec<&'a str>> {
        let Some(&target) = self.index.get(component_id) else {
            return Vec::new();
        };
        // 1. Walk up from the target: `up[n]` is the length of the shortest
        //    path from ancestor n down to the target. This touches only the
        //    target's ancestors, usually a small part of the graph.
        let mut up: HashMap<u32, u32> = HashMap::new();
        up.insert(target, 0);
        let mut queue = VecDeque::from([target]);
        'bfs: while let Some(n) = queue.pop_front() {
            let d = up[&n];
            for &p in self.predecessors(n) {
                if up.len() >= MAX_CHAIN_VISITS {
                    break 'bfs;
                }
                up.entry(p).or_insert_with(|| {
                    queue.push_back(p);
                    d + 1
                });
            }
        }
        // 2. Where chains start: the root if it is an ancestor, otherwise
        //    the ancestors that nothing depends on.
        let sources: Vec<u32> = match self.root {
            Some(r) if r != target && up.contains_key(&r) => vec![r],
            Some(r) if r == target => return Vec::new(),
            _ => {
                let mut s: Vec<u32> = up
                    .keys()
                    .copied()
                    .filter(|&n| n != target && self.predecessors(n).is_empty())
                    .collect();
                // The nearest first; keep half the state budget for the
                // search itself.
                s.sort_unstable_by_key(|n| (up[n], *n));
                s.truncate(MAX_CHAIN_STATES / 2);
                s
            }
        };
        // 3. Best-first search down from the sources, ranking partial chains
        //    by their length plus the exact remaining distance `up`, so
        //    complete chains come out shortest first (A* with an exact
        //    heuristic). States form a tree of (node, parent) pairs.
        //    Among states that promise equally short chains, the deepest
        //    goes first, so the search runs straight down to the target
        //    instead of widening level by level through every tie (a graph
        //    with many equal paths would otherwise use up the state budget
        //    before any chain completes).
        const NO_PARENT: u32 = u32::MAX;
        let mut states: Vec<(u32, u32, u32)> = Vec::new(); // (node, parent, length)
        let mut heap = BinaryHeap::new();
        for &s in &sources {
            // The priority: the length, in components, of the shortest
            // complete chain through this state; then depth; then age.
            heap.push(Reverse((1 + up[&s], Reverse(1u32), states.len() as u32)));
            states.push((s, NO_PARENT, 1));
        }
        let mut chains = Vec::new();
        while let Some(Reverse((_, _, si))) = heap.pop() {
            let (node, _, len) = states[si as usize];
            if node == target {
                let mut chain = Vec::with_capacity(len as usize);
                let mut at = si;
                while at != NO_PARENT {
                    let (n, parent, _) = states[at as usize];
                    chain.push(self.id(n));
                    at = parent;
                }
                chain.reverse();
                chains.push(chain);
                if chains.len() == MAX_CHAINS {
                    break;
                }
                continue;
            }
            if len as usize >= MAX_CHAIN_LEN {
                continue;
            }
            for &next in self.successors(node) {
                let Some(&rest) = up.get(&next) else { continue };
                if states.len() >= MAX_CHAIN_STATES {
                    break;
                }
                // Keep chains simple: skip a node already on this one.
                let mut at = si;
                let mut repeats = false;
                while at != NO_PARENT {
                    let (n, parent, _) = states[at as usize];
                    if n == next {
                        repeats = true;
                        break;
                    }
                    at = parent;
                }
                if repeats {
                    continue;
                }
                heap.push(Reverse((
                    len + 1 + rest,
                    Reverse(len + 1),
                    states.len() as u32,
                )));
                states.push((next, si, len + 1));
            }
        }
        chains
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use patchgap_proto::purl::Purl;

    use super::*;

    /// The real SBOMs, copied unchanged from the shared data set (see
    /// testdata/sbom/PROVENANCE.md).
    pub(super) fn data_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/sbom")
    }

    pub(super) fn load(name: &str) -> Sbom {
        let bytes = std::fs::read(data_dir().join(name)).unwrap();
        Sbom::parse(&bytes, name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every real file, as listed in expected.tsv.
    fn real_files() -> Vec<String> {
        expected_rows().into_iter().map(|r| r[0].clone()).collect()
    }

    /// The rows of expected.tsv, written by testdata/sbom/expected.py from
    /// python3's json, xml.etree and regular expressions over tag-value.
    fn expected_rows() -> Vec<Vec<String>> {
        let tsv = std::fs::read_to_string(data_dir().join("expected.tsv")).unwrap();
        tsv.lines()
            .skip(1)
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect()
    }

    /// (name, version, purl) of every component.
    pub(super) fn nvp(s: &Sbom) -> BTreeSet<(String, Option<String>, Option<String>)> {
        s.components
            .iter()
            .map(|c| (c.name.clone(), c.version.clone(), c.purl.clone()))
            .collect()
    }

    /// Checks the invariants every parse result keeps, hostile or not.
    pub(super) fn check_invariants(s: &Sbom) {
        assert!(s.components.len() <= MAX_COMPONENTS);
        assert!(s.edges.len() <= MAX_EDGES);
        let ids: HashSet<&str> = s
            .components
            .iter()
            .filter_map(|c| c.id.as_deref())
            .collect();
        for (a, b) in &s.edges {
            assert!(ids.contains(&**a) && ids.contains(&**b) && a != b);
        }
        if let Some(r) = &s.root {
            assert!(ids.contains(&**r));
        }
        let g = s.graph();
        let edges: HashSet<(&str, &str)> = s.edges.iter().map(|(a, b)| (&**a, &**b)).collect();
        for c in s.components.iter().take(50) {
            let Some(id) = c.id.as_deref() else { continue };
            let chains = g.pulled_in_by(id);
            assert!(chains.len() <= MAX_CHAINS);
            let mut last_len = 0;
            for chain in &chains {
                assert!(chain.len() >= 2 && chain.len() <= MAX_CHAIN_LEN);
                assert!(chain.len() >= last_len, "chains must come shortest first");
                last_len = chain.len();
                assert_eq!(chain.last(), Some(&id));
                for w in chain.windows(2) {
                    assert!(edges.contains(&(w[0], w[1])), "{w:?} is not an edge");
                }
                let distinct: HashSet<&&str> = chain.iter().collect();
                assert_eq!(distinct.len(), chain.len(), "chain repeats a component");
            }
        }
    }

    #[test]
    fn every_real_file_is_listed_and_matches_independent_counts() {
        let listed: BTreeSet<String> = real_files().into_iter().collect();
        let mut on_disk = BTreeSet::new();
        for sub in ["", "small"] {
            for e in std::fs::read_dir(data_dir().join(sub)).unwrap() {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                if e.file_type().unwrap().is_file()
                    && !name.ends_with(".py")
                    && !name.ends_with(".tsv")
                    && !name.ends_with(".md")
                {
                    on_disk.insert(if sub.is_empty() {
                        name
                    } else {
                        format!("{sub}/{name}")
                    });
                }
            }
        }
        assert_eq!(
            listed, on_disk,
            "expected.tsv must list every SBOM in testdata/sbom"
        );
        assert_eq!(listed.len(), 17);

        for row in expected_rows() {
            let [file, format, spec, components, with_purl, edges, root] = &row[..] else {
                panic!("bad row {row:?}");
            };
            let s = load(file);
            assert_eq!(s.format.as_str(), format, "{file}");
            assert_eq!(&s.spec_version, spec, "{file}");
            assert_eq!(s.components.len().to_string(), *components, "{file}");
            let purls = s.components.iter().filter(|c| c.purl.is_some()).count();
            assert_eq!(purls.to_string(), *with_purl, "{file}");
            assert_eq!(s.edges.len().to_string(), *edges, "{file}");
            let root_name = s.root_component().map_or("-", |c| c.name.as_str());
            assert_eq!(root_name, root, "{file}");
            assert!(s.serial.is_some() && s.created.is_some(), "{file}");
            assert!(!s.tools.is_empty(), "{file}");
            assert_eq!(s.duplicate_ids, 0, "{file}");
            let syntax = if file.ends_with(".xml") {
                SbomSyntax::Xml
            } else if file.ends_with(".json") {
                SbomSyntax::Json
            } else {
                SbomSyntax::TagValue
            };
            assert_eq!(s.syntax, syntax, "{file}");
            check_invariants(&s);
        }
    }

    #[test]
    fn tools_are_named_with_versions() {
        let tool = |f: &str| load(f).tools;
        let t = |name: &str, v: &str| Tool {
            name: name.into(),
            version: Some(v.into()),
        };
        assert_eq!(tool("trivy_rootfs_os.cdx.json"), [t("trivy", "0.76.0")]);
        assert_eq!(tool("small/syft_py36_sitepkgs.spdx"), [t("syft", "1.18.1")]);
        assert_eq!(
            tool("small/trivy_py36_sitepkgs.spdx.json"),
            [t("trivy", "0.76.0")]
        );
        let cdxpy = [
            t("cyclonedx-py", "7.5.0"),
            t("cyclonedx-python-lib", "11.12.0"),
        ];
        // 1.4 writes tools as an array, 1.5 XML and 1.6 JSON as components.
        assert_eq!(tool("small/cdxpy_system_python3_sv1.4.cdx.json"), cdxpy);
        assert_eq!(tool("small/cdxpy_system_python3_sv1.5.cdx.xml"), cdxpy);
        assert_eq!(tool("cdxpy_system_python3.cdx.json"), cdxpy);
        assert_eq!(split_tool("trivy"), ("trivy".into(), None));
        assert_eq!(
            split_tool("my-tool 2.0"),
            ("my-tool".into(), Some("2.0".into()))
        );
        assert_eq!(split_tool("-1"), ("-1".into(), None));
    }

    #[test]
    fn every_purl_parses() {
        let mut total = 0;
        for file in real_files() {
            let s = load(&file);
            for c in &s.components {
                let Some(p) = &c.purl else { continue };
                let purl = Purl::parse(p).unwrap_or_else(|e| panic!("{file}: {p}: {e:?}"));
                total += 1;
                // The purl names the same package as the component does
                // (pypi normalises names; Go puts the module path in the
                // namespace and name).
                let norm = |s: &str| s.to_ascii_lowercase().replace(['_', '.'], "-");
                assert!(norm(&c.name).contains(&norm(purl.name())), "{file}: {p}");
                // syft writes Go's standard library as version go1.23.3
                // but its purl as pkg:golang/stdlib@1.23.3.
                // Debian purls carry the epoch as a qualifier.
                let version = purl.version().map(|v| match purl.qualifier("epoch") {
                    Some(epoch) => format!("{epoch}:{v}"),
                    None => v.to_owned(),
                });
                let expected = c.version.as_deref().map(|v| match purl.name() {
                    "stdlib" => v.trim_start_matches("go"),
                    _ => v,
                });
                assert_eq!(version.as_deref(), expected, "{file}: {p}");
            }
        }
        // Every purl counted by expected.py was checked.
        let counted: usize = expected_rows()
            .iter()
            .map(|r| r[4].parse::<usize>().unwrap())
            .sum();
        assert_eq!((total, counted), (1459, 1459));
    }

    /// The same scan written by one tool in several syntaxes gives the same
    /// components. What legitimately differs is asserted explicitly.
    #[test]
    fn same_scan_same_components_in_every_syntax() {
        let groups: &[&[&str]] = &[
            &[
                "small/syft_py36_sitepkgs.cdx.json",
                "small/syft_py36_sitepkgs.cdx.xml",
                "small/syft_py36_sitepkgs.spdx.json",
                "small/syft_py36_sitepkgs.spdx",
            ],
            &[
                "small/trivy_py36_sitepkgs.cdx.json",
                "small/trivy_py36_sitepkgs.spdx.json",
                "small/trivy_py36_sitepkgs.spdx",
            ],
            &[
                "small/syft_rust_auditable_fixture.cdx.json",
                "small/syft_rust_auditable_fixture.spdx.json",
            ],
            // Three runs of cyclonedx-py over the same interpreter.
            &[
                "cdxpy_system_python3.cdx.json",
                "small/cdxpy_system_python3_sv1.4.cdx.json",
                "small/cdxpy_system_python3_sv1.5.cdx.xml",
            ],
        ];
        for group in groups {
            let first = load(group[0]);
            for other in &group[1..] {
                let s = load(other);
                assert_eq!(nvp(&first), nvp(&s), "{} vs {other}", group[0]);
                assert_eq!(
                    first.root_component().map(|c| &c.name),
                    s.root_component().map(|c| &c.name)
                );
            }
        }

        // The syft py36 scan in all four syntaxes.
        let cdx_json = load("small/syft_py36_sitepkgs.cdx.json");
        let cdx_xml = load("small/syft_py36_sitepkgs.cdx.xml");
        let spdx_json = load("small/syft_py36_sitepkgs.spdx.json");
        let spdx_tv = load("small/syft_py36_sitepkgs.spdx");
        // The two CycloneDX syntaxes agree on everything but the syntax.
        assert_eq!(cdx_json.components, cdx_xml.components);
        assert_eq!(cdx_json.edges, cdx_xml.edges);
        // The two SPDX syntaxes agree except for the document namespace,
        // which holds a fresh UUID per run, and the order: tag-value lists
        // the root package first, JSON last.
        let sorted = |s: &Sbom| {
            let mut c = s.components.clone();
            c.sort_by(|a, b| a.id.cmp(&b.id));
            let mut e = s.edges.clone();
            e.sort();
            (c, e)
        };
        assert_eq!(sorted(&spdx_json), sorted(&spdx_tv));
        assert_eq!(spdx_tv.components[0].kind, ComponentKind::File);
        assert_eq!(spdx_json.components[2].kind, ComponentKind::File);
        assert_ne!(spdx_json.serial, spdx_tv.serial);
        // Legitimate differences between CycloneDX and SPDX:
        let by_name =
            |s: &Sbom, n: &str| s.components.iter().find(|c| c.name == n).unwrap().clone();
        let (c, p) = (
            by_name(&cdx_json, "setuptools"),
            by_name(&spdx_json, "setuptools"),
        );
        // 1. Ids: bom-refs are purls with a package-id, SPDXIDs are not.
        assert_eq!(
            c.id.as_deref(),
            Some("pkg:pypi/setuptools@40.6.2?package-id=c1d19ba8d5aff20d")
        );
        assert_eq!(
            p.id.as_deref(),
            Some("SPDXRef-Package-python-setuptools-c1d19ba8d5aff20d")
        );
        // 2. Kinds: syft's SPDX gives no purpose for packages, and calls its
        //    root a FILE package where CycloneDX has a `file` component.
        assert_eq!(
            (c.kind, p.kind),
            (ComponentKind::Library, ComponentKind::Unspecified)
        );
        assert_eq!(cdx_json.root_component().unwrap().kind, ComponentKind::File);
        assert_eq!(
            spdx_json.root_component().unwrap().kind,
            ComponentKind::File
        );
        // 3. Licences: an unknown licence is the name UNKNOWN in CycloneDX
        //    and LicenseRef-UNKNOWN in SPDX.
        assert_eq!(
            (c.licenses, p.licenses),
            (
                vec!["UNKNOWN".to_owned()],
                vec!["LicenseRef-UNKNOWN".to_owned()]
            )
        );
        // 4. Edges: syft's SPDX root CONTAINS each package; its CycloneDX
        //    has no dependencies at all for this scan.
        assert!(cdx_json.edges.is_empty());
        assert_eq!(spdx_json.edges.len(), 2);
        // CPEs agree (SPDX's first cpe23Type reference is CycloneDX's cpe).
        assert_eq!(c.cpe, p.cpe);
        assert_eq!(
            by_name(&cdx_json, "pip").cpe,
            by_name(&spdx_json, "pip").cpe
        );

        // trivy: the root is an `application` in CycloneDX, a SOURCE
        // package in SPDX; both make the root bring in each package.
        let t_cdx = load("small/trivy_py36_sitepkgs.cdx.json");
        let t_spdx = load("small/trivy_py36_sitepkgs.spdx.json");
        assert_eq!(
            t_cdx.root_component().unwrap().kind,
            ComponentKind::Application
        );
        assert_eq!(t_spdx.root_component().unwrap().kind, ComponentKind::Source);
        assert_eq!((t_cdx.edges.len(), t_spdx.edges.len()), (2, 2));
        assert_eq!(
            t_spdx.dropped_edges, 2,
            "packages CONTAIN files, which are not components"
        );

        // The rust fixture: the same three dependency edges (SPDX writes
        // them as DEPENDENCY_OF), plus SPDX's four root CONTAINS edges.
        let r_cdx = load("small/syft_rust_auditable_fixture.cdx.json");
        let r_spdx = load("small/syft_rust_auditable_fixture.spdx.json");
        let named = |s: &Sbom| -> BTreeSet<(String, String)> {
            let name = |id: &str| s.component(id).unwrap().name.clone();
            s.edges.iter().map(|(a, b)| (name(a), name(b))).collect()
        };
        let deps: BTreeSet<(String, String)> = [
            ("auditable-fixture", "smallvec"),
            ("auditable-fixture", "time"),
            ("time", "libc"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(named(&r_cdx), deps);
        let contains: BTreeSet<(String, String)> =
            named(&r_spdx).difference(&deps).cloned().collect();
        assert_eq!(contains.len(), 4);
        assert!(contains.iter().all(|(a, _)| a == "/opt/fixtures/rsbin"));
    }

    fn chain_names(s: &Sbom, name: &str) -> Vec<Vec<String>> {
        let c = s.components.iter().find(|c| c.name == name).unwrap();
        let g = s.graph();
        g.pulled_in_by(c.id.as_deref().unwrap())
            .into_iter()
            .map(|chain| {
                chain
                    .iter()
                    .map(|id| g.component(id).unwrap().name.clone())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn pulled_in_by_on_real_graphs() {
        // cyclonedx-py: no root, so chains start at packages nothing
        // depends on.
        let s = load("cdxpy_pyenv311.cdx.json");
        assert!(s.root.is_none());
        let chains = chain_names(&s, "annotated-types");
        assert_eq!(
            chains[0],
            [
                "moto",
                "openapi-spec-validator",
                "pydantic",
                "annotated-types"
            ]
        );
        assert_eq!(chains.len(), 4);
        let s = load("cdxpy_system_python3.cdx.json");
        assert_eq!(
            chain_names(&s, "pyparsing"),
            [["lazr.restfulclient", "httplib2", "pyparsing"]]
        );

        // trivy's Debian scan: root -> OS -> package -> ... The longest
        // first chain in the file.
        let s = load("trivy_rootfs_os.cdx.json");
        let chains = chain_names(&s, "libpkgconf3");
        assert_eq!(
            chains[0],
            [
                "vm",
                "debian",
                "tk-dev",
                "tk8.6-dev",
                "libxft-dev",
                "libfontconfig1-dev",
                "libfontconfig-dev",
                "pkg-config",
                "pkgconf",
                "pkgconf-bin",
                "libpkgconf3"
            ]
        );
        // libssl3: three shortest chains of four (python's BFS over the
        // same file agrees: through libsasl2-modules, openssh-client and
        // osslsigncode), then a longer one.
        let chains = chain_names(&s, "libssl3");
        assert_eq!(chains.len(), MAX_CHAINS);
        assert!(chains.iter().all(|c| c[..2] == ["vm", "debian"]));
        let via: BTreeSet<&str> = chains[..3].iter().map(|c| c[2].as_str()).collect();
        assert_eq!(
            via,
            BTreeSet::from(["libsasl2-modules", "openssh-client", "osslsigncode"])
        );
        assert!(chains[..3].iter().all(|c| c.len() == 4));
        assert!(chains[3].len() > 4);

        // The rust fixture: CycloneDX has no root edges, so the chain starts
        // at the binary's own crate; SPDX's root CONTAINS every crate, so the
        // shortest chain is the root itself and the dependency path comes
        // second.
        let s = load("small/syft_rust_auditable_fixture.cdx.json");
        assert_eq!(
            chain_names(&s, "libc"),
            [["auditable-fixture", "time", "libc"]]
        );
        let s = load("small/syft_rust_auditable_fixture.spdx.json");
        assert_eq!(
            chain_names(&s, "libc"),
            [
                vec!["/opt/fixtures/rsbin", "libc"],
                vec!["/opt/fixtures/rsbin", "time", "libc"],
                vec!["/opt/fixtures/rsbin", "auditable-fixture", "time", "libc"]
            ]
        );
        // Nothing pulls in the root or a top-level package.
        assert!(chain_names(&s, "/opt/fixtures/rsbin").is_empty());
        assert!(s.pulled_in_by("no-such-id").is_empty());
    }

    /// Builds an Sbom from `a>b` edges over single-letter ids.
    fn graph_of(edges: &[(&str, &str)], root: Option<&str>) -> Sbom {
        let mut b = Builder::new(SbomFormat::CycloneDx, SbomSyntax::Json);
        let mut names: Vec<&str> = edges.iter().flat_map(|&(a, b)| [a, b]).collect();
        names.sort_unstable();
        names.dedup();
        for n in names {
            let mut c = Component::empty();
            c.id = Some(b.intern(n));
            c.name = n.to_owned();
            b.add_component(c).unwrap();
        }
        for &(from, to) in edges {
            let (from, to) = (b.intern(from), b.intern(to));
            b.add_edge(from, to).unwrap();
        }
        b.root = root.map(|r| b.intern(r));
        b.finish()
    }

    #[test]
    fn pulled_in_by_orders_and_bounds() {
        // A diamond with a cycle and a longer detour.
        let s = graph_of(
            &[
                ("r", "a"),
                ("r", "b"),
                ("a", "t"),
                ("b", "t"),
                ("t", "a"),
                ("r", "c"),
                ("c", "d"),
                ("d", "t"),
                ("x", "t"),
            ],
            Some("r"),
        );
        check_invariants(&s);
        assert_eq!(
            s.pulled_in_by("t"),
            [
                vec!["r", "a", "t"],
                vec!["r", "b", "t"],
                vec!["r", "c", "d", "t"]
            ]
        );
        // `a` is reached through r directly, and through t (a cycle back).
        assert_eq!(
            s.pulled_in_by("a"),
            [
                vec!["r", "a"],
                vec!["r", "b", "t", "a"],
                vec!["r", "c", "d", "t", "a"]
            ]
        );
        assert!(s.pulled_in_by("r").is_empty());
        // Without a root, chains start at every source: r and x.
        let s = graph_of(&[("r", "a"), ("a", "t"), ("x", "t")], None);
        assert_eq!(s.pulled_in_by("t"), [vec!["x", "t"], vec!["r", "a", "t"]]);
        // A root that does not lead to the component is not used.
        let s = graph_of(&[("r", "a"), ("x", "t")], Some("r"));
        assert_eq!(s.pulled_in_by("t"), [vec!["x", "t"]]);
        // A pure cycle has no starting point.
        let s = graph_of(&[("a", "b"), ("b", "a")], None);
        assert!(s.pulled_in_by("a").is_empty());
        // Self-loops and edges to unknown ids are dropped and counted.
        let mut s = graph_of(&[("a", "b")], None);
        assert_eq!(s.dropped_edges, 0);
        s.edges.push((Arc::from("a"), Arc::from("zz")));
        assert_eq!(s.pulled_in_by("b"), [vec!["a", "b"]]);
    }

    #[test]
    fn pulled_in_by_is_bounded_on_hostile_graphs() {
        // A ladder of 200 rungs has 2^200 paths from top to bottom, and a
        // chain longer than MAX_CHAIN_LEN.
        let names: Vec<String> = (0..=200)
            .flat_map(|i| [format!("l{i}"), format!("r{i}")])
            .collect();
        let mut edges = Vec::new();
        for i in 0..200 {
            for (a, b) in [("l", "l"), ("l", "r"), ("r", "l"), ("r", "r")] {
                edges.push((format!("{a}{i}"), format!("{b}{}", i + 1)));
            }
        }
        edges.push(("root".into(), "l0".into()));
        edges.push(("root".into(), "r0".into()));
        let pairs: Vec<(&str, &str)> = edges
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let s = graph_of(&pairs, Some("root"));
        assert_eq!(s.components.len(), names.len() + 1);
        let t = crate::fuzz::CpuTimer::start();
        assert!(
            s.pulled_in_by("l200").is_empty(),
            "longer than MAX_CHAIN_LEN"
        );
        let chains = s.pulled_in_by("l40");
        assert_eq!(chains.len(), MAX_CHAINS);
        assert!(chains.iter().all(|c| c.len() == 42));
        // A star: 300k components that all bring in one target.
        let n = 300_000;
        let mut b = Builder::new(SbomFormat::Spdx, SbomSyntax::Json);
        for i in 0..=n {
            let mut c = Component::empty();
            c.id = Some(b.intern(&i.to_string()));
            b.add_component(c).unwrap();
        }
        for i in 1..=n {
            let (from, to) = (b.intern(&i.to_string()), b.intern("0"));
            b.add_edge(from, to).unwrap();
        }
        let s = b.finish();
        let chains = s.pulled_in_by("0");
        assert_eq!(chains.len(), MAX_CHAINS);
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    }

    fn parse_err(input: &[u8]) -> SbomError {
        match Sbom::parse(input, "evil.sbom") {
            Ok(s) => panic!("accepted: {} components", s.components.len()),
            Err(e) => {
                assert_eq!(e.file, "evil.sbom");
                assert!(e.to_string().starts_with("evil.sbom"));
                assert!(e.reason.len() < 400, "reason too long: {}", e.reason.len());
                e
            }
        }
    }

    fn pos(line: usize, column: usize) -> Option<Position> {
        Some(Position {
            line,
            column: Some(column),
        })
    }

    #[test]
    fn truncated_documents_are_rejected_with_a_position() {
        for file in [
            "small/trivy_py36_sitepkgs.cdx.json",
            "small/syft_py36_sitepkgs.cdx.xml",
            "small/trivy_py36_sitepkgs.spdx.json",
        ] {
            let bytes = std::fs::read(data_dir().join(file)).unwrap();
            for cut in [bytes.len() / 3, bytes.len() / 2, bytes.len() - 2] {
                let e = parse_err(&bytes[..cut]);
                assert_eq!(e.kind, SbomErrorKind::Malformed, "{file}: {e}");
                assert!(e.position.is_some(), "{file}: {e}");
            }
        }
        let e = parse_err(b"{\n  \"bomFormat\": \"CycloneDX\",\n  \"components\": [");
        assert_eq!(e.position, pos(3, 17));
        assert_eq!(e.reason, "EOF while parsing a list");
        assert_eq!(e.to_string(), "evil.sbom:3:17: EOF while parsing a list");
        let e = parse_err(b"<bom xmlns=\"http://cyclonedx.org/schema/bom/1.6\">\n<components>");
        assert_eq!(e.position, pos(2, 13));
        assert!(
            e.reason
                .contains("unexpected end of input inside <components>"),
            "{e}"
        );
        // A tag-value file cut inside a multi-line <text>.
        let e = parse_err(b"SPDXVersion: SPDX-2.3\nPackageName: a\nPackageComment: <text>half");
        assert_eq!(
            e.position,
            Some(Position {
                line: 3,
                column: None
            })
        );
        assert_eq!(
            e.to_string(),
            "evil.sbom:3: <text> of PackageComment is not closed by </text>"
        );
    }

    #[test]
    fn wrong_types_are_rejected_with_a_position() {
        let cdx = |body: &str| {
            format!("{{\"bomFormat\":\"CycloneDX\",\"specVersion\":\"1.6\",\n{body}}}")
        };
        for (doc, want) in [
            (
                cdx("\"components\":[{\"name\":5}]"),
                "invalid type: integer `5`, expected a string",
            ),
            (cdx("\"components\":{}"), "expected an array of components"),
            (cdx("\"components\":[7]"), "expected a component object"),
            (
                cdx("\"dependencies\":[{\"ref\":\"a\",\"dependsOn\":\"b\"}]"),
                "expected an array of refs",
            ),
            (
                cdx("\"metadata\":{\"tools\":\"x\"}"),
                "expected an array of tools",
            ),
            (
                cdx("\"components\":[{\"licenses\":[{\"license\":7}]}]"),
                "expected struct LicenseObject",
            ),
            (
                "{\"spdxVersion\":\"SPDX-2.3\",\n\"packages\":[{\"name\":true}]}".into(),
                "invalid type: boolean `true`, expected a string",
            ),
            (
                "{\"spdxVersion\":\"SPDX-2.3\",\n\"relationships\":{}}".into(),
                "expected an array of relationships",
            ),
            ("{\"bomFormat\": 1}".into(), "invalid type: integer `1`"),
            ("[1, 2]".into(), "not CycloneDX JSON or XML"),
            (
                "{\"bomFormat\":\"CycloneDX\"}".into(),
                "no CycloneDX spec version",
            ),
        ] {
            let e = parse_err(doc.as_bytes());
            assert!(e.reason.contains(want), "{doc}: {e}");
            if doc.contains('\n') {
                assert_eq!(e.position.map(|p| p.line), Some(2), "{doc}: {e}");
            }
        }
        // serde quotes a whole offending string; the reason is clipped.
        let huge = format!("{{\"bomFormat\": [\"{}\"]}}", "x".repeat(1 << 20));
        let e = parse_err(huge.as_bytes());
        assert!(e.reason.len() < 250, "{}", e.reason.len());
    }

    #[test]
    fn unknown_and_unsupported_formats_are_named() {
        for (doc, kind, want) in [
            ("", SbomErrorKind::UnknownFormat, "starts with ``"),
            ("hello", SbomErrorKind::UnknownFormat, "starts with `hello`"),
            (
                "{}",
                SbomErrorKind::UnknownFormat,
                "without `bomFormat` or `spdxVersion`",
            ),
            (
                "{\"bomFormat\":\"SPDX\"}",
                SbomErrorKind::UnknownFormat,
                "not `CycloneDX`",
            ),
            (
                "{\"bomFormat\":\"CycloneDX\",\"specVersion\":\"2.0\"}",
                SbomErrorKind::Unsupported,
                "only 1.x",
            ),
            (
                "{\"spdxVersion\":\"SPDX-3.0\"}",
                SbomErrorKind::Unsupported,
                "only SPDX-2.x",
            ),
            (
                "{\"@context\":\"https://spdx.org/rdf/3.0.1/spdx-context.jsonld\",\"@graph\":[]}",
                SbomErrorKind::Unsupported,
                "SPDX 3",
            ),
            (
                "{\"bomFormat\":\"CycloneDX\",\"spdxVersion\":\"SPDX-2.3\"}",
                SbomErrorKind::Malformed,
                "both",
            ),
            (
                "spdxVersion: SPDX-2.3\n",
                SbomErrorKind::Unsupported,
                "YAML",
            ),
            (
                "<rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\"/>",
                SbomErrorKind::Unsupported,
                "RDF/XML",
            ),
            (
                "<bom xmlns=\"http://example.com/\"/>",
                SbomErrorKind::UnknownFormat,
                "not a CycloneDX <bom>",
            ),
            (
                "<bom xmlns=\"http://cyclonedx.org/schema/bom/2.0\"/>",
                SbomErrorKind::Unsupported,
                "only 1.x",
            ),
            (
                "SPDXVersion: SPDX-3.0\n",
                SbomErrorKind::Unsupported,
                "only SPDX-2.x",
            ),
        ] {
            let e = parse_err(doc.as_bytes());
            assert_eq!(e.kind, kind, "{doc}: {e}");
            assert!(e.reason.contains(want), "{doc}: {e}");
        }
        let e = parse_err(b"\x1f\x8b\x08\x00");
        assert_eq!(e.kind, SbomErrorKind::Unsupported);
        assert!(e.reason.contains("gzip"));
    }

    #[test]
    fn non_utf8_is_rejected_with_a_position() {
        let e = parse_err(b"{\"bomFormat\":\"CycloneDX\",\n\"specVersion\":\"1.\xff\"}");
        assert_eq!(e.kind, SbomErrorKind::Encoding);
        assert_eq!(e.position, pos(2, 18));
        assert_eq!(e.reason, "invalid UTF-8 starting with `\\xff\\\"}`");
        let e = parse_err(b"\xff\xfe{\x00}\x00");
        assert_eq!(e.kind, SbomErrorKind::Encoding);
        assert!(e.reason.contains("UTF-16"));
        let e = parse_err(b"SPDXVersion: SPDX-2.3\nPackageName: caf\xe9\n");
        assert_eq!(e.position, pos(2, 17));
        // A UTF-8 byte order mark is fine.
        let bytes = std::fs::read(data_dir().join("small/trivy_py36_sitepkgs.cdx.json")).unwrap();
        let with_bom = [b"\xef\xbb\xbf".as_slice(), &bytes].concat();
        assert_eq!(Sbom::parse(&with_bom, "x").unwrap().components.len(), 3);
    }

    #[test]
    fn deep_nesting_is_bounded() {
        // serde_json skips an ignored value without recursing, so deep
        // nesting there is merely read (or found truncated) in linear time.
        let deep = format!(
            "{{\"bomFormat\":\"CycloneDX\",\"specVersion\":\"1.6\",\"x\":{}{}}}",
            "[".repeat(1_000_000),
            "]".repeat(1_000_000)
        );
        assert!(
            Sbom::parse(deep.as_bytes(), "deep")
                .unwrap()
                .components
                .is_empty()
        );
        let e = parse_err(&deep.as_bytes()[..deep.len() / 2]);
        assert_eq!(e.reason, "EOF while parsing a list");

        // Nested components recurse through the parser, so serde_json's
        // recursion limit applies.
        let mut nested =
            String::from("{\"bomFormat\":\"CycloneDX\",\"specVersion\":\"1.6\",\"components\":");
        for _ in 0..10_000 {
            nested.push_str("[{\"name\":\"a\",\"components\":");
        }
        nested.push_str("null");
        nested.push_str(&"}]".repeat(10_000));
        nested.push('}');
        let e = parse_err(nested.as_bytes());
        assert!(e.reason.contains("recursion limit exceeded"), "{e}");
        let xml = format!(
            "<bom xmlns=\"http://cyclonedx.org/schema/bom/1.6\"><components>{}",
            "<component><name>a</name><components>".repeat(100_000)
        );
        let e = parse_err(xml.as_bytes());
        assert_eq!(e.kind, SbomErrorKind::Limit, "{e}");
        assert!(e.reason.contains("nested deeper than 128"), "{e}");
    }

    #[test]
    fn xml_entity_bombs_never_expand() {
        let mut laughs =
            String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE bom [\n <!ENTITY lol \"lol\">\n");
        for i in 1..=9 {
            let prev = if i == 1 {
                "lol".to_owned()
            } else {
                format!("lol{}", i - 1)
            };
            laughs.push_str(&format!(
                " <!ENTITY lol{i} \"{}\">\n",
                format!("&{prev};").repeat(10)
            ));
        }
        laughs.push_str("]>\n<bom xmlns=\"http://cyclonedx.org/schema/bom/1.6\"><components><component><name>&lol9;</name></component></components></bom>");
        let t = crate::fuzz::CpuTimer::start();
        let e = parse_err(laughs.as_bytes());
        assert_eq!(e.kind, SbomErrorKind::Unsupported);
        assert_eq!(e.position, pos(2, 1));
        assert!(e.reason.contains("<!DOCTYPE>"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(1));
        // External entities need a DTD too.
        let xxe = "<!DOCTYPE bom [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\
                   <bom xmlns=\"http://cyclonedx.org/schema/bom/1.6\"><serialNumber>&x;</serialNumber></bom>";
        assert_eq!(parse_err(xxe.as_bytes()).kind, SbomErrorKind::Unsupported);
        // Without a DTD an entity is undefined.
        let e = parse_err(
            b"<bom xmlns=\"http://cyclonedx.org/schema/bom/1.6\">\n<components><component><name>&lol9;</name>",
        );
        assert_eq!(e.position, pos(2, 30));
        assert_eq!(e.reason, "undefined entity &lol9;");
        // Many predefined entities cost linear time and a bounded string.
        let many = format!(
            "<bom xmlns=\"http://cyclonedx.org/schema/bom/1.6\"><components><component><name>{}</name></component></components></bom>",
            "&amp;".repeat(MAX_FIELD_LEN + 1)
        );
        assert_eq!(parse_err(many.as_bytes()).kind, SbomErrorKind::Limit);
    }

    /// 64 MiB inputs of several shapes: every one is refused (or read)
    /// quickly, by a cap that stops the work early where there is one.
    #[test]
    fn hostile_sizes_finish_quickly() {
        let t = crate::fuzz::CpuTimer::start();
        let e = parse_err(&vec![b' '; MAX_INPUT_BYTES + 1]);
        assert_eq!(e.kind, SbomErrorKind::TooLarge);
        assert!(e.position.is_none());

        // Random junk of exactly the largest accepted size.
        let mut rng = Rng(0x5eed);
        let junk: Vec<u8> = (0..MAX_INPUT_BYTES).map(|_| rng.next() as u8).collect();
        let e = parse_err(&junk);
        assert!(matches!(
            e.kind,
            SbomErrorKind::Encoding | SbomErrorKind::UnknownFormat
        ));
        drop(junk);

        let fill = |head: &str, unit: &str, tail: &str| -> Vec<u8> {
            let n = (MAX_INPUT_BYTES - head.len() - tail.len()) / unit.len();
            let mut v = Vec::with_capacity(MAX_INPUT_BYTES);
            v.extend_from_slice(head.as_bytes());
            for _ in 0..n {
                v.extend_from_slice(unit.as_bytes());
            }
            v.extend_from_slice(tail.as_bytes());
            v
        };
        // Millions of empty components.
        let doc = fill(
            "{\"bomFormat\":\"CycloneDX\",\"specVersion\":\"1.6\",\"components\":[{}",
            ",{}",
            "]}",
        );
        let e = parse_err(&doc);
        assert_eq!(e.kind, SbomErrorKind::Limit);
        assert_eq!(e.reason, "limit exceeded: more than 500000 components");
        // Millions of edges.
        let doc = fill(
            "{\"bomFormat\":\"CycloneDX\",\"specVersion\":\"1.6\",\"dependencies\":[{\"ref\":\"a\",\"dependsOn\":[\"b\"",
            ",\"b\"",
            "]}]}",
        );
        assert_eq!(
            parse_err(&doc).reason,
            "limit exceeded: more than 2000000 dependency edges"
        );
        let doc = fill(
            "SPDXVersion: SPDX-2.3\n",
            "Relationship: a DEPENDS_ON b\n",
            "",
        );
        assert_eq!(parse_err(&doc).kind, SbomErrorKind::Limit);
        let doc = fill(
            "<bom xmlns=\"http://cyclonedx.org/schema/bom/1.6\"><components>",
            "<component/>",
            "",
        );
        assert_eq!(parse_err(&doc).kind, SbomErrorKind::Limit);
        // One huge string where a short one is kept, and where nothing is.
        let doc = fill(
            "{\"bomFormat\":\"CycloneDX\",\"specVersion\":\"1.6\",\"serialNumber\":\"",
            "x",
            "\"}",
        );
        assert_eq!(parse_err(&doc).kind, SbomErrorKind::Limit);
        let doc = fill(
            "{\"bomFormat\":\"CycloneDX\",\"specVersion\":\"1.6\",\"description\":\"",
            "x",
            "\"}",
        );
        assert!(Sbom::parse(&doc, "big").unwrap().components.is_empty());
        let doc = fill(
            "SPDXVersion: SPDX-2.3\nPackageName: a\nPackageComment: <text>",
            "x\n",
            "</text>\n",
        );
        assert_eq!(Sbom::parse(&doc, "big").unwrap().components.len(), 1);
        assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    }

    use crate::fuzz::Rng;
    fn mutate(rng: &mut Rng, fixture: &[u8]) -> Vec<u8> {
        crate::fuzz::mutate(rng, fixture, ALPHABET)
    }

    fn random_input(rng: &mut Rng) -> Vec<u8> {
        crate::fuzz::random_input(rng, ALPHABET)
    }

    /// Bytes that are structurally meaningful to at least one syntax.
    const ALPHABET: &[u8] = b"{}[]\":,<>/=&;!?-#\n\t 0123456789abcxyz.@\\<text></text>&amp;&#x41;";

    /// A tag-value document with the parts the real files lack.
    const TAG_VALUE_SAMPLE: &str = "# comment\nSPDXVersion: SPDX-2.3\nSPDXID: SPDXRef-DOCUMENT\n\
        DocumentComment: <text>two\nlines</text>\nPackageName: app\nSPDXID: SPDXRef-app\n\
        PackageVersion: 1\nExternalRef: PACKAGE-MANAGER purl pkg:npm/app@1\n\
        PackageName: lib\nSPDXID: SPDXRef-lib\nPackageLicenseDeclared: <text>MIT</text>\n\
        Relationship: SPDXRef-DOCUMENT DESCRIBES SPDXRef-app\n\
        Relationship: SPDXRef-lib DEPENDENCY_OF SPDXRef-app\n";

    #[test]
    fn fuzz_no_panics() {
        let mut fixtures: Vec<Vec<u8>> = [
            "small/syft_py36_sitepkgs.cdx.json",
            "small/syft_py36_sitepkgs.cdx.xml",
            "small/syft_rust_auditable_fixture.cdx.json",
            "small/syft_rust_auditable_fixture.spdx.json",
            "small/trivy_py36_sitepkgs.cdx.json",
            "small/trivy_py36_sitepkgs.spdx.json",
            "small/trivy_py36_sitepkgs.spdx",
        ]
        .iter()
        .map(|f| std::fs::read(data_dir().join(f)).unwrap())
        .collect();
        fixtures.push(TAG_VALUE_SAMPLE.as_bytes().to_vec());
        fixtures.push(cyclonedx::tests::NESTED_XML.as_bytes().to_vec());
        fixtures.push(cyclonedx::tests::NESTED_JSON.as_bytes().to_vec());
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut ok, mut err) = (0, 0);
        for i in 0..6000 {
            let input = if i % 3 == 0 {
                random_input(&mut rng)
            } else {
                let f = &fixtures[rng.below(fixtures.len())];
                mutate(&mut rng, f)
            };
            match Sbom::parse(&input, "fuzz") {
                Ok(s) => {
                    ok += 1;
                    assert!(s.components.len() <= input.len());
                    check_invariants(&s);
                }
                Err(e) => {
                    err += 1;
                    assert!(e.reason.len() < 400);
                    if let Some(p) = e.position {
                        assert!(p.line >= 1 && p.line <= input.len() + 1);
                    }
                }
            }
        }
        // Both outcomes are exercised.
        assert!(ok > 100 && err > 100, "ok {ok}, err {err}");
    }
}
