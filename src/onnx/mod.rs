//! Bring your own model: ONNX files in (a [`ModelGraph`](crate::graph::ModelGraph) with its
//! pretrained weights), pruned ONNX files out.
//!
//! Must not know about agents or env files.

mod export;
mod export_seq;
mod import;

pub use export::{export, to_onnx, OPSET};
pub use import::{import, import_bytes, read_tensor, Imported, WeightTensor, SUPPORTED_OPS};

use crate::error::{Error, Result};
use crate::model::GraphNet;
use std::path::Path;

/// A GraphNet for an imported model, on `device`, holding the file's weights.
pub fn load_net(imported: Imported, device: tch::Device, source: &Path) -> Result<GraphNet> {
    let mut net = GraphNet::new(imported.graph, device);
    let variables = net.var_store_mut().variables();
    let _guard = tch::no_grad_guard();
    for (name, weight) in &imported.weights {
        let mut target = variables
            .get(name)
            .map(|t| t.shallow_clone())
            .ok_or_else(|| Error::Checkpoint {
                path: source.to_path_buf(),
                tensor: name.clone(),
                message: "has no place in the imported graph".into(),
            })?;
        if target.size() != weight.dims {
            return Err(Error::Checkpoint {
                path: source.to_path_buf(),
                tensor: name.clone(),
                message: format!(
                    "has shape {:?}, the graph needs {:?}",
                    weight.dims,
                    target.size()
                ),
            });
        }
        let values = tch::Tensor::from_slice(&weight.values)
            .view(weight.dims.as_slice())
            .to_device(device);
        target.copy_(&values);
    }
    Ok(net)
}
