//! What the collector's integration tests share: a collector served on a
//! free loopback port over SQLite in a temporary directory, and its hosts.

use std::sync::Arc;

use patchgap_collector::{CollectorConfig, SqliteStore};
use patchgap_proto::v1::{self, query_client::QueryClient};
use tokio::net::TcpListener;

/// Serves `config` (its `data_dir` set to a new temporary directory, kept
/// alive by the returned guard) until the test ends.
pub async fn collector(config: CollectorConfig) -> (std::net::SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let store = SqliteStore::open(dir.path()).expect("store");
    let config = CollectorConfig {
        data_dir: dir.path().to_path_buf(),
        ..config
    };
    tokio::spawn(patchgap_collector::serve(
        config,
        Arc::new(store),
        listener,
        std::future::pending(),
    ));
    (addr, dir)
}

/// The collector's host list.
pub async fn hosts(addr: std::net::SocketAddr) -> Vec<v1::HostSummary> {
    QueryClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .list_hosts(v1::ListHostsRequest {})
        .await
        .expect("list_hosts")
        .into_inner()
        .hosts
}
