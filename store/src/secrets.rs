//! Encryption at rest for secrets the server needs back in clear (the webhook channel's signing
//! secret, push credentials, CALL_WEBHOOK header values): hashing would not do, since the server
//! signs or sends with them.
//!
//! XChaCha20-Poly1305 with a random 24-byte nonce per seal: nonces that large can be drawn at
//! random without any realistic risk of reuse, so no counter has to be kept anywhere.
//!
//! Three formats:
//! - `v3:<key id>:<hex>` (what is written now): the associated data binds the organisation, the
//!   table, the column and the row (`v3|org|table|column|row`), so a ciphertext copied into
//!   another organisation's row, into another kind of secret, or into another row of the same
//!   table (one push provider's credentials into another's, one header secret into another's
//!   row) does not open; the key id names the server key that sealed it, so a [`Keyring`] can
//!   hold the current key and previous ones while `pidgr secrets rotate-key` re-seals
//!   everything.
//! - `v2:<key id>:<hex>` (written before rows were bound): `org|table|column` only; still
//!   opened, and re-sealed as `v3` by a rotation.
//! - `v1:<hex>` (written before key ids existed): bound to the organisation only, opened with
//!   whichever configured key fits, and re-sealed as `v3` by a rotation.

use crate::{Result, Store, StoreError};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;

const V1_PREFIX: &str = "v1:";
const V2_PREFIX: &str = "v2:";
const V3_PREFIX: &str = "v3:";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The derivation label of the key id: the id is a digest of a derived value, never of the key.
const KEY_ID_PURPOSE: &str = "pidgr/secret-key-id/v1";

/// The server's 32-byte key for secrets at rest. Its bytes never appear in Debug output.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// Reads a key written as 64 hexadecimal characters (what [`SecretKey::to_hex`] writes).
    pub fn from_hex(s: &str) -> Result<Self> {
        // The message never repeats the input: it may be a real key with a typo.
        let invalid = || {
            StoreError::Config(
                "the secret key must be 64 hexadecimal characters (32 bytes)".to_owned(),
            )
        };
        let bytes = hex::decode(s.trim()).map_err(|_| invalid())?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| invalid())?;
        Ok(SecretKey(bytes))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        SecretKey(bytes)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A 32-byte key for one `purpose` (HMAC-SHA256 of the label under this key), so each use
    /// of the server key (sealing, payload encryption, key ids…) gets a key of its own.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any size");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// 8 hexadecimal characters naming this key in what it sealed; it reveals nothing of the
    /// key (a digest of a derived value).
    pub fn key_id(&self) -> String {
        let digest = Sha256::digest(self.derive(KEY_ID_PURPOSE));
        hex::encode(&digest[..4])
    }

    /// The `v1` format as it was written before key ids (bound to the organisation only), so
    /// tests can store what older servers wrote.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn seal_v1(&self, org_id: &str, plaintext: &str) -> String {
        format!("{V1_PREFIX}{}", self.encrypt(org_id, plaintext).unwrap())
    }

    /// The `v2` format as it was written before rows were bound, so tests can store what
    /// older servers wrote.
    #[cfg(test)]
    pub(crate) fn seal_v2(&self, org_id: &str, slot: SecretSlot, plaintext: &str) -> String {
        let sealed = self
            .encrypt(&v2_associated(org_id, slot), plaintext)
            .unwrap();
        format!("{V2_PREFIX}{}:{sealed}", self.key_id())
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.0))
    }

    /// hex(nonce || ciphertext and tag).
    fn encrypt(&self, associated: &str, plaintext: &str) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: associated.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Config("a secret could not be encrypted".to_owned()))?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(hex::encode(sealed))
    }

    /// `None` when the tag does not verify (altered, other associated data, other key).
    fn decrypt(&self, associated: &str, bytes: &[u8]) -> Option<Vec<u8>> {
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: associated.as_bytes(),
                },
            )
            .ok()
    }
}

/// Where a sealed value is stored: its table and column are part of what it is bound to (and,
/// in the `v3` format, the row: see each caller's `row` argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SecretSlot {
    pub(crate) table: &'static str,
    pub(crate) column: &'static str,
}

pub(crate) const WEBHOOK_CHANNEL_SECRET: SecretSlot = SecretSlot {
    table: "webhook_channels",
    column: "secret_ciphertext",
};
/// The webhook channel's secret before its last rotation (Standard Webhooks' overlap).
pub(crate) const WEBHOOK_CHANNEL_PREVIOUS_SECRET: SecretSlot = SecretSlot {
    table: "webhook_channels",
    column: "previous_secret_ciphertext",
};
pub(crate) const PUSH_CREDENTIALS_SECRET: SecretSlot = SecretSlot {
    table: "push_credentials",
    column: "sealed",
};
pub(crate) const WEBHOOK_HEADER_SECRET: SecretSlot = SecretSlot {
    table: "webhook_header_secrets",
    column: "sealed",
};
/// An organisation's Ed25519 key for signing audit exports (PKCS#8, hex).
pub(crate) const SIGNING_KEY_SECRET: SecretSlot = SecretSlot {
    table: "signing_keys",
    column: "private_key_sealed",
};

/// The keys the server holds: the current one, which seals, and previous ones, accepted for
/// opening only while a rotation re-seals what they sealed.
#[derive(Clone, Debug)]
pub struct Keyring {
    current: SecretKey,
    previous: Vec<SecretKey>,
}

impl Keyring {
    pub fn new(current: SecretKey, previous: Vec<SecretKey>) -> Self {
        Keyring { current, previous }
    }

    pub fn current(&self) -> &SecretKey {
        &self.current
    }

    fn keys(&self) -> impl Iterator<Item = &SecretKey> {
        std::iter::once(&self.current).chain(&self.previous)
    }

    /// `v3:<current key id>:<hex>`, bound to `org_id`, `slot` and `row` (what identifies the
    /// row within the organisation's part of the table: a provider, a secret's id and owner…).
    pub(crate) fn seal(
        &self,
        org_id: &str,
        slot: SecretSlot,
        row: &str,
        plaintext: &str,
    ) -> Result<String> {
        let sealed = self
            .current
            .encrypt(&v3_associated(org_id, slot, row), plaintext)?;
        Ok(format!("{V3_PREFIX}{}:{sealed}", self.current.key_id()))
    }

    /// Whether `sealed` is already in the current format under the current key.
    pub(crate) fn is_current(&self, sealed: &str) -> bool {
        sealed
            .strip_prefix(V3_PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(id, _)| id == self.current.key_id())
    }

    /// Opens any format (`row` matters to `v3` only). `Corrupt` when the text was altered or
    /// belongs to another organisation, slot or row; `Config` when it was sealed under a key
    /// this server does not hold.
    pub(crate) fn open(
        &self,
        org_id: &str,
        slot: SecretSlot,
        row: &str,
        sealed: &str,
    ) -> Result<String> {
        let keyed = |rest: &str, associated: String| -> Result<Vec<u8>> {
            let (key_id, hex_text) = rest
                .split_once(':')
                .ok_or_else(|| corrupt("has no key id"))?;
            let key = self.keys().find(|k| k.key_id() == key_id).ok_or_else(|| {
                StoreError::Config(format!(
                    "a stored secret was sealed with the server key {key_id:?}, which is neither \
                     the current key nor one of the previous keys configured"
                ))
            })?;
            key.decrypt(&associated, &sealed_bytes(hex_text)?)
                .ok_or_else(|| {
                    corrupt(
                        "could not be decrypted: it was altered, or belongs to another \
                         organisation, another kind of secret or another row",
                    )
                })
        };
        let plaintext = if let Some(rest) = sealed.strip_prefix(V3_PREFIX) {
            keyed(rest, v3_associated(org_id, slot, row))?
        } else if let Some(rest) = sealed.strip_prefix(V2_PREFIX) {
            keyed(rest, v2_associated(org_id, slot))?
        } else if let Some(hex_text) = sealed.strip_prefix(V1_PREFIX) {
            // The old format carries no key id: any configured key that opens it is the one.
            let bytes = sealed_bytes(hex_text)?;
            self.keys()
                .find_map(|key| key.decrypt(org_id, &bytes))
                .ok_or_else(|| {
                    corrupt(
                        "could not be decrypted: it was altered, belongs to another \
                         organisation, or was sealed with a server key that is not configured",
                    )
                })?
        } else {
            return Err(corrupt("is not in a known sealed format"));
        };
        String::from_utf8(plaintext).map_err(|_| corrupt("decrypted to something that is not text"))
    }
}

/// The row comes last, so a `|` inside it cannot be mistaken for another field's boundary.
fn v3_associated(org_id: &str, slot: SecretSlot, row: &str) -> String {
    format!("v3|{org_id}|{}|{}|{row}", slot.table, slot.column)
}

fn v2_associated(org_id: &str, slot: SecretSlot) -> String {
    format!("{org_id}|{}|{}", slot.table, slot.column)
}

fn corrupt(why: &str) -> StoreError {
    StoreError::Corrupt(format!("a stored secret {why}"))
}

fn sealed_bytes(hex_text: &str) -> Result<Vec<u8>> {
    let bytes = hex::decode(hex_text).map_err(|_| corrupt("is not valid hexadecimal"))?;
    if bytes.len() < NONCE_LEN + TAG_LEN {
        return Err(corrupt("is too short to be sealed data"));
    }
    Ok(bytes)
}

impl Store {
    /// This store, sealing and opening secrets with `key` alone.
    pub fn with_secret_key(self, key: SecretKey) -> Self {
        self.with_keyring(Keyring::new(key, Vec::new()))
    }

    /// This store, sealing with the keyring's current key and opening with any of its keys.
    pub fn with_keyring(mut self, keyring: Keyring) -> Self {
        self.secrets = Some(std::sync::Arc::new(keyring));
        self
    }

    pub(crate) fn keyring(&self) -> Result<&Keyring> {
        self.secrets.as_deref().ok_or_else(|| {
            StoreError::Config(
                "no secret key is configured, so secrets cannot be stored or read".to_owned(),
            )
        })
    }

    /// Encrypts `plaintext` for `org_id`'s `slot` and `row` with the current key.
    pub(crate) fn seal(
        &self,
        org_id: &str,
        slot: SecretSlot,
        row: &str,
        plaintext: &str,
    ) -> Result<String> {
        self.keyring()?.seal(org_id, slot, row, plaintext)
    }

    /// Decrypts what [`Store::seal`] (or an older format) wrote for `org_id`'s `slot` and `row`.
    pub(crate) fn open(
        &self,
        org_id: &str,
        slot: SecretSlot,
        row: &str,
        sealed: &str,
    ) -> Result<String> {
        self.keyring()?.open(org_id, slot, row, sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_values_still_open_with_the_key_that_sealed_them_current_or_previous() {
        let old = SecretKey::generate();
        let sealed = old.seal_v1("org-1", "whsec_x");
        let same = Keyring::new(old.clone(), vec![]);
        assert_eq!(
            same.open("org-1", WEBHOOK_CHANNEL_SECRET, "org-1", &sealed)
                .unwrap(),
            "whsec_x"
        );
        let rotated = Keyring::new(SecretKey::generate(), vec![old]);
        assert_eq!(
            rotated
                .open("org-1", PUSH_CREDENTIALS_SECRET, "fcm", &sealed)
                .unwrap(),
            "whsec_x"
        );
        assert!(!rotated.is_current(&sealed));
        assert!(matches!(
            same.open("org-2", WEBHOOK_CHANNEL_SECRET, "org-2", &sealed),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn v3_values_open_only_in_their_organisation_table_column_and_row() {
        let ring = Keyring::new(SecretKey::generate(), vec![]);
        let sealed = ring
            .seal("org-1", WEBHOOK_HEADER_SECRET, "id-1|def-1", "Bearer t")
            .unwrap();
        assert!(sealed.starts_with(&format!("v3:{}:", ring.current().key_id())));
        assert!(ring.is_current(&sealed));
        assert_eq!(
            ring.open("org-1", WEBHOOK_HEADER_SECRET, "id-1|def-1", &sealed)
                .unwrap(),
            "Bearer t"
        );
        for (org, slot, row) in [
            ("org-2", WEBHOOK_HEADER_SECRET, "id-1|def-1"),
            ("org-1", WEBHOOK_CHANNEL_SECRET, "id-1|def-1"),
            ("org-1", PUSH_CREDENTIALS_SECRET, "id-1|def-1"),
            // Another row of the same table, or the same row claimed by another owner.
            ("org-1", WEBHOOK_HEADER_SECRET, "id-2|def-1"),
            ("org-1", WEBHOOK_HEADER_SECRET, "id-1|def-2"),
            ("org-1", WEBHOOK_HEADER_SECRET, "id-1|"),
        ] {
            assert!(
                matches!(
                    ring.open(org, slot, row, &sealed),
                    Err(StoreError::Corrupt(_))
                ),
                "{org} {slot:?} {row}"
            );
        }
    }

    #[test]
    fn v2_values_still_open_in_any_row_of_their_slot_and_are_not_current() {
        let key = SecretKey::generate();
        let sealed = key.seal_v2("org-1", PUSH_CREDENTIALS_SECRET, "apns-key");
        let ring = Keyring::new(key, vec![]);
        assert!(!ring.is_current(&sealed));
        assert_eq!(
            ring.open("org-1", PUSH_CREDENTIALS_SECRET, "apns", &sealed)
                .unwrap(),
            "apns-key"
        );
        assert!(matches!(
            ring.open("org-1", WEBHOOK_CHANNEL_SECRET, "org-1", &sealed),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn a_value_sealed_under_an_unknown_key_id_is_a_configuration_error() {
        let sealer = Keyring::new(SecretKey::generate(), vec![]);
        let sealed = sealer
            .seal("org-1", WEBHOOK_HEADER_SECRET, "r", "x")
            .unwrap();
        let other = Keyring::new(SecretKey::generate(), vec![]);
        assert!(matches!(
            other.open("org-1", WEBHOOK_HEADER_SECRET, "r", &sealed),
            Err(StoreError::Config(_))
        ));
        let with_previous = Keyring::new(SecretKey::generate(), vec![sealer.current().clone()]);
        assert_eq!(
            with_previous
                .open("org-1", WEBHOOK_HEADER_SECRET, "r", &sealed)
                .unwrap(),
            "x"
        );
    }

    #[test]
    fn an_altered_value_does_not_open() {
        let ring = Keyring::new(SecretKey::generate(), vec![]);
        let sealed = ring.seal("org-1", WEBHOOK_HEADER_SECRET, "r", "x").unwrap();
        let mut altered = sealed.into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(matches!(
            ring.open("org-1", WEBHOOK_HEADER_SECRET, "r", &altered),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            ring.open("org-1", WEBHOOK_HEADER_SECRET, "r", "plain"),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn derived_keys_and_key_ids_are_stable_and_separate() {
        let key = SecretKey::from_hex(&"11".repeat(32)).unwrap();
        assert_eq!(key.derive("a"), key.derive("a"));
        assert_ne!(key.derive("a"), key.derive("b"));
        assert_ne!(key.derive("a"), key.0);
        let id = key.key_id();
        assert_eq!(id.len(), 8);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, SecretKey::generate().key_id());
        // The HMAC-SHA256 of RFC 4231's construction: a fixed vector keeps the derivation stable
        // across refactors (payloads and key ids written today must open tomorrow).
        let known = SecretKey::from_hex(&"0b".repeat(32)).unwrap();
        assert_eq!(
            hex::encode(known.derive("Hi There")),
            hmac_reference(&[0x0b; 32], b"Hi There")
        );
    }

    fn hmac_reference(key: &[u8], message: &[u8]) -> String {
        // HMAC by its definition (RFC 2104), independent of the hmac crate.
        let mut block = [0u8; 64];
        block[..key.len()].copy_from_slice(key);
        let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
        let inner = Sha256::digest([pad(0x36), message.to_vec()].concat());
        hex::encode(Sha256::digest([pad(0x5c), inner.to_vec()].concat()))
    }
}
