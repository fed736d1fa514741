//! Campaigns, deliveries, actions, the activity log and the push log.

use pidgr_store::{
    ActionKind, ActivityKind, CampaignStatus, DeliveryStatus, NewActivity, NewCampaign, NewPush,
    NotifiedRows, Recipient, Store, StoreError,
};
use std::collections::BTreeMap;

fn recipient(user: &str) -> Recipient {
    Recipient {
        member_id: Some(format!("member-{user}")),
        user_id: user.into(),
        email: Some(format!("{user}@example.com")),
        display_name: Some(user.to_uppercase()),
        variables: BTreeMap::from([("team".to_owned(), format!("team-of-{user}"))]),
    }
}

fn audience(users: &[&str]) -> Vec<Recipient> {
    users.iter().map(|u| recipient(u)).collect()
}

async fn draft(store: &Store, org: &str) -> String {
    let campaign = store
        .create_campaign(NewCampaign {
            org_id: org.into(),
            name: "Q1 security".into(),
            title: "Please read".into(),
            template_id: "template-1".into(),
            template_version: 2,
            message_title: "Security, {{name}}".into(),
            body: "Hello {{name}}".into(),
            audience: serde_json::json!({ "groups": ["g1"] }),
            definition: "{}".into(),
            definition_ref: Some(("definition-1".into(), 3)),
        })
        .await
        .unwrap();
    assert_eq!(campaign.status, CampaignStatus::Created);
    campaign.id
}

async fn started(store: &Store, users: &[&str]) -> (String, String) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let campaign = draft(store, &org).await;
    store
        .start_campaign(
            &org,
            &campaign,
            &format!("campaign-{campaign}"),
            &audience(users),
        )
        .await
        .unwrap();
    (org, campaign)
}

async fn delivery_of(
    store: &Store,
    org: &str,
    campaign: &str,
    user: &str,
) -> pidgr_store::Delivery {
    store
        .list_deliveries(org, campaign, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, d)| d)
        .find(|d| d.user_id == user)
        .unwrap()
}

store_test!(starting_twice_creates_each_delivery_once);
async fn starting_twice_creates_each_delivery_once(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let campaign = draft(&store, &org).await;
    let users = audience(&["ann", "bob", "cy"]);
    let first = store
        .start_campaign(&org, &campaign, "campaign-x", &users)
        .await
        .unwrap();
    assert!(first.newly_started);
    assert_eq!(first.campaign.status, CampaignStatus::Active);
    let again = store
        .start_campaign(&org, &campaign, "campaign-x", &users)
        .await
        .unwrap();
    assert!(!again.newly_started);
    let counts = store.delivery_counts(&org, &campaign).await.unwrap();
    assert_eq!((counts.pending, counts.total()), (3, 3));
    let ann = delivery_of(&store, &org, &campaign, "ann").await;
    assert_eq!(ann.variables["team"], "team-of-ann");
    assert_eq!(ann.deeplink_code.len(), 32);
}

store_test!(a_large_audience_is_written_in_batches_in_order);
async fn a_large_audience_is_written_in_batches_in_order(store: Store) {
    let users: Vec<String> = (0..1203).map(|i| format!("user-{i:05}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let (org, campaign) = started(&store, &refs).await;
    let all = store
        .list_deliveries(&org, &campaign, 0, 5000)
        .await
        .unwrap();
    assert_eq!(all.len(), 1203);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, (seq, d))| *seq == i as i64 + 1 && d.user_id == users[i])
    );
}

store_test!(another_organisation_sees_nothing);
async fn another_organisation_sees_nothing(store: Store) {
    let (org, campaign) = started(&store, &["ann"]).await;
    let other = store.create_organisation("Other").await.unwrap().id;
    assert!(matches!(
        store.get_campaign(&other, &campaign).await,
        Err(StoreError::NotFound)
    ));
    let ann = delivery_of(&store, &org, &campaign, "ann").await;
    assert!(matches!(
        store
            .record_action(&other, &ann.id, ActionKind::Ack, "test")
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store
            .delivery_counts(&other, &campaign)
            .await
            .unwrap()
            .total(),
        0
    );
    assert!(
        store
            .list_deliveries(&other, &campaign, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.cancel_campaign(&other, &campaign).await,
        Err(StoreError::NotFound)
    ));
}

store_test!(read_then_ack_is_idempotent_and_never_moves_back);
async fn read_then_ack_is_idempotent_and_never_moves_back(store: Store) {
    let (org, campaign) = started(&store, &["ann"]).await;
    let ann = delivery_of(&store, &org, &campaign, "ann").await;
    let read = store
        .record_action(&org, &ann.id, ActionKind::Read, "test")
        .await
        .unwrap();
    assert!(read.changed);
    assert_eq!(read.delivery.status, DeliveryStatus::Read);
    let read_at = read.delivery.read_at.unwrap();
    assert!(
        !store
            .record_action(&org, &ann.id, ActionKind::Read, "test")
            .await
            .unwrap()
            .changed
    );
    let ack = store
        .record_action(&org, &ann.id, ActionKind::Ack, "test")
        .await
        .unwrap();
    assert!(ack.changed);
    assert_eq!(ack.delivery.status, DeliveryStatus::Acknowledged);
    assert_eq!(ack.delivery.read_at, Some(read_at));
    let again = store
        .record_action(&org, &ann.id, ActionKind::Ack, "test")
        .await
        .unwrap();
    assert!(!again.changed);
    let late_read = store
        .record_action(&org, &ann.id, ActionKind::Read, "test")
        .await
        .unwrap();
    assert_eq!(late_read.delivery.status, DeliveryStatus::Acknowledged);
    assert_eq!(
        store
            .delivery_counts(&org, &campaign)
            .await
            .unwrap()
            .acknowledged,
        1
    );
}

store_test!(ack_after_missed_or_cancel_is_refused);
async fn ack_after_missed_or_cancel_is_refused(store: Store) {
    let (org, campaign) = started(&store, &["ann", "bob"]).await;
    let ann = delivery_of(&store, &org, &campaign, "ann").await;
    assert_eq!(store.mark_missed(&org, &campaign).await.unwrap(), 2);
    let refused = store
        .record_action(&org, &ann.id, ActionKind::Ack, "test")
        .await;
    assert!(matches!(refused, Err(StoreError::Conflict(m)) if m.contains("missed")));

    let (org, campaign) = started(&store, &["cy"]).await;
    let cy = delivery_of(&store, &org, &campaign, "cy").await;
    assert_eq!(
        store.cancel_campaign(&org, &campaign).await.unwrap().status,
        CampaignStatus::Cancelled
    );
    let refused = store
        .record_action(&org, &cy.id, ActionKind::Ack, "test")
        .await;
    assert!(matches!(refused, Err(StoreError::Conflict(m)) if m.contains("cancelled")));
    assert!(matches!(
        store.start_campaign(&org, &campaign, "w", &[]).await,
        Err(StoreError::Conflict(_))
    ));
}

store_test!(fan_out_pages_skip_recipients_the_step_already_notified);
async fn fan_out_pages_skip_recipients_the_step_already_notified(store: Store) {
    let (org, campaign) = started(&store, &["a", "b", "c", "d", "e"]).await;
    let page = store
        .notify_page(&org, &campaign, "notify", false, 0, 2)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|t| t.user_id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    let outcomes = vec![
        (page[0].delivery_id.clone(), Ok(())),
        (
            page[1].delivery_id.clone(),
            Err("no registered device".to_owned()),
        ),
    ];
    let recorded = store
        .record_notified(&org, "notify", false, &outcomes)
        .await
        .unwrap();
    assert_eq!(recorded, NotifiedRows { sent: 1, failed: 1 });
    // Recording the same page again (a retried activity) changes no row, and says so.
    let again = store
        .record_notified(&org, "notify", false, &outcomes)
        .await
        .unwrap();
    assert_eq!(again, NotifiedRows::default());
    // A retry from the start finds only those not yet notified.
    let retry = store
        .notify_page(&org, &campaign, "notify", false, 0, 10)
        .await
        .unwrap();
    assert_eq!(
        retry.iter().map(|t| t.user_id.as_str()).collect::<Vec<_>>(),
        ["c", "d", "e"]
    );
    let b = delivery_of(&store, &org, &campaign, "b").await;
    assert_eq!(b.status, DeliveryStatus::Failed);
    assert_eq!(b.failure_reason.as_deref(), Some("no registered device"));
    let a = delivery_of(&store, &org, &campaign, "a").await;
    assert_eq!(a.status, DeliveryStatus::Sent);
    assert!(a.sent_at.is_some());
}

store_test!(campaigns_are_counted_by_status_across_organisations_with_every_status_listed);
async fn campaigns_are_counted_by_status_across_organisations_with_every_status_listed(
    store: Store,
) {
    let (first_org, first) = started(&store, &["a"]).await;
    started(&store, &["b"]).await;
    store.complete_campaign(&first_org, &first).await.unwrap();
    let counts = store.count_campaigns_by_status().await.unwrap();
    assert_eq!(
        counts,
        [
            (CampaignStatus::Created, 0),
            (CampaignStatus::Active, 1),
            (CampaignStatus::Completed, 1),
            (CampaignStatus::Cancelled, 0),
        ]
    );
}

store_test!(reminders_reach_only_the_unacknowledged_and_revive_failed);
async fn reminders_reach_only_the_unacknowledged_and_revive_failed(store: Store) {
    let (org, campaign) = started(&store, &["a", "b", "c"]).await;
    let page = store
        .notify_page(&org, &campaign, "notify", false, 0, 10)
        .await
        .unwrap();
    let outcomes: Vec<_> = page
        .iter()
        .map(|t| {
            (
                t.delivery_id.clone(),
                if t.user_id == "c" {
                    Err("refused".into())
                } else {
                    Ok(())
                },
            )
        })
        .collect();
    store
        .record_notified(&org, "notify", false, &outcomes)
        .await
        .unwrap();
    let a = delivery_of(&store, &org, &campaign, "a").await;
    store
        .record_action(&org, &a.id, ActionKind::Ack, "test")
        .await
        .unwrap();

    let due = store
        .notify_page(&org, &campaign, "remind", true, 0, 10)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|t| t.user_id.as_str()).collect::<Vec<_>>(),
        ["b", "c"]
    );
    let outcomes: Vec<_> = due
        .iter()
        .map(|t| (t.delivery_id.clone(), Ok(())))
        .collect();
    store
        .record_notified(&org, "remind", true, &outcomes)
        .await
        .unwrap();
    assert!(
        store
            .notify_page(&org, &campaign, "remind", true, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let c = delivery_of(&store, &org, &campaign, "c").await;
    assert_eq!(
        (c.status, c.reminder_count, c.failure_reason),
        (DeliveryStatus::Sent, 1, None)
    );
    let b = delivery_of(&store, &org, &campaign, "b").await;
    assert_eq!((b.status, b.reminder_count), (DeliveryStatus::Sent, 1));
}

store_test!(completion_marks_the_unresolved_missed);
async fn completion_marks_the_unresolved_missed(store: Store) {
    let (org, campaign) = started(&store, &["a", "b", "c"]).await;
    let a = delivery_of(&store, &org, &campaign, "a").await;
    store
        .record_action(&org, &a.id, ActionKind::Ack, "test")
        .await
        .unwrap();
    assert_eq!(store.complete_campaign(&org, &campaign).await.unwrap(), 2);
    let counts = store.delivery_counts(&org, &campaign).await.unwrap();
    assert_eq!(
        (counts.acknowledged, counts.missed, counts.unresolved()),
        (1, 2, 0)
    );
    let done = store.get_campaign(&org, &campaign).await.unwrap();
    assert_eq!(done.status, CampaignStatus::Completed);
    assert!(done.finished_at.is_some());
    // Completing again changes nothing; a completed campaign cannot be cancelled.
    assert_eq!(store.complete_campaign(&org, &campaign).await.unwrap(), 0);
    assert!(matches!(
        store.cancel_campaign(&org, &campaign).await,
        Err(StoreError::Conflict(_))
    ));
    let reports = store.delivery_reports(&org, &campaign).await.unwrap();
    assert_eq!(
        reports.iter().map(|r| r.status).collect::<Vec<_>>(),
        [
            DeliveryStatus::Acknowledged,
            DeliveryStatus::Missed,
            DeliveryStatus::Missed
        ]
    );
    assert!(reports[0].acknowledged_at.is_some() && reports[1].acknowledged_at.is_none());
}

store_test!(a_draft_keeps_its_pinned_message_and_lists_by_organisation);
async fn a_draft_keeps_its_pinned_message_and_lists_by_organisation(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let first = draft(&store, &org).await;
    let second = draft(&store, &org).await;
    let other = store.create_organisation("Other").await.unwrap().id;
    draft(&store, &other).await;
    let campaign = store.get_campaign(&org, &first).await.unwrap();
    assert_eq!(
        (
            campaign.template_id.as_deref(),
            campaign.template_version,
            campaign.message_title.as_str(),
            campaign.definition_id.as_deref(),
            campaign.definition_version,
        ),
        (
            Some("template-1"),
            Some(2),
            "Security, {{name}}",
            Some("definition-1"),
            Some(3)
        )
    );
    assert_eq!(campaign.audience["groups"][0], "g1");
    let page = store.list_campaigns(&org, "", 1).await.unwrap();
    assert_eq!(page.iter().map(|c| &c.id).collect::<Vec<_>>(), [&first]);
    let rest = store.list_campaigns(&org, &first, 10).await.unwrap();
    assert_eq!(rest.iter().map(|c| &c.id).collect::<Vec<_>>(), [&second]);
}

store_test!(a_members_deliveries_form_an_inbox_and_codes_resolve);
async fn a_members_deliveries_form_an_inbox_and_codes_resolve(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let mut campaigns = Vec::new();
    for _ in 0..3 {
        let campaign = draft(&store, &org).await;
        store
            .start_campaign(&org, &campaign, "w", &audience(&["ann", "bob"]))
            .await
            .unwrap();
        campaigns.push(campaign);
    }
    let newest_first = store
        .list_member_deliveries(&org, "member-ann", "", 2)
        .await
        .unwrap();
    assert_eq!(
        newest_first
            .iter()
            .map(|d| d.campaign_id.as_str())
            .collect::<Vec<_>>(),
        [campaigns[2].as_str(), campaigns[1].as_str()]
    );
    assert!(newest_first.iter().all(|d| d.user_id == "ann"));
    let older = store
        .list_member_deliveries(&org, "member-ann", &newest_first[1].id, 10)
        .await
        .unwrap();
    assert_eq!(older.len(), 1);
    assert_eq!(older[0].campaign_id, campaigns[0]);

    let by_code = store
        .get_delivery_by_code(&org, &older[0].deeplink_code)
        .await
        .unwrap();
    assert_eq!(by_code.id, older[0].id);
    assert_eq!(by_code.member_id.as_deref(), Some("member-ann"));
    let other = store.create_organisation("Other").await.unwrap().id;
    assert!(matches!(
        store
            .get_delivery_by_code(&other, &older[0].deeplink_code)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .list_member_deliveries(&other, "member-ann", "", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

store_test!(signal_slots_are_rationed);
async fn signal_slots_are_rationed(store: Store) {
    let (_org, campaign) = started(&store, &["a"]).await;
    assert!(store.claim_signal_slot(&campaign, 60_000).await.unwrap());
    assert!(!store.claim_signal_slot(&campaign, 60_000).await.unwrap());
    assert!(store.claim_signal_slot(&campaign, 0).await.unwrap());
}

store_test!(activity_log_and_push_log_keep_order);
async fn activity_log_and_push_log_keep_order(store: Store) {
    let (org, campaign) = started(&store, &["a"]).await;
    for (kind, message) in [
        (ActivityKind::StepStarted, "one"),
        (ActivityKind::WebhookFailed, "two"),
    ] {
        store
            .append_activity(NewActivity {
                org_id: &org,
                campaign_id: &campaign,
                step_id: Some("report"),
                kind,
                message: message.into(),
                details: serde_json::json!({"attempt": 1}),
            })
            .await
            .unwrap();
    }
    let log = store.list_activity(&org, &campaign, 0, 10).await.unwrap();
    assert_eq!(
        log.iter()
            .map(|e| (e.kind, e.message.as_str()))
            .collect::<Vec<_>>(),
        [
            (ActivityKind::StepStarted, "one"),
            (ActivityKind::WebhookFailed, "two")
        ]
    );
    assert_eq!(log[1].details["attempt"], 1);
    let after_first = store
        .list_activity(&org, &campaign, log[0].id, 10)
        .await
        .unwrap();
    assert_eq!(after_first.len(), 1);

    let a = delivery_of(&store, &org, &campaign, "a").await;
    store
        .record_push(NewPush {
            org_id: &org,
            campaign_id: &campaign,
            delivery_id: &a.id,
            step_id: "notify",
            provider: "log",
            title: "T",
            body: "B",
            deeplink: "http://x/c/1",
        })
        .await
        .unwrap();
    let pushes = store.list_pushes(&org, &campaign).await.unwrap();
    assert_eq!((pushes.len(), pushes[0].step_id.as_str()), (1, "notify"));
}

store_test!(the_reconciler_sees_only_active_campaigns_whose_workflow_is_not_known);
async fn the_reconciler_sees_only_active_campaigns_whose_workflow_is_not_known(store: Store) {
    let (org, first) = started(&store, &["ann"]).await;
    let second = draft(&store, &org).await;
    store
        .activate_campaign(&org, &second, "campaign-second", 1)
        .await
        .unwrap();
    let _draft = draft(&store, &org).await;
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    let ids = |campaigns: Vec<pidgr_store::Campaign>| -> Vec<String> {
        campaigns.into_iter().map(|c| c.id).collect()
    };
    let mut both = vec![first.clone(), second.clone()];
    both.sort();
    let found = store
        .active_campaigns_without_workflow(later, "", 10)
        .await
        .unwrap();
    assert_eq!(ids(found), both, "ACTIVE ones only, drafts left out");
    let before_any_start = chrono::Utc::now() - chrono::Duration::hours(1);
    assert!(
        store
            .active_campaigns_without_workflow(before_any_start, "", 10)
            .await
            .unwrap()
            .is_empty(),
        "a start still under way is left alone"
    );
    store.mark_workflow_started(&org, &first).await.unwrap();
    store.mark_workflow_started(&org, &first).await.unwrap();
    let found = store
        .active_campaigns_without_workflow(later, "", 10)
        .await
        .unwrap();
    assert_eq!(ids(found), vec![second.clone()]);
    let after_second = store
        .active_campaigns_without_workflow(later, &second, 10)
        .await
        .unwrap();
    assert!(after_second.is_empty(), "pages continue after the cursor");
}
