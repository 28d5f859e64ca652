//! `ModelGraph`: a neural network as a petgraph `DiGraph` of ops, with shape inference,
//! parameter and multiply-accumulate counts per node, prunable channel groups, per-node
//! feature vectors, and DOT / JSON export.
//!
//! Owns the structure of a model only. It must not know about tch: executing a graph is the
//! `model` module's job.

mod export;
mod features;
mod groups;
mod hw;
mod ops;
mod shape;
mod table;

pub use export::{GraphJson, GroupJson, NodeJson, PinnedJson};
pub use features::{NodeFeatures, FEATURE_NAMES};
pub use groups::{ChannelUse, Pinned, PrunableGroup};
pub use ops::{Activation, Hw, Op, Shape, OP_TYPES};

use crate::error::{Error, Result};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

/// One node: a named op and the shape it produces.
#[derive(Debug, Clone)]
pub struct Node {
    /// Unique name; parameters are stored under `<name>.weight`, `<name>.bias`, ...
    pub name: String,
    pub op: Op,
    /// Output shape of one sample (no batch dimension), filled by shape inference.
    pub out_shape: Shape,
}

/// An edge carries the source node's output into the target's input number `slot`
/// (the order matters for Concat).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub slot: usize,
}

/// A model as a graph of ops, with shapes inferred and prunable groups found.
#[derive(Debug, Clone)]
pub struct ModelGraph {
    graph: DiGraph<Node, Edge>,
    order: Vec<NodeIndex>,
    groups: Vec<PrunableGroup>,
    /// Convs and linear layers left unpruned, with the reason.
    pinned: Vec<Pinned>,
    /// Whether normalised widths (a transformer's residual stream) are prunable.
    residual_width: bool,
}

impl ModelGraph {
    /// The underlying petgraph graph.
    pub fn graph(&self) -> &DiGraph<Node, Edge> {
        &self.graph
    }

    /// Nodes in execution (topological) order; ties keep insertion order.
    pub fn order(&self) -> &[NodeIndex] {
        &self.order
    }

    pub fn node(&self, index: NodeIndex) -> &Node {
        &self.graph[index]
    }

    /// Inputs of a node, ordered by slot.
    pub fn inputs(&self, index: NodeIndex) -> Vec<NodeIndex> {
        let mut edges: Vec<_> = self
            .graph
            .edges_directed(index, Direction::Incoming)
            .map(|e| (e.weight().slot, e.source()))
            .collect();
        edges.sort();
        edges.into_iter().map(|(_, source)| source).collect()
    }

    /// Nodes that read this node's output.
    pub fn consumers(&self, index: NodeIndex) -> Vec<NodeIndex> {
        let mut out: Vec<_> = self
            .graph
            .neighbors_directed(index, Direction::Outgoing)
            .collect();
        out.sort();
        out
    }

    /// The node with this name.
    pub fn find(&self, name: &str) -> Option<NodeIndex> {
        self.order
            .iter()
            .copied()
            .find(|&i| self.graph[i].name == name)
    }

    /// Shape of one input sample.
    pub fn input_shape(&self) -> &Shape {
        &self.graph[self.order[0]].out_shape
    }

    /// Shape of the model's output (e.g. `[classes]`).
    pub fn output_shape(&self) -> &Shape {
        let last = self.order[self.order.len() - 1];
        &self.graph[last].out_shape
    }

    pub fn node_params(&self, index: NodeIndex) -> usize {
        self.graph[index].op.params()
    }

    /// Multiply-accumulates of one node for one sample.
    pub fn node_flops(&self, index: NodeIndex) -> usize {
        let node = &self.graph[index];
        node.op.flops(&node.out_shape)
    }

    pub fn total_params(&self) -> usize {
        self.order.iter().map(|&i| self.node_params(i)).sum()
    }

    /// Multiply-accumulates for one sample.
    pub fn total_flops(&self) -> usize {
        self.order.iter().map(|&i| self.node_flops(i)).sum()
    }

    /// The same graph with the widths LayerNorms normalise over prunable too (the residual
    /// stream of a transformer becomes one group, coupled across every block; its
    /// LayerNorms normalise over the kept channels only). Groups and pinned layers are found
    /// again.
    pub fn with_residual_width(mut self) -> Result<ModelGraph> {
        (self.groups, self.pinned) = groups::find_groups(&self, true)?;
        self.residual_width = true;
        Ok(self)
    }

    /// Whether [`with_residual_width`](Self::with_residual_width) made it.
    pub fn residual_width(&self) -> bool {
        self.residual_width
    }

    /// Channel groups that can be pruned together, in graph order.
    pub fn prunable_groups(&self) -> &[PrunableGroup] {
        &self.groups
    }

    /// Convs and linear layers whose output channels are never pruned, and why.
    pub fn pinned(&self) -> &[Pinned] {
        &self.pinned
    }

    /// Position of a node in execution order.
    pub fn position(&self, index: NodeIndex) -> usize {
        self.order
            .iter()
            .position(|&i| i == index)
            .unwrap_or(usize::MAX)
    }
}

/// Builds a [`ModelGraph`] node by node; `build` infers shapes and finds prunable groups.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    graph: DiGraph<Node, Edge>,
}

impl GraphBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node reading `inputs` (in slot order) and returns its index.
    pub fn add(&mut self, name: impl Into<String>, op: Op, inputs: &[NodeIndex]) -> NodeIndex {
        let index = self.graph.add_node(Node {
            name: name.into(),
            op,
            out_shape: Vec::new(),
        });
        for (slot, &input) in inputs.iter().enumerate() {
            self.graph.add_edge(input, index, Edge { slot });
        }
        index
    }

    /// Shape of a node added earlier, inferred on demand (builders use it to size the next op).
    pub fn shape_of(&self, index: NodeIndex) -> Result<Shape> {
        let graph = infer_shapes(self.graph.clone())?;
        Ok(graph[index].out_shape.clone())
    }

    pub fn build(self) -> Result<ModelGraph> {
        let graph = infer_shapes(self.graph)?;
        let order = topological_order(&graph)?;
        check_names(&graph)?;
        check_ties(&graph)?;
        let mut model = ModelGraph {
            graph,
            order,
            groups: Vec::new(),
            pinned: Vec::new(),
            residual_width: false,
        };
        (model.groups, model.pinned) = groups::find_groups(&model, false)?;
        Ok(model)
    }
}

fn check_names(graph: &DiGraph<Node, Edge>) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for node in graph.node_weights() {
        if node.name.is_empty() || node.name.split('.').any(str::is_empty) {
            return Err(Error::graph(
                &node.name,
                "names must be non-empty and not start, end or double a '.'",
            ));
        }
        if !seen.insert(node.name.as_str()) {
            return Err(Error::graph(&node.name, "two nodes share this name"));
        }
    }
    Ok(())
}

/// An LM head's `embedding` must name an Embedding of the same vocabulary and width.
fn check_ties(graph: &DiGraph<Node, Edge>) -> Result<()> {
    for node in graph.node_weights() {
        let Op::LmHead {
            vocab,
            width,
            embedding,
        } = &node.op
        else {
            continue;
        };
        let tied = graph.node_weights().find(|n| &n.name == embedding);
        match tied.map(|n| &n.op) {
            Some(Op::Embedding { vocab: v, width: w }) if v == vocab && w == width => {}
            Some(_) => {
                return Err(Error::graph(
                    &node.name,
                    format!("ties its weight to `{embedding}`, which is not an Embedding of {vocab} ids and width {width}"),
                ))
            }
            None => {
                return Err(Error::graph(
                    &node.name,
                    format!("ties its weight to `{embedding}`, and the graph has no such node"),
                ))
            }
        }
    }
    Ok(())
}

/// Kahn's algorithm, taking the lowest node index first so the order is the insertion order
/// wherever the edges allow it.
fn topological_order(graph: &DiGraph<Node, Edge>) -> Result<Vec<NodeIndex>> {
    let mut indegree: Vec<usize> = graph
        .node_indices()
        .map(|i| graph.neighbors_directed(i, Direction::Incoming).count())
        .collect();
    let mut ready: std::collections::BTreeSet<NodeIndex> = graph
        .node_indices()
        .filter(|i| indegree[i.index()] == 0)
        .collect();
    let mut order = Vec::with_capacity(graph.node_count());
    while let Some(next) = ready.pop_first() {
        order.push(next);
        for edge in graph.edges_directed(next, Direction::Outgoing) {
            let target = edge.target();
            indegree[target.index()] -= 1;
            if indegree[target.index()] == 0 {
                ready.insert(target);
            }
        }
    }
    if order.len() != graph.node_count() {
        let stuck = graph
            .node_indices()
            .find(|i| indegree[i.index()] > 0)
            .map(|i| graph[i].name.clone())
            .unwrap_or_default();
        return Err(Error::graph(
            stuck,
            "the graph has a cycle through this node",
        ));
    }
    let inputs: Vec<_> = order
        .iter()
        .filter(|&&i| matches!(graph[i].op, Op::Input { .. }))
        .collect();
    let outputs: Vec<_> = order
        .iter()
        .filter(|&&i| matches!(graph[i].op, Op::Output))
        .collect();
    if inputs.len() != 1 || order.first() != inputs.first().copied() {
        return Err(Error::graph(
            "<graph>",
            "a graph needs exactly one Input node, first",
        ));
    }
    if outputs.len() != 1 || order.last() != outputs.first().copied() {
        return Err(Error::graph(
            "<graph>",
            "a graph needs exactly one Output node, last",
        ));
    }
    Ok(order)
}

fn infer_shapes(mut graph: DiGraph<Node, Edge>) -> Result<DiGraph<Node, Edge>> {
    // Shapes are needed before the Input/Output checks, so walk in a plain topological order.
    let order = petgraph::algo::toposort(&graph, None)
        .map_err(|cycle| Error::graph(graph[cycle.node_id()].name.clone(), "cycle"))?;
    for index in order {
        let mut edges: Vec<_> = graph
            .edges_directed(index, Direction::Incoming)
            .map(|e| (e.weight().slot, e.source()))
            .collect();
        edges.sort();
        let shapes: Vec<&Shape> = edges.iter().map(|(_, s)| &graph[*s].out_shape).collect();
        let shape = graph[index]
            .op
            .infer_shape(&shapes)
            .map_err(|message| Error::graph(graph[index].name.clone(), message))?;
        graph[index].out_shape = shape;
    }
    Ok(graph)
}
