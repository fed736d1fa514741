//! The generic webhook channel's delivery (seed 002): the events a fan-out step queued are sent,
//! signed, and retried on seed 002's schedule.
//!
//! One activity sends every due event of a step. When some failed with an error a retry could
//! fix, the activity fails with Temporal's "next retry delay" set to when the earliest of them is
//! due again; Temporal keeps that timer, so the schedule survives worker restarts, and the
//! database keeps each event's attempts, so a retry re-sends exactly the stored body.

use std::time::Duration;

use chrono::Utc;
use futures::stream::{self, StreamExt};
use pidgr_outbound::OutboundError;
use pidgr_store::{ActivityKind, WebhookAttemptOutcome, WebhookEvent};
use pidgr_workflows::contract::{CampaignRef, ChannelEventsDelivered, StepInput};
use serde_json::json;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::{CampaignActivitiesImpl, retry_after, retryable};

/// Seed 002: "retried up to 3 times with exponential backoff (1s, 5s, 30s)".
pub const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
];

/// Events sent at once; the rest of a page waits for a free slot.
const CONCURRENCY: usize = 8;
const PAGE_SIZE: i64 = 200;

impl CampaignActivitiesImpl {
    pub(crate) async fn deliver_events(
        &self,
        ctx: &ActivityContext,
        input: StepInput,
    ) -> Result<ChannelEventsDelivered, ActivityError> {
        let StepInput { campaign, step_id } = input;
        let org_id = &campaign.org_id;
        let mut after_id = String::new();
        loop {
            if ctx.is_cancelled() {
                return Err(ActivityError::cancelled());
            }
            let due = self
                .store
                .due_webhook_events(
                    org_id,
                    &campaign.campaign_id,
                    &step_id,
                    Utc::now(),
                    &after_id,
                    PAGE_SIZE,
                )
                .await
                .map_err(retryable)?;
            let Some(last) = due.last() else { break };
            after_id = last.id.clone();
            // Read per page: a rotated secret or a changed URL applies from the next send on.
            let Some((channel, secret)) = self
                .store
                .webhook_signing_secret(org_id)
                .await
                .map_err(retryable)?
            else {
                let reason = "the organisation's webhook channel was removed";
                self.store
                    .fail_pending_webhook_events(org_id, &campaign.campaign_id, &step_id, reason)
                    .await
                    .map_err(retryable)?;
                self.log(
                    &campaign,
                    Some(&step_id),
                    ActivityKind::StepFailed,
                    format!("webhook channel events not sent: {reason}"),
                    json!({}),
                )
                .await?;
                break;
            };
            let timeout = Duration::from_millis(channel.timeout_ms.max(1) as u64);
            // Each send owns what it needs, so the futures can run concurrently on any thread.
            let mut sends = stream::iter(due.into_iter().map(|event| {
                let (outbound, url, secret) =
                    (self.outbound.clone(), channel.url.clone(), secret.clone());
                async move {
                    let started = std::time::Instant::now();
                    let sent = outbound
                        .post_channel_event(&url, &secret, &event.body, timeout)
                        .await;
                    (event, sent, started.elapsed())
                }
            }))
            .buffer_unordered(CONCURRENCY);
            while let Some((event, sent, elapsed)) = sends.next().await {
                self.record_attempt(&campaign, &step_id, &event, sent, elapsed)
                    .await?;
                let _ = ctx.record_heartbeat(()).await;
            }
        }
        let progress = self
            .store
            .webhook_event_progress(org_id, &campaign.campaign_id, &step_id)
            .await
            .map_err(retryable)?;
        if let Some(next_at) = progress.next_attempt_at {
            let wait = (next_at - Utc::now()).to_std().unwrap_or_default();
            let message = format!(
                "{} webhook channel events wait for a retry",
                progress.pending
            );
            return Err(retry_after(Waiting(message), Some(wait)));
        }
        let delivered = ChannelEventsDelivered {
            delivered: progress.delivered,
            failed: progress.failed,
        };
        self.log(
            &campaign,
            Some(&step_id),
            ActivityKind::StepFinished,
            format!(
                "webhook channel events: {} delivered, {} failed",
                delivered.delivered, delivered.failed
            ),
            json!({ "delivered": delivered.delivered, "failed": delivered.failed }),
        )
        .await?;
        Ok(delivered)
    }

    /// Records one attempt on the event and in the activity log (status or error, duration).
    async fn record_attempt(
        &self,
        campaign: &CampaignRef,
        step_id: &str,
        event: &WebhookEvent,
        sent: Result<pidgr_outbound::OutboundResponse, OutboundError>,
        elapsed: Duration,
    ) -> Result<(), ActivityError> {
        let attempt = event.attempts + 1;
        let retry_in = RETRY_DELAYS.get(event.attempts as usize).copied();
        let (outcome, status, error) = match &sent {
            Ok(response) => (WebhookAttemptOutcome::Delivered, Some(response.status), None),
            Err(error) => {
                let outcome = match retry_in {
                    Some(delay) if error.is_retryable() => WebhookAttemptOutcome::RetryAt(
                        Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default(),
                    ),
                    _ => WebhookAttemptOutcome::Failed,
                };
                let status = match error {
                    OutboundError::Status { status, .. } => Some(*status),
                    _ => None,
                };
                (outcome, status, Some(error.to_string()))
            }
        };
        self.store
            .record_webhook_attempt(&campaign.org_id, &event.id, outcome, error.as_deref())
            .await
            .map_err(retryable)?;
        let user_id = serde_json::from_str::<serde_json::Value>(&event.body)
            .ok()
            .and_then(|body| body["user_id"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let duration_ms = elapsed.as_millis() as u64;
        let result = match (&sent, outcome) {
            (Ok(response), _) => format!("answered {}", response.status),
            (Err(error), WebhookAttemptOutcome::RetryAt(_)) => format!(
                "failed: {error}; retry in {} s",
                retry_in.unwrap_or_default().as_secs()
            ),
            (Err(error), _) => format!("failed for good: {error}"),
        };
        self.log(
            campaign,
            Some(step_id),
            ActivityKind::ChannelEventAttempt,
            format!(
                "webhook channel event for {user_id}, attempt {attempt} of {}: {result} ({duration_ms} ms)",
                RETRY_DELAYS.len() + 1
            ),
            json!({
                "event_id": event.id,
                "delivery_id": event.delivery_id,
                "user_id": user_id,
                "attempt": attempt,
                "status": status,
                "error": error,
                "duration_ms": duration_ms,
            }),
        )
        .await
    }
}

/// The activity's "failure" while events wait for their next attempt.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Waiting(String);
