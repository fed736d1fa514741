//! SEND_NOTIFICATION and SEND_REMINDER: the fan-out to every recipient a step has to notify.

use chrono::Utc;
use pidgr_outbound::channel_event;
use pidgr_store::{ActivityKind, CampaignStatus, NotifyTarget};
use pidgr_workflows::contract::{CampaignRef, FanOutInput, FanOutResult};
use pidgr_workflows::definition::Channel;
use pidgr_workflows::template;
use serde::{Deserialize, Serialize};
use serde_json::json;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

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

impl CampaignActivitiesImpl {
    /// SEND_NOTIFICATION and SEND_REMINDER: page through the recipients the step still has to
    /// notify, push to each one's devices and queue their webhook channel events, record the
    /// outcomes page by page, and heartbeat the position so a retried attempt resumes after the
    /// last recorded page. A recipient counts as notified when any channel reached them.
    pub(crate) async fn fan_out(
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
}
