//! Verify and Recover, live (issue 17): a real agent scans a real venv
//! python that maps a native library shipped in a PyPI-shaped
//! distribution (`pgdemo` 1.0: a dist-info with its RECORD, the library
//! loaded with ctypes, so the evidence is `mapped`). The real `patchgap`
//! binary opens the incident (`pgdemo@<2`); the collector plans it (tier
//! 3: nothing to contain on hosts) and verifies it every 300 ms with
//! K = 2. The distribution is upgraded on disk under the running process
//! (a stale mapping: named as blocking, "restart it"), the process is
//! restarted, the checks go green, the incident closes, its evidence
//! bundle verifies and fails with one byte changed; a rollback reopens it
//! (and `/metrics`' counter of closes keeps the first close); a forced
//! close is recorded as without evidence, and counted apart.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use patchgap_collector::{
    CollectorConfig, SqliteStore,
    auth::{Scope, TokenPolicy, issue_local},
    response::verify::Settings,
};
use patchgap_tests::{Harness, Proc, spawn_ready};
use serde_json::Value;

mod common;
use common::{patchgap, stderr, stdout};

fn ok_json(o: &Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} / {}", stdout(o), stderr(o)))
}

fn token(data_dir: &Path, subject: &str, scopes: &[Scope]) -> String {
    let store = SqliteStore::open(data_dir).unwrap();
    issue_local(
        data_dir,
        &store,
        subject,
        scopes,
        None,
        TokenPolicy::default(),
    )
    .unwrap()
    .0
}

/// A venv without pip, and its site-packages.
fn venv(dir: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join("venv");
    let out = Command::new("/usr/bin/python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&root)
        .output()
        .expect("python3 -m venv");
    assert!(out.status.success(), "venv: {}", stderr(&out));
    let lib = std::fs::read_dir(root.join("lib"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("python3")
        })
        .expect("lib/python3.X");
    (root.join("bin/python"), lib.join("site-packages"))
}

/// Installs pgdemo `version` as pip would: the package (a module and a
/// native library, a copy of libbz2 with an inode of its own) and its
/// dist-info. The library is written beside and renamed over the old one,
/// so a process that mapped the old one keeps it, `(deleted)`.
fn install(site: &Path, version: &str) {
    for e in std::fs::read_dir(site).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("pgdemo-")
        {
            std::fs::remove_dir_all(&p).unwrap();
        }
    }
    let pkg = site.join("pgdemo");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("__init__.py"), format!("VERSION = {version:?}\n")).unwrap();
    let tmp = pkg.join("_native.so.tmp");
    std::fs::copy("/usr/lib/x86_64-linux-gnu/libbz2.so.1.0", &tmp).unwrap();
    std::fs::rename(&tmp, pkg.join("_native.so")).unwrap();
    let dist = site.join(format!("pgdemo-{version}.dist-info"));
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(
        dist.join("METADATA"),
        format!("Metadata-Version: 2.1\nName: pgdemo\nVersion: {version}\n"),
    )
    .unwrap();
    std::fs::write(dist.join("top_level.txt"), "pgdemo\n").unwrap();
    std::fs::write(
        dist.join("RECORD"),
        format!(
            "pgdemo/__init__.py,,\npgdemo/_native.so,,\npgdemo-{version}.dist-info/METADATA,,\npgdemo-{version}.dist-info/RECORD,,\n"
        ),
    )
    .unwrap();
}

/// The venv's python mapping pgdemo's native library (started directly,
/// so the pid is the interpreter's).
fn start(python: &Path) -> Proc {
    spawn_ready(Command::new(python).args([
        "-c",
        "import ctypes, os, time, pgdemo\n\
         ctypes.CDLL(os.path.join(os.path.dirname(pgdemo.__file__), '_native.so'))\n\
         print('ready', flush=True)\n\
         time.sleep(300)\n",
    ]))
}

/// Polls `incident show` until `pred` holds (at most 30 s), syncing the
/// agent first each time.
async fn show_until(h: &Harness, tok: &str, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        h.sync().await;
        let shown = ok_json(&patchgap(h, tok, &["incident", "show", id, "-o", "json"]));
        if pred(&shown) {
            return shown;
        }
        assert!(Instant::now() < deadline, "never got there: {shown:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn blockers(shown: &Value) -> Vec<String> {
    shown["verification"]["blockers"]
        .as_array()
        .map(|b| b.iter().map(|l| l.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// A `state_changed` event as "from -> to: reason".
fn transition(e: &Value) -> String {
    format!(
        "{} -> {}: {}",
        e["from"].as_str().unwrap_or_default(),
        e["to"].as_str().unwrap_or_default(),
        e["reason"].as_str().unwrap_or_default()
    )
}

fn kinds(shown: &Value) -> Vec<String> {
    shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fix_closes_the_incident_on_evidence_a_rollback_reopens_it() {
    let http = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // The built-in policy written out, as a file: the bundle must name
    // the version of the policy that decided, as the hash of its bytes.
    let policy_dir = tempfile::tempdir().unwrap();
    let policy_file = policy_dir.path().join("policy.toml");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/policy.example.toml"),
        &policy_file,
    )
    .unwrap();
    let h = Harness::start_with(CollectorConfig {
        require_tokens: true,
        policy: Some(policy_file.clone()),
        incident_refresh: Duration::from_millis(300),
        http_listen: Some(http),
        verify: Settings {
            every: Duration::from_millis(300),
            streak: 2,
            ..Settings::default()
        },
        ..Default::default()
    })
    .await;
    let dir = h.data_dir.path();
    let alice = token(dir, "alice", &[Scope::Respond, Scope::Read]);
    let reader = token(dir, "reader", &[Scope::Read]);
    let work = tempfile::tempdir().unwrap();
    let (python, site) = venv(work.path());
    install(&site, "1.0");
    let old = start(&python);
    h.sync().await;

    let opened = ok_json(&patchgap(
        &h,
        &alice,
        &["incident", "open", "--package", "pgdemo@<2", "-o", "json"],
    ));
    let id = opened["id"].as_str().unwrap().to_string();
    let pids = opened["scope"]["pids"].to_string();
    assert!(pids.contains(&old.pid().to_string()), "{opened:#}");

    // Planned by the collector (tier 3: nothing to contain on hosts),
    // then verified: failed, naming the process.
    let shown = show_until(&h, &reader, &id, |s| {
        s["verification"]["verdict"] == "failed"
    })
    .await;
    assert_eq!(shown["state"], "verifying", "{shown:#}");
    let b = blockers(&shown);
    let want = format!("package (failed): pid {} (", old.pid());
    assert!(
        b.iter()
            .any(|l| l.starts_with(&want) && l.contains("runs pkg:pypi/pgdemo@1.0")),
        "{b:#?}"
    );
    assert_eq!(shown["verification"]["streak"], 0);
    assert_eq!(shown["verification"]["streak_required"], 2);
    // The table says what blocks closure too.
    let table = stdout(&patchgap(&h, &reader, &["incident", "show", &id]));
    assert!(table.contains("blocks closure:"), "{table}");
    assert!(table.contains("runs pkg:pypi/pgdemo@1.0"), "{table}");

    // The exposure graph: the package exposed, down to its host.
    let graph = ok_json(&patchgap(
        &h,
        &reader,
        &["incident", "graph", &id, "-o", "json"],
    ));
    let node = |g: &Value, id: &str| {
        g["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no {id} in {g:#}"))
    };
    assert_eq!(
        node(&graph, "package:pkg:pypi/pgdemo@1.0")["status"],
        "exposed"
    );
    assert_eq!(node(&graph, "advisory:pgdemo@<2")["kind"], "advisory");
    let host = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["to"].as_str().unwrap().starts_with("host:"))
        .unwrap_or_else(|| panic!("no workload -> host edge: {graph:#}"))["to"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(node(&graph, &host)["status"], "exposed");
    let dot = patchgap(&h, &reader, &["incident", "graph", &id, "-o", "dot"]);
    assert!(
        stdout(&dot).starts_with(&format!("digraph \"{id}\" {{")),
        "{}",
        stdout(&dot)
    );
    assert!(stdout(&dot).contains("-> \"package:pkg:pypi/pgdemo@1.0\""));

    // The upgrade lands on disk; the process still maps the old library.
    install(&site, "2.0");
    let shown = show_until(&h, &reader, &id, |s| {
        blockers(s).iter().any(|l| l.contains("replaced on disk"))
    })
    .await;
    let b = blockers(&shown);
    assert!(
        b.iter().any(|l| l.contains(&format!("pid {} ", old.pid()))
            && l.contains("still maps pkg:pypi/pgdemo@1.0 replaced on disk: restart it")),
        "{b:#?}"
    );
    assert_eq!(shown["state"], "verifying");

    // Restarted on the fixed version: green, K runs, closed.
    old.kill();
    let new = start(&python);
    let shown = show_until(&h, &reader, &id, |s| s["state"] == "closed").await;
    assert_eq!(shown["verification"]["verdict"], "successful");
    assert!(shown["verification"]["streak"].as_u64().unwrap() >= 2);
    assert_eq!(shown["verification"]["forced_close_reason"], Value::Null);
    let k = kinds(&shown);
    assert!(k.iter().filter(|k| *k == "checked").count() >= 4, "{k:?}");
    let states: Vec<String> = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "state_changed")
        .map(transition)
        .collect();
    let joined = states.join(" | ");
    for step in [
        "planned -> verifying",
        "verifying -> recovering",
        "recovering -> closed",
    ] {
        assert!(joined.contains(step), "{step} not in {joined}");
    }

    // Converged: the host is marked so in the graph.
    let graph = ok_json(&patchgap(
        &h,
        &reader,
        &["incident", "graph", &id, "-o", "json"],
    ));
    assert_eq!(node(&graph, &host)["status"], "converged", "{graph:#}");

    // The evidence bundle verifies, with the collector's key too; one
    // changed byte does not.
    let ev = patchgap(&h, &reader, &["incident", "evidence", &id]);
    assert!(ev.status.success(), "{}", stderr(&ev));
    let keyid = stderr(&ev)
        .trim()
        .trim_start_matches("signed by ")
        .to_string();
    assert!(keyid.starts_with("ed25519:"), "{keyid}");
    let bundle = work.path().join("bundle.json");
    std::fs::write(&bundle, &ev.stdout).unwrap();
    let env: Value = serde_json::from_slice(&ev.stdout).unwrap();
    assert_eq!(env["payloadType"], "application/vnd.in-toto+json");
    let verified = Command::new(env!("CARGO_BIN_EXE_patchgap"))
        .args(["evidence", "verify"])
        .arg(&bundle)
        .args(["--key", &keyid])
        .output()
        .unwrap();
    assert!(verified.status.success(), "{}", stderr(&verified));
    let said = stdout(&verified);
    assert!(said.contains("verified, signed by ed25519:"), "{said}");
    assert!(said.contains("closed with evidence: true"), "{said}");
    let mut changed = ev.stdout.clone();
    let at = String::from_utf8_lossy(&changed)
        .find("\"payload\": \"")
        .unwrap()
        + 40;
    changed[at] = if changed[at] == b'A' { b'B' } else { b'A' };
    let tampered = work.path().join("tampered.json");
    std::fs::write(&tampered, &changed).unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_patchgap"))
        .args(["evidence", "verify"])
        .arg(&tampered)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1), "{}", stdout(&refused));
    assert!(
        stderr(&refused).contains("does not verify"),
        "{}",
        stderr(&refused)
    );

    // The report equals what the log's timestamps give, computed here
    // from the bundle's timeline.
    let statement = decode_payload(env["payload"].as_str().unwrap());
    // The policy's version is the SHA-256 of the file the collector was
    // given, as `sha256sum` computes it.
    let summed = Command::new("sha256sum")
        .arg(&policy_file)
        .output()
        .unwrap();
    assert!(summed.status.success(), "{}", stderr(&summed));
    let policy = &statement["predicate"]["policy"];
    assert_eq!(
        policy["sha256"].as_str(),
        stdout(&summed).split_whitespace().next(),
        "{policy:#}"
    );
    assert_eq!(policy["source"], policy_file.display().to_string());
    let timeline = statement["predicate"]["timeline"]
        .as_array()
        .unwrap()
        .clone();
    let at = |e: &Value| e["at_ms"].as_i64().unwrap();
    let opened_at = at(&timeline[0]);
    let scoped_at = timeline
        .iter()
        .find(|e| e["event"]["kind"] == "state_changed" && e["event"]["to"] == "scoped")
        .map(at)
        .unwrap();
    let mut streak: Option<i64> = None;
    let mut converged = None;
    for e in &timeline {
        match e["event"]["kind"].as_str().unwrap() {
            "checked" if e["event"]["run"]["verdict"] == "successful" => {
                streak.get_or_insert(at(e));
            }
            "checked" => streak = None,
            "state_changed" if e["event"]["to"] == "recovering" => converged = streak,
            _ => {}
        }
    }
    let converged = converged.expect("a closing streak") - opened_at;
    let report = ok_json(&patchgap(&h, &reader, &["report", "-o", "json"]));
    assert_eq!(report["incidents"], 1, "{report:#}");
    assert_eq!(report["time_to_scope"]["count"], 1);
    assert_eq!(report["time_to_scope"]["p50_ms"], scoped_at - opened_at);
    assert_eq!(report["time_to_scope"]["max_ms"], scoped_at - opened_at);
    assert_eq!(report["convergence"]["p50_ms"], converged, "{report:#}");
    assert_eq!(report["convergence"]["p90_ms"], converged);
    assert_eq!(report["closed"], 1);
    assert_eq!(report["closed_with_evidence"], 1);
    assert_eq!(report["share_closed_with_evidence"], 1.0);
    assert_eq!(report["reopens"], 0);
    let since = ok_json(&patchgap(
        &h,
        &reader,
        &["report", "--since", "1h", "-o", "json"],
    ));
    assert_eq!(since["incidents"], 1);
    let table = stdout(&patchgap(&h, &reader, &["report"]));
    assert!(
        table.contains("closed: 1 (1 with evidence, 100%)"),
        "{table}"
    );
    // /metrics on the HTTP listener: what promtool accepts, carrying the
    // report's counts.
    let exposition = metrics(http);
    let promtool = std::env::var_os("PATCHGAP_PROMTOOL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/cache/patchgap-tests/prometheus/usr/bin/promtool".into());
    let check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .output_with_stdin(exposition.as_bytes());
    assert!(check.0, "promtool check metrics: {}\n{exposition}", check.1);
    assert!(
        exposition.contains("patchgap_incident_time_to_scope_seconds_count 1\n"),
        "{exposition}"
    );
    assert!(
        exposition.contains("patchgap_incident_convergence_seconds_count 1\n"),
        "{exposition}"
    );
    assert!(
        exposition.contains("patchgap_incidents_closed_total{evidence=\"true\"} 1\n"),
        "{exposition}"
    );
    assert!(
        exposition.contains("patchgap_agents_connected 1\n"),
        "{exposition}"
    );
    // The real agent's deltas were committed, each with its lag from
    // the agent's scan: counted, and (on one machine, one clock) none
    // took a minute.
    let sample = |name: &str| -> f64 {
        exposition
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name}: {exposition}"))
    };
    let deltas = sample("patchgap_ingest_lag_seconds_count");
    assert!(deltas > 0.0, "no delta's lag was counted: {exposition}");
    assert_eq!(
        sample("patchgap_ingest_lag_seconds_bucket{le=\"60\"}"),
        deltas,
        "{exposition}"
    );

    // A rollback: the old version runs again and the incident reopens.
    new.kill();
    install(&site, "1.0");
    let back = start(&python);
    let shown = show_until(&h, &reader, &id, |s| s["state"] != "closed").await;
    assert_eq!(shown["verification"]["reopened"], 1, "{shown:#}");
    let reopened = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "state_changed")
        .map(transition)
        .find(|t| t.starts_with("closed -> scoped"))
        .unwrap_or_else(|| panic!("no reopen event: {shown:#}"));
    assert!(
        reopened.contains(&format!("pid {}", back.pid())),
        "{reopened}"
    );
    // The reopen takes nothing back from the counter of closes: a
    // Prometheus counter never goes down.
    let exposition = metrics(http);
    for line in [
        "patchgap_incidents_closed_total{evidence=\"true\"} 1\n",
        "patchgap_incidents_closed_total{evidence=\"false\"} 0\n",
        "patchgap_incident_reopens_total 1\n",
    ] {
        assert!(exposition.contains(line), "{line} in\n{exposition}");
    }

    // Closed by force: recorded with its actor and reason, no evidence.
    let refused = patchgap(&h, &alice, &["incident", "close", &id, "--force"]);
    assert!(!refused.status.success(), "a reason is required");
    let refused = patchgap(
        &h,
        &reader,
        &["incident", "close", &id, "--force", "--reason", "x"],
    );
    assert!(stderr(&refused).contains("respond"), "{}", stderr(&refused));
    let closed = ok_json(&patchgap(
        &h,
        &alice,
        &[
            "incident",
            "close",
            &id,
            "--force",
            "--reason",
            "rolled back on purpose, CHG-7",
            "-o",
            "json",
        ],
    ));
    assert_eq!(closed["state"], "closed");
    assert_eq!(closed["closed_with_evidence"], false);
    let shown = ok_json(&patchgap(
        &h,
        &reader,
        &["incident", "show", &id, "-o", "json"],
    ));
    assert_eq!(
        shown["verification"]["forced_close_reason"],
        "rolled back on purpose, CHG-7"
    );
    let last = shown["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["kind"].as_str(), last["actor"].as_str()),
        (Some("force_closed"), Some("alice"))
    );
    let ev = patchgap(&h, &reader, &["incident", "evidence", &id]);
    let env: Value = serde_json::from_slice(&ev.stdout).unwrap();
    let statement = decode_payload(env["payload"].as_str().unwrap());
    assert_eq!(statement["predicate"]["closed_with_evidence"], false);
    assert_eq!(statement["predicate"]["reopened"], 1);
    assert!(
        statement["predicate"]["exposure_graph"]["nodes"].is_array(),
        "{statement:#}"
    );
    assert!(statement["predicate"]["runs"].as_array().unwrap().len() >= 4);
    let report = ok_json(&patchgap(&h, &reader, &["report", "-o", "json"]));
    assert_eq!(report["reopens"], 1, "{report:#}");
    assert_eq!(
        (
            report["closed"].as_u64(),
            report["closed_with_evidence"].as_u64()
        ),
        (Some(1), Some(0))
    );
    assert_eq!(report["share_closed_with_evidence"], 0.0);
    // The counter has both closes, each once.
    let exposition = metrics(http);
    for line in [
        "patchgap_incidents_closed_total{evidence=\"true\"} 1\n",
        "patchgap_incidents_closed_total{evidence=\"false\"} 1\n",
    ] {
        assert!(exposition.contains(line), "{line} in\n{exposition}");
    }
    drop(back);
    h.stop().await;
}

/// The statement inside an envelope (standard base64).
/// Through stdin: a bundle can be larger than one argument may be
/// (MAX_ARG_STRLEN, 128 KiB), as on a host with many processes.
fn decode_payload(b64: &str) -> Value {
    use std::io::Write;
    let mut child = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import base64, sys; sys.stdout.buffer.write(base64.b64decode(sys.stdin.buffer.read()))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = b64.as_bytes().to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "base64 decode");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `GET /metrics` of the collector's HTTP listener, over plain HTTP/1.1.
fn metrics(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_string()
}

trait OutputWithStdin {
    fn output_with_stdin(&mut self, input: &[u8]) -> (bool, String);
}

impl OutputWithStdin for Command {
    /// Runs it with `input` on stdin: whether it succeeded, and what it said.
    fn output_with_stdin(&mut self, input: &[u8]) -> (bool, String) {
        use std::io::Write;
        let mut child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{:?}: {e} (run tests/deps.sh)", self.get_program()));
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), said)
    }
}
