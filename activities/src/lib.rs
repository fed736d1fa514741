//! Every side effect of a campaign step, as Temporal activities: fan-out through a push
//! provider, reminders, mark-missed, the CALL_WEBHOOK POST, escalations to managers, and the
//! bookkeeping around waits, failures, completion and cancellation.
//!
//! Activities are retried by Temporal, so each one is safe to run again: database writes are
//! conditional on the current status, and fan-out skips recipients its step already notified.

use std::sync::Arc;
use std::time::Duration;

use pidgr_metrics::DeliveryEvent;
use pidgr_outbound::OutboundClient;
use pidgr_store::{ActivityKind, CampaignStatus, NewActivity, Store, StoreError};
use pidgr_workflows::contract::{
    CampaignRef, ChannelEventsDelivered, DeliveryCounts, EscalateInput, EscalationResult,
    FanOutInput, FanOutPlan, FanOutResult, FanOutSummary, PreparedDeliveries, StepFailure,
    StepInput, WaitInput, WebhookDelivered, WebhookInput, activity_types as campaign_activities,
};
use serde_json::json;
use temporalio_macros::activities;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::Instrument;

mod call_webhook;
mod channel;
mod escalate;
mod fan_out;
mod prepare;
pub mod push;
mod story;

pub use push::{PushMessage, PushSender};

/// Push bodies are plain text cut to this many characters (below FCM's and APNs' limits).
pub const PUSH_BODY_MAX_CHARS: usize = 178;
/// Per-request timeout of the CALL_WEBHOOK POST.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct ActivitySettings {
    /// Recipients per fan-out page; progress is checkpointed after each page.
    pub page_size: i64,
    /// Recipients of one fan-out range notified at once.
    pub send_concurrency: usize,
    /// Prefix of each recipient's deeplink; the unguessable code is appended.
    pub deeplink_base: String,
    /// Prefix of a manager's escalation link (`GET /v1/escalations/{code}`); the code is appended.
    pub escalation_link_base: String,
    /// Deliveries per CALL_WEBHOOK POST: a campaign with more is reported in consecutive parts.
    pub webhook_part_size: i64,
    /// Webhook channel events sent at once by one sender.
    pub channel_concurrency: usize,
    /// The most deliveries one campaign gets: the start checks the audience against it, and an
    /// audience that grew in the moment since is cut here rather than written whole.
    pub max_recipients: u64,
    /// How long after a webhook secret rotation the previous secret still signs
    /// `webhook-signature` beside the new one.
    pub webhook_secret_overlap: Duration,
}

impl Default for ActivitySettings {
    fn default() -> Self {
        ActivitySettings {
            page_size: 1_000,
            send_concurrency: 256,
            deeplink_base: "http://127.0.0.1:8080/v1/deeplinks/".into(),
            escalation_link_base: "http://127.0.0.1:8080/v1/escalations/".into(),
            webhook_part_size: 10_000,
            channel_concurrency: 64,
            max_recipients: 1_000_000,
            webhook_secret_overlap: Duration::from_secs(24 * 3600),
        }
    }
}

/// The activity implementations the worker registers.
pub struct CampaignActivitiesImpl {
    store: Store,
    push: PushSender,
    outbound: OutboundClient,
    settings: ActivitySettings,
    metrics: pidgr_metrics::Metrics,
}

impl CampaignActivitiesImpl {
    pub fn new(
        store: Store,
        push: PushSender,
        outbound: OutboundClient,
        settings: ActivitySettings,
    ) -> Self {
        CampaignActivitiesImpl {
            store,
            push,
            outbound,
            settings,
            metrics: pidgr_metrics::Metrics::default(),
        }
    }

    /// Counts sends and delivery transitions into `metrics` (the registry the process exposes).
    /// The push sender counts its own sends: give it the same registry.
    pub fn with_metrics(mut self, metrics: pidgr_metrics::Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    async fn counts(&self, campaign: &CampaignRef) -> Result<DeliveryCounts, ActivityError> {
        let c = self
            .store
            .delivery_counts(&campaign.org_id, &campaign.campaign_id)
            .await
            .map_err(retryable)?;
        Ok(contract_counts(c))
    }

    async fn log(
        &self,
        campaign: &CampaignRef,
        step_id: Option<&str>,
        kind: ActivityKind,
        message: String,
        details: serde_json::Value,
    ) -> Result<(), ActivityError> {
        self.store
            .append_activity(NewActivity {
                org_id: &campaign.org_id,
                campaign_id: &campaign.campaign_id,
                step_id,
                kind,
                message,
                details,
            })
            .await
            .map_err(retryable)
    }

    /// Records that `step_id` is running: on the campaign row (what the API shows) and, on an
    /// activity's first attempt, in the activity log. A wait that ended to lead here is logged
    /// first, with why it ended.
    async fn step_started(
        &self,
        ctx: &ActivityContext,
        campaign: &CampaignRef,
        step_id: &str,
        message: String,
    ) -> Result<(), ActivityError> {
        self.log_wait_end(campaign, Some(step_id)).await?;
        self.store
            .set_current_step(&campaign.org_id, &campaign.campaign_id, step_id)
            .await
            .map_err(retryable)?;
        if ctx.info().attempt <= 1 {
            self.log(
                campaign,
                Some(step_id),
                ActivityKind::StepStarted,
                message,
                json!({}),
            )
            .await?;
        }
        Ok(())
    }
}

#[activities]
impl CampaignActivitiesImpl {
    #[activity(definition = campaign_activities::SendNotification)]
    pub async fn send_notification(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: FanOutInput,
    ) -> Result<FanOutResult, ActivityError> {
        let span = activity_span(&ctx, &input.campaign);
        self.fan_out(&ctx, input, false).instrument(span).await
    }

    /// The campaign started: its deliveries are written from the audience, a page at a time.
    #[activity(definition = campaign_activities::PrepareDeliveries)]
    pub async fn prepare_deliveries(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: CampaignRef,
    ) -> Result<PreparedDeliveries, ActivityError> {
        let span = activity_span(&ctx, &input);
        self.prepare(&ctx, input).instrument(span).await
    }

    #[activity(definition = campaign_activities::PlanFanOut)]
    pub async fn plan_fan_out(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: FanOutInput,
    ) -> Result<FanOutPlan, ActivityError> {
        let span = activity_span(&ctx, &input.campaign);
        self.plan_fan_out_ranges(&ctx, input).instrument(span).await
    }

    #[activity(definition = campaign_activities::FinishFanOut)]
    pub async fn finish_fan_out(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: FanOutSummary,
    ) -> Result<DeliveryCounts, ActivityError> {
        let span = activity_span(&ctx, &input.campaign);
        self.finish_fan_out_ranges(input).instrument(span).await
    }

    #[activity(definition = campaign_activities::SendReminder)]
    pub async fn send_reminder(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: FanOutInput,
    ) -> Result<FanOutResult, ActivityError> {
        let span = activity_span(&ctx, &input.campaign);
        self.fan_out(&ctx, input, true).instrument(span).await
    }

    /// DEADLINE_CHECK begins: recorded, and counted so a wait with nothing unresolved ends at once.
    #[activity(definition = campaign_activities::BeginWait)]
    pub async fn begin_wait(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: WaitInput,
    ) -> Result<DeliveryCounts, ActivityError> {
        let message = format!("waiting up to {} for acknowledgements", input.duration);
        self.step_started(&ctx, &input.campaign, &input.step_id, message)
            .await?;
        self.counts(&input.campaign).await
    }

    #[activity(definition = campaign_activities::MarkMissed)]
    pub async fn mark_missed(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: StepInput,
    ) -> Result<DeliveryCounts, ActivityError> {
        let StepInput { campaign, step_id } = input;
        self.step_started(
            &ctx,
            &campaign,
            &step_id,
            "marking unresolved deliveries missed".into(),
        )
        .await?;
        let missed = self
            .store
            .mark_missed(&campaign.org_id, &campaign.campaign_id)
            .await
            .map_err(retryable)?;
        self.metrics.deliveries(DeliveryEvent::Missed, missed);
        tracing::info!(org_id = %campaign.org_id, campaign_id = %campaign.campaign_id, step_id, missed, "deliveries marked missed");
        // A retry finds nobody left to mark: the sample then still names who was.
        let sample = self.missed_sample(&campaign).await?;
        self.log(
            &campaign,
            Some(&step_id),
            ActivityKind::StepFinished,
            story::missed_message(missed, &sample),
            json!({ "missed": missed, "sample": sample }),
        )
        .await?;
        self.counts(&campaign).await
    }

    /// One attempt of the CALL_WEBHOOK POST; Temporal's retry policy supplies the backoff.
    #[activity(definition = campaign_activities::CallWebhook)]
    pub async fn call_webhook(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: WebhookInput,
    ) -> Result<WebhookDelivered, ActivityError> {
        let span = activity_span(&ctx, &input.campaign);
        self.post_outcomes(&ctx, input).instrument(span).await
    }

    /// Sends the webhook channel events a fan-out step queued, on the channel's 1 s / 5 s / 30 s retry schedule.
    #[activity(definition = campaign_activities::DeliverChannelEvents)]
    pub async fn deliver_channel_events(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: StepInput,
    ) -> Result<ChannelEventsDelivered, ActivityError> {
        let span = activity_span(&ctx, &input.campaign);
        self.deliver_events(&ctx, input).instrument(span).await
    }

    /// ESCALATE: each manager of recipients still unresolved is told once per step.
    #[activity(definition = campaign_activities::Escalate)]
    pub async fn escalate(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: EscalateInput,
    ) -> Result<EscalationResult, ActivityError> {
        let span = activity_span(&ctx, &input.campaign);
        self.escalate_step(&ctx, input).instrument(span).await
    }

    #[activity(definition = campaign_activities::CountDeliveries)]
    pub async fn count_deliveries(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: CampaignRef,
    ) -> Result<DeliveryCounts, ActivityError> {
        let span = activity_span(&ctx, &input);
        self.counts(&input).instrument(span).await
    }

    /// A step failed for good (a webhook after its last retry): the activity log says so and
    /// the campaign goes on.
    #[activity(definition = campaign_activities::RecordStepFailure)]
    pub async fn record_step_failure(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: StepFailure,
    ) -> Result<(), ActivityError> {
        let kind = if input.step_type == "CALL_WEBHOOK" && !input.fatal {
            ActivityKind::WebhookFailed
        } else {
            ActivityKind::StepFailed
        };
        self.log(
            &input.campaign,
            Some(&input.step_id),
            kind,
            if input.fatal {
                format!(
                    "step {} ({}) failed and no retry can fix it: {}; the campaign stops here",
                    input.step_id, input.step_type, input.error
                )
            } else {
                format!(
                    "step {} ({}) failed: {}; the campaign continues",
                    input.step_id, input.step_type, input.error
                )
            },
            json!({ "error": input.error }),
        )
        .await
    }

    /// The workflow reached an end: unresolved deliveries become MISSED, the campaign COMPLETED.
    #[activity(definition = campaign_activities::CompleteCampaign)]
    pub async fn complete_campaign(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: CampaignRef,
    ) -> Result<DeliveryCounts, ActivityError> {
        self.log_wait_end(&input, None).await?;
        let missed = self
            .store
            .complete_campaign(&input.org_id, &input.campaign_id)
            .await
            .map_err(retryable)?;
        self.metrics.deliveries(DeliveryEvent::Missed, missed);
        let counts = self.counts(&input).await?;
        tracing::info!(
            org_id = %input.org_id,
            campaign_id = %input.campaign_id,
            acknowledged = counts.acknowledged,
            missed = counts.missed,
            failed = counts.failed,
            "campaign completed"
        );
        let mut message = format!(
            "campaign completed: {} acknowledged, {} missed, {} failed",
            counts.acknowledged, counts.missed, counts.failed
        );
        let mut sample = Vec::new();
        if missed > 0 {
            sample = self.missed_sample(&input).await?;
            message.push_str(&format!(
                "; {}",
                story::missed_message(missed, &sample).replacen("marked", "marked at the end", 1)
            ));
        }
        self.log(
            &input,
            None,
            ActivityKind::CampaignCompleted,
            message,
            json!({ "marked_missed_at_end": missed, "counts": counts, "missed_sample": sample }),
        )
        .await?;
        Ok(counts)
    }

    /// The workflow was cancelled (through the API, which already set CANCELLED, or from the
    /// Web UI): make sure the campaign is CANCELLED and log it.
    #[activity(definition = campaign_activities::RecordCancellation)]
    pub async fn record_cancellation(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: CampaignRef,
    ) -> Result<(), ActivityError> {
        // Webhook channel events still waiting for a retry are not sent any more.
        self.store
            .fail_pending_webhook_events(
                &input.org_id,
                &input.campaign_id,
                None,
                "the campaign was cancelled",
            )
            .await
            .map_err(retryable)?;
        // A cancel through the API has already set CANCELLED and logged it; a cancel from the
        // Web UI arrives here with the campaign still ACTIVE.
        let campaign = self
            .store
            .get_campaign(&input.org_id, &input.campaign_id)
            .await
            .map_err(retryable)?;
        if campaign.status != CampaignStatus::Active {
            return Ok(());
        }
        match self
            .store
            .cancel_campaign(&input.org_id, &input.campaign_id)
            .await
        {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => return Ok(()),
            Err(error) => return Err(retryable(error)),
        }
        self.log(
            &input,
            None,
            ActivityKind::CampaignCancelled,
            "campaign cancelled: its workflow was cancelled in Temporal".into(),
            json!({}),
        )
        .await
    }
}

/// The span an activity's log lines carry: which organisation, campaign and workflow run they
/// concern, and the attempt. When traces are exported it is a child of the campaign's workflow
/// start, whose trace context the workflow passed along.
fn activity_span(ctx: &ActivityContext, campaign: &CampaignRef) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let info = ctx.info();
    let span = tracing::info_span!(
        "activity",
        activity = %info.activity_type,
        org_id = %campaign.org_id,
        campaign_id = %campaign.campaign_id,
        workflow_id = info.workflow_id.as_deref().unwrap_or_default(),
        attempt = info.attempt,
    );
    if let Some(parent) = campaign.trace_parent.as_deref().and_then(remote_parent) {
        // Fails only when no exporter is installed, and then there is no trace to join.
        let _ = span.set_parent(parent);
    }
    span
}

/// The context of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), or `None` for one
/// that is not well formed.
fn remote_parent(traceparent: &str) -> Option<opentelemetry::Context> {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    let mut parts = traceparent.split('-');
    let (Some("00"), Some(trace_id), Some(span_id), Some(flags), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let parent = SpanContext::new(
        TraceId::from_hex(trace_id).ok()?,
        SpanId::from_hex(span_id).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    parent
        .is_valid()
        .then(|| opentelemetry::Context::new().with_remote_span_context(parent))
}

fn contract_counts(c: pidgr_store::DeliveryCounts) -> DeliveryCounts {
    DeliveryCounts {
        pending: c.pending,
        sent: c.sent,
        read: c.read,
        acknowledged: c.acknowledged,
        missed: c.missed,
        failed: c.failed,
    }
}

/// A failure Temporal should retry with the activity's policy — unless it is a permanent
/// store fault, which no retry can fix: a configuration error (no secret key, or not the key
/// that sealed a secret), corrupt data (a secret that does not open) or a row that is gone.
/// Retrying those would go on for ever out of sight; they fail the activity at once, with a
/// log line here and, through the workflow, in the campaign's activity log.
fn retryable(error: impl std::error::Error + Send + Sync + 'static) -> ActivityError {
    let permanent = (&error as &dyn std::any::Any)
        .downcast_ref::<StoreError>()
        .is_some_and(is_permanent);
    if permanent {
        tracing::error!(%error, "an activity failed for good: a retry could not fix this");
        return ActivityError::from(ApplicationFailure::non_retryable(error));
    }
    ActivityError::from(error)
}

/// Whether a store error would come back identical on every retry.
fn is_permanent(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Config(_) | StoreError::Corrupt(_) | StoreError::NotFound
    )
}

/// How often a long-running call heartbeats; well inside the activities' 60 s heartbeat timeout.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// Runs `work`, recording `details` as a heartbeat every [`HEARTBEAT_EVERY`] until it is done.
async fn heartbeat_while<T>(
    ctx: &ActivityContext,
    details: impl serde::Serialize + Copy + Send + Sync + 'static,
    work: impl Future<Output = T>,
) -> T {
    let mut work = std::pin::pin!(work);
    let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
    beat.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = beat.tick() => {
                let _ = ctx.record_heartbeat(details).await;
            }
        }
    }
}

/// A failure Temporal should retry after `delay` (the provider's Retry-After, the next due
/// webhook event) rather than after the policy's own backoff.
fn retry_after(
    error: impl std::error::Error + Send + Sync + 'static,
    delay: Option<Duration>,
) -> ActivityError {
    match delay {
        Some(delay) => ActivityError::from(
            ApplicationFailure::builder(anyhow::Error::new(error))
                .next_retry_delay(delay)
                .build(),
        ),
        None => retryable(error),
    }
}

#[cfg(test)]
mod failure_tests {
    use super::*;

    fn non_retryable(error: ActivityError) -> bool {
        match error {
            ActivityError::Application(failure) => failure.is_non_retryable(),
            _ => panic!("an application failure was expected"),
        }
    }

    #[test]
    fn configuration_corruption_and_missing_rows_are_not_retried() {
        for error in [
            StoreError::Config("no secret key is configured".into()),
            StoreError::Corrupt("a stored secret could not be decrypted".into()),
            StoreError::NotFound,
        ] {
            let shown = error.to_string();
            assert!(non_retryable(retryable(error)), "{shown}");
        }
    }

    #[test]
    fn passing_faults_are_retried() {
        assert!(!non_retryable(retryable(StoreError::Conflict(
            "busy".into()
        ))));
        assert!(!non_retryable(retryable(std::io::Error::other("reset"))));
    }
}

#[cfg(test)]
mod trace_parent_tests {
    use opentelemetry::trace::TraceContextExt;

    use super::remote_parent;

    #[test]
    fn a_w3c_traceparent_becomes_a_remote_sampled_parent() {
        let parent = remote_parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("a well-formed traceparent");
        let span = parent.span();
        let context = span.span_context();
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(context.is_remote() && context.is_sampled());
    }

    #[test]
    fn a_malformed_traceparent_is_no_parent() {
        for malformed in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-not-hex-01",
        ] {
            assert!(remote_parent(malformed).is_none(), "{malformed:?}");
        }
    }
}
