//! Artifact tables on the wire: the collector says in its Welcome that it
//! reads them, stores a message whose processes refer to their table, and
//! refuses one with a reference past the table (naming it), storing none
//! of it.

mod common;

use std::time::Duration;

use patchgap_collector::CollectorConfig;
use patchgap_proto::v1::{
    self, agent_message::Body, collector_message, ingest_client::IngestClient,
    query_client::QueryClient,
};

fn hello() -> v1::AgentMessage {
    v1::AgentMessage {
        seq: 0,
        body: Some(Body::Hello(v1::Hello {
            host: Some(v1::HostIdentity {
                host_id: "tables-host".into(),
                hostname: "tables".into(),
                boot_id: "b".into(),
                ..Default::default()
            }),
            session_id: "s".into(),
            ..Default::default()
        })),
    }
}

fn artifact(path: &str, kind: v1::ArtifactKind, package: &str) -> v1::Artifact {
    v1::Artifact {
        path: path.into(),
        inode: path.len() as u64,
        kind: kind as i32,
        package: Some(v1::Package {
            ecosystem: "deb".into(),
            name: package.into(),
            version: "1.0-1".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Two processes sharing libc, in the table form the agent sends.
fn snapshot() -> v1::Snapshot {
    let libc = artifact("/usr/lib/libc.so.6", v1::ArtifactKind::Mapped, "libc6");
    let process = |pid: u32, exe: &str| v1::Process {
        key: Some(v1::ProcessKey {
            pid,
            start_ticks: 7,
        }),
        exe: exe.into(),
        artifacts: vec![
            artifact(exe, v1::ArtifactKind::Exe, "coreutils"),
            libc.clone(),
        ],
        ..Default::default()
    };
    let mut s = v1::Snapshot {
        snapshot_id: "snap-1".into(),
        scanned_at_ms: 1_000,
        last: true,
        processes: vec![process(42, "/usr/bin/sleep"), process(43, "/usr/bin/cat")],
        ..Default::default()
    };
    s.share_artifacts();
    assert_eq!(s.artifacts.len(), 3, "libc once");
    s
}

/// The Welcome, then the ack's seq or the status the stream ended with.
async fn send(
    addr: std::net::SocketAddr,
    snapshot: v1::Snapshot,
) -> (v1::Welcome, Result<u64, tonic::Status>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(hello()).await.unwrap();
    tx.send(v1::AgentMessage {
        seq: 1,
        body: Some(Body::Snapshot(snapshot)),
    })
    .await
    .unwrap();
    let mut inbound = IngestClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    let mut welcome = None;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), inbound.message())
            .await
            .expect("an answer within 30 s");
        match next.map(|m| m.and_then(|m| m.body)) {
            Ok(Some(collector_message::Body::Welcome(w))) => welcome = Some(w),
            Ok(Some(collector_message::Body::Ack(a))) => {
                return (welcome.expect("a Welcome first"), Ok(a.seq));
            }
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended with neither an ack nor an error"),
            Err(status) => return (welcome.expect("a Welcome first"), Err(status)),
        }
    }
}

/// The running processes' pids and artifact counts.
async fn processes(addr: std::net::SocketAddr) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = QueryClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .list_processes(v1::ListProcessesRequest::default())
        .await
        .expect("list_processes")
        .into_inner()
        .processes
        .iter()
        .map(|p| (p.key.unwrap_or_default().pid, p.artifacts))
        .collect();
    out.sort_unstable();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_is_read_and_a_reference_past_it_is_refused() {
    let (addr, _dir) = common::collector(CollectorConfig::default()).await;
    let mut bad = snapshot();
    bad.processes[1].artifact_refs.push(3);
    let (welcome, refused) = send(addr, bad).await;
    assert!(welcome.artifact_refs, "the collector reads tables");
    let refused = refused.expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("process 43") && refused.message().contains("artifact 3"),
        "{refused:?}"
    );
    assert!(processes(addr).await.is_empty(), "nothing of it stored");
    let running: u64 = common::hosts(addr)
        .await
        .iter()
        .map(|h| u64::from(h.processes_running))
        .sum();
    assert_eq!(running, 0);

    let (_, acked) = send(addr, snapshot()).await;
    assert_eq!(acked.expect("acked"), 1);
    assert_eq!(processes(addr).await, vec![(42, 2), (43, 2)]);
}
