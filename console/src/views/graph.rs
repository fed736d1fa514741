//! The workflow drawn as a graph: one node per step, edges labelled with their outcomes.
//! (To be written: see `draw`.)

use std::collections::BTreeMap;

use serde_json::Value;

/// The definition (`{"steps": [...]}` as the API stores it) as an inline SVG with
/// `id="workflow-graph"`: one `<g class="node" data-step="<step id>">` per step (class
/// `current` on `current`, class `invalid` on steps with problems, whose messages are listed in
/// a `<title>`), edges labelled with their outcome. Only escaped text goes in.
pub fn draw(
    definition: &Value,
    current: Option<&str>,
    problems: &BTreeMap<String, Vec<String>>,
) -> String {
    let _ = (definition, current, problems);
    String::new()
}
