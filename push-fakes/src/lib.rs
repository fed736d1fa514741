//! Local fakes of FCM HTTP v1 (with Google's OAuth2 token endpoint) and APNs that speak the real
//! protocols, for the tests of `pidgr-push` and for the workspace's end-to-end tests, where a real
//! worker sends through them. A dev-dependency only, and the `pidgr-push-fakes` binary that runs
//! both on given ports for the benchmark (`src/bin/`).
//!
//! Each fake listens on `127.0.0.1:0`, checks what the real provider checks (signed JWTs, bearer
//! tokens, headers, payload size), answers with the provider's own status codes and error bodies,
//! and records what it received. Per device token, a test scripts the answers
//! ([`FcmBehaviour`], [`ApnsBehaviour`]) including a slow server and a reset connection; a
//! latency setting delays every answer like a provider across the network. A fake stops when
//! dropped.
//!
//! Built on hyper directly rather than axum: `ResetConnection` needs to kill the TCP connection
//! from inside a handler, and APNs must speak HTTP/2 only. Imports: no crate of ours, so the
//! verification here is independent of the client's signing code.

mod apns;
mod fcm;
mod keys;
mod server;

pub use apns::{ApnsBehaviour, ApnsReceived, FakeApns};
pub use fcm::{FakeFcm, FcmBehaviour, FcmReceived};
pub use hyper::Version;
pub use keys::{
    TEST_SERVICE_ACCOUNT_KEY_PEM, generate_apns_key, pem, test_service_account_json,
    test_service_account_public_key,
};
