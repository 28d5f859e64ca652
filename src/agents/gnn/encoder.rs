//! A graph encoder over any `ModelGraph`: direction-aware GCN message passing over the
//! model's own edges, on real node features, pooled into one embedding per prunable unit.
//!
//! Node features (all scale-free, so one encoder reads a LeNet and a ResNet alike): the op
//! type (one-hot over `OP_TYPES`), log-scaled channels in and out, stride, kernel, input
//! feature-map size and parameter count, the node's share of the model's params and FLOPs;
//! then the dynamic state: the keep ratio currently given to the node's unit (1 for nodes in
//! no unit), the budget, the budget metric already removed and still prunable. The node's
//! position is deliberately not a feature: relabelling the graph's nodes must not change the
//! actions (the encoder is permutation-equivariant).
//!
//! One layer: `h' = relu(W_s h + W_f Â_f h + W_b Â_b h) + h`, with `Â_f` the mean over a
//! node's inputs (forward edges) and `Â_b` the mean over its consumers (backward edges).
//! Residual adds and depthwise convolutions reach the encoder through these edges and the
//! op-type features, never through per-model code. Cost: linear in nodes plus edges.

use crate::graph::{ModelGraph, OP_TYPES};
use crate::prune::{CostModel, UnitKind};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Static features per node (after the one-hot op type).
const STATIC: usize = 8;
/// Dynamic features per node.
const DYNAMIC: usize = 4;
/// Length of a node's feature vector.
pub const NODE_FEATURES: usize = OP_TYPES.len() + STATIC + DYNAMIC;

/// The dynamic part of the state: what the current episode has decided so far.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicState {
    /// The keep ratio currently given to each unit (1 before any decision).
    pub keeps: Vec<f64>,
    /// The budget: fraction of the metric to keep.
    pub budget: f64,
    /// Fraction of the budget metric already removed.
    pub reduced: f64,
    /// Fraction of the budget metric that the units still to decide could remove.
    pub remaining: f64,
}

impl DynamicState {
    /// The state before any decision: every unit kept whole.
    pub fn initial(units: usize, budget: f64) -> Self {
        Self {
            keeps: vec![1.0; units],
            budget,
            reduced: 0.0,
            remaining: 1.0,
        }
    }
}

/// One graph ready for the encoder: node features, edges, and which nodes make each unit.
#[derive(Debug)]
pub struct GraphInput {
    /// `[nodes, NODE_FEATURES]`.
    pub features: Tensor,
    /// Edge sources and targets (node indices), `[edges]` each.
    src: Tensor,
    dst: Tensor,
    /// `1 / in-degree` of each edge's target and `1 / out-degree` of its source, `[edges, 1]`.
    forward_weight: Tensor,
    backward_weight: Tensor,
    /// Unit memberships: node index and unit index of each, and `1 / nodes in the unit`.
    member_node: Tensor,
    member_unit: Tensor,
    member_weight: Tensor,
    nodes: usize,
    units: usize,
}

fn log_scaled(value: usize, scale: f64) -> f64 {
    (1.0 + value as f64).ln() / scale
}

impl GraphInput {
    /// Builds the input for `costs`' graph and units (channel groups or weight layers) at the
    /// given dynamic state.
    pub fn new(costs: &CostModel, state: &DynamicState, device: Device) -> Self {
        let graph: &ModelGraph = costs.graph();
        let n = graph.graph().node_count();
        let total_params = graph.total_params().max(1) as f64;
        let total_flops = graph.total_flops().max(1) as f64;
        // Which nodes make each unit.
        let mut members: Vec<(usize, usize)> = Vec::new();
        for (u, unit) in costs.units().iter().enumerate() {
            match unit.kind {
                UnitKind::Layer(i) => members.push((i.index(), u)),
                UnitKind::Group(g) => {
                    let group = &graph.prunable_groups()[g];
                    for i in group.producers.iter().chain(&group.members) {
                        members.push((i.index(), u));
                    }
                }
            }
        }
        let mut node_keep = vec![1.0; n];
        for &(node, unit) in &members {
            node_keep[node] = state.keeps.get(unit).copied().unwrap_or(1.0);
        }
        let mut rows = vec![0f32; n * NODE_FEATURES];
        for index in graph.graph().node_indices() {
            let f = graph.node_features(index);
            let row = &mut rows[index.index() * NODE_FEATURES..][..NODE_FEATURES];
            row[f.op_type] = 1.0;
            let values = [
                log_scaled(f.c_in, 8.0),
                log_scaled(f.c_out, 8.0),
                f.stride as f64 / 4.0,
                f.kernel as f64 / 8.0,
                log_scaled(f.feature_map, 10.0),
                log_scaled(f.params, 16.0),
                f.params as f64 / total_params,
                f.flops as f64 / total_flops,
                node_keep[index.index()],
                state.budget,
                state.reduced,
                state.remaining,
            ];
            for (slot, v) in row[OP_TYPES.len()..].iter_mut().zip(values) {
                *slot = v as f32;
            }
        }
        let edges: Vec<(usize, usize)> = graph
            .graph()
            .edge_indices()
            .filter_map(|e| graph.graph().edge_endpoints(e))
            .map(|(a, b)| (a.index(), b.index()))
            .collect();
        let (mut in_degree, mut out_degree) = (vec![0usize; n], vec![0usize; n]);
        for &(a, b) in &edges {
            out_degree[a] += 1;
            in_degree[b] += 1;
        }
        let mut unit_size = vec![0usize; costs.units().len()];
        for &(_, u) in &members {
            unit_size[u] += 1;
        }
        let long = |v: Vec<i64>| Tensor::from_slice(&v).to_device(device);
        let column = |v: Vec<f32>| {
            let len = v.len() as i64;
            Tensor::from_slice(&v).reshape([len, 1]).to_device(device)
        };
        Self {
            features: Tensor::from_slice(&rows)
                .reshape([n as i64, NODE_FEATURES as i64])
                .to_device(device),
            src: long(edges.iter().map(|e| e.0 as i64).collect()),
            dst: long(edges.iter().map(|e| e.1 as i64).collect()),
            forward_weight: column(edges.iter().map(|e| 1.0 / in_degree[e.1] as f32).collect()),
            backward_weight: column(edges.iter().map(|e| 1.0 / out_degree[e.0] as f32).collect()),
            member_node: long(members.iter().map(|m| m.0 as i64).collect()),
            member_unit: long(members.iter().map(|m| m.1 as i64).collect()),
            member_weight: column(
                members
                    .iter()
                    .map(|m| 1.0 / unit_size[m.1] as f32)
                    .collect(),
            ),
            nodes: n,
            units: costs.units().len(),
        }
    }

    pub fn nodes(&self) -> usize {
        self.nodes
    }

    pub fn units(&self) -> usize {
        self.units
    }

    /// Sums `values[from]` (rows, scaled by `weight`) into rows `to` of a `[rows, width]` zero
    /// tensor.
    fn scatter(
        values: &Tensor,
        from: &Tensor,
        to: &Tensor,
        weight: &Tensor,
        rows: usize,
    ) -> Tensor {
        let width = values.size()[1];
        let messages = values.index_select(0, from) * weight;
        Tensor::zeros([rows as i64, width], (Kind::Float, values.device()))
            .index_add(0, to, &messages)
    }
}

/// The encoder: an input projection and `layers` message-passing layers of width `hidden`.
#[derive(Debug)]
pub struct GraphEncoder {
    input: nn::Linear,
    layers: Vec<[nn::Linear; 3]>,
    hidden: i64,
}

impl GraphEncoder {
    pub fn new(path: &nn::Path, hidden: usize, layers: usize) -> Self {
        let hidden = hidden as i64;
        let input = nn::linear(
            path / "input",
            NODE_FEATURES as i64,
            hidden,
            Default::default(),
        );
        let layers = (0..layers)
            .map(|l| {
                let p = path / format!("layer{l}");
                [
                    nn::linear(&p / "self", hidden, hidden, Default::default()),
                    nn::linear(
                        &p / "forward",
                        hidden,
                        hidden,
                        nn::LinearConfig {
                            bias: false,
                            ..Default::default()
                        },
                    ),
                    nn::linear(
                        &p / "backward",
                        hidden,
                        hidden,
                        nn::LinearConfig {
                            bias: false,
                            ..Default::default()
                        },
                    ),
                ]
            })
            .collect();
        Self {
            input,
            layers,
            hidden,
        }
    }

    pub fn hidden(&self) -> i64 {
        self.hidden
    }

    /// Node embeddings, `[nodes, hidden]`.
    pub fn nodes(&self, g: &GraphInput) -> Tensor {
        let mut h = self.input.forward(&g.features).relu();
        for [own, forward, backward] in &self.layers {
            let from_inputs = GraphInput::scatter(&h, &g.src, &g.dst, &g.forward_weight, g.nodes);
            let from_consumers =
                GraphInput::scatter(&h, &g.dst, &g.src, &g.backward_weight, g.nodes);
            h = (own.forward(&h)
                + forward.forward(&from_inputs)
                + backward.forward(&from_consumers))
            .relu()
                + h;
        }
        h
    }

    /// Unit embeddings (the mean of each unit's nodes), `[units, hidden]`, and the graph
    /// embedding (the mean of all nodes), `[hidden]`.
    pub fn units(&self, g: &GraphInput) -> (Tensor, Tensor) {
        let h = self.nodes(g);
        let units = GraphInput::scatter(
            &h,
            &g.member_node,
            &g.member_unit,
            &g.member_weight,
            g.units,
        );
        (units, h.mean_dim(0, false, Kind::Float))
    }
}
