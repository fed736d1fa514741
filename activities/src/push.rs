//! Push providers: where a fan-out step hands each recipient's notification.
//!
//! This crate ships the `log` provider, which records every push in the database (and the
//! log) instead of contacting a real service; FCM and APNs implement the same trait.

use async_trait::async_trait;
use pidgr_store::{NewPush, Store};

/// One notification to one recipient.
#[derive(Clone, Debug)]
pub struct PushMessage<'a> {
    pub org_id: &'a str,
    pub campaign_id: &'a str,
    pub delivery_id: &'a str,
    pub step_id: &'a str,
    pub user_id: &'a str,
    pub title: &'a str,
    /// Plain text, already cut to the provider's limit.
    pub body: &'a str,
    pub deeplink: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The provider refused this recipient for good (no device, unregistered token): the
    /// delivery becomes FAILED with this reason.
    #[error("{0}")]
    Rejected(String),
    /// The provider could not be reached or asked us to come back later: the step is retried.
    #[error("push provider unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait PushProvider: Send + Sync + 'static {
    /// Short name stored with each push, e.g. `log`, `fcm`.
    fn name(&self) -> &'static str;
    async fn send(&self, message: &PushMessage<'_>) -> Result<(), PushError>;
}

/// Records each push in the `push_log` table: local development and tests see exactly who was
/// notified, by which step, with which text.
pub struct LogPushProvider {
    store: Store,
}

impl LogPushProvider {
    pub fn new(store: Store) -> Self {
        LogPushProvider { store }
    }
}

#[async_trait]
impl PushProvider for LogPushProvider {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn send(&self, message: &PushMessage<'_>) -> Result<(), PushError> {
        self.store
            .record_push(NewPush {
                org_id: message.org_id,
                campaign_id: message.campaign_id,
                delivery_id: message.delivery_id,
                step_id: message.step_id,
                provider: self.name(),
                title: message.title,
                body: message.body,
                deeplink: message.deeplink,
            })
            .await
            .map_err(|e| PushError::Unavailable(e.to_string()))?;
        tracing::info!(
            campaign_id = message.campaign_id,
            delivery_id = message.delivery_id,
            step_id = message.step_id,
            user_id = message.user_id,
            "push recorded by the log provider"
        );
        Ok(())
    }
}
