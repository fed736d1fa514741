//! The Temporal payload codec: every payload the API and the worker hand to Temporal (workflow
//! and activity inputs and results, signals, queries, heartbeat details, failure details) is
//! encrypted here first, so Temporal's store and anyone reading histories (the Web UI, `temporal
//! workflow show`) see only ciphertext. The codec server (the API's `/codec` routes) runs the
//! same codec for operators who are allowed to read payloads in clear.
//!
//! An encoded payload is Temporal's convention for encryption codecs: metadata `encoding:
//! binary/encrypted` and `encryption-key-id: <id>`, and as data the protobuf encoding of the
//! original payload (metadata and data), sealed with XChaCha20-Poly1305 under the key of that
//! id: a random 24-byte nonce followed by the ciphertext and tag. The associated data binds the
//! format and the key id, so a payload relabelled with another key id does not open.
//!
//! Keys come from the caller (the binary derives them from the server's secret key with
//! [`KEY_PURPOSE`]); the current key encrypts, previous ones only decrypt, so the secret key
//! can be rotated while histories written under the old one are still read.
//!
//! Payloads without codec metadata pass through decoding unchanged: histories written before
//! the codec existed (and the recorded replay fixture) still replay.
//!
//! May import: the Temporal SDK's common types and crypto crates. Reads no environment.

use std::fmt;
use std::sync::Arc;

use chacha20poly1305::aead::{Aead, KeyInit, Payload as AeadPayload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use prost::Message;
use rand::RngCore;
use temporalio_common::data_converters::{
    PayloadCodec, PayloadConversionError, SerializationContextData,
};
use temporalio_common::protos::temporal::api::common::v1::Payload;

pub mod wire;

/// The derivation label of the codec's key: callers derive it from the server's secret key
/// with this purpose, so it is never the key that seals stored secrets.
pub const KEY_PURPOSE: &str = "pidgr/temporal-payload-codec/v1";
/// Temporal's metadata key for a payload's encoding.
pub const ENCODING_KEY: &str = "encoding";
/// The encoding of an encrypted payload (the name Temporal's samples and tools use).
pub const ENCRYPTED_ENCODING: &str = "binary/encrypted";
/// The metadata key naming the key a payload was encrypted with.
pub const KEY_ID_KEY: &str = "encryption-key-id";

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const AAD_PREFIX: &str = "pidgr/temporal-payload/v1|";

/// Why a payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Encrypted under a key this process does not hold (rotated away, or another server's).
    #[error("the payload was encrypted with key {0:?}, which is not among the configured keys")]
    UnknownKey(String),
    /// Marked as encrypted but not openable: altered, truncated or mislabelled.
    #[error("an encrypted payload is corrupt: {0}")]
    Corrupt(&'static str),
    #[error("a payload could not be encrypted")]
    Encrypt,
}

/// A 32-byte payload key and the id written beside what it encrypts. The key's bytes never
/// appear in Debug output.
#[derive(Clone)]
pub struct CodecKey {
    id: String,
    key: [u8; 32],
}

impl CodecKey {
    pub fn new(id: impl Into<String>, key: [u8; 32]) -> Self {
        CodecKey { id: id.into(), key }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.key))
    }

    fn associated_data(id: &str) -> Vec<u8> {
        format!("{AAD_PREFIX}{id}").into_bytes()
    }
}

impl fmt::Debug for CodecKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CodecKey({})", self.id)
    }
}

/// The payload codec: encrypts with the current key, decrypts with whichever configured key
/// the payload names. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PayloadCipher {
    /// The current key first, then previous ones.
    keys: Arc<[CodecKey]>,
}

impl PayloadCipher {
    pub fn new(current: CodecKey, previous: impl IntoIterator<Item = CodecKey>) -> Self {
        let keys: Vec<CodecKey> = std::iter::once(current).chain(previous).collect();
        PayloadCipher { keys: keys.into() }
    }

    /// The id of the key new payloads are encrypted with.
    pub fn current_key_id(&self) -> &str {
        self.keys[0].id()
    }

    /// Whether `payload` carries the encrypted encoding.
    pub fn is_encrypted(payload: &Payload) -> bool {
        payload.metadata.get(ENCODING_KEY).map(Vec::as_slice) == Some(ENCRYPTED_ENCODING.as_bytes())
    }

    /// The whole payload (metadata and data) sealed under the current key.
    pub fn encrypt(&self, payload: &Payload) -> Result<Payload, CodecError> {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = key
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                AeadPayload {
                    msg: &payload.encode_to_vec(),
                    aad: &CodecKey::associated_data(&key.id),
                },
            )
            .map_err(|_| CodecError::Encrypt)?;
        let mut data = Vec::with_capacity(NONCE_LEN + sealed.len());
        data.extend_from_slice(&nonce);
        data.extend_from_slice(&sealed);
        Ok(Payload {
            metadata: [
                (
                    ENCODING_KEY.to_owned(),
                    ENCRYPTED_ENCODING.as_bytes().to_vec(),
                ),
                (KEY_ID_KEY.to_owned(), key.id.as_bytes().to_vec()),
            ]
            .into_iter()
            .collect(),
            data,
            ..Default::default()
        })
    }

    /// The original payload of an encrypted one; a payload without the encrypted encoding is
    /// returned as it is (it was never encoded by this codec).
    pub fn decrypt(&self, payload: Payload) -> Result<Payload, CodecError> {
        if !Self::is_encrypted(&payload) {
            return Ok(payload);
        }
        let id = payload
            .metadata
            .get(KEY_ID_KEY)
            .ok_or(CodecError::Corrupt("it names no key id"))?;
        let id =
            std::str::from_utf8(id).map_err(|_| CodecError::Corrupt("its key id is not text"))?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| CodecError::UnknownKey(id.to_owned()))?;
        if payload.data.len() < NONCE_LEN + TAG_LEN {
            return Err(CodecError::Corrupt("it is too short to be sealed data"));
        }
        let (nonce, sealed) = payload.data.split_at(NONCE_LEN);
        let plain = key
            .cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                AeadPayload {
                    msg: sealed,
                    aad: &CodecKey::associated_data(id),
                },
            )
            .map_err(|_| CodecError::Corrupt("it does not verify (altered, or relabelled)"))?;
        Payload::decode(plain.as_slice())
            .map_err(|_| CodecError::Corrupt("it decrypted to something that is not a payload"))
    }

    pub fn encrypt_all(&self, payloads: &[Payload]) -> Result<Vec<Payload>, CodecError> {
        payloads.iter().map(|p| self.encrypt(p)).collect()
    }

    pub fn decrypt_all(&self, payloads: Vec<Payload>) -> Result<Vec<Payload>, CodecError> {
        payloads.into_iter().map(|p| self.decrypt(p)).collect()
    }
}

/// The SDK's view of a codec failure; the [`CodecError`] stays inside, so a caller holding only
/// the SDK's error (the codec server, through the Temporal client's data converter) can still
/// tell an unknown key from a corrupt payload.
fn conversion_error(error: CodecError) -> PayloadConversionError {
    PayloadConversionError::EncodingError(Box::new(error))
}

/// The [`CodecError`] inside an SDK codec error, if the codec was this one.
pub fn codec_error(error: &PayloadConversionError) -> Option<&CodecError> {
    match error {
        PayloadConversionError::EncodingError(inner) => inner.downcast_ref::<CodecError>(),
        _ => None,
    }
}

impl PayloadCodec for PayloadCipher {
    fn encode(
        &self,
        _: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        let result = self.encrypt_all(&payloads).map_err(conversion_error);
        async move { result }.boxed()
    }

    fn decode(
        &self,
        _: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        let result = self.decrypt_all(payloads).map_err(conversion_error);
        async move { result }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_payload(value: &str) -> Payload {
        Payload {
            metadata: [("encoding".to_owned(), b"json/plain".to_vec())]
                .into_iter()
                .collect(),
            data: value.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    fn key(id: &str, byte: u8) -> CodecKey {
        CodecKey::new(id, [byte; 32])
    }

    #[test]
    fn an_encrypted_payload_decrypts_to_the_original() {
        let cipher = PayloadCipher::new(key("k1", 1), []);
        let original = json_payload(r#"{"name":"Drill November"}"#);
        let encrypted = cipher.encrypt(&original).unwrap();
        assert_ne!(encrypted, original);
        assert_eq!(cipher.decrypt(encrypted).unwrap(), original);
    }

    #[test]
    fn an_encrypted_payload_shows_nothing_of_the_original_and_names_its_key() {
        let cipher = PayloadCipher::new(key("k1", 1), []);
        let encrypted = cipher.encrypt(&json_payload("Drill November")).unwrap();
        assert_eq!(
            encrypted.metadata.get(ENCODING_KEY).map(Vec::as_slice),
            Some(b"binary/encrypted".as_slice())
        );
        assert_eq!(
            encrypted.metadata.get(KEY_ID_KEY).map(Vec::as_slice),
            Some(b"k1".as_slice())
        );
        assert_eq!(
            encrypted.metadata.len(),
            2,
            "only the codec's metadata shows"
        );
        let data = String::from_utf8_lossy(&encrypted.data);
        assert!(!data.contains("Drill"), "{data}");
        assert!(!data.contains("json/plain"), "{data}");
        // A fresh nonce each time: equal payloads do not encrypt alike.
        let again = cipher.encrypt(&json_payload("Drill November")).unwrap();
        assert_ne!(encrypted.data, again.data);
    }

    #[test]
    fn payloads_the_codec_did_not_encode_pass_through_unchanged() {
        // Histories from before the codec (the recorded replay fixture among them) carry plain
        // json/plain payloads; decoding leaves them alone so they still replay.
        let cipher = PayloadCipher::new(key("k1", 1), []);
        let plain = json_payload(r#"{"a":1}"#);
        assert_eq!(cipher.decrypt(plain.clone()).unwrap(), plain);
        let bare = Payload::default();
        assert_eq!(cipher.decrypt(bare.clone()).unwrap(), bare);
    }

    #[test]
    fn a_previous_key_still_decrypts_what_it_encrypted() {
        let old = PayloadCipher::new(key("old", 1), []);
        let encrypted = old.encrypt(&json_payload("before rotation")).unwrap();
        let rotated = PayloadCipher::new(key("new", 2), [key("old", 1)]);
        assert_eq!(
            rotated.decrypt(encrypted).unwrap(),
            json_payload("before rotation")
        );
        // New payloads use the current key.
        let fresh = rotated.encrypt(&json_payload("after")).unwrap();
        assert_eq!(fresh.metadata[KEY_ID_KEY], b"new");
        assert_eq!(rotated.current_key_id(), "new");
    }

    #[test]
    fn a_payload_of_an_unknown_key_is_an_unknown_key_error() {
        let other = PayloadCipher::new(key("other", 3), []);
        let encrypted = other.encrypt(&json_payload("x")).unwrap();
        let cipher = PayloadCipher::new(key("k1", 1), []);
        assert!(
            matches!(cipher.decrypt(encrypted), Err(CodecError::UnknownKey(id)) if id == "other")
        );
    }

    #[test]
    fn tampered_ciphertext_is_an_error() {
        let cipher = PayloadCipher::new(key("k1", 1), []);
        let encrypted = cipher.encrypt(&json_payload("x")).unwrap();
        for position in [0, NONCE_LEN, encrypted.data.len() - 1] {
            let mut tampered = encrypted.clone();
            tampered.data[position] ^= 1;
            assert!(
                matches!(cipher.decrypt(tampered), Err(CodecError::Corrupt(_))),
                "byte {position}"
            );
        }
        let mut truncated = encrypted.clone();
        truncated.data.truncate(NONCE_LEN + TAG_LEN - 1);
        assert!(matches!(
            cipher.decrypt(truncated),
            Err(CodecError::Corrupt(_))
        ));
        let mut no_key_id = encrypted.clone();
        no_key_id.metadata.remove(KEY_ID_KEY);
        assert!(matches!(
            cipher.decrypt(no_key_id),
            Err(CodecError::Corrupt(_))
        ));
    }

    #[test]
    fn a_payload_relabelled_with_another_known_key_id_does_not_open() {
        // Both keys are the same bytes: only the key id, bound as associated data, differs.
        let cipher = PayloadCipher::new(key("a", 1), [key("b", 1)]);
        let mut encrypted = cipher.encrypt(&json_payload("x")).unwrap();
        encrypted
            .metadata
            .insert(KEY_ID_KEY.to_owned(), b"b".to_vec());
        assert!(matches!(
            cipher.decrypt(encrypted),
            Err(CodecError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn the_sdk_codec_round_trips_and_reports_which_failure_it_was() {
        let cipher = PayloadCipher::new(key("k1", 1), []);
        let context = SerializationContextData::Workflow(
            temporalio_common::data_converters::WorkflowSerializationContext::new(),
        );
        let payloads = vec![json_payload("1"), json_payload("2")];
        let encoded = cipher.encode(&context, payloads.clone()).await.unwrap();
        assert!(encoded.iter().all(PayloadCipher::is_encrypted));
        assert_eq!(cipher.decode(&context, encoded).await.unwrap(), payloads);

        let foreign = PayloadCipher::new(key("other", 2), [])
            .encode(&context, vec![json_payload("3")])
            .await
            .unwrap();
        let error = cipher.decode(&context, foreign).await.unwrap_err();
        assert!(matches!(
            codec_error(&error),
            Some(CodecError::UnknownKey(_))
        ));
    }
}
