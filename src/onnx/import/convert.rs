//! One ONNX node at a time into graph ops, with the exporter's patterns folded (ReLU6,
//! global pooling, flatten, MatMul + Add as a linear layer).

use super::attributes::*;
use super::tensor::*;
use super::*;

impl<'a> Importer<'a> {
    pub(super) fn convert(&mut self, node: &'a NodeProto) -> Result<()> {
        let output = node.output.first().cloned().unwrap_or_default();
        let attrs = Attributes { node };
        match node.op_type.as_str() {
            "Constant" => {
                let t = attrs.tensor("value").ok_or_else(|| {
                    self.node_error(node, "only tensor-valued Constant nodes are supported")
                })?;
                self.constants.insert(output.clone(), t);
                self.values.insert(output.clone(), Value::Const(output));
            }
            "Identity" | "Dropout" => {
                let value = match node.input.first().and_then(|n| self.values.get(n)) {
                    Some(v) => v.clone(),
                    None => match self.const_input(node, 0) {
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
                let x = self.node_input(node, 0)?;
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
                let (kernel, stride, padding) =
                    window(&attrs, Some([kh, kw])).map_err(|e| self.node_error(node, e))?;
                if kh != kw || groups < 1 || out_c < 1 || in_per_group < 1 {
                    return Err(self.node_error(node, format!("weight dims {:?} with group {groups}: only square kernels and positive sizes are supported", weight.dims)));
                }
                let bias = self.optional_bias(node)?;
                let op = Op::Conv2d {
                    in_channels: (in_per_group * groups) as usize,
                    out_channels: out_c as usize,
                    kernel,
                    stride,
                    padding,
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
                if (eps - 1e-5).abs() > 1e-9 {
                    return Err(self.node_error(node, format!("epsilon {eps} is not supported; autoprune's BatchNorm uses 1e-5 (PyTorch's default)")));
                }
                let mut parts = Vec::new();
                for (slot, what) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")] {
                    parts.push(self.required_const(node, slot, what)?);
                }
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
                    match self.const_input(node, slot) {
                        Some(t) => {
                            let v = self.read(node, t)?;
                            match v.values.as_slice() {
                                [v] => Ok(Some(*v)),
                                _ => Err(self.node_error(node, "its bounds must be scalars")),
                            }
                        }
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
                let x = self.node_input(node, 0)?;
                if node.output.iter().skip(1).any(|o| !o.is_empty()) {
                    return Err(self.node_error(node, "its indices output is not supported"));
                }
                let (kernel, stride, padding) =
                    window(&attrs, None).map_err(|e| self.node_error(node, e))?;
                if attrs.int("ceil_mode").unwrap_or(0) != 0 {
                    return Err(self.node_error(node, "ceil_mode = 1 is not supported"));
                }
                let op = if node.op_type == "MaxPool" {
                    if attrs.int("storage_order").unwrap_or(0) != 0 {
                        return Err(self.node_error(node, "storage_order = 1 is not supported"));
                    }
                    Op::MaxPool {
                        kernel,
                        stride,
                        padding,
                    }
                } else {
                    if padding > 0 && attrs.int("count_include_pad").unwrap_or(0) == 0 {
                        return Err(self.node_error(node, "padding with count_include_pad = 0 is not supported (PyTorch's AvgPool2d default counts the padding)"));
                    }
                    Op::AvgPool {
                        kernel,
                        stride,
                        padding,
                    }
                };
                let base = if node.op_type == "MaxPool" {
                    "max_pool"
                } else {
                    "avg_pool"
                };
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
                let axes: Vec<i64> = match self.const_input(node, 1) {
                    Some(t) => self
                        .read(node, t)?
                        .values
                        .iter()
                        .map(|&v| v as i64)
                        .collect(),
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
                        self.fold_bias(node, x, bias)?;
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
        match self.const_input(node, 2) {
            // A bias may come as [1, out]: it is one value per output either way.
            Some(t) => Ok(Some(flat(self.read(node, t)?))),
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

    fn store_weights(
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

    /// `Add(MatMul(x, W), b)`: the bias of the linear layer the MatMul became.
    fn fold_bias(&mut self, node: &NodeProto, x: usize, bias: WeightTensor) -> Result<()> {
        let out_features = match self.nodes[x].op {
            Op::Linear {
                out_features,
                bias: false,
                ..
            } => out_features,
            _ => {
                return Err(self.node_error(
                    node,
                    "adding a constant is supported only as the bias of a MatMul",
                ))
            }
        };
        if bias.values.len() != out_features {
            return Err(self.node_error(
                node,
                format!(
                    "bias has {} values for {out_features} outputs",
                    bias.values.len()
                ),
            ));
        }
        if let Op::Linear { bias: has_bias, .. } = &mut self.nodes[x].op {
            *has_bias = true;
        }
        let name = format!("{}.bias", self.nodes[x].name);
        self.weights.push((name, flat(bias)));
        Ok(())
    }
}
