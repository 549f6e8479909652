//! Shared harness for patchgap's end-to-end tests: a collector and an agent
//! in one process, and real child processes to find.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use patchgap_agent::{AgentConfig, AgentHandle, ScanConfig};
use patchgap_collector::{CollectorConfig, SqliteStore};
use patchgap_proto::v1::{self, query_client::QueryClient};
use tokio::{net::TcpListener, sync::oneshot};
use tonic::transport::Channel;

pub mod alertmanager;
pub mod dns;
pub mod image;
pub mod internet;
/// A throwaway PostgreSQL 15 (the collector's own test harness, included
/// by path rather than copied: it uses only std).
#[path = "../../collector/src/store/postgres/harness.rs"]
pub mod postgres;
pub mod py;
pub mod upgrade;

/// A collector on an ephemeral loopback port plus an agent streaming to it.
/// The agent's interval is long: tests drive scans with `agent.rescan_and_sync()`.
pub struct Harness {
    pub addr: std::net::SocketAddr,
    pub agent: AgentHandle,
    pub data_dir: tempfile::TempDir,
    /// Dropping it (with the harness) stops the server too.
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(CollectorConfig::default()).await
    }

    pub async fn start_with(config: CollectorConfig) -> Harness {
        Self::start_full(config, ScanConfig::default()).await
    }

    /// A collector with `config` (its data dir is replaced by a temporary
    /// one) and an agent scanning with `scan`.
    pub async fn start_full(config: CollectorConfig, scan: ScanConfig) -> Harness {
        Self::start_tuned(config, scan, |_| {}).await
    }

    /// As [`Harness::start_full`], with the agent's config changed by
    /// `tune` before it starts.
    pub async fn start_tuned(
        mut config: CollectorConfig,
        scan: ScanConfig,
        tune: impl FnOnce(&mut AgentConfig),
    ) -> Harness {
        // RUST_LOG=info shows the collector's and agent's logs in a failing test.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let data_dir = tempfile::tempdir().expect("tempdir");
        config.data_dir = data_dir.path().to_path_buf();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let store = SqliteStore::open(&config.data_dir).expect("open store");
        let (stop, stopped) = oneshot::channel::<()>();
        let mut server = tokio::spawn(patchgap_collector::serve(
            config,
            Arc::new(store),
            listener,
            async {
                let _ = stopped.await;
            },
        ));
        let mut agent_config = AgentConfig {
            collector: format!("http://{addr}"),
            scan,
            ebpf: ebpf_wanted(),
            interval: Duration::from_secs(3600),
            backoff_max: Duration::from_secs(1),
            ..Default::default()
        };
        tune(&mut agent_config);
        let agent = patchgap_agent::spawn(agent_config);
        // The first scan is a full snapshot; wait until it is stored. A
        // collector that refuses to start (a bad policy, say) ends its task
        // at once: fail with its error then, not after the timeout.
        let stored =
            agent.wait_for(|s| s.scans >= 1 && s.acked_seq >= s.last_seq && s.last_seq > 0);
        let ended = tokio::select! {
            _ = timeout(stored) => None,
            ended = &mut server => Some(ended),
        };
        if let Some(ended) = ended {
            // Bounded: a first scan in progress is not worth the wait.
            let _ = tokio::time::timeout(Duration::from_secs(10), agent.shutdown()).await;
            match ended {
                Ok(Err(e)) => panic!("the collector did not start: {e:#}"),
                Ok(Ok(())) => {
                    panic!("the collector stopped before the agent's first snapshot was stored")
                }
                Err(e) => panic!("the collector's task failed: {e}"),
            }
        }
        Harness {
            addr,
            agent,
            data_dir,
            stop: Some(stop),
            server: Some(server),
        }
    }

    pub async fn client(&self) -> QueryClient<Channel> {
        QueryClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to collector")
    }

    pub async fn find(&self, name: &str, constraint: &str) -> v1::FindPackageResponse {
        self.client()
            .await
            .find_package(v1::FindPackageRequest {
                name: name.into(),
                constraint: constraint.into(),
                ..Default::default()
            })
            .await
            .expect("find_package")
            .into_inner()
    }

    /// Imports advisory files, then lists every finding.
    pub async fn import_then_findings(
        &self,
        files: Vec<v1::AdvisoryFile>,
    ) -> (v1::ImportAdvisoriesResponse, v1::ListFindingsResponse) {
        let mut client = self.client().await;
        let imported = client
            .import_advisories(v1::ImportAdvisoriesRequest {
                files,
                ..Default::default()
            })
            .await
            .expect("import")
            .into_inner();
        let findings = client
            .list_findings(v1::ListFindingsRequest::default())
            .await
            .expect("findings")
            .into_inner();
        (imported, findings)
    }

    /// Scans now and waits until the collector has stored the result.
    pub async fn sync(&self) {
        timeout(self.agent.rescan_and_sync()).await;
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        let Harness { agent, .. } = self;
        agent.shutdown().await;
    }
}

/// The directory of the workspace's binaries (`patchgap`,
/// `patchgap-collector`, `patchgap-agent`), built for this profile first
/// if they are stale, for tests that run them as child processes.
pub fn built_bins() -> PathBuf {
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let mut build = Command::new(env!("CARGO"));
    build.args([
        "build",
        "--quiet",
        "-p",
        "cli",
        "-p",
        "patchgap-collector",
        "-p",
        "patchgap-agent",
        "--bins",
    ]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    assert!(build.status().unwrap().success(), "cargo build --bins");
    dir
}

/// Whether tests run the agent with eBPF: yes, unless PATCHGAP_EBPF=off
/// (CI runs the end-to-end tests both ways).
pub fn ebpf_wanted() -> bool {
    std::env::var("PATCHGAP_EBPF").as_deref() != Ok("off")
}

/// Fails the test instead of hanging it.
pub async fn timeout<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("timed out after 60 s")
}

/// A child process that is killed when dropped.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    pub fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` and waits until its /proc/PID/maps mentions `needle`, so the
/// dynamic loader is done with it.
pub fn spawn_mapping(cmd: &mut Command, needle: &str) -> Proc {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn test process");
    let proc = Proc(child);
    let maps = PathBuf::from(format!("/proc/{}/maps", proc.pid()));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if std::fs::read_to_string(&maps).is_ok_and(|m| m.contains(needle)) {
            return proc;
        }
        assert!(Instant::now() < deadline, "process never mapped {needle}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A real process of `exe`, stopped by ptrace at its exec: the kernel has
/// mapped the executable, and not one of its instructions has run (for
/// CLIs that would exit or reach for the network).
pub fn stopped_at_exec(exe: &str) -> Proc {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(exe);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: ptrace(PTRACE_TRACEME) is async-signal-safe and touches no
    // memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn under ptrace");
    let pid = child.id();
    // Wait for the stop at exec (SIGTRAP) without reaping.
    let mut status = 0;
    // SAFETY: waitpid on our own child.
    let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::__WALL) };
    assert_eq!(r, pid as i32);
    assert!(libc::WIFSTOPPED(status), "{exe} did not stop at exec");
    Proc(child)
}

/// Starts `cmd` and waits until it prints a line "ready" on stdout.
pub fn spawn_ready(cmd: &mut Command) -> Proc {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn test process");
    let mut line = String::new();
    let stdout = child.stdout.as_mut().expect("piped stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
        .expect("read stdout");
    let proc = Proc(child);
    assert_eq!(line.trim(), "ready", "the test process did not start");
    proc
}

/// Debian's own python3 (not pyenv's shim) importing ssl, which maps libssl3.
pub fn python_with_ssl() -> Proc {
    spawn_mapping(
        Command::new("/usr/bin/python3").args(["-c", "import ssl, time; time.sleep(120)"]),
        "libssl.so",
    )
}

/// The version dpkg reports for a package on this host.
/// Every advisory file (*.json, *.yaml) below these folders of
/// testdata/osv, as `patchgap advisories import` would send them.
pub fn osv_files(dirs: &[&str]) -> Vec<v1::AdvisoryFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/osv");
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = dirs.iter().map(|d| root.join(d)).collect();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.extension().is_some_and(|e| e == "json" || e == "yaml") {
            out.push(v1::AdvisoryFile {
                name: p.display().to_string(),
                data: std::fs::read(&p).unwrap(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The (advisory id, package) pairs testdata/osv/ground_truth_matches.json
/// says are affected at `place` (a row's `where`), with package names as
/// the data spells them: those of live advisories, and those of withdrawn
/// ones (the ground truth evaluates ranges alone; a withdrawn advisory
/// affects nothing).
pub struct GroundTruth {
    pub live: std::collections::BTreeSet<(String, String)>,
    pub withdrawn: std::collections::BTreeSet<(String, String)>,
}

pub fn ground_truth(place: &str) -> GroundTruth {
    let osv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/osv");
    let rows: serde_json::Value =
        serde_json::from_slice(&std::fs::read(osv.join("ground_truth_matches.json")).unwrap())
            .unwrap();
    let mut out = GroundTruth {
        live: Default::default(),
        withdrawn: Default::default(),
    };
    for r in rows.as_array().unwrap() {
        if r["where"] != place || r["affected_per_osv_ranges"] != true {
            continue;
        }
        let doc = std::fs::read_to_string(osv.join(r["file"].as_str().unwrap())).unwrap();
        let pair = (
            r["id"].as_str().unwrap().to_string(),
            r["package"].as_str().unwrap().to_string(),
        );
        // OSV JSON, or PyPA's YAML.
        if doc.contains("\"withdrawn\":") || doc.contains("\nwithdrawn:") {
            out.withdrawn.insert(pair);
        } else {
            out.live.insert(pair);
        }
    }
    out
}

/// The installed version of `package`, or None when it is not installed.
pub fn installed_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Abbrev}\t${Version}", package])
        .output()
        .expect("dpkg-query");
    let text = String::from_utf8(out.stdout).unwrap();
    let (status, version) = text.split_once('\t')?;
    // The second letter is the state ("i": installed), whatever is wanted.
    (out.status.success() && status.as_bytes().get(1) == Some(&b'i')).then(|| version.to_string())
}

pub fn dpkg_version(package: &str) -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .output()
        .expect("dpkg-query");
    assert!(out.status.success(), "dpkg-query -W {package} failed");
    String::from_utf8(out.stdout).unwrap()
}

pub fn pids(r: &v1::FindPackageResponse) -> Vec<u32> {
    r.matches
        .iter()
        .filter_map(|m| m.key.map(|k| k.pid))
        .collect()
}

/// Copies a host file into `root` at `path` (following host symlinks).
pub fn install(root: &Path, from: &str, path: &str) {
    let dst = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(from, &dst).unwrap_or_else(|e| panic!("copy {from} -> {}: {e}", dst.display()));
}

pub fn write(root: &Path, path: &str, contents: &str) {
    let dst = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::write(dst, contents).unwrap();
}

/// Builds a root with its own dpkg database: sleep, libc and the loader
/// copied from the host, usrmerge symlinks, and versions the host does not have.
pub fn fixture_root(dir: &Path, libc_version: &str) {
    install(dir, "/usr/bin/sleep", "/usr/bin/sleep");
    install(
        dir,
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
    );
    install(
        dir,
        "/lib64/ld-linux-x86-64.so.2",
        "/usr/lib64/ld-linux-x86-64.so.2",
    );
    for (link, target) in [
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("bin", "usr/bin"),
    ] {
        let _ = std::os::unix::fs::symlink(target, dir.join(link));
    }
    write(dir, "/etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
    write_dpkg(dir, libc_version);
    // dpkg's lists use the pre-usrmerge spelling.
    write(
        dir,
        "/var/lib/dpkg/info/libc6:amd64.list",
        "/.\n/lib\n/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu/libc.so.6\n/lib64\n/lib64/ld-linux-x86-64.so.2\n",
    );
    write(
        dir,
        "/var/lib/dpkg/info/coreutils.list",
        "/.\n/bin\n/bin/sleep\n",
    );
}

pub fn write_dpkg(dir: &Path, libc_version: &str) {
    write(
        dir,
        "/var/lib/dpkg/status",
        &format!(
            "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nMulti-Arch: same\nSource: glibc\nVersion: {libc_version}\n\n\
             Package: coreutils\nStatus: install ok installed\nArchitecture: amd64\nVersion: 9.1-1+fixture\n"
        ),
    );
}

/// A real cgroup, made under the v2 hierarchy (/sys/fs/cgroup/unified) and
/// the v1 `pids` and `name=systemd` hierarchies of this hybrid host, removed
/// (innermost first) when dropped. Kill its processes before dropping it.
///
/// Only directories this process made are ever removed. Parents are often
/// shared: two pods of one test both live under
/// `kubepods.slice/kubepods-besteffort.slice`, which the first guard made.
/// When that guard goes first, its parents still hold the other pod, so
/// they are left to [`SHARED_PARENTS`], and the last guard of the process
/// to drop removes them.
pub struct Cgroup {
    created: Vec<PathBuf>,
    leaves: Vec<PathBuf>,
}

/// Directories a [`Cgroup`] of this process made that could not be removed
/// when it dropped, because another guard's cgroup lived below them. The
/// lock is also held while guards create and remove, so no guard makes a
/// child under a parent that another guard is removing.
static SHARED_PARENTS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

impl Cgroup {
    pub const HIERARCHIES: [&'static str; 3] = [
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/systemd",
    ];

    pub fn create(rel: &str) -> Cgroup {
        let _made = SHARED_PARENTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut created = Vec::new();
        let mut leaves = Vec::new();
        for h in Self::HIERARCHIES {
            let mut dir = PathBuf::from(h);
            for part in rel.trim_matches('/').split('/') {
                dir.push(part);
                if !dir.exists() {
                    std::fs::create_dir(&dir)
                        .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                    created.push(dir.clone());
                }
            }
            leaves.push(dir);
        }
        Cgroup { created, leaves }
    }

    /// Moves a process into the cgroup in every hierarchy.
    pub fn add(&self, pid: u32) {
        for leaf in &self.leaves {
            std::fs::write(leaf.join("cgroup.procs"), pid.to_string())
                .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", leaf.display()));
        }
    }
}

/// Whether a cgroup directory has child cgroups (removing it cannot succeed
/// until they go).
fn has_child_cgroups(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| {
        entries.any(|e| e.is_ok_and(|e| e.file_type().is_ok_and(|t| t.is_dir())))
    })
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let mut shared = SHARED_PARENTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for dir in self.created.iter().rev() {
            // A cgroup whose last process just exited can be busy for a
            // moment; one with another guard's cgroup below it stays busy
            // until that guard drops.
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() || has_child_cgroups(dir) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if dir.exists() {
                shared.push(dir.clone());
            }
        }
        // Parents left by guards that dropped earlier, innermost first:
        // those now empty go (a failed rmdir of a busy one is harmless).
        shared.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        shared.retain(|dir| std::fs::remove_dir(dir).is_err() && dir.exists());
    }
}

#[cfg(test)]
mod internet_tests {
    use super::internet::InternetLock;
    use std::process::Command;

    /// `flock -n PATH true` fails while the lock is held.
    fn free_for_another_process() -> bool {
        Command::new("flock")
            .args(["-n", InternetLock::PATH, "true"])
            .status()
            .expect("run flock(1)")
            .success()
    }

    #[test]
    fn the_internet_is_held_against_other_processes_and_threads_until_dropped() {
        let held = InternetLock::acquire();
        assert!(!free_for_another_process(), "another process got the lock");
        assert!(
            std::thread::spawn(InternetLock::try_acquire)
                .join()
                .unwrap()
                .is_none(),
            "another thread got the lock"
        );
        drop(held);
        // Another test binary may take it in between; wait for it then.
        let again = InternetLock::acquire();
        drop(again);
    }
}

#[cfg(test)]
mod cgroup_tests {
    use super::Cgroup;
    use std::path::Path;

    fn in_every_hierarchy(rel: &str) -> Vec<bool> {
        Cgroup::HIERARCHIES
            .iter()
            .map(|h| Path::new(h).join(rel).exists())
            .collect()
    }

    /// Two pods under one parent that the first guard made: the first
    /// guard drops while the second still lives (as `drop((trainer_cg,
    /// api_cg))` in tests/contain.rs does), and the parents must still go
    /// with the second. A parent that was there before is left alone.
    #[test]
    fn shared_parents_go_with_the_last_guard_and_foreign_ones_stay() {
        let top = format!("pgtest-cgparents-{}", std::process::id());
        let foreign = Cgroup::create(&format!("{top}/foreign"));
        let first = Cgroup::create(&format!("{top}/foreign/slice/pod-a"));
        let second = Cgroup::create(&format!("{top}/foreign/slice/pod-b"));
        drop(first);
        assert_eq!(
            in_every_hierarchy(&format!("{top}/foreign/slice/pod-a")),
            [false; 3]
        );
        assert_eq!(
            in_every_hierarchy(&format!("{top}/foreign/slice")),
            [true; 3],
            "the parent still holds the second pod"
        );
        drop(second);
        assert_eq!(
            in_every_hierarchy(&format!("{top}/foreign/slice")),
            [false; 3],
            "the first guard's parent outlived the last pod"
        );
        assert_eq!(
            in_every_hierarchy(&format!("{top}/foreign")),
            [true; 3],
            "a parent neither pod guard made was removed"
        );
        drop(foreign);
        assert_eq!(in_every_hierarchy(&top), [false; 3]);
    }
}

/// Runs `ip ARGS`, which must succeed.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace joined to this one by a veth pair, an address on
/// each end. Use documentation ranges only (198.51.100.0/24,
/// 203.0.113.0/24): 192.0.2.0/24 is this machine's uplink. The namespace
/// and the pair are deleted when dropped, also when a step of their
/// making failed; kill the processes inside first.
pub struct VethNamespace {
    pub ns: String,
    veth: String,
}

impl VethNamespace {
    /// `ns` and `veth` (at most 13 bytes: the peer is `{veth}p`) must be
    /// unique to the test binary; `host_cidr` goes on this side,
    /// `ns_cidr` on the namespace's.
    pub fn create(ns: &str, veth: &str, host_cidr: &str, ns_cidr: &str) -> VethNamespace {
        let net = VethNamespace {
            ns: ns.to_string(),
            veth: veth.to_string(),
        };
        // Left by a run that was killed before its guard ran.
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", veth])
            .stderr(Stdio::null())
            .status();
        let peer = format!("{veth}p");
        ip(&["netns", "add", ns]);
        ip(&["link", "add", veth, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", ns]);
        ip(&["addr", "add", host_cidr, "dev", veth]);
        ip(&["link", "set", veth, "up"]);
        ip(&["-n", ns, "addr", "add", ns_cidr, "dev", &peer]);
        ip(&["-n", ns, "link", "set", &peer, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        net
    }
}

impl Drop for VethNamespace {
    fn drop(&mut self) {
        // Deleting the host end deletes the pair.
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns])
            .stderr(Stdio::null())
            .status();
    }
}

/// A free TCP port on loopback now (the caller binds it soon after).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    l.local_addr().unwrap().port()
}

/// The pids whose executable is `exe` and whose command line contains
/// `needle` (to find a daemon a wrapper such as `ip netns exec` or
/// `unshare --fork` started).
pub fn pids_of(exe: &Path, needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let is_exe = std::fs::read_link(e.path().join("exe")).is_ok_and(|p| p == exe);
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if is_exe && String::from_utf8_lossy(&cmdline).contains(needle) {
            out.push(pid);
        }
    }
    out
}
