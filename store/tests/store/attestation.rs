//! Attested READs and ACKs, a campaign's audit history, and organisations' signing keys.

use pidgr_store::{
    ActionAttestation, ActionKind, AttestedAction, AuditPage, DeliveryStatus, NewCampaign,
    Recipient, SecretKey, Store, StoreError, testing,
};
use sqlx::Row;
use std::collections::BTreeMap;

async fn started(store: &Store, users: &[&str]) -> (String, String) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let campaign = store
        .create_campaign(NewCampaign {
            org_id: org.clone(),
            name: "Policy".into(),
            title: "Please read".into(),
            template_id: "template-1".into(),
            template_version: 4,
            message_title: "Policy for {{name}}".into(),
            body: "Hello {{name}}".into(),
            audience: serde_json::json!({ "groups": ["g1"] }),
            definition: "{}".into(),
            definition_ref: None,
        })
        .await
        .unwrap()
        .id;
    let recipients: Vec<Recipient> = users
        .iter()
        .map(|user| Recipient {
            member_id: Some(format!("member-{user}")),
            user_id: (*user).into(),
            email: None,
            display_name: None,
            variables: BTreeMap::new(),
        })
        .collect();
    store
        .start_campaign(&org, &campaign, "wf", &recipients)
        .await
        .unwrap();
    (org, campaign)
}

async fn delivery_id(store: &Store, org: &str, campaign: &str, user: &str) -> String {
    store
        .list_deliveries(org, campaign, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|(_, d)| d.user_id == user)
        .unwrap()
        .1
        .id
}

/// The hash a caller would compute: here, of the message and the member, so a test can see
/// what the store handed it.
fn shown_hash(
    delivery: &pidgr_store::Delivery,
    shown: &pidgr_store::ShownMessage,
) -> Option<String> {
    Some(format!(
        "{}|{}|{}",
        shown.message_title, shown.body, delivery.user_id
    ))
}

store_test!(an_attested_ack_keeps_key_template_and_content_hash);
async fn an_attested_ack_keeps_key_template_and_content_hash(store: Store) {
    let (org, campaign) = started(&store, &["ann"]).await;
    let ann = delivery_id(&store, &org, &campaign, "ann").await;
    let want = "Policy for {{name}}|Hello {{name}}|ann";
    let attestation = ActionAttestation {
        source: "app",
        api_key_id: Some("key-1"),
        content_sha256: Some(want),
    };
    let AttestedAction::Recorded {
        outcome,
        content_sha256,
    } = store
        .record_attested_action(&org, &ann, ActionKind::Ack, attestation, shown_hash)
        .await
        .unwrap()
    else {
        panic!("the right hash was refused");
    };
    assert!(outcome.changed);
    assert_eq!(outcome.delivery.status, DeliveryStatus::Acknowledged);
    assert_eq!(content_sha256.as_deref(), Some(want));
    let row = sqlx::query(
        "SELECT kind, source, api_key_id, template_id, template_version, content_sha256,
                content_confirmed
         FROM actions WHERE delivery_id = $1",
    )
    .bind(&ann)
    .fetch_one(testing::pool(&store))
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("kind"), "ACK");
    assert_eq!(row.get::<String, _>("source"), "app");
    assert_eq!(row.get::<String, _>("api_key_id"), "key-1");
    assert_eq!(row.get::<String, _>("template_id"), "template-1");
    assert_eq!(row.get::<i64, _>("template_version"), 4);
    assert_eq!(row.get::<String, _>("content_sha256"), want);
    assert_eq!(
        row.get::<i64, _>("content_confirmed"),
        1,
        "the client sent the hash back"
    );
}

store_test!(an_action_without_a_claimed_hash_is_not_content_confirmed);
async fn an_action_without_a_claimed_hash_is_not_content_confirmed(store: Store) {
    let (org, campaign) = started(&store, &["ann", "bob"]).await;
    let ids = delivery_ids(&store, &org, &campaign, &["ann", "bob"]).await;
    for (id, claimed) in [
        (&ids[0], None),
        (&ids[1], Some("Policy for {{name}}|Hello {{name}}|bob")),
    ] {
        let attestation = ActionAttestation {
            source: "app",
            api_key_id: Some("key-1"),
            content_sha256: claimed,
        };
        store
            .record_attested_action(&org, id, ActionKind::Ack, attestation, shown_hash)
            .await
            .unwrap();
    }
    let page = store
        .audit_events_page(&org, &campaign, 0, 10)
        .await
        .unwrap();
    let confirmed: Vec<(&str, Option<String>, Option<bool>)> = page
        .events
        .iter()
        .map(|e| {
            (
                e.user_id.as_str(),
                e.content_sha256.clone(),
                e.content_confirmed,
            )
        })
        .collect();
    assert_eq!(
        confirmed,
        [
            (
                "ann",
                Some("Policy for {{name}}|Hello {{name}}|ann".to_owned()),
                Some(false)
            ),
            (
                "bob",
                Some("Policy for {{name}}|Hello {{name}}|bob".to_owned()),
                Some(true)
            ),
        ]
    );
}

store_test!(a_different_content_hash_writes_nothing_even_on_a_repeat);
async fn a_different_content_hash_writes_nothing_even_on_a_repeat(store: Store) {
    let (org, campaign) = started(&store, &["ann", "bob"]).await;
    let ann = delivery_id(&store, &org, &campaign, "ann").await;
    let before = testing::row_counts(&store).await.unwrap();
    let wrong = ActionAttestation {
        source: "app",
        api_key_id: Some("key-1"),
        content_sha256: Some("not what was shown"),
    };
    for kind in [ActionKind::Read, ActionKind::Ack] {
        let refused = store
            .record_attested_action(&org, &ann, kind, wrong, shown_hash)
            .await
            .unwrap();
        assert!(
            matches!(&refused, AttestedAction::ContentMismatch { content_sha256: Some(h) } if h.ends_with("|ann")),
            "{refused:?}"
        );
    }
    assert_eq!(testing::row_counts(&store).await.unwrap(), before);
    assert_eq!(
        store.get_delivery(&org, &ann).await.unwrap().status,
        DeliveryStatus::Pending
    );

    // Acknowledged without a claimed hash, then repeated with a wrong one: refused, unchanged.
    store
        .record_action(&org, &ann, ActionKind::Ack, "web")
        .await
        .unwrap();
    let before = testing::row_counts(&store).await.unwrap();
    assert!(matches!(
        store
            .record_attested_action(&org, &ann, ActionKind::Ack, wrong, shown_hash)
            .await
            .unwrap(),
        AttestedAction::ContentMismatch { .. }
    ));
    assert_eq!(testing::row_counts(&store).await.unwrap(), before);

    // Another organisation's delivery is not found, whatever the hash.
    let other = store.create_organisation("Other").await.unwrap().id;
    assert!(matches!(
        store
            .record_attested_action(&other, &ann, ActionKind::Ack, wrong, shown_hash)
            .await,
        Err(StoreError::NotFound)
    ));
}

store_test!(the_audit_history_lists_each_deliverys_events_in_order);
async fn the_audit_history_lists_each_deliverys_events_in_order(store: Store) {
    let (org, campaign) = started(&store, &["ann", "bob", "cy"]).await;
    let ids: Vec<String> = delivery_ids(&store, &org, &campaign, &["ann", "bob", "cy"]).await;
    store
        .record_notified(
            &org,
            "notify",
            false,
            &ids.iter()
                .map(|id| (id.clone(), Ok(())))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    let attestation = ActionAttestation {
        source: "web",
        api_key_id: Some("key-9"),
        content_sha256: None,
    };
    store
        .record_attested_action(&org, &ids[0], ActionKind::Read, attestation, shown_hash)
        .await
        .unwrap();
    store
        .record_attested_action(&org, &ids[0], ActionKind::Ack, attestation, shown_hash)
        .await
        .unwrap();
    store.mark_missed(&org, &campaign).await.unwrap();

    let page = store
        .audit_events_page(&org, &campaign, 0, 2)
        .await
        .unwrap();
    assert_eq!(page.last_seq, Some(2));
    assert_eq!(page.deliveries, 2);
    let first_page = page.events;
    let summary: Vec<(&str, &str)> = first_page
        .iter()
        .map(|e| (e.user_id.as_str(), e.event))
        .collect();
    assert_eq!(
        summary,
        [
            ("ann", "SENT"),
            ("ann", "READ"),
            ("ann", "ACKNOWLEDGED"),
            ("bob", "SENT"),
            ("bob", "MISSED")
        ]
    );
    let ack = &first_page[2];
    assert_eq!(ack.source.as_deref(), Some("web"));
    assert_eq!(ack.api_key_id.as_deref(), Some("key-9"));
    assert_eq!(ack.template_version, Some(4));
    assert_eq!(
        ack.content_sha256.as_deref(),
        Some("Policy for {{name}}|Hello {{name}}|ann")
    );
    assert_eq!(ack.member_id.as_deref(), Some("member-ann"));
    assert_eq!(ack.content_confirmed, Some(false), "no hash was sent back");
    assert_eq!(first_page[0].content_confirmed, None, "SENT is no action");
    let rest = store
        .audit_events_page(&org, &campaign, 2, 2)
        .await
        .unwrap();
    assert_eq!(rest.last_seq, Some(3));
    assert_eq!(rest.deliveries, 1);
    assert_eq!(rest.events.len(), 2);
    let empty = AuditPage {
        last_seq: None,
        deliveries: 0,
        events: Vec::new(),
    };
    assert_eq!(
        store
            .audit_events_page(&org, &campaign, 3, 2)
            .await
            .unwrap(),
        empty
    );
    // Read the same way twice, the history is the same.
    assert_eq!(
        store
            .audit_events_page(&org, &campaign, 0, 2)
            .await
            .unwrap()
            .events,
        first_page
    );
    // Another organisation sees none of it.
    let other = store.create_organisation("Other").await.unwrap().id;
    assert_eq!(
        store
            .audit_events_page(&other, &campaign, 0, 10)
            .await
            .unwrap(),
        empty
    );
}

async fn delivery_ids(store: &Store, org: &str, campaign: &str, users: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for user in users {
        ids.push(delivery_id(store, org, campaign, user).await);
    }
    ids
}

store_test!(an_organisation_gets_one_sealed_signing_key);
async fn an_organisation_gets_one_sealed_signing_key(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    assert!(matches!(
        store.organisation_signer(&org).await,
        Err(StoreError::Config(_))
    ));
    let store = store.with_secret_key(SecretKey::generate());
    assert!(store.list_signing_keys(&org).await.unwrap().is_empty());
    let first = store.organisation_signer(&org).await.unwrap();
    let again = store.organisation_signer(&org).await.unwrap();
    assert_eq!(first.key, again.key);
    assert_eq!(first.key.algorithm, "Ed25519");
    assert_eq!(
        store.list_signing_keys(&org).await.unwrap(),
        std::slice::from_ref(&first.key)
    );
    let signature = first.pair.sign(b"hash");
    let public = pidgr_store::audit_chain::base64_decode(&first.key.public_key).unwrap();
    assert!(
        pidgr_store::audit_chain::verify_signature(&public, b"hash", signature.as_ref()),
        "the served public key checks what the private key signs"
    );
    // The private key is not stored in clear.
    let sealed: String =
        sqlx::query("SELECT private_key_sealed FROM signing_keys WHERE org_id = $1")
            .bind(&org)
            .fetch_one(testing::pool(&store))
            .await
            .unwrap()
            .get(0);
    assert!(sealed.starts_with("v3:"), "{sealed}");
    // Each organisation has its own.
    let other = store.create_organisation("Other").await.unwrap().id;
    let theirs = store.organisation_signer(&other).await.unwrap();
    assert_ne!(theirs.key.public_key, first.key.public_key);
    assert_eq!(store.list_signing_keys(&other).await.unwrap().len(), 1);
}
