//! `patchgap-collector`: the collector server.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{CommandFactory, Parser};
use patchgap_collector::{
    CollectorConfig,
    auth::{Scope, TokenPolicy, parse_ttl},
};

/// patchgap collector: holds the runtime truth and answers queries.
///
/// Example: patchgap-collector --listen 0.0.0.0:7373 --data-dir /var/lib/patchgap
///   --tls-cert pki/collector.crt --tls-key pki/collector.key --client-ca pki/ca.crt
///
/// Plaintext is served on loopback only; any other address needs TLS
/// (`patchgap pki init` and `patchgap pki issue collector` make the files).
#[derive(Parser)]
#[command(name = "patchgap-collector", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// A TOML file of settings for serving: each key is one of the long
    /// flags below (`listen = "127.0.0.1:7373"`, `require-tokens = true`).
    /// A flag on the command line wins over the key. The package's is
    /// /etc/patchgap/collector.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to serve agents and responders on.
    #[arg(long, default_value = "127.0.0.1:7373")]
    listen: SocketAddr,
    /// Directory for the database (SQLite, without --store) and the
    /// token signing key.
    #[arg(long, default_value = "/var/lib/patchgap")]
    data_dir: PathBuf,
    /// Keep the fleet in PostgreSQL instead of SQLite:
    /// postgres://USER@HOST:PORT/DB. A password is better kept in
    /// PGPASSWORD, used when the URL has none; it is never logged. Without
    /// it, SQLite in --data-dir.
    #[arg(long, value_name = "URL", value_parser = parse_store)]
    store: Option<patchgap_collector::store::postgres::PgTarget>,
    /// Seconds since its last report after which a host counts as stale.
    #[arg(long, default_value_t = 90)]
    fresh_after: u64,
    /// The largest message accepted, in MiB.
    #[arg(long, default_value_t = 16)]
    max_message_mib: usize,
    /// A data-scope mapping file: one rule per line, `SELECTOR... => CLASSIFICATION [writes_to=A,B]`.
    /// It is reloaded when it changes; a bad reload keeps the previous mapping.
    #[arg(long)]
    scope_map: Option<PathBuf>,
    /// The response policy: risk tiers, their actions, guards and
    /// exceptions (TOML; `patchgap policy check FILE` validates one, and
    /// packaging/policy.example.toml is the built-in default written out).
    /// Without it the built-in three tiers apply. SIGHUP reloads it; a file
    /// that fails to reload leaves the previous policy in force.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    #[command(flatten)]
    egress: patchgap_collector::egress::flags::EgressFlags,
    #[command(flatten)]
    retention: patchgap_collector::retention::RetentionFlags,
    /// The collector's TLS certificate (PEM; `patchgap pki issue collector`).
    /// It is reloaded when it changes, without dropping streams.
    #[arg(long, requires_all = ["tls_key", "client_ca"])]
    tls_cert: Option<PathBuf>,
    /// The collector's TLS private key (PEM).
    #[arg(long, requires_all = ["tls_cert", "client_ca"])]
    tls_key: Option<PathBuf>,
    /// The CA that agents' and clients' certificates must chain to (PEM;
    /// `patchgap pki init` makes it). Agents must present a certificate.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    client_ca: Option<PathBuf>,
    /// Serve plaintext on a non-loopback address. Anyone who can reach it can
    /// then send any host's inventory; warned at every start.
    #[arg(long)]
    insecure_plaintext: bool,
    /// Also serve HTTP on this address: the Kubernetes admission webhook
    /// (`POST /v1/admission`, the deploy gate). HTTPS with the TLS
    /// certificate above; plaintext on loopback only, as for --listen.
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
    /// The HTTP listener takes only clients that present a CLI certificate
    /// of the client CA (`patchgap pki issue cli --name kube-apiserver`;
    /// kube-apiserver presents it through its AdmissionConfiguration
    /// kubeconfig). Needs the TLS flags.
    #[arg(long, requires = "http_listen")]
    http_client_cert: bool,
    /// Only check the --scope-map file, print the result and exit (1 when it is bad).
    #[arg(long, requires = "scope_map")]
    check_scope_map: bool,
    /// Every query, import and push needs a bearer token with its scope.
    /// Without it only admin calls (tokens, the audit log) need one.
    #[arg(long)]
    require_tokens: bool,
    /// Critical paths (approve and admin calls: tokens, the audit log) also
    /// need a CLI client certificate (`patchgap pki issue cli`), not only a
    /// token. Needs TLS.
    #[arg(long, requires = "tls_cert")]
    critical_needs_cert: bool,
    /// The lifetime of a token issued without --ttl.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    token_ttl: Duration,
    /// The longest lifetime a token may be issued with.
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    token_max_ttl: Duration,
    /// Connections open at once, at most. Descriptors are also kept below
    /// the process's limit (RLIMIT_NOFILE): above a high-water mark, a
    /// connection that has sent no request is closed to make room, else
    /// the new one is refused (logged).
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Close a connection after this long without traffic (HTTP/2 keepalive
    /// pings do not count); agents send a heartbeat every 10 s.
    #[arg(long, default_value = "5m", value_parser = parse_ttl)]
    idle_timeout: Duration,
    /// Prometheus Alertmanager to page through (its base URL, such as
    /// http://127.0.0.1:9093): incidents whose plan opens a sev1 or sev2
    /// are posted to /api/v2/alerts while active, and resolved when they
    /// close. https, or http to loopback only.
    #[arg(long, value_name = "URL", value_parser = parse_outbound_url)]
    alertmanager: Option<String>,
    /// How often an active incident's alerts are sent again; keep it below
    /// Alertmanager's resolve_timeout (5m by default).
    #[arg(long, default_value = "1m", value_parser = parse_ttl)]
    alert_interval: Duration,
    /// The collector's public URL, for the link back in webhook events and
    /// alerts (`URL/incidents/INC-7`). Without it the link is the CLI
    /// command that shows the incident.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Multiplies every outbound wait (the webhook retry schedule,
    /// retry-after, the alert interval): 1 in production; tests compress
    /// the 27-hour retry schedule with 0.001.
    #[arg(long, default_value_t = 1.0, hide = true)]
    delivery_time_scale: f64,
    /// Verification's interval, K and evidence levels: each flag given
    /// wins over the policy file's [verify] table, which wins over the
    /// built-in (1m, 3, loaded).
    #[command(flatten)]
    verify: patchgap_collector::response::verify::settings::VerifyFlags,
}

fn parse_store(s: &str) -> Result<patchgap_collector::store::postgres::PgTarget, String> {
    use patchgap_collector::store::postgres::PgTarget;
    if !PgTarget::is_url(s) {
        return Err("expected postgres://USER@HOST:PORT/DB".into());
    }
    PgTarget::new(s).map_err(|e| e.to_string())
}

/// Opens the store the flags name: PostgreSQL with --store, else SQLite in
/// the data directory. Off the async workers (a PostgreSQL client blocks).
async fn open_store(
    store: Option<patchgap_collector::store::postgres::PgTarget>,
    data_dir: &std::path::Path,
) -> anyhow::Result<patchgap_collector::SharedStore> {
    let dir = data_dir.to_path_buf();
    Ok(match store {
        Some(target) => {
            let shown = target.to_string();
            std::sync::Arc::new(
                tokio::task::spawn_blocking(move || {
                    patchgap_collector::store::postgres::PgStore::connect(&target)
                })
                .await?
                .with_context(|| format!("opening the store {shown}"))?,
            )
        }
        None => std::sync::Arc::new(
            tokio::task::spawn_blocking(move || patchgap_collector::SqliteStore::open(&dir))
                .await?
                .with_context(|| format!("opening the store in {}", data_dir.display()))?,
        ),
    })
}

fn parse_outbound_url(s: &str) -> Result<String, String> {
    patchgap_collector::response::policy::endpoint::check_url(s).map(|_| s.to_string())
}

#[derive(clap::Subcommand)]
enum Command {
    /// Check the store with the bundled SQLite and exit: SQLite's full
    /// integrity_check and foreign_key_check, the schema version, and the
    /// files' modes. Exits 1 naming every problem. Only reads, so it is safe
    /// beside a running collector.
    ///
    /// Example: patchgap-collector check --data-dir /var/lib/patchgap
    Check {
        /// The collector's data directory.
        #[arg(long, default_value = "/var/lib/patchgap")]
        data_dir: PathBuf,
    },
    /// Tokens, minted on the collector's host from its data directory.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(clap::Subcommand)]
enum TokenCommand {
    /// Mint a token (the first admin token) with the collector's key, and
    /// print it. The collector may be running.
    ///
    /// Example: patchgap-collector token issue --data-dir /var/lib/patchgap --subject alice --scope admin
    Issue {
        /// The collector's data directory (its key and database).
        #[arg(long, default_value = "/var/lib/patchgap")]
        data_dir: PathBuf,
        /// The collector's PostgreSQL store, when it has one (as
        /// `--store` of the server).
        #[arg(long, value_name = "URL", value_parser = parse_store)]
        store: Option<patchgap_collector::store::postgres::PgTarget>,
        /// Who the token is for.
        #[arg(long)]
        subject: String,
        /// Comma-separated scopes: read, ingest-sbom, advisories, respond, approve, admin.
        #[arg(long)]
        scope: String,
        /// Its lifetime (90s, 30m, 1h, 1d); at most 24h.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
        /// Print the token and its id as JSON.
        #[arg(short, long)]
        json: bool,
    },
}

/// `patchgap-collector token issue`.
async fn issue_local(command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Issue {
        data_dir,
        store,
        subject,
        scope,
        ttl,
        json,
    } = command;
    let scope = Scope::parse_list(&scope).map_err(|e| anyhow::anyhow!("--scope: {e}"))?;
    let store = open_store(store, &data_dir).await?;
    let (token, record) = patchgap_collector::auth::issue_local(
        &data_dir,
        store.as_ref(),
        &subject,
        &scope,
        Some(ttl),
        TokenPolicy::default(),
    )?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "token": token,
                "id": record.id,
                "subject": record.subject,
                "scopes": record.scopes,
                "expires_ms": record.expires_ms,
            })
        );
    } else {
        eprintln!(
            "token {} for {} ({}), expires in {}s; keep it secret:",
            record.id,
            record.subject,
            record.scopes.join(","),
            ttl.as_secs()
        );
        println!("{token}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
    let cli = Cli::parse_from(args);
    match cli.command {
        Some(Command::Token { command }) => return issue_local(command).await,
        Some(Command::Check { data_dir }) => {
            let report = patchgap_collector::store::sqlite::file::check(&data_dir);
            println!(
                "{}: schema {} (this collector: {})",
                report.path.display(),
                report
                    .schema_version
                    .map_or_else(|| "unknown".to_string(), |v| v.to_string()),
                report.known_version
            );
            for n in &report.notes {
                println!("note: {n}");
            }
            for p in &report.problems {
                println!("problem: {p}");
            }
            if report.ok() {
                println!("ok");
                return Ok(());
            }
            eprintln!(
                "error: {} problem(s) in {}",
                report.problems.len(),
                report.path.display()
            );
            std::process::exit(1);
        }
        None => {}
    }
    if cli.check_scope_map {
        let path = cli.scope_map.as_deref().expect("clap requires --scope-map");
        return match patchgap_collector::ScopeMap::load(path) {
            Ok(map) => {
                println!("{}: {} rule(s), ok", path.display(), map.rules().len());
                Ok(())
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        };
    }
    let tls = match (cli.tls_cert, cli.tls_key, cli.client_ca) {
        (Some(cert), Some(key), Some(client_ca)) => Some(patchgap_collector::TlsFiles {
            cert,
            key,
            client_ca,
        }),
        _ => None,
    };
    // Refused before binding, so a wrong address opens no socket at all.
    if let Err(e) =
        patchgap_collector::check_listen(cli.listen, tls.is_some(), cli.insecure_plaintext)
    {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    if let Some(addr) = cli.http_listen
        && let Err(e) =
            patchgap_collector::check_listen(addr, tls.is_some(), cli.insecure_plaintext)
    {
        eprintln!("error: --http-listen: {e}");
        std::process::exit(1);
    }
    if let Err(e) = cli.verify.check() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    // A bad policy file stops the start before anything is opened, naming
    // file:line:column for each problem.
    if let Some(path) = &cli.policy
        && let Err(e) = patchgap_collector::response::policy::state::load_file(path)
    {
        eprintln!("error: response policy not loaded:\n{e}");
        std::process::exit(1);
    }
    // The store is opened and checked before the port: a store that is
    // corrupt or not ours stops the start, naming the file, and nothing
    // ever listens on it.
    let store_name = match &cli.store {
        Some(target) => target.to_string(),
        None => "sqlite".to_string(),
    };
    let store = open_store(cli.store, &cli.data_dir).await?;
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    tracing::info!(listen = %listener.local_addr()?, data_dir = %cli.data_dir.display(), store = %store_name, tls = tls.is_some(), "collector listening");
    let config = CollectorConfig {
        data_dir: cli.data_dir,
        max_message_bytes: cli.max_message_mib << 20,
        fresh_after: Duration::from_secs(cli.fresh_after),
        scope_map: cli.scope_map,
        policy: cli.policy,
        egress: cli.egress,
        retention: cli.retention,
        tls,
        insecure_plaintext: cli.insecure_plaintext,
        http_listen: cli.http_listen,
        http_client_cert: cli.http_client_cert,
        require_tokens: cli.require_tokens,
        critical_needs_cert: cli.critical_needs_cert,
        token_policy: TokenPolicy {
            default_ttl: cli.token_ttl,
            max_ttl: cli.token_max_ttl,
        },
        limits: patchgap_collector::conn::ConnLimits {
            max_connections: cli.max_connections.max(1),
            idle_timeout: cli.idle_timeout,
            ..Default::default()
        },
        deliver: patchgap_collector::response::deliver::DeliverConfig {
            time_scale: if cli.delivery_time_scale > 0.0 {
                cli.delivery_time_scale
            } else {
                1.0
            },
            link_base: cli.public_url,
            alertmanager: cli.alertmanager,
            alert_interval: cli.alert_interval,
            ..Default::default()
        },
        verify: patchgap_collector::response::verify::Settings {
            fresh_after: Duration::from_secs(cli.fresh_after),
            ..Default::default()
        },
        verify_flags: cli.verify,
        ..Default::default()
    };
    anyhow::ensure!(
        config.token_policy.default_ttl <= config.token_policy.max_ttl,
        "--token-ttl is longer than --token-max-ttl"
    );
    patchgap_collector::serve(config, store, listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Clap's own checks of the flags (duplicate names, types that do not
    /// match their parsers), which otherwise fail only when run.
    #[test]
    fn flags_are_consistent() {
        super::Cli::command().debug_assert();
    }

    const PACKAGED: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/config/collector.toml"
    );

    fn parse(args: &[&str]) -> super::Cli {
        use clap::Parser;
        let args = args.iter().map(std::ffi::OsString::from).collect();
        super::Cli::parse_from(patchgap_config::expand(super::Cli::command(), args).unwrap())
    }

    /// The package's /etc/patchgap/collector.toml is read by the real
    /// parser: its data directory replaces the built-in one, a flag still
    /// wins, and a subcommand does not take the server's settings.
    #[test]
    fn the_packaged_config_is_what_the_collector_reads() {
        let cli = parse(&["patchgap-collector", "--config", PACKAGED]);
        assert_eq!(
            cli.data_dir,
            std::path::Path::new("/var/lib/patchgap-collector")
        );
        assert_eq!(cli.listen.to_string(), "127.0.0.1:7373");
        assert!(!cli.require_tokens);
        let cli = parse(&[
            "patchgap-collector",
            "--config",
            PACKAGED,
            "--data-dir",
            "/srv/pg",
        ]);
        assert_eq!(cli.data_dir, std::path::Path::new("/srv/pg"));
        let cli = parse(&["patchgap-collector", "--config", PACKAGED, "check"]);
        assert!(matches!(cli.command, Some(super::Command::Check { .. })));
    }

    /// `--store` (and the `store` key) takes only a PostgreSQL URL, and
    /// what it parsed prints without the password.
    #[test]
    fn store_takes_a_postgres_url() {
        let cli = parse(&[
            "patchgap-collector",
            "--store",
            "postgres://patchgap:s3cret@db.example:5432/fleet",
        ]);
        let store = cli.store.expect("parsed");
        assert_eq!(
            store.to_string(),
            "postgres://patchgap:***@db.example:5432/fleet"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("collector.toml");
        std::fs::write(
            &file,
            "store = \"postgres://patchgap@127.0.0.1:5432/fleet\"\n",
        )
        .unwrap();
        let cli = parse(&["patchgap-collector", "--config", file.to_str().unwrap()]);
        assert_eq!(
            cli.store.map(|s| s.to_string()).as_deref(),
            Some("postgres://patchgap@127.0.0.1:5432/fleet")
        );
        use clap::Parser;
        let refused = super::Cli::try_parse_from(["patchgap-collector", "--store", "/var/lib/x"]);
        assert!(refused.is_err(), "a path is not a store URL");
    }

    /// Every flag of the server is documented in the packaged file, set or
    /// as a commented default.
    #[test]
    fn the_packaged_config_documents_every_flag() {
        let text = std::fs::read_to_string(PACKAGED).unwrap();
        for key in patchgap_config::known_keys(&super::Cli::command()) {
            let documented = text.lines().any(|l| {
                let l = l.trim_start_matches('#').trim_start();
                l.starts_with(&format!("{key} ="))
            });
            assert!(
                documented,
                "packaging/config/collector.toml does not document `{key}`"
            );
        }
    }
}
