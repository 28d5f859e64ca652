//! Adaptation curves: how good a policy a graph agent finds on a task within N episodes of
//! adaptation, for several N from one run. Episode 0 is the agent's greedy (zero-shot)
//! policy; every later episode explores and learns with the agent's PPO. The value at N is
//! the reward, on the whole validation split, of the best policy found by then (episodes are
//! scored on the search evaluator, which may score on fewer samples, as a search does).

use crate::agents::gnn::GraphAgent;
use crate::agents::Learner;
use crate::env::{rollout, PruneEnv};
use crate::error::{Error, Result};
use crate::eval::Evaluator;

/// The best-so-far reward at each of `points` (ascending episode counts): `search` scores
/// the episodes, `rescore` scores each point's best policy.
pub fn adaptation_curve(
    agent: &mut GraphAgent,
    env: &mut PruneEnv,
    search: &mut Evaluator,
    rescore: &mut Evaluator,
    points: &[usize],
) -> Result<Vec<f64>> {
    if points.windows(2).any(|w| w[0] > w[1]) {
        return Err(Error::data(
            "<points>",
            "adaptation points must be in ascending order",
        ));
    }
    let last = points.last().copied().unwrap_or(0);
    let greedy = rollout(agent, env, 0, false).policy;
    let mut best = (search.evaluate(&greedy)?.reward, greedy);
    // (episode count, best keeps' reward on the whole split), rescored once per change.
    let mut rescored: Option<(Vec<f64>, f64)> = None;
    let mut out = Vec::with_capacity(points.len());
    let mut next = 0;
    for episode in 0..=last {
        if episode > 0 {
            let acted = rollout(agent, env, episode, true);
            let keeps = acted.policy.clone();
            let score = search.evaluate(&keeps)?;
            agent.learn(&acted.episode(episode, score.reward))?;
            if score.reward > best.0 {
                best = (score.reward, keeps);
            }
        }
        while next < points.len() && points[next] == episode {
            let reward = match &rescored {
                Some((keeps, reward)) if *keeps == best.1 => *reward,
                _ => {
                    let reward = rescore.evaluate(&best.1)?.reward;
                    rescored = Some((best.1.clone(), reward));
                    reward
                }
            };
            out.push(reward);
            next += 1;
        }
    }
    Ok(out)
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
