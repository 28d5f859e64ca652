//! [`GraphNet`] -> ONNX: one ONNX node per op (opset 20), weights inline as float32
//! initializers, a dynamic batch dimension. Pruned models export as they are: masked weights
//! stay masked, slimmed models are smaller.

use crate::error::{Error, Result};
use crate::graph::{Activation, Op};
use crate::model::GraphNet;
use prost::Message;
use std::path::Path;
use tract_onnx::pb::{
    self, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, NodeProto, TensorProto,
};

/// The opset the exported files declare.
pub const OPSET: i64 = 20;

/// Writes `net` as an ONNX model to `path` (atomically, see [`crate::fsio`]).
pub fn export(net: &GraphNet, path: &Path) -> Result<()> {
    let bytes = to_onnx(net)?.encode_to_vec();
    crate::fsio::write_atomic(path, &bytes)
}

/// The ONNX model of `net`.
pub fn to_onnx(net: &GraphNet) -> Result<pb::ModelProto> {
    let graph = net.graph();
    let variables = net.var_store().variables();
    let mut nodes = Vec::new();
    let mut initializers = Vec::new();
    let mut input = None;
    let mut output = None;
    let tensor = |name: &str| -> Result<TensorProto> {
        let t = variables
            .get(name)
            .ok_or_else(|| Error::graph(name, "has no tensor in the model; cannot export it"))?;
        let dims = t.size();
        let values: Vec<f32> = Vec::<f32>::try_from(
            &t.to_device(tch::Device::Cpu)
                .to_kind(tch::Kind::Float)
                .contiguous()
                .view([-1]),
        )?;
        Ok(float_tensor(name, dims, &values))
    };
    for &index in graph.order() {
        let node = graph.node(index);
        let name = node.name.as_str();
        let inputs: Vec<String> = graph
            .inputs(index)
            .iter()
            .map(|&i| graph.node(i).name.clone())
            .collect();
        let mut weighted = |with_bias: bool| -> Result<Vec<String>> {
            let mut names = vec![inputs[0].clone(), format!("{name}.weight")];
            initializers.push(tensor(&format!("{name}.weight"))?);
            if with_bias {
                names.push(format!("{name}.bias"));
                initializers.push(tensor(&format!("{name}.bias"))?);
            }
            Ok(names)
        };
        if super::export_seq::is_sequence_node(graph, index) {
            let added = super::export_seq::export_node(net, index, inputs)?;
            nodes.extend(added.nodes);
            initializers.extend(added.initializers);
            input = added.input.or(input);
            output = added.output.or(output);
            continue;
        }
        match &node.op {
            Op::Input { shape } => {
                input = Some(value_info(name, shape));
                continue;
            }
            Op::Output => {
                output = Some(value_info("output", &node.out_shape));
                nodes.push(onnx_node("Identity", name, inputs, "output", vec![]));
                continue;
            }
            Op::Conv2d {
                kernel,
                stride,
                padding,
                dilation,
                groups,
                bias,
                ..
            } => {
                let ins = weighted(*bias)?;
                let [ph, pw] = padding.pair();
                nodes.push(onnx_node(
                    "Conv",
                    name,
                    ins,
                    name,
                    vec![
                        ints("kernel_shape", &kernel.pair()),
                        ints("strides", &stride.pair()),
                        ints("pads", &[ph, pw, ph, pw]),
                        ints("dilations", &dilation.pair()),
                        int("group", *groups as i64),
                    ],
                ));
            }
            Op::Linear { bias, .. } => {
                let ins = weighted(*bias)?;
                nodes.push(onnx_node("Gemm", name, ins, name, vec![int("transB", 1)]));
            }
            Op::BatchNorm { .. } => {
                let mut ins = vec![inputs[0].clone()];
                for part in ["weight", "bias", "running_mean", "running_var"] {
                    ins.push(format!("{name}.{part}"));
                    initializers.push(tensor(&format!("{name}.{part}"))?);
                }
                nodes.push(onnx_node(
                    "BatchNormalization",
                    name,
                    ins,
                    name,
                    vec![float("epsilon", 1e-5)],
                ));
            }
            Op::Relu => nodes.push(onnx_node("Relu", name, inputs, name, vec![])),
            Op::Relu6 => {
                let (lo, hi) = (format!("{name}.min"), format!("{name}.max"));
                initializers.push(float_tensor(&lo, vec![], &[0.0]));
                initializers.push(float_tensor(&hi, vec![], &[6.0]));
                let ins = vec![inputs[0].clone(), lo, hi];
                nodes.push(onnx_node("Clip", name, ins, name, vec![]));
            }
            Op::MaxPool {
                kernel,
                stride,
                padding,
                ..
            }
            | Op::AvgPool {
                kernel,
                stride,
                padding,
            } => {
                let [ph, pw] = padding.pair();
                let mut attrs = vec![
                    ints("kernel_shape", &kernel.pair()),
                    ints("strides", &stride.pair()),
                    ints("pads", &[ph, pw, ph, pw]),
                ];
                let op = match node.op {
                    Op::MaxPool { ceil, .. } => {
                        attrs.push(int("ceil_mode", i64::from(ceil)));
                        "MaxPool"
                    }
                    _ => {
                        attrs.push(int("count_include_pad", 1));
                        "AveragePool"
                    }
                };
                nodes.push(onnx_node(op, name, inputs, name, attrs));
            }
            Op::Act { act } => {
                let (op, attrs) = match act {
                    Activation::Sigmoid => ("Sigmoid", vec![]),
                    Activation::HardSigmoid => (
                        "HardSigmoid",
                        vec![float("alpha", 1.0 / 6.0), float("beta", 0.5)],
                    ),
                    Activation::HardSwish => ("HardSwish", vec![]),
                    Activation::Silu => {
                        let gate = format!("{name}.sigmoid");
                        nodes.push(onnx_node("Sigmoid", &gate, inputs.clone(), &gate, vec![]));
                        let ins = vec![inputs[0].clone(), gate];
                        nodes.push(onnx_node("Mul", name, ins, name, vec![]));
                        continue;
                    }
                    Activation::Gelu => ("Gelu", vec![string("approximate", "none")]),
                    Activation::GeluTanh => ("Gelu", vec![string("approximate", "tanh")]),
                };
                nodes.push(onnx_node(op, name, inputs, name, attrs));
            }
            Op::Pad {
                top,
                left,
                bottom,
                right,
            } => {
                let pads = format!("{name}.pads");
                let values = [0, 0, *top, *left, 0, 0, *bottom, *right].map(|v| v as i64);
                initializers.push(int_tensor(&pads, &values));
                let ins = vec![inputs[0].clone(), pads];
                nodes.push(onnx_node("Pad", name, ins, name, vec![]));
            }
            Op::LayerNorm { eps, .. } => {
                let mut ins = vec![inputs[0].clone()];
                for part in ["weight", "bias"] {
                    ins.push(format!("{name}.{part}"));
                    initializers.push(tensor(&format!("{name}.{part}"))?);
                }
                let attrs = vec![int("axis", -1), float("epsilon", *eps as f32)];
                if node.out_shape.len() == 1 {
                    nodes.push(onnx_node("LayerNormalization", name, ins, name, attrs));
                } else {
                    // Channels last for the normalisation, and back.
                    let last = format!("{name}.channels_last");
                    let perm = ints("perm", &[0, 2, 3, 1]);
                    nodes.push(onnx_node("Transpose", &last, inputs, &last, vec![perm]));
                    let normed = format!("{name}.normalised");
                    ins[0] = last;
                    nodes.push(onnx_node(
                        "LayerNormalization",
                        &normed,
                        ins,
                        &normed,
                        attrs,
                    ));
                    let back = ints("perm", &[0, 3, 1, 2]);
                    nodes.push(onnx_node("Transpose", name, vec![normed], name, vec![back]));
                }
            }
            Op::ChannelShuffle { groups } => {
                let [c, h, w] = node.out_shape[..] else {
                    return Err(Error::graph(
                        name,
                        "shuffles a tensor that is not [C, H, W]",
                    ));
                };
                let g = *groups as i64;
                let (c, h, w) = (c as i64, h as i64, w as i64);
                let split = format!("{name}.split_shape");
                initializers.push(int_tensor(&split, &[-1, g, c / g, h, w]));
                let merged = format!("{name}.merged_shape");
                initializers.push(int_tensor(&merged, &[-1, c, h, w]));
                let (a, b) = (format!("{name}.grouped"), format!("{name}.swapped"));
                nodes.push(onnx_node(
                    "Reshape",
                    &a,
                    vec![inputs[0].clone(), split],
                    &a,
                    vec![],
                ));
                let perm = ints("perm", &[0, 2, 1, 3, 4]);
                nodes.push(onnx_node("Transpose", &b, vec![a], &b, vec![perm]));
                nodes.push(onnx_node("Reshape", name, vec![b, merged], name, vec![]));
            }
            Op::Narrow { start, len } => {
                let (starts, ends, axes) = (
                    format!("{name}.starts"),
                    format!("{name}.ends"),
                    format!("{name}.axes"),
                );
                initializers.push(int_tensor(&starts, &[*start as i64]));
                initializers.push(int_tensor(&ends, &[(start + len) as i64]));
                initializers.push(int_tensor(&axes, &[1]));
                let ins = vec![inputs[0].clone(), starts, ends, axes];
                nodes.push(onnx_node("Slice", name, ins, name, vec![]));
            }
            Op::Softmax => nodes.push(onnx_node(
                "Softmax",
                name,
                inputs,
                name,
                vec![int("axis", -1)],
            )),
            Op::GlobalAvgPool => {
                nodes.push(onnx_node("GlobalAveragePool", name, inputs, name, vec![]))
            }
            Op::Flatten => nodes.push(onnx_node(
                "Flatten",
                name,
                inputs,
                name,
                vec![int("axis", 1)],
            )),
            Op::Add | Op::Mul => {
                // ONNX's Add and Mul take two inputs: a chain for more.
                let op = if matches!(node.op, Op::Add) {
                    "Add"
                } else {
                    "Mul"
                };
                let mut acc = inputs[0].clone();
                for (k, other) in inputs.iter().enumerate().skip(1) {
                    let out = if k + 1 == inputs.len() {
                        name.to_string()
                    } else {
                        format!("{name}.partial{k}")
                    };
                    nodes.push(onnx_node(op, &out, vec![acc, other.clone()], &out, vec![]));
                    acc = out;
                }
            }
            Op::Concat => nodes.push(onnx_node(
                "Concat",
                name,
                inputs,
                name,
                vec![int("axis", 1)],
            )),
            Op::Embedding { .. }
            | Op::PosEmbedding { .. }
            | Op::Attention { .. }
            | Op::LmHead { .. }
            | Op::ToTokens
            | Op::ClassToken { .. }
            | Op::TakeToken { .. } => unreachable!("sequence ops export in export_seq"),
        }
    }
    let (Some(input), Some(output)) = (input, output) else {
        return Err(Error::graph(
            "model",
            "has no input or no output node; cannot export it",
        ));
    };
    Ok(pb::ModelProto {
        ir_version: 9,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "autoprune".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(pb::GraphProto {
            node: nodes,
            name: "autoprune".into(),
            initializer: initializers,
            input: vec![input],
            output: vec![output],
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub(super) fn int_tensor(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        dims: vec![values.len() as i64],
        data_type: DataType::Int64 as i32,
        name: name.to_string(),
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

pub(super) fn float_tensor(name: &str, dims: Vec<i64>, values: &[f32]) -> TensorProto {
    TensorProto {
        dims,
        data_type: DataType::Float as i32,
        name: name.to_string(),
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// A float tensor value `[batch, shape...]` with a symbolic batch dimension.
pub(super) fn value_info(name: &str, shape: &[usize]) -> pb::ValueInfoProto {
    use tensor_shape_proto::dimension::Value as Dim;
    let mut dim = vec![tensor_shape_proto::Dimension {
        value: Some(Dim::DimParam("batch".into())),
        ..Default::default()
    }];
    dim.extend(shape.iter().map(|&d| tensor_shape_proto::Dimension {
        value: Some(Dim::DimValue(d as i64)),
        ..Default::default()
    }));
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn onnx_node(
    op: &str,
    name: &str,
    inputs: Vec<String>,
    output: &str,
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: inputs,
        output: vec![output.to_string()],
        name: name.to_string(),
        op_type: op.to_string(),
        attribute,
        ..Default::default()
    }
}

pub(super) fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

pub(super) fn float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f,
        ..Default::default()
    }
}

fn string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

pub(super) fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}
