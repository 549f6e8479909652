//! Turns a process's cgroups into its workload: the cgroup classification
//! says what kind of workload and which container or pod; the runtimes'
//! on-disk metadata fills in names, image, owner and data scope.

use crate::{
    model::Workload,
    parse::cgroup::CgroupLine,
    workload::{
        cgroup::{CgroupWorkload, ContainerRef, Qos, Runtime, classify_lines},
        meta::{MetaReader, RuntimeMeta, data_scope, infer_owner},
    },
};

/// The workload of a process with these cgroup lines. `meta` is None when
/// the runtime root could not be opened: the workload then has what the
/// cgroup path alone says.
pub fn attribute(
    lines: &[CgroupLine],
    primary_cgroup: &str,
    meta: Option<&mut MetaReader>,
) -> Workload {
    let mut w = Workload {
        cgroup: primary_cgroup.to_string(),
        ..Default::default()
    };
    match classify_lines(lines) {
        CgroupWorkload::Host => {
            w.id = "host".into();
            w.kind = "host".into();
        }
        CgroupWorkload::SystemdUnit { unit } => {
            w.id = format!("unit/{unit}");
            w.kind = "systemd".into();
            w.unit = unit;
        }
        CgroupWorkload::UserSession { unit, .. } => {
            w.id = format!("session/{unit}");
            w.kind = "user-session".into();
            w.unit = unit;
        }
        CgroupWorkload::Container(c) => {
            w.id = format!("container/{}", c.id);
            w.kind = "container".into();
            fill_container(&mut w, &c, meta);
        }
        CgroupWorkload::Pod {
            pod_uid,
            qos,
            container,
        } => {
            w.kind = "pod".into();
            w.qos = match qos {
                Qos::Guaranteed => "guaranteed",
                Qos::Burstable => "burstable",
                Qos::BestEffort => "besteffort",
            }
            .into();
            w.pod_uid = pod_uid.clone();
            w.id = match &container {
                Some(c) => format!("pod/{pod_uid}/{}", c.id),
                None => format!("pod/{pod_uid}"),
            };
            let mut meta = meta;
            if let Some(c) = &container {
                fill_container(&mut w, c, meta.as_deref_mut());
            }
            // The kubelet's log directory names the pod when the runtime's
            // metadata did not.
            if (w.pod.is_empty() || w.namespace.is_empty())
                && let Some(m) = meta
                && let Some((ns, pod)) = m.pod_by_uid(&pod_uid)
            {
                w.namespace = ns;
                w.pod = pod;
            }
            if w.owner.is_none() && !w.pod.is_empty() {
                w.owner = infer_owner(&w.pod, &w.labels);
            }
        }
    }
    w
}

fn fill_container(w: &mut Workload, c: &ContainerRef, meta: Option<&mut MetaReader>) {
    w.container_id = c.id.clone();
    if c.runtime != Runtime::Unknown {
        w.runtime = c.runtime.as_str().into();
    }
    let Some(meta) = meta else { return };
    let hint = (c.runtime != Runtime::Unknown).then(|| c.runtime.as_str());
    let (found, warnings) = meta.container(&c.id, hint);
    w.metadata_warnings +=
        warnings.bad_json + warnings.too_large + warnings.escapes_root + warnings.unreadable;
    if let Some(m) = found {
        apply_meta(w, &m);
    }
}

fn apply_meta(w: &mut Workload, m: &RuntimeMeta) {
    if !m.runtime.is_empty() {
        w.runtime = m.runtime.clone();
    }
    w.container_name = if m.sandbox {
        "POD".into()
    } else {
        m.container_name.clone()
    };
    w.pod = m.pod_name.clone();
    w.namespace = m.pod_namespace.clone();
    if !m.pod_uid.is_empty() {
        w.pod_uid = m.pod_uid.clone();
    }
    w.image = m.image_ref.clone();
    w.image_id = m.image_id.clone();
    w.image_digest = m.image_digest.clone();
    w.provenance = m.provenance.clone();
    w.labels = m.labels.clone();
    let (classification, writes_to) = data_scope(m);
    if !classification.is_empty() || !writes_to.is_empty() {
        w.scope_source = if m.annotations.keys().any(|k| k.starts_with("patchgap.io/")) {
            "annotation".into()
        } else {
            "label".into()
        };
    }
    w.classification = classification;
    w.writes_to = writes_to;
    if !m.pod_name.is_empty() {
        w.owner = infer_owner(&m.pod_name, &m.labels);
    }
}
