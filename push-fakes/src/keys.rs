//! Test keys: a committed RSA service-account key (Google issues 2048-bit ones; generating RSA
//! keys is slow and ring cannot do it) and freshly generated APNs P-256 keys.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RsaKeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;

/// A 2048-bit RSA PKCS#8 key made with `openssl genpkey -algorithm RSA -pkeyopt
/// rsa_keygen_bits:2048` for tests only. It is not, and never was, a real Google credential.
pub const TEST_SERVICE_ACCOUNT_KEY_PEM: &str = include_str!("test-service-account-key.pem");

/// A service account JSON file, shaped like the ones Google issues, around the test key. Its
/// `token_uri` points at Google on purpose: the client must ignore it.
pub fn test_service_account_json(client_email: &str, project_id: &str) -> String {
    serde_json::json!({
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": pem_section(TEST_SERVICE_ACCOUNT_KEY_PEM),
        "client_email": client_email,
        "client_id": "100000000000000000000",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/test",
        "universe_domain": "googleapis.com",
    })
    .to_string()
}

/// The PEM text from its `-----BEGIN` line on, without the file's comment, as Google writes it.
fn pem_section(text: &str) -> &str {
    text.find("-----BEGIN").map_or(text, |start| &text[start..])
}

/// The test key's public half (DER `RSAPublicKey`), what [`crate::FakeFcm::start`] verifies
/// assertions with.
pub fn test_service_account_public_key() -> Vec<u8> {
    let der = PrivatePkcs8KeyDer::from_pem_slice(TEST_SERVICE_ACCOUNT_KEY_PEM.as_bytes())
        .expect("the committed test key is PEM");
    let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
        .expect("the committed test key is an RSA PKCS#8 key");
    key.public().as_ref().to_vec()
}

/// A new APNs-style key: the `.p8` PEM (PKCS#8, P-256, public key included, as Apple writes
/// them) and the public key (uncompressed point) that [`crate::FakeApns::start`] verifies with.
pub fn generate_apns_key() -> (String, Vec<u8>) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .expect("ring can generate a P-256 key");
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .expect("ring reads the key it generated");
    (
        pem("PRIVATE KEY", pkcs8.as_ref()),
        key.public_key().as_ref().to_vec(),
    )
}

/// PEM with 64-character lines, as OpenSSL and Apple write it.
pub fn pem(label: &str, der: &[u8]) -> String {
    let encoded = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
