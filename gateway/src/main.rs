//! `gateway run` and `gateway status`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use gateway::{Config, Gateway};

/// Township DICOM store-and-forward gateway.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive DICOM, keep it durably, forward it to the hub.
    Run {
        /// TOML configuration file (GATEWAY_* environment variables override it).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Show the queue, the oldest waiting item, the last error and the quarantine.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Data directory of the gateway to inspect.
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    data_dir: Option<PathBuf>,
    /// Take the data directory from this configuration file (and the environment).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Run { config } => runtime.block_on(run(config)),
        Command::Status(args) => runtime.block_on(status(args)),
    }
}

async fn run(config_file: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config_file.as_deref())?;
    let gateway = Gateway::start(config)
        .await
        .context("starting the gateway")?;
    {
        // The one line on stdout: scripts and tests wait for it to learn the port. They
        // read it as space-separated key=value words, so the report page and the HL7
        // listener are appended as more words (only when they listen).
        let mut out = std::io::stdout().lock();
        let reports = gateway
            .reports_addr()
            .map(|addr| format!(" reports=http://{addr}"))
            .unwrap_or_default();
        let hl7 = gateway
            .hl7_addr()
            .map(|addr| format!(" hl7={addr}"))
            .unwrap_or_default();
        writeln!(
            out,
            "gateway ready: dicom={} ae={}{reports}{hl7}",
            gateway.dicom_addr(),
            gateway.ae_title()
        )?;
        out.flush()?;
    }
    wait_for_signal().await?;
    tracing::info!("shutting down");
    gateway.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    // Only the data directory and the site label are taken from the configuration:
    // status never reads (or shows) the hub key.
    let (data_dir, site) = match args.data_dir {
        Some(dir) => (dir, None),
        None => {
            let config = Config::load(args.config.as_deref())?;
            (config.data_dir, Some(config.site))
        }
    };
    let mut report = gateway::status::collect(&data_dir).await?;
    report.site = site;
    let text = if args.json {
        format!("{}\n", serde_json::to_string_pretty(&report)?)
    } else {
        report.to_string()
    };
    // `gateway status | head` closes the pipe early: that is not an error.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
