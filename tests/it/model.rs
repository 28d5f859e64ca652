//! GraphNet: runs every zoo model, computes what the ops say, trains, and round-trips
//! checkpoints (and refuses ones of another shape, naming the tensor).

use autoprune::graph::{GraphBuilder, Op};
use autoprune::model::{train, zoo, GraphNet, Optimizer, Schedule, TrainConfig};
use autoprune::runlog::Progress;
use tch::{Device, Kind, Tensor};

#[test]
fn every_zoo_model_runs_forward_to_logits() {
    tch::manual_seed(0);
    let fmnist = vec![1, 28, 28];
    let cfg = [
        zoo::VggItem::Conv(8),
        zoo::VggItem::Pool(zoo::PoolMarker::M),
        zoo::VggItem::Conv(8),
    ];
    let graphs = [
        zoo::mlp(&fmnist, 10, &[16]).unwrap(),
        zoo::lenet5(&fmnist, 10).unwrap(),
        zoo::vgg(&fmnist, 10, &cfg).unwrap(),
        zoo::resnet(&fmnist, 10, 8).unwrap(),
        zoo::mobilenetv2(&fmnist, 10, 0.25).unwrap(),
        zoo::resnet(&vec![3, 32, 32], 7, 8).unwrap(),
    ];
    for graph in graphs {
        let input_shape: Vec<i64> = std::iter::once(2)
            .chain(graph.input_shape().iter().map(|&d| d as i64))
            .collect();
        let classes = graph.output_shape()[0] as i64;
        let net = GraphNet::new(graph, Device::Cpu);
        let logits = net.forward_t(
            &Tensor::randn(&input_shape, (Kind::Float, Device::Cpu)),
            false,
        );
        assert_eq!(logits.size(), vec![2, classes]);
        assert!(bool::try_from(logits.isfinite().all()).unwrap());
        let params: i64 = net
            .var_store()
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        assert_eq!(
            params as usize,
            net.graph().total_params(),
            "var store matches the graph's count"
        );
    }
}

#[test]
fn ops_compute_what_they_say() {
    tch::manual_seed(1);
    let mut b = GraphBuilder::new();
    let x = b.add(
        "input",
        Op::Input {
            shape: vec![2, 6, 6],
        },
        &[],
    );
    let conv = b.add(
        "conv",
        Op::Conv2d {
            in_channels: 2,
            out_channels: 3,
            kernel: 3.into(),
            stride: 1.into(),
            padding: 1.into(),
            dilation: 1.into(),
            groups: 1,
            bias: true,
        },
        &[x],
    );
    let bn = b.add("bn", Op::BatchNorm { features: 3 }, &[conv]);
    let relu = b.add("relu", Op::Relu, &[bn]);
    let dw = b.add(
        "dw",
        Op::Conv2d {
            in_channels: 3,
            out_channels: 3,
            kernel: 3.into(),
            stride: 2.into(),
            padding: 1.into(),
            dilation: 1.into(),
            groups: 3,
            bias: false,
        },
        &[relu],
    );
    let pool = b.add(
        "pool",
        Op::MaxPool {
            kernel: 2.into(),
            stride: 2.into(),
            padding: 0.into(),
            ceil: false,
        },
        &[relu],
    );
    let add = b.add("add", Op::Add, &[dw, pool]);
    let cat = b.add("cat", Op::Concat, &[add, pool]);
    let gap = b.add("gap", Op::GlobalAvgPool, &[cat]);
    let flat = b.add("flatten", Op::Flatten, &[gap]);
    let fc = b.add(
        "fc",
        Op::Linear {
            in_features: 6,
            out_features: 4,
            bias: true,
        },
        &[flat],
    );
    b.add("output", Op::Output, &[fc]);
    let net = GraphNet::new(b.build().unwrap(), Device::Cpu);
    let v = net.var_store().variables();
    // Give BatchNorm non-trivial statistics so eval mode is checked for real.
    tch::no_grad(|| {
        v["bn.running_mean"]
            .shallow_clone()
            .copy_(&Tensor::from_slice(&[0.5f32, -0.2, 0.1]));
        v["bn.running_var"]
            .shallow_clone()
            .copy_(&Tensor::from_slice(&[2.0f32, 0.5, 1.5]));
        v["bn.weight"]
            .shallow_clone()
            .copy_(&Tensor::from_slice(&[1.5f32, 0.7, -1.0]));
    });
    let input = Tensor::randn([5, 2, 6, 6], (Kind::Float, Device::Cpu));
    let got = net.forward_t(&input, false);

    let y = input.conv2d(
        &v["conv.weight"],
        Some(&v["conv.bias"]),
        [1, 1],
        [1, 1],
        [1, 1],
        1,
    );
    let shape = [1, 3, 1, 1];
    let y = (y - v["bn.running_mean"].view(shape))
        / (v["bn.running_var"].view(shape) + 1e-5).sqrt()
        * v["bn.weight"].view(shape)
        + v["bn.bias"].view(shape);
    let y = y.relu();
    let d = y.conv2d(&v["dw.weight"], None::<&Tensor>, [2, 2], [1, 1], [1, 1], 3);
    let p = y.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
    let c = Tensor::cat(&[d + &p, p], 1);
    let expected = c
        .mean_dim([2, 3].as_slice(), false, Kind::Float)
        .linear(&v["fc.weight"], Some(&v["fc.bias"]));
    let diff = f64::try_from((got - expected).abs().max()).unwrap();
    assert!(diff < 1e-5, "max abs difference {diff}");
}

#[test]
fn training_learns_the_synthetic_set() {
    tch::manual_seed(0);
    let set = crate::common::synthetic_data();
    let mut net = GraphNet::new(
        zoo::mlp(&set.shape, set.classes, &[32, 16]).unwrap(),
        Device::Cpu,
    );
    let before = net.evaluate(&set.val, 256).unwrap();
    let config = TrainConfig {
        epochs: 3,
        batch_size: 64,
        optimizer: Optimizer::Adam,
        lr: 0.01,
        momentum: 0.0,
        weight_decay: 0.0,
        schedule: Schedule::Constant,
    };
    let history = train(&mut net, &set, &config, 0, &Progress::quiet()).unwrap();
    assert_eq!(history.len(), 3);
    assert!(history[2].train_loss < history[0].train_loss);
    let after = net.evaluate(&set.test, 256).unwrap();
    assert!(
        before.accuracy < 0.5,
        "untrained accuracy {}",
        before.accuracy
    );
    assert!(
        after.accuracy > 0.9,
        "trained test accuracy {}",
        after.accuracy
    );

    // SGD with cosine decay and BatchNorm also trains (a VGG-style net on 8x8 images).
    let cfg = [
        zoo::VggItem::Conv(8),
        zoo::VggItem::Pool(zoo::PoolMarker::M),
        zoo::VggItem::Conv(8),
    ];
    let mut net = GraphNet::new(
        zoo::vgg(&set.shape, set.classes, &cfg).unwrap(),
        Device::Cpu,
    );
    let config = TrainConfig {
        epochs: 2,
        batch_size: 64,
        optimizer: Optimizer::Sgd,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 5e-4,
        schedule: Schedule::Cosine,
    };
    train(&mut net, &set, &config, 0, &Progress::quiet()).unwrap();
    let mean = f64::try_from(
        net.var_store().variables()["features.bn0.running_mean"]
            .abs()
            .sum(Kind::Float),
    )
    .unwrap();
    assert!(mean > 0.0, "training updates BatchNorm running statistics");
    assert!(net.evaluate(&set.test, 256).unwrap().accuracy > 0.9);
}

#[test]
fn checkpoints_round_trip_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/model.safetensors");
    let graph = zoo::resnet(&vec![1, 8, 8], 4, 8).unwrap();
    tch::manual_seed(3);
    let a = GraphNet::new(graph.clone(), Device::Cpu);
    tch::no_grad(|| {
        let _ = a.var_store().variables()["bn1.running_var"]
            .shallow_clone()
            .fill_(2.5);
    });
    a.save(&path).unwrap();
    tch::manual_seed(4);
    let mut b = GraphNet::new(graph, Device::Cpu);
    let input = Tensor::randn([3, 1, 8, 8], (Kind::Float, Device::Cpu));
    assert!(!a
        .forward_t(&input, false)
        .equal(&b.forward_t(&input, false)));
    b.load(&path).unwrap();
    assert!(
        a.forward_t(&input, false)
            .equal(&b.forward_t(&input, false)),
        "bit-identical after loading"
    );
    assert!(!dir.path().join("sub/model.tmp.safetensors").exists());
}

#[test]
fn checkpoint_of_another_shape_names_the_first_tensor_that_differs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.safetensors");
    GraphNet::new(zoo::mlp(&vec![1, 8, 8], 4, &[32, 16]).unwrap(), Device::Cpu)
        .save(&path)
        .unwrap();
    let mut other = GraphNet::new(zoo::mlp(&vec![1, 8, 8], 4, &[32, 8]).unwrap(), Device::Cpu);
    let err = other.load(&path).unwrap_err().to_string();
    assert!(
        err.contains("`fc2.weight`") && err.contains("[16, 32]") && err.contains("[8, 32]"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);

    let mut deeper = GraphNet::new(
        zoo::mlp(&vec![1, 8, 8], 4, &[32, 16, 16]).unwrap(),
        Device::Cpu,
    );
    let err = deeper.load(&path).unwrap_err().to_string();
    assert!(
        err.contains("`fc3.weight`") && err.contains("missing"),
        "{err}"
    );

    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = other.load(&path).unwrap_err().to_string();
    assert!(err.contains("not a readable safetensors file"), "{err}");
}
