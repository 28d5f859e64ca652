//! The one rollout routine: reset, act, fit through the wall, step, up to a whole policy.
//! Every loop (search, train-agent, meta-train, adaptation, transfer) acts through it, then
//! scores the policy, lets the agent learn from [`Rollout::episode`] and records.

use super::PruneEnv;
use crate::agents::{Actor, Agent, Episode, Transition};

/// What an agent did in one episode.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// The normalised actions the agent proposed (before the wall), one per unit.
    pub proposed: Vec<f64>,
    /// Sequential agents: one transition per unit; empty for one-shot agents.
    pub transitions: Vec<Transition>,
    /// The policy: every unit's effective keep ratio, feasible for the budget.
    pub policy: Vec<f64>,
}

impl Rollout {
    /// The finished episode as learners see it, once the policy is scored.
    pub fn episode(self, index: usize, reward: f64) -> Episode {
        Episode {
            index,
            transitions: self.transitions,
            proposed: self.proposed,
            reward,
        }
    }
}

/// Episode `index` of `agent` on `env`: the agent acts (exploring or greedily) until every
/// unit has a keep ratio.
pub fn rollout(agent: &mut dyn Agent, env: &mut PruneEnv, index: usize, explore: bool) -> Rollout {
    agent.begin_episode(index);
    let (proposed, transitions) = match agent.actor() {
        Actor::Sequential(actor) => {
            let mut state = env.reset();
            let mut proposed = Vec::with_capacity(env.len());
            let mut transitions = Vec::with_capacity(env.len());
            loop {
                let action = actor.act(&state, explore);
                proposed.push(action);
                let step = env.step(action);
                transitions.push(Transition {
                    state: std::mem::take(&mut state),
                    action: action.clamp(0.0, 1.0),
                    next_state: step.next_state.clone(),
                });
                match step.next_state {
                    Some(next) => state = next,
                    None => break,
                }
            }
            (proposed, transitions)
        }
        Actor::OneShot(actor) => {
            let actions = actor.act(env.graph_state(), explore);
            env.step_actions(&actions);
            (actions, Vec::new())
        }
        Actor::Profile(actor) => {
            let actions = actor.act(env.graph_state(), explore);
            env.step_profile(&actions);
            (actions, Vec::new())
        }
    };
    Rollout {
        proposed,
        transitions,
        policy: env.policy(),
    }
}
