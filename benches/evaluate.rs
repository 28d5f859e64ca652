//! Time to evaluate one policy (masks applied, forward over the evaluation split, score)
//! against a plain dense forward pass over the same split, side by side in one run; for
//! channel pruning, the policy scored on its slimmed model against the masked one; and
//! policies per second with `evaluate_batch`.
//!
//! `cargo bench --bench evaluate [-- --env envs/fmnist-vgg.toml --rounds N --device cpu]`
//! Needs the env's data (`make setup`); uses its checkpoint when present, else random weights
//! (timing does not depend on the values).

mod common;

use autoprune::config::EnvSpec;
use autoprune::device::{device_name, parse_device};
use autoprune::eval::{EvalConfig, Evaluator};
use autoprune::prune::{allocate, Method, Signals};
use common::{arg, data_and_model, median};
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let env = PathBuf::from(arg("--env").unwrap_or_else(|| "envs/fmnist-vgg.toml".into()));
    let rounds: usize = arg("--rounds").and_then(|r| r.parse().ok()).unwrap_or(7);
    let device = parse_device(&arg("--device").unwrap_or_else(|| "auto".into())).expect("device");
    let spec = EnvSpec::load(&env).unwrap_or_else(|e| panic!("{e}"));
    let (data, net, weights) = data_and_model(&spec, device);
    let split = data.split(spec.data.eval_split);
    let mut plain_config = EvalConfig::from_env(&spec, 0).expect("config");
    plain_config.recalibration_batches = 0;
    plain_config.finetune_steps = 0;
    let recal_config = EvalConfig {
        recalibration_batches: spec.reward.recalibration_batches,
        ..plain_config.clone()
    };
    let masked_config = EvalConfig {
        slim_scoring: false,
        ..recal_config.clone()
    };
    let mut plain = Evaluator::new(&net, &data, plain_config.clone()).expect("evaluator");
    let mut recal = Evaluator::new(&net, &data, recal_config).expect("evaluator");
    let mut masked = Evaluator::new(&net, &data, masked_config).expect("evaluator");
    let keeps = {
        let wall = plain.wall(&env).expect("wall");
        plain.allocate(Method::Lamp, &wall, 0).expect("lamp")
    };
    // Warm-up.
    net.evaluate(split, plain_config.eval_batch_size)
        .expect("dense");
    plain.evaluate(&keeps).expect("policy");
    recal.evaluate(&keeps).expect("policy");
    masked.evaluate(&keeps).expect("policy");
    let (mut dense_t, mut policy_t, mut recal_t) = (Vec::new(), Vec::new(), Vec::new());
    let mut masked_t = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        net.evaluate(split, plain_config.eval_batch_size)
            .expect("dense");
        dense_t.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        plain.evaluate(&keeps).expect("policy");
        policy_t.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        recal.evaluate(&keeps).expect("policy");
        recal_t.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        masked.evaluate(&keeps).expect("policy");
        masked_t.push(t.elapsed().as_secs_f64());
    }
    let policies: Vec<Vec<f64>> = (0..8)
        .map(|seed| {
            let wall = plain.wall(&env).expect("wall");
            allocate(
                Method::Random,
                &wall,
                plain.costs(),
                Signals::default(),
                seed,
            )
        })
        .collect();
    let t = Instant::now();
    plain.evaluate_batch(&policies).expect("batch");
    let batch_rate = policies.len() as f64 / t.elapsed().as_secs_f64();
    let (dense, policy, with_recal) = (median(dense_t), median(policy_t), median(recal_t));
    println!(
        "{} ({} weights) on {}, {} {:?} samples, {} granularity, median of {rounds} rounds",
        spec.name,
        weights,
        device_name(device),
        split.len(),
        spec.data.eval_split,
        String::from(spec.prune.granularity)
    );
    println!("| measurement | seconds | ratio to dense forward |");
    println!("|---|---|---|");
    println!("| dense forward over the split | {dense:.3} | 1.000 |");
    println!(
        "| evaluate(policy): masks + forward + score | {policy:.3} | {:.3} |",
        policy / dense
    );
    println!(
        "| evaluate(policy) with BatchNorm recalibration ({} batches) | {with_recal:.3} | {:.3} |",
        spec.reward.recalibration_batches,
        with_recal / dense
    );
    if recal.scored_slimmed() {
        let masked = median(masked_t);
        println!(
            "| the same, scored on the masked model instead of the slimmed one | {masked:.3} | {:.3} |",
            masked / dense
        );
        println!(
            "scoring on the slimmed model: {:.2}x the masked model's evaluations per second",
            masked / with_recal
        );
    }
    println!(
        "evaluate_batch: {batch_rate:.2} policies/s ({} policies)",
        policies.len()
    );
}
