//! Property tests of request bodies: whatever bytes or JSON a client sends to any route, the
//! body either parses or is answered with a 4xx problem document; never a panic or a 5xx.

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::parse_json;
use crate::ApiError;

/// `bytes` read as a route reads its body: parsed, or refused as the client's fault.
fn check<T: DeserializeOwned>(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Err(error) = parse_json::<T>(bytes) else {
        return Ok(());
    };
    prop_assert!(
        matches!(error, ApiError::BadRequest(_) | ApiError::Invalid(_)),
        "{error:?}"
    );
    let response = error.into_response();
    prop_assert!(response.status().is_client_error(), "{}", response.status());
    prop_assert_eq!(
        response.headers().get(CONTENT_TYPE).map(|v| v.as_bytes()),
        Some(b"application/problem+json".as_slice())
    );
    Ok(())
}

/// Every type a route reads its JSON body into (each `Body<T>` of the handlers).
fn every_body(bytes: &[u8]) -> Result<(), TestCaseError> {
    check::<crate::api_keys::NewKey>(bytes)?;
    check::<crate::campaigns::CreateCampaign>(bytes)?;
    check::<crate::deliveries::ActionRequest>(bytes)?;
    check::<crate::directory::CreateMember>(bytes)?;
    check::<crate::directory::UpdateMember>(bytes)?;
    check::<crate::directory::RegisterDevice>(bytes)?;
    check::<crate::integrations::ConfigureFcm>(bytes)?;
    check::<crate::integrations::ConfigureApns>(bytes)?;
    check::<crate::member_sets::SetName>(bytes)?;
    check::<crate::roles::NewRole>(bytes)?;
    check::<crate::roles::RoleUpdate>(bytes)?;
    check::<crate::templates::NewTemplate>(bytes)?;
    check::<crate::templates::NewVersion>(bytes)?;
    check::<crate::templates::PreviewRequest>(bytes)?;
    check::<crate::webhook_channel::Configure>(bytes)?;
    check::<crate::workflow_definitions::NewDefinition>(bytes)?;
    check::<crate::workflow_definitions::DefinitionOnly>(bytes)?;
    Ok(())
}

/// Field names the bodies use, so that generated objects often get past "unknown field".
const FIELDS: [&str; 31] = [
    "name",
    "title",
    "body",
    "email",
    "external_id",
    "display_name",
    "attributes",
    "role_id",
    "platform",
    "token",
    "source",
    "permissions",
    "definition",
    "definition_id",
    "template_id",
    "template_version",
    "audience",
    "members",
    "teams",
    "groups",
    "member_id",
    "variables",
    "campaign_title",
    "url",
    "service_account",
    "team_id",
    "key_id",
    "bundle_id",
    "environment",
    "private_key",
    "steps",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just("fcm".to_owned()),
            Just("apns".to_owned()),
            Just("member".to_owned()),
            Just("campaigns:read".to_owned()),
            Just("{{a}}".to_owned()),
            Just(" ".to_owned()),
            ".{0,40}",
            // Longer than every bounded text field but within the body limit.
            "[a-z]{190,210}",
        ]
        .prop_map(Value::String),
    ];
    let keys = prop_oneof![
        4 => prop::sample::select(FIELDS.as_slice()).prop_map(str::to_owned),
        1 => "[a-z_/~.]{0,8}",
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An object of the bodies' fields: the shape most bodies expect, with arbitrary values.
fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        prop::sample::select(FIELDS.as_slice()).prop_map(str::to_owned),
        json_value(),
        0..8,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_are_parsed_or_refused_as_client_errors(
        bytes in prop::collection::vec(any::<u8>(), 0..512)
    ) {
        every_body(&bytes)?;
    }

    #[test]
    fn arbitrary_text_is_parsed_or_refused_as_client_errors(text in "[ -~{}\\[\\]\":,0-9]{0,200}") {
        every_body(text.as_bytes())?;
    }

    #[test]
    fn arbitrary_json_is_parsed_or_refused_as_client_errors(value in json_value()) {
        every_body(value.to_string().as_bytes())?;
    }

    #[test]
    fn arbitrary_objects_of_known_fields_are_parsed_or_refused(value in json_object()) {
        every_body(value.to_string().as_bytes())?;
    }
}
