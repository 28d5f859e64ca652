//! The operations a model graph is made of, and their output shapes and costs.

use serde::{Deserialize, Serialize};

pub use super::hw::Hw;

/// Shape of one sample flowing along an edge, without the batch dimension:
/// `[channels, height, width]` for feature maps, `[features]` for vectors.
pub type Shape = Vec<usize>;

/// An element-wise activation (no weights, channels one to one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Sigmoid,
    /// PyTorch's `hardsigmoid`: `relu6(x + 3) / 6`.
    HardSigmoid,
    /// PyTorch's `hardswish`: `x · relu6(x + 3) / 6`.
    HardSwish,
    /// `x · sigmoid(x)`.
    Silu,
    /// The exact GELU (erf).
    Gelu,
    /// GELU's tanh approximation.
    GeluTanh,
}

impl Activation {
    /// Every activation, for parsing and tests.
    pub const ALL: [Activation; 6] = [
        Activation::Sigmoid,
        Activation::HardSigmoid,
        Activation::HardSwish,
        Activation::Silu,
        Activation::Gelu,
        Activation::GeluTanh,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Activation::Sigmoid => "sigmoid",
            Activation::HardSigmoid => "hard_sigmoid",
            Activation::HardSwish => "hard_swish",
            Activation::Silu => "silu",
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_tanh",
        }
    }
}

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
        kernel: Hw,
        stride: Hw,
        padding: Hw,
        #[serde(default = "Hw::one", skip_serializing_if = "Hw::is_one")]
        dilation: Hw,
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
    /// Sigmoid, hard sigmoid, hard swish, SiLU or GELU, element-wise.
    Act {
        act: Activation,
    },
    MaxPool {
        kernel: Hw,
        stride: Hw,
        padding: Hw,
        /// Output sizes rounded up (PyTorch's `ceil_mode`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ceil: bool,
    },
    AvgPool {
        kernel: Hw,
        stride: Hw,
        padding: Hw,
    },
    GlobalAvgPool,
    Flatten,
    /// Zero padding of a feature map, per side.
    Pad {
        top: usize,
        left: usize,
        bottom: usize,
        right: usize,
    },
    Add,
    /// Element-wise product of its inputs, a `[C, 1, 1]` input broadcast over H and W
    /// (squeeze-and-excitation's gate).
    Mul,
    Concat,
    /// Softmax over the channels (the features of a vector).
    Softmax,
    /// Layer normalisation over the channels at each position (of a feature map, or over
    /// the features of a vector), with a learned scale and shift per channel (ConvNeXt).
    LayerNorm {
        features: usize,
        eps: f64,
    },
    /// ShuffleNet's channel shuffle: channel `g · (C / groups) + k` moves to
    /// `k · groups + g`.
    ChannelShuffle {
        groups: usize,
    },
    /// Channels `start .. start + len` of the input (one output of a Split).
    Narrow {
        start: usize,
        len: usize,
    },
    Output,
}

/// Op families, used in feature vectors (one-hot in the graph agent's encoder). Ops added
/// after the shipped agents were trained share the code of the family they behave like
/// ([`Op::type_code`]), so the encoder's width and the shipped agents stay valid.
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
    /// Short type name: the family of [`OP_TYPES`], or the op's own name for the ops that
    /// share a family's code.
    pub fn type_name(&self) -> &'static str {
        match self {
            Op::Act { act } => act.name(),
            Op::Pad { .. } => "pad",
            Op::Mul => "mul",
            Op::Softmax => "softmax",
            Op::LayerNorm { .. } => "layer_norm",
            Op::ChannelShuffle { .. } => "channel_shuffle",
            Op::Narrow { .. } => "narrow",
            _ => OP_TYPES[self.type_code()],
        }
    }

    /// Index of the op's family in [`OP_TYPES`].
    pub fn type_code(&self) -> usize {
        match self {
            Op::Input { .. } => 0,
            Op::Conv2d { .. } if self.is_depthwise() => 2,
            Op::Conv2d { .. } => 1,
            Op::Linear { .. } => 3,
            Op::BatchNorm { .. } | Op::LayerNorm { .. } => 4,
            Op::Relu | Op::Act { .. } | Op::Softmax => 5,
            Op::Relu6 => 6,
            Op::MaxPool { .. } => 7,
            Op::AvgPool { .. } => 8,
            Op::GlobalAvgPool => 9,
            Op::Flatten | Op::Pad { .. } => 10,
            Op::Add | Op::Mul => 11,
            Op::Concat | Op::ChannelShuffle { .. } | Op::Narrow { .. } => 12,
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
            Op::Add | Op::Mul | Op::Concat => None,
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
        let zero_size = match self {
            Op::Input { shape } => shape.is_empty() || shape.contains(&0),
            Op::Conv2d {
                in_channels,
                out_channels,
                kernel,
                dilation,
                ..
            } => {
                *in_channels == 0
                    || *out_channels == 0
                    || kernel.area() == 0
                    || dilation.area() == 0
            }
            Op::Linear {
                in_features,
                out_features,
                ..
            } => *in_features == 0 || *out_features == 0,
            Op::BatchNorm { features } | Op::LayerNorm { features, .. } => *features == 0,
            Op::ChannelShuffle { groups } => *groups == 0,
            Op::Narrow { len, .. } => *len == 0,
            Op::MaxPool { kernel, .. } | Op::AvgPool { kernel, .. } => kernel.area() == 0,
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
                dilation,
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
                let (oh, ow) = window((h, w), *kernel, *stride, *padding, *dilation, false)?;
                Ok(vec![*out_channels, oh, ow])
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
            Op::Relu | Op::Relu6 | Op::Act { .. } | Op::Output => Ok(inputs[0].clone()),
            Op::LayerNorm { features, eps } => {
                if inputs[0].first() != Some(features) {
                    return Err(format!(
                        "declares {features} features, receives shape {:?}",
                        inputs[0]
                    ));
                }
                if !(eps.is_finite() && *eps >= 0.0) {
                    return Err(format!("epsilon {eps} must be finite and at least 0"));
                }
                Ok(inputs[0].clone())
            }
            Op::ChannelShuffle { groups } => {
                let (c, _, _) = spatial(inputs[0])?;
                if c % groups != 0 {
                    return Err(format!("{groups} groups do not divide {c} channels"));
                }
                Ok(inputs[0].clone())
            }
            Op::Narrow { start, len } => {
                let c = inputs[0].first().copied().unwrap_or(0);
                if start + len > c {
                    return Err(format!("takes channels {start}..{} of {c}", start + len));
                }
                let mut out = inputs[0].clone();
                out[0] = *len;
                Ok(out)
            }
            Op::Softmax => {
                if inputs[0].len() != 1 {
                    return Err(format!(
                        "takes the [features] vector of the logits, receives shape {:?}",
                        inputs[0]
                    ));
                }
                Ok(inputs[0].clone())
            }
            Op::MaxPool {
                kernel,
                stride,
                padding,
                ceil,
            } => {
                let (c, h, w) = spatial(inputs[0])?;
                let (oh, ow) = window((h, w), *kernel, *stride, *padding, Hw::one(), *ceil)?;
                Ok(vec![c, oh, ow])
            }
            Op::AvgPool {
                kernel,
                stride,
                padding,
            } => {
                let (c, h, w) = spatial(inputs[0])?;
                let (oh, ow) = window((h, w), *kernel, *stride, *padding, Hw::one(), false)?;
                Ok(vec![c, oh, ow])
            }
            Op::GlobalAvgPool => {
                let (c, _, _) = spatial(inputs[0])?;
                Ok(vec![c, 1, 1])
            }
            Op::Flatten => Ok(vec![inputs[0].iter().product()]),
            Op::Pad {
                top,
                left,
                bottom,
                right,
            } => {
                let (c, h, w) = spatial(inputs[0])?;
                let too_large = [top, left, bottom, right].iter().any(|&&p| p > 1 << 12);
                if too_large {
                    return Err("padding larger than 4096 is not supported".into());
                }
                Ok(vec![c, h + top + bottom, w + left + right])
            }
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
            Op::Mul => {
                // Same rank and channels; H and W equal or 1 (broadcast).
                let mut out = inputs[0].clone();
                let fits = inputs.iter().all(|s| {
                    s.len() == out.len()
                        && s.first() == out.first()
                        && s.iter()
                            .zip(&out)
                            .skip(1)
                            .all(|(a, b)| a == b || *a == 1 || *b == 1)
                });
                if !fits {
                    let shapes: Vec<_> = inputs.iter().map(|s| format!("{s:?}")).collect();
                    return Err(format!(
                        "multiplies tensors that do not broadcast (same channels, H and W equal or 1): {}",
                        shapes.join(" · ")
                    ));
                }
                for s in &inputs[1..] {
                    for (o, &d) in out.iter_mut().zip(s.iter()) {
                        *o = (*o).max(d);
                    }
                }
                Ok(out)
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

    /// Shape of the op's weight tensor: `[out, in / groups, kh, kw]` for a conv, `[out, in]`
    /// for a linear layer; `None` for ops without one (BatchNorm's scale is a per-channel
    /// vector).
    pub fn weight_shape(&self) -> Option<Vec<usize>> {
        match self {
            Op::Conv2d {
                in_channels,
                out_channels,
                kernel,
                groups,
                ..
            } => Some(vec![
                *out_channels,
                in_channels / groups,
                kernel.h,
                kernel.w,
            ]),
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
            Op::BatchNorm { features } | Op::LayerNorm { features, .. } => 2 * features,
            _ => 0,
        }
    }

    /// Multiply-accumulates for one sample, given the op's output shape. Only convolutions and
    /// linear layers are counted, as in the published counts (BatchNorm folds into the conv;
    /// activations, pools, adds and squeeze-and-excitation's products are not
    /// multiply-accumulates).
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
                out_channels * (in_channels / groups) * kernel.area() * spatial
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

/// Output sizes of a sliding window over `(h, w)`, as PyTorch computes them (with
/// `ceil_mode`, a last window must start inside the input or its left padding).
fn window(
    (h, w): (usize, usize),
    kernel: Hw,
    stride: Hw,
    padding: Hw,
    dilation: Hw,
    ceil: bool,
) -> Result<(usize, usize), String> {
    if stride.h == 0 || stride.w == 0 {
        return Err("stride must be at least 1".into());
    }
    let axis = |size: usize, k: usize, s: usize, p: usize, d: usize| -> Result<usize, String> {
        let span = d * (k - 1) + 1;
        let room = (size + 2 * p)
            .checked_sub(span)
            .ok_or_else(|| format!("kernel {span} is larger than the padded input {size}"))?;
        let mut out = if ceil { room.div_ceil(s) } else { room / s } + 1;
        if ceil && (out - 1) * s >= size + p {
            out -= 1;
        }
        Ok(out)
    };
    Ok((
        axis(h, kernel.h, stride.h, padding.h, dilation.h)?,
        axis(w, kernel.w, stride.w, padding.w, dilation.w)?,
    ))
}
