//! Collapse ids against both fakes: what each provider receives, that the id derived from a
//! delivery and a step is stable for that pair and differs for another step, and that it stays
//! within APNs' 64-byte limit.

use pidgr_push::{
    ApnsCredentials, ApnsEnvironment, FcmCredentials, MAX_COLLAPSE_ID_BYTES, Notification,
    PushClient, PushError, collapse_id,
};
use pidgr_push_fakes::{
    FakeApns, FakeFcm, generate_apns_key, test_service_account_json,
    test_service_account_public_key,
};

use crate::common::{endpoints, settings};

const TEAM: &str = "TEAM123456";
const KEY: &str = "KEY1234567";
const TOPIC: &str = "com.example.pidgr";
const DEVICE: &str = "4f1c9a1b2e3d4c5b6a79881726354403f2e1d0c9b8a7968574635241302f1e0d";
const PROJECT: &str = "pidgr-test";
const EMAIL: &str = "push@pidgr-test.iam.gserviceaccount.com";

fn notification<'a>(delivery_id: &'a str, collapse_id: &'a str) -> Notification<'a> {
    Notification {
        title: "Fire drill",
        body: "Assemble at the car park.",
        deeplink: "https://pidgr.example/d/7QmX",
        campaign_id: "campaign-1",
        delivery_id,
        collapse_id: Some(collapse_id),
    }
}

async fn apns() -> (FakeApns, PushClient, ApnsCredentials) {
    let (pem, public_key) = generate_apns_key();
    let fake = FakeApns::start(TEAM, KEY, &public_key).await;
    let mut settings = settings(endpoints());
    settings.endpoints.apns_production_url = fake.base_url();
    let client = PushClient::new(settings).unwrap();
    let credentials =
        ApnsCredentials::new(TEAM, KEY, TOPIC, ApnsEnvironment::Production, &pem).unwrap();
    (fake, client, credentials)
}

async fn fcm() -> (FakeFcm, PushClient, FcmCredentials) {
    let fake = FakeFcm::start(PROJECT, EMAIL, &test_service_account_public_key()).await;
    let mut settings = settings(endpoints());
    settings.endpoints.fcm_base_url = fake.base_url();
    settings.endpoints.fcm_token_url = fake.token_url();
    let client = PushClient::new(settings).unwrap();
    let credentials =
        FcmCredentials::from_service_account_json(&test_service_account_json(EMAIL, PROJECT))
            .unwrap();
    (fake, client, credentials)
}

#[test]
fn the_same_delivery_and_step_give_the_same_id_and_another_step_another() {
    let first = collapse_id("0190f1c2-delivery-a", "notify");
    assert_eq!(first, collapse_id("0190f1c2-delivery-a", "notify"));
    assert_ne!(first, collapse_id("0190f1c2-delivery-a", "remind"));
    assert_ne!(first, collapse_id("0190f1c2-delivery-b", "notify"));
    // The parts are kept apart: moving characters from one to the other changes the id.
    assert_ne!(collapse_id("ab", "c"), collapse_id("a", "bc"));
    // Long ids of any characters still give a short, header-safe id.
    let long = collapse_id(&"é".repeat(500), &"step\n".repeat(100));
    for id in [&first, &long] {
        assert_eq!(id.len(), 32);
        assert!(id.len() <= MAX_COLLAPSE_ID_BYTES);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }
}

#[tokio::test]
async fn apns_receives_the_collapse_id_header_and_a_resend_carries_the_same_one() {
    let (fake, client, credentials) = apns().await;
    let notify = collapse_id("delivery-1", "notify");
    let remind = collapse_id("delivery-1", "remind");

    for id in [&notify, &notify, &remind] {
        client
            .send_apns(&credentials, DEVICE, &notification("delivery-1", id))
            .await
            .unwrap();
    }

    let ids: Vec<Option<String>> = fake.received().into_iter().map(|r| r.collapse_id).collect();
    assert_eq!(
        ids,
        vec![Some(notify.clone()), Some(notify.clone()), Some(remind)]
    );
    assert_ne!(ids[0], ids[2]);
}

#[tokio::test]
async fn fcm_receives_the_collapse_key_for_android_and_the_apns_header_for_ios() {
    let (fake, client, credentials) = fcm().await;
    let notify = collapse_id("delivery-1", "notify");
    let remind = collapse_id("delivery-1", "remind");

    for id in [&notify, &notify, &remind] {
        client
            .send_fcm(&credentials, "token-a", &notification("delivery-1", id))
            .await
            .unwrap();
    }

    let received = fake.received();
    let keys: Vec<Option<String>> = received.iter().map(|r| r.collapse_key.clone()).collect();
    assert_eq!(
        keys,
        vec![Some(notify.clone()), Some(notify.clone()), Some(remind)]
    );
    for r in &received {
        assert_eq!(r.apns_collapse_id, r.collapse_key);
    }
}

#[tokio::test]
async fn without_a_collapse_id_none_is_sent() {
    let (fake, client, credentials) = apns().await;
    let n = Notification {
        collapse_id: None,
        ..notification("delivery-1", "unused")
    };
    client.send_apns(&credentials, DEVICE, &n).await.unwrap();
    assert_eq!(fake.received()[0].collapse_id, None);
}

#[tokio::test]
async fn a_collapse_id_longer_than_apns_allows_is_refused_without_sending() {
    let (fake, client, credentials) = apns().await;
    let long = "c".repeat(MAX_COLLAPSE_ID_BYTES + 1);

    let error = client
        .send_apns(&credentials, DEVICE, &notification("delivery-1", &long))
        .await
        .unwrap_err();

    assert!(matches!(error, PushError::Rejected { .. }), "{error:?}");
    assert!(fake.received().is_empty());
}
