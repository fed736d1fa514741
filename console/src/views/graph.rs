//! The workflow drawn as a graph: one node per step, edges labelled with their outcomes.
//!
//! The definition is read leniently, because the editor redraws it while someone types: a
//! step without an id or type is still drawn, a transition to an id no step has ends at a
//! dashed "missing" marker, and a cycle (which validation refuses) is drawn with its closing
//! edge going back up the side instead of hanging the layout.
//!
//! The layout is a layered DAG computed here, in fixed units, so the page needs no script:
//! - layer = the longest path from the entry step, after cutting the edges that close a cycle
//!   (found by a depth-first search from the entry); steps the entry cannot reach share one
//!   last layer; a missing target sits one layer below its lowest source;
//! - an edge that skips layers passes through a narrow placeholder in each layer it crosses,
//!   so it never runs through a node; a few barycentre sweeps order each layer to keep edges
//!   from crossing;
//! - an edge that goes back up (or stays in its layer) runs down the right-hand side in a lane
//!   of its own.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use serde_json::Value;

const NODE_W: f64 = 176.0;
const NODE_H: f64 = 46.0;
const MISSING_W: f64 = 128.0;
/// The width a long edge takes in a layer it crosses.
const PASS_W: f64 = 14.0;
const GAP_X: f64 = 28.0;
const GAP_Y: f64 = 64.0;
const MARGIN: f64 = 12.0;
/// The distance between the side lanes of edges that go back up.
const LANE: f64 = 22.0;
/// A 10px label character's width, about: labels are kept inside the drawing.
const LABEL_CHAR: f64 = 6.2;
/// Ids longer than this are cut short in the node (the full id is in its title).
const ID_CHARS: usize = 22;
const ARROW: f64 = 7.0;

/// The name a step goes by in the graph and in problem lists: its id, or, for a step without
/// one, its position ("#3" for the third).
pub fn step_key(step: &Value, index: usize) -> String {
    match step.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => format!("#{}", index + 1),
    }
}

/// The definition (`{"steps": [...]}` as the API stores it) as an inline SVG with
/// `id="workflow-graph"`: one `<g class="node" data-step="<step id>">` per step (class
/// `current` on `current`, class `invalid` on steps with problems, whose messages are listed in
/// a `<title>`), edges labelled with their outcome. Only escaped text goes in.
pub fn draw(
    definition: &Value,
    current: Option<&str>,
    problems: &BTreeMap<String, Vec<String>>,
) -> String {
    let graph = Graph::read(definition);
    if graph.vertices.is_empty() {
        return r#"<svg id="workflow-graph" class="graph" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 260 40" width="260" height="40" role="img" aria-label="No steps"><text class="graph-empty" x="130" y="24" text-anchor="middle">No steps to draw yet.</text></svg>"#.to_owned();
    }
    let layout = Layout::of(&graph);
    layout.svg(&graph, current, problems)
}

enum Kind {
    Step {
        key: String,
        step_type: String,
    },
    /// A transition's target that no step has.
    Missing(String),
}

struct Vertex {
    kind: Kind,
    layer: usize,
}

struct Edge {
    from: usize,
    to: usize,
    /// Every outcome that leads from `from` to `to`, in the order written.
    outcomes: Vec<String>,
    /// Closes a cycle: drawn going back up the side.
    back: bool,
}

struct Graph {
    vertices: Vec<Vertex>,
    edges: Vec<Edge>,
}

impl Graph {
    fn read(definition: &Value) -> Graph {
        let steps: &[Value] = definition
            .get("steps")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice);
        let mut vertices: Vec<Vertex> = Vec::new();
        let mut by_id: HashMap<String, usize> = HashMap::new();
        for (index, step) in steps.iter().enumerate() {
            let key = step_key(step, index);
            by_id.entry(key.clone()).or_insert(index);
            let step_type = match step.get("type") {
                Some(Value::String(t)) if !t.is_empty() => t.clone(),
                _ => "?".to_owned(),
            };
            vertices.push(Vertex {
                kind: Kind::Step { key, step_type },
                layer: 0,
            });
        }
        let step_count = vertices.len();
        let mut missing: HashMap<String, usize> = HashMap::new();
        let mut edges: Vec<Edge> = Vec::new();
        let mut edge_of: HashMap<(usize, usize), usize> = HashMap::new();
        for (from, step) in steps.iter().enumerate() {
            let Some(transitions) = step.get("transitions").and_then(Value::as_object) else {
                continue;
            };
            for (outcome, target) in transitions {
                let Some(target) = target.as_str() else {
                    continue;
                };
                let to = match by_id.get(target) {
                    Some(&to) => to,
                    None => *missing.entry(target.to_owned()).or_insert_with(|| {
                        vertices.push(Vertex {
                            kind: Kind::Missing(target.to_owned()),
                            layer: 0,
                        });
                        vertices.len() - 1
                    }),
                };
                let edge = *edge_of.entry((from, to)).or_insert_with(|| {
                    edges.push(Edge {
                        from,
                        to,
                        outcomes: Vec::new(),
                        back: false,
                    });
                    edges.len() - 1
                });
                edges[edge].outcomes.push(outcome.clone());
            }
        }
        let mut graph = Graph { vertices, edges };
        if step_count > 0 {
            let start = definition
                .get("start")
                .and_then(Value::as_str)
                .and_then(|id| by_id.get(id).copied())
                .unwrap_or(0);
            graph.assign_layers(start, step_count);
        }
        graph
    }

    /// Longest path from `start` over the steps, back edges cut; see the module's header.
    fn assign_layers(&mut self, start: usize, step_count: usize) {
        let mut out: Vec<Vec<usize>> = vec![Vec::new(); self.vertices.len()];
        for (index, edge) in self.edges.iter().enumerate() {
            out[edge.from].push(index);
        }
        // Iterative depth-first search: an edge to a vertex still on the stack closes a cycle.
        const NEW: u8 = 0;
        const OPEN: u8 = 1;
        const DONE: u8 = 2;
        let mut state = vec![NEW; self.vertices.len()];
        let mut finished = Vec::with_capacity(step_count);
        let mut stack = vec![(start, 0usize)];
        state[start] = OPEN;
        while let Some(&(vertex, next)) = stack.last() {
            if let Some(&edge) = out[vertex].get(next) {
                stack.last_mut().expect("not empty").1 += 1;
                let to = self.edges[edge].to;
                if to >= step_count {
                    continue;
                }
                match state[to] {
                    NEW => {
                        state[to] = OPEN;
                        stack.push((to, 0));
                    }
                    OPEN => self.edges[edge].back = true,
                    _ => {}
                }
            } else {
                state[vertex] = DONE;
                finished.push(vertex);
                stack.pop();
            }
        }
        // Reverse finishing order is a topological order of what remains.
        for &vertex in finished.iter().rev() {
            for &edge in &out[vertex] {
                let Edge { to, back, .. } = self.edges[edge];
                if !back && to < step_count {
                    let layer = self.vertices[vertex].layer + 1;
                    let target = &mut self.vertices[to];
                    target.layer = target.layer.max(layer);
                }
            }
        }
        // Missing targets one layer below their lowest source: first those the entry reaches,
        // then, below the layer of unreachable steps, those only unreachable steps name.
        let place_missing = |graph: &mut Graph, from_reached: bool| {
            for index in 0..graph.edges.len() {
                let Edge { from, to, .. } = graph.edges[index];
                if to >= step_count && (state[from] != NEW) == from_reached {
                    let layer = graph.vertices[from].layer + 1;
                    let target = &mut graph.vertices[to];
                    target.layer = target.layer.max(layer);
                }
            }
        };
        place_missing(self, true);
        let reached_depth = self
            .vertices
            .iter()
            .enumerate()
            .filter(|(v, _)| *v >= step_count || state[*v] != NEW)
            .map(|(_, vertex)| vertex.layer)
            .max()
            .unwrap_or(0);
        for (vertex, state) in state.iter().enumerate().take(step_count) {
            if *state == NEW {
                self.vertices[vertex].layer = reached_depth + 1;
            }
        }
        place_missing(self, false);
    }

    fn goes_down(&self, edge: &Edge) -> bool {
        self.vertices[edge.to].layer > self.vertices[edge.from].layer
    }
}

/// Something that takes room in a layer: a vertex, or a long edge passing through.
#[derive(Clone, Copy)]
enum Item {
    Vertex(usize),
    Pass,
}

struct Layout {
    /// Each layer's items, left to right.
    layers: Vec<Vec<usize>>,
    items: Vec<Item>,
    /// Each item's left edge and width.
    left: Vec<f64>,
    width: Vec<f64>,
    layer_of: Vec<usize>,
    /// Each down-going edge's items from source to target.
    chains: HashMap<usize, Vec<usize>>,
    content_w: f64,
}

impl Layout {
    fn of(graph: &Graph) -> Layout {
        let mut items: Vec<Item> = (0..graph.vertices.len()).map(Item::Vertex).collect();
        let mut layer_of: Vec<usize> = graph.vertices.iter().map(|v| v.layer).collect();
        let mut chains = HashMap::new();
        for (index, edge) in graph.edges.iter().enumerate() {
            if !graph.goes_down(edge) {
                continue;
            }
            let mut chain = vec![edge.from];
            for layer in layer_of[edge.from] + 1..layer_of[edge.to] {
                items.push(Item::Pass);
                layer_of.push(layer);
                chain.push(items.len() - 1);
            }
            chain.push(edge.to);
            chains.insert(index, chain);
        }
        let depth = layer_of.iter().max().map_or(0, |d| d + 1);
        let mut layers: Vec<Vec<usize>> = vec![Vec::new(); depth];
        for (item, &layer) in layer_of.iter().enumerate() {
            layers[layer].push(item);
        }
        let mut above: Vec<Vec<usize>> = vec![Vec::new(); items.len()];
        let mut below: Vec<Vec<usize>> = vec![Vec::new(); items.len()];
        let mut chain_list: Vec<(&usize, &Vec<usize>)> = chains.iter().collect();
        chain_list.sort_by_key(|(edge, _)| **edge);
        for (_, chain) in chain_list {
            for pair in chain.windows(2) {
                below[pair[0]].push(pair[1]);
                above[pair[1]].push(pair[0]);
            }
        }
        order_layers(&mut layers, &above, &below, items.len());
        let width: Vec<f64> = items
            .iter()
            .map(|item| match item {
                Item::Pass => PASS_W,
                Item::Vertex(v) => match graph.vertices[*v].kind {
                    Kind::Step { .. } => NODE_W,
                    Kind::Missing(_) => MISSING_W,
                },
            })
            .collect();
        let row_width = |row: &Vec<usize>| -> f64 {
            row.iter().map(|&i| width[i]).sum::<f64>() + GAP_X * row.len().saturating_sub(1) as f64
        };
        let content_w = layers.iter().map(row_width).fold(0.0, f64::max);
        let mut left = vec![0.0; items.len()];
        for row in &layers {
            let mut x = (content_w - row_width(row)) / 2.0;
            for &item in row {
                left[item] = x;
                x += width[item] + GAP_X;
            }
        }
        Layout {
            layers,
            items,
            left,
            width,
            layer_of,
            chains,
            content_w,
        }
    }

    fn top(&self, item: usize) -> f64 {
        self.layer_of[item] as f64 * (NODE_H + GAP_Y)
    }

    fn centre(&self, item: usize) -> f64 {
        self.left[item] + self.width[item] / 2.0
    }

    fn svg(
        &self,
        graph: &Graph,
        current: Option<&str>,
        problems: &BTreeMap<String, Vec<String>>,
    ) -> String {
        let mut bounds = Bounds::new(
            self.content_w,
            self.layers.len() as f64 * (NODE_H + GAP_Y) - GAP_Y,
        );
        let ports = self.ports(graph);
        let mut edges_svg = String::new();
        // Down-going edges, through the layers they cross.
        let mut labelled: HashMap<usize, (usize, usize)> = HashMap::new();
        for outs in &ports.outgoing {
            for (rank, &(edge, _)) in outs.iter().enumerate() {
                labelled.insert(edge, (rank, outs.len()));
            }
        }
        for (index, edge) in graph.edges.iter().enumerate() {
            let Some(chain) = self.chains.get(&index) else {
                continue;
            };
            let start = (ports.out_x(edge.from, index), self.top(edge.from) + NODE_H);
            let end = (ports.in_x(edge.to, index), self.top(edge.to) - ARROW + 1.0);
            let mut d = format!("M{:.1} {:.1}", start.0, start.1);
            let mut at = start;
            let mut first_segment = None;
            for &pass in &chain[1..chain.len() - 1] {
                let x = self.centre(pass);
                let entry = (x, self.top(pass));
                curve(&mut d, at, entry);
                first_segment.get_or_insert((at, entry));
                let _ = write!(d, " L{:.1} {:.1}", x, entry.1 + NODE_H);
                at = (x, entry.1 + NODE_H);
            }
            curve(&mut d, at, end);
            let (a, b) = first_segment.unwrap_or((at, end));
            let (rank, of) = labelled.get(&index).copied().unwrap_or((0, 1));
            let t = if of <= 1 {
                0.5
            } else {
                0.3 + 0.4 * rank as f64 / (of - 1) as f64
            };
            let label_at = on_curve(a, b, t);
            let label = edge.outcomes.join(" / ");
            bounds.label(label_at.0, &label, Anchor::Middle);
            let dangling = matches!(graph.vertices[edge.to].kind, Kind::Missing(_));
            self.edge_open(&mut edges_svg, graph, edge, dangling);
            let _ = write!(
                edges_svg,
                r#"<path class="edge{}" d="{d}"/><polygon class="arrow" points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}"/><text class="edge-label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text></g>"#,
                if dangling { " dangling" } else { "" },
                end.0 - 4.0,
                end.1,
                end.0 + 4.0,
                end.1,
                end.0,
                end.1 + ARROW - 1.0,
                label_at.0,
                label_at.1 + 3.5,
                escape(&label),
            );
        }
        // Edges that go back up or stay in their layer: out of the source's bottom, right along
        // the gap below its row to a lane of their own, up the lane, left along the gap above
        // the target's row, and into its top; the gaps hold no nodes, so nothing is crossed.
        let mut lane = 0;
        for (index, edge) in graph.edges.iter().enumerate() {
            if graph.goes_down(edge) {
                continue;
            }
            lane += 1;
            let x = self.content_w + LANE * lane as f64;
            let (from, to) = (edge.from, edge.to);
            let sx = ports.out_x(from, index);
            let sy = self.top(from) + NODE_H;
            let tx = ports.in_x(to, index);
            let ty = self.top(to) - ARROW + 1.0;
            let run = 12.0 + ((lane - 1) % 4) as f64 * 6.0;
            let (below, above) = (sy + run, self.top(to) - run);
            let r = 6.0;
            let d = format!(
                "M{sx:.1} {sy:.1} L{sx:.1} {:.1} Q{sx:.1} {below:.1} {:.1} {below:.1} L{:.1} {below:.1} Q{x:.1} {below:.1} {x:.1} {:.1} L{x:.1} {:.1} Q{x:.1} {above:.1} {:.1} {above:.1} L{:.1} {above:.1} Q{tx:.1} {above:.1} {tx:.1} {:.1} L{tx:.1} {ty:.1}",
                below - r,
                sx + r,
                x - r,
                below - r,
                above + r,
                x - r,
                tx + r,
                above + r,
            );
            bounds.top = bounds.top.min(above);
            bounds.bottom = bounds.bottom.max(below);
            let label = edge.outcomes.join(" / ");
            bounds.label(x + 4.0, &label, Anchor::Start);
            self.edge_open(&mut edges_svg, graph, edge, false);
            let _ = write!(
                edges_svg,
                r#"<path class="edge back" d="{d}"/><polygon class="arrow" points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}"/><text class="edge-label" x="{:.1}" y="{:.1}">{}</text></g>"#,
                tx - 4.0,
                ty,
                tx + 4.0,
                ty,
                tx,
                ty + ARROW - 1.0,
                x + 4.0,
                (below + above) / 2.0 + 3.5,
                escape(&label),
            );
        }
        bounds.right = bounds.right.max(self.content_w + LANE * lane as f64);

        let mut nodes_svg = String::new();
        for (item, kind) in self.items.iter().enumerate() {
            let Item::Vertex(vertex) = *kind else {
                continue;
            };
            let (x, y) = (self.left[item], self.top(item));
            match &graph.vertices[vertex].kind {
                Kind::Step { key, step_type } => {
                    let found = problems.get(key).filter(|p| !p.is_empty());
                    let mut class = String::from("node");
                    if current == Some(key.as_str()) {
                        class.push_str(" current");
                    }
                    if found.is_some() {
                        class.push_str(" invalid");
                    }
                    let mut title = format!("{key} ({step_type})");
                    for problem in found.into_iter().flatten() {
                        title.push('\n');
                        title.push_str(problem);
                    }
                    let _ = write!(
                        nodes_svg,
                        r#"<g class="{class}" data-step="{}" transform="translate({x:.1} {y:.1})"><title>{}</title><rect width="{NODE_W}" height="{NODE_H}" rx="8"/><text class="id" x="{:.1}" y="19" text-anchor="middle">{}</text><text class="kind" x="{:.1}" y="35" text-anchor="middle">{}</text></g>"#,
                        escape(key),
                        escape(&title),
                        NODE_W / 2.0,
                        escape(&shorten(key)),
                        NODE_W / 2.0,
                        escape(step_type),
                    );
                }
                Kind::Missing(target) => {
                    let _ = write!(
                        nodes_svg,
                        r#"<g class="missing" data-target="{}" transform="translate({x:.1} {y:.1})"><title>{}</title><rect width="{MISSING_W}" height="{NODE_H}" rx="8"/><text x="{:.1}" y="27" text-anchor="middle">{}</text></g>"#,
                        escape(target),
                        escape(&format!("no step has the id \"{target}\"")),
                        MISSING_W / 2.0,
                        escape(&format!("{}?", shorten(target))),
                    );
                }
            }
        }
        let (min_x, min_y) = (bounds.left - MARGIN, bounds.top - MARGIN);
        let width = bounds.right - bounds.left + 2.0 * MARGIN;
        let height = bounds.bottom - bounds.top + 2.0 * MARGIN;
        let steps = graph
            .vertices
            .iter()
            .filter(|v| matches!(v.kind, Kind::Step { .. }))
            .count();
        format!(
            r#"<svg id="workflow-graph" class="graph" xmlns="http://www.w3.org/2000/svg" viewBox="{min_x:.1} {min_y:.1} {width:.1} {height:.1}" width="{width:.0}" height="{height:.0}" role="img" aria-label="Workflow graph of {steps} step{}">{edges_svg}{nodes_svg}</svg>"#,
            if steps == 1 { "" } else { "s" },
        )
    }

    fn edge_open(&self, out: &mut String, graph: &Graph, edge: &Edge, dangling: bool) {
        let name = |v: usize| match &graph.vertices[v].kind {
            Kind::Step { key, .. } => key.clone(),
            Kind::Missing(target) => target.clone(),
        };
        let _ = write!(
            out,
            r#"<g class="transition{}" data-from="{}" data-to="{}" data-outcome="{}">"#,
            if dangling { " dangling" } else { "" },
            escape(&name(edge.from)),
            escape(&name(edge.to)),
            escape(&edge.outcomes.join(" ")),
        );
    }

    /// Where each down-going edge leaves its source and enters its target: spread along the
    /// node's bottom and top, in the order of where the edges go, so they do not cross there.
    fn ports(&self, graph: &Graph) -> Ports {
        let mut outgoing: Vec<Vec<(usize, f64)>> = vec![Vec::new(); graph.vertices.len()];
        let mut incoming: Vec<Vec<(usize, f64)>> = vec![Vec::new(); graph.vertices.len()];
        for (&edge, chain) in &self.chains {
            let e = &graph.edges[edge];
            outgoing[e.from].push((edge, self.centre(chain[1])));
            incoming[e.to].push((edge, self.centre(chain[chain.len() - 2])));
        }
        // Edges that go back up leave and enter at the right, towards their lanes.
        for (index, edge) in graph.edges.iter().enumerate() {
            if !self.chains.contains_key(&index) {
                outgoing[edge.from].push((index, f64::MAX));
                incoming[edge.to].push((index, f64::MAX));
            }
        }
        for list in outgoing.iter_mut().chain(incoming.iter_mut()) {
            list.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        }
        let spread = |lists: &Vec<Vec<(usize, f64)>>| -> HashMap<(usize, usize), f64> {
            let mut at = HashMap::new();
            for (vertex, list) in lists.iter().enumerate() {
                for (rank, (edge, _)) in list.iter().enumerate() {
                    let share = (rank + 1) as f64 / (list.len() + 1) as f64;
                    at.insert(
                        (vertex, *edge),
                        self.left[vertex] + self.width[vertex] * share,
                    );
                }
            }
            at
        };
        Ports {
            out_at: spread(&outgoing),
            in_at: spread(&incoming),
            outgoing,
        }
    }
}

struct Ports {
    out_at: HashMap<(usize, usize), f64>,
    in_at: HashMap<(usize, usize), f64>,
    outgoing: Vec<Vec<(usize, f64)>>,
}

impl Ports {
    fn out_x(&self, vertex: usize, edge: usize) -> f64 {
        self.out_at[&(vertex, edge)]
    }
    fn in_x(&self, vertex: usize, edge: usize) -> f64 {
        self.in_at[&(vertex, edge)]
    }
}

/// Orders each layer by the mean position of its neighbours, sweeping down and up a few times
/// (the usual heuristic against crossings; stable, so ties keep the definition's order).
fn order_layers(layers: &mut [Vec<usize>], above: &[Vec<usize>], below: &[Vec<usize>], n: usize) {
    let mut position = vec![0.0; n];
    let place = |layers: &[Vec<usize>], position: &mut Vec<f64>| {
        for row in layers {
            for (index, &item) in row.iter().enumerate() {
                position[item] = index as f64;
            }
        }
    };
    place(layers, &mut position);
    let sweep = |row: &mut Vec<usize>, neighbours: &[Vec<usize>], position: &mut Vec<f64>| {
        let key = |item: usize, position: &Vec<f64>| -> f64 {
            let list = &neighbours[item];
            if list.is_empty() {
                position[item]
            } else {
                list.iter().map(|&i| position[i]).sum::<f64>() / list.len() as f64
            }
        };
        let keys: HashMap<usize, f64> = row.iter().map(|&i| (i, key(i, position))).collect();
        row.sort_by(|a, b| keys[a].total_cmp(&keys[b]));
        for (index, &item) in row.iter().enumerate() {
            position[item] = index as f64;
        }
    };
    let last = layers.len().saturating_sub(1);
    for _ in 0..2 {
        for row in layers.iter_mut().skip(1) {
            sweep(row, above, &mut position);
        }
        for row in layers[..last].iter_mut().rev() {
            sweep(row, below, &mut position);
        }
    }
    for row in layers.iter_mut().skip(1) {
        sweep(row, above, &mut position);
    }
}

/// A vertical-tangent cubic from `a` to `b`, appended to a path.
fn curve(d: &mut String, a: (f64, f64), b: (f64, f64)) {
    let mid = (a.1 + b.1) / 2.0;
    let _ = write!(
        d,
        " C{:.1} {mid:.1} {:.1} {mid:.1} {:.1} {:.1}",
        a.0, b.0, b.0, b.1
    );
}

/// The point at `t` on the curve [`curve`] draws from `a` to `b`.
fn on_curve(a: (f64, f64), b: (f64, f64), t: f64) -> (f64, f64) {
    let mid = (a.1 + b.1) / 2.0;
    let s = 1.0 - t;
    let bezier = |p0: f64, p1: f64, p2: f64, p3: f64| {
        s * s * s * p0 + 3.0 * s * s * t * p1 + 3.0 * s * t * t * p2 + t * t * t * p3
    };
    (bezier(a.0, a.0, b.0, b.0), bezier(a.1, mid, mid, b.1))
}

enum Anchor {
    Start,
    Middle,
}

/// The drawing's extent, grown to hold the labels.
struct Bounds {
    top: f64,
    left: f64,
    right: f64,
    bottom: f64,
}

impl Bounds {
    fn new(width: f64, height: f64) -> Self {
        Bounds {
            top: 0.0,
            left: 0.0,
            right: width,
            bottom: height,
        }
    }

    fn label(&mut self, x: f64, text: &str, anchor: Anchor) {
        let width = text.chars().count() as f64 * LABEL_CHAR;
        let (from, to) = match anchor {
            Anchor::Start => (x, x + width),
            Anchor::Middle => (x - width / 2.0, x + width / 2.0),
        };
        self.left = self.left.min(from);
        self.right = self.right.max(to);
    }
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= ID_CHARS {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(ID_CHARS - 1).collect();
        short.push('…');
        short
    }
}

/// Text for SVG content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn example() -> Value {
        serde_json::from_str(include_str!(
            "../../../workflows/src/definition/example.json"
        ))
        .expect("the example is JSON")
    }

    fn none() -> BTreeMap<String, Vec<String>> {
        BTreeMap::new()
    }

    /// The `translate(x y)` of the node for `step`.
    fn position(svg: &str, step: &str) -> (f64, f64) {
        let at = svg
            .find(&format!(r#"data-step="{step}" transform="translate("#))
            .unwrap_or_else(|| panic!("no node {step}"));
        let rest = &svg[at..];
        let rest = &rest[rest.find("translate(").unwrap() + 10..];
        let inside = &rest[..rest.find(')').unwrap()];
        let (x, y) = inside.split_once(' ').unwrap();
        (x.parse().unwrap(), y.parse().unwrap())
    }

    #[test]
    fn every_step_is_one_node_with_its_id_and_type() {
        let svg = draw(&example(), None, &none());
        assert!(svg.starts_with(r#"<svg id="workflow-graph" class="graph""#));
        assert_eq!(svg.matches(r#"<g class="node"#).count(), 6);
        for id in ["notify", "wait", "remind", "last-call", "missed", "report"] {
            assert_eq!(svg.matches(&format!(r#"data-step="{id}""#)).count(), 1);
        }
        assert!(svg.contains(">SEND_NOTIFICATION</text>"));
        assert!(svg.contains(">CALL_WEBHOOK</text>"));
    }

    #[test]
    fn edges_are_labelled_with_their_outcomes() {
        let svg = draw(&example(), None, &none());
        assert!(svg.contains(">deadline</text>"));
        assert!(svg.contains(">all_acknowledged</text>"));
        assert_eq!(svg.matches(">next</text>").count(), 4);
        assert!(
            svg.contains(r#"data-from="wait" data-to="report" data-outcome="all_acknowledged""#)
        );
        // Two outcomes to the same step share one edge and one label.
        let both = json!({"version": 1, "steps": [
            {"id": "w", "type": "DEADLINE_CHECK", "transitions": {"deadline": "x", "all_acknowledged": "x"}},
            {"id": "x", "type": "MARK_MISSED"}
        ]});
        assert!(draw(&both, None, &none()).contains(">all_acknowledged / deadline</text>"));
    }

    #[test]
    fn steps_are_layered_by_their_longest_path_from_the_entry() {
        let svg = draw(&example(), None, &none());
        let y = |id| position(&svg, id).1;
        // notify → wait → remind → last-call → missed → report, and wait → report directly.
        assert!(y("notify") < y("wait"));
        assert!(y("wait") < y("remind"));
        assert!(y("missed") < y("report"));
        assert_eq!(y("notify"), 0.0);
        assert_eq!(y("report"), 5.0 * (NODE_H + GAP_Y));
        // A chain stands in one column.
        assert_eq!(position(&svg, "notify").0, position(&svg, "wait").0);
    }

    #[test]
    fn unreachable_steps_share_a_last_layer_and_unknown_targets_dangle() {
        let definition = json!({"version": 1, "start": "a", "steps": [
            {"id": "lost", "type": "MARK_MISSED", "transitions": {"next": "nowhere"}},
            {"id": "a", "type": "SEND_NOTIFICATION", "transitions": {"next": "b"}},
            {"id": "b", "type": "MARK_MISSED"},
            {"id": "also-lost", "type": "MARK_MISSED"}
        ]});
        let svg = draw(&definition, None, &none());
        let y = |id| position(&svg, id).1;
        assert_eq!(y("a"), 0.0);
        assert_eq!(y("lost"), 2.0 * (NODE_H + GAP_Y));
        assert_eq!(y("also-lost"), y("lost"));
        assert!(svg.contains(r#"<g class="missing" data-target="nowhere""#));
        assert!(svg.contains(r#"class="transition dangling" data-from="lost" data-to="nowhere""#));
        assert_eq!(svg.matches(r#"<g class="node"#).count(), 4);
    }

    #[test]
    fn a_cycle_is_drawn_with_its_closing_edge_going_back_up() {
        let definition = json!({"version": 1, "steps": [
            {"id": "a", "type": "SEND_NOTIFICATION", "transitions": {"next": "b"}},
            {"id": "b", "type": "DEADLINE_CHECK", "transitions": {"deadline": "a", "all_acknowledged": "b"}}
        ]});
        let svg = draw(&definition, None, &none());
        assert_eq!(svg.matches(r#"<g class="node"#).count(), 2);
        assert_eq!(svg.matches(r#"class="edge back""#).count(), 2);
        assert!(position(&svg, "a").1 < position(&svg, "b").1);
    }

    #[test]
    fn whatever_is_typed_draws_without_failing() {
        for definition in [
            json!(null),
            json!("text"),
            json!({"steps": 3}),
            json!({"steps": []}),
            json!({"steps": [7, {"type": 1}, {"id": "x", "transitions": {"next": 4, "deadline": "x"}}]}),
            json!({"start": "nope", "steps": [{"id": "x"}, {"id": "x"}]}),
        ] {
            let svg = draw(&definition, None, &none());
            assert!(
                svg.starts_with(r#"<svg id="workflow-graph""#),
                "{definition}"
            );
            assert!(svg.ends_with("</svg>"));
        }
        let svg = draw(&json!({"steps": [7, {"type": 1}]}), None, &none());
        assert!(svg.contains(r##"data-step="#1""##));
        assert!(svg.contains(r##"data-step="#2""##));
    }

    #[test]
    fn the_current_step_and_steps_with_problems_are_marked() {
        let problems = BTreeMap::from([(
            "report".to_owned(),
            vec!["config.url: the scheme must be https".to_owned()],
        )]);
        let svg = draw(&example(), Some("wait"), &problems);
        assert!(svg.contains(r#"<g class="node current" data-step="wait""#));
        assert!(svg.contains(r#"<g class="node invalid" data-step="report""#));
        assert!(
            svg.contains("report (CALL_WEBHOOK)\nconfig.url: the scheme must be https</title>")
        );
    }

    #[test]
    fn text_from_the_definition_is_escaped() {
        let definition = json!({"version": 1, "steps": [
            {"id": "<script>alert(1)</script>", "type": "\"><b>", "transitions": {"<i>": "&amp"}}
        ]});
        let problems = BTreeMap::from([(
            "<script>alert(1)</script>".to_owned(),
            vec!["<img src=x onerror=alert(1)>".to_owned()],
        )]);
        let svg = draw(&definition, None, &problems);
        assert!(!svg.contains("<script>"));
        assert!(!svg.contains("<img"));
        assert!(!svg.contains("<b>"));
        assert!(!svg.contains("<i>"));
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(svg.contains("&quot;&gt;&lt;b&gt;"));
        assert!(svg.contains(r#"data-target="&amp;amp""#));
    }
}
