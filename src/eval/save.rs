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

/// Why a Hugging Face GPT-2 directory cannot take a model whose residual width is pruned.
const HF_RESIDUAL: &str = "a Hugging Face GPT-2 directory cannot hold a pruned residual width (its LayerNorms normalise over every channel and its attention needs heads x head size = width); give --save a file name ending in .safetensors or .onnx, or drop prune.residual_width";

/// Refuses, before any work, a save `spec`'s model cannot take at `path`.
pub fn check_save(spec: &crate::config::EnvSpec, path: &Path) -> Result<()> {
    if path.extension().is_none() && spec.model.is_language_model() && spec.prune.residual_width {
        return Err(crate::Error::data(path, HF_RESIDUAL));
    }
    Ok(())
}

impl Evaluator {
    /// Writes the model pruned by `keeps` to `path`: an ONNX file when `path` ends in `.onnx`,
    /// for a GPT a Hugging Face GPT-2 directory when it has no extension (`source` is the
    /// directory the model came from, if any), else safetensors plus [`graph_sidecar`].
    /// Channel-pruned models are slimmed (a GPT-2 directory loses heads only).
    pub fn save_pruned(
        &mut self,
        keeps: &[f64],
        path: &Path,
        source: Option<&crate::model::hf::HfGpt2>,
    ) -> Result<()> {
        self.apply(keeps)?;
        self.save_working(keeps, path, source)
    }

    /// As [`Self::save_pruned`], for the model in the working copy as it is (pruned at
    /// `keeps` and fine-tuned since): nothing is pruned again.
    pub fn save_working(
        &self,
        keeps: &[f64],
        path: &Path,
        source: Option<&crate::model::hf::HfGpt2>,
    ) -> Result<()> {
        let channel = self.config().granularity == Granularity::Channel;
        let masked = self.working().duplicate();
        if path.extension().is_none() && self.is_language_model() {
            if self.masker().costs().graph().residual_width() {
                return Err(crate::Error::data(path, HF_RESIDUAL));
            }
            let kept = self.kept_heads(keeps)?;
            return crate::model::hf::save(&masked, &kept, source, path);
        }
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

    /// Per layer `h.N` of a GPT, the heads (indices among the layer's) that `keeps` keeps: all
    /// of them unless heads are pruned by channel.
    fn kept_heads(&self, keeps: &[f64]) -> Result<Vec<Vec<usize>>> {
        let costs = self.masker().costs();
        let graph = costs.graph();
        let mut kept = Vec::new();
        while let Some(node) = graph.find(&format!("h.{}.attn.attention", kept.len())) {
            let crate::graph::Op::Attention {
                heads, head_dim, ..
            } = graph.node(node).op
            else {
                break;
            };
            let unit = costs.units().iter().position(|u| {
                matches!(u.kind, crate::prune::UnitKind::Group(g)
                    if graph.prunable_groups()[g].members.contains(&node))
            });
            let heads: Vec<usize> = match unit {
                Some(u) => {
                    let channels: Vec<i64> = Vec::try_from(
                        &self
                            .masker()
                            .kept_channels(u, keeps[u])
                            .to_device(tch::Device::Cpu),
                    )?;
                    let mut ids: Vec<usize> =
                        channels.iter().map(|&c| c as usize / head_dim).collect();
                    ids.dedup();
                    ids
                }
                None => (0..heads).collect(),
            };
            kept.push(heads);
        }
        if kept.is_empty() {
            return Err(crate::Error::graph(
                "model",
                "only a GPT (the zoo's gpt or an hf-gpt2 model) saves as a GPT-2 directory; give --save a file name ending in .safetensors or .onnx",
            ));
        }
        Ok(kept)
    }
}
