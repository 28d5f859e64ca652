//! Bring your own model: PyTorch models exported to ONNX at test time
//! (tests/fixtures/export_onnx.py) import with PyTorch's outputs, their prunable groups are
//! right, pruned models export back to ONNX that ONNX Runtime runs to the same outputs, bad
//! files give one clear error, and `search` runs on an imported model with every agent.

use crate::common::{bin, export_fixtures, one_error_line, python, read_f32, repo, success_json};
use autoprune::config::RewardKind;
use autoprune::data::{self, DataOptions, Dataset, DatasetKind, SplitName};
use autoprune::eval::{EvalConfig, Evaluator};
use autoprune::model::GraphNet;
use autoprune::prune::{allocate, slim, Budget, Criterion, Method, Signals};
use autoprune::prune::{Granularity, Metric};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use tch::{Device, Tensor};

const MODELS: [&str; 6] = [
    "cnn_bn",
    "cnn_bn_inline",
    "resblock",
    "separable",
    "branches",
    "windows",
];

/// The fixtures, exported once per test run.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| export_fixtures("export_onnx.py", "onnx", &[]))
}

fn reference_input(name: &str) -> Tensor {
    Tensor::from_slice(&read_f32(&fixtures().join(format!("{name}.input.f32"))))
        .view([4, 1, 28, 28])
}

fn load(name: &str) -> GraphNet {
    let path = fixtures().join(format!("{name}.onnx"));
    let imported = autoprune::onnx::import(&path).unwrap();
    autoprune::onnx::load_net(imported, Device::Cpu, &path).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

#[test]
fn imported_models_match_pytorch() {
    for name in MODELS {
        let net = load(name);
        let expected =
            Tensor::from_slice(&read_f32(&fixtures().join(format!("{name}.output.f32"))))
                .view([4, 10]);
        let got = tch::no_grad(|| net.forward_t(&reference_input(name), false));
        let diff = max_abs_diff(&got, &expected);
        assert!(diff <= 1e-4, "{name}: max abs difference {diff}");
        // Not a constant model: the outputs differ between samples.
        assert!(f64::try_from(got.std(false)).unwrap() > 1e-3, "{name}");
    }
}

/// Names of each group's producers, sorted, per group.
fn groups(net: &GraphNet) -> Vec<Vec<String>> {
    let graph = net.graph();
    let mut out: Vec<Vec<String>> = graph
        .prunable_groups()
        .iter()
        .map(|g| {
            let mut names: Vec<String> = g
                .producers
                .iter()
                .chain(&g.members)
                .map(|&i| graph.node(i).name.clone())
                .collect();
            names.sort();
            names
        })
        .collect();
    out.sort();
    out
}

#[test]
fn prunable_groups_follow_residuals_and_depthwise_convs() {
    // The exporter folds each BatchNorm into the conv before it.
    let res = groups(&load("resblock"));
    // The stem and the block's second conv feed the same Add: one group.
    assert!(
        res.contains(&vec!["conv2".to_string(), "stem".to_string()]),
        "{res:?}"
    );
    assert!(res.contains(&vec!["conv1".to_string()]), "{res:?}");
    assert!(res.contains(&vec!["down".to_string()]), "{res:?}");
    // A depthwise conv passes its input's channels through: it prunes with the stem.
    let sep = groups(&load("separable"));
    assert!(
        sep.contains(&vec!["dw".to_string(), "stem".to_string()]),
        "{sep:?}"
    );
    assert!(sep.contains(&vec!["pw".to_string()]), "{sep:?}");
    // Concat branches are pruned apart, each with its BatchNorm; the conv after the Concat
    // reads both at their offsets.
    let net = load("branches");
    let br = groups(&net);
    assert!(br.contains(&vec!["a".to_string()]), "{br:?}");
    assert!(
        br.contains(&vec!["b".to_string(), "bn".to_string()]),
        "{br:?}"
    );
    assert!(br.contains(&vec!["head".to_string()]), "{br:?}");
    let head = net.graph().find("head").unwrap();
    let offsets: Vec<usize> = net
        .graph()
        .prunable_groups()
        .iter()
        .flat_map(|g| {
            g.consumers
                .iter()
                .filter(|c| c.node == head)
                .map(|c| c.offset)
        })
        .collect();
    assert_eq!(offsets.len(), 2, "both branches feed head");
    // Squeeze-and-excitation: the gate's excite conv prunes with the channels it scales; the
    // padding that differs between sides is a Pad node, and the softmax keeps the logits
    // whole.
    let net = load("windows");
    let win = groups(&net);
    assert!(
        win.contains(&vec![
            "bn1".to_string(),
            "dilated".to_string(),
            "excite".to_string()
        ]) || win.contains(&vec!["dilated".to_string(), "excite".to_string()]),
        "{win:?}"
    );
    let graph = net.graph();
    let pad = graph
        .order()
        .iter()
        .find(|&&i| matches!(graph.node(i).op, autoprune::graph::Op::Pad { .. }))
        .map(|&i| graph.node(i).op.clone());
    assert_eq!(
        pad,
        Some(autoprune::graph::Op::Pad {
            top: 2,
            left: 1,
            bottom: 1,
            right: 0
        })
    );
    assert!(offsets.contains(&0) && offsets.contains(&8), "{offsets:?}");
}

fn fashion_mnist() -> Dataset {
    let options = DataOptions {
        kind: DatasetKind::FashionMnist,
        dir: repo().join("data/fashion-mnist"),
        val_size: 1000,
        seed: 0,
        context: 0,
    };
    data::load(&options, Device::Cpu).unwrap()
}

fn eval_config(granularity: Granularity) -> EvalConfig {
    EvalConfig {
        granularity,
        criterion: if granularity == Granularity::Channel {
            Criterion::L1
        } else {
            Criterion::Magnitude
        },
        budget: Budget {
            metric: if granularity == Granularity::Channel {
                Metric::Flops
            } else {
                Metric::Params
            },
            keep: 0.5,
            bounds: [0.05, 1.0],
        },
        reward: RewardKind::Accuracy,
        eval_split: SplitName::Val,
        finetune_steps: 0,
        finetune_lr: 0.01,
        finetune_adam: false,
        recalibration_batches: 0,
        batch_size: 64,
        eval_batch_size: 256,
        eval_samples: Some(200),
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

/// Runs an ONNX file with ONNX Runtime on `name`'s reference input.
fn onnxruntime(model: &Path, name: &str) -> Tensor {
    let out = model.with_extension("ort.f32");
    let script = "import sys, numpy as np, onnxruntime as ort\n\
s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n\
x = np.fromfile(sys.argv[2], dtype='<f4').reshape(4, 1, 28, 28)\n\
y = s.run(None, {s.get_inputs()[0].name: x})[0]\n\
y.astype('<f4').tofile(sys.argv[3])\n";
    let run = Command::new(python())
        .args(["-c", script])
        .arg(model)
        .arg(fixtures().join(format!("{name}.input.f32")))
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "onnxruntime: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    Tensor::from_slice(&read_f32(&out)).view([4, 10])
}

#[test]
fn pruned_models_export_to_onnx_that_onnxruntime_runs_alike() {
    let data = fashion_mnist();
    let dir = tempfile::tempdir().unwrap();
    for name in ["resblock", "separable", "branches", "cnn_bn", "windows"] {
        let net = load(name);
        // The dense model round-trips first.
        let dense = dir.path().join(format!("{name}-dense.onnx"));
        autoprune::onnx::export(&net, &dense).unwrap();
        let reference = tch::no_grad(|| net.forward_t(&reference_input(name), false));
        let diff = max_abs_diff(&onnxruntime(&dense, name), &reference);
        assert!(diff <= 1e-4, "{name} dense: {diff}");
        for granularity in [Granularity::Channel, Granularity::Unstructured] {
            let mut evaluator = Evaluator::new(&net, &data, eval_config(granularity)).unwrap();
            let keeps = allocate(
                Method::Random,
                &evaluator.wall(Path::new("env")).unwrap(),
                evaluator.costs(),
                Signals::default(),
                7,
            );
            assert!(keeps.iter().any(|&k| k < 0.9), "{name}: {keeps:?}");
            let masked = evaluator.apply(&keeps).unwrap().duplicate();
            let expected = tch::no_grad(|| masked.forward_t(&reference_input(name), false));
            let pruned = if granularity == Granularity::Channel {
                let slimmed = slim(&masked, evaluator.masker(), &keeps).unwrap();
                assert!(
                    slimmed.graph().total_params() < net.graph().total_params(),
                    "{name}: slimming removes channels"
                );
                slimmed
            } else {
                masked
            };
            let path = dir.path().join(format!("{name}-{granularity:?}.onnx"));
            autoprune::onnx::export(&pruned, &path).unwrap();
            let diff = max_abs_diff(&onnxruntime(&path, name), &expected);
            assert!(diff <= 1e-4, "{name} {granularity:?}: {diff}");
            // And the pruned file imports back to the same model.
            let again = autoprune::onnx::load_net(
                autoprune::onnx::import(&path).unwrap(),
                Device::Cpu,
                &path,
            )
            .unwrap();
            let back = tch::no_grad(|| again.forward_t(&reference_input(name), false));
            assert!(max_abs_diff(&back, &expected) <= 1e-4, "{name} reimport");
        }
    }
}

fn env_file(dir: &Path, model: &Path, granularity: &str) -> PathBuf {
    let target = if granularity == "channel" {
        "{ metric = \"flops\", keep = 0.5 }"
    } else {
        "{ metric = \"params\", keep = 0.2 }"
    };
    let criterion = if granularity == "channel" {
        "l1"
    } else {
        "magnitude"
    };
    let text = format!(
        "name = \"onnx-test\"\n\n[model]\narch = \"onnx\"\npath = \"{}\"\n\n[data]\ndataset = \"fashion-mnist\"\ndir = \"data/fashion-mnist\"\nval_size = 1000\n\n[prune]\ngranularity = \"{granularity}\"\ncriterion = \"{criterion}\"\ntarget = {target}\nkeep_bounds = [0.05, 1.0]\n\n[reward]\nkind = \"accuracy\"\nfinetune_steps = 0\n",
        model.display()
    );
    let path = dir.join(format!("onnx-{granularity}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn unsupported_op_and_truncated_files_give_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_file(dir.path(), &fixtures().join("unsupported.onnx"), "channel");
    let out = bin().args(["graph", "--env"]).arg(&env).output().unwrap();
    let line = one_error_line(&out);
    assert!(line.contains("LeakyRelu"), "{line}");
    assert!(line.contains("node `node_leaky_relu`"), "{line}");
    // A truncated model file.
    let bytes = std::fs::read(fixtures().join("cnn_bn_inline.onnx")).unwrap();
    let cut = dir.path().join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let env = env_file(dir.path(), &cut, "channel");
    let line = one_error_line(&bin().args(["graph", "--env"]).arg(&env).output().unwrap());
    assert!(line.contains("cut.onnx"), "{line}");
    assert!(line.contains("truncated"), "{line}");
    // A truncated external data file.
    let model = dir.path().join("ext.onnx");
    std::fs::copy(fixtures().join("cnn_bn.onnx"), &model).unwrap();
    let data = std::fs::read(fixtures().join("cnn_bn.onnx.data")).unwrap();
    std::fs::write(
        dir.path().join("cnn_bn.onnx.data"),
        &data[..data.len() - 100],
    )
    .unwrap();
    let env = env_file(dir.path(), &model, "channel");
    let line = one_error_line(&bin().args(["graph", "--env"]).arg(&env).output().unwrap());
    assert!(line.contains("cnn_bn.onnx.data"), "{line}");
    assert!(line.contains("truncated"), "{line}");
    // A model file named for a zoo model is a mistake, not ignored.
    let source = repo().join("envs/fmnist-vgg.toml");
    let env = dir.path().join("vgg-with-path.toml");
    std::fs::write(
        &env,
        crate::common::edited(&source, &[("model.path", "\"model.onnx\"")]),
    )
    .unwrap();
    let line = one_error_line(&bin().args(["graph", "--env"]).arg(&env).output().unwrap());
    assert!(line.contains("model.path"), "{line}");
}

#[test]
fn search_runs_on_an_imported_model_with_every_agent() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "resblock",
            "channel",
            ["ddpg", "ppo", "evolution", "random", "gnn"],
        ),
        (
            "cnn_bn",
            "unstructured",
            ["ddpg", "ppo", "evolution", "random", "gnn"],
        ),
    ];
    for (model, granularity, agents) in cases {
        let env = env_file(
            dir.path(),
            &fixtures().join(format!("{model}.onnx")),
            granularity,
        );
        for agent in agents {
            let logdir = dir.path().join(format!("{model}-{agent}"));
            let out = bin()
                .args(["search", "--config", "configs/random.toml", "--env"])
                .arg(&env)
                .args(["--agent", agent, "--episodes", "4", "--logdir"])
                .arg(&logdir)
                .args(["--threads", "1", "--json"])
                .output()
                .unwrap();
            let result = success_json(&out);
            assert_eq!(crate::common::records_len(&logdir), 4, "{model} {agent}");
            let kept = if granularity == "channel" {
                result["flops_kept"].as_f64().unwrap()
            } else {
                result["params_kept"].as_f64().unwrap()
            };
            let budget = if granularity == "channel" { 0.5 } else { 0.2 };
            assert!(kept <= budget + 1e-9, "{model} {agent}: kept {kept}");
            assert!(logdir.join("policy.json").is_file());
        }
        // The searched policy applies and exports to ONNX.
        let pruned = dir.path().join(format!("{model}-pruned.onnx"));
        let out = bin()
            .args(["apply", "--env"])
            .arg(&env)
            .arg("--policy")
            .arg(dir.path().join(format!("{model}-random/policy.json")))
            .arg("--save")
            .arg(&pruned)
            .args(["--json"])
            .output()
            .unwrap();
        success_json(&out);
        assert!(autoprune::onnx::import(&pruned).is_ok());
    }
}

#[test]
fn matmul_plus_a_constant_imports_as_a_linear_layer() {
    use prost::Message;
    use tract_onnx::pb;
    let tensor = |name: &str, dims: Vec<i64>, values: &[f32]| pb::TensorProto {
        name: name.into(),
        dims,
        data_type: 1,
        float_data: values.to_vec(),
        ..Default::default()
    };
    let node = |op: &str, inputs: &[&str], output: &str| pb::NodeProto {
        op_type: op.into(),
        name: output.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    };
    let value = |name: &str, dims: &[i64]| {
        use pb::tensor_shape_proto::{dimension::Value, Dimension};
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: 1,
                    shape: Some(pb::TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|&d| Dimension {
                                value: Some(Value::DimValue(d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    // y = relu(x W + b), W stored [in = 2, out = 3] as MatMul expects, then an Identity.
    let w = [1.0, -2.0, 0.5, 3.0, 1.0, -1.0];
    let b = [0.1, 0.2, -5.0];
    let model = pb::ModelProto {
        ir_version: 8,
        graph: Some(pb::GraphProto {
            node: vec![
                node("MatMul", &["x", "fc.weight"], "mm"),
                node("Add", &["mm", "fc.bias"], "sum"),
                node("Relu", &["sum"], "act"),
                node("Identity", &["act"], "y"),
            ],
            initializer: vec![
                tensor("fc.weight", vec![2, 3], &w),
                tensor("fc.bias", vec![1, 3], &b),
            ],
            input: vec![value("x", &[1, 2])],
            output: vec![value("y", &[1, 3])],
            ..Default::default()
        }),
        ..Default::default()
    };
    let path = Path::new("matmul.onnx");
    let imported = autoprune::onnx::import_bytes(&model.encode_to_vec(), path).unwrap();
    let ops: Vec<&str> = imported
        .graph
        .order()
        .iter()
        .map(|&i| imported.graph.node(i).op.type_name())
        .collect();
    assert_eq!(ops, ["input", "linear", "relu", "output"]);
    let net = autoprune::onnx::load_net(imported, Device::Cpu, path).unwrap();
    let x = Tensor::from_slice(&[2.0f32, 1.0]).view([1, 2]);
    let y = Vec::<f32>::try_from(net.forward_t(&x, false).view([-1])).unwrap();
    // x W = [2 + 3, -4 + 1, 1 - 1] = [5, -3, 0]; + b = [5.1, -2.8, -5]; relu.
    let expected = [5.1f32, 0.0, 0.0];
    for (a, e) in y.iter().zip(expected) {
        assert!((a - e).abs() < 1e-6, "{y:?}");
    }
}

#[test]
fn a_run_refuses_to_resume_on_other_external_weights() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("cnn_bn.onnx");
    std::fs::copy(fixtures().join("cnn_bn.onnx"), &model).unwrap();
    let data = dir.path().join("cnn_bn.onnx.data");
    std::fs::copy(fixtures().join("cnn_bn.onnx.data"), &data).unwrap();
    let env = env_file(dir.path(), &model, "unstructured");
    let logdir = dir.path().join("run");
    let search = |extra: &[&str]| {
        let mut c = bin();
        c.args(["search"])
            .args(extra)
            .args(["--threads", "1", "--json"]);
        c.output().unwrap()
    };
    let first = search(&[
        "--config",
        "configs/random.toml",
        "--env",
        env.to_str().unwrap(),
        "--episodes",
        "2",
        "--logdir",
        logdir.to_str().unwrap(),
    ]);
    success_json(&first);
    // The graph file stays the same; one weight in the data file changes.
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[40] ^= 0x10;
    std::fs::write(&data, bytes).unwrap();
    let resumed = search(&["--resume", logdir.to_str().unwrap(), "--episodes", "3"]);
    let line = one_error_line(&resumed);
    assert!(line.contains("weights"), "{line}");
    assert_eq!(crate::common::records_len(&logdir), 2, "nothing written");
}
