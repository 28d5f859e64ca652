//! Small pieces the agents share: MLPs, Gaussian samples, soft updates.

use rand::Rng;
use tch::nn::{self, Module};
use tch::Tensor;

/// An MLP with ReLU between layers: `sizes[0]` inputs, `sizes[last]` outputs.
pub(crate) fn mlp(path: &nn::Path, sizes: &[i64]) -> nn::Sequential {
    let mut seq = nn::seq();
    for (i, pair) in sizes.windows(2).enumerate() {
        seq = seq.add(nn::linear(
            path / format!("fc{i}"),
            pair[0],
            pair[1],
            Default::default(),
        ));
        if i + 2 < sizes.len() {
            seq = seq.add_fn(|x| x.relu());
        }
    }
    seq
}

/// A standard normal sample (Box–Muller).
pub(crate) fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A normal sample around `mean` with deviation `sigma`, truncated to [0, 1] by rejection.
pub(crate) fn truncated_normal(rng: &mut impl Rng, mean: f64, sigma: f64) -> f64 {
    for _ in 0..100 {
        let x = mean + sigma * standard_normal(rng);
        if (0.0..=1.0).contains(&x) {
            return x;
        }
    }
    mean.clamp(0.0, 1.0)
}

/// Log-density of `actions` under N(mean, exp(log_std)), element by element.
pub(crate) fn gaussian_log_prob(mean: &Tensor, log_std: &Tensor, actions: &Tensor) -> Tensor {
    let z = (actions - mean) / log_std.exp();
    z.square() * -0.5 - log_std - 0.5 * (2.0 * std::f64::consts::PI).ln()
}

/// `target = (1 - tau) target + tau source`, variable by variable.
pub(crate) fn soft_update(target: &nn::VarStore, source: &nn::VarStore, tau: f64) {
    let source = source.variables();
    let _guard = tch::no_grad_guard();
    for (name, t) in target.variables() {
        let s = &source[&name];
        t.shallow_clone().copy_(&(&t * (1.0 - tau) + s * tau));
    }
}

/// Copies every variable of `source` into `target`.
pub(crate) fn hard_update(target: &mut nn::VarStore, source: &nn::VarStore) {
    let _ = target.copy(source);
}

/// A batch of rows as a float tensor `[rows, cols]`.
pub(crate) fn rows_to_tensor(rows: &[&[f32]]) -> Tensor {
    let cols = rows.first().map(|r| r.len()).unwrap_or(0) as i64;
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, cols])
}

/// Runs a module on one row.
pub(crate) fn forward_row(module: &impl Module, row: &[f32]) -> Tensor {
    module.forward(&Tensor::from_slice(row).view([1, row.len() as i64]))
}
