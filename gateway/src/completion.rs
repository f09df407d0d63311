//! Study completion: a study is complete when every association that stored into it
//! has closed, a quiet period has passed since its last instance, and nothing of it is
//! waiting for delivery. The hub is then told, so the exam reaches the worklist whole;
//! a late instance clears the notice and the study is reported again after a new
//! quiet period (the hub reopens the same exam rather than creating a second one).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::forwarder::{read_limited, stow::excerpt};
use crate::hub::{HubClient, ProblemLog};
use crate::outbox::{now_ms, CompleteStudy, NoticeResult, Outbox};

/// How often completion is checked when nothing wakes us earlier.
const POLL: Duration = Duration::from_millis(250);

/// The JSON body of a completion notice.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct CompletionNotice {
    /// "stat" or "routine".
    pub priority: &'static str,
    /// Distinct instances of the study the hub has acknowledged.
    pub instance_count: i64,
}

/// Tells the hub when studies are complete.
#[derive(Debug, Clone)]
pub struct Completion {
    outbox: Outbox,
    hub: HubClient,
    config: Arc<Config>,
    backoff: Backoff,
    problems: Arc<ProblemLog>,
}

impl Completion {
    /// A completion notifier.
    pub fn new(outbox: Outbox, hub: HubClient, config: Arc<Config>) -> Self {
        let backoff = Backoff::from_millis(config.backoff_base_ms, config.backoff_max_ms);
        Completion {
            outbox,
            hub,
            config,
            backoff,
            problems: Arc::new(ProblemLog::new("completion notice")),
        }
    }

    /// Check and notify until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let wake = self.outbox.completion_wake();
        let quiet_ms = self.config.quiet_period().as_millis() as i64;
        loop {
            let now = now_ms();
            match self.outbox.complete_studies(now - quiet_ms, now).await {
                Ok(studies) => {
                    for study in studies {
                        if shutdown.is_cancelled() {
                            return;
                        }
                        let result = self.notify(&study).await;
                        if let Err(e) = self.outbox.record_notice(result).await {
                            tracing::warn!(error = %e, "could not record completion notice");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not check study completion"),
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = wake.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn notify(&self, study: &CompleteStudy) -> NoticeResult {
        let path = format!("/ingest/studies/{}/complete", study.study_uid);
        let notice = CompletionNotice {
            priority: study.priority.as_str(),
            instance_count: study.delivered_instances,
        };
        let sent = self
            .hub
            .post(&path)
            .timeout(Duration::from_secs(30))
            .json(&notice)
            .send()
            .await;
        let error = match sent {
            Ok(response) if response.status().as_u16() == 200 => {
                self.problems.succeeded();
                tracing::info!(
                    study_uid = %study.study_uid,
                    instances = study.delivered_instances,
                    priority = notice.priority,
                    "study complete; hub notified"
                );
                return NoticeResult::Acknowledged {
                    study_uid: study.study_uid.clone(),
                    last_received_at: study.last_received_at,
                };
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let body = read_limited(response, 64 * 1024).await.unwrap_or_default();
                self.hub
                    .describe_refusal(status, &body)
                    .unwrap_or_else(|| format!("HTTP {status}: {}", excerpt(&body)))
            }
            Err(e) => self.hub.describe_send_error(&e),
        };
        // At warn level only when the error changes (see `ProblemLog`).
        self.problems.failed(&error);
        tracing::debug!(study_uid = %study.study_uid, error = %error, "completion notice failed");
        let delay = self.backoff.delay(study.notify_attempts.saturating_add(1));
        NoticeResult::Failed {
            study_uid: study.study_uid.clone(),
            next_notify_at: now_ms() + delay.as_millis() as i64,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notice_body_matches_the_hub_contract() {
        let body = serde_json::to_value(CompletionNotice {
            priority: "stat",
            instance_count: 12,
        })
        .expect("serializes");
        assert_eq!(
            body,
            serde_json::json!({"priority": "stat", "instance_count": 12})
        );
    }
}
