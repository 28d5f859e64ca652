//! The operations a model graph is made of, and their output shapes and costs.

use serde::{Deserialize, Serialize};

/// Shape of one sample flowing along an edge, without the batch dimension:
/// `[channels, height, width]` for feature maps, `[features]` for vectors.
pub type Shape = Vec<usize>;

/// One operation. Channel counts are stored on the op so a graph is self-describing;
/// shape inference checks them against what actually flows in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    Input {
        shape: Shape,
    },
    Conv2d {
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        groups: usize,
        bias: bool,
    },
    Linear {
        in_features: usize,
        out_features: usize,
        bias: bool,
    },
    BatchNorm {
        features: usize,
    },
    Relu,
    Relu6,
    MaxPool {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    AvgPool {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    GlobalAvgPool,
    Flatten,
    Add,
    Concat,
    Output,
}

/// Numeric code of each op type, used in feature vectors.
pub const OP_TYPES: [&str; 14] = [
    "input",
    "conv2d",
    "depthwise_conv2d",
    "linear",
    "batch_norm",
    "relu",
    "relu6",
    "max_pool",
    "avg_pool",
    "global_avg_pool",
    "flatten",
    "add",
    "concat",
    "output",
];

impl Op {
    /// Short type name, as in [`OP_TYPES`].
    pub fn type_name(&self) -> &'static str {
        OP_TYPES[self.type_code()]
    }

    /// Index of the op type in [`OP_TYPES`].
    pub fn type_code(&self) -> usize {
        match self {
            Op::Input { .. } => 0,
            Op::Conv2d { .. } if self.is_depthwise() => 2,
            Op::Conv2d { .. } => 1,
            Op::Linear { .. } => 3,
            Op::BatchNorm { .. } => 4,
            Op::Relu => 5,
            Op::Relu6 => 6,
            Op::MaxPool { .. } => 7,
            Op::AvgPool { .. } => 8,
            Op::GlobalAvgPool => 9,
            Op::Flatten => 10,
            Op::Add => 11,
            Op::Concat => 12,
            Op::Output => 13,
        }
    }

    /// A convolution with one group per input channel and as many outputs as inputs: each
    /// output channel reads only its own input channel, so the two are one channel space.
    pub fn is_depthwise(&self) -> bool {
        matches!(self, Op::Conv2d { in_channels, out_channels, groups, .. }
            if *groups > 1 && groups == in_channels && in_channels == out_channels)
    }

    /// Ops that hold learned weights (and so can have their output channels pruned).
    pub fn has_weights(&self) -> bool {
        matches!(
            self,
            Op::Conv2d { .. } | Op::Linear { .. } | Op::BatchNorm { .. }
        )
    }

    /// How many inputs the op takes: `None` means one or more.
    pub fn arity(&self) -> Option<usize> {
        match self {
            Op::Input { .. } => Some(0),
            Op::Add | Op::Concat => None,
            _ => Some(1),
        }
    }

    /// Output shape for the given input shapes, or a message saying why they do not fit.
    pub fn infer_shape(&self, inputs: &[&Shape]) -> Result<Shape, String> {
        if let Some(n) = self.arity() {
            if inputs.len() != n {
                return Err(format!("takes {n} input(s), has {}", inputs.len()));
            }
        } else if inputs.is_empty() {
            return Err("takes at least one input, has none".into());
        }
        let spatial = |shape: &Shape| -> Result<(usize, usize, usize), String> {
            match shape.as_slice() {
                [c, h, w] => Ok((*c, *h, *w)),
                other => Err(format!("expects a [C, H, W] feature map, got {other:?}")),
            }
        };
        let window = |size: usize, kernel: usize, stride: usize, padding: usize| {
            (size + 2 * padding)
                .checked_sub(kernel)
                .map(|span| span / stride + 1)
                .ok_or_else(|| format!("kernel {kernel} is larger than the padded input {size}"))
        };
        let zero_size = match self {
            Op::Input { shape } => shape.is_empty() || shape.contains(&0),
            Op::Conv2d {
                in_channels,
                out_channels,
                kernel,
                ..
            } => *in_channels == 0 || *out_channels == 0 || *kernel == 0,
            Op::Linear {
                in_features,
                out_features,
                ..
            } => *in_features == 0 || *out_features == 0,
            Op::BatchNorm { features } => *features == 0,
            Op::MaxPool { kernel, .. } | Op::AvgPool { kernel, .. } => *kernel == 0,
            _ => false,
        };
        if zero_size {
            return Err("sizes (shape, channels, features, kernel) must be at least 1".into());
        }
        match self {
            Op::Input { shape } => Ok(shape.clone()),
            Op::Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                groups,
                ..
            } => {
                let (c, h, w) = spatial(inputs[0])?;
                if c != *in_channels {
                    return Err(format!(
                        "declares {in_channels} input channels, receives {c}"
                    ));
                }
                if *groups == 0 || in_channels % groups != 0 || out_channels % groups != 0 {
                    return Err(format!(
                        "groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
                    ));
                }
                if *stride == 0 {
                    return Err("stride must be at least 1".into());
                }
                Ok(vec![
                    *out_channels,
                    window(h, *kernel, *stride, *padding)?,
                    window(w, *kernel, *stride, *padding)?,
                ])
            }
            Op::Linear {
                in_features,
                out_features,
                ..
            } => match inputs[0].as_slice() {
                [f] if f == in_features => Ok(vec![*out_features]),
                other => Err(format!(
                    "declares {in_features} input features, receives shape {other:?}"
                )),
            },
            Op::BatchNorm { features } => {
                if inputs[0].first() != Some(features) {
                    return Err(format!(
                        "declares {features} features, receives shape {:?}",
                        inputs[0]
                    ));
                }
                Ok(inputs[0].clone())
            }
            Op::Relu | Op::Relu6 | Op::Output => Ok(inputs[0].clone()),
            Op::MaxPool {
                kernel,
                stride,
                padding,
            }
            | Op::AvgPool {
                kernel,
                stride,
                padding,
            } => {
                let (c, h, w) = spatial(inputs[0])?;
                if *stride == 0 {
                    return Err("stride must be at least 1".into());
                }
                Ok(vec![
                    c,
                    window(h, *kernel, *stride, *padding)?,
                    window(w, *kernel, *stride, *padding)?,
                ])
            }
            Op::GlobalAvgPool => {
                let (c, _, _) = spatial(inputs[0])?;
                Ok(vec![c, 1, 1])
            }
            Op::Flatten => Ok(vec![inputs[0].iter().product()]),
            Op::Add => {
                if inputs.iter().any(|s| *s != inputs[0]) {
                    let shapes: Vec<_> = inputs.iter().map(|s| format!("{s:?}")).collect();
                    return Err(format!(
                        "adds tensors of different shapes: {}",
                        shapes.join(" + ")
                    ));
                }
                Ok(inputs[0].clone())
            }
            Op::Concat => {
                if inputs.iter().any(|s| s.is_empty()) {
                    return Err("concatenates a tensor with no channel dimension".into());
                }
                let rest = &inputs[0][1..];
                if inputs.iter().any(|s| &s[1..] != rest) {
                    let shapes: Vec<_> = inputs.iter().map(|s| format!("{s:?}")).collect();
                    return Err(format!(
                        "concatenates along channels tensors whose other dimensions differ: {}",
                        shapes.join(", ")
                    ));
                }
                let mut out = inputs[0].clone();
                out[0] = inputs.iter().map(|s| s[0]).sum();
                Ok(out)
            }
        }
    }

    /// Shape of the op's weight tensor: `[out, in / groups, k, k]` for a conv, `[out, in]` for
    /// a linear layer; `None` for ops without one (BatchNorm's scale is a per-channel vector).
    pub fn weight_shape(&self) -> Option<Vec<usize>> {
        match self {
            Op::Conv2d {
                in_channels,
                out_channels,
                kernel,
                groups,
                ..
            } => Some(vec![*out_channels, in_channels / groups, *kernel, *kernel]),
            Op::Linear {
                in_features,
                out_features,
                ..
            } => Some(vec![*out_features, *in_features]),
            _ => None,
        }
    }

    /// Weights (not biases) of a conv or linear op; 0 for other ops.
    pub fn weight_count(&self) -> usize {
        self.weight_shape().map(|s| s.iter().product()).unwrap_or(0)
    }

    /// Number of learned parameters (BatchNorm: scale and shift; running statistics are
    /// buffers, not parameters).
    pub fn params(&self) -> usize {
        match self {
            Op::Conv2d {
                out_channels, bias, ..
            } => self.weight_count() + usize::from(*bias) * out_channels,
            Op::Linear {
                out_features, bias, ..
            } => self.weight_count() + usize::from(*bias) * out_features,
            Op::BatchNorm { features } => 2 * features,
            _ => 0,
        }
    }

    /// Multiply-accumulates for one sample, given the op's output shape. Only convolutions and
    /// linear layers are counted, as in the published counts (BatchNorm folds into the conv,
    /// activations, pools and adds are not multiply-accumulates).
    pub fn flops(&self, out_shape: &Shape) -> usize {
        match self {
            Op::Conv2d {
                in_channels,
                out_channels,
                kernel,
                groups,
                ..
            } => {
                let spatial: usize = out_shape[1..].iter().product();
                out_channels * (in_channels / groups) * kernel * kernel * spatial
            }
            Op::Linear {
                in_features,
                out_features,
                ..
            } => in_features * out_features,
            _ => 0,
        }
    }
}
