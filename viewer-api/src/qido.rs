//! QIDO-RS (PS3.18 10.6): search for studies, series and instances.

use access::policy::read_scope;
use access::Caller;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use dicom_core::dictionary::DataDictionary;
use dicom_dictionary_std::StandardDataDictionary;
use serde_json::{Map, Value};
use storage::audit::{Action, EventType, NewEvent, Outcome};
use storage::qido::{Hit, Key, Level, Matcher, Query};

use crate::dicom_json::JsonDataset;
use crate::error::{parse_uid, ApiError};
use crate::ViewerState;

const DEFAULT_LIMIT: i64 = 200;
const MAX_LIMIT: i64 = 1000;

type Params = web::Query<Vec<(String, String)>>;

/// `GET /studies`
pub async fn studies(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    params: Params,
) -> Result<HttpResponse, ApiError> {
    search(&req, &caller, &state, Level::Study, Vec::new(), &params).await
}

/// `GET /series`
pub async fn all_series(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    params: Params,
) -> Result<HttpResponse, ApiError> {
    search(&req, &caller, &state, Level::Series, Vec::new(), &params).await
}

/// `GET /instances`
pub async fn all_instances(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    params: Params,
) -> Result<HttpResponse, ApiError> {
    search(&req, &caller, &state, Level::Instance, Vec::new(), &params).await
}

/// `GET /studies/{study}/series`
pub async fn study_series(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<String>,
    params: Params,
) -> Result<HttpResponse, ApiError> {
    let study = parse_uid("StudyInstanceUID in path", &path)?;
    let scope = vec![(Key::StudyInstanceUid, Matcher::Exact(study))];
    search(&req, &caller, &state, Level::Series, scope, &params).await
}

/// `GET /studies/{study}/instances`
pub async fn study_instances(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<String>,
    params: Params,
) -> Result<HttpResponse, ApiError> {
    let study = parse_uid("StudyInstanceUID in path", &path)?;
    let scope = vec![(Key::StudyInstanceUid, Matcher::Exact(study))];
    search(&req, &caller, &state, Level::Instance, scope, &params).await
}

/// `GET /studies/{study}/series/{series}/instances`
pub async fn series_instances(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<(String, String)>,
    params: Params,
) -> Result<HttpResponse, ApiError> {
    let study = parse_uid("StudyInstanceUID in path", &path.0)?;
    let series = parse_uid("SeriesInstanceUID in path", &path.1)?;
    let scope = vec![
        (Key::StudyInstanceUid, Matcher::Exact(study)),
        (Key::SeriesInstanceUid, Matcher::Exact(series)),
    ];
    search(&req, &caller, &state, Level::Instance, scope, &params).await
}

/// One audit event per search: the query, how many rows it returned, and the patient
/// when the search named exactly one.
async fn audit_query(
    state: &ViewerState,
    caller: &Caller,
    req: &HttpRequest,
    level: Level,
    query: &Query,
    results: usize,
) -> Result<(), ApiError> {
    let one = |key: Key| {
        query.conditions.iter().find_map(|(k, m)| match (k, m) {
            (k, Matcher::Exact(v)) if *k == key => Some(v.clone()),
            _ => None,
        })
    };
    let event = NewEvent {
        patient_id: one(Key::PatientId),
        study_uid: one(Key::StudyInstanceUid),
        detail: Some(serde_json::json!({
            "level": format!("{level:?}").to_lowercase(),
            "query": req.query_string(),
            "results": results,
        })),
        ..caller.event(EventType::QUERY, Action::Execute, Outcome::Success)
    };
    storage::audit::append(&state.storage.db, &event).await?;
    Ok(())
}

/// What the query string asked for beyond the matching keys.
struct Parsed {
    query: Query,
    include: Include,
    warnings: Vec<String>,
}

enum Include {
    Listed(Vec<String>),
    All,
}

async fn search(
    req: &HttpRequest,
    caller: &Caller,
    state: &ViewerState,
    level: Level,
    scope: Vec<(Key, Matcher)>,
    params: &[(String, String)],
) -> Result<HttpResponse, ApiError> {
    check_accept(req)?;
    let mut parsed = parse(level, params)?;
    parsed.query.conditions.extend(scope);
    parsed.query.scope = read_scope(&caller.principal);
    let requested = parsed.query.limit;
    // One more than asked tells whether results were cut off.
    parsed.query.limit = requested + 1;
    let mut hits = storage::qido::search(&state.storage.db, &parsed.query).await?;
    let truncated = hits.len() as i64 > requested;
    hits.truncate(requested as usize);
    audit_query(state, caller, req, level, &parsed.query, hits.len()).await?;

    let base = base_url(req);
    let body: Vec<Value> = hits
        .iter()
        .map(|h| to_json(h, level, &base, &parsed.include))
        .collect();
    let mut resp = HttpResponse::Ok();
    resp.content_type("application/dicom+json");
    let mut warnings = parsed.warnings;
    if truncated {
        warnings.push(
            "The number of results exceeded the maximum supported by the server. Additional results can be requested."
                .into(),
        );
    }
    for w in warnings {
        resp.append_header((
            header::WARNING,
            format!("299 hub: \"{}\"", w.replace('"', "'")),
        ));
    }
    Ok(resp.json(body))
}

/// QIDO answers JSON only; refuse an Accept that excludes it.
fn check_accept(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(accept) = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    let ok = accept.split(',').any(|t| {
        let t = t.trim().to_ascii_lowercase();
        t.starts_with("application/dicom+json")
            || t.starts_with("application/json")
            || t.starts_with("*/*")
            || t.starts_with("application/*")
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            actix_web::http::StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            format!("search results are available as application/dicom+json, not {accept}"),
        ))
    }
}

/// Scheme, host and the DICOMweb root of this request, honouring proxy headers.
pub fn base_url(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}/dicomweb", info.scheme(), info.host())
}

fn parse(level: Level, params: &[(String, String)]) -> Result<Parsed, ApiError> {
    let mut query = Query {
        level,
        conditions: Vec::new(),
        limit: DEFAULT_LIMIT,
        offset: 0,
        with_sample_metadata: false,
        // Set from the caller by `search`; nothing until then.
        scope: storage::scope::ReadScope::nothing(),
    };
    let mut include = Vec::new();
    let mut include_all = false;
    let mut warnings = Vec::new();
    for (name, value) in params {
        match name.as_str() {
            "limit" => {
                let n: i64 = value.parse().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_parameter",
                        format!("limit {value:?} is not a number"),
                    )
                })?;
                if n < 1 {
                    return Err(ApiError::bad_request(
                        "invalid_parameter",
                        "limit must be at least 1",
                    ));
                }
                if n > MAX_LIMIT {
                    warnings.push(format!("limit {n} reduced to {MAX_LIMIT}"));
                }
                query.limit = n.min(MAX_LIMIT);
            }
            "offset" => {
                query.offset = value
                    .parse()
                    .ok()
                    .filter(|n: &i64| *n >= 0)
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_parameter",
                            format!("offset {value:?} is not a non-negative number"),
                        )
                    })?;
            }
            "includefield" => {
                for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    if field == "all" {
                        include_all = true;
                    } else {
                        include.push(tag_of(field).ok_or_else(|| {
                            ApiError::bad_request(
                                "invalid_parameter",
                                format!("includefield {field:?} is not a DICOM keyword or tag"),
                            )
                        })?);
                    }
                }
            }
            "fuzzymatching" => {
                // Person names are always matched case-insensitively; nothing else is fuzzy.
            }
            _ => {
                let tag = tag_of(name);
                let key = tag.as_deref().and_then(key_of);
                match key {
                    Some(key) if key.level() <= level => {
                        if let Some(m) = matcher(key, name, value)? {
                            query.conditions.push((key, m));
                        }
                    }
                    Some(_) => warnings.push(format!(
                        "{name} is not a {level:?}-level key and was ignored"
                    )),
                    None if tag.is_some() => warnings.push(format!(
                        "{name} is not a supported matching key and was ignored"
                    )),
                    None => {
                        return Err(ApiError::bad_request(
                            "invalid_parameter",
                            format!("unknown query parameter {name:?}: not a DICOM keyword or tag"),
                        ))
                    }
                }
            }
        }
    }
    query.with_sample_metadata = include_all || include.iter().any(|t| !indexed_tag(t));
    let include = if include_all {
        Include::All
    } else {
        Include::Listed(include)
    };
    Ok(Parsed {
        query,
        include,
        warnings,
    })
}

/// A keyword (`PatientID`) or hex tag (`00100020`) to the 8-hex-digit tag.
fn tag_of(name: &str) -> Option<String> {
    if name.len() == 8 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(name.to_ascii_uppercase());
    }
    StandardDataDictionary.by_name(name).map(|e| {
        format!(
            "{:04X}{:04X}",
            e.tag.inner().group(),
            e.tag.inner().element()
        )
    })
}

fn key_of(tag: &str) -> Option<Key> {
    Some(match tag {
        "00100020" => Key::PatientId,
        "00100021" => Key::IssuerOfPatientId,
        "00100010" => Key::PatientName,
        "00100030" => Key::PatientBirthDate,
        "00100040" => Key::PatientSex,
        "00080020" => Key::StudyDate,
        "00080030" => Key::StudyTime,
        "00080050" => Key::AccessionNumber,
        "00200010" => Key::StudyId,
        "00081030" => Key::StudyDescription,
        "00080090" => Key::ReferringPhysicianName,
        "0020000D" => Key::StudyInstanceUid,
        "00080061" => Key::ModalitiesInStudy,
        "00080060" => Key::Modality,
        "0020000E" => Key::SeriesInstanceUid,
        "00200011" => Key::SeriesNumber,
        "0008103E" => Key::SeriesDescription,
        "00080016" => Key::SopClassUid,
        "00080018" => Key::SopInstanceUid,
        "00200013" => Key::InstanceNumber,
        _ => return None,
    })
}

/// Tags every result of the index carries without reading stored metadata.
fn indexed_tag(tag: &str) -> bool {
    key_of(tag).is_some()
        || matches!(
            tag,
            "00180015"
                | "00201206"
                | "00201208"
                | "00201209"
                | "00280010"
                | "00280011"
                | "00280008"
        )
}

/// The matcher for one key's value, or None for universal matching (empty value).
fn matcher(key: Key, name: &str, value: &str) -> Result<Option<Matcher>, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let bad =
        |why: &str| ApiError::bad_request("invalid_parameter", format!("{name}={value:?}: {why}"));
    Ok(Some(match key {
        Key::StudyInstanceUid | Key::SeriesInstanceUid | Key::SopInstanceUid | Key::SopClassUid => {
            let uids = value
                .split([',', '\\'])
                .map(|u| parse_uid(name, u))
                .collect::<Result<Vec<_>, _>>()?;
            Matcher::List(uids)
        }
        Key::ModalitiesInStudy | Key::Modality => {
            let codes: Vec<String> = value
                .split([',', '\\'])
                .map(|m| m.trim().to_string())
                .collect();
            if codes.iter().any(|c| {
                c.is_empty()
                    || c.len() > 16
                    || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            }) {
                return Err(bad(
                    "modality codes are letters and digits, separated by commas",
                ));
            }
            Matcher::List(codes)
        }
        Key::StudyDate | Key::PatientBirthDate => date_or_range(value, 8)
            .ok_or_else(|| bad("expected YYYYMMDD or a range YYYYMMDD-YYYYMMDD"))?,
        Key::StudyTime => date_or_range(value, 0)
            .ok_or_else(|| bad("expected HHMMSS or a range HHMMSS-HHMMSS"))?,
        Key::SeriesNumber | Key::InstanceNumber => {
            Matcher::Int(value.parse().map_err(|_| bad("expected an integer"))?)
        }
        _ if value.contains(['*', '?']) => Matcher::Wildcard(value.to_string()),
        _ => Matcher::Exact(value.to_string()),
    }))
}

/// A date (`len` digits) or time (`len` 0: 2 to 13 characters of digits and a dot) or a
/// range of them, open at one end at most.
fn date_or_range(value: &str, len: usize) -> Option<Matcher> {
    let valid = |s: &str| {
        if len > 0 {
            s.len() == len && s.bytes().all(|b| b.is_ascii_digit())
        } else {
            (2..=13).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        }
    };
    match value.split_once('-') {
        None => valid(value).then(|| Matcher::Exact(value.to_string())),
        Some(("", "")) => None,
        Some((from, to)) => {
            let from = (!from.is_empty()).then(|| from.to_string());
            let to = (!to.is_empty()).then(|| to.to_string());
            if from.as_deref().is_some_and(|f| !valid(f))
                || to.as_deref().is_some_and(|t| !valid(t))
            {
                return None;
            }
            // An upper time bound covers the whole of its last unit.
            let to = if len == 0 {
                to.map(|t| format!("{t}\u{10FFFF}"))
            } else {
                to
            };
            Some(Matcher::Range { from, to })
        }
    }
}

fn to_json(hit: &Hit, level: Level, base: &str, include: &Include) -> Value {
    let mut ds = JsonDataset::new();
    let st = &hit.study;
    let study_url = format!("{base}/studies/{}", st.study_uid);
    ds.text("00080020", "DA", st.study_date.as_deref())
        .text("00080030", "TM", st.study_time.as_deref())
        .text("00080050", "SH", st.accession_number.as_deref())
        .text("00080056", "CS", Some("ONLINE"))
        .texts("00080061", "CS", &st.modalities)
        .person_name("00080090", st.referring_physician_name.as_deref())
        .text("00081030", "LO", st.study_description.as_deref())
        .person_name("00100010", st.patient_name.as_deref())
        .text("00100020", "LO", st.patient_id.as_deref())
        .text("00100021", "LO", st.issuer_of_patient_id.as_deref())
        .text("00100030", "DA", st.patient_birth_date.as_deref())
        .text("00100040", "CS", st.patient_sex.as_deref())
        .text("0020000D", "UI", Some(&st.study_uid))
        .text("00200010", "SH", st.study_id.as_deref())
        .int("00201206", "IS", Some(st.num_series))
        .int("00201208", "IS", Some(st.num_instances));
    let mut url = study_url;
    if let Some(se) = &hit.series {
        url = format!("{url}/series/{}", se.series_uid);
        ds.text("00080060", "CS", se.modality.as_deref())
            .text("0008103E", "LO", se.series_description.as_deref())
            .text("00180015", "CS", se.body_part_examined.as_deref())
            .text("0020000E", "UI", Some(&se.series_uid))
            .int("00200011", "IS", se.series_number)
            .int("00201209", "IS", Some(se.num_instances));
    }
    if let Some(i) = &hit.instance {
        url = format!("{url}/instances/{}", i.sop_instance_uid);
        ds.text("00080016", "UI", Some(&i.sop_class_uid))
            .text("00080018", "UI", Some(&i.sop_instance_uid))
            .text("00083002", "UI", Some(&i.transfer_syntax_uid))
            .int("00200013", "IS", i.instance_number)
            .int("00280008", "IS", i.number_of_frames)
            .int("00280010", "US", i.rows)
            .int("00280011", "US", i.columns);
    }
    ds.text("00081190", "UR", Some(&url));
    if let Some(stored) = hit
        .sample_metadata
        .as_deref()
        .and_then(|m| serde_json::from_str::<Map<String, Value>>(m).ok())
    {
        match include {
            Include::All => {
                let scoped: Map<String, Value> = stored
                    .into_iter()
                    .filter(|(tag, _)| belongs_to_level(tag, level))
                    .collect();
                ds.include_all_from(&scoped);
            }
            Include::Listed(tags) => {
                ds.include_from(&stored, tags);
            }
        }
    }
    ds.into_value()
}

/// For `includefield=all` at study or series level, leave out what varies per instance
/// (the rest of the data set belongs to lower levels).
fn belongs_to_level(tag: &str, level: Level) -> bool {
    match level {
        Level::Instance => true,
        Level::Series | Level::Study => {
            tag.starts_with("0010")
                || tag.starts_with("0008") && !matches!(tag, "00080016" | "00080018" | "00080008")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn parses_keywords_tags_ranges_and_wildcards() {
        let p = parse(
            Level::Study,
            &params(&[
                ("PatientName", "wang*"),
                ("00080020", "20240101-"),
                ("ModalitiesInStudy", "CT,MR"),
                ("limit", "5"),
            ]),
        )
        .unwrap();
        assert_eq!(p.query.limit, 5);
        assert_eq!(
            p.query.conditions[0],
            (Key::PatientName, Matcher::Wildcard("wang*".into()))
        );
        assert_eq!(
            p.query.conditions[1],
            (
                Key::StudyDate,
                Matcher::Range {
                    from: Some("20240101".into()),
                    to: None
                }
            )
        );
        assert_eq!(
            p.query.conditions[2],
            (
                Key::ModalitiesInStudy,
                Matcher::List(vec!["CT".into(), "MR".into()])
            )
        );
    }

    #[test]
    fn rejects_bad_values_with_the_reason() {
        for (k, v) in [
            ("StudyDate", "-"),
            ("StudyDate", "2024-01-01x"),
            ("StudyInstanceUID", "1.2.x"),
            ("limit", "ten"),
            ("Bogus", "1"),
        ] {
            let err = parse(Level::Study, &params(&[(k, v)]))
                .err()
                .unwrap_or_else(|| panic!("{k}={v} accepted"));
            assert_eq!(err.status, actix_web::http::StatusCode::BAD_REQUEST);
            assert!(
                err.message.contains(k) || err.message.contains(v),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn series_keys_at_study_level_are_ignored_with_a_warning() {
        let p = parse(Level::Study, &params(&[("Modality", "CT")])).unwrap();
        assert!(p.query.conditions.is_empty());
        assert_eq!(p.warnings.len(), 1);
    }
}
