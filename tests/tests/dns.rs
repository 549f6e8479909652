//! Destinations by name, live (issue 18, scope 1): the agent captures DNS
//! answers in the kernel (`pg_dns` on the cgroup v2 root) and records each
//! connection with the names its workload was told for the address.
//!
//! Topology, all of it the test's own: a "client" network namespace and an
//! "internet" one joined by a veth pair (documentation addresses only:
//! 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32), so nothing is routed on
//! the host and no packet leaves the machine. In the internet namespace a
//! DNS server (tests/src/dns.rs, Python's standard library) answers on
//! 198.51.100.53: a plain A record, a CNAME chain (www.example.test →
//! cdn.example.test → 203.0.113.10), one address shared by two names, an
//! AAAA record, and a name with a 1 s TTL; a listener accepts on every
//! address. In the client namespace a stub on 127.0.0.53 (in the test's
//! cgroup, not the client's) answers one name over loopback.
//!
//! The client is a real python3 in a pod-shaped cgroup, asking the servers
//! explicitly (never this machine's resolver) and connecting to what it was
//! told. What the agent sent is read back from the real collector: its
//! egress stage, in `enforce` mode for every workload, alerts on every
//! connection with the destination's names (`ListEgressAlerts`).
//!
//! Root and eBPF are assumed (CI runs as root); with PATCHGAP_EBPF=off the
//! test has nothing to check and says so.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use patchgap_collector::CollectorConfig;
use patchgap_proto::v1;
use patchgap_tests::{
    Cgroup, Harness,
    dns::{DnsServer, Netns, RESOLVE_PY, Zone, veth},
    ebpf_wanted,
};
use serde_json::Value;

const PORT: u16 = 18461;
const LATER_PORT: u16 = 18462;
const DNS: &str = "198.51.100.53";
const STUB: &str = "127.0.0.53";

/// The client: reads commands on stdin, answers one line each.
/// `q SERVER NAME QTYPE` prints the answered addresses (or `-`);
/// `c IP PORT` connects (TCP) and prints `connected` or the error.
fn client_script() -> String {
    format!(
        "import socket, sys\n{RESOLVE_PY}\n\
         print('ready', flush=True)\n\
         for line in sys.stdin:\n\
         \x20   cmd, *a = line.split()\n\
         \x20   try:\n\
         \x20       if cmd == 'q':\n\
         \x20           print(' '.join(resolve(a[0], a[1], int(a[2]))) or '-', flush=True)\n\
         \x20       elif cmd == 'c':\n\
         \x20           fam = socket.AF_INET6 if ':' in a[0] else socket.AF_INET\n\
         \x20           s = socket.socket(fam); s.settimeout(2)\n\
         \x20           s.connect((a[0], int(a[1]))); s.close()\n\
         \x20           print('connected', flush=True)\n\
         \x20   except Exception as e:\n\
         \x20       print('error', e, flush=True)\n"
    )
}

struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Client {
    /// Moves a shell into the cgroup (every hierarchy), then execs
    /// nsenter into the client namespace and the interpreter: every socket
    /// it makes belongs to the pod's cgroup.
    fn start(cgroup_rel: &str, netns: &Netns) -> Client {
        let moves: String = Cgroup::HIERARCHIES
            .iter()
            .map(|h| format!("echo $$ > {h}{cgroup_rel}/cgroup.procs && "))
            .collect();
        let mut child = Command::new("/bin/sh")
            .args([
                "-c",
                &format!("{moves}exec nsenter --net=\"$1\" /usr/bin/python3 -c \"$0\""),
                &client_script(),
                &netns.path(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the client");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the client did not start");
        Client {
            child,
            stdin,
            stdout,
        }
    }

    fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    fn resolve(&mut self, server: &str, name: &str, qtype: u16) -> String {
        self.ask(&format!("q {server} {name} {qtype}"))
    }

    fn connect(&mut self, ip: &str, port: u16) {
        let got = self.ask(&format!("c {ip} {port}"));
        assert_eq!(got, "connected", "connect to {ip}:{port}");
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A listener in `netns` that accepts and closes every connection on
/// `ports`, on every address (dual-stack). Killed when dropped.
struct Listener(Child);

impl Listener {
    fn start(netns: &Netns, ports: &[u16]) -> Listener {
        let script = format!(
            "import socket, threading\n\
             def serve(p):\n\
             \x20   s = socket.socket(socket.AF_INET6)\n\
             \x20   s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n\
             \x20   s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             \x20   s.bind(('::', p)); s.listen(64)\n\
             \x20   return s\n\
             socks = [serve(p) for p in {ports:?}]\n\
             print('ready', flush=True)\n\
             def loop(s):\n\
             \x20   while True:\n\
             \x20       c, _ = s.accept(); c.close()\n\
             for s in socks[1:]:\n\
             \x20   threading.Thread(target=loop, args=(s,), daemon=True).start()\n\
             loop(socks[0])\n"
        );
        let mut child = Command::new("nsenter")
            .args([
                &format!("--net={}", netns.path()),
                "/usr/bin/python3",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the listener");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let l = Listener(child);
        assert_eq!(line.trim(), "ready", "the listener did not start");
        l
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The names the collector's alert for `ip`:`port` carries, once it has one.
async fn names_for(h: &Harness, ip: &str, port: u16) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alerts = h
            .client()
            .await
            .list_egress_alerts(v1::ListEgressAlertsRequest {
                since_ms: 0,
                limit: 1000,
            })
            .await
            .expect("list egress alerts")
            .into_inner()
            .alerts;
        for a in alerts {
            let doc: Value = serde_json::from_str(&a.document).expect("alert JSON");
            let d = &doc["destination"];
            if d["ip"] == ip && d["port"] == port {
                let names: Vec<String> = d["names"]
                    .as_array()
                    .expect("names")
                    .iter()
                    .map(|n| n.as_str().unwrap().to_string())
                    .collect();
                let source = d["names_source"].as_str().unwrap();
                assert_eq!(
                    source,
                    if names.is_empty() { "none" } else { "dns" },
                    "{ip}:{port}"
                );
                return names;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no alert for {ip}:{port} within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_carry_the_names_their_workload_was_told() {
    if !ebpf_wanted() {
        eprintln!("PATCHGAP_EBPF=off: DNS capture is an eBPF feature; nothing to check");
        return;
    }
    let id = std::process::id();
    let client_ns = Netns::new(&format!("pgdnsc-{id}"));
    let internet = Netns::new(&format!("pgdnsi-{id}"));
    let (c_link, i_link) = veth(&format!("pgd{}", id % 100_000), &client_ns, &internet);
    client_ns.ip(&["addr", "add", "198.51.100.1/24", "dev", &c_link]);
    client_ns.ip(&["route", "add", "default", "via", "198.51.100.2"]);
    client_ns.ip(&["addr", "add", "2001:db8::1/64", "dev", &c_link, "nodad"]);
    client_ns.ip(&["-6", "route", "add", "default", "via", "2001:db8::2"]);
    internet.ip(&["addr", "add", "198.51.100.2/24", "dev", &i_link]);
    internet.ip(&["addr", "add", "2001:db8::2/64", "dev", &i_link, "nodad"]);
    for extra in [
        "198.51.100.53/32",
        "198.51.100.77/32",
        "203.0.113.10/32",
        "203.0.113.20/32",
        "203.0.113.30/32",
        "203.0.113.40/32",
    ] {
        internet.ip(&["addr", "add", extra, "dev", &i_link]);
    }
    internet.ip(&["addr", "add", "2001:db8::10/128", "dev", &i_link, "nodad"]);

    let zone = Zone::new()
        .a("plain.example.test", "198.51.100.53", 300)
        .cname("www.example.test", "cdn.example.test", 300)
        .a("cdn.example.test", "203.0.113.10", 300)
        .a("a.example.test", "203.0.113.20", 300)
        .a("b.example.test", "203.0.113.20", 300)
        .aaaa("v6.example.test", "2001:db8::10", 300)
        .a("short.example.test", "203.0.113.30", 1);
    let _dns = DnsServer::start(Some(&internet), DNS.parse().unwrap(), &zone);
    // The stub runs in the test's own cgroup: whose cgroup its loopback
    // answer is put to is what this checks.
    let _stub = DnsServer::start(
        Some(&client_ns),
        STUB.parse().unwrap(),
        &Zone::new().a("stub.example.test", "203.0.113.40", 300),
    );
    let _listener = Listener::start(&internet, &[PORT, LATER_PORT]);

    let policy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        policy.path(),
        "[[tier]]\nnumber = 1\nname = \"all\"\n[[tier.rule]]\n\n\
         [[egress]]\nworkload = \"*\"\nmode = \"enforce\"\n",
    )
    .unwrap();
    let h = Harness::start_tuned(
        CollectorConfig {
            policy: Some(policy.path().to_path_buf()),
            ..Default::default()
        },
        Default::default(),
        |a| a.dns.ttl_floor = Duration::from_secs(1),
    )
    .await;
    assert_eq!(h.agent.status().dns_reason, "", "DNS capture is on");

    let pod_uid = format!("d45e{id:08x}_6b3c_4d58_8e1f_00000000dd05");
    let rel = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{pod_uid}.slice/cri-containerd-{:064x}.scope",
        u128::from(id) << 8 | 0xd5
    );
    let cgroup = Cgroup::create(&rel);
    let mut client = Client::start(&rel, &client_ns);

    // A plain A record.
    assert_eq!(
        client.resolve(DNS, "plain.example.test", 1),
        "198.51.100.53"
    );
    client.connect("198.51.100.53", PORT);
    // A CNAME chain: the name asked first, then the chain.
    assert_eq!(client.resolve(DNS, "www.example.test", 1), "203.0.113.10");
    client.connect("203.0.113.10", PORT);
    // One address, two names: both, the newest answer first.
    assert_eq!(client.resolve(DNS, "a.example.test", 1), "203.0.113.20");
    assert_eq!(client.resolve(DNS, "b.example.test", 1), "203.0.113.20");
    client.connect("203.0.113.20", PORT);
    // AAAA.
    assert_eq!(client.resolve(DNS, "v6.example.test", 28), "2001:db8::10");
    client.connect("2001:db8::10", PORT);
    // No answer for this address: no name.
    client.connect("198.51.100.77", PORT);
    // A stub on loopback, in another cgroup than the client.
    assert_eq!(client.resolve(STUB, "stub.example.test", 1), "203.0.113.40");
    client.connect("203.0.113.40", PORT);
    // TTL 1 s (the floor here): named at once, not after it ran out.
    assert_eq!(client.resolve(DNS, "short.example.test", 1), "203.0.113.30");
    client.connect("203.0.113.30", PORT);

    assert_eq!(
        names_for(&h, "198.51.100.53", PORT).await,
        ["plain.example.test"]
    );
    assert_eq!(
        names_for(&h, "203.0.113.10", PORT).await,
        ["www.example.test", "cdn.example.test"]
    );
    assert_eq!(
        names_for(&h, "203.0.113.20", PORT).await,
        ["b.example.test", "a.example.test"]
    );
    assert_eq!(
        names_for(&h, "2001:db8::10", PORT).await,
        ["v6.example.test"]
    );
    assert!(names_for(&h, "198.51.100.77", PORT).await.is_empty());
    // The stub's loopback answer went to the client's socket, so it is the
    // client's workload that was told (the stub's cgroup is another).
    assert_eq!(
        names_for(&h, "203.0.113.40", PORT).await,
        ["stub.example.test"]
    );
    assert_eq!(
        names_for(&h, "203.0.113.30", PORT).await,
        ["short.example.test"]
    );

    // After the TTL the name is gone.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    client.connect("203.0.113.30", LATER_PORT);
    assert!(
        names_for(&h, "203.0.113.30", LATER_PORT).await.is_empty(),
        "an expired answer names nothing"
    );

    // The agent counted the answers (its status is refreshed on the
    // heartbeat tick).
    patchgap_tests::timeout(h.agent.wait_for(|s| s.dns.answers >= 7)).await;
    drop(client);
    h.stop().await;
    drop(cgroup);
}
