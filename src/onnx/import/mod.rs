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

mod attributes;
mod convert;
mod fold;
mod layout;
mod tensor;

pub use tensor::read_tensor;

/// The ops the importer maps (besides Constant, Identity and Dropout, which carry no work).
pub const SUPPORTED_OPS: &str = "Conv, Gemm, MatMul, BatchNormalization, LayerNormalization \
(over channels), Relu, Clip, Sigmoid, HardSigmoid, HardSwish, Gelu, Softmax, MaxPool, AveragePool, \
GlobalAveragePool, ReduceMean, Flatten, Reshape, Pad, Add, Mul, Concat, Split, SplitToSequence, \
SequenceAt, Transpose (to channels last and back, or a channel shuffle), Identity, Dropout, and \
shape arithmetic on constants (Shape, Gather, Unsqueeze, Concat, Expand, ConstantOfShape, ...)";

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
    /// A node's `[N, C, H, W]` output viewed channels last (`[N, H, W, C]`, a Transpose).
    Last(usize),
    /// A node's output reshaped to `[N, groups, C / groups, H, W]` (a channel shuffle's first
    /// step).
    Grouped { node: usize, groups: usize },
    /// The same with the two group axes swapped (its second step).
    Swapped { node: usize, groups: usize },
    /// The parts of a SplitToSequence, in order.
    Seq(Vec<usize>),
    /// A node's output flattened with its batch into one vector (before a Gather of every
    /// element in order, the exporter's form of an `as_strided` that changes nothing).
    Flat(usize),
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
    /// Constants computed at import (shape arithmetic, see `fold`).
    folded: HashMap<String, WeightTensor>,
    /// The input's batch size when the file fixes it, else 1 (what `Shape` of an activation
    /// reports for the batch).
    batch: usize,
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
            folded: HashMap::new(),
            batch: 1,
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
            if !self.fold(node)? && !self.convert_layout(node)? {
                self.convert(node)?;
            }
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
    fn input_shape(&mut self, input: &pb::ValueInfoProto) -> Result<Shape> {
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
        if let Some(Dim::DimValue(b)) = dims.first().and_then(|d| d.value.clone()) {
            if b > 0 && (b as usize) <= MAX_WINDOW {
                self.batch = b as usize;
            }
        }
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
            Some(_) => Err(self.node_error(
                node,
                format!("input {slot} is a rearranged tensor (channels last, grouped or split) this op cannot take"),
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

    /// The constant behind an input (initializer, Constant node or folded value), if any.
    fn const_value(&self, node: &NodeProto, slot: usize) -> Result<Option<WeightTensor>> {
        let Some(name) = node.input.get(slot).filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        let name = match self.values.get(name) {
            Some(Value::Const(c)) => c,
            Some(_) => return Ok(None),
            None => name,
        };
        if let Some(t) = self.folded.get(name) {
            return Ok(Some(t.clone()));
        }
        match self.constants.get(name) {
            Some(t) => self.read(node, t).map(Some),
            None => Ok(None),
        }
    }

    fn read(&self, node: &NodeProto, tensor: &TensorProto) -> Result<WeightTensor> {
        read_tensor(tensor, &self.dir).map_err(|e| self.node_error(node, e))
    }

    fn required_const(&self, node: &NodeProto, slot: usize, what: &str) -> Result<WeightTensor> {
        self.const_value(node, slot)?.ok_or_else(|| {
            self.node_error(
                node,
                format!("its {what} (input {slot}) must be a constant stored in the model"),
            )
        })
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
