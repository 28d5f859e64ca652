//! Per-node feature vectors: the static description of a layer that agents read.

use super::{ModelGraph, Op};
use petgraph::graph::NodeIndex;
use serde::{Deserialize, Serialize};

/// Names of the entries of [`NodeFeatures::to_vec`], in order (AMC's layer embedding).
pub const FEATURE_NAMES: [&str; 9] = [
    "index",
    "op_type",
    "c_in",
    "c_out",
    "stride",
    "kernel",
    "feature_map",
    "params",
    "flops",
];

/// AMC's static layer description: position, type, channels in and out, stride, kernel size,
/// input feature-map size (H·W), parameter count and multiply-accumulates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeFeatures {
    pub index: usize,
    pub op_type: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub stride: usize,
    pub kernel: usize,
    pub feature_map: usize,
    pub params: usize,
    pub flops: usize,
}

impl NodeFeatures {
    /// The features as numbers, in [`FEATURE_NAMES`] order.
    pub fn to_vec(&self) -> Vec<f64> {
        [
            self.index,
            self.op_type,
            self.c_in,
            self.c_out,
            self.stride,
            self.kernel,
            self.feature_map,
            self.params,
            self.flops,
        ]
        .iter()
        .map(|&v| v as f64)
        .collect()
    }
}

impl ModelGraph {
    /// Static features of one node.
    pub fn node_features(&self, index: NodeIndex) -> NodeFeatures {
        let node = self.node(index);
        let in_shape = self
            .inputs(index)
            .first()
            .map(|&i| self.node(i).out_shape.clone())
            .unwrap_or_else(|| node.out_shape.clone());
        let (stride, kernel) = match &node.op {
            Op::Conv2d { stride, kernel, .. }
            | Op::MaxPool { stride, kernel, .. }
            | Op::AvgPool { stride, kernel, .. } => (stride.max(), kernel.max()),
            _ => (1, 1),
        };
        NodeFeatures {
            index: self.position(index),
            op_type: node.op.type_code(),
            c_in: in_shape.first().copied().unwrap_or(0),
            c_out: node.out_shape.first().copied().unwrap_or(0),
            stride,
            kernel,
            feature_map: in_shape.iter().skip(1).product::<usize>().max(1),
            params: self.node_params(index),
            flops: self.node_flops(index),
        }
    }
}
