//! Granularities, criteria and allocators on tiny models where the right answer is worked
//! out by hand.

use autoprune::data::Split;
use autoprune::graph::{GraphBuilder, ModelGraph, Op};
use autoprune::model::GraphNet;
use autoprune::prune::{
    allocate, erk_raw, lamp_scores, ActionWall, Budget, CostModel, Criterion, Importance, Masker,
    Method, Signals,
};
use autoprune::prune::{Granularity, Metric};
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// input [4] -> fc1 (4->3) -> relu -> fc2 (3->2) -> output
fn tiny_mlp() -> ModelGraph {
    let mut b = GraphBuilder::new();
    let x = b.add("input", Op::Input { shape: vec![4] }, &[]);
    let fc1 = b.add(
        "fc1",
        Op::Linear {
            in_features: 4,
            out_features: 3,
            bias: true,
        },
        &[x],
    );
    let relu = b.add("relu", Op::Relu, &[fc1]);
    let fc2 = b.add(
        "fc2",
        Op::Linear {
            in_features: 3,
            out_features: 2,
            bias: true,
        },
        &[relu],
    );
    b.add("output", Op::Output, &[fc2]);
    b.build().unwrap()
}

fn set(net: &GraphNet, name: &str, values: &[f32], shape: &[i64]) {
    let vars = net.var_store().variables();
    tch::no_grad(|| {
        vars[name]
            .shallow_clone()
            .copy_(&Tensor::from_slice(values).view(shape))
    });
}

fn masks_of(
    costs: &CostModel,
    importance: &Importance,
    keeps: &[f64],
) -> HashMap<String, Vec<f32>> {
    Masker::new(costs, importance)
        .masks(keeps)
        .into_iter()
        .map(|m| {
            (
                m.tensor,
                Vec::<f32>::try_from(m.mask.flatten(0, -1)).unwrap(),
            )
        })
        .collect()
}

fn empty_split() -> Split {
    Split {
        images: Tensor::zeros([0, 4], (Kind::Float, Device::Cpu)),
        labels: Tensor::zeros([0], (Kind::Int64, Device::Cpu)),
    }
}

fn mlp_with_weights() -> GraphNet {
    let net = GraphNet::new(tiny_mlp(), Device::Cpu);
    // fc1 rows: L1 norms 10, 4, 7; L2 norms sqrt(34)=5.83, 4, 5
    set(
        &net,
        "fc1.weight",
        &[1.0, -2.0, 3.0, -4.0, 0.0, 4.0, 0.0, 0.0, 3.0, 4.0, 0.0, 0.0],
        &[3, 4],
    );
    set(
        &net,
        "fc2.weight",
        &[0.5, -0.1, 0.2, 0.3, 0.0, -0.6],
        &[2, 3],
    );
    net
}

#[test]
fn unstructured_magnitude_keeps_the_largest_weights_per_layer() {
    let net = mlp_with_weights();
    let costs = CostModel::new(net.graph(), Granularity::Unstructured);
    assert_eq!(
        costs
            .units()
            .iter()
            .map(|u| (u.name.as_str(), u.size))
            .collect::<Vec<_>>(),
        [("fc1", 12), ("fc2", 6)]
    );
    let importance = Importance::compute(&net, Criterion::Magnitude, &empty_split(), 0).unwrap();
    // fc1 keeps 5 of 12 (0.4 rounds to 4.8 -> 5): |w| = 4, 4, 4 (ties: lower index first), 3, 3.
    let masks = masks_of(&costs, &importance, &[0.4, 0.5]);
    assert_eq!(
        masks["fc1.weight"],
        [0., 0., 1., 1., 0., 1., 0., 0., 1., 1., 0., 0.]
    );
    // fc2 keeps 3 of 6: 0.6, 0.5, 0.3.
    assert_eq!(masks["fc2.weight"], [1., 0., 0., 1., 0., 1.]);
    let counts = costs.counts(&[0.4, 0.5]);
    assert_eq!(counts.params_kept, 8.0 / 18.0);
    assert_eq!(
        counts.params,
        8 + 3 + 2,
        "kept weights plus the biases, which are not pruned"
    );
    // fc1 is 12 MACs, fc2 6: kept 5 and 3.
    assert_eq!(counts.flops, 8);
}

#[test]
fn channel_l1_and_l2_rank_channels_by_their_norms() {
    let net = mlp_with_weights();
    let costs = CostModel::new(net.graph(), Granularity::Channel);
    assert_eq!(
        costs.units().len(),
        1,
        "fc1's outputs are the one group; fc2's are the logits"
    );
    let l1 = Importance::compute(&net, Criterion::L1, &empty_split(), 0).unwrap();
    // Keep 2 of 3 channels. L1: 10, 4, 7 -> rows 0 and 2.
    let m = masks_of(&costs, &l1, &[2.0 / 3.0]);
    assert_eq!(m["fc1.weight"], [1., 0., 1.]);
    assert_eq!(m["fc1.bias"], [1., 0., 1.]);
    assert!(
        !m.contains_key("fc2.weight"),
        "consumers read zeros; their weights are not masked"
    );
    // Ranking differs between L1 and L2 when one large weight beats several medium ones.
    set(
        &net,
        "fc1.weight",
        &[6.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0, 1.0, 0.0, 0.0, 0.0],
        &[3, 4],
    );
    let l1 = Importance::compute(&net, Criterion::L1, &empty_split(), 0).unwrap();
    let l2 = Importance::compute(&net, Criterion::L2, &empty_split(), 0).unwrap();
    assert_eq!(
        masks_of(&costs, &l1, &[0.34])["fc1.weight"],
        [0., 1., 0.],
        "L1: 8 beats 6"
    );
    assert_eq!(
        masks_of(&costs, &l2, &[0.34])["fc1.weight"],
        [1., 0., 0.],
        "L2: 6 beats 4"
    );
    let counts = costs.counts(&[0.34]);
    // One channel left: fc1 4x1 + 1 bias, fc2 1x2 + 2 bias.
    assert_eq!(counts.params, 5 + 4);
    assert_eq!(counts.flops, 4 + 2);
}

#[test]
fn n_of_m_keeps_the_n_largest_of_every_m_along_the_input() {
    let mut b = GraphBuilder::new();
    let x = b.add("input", Op::Input { shape: vec![8] }, &[]);
    let fc = b.add(
        "fc",
        Op::Linear {
            in_features: 8,
            out_features: 2,
            bias: false,
        },
        &[x],
    );
    b.add("output", Op::Output, &[fc]);
    let net = GraphNet::new(b.build().unwrap(), Device::Cpu);
    set(
        &net,
        "fc.weight",
        &[
            1.0, -5.0, 3.0, 2.0, 0.5, 4.0, -6.0, 1.0, 9.0, 8.0, 7.0, 6.0, 1.0, 1.0, 2.0, 2.0,
        ],
        &[2, 8],
    );
    let costs = CostModel::new(net.graph(), Granularity::NOfM { n: 2, m: 4 });
    let importance = Importance::compute(&net, Criterion::Magnitude, &empty_split(), 0).unwrap();
    let m = masks_of(&costs, &importance, &[0.5]);
    assert_eq!(
        m["fc.weight"],
        [0., 1., 1., 0., 0., 1., 1., 0., 1., 1., 0., 0., 0., 0., 1., 1.]
    );
    assert_eq!(
        masks_of(&costs, &importance, &[0.25])["fc.weight"],
        [0., 1., 0., 0., 0., 0., 1., 0., 1., 0., 0., 0., 0., 0., 1., 0.]
    );
    assert_eq!(costs.counts(&[0.25]).params, 4);

    // A conv's pattern runs along input channels: weight [out=1, in=4, 1, 2].
    let mut b = GraphBuilder::new();
    let x = b.add(
        "input",
        Op::Input {
            shape: vec![4, 3, 3],
        },
        &[],
    );
    let conv = Op::Conv2d {
        in_channels: 4,
        out_channels: 1,
        kernel: 1.into(),
        stride: 1.into(),
        padding: 0.into(),
        dilation: 1.into(),
        groups: 1,
        bias: false,
    };
    let c = b.add("conv", conv, &[x]);
    let f = b.add("flatten", Op::Flatten, &[c]);
    b.add("output", Op::Output, &[f]);
    let net = GraphNet::new(b.build().unwrap(), Device::Cpu);
    set(&net, "conv.weight", &[4.0, 1.0, 3.0, 2.0], &[1, 4, 1, 1]);
    let costs = CostModel::new(net.graph(), Granularity::NOfM { n: 2, m: 4 });
    let importance = Importance::compute(&net, Criterion::Magnitude, &empty_split(), 0).unwrap();
    assert_eq!(
        masks_of(&costs, &importance, &[0.5])["conv.weight"],
        [1., 0., 1., 0.]
    );
}

#[test]
fn taylor_and_snip_follow_the_gradient_worked_out_by_hand() {
    let net = mlp_with_weights();
    set(&net, "fc1.bias", &[0.1, -0.2, 0.3], &[3]);
    set(&net, "fc2.bias", &[0.0, 0.1], &[2]);
    let x = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 1.5]).view([1, 4]);
    let split = Split {
        images: x.shallow_clone(),
        labels: Tensor::from_slice(&[1i64]),
    };
    let taylor = Importance::compute(&net, Criterion::Taylor, &split, 0).unwrap();
    let snip = Importance::compute(&net, Criterion::Snip, &split, 0).unwrap();

    // By hand, for one sample of class 1: h = relu(W1 x + b1), p = softmax(W2 h + b2),
    // dL/dW2 = (p - y) h^T, dL/dh = W2^T (p - y) masked by h > 0, dL/dW1 = dh x^T.
    let vars = net.var_store().variables();
    let (w1, b1, w2, b2) = (
        &vars["fc1.weight"],
        &vars["fc1.bias"],
        &vars["fc2.weight"],
        &vars["fc2.bias"],
    );
    tch::no_grad(|| {
        let pre = x.matmul(&w1.tr()) + b1;
        let h = pre.relu();
        let p = (h.matmul(&w2.tr()) + b2).softmax(-1, Kind::Float);
        let dz = p - Tensor::from_slice(&[0f32, 1.0]).view([1, 2]);
        let g2 = dz.tr().matmul(&h);
        let dh = dz.matmul(w2) * pre.gt(0.0).to_kind(Kind::Float);
        let g1 = dh.tr().matmul(&x);
        let fc1 = net.graph().find("fc1").unwrap();
        let fc2 = net.graph().find("fc2").unwrap();
        for (node, g, w) in [(fc1, &g1, w1), (fc2, &g2, w2)] {
            let expected = (g * w).abs();
            for scores in [&taylor, &snip] {
                let diff = f64::try_from((&scores.element[&node] - &expected).abs().max()).unwrap();
                assert!(diff < 1e-6, "element scores differ by {diff}");
            }
        }
        // Channel Taylor: |sum over the row of g * w|.
        let rows = (&g1 * w1).sum_dim_intlist(1, false, Kind::Float).abs();
        let diff = f64::try_from((&taylor.channel[0] - rows).abs().max()).unwrap();
        assert!(diff < 1e-6);
    });
    // The model's weights and gradients are left as they were.
    assert_eq!(
        Vec::<f32>::try_from(vars["fc2.weight"].flatten(0, -1)).unwrap(),
        [0.5, -0.1, 0.2, 0.3, 0.0, -0.6]
    );
}

#[test]
fn taylor_averages_magnitudes_and_snip_the_gradient_over_batches() {
    tch::manual_seed(5);
    let net = mlp_with_weights();
    // 300 samples: three batches of up to 128.
    let split = Split {
        images: Tensor::randn([300, 4], (Kind::Float, Device::Cpu)),
        labels: Tensor::randint(2, [300], (Kind::Int64, Device::Cpu)),
    };
    let taylor = Importance::compute(&net, Criterion::Taylor, &split, 1).unwrap();
    let snip = Importance::compute(&net, Criterion::Snip, &split, 1).unwrap();
    let fc1 = net.graph().find("fc1").unwrap();
    // mean |g_b w| >= |mean g_b w|, strictly somewhere when batch gradients disagree in sign.
    let gap = &taylor.element[&fc1] - &snip.element[&fc1];
    assert!(f64::try_from(gap.min()).unwrap() > -1e-7);
    assert!(f64::try_from(gap.max()).unwrap() > 1e-6);
}

#[test]
fn random_criterion_is_fixed_by_the_seed() {
    let net = mlp_with_weights();
    let costs = CostModel::new(net.graph(), Granularity::Unstructured);
    let a = masks_of(
        &costs,
        &Importance::compute(&net, Criterion::Random, &empty_split(), 7).unwrap(),
        &[0.5, 0.5],
    );
    let b = masks_of(
        &costs,
        &Importance::compute(&net, Criterion::Random, &empty_split(), 7).unwrap(),
        &[0.5, 0.5],
    );
    let c = masks_of(
        &costs,
        &Importance::compute(&net, Criterion::Random, &empty_split(), 8).unwrap(),
        &[0.5, 0.5],
    );
    assert_eq!(a, b);
    assert_ne!(a["fc1.weight"], c["fc1.weight"]);
    assert_eq!(a["fc1.weight"].iter().sum::<f32>(), 6.0);
}

#[test]
fn lamp_scores_match_the_formula() {
    // Sorted by magnitude: 1, 2, 3 -> 1/(1+4+9), 4/(4+9), 9/9.
    let scores = lamp_scores(&[3.0, -1.0, 2.0]);
    let expected = [1.0, 1.0 / 14.0, 4.0 / 13.0];
    for (s, e) in scores.iter().zip(expected) {
        assert!((f64::from(*s) - e).abs() < 1e-6, "{scores:?}");
    }
}

/// input [20] -> a (20->10) -> relu -> b (10->5) -> output: 200 + 50 weights.
fn two_layers() -> ModelGraph {
    let mut g = GraphBuilder::new();
    let x = g.add("input", Op::Input { shape: vec![20] }, &[]);
    let a = g.add(
        "a",
        Op::Linear {
            in_features: 20,
            out_features: 10,
            bias: false,
        },
        &[x],
    );
    let r = g.add("relu", Op::Relu, &[a]);
    let b = g.add(
        "b",
        Op::Linear {
            in_features: 10,
            out_features: 5,
            bias: false,
        },
        &[r],
    );
    g.add("output", Op::Output, &[b]);
    g.build().unwrap()
}

fn budget(keep: f64) -> Budget {
    Budget {
        metric: Metric::Params,
        keep,
        bounds: [0.01, 1.0],
    }
}

#[test]
fn erk_matches_an_allocation_worked_out_by_hand() {
    let costs = CostModel::new(&two_layers(), Granularity::Unstructured);
    assert!((erk_raw(&costs, 0) - 30.0 / 200.0).abs() < 1e-12);
    assert!((erk_raw(&costs, 1) - 15.0 / 50.0).abs() < 1e-12);
    // keep 0.3 of 250 = 75: eps (0.15*200 + 0.3*50) = 75 -> eps = 5/3 -> densities 0.25, 0.5.
    let wall = ActionWall::new(&costs, budget(0.3), Path::new("test")).unwrap();
    let keeps = allocate(Method::Erk, &wall, &costs, Signals::default(), 0);
    assert!(
        (keeps[0] - 0.25).abs() < 1e-3 && (keeps[1] - 0.5).abs() < 1e-3,
        "{keeps:?}"
    );
    // keep 0.9 = 225: eps = 5 would give b a density of 1.5, so b is dense (50) and a gets
    // the remaining 175 of 200 = 0.875.
    let wall = ActionWall::new(&costs, budget(0.9), Path::new("test")).unwrap();
    let keeps = allocate(Method::Erk, &wall, &costs, Signals::default(), 0);
    assert!(
        (keeps[0] - 0.875).abs() < 1e-3 && keeps[1] == 1.0,
        "{keeps:?}"
    );
}

#[test]
fn lamp_and_global_match_allocations_worked_out_by_hand() {
    let mut g = GraphBuilder::new();
    let x = g.add("input", Op::Input { shape: vec![2] }, &[]);
    let a = g.add(
        "a",
        Op::Linear {
            in_features: 2,
            out_features: 2,
            bias: false,
        },
        &[x],
    );
    let b = g.add(
        "b",
        Op::Linear {
            in_features: 2,
            out_features: 1,
            bias: false,
        },
        &[a],
    );
    g.add("output", Op::Output, &[b]);
    let costs = CostModel::new(&g.build().unwrap(), Granularity::Unstructured);
    // Layer a: |w| = 1, 2, 3, 4; layer b: 0.1, 0.2.
    let scores = vec![vec![1.0f32, 2.0, 3.0, 4.0], vec![0.1, 0.2]];
    // Keep 4 of 6. Global: the four largest magnitudes are all of a, but every layer keeps at
    // least one weight, so b's 1 leaves a its three largest: a 3/4, b 1/2.
    let wall = ActionWall::new(&costs, budget(4.0 / 6.0), Path::new("test")).unwrap();
    let global = allocate(
        Method::Global,
        &wall,
        &costs,
        Signals {
            scores: &scores,
            ..Signals::default()
        },
        0,
    );
    assert_eq!(global, vec![0.75, 0.5]);
    // LAMP: a: 16/16=1, 9/25=.36, 4/29=.138, 1/30=.033; b: .04/.04=1, .01/.05=.2.
    // Top 4 = 1, 1, .36, .2 -> a keeps 2 (of 4), b keeps 2 (of 2); top 3 -> a 2, b 1.
    let wall = ActionWall::new(&costs, budget(4.0 / 6.0), Path::new("test")).unwrap();
    let lamp = allocate(
        Method::Lamp,
        &wall,
        &costs,
        Signals {
            scores: &scores,
            ..Signals::default()
        },
        0,
    );
    assert_eq!(lamp, vec![0.5, 1.0]);
    let wall = ActionWall::new(&costs, budget(3.0 / 6.0), Path::new("test")).unwrap();
    assert_eq!(
        allocate(
            Method::Lamp,
            &wall,
            &costs,
            Signals {
                scores: &scores,
                ..Signals::default()
            },
            0
        ),
        vec![0.5, 0.5]
    );
}

#[test]
fn uniform_and_random_meet_the_budget_within_bounds() {
    let costs = CostModel::new(&two_layers(), Granularity::Unstructured);
    let wall = ActionWall::new(&costs, budget(0.2), Path::new("test")).unwrap();
    assert_eq!(
        allocate(Method::Uniform, &wall, &costs, Signals::default(), 0),
        [0.2, 0.2]
    );
    let a = allocate(Method::Random, &wall, &costs, Signals::default(), 1);
    let b = allocate(Method::Random, &wall, &costs, Signals::default(), 2);
    assert_ne!(a, b);
    for keeps in [a, b] {
        assert!(wall.cost(&keeps) <= 0.2 + 1e-12);
        assert!(
            wall.cost(&keeps) > 0.19,
            "uses the budget: {}",
            wall.cost(&keeps)
        );
        assert!(keeps.iter().all(|k| (0.01..=1.0).contains(k)));
    }
}

#[test]
fn lamp_gives_tied_weights_one_score() {
    // |w| = 2, 2, 1: the block of 2s shares the denominator 4 + 4.
    let scores = lamp_scores(&[2.0, -2.0, 1.0]);
    assert_eq!(scores[0], scores[1]);
    assert!((f64::from(scores[0]) - 0.5).abs() < 1e-6);
    assert!((f64::from(scores[2]) - 1.0 / 9.0).abs() < 1e-6);
}
