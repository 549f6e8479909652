//! Outbound actions, live on this machine (issue 16, "Webhooks" and
//! "Alertmanager"):
//!
//! - a receiver written apart from our code (webhook_receiver.py, on the
//!   specification's own Python package `standardwebhooks`, in a venv
//!   cached under /var/tmp/patchgap-test-venvs/standardwebhooks) verifies
//!   every signature; answering 500, 500, 200 it gets three deliveries
//!   with one webhook-id, and the action is acknowledged, then confirmed;
//! - a 410 disables the endpoint, and nothing is sent to it again;
//! - the real collector binary, killed with SIGKILL while a delivery waits
//!   for its retry, delivers it after a restart, once;
//! - a real Alertmanager (Debian's prometheus-alertmanager, on loopback,
//!   clustering off) shows the incident's alert with its labels, and drops
//!   it as resolved once the incident closes.
//!
//! The incidents are made through the library as the collector makes
//! them: an agent's snapshot (a process mapping libfoo1 1.5-1), an
//! incident on `libfoo1 <2`, the collector's plan under a policy whose
//! only tier routes everything to the action under test.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use patchgap_collector::{
    Ingest, SqliteStore, Store,
    audit::{AuditLog, CheckpointPolicy},
    auth::SigningKey,
    response::{
        SharedPolicy,
        deliver::{self, DeliverConfig},
        incident::{ActionState, IncidentError, Source, State, act, log},
        plan::Protected,
    },
    store::DeliveryState,
};
use patchgap_proto::v1::{self, agent_message::Body};
use serde_json::Value;

/// A secret as the specification's examples write one.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const VENV: &str = "/var/tmp/patchgap-test-venvs/standardwebhooks";
const WAIT: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    patchgap_proto::time::now_ms()
}

/// The venv's python with `standardwebhooks` from PyPI, made once per
/// machine (later runs reuse it).
fn python() -> PathBuf {
    static MADE: Mutex<()> = Mutex::new(());
    let _one = MADE.lock().unwrap_or_else(|e| e.into_inner());
    let python = Path::new(VENV).join("bin/python");
    let ready = || {
        Command::new(&python)
            .args(["-c", "import standardwebhooks"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready() {
        std::fs::create_dir_all(Path::new(VENV).parent().unwrap()).unwrap();
        let ok = Command::new("/usr/bin/python3")
            .args(["-m", "venv", VENV])
            .status()
            .expect("python3 -m venv");
        assert!(ok.success(), "python3 -m venv {VENV}");
        let ok = Command::new(Path::new(VENV).join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "standardwebhooks",
            ])
            .status()
            .expect("pip install standardwebhooks");
        assert!(ok.success(), "pip install standardwebhooks");
        assert!(ready());
    }
    python
}

/// A child killed (SIGKILL) and reaped when dropped.
struct Guard(Child);

impl Guard {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Python receiver on a loopback port.
struct Receiver {
    _child: Guard,
    port: u16,
    log: PathBuf,
}

impl Receiver {
    fn start(dir: &Path, script: &str) -> Receiver {
        Receiver::start_tls(dir, script, None)
    }

    /// With `tls` (certificate and key files), over HTTPS.
    fn start_tls(dir: &Path, script: &str, tls: Option<(&Path, &Path)>) -> Receiver {
        let log = dir.join("received.jsonl");
        let mut cmd = Command::new(python());
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/webhook_receiver.py"
        ))
        .arg(SECRET)
        .arg(&log)
        .arg(script);
        if let Some((cert, key)) = tls {
            cmd.arg(cert).arg(key);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the receiver prints its port");
        Receiver {
            _child: Guard(child),
            port,
            log,
        }
    }

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let r = self.requests();
            if r.len() >= n {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} requests: {r:?}",
                r.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The policy file: one endpoint, and one tier that routes every finding
/// to `action` (sent to the endpoint when `endpoint` is true).
fn write_policy(dir: &Path, port: u16, action: &str, endpoint: bool) -> PathBuf {
    write_policy_with(dir, port, action, endpoint, false)
}

/// As [`write_policy`], with the endpoint's `confirms` set: its actions
/// count as done when the receiver confirms them, not when it answers 2xx.
fn write_policy_with(
    dir: &Path,
    port: u16,
    action: &str,
    endpoint: bool,
    confirms: bool,
) -> PathBuf {
    let secret = dir.join("tokens.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let route = if endpoint {
        "endpoint = \"tokens\"\n"
    } else {
        ""
    };
    let text = format!(
        r#"[[endpoint]]
name = "tokens"
url = "http://127.0.0.1:{port}/hooks/patchgap"
secret_file = "{}"
confirms = {confirms}

[[tier]]
number = 1
name = "everything"
[[tier.rule]]
[[tier.action]]
kind = "{action}"
mode = "enforce"
approval = "auto"
{route}"#,
        secret.display()
    );
    let path = dir.join("policy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn package(name: &str, version: &str) -> v1::Package {
    v1::Package {
        ecosystem: "deb".into(),
        name: name.into(),
        source: name.into(),
        version: version.into(),
        arch: "amd64".into(),
        purl: format!("pkg:deb/debian/{name}@{version}?arch=amd64"),
        ..Default::default()
    }
}

fn artifact(path: &str, inode: u64, kind: v1::ArtifactKind, p: v1::Package) -> v1::Artifact {
    v1::Artifact {
        path: path.as_bytes().to_vec(),
        dev: 0x801,
        inode,
        kind: kind as i32,
        package: Some(p),
        ..Default::default()
    }
}

/// An agent's snapshot of one host running one process that maps
/// libfoo1 1.5-1, then an incident on `libfoo1 <2` planned by the
/// collector under `policy`: its automatic action is requested.
fn seed(ingest: &Ingest, policy: &SharedPolicy) -> i64 {
    let now = now_ms();
    let hello = v1::Hello {
        host: Some(v1::HostIdentity {
            host_id: "machine-1".into(),
            hostname: "alpha".into(),
            boot_id: "boot-1".into(),
            kernel: "6.1.0-test".into(),
            ..Default::default()
        }),
        agent_version: "0.1.0".into(),
        capabilities: Some(v1::Capabilities::default()),
        session_id: "s1".into(),
    };
    let session = ingest.hello(&hello, now).unwrap();
    let process = v1::Process {
        key: Some(v1::ProcessKey {
            pid: 10,
            start_ticks: 1070,
        }),
        ppid: 1,
        uid: 1000,
        euid: 1000,
        exe: b"/usr/bin/app".to_vec(),
        cmdline: "app".into(),
        comm: "app".into(),
        cgroup: "/system.slice/test.service".into(),
        start_time_ms: now - 60_000,
        workload: "unit/test.service".into(),
        root: b"/".to_vec(),
        artifacts: vec![
            artifact(
                "/usr/bin/app",
                100,
                v1::ArtifactKind::Exe,
                package("app", "1.0-1"),
            ),
            artifact(
                "/usr/lib/libfoo.so.1",
                300,
                v1::ArtifactKind::Mapped,
                package("libfoo1", "1.5-1"),
            ),
        ],
        ..Default::default()
    };
    let snapshot = Body::Snapshot(v1::Snapshot {
        snapshot_id: "snap-1".into(),
        part: 0,
        last: true,
        scanned_at_ms: now,
        stats: Some(v1::ScanStats {
            processes: 1,
            ..Default::default()
        }),
        processes: vec![process],
        sockets: Vec::new(),
        artifacts: Vec::new(),
        workloads: vec![v1::Workload {
            id: "unit/test.service".into(),
            kind: "systemd".into(),
            unit: "test.service".into(),
            cgroup: "/system.slice/test.service".into(),
            ..Default::default()
        }],
    });
    ingest
        .apply(
            &session,
            &v1::AgentMessage {
                seq: 1,
                body: Some(snapshot),
            },
            now,
        )
        .unwrap();
    let source = Source::Package {
        package: "libfoo1".into(),
        name: "libfoo1".into(),
        ecosystem: None,
        group: None,
        range: Some("<2".into()),
    };
    let id = log::open(ingest, source, "alice", &[], now).unwrap().id;
    let state = policy.state();
    let protected = Protected::default();
    let planning = act::Planning {
        policy: &state.current,
        rules: &[],
        protected: &protected,
        executors: &Default::default(),
    };
    let planned = act::plan(ingest, id, log::COLLECTOR, &planning, now).unwrap();
    assert!(planned.recorded);
    assert_eq!(planned.incident.state, State::Planned);
    id
}

fn action_of(ingest: &Ingest, id: i64) -> patchgap_collector::response::incident::IncidentAction {
    let store = ingest.store().as_ref();
    let rec = store.incident(id).unwrap().unwrap();
    let incident = log::load(store, &rec).unwrap();
    assert_eq!(incident.actions.len(), 1, "{:?}", incident.actions);
    incident.actions[0].clone()
}

struct InProcess {
    _dir: tempfile::TempDir,
    ingest: Arc<Ingest>,
    policy: SharedPolicy,
    audit: Arc<AuditLog>,
    receiver: Receiver,
    id: i64,
    /// The deliverer's memory across passes, as `deliver::run` keeps it.
    scanned: Arc<Mutex<deliver::Scanned>>,
}

/// A store, the receiver answering per `script`, and an incident whose
/// `rotate_scoped_tokens` went to it... requested, not yet sent.
fn in_process(script: &str) -> InProcess {
    in_process_with(script, false)
}

/// As [`in_process`], the endpoint with `confirms` as given.
fn in_process_with(script: &str, confirms: bool) -> InProcess {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), script);
    let policy = SharedPolicy::load(&write_policy_with(
        dir.path(),
        receiver.port,
        "rotate_scoped_tokens",
        true,
        confirms,
    ))
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("data")).unwrap());
    let key = Arc::new(SigningKey::load_or_create(&dir.path().join("data")).unwrap());
    let audit = Arc::new(AuditLog::open(store.clone(), key, CheckpointPolicy::default()).unwrap());
    let ingest = Arc::new(Ingest::new(store));
    let id = seed(&ingest, &policy);
    let a = action_of(&ingest, id);
    assert_eq!(a.state, ActionState::Requested, "{a:?}");
    assert_eq!(a.planned.endpoint.as_deref(), Some("tokens"));
    InProcess {
        _dir: dir,
        ingest,
        policy,
        audit,
        receiver,
        id,
        scanned: Arc::default(),
    }
}

fn compressed() -> DeliverConfig {
    DeliverConfig {
        // 5 s → 5 ms, 5 min → 300 ms.
        time_scale: 0.001,
        poll: Duration::from_millis(10),
        link_base: Some("https://patchgap.example.org".into()),
        ..Default::default()
    }
}

/// Runs delivery passes until incident `id`'s delivery settles.
async fn deliver_until_settled(t: &InProcess, config: &DeliverConfig) {
    let deadline = Instant::now() + WAIT;
    loop {
        deliver::pass(&t.ingest, &t.policy, &t.audit, config, &t.scanned)
            .await
            .unwrap();
        let d = t.ingest.store().deliveries(Some(t.id), 10).unwrap();
        if d.len() == 1 && d[0].state != DeliveryState::Pending {
            return;
        }
        assert!(Instant::now() < deadline, "not settled: {d:?}");
        tokio::time::sleep(config.poll).await;
    }
}

fn audited(t: &InProcess, method: &str) -> Vec<(String, String, String)> {
    t.ingest
        .store()
        .audit_entries(0, 0, 1000)
        .unwrap()
        .into_iter()
        .filter(|e| e.method == method)
        .map(|e| (e.peer, e.args, e.result))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_500_500_200_gets_one_webhook_id_three_times() {
    let t = in_process("500,500,200");
    let config = compressed();
    deliver_until_settled(&t, &config).await;
    let got = t.receiver.requests();
    assert_eq!(got.len(), 3, "{got:#?}");
    let ids: Vec<&str> = got
        .iter()
        .map(|r| r["webhook_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0] && i.starts_with("msg_")),
        "{ids:?}"
    );
    for r in &got {
        assert_eq!(r["verified"], true, "standardwebhooks refused: {r}");
    }
    let statuses: Vec<i64> = got.iter().map(|r| r["status"].as_i64().unwrap()).collect();
    assert_eq!(statuses, [500, 500, 200]);
    // The body: the documented event, the same on every attempt.
    assert!(got.iter().all(|r| r["body"] == got[0]["body"]));
    let body: Value = serde_json::from_str(got[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["type"], "patchgap.action.requested");
    let data = &body["data"];
    assert_eq!(data["incident"]["id"], format!("INC-{}", t.id));
    assert_eq!(data["incident"]["dedup_key"], "package:libfoo1@<2");
    assert_eq!(data["action"]["kind"], "rotate_scoped_tokens");
    assert_eq!(data["action"]["endpoint"], "tokens");
    assert_eq!(data["targets_total"], 1);
    assert_eq!(data["targets"][0]["host"], "alpha");
    assert_eq!(data["targets"][0]["workload"], "unit:test.service");
    assert_eq!(
        data["link"],
        format!("https://patchgap.example.org/incidents/INC-{}", t.id)
    );
    let a = action_of(&t.ingest, t.id);
    assert_eq!(data["plan_hash"], a.plan.as_str());
    // The outbox, the action and the audit log agree.
    let d = t
        .ingest
        .store()
        .deliveries(Some(t.id), 10)
        .unwrap()
        .remove(0);
    assert_eq!(
        (d.state, d.attempts, d.last_status),
        (DeliveryState::Delivered, 3, 200)
    );
    assert_eq!(d.webhook_id, ids[0]);
    assert_eq!(a.state, ActionState::Applied, "{a:?}");
    assert!(
        a.reason.starts_with("acknowledged by tokens (HTTP 200"),
        "{}",
        a.reason
    );
    let calls = audited(&t, "webhook.deliver");
    assert_eq!(calls.len(), 3, "{calls:?}");
    let port = t.receiver.port;
    for (n, (peer, args, result)) in calls.iter().enumerate() {
        assert_eq!(
            peer,
            &format!("http://127.0.0.1:{port}"),
            "no path in the audit"
        );
        assert!(args.contains(&format!("webhook-id={}", ids[0])), "{args}");
        assert!(args.contains(&format!("attempt={}", n + 1)), "{args}");
        let want = if n < 2 {
            "retry in"
        } else {
            "delivered (HTTP 200)"
        };
        assert!(result.starts_with(want), "{result}");
        assert!(!format!("{peer}{args}{result}").contains("MfKQ9r8G"));
    }
    // Enqueueing again (every pass, every restart) sends nothing more.
    deliver::pass(&t.ingest, &t.policy, &t.audit, &config, &t.scanned)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(t.receiver.requests().len(), 3);

    // The receiver confirms (through the callback route): verified.
    let err = deliver::confirm(&t.ingest, t.id, "msg_unknown", "tokens", "", now_ms());
    assert!(err.is_err());
    let confirmed = deliver::confirm(
        &t.ingest,
        t.id,
        ids[0],
        "tokens",
        "rotated 3 tokens",
        now_ms(),
    )
    .unwrap();
    assert_eq!(confirmed.actions[0].state, ActionState::Verified);
    assert_eq!(
        confirmed.actions[0].reason,
        "confirmed by tokens: rotated 3 tokens"
    );
    let again = deliver::confirm(&t.ingest, t.id, ids[0], "tokens", "", now_ms()).unwrap();
    assert_eq!(
        again.last_seq, confirmed.last_seq,
        "a second confirmation adds nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_disables_the_endpoint() {
    let t = in_process("410");
    let config = compressed();
    deliver_until_settled(&t, &config).await;
    for _ in 0..10 {
        deliver::pass(&t.ingest, &t.policy, &t.audit, &config, &t.scanned)
            .await
            .unwrap();
    }
    let got = t.receiver.requests();
    assert_eq!(
        got.len(),
        1,
        "nothing is sent to a disabled endpoint: {got:#?}"
    );
    assert_eq!(got[0]["verified"], true);
    let d = t
        .ingest
        .store()
        .deliveries(Some(t.id), 10)
        .unwrap()
        .remove(0);
    assert_eq!((d.state, d.last_status), (DeliveryState::Failed, 410));
    let disabled = t.ingest.store().disabled_endpoints().unwrap();
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0].name, "tokens");
    let a = action_of(&t.ingest, t.id);
    assert_eq!(a.state, ActionState::Failed);
    assert!(a.reason.contains("410 Gone"), "{}", a.reason);
    let calls = audited(&t, "webhook.deliver");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].2, "endpoint disabled (HTTP 410)");

    // A responder sees it through the API (`patchgap deliveries`), with no
    // body or secret, and calls the endpoint again (`patchgap endpoint
    // enable`): both audited.
    use patchgap_collector::QueryService;
    use patchgap_proto::v1::query_server::Query;
    let data = t._dir.path().join("data");
    let tokens = Arc::new(
        patchgap_collector::auth::Tokens::open(
            &data,
            Default::default(),
            t.ingest.store().as_ref(),
        )
        .unwrap(),
    );
    let svc = QueryService::new(
        t.ingest.clone(),
        Default::default(),
        Duration::from_secs(90),
        Default::default(),
        tokens,
        t.audit.clone(),
    );
    let listed = svc
        .list_deliveries(tonic::Request::new(v1::ListDeliveriesRequest {
            incident: format!("INC-{}", t.id),
            limit: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.deliveries.len(), 1, "{listed:?}");
    let l = &listed.deliveries[0];
    assert_eq!(
        (
            l.state.as_str(),
            l.last_status,
            l.endpoint.as_str(),
            l.attempts
        ),
        ("failed", 410, "tokens", 1)
    );
    assert!(
        l.endpoint_disabled && l.webhook_id.starts_with("msg_"),
        "{l:?}"
    );
    assert_eq!(listed.disabled_endpoints[0].name, "tokens");
    assert!(!format!("{listed:?}").contains(SECRET), "no secret");
    let enabled = svc
        .enable_endpoint(tonic::Request::new(v1::EnableEndpointRequest {
            name: "tokens".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(enabled.enabled);
    assert!(t.ingest.store().disabled_endpoints().unwrap().is_empty());
    let again = svc
        .enable_endpoint(tonic::Request::new(v1::EnableEndpointRequest {
            name: "tokens".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.enabled, "it was not disabled any more");
    let listed = svc
        .list_deliveries(tonic::Request::new(v1::ListDeliveriesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(!listed.deliveries[0].endpoint_disabled);
    assert!(listed.disabled_endpoints.is_empty());
    let enables = audited(&t, "Query/EnableEndpoint");
    assert_eq!(enables.len(), 2, "{enables:?}");
    assert_eq!(
        enables[0].2,
        "enabled: its pending deliveries are tried again"
    );
    assert_eq!(audited(&t, "Query/ListDeliveries").len(), 2);
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn start_collector(addr: SocketAddr, data: &Path, policy: &Path, log: &Path) -> Guard {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_patchgap-collector"))
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(data)
        .arg("--policy")
        .arg(policy)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn patchgap-collector");
    Guard(child)
}

/// The real binary, SIGKILLed while the delivery waits for its second
/// attempt (the schedule's 5 s, unscaled), restarted: the receiver gets
/// the second attempt from the new process, answers 200, and nothing
/// more comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_killed_mid_retry_delivers_after_restart_once() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), "500,200");
    let policy_path = write_policy(dir.path(), receiver.port, "rotate_scoped_tokens", true);
    let data = dir.path().join("data");
    let id = {
        let policy = SharedPolicy::load(&policy_path).unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&data).unwrap());
        let ingest = Ingest::new(store);
        seed(&ingest, &policy)
    };
    let log = dir.path().join("collector.log");
    let addr = free_port();
    let mut first = start_collector(addr, &data, &policy_path, &log);
    let got = receiver.wait_for(1);
    first.kill();
    let killed_at = Instant::now();
    assert_eq!(got[0]["status"], 500);
    {
        let store = SqliteStore::open(&data).unwrap();
        let d = store.deliveries(Some(id), 10).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].state, d[0].attempts),
            (DeliveryState::Pending, 1),
            "{d:?}"
        );
        assert!(
            killed_at.elapsed() < Duration::from_secs(3),
            "killed before the retry was due"
        );
    }
    assert_eq!(receiver.requests().len(), 1, "killed mid-retry");
    let _second = start_collector(free_port(), &data, &policy_path, &log);
    let got = receiver.wait_for(2);
    assert_eq!(got[1]["status"], 200);
    assert_eq!(got[1]["webhook_id"], got[0]["webhook_id"]);
    assert!(got.iter().all(|r| r["verified"] == true), "{got:#?}");
    // Re-signed by the new process: the attempts are at least the
    // schedule's 5 s less its 20 % jitter apart, so the later one carries
    // a timestamp (whole seconds) at least 4 s later and, over different
    // signed content, another signature. A replayed first attempt would
    // have neither.
    let ts = |r: &Value| -> i64 { r["timestamp"].as_str().unwrap().parse().unwrap() };
    assert!(
        ts(&got[1]) >= ts(&got[0]) + 4,
        "the retry was not signed afresh: {got:#?}"
    );
    assert_ne!(got[1]["signature"], got[0]["signature"], "{got:#?}");
    assert_eq!(got[1]["body"], got[0]["body"]);
    // Once: nothing more comes (the outcome is recorded; enqueueing again
    // after the restart was a no-op).
    std::thread::sleep(Duration::from_secs(3));
    let got = receiver.requests();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got.iter().filter(|r| r["status"] == 200).count(), 1);
}

/// A real Alertmanager on a loopback port: clustering off, its own
/// storage and a minimal config.
struct Alertmanager {
    _child: Guard,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    fn start() -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: none\nreceivers:\n  - name: none\n",
        )
        .unwrap();
        let addr = free_port();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("prometheus-alertmanager (tests/deps.sh installs it)");
        let am = Alertmanager {
            _child: Guard(child),
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + WAIT;
        while get(addr, "/-/ready").is_none_or(|(s, _)| s != 200) {
            assert!(Instant::now() < deadline, "Alertmanager did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        am
    }

    /// The alerts `GET /api/v2/alerts` lists (active ones: a resolved
    /// alert is not listed).
    fn alerts(&self) -> Vec<Value> {
        let (status, body) = get(self.addr, "/api/v2/alerts").expect("GET /api/v2/alerts");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

/// A bare HTTP/1.0 GET on loopback: (status, body).
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Closes incident `id` the long way (the convergence issue's `incident
/// close --force` is not there yet): verifying, recovering, closed.
fn force_close(ingest: &Ingest, id: i64) {
    log::append(ingest, id, "alice", now_ms(), |cur| {
        let mut next = cur.clone();
        let mut events = Vec::new();
        for to in [State::Verifying, State::Recovering, State::Closed] {
            events.push(next.transition(to, "closed by the test")?);
            next.state = to;
        }
        Ok::<_, IncidentError>(events)
    })
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_shows_the_incident_and_resolves_it_when_it_closes() {
    let am = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();
    let policy =
        SharedPolicy::load(&write_policy(dir.path(), 9, "open_incident_sev1", false)).unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("data")).unwrap());
    let key = Arc::new(SigningKey::load_or_create(&dir.path().join("data")).unwrap());
    let audit = Arc::new(AuditLog::open(store.clone(), key, CheckpointPolicy::default()).unwrap());
    let ingest = Arc::new(Ingest::new(store));
    let id = seed(&ingest, &policy);
    let config = DeliverConfig {
        alert_interval: Duration::from_millis(200),
        ..Default::default()
    };
    let pager = tokio::spawn(deliver::alertmanager::run(
        ingest.clone(),
        audit.clone(),
        format!("http://{}", am.addr),
        config,
    ));
    let incident = format!("INC-{id}");
    let ours = |alerts: &[Value]| -> Vec<Value> {
        alerts
            .iter()
            .filter(|a| a["labels"]["incident"] == incident.as_str())
            .cloned()
            .collect()
    };
    let deadline = Instant::now() + WAIT;
    let alert = loop {
        let mine = ours(&am.alerts());
        if let Some(a) = mine.first() {
            assert_eq!(mine.len(), 1, "one exposed workload, one alert: {mine:#?}");
            break a.clone();
        }
        assert!(Instant::now() < deadline, "no alert for {incident}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let labels = alert["labels"].as_object().unwrap();
    let mut names: Vec<&str> = labels.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        ["alertname", "incident", "severity", "tier", "workload"]
    );
    assert_eq!(labels["alertname"], "PatchgapIncident");
    assert_eq!(labels["severity"], "sev1");
    assert_eq!(labels["tier"], "1");
    assert_eq!(labels["workload"], "unit:test.service");
    assert_eq!(alert["status"]["state"], "active");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("package:libfoo1@<2")
    );
    // Re-sent while active: still there after several intervals.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(ours(&am.alerts()).len(), 1);
    // The page action shows what happened: Alertmanager took it.
    let a = action_of(&ingest, id);
    assert_eq!(a.state, ActionState::Applied, "{a:?}");
    assert_eq!(a.reason, "acknowledged by alertmanager (HTTP 200)");

    force_close(&ingest, id);
    // Resolved by endsAt (without it Alertmanager would keep it for its
    // resolve_timeout, 5 minutes): no longer listed.
    let deadline = Instant::now() + WAIT;
    while !ours(&am.alerts()).is_empty() {
        assert!(Instant::now() < deadline, "{incident} was not resolved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pager.abort();
    let calls: Vec<_> = ingest
        .store()
        .audit_entries(0, 0, 10_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.method == "alertmanager.post")
        .collect();
    assert!(calls.len() >= 3, "{calls:?}");
    assert!(
        calls
            .iter()
            .all(|c| c.result == "HTTP 200" && c.peer == format!("http://{}", am.addr))
    );
    assert!(calls.last().unwrap().args.ends_with("resolved"));
}

/// An action reverted after its webhook was enqueued but before it went
/// out is not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverted_action_is_not_sent() {
    let t = in_process("200");
    let store = t.ingest.store().as_ref();
    assert_eq!(
        deliver::enqueue_requested(store, None, now_ms()).unwrap(),
        1
    );
    assert_eq!(
        deliver::enqueue_requested(store, None, now_ms()).unwrap(),
        0
    );
    act::revert(&t.ingest, t.id, "alice", None, "not-affected", now_ms()).unwrap();
    deliver_until_settled(&t, &compressed()).await;
    let d = store.deliveries(Some(t.id), 10).unwrap().remove(0);
    assert_eq!(d.state, DeliveryState::Failed);
    assert_eq!(
        d.last_error,
        "action 1 was reverted before it was delivered"
    );
    assert!(t.receiver.requests().is_empty());
}

/// HTTPS to a receiver whose certificate chains to the endpoint's
/// `ca_file`: delivered and verified. The same receiver under the system's
/// roots (no `ca_file`) is refused at the TLS handshake and retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_a_receiver_trusted_through_the_endpoints_ca() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hooks test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (ca, cert, key_file) = (
        dir.path().join("ca.pem"),
        dir.path().join("hooks.crt"),
        dir.path().join("hooks.key"),
    );
    std::fs::write(&ca, ca_cert.pem()).unwrap();
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let receiver = Receiver::start_tls(dir.path(), "200", Some((&cert, &key_file)));

    for (trusted, n) in [(false, 1), (true, 2)] {
        let sub = dir.path().join(format!("run-{n}"));
        std::fs::create_dir_all(&sub).unwrap();
        let secret = sub.join("tokens.secret");
        std::fs::write(&secret, SECRET).unwrap();
        let ca_line = match trusted {
            true => format!("ca_file = \"{}\"\n", ca.display()),
            false => String::new(),
        };
        let policy_path = sub.join("policy.toml");
        std::fs::write(
            &policy_path,
            format!(
                "[[endpoint]]\nname = \"tokens\"\nurl = \"https://localhost:{}/hooks\"\nsecret_file = \"{}\"\n{ca_line}\n[[tier]]\nnumber = 1\nname = \"all\"\n[[tier.rule]]\n[[tier.action]]\nkind = \"start_patched_canary\"\nmode = \"enforce\"\napproval = \"auto\"\nendpoint = \"tokens\"\n",
                receiver.port,
                secret.display()
            ),
        )
        .unwrap();
        let policy = SharedPolicy::load(&policy_path).unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&sub.join("data")).unwrap());
        let signing = Arc::new(SigningKey::load_or_create(&sub.join("data")).unwrap());
        let audit =
            Arc::new(AuditLog::open(store.clone(), signing, CheckpointPolicy::default()).unwrap());
        let ingest = Arc::new(Ingest::new(store));
        let id = seed(&ingest, &policy);
        let scanned = Arc::default();
        deliver::pass(&ingest, &policy, &audit, &compressed(), &scanned)
            .await
            .unwrap();
        let d = ingest.store().deliveries(Some(id), 10).unwrap().remove(0);
        if trusted {
            assert_eq!(
                (d.state, d.last_status),
                (DeliveryState::Delivered, 200),
                "{d:?}"
            );
            let got = receiver.requests();
            assert_eq!(got.len(), 1, "{got:#?}");
            assert_eq!(got[0]["verified"], true);
            assert_eq!(got[0]["webhook_id"], d.webhook_id.as_str());
        } else {
            assert_eq!(d.state, DeliveryState::Pending, "{d:?}");
            assert!(
                d.last_error.starts_with("TLS with localhost:"),
                "{}",
                d.last_error
            );
            assert!(receiver.requests().is_empty());
        }
    }
}

/// POSTs `body` to `path` of a plaintext HTTP listener with `headers`;
/// the status and the answer's body.
fn post(addr: SocketAddr, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes()).unwrap();
    conn.write_all(body).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    let (head, rest) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, rest.to_string())
}

/// The collector's HTTP listener (plaintext, loopback) over `t`'s store
/// and policy: its address, and the sender that stops it.
async fn serve_http(
    t: &InProcess,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    use patchgap_collector::http;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = http::router(http::Http {
        ingest: t.ingest.clone(),
        policy: t.policy.clone(),
        audit: t.audit.clone(),
        gate: Default::default(),
        ledger: Default::default(),
        connected: Default::default(),
        fresh_after: Duration::from_secs(90),
        data_dir: t._dir.path().join("data"),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, router, None, async {
        let _ = stopped.await;
    }));
    (addr, stop, server)
}

/// A receiver's confirmation of delivery `webhook_id` of incident `id`,
/// the body `POST /v1/webhooks/confirm` takes.
fn callback_body(id: i64, webhook_id: &str) -> String {
    serde_json::json!({
        "type": "patchgap.action.confirmed",
        "data": {"webhook_id": webhook_id, "incident": format!("INC-{id}"),
                 "by": "token-rotator", "note": "rotated 3 tokens"}
    })
    .to_string()
}

/// The Standard Webhooks headers of message `id` at `ts` (seconds) over
/// `body`, signed with `key`.
fn signed(
    id: &str,
    ts: i64,
    body: &str,
    key: &patchgap_collector::response::deliver::sign::Secret,
) -> Vec<(&'static str, String)> {
    use patchgap_collector::response::deliver::sign;
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", ts.to_string()),
        (
            "webhook-signature",
            sign::sign(key, id, ts, body.as_bytes()),
        ),
    ]
}

/// The receiver confirms through the collector's callback route, as a
/// Standard Webhooks message signed with the endpoint's own secret: a
/// wrong signature, an old timestamp or an unknown delivery are refused
/// (and audited); the right one makes the action `verified`, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_confirms_through_the_signed_callback_route() {
    use patchgap_collector::response::deliver::sign;
    let t = in_process("200");
    deliver_until_settled(&t, &compressed()).await;
    let got = t.receiver.requests();
    assert_eq!(got.len(), 1, "{got:#?}");
    let delivered = got[0]["webhook_id"].as_str().unwrap().to_string();

    let (addr, stop, server) = serve_http(&t).await;
    let secret = sign::Secret::parse(SECRET).unwrap();
    let callback = |webhook_id: &str| callback_body(t.id, webhook_id);
    let now_s = now_ms() / 1000;
    let body = callback(&delivered);
    let path = "/v1/webhooks/confirm";
    let (addr2, body2) = (addr, body.clone());
    let ask = move |h: Vec<(&'static str, String)>, b: String| {
        tokio::task::spawn_blocking(move || post(addr2, path, &h, b.as_bytes()))
    };
    // Unsigned, signed with another key, too old, for a delivery that
    // does not exist: refused.
    let (status, _) = ask(Vec::new(), body2.clone()).await.unwrap();
    assert_eq!(status, 400);
    let other = sign::Secret::parse("whsec_ZmFrZWtleWZha2VrZXlmYWtla2V5ZmFrZWtleQ==").unwrap();
    let (status, said) = ask(signed("cb_1", now_s, &body, &other), body.clone())
        .await
        .unwrap();
    assert_eq!(status, 401, "{said}");
    let (status, said) = ask(signed("cb_2", now_s - 3600, &body, &secret), body.clone())
        .await
        .unwrap();
    assert_eq!(status, 401, "{said}");
    let unknown = callback("msg_000000000000000000000000");
    let (status, said) = ask(signed("cb_3", now_s, &unknown, &secret), unknown.clone())
        .await
        .unwrap();
    assert_eq!(status, 404, "{said}");
    assert_eq!(action_of(&t.ingest, t.id).state, ActionState::Applied);
    // Signed with the endpoint's secret: verified, by the endpoint.
    let (status, said) = ask(signed("cb_4", now_s, &body, &secret), body.clone())
        .await
        .unwrap();
    assert_eq!(status, 200, "{said}");
    let answer: Value = serde_json::from_str(&said).unwrap();
    assert_eq!(answer["state"], "verified", "{answer}");
    let a = action_of(&t.ingest, t.id);
    assert_eq!(a.state, ActionState::Verified);
    assert_eq!(
        a.reason,
        "confirmed by endpoint tokens (token-rotator): rotated 3 tokens"
    );
    // Again: nothing more in the log.
    let before = t.ingest.store().incident(t.id).unwrap().unwrap().last_seq;
    let (status, _) = ask(signed("cb_5", now_s, &body, &secret), body.clone())
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        t.ingest.store().incident(t.id).unwrap().unwrap().last_seq,
        before
    );
    // Every call is in the audit log, refusals with their reason.
    let calls = audited(&t, "webhook.confirm");
    assert_eq!(calls.len(), 6, "{calls:#?}");
    assert!(
        calls.iter().filter(|(_, _, r)| r == "ok").count() == 2,
        "{calls:#?}"
    );
    assert!(
        calls.iter().any(|(_, _, r)| r.starts_with("refused 401")),
        "{calls:#?}"
    );
    assert!(!format!("{calls:?}").contains("MfKQ9r8G"));
    let _ = stop.send(());
    let _ = server.await;
}

/// An endpoint with `confirms = true`: its 200 is an acknowledgement, not
/// the deed. The action stays `requested`, saying it waits for the
/// receiver's confirmation, until the signed callback comes; then it is
/// `verified`, by that endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirming_endpoint_leaves_the_action_requested_until_its_callback() {
    use patchgap_collector::response::deliver::sign;
    let t = in_process_with("200", true);
    deliver_until_settled(&t, &compressed()).await;
    let got = t.receiver.requests();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(
        (&got[0]["status"], &got[0]["verified"]),
        (&200.into(), &true.into())
    );
    let delivered = got[0]["webhook_id"].as_str().unwrap().to_string();
    let d = t
        .ingest
        .store()
        .deliveries(Some(t.id), 10)
        .unwrap()
        .remove(0);
    assert_eq!((d.state, d.last_status), (DeliveryState::Delivered, 200));
    let a = action_of(&t.ingest, t.id);
    assert_eq!(a.state, ActionState::Requested, "{a:?}");
    assert_eq!(
        a.reason,
        format!(
            "acknowledged by tokens (HTTP 200, webhook-id {delivered}); waiting for its confirmation"
        )
    );
    assert_eq!(a.times.applied, 0, "{a:?}");
    // Further passes do not move it: only the receiver can.
    deliver::pass(&t.ingest, &t.policy, &t.audit, &compressed(), &t.scanned)
        .await
        .unwrap();
    assert_eq!(action_of(&t.ingest, t.id).state, ActionState::Requested);

    let (addr, stop, server) = serve_http(&t).await;
    let secret = sign::Secret::parse(SECRET).unwrap();
    let body = callback_body(t.id, &delivered);
    let headers = signed("cb_confirm", now_ms() / 1000, &body, &secret);
    let (status, said) = tokio::task::spawn_blocking(move || {
        post(addr, "/v1/webhooks/confirm", &headers, body.as_bytes())
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{said}");
    let answer: Value = serde_json::from_str(&said).unwrap();
    assert_eq!(answer["state"], "verified", "{answer}");
    let a = action_of(&t.ingest, t.id);
    assert_eq!(a.state, ActionState::Verified, "{a:?}");
    assert_eq!(
        a.reason,
        "confirmed by endpoint tokens (token-rotator): rotated 3 tokens"
    );
    assert!(
        a.times.applied > 0 && a.times.verified >= a.times.applied,
        "{a:?}"
    );
    let _ = stop.send(());
    let _ = server.await;
}

/// An unexpected-egress alert (issue 18) of a workload whose `[[egress]]`
/// names the endpoint goes out through the same outbox: signed (the
/// independent verifier accepts it), once per webhook-id however often it
/// is enqueued, audited with its event type, and its resolution after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_egress_alert_goes_to_its_endpoint_through_the_outbox() {
    use patchgap_collector::{
        egress::{
            policy::EgressPolicy,
            stage::{EgressConfig, EgressPolicies},
        },
        response::deliver::egress::{self, Sent},
        store::EgressAlertUpsert,
    };
    let t = in_process("200");
    let config = compressed();
    // The incident's own webhook first, so only the alert's are left.
    deliver_until_settled(&t, &config).await;
    let store = t.ingest.store().as_ref();
    let doc = serde_json::json!({
        "id": 0, "dedup_key": "k8s:/ml/Deployment/trainer/trainer|203.0.113.66/32|443|tcp",
        "reason": "new_since_upgrade", "mode": "policy+learn", "host": "node-1",
        "workload": {"key": "k8s:/ml/Deployment/trainer/trainer", "kind": "pod",
                     "owner_kind": "Deployment", "owner": "trainer", "namespace": "ml",
                     "container": "trainer", "image_digest": ""},
        "scope": {"classification": "sensitive", "writes_to": []},
        "privilege": {"root": false, "privileged": false, "host_network": false},
        "destination": {"ip": "203.0.113.66", "port": 443, "protocol": "tcp",
                        "names": [], "names_source": "none"},
        "lineage": [{"pid": 42, "start_time_ms": 1, "exe": "/venv/bin/python3",
                     "argv": "python3 train.py"}],
        "packages": ["pkg:pypi/trainlib@2.0.0"],
        "packages_changed": [{"name": "pypi/trainlib", "from": "1.0.0", "to": "2.0.0",
                              "at": 5, "evidence": "installed"}],
        "baseline": {"state": "stable", "generation": "g2"},
        "first_seen_ms": 6, "last_seen_ms": 7, "count": 1, "replicas": ["node-1/a"],
        "delivery": "sent"
    })
    .to_string();
    let now = now_ms();
    let (rec, _) = store
        .upsert_egress_alert(&EgressAlertUpsert {
            dedup_key: "k8s:/ml/Deployment/trainer/trainer|203.0.113.66/32|443|tcp",
            workload: "k8s:/ml/Deployment/trainer/trainer",
            seen_ms: now,
            count: 1,
            body: &doc,
        })
        .unwrap();
    let routed = EgressConfig {
        policies: EgressPolicies {
            default: EgressPolicy {
                endpoint: Some("tokens".into()),
                ..EgressPolicy::default()
            },
            workloads: Vec::new(),
        },
        ..EgressConfig::default()
    };
    let sent = Sent::default();
    // Enqueued twice (a restarted deliverer remembers nothing): one row.
    for _ in 0..2 {
        egress::prepare(store, &routed, &sent, false, None, now).unwrap();
    }
    let rows = settle(&t, &config, egress::webhook_id(rec.id, false)).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    store.resolve_egress_alerts(now + 1, now + 2).unwrap();
    egress::prepare(store, &routed, &sent, false, None, now + 2).unwrap();
    let rows = settle(&t, &config, egress::webhook_id(rec.id, true)).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let got: Vec<Value> = t
        .receiver
        .requests()
        .into_iter()
        .filter(|r| r["body"].as_str().unwrap_or("").contains("patchgap.egress"))
        .collect();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got.iter().all(|r| r["verified"] == true), "{got:#?}");
    let first: Value = serde_json::from_str(got[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(first["type"], "patchgap.egress.alert.opened");
    assert_eq!(first["data"]["alert"]["destination"]["ip"], "203.0.113.66");
    assert_eq!(first["data"]["alert"]["packages_changed"][0]["to"], "2.0.0");
    let second: Value = serde_json::from_str(got[1]["body"].as_str().unwrap()).unwrap();
    assert_eq!(second["type"], "patchgap.egress.alert.resolved");
    let calls = audited(&t, "webhook.deliver");
    assert!(
        calls
            .iter()
            .any(|(_, args, _)| args.contains("event=patchgap.egress.alert.opened")),
        "{calls:#?}"
    );
    assert!(calls.iter().all(|(_, args, _)| !args.contains("whsec_")));
}

/// Runs delivery passes until the egress delivery `wanted` (incident 0)
/// is delivered; returns the egress rows.
async fn settle(
    t: &InProcess,
    config: &DeliverConfig,
    wanted: String,
) -> Vec<patchgap_collector::store::DeliveryRecord> {
    let deadline = Instant::now() + WAIT;
    loop {
        deliver::pass(&t.ingest, &t.policy, &t.audit, config, &t.scanned)
            .await
            .unwrap();
        let rows = t.ingest.store().deliveries(Some(0), 10).unwrap();
        if rows
            .iter()
            .any(|d| d.webhook_id == wanted && d.state == DeliveryState::Delivered)
        {
            return rows;
        }
        assert!(Instant::now() < deadline, "not delivered: {rows:?}");
        tokio::time::sleep(config.poll).await;
    }
}

/// A throwaway PostgreSQL 15 (the store's own test harness, included by
/// path: it uses only std).
#[path = "../src/store/postgres/harness.rs"]
#[allow(dead_code)]
mod pg_harness;

/// Two real collectors on one PostgreSQL, one policy naming one endpoint,
/// one incident whose action goes to it: the receiver gets one delivery,
/// not one per collector. Each collector runs the deliverer, the
/// incident refresh and the verify pass; the outbox's leases (`FOR UPDATE
/// SKIP LOCKED`) and the passes' advisory locks leave one of them the
/// work. Skipped where PostgreSQL is not installed (unless
/// PATCHGAP_REQUIRE_POSTGRES is set, as in CI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_on_one_postgres_deliver_a_webhook_once() {
    let Some(cluster) = pg_harness::Cluster::shared() else {
        return;
    };
    let db = cluster.database();
    let url = db.url();
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), "200");
    let policy_path = write_policy(dir.path(), receiver.port, "rotate_scoped_tokens", true);
    let id = {
        use patchgap_collector::store::postgres::{PgStore, PgTarget};
        let policy = SharedPolicy::load(&policy_path).unwrap();
        let store: Arc<dyn Store> = tokio::task::spawn_blocking(move || {
            Arc::new(PgStore::connect(&PgTarget::new(&url).unwrap()).unwrap()) as Arc<dyn Store>
        })
        .await
        .unwrap();
        tokio::task::spawn_blocking(move || seed(&Ingest::new(store), &policy))
            .await
            .unwrap()
    };
    let log = dir.path().join("collectors.log");
    let start = |name: &str| {
        let child = Command::new(env!("CARGO_BIN_EXE_patchgap-collector"))
            .arg("--listen")
            .arg(free_port().to_string())
            .arg("--store")
            .arg(db.url())
            .arg("--data-dir")
            .arg(dir.path().join(name))
            .arg("--policy")
            .arg(&policy_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .expect("spawn patchgap-collector");
        Guard(child)
    };
    let (_a, _b) = (start("a"), start("b"));
    let got = receiver.wait_for(1);
    assert_eq!(got[0]["status"], 200, "{got:#?}");
    assert!(got[0]["verified"] == true, "{got:#?}");
    // Both collectors get several passes over the outbox and the incident.
    std::thread::sleep(Duration::from_secs(5));
    let got = receiver.requests();
    assert_eq!(
        got.len(),
        1,
        "incident {id}: delivered more than once; collectors' log:\n{}\n{got:#?}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
