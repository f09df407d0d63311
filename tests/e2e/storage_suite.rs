//! The storage API itself on both backends: index outcomes, site ownership, exams and
//! large blobs through the streaming upload path.

use std::io::Write;

use anyhow::{ensure, Context, Result};
use formats::dicom::{read_instance_header, Limits};
use futures_util::StreamExt;
use storage::exams::{Completion, Priority};
use storage::index::{blob_key, index_batch, IndexOutcome, NewInstance};
use tests::{testdata, Backend, Env};

use crate::on_both_backends;

on_both_backends!(
    index_outcomes_and_exam_lifecycle,
    large_blob_streams_through
);

fn instance(rel: &str, sha: &str) -> Result<NewInstance> {
    let path = testdata(rel);
    let len = std::fs::metadata(&path)?.len();
    let header = read_instance_header(std::fs::File::open(&path)?, len, Limits::default())?;
    let blob_key = blob_key(sha);
    Ok(NewInstance {
        header,
        size_bytes: len,
        data_set_sha256: sha.into(),
        blob_key,
    })
}

pub async fn index_outcomes_and_exam_lifecycle(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let s = env.storage().await?;
    let ct = instance("dicom/single/CT_small.dcm", "aa")?;
    let study = ct.header.study_instance_uid.clone();
    let out = index_batch(&s.db, "township-a", &[ct.clone(), ct.clone()], &audit()).await?;
    ensure!(
        out == vec![IndexOutcome::Stored, IndexOutcome::AlreadyStored],
        "{out:?}"
    );
    let mut changed = ct.clone();
    changed.data_set_sha256 = "bb".into();
    let out = index_batch(&s.db, "township-a", &[changed], &audit()).await?;
    ensure!(
        matches!(&out[0], IndexOutcome::Conflict { stored_sha256 } if stored_sha256 == "aa"),
        "{out:?}"
    );
    let out = index_batch(&s.db, "township-b", std::slice::from_ref(&ct), &audit()).await?;
    ensure!(out == vec![IndexOutcome::WrongSite], "{out:?}");

    let exam = storage::exams::by_study(&s.db, &study)
        .await?
        .context("exam")?;
    ensure!(
        exam.status == "receiving" && exam.instance_count == 1,
        "{exam:?}"
    );
    ensure!(
        storage::exams::complete_study(
            &s.db,
            "township-b",
            &study,
            Priority::Routine,
            1,
            &Default::default(),
            &audit()
        )
        .await?
            == Completion::NotFound,
        "another site's notice must not complete the exam"
    );
    ensure!(matches!(
        storage::exams::complete_study(
            &s.db,
            "township-a",
            &study,
            Priority::Routine,
            2,
            &Default::default(),
            &audit()
        )
        .await?,
        Completion::Incomplete {
            stored: 1,
            expected: 2
        }
    ));
    let Completion::Ready(exam) = storage::exams::complete_study(
        &s.db,
        "township-a",
        &study,
        Priority::Stat,
        1,
        &Default::default(),
        &audit(),
    )
    .await?
    else {
        anyhow::bail!("not ready");
    };
    ensure!(
        exam.status == "ready" && exam.priority == "stat",
        "{exam:?}"
    );
    // A late instance reopens the same exam.
    let mut late = instance("dicom/single/CT_small.dcm", "cc")?;
    late.header.sop_instance_uid = "1.2.3.4.5.6.7".into();
    let out = index_batch(&s.db, "township-a", &[late], &audit()).await?;
    ensure!(out == vec![IndexOutcome::Stored]);
    let reopened = storage::exams::by_study(&s.db, &study)
        .await?
        .context("exam")?;
    ensure!(
        reopened.id == exam.id && reopened.status == "receiving" && reopened.instance_count == 2,
        "{reopened:?}"
    );
    let events = storage::exams::events(&s.db, exam.id).await?;
    let statuses: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    ensure!(
        statuses == ["receiving", "ready", "receiving"],
        "{statuses:?}"
    );
    Ok(())
}

pub async fn large_blob_streams_through(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let s = env.storage().await?;
    let mut f = tempfile::NamedTempFile::new()?;
    let chunk: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    for _ in 0..20 {
        f.write_all(&chunk)?;
    }
    f.flush()?;
    let size = 20 * chunk.len() as u64;
    s.blobs
        .put_file("dicom/1.2/3.4/5.6/big.dcm", f.path(), size)
        .await?;
    let mut stream = s.blobs.get_stream("dicom/1.2/3.4/5.6/big.dcm").await?;
    let mut total = 0u64;
    let mut ok = true;
    while let Some(c) = stream.next().await {
        let c = c?;
        for (i, b) in c.iter().enumerate() {
            ok &= *b == ((total + i as u64) % (1024 * 1024) % 251) as u8;
        }
        total += c.len() as u64;
    }
    ensure!(
        total == size && ok,
        "read back {total} of {size} bytes, content ok: {ok}"
    );
    ensure!(s.blobs.exists("dicom/1.2/3.4/5.6/big.dcm").await?);
    s.blobs.delete("dicom/1.2/3.4/5.6/big.dcm").await?;
    ensure!(!s.blobs.exists("dicom/1.2/3.4/5.6/big.dcm").await?);
    Ok(())
}

/// Who the storage suite acts as, for the audit records its writes produce.
fn audit() -> storage::audit::NewEvent {
    use storage::audit::{Action, EventType, NewEvent, Outcome};
    NewEvent::new(
        EventType::DICOM_INSTANCES_TRANSFERRED,
        Action::Create,
        Outcome::Success,
        "test",
        "gateway",
    )
}
