//! Saving a pruned model: masked weights, or for channel pruning a physically slimmed model;
//! an ONNX file, or safetensors with the graph beside it.

use super::Evaluator;
use crate::error::Result;
use crate::prune::{slim, Granularity};
use std::path::{Path, PathBuf};

/// Where a saved model's graph goes: `model.safetensors` -> `model.graph.json`.
pub fn graph_sidecar(path: &Path) -> PathBuf {
    path.with_extension("graph.json")
}

impl Evaluator {
    /// Writes the model pruned by `keeps` to `path`: an ONNX file when `path` ends in `.onnx`,
    /// else safetensors plus [`graph_sidecar`]. Channel-pruned models are slimmed.
    pub fn save_pruned(&mut self, keeps: &[f64], path: &Path) -> Result<()> {
        let channel = self.config().granularity == Granularity::Channel;
        let masked = self.apply(keeps)?.duplicate();
        let pruned = if channel {
            slim(&masked, self.masker(), keeps)?
        } else {
            masked
        };
        if path.extension().is_some_and(|e| e == "onnx") {
            return crate::onnx::export(&pruned, path);
        }
        let graph_json = serde_json::to_string_pretty(&pruned.graph().to_json()).map_err(|e| {
            crate::Error::data(path, format!("cannot encode the pruned graph: {e}"))
        })?;
        crate::fsio::write_atomic(&graph_sidecar(path), graph_json.as_bytes())?;
        pruned.save(path)
    }
}
