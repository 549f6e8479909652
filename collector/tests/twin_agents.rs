//! Two agents claiming one host identity (issue 14: two agents with the
//! same machine-id superseded each other five times in six seconds). The
//! second may take the host once (that is what an agent restart looks
//! like); the first, coming back, is refused and the host is flagged with a
//! `conflict` naming both streams, instead of the two fighting forever.

mod common;

use std::time::Duration;

use common::hosts;

use patchgap_agent::{AgentConfig, AgentHandle};
use patchgap_collector::CollectorConfig;
use patchgap_proto::v1::{self, agent_message::Body, ingest_client::IngestClient};

const WAIT: Duration = Duration::from_secs(60);

async fn collector() -> (std::net::SocketAddr, tempfile::TempDir) {
    common::collector(CollectorConfig::default()).await
}

fn agent(addr: std::net::SocketAddr) -> AgentHandle {
    patchgap_agent::spawn(AgentConfig {
        collector: format!("http://{addr}"),
        interval: Duration::from_secs(3600),
        // Fast heartbeats and reconnects: a fight would show at once.
        heartbeat: Duration::from_millis(200),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..Default::default()
    })
}

/// Two real agents on this machine: the same machine-id and host name, two
/// sessions, streaming at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_real_agents_with_one_machine_id_are_flagged_not_fighting() {
    let (addr, _dir) = collector().await;
    let first = agent(addr);
    tokio::time::timeout(
        WAIT,
        first.wait_for(|s| s.scans >= 1 && s.last_seq > 0 && s.acked_seq >= s.last_seq),
    )
    .await
    .expect("the first agent's snapshot is acked");
    let second = agent(addr);
    tokio::time::timeout(
        WAIT,
        second.wait_for(|s| s.scans >= 1 && s.last_seq > 0 && s.acked_seq >= s.last_seq),
    )
    .await
    .expect("the second agent's snapshot is acked");
    // Six seconds of heartbeats every 200 ms from both.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (a, b) = (first.status(), second.status());
    assert_ne!(a.session_id, b.session_id);
    assert_eq!(
        b.connects, 1,
        "the second agent kept its stream: it was never superseded ({b:?})"
    );
    assert!(b.connected);
    assert!(!a.connected, "the first agent is refused: {a:?}");
    let list = hosts(addr).await;
    assert_eq!(list.len(), 1, "one host: {list:?}");
    let c = &list[0].conflict;
    assert!(
        c.contains(&a.session_id) && c.contains(&b.session_id) && c.contains("machine-id"),
        "the host names both streams: {c:?}"
    );
    eprintln!(
        "after 6 s: first agent {} connect attempt(s) accepted, second {}; conflict: {c}",
        a.connects, b.connects
    );
    let _ = tokio::time::timeout(WAIT, first.shutdown()).await;
    let _ = tokio::time::timeout(WAIT, second.shutdown()).await;
}

fn hello(host_id: &str, hostname: &str, session: &str) -> v1::AgentMessage {
    v1::AgentMessage {
        seq: 0,
        body: Some(Body::Hello(v1::Hello {
            host: Some(v1::HostIdentity {
                host_id: host_id.into(),
                hostname: hostname.into(),
                ..Default::default()
            }),
            session_id: session.into(),
            ..Default::default()
        })),
    }
}

/// Opens a stream that sends `first`, then whatever comes on the channel.
async fn stream(
    addr: std::net::SocketAddr,
    first: v1::AgentMessage,
) -> Result<
    (
        tokio::sync::mpsc::Sender<v1::AgentMessage>,
        tonic::Streaming<v1::CollectorMessage>,
    ),
    tonic::Status,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(first).await.expect("send");
    let inbound = IngestClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, inbound))
}

/// Two streams with one machine-id and different host names: the second
/// takes the host, the first is superseded, and when it comes back it is
/// refused, naming the other, and the host says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_twin_coming_back_is_refused_and_named() {
    let (addr, _dir) = collector().await;
    let (a_tx, mut a_in) = stream(addr, hello("twin-id", "web-1", "session-a"))
        .await
        .expect("the first is accepted");
    a_in.message().await.expect("welcome");
    let (_b_tx, mut b_in) = stream(addr, hello("twin-id", "web-2", "session-b"))
        .await
        .expect("the second takes the host (as a restart would)");
    b_in.message().await.expect("welcome");
    // The first's next message finds its session superseded.
    a_tx.send(v1::AgentMessage {
        seq: 1,
        body: Some(Body::Heartbeat(Default::default())),
    })
    .await
    .expect("send");
    let err = loop {
        match a_in.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without a status"),
            Err(s) => break s,
        }
    };
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    // It comes back with its session: refused, naming the live stream.
    let refused = stream(addr, hello("twin-id", "web-1", "session-a"))
        .await
        .expect_err("the superseded twin is refused");
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
    for says in ["web-2", "session-b", "web-1", "session-a", "machine-id"] {
        assert!(refused.message().contains(says), "{says}: {refused:?}");
    }
    let list = hosts(addr).await;
    assert_eq!(list.len(), 1);
    assert!(list[0].connected, "the live twin keeps the host");
    assert_eq!(
        list[0].identity.as_ref().map(|i| i.hostname.as_str()),
        Some("web-2")
    );
    assert!(list[0].conflict.contains("session-b"), "{list:?}");
    drop(a_tx);
}
