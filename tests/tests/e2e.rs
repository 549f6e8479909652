//! End to end on this host: a real collector and agent in this process, real
//! processes, the real dpkg database, real chroots.

use std::{path::Path, process::Command};

use patchgap_proto::v1;
use patchgap_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_a_process_that_maps_libssl_and_drops_it_after_exit() {
    let h = Harness::start().await;
    let python = python_with_ssl();
    let pid = python.pid();
    h.sync().await;

    let expected = dpkg_version("libssl3");
    let r = h.find("libssl3", "").await;
    let m = r
        .matches
        .iter()
        .find(|m| m.key.unwrap().pid == pid)
        .expect("python is listed");
    let pkg = m.package.as_ref().unwrap();
    assert_eq!(pkg.version, expected);
    assert_eq!(pkg.source, "openssl");
    assert!(
        pkg.purl.starts_with("pkg:deb/debian/libssl3@"),
        "{}",
        pkg.purl
    );
    assert_eq!(m.evidence, "mapped");
    assert!(!m.stale);
    assert!(
        m.paths
            .iter()
            .any(|p| String::from_utf8_lossy(&p.path).contains("libssl.so.3"))
    );
    let cov = r.coverage.unwrap();
    assert_eq!((cov.hosts_total, cov.hosts_fresh), (1, 1));
    // The answer is as of the scan that saw python, which started before it.
    let started = m.process_start_ms;
    assert!(
        cov.oldest_scan_ms >= started - 1000 && cov.oldest_scan_ms <= cov.generated_at_ms,
        "{cov:?}"
    );

    // The source package name finds it too, and constraints filter in dpkg order.
    assert!(pids(&h.find("openssl", "").await).contains(&pid));
    assert!(pids(&h.find("libssl3", &expected).await).contains(&pid));
    assert!(
        pids(
            &h.find("libssl3", &format!(">={expected},<{expected}.1"))
                .await
        )
        .contains(&pid)
    );
    assert!(!pids(&h.find("libssl3", "<3.0").await).contains(&pid));

    // The executable is evidence too.
    let py = h.find("python3.11-minimal", "").await;
    let m = py
        .matches
        .iter()
        .find(|m| m.key.unwrap().pid == pid)
        .expect("exe resolved");
    assert_eq!(m.evidence, "exe");

    python.kill();
    h.sync().await;
    assert!(
        !pids(&h.find("libssl3", "").await).contains(&pid),
        "an exited process is not running"
    );
    let ps = h
        .client()
        .await
        .list_processes(v1::ListProcessesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!ps.processes.iter().any(|p| p.key.unwrap().pid == pid));
    h.stop().await;
}

/// A bad constraint is refused by the server too, with a message naming the part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_constraints_are_invalid_argument() {
    let h = Harness::start().await;
    let err = h
        .client()
        .await
        .find_package(v1::FindPackageRequest {
            name: "libc6".into(),
            constraint: ">=1.2,<<<1.3".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("<<<1.3"), "{}", err.message());
    h.stop().await;
}

/// Replaces a file the way dpkg does: write a new file, rename it over the old one.
fn dpkg_replace(dir: &Path, path: &str) {
    let dst = dir.join(path.trim_start_matches('/'));
    let tmp = dst.with_extension("dpkg-new");
    std::fs::copy(&dst, &tmp).unwrap();
    std::fs::rename(&tmp, &dst).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chrooted_process_is_resolved_against_its_own_root_and_goes_stale_on_replace() {
    let h = Harness::start().await;
    let root = tempfile::tempdir().unwrap();
    fixture_root(root.path(), "2.36-9+fixture1");
    // chroot execs sleep in place, so the child's pid is sleep's.
    let sleeper = spawn_mapping(
        Command::new("chroot")
            .arg(root.path())
            .args(["/usr/bin/sleep", "300"]),
        root.path()
            .join("usr/lib/x86_64-linux-gnu/libc.so.6")
            .to_str()
            .unwrap(),
    );
    let pid = sleeper.pid();
    h.sync().await;

    let r = h.find("libc6", "").await;
    let m = r
        .matches
        .iter()
        .find(|m| m.key.unwrap().pid == pid)
        .expect("chrooted sleep listed");
    assert_eq!(
        m.package.as_ref().unwrap().version,
        "2.36-9+fixture1",
        "resolved in its own root, not the host's"
    );
    assert_eq!(m.package.as_ref().unwrap().source, "glibc");
    assert!(!m.stale);
    // Host processes keep the host's version.
    let host_version = dpkg_version("libc6");
    assert!(
        r.matches
            .iter()
            .any(|m| m.key.unwrap().pid != pid
                && m.package.as_ref().unwrap().version == host_version)
    );
    let exe = h.find("coreutils", "").await;
    let m = exe
        .matches
        .iter()
        .find(|m| m.key.unwrap().pid == pid)
        .expect("exe resolved in root");
    assert_eq!(
        (
            m.evidence.as_str(),
            m.package.as_ref().unwrap().version.as_str()
        ),
        ("exe", "9.1-1+fixture")
    );

    // Upgrade the way dpkg does: new files renamed over the old, then the status.
    dpkg_replace(root.path(), "/usr/lib/x86_64-linux-gnu/libc.so.6");
    dpkg_replace(root.path(), "/usr/lib64/ld-linux-x86-64.so.2");
    write_dpkg(root.path(), "2.36-9+fixture2");
    h.sync().await;

    let r = h.find("libc6", "").await;
    let m = r
        .matches
        .iter()
        .find(|m| m.key.unwrap().pid == pid)
        .expect("still listed");
    assert!(m.stale, "the mapping is flagged stale");
    assert_eq!(
        m.package.as_ref().unwrap().version,
        "2.36-9+fixture1",
        "a stale mapping names the old version"
    );
    let libc = m
        .paths
        .iter()
        .find(|p| p.path.ends_with(b"libc.so.6"))
        .unwrap();
    assert!(libc.stale && libc.deleted, "{libc:?}");
    // Asking for the new version does not list a process that still runs the old one.
    assert!(!pids(&h.find("libc6", "2.36-9+fixture2").await).contains(&pid));
    assert!(pids(&h.find("libc6", "<2.36-9+fixture2").await).contains(&pid));

    sleeper.kill();
    h.stop().await;
}

/// A message over the size limit and a malformed one each get a clear status,
/// and the collector keeps serving, the real agent's traffic included.
///
/// The limit is set from what the agent can send, not from this host: the
/// agent's parts hold at most `part_bytes` (1 MiB) of records, or one
/// process alone, and a process record is at most
/// `wire::MAX_PROCESS_BYTES` (agent/src/wire.rs). A fixed 256 KiB limit
/// made this test fail on any host whose first snapshot part was larger
/// (320,643 bytes on a busy one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_messages_are_rejected_and_the_collector_stays_up() {
    use patchgap_proto::v1::ingest_client::IngestClient;
    let limit = 2 * patchgap_agent::wire::MAX_PROCESS_BYTES;
    assert!(
        patchgap_agent::AgentConfig::default().part_bytes <= limit / 2,
        "the agent's parts must fit well within the test's limit"
    );
    let h = Harness::start_with(patchgap_collector::CollectorConfig {
        max_message_bytes: limit,
        ..Default::default()
    })
    .await;
    let url = format!("http://{}", h.addr);

    let hello = v1::AgentMessage {
        seq: 0,
        body: Some(v1::agent_message::Body::Hello(v1::Hello {
            host: Some(v1::HostIdentity {
                host_id: "test-oversize".into(),
                hostname: "oversize".into(),
                ..Default::default()
            }),
            session_id: "s1".into(),
            ..Default::default()
        })),
    };
    let huge = v1::AgentMessage {
        seq: 1,
        body: Some(v1::agent_message::Body::Delta(v1::Delta {
            upserts: vec![v1::Process {
                cmdline: "x".repeat(limit + (1 << 20)),
                ..Default::default()
            }],
            ..Default::default()
        })),
    };
    let mut client = IngestClient::connect(url.clone())
        .await
        .unwrap()
        .max_encoding_message_size(2 * limit);
    let mut inbound = client
        .stream(tokio_stream::iter(vec![hello.clone(), huge]))
        .await
        .expect("hello accepted")
        .into_inner();
    let mut status = None;
    while status.is_none() {
        match inbound.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without an error status"),
            Err(s) => status = Some(s),
        }
    }
    let status = status.unwrap();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("too large"),
        "{}",
        status.message()
    );

    // Bytes that are not a valid AgentMessage: field 1 (seq, a varint) sent
    // as a length-delimited field.
    let err = raw_stream(&url, vec![0x0a, 0x03, b'a', b'b', b'c']).await;
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("malformed"), "{}", err.message());

    // A stream that does not start with a Hello.
    let err = IngestClient::connect(url.clone())
        .await
        .unwrap()
        .stream(tokio_stream::iter(vec![v1::AgentMessage {
            seq: 1,
            body: Some(v1::agent_message::Body::Heartbeat(Default::default())),
        }]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Still up and answering: the real agent's next scan is stored, and
    // queries work.
    h.sync().await;
    let hosts = h
        .client()
        .await
        .list_hosts(v1::ListHostsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        hosts.hosts.len() >= 2,
        "the real agent and the test client's host"
    );
    assert!(!h.find("libc6", "").await.matches.is_empty());
    h.stop().await;
}

/// `Harness::start_full` waited out its 60 s timeout when the collector
/// refused to start (here: a policy file that does not parse), and then
/// said only "timed out". It must fail at once, with the collector's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_fails_at_once_with_the_error_of_a_collector_that_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[[tier]\nthis is not a policy\n").unwrap();
    let t0 = std::time::Instant::now();
    let started = tokio::spawn(Harness::start_with(patchgap_collector::CollectorConfig {
        policy: Some(policy),
        ..Default::default()
    }))
    .await;
    let elapsed = t0.elapsed();
    let panic = match started {
        Ok(_) => panic!("the harness started with a policy that does not parse"),
        Err(e) => e.into_panic(),
    };
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_else(|| format!("{panic:?}"));
    assert!(
        message.contains("the collector did not start") && message.contains("policy"),
        "{message}"
    );
    // The agent's shutdown is bounded at 10 s, well short of the 60 s.
    assert!(elapsed < std::time::Duration::from_secs(15), "{elapsed:?}");
    eprintln!("failed after {elapsed:?}: {message}");
}

/// Sends one raw gRPC message on the Ingest stream and returns the error status.
async fn raw_stream(url: &str, payload: Vec<u8>) -> tonic::Status {
    use bytes::{Buf, BufMut};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Default)]
    struct Raw;
    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            let v = src.chunk().to_vec();
            src.advance(v.len());
            Ok(Some(v))
        }
    }
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }

    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/patchgap.v1.Ingest/Stream");
    match grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(vec![payload])),
            path,
            Raw,
        )
        .await
    {
        Err(s) => s,
        Ok(resp) => {
            let mut inbound = resp.into_inner();
            loop {
                match inbound.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("no error status"),
                    Err(s) => return s,
                }
            }
        }
    }
}

/// Third-party clients can discover the API through reflection, v1 and v1alpha.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_reflection_lists_the_services() {
    use patchgap_proto::reflection_pb::{v1 as r1, v1alpha as ra};
    let h = Harness::start().await;
    let url = format!("http://{}", h.addr);

    let mut c = r1::server_reflection_client::ServerReflectionClient::new(channel(&url).await);
    let req = r1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut resp = c
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let Some(r1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        resp.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"patchgap.v1.Query".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"patchgap.v1.Ingest".to_string()),
        "{names:?}"
    );

    let mut c = ra::server_reflection_client::ServerReflectionClient::new(channel(&url).await);
    let req = ra::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            ra::server_reflection_request::MessageRequest::FileContainingSymbol(
                "patchgap.v1.Query".into(),
            ),
        ),
    };
    let mut resp = c
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.message().await.unwrap().unwrap().message_response;
    assert!(
        matches!(msg, Some(ra::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
        "{msg:?}"
    );
    h.stop().await;
}

async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A connection the process opened is outbound; the one it accepted on its
/// listening port is not.
#[test]
fn sockets_are_attributed_and_outbound_is_marked() {
    let script = "import socket, time\n\
                  l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen()\n\
                  c = socket.create_connection(l.getsockname()); a, _ = l.accept()\n\
                  u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect(('127.0.0.1', 9))\n\
                  print('ready', flush=True); time.sleep(120)\n";
    let proc = spawn_ready(Command::new("/usr/bin/python3").args(["-c", script]));

    let inv = patchgap_agent::scan_once(Path::new("/proc"), Default::default());
    let p = inv
        .processes
        .iter()
        .find(|p| p.key.pid == proc.pid())
        .expect("python scanned");
    let listen = p
        .sockets
        .iter()
        .find(|s| s.state == "LISTEN")
        .expect("listener");
    assert!(!listen.outbound);
    let tcp: Vec<_> = p
        .sockets
        .iter()
        .filter(|s| s.protocol == "tcp" && s.state == "ESTABLISHED")
        .collect();
    assert_eq!(tcp.len(), 2, "{:?}", p.sockets);
    let client = tcp
        .iter()
        .find(|s| s.remote_port == listen.local_port)
        .expect("client side");
    let accepted = tcp
        .iter()
        .find(|s| s.local_port == listen.local_port)
        .expect("accepted side");
    assert!(client.outbound && client.remote_addr == "127.0.0.1");
    assert!(!accepted.outbound, "accepted on a listening port");
    let udp = p
        .sockets
        .iter()
        .find(|s| s.protocol == "udp")
        .expect("udp socket");
    assert!(udp.outbound && udp.remote_port == 9, "{udp:?}");
}

/// A process in its own network namespace: its sockets come from that
/// namespace's tables, not the host's.
#[test]
fn sockets_are_read_per_network_namespace() {
    let ns = format!("patchgap-test-{}", std::process::id());
    let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
    assert!(
        ok(Command::new("ip").args(["netns", "add", &ns])),
        "ip netns add"
    );
    struct DropNs(String);
    impl Drop for DropNs {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.0])
                .status();
        }
    }
    let _ns = DropNs(ns.clone());
    assert!(ok(
        Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"])
    ));
    // The same port on the host's loopback would be another socket entirely.
    let script = "import socket, time\n\
                  l = socket.socket(); l.bind(('127.0.0.1', 47001)); l.listen()\n\
                  c = socket.create_connection(('127.0.0.1', 47001)); a, _ = l.accept()\n\
                  print('ready', flush=True); time.sleep(120)\n";
    let proc = spawn_ready(Command::new("ip").args([
        "netns",
        "exec",
        &ns,
        "/usr/bin/python3",
        "-c",
        script,
    ]));

    let inv = patchgap_agent::scan_once(Path::new("/proc"), Default::default());
    let me = inv
        .processes
        .iter()
        .find(|p| p.key.pid == std::process::id())
        .unwrap();
    // `ip netns exec` execs python in place.
    let p = inv
        .processes
        .iter()
        .find(|p| p.key.pid == proc.pid())
        .expect("python scanned");
    assert_ne!(p.net_ns, me.net_ns, "runs in its own network namespace");
    // The privilege profile says so too.
    assert!(
        me.privilege.host_net_ns && me.privilege.host_pid_ns,
        "{:?}",
        me.privilege
    );
    assert!(
        !p.privilege.host_net_ns && p.privilege.host_pid_ns,
        "{:?}",
        p.privilege
    );
    let ports: Vec<(u16, u16, bool)> = p
        .sockets
        .iter()
        .map(|s| (s.local_port, s.remote_port, s.outbound))
        .collect();
    assert!(ports.contains(&(47001, 0, false)), "{ports:?}");
    assert!(
        ports
            .iter()
            .any(|&(l, r, out)| r == 47001 && l != 47001 && out),
        "{ports:?}"
    );
}

/// A real third-party client: Python's grpcio with grpcio-reflection, from
/// PyPI, in a venv under the target directory (made on first use). It finds
/// the API by reflection alone and calls FindPackage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpc_client_discovers_the_api_by_reflection() {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("py-grpc");
    let python = venv.join("bin/python");
    if !python.exists() {
        // pyenv's (or any) python3 with the venv module; Debian's may lack it.
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "python3 -m venv {}",
            venv.display()
        );
        let pip = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "grpcio==1.66.1",
                "grpcio-reflection==1.66.1",
            ])
            .status();
        assert!(
            pip.is_ok_and(|s| s.success()),
            "pip install grpcio grpcio-reflection (PyPI must be reachable)"
        );
    }
    let h = Harness::start().await;
    let addr = h.addr.to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/reflect.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python).args([script, &addr, "libc6"]).output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let services: Vec<&str> = answer["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        services.contains(&"patchgap.v1.Query") && services.contains(&"patchgap.v1.Ingest"),
        "{services:?}"
    );
    assert_eq!(answer["query"], "libc6");
    assert_eq!(answer["hosts_total"], 1);
    assert!(
        answer["pids"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(std::process::id()))
    );
    assert!(
        answer["versions"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(dpkg_version("libc6")))
    );
    h.stop().await;
}
