//! Meta-learning: MetaPruning's PruningNet (weights of the right shape for any encoding; the
//! full encoding trains to the dense model's accuracy; `search` with agent = "pruningnet"
//! end to end) and Reptile (`meta-train` on two tiny tasks adapts better than a random
//! initialisation on a third).

use crate::common::{read_events, run, search_in, setup, success_json};
use autoprune::config::PruningNetConfig;
use autoprune::config::RewardKind;
use autoprune::data::{Dataset, SplitName};
use autoprune::eval::pruningnet::PruningNet;
use autoprune::eval::{EvalConfig, Evaluator};
use autoprune::model::{train, zoo, GraphNet, Optimizer, Schedule, TrainConfig};
use autoprune::prune::{Budget, CostModel, Criterion, Importance, Masker};
use autoprune::prune::{Granularity, Metric};
use autoprune::runlog::Progress;
use rand::{Rng, SeedableRng};
use tch::Device;

/// A small VGG with BatchNorm (two coupled-free conv groups and a classifier).
fn vgg(data: &Dataset) -> GraphNet {
    let cfg = [
        zoo::VggItem::Conv(8),
        zoo::VggItem::Conv(12),
        zoo::VggItem::Pool(zoo::PoolMarker::M),
        zoo::VggItem::Conv(16),
    ];
    GraphNet::new(
        zoo::vgg(&data.shape, data.classes, &cfg).unwrap(),
        Device::Cpu,
    )
}

fn eval_config(keep: f64) -> EvalConfig {
    EvalConfig {
        granularity: Granularity::Channel,
        criterion: Criterion::L1,
        budget: Budget {
            metric: Metric::Flops,
            keep,
            bounds: [0.05, 1.0],
        },
        reward: RewardKind::Accuracy,
        eval_split: SplitName::Val,
        finetune_steps: 0,
        finetune_lr: 0.01,
        finetune_adam: false,
        recalibration_batches: 4,
        batch_size: 64,
        eval_batch_size: 400,
        eval_samples: None,
        seed: 0,
        latency: None,
        calibration: 16,
        wanda_rows: true,
        calibration_from_dense: false,
        name: "test".into(),
        weights: "test.safetensors".into(),
        slim_scoring: true,
    }
}

#[test]
fn a_pruningnet_generates_every_tensor_in_shape_for_any_encoding() {
    let data = crate::common::synthetic_data();
    tch::manual_seed(0);
    let net = vgg(&data);
    let costs = CostModel::new(net.graph(), Granularity::Channel);
    let importance = Importance::compute(&net, Criterion::L1, &data.train, 0).unwrap();
    let masker = Masker::new(&costs, &importance);
    let mut pn = PruningNet::new(&net, &PruningNetConfig::default()).unwrap();
    let shapes: std::collections::HashMap<String, Vec<i64>> = net
        .var_store()
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(n, t)| (n, t.size()))
        .collect();
    let units = costs.units().len();
    assert!(units >= 3, "three conv groups");
    // A few training steps, so the encoding reaches the weights.
    let (images, labels) = data.train.batches(32, None).next().unwrap();
    let half = masker.masks(&vec![0.5; units]);
    for _ in 0..5 {
        assert!(pn.train_step(&half, &images, &labels).unwrap().is_finite());
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut encodings: Vec<Vec<f64>> = vec![vec![0.05; units], vec![1.0; units]];
    encodings.extend((0..20).map(|_| (0..units).map(|_| rng.random_range(0.05..=1.0)).collect()));
    let mut previous: Option<Vec<(String, tch::Tensor)>> = None;
    for keeps in &encodings {
        let generated = pn.generate(&masker.masks(keeps));
        assert_eq!(
            generated.len(),
            shapes.len(),
            "every trainable tensor, once"
        );
        for (name, tensor) in &generated {
            assert_eq!(
                Some(&tensor.size()),
                shapes.get(name),
                "{name} at {keeps:?}"
            );
            assert!(
                bool::try_from(tensor.isfinite().all()).unwrap(),
                "{name} is finite"
            );
        }
        // Generated weights depend on the encoding.
        if let Some(previous) = &previous {
            let name = pn.generated()[1];
            let a = &previous.iter().find(|(n, _)| n == name).unwrap().1;
            let b = &generated.iter().find(|(n, _)| n == name).unwrap().1;
            assert!(f64::try_from((a - b).abs().max()).unwrap() > 0.0, "{name}");
        }
        previous = Some(generated);
    }
    // Scored through the evaluator: the policy's FLOPs meet the budget, accuracy is real.
    let mut evaluator = Evaluator::new(&net, &data, eval_config(0.5)).unwrap();
    evaluator.set_source(Some(Box::new(pn)));
    let wall = evaluator.wall(std::path::Path::new("test")).unwrap();
    let keeps = wall.fit(&vec![1.0; units]);
    let score = evaluator.evaluate(&keeps).unwrap();
    assert!(score.flops_kept <= 0.5 + 1e-9);
    assert!((0.0..=1.0).contains(&score.accuracy));
}

#[test]
fn the_full_encoding_trains_to_the_dense_models_accuracy() {
    let data = crate::common::synthetic_data();
    let train_config = TrainConfig {
        epochs: 2,
        batch_size: 64,
        optimizer: Optimizer::Adam,
        lr: 0.01,
        momentum: 0.0,
        weight_decay: 0.0,
        schedule: Schedule::Constant,
    };
    // The dense model, trained from scratch.
    tch::manual_seed(1);
    let mut dense = vgg(&data);
    train(&mut dense, &data, &train_config, 0, &Progress::quiet()).unwrap();
    let dense_accuracy = dense.evaluate(&data.val, 400).unwrap().accuracy;
    assert!(
        dense_accuracy > 0.9,
        "the dense model learns: {dense_accuracy}"
    );
    // A PruningNet over a fresh model of the same graph, trained for the same steps with the
    // full encoding only.
    tch::manual_seed(1);
    let fresh = vgg(&data);
    let config = PruningNetConfig {
        lr: 0.01,
        ..Default::default()
    };
    let mut pn = PruningNet::new(&fresh, &config).unwrap();
    let mut evaluator = Evaluator::new(&fresh, &data, eval_config(1.0)).unwrap();
    let units = evaluator.costs().units().len();
    let full = vec![1.0; units];
    let before = evaluator.evaluate(&full).unwrap().accuracy;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    for _ in 0..train_config.epochs {
        for (images, labels) in data.train.batches(64, Some(&mut rng)) {
            pn.train_step(&evaluator.masker().masks(&full), &images, &labels)
                .unwrap();
        }
    }
    evaluator.set_source(Some(Box::new(pn)));
    let after = evaluator.evaluate(&full).unwrap().accuracy;
    assert!(
        after >= dense_accuracy - 0.02,
        "PruningNet at the full encoding {after} against the dense model {dense_accuracy} (untrained {before})"
    );
    assert!(after > before + 0.3, "it learned: {before} -> {after}");
}

/// The synthetic env with channel pruning at half the FLOPs, and a pruningnet config.
fn channel_setup(dir: &std::path::Path, episodes: usize) -> std::path::PathBuf {
    let config = setup(dir, "pruningnet", episodes);
    let env = dir.join("env.toml");
    let text = crate::common::edited(
        &env,
        &[
            ("prune.granularity", "\"channel\""),
            ("prune.criterion", "\"l1\""),
            ("prune.target", "{ metric = \"flops\", keep = 0.5 }"),
        ],
    );
    std::fs::write(&env, text).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[pruningnet]\nsteps = 60\nlr = 0.003\n\n[evolution]\npopulation = 6\ntop_k = 2\nwindow = 0.9\n"),
    )
    .unwrap();
    config
}

#[test]
fn search_with_a_pruningnet_trains_it_then_evolves_policies_scored_with_its_weights() {
    let dir = tempfile::tempdir().unwrap();
    let config = channel_setup(dir.path(), 12);
    let logdir = dir.path().join("run");
    let result = success_json(&search_in(&config, &logdir, &["--json"]));
    assert_eq!(result["agent"], "pruningnet");
    assert!(result["flops_kept"].as_f64().unwrap() <= 0.5 + 1e-9);
    let pruningnet = logdir.join("pruningnet.safetensors");
    assert!(pruningnet.is_file());
    let events = read_events(&logdir);
    let losses = events["scalars"]["pruningnet/loss"].as_array().unwrap();
    assert_eq!(losses.len(), 60, "one loss per training step");
    assert!(events["scalars"]["reward"].as_array().unwrap().len() == 12);
    // Every candidate lies in the FLOPs window [0.9, 1.0] × 0.5.
    for record in crate::common::records(&logdir) {
        let flops = record["flops_kept"].as_f64().unwrap();
        assert!((0.45 - 1e-9..=0.5 + 1e-9).contains(&flops), "{flops}");
    }

    // The winner, applied from the PruningNet's weights, scores what the search recorded
    // (same weights, same recalibration batches).
    let applied = success_json(&run(&[
        "apply",
        "--env",
        dir.path().join("env.toml").to_str().unwrap(),
        "--policy",
        result["policy"].as_str().unwrap(),
        "--pruningnet",
        pruningnet.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(applied["accuracy"], result["accuracy"]);
    assert_eq!(applied["test_accuracy"], result["test_accuracy"]);

    // Resume after the PruningNet was trained: it is loaded, not trained again, and the run
    // continues to the same episodes.
    let more = success_json(&crate::common::resume_to(&logdir, 18, &["--json"]));
    assert_eq!(more["episodes"], 18);
    let events = read_events(&logdir);
    assert_eq!(
        events["scalars"]["pruningnet/loss"]
            .as_array()
            .unwrap()
            .len(),
        60
    );

    // Unstructured pruning has no channel counts to generate weights for.
    let env = dir.path().join("env.toml");
    let channel_env = std::fs::read_to_string(&env).unwrap();
    let text = crate::common::edited(&env, &[("prune.granularity", "\"unstructured\"")]);
    std::fs::write(&env, &text).unwrap();
    let out = search_in(&config, &dir.path().join("run2"), &[]);
    let line = crate::common::one_error_line(&out);
    assert!(line.contains("prune.granularity"), "{line}");
    // Nor can `apply` start an unstructured policy from a PruningNet's weights.
    let env = dir.path().join("env.toml");
    let unstructured = dir.path().join("uniform.json");
    success_json(&run(&[
        "baseline",
        "--env",
        env.to_str().unwrap(),
        "--method",
        "uniform",
        "--out",
        unstructured.to_str().unwrap(),
        "--json",
    ]));
    let apply_pruningnet = |policy: &std::path::Path| {
        run(&[
            "apply",
            "--env",
            env.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--pruningnet",
            pruningnet.to_str().unwrap(),
        ])
    };
    let line = crate::common::one_error_line(&apply_pruningnet(&unstructured));
    assert!(line.contains("prune.granularity"), "{line}");
    // Generated weights have no BatchNorm statistics: recalibration cannot be switched off.
    std::fs::write(&env, &channel_env).unwrap();
    let text = crate::common::edited(&env, &[("reward.recalibration_batches", "0")]);
    std::fs::write(&env, &text).unwrap();
    let channel_policy = std::path::PathBuf::from(result["policy"].as_str().unwrap());
    let line = crate::common::one_error_line(&apply_pruningnet(&channel_policy));
    assert!(line.contains("reward.recalibration_batches"), "{line}");
    let out = search_in(&config, &dir.path().join("run3"), &[]);
    let line = crate::common::one_error_line(&out);
    assert!(line.contains("reward.recalibration_batches"), "{line}");
}

#[test]
fn ctrl_c_while_the_pruningnet_trains_exits_130_with_the_resume_command() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let config = channel_setup(dir.path(), 12);
    let text = crate::common::edited(&config, &[("pruningnet.steps", "1000000")]);
    std::fs::write(&config, text).unwrap();
    let logdir = dir.path().join("run");
    let mut child = crate::common::search_command(&config, &logdir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The search announces itself once Ctrl-C is handled; the PruningNet trains next.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("search:") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no search line");
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let errors: Vec<&str> = rest.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{rest}");
    assert!(
        errors[0].contains("interrupted: while training the PruningNet")
            && errors[0].contains("autoprune search --resume"),
        "{rest}"
    );
    assert!(!logdir.join("pruningnet.safetensors").exists());
    assert_eq!(crate::common::records_len(&logdir), 0);
}

#[test]
fn meta_training_on_two_tiny_tasks_adapts_better_than_random_init_on_a_third() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), "gnn", 1);
    // Three MLPs of other widths and depths on the synthetic set: two to meta-train on, one
    // held out. Profiles relative to uniform allocation: what meta-training adds is then
    // all the agent's own (relative to the best heuristic, a fresh agent starts there too).
    let variant = |name: &str, hidden: &str| {
        let checkpoint = dir.path().join(format!("{name}.safetensors"));
        let text = crate::common::edited(
            &dir.path().join("env.toml"),
            &[
                ("name", &format!("{name:?}")),
                ("model.hidden", hidden),
                ("model.checkpoint", &crate::common::literal(&checkpoint)),
            ],
        );
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let a = variant("mlp-a", "[48, 24]");
    let b = variant("mlp-b", "[32]");
    let held_out = variant("mlp-c", "[40, 20, 10]");
    let text = crate::common::edited(&held_out, &[("prune.target.keep", "0.1")]);
    std::fs::write(&held_out, text).unwrap();
    let config = dir.path().join("meta.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"meta-test\"\nenvs = [{:?}, {:?}]\nbudgets = [0.1, 0.2]\nseed = 0\n\n[reptile]\niterations = 40\ninner_episodes = 8\n\n[gnn]\nlr = 3e-3\nepisodes_per_update = 4\nreference = \"uniform\"\n",
            a.to_str().unwrap(),
            b.to_str().unwrap()
        ),
    )
    .unwrap();
    let agent = dir.path().join("meta.safetensors");
    let trained = success_json(&run(&[
        "meta-train",
        "--config",
        config.to_str().unwrap(),
        "--logdir",
        dir.path().join("meta-run").to_str().unwrap(),
        "--out",
        agent.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(trained["iterations"], 40);
    assert_eq!(trained["episodes"], 320);
    assert_eq!(trained["tasks"], 4);
    assert!(agent.is_file());
    let events = read_events(&dir.path().join("meta-run"));
    assert_eq!(
        events["scalars"]["meta/step_size"]
            .as_array()
            .unwrap()
            .len(),
        40
    );

    // A search can start from the meta-trained agent (agent = "meta").
    let search_config = dir.path().join("meta-search.toml");
    let write_search = |init: &str| {
        std::fs::write(
            &search_config,
            format!(
                "name = \"meta\"\nenv = {:?}\nagent = \"meta\"\nepisodes = 8\n\n[meta]\ninit = {init:?}\n",
                held_out.to_str().unwrap()
            ),
        )
        .unwrap();
    };
    write_search(agent.to_str().unwrap());
    let searched = success_json(&search_in(
        &search_config,
        &dir.path().join("meta-search"),
        &["--json"],
    ));
    assert_eq!(searched["agent"], "meta");
    assert_eq!(searched["episodes"], 8);
    assert!(searched["params_kept"].as_f64().unwrap() <= 0.1 + 1e-9);
    write_search("no/such/agent.safetensors");
    let line = crate::common::one_error_line(&search_in(
        &search_config,
        &dir.path().join("meta-search-2"),
        &[],
    ));
    assert!(
        line.contains("meta.init") && line.contains("meta-train"),
        "{line}"
    );

    let curve = success_json(&run(&[
        "adapt-curve",
        "--init",
        &format!("meta={}", agent.to_str().unwrap()),
        "--init",
        "random=random",
        "--env",
        held_out.to_str().unwrap(),
        "--gnn-config",
        config.to_str().unwrap(),
        "--points",
        "0,10",
        "--seeds",
        "0,1,2",
        "--json",
    ]));
    // Every start adapts with the meta-training config's inner-loop PPO.
    assert_eq!(curve["gnn"]["episodes_per_update"], 4);
    assert_eq!(curve["gnn"]["lr"], 3e-3);
    let mean = |name: &str, i: usize| curve["summary"][name]["mean"][i].as_f64().unwrap();
    assert!(
        mean("meta", 1) > mean("random", 1),
        "after 10 episodes: meta {} against random {}",
        mean("meta", 1),
        mean("random", 1)
    );
    // Best-so-far never falls.
    for run in curve["runs"].as_array().unwrap() {
        let r = run["rewards"].as_array().unwrap();
        assert!(r[1].as_f64().unwrap() >= r[0].as_f64().unwrap());
    }

    // Bad adaptation input: one line each, before any work.
    let bad_gnn = dir.path().join("bad-gnn.toml");
    std::fs::write(&bad_gnn, "name = \"x\"\n[gnn]\nepisodes_per_update = 0\n").unwrap();
    let held = held_out.to_str().unwrap();
    let cases: [(Vec<&str>, &str); 3] = [
        (
            vec!["--init", "a=random", "--init", "a=random", "--env", held],
            "given twice",
        ),
        (
            vec!["--init", "a=random", "--env", held, "--eval-samples", "0"],
            "--eval-samples",
        ),
        (
            vec![
                "--init",
                "a=random",
                "--env",
                held,
                "--gnn-config",
                bad_gnn.to_str().unwrap(),
            ],
            "key `gnn.episodes_per_update`",
        ),
    ];
    for (args, expected) in cases {
        let line = crate::common::one_error_line(&run(&[&["adapt-curve"], &args[..]].concat()));
        assert!(line.contains(expected), "{args:?}: {line}");
    }
}

#[test]
fn every_shipped_config_loads_as_a_search_agent_training_or_meta_training_config() {
    use autoprune::config::MetaTrainConfig;
    use autoprune::config::SearchConfig;
    use autoprune::config::TrainAgentConfig;
    let dir = crate::common::repo().join("configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let search = SearchConfig::load(&path);
        let train = TrainAgentConfig::load(&path);
        let meta = MetaTrainConfig::load(&path);
        assert!(
            search.is_ok() || train.is_ok() || meta.is_ok(),
            "{}: {:?} / {:?} / {:?}",
            path.display(),
            search.err(),
            train.err(),
            meta.err()
        );
        seen += 1;
    }
    assert!(seen >= 12, "{seen} configs");
}

#[test]
fn bad_meta_training_configs_get_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("envs = []\nbudgets = [0.5]\n", "envs"),
        ("envs = [\"envs/synthetic-mlp.toml\"]\nbudgets = [1.5]\n", "budgets"),
        (
            "envs = [\"envs/synthetic-mlp.toml\"]\nbudgets = [0.5]\n[reptile]\ninner_episodes = 0\n",
            "reptile",
        ),
        (
            "envs = [\"envs/synthetic-mlp.toml\"]\nbudgets = [0.5]\n[reptile]\nmeta_lr = 2.0\n",
            "reptile",
        ),
        (
            "envs = [\"envs/synthetic-mlp.toml\"]\nbudgets = [0.5]\n[reptile]\ninner_episodes = 6\n",
            "reptile.inner_episodes",
        ),
        (
            "envs = [\"envs/synthetic-mlp.toml\"]\nbudgets = [0.5]\nbudget = 0.5\n",
            "budget",
        ),
        (
            "envs = [\"no/such/env.toml\"]\nbudgets = [0.5]\n",
            "no/such/env.toml",
        ),
    ];
    for (i, (body, key)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&config, format!("name = \"bad\"\n{body}")).unwrap();
        let out = run(&[
            "meta-train",
            "--config",
            config.to_str().unwrap(),
            "--logdir",
            dir.path().join(format!("run{i}")).to_str().unwrap(),
        ]);
        let line = crate::common::one_error_line(&out);
        assert!(line.contains(key), "case {i}: {line}");
        assert!(
            !dir.path().join(format!("run{i}")).exists(),
            "case {i}: nothing written on bad input"
        );
    }
}
