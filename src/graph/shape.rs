//! Shape inference: the output shape of each op for the shapes flowing in.

use super::ops::{Hw, Op, Shape};

impl Op {
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
            Op::Embedding { vocab, width } => *vocab == 0 || *width == 0,
            Op::PosEmbedding { tokens, width } => *tokens == 0 || *width == 0,
            Op::Attention {
                heads, head_dim, ..
            } => *heads == 0 || *head_dim == 0,
            Op::LmHead { vocab, width, .. } => *vocab == 0 || *width == 0,
            Op::ClassToken { width } => *width == 0,
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
                // Over the channels of a sequence, at every position.
                [f, t] if f == in_features => Ok(vec![*out_features, *t]),
                other => Err(format!(
                    "declares {in_features} input features, receives shape {other:?}"
                )),
            },
            Op::Embedding { width, .. } => match inputs[0].as_slice() {
                [t] => Ok(vec![*width, *t]),
                other => Err(format!(
                    "reads the [tokens] ids of a sequence, receives shape {other:?}"
                )),
            },
            Op::PosEmbedding { tokens, width } => match inputs[0].as_slice() {
                [c, t] if c == width && t <= tokens => Ok(inputs[0].clone()),
                other => Err(format!(
                    "adds {tokens} positions of width {width} to a [width, tokens] sequence, receives shape {other:?}"
                )),
            },
            Op::Attention {
                heads, head_dim, ..
            } => {
                let channels = heads * head_dim;
                match inputs[0].as_slice() {
                    [c, _] if *c == channels && inputs.iter().all(|s| *s == inputs[0]) => {
                        Ok(inputs[0].clone())
                    }
                    _ => {
                        let shapes: Vec<_> = inputs.iter().map(|s| format!("{s:?}")).collect();
                        Err(format!(
                            "takes queries, keys and values of shape [{channels}, tokens] ({heads} heads of {head_dim}), receives {}",
                            shapes.join(", ")
                        ))
                    }
                }
            }
            Op::ToTokens => {
                let (c, h, w) = spatial(inputs[0])?;
                Ok(vec![c, h * w])
            }
            Op::ClassToken { width } => match inputs[0].as_slice() {
                [c, t] if c == width => Ok(vec![*c, t + 1]),
                other => Err(format!(
                    "puts a token of width {width} before a [width, tokens] sequence, receives shape {other:?}"
                )),
            },
            Op::TakeToken { index } => match inputs[0].as_slice() {
                [c, t] if index < t => Ok(vec![*c]),
                other => Err(format!(
                    "takes position {index} of a [channels, tokens] sequence, receives shape {other:?}"
                )),
            },
            Op::LmHead { vocab, width, .. } => match inputs[0].as_slice() {
                [c, t] if c == width => Ok(vec![*vocab, *t]),
                other => Err(format!(
                    "reads a [{width}, tokens] sequence, receives shape {other:?}"
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
