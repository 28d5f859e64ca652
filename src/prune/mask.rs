//! Importance criteria and the one mask routine every caller uses (baselines, agents,
//! evaluator, export).

use super::units::{nm_count, nm_layout, CostModel, UnitKind};
use super::Granularity;
use crate::data::Split;
use crate::error::{Error, Result};
use crate::graph::{ModelGraph, Op};
use crate::model::{GraphNet, NORM_CHANNELS};
use petgraph::graph::NodeIndex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tch::{Kind, Tensor};

/// What decides which weights or channels inside a unit go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Criterion {
    /// |w| per weight; per channel, the L1 norm.
    Magnitude,
    /// L1 norm (per channel; |w| per weight).
    L1,
    /// L2 norm (per channel; |w| per weight, which ranks alike).
    L2,
    /// First-order Taylor: mean over batches of |g ⊙ w| per weight; per channel, mean over
    /// batches of |Σ g ⊙ w| over the channel's weights (Molchanov et al. 2017).
    Taylor,
    /// SNIP saliency: |ḡ ⊙ w| with ḡ the gradient of the loss over all batches; per channel,
    /// summed over the channel's weights.
    Snip,
    /// A random ranking, fixed by the seed.
    Random,
    /// Wanda (post-training): |W_ij| · ‖X_j‖₂ over calibration inputs, compared within each
    /// output row; layers pruned in order, each seeing the already-pruned layers' outputs.
    Wanda,
    /// SparseGPT (post-training): masks chosen and the remaining weights updated by optimal
    /// brain surgeon steps on calibration inputs, layer by layer in the same order.
    #[serde(rename = "sparsegpt")]
    #[value(name = "sparsegpt")]
    SparseGpt,
}

impl Criterion {
    /// The name env files use.
    pub fn name(self) -> &'static str {
        match self {
            Criterion::Magnitude => "magnitude",
            Criterion::L1 => "l1",
            Criterion::L2 => "l2",
            Criterion::Taylor => "taylor",
            Criterion::Snip => "snip",
            Criterion::Random => "random",
            Criterion::Wanda => "wanda",
            Criterion::SparseGpt => "sparsegpt",
        }
    }

    /// Whether the evaluator prunes with this criterion on calibration inputs, layer by layer,
    /// instead of masking by a ranking fixed once per model.
    pub fn is_post_training(self) -> bool {
        matches!(self, Criterion::Wanda | Criterion::SparseGpt)
    }
}

/// Batches of the training split that gradient criteria average over.
pub const GRADIENT_BATCHES: usize = 4;
const GRADIENT_BATCH_SIZE: usize = 128;

/// Importance of every prunable weight (per element) and of every channel group (per channel).
#[derive(Debug)]
pub struct Importance {
    /// By conv / linear node: one score per weight, shaped like the weight.
    pub element: HashMap<NodeIndex, Tensor>,
    /// By group index: one score per channel.
    pub channel: Vec<Tensor>,
}

impl Importance {
    /// Scores of every weight of a GraphNet. Gradient criteria read `GRADIENT_BATCHES`
    /// batches of `train` (shuffled by `seed`); the model's weights are left as they were.
    pub fn compute(net: &GraphNet, criterion: Criterion, train: &Split, seed: u64) -> Result<Self> {
        let graph = net.graph();
        let weights = weight_nodes(graph);
        let vars = net.var_store().variables();
        let weight_of = |node: NodeIndex| -> Tensor {
            vars[&format!("{}.weight", graph.node(node).name)].detach()
        };
        // Per weight: (element score, per-output-channel score) before aggregation over groups.
        let mut element = HashMap::new();
        let mut row = HashMap::new();
        match criterion {
            // Post-training criteria rank by magnitude where a fixed ranking is asked for (the
            // global and LAMP allocators); the evaluator prunes with the criterion itself.
            Criterion::Magnitude
            | Criterion::L1
            | Criterion::L2
            | Criterion::Wanda
            | Criterion::SparseGpt => {
                for &node in &weights {
                    let w = weight_of(node);
                    let rows = if criterion == Criterion::L2 {
                        w.square()
                            .flatten(1, -1)
                            .sum_dim_intlist(1, false, Kind::Float)
                            .sqrt()
                    } else {
                        w.abs()
                            .flatten(1, -1)
                            .sum_dim_intlist(1, false, Kind::Float)
                    };
                    element.insert(node, w.abs());
                    row.insert(node, rows);
                }
            }
            Criterion::Random => {
                let mut rng = StdRng::seed_from_u64(seed);
                for &node in &weights {
                    let w = weight_of(node);
                    let values: Vec<f32> = (0..w.numel()).map(|_| rng.random()).collect();
                    let rows: Vec<f32> = (0..w.size()[0]).map(|_| rng.random()).collect();
                    element.insert(
                        node,
                        Tensor::from_slice(&values)
                            .view(w.size().as_slice())
                            .to_device(w.device()),
                    );
                    row.insert(node, Tensor::from_slice(&rows).to_device(w.device()));
                }
            }
            Criterion::Taylor | Criterion::Snip => {
                let (elem, rows) = gradient_scores(net, &weights, criterion, train, seed)?;
                element = elem;
                row = rows;
            }
        }
        let channel = graph
            .prunable_groups()
            .iter()
            .map(|g| {
                // Conv and linear producers score a channel; embeddings and class tokens
                // (a residual stream's) have no rows to score.
                g.producers
                    .iter()
                    .filter_map(|p| row.get(p))
                    .map(|r| r.shallow_clone())
                    .reduce(|a, b| a + b)
                    .unwrap_or_else(|| {
                        Tensor::zeros([g.channels as i64], (Kind::Float, net.device()))
                    })
            })
            .collect();
        Ok(Self { element, channel })
    }

    /// Each unit's scores as plain numbers (per weight, or per channel for channel pruning),
    /// for the threshold allocators.
    pub fn unit_scores(&self, costs: &CostModel) -> Result<Vec<Vec<f32>>> {
        costs
            .units()
            .iter()
            .map(|u| {
                let t = match u.kind {
                    UnitKind::Layer(node) => &self.element[&node],
                    UnitKind::Group(g) => &self.channel[g],
                };
                Ok(Vec::<f32>::try_from(
                    t.flatten(0, -1)
                        .to_kind(Kind::Float)
                        .to_device(tch::Device::Cpu),
                )?)
            })
            .collect()
    }
}

/// Conv and linear nodes, in graph order.
fn weight_nodes(graph: &ModelGraph) -> Vec<NodeIndex> {
    graph
        .order()
        .iter()
        .copied()
        .filter(|&i| matches!(graph.node(i).op, Op::Conv2d { .. } | Op::Linear { .. }))
        .collect()
}

type Scores = HashMap<NodeIndex, Tensor>;

fn gradient_scores(
    net: &GraphNet,
    weights: &[NodeIndex],
    criterion: Criterion,
    train: &Split,
    seed: u64,
) -> Result<(Scores, Scores)> {
    let graph = net.graph();
    let vars = net.var_store().variables();
    let names: Vec<String> = weights
        .iter()
        .map(|&n| format!("{}.weight", graph.node(n).name))
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut element: Scores = HashMap::new();
    let mut row: Scores = HashMap::new();
    let mut grad_sum: Scores = HashMap::new();
    let mut batches = 0usize;
    for (images, labels) in train
        .batches(GRADIENT_BATCH_SIZE, Some(&mut rng))
        .take(GRADIENT_BATCHES)
    {
        for v in vars.values() {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        // Eval mode: the scores describe the model as deployed, and BatchNorm statistics stay put.
        let loss = crate::model::cross_entropy(&net.forward_t(&images, false), &labels);
        let value = f64::try_from(&loss)?;
        if !value.is_finite() {
            return Err(Error::NonFinite {
                what: "loss while scoring weights".into(),
                value,
            });
        }
        loss.backward();
        let _guard = tch::no_grad_guard();
        for (&node, name) in weights.iter().zip(&names) {
            let w = &vars[name];
            let g = w.grad();
            let gw = &g * w;
            let e = gw.abs();
            let r = gw
                .flatten(1, -1)
                .sum_dim_intlist(1, false, Kind::Float)
                .abs();
            accumulate(&mut element, node, e);
            accumulate(&mut row, node, r);
            accumulate(&mut grad_sum, node, g.copy());
        }
        batches += 1;
    }
    for v in vars.values() {
        let mut g = v.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
    let n = batches.max(1) as f64;
    if criterion == Criterion::Snip {
        let _guard = tch::no_grad_guard();
        for (&node, name) in weights.iter().zip(&names) {
            let saliency = (&grad_sum[&node] / n * &vars[name]).abs();
            row.insert(
                node,
                saliency
                    .flatten(1, -1)
                    .sum_dim_intlist(1, false, Kind::Float),
            );
            element.insert(node, saliency);
        }
        Ok((element, row))
    } else {
        Ok((
            element.into_iter().map(|(k, v)| (k, v / n)).collect(),
            row.into_iter().map(|(k, v)| (k, v / n)).collect(),
        ))
    }
}

fn accumulate(map: &mut Scores, node: NodeIndex, value: Tensor) {
    match map.remove(&node) {
        Some(sum) => map.insert(node, sum + value),
        None => map.insert(node, value),
    };
}

/// A mask for one named tensor, broadcastable to it (1 keeps, 0 removes).
#[derive(Debug)]
pub struct Mask {
    pub tensor: String,
    pub mask: Tensor,
}

/// Turns keep ratios into masks, from rankings computed once per model and criterion.
#[derive(Debug)]
pub struct Masker {
    costs: CostModel,
    /// By unit: for unstructured, flat indices by decreasing score; for N:M, each weight's
    /// rank inside its group of M (weight-shaped); for channel, channels by decreasing score.
    rankings: Vec<Tensor>,
}

impl Masker {
    pub fn new(costs: &CostModel, importance: &Importance) -> Self {
        let rankings = costs
            .units()
            .iter()
            .map(|unit| match (&unit.kind, costs.granularity()) {
                (UnitKind::Layer(node), Granularity::NOfM { m, .. }) => {
                    nm_ranks(&importance.element[node], &costs.graph().node(*node).op, m)
                }
                (UnitKind::Layer(node), _) => descending(&importance.element[node].flatten(0, -1)),
                (UnitKind::Group(g), _) => {
                    let block = costs.graph().prunable_groups()[*g].block;
                    block_ranking(&importance.channel[*g], block)
                }
            })
            .collect();
        Self {
            costs: costs.clone(),
            rankings,
        }
    }

    pub fn costs(&self) -> &CostModel {
        &self.costs
    }

    /// A second handle on the same rankings.
    pub fn duplicate(&self) -> Self {
        Self {
            costs: self.costs.clone(),
            rankings: self.rankings.iter().map(|r| r.shallow_clone()).collect(),
        }
    }

    /// Indices of the channels group-unit `unit` keeps at ratio `keep`, ascending.
    pub fn kept_channels(&self, unit: usize, keep: f64) -> Tensor {
        let kept = self.costs.unit_kept(unit, keep) as i64;
        self.rankings[unit].narrow(0, 0, kept).sort(0, false).0
    }

    /// Masks for every tensor a policy prunes.
    pub fn masks(&self, keeps: &[f64]) -> Vec<Mask> {
        let graph = self.costs.graph();
        let values: Vec<Tensor> = self
            .costs
            .units()
            .iter()
            .enumerate()
            .map(|(u, unit)| {
                let ranking = &self.rankings[u];
                match (&unit.kind, self.costs.granularity()) {
                    (UnitKind::Layer(_), Granularity::NOfM { m, .. }) => ranking
                        .lt(nm_count(keeps[u], m) as i64)
                        .to_kind(Kind::Float),
                    (UnitKind::Layer(_), _) => {
                        let kept = self.costs.unit_kept(u, keeps[u]) as i64;
                        Tensor::zeros([unit.size as i64], (Kind::Float, ranking.device()))
                            .index_fill(0, &ranking.narrow(0, 0, kept), 1.0)
                    }
                    (UnitKind::Group(g), _) => {
                        let kept = self.costs.unit_kept(u, keeps[u]) as i64;
                        let channels = graph.prunable_groups()[*g].channels as i64;
                        Tensor::zeros([channels], (Kind::Float, ranking.device())).index_fill(
                            0,
                            &ranking.narrow(0, 0, kept),
                            1.0,
                        )
                    }
                }
            })
            .collect();
        self.masks_from(&values)
    }

    /// Each element's place in its unit's ranking as a fraction in (0, 1): `(position + ½) /
    /// size`, position 0 the most important; over a layer's weights (flat) for unstructured
    /// units, over a group's channels for channel units. A hard mask at keep `k` keeps the
    /// elements whose place is below `k` (up to rounding); a soft mask is a smooth step there
    /// (differentiable allocation). None for N:M, whose masks are per group of M.
    pub fn places(&self, unit: usize) -> Option<Tensor> {
        if matches!(self.costs.granularity(), Granularity::NOfM { .. }) {
            return None;
        }
        let ranking = &self.rankings[unit];
        let size = ranking.size()[0];
        let positions = Tensor::arange(size, (Kind::Float, ranking.device()));
        let places = Tensor::zeros([size], (Kind::Float, ranking.device())).index_put(
            &[Some(ranking.shallow_clone())],
            &positions,
            false,
        );
        Some((places + 0.5) / size as f64)
    }

    /// Masks from per-unit values (one per weight of a layer unit, flat or weight-shaped; one
    /// per channel of a group unit), which may be soft and carry gradients: 1 keeps, 0
    /// removes.
    pub fn masks_from(&self, values: &[Tensor]) -> Vec<Mask> {
        let graph = self.costs.graph();
        let mut out = Vec::new();
        for (u, unit) in self.costs.units().iter().enumerate() {
            match &unit.kind {
                UnitKind::Layer(node) => {
                    let node = graph.node(*node);
                    let size: Vec<i64> = weight_shape(&node.op);
                    out.push(Mask {
                        tensor: format!("{}.weight", node.name),
                        mask: values[u].view(size.as_slice()),
                    });
                }
                UnitKind::Group(g) => {
                    let group = &graph.prunable_groups()[*g];
                    let channels = &values[u];
                    for usage in &group.sliced {
                        // Ones except this group's channels, at its offset.
                        let node = graph.node(usage.node);
                        let width = node.out_shape[0] as i64;
                        let offset = usage.offset as i64;
                        let n = group.channels as i64;
                        let ones = |len: i64| Tensor::ones([len], (Kind::Float, channels.device()));
                        let full = Tensor::cat(
                            &[
                                ones(offset),
                                channels.shallow_clone(),
                                ones(width - offset - n),
                            ],
                            0,
                        );
                        let rank = weight_shape(&node.op).len().max(1);
                        let mut shape = vec![width];
                        shape.extend(std::iter::repeat_n(1, rank - 1));
                        let mut tensors = vec!["weight"];
                        if matches!(node.op, Op::BatchNorm { .. } | Op::LayerNorm { .. })
                            || has_bias(&node.op)
                        {
                            tensors.push("bias");
                        }
                        if matches!(node.op, Op::LayerNorm { .. }) {
                            tensors.push(NORM_CHANNELS);
                        }
                        for t in tensors {
                            let mask = if t == "weight" {
                                full.view(shape.as_slice())
                            } else {
                                full.shallow_clone()
                            };
                            out.push(Mask {
                                tensor: format!("{}.{t}", node.name),
                                mask,
                            });
                        }
                    }
                    for &node in group.producers.iter().chain(&group.members) {
                        let node = graph.node(node);
                        let rank = weight_shape(&node.op).len().max(1) as i64;
                        let mut shape = vec![group.channels as i64];
                        shape.extend(std::iter::repeat_n(1, (rank - 1) as usize));
                        match &node.op {
                            // Attention has no weights: its heads go with the projections'.
                            Op::Attention { .. } => {}
                            // Per channel along their last dimension.
                            Op::Embedding { .. } | Op::PosEmbedding { .. } => {
                                out.push(Mask {
                                    tensor: format!("{}.weight", node.name),
                                    mask: channels.view([1, -1]),
                                });
                            }
                            Op::ClassToken { .. } => out.push(Mask {
                                tensor: format!("{}.weight", node.name),
                                mask: channels.shallow_clone(),
                            }),
                            Op::LayerNorm { .. } => {
                                for t in ["weight", "bias", NORM_CHANNELS] {
                                    out.push(Mask {
                                        tensor: format!("{}.{t}", node.name),
                                        mask: channels.shallow_clone(),
                                    });
                                }
                            }
                            Op::BatchNorm { .. } => {
                                for t in ["weight", "bias"] {
                                    out.push(Mask {
                                        tensor: format!("{}.{t}", node.name),
                                        mask: channels.shallow_clone(),
                                    });
                                }
                            }
                            op => {
                                out.push(Mask {
                                    tensor: format!("{}.weight", node.name),
                                    mask: channels.view(shape.as_slice()),
                                });
                                if has_bias(op) {
                                    out.push(Mask {
                                        tensor: format!("{}.bias", node.name),
                                        mask: channels.shallow_clone(),
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

fn has_bias(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv2d { bias: true, .. } | Op::Linear { bias: true, .. }
    )
}

/// Shape of a conv or linear weight as tch wants it; empty for other ops.
fn weight_shape(op: &Op) -> Vec<i64> {
    op.weight_shape()
        .unwrap_or_default()
        .iter()
        .map(|&d| d as i64)
        .collect()
}

/// Indices by decreasing score; ties keep the lower index first, so masks are deterministic.
fn descending(scores: &Tensor) -> Tensor {
    scores.to_kind(Kind::Float).sort_stable(true, 0, true).1
}

/// Channels by decreasing importance, whole blocks at a time: blocks of `block` channels (an
/// attention head) ranked by their summed score, each block's channels in order.
fn block_ranking(scores: &Tensor, block: usize) -> Tensor {
    if block <= 1 {
        return descending(scores);
    }
    let block = block as i64;
    let blocks = scores
        .to_kind(Kind::Float)
        .view([-1, block])
        .sum_dim_intlist(1, false, Kind::Float);
    let order = descending(&blocks);
    let within = Tensor::arange(block, (Kind::Int64, scores.device()));
    (order.unsqueeze(1) * block + within.unsqueeze(0)).flatten(0, -1)
}

/// Each weight's rank (0 = most important) inside its group of `m` consecutive weights along
/// the input dimension. A conv weight `[out, in, kh, kw]` is viewed as `[out, kh, kw, in]`.
pub(super) fn nm_ranks(scores: &Tensor, op: &Op, m: usize) -> Tensor {
    let (rows, len) = nm_layout(op).unwrap_or((1, scores.numel()));
    let m = m as i64;
    let (rows, len) = (rows as i64, len as i64);
    let is_conv = scores.dim() == 4;
    let laid = if is_conv {
        scores.permute([0, 2, 3, 1])
    } else {
        scores.shallow_clone()
    };
    let laid = laid.reshape([rows, len]);
    let padded_len = (len + m - 1) / m * m;
    // Padding scores -1 rank after every real weight (scores are non-negative).
    let padded = laid
        .constant_pad_nd([0, padded_len - len])
        .to_kind(Kind::Float);
    let pad_mask = Tensor::ones([rows, len], (Kind::Float, laid.device()))
        .constant_pad_nd([0, padded_len - len]);
    let padded = &padded * &pad_mask + (&pad_mask - 1.0);
    let grouped = padded.view([rows, padded_len / m, m]);
    // argsort of argsort gives ranks; stable, so ties keep input order.
    let order = grouped.sort_stable(true, -1, true).1;
    let ranks = order.sort_stable(true, -1, false).1;
    let ranks = ranks.view([rows, padded_len]).narrow(1, 0, len);
    if is_conv {
        let s = scores.size();
        ranks
            .reshape([s[0], s[2], s[3], s[1]])
            .permute([0, 3, 1, 2])
            .contiguous()
    } else {
        ranks.reshape(scores.size().as_slice())
    }
}
