//! Unit tests of the report pieces that need no hub: judging, the tables (on a real
//! SQLite database), escaping, file names and grouping into reports.

use formats::report::{
    self, ExamRef, ReportPayload, ReportStatus, SignedReport, Signer, SigningKey, Supersedes,
};

use super::db::{
    self, AckStatus, AcknowledgeOutcome, DeliveryOutcome, NewDelivery, ReportOutcome, ReportWrite,
    VersionRow,
};
use super::html::{self, esc, path_segment};
use super::judge::{self, Rejection};
use super::keys::{usable_published_keys, KeyRing};
use super::wire::{DeliveryItem, PublishedKey};
use super::{pdf_file_name, web};
use crate::outbox::Outbox;
use crate::spool::Spool;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[11u8; 32])
}

fn payload(k: &SigningKey, report_id: &str, version: i64, site: &str) -> ReportPayload {
    ReportPayload {
        format: report::FORMAT.into(),
        report_id: report_id.into(),
        version,
        status: if version == 1 {
            ReportStatus::Final
        } else {
            ReportStatus::Amended
        },
        supersedes: None,
        reason: None,
        exam: ExamRef {
            exam_id: 7,
            kind: "imaging".into(),
            site: site.into(),
            patient_id: Some("P-1".into()),
            patient_name: Some("张三".into()),
            study_uid: Some("1.2.3.4".into()),
            accession_number: Some("ACC1".into()),
            modality: Some("CT".into()),
        },
        template: "imaging".into(),
        content: [("findings".to_string(), "双肺纹理清晰。".to_string())].into(),
        critical: false,
        preliminary_by: None,
        signer: Signer {
            username: "wang".into(),
            display_name: "王医生".into(),
            grade: "senior".into(),
            signed_at_ms: 1_700_000_000_000,
        },
        key_id: report::key_id(&k.verifying_key()),
    }
}

fn signed(p: &ReportPayload, k: &SigningKey) -> SignedReport {
    report::sign(p, k).expect("sign")
}

#[test]
fn a_valid_report_passes_and_tampering_or_strangers_do_not() {
    let k = key();
    let trusted = [k.verifying_key()];
    let s = signed(&payload(&k, "r1", 1, "township-a"), &k);
    let ok = judge::check(&s, Some("r1"), Some(1), &trusted, Some("township-a"));
    assert_eq!(ok.expect("valid").report_id, "r1");

    // One character changed in the signed text.
    let mut altered = s.clone();
    altered.payload = altered.payload.replacen("双肺", "左肺", 1);
    let r = judge::check(&altered, Some("r1"), Some(1), &trusted, None).expect_err("altered");
    assert_eq!(r.unknown_key, None);
    assert!(r.reason.contains("signature"), "{}", r.reason);

    // Signed by a key we do not trust: flagged as possibly just unknown yet.
    let stranger = SigningKey::from_bytes(&[12u8; 32]);
    let s2 = signed(&payload(&stranger, "r1", 1, "township-a"), &stranger);
    let r = judge::check(&s2, Some("r1"), Some(1), &trusted, None).expect_err("unknown key");
    assert_eq!(
        r.unknown_key,
        Some(report::key_id(&stranger.verifying_key()))
    );
}

#[test]
fn envelope_and_site_must_match_the_signed_payload() {
    let k = key();
    let trusted = [k.verifying_key()];
    let s = signed(&payload(&k, "r1", 2, "township-a"), &k);
    let wrong_id = judge::check(&s, Some("r9"), Some(2), &trusted, None).expect_err("id");
    assert!(wrong_id.reason.contains("report"), "{}", wrong_id.reason);
    let wrong_version = judge::check(&s, Some("r1"), Some(1), &trusted, None).expect_err("v");
    assert!(
        wrong_version.reason.contains("version"),
        "{}",
        wrong_version.reason
    );
    let wrong_site =
        judge::check(&s, Some("r1"), Some(2), &trusted, Some("township-b")).expect_err("site");
    assert!(
        wrong_site.reason.contains("township-b"),
        "{}",
        wrong_site.reason
    );
    // No site configured: not checked.
    judge::check(&s, Some("r1"), Some(2), &trusted, None).expect("no site check");
}

#[test]
fn a_rejected_report_is_filed_under_the_envelope_and_marked() {
    let k = key();
    let mut s = signed(&payload(&k, "r1", 1, "township-a"), &k);
    s.payload = s.payload.replacen("张三", "李四", 1);
    let verdict: Result<ReportPayload, Rejection> = Err(Rejection {
        unknown_key: None,
        reason: "signature does not match the report".into(),
    });
    let v = judge::received_version(&s, Some("r1"), Some(1), &verdict);
    assert!(!v.verified);
    assert_eq!(v.report_id, "r1");
    assert_eq!(v.version, 1);
    assert_eq!(v.payload, s.payload, "kept exactly as received");
    assert_eq!(
        v.exam.patient_name.as_deref(),
        Some("李四"),
        "what it claims"
    );
    assert_eq!(
        v.verify_error.as_deref(),
        Some("signature does not match the report")
    );
}

#[test]
fn delivery_items_are_read_one_by_one() {
    let k = key();
    let s = signed(&payload(&k, "r1", 1, "a"), &k);
    let good = serde_json::json!({"cursor": 5, "kind": "report", "report_id": "r1", "version": 1,
        "status": "final", "critical": false, "signed": s});
    let item = DeliveryItem::parse(&good).expect("item");
    assert_eq!(item.cursor, 5);
    assert_eq!(item.signed, Ok(s));
    let broken = serde_json::json!({"cursor": 6, "kind": "report", "signed": {"payload": 1}});
    assert!(DeliveryItem::parse(&broken).expect("item").signed.is_err());
    assert!(DeliveryItem::parse(&serde_json::json!({"kind": "report"})).is_none());
}

#[test]
fn published_keys_must_carry_their_own_id() {
    let k = key().verifying_key();
    let good = PublishedKey {
        key_id: report::key_id(&k),
        algorithm: "Ed25519".into(),
        public_key: report::encode_public_key(&k),
    };
    let lying = PublishedKey {
        key_id: "0000000000000000".into(),
        ..good.clone()
    };
    let other_algorithm = PublishedKey {
        algorithm: "RSA".into(),
        ..good.clone()
    };
    let usable = usable_published_keys(&[good.clone(), lying, other_algorithm]);
    assert_eq!(usable, vec![(good.key_id.clone(), good.public_key.clone())]);

    let ring = KeyRing::remembered(&[]);
    assert!(ring.snapshot().is_empty());
    assert_eq!(ring.add(&usable), 1);
    assert_eq!(ring.add(&usable), 0, "already known");
    assert!(ring.should_fetch_for("abc"));
    assert!(!ring.should_fetch_for("abc"), "once per id and minute");
    ring.fetch_failed("abc");
    assert!(ring.should_fetch_for("abc"), "a failed fetch is retried");
    assert!(
        !KeyRing::pinned(vec![k]).should_fetch_for("abc"),
        "pinned keys are never fetched"
    );
}

#[test]
fn html_escaping_and_url_segments() {
    assert_eq!(
        esc(r#"<script>alert("x")</script> & 'y'"#),
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
    );
    assert_eq!(esc("张三^San"), "张三^San");
    assert_eq!(path_segment("r-1_a.b~"), "r-1_a.b~");
    assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    assert_eq!(path_segment("报"), "%E6%8A%A5");
    assert_eq!(html::beijing_time(0), "1970-01-01 08:00:00");
}

#[test]
fn pdf_file_names_never_come_from_arbitrary_text() {
    assert_eq!(pdf_file_name("RPT-0001", 2), "RPT-0001-v2.pdf");
    let odd = pdf_file_name("../../etc/passwd", 1);
    assert!(odd.starts_with('r') && odd.ends_with("-v1.pdf"), "{odd}");
    assert!(!odd.contains('/') && !odd.contains(".."), "{odd}");
    assert_ne!(pdf_file_name("a b", 1), pdf_file_name("a c", 1));
}

#[test]
fn clinician_names_are_checked() {
    assert_eq!(web::clean_name("  李医生 "), Some("李医生".into()));
    assert_eq!(web::clean_name("   "), None);
    assert_eq!(web::clean_name("a\u{0}b"), None);
    assert_eq!(web::clean_name(&"x".repeat(65)), None);
}

// ---------------------------------------------------------------------------------
// The tables, on a real database.

struct Db {
    outbox: Outbox,
    committer: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn open_db() -> Db {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).expect("spool");
    let (outbox, committer, _) = Outbox::open(dir.path(), &spool).await.expect("open");
    Db {
        outbox,
        committer: tokio::spawn(committer.run()),
        _dir: dir,
    }
}

impl Db {
    async fn close(self) {
        self.outbox.close().await;
        drop(self.outbox);
        self.committer.await.expect("committer ends");
    }

    async fn deliver(
        &self,
        cursor: i64,
        s: &SignedReport,
        trusted: &[report::VerifyingKey],
    ) -> DeliveryOutcome {
        let p: ReportPayload = serde_json::from_str(&s.payload).expect("payload");
        let verdict = judge::check(s, Some(&p.report_id), Some(p.version), trusted, None);
        let received = judge::received_version(s, Some(&p.report_id), Some(p.version), &verdict);
        let write = ReportWrite::Delivery(Box::new(NewDelivery {
            cursor,
            report_id: Some(p.report_id.clone()),
            version: Some(p.version),
            received: Some(received),
            reject_reason: None,
            grace_ms: 0,
            hl7: false,
        }));
        match self.outbox.write_report(write).await.expect("write") {
            ReportOutcome::Delivery(o) => o,
            other => panic!("unexpected {other:?}"),
        }
    }

    async fn acknowledge(&self, report_id: &str, version: i64, name: &str) -> AcknowledgeOutcome {
        let write = ReportWrite::Acknowledge {
            report_id: report_id.into(),
            version,
            name: name.into(),
        };
        match self.outbox.write_report(write).await.expect("write") {
            ReportOutcome::Acknowledge(o) => o,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn versions_are_kept_once_conflicts_and_forgeries_aside() {
    let db = open_db().await;
    let k = key();
    let trusted = [k.verifying_key()];
    let v1 = signed(&payload(&k, "r1", 1, "a"), &k);
    let first = db.deliver(1, &v1, &trusted).await;
    assert_eq!(first.status, AckStatus::Stored);
    assert!(first.new_version && first.ack_pending && !first.already_recorded);

    // The same cursor again (restart before the cursor was saved): nothing new.
    let again = db.deliver(1, &v1, &trusted).await;
    assert!(again.already_recorded && !again.new_version);
    assert_eq!(again.version_row, first.version_row);

    // The same version re-sent under a new cursor: still one row.
    let resent = db.deliver(2, &v1, &trusted).await;
    assert_eq!(resent.status, AckStatus::Stored);
    assert!(!resent.new_version);
    assert_eq!(resent.version_row, first.version_row);

    // A different text signed for the same version: refused, kept aside.
    let mut other = payload(&k, "r1", 1, "a");
    other.content.insert("impression".into(), "另一份".into());
    let conflict = db.deliver(3, &signed(&other, &k), &trusted).await;
    assert_eq!(conflict.status, AckStatus::Rejected);
    assert_eq!(conflict.reason.as_deref(), Some(db::CONFLICT_REASON));

    // A forged version 2.
    let mut forged = signed(&payload(&k, "r1", 2, "a"), &k);
    forged.payload = forged.payload.replacen("王医生", "赵医生", 1);
    let f = db.deliver(4, &forged, &trusted).await;
    assert_eq!(f.status, AckStatus::Rejected);

    let rows = db::report_versions(db.outbox.pool(), "r1")
        .await
        .expect("rows");
    assert_eq!(rows.len(), 3);
    assert_eq!(rows.iter().filter(|r| r.verified).count(), 1);
    let summaries = html::summarize(
        db::recent_versions(db.outbox.pool(), db::LISTED_REPORTS)
            .await
            .expect("all"),
    );
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].current.as_ref().map(|c| c.version), Some(1));
    assert_eq!(summaries[0].rejected, 2);

    // The received text can never be rewritten.
    let tamper = sqlx::query("UPDATE report_versions SET payload = 'x' WHERE id = ?")
        .bind(first.version_row)
        .execute(db.outbox.pool())
        .await;
    assert!(tamper.is_err(), "trigger refuses");
    db.close().await;
}

#[tokio::test]
async fn the_list_is_bounded_but_never_drops_a_waiting_alert() {
    let db = open_db().await;
    let k = key();
    let trusted = [k.verifying_key()];
    let mut alert = payload(&k, "old-critical", 1, "a");
    alert.critical = true;
    db.deliver(1, &signed(&alert, &k), &trusted).await;
    for (n, id) in ["old", "new-1", "new-2"].iter().enumerate() {
        db.deliver(
            2 + n as i64,
            &signed(&payload(&k, id, 1, "a"), &k),
            &trusted,
        )
        .await;
    }
    let listed = |rows: Vec<VersionRow>| {
        let mut ids: Vec<String> = rows.into_iter().map(|r| r.report_id).collect();
        ids.sort();
        ids
    };
    let rows = db::recent_versions(db.outbox.pool(), 2)
        .await
        .expect("rows");
    assert_eq!(listed(rows), ["new-1", "new-2", "old-critical"]);
    let rows = db::recent_versions(db.outbox.pool(), 10)
        .await
        .expect("rows");
    assert_eq!(listed(rows).len(), 4);
    db.close().await;
}

#[tokio::test]
async fn acknowledgements_are_for_verified_critical_versions_and_the_first_stands() {
    let db = open_db().await;
    let k = key();
    let trusted = [k.verifying_key()];
    let mut p = payload(&k, "crit", 1, "a");
    p.critical = true;
    db.deliver(1, &signed(&p, &k), &trusted).await;
    db.deliver(2, &signed(&payload(&k, "plain", 1, "a"), &k), &trusted)
        .await;
    let mut forged = signed(&payload(&k, "forged", 1, "a"), &k);
    forged.payload = forged.payload.replacen("张三", "李四", 1);
    db.deliver(3, &forged, &trusted).await;

    assert!(matches!(
        db.acknowledge("crit", 1, "李医生").await,
        AcknowledgeOutcome::Recorded { ref by, .. } if by == "李医生"
    ));
    assert!(matches!(
        db.acknowledge("crit", 1, "别人").await,
        AcknowledgeOutcome::Already { ref by, .. } if by == "李医生"
    ));
    assert_eq!(
        db.acknowledge("plain", 1, "x").await,
        AcknowledgeOutcome::NotCritical
    );
    assert_eq!(
        db.acknowledge("forged", 1, "x").await,
        AcknowledgeOutcome::NotVerified
    );
    assert_eq!(
        db.acknowledge("nope", 1, "x").await,
        AcknowledgeOutcome::NotFound
    );
    // A corrected version arrives: the one it replaced is not acknowledged any more.
    let mut corrected = payload(&k, "plain-crit", 2, "b");
    corrected.critical = true;
    let mut first = payload(&k, "plain-crit", 1, "a");
    first.critical = true;
    db.deliver(4, &signed(&first, &k), &trusted).await;
    db.deliver(5, &signed(&corrected, &k), &trusted).await;
    assert_eq!(
        db.acknowledge("plain-crit", 1, "x").await,
        AcknowledgeOutcome::Superseded { current: 2 }
    );
    let due = db::due_relays(db.outbox.pool(), crate::outbox::now_ms() + 1, 10)
        .await
        .expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].acknowledged_by, "李医生");
    db.close().await;
}

#[tokio::test]
async fn keys_once_remembered_are_never_removed_and_cursor_never_goes_back() {
    let db = open_db().await;
    let k = key().verifying_key();
    let row = (report::key_id(&k), report::encode_public_key(&k));
    db.outbox
        .write_report(ReportWrite::Keys(vec![row.clone()]))
        .await
        .expect("keys");
    db.outbox
        .write_report(ReportWrite::Keys(vec![row.clone()]))
        .await
        .expect("again");
    assert_eq!(
        db::remembered_keys(db.outbox.pool()).await.expect("keys"),
        vec![row]
    );
    assert!(sqlx::query("DELETE FROM report_keys")
        .execute(db.outbox.pool())
        .await
        .is_err());
    db.outbox
        .write_report(ReportWrite::Cursor(9))
        .await
        .expect("cursor");
    db.outbox
        .write_report(ReportWrite::Cursor(4))
        .await
        .expect("cursor");
    assert_eq!(
        db::feed_state(db.outbox.pool())
            .await
            .expect("state")
            .cursor,
        9
    );
    db.close().await;
}

#[test]
fn amendments_become_current_and_unacknowledged_critical_comes_first() {
    let k = key();
    let trusted = [k.verifying_key()];
    let row = |id: i64, report: &str, version: i64, critical: bool, received_at: i64| {
        let mut p = payload(&k, report, version, "a");
        p.critical = critical;
        if version > 1 {
            p.supersedes = Some(Supersedes {
                version: version - 1,
                payload_sha256: "00".into(),
            });
            p.reason = Some("更正".into());
        }
        let s = signed(&p, &k);
        let v = judge::received_version(
            &s,
            Some(report),
            Some(version),
            &judge::check(&s, Some(report), Some(version), &trusted, None),
        );
        db::VersionRow {
            id,
            report_id: v.report_id,
            version: v.version,
            status: v.status,
            critical: v.critical,
            exam: v.exam,
            reason: v.reason,
            signer_name: v.signer_name,
            signed_at: v.signed_at,
            payload: None,
            key_id: v.key_id,
            verified: v.verified,
            verify_error: v.verify_error,
            received_at,
            pdf_available: false,
            pdf_error: None,
            acknowledged_by: None,
            acknowledged_at: None,
            relayed_at: None,
        }
    };
    let rows = vec![
        row(1, "old-critical", 1, true, 100),
        row(2, "amended", 1, false, 200),
        row(3, "amended", 2, false, 300),
        row(4, "newest", 1, false, 400),
    ];
    let s = html::summarize(rows);
    let order: Vec<&str> = s.iter().map(|s| s.report_id.as_str()).collect();
    assert_eq!(order, ["old-critical", "newest", "amended"]);
    assert_eq!(s[2].current.as_ref().map(|c| c.version), Some(2));
    assert_eq!(s[2].versions, 2);
    let outbox = crate::lanes::OutboxSummary {
        generated_at: String::new(),
        imaging: crate::lanes::Lane::default(),
        lab: crate::lanes::Lane::default(),
        ecg: crate::lanes::Lane::default(),
        studies_awaiting_completion: 0,
        last_contact: None,
        report_feed_error: None,
    };
    let texts = std::collections::BTreeMap::new();
    let view = html::TownshipView {
        summaries: &s,
        outbox: &outbox,
        alert_texts: &texts,
        now_ms: 0,
    };
    let page = html::township_page(super::i18n::Lang::Zh, &view);
    assert!(page.contains("lang=\"zh-CN\""));
    assert!(page.contains("class=\"critical\""));
}

// ---------------------------------------------------------------------------------
// HL7 to the HIS.

#[test]
fn hl7_fields_are_escaped_and_names_chosen() {
    use super::hl7::{escape, person_name, timestamp};
    assert_eq!(escape(r"a|b^c&d~e\f"), r"a\F\b\S\c\T\d\R\e\E\f");
    assert_eq!(escape("一行\r\n二行\n三\t行"), r"一行\.br\二行\.br\三 行");
    assert_eq!(person_name("Zhang^San=张^三"), "张^三");
    assert_eq!(person_name("Zhang^San"), "Zhang^San");
    assert_eq!(person_name("O|Brien^Pat"), r"O\F\Brien^Pat");
    assert_eq!(timestamp(0), "19700101080000+0800");
}

#[test]
fn an_oru_r01_carries_the_verified_report() {
    use super::hl7::{oru_r01, parse_ack, Answer, Header};
    let k = key();
    let mut p = payload(&k, "r1", 2, "township-a");
    p.status = ReportStatus::Amended;
    p.reason = Some("更正|侧别".into());
    p.critical = true;
    p.content
        .insert("impression".into(), "第一行\n第二行 ^ & ~".into());
    let msg = oru_r01(
        &p,
        &Header {
            receiving_application: "HIS",
            receiving_facility: "township-a",
            control_id: "GW7",
            now_ms: 0,
        },
    );
    let segments: Vec<&str> = msg.split('\r').collect();
    assert_eq!(
        segments[0],
        "MSH|^~\\&|COUNTY_HUB|COUNTY|HIS|township-a|19700101080000+0800||ORU^R01^ORU_R01|GW7|P|2.5.1|||AL|NE||UNICODE UTF-8"
    );
    assert_eq!(segments[1], "PID|1||P-1^^^township-a||张三");
    let obr: Vec<&str> = segments[2].split('|').collect();
    assert_eq!(obr[0], "OBR");
    assert_eq!(obr[2], "ACC1");
    assert_eq!(obr[3], "r1-2");
    assert_eq!(obr[25], "C", "an amendment is a corrected result");
    assert!(msg.contains("NTE|2||修订原因：更正\\F\\侧别"), "{msg}");
    assert!(msg.contains("NTE|1||危急值"), "{msg}");
    let obx: Vec<&str> = segments
        .iter()
        .filter(|s| s.starts_with("OBX|"))
        .copied()
        .collect();
    assert_eq!(obx.len(), 2);
    assert!(
        obx[1].contains("|impression^诊断意见^L||第一行\\.br\\第二行 \\S\\ \\T\\ \\R\\|"),
        "{}",
        obx[1]
    );
    assert_eq!(obx[1].split('|').nth(8), Some("AA"), "critical flag");
    assert!(!msg.contains('\n'), "segments are CR-separated only");

    assert_eq!(
        parse_ack("MSH|^~\\&|HIS\rMSA|AA|GW7", "GW7"),
        Ok(Answer::Accepted)
    );
    assert!(matches!(
        parse_ack("MSH|^~\\&|HIS\rMSA|AR|GW7|bad patient", "GW7"),
        Ok(Answer::Rejected(e)) if e.contains("bad patient")
    ));
    assert!(matches!(
        parse_ack("MSA|AE|GW7|busy", "GW7"),
        Ok(Answer::Error(_))
    ));
    assert!(
        parse_ack("MSA|AA|GW8", "GW7").is_err(),
        "someone else's ACK"
    );
    assert!(parse_ack("MSH|^~\\&|HIS", "GW7").is_err());
}
