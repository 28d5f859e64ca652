//! Agents that propose keep ratios. Every agent acts through [`Agent`] and learns through
//! [`Learner`]; the search loop drives them the same way whatever they are.
//!
//! Actions are normalised to [0, 1]: for sequential agents the env places them between the
//! lower bound and the largest feasible keep ratio; one-shot agents' actions are mapped into
//! the keep bounds and the ActionWall makes the policy feasible. Sequential agents (DDPG,
//! PPO) act once per unit on AMC's state; one-shot agents (evolution, random) propose a whole
//! policy at once; the graph agent proposes a profile relative to a reference allocation.
//! Searches start from the heuristic allocators: DDPG and evolution take their policies as
//! demonstrations ([`Learner::demonstrate`]). The kinds are typed apart
//! ([`Actor`]), so no agent is handed an observation it cannot use.
//!
//! Agents hold their own networks (tch) but read no files: checkpoints and run folders belong
//! to `policy` and `runlog`.

pub mod ddpg;
pub mod diffsparse;
pub mod evolution;
pub mod gnn;
pub mod meta;
pub mod ppo;
pub mod random;
mod util;

use crate::error::Result;
use serde::{Deserialize, Serialize};

/// How an agent acts, typed by what it sees, so that an agent can only be handed the
/// observation it was built for.
pub enum Actor<'a> {
    /// One action per unit, seeing AMC's state for that unit.
    Sequential(&'a mut dyn SequentialActor),
    /// One action per unit, all at once, seeing every unit's static features; the actions
    /// are keep ratios placed between the keep bounds, made feasible by the wall.
    OneShot(&'a mut dyn OneShotActor),
    /// Like `OneShot`, but the actions are a keep profile relative to the env's reference
    /// allocation (the best heuristic's, or uniform), scaled to the budget (the env's
    /// `step_profile`): equal actions reproduce the reference, and only deviations from it
    /// are learned.
    Profile(&'a mut dyn OneShotActor),
}

/// An agent that acts once per unit.
pub trait SequentialActor {
    /// The normalised action for the unit whose AMC state is `state`. `explore` adds the
    /// agent's exploration (noise, sampling); without it the agent acts greedily.
    fn act(&mut self, state: &[f32], explore: bool) -> f64;
}

/// An agent that proposes every unit's action at once.
pub trait OneShotActor {
    /// One normalised action per unit, from every unit's static features.
    fn act(&mut self, features: &[Vec<f32>], explore: bool) -> Vec<f64>;
}

/// One sequential step as it happened: the state, the normalised action taken, and the next
/// state (`None` at the last unit).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub state: Vec<f32>,
    pub action: f64,
    pub next_state: Option<Vec<f32>>,
}

/// A finished episode, as learners see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    pub index: usize,
    /// Sequential agents: one transition per unit. Empty for one-shot agents.
    pub transitions: Vec<Transition>,
    /// The normalised actions the agent proposed (before the wall), one per unit.
    pub proposed: Vec<f64>,
    /// The evaluator's reward for the policy.
    pub reward: f64,
}

/// Acting: an agent hands out its typed actor ([`Actor`]) for each step.
pub trait Agent {
    fn actor(&mut self) -> Actor<'_>;

    /// Called before each episode with its index.
    fn begin_episode(&mut self, index: usize);

    /// True for profile agents whose equal actions mean the env's reference allocation (the
    /// best heuristic) rather than uniform allocation: the env is given the reference.
    fn acts_relative_to_reference(&self) -> bool {
        false
    }

    /// How many episodes, from the agent's episode `next` on, it proposes the same whether or
    /// not it learns from the earlier ones in between: the rest of a generation, of a batch
    /// of on-policy episodes, of DDPG's random warm-up. Loops propose that many before
    /// scoring them (in parallel where they can) and then let the agent learn from each in
    /// order, which is what learning after every episode would have done. At least 1.
    fn ahead(&self, _next: usize) -> usize {
        1
    }

    /// The agent's network and config, for a checkpoint, if it has a network worth keeping.
    fn checkpoint(&self) -> Option<Checkpoint<'_>> {
        None
    }
}

/// What an agent checkpoint holds: the network, and what it takes to build it again.
pub struct Checkpoint<'a> {
    pub vars: &'a tch::nn::VarStore,
    /// The agent family (`gnn`, `pruningnet`).
    pub kind: &'static str,
    /// The agent's config, as JSON.
    pub config: String,
}

/// A scored policy the agent did not choose (a heuristic allocation), in both action
/// spaces: the sequential transitions that reproduce it and its one-shot normalised actions.
#[derive(Debug, Clone, PartialEq)]
pub struct Demonstration {
    pub transitions: Vec<Transition>,
    pub actions: Vec<f64>,
    pub reward: f64,
}

/// Learning: from finished episodes, and from demonstrations.
pub trait Learner {
    fn learn(&mut self, episode: &Episode) -> Result<()>;

    /// Takes in a demonstration before the agent's own episodes. Agents that learn only from
    /// their own actions (on-policy PPO and the graph agent, random search) have nothing to
    /// take from it.
    fn demonstrate(&mut self, _demonstration: &Demonstration) {}
}

/// An agent the search can run: it acts and learns.
pub trait SearchAgent: Agent + Learner {}

impl<T: Agent + Learner> SearchAgent for T {}

/// The agent families `search` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    Ddpg,
    Ppo,
    Evolution,
    Random,
    Gnn,
    /// The graph agent started from a meta-trained initialisation (`autoprune meta-train`).
    Meta,
    /// MetaPruning: a PruningNet trained first, then evolution scoring candidates with its
    /// generated weights.
    Pruningnet,
    /// Differentiable allocation: per-unit keep levels trained by gradient under soft masks
    /// and a budget penalty.
    Diffsparse,
}

impl AgentKind {
    pub fn name(self) -> &'static str {
        match self {
            AgentKind::Ddpg => "ddpg",
            AgentKind::Ppo => "ppo",
            AgentKind::Evolution => "evolution",
            AgentKind::Random => "random",
            AgentKind::Gnn => "gnn",
            AgentKind::Meta => "meta",
            AgentKind::Pruningnet => "pruningnet",
            AgentKind::Diffsparse => "diffsparse",
        }
    }
}
