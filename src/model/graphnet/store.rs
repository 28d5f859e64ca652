//! Copies of a [`GraphNet`] and its safetensors checkpoints.

use super::{GraphNet, NodeParams, NORM_CHANNELS};
use crate::error::{Error, Result};
use crate::graph::ModelGraph;
use std::path::Path;

impl GraphNet {
    /// An independent copy (same graph, same values, own storage) on the same device.
    pub fn duplicate(&self) -> Self {
        let copy = GraphNet::new(self.graph.clone(), self.device());
        let source = self.vs.variables();
        let _guard = tch::no_grad_guard();
        for (name, target) in copy.vs.variables() {
            target.shallow_clone().copy_(&source[&name]);
        }
        copy
    }

    /// The same model on `graph`, which must have the same nodes and tensors (the graph with
    /// its residual width prunable, say); LayerNorms that become prunable start with every
    /// channel kept.
    pub fn regraphed(self, graph: ModelGraph) -> Result<Self> {
        let copy = GraphNet::new(graph, self.device());
        let source = self.vs.variables();
        let _guard = tch::no_grad_guard();
        for (name, target) in copy.vs.variables() {
            match source.get(&name) {
                Some(value) if value.size() == target.size() => {
                    target.shallow_clone().copy_(value);
                }
                None if copy.is_norm_channels(&name) => {}
                _ => {
                    return Err(Error::graph(
                        &name,
                        "differs between the model and its regrouped graph",
                    ))
                }
            }
        }
        Ok(copy)
    }

    /// Writes every parameter and buffer to a safetensors file, atomically (see
    /// [`crate::fsio`]): an interrupted save never leaves a truncated checkpoint.
    /// The channel masks of pruned LayerNorms are left out (a dense model's are all ones).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named = crate::model::checkpoint::sorted_variables(&self.vs);
        named.retain(|(name, _)| !self.is_norm_channels(name));
        crate::model::checkpoint::save_named(&named, path)
    }

    /// Whether `name` is the channel mask of a pruned LayerNorm.
    fn is_norm_channels(&self, name: &str) -> bool {
        name.rsplit_once('.').is_some_and(|(node, tensor)| {
            tensor == NORM_CHANNELS
                && self.graph.find(node).is_some_and(|i| {
                    matches!(self.params[i.index()], NodeParams::MaskedNorm { .. })
                })
        })
    }

    /// Loads a safetensors checkpoint. Every tensor of the model must be present with the same
    /// shape (the channel masks of pruned LayerNorms may be missing: they stay as they are);
    /// otherwise the error names the first tensor (in graph order) that differs.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        // Graph order, then weight, bias, running_mean, running_var within a node.
        let rank = |name: &str| {
            let (node, tensor) = name.rsplit_once('.').unwrap_or((name, ""));
            let position = self.graph.find(node).map(|i| self.graph.position(i));
            let within = ["weight", "bias", "running_mean", "running_var"]
                .iter()
                .position(|t| *t == tensor);
            (position.unwrap_or(usize::MAX), within.unwrap_or(usize::MAX))
        };
        let optional = |name: &str| self.is_norm_channels(name);
        crate::model::checkpoint::load_var_store(
            &self.vs,
            path,
            rank,
            optional,
            "autoprune pretrain",
        )
    }
}
