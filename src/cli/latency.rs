//! `autoprune latency`: the env's latency table for channel pruning on this device (measured
//! once, then read from its cache), and how well the additive model predicts the measured
//! latency of random policies.

use super::{DeviceArgs, JsonArg, SeedArg};
use anyhow::Result;
use autoprune::config::{EnvOverrides, EnvSpec};
use autoprune::eval::latency::median;
use autoprune::eval::{pretrained, EvalConfig, Evaluator};
use autoprune::prune::Granularity;
use autoprune::runlog::Progress;
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::path::PathBuf;

#[derive(Args)]
pub struct LatencyArgs {
    /// Env file (envs/*.toml); its `[latency]` settings apply, and pruning is by channel.
    #[arg(long)]
    env: PathBuf,
    /// Random policies (keep ratios drawn within the env's keep_bounds) whose measured
    /// latency is compared with the prediction.
    #[arg(long, default_value_t = 20)]
    policies: usize,
    /// Samples per timed forward pass (overrides latency.batch).
    #[arg(long)]
    batch: Option<usize>,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    seed: SeedArg,
    #[command(flatten)]
    json: JsonArg,
}

pub fn run(args: LatencyArgs) -> Result<()> {
    let mut spec = EnvSpec::load(&args.env)?;
    // Latency tables are per channel; a post-training criterion prunes single weights.
    let overrides = EnvOverrides {
        granularity: Some(Granularity::Channel),
        criterion: spec
            .prune
            .criterion
            .is_post_training()
            .then_some(autoprune::prune::Criterion::L1),
        ..Default::default()
    };
    let mut latency = spec.latency_settings().unwrap_or_default();
    if let Some(batch) = args.batch {
        latency.batch = batch;
    }
    spec.latency = Some(latency);
    let spec = spec.with_overrides(&overrides)?;
    let bound = autoprune::check::MAX_SAMPLES;
    if args.policies > bound {
        anyhow::bail!("--policies {}: use at most {bound}", args.policies);
    }
    let seed = args.seed.seed.unwrap_or(0);
    let device = args.device.setup(seed)?;
    let model = pretrained(&spec, device, seed, &Progress::stderr())?;
    let config = EvalConfig {
        recalibration_batches: 0,
        ..EvalConfig::from_env(&spec, seed)?
    };
    let mut evaluator = Evaluator::new(&model.net, &model.data, config)?;
    let costs = evaluator.costs().clone();
    let table = costs
        .latency_table()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no latency table was measured"))?;
    let units = costs.units().len();
    let [lo, hi] = spec.prune.keep_bounds;
    let mut rng = StdRng::seed_from_u64(seed);
    let bar = Progress::stderr().bar(args.policies as u64, "random policies");
    let mut rows = Vec::with_capacity(args.policies);
    for _ in 0..args.policies {
        let keeps: Vec<f64> = (0..units).map(|_| rng.random_range(lo..=hi)).collect();
        let keeps = costs.effective_keeps(&keeps);
        let measured = evaluator
            .latency_of(&keeps)?
            .ok_or_else(|| anyhow::anyhow!("latency is not measured"))?;
        let counts = costs.counts(&keeps);
        rows.push((measured, counts.flops_kept));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut errors: Vec<f64> = rows
        .iter()
        .map(|(l, _)| (l.predicted_latency_ms - l.latency_ms).abs() / l.latency_ms)
        .collect();
    let median_error = median(&mut errors.clone());
    errors.sort_by(f64::total_cmp);
    let worst = errors.last().copied().unwrap_or(f64::NAN);
    let dense = rows.first().map(|(l, _)| l.dense_latency_ms);
    if args.json.json {
        let out = json!({
            "env": spec.name,
            "key": table.key,
            "table_dense_ms": table.dense_ms,
            "fixed_ms": table.fixed_ms,
            "scale": table.scale,
            "dense_ms": dense,
            "nodes": table.nodes.iter().map(|n| json!({
                "node": n.node,
                "inputs": n.inputs,
                "outputs": n.outputs,
                "ms": n.ms,
            })).collect::<Vec<_>>(),
            "policies": rows.iter().map(|(l, flops)| json!({
                "latency_ms": l.latency_ms,
                "predicted_latency_ms": l.predicted_latency_ms,
                "speedup": l.speedup,
                "flops_kept": flops,
            })).collect::<Vec<_>>(),
            "median_abs_error": median_error,
            "max_abs_error": worst,
        });
        println!("{out}");
        return Ok(());
    }
    println!("{}: latency table for {}", spec.name, table.key);
    println!(
        "dense model {:.3} ms when the table was made; a model takes {:.3} ms + {:.3} x the sum of its nodes' table latencies",
        table.dense_ms, table.fixed_ms, table.scale
    );
    println!(
        "{:<28} {:>14} {:>14} {:>10} {:>10}",
        "node", "inputs", "outputs", "dense ms", "least ms"
    );
    for n in &table.nodes {
        let span = |axis: &[usize]| match axis {
            [one] => format!("{one}"),
            _ => format!("{}..{}", axis[0], axis[axis.len() - 1]),
        };
        println!(
            "{:<28} {:>14} {:>14} {:>10.4} {:>10.4}",
            n.node,
            span(&n.inputs),
            span(&n.outputs),
            n.ms[n.ms.len() - 1],
            n.ms[0]
        );
    }
    if !rows.is_empty() {
        println!(
            "{} random policies: predicted against measured latency, median absolute error {:.1}%, largest {:.1}%",
            rows.len(),
            100.0 * median_error,
            100.0 * worst
        );
    }
    Ok(())
}
