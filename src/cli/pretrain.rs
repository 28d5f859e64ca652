//! `autoprune pretrain`: trains the env's model from scratch and saves its checkpoint.

use super::{DeviceArgs, JsonArg, SeedArg};
use anyhow::Result;
use autoprune::config::EnvSpec;
use autoprune::data;
use autoprune::device::device_name;
use autoprune::model::{train, GraphNet};
use autoprune::runlog::Progress;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct PretrainArgs {
    /// Env file (envs/*.toml).
    #[arg(long)]
    env: PathBuf,
    /// Overrides the env's [train] epochs.
    #[arg(long)]
    epochs: Option<usize>,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    seed: SeedArg,
    #[command(flatten)]
    out: JsonArg,
}

pub fn run(args: PretrainArgs) -> Result<()> {
    let started = Instant::now();
    let env = &args.env;
    let spec = EnvSpec::load(env)?;
    anyhow::ensure!(
        !spec.model.brings_weights(),
        "{}: key `model.arch`: an onnx or hf-gpt2 model brings its own weights; there is nothing to pretrain (run `autoprune evaluate --env {}` to score it)",
        env.display(),
        env.display()
    );
    let mut config = spec.train.clone();
    if let Some(epochs) = args.epochs {
        let max = autoprune::check::MAX_EPOCHS;
        anyhow::ensure!(
            (1..=max).contains(&epochs),
            "--epochs {epochs}: use 1 to {max}"
        );
        config.epochs = epochs;
    }
    let seed = args.seed.seed.unwrap_or(0);
    let device = args.device.setup(seed)?;
    let graph = spec.build_dense_graph()?;
    let checkpoint = spec.checkpoint_path();
    autoprune::fsio::prepare_output(&checkpoint)
        .map_err(|e| e.noted(&format!("model.checkpoint in {}", env.display())))?;
    let progress = Progress::stderr();
    if !args.out.json {
        print!("{}", graph.summary(&spec.name));
    }
    let data = data::load(&spec.data_options(), device)?;
    progress.println(&format!(
        "pretraining {} on {} ({} train / {} val / {} test) on {}, {} epochs",
        spec.name,
        spec.data.dataset.name(),
        data.train.len(),
        data.val.len(),
        data.test.len(),
        device_name(device),
        config.epochs
    ));
    let mut net = GraphNet::new(graph, device);
    let train_started = Instant::now();
    let history = train(&mut net, &data, &config, seed, &progress)?;
    let train_seconds = train_started.elapsed().as_secs_f64();
    let test = net.evaluate(&data.test, 1000)?;
    net.save(&checkpoint)?;
    let val = history.last().map(|e| e.val.accuracy).unwrap_or(0.0);
    let val_loss = history.last().map(|e| e.val.loss).unwrap_or(f64::NAN);
    let text = spec.data.dataset.is_text();
    if args.out.json {
        let out = json!({
            "env": spec.name,
            "arch": spec.model.arch(),
            "dataset": spec.data.dataset.name(),
            "device": device_name(device),
            "epochs": config.epochs,
            "params": net.graph().total_params(),
            "flops": net.graph().total_flops(),
            "val_accuracy": val,
            "test_accuracy": test.accuracy,
            "test_loss": test.loss,
            "val_loss": val_loss,
            "val_perplexity": text.then(|| val_loss.exp()),
            "test_perplexity": text.then(|| test.loss.exp()),
            "train_seconds": train_seconds,
            "seconds": started.elapsed().as_secs_f64(),
            "checkpoint": checkpoint,
            "history": history,
        });
        println!("{out}");
    } else if text {
        println!(
            "test loss {:.4} nats per byte (perplexity {:.3}), val loss {:.4} (perplexity {:.3}), {} epochs in {:.0}s on {}",
            test.loss,
            test.loss.exp(),
            val_loss,
            val_loss.exp(),
            config.epochs,
            train_seconds,
            device_name(device)
        );
        println!("checkpoint written to {}", checkpoint.display());
    } else {
        println!(
            "test accuracy {:.2}% (loss {:.4}), val accuracy {:.2}%, {} epochs in {:.0}s on {}",
            100.0 * test.accuracy,
            test.loss,
            100.0 * val,
            config.epochs,
            train_seconds,
            device_name(device)
        );
        println!("checkpoint written to {}", checkpoint.display());
    }
    Ok(())
}
