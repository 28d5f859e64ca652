//! Transformers in the graph: a GPT built by the zoo against the same network written
//! directly with tch, hand-counted params and FLOPs, the groups of a block, heads pruned
//! whole, and the text corpus.

use crate::common;
use autoprune::graph::{ModelGraph, Op};
use autoprune::model::zoo::{gpt, GptShape};
use autoprune::model::GraphNet;
use autoprune::prune::{CostModel, Granularity, Importance, Masker};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// The stated config of the hand counts below.
const SMALL: GptShape = GptShape {
    vocab: 256,
    context: 16,
    layers: 2,
    heads: 2,
    width: 32,
    mlp_ratio: 4,
};

/// The GPT written directly with tch (attention by hand, not libtorch's fused kernel).
fn reference(vars: &HashMap<String, Tensor>, ids: &Tensor, shape: &GptShape) -> Tensor {
    let v = |name: &str| &vars[name];
    let (n, t) = (ids.size()[0], ids.size()[1]);
    let (w, h) = (shape.width as i64, shape.heads as i64);
    let d = w / h;
    let ln = |x: &Tensor, p: &str| {
        x.layer_norm(
            [w],
            Some(v(&format!("{p}.weight"))),
            Some(v(&format!("{p}.bias"))),
            1e-5,
            false,
        )
    };
    let lin =
        |x: &Tensor, p: &str| x.linear(v(&format!("{p}.weight")), Some(v(&format!("{p}.bias"))));
    let mut x = v("wte.weight")
        .index_select(0, &ids.flatten(0, -1))
        .view([n, t, w])
        + v("wpe.weight").narrow(0, 0, t);
    let future = Tensor::ones([t, t], (Kind::Bool, Device::Cpu)).triu(1);
    for l in 0..shape.layers {
        let p = format!("h.{l}");
        let a = ln(&x, &format!("{p}.ln_1"));
        let heads = |y: Tensor| y.view([n, t, h, d]).transpose(1, 2);
        let q = heads(lin(&a, &format!("{p}.attn.q")));
        let k = heads(lin(&a, &format!("{p}.attn.k")));
        let vv = heads(lin(&a, &format!("{p}.attn.v")));
        let scores = q.matmul(&k.transpose(-2, -1)) / (d as f64).sqrt();
        let scores = scores.masked_fill(&future, f64::NEG_INFINITY);
        let att = scores
            .softmax(-1, Kind::Float)
            .matmul(&vv)
            .transpose(1, 2)
            .reshape([n, t, w]);
        x = &x + lin(&att, &format!("{p}.attn.c_proj"));
        let m = ln(&x, &format!("{p}.ln_2"));
        let m = lin(&m, &format!("{p}.mlp.c_fc")).gelu("tanh");
        x = &x + lin(&m, &format!("{p}.mlp.c_proj"));
    }
    ln(&x, "ln_f").linear::<&Tensor>(v("wte.weight"), None)
}

fn tokens(n: i64, t: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randint(256, [n, t], (Kind::Int64, Device::Cpu))
}

/// Every parameter moved off its initial value, so a test cannot pass on zeros or ones.
fn randomise(net: &GraphNet) {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(11);
    for (_, var) in net.var_store().variables() {
        let noise = Tensor::randn(var.size(), (Kind::Float, Device::Cpu)) * 0.3;
        var.shallow_clone().copy_(&(&var + noise));
    }
}

#[test]
fn gpt_in_the_graph_matches_gpt_written_in_tch() {
    let graph = gpt(&SMALL).unwrap();
    let net = GraphNet::new(graph, Device::Cpu);
    randomise(&net);
    let ids = tokens(3, 16, 1);
    let ours = tch::no_grad(|| net.forward_t(&ids, false));
    let theirs = tch::no_grad(|| reference(&net.var_store().variables(), &ids, &SMALL));
    assert_eq!(ours.size(), vec![3, 16, 256]);
    let diff = f64::try_from((&ours - &theirs).abs().max()).unwrap();
    let scale = f64::try_from(theirs.abs().max()).unwrap();
    assert!(scale > 1.0, "logits are not trivial: {scale}");
    assert!(diff < 1e-5, "largest difference {diff}");
    // Causal: the first position's logits do not depend on later tokens.
    let changed = ids.copy();
    let _ = changed.narrow(1, 8, 8).fill_(7);
    let other = tch::no_grad(|| net.forward_t(&changed, false));
    let early = f64::try_from((&ours - &other).narrow(1, 0, 8).abs().max()).unwrap();
    let late = f64::try_from((&ours - &other).narrow(1, 8, 8).abs().max()).unwrap();
    assert_eq!(early, 0.0);
    assert!(late > 1e-3);
}

#[test]
fn gpt_params_and_flops_match_the_hand_count() {
    // V = 256, T = 16, L = 2, H = 2, W = 32, MLP 4W = 128.
    // wte 256·32 = 8192; wpe 16·32 = 512; per block: ln_1 64, q/k/v 3·(32·32 + 32) = 3168,
    // c_proj 1056, ln_2 64, c_fc 32·128 + 128 = 4224, mlp c_proj 128·32 + 32 = 4128
    // (12,704); ln_f 64; the LM head is tied (0).
    let graph = gpt(&SMALL).unwrap();
    assert_eq!(graph.total_params(), 8192 + 512 + 2 * 12_704 + 64);
    // Per sequence of 16 tokens: q/k/v 3·32·32·16 = 49,152; attention 2·16²·32 = 16,384;
    // c_proj 32·32·16 = 16,384; c_fc and mlp c_proj 32·128·16 = 65,536 each (212,992 per
    // block); LM head 256·32·16 = 131,072.
    assert_eq!(graph.total_flops(), 2 * 212_992 + 131_072);
    let attention = graph.find("h.0.attn.attention").unwrap();
    assert_eq!(graph.node_flops(attention), 16_384);
    assert_eq!(graph.node(attention).out_shape, vec![32, 16]);
    assert_eq!(graph.output_shape(), &vec![256, 16]);
}

fn names(graph: &ModelGraph, nodes: &[petgraph::graph::NodeIndex]) -> Vec<String> {
    nodes.iter().map(|&n| graph.node(n).name.clone()).collect()
}

#[test]
fn a_block_has_a_head_group_and_a_neuron_group() {
    let graph = gpt(&SMALL).unwrap();
    let groups = graph.prunable_groups();
    assert_eq!(groups.len(), 4, "two groups per block");
    let heads = &groups[0];
    assert_eq!(heads.name, "h.0.attn.q");
    assert_eq!(
        names(&graph, &heads.producers),
        ["h.0.attn.q", "h.0.attn.k", "h.0.attn.v"]
    );
    assert_eq!(names(&graph, &heads.members), ["h.0.attn.attention"]);
    let consumers: Vec<_> = heads.consumers.iter().map(|c| c.node).collect();
    assert_eq!(names(&graph, &consumers), ["h.0.attn.c_proj"]);
    assert_eq!((heads.channels, heads.block, heads.units()), (32, 16, 2));
    let neurons = &groups[1];
    assert_eq!(names(&graph, &neurons.producers), ["h.0.mlp.c_fc"]);
    let consumers: Vec<_> = neurons.consumers.iter().map(|c| c.node).collect();
    assert_eq!(names(&graph, &consumers), ["h.0.mlp.c_proj"]);
    assert_eq!((neurons.channels, neurons.block), (128, 1));
    assert_eq!(groups[2].name, "h.1.attn.q");
    // The projections into the residual stream keep their outputs: the stream is pinned.
    let pinned: Vec<_> = graph.pinned().iter().map(|p| p.node).collect();
    assert_eq!(
        names(&graph, &pinned),
        [
            "h.0.attn.c_proj",
            "h.0.mlp.c_proj",
            "h.1.attn.c_proj",
            "h.1.mlp.c_proj"
        ]
    );
    assert!(graph
        .pinned()
        .iter()
        .all(|p| p.reason == "the residual stream of a transformer"));
    // Unstructured pruning: one unit per linear layer (six per block), none for the
    // embeddings or the tied head.
    let costs = CostModel::new(&graph, Granularity::Unstructured);
    assert_eq!(costs.units().len(), 12);
    assert!(costs.units().iter().all(|u| u.name.starts_with("h.")));
}

#[test]
fn heads_are_pruned_whole_and_slimming_matches_masking() {
    let graph = gpt(&GptShape {
        heads: 4,
        width: 32,
        ..SMALL
    })
    .unwrap();
    let net = GraphNet::new(graph.clone(), Device::Cpu);
    randomise(&net);
    let costs = CostModel::new(&graph, Granularity::Channel);
    // Units: heads (4 of 8 channels) and MLP neurons, per block.
    assert_eq!(costs.units().len(), 4);
    let keeps = [0.5, 0.3, 0.8, 0.6];
    assert_eq!(costs.unit_kept(0, 0.5), 16, "two whole heads");
    assert_eq!(costs.unit_kept(0, 0.3), 8, "0.3 of 4 heads rounds to 1");
    assert_eq!(costs.unit_kept(2, 0.8), 24, "0.8 of 4 heads rounds to 3");
    let train = autoprune::data::Split {
        images: tokens(8, 16, 2),
        labels: tokens(8, 16, 3),
    };
    let importance = Importance::compute(&net, autoprune::prune::Criterion::L1, &train, 0).unwrap();
    let masker = Masker::new(&costs, &importance);
    let kept: Vec<i64> = Vec::try_from(&masker.kept_channels(0, 0.5)).unwrap();
    assert_eq!(kept.len(), 16);
    for pair in kept.chunks(8) {
        let head = pair[0] / 8;
        assert!(
            pair.iter().zip(0..).all(|(&c, i)| c == head * 8 + i),
            "{kept:?}"
        );
    }
    let masked = net.duplicate();
    {
        let vars = masked.var_store().variables();
        let _guard = tch::no_grad_guard();
        for m in masker.masks(&keeps) {
            let t = &vars[&m.tensor];
            t.shallow_clone().copy_(&(t * &m.mask));
        }
    }
    let slim = autoprune::prune::slim(&masked, &masker, &keeps).unwrap();
    let attention = slim.graph().find("h.0.attn.attention").unwrap();
    assert!(matches!(
        slim.graph().node(attention).op,
        Op::Attention {
            heads: 2,
            head_dim: 8,
            ..
        }
    ));
    let ids = tokens(2, 16, 4);
    let a = tch::no_grad(|| masked.forward_t(&ids, false));
    let b = tch::no_grad(|| slim.forward_t(&ids, false));
    let diff = f64::try_from((&a - &b).abs().max()).unwrap();
    assert!(diff < 1e-4, "slimmed and masked differ by {diff}");
    let counts = costs.counts(&keeps);
    assert_eq!(counts.params, slim.graph().total_params());
    assert_eq!(counts.flops, slim.graph().total_flops());
}

#[test]
fn the_corpus_is_split_by_play_into_byte_windows() {
    let dir = common::repo().join("data/shakespeare");
    let options = autoprune::data::DataOptions {
        kind: autoprune::data::DatasetKind::Text,
        dir: dir.clone(),
        val_size: 5000,
        seed: 0,
        context: 64,
    };
    let data = autoprune::data::load(&options, Device::Cpu).unwrap();
    assert_eq!((data.shape.clone(), data.classes), (vec![64], 256));
    let val = std::fs::read(dir.join("val.txt")).unwrap();
    // Validation windows do not overlap: one per 64 bytes, the last one's next byte inside.
    assert_eq!(data.val.len(), (val.len() - 64).div_ceil(64));
    let first: Vec<i64> = Vec::try_from(data.val.images.get(0)).unwrap();
    assert_eq!(
        first,
        val[..64].iter().map(|&b| i64::from(b)).collect::<Vec<_>>()
    );
    // Labels are the next byte at every position.
    let inputs = data.train.images.narrow(1, 1, 63);
    let labels = data.train.labels.narrow(1, 0, 63);
    assert!(inputs.equal(&labels));
    let second: Vec<i64> = Vec::try_from(data.train.images.get(1)).unwrap();
    let train = std::fs::read(dir.join("train.txt")).unwrap();
    let at_32: Vec<i64> = train[32..96].iter().map(|&b| i64::from(b)).collect();
    assert_eq!(
        second, at_32,
        "training windows start every context / 2 bytes"
    );
    // No play is in two splits.
    let splits: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("splits.json")).unwrap()).unwrap();
    let plays = |k: &str| -> Vec<String> { serde_json::from_value(splits[k].clone()).unwrap() };
    let (train, val, test) = (plays("train"), plays("val"), plays("test"));
    assert_eq!(train.len() + val.len() + test.len(), 38);
    assert!(val.iter().chain(&test).all(|p| !train.contains(p)));
    assert!(val.iter().all(|p| !test.contains(p)));
}

/// A tiny GPT env on a slice of the corpus, pretrained in `dir`.
pub(crate) fn tiny_gpt_env(dir: &std::path::Path) -> std::path::PathBuf {
    let corpus = common::repo().join("data/shakespeare");
    let text = dir.join("text");
    std::fs::create_dir_all(&text).unwrap();
    for (name, bytes) in [
        ("train.txt", 60_000),
        ("val.txt", 6_000),
        ("test.txt", 6_000),
    ] {
        let all = std::fs::read(corpus.join(name)).unwrap();
        std::fs::write(text.join(name), &all[..bytes]).unwrap();
    }
    let env = common::edited(
        &common::repo().join("envs/shakespeare-gpt.toml"),
        &[
            ("model.layers", "2"),
            ("model.heads", "4"),
            ("model.width", "32"),
            (
                "model.checkpoint",
                &common::literal(&dir.join("gpt.safetensors")),
            ),
            ("data.dir", &common::literal(&text)),
            ("data.context", "32"),
            ("train.epochs", "1"),
        ],
    );
    let path = dir.join("env.toml");
    std::fs::write(&path, env).unwrap();
    let out = common::run(&["pretrain", "--env", path.to_str().unwrap(), "--json"]);
    let json = common::success_json(&out);
    let (val, test) = (&json["val_perplexity"], &json["test_perplexity"]);
    assert!(
        val.as_f64().unwrap() > 1.0 && val.as_f64().unwrap() < 256.0,
        "{json}"
    );
    assert!(test.as_f64().unwrap() > 1.0, "{json}");
    path
}

/// A short evolution search (population 4, 40 validation windows) of `env` in `dir`: the
/// policy file and the search's JSON result.
pub(crate) fn evolution_search(
    dir: &std::path::Path,
    env: &str,
    episodes: usize,
) -> (std::path::PathBuf, serde_json::Value) {
    let config = common::edited(
        &common::repo().join("configs/evolution.toml"),
        &[
            ("env", &common::literal(std::path::Path::new(env))),
            ("episodes", &episodes.to_string()),
            ("eval_samples", "40"),
            ("evolution.population", "4"),
            ("evolution.top_k", "2"),
        ],
    );
    let config_path = dir.join("search.toml");
    std::fs::write(&config_path, config).unwrap();
    let policy = dir.join("policy.json");
    let out = common::run(&[
        "search",
        "--config",
        config_path.to_str().unwrap(),
        "--logdir",
        dir.join("runs").to_str().unwrap(),
        "--out",
        policy.to_str().unwrap(),
        "--json",
    ]);
    (policy, common::success_json(&out))
}

#[test]
fn a_gpt_env_prunes_searches_and_saves_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let env = tiny_gpt_env(dir.path());
    let env = env.to_str().unwrap();
    // The graph names heads.
    let out = common::run(&["graph", "--env", env]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("4 heads of 8 channels"), "{text}");
    // Uniform allocation at half the FLOPs: perplexity on validation and test.
    let out = common::run(&["baseline", "--env", env, "--method", "uniform", "--json"]);
    let uniform = common::success_json(&out);
    let ppl = uniform["perplexity"].as_f64().unwrap();
    assert!(ppl > 1.0, "{uniform}");
    assert!(uniform["test_perplexity"].as_f64().unwrap() > 1.0);
    let loss = uniform["loss"].as_f64().unwrap();
    assert!((uniform["reward"].as_f64().unwrap() - (-loss).exp()).abs() < 1e-9);
    assert!(
        uniform["flops_kept"].as_f64().unwrap() <= 0.5 + 1e-9,
        "{uniform}"
    );
    // A short evolution search starts from the heuristics, so it is never worse.
    let (policy, found) = evolution_search(dir.path(), env, 12);
    assert!(found["reward"].as_f64().unwrap() >= uniform["reward"].as_f64().unwrap() - 1e-9);
    assert!(found["perplexity"].as_f64().is_some(), "{found}");
    // The searched policy, slimmed: fewer heads or neurons, the same perplexity as masked.
    let saved = dir.path().join("slim.safetensors");
    let out = common::run(&[
        "apply",
        "--env",
        env,
        "--policy",
        policy.to_str().unwrap(),
        "--save",
        saved.to_str().unwrap(),
        "--json",
    ]);
    let applied = common::success_json(&out);
    assert!((applied["reward"].as_f64().unwrap() - found["reward"].as_f64().unwrap()).abs() < 1e-6);
    assert!(saved.is_file());
    let sidecar = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".json") && p != &policy)
        .expect("the slimmed graph beside the weights");
    let graph: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sidecar).unwrap()).unwrap();
    let flops = graph["total_flops"].as_u64().unwrap();
    assert_eq!(flops, applied["flops"].as_u64().unwrap());
}

#[test]
fn every_allocator_agent_and_granularity_handles_a_gpt() {
    let dir = tempfile::tempdir().unwrap();
    let env = tiny_gpt_env(dir.path());
    let env = env.to_str().unwrap();
    for granularity in ["unstructured", "channel", "2:4"] {
        for method in ["uniform", "global", "lamp", "erk", "random"] {
            let out = common::run(&[
                "baseline",
                "--env",
                env,
                "--method",
                method,
                "--granularity",
                granularity,
                "--json",
            ]);
            let score = common::success_json(&out);
            let kept = score["flops_kept"].as_f64().unwrap();
            assert!(kept <= 0.5 + 1e-9, "{granularity} {method}: {score}");
            assert!(score["perplexity"].as_f64().unwrap() > 1.0);
        }
    }
    for config in ["amc-ddpg", "ppo", "evolution", "random", "gnn"] {
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
            score["flops_kept"].as_f64().unwrap() <= 0.5 + 1e-9,
            "{config}: {score}"
        );
        assert!(
            score["test_perplexity"].as_f64().unwrap() > 1.0,
            "{config}: {score}"
        );
    }
    // The shipped graph agent, trained on CNNs, reads a GPT's heads and neurons zero-shot.
    let out = common::run(&[
        "transfer",
        "--agent",
        "policies/gnn-fmnist.safetensors",
        "--env",
        env,
        "--json",
    ]);
    let score = common::success_json(&out);
    assert_eq!(score["layers"].as_array().unwrap().len(), 4);
    assert!(score["flops_kept"].as_f64().unwrap() <= 0.5 + 1e-9);
}

/// Runs an ONNX file with ONNX Runtime on `input` (int64 token ids or float images).
fn onnxruntime(model: &std::path::Path, input: &Tensor) -> Tensor {
    let dir = model.parent().unwrap();
    let (data, kind) = if input.kind() == Kind::Int64 {
        (input.to_kind(Kind::Float), "int64")
    } else {
        (input.shallow_clone(), "float32")
    };
    let values: Vec<f32> = Vec::try_from(&data.flatten(0, -1)).unwrap();
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("input.f32"), bytes).unwrap();
    let shape: Vec<String> = input.size().iter().map(|d| d.to_string()).collect();
    let script = "import sys, numpy as np, onnxruntime as ort\n\
s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n\
shape = [int(d) for d in sys.argv[4].split(',')]\n\
x = np.fromfile(sys.argv[2], dtype='<f4').reshape(shape).astype(sys.argv[3])\n\
y = s.run(None, {s.get_inputs()[0].name: x})[0]\n\
y.astype('<f4').tofile(sys.argv[2] + '.out')\n\
print(','.join(str(d) for d in y.shape))\n";
    let run = std::process::Command::new(common::python())
        .args(["-c", script])
        .arg(model)
        .arg(dir.join("input.f32"))
        .arg(kind)
        .arg(shape.join(","))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "onnxruntime: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let dims: Vec<i64> = String::from_utf8_lossy(&run.stdout)
        .trim()
        .split(',')
        .map(|d| d.parse().unwrap())
        .collect();
    Tensor::from_slice(&common::read_f32(&dir.join("input.f32.out"))).view(dims.as_slice())
}

/// `net` channel-pruned at `keeps` (heads and neurons), slimmed.
fn slimmed(net: &GraphNet, keeps: &[f64], train: &autoprune::data::Split) -> GraphNet {
    let costs = CostModel::new(net.graph(), Granularity::Channel);
    let importance = Importance::compute(net, autoprune::prune::Criterion::L1, train, 0).unwrap();
    let masker = Masker::new(&costs, &importance);
    let masked = net.duplicate();
    let vars = masked.var_store().variables();
    tch::no_grad(|| {
        for m in masker.masks(keeps) {
            let t = &vars[&m.tensor];
            t.shallow_clone().copy_(&(t * &m.mask));
        }
    });
    autoprune::prune::slim(&masked, &masker, keeps).unwrap()
}

#[test]
fn slimmed_gpt_and_vit_export_to_onnx_that_onnxruntime_runs_alike() {
    let dir = tempfile::tempdir().unwrap();
    // A GPT with half its heads and a third of its neurons.
    let net = GraphNet::new(gpt(&SMALL).unwrap(), Device::Cpu);
    randomise(&net);
    let train = autoprune::data::Split {
        images: tokens(8, 16, 2),
        labels: tokens(8, 16, 3),
    };
    let slim = slimmed(&net, &[0.5, 0.3, 0.5, 0.7], &train);
    let path = dir.path().join("gpt.onnx");
    autoprune::onnx::export(&slim, &path).unwrap();
    let ids = tokens(3, 16, 5);
    let ours = tch::no_grad(|| slim.forward_t(&ids, false));
    let theirs = onnxruntime(&path, &ids);
    assert_eq!(theirs.size(), vec![3, 16, 256]);
    let diff = f64::try_from((&ours - &theirs).abs().max()).unwrap();
    assert!(diff < 1e-4, "GPT logits differ by {diff}");
    // A ViT on 28x28 images.
    let vit_shape = autoprune::model::zoo::VitShape {
        patch: 7,
        layers: 2,
        heads: 2,
        width: 16,
        mlp_ratio: 2,
    };
    let net = GraphNet::new(
        autoprune::model::zoo::vit(&vec![1, 28, 28], 10, &vit_shape).unwrap(),
        Device::Cpu,
    );
    randomise(&net);
    tch::manual_seed(6);
    let images = Tensor::randn([4, 1, 28, 28], (Kind::Float, Device::Cpu));
    let train = autoprune::data::Split {
        images: images.shallow_clone(),
        labels: Tensor::from_slice(&[1i64, 2, 3, 4]),
    };
    let slim = slimmed(&net, &[0.5, 0.5, 1.0, 0.25], &train);
    let path = dir.path().join("vit.onnx");
    autoprune::onnx::export(&slim, &path).unwrap();
    let ours = tch::no_grad(|| slim.forward_t(&images, false));
    let theirs = onnxruntime(&path, &images);
    assert_eq!(theirs.size(), vec![4, 10]);
    let diff = f64::try_from((&ours - &theirs).abs().max()).unwrap();
    assert!(diff < 1e-4, "ViT logits differ by {diff}");
}
