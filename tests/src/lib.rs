//! Shared harness for patchgap's end-to-end tests: a collector and an agent
//! in one process, and real child processes to find.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use patchgap_agent::{AgentConfig, AgentHandle, ScanConfig};
use patchgap_collector::{CollectorConfig, SqliteStore};
use patchgap_proto::v1::{self, query_client::QueryClient};
use tokio::{net::TcpListener, sync::oneshot};
use tonic::transport::Channel;

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

    pub async fn start_with(mut config: CollectorConfig) -> Harness {
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
        let server = tokio::spawn(patchgap_collector::serve(
            config,
            Arc::new(Mutex::new(Box::new(store))),
            listener,
            async {
                let _ = stopped.await;
            },
        ));
        let agent = patchgap_agent::spawn(AgentConfig {
            collector: format!("http://{addr}"),
            scan: ScanConfig::default(),
            interval: Duration::from_secs(3600),
            backoff_max: Duration::from_secs(1),
            ..Default::default()
        });
        // The first scan is a full snapshot; wait until it is stored.
        timeout(agent.wait_for(|s| s.scans >= 1 && s.acked_seq >= s.last_seq && s.last_seq > 0))
            .await;
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
            })
            .await
            .expect("find_package")
            .into_inner()
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
