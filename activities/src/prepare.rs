//! The deliveries of a started campaign, written from its audience a page at a time.
//!
//! The start request only counts the audience and starts the workflow, so it answers at once
//! whatever the audience's size; this activity then writes one PENDING delivery per recipient
//! in member-id order. Each page is one transaction, and the last delivery written is the
//! checkpoint: a retried attempt resumes after it, and a page written twice changes nothing.

use pidgr_store::{ActivityKind, Audience, CampaignStatus};
use pidgr_workflows::contract::{CampaignRef, PreparedDeliveries};
use pidgr_workflows::definition::Definition;
use pidgr_workflows::template;
use serde_json::json;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::{CampaignActivitiesImpl, retryable};

impl CampaignActivitiesImpl {
    pub(crate) async fn prepare(
        &self,
        ctx: &ActivityContext,
        cref: CampaignRef,
    ) -> Result<PreparedDeliveries, ActivityError> {
        let (org_id, campaign_id) = (&cref.org_id, &cref.campaign_id);
        let campaign = self
            .store
            .get_campaign(org_id, campaign_id)
            .await
            .map_err(retryable)?;
        let audience: Audience =
            serde_json::from_value(campaign.audience.clone()).map_err(|e| {
                ActivityError::from(ApplicationFailure::non_retryable(anyhow::anyhow!(
                    "the stored audience of campaign {campaign_id} does not parse: {e}"
                )))
            })?;
        let (mut written, mut after) = match self
            .store
            .last_delivery(org_id, campaign_id)
            .await
            .map_err(retryable)?
        {
            Some((seq, member_id)) => (seq, member_id.unwrap_or_default()),
            None => (0, String::new()),
        };
        let resumed_at = written;
        // A member may have lost an attribute the message uses since the campaign was created
        // (which checked every recipient): their delivery fails with the reason rather than
        // carrying a message with a hole in it.
        let definition: Definition = serde_json::from_str(&campaign.definition).map_err(|e| {
            ActivityError::from(ApplicationFailure::non_retryable(anyhow::anyhow!(
                "the stored definition of campaign {campaign_id} does not parse: {e}"
            )))
        })?;
        let needed =
            template::needed_from_recipients(&campaign.message_title, &campaign.body, &definition);
        let mut unresolvable = 0u64;
        let mut cut_at_cap = false;
        if campaign.status == CampaignStatus::Active {
            let reader = self
                .store
                .audience_reader(org_id, &audience)
                .await
                .map_err(retryable)?;
            let page_size = self.settings.page_size.max(1) as usize;
            loop {
                if ctx.is_cancelled() {
                    return Err(ActivityError::cancelled());
                }
                let mut page = self
                    .store
                    .audience_page(&reader, &after, page_size)
                    .await
                    .map_err(retryable)?;
                let room = self.settings.max_recipients.saturating_sub(written as u64);
                if page.len() as u64 > room {
                    page.truncate(room as usize);
                    cut_at_cap = true;
                }
                let Some(last) = page.last() else { break };
                after = last.member_id.clone().unwrap_or_default();
                self.store
                    .insert_deliveries(org_id, campaign_id, written + 1, &page)
                    .await
                    .map_err(retryable)?;
                written += page.len() as i64;
                for name in &needed {
                    let lacking: Vec<&str> = page
                        .iter()
                        .filter(|r| !r.variables.contains_key(name))
                        .map(|r| r.user_id.as_str())
                        .collect();
                    let reason = format!(
                        "the message uses {{{{{name}}}}}, which has no value for this recipient"
                    );
                    unresolvable += self
                        .store
                        .fail_pending_recipients(org_id, campaign_id, &lacking, &reason)
                        .await
                        .map_err(retryable)?;
                }
                let _ = ctx.record_heartbeat(written).await;
                if cut_at_cap {
                    break;
                }
            }
        }
        if written > resumed_at {
            // The deliveries table grew, perhaps many times over: queries plan on fresh
            // statistics from now on (failing that costs speed only).
            if let Err(error) = self.store.optimize().await {
                tracing::warn!(%error, "could not refresh the planner's statistics");
            }
        }
        let mut message = format!(
            "{} written from the audience",
            pidgr_store::counted(written as u64, "delivery", "deliveries")
        );
        // Who failed already (a variable of the message without a value for them), and why.
        let (failed, failures) = self.unresolvable_story(&cref).await?;
        if cut_at_cap {
            message.push_str(&format!(
                "; the audience grew past the limit of {} recipients after the start, and the \
                 members after the first {written} were left out",
                self.settings.max_recipients
            ));
        }
        message.push_str(&failed);
        self.log(
            &cref,
            None,
            ActivityKind::StepFinished,
            message,
            json!({
                "deliveries": written,
                "failed_unresolvable_variables": unresolvable,
                "cut_at_recipient_limit": cut_at_cap,
                "failures": failures,
            }),
        )
        .await?;
        Ok(PreparedDeliveries {
            total: written as u64,
        })
    }
}
