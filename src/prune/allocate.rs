//! Allocators that turn a global budget into per-unit keep ratios without learning: uniform,
//! global magnitude, LAMP, ERK, OWL, AlphaPruning and random. Each returns keep ratios that
//! meet the budget.

use super::layerwise;
use super::units::{CostModel, UnitKind};
use super::wall::ActionWall;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The non-learned allocation methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The same keep ratio everywhere (within the keep bounds).
    Uniform,
    /// One magnitude threshold across all layers.
    Global,
    /// Layer-adaptive magnitude (Lee et al., ICLR 2021): one threshold on LAMP scores.
    Lamp,
    /// Erdős–Rényi-Kernel (RigL): density proportional to (sum of dims) / (product of dims).
    Erk,
    /// Random profile scaled to the budget (within the keep bounds).
    Random,
    /// Outlier-weighted layer-wise sparsity (Yin et al. 2024): blocks with more outlier
    /// activations keep more.
    Owl,
    /// Heavy-tailed self-regularisation (Lu et al. 2024): blocks whose weight spectra have
    /// heavier tails keep more.
    #[serde(rename = "alphapruning")]
    #[value(name = "alphapruning")]
    AlphaPruning,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Uniform => "uniform",
            Method::Global => "global",
            Method::Lamp => "lamp",
            Method::Erk => "erk",
            Method::Random => "random",
            Method::Owl => "owl",
            Method::AlphaPruning => "alphapruning",
        }
    }
}

/// What the allocators read besides the costs, per unit (only the methods that use a signal
/// need it; the others accept it empty).
#[derive(Debug, Clone, Copy, Default)]
pub struct Signals<'a> {
    /// Importance values (one per weight, or per channel for channel pruning): `global`,
    /// `lamp`.
    pub scores: &'a [Vec<f32>],
    /// The outlier ratio of the unit's block: `owl`.
    pub outliers: &'a [f64],
    /// The mean heavy-tail exponent α of the unit's block: `alphapruning`.
    pub alphas: &'a [f64],
}

/// Keep ratios (as rounded: whole weights or channels) for every unit of `wall`'s cost model.
///
/// `signals` holds what the threshold and layer-wise methods read (see [`Signals`]).
pub fn allocate(
    method: Method,
    wall: &ActionWall,
    costs: &CostModel,
    signals: Signals<'_>,
    seed: u64,
) -> Vec<f64> {
    let scores = signals.scores;
    let n = costs.units().len();
    let keeps = match method {
        Method::Uniform => wall.fit(&vec![1.0; n]),
        Method::Random => {
            let mut rng = StdRng::seed_from_u64(seed);
            let base: Vec<f64> = (0..n).map(|_| rng.random_range(0.05..1.0)).collect();
            wall.fit(&base)
        }
        Method::Global => threshold(wall, scores.to_vec()),
        Method::Lamp => threshold(wall, scores.iter().map(|s| lamp_scores(s)).collect()),
        Method::Erk => erk(wall, costs),
        Method::Owl => layerwise::owl(wall, signals.outliers, layerwise::OWL_LAMBDA),
        Method::AlphaPruning => {
            layerwise::alphapruning(wall, signals.alphas, layerwise::ALPHA_EPSILON)
        }
    };
    costs.effective_keeps(&keeps)
}

/// LAMP scores of one layer: for each weight, w² divided by the sum of w² over the weights of
/// that layer that are not smaller (itself included). `values` are magnitudes.
pub fn lamp_scores(values: &[f32]) -> Vec<f32> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].abs().total_cmp(&values[b].abs()).then(a.cmp(&b)));
    let mut out = vec![0f32; values.len()];
    let mut tail = 0f64;
    // From the largest down; equal magnitudes form one block that shares its denominator.
    let mut end = order.len();
    while end > 0 {
        let magnitude = values[order[end - 1]].abs();
        let mut start = end - 1;
        while start > 0 && values[order[start - 1]].abs() == magnitude {
            start -= 1;
        }
        let sq = f64::from(magnitude) * f64::from(magnitude);
        tail += sq * (end - start) as f64;
        for &i in &order[start..end] {
            out[i] = if tail > 0.0 { (sq / tail) as f32 } else { 0.0 };
        }
        end = start;
    }
    out
}

/// Keeps, in every unit, the elements whose score reaches one global threshold; the threshold
/// is the lowest that meets the budget.
fn threshold(wall: &ActionWall, scores: Vec<Vec<f32>>) -> Vec<f64> {
    let sorted: Vec<Vec<f32>> = scores
        .into_iter()
        .map(|mut s| {
            s.sort_by(|a, b| b.total_cmp(a));
            s
        })
        .collect();
    let mut all: Vec<f32> = sorted.iter().flatten().copied().collect();
    all.sort_by(|a, b| b.total_cmp(a));
    let keeps_at = |kept: usize| -> Vec<f64> {
        // Keep every element at least as large as the kept-th largest score overall.
        let tau = if kept == 0 {
            f32::INFINITY
        } else {
            all[kept - 1]
        };
        sorted
            .iter()
            .map(|s| s.partition_point(|&v| v >= tau) as f64 / s.len().max(1) as f64)
            .collect()
    };
    let fits = |keeps: &[f64]| wall.cost(keeps) <= wall.budget().keep + 1e-12;
    let (mut good, mut bad) = (0usize, all.len() + 1);
    if fits(&keeps_at(all.len())) {
        return keeps_at(all.len());
    }
    while bad - good > 1 {
        let mid = (good + bad) / 2;
        if fits(&keeps_at(mid)) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    keeps_at(good)
}

/// ERK's unnormalised density of a unit's weight tensor: (sum of dims) / (product of dims).
/// A channel group uses its first producer's weight.
pub fn erk_raw(costs: &CostModel, unit: usize) -> f64 {
    let graph = costs.graph();
    let node = match costs.units()[unit].kind {
        UnitKind::Layer(node) => node,
        UnitKind::Group(g) => graph.prunable_groups()[g].lead(graph),
    };
    let dims = graph
        .node(node)
        .op
        .weight_shape()
        .unwrap_or_else(|| vec![1]);
    dims.iter().sum::<usize>() as f64 / dims.iter().product::<usize>().max(1) as f64
}

/// ERK: density `min(1, eps · raw)` with the largest `eps` that meets the budget; layers that
/// reach 1 stay dense and the rest share what is left, as in RigL's re-solve.
fn erk(wall: &ActionWall, costs: &CostModel) -> Vec<f64> {
    let raw: Vec<f64> = (0..costs.units().len())
        .map(|u| erk_raw(costs, u))
        .collect();
    let smallest = raw.iter().copied().fold(f64::INFINITY, f64::min);
    largest_fitting(wall, 0.0, 1.0 / smallest.max(1e-300), |eps| {
        raw.iter().map(|&r| (eps * r).min(1.0)).collect()
    })
}

/// The largest `t` in `[lo, hi]` whose policy meets the budget, for policies whose cost grows
/// with `t`; the policy at `lo` when none does.
pub(super) fn largest_fitting(
    wall: &ActionWall,
    lo: f64,
    hi: f64,
    policy: impl Fn(f64) -> Vec<f64>,
) -> Vec<f64> {
    let fits = |keeps: &[f64]| wall.cost(keeps) <= wall.budget().keep + 1e-12;
    if fits(&policy(hi)) {
        return policy(hi);
    }
    let (mut good, mut bad) = (lo, hi);
    for _ in 0..100 {
        let mid = 0.5 * (good + bad);
        if fits(&policy(mid)) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    policy(good)
}
