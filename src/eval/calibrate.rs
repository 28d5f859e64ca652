//! Calibration: a fixed draw of training samples, and what is measured on it. Post-training
//! pruning (Wanda, SparseGPT) runs one evaluation-mode forward over the draw in which every
//! conv and linear layer, just before it runs, reads its input, is pruned, and passes on its
//! pruned output; so each layer sees the outputs of the already-pruned layers before it (and
//! each transformer block those of the blocks before it), as in Wanda and SparseGPT. The
//! layer-wise allocators read the dense model: OWL its outlier ratios, AlphaPruning its
//! weights' spectra.
//!
//! Memory: the forward holds the draw's activations for the whole draw at once (a GPT's
//! `samples · context · 4 · width` floats for the widest MLP activation: 50 MB for 128
//! windows of 128 bytes at width 192); a conv's input is unfolded into its patches
//! (`samples · positions · kernel area · channels` floats); SparseGPT adds a `columns²`
//! Hessian in f64 per layer, one layer at a time.

use crate::data::Split;
use crate::error::{Error, Result};
use crate::graph::Op;
use crate::model::GraphNet;
use crate::prune::posttrain::{self, Removal, Rule};
use crate::prune::{layerwise, CostModel, Criterion, Granularity, Mask, UnitKind};
use petgraph::graph::NodeIndex;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;
use tch::Tensor;

/// The draw does not depend on the run's seed: one env, one calibration set.
const CALIBRATION_SEED: u64 = 0xca1b;

/// The calibration samples of one env.
#[derive(Debug)]
pub struct Calibration {
    input: Tensor,
    /// With `calibration_from = "dense"`: every layer's input statistics in the dense model
    /// (for the evaluator's one criterion), measured on first use.
    dense: std::cell::OnceCell<HashMap<NodeIndex, Vec<Tensor>>>,
}

impl Calibration {
    /// `samples` training samples, drawn at random (the same ones on every run).
    pub fn new(train: &Split, samples: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(CALIBRATION_SEED);
        let input = train
            .batches(samples.max(1), Some(&mut rng))
            .next()
            .map(|(x, _)| x)
            .unwrap_or_else(|| train.images.shallow_clone());
        Self {
            input,
            dense: std::cell::OnceCell::new(),
        }
    }

    pub fn samples(&self) -> usize {
        self.input.size().first().copied().unwrap_or(0) as usize
    }

    /// The column norms `‖X_j‖₂` of every conv and linear input, in the dense model `net`
    /// (one tensor per group of a grouped conv).
    pub fn norms(&self, net: &GraphNet) -> HashMap<NodeIndex, Vec<Tensor>> {
        let mut out = HashMap::new();
        let graph = net.graph();
        let _ = net.forward_visiting(&self.input, &mut |node, x| {
            let features = posttrain::features(&graph.node(node).op, x);
            out.insert(node, features.iter().map(posttrain::column_norms).collect());
        });
        out
    }

    /// Prunes `net` in place with a post-training criterion at the keep ratios `keeps` (one
    /// per unit of `costs`, whose units are layers), layer by layer in execution order.
    /// `per_row`: Wanda compares weights within each output row (else across the layer).
    /// `from_dense`: every layer reads the dense model's inputs instead, measured once (on
    /// this first call, when `net` holds the dense weights) and cached.
    /// Returns the masks (1 keeps) it left, for fine-tuning.
    pub fn prune(
        &self,
        net: &GraphNet,
        criterion: Criterion,
        costs: &CostModel,
        keeps: &[f64],
        per_row: bool,
        from_dense: bool,
    ) -> Result<Vec<Mask>> {
        let mut rules = HashMap::new();
        for (u, unit) in costs.units().iter().enumerate() {
            let UnitKind::Layer(node) = unit.kind else {
                return Err(Error::graph(
                    "<policy>",
                    format!("{} prunes weights, not channel groups", criterion.name()),
                ));
            };
            let rule = match costs.granularity() {
                Granularity::NOfM { m, .. } => Rule::NOfM {
                    n: crate::prune::kept_count(keeps[u], m),
                    m,
                },
                _ if per_row => Rule::Keep(costs.unit_kept(u, keeps[u])),
                _ => Rule::KeepLayer(costs.unit_kept(u, keeps[u])),
            };
            rules.insert(node, rule);
        }
        let vars = net.var_store().variables();
        let graph = net.graph();
        if from_dense {
            let cached = self.dense.get_or_init(|| {
                let mut stats = HashMap::new();
                let _ = net.forward_visiting(&self.input, &mut |node, x| {
                    if rules.contains_key(&node) {
                        stats.insert(node, layer_stats(&graph.node(node).op, x, criterion));
                    }
                });
                stats
            });
            let _guard = tch::no_grad_guard();
            let mut masks = Vec::new();
            for &node in graph.order() {
                let (Some(&rule), Some(stats)) = (rules.get(&node), cached.get(&node)) else {
                    continue;
                };
                let n = graph.node(node);
                let name = format!("{}.weight", n.name);
                if let Some(weight) = vars.get(&name) {
                    let mask = prune_layer(&n.op, weight, stats, criterion, rule)?;
                    masks.push(Mask { tensor: name, mask });
                }
            }
            return Ok(masks);
        }
        let mut masks = Vec::new();
        let mut failure = None;
        let _ = net.forward_visiting(&self.input, &mut |node, x| {
            let Some(&rule) = rules.get(&node) else {
                return;
            };
            if failure.is_some() {
                return;
            }
            let n = graph.node(node);
            let name = format!("{}.weight", n.name);
            let Some(weight) = vars.get(&name) else {
                return;
            };
            let stats = layer_stats(&n.op, x, criterion);
            match prune_layer(&n.op, weight, &stats, criterion, rule) {
                Ok(mask) => masks.push(Mask { tensor: name, mask }),
                Err(e) => failure = Some(e),
            }
        });
        failure.map_or(Ok(masks), Err)
    }

    /// Each unit's OWL outlier ratio (of its block, with threshold `m`), in the dense model.
    pub fn outliers(&self, net: &GraphNet, costs: &CostModel, m: f64) -> Result<Vec<f64>> {
        let norms = self.norms(net);
        let vars = net.var_store().variables();
        let graph = net.graph();
        let blocks = layerwise::blocks(costs);
        let count = blocks.iter().copied().max().map_or(0, |b| b + 1);
        let mut scores: Vec<Vec<Tensor>> = (0..count).map(|_| Vec::new()).collect();
        for (unit, &block) in costs.units().iter().zip(&blocks) {
            for node in unit_nodes(costs, &unit.kind) {
                let n = graph.node(node);
                let (Some(w), Some(x)) =
                    (vars.get(&format!("{}.weight", n.name)), norms.get(&node))
                else {
                    continue;
                };
                for (matrix, norm) in posttrain::as_matrix(&n.op, &w.detach()).iter().zip(x) {
                    scores[block].push(matrix.abs() * norm.unsqueeze(0));
                }
            }
        }
        let ratios = scores
            .iter()
            .map(|s| {
                if s.is_empty() {
                    Ok(0.0)
                } else {
                    layerwise::outlier_ratio(s, m)
                }
            })
            .collect::<Result<Vec<f64>>>()?;
        Ok(blocks.iter().map(|&b| ratios[b]).collect())
    }
}

/// Each unit's heavy-tail exponent α (the mean over its block's weight matrices).
pub fn alphas(net: &GraphNet, costs: &CostModel) -> Result<Vec<f64>> {
    let vars = net.var_store().variables();
    let graph = net.graph();
    let per_unit = costs
        .units()
        .iter()
        .map(|unit| {
            let values = unit_nodes(costs, &unit.kind)
                .into_iter()
                .filter_map(|node| vars.get(&format!("{}.weight", graph.node(node).name)))
                .map(|w| layerwise::esd_alpha(&w.detach().flatten(1, -1)))
                .collect::<Result<Vec<f64>>>()?;
            Ok(values.iter().sum::<f64>() / values.len().max(1) as f64)
        })
        .collect::<Result<Vec<f64>>>()?;
    Ok(layerwise::block_means(&layerwise::blocks(costs), &per_unit))
}

/// The conv and linear nodes whose weights make up a unit.
fn unit_nodes(costs: &CostModel, kind: &UnitKind) -> Vec<NodeIndex> {
    let graph = costs.graph();
    let nodes = match kind {
        UnitKind::Layer(node) => vec![*node],
        UnitKind::Group(g) => graph.prunable_groups()[*g].producers.clone(),
    };
    nodes
        .into_iter()
        .filter(|&n| matches!(graph.node(n).op, Op::Conv2d { .. } | Op::Linear { .. }))
        .collect()
}

/// What a criterion reads of a layer's input `x`, per group: Wanda the column norms,
/// SparseGPT the Hessian.
fn layer_stats(op: &Op, x: &Tensor, criterion: Criterion) -> Vec<Tensor> {
    posttrain::features(op, x)
        .iter()
        .map(|f| match criterion {
            Criterion::SparseGpt => posttrain::hessian(f),
            _ => posttrain::column_norms(f),
        })
        .collect()
}

/// Prunes one layer's weight in place from its input statistics ([`layer_stats`]); returns
/// the mask (1 keeps).
fn prune_layer(
    op: &Op,
    weight: &Tensor,
    stats: &[Tensor],
    criterion: Criterion,
    rule: Rule,
) -> Result<Tensor> {
    let mask = if criterion == Criterion::SparseGpt {
        let matrices = posttrain::as_matrix(op, &weight.detach());
        let groups = matrices.len();
        let mut new = Vec::with_capacity(groups);
        let mut kept = Vec::with_capacity(groups);
        for (g, (w, h)) in matrices.iter().zip(stats).enumerate() {
            // A layer's count split over its groups, rounded so the total is exact.
            let upto =
                |total: usize, i: usize| (total as f64 * i as f64 / groups as f64).round() as usize;
            let rule = match rule {
                Rule::Keep(t) | Rule::KeepLayer(t) => Rule::Keep(upto(t, g + 1) - upto(t, g)),
                nm => nm,
            };
            let (w, m) = posttrain::sparsegpt(
                w,
                h,
                Removal::Rule(rule),
                posttrain::segment(op),
                posttrain::SPARSEGPT_BLOCK,
                posttrain::SPARSEGPT_DAMP,
            )?;
            new.push(w);
            kept.push(m);
        }
        let shape = weight.size();
        let updated = posttrain::from_matrices(op, &new, &shape);
        weight.shallow_clone().copy_(&updated);
        posttrain::from_matrices(op, &kept, &shape)
    } else {
        let mask = posttrain::wanda_mask(op, &weight.detach(), stats, rule);
        let _ = weight.shallow_clone().g_mul_(&mask);
        mask
    };
    Ok(mask)
}
