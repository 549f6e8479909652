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

/// How bad a node's status is: exposed over contained over converged
/// (facts, with no status, never change).
fn rank(status: &str) -> u8 {
    match status {
        "exposed" => 3,
        "contained" => 2,
        "converged" => 1,
        _ => 0,
    }
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
            // The worst path wins, whatever order the processes come in:
            // a package still exposed through one workload is exposed even
            // if another workload that runs it is isolated.
            if rank(status) > rank(&n.status) {
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

    /// An isolation of `workload` on `host`, in `state`.
    fn isolation(
        id: u32,
        host: &str,
        workload: &str,
        state: ActionState,
    ) -> crate::response::incident::IncidentAction {
        use crate::response::{
            Approval, Mode,
            incident::{ActionTimes, IncidentAction},
            plan::{PlannedAction, Target},
        };
        IncidentAction {
            planned: PlannedAction {
                id,
                kind: ActionKind::IsolateAffectedWorkloads,
                mode: Mode::Enforce,
                approval: Approval::Required,
                revert_after_ms: None,
                allow: vec![],
                targets: vec![Target {
                    host: host.into(),
                    host_key: host.into(),
                    workload: workload.into(),
                    ..Target::default()
                }],
                excluded: vec![],
                no_executor: None,
                endpoint: None,
            },
            plan: "h".into(),
            state,
            reason: String::new(),
            approved_by: "bob".into(),
            times: ActionTimes {
                planned: 1,
                requested: 2,
                applied: 3,
                ..ActionTimes::default()
            },
            time_to_containment_ms: None,
        }
    }

    fn process(host: &str, pid: u32, workload_key: &str, purl: &str) -> ProcessFact {
        ProcessFact {
            host: host.into(),
            pid,
            purl: purl.into(),
            evidence: "mapped".into(),
            workload_key: workload_key.into(),
            ..ProcessFact::default()
        }
    }

    fn status_of(g: &Graph, id: &str) -> String {
        g.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("{id} in {g:#?}"))
            .status
            .clone()
    }

    /// A workload under an isolation that took effect (applied or
    /// verified) is `contained`, with its host; one planned, failed or
    /// lifted is not. A package both an isolated and a free workload run
    /// is `exposed`, in either order of the processes.
    #[test]
    fn an_isolated_workload_is_contained_and_a_free_one_stays_exposed() {
        const TRAINER: &str = "k8s:c/ml/Deployment/trainer/trainer";
        const BATCH: &str = "k8s:c/ml/Deployment/batch/batch";
        const WEB: &str = "k8s:c/web/Deployment/web/web";
        const ISOLATED_ONLY: &str = "pkg:pypi/torch@2.0.0";
        const SHARED: &str = "pkg:pypi/pip@23.0.1";
        let mut i = incident();
        i.actions = vec![
            isolation(1, "web-1", TRAINER, ActionState::Verified),
            isolation(2, "web-2", BATCH, ActionState::Applied),
            isolation(3, "web-3", WEB, ActionState::Planned),
        ];
        let mut processes = vec![
            process("web-1", 10, TRAINER, ISOLATED_ONLY),
            process("web-2", 20, BATCH, SHARED),
            process("web-3", 30, WEB, SHARED),
            // The trainer's workload key on another host: not isolated
            // there (the action targets web-1 only).
            process("web-4", 40, TRAINER, SHARED),
        ];
        for order in 0..2 {
            if order == 1 {
                processes.reverse();
            }
            let g = build(
                "INC-1",
                &i,
                &Facts {
                    processes: processes.clone(),
                    ..Facts::default()
                },
            );
            assert_eq!(
                status_of(&g, &format!("package:{ISOLATED_ONLY}")),
                "contained"
            );
            assert_eq!(status_of(&g, "host:web-1"), "contained");
            assert_eq!(status_of(&g, &format!("workload:{BATCH}")), "contained");
            assert_eq!(status_of(&g, "host:web-2"), "contained");
            // Planned, not yet in effect: exposed.
            assert_eq!(status_of(&g, &format!("workload:{WEB}")), "exposed");
            assert_eq!(status_of(&g, "host:web-3"), "exposed");
            assert_eq!(status_of(&g, "host:web-4"), "exposed");
            // One workload node for the trainer: exposed on web-4.
            assert_eq!(status_of(&g, &format!("workload:{TRAINER}")), "exposed");
            assert_eq!(status_of(&g, &format!("package:{SHARED}")), "exposed");
            let dot = to_dot(&g);
            assert!(dot.contains("\"host:web-1\" [label=\"host\\nweb-1\\n[contained]\", shape=box3d, color=orange];"), "{dot}");
        }

        // Lifted (reverted): nothing is contained any more.
        i.actions[0].state = ActionState::Reverted;
        i.actions[1].state = ActionState::Reverted;
        let g = build(
            "INC-1",
            &i,
            &Facts {
                processes,
                ..Facts::default()
            },
        );
        assert!(
            g.nodes.iter().all(|n| n.status != "contained"),
            "{:#?}",
            g.nodes
        );
        assert_eq!(status_of(&g, "host:web-1"), "exposed");
    }

    /// Each place a running workload writes to is a `writes_to` node (a
    /// fact: no status) with an edge from the workload; an image only an
    /// SBOM declares (no process) writes nowhere.
    #[test]
    fn writes_to_targets_hang_off_the_workload_that_writes() {
        let writer = ProcessFact {
            writes_to: vec!["s3://datasets".into(), "pg://warehouse/features".into()],
            data_scope: "sensitive".into(),
            ..process(
                "web-1",
                42,
                "k8s:c/ml/Deployment/trainer/trainer",
                "pkg:pypi/pip@23.0.1",
            )
        };
        let reader = process(
            "web-2",
            43,
            "k8s:c/ml/Deployment/reader/reader",
            "pkg:pypi/pip@23.0.1",
        );
        let sbom_only = ProcessFact {
            pid: 0,
            sbom_image: "sha256:feed".into(),
            writes_to: vec!["s3://never-drawn".into()],
            ..process("", 0, "", "pkg:pypi/pip@23.0.1")
        };
        let g = build(
            "INC-1",
            &incident(),
            &Facts {
                processes: vec![writer, reader, sbom_only],
                ..Facts::default()
            },
        );
        let writes: Vec<&Node> = g.nodes.iter().filter(|n| n.kind == "writes_to").collect();
        assert_eq!(
            writes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
            [
                "writes_to:pg://warehouse/features",
                "writes_to:s3://datasets"
            ]
        );
        assert!(writes.iter().all(|n| n.status.is_empty()), "{writes:#?}");
        let into: Vec<&Edge> = g
            .edges
            .iter()
            .filter(|e| e.to.starts_with("writes_to:"))
            .collect();
        assert_eq!(
            into,
            [
                &Edge {
                    from: "workload:k8s:c/ml/Deployment/trainer/trainer".into(),
                    to: "writes_to:pg://warehouse/features".into(),
                },
                &Edge {
                    from: "workload:k8s:c/ml/Deployment/trainer/trainer".into(),
                    to: "writes_to:s3://datasets".into(),
                },
            ]
        );
        // The SBOM-only image is drawn, its declared writes are not.
        assert_eq!(status_of(&g, "image:sha256:feed"), "exposed");
        let dot = to_dot(&g);
        assert!(dot.contains(
            "\"workload:k8s:c/ml/Deployment/trainer/trainer\" -> \"writes_to:s3://datasets\";"
        ));
        assert!(dot.contains(
            "\"writes_to:s3://datasets\" [label=\"writes_to\\ns3://datasets\", shape=folder, color=black];"
        ), "{dot}");
    }

    #[test]
    fn hostile_names_cannot_break_out_of_dot_literals() {
        assert_eq!(quoted("a\"b\\c\nd\u{1b}"), "\"a\\\"b\\\\c\\nd \"");
    }
}
