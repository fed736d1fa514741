//! Push: hands a recipient's notification to each of their devices, through FCM or APNs with
//! the organisation's own credentials.
//!
//! A token the provider declares gone is removed from its member; a recipient left with no
//! device fails with reason `no registered device`. In development, a device whose platform has
//! no credentials can be "sent" by the `log` provider instead, which records the push in the
//! database and the log, so the whole flow runs without real phones.

use pidgr_metrics::{Metrics, PushOutcome};
use pidgr_push::{
    ApnsCredentials, ApnsKeyFile, FcmCredentials, Notification, PushClient,
    PushError as ProviderError,
};
use pidgr_store::{Device, NewPush, Platform, Store};
use std::time::Duration;

/// The reason a recipient without devices fails with.
pub const NO_DEVICE: &str = "no registered device";

/// One notification to one recipient.
#[derive(Clone, Debug)]
pub struct PushMessage<'a> {
    pub org_id: &'a str,
    pub campaign_id: &'a str,
    pub delivery_id: &'a str,
    pub step_id: &'a str,
    pub user_id: &'a str,
    pub title: &'a str,
    /// Plain text; the provider client cuts it further to fit its payload limit.
    pub body: &'a str,
    pub deeplink: &'a str,
}

/// What became of a recipient's notification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushReport {
    /// At least one device accepted it.
    pub sent: bool,
    /// Why no device accepted it (when `sent` is false).
    pub reason: Option<String>,
    /// Tokens removed because their provider declared them gone, as `platform …last6`.
    pub removed: Vec<String>,
}

/// The providers could not be reached (or asked us to wait): the fan-out records what it sent
/// and Temporal retries the rest, not before `retry_after`.
#[derive(Debug, thiserror::Error)]
#[error("push provider unavailable: {reason}")]
pub struct PushUnavailable {
    pub reason: String,
    pub retry_after: Option<Duration>,
    /// Tokens removed before the provider became unavailable (for the activity log).
    pub removed: Vec<String>,
}

impl PushUnavailable {
    fn store(error: pidgr_store::StoreError, removed: &[String]) -> Self {
        PushUnavailable {
            reason: error.to_string(),
            retry_after: None,
            removed: removed.to_vec(),
        }
    }
}

/// An organisation's credentials, read once per fan-out. A platform whose stored credentials
/// no longer parse is unusable, with the reason kept for the recipients it fails.
#[derive(Default)]
pub struct OrgPush {
    fcm: Option<Result<FcmCredentials, String>>,
    apns: Option<Result<ApnsCredentials, String>>,
}

pub struct PushSender {
    store: Store,
    client: PushClient,
    /// Development only: record pushes for platforms without credentials instead of failing.
    log_fallback: bool,
    metrics: Metrics,
}

impl PushSender {
    pub fn new(store: Store, client: PushClient, log_fallback: bool) -> Self {
        PushSender {
            store,
            client,
            log_fallback,
            metrics: Metrics::default(),
        }
    }

    /// Counts every push into `metrics` (the registry the process exposes).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The organisation's FCM and APNs credentials, opened and parsed.
    pub async fn credentials(&self, org_id: &str) -> Result<OrgPush, pidgr_store::StoreError> {
        let unusable = |platform: &str, error: &dyn std::fmt::Display| {
            format!("the stored {platform} credentials cannot be used: {error}")
        };
        let fcm = self
            .store
            .push_credentials_secret(org_id, Platform::Fcm)
            .await?
            .map(|json| {
                FcmCredentials::from_service_account_json(&json).map_err(|e| unusable("FCM", &e))
            });
        let apns = self
            .store
            .push_credentials_secret(org_id, Platform::Apns)
            .await?
            .map(|json| {
                ApnsKeyFile::from_json(&json)
                    .and_then(|file| file.credentials())
                    .map_err(|e| unusable("APNs", &e))
            });
        Ok(OrgPush { fcm, apns })
    }

    /// Sends `message` to every device in `devices` (the recipient's). Sent when any device
    /// accepted it; tokens declared gone are removed; when every device is transiently
    /// unavailable, the whole recipient is retried later.
    pub async fn notify(
        &self,
        credentials: &OrgPush,
        message: &PushMessage<'_>,
        devices: &[Device],
    ) -> Result<PushReport, PushUnavailable> {
        // Per delivery and step: a page pushed again after a worker crash merges on the device
        // with the first push, while a reminder still shows as a new notification.
        let collapse_id = pidgr_push::collapse_id(message.delivery_id, message.step_id);
        let notification = Notification {
            title: message.title,
            body: message.body,
            deeplink: message.deeplink,
            campaign_id: message.campaign_id,
            delivery_id: message.delivery_id,
            collapse_id: Some(&collapse_id),
        };
        let mut report = PushReport::default();
        let mut reasons: Vec<String> = Vec::new();
        let mut unavailable: Option<PushUnavailable> = None;
        for device in devices {
            let sent = match (device.platform, &credentials.fcm, &credentials.apns) {
                (Platform::Fcm, Some(Ok(fcm)), _) => Some(
                    self.client
                        .send_fcm(fcm, &device.token, &notification)
                        .await,
                ),
                (Platform::Apns, _, Some(Ok(apns))) => Some(
                    self.client
                        .send_apns(apns, &device.token, &notification)
                        .await,
                ),
                (Platform::Fcm, Some(Err(unusable)), _)
                | (Platform::Apns, _, Some(Err(unusable))) => {
                    reasons.push(unusable.clone());
                    continue;
                }
                _ => None,
            };
            if let Some(sent) = &sent {
                self.metrics.push_send(
                    provider_label(device.platform),
                    match sent {
                        Ok(_) => PushOutcome::Sent,
                        Err(ProviderError::InvalidToken { .. }) => PushOutcome::TokenRemoved,
                        Err(ProviderError::Unavailable { .. }) => PushOutcome::Retried,
                        Err(_) => PushOutcome::Failed,
                    },
                );
            }
            match sent {
                Some(Ok(_)) => report.sent = true,
                Some(Err(ProviderError::InvalidToken { reason })) => {
                    self.store
                        .remove_device_token(message.org_id, device.platform, &device.token)
                        .await
                        .map_err(|e| PushUnavailable::store(e, &report.removed))?;
                    tracing::info!(
                        platform = device.platform.as_str(),
                        token_end = token_end(&device.token),
                        %reason,
                        "push token removed: the provider says it is gone"
                    );
                    report.removed.push(format!(
                        "{} …{} ({reason})",
                        device.platform.as_str(),
                        token_end(&device.token)
                    ));
                }
                Some(Err(ProviderError::Unavailable {
                    reason,
                    retry_after,
                })) => {
                    unavailable = Some(PushUnavailable {
                        reason,
                        retry_after,
                        removed: Vec::new(),
                    })
                }
                Some(Err(error)) => reasons.push(error.to_string()),
                None if self.log_fallback => {
                    self.record_in_log(message, device.platform)
                        .await
                        .map_err(|e| PushUnavailable::store(e, &report.removed))?;
                    self.metrics.push_send("log", PushOutcome::Sent);
                    report.sent = true;
                }
                None => reasons.push(format!(
                    "no {} credentials are configured for this organisation",
                    provider_name(device.platform)
                )),
            }
        }
        if report.sent {
            return Ok(report);
        }
        if let Some(mut unavailable) = unavailable {
            unavailable.removed = report.removed;
            return Err(unavailable);
        }
        reasons.dedup();
        report.reason = Some(if reasons.is_empty() {
            NO_DEVICE.to_owned()
        } else {
            reasons.join("; ")
        });
        Ok(report)
    }

    /// The `log` provider: records the push in the `push_log` table and the log.
    async fn record_in_log(
        &self,
        message: &PushMessage<'_>,
        platform: Platform,
    ) -> Result<(), pidgr_store::StoreError> {
        self.store
            .record_push(NewPush {
                org_id: message.org_id,
                campaign_id: message.campaign_id,
                delivery_id: message.delivery_id,
                step_id: message.step_id,
                provider: "log",
                title: message.title,
                body: message.body,
                deeplink: message.deeplink,
            })
            .await?;
        tracing::info!(
            campaign_id = message.campaign_id,
            delivery_id = message.delivery_id,
            step_id = message.step_id,
            user_id = message.user_id,
            platform = platform.as_str(),
            "push recorded by the log provider"
        );
        Ok(())
    }
}

/// The `provider` label of a push to this platform.
fn provider_label(platform: Platform) -> &'static str {
    match platform {
        Platform::Fcm => "fcm",
        Platform::Apns => "apns",
    }
}

fn provider_name(platform: Platform) -> &'static str {
    match platform {
        Platform::Fcm => "FCM",
        Platform::Apns => "APNs",
    }
}

/// The last six characters of a token: enough to tell tokens apart in logs, useless to anyone
/// who reads them.
fn token_end(token: &str) -> &str {
    let start = token
        .char_indices()
        .rev()
        .nth(5)
        .map_or(0, |(index, _)| index);
    &token[start..]
}
