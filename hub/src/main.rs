//! `hub`: the county hub server and its admin commands.

use std::net::TcpListener;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
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
    }
}

async fn serve(config_file: Option<PathBuf>, listen: Option<String>) -> anyhow::Result<()> {
    let mut config = HubConfig::load(config_file.as_deref()).context("reading configuration")?;
    if let Some(listen) = listen {
        config.listen = listen;
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let storage_config = config.storage().context("storage configuration")?;
    let storage = storage::Storage::open(&storage_config)
        .await
        .context("opening storage")?;
    let listener =
        TcpListener::bind(&config.listen).with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let server = hub::build_server(listener, storage.clone(), &config)?;
    tracing::info!(%addr, database = %redact(&storage_config.database_url), "hub started");
    // Tests and scripts read this line to learn the port.
    println!("hub ready: http=http://{addr}");
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
