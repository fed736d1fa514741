//! The codec server protocol's body, as Temporal's CLI and Web UI send and expect it:
//! `{"payloads": [{"metadata": {"encoding": "<base64>"}, "data": "<base64>"}]}` (proto3 JSON,
//! so every bytes value, metadata values included, is base64). Answers have the same shape.

use std::collections::BTreeMap;

use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose::STANDARD};
use serde::{Deserialize, Serialize};
use temporalio_common::protos::temporal::api::common::v1::Payload;

/// A codec server request or answer.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct PayloadsBody {
    #[serde(default)]
    pub payloads: Vec<PayloadJson>,
}

/// One payload in proto3 JSON. Fields a client adds (such as `externalPayloads`) are ignored.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct PayloadJson {
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub data: String,
}

/// A value in the body that is not base64, with a JSON pointer to it.
#[derive(Debug, thiserror::Error)]
#[error("{pointer} is not base64")]
pub struct NotBase64 {
    pub pointer: String,
}

/// proto3 JSON readers accept standard and URL-safe base64, padded or not.
fn decode(text: &str) -> Option<Vec<u8>> {
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let alphabet = if text.contains(['-', '_']) {
        &alphabet::URL_SAFE
    } else {
        &alphabet::STANDARD
    };
    GeneralPurpose::new(alphabet, config).decode(text).ok()
}

/// `key` as one reference token of a JSON pointer (RFC 6901): `~` is written `~0` and `/`
/// `~1`, so a metadata key holding either still points at itself.
fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl PayloadsBody {
    /// The payloads, or where the body has something that is not base64.
    pub fn to_payloads(&self) -> Result<Vec<Payload>, NotBase64> {
        self.payloads
            .iter()
            .enumerate()
            .map(|(index, json)| {
                let not_base64 = |field: &str| NotBase64 {
                    pointer: format!("/payloads/{index}/{field}"),
                };
                let metadata = json
                    .metadata
                    .iter()
                    .map(|(key, value)| {
                        decode(value)
                            .map(|bytes| (key.clone(), bytes))
                            .ok_or_else(|| not_base64(&format!("metadata/{}", pointer_token(key))))
                    })
                    .collect::<Result<_, _>>()?;
                let data = decode(&json.data).ok_or_else(|| not_base64("data"))?;
                Ok(Payload {
                    metadata,
                    data,
                    ..Default::default()
                })
            })
            .collect()
    }

    pub fn from_payloads(payloads: &[Payload]) -> Self {
        PayloadsBody {
            payloads: payloads
                .iter()
                .map(|payload| PayloadJson {
                    metadata: payload
                        .metadata
                        .iter()
                        .map(|(key, value)| (key.clone(), STANDARD.encode(value)))
                        .collect(),
                    data: STANDARD.encode(&payload.data),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_round_trips_through_payloads() {
        let body: PayloadsBody = serde_json::from_value(serde_json::json!({
            "payloads": [{"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": "eyJhIjoxfQ=="}]
        }))
        .unwrap();
        let payloads = body.to_payloads().unwrap();
        assert_eq!(payloads[0].metadata["encoding"], b"json/plain");
        assert_eq!(payloads[0].data, br#"{"a":1}"#);
        let back = serde_json::to_value(PayloadsBody::from_payloads(&payloads)).unwrap();
        assert_eq!(back["payloads"][0]["data"], "eyJhIjoxfQ==");
        assert_eq!(
            back["payloads"][0]["metadata"]["encoding"],
            "anNvbi9wbGFpbg=="
        );
    }

    #[test]
    fn unpadded_and_url_safe_base64_are_read_and_garbage_is_pointed_at() {
        let body: PayloadsBody = serde_json::from_value(serde_json::json!({
            "payloads": [{"metadata": {}, "data": "-_8"}, {"data": "eyJhIjoxfQ"}]
        }))
        .unwrap();
        let payloads = body.to_payloads().unwrap();
        assert_eq!(payloads[0].data, [0xfb, 0xff]);
        assert_eq!(payloads[1].data, br#"{"a":1}"#);
        let bad: PayloadsBody = serde_json::from_value(serde_json::json!({
            "payloads": [{"data": ""}, {"metadata": {"encoding": "%%%"}}]
        }))
        .unwrap();
        assert_eq!(
            bad.to_payloads().unwrap_err().pointer,
            "/payloads/1/metadata/encoding"
        );
    }

    #[test]
    fn a_metadata_key_is_escaped_in_the_pointer() {
        let bad: PayloadsBody = serde_json::from_value(serde_json::json!({
            "payloads": [{"metadata": {"a/b~c": "%%%"}}]
        }))
        .unwrap();
        assert_eq!(
            bad.to_payloads().unwrap_err().pointer,
            "/payloads/0/metadata/a~1b~0c"
        );
    }
}
