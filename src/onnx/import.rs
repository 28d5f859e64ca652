//! ONNX model -> [`ModelGraph`] plus its initializers as named weights.
//!
//! The protobuf is decoded with `tract-onnx`'s message types; tensors (inline, raw, or in an
//! external data file beside the model) are decoded here, with every size checked before
//! anything is allocated. Ops map one to one onto [`Op`], with a few exporter patterns folded:
//! `Clip(0, 6)` is ReLU6, `ReduceMean` over H and W is global average pooling, a `Reshape` to
//! `[batch, features]` is a flatten, and `MatMul` followed by the `Add` of a constant is a
//! linear layer with a bias. Anything else is refused with the op and the node named.

use crate::error::{Error, Result};
use crate::graph::{GraphBuilder, ModelGraph, Op, Shape};
use prost::Message;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use tract_onnx::pb::{self, tensor_proto::DataType, AttributeProto, NodeProto, TensorProto};

/// The ops the importer maps (besides Constant, Identity and Dropout, which carry no work).
pub const SUPPORTED_OPS: &str = "Conv, Gemm, MatMul, BatchNormalization, Relu, Clip, MaxPool, \
AveragePool, GlobalAveragePool, ReduceMean, Flatten, Reshape, Add, Concat, Identity";

/// A tensor read from the file: its dims and values (as f32).
#[derive(Debug, Clone, PartialEq)]
pub struct WeightTensor {
    pub dims: Vec<i64>,
    pub values: Vec<f32>,
}

/// An imported model: its graph and its weights, keyed like a GraphNet's parameters
/// (`<node>.weight`, `<node>.bias`, `<node>.running_mean`, `<node>.running_var`).
#[derive(Debug, Clone)]
pub struct Imported {
    pub graph: ModelGraph,
    pub weights: Vec<(String, WeightTensor)>,
}

/// Largest tensor the importer reads (elements), far above any model it is meant for; a
/// corrupt size field fails here instead of allocating.
const MAX_ELEMENTS: usize = 1 << 31;

/// Largest kernel, stride, padding or image side accepted (sizes beyond it are corrupt).
const MAX_WINDOW: usize = 1 << 12;

/// Reads the ONNX model at `path` (weights inline or in external data files beside it).
pub fn import(path: &Path) -> Result<Imported> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    import_bytes(&bytes, path)
}

/// Imports a model from its bytes; `path` names it in errors, and external data files are
/// looked up in its folder.
pub fn import_bytes(bytes: &[u8], path: &Path) -> Result<Imported> {
    let model = pb::ModelProto::decode(bytes).map_err(|e| {
        Error::data(
            path,
            format!("not a readable ONNX model (truncated or corrupt: {e}); export it again with torch.onnx.export"),
        )
    })?;
    let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
    Importer::new(path, dir).run(&model)
}

/// What a value name in the ONNX graph stands for.
#[derive(Debug, Clone)]
enum Value {
    /// The output of one of our nodes (an index into `Importer::nodes`).
    Node(usize),
    /// A constant: an initializer or a Constant node's output.
    Const(String),
}

/// A node before the graph is built (a MatMul's bias arrives with the Add after it).
#[derive(Debug)]
struct Pending {
    name: String,
    op: Op,
    inputs: Vec<usize>,
}

struct Importer<'a> {
    path: &'a Path,
    dir: PathBuf,
    constants: HashMap<String, &'a TensorProto>,
    values: HashMap<String, Value>,
    nodes: Vec<Pending>,
    /// Per-sample shape of each pending node's output (kept up to date as nodes are added).
    shapes: Vec<Shape>,
    weights: Vec<(String, WeightTensor)>,
    names: std::collections::HashSet<String>,
}

impl<'a> Importer<'a> {
    fn new(path: &'a Path, dir: PathBuf) -> Self {
        Self {
            path,
            dir,
            constants: HashMap::new(),
            values: HashMap::new(),
            nodes: Vec::new(),
            shapes: Vec::new(),
            weights: Vec::new(),
            names: Default::default(),
        }
    }

    fn error(&self, message: impl Into<String>) -> Error {
        Error::data(self.path, message.into())
    }

    fn node_error(&self, node: &NodeProto, message: impl std::fmt::Display) -> Error {
        self.error(format!(
            "node `{}` ({}): {message}",
            node_label(node),
            node.op_type
        ))
    }

    fn run(mut self, model: &'a pb::ModelProto) -> Result<Imported> {
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| self.error("holds no graph; export the model with torch.onnx.export"))?;
        for t in &graph.initializer {
            self.constants.insert(t.name.clone(), t);
        }
        let inputs: Vec<_> = graph
            .input
            .iter()
            .filter(|i| !self.constants.contains_key(&i.name))
            .collect();
        let [input] = inputs.as_slice() else {
            return Err(self.error(format!(
                "has {} inputs; autoprune imports models with one image input",
                inputs.len()
            )));
        };
        let shape = self.input_shape(input)?;
        self.add_node("input", Op::Input { shape }, &[], &input.name)?;
        for node in &graph.node {
            if !node.domain.is_empty() && node.domain != "ai.onnx" {
                return Err(self.node_error(
                    node,
                    format!(
                        "op of domain `{}` is not supported; autoprune imports {SUPPORTED_OPS}",
                        node.domain
                    ),
                ));
            }
            self.convert(node)?;
        }
        let [output] = graph.output.as_slice() else {
            return Err(self.error(format!(
                "has {} outputs; autoprune imports models with one output (the logits)",
                graph.output.len()
            )));
        };
        let last = match self.values.get(&output.name) {
            Some(Value::Node(i)) => *i,
            _ => {
                return Err(self.error(format!(
                    "output `{}` is not computed by any node",
                    output.name
                )))
            }
        };
        let out_name = self.unique_name("output");
        self.push(out_name, Op::Output, vec![last])?;
        let mut builder = GraphBuilder::new();
        let mut index = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let inputs: Vec<_> = node.inputs.iter().map(|&i| index[i]).collect();
            index.push(builder.add(node.name.clone(), node.op.clone(), &inputs));
        }
        let graph = builder
            .build()
            .map_err(|e| self.error(format!("does not form a model autoprune can run: {e}")))?;
        Ok(Imported {
            graph,
            weights: self.weights,
        })
    }

    /// The input's per-sample shape `[C, H, W]` (or `[F]`), the batch dimension dropped.
    fn input_shape(&self, input: &pb::ValueInfoProto) -> Result<Shape> {
        use pb::tensor_shape_proto::dimension::Value as Dim;
        use pb::type_proto::Value as Type;
        let dims = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(Type::TensorType(t)) => t.shape.as_ref().map(|s| &s.dim),
            None => None,
        }
        .ok_or_else(|| {
            self.error(format!(
                "input `{}` has no shape; export with a sample input",
                input.name
            ))
        })?;
        let mut shape = Vec::new();
        for d in dims.iter().skip(1) {
            match d.value {
                Some(Dim::DimValue(v)) if v > 0 && (v as usize) <= MAX_WINDOW => {
                    shape.push(v as usize)
                }
                _ => {
                    return Err(self.error(format!(
                        "input `{}` must have fixed sizes after the batch dimension",
                        input.name
                    )))
                }
            }
        }
        if !(shape.len() == 1 || shape.len() == 3) {
            return Err(self.error(format!(
                "input `{}` has shape {shape:?} per sample; autoprune takes [C, H, W] images or [F] vectors",
                input.name
            )));
        }
        Ok(shape)
    }

    fn unique_name(&mut self, base: &str) -> String {
        let clean: String = base
            .split('.')
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(".");
        let base = if clean.is_empty() {
            "node".into()
        } else {
            clean
        };
        let mut name = base.clone();
        let mut k = 1;
        while self.names.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// Adds a node and infers its shape (so later ops can check theirs).
    fn push(&mut self, name: String, op: Op, inputs: Vec<usize>) -> Result<usize> {
        let shapes: Vec<&Shape> = inputs.iter().map(|&i| &self.shapes[i]).collect();
        let shape = op
            .infer_shape(&shapes)
            .map_err(|e| self.error(format!("node `{name}`: {e}")))?;
        self.nodes.push(Pending { name, op, inputs });
        self.shapes.push(shape);
        Ok(self.nodes.len() - 1)
    }

    fn add_node(&mut self, base: &str, op: Op, inputs: &[usize], output: &str) -> Result<usize> {
        let name = self.unique_name(base);
        let i = self.push(name, op, inputs.to_vec())?;
        self.values.insert(output.to_string(), Value::Node(i));
        Ok(i)
    }

    /// The node behind a graph value (not a constant).
    fn node_input(&self, node: &NodeProto, slot: usize) -> Result<usize> {
        match node.input.get(slot).and_then(|n| self.values.get(n)) {
            Some(Value::Node(i)) => Ok(*i),
            Some(Value::Const(_)) => Err(self.node_error(
                node,
                format!(
                    "input {slot} is a constant; autoprune expects the model's data flow there"
                ),
            )),
            None => Err(self.node_error(
                node,
                format!(
                    "input {slot} (`{}`) is not produced by an earlier node",
                    node.input.get(slot).map(String::as_str).unwrap_or("")
                ),
            )),
        }
    }

    /// The constant behind an input (initializer or Constant node), if any.
    fn const_input(&self, node: &NodeProto, slot: usize) -> Option<&'a TensorProto> {
        let name = node.input.get(slot).filter(|n| !n.is_empty())?;
        match self.values.get(name) {
            Some(Value::Const(c)) => self.constants.get(c).copied(),
            Some(Value::Node(_)) => None,
            None => self.constants.get(name).copied(),
        }
    }

    fn read(&self, node: &NodeProto, tensor: &TensorProto) -> Result<WeightTensor> {
        read_tensor(tensor, &self.dir).map_err(|e| self.node_error(node, e))
    }

    fn required_const(&self, node: &NodeProto, slot: usize, what: &str) -> Result<WeightTensor> {
        let t = self.const_input(node, slot).ok_or_else(|| {
            self.node_error(
                node,
                format!("its {what} (input {slot}) must be a constant stored in the model"),
            )
        })?;
        self.read(node, t)
    }

    fn convert(&mut self, node: &'a NodeProto) -> Result<()> {
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

/// The tensor as a vector (its dims collapsed to one).
fn flat(t: WeightTensor) -> WeightTensor {
    WeightTensor {
        dims: vec![t.values.len() as i64],
        values: t.values,
    }
}

/// A node's label for messages: its name, or its first output when unnamed.
fn node_label(node: &NodeProto) -> &str {
    if node.name.is_empty() {
        node.output.first().map(String::as_str).unwrap_or("?")
    } else {
        &node.name
    }
}

/// A layer's name from its weight initializer (`conv1.weight` -> `conv1`), else the node's.
fn layer_name(node: &NodeProto, weight_slot: usize) -> String {
    match node.input.get(weight_slot) {
        Some(w) if w.ends_with(".weight") && w.len() > ".weight".len() => {
            w.trim_end_matches(".weight").to_string()
        }
        _ => activation_name(node, &node.op_type.to_lowercase()),
    }
}

/// A weightless node's name: the ONNX node's name without the exporter's `node_` prefix.
fn activation_name(node: &NodeProto, fallback: &str) -> String {
    let name = node.name.strip_prefix("node_").unwrap_or(&node.name);
    if name.is_empty() {
        fallback.to_string()
    } else {
        name.replace(['/', ':'], ".")
    }
}

struct Attributes<'a> {
    node: &'a NodeProto,
}

impl<'a> Attributes<'a> {
    fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }
    fn int(&self, name: &str) -> Option<i64> {
        self.get(name).map(|a| a.i)
    }
    fn float(&self, name: &str) -> Option<f32> {
        self.get(name).map(|a| a.f)
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    fn tensor(&self, name: &str) -> Option<&'a TensorProto> {
        self.get(name).and_then(|a| a.t.as_ref())
    }
    fn string(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
}

/// A window attribute with the same value on both axes (`strides`), or `default`.
fn window_attr(
    attrs: &Attributes,
    name: &str,
    default: usize,
) -> std::result::Result<usize, String> {
    match attrs.ints(name).as_deref() {
        None | Some([]) => Ok(default),
        Some(&[a, b]) if a == b && a >= 1 && (a as usize) <= MAX_WINDOW => Ok(a as usize),
        Some(other) => Err(format!(
            "{name} {other:?} is not supported; only equal values on H and W"
        )),
    }
}

/// The square kernel: from `kernel_shape`, or from the weight's dims.
fn square(
    attrs: &Attributes,
    name: &str,
    weight: Option<[i64; 2]>,
) -> std::result::Result<usize, String> {
    let dims = attrs.ints(name).or(weight.map(|w| w.to_vec()));
    match dims.as_deref() {
        Some(&[a, b]) if a == b && a >= 1 && (a as usize) <= MAX_WINDOW => Ok(a as usize),
        Some(other) => Err(format!(
            "{name} {other:?} is not supported; only square 2-D windows"
        )),
        None => Err(format!("{name} is missing")),
    }
}

/// A conv's or pool's (kernel, stride, padding): square, symmetric, no dilation, explicit
/// padding.
fn window(
    attrs: &Attributes,
    weight: Option<[i64; 2]>,
) -> std::result::Result<(usize, usize, usize), String> {
    let kernel = square(attrs, "kernel_shape", weight)?;
    let stride = window_attr(attrs, "strides", 1)?;
    let padding = pads(attrs)?;
    ones(attrs, "dilations")?;
    no_auto_pad(attrs)?;
    Ok((kernel, stride, padding))
}

/// Symmetric padding, the same on every side.
fn pads(attrs: &Attributes) -> std::result::Result<usize, String> {
    match attrs.ints("pads").as_deref() {
        None | Some([]) => Ok(0),
        Some(&[a, b, c, d])
            if a == b && b == c && c == d && a >= 0 && (a as usize) <= MAX_WINDOW =>
        {
            Ok(a as usize)
        }
        Some(other) => Err(format!(
            "pads {other:?} are not supported; only the same padding on every side"
        )),
    }
}

fn ones(attrs: &Attributes, name: &str) -> std::result::Result<(), String> {
    match attrs.ints(name) {
        Some(v) if v.iter().any(|&d| d != 1) => {
            Err(format!("{name} {v:?} are not supported; only 1"))
        }
        _ => Ok(()),
    }
}

fn no_auto_pad(attrs: &Attributes) -> std::result::Result<(), String> {
    match attrs.string("auto_pad").as_deref() {
        None | Some("") | Some("NOTSET") => Ok(()),
        Some(other) => Err(format!(
            "auto_pad {other} is not supported; export with explicit pads"
        )),
    }
}

fn transpose(w: &WeightTensor) -> std::result::Result<WeightTensor, String> {
    let &[rows, cols] = w.dims.as_slice() else {
        return Err(format!(
            "weight has dims {:?}; a linear layer needs a matrix",
            w.dims
        ));
    };
    let (rows, cols) = (rows as usize, cols as usize);
    let mut values = vec![0.0; w.values.len()];
    for r in 0..rows {
        for c in 0..cols {
            values[c * rows + r] = w.values[r * cols + c];
        }
    }
    Ok(WeightTensor {
        dims: vec![cols as i64, rows as i64],
        values,
    })
}

/// Decodes a tensor's values as f32: float, double, int32 and int64 data, inline (typed
/// fields or raw bytes) or in an external data file in `dir`.
pub fn read_tensor(t: &TensorProto, dir: &Path) -> std::result::Result<WeightTensor, String> {
    let label = if t.name.is_empty() {
        "a constant"
    } else {
        &t.name
    };
    let mut count: usize = 1;
    for &d in &t.dims {
        if d < 0 {
            return Err(format!("tensor `{label}` has a negative dimension {d}"));
        }
        count = count
            .checked_mul(d as usize)
            .filter(|&c| c <= MAX_ELEMENTS)
            .ok_or_else(|| format!("tensor `{label}` is too large ({:?})", t.dims))?;
    }
    let (width, kind) = match DataType::try_from(t.data_type) {
        Ok(DataType::Float) => (4, "float"),
        Ok(DataType::Double) => (8, "double"),
        Ok(DataType::Int32) => (4, "int32"),
        Ok(DataType::Int64) => (8, "int64"),
        _ => {
            return Err(format!(
                "tensor `{label}` has data type {}; autoprune reads float, double, int32 and int64",
                t.data_type
            ))
        }
    };
    let external = t.data_location == Some(pb::tensor_proto::DataLocation::External as i32);
    let values: Vec<f32> = if external {
        let bytes = read_external(t, dir, count * width, label)?;
        decode_le(&bytes, kind)
    } else if !t.raw_data.is_empty() {
        if t.raw_data.len() != count * width {
            return Err(format!(
                "tensor `{label}` holds {} bytes for {count} values of {kind}; the file is corrupt",
                t.raw_data.len()
            ));
        }
        decode_le(&t.raw_data, kind)
    } else {
        let v: Vec<f32> = match kind {
            "float" => t.float_data.clone(),
            "double" => t.double_data.iter().map(|&v| v as f32).collect(),
            "int32" => t.int32_data.iter().map(|&v| v as f32).collect(),
            _ => t.int64_data.iter().map(|&v| v as f32).collect(),
        };
        if v.len() != count {
            return Err(format!(
                "tensor `{label}` holds {} values for dims {:?}; the file is corrupt",
                v.len(),
                t.dims
            ));
        }
        v
    };
    Ok(WeightTensor {
        dims: t.dims.clone(),
        values,
    })
}

fn decode_le(bytes: &[u8], kind: &str) -> Vec<f32> {
    match kind {
        "float" => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        "int32" => bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        "double" => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        _ => bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
    }
}

/// The bytes of an externally stored tensor: `location` (relative to the model's folder,
/// never outside it), `offset` and `length`.
fn read_external(
    t: &TensorProto,
    dir: &Path,
    expected: usize,
    label: &str,
) -> std::result::Result<Vec<u8>, String> {
    let key = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.as_str())
    };
    let location = key("location")
        .ok_or_else(|| format!("tensor `{label}` is stored externally but names no file"))?;
    let relative = Path::new(location);
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "tensor `{label}`: external data file `{location}` must be inside the model's folder"
        ));
    }
    let number = |k: &str| -> std::result::Result<Option<u64>, String> {
        key(k)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    format!("tensor `{label}`: external data {k} `{v}` is not a number")
                })
            })
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0);
    if let Some(length) = number("length")? {
        if length != expected as u64 {
            return Err(format!(
                "tensor `{label}`: external data length {length} does not match its {expected} bytes"
            ));
        }
    }
    let path = dir.join(relative);
    let mut file = std::fs::File::open(&path).map_err(|e| {
        format!(
            "tensor `{label}`: cannot open its data file {}: {e}",
            path.display()
        )
    })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size < offset.saturating_add(expected as u64) {
        return Err(format!(
            "tensor `{label}`: {} holds {size} bytes, but the tensor ends at byte {}; the data file is truncated",
            path.display(),
            offset.saturating_add(expected as u64)
        ));
    }
    let mut bytes = vec![0u8; expected];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| {
            format!(
                "tensor `{label}`: {} ends before byte {} ({e}); the data file is truncated",
                path.display(),
                offset + expected as u64
            )
        })?;
    Ok(bytes)
}
