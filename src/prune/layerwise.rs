//! The layer-wise allocators of language-model pruning, for any graph: OWL (Yin et al. 2024,
//! outlier-weighted layer-wise sparsity) and AlphaPruning (Lu et al. 2024, heavy-tailed
//! self-regularisation). Both give one ratio per *block* and every unit of a block shares it.
//!
//! A block is the units whose names agree up to their first all-digit component: `h.3.attn.q`
//! and `h.3.mlp.c_fc` form block `h.3` (a transformer layer), `layer1.0.conv1` and
//! `layer1.0.conv2` block `layer1.0` (a residual block); a unit whose name has no such
//! component (or whose first one is its last, as `features.3`) is a block of its own.
//!
//! Must not know about agents, env files or the evaluator.

use super::allocate::largest_fitting;
use super::units::CostModel;
use super::wall::ActionWall;
use crate::error::Result;
use tch::{Kind, Tensor};

/// OWL's published hyperparameters: a score is an outlier above `M` times its block's mean,
/// and the blocks' ratios spread over `2λ` around the target.
pub const OWL_M: f64 = 5.0;
pub const OWL_LAMBDA: f64 = 0.08;
/// AlphaPruning's published spread for Wanda: sparsities mapped into `[S − ε, S + ε]`.
pub const ALPHA_EPSILON: f64 = 0.2;

/// The block of every unit, as an index into the distinct block names in order of first use.
pub fn blocks(costs: &CostModel) -> Vec<usize> {
    let mut names: Vec<String> = Vec::new();
    costs
        .units()
        .iter()
        .map(|u| {
            let name = block_name(&u.name);
            match names.iter().position(|n| *n == name) {
                Some(i) => i,
                None => {
                    names.push(name);
                    names.len() - 1
                }
            }
        })
        .collect()
}

/// The block a unit name belongs to (see the module docs).
pub fn block_name(unit: &str) -> String {
    let parts: Vec<&str> = unit.split('.').collect();
    match parts
        .iter()
        .position(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    {
        Some(i) if i + 1 < parts.len() => parts[..=i].join("."),
        _ => unit.to_string(),
    }
}

/// OWL's layer-wise outlier distribution of one block: the fraction of its scores
/// (`|W_ij| · ‖X_j‖₂` over all its weights) above `m` times their mean.
pub fn outlier_ratio(scores: &[Tensor], m: f64) -> Result<f64> {
    let all = Tensor::cat(
        &scores
            .iter()
            .map(|s| s.flatten(0, -1).to_kind(Kind::Double))
            .collect::<Vec<_>>(),
        0,
    );
    let count = all.numel().max(1) as f64;
    let mean = f64::try_from(all.mean(Kind::Double))?;
    let above = f64::try_from(all.gt(m * mean).sum(Kind::Double))?;
    Ok(above / count)
}

/// The heavy-tail exponent α of a weight matrix's empirical spectral density (the eigenvalues
/// of `WᵀW`, `W` as `[rows, columns]`): a Hill-style power-law fit,
/// `α = 1 + k / Σᵢ ln(λᵢ / λ_min)` over the `k` eigenvalues at or above `λ_min`, with `λ_min`
/// at the peak of the histogram of log-eigenvalues (AlphaPruning's `alpha_peak`).
pub fn esd_alpha(matrix: &Tensor) -> Result<f64> {
    let w = matrix.to_kind(Kind::Double).to_device(tch::Device::Cpu);
    // The non-zero eigenvalues of WᵀW are those of the smaller Gram matrix.
    let (rows, cols) = (w.size()[0], w.size().get(1).copied().unwrap_or(1));
    let gram = if rows < cols {
        w.matmul(&w.transpose(0, 1))
    } else {
        w.transpose(0, 1).matmul(&w)
    };
    let values = Tensor::f_linalg_eigvalsh(&gram, "L")?;
    let mut eigs: Vec<f64> = Vec::<f64>::try_from(values)?
        .into_iter()
        .filter(|e| *e > 1e-12 && e.is_finite())
        .collect();
    eigs.sort_by(f64::total_cmp);
    Ok(hill_alpha(&eigs))
}

/// `alpha_peak` on eigenvalues sorted ascending (see [`esd_alpha`]); 0 with fewer than two.
pub fn hill_alpha(eigs: &[f64]) -> f64 {
    if eigs.len() < 2 {
        return 0.0;
    }
    const BINS: usize = 100;
    let logs: Vec<f64> = eigs.iter().map(|e| e.ln()).collect();
    let (lo, hi) = (logs[0], logs[logs.len() - 1]);
    let width = (hi - lo) / BINS as f64;
    let xmin = if width > 0.0 {
        let mut counts = [0usize; BINS];
        for &l in &logs {
            counts[(((l - lo) / width) as usize).min(BINS - 1)] += 1;
        }
        // The first of the fullest bins; λ_min at its centre.
        let peak = (0..BINS).fold(0, |best, b| if counts[b] > counts[best] { b } else { best });
        (lo + (peak as f64 + 0.5) * width).exp()
    } else {
        eigs[0]
    };
    let tail: Vec<f64> = eigs.iter().copied().filter(|&e| e >= xmin).collect();
    let sum: f64 = tail.iter().map(|e| (e / xmin).ln()).sum();
    if tail.len() < 2 || sum <= 0.0 {
        return 0.0;
    }
    1.0 + tail.len() as f64 / sum
}

/// The mean of `values` over each unit's block, per unit.
pub fn block_means(blocks: &[usize], values: &[f64]) -> Vec<f64> {
    let count = blocks.iter().copied().max().map_or(0, |b| b + 1);
    let mut sum = vec![0.0; count];
    let mut n = vec![0usize; count];
    for (&b, &v) in blocks.iter().zip(values) {
        sum[b] += v;
        n[b] += 1;
    }
    blocks
        .iter()
        .map(|&b| sum[b] / n[b].max(1) as f64)
        .collect()
}

/// `values` mapped linearly onto `[0, 1]` (all zeros when they are all equal).
fn unit_range(values: &[f64]) -> Vec<f64> {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    values
        .iter()
        .map(|v| if hi > lo { (v - lo) / (hi - lo) } else { 0.0 })
        .collect()
}

/// OWL: keep ratios `(1 − S) + D̂_b − mean(D̂)` with `D̂_b` block `b`'s outlier ratio mapped
/// linearly onto `[0, 2λ]`, so blocks with more outliers keep more. The constant is then
/// solved so the policy meets the budget exactly (OWL's `1 − S` for equal-sized blocks and a
/// params budget), within the keep bounds.
pub fn owl(wall: &ActionWall, outliers: &[f64], lambda: f64) -> Vec<f64> {
    let spread: Vec<f64> = unit_range(outliers)
        .iter()
        .map(|d| d * 2.0 * lambda)
        .collect();
    largest_fitting(wall, -1.0 - 2.0 * lambda, 1.0, |c| {
        spread.iter().map(|d| wall.bound(d + c)).collect()
    })
}

/// AlphaPruning: sparsity `S − ε + 2ε · α̂_b` with `α̂_b` block `b`'s mean α mapped linearly
/// onto `[0, 1]` (heavier tails, smaller α, are better trained and pruned less), then scaled
/// by the factor that meets the budget exactly, within the keep bounds.
pub fn alphapruning(wall: &ActionWall, alphas: &[f64], epsilon: f64) -> Vec<f64> {
    let target = 1.0 - wall.budget().keep;
    let sparsity: Vec<f64> = unit_range(alphas)
        .iter()
        .map(|a| (target - epsilon + 2.0 * epsilon * a).max(0.0))
        .collect();
    // keep = 1 − s / t: the cost grows with t.
    largest_fitting(wall, 1e-9, 1e9, |t| {
        sparsity.iter().map(|s| wall.bound(1.0 - s / t)).collect()
    })
}
