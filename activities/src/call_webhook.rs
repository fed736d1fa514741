//! CALL_WEBHOOK: POSTs the campaign's delivery outcomes to the step's URL through the SSRF-safe
//! outbound client. One activity attempt is one POST; Temporal's retry policy supplies the
//! exponential backoff, and a refusal no retry can fix ends the retries at once.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use pidgr_store::{ActivityKind, DeliveryReport};
use pidgr_workflows::contract::{CampaignRef, WebhookDelivered, WebhookInput};
use serde_json::json;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::{CampaignActivitiesImpl, WEBHOOK_TIMEOUT, retryable};

impl CampaignActivitiesImpl {
    /// One attempt of the CALL_WEBHOOK POST; Temporal's retry policy supplies the backoff.
    /// Each attempt is logged; a refusal that no retry can fix (blocked URL, 4xx) ends the
    /// retries at once.
    pub(crate) async fn post_outcomes(
        &self,
        ctx: &ActivityContext,
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
                ctx,
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
