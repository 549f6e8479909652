//! Ingest admission (issue 19's 10,000-host run held every agent's
//! decoded first snapshot in memory while they queued for the writer:
//! 14.6 GB). A message past `max_waiting_messages` is refused with
//! UNAVAILABLE and not stored, so the agent keeps it in its spool and
//! sends it again; under the bound the same message is stored and acked.
//! With no room, a new stream is refused at its Hello, before its Hello
//! is stored or audited.

mod common;

use std::time::Duration;

use patchgap_collector::CollectorConfig;
use patchgap_proto::v1::{
    self, agent_message::Body, collector_message, ingest_client::IngestClient,
};

async fn collector(max_waiting_messages: usize) -> (std::net::SocketAddr, tempfile::TempDir) {
    common::collector(CollectorConfig {
        max_waiting_messages,
        ..Default::default()
    })
    .await
}

fn hello() -> v1::AgentMessage {
    v1::AgentMessage {
        seq: 0,
        body: Some(Body::Hello(v1::Hello {
            host: Some(v1::HostIdentity {
                host_id: "busy-host".into(),
                hostname: "busy".into(),
                boot_id: "b".into(),
                ..Default::default()
            }),
            session_id: "s".into(),
            ..Default::default()
        })),
    }
}

/// A snapshot of one process: what the first message of an agent is.
fn snapshot() -> v1::AgentMessage {
    v1::AgentMessage {
        seq: 1,
        body: Some(Body::Snapshot(v1::Snapshot {
            snapshot_id: "snap-1".into(),
            scanned_at_ms: 1_000,
            last: true,
            processes: vec![v1::Process {
                key: Some(v1::ProcessKey {
                    pid: 42,
                    start_ticks: 7,
                }),
                exe: "/usr/bin/sleep".into(),
                ..Default::default()
            }],
            ..Default::default()
        })),
    }
}

/// What the collector answers to a hello and one snapshot: the ack's seq,
/// or the status the stream ended with.
async fn send(addr: std::net::SocketAddr) -> Result<u64, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(hello()).await.unwrap();
    tx.send(snapshot()).await.unwrap();
    let mut inbound = IngestClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), inbound.message())
            .await
            .expect("an answer within 30 s")?;
        match next.and_then(|m| m.body) {
            Some(collector_message::Body::Ack(a)) => return Ok(a.seq),
            Some(_) => continue,
            None => panic!("the stream ended with neither an ack nor an error"),
        }
    }
}

async fn processes(addr: std::net::SocketAddr) -> usize {
    common::hosts(addr)
        .await
        .iter()
        .map(|h| h.processes_running as usize)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_past_the_waiting_bound_is_refused_unavailable_and_not_stored() {
    let (addr, _dir) = collector(0).await;
    let refused = send(addr).await.expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("busy"), "{refused:?}");
    // With when to send it again (gRPC's retry pushback, ms): after the
    // queue, never sooner than a reconnect takes.
    let retry: i64 = refused
        .metadata()
        .get("grpc-retry-pushback-ms")
        .expect("a retry time")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((200..=300_000).contains(&retry), "{retry}");
    assert_eq!(processes(addr).await, 0, "nothing stored");
    // With no room at all, the stream is refused at its Hello: not even
    // the host is stored (nor its stream audited).
    assert!(common::hosts(addr).await.is_empty(), "no host row");

    let (addr, _dir) = collector(1).await;
    assert_eq!(send(addr).await.expect("acked"), 1);
    assert_eq!(processes(addr).await, 1);
}
