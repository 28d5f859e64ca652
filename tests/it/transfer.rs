//! `autoprune transfer`: a graph agent trained by a search on one model prunes another model
//! it never saw, zero-shot and after a few adaptation episodes.

use crate::common::{
    bin, edited, literal, one_error_line, records, run, search_in, setup, success_json,
};
use std::path::Path;

/// The synthetic env with another MLP (other widths): a model the agent never saw.
fn other_env(dir: &Path) -> std::path::PathBuf {
    let text = edited(
        &dir.join("env.toml"),
        &[
            ("name", "\"other-mlp\""),
            ("model.hidden", "[24, 12, 8]"),
            ("model.checkpoint", &literal(&dir.join("other.safetensors"))),
        ],
    );
    let path = dir.join("other.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_trained_graph_agent_prunes_an_unseen_model() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "gnn", 40);
    let logdir = dir.path().join("trained");
    success_json(&search_in(&config, &logdir, &["--json"]));
    let agent = logdir.join("agent.safetensors");
    assert!(agent.is_file());
    let other = other_env(dir.path());

    // Zero-shot: one forward pass, one evaluation.
    let policy = dir.path().join("zero.json");
    let zero = success_json(&run(&[
        "transfer",
        "--agent",
        agent.to_str().unwrap(),
        "--env",
        other.to_str().unwrap(),
        "--out",
        policy.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(zero["adapt_episodes"], 0);
    assert_eq!(
        zero["layers"].as_array().unwrap().len(),
        4,
        "4 weight layers"
    );
    assert!(zero["params_kept"].as_f64().unwrap() <= 0.2 + 1e-9);
    assert!(zero["test_accuracy"].as_f64().unwrap() > 0.0);
    // The agent's policy or the best heuristic, whichever is better on validation.
    let reward = zero["reward"].as_f64().unwrap();
    let reference = &zero["reference"];
    assert!(reward >= zero["zero_shot_reward"].as_f64().unwrap());
    assert!(reward >= reference["reward"].as_f64().unwrap(), "{zero}");
    // The agent's own policy is reported beside it, on test too.
    assert_eq!(zero["zero_shot"]["reward"], zero["zero_shot_reward"]);
    assert!(zero["zero_shot"]["test_accuracy"].as_f64().unwrap() > 0.0);
    let from = zero["best_from"].as_str().unwrap();
    if reward == zero["zero_shot_reward"].as_f64().unwrap() {
        assert_eq!(from, "gnn-transfer", "{zero}");
        assert_eq!(zero["test_accuracy"], zero["zero_shot"]["test_accuracy"]);
    } else {
        assert_eq!(from, reference["method"].as_str().unwrap(), "{zero}");
        assert_eq!(reward, reference["reward"].as_f64().unwrap());
    }
    // The policy file applies to the unseen model and reproduces the score.
    let applied = success_json(&run(&[
        "apply",
        "--env",
        other.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(applied["accuracy"], zero["accuracy"]);

    // Adapted: a few episodes of PPO from the trained weights; never worse than zero-shot
    // on validation (the zero-shot policy stays a candidate).
    // Its PPO settings come from another config's `[gnn]` table.
    let adapt_dir = dir.path().join("adapt");
    let settings = dir.path().join("adapt.toml");
    std::fs::write(
        &settings,
        "name = \"x\"\n[gnn]\nlr = 3e-3\nepisodes_per_update = 4\n",
    )
    .unwrap();
    let adapted = success_json(&run(&[
        "transfer",
        "--agent",
        agent.to_str().unwrap(),
        "--env",
        other.to_str().unwrap(),
        "--adapt-episodes",
        "12",
        "--gnn-config",
        settings.to_str().unwrap(),
        "--logdir",
        adapt_dir.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(records(&adapt_dir).len(), 12);
    let recorded = std::fs::read_to_string(adapt_dir.join("config.toml")).unwrap();
    assert!(
        recorded.contains("episodes_per_update = 4") && recorded.contains("lr = 0.003"),
        "{recorded}"
    );
    assert!(adapted["reward"].as_f64().unwrap() >= zero["zero_shot_reward"].as_f64().unwrap());
    assert!(adapt_dir.join("policy.json").is_file());

    // A model checkpoint is not an agent; the zero-shot run folder the transfer created for
    // its policy is not left behind.
    let failed = dir.path().join("failed");
    let out = bin()
        .args([
            "transfer",
            "--agent",
            dir.path().join("mlp.safetensors").to_str().unwrap(),
            "--env",
            other.to_str().unwrap(),
            "--logdir",
            failed.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let line = one_error_line(&out);
    assert!(line.contains("not a graph agent's checkpoint"), "{line}");
    assert!(!failed.exists(), "an empty run folder was left behind");
}

#[test]
fn one_agent_trains_on_several_models_and_budgets() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), "gnn", 10);
    let other = other_env(dir.path());
    let config = dir.path().join("train.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"two-mlps\"\nenvs = [{:?}, {:?}]\nbudgets = [0.2, 0.4]\ngranularities = [\"unstructured\", \"channel\"]\nepisodes = 24\nseed = 1\n\n[gnn]\nhidden = 32\nlayers = 2\n",
            dir.path().join("env.toml"),
            other
        ),
    )
    .unwrap();
    let logdir = dir.path().join("trained");
    let result = success_json(&run(&[
        "train-agent",
        "--config",
        config.to_str().unwrap(),
        "--logdir",
        logdir.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(result["episodes"], 24);
    // Two models, two budgets, two granularities.
    assert_eq!(result["tasks"], 8);
    let best = result["best_reward"].as_object().unwrap();
    assert_eq!(best.len(), 8);
    assert!(best.contains_key("other-mlp/channel@0.4"), "{best:?}");
    // Episodes cycle through the tasks, three each.
    let lines: Vec<serde_json::Value> = records(&logdir);
    assert_eq!(lines.len(), 24);
    for task in best.keys() {
        assert_eq!(
            lines.iter().filter(|l| l["task"] == task.as_str()).count(),
            3
        );
    }
    // The agent (width 32, depth 2, read from the file) prunes a third model zero-shot.
    let third = dir.path().join("third.toml");
    std::fs::write(
        &third,
        edited(
            &other,
            &[
                ("name", "\"third-mlp\""),
                ("model.hidden", "[40]"),
                (
                    "model.checkpoint",
                    &literal(&dir.path().join("third.safetensors")),
                ),
            ],
        ),
    )
    .unwrap();
    let zero = success_json(&run(&[
        "transfer",
        "--agent",
        logdir.join("agent.safetensors").to_str().unwrap(),
        "--env",
        third.to_str().unwrap(),
        "--out",
        dir.path().join("third.json").to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(zero["layers"].as_array().unwrap().len(), 2);
    assert!(zero["params_kept"].as_f64().unwrap() <= 0.2 + 1e-9);
    // It was trained relative to the best heuristic, so it acts relative to the third
    // model's: scored first, and named.
    let reference = &zero["reference"];
    assert!(
        ["uniform", "global", "lamp", "erk"].contains(&reference["method"].as_str().unwrap()),
        "{zero}"
    );
    assert!(reference["accuracy"].as_f64().unwrap() > 0.0);
}

#[test]
fn the_shipped_agent_beats_uniform_zero_shot_on_a_model_it_never_saw() {
    // policies/gnn-fmnist.safetensors: configs/gnn-train.toml, seed 0, trained on Fashion-MNIST
    // VGG and ResNet-20; LeNet-5 on MNIST is new to it.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("policy.json");
    let transfer = success_json(&run(&[
        "transfer",
        "--agent",
        "policies/gnn-fmnist.safetensors",
        "--env",
        "envs/mnist-lenet5.toml",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]));
    let uniform = success_json(&run(&[
        "baseline",
        "--env",
        "envs/mnist-lenet5.toml",
        "--method",
        "uniform",
        "--json",
    ]));
    // The agent's own policy (the transfer returns the best heuristic's when that is better
    // on validation).
    let (zero_shot, uniform) = (
        transfer["zero_shot"]["test_accuracy"].as_f64().unwrap(),
        uniform["test_accuracy"].as_f64().unwrap(),
    );
    assert!(transfer["zero_shot"]["params_kept"].as_f64().unwrap() <= 0.05 + 1e-9);
    assert!(transfer["params_kept"].as_f64().unwrap() <= 0.05 + 1e-9);
    assert!(
        zero_shot > uniform + 0.1,
        "zero-shot {zero_shot} against uniform {uniform}"
    );
}
