//! What full fine-tuning (`autoprune finetune`) needs from the evaluator: one masked training
//! step (with optional distillation from the dense model), pruning the working copy again at
//! a higher sparsity (iterative pruning), and putting a checkpoint's weights and masks back.
//! The loop, its schedule and its checkpoints are the run's (`crate::run::finetune`).

use super::{apply_masks, Evaluator};
use crate::error::{Error, Result};
use crate::model::optim::Optim;
use crate::model::GraphNet;
use crate::prune::{Importance, Masker};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Knowledge distillation from the dense model (Hinton et al.): the loss is
/// `(1 − weight) · CE(student, labels) + weight · T² · KL(softmax(teacher / T) ‖ softmax(student / T))`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Distill {
    pub temperature: f64,
    pub weight: f64,
}

/// Keep ratios at `stage` of `stages` of iterative pruning (Zhu & Gupta's cubic schedule,
/// starting from the dense model): each unit's sparsity `1 − keep` scaled by
/// `1 − (1 − stage / stages)³`, so the last stage is `keeps` exactly.
pub fn cubic_keeps(keeps: &[f64], stage: usize, stages: usize) -> Vec<f64> {
    let stages = stages.max(1);
    let stage = stage.min(stages);
    if stage == stages {
        return keeps.to_vec();
    }
    let reached = 1.0 - (1.0 - stage as f64 / stages as f64).powi(3);
    keeps.iter().map(|k| 1.0 - (1.0 - k) * reached).collect()
}

impl Evaluator {
    /// The working copy (the model the last `apply` left, as fine-tuned since).
    pub fn working(&self) -> &GraphNet {
        &self.net
    }

    /// How every later evaluation recovers from pruning: BatchNorm recalibration batches and
    /// masked fine-tuning steps (the env's `reward` settings, for proxy studies).
    pub fn set_recovery(&mut self, recalibration_batches: usize, finetune_steps: usize) {
        self.config.recalibration_batches = recalibration_batches;
        self.config.finetune_steps = finetune_steps;
    }

    /// The masks on the working copy, by tensor name.
    pub fn applied_masks(&self) -> &[(String, Tensor)] {
        &self.applied
    }

    /// Prunes the working copy again at `keeps` (one stage of iterative pruning): importance
    /// under the env's criterion from its current weights, masks at `keeps`, BatchNorm
    /// recalibrated. Weights pruned before have zero importance and stay pruned.
    pub fn reprune(&mut self, keeps: &[f64]) -> Result<()> {
        if self.config.criterion.is_post_training() {
            return Err(Error::Invalid {
                path: "<finetune>".into(),
                key: "prune.criterion".into(),
                message: format!(
                    "iterative pruning ranks weights as they are fine-tuned; {} prunes once after training (use --stages 1, or a magnitude criterion)",
                    self.config.criterion.name()
                ),
            });
        }
        let masker = self.current_masker()?;
        self.applied = masker
            .masks(keeps)
            .into_iter()
            .map(|m| (m.tensor, m.mask))
            .collect();
        self.repruned = Some(masker);
        {
            let _guard = tch::no_grad_guard();
            apply_masks(&self.handles(&self.applied));
        }
        self.recalibrate(keeps, &mut StdRng::seed_from_u64(self.config.seed));
        Ok(())
    }

    /// Rankings under the env's criterion from the working copy's current weights.
    fn current_masker(&self) -> Result<Masker> {
        let importance = Importance::compute(
            &self.net,
            self.config.criterion,
            &self.train,
            self.config.seed,
        )?;
        Ok(Masker::new(&self.costs, &importance))
    }

    /// Re-estimates BatchNorm statistics for a model pruned at `keeps`, drawing batches with
    /// `rng`. Pruning changes what flows into every BatchNorm; a policy that prunes nothing
    /// keeps the pretrained statistics, so keep = 1 is exactly the dense model. Generated
    /// weights never had statistics of their own.
    pub(super) fn recalibrate(&mut self, keeps: &[f64], rng: &mut StdRng) {
        self.recalibrate_model(&self.net, keeps, rng);
    }

    /// [`Self::recalibrate`] on `net`: the working copy, or the same policy's slimmed model.
    pub(super) fn recalibrate_model(&self, net: &GraphNet, keeps: &[f64], rng: &mut StdRng) {
        if self.prunes(keeps) && self.config.recalibration_batches > 0 {
            net.recalibrate_batch_norm(
                &self.train,
                self.config.recalibration_batches,
                self.config.batch_size,
                rng,
            );
        }
    }

    /// Whether the evaluation of `keeps` changes the pretrained model: a unit loses
    /// something, or the weights are generated.
    pub(super) fn prunes(&self, keeps: &[f64]) -> bool {
        self.source.is_some()
            || (0..keeps.len())
                .any(|u| self.costs.unit_kept(u, keeps[u]) < self.costs.units()[u].size)
    }

    /// Puts a checkpoint back: `weights` (by name) into the working copy, `masks` as the
    /// applied masks. `repruned`: the checkpoint is past a stage of iterative pruning, whose
    /// rankings are taken again from the weights (pruned ones are zero, so they rank last).
    pub fn restore(
        &mut self,
        weights: &[(String, Tensor)],
        masks: Vec<(String, Tensor)>,
        repruned: bool,
    ) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for (name, working, _) in &self.tensors {
            let saved =
                weights
                    .iter()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| Error::Checkpoint {
                        path: "<finetune checkpoint>".into(),
                        tensor: name.clone(),
                        message: "missing from the checkpoint".into(),
                    })?;
            working
                .shallow_clone()
                .copy_(&saved.1.to_device(working.device()));
        }
        let device = self.net.device();
        self.applied = masks
            .into_iter()
            .map(|(n, m)| (n, m.to_device(device)))
            .collect();
        self.repruned = if repruned {
            Some(self.current_masker()?)
        } else {
            None
        };
        Ok(())
    }

    /// One masked training step on a batch: the loss (distilled from `teacher` when given),
    /// a step of `optim` at `lr`, and the masks put back. Returns the loss.
    pub fn train_step(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        teacher: Option<(&GraphNet, Distill)>,
        optim: &mut Optim,
        lr: f64,
    ) -> Result<f64> {
        let logits = self.net.forward_t(images, true);
        let hard = crate::model::cross_entropy(&logits, labels);
        let loss = match teacher {
            Some((teacher, distill)) => {
                let target = tch::no_grad(|| teacher.forward_t(images, false));
                let soft = distillation(&logits, &target, distill.temperature);
                hard * (1.0 - distill.weight) + soft * distill.weight
            }
            None => hard,
        };
        optim.zero_grad();
        loss.backward();
        optim.step(lr);
        {
            let _guard = tch::no_grad_guard();
            apply_masks(&self.handles(&self.applied));
        }
        let value = f64::try_from(&loss.detach().to_kind(Kind::Double))?;
        if !value.is_finite() {
            return Err(Error::NonFinite {
                what: "fine-tuning loss".into(),
                value,
            });
        }
        Ok(value)
    }
}

/// `T² · KL(softmax(teacher / T) ‖ softmax(student / T))`, classes on the last dimension,
/// averaged over every sample (and token).
fn distillation(student: &Tensor, teacher: &Tensor, temperature: f64) -> Tensor {
    let classes = *student.size().last().unwrap_or(&1);
    let s = (student / temperature)
        .log_softmax(-1, Kind::Float)
        .reshape([-1, classes]);
    let t = (teacher / temperature)
        .log_softmax(-1, Kind::Float)
        .reshape([-1, classes]);
    let kl = (t.exp() * (&t - &s))
        .sum_dim_intlist(1, false, Kind::Float)
        .mean(Kind::Float);
    kl * temperature * temperature
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_schedule_ends_at_the_policy_and_prunes_more_each_stage() {
        let keeps = [0.2, 0.5, 1.0];
        assert_eq!(cubic_keeps(&keeps, 4, 4), keeps.to_vec());
        let mut last = vec![1.0; 3];
        for stage in 1..=4 {
            let now = cubic_keeps(&keeps, stage, 4);
            for (u, k) in now.iter().enumerate() {
                assert!(*k <= last[u] + 1e-12 && *k >= keeps[u] - 1e-12);
            }
            last = now;
        }
        // Stage 1 of 4: 1 − (3/4)³ = 37/64 of the sparsity.
        let first = cubic_keeps(&keeps, 1, 4);
        assert!((first[0] - (1.0 - 0.8 * 37.0 / 64.0)).abs() < 1e-12);
        assert_eq!(first[2], 1.0);
    }

    #[test]
    fn distillation_is_zero_for_equal_logits_and_positive_otherwise() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 0.5, -1.0, 0.0, 3.0]).view([2, 3]);
        let b = Tensor::from_slice(&[0.0f32, 0.0, 0.0, 2.0, 1.0, -1.0]).view([2, 3]);
        let same = f64::try_from(distillation(&a, &a, 2.0)).unwrap();
        let differ = f64::try_from(distillation(&a, &b, 2.0)).unwrap();
        assert!(same.abs() < 1e-6);
        assert!(differ > 0.01);
    }
}
