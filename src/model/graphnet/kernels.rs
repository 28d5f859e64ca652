//! What [`GraphNet`](super::GraphNet) computes node by node, as PyTorch computes it:
//! initialisations, activations, attention, normalisations and the loss.

use tch::nn::{self, Init};
use tch::Tensor;

/// PyTorch's default bias initialisation: uniform in ±1/sqrt(fan_in).
pub(super) fn bias_init(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

pub(super) fn normal(stdev: f64) -> Init {
    Init::Randn { mean: 0.0, stdev }
}

/// Kaiming-normal on fan-out for convs (as torchvision's ResNets), fan-in for linear layers.
pub(super) fn kaiming(fan_out: bool) -> Init {
    Init::Kaiming {
        dist: nn::init::NormalOrUniform::Normal,
        fan: if fan_out {
            nn::init::FanInOut::FanOut
        } else {
            nn::init::FanInOut::FanIn
        },
        non_linearity: nn::init::NonLinearity::ReLU,
    }
}

/// An element-wise activation, as PyTorch computes it.
pub(super) fn activate(x: &Tensor, act: crate::graph::Activation) -> Tensor {
    use crate::graph::Activation;
    match act {
        Activation::Sigmoid => x.sigmoid(),
        Activation::HardSigmoid => x.hardsigmoid(),
        Activation::HardSwish => x.hardswish(),
        Activation::Silu => x.silu(),
        Activation::Gelu => x.gelu("none"),
        Activation::GeluTanh => x.gelu("tanh"),
    }
}

/// Multi-head self-attention over `[N, tokens, heads · head_dim]` queries, keys and values
/// (libtorch's scaled dot-product attention, scale `1 / sqrt(head_dim)`).
pub(super) fn attention(args: &[&Tensor], heads: i64, head_dim: i64, causal: bool) -> Tensor {
    let size = args[0].size();
    let (n, t) = (size[0], size[1]);
    let split = |x: &Tensor| x.reshape([n, t, heads, head_dim]).transpose(1, 2);
    Tensor::scaled_dot_product_attention(
        &split(args[0]),
        &split(args[1]),
        &split(args[2]),
        None::<Tensor>,
        0.0,
        causal,
        None,
        false,
    )
    .transpose(1, 2)
    .reshape([n, t, heads * head_dim])
}

/// Mean cross-entropy of `logits` against `labels`: `[N, classes]` against `[N]`, or, for a
/// language model, `[N, tokens, vocab]` against `[N, tokens]` (the mean over every token).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    if logits.dim() == 3 {
        logits
            .flatten(0, 1)
            .cross_entropy_for_logits(&labels.flatten(0, 1))
    } else {
        logits.cross_entropy_for_logits(labels)
    }
}

/// Layer normalisation over the channels `channels` weighs (1 kept, 0 removed): over the
/// last dimension of a sequence `[N, tokens, C]`, over dimension 1 otherwise. With every
/// channel kept it is [`layer_norm`]; removed channels give 0 when their scale and shift are
/// masked too, and the kept ones what a LayerNorm over the kept channels alone gives.
pub(super) fn masked_layer_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    channels: &Tensor,
    eps: f64,
) -> Tensor {
    let dim = if x.dim() == 3 { 2 } else { 1 };
    let mut shape = vec![1i64; x.dim()];
    shape[dim as usize] = -1;
    let m = channels.view(shape.as_slice());
    let count = channels.sum(x.kind()).clamp_min(1e-12);
    let mean = (x * &m).sum_dim_intlist(dim, true, x.kind()) / &count;
    let centred = x - &mean;
    let var = (centred.square() * &m).sum_dim_intlist(dim, true, x.kind()) / &count;
    centred / (var + eps).sqrt() * weight.view(shape.as_slice()) + bias.view(shape.as_slice())
}

/// Layer normalisation over dimension 1 (the channels of `[N, C, H, W]`, the features of
/// `[N, C]`), with a per-channel scale and shift.
pub(super) fn layer_norm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f64) -> Tensor {
    let mean = x.mean_dim(1, true, x.kind());
    let centred = x - &mean;
    let var = centred.square().mean_dim(1, true, x.kind());
    let mut shape = vec![-1i64];
    shape.extend(std::iter::repeat_n(1, x.dim().saturating_sub(2)));
    let y = centred / (var + eps).sqrt() * weight.view(shape.as_slice());
    match bias {
        Some(b) => y + b.view(shape.as_slice()),
        None => y,
    }
}
