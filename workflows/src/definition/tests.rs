use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

const STRICT: UrlPolicy = UrlPolicy::STRICT;

fn example() -> Value {
    serde_json::from_str(EXAMPLE_JSON).unwrap()
}

fn problems(value: Value) -> Vec<(String, String)> {
    parse_value(&value, &STRICT)
        .expect_err("should be rejected")
        .into_iter()
        .map(|p| (p.pointer, p.message))
        .collect()
}

fn pointers(value: Value) -> Vec<String> {
    problems(value).into_iter().map(|(p, _)| p).collect()
}

#[test]
fn the_example_is_valid_and_expands_next_on_a_wait() {
    let validated = parse(EXAMPLE_JSON, &STRICT).unwrap();
    let definition = validated.definition;
    assert_eq!(definition.start, "notify");
    assert_eq!(definition.steps.len(), 6);
    let wait = definition.step("wait").unwrap();
    assert_eq!(
        wait.kind,
        StepKind::DeadlineCheck(DeadlineConfig {
            duration: Duration::from_secs(72 * 3600),
            text: "72h".into()
        })
    );
    // "next" on the last-call wait stands for both outcomes.
    assert_eq!(
        definition
            .next_step("last-call", Outcome::Deadline)
            .unwrap()
            .id,
        "missed"
    );
    assert_eq!(
        definition
            .next_step("last-call", Outcome::AllAcknowledged)
            .unwrap()
            .id,
        "missed"
    );
    assert_eq!(
        definition
            .next_step("wait", Outcome::AllAcknowledged)
            .unwrap()
            .id,
        "report"
    );
    assert!(definition.next_step("report", Outcome::Next).is_none());
    // Every path passes MARK_MISSED or all_acknowledged: no warning.
    assert_eq!(validated.warnings, vec![]);
}

#[test]
fn canonical_form_round_trips() {
    let definition = parse(EXAMPLE_JSON, &STRICT).unwrap().definition;
    let text = definition.to_json();
    let reparsed = parse(&text, &STRICT).unwrap().definition;
    assert_eq!(reparsed, definition);
    let deserialized: Definition = serde_json::from_str(&text).unwrap();
    assert_eq!(deserialized, definition);
}

#[test]
fn start_defaults_to_the_first_step() {
    let mut value = example();
    value.as_object_mut().unwrap().remove("start");
    assert_eq!(
        parse_value(&value, &STRICT).unwrap().definition.start,
        "notify"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let value = json!({
        "version": 2,
        "steps": [
            { "id": "a", "type": "SEND_NOTIFICATION", "config": { "channels": ["sms"] },
              "transitions": { "next": "nowhere" } },
            { "id": "a", "type": "TELEPORT" },
            { "id": "w", "type": "DEADLINE_CHECK", "config": { "duration": "0s" },
              "transitions": { "done": "a" } },
            { "id": "h", "type": "CALL_WEBHOOK",
              "config": { "name": "", "url": "http://169.254.169.254/latest", "colour": 1 } }
        ]
    });
    let found = pointers(value);
    for expected in [
        "/version",
        "/steps/0/config/channels/0",
        "/steps/0/transitions/next",
        "/steps/1/id",
        "/steps/1/type",
        "/steps/2/config/duration",
        "/steps/2/transitions/done",
        "/steps/3/config/name",
        "/steps/3/config/url",
        "/steps/3/config/colour",
    ] {
        assert!(
            found.contains(&expected.to_string()),
            "{expected} missing from {found:?}"
        );
    }
}

#[test]
fn malformed_json_is_one_problem_at_the_document() {
    let problems = parse("{\"version\": 1,", &STRICT).unwrap_err();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].pointer, "");
    assert!(
        problems[0].message.contains("not valid JSON"),
        "{}",
        problems[0].message
    );
}

#[test]
fn cycles_and_unreachable_steps_are_rejected() {
    let value = json!({
        "version": 1,
        "steps": [
            { "id": "a", "type": "SEND_NOTIFICATION", "transitions": { "next": "b" } },
            { "id": "b", "type": "DEADLINE_CHECK", "config": { "duration": "1h" },
              "transitions": { "deadline": "a", "all_acknowledged": "c" } },
            { "id": "c", "type": "MARK_MISSED" },
            { "id": "island", "type": "MARK_MISSED" }
        ]
    });
    let found = problems(value);
    assert!(
        found
            .iter()
            .any(|(p, m)| p == "/steps/1/transitions/deadline" && m.contains("cycle")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|(p, m)| p == "/steps/3" && m.contains("never run")),
        "{found:?}"
    );
    assert_eq!(found.len(), 2, "{found:?}");
}

#[test]
fn self_loop_is_a_cycle() {
    let value = json!({"version": 1, "steps": [
        { "id": "a", "type": "MARK_MISSED", "transitions": { "next": "a" } }
    ]});
    assert_eq!(pointers(value), vec!["/steps/0/transitions/next"]);
}

#[test]
fn a_cycle_through_a_deadline_checks_next_is_reported_once() {
    // `next` on a DEADLINE_CHECK stands for both of its outcomes: two edges, one place to fix.
    let value = json!({"version": 1, "steps": [
        { "id": "a", "type": "SEND_NOTIFICATION", "transitions": { "next": "wait" } },
        { "id": "wait", "type": "DEADLINE_CHECK", "config": { "duration": "1h" },
          "transitions": { "next": "a" } }
    ]});
    assert_eq!(pointers(value), vec!["/steps/1/transitions/next"]);
}

#[test]
fn start_must_exist_and_step_count_is_bounded() {
    let value =
        json!({"version": 1, "start": "ghost", "steps": [{ "id": "a", "type": "MARK_MISSED" }]});
    assert_eq!(pointers(value), vec!["/start"]);

    let steps: Vec<Value> = (0..=MAX_STEPS)
        .map(|i| json!({ "id": format!("s{i}"), "type": "MARK_MISSED", "transitions": { "next": format!("s{}", i + 1) } }))
        .collect();
    let mut value = json!({"version": 1, "steps": steps});
    value["steps"][MAX_STEPS]["transitions"] = json!({});
    assert_eq!(pointers(value), vec!["/steps"]);
}

#[test]
fn next_cannot_be_combined_with_a_specific_wait_outcome() {
    let value = json!({"version": 1, "steps": [
        { "id": "w", "type": "DEADLINE_CHECK", "config": { "duration": "1h" },
          "transitions": { "deadline": "m", "next": "m" } },
        { "id": "m", "type": "MARK_MISSED" }
    ]});
    assert_eq!(pointers(value), vec!["/steps/0/transitions/next"]);
}

#[test]
fn webhook_headers_are_checked_without_echoing_values() {
    let mut headers = serde_json::Map::new();
    for i in 0..=MAX_HEADERS {
        headers.insert(format!("X-H{i}"), json!("v"));
    }
    headers.insert("Content-Type".into(), json!("text/plain"));
    headers.insert("Bad Name".into(), json!("v"));
    headers.insert("X-Secret".into(), json!("line\r\nbreak-s3cret"));
    let value = json!({"version": 1, "steps": [
        { "id": "h", "type": "CALL_WEBHOOK",
          "config": { "name": "n", "url": "https://hooks.example.com/x", "headers": headers } }
    ]});
    let found = problems(value);
    let at = |p: &str| found.iter().any(|(pointer, _)| pointer == p);
    assert!(at("/steps/0/config/headers"));
    assert!(at("/steps/0/config/headers/Content-Type"));
    assert!(at("/steps/0/config/headers/Bad Name"));
    assert!(at("/steps/0/config/headers/X-Secret"));
    assert!(
        found.iter().all(|(_, m)| !m.contains("s3cret")),
        "{found:?}"
    );
}

#[test]
fn hop_by_hop_and_proxy_headers_are_reserved() {
    for name in [
        "Connection",
        "Keep-Alive",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Proxy-Authorization",
        "Proxy-Authenticate",
        "Proxy-Connection",
        "Expect",
        "Content-Encoding",
        "Content-Length",
        "Content-Type",
        "Host",
    ] {
        let value = json!({"version": 1, "steps": [
            { "id": "h", "type": "CALL_WEBHOOK",
              "config": { "name": "n", "url": "https://hooks.example.com/x",
                          "headers": { name: "v", "Authorization": "Bearer t" } } }
        ]});
        let found = problems(value);
        assert_eq!(
            found.len(),
            1,
            "{name} should be the only problem: {found:?}"
        );
        assert_eq!(found[0].0, format!("/steps/0/config/headers/{name}"));
        assert!(found[0].1.contains("set by Pidgr"), "{found:?}");
    }
}

#[test]
fn step_variables_are_capped_like_audience_variables() {
    use crate::template::{MAX_VARIABLE_NAME_LEN, MAX_VARIABLE_VALUE_CHARS, MAX_VARIABLES};
    let notify = |variables: Value| {
        json!({"version": 1, "steps": [
            { "id": "n", "type": "SEND_NOTIFICATION", "transitions": { "next": "r" } },
            { "id": "r", "type": "SEND_REMINDER", "config": { "variables": variables } }
        ]})
    };
    // At the limits: accepted.
    let longest_name = "a".repeat(MAX_VARIABLE_NAME_LEN);
    let at_limits: serde_json::Map<String, Value> = (0..MAX_VARIABLES - 1)
        .map(|i| (format!("v{i}"), json!("x")))
        .chain([(
            longest_name.clone(),
            json!("é".repeat(MAX_VARIABLE_VALUE_CHARS)),
        )])
        .collect();
    assert!(parse_value(&notify(Value::Object(at_limits)), &STRICT).is_ok());

    // The attack: one value of 250 KB. The pointer names the variable; the value is not quoted.
    let found = problems(notify(json!({ "a": "A".repeat(250_000) })));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "/steps/1/config/variables/a");
    assert!(found[0].1.contains("at most 2000 characters"), "{found:?}");
    assert!(found[0].1.len() < 200, "{}", found[0].1);

    // One character too many, a name too long, too many variables.
    let found = pointers(notify(json!({
        "ok": "x",
        "long": "x".repeat(MAX_VARIABLE_VALUE_CHARS + 1),
        "a/b": "x",
    })));
    assert_eq!(
        found,
        vec![
            "/steps/1/config/variables/a~1b",
            "/steps/1/config/variables/long"
        ]
    );
    let too_long_name = "a".repeat(MAX_VARIABLE_NAME_LEN + 1);
    assert_eq!(
        pointers(notify(json!({ too_long_name.clone(): "x" }))),
        vec![format!("/steps/1/config/variables/{too_long_name}")]
    );
    let too_many: serde_json::Map<String, Value> = (0..=MAX_VARIABLES)
        .map(|i| (format!("v{i}"), json!("x")))
        .collect();
    assert_eq!(
        pointers(notify(Value::Object(too_many))),
        vec!["/steps/1/config/variables"]
    );
}

#[test]
fn webhook_urls_follow_the_ssrf_rules() {
    for url in [
        "http://hooks.example.com/x",
        "https://127.0.0.1/x",
        "https://2130706433/",
        "https://[::ffff:10.0.0.1]/",
        "https://localhost/",
        "https://user:pw@hooks.example.com/",
    ] {
        let value = json!({"version": 1, "steps": [
            { "id": "h", "type": "CALL_WEBHOOK", "config": { "name": "n", "url": url } }
        ]});
        assert_eq!(pointers(value), vec!["/steps/0/config/url"], "{url}");
    }
    // The development allowance admits a loopback receiver.
    let value = json!({"version": 1, "steps": [
        { "id": "h", "type": "CALL_WEBHOOK", "config": { "name": "n", "url": "http://127.0.0.1:9/x" } }
    ]});
    assert!(parse_value(&value, &UrlPolicy::DEVELOPMENT).is_ok());
}

#[test]
fn pointers_escape_slash_and_tilde() {
    let value = json!({"version": 1, "steps": [
        { "id": "a", "type": "MARK_MISSED", "config": { "a/b~c": 1 } }
    ]});
    assert_eq!(pointers(value), vec!["/steps/0/config/a~1b~0c"]);
}

#[test]
fn a_path_ending_unresolved_is_a_warning() {
    let value = json!({"version": 1, "steps": [
        { "id": "n", "type": "SEND_NOTIFICATION", "transitions": { "next": "w" } },
        { "id": "w", "type": "DEADLINE_CHECK", "config": { "duration": "1d 12h" },
          "transitions": { "all_acknowledged": "r" } },
        { "id": "r", "type": "CALL_WEBHOOK", "config": { "name": "n", "url": "https://hooks.example.com/" } }
    ]});
    let validated = parse_value(&value, &STRICT).unwrap();
    assert_eq!(validated.warnings.len(), 1, "{:?}", validated.warnings);
    assert_eq!(validated.warnings[0].pointer, "/steps/1/transitions");
    assert!(validated.warnings[0].message.contains("deadline"));
}

#[test]
fn an_escalate_step_parses_with_push_by_default_and_round_trips() {
    let value = json!({
        "version": 1,
        "steps": [
            {"id": "notify", "type": "SEND_NOTIFICATION", "transitions": {"next": "wait"}},
            {"id": "wait", "type": "DEADLINE_CHECK", "config": {"duration": "24h"},
             "transitions": {"deadline": "escalate"}},
            {"id": "escalate", "type": "ESCALATE",
             "config": {"template_id": "t-1", "template_version": 2, "variables": {"deadline": "Friday"}}},
        ]
    });
    let definition = parse_value(&value, &STRICT).unwrap().definition;
    let step = definition.step("escalate").unwrap();
    assert_eq!(step.kind.type_name(), "ESCALATE");
    assert_eq!(step.kind.outcomes(), &[Outcome::Next]);
    assert_eq!(
        step.kind,
        StepKind::Escalate(EscalateConfig {
            channels: vec![Channel::Push],
            variables: BTreeMap::from([("deadline".to_owned(), "Friday".to_owned())]),
            template_id: "t-1".into(),
            template_version: 2,
        })
    );
    let text = definition.to_json();
    assert_eq!(parse(&text, &STRICT).unwrap().definition, definition);
    assert_eq!(
        serde_json::from_str::<Definition>(&text).unwrap(),
        definition
    );
    assert!(STEP_TYPES.contains(&"ESCALATE"));
}

#[test]
fn an_escalate_steps_problems_point_into_its_config() {
    let step = |config: Value| json!({"version": 1, "steps": [{"id": "e", "type": "ESCALATE", "config": config}]});
    assert_eq!(
        problems(step(json!({}))),
        vec![
            (
                "/steps/0/config".to_owned(),
                "an ESCALATE step needs a \"template_id\": the template its message to managers is rendered from".to_owned()
            ),
            (
                "/steps/0/config".to_owned(),
                "an ESCALATE step needs a \"template_version\", such as 1".to_owned()
            ),
        ]
    );
    assert_eq!(
        pointers(step(json!({
            "template_id": 7,
            "template_version": 0,
            "channels": ["push", "sms"],
            "variables": {"bad name": "x", "ok": 1},
            "subject": "hi",
        }))),
        vec![
            "/steps/0/config/subject",
            "/steps/0/config/channels/1",
            "/steps/0/config/variables/bad name",
            "/steps/0/config/variables/ok",
            "/steps/0/config/template_id",
            "/steps/0/config/template_version",
        ]
    );
    assert_eq!(
        pointers(step(
            json!({"template_id": "", "template_version": 1.5, "channels": []})
        )),
        vec![
            "/steps/0/config/channels",
            "/steps/0/config/template_id",
            "/steps/0/config/template_version",
        ]
    );
    // Only `next`: an escalation has no other outcome.
    assert_eq!(
        pointers(json!({"version": 1, "steps": [
            {"id": "e", "type": "ESCALATE", "config": {"template_id": "t", "template_version": 1},
             "transitions": {"deadline": "e"}}
        ]})),
        vec!["/steps/0/transitions/deadline"]
    );
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just("SEND_NOTIFICATION".to_string()),
            Just("DEADLINE_CHECK".to_string()),
            Just("CALL_WEBHOOK".to_string()),
            Just("MARK_MISSED".to_string()),
            Just("next".to_string()),
            Just("a".to_string()),
            Just("1h".to_string()),
            Just("https://0x7f.1/".to_string()),
            ".*",
        ]
        .prop_map(Value::String),
    ];
    let keys = prop_oneof![
        Just("version".to_string()),
        Just("start".to_string()),
        Just("steps".to_string()),
        Just("id".to_string()),
        Just("type".to_string()),
        Just("config".to_string()),
        Just("transitions".to_string()),
        Just("next".to_string()),
        Just("deadline".to_string()),
        Just("duration".to_string()),
        Just("url".to_string()),
        Just("headers".to_string()),
        Just("channels".to_string()),
        "[a-z/~]{0,6}",
    ];
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_json_never_panics(value in arbitrary_json()) {
        match parse_value(&value, &STRICT) {
            Ok(validated) => {
                // Whatever validates round-trips through its canonical form.
                let again = parse(&validated.definition.to_json(), &STRICT).unwrap();
                prop_assert_eq!(again.definition, validated.definition);
            }
            Err(problems) => prop_assert!(!problems.is_empty()),
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        let _ = parse(&text, &STRICT);
    }

    #[test]
    fn linear_chains_validate_and_round_trip(kinds in prop::collection::vec(0u8..5, 1..MAX_STEPS)) {
        let n = kinds.len();
        let steps: Vec<Value> = kinds.iter().enumerate().map(|(i, kind)| {
            let (step_type, config) = match kind {
                0 => ("SEND_NOTIFICATION", json!({"channels": ["push", "webhook"], "variables": {"v": "x"}})),
                1 => ("DEADLINE_CHECK", json!({"duration": "1d 2h 3m 4s"})),
                2 => ("SEND_REMINDER", json!({})),
                3 => ("MARK_MISSED", json!({})),
                _ => ("CALL_WEBHOOK", json!({"name": "r", "url": "https://hooks.example.com/p?q=1", "headers": {"X-A": "b"}})),
            };
            let transitions = if i + 1 < n { json!({"next": format!("s{}", i + 1)}) } else { json!({}) };
            json!({"id": format!("s{i}"), "type": step_type, "config": config, "transitions": transitions})
        }).collect();
        let validated = parse_value(&json!({"version": 1, "steps": steps}), &STRICT).unwrap();
        prop_assert_eq!(validated.definition.steps.len(), n);
        let again = parse(&validated.definition.to_json(), &STRICT).unwrap();
        prop_assert_eq!(again.definition, validated.definition);
    }
}

/// Definitions of many well-formed steps, each with one or two faults, in a few kinds.
fn faulty_steps() -> impl Strategy<Value = Value> {
    let step = (0u8..7, "[a-z]{1,3}", "[a-z]{1,3}", ".{0,30}").prop_map(|(kind, id, to, text)| {
        match kind {
            0 => json!({"id": id, "type": "SEND_NOTIFICATION", "config": {"channels": [text], "variables": {"v": text}}, "transitions": {"next": to}}),
            1 => json!({"id": id, "type": "DEADLINE_CHECK", "config": {"duration": text}, "transitions": {"deadline": to, "next": to}}),
            2 => json!({"id": id, "type": "CALL_WEBHOOK", "config": {"name": text, "url": text, "headers": {text.clone(): text}}}),
            3 => json!({"id": id, "type": text, "transitions": {text.clone(): to}}),
            4 => json!({"id": text, "type": "MARK_MISSED", "config": {text.clone(): 1}}),
            5 => json!({"id": id, "type": "ESCALATE", "config": {"template_id": text, "template_version": text, "channels": [text]}, "transitions": {"next": to}}),
            _ => json!({"id": id, "type": "SEND_REMINDER", "config": {"variables": {text.clone(): 7}}, "transitions": {"next": id}}),
        }
    });
    prop::collection::vec(step, 1..MAX_STEPS + 5)
        .prop_map(|steps| json!({"version": 1, "start": "a", "steps": steps}))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Problems are bounded by the input: each one answers a distinct part of it, and no
    /// message grows beyond a sentence plus the value it names (long names are cut).
    #[test]
    fn problems_are_bounded_by_the_input(value in prop_oneof![arbitrary_json(), faulty_steps()]) {
        let text = value.to_string();
        if let Err(problems) = parse(&text, &STRICT) {
            prop_assert!(!problems.is_empty());
            prop_assert!(problems.len() <= text.len(), "{} problems for {} bytes", problems.len(), text.len());
            for problem in &problems {
                prop_assert!(problem.message.len() <= 400 + text.len(), "{problem}");
                prop_assert!(problem.pointer.len() <= text.len() + 16, "{problem}");
            }
        }
    }

    /// The URL policy answers any text of up to twice the length limit; a rejection is one
    /// short sentence (the text it quotes is cut), an accepted URL keeps no more than it was given.
    #[test]
    fn url_policy_answers_any_text_briefly(url in prop_oneof![
        ".{0,64}",
        "https://[a-z0-9.:@\\[\\]%/?#x_-]{0,64}",
        "https://[a-z]{1,10}\\.example/[ -~]{0,4096}",
    ]) {
        for policy in [&UrlPolicy::STRICT, &UrlPolicy::DEVELOPMENT] {
            match check_url(&url, policy) {
                Ok(checked) => {
                    prop_assert!(url.len() <= MAX_URL_LEN);
                    prop_assert!(checked.path_and_query.len() <= url.len());
                    prop_assert_eq!(&checked.original, &url);
                }
                Err(rejection) => prop_assert!(rejection.to_string().len() <= 400, "{rejection}"),
            }
        }
    }
}
