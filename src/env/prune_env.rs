//! `PruneEnv`: the pruning environment agents act in.
//!
//! Sequential mode (AMC): one unit per step. The state is the unit's feature vector (AMC's:
//! index, op type, c_in, c_out, stride, kernel, params, FLOPs, then the budget metric reduced
//! so far, the cost of the units after this one, and the previous action), each column
//! normalised to [0, 1] over the model's units. The action, in [0, 1], places the keep ratio
//! between the lower bound and the largest ratio the ActionWall allows at that step (the budget
//! stays reachable with every later unit at its lower bound), as AMC's clipping does, but
//! scaled so that no action is wasted on the clipped region. One-shot mode: all units' features at once and one
//! keep ratio per unit, passed through the wall as a whole. The reward for the finished
//! policy comes from the evaluator (see `search`).

use crate::agents::Transition;
use crate::prune::{ActionWall, CostModel, UnitKind};

/// Number of entries of a sequential state.
pub const STATE_DIM: usize = 11;

/// What one sequential step returns.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    /// The keep ratio the wall let through for this unit.
    pub keep: f64,
    /// The next unit's state; `None` when the episode is done.
    pub next_state: Option<Vec<f32>>,
    pub done: bool,
}

/// The environment for one model, granularity and budget.
#[derive(Debug, Clone)]
pub struct PruneEnv {
    wall: ActionWall,
    /// Static, normalised features of each unit (first 8 state entries).
    static_features: Vec<Vec<f32>>,
    /// Budget-metric cost of each unit at keep 1, as a fraction of the prunable total.
    unit_cost: Vec<f64>,
    keeps: Vec<f64>,
    raw: Vec<f64>,
    /// The allocation profile steps are relative to (`None`: uniform).
    reference: Option<Vec<f64>>,
}

impl PruneEnv {
    pub fn new(wall: ActionWall) -> Self {
        let costs = wall.costs();
        let graph = costs.graph();
        let raw_features: Vec<Vec<f64>> = costs
            .units()
            .iter()
            .enumerate()
            .map(|(i, unit)| {
                let node = match unit.kind {
                    UnitKind::Layer(node) => node,
                    UnitKind::Group(g) => graph.prunable_groups()[g].lead(graph),
                };
                let f = graph.node_features(node);
                vec![
                    i as f64,
                    f.op_type as f64,
                    f.c_in as f64,
                    f.c_out as f64,
                    f.stride as f64,
                    f.kernel as f64,
                    f.params as f64,
                    f.flops as f64,
                ]
            })
            .collect();
        let static_features = normalise_columns(&raw_features);
        let unit_cost = unit_costs(&wall);
        let n = costs.units().len();
        Self {
            wall,
            static_features,
            unit_cost,
            keeps: Vec::with_capacity(n),
            raw: Vec::with_capacity(n),
            reference: None,
        }
    }

    /// Makes profile steps relative to `reference` (a feasible policy, one keep ratio per
    /// unit, e.g. the best heuristic's), or to uniform allocation with `None`.
    pub fn set_reference(&mut self, reference: Option<Vec<f64>>) {
        self.reference = reference.filter(|r| r.len() == self.len());
    }

    /// The reference allocation profile steps are relative to (None: uniform allocation).
    pub fn reference(&self) -> Option<&[f64]> {
        self.reference.as_deref()
    }

    pub fn wall(&self) -> &ActionWall {
        &self.wall
    }

    pub fn costs(&self) -> &CostModel {
        self.wall.costs()
    }

    /// Units in an episode (sequential steps).
    pub fn len(&self) -> usize {
        self.static_features.len()
    }

    pub fn is_empty(&self) -> bool {
        self.static_features.is_empty()
    }

    /// Starts an episode; returns the first unit's state.
    pub fn reset(&mut self) -> Vec<f32> {
        self.keeps.clear();
        self.raw.clear();
        self.state(0)
    }

    /// Sequential state of unit `t` given the keep ratios fixed so far.
    fn state(&self, t: usize) -> Vec<f32> {
        let mut s = self.static_features[t].clone();
        let done: f64 = self.unit_cost[..t]
            .iter()
            .zip(&self.keeps)
            .map(|(c, k)| c * (1.0 - k))
            .sum();
        let rest: f64 = self.unit_cost[t + 1..].iter().sum();
        let previous = self.keeps.last().copied().unwrap_or(0.0);
        s.extend([done as f32, rest as f32, previous as f32]);
        s
    }

    /// The largest keep ratio the current unit may take: its upper bound, or less where the
    /// budget would otherwise become unreachable with every later unit at its lower bound.
    pub fn max_keep(&self) -> f64 {
        self.wall
            .clip_step(&self.keeps, self.wall.budget().bounds[1])
    }

    /// Applies a normalised action in [0, 1] to the current unit (sequential mode): the keep
    /// ratio is that fraction of the way from the lower bound to [`max_keep`](Self::max_keep),
    /// so every action is feasible and the whole action range stays meaningful.
    pub fn step(&mut self, action: f64) -> StepResult {
        let action = if action.is_finite() {
            action.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let lo = self.wall.budget().bounds[0];
        let keep = self
            .wall
            .clip_step(&self.keeps, lo + action * (self.max_keep() - lo).max(0.0));
        self.raw.push(action);
        self.keeps.push(keep);
        let done = self.keeps.len() == self.len();
        StepResult {
            keep,
            next_state: (!done).then(|| self.state(self.keeps.len())),
            done,
        }
    }

    /// The policy of the finished episode: effective keep ratios.
    pub fn policy(&self) -> Vec<f64> {
        self.costs().effective_keeps(&self.keeps)
    }

    /// The raw actions of the current episode.
    pub fn raw_actions(&self) -> &[f64] {
        &self.raw
    }

    /// One-shot observation: every unit's static features.
    pub fn graph_state(&self) -> &[Vec<f32>] {
        &self.static_features
    }

    /// One-shot step from normalised actions in [0, 1] (one per unit), placed between the
    /// lower and upper keep bound, then made feasible by the wall.
    pub fn step_actions(&mut self, actions: &[f64]) -> Vec<f64> {
        let [lo, hi] = self.wall.budget().bounds;
        // A non-finite action (an agent gone wrong) asks for the least.
        let raw: Vec<f64> = actions
            .iter()
            .map(|a| {
                let a = if a.is_finite() {
                    a.clamp(0.0, 1.0)
                } else {
                    0.0
                };
                lo + a * (hi - lo)
            })
            .collect();
        self.step_all(&raw)
    }

    /// One-shot step from a relative profile: action `a` (in [0, 1], one per unit) weighs
    /// its unit's reference keep ratio (1 without a reference: uniform allocation) by
    /// `exp(PROFILE_SPAN · (a - 1/2))`, and the wall scales the weights to the budget and
    /// hands the budget rounding left to the units that can take it
    /// (`ActionWall::fit_filled`). Equal actions give the reference allocation itself (uniform
    /// allocation without one), so only deviations from it are learned; the keep ratios of
    /// two units move apart by at most a factor `exp(PROFILE_SPAN)` before the bounds.
    pub fn step_profile(&mut self, actions: &[f64]) -> Vec<f64> {
        let actions: Vec<f64> = actions
            .iter()
            .map(|&a| {
                if a.is_finite() {
                    a.clamp(0.0, 1.0)
                } else {
                    0.5
                }
            })
            .collect();
        let profile: Vec<f64> = actions
            .iter()
            .enumerate()
            .map(|(u, &a)| {
                let base = self.reference.as_ref().map_or(1.0, |r| r[u]);
                base * (PROFILE_SPAN * (a - 0.5)).exp()
            })
            .collect();
        let equal = actions.windows(2).all(|w| w[0] == w[1]);
        self.keeps = match &self.reference {
            // The reference already meets the budget: scaling it back would only move units
            // by a rounding step.
            Some(reference) if equal => reference.clone(),
            None if equal => self.wall.fit(&profile),
            _ => self.wall.fit_filled(&profile),
        };
        self.raw = profile;
        self.keeps.clone()
    }

    /// The actions that reproduce `policy` (feasible keep ratios, one per unit): the
    /// sequential transitions (AMC's states and normalised actions, as
    /// [`step`](Self::step) places them) and the one-shot normalised actions (as
    /// [`step_actions`](Self::step_actions) places them). Learners take these as
    /// demonstrations of a policy they did not choose.
    pub fn demonstration(&mut self, policy: &[f64]) -> (Vec<Transition>, Vec<f64>) {
        let [lo, hi] = self.wall.budget().bounds;
        let normalise = |keep: f64, top: f64| {
            if top > lo {
                ((keep - lo) / (top - lo)).clamp(0.0, 1.0)
            } else {
                0.0
            }
        };
        let mut state = self.reset();
        let mut transitions = Vec::with_capacity(self.len());
        for &keep in policy.iter().take(self.len()) {
            let action = normalise(keep, self.max_keep());
            let step = self.step(action);
            transitions.push(Transition {
                state: std::mem::take(&mut state),
                action,
                next_state: step.next_state.clone(),
            });
            match step.next_state {
                Some(next) => state = next,
                None => break,
            }
        }
        let one_shot = policy.iter().map(|&k| normalise(k, hi)).collect();
        (transitions, one_shot)
    }

    /// One-shot step: a keep ratio per unit, made feasible by the wall.
    pub fn step_all(&mut self, raw: &[f64]) -> Vec<f64> {
        self.raw = raw.to_vec();
        self.keeps = self.wall.apply(raw);
        self.keeps.clone()
    }
}

/// Log-range of a profile step's weights (see [`PruneEnv::step_profile`]).
pub const PROFILE_SPAN: f64 = 4.0;

/// Each unit's share of the budget metric: the cost that pruning it alone to zero would remove.
fn unit_costs(wall: &ActionWall) -> Vec<f64> {
    let n = wall.costs().units().len();
    let full = wall.cost(&vec![1.0; n]);
    (0..n)
        .map(|u| {
            let mut keeps = vec![1.0; n];
            keeps[u] = 0.0;
            (full - wall.cost(&keeps)).max(0.0)
        })
        .collect()
}

/// Min-max normalisation of each column to [0, 1] (a constant column becomes 0).
fn normalise_columns(rows: &[Vec<f64>]) -> Vec<Vec<f32>> {
    let columns = rows.first().map(|r| r.len()).unwrap_or(0);
    let (mut lo, mut hi) = (
        vec![f64::INFINITY; columns],
        vec![f64::NEG_INFINITY; columns],
    );
    for row in rows {
        for (c, &v) in row.iter().enumerate() {
            lo[c] = lo[c].min(v);
            hi[c] = hi[c].max(v);
        }
    }
    rows.iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(c, &v)| {
                    if hi[c] > lo[c] {
                        ((v - lo[c]) / (hi[c] - lo[c])) as f32
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect()
}
