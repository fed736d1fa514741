//! Idempotency keys that outlive their request: dead claims are taken over, kept answers
//! expire, and expired rows are purged. Times are injected, never waited for.

use chrono::{DateTime, TimeZone, Utc};
use pidgr_store::{IDEMPOTENCY_CLAIM_TIMEOUT, IDEMPOTENCY_KEY_LIFETIME, IdempotencyClaim, Store};

/// Now, to the millisecond the store keeps.
fn now_ms() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(Utc::now().timestamp_millis())
        .unwrap()
}

store_test!(a_claim_whose_request_died_is_taken_over_after_the_claim_timeout);
async fn a_claim_whose_request_died_is_taken_over_after_the_claim_timeout(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let t0 = now_ms();
    let claim = |fingerprint: &'static str, at: DateTime<Utc>| {
        store.claim_idempotency_key_at(&org, "k", fingerprint, at)
    };
    assert_eq!(claim("f1", t0).await.unwrap(), IdempotencyClaim::New);
    // The request that claimed it never answers (its process died).
    let just_before = t0 + IDEMPOTENCY_CLAIM_TIMEOUT;
    assert_eq!(
        claim("f1", just_before).await.unwrap(),
        IdempotencyClaim::InFlight
    );
    let after = just_before + chrono::TimeDelta::milliseconds(1);
    assert_eq!(claim("f1", after).await.unwrap(), IdempotencyClaim::New);
    // Taken over once: the next retry sees the new claim in flight, not a free key.
    assert_eq!(
        claim("f1", after).await.unwrap(),
        IdempotencyClaim::InFlight
    );
    store
        .complete_idempotency_key(&org, "k", 201, r#"{"id":"c1"}"#)
        .await
        .unwrap();
    // A completed answer is not a dead claim: it is replayed long after the claim timeout.
    let replay = IdempotencyClaim::Replay {
        status: 201,
        response: r#"{"id":"c1"}"#.to_owned(),
    };
    assert_eq!(
        claim("f1", after + IDEMPOTENCY_CLAIM_TIMEOUT * 10)
            .await
            .unwrap(),
        replay
    );
    assert_eq!(
        claim("f2", after + IDEMPOTENCY_CLAIM_TIMEOUT * 10)
            .await
            .unwrap(),
        IdempotencyClaim::Mismatch
    );
}

store_test!(a_kept_answer_expires_after_its_lifetime_and_the_key_is_new_again);
async fn a_kept_answer_expires_after_its_lifetime_and_the_key_is_new_again(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let t0 = now_ms();
    assert_eq!(
        store
            .claim_idempotency_key_at(&org, "k", "f1", t0)
            .await
            .unwrap(),
        IdempotencyClaim::New
    );
    store
        .complete_idempotency_key(&org, "k", 201, "{}")
        .await
        .unwrap();
    let last_moment = t0 + IDEMPOTENCY_KEY_LIFETIME;
    assert!(matches!(
        store
            .claim_idempotency_key_at(&org, "k", "f1", last_moment)
            .await
            .unwrap(),
        IdempotencyClaim::Replay { status: 201, .. }
    ));
    // After 24 hours the same key is a new request, even with another body.
    let expired = last_moment + chrono::TimeDelta::milliseconds(1);
    assert_eq!(
        store
            .claim_idempotency_key_at(&org, "k", "f2", expired)
            .await
            .unwrap(),
        IdempotencyClaim::New
    );
}

store_test!(expired_idempotency_keys_are_purged_and_live_ones_kept);
async fn expired_idempotency_keys_are_purged_and_live_ones_kept(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let t0 = now_ms();
    let hour = chrono::TimeDelta::hours(1);
    for (key, claimed, completed) in [
        ("old-answer", t0, true),
        ("old-dead-claim", t0, false),
        ("recent-answer", t0 + hour * 2, true),
        ("recent-claim", t0 + hour * 2, false),
    ] {
        store
            .claim_idempotency_key_at(&org, key, "f", claimed)
            .await
            .unwrap();
        if completed {
            store
                .complete_idempotency_key(&org, key, 201, r#"{"member":"ada@acme.test"}"#)
                .await
                .unwrap();
        }
    }
    let purge_at = t0 + IDEMPOTENCY_KEY_LIFETIME + hour;
    assert_eq!(store.purge_idempotency_keys_at(purge_at).await.unwrap(), 2);
    assert_eq!(store.purge_idempotency_keys_at(purge_at).await.unwrap(), 0);
    // The purged keys are gone (free again); the others are untouched.
    let claim = |key: &'static str| store.claim_idempotency_key_at(&org, key, "f", purge_at);
    assert!(matches!(
        claim("recent-answer").await.unwrap(),
        IdempotencyClaim::Replay { .. }
    ));
    assert_eq!(
        claim("recent-claim").await.unwrap(),
        IdempotencyClaim::New,
        "a claim hours old is dead and taken over"
    );
    assert_eq!(claim("old-answer").await.unwrap(), IdempotencyClaim::New);
    assert_eq!(
        claim("old-dead-claim").await.unwrap(),
        IdempotencyClaim::New
    );
}
