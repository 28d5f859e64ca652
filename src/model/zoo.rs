//! Model zoo: builders that emit a [`ModelGraph`] for a given input shape and class count.
//! Names follow PyTorch's conventions (`layer1.0.conv1`), so checkpoints read naturally.

use crate::error::{Error, Result};
use crate::graph::{GraphBuilder, ModelGraph, Op, Shape};
use petgraph::graph::NodeIndex;
use serde::{Deserialize, Serialize};

pub use super::transformer::{gpt, gpt_layout, vit, GptLayout, GptShape, VitShape};

/// One entry of a VGG configuration: a 3×3 conv with that many channels, or a 2×2 max-pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VggItem {
    Conv(usize),
    Pool(PoolMarker),
}

/// The `"M"` marker in a VGG cfg list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolMarker {
    #[serde(rename = "M")]
    M,
}

/// Small helper over [`GraphBuilder`] that tracks channel counts.
struct Net {
    builder: GraphBuilder,
}

impl Net {
    fn new(input: &Shape) -> (Self, NodeIndex) {
        let mut builder = GraphBuilder::new();
        let x = builder.add(
            "input",
            Op::Input {
                shape: input.clone(),
            },
            &[],
        );
        (Self { builder }, x)
    }

    fn channels(&self, x: NodeIndex) -> Result<usize> {
        Ok(self.builder.shape_of(x)?[0])
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        x: NodeIndex,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
        bias: bool,
    ) -> NodeIndex {
        let op = Op::Conv2d {
            in_channels,
            out_channels,
            kernel: kernel.into(),
            stride: stride.into(),
            padding: (kernel / 2).into(),
            dilation: 1.into(),
            groups,
            bias,
        };
        self.builder.add(name, op, &[x])
    }

    fn bn(&mut self, name: &str, x: NodeIndex, features: usize) -> NodeIndex {
        self.builder.add(name, Op::BatchNorm { features }, &[x])
    }

    fn op(&mut self, name: &str, op: Op, inputs: &[NodeIndex]) -> NodeIndex {
        self.builder.add(name, op, inputs)
    }

    fn linear(
        &mut self,
        name: &str,
        x: NodeIndex,
        in_features: usize,
        out_features: usize,
    ) -> NodeIndex {
        let op = Op::Linear {
            in_features,
            out_features,
            bias: true,
        };
        self.builder.add(name, op, &[x])
    }

    /// Flatten, then the classifier, then Output.
    fn head(mut self, x: NodeIndex, classes: usize) -> Result<ModelGraph> {
        let flat = self.op("flatten", Op::Flatten, &[x]);
        let features = self.builder.shape_of(flat)?[0];
        let logits = self.linear("fc", flat, features, classes);
        self.op("output", Op::Output, &[logits]);
        self.builder.build()
    }
}

/// Multi-layer perceptron: flatten, then `hidden` linear+ReLU layers, then the classifier.
pub fn mlp(input: &Shape, classes: usize, hidden: &[usize]) -> Result<ModelGraph> {
    let (mut net, mut x) = Net::new(input);
    x = net.op("flatten", Op::Flatten, &[x]);
    let mut features: usize = input.iter().product();
    for (i, &width) in hidden.iter().enumerate() {
        x = net.linear(&format!("fc{}", i + 1), x, features, width);
        x = net.op(&format!("relu{}", i + 1), Op::Relu, &[x]);
        features = width;
    }
    let logits = net.linear("classifier", x, features, classes);
    net.op("output", Op::Output, &[logits]);
    net.builder.build()
}

/// LeNet-5 (conv 6, pool, conv 16, pool, fc 120, fc 84, classifier), with ReLU and max-pool.
/// The first conv pads by 2, so a 28×28 input sees the 32×32 field the design expects.
pub fn lenet5(input: &Shape, classes: usize) -> Result<ModelGraph> {
    let (mut net, x) = Net::new(input);
    let in_channels = net.channels(x)?;
    let pool = Op::MaxPool {
        kernel: 2.into(),
        stride: 2.into(),
        padding: 0.into(),
        ceil: false,
    };
    let mut x = net.builder.add(
        "conv1",
        Op::Conv2d {
            in_channels,
            out_channels: 6,
            kernel: 5.into(),
            stride: 1.into(),
            padding: 2.into(),
            dilation: 1.into(),
            groups: 1,
            bias: true,
        },
        &[x],
    );
    x = net.op("relu1", Op::Relu, &[x]);
    x = net.op("pool1", pool.clone(), &[x]);
    x = net.builder.add(
        "conv2",
        Op::Conv2d {
            in_channels: 6,
            out_channels: 16,
            kernel: 5.into(),
            stride: 1.into(),
            padding: 0.into(),
            dilation: 1.into(),
            groups: 1,
            bias: true,
        },
        &[x],
    );
    x = net.op("relu2", Op::Relu, &[x]);
    x = net.op("pool2", pool, &[x]);
    x = net.op("flatten", Op::Flatten, &[x]);
    let features = net.builder.shape_of(x)?[0];
    x = net.linear("fc1", x, features, 120);
    x = net.op("relu3", Op::Relu, &[x]);
    x = net.linear("fc2", x, 120, 84);
    x = net.op("relu4", Op::Relu, &[x]);
    let logits = net.linear("fc3", x, 84, classes);
    net.op("output", Op::Output, &[logits]);
    net.builder.build()
}

/// VGG from a cfg list: each number is a 3×3 conv + BatchNorm + ReLU with that many channels,
/// each `"M"` a 2×2 max-pool; then flatten and one linear classifier.
pub fn vgg(input: &Shape, classes: usize, cfg: &[VggItem]) -> Result<ModelGraph> {
    if !cfg.iter().any(|item| matches!(item, VggItem::Conv(_))) {
        return Err(Error::graph(
            "vgg",
            "the cfg list needs at least one conv width",
        ));
    }
    let (mut net, mut x) = Net::new(input);
    let mut channels = net.channels(x)?;
    let (mut conv_index, mut pool_index) = (0, 0);
    for item in cfg {
        match *item {
            VggItem::Conv(width) => {
                let name = format!("features.conv{conv_index}");
                x = net.conv(&name, x, channels, width, 3, 1, 1, false);
                x = net.bn(&format!("features.bn{conv_index}"), x, width);
                x = net.op(&format!("features.relu{conv_index}"), Op::Relu, &[x]);
                channels = width;
                conv_index += 1;
            }
            VggItem::Pool(_) => {
                let pool = Op::MaxPool {
                    kernel: 2.into(),
                    stride: 2.into(),
                    padding: 0.into(),
                    ceil: false,
                };
                x = net.op(&format!("features.pool{pool_index}"), pool, &[x]);
                pool_index += 1;
            }
        }
    }
    net.head(x, classes)
}

/// CIFAR-style ResNet (He et al. 2016, §4.2): depth = 6n + 2, three stages of n basic blocks
/// with 16, 32 and 64 channels; a block that changes shape projects its shortcut with a 1×1
/// conv + BatchNorm. Global average pool, then the classifier.
pub fn resnet(input: &Shape, classes: usize, depth: usize) -> Result<ModelGraph> {
    if depth < 8 || !(depth - 2).is_multiple_of(6) {
        return Err(Error::graph(
            "resnet",
            format!("depth {depth} is not 6n+2 with n >= 1 (use 20, 32, 44, 56, 110, ...)"),
        ));
    }
    let blocks = (depth - 2) / 6;
    let (mut net, x) = Net::new(input);
    let in_channels = net.channels(x)?;
    let mut x = net.conv("conv1", x, in_channels, 16, 3, 1, 1, false);
    x = net.bn("bn1", x, 16);
    x = net.op("relu", Op::Relu, &[x]);
    let mut channels = 16;
    for (stage, width) in [16usize, 32, 64].into_iter().enumerate() {
        for block in 0..blocks {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let p = format!("layer{}.{block}", stage + 1);
            let mut y = net.conv(
                &format!("{p}.conv1"),
                x,
                channels,
                width,
                3,
                stride,
                1,
                false,
            );
            y = net.bn(&format!("{p}.bn1"), y, width);
            y = net.op(&format!("{p}.relu1"), Op::Relu, &[y]);
            y = net.conv(&format!("{p}.conv2"), y, width, width, 3, 1, 1, false);
            y = net.bn(&format!("{p}.bn2"), y, width);
            let shortcut = if stride != 1 || channels != width {
                let s = net.conv(
                    &format!("{p}.downsample.conv"),
                    x,
                    channels,
                    width,
                    1,
                    stride,
                    1,
                    false,
                );
                net.bn(&format!("{p}.downsample.bn"), s, width)
            } else {
                x
            };
            let sum = net.op(&format!("{p}.add"), Op::Add, &[y, shortcut]);
            x = net.op(&format!("{p}.relu2"), Op::Relu, &[sum]);
            channels = width;
        }
    }
    x = net.op("avgpool", Op::GlobalAvgPool, &[x]);
    net.head(x, classes)
}

/// Rounds a channel count to a multiple of 8, never dropping more than 10% (MobileNetV2's rule).
fn make_divisible(value: f64) -> usize {
    let divisor = 8.0;
    let rounded = ((value + divisor / 2.0) / divisor).floor() * divisor;
    let rounded = rounded.max(divisor);
    if rounded < 0.9 * value {
        (rounded + divisor) as usize
    } else {
        rounded as usize
    }
}

/// MobileNetV2 (Sandler et al. 2018) with a width multiplier. Inputs of 64 pixels or less
/// (CIFAR, Fashion-MNIST) use stride 1 in the stem and the first stride-2 stage, as the CIFAR
/// variants do, so the last feature map is not smaller than one pixel.
pub fn mobilenetv2(input: &Shape, classes: usize, width: f64) -> Result<ModelGraph> {
    if !(width > 0.0 && width.is_finite()) {
        return Err(Error::graph(
            "mobilenetv2",
            format!("width {width} must be positive"),
        ));
    }
    // (expansion t, channels c, repeats n, stride s)
    const SETTINGS: [(usize, usize, usize, usize); 7] = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ];
    let small = input.get(1).copied().unwrap_or(0) <= 64;
    let (mut net, x) = Net::new(input);
    let in_channels = net.channels(x)?;
    let stem = make_divisible(32.0 * width);
    let last = if width > 1.0 {
        make_divisible(1280.0 * width)
    } else {
        1280
    };
    let mut x = net.conv(
        "features.0.conv",
        x,
        in_channels,
        stem,
        3,
        if small { 1 } else { 2 },
        1,
        false,
    );
    x = net.bn("features.0.bn", x, stem);
    x = net.op("features.0.relu", Op::Relu6, &[x]);
    let mut channels = stem;
    let mut index = 1;
    for (stage, &(t, c, n, s)) in SETTINGS.iter().enumerate() {
        let out = make_divisible(c as f64 * width);
        for i in 0..n {
            let stride = if i > 0 || (small && stage == 1) { 1 } else { s };
            let p = format!("features.{index}");
            let hidden = channels * t;
            let mut y = x;
            if t != 1 {
                y = net.conv(&format!("{p}.expand"), y, channels, hidden, 1, 1, 1, false);
                y = net.bn(&format!("{p}.expand_bn"), y, hidden);
                y = net.op(&format!("{p}.expand_relu"), Op::Relu6, &[y]);
            }
            y = net.conv(
                &format!("{p}.dw"),
                y,
                hidden,
                hidden,
                3,
                stride,
                hidden,
                false,
            );
            y = net.bn(&format!("{p}.dw_bn"), y, hidden);
            y = net.op(&format!("{p}.dw_relu"), Op::Relu6, &[y]);
            y = net.conv(&format!("{p}.project"), y, hidden, out, 1, 1, 1, false);
            y = net.bn(&format!("{p}.project_bn"), y, out);
            x = if stride == 1 && channels == out {
                net.op(&format!("{p}.add"), Op::Add, &[y, x])
            } else {
                y
            };
            channels = out;
            index += 1;
        }
    }
    x = net.conv(
        &format!("features.{index}.conv"),
        x,
        channels,
        last,
        1,
        1,
        1,
        false,
    );
    x = net.bn(&format!("features.{index}.bn"), x, last);
    x = net.op(&format!("features.{index}.relu"), Op::Relu6, &[x]);
    x = net.op("avgpool", Op::GlobalAvgPool, &[x]);
    net.head(x, classes)
}
