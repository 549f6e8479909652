#!/usr/bin/env python3
"""Independent counts for the SBOMs in this directory, for the Rust tests.

Uses only python3's json, xml.etree and regular expressions over the
tag-value text, so it shares no code with collector/src/sbom. Run it from
this directory:  python3 expected.py > expected.tsv

Semantics (the same as the Rust model's, see collector/src/sbom/mod.rs):
- components: CycloneDX metadata.component and components[], nested
  components flattened; SPDX packages[] / PackageName lines.
- with_purl: components that have a purl.
- edges: distinct (from, to) pairs, both ends component ids, from != to.
  CycloneDX dependencies[].dependsOn (XML: nested <dependency ref>);
  SPDX DEPENDS_ON, CONTAINS as written, DEPENDENCY_OF,
  RUNTIME_DEPENDENCY_OF, CONTAINED_BY reversed.
- root: the name of metadata.component / of the described package, or -.
"""
import glob, json, re, xml.etree.ElementTree as ET

FORWARD = {"DEPENDS_ON", "CONTAINS"}
REVERSED = {"DEPENDENCY_OF", "RUNTIME_DEPENDENCY_OF", "CONTAINED_BY"}


def spdx_edges(rels, ids):
    out = set()
    for a, ty, b in rels:
        if ty in REVERSED:
            a, b = b, a
        elif ty not in FORWARD:
            continue
        if a in ids and b in ids and a != b:
            out.add((a, b))
    return out


def cdx_json(d):
    comps = []

    def walk(c):
        comps.append(c)
        for n in c.get("components") or []:
            walk(n)

    root = (d.get("metadata") or {}).get("component")
    if root:
        walk(root)
    for c in d.get("components") or []:
        walk(c)
    ids = {c.get("bom-ref") for c in comps if c.get("bom-ref")}
    edges = set()
    for dep in d.get("dependencies") or []:
        for to in dep.get("dependsOn") or []:
            if dep.get("ref") in ids and to in ids and dep["ref"] != to:
                edges.add((dep["ref"], to))
    return ("cyclonedx", d["specVersion"], comps, lambda c: c.get("purl"), edges,
            root.get("name") if root else None)


def cdx_xml(path):
    root_el = ET.parse(path).getroot()
    ns = root_el.tag[1:].split("}")[0]
    q = lambda t: "{%s}%s" % (ns, t)
    comps = []

    def walk(c):
        comps.append(c)
        for n in c.findall(q("components") + "/" + q("component")):
            walk(n)

    root = root_el.find(q("metadata") + "/" + q("component"))
    if root is not None:
        walk(root)
    for c in root_el.findall(q("components") + "/" + q("component")):
        walk(c)
    ids = {c.get("bom-ref") for c in comps if c.get("bom-ref")}
    edges = set()

    def deps(el):
        for child in el.findall(q("dependency")):
            a, b = el.get("ref"), child.get("ref")
            if a in ids and b in ids and a != b:
                edges.add((a, b))
            deps(child)

    for top in root_el.findall(q("dependencies") + "/" + q("dependency")):
        deps(top)
    purl = lambda c: (c.findtext(q("purl")) or "").strip() or None
    name = root.findtext(q("name")).strip() if root is not None else None
    return ("cyclonedx", ns.rsplit("/", 1)[1], comps, purl, edges, name)


def spdx_json(d):
    pkgs = d.get("packages") or []
    ids = {p["SPDXID"] for p in pkgs}
    rels = [(r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"])
            for r in d.get("relationships") or []]
    described = [b for a, ty, b in rels if ty == "DESCRIBES" and a == d["SPDXID"]]
    described = (d.get("documentDescribes") or []) + described
    byid = {p["SPDXID"]: p for p in pkgs}
    root = byid[described[0]]["name"] if described and described[0] in byid else None

    def purl(p):
        for r in p.get("externalRefs") or []:
            if r["referenceType"] == "purl":
                return r["referenceLocator"]

    return ("spdx", d["spdxVersion"], pkgs, purl, spdx_edges(rels, ids), root)


def spdx_tv(text):
    names = re.findall(r"^PackageName: (.*)$", text, re.M)
    ids = re.findall(r"^PackageName: .*\nSPDXID: (.*)$", text, re.M)
    assert len(names) == len(ids)
    purls = len(re.findall(r"^ExternalRef: PACKAGE[-_]MANAGER purl ", text, re.M))
    rels = re.findall(r"^Relationship: (\S+) (\S+) (\S+)$", text, re.M)
    described = [b for a, ty, b in rels if ty == "DESCRIBES" and a == "SPDXRef-DOCUMENT"]
    byid = dict(zip(ids, names))
    root = byid.get(described[0]) if described else None
    version = re.search(r"^SPDXVersion: (.*)$", text, re.M).group(1)
    comps = [None] * len(names)
    # purls counted by line: at most one purl per package in these files.
    return ("spdx", version, comps, None, spdx_edges(rels, set(ids)), root, purls)


print("file\tformat\tspec\tcomponents\twith_purl\tedges\troot")
for path in sorted(glob.glob("*.*") + glob.glob("small/*.*")):
    if path.endswith((".py", ".tsv", ".md")):
        continue
    text = open(path, encoding="utf-8").read()
    if path.endswith(".json"):
        d = json.loads(text)
        r = cdx_json(d) if "bomFormat" in d else spdx_json(d)
    elif path.endswith(".xml"):
        r = cdx_xml(path)
    else:
        r = spdx_tv(text)
    if len(r) == 7:
        fmt, spec, comps, _, edges, root, with_purl = r
    else:
        fmt, spec, comps, purl, edges, root = r
        with_purl = sum(1 for c in comps if purl(c))
    print(f"{path}\t{fmt}\t{spec}\t{len(comps)}\t{with_purl}\t{len(edges)}\t{root or '-'}")
