//! Classifies `/proc/PID/cgroup` paths into workloads: Kubernetes pods and
//! their containers, plain containers, systemd units, user sessions, or the
//! host.
//!
//! Everything here is a pure function of the path bytes; nothing reads the
//! file system. The runtime named here is only what the cgroup layout says:
//! a bare container id under a cgroupfs-driver pod gives
//! [`Runtime::Unknown`], and later stages decide it from on-disk metadata.
//!
//! # How paths are matched
//!
//! Matching works on path components, never on anchored prefixes, because
//! the same layouts appear nested under other cgroups:
//!
//! * kind and k3d nodes are themselves containers, so their pods appear as
//!   `/docker/<node-id>/kubepods/...` (cgroup v1, cgroupfs),
//!   `/system.slice/docker-<node-id>.scope/kubelet.slice/...` (v2) or, seen
//!   from inside a node with a private cgroup namespace, `/kubelet.slice/...`.
//! * kind sets the kubelet's `--cgroup-root=/kubelet`, and the systemd driver
//!   prefixes every nested slice with its parent's name, so pod slices read
//!   `kubelet-kubepods-besteffort-pod<uid>.slice`.
//! * CI runners put whole clusters under their own roots, e.g.
//!   `/actions_job/<id>/kubepods/burstable/pod<uid>/<id>`.
//! * A process outside the reader's cgroup namespace shows a path that starts
//!   with `/..`; those components simply never match anything.
//!
//! The innermost (last) recognisable pod or container wins, so a pod inside a
//! kind node is reported as the pod, not as the node container. A systemd
//! unit only counts when no pod or container was found: a unit under a
//! container (systemd running inside a container or a kind node) belongs to
//! that container.
//!
//! # Decisions on ambiguous layouts
//!
//! * conmon (`crio-conmon-<id>.scope`, `libpod-conmon-<id>.scope`) is the
//!   runtime's monitor, a host binary. It is never reported as the container
//!   it watches, because its files resolve through the host's root and would
//!   be misattributed to the container's image. Inside a pod it is the pod
//!   with `container: None`; outside a pod it is the systemd scope it runs in.
//! * A 32- or 64-hex component under a parent that no runtime uses is NOT a
//!   container: every process on the machine these tests were written on
//!   lives in the v1 memory cgroup `/process_api/<32 hex>`, which is a
//!   sandbox, not a container runtime. Only `docker`, the containerd
//!   namespaces `default` and `k8s.io`, and pod cgroups make a bare id a
//!   container.
//! * The pause (sandbox) container cannot be told apart from app containers
//!   by its cgroup, so it is reported as a pod container with its id; runtime
//!   metadata decides later.
//! * A cgroup that is only a slice (`/system.slice`, `/kubepods.slice`,
//!   `/user.slice/user-1000.slice`) is the host: on cgroup v1 controllers
//!   that a unit does not enable show the parent slice, so a slice alone
//!   says nothing about the process.

use std::borrow::Cow;

use crate::parse::cgroup::CgroupLine;

/// The container runtime a cgroup path points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    /// containerd, through the CRI plugin or standalone (`nerdctl`, `ctr`).
    Containerd,
    /// CRI-O.
    CriO,
    /// Docker, standalone or through cri-dockerd / dockershim.
    Docker,
    /// Podman, rootful or rootless.
    Podman,
    /// A bare container id under a kubepods path (cgroupfs driver): the
    /// runtime is decided later from on-disk metadata.
    Unknown,
}

impl Runtime {
    /// The stable lower-case name: `containerd`, `cri-o`, `docker`, `podman`
    /// or `unknown`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
            Runtime::Unknown => "unknown",
        }
    }
}

/// A Kubernetes pod's quality-of-service class, as encoded in its cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Qos {
    /// Guaranteed pods sit directly under `kubepods` with no QoS level.
    Guaranteed,
    /// Under `kubepods/burstable` or `kubepods-burstable.slice`.
    Burstable,
    /// Under `kubepods/besteffort` or `kubepods-besteffort.slice`.
    BestEffort,
}

/// A container named by a cgroup path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    /// The runtime the path's naming scheme belongs to.
    pub runtime: Runtime,
    /// Full id as in the path (64 hex for docker/containerd/cri-o/podman).
    pub id: String,
    /// Podman rootless (under user@UID.service). Set for any runtime whose
    /// container cgroup lies under a user's systemd instance, which is where
    /// rootless podman, rootless docker and rootless nerdctl all put them.
    pub rootless: bool,
}

/// What a cgroup path says a process belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupWorkload {
    /// A Kubernetes pod; `container` is None for the pod-level cgroup or the
    /// pause/sandbox when it cannot be told apart.
    Pod {
        /// The pod uid with dashes, e.g. `0f8e9a36-5a2b-4c47-9d0e-2f3f4b1c9d11`
        /// (the systemd driver writes `_` for `-`; this is converted back),
        /// or the 32-hex config hash that the kubelet uses as a static pod's
        /// uid.
        pod_uid: String,
        /// The pod's QoS class.
        qos: Qos,
        /// The container inside the pod, if the path goes that deep.
        container: Option<ContainerRef>,
    },
    /// A container outside Kubernetes (docker run, podman run, nerdctl/ctr
    /// run).
    Container(ContainerRef),
    /// A systemd system service or scope, e.g. "nginx.service".
    SystemdUnit {
        /// The innermost unit name.
        unit: String,
    },
    /// A user's systemd instance or login session: "user@1000.service",
    /// "session-3.scope", app scopes under it.
    UserSession {
        /// The user id from `user-UID.slice` or `user@UID.service`.
        uid: Option<u32>,
        /// The innermost unit name.
        unit: String,
    },
    /// Nothing more specific: the host itself.
    Host,
}

/// Whether a component names a container or the conmon that watches one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Container,
    Conmon,
}

/// Container scope prefixes, each followed by a 64-hex id and, with the
/// systemd driver, `.scope`. Sources:
///
/// * containerd CRI: `getCgroupsPath()` in pkg/cri/server/helpers_linux.go
///   returns `"<pod slice>:cri-containerd:<id>"`, which runc's systemd
///   driver turns into `<pod slice>/cri-containerd-<id>.scope`.
/// * CRI-O: `crio-<id>.scope` for containers and `crio-conmon-<id>.scope` for
///   conmon (internal/config/cgmgr/systemd.go); with the cgroupfs manager the
///   directories are `crio-<id>` and `crio-conmon-<id>` (cgroupfs.go).
/// * Docker's systemd driver (daemon/oci_linux.go, `"system.slice:docker:<id>"`):
///   `docker-<id>.scope`, also under pod slices for cri-dockerd.
/// * Podman (libpod/runtime_ctr.go and utils): `libpod-<id>.scope` and
///   `libpod-conmon-<id>.scope` with systemd; `libpod_parent/libpod-<id>` with
///   cgroupfs.
/// * nerdctl's systemd driver: `"system.slice:nerdctl:<id>"`, i.e.
///   `nerdctl-<id>.scope`.
///
/// The conmon prefixes come before their container prefixes for clarity;
/// the id check alone would already keep `crio-` from matching
/// `crio-conmon-<id>`.
const PREFIXES: &[(&[u8], Runtime, Role)] = &[
    (b"cri-containerd-", Runtime::Containerd, Role::Container),
    (b"crio-conmon-", Runtime::CriO, Role::Conmon),
    (b"crio-", Runtime::CriO, Role::Container),
    (b"docker-", Runtime::Docker, Role::Container),
    (b"libpod-conmon-", Runtime::Podman, Role::Conmon),
    (b"libpod-", Runtime::Podman, Role::Container),
    (b"nerdctl-", Runtime::Containerd, Role::Container),
];

/// Parents under which a bare 64-hex component is a container without a
/// pod: Docker's cgroupfs parent `/docker/<id>` (daemon default
/// `cgroup-parent`), and the containerd namespaces whose default OCI spec
/// uses `/<namespace>/<id>` (`populateDefaultUnixSpec` in containerd's
/// oci/spec.go; `ctr run` and nerdctl with cgroupfs).
const BARE_ID_PARENTS: &[(&[u8], Runtime)] = &[
    (b"docker", Runtime::Docker),
    (b"default", Runtime::Containerd),
    (b"k8s.io", Runtime::Containerd),
];

/// Classifies one cgroup path. Matching is by patterns over the path's
/// components, NOT anchored prefixes: kind, k3d and custom cgroup roots nest
/// these paths (e.g. `/actions_job/<id>/kubepods/burstable/pod<uid>/<id>`,
/// `/kubelet.slice/kubelet-kubepods.slice/...`,
/// `/docker/<kind-node-id>/kubepods/...`); the innermost (last) recognisable
/// workload wins.
pub fn classify(path: &[u8]) -> CgroupWorkload {
    let comps = components(path);

    // The innermost pod or container so far, and where the pod component is
    // (a bare id is a pod's container only as its direct child).
    let mut found: Option<CgroupWorkload> = None;
    let mut pod_at: Option<usize> = None;
    // Systemd state, used only while no pod or container has been found.
    let mut unit: Option<&[u8]> = None;
    let mut in_user = false;
    let mut user_uid: Option<u32> = None;
    // Under a user's systemd instance: containers there are rootless.
    let mut rootless = false;

    for (i, comp) in comps.iter().enumerate() {
        let c: &[u8] = comp;
        let manager_uid = user_manager_uid(c);
        rootless |= manager_uid.is_some();

        if let Some((pod_uid, qos)) = pod_component(&comps, i) {
            found = Some(CgroupWorkload::Pod {
                pod_uid,
                qos,
                container: None,
            });
            pod_at = Some(i);
            continue;
        }

        if let Some((runtime, role, id)) = container_component(&comps, i, pod_at) {
            match role {
                Role::Container => {
                    let r = ContainerRef {
                        runtime,
                        id,
                        rootless,
                    };
                    match &mut found {
                        // The pod's own container.
                        Some(CgroupWorkload::Pod {
                            container: slot @ None,
                            ..
                        }) => *slot = Some(r),
                        // Anything else: a container nested in a container
                        // (Docker-in-Docker, including inside a pod), or the
                        // first container seen. The innermost one wins.
                        _ => {
                            found = Some(CgroupWorkload::Container(r));
                            pod_at = None;
                        }
                    }
                    continue;
                }
                // conmon under a pod or container stays with what encloses
                // it; with nothing around it, it falls through and is the
                // systemd scope it runs in.
                Role::Conmon if found.is_some() => continue,
                Role::Conmon => {}
            }
        }

        if found.is_some() {
            continue;
        }
        if c == b"user.slice" || user_slice_uid(c).is_some() || manager_uid.is_some() {
            in_user = true;
            user_uid = user_slice_uid(c).or(manager_uid).or(user_uid);
        }
        if c == b"init.scope" {
            // The scope of a systemd manager's own process (PID 1, a user's
            // `systemd --user`, or a nested systemd in an nspawn machine): it
            // belongs to the enclosing unit, and with none it is the host.
            continue;
        }
        if is_unit_name(c) {
            unit = Some(c);
        }
    }

    if let Some(w) = found {
        return w;
    }
    match unit {
        Some(u) => {
            let unit = String::from_utf8_lossy(u).into_owned();
            if in_user {
                CgroupWorkload::UserSession {
                    uid: user_uid,
                    unit,
                }
            } else {
                CgroupWorkload::SystemdUnit { unit }
            }
        }
        None => CgroupWorkload::Host,
    }
}

/// Picks the most specific classification over all lines of /proc/PID/cgroup
/// (v2 "0::" line and v1 lines; on hybrid hosts the v2 line can be "/" while
/// v1 controllers show the container, or the reverse). Order of specificity:
/// Pod with container > Pod > Container > SystemdUnit/UserSession > Host.
/// Prefer the name=systemd or v2 line when equally specific; among equally
/// preferred lines, the first one in file order wins.
///
/// Within one level, a container whose runtime the path names beats a bare
/// cgroupfs id ([`Runtime::Unknown`]): a process that a runtime placed in
/// both a systemd scope and a cgroupfs directory (hybrid hosts where the
/// runtime's v1 and v2 managers differ) is better described by the scope.
pub fn classify_lines(lines: &[CgroupLine]) -> CgroupWorkload {
    let mut best: Option<((u8, bool), bool, CgroupWorkload)> = None;
    for line in lines {
        let w = classify(&line.path);
        let rank = specificity(&w);
        let preferred = line.hierarchy == 0 || line.controllers.iter().any(|c| c == "name=systemd");
        let better = match &best {
            None => true,
            Some((r, p, _)) => rank > *r || (rank == *r && preferred && !*p),
        };
        if better {
            best = Some((rank, preferred, w));
        }
    }
    best.map_or(CgroupWorkload::Host, |(_, _, w)| w)
}

/// Higher is more specific: the level, then whether a container's runtime
/// is known.
fn specificity(w: &CgroupWorkload) -> (u8, bool) {
    let named = |r: &ContainerRef| r.runtime != Runtime::Unknown;
    match w {
        CgroupWorkload::Pod {
            container: Some(r), ..
        } => (4, named(r)),
        CgroupWorkload::Pod { .. } => (3, false),
        CgroupWorkload::Container(r) => (2, named(r)),
        CgroupWorkload::SystemdUnit { .. } | CgroupWorkload::UserSession { .. } => (1, false),
        CgroupWorkload::Host => (0, false),
    }
}

/// Splits a path into its non-empty components and expands runc's systemd
/// `slice:prefix:name` notation.
///
/// When a CRI runtime is configured for the systemd driver but the OCI
/// runtime uses cgroupfs (containerd's `SystemdCgroup = false` under a
/// kubelet with `cgroupDriver: systemd`, or youki as in containerd/runwasi
/// issue #821), the cgroupsPath is taken literally and the process lands in
/// a single directory such as
/// `/kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>`. That component
/// becomes the two components systemd would have created, but only when the
/// second one names a container, so no unit is ever invented from it.
fn components(path: &[u8]) -> Vec<Cow<'_, [u8]>> {
    let mut out: Vec<Cow<'_, [u8]>> = Vec::new();
    for c in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        if let Some((slice, scope)) = split_systemd_triple(c) {
            out.push(Cow::Borrowed(slice));
            out.push(Cow::Owned(scope));
        } else {
            out.push(Cow::Borrowed(c));
        }
    }
    out
}

/// `a.slice:prefix:name` to (`a.slice`, `prefix-name.scope`) when the scope
/// names a container.
fn split_systemd_triple(c: &[u8]) -> Option<(&[u8], Vec<u8>)> {
    let mut parts = c.splitn(3, |&b| b == b':');
    let slice = parts.next()?;
    let prefix = parts.next()?;
    let name = parts.next()?;
    if slice.len() <= b".slice".len() || !slice.ends_with(b".slice") || name.contains(&b':') {
        return None;
    }
    let mut scope = Vec::with_capacity(prefix.len() + name.len() + 7);
    scope.extend_from_slice(prefix);
    scope.push(b'-');
    scope.extend_from_slice(name);
    scope.extend_from_slice(b".scope");
    prefixed_container(&scope)?;
    Some((slice, scope))
}

/// Recognises a pod cgroup at `comps[i]`, giving its uid (with dashes) and
/// QoS class.
///
/// Kubelet layouts (pkg/kubelet/cm/cgroup_manager_linux.go, `ToSystemd` and
/// `ToCgroupfs`; pod_container_manager_linux.go names pods `pod<uid>`;
/// qos_container_manager_linux.go names the QoS levels):
///
/// * systemd driver: `kubepods-pod<uid>.slice` (Guaranteed),
///   `kubepods-burstable-pod<uid>.slice`, `kubepods-besteffort-pod<uid>.slice`,
///   with the uid's dashes written as `_` (`escapeSystemdCgroupName`) because
///   `-` separates a slice from its parent. A custom `--cgroup-root` prefixes
///   every name, e.g. `kubelet-kubepods-burstable-pod<uid>.slice` in kind.
/// * cgroupfs driver: `kubepods/pod<uid>` (Guaranteed),
///   `kubepods/burstable/pod<uid>`, `kubepods/besteffort/pod<uid>`, uid with
///   dashes.
fn pod_component(comps: &[Cow<'_, [u8]>], i: usize) -> Option<(String, Qos)> {
    let c: &[u8] = comps.get(i)?;
    if let Some(stem) = c.strip_suffix(b".slice") {
        let mut parts = stem.rsplit(|&b| b == b'-');
        let uid = pod_uid(parts.next()?.strip_prefix(b"pod")?, b'_')?;
        let qos = match parts.next()? {
            b"kubepods" => Qos::Guaranteed,
            level => {
                let qos = qos_level(level)?;
                if parts.next()? != b"kubepods" {
                    return None;
                }
                qos
            }
        };
        return Some((uid, qos));
    }
    let uid = pod_uid(c.strip_prefix(b"pod")?, b'-')?;
    let parent: &[u8] = comps.get(i.checked_sub(1)?)?;
    if parent == b"kubepods" {
        return Some((uid, Qos::Guaranteed));
    }
    let qos = qos_level(parent)?;
    let grandparent: &[u8] = comps.get(i.checked_sub(2)?)?;
    (grandparent == b"kubepods").then_some((uid, qos))
}

fn qos_level(level: &[u8]) -> Option<Qos> {
    match level {
        b"burstable" => Some(Qos::Burstable),
        b"besteffort" => Some(Qos::BestEffort),
        _ => None,
    }
}

/// A pod uid: a UUID (8-4-4-4-12 hex) with `sep` between the groups, or the
/// 32-hex md5 config hash the kubelet assigns to static pods
/// (pkg/kubelet/config/common.go). Returned with `-` separators.
fn pod_uid(bytes: &[u8], sep: u8) -> Option<String> {
    let ok = match bytes.len() {
        32 => bytes.iter().all(u8::is_ascii_hexdigit),
        36 => bytes.iter().enumerate().all(|(k, &b)| {
            if matches!(k, 8 | 13 | 18 | 23) {
                b == sep
            } else {
                b.is_ascii_hexdigit()
            }
        }),
        _ => false,
    };
    ok.then(|| {
        bytes
            .iter()
            .map(|&b| if b == sep { '-' } else { char::from(b) })
            .collect()
    })
}

/// Recognises a container (or conmon) at `comps[i]`: a runtime-prefixed
/// scope, or a bare id under a pod or a known runtime parent.
fn container_component(
    comps: &[Cow<'_, [u8]>],
    i: usize,
    pod_at: Option<usize>,
) -> Option<(Runtime, Role, String)> {
    let c: &[u8] = comps.get(i)?;
    if let Some(hit) = prefixed_container(c) {
        return Some(hit);
    }
    if !is_container_id(c) {
        return None;
    }
    let parent_at = i.checked_sub(1)?;
    let runtime = if pod_at == Some(parent_at) {
        // cgroupfs driver: `kubepods/<qos>/pod<uid>/<id>`. containerd,
        // dockershim/cri-dockerd all use the bare id, so the runtime is
        // unknown here.
        Runtime::Unknown
    } else {
        let parent: &[u8] = comps.get(parent_at)?;
        BARE_ID_PARENTS
            .iter()
            .find(|(p, _)| *p == parent)
            .map(|&(_, rt)| rt)?
    };
    Some((runtime, Role::Container, ascii(c)))
}

/// `<prefix><64 hex>` with an optional `.scope`.
fn prefixed_container(c: &[u8]) -> Option<(Runtime, Role, String)> {
    let stem = c.strip_suffix(b".scope").unwrap_or(c);
    PREFIXES.iter().find_map(|&(prefix, runtime, role)| {
        let id = stem.strip_prefix(prefix)?;
        is_container_id(id).then(|| (runtime, role, ascii(id)))
    })
}

/// Container ids of every supported runtime are 64 lower-case hex digits
/// (sha256-sized random ids). Upper case never occurs, so it is rejected to
/// keep look-alikes out.
fn is_container_id(b: &[u8]) -> bool {
    b.len() == 64 && b.iter().all(|&c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// The string of bytes already checked to be ASCII.
fn ascii(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `user-<uid>.slice`, the slice logind creates per user.
fn user_slice_uid(c: &[u8]) -> Option<u32> {
    dec_u32(c.strip_prefix(b"user-")?.strip_suffix(b".slice")?)
}

/// `user@<uid>.service`, a user's systemd instance.
fn user_manager_uid(c: &[u8]) -> Option<u32> {
    dec_u32(c.strip_prefix(b"user@")?.strip_suffix(b".service")?)
}

fn dec_u32(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 10 {
        return None;
    }
    b.iter().try_fold(0u32, |acc, &d| {
        if d.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))
        } else {
            None
        }
    })
}

/// A systemd unit that can hold processes. Besides services and scopes,
/// `.mount` and `.swap` units run their helpers in their own cgroup (a FUSE
/// daemon started by a mount unit lives there for good) and `.socket` units
/// run `ExecStartPre=` and friends in theirs. Slices never hold processes
/// under systemd. Names use systemd's character set (unit-name.c,
/// `VALID_CHARS` plus `@` for instances) and are at most 255 bytes.
fn is_unit_name(c: &[u8]) -> bool {
    const SUFFIXES: &[&[u8]] = &[b".service", b".scope", b".socket", b".mount", b".swap"];
    c.len() <= 255
        && SUFFIXES.iter().any(|s| c.len() > s.len() && c.ends_with(s))
        && c.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::cgroup::parse_cgroup;

    // Real ids from public bug reports (containerd/nri#227, minikube#11280,
    // pharos-cluster#440) so the shapes are exactly what runtimes write.
    const C1: &str = "d7dfb4a21fe1703a8537e60d5af248af729315d187b24a538102d14874c8117d";
    const C2: &str = "0ba8ac17e4e7a31fb82279503552fe94e64bab4745bf6fd2ff231e7c8ca8bed0";
    const C3: &str = "abddff03dfd7710c79a750ce3e730365cbb2c8247a974170c1062683bc3e9152";
    const NODE: &str = "d6701ec289c56e4391acb11d07474b3139466857a305490575508a8b7a9fcf22";
    const UID_: &str = "1e597579_417e_482f_bf65_5fe170c3aebd";
    const UID: &str = "1e597579-417e-482f-bf65-5fe170c3aebd";
    /// A static pod's uid: the kubelet's md5 config hash.
    const STATIC_UID: &str = "2b1c0e6a8d4b7e1f9a3c5d7e9f0a1b2c";

    fn pod(qos: Qos, container: Option<(Runtime, &str)>) -> CgroupWorkload {
        pod_with(UID, qos, container, false)
    }

    fn pod_with(
        uid: &str,
        qos: Qos,
        container: Option<(Runtime, &str)>,
        rootless: bool,
    ) -> CgroupWorkload {
        CgroupWorkload::Pod {
            pod_uid: uid.to_string(),
            qos,
            container: container.map(|(runtime, id)| ContainerRef {
                runtime,
                id: id.to_string(),
                rootless,
            }),
        }
    }

    fn ctr(runtime: Runtime, id: &str, rootless: bool) -> CgroupWorkload {
        CgroupWorkload::Container(ContainerRef {
            runtime,
            id: id.to_string(),
            rootless,
        })
    }

    fn unit(u: &str) -> CgroupWorkload {
        CgroupWorkload::SystemdUnit {
            unit: u.to_string(),
        }
    }

    fn user(uid: Option<u32>, u: &str) -> CgroupWorkload {
        CgroupWorkload::UserSession {
            uid,
            unit: u.to_string(),
        }
    }

    /// Every table case goes through here, so none can skip its assertion.
    fn check(path: &str, want: CgroupWorkload) {
        assert_eq!(classify(path.as_bytes()), want, "path {path}");
    }

    fn table() -> Vec<(String, CgroupWorkload)> {
        use CgroupWorkload::Host;
        use Runtime::*;
        vec![
            // --- Kubernetes, systemd driver (kubelet ToSystemd) ---
            // containerd CRI: "kubepods-burstable-pod<uid>.slice:cri-containerd:<id>"
            // expanded by runc's systemd driver.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{C1}.scope"
                ),
                pod(Qos::Burstable, Some((Containerd, C1))),
            ),
            // Guaranteed pods have no QoS slice.
            (
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{C1}.scope"),
                pod(Qos::Guaranteed, Some((Containerd, C1))),
            ),
            // CRI-O (minikube#11280 shows this tree).
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{C2}.scope"
                ),
                pod(Qos::BestEffort, Some((CriO, C2))),
            ),
            // CRI-O's conmon sits in the pod slice: the pod, no container.
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-conmon-{C2}.scope"
                ),
                pod(Qos::BestEffort, None),
            ),
            // Newer CRI-O and crun put the payload in a "container" child.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{C2}.scope/container"
                ),
                pod(Qos::Burstable, Some((CriO, C2))),
            ),
            // cri-dockerd / dockershim with the systemd driver (pharos-cluster#440).
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/docker-{C3}.scope"
                ),
                pod(Qos::BestEffort, Some((Docker, C3))),
            ),
            // The pod-level cgroup itself.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"
                ),
                pod(Qos::Burstable, None),
            ),
            // kind: --cgroup-root=/kubelet prefixes every slice (containerd/nri#227).
            (
                format!(
                    "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{C1}.scope"
                ),
                pod(Qos::BestEffort, Some((Containerd, C1))),
            ),
            // kind on a v2 host seen from the host: the node is a docker
            // scope, the innermost pod wins.
            (
                format!(
                    "/system.slice/docker-{NODE}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_}.slice/cri-containerd-{C1}.scope"
                ),
                pod(Qos::Guaranteed, Some((Containerd, C1))),
            ),
            // minikube's docker driver on v1: "/docker/<node>/kubepods.slice/...".
            (
                format!(
                    "/docker/{NODE}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{C2}.scope"
                ),
                pod(Qos::BestEffort, Some((CriO, C2))),
            ),
            // Static pods use the 32-hex config hash as their uid.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/cri-containerd-{C1}.scope"
                ),
                pod_with(STATIC_UID, Qos::Burstable, Some((Containerd, C1)), false),
            ),
            // Misconfigured drivers: the systemd triple taken as a literal
            // directory (containerd/runwasi#821).
            (
                format!("/kubepods-besteffort-pod{UID_}.slice:cri-containerd:{C1}"),
                pod(Qos::BestEffort, Some((Containerd, C1))),
            ),
            // --- Kubernetes, cgroupfs driver (kubelet ToCgroupfs) ---
            (
                format!("/kubepods/burstable/pod{UID}/{C1}"),
                pod(Qos::Burstable, Some((Unknown, C1))),
            ),
            (
                format!("/kubepods/pod{UID}/{C1}"),
                pod(Qos::Guaranteed, Some((Unknown, C1))),
            ),
            (
                format!("/kubepods/besteffort/pod{UID}/{C1}"),
                pod(Qos::BestEffort, Some((Unknown, C1))),
            ),
            (
                format!("/kubepods/besteffort/pod{UID}"),
                pod(Qos::BestEffort, None),
            ),
            // CRI-O with cgroupfs names its directories like its scopes.
            (
                format!("/kubepods/burstable/pod{UID}/crio-{C2}"),
                pod(Qos::Burstable, Some((CriO, C2))),
            ),
            (
                format!("/kubepods/burstable/pod{UID}/crio-conmon-{C2}"),
                pod(Qos::Burstable, None),
            ),
            // A CI runner's own root around a k3d cluster.
            (
                format!("/actions_job/{NODE}/kubepods/burstable/pod{UID}/{C1}"),
                pod(Qos::Burstable, Some((Unknown, C1))),
            ),
            // k3d on v1: the node is "/docker/<id>", the pod is inside.
            (
                format!("/docker/{NODE}/kubepods/besteffort/pod{UID}/{C1}"),
                pod(Qos::BestEffort, Some((Unknown, C1))),
            ),
            // A pod uid needs the "kubepods" chain with cgroupfs.
            (format!("/burstable/pod{UID}/{C1}"), Host),
            // Docker-in-Docker inside a pod: the innermost container wins.
            (
                format!("/kubepods/burstable/pod{UID}/{C1}/docker/{C3}"),
                ctr(Docker, C3, false),
            ),
            // --- Plain containers ---
            (
                format!("/system.slice/docker-{C3}.scope"),
                ctr(Docker, C3, false),
            ),
            (format!("/docker/{C3}"), ctr(Docker, C3, false)),
            (
                format!("/machine.slice/libpod-{C2}.scope"),
                ctr(Podman, C2, false),
            ),
            // podman --systemd=always: the payload is in a "container" child.
            (
                format!("/machine.slice/libpod-{C2}.scope/container"),
                ctr(Podman, C2, false),
            ),
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{C2}.scope"
                ),
                ctr(Podman, C2, true),
            ),
            (
                format!("/libpod_parent/libpod-{C2}"),
                ctr(Podman, C2, false),
            ),
            // Podman's conmon outside a pod is just the scope it runs in.
            (
                format!("/machine.slice/libpod-conmon-{C2}.scope"),
                unit(&format!("libpod-conmon-{C2}.scope")),
            ),
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-conmon-{C2}.scope"
                ),
                user(Some(1000), &format!("libpod-conmon-{C2}.scope")),
            ),
            // Podman pods are not Kubernetes pods.
            (
                format!("/machine.slice/machine-libpod_pod_{C1}.slice/libpod-{C2}.scope"),
                ctr(Podman, C2, false),
            ),
            (
                format!("/system.slice/nerdctl-{C1}.scope"),
                ctr(Containerd, C1, false),
            ),
            (format!("/default/{C1}"), ctr(Containerd, C1, false)),
            (format!("/k8s.io/{C1}"), ctr(Containerd, C1, false)),
            // A systemd inside a container is still that container.
            (
                format!("/system.slice/docker-{NODE}.scope/system.slice/containerd.service"),
                ctr(Docker, NODE, false),
            ),
            (
                format!("/system.slice/docker-{NODE}.scope/init.scope"),
                ctr(Docker, NODE, false),
            ),
            // --- systemd ---
            ("/system.slice/nginx.service".into(), unit("nginx.service")),
            (
                "/system.slice/docker.service".into(),
                unit("docker.service"),
            ),
            (
                "/system.slice/system-getty.slice/getty@tty1.service".into(),
                unit("getty@tty1.service"),
            ),
            (
                "/system.slice/mnt-data.mount".into(),
                unit("mnt-data.mount"),
            ),
            (
                "/system.slice/system-systemd\\x2dfsck.slice/systemd-fsck@dev-sda1.service".into(),
                unit("systemd-fsck@dev-sda1.service"),
            ),
            // Older CRI-O defaults put conmon in system.slice.
            (
                format!("/system.slice/crio-conmon-{C2}.scope"),
                unit(&format!("crio-conmon-{C2}.scope")),
            ),
            // A scope that only looks like a container scope.
            (
                "/system.slice/docker-abc.scope".into(),
                unit("docker-abc.scope"),
            ),
            (
                "/user.slice/user-1000.slice/session-3.scope".into(),
                user(Some(1000), "session-3.scope"),
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-terminal.scope"
                    .into(),
                user(Some(1000), "app-gnome-terminal.scope"),
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service".into(),
                user(Some(1000), "user@1000.service"),
            ),
            // `systemd --user` itself runs in the manager's init.scope.
            (
                "/user.slice/user-1000.slice/user@1000.service/init.scope".into(),
                user(Some(1000), "user@1000.service"),
            ),
            // A nested systemd's init.scope belongs to the enclosing unit.
            (
                "/machine.slice/machine-web.scope/init.scope".into(),
                unit("machine-web.scope"),
            ),
            // --- Host ---
            ("/".into(), Host),
            ("".into(), Host),
            ("/init.scope".into(), Host),
            ("/system.slice".into(), Host),
            ("/user.slice/user-1000.slice".into(), Host),
            ("/kubepods.slice".into(), Host),
            ("/kubepods.slice/kubepods-burstable.slice".into(), Host),
            ("/kubepods/burstable".into(), Host),
            // This machine's sandbox cgroup: an id under an unknown parent.
            ("/process_api/6d274245258b929b949c58f424842e47".into(), Host),
            (format!("/process_api/{C1}"), Host),
            (format!("/{C1}"), Host),
            (format!("/ecs/{STATIC_UID}/{C1}"), Host),
            // Ids of the wrong length or case are not container ids.
            (format!("/docker/{}", &C3[..63]), Host),
            (format!("/docker/{}", C3.to_uppercase()), Host),
            // Outside our cgroup namespace.
            ("/..".into(), Host),
            (
                format!("/../../system.slice/docker-{C3}.scope"),
                ctr(Docker, C3, false),
            ),
            // A uid with the wrong separator for its driver.
            (format!("/kubepods.slice/kubepods-pod{UID}.slice"), Host),
            (format!("/kubepods/pod{UID_}/{C1}"), Host),
            // Non-UTF-8 and odd bytes never make up a unit.
            ("/system.slice/\u{fffd}.service".into(), Host),
            ("/system.slice/with space.service".into(), Host),
            ("/system.slice/.service".into(), Host),
        ]
    }

    #[test]
    fn classify_table() {
        let cases = table();
        assert!(cases.len() >= 35, "{} cases", cases.len());
        for (path, want) in cases {
            check(&path, want);
        }
    }

    #[test]
    fn runtime_names() {
        let all = [
            (Runtime::Containerd, "containerd"),
            (Runtime::CriO, "cri-o"),
            (Runtime::Docker, "docker"),
            (Runtime::Podman, "podman"),
            (Runtime::Unknown, "unknown"),
        ];
        for (rt, name) in all {
            assert_eq!(rt.as_str(), name);
            // serde's kebab-case agrees with as_str.
            assert_eq!(serde_json::to_string(&rt).unwrap(), format!("\"{name}\""));
        }
        assert_eq!(
            serde_json::to_string(&Qos::BestEffort).unwrap(),
            "\"best-effort\""
        );
    }

    fn lines(text: &str) -> Vec<CgroupLine> {
        parse_cgroup(text.as_bytes())
    }

    #[test]
    fn lines_pick_the_most_specific() {
        // This machine: the v1 memory line is an unknown sandbox, all else "/".
        assert_eq!(
            classify_lines(&parse_cgroup(crate::parse::cgroup::SAMPLE)),
            CgroupWorkload::Host
        );
        assert_eq!(classify_lines(&[]), CgroupWorkload::Host);

        // Hybrid host: v2 says "/", the v1 controllers show the container.
        let l = lines(&format!(
            "4:memory:/docker/{C3}\n1:name=systemd:/docker/{C3}\n0::/\n"
        ));
        assert_eq!(classify_lines(&l), ctr(Runtime::Docker, C3, false));

        // The reverse: v1 controllers at "/", v2 holds the pod container.
        let l = lines(&format!(
            "4:memory:/\n0::/kubepods/burstable/pod{UID}/{C1}\n"
        ));
        assert_eq!(
            classify_lines(&l),
            pod(Qos::Burstable, Some((Runtime::Unknown, C1)))
        );

        // A pod with its container beats the bare pod on another line.
        let l = lines(&format!(
            "0::/kubepods/burstable/pod{UID}\n3:cpu:/kubepods/burstable/pod{UID}/{C1}\n"
        ));
        assert_eq!(
            classify_lines(&l),
            pod(Qos::Burstable, Some((Runtime::Unknown, C1)))
        );

        // v1 controllers a unit does not enable show the parent slice; the
        // name=systemd line names the unit.
        let l = lines(
            "11:cpuacct,cpu:/system.slice\n6:memory:/system.slice\n1:name=systemd:/system.slice/nginx.service\n",
        );
        assert_eq!(classify_lines(&l), unit("nginx.service"));

        // Equally specific: the name=systemd line wins over an earlier v1 one.
        let l =
            lines("3:cpu:/system.slice/cron.service\n1:name=systemd:/system.slice/nginx.service\n");
        assert_eq!(classify_lines(&l), unit("nginx.service"));
        // And the v2 line wins the same way.
        let l = lines("3:cpu:/system.slice/cron.service\n0::/system.slice/nginx.service\n");
        assert_eq!(classify_lines(&l), unit("nginx.service"));
        // Among equally preferred lines the first one wins.
        let l =
            lines("1:name=systemd:/system.slice/cron.service\n0::/system.slice/nginx.service\n");
        assert_eq!(classify_lines(&l), unit("cron.service"));
    }

    /// Captured on this machine: a `sleep` moved into a systemd-driver pod
    /// scope in the v1 name=systemd hierarchy and into a cgroupfs-driver pod
    /// directory in v2, both under made-up roots (`/pgtest-sd`,
    /// `/pgtest-kubepods`), with the memory line left in this machine's
    /// sandbox cgroup.
    const CAPTURED: &str = "\
9:name=systemd:/pgtest-sd/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f8e9a36_5a2b_4c47_9d0e_2f3f4b1c9d11.slice/cri-containerd-abddff03dfd7710c79a750ce3e730365cbb2c8247a974170c1062683bc3e9152.scope
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/0f3714ceb732bcbdec6a7c63d1ba18ba
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/pgtest-kubepods/kubepods/burstable/pod0f8e9a36-5a2b-4c47-9d0e-2f3f4b1c9d11/abddff03dfd7710c79a750ce3e730365cbb2c8247a974170c1062683bc3e9152
";

    #[test]
    fn a_named_runtime_beats_a_bare_id() {
        let uid = "0f8e9a36-5a2b-4c47-9d0e-2f3f4b1c9d11";
        let want = pod_with(uid, Qos::Burstable, Some((Runtime::Containerd, C3)), false);
        assert_eq!(classify_lines(&lines(CAPTURED)), want);
        // The same with the lines reversed: the bare id comes first and is
        // also on a preferred line, yet the named runtime still wins.
        let mut reversed = lines(CAPTURED);
        reversed.reverse();
        assert_eq!(classify_lines(&reversed), want);
        // The v2 line on its own only knows the bare id.
        let v2 = lines(CAPTURED).pop().unwrap();
        assert_eq!(
            classify(&v2.path),
            pod_with(uid, Qos::Burstable, Some((Runtime::Unknown, C3)), false)
        );
    }

    #[test]
    fn the_real_self_cgroup_classifies() {
        // Test-only I/O. Whatever this machine is, the answer must be
        // consistent with classifying the lines one by one.
        let Ok(bytes) = std::fs::read("/proc/self/cgroup") else {
            return;
        };
        let l = parse_cgroup(&bytes);
        let best = classify_lines(&l);
        let max = l
            .iter()
            .map(|x| specificity(&classify(&x.path)))
            .max()
            .unwrap_or((0, false));
        assert_eq!(specificity(&best), max);
    }

    #[test]
    fn hostile_inputs() {
        let big = 4 << 20;
        assert_eq!(classify(&vec![b'/'; big]), CgroupWorkload::Host);
        assert_eq!(classify(&vec![b'a'; big]), CgroupWorkload::Host);
        assert_eq!(classify(&vec![b':'; big]), CgroupWorkload::Host);
        // Many nested pods: still linear, the last one wins.
        let p = format!("/kubepods/pod{UID}").repeat(10_000);
        assert_eq!(classify(p.as_bytes()), pod(Qos::Guaranteed, None));
        // Invalid UTF-8 never makes up a unit, and never hides a container.
        assert_eq!(
            classify(b"/system.slice/\xff\xfe.service"),
            CgroupWorkload::Host
        );
        let mut p = b"/\xff/docker/".to_vec();
        p.extend_from_slice(C3.as_bytes());
        assert_eq!(classify(&p), ctr(Runtime::Docker, C3, false));
        // A huge unit-looking name is not a unit.
        let mut u = vec![b'a'; big];
        u.extend_from_slice(b".service");
        assert_eq!(classify(&u), CgroupWorkload::Host);
        // Truncations of a real path never panic, and a truncated id is never
        // taken for a container.
        let full = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{C1}.scope"
        );
        for n in 0..full.len() {
            if let CgroupWorkload::Pod {
                container: Some(c), ..
            } = classify(&full.as_bytes()[..n])
            {
                assert_eq!(c.id, C1, "prefix {n}");
            }
        }
    }

    /// A xorshift64* generator: deterministic and dependency-free.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            if n == 0 {
                0
            } else {
                (self.next() % n as u64) as usize
            }
        }
    }

    /// Checks the invariants every classification must hold.
    fn check_invariants(w: &CgroupWorkload) {
        let check_ref = |r: &ContainerRef| assert!(is_container_id(r.id.as_bytes()), "{r:?}");
        match w {
            CgroupWorkload::Pod {
                pod_uid, container, ..
            } => {
                assert!(pod_uid.len() == 32 || pod_uid.len() == 36, "{pod_uid}");
                assert!(!pod_uid.contains('_'));
                if let Some(r) = container {
                    check_ref(r);
                }
            }
            CgroupWorkload::Container(r) => check_ref(r),
            CgroupWorkload::SystemdUnit { unit } | CgroupWorkload::UserSession { unit, .. } => {
                assert!(is_unit_name(unit.as_bytes()), "{unit}")
            }
            CgroupWorkload::Host => {}
        }
    }

    #[test]
    fn fuzz_no_panics() {
        const ALPHABET: &[u8] = b"0123456789abcdef/-_.:@\\kubepods.slice-pod.scope\n";
        let fixtures: Vec<String> = table().into_iter().map(|(p, _)| p).collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..20_000 {
            let input: Vec<u8> = if round % 2 == 0 {
                // Pure noise, biased towards structural bytes.
                (0..rng.below(200))
                    .map(|_| {
                        if rng.below(3) == 0 {
                            rng.next() as u8
                        } else {
                            ALPHABET[rng.below(ALPHABET.len())]
                        }
                    })
                    .collect()
            } else {
                // A real path with a few random edits.
                let mut v = fixtures[rng.below(fixtures.len())].as_bytes().to_vec();
                for _ in 0..=rng.below(4) {
                    let pos = rng.below(v.len() + 1);
                    match rng.below(4) {
                        0 if pos < v.len() => v[pos] = rng.next() as u8,
                        1 => v.insert(pos, ALPHABET[rng.below(ALPHABET.len())]),
                        2 => v.truncate(pos),
                        _ => {
                            let end = (pos + rng.below(80)).min(v.len());
                            let chunk = v[pos..end].to_vec();
                            v.splice(pos..pos, chunk);
                        }
                    }
                }
                v
            };
            check_invariants(&classify(&input));
            let mut as_file = b"0::".to_vec();
            as_file.extend_from_slice(&input);
            check_invariants(&classify_lines(&parse_cgroup(&as_file)));
            check_invariants(&classify_lines(&parse_cgroup(&input)));
        }
    }
}
