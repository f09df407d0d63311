//! The outbox summary on a real database: waiting, sent (and read), rejected with reason.

use super::*;
use crate::ecg::db::{EcgOutcome, EcgWrite, NewEcgFile};
use crate::filelane::db::Delivery;
use crate::filelane::FileLane;
use crate::lab::db::{LabOutcome, LabWrite, NewLabMessage};
use crate::outbox::{
    ItemUpdate, NewItem, Outbox, Priority, QuarantineEntry, QuarantineKind, QuarantineSource,
    StoreOutcome, StudyLabels,
};
use crate::reports::db::{ExamFields, NewDelivery, ReceivedVersion, ReportWrite};
use crate::spool::Spool;

fn instance(sop: &str, study: &str, patient: Option<&str>) -> NewItem {
    NewItem {
        sop_instance_uid: sop.into(),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        study_uid: study.into(),
        series_uid: format!("{study}.1"),
        transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
        calling_ae: "CT01".into(),
        called_ae: "TOWNSHIP_GW".into(),
        path: format!("spool/{sop}.dcm"),
        size: 100,
        dataset_offset: 0,
        sha256: format!("sha-{sop}"),
        priority: Priority::Routine,
        labels: StudyLabels {
            patient_id: patient.map(str::to_string),
            patient_name: patient.map(|p| format!("Zhang^San=张^三 {p}")),
            accession_number: Some("A100".into()),
            // Blank values from a later instance must not erase what an earlier one said.
            modality: if sop.ends_with(".2") {
                Some(" ".into())
            } else {
                Some("CT".into())
            },
        },
    }
}

async fn store(outbox: &Outbox, item: NewItem) -> i64 {
    match outbox.store(item, true).await.expect("store") {
        StoreOutcome::Stored(id) => id,
        other => panic!("not stored: {other:?}"),
    }
}

fn report(report_id: &str, kind: &str, study: Option<&str>, exam_id: i64) -> ReceivedVersion {
    ReceivedVersion {
        report_id: report_id.into(),
        version: 1,
        status: "final".into(),
        critical: false,
        exam: ExamFields {
            kind: Some(kind.into()),
            site: Some("township-a".into()),
            patient_id: Some("P1".into()),
            patient_name: None,
            study_uid: study.map(str::to_string),
            accession_number: None,
            modality: None,
        },
        reason: None,
        signer_name: Some("李医生".into()),
        signed_at: Some(1),
        // Only the exam id is read back from the payload (for ECG files).
        payload: format!("{{\"exam\":{{\"exam_id\":{exam_id}}},\"report_id\":\"{report_id}\"}}"),
        signature: "sig".into(),
        key_id: "k1".into(),
        verified: true,
        verify_error: None,
    }
}

#[tokio::test]
async fn lanes_show_waiting_sent_read_and_rejected_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).expect("spool");
    let (outbox, committer, _) = Outbox::open(dir.path(), &spool).await.expect("open");
    let committer = tokio::spawn(committer.run());

    // Study A: both instances stored by the hub, then reported on.
    let a1 = store(&outbox, instance("1.1.1", "1.1", Some("P1"))).await;
    let a2 = store(&outbox, instance("1.1.2", "1.1", Some("P1"))).await;
    outbox
        .apply(vec![
            ItemUpdate::Delivered { id: a1 },
            ItemUpdate::Delivered { id: a2 },
        ])
        .await
        .expect("delivered");
    // Study B: refused by the hub.
    let b1 = store(&outbox, instance("2.1.1", "2.1", Some("P2"))).await;
    outbox
        .apply(vec![ItemUpdate::Rejected {
            id: b1,
            reason: "instance exists with different content (SHA-256)".into(),
            quarantine_path: None,
        }])
        .await
        .expect("rejected");
    // Study C: waiting, the hub unreachable.
    let c1 = store(&outbox, instance("3.1.1", "3.1", Some("P3"))).await;
    outbox
        .apply(vec![ItemUpdate::Retry {
            id: c1,
            next_attempt_at: now_ms() + 60_000,
            error: "hub unreachable".into(),
        }])
        .await
        .expect("retry");

    // Laboratory: one message sent, one refused on receipt.
    let lab = outbox
        .write_lab(LabWrite::Receive(Box::new(NewLabMessage {
            control_id: "MSG1".into(),
            sha256: "lab-sha".into(),
            body: b"MSH|...".to_vec(),
            message_type: "ORU^R01".into(),
            sending_application: None,
            sending_facility: None,
            patient_id: Some("L1".into()),
            orders: 1,
            observations: 1,
            urgent: false,
            peer: "127.0.0.1:1".into(),
        })))
        .await
        .expect("lab");
    let LabOutcome::Stored(lab_id) = lab else {
        panic!("lab: {lab:?}")
    };
    outbox
        .record_delivery(
            FileLane::Lab,
            Delivery::Delivered {
                id: lab_id,
                hub_status: Some("stored".into()),
                exam_id: None,
            },
        )
        .await
        .expect("lab delivered");
    outbox
        .quarantine(QuarantineEntry {
            kind: QuarantineKind::Hl7,
            source: QuarantineSource::Receive,
            control_id: Some("MSG2".into()),
            reason: "unsupported message type ADT^A01".into(),
            ..QuarantineEntry::default()
        })
        .await
        .expect("lab quarantine");

    // ECG: one file sent (exam 77 at the hub), waiting for nothing.
    let ecg = outbox
        .write_ecg(EcgWrite::Receive(Box::new(NewEcgFile {
            sha256: "ecg-sha".into(),
            body: b"ecg".to_vec(),
            file_name: "rest.scp".into(),
            format: "SCP-ECG".into(),
            leads: 12,
            duration_ms: 10_000,
            patient_id: Some("E1".into()),
            patient_name: None,
            stat: false,
        })))
        .await
        .expect("ecg");
    let EcgOutcome::Stored(ecg_id) = ecg else {
        panic!("ecg: {ecg:?}")
    };
    outbox
        .record_delivery(
            FileLane::Ecg,
            Delivery::Delivered {
                id: ecg_id,
                hub_status: Some("stored".into()),
                exam_id: Some(77),
            },
        )
        .await
        .expect("ecg delivered");

    // Reports back: on study A and on the ECG exam.
    for (cursor, version) in [
        (1, report("r-study", "imaging", Some("1.1"), 5)),
        (2, report("r-ecg", "ecg", None, 77)),
    ] {
        outbox
            .write_report(ReportWrite::Delivery(Box::new(NewDelivery {
                cursor,
                report_id: Some(version.report_id.clone()),
                version: Some(1),
                received: Some(version),
                reject_reason: None,
                grace_ms: 0,
                hl7: false,
            })))
            .await
            .expect("report");
    }

    let s = summary(outbox.pool(), dir.path()).await.expect("summary");

    let imaging = &s.imaging;
    assert_eq!(
        (imaging.waiting, imaging.sent, imaging.rejected),
        (1, 2, 1),
        "{imaging:?}"
    );
    let oldest = imaging.oldest_waiting.as_ref().expect("oldest");
    assert_eq!(oldest.id, "3.1.1");
    assert_eq!(oldest.study_uid.as_deref(), Some("3.1"));
    assert_eq!(oldest.patient_id.as_deref(), Some("P3"));
    let error = imaging.last_error.as_ref().expect("last error");
    assert_eq!(
        (error.id.as_str(), error.error.as_str()),
        ("3.1.1", "hub unreachable")
    );
    // Only study A had something sent; it is grouped and shown as read.
    assert_eq!(imaging.recent_sent.len(), 1, "{:?}", imaging.recent_sent);
    let sent = &imaging.recent_sent[0];
    assert_eq!(sent.id, "1.1");
    assert_eq!(sent.sent, 2);
    assert_eq!(sent.patient_id.as_deref(), Some("P1"));
    assert_eq!(sent.description.as_deref(), Some("CT #A100"));
    assert!(sent.sent_at.is_some());
    let read = sent.report.as_ref().expect("study A was read");
    assert_eq!(
        (
            read.report_id.as_str(),
            read.status.as_str(),
            read.view_url.as_str()
        ),
        ("r-study", "final", "/reports/r-study")
    );
    assert_eq!(imaging.rejected_items.len(), 1);
    let r = &imaging.rejected_items[0];
    assert_eq!(r.source, "hub");
    assert_eq!(r.id.as_deref(), Some("2.1.1"));
    assert_eq!(r.study_uid.as_deref(), Some("2.1"));
    assert_eq!(r.patient_id.as_deref(), Some("P2"));
    assert!(r.reason.contains("SHA-256"), "{r:?}");

    let lab = &s.lab;
    assert_eq!((lab.waiting, lab.sent, lab.rejected), (0, 1, 1), "{lab:?}");
    assert_eq!(lab.recent_sent[0].id, "MSG1");
    assert_eq!(lab.recent_sent[0].patient_id.as_deref(), Some("L1"));
    assert_eq!(lab.rejected_items[0].id.as_deref(), Some("MSG2"));
    assert_eq!(lab.rejected_items[0].source, "receive");
    assert!(lab.rejected_items[0].reason.contains("ADT^A01"));

    let ecg = &s.ecg;
    assert_eq!((ecg.waiting, ecg.sent, ecg.rejected), (0, 1, 0), "{ecg:?}");
    assert_eq!(ecg.recent_sent[0].id, "rest.scp");
    assert_eq!(
        ecg.recent_sent[0]
            .report
            .as_ref()
            .map(|r| r.report_id.as_str()),
        Some("r-ecg"),
        "the ECG file's exam was read"
    );

    // The JSON the page's API serves.
    let json = serde_json::to_value(&s).expect("json");
    assert_eq!(
        json["imaging"]["recent_sent"][0]["report"]["report_id"],
        "r-study"
    );
    assert_eq!(json["imaging"]["rejected_items"][0]["source"], "hub");
    assert!(json["imaging"]["recent_sent"][0]
        .get("sent_at_ms")
        .is_none());

    outbox.close().await;
    drop(outbox);
    committer.await.expect("committer");
}

#[tokio::test]
async fn blank_header_values_do_not_erase_the_study_labels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).expect("spool");
    let (outbox, committer, _) = Outbox::open(dir.path(), &spool).await.expect("open");
    let committer = tokio::spawn(committer.run());
    store(&outbox, instance("9.1.1", "9.1", Some("P9"))).await;
    // The second instance has a blank modality and no patient.
    store(&outbox, instance("9.1.2", "9.1", None)).await;
    let row: (Option<String>, Option<String>) =
        sqlx::query_as("SELECT patient_id, modality FROM studies WHERE study_uid = '9.1'")
            .fetch_one(outbox.pool())
            .await
            .expect("study");
    assert_eq!(row, (Some("P9".into()), Some("CT".into())));
    outbox.close().await;
    drop(outbox);
    committer.await.expect("committer");
}
