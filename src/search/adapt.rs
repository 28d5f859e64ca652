//! Adaptation curves: how good a policy a graph agent finds on a task within N episodes of
//! adaptation, for several N from one run. Episode 0 is the agent's greedy (zero-shot)
//! policy; every later episode explores and learns with the agent's PPO. The value at N is
//! the reward, on the whole validation split, of the best policy found by then (episodes are
//! scored on the search evaluator, which may score on fewer samples, as a search does).

use crate::agents::gnn::GraphAgent;
use crate::agents::{Agent, Episode, Learner, Observation};
use crate::env::PruneEnv;
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
    agent.begin_episode(0);
    let greedy = agent.act(Observation::Graph(env.graph_state()), false);
    let keeps = env.step_profile(&greedy);
    let mut best = (search.evaluate(&keeps)?.reward, keeps);
    // (episode count, best keeps' reward on the whole split), rescored once per change.
    let mut rescored: Option<(Vec<f64>, f64)> = None;
    let mut out = Vec::with_capacity(points.len());
    let mut next = 0;
    for episode in 0..=last {
        if episode > 0 {
            agent.begin_episode(episode);
            let actions = agent.act(Observation::Graph(env.graph_state()), true);
            let keeps = env.step_profile(&actions);
            let score = search.evaluate(&keeps)?;
            agent.learn(&Episode {
                index: episode,
                transitions: Vec::new(),
                proposed: actions,
                reward: score.reward,
            })?;
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
