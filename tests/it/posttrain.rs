//! Post-training pruning: Wanda and SparseGPT on hand-worked and random layers, conv features,
//! OWL and AlphaPruning on hand-worked inputs, every layer-wise allocation within its budget,
//! the evaluator pruning layer by layer, and a GPT pruned after training from the command line.

use crate::common;
use autoprune::graph::{GraphBuilder, Hw, ModelGraph, Op};
use autoprune::prune::layerwise::{self, block_name, hill_alpha, outlier_ratio};
use autoprune::prune::posttrain::{
    as_matrix, column_norms, features, hessian, sparsegpt, wanda_mask, Removal, Rule,
};
use autoprune::prune::Signals;
use autoprune::prune::{allocate, ActionWall, Budget, CostModel, Granularity, Method, Metric};
use proptest::prelude::*;
use std::path::Path;
use tch::{Kind, Tensor};

fn linear(inputs: usize, outputs: usize) -> Op {
    Op::Linear {
        in_features: inputs,
        out_features: outputs,
        bias: false,
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1).to_kind(Kind::Float)).unwrap()
}

#[test]
fn wanda_masks_a_hand_worked_layer() {
    let op = linear(3, 2);
    let w = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 4.0, 5.0, -6.0]).view([2, 3]);
    // Inputs: column norms √2, 0, 2.
    let x = Tensor::from_slice(&[1.0f32, 0.0, 2.0, 1.0, 0.0, 0.0]).view([2, 3]);
    let norms: Vec<Tensor> = features(&op, &x).iter().map(column_norms).collect();
    assert!((values(&norms[0])[0] - 2f32.sqrt()).abs() < 1e-6);
    // Scores: row 0: 1.41, 0, 6; row 1: 5.66, 0, 12.
    // Keep 3 within rows: every row 1, the first row one more: [1 0 1], [0 0 1].
    let mask = wanda_mask(&op, &w, &norms, Rule::Keep(3));
    assert_eq!(values(&mask), [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
    // Keep 3 across the layer: 12, 6, 5.66.
    let mask = wanda_mask(&op, &w, &norms, Rule::KeepLayer(3));
    assert_eq!(values(&mask), [0.0, 0.0, 1.0, 1.0, 0.0, 1.0]);
    // Magnitude alone would keep 4, 5, -6 instead: the input norms decide.
    // 1 of 2 along the inputs (groups [0, 1] and [2]): row 0 keeps col 0 and col 2.
    let mask = wanda_mask(&op, &w, &norms, Rule::NOfM { n: 1, m: 2 });
    assert_eq!(values(&mask), [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]);
}

#[test]
fn conv_features_times_the_weight_matrix_give_the_conv() {
    tch::manual_seed(1);
    for groups in [1usize, 2] {
        let op = Op::Conv2d {
            in_channels: 4,
            out_channels: 6,
            kernel: Hw::square(3),
            stride: Hw::square(2),
            padding: Hw::square(1),
            dilation: Hw::square(1),
            groups,
            bias: false,
        };
        let x = Tensor::randn([2, 4, 7, 7], (Kind::Float, tch::Device::Cpu));
        let w = Tensor::randn(
            [6, 4 / groups as i64, 3, 3],
            (Kind::Float, tch::Device::Cpu),
        );
        let direct = x.conv2d(&w, None::<Tensor>, [2, 2], [1, 1], [1, 1], groups as i64);
        let feats = features(&op, &x);
        let matrices = as_matrix(&op, &w);
        assert_eq!(feats.len(), groups);
        // Per group: [N·L, cols] × [cols, out/groups] → [N, L, out/groups].
        let outs: Vec<Tensor> = feats
            .iter()
            .zip(&matrices)
            .map(|(f, m)| f.matmul(&m.transpose(0, 1)).view([2, 16, -1]))
            .collect();
        let via = Tensor::cat(&outs, 2)
            .permute([0, 2, 1])
            .reshape([2, 6, 4, 4]);
        let diff = f64::try_from((direct - via).abs().max()).unwrap();
        assert!(diff < 1e-5, "groups {groups}: {diff}");
    }
}

/// A random layer whose inputs have correlated columns (as activations do).
fn layer(rows: i64, cols: i64, samples: i64) -> (Tensor, Tensor) {
    tch::manual_seed(7);
    let opts = (Kind::Double, tch::Device::Cpu);
    let mix = Tensor::randn([cols, cols], opts) * 0.5 + Tensor::eye(cols, opts);
    let x = Tensor::randn([samples, cols], opts).matmul(&mix);
    let w = Tensor::randn([rows, cols], opts);
    (w, x)
}

fn reconstruction(x: &Tensor, w: &Tensor, pruned: &Tensor) -> f64 {
    let diff =
        x.matmul(&w.transpose(0, 1)) - x.matmul(&pruned.to_kind(Kind::Double).transpose(0, 1));
    f64::try_from(diff.square().sum(Kind::Double)).unwrap()
}

#[test]
fn sparsegpt_reconstructs_better_than_magnitude_at_the_same_sparsity() {
    let (w, x) = layer(8, 24, 400);
    let kept = 8 * 24 / 2;
    let (pruned, mask) = sparsegpt(
        &w,
        &hessian(&x),
        Removal::Rule(Rule::Keep(kept)),
        24,
        8,
        0.01,
    )
    .unwrap();
    assert_eq!(
        f64::try_from(mask.sum(Kind::Double)).unwrap() as usize,
        kept
    );
    // Zeros exactly where the mask removes.
    let outside = f64::try_from(
        (&pruned * mask.ones_like().g_sub(&mask))
            .abs()
            .sum(Kind::Double),
    )
    .unwrap();
    assert_eq!(outside, 0.0);
    // Magnitude: the largest half of |w| across the layer, weights unchanged.
    let flat = w.abs().flatten(0, -1);
    let best = flat.sort(0, true).1.narrow(0, 0, kept as i64);
    let magnitude_mask = flat.zeros_like().index_fill(0, &best, 1.0).view([8, 24]);
    let magnitude = &w * magnitude_mask;
    let (e_sparsegpt, e_magnitude) = (
        reconstruction(&x, &w, &pruned),
        reconstruction(&x, &w, &magnitude),
    );
    assert!(
        e_sparsegpt < 0.8 * e_magnitude,
        "SparseGPT {e_sparsegpt} against magnitude {e_magnitude}"
    );
    // 2:4, a valid pattern with exactly two weights in every group of four.
    let (_, mask) = sparsegpt(
        &w,
        &hessian(&x),
        Removal::Rule(Rule::NOfM { n: 2, m: 4 }),
        24,
        8,
        0.01,
    )
    .unwrap();
    let per_group = mask.view([8, 6, 4]).sum_dim_intlist(2, false, Kind::Double);
    assert!(values(&per_group).iter().all(|&c| c == 2.0), "{per_group}");
}

#[test]
fn sparsegpt_n_of_m_groups_stay_whole_across_blocks_and_segments() {
    // Two kernel positions of 6 input channels: 1:4 groups [0, 4), [4, 6), [6, 10), [10, 12);
    // blocks of 5 columns would cut the first and third groups.
    let (w, x) = layer(5, 12, 200);
    let (pruned, mask) = sparsegpt(
        &w,
        &hessian(&x),
        Removal::Rule(Rule::NOfM { n: 1, m: 4 }),
        6,
        5,
        0.01,
    )
    .unwrap();
    for (start, len) in [(0, 4), (4, 2), (6, 4), (10, 2)] {
        let kept = mask
            .narrow(1, start, len)
            .sum_dim_intlist(1, false, Kind::Double);
        assert!(
            values(&kept).iter().all(|&k| k == 1.0),
            "group at {start}: {kept}"
        );
    }
    let outside = f64::try_from(
        (&pruned * mask.ones_like().g_sub(&mask))
            .abs()
            .sum(Kind::Double),
    )
    .unwrap();
    assert_eq!(outside, 0.0);
}

#[test]
fn sparsegpt_removing_one_weight_is_the_closed_form_obs_update() {
    let (w, x) = layer(3, 10, 50);
    let h = hessian(&x);
    // Remove w[1, 0]; blocks of 4 columns, so the update crosses blocks lazily.
    let keep = Tensor::ones([3, 10], (Kind::Double, tch::Device::Cpu));
    let _ = keep.get(1).get(0).fill_(0.0);
    let (pruned, _) = sparsegpt(&w, &h, Removal::Mask(&keep), 10, 4, 0.0).unwrap();
    // OBS: δw = −(w_q / [H⁻¹]_qq) · H⁻¹[q, :] for the one row.
    let hinv = h.inverse();
    let w_q = w.double_value(&[1, 0]);
    let expected_row = w.get(1) - hinv.get(0) * (w_q / hinv.double_value(&[0, 0]));
    let diff = f64::try_from((pruned.get(1) - &expected_row).abs().max()).unwrap();
    assert!(diff < 1e-9, "{diff}");
    assert_eq!(pruned.double_value(&[1, 0]), 0.0);
    // The other rows lose nothing and stay as they were.
    let others = f64::try_from((pruned.get(0) - w.get(0)).abs().max()).unwrap()
        + f64::try_from((pruned.get(2) - w.get(2)).abs().max()).unwrap();
    assert_eq!(others, 0.0);
}

/// Layers `h.<i>.fc` of the given sizes (one input, chained), unstructured, params budget.
fn chain(sizes: &[(usize, usize)]) -> ModelGraph {
    let mut b = GraphBuilder::new();
    let mut x = b.add(
        "input",
        Op::Input {
            shape: vec![sizes[0].0],
        },
        &[],
    );
    for (i, &(inputs, outputs)) in sizes.iter().enumerate() {
        x = b.add(format!("h.{i}.fc"), linear(inputs, outputs), &[x]);
    }
    b.add("output", Op::Output, &[x]);
    b.build().unwrap()
}

fn wall_for(costs: &CostModel, keep: f64, bounds: [f64; 2]) -> ActionWall {
    let budget = Budget {
        metric: Metric::Params,
        keep,
        bounds,
    };
    ActionWall::new(costs, budget, Path::new("test")).unwrap()
}

#[test]
fn owl_and_alphapruning_on_hand_worked_inputs() {
    // Blocks: a transformer layer, a residual block, a plain layer.
    assert_eq!(block_name("h.3.attn.q"), "h.3");
    assert_eq!(block_name("layer1.0.conv2"), "layer1.0");
    assert_eq!(block_name("features.3"), "features.3");
    assert_eq!(block_name("fc"), "fc");
    // Nine scores of 1 and one of 20: mean 2.9, above 5 × 2.9 only the 20.
    let scores = Tensor::from_slice(&[1.0f32, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 20.0]);
    assert!((outlier_ratio(&[scores], 5.0).unwrap() - 0.1).abs() < 1e-12);
    // log-eigenvalues 0 ×4, ln 2, ln 4, ln 8: the fullest of 100 bins is the first, so
    // λ_min = exp(ln 8 / 200) and the tail is 2, 4, 8.
    let eigs = [1.0, 1.0, 1.0, 1.0, 2.0, 4.0, 8.0];
    let xmin = (8f64.ln() / 200.0).exp();
    let sum: f64 = [2.0f64, 4.0, 8.0].iter().map(|e| (e / xmin).ln()).sum();
    assert!((hill_alpha(&eigs) - (1.0 + 3.0 / sum)).abs() < 1e-12);
    assert!((hill_alpha(&eigs) - 1.7268).abs() < 1e-3);
    // Two blocks of 100 weights each at half the params.
    let costs = CostModel::new(&chain(&[(10, 10), (10, 10)]), Granularity::Unstructured);
    assert_eq!(layerwise::blocks(&costs), [0, 1]);
    let wall = wall_for(&costs, 0.5, [0.01, 1.0]);
    // OWL: outlier ratios 0.1 and 0 spread to 0.16 and 0 (2λ), shifted to mean 0.5.
    let owl = allocate(
        Method::Owl,
        &wall,
        &costs,
        Signals {
            outliers: &[0.1, 0.0],
            ..Signals::default()
        },
        0,
    );
    assert_eq!(owl, [0.58, 0.42]);
    // AlphaPruning: α 2 and 4 map to sparsities 0.3 and 0.7 (ε = 0.2), already at the budget.
    let alpha = allocate(
        Method::AlphaPruning,
        &wall,
        &costs,
        Signals {
            alphas: &[2.0, 4.0],
            ..Signals::default()
        },
        0,
    );
    assert_eq!(alpha, [0.7, 0.3]);
    // Equal signals give uniform allocation.
    let flat = Signals {
        outliers: &[0.2, 0.2],
        alphas: &[3.0, 3.0],
        ..Signals::default()
    };
    assert_eq!(allocate(Method::Owl, &wall, &costs, flat, 0), [0.5, 0.5]);
    assert_eq!(
        allocate(Method::AlphaPruning, &wall, &costs, flat, 0),
        [0.5, 0.5]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn layerwise_allocations_meet_the_budget_after_rounding(
        signal in proptest::collection::vec(0.0f64..10.0, 4),
        keep in 0.05f64..0.95,
        low in 0.01f64..0.05,
    ) {
        let costs = CostModel::new(
            &chain(&[(7, 13), (13, 5), (5, 31), (31, 3)]),
            Granularity::Unstructured,
        );
        let wall = wall_for(&costs, keep, [low, 1.0]);
        let signals = Signals { outliers: &signal, alphas: &signal, ..Signals::default() };
        for method in [Method::Owl, Method::AlphaPruning] {
            let keeps = allocate(method, &wall, &costs, signals, 0);
            prop_assert!(wall.cost(&keeps) <= keep + 1e-9, "{method:?} {keeps:?}");
            prop_assert!(keeps.iter().all(|&k| k > 0.0 && k <= 1.0));
            // Rounded already: feeding the ratios back changes nothing.
            prop_assert_eq!(costs.effective_keeps(&keeps), keeps.clone());
        }
    }
}

#[test]
fn a_gpt_pruned_after_training_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let gpt = crate::transformer::tiny_gpt_env(dir.path());
    // The same GPT pruned after training: unstructured, Wanda, 30% of the params kept.
    let text = common::edited(
        &gpt,
        &[
            ("prune.granularity", "\"unstructured\""),
            ("prune.criterion", "\"wanda\""),
            ("prune.target", "{ metric = \"params\", keep = 0.3 }"),
            ("prune.calibration", "32"),
        ],
    );
    let env = dir.path().join("wanda.toml");
    std::fs::write(&env, text).unwrap();
    let env = env.to_str().unwrap();
    let baseline = |method: &str, criterion: &str, extra: &[&str]| {
        let mut args = vec![
            "baseline",
            "--env",
            env,
            "--method",
            method,
            "--criterion",
            criterion,
            "--json",
        ];
        args.extend_from_slice(extra);
        common::success_json(&common::run(&args))
    };
    let dense = common::success_json(&common::run(&[
        "baseline", "--env", env, "--method", "uniform", "--keep", "1", "--json",
    ]));
    let mut perplexities = Vec::new();
    for method in ["uniform", "global", "owl", "alphapruning"] {
        for criterion in ["wanda", "sparsegpt"] {
            let score = baseline(method, criterion, &[]);
            assert!(
                score["params_kept"].as_f64().unwrap() <= 0.3 + 1e-9,
                "{score}"
            );
            assert_eq!(score["criterion"], criterion);
            // The layer-wise allocators report what they read, one value per unit.
            if method == "owl" || method == "alphapruning" {
                let signal = score["signal"].as_array().unwrap();
                assert_eq!(signal.len(), score["layers"].as_array().unwrap().len());
                assert!(signal.iter().all(|v| v.as_f64().unwrap() >= 0.0), "{score}");
            } else {
                assert!(score["signal"].is_null());
            }
            let ppl = score["perplexity"].as_f64().unwrap();
            assert!(
                ppl > dense["perplexity"].as_f64().unwrap() * 0.999,
                "{method} {criterion}: {score}"
            );
            perplexities.push(ppl);
        }
    }
    // Each allocation is its own policy: the perplexities are not all the same.
    assert!(perplexities
        .iter()
        .any(|p| (p - perplexities[0]).abs() > 1e-6));
    // The layer inputs taken from the dense model once (cached) instead of from the pruned
    // layers: the same sparsity, another model.
    let dense_inputs = dir.path().join("dense-inputs.toml");
    std::fs::write(
        &dense_inputs,
        common::edited(Path::new(env), &[("prune.calibration_from", "\"dense\"")]),
    )
    .unwrap();
    let sequential = baseline("uniform", "wanda", &[]);
    let cached = common::success_json(&common::run(&[
        "baseline",
        "--env",
        dense_inputs.to_str().unwrap(),
        "--method",
        "uniform",
        "--json",
    ]));
    assert_eq!(cached["params_kept"], sequential["params_kept"]);
    assert_ne!(cached["perplexity"], sequential["perplexity"]);
    // 2:4 keeps half of every group of four.
    let score = baseline(
        "uniform",
        "sparsegpt",
        &["--granularity", "2:4", "--keep", "0.5"],
    );
    assert!(
        (score["params_kept"].as_f64().unwrap() - 0.5).abs() < 1e-9,
        "{score}"
    );
    // A search over Wanda's per-layer ratios starts from the allocators (OWL and
    // AlphaPruning included) and returns at least the best of them on validation.
    let config = common::edited(
        &common::repo().join("configs/posttrain-evolution.toml"),
        &[
            ("env", &common::literal(Path::new(env))),
            ("episodes", "10"),
            ("eval_samples", "40"),
            ("evolution.population", "4"),
            ("evolution.top_k", "2"),
        ],
    );
    let config_path = dir.path().join("search.toml");
    std::fs::write(&config_path, config).unwrap();
    let policy = dir.path().join("policy.json");
    let out = common::run(&[
        "search",
        "--config",
        config_path.to_str().unwrap(),
        "--logdir",
        dir.path().join("runs").to_str().unwrap(),
        "--out",
        policy.to_str().unwrap(),
        "--json",
    ]);
    let found = common::success_json(&out);
    let records = common::records(&dir.path().join("runs"));
    let heuristics: Vec<&str> = records
        .iter()
        .filter_map(|r| r["heuristic"].as_str())
        .collect();
    assert_eq!(
        heuristics,
        ["uniform", "global", "lamp", "erk", "owl", "alphapruning"]
    );
    let best_heuristic = records
        .iter()
        .filter(|r| r["heuristic"].is_string())
        .map(|r| {
            r["whole_split"]["reward"]
                .as_f64()
                .unwrap_or(r["reward"].as_f64().unwrap())
        })
        .fold(f64::NEG_INFINITY, f64::max);
    assert!(
        found["reward"].as_f64().unwrap() >= best_heuristic - 1e-12,
        "{found}"
    );
    // The policy applied again with SparseGPT: the same sparsity, layer for layer.
    let applied = common::success_json(&common::run(&[
        "apply",
        "--env",
        env,
        "--policy",
        policy.to_str().unwrap(),
        "--criterion",
        "sparsegpt",
        "--json",
    ]));
    assert_eq!(applied["layers"], found["layers"]);
    // Every agent searches these policies unchanged (a few episodes each).
    for config in [
        "amc-ddpg",
        "ppo",
        "random",
        "gnn",
        "meta",
        "posttrain-evopress",
    ] {
        let out = common::run(&[
            "search",
            "--config",
            &format!("configs/{config}.toml"),
            "--env",
            env,
            "--episodes",
            "8",
            "--logdir",
            dir.path().join(config).to_str().unwrap(),
            "--json",
        ]);
        let score = common::success_json(&out);
        assert!(
            score["params_kept"].as_f64().unwrap() <= 0.3 + 1e-9,
            "{config}: {score}"
        );
        assert!(
            score["test_perplexity"].as_f64().unwrap() > 1.0,
            "{config}: {score}"
        );
    }
    // Channel pruning has no post-training criterion: one line naming the key.
    let out = common::run(&[
        "baseline",
        "--env",
        env,
        "--method",
        "uniform",
        "--criterion",
        "wanda",
        "--granularity",
        "channel",
    ]);
    let line = common::one_error_line(&out);
    assert!(
        line.contains("prune.criterion") && line.contains("unstructured"),
        "{line}"
    );
}
