//! Search over the index (the storage half of QIDO-RS): typed keys and matchers in,
//! rows out. Parsing query parameters and writing DICOM JSON belong to the viewer API.

use sqlx::Row;

use crate::db::{on_db, Db};
use crate::index::name_match_key;
use crate::scope::ReadScope;
use crate::Result;

/// The level a search returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// One row per study.
    Study,
    /// One row per series.
    Series,
    /// One row per instance.
    Instance,
}

/// A searchable attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// PatientID (0010,0020).
    PatientId,
    /// IssuerOfPatientID (0010,0021).
    IssuerOfPatientId,
    /// PatientName (0010,0010), matched case-insensitively on any component group.
    PatientName,
    /// PatientBirthDate (0010,0030).
    PatientBirthDate,
    /// PatientSex (0010,0040).
    PatientSex,
    /// StudyDate (0008,0020).
    StudyDate,
    /// StudyTime (0008,0030).
    StudyTime,
    /// AccessionNumber (0008,0050).
    AccessionNumber,
    /// StudyID (0020,0010).
    StudyId,
    /// StudyDescription (0008,1030).
    StudyDescription,
    /// ReferringPhysicianName (0008,0090).
    ReferringPhysicianName,
    /// StudyInstanceUID (0020,000D).
    StudyInstanceUid,
    /// ModalitiesInStudy (0008,0061): a study matches if any series has the modality.
    ModalitiesInStudy,
    /// Modality (0008,0060).
    Modality,
    /// SeriesInstanceUID (0020,000E).
    SeriesInstanceUid,
    /// SeriesNumber (0020,0011).
    SeriesNumber,
    /// SeriesDescription (0008,103E).
    SeriesDescription,
    /// SOPClassUID (0008,0016).
    SopClassUid,
    /// SOPInstanceUID (0008,0018).
    SopInstanceUid,
    /// InstanceNumber (0020,0013).
    InstanceNumber,
}

impl Key {
    /// The lowest level whose rows carry this key.
    pub fn level(self) -> Level {
        use Key::*;
        match self {
            Modality | SeriesInstanceUid | SeriesNumber | SeriesDescription => Level::Series,
            SopClassUid | SopInstanceUid | InstanceNumber => Level::Instance,
            _ => Level::Study,
        }
    }

    fn column(self) -> &'static str {
        use Key::*;
        match self {
            PatientId => "st.patient_id",
            IssuerOfPatientId => "st.issuer_of_patient_id",
            PatientName => "st.patient_name_match",
            PatientBirthDate => "st.patient_birth_date",
            PatientSex => "st.patient_sex",
            StudyDate => "st.study_date",
            StudyTime => "st.study_time",
            AccessionNumber => "st.accession_number",
            StudyId => "st.study_id",
            StudyDescription => "st.study_description",
            ReferringPhysicianName => "st.referring_physician_name",
            StudyInstanceUid => "st.study_uid",
            ModalitiesInStudy => "ms.modality",
            Modality => "se.modality",
            SeriesInstanceUid => "se.series_uid",
            SeriesNumber => "se.series_number",
            SeriesDescription => "se.series_description",
            SopClassUid => "i.sop_class_uid",
            SopInstanceUid => "i.sop_instance_uid",
            InstanceNumber => "i.instance_number",
        }
    }
}

/// How a key's value is matched (PS3.4 C.2.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// Single value matching.
    Exact(String),
    /// Wildcard matching: `*` any run, `?` one character.
    Wildcard(String),
    /// UID list matching: any of these.
    List(Vec<String>),
    /// Range matching on dates/times; either end may be open.
    Range {
        /// Lower bound, inclusive.
        from: Option<String>,
        /// Upper bound, inclusive.
        to: Option<String>,
    },
    /// Integer equality.
    Int(i64),
}

/// A search.
#[derive(Debug, Clone)]
pub struct Query {
    /// Level of the returned rows.
    pub level: Level,
    /// Conditions, all of which must hold.
    pub conditions: Vec<(Key, Matcher)>,
    /// Most rows returned.
    pub limit: i64,
    /// Rows skipped.
    pub offset: i64,
    /// Also return one instance's stored metadata per row, for `includefield` keys the
    /// index has no column for.
    pub with_sample_metadata: bool,
    /// What the caller may read; rows outside it are never returned.
    pub scope: ReadScope,
}

/// Study attributes of a result row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudyFields {
    /// Study Instance UID.
    pub study_uid: String,
    /// Site that sent it.
    pub site: String,
    /// PatientID.
    pub patient_id: Option<String>,
    /// IssuerOfPatientID.
    pub issuer_of_patient_id: Option<String>,
    /// PatientName as sent.
    pub patient_name: Option<String>,
    /// PatientBirthDate.
    pub patient_birth_date: Option<String>,
    /// PatientSex.
    pub patient_sex: Option<String>,
    /// StudyDate.
    pub study_date: Option<String>,
    /// StudyTime.
    pub study_time: Option<String>,
    /// AccessionNumber.
    pub accession_number: Option<String>,
    /// StudyID.
    pub study_id: Option<String>,
    /// StudyDescription.
    pub study_description: Option<String>,
    /// ReferringPhysicianName.
    pub referring_physician_name: Option<String>,
    /// SpecificCharacterSet of the first instance.
    pub specific_character_set: Option<String>,
    /// Number of series.
    pub num_series: i64,
    /// Number of instances.
    pub num_instances: i64,
    /// Distinct modalities of its series, sorted.
    pub modalities: Vec<String>,
}

/// Series attributes of a result row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesFields {
    /// Series Instance UID.
    pub series_uid: String,
    /// Modality.
    pub modality: Option<String>,
    /// SeriesNumber.
    pub series_number: Option<i64>,
    /// SeriesDescription.
    pub series_description: Option<String>,
    /// BodyPartExamined.
    pub body_part_examined: Option<String>,
    /// Number of instances.
    pub num_instances: i64,
}

/// Instance attributes of a result row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceFields {
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// InstanceNumber.
    pub instance_number: Option<i64>,
    /// Transfer syntax stored.
    pub transfer_syntax_uid: String,
    /// NumberOfFrames.
    pub number_of_frames: Option<i64>,
    /// Rows.
    pub rows: Option<i64>,
    /// Columns.
    pub columns: Option<i64>,
}

/// One search result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hit {
    /// Always present.
    pub study: StudyFields,
    /// Present at series and instance level.
    pub series: Option<SeriesFields>,
    /// Present at instance level.
    pub instance: Option<InstanceFields>,
    /// Stored DICOM JSON of one instance of the row, when asked for.
    pub sample_metadata: Option<String>,
}

enum Param {
    Text(String),
    Int(i64),
}

/// Run a search.
pub async fn search(db: &Db, q: &Query) -> Result<Vec<Hit>> {
    let (sql, params) = build_sql(q);
    let mut hits: Vec<Hit> = on_db!(db, |pool| {
        // Audited: the SQL holds only fixed column names and numbered placeholders;
        // every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
        for p in &params {
            query = match p {
                Param::Text(s) => query.bind(s),
                Param::Int(i) => query.bind(*i),
            };
        }
        let rows = query.fetch_all(pool).await?;
        rows.iter().map(|r| hit(r, q)).collect::<Result<Vec<_>>>()?
    });
    fill_modalities(db, &mut hits).await?;
    Ok(hits)
}

fn build_sql(q: &Query) -> (String, Vec<Param>) {
    let mut params = Vec::new();
    let mut clauses = Vec::new();
    for (key, matcher) in &q.conditions {
        if *key == Key::ModalitiesInStudy {
            let inner = matcher_sql(*key, matcher, &mut params);
            clauses.push(format!(
                "EXISTS (SELECT 1 FROM series ms WHERE ms.study_uid = st.study_uid AND {inner})"
            ));
        } else {
            clauses.push(matcher_sql(*key, matcher, &mut params));
        }
    }
    let mut scope_params = Vec::new();
    clauses.extend(q.scope.sql(&mut scope_params, params.len() + 1));
    params.extend(scope_params.into_iter().map(Param::Text));
    let where_sql = if clauses.is_empty() {
        "1 = 1".to_string()
    } else {
        clauses.join(" AND ")
    };
    let study_cols = "st.study_uid, st.site, st.patient_id, st.issuer_of_patient_id, st.patient_name, \
        st.patient_birth_date, st.patient_sex, st.study_date, st.study_time, st.accession_number, st.study_id, \
        st.study_description, st.referring_physician_name, st.specific_character_set, st.num_series, \
        st.num_instances AS study_num_instances";
    let series_cols = "se.series_uid, se.modality, se.series_number, se.series_description, \
        se.body_part_examined, se.num_instances AS series_num_instances";
    let instance_cols =
        "i.sop_instance_uid, i.sop_class_uid, i.instance_number, i.transfer_syntax_uid, \
        i.number_of_frames, i.rows_, i.columns_";
    let (cols, from, order, sample) = match q.level {
        Level::Study => (
            study_cols.to_string(),
            "studies st".to_string(),
            "st.study_date DESC, st.study_time DESC, st.study_uid",
            "(SELECT metadata FROM instances x WHERE x.study_uid = st.study_uid LIMIT 1)",
        ),
        Level::Series => (
            format!("{study_cols}, {series_cols}"),
            "series se JOIN studies st ON st.study_uid = se.study_uid".to_string(),
            "st.study_uid, se.series_number, se.series_uid",
            "(SELECT metadata FROM instances x WHERE x.series_uid = se.series_uid LIMIT 1)",
        ),
        Level::Instance => (
            format!("{study_cols}, {series_cols}, {instance_cols}"),
            "instances i JOIN series se ON se.series_uid = i.series_uid JOIN studies st ON st.study_uid = i.study_uid"
                .to_string(),
            "st.study_uid, se.series_number, se.series_uid, i.instance_number, i.sop_instance_uid",
            "i.metadata",
        ),
    };
    let sample = if q.with_sample_metadata {
        format!(", {sample} AS sample_metadata")
    } else {
        String::new()
    };
    params.push(Param::Int(q.limit));
    let limit_n = params.len();
    params.push(Param::Int(q.offset));
    let offset_n = params.len();
    let sql = format!(
        "SELECT {cols}{sample} FROM {from} WHERE {where_sql} ORDER BY {order} LIMIT ${limit_n} OFFSET ${offset_n}"
    );
    (sql, params)
}

fn matcher_sql(key: Key, matcher: &Matcher, params: &mut Vec<Param>) -> String {
    let col = key.column();
    let mut push = |p: Param| {
        params.push(p);
        format!("${}", params.len())
    };
    let text = |s: &str| {
        if key == Key::PatientName {
            name_match_key(s)
        } else {
            s.to_string()
        }
    };
    match matcher {
        Matcher::Exact(v) if key == Key::PatientName => {
            // Match the whole name or any one component group (alphabetic=ideographic=...).
            let v = text(v);
            let a = push(Param::Text(v.clone()));
            let b = push(Param::Text(format!("{}=%", like_escape(&v))));
            let c = push(Param::Text(format!("%={}", like_escape(&v))));
            let d = push(Param::Text(format!("%={}=%", like_escape(&v))));
            format!(
                "({col} = {a} OR {col} LIKE {b} ESCAPE '\\' OR {col} LIKE {c} ESCAPE '\\' OR {col} LIKE {d} ESCAPE '\\')"
            )
        }
        Matcher::Exact(v) => format!("{col} = {}", push(Param::Text(text(v)))),
        Matcher::Wildcard(v) => {
            let pattern = wildcard_to_like(&text(v));
            if key == Key::PatientName {
                let a = push(Param::Text(pattern.clone()));
                let b = push(Param::Text(format!("%={pattern}")));
                format!("({col} LIKE {a} ESCAPE '\\' OR {col} LIKE {b} ESCAPE '\\')")
            } else {
                format!("{col} LIKE {} ESCAPE '\\'", push(Param::Text(pattern)))
            }
        }
        Matcher::List(values) => {
            let placeholders: Vec<String> = values
                .iter()
                .map(|v| push(Param::Text(v.clone())))
                .collect();
            format!("{col} IN ({})", placeholders.join(", "))
        }
        Matcher::Range { from, to } => {
            let mut parts = Vec::new();
            if let Some(f) = from {
                parts.push(format!("{col} >= {}", push(Param::Text(f.clone()))));
            }
            if let Some(t) = to {
                parts.push(format!("{col} <= {}", push(Param::Text(t.clone()))));
            }
            if parts.is_empty() {
                "1 = 1".to_string()
            } else {
                format!("({})", parts.join(" AND "))
            }
        }
        Matcher::Int(i) => format!("{col} = {}", push(Param::Int(*i))),
    }
}

fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// DICOM `*` / `?` wildcards to an SQL LIKE pattern with `\` as escape.
fn wildcard_to_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

fn hit<R: Row>(r: &R, q: &Query) -> Result<Hit>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let study = StudyFields {
        study_uid: r.try_get("study_uid")?,
        site: r.try_get("site")?,
        patient_id: r.try_get("patient_id")?,
        issuer_of_patient_id: r.try_get("issuer_of_patient_id")?,
        patient_name: r.try_get("patient_name")?,
        patient_birth_date: r.try_get("patient_birth_date")?,
        patient_sex: r.try_get("patient_sex")?,
        study_date: r.try_get("study_date")?,
        study_time: r.try_get("study_time")?,
        accession_number: r.try_get("accession_number")?,
        study_id: r.try_get("study_id")?,
        study_description: r.try_get("study_description")?,
        referring_physician_name: r.try_get("referring_physician_name")?,
        specific_character_set: r.try_get("specific_character_set")?,
        num_series: r.try_get("num_series")?,
        num_instances: r.try_get("study_num_instances")?,
        modalities: Vec::new(),
    };
    let series = if q.level >= Level::Series {
        Some(SeriesFields {
            series_uid: r.try_get("series_uid")?,
            modality: r.try_get("modality")?,
            series_number: r.try_get("series_number")?,
            series_description: r.try_get("series_description")?,
            body_part_examined: r.try_get("body_part_examined")?,
            num_instances: r.try_get("series_num_instances")?,
        })
    } else {
        None
    };
    let instance = if q.level == Level::Instance {
        Some(InstanceFields {
            sop_instance_uid: r.try_get("sop_instance_uid")?,
            sop_class_uid: r.try_get("sop_class_uid")?,
            instance_number: r.try_get("instance_number")?,
            transfer_syntax_uid: r.try_get("transfer_syntax_uid")?,
            number_of_frames: r.try_get("number_of_frames")?,
            rows: r.try_get("rows_")?,
            columns: r.try_get("columns_")?,
        })
    } else {
        None
    };
    let sample_metadata = if q.with_sample_metadata {
        r.try_get("sample_metadata")?
    } else {
        None
    };
    Ok(Hit {
        study,
        series,
        instance,
        sample_metadata,
    })
}

/// ModalitiesInStudy for every study in the result, in one query.
async fn fill_modalities(db: &Db, hits: &mut [Hit]) -> Result<()> {
    let mut uids: Vec<String> = hits.iter().map(|h| h.study.study_uid.clone()).collect();
    uids.sort();
    uids.dedup();
    if uids.is_empty() {
        return Ok(());
    }
    let placeholders: Vec<String> = (1..=uids.len()).map(|n| format!("${n}")).collect();
    let sql = format!(
        "SELECT DISTINCT study_uid, modality FROM series WHERE modality IS NOT NULL AND study_uid IN ({})",
        placeholders.join(", ")
    );
    let pairs: Vec<(String, String)> = on_db!(db, |pool| {
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()));
        for u in &uids {
            query = query.bind(u);
        }
        query.fetch_all(pool).await?
    });
    for h in hits.iter_mut() {
        let mut m: Vec<String> = pairs
            .iter()
            .filter(|(s, _)| *s == h.study.study_uid)
            .map(|(_, m)| m.clone())
            .collect();
        m.sort();
        m.dedup();
        h.study.modalities = m;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_become_escaped_like_patterns() {
        assert_eq!(wildcard_to_like("WANG*"), "WANG%");
        assert_eq!(wildcard_to_like("L?_N%"), "L_\\_N\\%");
    }

    #[test]
    fn placeholders_are_numbered_in_order() {
        let q = Query {
            level: Level::Series,
            conditions: vec![
                (Key::PatientName, Matcher::Wildcard("wang*".into())),
                (
                    Key::ModalitiesInStudy,
                    Matcher::List(vec!["CT".into(), "MR".into()]),
                ),
                (
                    Key::StudyDate,
                    Matcher::Range {
                        from: Some("20240101".into()),
                        to: None,
                    },
                ),
            ],
            limit: 10,
            offset: 0,
            with_sample_metadata: false,
            scope: ReadScope {
                sites: Some(vec!["a".into(), "b".into()]),
                kinds: Some(vec![crate::exams::ExamKind::Imaging]),
            },
        };
        let (sql, params) = build_sql(&q);
        assert_eq!(params.len(), 10);
        for n in 1..=10 {
            assert!(sql.contains(&format!("${n}")), "{sql}");
        }
        assert!(sql.contains("EXISTS (SELECT 1 FROM series ms"));
        assert!(sql.contains("st.site IN ($6, $7)"), "{sql}");
        assert!(sql.contains("sx.kind IN ($8)"), "{sql}");
        assert!(sql.ends_with("LIMIT $9 OFFSET $10"), "{sql}");
    }
}
