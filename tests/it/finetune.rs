//! Recovery after pruning and learning by gradient: `autoprune finetune` (a killed run
//! resumes to the uninterrupted result, iterative pruning ends at the policy's sparsity
//! exactly, bad settings get one error line), `autoprune proxy-study`, and the `diffsparse`
//! agent (hard masks from its places, every proposal within the budget after the wall, a
//! killed search resumed to the same episodes).

use crate::common::{self, one_error_line, success_json};
use autoprune::model::{zoo, GraphNet};
use autoprune::prune::{CostModel, Criterion, Granularity, Importance, Masker};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The synthetic env (pretrained into `dir`) and a LAMP policy for it.
fn env_and_policy(dir: &Path) -> (String, String) {
    common::setup(dir, "random", 1);
    let env = dir.join("env.toml").to_str().unwrap().to_string();
    let policy = dir.join("lamp.json").to_str().unwrap().to_string();
    success_json(&common::run(&[
        "baseline", "--env", &env, "--method", "lamp", "--out", &policy, "--json",
    ]));
    (env, policy)
}

fn finetune(env: &str, policy: &str, logdir: &Path, extra: &[&str]) -> std::process::Command {
    let mut command = common::bin();
    command.args([
        "finetune",
        "--env",
        env,
        "--policy",
        policy,
        "--steps",
        "40",
        "--lr",
        "0.005",
        "--checkpoint-every",
        "7",
        "--threads",
        "1",
        "--logdir",
        logdir.to_str().unwrap(),
        "--json",
    ]);
    command.args(extra);
    command
}

#[test]
fn finetune_resumes_to_the_same_result_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let (env, policy) = env_and_policy(dir.path());
    let extra = ["--stages", "2", "--kd", "2,0.5"];
    let full = success_json(
        &finetune(&env, &policy, &dir.path().join("full"), &extra)
            .output()
            .unwrap(),
    );
    // Killed just after the checkpoint at step 21, in the second stage (stage 1 ends at 20).
    let killed = dir.path().join("killed");
    let out = finetune(&env, &policy, &killed, &extra)
        .env("AUTOPRUNE_FAILPOINT", "finetune:21")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(killed.join("checkpoint.safetensors").is_file());
    assert!(!killed.join("result.json").exists());
    let resumed = success_json(&common::run(&[
        "finetune",
        "--resume",
        killed.to_str().unwrap(),
        "--json",
    ]));
    for key in ["loss", "accuracy", "test_loss", "test_accuracy", "params"] {
        assert_eq!(resumed[key], full[key], "{key}");
    }
    // Stage 2's mean loss covers only the resumed steps; the validation scores must agree.
    for stage in 0..2 {
        assert_eq!(
            resumed["stage_reports"][stage]["val"],
            full["stage_reports"][stage]["val"]
        );
    }
    // Fine-tuning changed the model: the loss differs from the pruned model's without it.
    let pruned = success_json(&common::run(&[
        "apply", "--env", &env, "--policy", &policy, "--json",
    ]));
    assert_ne!(pruned["loss"], full["loss"]);
}

#[test]
fn iterative_pruning_ends_at_the_policy_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (env, policy) = env_and_policy(dir.path());
    let saved = dir.path().join("tuned.safetensors");
    let result = success_json(
        &finetune(
            &env,
            &policy,
            &dir.path().join("run"),
            &["--stages", "4", "--save", saved.to_str().unwrap()],
        )
        .output()
        .unwrap(),
    );
    let reports = result["stage_reports"].as_array().unwrap();
    assert_eq!(reports.len(), 4);
    let kept: Vec<f64> = reports
        .iter()
        .map(|r| r["params_kept"].as_f64().unwrap())
        .collect();
    assert!(kept.windows(2).all(|w| w[1] < w[0]), "{kept:?}");
    let applied = success_json(&common::run(&[
        "apply", "--env", &env, "--policy", &policy, "--json",
    ]));
    assert_eq!(kept[3], applied["params_kept"].as_f64().unwrap());
    // The saved model holds exactly the policy's count of nonzero weights in every layer.
    let tensors = Tensor::read_safetensors(&saved).unwrap();
    for layer in applied["layers"].as_array().unwrap() {
        let name = format!("{}.weight", layer["name"].as_str().unwrap());
        let weight = &tensors.iter().find(|(n, _)| *n == name).unwrap().1;
        let nonzero = weight.ne(0.0).sum(Kind::Int64).int64_value(&[]) as f64;
        let expected = layer["keep"].as_f64().unwrap() * weight.numel() as f64;
        assert!(
            (nonzero - expected).abs() < 0.5,
            "{name}: {nonzero} nonzero, policy keeps {expected}"
        );
    }
}

#[test]
fn finetune_refuses_bad_settings_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let env = common::repo().join("envs/synthetic-mlp.toml");
    let env = env.to_str().unwrap();
    let policy = dir.path().join("p.json");
    std::fs::write(&policy, "{}").unwrap();
    let line = one_error_line(&common::run(&[
        "finetune",
        "--resume",
        dir.path().to_str().unwrap(),
    ]));
    assert!(line.contains("not a fine-tuning run folder"), "{line}");
    let line = one_error_line(&common::run(&[
        "finetune",
        "--env",
        env,
        "--policy",
        policy.to_str().unwrap(),
        "--stages",
        "0",
    ]));
    assert!(line.contains("--stages"), "{line}");
    let line = one_error_line(&common::run(&[
        "finetune",
        "--env",
        env,
        "--policy",
        policy.to_str().unwrap(),
        "--steps",
        "10",
    ]));
    assert!(line.contains("p.json"), "{line}");
}

#[test]
fn proxy_study_scores_every_policy_and_continues_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (env, policy) = env_and_policy(dir.path());
    let study = dir.path().join("study");
    let png = dir.path().join("study.png");
    let args = |steps: &str| {
        vec![
            "proxy-study".to_string(),
            "--env".into(),
            env.clone(),
            "--policy".into(),
            policy.clone(),
            "--policies".into(),
            "6".into(),
            "--steps".into(),
            steps.into(),
            "--proxy-steps".into(),
            "3".into(),
            "--logdir".into(),
            study.to_str().unwrap().into(),
            "--threads".into(),
            "1".into(),
            "--json".into(),
        ]
    };
    let run = |steps: &str, png: Option<&Path>| {
        let mut command = common::bin();
        command.args(args(steps));
        if let Some(png) = png {
            command.args(["--png", png.to_str().unwrap()]);
        }
        command.output().unwrap()
    };
    let first = success_json(&run("20", Some(&png)));
    let rows = first["policies"].as_array().unwrap();
    let labels: Vec<&str> = rows.iter().map(|r| r["label"].as_str().unwrap()).collect();
    assert_eq!(
        labels,
        ["uniform", "global", "lamp", "erk", "file:lamp", "random-0"]
    );
    for row in rows {
        let proxies: Vec<&str> = row["proxies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["proxy"].as_str().unwrap())
            .collect();
        assert_eq!(proxies, ["none", "recalibrated", "ft-3"]);
    }
    // LAMP from the allocator and from its file is one policy: the same scores throughout.
    let losses = |row: &serde_json::Value| -> Vec<serde_json::Value> {
        row["proxies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["loss"].clone())
            .collect()
    };
    assert_eq!(losses(&rows[2]), losses(&rows[4]));
    assert_eq!(rows[2]["tuned_loss"], rows[4]["tuned_loss"]);
    let correlations = first["correlations"].as_array().unwrap();
    assert_eq!(correlations.len(), 4);
    for c in correlations {
        for key in ["spearman", "kendall"] {
            // NaN (a constant side) is written as null.
            if let Some(v) = c[key].as_f64() {
                assert!((-1.0..=1.0).contains(&v), "{c}");
            }
        }
    }
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    // Run again on the same folder: every policy is finished, nothing is scored again.
    let again = success_json(&run("20", None));
    assert_eq!(again["policies"], first["policies"]);
    let lines = std::fs::read_to_string(study.join("rows.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 6);
    // Other settings on the same folder are refused.
    let line = one_error_line(&run("30", None));
    assert!(line.contains("other settings"), "{line}");
}

#[test]
fn a_step_at_the_places_is_the_hard_mask() {
    let data = common::synthetic_data();
    tch::manual_seed(3);
    let cfg = [
        zoo::VggItem::Conv(8),
        zoo::VggItem::Pool(zoo::PoolMarker::M),
        zoo::VggItem::Conv(12),
    ];
    let net = GraphNet::new(
        zoo::vgg(&data.shape, data.classes, &cfg).unwrap(),
        Device::Cpu,
    );
    for (granularity, criterion) in [
        (Granularity::Unstructured, Criterion::Magnitude),
        (Granularity::Channel, Criterion::L1),
    ] {
        let costs = CostModel::new(net.graph(), granularity);
        let importance = Importance::compute(&net, criterion, &data.train, 0).unwrap();
        let masker = Masker::new(&costs, &importance);
        let keeps: Vec<f64> = (0..costs.units().len())
            .map(|u| 0.3 + 0.2 * u as f64)
            .collect();
        let steps: Vec<Tensor> = (0..keeps.len())
            .map(|u| {
                let kept = costs.unit_kept(u, keeps[u]) as f64 / costs.units()[u].size as f64;
                masker.places(u).unwrap().lt(kept).to_kind(Kind::Float)
            })
            .collect();
        let hard = masker.masks(&keeps);
        let from_places = masker.masks_from(&steps);
        assert_eq!(hard.len(), from_places.len());
        for (a, b) in hard.iter().zip(&from_places) {
            assert_eq!(a.tensor, b.tensor);
            assert!(a.mask.equal(&b.mask), "{granularity:?}: {}", a.tensor);
        }
    }
}

/// A diffsparse search config on the synthetic env of `dir`, with `granularity` and budget.
fn diffsparse_config(dir: &Path, episodes: usize, prune: &[(&str, &str)]) -> std::path::PathBuf {
    let config = common::setup(dir, "random", episodes);
    let env = dir.join("env.toml");
    std::fs::write(&env, common::edited(&env, prune)).unwrap();
    let text = common::edited(
        &config,
        &[
            ("agent", "\"diffsparse\""),
            ("diffsparse.steps_per_episode", "3"),
            ("diffsparse.batch_size", "32"),
            ("diffsparse.lr", "0.3"),
        ],
    );
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn diffsparse_proposals_meet_the_budget_after_the_wall() {
    for (granularity, metric, keep) in [("unstructured", "params", 0.2), ("channel", "flops", 0.5)]
    {
        let dir = tempfile::tempdir().unwrap();
        let config = diffsparse_config(
            dir.path(),
            16,
            &[
                ("prune.granularity", &format!("\"{granularity}\"")),
                ("prune.criterion", "\"l1\""),
                (
                    "prune.target",
                    &format!("{{ metric = \"{metric}\", keep = {keep} }}"),
                ),
            ],
        );
        let run = dir.path().join("run");
        let result = success_json(&common::search_in(&config, &run, &["--json"]));
        let kept = format!("{metric}_kept");
        let records = common::records(&run);
        assert_eq!(records.len(), 16);
        // The agent's own episodes follow the four allocators; its levels move.
        let own: Vec<&serde_json::Value> = records[4..].iter().collect();
        for record in &own {
            let cost = record[&kept].as_f64().unwrap();
            assert!(cost <= keep + 1e-9, "{granularity}: {cost} over {keep}");
            assert!(
                cost >= 0.8 * keep,
                "{granularity}: {cost} leaves the budget unused"
            );
        }
        assert_ne!(
            own[0]["keeps"],
            own[own.len() - 1]["keeps"],
            "{granularity}"
        );
        assert!(result[&kept].as_f64().unwrap() <= keep + 1e-9);
        assert!(run.join("agent.safetensors").is_file());
    }
}

#[test]
fn a_killed_diffsparse_search_resumes_to_the_same_episodes() {
    let dir = tempfile::tempdir().unwrap();
    let config = diffsparse_config(dir.path(), 9, &[]);
    let full = dir.path().join("full");
    success_json(&common::search_in(&config, &full, &["--json"]));
    let killed = dir.path().join("killed");
    let out = common::search_command(&config, &killed)
        .env("AUTOPRUNE_FAILPOINT", "logged:6")
        .output()
        .unwrap();
    assert!(!out.status.success());
    success_json(&common::run(&[
        "search",
        "--resume",
        killed.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(
        common::strip_times(common::records(&killed)),
        common::strip_times(common::records(&full))
    );
}

#[test]
fn iterative_channel_pruning_saves_the_channels_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    common::setup(dir.path(), "random", 1);
    let env = dir.path().join("env.toml");
    let text = common::edited(
        &env,
        &[
            ("prune.granularity", "\"channel\""),
            ("prune.criterion", "\"l1\""),
            ("prune.target", "{ metric = \"flops\", keep = 0.4 }"),
        ],
    );
    std::fs::write(&env, text).unwrap();
    let env = env.to_str().unwrap().to_string();
    let policy = dir.path().join("uniform.json");
    let policy = policy.to_str().unwrap();
    success_json(&common::run(&[
        "baseline", "--env", &env, "--method", "uniform", "--out", policy, "--json",
    ]));
    let saved = dir.path().join("slim.safetensors");
    let result = success_json(
        &finetune(
            &env,
            policy,
            &dir.path().join("run"),
            &["--stages", "3", "--save", saved.to_str().unwrap()],
        )
        .output()
        .unwrap(),
    );
    // Later stages rank the fine-tuned channels again; the slimmed model must hold the
    // channels the last stage kept (live ones), in the policy's counts.
    let tensors = Tensor::read_safetensors(&saved).unwrap();
    for layer in result["layers"].as_array().unwrap() {
        let name = format!("{}.weight", layer["name"].as_str().unwrap());
        let weight = &tensors.iter().find(|(n, _)| *n == name).unwrap().1;
        let rows = weight.size()[0];
        let live = weight
            .abs()
            .sum_dim_intlist(1, false, Kind::Float)
            .gt(0.0)
            .sum(Kind::Int64);
        assert_eq!(
            live.int64_value(&[]),
            rows,
            "{name}: a pruned channel was kept"
        );
    }
}
