//! The `autoprune` binary end to end: graph export, pretrain and evaluate on the synthetic
//! env, and bad input (each one clear line on stderr and a non-zero exit).

use crate::common::{edited, literal, one_error_line, repo};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn autoprune(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autoprune"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the binary runs")
}

fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(
        text.trim().lines().count(),
        1,
        "exactly one JSON object on stdout: {text}"
    );
    serde_json::from_str(&text).unwrap()
}

#[test]
fn graph_json_lists_nodes_edges_costs_and_groups() {
    let out = autoprune(
        &["graph", "--env", "envs/fmnist-resnet20.toml", "--json"],
        &repo(),
    );
    let json = stdout_json(&out);
    assert_eq!(json["env"], "fmnist-resnet20");
    let nodes = json["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 75);
    let params: u64 = nodes.iter().map(|n| n["params"].as_u64().unwrap()).sum();
    let flops: u64 = nodes.iter().map(|n| n["flops"].as_u64().unwrap()).sum();
    assert_eq!(json["total_params"].as_u64(), Some(params));
    assert_eq!(json["total_flops"].as_u64(), Some(flops));
    assert!(
        json["edges"].as_array().unwrap().len() > nodes.len(),
        "residual edges"
    );
    assert_eq!(json["groups"].as_array().unwrap().len(), 12);
    assert_eq!(json["input_shape"], serde_json::json!([1, 28, 28]));

    let dir = tempfile::tempdir().unwrap();
    let dot = dir.path().join("g.dot");
    let out = autoprune(
        &[
            "graph",
            "--env",
            "envs/mnist-lenet5.toml",
            "--dot",
            dot.to_str().unwrap(),
        ],
        &repo(),
    );
    assert!(out.status.success());
    let text = std::fs::read_to_string(dot).unwrap();
    assert!(text.contains("conv1") && text.contains("->"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 prunable groups"));
}

/// The synthetic env with its checkpoint redirected into `dir`.
fn synthetic_env(dir: &Path) -> PathBuf {
    let ckpt = dir.join("ckpt/mlp.safetensors");
    let text = edited(
        &repo().join("envs/synthetic-mlp.toml"),
        &[("model.checkpoint", &literal(&ckpt))],
    );
    let path = dir.join("env.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn pretrain_then_evaluate_the_synthetic_env() {
    let dir = tempfile::tempdir().unwrap();
    let env = synthetic_env(dir.path());
    let out = autoprune(
        &[
            "pretrain",
            "--env",
            env.to_str().unwrap(),
            "--device",
            "cpu",
            "--seed",
            "1",
            "--json",
        ],
        dir.path(),
    );
    let json = stdout_json(&out);
    assert!(json["test_accuracy"].as_f64().unwrap() > 0.9, "{json}");
    assert_eq!(json["epochs"], 3);
    assert_eq!(json["history"].as_array().unwrap().len(), 3);
    assert_eq!(json["device"], "cpu");
    assert!(dir.path().join("ckpt/mlp.safetensors").is_file());

    let out = autoprune(
        &["evaluate", "--env", env.to_str().unwrap(), "--json"],
        dir.path(),
    );
    let eval = stdout_json(&out);
    assert_eq!(
        eval["test_accuracy"], json["test_accuracy"],
        "the checkpoint holds the trained model"
    );
    assert_eq!(eval["split"], "val");

    // The same seed trains the same model.
    let again = autoprune(
        &[
            "pretrain",
            "--env",
            env.to_str().unwrap(),
            "--device",
            "cpu",
            "--seed",
            "1",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(stdout_json(&again)["test_loss"], json["test_loss"]);
}

#[test]
fn unknown_key_is_one_line_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let env = synthetic_env(dir.path());
    let text = edited(&env, &[("data.valsize", "3")]);
    std::fs::write(&env, text).unwrap();
    let line = one_error_line(&autoprune(
        &["graph", "--env", env.to_str().unwrap()],
        dir.path(),
    ));
    assert!(
        line.contains("env.toml:")
            && line.contains("key `data.valsize`")
            && line.contains("unknown field `valsize`"),
        "{line}"
    );
}

#[test]
fn wrong_type_is_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let env = synthetic_env(dir.path());
    let text = edited(&env, &[("train.epochs", "\"three\"")]);
    std::fs::write(&env, text).unwrap();
    let line = one_error_line(&autoprune(
        &["pretrain", "--env", env.to_str().unwrap()],
        dir.path(),
    ));
    assert!(
        line.contains("env.toml:")
            && line.contains("invalid type")
            && line.contains("key `train.epochs`"),
        "{line}"
    );
}

#[test]
fn out_of_range_value_names_the_key_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let env = synthetic_env(dir.path());
    let text = edited(&env, &[("prune.target.keep", "1.5")]);
    std::fs::write(&env, text).unwrap();
    let line = one_error_line(&autoprune(
        &["graph", "--env", env.to_str().unwrap()],
        dir.path(),
    ));
    assert!(
        line.contains("prune.target.keep") && line.contains("(0, 1]"),
        "{line}"
    );
}

#[test]
fn missing_data_folder_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("env.toml");
    let text = edited(
        &repo().join("envs/mnist-lenet5.toml"),
        &[("data.dir", "\"no/such/folder\"")],
    );
    std::fs::write(&env, text).unwrap();
    let line = one_error_line(&autoprune(
        &["pretrain", "--env", env.to_str().unwrap(), "--epochs", "1"],
        dir.path(),
    ));
    assert!(
        line.contains("no/such/folder/train-images-idx3-ubyte") && line.contains("make setup"),
        "{line}"
    );
}

#[test]
fn checkpoint_of_another_shape_is_one_line_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let env = synthetic_env(dir.path());
    let out = autoprune(
        &[
            "pretrain",
            "--env",
            env.to_str().unwrap(),
            "--epochs",
            "1",
            "--json",
        ],
        dir.path(),
    );
    assert!(out.status.success());
    let ckpt = dir.path().join("ckpt/mlp.safetensors");
    let before = std::fs::read(&ckpt).unwrap();
    let text = edited(&env, &[("model.hidden", "[32, 24]")]);
    std::fs::write(&env, text).unwrap();
    let line = one_error_line(&autoprune(
        &["evaluate", "--env", env.to_str().unwrap()],
        dir.path(),
    ));
    assert!(
        line.contains("mlp.safetensors")
            && line.contains("`fc2.weight`")
            && line.contains("another model"),
        "{line}"
    );
    assert_eq!(
        std::fs::read(&ckpt).unwrap(),
        before,
        "nothing already written is lost"
    );
}

#[test]
fn missing_env_file_and_bad_device_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let line = one_error_line(&autoprune(&["graph", "--env", "nope.toml"], dir.path()));
    assert!(
        line.contains("nope.toml") && line.contains("No such file"),
        "{line}"
    );
    let env = synthetic_env(dir.path());
    let line = one_error_line(&autoprune(
        &[
            "evaluate",
            "--env",
            env.to_str().unwrap(),
            "--device",
            "tpu",
        ],
        dir.path(),
    ));
    assert!(line.contains("device `tpu`"), "{line}");
}

#[test]
fn baseline_writes_a_policy_that_apply_reproduces() {
    let dir = tempfile::tempdir().unwrap();
    let env = synthetic_env(dir.path());
    let env_arg = env.to_str().unwrap();
    let out = autoprune(
        &[
            "baseline",
            "--env",
            env_arg,
            "--method",
            "lamp",
            "--keep",
            "0.3",
            "--out",
            "p/lamp.json",
            "--json",
        ],
        dir.path(),
    );
    let score = stdout_json(&out);
    for field in [
        "accuracy",
        "loss",
        "params_kept",
        "flops_kept",
        "params",
        "flops",
        "reward",
        "layers",
        "split",
        "seconds",
        "test_accuracy",
    ] {
        assert!(!score[field].is_null(), "missing {field}: {score}");
    }
    assert!(score["params_kept"].as_f64().unwrap() <= 0.3 + 1e-9);
    assert_eq!(score["split"], "val");
    assert_eq!(
        score["layers"].as_array().unwrap().len(),
        3,
        "fc1, fc2, classifier"
    );
    let policy: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("p/lamp.json")).unwrap())
            .unwrap();
    for field in [
        "schema",
        "env",
        "model",
        "granularity",
        "target",
        "layers",
        "metrics",
        "agent",
        "episodes",
        "seed",
        "created",
    ] {
        assert!(!policy[field].is_null(), "policy lacks {field}");
    }
    assert_eq!(policy["agent"], "lamp");
    assert_eq!(policy["target"]["keep"], 0.3);

    let out = autoprune(
        &[
            "apply",
            "--env",
            env_arg,
            "--policy",
            "p/lamp.json",
            "--json",
        ],
        dir.path(),
    );
    let applied = stdout_json(&out);
    assert_eq!(applied["accuracy"], score["accuracy"]);
    assert_eq!(applied["params"], score["params"]);

    // Dense: keep 1 reproduces the dense model's accuracy exactly.
    let dense = stdout_json(&autoprune(
        &["evaluate", "--env", env_arg, "--json"],
        dir.path(),
    ));
    let full = stdout_json(&autoprune(
        &[
            "baseline", "--env", env_arg, "--method", "uniform", "--keep", "1", "--json",
        ],
        dir.path(),
    ));
    assert_eq!(full["accuracy"], dense["accuracy"]);
    assert_eq!(full["test_accuracy"], dense["test_accuracy"]);
}

#[test]
fn a_policy_for_another_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let env = synthetic_env(dir.path());
    let env_arg = env.to_str().unwrap();
    assert!(autoprune(
        &["baseline", "--env", env_arg, "--method", "uniform", "--out", "p.json"],
        dir.path()
    )
    .status
    .success());
    let other = dir.path().join("other.toml");
    let text = edited(
        &env,
        &[
            ("model.hidden", "[32, 12]"),
            (
                "model.checkpoint",
                &literal(&dir.path().join("ckpt/other.safetensors")),
            ),
        ],
    );
    std::fs::write(&other, text).unwrap();
    let line = one_error_line(&autoprune(
        &[
            "apply",
            "--env",
            other.to_str().unwrap(),
            "--policy",
            "p.json",
        ],
        dir.path(),
    ));
    assert!(
        line.contains("p.json") && line.contains("key `model`") && line.contains("made for model"),
        "{line}"
    );
    assert!(
        !dir.path().join("other.safetensors").exists(),
        "refused before any work"
    );

    let text = std::fs::read_to_string(dir.path().join("p.json")).unwrap();
    let nan = regex_free_replace_first_keep(&text, "NaN");
    std::fs::write(dir.path().join("nan.json"), nan).unwrap();
    let line = one_error_line(&autoprune(
        &["apply", "--env", env_arg, "--policy", "nan.json"],
        dir.path(),
    ));
    assert!(
        line.contains("nan.json") && line.contains("not a valid policy file"),
        "{line}"
    );
}

/// Replaces the value of the first `"keep": <number>` inside `layers` with `value`.
fn regex_free_replace_first_keep(text: &str, value: &str) -> String {
    let layers = text.find("\"layers\"").unwrap();
    let at = layers + text[layers..].find("\"keep\": ").unwrap() + "\"keep\": ".len();
    let end = at + text[at..].find(['\n', ',', '}']).unwrap();
    format!("{}{}{}", &text[..at], value, &text[end..])
}

#[test]
fn apply_save_writes_a_slimmed_channel_pruned_model() {
    let dir = tempfile::tempdir().unwrap();
    let env = synthetic_env(dir.path());
    let text = edited(
        &env,
        &[
            ("prune.granularity", "\"channel\""),
            ("prune.criterion", "\"l2\""),
        ],
    );
    std::fs::write(&env, text).unwrap();
    let env_arg = env.to_str().unwrap();
    let out = autoprune(
        &[
            "baseline", "--env", env_arg, "--method", "uniform", "--metric", "flops", "--keep",
            "0.5", "--out", "c.json", "--json",
        ],
        dir.path(),
    );
    let score = stdout_json(&out);
    assert!(score["flops_kept"].as_f64().unwrap() <= 0.5 + 1e-9);
    let out = autoprune(
        &[
            "apply",
            "--env",
            env_arg,
            "--policy",
            "c.json",
            "--save",
            "out/slim.safetensors",
            "--json",
        ],
        dir.path(),
    );
    let applied = stdout_json(&out);
    let graph: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/slim.graph.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        graph["total_params"], applied["params"],
        "the saved graph is the slimmed one"
    );
    let fc1 = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "fc1")
        .unwrap();
    assert!(
        fc1["op"]["out_features"].as_u64().unwrap() < 32,
        "fc1 is physically smaller: {fc1}"
    );
    let bytes = std::fs::metadata(dir.path().join("out/slim.safetensors"))
        .unwrap()
        .len();
    assert!(
        bytes > 0 && bytes < 4 * 2676,
        "{bytes} bytes is less than the dense float32 model"
    );
}
