//! Receiving: C-ECHO, C-STORE of real files in many transfer syntaxes, idempotency,
//! STAT marking, refusal and quarantine of bad instances, aborted transfers, limits.

use std::collections::HashSet;
use std::time::Duration;

use formats::dicom::{read_instance_header, Limits};

use crate::helpers::*;

const MR: &str = "1.2.840.10008.5.1.4.1.1.4";
const SC: &str = "1.2.840.10008.5.1.4.1.1.7";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const MR_SMALL_UID: &str = "1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457";

/// Check that a spool file is a valid Part 10 file whose data set is exactly the one
/// in `sent` (a Part 10 file holding what went over the wire).
fn assert_spooled_as_sent(app: &TestApp, item: &ItemRow, sent: &[u8]) {
    let source = sent;
    let spooled = std::fs::read(app.file(&item.path)).expect("spool file exists");
    assert_eq!(spooled.len() as i64, item.size);
    assert_eq!(
        dataset_of(&spooled),
        dataset_of(source),
        "data set of {} must be byte-identical to what was sent",
        item.sop_instance_uid
    );
    assert_eq!(&spooled[item.dataset_offset as usize..], dataset_of(source));
    assert_eq!(transfer_syntax_of(&spooled), item.transfer_syntax_uid);
    let header = read_instance_header(
        std::fs::File::open(app.file(&item.path)).expect("open"),
        spooled.len() as u64,
        Limits::default(),
    )
    .expect("spool file parses as Part 10");
    assert_eq!(header.sop_instance_uid, item.sop_instance_uid);
    assert_eq!(header.study_instance_uid, item.study_uid);
    // SourceApplicationEntityTitle names the sender.
    let meta = &spooled[..item.dataset_offset as usize];
    assert!(
        meta.windows(item.calling_ae.len())
            .any(|w| w == item.calling_ae.as_bytes()),
        "meta group names the calling AE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_succeeds() {
    let app = TestApp::start(|_| {}).await;
    let run = app.echoscu(&[]).await;
    assert!(run.success, "{}", run.output);
    assert!(
        run.output.contains("Received Echo Response (Success)"),
        "{}",
        run.output
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncompressed_instances_are_spooled_byte_identical_and_committed() {
    let app = TestApp::start(|_| {}).await;
    let files: Vec<_> = [
        "CT_small.dcm",
        "MR_small.dcm",
        "SC_rgb_small_odd.dcm",
        "examples_rgb_color.dcm",
    ]
    .iter()
    .map(|f| testdata(&format!("single/{f}")))
    .collect();
    let run = app.storescu(&[], &files).await;
    assert!(run.success, "{}", run.output);
    assert_eq!(run.stored(), 4, "{}", run.output);
    // Implicit VR proposed only, so dcmtk sends the file's own encoding.
    let implicit = testdata("single/MR_small_implicit.dcm");
    let run = app
        .storescu(&["-xi"], std::slice::from_ref(&implicit))
        .await;
    assert_eq!(run.stored(), 1, "{}", run.output);

    let items = app.items().await;
    assert_eq!(items.len(), 5, "{items:#?}");
    let sent = files
        .iter()
        .map(|f| (f, &[][..]))
        .chain(std::iter::once((&implicit, &["-xi"][..])));
    for (item, (file, args)) in items.iter().zip(sent) {
        assert_eq!(item.state, "pending");
        assert_eq!(item.calling_ae, "TESTSCU");
        let source = std::fs::read(file).expect("read source");
        assert_eq!(item.transfer_syntax_uid, transfer_syntax_of(&source));
        assert_spooled_as_sent(&app, item, &dcmtk_reference(args, file).await);
    }
    // The two MR encodings share a SOP Instance UID: two versions, for the hub to judge.
    assert_eq!(
        items
            .iter()
            .filter(|i| i.sop_instance_uid == MR_SMALL_UID)
            .count(),
        2
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_transfer_syntaxes_are_accepted_as_received() {
    let app = TestApp::start(|_| {}).await;
    let cases = [
        ("JPEG2000.dcm", "-xw", "1.2.840.10008.1.2.4.91"),
        ("MR_small_RLE.dcm", "-xr", "1.2.840.10008.1.2.5"),
        (
            "MR_small_jpeg_ls_lossless.dcm",
            "-xt",
            "1.2.840.10008.1.2.4.80",
        ),
        ("SC_rgb_jpeg_dcmtk.dcm", "-xy", "1.2.840.10008.1.2.4.50"),
        ("image_dfl.dcm", "-xd", "1.2.840.10008.1.2.1.99"),
    ];
    for (file, flag, ts) in cases {
        let path = testdata(&format!("compressed/{file}"));
        let run = app.storescu(&[flag], std::slice::from_ref(&path)).await;
        assert_eq!(run.stored(), 1, "{file}: {}", run.output);
        let items = app.items().await;
        let item = items.last().expect("an item");
        assert_eq!(
            item.transfer_syntax_uid, ts,
            "{file} must not be transcoded"
        );
        assert_spooled_as_sent(&app, item, &dcmtk_reference(&[flag], &path).await);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_sets_are_stored_bit_for_bit_in_their_own_transfer_syntax() {
    // dcmtk re-encodes while sending; our raw SCU sends each file's data set exactly,
    // so the spool must hold exactly those bytes.
    let app = TestApp::start(|_| {}).await;
    let files = [
        "single/CT_small.dcm",
        "single/MR_small_implicit.dcm",
        "single/SC_rgb_small_odd.dcm",
        "compressed/JPEG2000.dcm",
        "compressed/MR_small_RLE.dcm",
        "compressed/MR_small_jpeg_ls_lossless.dcm",
        "compressed/SC_rgb_jpeg_dcmtk.dcm",
        "compressed/image_dfl.dcm",
    ];
    for file in files {
        let source = std::fs::read(testdata(file)).expect("read");
        let header = read_instance_header(
            std::fs::File::open(testdata(file)).expect("open"),
            source.len() as u64,
            Limits::default(),
        )
        .expect("sample parses");
        let ts = transfer_syntax_of(&source);
        let mut scu = RawScu::connect(app.port(), &header.sop_class_uid, &ts).await;
        let (status, comment) = scu
            .store(
                &header.sop_class_uid,
                &header.sop_instance_uid,
                dataset_of(&source),
            )
            .await;
        assert_eq!(status, 0, "{file}: {comment:?}");
        scu.release().await;
        let items = app.items().await;
        let item = items.last().expect("item");
        assert_eq!(item.transfer_syntax_uid, ts);
        assert_spooled_as_sent(&app, item, &source);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_resends_are_not_queued_twice() {
    let app = TestApp::start(|_| {}).await;
    let ct = testdata("single/CT_small.dcm");
    for _ in 0..3 {
        let run = app.storescu(&[], std::slice::from_ref(&ct)).await;
        assert_eq!(run.stored(), 1, "{}", run.output);
    }
    let items = app.items().await;
    assert_eq!(items.len(), 1, "{items:#?}");
    // the surplus copies were removed from the spool
    assert_eq!(app.spool_files().len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_by_called_ae_title_or_nothing() {
    let app = TestApp::start(|c| c.stat_ae_titles = vec!["ER_GW".into()]).await;
    let run = app
        .storescu(&["-aec", "ER_GW"], &[testdata("single/CT_small.dcm")])
        .await;
    assert_eq!(run.stored(), 1, "{}", run.output);
    let run = app.storescu(&[], &[testdata("single/MR_small.dcm")]).await;
    assert_eq!(run.stored(), 1, "{}", run.output);
    let items = app.items().await;
    let priorities: Vec<(bool, i64)> = items
        .iter()
        .map(|i| (i.sop_instance_uid == MR_SMALL_UID, i.priority))
        .collect();
    assert_eq!(priorities, vec![(false, 1), (true, 0)]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_instances_are_refused_quarantined_and_the_association_goes_on() {
    let app = TestApp::start(|_| {}).await;
    let mut scu = RawScu::connect(app.port(), MR, EXPLICIT_LE).await;

    // Pixel data cut short: dcmtk will not even send this file; a broken modality might.
    let truncated = std::fs::read(testdata("edge/MR_truncated.dcm")).expect("read");
    let (status, comment) = scu.store(MR, MR_SMALL_UID, dataset_of(&truncated)).await;
    assert_eq!(status, 0xC000, "{comment:?}");
    let truncated_reason = comment.expect("error comment");

    // A data set that is not the instance the command announces.
    let mr = std::fs::read(testdata("single/MR_small.dcm")).expect("read");
    let (status, comment) = scu.store(MR, "1.2.3.4.5", dataset_of(&mr)).await;
    assert_eq!(status, 0xA900, "{comment:?}");
    assert!(
        comment.as_deref().unwrap_or("").contains("differs"),
        "{comment:?}"
    );

    // The same association still stores a good instance.
    let (status, comment) = scu.store(MR, MR_SMALL_UID, dataset_of(&mr)).await;
    assert_eq!(status, 0x0000, "{comment:?}");
    scu.release().await;

    // No SOP Class or Instance UID in the data set at all.
    let mut scu = RawScu::connect(app.port(), SC, IMPLICIT_LE).await;
    let empty = std::fs::read(testdata("edge/empty_charset_LEI.dcm")).expect("read");
    let (status, comment) = scu
        .store(SC, "1.2.826.0.1.3680043.2.1143.42", dataset_of(&empty))
        .await;
    assert_eq!(status, 0xC000, "{comment:?}");
    assert!(
        comment.as_deref().unwrap_or("").contains("SOPClassUID"),
        "{comment:?}"
    );
    scu.release().await;

    let items = app.items().await;
    assert_eq!(
        items.len(),
        1,
        "only the good instance is queued: {items:#?}"
    );
    let q = app.quarantine().await;
    assert_eq!(q.len(), 3, "{q:#?}");
    for row in &q {
        assert_eq!(row.source, "receive");
        assert_eq!(row.calling_ae.as_deref(), Some("RAWSCU"));
        assert!(!row.reason.is_empty());
        let kept = app.file(row.path.as_deref().expect("file kept"));
        assert!(kept.exists(), "quarantined file {kept:?} exists");
    }
    assert!(truncated_reason.len() <= 64);
    assert!(q[0]
        .reason
        .starts_with(&truncated_reason[..truncated_reason.len().min(40)]));
    assert_eq!(q[1].sop_instance_uid.as_deref(), Some("1.2.3.4.5"));
    // what was received is what is kept
    let kept = std::fs::read(app.file(q[1].path.as_deref().expect("path"))).expect("read");
    assert_eq!(dataset_of(&kept), dataset_of(&mr));
    // nothing of the refused instances is left in the spool
    assert_eq!(app.spool_files().len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storescu_sees_the_failure_status_of_an_invalid_instance() {
    let app = TestApp::start(|_| {}).await;
    // dcmtk sends what it can read; our header check refuses an invalid Study UID: one
    // with a letter, one with a component's leading zero (PS3.5 9.1).
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, uid) in [
        ("bad_uid.dcm", "1.2.840.bad.uid"),
        ("zero_uid.dcm", "1.2.03.4"),
    ] {
        let file = dir.path().join(name);
        std::fs::copy(testdata("single/CT_small.dcm"), &file).expect("copy");
        let status = std::process::Command::new("/usr/bin/dcmodify")
            .args(["-nb", "-m", &format!("(0020,000d)={uid}")])
            .arg(&file)
            .status()
            .expect("dcmodify (dcmtk) runs");
        assert!(status.success());
        let run = app.storescu(&["-nh"], std::slice::from_ref(&file)).await;
        assert_eq!(run.stored(), 0, "{uid}: {}", run.output);
        assert!(run.output.contains("CannotUnderstand"), "{}", run.output);
    }
    let q = app.quarantine().await;
    assert_eq!(q.len(), 2);
    assert!(q[0].reason.contains("StudyInstanceUID"), "{:?}", q[0]);
    assert!(q[1].reason.contains("leading zero"), "{:?}", q[1]);
    assert!(app.items().await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_transfer_leaves_nothing_behind() {
    let app = TestApp::start(|_| {}).await;
    let ct = std::fs::read(testdata("single/CT_small.dcm")).expect("read");
    let data = dataset_of(&ct);
    let scu = RawScu::connect(app.port(), "1.2.840.10008.5.1.4.1.1.2", EXPLICIT_LE).await;
    scu.store_then_abort(
        "1.2.840.10008.5.1.4.1.1.2",
        "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322",
        &data[..data.len() / 2],
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "partial spool file removed",
        || async { app.spool_files().is_empty() },
    )
    .await;
    assert!(app.items().await.is_empty());
    // and the gateway still serves
    assert!(app.echoscu(&[]).await.success);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn associations_beyond_the_limit_are_rejected_transiently() {
    let app = TestApp::start(|c| c.max_associations = 1).await;
    let holder = RawScu::connect(app.port(), MR, EXPLICIT_LE).await;
    let run = app.echoscu(&[]).await;
    assert!(!run.success, "{}", run.output);
    assert!(run.output.contains("Rejected"), "{}", run.output);
    holder.release().await;
    eventually(Duration::from_secs(5), "a slot frees up", || async {
        app.echoscu(&[]).await.success
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_associations_all_land_once() {
    let app = TestApp::start(|_| {}).await;
    let folders = ["tree/77654033", "tree/98892001", "tree/98892003"];
    let runs = futures_util::future::join_all(folders.iter().map(|f| {
        let dir = testdata(f);
        let app = &app;
        async move { app.storescu(&["+sd", "+r"], &[dir]).await }
    }))
    .await;
    let sent: usize = runs.iter().map(|r| r.stored()).sum();
    for r in &runs {
        assert!(r.success, "{}", r.output);
    }
    assert_eq!(sent, 31, "every file of the tree but the DICOMDIR");
    let items = app.items().await;
    let uids: HashSet<&str> = items.iter().map(|i| i.sop_instance_uid.as_str()).collect();
    let ids: HashSet<i64> = items.iter().map(|i| i.id).collect();
    assert_eq!(ids.len(), 31);
    assert_eq!(items.len(), 31);
    assert_eq!(uids.len(), 31);
    // every association closed: no study is held open
    for study in items
        .iter()
        .map(|i| i.study_uid.clone())
        .collect::<HashSet<_>>()
    {
        eventually(
            Duration::from_secs(5),
            "association release recorded",
            || {
                let study = study.clone();
                let app = &app;
                async move { app.study(&study).await.map(|s| s.0) == Some(0) }
            },
        )
        .await;
    }
    app.stop().await;
}
