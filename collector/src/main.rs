//! `patchgap-collector`: the collector server.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use patchgap_collector::CollectorConfig;

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
    /// Address to serve agents and responders on.
    #[arg(long, default_value = "127.0.0.1:7373")]
    listen: SocketAddr,
    /// Directory for the database.
    #[arg(long, default_value = "/var/lib/patchgap")]
    data_dir: PathBuf,
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
    /// Only check the --scope-map file, print the result and exit (1 when it is bad).
    #[arg(long, requires = "scope_map")]
    check_scope_map: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
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
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    tracing::info!(listen = %listener.local_addr()?, data_dir = %cli.data_dir.display(), tls = tls.is_some(), "collector listening");
    let config = CollectorConfig {
        data_dir: cli.data_dir,
        max_message_bytes: cli.max_message_mib << 20,
        fresh_after: Duration::from_secs(cli.fresh_after),
        scope_map: cli.scope_map,
        tls,
        insecure_plaintext: cli.insecure_plaintext,
    };
    patchgap_collector::run(config, listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
