//! Full fine-tuning of a pruned model (`autoprune finetune`): one-shot (prune at the policy,
//! then train with the masks held) or iterative (the policy reached in K stages along Zhu &
//! Gupta's cubic schedule, each stage pruning the fine-tuned weights further, the same total
//! steps). Optional distillation from the dense model. The run folder holds a checkpoint
//! (weights, masks, optimiser state, step) written every `checkpoint_every` steps and at
//! every stage's end; a killed run resumes from it to the result the uninterrupted run gets.
//!
//! Batches are a function of the step alone (epoch `e` shuffles with a seed derived from the
//! run's seed and `e`; libtorch's generator is seeded with the step), so resuming at any
//! checkpoint replays nothing and draws the same batches.

use super::failpoint::{failpoint, failpoints};
use crate::data::Split;
use crate::error::{Error, Result};
use crate::eval::{cubic_keeps, Distill, Evaluator};
use crate::model::optim::Optim;
use crate::model::{Evaluation, GraphNet, TrainConfig};
use crate::runlog::Progress;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use tch::Tensor;

/// The checkpoint of a fine-tuning run folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The stages finished so far (JSON), written after each stage's checkpoint.
pub const STAGES_FILE: &str = "stages.json";

/// How to fine-tune.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneSpec {
    /// Optimiser, learning rate, schedule (over all `steps`) and batch size; `epochs` unused.
    pub train: TrainConfig,
    /// Optimisation steps in all (one batch each), whatever the stages.
    pub steps: usize,
    /// 1: one-shot; K > 1: iterative, K prune–fine-tune stages.
    pub stages: usize,
    pub distill: Option<Distill>,
    pub checkpoint_every: usize,
    pub seed: u64,
}

/// The end of one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    pub stage: usize,
    /// Steps done when the stage ended.
    pub step: usize,
    /// The stage's keep ratios' fraction of the budget metric (1 − sparsity at this stage).
    pub params_kept: f64,
    /// Mean training loss over the stage's steps (those of this process after a resume).
    pub train_loss: f64,
    pub val: Evaluation,
}

/// The step at which stage `stage` (1-based) of `stages` ends.
pub fn stage_end(steps: usize, stage: usize, stages: usize) -> usize {
    steps * stage / stages.max(1)
}

/// Fine-tunes the model pruned at `keeps` in the evaluator's working copy, checkpointing to
/// `dir` (resuming from its checkpoint when there is one). Returns every stage's report; the
/// fine-tuned model stays in the working copy (score it with `rescore_on`).
pub fn finetune(
    evaluator: &mut Evaluator,
    keeps: &[f64],
    spec: &FinetuneSpec,
    teacher: Option<&GraphNet>,
    dir: &Path,
    progress: &Progress,
    stop: &AtomicBool,
) -> Result<Vec<StageReport>> {
    let stages = spec.stages.max(1);
    let train = {
        let t = evaluator.train_split();
        Split {
            images: t.images.shallow_clone(),
            labels: t.labels.shallow_clone(),
        }
    };
    let batch = spec.train.batch_size.max(1);
    let per_epoch = train.len().div_ceil(batch).max(1);
    let mut optim = Optim::new(
        evaluator.working().var_store(),
        spec.train.optimizer,
        spec.train.momentum,
        spec.train.weight_decay,
    );
    let checkpoint = dir.join(CHECKPOINT_FILE);
    let mut reports: Vec<StageReport> = Vec::new();
    let start = if checkpoint.is_file() {
        let step = load_checkpoint(evaluator, &mut optim, &checkpoint, spec.steps, stages)?;
        if let Ok(text) = std::fs::read_to_string(dir.join(STAGES_FILE)) {
            reports = serde_json::from_str(&text).unwrap_or_default();
            reports.retain(|r| r.step <= step);
        }
        progress.println(&format!(
            "resuming fine-tuning at step {step} of {}",
            spec.steps
        ));
        step
    } else {
        evaluator.apply(&cubic_keeps(keeps, 1, stages))?;
        0
    };
    let points = failpoints();
    let bar = progress.bar(spec.steps as u64, "fine-tuning");
    bar.inc(start as u64);
    let mut step = start;
    for stage in 1..=stages {
        let (begin, end) = (
            stage_end(spec.steps, stage - 1, stages),
            stage_end(spec.steps, stage, stages),
        );
        if end < step || (end == step && reports.iter().any(|r| r.stage == stage)) {
            continue;
        }
        let stage_keeps = cubic_keeps(keeps, stage, stages);
        if stage > 1 && step == begin {
            evaluator.reprune(&stage_keeps)?;
        }
        let (mut loss_sum, mut losses) = (0.0, 0usize);
        let mut batches = None;
        while step < end {
            if stop.load(Ordering::SeqCst) {
                save_checkpoint(evaluator, &optim, &checkpoint, step)?;
                bar.finish_and_clear();
                return Err(Error::Interrupted {
                    message: format!(
                        "fine-tuning stopped at step {step} of {}; resume with `autoprune finetune --resume {}`",
                        spec.steps,
                        dir.display()
                    ),
                });
            }
            let (epoch, within) = (step / per_epoch, step % per_epoch);
            if within == 0 || batches.is_none() {
                let mut rng = StdRng::seed_from_u64(
                    spec.seed
                        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                        .wrapping_add(epoch as u64),
                );
                let mut fresh = train.batches(batch, Some(&mut rng));
                if within > 0 {
                    fresh.nth(within - 1);
                }
                batches = Some(fresh);
            }
            let Some((images, labels)) = batches.as_mut().and_then(|b| b.next()) else {
                return Err(Error::data(dir, "the training split ran out of batches"));
            };
            tch::manual_seed(spec.seed.wrapping_add(step as u64) as i64);
            let lr = spec.train.lr_at(step, spec.steps);
            let loss = evaluator.train_step(
                &images,
                &labels,
                teacher.zip(spec.distill),
                &mut optim,
                lr,
            )?;
            loss_sum += loss;
            losses += 1;
            step += 1;
            bar.inc(1);
            bar.set_message(format!(
                "stage {stage}/{stages}, loss {:.4}",
                loss_sum / losses as f64
            ));
            if step % spec.checkpoint_every.max(1) == 0 && step < end {
                save_checkpoint(evaluator, &optim, &checkpoint, step)?;
                failpoint(&points, "finetune", step);
            }
        }
        let val = evaluator
            .working()
            .evaluate(evaluator.val_split(), evaluator.config().eval_batch_size)?;
        let counts = evaluator.costs().counts(&stage_keeps);
        let report = StageReport {
            stage,
            step,
            params_kept: counts.params_kept,
            train_loss: if losses > 0 {
                loss_sum / losses as f64
            } else {
                f64::NAN
            },
            val,
        };
        progress.println(&format!(
            "stage {stage}/{stages} (step {step}, {:.1}% of params kept): train loss {:.4}, val loss {:.4}, val accuracy {:.2}%",
            100.0 * report.params_kept,
            report.train_loss,
            val.loss,
            100.0 * val.accuracy
        ));
        reports.push(report);
        save_checkpoint(evaluator, &optim, &checkpoint, step)?;
        let text = serde_json::to_string_pretty(&reports)
            .map_err(|e| Error::data(dir, format!("cannot encode the stage reports: {e}")))?;
        crate::fsio::write_atomic(&dir.join(STAGES_FILE), text.as_bytes())?;
        failpoint(&points, "finetune", step);
    }
    bar.finish_and_clear();
    Ok(reports)
}

fn save_checkpoint(evaluator: &Evaluator, optim: &Optim, path: &Path, step: usize) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = evaluator
        .working()
        .var_store()
        .variables()
        .into_iter()
        .map(|(n, t)| {
            (
                format!("model.{n}"),
                t.to_device(tch::Device::Cpu).contiguous(),
            )
        })
        .collect();
    named.extend(evaluator.applied_masks().iter().map(|(n, m)| {
        (
            format!("mask.{n}"),
            m.to_device(tch::Device::Cpu).contiguous(),
        )
    }));
    named.extend(optim.state_tensors());
    named.push(("step".into(), Tensor::from(step as i64)));
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let metadata = BTreeMap::from([("step".to_string(), step.to_string())]);
    crate::model::checkpoint::save_tensors_with(&named, path, &metadata)
}

/// Loads a checkpoint into the evaluator and the optimiser; returns its step.
fn load_checkpoint(
    evaluator: &mut Evaluator,
    optim: &mut Optim,
    path: &Path,
    steps: usize,
    stages: usize,
) -> Result<usize> {
    let named = Tensor::read_safetensors(path)?;
    let step = named
        .iter()
        .find(|(n, _)| n == "step")
        .map(|(_, t)| t.int64_value(&[]) as usize)
        .ok_or_else(|| Error::Checkpoint {
            path: path.to_path_buf(),
            tensor: "step".into(),
            message: "missing: not a fine-tuning checkpoint".into(),
        })?;
    let strip = |prefix: &str| -> Vec<(String, Tensor)> {
        named
            .iter()
            .filter_map(|(n, t)| Some((n.strip_prefix(prefix)?.to_string(), t.shallow_clone())))
            .collect()
    };
    // Past the end of stage 1, the masks come from a later stage's rankings.
    let repruned = stages > 1 && step > stage_end(steps, 1, stages);
    evaluator.restore(&strip("model."), strip("mask."), repruned)?;
    optim.load_state(&named, path)?;
    Ok(step)
}
