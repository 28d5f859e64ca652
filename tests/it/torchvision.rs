//! Real architectures: torchvision's classification models, built at test time with random
//! weights (tests/fixtures/export_torchvision.py), exported by PyTorch's exporter with
//! `optimize=True` and `optimize=False`, import with PyTorch's outputs; their prunable groups
//! are the ones each family should have; a uniform channel policy at half the FLOPs slims and
//! exports to ONNX that ONNX Runtime runs like autoprune's masked model, and so does an
//! unstructured one.

use crate::common::{export_fixtures, python, read_f32};
use autoprune::data::Split;
use autoprune::graph::{ModelGraph, Op};
use autoprune::model::GraphNet;
use autoprune::prune::{
    allocate, slim, ActionWall, Budget, CostModel, Criterion, Granularity, Importance, Masker,
    Method, Metric, Signals,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use tch::{Device, Tensor};

/// The models, and the classes and image side they are exported with.
const MODELS: [&str; 11] = [
    "resnet18",
    "resnet50",
    "resnext50_32x4d",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "squeezenet1_0",
    "googlenet",
    "densenet121",
    "shufflenet_v2_x1_0",
    "convnext_tiny",
];
const SETTINGS: [&str; 2] = ["opt", "raw"];
const CLASSES: i64 = 10;
const SIDE: i64 = 64;

fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let mut args = vec![SIDE.to_string(), CLASSES.to_string()];
        args.extend(MODELS.iter().map(|m| m.to_string()));
        export_fixtures("export_torchvision.py", "tv", &args)
    })
}

fn input(model: &str) -> Tensor {
    Tensor::from_slice(&read_f32(&fixtures().join(format!("{model}.input.f32"))))
        .view([2, 3, SIDE, SIDE])
}

fn load(model: &str, setting: &str) -> GraphNet {
    let path = fixtures().join(format!("{model}-{setting}.onnx"));
    let imported =
        autoprune::onnx::import(&path).unwrap_or_else(|e| panic!("{model}-{setting}: {}", e));
    autoprune::onnx::load_net(imported, Device::Cpu, &path).unwrap()
}

/// Largest difference, relative to the reference's largest magnitude where that exceeds 1.
fn difference(got: &Tensor, expected: &Tensor) -> f64 {
    let scale = f64::try_from(expected.abs().max()).unwrap().max(1.0);
    f64::try_from((got - expected).abs().max()).unwrap() / scale
}

#[test]
fn torchvision_models_import_with_pytorchs_outputs() {
    for model in MODELS {
        let expected =
            Tensor::from_slice(&read_f32(&fixtures().join(format!("{model}.output.f32"))))
                .view([2, CLASSES]);
        let published: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join(format!("{model}.json"))).unwrap(),
        )
        .unwrap();
        for setting in SETTINGS {
            let net = load(model, setting);
            let got = tch::no_grad(|| net.forward_t(&input(model), false));
            let diff = difference(&got, &expected);
            assert!(diff <= 1e-4, "{model}-{setting}: difference {diff}");
            // BatchNorm stays a node without the exporter's folding, and is folded with it.
            let norms = net
                .graph()
                .order()
                .iter()
                .filter(|&&i| matches!(net.graph().node(i).op, Op::BatchNorm { .. }))
                .count();
            if setting == "raw" {
                // SqueezeNet has no BatchNorm, ConvNeXt normalises with LayerNorm.
                assert!(
                    norms > 0 || ["squeezenet1_0", "convnext_tiny"].contains(&model),
                    "{model}-raw keeps its BatchNorm nodes"
                );
                // Unfolded, the graph holds exactly the module's parameters, but for layer
                // scales, which fold into the layer before them.
                assert_eq!(
                    net.graph().total_params() as u64,
                    published["params"].as_u64().unwrap()
                        - published["layer_scale"].as_u64().unwrap(),
                    "{model}"
                );
            } else if !["densenet121", "shufflenet_v2_x1_0"].contains(&model) {
                // DenseNet normalises concatenations, ShuffleNet a branch of a split input:
                // no conv's output can absorb those.
                assert_eq!(norms, 0, "{model}-opt folds BatchNorm into the convs");
            }
        }
    }
}

/// Names of each group's producers and members, sorted, per group.
fn groups(graph: &ModelGraph) -> Vec<Vec<String>> {
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

fn group_of<'a>(groups: &'a [Vec<String>], node: &str) -> Option<&'a Vec<String>> {
    groups.iter().find(|g| g.iter().any(|n| n == node))
}

#[test]
fn each_family_prunes_the_groups_it_should() {
    for setting in SETTINGS {
        // ResNet: the stem and every block's last conv of a stage share the residual stream;
        // each block's inner convs are groups of their own.
        let net = load("resnet18", setting);
        let g = groups(net.graph());
        let stream = group_of(&g, "conv1").expect("the stem is prunable");
        for conv in ["layer1.0.conv2", "layer1.1.conv2"] {
            assert!(stream.contains(&conv.to_string()), "{setting}: {stream:?}");
        }
        assert_eq!(
            group_of(&g, "layer1.0.conv1").map(Vec::len),
            Some(if setting == "raw" { 2 } else { 1 }),
            "{setting}: {g:?}"
        );
        // A downsampling shortcut joins the stage's stream.
        let stage2 = group_of(&g, "layer2.0.downsample.0").expect("shortcut prunable");
        assert!(stage2.contains(&"layer2.1.conv2".to_string()), "{stage2:?}");
        assert_eq!(net.graph().prunable_groups().len(), 4 + 8, "{setting}");

        // ResNeXt: a grouped conv pins the channels on both of its sides; the streams and
        // nothing else stay prunable.
        let net = load("resnext50_32x4d", setting);
        let g = groups(net.graph());
        assert!(group_of(&g, "layer1.0.conv1").is_none(), "{setting}");
        assert!(group_of(&g, "layer1.0.conv2").is_none(), "{setting}");
        assert_eq!(
            g.len(),
            1 + 4,
            "{setting}: the stem's and each stage's stream"
        );

        // MobileNetV2: a depthwise conv prunes with the expansion before it.
        let net = load("mobilenet_v2", setting);
        let g = groups(net.graph());
        let expand = group_of(&g, "features.2.conv.0.0").expect("expansion prunable");
        assert!(
            expand.contains(&"features.2.conv.1.0".to_string()),
            "{setting}: {expand:?}"
        );

        // Squeeze-and-excitation: the gate's second conv scales the channels of the block's
        // depthwise conv, so it prunes with them; its squeeze conv is a group of its own.
        for (model, dw, excite, squeeze) in [
            (
                "mobilenet_v3_small",
                "features.1.block.0.0",
                "features.1.block.1.fc2",
                "features.1.block.1.fc1",
            ),
            (
                "efficientnet_b0",
                "features.1.0.block.0.0",
                "features.1.0.block.1.fc2",
                "features.1.0.block.1.fc1",
            ),
        ] {
            let net = load(model, setting);
            let g = groups(net.graph());
            let gated = group_of(&g, dw).unwrap_or_else(|| panic!("{model}: {g:?}"));
            assert!(
                gated.contains(&excite.to_string()),
                "{model}-{setting}: {gated:?}"
            );
            let squeezed = group_of(&g, squeeze).unwrap_or_else(|| panic!("{model}: {g:?}"));
            assert!(!squeezed.contains(&excite.to_string()), "{model}");
        }

        // Inception and Fire modules: each branch of a Concat is pruned apart.
        let net = load("googlenet", setting);
        let g = groups(net.graph());
        for branch in [
            "inception3a.branch1.conv",
            "inception3a.branch2.1.conv",
            "inception3a.branch3.1.conv",
            "inception3a.branch4.1.conv",
        ] {
            assert!(group_of(&g, branch).is_some(), "{setting}: {branch}");
        }
        let net = load("squeezenet1_0", setting);
        let g = groups(net.graph());
        for conv in ["features.3.expand1x1", "features.3.expand3x3"] {
            assert_eq!(group_of(&g, conv).map(Vec::len), Some(1), "{setting}");
        }
        // The classifier conv's outputs are the logits: never pruned.
        assert!(group_of(&g, "classifier.1").is_none());

        // DenseNet: every layer's new features are a group, each conv reading the
        // concatenation at its own offsets.
        let net = load("densenet121", setting);
        let g = groups(net.graph());
        assert!(group_of(&g, "features.denseblock1.denselayer1.conv2").is_some());
        // The next layer's BatchNorm normalises the concatenation: it carries the first
        // layer's 32 new channels after the block's 64 input channels.
        let graph = net.graph();
        let first = graph
            .prunable_groups()
            .iter()
            .find(|g| graph.node(g.producers[0]).name == "features.denseblock1.denselayer1.conv2")
            .unwrap();
        let norm = graph
            .find("features.denseblock1.denselayer2.norm1")
            .unwrap();
        let at: Vec<usize> = first
            .sliced
            .iter()
            .filter(|u| u.node == norm)
            .map(|u| u.offset)
            .collect();
        assert_eq!(at, [64], "{setting}");
        assert_eq!(first.channels, 32);

        // ShuffleNet: a block's branch prunes inside (its first 1×1 conv with the depthwise
        // conv after it); what the channel shuffle and the split move stays whole.
        let net = load("shufflenet_v2_x1_0", setting);
        let g = groups(net.graph());
        let inner = group_of(&g, "stage2.1.branch2.0").expect("branch prunable");
        assert!(
            inner.contains(&"stage2.1.branch2.3".to_string()),
            "{inner:?}"
        );
        assert!(group_of(&g, "stage2.1.branch2.5").is_none(), "{setting}");
        assert!(group_of(&g, "stage2.0.branch1.2").is_none(), "{setting}");

        // ConvNeXt: LayerNorm normalises over the residual stream's channels, so the stream
        // stays whole; each block's MLP prunes its hidden neurons (4× the width).
        let net = load("convnext_tiny", setting);
        let graph = net.graph();
        let hidden: Vec<usize> = graph.prunable_groups().iter().map(|g| g.channels).collect();
        assert_eq!(
            hidden.len(),
            3 + 3 + 9 + 3,
            "{setting}: one group per block"
        );
        assert!(
            hidden.iter().all(|&c| [384, 768, 1536, 3072].contains(&c)),
            "{hidden:?}"
        );
        // The depthwise convs sit on the stream: never pruned.
        let g = groups(graph);
        assert!(group_of(&g, "features.1.0.block.0").is_none(), "{setting}");
        assert!(group_of(&g, "features.5.8.block.0").is_none(), "{setting}");
    }
}

/// Applies `masks` to a copy of `net` (what the evaluator scores).
fn masked(net: &GraphNet, masker: &Masker, keeps: &[f64]) -> GraphNet {
    let copy = net.duplicate();
    let vars = copy.var_store().variables();
    let _guard = tch::no_grad_guard();
    for m in masker.masks(keeps) {
        let mut t = vars[&m.tensor].shallow_clone();
        let product = &t * &m.mask;
        t.copy_(&product);
    }
    copy
}

fn policy(net: &GraphNet, granularity: Granularity) -> (Masker, Vec<f64>) {
    let graph = net.graph();
    let costs = CostModel::new(graph, granularity);
    let criterion = match granularity {
        Granularity::Channel => Criterion::L1,
        _ => Criterion::Magnitude,
    };
    let metric = match granularity {
        Granularity::Channel => Metric::Flops,
        _ => Metric::Params,
    };
    let split = Split {
        images: Tensor::zeros([1, 3, SIDE, SIDE], (tch::Kind::Float, Device::Cpu)),
        labels: Tensor::zeros([1], (tch::Kind::Int64, Device::Cpu)),
    };
    let importance = Importance::compute(net, criterion, &split, 0).unwrap();
    let masker = Masker::new(&costs, &importance);
    let budget = Budget {
        metric,
        keep: 0.5,
        bounds: [0.05, 1.0],
    };
    let wall = ActionWall::new(&costs, budget, Path::new("test")).unwrap();
    let keeps = allocate(Method::Uniform, &wall, &costs, Signals::default(), 0);
    (masker, keeps)
}

/// BatchNorm statistics re-estimated on a pruned model (what the evaluator does after
/// channel pruning) change where BatchNorm nodes exist, and the logits stay finite.
fn recalibrates(model: &str, masked: &GraphNet) {
    use rand::SeedableRng;
    let copy = masked.duplicate();
    let means = |net: &GraphNet| -> Vec<Tensor> {
        let vars = net.var_store().variables();
        let mut names: Vec<&String> = vars
            .keys()
            .filter(|k| k.ends_with("running_mean"))
            .collect();
        names.sort();
        names.iter().map(|n| vars[*n].copy()).collect()
    };
    let before = means(&copy);
    if before.is_empty() {
        return;
    }
    let split = Split {
        images: Tensor::randn([8, 3, SIDE, SIDE], (tch::Kind::Float, Device::Cpu)),
        labels: Tensor::zeros([8], (tch::Kind::Int64, Device::Cpu)),
    };
    copy.recalibrate_batch_norm(&split, 2, 4, &mut rand::rngs::StdRng::seed_from_u64(0));
    let after = means(&copy);
    let moved = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| f64::try_from((*a - *b).abs().max()).unwrap() > 1e-6)
        .count();
    assert!(
        moved > before.len() / 2,
        "{model}: {moved} of {} moved",
        before.len()
    );
    let logits = tch::no_grad(|| copy.forward_t(&input(model), false));
    assert!(bool::try_from(logits.isfinite().all()).unwrap(), "{model}");
}

#[test]
fn pruned_torchvision_models_export_to_onnx_that_onnxruntime_runs_alike() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    for model in MODELS {
        for setting in SETTINGS {
            let net = load(model, setting);
            for granularity in [Granularity::Channel, Granularity::Unstructured] {
                let (masker, keeps) = policy(&net, granularity);
                let masked = masked(&net, &masker, &keeps);
                let expected = tch::no_grad(|| masked.forward_t(&input(model), false));
                if setting == "raw" && granularity == Granularity::Channel {
                    recalibrates(model, &masked);
                }
                let pruned = if granularity == Granularity::Channel {
                    let slimmed = slim(&masked, &masker, &keeps).unwrap();
                    let (before, after) =
                        (net.graph().total_flops(), slimmed.graph().total_flops());
                    assert!(
                        (after as f64) < 0.6 * before as f64,
                        "{model}-{setting}: slimmed to {after} of {before} FLOPs"
                    );
                    // The slimmed model computes what the masked one does.
                    let got = tch::no_grad(|| slimmed.forward_t(&input(model), false));
                    let diff = difference(&got, &expected);
                    assert!(diff <= 1e-4, "{model}-{setting} slimmed: {diff}");
                    slimmed
                } else {
                    masked
                };
                let path = dir
                    .path()
                    .join(format!("{model}-{setting}-{granularity:?}.onnx"));
                autoprune::onnx::export(&pruned, &path).unwrap();
                expected
                    .contiguous()
                    .view([-1])
                    .to_kind(tch::Kind::Float)
                    .write_npy(path.with_extension("expected.npy"))
                    .unwrap();
                cases.push((path, model));
            }
        }
    }
    // One ONNX Runtime process for every file: the largest relative difference of each.
    let script = r#"
import sys, numpy as np, onnxruntime as ort
for model, inp in zip(sys.argv[1::2], sys.argv[2::2]):
    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    x = np.fromfile(inp, dtype="<f4").reshape(2, 3, 64, 64)
    y = s.run(None, {s.get_inputs()[0].name: x})[0].reshape(-1)
    e = np.load(model[:-5] + ".expected.npy")
    print(float(np.abs(y - e).max() / max(1.0, float(np.abs(e).max()))))
"#;
    let mut run = Command::new(python());
    run.args(["-c", script]);
    for (path, model) in &cases {
        run.arg(path)
            .arg(fixtures().join(format!("{model}.input.f32")));
    }
    let out = run.output().unwrap();
    assert!(
        out.status.success(),
        "onnxruntime: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let diffs: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(diffs.len(), cases.len());
    for ((path, _), diff) in cases.iter().zip(diffs) {
        assert!(diff <= 1e-4, "{}: {diff}", path.display());
    }
}

#[test]
fn graph_says_which_layers_are_pinned_and_why() {
    // ResNeXt's grouped convs pin the convs on both of their sides; the classifier is the
    // output. `graph --model` reads the ONNX file without an env.
    let model = fixtures().join("resnext50_32x4d-opt.onnx");
    let out = crate::common::bin()
        .args(["graph", "--json", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    let json = crate::common::success_json(&out);
    let pinned = json["pinned"].as_array().unwrap();
    let reason = |node: &str| -> String {
        pinned
            .iter()
            .find(|p| p["node"] == node)
            .map(|p| p["reason"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert!(reason("layer1.0.conv1").contains("read by a grouped convolution"));
    assert_eq!(
        pinned
            .iter()
            .find(|p| p["node"] == "layer1.0.conv1")
            .map(|p| p["at"].clone()),
        Some(serde_json::json!("layer1.0.conv2"))
    );
    assert!(reason("layer1.0.conv2").contains("written by a grouped convolution"));
    assert!(reason("fc").contains("output"));
    // Every conv and linear layer is either in a group or pinned.
    let layers = json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| ["conv2d", "linear"].contains(&n["op"]["type"].as_str().unwrap()))
        .count();
    let grouped: usize = json["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["producers"].as_array().unwrap().len())
        .sum();
    assert_eq!(grouped + pinned.len(), layers);
    // The text view lists them too.
    let text = crate::common::bin()
        .args(["graph", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("layer1.0.conv1: read by a grouped convolution (layer1.0.conv2)"),
        "{text}"
    );
}
