//! The generic webhook channel's delivery: the events a fan-out step queued are sent,
//! signed, and retried on the schedule docs/webhooks.md documents (1 s, 5 s, 30 s).
//!
//! Events are sent in passes ([`CampaignActivitiesImpl::send_events_now`]) that claim each
//! event before POSTing it, so several senders can work on one step at once: a fan-out range
//! sends its pages' events while the pushes go on, and the step's WEBHOOK_CHANNEL activity sends
//! whatever is left and waits for the retries. When some failed with an error a retry could fix,
//! that activity fails with Temporal's "next retry delay" set to when the earliest of them is
//! due again; Temporal keeps that timer, so the schedule survives worker restarts, and the
//! database keeps each event's attempts, so a retry re-sends exactly the stored body (signed at
//! send time, so a rotated secret signs from the next send on).
//!
//! Each event's Standard Webhooks `webhook-id` is its stored id, so every retry of one event
//! carries the same id; `webhook-signature` carries the previous secret's signature too for
//! `webhook_secret_overlap` after a rotation.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use pidgr_metrics::{WebhookKind, WebhookOutcome};
use pidgr_outbound::channel_event::StandardSignature;
use pidgr_outbound::{OutboundError, OutboundResponse};
use pidgr_store::{ActivityKind, WebhookAttemptOutcome, WebhookChannel, WebhookEvent};
use pidgr_workflows::contract::{CampaignRef, ChannelEventsDelivered, StepInput};
use serde_json::json;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::{CampaignActivitiesImpl, heartbeat_while, retry_after, retryable};

/// The channel's documented schedule (docs/webhooks.md): up to 3 retries, after 1 s, 5 s and 30 s.
pub const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
];

/// How long a claimed event stays with its sender beyond the send's own timeout: enough to
/// record the attempt. A sender that dies mid-send holds its events no longer than this.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

impl CampaignActivitiesImpl {
    /// The organisation's webhook channel and the secrets that sign now, newest first (the
    /// previous one too within the rotation's overlap); `None` without a channel.
    pub(crate) async fn signing_secrets(
        &self,
        org_id: &str,
    ) -> Result<Option<(WebhookChannel, Vec<String>)>, ActivityError> {
        let overlap =
            chrono::Duration::from_std(self.settings.webhook_secret_overlap).unwrap_or_default();
        self.store
            .webhook_signing_secrets(org_id, Utc::now() - overlap)
            .await
            .map_err(retryable)
    }

    pub(crate) async fn deliver_events(
        &self,
        ctx: &ActivityContext,
        input: StepInput,
    ) -> Result<ChannelEventsDelivered, ActivityError> {
        let StepInput { campaign, step_id } = input;
        let org_id = &campaign.org_id;
        let progress = loop {
            // This activity's heartbeat details carry nothing; the beats keep a long pass alive.
            heartbeat_while(ctx, (), self.send_events_now(ctx, &campaign, &step_id)).await?;
            let progress = self
                .store
                .webhook_event_progress(org_id, &campaign.campaign_id, &step_id)
                .await
                .map_err(retryable)?;
            let Some(next_at) = progress.next_attempt_at else {
                break progress;
            };
            // An event whose retry fell due while others were sending goes in another pass:
            // a zero "next retry delay" would make Temporal fall back to its own backoff. An
            // event another sender holds counts as due when its lease runs out.
            if let Ok(wait) = (next_at - Utc::now()).to_std()
                && !wait.is_zero()
            {
                let message = format!(
                    "{} webhook channel events wait for a retry",
                    progress.pending
                );
                return Err(retry_after(Waiting(message), Some(wait)));
            }
        };
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

    /// One pass over the step's webhook channel events that are due now and that no other
    /// sender holds: each is claimed (leased for the send's timeout plus a margin), POSTed and
    /// its attempt recorded, `channel_concurrency` at a time, until no due, unclaimed event is
    /// left. Safe to run from several activities at once — a fan-out range after each of its
    /// pages, other ranges, the step's WEBHOOK_CHANNEL activity — since a claimed event is never
    /// handed to a second sender while its lease lasts. Retries are not waited for here: a
    /// failed event is due again on the retry schedule, for a later pass.
    ///
    /// Records no heartbeat of its own (a caller's heartbeat details, such as a fan-out
    /// checkpoint, stay as they are): a caller with a heartbeat timeout wraps the pass in
    /// `heartbeat_while` with its own details.
    pub(crate) async fn send_events_now(
        &self,
        ctx: &ActivityContext,
        campaign: &CampaignRef,
        step_id: &str,
    ) -> Result<(), ActivityError> {
        let org_id = &campaign.org_id;
        let concurrency = self.settings.channel_concurrency.max(1);
        loop {
            if ctx.is_cancelled() {
                return Err(ActivityError::cancelled());
            }
            // Read per batch: a rotated secret or a changed URL applies from the next send on.
            let Some((channel, secrets)) = self.signing_secrets(org_id).await? else {
                let reason = "the organisation's webhook channel was removed";
                let failed = self
                    .store
                    .fail_pending_webhook_events(
                        org_id,
                        &campaign.campaign_id,
                        Some(step_id),
                        reason,
                    )
                    .await
                    .map_err(retryable)?;
                if failed == 0 {
                    return Ok(());
                }
                return self
                    .log(
                        campaign,
                        Some(step_id),
                        ActivityKind::StepFailed,
                        format!("{failed} webhook channel events not sent: {reason}"),
                        json!({ "failed": failed }),
                    )
                    .await;
            };
            let timeout = Duration::from_millis(channel.timeout_ms.max(1) as u64);
            // A batch is at most one wave of sends, so each event's send starts as soon as it
            // is claimed and ends well inside its lease.
            let now = Utc::now();
            let lease = chrono::Duration::from_std(timeout + LEASE_MARGIN).map_err(retryable)?;
            let claimed = self
                .store
                .claim_webhook_events(
                    org_id,
                    &campaign.campaign_id,
                    step_id,
                    now,
                    now + lease,
                    concurrency as i64,
                )
                .await
                .map_err(retryable)?;
            if claimed.is_empty() {
                return Ok(());
            }
            // Each send owns what it needs, so the futures can run concurrently on any thread.
            let sends = stream::iter(claimed.into_iter().map(|event| {
                let (outbound, url) = (self.outbound.clone(), channel.url.clone());
                let standard = StandardSignature {
                    webhook_id: event.id.clone(),
                    secrets: secrets.clone(),
                };
                async move {
                    let started = std::time::Instant::now();
                    let sent = outbound
                        .post_channel_event(&url, &standard, &event.body, timeout)
                        .await;
                    (event, sent, started.elapsed())
                }
            }))
            .buffer_unordered(concurrency);
            // Recorded once the batch is answered: recording while sends are in flight would
            // stop polling them, and their timeouts (and leases) would run out unanswered.
            let answered: Vec<_> = sends.collect().await;
            for (event, sent, elapsed) in answered {
                self.record_attempt(campaign, step_id, &event, sent, elapsed)
                    .await?;
            }
        }
    }

    /// Records one attempt on the event and in the activity log (status or error, duration).
    async fn record_attempt(
        &self,
        campaign: &CampaignRef,
        step_id: &str,
        event: &WebhookEvent,
        sent: Result<OutboundResponse, OutboundError>,
        elapsed: Duration,
    ) -> Result<(), ActivityError> {
        let attempt = event.attempts + 1;
        let outcome = attempt_outcome(event.attempts, &sent, Utc::now());
        let (status, error) = match &sent {
            Ok(response) => (Some(response.status), None),
            Err(error) => (error.status(), Some(error.to_string())),
        };
        let recorded = self
            .store
            .record_webhook_attempt(
                &campaign.org_id,
                &event.id,
                event.attempts,
                outcome,
                error.as_deref(),
            )
            .await
            .map_err(retryable)?;
        if !recorded {
            // Another attempt (a timed-out activity still running) got there first.
            return Ok(());
        }
        self.metrics.webhook_attempt(
            WebhookKind::ChannelEvent,
            match outcome {
                WebhookAttemptOutcome::Delivered => WebhookOutcome::Delivered,
                WebhookAttemptOutcome::RetryAt(_) => WebhookOutcome::Retried,
                WebhookAttemptOutcome::Failed => WebhookOutcome::Failed,
            },
        );
        let user_id = serde_json::from_str::<serde_json::Value>(&event.body)
            .ok()
            .and_then(|body| body["user_id"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let duration_ms = elapsed.as_millis() as u64;
        let result = match (&sent, outcome) {
            (Ok(response), _) => format!("answered {}", response.status),
            (Err(error), WebhookAttemptOutcome::RetryAt(_)) => format!(
                "failed: {error}; retry in {} s",
                RETRY_DELAYS[event.attempts as usize].as_secs()
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

/// How an attempt ends, given the attempts made before it: delivered on a 2xx; otherwise retried
/// on the channel's schedule — whatever the failure, since a receiver's 401 or 404 may be a
/// deploy or a secret rotation in progress — except for a destination the SSRF rules refuse,
/// which no retry can change.
fn attempt_outcome(
    attempts_before: i64,
    sent: &Result<OutboundResponse, OutboundError>,
    now: DateTime<Utc>,
) -> WebhookAttemptOutcome {
    match sent {
        Ok(_) => WebhookAttemptOutcome::Delivered,
        Err(OutboundError::BlockedUrl(_) | OutboundError::BlockedAddress { .. }) => {
            WebhookAttemptOutcome::Failed
        }
        Err(_) => match usize::try_from(attempts_before)
            .ok()
            .and_then(|n| RETRY_DELAYS.get(n))
        {
            Some(delay) => WebhookAttemptOutcome::RetryAt(
                now + chrono::Duration::from_std(*delay).expect("seconds fit"),
            ),
            None => WebhookAttemptOutcome::Failed,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pidgr_workflows::definition::{BlockedReason, UrlRejection};

    fn status(code: u16) -> Result<OutboundResponse, OutboundError> {
        Err(OutboundError::Status {
            status: code,
            body_excerpt: String::new(),
        })
    }

    #[test]
    fn failures_are_retried_after_1_5_and_30_seconds_then_fail() {
        let now = Utc::now();
        let at = |secs| WebhookAttemptOutcome::RetryAt(now + chrono::Duration::seconds(secs));
        assert_eq!(attempt_outcome(0, &status(500), now), at(1));
        assert_eq!(attempt_outcome(1, &status(503), now), at(5));
        assert_eq!(attempt_outcome(2, &status(404), now), at(30));
        assert_eq!(
            attempt_outcome(3, &status(500), now),
            WebhookAttemptOutcome::Failed
        );
        let timed_out = Err(OutboundError::TimedOut(Duration::from_secs(5)));
        assert_eq!(attempt_outcome(0, &timed_out, now), at(1));
        let ok = Ok(OutboundResponse {
            status: 204,
            body: Vec::new(),
            elapsed: Duration::ZERO,
        });
        assert_eq!(
            attempt_outcome(3, &ok, now),
            WebhookAttemptOutcome::Delivered
        );
    }

    #[test]
    fn a_forbidden_destination_is_never_retried() {
        let now = Utc::now();
        let blocked = Err(OutboundError::BlockedAddress {
            host: "rebind.example.com".into(),
            ip: "169.254.169.254".parse().unwrap(),
            reason: BlockedReason::LinkLocal,
        });
        assert_eq!(
            attempt_outcome(0, &blocked, now),
            WebhookAttemptOutcome::Failed
        );
        let refused = Err(OutboundError::BlockedUrl(UrlRejection::InsecureScheme));
        assert_eq!(
            attempt_outcome(0, &refused, now),
            WebhookAttemptOutcome::Failed
        );
    }
}
