//! Where the cgroup2 hierarchy is mounted, and which cgroups the guards
//! protect. Parsers and pure checks: the executor reads the files.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::parse::cgroup::parse_cgroup;

/// The mount point of the cgroup2 hierarchy in a `/proc/PID/mountinfo`: the
/// first `cgroup2` mount of the hierarchy's root (`/sys/fs/cgroup` on a
/// pure v2 host, `/sys/fs/cgroup/unified` on a hybrid one). Bind mounts of
/// a subtree (root other than `/`) are skipped: paths would not line up.
pub fn cgroup2_mount(mountinfo: &[u8]) -> Option<PathBuf> {
    for line in mountinfo.split(|&b| b == b'\n') {
        // `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER`
        let Some(dash) = line.windows(3).position(|w| w == b" - ") else {
            continue;
        };
        let (before, after) = (&line[..dash], &line[dash + 3..]);
        if after.split(|&b| b == b' ').next() != Some(b"cgroup2".as_slice()) {
            continue;
        }
        let fields: Vec<&[u8]> = before.split(|&b| b == b' ').collect();
        if fields.len() < 6 || fields[3] != b"/" {
            continue;
        }
        let Some(mount) = unescape(fields[4]) else {
            continue;
        };
        if mount.first() == Some(&b'/') {
            return Some(PathBuf::from(OsStr::from_bytes(&mount)));
        }
    }
    None
}

/// mountinfo's octal escapes (`\040` space, `\011` tab, `\012` newline,
/// `\134` backslash). None for a malformed escape.
fn unescape(field: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' {
            let digits = field.get(i + 1..i + 4)?;
            if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                return None;
            }
            let v = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            out.push(u8::try_from(v).ok()?);
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The cgroup v2 path of a `/proc/PID/cgroup` (its `0::` line), as the
/// kernel prints it (`/` for the root).
pub fn v2_path(proc_cgroup: &[u8]) -> Option<PathBuf> {
    parse_cgroup(proc_cgroup)
        .into_iter()
        .find(|l| l.hierarchy == 0 && l.controllers.is_empty())
        .map(|l| PathBuf::from(OsStr::from_bytes(&l.path)))
}

/// A cgroup the guards never let the executor isolate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protected {
    /// The hierarchy's root: every process of the host.
    Root,
    /// The agent's own cgroup, or an ancestor of it: isolating it would cut
    /// the agent off from the collector that can lift the isolation.
    Agent,
    /// PID 1's cgroup, or an ancestor of it.
    Pid1,
}

impl fmt::Display for Protected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protected::Root => "the root of the cgroup2 hierarchy",
            Protected::Agent => "the agent's own cgroup or an ancestor of it",
            Protected::Pid1 => "PID 1's cgroup or an ancestor of it",
        })
    }
}

/// Which protected cgroup `target` is, or is an ancestor of (programs on a
/// cgroup apply to every descendant). All paths are relative to the
/// hierarchy's root, with or without a leading `/` (as /proc/PID/cgroup
/// prints them). A protected path with `..` (a process outside the agent's
/// cgroup namespace) cannot be placed, so it protects everything; a target
/// with `..` cannot be placed either, and is refused like the root.
pub fn protected_by(target: &Path, agent: &Path, pid1: &Path) -> Option<Protected> {
    let Some(target) = components(target) else {
        return Some(Protected::Root);
    };
    if target.is_empty() {
        return Some(Protected::Root);
    }
    for (what, path) in [(Protected::Agent, agent), (Protected::Pid1, pid1)] {
        match components(path) {
            None => return Some(what),
            Some(p) if p.starts_with(&target) => return Some(what),
            Some(_) => {}
        }
    }
    None
}

/// The normal components of a path; None if it has a `..`.
fn components(path: &Path) -> Option<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount() {
        // This host: hybrid, v1 controllers and the unified hierarchy.
        let hybrid = b"\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        // Pure v2, with a bind mount of a subtree listed first.
        let v2 = b"\
40 31 0:27 /kubepods /run/pods rw - cgroup2 cgroup2 rw
29 24 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:5 - cgroup2 cgroup2 rw
";
        assert_eq!(cgroup2_mount(v2), Some(PathBuf::from("/sys/fs/cgroup")));
        // A malformed line does not hide a good one after it.
        assert_eq!(
            cgroup2_mount(b"1 0 0:1 / /mnt/bad\\04 rw - cgroup2 none rw\n2 0 0:1 / /cg rw - cgroup2 none rw\n"),
            Some(PathBuf::from("/cg"))
        );
        // Escaped mount points.
        assert_eq!(
            cgroup2_mount(b"1 0 0:1 / /mnt/my\\040cg rw - cgroup2 none rw\n"),
            Some(PathBuf::from("/mnt/my cg"))
        );
        for none in [
            &b""[..],
            b"32 31 0:27 / /sys/fs/cgroup/unified rw - cgroup cgroup rw\n",
            b"32 31 0:27 / /sys/fs/cgroup/unified rw cgroup2 cgroup2 rw\n",
            b"1 0 0:1 / /mnt/bad\\04 rw - cgroup2 none rw\n",
            b"1 0 0:1 / /mnt/bad\\x40 rw - cgroup2 none rw\n",
            b"1 0 0:1 / /mnt/bad\\777 rw - cgroup2 none rw\n",
            b"1 0 0:1 / relative rw - cgroup2 none rw\n",
            b"1 0 0:1 / - cgroup2\n",
            b" - cgroup2",
            b"\xff\xff - cgroup2 \xff",
        ] {
            assert_eq!(cgroup2_mount(none), None, "{none:?}");
        }
    }

    #[test]
    fn v2_path_of_proc_cgroup() {
        assert_eq!(
            v2_path(b"4:memory:/process_api/abc\n1:cpu:/\n0::/pg/test\n"),
            Some(PathBuf::from("/pg/test"))
        );
        assert_eq!(v2_path(b"0::/\n"), Some(PathBuf::from("/")));
        assert_eq!(v2_path(b"4:memory:/x\n"), None);
        assert_eq!(v2_path(b""), None);
    }

    #[test]
    fn guards() {
        let p = |s: &str| PathBuf::from(s);
        let agent = p("/system.slice/patchgap-agent.service");
        let pid1 = p("/init.scope");
        let check = |target: &str| protected_by(&p(target), &agent, &pid1);
        assert_eq!(check(""), Some(Protected::Root));
        assert_eq!(check("/"), Some(Protected::Root));
        assert_eq!(check("/./"), Some(Protected::Root));
        assert_eq!(
            check("system.slice/patchgap-agent.service"),
            Some(Protected::Agent)
        );
        assert_eq!(check("/system.slice"), Some(Protected::Agent));
        assert_eq!(check("/init.scope"), Some(Protected::Pid1));
        // Siblings and descendants of the agent are fair game; a name that
        // only starts like an ancestor's is not an ancestor.
        assert_eq!(check("/system.slice/nginx.service"), None);
        assert_eq!(check("/system.slice/patchgap-agent.service/child"), None);
        assert_eq!(check("/system"), None);
        assert_eq!(check("/kubepods/pod1/c1"), None);
        // A target with ".." cannot be placed: refused like the root.
        assert_eq!(check("/kubepods/../system.slice"), Some(Protected::Root));
        assert_eq!(check("/a/../b"), Some(Protected::Root));
        // On this host every process, PID 1 and the agent included, is in
        // the v2 root: only the root itself is refused for them.
        assert_eq!(protected_by(&p("/pg"), &p("/"), &p("/")), None);
        // A protected cgroup outside our cgroup namespace protects all.
        assert_eq!(
            protected_by(&p("/kubepods"), &p("/../elsewhere"), &pid1),
            Some(Protected::Agent)
        );
    }
}
