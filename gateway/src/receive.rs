//! One association: the PDU loop, C-ECHO, and C-STORE of each instance from P-DATA to
//! a durable spool file and outbox row, answered only when both are durable.
//!
//! PDUs are read one at a time (each bounded by our maximum PDU length) and every data
//! fragment is appended to the spool file as it arrives, so an instance of any size
//! costs one PDU of memory. We read PDUs rather than use dicom-ul's `PDataReader`
//! because we must see each fragment's type and presentation context: a PDU may carry
//! the end of a command and the start of its data set, and an A-ABORT may arrive in
//! the middle of a data set.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use dicom_ul::association::{Association, AsyncServerAssociation};
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
use dicom_ul::Pdu;
use formats::dicom::{read_instance_header, InstanceHeader, Limits};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::activity::StoreInProgress;
use crate::dimse::{self, command_field, Command, Status, MAX_COMMAND_SET_LEN};
use crate::outbox::{
    NewItem, Outbox, Priority, QuarantineEntry, QuarantineSource, StoreOutcome, StudyLabels,
};
use crate::scp::ScpContext;
use crate::spool::{FileMeta, SpoolWriter, WrittenFile};

/// A negotiated association over a plain or a TLS stream.
type Assoc<S> = AsyncServerAssociation<S>;

/// What an association runs over: TCP, or TLS over TCP.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// An accepted presentation context.
#[derive(Debug, Clone)]
struct Context {
    abstract_syntax: String,
    transfer_syntax: String,
}

/// How an association ended.
enum End {
    Released,
    PeerAborted,
    Closed(String),
    Abort(String),
}

/// Where we are in the DIMSE message exchange.
enum Phase {
    Idle,
    Command { context_id: u8, bytes: Vec<u8> },
    Data(Box<Receiving>),
}

/// A C-STORE whose data set is arriving.
struct Receiving {
    context_id: u8,
    message_id: u16,
    sop_class_uid: String,
    sop_instance_uid: String,
    /// A failure already known from the command (answered after the data set, which
    /// is still kept in quarantine so the operator sees what was sent).
    precheck: Option<Status>,
    writer: Result<SpoolWriter, String>,
    /// Data set bytes received so far (bounded by `max_instance_bytes`).
    received: u64,
    /// Tells the forwarder a modality is sending (it holds back routine forwarding).
    _activity: StoreInProgress,
}

/// Studies this association stored into; when it ends they are released for the
/// completion check, whatever way it ends (hence `Drop`).
struct OpenStudies {
    outbox: Outbox,
    studies: HashSet<String>,
}

impl Drop for OpenStudies {
    fn drop(&mut self) {
        self.outbox
            .association_closed(self.studies.drain().collect::<Vec<_>>());
    }
}

/// Per-association state.
struct Session {
    ctx: Arc<ScpContext>,
    calling_ae: String,
    called_ae: String,
    contexts: HashMap<u8, Context>,
    open: OpenStudies,
    stored: u64,
    failed: u64,
}

/// Negotiate (over TLS when configured) and serve one association until it is
/// released, aborted or closed.
pub async fn run_association(
    socket: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ScpContext>,
    shutdown: CancellationToken,
) {
    if ctx.tls.is_some() {
        let established = tokio::time::timeout(
            ctx.handshake_timeout(),
            ctx.options.establish_tls_async(socket),
        )
        .await;
        match established {
            Ok(Ok(assoc)) => serve_association(assoc, peer, ctx, shutdown, true).await,
            // A plain association on a TLS listener ends here, as does a peer that does
            // not trust our certificate or (with a client CA) presents none.
            Ok(Err(e)) => tracing::info!(
                %peer,
                error = %crate::forwarder::error_chain(&e),
                "TLS association not established"
            ),
            Err(_) => tracing::info!(%peer, "TLS association not established: timed out"),
        }
    } else {
        // A connection that never sends its A-ASSOCIATE-RQ gives its slot back soon.
        let established =
            tokio::time::timeout(ctx.handshake_timeout(), ctx.options.establish_async(socket))
                .await;
        match established {
            Ok(Ok(assoc)) => serve_association(assoc, peer, ctx, shutdown, false).await,
            Ok(Err(e)) => tracing::info!(%peer, error = %e, "association not established"),
            Err(_) => {
                tracing::warn!(%peer, "no association request in time; connection closed")
            }
        }
    }
}

async fn serve_association<S: Transport>(
    mut assoc: Assoc<S>,
    peer: SocketAddr,
    ctx: Arc<ScpContext>,
    shutdown: CancellationToken,
    tls: bool,
) {
    let contexts: HashMap<u8, Context> = assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| {
            (
                pc.id,
                Context {
                    abstract_syntax: pc.abstract_syntax.clone(),
                    transfer_syntax: pc.transfer_syntax.clone(),
                },
            )
        })
        .collect();
    let mut session = Session {
        calling_ae: assoc.peer_ae_title().trim().to_string(),
        called_ae: assoc.called_ae_title().trim().to_string(),
        open: OpenStudies {
            outbox: ctx.outbox.clone(),
            studies: HashSet::new(),
        },
        ctx,
        contexts,
        stored: 0,
        failed: 0,
    };
    tracing::info!(
        %peer,
        calling_ae = %session.calling_ae,
        called_ae = %session.called_ae,
        contexts = session.contexts.len(),
        tls,
        "association established"
    );
    let end = session.serve(&mut assoc, &shutdown).await;
    let (stored, failed) = (session.stored, session.failed);
    match end {
        End::Released => tracing::info!(%peer, stored, failed, "association released"),
        End::PeerAborted => tracing::warn!(%peer, stored, failed, "association aborted by peer"),
        End::Closed(why) => {
            tracing::warn!(%peer, stored, failed, reason = %why, "association closed")
        }
        End::Abort(why) => {
            tracing::warn!(%peer, stored, failed, reason = %why, "aborting association");
            let _ = assoc.abort().await;
        }
    }
}

impl Session {
    async fn serve<S: Transport>(
        &mut self,
        assoc: &mut Assoc<S>,
        shutdown: &CancellationToken,
    ) -> End {
        let mut phase = Phase::Idle;
        loop {
            let received = if matches!(phase, Phase::Idle) {
                tokio::select! {
                    r = assoc.receive() => r,
                    _ = shutdown.cancelled() => return End::Abort("gateway shutting down".into()),
                }
            } else {
                assoc.receive().await
            };
            let pdu = match received {
                Ok(pdu) => pdu,
                Err(e) => {
                    discard(&self.ctx, phase).await;
                    return End::Closed(e.to_string());
                }
            };
            match pdu {
                Pdu::PData { data } => {
                    for pdv in data {
                        phase = match self.on_pdv(assoc, phase, pdv).await {
                            Ok(next) => next,
                            Err(why) => return End::Abort(why),
                        };
                    }
                }
                Pdu::ReleaseRQ => {
                    discard(&self.ctx, phase).await;
                    let _ = assoc.send(&Pdu::ReleaseRP).await;
                    return End::Released;
                }
                Pdu::AbortRQ { .. } => {
                    discard(&self.ctx, phase).await;
                    return End::PeerAborted;
                }
                other => {
                    discard(&self.ctx, phase).await;
                    return End::Abort(format!("unexpected {}", pdu_name(&other)));
                }
            }
        }
    }

    /// Handle one presentation data value; returns the next phase, or why to abort
    /// (after cleaning up the current phase).
    async fn on_pdv<S: Transport>(
        &mut self,
        assoc: &mut Assoc<S>,
        phase: Phase,
        pdv: PDataValue,
    ) -> Result<Phase, String> {
        match phase {
            Phase::Data(mut rx) => {
                if pdv.value_type != PDataValueType::Data
                    || pdv.presentation_context_id != rx.context_id
                {
                    discard(&self.ctx, Phase::Data(rx)).await;
                    return Err("command fragment or foreign context inside a data set".into());
                }
                rx.received += pdv.data.len() as u64;
                let limit = self.ctx.config.max_instance_bytes;
                if rx.received > limit && rx.writer.is_ok() {
                    // Refused, not stored: the rest of the data set is read and
                    // dropped, and the answer says why (the modality keeps the
                    // instance). Nothing this large is kept in quarantine.
                    let too_big = Err(format!(
                        "instance larger than the {limit} bytes accepted (max_instance_bytes)"
                    ));
                    if let Ok(w) = std::mem::replace(&mut rx.writer, too_big) {
                        let rel = w.rel_path().to_string();
                        drop(w);
                        self.ctx.spool.remove(&rel).await;
                    }
                }
                if let Ok(w) = rx.writer.as_mut() {
                    w.write(pdv.data).await;
                }
                if !pdv.is_last {
                    return Ok(Phase::Data(rx));
                }
                let status = self.finish_store(&mut rx).await;
                if status.is_success() {
                    self.stored += 1;
                } else {
                    self.failed += 1;
                    tracing::warn!(
                        calling_ae = %self.calling_ae,
                        sop_instance_uid = %rx.sop_instance_uid,
                        status = %status,
                        "C-STORE failed"
                    );
                }
                let response = dimse::store_response(
                    rx.message_id,
                    &rx.sop_class_uid,
                    &rx.sop_instance_uid,
                    &status,
                );
                send_command(assoc, rx.context_id, response).await?;
                Ok(Phase::Idle)
            }
            Phase::Idle | Phase::Command { .. } => {
                if pdv.value_type != PDataValueType::Command {
                    return Err("data set fragment without a command".into());
                }
                let (context_id, mut bytes) = match phase {
                    Phase::Command { context_id, bytes } => (context_id, bytes),
                    _ => (pdv.presentation_context_id, Vec::new()),
                };
                if pdv.presentation_context_id != context_id {
                    return Err("command fragments on different presentation contexts".into());
                }
                if bytes.len() + pdv.data.len() > MAX_COMMAND_SET_LEN {
                    return Err(format!(
                        "command set longer than {MAX_COMMAND_SET_LEN} bytes"
                    ));
                }
                bytes.extend_from_slice(&pdv.data);
                if !pdv.is_last {
                    return Ok(Phase::Command { context_id, bytes });
                }
                self.on_command(assoc, context_id, &bytes).await
            }
        }
    }

    async fn on_command<S: Transport>(
        &mut self,
        assoc: &mut Assoc<S>,
        context_id: u8,
        bytes: &[u8],
    ) -> Result<Phase, String> {
        tracing::trace!(context_id, command = %hex::encode(bytes), "command set");
        let cmd =
            dimse::parse_command(bytes).map_err(|e| format!("unreadable command set: {e}"))?;
        let context = self.contexts.get(&context_id).cloned().ok_or_else(|| {
            format!("command on presentation context {context_id}, which was not accepted")
        })?;
        match cmd.command_field {
            command_field::C_ECHO_RQ => {
                let message_id = cmd.message_id.ok_or("C-ECHO-RQ without MessageID")?;
                if cmd.has_data_set() {
                    return Err("C-ECHO-RQ announcing a data set".into());
                }
                let class = cmd
                    .affected_sop_class_uid
                    .as_deref()
                    .unwrap_or(dimse::VERIFICATION_SOP_CLASS);
                let response = dimse::echo_response(message_id, class, &Status::success());
                send_command(assoc, context_id, response).await?;
                Ok(Phase::Idle)
            }
            command_field::C_STORE_RQ => self.start_store(assoc, context_id, &context, cmd).await,
            // Nothing to cancel: a C-STORE in progress completes or fails on its own.
            command_field::C_CANCEL_RQ => Ok(Phase::Idle),
            other => Err(format!("unsupported DIMSE command 0x{other:04X}")),
        }
    }

    async fn start_store<S: Transport>(
        &mut self,
        assoc: &mut Assoc<S>,
        context_id: u8,
        context: &Context,
        cmd: Command,
    ) -> Result<Phase, String> {
        let message_id = cmd.message_id.ok_or("C-STORE-RQ without MessageID")?;
        let sop_class_uid = cmd.affected_sop_class_uid.clone().unwrap_or_default();
        let sop_instance_uid = cmd.affected_sop_instance_uid.clone().unwrap_or_default();
        if !cmd.has_data_set() {
            let status =
                Status::failure(Status::CANNOT_UNDERSTAND, "C-STORE-RQ without a data set");
            let response =
                dimse::store_response(message_id, &sop_class_uid, &sop_instance_uid, &status);
            send_command(assoc, context_id, response).await?;
            return Ok(Phase::Idle);
        }
        let precheck = if sop_class_uid.is_empty() || sop_instance_uid.is_empty() {
            Some(Status::failure(
                Status::CANNOT_UNDERSTAND,
                "C-STORE-RQ lacks AffectedSOPClassUID or AffectedSOPInstanceUID",
            ))
        } else if sop_class_uid != context.abstract_syntax {
            Some(Status::failure(
                Status::DATA_SET_DOES_NOT_MATCH,
                format!(
                    "SOP Class {sop_class_uid} sent on a context negotiated for {}",
                    context.abstract_syntax
                ),
            ))
        } else {
            None
        };
        let meta = FileMeta {
            sop_class_uid: &sop_class_uid,
            sop_instance_uid: &sop_instance_uid,
            transfer_syntax_uid: &context.transfer_syntax,
            source_ae_title: &self.calling_ae,
        };
        let writer = self
            .ctx
            .spool
            .create(&meta)
            .await
            .map_err(|e| format!("could not create spool file: {e}"));
        Ok(Phase::Data(Box::new(Receiving {
            context_id,
            message_id,
            sop_class_uid,
            sop_instance_uid,
            precheck,
            writer,
            received: 0,
            _activity: self.ctx.outbox.receive_activity().store_started(),
        })))
    }

    /// The data set is complete: make it durable, validate it, record it. Returns the
    /// status to answer. Nothing here aborts the association.
    async fn finish_store(&mut self, rx: &mut Receiving) -> Status {
        let writer = match std::mem::replace(&mut rx.writer, Err("taken".into())) {
            Ok(w) => w,
            Err(why) => return Status::failure(Status::OUT_OF_RESOURCES, why),
        };
        let written = match writer.finish().await {
            Ok(w) => w,
            Err((rel, e)) => {
                self.ctx.spool.remove(&rel).await;
                return Status::failure(
                    Status::OUT_OF_RESOURCES,
                    format!("spool write failed: {e}"),
                );
            }
        };
        // The fsync runs while we parse and commit: the answer waits for both, and a
        // row whose fsync had not finished is verified at start-up after a crash.
        let file = match written.file.try_clone() {
            Ok(f) => f,
            Err(e) => {
                self.ctx.spool.remove(&written.rel_path).await;
                return Status::failure(Status::OUT_OF_RESOURCES, format!("spool file: {e}"));
            }
        };
        let fsync = tokio::task::spawn_blocking(move || file.sync_all());
        let checked = match rx.precheck.take() {
            Some(status) => Err(status),
            None => validate(&written, rx).await,
        };
        let header = match checked {
            Ok(h) => h,
            Err(status) => {
                let _ = fsync.await;
                self.quarantine(&written, rx, &status).await;
                return status;
            }
        };
        let study_uid = header.study_instance_uid.clone();
        let item = NewItem {
            sop_instance_uid: header.sop_instance_uid.clone(),
            sop_class_uid: header.sop_class_uid.clone(),
            study_uid: study_uid.clone(),
            series_uid: header.series_instance_uid.clone(),
            transfer_syntax_uid: header.transfer_syntax_uid.clone(),
            calling_ae: self.calling_ae.clone(),
            called_ae: self.called_ae.clone(),
            path: written.rel_path.clone(),
            size: written.size,
            dataset_offset: written.dataset_offset,
            sha256: written.sha256.clone(),
            priority: self.priority(&header),
            labels: StudyLabels {
                patient_id: header.patient_id.clone(),
                patient_name: header.patient_name.clone(),
                accession_number: header.accession_number.clone(),
                modality: header.modality.clone(),
            },
        };
        let new_for_association = !self.open.studies.contains(&study_uid);
        let stored = self.ctx.outbox.store(item, new_for_association).await;
        let synced = match fsync.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        };
        match stored {
            Ok(StoreOutcome::Stored(id)) => {
                // Counted as open in the study either way; released when we end.
                self.open.studies.insert(study_uid);
                match synced {
                    Ok(()) => {
                        self.ctx.outbox.file_synced(id);
                        // The row was committed without a sync: now, after the file's.
                        self.durable_answer().await
                    }
                    Err(e) => {
                        tracing::error!(error = %e, path = %written.rel_path, "spool fsync failed");
                        match self.ctx.outbox.abandon(id).await {
                            Ok(()) => self.ctx.spool.remove(&written.rel_path).await,
                            // The row stays unsynced and is verified at start-up.
                            Err(e) => tracing::error!(error = %e, "could not withdraw item {id}"),
                        }
                        Status::failure(
                            Status::OUT_OF_RESOURCES,
                            format!("fsync of spool file failed: {e}"),
                        )
                    }
                }
            }
            Ok(StoreOutcome::Duplicate(existing)) => {
                self.open.studies.insert(study_uid);
                tracing::debug!(existing, sop_instance_uid = %rx.sop_instance_uid, "identical re-send; not queued again");
                self.ctx.spool.remove(&written.rel_path).await;
                // The first copy's row may be a moment old and not yet synced.
                self.durable_answer().await
            }
            Err(e) => {
                self.ctx.spool.remove(&written.rel_path).await;
                Status::failure(
                    Status::OUT_OF_RESOURCES,
                    format!("outbox write failed: {e}"),
                )
            }
        }
    }

    /// Success once the outbox's commits are on disk; if they cannot be made so, a
    /// failure (the sender keeps the instance and retries).
    async fn durable_answer(&self) -> Status {
        match self.ctx.outbox.sync().await {
            Ok(()) => Status::success(),
            Err(e) => {
                tracing::error!(error = %e, "outbox sync failed");
                Status::failure(
                    Status::OUT_OF_RESOURCES,
                    format!("outbox write failed: {e}"),
                )
            }
        }
    }

    /// STAT when sent to a STAT AE title or when the data set says STAT/HIGH.
    fn priority(&self, header: &InstanceHeader) -> Priority {
        let requested_stat = header
            .requested_priority
            .as_deref()
            .map(|p| matches!(p.trim().to_ascii_uppercase().as_str(), "STAT" | "HIGH"))
            .unwrap_or(false);
        if requested_stat || self.ctx.config.is_stat_ae(&self.called_ae) {
            Priority::Stat
        } else {
            Priority::Routine
        }
    }

    /// Keep a refused instance where an operator will see it, with the reason.
    async fn quarantine(&self, written: &WrittenFile, rx: &Receiving, status: &Status) {
        let reason = status
            .comment
            .clone()
            .unwrap_or_else(|| format!("refused with status 0x{:04X}", status.code));
        let mut entry = QuarantineEntry {
            item_id: None,
            sop_instance_uid: Some(rx.sop_instance_uid.clone()).filter(|s| !s.is_empty()),
            study_uid: None,
            calling_ae: Some(self.calling_ae.clone()),
            path: None,
            source: QuarantineSource::Receive,
            reason,
            ..QuarantineEntry::default()
        };
        match self.ctx.spool.link_into_quarantine(&written.rel_path).await {
            Ok(q) => entry.path = Some(q),
            Err(e) => {
                tracing::error!(error = %e, "could not keep refused instance in quarantine");
                entry.reason = format!("{} (file not kept: {e})", entry.reason);
            }
        }
        match self.ctx.outbox.quarantine(entry).await {
            // Only now is the spool name redundant.
            Ok(()) => self.ctx.spool.remove(&written.rel_path).await,
            Err(e) => tracing::error!(error = %e, "could not record quarantine entry"),
        }
    }
}

/// Parse the header of the written file and check it against the command.
async fn validate(written: &WrittenFile, rx: &Receiving) -> Result<InstanceHeader, Status> {
    let path = written.abs_path.clone();
    let size = written.size;
    let parsed = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(formats::dicom::DicomError::Io)?;
        read_instance_header(file, size, Limits::default())
    })
    .await;
    let header = match parsed {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return Err(Status::failure(Status::CANNOT_UNDERSTAND, e.to_string())),
        Err(e) => {
            return Err(Status::failure(
                Status::OUT_OF_RESOURCES,
                format!("header check did not complete: {e}"),
            ))
        }
    };
    if header.sop_class_uid != rx.sop_class_uid {
        return Err(Status::failure(
            Status::DATA_SET_DOES_NOT_MATCH,
            // Key words first: the DIMSE Error Comment is clipped to 64 characters.
            format!(
                "SOP Class differs: data set {}, command {}",
                header.sop_class_uid, rx.sop_class_uid
            ),
        ));
    }
    if header.sop_instance_uid != rx.sop_instance_uid {
        return Err(Status::failure(
            Status::DATA_SET_DOES_NOT_MATCH,
            format!(
                "SOP Instance UID differs: data set {}, command {}",
                header.sop_instance_uid, rx.sop_instance_uid
            ),
        ));
    }
    Ok(header)
}

/// Drop whatever was half-received when the association ends abnormally. The sender
/// never got an answer for it, so it still has the instance.
async fn discard(ctx: &ScpContext, phase: Phase) {
    if let Phase::Data(rx) = phase {
        if let Ok(w) = rx.writer {
            let rel = w.rel_path().to_string();
            drop(w);
            ctx.spool.remove(&rel).await;
        }
    }
}

async fn send_command<S: Transport>(
    assoc: &mut Assoc<S>,
    context_id: u8,
    data: Vec<u8>,
) -> Result<(), String> {
    assoc
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: context_id,
                value_type: PDataValueType::Command,
                is_last: true,
                data,
            }],
        })
        .await
        .map_err(|e| format!("could not send response: {e}"))
}

fn pdu_name(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::PData { .. } => "P-DATA-TF",
        Pdu::ReleaseRQ => "A-RELEASE-RQ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::AbortRQ { .. } => "A-ABORT",
        Pdu::Unknown { .. } => "unknown PDU",
    }
}
