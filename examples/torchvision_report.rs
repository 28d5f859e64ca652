//! The README's table of torchvision models through ONNX: for each model exported by
//! tests/fixtures/export_torchvision.py (`scripts/torchvision_table.sh` runs both), its nodes,
//! prunable groups and pinned layers, params and multiply-accumulates against torchvision's
//! published counts, import time, the largest difference from PyTorch's logits in both exporter
//! settings, and the time per episode of a 20-episode random channel search (keep 0.5 of the
//! FLOPs, scored on 16 random images; the data is random, only the time is measured).
//!
//!     cargo run --release --example torchvision_report -- DIR SIDE MODEL...

use autoprune::config::RewardKind;
use autoprune::data::{Dataset, DatasetKind, Split, SplitName};
use autoprune::eval::{EvalConfig, Evaluator};
use autoprune::model::GraphNet;
use autoprune::prune::{allocate, Budget, Criterion, Granularity, Method, Metric, Signals};
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

const EPISODES: usize = 20;
const SAMPLES: i64 = 16;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, side, models @ ..] = args.as_slice() else {
        return Err("usage: torchvision_report DIR SIDE MODEL...".into());
    };
    let side: i64 = side.parse()?;
    let dir = Path::new(dir);
    tch::set_num_threads(1);
    println!("| model | nodes | prunable groups | pinned layers | params (published) | GMACs (published GFLOPS) | import s | largest difference opt / raw | s per episode |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for model in models {
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{model}.json")))?)?;
        let read = |name: &str| -> Result<Tensor, Box<dyn std::error::Error>> {
            let bytes = std::fs::read(dir.join(name))?;
            let values: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Ok(Tensor::from_slice(&values))
        };
        let input = read(&format!("{model}.input.f32"))?.view([2, 3, side, side]);
        let expected = read(&format!("{model}.output.f32"))?.view([2, -1]);
        let mut diffs = Vec::new();
        let mut opt: Option<(GraphNet, f64)> = None;
        for setting in ["opt", "raw"] {
            let path = dir.join(format!("{model}-{setting}.onnx"));
            let start = Instant::now();
            let net =
                autoprune::onnx::load_net(autoprune::onnx::import(&path)?, Device::Cpu, &path)?;
            let seconds = start.elapsed().as_secs_f64();
            let got = tch::no_grad(|| net.forward_t(&input, false));
            let scale = f64::try_from(expected.abs().max())?.max(1.0);
            diffs.push(f64::try_from((&got - &expected).abs().max())? / scale);
            if setting == "opt" {
                opt = Some((net, seconds));
            }
        }
        let (net, seconds) = opt.ok_or("no model")?;
        let graph = net.graph();
        let episode = episode_seconds(&net, side)?;
        println!(
            "| {model} | {} | {} | {} | {:.2} M ({:.2} M) | {:.2} ({:.2}) | {seconds:.2} | {:.1e} / {:.1e} | {episode:.2} |",
            graph.order().len(),
            graph.prunable_groups().len(),
            graph.pinned().len(),
            graph.total_params() as f64 / 1e6,
            meta["published_params"].as_f64().unwrap_or(f64::NAN) / 1e6,
            graph.total_flops() as f64 / 1e9,
            meta["published_gflops"].as_f64().unwrap_or(f64::NAN),
            diffs[0],
            diffs[1],
        );
    }
    Ok(())
}

/// Mean seconds per episode of a random channel search over `EPISODES` policies.
fn episode_seconds(net: &GraphNet, side: i64) -> Result<f64, Box<dyn std::error::Error>> {
    let classes = net.graph().output_shape()[0] as i64;
    let split = |n: i64| Split {
        images: Tensor::randn([n, 3, side, side], (Kind::Float, Device::Cpu)),
        labels: Tensor::randint(classes, [n], (Kind::Int64, Device::Cpu)),
    };
    let data = Dataset {
        kind: DatasetKind::Synthetic,
        shape: vec![3, side as usize, side as usize],
        classes: classes as usize,
        train: split(SAMPLES),
        val: split(SAMPLES),
        test: split(SAMPLES),
    };
    let config = EvalConfig {
        granularity: Granularity::Channel,
        criterion: Criterion::L1,
        budget: Budget {
            metric: Metric::Flops,
            keep: 0.5,
            bounds: [0.05, 1.0],
        },
        reward: RewardKind::Accuracy,
        eval_split: SplitName::Val,
        finetune_steps: 0,
        finetune_lr: 0.01,
        finetune_adam: false,
        recalibration_batches: 0,
        batch_size: SAMPLES as usize,
        eval_batch_size: SAMPLES as usize,
        eval_samples: Some(SAMPLES as usize),
        seed: 0,
        latency: None,
        calibration: 16,
        wanda_rows: true,
        calibration_from_dense: false,
        name: "torchvision".into(),
        weights: "torchvision.safetensors".into(),
        slim_scoring: true,
    };
    let mut evaluator = Evaluator::new(net, &data, config)?;
    let wall = evaluator.wall(Path::new("torchvision"))?;
    let start = Instant::now();
    for episode in 0..EPISODES {
        let keeps = allocate(
            Method::Random,
            &wall,
            evaluator.costs(),
            Signals::default(),
            episode as u64,
        );
        evaluator.evaluate(&keeps)?;
    }
    Ok(start.elapsed().as_secs_f64() / EPISODES as f64)
}
