//! FCM HTTP v1 against the fake: payload, OAuth2 token exchange and caching, error mapping,
//! retries, timeouts and resets.

use std::sync::Arc;
use std::time::Duration;

use pidgr_push::{
    FcmCredentials, MAX_PAYLOAD_BYTES, Notification, PushClient, PushError, PushSettings, Sent,
};
use pidgr_push_fakes::{
    FakeFcm, FcmBehaviour, Version, test_service_account_json, test_service_account_public_key,
};
use serde_json::json;

use crate::common::{ManualClock, endpoints, settings};

const PROJECT: &str = "pidgr-test";
const EMAIL: &str = "push@pidgr-test.iam.gserviceaccount.com";

struct Setup {
    fake: FakeFcm,
    client: PushClient,
    credentials: FcmCredentials,
    clock: Arc<ManualClock>,
}

async fn setup_with(adjust: impl FnOnce(&mut PushSettings)) -> Setup {
    let fake = FakeFcm::start(PROJECT, EMAIL, &test_service_account_public_key()).await;
    let mut settings = settings(endpoints());
    settings.endpoints.fcm_base_url = format!("{}/", fake.base_url());
    settings.endpoints.fcm_token_url = fake.token_url();
    adjust(&mut settings);
    let clock = ManualClock::starting_now();
    let client = PushClient::with_clock(settings, clock.clone()).unwrap();
    let credentials =
        FcmCredentials::from_service_account_json(&test_service_account_json(EMAIL, PROJECT))
            .unwrap();
    Setup {
        fake,
        client,
        credentials,
        clock,
    }
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
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
    async fn send(&self, token: &str) -> Result<Sent, PushError> {
        self.client
            .send_fcm(&self.credentials, token, &notification())
            .await
    }
}

#[tokio::test]
async fn a_push_carries_the_documented_payload_and_one_token_serves_several_sends() {
    let s = setup().await;
    for (n, token) in ["token-a", "token-b", "token-c"].iter().enumerate() {
        let sent = s.send(token).await.unwrap();
        assert_eq!(
            sent,
            Sent {
                attempts: 1,
                id: Some(format!("projects/{PROJECT}/messages/{}", n + 1)),
            }
        );
    }
    assert_eq!(s.fake.token_requests(), 1);
    let received = s.fake.received();
    assert_eq!(received.len(), 3);
    assert_eq!(received[0].version, Version::HTTP_11);
    assert!(
        received
            .iter()
            .all(|r| r.access_token.as_deref() == Some("fake-access-1"))
    );
    assert_eq!(
        received[0].body,
        json!({"message": {
            "token": "token-a",
            "notification": {"title": "Fire drill", "body": "Assemble at the car park."},
            "data": {
                "deeplink": "https://pidgr.example/d/7QmX",
                "campaign_id": "campaign-1",
                "delivery_id": "delivery-1",
            },
            "android": {"priority": "high"},
            "apns": {"payload": {"aps": {"sound": "default"}}},
        }})
    );
}

#[tokio::test]
async fn concurrent_sends_share_one_token_exchange() {
    let s = Arc::new(setup().await);
    let mut sends = tokio::task::JoinSet::new();
    for n in 0..8 {
        let s = Arc::clone(&s);
        sends.spawn(async move { s.send(&format!("token-{n}")).await });
    }
    while let Some(result) = sends.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(s.fake.token_requests(), 1);
    assert_eq!(s.fake.received().len(), 8);
}

#[tokio::test]
async fn the_access_token_is_renewed_five_minutes_before_it_expires() {
    let s = setup().await;
    s.send("token-a").await.unwrap();
    // Google's token lives 3600 s; it is used until 55 minutes have passed.
    s.clock.advance(Duration::from_secs(54 * 60));
    s.send("token-a").await.unwrap();
    assert_eq!(s.fake.token_requests(), 1);
    s.clock.advance(Duration::from_secs(60 + 1));
    s.send("token-a").await.unwrap();
    assert_eq!(s.fake.token_requests(), 2);
    let tokens: Vec<_> = s
        .fake
        .received()
        .into_iter()
        .map(|r| r.access_token.unwrap())
        .collect();
    assert_eq!(tokens, ["fake-access-1", "fake-access-1", "fake-access-2"]);
}

#[tokio::test]
async fn a_revoked_access_token_is_renewed_and_the_push_sent_once_more() {
    let s = setup().await;
    s.send("token-a").await.unwrap();
    s.fake.revoke_access_tokens();
    let sent = s.send("token-a").await.unwrap();
    assert_eq!(sent.attempts, 2);
    assert_eq!(s.fake.token_requests(), 2);
    let tokens: Vec<_> = s
        .fake
        .received()
        .into_iter()
        .map(|r| r.access_token.unwrap())
        .collect();
    assert_eq!(tokens, ["fake-access-1", "fake-access-1", "fake-access-2"]);
    // No waiting for a renewal: it is not a transient failure.
    assert!(s.clock.sleeps().is_empty());
}

#[tokio::test]
async fn a_third_party_auth_error_is_rejected_without_renewing_the_access_token() {
    let s = setup().await;
    s.fake
        .script("token-a", vec![FcmBehaviour::ThirdPartyAuthError]);
    let error = s.send("token-a").await.unwrap_err();
    assert!(
        matches!(&error, PushError::Rejected { reason } if reason.contains("THIRD_PARTY_AUTH_ERROR") && reason.contains("401")),
        "{error:?}"
    );
    assert_eq!(s.fake.token_requests(), 1);
    assert_eq!(s.fake.received().len(), 1);
}

#[tokio::test]
async fn token_errors_tell_the_caller_to_remove_the_token() {
    let s = setup().await;
    for (behaviour, code) in [
        (FcmBehaviour::Unregistered, "UNREGISTERED"),
        (FcmBehaviour::InvalidArgument, "INVALID_ARGUMENT"),
        (FcmBehaviour::SenderIdMismatch, "SENDER_ID_MISMATCH"),
    ] {
        s.fake.script("token-a", vec![behaviour]);
        let error = s.send("token-a").await.unwrap_err();
        assert!(
            matches!(&error, PushError::InvalidToken { reason } if reason == code),
            "{error:?}"
        );
    }
    // Each was answered at once, never retried.
    assert_eq!(s.fake.received().len(), 3);
    assert!(s.clock.sleeps().is_empty());
}

#[tokio::test]
async fn transient_errors_are_retried_with_doubling_waits_then_reported_unavailable() {
    for behaviour in [
        FcmBehaviour::Unavailable,
        FcmBehaviour::Internal,
        FcmBehaviour::QuotaExceeded { retry_after: None },
    ] {
        let s = setup().await;
        s.fake.script("token-a", vec![behaviour.clone(); 5]);
        let error = s.send("token-a").await.unwrap_err();
        assert!(
            matches!(
                &error,
                PushError::Unavailable {
                    retry_after: None,
                    ..
                }
            ),
            "{behaviour:?}: {error:?}"
        );
        // Exactly max_attempts (3) requests, with 1 s and 2 s between them.
        assert_eq!(s.fake.received().len(), 3, "{behaviour:?}");
        assert_eq!(
            s.clock.sleeps(),
            [Duration::from_secs(1), Duration::from_secs(2)]
        );
    }
}

#[tokio::test]
async fn quota_exceeded_waits_for_retry_after_then_succeeds() {
    let s = setup().await;
    s.fake.script(
        "token-a",
        vec![FcmBehaviour::QuotaExceeded {
            retry_after: Some(7),
        }],
    );
    let sent = s.send("token-a").await.unwrap();
    assert_eq!(sent.attempts, 2);
    assert_eq!(s.clock.sleeps(), [Duration::from_secs(7)]);
}

#[tokio::test]
async fn a_retry_after_beyond_the_inline_limit_goes_back_to_the_caller_at_once() {
    let s = setup().await;
    s.fake.script(
        "token-a",
        vec![FcmBehaviour::QuotaExceeded {
            retry_after: Some(120),
        }],
    );
    let error = s.send("token-a").await.unwrap_err();
    assert!(
        matches!(
            &error,
            PushError::Unavailable { retry_after: Some(wait), reason }
                if *wait == Duration::from_secs(120) && reason.contains("QUOTA_EXCEEDED")
        ),
        "{error:?}"
    );
    assert_eq!(s.fake.received().len(), 1);
    assert!(s.clock.sleeps().is_empty());
}

#[tokio::test]
async fn a_slow_answer_beyond_the_request_timeout_is_unavailable() {
    let s = setup_with(|settings| {
        settings.request_timeout = Duration::from_millis(300);
        settings.max_attempts = 2;
    })
    .await;
    // Fetch the access token first, so the timeout is the send's.
    s.send("warm-up").await.unwrap();
    s.fake.script(
        "token-a",
        vec![FcmBehaviour::Slow(Duration::from_secs(600)); 2],
    );
    let error = s.send("token-a").await.unwrap_err();
    assert!(
        matches!(&error, PushError::Unavailable { reason, .. } if reason.contains("no answer within 300 ms")),
        "{error:?}"
    );
    assert_eq!(s.fake.received().len(), 1 + 2);
}

#[tokio::test]
async fn a_reset_connection_is_retried_and_the_next_answer_counts() {
    let s = setup().await;
    s.fake
        .script("token-a", vec![FcmBehaviour::ResetConnection]);
    let sent = s.send("token-a").await.unwrap();
    assert_eq!(sent.attempts, 2);
    assert_eq!(s.fake.received().len(), 2);
}

#[tokio::test]
async fn a_reset_connection_on_the_last_attempt_is_unavailable() {
    let s = setup_with(|settings| settings.max_attempts = 1).await;
    s.fake
        .script("token-a", vec![FcmBehaviour::ResetConnection]);
    let error = s.send("token-a").await.unwrap_err();
    assert!(
        matches!(&error, PushError::Unavailable { reason, .. } if reason.contains("connection")),
        "{error:?}"
    );
    // And the next push goes through on a new connection.
    s.send("token-a").await.unwrap();
}

#[tokio::test]
async fn credentials_the_token_endpoint_refuses_are_rejected_without_retrying() {
    let s = setup().await;
    let stranger = FcmCredentials::from_service_account_json(&test_service_account_json(
        "someone-else@pidgr-test.iam.gserviceaccount.com",
        PROJECT,
    ))
    .unwrap();
    let error = s
        .client
        .send_fcm(&stranger, "token-a", &notification())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, PushError::Rejected { reason } if reason.contains("invalid_grant") && reason.contains("400")),
        "{error:?}"
    );
    assert_eq!(s.fake.token_requests(), 1);
    assert!(s.fake.received().is_empty());
}

#[tokio::test]
async fn a_huge_body_is_cut_to_fit_the_payload_limit() {
    let s = setup().await;
    let body = "All staff must read the updated safety policy. ".repeat(500);
    let n = Notification {
        body: &body,
        ..notification()
    };
    s.client
        .send_fcm(&s.credentials, "token-a", &n)
        .await
        .unwrap();
    let received = s.fake.received();
    // The fake refuses bodies over 4096 bytes, so acceptance already shows the cut.
    assert!(received[0].body.to_string().len() <= MAX_PAYLOAD_BYTES);
    let sent_body = received[0].body["message"]["notification"]["body"]
        .as_str()
        .unwrap();
    assert!(sent_body.ends_with('…'));
    assert!(body.starts_with(sent_body.trim_end_matches('…')));
    assert!(sent_body.len() > 3000, "cut far more than needed");
}

#[tokio::test]
async fn an_empty_device_token_is_refused_without_a_request() {
    let s = setup().await;
    assert!(matches!(
        s.send("").await,
        Err(PushError::InvalidToken { .. })
    ));
    assert_eq!(s.fake.token_requests(), 0);
}

#[test]
fn the_send_future_can_move_between_threads() {
    fn assert_send<T: Send>(_: &T) {}
    let client = PushClient::new(PushSettings::default()).unwrap();
    let credentials =
        FcmCredentials::from_service_account_json(&test_service_account_json(EMAIL, PROJECT))
            .unwrap();
    let n = notification();
    let future = client.send_fcm(&credentials, "token", &n);
    assert_send(&future);
}
