//! Prunable units and the one place that counts what a policy keeps.
//!
//! A policy gives one keep ratio per *unit*: per weight layer (conv or linear) for
//! unstructured and N:M pruning, per prunable channel group for channel pruning. The
//! [`CostModel`] turns keep ratios into kept elements (rounded to whole weights, whole
//! channels or whole N-of-M patterns) and those into params and multiply-accumulates.

use super::latency::{LatencyTable, Sizes};
use crate::error::Result;
use crate::graph::{ModelGraph, Op};
use crate::prune::{Granularity, Metric};
use petgraph::graph::NodeIndex;
use std::sync::Arc;

/// What one keep ratio applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitKind {
    /// The weight tensor of one conv or linear node.
    Layer(NodeIndex),
    /// One prunable channel group (index into `ModelGraph::prunable_groups`).
    Group(usize),
}

/// One prunable unit: its name (the node's or group's), what it is, and how many elements a
/// keep ratio counts over (weights, or channels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub name: String,
    pub kind: UnitKind,
    pub size: usize,
}

/// Absolute and relative counts of a pruned model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counts {
    /// Params of the whole pruned model.
    pub params: usize,
    /// Multiply-accumulates per sample of the whole pruned model.
    pub flops: usize,
    /// Fraction of the dense model's prunable params that is kept.
    pub params_kept: f64,
    /// Fraction of the dense model's prunable multiply-accumulates that is kept.
    pub flops_kept: f64,
    /// Predicted latency (ms) of the pruned model, with a latency table.
    pub latency_ms: Option<f64>,
    /// Predicted latency as a fraction of the dense model's predicted latency.
    pub latency_kept: Option<f64>,
}

impl Counts {
    /// The kept fraction of the given metric.
    pub fn kept(&self, metric: Metric) -> f64 {
        match metric {
            Metric::Params => self.params_kept,
            Metric::Flops => self.flops_kept,
            // A latency budget is only built with a table (the wall checks).
            Metric::Latency => self.latency_kept.unwrap_or(1.0),
        }
    }
}

/// Rows and row length of a weight seen as `[rows, input]` with the input dimension last
/// (the dimension N:M patterns run along).
pub fn nm_layout(op: &Op) -> Option<(usize, usize)> {
    let shape = op.weight_shape()?;
    let input = shape[1];
    Some((shape.iter().product::<usize>() / input.max(1), input))
}

/// Units and costs of one model under one granularity.
#[derive(Debug, Clone)]
pub struct CostModel {
    granularity: Granularity,
    units: Vec<Unit>,
    graph: ModelGraph,
    dense_params: usize,
    dense_flops: usize,
    prunable_params: usize,
    prunable_flops: usize,
    /// By node index: whether a prunable group touches the node (channel granularity).
    touched: Vec<bool>,
    /// The latency table, which of its tables each node uses (by node index), and the
    /// predicted latency of the dense model.
    latency: Option<(Arc<LatencyTable>, Vec<Option<usize>>, f64)>,
}

/// Elements kept of `size` for a keep ratio: rounded, at least one, at most all.
pub fn kept_count(keep: f64, size: usize) -> usize {
    let keep = if keep.is_finite() {
        keep.clamp(0.0, 1.0)
    } else {
        0.0
    };
    ((keep * size as f64).round() as usize).clamp(1.min(size), size)
}

/// N of an N:M pattern for a keep ratio: rounded to a whole count, at least 1.
pub fn nm_count(keep: f64, m: usize) -> usize {
    kept_count(keep, m)
}

impl CostModel {
    pub fn new(graph: &ModelGraph, granularity: Granularity) -> Self {
        let units: Vec<Unit> = match granularity {
            Granularity::Channel => graph
                .prunable_groups()
                .iter()
                .enumerate()
                .map(|(i, g)| Unit {
                    name: g.name.clone(),
                    kind: UnitKind::Group(i),
                    size: g.channels,
                })
                .collect(),
            _ => graph
                .order()
                .iter()
                .filter(|&&i| matches!(graph.node(i).op, Op::Conv2d { .. } | Op::Linear { .. }))
                .map(|&i| Unit {
                    name: graph.node(i).name.clone(),
                    kind: UnitKind::Layer(i),
                    size: graph.node(i).op.weight_count(),
                })
                .collect(),
        };
        let (prunable_params, prunable_flops) = match granularity {
            Granularity::Channel => (graph.prunable_params(), graph.prunable_flops()),
            _ => units.iter().fold((0, 0), |(p, f), u| match u.kind {
                UnitKind::Layer(i) => (p + u.size, f + graph.node_flops(i)),
                UnitKind::Group(_) => (p, f),
            }),
        };
        let mut touched = vec![false; graph.graph().node_count()];
        for g in graph.prunable_groups() {
            let nodes = g.producers.iter().chain(&g.members).copied();
            let uses = g.consumers.iter().chain(&g.sliced).map(|c| c.node);
            for node in nodes.chain(uses) {
                touched[node.index()] = true;
            }
        }
        Self {
            granularity,
            units,
            touched,
            graph: graph.clone(),
            dense_params: graph.total_params(),
            dense_flops: graph.total_flops(),
            prunable_params,
            prunable_flops,
            latency: None,
        }
    }

    /// The same cost model predicting latency with `table` (measured for this graph).
    pub fn with_latency(mut self, table: LatencyTable) -> Result<Self> {
        let index = table.index(&self.graph)?;
        let units = self.units.len();
        let dense = table.predict(&index, &self.node_sizes(&vec![1.0; units]));
        self.latency = Some((Arc::new(table), index, dense));
        Ok(self)
    }

    /// The latency table, if one was attached.
    pub fn latency_table(&self) -> Option<&LatencyTable> {
        self.latency.as_ref().map(|(t, _, _)| t.as_ref())
    }

    /// Predicted latency (ms) of the model pruned by `keeps` (None without a table). Only
    /// channel pruning changes it: unstructured and N:M models run dense kernels.
    pub fn predicted_latency(&self, keeps: &[f64]) -> Option<f64> {
        let (table, index, _) = self.latency.as_ref()?;
        Some(table.predict(index, &self.node_sizes(keeps)))
    }

    /// Each node's input and output size (the first dimension of a sample's shape: channels,
    /// or features) once `keeps` is applied; the dense sizes unless pruning is by channel.
    pub fn node_sizes(&self, keeps: &[f64]) -> Vec<Sizes> {
        self.sizes_of(&self.resized_ops(keeps))
    }

    /// The conv, linear, BatchNorm and attention ops `keeps` resizes (none unless pruning is by channel).
    fn resized_ops(&self, keeps: &[f64]) -> Vec<Option<Op>> {
        match self.granularity {
            Granularity::Channel => self.channel_ops(keeps),
            _ => vec![None; self.graph.graph().node_count()],
        }
    }

    /// Each node's input and output size with `ops` in place of the resized nodes' own.
    fn sizes_of(&self, ops: &[Option<Op>]) -> Vec<Sizes> {
        let graph = &self.graph;
        let mut sizes: Vec<Sizes> = vec![(0, 0); graph.graph().node_count()];
        for &i in graph.order() {
            let node = graph.node(i);
            let inputs = graph.inputs(i);
            let first = inputs.first().map(|j| sizes[j.index()].1);
            let dense_in = inputs
                .first()
                .map(|j| graph.node(*j).out_shape[0])
                .unwrap_or(node.out_shape[0]);
            let size = match (ops[i.index()].as_ref(), &node.op) {
                (
                    Some(Op::Conv2d {
                        in_channels,
                        out_channels,
                        ..
                    }),
                    _,
                ) => (*in_channels, *out_channels),
                (
                    Some(Op::Linear {
                        in_features,
                        out_features,
                        ..
                    }),
                    _,
                ) => (*in_features, *out_features),
                (Some(Op::BatchNorm { features }), _) => (*features, *features),
                (_, Op::Input { shape }) => (shape[0], shape[0]),
                (_, Op::Conv2d { out_channels, .. }) => (first.unwrap_or(dense_in), *out_channels),
                (_, Op::Linear { out_features, .. }) => (first.unwrap_or(dense_in), *out_features),
                (_, Op::Concat) => {
                    let total = inputs.iter().map(|j| sizes[j.index()].1).sum();
                    (total, total)
                }
                (_, Op::Narrow { len, .. }) => (first.unwrap_or(dense_in), *len),
                (_, Op::Flatten) => {
                    let input = first.unwrap_or(dense_in);
                    (input, node.out_shape[0] / dense_in.max(1) * input)
                }
                _ => {
                    let input = first.unwrap_or(dense_in);
                    (input, input)
                }
            };
            sizes[i.index()] = size;
        }
        sizes
    }

    /// The model's graph with every conv, linear and BatchNorm node resized for channel keep
    /// ratios `keeps`: the architecture of the slimmed model, without its weights (what
    /// timing needs).
    pub fn pruned_graph(&self, keeps: &[f64]) -> Result<ModelGraph> {
        let graph = &self.graph;
        let ops = self.resized_ops(keeps);
        let mut builder = crate::graph::GraphBuilder::new();
        let mut index = vec![NodeIndex::new(0); graph.graph().node_count()];
        for &i in graph.order() {
            let node = graph.node(i);
            let op = ops[i.index()].clone().unwrap_or_else(|| node.op.clone());
            let inputs: Vec<NodeIndex> = graph.inputs(i).iter().map(|j| index[j.index()]).collect();
            index[i.index()] = builder.add(node.name.clone(), op, &inputs);
        }
        builder.build()
    }

    pub fn units(&self) -> &[Unit] {
        &self.units
    }

    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    pub fn graph(&self) -> &ModelGraph {
        &self.graph
    }

    /// Elements (weights or channels) unit `unit` keeps at ratio `keep`.
    pub fn unit_kept(&self, unit: usize, keep: f64) -> usize {
        let u = &self.units[unit];
        match (self.granularity, &u.kind) {
            (Granularity::NOfM { m, .. }, UnitKind::Layer(i)) => {
                let (rows, len) = nm_layout(&self.graph.node(*i).op).unwrap_or((0, 0));
                let n = nm_count(keep, m);
                rows * ((len / m) * n + n.min(len % m))
            }
            (_, UnitKind::Group(g)) => {
                // Whole blocks (attention heads), at least one.
                let block = self.graph.prunable_groups()[*g].block.max(1);
                kept_count(keep, u.size / block) * block
            }
            _ => kept_count(keep, u.size),
        }
    }

    /// The smallest keep ratio that gives unit `unit` one rounding step more than `keep`
    /// does (one more weight, channel, head, or N of an N:M pattern); None when it keeps
    /// everything already.
    pub fn next_keep(&self, unit: usize, keep: f64) -> Option<f64> {
        let u = &self.units[unit];
        let steps = match (self.granularity, &u.kind) {
            (Granularity::NOfM { m, .. }, _) => m,
            (_, UnitKind::Group(g)) => u.size / self.graph.prunable_groups()[*g].block.max(1),
            _ => u.size,
        };
        let now = kept_count(keep, steps);
        (now < steps).then(|| (now + 1) as f64 / steps as f64)
    }

    /// The keep ratio each unit actually gets once rounded (for N:M, N/M). Feeding these back
    /// in gives the same counts.
    pub fn effective_keeps(&self, keeps: &[f64]) -> Vec<f64> {
        (0..self.units.len())
            .map(|u| match self.granularity {
                Granularity::NOfM { m, .. } => nm_count(keeps[u], m) as f64 / m as f64,
                _ => self.unit_kept(u, keeps[u]) as f64 / self.units[u].size.max(1) as f64,
            })
            .collect()
    }

    /// Params and multiply-accumulates kept by a policy (`keeps[i]` for unit `i`).
    pub fn counts(&self, keeps: &[f64]) -> Counts {
        assert_eq!(keeps.len(), self.units.len(), "one keep ratio per unit");
        match self.granularity {
            Granularity::Channel => self.channel_counts(keeps),
            _ => self.weight_counts(keeps),
        }
    }

    fn weight_counts(&self, keeps: &[f64]) -> Counts {
        let (mut removed_params, mut kept_flops) = (0usize, 0f64);
        for (u, unit) in self.units.iter().enumerate() {
            let UnitKind::Layer(node) = unit.kind else {
                continue;
            };
            let kept = self.unit_kept(u, keeps[u]);
            removed_params += unit.size - kept;
            kept_flops +=
                self.graph.node_flops(node) as f64 * kept as f64 / unit.size.max(1) as f64;
        }
        let removed_flops = self.prunable_flops as f64 - kept_flops;
        let (latency_ms, latency_kept) = self.latency_of(None);
        Counts {
            params: self.dense_params - removed_params,
            flops: (self.dense_flops as f64 - removed_flops).round() as usize,
            params_kept: ratio(
                (self.prunable_params - removed_params) as f64,
                self.prunable_params,
            ),
            flops_kept: ratio(kept_flops, self.prunable_flops),
            latency_ms,
            latency_kept,
        }
    }

    /// Each conv, linear and BatchNorm node resized for channel keep ratios `keeps` (None:
    /// the node keeps its op).
    fn channel_ops(&self, keeps: &[f64]) -> Vec<Option<Op>> {
        let graph = &self.graph;
        let n = graph.graph().node_count();
        let mut out_channels: Vec<Option<usize>> = vec![None; n];
        let mut removed_inputs = vec![0usize; n];
        for (u, unit) in self.units.iter().enumerate() {
            let UnitKind::Group(g) = unit.kind else {
                continue;
            };
            let group = &graph.prunable_groups()[g];
            let kept = self.unit_kept(u, keeps[u]);
            for &node in group.producers.iter().chain(&group.members) {
                out_channels[node.index()] = Some(kept);
            }
            for usage in group.consumers.iter().chain(&group.sliced) {
                removed_inputs[usage.node.index()] += (group.channels - kept) * usage.repeat;
            }
        }
        let mut ops = vec![None; n];
        for &i in graph.order() {
            let node = graph.node(i);
            ops[i.index()] = match (&node.op, out_channels[i.index()]) {
                (Op::Conv2d { .. }, Some(c)) if node.op.is_depthwise() => {
                    Some(resize(&node.op, c, c))
                }
                // A sliced member (after a Concat): what its groups removed.
                (Op::Conv2d { in_channels, .. }, None)
                    if node.op.is_depthwise() && removed_inputs[i.index()] > 0 =>
                {
                    let c = in_channels - removed_inputs[i.index()];
                    Some(resize(&node.op, c, c))
                }
                (Op::BatchNorm { features }, None) if removed_inputs[i.index()] > 0 => {
                    Some(Op::BatchNorm {
                        features: features - removed_inputs[i.index()],
                    })
                }
                (Op::Conv2d { in_channels, .. }, out) => {
                    let out = out.unwrap_or_else(|| node.out_shape[0]);
                    Some(resize(
                        &node.op,
                        in_channels - removed_inputs[i.index()],
                        out,
                    ))
                }
                (
                    Op::Linear {
                        in_features,
                        out_features,
                        ..
                    },
                    out,
                ) => Some(resize(
                    &node.op,
                    in_features - removed_inputs[i.index()],
                    out.unwrap_or(*out_features),
                )),
                (Op::BatchNorm { .. }, Some(c)) => Some(Op::BatchNorm { features: c }),
                // A residual stream's (with `residual_width`): the embeddings, class token
                // and LayerNorms hold its channels; the LM head reads them.
                (Op::LayerNorm { eps, .. }, Some(c)) => Some(Op::LayerNorm {
                    features: c,
                    eps: *eps,
                }),
                (Op::LayerNorm { features, eps }, None) if removed_inputs[i.index()] > 0 => {
                    Some(Op::LayerNorm {
                        features: features - removed_inputs[i.index()],
                        eps: *eps,
                    })
                }
                (Op::Embedding { vocab, .. }, Some(c)) => Some(Op::Embedding {
                    vocab: *vocab,
                    width: c,
                }),
                (Op::PosEmbedding { tokens, .. }, Some(c)) => Some(Op::PosEmbedding {
                    tokens: *tokens,
                    width: c,
                }),
                (Op::ClassToken { .. }, Some(c)) => Some(Op::ClassToken { width: c }),
                (
                    Op::LmHead {
                        vocab,
                        width,
                        embedding,
                    },
                    None,
                ) if removed_inputs[i.index()] > 0 => Some(Op::LmHead {
                    vocab: *vocab,
                    width: width - removed_inputs[i.index()],
                    embedding: embedding.clone(),
                }),
                (
                    Op::Attention {
                        head_dim, causal, ..
                    },
                    Some(c),
                ) => Some(Op::Attention {
                    heads: c / head_dim,
                    head_dim: *head_dim,
                    causal: *causal,
                }),
                _ => None,
            };
        }
        ops
    }

    /// Params, multiply-accumulates and predicted latency after channel pruning.
    fn channel_counts(&self, keeps: &[f64]) -> Counts {
        let graph = &self.graph;
        let ops = self.channel_ops(keeps);
        let (mut params, mut flops, mut touched_params, mut touched_flops) = (0, 0, 0, 0);
        for &i in graph.order() {
            let node = graph.node(i);
            let (p, f) = match &ops[i.index()] {
                Some(op) => (op.params(), op.flops(&node.out_shape)),
                None => (graph.node_params(i), graph.node_flops(i)),
            };
            params += p;
            flops += f;
            if self.touched[i.index()] {
                touched_params += p;
                touched_flops += f;
            }
        }
        let (latency_ms, latency_kept) = self.latency_of(Some(&ops));
        Counts {
            params,
            flops,
            params_kept: ratio(touched_params as f64, self.prunable_params),
            flops_kept: ratio(touched_flops as f64, self.prunable_flops),
            latency_ms,
            latency_kept,
        }
    }

    /// Predicted latency and its fraction of the dense model's predicted latency (1 for the dense model).
    /// `ops`: the resized nodes (None: nothing resized, the dense model's latency).
    fn latency_of(&self, ops: Option<&[Option<Op>]>) -> (Option<f64>, Option<f64>) {
        let Some((table, index, dense)) = &self.latency else {
            return (None, None);
        };
        let ms = match ops {
            Some(ops) => table.predict(index, &self.sizes_of(ops)),
            None => *dense,
        };
        (Some(ms), Some(if *dense > 0.0 { ms / dense } else { 1.0 }))
    }

    /// Counts of the dense model (every keep ratio 1).
    pub fn dense(&self) -> Counts {
        self.counts(&vec![1.0; self.units.len()])
    }
}

fn ratio(part: f64, whole: usize) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part / whole as f64
    }
}

/// The same conv / linear op with other channel counts (a depthwise conv keeps one group per
/// channel). `Op::flops` reads only the spatial part of an output shape, so the full-width
/// shape still gives the pruned op's count.
pub(crate) fn resize(op: &Op, inputs: usize, outputs: usize) -> Op {
    match op {
        Op::Conv2d {
            kernel,
            stride,
            padding,
            dilation,
            groups,
            bias,
            ..
        } => Op::Conv2d {
            in_channels: inputs,
            out_channels: outputs,
            kernel: *kernel,
            stride: *stride,
            padding: *padding,
            dilation: *dilation,
            groups: if op.is_depthwise() { outputs } else { *groups },
            bias: *bias,
        },
        Op::Linear { bias, .. } => Op::Linear {
            in_features: inputs,
            out_features: outputs,
            bias: *bias,
        },
        other => other.clone(),
    }
}
