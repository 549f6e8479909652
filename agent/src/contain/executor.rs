//! The executor: attaches, keeps, swaps and removes isolations so that what
//! is pinned under its bpffs directory equals the desired set.
//!
//! Layout, per isolation id and generation N:
//!
//! ```text
//! <bpffs_dir>/<id>/gN/link_pg_ct_connect4   pinned links (attached while pinned)
//!                     link_pg_ct_connect6
//!                     link_pg_ct_egress
//!                     ct_allow4 ct_allow6    the instance's maps
//!                     ct_config ct_counters
//!                     ct_spec                pinned last: the generation is complete
//! ```
//!
//! A generation without `ct_spec` was cut short (the agent died while
//! attaching it); its links may still be attached, so it is removed like
//! any generation that is not the one kept, and only after the one kept (or
//! a new one) is attached.

use std::collections::{BTreeMap, HashSet};
use std::ffi::CString;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, Map, MapData};
use aya::programs::links::FdLink;
use aya::programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr};
use aya::util::KernelVersion;
use aya::{EbpfLoader, Pod};
use patchgap_ebpf::CONTAIN_OBJECT;
use patchgap_ebpf::contain as abi;
use serde::{Deserialize, Serialize};

use super::hierarchy::{CgroupDir, Guards, Hierarchy};
use super::{Applied, ContainError, Counters, Isolation, Mode, Prefix, valid_id};

/// Where the agent pins its isolations unless told otherwise.
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/patchgap/contain";

/// Where bpffs is mounted when nobody has mounted it (PLATFORM.md: this
/// host does not mount it at boot).
const BPFFS_MOUNT: &str = "/sys/fs/bpf";
/// statfs f_type of bpffs (linux/magic.h).
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// The spec record's format; a record of another version is not trusted to
/// compare equal, so the isolation is swapped to this version's.
const SPEC_VERSION: u32 = 1;

/// The pin name of a program's link.
fn link_name(program: &str) -> String {
    format!("link_{program}")
}

/// Every name the executor pins in a generation, in removal order: links
/// first (removing a link's pin detaches it), the spec record last (a
/// generation without it is incomplete).
fn pin_names() -> Vec<String> {
    let mut names: Vec<String> = abi::PROGRAMS.iter().map(|p| link_name(p)).collect();
    names.extend(
        abi::MAPS
            .iter()
            .filter(|m| **m != abi::MAP_SPEC)
            .map(|m| m.to_string()),
    );
    names.push(abi::MAP_SPEC.to_string());
    names
}

/// aya reads and writes map values as `Pod`; the ABI structs live in
/// `patchgap-ebpf`, which does not depend on aya, hence these wrappers.
#[repr(transparent)]
#[derive(Clone, Copy)]
struct PodConfig(abi::Config);
// SAFETY: a #[repr(C)] struct of u32s whose padding is a named field: every
// byte pattern is a valid value and there are no uninitialised bytes.
unsafe impl Pod for PodConfig {}

#[repr(transparent)]
#[derive(Clone, Copy)]
struct PodCounters(abi::Counters);
// SAFETY: a #[repr(C)] struct of u64s: every byte pattern is a valid value.
unsafe impl Pod for PodCounters {}

/// What was applied, compared field by field with what is desired. The
/// cgroup's inode is part of it: a cgroup deleted and created again under
/// the same name is another cgroup, and the old links died with the old one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Spec {
    id: String,
    /// Relative to the cgroup2 mount.
    cgroup: String,
    cgroup_ino: u64,
    mode: Mode,
    /// Sorted, without duplicates; loopback is implicit.
    allow: Vec<Prefix>,
}

/// The JSON in `ct_spec`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    version: u32,
    spec: Spec,
    /// When this generation was attached, ms since the epoch.
    applied_unix_ms: u64,
}

/// A desired isolation, checked and resolved.
struct Target<'a> {
    iso: &'a Isolation,
    spec: Spec,
    /// The cgroup directory, opened for attaching.
    dir: CgroupDir,
}

impl Target<'_> {
    fn bpf(&self, step: String, e: impl std::error::Error + Send + Sync + 'static) -> ContainError {
        ContainError::Bpf {
            id: self.iso.id.clone(),
            cgroup: self.iso.cgroup.clone(),
            step,
            source: Box::new(e),
        }
    }

    fn missing(&self, what: &str) -> ContainError {
        self.bpf(
            format!("find {what}"),
            io::Error::other(format!("{what} is not in contain.bpf.o")),
        )
    }
}

/// One generation found under an isolation's directory.
struct Generation {
    n: u64,
    dir: PathBuf,
    /// The spec record, or why it is missing or unreadable.
    record: Result<Record, String>,
}

/// What the bpffs directory holds.
#[derive(Default)]
struct Pinned {
    /// By id, generations in ascending order.
    ids: BTreeMap<String, Vec<Generation>>,
    /// Entries the executor did not create.
    foreign: Vec<PathBuf>,
}

/// Applies isolations by pinning BPF links and maps in bpffs. Holds no
/// state but where things are: a new `Executor` over the same directory
/// sees and keeps what an earlier one (or an earlier agent) applied.
#[derive(Debug)]
pub struct Executor {
    bpffs_dir: PathBuf,
    /// The cgroup2 hierarchy isolated cgroups must be inside.
    cgroups: Hierarchy,
}

impl Executor {
    /// An executor that pins under `bpffs_dir` (usually
    /// [`DEFAULT_BPFFS_DIR`]). Mounts bpffs at /sys/fs/bpf when the
    /// directory is below it and nothing is mounted there, creates the
    /// directory, and finds the cgroup2 mount.
    pub fn new(bpffs_dir: PathBuf) -> Result<Executor, ContainError> {
        ensure_bpffs(&bpffs_dir)?;
        let cgroups = Hierarchy::new()?;
        Ok(Executor { bpffs_dir, cgroups })
    }

    /// The bpffs directory it pins under.
    pub fn bpffs_dir(&self) -> &Path {
        &self.bpffs_dir
    }

    /// The cgroup2 mount point isolations' cgroups must be inside.
    pub fn cgroup2_mount(&self) -> &Path {
        self.cgroups.mount()
    }

    /// Makes the attached set equal to `desired`: attaches what is new,
    /// leaves what is pinned with the same spec alone, swaps what changed
    /// (new generation attached first, old one removed after), and removes
    /// the pins of ids no longer desired, which detaches them. Returns one
    /// [`Applied`] per desired id, per released id and per foreign entry.
    /// Runs no program and never blocks on the network; each step is a few
    /// bpf(2) calls.
    pub fn reconcile(&mut self, desired: &[Isolation]) -> Vec<Applied> {
        self.reconcile_keeping(desired, &[])
    }

    /// [`Executor::reconcile`], but the ids in `keep` stay as they are
    /// pinned (if they are): wanted, though their new spec could not be
    /// read, so neither lifted nor changed.
    pub fn reconcile_keeping(&mut self, desired: &[Isolation], keep: &[&str]) -> Vec<Applied> {
        let mut out = Vec::new();
        let pinned = match self.scan() {
            Ok(p) => p,
            Err(e) => {
                // Without knowing what is pinned nothing can be compared:
                // report every desired id, touch nothing.
                for iso in desired {
                    out.push(Applied::Failed {
                        id: iso.id.clone(),
                        error: copy_error(&e),
                    });
                }
                return out;
            }
        };
        let guards = Guards::read();
        let mut seen = HashSet::new();
        for iso in desired {
            if !seen.insert(iso.id.as_str()) {
                out.push(Applied::Failed {
                    id: iso.id.clone(),
                    error: ContainError::DuplicateId { id: iso.id.clone() },
                });
                continue;
            }
            let gens = pinned.ids.get(&iso.id).map_or(&[][..], Vec::as_slice);
            let applied = match &guards {
                Ok(g) => self.apply(iso, gens, g),
                Err(e) => Applied::Failed {
                    id: iso.id.clone(),
                    error: copy_error(e),
                },
            };
            out.push(applied);
        }
        for (id, gens) in &pinned.ids {
            if seen.contains(id.as_str()) || keep.contains(&id.as_str()) {
                continue;
            }
            out.push(match self.remove_all(id, gens) {
                Ok(()) => Applied::Released { id: id.clone() },
                Err(error) => Applied::Failed {
                    id: id.clone(),
                    error,
                },
            });
        }
        out.extend(
            pinned
                .foreign
                .into_iter()
                .map(|path| Applied::Foreign { path }),
        );
        out
    }

    /// The counters of isolation `id` (its newest complete generation), or
    /// None when it is not pinned or its maps cannot be read (logged).
    /// Counters belong to a generation: a swap starts from zero, and the
    /// first-block time is then the new generation's.
    pub fn status(&self, id: &str) -> Option<Counters> {
        if !valid_id(id) {
            return None;
        }
        let dir = self.bpffs_dir.join(id);
        let gens = scan_id(&dir, &mut Vec::new()).ok()?;
        let (gen_dir, record) = gens
            .iter()
            .rev()
            .find_map(|g| g.record.as_ref().ok().map(|r| (&g.dir, r)))?;
        let path = gen_dir.join(abi::MAP_COUNTERS);
        let read = || -> Result<abi::Counters, aya::maps::MapError> {
            let map = Map::from_map_data(MapData::from_pin(&path)?)?;
            let counters: Array<MapData, PodCounters> = Array::try_from(map)?;
            Ok(counters.get(&0, 0)?.0)
        };
        match read() {
            Ok(c) => Some(Counters {
                mode: Some(record.spec.mode),
                blocked_connects: c.blocked_connects,
                blocked_packets: c.blocked_packets,
                would_block_connects: c.would_block_connects,
                would_block_packets: c.would_block_packets,
                first_block_unix_ms: boot_ns_to_unix_ms(c.first_block_ns),
                first_would_block_unix_ms: boot_ns_to_unix_ms(c.first_would_block_ns),
            }),
            Err(error) => {
                tracing::warn!(%error, id, path = %path.display(), "contain: cannot read the counters");
                None
            }
        }
    }

    /// Keeps, attaches or swaps one desired isolation.
    fn apply(&self, iso: &Isolation, gens: &[Generation], guards: &Guards) -> Applied {
        let id = iso.id.clone();
        let target = match self.target(iso, guards) {
            Ok(t) => t,
            Err(error) => return Applied::Failed { id, error },
        };
        // The newest generation that already applies exactly this spec is
        // kept as it is: detaching and attaching again would open a window.
        let keep = gens.iter().rev().find(
            |g| matches!(&g.record, Ok(r) if r.version == SPEC_VERSION && r.spec == target.spec),
        );
        if let Some(keep) = keep {
            // Leftovers of a swap cut short go, now that the kept one is
            // known to be in place.
            for g in gens.iter().filter(|g| g.n != keep.n) {
                if let Err(error) = remove_generation(&g.dir) {
                    return Applied::Failed { id, error };
                }
            }
            return Applied::Unchanged { id };
        }
        let n = gens.iter().map(|g| g.n).max().map_or(1, |m| m + 1);
        let dir = self.bpffs_dir.join(&iso.id).join(format!("g{n}"));
        if let Err(error) = self.attach(&target, &dir) {
            // Nothing half-made stays; what was in force before still is.
            if let Err(cleanup) = remove_generation(&dir) {
                tracing::warn!(error = %cleanup, id = %id, "contain: cannot remove a failed generation");
            }
            return Applied::Failed { id, error };
        }
        for g in gens {
            if let Err(error) = remove_generation(&g.dir) {
                return Applied::Failed { id, error };
            }
        }
        if gens.is_empty() {
            Applied::Attached { id }
        } else {
            Applied::Swapped { id }
        }
    }

    /// Checks an isolation and resolves its cgroup: a valid id, a cgroup
    /// the hierarchy's guards let through ([`Hierarchy::open_guarded`]),
    /// and an allow-list that fits.
    fn target<'a>(&self, iso: &'a Isolation, guards: &Guards) -> Result<Target<'a>, ContainError> {
        if !valid_id(&iso.id) {
            return Err(ContainError::InvalidId { id: iso.id.clone() });
        }
        let dir = self.cgroups.open_guarded(&iso.cgroup, guards)?;
        let mut allow = iso.allow.clone();
        allow.sort();
        allow.dedup();
        let v4 = allow.iter().filter(|p| p.addr().is_ipv4()).count();
        let v6 = allow.len() - v4;
        if v4.max(v6) > abi::ALLOW_MAX {
            return Err(ContainError::AllowTooLarge {
                id: iso.id.clone(),
                what: format!(
                    "{v4} IPv4 and {v6} IPv6 prefixes, at most {} each",
                    abi::ALLOW_MAX
                ),
            });
        }
        let spec = Spec {
            id: iso.id.clone(),
            cgroup: dir.relative().to_string_lossy().into_owned(),
            cgroup_ino: dir.ino(),
            mode: iso.mode,
            allow,
        };
        Ok(Target { iso, spec, dir })
    }

    /// Loads an instance of contain.bpf.o, fills its maps, attaches its
    /// programs to the cgroup and pins everything in `dir`, the spec record
    /// last.
    fn attach(&self, t: &Target<'_>, dir: &Path) -> Result<(), ContainError> {
        // Cgroup BPF links (pinnable, multi-attach): 5.7. A kernel without
        // them is refused, not served an exclusive legacy attach.
        let kernel = KernelVersion::current().map_err(|e| {
            t.bpf(
                "read the kernel version".into(),
                io::Error::other(e.to_string()),
            )
        })?;
        if kernel < KernelVersion::new(5, 7, 0) {
            return Err(t.bpf(
                "check the kernel".into(),
                io::Error::other(format!(
                    "kernel {kernel:?} has no cgroup BPF links (5.7+): isolation cannot be pinned"
                )),
            ));
        }
        let record = Record {
            version: SPEC_VERSION,
            spec: t.spec.clone(),
            applied_unix_ms: unix_ms(),
        };
        let json = serde_json::to_vec(&record).expect("a record always serialises");
        if json.len() > abi::SPEC_BYTES {
            return Err(ContainError::AllowTooLarge {
                id: t.iso.id.clone(),
                what: format!(
                    "its spec record is {} bytes, at most {}",
                    json.len(),
                    abi::SPEC_BYTES
                ),
            });
        }
        let parent = dir.parent().unwrap_or(dir);
        fs::create_dir_all(parent).map_err(|source| io_error("create", parent, source))?;
        fs::create_dir(dir).map_err(|source| io_error("create", dir, source))?;

        // No CO-RE in this object: the contexts are uapi structs the
        // verifier rewrites, so the load needs no kernel BTF.
        let mut ebpf = EbpfLoader::new()
            .load(CONTAIN_OBJECT)
            .map_err(|e| t.bpf("load contain.bpf.o".into(), e))?;

        // The maps are filled before any program is attached: an instance
        // never runs with an empty allow-list or an unset mode.
        {
            let map = ebpf
                .map_mut(abi::MAP_ALLOW4)
                .ok_or_else(|| t.missing(abi::MAP_ALLOW4))?;
            let mut trie: LpmTrie<&mut MapData, [u8; 4], u8> =
                LpmTrie::try_from(map).map_err(|e| t.bpf(abi::MAP_ALLOW4.into(), e))?;
            for p in &t.spec.allow {
                if let IpAddr::V4(a) = p.addr() {
                    trie.insert(&Key::new(u32::from(p.prefix_len()), a.octets()), 1u8, 0)
                        .map_err(|e| t.bpf(format!("allow {p}"), e))?;
                }
            }
        }
        {
            let map = ebpf
                .map_mut(abi::MAP_ALLOW6)
                .ok_or_else(|| t.missing(abi::MAP_ALLOW6))?;
            let mut trie: LpmTrie<&mut MapData, [u8; 16], u8> =
                LpmTrie::try_from(map).map_err(|e| t.bpf(abi::MAP_ALLOW6.into(), e))?;
            for p in &t.spec.allow {
                if let IpAddr::V6(a) = p.addr() {
                    trie.insert(&Key::new(u32::from(p.prefix_len()), a.octets()), 1u8, 0)
                        .map_err(|e| t.bpf(format!("allow {p}"), e))?;
                }
            }
        }
        {
            let map = ebpf
                .map_mut(abi::MAP_CONFIG)
                .ok_or_else(|| t.missing(abi::MAP_CONFIG))?;
            let mut config: Array<&mut MapData, PodConfig> =
                Array::try_from(map).map_err(|e| t.bpf(abi::MAP_CONFIG.into(), e))?;
            let mode = match t.spec.mode {
                Mode::Shadow => abi::MODE_SHADOW,
                Mode::Enforce => abi::MODE_ENFORCE,
            };
            config
                .set(0, PodConfig(abi::Config { mode, _pad0: 0 }), 0)
                .map_err(|e| t.bpf("set the mode".into(), e))?;
        }
        {
            let map = ebpf
                .map_mut(abi::MAP_SPEC)
                .ok_or_else(|| t.missing(abi::MAP_SPEC))?;
            let mut spec: Array<&mut MapData, [u8; abi::SPEC_BYTES]> =
                Array::try_from(map).map_err(|e| t.bpf(abi::MAP_SPEC.into(), e))?;
            let mut bytes = [0u8; abi::SPEC_BYTES];
            bytes[..json.len()].copy_from_slice(&json);
            spec.set(0, bytes, 0)
                .map_err(|e| t.bpf("write the spec record".into(), e))?;
        }
        for name in abi::MAPS.iter().filter(|m| **m != abi::MAP_SPEC) {
            let map = ebpf.map(name).ok_or_else(|| t.missing(name))?;
            map.pin(dir.join(name))
                .map_err(|e| t.bpf(format!("pin {name}"), e))?;
        }

        // Our programs must run next to any other BPF user's on this cgroup
        // and its ancestors, and replace none: BPF_F_ALLOW_MULTI. With aya
        // =0.14 on a kernel with cgroup BPF links (5.7+) attach() is
        // BPF_LINK_CREATE, and the kernel attaches every cgroup link as
        // BPF_F_ALLOW_MULTI by itself while refusing any flag with EINVAL
        // (measured on 6.18: CgroupAttachMode::AllowMultiple fails). So the
        // mode passed is Single, which is "no flags", and the multi-attach
        // comes from the link. Older kernels would get a legacy
        // BPF_PROG_ATTACH, exclusive and not pinnable: refused above.
        // Each link is pinned at once, so nothing attached is ever held
        // only by this process.
        for &name in abi::PROGRAMS {
            let program = ebpf.program_mut(name).ok_or_else(|| t.missing(name))?;
            let link: FdLink = if name == abi::PROG_EGRESS {
                let p: &mut CgroupSkb = program
                    .try_into()
                    .map_err(|e| t.bpf(format!("program {name}"), e))?;
                p.load().map_err(|e| t.bpf(format!("load {name}"), e))?;
                let link_id = p
                    .attach(
                        t.dir.file(),
                        CgroupSkbAttachType::Egress,
                        CgroupAttachMode::Single,
                    )
                    .map_err(|e| t.bpf(format!("attach {name}"), e))?;
                let link = p
                    .take_link(link_id)
                    .map_err(|e| t.bpf(format!("take the link of {name}"), e))?;
                FdLink::try_from(link).map_err(|e| t.bpf(format!("link of {name}"), e))?
            } else {
                // The attach type (connect4 or connect6) comes from the
                // section name.
                let p: &mut CgroupSockAddr = program
                    .try_into()
                    .map_err(|e| t.bpf(format!("program {name}"), e))?;
                p.load().map_err(|e| t.bpf(format!("load {name}"), e))?;
                let link_id = p
                    .attach(t.dir.file(), CgroupAttachMode::Single)
                    .map_err(|e| t.bpf(format!("attach {name}"), e))?;
                let link = p
                    .take_link(link_id)
                    .map_err(|e| t.bpf(format!("take the link of {name}"), e))?;
                FdLink::try_from(link).map_err(|e| t.bpf(format!("link of {name}"), e))?
            };
            link.pin(dir.join(link_name(name)))
                .map_err(|e| t.bpf(format!("pin the link of {name}"), e))?;
        }

        // Last: with the record pinned the generation is complete.
        let map = ebpf
            .map(abi::MAP_SPEC)
            .ok_or_else(|| t.missing(abi::MAP_SPEC))?;
        map.pin(dir.join(abi::MAP_SPEC))
            .map_err(|e| t.bpf(format!("pin {}", abi::MAP_SPEC), e))?;
        Ok(())
    }

    /// Removes every generation of `id`, then its directory.
    fn remove_all(&self, id: &str, gens: &[Generation]) -> Result<(), ContainError> {
        for g in gens {
            remove_generation(&g.dir)?;
        }
        remove_dir(&self.bpffs_dir.join(id))
    }

    /// What the bpffs directory holds, sorted into ours and foreign.
    fn scan(&self) -> Result<Pinned, ContainError> {
        let mut pinned = Pinned::default();
        let entries =
            fs::read_dir(&self.bpffs_dir).map_err(|e| io_error("read", &self.bpffs_dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error("read", &self.bpffs_dir, e))?;
            let path = entry.path();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            match entry.file_name().to_str() {
                Some(id) if is_dir && valid_id(id) => {
                    let gens = scan_id(&path, &mut pinned.foreign)?;
                    pinned.ids.insert(id.to_string(), gens);
                }
                _ => pinned.foreign.push(path),
            }
        }
        Ok(pinned)
    }
}

/// The generations under one isolation's directory, ascending; anything
/// else in it, or unknown names inside a generation, goes to `foreign`.
fn scan_id(dir: &Path, foreign: &mut Vec<PathBuf>) -> Result<Vec<Generation>, ContainError> {
    let known = pin_names();
    let mut gens = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| io_error("read", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("read", dir, e))?;
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let n = entry
            .file_name()
            .to_str()
            .and_then(|name| name.strip_prefix('g'))
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u64>().ok());
        let Some(n) = n.filter(|_| is_dir) else {
            foreign.push(path);
            continue;
        };
        for inner in fs::read_dir(&path).map_err(|e| io_error("read", &path, e))? {
            let inner = inner.map_err(|e| io_error("read", &path, e))?;
            let name = inner.file_name();
            if !known.iter().any(|k| name.as_bytes() == k.as_bytes()) {
                foreign.push(inner.path());
            }
        }
        let record = read_record(&path);
        gens.push(Generation {
            n,
            dir: path,
            record,
        });
    }
    gens.sort_by_key(|g| g.n);
    Ok(gens)
}

/// The spec record pinned in a generation.
fn read_record(dir: &Path) -> Result<Record, String> {
    let path = dir.join(abi::MAP_SPEC);
    let map = MapData::from_pin(&path)
        .and_then(Map::from_map_data)
        .map_err(|e| format!("no spec record (an attach cut short?): {e}"))?;
    let spec: Array<MapData, [u8; abi::SPEC_BYTES]> =
        Array::try_from(map).map_err(|e| format!("spec record map: {e}"))?;
    let bytes = spec
        .get(&0, 0)
        .map_err(|e| format!("read the spec record: {e}"))?;
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let record: Record = serde_json::from_slice(&bytes[..end])
        .map_err(|e| format!("spec record is not valid JSON: {e}"))?;
    Ok(record)
}

/// Removes a generation: its links first (which detaches them), then its
/// maps, the spec record last, then the directory. Names it did not pin are
/// left, and then the directory stays ([`ContainError::NotEmpty`]).
fn remove_generation(dir: &Path) -> Result<(), ContainError> {
    for name in pin_names() {
        let path = dir.join(&name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("unpin", &path, e)),
        }
    }
    remove_dir(dir)
}

fn remove_dir(dir: &Path) -> Result<(), ContainError> {
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Err(ContainError::NotEmpty {
            path: dir.to_path_buf(),
        }),
        Err(e) => Err(io_error("remove", dir, e)),
    }
}

/// One bpffs mount per process at most, even when several executors start
/// at once (tests do).
static MOUNT_LOCK: Mutex<()> = Mutex::new(());

/// Makes `dir` a directory on bpffs, mounting bpffs at /sys/fs/bpf first
/// when `dir` is below it and nothing is mounted there.
fn ensure_bpffs(dir: &Path) -> Result<(), ContainError> {
    let _mounting = MOUNT_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let bpffs = |source: Option<io::Error>, reason: &str| ContainError::Bpffs {
        dir: dir.to_path_buf(),
        reason: reason.to_string(),
        source,
    };
    let existing = dir
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    let mount = Path::new(BPFFS_MOUNT);
    if path_magic(existing).ok() != Some(BPF_FS_MAGIC)
        && dir.starts_with(mount)
        && path_magic(mount).ok() != Some(BPF_FS_MAGIC)
    {
        fs::create_dir_all(mount).map_err(|e| bpffs(Some(e), "cannot create /sys/fs/bpf"))?;
        // What systemd does at boot: root only, no devices, no exec.
        // SAFETY: every pointer is a valid NUL-terminated string that
        // outlives the call.
        let ret = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                c"/sys/fs/bpf".as_ptr(),
                c"bpf".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"mode=0700".as_ptr().cast(),
            )
        };
        if ret != 0 {
            return Err(bpffs(
                Some(io::Error::last_os_error()),
                "cannot mount bpffs at /sys/fs/bpf",
            ));
        }
        tracing::info!("contain: mounted bpffs at /sys/fs/bpf");
    }
    fs::create_dir_all(dir).map_err(|e| bpffs(Some(e), "cannot create it"))?;
    if path_magic(dir).ok() != Some(BPF_FS_MAGIC) {
        return Err(bpffs(None, "not on a bpf filesystem"));
    }
    Ok(())
}

/// statfs(2)'s f_type of a path.
fn path_magic(path: &Path) -> io::Result<u64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: statfs is plain old data; all-zero bytes are a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path, `st` a writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    u64::try_from(st.f_type).map_err(|_| io::Error::other("negative f_type"))
}

fn io_error(op: &'static str, path: &Path, source: io::Error) -> ContainError {
    ContainError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The same error again, for reporting one failure under several ids (the
/// sources are not Clone; their kind and message are kept).
fn copy_error(e: &ContainError) -> ContainError {
    match e {
        ContainError::Io { op, path, source } => ContainError::Io {
            op,
            path: path.clone(),
            source: io::Error::new(source.kind(), source.to_string()),
        },
        other => ContainError::Io {
            op: "reconcile",
            path: PathBuf::new(),
            source: io::Error::other(other.to_string()),
        },
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; REALTIME and BOOTTIME exist
    // on every kernel this runs on, so this cannot fail.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// A CLOCK_BOOTTIME time in ns (what the programs record) as ms since the
/// epoch; None for 0 (never happened).
fn boot_ns_to_unix_ms(boot_ns: u64) -> Option<u64> {
    if boot_ns == 0 {
        return None;
    }
    let ago = clock_ns(libc::CLOCK_BOOTTIME).saturating_sub(boot_ns);
    Some(clock_ns(libc::CLOCK_REALTIME).saturating_sub(ago) / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_links_first_spec_last() {
        let names = pin_names();
        assert_eq!(names.len(), abi::PROGRAMS.len() + abi::MAPS.len());
        assert!(
            names[..abi::PROGRAMS.len()]
                .iter()
                .all(|n| n.starts_with("link_"))
        );
        assert_eq!(names.last().map(String::as_str), Some(abi::MAP_SPEC));
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn a_large_spec_record_still_fits() {
        // 64 prefixes of the longest IPv6 form, plus a long cgroup path: the
        // record must stay under the map's value size, or attach refuses.
        let allow: Vec<Prefix> = (0..64u16)
            .map(|i| {
                format!("2001:db8:ffff:{i:x}:ffff:ffff:ffff:ffff/128")
                    .parse()
                    .unwrap()
            })
            .collect();
        let record = Record {
            version: SPEC_VERSION,
            spec: Spec {
                id: "x".repeat(64),
                cgroup: "kubepods/burstable/pod0f8e9a36-5a2b-4c47-9d0e-2f3f4b1c9d11/abddff03dfd7710c79a750ce3e730365cbb2c8247a974170c1062683bc3e9152".into(),
                cgroup_ino: u64::MAX,
                mode: Mode::Enforce,
                allow,
            },
            applied_unix_ms: u64::MAX,
        };
        let json = serde_json::to_vec(&record).unwrap();
        assert!(json.len() <= abi::SPEC_BYTES, "{} bytes", json.len());
        let back: Record = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.spec, record.spec);
    }

    #[test]
    fn boot_time_to_wall_clock() {
        assert_eq!(boot_ns_to_unix_ms(0), None);
        let now_boot = clock_ns(libc::CLOCK_BOOTTIME);
        let wall = boot_ns_to_unix_ms(now_boot - 5_000_000_000).unwrap();
        let expect = unix_ms() - 5_000;
        assert!(wall.abs_diff(expect) < 100, "{wall} vs {expect}");
    }
}
