//! Pidgr's Prometheus metrics: what the API and the activities count, in one registry per
//! process, exposed in the text exposition format by the binary (`PIDGR_METRICS_LISTEN`).
//!
//! A [`Metrics`] is a cheap handle (clones share one registry); a default one counts into a
//! registry nobody scrapes, so libraries and tests that do not care need not set one up. Label
//! values are closed sets (route templates, never raw paths; outcome names) so that series stay
//! few whatever the traffic. No label ever carries an organisation, a campaign or a key.
//!
//! May import: `prometheus-client` only. Reads no environment variables.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A delivery transition, as `pidgr_deliveries_total{event}` counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryEvent {
    /// First notification accepted by a channel (PENDING → SENT).
    Sent,
    /// First read recorded.
    Read,
    /// Acknowledged (from any unresolved state).
    Acknowledged,
    /// Unresolved at the deadline or at the campaign's end.
    Missed,
    /// First notification reached no one (PENDING → FAILED).
    Failed,
}

impl DeliveryEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryEvent::Sent => "sent",
            DeliveryEvent::Read => "read",
            DeliveryEvent::Acknowledged => "acknowledged",
            DeliveryEvent::Missed => "missed",
            DeliveryEvent::Failed => "failed",
        }
    }
}

/// What became of one push to one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// The provider accepted it (or the `log` provider recorded it).
    Sent,
    /// The provider said the token is gone; it was removed from its member.
    TokenRemoved,
    /// The provider was unavailable (or asked us to wait): the recipient is tried again later.
    Retried,
    /// The provider refused it for another reason (the recipient fails if no device took it).
    Failed,
}

impl PushOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            PushOutcome::Sent => "sent",
            PushOutcome::TokenRemoved => "token_removed",
            PushOutcome::Retried => "retried",
            PushOutcome::Failed => "failed",
        }
    }
}

/// Which kind of outbound webhook an attempt belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookKind {
    /// A CALL_WEBHOOK step's POST (one per part).
    CallWebhook,
    /// A webhook channel event.
    ChannelEvent,
}

impl WebhookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookKind::CallWebhook => "call_webhook",
            WebhookKind::ChannelEvent => "channel_event",
        }
    }
}

/// How a webhook attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// It did not, and the attempt will be made again.
    Retried,
    /// It did not, and no attempt follows (or the step's retries are Temporal's to decide).
    Failed,
}

impl WebhookOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Delivered => "delivered",
            WebhookOutcome::Retried => "retried",
            WebhookOutcome::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PushLabels {
    provider: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

type SecondsHistogram = fn() -> Histogram;

/// Latencies from 1 ms to about 33 s, doubling.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

struct Inner {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, SecondsHistogram>,
    deliveries: Family<EventLabels, Counter>,
    push_sends: Family<PushLabels, Counter>,
    webhook_attempts: Family<WebhookLabels, Counter>,
    fanout_recipients: Counter,
    ack_signal_latency: Histogram,
    campaigns: Family<StatusLabels, Gauge>,
    db_pool: Family<StateLabels, Gauge>,
}

/// The process's metrics. Clones share one registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics(..)")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pidgr");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            http_requests.clone(),
        );
        let http_duration =
            Family::<RouteLabels, Histogram, SecondsHistogram>::new_with_constructor(
                seconds_histogram,
            );
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer, by method and route template",
            http_duration.clone(),
        );
        let deliveries = Family::<EventLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery transitions recorded in the database (rows actually changed)",
            deliveries.clone(),
        );
        let push_sends = Family::<PushLabels, Counter>::default();
        registry.register(
            "push_sends",
            "Pushes to one device, by provider (fcm, apns, log) and outcome",
            push_sends.clone(),
        );
        let webhook_attempts = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhook_attempts",
            "Outbound webhook POSTs, by kind (call_webhook, channel_event) and outcome",
            webhook_attempts.clone(),
        );
        let fanout_recipients = Counter::default();
        registry.register(
            "fanout_recipients",
            "Recipients whose notification outcome a fan-out recorded (rate() is recipients per second)",
            fanout_recipients.clone(),
        );
        let ack_signal_latency = seconds_histogram();
        registry.register(
            "ack_signal_latency_seconds",
            "Time from an ACK's arrival at the API to the campaign workflow's signal being accepted by Temporal (signalled ACKs only)",
            ack_signal_latency.clone(),
        );
        let campaigns = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "campaigns",
            "Campaigns by status, all organisations, read from the database at scrape time",
            campaigns.clone(),
        );
        let db_pool = Family::<StateLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "This process's database connections, idle or in use, at scrape time",
            db_pool.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                http_requests,
                http_duration,
                deliveries,
                push_sends,
                webhook_attempts,
                fanout_recipients,
                ack_signal_latency,
                campaigns,
                db_pool,
            }),
        }
    }

    /// One answered HTTP request; `route` is the route template (or the raw path of a 404).
    pub fn http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.inner
            .http_requests
            .get_or_create(&HttpLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.inner
            .http_duration
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// `count` deliveries went through `event`.
    pub fn deliveries(&self, event: DeliveryEvent, count: u64) {
        if count > 0 {
            self.inner
                .deliveries
                .get_or_create(&EventLabels {
                    event: event.as_str(),
                })
                .inc_by(count);
        }
    }

    /// One push to one device through `provider` (`fcm`, `apns`, `log`).
    pub fn push_send(&self, provider: &'static str, outcome: PushOutcome) {
        self.inner
            .push_sends
            .get_or_create(&PushLabels {
                provider,
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// One outbound webhook POST.
    pub fn webhook_attempt(&self, kind: WebhookKind, outcome: WebhookOutcome) {
        self.inner
            .webhook_attempts
            .get_or_create(&WebhookLabels {
                kind: kind.as_str(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// A fan-out recorded the outcome of `count` recipients.
    pub fn fanout_recipients(&self, count: u64) {
        self.inner.fanout_recipients.inc_by(count);
    }

    /// An ACK's signal reached Temporal `elapsed` after the ACK arrived.
    pub fn ack_signalled(&self, elapsed: Duration) {
        self.inner.ack_signal_latency.observe(elapsed.as_secs_f64());
    }

    /// The number of campaigns in each status. Pass every status, zeros included: a status
    /// left out keeps its last value.
    pub fn set_campaigns<'a>(&self, counts: impl IntoIterator<Item = (&'a str, u64)>) {
        for (status, count) in counts {
            self.inner
                .campaigns
                .get_or_create(&StatusLabels {
                    status: status.to_owned(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// The database pool's connections at this moment.
    pub fn set_db_pool(&self, idle: u64, in_use: u64) {
        let set = |state, value: u64| {
            self.inner
                .db_pool
                .get_or_create(&StateLabels { state })
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        set("idle", idle);
        set("in_use", in_use);
    }

    /// Every metric in the text exposition format (OpenMetrics, which Prometheus reads).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.inner.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line that starts with `series` (name and labels, exactly).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
    }

    #[test]
    fn counters_are_exposed_with_their_labels_and_total_suffix() {
        let metrics = Metrics::new();
        metrics.http_request(
            "POST",
            "/v1/deliveries/{id}/ack",
            200,
            Duration::from_millis(3),
        );
        metrics.http_request(
            "POST",
            "/v1/deliveries/{id}/ack",
            200,
            Duration::from_millis(5),
        );
        metrics.deliveries(DeliveryEvent::Sent, 3);
        metrics.deliveries(DeliveryEvent::Missed, 0);
        metrics.push_send("fcm", PushOutcome::TokenRemoved);
        metrics.webhook_attempt(WebhookKind::ChannelEvent, WebhookOutcome::Retried);
        metrics.fanout_recipients(3);
        let text = metrics.encode();
        assert_eq!(
            sample(
                &text,
                r#"pidgr_http_requests_total{method="POST",route="/v1/deliveries/{id}/ack",status="200"}"#
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"pidgr_http_request_duration_seconds_count{method="POST",route="/v1/deliveries/{id}/ack"}"#
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, r#"pidgr_deliveries_total{event="sent"}"#),
            Some(3.0)
        );
        // A zero count creates no series.
        assert_eq!(
            sample(&text, r#"pidgr_deliveries_total{event="missed"}"#),
            None
        );
        assert_eq!(
            sample(
                &text,
                r#"pidgr_push_sends_total{provider="fcm",outcome="token_removed"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"pidgr_webhook_attempts_total{kind="channel_event",outcome="retried"}"#
            ),
            Some(1.0)
        );
        assert_eq!(sample(&text, "pidgr_fanout_recipients_total"), Some(3.0));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn gauges_follow_the_latest_reading() {
        let metrics = Metrics::new();
        metrics.set_campaigns([("ACTIVE", 2), ("COMPLETED", 0)]);
        metrics.set_campaigns([("ACTIVE", 0), ("COMPLETED", 2)]);
        metrics.set_db_pool(3, 1);
        let text = metrics.encode();
        assert_eq!(
            sample(&text, r#"pidgr_campaigns{status="ACTIVE"}"#),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, r#"pidgr_campaigns{status="COMPLETED"}"#),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, r#"pidgr_db_pool_connections{state="idle"}"#),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, r#"pidgr_db_pool_connections{state="in_use"}"#),
            Some(1.0)
        );
    }

    #[test]
    fn clones_share_one_registry() {
        let metrics = Metrics::new();
        metrics.clone().deliveries(DeliveryEvent::Acknowledged, 1);
        assert_eq!(
            sample(
                &metrics.encode(),
                r#"pidgr_deliveries_total{event="acknowledged"}"#
            ),
            Some(1.0)
        );
    }
}
