//! The graph agent's network: permutation-equivariant (relabelling a graph's nodes leaves
//! every unit's action unchanged), runs on graphs it never saw of any size, and its
//! checkpoint loads back exactly.

use autoprune::agents::gnn::{DynamicState, GraphPolicy};
use autoprune::graph::{GraphJson, ModelGraph};
use autoprune::model::checkpoint::{load_var_store, save_var_store};
use autoprune::model::zoo;
use autoprune::prune::Granularity;
use autoprune::prune::{CostModel, UnitKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use tch::Device;

fn policy(seed: i64) -> GraphPolicy {
    tch::set_num_threads(1);
    tch::manual_seed(seed);
    GraphPolicy::new(32, 3, Device::Cpu)
}

fn granularity(name: &str) -> Granularity {
    Granularity::try_from(name.to_string()).unwrap()
}

/// The same graph with its nodes added in another (random, topologically valid) order.
fn relabelled(graph: &ModelGraph, seed: u64) -> ModelGraph {
    let json: GraphJson = graph.to_json();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut placed = std::collections::HashSet::new();
    let mut pending = json.nodes.clone();
    let mut order = Vec::new();
    while !pending.is_empty() {
        let ready: Vec<usize> = (0..pending.len())
            .filter(|&i| pending[i].inputs.iter().all(|n| placed.contains(n)))
            .collect();
        let pick = ready[rng.random_range(0..ready.len())];
        let node = pending.remove(pick);
        placed.insert(node.name.clone());
        order.push(node);
    }
    let json = GraphJson {
        nodes: order,
        ..json
    };
    ModelGraph::from_json(&json).unwrap()
}

/// Each unit's actions under a name that does not depend on node order: the layer's name, or
/// the sorted names of a channel group's producers.
fn actions_by_unit(
    policy: &GraphPolicy,
    costs: &CostModel,
    keeps: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    let graph = costs.graph();
    let keys: Vec<String> = costs
        .units()
        .iter()
        .map(|u| match u.kind {
            UnitKind::Layer(i) => graph.node(i).name.clone(),
            UnitKind::Group(g) => {
                let mut names: Vec<String> = graph.prunable_groups()[g]
                    .producers
                    .iter()
                    .map(|&i| graph.node(i).name.clone())
                    .collect();
                names.sort();
                names.join("+")
            }
        })
        .collect();
    let state = DynamicState {
        keeps: keys
            .iter()
            .map(|k| keeps.get(k).copied().unwrap_or(1.0))
            .collect(),
        budget: 0.3,
        reduced: 0.2,
        remaining: 0.5,
    };
    keys.into_iter().zip(policy.act(costs, &state)).collect()
}

#[test]
fn relabelling_the_nodes_leaves_every_units_action_unchanged() {
    let net = policy(1);
    // Residual nets: their branches can be added in many orders (a chain such as VGG or
    // MobileNetV2 has only one).
    let graphs = [
        zoo::resnet(&vec![1, 16, 16], 10, 14).unwrap(),
        zoo::resnet(&vec![3, 32, 32], 10, 20).unwrap(),
    ];
    for graph in &graphs {
        for g in ["channel", "unstructured"] {
            let costs = CostModel::new(graph, granularity(g));
            let first = actions_by_unit(&net, &costs, &BTreeMap::new());
            // Some units already decided, so the dynamic features matter too.
            let keeps: BTreeMap<String, f64> = first
                .keys()
                .enumerate()
                .filter(|(i, _)| i % 3 == 0)
                .map(|(i, k)| (k.clone(), 0.2 + 0.01 * i as f64))
                .collect();
            let reference = actions_by_unit(&net, &costs, &keeps);
            for seed in 0..3 {
                let other = relabelled(graph, seed);
                let names = |m: &ModelGraph| -> Vec<String> {
                    m.graph()
                        .node_indices()
                        .map(|i| m.node(i).name.clone())
                        .collect()
                };
                assert_ne!(
                    names(graph),
                    names(&other),
                    "the relabelling changed nothing"
                );
                let costs = CostModel::new(&other, granularity(g));
                let actions = actions_by_unit(&net, &costs, &keeps);
                assert_eq!(actions.len(), reference.len());
                for (unit, a) in &reference {
                    let b = actions[unit];
                    assert!((a - b).abs() < 1e-5, "{g} {unit}: {a} vs {b}");
                }
            }
            // And the actions do depend on the graph: not one value for all units.
            let values: Vec<f64> = reference.values().copied().collect();
            let spread = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
                - values.iter().cloned().fold(f64::INFINITY, f64::min);
            assert!(spread > 1e-4, "{g}: every unit gets the same action");
        }
    }
}

#[test]
fn runs_on_graphs_it_never_saw_of_any_size() {
    let net = policy(2);
    let cfg: Vec<zoo::VggItem> = serde_json::from_str(r#"[16, "M", 32, 32, "M", 64]"#).unwrap();
    let graphs = [
        zoo::mlp(&vec![64], 4, &[32, 16]).unwrap(),
        zoo::lenet5(&vec![1, 28, 28], 10).unwrap(),
        zoo::vgg(&vec![1, 28, 28], 10, &cfg).unwrap(),
        zoo::resnet(&vec![1, 28, 28], 10, 20).unwrap(),
        zoo::resnet(&vec![3, 32, 32], 10, 56).unwrap(),
        zoo::mobilenetv2(&vec![1, 28, 28], 10, 0.5).unwrap(),
    ];
    let mut sizes = Vec::new();
    for graph in &graphs {
        for g in ["channel", "unstructured", "2:4"] {
            let costs = CostModel::new(graph, granularity(g));
            let state = DynamicState::initial(costs.units().len(), 0.5);
            let actions = net.act(&costs, &state);
            assert_eq!(actions.len(), costs.units().len());
            assert!(actions
                .iter()
                .all(|a| a.is_finite() && *a > 0.0 && *a < 1.0));
            assert_eq!(actions, net.act(&costs, &state), "deterministic");
        }
        sizes.push(graph.graph().node_count());
    }
    assert!(
        sizes.iter().max().unwrap() > &(10 * sizes.iter().min().unwrap()),
        "{sizes:?}"
    );
}

#[test]
fn a_checkpoint_loads_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.safetensors");
    let graph = zoo::resnet(&vec![1, 16, 16], 10, 8).unwrap();
    let costs = CostModel::new(&graph, granularity("channel"));
    let state = DynamicState::initial(costs.units().len(), 0.5);
    let trained = policy(3);
    save_var_store(trained.var_store(), &path).unwrap();
    let fresh = policy(4);
    assert_ne!(fresh.act(&costs, &state), trained.act(&costs, &state));
    load_var_store(
        fresh.var_store(),
        &path,
        |_| (0, 0),
        |_| false,
        "autoprune search",
    )
    .unwrap();
    assert_eq!(fresh.act(&costs, &state), trained.act(&costs, &state));
    // A checkpoint of another width is refused with the tensor named.
    tch::manual_seed(5);
    let wider = GraphPolicy::new(48, 3, Device::Cpu);
    let error = load_var_store(
        wider.var_store(),
        &path,
        |_| (0, 0),
        |_| false,
        "autoprune search",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("agent.safetensors") && error.contains("another model"),
        "{error}"
    );
}

#[test]
fn the_scaling_curve_is_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("curve.png");
    let points = [(7.0, 0.2), (83.0, 0.3), (875.0, 1.0), (2603.0, 3.1)];
    autoprune::report::render_scaling(&png, "t", "edges", "ms", &points).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // Width and height from the IHDR chunk.
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (800, 560));
    let error = autoprune::report::render_scaling(&png, "t", "x", "y", &[(0.0, 1.0)])
        .unwrap_err()
        .to_string();
    assert!(error.contains("no positive points"), "{error}");
}

#[test]
fn an_agent_checkpoint_records_its_config_and_loads_with_it() {
    use autoprune::agents::gnn::{GnnConfig, GraphAgent};
    use autoprune::agents::OneShotActor;
    use autoprune::model::checkpoint::recorded_config;
    use autoprune::run::agent_file::{load_graph_agent, save_agent};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.safetensors");
    let graph = zoo::resnet(&vec![1, 16, 16], 10, 8).unwrap();
    let costs = CostModel::new(&graph, granularity("channel"));
    let narrow = GnnConfig {
        hidden: 24,
        layers: 2,
        ..GnnConfig::default()
    };
    let mut trained = GraphAgent::new(narrow, &costs, 0.5, 3, Device::Cpu).unwrap();
    save_agent(&trained.to_checkpoint(), &path).unwrap();
    let recorded: GnnConfig = recorded_config(&path, "gnn").unwrap().unwrap();
    assert_eq!((recorded.hidden, recorded.layers), (24, 2));
    // Loading takes width and depth from the file, whatever the adaptation settings say.
    let settings = GnnConfig {
        hidden: 64,
        layers: 3,
        lr: 5e-4,
        ..GnnConfig::default()
    };
    let mut loaded = load_graph_agent(&path, &costs, 0.5, 7, settings).unwrap();
    let features: Vec<Vec<f32>> = Vec::new();
    assert_eq!(
        OneShotActor::act(&mut loaded, &features, false),
        OneShotActor::act(&mut trained, &features, false)
    );
    let wrong = recorded_config::<GnnConfig>(&path, "pruningnet").unwrap_err();
    assert!(wrong.to_string().contains("holds a `gnn` agent"), "{wrong}");
}

/// The episode records of a multi-task run without their times.
fn untimed(run: &std::path::Path) -> Vec<serde_json::Value> {
    crate::common::records(run)
        .into_iter()
        .map(|mut r| {
            r.as_object_mut().unwrap().remove("seconds");
            r
        })
        .collect()
}

/// `command --config config` into `dir/full`; then the same run cut after `lines` complete
/// episodes and a torn line (a crash), resumed: it must reach the uninterrupted result.
fn resumes_to_the_uninterrupted_run(
    command: &str,
    config: &std::path::Path,
    dir: &std::path::Path,
    lines: usize,
    keep_references: bool,
) {
    use crate::common::{copy_folder, one_error_line, run, success_json};
    let label = config.file_stem().unwrap().to_str().unwrap();
    let full = dir.join(format!("{label}-full"));
    let out = run(&[
        command,
        "--config",
        config.to_str().unwrap(),
        "--logdir",
        full.to_str().unwrap(),
        "--threads",
        "1",
        "--json",
    ]);
    success_json(&out);
    let cut = dir.join(format!("{label}-cut"));
    copy_folder(&full, &cut);
    std::fs::remove_file(cut.join("agent.safetensors")).unwrap();
    // The run kept every task's reference (the best heuristic's policy); a resume reads it
    // instead of scoring the heuristics again, or scores them again when it is missing (a
    // folder from before references were kept).
    let references: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(full.join("references.json")).unwrap())
            .unwrap();
    assert_eq!(references.len(), 2, "{references:?}");
    if !keep_references {
        std::fs::remove_file(cut.join("references.json")).unwrap();
    }
    let log = std::fs::read_to_string(full.join("episodes.jsonl")).unwrap();
    let all: Vec<&str> = log.lines().collect();
    assert!(all.len() > lines);
    let torn = &all[lines][..all[lines].len() / 2];
    std::fs::write(
        cut.join("episodes.jsonl"),
        format!("{}\n{torn}", all[..lines].join("\n")),
    )
    .unwrap();
    // Another thread count would change the replayed choices: refused, nothing changed.
    let out = run(&[command, "--resume", cut.to_str().unwrap(), "--threads", "2"]);
    assert!(one_error_line(&out).contains("--threads"));
    let out = run(&[command, "--resume", cut.to_str().unwrap(), "--json"]);
    let resumed = success_json(&out);
    assert_eq!(resumed["interrupted"], false, "{resumed}");
    assert_eq!(
        untimed(&cut),
        untimed(&full),
        "{command}: the episode logs differ"
    );
    assert!(
        std::fs::read(cut.join("agent.safetensors")).unwrap()
            == std::fs::read(full.join("agent.safetensors")).unwrap(),
        "{command}: the resumed agent differs from the uninterrupted one"
    );
    // A log whose task is not the config's is refused in one line.
    let other = dir.join(format!("{label}-other"));
    copy_folder(&full, &other);
    let log = std::fs::read_to_string(other.join("episodes.jsonl")).unwrap();
    std::fs::write(
        other.join("episodes.jsonl"),
        log.replacen("@0.2", "@0.3", 1),
    )
    .unwrap();
    let out = run(&[command, "--resume", other.to_str().unwrap()]);
    let line = one_error_line(&out);
    assert!(
        line.contains("episodes.jsonl") && line.contains("line 1"),
        "{line}"
    );
    // The kept references are what the resume uses: other ones make the replay propose
    // other policies, refused; a damaged file is refused in one line naming it.
    let moved = dir.join(format!("{label}-moved"));
    copy_folder(&full, &moved);
    let shifted: serde_json::Map<String, serde_json::Value> = references
        .iter()
        .map(|(task, keeps)| {
            let keeps: Vec<f64> = keeps
                .as_array()
                .unwrap()
                .iter()
                .enumerate()
                .map(|(u, k)| k.as_f64().unwrap() * if u % 2 == 0 { 0.5 } else { 1.0 })
                .collect();
            (task.clone(), serde_json::json!(keeps))
        })
        .collect();
    std::fs::write(
        moved.join("references.json"),
        serde_json::to_string(&shifted).unwrap(),
    )
    .unwrap();
    let line = one_error_line(&run(&[command, "--resume", moved.to_str().unwrap()]));
    assert!(line.contains("another task or policy"), "{line}");
    std::fs::write(moved.join("references.json"), "{\"t\": [").unwrap();
    let line = one_error_line(&run(&[command, "--resume", moved.to_str().unwrap()]));
    assert!(line.contains("references.json"), "{line}");
}

#[test]
fn train_agent_and_meta_train_resume_to_the_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    crate::common::setup(dir.path(), "gnn", 1);
    let env = dir.path().join("env.toml");
    let tasks = format!(
        "envs = [{}]\nbudgets = [0.2, 0.4]\neval_samples = 100\n[gnn]\nepisodes_per_update = 4\n",
        crate::common::literal(&env)
    );
    let train = dir.path().join("train.toml");
    std::fs::write(&train, format!("name = \"t\"\nepisodes = 12\n{tasks}")).unwrap();
    // Cut inside the second batch of four.
    resumes_to_the_uninterrupted_run("train-agent", &train, dir.path(), 6, false);
    // A finished run goes on to more episodes as a longer run would have; fewer than it
    // logged are refused before anything changes.
    let longer = dir.path().join("train-16.toml");
    std::fs::write(&longer, format!("name = \"t\"\nepisodes = 16\n{tasks}")).unwrap();
    resumes_to_the_uninterrupted_run("train-agent", &longer, dir.path(), 15, true);
    let extended = dir.path().join("train-agent-extended");
    crate::common::copy_folder(&dir.path().join("train-16-full"), &extended);
    let resume = |episodes: &str| {
        crate::common::run(&[
            "train-agent",
            "--resume",
            extended.to_str().unwrap(),
            "--episodes",
            episodes,
        ])
    };
    let config_before = std::fs::read(extended.join("config.toml")).unwrap();
    let line = crate::common::one_error_line(&resume("4"));
    assert!(line.contains("--episodes") && line.contains("16"), "{line}");
    assert_eq!(
        std::fs::read(extended.join("config.toml")).unwrap(),
        config_before
    );
    assert!(resume("20").status.success());
    let again = dir.path().join("train-20.toml");
    std::fs::write(&again, format!("name = \"t\"\nepisodes = 20\n{tasks}")).unwrap();
    let straight = dir.path().join("train-agent-20");
    let out = crate::common::run(&[
        "train-agent",
        "--config",
        again.to_str().unwrap(),
        "--logdir",
        straight.to_str().unwrap(),
        "--threads",
        "1",
    ]);
    assert!(out.status.success());
    assert_eq!(untimed(&extended), untimed(&straight));
    assert!(
        std::fs::read(extended.join("agent.safetensors")).unwrap()
            == std::fs::read(straight.join("agent.safetensors")).unwrap()
    );
    let meta = dir.path().join("meta.toml");
    std::fs::write(
        &meta,
        format!("name = \"m\"\n{tasks}[reptile]\niterations = 3\ninner_episodes = 4\n"),
    )
    .unwrap();
    // Cut inside the second iteration.
    resumes_to_the_uninterrupted_run("meta-train", &meta, dir.path(), 5, true);
}
