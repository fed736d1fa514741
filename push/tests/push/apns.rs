//! APNs against the fake: HTTP/2, headers and payload, provider-token caching and renewal,
//! error mapping, retries and resets.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pidgr_push::{
    ApnsCredentials, ApnsEnvironment, MAX_PAYLOAD_BYTES, Notification, PushClient, PushError,
    PushSettings, Sent,
};
use pidgr_push_fakes::{ApnsBehaviour, FakeApns, Version, generate_apns_key};
use serde_json::json;

use crate::common::{ManualClock, endpoints, settings};

const TEAM: &str = "TEAM123456";
const KEY: &str = "KEY1234567";
const TOPIC: &str = "com.example.pidgr";
/// APNs device tokens are 64 hex characters.
const DEVICE: &str = "4f1c9a1b2e3d4c5b6a79881726354403f2e1d0c9b8a7968574635241302f1e0d";

struct Setup {
    fake: FakeApns,
    client: PushClient,
    credentials: ApnsCredentials,
    clock: Arc<ManualClock>,
}

async fn setup_at(clock: Arc<ManualClock>, adjust: impl FnOnce(&mut PushSettings)) -> Setup {
    let (pem, public_key) = generate_apns_key();
    let fake = FakeApns::start(TEAM, KEY, &public_key).await;
    let mut settings = settings(endpoints());
    settings.endpoints.apns_production_url = fake.base_url();
    adjust(&mut settings);
    let client = PushClient::with_clock(settings, clock.clone()).unwrap();
    let credentials =
        ApnsCredentials::new(TEAM, KEY, TOPIC, ApnsEnvironment::Production, &pem).unwrap();
    Setup {
        fake,
        client,
        credentials,
        clock,
    }
}

async fn setup() -> Setup {
    setup_at(ManualClock::starting_now(), |_| {}).await
}

fn notification() -> Notification<'static> {
    Notification {
        title: "Fire drill",
        body: "Assemble at the car park.",
        deeplink: "https://pidgr.example/d/7QmX",
        campaign_id: "campaign-1",
        delivery_id: "delivery-1",
        collapse_id: None,
    }
}

impl Setup {
    async fn send(&self) -> Result<Sent, PushError> {
        self.client
            .send_apns(&self.credentials, DEVICE, &notification())
            .await
    }

    fn iats(&self) -> Vec<u64> {
        self.fake
            .received()
            .into_iter()
            .map(|r| r.jwt_iat.unwrap())
            .collect()
    }
}

#[tokio::test]
async fn a_push_goes_over_http2_with_apples_headers_and_payload() {
    let s = setup().await;
    let sent = s.send().await.unwrap();
    assert_eq!(sent.attempts, 1);
    assert_eq!(
        sent.id.as_deref(),
        Some("00000000-0000-4000-8000-000000000001")
    );
    let received = s.fake.received();
    assert_eq!(received.len(), 1);
    let r = &received[0];
    assert_eq!(r.version, Version::HTTP_2);
    assert_eq!(r.token, DEVICE);
    assert_eq!(r.headers["apns-topic"], TOPIC);
    assert_eq!(r.headers["apns-push-type"], "alert");
    assert_eq!(r.headers["apns-priority"], "10");
    assert_eq!(r.jwt_iat, Some(s.clock.unix_seconds()));
    assert_eq!(
        r.body,
        json!({
            "aps": {"alert": {"title": "Fire drill", "body": "Assemble at the car park."}, "sound": "default"},
            "deeplink": "https://pidgr.example/d/7QmX",
            "campaign_id": "campaign-1",
            "delivery_id": "delivery-1",
        })
    );
}

#[tokio::test]
async fn an_http1_client_is_refused_as_by_real_apns() {
    let s = setup().await;
    let result = reqwest::Client::builder()
        .tls_backend_preconfigured(pidgr_outbound::tls_config().unwrap())
        .http1_only()
        .build()
        .unwrap()
        .post(format!("{}/3/device/{DEVICE}", s.fake.base_url()))
        .body("{}")
        .send()
        .await;
    assert!(result.is_err(), "{result:?}");
    assert!(s.fake.received().is_empty());
}

#[tokio::test]
async fn sandbox_credentials_use_the_sandbox_host() {
    let (pem, public_key) = generate_apns_key();
    let production = FakeApns::start(TEAM, KEY, &public_key).await;
    let sandbox = FakeApns::start(TEAM, KEY, &public_key).await;
    let mut settings = settings(endpoints());
    settings.endpoints.apns_production_url = production.base_url();
    settings.endpoints.apns_sandbox_url = format!("{}//", sandbox.base_url());
    let client = PushClient::with_clock(settings, ManualClock::starting_now()).unwrap();
    let credentials =
        ApnsCredentials::new(TEAM, KEY, TOPIC, ApnsEnvironment::Sandbox, &pem).unwrap();
    client
        .send_apns(&credentials, DEVICE, &notification())
        .await
        .unwrap();
    assert_eq!(sandbox.received().len(), 1);
    assert!(production.received().is_empty());
}

#[tokio::test]
async fn token_errors_tell_the_caller_to_remove_the_token() {
    let s = setup().await;
    for (behaviour, reason) in [
        (ApnsBehaviour::Unregistered, "Unregistered"),
        (ApnsBehaviour::BadDeviceToken, "BadDeviceToken"),
        (
            ApnsBehaviour::DeviceTokenNotForTopic,
            "DeviceTokenNotForTopic",
        ),
    ] {
        s.fake.script(DEVICE, vec![behaviour]);
        let error = s.send().await.unwrap_err();
        assert!(
            matches!(&error, PushError::InvalidToken { reason: got } if got == reason),
            "{error:?}"
        );
    }
    assert_eq!(s.fake.received().len(), 3);
    assert!(s.clock.sleeps().is_empty());
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried() {
    let s = setup_at(ManualClock::starting_now(), |settings| {
        settings.max_attempts = 4;
    })
    .await;
    s.fake.script(
        DEVICE,
        vec![
            ApnsBehaviour::TooManyRequests,
            ApnsBehaviour::InternalServerError,
            ApnsBehaviour::ServiceUnavailable,
        ],
    );
    let sent = s.send().await.unwrap();
    assert_eq!(sent.attempts, 4);
    assert_eq!(
        s.clock.sleeps(),
        [1, 2, 4].map(Duration::from_secs).to_vec()
    );
}

#[tokio::test]
async fn a_server_that_keeps_failing_is_unavailable_after_max_attempts() {
    let s = setup().await;
    s.fake
        .script(DEVICE, vec![ApnsBehaviour::ServiceUnavailable; 5]);
    let error = s.send().await.unwrap_err();
    assert!(
        matches!(&error, PushError::Unavailable { reason, .. } if reason.contains("ServiceUnavailable") && reason.contains("503")),
        "{error:?}"
    );
    assert_eq!(s.fake.received().len(), 3);
}

#[tokio::test]
async fn the_provider_token_is_reused_within_its_lifetime_and_renewed_after() {
    let s = setup().await;
    let start = s.clock.unix_seconds();
    s.send().await.unwrap();
    s.clock.advance(Duration::from_secs(39 * 60));
    s.send().await.unwrap();
    s.clock.advance(Duration::from_secs(2 * 60));
    s.send().await.unwrap();
    assert_eq!(s.iats(), [start, start, start + 41 * 60]);
}

#[tokio::test]
async fn an_expired_provider_token_is_renewed_and_the_push_sent_once_more() {
    let s = setup().await;
    s.fake
        .script(DEVICE, vec![ApnsBehaviour::ExpiredProviderToken]);
    let sent = s.send().await.unwrap();
    assert_eq!(sent.attempts, 2);
    let received = s.fake.received();
    assert_ne!(received[0].provider_token, received[1].provider_token);
    assert!(s.clock.sleeps().is_empty());
}

#[tokio::test]
async fn a_provider_token_refused_twice_as_expired_is_rejected() {
    // A clock two hours slow signs tokens APNs finds too old, renewed or not.
    let slow = ManualClock::at(SystemTime::now() - Duration::from_secs(2 * 3600));
    let s = setup_at(slow, |_| {}).await;
    let error = s.send().await.unwrap_err();
    assert!(
        matches!(&error, PushError::Rejected { reason } if reason.contains("ExpiredProviderToken")),
        "{error:?}"
    );
    assert_eq!(s.fake.received().len(), 2);
}

#[tokio::test]
async fn a_key_apns_does_not_know_is_rejected_at_once() {
    let s = setup().await;
    let (other_pem, _) = generate_apns_key();
    let stranger =
        ApnsCredentials::new(TEAM, KEY, TOPIC, ApnsEnvironment::Production, &other_pem).unwrap();
    let error = s
        .client
        .send_apns(&stranger, DEVICE, &notification())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, PushError::Rejected { reason } if reason.contains("InvalidProviderToken") && reason.contains("403")),
        "{error:?}"
    );
    assert_eq!(s.fake.received().len(), 1);
}

#[tokio::test]
async fn a_reset_connection_is_retried_on_a_new_connection() {
    let s = setup().await;
    s.fake.script(DEVICE, vec![ApnsBehaviour::ResetConnection]);
    let sent = s.send().await.unwrap();
    assert_eq!(sent.attempts, 2);
    assert_eq!(s.fake.received().len(), 2);
}

#[tokio::test]
async fn a_slow_answer_beyond_the_request_timeout_is_unavailable() {
    let s = setup_at(ManualClock::starting_now(), |settings| {
        settings.request_timeout = Duration::from_millis(300);
        settings.max_attempts = 1;
    })
    .await;
    s.fake
        .script(DEVICE, vec![ApnsBehaviour::Slow(Duration::from_secs(600))]);
    let error = s.send().await.unwrap_err();
    assert!(
        matches!(&error, PushError::Unavailable { reason, .. } if reason.contains("no answer within")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_huge_body_is_cut_to_fit_the_payload_limit() {
    let s = setup().await;
    let body = "Ünïcödé text, cut at a character boundary. ".repeat(400);
    let n = Notification {
        body: &body,
        ..notification()
    };
    s.client
        .send_apns(&s.credentials, DEVICE, &n)
        .await
        .unwrap();
    let received = s.fake.received();
    assert!(received[0].body.to_string().len() <= MAX_PAYLOAD_BYTES);
    let sent_body = received[0].body["aps"]["alert"]["body"].as_str().unwrap();
    assert!(sent_body.ends_with('…'));
    assert!(body.starts_with(sent_body.trim_end_matches('…')));
}

#[tokio::test]
async fn a_token_that_is_not_url_safe_is_refused_without_a_request() {
    let s = setup().await;
    for token in ["", "abc/../../x", "abc def", "abc?x=1"] {
        let error = s
            .client
            .send_apns(&s.credentials, token, &notification())
            .await
            .unwrap_err();
        assert!(
            matches!(&error, PushError::InvalidToken { .. }),
            "{error:?}"
        );
    }
    assert!(s.fake.received().is_empty());
}
