//! The allocators a run starts from: their policies for an env, and the best of them on the
//! evaluation split (the reference a graph agent's profile is relative to).

use crate::config::default_heuristics;
use crate::env::PruneEnv;
use crate::error::Result;
use crate::eval::{Evaluator, Score};
use crate::prune::{ActionWall, Method};

/// One allocator's policy for the evaluator's model and budget.
#[derive(Debug, Clone)]
pub struct Heuristic {
    pub method: Method,
    /// Effective keep ratios, one per unit, feasible for the budget.
    pub keeps: Vec<f64>,
}

/// The policies of `methods`, in order (the evaluator's importance scores feed `global` and
/// `lamp`; `seed` feeds `random`).
pub fn heuristic_policies(
    methods: &[Method],
    evaluator: &Evaluator,
    wall: &ActionWall,
    seed: u64,
) -> Result<Vec<Heuristic>> {
    methods
        .iter()
        .map(|&method| {
            Ok(Heuristic {
                method,
                keeps: evaluator.allocate(method, wall, seed)?,
            })
        })
        .collect()
}

/// Scores `keeps` on the whole evaluation split: the evaluator's score, rescored over the
/// whole split when the evaluator scores a subset.
fn whole_split_score(evaluator: &mut Evaluator, keeps: &[f64]) -> Result<Score> {
    let score = evaluator.evaluate(keeps)?;
    if evaluator.scores_a_subset() {
        evaluator.rescore_on(keeps, evaluator.config().eval_split)
    } else {
        Ok(score)
    }
}

/// The best of `methods` by reward on the whole evaluation split, with its score (None
/// without methods).
pub fn best_heuristic(
    methods: &[Method],
    evaluator: &mut Evaluator,
    wall: &ActionWall,
    seed: u64,
) -> Result<Option<(Heuristic, Score)>> {
    let mut best: Option<(Heuristic, Score)> = None;
    for heuristic in heuristic_policies(methods, evaluator, wall, seed)? {
        let score = whole_split_score(evaluator, &heuristic.keeps)?;
        if best.as_ref().is_none_or(|(_, b)| score.reward > b.reward) {
            best = Some((heuristic, score));
        }
    }
    Ok(best)
}

/// The pruning env of `evaluator`'s model and budget for a profile agent: relative to the best
/// of the default heuristics (scored here) when `relative` (the agent acts relative to a
/// reference), to uniform allocation otherwise. Returns the best heuristic with its score
/// when it was scored. The heuristics are compared on the whole evaluation split when
/// `whole_split`; otherwise on the evaluator's subset, as the episodes are (training an agent
/// over many tasks, where the reference only has to be the one the agent trains against).
pub fn profile_env(
    evaluator: &mut Evaluator,
    source: &std::path::Path,
    relative: bool,
    seed: u64,
    whole_split: bool,
) -> Result<(PruneEnv, Option<(Heuristic, Score)>)> {
    let wall = evaluator.wall(source)?;
    let mut env = PruneEnv::new(wall.clone());
    if !relative {
        return Ok((env, None));
    }
    let best = if whole_split {
        best_heuristic(&default_heuristics(), evaluator, &wall, seed)?
    } else {
        let mut best: Option<(Heuristic, Score)> = None;
        for heuristic in heuristic_policies(&default_heuristics(), evaluator, &wall, seed)? {
            let score = evaluator.evaluate(&heuristic.keeps)?;
            if best.as_ref().is_none_or(|(_, b)| score.reward > b.reward) {
                best = Some((heuristic, score));
            }
        }
        best
    };
    env.set_reference(best.as_ref().map(|(h, _)| h.keeps.clone()));
    Ok((env, best))
}
