//! Unexpected egress, live: issue 18's 7:10 a.m. story with the real
//! `patchgap-collector` and `patchgap-agent` binaries as child processes
//! and a real Alertmanager (Debian's `prometheus-alertmanager`) on
//! loopback. "The internet" is a network namespace behind a veth pair
//! holding documentation addresses (198.51.100.2 and 203.0.113.10, the
//! usual destinations; 198.51.100.3, allowed by policy as a CIDR;
//! 198.51.100.4, allowed by policy as a name pattern; 203.0.113.66, the
//! new one; 203.0.113.77, an address no DNS name points to; 192.0.2.0/24
//! is this machine's uplink), with a listener on each, and a DNS server
//! on 198.51.100.53 (tests/src/dns.rs). Its zone names every destination
//! but the nameless one: two names share 198.51.100.2, and the new
//! destination is a CNAME chain (telemetry.trainlib.example.net →
//! ingest.eu.example.net → 203.0.113.66). Every workload resolves each
//! name through that server only (`RESOLVE_PY`, never this machine's
//! resolver) right before it connects, so the agent's DNS capture
//! (`pg_dns`) names its connections.
//!
//! A "trainer" Deployment with two replicas, pod-shaped cgroups named as
//! containerd names them, in namespace `ml` (mapped `sensitive`), runs a
//! real Python interpreter from a venv that imports `trainlib` 1.0.0, a
//! wheel built here; a "batch" Deployment in the same namespace is in
//! `audit` mode. Both learn their usual destinations; the agent and the
//! collector restart mid-learning and the baseline stays. Then
//! `trainlib` 2.0.0 is installed with pip from a local wheel and the
//! trainer restarts: within 2 s Alertmanager shows ONE alert for
//! telemetry.trainlib.example.net (not one per replica) with the name
//! and its CNAME chain from DNS, the address, the lineage, trainlib
//! 1.0.0 -> 2.0.0, the workload and scope `sensitive`; the learned
//! destinations (by name: the baseline learns names) and the
//! policy-allowed ones (by CIDR and by name pattern) do not alert;
//! batch's connection to the same name is listed by `patchgap alerts`
//! and never sent; the address without a name alerts with the address
//! alone; `patchgap changes` shows the upgrade on both replicas;
//! `incident open --alert` scopes an incident to the trainer; once the
//! trainer stops, the alert resolves in Alertmanager (endsAt).
//!
//! Root is assumed (CI runs as root). Every cgroup, namespace, veth and
//! process has a guard that removes it, also when an assertion fails.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use patchgap_tests::{
    Cgroup,
    alertmanager::Alertmanager,
    built_bins,
    dns::{DnsServer, Netns, RESOLVE_PY, Zone},
    py::{self, new_venv, pip_install},
    write,
};
use serde_json::Value;

const PORT: u16 = 18453;
// 192.0.2.0/24 is this machine's own uplink, so it stays out of "the
// internet" here.
/// The addresses of the usual destinations.
const USUAL: [&str; 2] = ["198.51.100.2", "203.0.113.10"];
/// The usual destinations as the workloads ask for them: two names for
/// USUAL[0] (one address shared by two names), one for USUAL[1]. The
/// first name asked for an address is the one the baseline learns.
const USUAL_NAMES: [&str; 3] = [
    "datasets.example.test",
    "mirror.example.test",
    "weights.example.test",
];
/// Allowed by the trainer's egress policy (a CIDR), never learned before.
const ALLOWED: &str = "198.51.100.3";
const ALLOWED_NAME: &str = "status.example.test";
/// Allowed by the trainer's egress policy by a name pattern only
/// (`*.hub.example.test`), never learned before.
const ALLOWED_BY_NAME: &str = "198.51.100.4";
const ALLOWED_BY_NAME_NAME: &str = "models.hub.example.test";
const NEW: &str = "203.0.113.66";
/// The new destination's name, a CNAME to [`NEW_CNAME`], which has NEW.
const NEW_NAME: &str = "telemetry.trainlib.example.net";
const NEW_CNAME: &str = "ingest.eu.example.net";
/// An address no DNS answer names.
const NO_NAME: &str = "203.0.113.77";
/// The test's DNS server, in "the internet".
const DNS: &str = "198.51.100.53";

/// What the DNS server answers: every destination but [`NO_NAME`].
fn zone() -> Zone {
    Zone::new()
        .a(USUAL_NAMES[0], USUAL[0], 300)
        .a(USUAL_NAMES[1], USUAL[0], 300)
        .a(USUAL_NAMES[2], USUAL[1], 300)
        .a(ALLOWED_NAME, ALLOWED, 300)
        .a(ALLOWED_BY_NAME_NAME, ALLOWED_BY_NAME, 300)
        .cname(NEW_NAME, NEW_CNAME, 300)
        .a(NEW_CNAME, NEW, 300)
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// "The internet": a namespace behind a veth pair, the documentation
/// addresses on its side and routed from the host's, a listener that
/// accepts and closes every connection, and the DNS server for [`zone`].
struct Internet {
    ns: Netns,
    veth: String,
    listener: Option<Child>,
    dns: Option<DnsServer>,
    /// 198.51.100.1/24 on the host's side, as the contain tests use:
    /// released after Drop has deleted the veth and the namespace.
    _lock: patchgap_tests::internet::InternetLock,
}

impl Internet {
    fn new() -> Internet {
        let id = std::process::id();
        let lock = patchgap_tests::internet::InternetLock::acquire();
        let mut net = Internet {
            ns: Netns::new(&format!("pgegress-{id}")),
            veth: format!("pge{}", id % 1_000_000),
            listener: None,
            dns: None,
            _lock: lock,
        };
        let ns = net.ns.name.clone();
        let peer = format!("{}p", net.veth);
        run(
            "ip",
            &[
                "link", "add", &net.veth, "type", "veth", "peer", "name", &peer,
            ],
        );
        run("ip", &["link", "set", &peer, "netns", &ns]);
        run("ip", &["addr", "add", "198.51.100.1/24", "dev", &net.veth]);
        run("ip", &["link", "set", &net.veth, "up"]);
        run(
            "ip",
            &["-n", &ns, "addr", "add", "198.51.100.2/24", "dev", &peer],
        );
        for extra in [
            "198.51.100.3/32",
            "198.51.100.4/32",
            "198.51.100.53/32",
            "203.0.113.10/32",
            "203.0.113.66/32",
            "203.0.113.77/32",
        ] {
            run("ip", &["-n", &ns, "addr", "add", extra, "dev", &peer]);
        }
        run("ip", &["-n", &ns, "link", "set", &peer, "up"]);
        // 203.0.113.0/24 is reached through the namespace; the route
        // goes with the veth.
        run(
            "ip",
            &[
                "route",
                "add",
                "203.0.113.0/24",
                "via",
                "198.51.100.2",
                "dev",
                &net.veth,
            ],
        );
        let script = format!(
            "import socket\n\
             s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0', {PORT})); s.listen(512)\n\
             print('ready', flush=True)\n\
             while True:\n    c, _ = s.accept(); c.close()\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns, "/usr/bin/python3", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the listener");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        net.listener = Some(child);
        assert_eq!(line.trim(), "ready", "the listener did not start");
        net.dns = Some(DnsServer::start(
            Some(&net.ns),
            DNS.parse().unwrap(),
            &zone(),
        ));
        net
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        if let Some(mut l) = self.listener.take() {
            let _ = l.kill();
            let _ = l.wait();
        }
        self.dns.take();
        // Deleting the veth takes its routes; the namespace goes with
        // `self.ns`.
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .stderr(Stdio::null())
            .status();
    }
}

/// A child process, killed when dropped.
struct Daemon(Option<Child>);

impl Daemon {
    fn stop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A workload's interpreter (exec'd in the pod's cgroup), importing
/// trainlib when it has it and, every 200 ms, reaching each target: a
/// name is resolved through the test's DNS server (and nothing else)
/// right before the connection to its first address; an address is
/// connected to as it is, told by no DNS answer.
fn trainer(python: &Path, cgroup_rel: &str, targets: &[&str]) -> Daemon {
    client(python, cgroup_rel, targets, false)
}

/// As [`trainer`], but each name is resolved once, before it says
/// ready, and that answer reused for every connection after (a client's
/// own cache: the JVM's 30 s default, a connection pool's).
fn cached_client(python: &Path, cgroup_rel: &str, targets: &[&str]) -> Daemon {
    client(python, cgroup_rel, targets, true)
}

fn client(python: &Path, cgroup_rel: &str, targets: &[&str], cache: bool) -> Daemon {
    let cache = if cache { "True" } else { "False" };
    let script = format!(
        "import socket, time\n\
         try:\n    import trainlib; v = trainlib.__version__\n\
         except ImportError:\n    v = '-'\n\
         {RESOLVE_PY}\n\
         answers = {{}}\n\
         def addrs(t):\n\
         \x20   if t.replace('.', '').isdigit(): return [t]\n\
         \x20   if {cache} and t in answers: return answers[t]\n\
         \x20   try: answers[t] = resolve({DNS:?}, t)[:1]\n\
         \x20   except Exception: return []\n\
         \x20   return answers[t]\n\
         for t in {targets:?}:\n\
         \x20   if {cache}: addrs(t)\n\
         print('ready', v, flush=True)\n\
         while True:\n\
         \x20   for t in {targets:?}:\n\
         \x20       for ip in addrs(t):\n\
         \x20           try: socket.create_connection((ip, {PORT}), timeout=0.5).close()\n\
         \x20           except OSError: pass\n\
         \x20   time.sleep(0.2)\n"
    );
    let moves: String = Cgroup::HIERARCHIES
        .iter()
        .map(|h| format!("echo $$ > {h}{cgroup_rel}/cgroup.procs && "))
        .collect();
    let mut child = Command::new("/bin/sh")
        .args([
            "-c",
            &format!("{moves}exec \"$1\" -c \"$0\""),
            &script,
            &python.to_string_lossy(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn a trainer");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("ready"),
        "the trainer did not start: {line:?}"
    );
    Daemon(Some(child))
}

/// A pod's container as containerd names it (see tests/tests/contain.rs).
fn pod(rt: &Path, name: &str, container: &str, tag: u32) -> (Cgroup, String) {
    let run = std::process::id();
    let uid = format!("{tag:08x}-6b3c-4d58-8e1f-{run:012x}");
    let cid = format!("{tag:08x}{run:08x}{:048x}", 0xe9e55_u128);
    write(
        rt,
        &format!("/run/containerd/io.containerd.runtime.v2.task/k8s.io/{cid}/config.json"),
        &serde_json::json!({
            "ociVersion": "1.1.0",
            "process": {"user": {"uid": 0, "gid": 0}, "args": ["python3"], "cwd": "/"},
            "root": {"path": "rootfs"},
            "annotations": {
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.container-name": container,
                "io.kubernetes.cri.image-name": "registry.example/ml/trainer:1",
                "io.kubernetes.cri.sandbox-id": format!("{:064x}", u128::from(tag) + 77),
                "io.kubernetes.cri.sandbox-name": name,
                "io.kubernetes.cri.sandbox-namespace": "ml",
                "io.kubernetes.cri.sandbox-uid": uid,
            },
            "linux": {"cgroupsPath": format!("kubepods-besteffort-pod{}.slice:cri-containerd:{cid}", uid.replace('-', "_"))},
        })
        .to_string(),
    );
    let rel = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{cid}.scope",
        uid.replace('-', "_")
    );
    (Cgroup::create(&rel), rel)
}

struct World {
    bins: PathBuf,
    alertmanager: String,
    policy: PathBuf,
    data: tempfile::TempDir,
    runtime: tempfile::TempDir,
    state: tempfile::TempDir,
    scope_map: PathBuf,
    port: u16,
}

impl World {
    /// The story's collector and agent settings: the policy and scope
    /// map in `scratch`, fresh data, runtime and state directories.
    fn new(bins: PathBuf, scratch: &Path, am: &Alertmanager, port: u16) -> World {
        World {
            bins,
            alertmanager: am.url(),
            policy: policy_file(scratch),
            data: tempfile::tempdir().unwrap(),
            runtime: tempfile::tempdir().unwrap(),
            state: tempfile::tempdir().unwrap(),
            scope_map: scratch.join("scope.map"),
            port,
        }
    }

    fn collector(&self) -> Daemon {
        let child = Command::new(self.bins.join("patchgap-collector"))
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--data-dir")
            .arg(self.data.path())
            .arg("--scope-map")
            .arg(&self.scope_map)
            .arg("--policy")
            .arg(&self.policy)
            .args([
                "--alertmanager",
                &self.alertmanager,
                "--alert-interval",
                "1s",
            ])
            .args(["--egress-warmup", "1s", "--egress-stable", "6s"])
            .args(["--egress-max-learning", "10m", "--egress-quarantine", "24h"])
            .args(["--egress-resolve-after", "4s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the collector");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the collector did not listen");
            thread::sleep(Duration::from_millis(50));
        }
        Daemon(Some(child))
    }

    fn agent(&self) -> Daemon {
        let child = Command::new(self.bins.join("patchgap-agent"))
            .arg("run")
            .args(["--collector", &format!("http://127.0.0.1:{}", self.port)])
            .arg("--runtime-root")
            .arg(self.runtime.path())
            .arg("--state-dir")
            .arg(self.state.path())
            .args(["--interval", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the agent");
        Daemon(Some(child))
    }

    /// Waits until the agent's hello (sent after its sensor attached)
    /// reached the collector, with eBPF on.
    fn agent_ready(&self) {
        self.until(&["hosts", "-o", "json"], Duration::from_secs(60), |v| {
            v["hosts"]
                .as_array()
                .is_some_and(|hs| hs.iter().any(|h| h["ebpf"] == true))
        });
    }

    fn patchgap(&self, args: &[&str]) -> Output {
        Command::new(self.bins.join("patchgap"))
            .args(args)
            .args(["--collector", &format!("127.0.0.1:{}", self.port)])
            .env_remove("PATCHGAP_COLLECTOR")
            .env_remove("PATCHGAP_TOKEN")
            .output()
            .expect("run patchgap")
    }

    fn json(&self, args: &[&str]) -> Option<Value> {
        let o = self.patchgap(args);
        if !o.status.success() {
            return None;
        }
        serde_json::from_slice(&o.stdout).ok()
    }

    /// Polls `args` (JSON) until `pred` holds, at most `within`.
    fn until(&self, args: &[&str], within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = self.json(args)
                && pred(&v)
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "never true: patchgap {args:?}: {:?} {}",
                self.json(args),
                String::from_utf8_lossy(&self.patchgap(args).stderr)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The response policy: the built-in one, plus the egress sections of
/// the story (the trainer may reach ALLOWED by its address and
/// ALLOWED_BY_NAME by its name; batch is in audit mode).
fn policy_file(dir: &Path) -> PathBuf {
    let builtin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/policy.example.toml");
    let mut text = std::fs::read_to_string(&builtin).expect("packaging/policy.example.toml");
    text.push_str(&format!(
        "\n[[egress]]\nworkload = \"ml/trainer\"\nmode = \"policy+learn\"\n\
         [[egress.allow]]\ncidrs = [\"{ALLOWED}/32\"]\n\
         [[egress.allow]]\nnames = [\"*.hub.example.test\"]\n\
         \n[[egress]]\nworkload = \"ml/batch\"\nmode = \"audit\"\n"
    ));
    let path = dir.join("policy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Alertmanager's egress alerts with label `k` = `v`.
fn am_egress<'a>(alerts: &'a [Value], k: &str, v: &str) -> Vec<&'a Value> {
    alerts
        .iter()
        .filter(|a| a["labels"]["alertname"] == "PatchgapUnexpectedEgress" && a["labels"][k] == v)
        .collect()
}

#[test]
fn an_upgrade_then_a_new_destination_is_one_alert_with_the_story() {
    let bins = built_bins();
    let scratch = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let am = Alertmanager::start();
    let w = World::new(bins, scratch.path(), &am, port);
    let checked = Command::new(w.bins.join("patchgap"))
        .args(["policy", "check"])
        .arg(&w.policy)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    std::fs::write(&w.scope_map, "namespace=ml => sensitive\n").unwrap();
    let venv = new_venv(scratch.path());
    let pip = venv.join("bin/pip");
    let python = venv.join("bin/python3");
    let system_python = Path::new("/usr/bin/python3");
    pip_install(
        &pip,
        &[py::build_wheel(scratch.path(), "trainlib", "1.0.0", false).as_os_str()],
    );

    let net = Internet::new();
    let (a_cg, a_rel) = pod(w.runtime.path(), "trainer-7d9f8b6c5d-x2x4z", "trainer", 1);
    let (b_cg, b_rel) = pod(w.runtime.path(), "trainer-7d9f8b6c5d-b4k7q", "trainer", 2);
    let (batch_cg, batch_rel) = pod(w.runtime.path(), "batch-5c7d9f8b6d-q2w4z", "batch", 3);
    let mut collector = w.collector();
    let mut agent = w.agent();
    // The agent says hello only once its sensor (DNS capture first) is
    // attached: a trainer started before that resolves its first names
    // unseen, and the baseline would learn that connection's address.
    w.agent_ready();

    // Learning: both replicas reach their usual destinations; batch too.
    let mut a = trainer(&python, &a_rel, &USUAL_NAMES);
    let mut b = trainer(&python, &b_rel, &USUAL_NAMES);
    let _batch = trainer(system_python, &batch_rel, &USUAL_NAMES);
    let shared = |v: &Value| {
        v["baseline"]["entries"].as_array().is_some_and(|e| {
            e.len() == 2
                && e.iter()
                    .all(|e| e["replicas"].as_array().is_some_and(|r| r.len() == 2))
        })
    };
    let baseline = w.until(
        &["egress", "baseline", "ml/Deployment/trainer", "-o", "json"],
        Duration::from_secs(90),
        |v| v["state"] == "learning" && shared(v),
    );
    let key = baseline["key"].as_str().unwrap().to_string();
    assert!(key.contains("/ml/Deployment/trainer/trainer"), "{key}");

    // The collector and the agent restart mid-learning: the baseline
    // stays (the same entries, first seen before the restarts) and goes
    // on to stable.
    collector.stop();
    agent.stop();
    let mut collector = w.collector();
    let mut agent = w.agent();
    let again = w.until(
        &["egress", "baseline", &key, "-o", "json"],
        Duration::from_secs(60),
        |v| v["state"] == "stable" && shared(v),
    );
    let learned = |v: &Value| -> Vec<String> {
        v["baseline"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{} {} {}", e["destination"], e["port"], e["first_seen_ms"]))
            .collect()
    };
    assert_eq!(learned(&again), learned(&baseline));
    // The baseline learned names, not addresses: the address two names
    // share is one entry, by the name asked for it first, and a
    // connection told the other name is that entry too.
    let mut by_name: Vec<&Value> = again["baseline"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["destination"])
        .collect();
    by_name.sort_by_key(|d| d.to_string());
    assert_eq!(
        by_name,
        [
            &serde_json::json!({"name": USUAL_NAMES[0]}),
            &serde_json::json!({"name": USUAL_NAMES[2]}),
        ],
        "{again:#}"
    );
    w.until(
        &["egress", "baseline", "ml/Deployment/batch", "-o", "json"],
        Duration::from_secs(60),
        |v| v["state"] == "stable",
    );
    let early = w.json(&["alerts", "-o", "json"]).unwrap();
    assert!(
        early["alerts"].as_array().unwrap().is_empty(),
        "no alert while learning and for learned destinations: {early:#}"
    );
    assert!(am_egress(&am.alerts(), "alertname", "PatchgapUnexpectedEgress").is_empty());

    // The upgrade, then the restart: the usual destinations (learned),
    // the one the policy allows, the new one and one without a name.
    let before_upgrade = Instant::now();
    pip_install(
        &pip,
        &[py::build_wheel(scratch.path(), "trainlib", "2.0.0", false).as_os_str()],
    );
    a.stop();
    b.stop();
    let upgraded_at = Instant::now();
    let targets = [
        USUAL_NAMES[0],
        USUAL_NAMES[1],
        USUAL_NAMES[2],
        ALLOWED_NAME,
        ALLOWED_BY_NAME_NAME,
        NEW_NAME,
        NO_NAME,
    ];
    let mut a = trainer(&python, &a_rel, &targets);
    let mut b = trainer(&python, &b_rel, &targets);
    // Batch (audit mode) reaches the same new name.
    let mut batch_new = trainer(system_python, &batch_rel, &[NEW_NAME]);

    // Within 2 s Alertmanager shows the alert, labelled with the
    // destination as the baseline would learn it: the name asked.
    let new_label = NEW_NAME.to_string();
    let deadline = upgraded_at + Duration::from_secs(30);
    let took = loop {
        if !am_egress(&am.alerts(), "destination", &new_label).is_empty() {
            break upgraded_at.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "Alertmanager never showed the alert"
        );
        thread::sleep(Duration::from_millis(50));
    };
    eprintln!("egress: Alertmanager showed the alert {took:?} after the trainer restarted");
    assert!(took <= Duration::from_secs(2), "the alert took {took:?}");

    // Let both replicas' connects (and a re-send) arrive: still one.
    thread::sleep(Duration::from_secs(4));
    let shown = am.alerts();
    let mine = am_egress(&shown, "destination", &new_label);
    assert_eq!(mine.len(), 1, "one alert, not one per replica: {shown:#?}");
    let alert = mine[0];
    let labels = &alert["labels"];
    assert_eq!(labels["workload"], key.as_str());
    assert_eq!(labels["namespace"], "ml");
    assert_eq!(labels["port"], PORT.to_string());
    assert_eq!(labels["reason"], "new_since_upgrade");
    assert_eq!(labels["severity"], "critical");
    for not_a_label in ["pid", "host", "replica", "count", "instance"] {
        assert!(labels.get(not_a_label).is_none(), "{labels:#}");
    }
    let notes = &alert["annotations"];
    let note = |k: &str| notes[k].as_str().unwrap_or_default().to_string();
    assert!(note("destination").contains(NEW), "{notes:#}");
    assert!(note("lineage").contains("python3"), "{notes:#}");
    assert!(note("lineage").contains("trainlib"), "{notes:#}");
    assert!(
        note("packages_changed").contains("trainlib 1.0.0 -> 2.0.0"),
        "{notes:#}"
    );
    assert!(note("scope").starts_with("sensitive"), "{notes:#}");
    assert!(note("baseline").starts_with("stable"), "{notes:#}");
    // DNS NAMES: the name asked, then the CNAME chain to the address,
    // and where the names came from.
    assert_eq!(labels["destination"], NEW_NAME);
    assert!(
        note("destination").contains(&format!(
            "{NEW}:{PORT}/tcp (names: {NEW_NAME}, {NEW_CNAME}, from dns)"
        )),
        "{notes:#}"
    );
    // No connection to the new address went without its names (that
    // would be a second alert, by address).
    assert!(
        am_egress(&shown, "destination", &format!("{NEW}/32")).is_empty(),
        "{shown:#?}"
    );
    // The address without a name: its own alert, by the address alone.
    let no_name = am_egress(&shown, "destination", &format!("{NO_NAME}/32"));
    assert_eq!(no_name.len(), 1, "{shown:#?}");
    assert!(
        no_name[0]["annotations"]["destination"]
            .as_str()
            .unwrap()
            .contains("no DNS name seen")
    );
    // Nothing for the learned or the allowed destinations, nothing from
    // batch (audit).
    for quiet in [USUAL[0], USUAL[1], ALLOWED, ALLOWED_BY_NAME] {
        assert!(
            am_egress(&shown, "destination", &format!("{quiet}/32")).is_empty(),
            "{quiet}: {shown:#?}"
        );
    }
    for quiet in USUAL_NAMES
        .iter()
        .chain([&ALLOWED_NAME, &ALLOWED_BY_NAME_NAME])
    {
        assert!(
            am_egress(&shown, "destination", quiet).is_empty(),
            "{quiet}: {shown:#?}"
        );
    }
    assert!(
        shown.iter().all(|a| !a["labels"]["workload"]
            .as_str()
            .unwrap_or("")
            .contains("/batch/")),
        "audit mode is not sent: {shown:#?}"
    );

    // `patchgap alerts` lists them all, batch's included, and says it was
    // not sent.
    let listed = w.json(&["alerts", "-o", "json"]).unwrap();
    let list = listed["alerts"].as_array().unwrap();
    let to = |ip: &str, wl: &str| -> Vec<&Value> {
        list.iter()
            .filter(|a| {
                a["destination"]["ip"] == ip
                    && a["workload"]["key"].as_str().unwrap_or("").contains(wl)
            })
            .collect()
    };
    let trainer_alerts = to(NEW, "/trainer/");
    assert_eq!(trainer_alerts.len(), 1, "{listed:#}");
    let alert = trainer_alerts[0];
    assert_eq!(alert["destination"]["port"], PORT);
    assert_eq!(
        alert["destination"]["names"],
        serde_json::json!([NEW_NAME, NEW_CNAME])
    );
    assert_eq!(alert["destination"]["names_source"], "dns");
    assert_eq!(alert["workload"]["key"], key.as_str());
    assert_eq!(alert["scope"]["classification"], "sensitive");
    assert_eq!(alert["delivery"], "sent");
    assert!(
        alert["lineage"][0]["argv"]
            .as_str()
            .unwrap()
            .contains("trainlib"),
        "{alert:#}"
    );
    let changed = alert["packages_changed"].as_array().unwrap();
    assert!(
        changed
            .iter()
            .any(|c| c["name"].as_str().unwrap().ends_with("trainlib")
                && c["from"] == "1.0.0"
                && c["to"] == "2.0.0"),
        "{alert:#}"
    );
    let batch_alerts = to(NEW, "/batch/");
    assert_eq!(batch_alerts.len(), 1, "{listed:#}");
    assert_eq!(batch_alerts[0]["mode"], "audit");
    assert_eq!(batch_alerts[0]["delivery"], "not sent (audit mode)");
    assert_eq!(
        batch_alerts[0]["destination"]["names"],
        serde_json::json!([NEW_NAME, NEW_CNAME])
    );
    assert!(to(ALLOWED, "").is_empty(), "{listed:#}");
    assert!(to(ALLOWED_BY_NAME, "").is_empty(), "{listed:#}");
    let nameless = to(NO_NAME, "/trainer/");
    assert_eq!(nameless.len(), 1, "{listed:#}");
    assert_eq!(
        nameless[0]["destination"]["names"],
        serde_json::json!([]),
        "{listed:#}"
    );
    assert_eq!(nameless[0]["destination"]["names_source"], "none");

    // `patchgap changes`: the upgrade, on both replicas.
    let since = format!("{}s", before_upgrade.elapsed().as_secs() + 1);
    let changes = w
        .json(&[
            "changes",
            "--workload",
            "ml/Deployment/trainer",
            "--since",
            &since,
            "-o",
            "json",
        ])
        .expect("patchgap changes");
    assert_eq!(changes["workload"], key.as_str());
    let upgrade: Vec<&Value> = changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"].as_str().unwrap().ends_with("trainlib"))
        .collect();
    assert_eq!(upgrade.len(), 1, "{changes:#}");
    assert_eq!(
        (&upgrade[0]["from"], &upgrade[0]["to"]),
        (&"1.0.0".into(), &"2.0.0".into())
    );
    assert_eq!(
        upgrade[0]["replicas"].as_array().unwrap().len(),
        2,
        "{changes:#}"
    );

    // An incident from the alert, scoped to the trainer.
    let id = alert["id"].to_string();
    let o = w.patchgap(&["incident", "open", "--alert", &id, "-o", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let incident: Value = serde_json::from_slice(&o.stdout).unwrap();
    let text = incident.to_string();
    assert!(text.contains(&key), "{incident:#}");
    assert!(text.contains("sensitive"), "{incident:#}");
    // The incident shows what changed on the workload (`patchgap
    // changes`' answer for the alert's quarantine window).
    assert!(
        text.contains("trainlib")
            && text.contains(r#""from":"1.0.0""#)
            && text.contains(r#""to":"2.0.0""#),
        "{incident:#}"
    );

    // The trainer stops: quiet for --egress-resolve-after, the alert
    // resolves, and Alertmanager takes its endsAt.
    a.stop();
    b.stop();
    batch_new.stop();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !am_egress(&am.alerts(), "destination", &new_label).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the alert never resolved in Alertmanager"
        );
        thread::sleep(Duration::from_millis(200));
    }

    agent.stop();
    collector.stop();
    // The trainers go first (declared last), then the cgroups and the
    // namespace, also when an assertion above fails.
    let _ = (&a_cg, &b_cg, &batch_cg, &net, &am);
}

/// A client that resolved its destination before the agent (re)started
/// connects without a name the agent saw: its own cache, as the JVM's
/// 30 s default or a connection pool keeps one. The baseline learned the
/// name (and the address it was reached at), so after an agent restart
/// those nameless connections are the learned entry, not a new
/// destination: no alert.
#[test]
fn a_cached_answer_across_an_agent_restart_is_the_learned_name() {
    let bins = built_bins();
    let scratch = tempfile::tempdir().unwrap();
    let am = Alertmanager::start();
    let w = World::new(bins, scratch.path(), &am, patchgap_tests::free_port());
    std::fs::write(&w.scope_map, "namespace=ml => sensitive\n").unwrap();
    let python = Path::new("/usr/bin/python3");
    let net = Internet::new();
    let (cg, rel) = pod(w.runtime.path(), "trainer-7d9f8b6c5d-k2m6n", "trainer", 4);
    let _collector = w.collector();
    let mut agent = w.agent();
    w.agent_ready();

    let _pool = cached_client(python, &rel, &[USUAL_NAMES[2]]);
    let learned = w.until(
        &["egress", "baseline", "ml/Deployment/trainer", "-o", "json"],
        Duration::from_secs(60),
        |v| v["state"] == "stable",
    );
    let entries = learned["baseline"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{learned:#}");
    assert_eq!(
        entries[0]["destination"],
        serde_json::json!({"name": USUAL_NAMES[2]})
    );
    let key = learned["key"].as_str().unwrap().to_string();

    // The connections the agents reported to the learned address.
    let reached = |v: &Value| -> u64 {
        v["connections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["remote_addr"] == USUAL[1])
            .map(|c| c["count"].as_u64().unwrap_or(0))
            .sum()
    };
    agent.stop();
    let before = reached(&w.json(&["connections", "-o", "json"]).unwrap());
    let _agent = w.agent();
    // The restarted agent reports the client's connections (20 more, at
    // 5 a second), each judged as it is stored.
    w.until(
        &["connections", "-o", "json"],
        Duration::from_secs(60),
        |v| reached(v) >= before + 20,
    );
    let after = w.json(&["egress", "baseline", &key, "-o", "json"]).unwrap();
    assert_eq!(after["baseline"]["entries"].as_array().unwrap().len(), 1);
    let alerts = w.json(&["alerts", "-o", "json"]).unwrap();
    assert!(
        alerts["alerts"].as_array().unwrap().is_empty(),
        "a cached answer after an agent restart alerted: {alerts:#}"
    );
    let _ = (&cg, &net, &am);
}
