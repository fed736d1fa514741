//! ESCALATE's record: one escalation per manager of unresolved reports, once per step.

use pidgr_store::{ActionKind, NewCampaign, NewMember, Recipient, Store};
use std::collections::BTreeMap;

async fn member(store: &Store, org: &str, external_id: &str, manager: Option<&str>) -> String {
    store
        .create_member(
            org,
            NewMember {
                external_id: external_id.into(),
                email: format!("{external_id}@example.com"),
                display_name: external_id.to_uppercase(),
                attributes: BTreeMap::new(),
                role_id: "member".into(),
                manager_id: manager.map(str::to_owned),
            },
        )
        .await
        .unwrap()
        .id
}

/// A started campaign whose recipients are `reports` (external id, member id).
async fn campaign(store: &Store, org: &str, reports: &[(&str, &str)]) -> String {
    let campaign = store
        .create_campaign(NewCampaign {
            org_id: org.into(),
            name: "Escalation".into(),
            title: "Please read".into(),
            template_id: "template-1".into(),
            template_version: 1,
            message_title: "Hi {{name}}".into(),
            body: "Hello".into(),
            audience: serde_json::json!({ "members": [] }),
            definition: "{}".into(),
            definition_ref: None,
        })
        .await
        .unwrap()
        .id;
    let recipients: Vec<Recipient> = reports
        .iter()
        .map(|(user, member)| Recipient {
            member_id: Some((*member).to_owned()),
            user_id: (*user).to_owned(),
            email: None,
            display_name: Some(user.to_uppercase()),
            variables: BTreeMap::new(),
        })
        .collect();
    store
        .start_campaign(org, &campaign, "campaign-escalation", &recipients)
        .await
        .unwrap();
    campaign
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

store_test!(each_manager_of_unresolved_reports_is_escalated_once_per_step);
async fn each_manager_of_unresolved_reports_is_escalated_once_per_step(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let ada = member(&store, &org, "ada", None).await;
    let bob = member(&store, &org, "bob", None).await;
    let a1 = member(&store, &org, "a1", Some(&ada)).await;
    let a2 = member(&store, &org, "a2", Some(&ada)).await;
    let a3 = member(&store, &org, "a3", Some(&ada)).await;
    let b1 = member(&store, &org, "b1", Some(&bob)).await;
    let lone = member(&store, &org, "lone", None).await;
    let campaign = campaign(
        &store,
        &org,
        &[
            ("a1", &a1),
            ("a2", &a2),
            ("a3", &a3),
            ("b1", &b1),
            ("lone", &lone),
        ],
    )
    .await;
    // a1 acknowledges: ada's escalation names a2 and a3 only.
    let a1_delivery = delivery_id(&store, &org, &campaign, "a1").await;
    store
        .record_action(&org, &a1_delivery, ActionKind::Ack, "test")
        .await
        .unwrap();

    let plan = store
        .record_escalations(&org, &campaign, "escalate")
        .await
        .unwrap();
    assert_eq!(plan.without_manager, 1);
    let by_manager: Vec<(&str, &str, u64)> = plan
        .escalations
        .iter()
        .map(|e| {
            (
                e.manager_id.as_str(),
                e.manager_user_id.as_str(),
                e.unresolved_count,
            )
        })
        .collect();
    let mut expected = vec![(ada.as_str(), "ada", 2), (bob.as_str(), "bob", 1)];
    expected.sort();
    assert_eq!(by_manager, expected);
    let ada_escalation = plan
        .escalations
        .iter()
        .find(|e| e.manager_id == ada)
        .unwrap()
        .clone();
    assert_eq!(ada_escalation.code.len(), 32);
    assert!(ada_escalation.pushed_at.is_none());

    // A retry finds the same escalations, even after another report acknowledged.
    let a2_delivery = delivery_id(&store, &org, &campaign, "a2").await;
    store
        .record_action(&org, &a2_delivery, ActionKind::Ack, "test")
        .await
        .unwrap();
    assert!(
        store
            .claim_escalation_push(&org, &ada_escalation.id)
            .await
            .unwrap()
    );
    let again = store
        .record_escalations(&org, &campaign, "escalate")
        .await
        .unwrap();
    assert_eq!(again.escalations.len(), 2);
    let ada_again = again
        .escalations
        .iter()
        .find(|e| e.manager_id == ada)
        .unwrap();
    assert_eq!(
        (
            ada_again.id.as_str(),
            ada_again.code.as_str(),
            ada_again.unresolved_count
        ),
        (ada_escalation.id.as_str(), ada_escalation.code.as_str(), 2)
    );
    assert!(ada_again.pushed_at.is_some());

    // The link lists the escalated reports not acknowledged now: a3 (a2 acknowledged since).
    let found = store
        .get_escalation_by_code(&org, &ada_escalation.code)
        .await
        .unwrap();
    assert_eq!(found.id, ada_escalation.id);
    let reports = store.unacknowledged_reports(&org, &found.id).await.unwrap();
    assert_eq!(
        reports
            .iter()
            .map(|r| r.user_id.as_str())
            .collect::<Vec<_>>(),
        ["a3"]
    );
    assert_eq!(reports[0].member_id.as_deref(), Some(a3.as_str()));

    // Another step of the same campaign escalates afresh; another organisation sees nothing.
    let later = store
        .record_escalations(&org, &campaign, "escalate-again")
        .await
        .unwrap();
    let counts: Vec<u64> = later
        .escalations
        .iter()
        .map(|e| e.unresolved_count)
        .collect();
    assert_eq!(later.escalations.len(), 2);
    assert_eq!(counts.iter().sum::<u64>(), 2);
    let other = store.create_organisation("Other").await.unwrap().id;
    assert!(
        store
            .get_escalation_by_code(&other, &ada_escalation.code)
            .await
            .is_err()
    );
    assert!(
        store
            .unacknowledged_reports(&other, &found.id)
            .await
            .unwrap()
            .is_empty()
    );
}

store_test!(a_step_with_nobody_unresolved_escalates_to_nobody);
async fn a_step_with_nobody_unresolved_escalates_to_nobody(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let ada = member(&store, &org, "ada", None).await;
    let a1 = member(&store, &org, "a1", Some(&ada)).await;
    let campaign = campaign(&store, &org, &[("a1", &a1)]).await;
    let a1_delivery = delivery_id(&store, &org, &campaign, "a1").await;
    store
        .record_action(&org, &a1_delivery, ActionKind::Ack, "test")
        .await
        .unwrap();
    let plan = store
        .record_escalations(&org, &campaign, "escalate")
        .await
        .unwrap();
    assert!(plan.escalations.is_empty());
    assert_eq!(plan.without_manager, 0);
}

store_test!(of_two_claims_of_one_push_only_one_wins);
async fn of_two_claims_of_one_push_only_one_wins(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let ada = member(&store, &org, "ada", None).await;
    let a1 = member(&store, &org, "a1", Some(&ada)).await;
    let campaign = campaign(&store, &org, &[("a1", &a1)]).await;
    let plan = store
        .record_escalations(&org, &campaign, "escalate")
        .await
        .unwrap();
    let escalation = &plan.escalations[0].id;

    // Two attempts of the step at once: exactly one may push.
    let (first, second) = tokio::join!(
        store.claim_escalation_push(&org, escalation),
        store.claim_escalation_push(&org, escalation)
    );
    let mut claims = [first.unwrap(), second.unwrap()];
    claims.sort();
    assert_eq!(claims, [false, true]);
    // A retry finds it claimed, pushed or not; the claim shows on the escalation.
    assert!(!store.claim_escalation_push(&org, escalation).await.unwrap());
    let again = store
        .record_escalations(&org, &campaign, "escalate")
        .await
        .unwrap();
    assert!(again.escalations[0].pushed_at.is_some());

    // Another organisation cannot claim it; a claim given back is claimed again, once.
    let other = store.create_organisation("Other").await.unwrap().id;
    store
        .release_escalation_push(&other, escalation)
        .await
        .unwrap();
    assert!(!store.claim_escalation_push(&org, escalation).await.unwrap());
    store
        .release_escalation_push(&org, escalation)
        .await
        .unwrap();
    assert!(
        !store
            .claim_escalation_push(&other, escalation)
            .await
            .unwrap()
    );
    assert!(store.claim_escalation_push(&org, escalation).await.unwrap());
    assert!(!store.claim_escalation_push(&org, escalation).await.unwrap());
}
