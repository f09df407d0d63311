//! Turnaround statistics for the county: how long exams took and who met the deadlines.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use storage::reports::ExamTimes;
use viewer_api::ApiError;

use crate::HubState;

/// Mount the statistics route (admin family).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/admin/turnaround", web::get().to(turnaround));
}

/// Query: received in `[from, to)` (ms since the epoch), grouped `by` one dimension.
#[derive(Deserialize)]
pub struct Query {
    from: i64,
    to: i64,
    #[serde(default = "default_by")]
    by: String,
}

fn default_by() -> String {
    "site".into()
}

/// Figures of one group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// Group key (site, kind, priority or reader).
    pub key: String,
    /// Exams received.
    pub exams: usize,
    /// Of which final.
    pub finals: usize,
    /// Received → final, seconds, median (nearest rank).
    pub received_to_final_p50_s: Option<i64>,
    /// Received → final, seconds, 90th percentile.
    pub received_to_final_p90_s: Option<i64>,
    /// Final → delivered to the township, seconds, median.
    pub final_to_delivered_p50_s: Option<i64>,
    /// Final → delivered, 90th percentile.
    pub final_to_delivered_p90_s: Option<i64>,
    /// Finals signed by their deadline.
    pub met_deadline: usize,
    /// `met_deadline / finals`, when there are finals.
    pub deadline_compliance: Option<f64>,
}

/// Nearest-rank percentile of unsorted values.
pub fn percentile(values: &mut [i64], p: f64) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

/// Group exams and compute the figures.
pub fn summarize(times: &[ExamTimes], by: &str) -> Vec<Group> {
    let mut groups: BTreeMap<String, Vec<&ExamTimes>> = BTreeMap::new();
    for t in times {
        let key = match by {
            "kind" => t.kind.clone(),
            "priority" => t.priority.clone(),
            "reader" => t.reader.clone().unwrap_or_else(|| "(not final)".into()),
            _ => t.site.clone(),
        };
        groups.entry(key).or_default().push(t);
    }
    groups
        .into_iter()
        .map(|(key, list)| {
            let mut to_final: Vec<i64> = list
                .iter()
                .filter_map(|t| t.final_at.map(|f| (f - t.received_at) / 1000))
                .collect();
            let mut to_delivered: Vec<i64> = list
                .iter()
                .filter_map(|t| Some((t.delivered_at? - t.final_at?) / 1000))
                .collect();
            let finals = to_final.len();
            let met = list
                .iter()
                .filter(|t| matches!((t.final_at, t.deadline_at), (Some(f), Some(d)) if f <= d))
                .count();
            Group {
                key,
                exams: list.len(),
                finals,
                received_to_final_p50_s: percentile(&mut to_final, 50.0),
                received_to_final_p90_s: percentile(&mut to_final, 90.0),
                final_to_delivered_p50_s: percentile(&mut to_delivered, 50.0),
                final_to_delivered_p90_s: percentile(&mut to_delivered, 90.0),
                met_deadline: met,
                deadline_compliance: (finals > 0).then(|| met as f64 / finals as f64),
            }
        })
        .collect()
}

async fn turnaround(
    state: web::Data<HubState>,
    q: web::Query<Query>,
) -> Result<HttpResponse, ApiError> {
    if !["site", "kind", "priority", "reader"].contains(&q.by.as_str()) {
        return Err(ApiError::bad_request(
            "invalid_by",
            "by must be site, kind, priority or reader",
        ));
    }
    if q.to <= q.from {
        return Err(ApiError::bad_request(
            "invalid_range",
            "to must be after from",
        ));
    }
    let times = storage::reports::exam_times(&state.storage.db, q.from, q.to).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "by": q.by, "from": q.from, "to": q.to, "groups": summarize(&times, &q.by) })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(
        site: &str,
        received: i64,
        fin: Option<i64>,
        delivered: Option<i64>,
        deadline: i64,
    ) -> ExamTimes {
        ExamTimes {
            exam_id: 1,
            site: site.into(),
            kind: "imaging".into(),
            priority: "routine".into(),
            reader: Some("user:wang".into()),
            received_at: received,
            final_at: fin,
            delivered_at: delivered,
            deadline_at: Some(deadline),
        }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v = vec![5, 1, 4, 2, 3, 10, 9, 8, 7, 6];
        assert_eq!(percentile(&mut v, 50.0), Some(5));
        assert_eq!(percentile(&mut v, 90.0), Some(9));
        assert_eq!(percentile(&mut [], 50.0), None);
    }

    #[test]
    fn groups_count_deadlines_and_delays() {
        let times = [
            t("a", 0, Some(60_000), Some(65_000), 120_000),
            t("a", 0, Some(180_000), None, 120_000),
            t("a", 0, None, None, 120_000),
            t("b", 0, Some(30_000), Some(31_000), 10_000),
        ];
        let g = summarize(&times, "site");
        assert_eq!(g[0].key, "a");
        assert_eq!((g[0].exams, g[0].finals, g[0].met_deadline), (3, 2, 1));
        assert_eq!(g[0].received_to_final_p50_s, Some(60));
        assert_eq!(g[0].received_to_final_p90_s, Some(180));
        assert_eq!(g[0].final_to_delivered_p50_s, Some(5));
        assert_eq!(g[1].deadline_compliance, Some(0.0));
    }
}
