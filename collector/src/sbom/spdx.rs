//! SPDX 2.x in JSON and in tag-value.
//!
//! What patchgap reads, in the JSON spelling (tag-value names in brackets):
//!
//! ```text
//! spdxVersion [SPDXVersion]              SPDX-2.3 (2.2 reads the same way)
//! SPDXID [SPDXID before any element]      the document's own id, SPDXRef-DOCUMENT
//! documentNamespace [DocumentNamespace]   a unique URI for the document
//! creationInfo.created [Created]          when it was made
//! creationInfo.creators [Creator]         "Tool: syft-1.18.1", "Organization: ..."
//! packages[] [PackageName ... ]           SPDXID, name, versionInfo [PackageVersion],
//!                                         primaryPackagePurpose, licenseDeclared,
//!                                         licenseConcluded, externalRefs[]
//!                                         [ExternalRef: CATEGORY TYPE LOCATOR]
//! relationships[] [Relationship: A TYPE B]
//! documentDescribes[]                     the 2.2 way of saying DESCRIBES
//! ```
//!
//! Files, snippets, extracted licences and annotations are skipped. Purls
//! are the `externalRefs` of type `purl` (category `PACKAGE-MANAGER`, or
//! `PACKAGE_MANAGER` as SPDX 2.2 spelled it); CPEs those of type
//! `cpe23Type` or `cpe22Type`.
//!
//! Tag-value is a sequence of `Tag: value` lines. An element starts with
//! its first tag (`PackageName`, `FileName`, `SnippetSPDXID`, `LicenseID`)
//! and every following tag belongs to it until the next element starts;
//! `SPDXID` before the first element is the document's. A value may span
//! lines when written as `<text>...</text>`. Lines starting with `#` are
//! comments (trivy and syft write `##### Package: pip` headings). A line
//! that is neither blank, a comment nor `Tag: value` is an error, as is an
//! unterminated `<text>`.
//!
//! Quirks seen in real documents:
//!
//! * syft's document root is a package for the scanned directory
//!   (`SPDXRef-DocumentRoot-Directory-...`, purpose `FILE`), which `CONTAINS`
//!   every package; dependencies between packages are `DEPENDENCY_OF`
//!   (reversed here). Its SPDXID is derived from the path syft was given,
//!   which need not be the name it reports.
//! * trivy's root is `SPDXRef-Filesystem-...` (purpose `SOURCE`); packages
//!   `CONTAINS` files as well, and those edges are dropped because files are
//!   not components.
//! * syft lists a package's evidence files as `OTHER` relationships with an
//!   "evident-by" comment; they are ignored.
//! * syft leaves `primaryPackagePurpose` out for ordinary packages, so their
//!   kind is [`ComponentKind::Unspecified`] where its CycloneDX output says
//!   `library`.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{
    Builder, CappedVec, Component, ComponentKind, Field, Key, MAX_FIELD_LEN, MAX_LIST_ITEMS,
    Position, Sbom, SbomError, SbomErrorKind, SbomFormat, SbomSyntax, limit_msg, preview,
    split_tool,
};

/// The document id when the document does not say otherwise.
const DEFAULT_DOCUMENT_ID: &str = "SPDXRef-DOCUMENT";

/// How many DESCRIBES relationships are remembered; only the first that
/// starts at the document is used.
const MAX_DESCRIBES: usize = 64;

/// What a relationship type means for the dependency graph: `Some(false)`
/// for an edge as written, `Some(true)` for one to reverse, `None` to ignore.
fn edge_direction(ty: &str) -> Option<bool> {
    match ty {
        "DEPENDS_ON" | "CONTAINS" => Some(false),
        "DEPENDENCY_OF" | "RUNTIME_DEPENDENCY_OF" | "CONTAINED_BY" => Some(true),
        _ => None,
    }
}

/// A licence value worth keeping.
fn meaningful(s: Option<String>) -> Option<String> {
    s.filter(|v| !v.is_empty() && v != "NOASSERTION" && v != "NONE")
}

/// Checks `SPDX-2.x`.
fn check_spec_version(v: &str) -> Result<(), (SbomErrorKind, String)> {
    if v.starts_with("SPDX-2.") {
        Ok(())
    } else if v.is_empty() {
        Err((SbomErrorKind::Malformed, "no SPDX version".into()))
    } else {
        Err((
            SbomErrorKind::Unsupported,
            format!(
                "SPDX version `{}` is not supported (only SPDX-2.x)",
                preview(v.as_bytes())
            ),
        ))
    }
}

/// A package being read, before it becomes a [`Component`].
#[derive(Default)]
struct Package {
    id: Option<String>,
    name: Option<String>,
    version: Option<String>,
    purpose: Option<String>,
    declared: Option<String>,
    concluded: Option<String>,
    purl: Option<String>,
    cpe: Option<String>,
    refs: usize,
}

impl Package {
    fn external_ref(&mut self, category: &str, ty: &str, locator: String) -> Result<(), String> {
        self.refs += 1;
        if self.refs > MAX_LIST_ITEMS {
            return Err(limit_msg(format_args!(
                "more than {MAX_LIST_ITEMS} external references on one package"
            )));
        }
        let category = category.trim().to_ascii_uppercase().replace('_', "-");
        match ty.trim() {
            "purl" if category == "PACKAGE-MANAGER" && self.purl.is_none() => {
                self.purl = Some(locator);
            }
            "cpe23Type" | "cpe22Type" if self.cpe.is_none() => self.cpe = Some(locator),
            _ => {}
        }
        Ok(())
    }

    fn into_component(self, b: &mut Builder) -> Component {
        let declared = meaningful(self.declared);
        let concluded = meaningful(self.concluded).filter(|c| Some(c) != declared.as_ref());
        Component {
            id: self.id.filter(|s| !s.is_empty()).map(|id| b.intern(&id)),
            name: self.name.unwrap_or_default(),
            version: self.version.filter(|s| !s.is_empty()),
            group: None,
            purl: self.purl.filter(|s| !s.is_empty()),
            kind: self
                .purpose
                .map_or(ComponentKind::Unspecified, |p| ComponentKind::parse(&p)),
            cpe: self.cpe.filter(|s| !s.is_empty()),
            licenses: declared.into_iter().chain(concluded).collect(),
            source: None,
        }
    }
}

/// What the whole document says about its own id and subject; resolved
/// once everything has been read, because the order is free.
#[derive(Default)]
struct Subject {
    document_id: Option<String>,
    /// `documentDescribes`, in order.
    listed: Vec<String>,
    /// `(element, described)` from DESCRIBES and reversed DESCRIBED_BY.
    related: Vec<(String, String)>,
}

impl Subject {
    fn add_relationship(&mut self, from: &str, ty: &str, to: &str) {
        if self.related.len() >= MAX_DESCRIBES {
            return;
        }
        match ty {
            "DESCRIBES" => self.related.push((from.to_owned(), to.to_owned())),
            "DESCRIBED_BY" => self.related.push((to.to_owned(), from.to_owned())),
            _ => {}
        }
    }

    fn resolve(self, b: &mut Builder) {
        let doc = self.document_id.as_deref().unwrap_or(DEFAULT_DOCUMENT_ID);
        let root = self.listed.into_iter().next().or_else(|| {
            self.related
                .into_iter()
                .find(|(from, _)| from == doc)
                .map(|(_, to)| to)
        });
        b.root = root.map(|r| b.intern(&r));
    }
}

/// Records one relationship line or object.
fn relationship(
    b: &mut Builder,
    subject: &mut Subject,
    from: &str,
    ty: &str,
    to: &str,
) -> Result<(), String> {
    let ty = ty.trim().to_ascii_uppercase();
    subject.add_relationship(from, &ty, to);
    match edge_direction(&ty) {
        Some(reversed) => {
            let (from, to) = if reversed { (to, from) } else { (from, to) };
            let (from, to) = (b.intern(from), b.intern(to));
            b.add_edge(from, to)
        }
        None => Ok(()),
    }
}

fn custom<E: de::Error>(msg: String) -> E {
    E::custom(msg)
}

/// Parses SPDX JSON. The caller has checked `spdxVersion`.
pub(super) fn parse_json(text: &str, file: &str) -> Result<Sbom, SbomError> {
    let mut b = Builder::new(SbomFormat::Spdx, SbomSyntax::Json);
    let mut subject = Subject::default();
    let mut de = serde_json::Deserializer::from_str(text);
    TopSeed {
        b: &mut b,
        subject: &mut subject,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end())
    .map_err(|e| SbomError::from_json(file, &e))?;
    check_spec_version(&b.spec_version)
        .map_err(|(kind, reason)| SbomError::new(file, None, kind, reason))?;
    subject.resolve(&mut b);
    Ok(b.finish())
}

#[derive(Deserialize)]
struct CreationInfo {
    created: Option<Field>,
    creators: Option<CappedVec<Field>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPackage {
    #[serde(rename = "SPDXID")]
    spdx_id: Option<Field>,
    name: Option<Field>,
    version_info: Option<Field>,
    primary_package_purpose: Option<Field>,
    license_declared: Option<Field>,
    license_concluded: Option<Field>,
    external_refs: Option<CappedVec<RawExternalRef>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawExternalRef {
    reference_category: Option<Field>,
    reference_type: Option<Field>,
    reference_locator: Option<Field>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRelationship {
    spdx_element_id: Option<Field>,
    relationship_type: Option<Field>,
    related_spdx_element: Option<Field>,
}

fn text(f: Option<Field>) -> Option<String> {
    f.map(|Field(s)| s).filter(|s| !s.is_empty())
}

struct TopSeed<'b> {
    b: &'b mut Builder,
    subject: &'b mut Subject,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an SPDX document object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(k)) = map.next_key()? {
            match &*k {
                "spdxVersion" => self.b.spec_version = map.next_value::<Field>()?.0,
                "SPDXID" => self.subject.document_id = text(map.next_value()?),
                "documentNamespace" => self.b.serial = text(map.next_value()?),
                "creationInfo" => {
                    if let Some(info) = map.next_value::<Option<CreationInfo>>()? {
                        self.b.created = text(info.created);
                        for Field(c) in info.creators.map(|c| c.0).unwrap_or_default() {
                            if let Some(tool) = c.strip_prefix("Tool:") {
                                let (name, version) = split_tool(tool);
                                self.b.add_tool(name, version).map_err(custom)?;
                            }
                        }
                    }
                }
                "documentDescribes" => {
                    let list: Option<CappedVec<Field>> = map.next_value()?;
                    self.subject.listed = list
                        .map(|l| l.0)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|Field(s)| s)
                        .collect();
                }
                "packages" => map.next_value_seed(PackagesSeed { b: &mut *self.b })?,
                "relationships" => map.next_value_seed(RelationshipsSeed {
                    b: &mut *self.b,
                    subject: &mut *self.subject,
                })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct PackagesSeed<'b> {
    b: &'b mut Builder,
}

impl<'de> DeserializeSeed<'de> for PackagesSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PackagesSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of packages")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<RawPackage>()? {
            let mut p = Package {
                id: text(raw.spdx_id),
                name: text(raw.name),
                version: text(raw.version_info),
                purpose: text(raw.primary_package_purpose),
                declared: text(raw.license_declared),
                concluded: text(raw.license_concluded),
                ..Package::default()
            };
            for r in raw.external_refs.map(|r| r.0).unwrap_or_default() {
                if let Some(locator) = text(r.reference_locator) {
                    let category = text(r.reference_category).unwrap_or_default();
                    let ty = text(r.reference_type).unwrap_or_default();
                    p.external_ref(&category, &ty, locator).map_err(custom)?;
                }
            }
            let c = p.into_component(self.b);
            self.b.add_component(c).map_err(custom)?;
        }
        Ok(())
    }
}

struct RelationshipsSeed<'b> {
    b: &'b mut Builder,
    subject: &'b mut Subject,
}

impl<'de> DeserializeSeed<'de> for RelationshipsSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RelationshipsSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of relationships")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(r) = seq.next_element::<RawRelationship>()? {
            if let (Some(from), Some(ty), Some(to)) = (
                text(r.spdx_element_id),
                text(r.relationship_type),
                text(r.related_spdx_element),
            ) {
                relationship(self.b, self.subject, &from, &ty, &to).map_err(custom)?;
            }
        }
        Ok(())
    }
}

/// Whether `text` starts (after blank and comment lines) with the
/// `SPDXVersion:` tag.
pub(super) fn looks_like_tag_value(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .is_some_and(|l| l.starts_with("SPDXVersion:"))
}

/// Which element the tag-value lines currently describe.
enum Element {
    /// No element yet: tags describe the document.
    Document,
    /// A package.
    Package(Package),
    /// A file, snippet or extracted licence: skipped.
    Other,
}

/// Parses SPDX tag-value.
pub(super) fn parse_tag_value(text: &str, file: &str) -> Result<Sbom, SbomError> {
    let mut b = Builder::new(SbomFormat::Spdx, SbomSyntax::TagValue);
    let mut subject = Subject::default();
    let mut element = Element::Document;
    let error = |line: usize, kind: SbomErrorKind, reason: String| {
        SbomError::new(file, Some(Position { line, column: None }), kind, reason)
    };
    let limit = |line: usize, reason: String| error(line, SbomErrorKind::Limit, reason);
    let mut pos = 0;
    let mut line_no = 0;
    while pos < text.len() {
        line_no += 1;
        let line_end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
        let line = &text[pos..line_end];
        let line_start = pos;
        pos = line_end + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((tag, value)) = line.split_once(':') else {
            return Err(error(
                line_no,
                SbomErrorKind::Malformed,
                format!(
                    "expected `Tag: value`, found `{}`",
                    preview(trimmed.as_bytes())
                ),
            ));
        };
        let tag = tag.trim();
        if tag.is_empty() || !tag.bytes().all(|c| c.is_ascii_alphanumeric()) {
            return Err(error(
                line_no,
                SbomErrorKind::Malformed,
                format!("`{}` is not a tag", preview(tag.as_bytes())),
            ));
        }
        let mut value = value.trim();
        if let Some(body) = value.strip_prefix("<text>") {
            if let Some(end) = body.find("</text>") {
                value = &body[..end];
            } else {
                // The value runs on to a later line; find where it ends
                // in the whole text and resume after that line.
                let body_start = line_start + (line.len() - body.len());
                let Some(len) = text[body_start..].find("</text>") else {
                    return Err(error(
                        line_no,
                        SbomErrorKind::Malformed,
                        format!("<text> of {tag} is not closed by </text>"),
                    ));
                };
                value = &text[body_start..body_start + len];
                let close = body_start + len;
                let after = text[close..].find('\n').map_or(text.len(), |i| close + i);
                line_no += text[line_end.min(after)..after]
                    .bytes()
                    .filter(|&c| c == b'\n')
                    .count();
                pos = after + 1;
            }
            value = value.trim();
        }
        // Multi-line values are kept only by the tags below; the length
        // check is what bounds them.
        let keep = |v: &str| -> Result<String, SbomError> {
            if v.len() > MAX_FIELD_LEN {
                Err(error(
                    line_no,
                    SbomErrorKind::Limit,
                    limit_msg(format_args!(
                        "{tag} value longer than {MAX_FIELD_LEN} bytes"
                    )),
                ))
            } else {
                Ok(v.to_owned())
            }
        };
        match tag {
            "SPDXVersion" if b.spec_version.is_empty() => {
                b.spec_version = keep(value)?;
                check_spec_version(value).map_err(|(kind, reason)| error(line_no, kind, reason))?;
            }
            "DocumentNamespace" => b.serial = Some(keep(value)?),
            "Created" => b.created = Some(keep(value)?),
            "Creator" => {
                if let Some(tool) = value.strip_prefix("Tool:") {
                    let (name, version) = split_tool(&keep(tool)?);
                    b.add_tool(name, version).map_err(|e| limit(line_no, e))?;
                }
            }
            "SPDXID" => match &mut element {
                Element::Document if subject.document_id.is_none() => {
                    subject.document_id = Some(keep(value)?);
                }
                Element::Package(p) if p.id.is_none() => p.id = Some(keep(value)?),
                _ => {}
            },
            "PackageName" | "FileName" | "SnippetSPDXID" | "LicenseID" => {
                if let Element::Package(p) = std::mem::replace(&mut element, Element::Other) {
                    let c = p.into_component(&mut b);
                    b.add_component(c).map_err(|e| limit(line_no, e))?;
                }
                if tag == "PackageName" {
                    element = Element::Package(Package {
                        name: Some(keep(value)?),
                        ..Package::default()
                    });
                }
            }
            "PackageVersion"
            | "PrimaryPackagePurpose"
            | "PackageLicenseDeclared"
            | "PackageLicenseConcluded"
            | "ExternalRef" => {
                let Element::Package(p) = &mut element else {
                    continue;
                };
                let v = keep(value)?;
                match tag {
                    "PackageVersion" => p.version = Some(v),
                    "PrimaryPackagePurpose" => p.purpose = Some(v),
                    "PackageLicenseDeclared" => p.declared = Some(v),
                    "PackageLicenseConcluded" => p.concluded = Some(v),
                    _ => {
                        let mut parts = v.split_whitespace();
                        let (Some(category), Some(ty), Some(locator), None) =
                            (parts.next(), parts.next(), parts.next(), parts.next())
                        else {
                            return Err(error(
                                line_no,
                                SbomErrorKind::Malformed,
                                "ExternalRef needs CATEGORY TYPE LOCATOR".into(),
                            ));
                        };
                        p.external_ref(category, ty, locator.to_owned())
                            .map_err(|e| limit(line_no, e))?;
                    }
                }
            }
            "Relationship" => {
                let mut parts = value.split_whitespace();
                let (Some(from), Some(ty), Some(to), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Err(error(
                        line_no,
                        SbomErrorKind::Malformed,
                        "Relationship needs ELEMENT TYPE ELEMENT".into(),
                    ));
                };
                let (from, to) = (keep(from)?, keep(to)?);
                relationship(&mut b, &mut subject, &from, ty, &to)
                    .map_err(|e| limit(line_no, e))?;
            }
            _ => {}
        }
    }
    if let Element::Package(p) = element {
        let c = p.into_component(&mut b);
        b.add_component(c).map_err(|e| limit(line_no, e))?;
    }
    check_spec_version(&b.spec_version)
        .map_err(|(kind, reason)| SbomError::new(file, None, kind, reason))?;
    subject.resolve(&mut b);
    Ok(b.finish())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check_invariants, load};
    use super::*;

    fn tv(doc: &str) -> Result<Sbom, SbomError> {
        Sbom::parse(doc.as_bytes(), "doc.spdx")
    }

    fn line(n: usize) -> Option<Position> {
        Some(Position {
            line: n,
            column: None,
        })
    }

    #[test]
    fn real_syft_document_root_and_files() {
        let s = load("small/syft_py36_sitepkgs.spdx");
        assert_eq!(
            s.root.as_deref(),
            Some(
                "SPDXRef-DocumentRoot-Directory--root-.pyenv-versions-3.6.15-lib-python3.6-site-packages"
            )
        );
        // 797 files CONTAINED by packages, and no component for any of them.
        assert_eq!(s.dropped_edges, 797);
        let pip = s.components.iter().find(|c| c.name == "pip").unwrap();
        assert_eq!(pip.purl.as_deref(), Some("pkg:pypi/pip@18.1"));
        assert_eq!(pip.licenses, ["MIT"]);
        assert_eq!(
            pip.cpe.as_deref(),
            Some("cpe:2.3:a:pip_developers_project:python-pip:18.1:*:*:*:*:*:*:*")
        );
        // The rust fixture's root id names a path other than its name.
        let s = load("small/syft_rust_auditable_fixture.spdx.json");
        assert_eq!(
            s.root.as_deref(),
            Some("SPDXRef-DocumentRoot-Directory--tmp-peers-rsbin")
        );
        assert_eq!(s.root_component().unwrap().name, "/opt/fixtures/rsbin");
    }

    #[test]
    fn tag_value_multi_line_text_and_elements() {
        let doc = "\
# A hand-written document.
SPDXVersion: SPDX-2.3
DataLicense: CC0-1.0
SPDXID: SPDXRef-DOC
DocumentNamespace: https://example.com/doc-1
DocumentComment: <text>first line
second line: with a colon
PackageName: not-a-package
</text>
Creator: Tool: hand-made 0.1
Created: 2026-01-01T00:00:00Z

FileName: ./a.txt
SPDXID: SPDXRef-File-a
PackageVersion: 9

PackageName: <text>app</text>
SPDXID: SPDXRef-app
PackageVersion: 1.0
PrimaryPackagePurpose: APPLICATION
PackageLicenseDeclared: <text>Apache-2.0
OR MIT</text>
PackageLicenseConcluded: NOASSERTION
ExternalRef: SECURITY cpe23Type cpe:2.3:a:x:app:1.0:*:*:*:*:*:*:*
ExternalRef: PACKAGE_MANAGER purl pkg:npm/app@1.0
ExternalRef: PACKAGE-MANAGER purl pkg:npm/second@1.0
PackageDescription: <text>
  many lines
</text>

PackageName: lib
SPDXID: SPDXRef-lib
PackageLicenseDeclared: NONE
PackageLicenseConcluded: BSD-2-Clause

LicenseID: LicenseRef-x
ExtractedText: <text>PackageName: still not a package</text>

Relationship: SPDXRef-app DESCRIBED_BY SPDXRef-DOC
Relationship: SPDXRef-lib DEPENDENCY_OF SPDXRef-app
Relationship: SPDXRef-app CONTAINS SPDXRef-File-a
Relationship: SPDXRef-app DEV_DEPENDENCY_OF SPDXRef-lib
Relationship: SPDXRef-app OTHER SPDXRef-lib
";
        let s = tv(doc).unwrap();
        check_invariants(&s);
        assert_eq!(s.spec_version, "SPDX-2.3");
        assert_eq!(s.serial.as_deref(), Some("https://example.com/doc-1"));
        assert_eq!(
            s.tools,
            [super::super::Tool {
                name: "hand-made".into(),
                version: Some("0.1".into())
            }]
        );
        assert_eq!(s.components.len(), 2);
        let app = &s.components[0];
        assert_eq!(app.id.as_deref(), Some("SPDXRef-app"));
        assert_eq!(app.name, "app");
        assert_eq!(app.version.as_deref(), Some("1.0"));
        assert_eq!(app.kind, ComponentKind::Application);
        assert_eq!(app.licenses, ["Apache-2.0\nOR MIT"]);
        assert_eq!(app.purl.as_deref(), Some("pkg:npm/app@1.0"));
        assert_eq!(
            app.cpe.as_deref(),
            Some("cpe:2.3:a:x:app:1.0:*:*:*:*:*:*:*")
        );
        let lib = &s.components[1];
        assert_eq!(
            (lib.version.as_deref(), lib.kind),
            (None, ComponentKind::Unspecified)
        );
        assert_eq!(lib.licenses, ["BSD-2-Clause"]);
        // DESCRIBED_BY names the root; DEPENDENCY_OF is reversed; the file
        // edge is dropped; dev dependencies and OTHER are ignored.
        assert_eq!(s.root.as_deref(), Some("SPDXRef-app"));
        assert_eq!(
            s.edges,
            [(
                std::sync::Arc::from("SPDXRef-app"),
                std::sync::Arc::from("SPDXRef-lib")
            )]
        );
        assert_eq!(s.dropped_edges, 1);
        assert_eq!(
            s.pulled_in_by("SPDXRef-lib"),
            [["SPDXRef-app", "SPDXRef-lib"]]
        );
    }

    #[test]
    fn tag_value_errors_name_the_line() {
        let head = "SPDXVersion: SPDX-2.3\nDocumentComment: <text>a\nb\nc</text>\n";
        for (body, at, want) in [
            (
                "just words\n",
                5,
                "expected `Tag: value`, found `just words`",
            ),
            ("Bad Tag: x\n", 5, "`Bad Tag` is not a tag"),
            (
                "PackageName: a\nExternalRef: purl pkg:npm/a@1\n",
                6,
                "ExternalRef needs CATEGORY TYPE LOCATOR",
            ),
            (
                "Relationship: a DEPENDS_ON\n",
                5,
                "Relationship needs ELEMENT TYPE ELEMENT",
            ),
            (
                "\n\nPackageComment: <text>never closed\n\n",
                7,
                "<text> of PackageComment is not closed by </text>",
            ),
        ] {
            let e = tv(&format!("{head}{body}")).unwrap_err();
            assert_eq!(e.position, line(at), "{body:?}: {e}");
            assert_eq!(e.reason, want);
        }
        let e = tv(&format!(
            "SPDXVersion: SPDX-2.3\nPackageName: {}\n",
            "n".repeat(MAX_FIELD_LEN + 1)
        ))
        .unwrap_err();
        assert_eq!((e.kind, e.position), (SbomErrorKind::Limit, line(2)));
        let refs = "ExternalRef: SECURITY cpe23Type x\n".repeat(MAX_LIST_ITEMS + 1);
        let e = tv(&format!("SPDXVersion: SPDX-2.3\nPackageName: a\n{refs}")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "doc.spdx:1027: limit exceeded: more than 1024 external references on one package"
        );
        // CRLF line ends are fine.
        let s = tv("SPDXVersion: SPDX-2.3\r\nPackageName: a\r\nSPDXID: SPDXRef-a\r\n").unwrap();
        assert_eq!(s.components[0].id.as_deref(), Some("SPDXRef-a"));
    }

    #[test]
    fn json_order_describes_and_spdx_2_2() {
        // Relationships before packages, the document id after them,
        // documentDescribes (2.2) and PACKAGE_MANAGER (2.2 spelling).
        let doc = r#"{
  "relationships": [
    {"spdxElementId": "SPDXRef-a", "relationshipType": "DEPENDS_ON", "relatedSpdxElement": "SPDXRef-b"},
    {"spdxElementId": "SPDXRef-c", "relationshipType": "CONTAINED_BY", "relatedSpdxElement": "SPDXRef-b"},
    {"spdxElementId": "SPDXRef-c", "relationshipType": "runtime_dependency_of", "relatedSpdxElement": "SPDXRef-a"},
    {"spdxElementId": "SPDXRef-D", "relationshipType": "DESCRIBES", "relatedSpdxElement": "SPDXRef-b"},
    {"spdxElementId": "SPDXRef-a", "relationshipType": "DEPENDS_ON", "relatedSpdxElement": "NOASSERTION"},
    {"spdxElementId": "SPDXRef-a", "relationshipType": "DEPENDS_ON"}
  ],
  "packages": [
    {"SPDXID": "SPDXRef-a", "name": "a", "versionInfo": "1", "externalRefs": [
      {"referenceCategory": "PACKAGE_MANAGER", "referenceType": "purl", "referenceLocator": "pkg:golang/example.com/a@v1"}]},
    {"SPDXID": "SPDXRef-b", "name": "b", "primaryPackagePurpose": "OPERATING_SYSTEM"},
    {"SPDXID": "SPDXRef-c", "name": "c", "licenseDeclared": "MIT", "licenseConcluded": "MIT"}
  ],
  "spdxVersion": "SPDX-2.2",
  "documentDescribes": ["SPDXRef-a"],
  "SPDXID": "SPDXRef-D",
  "creationInfo": {"created": "2026-01-01T00:00:00Z", "creators": ["Person: me", "Tool: x"]}
}"#;
        let s = Sbom::parse(doc.as_bytes(), "d.json").unwrap();
        check_invariants(&s);
        assert_eq!(s.spec_version, "SPDX-2.2");
        assert_eq!(
            s.root.as_deref(),
            Some("SPDXRef-a"),
            "documentDescribes comes first"
        );
        assert_eq!(
            s.components[0].purl.as_deref(),
            Some("pkg:golang/example.com/a@v1")
        );
        assert_eq!(s.components[1].kind, ComponentKind::OperatingSystem);
        assert_eq!(s.components[2].licenses, ["MIT"]);
        let edges: Vec<(&str, &str)> = s.edges.iter().map(|(a, b)| (&**a, &**b)).collect();
        assert_eq!(
            edges,
            [
                ("SPDXRef-a", "SPDXRef-b"),
                ("SPDXRef-b", "SPDXRef-c"),
                ("SPDXRef-a", "SPDXRef-c")
            ]
        );
        assert_eq!(s.dropped_edges, 1);
        assert_eq!(
            s.tools,
            [super::super::Tool {
                name: "x".into(),
                version: None
            }]
        );
        assert_eq!(
            s.pulled_in_by("SPDXRef-c"),
            [
                vec!["SPDXRef-a", "SPDXRef-c"],
                vec!["SPDXRef-a", "SPDXRef-b", "SPDXRef-c"]
            ]
        );
        // Without documentDescribes, the DESCRIBES from the document's own
        // SPDXID names the root.
        let doc = doc.replace("\"documentDescribes\": [\"SPDXRef-a\"],", "");
        let s = Sbom::parse(doc.as_bytes(), "d.json").unwrap();
        assert_eq!(s.root.as_deref(), Some("SPDXRef-b"));
    }
}
