//! The graph encoder's forward time (encoder, actor and critic, no gradient) as the model
//! graph grows from about 10 to about 2,000 nodes, side by side in one run; the cost should
//! grow linearly with the edges. Writes the curve to docs/gnn-encoder-scaling.png. Then the
//! graph agent's training step (one PPO update over a batch of episodes on ResNet-20's
//! channel units) on the CPU and, where present, on CUDA, side by side.
//!
//! `cargo bench --bench gnn [-- --rounds N --device cpu --out PNG]`

mod common;

use autoprune::agents::gnn::{DynamicState, GnnConfig, GraphAgent, GraphInput, GraphPolicy};
use autoprune::agents::{Agent, Episode, Learner, OneShotActor};
use autoprune::device::{device_name, parse_device};
use autoprune::model::zoo;
use autoprune::prune::CostModel;
use autoprune::prune::Granularity;
use common::{arg, median};
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let rounds: usize = arg("--rounds").and_then(|r| r.parse().ok()).unwrap_or(21);
    let device = parse_device(&arg("--device").unwrap_or_else(|| "auto".into())).expect("device");
    let out = PathBuf::from(arg("--out").unwrap_or_else(|| "docs/gnn-encoder-scaling.png".into()));
    tch::manual_seed(0);
    let policy = GraphPolicy::new(64, 3, device);
    let granularity = Granularity::try_from("channel".to_string()).expect("granularity");
    // An MLP for the smallest graph, then ResNets of growing depth (6n+2).
    let mut graphs = vec![(
        "mlp".to_string(),
        zoo::mlp(&vec![64], 10, &[32, 32]).expect("mlp"),
    )];
    for depth in [8, 20, 56, 110, 218, 434, 650] {
        let graph = zoo::resnet(&vec![3, 32, 32], 10, depth).expect("resnet");
        graphs.push((format!("resnet{depth}"), graph));
    }
    println!(
        "GraphPolicy (hidden 64, 3 layers) forward on {}, median of {rounds} rounds",
        device_name(device)
    );
    println!("| graph | nodes | edges | units | forward (ms) | µs per edge |");
    println!("|---|---|---|---|---|---|");
    let mut points = Vec::new();
    for (name, graph) in &graphs {
        let costs = CostModel::new(graph, granularity);
        let state = DynamicState::initial(costs.units().len(), 0.5);
        let input = GraphInput::new(&costs, &state, device);
        let _guard = tch::no_grad_guard();
        let _ = policy.forward(&input);
        let times: Vec<f64> = (0..rounds)
            .map(|_| {
                let t = Instant::now();
                let (actions, value) = policy.forward(&input);
                let _ = (
                    f64::try_from(actions.sum(tch::Kind::Float)),
                    f64::try_from(value),
                );
                t.elapsed().as_secs_f64()
            })
            .collect();
        let seconds = median(times);
        let edges = graph.graph().edge_count();
        println!(
            "| {name} | {} | {edges} | {} | {:.3} | {:.3} |",
            graph.graph().node_count(),
            costs.units().len(),
            1e3 * seconds,
            1e6 * seconds / edges as f64
        );
        points.push((edges as f64, 1e3 * seconds));
    }
    autoprune::report::render_scaling(
        &out,
        "graph encoder forward time against graph size",
        "edges",
        "milliseconds",
        &points,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    println!("curve written to {}", out.display());
    training_step(rounds, device);
}

/// Seconds per PPO update (and per acting forward pass) of the graph agent on ResNet-20's
/// channel units, on the CPU and on `device` when that is another one.
fn training_step(rounds: usize, device: tch::Device) {
    let graph = zoo::resnet(&vec![1, 28, 28], 10, 20).expect("resnet");
    let costs = CostModel::new(
        &graph,
        Granularity::try_from("channel".to_string()).expect("granularity"),
    );
    let config = GnnConfig::default();
    let batch = config.episodes_per_update;
    println!();
    println!(
        "graph agent training step on resnet20 ({} units): one PPO update = {} epochs over {batch} episodes, median of {rounds}",
        costs.units().len(),
        config.epochs
    );
    println!("| device | act (ms) | PPO update (ms) |");
    println!("|---|---|---|");
    let mut devices = vec![tch::Device::Cpu];
    if device != tch::Device::Cpu {
        devices.push(device);
    }
    let observation: Vec<Vec<f32>> = Vec::new();
    for device in devices {
        let mut agent = GraphAgent::new(config.clone(), &costs, 0.5, 0, device).expect("agent");
        let mut act = Vec::new();
        let mut update = Vec::new();
        // One warm-up round, then `rounds` timed ones.
        for round in 0..=rounds {
            for index in 0..batch {
                agent.begin_episode(index);
                let t = Instant::now();
                let actions = OneShotActor::act(&mut agent, &observation, true);
                let acted = t.elapsed().as_secs_f64();
                let reward = actions.iter().sum::<f64>() / actions.len() as f64;
                let episode = Episode {
                    index,
                    transitions: Vec::new(),
                    proposed: actions,
                    reward,
                };
                let t = Instant::now();
                agent.learn(&episode).expect("learn");
                if let tch::Device::Cuda(ordinal) = device {
                    tch::Cuda::synchronize(ordinal as i64);
                }
                // The last episode of the batch triggers the update.
                if round > 0 {
                    act.push(acted);
                    if index + 1 == batch {
                        update.push(t.elapsed().as_secs_f64());
                    }
                }
            }
        }
        println!(
            "| {} | {:.3} | {:.3} |",
            device_name(device),
            1e3 * median(act),
            1e3 * median(update)
        );
    }
}
