//! `patchgap-agent`: the per-host agent.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use patchgap_agent::{AgentConfig, ScanConfig, Scanner};

#[derive(Parser)]
#[command(
    name = "patchgap-agent",
    version,
    about = "patchgap host agent: scans /proc and streams the inventory to the collector"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// `Run` carries every flag and `Scan` three: parsed once at start, so the
// size difference costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Scan continuously and stream to a collector.
    ///
    /// Example: patchgap-agent run --collector https://10.0.0.5:7373 --ca pki/ca.crt
    ///   --cert pki/agent-web-1.crt --key pki/agent-web-1.key --label cluster=prod
    Run {
        /// A TOML file of settings for this command: each key is one of its
        /// long flags (`interval = 30`, `no-ebpf = true`,
        /// `label = { cluster = "prod" }`). A flag on the command line, or its
        /// environment variable, wins over the key. The package's is
        /// /etc/patchgap/agent.toml.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The collector's address: https://HOST:PORT (TLS, never plaintext),
        /// http://HOST:PORT (plaintext), or HOST:PORT (https:// when --ca is given).
        /// Several comma-separated addresses (collectors sharing one
        /// PostgreSQL): the agent streams to the first that answers and
        /// moves to the next when a connect fails or a stream breaks;
        /// nothing unacked is lost in the move.
        #[arg(long, env = "PATCHGAP_COLLECTOR", default_value = "127.0.0.1:7373")]
        collector: String,
        /// The CA that signed the collector's certificate (PEM).
        #[arg(long, env = "PATCHGAP_CA")]
        ca: Option<PathBuf>,
        /// This agent's certificate (`patchgap pki issue agent --host NAME`);
        /// the collector takes only Hellos for the host it names. Re-read at
        /// each reconnect.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// This agent's private key (PEM).
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// The procfs root to scan (a host /proc mounted elsewhere works).
        #[arg(long, default_value = "/proc")]
        proc_root: PathBuf,
        /// Where the container runtimes' metadata lives (the host's root).
        #[arg(long, default_value = "/")]
        runtime_root: PathBuf,
        /// Seconds between full rescans.
        #[arg(long, default_value_t = 30)]
        interval: u64,
        /// Operator labels for this host, as key=value (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Scan /proc only: no eBPF sensing.
        #[arg(long)]
        no_ebpf: bool,
        /// eBPF ring buffer size in MiB (a power of two). Its pages count
        /// twice in the agent's RSS; 1 MiB holds about 3,500 events, and the
        /// kernel wakes the reader for every 64 KiB of them.
        #[arg(long, default_value_t = 1)]
        ring_mib: u32,
        /// Do not watch library opens in the kernel.
        #[arg(long)]
        no_opens: bool,
        /// Do not watch connects in the kernel.
        #[arg(long)]
        no_connects: bool,
        /// Do not capture DNS answers (packets from port 53 delivered to
        /// the host's sockets): connections then carry no names. Capture
        /// costs every received packet a few loads in the kernel.
        #[arg(long)]
        no_dns: bool,
        /// Where the agent keeps its state: the spool of messages the
        /// collector has not acked yet (resent after a restart), its
        /// session, and the record of the cgroups it froze (so that a
        /// restarted agent can thaw them). Made 0700.
        #[arg(
            long,
            env = "PATCHGAP_STATE_DIR",
            default_value = "/var/lib/patchgap-agent"
        )]
        state_dir: PathBuf,
        /// The spool's size cap in MiB; past it the oldest unacked messages
        /// are dropped (counted in coverage).
        #[arg(long, default_value_t = 256)]
        spool_mib: u64,
        /// The agent's CPU cap, in percent of one core, averaged over a
        /// minute; over it the agent stops watching opens, then connects.
        /// 0 turns the CPU cap off.
        #[arg(long, default_value_t = 5.0)]
        max_cpu_percent: f64,
        /// The agent's resident memory cap in MB; over it the agent sheds
        /// the same way. 0 turns it off.
        #[arg(long, default_value_t = 200)]
        max_rss_mb: u64,
        /// Where the collector's containments are pinned in bpffs. One
        /// directory per host: the agent makes what is there equal to the
        /// collector's set, and a pinned isolation outlives the agent.
        #[arg(long, default_value = patchgap_agent::contain::DEFAULT_BPFFS_DIR)]
        contain_dir: PathBuf,
        /// Carry out no containment: no isolation, freeze or kill (the
        /// capabilities say so).
        #[arg(long)]
        no_contain: bool,
    },
    /// Print one full inventory of this host as JSON and exit. Needs no collector.
    ///
    /// Example: patchgap-agent scan | jq '.processes[] | select(.artifacts[].stale)'
    Scan {
        /// The procfs root to scan.
        #[arg(long, default_value = "/proc")]
        proc_root: PathBuf,
        /// Where the container runtimes' metadata lives (the host's root).
        #[arg(long, default_value = "/")]
        runtime_root: PathBuf,
        /// Operator labels for this host, as key=value (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("label {s:?} is not key=value")),
    }
}

fn main() -> anyhow::Result<()> {
    // glibc gives each thread that allocates its own arena; a handful of
    // runtime threads would then hold several partly used heaps. Two
    // arenas keep the agent's RSS close to what it actually uses.
    // SAFETY: mallopt has no preconditions; called before other threads allocate much.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: under systemd, stderr is the journal,
        // where escape codes are noise (and break `grep key=value`).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // The config file's keys become flags before the real parse, so clap
    // checks them as it checks flags (patchgap-config).
    let args = patchgap_config::expand(Cli::command(), std::env::args_os().collect())?;
    match Cli::parse_from(args).command {
        Command::Scan {
            proc_root,
            runtime_root,
            labels,
        } => scan(ScanConfig {
            proc_root,
            labels: labels.into_iter().collect(),
            runtime_root,
        }),
        run @ Command::Run { .. } => {
            // One async worker: it drains the ring and keeps the collector's
            // stream, small work that a second worker only made the two wake
            // each other to steal (the scan loop and the watchdog have
            // threads of their own, and blocking work goes to the blocking
            // pool). The default is one per core.
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(run_agent(run))
        }
    }
}

/// `patchgap-agent scan`: one inventory on stdout. No async runtime: the
/// scan is one thread's work from start to end, and a responder may run it
/// on a host in trouble, where the threads of a runtime are cost for
/// nothing.
fn scan(config: ScanConfig) -> anyhow::Result<()> {
    let inv = Scanner::single_scan(config).scan();
    // Buffered: stdout's own buffer writes each line on its own,
    // one write(2) per line of a JSON that runs to megabytes.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let written = serde_json::to_writer_pretty(&mut out, &inv)
        .map_err(std::io::Error::from)
        .and_then(|()| std::io::Write::write_all(&mut out, b"\n"))
        .and_then(|()| std::io::Write::flush(&mut out));
    // The process ends here: freeing the inventory's hundred thousand
    // allocations one by one would cost a few percent of the scan for
    // memory the exit returns anyway.
    std::mem::forget(inv);
    match written {
        // `patchgap-agent scan | head` is fine.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing the inventory"),
    }
}

/// `patchgap-agent run`, inside the async runtime.
async fn run_agent(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Scan { .. } => unreachable!("scan runs without the async runtime"),
        Command::Run {
            config: _,
            collector,
            ca,
            cert,
            key,
            proc_root,
            runtime_root,
            interval,
            labels,
            no_ebpf,
            ring_mib,
            no_opens,
            no_connects,
            no_dns,
            state_dir,
            spool_mib,
            max_cpu_percent,
            max_rss_mb,
            contain_dir,
            no_contain,
        } => {
            anyhow::ensure!(spool_mib > 0, "--spool-mib must be at least 1");
            anyhow::ensure!(
                (0.0..=100.0 * 1024.0).contains(&max_cpu_percent),
                "--max-cpu-percent must be between 0 and the machine's cores x 100"
            );
            anyhow::ensure!(interval > 0, "--interval must be at least 1 second");
            anyhow::ensure!(
                ring_mib.is_power_of_two(),
                "--ring-mib must be a power of two"
            );
            let tls = patchgap_agent::tls::ClientTls { ca, cert, key };
            let collectors = patchgap_agent::failover::Collectors::parse(&collector, |addr| {
                patchgap_agent::tls::collector_url(addr, &tls)
            })?;
            // A wrong scheme or an unreadable file stops the agent now,
            // rather than in a retry loop.
            for url in collectors.all() {
                patchgap_agent::tls::endpoint(url, &tls)?;
            }
            let collector = collectors.joined();
            let config = AgentConfig {
                collector,
                tls,
                scan: ScanConfig {
                    proc_root,
                    labels: labels.into_iter().collect(),
                    runtime_root,
                },
                interval: Duration::from_secs(interval),
                ebpf: !no_ebpf,
                sense: patchgap_agent::sense::SenseConfig {
                    ring_bytes: ring_mib << 20,
                    opens: !no_opens,
                    connects: !no_connects,
                    dns: !no_dns,
                },
                spool: patchgap_agent::spool::SpoolConfig {
                    dir: Some(state_dir),
                    limit_bytes: spool_mib << 20,
                    ..Default::default()
                },
                watchdog: patchgap_agent::watchdog::WatchdogConfig {
                    cpu_percent: max_cpu_percent,
                    rss_bytes: max_rss_mb * 1_000_000,
                    ..Default::default()
                },
                contain: (!no_contain).then_some(contain_dir),
                ..AgentConfig::default()
            };
            tracing::info!(collector = %config.collector, interval, "agent starting");
            patchgap_agent::run(config, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use clap::{CommandFactory, Parser};

    use super::{Cli, Command};

    const PACKAGED: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/config/agent.toml"
    );

    /// Clap's own checks of the flags.
    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
    }

    /// The package's /etc/patchgap/agent.toml is read by the real parser,
    /// every key it sets lands where it should, and a flag still wins.
    #[test]
    fn the_packaged_config_is_what_the_agent_reads() {
        let args = |extra: &[&str]| {
            let mut a: Vec<OsString> = ["patchgap-agent", "run", "--config", PACKAGED]
                .map(OsString::from)
                .to_vec();
            a.extend(extra.iter().map(OsString::from));
            Cli::parse_from(patchgap_config::expand(Cli::command(), a).unwrap())
        };
        let Command::Run {
            collector,
            interval,
            state_dir,
            ..
        } = args(&[]).command
        else {
            panic!("not run")
        };
        assert_eq!(collector, "127.0.0.1:7373");
        assert_eq!(interval, 30);
        assert_eq!(state_dir, std::path::Path::new("/var/lib/patchgap-agent"));
        let Command::Run { interval, .. } = args(&["--interval", "5"]).command else {
            panic!("not run")
        };
        assert_eq!(interval, 5);
    }

    /// Every flag of `run` is documented in the packaged file, set or as a
    /// commented default, so a new flag cannot be forgotten there.
    #[test]
    fn the_packaged_config_documents_every_flag() {
        let text = std::fs::read_to_string(PACKAGED).unwrap();
        let cmd = Cli::command();
        let run = cmd.find_subcommand("run").unwrap();
        for key in patchgap_config::known_keys(run) {
            let documented = text.lines().any(|l| {
                let l = l.trim_start_matches('#').trim_start();
                l.starts_with(&format!("{key} ="))
            });
            assert!(
                documented,
                "packaging/config/agent.toml does not document `{key}`"
            );
        }
    }
}
