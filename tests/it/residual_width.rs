//! A transformer's residual width as one prunable group (`prune.residual_width`): the group
//! the traversal finds in a GPT and a ViT, masked LayerNorms that compute what the slimmed
//! model computes, and the command line (search, apply, save, and what it refuses).

use crate::common;
use crate::transformer::{evolution_search, tiny_gpt_env};
use autoprune::graph::{ModelGraph, Op};
use autoprune::model::zoo::{gpt, vit, GptShape, VitShape};
use autoprune::model::GraphNet;
use autoprune::prune::{CostModel, Criterion, Granularity, Importance, Masker};
use tch::{Device, Tensor};

const SMALL: GptShape = GptShape {
    vocab: 256,
    context: 16,
    layers: 2,
    heads: 2,
    width: 32,
    mlp_ratio: 4,
};

const VIT: VitShape = VitShape {
    patch: 7,
    layers: 2,
    heads: 2,
    width: 16,
    mlp_ratio: 2,
};

fn names(
    graph: &ModelGraph,
    nodes: impl IntoIterator<Item = petgraph::graph::NodeIndex>,
) -> Vec<String> {
    nodes
        .into_iter()
        .map(|n| graph.node(n).name.clone())
        .collect()
}

/// Every parameter moved off its initial value (LayerNorm gains off one, biases off zero).
// Random values come from a local generator, not libtorch's global one, which tests running
// in parallel threads share: the values must not depend on what other tests draw.
fn randomise(net: &GraphNet, seed: i64) {
    use rand::{Rng, SeedableRng};
    let _guard = tch::no_grad_guard();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed as u64);
    let mut variables: Vec<(String, Tensor)> = net.var_store().variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, var) in variables {
        if name.ends_with(".channels") {
            continue;
        }
        // Uniform with the standard deviation 0.3.
        let noise: Vec<f32> = (0..var.numel())
            .map(|_| rng.random_range(-0.52f32..0.52))
            .collect();
        let noise = Tensor::from_slice(&noise).view(var.size().as_slice());
        var.shallow_clone().copy_(&(&var + noise));
    }
}

fn tokens(n: i64, t: i64, seed: i64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed as u64);
    let ids: Vec<i64> = (0..n * t).map(|_| rng.random_range(0..256)).collect();
    Tensor::from_slice(&ids).view([n, t])
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

#[test]
fn the_residual_stream_is_one_group_only_when_asked() {
    let plain = gpt(&SMALL).unwrap();
    assert!(!plain.residual_width());
    let graph = plain.clone().with_residual_width().unwrap();
    assert!(graph.residual_width());
    let groups = graph.prunable_groups();
    assert_eq!(groups.len(), plain.prunable_groups().len() + 1);
    let stream = groups
        .iter()
        .find(|g| g.name == "wte")
        .expect("a group named after wte");
    assert_eq!((stream.channels, stream.block), (32, 1));
    assert_eq!(
        names(&graph, stream.producers.iter().copied()),
        [
            "wte",
            "h.0.attn.c_proj",
            "h.0.mlp.c_proj",
            "h.1.attn.c_proj",
            "h.1.mlp.c_proj"
        ]
    );
    assert_eq!(graph.node(stream.lead(&graph)).name, "h.0.attn.c_proj");
    let mut members = names(&graph, stream.members.iter().copied());
    members.sort();
    assert_eq!(
        members,
        ["h.0.ln_1", "h.0.ln_2", "h.1.ln_1", "h.1.ln_2", "ln_f", "wpe"]
    );
    let mut consumers = names(&graph, stream.consumers.iter().map(|c| c.node));
    consumers.sort();
    assert_eq!(
        consumers,
        [
            "h.0.attn.k",
            "h.0.attn.q",
            "h.0.attn.v",
            "h.0.mlp.c_fc",
            "h.1.attn.k",
            "h.1.attn.q",
            "h.1.attn.v",
            "h.1.mlp.c_fc",
            "lm_head"
        ]
    );
    assert!(
        graph.pinned().is_empty(),
        "nothing is pinned by the stream any more"
    );
    // The heads and neurons are the groups they were.
    for g in plain.prunable_groups() {
        assert!(groups.contains(g), "{} changed", g.name);
    }

    // A ViT: the patch embedding writes the stream; the class token and position
    // embedding hold it; the classifier reads it.
    let graph = vit(&vec![1, 28, 28], 10, &VIT)
        .unwrap()
        .with_residual_width()
        .unwrap();
    let stream = graph
        .prunable_groups()
        .iter()
        .find(|g| {
            g.members
                .iter()
                .any(|&m| matches!(graph.node(m).op, Op::ClassToken { .. }))
        })
        .expect("a group holding the class token");
    assert_eq!(stream.channels, 16);
    assert_eq!(stream.producers.len(), 1 + 2 * VIT.layers);
    assert!(matches!(
        graph.node(stream.producers[0]).op,
        Op::Conv2d { .. }
    ));
    let members = stream.members.iter().map(|&m| &graph.node(m).op);
    assert_eq!(
        members
            .filter(|op| matches!(op, Op::LayerNorm { .. }))
            .count(),
        2 * VIT.layers + 1
    );
    let classifier = stream.consumers.iter().map(|c| c.node).next_back().unwrap();
    assert_eq!(graph.node(classifier).out_shape, vec![10]);
}

/// `net` masked at `keeps` (channel units of its graph), the masker, and its slimmed copy.
fn masked_and_slimmed(
    net: &GraphNet,
    keeps: &[f64],
    train: &autoprune::data::Split,
) -> (GraphNet, GraphNet, CostModel) {
    let costs = CostModel::new(net.graph(), Granularity::Channel);
    assert_eq!(costs.units().len(), keeps.len());
    let importance = Importance::compute(net, Criterion::L1, train, 0).unwrap();
    let masker = Masker::new(&costs, &importance);
    let masked = net.duplicate();
    let vars = masked.var_store().variables();
    tch::no_grad(|| {
        for m in masker.masks(keeps) {
            let t = &vars[&m.tensor];
            t.shallow_clone().copy_(&(t * &m.mask));
        }
    });
    let slim = autoprune::prune::slim(&masked, &masker, keeps).unwrap();
    (masked, slim, costs)
}

#[test]
fn masked_layer_norms_compute_what_the_slimmed_transformer_computes() {
    // A GPT: dense on the regrouped graph is the dense model.
    let plain = GraphNet::new(gpt(&SMALL).unwrap(), Device::Cpu);
    randomise(&plain, 11);
    let net = plain
        .duplicate()
        .regraphed(plain.graph().clone().with_residual_width().unwrap())
        .unwrap();
    let ids = tokens(3, 16, 1);
    let dense = tch::no_grad(|| plain.forward_t(&ids, false));
    let regrouped = tch::no_grad(|| net.forward_t(&ids, false));
    // Within float rounding, relative to the logits' size: the two graphs sum in another
    // order, and the initial weights come from libtorch's global generator (which tests in
    // parallel threads share), so the logits' scale varies from run to run.
    let scale = f64::try_from(dense.abs().max()).unwrap().max(1.0);
    let diff = max_diff(&dense, &regrouped);
    assert!(
        diff < 1e-5 * scale,
        "dense and regrouped GPT differ by {diff} at logits up to {scale}"
    );
    let train = autoprune::data::Split {
        images: tokens(8, 16, 2),
        labels: tokens(8, 16, 3),
    };
    // Units: heads and neurons per block, then the residual stream.
    let stream = net
        .graph()
        .prunable_groups()
        .iter()
        .position(|g| g.name == "wte")
        .unwrap();
    let mut keeps = vec![0.5, 0.6, 1.0, 0.4, 1.0];
    keeps.swap(stream, 4);
    keeps[stream] = 0.5;
    let (masked, slim, costs) = masked_and_slimmed(&net, &keeps, &train);
    let wte = slim.graph().find("wte").unwrap();
    assert!(matches!(
        slim.graph().node(wte).op,
        Op::Embedding { width: 16, .. }
    ));
    let ln = slim.graph().find("h.1.ln_2").unwrap();
    assert!(matches!(
        slim.graph().node(ln).op,
        Op::LayerNorm { features: 16, .. }
    ));
    let a = tch::no_grad(|| masked.forward_t(&ids, false));
    let b = tch::no_grad(|| slim.forward_t(&ids, false));
    assert!(
        max_diff(&a, &dense) > 1e-2,
        "pruning the stream changes the logits"
    );
    let diff = max_diff(&a, &b);
    assert!(diff < 1e-4, "masked and slimmed GPT differ by {diff}");
    let counts = costs.counts(&keeps);
    assert_eq!(counts.params, slim.graph().total_params());
    assert_eq!(counts.flops, slim.graph().total_flops());
    // A plain LayerNorm over the zeroed channels would not give the slimmed model.
    let unmasked = GraphNet::new(plain.graph().clone(), Device::Cpu);
    let source = masked.var_store().variables();
    tch::no_grad(|| {
        for (name, t) in unmasked.var_store().variables() {
            t.shallow_clone().copy_(&source[&name]);
        }
    });
    let c = tch::no_grad(|| unmasked.forward_t(&ids, false));
    assert!(
        max_diff(&c, &b) > 1e-3,
        "the mask on the statistics matters"
    );

    // A ViT on 28x28 images.
    let net = GraphNet::new(
        vit(&vec![1, 28, 28], 10, &VIT)
            .unwrap()
            .with_residual_width()
            .unwrap(),
        Device::Cpu,
    );
    randomise(&net, 12);
    let images = {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let pixels: Vec<f32> = (0..4 * 28 * 28)
            .map(|_| rng.random_range(-1.7f32..1.7))
            .collect();
        Tensor::from_slice(&pixels).view([4, 1, 28, 28])
    };
    let train = autoprune::data::Split {
        images: images.shallow_clone(),
        labels: Tensor::from_slice(&[1i64, 2, 3, 4]),
    };
    let units = net.graph().prunable_groups().len();
    let keeps: Vec<f64> = (0..units).map(|u| [0.5, 0.75, 0.4][u % 3]).collect();
    let (masked, slim, costs) = masked_and_slimmed(&net, &keeps, &train);
    let a = tch::no_grad(|| masked.forward_t(&images, false));
    let b = tch::no_grad(|| slim.forward_t(&images, false));
    let diff = max_diff(&a, &b);
    assert!(diff < 1e-4, "masked and slimmed ViT differ by {diff}");
    assert_eq!(costs.counts(&keeps).params, slim.graph().total_params());
}

#[test]
fn a_gpt_searches_its_residual_width_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let plain = tiny_gpt_env(dir.path());
    let text = common::edited(&plain, &[("prune.residual_width", "true")]);
    let env = dir.path().join("residual.toml");
    std::fs::write(&env, text).unwrap();
    let env = env.to_str().unwrap();
    // The graph lists the stream as a group (the pretrained checkpoint loads as it is).
    let out = common::run(&["graph", "--env", env]);
    let graph = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{graph}");
    assert!(graph.contains("wte"), "{graph}");
    // Uniform at half the FLOPs prunes the stream too.
    let out = common::run(&["baseline", "--env", env, "--method", "uniform", "--json"]);
    let uniform = common::success_json(&out);
    let layers = uniform["layers"].as_array().unwrap();
    let stream = layers
        .iter()
        .find(|l| l["name"] == "wte")
        .expect("a unit for the stream");
    assert!(stream["keep"].as_f64().unwrap() < 1.0, "{uniform}");
    assert!(uniform["flops_kept"].as_f64().unwrap() <= 0.5 + 1e-9);
    // A short search, then apply and save the slimmed model: the saved model's params are
    // the score's.
    let (policy, found) = evolution_search(dir.path(), env, 8);
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
    let graph: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("slim.graph.json")).unwrap())
            .unwrap();
    assert_eq!(graph["total_params"], applied["params"]);
    // A policy made without the stream does not fit this env.
    let plain_policy = dir.path().join("plain.json");
    let out = common::run(&[
        "baseline",
        "--env",
        plain.to_str().unwrap(),
        "--method",
        "uniform",
        "--out",
        plain_policy.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let out = common::run(&[
        "apply",
        "--env",
        env,
        "--policy",
        plain_policy.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    common::one_error_line(&out);
    // A Hugging Face directory cannot hold the pruned stream: refused before any work,
    // nothing written.
    let hf = dir.path().join("hf");
    let out = common::run(&[
        "apply",
        "--env",
        env,
        "--policy",
        policy.to_str().unwrap(),
        "--save",
        hf.to_str().unwrap(),
    ]);
    let line = common::one_error_line(&out);
    assert!(
        line.contains("residual width") && line.contains("prune.residual_width"),
        "{line}"
    );
    assert!(!hf.exists());
}
