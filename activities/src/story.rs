//! The activity log's sentences that need more than the activity's own input: how a wait ended
//! (read back from the campaign row and its definition, so the workflow itself is unchanged and
//! old histories replay), who a fan-out step reached and who it could not, who was marked missed.

use pidgr_store::{ActivityKind, FailureGroup, SAMPLE_NAMES, counted, sample_phrase};
use pidgr_workflows::contract::{CampaignRef, DeliveryCounts};
use pidgr_workflows::definition::{Definition, Outcome, StepKind};
use serde_json::json;
use temporalio_sdk::activities::ActivityError;

use crate::{CampaignActivitiesImpl, contract_counts, retryable};

/// Removed push tokens logged one line each, per step; the step's summary counts them all.
pub(crate) const DEVICE_REMOVED_LINES: u64 = 20;

/// Why a DEADLINE_CHECK wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitEnd {
    Deadline,
    AllResolved,
}

/// How the wait `wait_step` ended, given the step the workflow went on to (`None`: the
/// campaign's end). The transitions tell when they differ; when both outcomes lead to the same
/// place, whether anyone was still unresolved does.
pub(crate) fn wait_end(
    definition: &Definition,
    wait_step: &str,
    next: Option<&str>,
    unresolved: u64,
) -> WaitEnd {
    let leads_to = |outcome: Outcome| {
        definition
            .step(wait_step)
            .and_then(|step| step.transitions.get(&outcome))
            .map(String::as_str)
            == next
    };
    match (
        leads_to(Outcome::Deadline),
        leads_to(Outcome::AllAcknowledged),
    ) {
        (true, false) => WaitEnd::Deadline,
        (false, true) => WaitEnd::AllResolved,
        _ if unresolved == 0 => WaitEnd::AllResolved,
        _ => WaitEnd::Deadline,
    }
}

/// "wait ended at its deadline: 2 recipients had not acknowledged" (or "... before its
/// deadline: everyone acknowledged").
pub(crate) fn wait_end_message(end: WaitEnd, counts: &DeliveryCounts) -> String {
    match end {
        WaitEnd::Deadline => format!(
            "wait ended at its deadline: {} not acknowledged",
            counted(counts.unresolved(), "recipient has", "recipients have")
        ),
        WaitEnd::AllResolved if counts.failed == 0 => {
            "wait ended before its deadline: everyone acknowledged".to_owned()
        }
        WaitEnd::AllResolved => format!(
            "wait ended before its deadline: everyone reachable acknowledged ({} could not be \
             reached)",
            counted(counts.failed, "recipient", "recipients")
        ),
    }
}

/// "reminded 2 recipients: Alan, Grace; 1 recipient failed: no device registered (1: Bob)".
pub(crate) fn fan_out_message(
    reminder: bool,
    notified: u64,
    sample: &[String],
    failed: u64,
    failures: &[FailureGroup],
    tokens_removed: u64,
) -> String {
    let verb = if reminder { "reminded" } else { "notified" };
    let mut message = format!("{verb} {}", counted(notified, "recipient", "recipients"));
    if notified > 0 && !sample.is_empty() {
        message.push_str(&format!(": {}", sample_phrase(sample, notified)));
    }
    if failed > 0 {
        message.push_str(&format!(
            "; {} failed",
            counted(failed, "recipient", "recipients")
        ));
        if !failures.is_empty() {
            let reasons: Vec<String> = failures.iter().map(FailureGroup::phrase).collect();
            message.push_str(&format!(": {}", reasons.join("; ")));
        }
    }
    if tokens_removed > 0 {
        message.push_str(&format!(
            "; {} removed (the provider said they are gone)",
            counted(tokens_removed, "push token", "push tokens")
        ));
    }
    message
}

/// "marked 2 recipients missed: Ada, Alan".
pub(crate) fn missed_message(missed: u64, sample: &[String]) -> String {
    let mut message = format!(
        "marked {} missed",
        counted(missed, "recipient", "recipients")
    );
    if missed > 0 && !sample.is_empty() {
        message.push_str(&format!(": {}", sample_phrase(sample, missed)));
    }
    message
}

impl CampaignActivitiesImpl {
    /// The campaign's definition as stored with it (`None` when it does not parse: the story
    /// then leaves out what needs it, and the step goes on).
    async fn definition(
        &self,
        cref: &CampaignRef,
    ) -> Result<(Option<String>, Option<Definition>), ActivityError> {
        let campaign = self
            .store
            .get_campaign(&cref.org_id, &cref.campaign_id)
            .await
            .map_err(retryable)?;
        Ok((
            campaign.current_step,
            serde_json::from_str(&campaign.definition).ok(),
        ))
    }

    /// Called as the step after a wait (or the campaign's end, `next: None`) begins: when the
    /// campaign row still names a DEADLINE_CHECK step, that wait has just ended, and the log
    /// says when and why. Runs before the row moves to the next step, so a retried activity
    /// finds the row moved and writes nothing twice.
    pub(crate) async fn log_wait_end(
        &self,
        cref: &CampaignRef,
        next: Option<&str>,
    ) -> Result<(), ActivityError> {
        let (Some(current), Some(definition)) = self.definition(cref).await? else {
            return Ok(());
        };
        if Some(current.as_str()) == next {
            return Ok(());
        }
        let Some(StepKind::DeadlineCheck(_)) = definition.step(&current).map(|s| &s.kind) else {
            return Ok(());
        };
        let counts = contract_counts(
            self.store
                .delivery_counts(&cref.org_id, &cref.campaign_id)
                .await
                .map_err(retryable)?,
        );
        let end = wait_end(&definition, &current, next, counts.unresolved());
        self.log(
            cref,
            Some(&current),
            ActivityKind::StepFinished,
            wait_end_message(end, &counts),
            json!({
                "outcome": match end {
                    WaitEnd::Deadline => Outcome::Deadline.as_str(),
                    WaitEnd::AllResolved => Outcome::AllAcknowledged.as_str(),
                },
                "unresolved": counts.unresolved(),
                "acknowledged": counts.acknowledged,
                "next_step": next,
            }),
        )
        .await
    }

    /// Whether `step_id` of the campaign's definition is a SEND_REMINDER.
    pub(crate) async fn is_reminder(
        &self,
        cref: &CampaignRef,
        step_id: &str,
    ) -> Result<bool, ActivityError> {
        let (_, definition) = self.definition(cref).await?;
        Ok(definition
            .as_ref()
            .and_then(|d| d.step(step_id))
            .is_some_and(|s| matches!(s.kind, StepKind::SendReminder(_))))
    }

    /// A sample of who `step_id` reached and its failures per reason.
    pub(crate) async fn fan_out_story(
        &self,
        cref: &CampaignRef,
        step_id: &str,
        failed: u64,
    ) -> Result<(Vec<String>, Vec<FailureGroup>), ActivityError> {
        let sample = self
            .store
            .sample_notified(&cref.org_id, &cref.campaign_id, step_id, SAMPLE_NAMES)
            .await
            .map_err(retryable)?;
        let failures = if failed > 0 {
            self.store
                .failures_of_step(&cref.org_id, &cref.campaign_id, Some(step_id))
                .await
                .map_err(retryable)?
        } else {
            Vec::new()
        };
        Ok((sample, failures))
    }

    /// "; 2 recipients failed: the message uses {{team}}, which has no value for this
    /// recipient (2: Ann, Bob)" for the recipients who failed as their deliveries were written,
    /// or nothing.
    pub(crate) async fn unresolvable_story(
        &self,
        cref: &CampaignRef,
    ) -> Result<(String, Vec<FailureGroup>), ActivityError> {
        let failures = self
            .store
            .failures_of_step(&cref.org_id, &cref.campaign_id, None)
            .await
            .map_err(retryable)?;
        let failed: u64 = failures.iter().map(|f| f.count).sum();
        if failed == 0 {
            return Ok((String::new(), failures));
        }
        let reasons: Vec<String> = failures.iter().map(FailureGroup::phrase).collect();
        Ok((
            format!(
                "; {} failed: {}",
                counted(failed, "recipient", "recipients"),
                reasons.join("; ")
            ),
            failures,
        ))
    }

    /// Whether another removed push token of `step_id` gets a line of its own: the first
    /// [`DEVICE_REMOVED_LINES`] do, the step's summary counts them all.
    pub(crate) async fn device_removal_has_room(
        &self,
        cref: &CampaignRef,
        step_id: &str,
    ) -> Result<bool, ActivityError> {
        let logged = self
            .store
            .count_activity(
                &cref.org_id,
                &cref.campaign_id,
                step_id,
                ActivityKind::DeviceRemoved,
            )
            .await
            .map_err(retryable)?;
        Ok(logged < DEVICE_REMOVED_LINES)
    }

    /// A sample of the campaign's MISSED recipients.
    pub(crate) async fn missed_sample(
        &self,
        cref: &CampaignRef,
    ) -> Result<Vec<String>, ActivityError> {
        self.store
            .sample_with_status(&cref.org_id, &cref.campaign_id, "MISSED", SAMPLE_NAMES)
            .await
            .map_err(retryable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition() -> Definition {
        serde_json::from_value(json!({
            "version": 1,
            "start": "notify",
            "steps": [
                {"id": "notify", "type": "SEND_NOTIFICATION", "transitions": {"next": "wait"}},
                {"id": "wait", "type": "DEADLINE_CHECK", "config": {"duration": "1h"},
                 "transitions": {"deadline": "remind", "all_acknowledged": "report"}},
                {"id": "remind", "type": "SEND_REMINDER", "transitions": {"next": "again"}},
                {"id": "again", "type": "DEADLINE_CHECK", "config": {"duration": "1h"},
                 "transitions": {"deadline": "report", "all_acknowledged": "report"}},
                {"id": "report", "type": "MARK_MISSED"}
            ]
        }))
        .expect("a valid definition")
    }

    #[test]
    fn the_step_a_wait_went_on_to_says_why_it_ended() {
        let d = definition();
        assert_eq!(wait_end(&d, "wait", Some("remind"), 0), WaitEnd::Deadline);
        assert_eq!(
            wait_end(&d, "wait", Some("report"), 3),
            WaitEnd::AllResolved
        );
    }

    #[test]
    fn when_both_outcomes_lead_to_the_same_step_the_counts_say_why() {
        let d = definition();
        assert_eq!(
            wait_end(&d, "again", Some("report"), 0),
            WaitEnd::AllResolved
        );
        assert_eq!(wait_end(&d, "again", Some("report"), 2), WaitEnd::Deadline);
    }

    #[test]
    fn a_wait_end_message_counts_with_the_right_plural() {
        let mut counts = DeliveryCounts {
            sent: 1,
            ..Default::default()
        };
        assert_eq!(
            wait_end_message(WaitEnd::Deadline, &counts),
            "wait ended at its deadline: 1 recipient has not acknowledged"
        );
        counts.read = 1;
        assert_eq!(
            wait_end_message(WaitEnd::Deadline, &counts),
            "wait ended at its deadline: 2 recipients have not acknowledged"
        );
        assert_eq!(
            wait_end_message(WaitEnd::AllResolved, &DeliveryCounts::default()),
            "wait ended before its deadline: everyone acknowledged"
        );
    }

    #[test]
    fn a_fan_out_message_names_a_sample_and_counts_failures_per_reason() {
        let names: Vec<String> = ["Alan", "Grace"].map(String::from).to_vec();
        let failures = vec![FailureGroup {
            reason: "no push device is registered".into(),
            count: 1,
            sample: vec!["Bob".into()],
        }];
        assert_eq!(
            fan_out_message(true, 2, &names, 1, &failures, 0),
            "reminded 2 recipients: Alan, Grace; 1 recipient failed: no push device is \
             registered (1: Bob)"
        );
        assert_eq!(
            fan_out_message(false, 1, &names[..1], 0, &[], 0),
            "notified 1 recipient: Alan"
        );
        assert_eq!(
            fan_out_message(false, 100_000, &names, 0, &[], 1),
            "notified 100000 recipients: Alan, Grace and 99998 others; 1 push token removed \
             (the provider said they are gone)"
        );
    }

    #[test]
    fn a_missed_message_names_a_sample() {
        assert_eq!(missed_message(0, &[]), "marked 0 recipients missed");
        assert_eq!(
            missed_message(1, &["Ada".to_owned()]),
            "marked 1 recipient missed: Ada"
        );
    }
}
