//! The graph encoder's forward time (encoder, actor and critic, no gradient) as the model
//! graph grows from about 10 to about 2,000 nodes, side by side in one run; the cost should
//! grow linearly with the edges. Writes the curve to docs/gnn-encoder-scaling.png.
//!
//! `cargo bench --bench gnn [-- --rounds N --device cpu --out PNG]`

mod common;

use autoprune::agents::gnn::{DynamicState, GraphInput, GraphPolicy};
use autoprune::device::{device_name, parse_device};
use autoprune::env::Granularity;
use autoprune::model::zoo;
use autoprune::prune::CostModel;
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
}
