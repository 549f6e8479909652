//! Hostile text through a real collector and the real CLI (issue 14): a
//! 100,000-character hostname crashed `hosts`, `ps` and `query` for every
//! user, and escape sequences and newlines in command lines reached the
//! terminal raw and forged rows. A real process with control characters in
//! its argv (seen by the real agent) and a stream that claims a
//! 100,000-character hostname; tables must be safe, JSON exact.

use std::process::{Command, Stdio};

use patchgap_proto::v1::{self, agent_message::Body, ingest_client::IngestClient};
use patchgap_tests::{Harness, Proc};
use serde_json::Value;

const EVIL: &str = "\x1b[31mRED\x1b[0m\nFORGED-ROW\tx\u{202e}";

fn patchgap(args: &[&str]) -> (String, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_patchgap"))
        .args(args)
        .env_remove("PATCHGAP_COLLECTOR")
        .output()
        .expect("run patchgap");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        out.status.success(),
        "patchgap {args:?} failed: {}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (text, json)
}

/// Table output: no raw escape, carriage return, bell or bidi override,
/// no forged row, and every line of a sane length.
fn assert_safe(what: &str, text: &str) {
    for bad in ['\x1b', '\r', '\x07', '\u{9b}', '\u{202e}'] {
        assert!(
            !text.contains(bad),
            "{what}: {bad:?} reached the terminal:\n{text}"
        );
    }
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().starts_with("FORGED-ROW")),
        "{what}: a newline forged a row:\n{text}"
    );
    let longest = text.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    assert!(longest < 4000, "{what}: a line of {longest} characters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_hostname_and_control_characters_render_safely() {
    let h = Harness::start().await;
    let addr = h.addr.to_string();

    // A real process whose argv holds escape sequences, a newline, a tab
    // and a bidi override; the shell stays (two commands) with it in argv.
    let child = Proc(
        Command::new("/bin/sh")
            .args(["-c", "sleep 120; :", EVIL])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sh"),
    );
    h.sync().await;

    // A stream that claims a 100,000-character hostname, with a process
    // that has a package, so `query` lists it.
    let hostname = "h".repeat(100_000);
    let hello = v1::AgentMessage {
        seq: 0,
        body: Some(Body::Hello(v1::Hello {
            host: Some(v1::HostIdentity {
                host_id: "hostile-machine-id".into(),
                hostname: hostname.clone(),
                ..Default::default()
            }),
            session_id: "s1".into(),
            ..Default::default()
        })),
    };
    let snapshot = v1::AgentMessage {
        seq: 1,
        body: Some(Body::Snapshot(v1::Snapshot {
            snapshot_id: "snap".into(),
            processes: vec![v1::Process {
                key: Some(v1::ProcessKey {
                    pid: 4242,
                    start_ticks: 7,
                }),
                exe: format!("/opt/{EVIL}/bin").into_bytes(),
                cmdline: format!("evil {EVIL}"),
                workload: format!("w{EVIL}"),
                artifacts: vec![v1::Artifact {
                    path: b"/opt/hostile/lib.so".to_vec(),
                    kind: v1::ArtifactKind::Mapped as i32,
                    package: Some(v1::Package {
                        ecosystem: "pypi".into(),
                        name: "hostilepkg".into(),
                        version: format!("1.0{EVIL}"),
                        purl: "pkg:pypi/hostilepkg@1.0".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            last: true,
            ..Default::default()
        })),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(hello).await.unwrap();
    tx.send(snapshot).await.unwrap();
    let mut inbound = IngestClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("the Hello is accepted")
        .into_inner();
    loop {
        match inbound.message().await.expect("the stream stays up") {
            Some(v1::CollectorMessage {
                body: Some(v1::collector_message::Body::Ack(a)),
            }) if a.seq == 1 => break,
            Some(_) => continue,
            None => panic!("the collector ended the stream"),
        }
    }

    // JSON: exact, after the collector's bound on the hostname.
    let (_, hosts) = patchgap(&["hosts", "--collector", &addr, "-o", "json"]);
    let names: Vec<&str> = hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["host"].as_str().unwrap())
        .collect();
    let stored = names
        .iter()
        .find(|n| n.starts_with("hhhh"))
        .expect("the hostile host is listed");
    assert_eq!(stored.len(), 256, "bounded at ingest");
    assert!(stored.ends_with("…[truncated 100000 bytes]"), "{stored}");
    let (_, ps) = patchgap(&["ps", "--collector", &addr, "-o", "json"]);
    let cmdlines: Vec<&str> = ps["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["cmdline"].as_str().unwrap())
        .collect();
    assert!(
        cmdlines.contains(&format!("/bin/sh -c sleep 120; : {EVIL}").as_str()),
        "the real process's command line, byte-exact in JSON: {:?}",
        cmdlines
            .iter()
            .filter(|c| c.contains("sleep 120"))
            .collect::<Vec<_>>()
    );
    assert!(cmdlines.contains(&format!("evil {EVIL}").as_str()));

    // Tables: safe, escapes visible, hostname clipped.
    let (text, _) = patchgap(&["hosts", "--collector", &addr]);
    assert_safe("hosts", &text);
    assert!(text.contains("hhhh"), "{text}");
    let (text, _) = patchgap(&["ps", "--collector", &addr]);
    assert_safe("ps", &text);
    assert!(
        text.contains("\\x1b[31mRED\\x1b[0m\\nFORGED-ROW\\tx\\u{202e}"),
        "the escapes are shown:\n{text}"
    );
    let (text, _) = patchgap(&["query", "hostilepkg", "--collector", &addr]);
    assert_safe("query", &text);
    assert!(text.contains("hostilepkg"), "{text}");
    assert!(text.contains("1.0\\x1b[31mRED"), "{text}");
    let (_, q) = patchgap(&["query", "hostilepkg", "--collector", &addr, "-o", "json"]);
    assert_eq!(
        q["matches"][0]["package"]["version"].as_str(),
        Some(format!("1.0{EVIL}").as_str())
    );
    drop(tx);
    drop(child);
}
