//! A real, throwaway PostgreSQL for tests: Debian's PostgreSQL 15 binaries,
//! a cluster made by `initdb` in a temporary directory, started by `pg_ctl`
//! on a free loopback port (and a socket in the same directory), one fresh
//! database per test. No mock: the conformance suite must see what a
//! deployment sees.
//!
//! This file uses only `std`, so the end-to-end tests (`tests/src/lib.rs`)
//! include it by path instead of copying it.
//!
//! Cleanup is by `Drop`, which also runs when a test panics: a
//! [`TestDatabase`] drops its database, and the last handle on a
//! [`Cluster`] stops the server (`pg_ctl stop -m immediate`) and removes
//! its directory. Tests running in parallel share one cluster through
//! [`Cluster::shared`]; it is started again if every test had let go of it.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root (CI
//! does) `initdb` and `pg_ctl` run as the `postgres` user that Debian's
//! package creates, through `runuser`, in a directory that user owns. The
//! server trusts local connections: the cluster lives only as long as the
//! test process and listens only on 127.0.0.1 and its private socket.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU32, Ordering},
    },
};

/// Where Debian's PostgreSQL 15 keeps its server binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// When set (CI sets it), missing PostgreSQL binaries fail the tests
/// instead of skipping them.
pub const REQUIRE_ENV: &str = "PATCHGAP_REQUIRE_POSTGRES";

/// A running PostgreSQL cluster, stopped and removed on drop.
#[derive(Debug)]
pub struct Cluster {
    /// The temporary directory: `data/`, `server.log` and the socket.
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// Run the server's tools as this user (when we are root).
    run_as: Option<String>,
}

static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Cluster {
    /// The cluster the tests of this process share, started when none is
    /// running. `None` (after printing why) when PostgreSQL's binaries are
    /// absent and [`REQUIRE_ENV`] is not set; panics when they are absent
    /// and it is set, or when the server does not start.
    pub fn shared() -> Option<Arc<Cluster>> {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = shared.upgrade() {
            return Some(c);
        }
        let bin = PathBuf::from(PG_BIN);
        if !bin.join("initdb").exists() {
            if std::env::var_os(REQUIRE_ENV).is_some() {
                panic!(
                    "{REQUIRE_ENV} is set but {PG_BIN}/initdb is absent: install postgresql-15 (tests/deps.sh)"
                );
            }
            eprintln!(
                "skipped: PostgreSQL 15 is not installed ({PG_BIN}/initdb is absent); tests/deps.sh installs it"
            );
            return None;
        }
        reap_orphans(&bin);
        let cluster = Arc::new(Cluster::start(bin).unwrap_or_else(|e| panic!("{e}")));
        *shared = Arc::downgrade(&cluster);
        Some(cluster)
    }

    /// initdb and pg_ctl start, in a new temporary directory.
    pub fn start(bin: PathBuf) -> Result<Cluster, String> {
        let run_as = is_root().then(|| "postgres".to_string());
        let dir = std::env::temp_dir().join(format!(
            "patchgap-pg-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        // From here on, dropping the value cleans up whatever was made.
        let mut cluster = Cluster {
            dir,
            bin,
            port: 0,
            run_as,
        };
        if let Some(user) = &cluster.run_as {
            let (uid, gid) = user_ids(user)?;
            std::os::unix::fs::chown(&cluster.dir, Some(uid), Some(gid))
                .map_err(|e| format!("chown {} to {user}: {e}", cluster.dir.display()))?;
        }
        let data = cluster.dir.join("data");
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "--auth=trust".as_ref(),
                "--username=postgres".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        // A port picked free can be taken before the server binds it:
        // try a few.
        let mut last = String::new();
        for _ in 0..5 {
            cluster.port = free_port()?;
            let options = format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=on \
                 -c full_page_writes=off -c max_connections=200 -c shared_buffers=32MB",
                cluster.port,
                cluster.dir.display()
            );
            let log = cluster.dir.join("server.log");
            match cluster.run(
                "pg_ctl",
                &[
                    "start".as_ref(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "60".as_ref(),
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-o".as_ref(),
                    options.as_ref(),
                ],
            ) {
                Ok(()) => return Ok(cluster),
                Err(e) => {
                    let tail = std::fs::read_to_string(&log).unwrap_or_default();
                    last = format!("{e}\n{tail}");
                }
            }
        }
        Err(format!("PostgreSQL did not start: {last}"))
    }

    /// Runs one of the server's tools (as the postgres user when root).
    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run {}: {e}", exe.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{tool} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// A new, empty database on this cluster, dropped with the value.
    pub fn database(self: &Arc<Self>) -> TestDatabase {
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        self.client_tool("createdb", &[&name])
            .unwrap_or_else(|e| panic!("{e}"));
        TestDatabase {
            cluster: self.clone(),
            name,
        }
    }

    /// Runs a client tool (createdb, dropdb) against the cluster.
    fn client_tool(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let port = self.port.to_string();
        let out = Command::new(self.bin.join(tool))
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run {tool}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{tool} {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        if self.port != 0 && data.join("postmaster.pid").exists() {
            let _ = self.run(
                "pg_ctl",
                &[
                    "stop".as_ref(),
                    "-m".as_ref(),
                    "immediate".as_ref(),
                    "-w".as_ref(),
                    "-D".as_ref(),
                    data.as_os_str(),
                ],
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A database of its own for one test, dropped (connections and all)
/// with the value.
#[derive(Debug)]
pub struct TestDatabase {
    cluster: Arc<Cluster>,
    name: String,
}

impl TestDatabase {
    /// `postgres://postgres@127.0.0.1:PORT/NAME`: the form the collector's
    /// `--store` takes.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            self.cluster.port, self.name
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .client_tool("dropdb", &["--force", "--if-exists", &self.name]);
    }
}

/// Stops and removes the clusters of test processes that died without
/// their `Drop` (SIGKILL, a `timeout`): a directory named after a pid that
/// no longer runs.
fn reap_orphans(bin: &Path) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("patchgap-pg-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let orphan = Cluster {
            dir: entry.path(),
            bin: bin.to_path_buf(),
            // Non-zero: Drop stops the server if its pid file is there.
            port: 1,
            run_as: is_root().then(|| "postgres".to_string()),
        };
        drop(orphan);
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The uid and gid of `user`, from /etc/passwd.
fn user_ids(user: &str) -> Result<(u32, u32), String> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == user)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .ok_or_else(|| format!("no user {user} in /etc/passwd (the postgresql package creates it)"))
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("find a free port: {e}"))
}
