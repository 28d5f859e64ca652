//! Post-training criteria on one layer, from calibration inputs: Wanda (Sun et al. 2023) and
//! SparseGPT (Frantar & Alistarh 2023), for unstructured and N:M sparsity.
//!
//! A layer is seen as a matrix `[rows, columns]`: a linear weight as it is; a conv weight
//! `[out, in/groups, kh, kw]` as `[out, kh · kw · in/groups]`, columns ordered by kernel
//! position and then input channel, so that N:M groups (which run along the input channels,
//! as everywhere in autoprune) are runs of consecutive columns. The calibration features are
//! laid out alike: a conv's input unfolded into its patches (im2col), one row per output
//! position of every sample. A grouped conv is a matrix per group.
//!
//! Must not know about agents, env files or the evaluator.

use super::mask::nm_ranks;
use crate::error::{Error, Result};
use crate::graph::Op;
use tch::{Kind, Tensor};

/// SparseGPT's default column block (lazy batch updates) and dampening (fraction of the mean
/// diagonal of H added to it).
pub const SPARSEGPT_BLOCK: i64 = 128;
pub const SPARSEGPT_DAMP: f64 = 0.01;

/// How many weights of a layer survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Unstructured: this many weights of the whole layer (Wanda: the same count in every
    /// output row).
    Keep(usize),
    /// Unstructured, Wanda compared across the whole layer instead of within each row.
    KeepLayer(usize),
    /// N:M along the input channels: `n` of every `m` (a short last group keeps at most `n`).
    NOfM { n: usize, m: usize },
}

/// Calibration features of a conv or linear node's input, `[samples, columns]` per group of a
/// grouped conv (one matrix for anything else), in the column order of [`as_matrix`].
///
/// # Shapes
/// - `input`: a linear's `[..., in]`; a conv's `[N, C, H, W]`
pub fn features(op: &Op, input: &Tensor) -> Vec<Tensor> {
    match op {
        Op::Conv2d {
            kernel,
            stride,
            padding,
            dilation,
            groups,
            ..
        } => {
            let (kh, kw) = (kernel.h as i64, kernel.w as i64);
            let cols = input.im2col([kh, kw], dilation.pair(), padding.pair(), stride.pair());
            // [N, C·kh·kw, L] → [N, C, kh·kw, L]
            let size = input.size();
            let (n, c) = (size[0], size[1]);
            let cols = cols.view([n, c, kh * kw, -1]);
            let per_group = c / *groups as i64;
            (0..*groups as i64)
                .map(|g| {
                    cols.narrow(1, g * per_group, per_group)
                        .permute([0, 3, 2, 1])
                        .reshape([-1, kh * kw * per_group])
                })
                .collect()
        }
        _ => {
            let width = *input.size().last().unwrap_or(&1);
            vec![input.reshape([-1, width])]
        }
    }
}

/// A weight as a matrix per group (see the module docs), and back with [`from_matrices`].
pub fn as_matrix(op: &Op, weight: &Tensor) -> Vec<Tensor> {
    match op {
        Op::Conv2d { groups, .. } => {
            let out = weight.size()[0];
            let per_group = out / *groups as i64;
            let laid = weight.permute([0, 2, 3, 1]).reshape([out, -1]);
            (0..*groups as i64)
                .map(|g| laid.narrow(0, g * per_group, per_group))
                .collect()
        }
        _ => vec![weight.shallow_clone()],
    }
}

/// The weight-shaped tensor of matrices laid out by [`as_matrix`].
pub fn from_matrices(op: &Op, matrices: &[Tensor], shape: &[i64]) -> Tensor {
    let laid = Tensor::cat(matrices, 0);
    match op {
        Op::Conv2d { .. } => laid
            .reshape([shape[0], shape[2], shape[3], shape[1]])
            .permute([0, 3, 1, 2])
            .contiguous(),
        _ => laid.reshape(shape),
    }
}

/// Wanda's mask (1 keeps) for one layer: scores `|W_ij| · ‖X_j‖₂`, compared within each output
/// row. Unstructured, every row keeps the same count (the first rows one more when the
/// layer's count does not divide evenly), or with [`Rule::KeepLayer`] the best of the whole
/// layer; N:M, the `n` best of each group.
///
/// # Shapes
/// - `weight`: the node's weight; `norms`: the column norms of each group's features,
///   one `[columns]` tensor per group
pub fn wanda_mask(op: &Op, weight: &Tensor, norms: &[Tensor], rule: Rule) -> Tensor {
    let scores: Vec<Tensor> = as_matrix(op, weight)
        .iter()
        .zip(norms)
        .map(|(w, x)| w.abs() * x.unsqueeze(0))
        .collect();
    let shape = weight.size();
    match rule {
        Rule::NOfM { n, m } => {
            let scores = from_matrices(op, &scores, &shape);
            nm_ranks(&scores, op, m).lt(n as i64).to_kind(Kind::Float)
        }
        Rule::KeepLayer(kept) => {
            let flat = Tensor::cat(&scores, 0).flatten(0, -1);
            let kept = (kept as i64).clamp(0, flat.numel() as i64);
            let best = flat.sort_stable(true, 0, true).1.narrow(0, 0, kept);
            let keep = flat.zeros_like().index_fill(0, &best, 1.0);
            let rows = weight.size()[0];
            from_matrices(op, &[keep.view([rows, -1])], &shape)
        }
        Rule::Keep(kept) => {
            let scores = Tensor::cat(&scores, 0);
            let (rows, cols) = (scores.size()[0], scores.size()[1]);
            let kept = (kept as i64).clamp(0, rows * cols);
            // Each weight's rank inside its row (0 = best); ties keep the lower column first.
            let order = scores.sort_stable(true, 1, true).1;
            let ranks = order.argsort_stable(true, 1, false);
            let (q, r) = (kept / rows, kept % rows);
            let row = Tensor::arange(rows, (Kind::Int64, weight.device())).unsqueeze(1);
            let keep = ranks.lt(q).logical_or(&ranks.eq(q).logical_and(&row.lt(r)));
            from_matrices(op, &[keep.to_kind(Kind::Float)], &shape)
        }
    }
}

/// Column norms `‖X_j‖₂` of features.
pub fn column_norms(features: &Tensor) -> Tensor {
    features
        .to_kind(Kind::Float)
        .square()
        .sum_dim_intlist(0, false, Kind::Float)
        .sqrt()
}

/// `H = 2 XᵀX / samples`, the Hessian of the layer-wise squared error, in f64.
pub fn hessian(features: &Tensor) -> Tensor {
    let x = features.to_kind(Kind::Double);
    let samples = x.size()[0].max(1) as f64;
    x.transpose(0, 1).matmul(&x) * (2.0 / samples)
}

/// What SparseGPT removes: by its own choice under a rule, or a given mask (1 keeps).
#[derive(Debug)]
pub enum Removal<'a> {
    Rule(Rule),
    Mask(&'a Tensor),
}

/// SparseGPT on one matrix `[rows, columns]` with the Hessian `h` of its input: prunes column
/// block by column block, choosing the mask within each block by `w² / [H⁻¹]_jj²` and
/// updating the remaining weights by the optimal brain surgeon step. Returns the new weights
/// (zeros where pruned) and the mask (1 keeps).
///
/// For [`Rule::Keep`], each block removes its share of the layer's count (rounded so that the
/// total is exact); N:M groups run along columns in runs of `segment` (the input channels per
/// kernel position), a short last group keeping at most `n`.
pub fn sparsegpt(
    weight: &Tensor,
    h: &Tensor,
    removal: Removal<'_>,
    segment: i64,
    block: i64,
    damp: f64,
) -> Result<(Tensor, Tensor)> {
    let device = weight.device();
    let mut w = weight.to_kind(Kind::Double).to_device(tch::Device::Cpu);
    let mut h = h.to_kind(Kind::Double).to_device(tch::Device::Cpu);
    let (rows, cols) = (w.size()[0], w.size()[1]);
    // Inputs never seen: their weights cannot matter to the layer's output.
    let diag = h.diagonal(0, 0, 1);
    let dead = diag.eq(0.0);
    let _ = h.diagonal(0, 0, 1).masked_fill_(&dead, 1.0);
    w = w.masked_fill(&dead.unsqueeze(0), 0.0);
    let mean = f64::try_from(h.diagonal(0, 0, 1).mean(Kind::Double))?;
    h = &h + Tensor::eye(cols, (Kind::Double, tch::Device::Cpu)) * (damp * mean);
    let failed = |what: &str| Error::NonFinite {
        what: format!("SparseGPT: {what} of the calibration Hessian (add calibration samples)"),
        value: f64::NAN,
    };
    let hinv = h
        .f_linalg_cholesky(false)
        .and_then(|l| l.f_cholesky_inverse(false))
        .and_then(|inverse| inverse.f_linalg_cholesky(true))
        .map_err(|_| failed("the Cholesky factor"))?;
    let given = match &removal {
        Removal::Mask(m) => Some(m.to_kind(Kind::Bool).to_device(tch::Device::Cpu)),
        Removal::Rule(_) => None,
    };
    let total_removed = match removal {
        Removal::Rule(Rule::Keep(kept) | Rule::KeepLayer(kept)) => {
            rows * cols - (kept as i64).clamp(0, rows * cols)
        }
        _ => 0,
    };
    let kept_mask = Tensor::ones([rows, cols], (Kind::Bool, tch::Device::Cpu));
    let mut removed_so_far = 0i64;
    let mut i1 = 0;
    while i1 < cols {
        let mut i2 = (i1 + block).min(cols);
        if let Removal::Rule(Rule::NOfM { m, .. }) = removal {
            // A block never cuts an N:M group in two.
            while i2 < cols && (i2 % segment) % m as i64 != 0 {
                i2 += 1;
            }
        }
        let count = i2 - i1;
        let w1 = w.narrow(1, i1, count).copy();
        let q1 = Tensor::zeros([rows, count], (Kind::Double, tch::Device::Cpu));
        let err1 = Tensor::zeros([rows, count], (Kind::Double, tch::Device::Cpu));
        let hinv1 = hinv.narrow(0, i1, count).narrow(1, i1, count);
        let d1 = hinv1.diagonal(0, 0, 1);
        // Pruned = true.
        let mut pruned1 = match (&given, &removal) {
            (Some(m), _) => m.narrow(1, i1, count).logical_not(),
            (None, Removal::Rule(Rule::Keep(_) | Rule::KeepLayer(_))) => {
                let upto = (total_removed as f64 * i2 as f64 / cols as f64).round() as i64;
                let here = (upto - removed_so_far).clamp(0, rows * count);
                removed_so_far += here;
                let saliency = (w1.square() / d1.square().unsqueeze(0)).flatten(0, -1);
                let worst = saliency.sort_stable(true, 0, false).1.narrow(0, 0, here);
                Tensor::zeros([rows * count], (Kind::Bool, tch::Device::Cpu))
                    .index_fill(0, &worst, 1)
                    .view([rows, count])
            }
            _ => Tensor::zeros([rows, count], (Kind::Bool, tch::Device::Cpu)),
        };
        for i in 0..count {
            if let Removal::Rule(Rule::NOfM { n, m }) = removal {
                let col = i1 + i;
                let within = col % segment;
                if within % m as i64 == 0 {
                    // A group starts here; it ends at the segment's end at the latest.
                    let len = (m as i64).min(segment - within).min(count - i);
                    let prune = (len - (n as i64).min(len)).max(0);
                    if prune > 0 {
                        let saliency = w1.narrow(1, i, len).square()
                            / d1.narrow(0, i, len).square().unsqueeze(0);
                        let worst = saliency.topk(prune, 1, false, true).1 + i;
                        pruned1 = pruned1.scatter_value(1, &worst, 1);
                    }
                }
            }
            let column = w1.select(1, i);
            let d = hinv1.double_value(&[i, i]);
            let q = column.masked_fill(&pruned1.select(1, i), 0.0);
            let err = (&column - &q) / d;
            q1.narrow(1, i, 1).copy_(&q.unsqueeze(1));
            let update = err
                .unsqueeze(1)
                .matmul(&hinv1.narrow(0, i, 1).narrow(1, i, count - i));
            let rest = w1.narrow(1, i, count - i);
            w1.narrow(1, i, count - i).copy_(&(rest - update));
            err1.narrow(1, i, 1).copy_(&err.unsqueeze(1));
        }
        w.narrow(1, i1, count).copy_(&q1);
        kept_mask.narrow(1, i1, count).copy_(&pruned1.logical_not());
        if i2 < cols {
            let tail = w.narrow(1, i2, cols - i2);
            let update = err1.matmul(&hinv.narrow(0, i1, count).narrow(1, i2, cols - i2));
            w.narrow(1, i2, cols - i2).copy_(&(tail - update));
        }
        i1 = i2;
    }
    let w = w.masked_fill(&kept_mask.logical_not(), 0.0);
    Ok((
        w.to_kind(weight.kind()).to_device(device),
        kept_mask.to_kind(Kind::Float).to_device(device),
    ))
}

/// Input channels per kernel position of a node's matrix (N:M groups run inside these).
pub fn segment(op: &Op) -> i64 {
    match op {
        Op::Conv2d {
            in_channels,
            groups,
            ..
        } => (*in_channels / (*groups).max(1)) as i64,
        Op::Linear { in_features, .. } => *in_features as i64,
        _ => 1,
    }
}
