//! Credentials: refused with a sentence that names the field, never with key material.

use pidgr_push::{ApnsCredentials, ApnsEnvironment, ApnsKeyFile, CredentialError, FcmCredentials};
use pidgr_push_fakes::{
    TEST_SERVICE_ACCOUNT_KEY_PEM, generate_apns_key, test_service_account_json,
};
use serde_json::{Value, json};

const OPENSSL_P256: &str = include_str!("fixtures/openssl-p256.pem");
const OPENSSL_P384: &str = include_str!("fixtures/openssl-p384.pem");
const ED25519: &str = include_str!("fixtures/ed25519.pem");
const SEC1_P256: &str = include_str!("fixtures/sec1-p256.pem");
const P256_WITHOUT_PUBLIC_KEY: &str = include_str!("fixtures/p256-without-public-key.pem");

/// No line of base64 from any key may appear in an error text or a `Debug`.
fn assert_no_key_material(text: &str) {
    for pem in [
        TEST_SERVICE_ACCOUNT_KEY_PEM,
        OPENSSL_P256,
        OPENSSL_P384,
        ED25519,
        SEC1_P256,
        P256_WITHOUT_PUBLIC_KEY,
    ] {
        for line in pem
            .lines()
            .filter(|line| !line.starts_with('-') && !line.starts_with('#'))
        {
            // Fragments too: 16 characters of base64 are not in any sentence by chance.
            for fragment in line.as_bytes().chunks(16).filter(|chunk| chunk.len() == 16) {
                let fragment = std::str::from_utf8(fragment).unwrap();
                assert!(!text.contains(fragment), "key material in: {text}");
            }
        }
    }
    assert!(!text.contains("-----"), "PEM armour in: {text}");
}

fn service_account(edit: impl FnOnce(&mut Value)) -> String {
    let mut value: Value = serde_json::from_str(&test_service_account_json(
        "a@b.iam.gserviceaccount.com",
        "proj",
    ))
    .unwrap();
    edit(&mut value);
    value.to_string()
}

fn fcm_error(json: &str) -> CredentialError {
    let error = FcmCredentials::from_service_account_json(json).unwrap_err();
    assert_no_key_material(&error.to_string());
    assert_no_key_material(&format!("{error:?}"));
    error
}

fn apns_error(team: &str, key: &str, pem: &str) -> CredentialError {
    let error = ApnsCredentials::new(
        team,
        key,
        "com.example.app",
        ApnsEnvironment::Production,
        pem,
    )
    .unwrap_err();
    assert_no_key_material(&error.to_string());
    assert_no_key_material(&format!("{error:?}"));
    error
}

#[test]
fn a_service_account_file_is_parsed_and_its_token_uri_ignored() {
    let credentials = FcmCredentials::from_service_account_json(&service_account(|_| {})).unwrap();
    assert_eq!(credentials.project_id, "proj");
    assert_eq!(credentials.client_email, "a@b.iam.gserviceaccount.com");
    assert_eq!(
        credentials.private_key_id.as_deref(),
        Some("0123456789abcdef0123456789abcdef01234567")
    );
}

#[test]
fn text_that_is_not_json_is_refused() {
    let error = fcm_error(&format!(
        "{{\"private_key\": \"{TEST_SERVICE_ACCOUNT_KEY_PEM}"
    ));
    assert!(
        matches!(error, CredentialError::InvalidJson(_)),
        "{error:?}"
    );
    assert!(error.to_string().contains("not valid JSON"));
}

#[test]
fn a_file_of_another_type_is_refused() {
    let error = fcm_error(&service_account(|v| v["type"] = json!("authorized_user")));
    assert_eq!(
        error.to_string(),
        "the service account file has type \"authorized_user\", but a \"service_account\" is needed"
    );
}

#[test]
fn missing_fields_are_named() {
    for field in ["project_id", "client_email", "private_key", "type"] {
        let error = fcm_error(&service_account(|v| {
            v.as_object_mut().unwrap().remove(field);
        }));
        assert_eq!(
            error,
            CredentialError::MissingField(match field {
                "project_id" => "project_id",
                "client_email" => "client_email",
                "private_key" => "private_key",
                _ => "type",
            })
        );
        assert!(error.to_string().contains(field));
    }
}

#[test]
fn a_key_that_is_not_rsa_is_refused_with_a_clear_reason() {
    let error = fcm_error(&service_account(|v| v["private_key"] = json!(OPENSSL_P256)));
    assert_eq!(
        error.to_string(),
        "the private key (private_key) cannot be used: it is not an RSA key of 2048 to 8192 bits"
    );
}

#[test]
fn a_pkcs1_rsa_key_gets_a_hint_to_convert_it() {
    let pkcs1 =
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx\n-----END RSA PRIVATE KEY-----\n";
    let error = fcm_error(&service_account(|v| v["private_key"] = json!(pkcs1)));
    assert!(error.to_string().contains("PKCS#1"), "{error}");
}

#[test]
fn garbage_in_the_key_field_is_refused_without_quoting_it() {
    let broken = TEST_SERVICE_ACCOUNT_KEY_PEM.replace("-----END PRIVATE KEY-----", "");
    let error = fcm_error(&service_account(|v| v["private_key"] = json!(broken)));
    assert!(
        matches!(error, CredentialError::InvalidKey { .. }),
        "{error:?}"
    );
}

#[test]
fn openssl_and_ring_generated_p256_keys_are_accepted() {
    let (generated, _) = generate_apns_key();
    for pem in [OPENSSL_P256, generated.as_str()] {
        ApnsCredentials::new(
            "TEAM123456",
            "KEY1234567",
            "com.example.app",
            ApnsEnvironment::Sandbox,
            pem,
        )
        .unwrap();
    }
}

#[test]
fn bad_team_and_key_ids_are_refused() {
    for (team, key, field) in [
        ("TEAM12345", "KEY1234567", "team_id"),
        ("team123456", "KEY1234567", "team_id"),
        ("TEAM123456", "KEY-234567", "key_id"),
        ("TEAM123456", "", "key_id"),
    ] {
        let error = apns_error(team, key, OPENSSL_P256);
        assert!(error.to_string().contains(field), "{error}");
    }
}

#[test]
fn keys_other_than_p256_are_refused() {
    for pem in [OPENSSL_P384, ED25519, TEST_SERVICE_ACCOUNT_KEY_PEM] {
        let error = apns_error("TEAM123456", "KEY1234567", pem);
        assert_eq!(
            error.to_string(),
            "the private key (private_key) cannot be used: it is not an EC P-256 key (an APNs .p8 file)"
        );
    }
}

#[test]
fn a_sec1_key_gets_a_hint_to_convert_it() {
    let error = apns_error("TEAM123456", "KEY1234567", SEC1_P256);
    assert!(error.to_string().contains("SEC1"), "{error}");
}

#[test]
fn a_pkcs8_key_without_its_public_key_is_refused_saying_so() {
    let error = apns_error("TEAM123456", "KEY1234567", P256_WITHOUT_PUBLIC_KEY);
    assert!(
        error.to_string().contains("must include the public key"),
        "{error}"
    );
}

#[test]
fn debug_output_hides_the_keys() {
    let fcm = FcmCredentials::from_service_account_json(&service_account(|_| {})).unwrap();
    let apns = ApnsCredentials::new(
        "TEAM123456",
        "KEY1234567",
        "com.example.app",
        ApnsEnvironment::Production,
        OPENSSL_P256,
    )
    .unwrap();
    for text in [format!("{fcm:?}"), format!("{apns:?}")] {
        assert_no_key_material(&text);
        assert!(text.contains("<hidden>"), "{text}");
    }
}

#[test]
fn the_environment_is_stored_in_lower_case() {
    assert_eq!(
        serde_json::to_string(&ApnsEnvironment::Sandbox).unwrap(),
        "\"sandbox\""
    );
    assert_eq!(
        serde_json::from_str::<ApnsEnvironment>("\"production\"").unwrap(),
        ApnsEnvironment::Production
    );
}

#[test]
fn an_apns_key_file_round_trips_and_points_at_the_api_field_at_fault() {
    let (p8, _) = generate_apns_key();
    let hides_key = |text: &str| {
        p8.lines()
            .filter(|line| !line.starts_with('-'))
            .all(|line| !text.contains(&line[..16.min(line.len())]))
    };
    let file = ApnsKeyFile {
        team_id: "TEAM123456".into(),
        key_id: "KEY1234567".into(),
        topic: "com.acme.app".into(),
        environment: ApnsEnvironment::Sandbox,
        private_key: p8.clone(),
    };
    let stored = ApnsKeyFile::from_json(&file.to_json()).unwrap();
    let credentials = stored.credentials().unwrap();
    assert_eq!(
        (credentials.team_id.as_str(), credentials.topic.as_str()),
        ("TEAM123456", "com.acme.app")
    );
    assert_eq!(credentials.environment, ApnsEnvironment::Sandbox);
    assert!(hides_key(&format!("{stored:?}")));

    let bad_topic = ApnsKeyFile {
        topic: "com acme".into(),
        ..stored.clone()
    };
    assert_eq!(bad_topic.credentials().unwrap_err().pointer(), "/bundle_id");
    let bad_key = ApnsKeyFile {
        private_key: "not a key".into(),
        ..stored
    };
    assert_eq!(bad_key.credentials().unwrap_err().pointer(), "/private_key");
    let error = ApnsKeyFile::from_json(&format!("{{\"team_id\": {p8:?}")).unwrap_err();
    assert!(hides_key(&error.to_string()), "{error}");
}
