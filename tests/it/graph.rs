//! Model graphs: shapes, published parameter and MAC counts, prunable groups, features, export.

use autoprune::graph::{GraphBuilder, ModelGraph, Op, FEATURE_NAMES};
use autoprune::model::zoo::{self, PoolMarker, VggItem};

fn cifar() -> Vec<usize> {
    vec![3, 32, 32]
}

fn within(actual: usize, expected: f64, tolerance: f64) -> bool {
    (actual as f64 - expected).abs() <= tolerance * expected
}

#[test]
fn resnet20_matches_published_counts() {
    let g = zoo::resnet(&cifar(), 10, 20).unwrap();
    // He et al. 2016: 0.27M params; ~41M multiply-accumulates.
    assert!(
        within(g.total_params(), 0.27e6, 0.03),
        "params {}",
        g.total_params()
    );
    assert!(
        within(g.total_flops(), 41e6, 0.03),
        "MACs {}",
        g.total_flops()
    );
    assert_eq!(g.output_shape(), &vec![10]);
}

#[test]
fn resnet56_matches_published_counts() {
    let g = zoo::resnet(&cifar(), 10, 56).unwrap();
    assert!(
        within(g.total_params(), 0.85e6, 0.03),
        "params {}",
        g.total_params()
    );
    assert!(
        within(g.total_flops(), 125e6, 0.03),
        "MACs {}",
        g.total_flops()
    );
}

#[test]
fn mobilenetv2_matches_published_counts() {
    let g = zoo::mobilenetv2(&[3, 224, 224].to_vec(), 1000, 1.0).unwrap();
    // Sandler et al. 2018: 3.4M-3.5M params, 300M multiply-adds.
    assert!(
        within(g.total_params(), 3.5e6, 0.03),
        "params {}",
        g.total_params()
    );
    assert!(
        within(g.total_flops(), 300e6, 0.03),
        "MACs {}",
        g.total_flops()
    );
    assert_eq!(g.node(*g.order().last().unwrap()).out_shape, vec![1000]);
}

#[test]
fn lenet5_and_vgg_shapes() {
    let lenet = zoo::lenet5(&[1, 28, 28].to_vec(), 10).unwrap();
    let fc1 = lenet.find("fc1").unwrap();
    assert_eq!(
        lenet.node(fc1).op,
        Op::Linear {
            in_features: 400,
            out_features: 120,
            bias: true
        }
    );
    // conv1 6*1*25+6, conv2 16*6*25+16, fc 400*120+120, 120*84+84, 84*10+10
    assert_eq!(lenet.total_params(), 156 + 2416 + 48120 + 10164 + 850);

    let cfg = [
        VggItem::Conv(8),
        VggItem::Pool(PoolMarker::M),
        VggItem::Conv(16),
    ];
    let vgg = zoo::vgg(&[1, 28, 28].to_vec(), 10, &cfg).unwrap();
    let fc = vgg.find("fc").unwrap();
    assert_eq!(
        vgg.node(fc).op,
        Op::Linear {
            in_features: 16 * 14 * 14,
            out_features: 10,
            bias: true
        }
    );
    // conv0: 8*1*9 weights over 28*28 outputs; conv1: 16*8*9 over 14*14.
    assert_eq!(
        vgg.node_flops(vgg.find("features.conv0").unwrap()),
        8 * 9 * 28 * 28
    );
    assert_eq!(
        vgg.node_flops(vgg.find("features.conv1").unwrap()),
        16 * 8 * 9 * 14 * 14
    );
}

fn group_of(g: &ModelGraph, name: &str) -> Option<usize> {
    g.group_of(g.find(name).unwrap_or_else(|| panic!("no node {name}")))
}

#[test]
fn residual_adds_couple_channels_into_one_group() {
    let g = zoo::resnet(&cifar(), 10, 20).unwrap();
    // Stage 1: the stem conv and every block's conv2 feed the same residual stream.
    let stem = group_of(&g, "conv1").unwrap();
    for block in 0..3 {
        assert_eq!(group_of(&g, &format!("layer1.{block}.conv2")), Some(stem));
        assert_eq!(group_of(&g, &format!("layer1.{block}.bn2")), Some(stem));
        // A block's inner conv is free to prune on its own.
        let inner = group_of(&g, &format!("layer1.{block}.conv1")).unwrap();
        assert_ne!(inner, stem);
    }
    // Stage 2 starts a new stream, shared by the projection shortcut.
    let stage2 = group_of(&g, "layer2.0.downsample.conv").unwrap();
    assert_ne!(stage2, stem);
    assert_eq!(group_of(&g, "layer2.0.conv2"), Some(stage2));
    assert_eq!(group_of(&g, "layer2.2.conv2"), Some(stage2));
    // 3 streams + 9 inner convs; the classifier's outputs are logits, never pruned.
    assert_eq!(g.prunable_groups().len(), 12);
    assert_eq!(group_of(&g, "fc"), None);
    let stream = &g.prunable_groups()[stem];
    assert_eq!(stream.channels, 16);
    assert_eq!(stream.producers.len(), 4);
    // Readers of stage 1's stream: each block's conv1 and stage 2's first conv1 and shortcut.
    let readers: Vec<&str> = stream
        .consumers
        .iter()
        .map(|c| g.node(c.node).name.as_str())
        .collect();
    assert_eq!(
        readers,
        [
            "layer1.0.conv1",
            "layer1.1.conv1",
            "layer1.2.conv1",
            "layer2.0.conv1",
            "layer2.0.downsample.conv"
        ]
    );
}

#[test]
fn depthwise_convs_join_their_producers_group() {
    let g = zoo::mobilenetv2(&cifar(), 10, 1.0).unwrap();
    let expand = group_of(&g, "features.2.expand").unwrap();
    assert_eq!(group_of(&g, "features.2.dw"), Some(expand));
    assert_eq!(group_of(&g, "features.2.dw_bn"), Some(expand));
    let group = &g.prunable_groups()[expand];
    assert_eq!(
        group.producers.len(),
        1,
        "the depthwise conv is a member, not a producer"
    );
    assert!(group.members.contains(&g.find("features.2.dw").unwrap()));
    // The first block has no expansion: its depthwise conv carries the stem's channels.
    assert_eq!(
        group_of(&g, "features.1.dw"),
        group_of(&g, "features.0.conv")
    );
    // Residual blocks (features.3 adds to features.2's output) share the projection group.
    assert_eq!(
        group_of(&g, "features.3.project"),
        group_of(&g, "features.2.project")
    );
}

#[test]
fn concat_keeps_each_branch_its_own_group_with_offsets() {
    let mut b = GraphBuilder::new();
    let x = b.add(
        "input",
        Op::Input {
            shape: vec![3, 8, 8],
        },
        &[],
    );
    let conv = |i, o| Op::Conv2d {
        in_channels: i,
        out_channels: o,
        kernel: 3.into(),
        stride: 1.into(),
        padding: 1.into(),
        dilation: 1.into(),
        groups: 1,
        bias: false,
    };
    let left = b.add("left", conv(3, 4), &[x]);
    let right = b.add("right", conv(3, 6), &[x]);
    let cat = b.add("cat", Op::Concat, &[left, right]);
    let head = b.add("head", conv(10, 5), &[cat]);
    let flat = b.add("flatten", Op::Flatten, &[head]);
    let fc = b.add(
        "fc",
        Op::Linear {
            in_features: 5 * 64,
            out_features: 2,
            bias: true,
        },
        &[flat],
    );
    b.add("output", Op::Output, &[fc]);
    let g = b.build().unwrap();
    assert_eq!(g.node(cat).out_shape, vec![10, 8, 8]);
    let groups = g.prunable_groups();
    assert_eq!(groups.len(), 3);
    let use_of = |name: &str| {
        let group = &groups[group_of(&g, name).unwrap()];
        assert_eq!(group.consumers.len(), 1);
        group.consumers[0]
    };
    assert_eq!((use_of("left").offset, use_of("left").repeat), (0, 1));
    assert_eq!((use_of("right").offset, use_of("right").repeat), (4, 1));
    // Flatten spreads each of head's channels over 8*8 inputs of fc.
    assert_eq!((use_of("head").offset, use_of("head").repeat), (0, 64));
    assert_eq!(g.node(use_of("head").node).name, "fc");
}

#[test]
fn bad_graphs_are_refused_with_the_node_named() {
    let mut b = GraphBuilder::new();
    let x = b.add(
        "input",
        Op::Input {
            shape: vec![3, 8, 8],
        },
        &[],
    );
    let conv = b.add(
        "conv",
        Op::Conv2d {
            in_channels: 4,
            out_channels: 8,
            kernel: 3.into(),
            stride: 1.into(),
            padding: 1.into(),
            dilation: 1.into(),
            groups: 1,
            bias: false,
        },
        &[x],
    );
    b.add("output", Op::Output, &[conv]);
    let err = b.build().unwrap_err().to_string();
    assert!(
        err.contains("`conv`") && err.contains("4 input channels, receives 3"),
        "{err}"
    );

    let mut b = GraphBuilder::new();
    let x = b.add(
        "input",
        Op::Input {
            shape: vec![2, 4, 4],
        },
        &[],
    );
    let pool = b.add(
        "pool",
        Op::MaxPool {
            kernel: 2.into(),
            stride: 2.into(),
            padding: 0.into(),
            ceil: false,
        },
        &[x],
    );
    let add = b.add("add", Op::Add, &[x, pool]);
    b.add("output", Op::Output, &[add]);
    let err = b.build().unwrap_err().to_string();
    assert!(
        err.contains("`add`") && err.contains("different shapes"),
        "{err}"
    );

    assert!(zoo::resnet(&cifar(), 10, 21)
        .unwrap_err()
        .to_string()
        .contains("6n+2"));
}

#[test]
fn features_follow_amc() {
    let g = zoo::resnet(&cifar(), 10, 20).unwrap();
    let conv = g.find("layer2.0.conv1").unwrap();
    let f = g.node_features(conv);
    assert_eq!(FEATURE_NAMES.len(), f.to_vec().len());
    assert_eq!((f.c_in, f.c_out, f.stride, f.kernel), (16, 32, 2, 3));
    assert_eq!(f.feature_map, 32 * 32);
    assert_eq!(f.params, 32 * 16 * 9);
    assert_eq!(f.flops, 32 * 16 * 9 * 16 * 16);
    assert_eq!(f.index, g.position(conv));
    assert_eq!(autoprune::graph::OP_TYPES[f.op_type], "conv2d");
}

#[test]
fn json_and_dot_export_every_node_and_edge() {
    let g = zoo::resnet(&cifar(), 10, 20).unwrap();
    let json = g.to_json();
    assert_eq!(json.nodes.len(), g.order().len());
    assert_eq!(json.edges.len(), g.graph().edge_count());
    assert_eq!(json.total_params, g.total_params());
    assert_eq!(
        json.nodes.iter().map(|n| n.params).sum::<usize>(),
        g.total_params()
    );
    assert_eq!(json.groups.len(), 12);
    let text = serde_json::to_string(&json).unwrap();
    let back: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(back["nodes"][1]["op"]["type"], "conv2d");
    let dot = g.to_dot();
    assert_eq!(dot.matches("->").count(), g.graph().edge_count());
    assert!(dot.starts_with("digraph") && dot.contains("layer3.2.add"));
}

#[test]
fn a_batch_norm_over_a_concat_prunes_each_branch_at_its_offset() {
    // BatchNorm after Concat (DenseNet): each branch stays its own group, and the BatchNorm
    // carries each branch's channels at the branch's offset in the concatenation.
    let mut b = GraphBuilder::new();
    let x = b.add(
        "input",
        Op::Input {
            shape: vec![3, 8, 8],
        },
        &[],
    );
    let conv = |i, o| Op::Conv2d {
        in_channels: i,
        out_channels: o,
        kernel: 3.into(),
        stride: 1.into(),
        padding: 1.into(),
        dilation: 1.into(),
        groups: 1,
        bias: false,
    };
    let left = b.add("left", conv(3, 4), &[x]);
    let right = b.add("right", conv(3, 6), &[x]);
    let cat = b.add("cat", Op::Concat, &[left, right]);
    let bn = b.add("bn", Op::BatchNorm { features: 10 }, &[cat]);
    let head = b.add("head", conv(10, 5), &[bn]);
    let gap = b.add("gap", Op::GlobalAvgPool, &[head]);
    let flat = b.add("flatten", Op::Flatten, &[gap]);
    let fc = b.add(
        "fc",
        Op::Linear {
            in_features: 5,
            out_features: 2,
            bias: true,
        },
        &[flat],
    );
    b.add("output", Op::Output, &[fc]);
    let g = b.build().unwrap();
    let names: Vec<&str> = g
        .prunable_groups()
        .iter()
        .map(|gr| gr.name.as_str())
        .collect();
    assert_eq!(names, ["left", "right", "head"]);
    let bn = g.find("bn").unwrap();
    for (group, offset) in [("left", 0), ("right", 4)] {
        let gr = g
            .prunable_groups()
            .iter()
            .find(|gr| gr.name == group)
            .unwrap();
        assert!(gr.members.is_empty(), "{group}");
        assert_eq!(gr.sliced.len(), 1, "{group}");
        assert_eq!((gr.sliced[0].node, gr.sliced[0].offset), (bn, offset));
        // The head conv reads the branch at the same offset.
        assert_eq!(gr.consumers.len(), 1);
        assert_eq!(gr.consumers[0].offset, offset);
    }
}

#[test]
fn zero_sizes_are_refused() {
    let mut b = GraphBuilder::new();
    let x = b.add(
        "input",
        Op::Input {
            shape: vec![3, 8, 8],
        },
        &[],
    );
    let c = b.add(
        "conv",
        Op::Conv2d {
            in_channels: 3,
            out_channels: 4,
            kernel: 0.into(),
            stride: 1.into(),
            padding: 0.into(),
            dilation: 1.into(),
            groups: 1,
            bias: false,
        },
        &[x],
    );
    b.add("output", Op::Output, &[c]);
    let err = b.build().unwrap_err().to_string();
    assert!(
        err.contains("`conv`") && err.contains("at least 1"),
        "{err}"
    );
}
