//! The operations a model graph is made of, and their output shapes and costs.

use serde::{Deserialize, Serialize};

pub use super::hw::Hw;

/// Shape of one sample flowing along an edge, without the batch dimension:
/// `[channels, height, width]` for feature maps, `[features]` for vectors, `[channels,
/// tokens]` for sequences (a transformer's residual stream, channels first like a feature
/// map), `[tokens]` for the token ids a language model reads.
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
    /// Token embedding: the ids of a `[tokens]` input to a `[width, tokens]` sequence, one
    /// learned row of `[vocab, width]` per id.
    Embedding {
        vocab: usize,
        width: usize,
    },
    /// A learned position embedding (`[tokens, width]`) added to a `[width, tokens]`
    /// sequence.
    PosEmbedding {
        tokens: usize,
        width: usize,
    },
    /// Multi-head scaled dot-product self-attention. Inputs: queries, keys and values, each
    /// `[heads · head_dim, tokens]`; head `h` is channels `h · d .. (h + 1) · d` with `d =
    /// head_dim`, scores scaled by `1 / sqrt(d)`. `causal`: a position attends to itself and
    /// earlier positions only. No weights (the projections are Linear nodes around it).
    Attention {
        heads: usize,
        head_dim: usize,
        causal: bool,
    },
    /// A feature map's positions as a sequence: `[channels, h, w]` to `[channels, h · w]`
    /// (a ViT's patch embedding is the conv before it).
    ToTokens,
    /// A learned class token put before the first position: `[width, tokens]` to `[width,
    /// tokens + 1]`.
    ClassToken {
        width: usize,
    },
    /// One position of a sequence as a vector: `[channels, tokens]` to `[channels]` (a
    /// ViT's class token, at `index` 0).
    TakeToken {
        index: usize,
    },
    /// A language model's output layer: logits `[vocab, tokens]` from a `[width, tokens]`
    /// sequence, with the weight of the Embedding node named `embedding` (tied, as GPT-2
    /// does), no bias and no weights of its own.
    LmHead {
        vocab: usize,
        width: usize,
        embedding: String,
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
            Op::Embedding { .. } => "embedding",
            Op::PosEmbedding { .. } => "pos_embedding",
            Op::Attention { .. } => "attention",
            Op::LmHead { .. } => "lm_head",
            Op::ToTokens => "to_tokens",
            Op::ClassToken { .. } => "class_token",
            Op::TakeToken { .. } => "take_token",
            _ => OP_TYPES[self.type_code()],
        }
    }

    /// Index of the op's family in [`OP_TYPES`].
    pub fn type_code(&self) -> usize {
        match self {
            Op::Input { .. } => 0,
            Op::Conv2d { .. } if self.is_depthwise() => 2,
            Op::Conv2d { .. } => 1,
            Op::Linear { .. } | Op::Embedding { .. } | Op::LmHead { .. } => 3,
            Op::BatchNorm { .. } | Op::LayerNorm { .. } => 4,
            Op::Relu | Op::Act { .. } | Op::Softmax => 5,
            Op::Relu6 => 6,
            Op::MaxPool { .. } => 7,
            Op::AvgPool { .. } => 8,
            Op::GlobalAvgPool | Op::TakeToken { .. } => 9,
            Op::Flatten | Op::Pad { .. } | Op::ToTokens => 10,
            Op::Add | Op::Mul | Op::PosEmbedding { .. } => 11,
            Op::Concat
            | Op::ChannelShuffle { .. }
            | Op::Narrow { .. }
            | Op::Attention { .. }
            | Op::ClassToken { .. } => 12,
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
            Op::Attention { .. } => Some(3),
            _ => Some(1),
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
            Op::Embedding { vocab, width } => vocab * width,
            Op::PosEmbedding { tokens, width } => tokens * width,
            Op::ClassToken { width } => *width,
            _ => 0,
        }
    }

    /// Multiply-accumulates for one sample, given the op's output shape. Convolutions,
    /// linear layers, attention and the LM head are counted, as in the published counts
    /// (BatchNorm folds into the conv; activations, pools, adds, normalisations, embedding
    /// lookups and squeeze-and-excitation's products are not multiply-accumulates). A
    /// sample of a language model is one sequence of `tokens` positions: a linear layer
    /// counts `in · out` per position, attention `2 · tokens² · channels` (scores and the
    /// weighted sum of values, every pair of positions counted, causal or not).
    pub fn flops(&self, out_shape: &Shape) -> usize {
        let positions: usize = out_shape.iter().skip(1).product();
        match self {
            Op::Conv2d {
                in_channels,
                out_channels,
                kernel,
                groups,
                ..
            } => out_channels * (in_channels / groups) * kernel.area() * positions,
            Op::Linear {
                in_features,
                out_features,
                ..
            } => in_features * out_features * positions,
            Op::Attention {
                heads, head_dim, ..
            } => 2 * positions * positions * heads * head_dim,
            Op::LmHead { vocab, width, .. } => vocab * width * positions,
            _ => 0,
        }
    }
}
