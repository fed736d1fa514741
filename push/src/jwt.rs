//! Compact JWS (JWT) signing with ring: RS256 for Google's OAuth assertion, ES256 for the APNs
//! provider token. Two algorithms and a fixed header are all we need, which is why there is no
//! JWT crate in the tree.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::Value;

use crate::error::PushError;

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// `header.claims.signature`, signed RSASSA-PKCS1-v1_5 with SHA-256.
pub(crate) fn sign_rs256(
    key: &RsaKeyPair,
    header: &Value,
    claims: &Value,
) -> Result<String, PushError> {
    let input = signing_input(header, claims);
    let mut signature = vec![0u8; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| PushError::Rejected {
        reason: "the service account key could not sign the token request".into(),
    })?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// `header.claims.signature`, signed ECDSA P-256 SHA-256 with the fixed-width `r || s`
/// signature JWS requires (not the ASN.1 form).
pub(crate) fn sign_es256(
    key: &EcdsaKeyPair,
    header: &Value,
    claims: &Value,
) -> Result<String, PushError> {
    let input = signing_input(header, claims);
    let signature = key
        .sign(&SystemRandom::new(), input.as_bytes())
        .map_err(|_| PushError::Rejected {
            reason: "the APNs key could not sign the provider token".into(),
        })?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}
