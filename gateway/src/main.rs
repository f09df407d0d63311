//! `gateway run`, `gateway status` and `gateway import`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Check ECG files (SCP-ECG, HL7 aECG, DICOM waveform) and hand the readable ones to
    /// the gateway's import folder; works whether the gateway runs or not.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// Data directory of the gateway (its import folder is `<DIR>/ecg-import`).
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    data_dir: Option<PathBuf>,
    /// Take the import folder from this configuration file (and the environment).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The recordings are STAT (emergency): they go to the `stat/` subfolder.
    #[arg(long)]
    stat: bool,
    /// The files to import.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
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

fn main() -> anyhow::Result<ExitCode> {
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
        Command::Run { config } => runtime.block_on(run(config)).map(|()| ExitCode::SUCCESS),
        Command::Status(args) => runtime.block_on(status(args)).map(|()| ExitCode::SUCCESS),
        // Blocking file work only: no runtime needed.
        Command::Import(args) => import(args),
    }
}

/// `gateway import`: one line per file; exit code 1 when any file was rejected.
fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let (import_dir, max_bytes) = match args.data_dir {
        Some(dir) => (
            dir.join(gateway::config::DEFAULT_ECG_IMPORT_SUBDIR),
            gateway::config::DEFAULT_ECG_MAX_FILE_BYTES,
        ),
        None => {
            let config = Config::load(args.config.as_deref())?;
            let dir = config.ecg_import_path().context(
                "ecg_import_dir is empty: the gateway watches no import folder, so there is nowhere to put the files",
            )?;
            (dir, config.ecg_max_file_bytes)
        }
    };
    let mut out = std::io::stdout().lock();
    let mut rejected = 0usize;
    for file in &args.files {
        match gateway::ecg::import_file(file, &import_dir, args.stat, max_bytes) {
            Ok(imported) => {
                tracing::debug!(file = %file.display(), to = %imported.path.display(), "handed to the import folder");
                writeln!(out, "imported {}: {}", file.display(), imported.summary)?;
            }
            Err(e) => {
                rejected += 1;
                writeln!(out, "rejected {}: {e}", file.display())?;
            }
        }
        out.flush()?;
    }
    Ok(if rejected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
