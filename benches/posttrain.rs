//! Cost of one policy evaluation under the post-training criteria, side by side in one run:
//! magnitude masks, Wanda and SparseGPT (each on the env's calibration windows, layer by
//! layer, from the pruned layers' outputs or from the dense model's inputs cached), each
//! followed by the same forward over the search's validation subset; against the dense
//! forward over that subset.
//!
//! `cargo bench --bench posttrain [-- --env envs/shakespeare-gpt-wanda.toml --rounds N
//! --samples N --device cpu]`. Needs the env's data (`make setup`); uses its checkpoint when
//! present, else random weights (timing does not depend on the values).

mod common;

use autoprune::config::EnvSpec;
use autoprune::device::{device_name, parse_device};
use autoprune::eval::{EvalConfig, Evaluator};
use autoprune::prune::{Criterion, Method};
use common::{arg, data_and_model, median};
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let env =
        PathBuf::from(arg("--env").unwrap_or_else(|| "envs/shakespeare-gpt-wanda.toml".into()));
    let rounds: usize = arg("--rounds").and_then(|r| r.parse().ok()).unwrap_or(5);
    let samples: usize = arg("--samples").and_then(|r| r.parse().ok()).unwrap_or(256);
    let device = parse_device(&arg("--device").unwrap_or_else(|| "auto".into())).expect("device");
    let spec = EnvSpec::load(&env).unwrap_or_else(|e| panic!("{e}"));
    let (data, net, weights) = data_and_model(&spec, device);
    let subset = data.split(spec.data.eval_split).head(samples);
    let config = |criterion, calibration_from_dense| EvalConfig {
        criterion,
        calibration_from_dense,
        eval_samples: Some(samples),
        recalibration_batches: 0,
        finetune_steps: 0,
        ..EvalConfig::from_env(&spec, 0).expect("config")
    };
    let criteria = [
        ("magnitude", Criterion::Magnitude, false),
        ("wanda", Criterion::Wanda, false),
        ("wanda, dense inputs cached", Criterion::Wanda, true),
        ("sparsegpt", Criterion::SparseGpt, false),
        ("sparsegpt, dense inputs cached", Criterion::SparseGpt, true),
    ];
    let mut evaluators: Vec<Evaluator> = criteria
        .iter()
        .map(|&(_, c, dense)| Evaluator::new(&net, &data, config(c, dense)).expect("evaluator"))
        .collect();
    let keeps = {
        let wall = evaluators[0].wall(&env).expect("wall");
        evaluators[0]
            .allocate(Method::Uniform, &wall, 0)
            .expect("uniform")
    };
    let batch = evaluators[0].config().eval_batch_size;
    // Warm-up.
    net.evaluate(&subset, batch).expect("dense");
    for e in &mut evaluators {
        e.evaluate(&keeps).expect("policy");
    }
    let mut times = vec![Vec::new(); criteria.len() + 1];
    for _ in 0..rounds {
        let t = Instant::now();
        net.evaluate(&subset, batch).expect("dense");
        times[0].push(t.elapsed().as_secs_f64());
        for (i, e) in evaluators.iter_mut().enumerate() {
            let t = Instant::now();
            e.evaluate(&keeps).expect("policy");
            times[i + 1].push(t.elapsed().as_secs_f64());
        }
    }
    let medians: Vec<f64> = times.into_iter().map(median).collect();
    println!(
        "{} ({weights} weights) on {}, {} calibration samples, {samples} evaluation samples, keep {} of {:?}, median of {rounds} rounds",
        spec.name,
        device_name(device),
        spec.prune.calibration,
        spec.prune.target.keep,
        spec.prune.target.metric,
    );
    println!("| measurement | seconds | ratio to dense forward |");
    println!("|---|---|---|");
    println!(
        "| dense forward over the subset | {:.3} | 1.000 |",
        medians[0]
    );
    for ((label, _, _), t) in criteria.iter().zip(&medians[1..]) {
        println!(
            "| evaluate(policy) with {label} | {t:.3} | {:.2} |",
            t / medians[0]
        );
    }
}
