//! The exposure graph of an incident, as responders read it: advisory →
//! package@version → the chain that pulled it in → image digest (with its
//! provenance labels) → workload → host → data scope and where it writes.
//! Each node says whether it is still `exposed`, `contained` (an
//! isolation is in force on that workload), or `converged` (the incident
//! named it once and nothing affected runs there now). Built from the
//! same facts the checks read; `to_dot` draws it for Graphviz.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::check::Facts;
use crate::response::{
    ActionKind,
    incident::{ActionState, Incident, Source},
};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Graph {
    pub incident: String,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// `kind:name`, unique in the graph.
    pub id: String,
    /// advisory, package, chain, image, workload, host, data_scope,
    /// writes_to.
    pub kind: String,
    pub label: String,
    /// exposed, contained, converged ("" for nodes that are facts, not
    /// exposure: an advisory, a data scope).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
}

/// The most nodes one graph draws; past it the graph says so in a node of
/// its own.
pub const MAX_NODES: usize = 5_000;

#[derive(Default)]
struct Builder {
    nodes: BTreeMap<String, Node>,
    edges: BTreeSet<Edge>,
    cut: bool,
}

impl Builder {
    fn node(&mut self, kind: &str, name: &str, status: &str) -> String {
        let id = format!("{kind}:{name}");
        if !self.nodes.contains_key(&id) {
            if self.nodes.len() >= MAX_NODES {
                self.cut = true;
                return id;
            }
            self.nodes.insert(
                id.clone(),
                Node {
                    id: id.clone(),
                    kind: kind.into(),
                    label: name.into(),
                    status: status.into(),
                    labels: BTreeMap::new(),
                },
            );
        } else if let Some(n) = self.nodes.get_mut(&id) {
            // Exposed wins over converged: any path still exposed.
            if n.status == "converged" && !status.is_empty() {
                n.status = status.into();
            }
        }
        id
    }

    fn edge(&mut self, from: &str, to: &str) {
        if self.nodes.contains_key(from) && self.nodes.contains_key(to) {
            self.edges.insert(Edge {
                from: from.into(),
                to: to.into(),
            });
        }
    }
}

/// The graph of `incident` from what runs now (`facts`), with the
/// workloads and hosts it named before and no longer runs affected as
/// converged.
pub fn build(id: &str, incident: &Incident, facts: &Facts) -> Graph {
    let mut b = Builder::default();
    let isolated: BTreeSet<(&str, &str)> = incident
        .actions
        .iter()
        .filter(|a| {
            a.planned.kind == ActionKind::IsolateAffectedWorkloads
                && matches!(a.state, ActionState::Applied | ActionState::Verified)
        })
        .flat_map(|a| {
            a.planned
                .targets
                .iter()
                .map(|t| (t.host.as_str(), t.workload.as_str()))
        })
        .collect();
    let subject = match &incident.source {
        Source::Advisory { id, .. } => Some(id.clone()),
        Source::Package { package, range, .. } => Some(match range {
            Some(r) => format!("{package}@{r}"),
            None => package.clone(),
        }),
        _ => None,
    };
    for p in facts
        .processes
        .iter()
        .filter(|p| p.pid > 0 || !p.sbom_image.is_empty())
    {
        let workload = if p.workload_key.is_empty() {
            format!("{}/{}", p.host, p.workload)
        } else {
            p.workload_key.clone()
        };
        let status = if isolated.contains(&(p.host.as_str(), workload.as_str())) {
            "contained"
        } else {
            "exposed"
        };
        let advisory = match (&p.advisory, &subject) {
            (a, _) if !a.is_empty() => Some(a.clone()),
            (_, Some(s)) => Some(s.clone()),
            _ => None,
        };
        let pkg = b.node("package", &p.purl, status);
        if let Some(a) = advisory {
            let a = b.node("advisory", &a, "");
            b.edge(&a, &pkg);
        }
        // The chain, outermost last: package → each puller → image.
        let mut last = pkg.clone();
        for puller in &p.pulled_in_by {
            let c = b.node("chain", puller, status);
            b.edge(&last, &c);
            last = c;
        }
        let digest = if p.image_digest.is_empty() {
            &p.sbom_image
        } else {
            &p.image_digest
        };
        if !digest.is_empty() {
            let img = b.node("image", digest, status);
            if let Some(n) = b.nodes.get_mut(&img) {
                for (k, v) in &p.provenance {
                    n.labels.insert(k.clone(), v.clone());
                }
            }
            b.edge(&last, &img);
            last = img;
        }
        if p.pid == 0 {
            continue;
        }
        let w = b.node("workload", &workload, status);
        b.edge(&last, &w);
        let h = b.node("host", &p.host, status);
        b.edge(&w, &h);
        if !p.data_scope.is_empty() {
            let d = b.node("data_scope", &p.data_scope, "");
            b.edge(&w, &d);
        }
        for t in &p.writes_to {
            let d = b.node("writes_to", t, "");
            b.edge(&w, &d);
        }
    }
    // What the incident named and no longer runs affected.
    for w in &incident.scope.workloads {
        b.node("workload", w, "converged");
    }
    for h in incident.hosts_seen.iter().chain(&incident.scope.hosts) {
        b.node("host", h, "converged");
    }
    for inst in &incident.scope.instances {
        let w = format!("workload:{}", inst.workload);
        let h = format!("host:{}", inst.host);
        b.edge(&w, &h);
    }
    if b.cut {
        let n = Node {
            id: "note:truncated".into(),
            kind: "note".into(),
            label: format!("cut at {MAX_NODES} nodes"),
            ..Node::default()
        };
        b.nodes.insert(n.id.clone(), n);
    }
    Graph {
        incident: id.to_string(),
        nodes: b.nodes.into_values().collect(),
        edges: b.edges.into_iter().collect(),
    }
}

/// A DOT string literal: quotes, backslashes and control characters
/// escaped, so a hostile name cannot end the literal.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The graph for Graphviz (`dot -Tsvg`): exposed nodes red, contained
/// orange, converged green; one shape per kind.
pub fn to_dot(g: &Graph) -> String {
    let mut out = format!("digraph {} {{\n  rankdir=LR;\n", quoted(&g.incident));
    for n in &g.nodes {
        let shape = match n.kind.as_str() {
            "advisory" => "octagon",
            "package" => "box",
            "chain" => "box",
            "image" => "cylinder",
            "workload" => "component",
            "host" => "box3d",
            "data_scope" | "writes_to" => "folder",
            _ => "note",
        };
        let color = match n.status.as_str() {
            "exposed" => "red",
            "contained" => "orange",
            "converged" => "darkgreen",
            _ => "black",
        };
        let mut label = format!("{}\n{}", n.kind, n.label);
        if !n.status.is_empty() {
            label.push_str(&format!("\n[{}]", n.status));
        }
        for (k, v) in &n.labels {
            label.push_str(&format!("\n{k}={v}"));
        }
        out.push_str(&format!(
            "  {} [label={}, shape={shape}, color={color}];\n",
            quoted(&n.id),
            quoted(&label)
        ));
    }
    for e in &g.edges {
        out.push_str(&format!("  {} -> {};\n", quoted(&e.from), quoted(&e.to)));
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::verify::check::ProcessFact;

    fn incident() -> Incident {
        let source = Source::Advisory {
            id: "PYSEC-2023-228".into(),
            asked_as: String::new(),
            host: None,
        };
        let mut i = crate::response::incident::project(&[crate::response::incident::Recorded {
            seq: 1,
            at_ms: 1,
            actor: "a".into(),
            event: crate::response::incident::Event::Opened {
                dedup_key: source.dedup_key(),
                source,
            },
        }])
        .unwrap();
        i.scope
            .workloads
            .insert("k8s:c/ml/Deployment/old/old".into());
        i.hosts_seen.insert("gone-host".into());
        i
    }

    #[test]
    fn the_graph_runs_from_advisory_to_data_scope_and_marks_what_converged() {
        let facts = Facts {
            processes: vec![ProcessFact {
                host: "web-1".into(),
                pid: 42,
                purl: "pkg:pypi/pip@23.0.1".into(),
                evidence: "mapped".into(),
                advisory: "PYSEC-2023-228".into(),
                pulled_in_by: vec!["pkg:pypi/trainer-app@1.0".into()],
                image_digest: "sha256:abc".into(),
                provenance: vec![("revision".into(), "deadbeef".into())],
                workload_key: "k8s:c/ml/Deployment/trainer/trainer".into(),
                data_scope: "sensitive".into(),
                writes_to: vec!["s3://datasets".into()],
                ..ProcessFact::default()
            }],
            ..Facts::default()
        };
        let g = build("INC-1", &incident(), &facts);
        let status = |id: &str| {
            g.nodes
                .iter()
                .find(|n| n.id == id)
                .unwrap_or_else(|| panic!("{id} in {g:#?}"))
                .status
                .clone()
        };
        assert_eq!(status("package:pkg:pypi/pip@23.0.1"), "exposed");
        assert_eq!(status("workload:k8s:c/ml/Deployment/old/old"), "converged");
        assert_eq!(status("host:gone-host"), "converged");
        assert_eq!(status("host:web-1"), "exposed");
        assert_eq!(status("advisory:PYSEC-2023-228"), "");
        let path = [
            "advisory:PYSEC-2023-228",
            "package:pkg:pypi/pip@23.0.1",
            "chain:pkg:pypi/trainer-app@1.0",
            "image:sha256:abc",
            "workload:k8s:c/ml/Deployment/trainer/trainer",
            "host:web-1",
        ];
        for w in path.windows(2) {
            assert!(
                g.edges.contains(&Edge {
                    from: w[0].into(),
                    to: w[1].into()
                }),
                "{} -> {}: {:#?}",
                w[0],
                w[1],
                g.edges
            );
        }
        let img = g.nodes.iter().find(|n| n.id == "image:sha256:abc").unwrap();
        assert_eq!(img.labels["revision"], "deadbeef");
        let dot = to_dot(&g);
        assert!(dot.starts_with("digraph \"INC-1\" {"));
        assert!(
            dot.contains("\"workload:k8s:c/ml/Deployment/trainer/trainer\" -> \"host:web-1\";")
        );
        assert!(dot.contains(
            "\"workload:k8s:c/ml/Deployment/trainer/trainer\" -> \"data_scope:sensitive\";"
        ));
        assert!(dot.contains("color=darkgreen"));
    }

    #[test]
    fn hostile_names_cannot_break_out_of_dot_literals() {
        assert_eq!(quoted("a\"b\\c\nd\u{1b}"), "\"a\\\"b\\\\c\\nd \"");
    }
}
