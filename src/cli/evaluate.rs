//! `autoprune evaluate`: scores the env's pretrained model.

use super::{DeviceArgs, JsonArg, SeedArg};
use anyhow::Result;
use autoprune::config::EnvSpec;
use autoprune::device::device_name;
use autoprune::eval::pretrained;
use autoprune::runlog::Progress;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct EvaluateArgs {
    /// Env file (envs/*.toml).
    #[arg(long)]
    env: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    seed: SeedArg,
    #[command(flatten)]
    out: JsonArg,
}

pub fn run(args: EvaluateArgs) -> Result<()> {
    let started = Instant::now();
    let spec = EnvSpec::load(&args.env)?;
    let seed = args.seed.seed.unwrap_or(0);
    let device = args.device.setup(seed)?;
    let model = pretrained(&spec, device, seed, &Progress::stderr())?;
    let (net, data) = (&model.net, &model.data);
    let on_eval = net.evaluate(data.split(spec.data.eval_split), 1000)?;
    let test = net.evaluate(&data.test, 1000)?;
    let text = spec.data.dataset.is_text();
    if args.out.json {
        let out = json!({
            "env": spec.name,
            "device": device_name(device),
            "params": net.graph().total_params(),
            "flops": net.graph().total_flops(),
            "split": spec.data.eval_split,
            "accuracy": on_eval.accuracy,
            "loss": on_eval.loss,
            "test_accuracy": test.accuracy,
            "test_loss": test.loss,
            "perplexity": text.then(|| on_eval.loss.exp()),
            "test_perplexity": text.then(|| test.loss.exp()),
            "checkpoint": spec.weights_path(),
            "seconds": started.elapsed().as_secs_f64(),
        });
        println!("{out}");
    } else if text {
        println!(
            "{}: {:?} perplexity {:.4}, test perplexity {:.4} per byte ({} params, {} MACs per sequence)",
            spec.name,
            spec.data.eval_split,
            on_eval.loss.exp(),
            test.loss.exp(),
            net.graph().total_params(),
            net.graph().total_flops()
        );
    } else {
        println!(
            "{}: {:?} accuracy {:.2}%, test accuracy {:.2}% ({} params, {} MACs per sample)",
            spec.name,
            spec.data.eval_split,
            100.0 * on_eval.accuracy,
            100.0 * test.accuracy,
            net.graph().total_params(),
            net.graph().total_flops()
        );
    }
    Ok(())
}
