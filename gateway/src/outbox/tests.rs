//! Outbox tests on a real SQLite database in a temporary directory.

use std::path::Path;
use std::sync::Arc;

use sqlx::Row;
use tokio::task::JoinHandle;

use super::*;
use crate::spool::{FileMeta, Spool};

struct Open {
    outbox: Outbox,
    committer: JoinHandle<()>,
    report: RecoveryReport,
    spool: Arc<Spool>,
}

async fn open(dir: &Path) -> Open {
    let spool = Spool::open(dir).expect("spool");
    let (outbox, committer, report) = Outbox::open(dir, &spool).await.expect("open outbox");
    Open {
        outbox,
        committer: tokio::spawn(committer.run()),
        report,
        spool,
    }
}

impl Open {
    /// Stop like a clean shutdown: drop the handle, let the committer drain.
    async fn close(self) {
        self.outbox.close().await;
        drop(self.outbox);
        self.committer.await.expect("committer ends");
    }
}

fn item(sop: &str, study: &str, sha: &str, path: &str) -> NewItem {
    NewItem {
        sop_instance_uid: sop.into(),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        study_uid: study.into(),
        series_uid: format!("{study}.1"),
        transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
        calling_ae: "CT01".into(),
        called_ae: "TOWNSHIP_GW".into(),
        path: path.into(),
        size: 100,
        dataset_offset: 0,
        sha256: sha.into(),
        priority: Priority::Routine,
        labels: StudyLabels::default(),
    }
}

async fn count(outbox: &Outbox, sql: &'static str) -> i64 {
    sqlx::query(sql)
        .fetch_one(outbox.pool())
        .await
        .expect("query")
        .try_get(0)
        .expect("count")
}

/// Ride a no-op write through the committer so deferred `file_synced` marks land.
async fn settle(outbox: &Outbox) {
    outbox
        .apply(vec![ItemUpdate::Delivered { id: -1 }])
        .await
        .expect("settle");
}

#[tokio::test]
async fn identical_resend_is_not_queued_twice_but_a_new_version_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = open(dir.path()).await;
    let ob = &o.outbox;

    let first = ob
        .store(item("1.1", "9.1", "aa", "spool/a"), true)
        .await
        .expect("store");
    let StoreOutcome::Stored(id) = first else {
        panic!("expected stored, got {first:?}")
    };

    // Before its fsync is confirmed a row is not trusted for deduplication: the
    // re-send is kept as its own item (the hub will answer it as already stored).
    let early = ob
        .store(item("1.1", "9.1", "aa", "spool/b"), false)
        .await
        .expect("store");
    assert!(matches!(early, StoreOutcome::Stored(other) if other != id));

    ob.file_synced(id);
    let again = ob
        .store(item("1.1", "9.1", "aa", "spool/c"), false)
        .await
        .expect("store");
    assert_eq!(again, StoreOutcome::Duplicate(id));

    // Same UID, different bytes: a new pending version for the hub to judge.
    let v2 = ob
        .store(item("1.1", "9.1", "bb", "spool/d"), false)
        .await
        .expect("store");
    assert!(matches!(v2, StoreOutcome::Stored(_)));

    // Delivered instances are still recognised.
    ob.apply(vec![ItemUpdate::Delivered { id }])
        .await
        .expect("apply");
    let after = ob
        .store(item("1.1", "9.1", "aa", "spool/e"), false)
        .await
        .expect("store");
    assert_eq!(after, StoreOutcome::Duplicate(id));

    // A rejected one is not: re-sending it is an operator's deliberate retry.
    let StoreOutcome::Stored(other) = ob
        .store(item("2.2", "9.1", "cc", "spool/f"), false)
        .await
        .expect("store")
    else {
        panic!("expected stored")
    };
    ob.file_synced(other);
    ob.apply(vec![ItemUpdate::Rejected {
        id: other,
        reason: "hub refused (FailureReason 0xA900)".into(),
        quarantine_path: Some("quarantine/f".into()),
    }])
    .await
    .expect("apply");
    let retry = ob
        .store(item("2.2", "9.1", "cc", "spool/g"), false)
        .await
        .expect("store");
    assert!(matches!(retry, StoreOutcome::Stored(_)));

    assert_eq!(
        count(
            ob,
            "SELECT COUNT(*) FROM items WHERE sop_instance_uid = '1.1'"
        )
        .await,
        3
    );
    assert_eq!(
        count(ob, "SELECT COUNT(*) FROM quarantine WHERE source = 'hub'").await,
        1
    );
    o.close().await;
}

#[tokio::test]
async fn concurrent_stores_are_group_committed_and_all_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = open(dir.path()).await;
    let mut waiters = Vec::new();
    for i in 0..64 {
        let ob = o.outbox.clone();
        waiters.push(tokio::spawn(async move {
            ob.store(
                item(
                    &format!("1.{i}"),
                    "9.2",
                    &format!("{i:x}"),
                    &format!("spool/{i}"),
                ),
                i == 0,
            )
            .await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for w in waiters {
        match w.await.expect("join").expect("store") {
            StoreOutcome::Stored(id) => assert!(ids.insert(id)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        count(
            &o.outbox,
            "SELECT COUNT(*) FROM items WHERE state = 'pending'"
        )
        .await,
        64
    );
    assert_eq!(
        count(&o.outbox, "SELECT open_associations FROM studies").await,
        1
    );
    o.close().await;
}

#[tokio::test]
async fn due_items_are_stat_first_then_oldest_one_version_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = open(dir.path()).await;
    let ob = &o.outbox;
    ob.store(item("1.1", "9.3", "a", "spool/1"), true)
        .await
        .expect("store");
    ob.store(item("1.2", "9.3", "b", "spool/2"), false)
        .await
        .expect("store");
    ob.store(item("1.1", "9.3", "c", "spool/3"), false)
        .await
        .expect("store"); // v2 of 1.1
    let mut stat = item("1.4", "9.4", "d", "spool/4");
    stat.priority = Priority::Stat;
    ob.store(stat, true).await.expect("store");

    let due = ob.due_items(now_ms() + 1, 100).await.expect("due");
    let order: Vec<(&str, &str)> = due
        .iter()
        .map(|d| (d.sop_instance_uid.as_str(), d.path.as_str()))
        .collect();
    assert_eq!(
        order,
        vec![("1.4", "spool/4"), ("1.1", "spool/1"), ("1.2", "spool/2")]
    );

    // After v1 of 1.1 is delivered, v2 becomes eligible.
    ob.apply(vec![ItemUpdate::Delivered { id: due[1].id }])
        .await
        .expect("apply");
    // A retry in the future takes an item out of the due set.
    ob.apply(vec![ItemUpdate::Retry {
        id: due[2].id,
        next_attempt_at: now_ms() + 60_000,
        error: "HTTP 503: busy".into(),
    }])
    .await
    .expect("apply");
    let due = ob.due_items(now_ms() + 1, 100).await.expect("due");
    let order: Vec<&str> = due.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(order, vec!["spool/4", "spool/3"]);
    let retried = count(ob, "SELECT attempts FROM items WHERE path = 'spool/2'").await;
    assert_eq!(retried, 1);
    o.close().await;
}

#[tokio::test]
async fn completion_waits_for_closed_associations_quiet_and_delivery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = open(dir.path()).await;
    let ob = &o.outbox;
    let StoreOutcome::Stored(id) = ob
        .store(item("1.1", "9.5", "a", "spool/1"), true)
        .await
        .expect("store")
    else {
        panic!("stored")
    };
    let later = now_ms() + 1;
    // association still open
    assert!(ob
        .complete_studies(later, later)
        .await
        .expect("q")
        .is_empty());
    ob.association_closed(vec!["9.5".into()]);
    settle(ob).await;
    // still pending at the hub
    assert!(ob
        .complete_studies(later, later)
        .await
        .expect("q")
        .is_empty());
    ob.apply(vec![ItemUpdate::Delivered { id }])
        .await
        .expect("apply");
    // quiet period not over (cutoff before the last instance)
    assert!(ob
        .complete_studies(later - 60_000, later)
        .await
        .expect("q")
        .is_empty());
    let ready = ob.complete_studies(later, later).await.expect("q");
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].delivered_instances, 1);
    assert_eq!(ready[0].priority, Priority::Routine);

    // A notice based on an older last_received_at does not count.
    ob.record_notice(NoticeResult::Acknowledged {
        study_uid: "9.5".into(),
        last_received_at: ready[0].last_received_at - 1,
    })
    .await
    .expect("record");
    assert_eq!(ob.complete_studies(later, later).await.expect("q").len(), 1);
    ob.record_notice(NoticeResult::Acknowledged {
        study_uid: "9.5".into(),
        last_received_at: ready[0].last_received_at,
    })
    .await
    .expect("record");
    assert!(ob
        .complete_studies(later, later)
        .await
        .expect("q")
        .is_empty());

    // A late STAT instance reopens the study; it is reported again once delivered.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mut late = item("1.2", "9.5", "b", "spool/2");
    late.priority = Priority::Stat;
    let StoreOutcome::Stored(late_id) = ob.store(late, true).await.expect("store") else {
        panic!("stored")
    };
    ob.association_closed(vec!["9.5".into()]);
    ob.apply(vec![ItemUpdate::Delivered { id: late_id }])
        .await
        .expect("apply");
    let later = now_ms() + 1;
    let ready = ob.complete_studies(later, later).await.expect("q");
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].delivered_instances, 2);
    assert_eq!(ready[0].priority, Priority::Stat);

    // A failed notice backs off.
    ob.record_notice(NoticeResult::Failed {
        study_uid: "9.5".into(),
        next_notify_at: later + 60_000,
        error: "HTTP 503".into(),
    })
    .await
    .expect("record");
    assert!(ob
        .complete_studies(later, later)
        .await
        .expect("q")
        .is_empty());
    assert_eq!(count(ob, "SELECT notify_attempts FROM studies").await, 1);
    o.close().await;
}

async fn spool_file(spool: &Arc<Spool>, sop: &str, data: &[u8]) -> crate::spool::WrittenFile {
    let meta = FileMeta {
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid: sop,
        transfer_syntax_uid: "1.2.840.10008.1.2.1",
        source_ae_title: "CT01",
    };
    let mut w = spool.create(&meta).await.expect("create");
    w.write(data).await;
    let written = w.finish().await.expect("finish");
    written.file.sync_all().expect("fsync");
    written
}

fn item_for(written: &crate::spool::WrittenFile, sop: &str) -> NewItem {
    NewItem {
        size: written.size,
        dataset_offset: written.dataset_offset,
        ..item(sop, "9.6", &written.sha256, &written.rel_path)
    }
}

#[tokio::test]
async fn restart_resumes_pending_verifies_unsynced_rows_and_sweeps_orphans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = open(dir.path()).await;
    o.spool.prefill().expect("prefill");
    let synced = spool_file(&o.spool, "1.1", b"first data set").await;
    let intact = spool_file(&o.spool, "1.2", b"second data set").await;
    let damaged = spool_file(&o.spool, "1.3", b"third data set, cut short by a crash").await;
    let StoreOutcome::Stored(id1) = o
        .outbox
        .store(item_for(&synced, "1.1"), true)
        .await
        .expect("store")
    else {
        panic!("stored")
    };
    o.outbox.file_synced(id1);
    // These two never got their fsync confirmed (as if the process died meanwhile).
    o.outbox
        .store(item_for(&intact, "1.2"), false)
        .await
        .expect("store");
    o.outbox
        .store(item_for(&damaged, "1.3"), false)
        .await
        .expect("store");
    settle(&o.outbox).await;
    let spool = Arc::clone(&o.spool);
    o.close().await;

    std::fs::write(&damaged.abs_path, b"garbage").expect("damage");
    std::fs::write(spool.absolute("spool/orphan.dcm"), b"left from a crash").expect("orphan");

    let o = open(dir.path()).await;
    assert_eq!(o.report.pending, 2);
    assert_eq!(o.report.verified, 1);
    assert_eq!(o.report.dropped, vec!["1.3".to_string()]);
    // the orphan, the damaged file and the unused pre-created blanks
    assert!(o.report.swept >= 2, "{:?}", o.report);
    assert!(!spool.absolute("spool/orphan.dcm").exists());
    assert!(!damaged.abs_path.exists());
    assert!(synced.abs_path.exists() && intact.abs_path.exists());
    assert_eq!(
        count(&o.outbox, "SELECT SUM(open_associations) FROM studies").await,
        0
    );
    assert_eq!(
        count(
            &o.outbox,
            "SELECT COUNT(*) FROM items WHERE file_synced = 0"
        )
        .await,
        0
    );
    let due = o.outbox.due_items(now_ms() + 1, 10).await.expect("due");
    let uids: Vec<&str> = due.iter().map(|d| d.sop_instance_uid.as_str()).collect();
    assert_eq!(uids, vec!["1.1", "1.2"]);
    o.close().await;
}

fn ecg_file(sha: &str, stat: bool) -> crate::ecg::db::NewEcgFile {
    crate::ecg::db::NewEcgFile {
        sha256: sha.into(),
        body: format!("bytes of {sha}").into_bytes(),
        file_name: format!("{sha}.scp"),
        format: "SCP-ECG".into(),
        leads: 12,
        duration_ms: 10_000,
        patient_id: Some("P1".into()),
        patient_name: None,
        stat,
    }
}

#[tokio::test]
async fn ecg_files_are_stored_once_sent_stat_first_and_requeued_after_a_rejection() {
    use crate::ecg::db::{EcgOutcome, EcgWrite};
    use crate::filelane::db::{self, Delivery};
    use crate::filelane::FileLane;
    let dir = tempfile::tempdir().expect("tempdir");
    let o = open(dir.path()).await;
    let write = |w| o.outbox.write_ecg(w);
    let receive = |sha: &str, stat| EcgWrite::Receive(Box::new(ecg_file(sha, stat)));
    let EcgOutcome::Stored(a) = write(receive("aa", false)).await.expect("a") else {
        panic!("stored")
    };
    let EcgOutcome::Stored(b) = write(receive("bb", false)).await.expect("b") else {
        panic!("stored")
    };
    assert_eq!(
        write(receive("aa", false)).await.expect("again"),
        EcgOutcome::Duplicate {
            id: a,
            state: "pending".into(),
            made_stat: false
        }
    );
    let now = now_ms() + 1;
    let due = db::due(o.outbox.pool(), FileLane::Ecg, now)
        .await
        .expect("due")
        .expect("some");
    assert_eq!(due.id, a, "oldest first");
    // The second imported again as STAT: it is STAT now and goes first.
    let again = write(receive("bb", true)).await.expect("stat again");
    assert!(again.gives_work());
    let due = db::due(o.outbox.pool(), FileLane::Ecg, now)
        .await
        .expect("due")
        .expect("some");
    assert_eq!((due.id, due.urgent), (b, true));
    assert_eq!(due.body, b"bytes of bb");
    // A retry waits its turn without holding the other back.
    let record = |d| o.outbox.record_delivery(FileLane::Ecg, d);
    record(Delivery::Retry {
        id: b,
        next_attempt_at: now + 60_000,
        error: "HTTP 503".into(),
    })
    .await
    .expect("retry");
    let due = db::due(o.outbox.pool(), FileLane::Ecg, now)
        .await
        .expect("due")
        .expect("some");
    assert_eq!(due.id, a);
    assert!(o.outbox.next_due_at().await.expect("next").is_some());

    record(Delivery::Delivered {
        id: a,
        hub_status: Some("stored".into()),
        exam_id: Some(7),
    })
    .await
    .expect("delivered");
    assert_eq!(
        count(
            &o.outbox,
            "SELECT LENGTH(body) FROM ecg_files WHERE sha256 = 'aa'"
        )
        .await,
        0,
        "the hub keeps the original once delivered"
    );
    assert!(matches!(
        write(receive("aa", true)).await.expect("delivered again"),
        EcgOutcome::Duplicate {
            made_stat: false,
            ..
        }
    ));

    record(Delivery::Rejected {
        id: b,
        reason: "hub refused the file (HTTP 400): no leads".into(),
        quarantine_path: Some("quarantine/x.scp".into()),
    })
    .await
    .expect("rejected");
    let row = sqlx::query(
        "SELECT kind, source, file_name, sha256, reason FROM quarantine WHERE kind = 'ecg'",
    )
    .fetch_one(o.outbox.pool())
    .await
    .expect("quarantine row");
    assert_eq!(row.get::<String, _>(1), "hub");
    assert_eq!(row.get::<Option<String>, _>(2).as_deref(), Some("bb.scp"));
    assert_eq!(row.get::<Option<String>, _>(3).as_deref(), Some("bb"));
    // Imported again after the cause was fixed at the hub: sent again.
    assert_eq!(
        write(receive("bb", false)).await.expect("requeue"),
        EcgOutcome::Requeued(b)
    );
    let due = db::due(o.outbox.pool(), FileLane::Ecg, now_ms() + 1)
        .await
        .expect("due")
        .expect("some");
    assert_eq!((due.id, due.urgent, due.attempts), (b, true, 0));
    assert_eq!(due.body, b"bytes of bb");
    o.close().await;
}

/// A database of the previous schema (lab migration) keeps its quarantine when the ECG
/// migration rebuilds the table.
#[tokio::test]
async fn the_ecg_migration_keeps_existing_quarantine_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = tempfile::tempdir().expect("tempdir");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for name in ["0001_outbox.sql", "0002_reports.sql", "0003_lab.sql"] {
        std::fs::copy(src.join(name), old.path().join(name)).expect("copy migration");
    }
    let options = connect_options(&dir.path().join(DB_FILE)).create_if_missing(true);
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .expect("connect");
    sqlx::migrate::Migrator::new(old.path())
        .await
        .expect("old migrations")
        .run(&mut conn)
        .await
        .expect("migrate to the lab schema");
    sqlx::query(
        "INSERT INTO quarantine (id, calling_ae, path, source, reason, created_at, kind,
                                 control_id, sha256)
         VALUES (5, 'CT01', 'quarantine/a.dcm', 'receive', 'unparsable', 1, 'dicom', NULL, NULL),
                (9, '10.0.0.7:5000', 'quarantine/b.hl7', 'hub', 'refused', 2, 'hl7', 'C1', 'ab')",
    )
    .execute(&mut conn)
    .await
    .expect("old rows");
    conn.close().await.expect("close");

    let o = open(dir.path()).await;
    let rows: Vec<(i64, String, Option<String>, Option<String>)> =
        sqlx::query("SELECT id, kind, control_id, file_name FROM quarantine ORDER BY id")
            .fetch_all(o.outbox.pool())
            .await
            .expect("rows")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
    assert_eq!(
        rows,
        vec![
            (5, "dicom".into(), None, None),
            (9, "hl7".into(), Some("C1".into()), None)
        ]
    );
    o.outbox
        .quarantine(QuarantineEntry {
            reason: "not an ECG file we can read".into(),
            kind: QuarantineKind::Ecg,
            file_name: Some("x.scp".into()),
            ..QuarantineEntry::default()
        })
        .await
        .expect("an ECG quarantine row");
    assert_eq!(
        count(
            &o.outbox,
            "SELECT MAX(id) FROM quarantine WHERE kind = 'ecg'"
        )
        .await,
        10,
        "ids continue after the kept rows"
    );
    o.close().await;
}
