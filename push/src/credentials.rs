//! Per-organisation provider credentials, parsed once so a bad key is refused when it is saved
//! rather than at the first push.
//!
//! The caller stores the raw inputs (encrypted) and hands them back to us; the parsed ring key
//! pairs live behind an `Arc`, so cloning credentials is cheap. `Debug` never prints keys.

use std::fmt;
use std::sync::Arc;

use ring::digest::{Context, SHA256};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RsaKeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use crate::error::CredentialError;

/// A Google service account, from the JSON file Google issues (`"type": "service_account"`,
/// `project_id`, `private_key_id`, `private_key` (PKCS#8 RSA PEM), `client_email`, ...).
///
/// Its `token_uri` is ignored on purpose: the token endpoint is operator configuration
/// ([`crate::PushEndpoints::fcm_token_url`]), so stored credentials cannot point our server
/// anywhere, and the signed assertion cannot be sent to a third party.
#[derive(Clone)]
pub struct FcmCredentials {
    pub project_id: String,
    pub client_email: String,
    pub private_key_id: Option<String>,
    pub(crate) key: Arc<RsaKeyPair>,
    /// SHA-256 over the client email and the key's bytes: the access-token cache key, so a
    /// replaced key (same account) gets a fresh token.
    pub(crate) cache_key: [u8; 32],
}

impl fmt::Debug for FcmCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FcmCredentials")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("private_key", &"<hidden>")
            .finish()
    }
}

#[derive(Deserialize)]
struct ServiceAccountFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    project_id: Option<String>,
    private_key_id: Option<String>,
    private_key: Option<String>,
    client_email: Option<String>,
}

impl FcmCredentials {
    /// Parses the service account JSON file Google issues.
    pub fn from_service_account_json(json: &str) -> Result<Self, CredentialError> {
        // serde_json's error text names a line and column, never the input, so it is safe to
        // show even though the file holds a private key.
        let file: ServiceAccountFile = serde_json::from_str(json)
            .map_err(|error| CredentialError::InvalidJson(error.to_string()))?;
        match file.kind.as_deref() {
            Some("service_account") => {}
            Some(other) => {
                return Err(CredentialError::NotServiceAccount {
                    found: other.chars().take(40).collect(),
                });
            }
            None => return Err(CredentialError::MissingField("type")),
        }
        let project_id = required("project_id", file.project_id)?;
        if !project_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':' || c == '.')
        {
            // The id becomes a path segment of the send URL.
            return Err(CredentialError::InvalidField {
                field: "project_id",
                reason: "it may only contain letters, digits, '-', '.' and ':'".into(),
            });
        }
        let client_email = required("client_email", file.client_email)?;
        if !client_email.contains('@') {
            return Err(CredentialError::InvalidField {
                field: "client_email",
                reason: "it is not an email address".into(),
            });
        }
        let private_key = required("private_key", file.private_key)?;
        let der = pkcs8_from_pem("private_key", &private_key)?;
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|rejected| {
            CredentialError::InvalidKey {
                field: "private_key",
                reason: key_rejection("an RSA key of 2048 to 8192 bits", rejected),
            }
        })?;
        let cache_key = hash_parts(&[client_email.as_bytes(), der.secret_pkcs8_der()]);
        Ok(FcmCredentials {
            project_id,
            client_email,
            private_key_id: file.private_key_id.filter(|id| !id.is_empty()),
            key: Arc::new(key),
            cache_key,
        })
    }
}

/// Which APNs host a token belongs to: development builds of an app get sandbox tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApnsEnvironment {
    Production,
    Sandbox,
}

/// Token-based APNs auth: the `.p8` key (PKCS#8 EC P-256 PEM), its 10-character Key ID, the
/// 10-character Team ID, and the app's bundle id (the `apns-topic`).
#[derive(Clone)]
pub struct ApnsCredentials {
    pub team_id: String,
    pub key_id: String,
    pub topic: String,
    pub environment: ApnsEnvironment,
    pub(crate) key: Arc<EcdsaKeyPair>,
    /// SHA-256 over team id, key id and the key's bytes: the provider-token cache key.
    pub(crate) cache_key: [u8; 32],
}

impl fmt::Debug for ApnsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            team_id,
            key_id,
            topic,
            environment,
            ..
        } = self;
        debug_apns(f, "ApnsCredentials", [team_id, key_id, topic], *environment)
    }
}

/// The `Debug` of both APNs types: every field but the key.
fn debug_apns(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    [team_id, key_id, topic]: [&String; 3],
    environment: ApnsEnvironment,
) -> fmt::Result {
    f.debug_struct(name)
        .field("team_id", team_id)
        .field("key_id", key_id)
        .field("topic", topic)
        .field("environment", &environment)
        .field("private_key", &"<hidden>")
        .finish()
}

impl ApnsCredentials {
    /// Parses and checks APNs token credentials.
    ///
    /// ring needs the public key inside the PKCS#8 structure; the `.p8` files Apple issues and
    /// keys made by `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` have it.
    pub fn new(
        team_id: &str,
        key_id: &str,
        topic: &str,
        environment: ApnsEnvironment,
        private_key_pem: &str,
    ) -> Result<Self, CredentialError> {
        apple_id("team_id", team_id)?;
        apple_id("key_id", key_id)?;
        let topic = topic.trim();
        if topic.is_empty() {
            return Err(CredentialError::MissingField("topic"));
        }
        if !topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            // A header value; a bundle id is reverse-DNS letters, digits, '-' and '.'.
            return Err(CredentialError::InvalidField {
                field: "topic",
                reason: "a bundle id may only contain letters, digits, '-' and '.'".into(),
            });
        }
        let der = pkcs8_from_pem("private_key", private_key_pem)?;
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &SystemRandom::new(),
        )
        .map_err(|rejected| CredentialError::InvalidKey {
            field: "private_key",
            reason: key_rejection("an EC P-256 key (an APNs .p8 file)", rejected),
        })?;
        let cache_key = hash_parts(&[
            team_id.as_bytes(),
            key_id.as_bytes(),
            der.secret_pkcs8_der(),
        ]);
        Ok(ApnsCredentials {
            team_id: team_id.to_owned(),
            key_id: key_id.to_owned(),
            topic: topic.to_owned(),
            environment,
            key: Arc::new(key),
            cache_key,
        })
    }
}

/// APNs credentials as kept at rest (sealed by the caller): what the operator gave, so the key
/// can be parsed again whenever it is needed.
#[derive(Clone, Serialize, Deserialize)]
pub struct ApnsKeyFile {
    pub team_id: String,
    pub key_id: String,
    /// The app's bundle id.
    pub topic: String,
    pub environment: ApnsEnvironment,
    /// The .p8 key (PKCS#8 PEM).
    pub private_key: String,
}

impl fmt::Debug for ApnsKeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            team_id,
            key_id,
            topic,
            environment,
            ..
        } = self;
        debug_apns(f, "ApnsKeyFile", [team_id, key_id, topic], *environment)
    }
}

impl ApnsKeyFile {
    pub fn from_json(json: &str) -> Result<Self, CredentialError> {
        serde_json::from_str(json).map_err(|error| {
            // serde's message may quote a value; keep only where it failed.
            CredentialError::InvalidJson(format!("line {} column {}", error.line(), error.column()))
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain strings serialise")
    }

    pub fn credentials(&self) -> Result<ApnsCredentials, CredentialError> {
        ApnsCredentials::new(
            &self.team_id,
            &self.key_id,
            &self.topic,
            self.environment,
            &self.private_key,
        )
    }
}

impl CredentialError {
    /// The field the error is about, as a JSON pointer into the API's request body (whose
    /// `bundle_id` is the credentials' `topic`).
    pub fn pointer(&self) -> String {
        match self {
            CredentialError::MissingField(field)
            | CredentialError::InvalidField { field, .. }
            | CredentialError::InvalidKey { field, .. } => match *field {
                "topic" => "/bundle_id".to_owned(),
                field => format!("/{field}"),
            },
            CredentialError::InvalidJson(_) | CredentialError::NotServiceAccount { .. } => {
                String::new()
            }
        }
    }
}

fn required(field: &'static str, value: Option<String>) -> Result<String, CredentialError> {
    match value {
        Some(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        _ => Err(CredentialError::MissingField(field)),
    }
}

/// Apple's Team IDs and Key IDs are 10 upper-case letters and digits.
fn apple_id(field: &'static str, value: &str) -> Result<(), CredentialError> {
    if value.is_empty() {
        return Err(CredentialError::MissingField(field));
    }
    if value.len() != 10
        || !value
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return Err(CredentialError::InvalidField {
            field,
            reason: "it must be 10 upper-case letters and digits, as Apple shows it".into(),
        });
    }
    Ok(())
}

/// The DER of the first `-----BEGIN PRIVATE KEY-----` section. Errors never quote the input: a
/// PEM parser's own messages can include a line of it.
fn pkcs8_from_pem(
    field: &'static str,
    text: &str,
) -> Result<PrivatePkcs8KeyDer<'static>, CredentialError> {
    let invalid = |reason: &str| CredentialError::InvalidKey {
        field,
        reason: reason.to_owned(),
    };
    // Hints for the usual wrong formats first: a PEM parser stops at their (valid or not)
    // sections with errors that would not say what to do.
    if !text.contains("-----BEGIN PRIVATE KEY-----") {
        return Err(invalid(
            if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
                "it is a PKCS#1 RSA key; convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt`"
            } else if text.contains("-----BEGIN EC PRIVATE KEY-----") {
                "it is a SEC1 EC key; convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt`"
            } else if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
                "it is encrypted; an unencrypted PKCS#8 key is needed"
            } else {
                "it is not an unencrypted PKCS#8 PEM key (a PEM section labelled PRIVATE KEY)"
            },
        ));
    }
    PrivatePkcs8KeyDer::from_pem_slice(text.as_bytes())
        .map_err(|_| invalid("the PEM text is malformed"))
}

/// ring's rejection reasons are fixed identifiers; say them as sentences.
fn key_rejection(expected: &str, rejected: ring::error::KeyRejected) -> String {
    match rejected.to_string().as_str() {
        "WrongAlgorithm" => format!("it is not {expected}"),
        "PublicKeyIsMissing" => format!(
            "the PKCS#8 structure does not include the public key, which is required; \
             expected {expected} with its public key, as Apple and OpenSSL write them"
        ),
        // ring also answers this for a P-256 key whose PKCS#8 omits the (optional) public key.
        "InvalidEncoding" if expected.contains("P-256") => format!(
            "it is not a valid PKCS#8 key; expected {expected}, which must include the public \
             key as Apple's .p8 files and OpenSSL's keys do"
        ),
        "TooSmall" => format!("the key is too small; expected {expected}"),
        "TooLarge" => format!("the key is too large; expected {expected}"),
        "InconsistentComponents" => "its public and private parts do not match".to_owned(),
        "VersionNotSupported" => "its PKCS#8 version is not supported".to_owned(),
        _ => format!("it is not a valid PKCS#8 key; expected {expected}"),
    }
}

/// SHA-256 over length-prefixed parts, so no two different part lists hash alike.
fn hash_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut context = Context::new(&SHA256);
    for part in parts {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}
