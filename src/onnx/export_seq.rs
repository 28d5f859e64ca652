//! ONNX export of sequences (`[batch, tokens, channels]`, as `GraphNet` holds them): the
//! transformer ops, and linear layers and LayerNorm over a sequence's channels. A language
//! model's input is `[batch, tokens]` int64 token ids and its output `[batch, tokens, vocab]`.

use super::export::{float, float_tensor, int, int_tensor, ints, onnx_node, value_info};
use crate::error::{Error, Result};
use crate::graph::{ModelGraph, Op};
use crate::model::GraphNet;
use petgraph::graph::NodeIndex;
use tract_onnx::pb::{self, tensor_proto::DataType, NodeProto, TensorProto};

/// Whether `index` exports here rather than as an image or vector op.
pub(super) fn is_sequence_node(graph: &ModelGraph, index: NodeIndex) -> bool {
    let node = graph.node(index);
    match &node.op {
        Op::Embedding { .. }
        | Op::PosEmbedding { .. }
        | Op::Attention { .. }
        | Op::LmHead { .. }
        | Op::ToTokens
        | Op::ClassToken { .. }
        | Op::TakeToken { .. } => true,
        Op::Linear { .. } | Op::LayerNorm { .. } | Op::Output => node.out_shape.len() == 2,
        Op::Input { .. } => graph
            .consumers(index)
            .iter()
            .any(|&c| matches!(graph.node(c).op, Op::Embedding { .. })),
        _ => false,
    }
}

/// What exporting one node adds to the model.
#[derive(Default)]
pub(super) struct Added {
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    pub input: Option<pb::ValueInfoProto>,
    pub output: Option<pb::ValueInfoProto>,
}

/// A tensor of the model, float32 on the CPU.
fn cpu_tensor(net: &GraphNet, name: &str) -> Result<tch::Tensor> {
    let vars = net.var_store().variables();
    let t = vars
        .get(name)
        .ok_or_else(|| Error::graph(name, "has no tensor in the model; cannot export it"))?;
    Ok(t.to_device(tch::Device::Cpu).to_kind(tch::Kind::Float))
}

/// A tensor of the model as float32 values, with its dims.
fn values(net: &GraphNet, name: &str) -> Result<(Vec<i64>, Vec<f32>)> {
    let t = cpu_tensor(net, name)?.contiguous();
    Ok((t.size(), Vec::<f32>::try_from(&t.view([-1]))?))
}

/// `name`'s weight transposed (`[out, in]` to `[in, out]`), for a MatMul.
fn transposed(net: &GraphNet, weight: &str, name: &str) -> Result<TensorProto> {
    let t = cpu_tensor(net, weight)?.t_copy().contiguous();
    let values = Vec::<f32>::try_from(&t.view([-1]))?;
    Ok(float_tensor(name, t.size(), &values))
}

fn scalar_int(name: &str, value: i64) -> TensorProto {
    TensorProto {
        dims: vec![],
        data_type: DataType::Int64 as i32,
        name: name.to_string(),
        raw_data: value.to_le_bytes().to_vec(),
        ..Default::default()
    }
}

/// The ONNX nodes of sequence node `index` reading `inputs`.
pub(super) fn export_node(net: &GraphNet, index: NodeIndex, inputs: Vec<String>) -> Result<Added> {
    let graph = net.graph();
    let node = graph.node(index);
    let name = node.name.as_str();
    let mut out = Added::default();
    let (nodes, inits) = (&mut out.nodes, &mut out.initializers);
    let tensor = |part: &str| -> Result<TensorProto> {
        let (dims, v) = values(net, &format!("{name}.{part}"))?;
        Ok(float_tensor(&format!("{name}.{part}"), dims, &v))
    };
    match &node.op {
        Op::Input { shape } => {
            let mut info = value_info(name, shape);
            if let Some(pb::type_proto::Value::TensorType(t)) =
                info.r#type.as_mut().and_then(|t| t.value.as_mut())
            {
                t.elem_type = DataType::Int64 as i32;
            }
            out.input = Some(info);
        }
        Op::Output => {
            // `[channels, tokens]` in the graph is `[batch, tokens, channels]` in the file.
            let [c, t] = node.out_shape[..] else {
                unreachable!("a sequence output has two dimensions")
            };
            out.output = Some(value_info("output", &[t, c]));
            nodes.push(onnx_node("Identity", name, inputs, "output", vec![]));
        }
        Op::Embedding { .. } => {
            inits.push(tensor("weight")?);
            let ins = vec![format!("{name}.weight"), inputs[0].clone()];
            nodes.push(onnx_node("Gather", name, ins, name, vec![int("axis", 0)]));
        }
        Op::PosEmbedding { .. } => {
            let tokens = node.out_shape[1];
            let (dims, v) = values(net, &format!("{name}.weight"))?;
            let rows = v.len() / dims[0].max(1) as usize * tokens;
            let table = format!("{name}.weight");
            inits.push(float_tensor(
                &table,
                vec![tokens as i64, dims[1]],
                &v[..rows],
            ));
            nodes.push(onnx_node(
                "Add",
                name,
                vec![inputs[0].clone(), table],
                name,
                vec![],
            ));
        }
        Op::LayerNorm { eps, .. } => {
            inits.push(tensor("weight")?);
            inits.push(tensor("bias")?);
            let ins = vec![
                inputs[0].clone(),
                format!("{name}.weight"),
                format!("{name}.bias"),
            ];
            let attrs = vec![int("axis", -1), float("epsilon", *eps as f32)];
            nodes.push(onnx_node("LayerNormalization", name, ins, name, attrs));
        }
        Op::Linear { .. } | Op::LmHead { .. } => {
            let bias = matches!(node.op, Op::Linear { bias: true, .. });
            let weight = match &node.op {
                Op::LmHead { embedding, .. } => format!("{embedding}.weight"),
                _ => format!("{name}.weight"),
            };
            let t = format!("{name}.weight_t");
            inits.push(transposed(net, &weight, &t)?);
            let product = if bias {
                format!("{name}.product")
            } else {
                name.to_string()
            };
            nodes.push(onnx_node(
                "MatMul",
                &product,
                vec![inputs[0].clone(), t],
                &product,
                vec![],
            ));
            if bias {
                inits.push(tensor("bias")?);
                let ins = vec![product, format!("{name}.bias")];
                nodes.push(onnx_node("Add", name, ins, name, vec![]));
            }
        }
        Op::Attention {
            heads,
            head_dim,
            causal,
        } => attention(
            name,
            &inputs,
            (*heads, *head_dim, *causal),
            node.out_shape[1],
            &mut out,
        ),
        Op::ToTokens => {
            let shape = format!("{name}.shape");
            inits.push(int_tensor(&shape, &[0, node.out_shape[0] as i64, -1]));
            let flat = format!("{name}.flat");
            nodes.push(onnx_node(
                "Reshape",
                &flat,
                vec![inputs[0].clone(), shape],
                &flat,
                vec![],
            ));
            nodes.push(onnx_node(
                "Transpose",
                name,
                vec![flat],
                name,
                vec![ints("perm", &[0, 2, 1])],
            ));
        }
        Op::ClassToken { width } => {
            let (_, v) = values(net, &format!("{name}.weight"))?;
            let token = format!("{name}.token");
            inits.push(float_tensor(&token, vec![1, 1, *width as i64], &v));
            let [shape, first, batch, rest, target, tokens] =
                ["shape", "first", "batch", "rest", "target", "tokens"]
                    .map(|p| format!("{name}.{p}"));
            nodes.push(onnx_node(
                "Shape",
                &shape,
                vec![inputs[0].clone()],
                &shape,
                vec![],
            ));
            inits.push(int_tensor(&first, &[0]));
            nodes.push(onnx_node(
                "Gather",
                &batch,
                vec![shape, first],
                &batch,
                vec![int("axis", 0)],
            ));
            inits.push(int_tensor(&rest, &[1, *width as i64]));
            nodes.push(onnx_node(
                "Concat",
                &target,
                vec![batch, rest],
                &target,
                vec![int("axis", 0)],
            ));
            nodes.push(onnx_node(
                "Expand",
                &tokens,
                vec![token, target],
                &tokens,
                vec![],
            ));
            let ins = vec![tokens, inputs[0].clone()];
            nodes.push(onnx_node("Concat", name, ins, name, vec![int("axis", 1)]));
        }
        Op::TakeToken { index } => {
            let at = format!("{name}.index");
            inits.push(scalar_int(&at, *index as i64));
            let ins = vec![inputs[0].clone(), at];
            nodes.push(onnx_node("Gather", name, ins, name, vec![int("axis", 1)]));
        }
        other => {
            return Err(Error::graph(
                name,
                format!("{} is not a sequence op", other.type_name()),
            ))
        }
    }
    Ok(out)
}

/// Scaled dot-product attention as ONNX nodes: heads split out, scores, the causal mask,
/// softmax, the weighted sum of values, heads merged back.
fn attention(
    name: &str,
    inputs: &[String],
    (heads, head_dim, causal): (usize, usize, bool),
    tokens: usize,
    out: &mut Added,
) {
    let (nodes, inits) = (&mut out.nodes, &mut out.initializers);
    let at = |p: &str| format!("{name}.{p}");
    inits.push(int_tensor(
        &at("split"),
        &[0, 0, heads as i64, head_dim as i64],
    ));
    inits.push(int_tensor(&at("merge"), &[0, 0, (heads * head_dim) as i64]));
    let mut split = |input: &str, tag: &str, perm: &[i64]| -> String {
        let reshaped = at(&format!("{tag}_heads"));
        let ins = vec![input.to_string(), at("split")];
        nodes.push(onnx_node("Reshape", &reshaped, ins, &reshaped, vec![]));
        let moved = at(tag);
        nodes.push(onnx_node(
            "Transpose",
            &moved,
            vec![reshaped],
            &moved,
            vec![ints("perm", perm)],
        ));
        moved
    };
    let q = split(&inputs[0], "q", &[0, 2, 1, 3]);
    let k = split(&inputs[1], "k_t", &[0, 2, 3, 1]);
    let v = split(&inputs[2], "v", &[0, 2, 1, 3]);
    nodes.push(onnx_node(
        "MatMul",
        &at("scores"),
        vec![q, k],
        &at("scores"),
        vec![],
    ));
    inits.push(float_tensor(
        &at("scale"),
        vec![],
        &[1.0 / (head_dim as f32).sqrt()],
    ));
    let mut scores = at("scaled");
    nodes.push(onnx_node(
        "Mul",
        &scores,
        vec![at("scores"), at("scale")],
        &scores,
        vec![],
    ));
    if causal {
        let mask: Vec<f32> = (0..tokens * tokens)
            .map(|i| {
                if i % tokens > i / tokens {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        inits.push(float_tensor(
            &at("mask"),
            vec![tokens as i64, tokens as i64],
            &mask,
        ));
        let masked = at("masked");
        nodes.push(onnx_node(
            "Add",
            &masked,
            vec![scores, at("mask")],
            &masked,
            vec![],
        ));
        scores = masked;
    }
    nodes.push(onnx_node(
        "Softmax",
        &at("weights"),
        vec![scores],
        &at("weights"),
        vec![int("axis", -1)],
    ));
    nodes.push(onnx_node(
        "MatMul",
        &at("mixed"),
        vec![at("weights"), v],
        &at("mixed"),
        vec![],
    ));
    let perm = ints("perm", &[0, 2, 1, 3]);
    nodes.push(onnx_node(
        "Transpose",
        &at("joined"),
        vec![at("mixed")],
        &at("joined"),
        vec![perm],
    ));
    nodes.push(onnx_node(
        "Reshape",
        name,
        vec![at("joined"), at("merge")],
        name,
        vec![],
    ));
}
