//! Adaptation curves: how good a policy a graph agent finds on a task within N episodes of
//! adaptation, for several N from one run. Episode 0 is the agent's greedy (zero-shot)
//! policy; every later episode explores and learns with the agent's PPO. The value at N is
//! the reward, on the whole validation split, of the best policy found by then (episodes are
//! scored on the search evaluator, which may score on fewer samples, as a search does).

use super::pool::{score_job, score_jobs, Job, JobResult, Rescore, Scorer};
use crate::agents::gnn::GraphAgent;
use crate::agents::{Agent, Learner};
use crate::env::{rollout, PruneEnv};
use crate::error::{Error, Result};
use crate::eval::Evaluator;
use std::sync::atomic::AtomicBool;

/// The best-so-far reward at each of `points` (ascending episode counts): `search` scores
/// the episodes (or `remote`'s processes, with the handle of `search`'s recipe there),
/// `rescore` scores each point's best policy. Episodes go in batches of what the agent
/// proposes before learning, as in a search.
pub fn adaptation_curve(
    agent: &mut GraphAgent,
    env: &mut PruneEnv,
    search: &mut Evaluator,
    rescore: &mut Evaluator,
    points: &[usize],
    mut remote: Option<(&mut (dyn Scorer + '_), usize)>,
) -> Result<Vec<f64>> {
    if points.windows(2).any(|w| w[0] > w[1]) {
        return Err(Error::data(
            "<points>",
            "adaptation points must be in ascending order",
        ));
    }
    let last = points.last().copied().unwrap_or(0);
    let greedy = rollout(agent, env, 0, false).policy;
    let mut curve = Curve {
        best: (search.evaluate(&greedy)?.reward, greedy),
        rescored: None,
        out: Vec::with_capacity(points.len()),
        next: 0,
    };
    curve.reached(0, points, rescore)?;
    let never = AtomicBool::new(false);
    let mut episode = 1;
    while episode <= last {
        let ahead = agent.ahead(episode).clamp(1, last + 1 - episode);
        let mut acted: Vec<_> = (episode..episode + ahead)
            .map(|e| Some(rollout(agent, env, e, true)))
            .collect();
        let jobs: Vec<Job> = acted
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, a)| Job {
                recipe: remote.as_ref().map_or(0, |r| r.1),
                episode: episode + i,
                policy: a.policy.clone(),
                rescore: Rescore::Never,
            })
            .collect();
        let mut each = |position: usize, result: JobResult| -> Result<()> {
            let e = episode + position;
            let Some(acted) = acted[position].take() else {
                return Ok(());
            };
            let keeps = acted.policy.clone();
            let reward = result.score.reward;
            agent.learn(&acted.episode(e, reward))?;
            if reward > curve.best.0 {
                curve.best = (reward, keeps);
            }
            curve.reached(e, points, rescore)
        };
        score_jobs(
            remote.as_mut().map(|r| &mut *r.0 as &mut dyn Scorer),
            &mut |job| score_job(search, job),
            &jobs,
            &never,
            &mut each,
        )?;
        episode += ahead;
    }
    Ok(curve.out)
}

/// An adaptation curve in progress.
struct Curve {
    /// The best reward so far and its keeps.
    best: (f64, Vec<f64>),
    /// The best keeps' reward on the whole split, rescored once per change.
    rescored: Option<(Vec<f64>, f64)>,
    out: Vec<f64>,
    /// The next point to reach.
    next: usize,
}

impl Curve {
    /// Records the points at `episode`: the best policy's whole-split reward.
    fn reached(&mut self, episode: usize, points: &[usize], rescore: &mut Evaluator) -> Result<()> {
        while self.next < points.len() && points[self.next] == episode {
            let reward = match &self.rescored {
                Some((keeps, reward)) if *keeps == self.best.1 => *reward,
                _ => {
                    let reward = rescore.evaluate(&self.best.1)?.reward;
                    self.rescored = Some((self.best.1.clone(), reward));
                    reward
                }
            };
            self.out.push(reward);
            self.next += 1;
        }
        Ok(())
    }
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Per start and point, the mean and sample std over runs: `curves[r]` is run `r`'s curve,
/// `starts[r]` its start's name; `names` are the starts, in order.
pub fn curve_statistics(
    names: &[String],
    starts: &[&str],
    curves: &[Vec<f64>],
) -> Vec<(Vec<f64>, Vec<f64>)> {
    let points = curves.first().map(Vec::len).unwrap_or(0);
    names
        .iter()
        .map(|name| {
            let rows: Vec<&Vec<f64>> = curves
                .iter()
                .zip(starts)
                .filter(|(_, start)| *start == name)
                .map(|(curve, _)| curve)
                .collect();
            (0..points)
                .map(|i| mean_std(&rows.iter().map(|r| r[i]).collect::<Vec<_>>()))
                .unzip()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        assert_eq!(mean_std(&[3.0]), (3.0, 0.0));
        let (mean, std) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(mean, 2.5);
        assert!((std - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn statistics_group_runs_by_start() {
        let names = vec!["a".to_string(), "b".to_string()];
        let starts = ["a", "b", "a"];
        let curves = vec![vec![1.0, 2.0], vec![5.0, 5.0], vec![3.0, 4.0]];
        let stats = curve_statistics(&names, &starts, &curves);
        assert_eq!(stats[0].0, vec![2.0, 3.0]);
        assert_eq!(stats[1], (vec![5.0, 5.0], vec![0.0, 0.0]));
        assert!((stats[0].1[0] - 2f64.sqrt()).abs() < 1e-12);
    }
}
