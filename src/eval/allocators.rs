//! The evaluator's non-learned allocators: their policies for its model and budget, and the
//! signals OWL and AlphaPruning read from the dense model (measured once, on first use).

use super::calibrate::alphas;
use super::Evaluator;
use crate::error::Result;
use crate::model::GraphNet;
use crate::prune::layerwise::OWL_M;
use crate::prune::{allocate, ActionWall, Method, Signals};

impl Evaluator {
    /// A non-learned allocator's policy for `wall` (effective keep ratios). OWL and
    /// AlphaPruning measure the dense model the first time they are asked for.
    pub fn allocate(&self, method: Method, wall: &ActionWall, seed: u64) -> Result<Vec<f64>> {
        let mut signals = Signals {
            scores: &self.unit_scores,
            ..Signals::default()
        };
        if method == Method::Owl {
            if self.outliers.get().is_none() {
                let net = self.dense_copy();
                let values = self.calibration.outliers(&net, &self.costs, OWL_M)?;
                let _ = self.outliers.set(values);
            }
            signals.outliers = self.outliers.get().map_or(&[], Vec::as_slice);
        }
        if method == Method::AlphaPruning {
            if self.alphas.get().is_none() {
                let net = self.dense_copy();
                let _ = self.alphas.set(alphas(&net, &self.costs)?);
            }
            signals.alphas = self.alphas.get().map_or(&[], Vec::as_slice);
        }
        Ok(allocate(method, wall, &self.costs, signals, seed))
    }

    /// What a layer-wise allocator read, per unit, once it has allocated: OWL's outlier
    /// ratio of the unit's block, AlphaPruning's mean α of it (None for other methods).
    pub fn allocator_signal(&self, method: Method) -> Option<&[f64]> {
        match method {
            Method::Owl => self.outliers.get().map(Vec::as_slice),
            Method::AlphaPruning => self.alphas.get().map(Vec::as_slice),
            _ => None,
        }
    }

    /// A copy of the working model holding the pretrained values (the working copy itself
    /// holds the last policy's pruned model).
    fn dense_copy(&self) -> GraphNet {
        let net = self.net.duplicate();
        let vars = net.var_store().variables();
        let _guard = tch::no_grad_guard();
        for (name, _, dense) in &self.tensors {
            if let Some(t) = vars.get(name) {
                t.shallow_clone().copy_(dense);
            }
        }
        net
    }
}
