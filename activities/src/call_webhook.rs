//! CALL_WEBHOOK: POSTs the campaign's delivery outcomes to the step's URL through the SSRF-safe
//! outbound client. Temporal's retry policy supplies the exponential backoff, and a refusal no
//! retry can fix ends the retries at once.
//!
//! A campaign of up to `webhook_part_size` deliveries (10,000 by default) is one POST, shaped
//! as it always was. A larger one is reported in consecutive parts of at most that many
//! deliveries, each read from the database when it is sent (never the whole campaign in memory)
//! and carrying the same campaign fields and summary plus `part: {index, count}`. Progress is
//! kept in heartbeat details, which Temporal hands to the next attempt: a retry resumes at the
//! part that failed instead of sending the delivered ones again.
//!
//! The step's URL and headers are read from the campaign's stored definition (the input's copy
//! is not trusted), header references are opened just before the POST, and the activity log
//! shows the URL's scheme and host only.
//!
//! Every POST carries the Standard Webhooks headers: `webhook-id` derived from the campaign,
//! the step and the part (the same on every retry of that POST), `webhook-timestamp` of the
//! attempt, and — when the organisation has a webhook channel — `webhook-signature` with the
//! channel's secret (the previous one too within a rotation's overlap). Without a channel there
//! is no key to sign with, and the step's own headers are its authentication.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use pidgr_metrics::{WebhookKind, WebhookOutcome};
use pidgr_outbound::channel_event::{StandardSignature, call_webhook_id, with_standard_headers};
use pidgr_outbound::{OutboundError, OutboundResponse, redacted_url};
use pidgr_store::{ActivityKind, DeliveryReport};
use pidgr_workflows::contract::{CampaignRef, WebhookDelivered, WebhookInput};
use serde::{Deserialize, Serialize};
use serde_json::json;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::{CampaignActivitiesImpl, WEBHOOK_TIMEOUT, heartbeat_while, retry_after, retryable};

/// The payload's `summary`: the whole campaign, whichever part carries it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Summary {
    total: u64,
    acknowledged: u64,
    missed: u64,
    failed: u64,
}

/// Where a CALL_WEBHOOK in parts stands, kept in heartbeat details. The part count and the
/// summary are fixed by the first attempt, so every part (a retried one too) carries the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PartsCheckpoint {
    /// The next part to send, counted from 0.
    next_part: u64,
    /// The audience position of the last delivery already sent.
    after_seq: i64,
    count: u64,
    summary: Summary,
}

/// One POST's place in the call, for its log lines.
#[derive(Clone, Copy)]
struct Part {
    index: u64,
    count: u64,
}

impl CampaignActivitiesImpl {
    /// One attempt of the CALL_WEBHOOK: the single POST, or the parts not yet delivered.
    /// Each POST is logged; a refusal that no retry can fix (blocked URL, 4xx) ends the retries
    /// at once.
    pub(crate) async fn post_outcomes(
        &self,
        ctx: &ActivityContext,
        input: WebhookInput,
    ) -> Result<WebhookDelivered, ActivityError> {
        let attempt = ctx.info().attempt.max(1);
        if attempt == 1 {
            self.step_started(
                ctx,
                &input.campaign,
                &input.step_id,
                format!("calling webhook {}", input.config.name),
            )
            .await?;
        }
        // The URL, the headers and the campaign's name in the payload come from the store, not
        // from the input: whoever can start a workflow in the Temporal namespace can write any
        // input, and must not be able to send an organisation's sealed header secret to an
        // address of their choosing, nor put words in a receiver's report. Each attempt opens the header references just before the POST; a step the
        // stored definition does not have (or not as a CALL_WEBHOOK) is refused for good.
        let mut input = input;
        let target = self
            .store
            .campaign_webhook_target(
                &input.campaign.org_id,
                &input.campaign.campaign_id,
                &input.step_id,
            )
            .await
            .map_err(retryable)?;
        input.campaign_name = target.campaign_name;
        input.config.url = target.url;
        input.config.headers = target.headers;
        let part_size = self.settings.webhook_part_size.max(1);
        let resumed: Option<PartsCheckpoint> = ctx.heartbeat_details().deserialize().ok().flatten();
        let checkpoint = match resumed {
            Some(checkpoint) => checkpoint,
            None => {
                let counts = self
                    .store
                    .delivery_counts(&input.campaign.org_id, &input.campaign.campaign_id)
                    .await
                    .map_err(retryable)?;
                let total = counts.total();
                if total <= part_size as u64 {
                    return self.post_whole(ctx, &input, attempt, part_size).await;
                }
                PartsCheckpoint {
                    next_part: 0,
                    after_seq: 0,
                    count: total.div_ceil(part_size as u64),
                    summary: Summary {
                        total,
                        acknowledged: counts.acknowledged,
                        missed: counts.missed,
                        failed: counts.failed,
                    },
                }
            }
        };
        self.post_parts(ctx, &input, attempt, part_size, checkpoint)
            .await
    }

    /// A campaign that fits in one POST: the payload exactly as it has always been, its
    /// summary counted from the very rows it lists.
    async fn post_whole(
        &self,
        ctx: &ActivityContext,
        input: &WebhookInput,
        attempt: u32,
        part_size: i64,
    ) -> Result<WebhookDelivered, ActivityError> {
        let campaign = &input.campaign;
        let reports: Vec<DeliveryReport> = self
            .store
            .delivery_reports_page(&campaign.org_id, &campaign.campaign_id, 0, part_size)
            .await
            .map_err(retryable)?
            .into_iter()
            .map(|(_, report)| report)
            .collect();
        let body = webhook_payload(campaign, &input.campaign_name, &reports, None, None);
        let body = serde_json::to_vec(&body).map_err(retryable)?;
        // Heartbeats keep the attempt alive through a slow answer (up to the POST's timeout).
        let post = self.post_logged(input, attempt, None, body);
        let response = heartbeat_while(ctx, (), post).await?;
        self.finished(input, attempt, None).await;
        Ok(WebhookDelivered {
            status: response.status,
            attempt,
        })
    }

    /// The parts from `checkpoint` on, one page of the audience each, the position recorded in
    /// heartbeat details after every delivered part.
    async fn post_parts(
        &self,
        ctx: &ActivityContext,
        input: &WebhookInput,
        attempt: u32,
        part_size: i64,
        mut checkpoint: PartsCheckpoint,
    ) -> Result<WebhookDelivered, ActivityError> {
        let campaign = &input.campaign;
        let mut status = None;
        let mut sent_now = 0u64;
        while checkpoint.next_part < checkpoint.count {
            if ctx.is_cancelled() {
                return Err(ActivityError::cancelled());
            }
            // A part cut off by the attempt's timeout might arrive and be sent again; ending
            // the attempt at a part boundary instead lets the retry start cleanly.
            if sent_now > 0 && too_late_for_another_post(ctx) {
                let error = PartsRemain(format!(
                    "{} of {} parts delivered; the rest continue in the next attempt",
                    checkpoint.next_part, checkpoint.count
                ));
                return Err(retry_after(error, Some(Duration::from_secs(1))));
            }
            let page = self
                .store
                .delivery_reports_page(
                    &campaign.org_id,
                    &campaign.campaign_id,
                    checkpoint.after_seq,
                    part_size,
                )
                .await
                .map_err(retryable)?;
            let Some(&(last_seq, _)) = page.last() else {
                // Fewer deliveries than when the parts were counted: nothing is left to send.
                break;
            };
            let part = Part {
                index: checkpoint.next_part,
                count: checkpoint.count,
            };
            let reports: Vec<DeliveryReport> = page.into_iter().map(|(_, r)| r).collect();
            let body = webhook_payload(
                campaign,
                &input.campaign_name,
                &reports,
                Some(checkpoint.summary),
                Some(part),
            );
            drop(reports);
            let body = serde_json::to_vec(&body).map_err(retryable)?;
            let post = self.post_logged(input, attempt, Some(part), body);
            let response = heartbeat_while(ctx, checkpoint, post).await?;
            status = Some(response.status);
            sent_now += 1;
            checkpoint.next_part += 1;
            checkpoint.after_seq = last_seq;
            // Kept by Temporal for the next attempt, so a failure of a later part resumes
            // there; a lost heartbeat only costs sending a delivered part again.
            let _ = ctx.record_heartbeat(checkpoint).await;
        }
        self.finished(input, attempt, Some(checkpoint.count)).await;
        Ok(WebhookDelivered {
            // A retry that found every part already delivered has no answer of its own.
            status: status.unwrap_or(200),
            attempt,
        })
    }

    /// POSTs `body` and logs the attempt; the error is the activity's failure, retryable or not.
    async fn post_logged(
        &self,
        input: &WebhookInput,
        attempt: u32,
        part: Option<Part>,
        body: Vec<u8>,
    ) -> Result<OutboundResponse, ActivityError> {
        let config = &input.config;
        let max_attempts = input.max_attempts;
        let secrets = self
            .signing_secrets(&input.campaign.org_id)
            .await?
            .map(|(_, secrets)| secrets)
            .unwrap_or_default();
        let standard = StandardSignature {
            webhook_id: call_webhook_id(
                &input.campaign.campaign_id,
                &input.step_id,
                part.map_or(0, |part| part.index),
            ),
            secrets,
        };
        let headers = with_standard_headers(&config.headers, &standard, &body, Utc::now());
        let sent = self
            .outbound
            .post_json(&config.url, &headers, body, WEBHOOK_TIMEOUT)
            .await;
        self.metrics.webhook_attempt(
            WebhookKind::CallWebhook,
            match &sent {
                Ok(_) => WebhookOutcome::Delivered,
                Err(error) if error.is_retryable() && attempt < max_attempts => {
                    WebhookOutcome::Retried
                }
                Err(_) => WebhookOutcome::Failed,
            },
        );
        let what = match part {
            Some(part) => format!(
                "webhook {}: part {} of {}, attempt {attempt} of {max_attempts}",
                config.name,
                part.index + 1,
                part.count
            ),
            None => format!(
                "webhook {}: attempt {attempt} of {max_attempts}",
                config.name
            ),
        };
        let (message, status) = match &sent {
            Ok(response) => (
                format!("{what} answered {}", response.status),
                Some(response.status),
            ),
            Err(error) => (format!("{what} failed: {error}"), None),
        };
        let mut details = json!({
            "attempt": attempt,
            "max_attempts": max_attempts,
            "status": status,
            "url": redacted_url(&config.url),
        });
        if let Some(part) = part {
            details["part"] = json!({ "index": part.index, "count": part.count });
        }
        // Header values are secrets and never logged; nor is the URL's path or query, which
        // can be a credential itself (a Slack-style URL).
        let logged = self
            .log(
                &input.campaign,
                Some(&input.step_id),
                ActivityKind::WebhookAttempt,
                message,
                details,
            )
            .await;
        match sent {
            // Delivered: failing the attempt over its log line would POST it again.
            Ok(response) => {
                if let Err(error) = logged {
                    tracing::warn!(campaign_id = %input.campaign.campaign_id, ?error, "a delivered webhook POST was not logged");
                }
                Ok(response)
            }
            Err(error) => {
                logged?;
                Err(failure(error))
            }
        }
    }

    /// The step's last log line. Best effort: everything is delivered, and failing the attempt
    /// now would POST it again.
    async fn finished(&self, input: &WebhookInput, attempt: u32, parts: Option<u64>) {
        let (message, details) = match parts {
            Some(count) => (
                format!("webhook {} delivered in {count} parts", input.config.name),
                json!({ "attempt": attempt, "parts": count }),
            ),
            None => (
                format!("webhook {} delivered", input.config.name),
                json!({ "attempt": attempt }),
            ),
        };
        if let Err(error) = self
            .log(
                &input.campaign,
                Some(&input.step_id),
                ActivityKind::StepFinished,
                message,
                details,
            )
            .await
        {
            tracing::warn!(campaign_id = %input.campaign.campaign_id, ?error, "a delivered webhook's end was not logged");
        }
    }
}

/// Whether the attempt's start-to-close deadline leaves less than one POST's timeout.
fn too_late_for_another_post(ctx: &ActivityContext) -> bool {
    ctx.info().deadline.is_some_and(|deadline| {
        deadline
            .duration_since(SystemTime::now())
            .map_or(true, |left| left < WEBHOOK_TIMEOUT)
    })
}

fn failure(error: OutboundError) -> ActivityError {
    if error.is_retryable() {
        retryable(error)
    } else {
        ActivityError::Application(Box::new(ApplicationFailure::non_retryable(error)))
    }
}

/// The attempt ended between parts, so that none is cut off by its timeout.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PartsRemain(String);

/// The POST body. Without `summary` it is counted from `reports` (the whole campaign in one
/// POST); a part carries the campaign's summary and its place among the parts.
fn webhook_payload(
    campaign: &CampaignRef,
    name: &str,
    reports: &[DeliveryReport],
    summary: Option<Summary>,
    part: Option<Part>,
) -> serde_json::Value {
    fn stamp(at: &Option<DateTime<Utc>>) -> Option<String> {
        at.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
    }
    let mut counted = BTreeMap::from([("acknowledged", 0u64), ("missed", 0), ("failed", 0)]);
    let deliveries: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            let status = r.status.as_str();
            if let Some(n) = counted.get_mut(status.to_ascii_lowercase().as_str()) {
                *n += 1;
            }
            let mut line = json!({
                "delivery_id": r.delivery_id,
                "user_id": r.user_id,
                "status": status,
                "sent_at": stamp(&r.sent_at),
            });
            for (key, at) in [
                ("read_at", &r.read_at),
                ("acknowledged_at", &r.acknowledged_at),
            ] {
                if let Some(at) = stamp(at) {
                    line[key] = json!(at);
                }
            }
            line
        })
        .collect();
    let summary = summary.unwrap_or(Summary {
        total: reports.len() as u64,
        acknowledged: counted["acknowledged"],
        missed: counted["missed"],
        failed: counted["failed"],
    });
    let mut payload = json!({
        "campaign_id": campaign.campaign_id,
        "campaign_name": name,
        "deliveries": deliveries,
        "summary": summary,
    });
    if let Some(part) = part {
        payload["part"] = json!({ "index": part.index, "count": part.count });
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use pidgr_store::DeliveryStatus;

    fn campaign() -> CampaignRef {
        CampaignRef {
            org_id: "org-1".into(),
            campaign_id: "campaign-1".into(),
            trace_parent: None,
        }
    }

    fn report(n: u32, status: DeliveryStatus) -> DeliveryReport {
        let at = DateTime::parse_from_rfc3339("2026-01-15T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        DeliveryReport {
            delivery_id: format!("d-{n}"),
            user_id: format!("u-{n}"),
            status,
            sent_at: Some(at),
            read_at: None,
            acknowledged_at: (status == DeliveryStatus::Acknowledged).then_some(at),
        }
    }

    #[test]
    fn a_single_post_has_the_published_shape_and_no_part() {
        let reports = [
            report(1, DeliveryStatus::Acknowledged),
            report(2, DeliveryStatus::Missed),
        ];
        let body = webhook_payload(&campaign(), "Q1", &reports, None, None);
        assert_eq!(
            body,
            json!({
                "campaign_id": "campaign-1",
                "campaign_name": "Q1",
                "deliveries": [
                    { "delivery_id": "d-1", "user_id": "u-1", "status": "ACKNOWLEDGED",
                      "sent_at": "2026-01-15T10:00:00Z", "acknowledged_at": "2026-01-15T10:00:00Z" },
                    { "delivery_id": "d-2", "user_id": "u-2", "status": "MISSED",
                      "sent_at": "2026-01-15T10:00:00Z" },
                ],
                "summary": { "total": 2, "acknowledged": 1, "missed": 1, "failed": 0 },
            })
        );
    }

    #[test]
    fn a_part_carries_the_campaigns_summary_not_its_own_count() {
        let summary = Summary {
            total: 25_000,
            acknowledged: 20_000,
            missed: 4_000,
            failed: 1_000,
        };
        let reports = [report(7, DeliveryStatus::Failed)];
        let part = Part { index: 2, count: 3 };
        let body = webhook_payload(&campaign(), "Q1", &reports, Some(summary), Some(part));
        assert_eq!(
            body["summary"],
            json!({ "total": 25_000, "acknowledged": 20_000, "missed": 4_000, "failed": 1_000 })
        );
        assert_eq!(body["part"], json!({ "index": 2, "count": 3 }));
        assert_eq!(body["deliveries"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn the_checkpoint_survives_the_round_trip_through_heartbeat_details() {
        let checkpoint = PartsCheckpoint {
            next_part: 4,
            after_seq: 40_000,
            count: 11,
            summary: Summary {
                total: 100_001,
                acknowledged: 1,
                missed: 2,
                failed: 3,
            },
        };
        let text = serde_json::to_string(&checkpoint).unwrap();
        assert_eq!(
            serde_json::from_str::<PartsCheckpoint>(&text).unwrap(),
            checkpoint
        );
    }
}
