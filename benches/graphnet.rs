//! Training throughput of GraphNet against the same networks written directly with `tch::nn`,
//! measured side by side in one run (interleaved rounds, median of each).
//!
//! `cargo bench --bench graphnet [-- --rounds N --steps N --threads N]`

mod common;

use autoprune::model::{zoo, GraphNet};
use common::{arg, median};
use std::time::Instant;
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

const BATCH: i64 = 128;

/// The fmnist-vgg network, written with tch::nn.
fn vgg_nn(vs: &nn::Path, cfg: &[Option<i64>]) -> nn::SequentialT {
    let mut seq = nn::seq_t();
    let mut channels = 1;
    let mut side = 28;
    for (i, item) in cfg.iter().enumerate() {
        match item {
            Some(width) => {
                let conv = nn::ConvConfig {
                    padding: 1.into(),
                    bias: false,
                    ..Default::default()
                };
                seq = seq
                    .add(nn::conv2d(
                        vs / format!("conv{i}"),
                        channels,
                        *width,
                        3,
                        conv,
                    ))
                    .add(nn::batch_norm2d(
                        vs / format!("bn{i}"),
                        *width,
                        Default::default(),
                    ))
                    .add_fn(|x| x.relu());
                channels = *width;
            }
            None => {
                seq = seq.add_fn(|x| x.max_pool2d_default(2));
                side /= 2;
            }
        }
    }
    seq.add_fn(|x| x.flatten(1, -1)).add(nn::linear(
        vs / "fc",
        channels * side * side,
        10,
        Default::default(),
    ))
}

/// LeNet-5 as in the zoo, written with tch::nn.
fn lenet_nn(vs: &nn::Path) -> nn::SequentialT {
    nn::seq_t()
        .add(nn::conv2d(
            vs / "conv1",
            1,
            6,
            5,
            nn::ConvConfig {
                padding: 2.into(),
                ..Default::default()
            },
        ))
        .add_fn(|x| x.relu().max_pool2d_default(2))
        .add(nn::conv2d(vs / "conv2", 6, 16, 5, Default::default()))
        .add_fn(|x| x.relu().max_pool2d_default(2).flatten(1, -1))
        .add(nn::linear(vs / "fc1", 400, 120, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(vs / "fc2", 120, 84, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(vs / "fc3", 84, 10, Default::default()))
}

/// Seconds for `steps` SGD steps of `forward` on fixed random batches.
fn time_steps(
    vs: &nn::VarStore,
    steps: usize,
    batches: &[(Tensor, Tensor)],
    forward: &dyn Fn(&Tensor) -> Tensor,
) -> f64 {
    let mut opt = nn::Sgd {
        momentum: 0.9,
        ..Default::default()
    }
    .build(vs, 0.01)
    .expect("optimizer");
    let started = Instant::now();
    for step in 0..steps {
        let (x, y) = &batches[step % batches.len()];
        let loss = forward(x).cross_entropy_for_logits(y);
        opt.backward_step(&loss);
    }
    started.elapsed().as_secs_f64()
}

/// A numeric command-line value, or `default`.
fn number(name: &str, default: usize) -> usize {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let rounds = number("--rounds", 11);
    let steps = number("--steps", 30);
    if let Some(threads) = std::env::args()
        .position(|a| a == "--threads")
        .map(|_| number("--threads", 1))
    {
        tch::set_num_threads(threads as i32);
    }
    let device = Device::cuda_if_available();
    tch::manual_seed(0);
    let batches: Vec<(Tensor, Tensor)> = (0..4)
        .map(|_| {
            (
                Tensor::randn([BATCH, 1, 28, 28], (Kind::Float, device)),
                Tensor::randint(10, [BATCH], (Kind::Int64, device)),
            )
        })
        .collect();
    println!("GraphNet vs tch::nn training throughput on {device:?}, batch {BATCH}, {rounds} rounds x {steps} steps, median images/s");
    println!("| network | tch::nn (img/s) | GraphNet (img/s) | GraphNet / tch::nn |");
    println!("|---|---|---|---|");

    let shape = vec![1, 28, 28];
    let cfg_items = [32, 32, 0, 64, 64, 0, 128, 128, 0];
    let vgg_cfg: Vec<zoo::VggItem> = cfg_items
        .iter()
        .map(|&w| {
            if w == 0 {
                zoo::VggItem::Pool(zoo::PoolMarker::M)
            } else {
                zoo::VggItem::Conv(w)
            }
        })
        .collect();
    let nn_cfg: Vec<Option<i64>> = cfg_items
        .iter()
        .map(|&w| (w != 0).then_some(w as i64))
        .collect();

    type Case = (
        &'static str,
        autoprune::graph::ModelGraph,
        Box<dyn Fn(&nn::Path) -> nn::SequentialT>,
    );
    let cases: Vec<Case> = vec![
        (
            "fmnist-vgg",
            zoo::vgg(&shape, 10, &vgg_cfg).expect("vgg"),
            Box::new(move |p| vgg_nn(p, &nn_cfg)),
        ),
        (
            "lenet5",
            zoo::lenet5(&shape, 10).expect("lenet5"),
            Box::new(lenet_nn),
        ),
    ];
    for (name, graph, build_nn) in cases {
        let graph_net = GraphNet::new(graph, device);
        let nn_vs = nn::VarStore::new(device);
        let nn_model = build_nn(&nn_vs.root());
        // Warm-up both (allocator, kernels).
        time_steps(graph_net.var_store(), 3, &batches, &|x| {
            graph_net.forward_t(x, true)
        });
        time_steps(&nn_vs, 3, &batches, &|x| nn_model.forward_t(x, true));
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate which goes first, so drift on a busy machine hits both alike.
            let mut run_ours = || {
                ours.push(time_steps(graph_net.var_store(), steps, &batches, &|x| {
                    graph_net.forward_t(x, true)
                }))
            };
            let mut run_theirs = || {
                theirs.push(time_steps(&nn_vs, steps, &batches, &|x| {
                    nn_model.forward_t(x, true)
                }))
            };
            if round % 2 == 0 {
                run_ours();
                run_theirs();
            } else {
                run_theirs();
                run_ours();
            }
        }
        let images = (steps as i64 * BATCH) as f64;
        let (ours, theirs) = (images / median(ours), images / median(theirs));
        println!(
            "| {name} | {theirs:.0} | {ours:.0} | {:.3} |",
            ours / theirs
        );
    }
}
