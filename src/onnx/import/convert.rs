//! One ONNX node at a time into graph ops, with the exporter's patterns folded (ReLU6,
//! global pooling, flatten, MatMul + Add as a linear layer).

use super::attributes::*;
use super::tensor::*;
use super::*;
use crate::graph::{Activation, Hw};

/// The epsilon autoprune's BatchNorm adds to the variance (PyTorch's default).
const BN_EPS: f32 = 1e-5;

impl<'a> Importer<'a> {
    pub(super) fn convert(&mut self, node: &'a NodeProto) -> Result<()> {
        let output = node.output.first().cloned().unwrap_or_default();
        let attrs = Attributes { node };
        match node.op_type.as_str() {
            "Constant" => {
                if let Some(t) = attrs.tensor("value") {
                    self.constants.insert(output.clone(), t);
                } else {
                    let (dims, values): (Vec<i64>, Vec<f32>) =
                        if let Some(v) = attrs.ints("value_ints") {
                            (vec![v.len() as i64], v.iter().map(|&x| x as f32).collect())
                        } else if let Some(v) =
                            attrs.get("value_floats").filter(|a| !a.floats.is_empty())
                        {
                            (vec![v.floats.len() as i64], v.floats.clone())
                        } else if let Some(v) = attrs.get("value_int") {
                            (vec![], vec![v.i as f32])
                        } else if let Some(v) = attrs.get("value_float") {
                            (vec![], vec![v.f])
                        } else {
                            return Err(self.node_error(
                                node,
                                "only Constant nodes holding a tensor or numbers are supported",
                            ));
                        };
                    self.folded
                        .insert(output.clone(), WeightTensor { dims, values });
                }
                self.values.insert(output.clone(), Value::Const(output));
            }
            "Identity" | "Dropout" => {
                let value = match node.input.first().and_then(|n| self.values.get(n)) {
                    Some(v) => v.clone(),
                    None => match self.const_value(node, 0)? {
                        Some(_) => Value::Const(node.input[0].clone()),
                        None => {
                            return Err(self
                                .node_error(node, "its input is not produced by an earlier node"))
                        }
                    },
                };
                self.values.insert(output, value);
            }
            "Conv" => {
                let mut x = self.node_input(node, 0)?;
                let weight = self.required_const(node, 1, "weight")?;
                let &[out_c, in_per_group, kh, kw] = weight.dims.as_slice() else {
                    return Err(self.node_error(
                        node,
                        format!(
                            "weight has dims {:?}; only 2-D convolutions are supported",
                            weight.dims
                        ),
                    ));
                };
                let groups = attrs.int("group").unwrap_or(1);
                let window =
                    window(&attrs, Some([kh, kw])).map_err(|e| self.node_error(node, e))?;
                if groups < 1 || out_c < 1 || in_per_group < 1 {
                    return Err(self.node_error(
                        node,
                        format!(
                            "weight dims {:?} with group {groups}: sizes must be positive",
                            weight.dims
                        ),
                    ));
                }
                let padding = match window.symmetric() {
                    Some(p) => p,
                    None => {
                        x = self.pad_before(node, x, window.pads)?;
                        Hw::square(0)
                    }
                };
                let bias = self.optional_bias(node)?;
                let op = Op::Conv2d {
                    in_channels: (in_per_group * groups) as usize,
                    out_channels: out_c as usize,
                    kernel: window.kernel,
                    stride: window.stride,
                    padding,
                    dilation: window.dilation,
                    groups: groups as usize,
                    bias: bias.is_some(),
                };
                let name = layer_name(node, 1);
                let i = self.add_node(&name, op, &[x], &output)?;
                self.store_weights(i, weight, bias)?;
            }
            "Gemm" => {
                let x = self.node_input(node, 0)?;
                if attrs.int("transA").unwrap_or(0) != 0
                    || attrs.float("alpha").unwrap_or(1.0) != 1.0
                    || attrs.float("beta").unwrap_or(1.0) != 1.0
                {
                    return Err(self.node_error(
                        node,
                        "only transA = 0, alpha = 1 and beta = 1 are supported (a linear layer)",
                    ));
                }
                let mut weight = self.required_const(node, 1, "weight")?;
                if attrs.int("transB").unwrap_or(0) == 0 {
                    weight = transpose(&weight).map_err(|e| self.node_error(node, e))?;
                }
                let bias = self.optional_bias(node)?;
                self.linear(node, x, weight, bias, &output)?;
            }
            "MatMul" => {
                let x = self.node_input(node, 0)?;
                let weight = self.required_const(node, 1, "weight")?;
                let weight = transpose(&weight).map_err(|e| self.node_error(node, e))?;
                self.linear(node, x, weight, None, &output)?;
            }
            "BatchNormalization" => {
                let x = self.node_input(node, 0)?;
                if attrs.int("training_mode").unwrap_or(0) != 0 {
                    return Err(self.node_error(
                        node,
                        "training_mode = 1; export the model in eval mode (model.eval())",
                    ));
                }
                let eps = attrs.float("epsilon").unwrap_or(1e-5);
                if !(0.0..=1.0).contains(&eps) {
                    return Err(self.node_error(
                        node,
                        format!("epsilon {eps} is not supported; only values from 0 to 1"),
                    ));
                }
                let mut parts = Vec::new();
                for (slot, what) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")] {
                    parts.push(self.required_const(node, slot, what)?);
                }
                // autoprune's BatchNorm adds PyTorch's default 1e-5 to the variance; another
                // epsilon (1e-3 in MobileNetV3, GoogLeNet) moves into the stored variance.
                let shift = eps - BN_EPS;
                parts[3].values.iter_mut().for_each(|v| *v += shift);
                let features = parts[0].values.len();
                if parts.iter().any(|p| p.values.len() != features) {
                    return Err(
                        self.node_error(node, "scale, bias, mean and variance differ in length")
                    );
                }
                let i = self.add_node(
                    &layer_name(node, 1),
                    Op::BatchNorm { features },
                    &[x],
                    &output,
                )?;
                let name = self.nodes[i].name.clone();
                for (suffix, part) in ["weight", "bias", "running_mean", "running_var"]
                    .iter()
                    .zip(parts)
                {
                    self.weights.push((format!("{name}.{suffix}"), part));
                }
            }
            "Relu" => {
                let x = self.node_input(node, 0)?;
                self.add_node(&activation_name(node, "relu"), Op::Relu, &[x], &output)?;
            }
            "Clip" => {
                let x = self.node_input(node, 0)?;
                let bound = |slot: usize, attr: &str| -> Result<Option<f32>> {
                    match self.const_value(node, slot)? {
                        Some(v) => match v.values.as_slice() {
                            [v] => Ok(Some(*v)),
                            _ => Err(self.node_error(node, "its bounds must be scalars")),
                        },
                        None if node.input.get(slot).is_some_and(|n| !n.is_empty()) => {
                            Err(self.node_error(node, "its bounds must be constants"))
                        }
                        None => Ok(attrs.float(attr)),
                    }
                };
                let (lo, hi) = (bound(1, "min")?, bound(2, "max")?);
                let op = match (lo, hi) {
                    (Some(lo), Some(hi)) if lo == 0.0 && hi == 6.0 => Op::Relu6,
                    (Some(0.0), None) => Op::Relu,
                    (Some(lo), Some(hi)) if lo == 0.0 && hi == f32::INFINITY => Op::Relu,
                    _ => return Err(self.node_error(node, format!("Clip to [{lo:?}, {hi:?}] is not supported; only ReLU (min 0) and ReLU6 (min 0, max 6)"))),
                };
                let base = if op == Op::Relu6 { "relu6" } else { "relu" };
                self.add_node(&activation_name(node, base), op, &[x], &output)?;
            }
            "MaxPool" | "AveragePool" => {
                let mut x = self.node_input(node, 0)?;
                if node.output.iter().skip(1).any(|o| !o.is_empty()) {
                    return Err(self.node_error(node, "its indices output is not supported"));
                }
                let window = window(&attrs, None).map_err(|e| self.node_error(node, e))?;
                if window.dilation != Hw::square(1) {
                    return Err(self.node_error(
                        node,
                        format!(
                            "dilations {} are not supported for pooling; only 1",
                            window.dilation
                        ),
                    ));
                }
                let ceil = attrs.int("ceil_mode").unwrap_or(0) != 0;
                let max = node.op_type == "MaxPool";
                let (kernel, stride) = (window.kernel, window.stride);
                let op = if max {
                    if attrs.int("storage_order").unwrap_or(0) != 0 {
                        return Err(self.node_error(node, "storage_order = 1 is not supported"));
                    }
                    let padding = window.symmetric().ok_or_else(|| self.node_error(node, format!("pads {:?} differ between the sides of an axis; max pooling supports only symmetric pads", window.pads)))?;
                    Op::MaxPool {
                        kernel,
                        stride,
                        padding,
                        ceil,
                    }
                } else {
                    let padded = window.pads.iter().any(|&p| p > 0);
                    if padded && attrs.int("count_include_pad").unwrap_or(0) == 0 {
                        return Err(self.node_error(node, "padding with count_include_pad = 0 is not supported (PyTorch's AvgPool2d default counts the padding)"));
                    }
                    if ceil {
                        return Err(self.node_error(
                            node,
                            "ceil_mode = 1 is not supported for average pooling",
                        ));
                    }
                    let padding = match window.symmetric() {
                        Some(p) => p,
                        None => {
                            x = self.pad_before(node, x, window.pads)?;
                            Hw::square(0)
                        }
                    };
                    Op::AvgPool {
                        kernel,
                        stride,
                        padding,
                    }
                };
                let base = if max { "max_pool" } else { "avg_pool" };
                self.add_node(&activation_name(node, base), op, &[x], &output)?;
            }
            "GlobalAveragePool" => {
                let x = self.node_input(node, 0)?;
                self.add_node(
                    &activation_name(node, "global_avg_pool"),
                    Op::GlobalAvgPool,
                    &[x],
                    &output,
                )?;
            }
            "ReduceMean" => {
                let x = self.node_input(node, 0)?;
                let axes: Vec<i64> = match self.const_value(node, 1)? {
                    Some(t) => t.values.iter().map(|&v| v as i64).collect(),
                    None => attrs.ints("axes").unwrap_or_default(),
                };
                let mut axes: Vec<i64> = axes
                    .iter()
                    .map(|&a| if a < 0 { a + 4 } else { a })
                    .collect();
                axes.sort_unstable();
                if axes != [2, 3] || self.shapes[x].len() != 3 {
                    return Err(self.node_error(node, format!("ReduceMean over axes {axes:?} is not supported; only over H and W of a [N, C, H, W] map (global average pooling)")));
                }
                let keep = attrs.int("keepdims").unwrap_or(1) != 0;
                let base = activation_name(node, "global_avg_pool");
                if keep {
                    self.add_node(&base, Op::GlobalAvgPool, &[x], &output)?;
                } else {
                    let pool =
                        self.add_node(&base, Op::GlobalAvgPool, &[x], &format!("{output}#pool"))?;
                    self.add_node(&format!("{base}_flat"), Op::Flatten, &[pool], &output)?;
                }
            }
            "Flatten" => {
                let x = self.node_input(node, 0)?;
                if attrs.int("axis").unwrap_or(1) != 1 {
                    return Err(self.node_error(
                        node,
                        "only axis = 1 (keep the batch dimension) is supported",
                    ));
                }
                self.add_node(
                    &activation_name(node, "flatten"),
                    Op::Flatten,
                    &[x],
                    &output,
                )?;
            }
            "Reshape" => {
                let x = self.node_input(node, 0)?;
                let target = self.required_const(node, 1, "shape")?;
                let features: usize = self.shapes[x].iter().product();
                match target.values.as_slice() {
                    [_, f] if *f == -1.0 || *f as usize == features && *f >= 0.0 => {}
                    other => {
                        return Err(self.node_error(node, format!("Reshape to {other:?} is not supported; only to [batch, {features}] (a flatten)")))
                    }
                }
                self.add_node(
                    &activation_name(node, "flatten"),
                    Op::Flatten,
                    &[x],
                    &output,
                )?;
            }
            "Add" => {
                let a = node.input.first().and_then(|n| self.values.get(n)).cloned();
                let b = node.input.get(1).and_then(|n| self.values.get(n)).cloned();
                match (a, b, node.input.len()) {
                    (Some(Value::Node(a)), Some(Value::Node(b)), 2) => {
                        self.add_node(&activation_name(node, "add"), Op::Add, &[a, b], &output)?;
                    }
                    (Some(Value::Node(x)), _, 2) | (_, Some(Value::Node(x)), 2) => {
                        let slot =
                            if matches!(self.values.get(&node.input[0]), Some(Value::Node(_))) {
                                1
                            } else {
                                0
                            };
                        let bias = self.required_const(node, slot, "added constant")?;
                        self.fold_bias(node, x, bias, false)?;
                        self.values.insert(output, Value::Node(x));
                    }
                    _ => {
                        return Err(self.node_error(
                            node,
                            "needs two inputs, at least one of them computed by the model",
                        ))
                    }
                }
            }
            "Concat" => {
                let axis = attrs.int("axis").unwrap_or(1);
                let inputs = (0..node.input.len())
                    .map(|s| self.node_input(node, s))
                    .collect::<Result<Vec<_>>>()?;
                let rank = inputs
                    .first()
                    .map_or(0, |&i| self.shapes[i].len() as i64 + 1);
                if axis != 1 && axis != 1 - rank {
                    return Err(self.node_error(
                        node,
                        format!(
                            "Concat on axis {axis} is not supported; only on channels (axis 1)"
                        ),
                    ));
                }
                self.add_node(
                    &activation_name(node, "concat"),
                    Op::Concat,
                    &inputs,
                    &output,
                )?;
            }
            "Sigmoid" | "HardSigmoid" | "HardSwish" | "Gelu" => {
                let x = self.node_input(node, 0)?;
                let act = match node.op_type.as_str() {
                    "Sigmoid" => Activation::Sigmoid,
                    "HardSwish" => Activation::HardSwish,
                    "HardSigmoid" => {
                        let alpha = attrs.float("alpha").unwrap_or(0.2);
                        let beta = attrs.float("beta").unwrap_or(0.5);
                        if (alpha - 1.0 / 6.0).abs() > 1e-6 || (beta - 0.5).abs() > 1e-6 {
                            return Err(self.node_error(node, format!("alpha {alpha} and beta {beta} are not supported; only PyTorch's hardsigmoid (alpha 1/6, beta 0.5)")));
                        }
                        Activation::HardSigmoid
                    }
                    _ => match attrs.string("approximate").as_deref() {
                        None | Some("none") => Activation::Gelu,
                        Some("tanh") => Activation::GeluTanh,
                        Some(other) => {
                            return Err(self.node_error(
                                node,
                                format!(
                                    "approximate = {other} is not supported; only none and tanh"
                                ),
                            ))
                        }
                    },
                };
                self.add_node(
                    &activation_name(node, act.name()),
                    Op::Act { act },
                    &[x],
                    &output,
                )?;
            }
            "Softmax" => {
                let x = self.node_input(node, 0)?;
                let axis = attrs.int("axis").unwrap_or(-1);
                if self.shapes[x].len() != 1 || !(axis == 1 || axis == -1) {
                    return Err(self.node_error(node, format!("Softmax on axis {axis} of shape {:?} is not supported; only over the logits [batch, classes]", self.shapes[x])));
                }
                self.add_node(
                    &activation_name(node, "softmax"),
                    Op::Softmax,
                    &[x],
                    &output,
                )?;
            }
            "Pad" => {
                let x = self.node_input(node, 0)?;
                let mode = attrs.string("mode").unwrap_or_else(|| "constant".into());
                let value = self
                    .const_value(node, 2)?
                    .and_then(|v| v.values.first().copied())
                    .unwrap_or(0.0);
                if mode != "constant"
                    || value != 0.0
                    || node.input.get(3).is_some_and(|n| !n.is_empty())
                {
                    return Err(self.node_error(node, format!("only zero padding of H and W is supported (mode {mode}, value {value})")));
                }
                let pads = match self.const_value(node, 1)? {
                    Some(p) => fold::dims_of(&p).map_err(|e| self.node_error(node, e))?,
                    None => attrs.ints("pads").unwrap_or_default(),
                };
                let sides = match pads.as_slice() {
                    &[0, 0, t, l, 0, 0, b, r] if [t, l, b, r].iter().all(|&p| (0..=MAX_WINDOW as i64).contains(&p)) => [t as usize, l as usize, b as usize, r as usize],
                    other => return Err(self.node_error(node, format!("pads {other:?} are not supported; only non-negative padding of H and W of a [N, C, H, W] map"))),
                };
                self.add_pad(&activation_name(node, "pad"), x, sides, &output)?;
            }
            "Mul" => {
                let a = node.input.first().and_then(|n| self.values.get(n)).cloned();
                let b = node.input.get(1).and_then(|n| self.values.get(n)).cloned();
                match (a, b, node.input.len()) {
                    (Some(Value::Node(a)), Some(Value::Node(b)), 2) => {
                        self.add_node(&activation_name(node, "mul"), Op::Mul, &[a, b], &output)?;
                    }
                    _ => {
                        return Err(self.node_error(
                            node,
                            "multiplying by a constant is not supported; only the product of two computed tensors (a gate)",
                        ))
                    }
                }
            }
            other => {
                return Err(self.node_error(
                    node,
                    format!("op `{other}` is not supported; autoprune imports {SUPPORTED_OPS}"),
                ))
            }
        }
        Ok(())
    }

    /// A Conv's or Gemm's bias (input 2): absent, or a constant.
    fn optional_bias(&self, node: &NodeProto) -> Result<Option<WeightTensor>> {
        let computed = node
            .input
            .get(2)
            .is_some_and(|n| self.folded.contains_key(n));
        match self.const_value(node, 2)? {
            // A zero bias the exporter computes (shape arithmetic, `optimize=False`) is no
            // parameter of the model.
            Some(t) if computed && t.values.iter().all(|&v| v == 0.0) => Ok(None),
            // A bias may come as [1, out]: it is one value per output either way.
            Some(t) => Ok(Some(flat(t))),
            None if node.input.get(2).is_some_and(|n| !n.is_empty()) => {
                Err(self.node_error(node, "its bias must be a constant stored in the model"))
            }
            None => Ok(None),
        }
    }

    fn linear(
        &mut self,
        node: &NodeProto,
        x: usize,
        weight: WeightTensor,
        bias: Option<WeightTensor>,
        output: &str,
    ) -> Result<()> {
        let &[out_f, in_f] = weight.dims.as_slice() else {
            return Err(self.node_error(
                node,
                format!(
                    "weight has dims {:?}; a linear layer needs a matrix",
                    weight.dims
                ),
            ));
        };
        let op = Op::Linear {
            in_features: in_f as usize,
            out_features: out_f as usize,
            bias: bias.is_some(),
        };
        let i = self.add_node(&layer_name(node, 1), op, &[x], output)?;
        self.store_weights(i, weight, bias)
    }

    pub(super) fn store_weights(
        &mut self,
        i: usize,
        weight: WeightTensor,
        bias: Option<WeightTensor>,
    ) -> Result<()> {
        let name = self.nodes[i].name.clone();
        self.weights.push((format!("{name}.weight"), weight));
        if let Some(bias) = bias {
            self.weights.push((format!("{name}.bias"), bias));
        }
        Ok(())
    }
}
