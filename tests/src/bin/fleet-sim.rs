//! fleet-sim: a simulated fleet streaming real inventories to a collector.
//!
//! Each of `--hosts N` hosts has its own identity and its own ingest stream
//! (several streams share one HTTP/2 connection, as far as the collector's
//! per-connection stream limit allows), speaking the agent's protocol with
//! the agent's own wire code: Hello, the Welcome and the desired
//! containments, the inventory as `wire::snapshot_parts`, then deltas.
//!
//! The inventory is this host's, scanned once at start, or inventories
//! recorded elsewhere (`--record FILE` writes this host's; `--inventory
//! FILE`, repeatable, replays them, host i taking inventory i mod k). Churn:
//! every `--delta-every` each host sends a delta that starts `--execs`
//! processes (copies of its own, under new keys) and ends as many of the
//! ones it started; an upgrade wave moves one package to a new version
//! across the fleet, `--upgrade-hosts-per-min` hosts a minute; one host in
//! `--silent-every` goes silent for `--silent-for` and comes back with a new
//! session (and a new snapshot when the collector asks for a resync).
//!
//! Prints one line when every host's first snapshot is acked, then one line
//! a minute (`--report-every`: acks, ack latency p50/p99, hosts connected)
//! until stopped.
//!
//! Several collectors (`--collector A,B`) share the fleet: connection groups
//! take them in turn, and a host whose stream breaks moves to the next one
//! and resumes its session there as the agent does (its session id kept, the
//! deltas not yet acked sent again after the Welcome). A Welcome that knows
//! less of the session than was acked is a lost acked message: counted,
//! printed, and in the `--acked FILE` report (one line per host: host id,
//! session id, last acked sequence number), written when SIGTERM or SIGINT
//! stops the fleet. SIGUSR1 sets a mark (the HA script sends it right after
//! it kills the primary): the first ack of a message sent after the mark is
//! printed with its time, `ingest resumed`, the script's measure.
//!
//!   cargo run --release -p patchgap-tests --bin fleet-sim -- --hosts 10000 --collector http://127.0.0.1:7373

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use patchgap_proto::v1::{
    self, agent_message::Body, collector_message, ingest_client::IngestClient,
};
use prost::Message;
use tokio::sync::{Mutex, mpsc};
use tonic::transport::{Channel, Endpoint};

struct Args {
    hosts: usize,
    /// The collectors, from the comma-separated `--collector` list.
    collectors: Vec<String>,
    hosts_per_connection: usize,
    delta_every: Duration,
    /// A heartbeat per host this often, as the agent sends (0: none).
    heartbeat_every: Duration,
    execs: usize,
    upgrade_hosts_per_min: usize,
    silent_every: usize,
    silent_for: Duration,
    inventories: Vec<PathBuf>,
    record: Option<PathBuf>,
    acked: Option<PathBuf>,
    /// How often the progress line is printed (the fleet bench reads
    /// ingest lag from it over a churn window shorter than a minute).
    report_every: Duration,
    /// Retry after a second even when a busy collector said when (to
    /// measure what its retry times are worth).
    ignore_pushback: bool,
    /// Send every artifact inline, as agents did before artifact tables
    /// (to measure what the tables are worth).
    inline_artifacts: bool,
}

const USAGE: &str = "usage: fleet-sim --hosts N --collector URL[,URL...] [--hosts-per-connection 50] \
[--delta-every 30s] [--heartbeat-every 10s (0: none)] [--execs 2] [--upgrade-hosts-per-min 0] [--silent-every 0] [--silent-for 60s] \
[--inventory FILE]... [--record FILE] [--acked FILE] [--report-every 60s] [--ignore-pushback] [--inline-artifacts]";

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        hosts: 0,
        collectors: Vec::new(),
        hosts_per_connection: 50,
        delta_every: Duration::from_secs(30),
        heartbeat_every: Duration::from_secs(10),
        execs: 2,
        upgrade_hosts_per_min: 0,
        silent_every: 0,
        silent_for: Duration::from_secs(60),
        inventories: Vec::new(),
        record: None,
        acked: None,
        report_every: Duration::from_secs(60),
        ignore_pushback: false,
        inline_artifacts: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--hosts" => args.hosts = value()?.parse()?,
            "--collector" => {
                let list = value()?;
                args.collectors = list.split(',').map(|c| c.trim().to_string()).collect();
                if args.collectors.iter().any(String::is_empty) {
                    bail!("empty address in the collector list {list:?}");
                }
            }
            "--hosts-per-connection" => args.hosts_per_connection = value()?.parse()?,
            "--delta-every" => args.delta_every = duration(&value()?)?,
            "--heartbeat-every" => args.heartbeat_every = duration(&value()?)?,
            "--execs" => args.execs = value()?.parse()?,
            "--upgrade-hosts-per-min" => args.upgrade_hosts_per_min = value()?.parse()?,
            "--silent-every" => args.silent_every = value()?.parse()?,
            "--silent-for" => args.silent_for = duration(&value()?)?,
            "--inventory" => args.inventories.push(value()?.into()),
            "--record" => args.record = Some(value()?.into()),
            "--acked" => args.acked = Some(value()?.into()),
            "--report-every" => args.report_every = duration(&value()?)?,
            "--ignore-pushback" => args.ignore_pushback = true,
            "--inline-artifacts" => args.inline_artifacts = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if args.record.is_none() && (args.hosts == 0 || args.collectors.is_empty()) {
        bail!("--hosts and --collector are needed\n{USAGE}");
    }
    if args.hosts_per_connection == 0 {
        bail!("--hosts-per-connection must be at least 1");
    }
    Ok(args)
}

/// `500ms`, `30s`, `5m`, `2h`.
fn duration(s: &str) -> anyhow::Result<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..split]
        .parse()
        .with_context(|| format!("bad duration {s:?}"))?;
    Ok(match &s[split..] {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => bail!("bad duration {s:?} (500ms, 30s, 5m, 2h)"),
    })
}

/// One inventory to replay, as the agent sends it.
struct Template {
    host: v1::HostIdentity,
    parts: Vec<v1::Snapshot>,
    processes: Vec<v1::Process>,
    /// The package the upgrade wave moves, and its version after it.
    upgrade: Option<(String, String)>,
}

impl Template {
    /// `parts` as recorded (with or without artifact tables), sent with
    /// their tables, or inline when `inline`.
    fn new(host: v1::HostIdentity, mut parts: Vec<v1::Snapshot>, inline: bool) -> Template {
        // The processes inline: churn edits their artifacts.
        let processes: Vec<v1::Process> = parts
            .iter()
            .flat_map(|part| {
                part.processes.iter().map(|p| {
                    let mut p = p.clone();
                    p.artifacts = p.artifacts_in(&part.artifacts).cloned().collect();
                    p.artifact_refs.clear();
                    p
                })
            })
            .collect();
        for part in &mut parts {
            if inline {
                patchgap_proto::artifacts::inline(&mut part.artifacts, &mut part.processes);
            } else {
                part.share_artifacts();
            }
        }
        // The deb package mapped by most processes: an upgrade of it reaches
        // the most answers.
        let mut count: HashMap<(&str, &str), usize> = HashMap::new();
        for p in &processes {
            for a in &p.artifacts {
                if let Some(pkg) = &a.package
                    && pkg.ecosystem == "deb"
                {
                    *count.entry((&pkg.name, &pkg.version)).or_default() += 1;
                }
            }
        }
        let upgrade = count
            .into_iter()
            .max_by_key(|(k, n)| (*n, *k))
            .map(|((name, version), _)| (name.to_string(), format!("{version}+sim1")));
        Template {
            host,
            parts,
            processes,
            upgrade,
        }
    }
}

/// Records this host's inventory: its host identity, then each snapshot
/// part, each length-delimited protobuf.
fn record(path: &PathBuf, host: &v1::HostIdentity, parts: &[v1::Snapshot]) -> anyhow::Result<()> {
    let mut out = Vec::new();
    host.encode_length_delimited(&mut out)?;
    for p in parts {
        p.encode_length_delimited(&mut out)?;
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

fn load(path: &PathBuf, inline: bool) -> anyhow::Result<Template> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut buf = bytes.as_slice();
    let host = v1::HostIdentity::decode_length_delimited(&mut buf)
        .with_context(|| format!("{}: not a fleet-sim recording", path.display()))?;
    let mut parts = Vec::new();
    while !buf.is_empty() {
        parts.push(
            v1::Snapshot::decode_length_delimited(&mut buf)
                .with_context(|| format!("{}: a cut or corrupt snapshot part", path.display()))?,
        );
    }
    if parts.is_empty() {
        bail!("{}: no snapshot in it", path.display());
    }
    Ok(Template::new(host, parts, inline))
}

struct Stats {
    first_acked: AtomicUsize,
    connected: AtomicUsize,
    acks: AtomicU64,
    /// Ack latencies in microseconds since the last report.
    latencies: Mutex<Vec<u64>>,
    /// Acked messages a later Welcome of the same session did not know.
    lost: AtomicU64,
    /// Streams a busy collector ended with a retry time (then honoured).
    pushed_back: AtomicU64,
    /// When SIGUSR1 came (Unix ms; 0 before), and whether a message sent
    /// after it was acked yet (`ingest resumed`).
    mark_ms: AtomicU64,
    resumed: std::sync::atomic::AtomicBool,
    /// Each host's session id and last acked sequence number, for `--acked`.
    acked: Vec<std::sync::Mutex<(String, u64)>>,
}

impl Stats {
    fn new(hosts: usize) -> Stats {
        Stats {
            first_acked: AtomicUsize::new(0),
            connected: AtomicUsize::new(0),
            acks: AtomicU64::new(0),
            latencies: Mutex::default(),
            lost: AtomicU64::new(0),
            pushed_back: AtomicU64::new(0),
            mark_ms: AtomicU64::new(0),
            resumed: Default::default(),
            acked: (0..hosts).map(|_| Default::default()).collect(),
        }
    }

    /// Counts the ack of a message sent at `sent_ms`, and prints the first
    /// one of a message sent after the mark.
    fn ack(&self, sent_ms: Option<u64>) {
        self.acks.fetch_add(1, Ordering::Relaxed);
        let mark = self.mark_ms.load(Ordering::Relaxed);
        if mark > 0
            && sent_ms.is_some_and(|t| t >= mark)
            && !self.resumed.swap(true, Ordering::Relaxed)
        {
            let now = patchgap_proto::time::now_ms() as u64;
            println!(
                "fleet-sim: ingest resumed: acked at {now} ms (Unix), {} ms after the mark",
                now - mark
            );
        }
    }

    /// `--acked`: one line per host, `HOST_ID SESSION_ID LAST_ACKED_SEQ`.
    fn write_acked(&self, path: &PathBuf) -> anyhow::Result<()> {
        let mut out = String::new();
        for (i, a) in self.acked.iter().enumerate() {
            let (session, seq) = &*a.lock().unwrap_or_else(|e| e.into_inner());
            out.push_str(&format!("{} {session} {seq}\n", host_id(i)));
        }
        std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
    }
}

/// The host id of simulated host `index`.
fn host_id(index: usize) -> String {
    format!("fleet-sim-{index:06}")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let templates: Vec<Arc<Template>> = if args.inventories.is_empty() {
        let inv =
            tokio::task::spawn_blocking(|| patchgap_agent::Scanner::new(Default::default()).scan())
                .await?;
        let parts = patchgap_agent::wire::snapshot_parts(&inv, "sim", 1 << 20);
        let host = patchgap_agent::wire::host(&inv.host);
        if let Some(path) = &args.record {
            record(path, &host, &parts)?;
            println!(
                "fleet-sim: recorded {} processes to {}",
                inv.processes.len(),
                path.display()
            );
            return Ok(());
        }
        vec![Arc::new(Template::new(host, parts, args.inline_artifacts))]
    } else {
        args.inventories
            .iter()
            .map(|p| load(p, args.inline_artifacts).map(Arc::new))
            .collect::<anyhow::Result<_>>()?
    };
    let processes: usize = (0..args.hosts)
        .map(|i| templates[i % templates.len()].processes.len())
        .sum();
    println!(
        "fleet-sim: {} hosts, {} processes, {} inventories, {} hosts per connection, a delta every {:?}",
        args.hosts,
        processes,
        templates.len(),
        args.hosts_per_connection,
        args.delta_every
    );
    if args.upgrade_hosts_per_min > 0 {
        for t in &templates {
            if let Some((name, version)) = &t.upgrade {
                println!(
                    "fleet-sim: upgrade wave: {name} to {version}, {} hosts a minute",
                    args.upgrade_hosts_per_min
                );
            }
        }
    }
    let stats = Arc::new(Stats::new(args.hosts));
    let started = Instant::now();
    let endpoints = args
        .collectors
        .iter()
        .map(|c| {
            Ok(Endpoint::from_shared(c.clone())?
                .http2_keep_alive_interval(Duration::from_secs(30))
                .connect_timeout(Duration::from_secs(10)))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let args = Arc::new(args);
    // Per connection group, a channel to each collector: the group's own
    // (connected now, so a wrong address fails at start), the others lazy,
    // for failing over.
    let mut channels: Arc<Vec<Channel>> = Arc::default();
    let mut home = 0;
    for i in 0..args.hosts {
        if i.is_multiple_of(args.hosts_per_connection) {
            home = (i / args.hosts_per_connection) % endpoints.len();
            let mut group = Vec::new();
            for (k, endpoint) in endpoints.iter().enumerate() {
                group.push(if k == home {
                    endpoint
                        .connect()
                        .await
                        .with_context(|| format!("connecting to {}", args.collectors[k]))?
                } else {
                    endpoint.connect_lazy()
                });
            }
            channels = Arc::new(group);
        }
        let sim = Host {
            index: i,
            template: templates[i % templates.len()].clone(),
            channels: channels.clone(),
            home,
            args: args.clone(),
            stats: stats.clone(),
            started,
        };
        tokio::spawn(sim.run());
    }
    let mut announced = false;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut last_report = Instant::now();
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = usr1.recv() => {
                let now = patchgap_proto::time::now_ms() as u64;
                stats.mark_ms.store(now, Ordering::Relaxed);
                stats.resumed.store(false, Ordering::Relaxed);
                println!("fleet-sim: mark at {now} ms (Unix)");
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
        if !announced && stats.first_acked.load(Ordering::Relaxed) == args.hosts {
            announced = true;
            println!(
                "fleet-sim: every host's first snapshot acked: {} hosts, {} processes in {:.1} s",
                args.hosts,
                processes,
                started.elapsed().as_secs_f64()
            );
        }
        if last_report.elapsed() >= args.report_every {
            last_report = Instant::now();
            let mut lat = std::mem::take(&mut *stats.latencies.lock().await);
            lat.sort_unstable();
            let q = |f: f64| {
                lat.get(((lat.len() as f64 - 1.0) * f) as usize)
                    .map_or(0.0, |&v| v as f64 / 1000.0)
            };
            println!(
                "fleet-sim: t={:.0}s connected {} first-acked {} acks {} ack ms p50 {:.1} p99 {:.1} max {:.1} pushed-back {}",
                started.elapsed().as_secs_f64(),
                stats.connected.load(Ordering::Relaxed),
                stats.first_acked.load(Ordering::Relaxed),
                stats.acks.load(Ordering::Relaxed),
                q(0.5),
                q(0.99),
                q(1.0),
                stats.pushed_back.load(Ordering::Relaxed)
            );
        }
    }
    if let Some(path) = &args.acked {
        stats.write_acked(path)?;
    }
    let lost = stats.lost.load(Ordering::Relaxed);
    println!(
        "fleet-sim: stopped: {} acks, {lost} acked messages lost",
        stats.acks.load(Ordering::Relaxed)
    );
    if lost > 0 {
        bail!("{lost} acked messages were lost");
    }
    Ok(())
}

struct Host {
    index: usize,
    template: Arc<Template>,
    /// A channel to each collector, and the one this host starts on.
    channels: Arc<Vec<Channel>>,
    home: usize,
    args: Arc<Args>,
    stats: Arc<Stats>,
    started: Instant,
}

impl Host {
    async fn run(self) {
        let mut first = true;
        let mut session = 0u32;
        let mut collector = self.home;
        let mut state = Resume::default();
        // The processes this host started and has not ended yet.
        let mut running: Vec<v1::ProcessKey> = Vec::new();
        let mut next_pid = 4_000_000u32;
        let mut new_session = true;
        loop {
            if new_session {
                session += 1;
                state = Resume::default();
                *self.stats.acked[self.index]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = (self.session_id(session), 0);
            }
            match self
                .session(
                    session,
                    collector,
                    &mut first,
                    &mut state,
                    &mut running,
                    &mut next_pid,
                )
                .await
            {
                // Went silent: comes back as a new session, as after a restart.
                Ok(()) => new_session = true,
                // A broken stream: the same session, on the next collector.
                Err(error) => {
                    new_session = false;
                    collector = (collector + 1) % self.channels.len();
                    // A busy collector's retry time, as the agent honours
                    // it; else a second.
                    let wait = patchgap_agent::failover::pushback(&error)
                        .filter(|_| !self.args.ignore_pushback);
                    if wait.is_none() {
                        eprintln!(
                            "fleet-sim: host {}: {error:#}; reconnecting to {}",
                            self.index, self.args.collectors[collector]
                        );
                    }
                    if let Some(wait) = wait {
                        self.stats.pushed_back.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn session_id(&self, session: u32) -> String {
        format!("fleet-sim-{}-{session}", self.index)
    }

    fn identity(&self) -> v1::HostIdentity {
        let mut host = self.template.host.clone();
        host.host_id = format!("fleet-sim-{:06}", self.index);
        host.hostname = format!("sim-{:06}", self.index);
        host.boot_id = format!("fleet-sim-boot-{:06}", self.index);
        host
    }

    /// The processes after the upgrade wave reached this host, or None.
    fn upgraded(&self) -> Option<Vec<v1::Process>> {
        let per_min = self.args.upgrade_hosts_per_min;
        let (name, version) = self.template.upgrade.as_ref()?;
        if per_min == 0
            || self.started.elapsed().as_secs_f64() / 60.0 * (per_min as f64) < self.index as f64
        {
            return None;
        }
        let mut out = Vec::new();
        for p in &self.template.processes {
            let mut p = p.clone();
            let mut changed = false;
            for a in &mut p.artifacts {
                if let Some(pkg) = &mut a.package
                    && &pkg.name == name
                {
                    pkg.version = version.clone();
                    changed = true;
                }
            }
            if changed {
                out.push(p);
            }
        }
        Some(out)
    }

    async fn session(
        &self,
        session: u32,
        collector: usize,
        first: &mut bool,
        state: &mut Resume,
        running: &mut Vec<v1::ProcessKey>,
        next_pid: &mut u32,
    ) -> anyhow::Result<()> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(v1::AgentMessage {
            seq: 0,
            body: Some(Body::Hello(v1::Hello {
                host: Some(self.identity()),
                agent_version: "fleet-sim".into(),
                // As a host agent with eBPF reports itself; it sends what
                // such an agent would (no containment: nothing carries it out).
                capabilities: Some(v1::Capabilities {
                    ebpf: true,
                    root: true,
                    rescan_interval_secs: self.args.delta_every.as_secs() as u32,
                    contain: false,
                    contain_reason: "simulated host (fleet-sim)".into(),
                    ..Default::default()
                }),
                session_id: self.session_id(session),
            })),
        })
        .await?;
        let mut inbound = IngestClient::new(self.channels[collector].clone())
            .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let welcome = match inbound.message().await?.and_then(|m| m.body) {
            Some(collector_message::Body::Welcome(w)) => w,
            other => bail!("expected a Welcome, got {other:?}"),
        };
        self.stats.connected.fetch_add(1, Ordering::Relaxed);
        let _connected = Decrement(&self.stats.connected);
        let acked = &self.stats.acked[self.index];
        let last_acked = acked.lock().unwrap_or_else(|e| e.into_inner()).1;
        let mut resync = welcome.resync;
        // A collector from before artifact tables reads only inline ones.
        let inline = self.args.inline_artifacts || !welcome.artifact_refs;
        if welcome.acked_seq < last_acked {
            // The database knows less of this session than was acked.
            let lost = last_acked - welcome.acked_seq;
            self.stats.lost.fetch_add(lost, Ordering::Relaxed);
            println!(
                "fleet-sim: LOST: host {} was acked up to {last_acked}, the collector's Welcome knows {}",
                self.index, welcome.acked_seq
            );
            acked.lock().unwrap_or_else(|e| e.into_inner()).1 = welcome.acked_seq;
            resync = true;
        }
        // Acks (and commands, which a simulated host does not carry out)
        // on their own task; sends wait for nothing but the channel.
        // When each message in flight was sent: Instant for the latency,
        // Unix ms for the mark.
        let sent: Arc<Mutex<HashMap<u64, (Instant, u64)>>> = Arc::default();
        let (acked_tx, mut acked_rx) = mpsc::unbounded_channel::<u64>();
        // The status the collector ended the stream with, if any: a busy
        // collector's says when to come back.
        let ended: Arc<std::sync::Mutex<Option<tonic::Status>>> = Arc::default();
        let why = {
            let ended = ended.clone();
            move |what: &str| match ended.lock().unwrap_or_else(|e| e.into_inner()).take() {
                Some(status) => anyhow::Error::new(status).context(what.to_string()),
                None => anyhow::anyhow!("{what}"),
            }
        };
        let reader = {
            let (sent, stats, pending) = (sent.clone(), self.stats.clone(), state.pending.clone());
            let index = self.index;
            let ended = ended.clone();
            tokio::spawn(async move {
                loop {
                    let m = match inbound.message().await {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(status) => {
                            *ended.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
                            break;
                        }
                    };
                    if let Some(collector_message::Body::Ack(a)) = m.body {
                        let sent = sent.lock().await.remove(&a.seq);
                        if let Some((t, _)) = sent {
                            stats
                                .latencies
                                .lock()
                                .await
                                .push(t.elapsed().as_micros() as u64);
                        }
                        {
                            let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
                            while pending.front().is_some_and(|m| m.seq <= a.seq) {
                                pending.pop_front();
                            }
                        }
                        {
                            let mut acked =
                                stats.acked[index].lock().unwrap_or_else(|e| e.into_inner());
                            acked.1 = acked.1.max(a.seq);
                        }
                        stats.ack(sent.map(|(_, ms)| ms));
                        let _ = acked_tx.send(a.seq);
                    }
                }
            })
        };
        let _reader = Abort(reader);
        let mut seq = welcome.acked_seq;
        let send = |seq: u64, body: Body| {
            let (tx, sent, why) = (tx.clone(), sent.clone(), why.clone());
            async move {
                sent.lock()
                    .await
                    .insert(seq, (Instant::now(), patchgap_proto::time::now_ms() as u64));
                let mut msg = v1::AgentMessage {
                    seq,
                    body: Some(body),
                };
                if inline {
                    msg.inline_artifacts();
                }
                tx.send(msg).await.map_err(|_| why("the stream closed"))
            }
        };
        if *first || resync || state.snapshot_unacked {
            state
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            state.snapshot_unacked = true;
            let scanned_at_ms = patchgap_proto::time::now_ms();
            let snapshot_id = format!("sim-{}-{session}-{seq}", self.index);
            let n = self.template.parts.len();
            for (i, part) in self.template.parts.iter().enumerate() {
                seq += 1;
                let mut part = part.clone();
                part.snapshot_id = snapshot_id.clone();
                part.scanned_at_ms = scanned_at_ms;
                part.part = i as u32;
                part.last = i + 1 == n;
                send(seq, Body::Snapshot(part)).await?;
            }
            running.clear();
            loop {
                match acked_rx.recv().await {
                    Some(acked) if acked >= seq => break,
                    Some(_) => {}
                    None => return Err(why("the stream ended before the snapshot was acked")),
                }
            }
            state.snapshot_unacked = false;
            if *first {
                *first = false;
                self.stats.first_acked.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            // The deltas the last stream did not get acked, again, as the
            // agent's spool sends them.
            let again: Vec<v1::AgentMessage> = {
                let mut pending = state.pending.lock().unwrap_or_else(|e| e.into_inner());
                while pending.front().is_some_and(|m| m.seq <= welcome.acked_seq) {
                    pending.pop_front();
                }
                pending.iter().cloned().collect()
            };
            for m in again {
                seq = m.seq;
                send(m.seq, m.body.expect("a pending message has a body")).await?;
            }
        }
        let silent =
            self.args.silent_every > 0 && self.index.is_multiple_of(self.args.silent_every);
        let mut upgraded = false;
        // Spread the hosts' deltas over the period.
        let offset = self
            .args
            .delta_every
            .mul_f64((self.index % 997) as f64 / 997.0);
        tokio::time::sleep(offset).await;
        let mut tick = tokio::time::interval(self.args.delta_every);
        tick.tick().await;
        // Heartbeats as the agent sends them: the host row's four fields.
        let beating = !self.args.heartbeat_every.is_zero();
        let mut beat = tokio::time::interval(if beating {
            self.args.heartbeat_every
        } else {
            Duration::from_secs(3600)
        });
        beat.tick().await;
        let mut deltas = 0u32;
        loop {
            // Acks are drained as they come; a stream the collector ended
            // (a busy one with its retry time) ends the session's loop.
            tokio::select! {
                _ = tick.tick() => {}
                _ = beat.tick(), if beating => {
                    seq += 1;
                    let now = patchgap_proto::time::now_ms();
                    let heartbeat = v1::Heartbeat {
                        sent_at_ms: now,
                        last_scan: Some(v1::ScanStats {
                            scanned_at_ms: now,
                            processes: self.template.processes.len() as u32,
                            ..Default::default()
                        }),
                        capabilities: Some(v1::Capabilities {
                            root: true,
                            rescan_interval_secs: 30,
                            ..Default::default()
                        }),
                        sense: Some(v1::SenseStats::default()),
                        health: Some(v1::AgentHealth {
                            scanning: true,
                            scan_alive_ms: now,
                            ..Default::default()
                        }),
                        ..Default::default()
                    };
                    send(seq, Body::Heartbeat(heartbeat)).await?;
                    continue;
                }
                acked = acked_rx.recv() => match acked {
                    Some(_) => continue,
                    None => return Err(why("the stream ended")),
                },
            }
            deltas += 1;
            if silent && deltas == 3 {
                // Silent: the stream goes without a word, then a new session.
                tokio::time::sleep(self.args.silent_for).await;
                return Ok(());
            }
            let now = patchgap_proto::time::now_ms();
            let mut delta = v1::Delta {
                scanned_at_ms: now,
                ..Default::default()
            };
            for key in running.drain(..) {
                delta.exits.push(v1::Exit {
                    key: Some(key),
                    exit_time_ms: now,
                });
            }
            let processes = &self.template.processes;
            for i in 0..self.args.execs.min(processes.len()) {
                let mut p = processes[(deltas as usize * 7 + i) % processes.len()].clone();
                *next_pid = next_pid.wrapping_add(1).max(4_000_000);
                let key = v1::ProcessKey {
                    pid: *next_pid,
                    start_ticks: u64::from(*next_pid) * 100 + u64::from(session),
                };
                p.key = Some(key);
                p.start_time_ms = now;
                running.push(key);
                delta.upserts.push(p);
            }
            if !upgraded && let Some(changed) = self.upgraded() {
                upgraded = true;
                delta.upserts.extend(changed);
            }
            // As the agent's wire code sends it.
            delta.share_artifacts();
            seq += 1;
            state
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(v1::AgentMessage {
                    seq,
                    body: Some(Body::Delta(delta.clone())),
                });
            send(seq, Body::Delta(delta)).await?;
        }
    }
}

/// What a host carries from a broken stream to the next, within one
/// session: the deltas sent and not acked (sent again after the Welcome),
/// and whether its snapshot still waits for its ack (then it is sent whole
/// again, under a new id, rather than kept: snapshots are large).
#[derive(Default)]
struct Resume {
    pending: Arc<std::sync::Mutex<VecDeque<v1::AgentMessage>>>,
    snapshot_unacked: bool,
}

struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}
