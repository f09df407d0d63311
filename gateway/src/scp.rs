//! The DICOM listener: accepts associations (bounded by a semaphore), negotiates the
//! storage and verification presentation contexts, and runs one task per association
//! (see [`crate::receive`] for what happens to each instance).
//!
//! With DICOM TLS configured the listener speaks only TLS: a plain association is
//! refused (its A-ASSOCIATE-RQ is not a TLS ClientHello, the handshake fails).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::association::server::{AccessControl, DefaultNegotiation};
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource, UserIdentity,
};
use dicom_ul::{Pdu, ServerAssociationOptions};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::config::Config;
use crate::outbox::Outbox;
use crate::receive;
use crate::spool::Spool;

/// Storage SOP classes we accept (PS3.4 B.5), plus Verification.
pub const ABSTRACT_SYNTAXES: &[&str] = &[
    crate::dimse::VERIFICATION_SOP_CLASS,
    "1.2.840.10008.5.1.4.1.1.2",     // CT Image
    "1.2.840.10008.5.1.4.1.1.2.1",   // Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.4",     // MR Image
    "1.2.840.10008.5.1.4.1.1.4.1",   // Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.1",     // Computed Radiography
    "1.2.840.10008.5.1.4.1.1.1.1",   // Digital X-Ray, for presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1", // Digital X-Ray, for processing
    "1.2.840.10008.5.1.4.1.1.1.2",   // Digital Mammography, for presentation
    "1.2.840.10008.5.1.4.1.1.1.2.1", // Digital Mammography, for processing
    "1.2.840.10008.5.1.4.1.1.6.1",   // Ultrasound Image
    "1.2.840.10008.5.1.4.1.1.3.1",   // Ultrasound Multi-frame Image
    "1.2.840.10008.5.1.4.1.1.7",     // Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.1",   // Multi-frame Single Bit SC
    "1.2.840.10008.5.1.4.1.1.7.2",   // Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",   // Multi-frame Grayscale Word SC
    "1.2.840.10008.5.1.4.1.1.7.4",   // Multi-frame True Color SC
    "1.2.840.10008.5.1.4.1.1.12.1",  // X-Ray Angiographic Image
    "1.2.840.10008.5.1.4.1.1.20",    // Nuclear Medicine Image
    "1.2.840.10008.5.1.4.1.1.128",   // PET Image
    "1.2.840.10008.5.1.4.1.1.9.1.1", // 12-lead ECG Waveform
    "1.2.840.10008.5.1.4.1.1.9.1.2", // General ECG Waveform
    "1.2.840.10008.5.1.4.1.1.9.1.3", // Ambulatory ECG Waveform
    "1.2.840.10008.5.1.4.1.1.9.2.1", // Hemodynamic Waveform
    "1.2.840.10008.5.1.4.1.1.104.1", // Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.88.11", // Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22", // Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33", // Comprehensive SR
];

/// Transfer syntaxes we accept, all stored as received (never transcoded). dicom-ul
/// additionally requires the registry to know each one (Deflated needs the registry's
/// `deflate` feature, enabled in Cargo.toml); the proposer's order decides which of
/// several proposed ones is chosen.
pub const TRANSFER_SYNTAXES: &[&str] = &[
    "1.2.840.10008.1.2",      // Implicit VR Little Endian
    "1.2.840.10008.1.2.1",    // Explicit VR Little Endian
    "1.2.840.10008.1.2.2",    // Explicit VR Big Endian (retired, still sent)
    "1.2.840.10008.1.2.1.99", // Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50", // JPEG Baseline
    "1.2.840.10008.1.2.4.51", // JPEG Extended
    "1.2.840.10008.1.2.4.57", // JPEG Lossless
    "1.2.840.10008.1.2.4.70", // JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80", // JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81", // JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90", // JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91", // JPEG 2000
    "1.2.840.10008.1.2.5",    // RLE Lossless
];

/// How long a busy-rejected peer gets to send its association request.
const REJECT_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long running associations get to finish after shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Accepts any calling AE; when configured, only our own called AE titles.
#[derive(Debug, Clone)]
pub struct CalledAeAccess {
    require: bool,
    titles: Vec<String>,
}

impl AccessControl for CalledAeAccess {
    fn check_access(
        &self,
        _this_ae_title: &str,
        _calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        let called = called_ae_title.trim();
        if !self.require
            || self
                .titles
                .iter()
                .any(|t| t.trim().eq_ignore_ascii_case(called))
        {
            Ok(())
        } else {
            Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized)
        }
    }
}

/// Association options, built once from the configuration.
pub type AssociationOptions = ServerAssociationOptions<'static, CalledAeAccess, DefaultNegotiation>;

/// Build the association acceptor options from the configuration and, when DICOM TLS
/// is on, its server configuration.
pub fn association_options(
    config: &Config,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> AssociationOptions {
    let mut titles = vec![config.ae_title.clone()];
    titles.extend(config.stat_ae_titles.iter().cloned());
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(CalledAeAccess {
            require: config.require_called_ae,
            titles,
        })
        .ae_title(config.ae_title.clone())
        .max_pdu_length(config.max_pdu)
        .read_timeout(Duration::from_secs(config.association_idle_secs.max(1)))
        .write_timeout(Duration::from_secs(60));
    for uid in ABSTRACT_SYNTAXES {
        options = options.with_abstract_syntax(*uid);
    }
    for uid in TRANSFER_SYNTAXES {
        options = options.with_transfer_syntax(*uid);
    }
    if let Some(tls) = tls {
        options = options.tls_config(tls);
    }
    options
}

/// Everything an association task needs, shared.
#[derive(Debug)]
pub struct ScpContext {
    /// Gateway configuration.
    pub config: Arc<Config>,
    /// Where instances are written.
    pub spool: Arc<Spool>,
    /// Where they are recorded.
    pub outbox: Outbox,
    /// Negotiation settings.
    pub options: AssociationOptions,
    /// DICOM TLS server configuration; when set, only TLS associations are accepted.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl ScpContext {
    /// How long a peer gets to complete the TLS handshake and association request
    /// (`connection_open_secs`): dicom-ul bounds the request only by the idle read
    /// timeout, so a silent connection would hold its slot for minutes.
    pub fn handshake_timeout(&self) -> Duration {
        self.config.connection_open()
    }
}

/// Accept associations until `shutdown`, then give running ones a grace period.
pub async fn serve(listener: TcpListener, ctx: Arc<ScpContext>, shutdown: CancellationToken) {
    let admission = Arc::new(Admission::new(
        ctx.config.max_associations,
        ctx.config.max_connections_per_address,
        ctx.config.reserved_connections,
        ctx.config.trusted_ips(),
    ));
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    // Without NODELAY every small C-STORE response waits ~40 ms for
                    // Nagle/delayed-ACK: that alone caps a modality at ~25 instances/s.
                    if let Err(e) = socket.set_nodelay(true) {
                        tracing::warn!(%peer, error = %e, "could not set TCP_NODELAY");
                    }
                    match admission.admit(peer.ip()) {
                        Ok(slot) => {
                            let ctx = Arc::clone(&ctx);
                            let shutdown = shutdown.clone();
                            tasks.spawn(async move {
                                receive::run_association(socket, peer, ctx, shutdown).await;
                                drop(slot);
                            });
                        }
                        Err(why) => {
                            tracing::warn!(%peer, reason = %why, "no association slot; rejecting (transient)");
                            tasks.spawn(reject_busy(socket, peer, ctx.tls.clone()));
                        }
                    }
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = shutdown.cancelled() => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = tasks.len(),
            "associations still running after the grace period; aborting them \
             (unanswered instances stay with their senders)"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

/// Answer an association request beyond the limit with A-ASSOCIATE-RJ (transient,
/// local limit exceeded), so the modality retries later instead of hanging. With DICOM
/// TLS the rejection, too, goes inside TLS: a TLS peer could not read it otherwise.
async fn reject_busy(socket: TcpStream, peer: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>) {
    match tls {
        None => send_busy_rejection(socket, peer).await,
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            match tokio::time::timeout(REJECT_READ_TIMEOUT, acceptor.accept(socket)).await {
                Ok(Ok(stream)) => send_busy_rejection(stream, peer).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn send_busy_rejection<S: AsyncRead + AsyncWrite + Unpin>(mut socket: S, peer: SocketAddr) {
    let mut buffer = bytes::BytesMut::with_capacity(16 * 1024);
    let read = tokio::time::timeout(
        REJECT_READ_TIMEOUT,
        dicom_ul::association::read_pdu_from_wire_async(
            &mut socket,
            &mut buffer,
            dicom_ul::pdu::MAXIMUM_PDU_SIZE,
            false,
        ),
    )
    .await;
    if !matches!(read, Ok(Ok(Pdu::AssociationRQ(_)))) {
        return;
    }
    let rj = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    let mut out = Vec::new();
    if dicom_ul::write_pdu(&mut out, &rj).is_ok() {
        if let Err(e) = socket.write_all(&out).await {
            tracing::debug!(%peer, error = %e, "could not send association rejection");
        }
        let _ = socket.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiated_syntaxes_are_known_to_the_registry() {
        // dicom-ul accepts a transfer syntax only if the registry supports it; a
        // missing codec feature would silently refuse e.g. deflated data sets.
        for ts in TRANSFER_SYNTAXES {
            assert!(
                dicom_ul::association::server::is_supported(ts),
                "transfer syntax {ts} would be refused in negotiation"
            );
        }
    }

    #[test]
    fn called_ae_check_is_optional() {
        let open = CalledAeAccess {
            require: false,
            titles: vec!["GW".into()],
        };
        assert!(open.check_access("GW", "CT", "ANY-SCP", None).is_ok());
        let strict = CalledAeAccess {
            require: true,
            titles: vec!["GW".into(), "GW_STAT".into()],
        };
        assert!(strict.check_access("GW", "CT", "gw_stat", None).is_ok());
        assert_eq!(
            strict.check_access("GW", "CT", "OTHER", None),
            Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized)
        );
    }
}
