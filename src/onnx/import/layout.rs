//! Tensors the exporter rearranges, mapped back onto the graph's `[N, C, H, W]` ops:
//! - a Transpose to channels last and back around LayerNorm, MatMul, GELU and Add
//!   (ConvNeXt's blocks): the MatMul becomes a 1×1 conv and the LayerNorm one over channels;
//! - ShuffleNet's channel shuffle (Reshape to groups, Transpose, Reshape back) and its Split
//!   (or SplitToSequence and SequenceAt, without the exporter's optimisation);
//! - a Mul by a per-channel constant right after a conv or linear layer (ConvNeXt's layer
//!   scale), folded into that layer's weights and bias.

use super::attributes::Attributes;
use super::fold::dims_of;
use super::tensor::transpose;
use super::*;
use crate::graph::Hw;

/// Unary ops that act element-wise and so keep a channels-last view as it is.
const ELEMENTWISE: [&str; 8] = [
    "Relu",
    "Gelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Clip",
    "Identity",
    "Dropout",
];

impl<'a> Importer<'a> {
    /// Converts `node` when it rearranges a tensor or reads a rearranged one; false when it
    /// is an ordinary op for [`Importer::convert`].
    pub(super) fn convert_layout(&mut self, node: &'a NodeProto) -> Result<bool> {
        let attrs = Attributes { node };
        let output = node.output.first().cloned().unwrap_or_default();
        let first = node.input.first().and_then(|n| self.values.get(n)).cloned();
        match (node.op_type.as_str(), first) {
            ("Transpose", Some(value)) => {
                let perm = attrs.ints("perm").unwrap_or_default();
                let out = match (&value, perm.as_slice()) {
                    (Value::Node(x), [0, 2, 3, 1]) if self.shapes[*x].len() == 3 => {
                        Value::Last(*x)
                    }
                    (Value::Last(x), [0, 3, 1, 2]) => Value::Node(*x),
                    (&Value::Grouped { node: x, groups }, [0, 2, 1, 3, 4]) => {
                        Value::Swapped { node: x, groups }
                    }
                    _ => {
                        return Err(self.node_error(node, format!(
                            "Transpose with perm {perm:?} is not supported; only to channels last and back (around LayerNorm, MatMul and element-wise ops) and ShuffleNet's channel shuffle"
                        )))
                    }
                };
                self.values.insert(output, out);
            }
            ("Reshape", Some(value)) => {
                let target = self.required_const(node, 1, "shape")?;
                let target = dims_of(&target).map_err(|e| self.node_error(node, e))?;
                match value {
                    Value::Node(x) => {
                        let shape = self.shapes[x].clone();
                        let same = target.len() == shape.len() + 1
                            && target[1..].iter().zip(&shape).all(|(&t, &s)| t == s as i64);
                        let all = (self.batch * shape.iter().product::<usize>()) as i64;
                        match (shape.as_slice(), target.as_slice()) {
                            (_, &[n]) if n == -1 || n == all => {
                                self.values.insert(output, Value::Flat(x));
                            }
                            (&[c, h, w], &[_, g, per, th, tw])
                                if g > 0
                                    && per > 0
                                    && (g as usize).checked_mul(per as usize) == Some(c)
                                    && (th, tw) == (h as i64, w as i64) =>
                            {
                                let groups = g as usize;
                                self.values.insert(output, Value::Grouped { node: x, groups });
                            }
                            _ if same => {
                                self.values.insert(output, Value::Node(x));
                            }
                            _ => return Ok(false),
                        }
                    }
                    Value::Swapped { node: x, groups } => {
                        let shape = &self.shapes[x];
                        let back = target.len() == 4
                            && target[2..] == [shape[1] as i64, shape[2] as i64]
                            && (target[1] == shape[0] as i64 || target[1] == -1);
                        if !back {
                            return Err(self.node_error(node, format!(
                                "Reshape to {target:?} after a grouped Transpose is not supported; only back to [N, C, H, W] (a channel shuffle)"
                            )));
                        }
                        let name = activation_name(node, "channel_shuffle");
                        self.add_node(&name, Op::ChannelShuffle { groups }, &[x], &output)?;
                    }
                    _ => return Ok(false),
                }
            }
            ("LayerNormalization", Some(value)) => {
                let (x, last) = match value {
                    Value::Last(x) => (x, true),
                    Value::Node(x) if self.shapes[x].len() == 1 => (x, false),
                    _ => {
                        return Err(self.node_error(
                            node,
                            "only a LayerNorm over the channels is supported (channels last, or a vector)",
                        ))
                    }
                };
                let axis = attrs.int("axis").unwrap_or(-1);
                if !(axis == -1 || (!last && axis == 1) || (last && axis == 3)) {
                    return Err(self.node_error(node, format!("LayerNorm over axis {axis} is not supported; only over the channels (the last axis)")));
                }
                if node.output.iter().skip(1).any(|o| !o.is_empty()) {
                    return Err(self.node_error(node, "its mean and inverse deviation outputs are not supported"));
                }
                let features = self.shapes[x][0];
                let weight = flat(self.required_const(node, 1, "scale")?);
                let bias = match self.const_value(node, 2)? {
                    Some(b) => flat(b),
                    None => WeightTensor {
                        dims: vec![features as i64],
                        values: vec![0.0; features],
                    },
                };
                if weight.values.len() != features || bias.values.len() != features {
                    return Err(self.node_error(node, format!("scale and bias must hold {features} values, one per channel")));
                }
                let eps = f64::from(attrs.float("epsilon").unwrap_or(1e-5));
                let op = Op::LayerNorm { features, eps };
                let i = self.add_node(&layer_name(node, 1), op, &[x], &output)?;
                self.store_weights(i, weight, Some(bias))?;
                if last {
                    self.values.insert(output, Value::Last(i));
                }
            }
            ("MatMul", Some(Value::Last(x))) => {
                // Over the channels of every position: a 1×1 convolution.
                let weight = self.required_const(node, 1, "weight")?;
                let mut weight = transpose(&weight).map_err(|e| self.node_error(node, e))?;
                let (out_c, in_c) = (weight.dims[0], weight.dims[1]);
                if in_c as usize != self.shapes[x][0] {
                    return Err(self.node_error(node, format!("weight reads {in_c} channels, the input has {}", self.shapes[x][0])));
                }
                weight.dims = vec![out_c, in_c, 1, 1];
                let op = Op::Conv2d {
                    in_channels: in_c as usize,
                    out_channels: out_c as usize,
                    kernel: Hw::square(1),
                    stride: Hw::square(1),
                    padding: Hw::square(0),
                    dilation: Hw::square(1),
                    groups: 1,
                    bias: false,
                };
                let i = self.add_node(&layer_name(node, 1), op, &[x], &output)?;
                self.store_weights(i, weight, None)?;
                self.values.insert(output, Value::Last(i));
            }
            ("Add", Some(Value::Last(a))) => {
                match node.input.get(1).and_then(|n| self.values.get(n)).cloned() {
                    Some(Value::Last(b)) => {
                        let i = self.add_node(&activation_name(node, "add"), Op::Add, &[a, b], &output)?;
                        self.values.insert(output, Value::Last(i));
                    }
                    _ => {
                        let bias = self.required_const(node, 1, "added constant")?;
                        self.fold_bias(node, a, bias, true)?;
                        self.values.insert(output, Value::Last(a));
                    }
                }
            }
            ("Identity" | "Dropout", Some(value)) if !matches!(value, Value::Node(_) | Value::Const(_)) => {
                self.values.insert(output, value);
            }
            (op, Some(Value::Last(x))) if ELEMENTWISE.contains(&op) => {
                // Element-wise: the same op on the [N, C, H, W] tensor, viewed channels last.
                let input = node.input[0].clone();
                self.values.insert(input.clone(), Value::Node(x));
                let converted = self.convert(node);
                self.values.insert(input, Value::Last(x));
                converted?;
                if let Some(&Value::Node(y)) = self.values.get(&output) {
                    self.values.insert(output, Value::Last(y));
                }
            }
            ("Mul", _) => return self.layer_scale(node),
            ("Gather", Some(Value::Flat(x))) => {
                // Every element, in order, back in the node's own shape: the node itself.
                let indices = self.required_const(node, 1, "indices")?;
                let mut dims = vec![self.batch as i64];
                dims.extend(self.shapes[x].iter().map(|&d| d as i64));
                let identity = indices.dims == dims
                    && indices.values.iter().enumerate().all(|(k, &v)| v == k as f32);
                if !identity {
                    return Err(self.node_error(node, "a Gather from a flattened tensor is supported only when it takes every element in order"));
                }
                self.values.insert(output, Value::Node(x));
            }
            ("Split", Some(Value::Node(x))) => {
                let sizes = self.split_sizes(node, x, node.output.len())?;
                let mut start = 0;
                for (k, (len, out)) in sizes.iter().zip(&node.output).enumerate() {
                    let name = activation_name(node, &format!("split{k}"));
                    let op = Op::Narrow { start, len: *len };
                    let name = format!("{name}.{k}");
                    self.add_node(&name, op, &[x], out)?;
                    start += len;
                }
            }
            ("SplitToSequence", Some(Value::Node(x))) => {
                let sizes = self.split_sizes(node, x, 0)?;
                let mut start = 0;
                let mut parts = Vec::new();
                for (k, len) in sizes.iter().enumerate() {
                    let name = format!("{}.{k}", activation_name(node, "split"));
                    let op = Op::Narrow { start, len: *len };
                    parts.push(self.add_node(&name, op, &[x], &format!("{output}#{k}"))?);
                    start += len;
                }
                self.values.insert(output, Value::Seq(parts));
            }
            ("SequenceAt", Some(Value::Seq(parts))) => {
                let at = self.required_const(node, 1, "position")?;
                let at = dims_of(&at).map_err(|e| self.node_error(node, e))?;
                let n = parts.len() as i64;
                let k = match at.as_slice() {
                    [k] if (-n..n).contains(k) => (k + n) % n,
                    _ => {
                        return Err(
                            self.node_error(node, format!("position {at:?} is out of range for {n} parts"))
                        )
                    }
                };
                self.values.insert(output, Value::Node(parts[k as usize]));
            }
            (_, Some(Value::Last(_) | Value::Grouped { .. } | Value::Swapped { .. } | Value::Seq(_) | Value::Flat(_))) => {
                return Err(self.node_error(node, format!(
                    "op `{}` on a rearranged tensor (channels last, grouped or split) is not supported",
                    node.op_type
                )))
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The sizes a Split or SplitToSequence cuts `x`'s channels into: from its `split` input
    /// or attribute, else `parts` equal parts (SplitToSequence: one channel each).
    fn split_sizes(&self, node: &NodeProto, x: usize, parts: usize) -> Result<Vec<usize>> {
        let attrs = Attributes { node };
        let rank = self.shapes[x].len() as i64 + 1;
        let axis = attrs.int("axis").unwrap_or(0);
        if axis != 1 && axis != 1 - rank {
            return Err(self.node_error(
                node,
                format!(
                    "{} on axis {axis} is not supported; only on channels (axis 1)",
                    node.op_type
                ),
            ));
        }
        if attrs.int("keepdims") == Some(0) {
            return Err(self.node_error(node, "keepdims = 0 is not supported"));
        }
        let channels = self.shapes[x][0];
        let split = match self.const_value(node, 1)? {
            Some(t) => Some(dims_of(&t).map_err(|e| self.node_error(node, e))?),
            None => attrs.ints("split"),
        };
        let sizes: Vec<usize> = match split {
            // A scalar: parts of that size (the last one smaller).
            Some(v) if v.len() == 1 && node.op_type == "SplitToSequence" && v[0] > 0 => {
                let size = v[0] as usize;
                (0..channels.div_ceil(size))
                    .map(|k| size.min(channels - k * size))
                    .collect()
            }
            Some(v) if v.iter().all(|&s| s > 0) => v.iter().map(|&s| s as usize).collect(),
            Some(v) => {
                return Err(self.node_error(node, format!("split sizes {v:?} must be positive")))
            }
            None if parts > 0 && channels.is_multiple_of(parts) => vec![channels / parts; parts],
            None if parts == 0 => vec![1; channels],
            None => {
                return Err(self.node_error(
                    node,
                    format!("{channels} channels do not split into {parts} equal parts"),
                ))
            }
        };
        if sizes.iter().sum::<usize>() != channels || (parts > 0 && sizes.len() != parts) {
            return Err(self.node_error(
                node,
                format!(
                    "split sizes {sizes:?} do not cut {channels} channels into its {parts} outputs"
                ),
            ));
        }
        Ok(sizes)
    }

    /// `Mul` by a per-channel constant right after a conv or linear layer (a layer scale):
    /// folded into the layer's weights and bias. Any other Mul is for `convert`.
    fn layer_scale(&mut self, node: &NodeProto) -> Result<bool> {
        let value = |slot: usize| {
            node.input
                .get(slot)
                .and_then(|n| self.values.get(n))
                .cloned()
        };
        let constant = |slot: usize| self.const_value(node, slot).map(|c| c.is_some());
        let (slot, x, last) = match (value(0), value(1)) {
            (Some(Value::Node(x)), _) if constant(1)? => (1, x, false),
            (_, Some(Value::Node(x))) if constant(0)? => (0, x, false),
            (Some(Value::Last(x)), _) if constant(1)? => (1, x, true),
            (_, Some(Value::Last(x))) if constant(0)? => (0, x, true),
            _ => return Ok(false),
        };
        let scale = self.required_const(node, slot, "scale")?;
        let outputs = match self.nodes[x].op {
            Op::Conv2d { out_channels, .. } => out_channels,
            Op::Linear { out_features, .. } => out_features,
            _ => {
                return Err(self.node_error(
                    node,
                    "multiplying by a constant is supported only right after a conv or linear layer (a layer scale)",
                ))
            }
        };
        if !self.per_channel(x, &scale.dims, outputs, last) {
            return Err(self.node_error(node, format!("the constant has shape {:?}; only one factor per channel of the layer before is supported", scale.dims)));
        }
        let name = self.nodes[x].name.clone();
        for (tensor, values) in self.weights.iter_mut() {
            if *tensor == format!("{name}.weight") || *tensor == format!("{name}.bias") {
                let per = values.values.len() / outputs;
                for (k, v) in values.values.iter_mut().enumerate() {
                    *v *= scale.values[k / per];
                }
            }
        }
        // The unscaled output no longer exists: nothing may read it.
        self.values
            .retain(|_, v| !matches!(v, Value::Node(i) | Value::Last(i) if *i == x));
        let output = node.output.first().cloned().unwrap_or_default();
        let out = if last { Value::Last(x) } else { Value::Node(x) };
        self.values.insert(output, out);
        Ok(true)
    }

    /// `Add(MatMul(x, W), b)` or `Add(Conv(x, W), b)`: the bias of the layer before. The
    /// constant holds one value per output channel, laid out along the channels: `[C]` for a
    /// vector or a channels-last map, `[C, 1, 1]` for a `[N, C, H, W]` map.
    pub(super) fn fold_bias(
        &mut self,
        node: &NodeProto,
        x: usize,
        bias: WeightTensor,
        channels_last: bool,
    ) -> Result<()> {
        let outputs = match self.nodes[x].op {
            Op::Linear {
                out_features,
                bias: false,
                ..
            } => out_features,
            Op::Conv2d {
                out_channels,
                bias: false,
                ..
            } => out_channels,
            _ => return Err(self.node_error(
                node,
                "adding a constant is supported only as the bias of a MatMul or Conv without one",
            )),
        };
        if !self.per_channel(x, &bias.dims, outputs, channels_last) {
            return Err(self.node_error(
                node,
                format!(
                    "the added constant has shape {:?}; as a bias of {outputs} outputs it must hold one value per channel",
                    bias.dims
                ),
            ));
        }
        match &mut self.nodes[x].op {
            Op::Linear { bias: has_bias, .. } | Op::Conv2d { bias: has_bias, .. } => {
                *has_bias = true
            }
            _ => {}
        }
        let name = format!("{}.bias", self.nodes[x].name);
        self.weights.push((name, flat(bias)));
        Ok(())
    }

    /// A zero-padding node before a conv or average pool whose pads differ between sides.
    pub(super) fn pad_before(
        &mut self,
        node: &NodeProto,
        x: usize,
        pads: [usize; 4],
    ) -> Result<usize> {
        let name = format!("{}_pad", layer_name(node, 1));
        let output = format!("{}#pad", node.output.first().cloned().unwrap_or_default());
        self.add_pad(&name, x, pads, &output)
    }

    /// A zero-padding node (`pads`: top, left, bottom, right) whose result is `output`.
    pub(super) fn add_pad(
        &mut self,
        name: &str,
        x: usize,
        pads: [usize; 4],
        output: &str,
    ) -> Result<usize> {
        let [top, left, bottom, right] = pads;
        let op = Op::Pad {
            top,
            left,
            bottom,
            right,
        };
        self.add_node(name, op, &[x], output)
    }

    /// A constant of shape `dims` holds one value per channel of `x`'s `channels` outputs,
    /// laid out along the channels: `[C]` for a vector or a channels-last map, `[C, 1, 1]`
    /// for a `[N, C, H, W]` map (leading 1s allowed).
    fn per_channel(&self, x: usize, dims: &[i64], channels: usize, channels_last: bool) -> bool {
        let mut dims = dims.to_vec();
        while dims.len() > 1 && dims[0] == 1 {
            dims.remove(0);
        }
        if self.shapes[x].len() == 3 && !channels_last {
            dims == [channels as i64, 1, 1]
        } else {
            dims == [channels as i64]
        }
    }
}
