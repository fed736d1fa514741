//! ESCALATE: the managers of the recipients whose deliveries are still unresolved hear of it,
//! each once per step.
//!
//! The step's escalations are recorded first, in one transaction (one per manager, with the
//! reports and the link's code), so a retried attempt finds the same managers and counts:
//! webhook channel events are queued once per escalation (and sent by the step's
//! WEBHOOK_CHANNEL activity, as after a fan-out), and each push is claimed on its escalation
//! before it is sent, so that neither a retry nor a second attempt running beside the first
//! (one whose heartbeat timed out) pushes a manager twice. The price of claiming first: a
//! worker that crashes between a claim and its push loses that push (the manager still has
//! the webhook event and the link); a push that reached no device because the providers were
//! unavailable gives its claim back for the retry.
//!
//! A manager's push is the step's template rendered with the manager's own values, the step's
//! variables and the digest: `unacknowledged_count` and `deeplink`, the link that lists the
//! reports still unacknowledged. The webhook event carries no content, like every channel
//! event: the count and the link only.

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
        // Heartbeating while it runs: an attempt that outlived its heartbeat timeout would
        // be retried beside this one.
        let plan = heartbeat_while(
            ctx,
            (),
            self.store
                .record_escalations(&cref.org_id, &cref.campaign_id, &step_id),
        )
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
                let enqueue = self.store.enqueue_webhook_events(
                    &cref.org_id,
                    &cref.campaign_id,
                    &step_id,
                    &events,
                );
                heartbeat_while(ctx, (), enqueue).await.map_err(retryable)?;
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
            // Those no attempt claimed yet (the claim itself decides, just before each push).
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

    /// Pushes each manager their message, each push claimed on its escalation first (one this
    /// attempt does not win is another's to send, and is skipped). Returns the managers no
    /// device accepted it for, per reason; fails (to be retried) when the providers are
    /// unavailable, after giving back the claim of the push that reached no device.
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
            let deeplink = self.escalation_link(escalation);
            // Everything that may fail to be retried comes before the claim.
            let manager = match self.store.get_member(org_id, &escalation.manager_id).await {
                Ok(manager) => Ok(manager),
                Err(StoreError::NotFound) => Err("the manager is no longer a member".to_owned()),
                Err(error) => return Err(retryable(error)),
            };
            let rendered = manager.and_then(|manager| {
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
                let title = template::render(&message.title, &values);
                let body = template::render(&message.body, &values);
                match (title, body) {
                    (Ok(title), Ok(body)) => Ok((manager.id.clone(), title, body)),
                    (Err(error), _) | (_, Err(error)) => Err(error.to_string()),
                }
            });
            if !self
                .store
                .claim_escalation_push(org_id, &escalation.id)
                .await
                .map_err(retryable)?
            {
                continue;
            }
            let (manager_id, title, body) = match rendered {
                Ok(rendered) => rendered,
                Err(reason) => {
                    failures.entry(reason).or_default().push(name);
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
            let manager_devices = devices.get(&manager_id).unwrap_or(&no_devices);
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
                    // No device took it: the retry pushes this manager and those left.
                    self.store
                        .release_escalation_push(org_id, &escalation.id)
                        .await
                        .map_err(retryable)?;
                    let delay = error.retry_after;
                    return Err(retry_after(error, delay));
                }
            }
        }
        Ok(failures)
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
