//! CycloneDX 1.x in JSON and XML.
//!
//! Both syntaxes carry the same document; what patchgap reads from it is:
//!
//! ```text
//! specVersion (JSON) / the namespace http://cyclonedx.org/schema/bom/1.x (XML)
//! serialNumber                      urn:uuid:..., a JSON key or an XML attribute
//! metadata.timestamp                when the BOM was made
//! metadata.tools                    1.4: an array of {vendor, name, version}
//!                                   1.5+: {components: [...], services: [...]}
//! metadata.component                the subject (an image, a directory, an application)
//! components[]                      bom-ref, type, group, name, version, purl, cpe,
//!                                   licenses[], components[] (nested, flattened here)
//! dependencies[]                    {ref, dependsOn: [ref, ...]}; in XML
//!                                   <dependency ref><dependency ref/></dependency>
//! ```
//!
//! Everything else (hashes, properties, evidence, external references,
//! services, vulnerabilities, compositions, formulation) is skipped without
//! being kept. `licenses[]` holds `{license: {id | name}}` or
//! `{expression}` in JSON and `<license><id>`, `<license><name>`,
//! `<expression>` in XML.
//!
//! Quirks seen in real documents:
//!
//! * cyclonedx-py writes no `metadata.component` for an environment scan, so
//!   such a BOM has no root; its `dependencies` list every package with its
//!   own `dependsOn`, and chains start at packages nothing depends on.
//! * trivy makes the root depend on an `operating-system` component (no
//!   purl) which depends on every Debian package, and writes empty
//!   `dependsOn` lists for leaves.
//! * syft writes `dependencies` only where a package has some; its root
//!   (`type: file`, the scanned directory) has no edges at all.
//! * Components nested in a component are rare in scanner output but
//!   allowed at any depth; they are flattened, parent first.
//!
//! The JSON reader streams: components and edges go straight into the
//! shared builder through `serde::de::DeserializeSeed` implementations, so
//! the caps apply while reading and nothing is buffered as a
//! `serde_json::Value`. The XML reader walks the events of `xml::Reader`
//! the same way. Elements in a namespace other than the root's are skipped.

use std::{fmt, sync::Arc};

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::xml::{Event, Reader, Start, XmlError, split_name};
use super::{
    Builder, CappedVec, ComponentKind, Field, Key, MAX_EDGES, MAX_FIELD_LEN, MAX_LIST_ITEMS, Sbom,
    SbomError, SbomErrorKind, SbomFormat, SbomSyntax, limit_msg, preview,
};

/// The namespace of CycloneDX XML, without the version.
const XML_NAMESPACE: &str = "http://cyclonedx.org/schema/bom/";

/// Checks that `v` is a CycloneDX 1.x version (`1.4`, `1.7`).
fn check_spec_version(v: &str) -> Result<(), (SbomErrorKind, String)> {
    let ok = v
        .strip_prefix("1.")
        .is_some_and(|minor| !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else if v.is_empty() {
        Err((SbomErrorKind::Malformed, "no CycloneDX spec version".into()))
    } else {
        Err((
            SbomErrorKind::Unsupported,
            format!(
                "CycloneDX spec version `{}` is not supported (only 1.x)",
                preview(v.as_bytes())
            ),
        ))
    }
}

/// Parses CycloneDX JSON. The caller has checked `bomFormat`.
pub(super) fn parse_json(text: &str, file: &str) -> Result<Sbom, SbomError> {
    let mut b = Builder::new(SbomFormat::CycloneDx, SbomSyntax::Json);
    let mut de = serde_json::Deserializer::from_str(text);
    TopSeed { b: &mut b }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| SbomError::from_json(file, &e))?;
    check_spec_version(&b.spec_version)
        .map_err(|(kind, reason)| SbomError::new(file, None, kind, reason))?;
    Ok(b.finish())
}

/// The `licenses[]` entries of JSON.
#[derive(Deserialize)]
struct LicenseChoice {
    license: Option<LicenseObject>,
    expression: Option<Field>,
}

#[derive(Deserialize)]
struct LicenseObject {
    id: Option<Field>,
    name: Option<Field>,
}

/// A `properties[]` entry.
#[derive(Deserialize)]
struct Property {
    name: Option<Field>,
    value: Option<Field>,
}

/// The property trivy names an OS package's source package with.
const TRIVY_SOURCE: &str = "aquasecurity:trivy:SrcName";

/// A tool in either the 1.4 array or the 1.5+ `components`/`services`.
#[derive(Deserialize)]
struct ToolEntry {
    name: Option<Field>,
    version: Option<Field>,
}

/// Keeps a non-empty, meaningful string.
fn non_empty(f: Option<Field>) -> Option<String> {
    f.map(|Field(s)| s).filter(|s| !s.is_empty())
}

fn custom<E: de::Error>(msg: String) -> E {
    E::custom(msg)
}

struct TopSeed<'b> {
    b: &'b mut Builder,
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
        f.write_str("a CycloneDX BOM object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(k)) = map.next_key()? {
            match &*k {
                "specVersion" => self.b.spec_version = map.next_value::<Field>()?.0,
                "serialNumber" => self.b.serial = non_empty(map.next_value()?),
                "metadata" => map.next_value_seed(MetadataSeed { b: self.b })?,
                "components" => map.next_value_seed(ComponentsSeed { b: self.b })?,
                "dependencies" => map.next_value_seed(DependenciesSeed { b: self.b })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct MetadataSeed<'b> {
    b: &'b mut Builder,
}

impl<'de> DeserializeSeed<'de> for MetadataSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MetadataSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a metadata object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(k)) = map.next_key()? {
            match &*k {
                "timestamp" => self.b.created = non_empty(map.next_value()?),
                "tools" => map.next_value_seed(ToolsSeed { b: self.b })?,
                "component" => {
                    if let Some(id) = map.next_value_seed(ComponentSeed { b: self.b })? {
                        self.b.root = Some(id);
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct ToolsSeed<'b> {
    b: &'b mut Builder,
}

impl ToolsSeed<'_> {
    fn add<E: de::Error>(&mut self, t: ToolEntry) -> Result<(), E> {
        match non_empty(t.name) {
            Some(name) => self.b.add_tool(name, non_empty(t.version)).map_err(custom),
            None => Ok(()),
        }
    }
}

impl<'de> DeserializeSeed<'de> for ToolsSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ToolsSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of tools or an object with tool components and services")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    // CycloneDX 1.4 and earlier: [{vendor, name, version}].
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(t) = seq.next_element::<ToolEntry>()? {
            self.add(t)?;
        }
        Ok(())
    }
    // CycloneDX 1.5 and later: {components: [...], services: [...]}.
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(k)) = map.next_key()? {
            match &*k {
                "components" | "services" => {
                    let list: Option<CappedVec<ToolEntry>> = map.next_value()?;
                    for t in list.map(|l| l.0).unwrap_or_default() {
                        self.add(t)?;
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct ComponentsSeed<'b> {
    b: &'b mut Builder,
}

impl<'de> DeserializeSeed<'de> for ComponentsSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ComponentsSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of components")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(ComponentSeed { b: &mut *self.b })?
            .is_some()
        {}
        Ok(())
    }
}

/// One component object; yields its id. Nested components are added after
/// it (the parent's slot is reserved first).
struct ComponentSeed<'b> {
    b: &'b mut Builder,
}

impl<'de> DeserializeSeed<'de> for ComponentSeed<'_> {
    type Value = Option<Arc<str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ComponentSeed<'_> {
    type Value = Option<Arc<str>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a component object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let slot = self.b.reserve_component().map_err(custom)?;
        let mut c = super::Component::empty();
        while let Some(Key(k)) = map.next_key()? {
            match &*k {
                "bom-ref" => {
                    c.id = non_empty(map.next_value()?).map(|id| self.b.intern(&id));
                }
                "type" => {
                    c.kind = non_empty(map.next_value()?)
                        .map_or(ComponentKind::Unspecified, |t| ComponentKind::parse(&t));
                }
                "name" => c.name = non_empty(map.next_value()?).unwrap_or_default(),
                "version" => c.version = non_empty(map.next_value()?),
                "group" => c.group = non_empty(map.next_value()?),
                "purl" => c.purl = non_empty(map.next_value()?),
                "cpe" => c.cpe = non_empty(map.next_value()?),
                "licenses" => {
                    let list: Option<CappedVec<LicenseChoice>> = map.next_value()?;
                    c.licenses = list
                        .map(|l| l.0)
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|l| {
                            l.license
                                .and_then(|o| non_empty(o.id).or(non_empty(o.name)))
                                .or(non_empty(l.expression))
                        })
                        .collect();
                }
                "components" => map.next_value_seed(ComponentsSeed { b: &mut *self.b })?,
                "properties" => {
                    let list: Option<CappedVec<Property>> = map.next_value()?;
                    c.source = list.and_then(|l| {
                        l.0.into_iter()
                            .find(|p| non_empty(p.name.clone()).as_deref() == Some(TRIVY_SOURCE))
                            .and_then(|p| non_empty(p.value))
                    });
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let id = c.id.clone();
        self.b.components[slot] = c;
        Ok(id)
    }
}

struct DependenciesSeed<'b> {
    b: &'b mut Builder,
}

impl<'de> DeserializeSeed<'de> for DependenciesSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DependenciesSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of dependencies")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(DependencySeed { b: &mut *self.b })?
            .is_some()
        {}
        Ok(())
    }
}

/// `{ref, dependsOn}`, in either key order.
struct DependencySeed<'b> {
    b: &'b mut Builder,
}

impl<'de> DeserializeSeed<'de> for DependencySeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DependencySeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a dependency object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut from = None;
        let mut to = Vec::new();
        while let Some(Key(k)) = map.next_key()? {
            match &*k {
                "ref" => from = non_empty(map.next_value()?).map(|r| self.b.intern(&r)),
                "dependsOn" => map.next_value_seed(DependsOnSeed {
                    b: &mut *self.b,
                    out: &mut to,
                })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if let Some(from) = from {
            for to in to {
                self.b.add_edge(Arc::clone(&from), to).map_err(custom)?;
            }
        }
        Ok(())
    }
}

/// The `dependsOn` list: refs are interned as they are read, and counted
/// against [`MAX_EDGES`] before they are stored.
struct DependsOnSeed<'b> {
    b: &'b mut Builder,
    out: &'b mut Vec<Arc<str>>,
}

impl<'de> DeserializeSeed<'de> for DependsOnSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DependsOnSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of refs")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(Field(to)) = seq.next_element()? {
            if self.b.edges.len() + self.out.len() >= MAX_EDGES {
                return Err(custom(limit_msg(format_args!(
                    "more than {MAX_EDGES} dependency edges"
                ))));
            }
            if !to.is_empty() {
                self.out.push(self.b.intern(&to));
            }
        }
        Ok(())
    }
}

/// Parses CycloneDX XML.
pub(super) fn parse_xml(text: &str, file: &str) -> Result<Sbom, SbomError> {
    let to_error = |e: XmlError| SbomError::at_offset(file, text, e.offset, e.kind, e.reason);
    let mut r = Reader::new(text);
    let root = loop {
        match r.next_event().map_err(to_error)? {
            Event::Start(s) => break s,
            // Text and ends cannot come before the root; Eof is an error
            // from the reader there.
            _ => continue,
        }
    };
    let (prefix, local) = split_name(root.name);
    let ns_attr = prefix.map_or_else(|| "xmlns".to_owned(), |p| format!("xmlns:{p}"));
    let ns = root.attr(&ns_attr).unwrap_or_default().to_owned();
    let Some(version) = ns.strip_prefix(XML_NAMESPACE).filter(|_| local == "bom") else {
        let (kind, reason) = if local == "RDF" {
            (
                SbomErrorKind::Unsupported,
                "SPDX RDF/XML is not supported; export SPDX JSON or tag-value".to_owned(),
            )
        } else {
            (
                SbomErrorKind::UnknownFormat,
                format!(
                    "XML root element <{}> in namespace `{}` is not a CycloneDX <bom>",
                    preview(root.name.as_bytes()),
                    preview(ns.as_bytes())
                ),
            )
        };
        return Err(SbomError::at_offset(file, text, root.offset, kind, reason));
    };
    check_spec_version(version)
        .map_err(|(kind, reason)| SbomError::at_offset(file, text, root.offset, kind, reason))?;
    let mut x = XmlBom {
        r,
        b: Builder::new(SbomFormat::CycloneDx, SbomSyntax::Xml),
        prefix,
        ns_attr,
        ns: ns.clone(),
    };
    x.b.spec_version = version.to_owned();
    x.read_bom(&root).map_err(to_error)?;
    Ok(x.b.finish())
}

/// The state of one XML parse.
struct XmlBom<'a> {
    r: Reader<'a>,
    b: Builder,
    /// The root element's prefix: elements with another are foreign.
    prefix: Option<&'a str>,
    /// `xmlns` or `xmlns:PREFIX`, and its value on the root.
    ns_attr: String,
    ns: String,
}

/// What the next child of the current element is.
enum Child<'a> {
    /// A CycloneDX element, by local name.
    Ours(&'a str, Start<'a>),
    /// An element of another namespace (an extension); skip it.
    Foreign,
    /// The current element has ended.
    End,
}

impl<'a> XmlBom<'a> {
    fn limit(&self, reason: String) -> XmlError {
        XmlError {
            offset: self.r.offset(),
            kind: SbomErrorKind::Limit,
            reason,
        }
    }

    /// Reads up to the next child element (or the end of the current one).
    fn next_child(&mut self) -> Result<Child<'a>, XmlError> {
        loop {
            match self.r.next_event()? {
                Event::Start(s) => {
                    let (prefix, local) = split_name(s.name);
                    let redeclared = s.attr(&self.ns_attr).is_some_and(|ns| ns != self.ns);
                    return Ok(if prefix == self.prefix && !redeclared {
                        Child::Ours(local, s)
                    } else {
                        Child::Foreign
                    });
                }
                Event::End | Event::Eof => return Ok(Child::End),
                Event::Text(_) => {}
            }
        }
    }

    /// Calls `f` for each CycloneDX child of the current element, skipping
    /// foreign ones, through the element's end.
    fn children(
        &mut self,
        mut f: impl FnMut(&mut Self, &'a str, Start<'a>) -> Result<(), XmlError>,
    ) -> Result<(), XmlError> {
        loop {
            match self.next_child()? {
                Child::Ours(local, s) => f(self, local, s)?,
                Child::Foreign => self.r.skip_element()?,
                Child::End => return Ok(()),
            }
        }
    }

    fn text(&mut self) -> Result<Option<String>, XmlError> {
        let t = self.r.read_text(MAX_FIELD_LEN)?;
        Ok((!t.is_empty()).then_some(t))
    }

    /// An attribute value that is kept.
    fn attr(&self, s: &Start<'a>, name: &str) -> Result<Option<String>, XmlError> {
        match s.attr(name).map(str::trim) {
            Some(v) if v.len() > MAX_FIELD_LEN => Err(XmlError {
                offset: s.offset,
                kind: SbomErrorKind::Limit,
                reason: limit_msg(format_args!(
                    "attribute {name} is longer than {MAX_FIELD_LEN} bytes"
                )),
            }),
            Some("") | None => Ok(None),
            Some(v) => Ok(Some(v.to_owned())),
        }
    }

    fn read_bom(&mut self, root: &Start<'a>) -> Result<(), XmlError> {
        self.b.serial = self.attr(root, "serialNumber")?;
        self.children(|x, local, _| match local {
            "metadata" => x.read_metadata(),
            "components" => x.read_components(),
            "dependencies" => x.children(|x, local, s| match local {
                "dependency" => {
                    let from = x.attr(&s, "ref")?.map(|r| x.b.intern(&r));
                    x.read_dependency(from)
                }
                _ => x.r.skip_element(),
            }),
            _ => x.r.skip_element(),
        })?;
        // The reader refuses anything but comments after the root.
        match self.r.next_event()? {
            Event::Eof => Ok(()),
            _ => Err(XmlError {
                offset: self.r.offset(),
                kind: SbomErrorKind::Malformed,
                reason: "content after the root element".into(),
            }),
        }
    }

    fn read_metadata(&mut self) -> Result<(), XmlError> {
        self.children(|x, local, s| match local {
            "timestamp" => {
                x.b.created = x.text()?;
                Ok(())
            }
            "tools" => x.read_tools(),
            "component" => {
                if let Some(id) = x.read_component(&s)? {
                    x.b.root = Some(id);
                }
                Ok(())
            }
            _ => x.r.skip_element(),
        })
    }

    fn read_tools(&mut self) -> Result<(), XmlError> {
        self.children(|x, local, _| match local {
            // CycloneDX 1.4 and earlier.
            "tool" => x.read_tool(),
            // CycloneDX 1.5 and later.
            "components" | "services" => x.children(|x, local, _| match local {
                "component" | "service" => x.read_tool(),
                _ => x.r.skip_element(),
            }),
            _ => x.r.skip_element(),
        })
    }

    fn read_tool(&mut self) -> Result<(), XmlError> {
        let (mut name, mut version) = (None, None);
        self.children(|x, local, _| {
            match local {
                "name" => name = x.text()?,
                "version" => version = x.text()?,
                _ => x.r.skip_element()?,
            }
            Ok(())
        })?;
        if let Some(name) = name {
            self.b.add_tool(name, version).map_err(|e| self.limit(e))?;
        }
        Ok(())
    }

    fn read_components(&mut self) -> Result<(), XmlError> {
        self.children(|x, local, s| match local {
            "component" => x.read_component(&s).map(drop),
            _ => x.r.skip_element(),
        })
    }

    fn read_component(&mut self, s: &Start<'a>) -> Result<Option<Arc<str>>, XmlError> {
        let slot = self.b.reserve_component().map_err(|e| self.limit(e))?;
        let mut c = super::Component::empty();
        c.id = self.attr(s, "bom-ref")?.map(|id| self.b.intern(&id));
        c.kind = self
            .attr(s, "type")?
            .map_or(ComponentKind::Unspecified, |t| ComponentKind::parse(&t));
        self.children(|x, local, _| {
            match local {
                "name" => c.name = x.text()?.unwrap_or_default(),
                "version" => c.version = x.text()?,
                "group" => c.group = x.text()?,
                "purl" => c.purl = x.text()?,
                "cpe" => c.cpe = x.text()?,
                "licenses" => x.read_licenses(&mut c.licenses)?,
                "components" => x.read_components()?,
                "properties" => x.children(|x, local, s| {
                    if local == "property" && x.attr(&s, "name")?.as_deref() == Some(TRIVY_SOURCE) {
                        c.source = x.text()?;
                        Ok(())
                    } else {
                        x.r.skip_element()
                    }
                })?,
                _ => x.r.skip_element()?,
            }
            Ok(())
        })?;
        let id = c.id.clone();
        self.b.components[slot] = c;
        Ok(id)
    }

    fn read_licenses(&mut self, out: &mut Vec<String>) -> Result<(), XmlError> {
        self.children(|x, local, _| {
            let found = match local {
                "license" => {
                    let (mut id, mut name) = (None, None);
                    x.children(|x, local, _| {
                        match local {
                            "id" => id = x.text()?,
                            "name" => name = x.text()?,
                            _ => x.r.skip_element()?,
                        }
                        Ok(())
                    })?;
                    id.or(name)
                }
                "expression" => x.text()?,
                _ => {
                    x.r.skip_element()?;
                    None
                }
            };
            if let Some(l) = found {
                if out.len() >= MAX_LIST_ITEMS {
                    return Err(x.limit(limit_msg(format_args!(
                        "more than {MAX_LIST_ITEMS} licenses"
                    ))));
                }
                out.push(l);
            }
            Ok(())
        })
    }

    /// The children of `<dependency ref=from>`: each `<dependency ref=to>`
    /// is an edge, and may itself list what `to` depends on.
    fn read_dependency(&mut self, from: Option<Arc<str>>) -> Result<(), XmlError> {
        self.children(|x, local, s| match local {
            "dependency" => {
                let to = x.attr(&s, "ref")?.map(|r| x.b.intern(&r));
                if let (Some(from), Some(to)) = (&from, &to) {
                    x.b.add_edge(Arc::clone(from), Arc::clone(to))
                        .map_err(|e| x.limit(e))?;
                }
                x.read_dependency(to)
            }
            _ => x.r.skip_element(),
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::tests::{check_invariants, load, nvp};
    use super::super::{Component, Position, Tool};
    use super::*;

    /// A CycloneDX 1.5 JSON document (no real one is in the data set) with
    /// nested components, 1.4-style tools, keys in unusual orders and nulls.
    pub(in super::super) const NESTED_JSON: &str = r#"{
  "dependencies": [
    {"dependsOn": ["lib-a", "lib-b", "lib-a", "ghost"], "ref": "app"},
    {"ref": "lib-a", "dependsOn": ["lib-a-1"]},
    {"ref": "lib-b", "dependsOn": null}
  ],
  "bomFormat": "CycloneDX",
  "specVersion": "1.5",
  "serialNumber": "urn:uuid:00000000-0000-0000-0000-000000000001",
  "metadata": {
    "timestamp": "2026-01-01T00:00:00Z",
    "tools": [{"vendor": "acme", "name": "hand", "version": "1"}],
    "component": {"bom-ref": "app", "type": "container", "name": "app", "version": "2",
                  "components": [{"bom-ref": "app-cfg", "type": "file", "name": "cfg"}]}
  },
  "components": [
    {"bom-ref": "lib-a", "type": "library", "group": "org.example", "name": "a", "version": "1.0",
     "purl": "pkg:maven/org.example/a@1.0", "cpe": null,
     "licenses": [{"license": {"id": "Apache-2.0"}}, {"license": {"name": "Custom"}}, {"expression": "MIT OR BSD-3-Clause"}],
     "components": [
       {"bom-ref": "lib-a-1", "type": "library", "name": "a-inner", "version": "1.0",
        "components": [{"type": "data", "name": "no-ref"}]}
     ]},
    {"bom-ref": "lib-b", "type": "machine-learning-model", "name": "b", "unknown": {"deep": [1, 2, {"x": null}]},
     "properties": [{"name": "other", "value": "x"}, {"name": "aquasecurity:trivy:SrcName", "value": "b-src"}]},
    {"bom-ref": "lib-c", "type": "something-new", "name": "c", "version": null}
  ]
}"#;

    /// The same document in XML, with a namespace prefix, an extension in a
    /// foreign namespace and nested `<dependency>` elements.
    pub(in super::super) const NESTED_XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- made by hand -->
<cdx:bom xmlns:cdx="http://cyclonedx.org/schema/bom/1.5" xmlns:ext="http://example.com/ext"
         serialNumber="urn:uuid:00000000-0000-0000-0000-000000000001" version="1">
  <cdx:metadata>
    <cdx:timestamp>2026-01-01T00:00:00Z</cdx:timestamp>
    <cdx:tools><cdx:tool><cdx:vendor>acme</cdx:vendor><cdx:name>hand</cdx:name><cdx:version>1</cdx:version></cdx:tool></cdx:tools>
    <cdx:component bom-ref="app" type="container"><cdx:name>app</cdx:name><cdx:version>2</cdx:version>
      <cdx:components><cdx:component bom-ref="app-cfg" type="file"><cdx:name>cfg</cdx:name></cdx:component></cdx:components>
    </cdx:component>
  </cdx:metadata>
  <cdx:components>
    <cdx:component bom-ref="lib-a" type="library">
      <cdx:group>org.example</cdx:group><cdx:name>a</cdx:name><cdx:version>1.0</cdx:version>
      <cdx:licenses><cdx:license><cdx:id>Apache-2.0</cdx:id></cdx:license><cdx:license><cdx:name>Custom</cdx:name></cdx:license>
        <cdx:expression>MIT OR BSD-3-Clause</cdx:expression></cdx:licenses>
      <cdx:purl><![CDATA[pkg:maven/org.example/a@1.0]]></cdx:purl>
      <cdx:components>
        <cdx:component bom-ref="lib-a-1" type="library"><cdx:name>a-inner</cdx:name><cdx:version>1.0</cdx:version>
          <cdx:components><cdx:component type="data"><cdx:name>no-ref</cdx:name></cdx:component></cdx:components>
        </cdx:component>
      </cdx:components>
    </cdx:component>
    <cdx:component bom-ref="lib-b" type="machine-learning-model"><cdx:name>b</cdx:name>
      <ext:component bom-ref="not-ours"><ext:name>foreign</ext:name></ext:component>
      <cdx:properties><cdx:property name="other">x</cdx:property><cdx:property name="aquasecurity:trivy:SrcName">b-src</cdx:property></cdx:properties></cdx:component>
    <cdx:component bom-ref="lib-c" type="something-new"><cdx:name>c</cdx:name></cdx:component>
    <ext:component bom-ref="also-not-ours"/>
    <cdx:component bom-ref="redeclared" xmlns:cdx="http://example.com/other"><cdx:name>x</cdx:name></cdx:component>
  </cdx:components>
  <cdx:dependencies>
    <cdx:dependency ref="app">
      <cdx:dependency ref="lib-a"><cdx:dependency ref="lib-a-1"/></cdx:dependency>
      <cdx:dependency ref="lib-b"/><cdx:dependency ref="lib-a"/><cdx:dependency ref="ghost"/>
    </cdx:dependency>
  </cdx:dependencies>
</cdx:bom>
"#;

    fn expected_nested() -> Vec<Component> {
        let c = |id: Option<&str>, kind, name: &str, version: Option<&str>| Component {
            id: id.map(Arc::from),
            name: name.into(),
            version: version.map(Into::into),
            group: None,
            purl: None,
            kind,
            cpe: None,
            licenses: vec![],
            source: None,
        };
        let mut a = c(Some("lib-a"), ComponentKind::Library, "a", Some("1.0"));
        // trivy's source package property.
        let mut b = c(
            Some("lib-b"),
            ComponentKind::MachineLearningModel,
            "b",
            None,
        );
        b.source = Some("b-src".into());
        a.group = Some("org.example".into());
        a.purl = Some("pkg:maven/org.example/a@1.0".into());
        a.licenses = vec![
            "Apache-2.0".into(),
            "Custom".into(),
            "MIT OR BSD-3-Clause".into(),
        ];
        vec![
            c(Some("app"), ComponentKind::Container, "app", Some("2")),
            c(Some("app-cfg"), ComponentKind::File, "cfg", None),
            a,
            c(
                Some("lib-a-1"),
                ComponentKind::Library,
                "a-inner",
                Some("1.0"),
            ),
            c(None, ComponentKind::Data, "no-ref", None),
            b,
            c(Some("lib-c"), ComponentKind::Other, "c", None),
        ]
    }

    #[test]
    fn nested_components_are_flattened_parent_first() {
        for (doc, syntax) in [
            (NESTED_JSON, SbomSyntax::Json),
            (NESTED_XML, SbomSyntax::Xml),
        ] {
            let s = Sbom::parse(doc.as_bytes(), "nested").unwrap();
            check_invariants(&s);
            assert_eq!(s.syntax, syntax);
            assert_eq!(s.spec_version, "1.5");
            assert_eq!(s.components, expected_nested(), "{syntax:?}");
            assert_eq!(s.root.as_deref(), Some("app"));
            assert_eq!(
                s.tools,
                [Tool {
                    name: "hand".into(),
                    version: Some("1".into())
                }]
            );
            assert_eq!(s.created.as_deref(), Some("2026-01-01T00:00:00Z"));
            assert_eq!(
                s.serial.as_deref(),
                Some("urn:uuid:00000000-0000-0000-0000-000000000001")
            );
            let edges: Vec<(&str, &str)> = s.edges.iter().map(|(a, b)| (&**a, &**b)).collect();
            let mut sorted = edges.clone();
            sorted.sort_unstable();
            // The repeated edge is kept once; the one to a ghost is dropped.
            assert_eq!(
                sorted,
                [("app", "lib-a"), ("app", "lib-b"), ("lib-a", "lib-a-1")]
            );
            assert_eq!(s.dropped_edges, 1);
            assert_eq!(s.pulled_in_by("lib-a-1"), [["app", "lib-a", "lib-a-1"]]);
        }
    }

    #[test]
    fn json_and_xml_of_the_same_cyclonedx_agree() {
        // cyclonedx-py over the same interpreter: JSON 1.4, XML 1.5 and
        // JSON 1.6 give the same components, licences and graph.
        let a = load("small/cdxpy_system_python3_sv1.4.cdx.json");
        let b = load("small/cdxpy_system_python3_sv1.5.cdx.xml");
        let c = load("cdxpy_system_python3.cdx.json");
        assert_eq!(a.components, b.components);
        assert_eq!(a.components, c.components);
        assert_eq!(a.edges, b.edges);
        assert_eq!(a.edges, c.edges);
        assert_eq!(nvp(&a).len(), 26);
        let cryptography = a
            .components
            .iter()
            .find(|c| c.name == "cryptography")
            .unwrap();
        assert_eq!(cryptography.version.as_deref(), Some("38.0.4"));
        assert_eq!(
            cryptography.purl.as_deref(),
            Some("pkg:pypi/cryptography@38.0.4")
        );
        // syft's XML and JSON, including CPEs and licences.
        let j = load("small/syft_py36_sitepkgs.cdx.json");
        let x = load("small/syft_py36_sitepkgs.cdx.xml");
        assert_eq!(j.components, x.components);
        assert_eq!(j.root, x.root);
    }

    #[test]
    fn trivy_os_scan_details() {
        let s = load("trivy_rootfs_os.cdx.json");
        let os = s
            .components
            .iter()
            .find(|c| c.kind == ComponentKind::OperatingSystem)
            .unwrap();
        assert_eq!(
            (os.name.as_str(), os.version.as_deref(), os.purl.as_deref()),
            ("debian", Some("12.11"), None)
        );
        assert_eq!(s.root_component().unwrap().kind, ComponentKind::Application);
        let libc6 = s.components.iter().find(|c| c.name == "libc6").unwrap();
        assert_eq!(libc6.version.as_deref(), Some("2.36-9+deb12u14"));
        assert!(
            libc6
                .purl
                .as_deref()
                .unwrap()
                .starts_with("pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?")
        );
        assert!(!libc6.licenses.is_empty());
        // trivy's Go binary scan: the main module and replaced local paths
        // have no purl and are kept.
        let s = load("small/trivy_terraform_gobinary.cdx.json");
        let no_purl: Vec<&str> = s
            .components
            .iter()
            .filter(|c| c.purl.is_none())
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(no_purl.len(), 11);
        assert!(no_purl.contains(&"terraform") && no_purl.contains(&"./internal/legacy"));
    }

    #[test]
    fn xml_errors_have_line_and_column() {
        let doc = "<bom xmlns=\"http://cyclonedx.org/schema/bom/1.6\">\n  <components>\n    <component><name>a</nme></component>";
        let e = Sbom::parse(doc.as_bytes(), "x.xml").unwrap_err();
        assert_eq!(
            e.position,
            Some(Position {
                line: 3,
                column: Some(23)
            })
        );
        assert_eq!(
            e.to_string(),
            "x.xml:3:23: end tag </nme> does not match <name>"
        );
        let long_ref = format!(
            "<bom xmlns=\"http://cyclonedx.org/schema/bom/1.6\"><components><component bom-ref=\"{}\"/></components></bom>",
            "r".repeat(MAX_FIELD_LEN + 1)
        );
        let e = Sbom::parse(long_ref.as_bytes(), "x.xml").unwrap_err();
        assert_eq!(e.kind, SbomErrorKind::Limit);
        let head =
            "<bom xmlns=\"http://cyclonedx.org/schema/bom/1.6\"><components><component><licenses>";
        let one = "<expression>MIT</expression>";
        let licenses = format!(
            "{head}{}</licenses></component></components></bom>",
            one.repeat(MAX_LIST_ITEMS + 1)
        );
        let e = Sbom::parse(licenses.as_bytes(), "x.xml").unwrap_err();
        // Reported just past the licence that is one too many.
        let column = head.len() + (MAX_LIST_ITEMS + 1) * one.len() + 1;
        assert_eq!(
            e.to_string(),
            format!("x.xml:1:{column}: limit exceeded: more than 1024 licenses")
        );
        let trailing = "<bom xmlns=\"http://cyclonedx.org/schema/bom/1.6\"/>\n<!-- ok -->\n<bom/>";
        let e = Sbom::parse(trailing.as_bytes(), "x.xml").unwrap_err();
        assert_eq!(
            e.position,
            Some(Position {
                line: 3,
                column: Some(1)
            })
        );
    }

    #[test]
    fn empty_and_minimal_documents() {
        let s = Sbom::parse(br#"{"bomFormat":"CycloneDX","specVersion":"1.7"}"#, "m").unwrap();
        assert!(s.components.is_empty() && s.edges.is_empty() && s.root.is_none());
        let s = Sbom::parse(
            br#"{"bomFormat":"CycloneDX","specVersion":"1.6","metadata":null,"components":null,"dependencies":null}"#,
            "m",
        )
        .unwrap();
        assert!(s.components.is_empty());
        let s = Sbom::parse(b"<bom xmlns='http://cyclonedx.org/schema/bom/1.4'/>", "m").unwrap();
        assert_eq!(s.spec_version, "1.4");
        // Trailing garbage after the JSON object.
        let e =
            Sbom::parse(br#"{"bomFormat":"CycloneDX","specVersion":"1.7"} x"#, "m").unwrap_err();
        assert_eq!(e.reason, "trailing characters");
    }
}
