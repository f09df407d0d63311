//! The township gateway: receives DICOM instances from the township's modalities
//! (C-ECHO, C-STORE), keeps each one durably in a local spool and outbox before
//! answering, and forwards them to the county hub by STOW-RS; tells the hub when a
//! study is complete; keeps what cannot be delivered in a visible quarantine.
//!
//! Modules, in the order an instance meets them:
//! - [`scp`]: the listener and association negotiation;
//! - [`receive`]: one association, from P-DATA to a durable instance;
//! - [`dimse`]: command sets (C-ECHO, C-STORE) and statuses;
//! - [`spool`]: the Part 10 files on disk and the quarantine directory;
//! - [`outbox`]: the SQLite outbox with its group-committing writer;
//! - [`activity`]: whether a modality is sending right now (forwarding makes way);
//! - [`forwarder`]: batching, STOW-RS and the hub's verdicts;
//! - [`hub`]: the hub connection (gateway key, TLS trust, failure messages);
//! - [`completion`]: study completion notices;
//! - [`reports`]: the signed reports coming back from the county (pull, verify, keep,
//!   show on the township's local page, relay critical-finding acknowledgements);
//! - [`lab`]: laboratory results (HL7 v2 over MLLP) from the township's laboratory
//!   systems, kept in the outbox and forwarded to the hub ahead of DICOM;
//! - [`ecg`]: ECG files from carts that only export files (a watched import folder
//!   and `gateway import`), kept in the outbox and forwarded to the hub ahead of
//!   routine DICOM;
//! - [`filelane`]: what the laboratory and ECG lanes share (their tables' queue and
//!   delivery records, the request to the hub and its verdicts);
//! - [`status`]: the operator's view; [`lanes`]: the same figures lane by lane with the
//!   recently sent items, for the township page; [`config`], [`backoff`], [`tls`]: support.

pub mod activity;
pub mod admission;
pub mod backoff;
pub mod completion;
pub mod config;
pub mod dimse;
pub mod ecg;
pub mod filelane;
pub mod forwarder;
pub mod hub;
pub mod lab;
pub mod lanes;
pub mod outbox;
pub mod receive;
pub mod reports;
pub mod scp;
pub mod spool;
pub mod status;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::Config;

use crate::completion::Completion;
use crate::ecg::{EcgCtx, EcgService};
use crate::forwarder::Forwarder;
use crate::hub::{HubClient, HubSetupError};
use crate::lab::{LabCtx, LabService};
use crate::outbox::{Outbox, OutboxError};
use crate::reports::{ReportService, ReportsError};
use crate::scp::ScpContext;
use crate::spool::Spool;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The data directory or spool could not be prepared.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The outbox database could not be opened or recovered.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The DICOM listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The hub client (key, TLS trust, HTTP client) could not be set up.
    #[error(transparent)]
    Hub(#[from] HubSetupError),
    /// The DICOM TLS settings are unusable.
    #[error("DICOM TLS: {0}")]
    DicomTls(#[from] tls::TlsError),
    /// The report service could not start.
    #[error(transparent)]
    Reports(#[from] ReportsError),
}

/// A running gateway. Dropping it does not stop it; call [`Gateway::shutdown`].
#[derive(Debug)]
pub struct Gateway {
    dicom_addr: SocketAddr,
    ae_title: String,
    outbox: Outbox,
    spool: Arc<Spool>,
    shutdown: CancellationToken,
    scp: JoinHandle<()>,
    forwarder: JoinHandle<()>,
    completion: JoinHandle<()>,
    committer: JoinHandle<()>,
    reports: ReportService,
    lab: LabService,
    ecg: EcgService,
}

impl Gateway {
    /// Recover the outbox, bind the DICOM listener and start receiving, forwarding and
    /// completion. Returns once the listener is bound (see [`Gateway::dicom_addr`]).
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        config.validate()?;
        // Keys, certificates and trust are read first: a wrong path should stop the
        // gateway before it accepts anything it then could not forward.
        let hub = HubClient::new(&config)?;
        let dicom_tls = tls::dicom_server_config(&config)?.map(Arc::new);
        let config = Arc::new(config);
        let data_dir_err = |source| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&config.data_dir).map_err(data_dir_err)?;
        let spool = Spool::open(&config.data_dir).map_err(data_dir_err)?;
        let (outbox, committer, recovered) = Outbox::open(&config.data_dir, &spool).await?;
        tracing::info!(
            pending = recovered.pending,
            verified = recovered.verified,
            dropped = recovered.dropped.len(),
            swept = recovered.swept,
            "outbox recovered"
        );
        {
            let spool = Arc::clone(&spool);
            tokio::task::spawn_blocking(move || spool.prefill())
                .await
                .map_err(|e| data_dir_err(std::io::Error::other(e)))?
                .map_err(data_dir_err)?;
        }
        let committer = tokio::spawn(committer.run());

        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.listen.clone(),
                source,
            })?;
        let dicom_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen.clone(),
            source,
        })?;

        let shutdown = CancellationToken::new();
        let reports = ReportService::start(
            outbox.clone(),
            hub.clone(),
            Arc::clone(&config),
            shutdown.clone(),
        )
        .await?;
        let ctx = Arc::new(ScpContext {
            options: scp::association_options(&config, dicom_tls.clone()),
            tls: dicom_tls.clone(),
            config: Arc::clone(&config),
            spool: Arc::clone(&spool),
            outbox: outbox.clone(),
        });
        let lab = LabService::start(
            Arc::new(LabCtx {
                outbox: outbox.clone(),
                spool: Arc::clone(&spool),
                config: Arc::clone(&config),
            }),
            shutdown.clone(),
        )
        .await;
        let ecg = EcgService::start(
            Arc::new(EcgCtx {
                outbox: outbox.clone(),
                spool: Arc::clone(&spool),
                config: Arc::clone(&config),
            }),
            shutdown.clone(),
        )
        .await;
        let scp = tokio::spawn(scp::serve(listener, ctx, shutdown.clone()));
        let forwarder = tokio::spawn(
            Forwarder::new(
                outbox.clone(),
                Arc::clone(&spool),
                hub.clone(),
                Arc::clone(&config),
            )
            .run(shutdown.clone()),
        );
        let completion = tokio::spawn(
            Completion::new(outbox.clone(), hub, Arc::clone(&config)).run(shutdown.clone()),
        );
        tracing::info!(
            %dicom_addr,
            ae = %config.ae_title,
            site = %config.site,
            hub = %config.hub_url,
            dicom_tls = dicom_tls.is_some(),
            hl7 = ?lab.addr(),
            ecg_import_dir = ?ecg.import_dir(),
            "gateway started"
        );
        Ok(Gateway {
            dicom_addr,
            ae_title: config.ae_title.clone(),
            outbox,
            spool,
            shutdown,
            scp,
            forwarder,
            completion,
            committer,
            reports,
            lab,
            ecg,
        })
    }

    /// The address the DICOM listener is bound to (the real port when 0 was asked).
    pub fn dicom_addr(&self) -> SocketAddr {
        self.dicom_addr
    }

    /// Our AE title.
    pub fn ae_title(&self) -> &str {
        &self.ae_title
    }

    /// The outbox (for inspection in tests).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The spool (for inspection in tests).
    pub fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }

    /// Where the local report page listens (`None` when disabled or not bound).
    pub fn reports_addr(&self) -> Option<SocketAddr> {
        self.reports.page_addr()
    }

    /// Where the HL7 MLLP listener listens (`None` when disabled or not bound).
    pub fn hl7_addr(&self) -> Option<SocketAddr> {
        self.lab.addr()
    }

    /// The watched ECG import folder (`None` when disabled or unusable).
    pub fn ecg_import_dir(&self) -> Option<&std::path::Path> {
        self.ecg.import_dir()
    }

    /// The report service (for inspection in tests).
    pub fn reports(&self) -> &ReportService {
        &self.reports
    }

    /// Stop accepting, let running associations and requests finish (bounded grace
    /// periods), drain the committer and close the database.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for (name, task) in [
            ("dicom listener", self.scp),
            ("forwarder", self.forwarder),
            ("completion", self.completion),
        ] {
            if let Err(e) = task.await {
                tracing::error!(task = name, error = %e, "task ended abnormally");
            }
        }
        // The report service holds outbox handles too: stopped before the committer.
        let Gateway {
            outbox,
            committer,
            reports,
            lab,
            ecg,
            ..
        } = self;
        // Connections finish the message in hand (stored and acknowledged) first.
        lab.stop().await;
        // The file in hand is stored (and removed from the folder) or left there.
        ecg.stop().await;
        reports.stop().await;
        // The committer ends when the last outbox handle is gone.
        outbox.close().await;
        drop(outbox);
        if let Err(e) = committer.await {
            tracing::error!(error = %e, "outbox writer ended abnormally");
        }
        tracing::info!("gateway stopped");
    }
}
