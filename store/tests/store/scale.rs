//! What keeps ACK intake and fan-out cost flat as campaigns grow: authentication without a
//! write per request, the unresolved probe, the signal slot, the indexes the hot queries use,
//! planner statistics and a bounded SQLite log.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use pidgr_store::{
    ActionKind, Backend, CampaignStatus, DeliveryStatus, LAST_USED_GRANULARITY, NewCampaign,
    Recipient, SUPER_ADMIN, Store, testing,
};
use sqlx::Row;
use std::collections::BTreeMap;

async fn started_campaign(store: &Store, org: &str, users: usize) -> String {
    let campaign = store
        .create_campaign(NewCampaign {
            org_id: org.into(),
            name: "Scale".into(),
            title: "Please read".into(),
            template_id: "template-1".into(),
            template_version: 1,
            message_title: "Hello".into(),
            body: "Hello".into(),
            audience: serde_json::json!({ "groups": ["g1"] }),
            definition: "{}".into(),
            definition_ref: None,
        })
        .await
        .unwrap()
        .id;
    let audience: Vec<Recipient> = (0..users)
        .map(|i| Recipient {
            member_id: Some(format!("member-{i}")),
            user_id: format!("user-{i}"),
            email: None,
            display_name: None,
            variables: BTreeMap::new(),
        })
        .collect();
    store
        .start_campaign(org, &campaign, &format!("campaign-{campaign}"), &audience)
        .await
        .unwrap();
    campaign
}

async fn delivery_ids(store: &Store, org: &str, campaign: &str) -> Vec<String> {
    store
        .list_deliveries(org, campaign, 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, d)| d.id)
        .collect()
}

async fn last_used(store: &Store, org: &str, key: &str) -> Option<DateTime<Utc>> {
    store.get_api_key(org, key).await.unwrap().last_used_at
}

/// Now, to the millisecond the store keeps.
fn now_ms() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(Utc::now().timestamp_millis())
        .unwrap()
}

store_test!(authentication_writes_last_used_at_at_most_once_a_minute);
async fn authentication_writes_last_used_at_at_most_once_a_minute(store: Store) {
    assert_eq!(LAST_USED_GRANULARITY, TimeDelta::seconds(60));
    let org = store.create_organisation("Acme").await.unwrap();
    let generated = store
        .create_api_key(&org.id, "busy", SUPER_ADMIN)
        .await
        .unwrap();
    let idle = store
        .create_api_key(&org.id, "idle", SUPER_ADMIN)
        .await
        .unwrap();
    let key = generated.key.id.clone();
    let t0 = now_ms();

    let first = store
        .authenticate_at(&generated.secret, t0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.key.last_used_at, Some(t0));
    assert_eq!(last_used(&store, &org.id, &key).await, Some(t0));

    // Within the minute: the same answer, and nothing rewritten.
    for later in [TimeDelta::seconds(1), TimeDelta::seconds(59)] {
        let again = store
            .authenticate_at(&generated.secret, t0 + later)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.key.id, key);
        assert_eq!(again.key.last_used_at, Some(t0));
        assert_eq!(last_used(&store, &org.id, &key).await, Some(t0));
    }

    // Once it is more than a minute old, the next authentication moves it.
    let t1 = t0 + TimeDelta::seconds(61);
    let moved = store
        .authenticate_at(&generated.secret, t1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.key.last_used_at, Some(t1));
    assert_eq!(last_used(&store, &org.id, &key).await, Some(t1));

    // Made-up secrets and revoked keys authenticate nothing and touch no key.
    let t2 = t1 + TimeDelta::minutes(10);
    for secret in ["pidgr_made-up", "not-even-the-prefix"] {
        assert!(store.authenticate_at(secret, t2).await.unwrap().is_none());
    }
    store.revoke_api_key(&org.id, &key).await.unwrap();
    assert!(
        store
            .authenticate_at(&generated.secret, t2)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(last_used(&store, &org.id, &key).await, Some(t1));
    assert_eq!(last_used(&store, &org.id, &idle.key.id).await, None);
}

store_test!(the_unresolved_probe_answers_until_the_last_delivery_resolves);
async fn the_unresolved_probe_answers_until_the_last_delivery_resolves(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let other = store.create_organisation("Other").await.unwrap().id;
    let campaign = started_campaign(&store, &org, 3).await;
    let ids = delivery_ids(&store, &org, &campaign).await;
    assert!(
        store
            .has_unresolved_deliveries(&org, &campaign)
            .await
            .unwrap()
    );
    // Another organisation's probe of the same campaign id finds nothing.
    assert!(
        !store
            .has_unresolved_deliveries(&other, &campaign)
            .await
            .unwrap()
    );

    store
        .record_action(&org, &ids[0], ActionKind::Ack, "test")
        .await
        .unwrap();
    // READ is not resolved.
    store
        .record_action(&org, &ids[1], ActionKind::Read, "test")
        .await
        .unwrap();
    store
        .record_action(&org, &ids[2], ActionKind::Ack, "test")
        .await
        .unwrap();
    assert!(
        store
            .has_unresolved_deliveries(&org, &campaign)
            .await
            .unwrap()
    );
    store
        .record_action(&org, &ids[1], ActionKind::Ack, "test")
        .await
        .unwrap();
    assert!(
        !store
            .has_unresolved_deliveries(&org, &campaign)
            .await
            .unwrap()
    );

    // MISSED resolves too.
    let second = started_campaign(&store, &org, 2).await;
    assert!(
        store
            .has_unresolved_deliveries(&org, &second)
            .await
            .unwrap()
    );
    assert_eq!(store.mark_missed(&org, &second).await.unwrap(), 2);
    assert!(
        !store
            .has_unresolved_deliveries(&org, &second)
            .await
            .unwrap()
    );
}

store_test!(an_action_answers_the_row_as_stored_with_its_campaign_and_signal_slot);
async fn an_action_answers_the_row_as_stored_with_its_campaign_and_signal_slot(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let campaign = started_campaign(&store, &org, 3).await;
    let ids = delivery_ids(&store, &org, &campaign).await;
    let json = |d: &pidgr_store::Delivery| serde_json::to_value(d).unwrap();

    // Every kind of change: what the action answers is exactly what a read finds afterwards.
    let steps = [
        (0, ActionKind::Read, DeliveryStatus::Read),
        (0, ActionKind::Ack, DeliveryStatus::Acknowledged),
        (1, ActionKind::Ack, DeliveryStatus::Acknowledged),
    ];
    for (i, kind, status) in steps {
        let outcome = store
            .record_action(&org, &ids[i], kind, "test")
            .await
            .unwrap();
        assert!(outcome.changed);
        assert_eq!(outcome.delivery.status, status);
        assert_eq!(outcome.campaign_status, CampaignStatus::Active);
        assert_eq!(outcome.last_signal_at, None);
        let stored = store.get_delivery(&org, &ids[i]).await.unwrap();
        assert_eq!(json(&outcome.delivery), json(&stored));
    }
    let acked = store.get_delivery(&org, &ids[1]).await.unwrap();
    assert_eq!(acked.read_at, acked.acknowledged_at);

    // The slot, once claimed, shows in the next action; a claim within the interval loses,
    // and another campaign's slot is its own.
    let before = now_ms();
    assert!(store.claim_signal_slot(&campaign, 60_000).await.unwrap());
    assert!(!store.claim_signal_slot(&campaign, 60_000).await.unwrap());
    let read = store
        .record_action(&org, &ids[2], ActionKind::Read, "test")
        .await
        .unwrap();
    let claimed_at = read.last_signal_at.expect("the claimed slot");
    assert!(claimed_at >= before && claimed_at <= now_ms());
    let second = started_campaign(&store, &org, 1).await;
    assert!(store.claim_signal_slot(&second, 60_000).await.unwrap());
    assert!(store.claim_signal_slot(&campaign, 0).await.unwrap());

    // A READ of a resolved delivery only notes the first read time, and answers as stored.
    store.mark_missed(&org, &second).await.unwrap();
    let missed = delivery_ids(&store, &org, &second).await.remove(0);
    let late = store
        .record_action(&org, &missed, ActionKind::Read, "test")
        .await
        .unwrap();
    assert!(late.changed);
    assert_eq!(late.delivery.status, DeliveryStatus::Missed);
    assert!(late.delivery.read_at.is_some());
    assert_eq!(
        json(&late.delivery),
        json(&store.get_delivery(&org, &missed).await.unwrap())
    );

    // A cancelled campaign's status comes with an action that changes nothing.
    store.cancel_campaign(&org, &campaign).await.unwrap();
    let unchanged = store
        .record_action(&org, &ids[0], ActionKind::Ack, "test")
        .await
        .unwrap();
    assert!(!unchanged.changed);
    assert_eq!(unchanged.campaign_status, CampaignStatus::Cancelled);
}

/// The statistics row count SQLite keeps for `table`, or PostgreSQL's estimate of its rows
/// (`None` before either has looked at it).
async fn planner_rows(store: &Store, table: &str) -> Option<i64> {
    let pool = testing::pool(store);
    match store.backend() {
        Backend::Sqlite => {
            let exists =
                sqlx::query("SELECT 1 AS one FROM sqlite_master WHERE name = 'sqlite_stat1'")
                    .fetch_optional(pool)
                    .await
                    .unwrap()
                    .is_some();
            if !exists {
                return None;
            }
            let stat: Option<String> =
                sqlx::query("SELECT stat FROM sqlite_stat1 WHERE tbl = $1 ORDER BY stat LIMIT 1")
                    .bind(table)
                    .fetch_optional(pool)
                    .await
                    .unwrap()
                    .map(|row| row.try_get("stat").unwrap());
            // "rows rows-per-key...": the first number is the table's row count.
            stat.map(|s| s.split(' ').next().unwrap().parse().unwrap())
        }
        Backend::Postgres => {
            let rows: i64 = sqlx::query(
                "SELECT CAST(reltuples AS BIGINT) AS n FROM pg_class
                 WHERE relname = $1 AND relkind = 'r'",
            )
            .bind(table)
            .fetch_one(pool)
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
            // -1: never analysed; 0: analysed while empty.
            (rows > 0).then_some(rows)
        }
    }
}

store_test!(optimize_gathers_statistics_and_refreshes_them_as_tables_grow);
async fn optimize_gathers_statistics_and_refreshes_them_as_tables_grow(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    // Migrating analysed the empty tables: nothing to report yet.
    assert_eq!(planner_rows(&store, "deliveries").await, None);
    started_campaign(&store, &org, 2).await;
    store.optimize().await.unwrap();
    assert_eq!(planner_rows(&store, "deliveries").await, Some(2));
    // Thirty times as many rows: stale enough for SQLite's `PRAGMA optimize` to look again.
    started_campaign(&store, &org, 58).await;
    store.optimize().await.unwrap();
    assert_eq!(planner_rows(&store, "deliveries").await, Some(60));
    // Nothing changed: still fine to call.
    store.optimize().await.unwrap();
    assert_eq!(planner_rows(&store, "deliveries").await, Some(60));
}

/// Whether `index` exists on `table`.
async fn index_exists(store: &Store, table: &str, index: &str) -> bool {
    let sql = match store.backend() {
        Backend::Sqlite => {
            "SELECT 1 AS one FROM sqlite_master WHERE type = 'index' AND tbl_name = $1 AND name = $2"
        }
        Backend::Postgres => {
            "SELECT 1 AS one FROM pg_indexes
             WHERE schemaname = current_schema() AND tablename = $1 AND indexname = $2"
        }
    };
    sqlx::query(sql)
        .bind(table)
        .bind(index)
        .fetch_optional(testing::pool(store))
        .await
        .unwrap()
        .is_some()
}

/// The plan of `sql` with `binds` as one text: SQLite's EXPLAIN QUERY PLAN details, or
/// PostgreSQL's EXPLAIN with sequential scans discouraged (tables this small would otherwise
/// be read whole, whatever the indexes).
async fn plan(store: &Store, sql: &str, binds: &[&str]) -> String {
    let mut conn = testing::pool(store).acquire().await.unwrap();
    let (explain, column) = match store.backend() {
        Backend::Sqlite => ("EXPLAIN QUERY PLAN", "detail"),
        Backend::Postgres => {
            sqlx::query("SET enable_seqscan = off")
                .execute(&mut *conn)
                .await
                .unwrap();
            ("EXPLAIN", "QUERY PLAN")
        }
    };
    let text = format!("{explain} {sql}");
    let mut query = sqlx::query(sqlx::AssertSqlSafe(text));
    for bind in binds {
        query = query.bind(*bind);
    }
    let lines: Vec<String> = query
        .fetch_all(&mut *conn)
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get(column).unwrap())
        .collect();
    if store.backend() == Backend::Postgres {
        sqlx::query("RESET enable_seqscan")
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    lines.join("\n")
}

store_test!(the_hot_queries_use_the_scale_indexes);
async fn the_hot_queries_use_the_scale_indexes(store: Store) {
    assert!(index_exists(&store, "deliveries", "deliveries_progress").await);
    assert!(index_exists(&store, "devices", "devices_org_member").await);
    assert!(!index_exists(&store, "deliveries", "deliveries_campaign_status").await);

    let org = store.create_organisation("Acme").await.unwrap().id;
    let campaign = started_campaign(&store, &org, 30).await;
    store.optimize().await.unwrap();
    // The shapes of the probe (`has_unresolved_deliveries`), the progress count, the fan-out's
    // page and its device lookup.
    let probe = plan(
        &store,
        "SELECT one FROM (SELECT 1 AS one FROM deliveries
                          WHERE campaign_id = $1 AND org_id = $2 AND status = 'SENT'
                          ORDER BY seq LIMIT 1) AS first_sent
         UNION ALL
         SELECT one FROM (SELECT 1 AS one FROM deliveries
                          WHERE campaign_id = $1 AND org_id = $2 AND status = 'READ'
                          ORDER BY seq LIMIT 1) AS first_read
         UNION ALL
         SELECT one FROM (SELECT 1 AS one FROM deliveries
                          WHERE campaign_id = $1 AND org_id = $2 AND status = 'PENDING'
                          ORDER BY seq LIMIT 1) AS first_pending
         LIMIT 1",
        &[&campaign, &org],
    )
    .await;
    let count = plan(
        &store,
        "SELECT status, COUNT(*) AS n FROM deliveries
         WHERE campaign_id = $1 AND org_id = $2 GROUP BY status",
        &[&campaign, &org],
    )
    .await;
    let page = plan(
        &store,
        "SELECT id, seq FROM deliveries
         WHERE campaign_id = $1 AND org_id = $2 AND seq > 0 AND seq <= 10000
           AND status IN ('PENDING')
           AND (last_notified_step IS NULL OR last_notified_step <> $3)
         ORDER BY seq LIMIT 200",
        &[&campaign, &org, "notify"],
    )
    .await;
    let devices = plan(
        &store,
        "SELECT id FROM devices WHERE org_id = $1 AND member_id IN ($2, $3) ORDER BY id",
        &[&org, "member-1", "member-2"],
    )
    .await;
    for (name, plan) in [("probe", &probe), ("count", &count), ("page", &page)] {
        assert!(
            plan.contains("deliveries_progress"),
            "the {name} should use deliveries_progress:\n{plan}"
        );
    }
    if store.backend() == Backend::Sqlite {
        assert!(devices.contains("devices_org_member"), "{devices}");
        // Answered from the index alone, and the page in seq order without a sort.
        assert!(probe.contains("COVERING INDEX"), "{probe}");
        assert!(!probe.contains("SCAN deliveries"), "{probe}");
        assert!(count.contains("COVERING INDEX"), "{count}");
        assert!(!page.contains("TEMP B-TREE"), "{page}");
    }
    // PostgreSQL picks between devices_org_member and devices_member by its statistics (either
    // finds a page's devices directly; on tables this small it prefers the primary key for the
    // ORDER BY), so only the deliveries' plans are pinned down there.
}

store_test!(the_sqlite_log_is_bounded_and_a_checkpoint_empties_it);
async fn the_sqlite_log_is_bounded_and_a_checkpoint_empties_it(store: Store) {
    if store.backend() == Backend::Postgres {
        // Nothing to checkpoint: PostgreSQL manages its own log.
        assert!(store.checkpoint_wal().await.unwrap());
        return;
    }
    let pool = testing::pool(&store);
    let limit: i64 = sqlx::query("PRAGMA journal_size_limit")
        .fetch_one(pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(limit, 64 * 1024 * 1024);
    let file: String = sqlx::query("PRAGMA database_list")
        .fetch_one(pool)
        .await
        .unwrap()
        .try_get("file")
        .unwrap();
    let wal = format!("{file}-wal");
    let org = store.create_organisation("Acme").await.unwrap().id;
    started_campaign(&store, &org, 100).await;
    let size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert!(size() > 0, "writes go to the log first");
    assert!(store.checkpoint_wal().await.unwrap());
    assert_eq!(size(), 0);
    // The store still works, with a pooled connection's usual patience.
    started_campaign(&store, &org, 1).await;
    let timeout: i64 = sqlx::query("PRAGMA busy_timeout")
        .fetch_one(pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(timeout, 30_000);
}
