//! Evolutionary search on whole policies, as in MetaPruning's search: a population of
//! candidates; the top-k by reward breed the next generation by mutation and crossover;
//! candidates that break the budget are rejected and drawn again.
//!
//! `mode = "one-plus-lambda"` is the (1 + λ) search EvoPress uses for layer-wise compression
//! instead: every generation is `population` offspring of the best policy so far, each made by
//! one to three budget-preserving moves (one unit keeps more, another keeps as much less of
//! the budget metric).

use super::{Actor, Agent, Demonstration, Episode, Learner, OneShotActor};
use crate::check::{Checks, MAX_POPULATION, MAX_STEPS};
use crate::error::Result;
use crate::prune::ActionWall;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The `[evolution]` table of a search config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvolutionConfig {
    pub population: usize,
    /// Parents kept from everything evaluated so far.
    pub top_k: usize,
    /// Probability that a gene is redrawn in a mutation.
    pub mutation_prob: f64,
    /// Share of each new generation made by crossover (the rest by mutation).
    pub crossover: f64,
    /// Draws before falling back to the ActionWall for a feasible candidate.
    pub max_tries: usize,
    /// The lower edge of the budget window, as a fraction of the budget: candidates must use
    /// at least `window` × budget (MetaPruning's FLOPs window). 0 accepts any candidate that
    /// meets the budget.
    pub window: f64,
    /// `population` (MetaPruning's) or `one-plus-lambda` (EvoPress's).
    pub mode: EvolutionMode,
    /// With `one-plus-lambda`: the largest keep ratio one move shifts into a unit.
    pub shift: f64,
}

/// How an evolutionary search breeds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvolutionMode {
    #[default]
    Population,
    OnePlusLambda,
}

impl Default for EvolutionConfig {
    fn default() -> Self {
        Self {
            population: 16,
            top_k: 4,
            mutation_prob: 0.1,
            crossover: 0.5,
            max_tries: 50,
            window: 0.0,
            mode: EvolutionMode::Population,
            shift: 0.05,
        }
    }
}

impl EvolutionConfig {
    /// What is wrong with the values, if anything: (key, message).
    pub fn check(&self) -> Option<(&'static str, String)> {
        Checks::new()
            .at_least("evolution.population", self.population, 2)
            .at_most("evolution.population", self.population, MAX_POPULATION)
            .at_most("evolution.max_tries", self.max_tries, MAX_STEPS)
            .at_least("evolution.top_k", self.top_k, 1)
            .rule("evolution.top_k", self.top_k <= self.population, || {
                format!(
                    "{} is more than the population ({})",
                    self.top_k, self.population
                )
            })
            .within(
                "evolution.mutation_prob",
                self.mutation_prob,
                0.0,
                1.0,
                false,
            )
            .within("evolution.crossover", self.crossover, 0.0, 1.0, false)
            .within("evolution.window", self.window, 0.0, 1.0, false)
            .rule(
                "evolution.shift",
                self.shift > 0.0 && self.shift <= 1.0,
                || format!("{} must be in (0, 1]", self.shift),
            )
            .at_least("evolution.max_tries", self.max_tries, 1)
            .first()
    }
}

/// Draws random normalised candidates that meet the budget (rejecting the rest), falling back
/// after `max_tries` to the last draw's profile scaled into the budget.
#[derive(Debug, Clone)]
pub(crate) struct FeasibleSampler {
    wall: ActionWall,
    max_tries: usize,
    floor: f64,
}

impl FeasibleSampler {
    pub fn new(wall: ActionWall, max_tries: usize) -> Self {
        Self {
            wall,
            max_tries,
            floor: 0.0,
        }
    }

    fn keeps(&self, actions: &[f64]) -> Vec<f64> {
        let [lo, hi] = self.wall.budget().bounds;
        actions
            .iter()
            .map(|a| lo + a.clamp(0.0, 1.0) * (hi - lo))
            .collect()
    }

    /// Accepts only candidates that use at least `floor` (a fraction of the dense model's
    /// budget metric) besides meeting the budget: the lower edge of a window.
    pub fn with_floor(mut self, floor: f64) -> Self {
        self.floor = floor;
        self
    }

    pub fn feasible(&self, actions: &[f64]) -> bool {
        let cost = self.wall.cost(&self.keeps(actions));
        cost <= self.wall.budget().keep + 1e-12 && cost >= self.floor - 1e-12
    }

    /// The first feasible candidate `draw` produces that `fresh` accepts, or else the last one
    /// made feasible.
    pub fn sample(
        &self,
        rng: &mut StdRng,
        mut draw: impl FnMut(&mut StdRng) -> Vec<f64>,
        fresh: impl Fn(&[f64]) -> bool,
    ) -> Vec<f64> {
        let mut candidate = draw(rng);
        for _ in 1..self.max_tries {
            if self.feasible(&candidate) && fresh(&candidate) {
                return candidate;
            }
            candidate = draw(rng);
        }
        if self.feasible(&candidate) {
            return candidate;
        }
        // Scale the candidate's profile down into the budget.
        let [lo, hi] = self.wall.budget().bounds;
        let span = (hi - lo).max(1e-12);
        self.wall
            .fit(&self.keeps(&candidate))
            .iter()
            .map(|k| ((k - lo) / span).clamp(0.0, 1.0))
            .collect()
    }

    pub fn units(&self) -> usize {
        self.wall.costs().units().len()
    }

    /// Each unit's share of the budget metric per unit of keep ratio (the cost's slope, taken
    /// from the dense model: exact for weights, an estimate for coupled channels).
    fn slopes(&self) -> Vec<f64> {
        let n = self.units();
        let dense = self.wall.cost(&vec![1.0; n]);
        (0..n)
            .map(|u| {
                let mut keeps = vec![1.0; n];
                keeps[u] = 0.5;
                ((dense - self.wall.cost(&keeps)) / 0.5).max(1e-12)
            })
            .collect()
    }

    /// `parent` after one to three budget-preserving moves: a unit keeps up to `shift` more,
    /// another as much less of the budget metric (in normalised actions).
    fn shifted(&self, parent: &[f64], slopes: &[f64], shift: f64, rng: &mut StdRng) -> Vec<f64> {
        let n = parent.len();
        let [lo, hi] = self.wall.budget().bounds;
        let span = (hi - lo).max(1e-12);
        let mut keeps = self.keeps(parent);
        if n >= 2 {
            for _ in 0..rng.random_range(1..=3) {
                let i = rng.random_range(0..n);
                let j = (i + rng.random_range(1..n)) % n;
                let up = rng.random_range(0.0..=shift).min(hi - keeps[i]);
                let down = (up * slopes[i] / slopes[j]).min(keeps[j] - lo);
                // Both moves are cut to what the bounds allow, keeping their costs equal.
                let up = down * slopes[j] / slopes[i];
                keeps[i] += up;
                keeps[j] -= down;
            }
        }
        keeps
            .iter()
            .map(|k| ((k - lo) / span).clamp(0.0, 1.0))
            .collect()
    }
}

pub struct Evolution {
    config: EvolutionConfig,
    sampler: FeasibleSampler,
    rng: StdRng,
    /// Candidates of the current generation still to be proposed.
    queue: Vec<Vec<f64>>,
    /// Everything evaluated: (reward, normalised actions), best first after each generation.
    evaluated: Vec<(f64, Vec<f64>)>,
    /// Every candidate proposed so far (bit patterns), so none is evaluated twice.
    seen: std::collections::HashSet<Vec<u64>>,
}

impl std::fmt::Debug for Evolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evolution")
            .field("evaluated", &self.evaluated.len())
            .finish()
    }
}

impl Evolution {
    pub fn new(config: EvolutionConfig, wall: ActionWall, seed: u64) -> Self {
        let floor = config.window * wall.budget().keep;
        let sampler = FeasibleSampler::new(wall, config.max_tries).with_floor(floor);
        Self {
            config,
            sampler,
            rng: StdRng::seed_from_u64(seed),
            queue: Vec::new(),
            evaluated: Vec::new(),
            seen: std::collections::HashSet::new(),
        }
    }

    fn next_generation(&mut self) {
        let n = self.sampler.units();
        let sampler = self.sampler.clone();
        let mut queue = Vec::with_capacity(self.config.population);
        let one_plus_lambda = self.config.mode == EvolutionMode::OnePlusLambda;
        if one_plus_lambda && !self.evaluated.is_empty() {
            let slopes = sampler.slopes();
            let parent = self
                .evaluated
                .iter()
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, p)| p.clone())
                .unwrap_or_default();
            for _ in 0..self.config.population {
                let seen = &self.seen;
                let child = sampler.sample(
                    &mut self.rng,
                    |r| sampler.shifted(&parent, &slopes, self.config.shift, r),
                    |c| !seen.contains(&key(c)),
                );
                self.seen.insert(key(&child));
                queue.push(child);
            }
        } else if self.evaluated.len() < self.config.top_k {
            for _ in 0..self.config.population {
                let seen = &self.seen;
                let child = sampler.sample(
                    &mut self.rng,
                    |r| (0..n).map(|_| r.random::<f64>()).collect(),
                    |c| !seen.contains(&key(c)),
                );
                self.seen.insert(key(&child));
                queue.push(child);
            }
        } else {
            self.evaluated.sort_by(|a, b| b.0.total_cmp(&a.0));
            let parents: Vec<Vec<f64>> = self
                .evaluated
                .iter()
                .take(self.config.top_k)
                .map(|(_, p)| p.clone())
                .collect();
            let crossovers =
                (self.config.population as f64 * self.config.crossover).round() as usize;
            let p = self.config.mutation_prob;
            for i in 0..self.config.population {
                let seen = &self.seen;
                let fresh = |c: &[f64]| !seen.contains(&key(c));
                let child = if i < crossovers && parents.len() > 1 {
                    sampler.sample(
                        &mut self.rng,
                        |r| {
                            let a = r.random_range(0..parents.len());
                            let b = (a + r.random_range(1..parents.len())) % parents.len();
                            parents[a]
                                .iter()
                                .zip(&parents[b])
                                .map(|(x, y)| if r.random::<bool>() { *x } else { *y })
                                .collect()
                        },
                        fresh,
                    )
                } else {
                    sampler.sample(
                        &mut self.rng,
                        |r| {
                            let parent = &parents[r.random_range(0..parents.len())];
                            // At least one gene changes, so a mutant is never its parent.
                            let forced = r.random_range(0..parent.len().max(1));
                            parent
                                .iter()
                                .enumerate()
                                .map(|(g, &x)| {
                                    if g == forced || r.random::<f64>() < p {
                                        r.random::<f64>()
                                    } else {
                                        x
                                    }
                                })
                                .collect()
                        },
                        fresh,
                    )
                };
                self.seen.insert(key(&child));
                queue.push(child);
            }
        }
        queue.reverse();
        self.queue = queue;
    }
}

/// A candidate's identity: the bit patterns of its genes.
fn key(candidate: &[f64]) -> Vec<u64> {
    candidate.iter().map(|x| x.to_bits()).collect()
}

impl Agent for Evolution {
    fn actor(&mut self) -> Actor<'_> {
        Actor::OneShot(self)
    }

    fn begin_episode(&mut self, _index: usize) {}

    /// The rest of the generation (a new one is bred from everything learned so far).
    fn ahead(&self, _next: usize) -> usize {
        if self.queue.is_empty() {
            self.config.population
        } else {
            self.queue.len()
        }
    }
}

impl OneShotActor for Evolution {
    fn act(&mut self, _features: &[Vec<f32>], explore: bool) -> Vec<f64> {
        if !explore {
            if let Some((_, best)) = self.evaluated.iter().max_by(|a, b| a.0.total_cmp(&b.0)) {
                return best.clone();
            }
        }
        if self.queue.is_empty() {
            self.next_generation();
        }
        self.queue.pop().unwrap_or_default()
    }
}

impl Learner for Evolution {
    fn learn(&mut self, episode: &Episode) -> Result<()> {
        self.evaluated
            .push((episode.reward, episode.proposed.clone()));
        Ok(())
    }

    /// A demonstration counts as evaluated: once there are `top_k` of them, the first
    /// generation is bred from them instead of drawn at random.
    fn demonstrate(&mut self, demonstration: &Demonstration) {
        self.seen.insert(key(&demonstration.actions));
        self.evaluated
            .push((demonstration.reward, demonstration.actions.clone()));
    }
}
