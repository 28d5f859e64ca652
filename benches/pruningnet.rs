//! MetaPruning's PruningNet on ResNet-20 (Fashion-MNIST shapes, batch 128, channel units):
//! images per second of a PruningNet training step (generate every conv's weights for a
//! random encoding, crop, forward, backward through the hypernetworks, Adam) beside a plain
//! training step of the same model, side by side in one run, on the CPU and, where present,
//! on CUDA.
//!
//! `cargo bench --bench pruningnet [-- --rounds N --device cpu|cuda]`

mod common;

use autoprune::config::PruningNetConfig;
use autoprune::device::{device_name, parse_device};
use autoprune::eval::pruningnet::PruningNet;
use autoprune::model::{zoo, GraphNet};
use autoprune::prune::Granularity;
use autoprune::prune::{ActionWall, Budget, CostModel, Criterion, Importance, Masker};
use common::{arg, median};
use rand::{Rng, SeedableRng};
use std::time::Instant;
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor};

const BATCH: i64 = 128;

fn main() {
    let rounds: usize = arg("--rounds").and_then(|r| r.parse().ok()).unwrap_or(10);
    let device = parse_device(&arg("--device").unwrap_or_else(|| "auto".into())).expect("device");
    let mut devices = vec![Device::Cpu];
    if device != Device::Cpu {
        devices.push(device);
    }
    println!(
        "ResNet-20, 1x28x28 inputs, batch {BATCH}, median of {rounds} steps after one warm-up"
    );
    println!(
        "| device | plain step (images/s) | PruningNet step (images/s) | PruningNet / plain |"
    );
    println!("|---|---|---|---|");
    for device in devices {
        let (plain, generated) = measure(device, rounds);
        println!(
            "| {} | {:.0} | {:.0} | {:.2} |",
            device_name(device),
            BATCH as f64 / plain,
            BATCH as f64 / generated,
            plain / generated
        );
    }
}

fn sync(device: Device) {
    if let Device::Cuda(ordinal) = device {
        tch::Cuda::synchronize(ordinal as i64);
    }
}

/// Median seconds of a plain training step and of a PruningNet step.
fn measure(device: Device, rounds: usize) -> (f64, f64) {
    tch::manual_seed(0);
    let graph = zoo::resnet(&vec![1, 28, 28], 10, 20).expect("resnet");
    let net = GraphNet::new(graph, device);
    let images = Tensor::randn([BATCH, 1, 28, 28], (Kind::Float, device));
    let labels = Tensor::randint(10, [BATCH], (Kind::Int64, device));
    let costs = CostModel::new(net.graph(), Granularity::Channel);
    let split = autoprune::data::Split {
        images: images.shallow_clone(),
        labels: labels.shallow_clone(),
    };
    let importance = Importance::compute(&net, Criterion::L1, &split, 0).expect("importance");
    let masker = Masker::new(&costs, &importance);
    let budget = Budget {
        metric: autoprune::prune::Metric::Flops,
        keep: 0.5,
        bounds: [0.1, 1.0],
    };
    let wall = ActionWall::new(&costs, budget, std::path::Path::new("bench")).expect("wall");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);

    let mut optimizer = tch::nn::Adam::default()
        .build(net.var_store(), 1e-3)
        .expect("optimizer");
    let plain: Vec<f64> = (0..=rounds)
        .map(|_| {
            let t = Instant::now();
            let loss = net
                .forward_t(&images, true)
                .cross_entropy_for_logits(&labels);
            optimizer.backward_step(&loss);
            sync(device);
            t.elapsed().as_secs_f64()
        })
        .skip(1)
        .collect();

    let mut pn = PruningNet::new(&net, &PruningNetConfig::default()).expect("pruningnet");
    let units = costs.units().len();
    let generated: Vec<f64> = (0..=rounds)
        .map(|_| {
            let profile: Vec<f64> = (0..units).map(|_| rng.random_range(0.1..=1.0)).collect();
            let masks = masker.masks(&wall.fit(&profile));
            let t = Instant::now();
            pn.train_step(&masks, &images, &labels).expect("step");
            sync(device);
            t.elapsed().as_secs_f64()
        })
        .skip(1)
        .collect();
    (median(plain), median(generated))
}
