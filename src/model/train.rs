//! Dense training of a [`GraphNet`]: SGD with momentum or Adam, constant or cosine learning
//! rate, one validation pass per epoch.

use super::graphnet::{Evaluation, GraphNet};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::runlog::Progress;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::Kind;

/// Optimiser family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    Sgd,
    Adam,
}

/// Learning-rate schedule over all steps of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    Cosine,
}

/// How to train; the `[train]` table of an env file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: Optimizer,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub schedule: Schedule,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 128,
            optimizer: Optimizer::Sgd,
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
            schedule: Schedule::Cosine,
        }
    }
}

impl TrainConfig {
    /// Learning rate at `step` of `total` steps.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Cosine => {
                let progress = step as f64 / total.max(1) as f64;
                0.5 * self.lr * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

/// One epoch's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f64,
    pub val: Evaluation,
    pub seconds: f64,
}

/// Trains `net` on `data.train` for `config.epochs` epochs, shuffling with `seed`, and
/// evaluates on `data.val` after each epoch.
pub fn train(
    net: &mut GraphNet,
    data: &Dataset,
    config: &TrainConfig,
    seed: u64,
    progress: &Progress,
) -> Result<Vec<EpochReport>> {
    let mut optimizer = match config.optimizer {
        Optimizer::Sgd => nn::Sgd {
            momentum: config.momentum,
            dampening: 0.0,
            wd: config.weight_decay,
            nesterov: config.momentum > 0.0,
        }
        .build(net.var_store(), config.lr)?,
        Optimizer::Adam => nn::Adam {
            wd: config.weight_decay,
            ..Default::default()
        }
        .build(net.var_store(), config.lr)?,
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let steps_per_epoch = data.train.len().div_ceil(config.batch_size.max(1));
    let total_steps = steps_per_epoch * config.epochs;
    let mut step = 0;
    let mut reports = Vec::with_capacity(config.epochs);
    for epoch in 1..=config.epochs {
        let started = std::time::Instant::now();
        let bar = progress.bar(
            steps_per_epoch as u64,
            &format!("epoch {epoch}/{}", config.epochs),
        );
        let (mut loss_sum, mut seen) = (0f64, 0usize);
        for (images, labels) in data.train.batches(config.batch_size, Some(&mut rng)) {
            optimizer.set_lr(config.lr_at(step, total_steps));
            let loss = super::cross_entropy(&net.forward_t(&images, true), &labels);
            optimizer.backward_step(&loss);
            let value = f64::try_from(&loss.detach().to_kind(Kind::Double))?;
            if !value.is_finite() {
                return Err(Error::NonFinite {
                    what: format!("training loss at epoch {epoch}, step {step}"),
                    value,
                });
            }
            let n = labels.size()[0] as usize;
            loss_sum += value * n as f64;
            seen += n;
            step += 1;
            bar.inc(1);
            bar.set_message(format!("loss {:.4}", loss_sum / seen as f64));
        }
        bar.finish_and_clear();
        let val = net.evaluate(&data.val, 1000)?;
        let report = EpochReport {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            val,
            seconds: started.elapsed().as_secs_f64(),
        };
        let val = if data.kind.is_text() {
            format!(
                "val loss {:.4} (perplexity {:.3})",
                report.val.loss,
                report.val.loss.exp()
            )
        } else {
            format!("val accuracy {:.2}%", 100.0 * report.val.accuracy)
        };
        progress.println(&format!(
            "epoch {epoch}/{}: train loss {:.4}, {val}, {:.1}s",
            config.epochs, report.train_loss, report.seconds
        ));
        reports.push(report);
    }
    Ok(reports)
}

/// The pretrained model: loaded from `checkpoint` when it exists, otherwise trained with
/// `config` and saved there first.
pub fn load_or_train(
    graph: crate::graph::ModelGraph,
    checkpoint: &std::path::Path,
    data: &Dataset,
    config: &TrainConfig,
    seed: u64,
    progress: &Progress,
) -> Result<GraphNet> {
    let mut net = GraphNet::new(graph, data.train.images.device());
    if checkpoint.exists() {
        net.load(checkpoint)?;
    } else {
        // The checkpoint is written after training: make sure it can be.
        crate::fsio::prepare_output(checkpoint)?;
        progress.println(&format!(
            "{} does not exist yet: pretraining the model first ({} epochs)",
            checkpoint.display(),
            config.epochs
        ));
        train(&mut net, data, config, seed, progress)?;
        net.save(checkpoint)?;
    }
    Ok(net)
}
