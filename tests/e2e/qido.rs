//! QIDO-RS matching over a real multi-patient tree (pydicom's DICOMDIR sample).

use std::collections::BTreeSet;

use anyhow::{ensure, Context, Result};
use tests::{attr, get_json, stow, testdata, Backend, Env, Hub};

use crate::on_both_backends;

on_both_backends!(qido_matching_keys_and_paging);

struct Sample {
    study: String,
    series: String,
    patient_id: String,
    patient_name: String,
    study_date: String,
    modality: String,
}

fn load_tree() -> Result<(Vec<Vec<u8>>, Vec<Sample>)> {
    let mut files = Vec::new();
    let mut samples = Vec::new();
    let mut stack = vec![testdata("dicom/tree")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.file_name().is_some_and(|n| n == "DICOMDIR") {
                continue;
            }
            let Ok(obj) = dicom_object::open_file(&path) else {
                continue;
            };
            let get = |k: &str| {
                obj.element_by_name(k)
                    .ok()
                    .and_then(|e| {
                        e.to_str()
                            .ok()
                            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
                    })
                    .unwrap_or_default()
            };
            samples.push(Sample {
                study: get("StudyInstanceUID"),
                series: get("SeriesInstanceUID"),
                patient_id: get("PatientID"),
                patient_name: get("PatientName"),
                study_date: get("StudyDate"),
                modality: get("Modality"),
            });
            files.push(std::fs::read(&path)?);
        }
    }
    Ok((files, samples))
}

fn uids(v: &serde_json::Value, tag: &str) -> BTreeSet<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|i| attr(i, tag)).collect())
        .unwrap_or_default()
}

pub async fn qido_matching_keys_and_paging(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let (files, samples) = load_tree()?;
    ensure!(
        samples.len() >= 20,
        "tree test data: {} files",
        samples.len()
    );
    for chunk in files.chunks(10) {
        let (status, body) = stow(&hub.url, None, chunk).await?;
        ensure!(status == 200, "{status} {body}");
    }
    let root = hub.dicomweb();
    let studies = |f: &dyn Fn(&Sample) -> bool| {
        samples
            .iter()
            .filter(|s| f(s))
            .map(|s| s.study.clone())
            .collect::<BTreeSet<_>>()
    };

    let (_, all) = get_json(&format!("{root}/studies")).await?;
    ensure!(uids(&all, "0020000D") == studies(&|_| true), "all studies");

    let pid = samples[0].patient_id.clone();
    let (_, by_pid) = get_json(&format!("{root}/studies?PatientID={pid}")).await?;
    ensure!(
        uids(&by_pid, "0020000D") == studies(&|s| s.patient_id == pid),
        "PatientID={pid}"
    );

    let family: String = samples[0].patient_name.chars().take(3).collect();
    let (_, by_name) = get_json(&format!("{root}/studies?PatientName={family}*")).await?;
    ensure!(
        uids(&by_name, "0020000D")
            == studies(&|s| s
                .patient_name
                .to_uppercase()
                .starts_with(&family.to_uppercase())),
        "PatientName={family}*"
    );
    let (_, by_name_q) = get_json(&format!(
        "{root}/studies?00100010={}?{}*",
        &family[..1],
        &family[2..3]
    ))
    .await?;
    ensure!(
        uids(&by_name_q, "0020000D") == uids(&by_name, "0020000D"),
        "? wildcard"
    );

    let mut dates: Vec<&str> = samples
        .iter()
        .map(|s| s.study_date.as_str())
        .filter(|d| !d.is_empty())
        .collect();
    dates.sort();
    let (lo, hi) = (dates[0], dates[dates.len() / 2]);
    let (_, by_range) = get_json(&format!("{root}/studies?StudyDate={lo}-{hi}")).await?;
    ensure!(
        uids(&by_range, "0020000D")
            == studies(&|s| s.study_date.as_str() >= lo && s.study_date.as_str() <= hi),
        "StudyDate range"
    );
    let (_, open_range) = get_json(&format!("{root}/studies?StudyDate={hi}-")).await?;
    ensure!(
        uids(&open_range, "0020000D") == studies(&|s| s.study_date.as_str() >= hi),
        "open StudyDate range"
    );

    let modality = samples[0].modality.clone();
    let (_, by_mod) = get_json(&format!("{root}/studies?ModalitiesInStudy={modality}")).await?;
    ensure!(
        uids(&by_mod, "0020000D") == studies(&|s| s.modality == modality),
        "ModalitiesInStudy"
    );
    let first = by_mod
        .as_array()
        .and_then(|a| a.first())
        .context("a study")?;
    ensure!(first["00080061"]["Value"]
        .as_array()
        .is_some_and(|m| m.iter().any(|x| x == modality.as_str())));

    let study = samples[0].study.clone();
    let (_, series) = get_json(&format!("{root}/studies/{study}/series")).await?;
    let expect_series: BTreeSet<String> = samples
        .iter()
        .filter(|s| s.study == study)
        .map(|s| s.series.clone())
        .collect();
    ensure!(
        uids(&series, "0020000E") == expect_series,
        "series of a study"
    );
    let (_, by_series_uid) = get_json(&format!(
        "{root}/series?SeriesInstanceUID={}",
        samples[0].series
    ))
    .await?;
    ensure!(uids(&by_series_uid, "0020000E").len() == 1, "series by UID");
    let (_, instances) = get_json(&format!("{root}/studies/{study}/instances")).await?;
    ensure!(
        instances.as_array().map(Vec::len)
            == Some(samples.iter().filter(|s| s.study == study).count())
    );

    // Paging: limit + offset walk every study exactly once.
    let mut paged = BTreeSet::new();
    for offset in (0..20).step_by(2) {
        let (_, page) = get_json(&format!("{root}/studies?limit=2&offset={offset}")).await?;
        paged.extend(uids(&page, "0020000D"));
    }
    ensure!(paged == studies(&|_| true), "paging");

    // includefield pulls attributes from the stored headers.
    let (_, inc) = get_json(&format!(
        "{root}/studies/{study}/instances?includefield=00280100,Rows"
    ))
    .await?;
    ensure!(
        inc[0].get("00280100").is_some(),
        "BitsAllocated included: {}",
        inc[0]
    );

    // Bad parameters name the problem.
    let (status, err) = get_json(&format!("{root}/studies?StudyDate=2024")).await?;
    ensure!(
        status == 400
            && err["message"]
                .as_str()
                .is_some_and(|m| m.contains("StudyDate")),
        "{status} {err}"
    );
    let (status, _) = get_json(&format!("{root}/studies?limit=0")).await?;
    ensure!(status == 400);
    Ok(())
}
