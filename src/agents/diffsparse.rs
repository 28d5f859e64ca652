//! Differentiable allocation (`agent = "diffsparse"`): one learnable keep level per unit,
//! trained by gradient descent on the training loss of the model under soft masks, with a
//! penalty for missing the budget (as in BESA, STR and DSA, which learn per-layer sparsity
//! by gradient). The model's weights stay as pretrained; only the levels learn.
//!
//! A unit's soft mask at level `k` is `σ((ln k − ln place) / τ)` over its elements' places
//! in its ranking ([`Masker::places`]: a weight's or a channel's rank as a fraction of the
//! unit), so it keeps about a fraction `k` of the unit, the most important first, and its
//! edge, as wide in relative terms at keep 0.02 as at 0.5, moves smoothly with `k`. The
//! model runs in training mode, so BatchNorm normalises with the masked batch's own
//! statistics, as the recalibration after hard pruning does. Levels are
//! `lo + (hi − lo) · σ(θ)` between the keep bounds, starting from the best allocator the
//! search scored first (uniform without one); Adam trains θ on the cross-entropy of batches
//! from the training split plus `penalty · ((cost(k) − budget) / budget)²`, where `cost` is
//! the wall's exact kept fraction of the budget metric and its gradient is taken by central
//! differences.
//!
//! Each episode takes `steps_per_episode` steps and proposes the current levels scaled to
//! the budget ([`ActionWall::fit`]); the search scores them like any policy and keeps the
//! best on the evaluation split, so the levels' trajectory is searched for its best point.
//! The steps depend only on the seed, so a resumed search replays them exactly.

use super::{Actor, Agent, Checkpoint, Demonstration, Episode, Learner, OneShotActor};
use crate::check::{Checks, MAX_SAMPLES, MAX_STEPS};
use crate::data::Split;
use crate::error::{Error, Result};
use crate::model::GraphNet;
use crate::prune::{ActionWall, Masker};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Tensor};

/// Soft-mask values below this are set to zero.
const SOFT_FLOOR: f64 = 1e-3;

/// `[diffsparse]` in a search config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiffSparseConfig {
    /// Gradient steps before each episode's proposal.
    pub steps_per_episode: usize,
    /// Adam's learning rate on the levels' logits.
    pub lr: f64,
    pub batch_size: usize,
    /// Width of the soft masks' edge in log-place: a weight at twice the level's place is
    /// kept at σ(−ln 2 / τ).
    pub temperature: f64,
    /// Weight of the squared relative miss of the budget.
    pub penalty: f64,
}

impl Default for DiffSparseConfig {
    fn default() -> Self {
        Self {
            steps_per_episode: 10,
            lr: 0.05,
            batch_size: 128,
            temperature: 0.05,
            penalty: 5.0,
        }
    }
}

impl DiffSparseConfig {
    /// What is wrong with the values, if anything: (key, message).
    pub fn check(&self) -> Option<(&'static str, String)> {
        Checks::new()
            .at_least("diffsparse.steps_per_episode", self.steps_per_episode, 1)
            .at_most(
                "diffsparse.steps_per_episode",
                self.steps_per_episode,
                MAX_STEPS,
            )
            .at_least("diffsparse.batch_size", self.batch_size, 1)
            .at_most("diffsparse.batch_size", self.batch_size, MAX_SAMPLES)
            .positive("diffsparse.lr", self.lr)
            .positive("diffsparse.temperature", self.temperature)
            .positive("diffsparse.penalty", self.penalty)
            .first()
    }
}

/// The differentiable allocator.
pub struct DiffSparse {
    config: DiffSparseConfig,
    net: GraphNet,
    train: Split,
    /// The pretrained values of the tensors the masks cover, by name.
    dense: HashMap<String, Tensor>,
    masker: Masker,
    /// Every unit's elements' places in its ranking.
    places: Vec<Tensor>,
    wall: ActionWall,
    vars: nn::VarStore,
    logits: Tensor,
    optimizer: nn::Optimizer,
    rng: StdRng,
    /// The best allocator's normalised actions and reward, until the first step.
    start: Option<(Vec<f64>, f64)>,
    /// Whether a step has been taken (the levels are the agent's own since).
    stepped: bool,
    /// The first error of a step (acting cannot fail); `learn` returns it.
    error: Option<Error>,
}

impl std::fmt::Debug for DiffSparse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiffSparse")
            .field("config", &self.config)
            .finish()
    }
}

impl DiffSparse {
    /// Levels starting at uniform allocation within the budget, on a copy of `pretrained`;
    /// `source` (the search config) is named in errors.
    pub fn new(
        config: DiffSparseConfig,
        pretrained: &GraphNet,
        train: &Split,
        masker: &Masker,
        wall: ActionWall,
        seed: u64,
        source: &std::path::Path,
    ) -> Result<Self> {
        let units = wall.costs().units().len();
        let places = (0..units)
            .map(|u| masker.places(u))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::Invalid {
                path: source.to_path_buf(),
                key: "agent".into(),
                message: "diffsparse learns unstructured or channel sparsity; N:M masks are per group (choose another agent)".into(),
            })?;
        let net = pretrained.duplicate();
        let names: Vec<String> = masker
            .masks(&vec![1.0; units])
            .into_iter()
            .map(|m| m.tensor)
            .collect();
        let dense = net
            .var_store()
            .variables()
            .into_iter()
            .filter(|(n, _)| names.contains(n))
            .map(|(n, t)| (n, t.detach().copy()))
            .collect();
        let [lo, hi] = wall.budget().bounds;
        let uniform: Vec<f64> = wall
            .fit(&vec![1.0; units])
            .iter()
            .map(|k| (k - lo) / (hi - lo).max(1e-9))
            .collect();
        let vars = nn::VarStore::new(tch::Device::Cpu);
        let logits = vars.root().var_copy("levels", &logit(&uniform));
        let optimizer = nn::Adam::default().build(&vars, config.lr)?;
        Ok(Self {
            config,
            net,
            train: Split {
                images: train.images.shallow_clone(),
                labels: train.labels.shallow_clone(),
            },
            dense,
            masker: masker.duplicate(),
            places,
            wall,
            vars,
            logits,
            optimizer,
            rng: StdRng::seed_from_u64(seed ^ 0xd1ff),
            start: None,
            stepped: false,
            error: None,
        })
    }

    /// The current levels (keep ratios before the budget is met exactly).
    pub fn levels(&self) -> Vec<f64> {
        let [lo, hi] = self.wall.budget().bounds;
        let x = Vec::<f32>::try_from(self.logits.detach().sigmoid()).unwrap_or_default();
        x.iter().map(|&x| lo + (hi - lo) * x as f64).collect()
    }

    /// One gradient step on a random batch; returns the loss.
    pub fn step(&mut self) -> Result<f64> {
        if let Some((actions, _)) = self.start.take().filter(|_| !self.stepped) {
            let _guard = tch::no_grad_guard();
            self.logits.shallow_clone().copy_(&logit(&actions));
        }
        self.stepped = true;
        let n = self.train.len() as i64;
        let index: Vec<i64> = (0..self.config.batch_size.min(n as usize))
            .map(|_| self.rng.random_range(0..n))
            .collect();
        let index = Tensor::from_slice(&index).to_device(self.train.images.device());
        let images = self.train.images.index_select(0, &index);
        let labels = self.train.labels.index_select(0, &index);
        let [lo, hi] = self.wall.budget().bounds;
        let device = self.net.device();
        let levels = self.logits.sigmoid() * (hi - lo) + lo;
        let soft: Vec<Tensor> = self
            .places
            .iter()
            .enumerate()
            .map(|(u, places)| {
                let level = levels.get(u as i64).to_device(device).log();
                let soft = ((level - places.log()) / self.config.temperature).sigmoid();
                // Values far past the edge are zero, not tiny: products of tiny values
                // turn denormal, which costs the CPU tenfold, and their gradients are nil.
                let live = soft.ge(SOFT_FLOOR).to_kind(Kind::Float);
                soft * live
            })
            .collect();
        let overrides: HashMap<String, Tensor> = self
            .masker
            .masks_from(&soft)
            .into_iter()
            .filter_map(|m| Some((m.tensor.clone(), self.dense.get(&m.tensor)? * m.mask)))
            .collect();
        let logits = self.net.forward_overriding(&images, true, &overrides);
        let task = crate::model::cross_entropy(&logits, &labels);
        // The budget term's gradient by central differences of the wall's exact cost.
        let keeps = self.levels();
        let budget = self.wall.budget().keep;
        let miss = (self.wall.cost(&keeps) - budget) / budget;
        let h = 0.02;
        let slopes: Vec<f32> = (0..keeps.len())
            .map(|u| {
                let at = |d: f64| {
                    let mut k = keeps.clone();
                    k[u] = (k[u] + d).clamp(lo, hi);
                    (self.wall.cost(&k), k[u])
                };
                let ((up, ku), (down, kd)) = (at(h), at(-h));
                let slope = if ku > kd {
                    (up - down) / (ku - kd)
                } else {
                    0.0
                };
                (2.0 * self.config.penalty * miss * slope / budget) as f32
            })
            .collect();
        let penalty = (&levels * Tensor::from_slice(&slopes)).sum(Kind::Float);
        let loss = &task + penalty;
        self.optimizer.backward_step(&loss);
        let value = f64::try_from(&task.detach().to_kind(Kind::Double))?;
        if !value.is_finite() {
            return Err(Error::NonFinite {
                what: "diffsparse training loss".into(),
                value,
            });
        }
        Ok(value)
    }
}

/// Logits of fractions in (0, 1) (kept a little inside, so they stay finite).
fn logit(fractions: &[f64]) -> Tensor {
    let values: Vec<f32> = fractions
        .iter()
        .map(|x| {
            let x = x.clamp(1e-3, 1.0 - 1e-3);
            (x / (1.0 - x)).ln() as f32
        })
        .collect();
    Tensor::from_slice(&values)
}

impl Agent for DiffSparse {
    fn actor(&mut self) -> Actor<'_> {
        Actor::OneShot(self)
    }

    fn begin_episode(&mut self, _index: usize) {}

    fn checkpoint(&self) -> Option<Checkpoint<'_>> {
        Some(Checkpoint {
            vars: &self.vars,
            kind: "diffsparse",
            config: serde_json::to_string(&self.config).unwrap_or_default(),
        })
    }
}

impl OneShotActor for DiffSparse {
    /// Takes the episode's gradient steps, then proposes the levels scaled to the budget (as
    /// normalised actions between the keep bounds).
    fn act(&mut self, _features: &[Vec<f32>], _explore: bool) -> Vec<f64> {
        for _ in 0..self.config.steps_per_episode {
            if self.error.is_some() {
                break;
            }
            if let Err(e) = self.step() {
                self.error = Some(e);
            }
        }
        let [lo, hi] = self.wall.budget().bounds;
        self.wall
            .fit(&self.levels())
            .iter()
            .map(|k| ((k - lo) / (hi - lo).max(1e-9)).clamp(0.0, 1.0))
            .collect()
    }
}

impl Learner for DiffSparse {
    /// The levels learn from the training loss, not from rewards; a failed step ends the
    /// search here.
    fn learn(&mut self, _episode: &Episode) -> Result<()> {
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The levels start from the best allocation scored before the first step.
    fn demonstrate(&mut self, demonstration: &Demonstration) {
        if self.stepped || demonstration.actions.len() != self.places.len() {
            return;
        }
        if self
            .start
            .as_ref()
            .is_none_or(|(_, best)| demonstration.reward > *best)
        {
            self.start = Some((demonstration.actions.clone(), demonstration.reward));
        }
    }
}
