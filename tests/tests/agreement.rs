//! Issue 11, acceptance "Agreement tables": patchgap against independent
//! tools, for every process on this machine plus a set the test starts.
//!
//! - Table A: the dpkg packages (name, version) owning the files each
//!   process maps, from /proc/PID/maps, one `dpkg -S` and one
//!   `dpkg-query -W`, against the deb packages patchgap reports with `exe`
//!   or `mapped` evidence for that process.
//! - Table B: TCP sockets (established and listening) per process from
//!   `ss -tanpH`, against ListProcesses' per-process sockets.
//! - Table C: a venv python (six, idna from PyPI) and Debian's python3,
//!   `python -m pip list` against the PyPI packages patchgap reports.
//! - Table D: a node process in an npm project (ms, is-number), `npm ls
//!   --json --all` against the npm packages patchgap reports.
//! - Table E: a running `terraform console`, `go version -m` (as recorded
//!   in testdata/gobuildinfo) against the golang modules patchgap reports.
//! - Table F: needrestart's rule (a process maps a deleted file) from
//!   /proc/PID/maps, per process, against patchgap's stale artifacts
//!   (needrestart itself is not on this image).
//!
//! Every difference is listed with a reason; the assertion allows only the
//! classified ones that the moment of reading explains (a process that
//! vanished or started between the reads, a file mapped or unmapped since
//! the scan). `cargo test -p patchgap-tests --test agreement -- --nocapture`
//! prints the tables.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    process::Command,
};

use patchgap_proto::v1;
use patchgap_tests::*;

/// Reasons a difference may have without patchgap being wrong: the host
/// changed between the scan and the independent read.
const EXPLAINED: &[&str] = &[
    "vanished",
    "started-after-scan",
    "maps-changed",
    "path-names-another-file",
];

/// The tests here read every process: one at a time, so that one's venv,
/// npm install and children are not the other's moving host.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The pids of /proc that are user processes (kernel threads map nothing),
/// except ours (the agent and collector run in the test process).
fn user_pids() -> Vec<u32> {
    let me = std::process::id();
    let mut out: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&p| p != me)
        .collect();
    out.sort_unstable();
    out
}

/// The file paths a process maps: no anonymous regions, pseudo files,
/// memfds; deleted files separately. None when the process is gone.
fn mapped_paths(pid: u32) -> Option<(BTreeSet<String>, BTreeSet<String>)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let (mut files, mut deleted) = (BTreeSet::new(), BTreeSet::new());
    for line in maps.lines() {
        // address perms offset dev inode path (the path may hold spaces).
        let path = line.splitn(6, ' ').nth(5).unwrap_or("").trim_start();
        if !path.starts_with('/') || path.starts_with("/memfd:") || path.starts_with("/dev/") {
            continue;
        }
        match path.strip_suffix(" (deleted)") {
            Some(p) => deleted.insert(p.to_string()),
            None => files.insert(path.to_string()),
        };
    }
    Some((files, deleted))
}

/// Files `pid` maps whose path, looked up in its root now, names another
/// file, with no "(deleted)" to say so: the root was changed under the
/// process (a pivot_root in its mount namespace moves every process whose
/// root was the old one: the parent `unshare` of a container or of
/// `.ci/fresh`), or a mount now covers the path. dpkg -S of such a path
/// answers for the file there, not for the one mapped; patchgap counts the
/// mapping stale and names no package for it.
fn paths_naming_another_file(pid: u32) -> BTreeSet<String> {
    use std::os::unix::fs::MetadataExt;
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return BTreeSet::new();
    };
    let mut out = BTreeSet::new();
    for line in maps.lines() {
        let mut f = line.splitn(6, ' ');
        let range = f.next().unwrap_or("");
        let path = f.nth(4).unwrap_or("").trim_start();
        if !path.starts_with('/') || path.ends_with(" (deleted)") || out.contains(path) {
            continue;
        }
        let id = |m: std::fs::Metadata| (m.dev(), m.ino());
        let mapped = std::fs::metadata(format!("/proc/{pid}/map_files/{range}")).map(id);
        let there = std::fs::metadata(format!("/proc/{pid}/root{path}")).map(id);
        if let (Ok(mapped), Ok(there)) = (mapped, there)
            && mapped != there
        {
            out.insert(path.to_string());
        }
    }
    out
}

/// Whether the executable `pid` runs is no longer the file at its path:
/// (deleted, path names another file). patchgap lists the executable as an
/// artifact of its own beside its mapping, so a stale executable counts
/// twice in its stale artifacts and once in maps.
fn exe_not_at_its_path(pid: u32) -> (bool, bool) {
    use std::os::unix::fs::MetadataExt;
    let Ok(link) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return (false, false);
    };
    let link = link.to_string_lossy();
    if link.starts_with("/memfd:") {
        return (false, false); // anonymous code (Table F's memfds), not stale
    }
    if link.ends_with(" (deleted)") {
        return (true, false);
    }
    let id = |m: std::fs::Metadata| (m.dev(), m.ino());
    let running = std::fs::metadata(format!("/proc/{pid}/exe")).map(id);
    let there = std::fs::metadata(format!("/proc/{pid}/root{link}")).map(id);
    (false, matches!((running, there), (Ok(r), Ok(t)) if r != t))
}

/// The spellings dpkg may know a path by: itself, and with a usrmerge
/// top-level symlink (/lib -> usr/lib) in place of its target.
fn aliases(path: &str, links: &[(String, String)]) -> Vec<String> {
    let mut out = vec![path.to_string()];
    if let Ok(real) = std::fs::canonicalize(path) {
        out.push(real.display().to_string());
    }
    for (link, target) in links {
        for p in out.clone() {
            if let Some(rest) = p.strip_prefix(&format!("{target}/")) {
                out.push(format!("{link}/{rest}"));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Top-level symlinks to directories (/lib -> /usr/lib, /bin -> /usr/bin...).
fn usrmerge_links() -> Vec<(String, String)> {
    std::fs::read_dir("/")
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            std::fs::symlink_metadata(&p)
                .ok()?
                .is_symlink()
                .then_some(())?;
            let real = std::fs::canonicalize(&p).ok()?;
            real.is_dir()
                .then(|| (p.display().to_string(), real.display().to_string()))
        })
        .collect()
}

/// One `dpkg -S` for all paths: path -> owning packages (without arch).
fn dpkg_owners(paths: &BTreeSet<String>) -> HashMap<String, Vec<String>> {
    let out = Command::new("dpkg-query")
        .arg("-S")
        .args(paths)
        .output()
        .expect("dpkg-query -S");
    let mut owners = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with("diversion by ") {
            continue;
        }
        let Some((pkgs, path)) = line.split_once(": ") else {
            continue;
        };
        let pkgs = pkgs
            .split(", ")
            .map(|p| p.split(':').next().unwrap().to_string())
            .collect();
        owners.insert(path.to_string(), pkgs);
    }
    owners
}

/// One `dpkg-query -W`: package -> version.
fn dpkg_versions() -> HashMap<String, String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n"])
        .output()
        .expect("dpkg-query -W");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (name, version, status) = (f.next()?, f.next()?, f.next()?);
            status
                .starts_with("ii")
                .then(|| (name.into(), version.into()))
        })
        .collect()
}

/// The process's start time (clock ticks since boot), to tell a pid reused.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// "127.0.0.1", "[::1]", "127.0.0.53%lo", "*" -> a canonical address text.
fn norm_addr(a: &str) -> String {
    let a = a.split('%').next().unwrap();
    let a = a.trim_start_matches('[').trim_end_matches(']');
    match a.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => a.to_string(),
    }
}

/// "addr:port" as ss prints it -> (addr, port); "*" ports are 0.
fn split_endpoint(e: &str) -> (String, u32) {
    let (a, p) = e.rsplit_once(':').unwrap_or((e, "*"));
    (norm_addr(a), p.parse().unwrap_or(0))
}

/// A process's mapped files, its mapped deleted files, its start time.
type Maps = (BTreeSet<String>, BTreeSet<String>, Option<u64>);

/// (pid, state, local, remote): one socket as one process holds it.
type Sock = (u32, String, String, String);

fn sock(pid: u32, state: &str, la: &str, lp: u32, ra: &str, rp: u32) -> Sock {
    let (state, remote) = if state == "LISTEN" {
        ("LISTEN", "*".to_string())
    } else {
        ("ESTABLISHED", format!("{}:{rp}", norm_addr(ra)))
    };
    (
        pid,
        state.to_string(),
        format!("{}:{lp}", norm_addr(la)),
        remote,
    )
}

/// `ss -tanpH`, established and listening: one row per owning pid, and
/// the sockets ss shows with no process (held in a pid namespace we do
/// not see, or by no process at all).
fn ss_sockets() -> (BTreeSet<Sock>, Vec<String>) {
    let out = Command::new("ss").args(["-tanpH"]).output().expect("ss");
    let (mut socks, mut orphans) = (BTreeSet::new(), Vec::new());
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || !matches!(f[0], "ESTAB" | "LISTEN") {
            continue;
        }
        let state = if f[0] == "LISTEN" {
            "LISTEN"
        } else {
            "ESTABLISHED"
        };
        let (la, lp) = split_endpoint(f[3]);
        let (ra, rp) = split_endpoint(f[4]);
        let users = f.get(5..).map(|u| u.join(" ")).unwrap_or_default();
        let pids: Vec<u32> = users
            .split("pid=")
            .skip(1)
            .filter_map(|s| s.split(',').next()?.parse().ok())
            .collect();
        if pids.is_empty() {
            orphans.push(line.trim().to_string());
        }
        for pid in pids {
            socks.insert(sock(pid, state, &la, lp, &ra, rp));
        }
    }
    (socks, orphans)
}

fn print_diffs<T: std::fmt::Debug>(title: &str, diffs: &[(T, String)]) {
    let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, r) in diffs {
        *by_reason.entry(r.as_str()).or_default() += 1;
    }
    eprintln!("  {title}: {} {by_reason:?}", diffs.len());
    for (d, r) in diffs {
        eprintln!("    [{r}] {d:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agreement_with_dpkg_and_ss() {
    let _serial = SERIAL.lock().await;
    // The set: Debian's python with libssl3 and a loopback listener with an
    // established connection; perl with an XS module; node; a JVM. (Go binaries
    // are not dpkg's: agent/tests/lang.rs checks them against go version -m.)
    let python = spawn_ready(std::process::Command::new("/usr/bin/python3").args([
        "-c",
        "import ssl, socket, time\n\
         s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n\
         c = socket.create_connection(s.getsockname()); a = s.accept()\n\
         print('ready', flush=True); time.sleep(600)",
    ]));
    let perl = spawn_mapping(
        Command::new("perl").args(["-MIPC::SysV", "-e", "sleep 600"]),
        "SysV.so",
    );
    let node = spawn_mapping(
        Command::new("/usr/bin/node").args(["-e", "setTimeout(() => {}, 600000)"]),
        "libstdc++",
    );
    // A JVM running a source file: libjvm.so and the JDK's modules image
    // are dpkg's (openjdk-*-jre-headless).
    let java_dir = tempfile::tempdir().unwrap();
    let java_src = java_dir.path().join("Idle.java");
    std::fs::write(
        &java_src,
        "public class Idle { public static void main(String[] a) throws Exception { Thread.sleep(600000); } }\n",
    )
    .unwrap();
    let java = spawn_mapping(Command::new("java").arg(&java_src), "libjvm.so");
    let started = [python.pid(), perl.pid(), node.pid(), java.pid()];

    let h = Harness::start().await;
    // One client for every query: its connection exists before the scan.
    let mut client = h.client().await;
    let before_scan: BTreeSet<u32> = user_pids().into_iter().collect();
    h.sync().await;

    // The independent reads, right after the scan.
    let (ss, ss_orphans) = ss_sockets();
    let pids = user_pids();
    let mut maps: BTreeMap<u32, Maps> = BTreeMap::new();
    // Processes whose maps even root may not read (this VM's init): neither
    // side can see their files.
    let unreadable: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/maps"))
                .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
        })
        .collect();
    // Processes in another root (a chroot, a container) map that root's
    // files, which the host's dpkg -S cannot name: not compared here (their
    // own roots are checked by tests/runtimes.rs and
    // packaging/container/compare.py).
    // By the root directory itself, not its name: from inside a chroot
    // the host's root reads as "/" too.
    use std::os::unix::fs::MetadataExt;
    let own_root = std::fs::metadata("/").map(|m| (m.dev(), m.ino())).ok();
    let other_root: BTreeSet<u32> = pids
        .iter()
        .copied()
        .filter(|p| {
            std::fs::metadata(format!("/proc/{p}/root/"))
                .is_ok_and(|m| Some((m.dev(), m.ino())) != own_root)
        })
        .collect();
    for &pid in &pids {
        if other_root.contains(&pid) {
            continue;
        }
        if let Some((files, deleted)) = mapped_paths(pid)
            && (!files.is_empty() || !deleted.is_empty())
        {
            maps.insert(pid, (files, deleted, start_ticks(pid)));
        }
    }
    let links = usrmerge_links();
    let mut all_paths = BTreeSet::new();
    let mut alias_of: HashMap<String, Vec<String>> = HashMap::new();
    for (files, deleted, _) in maps.values() {
        for p in files.iter().chain(deleted) {
            let a = alias_of
                .entry(p.clone())
                .or_insert_with(|| aliases(p, &links));
            all_paths.extend(a.iter().cloned());
        }
    }
    let owners = dpkg_owners(&all_paths);
    let versions = dpkg_versions();
    let owners_of = |p: &str| -> Vec<String> {
        let mut o: Vec<String> = alias_of[p]
            .iter()
            .filter_map(|a| owners.get(a))
            .flatten()
            .cloned()
            .collect();
        o.sort();
        o.dedup();
        o
    };

    // patchgap's answers.
    let listed = client
        .list_processes(v1::ListProcessesRequest::default())
        .await
        .expect("list_processes")
        .into_inner()
        .processes;
    let pg_procs: BTreeMap<u32, &v1::ProcessSummary> = listed
        .iter()
        .filter_map(|p| Some((p.key?.pid, p)))
        .collect();
    for pid in started {
        assert!(pg_procs.contains_key(&pid), "patchgap lists no {pid}");
    }
    // Per process, the deb packages with exe or mapped evidence: one
    // FindPackage per installed package (there is no per-process listing).
    let mut pg_pairs: BTreeSet<(u32, String, String)> = BTreeSet::new();
    let mut names: Vec<&String> = versions.keys().collect();
    names.sort();
    for name in names {
        let r = client
            .find_package(v1::FindPackageRequest {
                name: name.clone(),
                ecosystem: "deb".into(),
                evidence: "loaded".into(),
                ..Default::default()
            })
            .await
            .expect("find_package")
            .into_inner();
        for m in r.matches {
            let (Some(key), Some(pkg)) = (m.key, m.package) else {
                continue;
            };
            if &pkg.name == name
                && matches!(m.evidence.as_str(), "exe" | "mapped")
                && !other_root.contains(&key.pid)
            {
                pg_pairs.insert((key.pid, pkg.name, pkg.version));
            }
        }
    }

    // Table A.
    let mut dpkg_pairs: BTreeSet<(u32, String, String)> = BTreeSet::new();
    let mut unowned: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut deleted_only: BTreeSet<(u32, String)> = BTreeSet::new();
    for (&pid, (files, deleted, _)) in &maps {
        if !pg_procs.contains_key(&pid) {
            continue;
        }
        for f in files {
            let o = owners_of(f);
            if o.is_empty() {
                unowned.entry(pid).or_default().push(f.clone());
            }
            for pkg in o {
                let v = versions.get(&pkg).cloned().unwrap_or_default();
                dpkg_pairs.insert((pid, pkg, v));
            }
        }
        for f in deleted {
            for pkg in owners_of(f) {
                deleted_only.insert((pid, pkg));
            }
        }
    }
    let alive_same = |pid: u32| maps.get(&pid).is_some_and(|m| start_ticks(pid) == m.2);
    let compared: BTreeSet<u32> = maps
        .keys()
        .copied()
        .filter(|p| pg_procs.contains_key(p))
        .collect();
    let not_listed: Vec<u32> = maps
        .keys()
        .copied()
        .filter(|p| !pg_procs.contains_key(p))
        .collect();
    // A process patchgap missed: gone since, or started after the scan, or a miss.
    let mut a_diffs: Vec<(String, String)> = Vec::new();
    for pid in &not_listed {
        let reason = if !alive_same(*pid) {
            "vanished"
        } else if !before_scan.contains(pid) {
            "started-after-scan"
        } else {
            "not-listed"
        };
        a_diffs.push((format!("pid {pid} (whole process)"), reason.into()));
    }
    let agreed = dpkg_pairs.intersection(&pg_pairs).count();
    // For the processes with a difference: the packages they map now (one
    // more dpkg -S), to tell a host that changed since the scan.
    let differing: BTreeSet<u32> = dpkg_pairs
        .symmetric_difference(&pg_pairs)
        .map(|p| p.0)
        .filter(|p| compared.contains(p))
        .collect();
    let mut now_files: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    let mut now_paths = BTreeSet::new();
    for &pid in &differing {
        let files = mapped_paths(pid).map(|m| m.0).unwrap_or_default();
        for f in &files {
            now_paths.extend(aliases(f, &links));
        }
        now_files.insert(pid, files);
    }
    let now_owners = dpkg_owners(&now_paths);
    let now_pkgs = |pid: u32| -> BTreeSet<String> {
        now_files[&pid]
            .iter()
            .flat_map(|f| aliases(f, &links))
            .filter_map(|a| now_owners.get(&a).cloned())
            .flatten()
            .collect()
    };
    let reason_for = |pid: u32, pkg: &str, in_dpkg: bool| -> String {
        if !alive_same(pid) {
            return "vanished".into();
        }
        // Does the process map the package now (the host changed since)?
        if now_pkgs(pid).contains(pkg) != in_dpkg {
            return "maps-changed".into();
        }
        if !in_dpkg && deleted_only.contains(&(pid, pkg.to_string())) {
            return "deleted-file".into();
        }
        if in_dpkg {
            "missed-by-patchgap".into()
        } else if versions.contains_key(pkg) {
            "extra-in-patchgap".into()
        } else {
            "not-in-dpkg".into()
        }
    };
    // The packages of the mapped files whose paths name other files now.
    let mut renamed: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for &pid in &differing {
        let paths = paths_naming_another_file(pid);
        if paths.is_empty() {
            continue;
        }
        let spellings: BTreeSet<String> = paths.iter().flat_map(|f| aliases(f, &links)).collect();
        let owners = dpkg_owners(&spellings);
        renamed.insert(pid, owners.into_values().flatten().collect());
    }
    let names_another =
        |pid: u32, pkg: &str| renamed.get(&pid).is_some_and(|pkgs| pkgs.contains(pkg));
    let mut only_dpkg = Vec::new();
    for p in dpkg_pairs.difference(&pg_pairs) {
        // A version mismatch shows on both sides: name it once, here.
        let other = pg_pairs
            .iter()
            .find(|q| q.0 == p.0 && q.1 == p.1)
            .map(|q| format!("patchgap says {}", q.2));
        let reason = match other {
            _ if names_another(p.0, &p.1) => "path-names-another-file".to_string(),
            Some(o) => format!("version-differs ({o})"),
            None => reason_for(p.0, &p.1, true),
        };
        only_dpkg.push((p.clone(), reason));
    }
    let mut only_pg = Vec::new();
    for p in pg_pairs.difference(&dpkg_pairs) {
        if !compared.contains(&p.0) {
            continue; // patchgap's own process, or one gone before the read
        }
        if dpkg_pairs.iter().any(|q| q.0 == p.0 && q.1 == p.1) {
            continue; // listed under only-in-dpkg as version-differs
        }
        let reason = if names_another(p.0, &p.1) {
            "path-names-another-file".to_string()
        } else {
            reason_for(p.0, &p.1, false)
        };
        only_pg.push((p.clone(), reason));
    }
    let pg_pairs_compared = pg_pairs.iter().filter(|p| compared.contains(&p.0)).count();
    eprintln!("\n=== Table A: dpkg -S of /proc/PID/maps vs patchgap (deb, exe|mapped) ===");
    eprintln!(
        "  processes: {} with file mappings in /proc, {} compared, {} not listed by patchgap",
        maps.len(),
        compared.len(),
        not_listed.len()
    );
    eprintln!(
        "  (pid, package, version) pairs: dpkg {}, patchgap {}, agreed {} ({:.1} %)",
        dpkg_pairs.len(),
        pg_pairs_compared,
        agreed,
        100.0 * agreed as f64 / dpkg_pairs.len().max(1) as f64
    );
    eprintln!(
        "  mapped files no package owns (not-in-dpkg, nothing to compare): {} in {} processes",
        unowned.values().map(Vec::len).sum::<usize>(),
        unowned.len()
    );
    for (pid, files) in &unowned {
        eprintln!("    pid {pid}: {}", files.join(" "));
    }
    if !other_root.is_empty() {
        println!(
            "  in another root, not compared: {} processes {:?}",
            other_root.len(),
            other_root
        );
    }
    for pid in &unreadable {
        let a = pg_procs.get(pid).map(|p| p.artifacts);
        eprintln!(
            "  pid {pid}: /proc/{pid}/maps unreadable (EACCES), not compared; patchgap artifacts: {a:?}"
        );
    }
    for pid in started {
        let n = dpkg_pairs.iter().filter(|p| p.0 == pid).count();
        let m = pg_pairs.iter().filter(|p| p.0 == pid).count();
        eprintln!("  started pid {pid}: dpkg {n} pairs, patchgap {m}");
    }
    print_diffs("processes not compared", &a_diffs);
    print_diffs("only in dpkg", &only_dpkg);
    print_diffs("only in patchgap", &only_pg);

    // Table B.
    let mut pg_socks: BTreeSet<Sock> = BTreeSet::new();
    let mut truncated = BTreeSet::new();
    let mut from_connect = 0;
    // ss reads this network namespace's tables only.
    let own_net = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self/ns/net").unwrap().ino()
    };
    let mut other_net = BTreeSet::new();
    for (&pid, p) in &pg_procs {
        if p.net_ns != 0 && p.net_ns != own_net {
            other_net.insert(pid);
            continue;
        }
        if (p.sockets.len() as u32) < p.sockets_total {
            truncated.insert(pid);
        }
        for s in &p.sockets {
            if !s.protocol.starts_with("tcp")
                || !matches!(s.state.as_str(), "ESTABLISHED" | "LISTEN")
            {
                continue;
            }
            if s.connect_ms != 0 {
                from_connect += 1;
            }
            pg_socks.insert(sock(
                pid,
                &s.state,
                &s.local_addr,
                s.local_port,
                &s.remote_addr,
                s.remote_port,
            ));
        }
    }
    let b_agreed = ss.intersection(&pg_socks).count();
    let ss_now = ss_sockets().0;
    let classify = |s: &Sock, in_ss: bool| -> String {
        if !pg_procs.contains_key(&s.0) {
            return if std::fs::metadata(format!("/proc/{}", s.0)).is_ok() {
                "not-listed".into()
            } else {
                "vanished".into()
            };
        }
        if truncated.contains(&s.0) {
            return "truncated-256".into();
        }
        if ss_now.contains(s) != in_ss {
            return "socket-changed".into();
        }
        if in_ss {
            "missed-by-patchgap".into()
        } else {
            "extra-in-patchgap".into()
        }
    };
    let only_ss: Vec<(Sock, String)> = ss
        .difference(&pg_socks)
        .map(|s| (s.clone(), classify(s, true)))
        .collect();
    let only_pg_s: Vec<(Sock, String)> = pg_socks
        .difference(&ss)
        .map(|s| (s.clone(), classify(s, false)))
        .collect();
    eprintln!("\n=== Table B: ss -tanpH (ESTAB, LISTEN) vs patchgap ProcessSummary.sockets ===");
    eprintln!(
        "  sockets (per owning pid): ss {}, patchgap {} ({} from connect events), agreed {} ({:.1} %)",
        ss.len(),
        pg_socks.len(),
        from_connect,
        b_agreed,
        100.0 * b_agreed as f64 / ss.len().max(1) as f64
    );
    eprintln!(
        "  ss sockets with no visible owner (not comparable): {}; processes in another network namespace (not comparable): {}",
        ss_orphans.len(),
        other_net.len()
    );
    for o in &ss_orphans {
        eprintln!("    {o}");
    }
    let py_socks = ss.iter().filter(|s| s.0 == python.pid()).count();
    eprintln!(
        "  started python {}: ss {py_socks} sockets, patchgap {}",
        python.pid(),
        pg_socks.iter().filter(|s| s.0 == python.pid()).count()
    );
    print_diffs("only in ss", &only_ss);
    print_diffs("only in patchgap", &only_pg_s);
    eprintln!();

    // The started set must agree exactly.
    for pid in started {
        let d: BTreeSet<_> = dpkg_pairs.iter().filter(|p| p.0 == pid).collect();
        let g: BTreeSet<_> = pg_pairs.iter().filter(|p| p.0 == pid).collect();
        assert_eq!(d, g, "pid {pid}: dpkg vs patchgap");
    }
    assert_eq!(
        py_socks, 3,
        "python's listener and both ends of its connection"
    );
    // Everything else: 100 % minus differences the moment explains.
    let unexplained: Vec<String> = a_diffs
        .iter()
        .chain(
            only_dpkg
                .iter()
                .chain(&only_pg)
                .map(|(p, r)| (format!("{p:?}"), r.clone()))
                .collect::<Vec<_>>()
                .iter(),
        )
        .chain(
            only_ss
                .iter()
                .chain(&only_pg_s)
                .map(|(s, r)| (format!("{s:?}"), r.clone()))
                .collect::<Vec<_>>()
                .iter(),
        )
        .filter(|(_, r)| !EXPLAINED.contains(&r.as_str()) && r != "socket-changed")
        .map(|(d, r)| format!("[{r}] {d}"))
        .collect();
    assert!(
        unexplained.is_empty(),
        "differences not explained by the host changing between reads:\n{}",
        unexplained.join("\n")
    );
    h.stop().await;
    drop((python, perl, node, java, java_dir));
}

/// PEP 503's normal form of a Python distribution name.
fn pep503(name: &str) -> String {
    let mut out = String::new();
    for c in name.to_lowercase().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What an interpreter says it has installed: `python -m pip list` when
/// it has pip, else importlib.metadata run by the same interpreter.
/// (PEP 503 name, version), and which tool said it.
fn python_says(python: &str) -> (BTreeSet<(String, String)>, &'static str) {
    let pip = Command::new(python)
        .args(["-m", "pip", "list", "--format=json"])
        .arg("--disable-pip-version-check")
        .output()
        .expect("pip list");
    let (json, tool) = if pip.status.success() {
        (pip.stdout, "pip list")
    } else {
        let code = "import importlib.metadata as m, json\n\
                    print(json.dumps([{'name': d.metadata['Name'], 'version': d.version}\n\
                    for d in m.distributions()]))";
        let out = Command::new(python).args(["-c", code]).output().unwrap();
        (out.stdout, "importlib.metadata")
    };
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&json).expect("json");
    let pairs = listed
        .iter()
        .map(|d| {
            let name = d["name"].as_str().unwrap_or_default();
            (pep503(name), d["version"].as_str().unwrap().to_string())
        })
        .collect();
    (pairs, tool)
}

/// `npm ls --json --all` in `dir`, flattened: (name, version) of every
/// dependency at any depth.
fn npm_ls(dir: &std::path::Path) -> BTreeSet<(String, String)> {
    let out = Command::new("npm")
        .args(["ls", "--json", "--all"])
        .current_dir(dir)
        .output()
        .expect("npm ls");
    let tree: serde_json::Value = serde_json::from_slice(&out.stdout).expect("npm ls json");
    let mut out = BTreeSet::new();
    let mut stack = vec![&tree];
    while let Some(node) = stack.pop() {
        for (name, dep) in node["dependencies"].as_object().into_iter().flatten() {
            out.insert((name.clone(), dep["version"].as_str().unwrap_or("").into()));
            stack.push(dep);
        }
    }
    out
}

/// The modules `go version -m` printed for a binary (testdata/gobuildinfo):
/// (module path, version), the toolchain as "stdlib"; a replacement by a
/// local directory keeps the required path and version, another one is
/// named as built (as agent/tests/lang.rs reads it).
fn go_version_m(file: &str) -> BTreeSet<(String, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/gobuildinfo")
        .join(file);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        if !line.starts_with('\t') {
            if let Some((_, go)) = line.rsplit_once(": go") {
                out.push(("stdlib".into(), go.trim().into()));
            }
            continue;
        }
        match line.trim_start().split('\t').collect::<Vec<_>>()[..] {
            ["mod", path, version, ..] | ["dep", path, version, ..] => {
                out.push((path.into(), version.into()))
            }
            ["=>", path, ..] if path.starts_with('.') || path.starts_with('/') => {}
            ["=>", path, version, ..] => *out.last_mut().unwrap() = (path.into(), version.into()),
            _ => {}
        }
    }
    out.into_iter().collect()
}

/// The (name, version) pairs of `ecosystem` that patchgap reports for
/// `pid`, with any evidence but "declared", asking by each of `names`
/// (there is no per-process listing). Python names in PEP 503 form.
async fn pg_packages(
    client: &mut patchgap_proto::v1::query_client::QueryClient<tonic::transport::Channel>,
    pid: u32,
    ecosystem: &str,
    names: &BTreeSet<String>,
) -> BTreeSet<(String, String)> {
    let mut out = BTreeMap::new();
    for name in names {
        let r = client
            .find_package(v1::FindPackageRequest {
                name: name.clone(),
                ecosystem: ecosystem.into(),
                ..Default::default()
            })
            .await
            .expect("find_package")
            .into_inner();
        for m in r.matches {
            let (Some(key), Some(pkg)) = (m.key, m.package) else {
                continue;
            };
            if key.pid == pid && m.evidence != "declared" {
                let name = if ecosystem == "pypi" {
                    pep503(&pkg.name)
                } else {
                    pkg.name
                };
                out.insert((name, pkg.version), m.evidence);
            }
        }
    }
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for e in out.values() {
        *by.entry(e).or_default() += 1;
    }
    eprintln!("  pid {pid}: patchgap's evidence {by:?}");
    out.into_keys().collect()
}

/// Compares a reference tool's (name, version) pairs with patchgap's for
/// one process; prints the table; returns the differences with reasons.
/// A name on both sides at other versions is "version-differs"; `reason`
/// classifies the rest (true: only in the tool).
fn compare_pairs(
    title: &str,
    tool: &BTreeSet<(String, String)>,
    pg: &BTreeSet<(String, String)>,
    reason: impl Fn(&(String, String), bool) -> String,
) -> Vec<((String, String), String)> {
    let agreed = tool.intersection(pg).count();
    eprintln!(
        "  {title}: tool {}, patchgap {}, agreed {agreed} ({:.1} %)",
        tool.len(),
        pg.len(),
        100.0 * agreed as f64 / tool.len().max(1) as f64
    );
    let mut diffs = Vec::new();
    for p in tool.difference(pg) {
        let r = match pg.iter().find(|q| q.0 == p.0) {
            Some(q) => format!("version-differs (patchgap says {})", q.1),
            None => reason(p, true),
        };
        diffs.push((p.clone(), r));
    }
    for p in pg.difference(tool) {
        if !tool.iter().any(|q| q.0 == p.0) {
            diffs.push((p.clone(), reason(p, false)));
        }
    }
    let (only_tool, only_pg): (Vec<_>, Vec<_>) =
        diffs.iter().cloned().partition(|d| tool.contains(&d.0));
    print_diffs("only in the tool", &only_tool);
    print_diffs("only in patchgap", &only_pg);
    diffs
}

/// Mapped files of a process marked " (deleted)": (path, mapped executable).
fn deleted_mappings(pid: u32) -> Option<BTreeSet<(String, bool)>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mut out = BTreeSet::new();
    for line in maps.lines() {
        let mut f = line.splitn(6, ' ');
        let perms = f.nth(1).unwrap_or("");
        let path = f.nth(3).unwrap_or("").trim_start();
        if let Some(p) = path.strip_suffix(" (deleted)")
            && p.starts_with('/')
        {
            out.insert((p.to_string(), perms.contains('x')));
        }
    }
    Some(out)
}

/// Tables C to F: a venv python and Debian's python against pip, a node
/// project against npm ls, terraform against go version -m, and every
/// process's stale artifacts against its deleted mappings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agreement_with_pip_npm_go_and_deleted_mappings() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // C: a venv with two wheels from PyPI, and Debian's python.
    let venv = py::new_venv(dir.path());
    let pip = venv.join("bin/pip");
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("wheels");
    let wheels = [
        py::wheel(&pip, "six==1.16.0", &cache),
        py::wheel(&pip, "idna==3.7", &cache),
    ];
    let args: Vec<&std::ffi::OsStr> = wheels.iter().map(|w| w.as_os_str()).collect();
    py::pip_install(&pip, &args);
    let venv_python = venv.join("bin/python");
    let vpy = spawn_ready(Command::new(&venv_python).args([
        "-c",
        "import six, idna, time; print('ready', flush=True); time.sleep(600)",
    ]));
    // F's started case: a library mapped, then deleted (what needrestart flags).
    let lib = dir.path().join("libzcopy.so.1");
    std::fs::copy("/usr/lib/x86_64-linux-gnu/libz.so.1", &lib).unwrap();
    let spy = spawn_ready(Command::new("/usr/bin/python3").args([
        "-c",
        "import ctypes, os, sys, time\n\
         ctypes.CDLL(sys.argv[1]); os.unlink(sys.argv[1])\n\
         print('ready', flush=True); time.sleep(600)",
        lib.to_str().unwrap(),
    ]));
    // D: a node project with two packages from the npm registry.
    let app = dir.path().join("app");
    std::fs::create_dir(&app).unwrap();
    std::fs::write(
        app.join("package.json"),
        "{\"name\": \"agreement-app\", \"version\": \"1.0.0\"}",
    )
    .unwrap();
    let ok = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--save-exact",
            "--silent",
        ])
        .args(["ms@2.1.3", "is-number@7.0.0"])
        .current_dir(&app)
        .status()
        .expect("npm install");
    assert!(ok.success(), "npm install");
    let node = spawn_ready(Command::new("/usr/bin/node").current_dir(&app).args([
        "-e",
        "require('ms'); require('is-number'); console.log('ready'); setTimeout(() => {}, 1e9)",
    ]));
    // E: terraform console, reading a stdin that stays open; no config, no
    // checkpoint call: no network.
    let tf_dir = dir.path().join("tf");
    std::fs::create_dir(&tf_dir).unwrap();
    let tf = patchgap_tests::image::has("/usr/local/bin/terraform").then(|| {
        Proc(
            Command::new("/usr/local/bin/terraform")
                .arg("console")
                .current_dir(&tf_dir)
                .env_remove("TF_CLI_CONFIG_FILE")
                .env("CHECKPOINT_DISABLE", "1")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("terraform console"),
        )
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut tf = tf;
    // Why table E is skipped, if it is.
    let tf_skipped = match tf.as_mut() {
        None => Some("no terraform on this machine".to_string()),
        Some(t) => {
            t.0.try_wait()
                .unwrap()
                .map(|status| format!("terraform console exited at once ({status})"))
        }
    };

    let h = Harness::start().await;
    let mut client = h.client().await;
    h.sync().await;
    let mut unexplained: Vec<String> = Vec::new();
    let mut keep = |table: &str, diffs: &[((String, String), String)], ok: &[&str]| {
        for (d, r) in diffs {
            if !ok.iter().any(|o| r.starts_with(o)) {
                unexplained.push(format!("{table} [{r}] {d:?}"));
            }
        }
    };

    // Table C.
    eprintln!("\n=== Table C: python -m pip list vs patchgap (pypi, any evidence) ===");
    let (venv_says, venv_tool) = python_says(venv_python.to_str().unwrap());
    let (sys_says, sys_tool) = python_says("/usr/bin/python3");
    // Ask by every name either interpreter lists: a Debian package that
    // leaked into the venv, or a venv one into Debian's, would show.
    let names: BTreeSet<String> = venv_says
        .iter()
        .chain(&sys_says)
        .map(|p| p.0.clone())
        .collect();
    for (label, pid, says, tool) in [
        ("venv python (six, idna)", vpy.pid(), &venv_says, venv_tool),
        ("/usr/bin/python3", spy.pid(), &sys_says, sys_tool),
    ] {
        let pg = pg_packages(&mut client, pid, "pypi", &names).await;
        let d = compare_pairs(
            &format!("pid {pid} {label}, {tool}"),
            says,
            &pg,
            |_, in_tool| {
                if in_tool {
                    "missed-by-patchgap"
                } else {
                    "extra-in-patchgap"
                }
                .into()
            },
        );
        keep("C", &d, &[]);
    }

    // Table D.
    eprintln!("\n=== Table D: npm ls --json --all vs patchgap (npm, any evidence) ===");
    let npm_says = npm_ls(&app);
    let mut names: BTreeSet<String> = npm_says.iter().map(|p| p.0.clone()).collect();
    names.insert("agreement-app".into()); // the project itself
    let pg = pg_packages(&mut client, node.pid(), "npm", &names).await;
    let d = compare_pairs(
        &format!("pid {} node in {}", node.pid(), app.display()),
        &npm_says,
        &pg,
        |p, in_tool| {
            if !in_tool && p.0 == "agreement-app" {
                "the-project-itself (npm ls lists it as the root, not a dependency)".into()
            } else if in_tool {
                "missed-by-patchgap".into()
            } else {
                "extra-in-patchgap".into()
            }
        },
    );
    keep("D", &d, &["the-project-itself"]);

    // Table E.
    eprintln!(
        "\n=== Table E: go version -m (testdata/gobuildinfo/terraform.txt) vs patchgap (golang) ==="
    );
    if let Some(why) = tf_skipped {
        eprintln!("  {why}: skipped");
    } else if let Some(tf) = &tf {
        let want = go_version_m("terraform.txt");
        let names: BTreeSet<String> = want.iter().map(|p| p.0.clone()).collect();
        let pg = pg_packages(&mut client, tf.pid(), "golang", &names).await;
        let d = compare_pairs(
            &format!("pid {} terraform console", tf.pid()),
            &want,
            &pg,
            |_, in_tool| {
                if in_tool {
                    "missed-by-patchgap"
                } else {
                    "extra-in-patchgap"
                }
                .into()
            },
        );
        keep("E", &d, &[]);
        // Nothing patchgap reports for it goes unasked: the static binary
        // has no deb package, so every package is a module above.
        let listed = client
            .list_processes(v1::ListProcessesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .processes;
        let total = listed
            .iter()
            .find(|p| p.key.is_some_and(|k| k.pid == tf.pid()))
            .map(|p| p.packages);
        eprintln!(
            "  patchgap's package count for the process: {total:?} (asked: {})",
            pg.len()
        );
        if total != Some(pg.len() as u32) {
            unexplained.push(format!("E [unasked-packages] {total:?} != {}", pg.len()));
        }
    }
    drop(tf);

    // Table F.
    eprintln!(
        "\n=== Table F: needrestart's rule (deleted mapped files in /proc/PID/maps) vs patchgap stale_artifacts ==="
    );
    eprintln!("  (needrestart itself is not installed on this image)");
    let listed = client
        .list_processes(v1::ListProcessesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .processes;
    let (mut agree, mut flagged, mut compared, mut memfds, mut diffs) = (0, 0, 0, 0, Vec::new());
    for p in &listed {
        let Some(key) = p.key else { continue };
        if key.pid == std::process::id() || start_ticks(key.pid) != Some(key.start_ticks) {
            continue; // ours, or gone (a reused pid)
        }
        let Some(del) = deleted_mappings(key.pid) else {
            continue;
        };
        let exec: BTreeSet<&String> = del.iter().filter(|d| d.1).map(|d| &d.0).collect();
        // memfds are no library (needrestart skips them): patchgap reports
        // them as anonymous code, not stale.
        let (memfd, paths): (BTreeSet<&String>, BTreeSet<&String>) = del
            .iter()
            .map(|d| &d.0)
            .partition(|p| p.starts_with("/memfd:"));
        let anon: BTreeSet<String> = p
            .anonymous_code
            .iter()
            .map(|a| String::from_utf8_lossy(&a.path).into_owned())
            .collect();
        memfds += memfd.len();
        for m in memfd.iter().filter(|m| !anon.contains(**m)) {
            diffs.push((
                format!("pid {}: {m} not in anonymous_code {anon:?}", key.pid),
                "memfd-missed".into(),
            ));
        }
        compared += 1;
        let (files, pg) = (paths.len(), p.stale_artifacts as usize);
        let (exe_deleted, exe_another) = exe_not_at_its_path(key.pid);
        flagged += usize::from(files > 0);
        if files + usize::from(exe_deleted) == pg {
            agree += 1;
        } else if files + paths_naming_another_file(key.pid).len() + usize::from(exe_another) == pg
        {
            // Stale too, with nothing in maps to say so (needrestart's rule
            // looks for "(deleted)" only).
            diffs.push((
                format!(
                    "pid {} {:.40}: maps deleted {files}, paths naming another file {}, patchgap stale {pg}",
                    key.pid,
                    p.cmdline,
                    pg - files
                ),
                "path-names-another-file".to_string(),
            ));
        } else {
            diffs.push((
                format!(
                    "pid {} {:.40}: maps deleted {files} ({} exec) {paths:?}, patchgap stale {pg}",
                    key.pid,
                    p.cmdline,
                    exec.len()
                ),
                "differs".to_string(),
            ));
        }
    }
    eprintln!(
        "  processes: {compared} compared (of {} listed), {flagged} with deleted mapped files, {agree} agree; deleted memfd mappings {memfds}, all in anonymous_code unless listed below",
        listed.len()
    );
    print_diffs("differing", &diffs);
    let spy_stale = listed
        .iter()
        .find(|p| p.key.is_some_and(|k| k.pid == spy.pid()))
        .map(|p| p.stale_artifacts);
    eprintln!(
        "  started pid {} (maps a deleted copy of libz): patchgap stale {spy_stale:?}",
        spy.pid()
    );
    for (d, r) in diffs
        .iter()
        .filter(|(_, r)| !EXPLAINED.contains(&r.as_str()))
    {
        unexplained.push(format!("F [{r}] {d}"));
    }
    assert_eq!(spy_stale, Some(1), "the deleted copy of libz is stale");
    h.stop().await;
    assert!(
        unexplained.is_empty(),
        "unexplained:\n{}",
        unexplained.join("\n")
    );
    drop((vpy, spy, node));
}
