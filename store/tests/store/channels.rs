//! Delivery channels: webhook channel events and their attempts, push credentials sealed at
//! rest, and the batch device lookup of a fan-out page.

use chrono::{Duration, Utc};
use pidgr_store::{
    NewMember, Platform, Recipient, SecretKey, Store, StoreError, WebhookAttemptOutcome, testing,
};
use sqlx::Row;
use std::collections::BTreeMap;

async fn campaign_with(store: &Store, org: &str, users: &[&str]) -> (String, Vec<String>) {
    let campaign = store
        .create_campaign(pidgr_store::NewCampaign {
            org_id: org.into(),
            name: "Channels".into(),
            title: "Please read".into(),
            template_id: "template-1".into(),
            template_version: 1,
            message_title: "Read this".into(),
            body: "Body".into(),
            audience: serde_json::json!({}),
            definition: "{}".into(),
            definition_ref: None,
        })
        .await
        .unwrap()
        .id;
    let recipients: Vec<Recipient> = users
        .iter()
        .map(|user| Recipient {
            member_id: None,
            user_id: (*user).into(),
            email: None,
            display_name: None,
            variables: BTreeMap::new(),
        })
        .collect();
    store
        .start_campaign(org, &campaign, &format!("campaign-{campaign}"), &recipients)
        .await
        .unwrap();
    let deliveries = store
        .list_deliveries(org, &campaign, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, d)| d.id)
        .collect();
    (campaign, deliveries)
}

store_test!(webhook_events_keep_their_first_body_and_follow_their_attempts);
async fn webhook_events_keep_their_first_body_and_follow_their_attempts(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let (campaign, deliveries) = campaign_with(&store, &org, &["ada", "bob"]).await;
    let events: Vec<(String, String)> = deliveries
        .iter()
        .map(|d| (d.clone(), format!("{{\"first\":\"{d}\"}}")))
        .collect();
    assert_eq!(
        store
            .enqueue_webhook_events(&org, &campaign, "remind", &events)
            .await
            .unwrap(),
        2
    );
    // A retried fan-out page queues again with new bodies: nothing changes.
    let again: Vec<(String, String)> = deliveries
        .iter()
        .map(|d| (d.clone(), "{\"second\":true}".to_owned()))
        .collect();
    assert_eq!(
        store
            .enqueue_webhook_events(&org, &campaign, "remind", &again)
            .await
            .unwrap(),
        0
    );
    let now = Utc::now();
    let due = store
        .due_webhook_events(&org, &campaign, "remind", now, "", 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 2);
    assert!(
        due.iter()
            .all(|e| e.body.contains("first") && e.attempts == 0)
    );
    // Paging goes on after the last id; another step and another organisation see nothing.
    let rest = store
        .due_webhook_events(&org, &campaign, "remind", now, &due[0].id, 10)
        .await
        .unwrap();
    assert_eq!(rest, due[1..].to_vec());
    assert!(
        store
            .due_webhook_events(&org, &campaign, "notify", now, "", 10)
            .await
            .unwrap()
            .is_empty()
    );
    let other = store.create_organisation("Other").await.unwrap().id;
    assert!(
        store
            .due_webhook_events(&other, &campaign, "remind", now, "", 10)
            .await
            .unwrap()
            .is_empty()
    );

    // First event: fails, is due again in 5 s, then delivered. Second: fails for good.
    let later = now + Duration::seconds(5);
    assert!(
        store
            .record_webhook_attempt(
                &org,
                &due[0].id,
                0,
                WebhookAttemptOutcome::RetryAt(later),
                Some("503")
            )
            .await
            .unwrap()
    );
    // A second sender that read the same count (a timed-out attempt still running) records
    // nothing: the attempt is counted once.
    assert!(
        !store
            .record_webhook_attempt(
                &org,
                &due[0].id,
                0,
                WebhookAttemptOutcome::Failed,
                Some("late")
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .record_webhook_attempt(
                &org,
                &due[1].id,
                0,
                WebhookAttemptOutcome::Failed,
                Some("404")
            )
            .await
            .unwrap()
    );
    let progress = store
        .webhook_event_progress(&org, &campaign, "remind")
        .await
        .unwrap();
    assert_eq!(
        (progress.pending, progress.delivered, progress.failed),
        (1, 0, 1)
    );
    assert_eq!(
        progress.next_attempt_at.map(|t| t.timestamp_millis()),
        Some(later.timestamp_millis())
    );
    assert!(
        store
            .due_webhook_events(&org, &campaign, "remind", now, "", 10)
            .await
            .unwrap()
            .is_empty(),
        "not due before its retry time"
    );
    let retry = store
        .due_webhook_events(&org, &campaign, "remind", later, "", 10)
        .await
        .unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!(
        (retry[0].attempts, retry[0].body.as_str()),
        (1, due[0].body.as_str())
    );
    assert!(
        store
            .record_webhook_attempt(
                &org,
                &retry[0].id,
                1,
                WebhookAttemptOutcome::Delivered,
                None
            )
            .await
            .unwrap()
    );
    // An attempt recorded on a finished event (a stale retry) changes nothing.
    assert!(
        !store
            .record_webhook_attempt(
                &org,
                &retry[0].id,
                2,
                WebhookAttemptOutcome::Failed,
                Some("late")
            )
            .await
            .unwrap()
    );
    let progress = store
        .webhook_event_progress(&org, &campaign, "remind")
        .await
        .unwrap();
    assert_eq!(
        (progress.pending, progress.delivered, progress.failed),
        (0, 1, 1)
    );
    assert_eq!(progress.next_attempt_at, None);
}

store_test!(pending_webhook_events_can_be_failed_at_once);
async fn pending_webhook_events_can_be_failed_at_once(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let (campaign, deliveries) = campaign_with(&store, &org, &["ada", "bob", "cy"]).await;
    let events: Vec<(String, String)> = deliveries
        .iter()
        .map(|d| (d.clone(), "{}".to_owned()))
        .collect();
    store
        .enqueue_webhook_events(&org, &campaign, "notify", &events)
        .await
        .unwrap();
    let first = store
        .due_webhook_events(&org, &campaign, "notify", Utc::now(), "", 1)
        .await
        .unwrap();
    store
        .record_webhook_attempt(
            &org,
            &first[0].id,
            0,
            WebhookAttemptOutcome::Delivered,
            None,
        )
        .await
        .unwrap();
    // Another step's pending event, failed with the whole campaign below.
    store
        .enqueue_webhook_events(&org, &campaign, "remind", &events[..1])
        .await
        .unwrap();
    let failed = store
        .fail_pending_webhook_events(&org, &campaign, Some("notify"), "channel removed")
        .await
        .unwrap();
    assert_eq!(failed, 2);
    let other = store.create_organisation("Other").await.unwrap().id;
    assert_eq!(
        store
            .fail_pending_webhook_events(&other, &campaign, None, "cancelled")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .fail_pending_webhook_events(&org, &campaign, None, "cancelled")
            .await
            .unwrap(),
        1
    );
    let progress = store
        .webhook_event_progress(&org, &campaign, "notify")
        .await
        .unwrap();
    assert_eq!(
        (progress.pending, progress.delivered, progress.failed),
        (0, 1, 2)
    );
}

store_test!(push_credentials_are_sealed_replaced_and_scoped);
async fn push_credentials_are_sealed_replaced_and_scoped(store: Store) {
    let store = store.with_secret_key(SecretKey::generate());
    let org = store.create_organisation("Acme").await.unwrap().id;
    let other = store.create_organisation("Other").await.unwrap().id;
    let secret = r#"{"private_key":"-----BEGIN PRIVATE KEY-----\nMIIsecret\n"}"#;
    let summary = serde_json::json!({ "project_id": "acme-app" });
    let saved = store
        .set_push_credentials(&org, Platform::Fcm, &summary, secret)
        .await
        .unwrap();
    assert_eq!((saved.platform, &saved.summary), (Platform::Fcm, &summary));
    store
        .set_push_credentials(
            &org,
            Platform::Apns,
            &serde_json::json!({ "key_id": "K" }),
            "apns",
        )
        .await
        .unwrap();

    // At rest, only ciphertext.
    let raw: Vec<String> = sqlx::query("SELECT sealed FROM push_credentials WHERE org_id = $1")
        .bind(&org)
        .fetch_all(testing::pool(&store))
        .await
        .unwrap()
        .iter()
        .map(|row| row.get("sealed"))
        .collect();
    assert_eq!(raw.len(), 2);
    assert!(
        raw.iter()
            .all(|sealed| !sealed.contains("MIIsecret") && sealed != "apns")
    );

    assert_eq!(
        store
            .push_credentials_secret(&org, Platform::Fcm)
            .await
            .unwrap()
            .as_deref(),
        Some(secret)
    );
    assert_eq!(
        store
            .push_credentials_secret(&other, Platform::Fcm)
            .await
            .unwrap(),
        None
    );
    let listed = store.list_push_credentials(&org).await.unwrap();
    assert_eq!(
        listed.iter().map(|c| c.platform).collect::<Vec<_>>(),
        vec![Platform::Fcm, Platform::Apns]
    );
    assert!(
        store
            .list_push_credentials(&other)
            .await
            .unwrap()
            .is_empty()
    );

    // Replacing keeps one row per platform and the creation time.
    let replaced = store
        .set_push_credentials(
            &org,
            Platform::Fcm,
            &serde_json::json!({ "project_id": "new" }),
            "v2",
        )
        .await
        .unwrap();
    assert_eq!(replaced.created_at, saved.created_at);
    assert_eq!(replaced.summary["project_id"], "new");
    assert_eq!(
        store
            .push_credentials_secret(&org, Platform::Fcm)
            .await
            .unwrap()
            .as_deref(),
        Some("v2")
    );

    assert!(matches!(
        store.delete_push_credentials(&other, Platform::Fcm).await,
        Err(StoreError::NotFound)
    ));
    store
        .delete_push_credentials(&org, Platform::Fcm)
        .await
        .unwrap();
    assert_eq!(
        store
            .push_credentials_secret(&org, Platform::Fcm)
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        store.delete_push_credentials(&org, Platform::Fcm).await,
        Err(StoreError::NotFound)
    ));
}

store_test!(a_page_of_members_devices_is_read_at_once);
async fn a_page_of_members_devices_is_read_at_once(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let mut members = Vec::new();
    for name in ["ada", "bob", "cy"] {
        let member = store
            .create_member(
                &org,
                NewMember {
                    external_id: name.into(),
                    email: format!("{name}@example.com"),
                    display_name: name.into(),
                    attributes: BTreeMap::new(),
                    role_id: "member".into(),
                    manager_id: None,
                },
            )
            .await
            .unwrap();
        members.push(member.id);
    }
    store
        .register_device(&org, &members[0], Platform::Fcm, "ada-phone")
        .await
        .unwrap();
    store
        .register_device(&org, &members[0], Platform::Apns, "ada-ipad")
        .await
        .unwrap();
    store
        .register_device(&org, &members[1], Platform::Fcm, "bob-phone")
        .await
        .unwrap();
    let ids: Vec<&str> = members.iter().map(String::as_str).collect();

    let devices = store.devices_of_members(&org, &ids).await.unwrap();

    let tokens = |member: &str| -> Vec<String> {
        let mut tokens: Vec<String> = devices
            .get(member)
            .map(|d| d.iter().map(|d| d.token.clone()).collect())
            .unwrap_or_default();
        tokens.sort();
        tokens
    };
    assert_eq!(tokens(&members[0]), vec!["ada-ipad", "ada-phone"]);
    assert_eq!(tokens(&members[1]), vec!["bob-phone"]);
    assert!(tokens(&members[2]).is_empty());
    let other = store.create_organisation("Other").await.unwrap().id;
    assert!(
        store
            .devices_of_members(&other, &ids)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .devices_of_members(&org, &[])
            .await
            .unwrap()
            .is_empty()
    );
}

store_test!(a_claimed_event_is_not_claimed_again_until_recorded_or_its_lease_runs_out);
async fn a_claimed_event_is_not_claimed_again_until_recorded_or_its_lease_runs_out(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let (campaign, deliveries) = campaign_with(&store, &org, &["ada", "bob", "cy"]).await;
    let events: Vec<(String, String)> = deliveries
        .iter()
        .map(|d| (d.clone(), format!("{{\"delivery\":\"{d}\"}}")))
        .collect();
    store
        .enqueue_webhook_events(&org, &campaign, "notify", &events)
        .await
        .unwrap();
    let now = Utc::now();
    let lease = now + Duration::seconds(30);
    let claim = |at, limit| {
        let (store, org, campaign) = (&store, &org, &campaign);
        async move {
            store
                .claim_webhook_events(
                    org,
                    campaign,
                    "notify",
                    at,
                    at + Duration::seconds(30),
                    limit,
                )
                .await
                .unwrap()
        }
    };

    let first = claim(now, 2).await;
    assert_eq!(first.len(), 2);
    assert!(first[0].id < first[1].id, "oldest first");
    let second = claim(now, 10).await;
    assert_eq!(second.len(), 1, "only the one nobody holds");
    assert!(!first.iter().any(|e| e.id == second[0].id));
    assert!(claim(now, 10).await.is_empty(), "everything is leased");
    // Another step's and another organisation's claims see none of these.
    assert!(
        store
            .claim_webhook_events(&org, &campaign, "remind", now, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let other = store.create_organisation("Other").await.unwrap().id;
    assert!(
        store
            .claim_webhook_events(&other, &campaign, "notify", now, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Progress counts the leases: nothing can be sent before they run out.
    let progress = store
        .webhook_event_progress(&org, &campaign, "notify")
        .await
        .unwrap();
    assert_eq!(progress.pending, 3);
    assert_eq!(
        progress.next_attempt_at.map(|t| t.timestamp_millis()),
        Some(lease.timestamp_millis())
    );

    // Recording ends the lease: a delivered event is done, a failed one is due at its retry.
    let retry_at = now + Duration::seconds(1);
    assert!(
        store
            .record_webhook_attempt(
                &org,
                &first[0].id,
                0,
                WebhookAttemptOutcome::Delivered,
                None
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .record_webhook_attempt(
                &org,
                &first[1].id,
                0,
                WebhookAttemptOutcome::RetryAt(retry_at),
                Some("503")
            )
            .await
            .unwrap()
    );
    assert!(claim(now, 10).await.is_empty(), "the retry is not due yet");
    let retried = claim(retry_at, 10).await;
    assert_eq!(retried.len(), 1);
    assert_eq!(
        (
            retried[0].id.as_str(),
            retried[0].attempts,
            retried[0].body.as_str()
        ),
        (first[1].id.as_str(), 1, first[1].body.as_str()),
        "the same event, its attempt counted, its body unchanged"
    );
    // The third event's sender never recorded (it died): its lease runs out and it is claimed.
    assert!(claim(now + Duration::seconds(29), 10).await.is_empty());
    // (At 30.5 s the retried event, claimed at 1 s, is still leased.)
    let orphan = claim(now + Duration::milliseconds(30_500), 10).await;
    assert_eq!(orphan.len(), 1);
    assert_eq!(orphan[0].id, second[0].id);
}

store_test!(concurrent_claims_never_hand_out_one_event_twice);
async fn concurrent_claims_never_hand_out_one_event_twice(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let users: Vec<String> = (0..60).map(|n| format!("user-{n:02}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let (campaign, deliveries) = campaign_with(&store, &org, &names).await;
    let events: Vec<(String, String)> = deliveries
        .iter()
        .map(|d| (d.clone(), "{}".to_owned()))
        .collect();
    store
        .enqueue_webhook_events(&org, &campaign, "notify", &events)
        .await
        .unwrap();
    let now = Utc::now();

    // Eight senders claim small batches until nothing is left.
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (store, org, campaign) = (store.clone(), org.clone(), campaign.clone());
        senders.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store
                    .claim_webhook_events(
                        &org,
                        &campaign,
                        "notify",
                        now,
                        now + Duration::seconds(30),
                        3,
                    )
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|e| e.id));
                tokio::task::yield_now().await;
            }
        });
    }
    let mut claimed: Vec<String> = senders.join_all().await.into_iter().flatten().collect();

    assert_eq!(claimed.len(), 60, "every event claimed once in all");
    claimed.sort();
    claimed.dedup();
    assert_eq!(claimed.len(), 60, "no event claimed by two senders");
}
