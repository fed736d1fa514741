//! ESCALATE: the managers of the recipients whose deliveries are still unresolved hear of it,
//! each once per step.
//!
//! The step's escalations are recorded first, in one transaction (one per manager, with the
//! reports and the link's code), so a retried attempt finds the same managers and counts and
//! tells nobody twice: webhook channel events are queued once per escalation (and sent by the
//! step's WEBHOOK_CHANNEL activity, as after a fan-out), and a push, once it went out, is marked
//! on its escalation. A manager's push is the step's template rendered with the manager's own
//! values, the step's variables and the digest: `unacknowledged_count` and `deeplink`, the link
//! that lists the reports still unacknowledged. The webhook event carries no content, like every
//! channel event: the count and the link only.

use pidgr_outbound::channel_event;
use pidgr_store::{ActivityKind, CampaignStatus, Escalation, StoreError, TemplateVersion, counted};
use pidgr_workflows::contract::{EscalateInput, EscalationResult};
use pidgr_workflows::definition::Channel;
use pidgr_workflows::template;
use serde_json::json;
use std::collections::BTreeMap;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::push::OrgPush;
use crate::{
    CampaignActivitiesImpl, PUSH_BODY_MAX_CHARS, PushMessage, heartbeat_while, retry_after,
    retryable,
};

/// Managers the push did not reach, per reason.
type PushFailures = BTreeMap<String, Vec<String>>;

impl CampaignActivitiesImpl {
    pub(crate) async fn escalate_step(
        &self,
        ctx: &ActivityContext,
        input: EscalateInput,
    ) -> Result<EscalationResult, ActivityError> {
        let EscalateInput {
            campaign: cref,
            step_id,
            config,
        } = input;
        let campaign = self
            .store
            .get_campaign(&cref.org_id, &cref.campaign_id)
            .await
            .map_err(retryable)?;
        if campaign.status != CampaignStatus::Active {
            // Cancelled while this task was queued: tell no one.
            return Ok(EscalationResult::default());
        }
        let via = config
            .channels
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        self.step_started(
            ctx,
            &cref,
            &step_id,
            format!("escalating unresolved deliveries to managers via {via}"),
        )
        .await?;
        let plan = self
            .store
            .record_escalations(&cref.org_id, &cref.campaign_id, &step_id)
            .await
            .map_err(retryable)?;
        let result = EscalationResult {
            managers: plan.escalations.len() as u64,
            unresolved: plan.escalations.iter().map(|e| e.unresolved_count).sum(),
            without_manager: plan.without_manager,
        };
        let mut notes = Vec::new();
        if config.channels.contains(&Channel::Webhook) {
            let has_channel = self
                .store
                .get_webhook_channel(&cref.org_id)
                .await
                .map_err(retryable)?
                .is_some();
            if has_channel {
                // An event already queued for a manager keeps its first body.
                let events: Vec<(String, String)> = plan
                    .escalations
                    .iter()
                    .map(|e| {
                        let body = channel_event::escalation_event_body(
                            &e.manager_user_id,
                            &cref.campaign_id,
                            &self.escalation_link(e),
                            e.unresolved_count,
                            e.created_at,
                        );
                        (e.anchor_delivery_id.clone(), body)
                    })
                    .collect();
                self.store
                    .enqueue_webhook_events(&cref.org_id, &cref.campaign_id, &step_id, &events)
                    .await
                    .map_err(retryable)?;
            } else if !plan.escalations.is_empty() {
                notes.push("no webhook event: the organisation has no webhook channel".to_owned());
            }
        }
        let mut push_failures = PushFailures::new();
        if config.channels.contains(&Channel::Push) && !plan.escalations.is_empty() {
            let credentials = self
                .push
                .credentials(&cref.org_id)
                .await
                .map_err(retryable)?;
            // Pinned by the definition and checked when the campaign was created; templates
            // keep every version, so a missing one is a fault no retry can fix.
            let message = self
                .store
                .get_template_version(&cref.org_id, &config.template_id, config.template_version)
                .await
                .map_err(retryable)?;
            let to_push: Vec<&Escalation> = plan
                .escalations
                .iter()
                .filter(|e| e.pushed_at.is_none())
                .collect();
            let pushes = self.push_to_managers(
                &cref.org_id,
                &campaign.title,
                &step_id,
                &config.variables,
                &message,
                &credentials,
                &to_push,
            );
            push_failures = heartbeat_while(ctx, (), pushes).await?;
        }
        for (reason, managers) in &push_failures {
            notes.push(format!(
                "push reached no device of {}: {reason}",
                counted(managers.len() as u64, "manager", "managers")
            ));
        }
        let message = escalated_message(&result, &notes);
        tracing::info!(
            org_id = %cref.org_id,
            campaign_id = %cref.campaign_id,
            step_id,
            managers = result.managers,
            unresolved = result.unresolved,
            without_manager = result.without_manager,
            "escalated to managers"
        );
        self.log(
            &cref,
            Some(&step_id),
            ActivityKind::StepFinished,
            message,
            json!({
                "managers": result.managers,
                "unresolved": result.unresolved,
                "without_manager": result.without_manager,
                "escalations": plan.escalations,
                "push_failures": push_failures,
            }),
        )
        .await?;
        Ok(result)
    }

    /// The manager's link: it lists their reports still unacknowledged in the campaign.
    fn escalation_link(&self, escalation: &Escalation) -> String {
        format!("{}{}", self.settings.escalation_link_base, escalation.code)
    }

    /// Pushes each manager their message, marking each escalation as pushed once it is done.
    /// Returns the managers no device accepted it for, per reason; fails (to be retried) when
    /// the providers are unavailable, after marking those already pushed.
    #[allow(clippy::too_many_arguments)]
    async fn push_to_managers(
        &self,
        org_id: &str,
        campaign_title: &str,
        step_id: &str,
        step_variables: &BTreeMap<String, String>,
        message: &TemplateVersion,
        credentials: &OrgPush,
        escalations: &[&Escalation],
    ) -> Result<PushFailures, ActivityError> {
        let mut failures = PushFailures::new();
        let ids: Vec<&str> = escalations.iter().map(|e| e.manager_id.as_str()).collect();
        let devices = self
            .store
            .devices_of_members(org_id, &ids)
            .await
            .map_err(retryable)?;
        let no_devices = Vec::new();
        for escalation in escalations {
            let name = escalation.manager_user_id.clone();
            let manager = match self.store.get_member(org_id, &escalation.manager_id).await {
                Ok(manager) => manager,
                Err(StoreError::NotFound) => {
                    failures
                        .entry("the manager is no longer a member".to_owned())
                        .or_default()
                        .push(name);
                    self.mark_pushed(org_id, escalation).await?;
                    continue;
                }
                Err(error) => return Err(retryable(error)),
            };
            let deeplink = self.escalation_link(escalation);
            let count = escalation.unresolved_count.to_string();
            let mut values = template::recipient_values(
                [
                    ("name", &manager.display_name),
                    ("email", &manager.email),
                    ("title", campaign_title),
                ],
                step_variables,
                &manager.attributes,
            );
            values.insert("unacknowledged_count", &count);
            values.insert("deeplink", &deeplink);
            let rendered = template::render(&message.title, &values)
                .and_then(|title| Ok((title, template::render(&message.body, &values)?)));
            let (title, body) = match rendered {
                Ok(rendered) => rendered,
                Err(error) => {
                    failures.entry(error.to_string()).or_default().push(name);
                    self.mark_pushed(org_id, escalation).await?;
                    continue;
                }
            };
            let body = template::plain_text(&body, PUSH_BODY_MAX_CHARS);
            let push = PushMessage {
                org_id,
                campaign_id: &escalation.campaign_id,
                delivery_id: &escalation.anchor_delivery_id,
                step_id,
                user_id: &escalation.manager_user_id,
                title: &title,
                body: &body,
                deeplink: &deeplink,
            };
            let manager_devices = devices.get(&manager.id).unwrap_or(&no_devices);
            match self.push.notify(credentials, &push, manager_devices).await {
                Ok(report) if report.sent => {}
                Ok(report) => failures
                    .entry(
                        report
                            .reason
                            .unwrap_or_else(|| crate::push::NO_DEVICE.to_owned()),
                    )
                    .or_default()
                    .push(name),
                Err(error) => {
                    // What was pushed is marked; the retry pushes the managers left.
                    let delay = error.retry_after;
                    return Err(retry_after(error, delay));
                }
            }
            self.mark_pushed(org_id, escalation).await?;
        }
        Ok(failures)
    }

    async fn mark_pushed(
        &self,
        org_id: &str,
        escalation: &Escalation,
    ) -> Result<(), ActivityError> {
        self.store
            .mark_escalation_pushed(org_id, &escalation.id)
            .await
            .map_err(retryable)
    }
}

/// "Escalated to 2 managers for 3 unresolved deliveries; 1 without a manager skipped", then
/// what a channel could not do.
fn escalated_message(result: &EscalationResult, notes: &[String]) -> String {
    let mut message = format!(
        "Escalated to {} for {}; {} without a manager skipped",
        counted(result.managers, "manager", "managers"),
        counted(
            result.unresolved,
            "unresolved delivery",
            "unresolved deliveries"
        ),
        result.without_manager
    );
    for note in notes {
        message.push_str("; ");
        message.push_str(note);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(managers: u64, unresolved: u64, without_manager: u64) -> EscalationResult {
        EscalationResult {
            managers,
            unresolved,
            without_manager,
        }
    }

    #[test]
    fn the_log_line_counts_with_plurals() {
        assert_eq!(
            escalated_message(&result(1, 1, 0), &[]),
            "Escalated to 1 manager for 1 unresolved delivery; 0 without a manager skipped"
        );
        assert_eq!(
            escalated_message(&result(2, 3, 1), &[]),
            "Escalated to 2 managers for 3 unresolved deliveries; 1 without a manager skipped"
        );
        assert_eq!(
            escalated_message(
                &result(0, 0, 4),
                &["no webhook event: the organisation has no webhook channel".into()]
            ),
            "Escalated to 0 managers for 0 unresolved deliveries; 4 without a manager skipped; \
             no webhook event: the organisation has no webhook channel"
        );
    }
}
