//! Names of network namespaces. `ip netns add NAME` keeps the namespace
//! alive by bind-mounting it at /run/netns/NAME, so the entry whose inode is
//! a process's `net_ns` names that process's namespace. Only stat(2) is
//! called: nothing there is opened or entered.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// A namespace missing from the names is looked up again at most this often.
const REREAD_AFTER: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct NetnsNames {
    dir: PathBuf,
    /// Namespace inode → name, as of `read_at`.
    names: HashMap<u64, String>,
    read_at: Option<Instant>,
}

impl NetnsNames {
    /// The names under `root`/run/netns (root is "/" on a host, the host's
    /// root mounted elsewhere in a container).
    pub fn new(root: &Path) -> NetnsNames {
        NetnsNames {
            dir: root.join("run/netns"),
            names: HashMap::new(),
            read_at: None,
        }
    }

    /// Reads the directory again; once per full scan.
    pub fn refresh(&mut self) {
        self.names.clear();
        self.read_at = Some(Instant::now());
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in dir.flatten() {
            // metadata() follows the bind mount to the namespace itself.
            let (Ok(meta), Some(name)) = (
                std::fs::metadata(entry.path()),
                entry.file_name().to_str().map(str::to_owned),
            ) else {
                continue;
            };
            // Two names for one namespace: the first in name order wins.
            self.names
                .entry(meta.ino())
                .and_modify(|n| {
                    if name < *n {
                        *n = name.clone();
                    }
                })
                .or_insert(name);
        }
    }

    /// The name of the namespace with this inode, or empty. With `fresh`
    /// (a namespace that is not the host's), a miss reads the directory
    /// again, so a namespace made since the last scan is named.
    pub fn name(&mut self, inode: u64, fresh: bool) -> String {
        if inode == 0 {
            return String::new();
        }
        if let Some(n) = self.names.get(&inode) {
            return n.clone();
        }
        if fresh && self.read_at.is_none_or(|t| t.elapsed() >= REREAD_AFTER) {
            self.refresh();
            return self.names.get(&inode).cloned().unwrap_or_default();
        }
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain files stand in for the bind mounts: their inodes name them.
    #[test]
    fn names_by_inode_and_rereads_on_a_miss() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("run/netns");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("blue"), b"").unwrap();
        let blue = std::fs::metadata(dir.join("blue")).unwrap().ino();
        let mut names = NetnsNames::new(root.path());
        names.refresh();
        assert_eq!(names.name(blue, false), "blue");
        assert_eq!(names.name(0, true), "");
        std::fs::write(dir.join("red"), b"").unwrap();
        let red = std::fs::metadata(dir.join("red")).unwrap().ino();
        // Not the host's namespace: a miss reads the directory again, once
        // the last read is old enough.
        std::thread::sleep(REREAD_AFTER);
        assert_eq!(names.name(red, true), "red");
        std::fs::remove_file(dir.join("red")).unwrap();
        names.refresh();
        assert_eq!(names.name(red, false), "");
    }
}
