//! `viewer-api`: the DICOMweb read side as its own process (scale-out deployment).

use std::path::PathBuf;

use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use clap::Parser;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use viewer_api::ViewerState;

/// Configuration: defaults, a TOML file, then `VIEWER_*` environment variables.
#[derive(Debug, Serialize, Deserialize)]
#[serde(default)]
struct Config {
    listen: String,
    database_url: String,
    blob_url: String,
    max_db_connections: u32,
    /// Font with Chinese glyphs for printed reports (default: the usual Debian paths).
    report_font: Option<std::path::PathBuf>,
    /// Name printed at the head of reports.
    hospital_name: String,
    /// Sessions and the audit's client address (`[access]`, `VIEWER_ACCESS__TRUSTED_PROXIES`).
    access: access::AccessConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8081".into(),
            database_url: "sqlite://./data/hub/hub.db".into(),
            blob_url: "./data/hub/blobs".into(),
            max_db_connections: 8,
            report_font: None,
            hospital_name: "县人民医院 区域诊断中心".into(),
            access: access::AccessConfig::default(),
        }
    }
}

#[derive(Parser)]
#[command(name = "viewer-api", about = "DICOMweb read side of the county hub")]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
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
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    if let Some(file) = &cli.config {
        fig = fig.merge(Toml::file_exact(file));
    }
    let config: Config = fig
        .merge(Env::prefixed("VIEWER_").split("__"))
        .extract()
        .context("configuration")?;
    let storage = storage::Storage::open(&storage::StorageConfig {
        database_url: config.database_url.clone(),
        max_connections: config.max_db_connections,
        blobs: storage::BlobConfig::from_url(&config.blob_url)?,
    })
    .await
    .context("opening storage")?;
    let access = web::Data::new(access::Access::new(
        storage.db.clone(),
        config.access.clone(),
    ));
    let state = web::Data::new(ViewerState::new(
        storage,
        config.report_font.as_deref(),
        &config.hospital_name,
    ));
    let listener = std::net::TcpListener::bind(&config.listen)
        .with_context(|| format!("binding {}", config.listen))?;
    println!("viewer-api ready: http=http://{}", listener.local_addr()?);
    HttpServer::new(move || {
        App::new()
            // Sessions and keys are the hub's; this process checks them the same way.
            .wrap(actix_web::middleware::from_fn(access::guard))
            .app_data(state.clone())
            .app_data(access.clone())
            .app_data(viewer_api::error::json_config(64 * 1024))
            .app_data(viewer_api::error::query_config())
            .app_data(viewer_api::error::path_config())
            .configure(viewer_api::configure)
            .configure(viewer_api::reports::configure)
            .configure(viewer_api::ecg::configure)
            .configure(viewer_api::webui::configure)
            .route(
                "/healthz",
                web::get().to(|| async { HttpResponse::Ok().body("ok") }),
            )
    })
    .listen(listener)?
    .run()
    .await?;
    Ok(())
}
