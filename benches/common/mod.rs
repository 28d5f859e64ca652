//! Helpers shared by the benchmarks.
#![allow(dead_code)]

/// The value after `--name` on the command line, if any.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// The median of some timings.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The env's data and model on `device`: its checkpoint when present, else random weights
/// (timing does not depend on the values), and which of the two it is.
pub fn data_and_model(
    spec: &autoprune::config::EnvSpec,
    device: tch::Device,
) -> (
    autoprune::data::Dataset,
    autoprune::model::GraphNet,
    &'static str,
) {
    let data = autoprune::data::load(&spec.data_options(), device)
        .unwrap_or_else(|e| panic!("{e} (run `make setup`)"));
    let mut net = autoprune::model::GraphNet::new(spec.build_graph().expect("graph"), device);
    let weights = if spec.checkpoint_path().exists() {
        net.load(&spec.checkpoint_path()).expect("checkpoint");
        "pretrained"
    } else {
        "random"
    };
    (data, net, weights)
}
