//! DOT and JSON views of a model graph.

use super::{ModelGraph, NodeFeatures, Op};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// One node in the JSON export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeJson {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<String>,
    pub shape: Vec<usize>,
    pub params: usize,
    pub flops: usize,
    /// Index of the prunable group the node's output channels belong to, if any.
    pub group: Option<usize>,
    pub features: NodeFeatures,
}

/// One prunable group in the JSON export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupJson {
    pub name: String,
    pub channels: usize,
    pub producers: Vec<String>,
    pub members: Vec<String>,
    pub consumers: Vec<String>,
    /// Channels pruned together (an attention head's width); left out when 1, so the
    /// fingerprints of models without attention did not change.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub block: usize,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// A conv or linear layer left unpruned in the JSON export: why, and at which node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinnedJson {
    pub node: String,
    pub reason: String,
    pub at: String,
}

/// The whole graph as `autoprune graph --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GraphJson {
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub nodes: Vec<NodeJson>,
    /// `[from, to]` node names, in the target's input order.
    pub edges: Vec<[String; 2]>,
    pub total_params: usize,
    pub total_flops: usize,
    pub prunable_params: usize,
    pub prunable_flops: usize,
    pub groups: Vec<GroupJson>,
    /// Left out of fingerprints (`prune::fingerprint` hashes the graph without it), so adding
    /// it changed no model's identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pinned: Vec<PinnedJson>,
}

impl ModelGraph {
    /// Index of the group whose channels a node produces or carries.
    pub fn group_of(&self, index: petgraph::graph::NodeIndex) -> Option<usize> {
        self.prunable_groups()
            .iter()
            .position(|g| g.producers.contains(&index) || g.members.contains(&index))
    }

    /// Parameters in layers that some prunable group touches (as producer, member or consumer).
    pub fn prunable_params(&self) -> usize {
        self.prunable_nodes().map(|i| self.node_params(i)).sum()
    }

    /// Multiply-accumulates in layers that some prunable group touches.
    pub fn prunable_flops(&self) -> usize {
        self.prunable_nodes().map(|i| self.node_flops(i)).sum()
    }

    fn prunable_nodes(&self) -> impl Iterator<Item = petgraph::graph::NodeIndex> + '_ {
        self.order().iter().copied().filter(|&i| {
            self.prunable_groups().iter().any(|g| {
                g.producers.contains(&i)
                    || g.members.contains(&i)
                    || g.consumers.iter().chain(&g.sliced).any(|c| c.node == i)
            })
        })
    }

    /// Rebuilds a graph from its JSON export (nodes, their ops and inputs by name).
    pub fn from_json(json: &GraphJson) -> crate::error::Result<ModelGraph> {
        let mut builder = super::GraphBuilder::new();
        let mut index = std::collections::HashMap::new();
        for node in &json.nodes {
            let inputs = node
                .inputs
                .iter()
                .map(|name| {
                    index.get(name.as_str()).copied().ok_or_else(|| {
                        crate::error::Error::graph(
                            &node.name,
                            format!("input `{name}` is not defined before it"),
                        )
                    })
                })
                .collect::<crate::error::Result<Vec<_>>>()?;
            index.insert(
                node.name.as_str(),
                builder.add(node.name.clone(), node.op.clone(), &inputs),
            );
        }
        builder.build()
    }

    pub fn to_json(&self) -> GraphJson {
        let name = |i: petgraph::graph::NodeIndex| self.node(i).name.clone();
        let nodes = self
            .order()
            .iter()
            .map(|&i| NodeJson {
                name: name(i),
                op: self.node(i).op.clone(),
                inputs: self.inputs(i).into_iter().map(name).collect(),
                shape: self.node(i).out_shape.clone(),
                params: self.node_params(i),
                flops: self.node_flops(i),
                group: self.group_of(i),
                features: self.node_features(i),
            })
            .collect();
        let edges = self
            .order()
            .iter()
            .flat_map(|&to| {
                self.inputs(to)
                    .into_iter()
                    .map(move |from| [name(from), name(to)])
            })
            .collect();
        let groups = self
            .prunable_groups()
            .iter()
            .map(|g| GroupJson {
                name: g.name.clone(),
                channels: g.channels,
                producers: g.producers.iter().map(|&i| name(i)).collect(),
                members: g
                    .members
                    .iter()
                    .chain(g.sliced.iter().map(|c| &c.node))
                    .map(|&i| name(i))
                    .collect(),
                consumers: g.consumers.iter().map(|c| name(c.node)).collect(),
                block: g.block,
            })
            .collect();
        GraphJson {
            input_shape: self.input_shape().clone(),
            output_shape: self.output_shape().clone(),
            nodes,
            edges,
            total_params: self.total_params(),
            total_flops: self.total_flops(),
            prunable_params: self.prunable_params(),
            prunable_flops: self.prunable_flops(),
            groups,
            pinned: self
                .pinned()
                .iter()
                .map(|p| PinnedJson {
                    node: name(p.node),
                    reason: p.reason.to_string(),
                    at: name(p.at),
                })
                .collect(),
        }
    }

    /// Graphviz DOT: one box per node with its shape and cost; nodes of one prunable group
    /// share a fill colour.
    pub fn to_dot(&self) -> String {
        const PALETTE: [&str; 8] = [
            "#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5",
        ];
        let mut dot = String::from("digraph model {\n  rankdir=TB;\n  node [shape=box, style=filled, fillcolor=white, fontname=\"Helvetica\"];\n");
        for &i in self.order() {
            let node = self.node(i);
            let fill = self
                .group_of(i)
                .map(|g| PALETTE[g % PALETTE.len()])
                .unwrap_or("white");
            let group = self
                .group_of(i)
                .map(|g| format!("\\ngroup {g}"))
                .unwrap_or_default();
            let _ = writeln!(
                dot,
                "  n{} [label=\"{}\\n{} {:?}\\nparams {} MACs {}{}\", fillcolor=\"{}\"];",
                i.index(),
                node.name.replace('"', "'"),
                node.op.type_name(),
                node.out_shape,
                self.node_params(i),
                self.node_flops(i),
                group,
                fill
            );
        }
        for &to in self.order() {
            for from in self.inputs(to) {
                let _ = writeln!(dot, "  n{} -> n{};", from.index(), to.index());
            }
        }
        dot.push_str("}\n");
        dot
    }
}
