//! Latency: tables made by a synthetic timer (exact, noisy) to check the model and the wall;
//! measured tables through the `latency` command (cached for their key, refused for
//! another); a search under a latency budget that meets it with measured scores.

use crate::common::{bin, edited, literal, one_error_line, records, setup, success_json};
use autoprune::graph::ModelGraph;
use autoprune::model::zoo::{self, VggItem};
use autoprune::prune::{probe_graph, ActionWall, Budget, CostModel, Granularity, LatencyKey};
use autoprune::prune::{LatencyTable, Metric};
use proptest::prelude::*;
use std::path::Path;

fn key() -> LatencyKey {
    LatencyKey {
        device: "synthetic".into(),
        threads: 1,
        batch: 1,
        fingerprint: "0".into(),
        layout: autoprune::prune::LAYOUT.into(),
    }
}

/// A table whose "measurement" of a probe is its multiply-accumulates plus a per-call cost,
/// disturbed by up to ±`noise` (a hash of the point, so the same point gives the same value).
fn synthetic_table(costs: &CostModel, noise: f64, dense_ms: f64) -> LatencyTable {
    let graph = costs.graph();
    let n = costs.units().len();
    let dense = costs.node_sizes(&vec![1.0; n]);
    let smallest = costs.node_sizes(&vec![0.0; n]);
    LatencyTable::build(
        graph,
        key(),
        (&dense, &smallest),
        5,
        dense_ms,
        |node, i, o| {
            let probe = probe_graph(graph, node, i, o)?;
            let flops = probe.total_flops() as f64
                + probe
                    .node(probe.order()[1])
                    .out_shape
                    .iter()
                    .product::<usize>() as f64;
            let hash = (node.index() * 7919 + i * 104_729 + o * 1_299_709) % 1000;
            Ok(1e-3 * flops * (1.0 + noise * (hash as f64 / 500.0 - 1.0)) + 0.01)
        },
    )
    .unwrap()
}

fn graphs() -> Vec<ModelGraph> {
    vec![
        zoo::vgg(&vec![1, 12, 12], 5, &[VggItem::Conv(8), VggItem::Conv(12)]).unwrap(),
        zoo::resnet(&vec![1, 8, 8], 4, 8).unwrap(),
        zoo::mobilenetv2(&vec![3, 16, 16], 4, 0.25).unwrap(),
    ]
}

#[test]
fn the_table_predicts_the_dense_latency_and_less_for_every_unit_that_keeps_less() {
    for graph in graphs() {
        let costs = CostModel::new(&graph, Granularity::Channel);
        let table = synthetic_table(&costs, 0.3, 5.0);
        assert!(!table.nodes.is_empty());
        let costs = costs.with_latency(table).unwrap();
        let n = costs.units().len();
        let dense = costs.predicted_latency(&vec![1.0; n]).unwrap();
        assert!((dense - 5.0).abs() < 1e-9, "dense prediction {dense}");
        assert_eq!(costs.counts(&vec![1.0; n]).latency_kept, Some(1.0));
        // Lowering one unit's keep ratio never raises the prediction (monotone tables).
        for u in 0..n {
            let mut keeps = vec![0.7; n];
            let mut last = f64::INFINITY;
            for step in (1..=10).rev() {
                keeps[u] = step as f64 / 10.0;
                let ms = costs.predicted_latency(&keeps).unwrap();
                assert!(
                    ms <= last + 1e-12,
                    "unit {u} at {}: {ms} > {last}",
                    keeps[u]
                );
                last = ms;
            }
        }
        // Unstructured pruning runs dense kernels: its predicted latency is the dense one.
        let unstructured = CostModel::new(&graph, Granularity::Unstructured)
            .with_latency(synthetic_table(
                &CostModel::new(&graph, Granularity::Channel),
                0.3,
                5.0,
            ))
            .unwrap();
        let m = unstructured.units().len();
        assert_eq!(unstructured.counts(&vec![0.1; m]).latency_kept, Some(1.0));
    }
}

#[test]
fn a_latency_budget_needs_a_table() {
    let graph = &graphs()[0];
    let costs = CostModel::new(graph, Granularity::Channel);
    let budget = Budget {
        metric: Metric::Latency,
        keep: 0.5,
        bounds: [0.05, 1.0],
    };
    let error = ActionWall::new(&costs, budget, Path::new("env.toml")).unwrap_err();
    assert!(error.to_string().contains("prune.target.metric"), "{error}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_wall_meets_a_latency_budget_for_any_actions(
        which in 0usize..3,
        noise in 0.0f64..0.5,
        keep in 0.3f64..1.0,
        lo in 0.01f64..0.3,
        raw in proptest::collection::vec(prop_oneof![10 => -0.5f64..1.5, 1 => Just(f64::NAN)], 64),
    ) {
        let graph = &graphs()[which];
        let costs = CostModel::new(graph, Granularity::Channel);
        let table = synthetic_table(&costs, noise, 5.0);
        let costs = costs.with_latency(table).unwrap();
        let budget = Budget { metric: Metric::Latency, keep, bounds: [lo, 1.0] };
        let n = costs.units().len();
        match ActionWall::new(&costs, budget, Path::new("env.toml")) {
            Err(error) => {
                let floor = costs.counts(&vec![lo; n]).kept(Metric::Latency);
                prop_assert!(floor > keep, "refused a feasible budget: {error}");
            }
            Ok(wall) => {
                let raw: Vec<f64> = raw.iter().cycle().take(n).copied().collect();
                for policy in [wall.apply(&raw), wall.fit(&vec![1.0; n])] {
                    let kept = costs.counts(&policy).latency_kept.unwrap();
                    prop_assert!(kept <= keep + 1e-9, "keeps {kept} of the latency, target {keep}");
                    prop_assert!(policy.iter().all(|&k| k <= 1.0 && k > 0.0));
                }
            }
        }
    }
}

/// The synthetic env with wider layers (so that the prunable layers, not the per-call cost,
/// dominate at batch 256), pruned by channel, measuring latency into `table`.
fn latency_env(dir: &Path, table: &Path, target: &str) -> std::path::PathBuf {
    setup(dir, "ddpg", 6);
    let env = edited(
        &dir.join("env.toml"),
        &[
            ("model.hidden", "[512, 512]"),
            ("model.checkpoint", &literal(&dir.join("wide.safetensors"))),
            ("prune.granularity", "\"channel\""),
            ("prune.criterion", "\"l1\""),
            ("prune.target", target),
            ("prune.keep_bounds", "[0.1, 1.0]"),
            ("latency.batch", "256"),
            ("latency.grid", "4"),
            ("latency.repeats", "3"),
            ("latency.model_repeats", "5"),
            ("latency.table", &literal(table)),
        ],
    );
    let path = dir.join("latency-env.toml");
    std::fs::write(&path, env).unwrap();
    path
}

#[test]
fn a_cached_table_is_reused_for_its_key_and_refused_for_another() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table.json");
    let env = latency_env(dir.path(), &table, "{ metric = \"flops\", keep = 0.5 }");
    let command = |threads: &str| {
        bin()
            .args(["latency", "--env", env.to_str().unwrap(), "--policies", "4"])
            .args(["--threads", threads, "--device", "cpu", "--json"])
            .output()
            .unwrap()
    };
    let first = success_json(&command("1"));
    assert_eq!(first["key"]["threads"], 1);
    assert_eq!(first["policies"].as_array().unwrap().len(), 4);
    for p in first["policies"].as_array().unwrap() {
        assert!(p["latency_ms"].as_f64().unwrap() > 0.0);
        assert!(p["predicted_latency_ms"].as_f64().unwrap() > 0.0);
    }
    let cached = std::fs::read(&table).unwrap();
    // The second run reads the table: a new measurement would never repeat every timing.
    let second = success_json(&command("1"));
    assert_eq!(second["nodes"], first["nodes"]);
    assert_eq!(std::fs::read(&table).unwrap(), cached);
    // Another thread count is another key: the cached file is refused and left as it was.
    let out = command("2");
    assert!(!out.status.success());
    let line = one_error_line(&out);
    assert!(
        line.contains("1 thread(s)") && line.contains("2 thread(s)"),
        "{line}"
    );
    assert!(line.contains("latency.table"), "{line}");
    assert_eq!(std::fs::read(&table).unwrap(), cached);
}

#[test]
fn a_search_under_a_latency_budget_meets_it_and_scores_carry_measured_latency() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table.json");
    let env = latency_env(dir.path(), &table, "{ metric = \"latency\", keep = 0.7 }");
    // AMC's resource-constrained reward on the table's latency.
    std::fs::write(
        &env,
        edited(&env, &[("reward.kind", "\"err-log-latency\"")]),
    )
    .unwrap();
    let config = edited(
        &dir.path().join("config.toml"),
        &[("env", &literal(&env)), ("episodes", "6")],
    );
    let config_path = dir.path().join("latency-config.toml");
    std::fs::write(&config_path, config).unwrap();
    let run = dir.path().join("run");
    let out = bin()
        .args(["search", "--config", config_path.to_str().unwrap()])
        .args([
            "--logdir",
            run.to_str().unwrap(),
            "--threads",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    let result = success_json(&out);
    assert!(table.exists());
    let records = records(&run);
    assert_eq!(records.len(), 6);
    for r in &records {
        let latency = r;
        let predicted = latency["predicted_latency_ms"].as_f64().unwrap();
        let dense = latency["dense_latency_ms"].as_f64().unwrap();
        assert!(
            predicted <= 0.7 * dense + 1e-9,
            "episode {}: predicted {predicted} ms, over 0.7 of the dense {dense} ms",
            r["episode"],
        );
        assert!(latency["latency_ms"].as_f64().unwrap() > 0.0);
        assert_eq!(r["scalars"]["latency/ms"], latency["latency_ms"]);
        // The reward reads the table's prediction, which the budget holds below the dense
        // model's.
        let table_ms = r["table_latency_ms"].as_f64().unwrap();
        let error = 1.0 - r["accuracy"].as_f64().unwrap();
        let expected = -error * (1000.0 * table_ms).ln();
        let reward = r["reward"].as_f64().unwrap();
        assert!(
            (reward - expected).abs() < 1e-9,
            "{reward} against {expected}"
        );
    }
    assert!(result["speedup"].as_f64().unwrap() > 0.0, "{result}");
}
