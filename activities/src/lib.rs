//! Every side effect of a campaign step, as Temporal activities: fan-out through a push
//! provider, reminders, mark-missed, the CALL_WEBHOOK POST, and the bookkeeping around waits,
//! failures, completion and cancellation.
//!
//! Activities are retried by Temporal, so each one is safe to run again: database writes are
//! conditional on the current status, and fan-out skips recipients its step already notified.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use pidgr_outbound::{OutboundClient, channel_event};
use pidgr_store::{
    ActivityKind, CampaignStatus, DeliveryReport, NewActivity, NotifyTarget, Store, StoreError,
};
use pidgr_workflows::contract::{
    CampaignRef, ChannelEventsDelivered, DeliveryCounts, FanOutInput, FanOutResult, StepFailure,
    StepInput, WaitInput, WebhookDelivered, WebhookInput, activity_types as campaign_activities,
};
use pidgr_workflows::definition::Channel;
use pidgr_workflows::template;
use serde::{Deserialize, Serialize};
use serde_json::json;
use temporalio_macros::activities;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

mod channel;
pub mod push;

pub use push::{PushMessage, PushSender};

/// Push bodies are plain text cut to this many characters (below FCM's and APNs' limits).
pub const PUSH_BODY_MAX_CHARS: usize = 178;
/// Per-request timeout of the CALL_WEBHOOK POST (seed 001).
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct ActivitySettings {
    /// Recipients per fan-out page; progress is checkpointed after each page.
    pub page_size: i64,
    /// Prefix of each recipient's deeplink; the unguessable code is appended.
    pub deeplink_base: String,
}

impl Default for ActivitySettings {
    fn default() -> Self {
        ActivitySettings {
            page_size: 200,
            deeplink_base: "http://127.0.0.1:8080/v1/deeplinks/".into(),
        }
    }
}

/// The activity implementations the worker registers.
pub struct CampaignActivitiesImpl {
    store: Store,
    push: PushSender,
    outbound: OutboundClient,
    settings: ActivitySettings,
}

/// Fan-out progress kept in heartbeat details: the audience position after the last page whose
/// outcomes were recorded.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct FanOutCheckpoint {
    after_seq: i64,
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
        }
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
    /// activity's first attempt, in the activity log.
    async fn step_started(
        &self,
        ctx: &ActivityContext,
        campaign: &CampaignRef,
        step_id: &str,
        message: String,
    ) -> Result<(), ActivityError> {
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

    /// SEND_NOTIFICATION and SEND_REMINDER: page through the recipients the step still has to
    /// notify, push to each one's devices and queue their webhook channel events, record the
    /// outcomes page by page, and heartbeat the position so a retried attempt resumes after the
    /// last recorded page. A recipient counts as notified when any channel reached them.
    async fn fan_out(
        &self,
        ctx: &ActivityContext,
        input: FanOutInput,
        reminder: bool,
    ) -> Result<FanOutResult, ActivityError> {
        let FanOutInput {
            campaign: cref,
            step_id,
            channels,
            variables,
        } = input;
        let campaign = self
            .store
            .get_campaign(&cref.org_id, &cref.campaign_id)
            .await
            .map_err(retryable)?;
        if campaign.status != CampaignStatus::Active {
            // Cancelled while this task was queued: notify no one.
            return Ok(FanOutResult {
                counts: self.counts(&cref).await?,
                ..Default::default()
            });
        }
        let checkpoint: FanOutCheckpoint = ctx
            .heartbeat_details()
            .deserialize()
            .ok()
            .flatten()
            .unwrap_or_default();
        let verb = if reminder { "reminding" } else { "notifying" };
        let via = channels
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        self.step_started(ctx, &cref, &step_id, format!("{verb} recipients via {via}"))
            .await?;
        let push = if channels.contains(&Channel::Push) {
            Some(
                self.push
                    .credentials(&cref.org_id)
                    .await
                    .map_err(retryable)?,
            )
        } else {
            None
        };
        let webhook_channel = channels.contains(&Channel::Webhook)
            && self
                .store
                .get_webhook_channel(&cref.org_id)
                .await
                .map_err(retryable)?
                .is_some();
        let mut after_seq = checkpoint.after_seq;
        let mut result = FanOutResult::default();
        let mut removed_tokens = 0u64;
        loop {
            if ctx.is_cancelled() {
                return Err(ActivityError::cancelled());
            }
            let page = self
                .store
                .notify_page(
                    &cref.org_id,
                    &cref.campaign_id,
                    &step_id,
                    reminder,
                    after_seq,
                    self.settings.page_size,
                )
                .await
                .map_err(retryable)?;
            let Some(last) = page.last() else { break };
            let last_seq = last.seq;
            let mut devices = match &push {
                Some(_) => {
                    let members: Vec<&str> =
                        page.iter().filter_map(|t| t.member_id.as_deref()).collect();
                    self.store
                        .devices_of_members(&cref.org_id, &members)
                        .await
                        .map_err(retryable)?
                }
                None => Default::default(),
            };
            let mut outcomes = Vec::with_capacity(page.len());
            let mut events = Vec::new();
            let mut unavailable = None;
            for target in &page {
                let deeplink = format!("{}{}", self.settings.deeplink_base, target.deeplink_code);
                let mut reasons: Vec<String> = Vec::new();
                let mut reached = false;
                if let Some(credentials) = &push {
                    let name = target.display_name.as_deref().unwrap_or(&target.user_id);
                    let email = target.email.as_deref().unwrap_or("");
                    let values = template::recipient_values(
                        [("name", name), ("email", email), ("title", &campaign.title)],
                        &variables,
                        &target.variables,
                    );
                    let title = template::render(&campaign.message_title, &values);
                    let body = template::plain_text(
                        &template::render(&campaign.body, &values),
                        PUSH_BODY_MAX_CHARS,
                    );
                    let message = PushMessage {
                        org_id: &cref.org_id,
                        campaign_id: &cref.campaign_id,
                        delivery_id: &target.delivery_id,
                        step_id: &step_id,
                        user_id: &target.user_id,
                        title: &title,
                        body: &body,
                        deeplink: &deeplink,
                    };
                    let member_devices = target
                        .member_id
                        .as_ref()
                        .and_then(|member| devices.remove(member))
                        .unwrap_or_default();
                    // Inline retries can keep one recipient busy for a while: keep the
                    // attempt alive meanwhile (the checkpoint itself does not move).
                    let notify = self.push.notify(credentials, &message, &member_devices);
                    let notified =
                        heartbeat_while(ctx, FanOutCheckpoint { after_seq }, notify).await;
                    let removed = match &notified {
                        Ok(report) => &report.removed,
                        Err(error) => &error.removed,
                    };
                    removed_tokens += removed.len() as u64;
                    self.log_removed_tokens(&cref, &step_id, target, removed)
                        .await?;
                    match notified {
                        Ok(report) => {
                            reached |= report.sent;
                            reasons.extend(report.reason);
                        }
                        Err(error) => {
                            unavailable = Some(error);
                            break;
                        }
                    }
                }
                if channels.contains(&Channel::Webhook) {
                    if webhook_channel {
                        let body = channel_event::event_body(
                            &target.user_id,
                            &cref.campaign_id,
                            &deeplink,
                            Utc::now(),
                        );
                        events.push((target.delivery_id.clone(), body));
                        reached = true;
                    } else {
                        reasons.push("the organisation has no webhook channel".to_owned());
                    }
                }
                // Keeps a slow page alive; the checkpoint only moves once a page is recorded.
                let _ = ctx.record_heartbeat(FanOutCheckpoint { after_seq }).await;
                let outcome = if reached {
                    result.notified += 1;
                    Ok(())
                } else {
                    result.failed += 1;
                    Err(reasons.join("; "))
                };
                outcomes.push((target.delivery_id.clone(), outcome));
            }
            // Events first: if the worker dies before the outcomes are recorded, the page runs
            // again and its events, already queued, keep their first body.
            self.store
                .enqueue_webhook_events(&cref.org_id, &cref.campaign_id, &step_id, &events)
                .await
                .map_err(retryable)?;
            self.store
                .record_notified(&cref.org_id, &step_id, reminder, &outcomes)
                .await
                .map_err(retryable)?;
            if let Some(error) = unavailable {
                // What was sent is recorded; the retry starts with the recipient that failed.
                let delay = error.retry_after;
                return Err(retry_after(error, delay));
            }
            after_seq = last_seq;
            // Heartbeats are throttled by the SDK; a lost one only costs re-reading a page,
            // since recorded recipients are skipped anyway.
            let _ = ctx.record_heartbeat(FanOutCheckpoint { after_seq }).await;
        }
        result.counts = self.counts(&cref).await?;
        self.log(
            &cref,
            Some(&step_id),
            ActivityKind::StepFinished,
            format!(
                "{} recipients notified, {} failed",
                result.notified, result.failed
            ),
            json!({
                "notified": result.notified,
                "failed": result.failed,
                "tokens_removed": removed_tokens,
            }),
        )
        .await?;
        Ok(result)
    }

    /// One activity-log line per push token removed for a recipient.
    async fn log_removed_tokens(
        &self,
        campaign: &CampaignRef,
        step_id: &str,
        target: &NotifyTarget,
        removed: &[String],
    ) -> Result<(), ActivityError> {
        for token in removed {
            self.log(
                campaign,
                Some(step_id),
                ActivityKind::DeviceRemoved,
                format!("removed the push token {token} of {}", target.user_id),
                json!({ "delivery_id": target.delivery_id, "user_id": target.user_id, "token": token }),
            )
            .await?;
        }
        Ok(())
    }

    fn webhook_payload(
        campaign: &CampaignRef,
        name: &str,
        reports: &[DeliveryReport],
    ) -> serde_json::Value {
        fn stamp(at: &Option<DateTime<Utc>>) -> Option<String> {
            at.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        }
        let mut summary = BTreeMap::from([("acknowledged", 0u64), ("missed", 0), ("failed", 0)]);
        let deliveries: Vec<serde_json::Value> = reports
            .iter()
            .map(|r| {
                let status = r.status.as_str();
                if let Some(n) = summary.get_mut(status.to_ascii_lowercase().as_str()) {
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
        json!({
            "campaign_id": campaign.campaign_id,
            "campaign_name": name,
            "deliveries": deliveries,
            "summary": {
                "total": reports.len(),
                "acknowledged": summary["acknowledged"],
                "missed": summary["missed"],
                "failed": summary["failed"],
            },
        })
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
        self.fan_out(&ctx, input, false).await
    }

    #[activity(definition = campaign_activities::SendReminder)]
    pub async fn send_reminder(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: FanOutInput,
    ) -> Result<FanOutResult, ActivityError> {
        self.fan_out(&ctx, input, true).await
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
        self.log(
            &campaign,
            Some(&step_id),
            ActivityKind::StepFinished,
            format!("{missed} deliveries marked missed"),
            json!({ "missed": missed }),
        )
        .await?;
        self.counts(&campaign).await
    }

    /// One attempt of the CALL_WEBHOOK POST; Temporal's retry policy supplies the backoff.
    /// Each attempt is logged; a refusal that no retry can fix (blocked URL, 4xx) ends the
    /// retries at once.
    #[activity(definition = campaign_activities::CallWebhook)]
    pub async fn call_webhook(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: WebhookInput,
    ) -> Result<WebhookDelivered, ActivityError> {
        let WebhookInput {
            campaign,
            step_id,
            campaign_name,
            config,
            max_attempts,
        } = input;
        let attempt = ctx.info().attempt.max(1);
        if attempt == 1 {
            self.step_started(
                &ctx,
                &campaign,
                &step_id,
                format!("calling webhook {}", config.name),
            )
            .await?;
        }
        let reports = self
            .store
            .delivery_reports(&campaign.org_id, &campaign.campaign_id)
            .await
            .map_err(retryable)?;
        let body = serde_json::to_vec(&Self::webhook_payload(&campaign, &campaign_name, &reports))
            .map_err(retryable)?;
        let sent = self
            .outbound
            .post_json(&config.url, &config.headers, body, WEBHOOK_TIMEOUT)
            .await;
        let (message, status) = match &sent {
            Ok(response) => (
                format!(
                    "webhook {}: attempt {attempt} of {max_attempts} answered {}",
                    config.name, response.status
                ),
                Some(response.status),
            ),
            Err(error) => (
                format!(
                    "webhook {}: attempt {attempt} of {max_attempts} failed: {error}",
                    config.name
                ),
                None,
            ),
        };
        // Header values are secrets and never logged; the URL is configuration, not a secret.
        self.log(
            &campaign,
            Some(&step_id),
            ActivityKind::WebhookAttempt,
            message,
            json!({ "attempt": attempt, "max_attempts": max_attempts, "status": status, "url": config.url }),
        )
        .await?;
        match sent {
            Ok(response) => {
                self.log(
                    &campaign,
                    Some(&step_id),
                    ActivityKind::StepFinished,
                    format!("webhook {} delivered", config.name),
                    json!({ "attempt": attempt }),
                )
                .await?;
                Ok(WebhookDelivered {
                    status: response.status,
                    attempt,
                })
            }
            Err(error) if error.is_retryable() => Err(retryable(error)),
            Err(error) => Err(ActivityError::Application(Box::new(
                ApplicationFailure::non_retryable(error),
            ))),
        }
    }

    /// Sends the webhook channel events a fan-out step queued, on seed 002's retry schedule.
    #[activity(definition = campaign_activities::DeliverChannelEvents)]
    pub async fn deliver_channel_events(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: StepInput,
    ) -> Result<ChannelEventsDelivered, ActivityError> {
        self.deliver_events(&ctx, input).await
    }

    #[activity(definition = campaign_activities::CountDeliveries)]
    pub async fn count_deliveries(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: CampaignRef,
    ) -> Result<DeliveryCounts, ActivityError> {
        self.counts(&input).await
    }

    /// A step failed for good (a webhook after its last retry): the activity log says so and
    /// the campaign goes on.
    #[activity(definition = campaign_activities::RecordStepFailure)]
    pub async fn record_step_failure(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: StepFailure,
    ) -> Result<(), ActivityError> {
        let kind = if input.step_type == "CALL_WEBHOOK" {
            ActivityKind::WebhookFailed
        } else {
            ActivityKind::StepFailed
        };
        self.log(
            &input.campaign,
            Some(&input.step_id),
            kind,
            format!(
                "step {} ({}) failed: {}; the campaign continues",
                input.step_id, input.step_type, input.error
            ),
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
        let missed = self
            .store
            .complete_campaign(&input.org_id, &input.campaign_id)
            .await
            .map_err(retryable)?;
        let counts = self.counts(&input).await?;
        self.log(
            &input,
            None,
            ActivityKind::CampaignCompleted,
            format!(
                "campaign completed: {} acknowledged, {} missed, {} failed",
                counts.acknowledged, counts.missed, counts.failed
            ),
            json!({ "marked_missed_at_end": missed, "counts": counts }),
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

/// A failure Temporal should retry with the activity's policy.
fn retryable(error: impl std::error::Error + Send + Sync + 'static) -> ActivityError {
    ActivityError::from(error)
}

/// How often a long-running call heartbeats; well inside the activities' 60 s heartbeat timeout.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// Runs `work`, recording `details` as a heartbeat every [`HEARTBEAT_EVERY`] until it is done.
async fn heartbeat_while<T>(
    ctx: &ActivityContext,
    details: FanOutCheckpoint,
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
