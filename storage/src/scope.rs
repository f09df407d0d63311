//! What part of the archive a caller may read, as the queries apply it.
//!
//! The `access` crate decides a caller's scope from their role; this module only turns a
//! scope into SQL, so that a search never returns a row the caller may not see and a
//! direct fetch of another site's study looks exactly like a missing one.

use crate::db::{on_db, Db};
use crate::exams::ExamKind;
use crate::Result;

/// The studies a caller may read: those of the listed sites whose exam is of one of the
/// listed kinds. `None` means no restriction on that axis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadScope {
    /// Sites whose data may be read; `None` = every site.
    pub sites: Option<Vec<String>>,
    /// Exam kinds that may be read; `None` = every kind.
    pub kinds: Option<Vec<ExamKind>>,
}

impl ReadScope {
    /// No restriction (internal use and tests).
    pub fn everything() -> Self {
        ReadScope::default()
    }

    /// Nothing at all.
    pub fn nothing() -> Self {
        ReadScope {
            sites: Some(Vec::new()),
            kinds: Some(Vec::new()),
        }
    }

    /// SQL conditions on the exam alias `e` (its own site and kind: lab and imported ECG
    /// exams have no study), with placeholders numbered as [`ReadScope::sql`] does.
    pub(crate) fn exam_sql(
        &self,
        params: &mut Vec<String>,
        first_placeholder: usize,
    ) -> Vec<String> {
        self.conditions(params, first_placeholder, |column, list| {
            format!("e.{column} IN ({list})")
        })
    }

    /// SQL conditions on the study alias `st`, with `$n` placeholders numbered after
    /// `params.len()`; values are appended to `params`.
    pub(crate) fn sql(&self, params: &mut Vec<String>, first_placeholder: usize) -> Vec<String> {
        self.conditions(params, first_placeholder, |column, list| match column {
            "site" => format!("st.site IN ({list})"),
            _ => format!(
                "EXISTS (SELECT 1 FROM exams sx WHERE sx.study_uid = st.study_uid AND sx.kind IN ({list}))"
            ),
        })
    }

    /// One condition per restricted axis (`site`, `kind`), written by `clause` from the
    /// axis name and its placeholder list; an empty list matches nothing (`IN (NULL)`).
    fn conditions(
        &self,
        params: &mut Vec<String>,
        first_placeholder: usize,
        clause: impl Fn(&str, &str) -> String,
    ) -> Vec<String> {
        let mut placeholders = |values: Vec<String>| -> String {
            if values.is_empty() {
                return "NULL".to_string();
            }
            values
                .into_iter()
                .map(|v| {
                    params.push(v);
                    format!("${}", first_placeholder + params.len() - 1)
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut clauses = Vec::new();
        if let Some(sites) = &self.sites {
            clauses.push(clause("site", &placeholders(sites.clone())));
        }
        if let Some(kinds) = &self.kinds {
            let values = kinds.iter().map(|k| k.as_str().to_string()).collect();
            clauses.push(clause("kind", &placeholders(values)));
        }
        clauses
    }
}

/// A study the caller may read, with what its audit record names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisibleStudy {
    /// Study Instance UID.
    pub study_uid: String,
    /// Site that sent it.
    pub site: String,
    /// Patient ID, if the study has one.
    pub patient_id: Option<String>,
    /// Its exam.
    pub exam_id: Option<i64>,
}

/// The study if it exists and lies within `scope`; `None` otherwise (both cases look
/// the same to the caller on purpose).
pub async fn visible_study(
    db: &Db,
    scope: &ReadScope,
    study_uid: &str,
) -> Result<Option<VisibleStudy>> {
    let mut params = vec![study_uid.to_string()];
    let mut clauses = vec!["st.study_uid = $1".to_string()];
    clauses.extend(scope.sql(&mut params, 1));
    let sql = format!(
        "SELECT st.study_uid, st.site, st.patient_id, (SELECT e.id FROM exams e WHERE e.study_uid = st.study_uid) AS exam_id \
         FROM studies st WHERE {}",
        clauses.join(" AND ")
    );
    on_db!(db, |pool| {
        // Audited: fixed SQL with numbered placeholders; every value is bound.
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for p in &params {
            query = query.bind(p);
        }
        let row: Option<(String, String, Option<String>, Option<i64>)> =
            query.fetch_optional(pool).await?;
        Ok(
            row.map(|(study_uid, site, patient_id, exam_id)| VisibleStudy {
                study_uid,
                site,
                patient_id,
                exam_id,
            }),
        )
    })
}
