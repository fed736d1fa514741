//! Encryption at rest for secrets the server needs back in clear (the webhook signing secret,
//! later push credentials): hashing would not do, since the server signs with them.
//!
//! XChaCha20-Poly1305 with a random 24-byte nonce per seal: nonces that large can be drawn at
//! random without any realistic risk of reuse, so no counter has to be kept anywhere. The
//! organisation id is authenticated as associated data, so a ciphertext copied into another
//! organisation's row does not open there.

use crate::{Result, Store, StoreError};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use std::fmt;

/// The format marker of sealed text, so the scheme can change later without guessing.
const SEALED_PREFIX: &str = "v1:";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

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

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.0))
    }

    fn seal(&self, associated: &str, plaintext: &str) -> Result<String> {
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
        Ok(format!("{SEALED_PREFIX}{}", hex::encode(sealed)))
    }

    fn open(&self, associated: &str, sealed: &str) -> Result<String> {
        let corrupt = |why: &str| StoreError::Corrupt(format!("a stored secret {why}"));
        let hex_text = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or_else(|| corrupt("is not in a known sealed format"))?;
        let bytes = hex::decode(hex_text).map_err(|_| corrupt("is not valid hexadecimal"))?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(corrupt("is too short to be sealed data"));
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let plaintext = self
            .cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: associated.as_bytes(),
                },
            )
            .map_err(|_| {
                corrupt(
                    "could not be decrypted: it was altered, belongs to another organisation, \
                     or was sealed with another server key",
                )
            })?;
        String::from_utf8(plaintext).map_err(|_| corrupt("decrypted to something that is not text"))
    }
}

impl Store {
    /// This store, sealing and opening secrets with `key`.
    pub fn with_secret_key(mut self, key: SecretKey) -> Self {
        self.secrets = Some(std::sync::Arc::new(key));
        self
    }

    fn secret_key(&self) -> Result<&SecretKey> {
        self.secrets.as_deref().ok_or_else(|| {
            StoreError::Config(
                "no secret key is configured, so secrets cannot be stored or read".to_owned(),
            )
        })
    }

    /// Encrypts `plaintext` for `org_id`: "v1:" + hex(nonce || ciphertext and tag).
    pub(crate) fn seal(&self, org_id: &str, plaintext: &str) -> Result<String> {
        self.secret_key()?.seal(org_id, plaintext)
    }

    /// Decrypts what [`Store::seal`] wrote for `org_id`; `Corrupt` when it was altered, was
    /// sealed for another organisation, or under another key.
    pub(crate) fn open(&self, org_id: &str, sealed: &str) -> Result<String> {
        self.secret_key()?.open(org_id, sealed)
    }
}
