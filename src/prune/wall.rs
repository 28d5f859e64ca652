//! The ActionWall: whatever raw keep ratios an agent proposes, the policy that comes out
//! meets the env's budget and keep bounds.
//!
//! As in AMC's action clipping, units are visited in order; each keeps its (bounded) raw
//! ratio unless that would make the budget unreachable even with every later unit at its
//! lower bound, in which case it gets the largest ratio that still leaves the budget
//! reachable. Costs are counted after rounding (whole weights, channels or N:M patterns),
//! so the budget holds exactly for the model that is built.

use super::units::CostModel;
use crate::error::{Error, Result};
use crate::prune::Metric;
use std::path::Path;

/// The budget and bounds every policy must meet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub metric: Metric,
    /// Fraction of the dense model's prunable params or FLOPs to keep, at most.
    pub keep: f64,
    /// Lower and upper bound on each unit's keep ratio.
    pub bounds: [f64; 2],
}

/// Turns raw keep ratios into feasible ones for one cost model and budget.
#[derive(Debug, Clone)]
pub struct ActionWall {
    costs: CostModel,
    budget: Budget,
}

/// Bisection steps: the interval [0, 1] shrinks below 1e-12, finer than any rounding.
const BISECTION_STEPS: usize = 42;

impl ActionWall {
    /// Checks that the budget can be met with every unit at its lower bound; `source` (the
    /// env file) is named in the error if not.
    pub fn new(costs: &CostModel, budget: Budget, source: &Path) -> Result<Self> {
        let [lo, hi] = budget.bounds;
        let invalid = |key: &str, message: String| Error::Invalid {
            path: source.to_path_buf(),
            key: key.into(),
            message,
        };
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            return Err(invalid(
                "prune.keep_bounds",
                format!("[{lo}, {hi}] must satisfy 0 < low <= high <= 1"),
            ));
        }
        if !(budget.keep > 0.0 && budget.keep <= 1.0) {
            return Err(invalid(
                "prune.target.keep",
                format!("{} is out of range; use a fraction in (0, 1]", budget.keep),
            ));
        }
        if budget.metric == Metric::Latency && costs.latency_table().is_none() {
            return Err(invalid(
                "prune.target.metric",
                "a latency budget needs the model's latency table (measured by the evaluator for channel pruning)".into(),
            ));
        }
        let wall = Self {
            costs: costs.clone(),
            budget,
        };
        let n = costs.units().len();
        let floor = wall.cost(&vec![lo; n]);
        if floor > budget.keep + 1e-12 {
            // Name the layers whose rounding keeps more than the bound asks, and the largest
            // lower bound that would fit.
            let effective = costs.effective_keeps(&vec![lo; n]);
            let lifted: Vec<String> = costs
                .units()
                .iter()
                .zip(&effective)
                .filter(|(_, &e)| e > lo + 1e-9)
                .map(|(u, e)| format!("{} keeps at least {e:.4}", u.name))
                .take(4)
                .collect();
            let (mut good, mut bad) = (0.0, lo);
            for _ in 0..BISECTION_STEPS {
                let mid = 0.5 * (good + bad);
                if wall.cost(&vec![mid; n]) <= budget.keep + 1e-12 {
                    good = mid;
                } else {
                    bad = mid;
                }
            }
            let fix = if good > 0.0 && wall.cost(&vec![good; n]) <= budget.keep + 1e-12 {
                format!("lower keep_bounds[0] to at most {good:.4} or raise target.keep")
            } else {
                format!(
                    "no lower bound fits: raise target.keep above {:.4}",
                    wall.cost(&vec![1e-9; n])
                )
            };
            let layers = if lifted.is_empty() {
                String::new()
            } else {
                format!(" (after rounding, {})", lifted.join(", "))
            };
            return Err(invalid(
                "prune.keep_bounds",
                format!(
                    "with every layer at the lower bound {lo} the model keeps {floor:.4} of its {:?}, more than the target {}{layers}; {fix}",
                    budget.metric, budget.keep
                ),
            ));
        }
        Ok(wall)
    }

    pub fn costs(&self) -> &CostModel {
        &self.costs
    }

    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Kept fraction of the budget metric.
    pub fn cost(&self, keeps: &[f64]) -> f64 {
        self.costs.counts(keeps).kept(self.budget.metric)
    }

    fn fits(&self, keeps: &[f64]) -> bool {
        self.cost(keeps) <= self.budget.keep + 1e-12
    }

    /// A raw ratio bounded: NaN becomes the lower bound.
    pub fn bound(&self, raw: f64) -> f64 {
        let [lo, hi] = self.budget.bounds;
        if raw.is_nan() {
            lo
        } else {
            raw.clamp(lo, hi)
        }
    }

    /// The largest keep ratio for unit `t`, given the ratios already fixed for units before it
    /// and every later unit at its lower bound, that still meets the budget; at most `raw`.
    /// This is the per-step clip a sequential agent sees.
    pub fn clip_step(&self, fixed: &[f64], raw: f64) -> f64 {
        let t = fixed.len();
        let lo = self.budget.bounds[0];
        let mut keeps: Vec<f64> = fixed.to_vec();
        keeps.resize(self.costs.units().len(), lo);
        let want = self.bound(raw);
        keeps[t] = want;
        if self.fits(&keeps) {
            return want;
        }
        let (mut good, mut bad) = (lo, want);
        for _ in 0..BISECTION_STEPS {
            let mid = 0.5 * (good + bad);
            keeps[t] = mid;
            if self.fits(&keeps) {
                good = mid;
            } else {
                bad = mid;
            }
        }
        good
    }

    /// A feasible policy from raw ratios, one unit at a time (see the module docs), as the
    /// effective (rounded) keep ratios.
    pub fn apply(&self, raw: &[f64]) -> Vec<f64> {
        assert_eq!(
            raw.len(),
            self.costs.units().len(),
            "one raw ratio per unit"
        );
        let mut fixed = Vec::with_capacity(raw.len());
        for &r in raw {
            let keep = self.clip_step(&fixed, r);
            fixed.push(keep);
        }
        self.costs.effective_keeps(&fixed)
    }

    /// Scales a profile to the budget: the policy `bound(s · base[i])` with the largest `s`
    /// that meets it. Uniform allocation is `fit(&[1.0; n])`.
    pub fn fit(&self, base: &[f64]) -> Vec<f64> {
        let policy = |s: f64| -> Vec<f64> { base.iter().map(|&b| self.bound(s * b)).collect() };
        let top = base
            .iter()
            .copied()
            .filter(|b| *b > 0.0)
            .fold(f64::INFINITY, f64::min);
        let mut bad = if top.is_finite() { 1.0 / top } else { 1.0 };
        if self.fits(&policy(bad)) {
            return self.costs.effective_keeps(&policy(bad));
        }
        let mut good = 0.0;
        for _ in 0..BISECTION_STEPS + 10 {
            let mid = 0.5 * (good + bad);
            if self.fits(&policy(mid)) {
                good = mid;
            } else {
                bad = mid;
            }
        }
        self.costs.effective_keeps(&policy(good))
    }

    /// [`fit`](Self::fit), then the budget its rounding left: whole heads or coarse units
    /// stop one scale short of the budget when their next step would break it, and finer
    /// units could take the rest. Units that can still take one more rounding step within
    /// the budget scale on together (keeping their proportions) while the others keep what
    /// they have, until none can grow.
    pub fn fit_filled(&self, base: &[f64]) -> Vec<f64> {
        let n = base.len();
        let hi = self.budget.bounds[1];
        let mut policy = self.fit(base);
        let mut frozen = vec![false; n];
        // Each scaling round leaves a unit that cannot grow, frozen in the next; the bound only
        // guards against a policy that keeps trading single steps.
        for _ in 0..4 * n + 4 {
            let grows = |policy: &[f64], u: usize| {
                self.costs
                    .next_keep(u, policy[u])
                    .filter(|&next| next <= hi + 1e-12)
                    .is_some_and(|next| {
                        let mut trial = policy.to_vec();
                        trial[u] = next;
                        self.fits(&trial)
                    })
            };
            for (u, frozen) in frozen.iter_mut().enumerate() {
                *frozen = *frozen || !grows(&policy, u);
            }
            let Some(smallest) = (0..n)
                .filter(|&u| !frozen[u])
                .map(|u| policy[u])
                .reduce(f64::min)
            else {
                break;
            };
            let scaled = |s: f64| -> Vec<f64> {
                (0..n)
                    .map(|u| {
                        if frozen[u] {
                            policy[u]
                        } else {
                            self.bound(policy[u] * s)
                        }
                    })
                    .collect()
            };
            let (mut good, mut bad) = (1.0, hi / smallest.max(1e-12) + 1.0);
            for _ in 0..BISECTION_STEPS {
                let mid = 0.5 * (good + bad);
                if self.fits(&scaled(mid)) {
                    good = mid;
                } else {
                    bad = mid;
                }
            }
            let next = self.costs.effective_keeps(&scaled(good));
            if next == policy {
                // No common scale adds a step: the first unit that can grow takes one.
                let u = (0..n).find(|&u| !frozen[u]).unwrap_or(0);
                if let Some(step) = self.costs.next_keep(u, policy[u]) {
                    policy[u] = step;
                    policy = self.costs.effective_keeps(&policy);
                }
            } else {
                policy = next;
            }
        }
        policy
    }
}
