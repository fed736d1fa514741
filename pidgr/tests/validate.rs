//! `pidgr validate FILE`: exit 0 and "valid", or exit 1 and every problem with its pointer.

use std::process::Command;

fn validate(definition: &str) -> (bool, String) {
    let file = std::env::temp_dir().join(format!(
        "pidgr-validate-{}.json",
        std::process::id() as u64 * 1000 + definition.len() as u64
    ));
    std::fs::write(&file, definition).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pidgr"))
        .arg("validate")
        .arg(&file)
        .env("PIDGR_ENVIRONMENT", "production")
        .env_remove("PIDGR_ALLOW_INSECURE_WEBHOOKS")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn the_example_definition_is_valid() {
    let (ok, out) = validate(pidgr_workflows::definition::EXAMPLE_JSON);
    assert!(ok, "{out}");
    assert!(out.contains("the definition is valid (6 steps)"), "{out}");
}

#[test]
fn an_invalid_definition_lists_every_problem_and_exits_1() {
    let (ok, out) = validate(
        r#"{"version": 1, "steps": [
            {"id": "a", "type": "DEADLINE_CHECK", "config": {"duration": "soon"}, "transitions": {"next": "b"}},
            {"id": "b", "type": "CALL_WEBHOOK", "config": {"name": "x", "url": "https://127.0.0.1/"}}
        ]}"#,
    );
    assert!(!ok);
    assert!(out.contains("/steps/0/config/duration: "), "{out}");
    assert!(out.contains("/steps/1/config/url: "), "{out}");
    assert!(out.contains("has 2 problem(s)"), "{out}");
}
