//! The evaluator: applies a policy's masks to a working copy of the pretrained model, scores
//! it on the evaluation split (accuracy, loss, params and FLOPs kept) and turns the score
//! into a reward. Post-training criteria (Wanda, SparseGPT) prune on calibration inputs
//! instead ([`calibrate`]). Optional short masked fine-tune; BatchNorm recalibration after
//! channel pruning.
//!
//! Weight sources live here too: the pretrained model (loaded, or pretrained first) and
//! MetaPruning's PruningNet ([`pruningnet`]).
//!
//! Must not know about agents.

mod allocators;
mod calibrate;
mod finetune;
pub mod latency;
mod pretrained;
pub mod pruningnet;
mod save;
mod score;

pub use calibrate::{alphas, Calibration};
pub use finetune::{cubic_keeps, Distill};
pub use pretrained::{pretrained, Pretrained};
pub use save::{check_save, graph_sidecar};
pub use score::{reward, Latency, LayerKeep, Score};

use crate::config::{EnvSpec, LatencySpec, RewardKind};
use crate::data::{Dataset, Split, SplitName};
use crate::error::{Error, Result};
use crate::model::GraphNet;
use crate::prune::{slim, Granularity};
use crate::prune::{ActionWall, Budget, CostModel, Criterion, Importance, Mask, Masker};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::OnceLock;
use std::time::Instant;
use tch::nn::{self, OptimizerConfig};
use tch::Tensor;

/// How the evaluator prunes and scores.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    pub granularity: Granularity,
    pub criterion: Criterion,
    pub budget: Budget,
    pub reward: RewardKind,
    pub eval_split: SplitName,
    /// Masked SGD steps on the training split before scoring (0: none).
    pub finetune_steps: usize,
    pub finetune_lr: f64,
    /// Fine-tune with Adam instead of SGD (language models, trained with Adam).
    pub finetune_adam: bool,
    /// Training batches used to re-estimate BatchNorm statistics after channel pruning.
    pub recalibration_batches: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    /// Score on only the first this many samples of the evaluation split (searches use it
    /// to trade precision for episodes per second).
    pub eval_samples: Option<usize>,
    pub seed: u64,
    /// Latency measurement (`[latency]`, or its defaults under a latency budget).
    pub latency: Option<LatencySpec>,
    /// Calibration samples of post-training criteria and of OWL (`prune.calibration`).
    pub calibration: usize,
    /// Wanda compares weights within each output row (`prune.wanda_compare = "row"`), else
    /// across the layer.
    pub wanda_rows: bool,
    /// Post-training criteria read the dense model's layer inputs, measured once and cached
    /// (`prune.calibration_from = "dense"`), instead of the already-pruned layers' outputs.
    pub calibration_from_dense: bool,
    /// The env's name and the file of its weights (the latency table is cached beside it).
    pub name: String,
    pub weights: std::path::PathBuf,
    /// Score channel-pruned policies on the physically slimmed model (recalibrated and run
    /// at its own size), which computes what the masked model computes in fewer operations.
    /// Policies that are fine-tuned before scoring are always scored masked.
    pub slim_scoring: bool,
}

impl EvalConfig {
    /// The env's settings, with the defaults for what an env does not say.
    pub fn from_env(spec: &EnvSpec, seed: u64) -> Result<Self> {
        // A language model fine-tunes as it was trained, at a tenth of its learning rate and
        // with its batch size (of sequences); classifiers with SGD at 0.01 on 128 images.
        let lm = spec.model.is_language_model();
        let adam = lm && spec.train.optimizer == crate::model::Optimizer::Adam;
        Ok(Self {
            granularity: spec.prune.granularity,
            criterion: spec.prune.criterion,
            budget: Budget {
                metric: spec.prune.target.metric,
                keep: spec.prune.target.keep,
                bounds: spec.prune.keep_bounds,
            },
            reward: spec.reward.kind,
            eval_split: spec.data.eval_split,
            finetune_steps: spec.reward.finetune_steps,
            finetune_lr: if lm { spec.train.lr / 10.0 } else { 0.01 },
            finetune_adam: adam,
            recalibration_batches: spec.reward.recalibration_batches,
            batch_size: if lm { spec.train.batch_size } else { 128 },
            eval_batch_size: if lm { 64 } else { 1000 },
            eval_samples: None,
            seed,
            latency: spec.latency_settings(),
            calibration: spec.prune.calibration,
            wanda_rows: spec.prune.wanda_compare == crate::config::WandaCompare::Row,
            calibration_from_dense: spec.prune.calibration_from
                == crate::config::CalibrationFrom::Dense,
            name: spec.name.clone(),
            weights: spec.weights_path(),
            slim_scoring: true,
        })
    }
}

/// Scores policies on one model and data set, on one device.
pub struct Evaluator {
    /// Working copy: every evaluation starts from the pretrained values.
    net: GraphNet,
    /// Handles into the working copy's tensors, with their pretrained values beside them.
    tensors: Vec<(String, Tensor, Tensor)>,
    masker: Masker,
    costs: CostModel,
    /// Each unit's importance values (per weight, or per channel), for threshold allocators.
    unit_scores: Vec<Vec<f32>>,
    train: Split,
    val: Split,
    test: Split,
    /// The evaluation split, cut to `eval_samples`: what `evaluate` scores on.
    eval: Split,
    config: EvalConfig,
    /// Where each evaluation's starting weights come from (default: the pretrained model).
    source: Option<Box<dyn WeightSource>>,
    /// Timing of pruned models, when latency is measured.
    timing: Option<Timing>,
    calibration: Calibration,
    /// The layer-wise allocators' signals, measured on the dense model when first asked for.
    outliers: OnceLock<Vec<f64>>,
    alphas: OnceLock<Vec<f64>>,
    /// The masks the last `apply` (or `reprune`) put on the working copy, by tensor name.
    applied: Vec<(String, Tensor)>,
    /// The masker of the last stage of iterative pruning, until the next `apply`.
    repruned: Option<Masker>,
    /// The last scored policy's slimmed, recalibrated model, when it was scored slimmed
    /// (see [`EvalConfig::slim_scoring`]); what `rescore_on` scores then.
    slimmed: Option<GraphNet>,
}

/// What timing a pruned model needs: the input batch, the runs, and the dense model, timed
/// alongside every pruned one.
struct Timing {
    input: Tensor,
    repeats: usize,
    dense: GraphNet,
}

/// Starting weights for an evaluation other than the pretrained model's: e.g. weights
/// generated for the policy's channel counts (MetaPruning's PruningNet).
pub trait WeightSource {
    /// Values for some of the model's tensors (by name) under a policy's `masks`; tensors
    /// not returned start from their pretrained values. The masks are applied afterwards.
    fn weights(&self, masks: &[Mask]) -> Result<Vec<(String, Tensor)>>;
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("units", &self.costs.units().len())
            .finish()
    }
}

impl Evaluator {
    /// Builds an evaluator over a copy of `pretrained` (which is never modified).
    pub fn new(pretrained: &GraphNet, data: &Dataset, config: EvalConfig) -> Result<Self> {
        let net = pretrained.duplicate();
        let mut costs = CostModel::new(net.graph(), config.granularity);
        let mut timing = None;
        if let Some(spec) = &config.latency {
            let device = net.device();
            let key = latency::key_for(net.graph(), device, spec.batch);
            let path = latency::table_path(spec, &config.name, &config.weights, &key);
            let (table, _) = latency::load_or_measure(
                net.graph(),
                spec,
                key,
                &path,
                device,
                &crate::runlog::Progress::stderr(),
            )?;
            costs = costs.with_latency(table)?;
            timing = Some(Timing {
                input: latency::timing_input(net.graph(), spec.batch, device),
                repeats: spec.model_repeats,
                dense: pretrained.duplicate(),
            });
        }
        let importance = Importance::compute(&net, config.criterion, &data.train, config.seed)?;
        let masker = Masker::new(&costs, &importance);
        let unit_scores = importance.unit_scores(&costs)?;
        let mut tensors: Vec<(String, Tensor, Tensor)> = net
            .var_store()
            .variables()
            .into_iter()
            .map(|(name, t)| {
                let dense = t.detach().copy();
                (name, t, dense)
            })
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let split = |s: &Split| Split {
            images: s.images.shallow_clone(),
            labels: s.labels.shallow_clone(),
        };
        Ok(Self {
            net,
            tensors,
            masker,
            costs,
            unit_scores,
            train: split(&data.train),
            val: split(&data.val),
            eval: split(&match config.eval_samples {
                Some(n) => data.split(config.eval_split).head(n),
                None => split(data.split(config.eval_split)),
            }),
            test: split(&data.test),
            calibration: Calibration::new(&data.train, config.calibration),
            config,
            source: None,
            timing,
            outliers: OnceLock::new(),
            alphas: OnceLock::new(),
            applied: Vec::new(),
            repruned: None,
            slimmed: None,
        })
    }

    /// The latency of the model pruned by `keeps`, measured and predicted, without scoring
    /// it (None unless the env measures latency).
    pub fn latency_of(&mut self, keeps: &[f64]) -> Result<Option<Latency>> {
        if self.timing.is_none() {
            return Ok(None);
        }
        self.apply(keeps)?;
        let counts = self.costs.counts(keeps);
        self.measure_latency(keeps, &counts)
    }

    /// The measured latency of the model the last `apply(keeps)` left in the working copy.
    fn measure_latency(
        &self,
        keeps: &[f64],
        counts: &crate::prune::Counts,
    ) -> Result<Option<Latency>> {
        let Some(timing) = &self.timing else {
            return Ok(None);
        };
        let slimmed;
        let pruned = if let Some(scored) = &self.slimmed {
            scored
        } else if self.config.granularity == Granularity::Channel {
            slimmed = slim(&self.net, self.masker(), keeps)?;
            &slimmed
        } else {
            &self.net
        };
        let (latency_ms, dense_ms) =
            latency::time_pair(pruned, &timing.dense, &timing.input, timing.repeats);
        // The table predicts a fraction of the dense latency; it is read against the dense
        // model timed alongside, so that the machine's drift since the table was made (load,
        // clock) does not count as the model's error.
        let kept = counts.latency_kept.unwrap_or(f64::NAN);
        Ok(Some(Latency {
            latency_ms,
            predicted_latency_ms: kept * dense_ms,
            dense_latency_ms: dense_ms,
            speedup: dense_ms / latency_ms.max(1e-9),
            table_latency_ms: counts.latency_ms.unwrap_or(f64::NAN),
        }))
    }

    pub fn costs(&self) -> &CostModel {
        &self.costs
    }

    /// The masker of the working copy's pruning: the pretrained model's rankings, or after
    /// iterative pruning ([`Self::reprune`]) the rankings of the last stage.
    pub fn masker(&self) -> &Masker {
        self.repruned.as_ref().unwrap_or(&self.masker)
    }

    /// Each unit's importance values under the env's criterion.
    pub fn unit_scores(&self) -> &[Vec<f32>] {
        &self.unit_scores
    }

    /// Whether the model is a language model (its logits are `[vocab, tokens]`).
    pub fn is_language_model(&self) -> bool {
        self.costs.graph().output_shape().len() == 2
    }

    pub fn config(&self) -> &EvalConfig {
        &self.config
    }

    /// Every evaluation from now on starts from `source`'s weights (None: the pretrained
    /// model's). BatchNorm is then always recalibrated.
    pub fn set_source(&mut self, source: Option<Box<dyn WeightSource>>) {
        self.source = source;
    }

    /// The validation split.
    pub fn val_split(&self) -> &Split {
        &self.val
    }

    /// The training split (for agents that train a network of their own on it).
    pub fn train_split(&self) -> &Split {
        &self.train
    }

    /// The ActionWall for this evaluator's budget; `source` names the env file in errors.
    pub fn wall(&self, source: &std::path::Path) -> Result<ActionWall> {
        ActionWall::new(&self.costs, self.config.budget, source)
    }

    /// Scores keep ratios (one per unit) on the evaluation split (cut to `eval_samples`).
    pub fn evaluate(&mut self, keeps: &[f64]) -> Result<Score> {
        self.score(keeps, None, true)
    }

    /// Scores several policies, one after another on the same working copy.
    pub fn evaluate_batch(&mut self, policies: &[Vec<f64>]) -> Result<Vec<Score>> {
        policies.iter().map(|keeps| self.evaluate(keeps)).collect()
    }

    /// Scores keep ratios on the whole of a split (`test` for the one final report).
    pub fn evaluate_on(&mut self, keeps: &[f64], split: SplitName) -> Result<Score> {
        self.score(keeps, Some(split), true)
    }

    /// Scores the model the last evaluation of `keeps` left in the working copy (pruned,
    /// recalibrated, fine-tuned) on another split, without pruning and fine-tuning it again.
    /// `keeps` must be the policy last evaluated.
    pub fn rescore_on(&mut self, keeps: &[f64], split: SplitName) -> Result<Score> {
        self.score(keeps, Some(split), false)
    }

    /// True when `evaluate` scores on a subset of the evaluation split (`eval_samples`), so
    /// that a search rescores its promising candidates on the whole split.
    pub fn scores_a_subset(&self) -> bool {
        self.eval.len() < self.config_split().len()
    }

    fn config_split(&self) -> &Split {
        match self.config.eval_split {
            SplitName::Train => &self.train,
            SplitName::Val => &self.val,
            SplitName::Test => &self.test,
        }
    }

    /// The noise of subset scores: the standard deviation of `keeps`' reward over the
    /// disjoint windows of `eval_samples` samples that the whole evaluation split holds
    /// (None without a subset, or with room for fewer than two windows). Leaves `keeps`'
    /// pruned model in the working copy.
    pub fn subset_noise(&mut self, keeps: &[f64]) -> Result<Option<f64>> {
        let size = self.eval.len();
        let windows = self.config_split().len().checked_div(size).unwrap_or(0);
        if !self.scores_a_subset() || windows < 2 {
            return Ok(None);
        }
        self.prepare(keeps, true)?;
        let counts = self.costs.counts(keeps);
        let mut rewards = Vec::with_capacity(windows);
        let net = self.slimmed.as_ref().unwrap_or(&self.net);
        for w in 0..windows {
            let window = self.config_split().window(w * size, size);
            let evaluation = net.evaluate(&window, self.config.eval_batch_size)?;
            rewards.push(reward(
                self.config.reward,
                evaluation.accuracy,
                evaluation.loss,
                counts.params,
                counts.flops,
                counts.latency_ms,
            ));
        }
        let mean = rewards.iter().sum::<f64>() / windows as f64;
        let variance =
            rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (windows - 1) as f64;
        Ok(Some(variance.sqrt()))
    }

    fn score(&mut self, keeps: &[f64], split: Option<SplitName>, apply: bool) -> Result<Score> {
        let started = Instant::now();
        if apply {
            self.prepare(keeps, true)?;
        }
        let net = self.slimmed.as_ref().unwrap_or(&self.net);
        let data = match split {
            None => &self.eval,
            Some(SplitName::Train) => &self.train,
            Some(SplitName::Val) => &self.val,
            Some(SplitName::Test) => &self.test,
        };
        let split = split.unwrap_or(self.config.eval_split);
        let evaluation = net.evaluate(data, self.config.eval_batch_size)?;
        let counts = self.costs.counts(keeps);
        let layers = self
            .costs
            .units()
            .iter()
            .zip(self.costs.effective_keeps(keeps))
            .map(|(u, keep)| LayerKeep {
                name: u.name.clone(),
                keep,
            })
            .collect();
        Ok(Score {
            accuracy: evaluation.accuracy,
            loss: evaluation.loss,
            params_kept: counts.params_kept,
            flops_kept: counts.flops_kept,
            params: counts.params,
            flops: counts.flops,
            reward: reward(
                self.config.reward,
                evaluation.accuracy,
                evaluation.loss,
                counts.params,
                counts.flops,
                counts.latency_ms,
            ),
            perplexity: self.is_language_model().then(|| evaluation.loss.exp()),
            layers,
            split,
            seconds: started.elapsed().as_secs_f64(),
            latency: self.measure_latency(keeps, &counts)?,
        })
    }

    /// Puts the pruned model for `keeps` into the working copy: pretrained values, masks,
    /// BatchNorm recalibration and fine-tuning as configured. Returns it (for export).
    pub fn apply(&mut self, keeps: &[f64]) -> Result<&GraphNet> {
        self.prepare(keeps, false)?;
        Ok(&self.net)
    }

    /// Whether the last policy scored was scored on its slimmed model.
    pub fn scored_slimmed(&self) -> bool {
        self.slimmed.is_some()
    }

    /// Whether a policy is scored on the slimmed model (see [`EvalConfig::slim_scoring`]):
    /// channel pruning, and nothing trains or re-prunes the masked weights before scoring.
    fn scores_slimmed(&self) -> bool {
        self.config.slim_scoring
            && self.config.granularity == Granularity::Channel
            && self.config.finetune_steps == 0
            && !self.config.criterion.is_post_training()
    }

    /// [`Self::apply`]; with `for_scoring`, a policy scored slimmed is recalibrated on its
    /// slimmed model instead of the working copy (which then holds the masked weights with
    /// the pretrained statistics).
    fn prepare(&mut self, keeps: &[f64], for_scoring: bool) -> Result<()> {
        self.slimmed = None;
        let units = self.costs.units().len();
        if keeps.len() != units {
            return Err(Error::graph(
                "<policy>",
                format!("{} keep ratios for {units} prunable units", keeps.len()),
            ));
        }
        if let Some(bad) = keeps.iter().find(|k| !k.is_finite()) {
            return Err(Error::NonFinite {
                what: "a keep ratio".into(),
                value: *bad,
            });
        }
        self.repruned = None;
        let post_training = self.config.criterion.is_post_training();
        let raw = if post_training {
            Vec::new()
        } else {
            self.masker.masks(keeps)
        };
        let generated = match &self.source {
            Some(source) => source.weights(&raw)?,
            None => Vec::new(),
        };
        let mut named: Vec<(String, Tensor)> =
            raw.into_iter().map(|m| (m.tensor, m.mask)).collect();
        let mut masks = self.handles(&named);
        {
            let _guard = tch::no_grad_guard();
            for (_, working, dense) in &self.tensors {
                working.shallow_clone().copy_(dense);
            }
            for (name, value) in &generated {
                if let Ok(i) = self.tensors.binary_search_by(|t| t.0.as_str().cmp(name)) {
                    self.tensors[i].1.shallow_clone().copy_(value);
                }
            }
            apply_masks(&masks);
        }
        if post_training {
            let pruned = self.calibration.prune(
                &self.net,
                self.config.criterion,
                &self.costs,
                keeps,
                self.config.wanda_rows,
                self.config.calibration_from_dense,
            )?;
            named = pruned.into_iter().map(|m| (m.tensor, m.mask)).collect();
            masks = self.handles(&named);
        }
        self.applied = named;
        let mut rng = StdRng::seed_from_u64(self.config.seed);
        if for_scoring && self.scores_slimmed() && self.prunes(keeps) {
            let slimmed = slim(&self.net, self.masker(), keeps)?;
            self.recalibrate_model(&slimmed, keeps, &mut rng);
            self.slimmed = Some(slimmed);
            return Ok(());
        }
        self.recalibrate(keeps, &mut rng);
        if self.config.finetune_steps > 0 {
            self.finetune(&masks, &mut rng)?;
        }
        Ok(())
    }

    /// The working copy's tensors for named masks (masks of tensors it lacks are left out).
    fn handles(&self, named: &[(String, Tensor)]) -> Vec<(Tensor, Tensor)> {
        named
            .iter()
            .filter_map(|(name, mask)| {
                let i = self
                    .tensors
                    .binary_search_by(|t| t.0.as_str().cmp(name))
                    .ok()?;
                Some((self.tensors[i].1.shallow_clone(), mask.shallow_clone()))
            })
            .collect()
    }

    /// Masked SGD (or Adam) on the training split: masks are re-applied after every step.
    fn finetune(&mut self, masks: &[(Tensor, Tensor)], rng: &mut StdRng) -> Result<()> {
        let mut optimizer = if self.config.finetune_adam {
            nn::Adam::default().build(self.net.var_store(), self.config.finetune_lr)?
        } else {
            nn::Sgd {
                momentum: 0.9,
                dampening: 0.0,
                wd: 5e-4,
                nesterov: true,
            }
            .build(self.net.var_store(), self.config.finetune_lr)?
        };
        let mut step = 0;
        while step < self.config.finetune_steps {
            for (images, labels) in self.train.batches(self.config.batch_size, Some(rng)) {
                let loss = crate::model::cross_entropy(&self.net.forward_t(&images, true), &labels);
                optimizer.backward_step(&loss);
                {
                    let _guard = tch::no_grad_guard();
                    apply_masks(masks);
                }
                step += 1;
                if step == self.config.finetune_steps {
                    break;
                }
            }
        }
        optimizer.zero_grad();
        let loss_check = self.net.evaluate(&self.train.head(256), 256)?;
        if !loss_check.loss.is_finite() {
            return Err(Error::NonFinite {
                what: "loss after fine-tuning".into(),
                value: loss_check.loss,
            });
        }
        Ok(())
    }
}

fn apply_masks(masks: &[(Tensor, Tensor)]) {
    for (tensor, mask) in masks {
        let _ = tensor.shallow_clone().g_mul_(mask);
    }
}
