//! Idempotency keys: a claim is new, then in flight, then replayed; only the claim's holder
//! (its token) may complete or release it; dead claims are taken over, kept answers expire, and
//! expired rows are purged. Times are injected, never waited for.

use chrono::{DateTime, TimeZone, Utc};
use pidgr_store::{
    ClaimToken, IDEMPOTENCY_CLAIM_TIMEOUT, IDEMPOTENCY_KEY_LIFETIME, IdempotencyClaim, Store,
    StoreError,
};

/// Now, to the millisecond the store keeps.
fn now_ms() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(Utc::now().timestamp_millis())
        .unwrap()
}

/// The token of a new claim; panics on anything else.
fn new_claim(claim: IdempotencyClaim) -> ClaimToken {
    match claim {
        IdempotencyClaim::New(token) => token,
        other => panic!("expected a new claim, got {other:?}"),
    }
}

fn assert_not_found(result: Result<(), StoreError>) {
    assert!(
        matches!(result, Err(StoreError::NotFound)),
        "expected NotFound, got {result:?}"
    );
}

store_test!(an_idempotency_key_is_new_then_in_flight_then_replayed);
async fn an_idempotency_key_is_new_then_in_flight_then_replayed(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let claim = |fingerprint: &'static str| store.claim_idempotency_key(&org.id, "k1", fingerprint);
    let token = new_claim(claim("f1").await.unwrap());
    assert_eq!(claim("f1").await.unwrap(), IdempotencyClaim::InFlight);
    assert_eq!(claim("f2").await.unwrap(), IdempotencyClaim::Mismatch);
    store
        .complete_idempotency_key(&org.id, "k1", &token, 201, r#"{"id":"c1"}"#)
        .await
        .unwrap();
    let replay = IdempotencyClaim::Replay {
        status: 201,
        response: r#"{"id":"c1"}"#.to_owned(),
    };
    assert_eq!(claim("f1").await.unwrap(), replay);
    assert_eq!(claim("f2").await.unwrap(), IdempotencyClaim::Mismatch);
    // The first response is the one kept.
    assert_not_found(
        store
            .complete_idempotency_key(&org.id, "k1", &token, 500, "later")
            .await,
    );
    // Releasing never drops a completed response.
    store
        .release_idempotency_key(&org.id, "k1", &token)
        .await
        .unwrap();
    assert_eq!(claim("f1").await.unwrap(), replay);
}

store_test!(a_released_idempotency_key_can_be_claimed_again);
async fn a_released_idempotency_key_can_be_claimed_again(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let token = new_claim(
        store
            .claim_idempotency_key(&org.id, "k", "f1")
            .await
            .unwrap(),
    );
    store
        .release_idempotency_key(&org.id, "k", &token)
        .await
        .unwrap();
    assert_not_found(
        store
            .complete_idempotency_key(&org.id, "k", &token, 201, "{}")
            .await,
    );
    // Released, the key is free for any request, even a different one.
    let second = new_claim(
        store
            .claim_idempotency_key(&org.id, "k", "f2")
            .await
            .unwrap(),
    );
    assert_ne!(second, token, "every claim has a token of its own");
    // Releasing a key nobody holds is harmless.
    store
        .release_idempotency_key(&org.id, "never", &token)
        .await
        .unwrap();
}

store_test!(idempotency_keys_belong_to_one_organisation);
async fn idempotency_keys_belong_to_one_organisation(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap();
    let other = store.create_organisation("Other").await.unwrap();
    let token = new_claim(
        store
            .claim_idempotency_key(&org.id, "k", "f")
            .await
            .unwrap(),
    );
    assert_not_found(
        store
            .complete_idempotency_key(&other.id, "k", &token, 201, "{}")
            .await,
    );
    store
        .release_idempotency_key(&other.id, "k", &token)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_idempotency_key(&org.id, "k", "f")
            .await
            .unwrap(),
        IdempotencyClaim::InFlight,
        "another organisation's release must not free this organisation's key"
    );
    new_claim(
        store
            .claim_idempotency_key(&other.id, "k", "other")
            .await
            .unwrap(),
    );
}

store_test!(a_request_whose_claim_was_taken_over_can_neither_complete_nor_release_it);
async fn a_request_whose_claim_was_taken_over_can_neither_complete_nor_release_it(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let t0 = now_ms();
    let slow = new_claim(
        store
            .claim_idempotency_key_at(&org, "k", "f", t0)
            .await
            .unwrap(),
    );
    // The slow request is still running when a retry takes its claim over.
    let later = t0 + IDEMPOTENCY_CLAIM_TIMEOUT + chrono::TimeDelta::milliseconds(1);
    let retry = new_claim(
        store
            .claim_idempotency_key_at(&org, "k", "f", later)
            .await
            .unwrap(),
    );
    // The slow request finishes: its answer is not kept, and its release frees nothing.
    assert_not_found(
        store
            .complete_idempotency_key(&org, "k", &slow, 201, r#"{"id":"slow"}"#)
            .await,
    );
    store
        .release_idempotency_key(&org, "k", &slow)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_idempotency_key_at(&org, "k", "f", later)
            .await
            .unwrap(),
        IdempotencyClaim::InFlight,
        "the retry's claim survives the slow request's release"
    );
    // The retry's answer is the one kept.
    store
        .complete_idempotency_key(&org, "k", &retry, 201, r#"{"id":"retry"}"#)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_idempotency_key_at(&org, "k", "f", later)
            .await
            .unwrap(),
        IdempotencyClaim::Replay {
            status: 201,
            response: r#"{"id":"retry"}"#.to_owned(),
        }
    );
}

store_test!(a_claim_whose_request_died_is_taken_over_after_the_claim_timeout);
async fn a_claim_whose_request_died_is_taken_over_after_the_claim_timeout(store: Store) {
    let org = store.create_organisation("Acme").await.unwrap().id;
    let t0 = now_ms();
    let claim = |fingerprint: &'static str, at: DateTime<Utc>| {
        store.claim_idempotency_key_at(&org, "k", fingerprint, at)
    };
    new_claim(claim("f1", t0).await.unwrap());
    // The request that claimed it never answers (its process died).
    let just_before = t0 + IDEMPOTENCY_CLAIM_TIMEOUT;
    assert_eq!(
        claim("f1", just_before).await.unwrap(),
        IdempotencyClaim::InFlight
    );
    let after = just_before + chrono::TimeDelta::milliseconds(1);
    let token = new_claim(claim("f1", after).await.unwrap());
    // Taken over once: the next retry sees the new claim in flight, not a free key.
    assert_eq!(
        claim("f1", after).await.unwrap(),
        IdempotencyClaim::InFlight
    );
    store
        .complete_idempotency_key(&org, "k", &token, 201, r#"{"id":"c1"}"#)
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
    let token = new_claim(
        store
            .claim_idempotency_key_at(&org, "k", "f1", t0)
            .await
            .unwrap(),
    );
    store
        .complete_idempotency_key(&org, "k", &token, 201, "{}")
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
    new_claim(
        store
            .claim_idempotency_key_at(&org, "k", "f2", expired)
            .await
            .unwrap(),
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
        let token = new_claim(
            store
                .claim_idempotency_key_at(&org, key, "f", claimed)
                .await
                .unwrap(),
        );
        if completed {
            store
                .complete_idempotency_key(&org, key, &token, 201, r#"{"member":"ada@acme.test"}"#)
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
    // A claim hours old is dead and taken over.
    new_claim(claim("recent-claim").await.unwrap());
    new_claim(claim("old-answer").await.unwrap());
    new_claim(claim("old-dead-claim").await.unwrap());
}

#[test]
fn a_replayed_response_is_not_shown_in_debug_output() {
    let claim = IdempotencyClaim::Replay {
        status: 201,
        response: r#"{"secret":"pidgr_abc"}"#.to_owned(),
    };
    let debug = format!("{claim:?}");
    assert!(debug.contains("201"), "{debug}");
    assert!(!debug.contains("pidgr_abc"), "{debug}");
}
