//! SEND_NOTIFICATION and SEND_REMINDER: the fan-out to every recipient a step has to notify.
//!
//! The workflow splits a step's audience into ranges of positions; each range is one activity
//! that any worker may take. Inside a range, recipients are read a page at a time, up to
//! `send_concurrency` of them are notified at once (over the push client's pooled connections),
//! and the page's outcomes are recorded in a few statements before the checkpoint moves on.
//!
//! Duplicates after a crash are bounded by one page per range in flight: a recipient is
//! skipped once its outcome is recorded, and the checkpoint (heartbeat details) only moves
//! after a page is recorded. Each push carries a collapse id per delivery and step, so such a
//! duplicate merges with the first on the device.

use chrono::Utc;
use futures::stream::{FuturesOrdered, StreamExt};
use pidgr_metrics::DeliveryEvent;
use pidgr_outbound::channel_event;
use pidgr_store::{ActivityKind, Campaign, CampaignStatus, Device, NotifyTarget};
use pidgr_workflows::contract::{
    CampaignRef, DeliveryCounts, FanOutInput, FanOutPlan, FanOutResult, FanOutSummary, SeqRange,
};
use pidgr_workflows::definition::Channel;
use pidgr_workflows::template;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::push::{OrgPush, PushUnavailable};
use crate::{
    CampaignActivitiesImpl, PUSH_BODY_MAX_CHARS, PushMessage, heartbeat_while, retry_after,
    retryable,
};

/// Fan-out progress kept in heartbeat details: the audience position after the last page whose
/// outcomes were recorded.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(crate) struct FanOutCheckpoint {
    pub(crate) after_seq: i64,
}

/// What one step sends to everyone it notifies, read once per activity.
struct StepMessage<'a> {
    campaign: &'a Campaign,
    cref: &'a CampaignRef,
    step_id: &'a str,
    variables: &'a BTreeMap<String, String>,
    push: Option<OrgPush>,
    /// The step lists the webhook channel: `Some(false)` when the organisation has none.
    webhook_channel: Option<bool>,
}

/// What became of one recipient.
struct Notified {
    outcome: Result<(), String>,
    event: Option<String>,
    removed: Vec<String>,
    unavailable: Option<PushUnavailable>,
}

impl CampaignActivitiesImpl {
    /// A partitioned fan-out begins: logged, and the audience's last position returned so the
    /// workflow can split it into ranges.
    pub(crate) async fn plan_fan_out_ranges(
        &self,
        ctx: &ActivityContext,
        input: FanOutInput,
    ) -> Result<FanOutPlan, ActivityError> {
        let cref = &input.campaign;
        self.step_started(ctx, cref, &input.step_id, started_message(&input))
            .await?;
        let last = self
            .store
            .last_delivery(&cref.org_id, &cref.campaign_id)
            .await
            .map_err(retryable)?;
        Ok(FanOutPlan {
            last_seq: last.map_or(0, |(seq, _)| seq),
        })
    }

    /// A partitioned fan-out's ranges are done: the step's totals go to the activity log.
    pub(crate) async fn finish_fan_out_ranges(
        &self,
        summary: FanOutSummary,
    ) -> Result<DeliveryCounts, ActivityError> {
        self.log_fan_out_finished(
            &summary.campaign,
            &summary.step_id,
            summary.notified,
            summary.failed,
            summary.tokens_removed,
        )
        .await?;
        self.counts(&summary.campaign).await
    }

    /// Notifies the recipients of one range (or, for workflows started before ranges existed,
    /// of the whole audience, logging the step's start and finish as it did then).
    pub(crate) async fn fan_out(
        &self,
        ctx: &ActivityContext,
        input: FanOutInput,
        reminder: bool,
    ) -> Result<FanOutResult, ActivityError> {
        let whole_audience = input.range.is_none();
        let range = input.range.unwrap_or(SeqRange {
            after_seq: 0,
            last_seq: i64::MAX,
        });
        let cref = &input.campaign;
        let campaign = self
            .store
            .get_campaign(&cref.org_id, &cref.campaign_id)
            .await
            .map_err(retryable)?;
        if campaign.status != CampaignStatus::Active {
            // Cancelled while this task was queued: notify no one.
            return self
                .fan_out_result(cref, whole_audience, FanOutResult::default())
                .await;
        }
        if whole_audience {
            self.step_started(ctx, cref, &input.step_id, started_message(&input))
                .await?;
        }
        let checkpoint: FanOutCheckpoint = ctx
            .heartbeat_details()
            .deserialize()
            .ok()
            .flatten()
            .unwrap_or_default();
        let push = if input.channels.contains(&Channel::Push) {
            Some(
                self.push
                    .credentials(&cref.org_id)
                    .await
                    .map_err(retryable)?,
            )
        } else {
            None
        };
        let webhook_channel = if input.channels.contains(&Channel::Webhook) {
            Some(
                self.store
                    .get_webhook_channel(&cref.org_id)
                    .await
                    .map_err(retryable)?
                    .is_some(),
            )
        } else {
            None
        };
        let message = StepMessage {
            campaign: &campaign,
            cref,
            step_id: &input.step_id,
            variables: &input.variables,
            push,
            webhook_channel,
        };
        let mut after_seq = checkpoint.after_seq.max(range.after_seq);
        let mut result = FanOutResult::default();
        // The last page's webhook channel events, sent while the next page is pushed.
        let mut events_pass: Option<EventsPass<'_>> = None;
        loop {
            if ctx.is_cancelled() {
                return Err(ActivityError::cancelled());
            }
            let page = self
                .store
                .notify_range_page(
                    &cref.org_id,
                    &cref.campaign_id,
                    &input.step_id,
                    reminder,
                    (after_seq, range.last_seq),
                    self.settings.page_size,
                )
                .await
                .map_err(retryable)?;
            let Some(last_seq) = page.last().map(|target| target.seq) else {
                break;
            };
            if after_seq > range.after_seq && !self.still_active(cref).await? {
                // Cancelled through the API: seen within one page, even before Temporal tells
                // this worker.
                return Err(ActivityError::cancelled());
            }
            let devices = match &message.push {
                Some(_) => {
                    let members: Vec<&str> =
                        page.iter().filter_map(|t| t.member_id.as_deref()).collect();
                    self.store
                        .devices_of_members(&cref.org_id, &members)
                        .await
                        .map_err(retryable)?
                }
                None => HashMap::new(),
            };
            // The provider's inline retries can keep a page busy for a while: keep the attempt
            // alive meanwhile (the checkpoint itself does not move).
            let sends = self.notify_all(&message, &page, &devices);
            let previous_events = finish(events_pass.take());
            let (notified, events_sent) = heartbeat_while(
                ctx,
                FanOutCheckpoint { after_seq },
                futures::future::join(sends, previous_events),
            )
            .await;
            events_sent?;
            let mut outcomes = Vec::with_capacity(page.len());
            let mut events = Vec::new();
            let mut unavailable = None;
            for (target, notified) in page.iter().zip(notified) {
                self.log_removed_tokens(cref, &input.step_id, target, &notified.removed)
                    .await?;
                result.tokens_removed += notified.removed.len() as u64;
                if let Some(error) = notified.unavailable {
                    // Not recorded: the retry notifies this recipient again.
                    unavailable.get_or_insert(error);
                    continue;
                }
                if let Some(body) = notified.event {
                    events.push((target.delivery_id.clone(), body));
                }
                match &notified.outcome {
                    Ok(()) => result.notified += 1,
                    Err(_) => result.failed += 1,
                }
                outcomes.push((target.delivery_id.clone(), notified.outcome));
            }
            // Events first: if the worker dies before the outcomes are recorded, the page runs
            // again and its events, already queued, keep their first body.
            self.store
                .enqueue_webhook_events(&cref.org_id, &cref.campaign_id, &input.step_id, &events)
                .await
                .map_err(retryable)?;
            let recorded = self
                .store
                .record_notified(&cref.org_id, &input.step_id, reminder, &outcomes)
                .await
                .map_err(retryable)?;
            self.metrics.deliveries(DeliveryEvent::Sent, recorded.sent);
            self.metrics
                .deliveries(DeliveryEvent::Failed, recorded.failed);
            self.metrics.fanout_recipients(outcomes.len() as u64);
            tracing::debug!(
                org_id = %cref.org_id,
                campaign_id = %cref.campaign_id,
                step_id = %input.step_id,
                recipients = outcomes.len(),
                sent = recorded.sent,
                failed = recorded.failed,
                "fan-out page recorded"
            );
            if !events.is_empty() {
                // The page's events go out beside the next page's pushes; the step's
                // WEBHOOK_CHANNEL activity afterwards sends what is left and the retries.
                events_pass = Some(Box::pin(self.send_events_now(ctx, cref, &input.step_id)));
            }
            if let Some(error) = unavailable {
                // What was sent is recorded; the retry resumes with the recipients that wait.
                let delay = error.retry_after;
                return Err(retry_after(error, delay));
            }
            after_seq = last_seq;
            // Heartbeats are throttled by the SDK; a lost one only costs re-reading a page,
            // since recorded recipients are skipped anyway.
            let _ = ctx.record_heartbeat(FanOutCheckpoint { after_seq }).await;
        }
        let last_events = finish(events_pass);
        heartbeat_while(ctx, FanOutCheckpoint { after_seq }, last_events).await?;
        if whole_audience {
            self.log_fan_out_finished(
                cref,
                &input.step_id,
                result.notified,
                result.failed,
                result.tokens_removed,
            )
            .await?;
        }
        self.fan_out_result(cref, whole_audience, result).await
    }

    /// Notifies a page's recipients, up to `send_concurrency` at once; the answers come back in
    /// the page's order.
    async fn notify_all(
        &self,
        message: &StepMessage<'_>,
        page: &[NotifyTarget],
        devices: &HashMap<String, Vec<Device>>,
    ) -> Vec<Notified> {
        let no_devices = Vec::new();
        let devices_of = |target: &NotifyTarget| {
            target
                .member_id
                .as_ref()
                .and_then(|member| devices.get(member))
                .unwrap_or(&no_devices)
        };
        // A hand-rolled window rather than `buffered`: the closure-made futures of the latter
        // trip the compiler's Send check for the activity's future.
        let mut in_flight = FuturesOrdered::new();
        let mut targets = page.iter();
        let mut notified = Vec::with_capacity(page.len());
        loop {
            while in_flight.len() < self.settings.send_concurrency.max(1) {
                let Some(target) = targets.next() else { break };
                in_flight.push_back(self.notify_one(message, target, devices_of(target)));
            }
            match in_flight.next().await {
                Some(one) => notified.push(one),
                None => return notified,
            }
        }
    }

    /// Pushes to the recipient's devices and prepares their webhook channel event. A recipient
    /// counts as notified when any channel reached them.
    async fn notify_one(
        &self,
        message: &StepMessage<'_>,
        target: &NotifyTarget,
        devices: &[Device],
    ) -> Notified {
        let deeplink = format!("{}{}", self.settings.deeplink_base, target.deeplink_code);
        let mut notified = Notified {
            outcome: Ok(()),
            event: None,
            removed: Vec::new(),
            unavailable: None,
        };
        let mut reasons: Vec<String> = Vec::new();
        let mut reached = false;
        // Rendered for every channel, bounded: a message too large for this recipient (long
        // values in many placeholders) fails them with the reason, like a missing variable,
        // rather than being cut or failing the whole step again and again.
        let (title, body) = match render_for(message, target) {
            Ok(rendered) => rendered,
            Err(error) => {
                notified.outcome = Err(error.to_string());
                return notified;
            }
        };
        if let Some(credentials) = &message.push {
            let body = template::plain_text(&body, PUSH_BODY_MAX_CHARS);
            let push = PushMessage {
                org_id: &message.cref.org_id,
                campaign_id: &message.cref.campaign_id,
                delivery_id: &target.delivery_id,
                step_id: message.step_id,
                user_id: &target.user_id,
                title: &title,
                body: &body,
                deeplink: &deeplink,
            };
            match self.push.notify(credentials, &push, devices).await {
                Ok(report) => {
                    notified.removed = report.removed;
                    reached |= report.sent;
                    reasons.extend(report.reason);
                }
                Err(mut error) => {
                    notified.removed = std::mem::take(&mut error.removed);
                    notified.unavailable = Some(error);
                    return notified;
                }
            }
        }
        match message.webhook_channel {
            Some(true) => {
                notified.event = Some(channel_event::event_body(
                    &target.user_id,
                    &message.cref.campaign_id,
                    &deeplink,
                    Utc::now(),
                ));
                reached = true;
            }
            Some(false) => reasons.push("the organisation has no webhook channel".to_owned()),
            None => {}
        }
        if !reached {
            notified.outcome = Err(reasons.join("; "));
        }
        notified
    }

    /// Whether the campaign is still ACTIVE (not cancelled meanwhile).
    async fn still_active(&self, cref: &CampaignRef) -> Result<bool, ActivityError> {
        let campaign = self
            .store
            .get_campaign(&cref.org_id, &cref.campaign_id)
            .await
            .map_err(retryable)?;
        Ok(campaign.status == CampaignStatus::Active)
    }

    /// A range's result as it is; a whole-audience fan-out also counts and logs the step's end.
    async fn fan_out_result(
        &self,
        cref: &CampaignRef,
        whole_audience: bool,
        mut result: FanOutResult,
    ) -> Result<FanOutResult, ActivityError> {
        if whole_audience {
            result.counts = self.counts(cref).await?;
        }
        Ok(result)
    }

    async fn log_fan_out_finished(
        &self,
        cref: &CampaignRef,
        step_id: &str,
        notified: u64,
        failed: u64,
        tokens_removed: u64,
    ) -> Result<(), ActivityError> {
        // Aggregated: one line per step whatever the audience's size, with a bounded sample of
        // who was reached and, per failure reason, how many and a sample of who.
        let reminder = self.is_reminder(cref, step_id).await?;
        let (sample, failures) = self.fan_out_story(cref, step_id, failed).await?;
        self.log(
            cref,
            Some(step_id),
            ActivityKind::StepFinished,
            crate::story::fan_out_message(
                reminder,
                notified,
                &sample,
                failed,
                &failures,
                tokens_removed,
            ),
            json!({
                "notified": notified,
                "failed": failed,
                "tokens_removed": tokens_removed,
                "sample": sample,
                "failures": failures,
            }),
        )
        .await
    }

    /// One activity-log line per push token removed for a recipient, the token masked as in
    /// device lists (the log is readable with `campaigns:read`), for the first few of a step:
    /// the step's summary counts them all, so a campaign whose audience changed phones does not
    /// write a line per recipient.
    async fn log_removed_tokens(
        &self,
        campaign: &CampaignRef,
        step_id: &str,
        target: &NotifyTarget,
        removed: &[String],
    ) -> Result<(), ActivityError> {
        if removed.is_empty() || !self.device_removal_has_room(campaign, step_id).await? {
            return Ok(());
        }
        for token in removed.iter().map(|t| pidgr_store::masked_token(t)) {
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
}

type EventsPass<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ActivityError>> + Send + 'a>>;

/// Runs a pass of channel events to its end (nothing to do without one).
async fn finish(pass: Option<EventsPass<'_>>) -> Result<(), ActivityError> {
    match pass {
        Some(pass) => pass.await,
        None => Ok(()),
    }
}

/// "notifying recipients via push, webhook" (or "reminding …").
fn started_message(input: &FanOutInput) -> String {
    let verb = if input.reminder {
        "reminding"
    } else {
        "notifying"
    };
    let via = input
        .channels
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    format!("{verb} recipients via {via}")
}

/// The step's title and Markdown body as `target` sees them, or why they cannot be made.
fn render_for(
    message: &StepMessage<'_>,
    target: &NotifyTarget,
) -> Result<(String, String), template::RenderError> {
    let campaign = message.campaign;
    let name = target.display_name.as_deref().unwrap_or(&target.user_id);
    let email = target.email.as_deref().unwrap_or("");
    let values = template::recipient_values(
        [("name", name), ("email", email), ("title", &campaign.title)],
        message.variables,
        &target.variables,
    );
    Ok((
        template::render(&campaign.message_title, &values)?,
        template::render(&campaign.body, &values)?,
    ))
}
