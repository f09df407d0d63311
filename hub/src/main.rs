//! `hub`: the county hub server and its admin commands.

use std::net::TcpListener;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hub::admin::cli::{AdminCommand, AuditCommand};
use hub::HubConfig;

#[derive(Parser)]
#[command(
    name = "hub",
    about = "County diagnostic hub: DICOMweb ingest, index and read side"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (and, by default, the DICOMweb read side in the same process).
    Serve {
        /// TOML configuration file; `HUB_*` environment variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen address, overriding the configuration (e.g. 127.0.0.1:0 for any free port).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Manage sites, users and gateway keys.
    Admin {
        /// TOML configuration file (the hub's).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Check or export the audit trail.
    Audit {
        /// TOML configuration file (the hub's).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, listen } => serve(config, listen).await,
        Command::Admin { config, command } => {
            let (_, storage) = open(config.as_deref()).await?;
            let result = hub::admin::cli::admin(&storage.db, command).await;
            storage.db.close().await;
            result
        }
        Command::Audit { config, command } => {
            let (_, storage) = open(config.as_deref()).await?;
            let intact = hub::admin::cli::audit(&storage.db, command).await;
            storage.db.close().await;
            if !intact? {
                std::process::exit(2);
            }
            Ok(())
        }
    }
}

/// Load the configuration and open storage (running migrations).
async fn open(
    config_file: Option<&std::path::Path>,
) -> anyhow::Result<(HubConfig, storage::Storage)> {
    let config = HubConfig::load(config_file).context("reading configuration")?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let storage_config = config.storage().context("storage configuration")?;
    let storage = storage::Storage::open(&storage_config)
        .await
        .with_context(|| format!("opening storage ({})", redact(&storage_config.database_url)))?;
    Ok((config, storage))
}

async fn serve(config_file: Option<PathBuf>, listen: Option<String>) -> anyhow::Result<()> {
    let (mut config, storage) = open(config_file.as_deref()).await?;
    if let Some(listen) = listen {
        config.listen = listen;
    }
    let tls = match config.tls_files().map_err(anyhow::Error::msg)? {
        Some((cert, key)) => {
            Some(hub::tls::server_config(cert, key).context("HTTPS configuration")?)
        }
        None => None,
    };
    let listener =
        TcpListener::bind(&config.listen).with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    if tls.is_none() && !addr.ip().is_loopback() && !config.plain_http_behind_proxy {
        anyhow::bail!(
            "refusing plain HTTP on {addr}: patient data would cross the network unencrypted; \
             set tls_cert_file and tls_key_file, or plain_http_behind_proxy = true behind a TLS proxy"
        );
    }
    if let Some(file) = hub::admin::bootstrap_admin(&storage.db, &config.data_dir).await? {
        println!(
            "hub first start: created user \"admin\"; its password is in {} (log in, then change it: hub admin reset-password admin)",
            file.display()
        );
    }
    let key_file = config
        .signing_key_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join("report-signing.key"));
    let signer = hub::signing::ReportSigner::open(&key_file, &storage.db)
        .await
        .context("report signing key")?;
    tracing::info!(key_id = %signer.key_id, "reports are signed with this key");
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = hub::build_server(
        listener,
        storage.clone(),
        &config,
        tls,
        std::sync::Arc::new(signer),
    )?;
    tracing::info!(%addr, scheme, "hub started");
    // Tests and scripts read this line to learn the port.
    println!("hub ready: {scheme}={scheme}://{addr}");
    server.await?;
    storage.db.close().await;
    Ok(())
}

/// A database URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}
